/* dermal preprocessing: decoded RGB image -> model input tensor.
 *
 * Purpose: reproduce torchvision's
 *   Resize(resize) + CenterCrop((H, W)) + ToTensor() + Normalize(mean, std)
 * (or Resize((H, W)) for DM_RESIZE_DIRECT) on a PIL image, in NCHW or NHWC
 * and RGB or BGR, as the model's metadata asks.
 *
 * torchvision semantics kept (0.14, PIL path):
 *  - Resize(int): the shorter side becomes `resize`, the longer side
 *    int(resize * long / short) (truncated; Python computes resize * long
 *    exactly and divides in double, as we do).  Resampling is Pillow's
 *    bilinear (resize.c).
 *  - CenterCrop: top = int(round((h - crop_h) / 2.0)) with Python's
 *    round-half-to-even, left likewise; when the crop is larger than the
 *    image, torchvision first pads with zeros, (crop - size) // 2 before.
 *  - ToTensor divides by 255 in float32; Normalize computes (x - mean) / std
 *    in float32.  With scale == 1/255 we divide as well, so the tensor is
 *    bit-identical to torchvision's for identical pixels.
 *
 * Invariants: only the cropped window of the resized image is computed
 * (resize.c guarantees identical pixels); out is fully written on DM_OK,
 * including padding.  All sizes are validated and overflow-checked.
 *
 * Threading: pure functions; scratch memory is per call. */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DM__MAX_TENSOR_SIDE 16384

void dm_preproc_init(dm_preproc *p) {
  static const float mean[3] = {0.485f, 0.456f, 0.406f};
  static const float std[3] = {0.229f, 0.224f, 0.225f};
  memset(p, 0, sizeof *p);
  p->size_h = p->size_w = 224;
  p->resize_mode = DM_RESIZE_SHORTER_CROP;
  p->resize = 256;
  memcpy(p->mean, mean, sizeof mean);
  memcpy(p->std, std, sizeof std);
  p->bgr = false;
  p->nhwc = false;
  p->scale = 1.0f / 255.0f;
}

static dm_err check_preproc(const dm_preproc *p, dm_errbuf *eb) {
  int i;
  if (!p) return dm_errf(eb, DM_ARG, "preprocessing: NULL");
  if (p->size_h < 1 || p->size_w < 1 || p->size_h > DM__MAX_TENSOR_SIDE ||
      p->size_w > DM__MAX_TENSOR_SIDE)
    return dm_errf(eb, DM_ARG, "preprocessing: input size %dx%d out of range",
                   p->size_w, p->size_h);
  if (p->resize_mode == DM_RESIZE_SHORTER_CROP) {
    if (p->resize < 1 || p->resize > DM__MAX_TENSOR_SIDE)
      return dm_errf(eb, DM_ARG, "preprocessing: resize %d out of range",
                     p->resize);
  } else if (p->resize_mode != DM_RESIZE_DIRECT) {
    return dm_errf(eb, DM_ARG, "preprocessing: unknown resize mode %d",
                   p->resize_mode);
  }
  if (!isfinite(p->scale))
    return dm_errf(eb, DM_ARG, "preprocessing: scale is not finite");
  for (i = 0; i < 3; i++)
    if (!isfinite(p->mean[i]) || !isfinite(p->std[i]) || p->std[i] == 0.0f)
      return dm_errf(eb, DM_ARG, "preprocessing: mean/std[%d] invalid", i);
  return DM_OK;
}

/* Python's int(round(d / 2.0)) for d >= 0: halves go to the even neighbour. */
static int round_half_even_div2(int d) {
  int q = d / 2;
  if (d % 2 == 0) return q;
  return q % 2 == 0 ? q : q + 1;
}

/* torchvision center_crop offset along one axis. */
static int crop_offset(int size, int crop) {
  if (crop > size) return -((crop - size) / 2); /* zero padding before */
  return round_half_even_div2(size - crop);
}

dm_err dm_preproc_geometry(const dm_preproc *p, int w, int h,
                           dm_preproc_geom *g, dm_errbuf *eb) {
  dm_err rc;
  if ((rc = check_preproc(p, eb)) != DM_OK) return rc;
  if (w < 1 || h < 1 || !g)
    return dm_errf(eb, DM_ARG, "preprocessing: bad image size %dx%d", w, h);
  if (p->resize_mode == DM_RESIZE_DIRECT) {
    g->resized_w = p->size_w;
    g->resized_h = p->size_h;
    g->crop_x = g->crop_y = 0;
    return DM_OK;
  }
  {
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    /* Python: int(size * long / short), the product exact, one division. */
    double nl = (double)((int64_t)p->resize * longer) / (double)shorter;
    if (!(nl < (double)INT_MAX))
      return dm_errf(eb, DM_RANGE,
                     "preprocessing: %dx%d image resized to a side of %.0f", w,
                     h, nl);
    if (w <= h) {
      g->resized_w = p->resize;
      g->resized_h = (int)nl;
    } else {
      g->resized_w = (int)nl;
      g->resized_h = p->resize;
    }
  }
  g->crop_x = crop_offset(g->resized_w, p->size_w);
  g->crop_y = crop_offset(g->resized_h, p->size_h);
  return DM_OK;
}

