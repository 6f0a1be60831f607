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
 * Arithmetic, chosen to give the unfused steps' bits (the shipped int8
 * model agrees with fp32 on 99.09 % of val images, one image above issue
 * 6's bar, so a pass that moved a single answer would fail it; the first
 * version, with its own summation order, did): the first conv sums its
 * taps from zero in the order (ky, kx, channel), adds the bias, then its
 * activations, as oneDNN's brgemm conv does; the depthwise conv starts
 * from the bias and sums in (ky, kx), as its jit_dw kernel does; both
 * with FMA; QuantizeLinear exactly as the QDQ pass (put16).  On AVX-512
 * cores the output then equals the unfused steps' bit for bit
 * (check_qdq.py checks it, and test_onednn the quantization at ties). */
#include <math.h>
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
  s->w1 = mem;
  s->b1 = s->w1 + taps * cp;
  s->w2 = s->b1 + cp;
  s->b2 = s->w2 + 9 * cp;
  const char *p1 = w1, *p2 = w2;
  size_t cin = (size_t)s->cin;
  for (size_t o = 0; o < c; o++) {
    for (size_t ci = 0; ci < cin; ci++) /* tap (ky, kx, ci) from (ci, ky, kx) */
      for (size_t k = 0; k < 9; k++)
        memcpy(&s->w1[(k * cin + ci) * cp + o],
               p1 + (o * taps + ci * 9 + k) * sizeof(float), sizeof(float));
    for (size_t t = 0; t < 9; t++)
      memcpy(&s->w2[t * cp + o], p2 + (o * 9 + t) * sizeof(float),
             sizeof(float));
  }
  if (b1) memcpy(s->b1, b1, c * sizeof(float));
  if (b2) memcpy(s->b2, b2, c * sizeof(float));
}

/* Scratch, in floats: the ring of three rows of the first conv and a row
 * of zeros (the depthwise conv's padding rows), ow + 8 pixels of DM_STEM_MAX_C
 * channels each (a zero pixel at both ends of the ow, then room for the
 * last group of six to run past the end); then the cin x 3 input rows one
 * row of the first conv reads, padded with zeros (pw floats each, room
 * for that last group too). */
static size_t ring_row(const dm_stem *s) {
  return ((size_t)s->ow + 8) * DM_STEM_MAX_C;
}
static size_t in_row(const dm_stem *s) { return pad16(2 * (size_t)s->ow + 12); }

size_t dm__stem_scratch(const dm_stem *s) {
  return (4 * ring_row(s) + (size_t)s->cin * 3 * in_row(s)) * sizeof(float) +
         64;
}

#if defined(__x86_64__)
#define AVX512 DM_AVX512
#define INLINE                                                                 \
  __attribute__((target(DM_AVX512_ISA), always_inline)) static inline

/* Activations, specialised: none, one clamp (Relu, Clip: MobileNets), or
 * the list through act16v (Swish: EfficientNets).  Reading the list per
 * vector (kind, count, a switch) cost a third of the depthwise row. */
enum { ACT_NONE, ACT_CLAMP, ACT_LIST };
typedef struct act_k {
  __m512 lo, hi; /* ACT_CLAMP: min(hi, max(lo, v)), NaN kept as act16v does */
  const dm_act *a;
  int n;
} act_k;

AVX512 static int act_mode(const dm_act *a, int n, act_k *k) {
  k->a = a;
  k->n = n;
  if (n == 0) return ACT_NONE;
  if (n > 1 || (a->kind != DM_UNARY_RELU && a->kind != DM_UNARY_CLIP))
    return ACT_LIST;
  k->lo = _mm512_set1_ps(a->kind == DM_UNARY_RELU ? 0.f : a->alpha);
  k->hi = _mm512_set1_ps(a->kind == DM_UNARY_RELU ? INFINITY : a->beta);
  return ACT_CLAMP;
}

