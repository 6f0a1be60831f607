/* Private interface between the store front end (store.c) and its backends
 * (SQLite in store.c, PostgreSQL in pg.c).
 *
 * The front end owns what is common: URL dispatch, argument checks, the
 * per-handle mutex, the migration names and the JSON of GET /history.  A
 * backend supplies a small table of operations (dm__store_ops) that run
 * with s->mu already held, so backends never lock.
 *
 * Migrations: both backends implement the same numbered steps (same tables,
 * columns and indexes in each SQL dialect); DM__STORE_N_MIGRATIONS is the
 * single count both check with a static assertion. */
#ifndef DERMAL_STORE_INTERNAL_H
#define DERMAL_STORE_INTERNAL_H

#include <pthread.h>

#include "dermal/store.h"

#define DM__STORE_N_MIGRATIONS 2
/* One schema step of a backend: SQL for up and for down (several
 * statements allowed). */
typedef struct migration {
  const char *up;
  const char *down;
} migration;

extern const char *const dm__store_migration_names[DM__STORE_N_MIGRATIONS];

/* One row of predictions as read by a backend for the listing.  Strings are
 * borrowed until the emit callback returns; NULL means SQL NULL. */
typedef struct dm__store_row {
  int64_t id, created_ms, image_bytes;
  int64_t image_width, image_height;
  const char *request_id, *image_sha256, *image_format;
  const char *model_name, *model_version, *model_sha256;
  const char *label, *probabilities;
  double probability;
  double ms_decode, ms_preprocess, ms_inference, ms_total;
} dm__store_row;

typedef dm_err (*dm__store_emit)(void *ctx, const dm__store_row *row,
                                 dm_errbuf *eb);

/* All called with s->mu held.  Errors as documented in dermal/store.h. */
typedef struct dm__store_ops {
  const char *name; /* "sqlite", "postgresql" */
  dm_err (*version)(dm_store *s, int *out, dm_errbuf *eb);
  /* target already checked to be in 0..DM__STORE_N_MIGRATIONS. */
  dm_err (*migrate)(dm_store *s, int target, int *applied, dm_errbuf *eb);
  /* rec->request_id/image_sha256/label already checked non-NULL;
   * created_unix_ms already filled in. */
  dm_err (*insert)(dm_store *s, dm_store_record *rec, dm_errbuf *eb);
  dm_err (*count)(dm_store *s, int64_t *out, dm_errbuf *eb);
  /* Rows newest first with id < before_id (all when before_id <= 0), at
   * most `limit`, each passed to emit; stops at the first emit error. */
  dm_err (*list)(dm_store *s, int64_t before_id, int limit, dm__store_emit emit,
                 void *ctx, dm_errbuf *eb);
  void (*close)(dm_store *s); /* frees the backend struct */
} dm__store_ops;

/* Common head of every backend's handle (first member, so a backend casts
 * between its own struct and dm_store). */
struct dm_store {
  const dm__store_ops *ops;
  pthread_mutex_t mu;
};

/* Backend constructors: on DM_OK *out is a fully built handle whose mutex the
 * front end initialises.  url is the whole DATABASE_URL. */
dm_err dm__store_pg_open(const char *url, dm_store **out, dm_errbuf *eb);

int64_t dm__store_now_ms(void);

#endif
