/* store.c: prediction history in SQLite, with versioned up/down migrations.
 *
 * Purpose: persist one row per served prediction and list them newest first
 * for GET /history; `dermal migrate` drives the migrations.
 * Invariants: every statement is sqlite3_prepare_v2 + bound parameters (no
 * SQL text is ever built from input); each migration step runs in its own
 * transaction together with its schema_migrations row, so the recorded
 * version always matches the schema; the database is opened in WAL mode with
 * synchronous=NORMAL (durable across process crashes, fast inserts).
 * Threading: one sqlite3 connection per dm_store, every public call holds
 * s->mu, so worker threads may share one handle.
 * PostgreSQL (libpq) is not implemented yet: postgres:// URLs are refused
 * with DM_UNSUPPORTED (TODO issue 4). */
#include "dermal/store.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct dm_store {
  sqlite3 *db;
  pthread_mutex_t mu;
  sqlite3_stmt *ins; /* cached insert, prepared once the table exists */
};

typedef struct migration {
  const char *name;
  const char *up; /* may hold several statements */
  const char *down;
} migration;

/* Append-only: never edit a released step, add a new one. */
static const migration MIGRATIONS[] = {
    {"create predictions",
     "CREATE TABLE predictions ("
     " id INTEGER PRIMARY KEY AUTOINCREMENT,"
     " created_ms INTEGER NOT NULL,"
     " request_id TEXT NOT NULL,"
     " image_sha256 TEXT NOT NULL,"
     " image_bytes INTEGER NOT NULL,"
     " image_width INTEGER, image_height INTEGER,"
     " model_name TEXT, model_version TEXT, model_sha256 TEXT,"
     " label TEXT NOT NULL, probability REAL NOT NULL,"
     " probabilities TEXT,"
     " ms_decode REAL, ms_preprocess REAL, ms_inference REAL, ms_total REAL);"
     "CREATE INDEX predictions_created ON predictions(created_ms);",
     "DROP INDEX predictions_created; DROP TABLE predictions;"},
    {"image format and stored image path",
     "ALTER TABLE predictions ADD COLUMN image_format TEXT;"
     "ALTER TABLE predictions ADD COLUMN image_path TEXT;"
     "CREATE INDEX predictions_image ON predictions(image_sha256);",
     "DROP INDEX predictions_image;"
     "ALTER TABLE predictions DROP COLUMN image_path;"
     "ALTER TABLE predictions DROP COLUMN image_format;"},
};
#define N_MIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

int dm_store_latest_version(void) { return N_MIGRATIONS; }

const char *dm_store_migration_name(int v) {
  return v >= 1 && v <= N_MIGRATIONS ? MIGRATIONS[v - 1].name : NULL;
}

bool dm_store_url_disabled(const char *url) {
  static const char *const off[] = {"", "none", "off", "false", "0"};
  if (!url) return true;
  for (size_t i = 0; i < sizeof off / sizeof off[0]; i++)
    if (!strcasecmp(url, off[i])) return true;
  return false;
}

static dm_err db_err(dm_store *s, dm_errbuf *eb, const char *what) {
  return dm_errf(eb, DM_DB, "sqlite: %s: %s", what, sqlite3_errmsg(s->db));
}

static int64_t now_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs a fixed (compile-time) SQL script.  Never called with input text. */
static dm_err exec_script(dm_store *s, const char *sql, dm_errbuf *eb) {
  char *msg = NULL;
  if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    dm_errf(eb, DM_DB, "sqlite: %s", msg ? msg : sqlite3_errmsg(s->db));
    sqlite3_free(msg);
    return DM_DB;
  }
  return DM_OK;
}