dm_err dm_image_to_tensor(const dm_image *im, const dm_preproc *p, float *out,
                          dm_errbuf *eb) {
  dm_err rc;
  dm_preproc_geom g;
  float lut[3][256];
  uint8_t *win = NULL;
  int H, W, wx0, wy0, wx1, wy1, cw = 0, chh = 0, oc, y, x;
  size_t plane;

  if (!im || !im->px || !out || im->c != 3 || im->w < 1 || im->h < 1)
    return dm_errf(eb, DM_ARG,
                   "preprocessing: need an RGB image and an "
                   "output buffer");
  if ((rc = dm_preproc_geometry(p, im->w, im->h, &g, eb)) != DM_OK) return rc;
  H = p->size_h;
  W = p->size_w;
  plane = (size_t)H * (size_t)W;

  /* value of output channel oc for 8-bit pixel v */
  for (oc = 0; oc < 3; oc++) {
    int v;
    for (v = 0; v < 256; v++) {
      float xv =
          p->scale == 1.0f / 255.0f ? (float)v / 255.0f : (float)v * p->scale;
      lut[oc][v] = (xv - p->mean[oc]) / p->std[oc];
    }
  }

  /* window of the resized image that the crop covers */
  wx0 = g.crop_x > 0 ? g.crop_x : 0;
  wy0 = g.crop_y > 0 ? g.crop_y : 0;
  wx1 = g.crop_x + W < g.resized_w ? g.crop_x + W : g.resized_w;
  wy1 = g.crop_y + H < g.resized_h ? g.crop_y + H : g.resized_h;
  if (wx1 > wx0 && wy1 > wy0) {
    cw = wx1 - wx0;
    chh = wy1 - wy0;
    win = dm__alloc_pixels(cw, chh, 3);
    if (!win) return dm_errf(eb, DM_NOMEM, "out of memory (preprocessing)");
    rc = dm__resize_window(im->px, im->w, im->h, 3, g.resized_w, g.resized_h,
                           wx0, wy0, cw, chh, win, eb);
    if (rc != DM_OK) goto out;
  }

  if (win && cw == W && chh == H) {
    /* The crop lies inside the resized image (every model input we know):
     * no padding, and the window is exactly the (H, W, 3) input, so one
     * pass over its pixels fills the three channels.  This runs for every
     * prediction; the general loop below costs about four times as much
     * per pixel (0.2 ms for 224x224). */
    const uint8_t *restrict px = win;
    const float *l0 = lut[0], *l1 = lut[1], *l2 = lut[2];
    int s0 = p->bgr ? 2 : 0, s2 = 2 - s0; /* source byte of channels 0, 2 */
    size_t i;
    if (p->nhwc) {
      float *restrict o = out;
      for (i = 0; i < plane; i++, px += 3, o += 3) {
        o[0] = l0[px[s0]];
        o[1] = l1[px[1]];
        o[2] = l2[px[s2]];
      }
    } else {
      float *restrict o0 = out, *restrict o1 = out + plane,
                      *restrict o2 = out + 2 * plane;
      for (i = 0; i < plane; i++, px += 3) {
        o0[i] = l0[px[s0]];
        o1[i] = l1[px[1]];
        o2[i] = l2[px[s2]];
      }
    }
    goto out;
  }
  for (y = 0; y < H; y++) {
    int ry = y + g.crop_y; /* row in the resized image */
    for (x = 0; x < W; x++) {
      int rx = x + g.crop_x;
      const uint8_t *px = NULL;
      size_t o = (size_t)y * (size_t)W + (size_t)x;
      if (win && ry >= wy0 && ry < wy1 && rx >= wx0 && rx < wx1)
        px = win + ((size_t)(ry - wy0) * (size_t)cw + (size_t)(rx - wx0)) * 3;
      for (oc = 0; oc < 3; oc++) {
        int sc = p->bgr ? 2 - oc : oc;
        float v = lut[oc][px ? px[sc] : 0];
        if (p->nhwc)
          out[o * 3 + (size_t)oc] = v;
        else
          out[(size_t)oc * plane + o] = v;
      }
    }
  }
out:
  free(win);
  return rc;
}
