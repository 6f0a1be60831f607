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
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS 22

typedef struct coeffs {
  int ksize;   /* taps per output index (stride of k) */
  int *bounds; /* (n, 2): first source index, number of taps */
  int32_t *k;  /* (n, ksize) fixed-point weights */
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
    for (x = 0; x < xmax; x++) {
      double v = ww != 0.0 ? tmp[x] / ww : tmp[x];
      double f = v * (1 << PRECISION_BITS);
      k[x] = (int32_t)(v < 0 ? -0.5 + f : 0.5 + f);
    }
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

dm_err dm__resize_window(const uint8_t *src, int sw, int sh, int c, int ow,
                         int oh, int x0, int y0, int cw, int ch, uint8_t *dst,
                         dm_errbuf *eb) {
  dm_err rc = DM_OK;
  coeffs hc = {0, NULL, NULL}, vc = {0, NULL, NULL};
  uint8_t *tmp = NULL;
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
    pass_h(src, sw, c, row0, rows, &hc, cw, tmp);
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
    pass_v(hsrc, cw, c, row0, &vc, ch, dst);
  } else {
    tmpsz = (size_t)cw * (size_t)c * (size_t)ch;
    memcpy(dst, hsrc, tmpsz);
  }
out:
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
