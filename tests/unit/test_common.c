/* test_common.c: src/common: SHA-256 (the model fingerprint in /health and
 * every answer).  FIPS 180-4 example vectors, the SHA-NI block function
 * against the portable C one on random states and data, chunked updates
 * against one update, and dm__sha256_file against coreutils' sha256sum.
 * Last line: `test_common: N passed, N failed`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/sha256.h"

static uint32_t rng = 12345;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

static void hex_of(const void *data, size_t n, size_t chunk, char hex[65]) {
  dm__sha256 s;
  dm__sha256_init(&s);
  const uint8_t *p = data;
  for (size_t i = 0; i < n; i += chunk)
    dm__sha256_update(&s, p + i, n - i < chunk ? n - i : chunk);
  uint8_t d[32];
  dm__sha256_final(&s, d);
  for (int i = 0; i < 32; i++)
    sprintf(hex + 2 * i, "%02x", d[i]);
}

static void vectors(void) {
  static const struct {
    const char *msg;
    size_t repeat;
    const char *want;
  } v[] = {
      {"abc", 1,
       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"", 1,
       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"a", 1000000,
       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    size_t len = strlen(v[i].msg) * v[i].repeat;
    char *buf = malloc(len + 1);
    for (size_t r = 0; r < v[i].repeat; r++)
      memcpy(buf + r * strlen(v[i].msg), v[i].msg, strlen(v[i].msg));
    char hex[65];
    static const size_t chunks[] = {1, 7, 64, 1000, (size_t)-1};
    for (size_t c = 0; c < 5; c++) {
      if (v[i].repeat > 1 && chunks[c] < 64) continue; /* 1M single bytes */
      hex_of(buf, len, chunks[c], hex);
      CHECK(!strcmp(hex, v[i].want), "FIPS vector %zu (chunk %zu): %s", i,
            chunks[c], hex);
    }
    free(buf);
  }
}

static void hw_vs_c(void) {
  printf("SHA-NI: %s\n", dm__sha256_hw() ? "yes" : "no (both paths are C)");
  uint8_t data[64 * 40];
  for (int trial = 0; trial < 50; trial++) {
    uint32_t a[8], b[8];
    for (int i = 0; i < 8; i++)
      a[i] = b[i] = rnd();
    for (size_t i = 0; i < sizeof data; i++)
      data[i] = (uint8_t)rnd();
    size_t nb = 1 + rnd() % 40;
    dm__sha256_blocks_c(a, data, nb);
    dm__sha256_blocks_hw(b, data, nb);
    CHECK(!memcmp(a, b, sizeof a), "trial %d: %zu blocks: hw != C", trial, nb);
  }
}

static void file_vs_sha256sum(void) {
  char path[] = "/tmp/dermal-test-sha-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    CHECK(0, "mkstemp");
    return;
  }
  size_t n = (1 << 20) + 77; /* several read() chunks and a partial block */
  uint8_t *buf = malloc(n);
  for (size_t i = 0; i < n; i++)
    buf[i] = (uint8_t)rnd();
  CHECK(write(fd, buf, n) == (ssize_t)n, "write");
  close(fd);
  char hex[65], want[65] = "";
  dm_errbuf eb = {{0}};
  CHECK(!dm__sha256_file(path, hex, &eb), "sha256_file: %s", eb.msg);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "sha256sum %s", path);
  FILE *p = popen(cmd, "r");
  if (p && fscanf(p, "%64s", want) == 1) {
    CHECK(!strcmp(hex, want), "file: %s, sha256sum: %s", hex, want);
  } else {
    printf("SKIP sha256sum not available\n");
  }
  if (p) pclose(p);
  CHECK(dm__sha256_file("/nonexistent/dermal", hex, &eb) == DM_IO,
        "missing file -> DM_IO");
  unlink(path);
  free(buf);
}

int main(void) {
  vectors();
  hw_vs_c();
  file_vs_sha256sum();
  printf("test_common: %d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed != 0;
}
