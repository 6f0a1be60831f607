/* overlay.c: heatmap overlays and image encoders for explanations.
 *
 * The CAM lives on the model input grid (after resize and centre crop); the
 * overlay is drawn on the upright original, so each output pixel is mapped
 * back through the preprocessing geometry (dm_preproc_geometry) to CAM
 * coordinates and sampled bilinearly (pixel centres aligned, as
 * cv2.resize/torch interpolate with align_corners=False).  Colormaps: jet as
 * OpenCV's COLORMAP_JET (what pytorch-grad-cam's show_cam_on_image uses) and
 * turbo from its published polynomial approximation.  Reentrant. */
#include <math.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "dermal/explain.h"

int dm_colormap_parse(const char *s) {
  if (!strcmp(s, "jet")) return DM_CMAP_JET;
  if (!strcmp(s, "turbo")) return DM_CMAP_TURBO;
  return -1;
}

static uint8_t u8(double v) {
  v = v < 0 ? 0 : v > 1 ? 1 : v;
  return (uint8_t)lrint(v * 255.0);
}

void dm_colormap_rgb(dm_colormap m, float t, uint8_t rgb[3]) {
  double x = t < 0 ? 0 : t > 1 ? 1 : t;
  if (m == DM_CMAP_TURBO) {
    double r =
        0.13572138 +
        x * (4.61539260 +
             x * (-42.66032258 +
                  x * (132.13108234 + x * (-152.94239396 + x * 59.28637943))));
    double g = 0.09140261 +
               x * (2.19418839 +
                    x * (4.84296658 + x * (-14.18503333 +
                                           x * (4.27729857 + x * 2.82956604))));
    double b =
        0.10667330 +
        x * (12.64194608 +
             x * (-60.58204836 +
                  x * (110.36276771 + x * (-89.90310912 + x * 27.34824973))));
    rgb[0] = u8(r), rgb[1] = u8(g), rgb[2] = u8(b);
    return;
  }
  /* jet: blue -> cyan -> yellow -> red, each channel a clamped tent */
  double r = 1.5 - fabs(4 * x - 3), g = 1.5 - fabs(4 * x - 2),
         b = 1.5 - fabs(4 * x - 1);
  rgb[0] = u8(r), rgb[1] = u8(g), rgb[2] = u8(b);
}

static void minmax(const float *v, size_t n, float *lo, float *hi) {
  *lo = INFINITY, *hi = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < *lo) *lo = v[i];
    if (v[i] > *hi) *hi = v[i];
  }
}

/* Bilinear sample of cam at continuous (y, x) in cam pixel units, centres at
 * integer + 0.5; clamps at the border. */
static float sample(const float *cam, int h, int w, double y, double x) {
  y -= 0.5, x -= 0.5;
  if (y < 0) y = 0;
  if (x < 0) x = 0;
  if (y > h - 1) y = h - 1;
  if (x > w - 1) x = w - 1;
  int y0 = (int)y, x0 = (int)x;
  int y1 = y0 + 1 < h ? y0 + 1 : y0, x1 = x0 + 1 < w ? x0 + 1 : x0;
  double fy = y - y0, fx = x - x0;
  double a = cam[y0 * w + x0] * (1 - fx) + cam[y0 * w + x1] * fx;
  double b = cam[y1 * w + x0] * (1 - fx) + cam[y1 * w + x1] * fx;
  return (float)(a * (1 - fy) + b * fy);
}

dm_err dm_overlay_render(const dm_image *im, const dm_preproc *pp,
                         const float *cam, int cam_h, int cam_w,
                         const dm_overlay_opts *o, dm_image *out,
                         dm_errbuf *eb) {
  if (!im || !im->px || im->c != 3 || cam_h < 1 || cam_w < 1)
    return dm_errf(eb, DM_ARG, "overlay needs an RGB image and a CAM");
  dm_overlay_opts d = {DM_CMAP_JET, 0.5f, 0};
  if (o) d = *o;
  if (!(d.alpha >= 0 && d.alpha <= 1))
    return dm_errf(eb, DM_ARG, "alpha must be in 0..1");
  dm_preproc_geom geo;
  dm_err rc = dm_preproc_geometry(pp, im->w, im->h, &geo, eb);
  if (rc) return rc;
  int ow = im->w, oh = im->h;
  if (d.max_side > 0 && (ow > d.max_side || oh > d.max_side)) {
    if (ow >= oh) {
      oh = (int)lround((double)oh * d.max_side / ow);
      ow = d.max_side;
    } else {
      ow = (int)lround((double)ow * d.max_side / oh);
      oh = d.max_side;
    }
    if (ow < 1) ow = 1;
    if (oh < 1) oh = 1;
  }
  dm_image base = *im, scaled = {0};
  if (ow != im->w || oh != im->h) {
    if ((rc = dm_image_resize(im, ow, oh, &scaled, eb))) return rc;
    base = scaled;
  }
  uint8_t *px = malloc((size_t)ow * (size_t)oh * 3);
  if (!px) {
    dm_image_free(&scaled);
    return dm_errf(eb, DM_NOMEM, "out of memory");
  }
  float lo, hi;
  minmax(cam, (size_t)cam_h * (size_t)cam_w, &lo, &hi);
  float span = hi > lo ? hi - lo : 1.f;
  /* output pixel -> original -> resized -> tensor -> CAM */
  double sx = (double)geo.resized_w / ow, sy = (double)geo.resized_h / oh;
  double cx = (double)cam_w / pp->size_w, cy = (double)cam_h / pp->size_h;
  for (int y = 0; y < oh; y++) {
    double ty = (y + 0.5) * sy - geo.crop_y;
    for (int x = 0; x < ow; x++) {
      double tx = (x + 0.5) * sx - geo.crop_x;
      const uint8_t *src = base.px + ((size_t)y * (size_t)ow + (size_t)x) * 3;
      uint8_t *dst = px + ((size_t)y * (size_t)ow + (size_t)x) * 3;
      if (ty < 0 || tx < 0 || ty >= pp->size_h || tx >= pp->size_w) {
        memcpy(dst, src, 3);
        continue;
      }
      float v = (sample(cam, cam_h, cam_w, ty * cy, tx * cx) - lo) / span;
      uint8_t c[3];
      dm_colormap_rgb(d.colormap, v, c);
      for (int k = 0; k < 3; k++)
        dst[k] = (uint8_t)lrintf(d.alpha * c[k] + (1 - d.alpha) * src[k]);
    }
  }
  dm_image_free(&scaled);
  out->w = ow;
  out->h = oh;
  out->c = 3;
  out->px = px;
  return DM_OK;
}