dm_err dm_store_open(const char *url, dm_store **out, dm_errbuf *eb) {
  if (!url || !out) return dm_errf(eb, DM_ARG, "store: no URL");
  const char *path = NULL;
  if (!strncmp(url, "sqlite:///", 10))
    path = url + 10; /* "sqlite:////abs" leaves "/abs" */
  else if (!strncmp(url, "postgres://", 11) ||
           !strncmp(url, "postgresql://", 13))
    return dm_errf(eb, DM_UNSUPPORTED,
                   "store: PostgreSQL is not implemented yet (use "
                   "sqlite:///path or DATABASE_URL=none)");
  else
    return dm_errf(eb, DM_ARG,
                   "store: DATABASE_URL must be sqlite:///relative, "
                   "sqlite:////absolute or none, got '%.80s'",
                   url);
  if (!*path) return dm_errf(eb, DM_ARG, "store: empty sqlite path");

  dm_store *s = calloc(1, sizeof *s);
  if (!s) return dm_errf(eb, DM_NOMEM, "store: out of memory");
  pthread_mutex_init(&s->mu, NULL);
  int flags =
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
    dm_err rc = s->db ? db_err(s, eb, path)
                      : dm_errf(eb, DM_NOMEM, "sqlite: out of memory");
    dm_store_close(s);
    return rc;
  }
  sqlite3_busy_timeout(s->db, 5000);
  sqlite3_extended_result_codes(s->db, 1);
  dm_err rc = exec_script(s,
                          "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                          "PRAGMA foreign_keys=ON;"
                          "CREATE TABLE IF NOT EXISTS schema_migrations ("
                          " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                          " applied_ms INTEGER NOT NULL);",
                          eb);
  if (rc) {
    dm_store_close(s);
    return rc;
  }
  *out = s;
  return DM_OK;
}

void dm_store_close(dm_store *s) {
  if (!s) return;
  sqlite3_finalize(s->ins);
  sqlite3_close(s->db);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

static dm_err version_locked(dm_store *s, int *out, dm_errbuf *eb) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(
          s->db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1,
          &st, NULL) != SQLITE_OK)
    return db_err(s, eb, "read version");
  dm_err rc = DM_OK;
  if (sqlite3_step(st) == SQLITE_ROW)
    *out = sqlite3_column_int(st, 0);
  else
    rc = db_err(s, eb, "read version");
  sqlite3_finalize(st);
  return rc;
}

dm_err dm_store_version(dm_store *s, int *out, dm_errbuf *eb) {
  pthread_mutex_lock(&s->mu);
  dm_err rc = version_locked(s, out, eb);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* One step up (to v) or down (from v), with its bookkeeping row. */
static dm_err step(dm_store *s, int v, bool up, dm_errbuf *eb) {
  dm_err rc = exec_script(s, "BEGIN IMMEDIATE", eb);
  if (rc) return rc;
  const migration *m = &MIGRATIONS[v - 1];
  sqlite3_stmt *st = NULL;
  if ((rc = exec_script(s, up ? m->up : m->down, eb))) goto fail;
  const char *sql = up ? "INSERT INTO schema_migrations(version, name, "
                         "applied_ms) VALUES (?1, ?2, ?3)"
                       : "DELETE FROM schema_migrations WHERE version = ?1";
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
    rc = db_err(s, eb, "migration bookkeeping");
    goto fail;
  }
  sqlite3_bind_int(st, 1, v);
  if (up) {
    sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_unix_ms());
  }
  if (sqlite3_step(st) != SQLITE_DONE) {
    rc = db_err(s, eb, "migration bookkeeping");
    goto fail;
  }
  sqlite3_finalize(st);
  return exec_script(s, "COMMIT", eb);
fail:
  sqlite3_finalize(st);
  {
    char *msg = NULL;
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, &msg);
    sqlite3_free(msg);
  }
  return rc;
}

dm_err dm_store_migrate(dm_store *s, int target, int *applied, dm_errbuf *eb) {
  if (target < 0) target = N_MIGRATIONS;
  if (target > N_MIGRATIONS)
    return dm_errf(eb, DM_RANGE, "store: target version %d > latest %d", target,
                   N_MIGRATIONS);
  pthread_mutex_lock(&s->mu);
  int cur = 0, n = 0;
  dm_err rc = version_locked(s, &cur, eb);
  if (!rc && cur > N_MIGRATIONS)
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "store: database schema version %d is newer than this "
                 "binary's %d",
                 cur, N_MIGRATIONS);
  /* The cached insert refers to the old schema. */
  sqlite3_finalize(s->ins);
  s->ins = NULL;
  while (!rc && cur < target) {
    if (!(rc = step(s, cur + 1, true, eb))) cur++, n++;
  }
  while (!rc && cur > target) {
    if (!(rc = step(s, cur, false, eb))) cur--, n++;
  }
  pthread_mutex_unlock(&s->mu);
  if (applied) *applied = n;
  return rc;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v) {
  if (v)
    sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null(st, i);
}

