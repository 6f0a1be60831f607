/* pw.c: 1x1 convolutions on channels-last float maps, our own kernel.
 *
 * Two things oneDNN 2.6's brgemm 1x1 kernel leaves on the table on the
 * Zen 4 VMs we measure on (DERMAL_ONEDNN_PROFILE, one thread):
 * - Output channels that end in a half vector (24, 40: MobileNet-v2's
 *   and EfficientNet-B0's projections) get a masked 16-lane vector for
 *   the last 8, and Zen 4 executes a 512-bit FMA as two 256-bit halves,
 *   so the masked half costs as much as the live one: 144->24 at 56x56
 *   ran at 65 % of the FMA peak.  Here the last 8 channels take a 256-bit
 *   FMA, half the cost.
 * - Weights that come from memory each run (a network's weights do not
 *   stay in the 1 MB L2 from one run to the next).  This kernel reads
 *   each weight once per chunk of pixels, front to back, which the
 *   hardware prefetchers follow: with the caches flushed before each call,
 *   160->960 at 7x7 took 0.16 ms against brgemm's 0.19, 96->576 at 14x14
 *   0.23 against 0.26-0.29 (a throwaway program, both in one process).
 *
 * Loop order: chunks of pixels whose inputs fit in L2 (CHUNK_BYTES); in a
 * chunk, groups of 64 output channels, then the rest (16 q + 8 h), each
 * over the chunk's pixels in register blocks: P pixels x (Q 16-lane
 * vectors + H 8-lane ones) of accumulators, P = 6 for 64 channels, else
 * 8 (6 for q = 3), the weights of one input channel in Q + H registers,
 * each pixel's input broadcast once per input channel.  Sums start from
 * the bias and add the input channels in order, with FMA; then the node's
 * post-ops in order (activations as act16v computes them, the residual
 * read from y). */
#include <string.h>

#include "internal.h"
#include "simd.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* Inputs of one chunk of pixels: at most this many bytes (half the L2). */
#define CHUNK_BYTES (512u << 10)

size_t dm__pw_floats(const dm_pw *p) {
  return (size_t)p->k * (size_t)p->oc + (size_t)p->oc;
}

/* Packed: per group of 64 output channels (then the rest) its (k, width)
 * block, then the bias. */
void dm__pw_pack(dm_pw *p, float *mem, const void *w, const void *b) {
  size_t k = (size_t)p->k, oc = (size_t)p->oc;
  const char *src = w;
  p->w = mem;
  p->b = mem + k * oc;
  for (size_t g0 = 0; g0 < oc; g0 += 64) {
    size_t gw = oc - g0 < 64 ? oc - g0 : 64;
    float *blk = mem + g0 * k;
    for (size_t o = 0; o < gw; o++) /* (oc, k) from the file -> (k, gw) */
      for (size_t i = 0; i < k; i++)
        memcpy(&blk[i * gw + o], src + ((g0 + o) * k + i) * sizeof(float),
               sizeof(float));
  }
  if (b)
    memcpy(p->b, b, oc * sizeof(float));
  else
    memset(p->b, 0, oc * sizeof(float));
}

bool dm__pw_shape(int oc) { return oc >= 8 && oc % 8 == 0; }

bool dm__pw_cpu(void) {
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (!dm__simd_ok() || !__get_cpuid(0, &a, &b, &c, &d)) return false;
  /* "AuthenticAMD" in ebx, edx, ecx */
  if (b != 0x68747541u || d != 0x69746e65u || c != 0x444d4163u) return false;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  unsigned family = ((a >> 8) & 0xfu) + ((a >> 20) & 0xffu);
  return family == 0x19; /* Zen 3 and 4; only Zen 4 has AVX-512 */
#else
  return false;
#endif
}

#if defined(__x86_64__)
/* AVX-512F and DQ (act16v) with the 256-bit FMA */
#define PW_ISA DM_AVX512_ISA ",avx2,fma"
#define INLINE __attribute__((target(PW_ISA), always_inline)) static inline

/* The post-ops on one 16-lane vector at yp (channels [c, c + 16), or the
 * low 8 lanes when half). */
INLINE __m512 post16(const dm_pw *p, __m512 v, const float *yp, bool half) {
  for (int i = 0; i < p->n_post; i++) {
    if (p->sum[i])
      v = _mm512_add_ps(v, half ? _mm512_castps256_ps512(_mm256_loadu_ps(yp))
                                : _mm512_loadu_ps(yp));
    else
      v = act16v(&p->act[i], v);
  }
  return v;
}

/* Output channels [c0, c0 + 16 Q + 8 H) of pixels [0, P): x holds k
 * floats a pixel, y oc, w the group's packed (k, 16 Q + 8 H) weights.  P,
 * Q and H are constants where this is inlined. */
