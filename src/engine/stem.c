/* stem.c: a network's first two convolutions as one pass over the image.
 *
 * MobileNet-v2, EfficientNet-B0 and most mobile classifiers open the same
 * way: a 3x3 stride-2 conv from the RGB image to 32 channels at half the
 * resolution, then a 3x3 depthwise conv over those 32 channels.  Both are
 * cheap in multiply-accumulates (10.8 M and 3.6 M at 224x224) but their
 * maps are the largest of the network (112x112x32 floats, 1.6 MB each), and
 * run as separate oneDNN primitives they are bound by memory: on session
 * 9's 2-vCPU Xeon, the input's NCHW-to-NHWC pass, the first conv, the
 * depthwise conv and (int8 model) its QuantizeLinear pass took 0.11, 0.38,
 * 0.30 and 0.17 ms (DERMAL_ONEDNN_PROFILE=1, one thread), about 20 % of
 * the int8 default model's run.  Here each output row of the depthwise
 * conv is made from three rows of the first conv kept in a small ring
 * (3 x 114 x 32 floats, in L1/L2), read straight from the NCHW image, and
 * written once, already quantized: in int8 files that keep these two
 * convs in float (the shipped one does, for accuracy) they end in a
 * QuantizeLinear.  Fused with a float output it was no faster than the
 * oneDNN steps, so the backend fuses only the 8-bit form.
 *
 * Arithmetic: the first conv sums its taps in the order (channel, ky, kx),
 * the depthwise conv in (ky, kx), both in float with FMA, after the bias;
 * activations by act16v (simd.h); QuantizeLinear as put16 says.  oneDNN
 * sums in other orders, so results differ from the unfused steps by float
 * rounding (and 8-bit outputs next to a rounding tie by one step). */
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "simd.h"

static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Every map holds DM_STEM_MAX_C channels (zero weights past c), so that
 * the kernels below are written for one register shape: two vectors of 16
 * channels per pixel. */
size_t dm__stem_floats(const dm_stem *s) {
  size_t cp = DM_STEM_MAX_C;
  return (size_t)s->cin * 9 * cp + cp + 9 * cp + cp;
}

void dm__stem_pack(dm_stem *s, float *mem, const void *w1, const void *b1,
                   const void *w2, const void *b2) {
  size_t c = (size_t)s->c, cp = DM_STEM_MAX_C, taps = (size_t)s->cin * 9;
  memset(mem, 0, dm__stem_floats(s) * sizeof *mem);
  s->cp = (int)cp;
  s->w1 = mem;
  s->b1 = s->w1 + taps * cp;
  s->w2 = s->b1 + cp;
  s->b2 = s->w2 + 9 * cp;
  const char *p1 = w1, *p2 = w2;
  for (size_t o = 0; o < c; o++) {
    for (size_t t = 0; t < taps; t++)
      memcpy(&s->w1[t * cp + o], p1 + (o * taps + t) * sizeof(float),
             sizeof(float));
    for (size_t t = 0; t < 9; t++)
      memcpy(&s->w2[t * cp + o], p2 + (o * 9 + t) * sizeof(float),
             sizeof(float));
  }
  if (b1) memcpy(s->b1, b1, c * sizeof(float));
  if (b2) memcpy(s->b2, b2, c * sizeof(float));
}

/* Scratch, in floats: the ring of three rows of the first conv and a row
 * of zeros (the depthwise conv's padding rows), ow + 8 pixels of cp
 * channels each (a zero pixel at both ends of the ow, then room for the
 * last group of six to run past the end); then the cin x 3 input rows one
 * row of the first conv reads, padded with zeros (pw floats each, room
 * for that last group too). */
static size_t ring_row(const dm_stem *s) {
  return ((size_t)s->ow + 8) * (size_t)s->cp;
}
static size_t in_row(const dm_stem *s) { return pad16(2 * (size_t)s->ow + 12); }

size_t dm__stem_scratch(const dm_stem *s) {
  return (4 * ring_row(s) + (size_t)s->cin * 3 * in_row(s)) * sizeof(float) +
         64;
}

#if defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f")))
#define INLINE __attribute__((target("avx512f"), always_inline)) static inline

INLINE __m512 acts(const dm_act *a, int n, __m512 v) {
  for (int i = 0; i < n; i++)
    v = act16v(&a[i], v);
  return v;
}

/* The first conv: pixels [ox, ox + 6) of one row into ring row `out`
 * (pixel ox + 1), from the cin x 3 padded input rows `in` (pixel p, tap kx
 * reads column 2 (ox + p) + kx).  Twelve accumulators (6 pixels x 2
 * vectors of channels): four-cycle FMAs on two ports need at least eight
 * chains in flight.  Named variables, not arrays: GCC kept arrays of
 * accumulators on the stack. */
#define FMA2(a, b, xv)                                                         \
  do {                                                                         \
    __m512 x_ = (xv);                                                          \
    a = _mm512_fmadd_ps(x_, w0, a);                                            \
    b = _mm512_fmadd_ps(x_, w1, b);                                            \
  } while (0)