dm_err dm_cam_to_gray(const float *cam, int h, int w, dm_image *out,
                      dm_errbuf *eb) {
  size_t n = (size_t)h * (size_t)w;
  uint8_t *px = malloc(n ? n : 1);
  if (!px) return dm_errf(eb, DM_NOMEM, "out of memory");
  float lo, hi;
  minmax(cam, n, &lo, &hi);
  float span = hi > lo ? hi - lo : 1.f;
  for (size_t i = 0; i < n; i++)
    px[i] = u8((cam[i] - lo) / span);
  out->w = w;
  out->h = h;
  out->c = 1;
  out->px = px;
  return DM_OK;
}

dm_err dm_image_encode_png(const dm_image *im, uint8_t **out, size_t *len,
                           dm_errbuf *eb) {
  if (im->c != 1 && im->c != 3)
    return dm_errf(eb, DM_ARG, "PNG: 1 or 3 channels");
  spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
  if (!ctx) return dm_errf(eb, DM_NOMEM, "out of memory");
  struct spng_ihdr ihdr = {0};
  ihdr.width = (uint32_t)im->w;
  ihdr.height = (uint32_t)im->h;
  ihdr.bit_depth = 8;
  ihdr.color_type =
      im->c == 1 ? SPNG_COLOR_TYPE_GRAYSCALE : SPNG_COLOR_TYPE_TRUECOLOR;
  int e;
  size_t n = (size_t)im->w * (size_t)im->h * (size_t)im->c;
  /* level 3 and the Sub filter only: overlays are photographs; the default
   * (level 6, trying every filter per row) costs several times the time for
   * a few percent of size */
  if ((e = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1)) ||
      (e = spng_set_option(ctx, SPNG_IMG_COMPRESSION_LEVEL, 3)) ||
      (e = spng_set_option(ctx, SPNG_FILTER_CHOICE, SPNG_FILTER_CHOICE_SUB)) ||
      (e = spng_set_ihdr(ctx, &ihdr)) ||
      (e = spng_encode_image(ctx, im->px, n, SPNG_FMT_PNG,
                             SPNG_ENCODE_FINALIZE))) {
    spng_ctx_free(ctx);
    return dm_errf(eb, DM_FORMAT, "PNG encoding failed: %s", spng_strerror(e));
  }
  void *buf = spng_get_png_buffer(ctx, len, &e);
  spng_ctx_free(ctx);
  if (!buf) return dm_errf(eb, DM_NOMEM, "PNG buffer: %s", spng_strerror(e));
  *out = buf;
  return DM_OK;
}

dm_err dm_image_encode_jpeg(const dm_image *im, int quality, uint8_t **out,
                            size_t *len, dm_errbuf *eb) {
  if (im->c != 3) return dm_errf(eb, DM_ARG, "JPEG: RGB only");
  tjhandle h = tjInitCompress();
  if (!h) return dm_errf(eb, DM_NOMEM, "out of memory");
  unsigned char *buf = NULL;
  unsigned long n = 0;
  int r = tjCompress2(h, im->px, im->w, 0, im->h, TJPF_RGB, &buf, &n,
                      TJSAMP_420, quality, TJFLAG_ACCURATEDCT);
  dm_err rc = DM_OK;
  if (r != 0) {
    rc = dm_errf(eb, DM_FORMAT, "JPEG encoding failed: %s", tjGetErrorStr2(h));
    tjFree(buf);
  } else {
    /* hand back malloc'd memory so callers free() both encoders' output */
    *out = malloc(n ? n : 1);
    if (!*out)
      rc = dm_errf(eb, DM_NOMEM, "out of memory");
    else {
      memcpy(*out, buf, n);
      *len = n;
    }
    tjFree(buf);
  }
  tjDestroy(h);
  return rc;
}

dm_err dm_image_save(const dm_image *im, const char *path, dm_errbuf *eb) {
  const char *dot = strrchr(path, '.');
  bool jpg = dot && (!strcmp(dot, ".jpg") || !strcmp(dot, ".jpeg"));
  uint8_t *buf = NULL;
  size_t n = 0;
  dm_err rc = jpg ? dm_image_encode_jpeg(im, 90, &buf, &n, eb)
                  : dm_image_encode_png(im, &buf, &n, eb);
  if (rc) return rc;
  FILE *f = fopen(path, "wb");
  bool ok = f && fwrite(buf, 1, n, f) == n;
  if (f && fclose(f)) ok = false;
  free(buf);
  return ok ? DM_OK : dm_errf(eb, DM_IO, "%s: cannot write", path);
}
