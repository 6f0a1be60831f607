/* store.c: the store front end and its SQLite backend.
 *
 * Purpose: persist one row per served prediction and list them newest first
 * for GET /history; `dermal migrate` drives the versioned migrations.  The
 * public functions of dermal/store.h live here: they pick a backend by the
 * DATABASE_URL scheme (sqlite:/// here, postgres:// and postgresql:// in
 * pg.c), check arguments, hold the handle's mutex and call the backend's
 * operation table (internal.h).  The JSON of GET /history is built here from
 * backend rows, so both backends answer byte-for-byte alike.
 * Invariants (SQLite): every statement is sqlite3_prepare_v2 + bound
 * parameters (no SQL text is ever built from input); each migration step
 * runs in its own transaction together with its schema_migrations row, so
 * the recorded version always matches the schema; the database is opened in
 * WAL mode with synchronous=NORMAL (durable across process crashes, fast
 * inserts).
 * Threading: one connection per dm_store; every public call holds s->mu, so
 * worker threads may share one handle. */
#include "dermal/store.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "internal.h"

/* ------------------------------------------------------------------------ */
/* migrations: names shared by the backends, SQLite DDL here                 */

/* Append-only: never edit a released step, add a new one (in every
 * backend: pg.c has the PostgreSQL DDL of the same steps). */
const char *const dm__store_migration_names[DM__STORE_N_MIGRATIONS] = {
    "create predictions",
    "image format and stored image path",
};

static const migration SQLITE_MIGRATIONS[] = {
    {"CREATE TABLE predictions ("
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
    {"ALTER TABLE predictions ADD COLUMN image_format TEXT;"
     "ALTER TABLE predictions ADD COLUMN image_path TEXT;"
     "CREATE INDEX predictions_image ON predictions(image_sha256);",
     "DROP INDEX predictions_image;"
     "ALTER TABLE predictions DROP COLUMN image_path;"
     "ALTER TABLE predictions DROP COLUMN image_format;"},
};
_Static_assert(sizeof SQLITE_MIGRATIONS / sizeof SQLITE_MIGRATIONS[0] ==
                   DM__STORE_N_MIGRATIONS,
               "one SQLite step per migration");

int dm_store_latest_version(void) { return DM__STORE_N_MIGRATIONS; }

const char *dm_store_migration_name(int v) {
  return v >= 1 && v <= DM__STORE_N_MIGRATIONS
             ? dm__store_migration_names[v - 1]
             : NULL;
}

bool dm_store_url_disabled(const char *url) {
  static const char *const off[] = {"", "none", "off", "false", "0"};
  if (!url) return true;
  for (size_t i = 0; i < sizeof off / sizeof off[0]; i++)
    if (!strcasecmp(url, off[i])) return true;
  return false;
}

int64_t dm__store_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------ */
/* SQLite backend                                                            */

typedef struct sq_store {
  dm_store base; /* first: dm_store * <-> sq_store * */
  sqlite3 *db;
  sqlite3_stmt *ins; /* cached insert, prepared once the table exists */
} sq_store;

static sq_store *sq(dm_store *s) { return (sq_store *)s; }

static dm_err db_err(sq_store *q, dm_errbuf *eb, const char *what) {
  return dm_errf(eb, DM_DB, "sqlite: %s: %s", what, sqlite3_errmsg(q->db));
}

/* Runs a fixed (compile-time) SQL script.  Never called with input text. */
static dm_err exec_script(sq_store *q, const char *sql, dm_errbuf *eb) {
  char *msg = NULL;
  if (sqlite3_exec(q->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    dm_errf(eb, DM_DB, "sqlite: %s", msg ? msg : sqlite3_errmsg(q->db));
    sqlite3_free(msg);
    return DM_DB;
  }
  return DM_OK;
}

static void sq_close(dm_store *s) {
  sq_store *q = sq(s);
  sqlite3_finalize(q->ins);
  sqlite3_close(q->db);
  free(q);
}

/* Runs a query that returns one integer (no parameters). */
static dm_err query_int64(sq_store *q, const char *sql, const char *what,
                          int64_t *out, dm_errbuf *eb) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
    return db_err(q, eb, what);
  dm_err rc = DM_OK;
  if (sqlite3_step(st) == SQLITE_ROW)
    *out = sqlite3_column_int64(st, 0);
  else
    rc = db_err(q, eb, what);
  sqlite3_finalize(st);
  return rc;
}

static dm_err sq_version(dm_store *s, int *out, dm_errbuf *eb) {
  int64_t v = 0;
  dm_err rc = query_int64(sq(s),
                          "SELECT COALESCE(MAX(version), 0) FROM "
                          "schema_migrations",
                          "read version", &v, eb);
  if (!rc) *out = (int)v;
  return rc;
}

/* One step up (to v) or down (from v), with its bookkeeping row. */
static dm_err sq_step(sq_store *q, int v, bool up, dm_errbuf *eb) {
  dm_err rc = exec_script(q, "BEGIN IMMEDIATE", eb);
  if (rc) return rc;
  const migration *m = &SQLITE_MIGRATIONS[v - 1];
  sqlite3_stmt *st = NULL;
  if ((rc = exec_script(q, up ? m->up : m->down, eb))) goto fail;
  const char *sql = up ? "INSERT INTO schema_migrations(version, name, "
                         "applied_ms) VALUES (?1, ?2, ?3)"
                       : "DELETE FROM schema_migrations WHERE version = ?1";
  if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK) {
    rc = db_err(q, eb, "migration bookkeeping");
    goto fail;
  }
  sqlite3_bind_int(st, 1, v);
  if (up) {
    sqlite3_bind_text(st, 2, dm__store_migration_names[v - 1], -1,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, dm__store_now_ms());
  }
  if (sqlite3_step(st) != SQLITE_DONE) {
    rc = db_err(q, eb, "migration bookkeeping");
    goto fail;
  }
  sqlite3_finalize(st);
  return exec_script(q, "COMMIT", eb);
fail:
  sqlite3_finalize(st);
  {
    char *msg = NULL;
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, &msg);
    sqlite3_free(msg);
  }
  return rc;
}

