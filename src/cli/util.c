/* util.c: small helpers for the CLI subcommands: time, RSS, strict integer
 * parsing, JSON string output, default model lookup, whole-file reads. */
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

/* Model load allocates a few MB of small heap blocks (oneDNN's primitive
 * descriptors and JIT kernels, the engine's tables).  On the VMs we run on
 * the first touch of a 4 KiB page costs 7-13 us (~500 heap page faults
 * while loading MobileNetV2), of a 2 MiB transparent huge page about the
 * same: so the heap grows in 32 MiB steps (virtual; pages are only
 * resident once touched) and its first step is advised huge pages.
 * DERMAL_HEAP_THP=0 leaves the heap alone. */
void dm_cli_heap_hugepages(void) {
#if defined(__GLIBC__) && defined(MADV_HUGEPAGE)
  const char *env = getenv("DERMAL_HEAP_THP");
  if (env && env[0] == '0') return;
  const uintptr_t huge = (uintptr_t)2 << 20;
  /* setting any of these turns off glibc's adaptive mmap threshold; 4 MiB
   * is about where it would settle for the server's image buffers */
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TOP_PAD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  char *top0 = sbrk(0);
  void *blk[64];
  int n = 0;
  while ((char *)sbrk(0) == top0 && n < 64) /* make malloc extend the heap */
    if (!(blk[n++] = malloc(100 << 10))) break;
  uintptr_t lo = ((uintptr_t)top0 + huge - 1) & ~(huge - 1);
  uintptr_t hi = (uintptr_t)sbrk(0) & ~(huge - 1);
  if (top0 != (char *)-1 && hi > lo)
    (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE); /* advisory */
  for (int i = 0; i < n; i++)
    free(blk[i]);
#endif
}

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

const char *dm_cli_precision_label(const dm_engine *e, char *buf, size_t n) {
  size_t k = dm_engine_get_stats(e)->int8_ops,
         u = dm_engine_get_stats(e)->int8_unfused;
  if (k && u)
    snprintf(buf, n,
             "int8 + %s, %zu int8 ops, %zu dequantized: no VNNI on this CPU",
             dm_engine_precision_name(e), k, u);
  else if (k)
    snprintf(buf, n, "int8 + %s, %zu int8 ops", dm_engine_precision_name(e), k);
  else
    snprintf(buf, n, "%s", dm_engine_precision_name(e));
  return buf;
}

int dm_cli_set_model(const char *cmd, const char **slot, const char *path) {
  if (*slot) {
    fprintf(stderr,
            "dermal %s: two models given ('%s' and '%s'); give one, as "
            "--model M or as the first argument\n",
            cmd, *slot, path);
    return 2;
  }
  *slot = path;
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

/* Bytes of the well-formed UTF-8 sequence at p (1-4), or 0: a stray or
 * truncated continuation, an overlong form, a surrogate, or a code point
 * past U+10FFFF.  Strings in an ONNX file are whatever its writer put
 * there (proto2 does not check them). */
static size_t utf8_seq(const unsigned char *p) {
  if (p[0] < 0x80) return 1;
  size_t n = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
  if (!n || p[0] > 0xf4) return 0;
  for (size_t i = 1; i < n; i++)
    if ((p[i] & 0xc0) != 0x80) return 0; /* also stops at the NUL */
  if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
      (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
    return 0;
  return n;
}

void dm_cli_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    size_t n = utf8_seq(p);
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\u%04x", *p);
    else if (!n)
      fputs("\\ufffd", f);
    else
      fwrite(p, 1, n, f);
    p += n ? n : 1;
  }
  fputc('"', f);
}

void dm_cli_text_str(FILE *f, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    size_t n = utf8_seq(p);
    if (!n || *p < 0x20 || *p == 0x7f)
      fprintf(f, "\\x%02x", *p);
    else
      fwrite(p, 1, n, f);
    p += n ? n : 1;
  }
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
