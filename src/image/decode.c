/* dermal image decoding: format dispatch, limits, PNG (libspng) and WebP
 * (libwebp); JPEG lives in jpeg.c, EXIF and orientation in exif.c.
 *
 * Purpose: turn an untrusted upload into an upright RGB8 dm_image with the
 * same pixels PIL's open + exif_transpose + convert("RGB") gives.
 *
 * Invariants:
 *  - Order of refusals: byte limit (DM_TOOBIG) before anything is parsed;
 *    format sniffing (DM_FORMAT); header dimensions against max_pixels and
 *    min_side (DM_IMAGE_SIZE) before any pixel buffer is allocated; then the
 *    decode itself, where any library error or warning is DM_FORMAT.
 *  - *out is written only on DM_OK; on every error path the pixel buffer is
 *    freed, so a caller never sees a partly decoded image.
 *  - Pixel buffer sizes are computed with overflow checks.
 *  - PNG: alpha and tRNS are ignored (PIL's convert("RGB") drops alpha),
 *    gamma is not applied (PIL does not), 16-bit samples keep the high byte.
 *  - WebP: animated files are refused; alpha is dropped.
 *
 * Threading: no global mutable state; libspng and libwebp contexts are per
 * call.  Safe to call concurrently. */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <spng.h>
#include <webp/decode.h>

void dm_image_limits_init(dm_image_limits *lim) {
  lim->max_bytes = DM_IMAGE_DEFAULT_MAX_BYTES;
  lim->max_pixels = DM_IMAGE_DEFAULT_MAX_PIXELS;
  lim->min_side = DM_IMAGE_DEFAULT_MIN_SIDE;
}

dm_image_format dm_image_sniff(const void *buf, size_t len) {
  const uint8_t *b = buf;
  static const uint8_t png_sig[8] = {0x89, 'P',  'N',  'G',
                                     '\r', '\n', 0x1a, '\n'};
  if (!b) return DM_IMAGE_UNKNOWN;
  if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
    return DM_IMAGE_JPEG;
  if (len >= 8 && memcmp(b, png_sig, 8) == 0) return DM_IMAGE_PNG;
  if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
    return DM_IMAGE_WEBP;
  return DM_IMAGE_UNKNOWN;
}

const char *dm_image_format_name(dm_image_format f) {
  switch (f) {
  case DM_IMAGE_JPEG: return "jpeg";
  case DM_IMAGE_PNG: return "png";
  case DM_IMAGE_WEBP: return "webp";
  case DM_IMAGE_UNKNOWN: break;
  }
  return "unknown";
}

void dm_image_free(dm_image *im) {
  if (!im) return;
  free(im->px);
  memset(im, 0, sizeof *im);
}

uint8_t *dm__alloc_pixels(int w, int h, int c) {
  size_t n;
  if (w <= 0 || h <= 0 || c <= 0) return NULL;
  if (__builtin_mul_overflow((size_t)w, (size_t)h, &n) ||
      __builtin_mul_overflow(n, (size_t)c, &n))
    return NULL;
  return malloc(n);
}

dm_err dm__check_dims(const char *what, uint64_t w, uint64_t h,
                      const dm_image_limits *lim, dm_image_info *info,
                      dm_errbuf *eb) {
  uint64_t px;
  info->width = w > INT_MAX ? INT_MAX : (int)w;
  info->height = h > INT_MAX ? INT_MAX : (int)h;
  if (w == 0 || h == 0)
    return dm_errf(eb, DM_FORMAT, "%s header: empty image (%llux%llu)", what,
                   (unsigned long long)w, (unsigned long long)h);
  if (__builtin_mul_overflow(w, h, &px) || px > lim->max_pixels)
    return dm_errf(eb, DM_IMAGE_SIZE,
                   "image is %llux%llu pixels, over the limit of %llu",
                   (unsigned long long)w, (unsigned long long)h,
                   (unsigned long long)lim->max_pixels);
  /* max_pixels may be configured above INT_MAX * 1: each side must still
   * fit an int, and w * h * 4 a size_t. */
  if (w > INT_MAX / 4 || h > INT_MAX / 4)
    return dm_errf(eb, DM_IMAGE_SIZE, "image side too large (%llux%llu)",
                   (unsigned long long)w, (unsigned long long)h);
  if (w < (uint64_t)lim->min_side || h < (uint64_t)lim->min_side)
    return dm_errf(eb, DM_IMAGE_SIZE,
                   "image is %llux%llu pixels, a side under the minimum %d",
                   (unsigned long long)w, (unsigned long long)h, lim->min_side);
  return DM_OK;
}