static dm_err sq_migrate(dm_store *s, int target, int *applied, dm_errbuf *eb) {
  sq_store *q = sq(s);
  int cur = 0, n = 0;
  dm_err rc = sq_version(s, &cur, eb);
  if (!rc && cur > DM__STORE_N_MIGRATIONS)
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "store: database schema version %d is newer than this "
                 "binary's %d",
                 cur, DM__STORE_N_MIGRATIONS);
  /* The cached insert refers to the old schema. */
  sqlite3_finalize(q->ins);
  q->ins = NULL;
  while (!rc && cur < target) {
    if (!(rc = sq_step(q, cur + 1, true, eb))) cur++, n++;
  }
  while (!rc && cur > target) {
    if (!(rc = sq_step(q, cur, false, eb))) cur--, n++;
  }
  *applied = n;
  return rc;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v) {
  if (v)
    sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null(st, i);
}

static dm_err sq_insert(dm_store *s, dm_store_record *r, dm_errbuf *eb) {
  sq_store *q = sq(s);
  if (!q->ins &&
      sqlite3_prepare_v2(
          q->db,
          "INSERT INTO predictions(created_ms, request_id, image_sha256, "
          "image_bytes, image_width, image_height, model_name, model_version, "
          "model_sha256, label, probability, probabilities, ms_decode, "
          "ms_preprocess, ms_inference, ms_total, image_format, image_path) "
          "VALUES "
          "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)",
          -1, &q->ins, NULL) != SQLITE_OK)
    return db_err(
        q, eb, "prepare insert (database not migrated? run `dermal migrate`)");
  sqlite3_stmt *st = q->ins;
  dm_err rc = DM_OK;
  sqlite3_bind_int64(st, 1, r->created_unix_ms);
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
    rc = db_err(q, eb, "insert");
  else
    r->id = sqlite3_last_insert_rowid(q->db);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc;
}