dm_err dm_store_insert(dm_store *s, dm_store_record *r, dm_errbuf *eb) {
  if (!r->request_id || !r->image_sha256 || !r->label)
    return dm_errf(eb, DM_ARG, "store: record without request_id/sha256/label");
  dm_err rc = DM_OK;
  pthread_mutex_lock(&s->mu);
  if (!s->ins &&
      sqlite3_prepare_v2(
          s->db,
          "INSERT INTO predictions(created_ms, request_id, image_sha256, "
          "image_bytes, image_width, image_height, model_name, model_version, "
          "model_sha256, label, probability, probabilities, ms_decode, "
          "ms_preprocess, ms_inference, ms_total, image_format, image_path) "
          "VALUES "
          "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)",
          -1, &s->ins, NULL) != SQLITE_OK) {
    rc = db_err(s, eb,
                "prepare insert (database not migrated? run `dermal migrate`)");
    goto out;
  }
  sqlite3_stmt *st = s->ins;
  sqlite3_bind_int64(st, 1,
                     r->created_unix_ms ? r->created_unix_ms : now_unix_ms());
  sqlite3_bind_text(st, 2, r->request_id, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 3, r->image_sha256, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 4, r->image_bytes);
  sqlite3_bind_int(st, 5, r->image_width);
  sqlite3_bind_int(st, 6, r->image_height);
  bind_text_or_null(st, 7, r->model_name);
  bind_text_or_null(st, 8, r->model_version);
  bind_text_or_null(st, 9, r->model_sha256);
  sqlite3_bind_text(st, 10, r->label, -1, SQLITE_TRANSIENT);
  sqlite3_bind_double(st, 11, r->probability);
  bind_text_or_null(st, 12, r->probabilities);
  sqlite3_bind_double(st, 13, r->ms_decode);
  sqlite3_bind_double(st, 14, r->ms_preprocess);
  sqlite3_bind_double(st, 15, r->ms_inference);
  sqlite3_bind_double(st, 16, r->ms_total);
  bind_text_or_null(st, 17, r->image_format);
  bind_text_or_null(st, 18, r->image_path);
  if (sqlite3_step(st) != SQLITE_DONE)
    rc = db_err(s, eb, "insert");
  else
    r->id = sqlite3_last_insert_rowid(s->db);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
out:
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static dm_err count_locked(dm_store *s, int64_t *out, dm_errbuf *eb) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db, "SELECT COUNT(*) FROM predictions", -1, &st,
                         NULL) != SQLITE_OK)
    return db_err(s, eb, "count");
  dm_err rc = DM_OK;
  if (sqlite3_step(st) == SQLITE_ROW)
    *out = sqlite3_column_int64(st, 0);
  else
    rc = db_err(s, eb, "count");
  sqlite3_finalize(st);
  return rc;
}

