/* util.c: small helpers for the CLI subcommands: time, RSS, strict integer
 * parsing, JSON string output, default model lookup, whole-file reads. */
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double dm_cli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double dm_cli_peak_rss_mb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

int dm_cli_parse_long(const char *flag, const char *s, long lo, long hi,
                      long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    fprintf(stderr, "dermal: %s expects an integer in %ld..%ld, got '%s'\n",
            flag, lo, hi, s);
    return -1;
  }
  *out = v;
  return 0;
}

int dm_cli_parse_precision(const char *flag, const char *s, dm_precision *out) {
  if (!strcmp(s, "fp32"))
    *out = DM_PRECISION_FP32;
  else if (!strcmp(s, "bf16"))
    *out = DM_PRECISION_BF16;
  else if (!strcmp(s, "auto"))
    *out = DM_PRECISION_AUTO;
  else {
    fprintf(stderr, "dermal: %s is fp32, bf16 or auto, not '%s'\n", flag, s);
    return 2;
  }
  return 0;
}

int dm_cli_parse_int(const char *flag, const char *s, long lo, long hi,
                     int *out) {
  long v;
  if (dm_cli_parse_long(flag, s, lo, hi < INT_MAX ? hi : INT_MAX, &v))
    return -1;
  *out = (int)v;
  return 0;
}

void dm_cli_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

const char *dm_cli_default_model(void) {
  static char buf[PATH_MAX];
  const char *env = getenv("MODEL_PATH");
  if (env && *env) return env;
  static const char rel[] = "models/dermal-ham10000.onnx";
  struct stat st;
  if (stat(rel, &st) == 0) return rel;
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    if (slash) {
      *slash = 0;
      size_t used = strlen(buf);
      if (used + sizeof "/../" + sizeof rel < sizeof buf) {
        memcpy(buf + used, "/../", 4);
        memcpy(buf + used + 4, rel, sizeof rel);
        if (stat(buf, &st) == 0) return buf;
      }
    }
  }
  return rel;
}

void *dm_cli_read_file(const char *path, size_t max, size_t *len, char *err,
                       size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s", strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  while (buf) {
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
    if (n > max) { /* one byte over the limit is enough to refuse */
      break;
    }
    if (n == cap) {
      unsigned char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  bool bad = ferror(f);
  fclose(f);
  if (!buf || bad) {
    free(buf);
    snprintf(err, errlen, "%s", buf ? "read error" : "out of memory");
    return NULL;
  }
  *len = n;
  return buf;
}