static dm_err sq_count(dm_store *s, int64_t *out, dm_errbuf *eb) {
  return query_int64(sq(s), "SELECT COUNT(*) FROM predictions", "count", out,
                     eb);
}

static const char *col_text(sqlite3_stmt *st, int i) {
  return (const char *)sqlite3_column_text(st, i);
}

static dm_err sq_list(dm_store *s, int64_t before_id, int limit,
                      dm__store_emit emit, void *ctx, dm_errbuf *eb) {
  sq_store *q = sq(s);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(
          q->db,
          "SELECT id, created_ms, request_id, image_sha256, image_bytes, "
          "image_width, image_height, image_format, model_name, model_version, "
          "model_sha256, label, probability, probabilities, ms_decode, "
          "ms_preprocess, ms_inference, ms_total FROM predictions "
          "WHERE ?1 <= 0 OR id < ?1 ORDER BY id DESC LIMIT ?2",
          -1, &st, NULL) != SQLITE_OK)
    return db_err(q, eb, "list");
  sqlite3_bind_int64(st, 1, before_id);
  sqlite3_bind_int(st, 2, limit);
  dm_err rc = DM_OK;
  int r;
  while ((r = sqlite3_step(st)) == SQLITE_ROW) {
    dm__store_row row = {
        .id = sqlite3_column_int64(st, 0),
        .created_ms = sqlite3_column_int64(st, 1),
        .request_id = col_text(st, 2),
        .image_sha256 = col_text(st, 3),
        .image_bytes = sqlite3_column_int64(st, 4),
        .image_width = sqlite3_column_int(st, 5),
        .image_height = sqlite3_column_int(st, 6),
        .image_format = col_text(st, 7),
        .model_name = col_text(st, 8),
        .model_version = col_text(st, 9),
        .model_sha256 = col_text(st, 10),
        .label = col_text(st, 11),
        .probability = sqlite3_column_double(st, 12),
        .probabilities = col_text(st, 13),
        .ms_decode = sqlite3_column_double(st, 14),
        .ms_preprocess = sqlite3_column_double(st, 15),
        .ms_inference = sqlite3_column_double(st, 16),
        .ms_total = sqlite3_column_double(st, 17),
    };
    if ((rc = emit(ctx, &row, eb))) break;
  }
  if (!rc && r != SQLITE_DONE) rc = db_err(q, eb, "list");
  sqlite3_finalize(st);
  return rc;
}

static const dm__store_ops SQLITE_OPS = {
    .name = "sqlite",
    .version = sq_version,
    .migrate = sq_migrate,
    .insert = sq_insert,
    .count = sq_count,
    .list = sq_list,
    .close = sq_close,
};

static dm_err sq_open(const char *path, dm_store **out, dm_errbuf *eb) {
  sq_store *q = calloc(1, sizeof *q);
  if (!q) return dm_errf(eb, DM_NOMEM, "store: out of memory");
  q->base.ops = &SQLITE_OPS;
  int flags =
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
  dm_err rc;
  if (sqlite3_open_v2(path, &q->db, flags, NULL) != SQLITE_OK) {
    rc = q->db ? db_err(q, eb, path)
               : dm_errf(eb, DM_NOMEM, "sqlite: out of memory");
    goto fail;
  }
  sqlite3_busy_timeout(q->db, 5000);
  sqlite3_extended_result_codes(q->db, 1);
  rc = exec_script(q,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                   "PRAGMA foreign_keys=ON;"
                   "CREATE TABLE IF NOT EXISTS schema_migrations ("
                   " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                   " applied_ms INTEGER NOT NULL);",
                   eb);
  if (rc) goto fail;
  *out = &q->base;
  return DM_OK;