dm_err dm_store_count(dm_store *s, int64_t *out, dm_errbuf *eb) {
  pthread_mutex_lock(&s->mu);
  dm_err rc = count_locked(s, out, eb);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static json_t *col_text(sqlite3_stmt *st, int i) {
  const unsigned char *t = sqlite3_column_text(st, i);
  return t ? json_string((const char *)t) : json_null();
}

dm_err dm_store_list_json(dm_store *s, int64_t before_id, int limit,
                          char **json_out, dm_errbuf *eb) {
  if (limit < 1 || limit > 1000)
    return dm_errf(eb, DM_RANGE, "store: limit %d not in 1..1000", limit);
  dm_err rc = DM_OK;
  sqlite3_stmt *st = NULL;
  json_t *root = json_object(), *items = json_array();
  if (!root || !items) {
    rc = dm_errf(eb, DM_NOMEM, "store: out of memory");
    goto out_unlocked;
  }
  pthread_mutex_lock(&s->mu);
  int64_t total = 0;
  if ((rc = count_locked(s, &total, eb))) goto out;
  /* One row more than asked tells whether a next page exists. */
  if (sqlite3_prepare_v2(
          s->db,
          "SELECT id, created_ms, request_id, image_sha256, image_bytes, "
          "image_width, image_height, image_format, model_name, model_version, "
          "model_sha256, label, probability, probabilities, ms_decode, "
          "ms_preprocess, ms_inference, ms_total FROM predictions "
          "WHERE ?1 <= 0 OR id < ?1 ORDER BY id DESC LIMIT ?2",
          -1, &st, NULL) != SQLITE_OK) {
    rc = db_err(s, eb, "list");
    goto out;
  }
  sqlite3_bind_int64(st, 1, before_id);
  sqlite3_bind_int(st, 2, limit + 1);
  int n = 0, r;
  int64_t last_id = 0;
  bool more = false;
  while ((r = sqlite3_step(st)) == SQLITE_ROW) {
    if (n == limit) {
      more = true;
      break;
    }
    json_t *o = json_object();
    if (!o) {
      rc = dm_errf(eb, DM_NOMEM, "store: out of memory");
      goto out;
    }
    last_id = sqlite3_column_int64(st, 0);
    json_object_set_new(o, "id", json_integer(last_id));
    json_object_set_new(o, "created_ms",
                        json_integer(sqlite3_column_int64(st, 1)));
    json_object_set_new(o, "request_id", col_text(st, 2));
    json_object_set_new(o, "image_sha256", col_text(st, 3));
    json_object_set_new(o, "image_bytes",
                        json_integer(sqlite3_column_int64(st, 4)));
    json_object_set_new(o, "image_width",
                        json_integer(sqlite3_column_int(st, 5)));
    json_object_set_new(o, "image_height",
                        json_integer(sqlite3_column_int(st, 6)));
    json_object_set_new(o, "image_format", col_text(st, 7));
    json_object_set_new(o, "model_name", col_text(st, 8));
    json_object_set_new(o, "model_version", col_text(st, 9));
    json_object_set_new(o, "model_sha256", col_text(st, 10));
    json_object_set_new(o, "label", col_text(st, 11));
    json_object_set_new(o, "probability",
                        json_real(sqlite3_column_double(st, 12)));
    /* Stored by us as a JSON object; a row that does not parse (edited by
     * hand) is shown as null rather than failing the page. */
    const unsigned char *pj = sqlite3_column_text(st, 13);
    json_t *probs = pj ? json_loads((const char *)pj, 0, NULL) : NULL;
    json_object_set_new(o, "probabilities", probs ? probs : json_null());
    json_t *ms = json_object();
    if (ms) {
      json_object_set_new(ms, "decode",
                          json_real(sqlite3_column_double(st, 14)));
      json_object_set_new(ms, "preprocess",
                          json_real(sqlite3_column_double(st, 15)));
      json_object_set_new(ms, "inference",
                          json_real(sqlite3_column_double(st, 16)));
      json_object_set_new(ms, "total",
                          json_real(sqlite3_column_double(st, 17)));
      json_object_set_new(o, "ms", ms);
    }
    json_array_append_new(items, o);
    n++;
  }
  if (r != SQLITE_ROW && r != SQLITE_DONE) {
    rc = db_err(s, eb, "list");
    goto out;
  }
  json_object_set(root, "items", items);
  json_object_set_new(root, "next_before",
                      more ? json_integer(last_id) : json_null());
  json_object_set_new(root, "total", json_integer(total));
  char *txt = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(7));
  if (!txt)
    rc = dm_errf(eb, DM_NOMEM, "store: out of memory");
  else
    *json_out = txt;
out:
  sqlite3_finalize(st);
  pthread_mutex_unlock(&s->mu);
out_unlocked:
  json_decref(items);
  json_decref(root);
  return rc;
}
