/* dermal resize: Pillow's antialiased bilinear resampling, bit-exact.
 *
 * Purpose: the model was trained on torchvision transforms applied to PIL
 * images, i.e. Image.resize(size, Image.BILINEAR) (Pillow's
 * libImaging/Resample.c).  Matching it to the last bit keeps dermal's
 * predictions identical to the training pipeline's.
 *
 * What Pillow does, and this file repeats:
 *  - Separable convolution, horizontal pass first (only when the width
 *    changes), then vertical (only when the height changes), each rounding
 *    to 8 bits.  The horizontal pass covers only the source rows the
 *    vertical pass reads.
 *  - Per output index xx: scale = in / out (as float box -> double),
 *    filterscale = max(scale, 1), support = 1.0 * filterscale,
 *    center = (xx + 0.5) * scale, xmin = (int)(center - support + 0.5)
 *    clamped to 0, xmax = (int)(center + support + 0.5) clamped to in;
 *    weights w(x) = triangle((x + xmin - center + 0.5) / filterscale),
 *    normalised by their sum (when non-zero), then converted to fixed point
 *    with 22 fraction bits rounding half away from zero.
 *  - Accumulator starts at 1 << 21 (rounding), result = acc >> 22 clipped
 *    to 0..255.
 * Pillow accumulates in a 32-bit int; for bilinear weights (all >= 0) the
 * sum stays below 2^31 unless the filter is millions of taps wide.  We use
 * 64 bits, identical whenever Pillow does not overflow.
 *
 * Invariants: every output pixel depends only on its own coefficients, so a
 * window of the output (dm__resize_window) equals the same window of the
 * full resize.  Sizes and buffer lengths are overflow-checked.
 *
 * Threading: pure functions; scratch memory is per call. */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS 22

typedef struct coeffs {
  int ksize;   /* taps per output index (stride of k) */
  int *bounds; /* (n, 2): first source index, number of taps */
  int32_t *k;  /* (n, ksize) fixed-point weights */
  bool fits32; /* 255 * (sum of |k|) + rounding < 2^31 for every index */
} coeffs;

static void coeffs_free(coeffs *c) {
  free(c->bounds);
  free(c->k);
  c->bounds = NULL;
  c->k = NULL;
}