fail:
  sq_close(&q->base);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* public functions                                                          */

dm_err dm_store_open(const char *url, dm_store **out, dm_errbuf *eb) {
  if (!url || !out) return dm_errf(eb, DM_ARG, "store: no URL");
  dm_store *s = NULL;
  dm_err rc;
  if (!strncmp(url, "sqlite:///", 10)) {
    const char *path = url + 10; /* "sqlite:////abs" leaves "/abs" */
    if (!*path) return dm_errf(eb, DM_ARG, "store: empty sqlite path");
    rc = sq_open(path, &s, eb);
  } else if (!strncmp(url, "postgres://", 11) ||
             !strncmp(url, "postgresql://", 13)) {
    rc = dm__store_pg_open(url, &s, eb);
  } else {
    /* The URL may carry a password: show its scheme only. */
    const char *colon = strchr(url, ':');
    int n = colon ? (int)(colon - url) : (int)strlen(url);
    return dm_errf(eb, DM_ARG,
                   "store: DATABASE_URL must be sqlite:///relative, "
                   "sqlite:////absolute, postgres://... or none, got "
                   "scheme '%.*s'",
                   n > 40 ? 40 : n, url);
  }
  if (rc) return rc;
  if (pthread_mutex_init(&s->mu, NULL)) {
    s->ops->close(s);
    return dm_errf(eb, DM_NOMEM, "store: cannot create mutex");
  }
  *out = s;
  return DM_OK;
}

void dm_store_close(dm_store *s) {
  if (!s) return;
  pthread_mutex_destroy(&s->mu);
  s->ops->close(s);
}

dm_err dm_store_version(dm_store *s, int *out, dm_errbuf *eb) {
  int v = 0;
  pthread_mutex_lock(&s->mu);
  dm_err rc = s->ops->version(s, &v, eb);
  pthread_mutex_unlock(&s->mu);
  if (!rc) *out = v;
  return rc;
}

dm_err dm_store_migrate(dm_store *s, int target, int *applied, dm_errbuf *eb) {
  if (target < 0) target = DM__STORE_N_MIGRATIONS;
  if (target > DM__STORE_N_MIGRATIONS)
    return dm_errf(eb, DM_RANGE, "store: target version %d > latest %d", target,
                   DM__STORE_N_MIGRATIONS);
  int n = 0;
  pthread_mutex_lock(&s->mu);
  dm_err rc = s->ops->migrate(s, target, &n, eb);
  pthread_mutex_unlock(&s->mu);
  if (applied) *applied = n;
  return rc;
}

dm_err dm_store_insert(dm_store *s, dm_store_record *r, dm_errbuf *eb) {
  if (!r->request_id || !r->image_sha256 || !r->label)
    return dm_errf(eb, DM_ARG, "store: record without request_id/sha256/label");
  /* The backend sees the time actually stored; the caller's record keeps
   * its 0 ("now"). */
  dm_store_record rec = *r;
  if (!rec.created_unix_ms) rec.created_unix_ms = dm__store_now_ms();
  pthread_mutex_lock(&s->mu);
  dm_err rc = s->ops->insert(s, &rec, eb);
  pthread_mutex_unlock(&s->mu);
  if (!rc) r->id = rec.id;
  return rc;
}

dm_err dm_store_count(dm_store *s, int64_t *out, dm_errbuf *eb) {
  int64_t n = 0;
  pthread_mutex_lock(&s->mu);
  dm_err rc = s->ops->count(s, &n, eb);
  pthread_mutex_unlock(&s->mu);
  if (!rc) *out = n;
  return rc;
}

static json_t *str_or_null(const char *t) {
  return t ? json_string(t) : json_null();
}

typedef struct list_ctx {
  json_t *items;
  int limit, n;
  bool more;
  int64_t last_id;
} list_ctx;