INLINE __m512 acts(int mode, const act_k *k, __m512 v) {
  if (mode == ACT_CLAMP) return _mm512_min_ps(k->hi, _mm512_max_ps(k->lo, v));
  if (mode == ACT_LIST)
    for (int i = 0; i < k->n; i++)
      v = act16v(&k->a[i], v);
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

INLINE void conv1_px6(const dm_stem *s, float *out, const float *in, size_t pw,
                      int ox, int cin, int mode, const act_k *ak) {
  __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0,
         a3 = a0, b3 = a0, a4 = a0, b4 = a0, a5 = a0, b5 = a0;
  const float *w = s->w1;
  for (int ky = 0; ky < 3; ky++)
    for (int kx = 0; kx < 3; kx++)
      for (int ci = 0; ci < cin; ci++, w += DM_STEM_MAX_C) {
        const float *x = in + (size_t)(ci * 3 + ky) * pw + 2 * ox + kx;
        __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16);
        FMA2(a0, b0, _mm512_set1_ps(x[0]));
        FMA2(a1, b1, _mm512_set1_ps(x[2]));
        FMA2(a2, b2, _mm512_set1_ps(x[4]));
        FMA2(a3, b3, _mm512_set1_ps(x[6]));
        FMA2(a4, b4, _mm512_set1_ps(x[8]));
        FMA2(a5, b5, _mm512_set1_ps(x[10]));
      }
  float *o = out + (size_t)(ox + 1) * DM_STEM_MAX_C;
  __m512 v[12] = {a0, b0, a1, b1, a2, b2, a3, b3, a4, b4, a5, b5};
  for (int i = 0; i < 12; i++) {
    __m512 bias = _mm512_load_ps(s->b1 + 16 * (i & 1));
    _mm512_store_ps(o + 16 * i, acts(mode, ak, _mm512_add_ps(v[i], bias)));
  }
}

/* One row of groups of six, to the end: the last may run past it (a
 * single pixel's two chains of 27 dependent FMAs took as long as six
 * pixels).  cin is a constant for RGB (3), so that its 27 taps unroll. */
INLINE void conv1_px_row(const dm_stem *s, float *out, const float *in,
                         size_t pw, int cin, int mode, const act_k *ak) {
  for (int ox = 0; ox < s->ow; ox += 6)
    conv1_px6(s, out, in, pw, ox, cin, mode, ak);
}

#define CONV1_MODES(cin)                                                       \
  switch (mode) {                                                              \
  case ACT_NONE: conv1_px_row(s, out, in, pw, cin, ACT_NONE, ak); break;       \
  case ACT_CLAMP: conv1_px_row(s, out, in, pw, cin, ACT_CLAMP, ak); break;     \
  default: conv1_px_row(s, out, in, pw, cin, ACT_LIST, ak); break;             \
  }

AVX512 static void conv1_pxs(const dm_stem *s, float *out, const float *in,
                             size_t pw, int mode, const act_k *ak) {
  if (s->cin == 3)
    CONV1_MODES(3)
  else
    CONV1_MODES(s->cin)
}

/* Row sr of the first conv for image xi (cin planes) into ring row out. */
AVX512 static void conv1_row(const dm_stem *s, float *out, const float *xi,
                             float *in, int sr, int mode, const act_k *ak) {
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
  conv1_pxs(s, out, in, pw, mode, ak); /* past the end: clear the pad */
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
  __m512 inv, scale;  /* 1 / scale, scale */
  __m512 zp, lo, hi;  /* as floats; lo, hi: the 8-bit type's range */
  act_k act;          /* the depthwise conv's activations */
  size_t c;           /* s->c, in a register (stores to y may alias s) */
} dw_k;

/* Output vector v (16 channels from k0 of pixel ox of row y): the
 * activations, then QuantizeLinear exactly as the QDQ pass computes it
 * (qdq_avx512 in backend_onednn.c): sat(rint(v / scale) + zp), half to
 * even, NaN -> zp.  A 512-bit division per vector cost as much as the
 * depthwise conv's FMAs (on Intel cores 512-bit ALU work issues on two
 * ports only), so the quotient is v * (1 / scale), within 2 ulp of the
 * rounded quotient: the two round to different integers only when the
 * product lies within a few ulp of a half-integer, and such vectors (a
 * few per image) are divided. */