/* ---- PNG -------------------------------------------------------------- */

static dm_err png_err(dm_errbuf *eb, const char *stage, int rc) {
  return dm_errf(eb, DM_FORMAT, "corrupt PNG (%s): %s", stage,
                 spng_strerror(rc));
}

static dm_err decode_png(const uint8_t *buf, size_t len,
                         const dm_image_limits *lim, dm_image *out,
                         dm_image_info *info, dm_errbuf *eb) {
  dm_err rc;
  int r;
  spng_ctx *ctx = NULL;
  struct spng_ihdr ihdr;
  struct spng_exif exif;
  uint8_t *px = NULL;
  size_t need = 0, want;
  uint32_t side_max;
  int w, h;

  ctx = spng_ctx_new(0);
  if (!ctx) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory (PNG decoder)");
    goto fail;
  }
  /* libspng's own limits: each side at most max_pixels (our w * h check
   * follows), chunks no larger than the input, at most DM__PNG_CACHE_MAX
   * bytes kept for ancillary chunks (bounds zTXt/iCCP inflation). */
  side_max =
      lim->max_pixels > 0x7fffffffu ? 0x7fffffffu : (uint32_t)lim->max_pixels;
  if ((r = spng_set_image_limits(ctx, side_max, side_max)) != 0 ||
      (r = spng_set_chunk_limits(ctx, len < 0x7fffffffu ? len : 0x7fffffffu,
                                 DM__PNG_CACHE_MAX)) != 0 ||
      (r = spng_set_png_buffer(ctx, buf, len)) != 0) {
    rc = dm_errf(eb, DM_FORMAT, "PNG decoder setup: %s", spng_strerror(r));
    goto fail;
  }
  r = spng_get_ihdr(ctx, &ihdr);
  if (r == SPNG_EUSER_WIDTH || r == SPNG_EUSER_HEIGHT) {
    rc = dm_errf(eb, DM_IMAGE_SIZE, "PNG side exceeds the pixel limit %llu",
                 (unsigned long long)lim->max_pixels);
    goto fail;
  }
  if (r != 0) {
    rc = png_err(eb, "header", r);
    goto fail;
  }
  switch (ihdr.color_type) {
  case SPNG_COLOR_TYPE_GRAYSCALE: info->channels = 1; break;
  case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: info->channels = 2; break;
  case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: info->channels = 4; break;
  default: info->channels = 3; break;
  }
  info->progressive = ihdr.interlace_method != 0;
  if ((rc = dm__check_dims("PNG", ihdr.width, ihdr.height, lim, info, eb)) !=
      DM_OK)
    goto fail;
  w = (int)ihdr.width;
  h = (int)ihdr.height;
  want = (size_t)w * (size_t)h * 3; /* checked by dm__check_dims */
  if ((r = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &need)) != 0) {
    rc = png_err(eb, "size", r);
    goto fail;
  }
  if (need != want) {
    rc = dm_errf(eb, DM_FORMAT, "PNG: decoded size %zu != %zu", need, want);
    goto fail;
  }
  px = dm__alloc_pixels(w, h, 3);
  if (!px) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory (%dx%d PNG)", w, h);
    goto fail;
  }
  /* No SPNG_DECODE_TRNS / SPNG_DECODE_GAMMA: PIL applies neither when
   * converting to RGB. */
  if ((r = spng_decode_image(ctx, px, need, SPNG_FMT_RGB8, 0)) != 0) {
    rc = png_err(eb, "image data", r);
    goto fail;
  }
  info->orientation = 1;
  if (spng_get_exif(ctx, &exif) == 0 && exif.data)
    info->orientation =
        dm__exif_orientation((const uint8_t *)exif.data, exif.length);
  spng_ctx_free(ctx);
  out->w = w;
  out->h = h;
  out->c = 3;
  out->px = px;
  return DM_OK;
fail:
  free(px);
  spng_ctx_free(ctx);
  return rc;
}

/* ---- WebP ------------------------------------------------------------- */

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

/* Orientation from the EXIF chunk of an extended (VP8X) WebP, walking the
 * RIFF chunk list with bounds checks; 1 when there is none. */
