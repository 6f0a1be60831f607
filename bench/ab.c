/* ab.c: is engine configuration B faster than A?  Paired, in one process.
 *
 * On the 2-vCPU VMs we measure on, the same binary's p50 moves by 30 % or
 * more from one minute to the next, so two `dermal bench` runs one after
 * the other cannot resolve a 5 % change.  This builds two engines from one
 * model, the first with VAR=A in the environment and the second with
 * VAR=B (the backend reads its DERMAL_ONEDNN_* switches when it builds an
 * engine), then runs them in alternating blocks of 10 runs (ABBA order)
 * and prints both p50s and the median over blocks of the ratio of the two
 * blocks' medians: a slow phase of the machine slows both blocks of a
 * pair alike.
 *
 *   make build/ab && build/ab MODEL VAR A B [THREADS [BLOCKS]]
 *   build/ab models/dermal-ham10000.int8.onnx DERMAL_ONEDNN_STEM 0 1 2 60
 *
 * Input: the model's first input, float, batch 1, filled with a fixed
 * pattern in [-1, 1).  Defaults: 1 thread, 40 blocks.  Exit status 1 on
 * an error. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dermal/engine.h"
#include "dermal/onnx.h"

enum { RUNS = 10 }; /* per block */

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp);
  return v[n / 2];
}

static long arg_long(const char *s, long lo, long hi, const char *what) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    fprintf(stderr, "ab: %s must be an integer in [%ld, %ld], got '%s'\n", what,
            lo, hi, s);
    exit(2);
  }
  return v;
}

static int fail(const char *what, const dm_errbuf *eb) {
  fprintf(stderr, "ab: %s: %s\n", what, eb->msg);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 5 || argc > 7) {
    fprintf(stderr, "usage: ab MODEL VAR A B [THREADS [BLOCKS]]\n");
    return 2;
  }
  int threads = argc > 5 ? (int)arg_long(argv[5], 1, 256, "THREADS") : 1;
  size_t blocks =
      argc > 6 ? (size_t)arg_long(argv[6], 2, 100000, "BLOCKS") : 40;
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  if (dm_onnx_open(argv[1], &m, &eb) != DM_OK) return fail(argv[1], &eb);
  dm_engine *e[2] = {NULL, NULL};
  dm_session *s[2] = {NULL, NULL};
  for (int k = 0; k < 2; k++) {
    setenv(argv[2], argv[3 + k], 1);
    dm_engine_opts o;
    memset(&o, 0, sizeof o);
    o.threads = threads;
    if (dm_engine_new(m, &o, &e[k], &eb) != DM_OK ||
        dm_session_new(e[k], &s[k], &eb) != DM_OK)
      return fail(argv[3 + k], &eb);
  }
  dm_tensor in = dm_engine_input(e[0], 0, NULL);
  if (in.dtype != DM_ONNX_FLOAT) {
    fprintf(stderr, "ab: the first input is not float\n");
    return 1;
  }
  size_t n = 1;
  for (int i = 0; i < in.rank; i++)
    n *= (size_t)in.dims[i];
  float *x = malloc(n * sizeof *x);
  double *t[2] = {malloc(blocks * RUNS * sizeof(double)),
                  malloc(blocks * RUNS * sizeof(double))};
  double *ratio = malloc(blocks * sizeof *ratio);
  if (!x || !t[0] || !t[1] || !ratio) {
    fprintf(stderr, "ab: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < n; i++)
    x[i] = (float)((i * 7919) % 1000) / 500.f - 1.f;
  in.data = x;
  for (int k = 0; k < 2; k++) /* warm-up */
    for (int i = 0; i < RUNS; i++)
      if (dm_session_run(s[k], &in, 1, &eb) != DM_OK) return fail("run", &eb);
  for (size_t b = 0; b < blocks; b++) {
    double med[2];
    for (int j = 0; j < 2; j++) {
      int k = (b & 1) ? 1 - j : j; /* ABBA: neither always goes first */
      double *tb = t[k] + b * RUNS, blk[RUNS];
      for (int i = 0; i < RUNS; i++) {
        double t0 = now_ms();
        if (dm_session_run(s[k], &in, 1, &eb) != DM_OK) return fail("run", &eb);
        tb[i] = blk[i] = now_ms() - t0;
      }
      med[k] = median(blk, RUNS);
    }
    ratio[b] = med[1] / med[0];
  }
  printf("%s %d thread(s): %s=%s p50 %.3f ms | %s=%s p50 %.3f ms | "
         "B/A paired median %.3f over %zu blocks\n",
         argv[1], threads, argv[2], argv[3], median(t[0], blocks * RUNS),
         argv[2], argv[4], median(t[1], blocks * RUNS), median(ratio, blocks),
         blocks);
  for (int k = 0; k < 2; k++) {
    dm_session_free(s[k]);
    dm_engine_free(e[k]);
  }
  dm_onnx_free(m);
  free(x);
  free(t[0]);
  free(t[1]);
  free(ratio);
  return 0;
}
