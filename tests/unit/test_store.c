/* test_store.c: the prediction store on sqlite :memory: and a temp file,
 * and the same checks on PostgreSQL when DERMAL_TEST_PG_URL is set.
 *
 * Purpose: every migration step up and down (schema and schema_migrations
 * agree after each), insert/list/paginate, URL parsing, refusals.
 * Invariants: no model; without DERMAL_TEST_PG_URL no network and no server
 * (tests/integration/test_store_pg.sh sets it against a throwaway cluster;
 * the database it names is emptied: every table dermal created is dropped);
 * ends with `N passed, N failed`.
 * Threading: one test inserts from several threads into one handle; on
 * PostgreSQL two handles also migrate at once from two threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "dermal/store.h"

static int passed, failed;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (cond) {                                                                \
      passed++;                                                                \
    } else {                                                                   \
      failed++;                                                                \
      printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
    }                                                                          \
  } while (0)

static const char *SHA =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static dm_err insert_one(dm_store *s, int i) {
  char rid[32];
  snprintf(rid, sizeof rid, "req-%d", i);
  dm_store_record r = {0};
  r.request_id = rid;
  r.image_sha256 = SHA;
  r.image_bytes = 1000 + i;
  r.image_width = 200;
  r.image_height = 150;
  r.image_format = "jpeg";
  r.model_name = "tiny";
  r.model_version = "1";
  r.label = (i % 2) ? "nv" : "mel";
  r.probability = 0.5 + (double)i / 1000.0;
  r.probabilities = "{\"mel\":0.4,\"nv\":0.6}";
  r.ms_inference = 1.5;
  dm_errbuf eb = {{0}};
  dm_err rc = dm_store_insert(s, &r, &eb);
  if (rc) printf("insert: %s\n", eb.msg);
  return rc;
}

static void test_urls(void) {
  dm_store *s = NULL;
  dm_errbuf eb = {{0}};
  CHECK(dm_store_url_disabled("none"));
  CHECK(dm_store_url_disabled("NONE"));
  CHECK(dm_store_url_disabled(""));
  CHECK(dm_store_url_disabled(NULL));
  CHECK(!dm_store_url_disabled("sqlite:///x.db"));
  /* Port 1 on loopback: refused at once, whatever runs on the host. */
  CHECK(dm_store_open("postgres://u:secret@127.0.0.1:1/db", &s, &eb) == DM_DB);
  CHECK(strstr(eb.msg, "PostgreSQL") != NULL);
  CHECK(strstr(eb.msg, "secret") == NULL); /* never echo a password */
  CHECK(dm_store_open("postgresql://u@127.0.0.1:1/db?connect_timeout=2", &s,
                      &eb) == DM_DB);
  CHECK(dm_store_open("mysql://u:secret@x/db", &s, &eb) == DM_ARG);
  CHECK(strstr(eb.msg, "secret") == NULL);
  CHECK(dm_store_open("mysql://x", &s, &eb) == DM_ARG);
  CHECK(dm_store_open("sqlite:///", &s, &eb) == DM_ARG);
  CHECK(s == NULL);
}

static bool table_exists(dm_store *s, const char *sql_probe) {
  /* Probe through the public API: count works only with the table. */
  (void)sql_probe;
  int64_t n = 0;
  return dm_store_count(s, &n, NULL) == DM_OK;
}

static bool is_pg(const char *url) { return strncmp(url, "sqlite:", 7) != 0; }

/* Opens url on an empty schema: a PostgreSQL database outlives the handle,
 * so it is migrated down to 0 first (the step-down path under test too). */
static dm_store *open_fresh(const char *url) {
  dm_store *s = NULL;
  dm_errbuf eb = {{0}};
  if (dm_store_open(url, &s, &eb) != DM_OK) {
    printf("open %s: %s\n", is_pg(url) ? "postgres" : url, eb.msg);
    return NULL;
  }
  if (is_pg(url) && dm_store_migrate(s, 0, NULL, &eb) != DM_OK) {
    printf("migrate to 0: %s\n", eb.msg);
    dm_store_close(s);
    return NULL;
  }
  return s;
}