static int webp_orientation(const uint8_t *buf, size_t len) {
  size_t end, pos = 12;
  uint32_t riff = le32(buf + 4); /* len >= 12: checked by the sniffer */
  end = (size_t)riff + 8 < len ? (size_t)riff + 8 : len;
  while (end - pos >= 8) {
    uint32_t sz = le32(buf + pos + 4);
    const uint8_t *payload = buf + pos + 8;
    size_t avail = end - pos - 8;
    if (sz > avail) return 1;
    if (memcmp(buf + pos, "EXIF", 4) == 0)
      return dm__exif_orientation(payload, sz);
    pos += 8 + (size_t)sz + (sz & 1u);
    if (pos > end) return 1;
  }
  return 1;
}

static dm_err decode_webp(const uint8_t *buf, size_t len,
                          const dm_image_limits *lim, dm_image *out,
                          dm_image_info *info, dm_errbuf *eb) {
  dm_err rc;
  WebPBitstreamFeatures f;
  VP8StatusCode st;
  uint8_t *px = NULL;
  int w, h;

  st = WebPGetFeatures(buf, len, &f);
  if (st != VP8_STATUS_OK) {
    rc = dm_errf(eb, DM_FORMAT, "corrupt or truncated WebP (status %d)",
                 (int)st);
    goto fail;
  }
  info->channels = f.has_alpha ? 4 : 3;
  if ((rc = dm__check_dims("WebP", f.width < 0 ? 0u : (uint64_t)f.width,
                           f.height < 0 ? 0u : (uint64_t)f.height, lim, info,
                           eb)) != DM_OK)
    goto fail;
  if (f.has_animation) {
    rc = dm_errf(eb, DM_FORMAT, "animated WebP is not supported");
    goto fail;
  }
  w = f.width;
  h = f.height;
  px = dm__alloc_pixels(w, h, 3);
  if (!px) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory (%dx%d WebP)", w, h);
    goto fail;
  }
  if (!WebPDecodeRGBInto(buf, len, px, (size_t)w * (size_t)h * 3, w * 3)) {
    rc = dm_errf(eb, DM_FORMAT, "corrupt or truncated WebP image data");
    goto fail;
  }
  info->orientation = webp_orientation(buf, len);
  out->w = w;
  out->h = h;
  out->c = 3;
  out->px = px;
  return DM_OK;
fail:
  free(px);
  return rc;
}

/* ---- dispatch --------------------------------------------------------- */

dm_err dm_image_decode(const void *buf, size_t len, const dm_image_limits *lim,
                       int target_short_side, dm_image *out,
                       dm_image_info *info, dm_errbuf *eb) {
  dm_err rc;
  dm_image_limits L;
  dm_image_info inf;
  dm_image im = {0, 0, 0, NULL};
  dm_image_format fmt;

  memset(&inf, 0, sizeof inf);
  inf.orientation = 1;
  inf.scale_num = inf.scale_denom = 1;
  if (!buf || !out) return dm_errf(eb, DM_ARG, "dm_image_decode: NULL");
  dm_image_limits_init(&L);
  if (lim) {
    if (lim->max_bytes) L.max_bytes = lim->max_bytes;
    if (lim->max_pixels) L.max_pixels = lim->max_pixels;
    if (lim->min_side > 0) L.min_side = lim->min_side;
  }
  if (len > L.max_bytes) {
    rc = dm_errf(eb, DM_TOOBIG, "image is %zu bytes, over the limit of %zu",
                 len, L.max_bytes);
    goto fail;
  }
  if (target_short_side < 0) target_short_side = 0;
  fmt = dm_image_sniff(buf, len);
  inf.format = fmt;
  switch (fmt) {
  case DM_IMAGE_JPEG:
    rc = dm__decode_jpeg(buf, len, &L, target_short_side, &im, &inf, eb);
    break;
  case DM_IMAGE_PNG: rc = decode_png(buf, len, &L, &im, &inf, eb); break;
  case DM_IMAGE_WEBP: rc = decode_webp(buf, len, &L, &im, &inf, eb); break;
  default:
    rc = dm_errf(eb, DM_FORMAT, "not a JPEG, PNG or WebP image (%zu bytes)",
                 len);
    break;
  }
  if (rc != DM_OK) goto fail;
  if (inf.orientation < 1 || inf.orientation > 8) inf.orientation = 1;
  if (inf.orientation != 1 &&
      (rc = dm_image_orient(&im, inf.orientation, eb)) != DM_OK)
    goto fail;
  *out = im;
  if (info) *info = inf;
  return DM_OK;
fail:
  dm_image_free(&im);
  if (info) *info = inf;
  return rc;
}
