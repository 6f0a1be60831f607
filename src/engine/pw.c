/* pw.c: 1x1 convolutions whose output channels end in a half vector.
 *
 * MobileNet-v2's and EfficientNet-B0's projections to 24 and 40 channels
 * (16 q + 8) are 1x1 convs over large maps (56x56, 28x28).  oneDNN 2.6's
 * brgemm kernel covers the last 8 channels with a masked 16-lane vector,
 * and on Zen 4, which executes a 512-bit FMA as two 256-bit halves, the
 * masked half costs as much as the live one: 144->24 at 56x56 ran at 65 %
 * of the FMA peak (DERMAL_ONEDNN_PROFILE, one thread).  Here the last 8
 * channels take a 256-bit FMA, half the cost, so all lanes do work.
 *
 * Register blocks: P pixels x (q 16-lane vectors + one 8-lane vector) of
 * accumulators, P = 8 for q <= 2 (16 or 24 accumulators), 6 for q = 3;
 * the weights of one input channel in q + 1 registers, each pixel's input
 * broadcast once per input channel.  Sums start from the bias and add the
 * input channels in order, with FMA; then the node's post-ops in order
 * (activations as act16v computes them, the residual read from y). */
#include <string.h>

#include "internal.h"
#include "simd.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

size_t dm__pw_floats(const dm_pw *p) {
  return (size_t)p->k * (size_t)p->oc + (size_t)p->oc;
}

void dm__pw_pack(dm_pw *p, float *mem, const void *w, const void *b) {
  size_t k = (size_t)p->k, oc = (size_t)p->oc;
  const char *src = w;
  p->w = mem;
  p->b = mem + k * oc;
  for (size_t o = 0; o < oc; o++) /* (oc, k) from the file -> (k, oc) */
    for (size_t i = 0; i < k; i++)
      memcpy(&mem[i * oc + o], src + (o * k + i) * sizeof(float),
             sizeof(float));
  if (b)
    memcpy(mem + k * oc, b, oc * sizeof(float));
  else
    memset(mem + k * oc, 0, oc * sizeof(float));
}

bool dm__pw_shape(int oc) { return oc % 16 == 8 && oc >= 24 && oc <= 56; }

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

/* The post-ops on one 16-lane vector of pixel row yp (lanes of channels
 * [c, c + 16), or [c, c + 8) when half). */
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

/* Pixels [0, P) of x (k floats each) into y (oc floats each), oc = 16 Q
 * + 8.  P and Q are constants where this is inlined. */
INLINE void pw_block(const dm_pw *p, float *y, const float *x, int P, int Q) {
  const size_t k = (size_t)p->k, oc = (size_t)p->oc;
  __m512 a[8][3];
  __m256 t[8];
#pragma GCC unroll 8
  for (int i = 0; i < P; i++) {
#pragma GCC unroll 3
    for (int j = 0; j < Q; j++)
      a[i][j] = _mm512_loadu_ps(p->b + 16 * j);
    t[i] = _mm256_loadu_ps(p->b + 16 * Q);
  }
  const float *w = p->w;
  /* the next block's inputs (P k floats after these), over the k steps */
  const char *next = (const char *)(x + (size_t)P * k);
  for (size_t c = 0; c < k; c++, w += oc) {
    __builtin_prefetch(next + c * (size_t)P * sizeof(float));
    __m512 w0 = _mm512_loadu_ps(w), w1 = w0, w2 = w0;
    if (Q > 1) w1 = _mm512_loadu_ps(w + 16);
    if (Q > 2) w2 = _mm512_loadu_ps(w + 32);
    __m256 wt = _mm256_loadu_ps(w + 16 * Q);
#pragma GCC unroll 8
    for (int i = 0; i < P; i++) {
      __m512 xv = _mm512_set1_ps(x[(size_t)i * k + c]);
      a[i][0] = _mm512_fmadd_ps(xv, w0, a[i][0]);
      if (Q > 1) a[i][1] = _mm512_fmadd_ps(xv, w1, a[i][1]);
      if (Q > 2) a[i][2] = _mm512_fmadd_ps(xv, w2, a[i][2]);
      t[i] = _mm256_fmadd_ps(_mm512_castps512_ps256(xv), wt, t[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < P; i++) {
    float *yp = y + (size_t)i * oc;
#pragma GCC unroll 3
    for (int j = 0; j < Q; j++)
      _mm512_storeu_ps(yp + 16 * j, post16(p, a[i][j], yp + 16 * j, false));
    __m512 h = post16(p, _mm512_castps256_ps512(t[i]), yp + 16 * Q, true);
    _mm256_storeu_ps(yp + 16 * Q, _mm512_castps512_ps256(h));
  }
}

/* Pixels [p0, p1) in blocks of P, the rest one by one. */
INLINE void pw_span(const dm_pw *p, float *y, const float *x, size_t p0,
                    size_t p1, int P, int Q) {
  const size_t k = (size_t)p->k, oc = (size_t)p->oc;
  size_t i = p0;
  for (; i + (size_t)P <= p1; i += (size_t)P)
    pw_block(p, y + i * oc, x + i * k, P, Q);
  for (; i < p1; i++)
    pw_block(p, y + i * oc, x + i * k, 1, Q);
}

__attribute__((target(PW_ISA))) void
dm__pw_rows(const dm_pw *p, float *y, const float *x, size_t p0, size_t p1) {
  switch (p->oc / 16) {
  case 1: pw_span(p, y, x, p0, p1, 8, 1); break;
  case 2: pw_span(p, y, x, p0, p1, 8, 2); break;
  default: pw_span(p, y, x, p0, p1, 6, 3); break;
  }
}
#else
void dm__pw_rows(const dm_pw *p, float *y, const float *x, size_t p0,
                 size_t p1) {
  (void)p, (void)y, (void)x, (void)p0, (void)p1;
}
#endif