AVX512 static void conv1_px6(const dm_stem *s, float *out, const float *in,
                             size_t pw, int ox) {
  __m512 a0 = _mm512_load_ps(s->b1), b0 = _mm512_load_ps(s->b1 + 16);
  __m512 a1 = a0, b1 = b0, a2 = a0, b2 = b0, a3 = a0, b3 = b0, a4 = a0, b4 = b0,
         a5 = a0, b5 = b0;
  const float *w = s->w1;
  for (int r = 0; r < s->cin * 3; r++) {
    const float *x = in + (size_t)r * pw + 2 * ox;
    for (int kx = 0; kx < 3; kx++, w += DM_STEM_MAX_C) {
      __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16);
      FMA2(a0, b0, _mm512_set1_ps(x[kx]));
      FMA2(a1, b1, _mm512_set1_ps(x[kx + 2]));
      FMA2(a2, b2, _mm512_set1_ps(x[kx + 4]));
      FMA2(a3, b3, _mm512_set1_ps(x[kx + 6]));
      FMA2(a4, b4, _mm512_set1_ps(x[kx + 8]));
      FMA2(a5, b5, _mm512_set1_ps(x[kx + 10]));
    }
  }
  float *o = out + (size_t)(ox + 1) * DM_STEM_MAX_C;
  const dm_act *ac = s->act1;
  int na = s->n_act1;
  __m512 v[12] = {a0, b0, a1, b1, a2, b2, a3, b3, a4, b4, a5, b5};
  for (int i = 0; i < 12; i++)
    _mm512_store_ps(o + 16 * i, acts(ac, na, v[i]));
}

/* Row sr of the first conv for image xi (cin planes) into ring row out. */
AVX512 static void conv1_row(const dm_stem *s, float *out, const float *xi,
                             float *in, int sr) {
  size_t pw = in_row(s), iw = (size_t)s->iw, pl = (size_t)s->pl;
  size_t n = iw < pw - pl ? iw : pw - pl;
  for (int ci = 0; ci < s->cin; ci++)
    for (int ky = 0; ky < 3; ky++) {
      float *d = in + (size_t)(ci * 3 + ky) * pw;
      int iy = 2 * sr - s->pt + ky;
      if (iy < 0 || iy >= s->ih) {
        memset(d, 0, pw * sizeof *d);
        continue;
      }
      memset(d, 0, pl * sizeof *d);
      memcpy(d + pl, xi + ((size_t)ci * (size_t)s->ih + (size_t)iy) * iw,
             n * sizeof *d);
      memset(d + pl + n, 0, (pw - pl - n) * sizeof *d);
    }
  /* groups of six to the end: the last may run past it (a single pixel's
   * two chains of 27 dependent FMAs took as long as six pixels), so the
   * right padding pixel is cleared after */
  for (int ox = 0; ox < s->ow; ox += 6)
    conv1_px6(s, out, in, pw, ox);
  memset(out + ((size_t)s->ow + 1) * DM_STEM_MAX_C, 0,
         DM_STEM_MAX_C * sizeof *out);
}

/* Row y of the depthwise conv from the three ring rows around it: four
 * pixels at a time (eight accumulators), its 18 weight vectors held in
 * registers; then its activations and 8-bit values, as put16 says.  Everything
 * per vector is inlined with its constants in registers: as a function call per
 * 16 outputs, the output side took longer than the convolutions. */
typedef struct dw_k { /* the output side's constants */
  __mmask16 m0, m1;   /* channels [0, 16) and [16, 32) that exist */
  __m512 inv;         /* 1 / scale */
  __m512i zp;
} dw_k;

/* Output vector v (16 channels from k0 of pixel ox of row y): the
 * activations, then QuantizeLinear as rint(v * (1 /
 * scale)) + zp saturated by the 8-bit conversion, NaN -> zp.  On Intel
 * cores 512-bit ALU work issues on two ports only, and the QDQ pass's
 * exact arithmetic (a division, NaN and saturation as floats: ~17 such
 * operations per vector) made the output side cost twice the depthwise
 * conv's 18 FMAs per pixel.  The product differs from the rounded
 * quotient by at most 2 ulp, so this differs from rint(v / scale) only
 * next to a tie, by one step: the bar the int8 kernels keep against the
 * reference (docs/quantization.md), which this pass's float sums, in
 * another order than the reference's, hold anyway. */
INLINE void put16(const dm_stem *s, const dw_k *k, void *y, int ox, int k0,
                  __m512 v) {
  __mmask16 m = k0 ? k->m1 : k->m0;
  size_t at = (size_t)ox * (size_t)s->c + (size_t)k0;
  v = acts(s->act2, s->n_act2, v);
  __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v, k->inv));
  q = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), q);
  q = _mm512_add_epi32(q, k->zp);
  if (s->u8)
    _mm512_mask_cvtusepi32_storeu_epi8(
        (char *)y + at, m, _mm512_max_epi32(q, _mm512_setzero_si512()));
  else
    _mm512_mask_cvtsepi32_storeu_epi8((char *)y + at, m, q);
}

