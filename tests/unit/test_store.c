/* test_store.c: the prediction store on sqlite :memory: and a temp file.
 *
 * Purpose: every migration step up and down (schema and schema_migrations
 * agree after each), insert/list/paginate, URL parsing, refusals.
 * Invariants: no network, no model; ends with `N passed, N failed`.
 * Threading: one test inserts from several threads into one handle. */
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
  CHECK(dm_store_open("postgres://u@localhost/db", &s, &eb) == DM_UNSUPPORTED);
  CHECK(strstr(eb.msg, "PostgreSQL") != NULL);
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

static void test_migrations(void) {
  dm_store *s = NULL;
  dm_errbuf eb = {{0}};
  CHECK(dm_store_open("sqlite:///:memory:", &s, &eb) == DM_OK);
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

static void test_insert_list(void) {
  dm_store *s = NULL;
  dm_errbuf eb = {{0}};
  CHECK(dm_store_open("sqlite:///:memory:", &s, &eb) == DM_OK);
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

int main(void) {
  test_urls();
  test_migrations();
  test_insert_list();
  test_file_concurrent();
  printf("test_store: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
