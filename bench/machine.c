/* machine.c: what this CPU can do at most, to read benchmark ratios
 * against.  Prints one core's fp32 multiply-accumulate peak (AVX-512 FMA)
 * and int8 peak (AVX-512 VNNI vpdpbusd), then the same on two cores at
 * once, the round trip of one cache line between two pinned threads
 * (how far apart the two cores are), and the latency of a random load in
 * buffers of 1, 16 and 256 MB (what a cache miss costs at the moment:
 * on the shared VMs we measure on it changes with the neighbours, and
 * layers that stream weights slow down with it).
 *
 *   cc -O2 -pthread bench/machine.c -o build/machine && build/machine
 *   build/machine --memory      (the latency line alone, ~0.5 s)
 *
 * A model's GMAC/s is its multiply-accumulates (ResNet-50: 4.09 G) over
 * its p50 latency. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define ACC 12          /* independent accumulators: covers FMA latency */
#define ITERS 100000000 /* per run: ~0.3 s at 4 GHz */

/* G multiply-accumulates per second, fp32, one thread. */
__attribute__((target("avx512f"))) static double fp32_peak(void) {
  __m512 a[ACC], b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 12
  for (int i = 0; i < ACC; i++)
    a[i] = _mm512_set1_ps((float)i);
  double t0 = now_s();
  for (long k = 0; k < ITERS; k++)
#pragma GCC unroll 12 /* keeps a[] in registers at -O2 */
    for (int i = 0; i < ACC; i++)
      a[i] = _mm512_fmadd_ps(a[i], b, c);
  double t = now_s() - t0;
  float sink = 0;
  for (int i = 0; i < ACC; i++)
    sink += _mm512_reduce_add_ps(a[i]);
  __asm__ volatile("" : : "x"(sink));
  return (double)ITERS * ACC * 16 / t / 1e9;
}

/* G int8 multiply-accumulates per second (u8 x s8), one thread. */
__attribute__((target("avx512f,avx512vnni"))) static double int8_peak(void) {
  __m512i a[ACC], b = _mm512_set1_epi8(1), c = _mm512_set1_epi8(2);
#pragma GCC unroll 12
  for (int i = 0; i < ACC; i++)
    a[i] = _mm512_set1_epi32(i);
  double t0 = now_s();
  for (long k = 0; k < ITERS; k++)
#pragma GCC unroll 12 /* keeps a[] in registers at -O2 */
    for (int i = 0; i < ACC; i++)
      a[i] = _mm512_dpbusd_epi32(a[i], b, c);
  double t = now_s() - t0;
  int sink = 0;
  for (int i = 0; i < ACC; i++)
    sink += _mm512_reduce_add_epi32(a[i]);
  __asm__ volatile("" : : "r"(sink));
  return (double)ITERS * ACC * 64 / t / 1e9;
}

static void pin(unsigned cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  (void)pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

typedef struct job {
  unsigned cpu;
  int vnni;
  double r;
} job;

static void *peak_on(void *arg) {
  job *j = arg;
  pin(j->cpu);
  j->r = j->vnni ? int8_peak() : fp32_peak();
  return NULL;
}

static _Atomic int flag __attribute__((aligned(64)));
enum { TRIPS = 1000000 };

static void *pong(void *arg) {
  (void)arg;
  pin(1);
  for (int i = 0; i < TRIPS; i++) {
    while (atomic_load(&flag) != 1) {
    }
    atomic_store(&flag, 0);
  }
  return NULL;
}

/* Mean ns of one load in a random cyclic chain through `bytes` of memory
 * (one pointer per 64-byte line, so every load misses the caches smaller
 * than the buffer); -1 when out of memory. */
static double chase_ns(size_t bytes) {
  size_t n = bytes / 64, *a = aligned_alloc(64, n * 64),
         *order = malloc(n * sizeof *order);
  if (!a || !order) {
    free(a);
    free(order);
    return -1;
  }
  uint64_t r = 88172645463325252u; /* xorshift: a fixed random order */
  for (size_t i = 0; i < n; i++)
    order[i] = i;
  for (size_t i = n - 1; i > 0; i--) {
    r ^= r << 13;
    r ^= r >> 7;
    r ^= r << 17;
    size_t j = (size_t)(r % (i + 1)), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (size_t i = 0; i < n; i++)
    a[order[i] * 8] = order[(i + 1) % n] * 8;
  size_t p = 0;
  for (size_t i = 0; i < n; i++) /* touch every line once */
    p = a[p];
  const long loads = 1000000;
  double t0 = now_s();
  for (long i = 0; i < loads; i++)
    p = a[p];
  double t = (now_s() - t0) / (double)loads * 1e9;
  free(a);
  free(order);
  return p == (size_t)-1 ? -1 : t; /* p used: the chain is not dropped */
}

static void memory_line(void) {
  chase_ns(1u << 20); /* warm-up: a fresh process read 1 MB 5x slower */
  printf("memory latency (random loads): 1 MB %.1f ns, 16 MB %.1f ns, "
         "256 MB %.1f ns\n",
         chase_ns(1u << 20), chase_ns(16u << 20), chase_ns(256u << 20));
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--memory")) {
    memory_line();
    return 0;
  }
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) {
    printf("no AVX-512F: nothing measured\n");
    return 0;
  }
  int vnni = __builtin_cpu_supports("avx512vnni") != 0;
  for (int v = 0; v <= vnni; v++) {
    job one = {0, v, 0}, two[2] = {{0, v, 0}, {1, v, 0}};
    peak_on(&one);
    pthread_t t;
    pthread_create(&t, NULL, peak_on, &two[1]);
    peak_on(&two[0]);
    pthread_join(t, NULL);
    printf("%s peak: %.1f GMAC/s on one core, %.1f + %.1f on two\n",
           v ? "int8 (vpdpbusd)" : "fp32 (vfmadd) ", one.r, two[0].r, two[1].r);
  }
  pthread_t t;
  pthread_create(&t, NULL, pong, NULL);
  pin(0);
  double t0 = now_s();
  for (int i = 0; i < TRIPS; i++) {
    atomic_store(&flag, 1);
    while (atomic_load(&flag) != 0) {
    }
  }
  double rt = (now_s() - t0) / TRIPS * 1e9;
  pthread_join(t, NULL);
  printf("cache line round trip between cores 0 and 1: %.0f ns\n", rt);
  memory_line();
  return 0;
}