static void test_migrations(const char *url) {
  dm_errbuf eb = {{0}};
  dm_store *s = open_fresh(url);
  CHECK(s != NULL);
  if (!s) return;
  int v = -1, n = -1;
  CHECK(dm_store_version(s, &v, &eb) == DM_OK && v == 0);
  CHECK(!table_exists(s, "predictions"));
  CHECK(dm_store_latest_version() >= 2);
  CHECK(dm_store_migration_name(1) != NULL);
  CHECK(dm_store_migration_name(0) == NULL);
  CHECK(dm_store_migration_name(dm_store_latest_version() + 1) == NULL);
  /* Every step up, then every step down, then up again. */
  for (int t = 1; t <= dm_store_latest_version(); t++) {
    CHECK(dm_store_migrate(s, t, &n, &eb) == DM_OK && n == 1);
    CHECK(dm_store_version(s, &v, &eb) == DM_OK && v == t);
    CHECK(table_exists(s, "predictions"));
    if (t == dm_store_latest_version()) CHECK(insert_one(s, t) == DM_OK);
  }
  CHECK(dm_store_migrate(s, -1, &n, &eb) == DM_OK && n == 0); /* idempotent */
  for (int t = dm_store_latest_version() - 1; t >= 0; t--) {
    CHECK(dm_store_migrate(s, t, &n, &eb) == DM_OK && n == 1);
    CHECK(dm_store_version(s, &v, &eb) == DM_OK && v == t);
    CHECK(table_exists(s, "predictions") == (t > 0));
  }
  CHECK(dm_store_migrate(s, -1, &n, &eb) == DM_OK &&
        n == dm_store_latest_version());
  CHECK(dm_store_migrate(s, dm_store_latest_version() + 1, &n, &eb) ==
        DM_RANGE);
  CHECK(insert_one(s, 7) == DM_OK);
  dm_store_close(s);
}

static void test_insert_list(const char *url) {
  dm_errbuf eb = {{0}};
  dm_store *s = open_fresh(url);
  CHECK(s != NULL);
  if (!s) return;
  CHECK(dm_store_migrate(s, -1, NULL, &eb) == DM_OK);
  for (int i = 0; i < 25; i++)
    CHECK(insert_one(s, i) == DM_OK);
  int64_t cnt = 0;
  CHECK(dm_store_count(s, &cnt, &eb) == DM_OK && cnt == 25);

  /* Walk the pages with the cursor: 10 + 10 + 5, newest first. */
  int64_t before = 0;
  int seen = 0, pages = 0;
  int64_t prev_id = INT64_MAX;
  bool ordered = true, probs_ok = true;
  for (;;) {
    char *txt = NULL;
    CHECK(dm_store_list_json(s, before, 10, &txt, &eb) == DM_OK);
    if (!txt) break;
    json_t *root = json_loads(txt, 0, NULL);
    free(txt);
    CHECK(root != NULL);
    if (!root) break;
    json_t *items = json_object_get(root, "items");
    CHECK(json_integer_value(json_object_get(root, "total")) == 25);
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
      int64_t id = json_integer_value(json_object_get(it, "id"));
      if (id >= prev_id) ordered = false;
      prev_id = id;
      if (!json_is_object(json_object_get(it, "probabilities")))
        probs_ok = false;
      seen++;
    }
    pages++;
    json_t *nb = json_object_get(root, "next_before");
    if (json_is_null(nb)) {
      json_decref(root);
      break;
    }
    before = json_integer_value(nb);
    json_decref(root);
    if (pages > 5) break;
  }
  CHECK(seen == 25);
  CHECK(pages == 3);
  CHECK(ordered);
  CHECK(probs_ok);
  /* The newest row is the last inserted one. */
  char *txt = NULL;
  CHECK(dm_store_list_json(s, 0, 1, &txt, &eb) == DM_OK);
  CHECK(txt && strstr(txt, "\"req-24\"") != NULL);
  free(txt);
  CHECK(dm_store_list_json(s, 0, 0, &txt, &eb) == DM_RANGE);
  CHECK(dm_store_list_json(s, 0, 1001, &txt, &eb) == DM_RANGE);
  /* Hostile strings are data, not SQL. */
  dm_store_record r = {0};
  r.request_id = "x'); DROP TABLE predictions; --";
  r.image_sha256 = SHA;
  r.label = "\"quoted\"\n";
  CHECK(dm_store_insert(s, &r, &eb) == DM_OK && r.id == 26);
  CHECK(dm_store_count(s, &cnt, &eb) == DM_OK && cnt == 26);
  r.label = NULL;
  CHECK(dm_store_insert(s, &r, &eb) == DM_ARG);
  dm_store_close(s);
}

static void *inserter(void *arg) {
  dm_store *s = arg;
  for (int i = 0; i < 50; i++)
    if (insert_one(s, i)) return (void *)1;
  return NULL;
}