INLINE void put16(const dw_k *k, void *y, int ox, int k0, __m512 v, int mode) {
  /* an integer constant expression: clang requires one for the rounding */
  enum { near = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC };
  __mmask16 m = k0 ? k->m1 : k->m0;
  size_t at = (size_t)ox * k->c + (size_t)k0;
  v = acts(mode, &k->act, v);
  __m512 t = _mm512_mul_ps(v, k->inv), r = _mm512_roundscale_ps(t, near);
  /* |t - r| is 0.5 within 4 ulp of t (2^-21 |t|): maybe a tie apart */
  __m512 d = _mm512_abs_ps(
      _mm512_sub_ps(_mm512_abs_ps(_mm512_sub_ps(t, r)), _mm512_set1_ps(0.5f)));
  if (_mm512_cmp_ps_mask(
          d, _mm512_mul_ps(_mm512_abs_ps(t), _mm512_set1_ps(0x1p-21f)),
          _CMP_LE_OQ))
    r = _mm512_roundscale_ps(_mm512_div_ps(v, k->scale), near);
  r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r, r, _CMP_ORD_Q), r);
  r = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, k->zp), k->lo), k->hi);
  _mm512_mask_cvtepi32_storeu_epi8((char *)y + at, m, _mm512_cvtps_epi32(r));
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
                     bool two, int mode, const act_k *ak) {
  __m512 wa[9], wb[9];
  for (int k = 0; k < 9; k++) {
    wa[k] = _mm512_load_ps(s->w2 + k * DM_STEM_MAX_C);
    wb[k] = _mm512_load_ps(s->w2 + k * DM_STEM_MAX_C + 16);
  }
  const __m512 ba = _mm512_load_ps(s->b2), bb = _mm512_load_ps(s->b2 + 16);
  int c1 = s->c > 16 ? s->c - 16 : 0;
  const dw_k k = {(__mmask16)(s->c >= 16 ? 0xffffu : (1u << s->c) - 1u),
                  (__mmask16)((1u << c1) - 1u),
                  _mm512_set1_ps(1.f / s->scale),
                  _mm512_set1_ps(s->scale),
                  _mm512_set1_ps((float)s->zp),
                  _mm512_set1_ps(s->u8 ? 0.f : -128.f),
                  _mm512_set1_ps(s->u8 ? 255.f : 127.f),
                  *ak,
                  (size_t)s->c};
  for (int ox = 0, ow = s->ow; ox < ow;) {
    int np = ow - ox >= 4 ? 4 : 1;
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
    put16(&k, y, ox, 0, a0, mode);
    if (two) put16(&k, y, ox, 16, b0, mode);
    if (np > 1) {
      put16(&k, y, ox + 1, 0, a1, mode);
      put16(&k, y, ox + 2, 0, a2, mode);
      put16(&k, y, ox + 3, 0, a3, mode);
      if (two) {
        put16(&k, y, ox + 1, 16, b1, mode);
        put16(&k, y, ox + 2, 16, b2, mode);
        put16(&k, y, ox + 3, 16, b3, mode);
      }
    }
    ox += np;
  }
}

/* c <= 16 skips the second vector's stores (its weights are zero). */
#define DW_MODES(two)                                                          \
  switch (mode) {                                                              \
  case ACT_NONE: dw_row_k(s, rows, y, two, ACT_NONE, ak); break;               \
  case ACT_CLAMP: dw_row_k(s, rows, y, two, ACT_CLAMP, ak); break;             \
  default: dw_row_k(s, rows, y, two, ACT_LIST, ak); break;                     \
  }

AVX512 static void dw_row(const dm_stem *s, const float *const rows[3], void *y,
                          int mode, const act_k *ak) {
  if (s->c > 16)
    DW_MODES(true)
  else
    DW_MODES(false)
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
  act_k k1, k2;
  int m1 = act_mode(s->act1, s->n_act1, &k1),
      m2 = act_mode(s->act2, s->n_act2, &k2);
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
        conv1_row(s, row, x + (size_t)img * plane, in, sr, m1, &k1);
        have[sr % 3] = img * s->oh + sr;
      }
      rows[k] = row;
    }
    dw_row(s, rows, (char *)y + (size_t)u * yrow, m2, &k2);
  }
}
#endif
