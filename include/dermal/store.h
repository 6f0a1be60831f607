/* dermal store: prediction history.
 *
 * Backends: SQLite (WAL) through `sqlite:///relative/path` (three slashes:
 * relative to the working directory), `sqlite:////absolute/path` (four) or
 * `sqlite:///:memory:` (tests), and PostgreSQL through libpq with
 * `postgres://` or `postgresql://` URLs (the scale-out path: replicas share
 * one database; migrations take an advisory lock); `none` (or an empty URL)
 * means "no store" and is handled by the caller (dm_store_url_disabled).
 *
 * Schema changes are versioned migrations, each with an up and a down step,
 * recorded in the table schema_migrations(version, name, applied_at).  Every
 * statement is prepared with bound parameters; no SQL is built from input.
 *
 * Threading: a dm_store serialises its own calls with a mutex; one handle
 * may be shared by all worker threads. */
#ifndef DERMAL_STORE_H
#define DERMAL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dermal/err.h"

typedef struct dm_store dm_store;

/* One prediction.  All strings are borrowed for the duration of the call;
 * NULL strings are stored as SQL NULL (except request_id, image_sha256,
 * label: required). */
typedef struct dm_store_record {
  int64_t id;              /* written by the store (insert), read by list */
  int64_t created_unix_ms; /* 0: now */
  const char *request_id;
  const char *image_sha256; /* 64 hex digits */
  int64_t image_bytes;
  int image_width, image_height;
  const char *image_format; /* "jpeg", "png", ... */
  const char *image_path;   /* content-addressed file when STORE_IMAGES */
  const char *model_name, *model_version, *model_sha256;
  const char *label;
  double probability;        /* of label */
  const char *probabilities; /* JSON object label -> probability */
  double ms_decode, ms_preprocess, ms_inference, ms_total;
} dm_store_record;

/* Copies url into out with any password replaced by "***", for logs. */
void dm_store_url_redact(const char *url, char *out, size_t n);

/* True for "", "none", "off", "false", "0" (case-insensitive): store off. */
bool dm_store_url_disabled(const char *url);

/* Opens (creating the SQLite file if needed) without migrating.  Errors:
 * DM_ARG (unrecognised URL), DM_DB (cannot open or connect). */
dm_err dm_store_open(const char *url, dm_store **out, dm_errbuf *eb);
void dm_store_close(dm_store *s); /* NULL ok */

/* The newest schema version this binary knows. */
int dm_store_latest_version(void);
/* Name of migration v (1..latest), NULL otherwise. */
const char *dm_store_migration_name(int v);
/* Current schema version (0: new database). */
dm_err dm_store_version(dm_store *s, int *out, dm_errbuf *eb);
/* Migrates up or down to target (0..latest; -1 = latest), one transaction
 * per step.  *applied (optional) gets the number of steps run. */
dm_err dm_store_migrate(dm_store *s, int target, int *applied, dm_errbuf *eb);

/* Inserts rec; rec->id gets the new row id.  DM_DB on failure. */
dm_err dm_store_insert(dm_store *s, dm_store_record *rec, dm_errbuf *eb);

/* Newest first.  before_id > 0: only rows with id < before_id (cursor
 * pagination).  limit 1..1000.  Returns a malloc'd JSON object
 * {"items": [...], "next_before": id|null, "total": N} in *json_out. */
dm_err dm_store_list_json(dm_store *s, int64_t before_id, int limit,
                          char **json_out, dm_errbuf *eb);

/* Rows in the predictions table (DM_DB if not migrated). */
dm_err dm_store_count(dm_store *s, int64_t *out, dm_errbuf *eb);

#endif