static dm_err emit_row(void *arg, const dm__store_row *row, dm_errbuf *eb) {
  list_ctx *c = arg;
  /* The backend is asked for one row more than the page: its presence
   * tells whether a next page exists. */
  if (c->n == c->limit) {
    c->more = true;
    return DM_OK;
  }
  json_t *o = json_object();
  if (!o) return dm_errf(eb, DM_NOMEM, "store: out of memory");
  c->last_id = row->id;
  json_object_set_new(o, "id", json_integer(row->id));
  json_object_set_new(o, "created_ms", json_integer(row->created_ms));
  json_object_set_new(o, "request_id", str_or_null(row->request_id));
  json_object_set_new(o, "image_sha256", str_or_null(row->image_sha256));
  json_object_set_new(o, "image_bytes", json_integer(row->image_bytes));
  json_object_set_new(o, "image_width", json_integer(row->image_width));
  json_object_set_new(o, "image_height", json_integer(row->image_height));
  json_object_set_new(o, "image_format", str_or_null(row->image_format));
  json_object_set_new(o, "model_name", str_or_null(row->model_name));
  json_object_set_new(o, "model_version", str_or_null(row->model_version));
  json_object_set_new(o, "model_sha256", str_or_null(row->model_sha256));
  json_object_set_new(o, "label", str_or_null(row->label));
  json_object_set_new(o, "probability", json_real(row->probability));
  /* Stored by us as a JSON object; a row that does not parse (edited by
   * hand) is shown as null rather than failing the page. */
  json_t *probs =
      row->probabilities ? json_loads(row->probabilities, 0, NULL) : NULL;
  json_object_set_new(o, "probabilities", probs ? probs : json_null());
  json_t *ms = json_object();
  if (ms) {
    json_object_set_new(ms, "decode", json_real(row->ms_decode));
    json_object_set_new(ms, "preprocess", json_real(row->ms_preprocess));
    json_object_set_new(ms, "inference", json_real(row->ms_inference));
    json_object_set_new(ms, "total", json_real(row->ms_total));
    json_object_set_new(o, "ms", ms);
  }
  json_array_append_new(c->items, o);
  c->n++;
  return DM_OK;
}

dm_err dm_store_list_json(dm_store *s, int64_t before_id, int limit,
                          char **json_out, dm_errbuf *eb) {
  if (limit < 1 || limit > 1000)
    return dm_errf(eb, DM_RANGE, "store: limit %d not in 1..1000", limit);
  dm_err rc = DM_OK;
  list_ctx c = {.items = json_array(), .limit = limit};
  json_t *root = json_object();
  if (!root || !c.items) {
    rc = dm_errf(eb, DM_NOMEM, "store: out of memory");
    goto out;
  }
  int64_t total = 0;
  pthread_mutex_lock(&s->mu);
  rc = s->ops->count(s, &total, eb);
  if (!rc) rc = s->ops->list(s, before_id, limit + 1, emit_row, &c, eb);
  pthread_mutex_unlock(&s->mu);
  if (rc) goto out;
  json_object_set(root, "items", c.items);
  json_object_set_new(root, "next_before",
                      c.more ? json_integer(c.last_id) : json_null());
  json_object_set_new(root, "total", json_integer(total));
  char *txt = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(7));
  if (!txt)
    rc = dm_errf(eb, DM_NOMEM, "store: out of memory");
  else
    *json_out = txt;
out:
  json_decref(c.items);
  json_decref(root);
  return rc;
}

void dm_store_url_redact(const char *url, char *out, size_t n) {
  /* scheme://user:password@host...: blank what lies between ':' and '@' */
  const char *auth = strstr(url, "://");
  const char *at = auth ? strchr(auth + 3, '@') : NULL;
  const char *colon = auth ? strchr(auth + 3, ':') : NULL;
  if (!at || !colon || colon > at) {
    snprintf(out, n, "%s", url);
    return;
  }
  snprintf(out, n, "%.*s:***%s", (int)(colon - url), url, at);
}