INLINE void pw_block(const dm_pw *p, float *y, const float *x, const float *w,
                     size_t c0, int P, int Q, int H) {
  const size_t k = (size_t)p->k, oc = (size_t)p->oc;
  const size_t gw = 16 * (size_t)Q + 8 * (size_t)H;
  const float *bias = p->b + c0;
  __m512 a[8][4];
  __m256 t[8];
#pragma GCC unroll 8
  for (int i = 0; i < P; i++) {
#pragma GCC unroll 4
    for (int j = 0; j < Q; j++)
      a[i][j] = _mm512_loadu_ps(bias + 16 * j);
    if (H) t[i] = _mm256_loadu_ps(bias + 16 * Q);
  }
  /* the next block's inputs (P k floats after these), over the k steps */
  const char *next = (const char *)(x + (size_t)P * k);
  for (size_t c = 0; c < k; c++, w += gw) {
    __builtin_prefetch(next + c * (size_t)P * sizeof(float));
    __m512 w0 = Q > 0 ? _mm512_loadu_ps(w) : _mm512_setzero_ps();
    __m512 w1 = w0, w2 = w0, w3 = w0;
    if (Q > 1) w1 = _mm512_loadu_ps(w + 16);
    if (Q > 2) w2 = _mm512_loadu_ps(w + 32);
    if (Q > 3) w3 = _mm512_loadu_ps(w + 48);
    __m256 wt = H ? _mm256_loadu_ps(w + 16 * Q) : _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < P; i++) {
      __m512 xv = _mm512_set1_ps(x[(size_t)i * k + c]);
      if (Q > 0) a[i][0] = _mm512_fmadd_ps(xv, w0, a[i][0]);
      if (Q > 1) a[i][1] = _mm512_fmadd_ps(xv, w1, a[i][1]);
      if (Q > 2) a[i][2] = _mm512_fmadd_ps(xv, w2, a[i][2]);
      if (Q > 3) a[i][3] = _mm512_fmadd_ps(xv, w3, a[i][3]);
      if (H) t[i] = _mm256_fmadd_ps(_mm512_castps512_ps256(xv), wt, t[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < P; i++) {
    float *yp = y + (size_t)i * oc + c0;
#pragma GCC unroll 4
    for (int j = 0; j < Q; j++)
      _mm512_storeu_ps(yp + 16 * j, post16(p, a[i][j], yp + 16 * j, false));
    if (H) {
      __m512 h = post16(p, _mm512_castps256_ps512(t[i]), yp + 16 * Q, true);
      _mm256_storeu_ps(yp + 16 * Q, _mm512_castps512_ps256(h));
    }
  }
}

/* One group's channels over pixels [p0, p1): blocks of P, the rest one
 * by one. */
INLINE void pw_group(const dm_pw *p, float *y, const float *x, size_t p0,
                     size_t p1, size_t c0, int P, int Q, int H) {
  const size_t k = (size_t)p->k, oc = (size_t)p->oc;
  const float *w = p->w + c0 * k;
  size_t i = p0;
  for (; i + (size_t)P <= p1; i += (size_t)P)
    pw_block(p, y + i * oc, x + i * k, w, c0, P, Q, H);
  for (; i < p1; i++)
    pw_block(p, y + i * oc, x + i * k, w, c0, 1, Q, H);
}

/* The channels past the last whole group of 64: 16 q + 8 h of them. */
__attribute__((target(PW_ISA))) static void pw_rest(const dm_pw *p, float *y,
                                                    const float *x, size_t p0,
                                                    size_t p1, size_t c0) {
  switch ((p->oc - (int)c0) / 8) {
  case 1: pw_group(p, y, x, p0, p1, c0, 8, 0, 1); break;
  case 2: pw_group(p, y, x, p0, p1, c0, 8, 1, 0); break;
  case 3: pw_group(p, y, x, p0, p1, c0, 8, 1, 1); break;
  case 4: pw_group(p, y, x, p0, p1, c0, 8, 2, 0); break;
  case 5: pw_group(p, y, x, p0, p1, c0, 8, 2, 1); break;
  case 6: pw_group(p, y, x, p0, p1, c0, 6, 3, 0); break;
  default: pw_group(p, y, x, p0, p1, c0, 6, 3, 1); break;
  }
}

__attribute__((target(PW_ISA))) void
dm__pw_rows(const dm_pw *p, float *y, const float *x, size_t p0, size_t p1) {
  const size_t oc = (size_t)p->oc, full = oc & ~(size_t)63;
  size_t chunk = CHUNK_BYTES / ((size_t)p->k * sizeof(float));
  chunk = chunk < 48 ? 48 : chunk / 48 * 48;
  for (size_t q0 = p0; q0 < p1; q0 += chunk) {
    size_t q1 = p1 - q0 < chunk ? p1 : q0 + chunk;
    for (size_t c0 = 0; c0 < full; c0 += 64)
      pw_group(p, y, x, q0, q1, c0, 6, 4, 0);
    if (full < oc) pw_rest(p, y, x, q0, q1, full);
  }
}
#else
void dm__pw_rows(const dm_pw *p, float *y, const float *x, size_t p0,
                 size_t p1) {
  (void)p, (void)y, (void)x, (void)p0, (void)p1;
}
#endif