static double triangle(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

/* Coefficients of output indices [first, first + n) for in_size -> out_size
 * (Pillow's precompute_coeffs + normalize_coeffs_8bpc). */
static dm_err coeffs_make(int in_size, int out_size, int first, int n,
                          coeffs *c, dm_errbuf *eb) {
  double scale, filterscale, support, ss;
  double *tmp = NULL;
  size_t nk;
  int i, x;
  c->bounds = NULL;
  c->k = NULL;
  /* Pillow passes the box (0, 0, w, h) as floats: in1 - in0 is a float. */
  scale = (double)((float)in_size - 0.0f) / out_size;
  filterscale = scale < 1.0 ? 1.0 : scale;
  support = 1.0 * filterscale;
  if (ceil(support) > (double)(INT_MAX / 4))
    return dm_errf(eb, DM_RANGE, "resize %d -> %d: filter too wide", in_size,
                   out_size);
  c->ksize = (int)ceil(support) * 2 + 1;
  if (__builtin_mul_overflow((size_t)n, (size_t)c->ksize, &nk) ||
      nk > SIZE_MAX / sizeof(double))
    return dm_errf(eb, DM_RANGE, "resize %d -> %d: too many coefficients",
                   in_size, out_size);
  c->bounds = malloc((size_t)n * 2 * sizeof *c->bounds);
  c->k = calloc(nk, sizeof *c->k);
  tmp = malloc((size_t)c->ksize * sizeof *tmp);
  if (!c->bounds || !c->k || !tmp) {
    free(tmp);
    coeffs_free(c);
    return dm_errf(eb, DM_NOMEM, "out of memory (resize coefficients)");
  }
  ss = 1.0 / filterscale;
  c->fits32 = true;
  for (i = 0; i < n; i++) {
    int xx = first + i, xmin, xmax;
    double center = 0.0 + (xx + 0.5) * scale, ww = 0.0;
    int32_t *k = c->k + (size_t)i * (size_t)c->ksize;
    xmin = (int)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    xmax = (int)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    if (xmax > c->ksize) xmax = c->ksize; /* cannot happen; keeps k in bounds */
    if (xmax < 0) xmax = 0;
    for (x = 0; x < xmax; x++) {
      double wgt = triangle((x + xmin - center + 0.5) * ss);
      tmp[x] = wgt;
      ww += wgt;
    }
    int64_t ksum = 0; /* of |k|: bounds every partial sum of a pass */
    for (x = 0; x < xmax; x++) {
      double v = ww != 0.0 ? tmp[x] / ww : tmp[x];
      double f = v * (1 << PRECISION_BITS);
      k[x] = (int32_t)(v < 0 ? -0.5 + f : 0.5 + f);
      ksum += k[x] < 0 ? -(int64_t)k[x] : k[x];
    }
    if (255 * ksum + ((int64_t)1 << (PRECISION_BITS - 1)) > INT32_MAX)
      c->fits32 = false;
    c->bounds[2 * i] = xmin;
    c->bounds[2 * i + 1] = xmax;
  }
  free(tmp);
  return DM_OK;
}

static uint8_t clip8(int64_t acc) {
  int64_t v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* dst (rows, n, ch) <- horizontal pass over src rows [row0, row0 + rows)
 * of a (sh, sw, ch) image, for the n output columns described by hc. */
static void pass_h(const uint8_t *src, int sw, int ch, int row0, int rows,
                   const coeffs *hc, int n, uint8_t *dst) {
  int y, xx, x, j;
  const int64_t half = (int64_t)1 << (PRECISION_BITS - 1);
  for (y = 0; y < rows; y++) {
    const uint8_t *srow = src + (size_t)(row0 + y) * (size_t)sw * (size_t)ch;
    uint8_t *drow = dst + (size_t)y * (size_t)n * (size_t)ch;
    for (xx = 0; xx < n; xx++) {
      int xmin = hc->bounds[2 * xx], cnt = hc->bounds[2 * xx + 1];
      const int32_t *k = hc->k + (size_t)xx * (size_t)hc->ksize;
      const uint8_t *s = srow + (size_t)xmin * (size_t)ch;
      if (ch == 3) {
        int64_t a0 = half, a1 = half, a2 = half;
        for (x = 0; x < cnt; x++) {
          a0 += (int64_t)s[3 * x] * k[x];
          a1 += (int64_t)s[3 * x + 1] * k[x];
          a2 += (int64_t)s[3 * x + 2] * k[x];
        }
        drow[3 * xx] = clip8(a0);
        drow[3 * xx + 1] = clip8(a1);
        drow[3 * xx + 2] = clip8(a2);
      } else {
        for (j = 0; j < ch; j++) {
          int64_t a = half;
          for (x = 0; x < cnt; x++)
            a += (int64_t)s[x * ch + j] * k[x];
          drow[(size_t)xx * (size_t)ch + (size_t)j] = clip8(a);
        }
      }
    }
  }
}

/* dst (n, w, ch) <- vertical pass over src (.., w, ch) for the n output rows
 * of vc, whose source rows are shifted by -row0. */
static void pass_v(const uint8_t *src, int w, int ch, int row0,
                   const coeffs *vc, int n, uint8_t *dst) {
  int yy, y, i;
  const int64_t half = (int64_t)1 << (PRECISION_BITS - 1);
  size_t rowlen = (size_t)w * (size_t)ch;
  for (yy = 0; yy < n; yy++) {
    int ymin = vc->bounds[2 * yy] - row0, cnt = vc->bounds[2 * yy + 1];
    const int32_t *k = vc->k + (size_t)yy * (size_t)vc->ksize;
    uint8_t *drow = dst + (size_t)yy * rowlen;
    for (i = 0; i < (int)rowlen; i++) {
      int64_t a = half;
      const uint8_t *s = src + (size_t)ymin * rowlen + (size_t)i;
      for (y = 0; y < cnt; y++)
        a += (int64_t)s[(size_t)y * rowlen] * k[y];
      drow[i] = clip8(a);
    }
  }
}

/* The fast path: 32-bit accumulators, as Pillow itself uses, only when
 * coeffs.fits32 says no partial sum can leave int32, so the results equal
 * the 64-bit ones bit for bit.  This runs for every prediction (a 200x150
 * upload upscaled to 224x224 took ~0.4 ms with the scalar 64-bit passes
 * above, a tenth of the inference), so it is written for the compiler's
 * vectoriser: pass_v32 sums whole rows in fixed-size blocks (a known trip
 * count is what -O2's "very cheap" cost model vectorises), and the
 * horizontal pass reuses it on the transposed image (pass_h_t).  On x86-64
 * with GCC it is also compiled for AVX2 (vpmulld; SSE2 has no 32-bit
 * multiply), picked at load time by an ifunc; ~0.15 ms instead of ~0.4. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&         \
    defined(__GLIBC__)
#define VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VEC_CLONES
#endif
static uint8_t clip8_32(int32_t acc) {
  int32_t v = acc >> PRECISION_BITS;
  v = v < 0 ? 0 : v; /* two selects: max and min when vectorised */
  v = v > 255 ? 255 : v;
  return (uint8_t)v;
}

VEC_CLONES static void pass_v32(const uint8_t *src, int w, int ch, int row0,
                                const coeffs *vc, int n, uint8_t *dst) {
  enum { BLOCK = 32 }; /* bytes of a row per inner loop */
  int yy, y, j;
  const int32_t half = (int32_t)1 << (PRECISION_BITS - 1);
  size_t rowlen = (size_t)w * (size_t)ch, i;
  for (yy = 0; yy < n; yy++) {
    int ymin = vc->bounds[2 * yy] - row0, cnt = vc->bounds[2 * yy + 1];
    const int32_t *k = vc->k + (size_t)yy * (size_t)vc->ksize;
    const uint8_t *s0 = src + (size_t)ymin * rowlen;
    uint8_t *drow = dst + (size_t)yy * rowlen;
    for (i = 0; i + BLOCK <= rowlen; i += BLOCK) {
      int32_t a[BLOCK];
      for (j = 0; j < BLOCK; j++)
        a[j] = half;
      for (y = 0; y < cnt; y++) {
        const uint8_t *s = s0 + (size_t)y * rowlen + i;
        int32_t ky = k[y];
        for (j = 0; j < BLOCK; j++)
          a[j] += s[j] * ky;
      }
      for (j = 0; j < BLOCK; j++)
        drow[i + (size_t)j] = clip8_32(a[j]);
    }
    for (; i < rowlen; i++) {
      int32_t a = half;
      for (y = 0; y < cnt; y++)
        a += s0[(size_t)y * rowlen + i] * k[y];
      drow[i] = clip8_32(a);
    }
  }
}

/* dst (w, h, c) <- the (h, w, c) pixels at src (rows sstride bytes apart):
 * a pixel transpose, in tiles so both sides stay in cache. */
static void transpose(const uint8_t *src, size_t sstride, int w, int h, int c,
                      uint8_t *dst) {
  enum { TILE = 16 };
  int x0, y0, x, y, j;
  for (y0 = 0; y0 < h; y0 += TILE)
    for (x0 = 0; x0 < w; x0 += TILE) {
      int x1 = x0 + TILE < w ? x0 + TILE : w,
          y1 = y0 + TILE < h ? y0 + TILE : h;
      for (x = x0; x < x1; x++) {
        uint8_t *d = dst + ((size_t)x * (size_t)h + (size_t)y0) * (size_t)c;
        const uint8_t *s0 = src + (size_t)y0 * sstride + (size_t)x * (size_t)c;
        for (y = y0; y < y1; y++, d += c, s0 += sstride) {
          if (c == 3) {
            d[0] = s0[0];
            d[1] = s0[1];
            d[2] = s0[2];
          } else {
            for (j = 0; j < c; j++)
              d[j] = s0[j];
          }
        }
      }
    }
}

/* The horizontal pass as transpose, pass_v32, transpose: the source
 * columns [xlo, xhi) the window reads become rows, so the taps are summed
 * over whole rows like the vertical pass (vectorised) instead of over
 * 2..7 neighbouring pixels per output (scalar).  Same integer sums, so the
 * same bytes as pass_h.  scratch holds (xhi - xlo + cw) * rows * ch bytes;
 * the caller passes bands of at most H_BAND rows (32 * ch bytes, a whole
 * number of pass_v32 blocks, per transposed row). */
enum { H_BAND = 32 };
static void pass_h_t(const uint8_t *src, int sw, int ch, int row0, int rows,
                     const coeffs *hc, int n, uint8_t *scratch, uint8_t *dst) {
  int xlo = hc->bounds[0];
  int xhi = hc->bounds[2 * (n - 1)] + hc->bounds[2 * (n - 1) + 1];
  uint8_t *t = scratch; /* (xhi - xlo, rows, ch) */
  uint8_t *u = scratch + (size_t)(xhi - xlo) * (size_t)rows * (size_t)ch;
  size_t stride = (size_t)sw * (size_t)ch;
  transpose(src + (size_t)row0 * stride + (size_t)xlo * (size_t)ch, stride,
            xhi - xlo, rows, ch, t);
  pass_v32(t, rows, ch, xlo, hc, n, u); /* u: (n, rows, ch) */
  transpose(u, (size_t)rows * (size_t)ch, rows, n, ch, dst);
}

dm_err dm__resize_window(const uint8_t *src, int sw, int sh, int c, int ow,
                         int oh, int x0, int y0, int cw, int ch, uint8_t *dst,
                         dm_errbuf *eb) {
  dm_err rc = DM_OK;
  coeffs hc = {0, NULL, NULL, false}, vc = {0, NULL, NULL, false};
  uint8_t *tmp = NULL, *scratch = NULL;
  const uint8_t *hsrc; /* input of the vertical pass */
  int need_h = ow != sw, need_v = oh != sh;
  int row0, rows, y;
  size_t tmpsz;

  if (!src || !dst || sw <= 0 || sh <= 0 || ow <= 0 || oh <= 0 || c < 1 ||
      c > 4 || x0 < 0 || y0 < 0 || cw <= 0 || ch <= 0 || x0 > ow - cw ||
      y0 > oh - ch)
    return dm_errf(eb, DM_ARG, "resize window: bad arguments");
  if (need_v) {
    if ((rc = coeffs_make(sh, oh, y0, ch, &vc, eb)) != DM_OK) goto out;
    row0 = vc.bounds[0];
    rows = vc.bounds[2 * (ch - 1)] + vc.bounds[2 * (ch - 1) + 1] - row0;
    if (rows <= 0) { /* cannot happen for in, out >= 1 */
      rc = dm_errf(eb, DM_RANGE, "resize: empty source window");
      goto out;
    }
  } else {
    row0 = y0;
    rows = ch;
  }
  if (need_h) {
    if ((rc = coeffs_make(sw, ow, x0, cw, &hc, eb)) != DM_OK) goto out;
    tmp = dm__alloc_pixels(cw, rows, c);
    if (!tmp) {
      rc = dm_errf(eb, DM_NOMEM, "out of memory (resize %dx%d)", cw, rows);
      goto out;
    }
    if (hc.fits32) {
      /* in bands of H_BAND rows: small scratch that stays in cache */
      scratch =
          sw <= INT_MAX - cw ? dm__alloc_pixels(sw + cw, H_BAND, c) : NULL;
      if (!scratch) {
        rc = dm_errf(eb, DM_NOMEM, "out of memory (resize %dx%d)", cw, rows);
        goto out;
      }
      for (y = 0; y < rows; y += H_BAND)
        pass_h_t(src, sw, c, row0 + y, rows - y < H_BAND ? rows - y : H_BAND,
                 &hc, cw, scratch, tmp + (size_t)y * (size_t)cw * (size_t)c);
    } else {
      pass_h(src, sw, c, row0, rows, &hc, cw, tmp);
    }
    hsrc = tmp;
  } else if (x0 != 0 || cw != sw) {
    /* width unchanged but only a column window wanted: cut it out */
    tmp = dm__alloc_pixels(cw, rows, c);
    if (!tmp) {
      rc = dm_errf(eb, DM_NOMEM, "out of memory (resize %dx%d)", cw, rows);
      goto out;
    }
    for (y = 0; y < rows; y++)
      memcpy(tmp + (size_t)y * (size_t)cw * (size_t)c,
             src + ((size_t)(row0 + y) * (size_t)sw + (size_t)x0) * (size_t)c,
             (size_t)cw * (size_t)c);
    hsrc = tmp;
  } else {
    hsrc = src + (size_t)row0 * (size_t)sw * (size_t)c;
  }
  /* hsrc: rows [row0, row0 + rows) of the horizontally resized window */
  if (need_v) {
    if (vc.fits32)
      pass_v32(hsrc, cw, c, row0, &vc, ch, dst);
    else
      pass_v(hsrc, cw, c, row0, &vc, ch, dst);
  } else {
    tmpsz = (size_t)cw * (size_t)c * (size_t)ch;
    memcpy(dst, hsrc, tmpsz);
  }
out:
  free(scratch);
  free(tmp);
  coeffs_free(&hc);
  coeffs_free(&vc);
  return rc;
}

dm_err dm_image_resize(const dm_image *in, int out_w, int out_h, dm_image *out,
                       dm_errbuf *eb) {
  dm_err rc;
  uint8_t *px;
  if (!in || !in->px || !out || in->w <= 0 || in->h <= 0 || in->c < 1 ||
      in->c > 4 || out_w <= 0 || out_h <= 0)
    return dm_errf(eb, DM_ARG, "dm_image_resize: bad arguments");
  px = dm__alloc_pixels(out_w, out_h, in->c);
  if (!px)
    return dm_errf(eb, DM_NOMEM, "out of memory (resize to %dx%d)", out_w,
                   out_h);
  rc = dm__resize_window(in->px, in->w, in->h, in->c, out_w, out_h, 0, 0, out_w,
                         out_h, px, eb);
  if (rc != DM_OK) {
    free(px);
    return rc;
  }
  out->w = out_w;
  out->h = out_h;
  out->c = in->c;
  out->px = px;
  return DM_OK;
}
