/* simd.h: AVX-512 (and a few AVX2) helpers shared by the engine's own
 * passes (backend_onednn.c, stem.c).  Private to src/engine; every function
 * is compiled for its ISA whatever the build flags, so callers check the
 * CPU first (oeng.vec). */
#ifndef DM_ENGINE_SIMD_H
#define DM_ENGINE_SIMD_H

#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

/* The ISA every AVX-512 function of the engine is compiled for: AVX-512F
 * and DQ (VREDUCEPS), which every AVX-512 Xeon has; callers check
 * dm__simd_ok() first. */
#define DM_AVX512_ISA "avx512f,avx512dq"
#define DM_AVX512 __attribute__((target(DM_AVX512_ISA)))

static inline bool dm__simd_ok(void) {
  return __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512dq");
}

/* The ISA of the engine's AVX2 functions (the passes on CPUs without
 * AVX-512, as on many small cloud hosts): AVX2 and FMA. */
#define DM_AVX2 __attribute__((target("avx2,fma")))

static inline bool dm__avx2_ok(void) {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* 2^f for f in [0, 1): c0 + f (c1 + f (c2 + f (c3 + f (c4 + f c5)))), a
 * degree-5 minimax polynomial (sigmoid16, sigmoid8). */
#define DM_EXP2_C0 0.9999999404f
#define DM_EXP2_C1 0.6931530833f
#define DM_EXP2_C2 0.2401536107f
#define DM_EXP2_C3 0.0558263175f
#define DM_EXP2_C4 0.0089893397f
#define DM_EXP2_C5 0.0018775767f

/* AVX-512: e^-x = 2^t with t = -x log2 e; f = t - floor(t) in [0, 1) in
 * one VREDUCEPS, 2^f by a degree-5 minimax polynomial (relative error
 * 1.6e-7 in float arithmetic), 2^floor(t) by VSCALEFPS, which floors its
 * exponent itself; 1 / (1 + e^-x) by rcp14 and one Newton step.  Relative
 * error against double precision < 2e-6 over [-30, 30].  t is clamped at
 * 126 so that 1 + e^-x stays finite (x < -87: y ~ -1e-36, truly ~ -1e-38
 * or less); NaN propagates through x, x = +inf gives 1.  14 vector
 * operations per swish16, and the swish pass is bound by them, not by
 * memory: 0.34-0.38 ns per float against 0.44-0.47 with the 16 of a
 * round, a subtraction and a degree-6 polynomial on [-1/2, 1/2]
 * (docs/engine.md). */
/* 1 / (1 + e^-v) */
DM_AVX512 static inline __m512 sigmoid16(__m512 v) {
  const __m512 nlog2e = _mm512_set1_ps(-1.44269504088896341f);
  const __m512 hi = _mm512_set1_ps(126.f), one = _mm512_set1_ps(1.f);
  const __m512 c1 = _mm512_set1_ps(DM_EXP2_C1);
  const __m512 c2 = _mm512_set1_ps(DM_EXP2_C2);
  const __m512 c3 = _mm512_set1_ps(DM_EXP2_C3);
  const __m512 c4 = _mm512_set1_ps(DM_EXP2_C4);
  const __m512 c5 = _mm512_set1_ps(DM_EXP2_C5);
  const __m512 c0 = _mm512_set1_ps(DM_EXP2_C0);
  __m512 t = _mm512_min_ps(_mm512_mul_ps(v, nlog2e), hi);
  /* imm 0x09: round down, keep no fraction bits, no precision exception */
  __m512 f = _mm512_reduce_ps(t, 0x09);
  __m512 q = _mm512_fmadd_ps(c5, f, c4);
  q = _mm512_fmadd_ps(q, f, c3);
  q = _mm512_fmadd_ps(q, f, c2);
  q = _mm512_fmadd_ps(q, f, c1);
  q = _mm512_fmadd_ps(q, f, c0);
  __m512 d = _mm512_add_ps(_mm512_scalef_ps(q, t), one); /* 1 + e^-x */
  __m512 r = _mm512_rcp14_ps(d);
  return _mm512_fmadd_ps(_mm512_fnmadd_ps(d, r, one), r, r);
}

DM_AVX512 static inline __m512 swish16(__m512 v) {
  return _mm512_mul_ps(v, sigmoid16(v));
}

/* AVX2: 1 / (1 + e^-v) as sigmoid16 computes it, without VREDUCEPS and
 * VSCALEFPS: f = t - floor(t), 2^floor(t) built in the exponent bits, t
 * clamped to [-126, 126] (so x > 87 gives 1 and x < -87 ~ 1e-38, as
 * sigmoid16), the same polynomial; rcp and one Newton step. */
DM_AVX2 static inline __m256 sigmoid8(__m256 v) {
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 c1 = _mm256_set1_ps(DM_EXP2_C1);
  const __m256 c2 = _mm256_set1_ps(DM_EXP2_C2);
  const __m256 c3 = _mm256_set1_ps(DM_EXP2_C3);
  const __m256 c4 = _mm256_set1_ps(DM_EXP2_C4);
  const __m256 c5 = _mm256_set1_ps(DM_EXP2_C5);
  const __m256 c0 = _mm256_set1_ps(DM_EXP2_C0);
  __m256 t = _mm256_mul_ps(v, _mm256_set1_ps(-1.44269504088896341f));
  t = _mm256_max_ps(_mm256_min_ps(t, _mm256_set1_ps(126.f)),
                    _mm256_set1_ps(-126.f)); /* NaN -> 126: x * ~0 */
  __m256 fl = _mm256_floor_ps(t), f = _mm256_sub_ps(t, fl);
  __m256 q = _mm256_fmadd_ps(c5, f, c4);
  q = _mm256_fmadd_ps(q, f, c3);
  q = _mm256_fmadd_ps(q, f, c2);
  q = _mm256_fmadd_ps(q, f, c1);
  q = _mm256_fmadd_ps(q, f, c0);
  __m256i ex = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(fl), _mm256_set1_epi32(127)), 23);
  __m256 d = _mm256_fmadd_ps(q, _mm256_castsi256_ps(ex), one); /* 1+e^-x */
  __m256 r = _mm256_rcp_ps(d);
  return _mm256_fmadd_ps(_mm256_fnmadd_ps(d, r, one), r, r);
}

DM_AVX2 static inline __m256 swish8(__m256 v) {
  return _mm256_mul_ps(v, sigmoid8(v));
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
DM_AVX512 static inline __m512 act16v(const dm_act *a, __m512 v) {
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
DM_AVX512 static inline __m512 act16(const dm_act *a, __m512 v) {
  if (act16v_has(a->kind)) return act16v(a, v);
  float t[16];
  _mm512_storeu_ps(t, v);
  for (int l = 0; l < 16; l++)
    t[l] = dm__ref_act(a, t[l]);
  return _mm512_loadu_ps(t);
}
#endif

#endif
