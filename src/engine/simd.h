/* simd.h: AVX-512 helpers shared by the engine's own passes
 * (backend_onednn.c, stem.c).  Private to src/engine; every function is
 * compiled for AVX-512F whatever the build flags, so callers check the CPU
 * first (oeng.avx512). */
#ifndef DM_ENGINE_SIMD_H
#define DM_ENGINE_SIMD_H

#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

/* AVX-512: e^-x = 2^k * 2^f, t = -x log2 e, k = round(t), f = t - k in
 * [-1/2, 1/2], 2^f by the degree-6 Taylor polynomial of e^(f ln 2) (error
 * < 2e-7); 1 / (1 + e^-x) by rcp14 and one Newton step.  Relative error
 * against double precision < 2e-6 over [-30, 30].  t is clamped at 126 so
 * that 1 + e^-x stays finite (x < -87: y ~ -1e-36, truly ~ -1e-38 or less);
 * NaN propagates through x. */
/* 1 / (1 + e^-v) */
__attribute__((target("avx512f"))) static inline __m512 sigmoid16(__m512 v) {
  const float l = 0.693147180559945309f;
  const __m512 nlog2e = _mm512_set1_ps(-1.44269504088896341f);
  const __m512 hi = _mm512_set1_ps(126.f), one = _mm512_set1_ps(1.f);
  const __m512 d1 = _mm512_set1_ps(l), d2 = _mm512_set1_ps(l * l / 2);
  const __m512 d3 = _mm512_set1_ps(l * l * l / 6);
  const __m512 d4 = _mm512_set1_ps(l * l * l * l / 24);
  const __m512 d5 = _mm512_set1_ps(l * l * l * l * l / 120);
  const __m512 d6 = _mm512_set1_ps(l * l * l * l * l * l / 720);
  __m512 t = _mm512_min_ps(_mm512_mul_ps(v, nlog2e), hi);
  __m512 k =
      _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_sub_ps(t, k);
  __m512 q = _mm512_fmadd_ps(d6, f, d5);
  q = _mm512_fmadd_ps(q, f, d4);
  q = _mm512_fmadd_ps(q, f, d3);
  q = _mm512_fmadd_ps(q, f, d2);
  q = _mm512_fmadd_ps(q, f, d1);
  q = _mm512_fmadd_ps(q, f, one);
  __m512 d = _mm512_add_ps(_mm512_scalef_ps(q, k), one); /* 1 + e^-x */
  __m512 r = _mm512_rcp14_ps(d);
  return _mm512_fmadd_ps(_mm512_fnmadd_ps(d, r, one), r, r);
}

__attribute__((target("avx512f"))) static inline __m512 swish16(__m512 v) {
  return _mm512_mul_ps(v, sigmoid16(v));
}

/* Whether act16v computes activation kind k (the others: act16). */
static inline bool act16v_has(dm_unary k) {
  return k == DM_UNARY_RELU || k == DM_UNARY_CLIP || k == DM_UNARY_HARDSWISH ||
         k == DM_UNARY_SIGMOID || k == DM_UNARY_SWISH;
}

/* Activation a (act16v_has) on 16 floats, vectorised, no calls: in a hot
 * loop a possible call makes the compiler keep every vector register on
 * the stack.  Relu, Clip and HardSwish keep NaN, as the reference does
 * (the bound goes first: max/min return their second operand on NaN). */
__attribute__((target("avx512f"))) static inline __m512 act16v(const dm_act *a,
                                                               __m512 v) {
  switch (a->kind) {
  case DM_UNARY_RELU: return _mm512_max_ps(_mm512_setzero_ps(), v);
  case DM_UNARY_CLIP:
    return _mm512_min_ps(_mm512_set1_ps(a->beta),
                         _mm512_max_ps(_mm512_set1_ps(a->alpha), v));
  case DM_UNARY_HARDSWISH: {
    __m512 t =
        _mm512_fmadd_ps(v, _mm512_set1_ps(1.0f / 6.0f), _mm512_set1_ps(0.5f));
    t = _mm512_min_ps(_mm512_set1_ps(1.f),
                      _mm512_max_ps(_mm512_setzero_ps(), t));
    return _mm512_mul_ps(v, t);
  }
  case DM_UNARY_SIGMOID: return sigmoid16(v);
  default: return swish16(v);
  }
}

/* Activation a on 16 floats: act16v's kinds vectorised, the rest one by
 * one, as the reference computes them. */
__attribute__((target("avx512f"))) static inline __m512 act16(const dm_act *a,
                                                              __m512 v) {
  if (act16v_has(a->kind)) return act16v(a, v);
  float t[16];
  _mm512_storeu_ps(t, v);
  for (int l = 0; l < 16; l++)
    t[l] = dm__ref_act(a, t[l]);
  return _mm512_loadu_ps(t);
}
#endif

#endif