#define TAP(k, kx, rw)                                                         \
  do {                                                                         \
    const float *p_ = (rw) + (size_t)(ox + (kx)) * DM_STEM_MAX_C;              \
    a0 = _mm512_fmadd_ps(_mm512_load_ps(p_), wa[k], a0);                       \
    b0 = _mm512_fmadd_ps(_mm512_load_ps(p_ + 16), wb[k], b0);                  \
    if (np > 1) {                                                              \
      a1 = _mm512_fmadd_ps(_mm512_load_ps(p_ + 32), wa[k], a1);                \
      b1 = _mm512_fmadd_ps(_mm512_load_ps(p_ + 48), wb[k], b1);                \
      a2 = _mm512_fmadd_ps(_mm512_load_ps(p_ + 64), wa[k], a2);                \
      b2 = _mm512_fmadd_ps(_mm512_load_ps(p_ + 80), wb[k], b2);                \
      a3 = _mm512_fmadd_ps(_mm512_load_ps(p_ + 96), wa[k], a3);                \
      b3 = _mm512_fmadd_ps(_mm512_load_ps(p_ + 112), wb[k], b3);               \
    }                                                                          \
  } while (0)

INLINE void dw_row_k(const dm_stem *s, const float *const rows[3], void *y,
                     bool two) {
  __m512 wa[9], wb[9];
  for (int k = 0; k < 9; k++) {
    wa[k] = _mm512_load_ps(s->w2 + k * DM_STEM_MAX_C);
    wb[k] = _mm512_load_ps(s->w2 + k * DM_STEM_MAX_C + 16);
  }
  const __m512 ba = _mm512_load_ps(s->b2), bb = _mm512_load_ps(s->b2 + 16);
  int c1 = s->c > 16 ? s->c - 16 : 0;
  const dw_k k = {(__mmask16)(s->c >= 16 ? 0xffffu : (1u << s->c) - 1u),
                  (__mmask16)((1u << c1) - 1u), _mm512_set1_ps(1.f / s->scale),
                  _mm512_set1_epi32(s->zp)};
  for (int ox = 0; ox < s->ow;) {
    int np = s->ow - ox >= 4 ? 4 : 1;
    __m512 a0 = ba, b0 = bb, a1 = ba, b1 = bb, a2 = ba, b2 = bb, a3 = ba,
           b3 = bb;
    TAP(0, 0, rows[0]); /* written out: the weights stay in registers */
    TAP(1, 1, rows[0]);
    TAP(2, 2, rows[0]);
    TAP(3, 0, rows[1]);
    TAP(4, 1, rows[1]);
    TAP(5, 2, rows[1]);
    TAP(6, 0, rows[2]);
    TAP(7, 1, rows[2]);
    TAP(8, 2, rows[2]);
    put16(s, &k, y, ox, 0, a0);
    if (two) put16(s, &k, y, ox, 16, b0);
    if (np > 1) {
      put16(s, &k, y, ox + 1, 0, a1);
      put16(s, &k, y, ox + 2, 0, a2);
      put16(s, &k, y, ox + 3, 0, a3);
      if (two) {
        put16(s, &k, y, ox + 1, 16, b1);
        put16(s, &k, y, ox + 2, 16, b2);
        put16(s, &k, y, ox + 3, 16, b3);
      }
    }
    ox += np;
  }
}

/* c <= 16 skips the second vector's stores (its weights are zero). */
AVX512 static void dw_row(const dm_stem *s, const float *const rows[3],
                          void *y) {
  if (s->c > 16)
    dw_row_k(s, rows, y, true);
  else
    dw_row_k(s, rows, y, false);
}

void dm__stem_rows(const dm_stem *s, void *y, const float *x, int64_t r0,
                   int64_t r1, void *scratch) {
  size_t cp = DM_STEM_MAX_C, rw = ring_row(s);
  float *ring = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
  float *zero = ring + 3 * rw, *in = ring + 4 * rw;
  memset(zero, 0, rw * sizeof *zero);
  for (size_t k = 0; k < 3; k++) /* the left padding pixel (conv1_row */
    memset(ring + k * rw, 0, cp * sizeof *ring); /* clears the right one) */
  int64_t have[3] = {-1, -1, -1}; /* batch row held by each ring row */
  size_t plane = (size_t)s->cin * (size_t)s->ih * (size_t)s->iw;
  size_t yrow = (size_t)s->ow * (size_t)s->c;
  for (int64_t u = r0; u < r1; u++) {
    int64_t img = u / s->oh;
    int r = (int)(u % s->oh);
    const float *rows[3];
    for (int k = 0; k < 3; k++) {
      int sr = r - 1 + k;
      if (sr < 0 || sr >= s->oh) {
        rows[k] = zero;
        continue;
      }
      float *row = ring + (size_t)(sr % 3) * rw;
      if (have[sr % 3] != img * s->oh + sr) {
        conv1_row(s, row, x + (size_t)img * plane, in, sr);
        have[sr % 3] = img * s->oh + sr;
      }
      rows[k] = row;
    }
    dw_row(s, rows, (char *)y + (size_t)u * yrow);
  }
}
#endif