static void test_file_concurrent(void) {
  char dir[] = "/tmp/dm_store_XXXXXX";
  if (!mkdtemp(dir)) {
    CHECK(!"mkdtemp");
    return;
  }
  char url[320], path[256];
  snprintf(path, sizeof path, "%s/h.db", dir);
  snprintf(url, sizeof url, "sqlite:///%s", path); /* four slashes: absolute */
  dm_store *s = NULL;
  dm_errbuf eb = {{0}};
  CHECK(dm_store_open(url, &s, &eb) == DM_OK);
  if (!s) return;
  CHECK(dm_store_migrate(s, -1, NULL, &eb) == DM_OK);
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&th[i], NULL, inserter, s);
  bool ok = true;
  for (int i = 0; i < 4; i++) {
    void *r;
    pthread_join(th[i], &r);
    if (r) ok = false;
  }
  CHECK(ok);
  int64_t cnt = 0;
  CHECK(dm_store_count(s, &cnt, &eb) == DM_OK && cnt == 200);
  dm_store_close(s);
  /* Reopen: version persisted. */
  CHECK(dm_store_open(url, &s, &eb) == DM_OK);
  int v = 0;
  CHECK(s && dm_store_version(s, &v, &eb) == DM_OK &&
        v == dm_store_latest_version());
  dm_store_close(s);
  char p2[300];
  unlink(path);
  snprintf(p2, sizeof p2, "%s-wal", path);
  unlink(p2);
  snprintf(p2, sizeof p2, "%s-shm", path);
  unlink(p2);
  rmdir(dir);
}

/* PostgreSQL: the file test's threads on one shared handle, then persistence
 * across handles. */
static void test_pg_concurrent(const char *url) {
  dm_errbuf eb = {{0}};
  dm_store *s = open_fresh(url);
  CHECK(s != NULL);
  if (!s) return;
  CHECK(dm_store_migrate(s, -1, NULL, &eb) == DM_OK);
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&th[i], NULL, inserter, s);
  bool ok = true;
  for (int i = 0; i < 4; i++) {
    void *r;
    pthread_join(th[i], &r);
    if (r) ok = false;
  }
  CHECK(ok);
  int64_t cnt = 0;
  CHECK(dm_store_count(s, &cnt, &eb) == DM_OK && cnt == 200);
  dm_store_close(s);
  s = NULL;
  CHECK(dm_store_open(url, &s, &eb) == DM_OK);
  int v = 0;
  CHECK(s && dm_store_version(s, &v, &eb) == DM_OK &&
        v == dm_store_latest_version());
  CHECK(s && dm_store_count(s, &cnt, &eb) == DM_OK && cnt == 200);
  dm_store_close(s);
}

typedef struct mig_arg {
  dm_store *s;
  int applied;
  dm_err rc;
} mig_arg;

static void *migrator(void *arg) {
  mig_arg *a = arg;
  dm_errbuf eb = {{0}};
  a->rc = dm_store_migrate(a->s, -1, &a->applied, &eb);
  if (a->rc) printf("concurrent migrate: %s\n", eb.msg);
  return NULL;
}

/* Two handles (two sessions, as two replicas) migrate a new database at
 * once: the advisory lock lets one run the steps, the other finds them
 * done. */
static void test_pg_migrate_race(const char *url) {
  dm_store *a = open_fresh(url), *b = NULL;
  dm_errbuf eb = {{0}};
  CHECK(a != NULL && dm_store_open(url, &b, &eb) == DM_OK);
  if (a && b) {
    mig_arg ma = {a, -1, DM_OK}, mb = {b, -1, DM_OK};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, migrator, &ma);
    pthread_create(&tb, NULL, migrator, &mb);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(ma.rc == DM_OK && mb.rc == DM_OK);
    CHECK(ma.applied + mb.applied == dm_store_latest_version());
    int v = 0;
    CHECK(dm_store_version(b, &v, &eb) == DM_OK &&
          v == dm_store_latest_version());
    CHECK(insert_one(a, 1) == DM_OK && insert_one(b, 2) == DM_OK);
  }
  dm_store_close(a);
  dm_store_close(b);
}

int main(void) {
  test_urls();
  test_migrations("sqlite:///:memory:");
  test_insert_list("sqlite:///:memory:");
  test_file_concurrent();
  const char *pg = getenv("DERMAL_TEST_PG_URL");
  if (pg && *pg) {
    int p0 = passed, f0 = failed;
    test_migrations(pg);
    test_insert_list(pg);
    test_pg_concurrent(pg);
    test_pg_migrate_race(pg);
    printf("postgres: %d passed, %d failed\n", passed - p0, failed - f0);
  }
  printf("test_store: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
