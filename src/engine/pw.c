/* pw.c: 1x1 convolutions on channels-last float maps, our own kernel.
 *
 * Where it beats oneDNN 2.6's brgemm 1x1 kernel on the Zen 4 VMs we
 * measure on (map_pw's rule; docs/engine.md has the numbers):
 * - Output channels that end in a half vector (24, 40: MobileNet-v2's
 *   and EfficientNet-B0's projections) get a masked 16-lane vector for
 *   the last 8, and Zen 4 executes a 512-bit FMA as two 256-bit halves,
 *   so the masked half costs as much as the live one: 144->24 at 56x56
 *   ran at 65 % of the FMA peak.  Here the last 8 channels take a 256-bit
 *   FMA, half the cost.
 * - A swish after the conv is applied before the store, where oneDNN
 *   needs a pass of its own over the map (its swish post-op is slower).
 * - Strided convs (ResNet's downsampling 1x1s) read their pixels in place;
 *   brgemm's 512->1024 from 28x28 to 14x14 ran at 70 % of the peak.
 * Elsewhere brgemm is as fast in the network, though with the caches
 * flushed before each call this kernel was 7-20 % faster on MobileNet's
 * shapes: it reads each weight once per chunk of pixels, front to back.
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

/* Output channels [c0, c0 + 16 Q + 8 H) of pixels [0, P): pixel i's k
 * input floats at x + i k, or at xp[i] when S (a stride), y oc floats a
 * pixel, w the group's packed (k, 16 Q + 8 H) weights; next: the inputs
 * the next block starts with.  P, Q, H and S are constants where this is
 * inlined. */
INLINE void pw_block(const dm_pw *p, float *y, const float *x,
                     const float *const *xp, const char *next, const float *w,
                     size_t c0, int P, int Q, int H, bool S) {
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
  /* the next block's inputs (about P k floats), over the k steps */
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
      __m512 xv = _mm512_set1_ps(S ? xp[i][c] : x[(size_t)i * k + c]);
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

/* Where output pixel q's inputs are in a strided conv: the pixel (s oy,
 * s ox) of its image (at stride 1, pixel q: pw_group_s adds q k itself). */
INLINE const float *in_px(const dm_pw *p, const float *x, size_t q) {
  size_t ohw = (size_t)p->oh * (size_t)p->ow, r = q % ohw;
  size_t oy = r / (size_t)p->ow, ox = r % (size_t)p->ow, s = (size_t)p->stride;
  size_t at = (q / ohw * (size_t)p->ih + s * oy) * (size_t)p->iw + s * ox;
  return x + at * (size_t)p->k;
}

/* One group's channels over pixels [p0, p1): blocks of P, the rest one
 * by one. */
INLINE void pw_group_s(const dm_pw *p, float *y, const float *x, size_t p0,
                       size_t p1, size_t c0, int P, int Q, int H, bool S) {
  const size_t k = (size_t)p->k, oc = (size_t)p->oc;
  const float *w = p->w + c0 * k;
  const float *xp[8] = {0};
  size_t i = p0;
  for (; i + (size_t)P <= p1; i += (size_t)P) {
    for (int j = 0; S && j < P; j++)
      xp[j] = in_px(p, x, i + (size_t)j);
    size_t in = i + (size_t)P < p1 ? i + (size_t)P : i; /* stays inside */
    const float *nx = S ? in_px(p, x, in) : x + in * k;
    pw_block(p, y + i * oc, x + i * k, xp, (const char *)nx, w, c0, P, Q, H, S);
  }
  for (; i < p1; i++) {
    xp[0] = S ? in_px(p, x, i) : x + i * k;
    pw_block(p, y + i * oc, xp[0], xp, (const char *)xp[0], w, c0, 1, Q, H, S);
  }
}

/* The channels past the last whole group of 64: 16 q + 8 h of them. */
INLINE void pw_rest_s(const dm_pw *p, float *y, const float *x, size_t p0,
                      size_t p1, size_t c0, bool S) {
  switch ((p->oc - (int)c0) / 8) {
  case 1: pw_group_s(p, y, x, p0, p1, c0, 8, 0, 1, S); break;
  case 2: pw_group_s(p, y, x, p0, p1, c0, 8, 1, 0, S); break;
  case 3: pw_group_s(p, y, x, p0, p1, c0, 8, 1, 1, S); break;
  case 4: pw_group_s(p, y, x, p0, p1, c0, 8, 2, 0, S); break;
  case 5: pw_group_s(p, y, x, p0, p1, c0, 8, 2, 1, S); break;
  case 6: pw_group_s(p, y, x, p0, p1, c0, 6, 3, 0, S); break;
  default: pw_group_s(p, y, x, p0, p1, c0, 6, 3, 1, S); break;
  }
}

/* pw_rest_s for each S, and pw_rows below likewise, as functions of their
 * own: with the rest inlined into one function, the stride-1 steps ran 7 %
 * slower (MobileNet-v2's projections to 24 channels, the profile). */
__attribute__((target(PW_ISA), noinline)) static void
pw_rest_dense(const dm_pw *p, float *y, const float *x, size_t p0, size_t p1,
              size_t c0) {
  pw_rest_s(p, y, x, p0, p1, c0, false);
}

__attribute__((target(PW_ISA), noinline)) static void
pw_rest_strided(const dm_pw *p, float *y, const float *x, size_t p0, size_t p1,
                size_t c0) {
  pw_rest_s(p, y, x, p0, p1, c0, true);
}

/* Pixels [p0, p1) in chunks, each chunk's groups of 64 channels, then the
 * rest; S: strided (per-pixel input addresses). */
INLINE void pw_rows(const dm_pw *p, float *y, const float *x, size_t p0,
                    size_t p1, bool S) {
  const size_t oc = (size_t)p->oc, full = oc & ~(size_t)63;
  size_t chunk = CHUNK_BYTES / ((size_t)p->k * sizeof(float));
  chunk = chunk < 48 ? 48 : chunk / 48 * 48;
  for (size_t q0 = p0; q0 < p1; q0 += chunk) {
    size_t q1 = p1 - q0 < chunk ? p1 : q0 + chunk;
    for (size_t c0 = 0; c0 < full; c0 += 64)
      pw_group_s(p, y, x, q0, q1, c0, 6, 4, 0, S);
    if (full < oc) (S ? pw_rest_strided : pw_rest_dense)(p, y, x, q0, q1, full);
  }
}

__attribute__((target(PW_ISA), noinline)) static void
pw_rows_dense(const dm_pw *p, float *y, const float *x, size_t p0, size_t p1) {
  pw_rows(p, y, x, p0, p1, false);
}

__attribute__((target(PW_ISA), noinline)) static void
pw_rows_strided(const dm_pw *p, float *y, const float *x, size_t p0,
                size_t p1) {
  pw_rows(p, y, x, p0, p1, true);
}

void dm__pw_rows(const dm_pw *p, float *y, const float *x, size_t p0,
                 size_t p1) {
  if (p->stride > 1)
    pw_rows_strided(p, y, x, p0, p1);
  else
    pw_rows_dense(p, y, x, p0, p1);
}
#else
void dm__pw_rows(const dm_pw *p, float *y, const float *x, size_t p0,
                 size_t p1) {
  (void)p, (void)y, (void)x, (void)p0, (void)p1;
}
#endif
