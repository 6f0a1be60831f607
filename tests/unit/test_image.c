/* Unit tests for src/image/ (decode, EXIF orientation, resize, preprocessing).
 *
 * Purpose: every refusal path of dm_image_decode (byte limit, unknown
 * format, truncation at every prefix, corrupt data, huge headers, minimum
 * size, pixel limit), the pixel formats (JPEG baseline/progressive/gray/
 * CMYK, PNG RGB/gray/16-bit/palette/alpha, WebP), DCT scaling, EXIF
 * orientations 1..8 in both byte orders and malformed EXIF, Pillow resize
 * properties, and the preprocessing geometry and tensor layout.  All test
 * images are generated here (TurboJPEG, libspng and libwebp encoders).
 * Bit-exact parity with PIL/torchvision is tested by
 * tests/integration/test_image_parity.sh.
 *
 * Invariants: plain C, no test framework; the last line is
 * `test_image: N passed, N failed`.
 * Threading: single-threaded. */
#include "dermal/image.h"
#include "image/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include <spng.h>
#include <turbojpeg.h>
#include <webp/encode.h>

/* ---- generators --------------------------------------------------------- */

/* (h, w, 3) test pattern: gradients plus a few hard edges. */
static uint8_t *pattern_rgb(int w, int h) {
  uint8_t *p = malloc((size_t)w * (size_t)h * 3);
  int x, y;
  if (!p) abort();
  for (y = 0; y < h; y++)
    for (x = 0; x < w; x++) {
      uint8_t *q = p + ((size_t)y * (size_t)w + (size_t)x) * 3;
      q[0] = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1));
      q[1] = (uint8_t)(y * 255 / (h > 1 ? h - 1 : 1));
      q[2] = (uint8_t)(((x / 8 + y / 8) & 1) ? 200 : 40);
    }
  return p;
}

/* JPEG via tjCompress2; returns a malloc'd copy. */
static uint8_t *make_jpeg(const uint8_t *px, int w, int h, int pf, int samp,
                          int quality, int flags, size_t *len) {
  tjhandle t = tjInitCompress();
  unsigned char *buf = NULL;
  unsigned long sz = 0;
  uint8_t *out = NULL;
  if (!t) abort();
  if (tjCompress2(t, px, w, 0, h, pf, &buf, &sz, samp, quality, flags) == 0) {
    out = malloc(sz);
    if (!out) abort();
    memcpy(out, buf, sz);
    *len = sz;
  } else {
    printf("tjCompress2: %s\n", tjGetErrorStr2(t));
  }
  tjFree(buf);
  tjDestroy(t);
  return out;
}

/* PNG via the libspng encoder (px in SPNG_FMT_PNG layout, host-endian). */
static uint8_t *make_png(const void *px, size_t pxlen, int w, int h,
                         int color_type, int depth, const struct spng_plte *pl,
                         const uint8_t *exif, size_t exif_len, size_t *len) {
  spng_ctx *e = spng_ctx_new(SPNG_CTX_ENCODER);
  struct spng_ihdr ih;
  uint8_t *out = NULL;
  int err = 0, r;
  if (!e) abort();
  memset(&ih, 0, sizeof ih);
  ih.width = (uint32_t)w;
  ih.height = (uint32_t)h;
  ih.bit_depth = (uint8_t)depth;
  ih.color_type = (uint8_t)color_type;
  spng_set_option(e, SPNG_ENCODE_TO_BUFFER, 1);
  spng_set_ihdr(e, &ih);
  if (pl) spng_set_plte(e, (struct spng_plte *)pl);
  if (exif) {
    struct spng_exif ex;
    ex.length = exif_len;
    ex.data = (char *)exif;
    if ((r = spng_set_exif(e, &ex)) != 0)
      printf("spng_set_exif: %s\n", spng_strerror(r));
  }
  r = spng_encode_image(e, px, pxlen, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
  if (r == 0) out = spng_get_png_buffer(e, len, &err);
  if (r != 0 || err != 0 || !out)
    printf("spng encode: %s\n", spng_strerror(r ? r : err));
  spng_ctx_free(e);
  return out;
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
  uint32_t c = 0xffffffffu;
  size_t i;
  int k;
  for (i = 0; i < n; i++) {
    c ^= p[i];
    for (k = 0; k < 8; k++)
      c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return c ^ 0xffffffffu;
}

static size_t put_chunk(uint8_t *o, const char *tag, const uint8_t *d,
                        uint32_t n) {
  uint32_t crc;
  o[0] = (uint8_t)(n >> 24);
  o[1] = (uint8_t)(n >> 16);
  o[2] = (uint8_t)(n >> 8);
  o[3] = (uint8_t)n;
  memcpy(o + 4, tag, 4);
  if (n) memcpy(o + 8, d, n);
  crc = crc32_png(o + 4, (size_t)n + 4);
  o[8 + n] = (uint8_t)(crc >> 24);
  o[9 + n] = (uint8_t)(crc >> 16);
  o[10 + n] = (uint8_t)(crc >> 8);
  o[11 + n] = (uint8_t)crc;
  return (size_t)n + 12;
}

/* EXIF block "Exif\0\0" + TIFF header + IFD0 with the given entries of
 * (tag, type, count, value). */
static size_t make_exif(uint8_t *o, int big_endian, int n,
                        const uint32_t (*ent)[4]) {
  size_t pos = 0;
  int i;
#define PUT16(v)                                                               \
  do {                                                                         \
    uint32_t v_ = (v);                                                         \
    o[pos++] = (uint8_t)(big_endian ? v_ >> 8 : v_);                           \
    o[pos++] = (uint8_t)(big_endian ? v_ : v_ >> 8);                           \
  } while (0)
#define PUT32(v)                                                               \
  do {                                                                         \
    uint32_t w_ = (v);                                                         \
    if (big_endian) {                                                          \
      PUT16(w_ >> 16);                                                         \
      PUT16(w_ & 0xffff);                                                      \
    } else {                                                                   \
      PUT16(w_ & 0xffff);                                                      \
      PUT16(w_ >> 16);                                                         \
    }                                                                          \
  } while (0)
  memcpy(o, "Exif\0\0", 6);
  pos = 6;
  o[pos++] = big_endian ? 'M' : 'I';
  o[pos++] = big_endian ? 'M' : 'I';
  PUT16(42);
  PUT32(8);
  PUT16((uint32_t)n);
  for (i = 0; i < n; i++) {
    PUT16(ent[i][0]);
    PUT16(ent[i][1]);
    PUT32(ent[i][2]);
    if (ent[i][1] == 3) {
      PUT16(ent[i][3]);
      PUT16(0);
    } else {
      PUT32(ent[i][3]);
    }
  }
  PUT32(0);
#undef PUT16
#undef PUT32
  return pos;
}

/* Inserts an APP1 segment with payload p after the SOI of jpeg. */
static uint8_t *with_app1(const uint8_t *jpg, size_t len, const uint8_t *p,
                          size_t plen, size_t *out_len) {
  uint8_t *o = malloc(len + plen + 4);
  if (!o) abort();
  memcpy(o, jpg, 2);
  o[2] = 0xff;
  o[3] = 0xe1;
  o[4] = (uint8_t)((plen + 2) >> 8);
  o[5] = (uint8_t)(plen + 2);
  memcpy(o + 6, p, plen);
  memcpy(o + 6 + plen, jpg + 2, len - 2);
  *out_len = len + plen + 4;
  return o;
}

static int same_pixels(const dm_image *a, const dm_image *b) {
  return a->w == b->w && a->h == b->h && a->c == b->c &&
         memcmp(a->px, b->px, (size_t)a->w * (size_t)a->h * (size_t)a->c) == 0;
}

static double mean_abs_diff(const uint8_t *a, const uint8_t *b, size_t n) {
  double s = 0;
  size_t i;
  for (i = 0; i < n; i++)
    s += fabs((double)a[i] - (double)b[i]);
  return n ? s / (double)n : 0;
}

/* Decodes with defaults; returns the code; out valid only on DM_OK. */
static dm_err dec(const uint8_t *buf, size_t len, const dm_image_limits *lim,
                  int target, dm_image *out, dm_image_info *info) {
  dm_errbuf eb;
  dm_err rc;
  eb.msg[0] = '\0';
  rc = dm_image_decode(buf, len, lim, target, out, info, &eb);
  if (rc != DM_OK && !eb.msg[0]) {
    printf("FAIL error %d without a message\n", (int)rc);
    tests_failed++;
  }
  return rc;
}

/* Decode that must fail with want and leave *out untouched. */
static void expect_refusal(const char *what, const uint8_t *buf, size_t len,
                           const dm_image_limits *lim, dm_err want) {
  static uint8_t sentinel;
  dm_image out;
  dm_err rc;
  out.w = -7;
  out.h = -7;
  out.c = -7;
  out.px = &sentinel;
  rc = dec(buf, len, lim, 0, &out, NULL);
  CHECK(rc == want, "%s: got %s (%d), want %s", what, dm_strerror(rc), (int)rc,
        dm_strerror(want));
  CHECK(out.w == -7 && out.h == -7 && out.c == -7 && out.px == &sentinel,
        "%s: output written on failure", what);
  if (rc == DM_OK && out.px != &sentinel) dm_image_free(&out);
}

/* ---- tests -------------------------------------------------------------- */

static void test_sniff_and_basics(void) {
  static const uint8_t jpg[] = {0xff, 0xd8, 0xff, 0xe0};
  static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  static const uint8_t webp[] = {'R', 'I', 'F', 'F', 0,   0,
                                 0,   0,   'W', 'E', 'B', 'P'};
  static const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0};
  dm_image im = {0, 0, 0, NULL};
  dm_image_limits lim;
  dm_errbuf eb;
  CHECK(dm_image_sniff(jpg, sizeof jpg) == DM_IMAGE_JPEG, "sniff jpeg");
  CHECK(dm_image_sniff(png, sizeof png) == DM_IMAGE_PNG, "sniff png");
  CHECK(dm_image_sniff(webp, sizeof webp) == DM_IMAGE_WEBP, "sniff webp");
  CHECK(dm_image_sniff(gif, sizeof gif) == DM_IMAGE_UNKNOWN, "sniff gif");
  CHECK(dm_image_sniff(jpg, 2) == DM_IMAGE_UNKNOWN, "sniff short");
  CHECK(dm_image_sniff(NULL, 10) == DM_IMAGE_UNKNOWN, "sniff NULL");
  CHECK(!strcmp(dm_image_format_name(DM_IMAGE_WEBP), "webp") &&
            !strcmp(dm_image_format_name((dm_image_format)42), "unknown"),
        "format names");
  CHECK(
      !strcmp(dm_strerror(DM_TOOBIG), "too large") &&
          !strcmp(dm_strerror(DM_IMAGE_SIZE), "image dimensions out of range"),
      "new error strings");
  dm_image_limits_init(&lim);
  CHECK(lim.max_bytes == 20u * 1024 * 1024 && lim.max_pixels == 40000000u &&
            lim.min_side == 8,
        "default limits");
  expect_refusal("gif", gif, sizeof gif, NULL, DM_FORMAT);
  expect_refusal("empty", gif, 0, NULL, DM_FORMAT);
  expect_refusal("bare jpeg signature", jpg, sizeof jpg, NULL, DM_FORMAT);
  expect_refusal("bare png signature", png, sizeof png, NULL, DM_FORMAT);
  expect_refusal("bare webp header", webp, sizeof webp, NULL, DM_FORMAT);
  CHECK(dm_image_decode(NULL, 3, NULL, 0, &im, NULL, &eb) == DM_ARG,
        "NULL buffer");
  CHECK(dm_image_decode(jpg, 3, NULL, 0, NULL, NULL, NULL) == DM_ARG,
        "NULL out, NULL errbuf");
  dm_image_free(NULL);
  dm_image_free(&im);
  CHECK(im.px == NULL, "free of a zeroed image");
}

static void test_jpeg(void) {
  const int w = 67, h = 45; /* odd sizes: partial MCUs */
  uint8_t *src = pattern_rgb(w, h), *gray, *cmyk, *jb, *jp, *jg, *jc;
  size_t lb = 0, lp = 0, lg = 0, lc = 0, i;
  dm_image a = {0, 0, 0, NULL}, b = {0, 0, 0, NULL}, g = {0, 0, 0, NULL},
           c = {0, 0, 0, NULL};
  dm_image_info info;
  dm_err rc;
  int ok;

  jb = make_jpeg(src, w, h, TJPF_RGB, TJSAMP_420, 95, 0, &lb);
  jp = make_jpeg(src, w, h, TJPF_RGB, TJSAMP_420, 95, TJFLAG_PROGRESSIVE, &lp);
  gray = malloc((size_t)w * (size_t)h);
  cmyk = malloc((size_t)w * (size_t)h * 4);
  if (!jb || !jp || !gray || !cmyk) abort();
  for (i = 0; i < (size_t)w * (size_t)h; i++) {
    gray[i] = src[3 * i + 1];
    /* stored (Adobe-inverted) CMYK: 255 = no ink; k varies */
    cmyk[4 * i + 0] = 255;
    cmyk[4 * i + 1] = 255;
    cmyk[4 * i + 2] = 255;
    cmyk[4 * i + 3] = 255;
  }
  for (i = 0; i < (size_t)w * (size_t)h / 2; i++) /* top half: full ink */
    cmyk[4 * i + 0] = cmyk[4 * i + 1] = cmyk[4 * i + 2] = cmyk[4 * i + 3] = 0;
  jg = make_jpeg(gray, w, h, TJPF_GRAY, TJSAMP_GRAY, 95, 0, &lg);
  jc = make_jpeg(cmyk, w, h, TJPF_CMYK, TJSAMP_444, 100, 0, &lc);
  if (!jg || !jc) abort();

  rc = dec(jb, lb, NULL, 0, &a, &info);
  CHECK(rc == DM_OK && a.w == w && a.h == h && a.c == 3, "baseline decode");
  if (rc == DM_OK) {
    double d = mean_abs_diff(a.px, src, (size_t)w * (size_t)h * 3);
    CHECK(d < 10.0, "baseline close to source (mean %.2f)", d);
    CHECK(info.format == DM_IMAGE_JPEG && info.width == w && info.height == h &&
              info.channels == 3 && !info.progressive &&
              info.orientation == 1 && info.scale_num == 1 &&
              info.scale_denom == 1,
          "baseline info");
  }
  rc = dec(jp, lp, NULL, 0, &b, &info);
  CHECK(rc == DM_OK && info.progressive, "progressive decode");
  /* progressive coding is lossless over the same coefficients */
  CHECK(rc == DM_OK && a.px && same_pixels(&a, &b),
        "progressive == baseline pixels");

  rc = dec(jg, lg, NULL, 0, &g, &info);
  CHECK(rc == DM_OK && info.channels == 1 && g.c == 3, "gray decode");
  if (rc == DM_OK) {
    ok = 1;
    for (i = 0; i < (size_t)w * (size_t)h; i++)
      ok &= g.px[3 * i] == g.px[3 * i + 1] && g.px[3 * i] == g.px[3 * i + 2];
    CHECK(ok, "gray replicated to RGB");
  }

  rc = dec(jc, lc, NULL, 0, &c, &info);
  CHECK(rc == DM_OK && info.channels == 4, "CMYK decode");
  if (rc == DM_OK) {
    /* PIL: stored 0 (full ink, inverted) -> black; stored 255 -> white */
    const uint8_t *top = c.px + 3 * (size_t)w * 2 + 3 * 5;
    const uint8_t *bot = c.px + 3 * (size_t)w * (size_t)(h - 2) + 3 * 5;
    CHECK(top[0] <= 2 && top[1] <= 2 && top[2] <= 2,
          "CMYK full ink black "
          "(%d %d %d)",
          top[0], top[1], top[2]);
    CHECK(bot[0] >= 253 && bot[1] >= 253 && bot[2] >= 253,
          "CMYK no ink white (%d %d %d)", bot[0], bot[1], bot[2]);
  }

  /* every proper prefix is refused, never decoded partly */
  ok = 1;
  for (i = 0; i < lb; i++) {
    dm_image t = {0, 0, 0, NULL};
    rc = dec(jb, i, NULL, 0, &t, NULL);
    if (rc != DM_FORMAT) {
      printf("  baseline prefix %zu: %s\n", i, dm_strerror(rc));
      ok = 0;
    }
    dm_image_free(&t);
  }
  CHECK(ok, "all %zu baseline prefixes -> DM_FORMAT", lb);
  ok = 1;
  for (i = 0; i < lp; i++) {
    dm_image t = {0, 0, 0, NULL};
    rc = dec(jp, i, NULL, 0, &t, NULL);
    if (rc != DM_FORMAT) {
      printf("  progressive prefix %zu: %s\n", i, dm_strerror(rc));
      ok = 0;
    }
    dm_image_free(&t);
  }
  CHECK(ok, "all %zu progressive prefixes -> DM_FORMAT", lp);
  {
    /* truncated image data with a fake EOI appended: libjpeg only warns */
    uint8_t *t = malloc(lb);
    dm_image o = {0, 0, 0, NULL};
    size_t cut = lb * 2 / 3;
    if (!t) abort();
    memcpy(t, jb, cut);
    t[cut] = 0xff;
    t[cut + 1] = 0xd9;
    CHECK(dec(t, cut + 2, NULL, 0, &o, NULL) == DM_FORMAT,
          "truncated scan + EOI -> DM_FORMAT (warning is an error)");
    dm_image_free(&o);
    free(t);
  }
  {
    /* random corruption: any outcome but a crash; failures leave nothing */
    uint8_t *t = malloc(lb);
    unsigned seed = 12345;
    int k, n_ok = 0;
    if (!t) abort();
    for (k = 0; k < 300; k++) {
      dm_image o = {0, 0, 0, NULL};
      int m;
      memcpy(t, jb, lb);
      for (m = 0; m < 1 + k % 4; m++) {
        seed = seed * 1103515245u + 12345u;
        t[2 + (seed >> 8) % (lb - 2)] ^= (uint8_t)(1u << ((seed >> 4) & 7));
      }
      if (dec(t, lb, NULL, 0, &o, NULL) == DM_OK) {
        n_ok++;
        if (o.w != w || o.h != h) tests_failed++;
      }
      dm_image_free(&o);
    }
    CHECK(1, "300 corrupted JPEGs did not crash (%d decoded)", n_ok);
    free(t);
  }
  {
    /* SOF patched to 65535x65535: refused from the header */
    uint8_t *t = malloc(lb);
    dm_image_info inf;
    dm_image o = {0, 0, 0, NULL};
    size_t p;
    if (!t) abort();
    memcpy(t, jb, lb);
    for (p = 2; p + 9 < lb; p++)
      if (t[p] == 0xff && t[p + 1] == 0xc0) break;
    t[p + 5] = t[p + 6] = t[p + 7] = t[p + 8] = 0xff;
    CHECK(dec(t, lb, NULL, 0, &o, &inf) == DM_IMAGE_SIZE &&
              inf.width == 65535 && inf.height == 65535,
          "JPEG SOF 65535x65535 -> DM_IMAGE_SIZE");
    /* the same header on a truncated file: still 422, not 415 */
    CHECK(dec(t, p + 20, NULL, 0, &o, NULL) == DM_IMAGE_SIZE,
          "truncated JPEG with a huge SOF -> DM_IMAGE_SIZE");
    t[p + 5] = 0; /* height 0 (DNL): malformed */
    t[p + 6] = 0;
    expect_refusal("JPEG height 0", t, lb, NULL, DM_FORMAT);
    free(t);
  }
  dm_image_free(&a);
  dm_image_free(&b);
  dm_image_free(&g);
  dm_image_free(&c);
  free(jb);
  free(jp);
  free(jg);
  free(jc);
  free(gray);
  free(cmyk);
  free(src);
}

static void test_dct_scaling(void) {
  const int w = 512, h = 384;
  uint8_t *src = pattern_rgb(w, h), *j;
  size_t len = 0;
  dm_image im = {0, 0, 0, NULL};
  dm_image_info info;
  dm_err rc;
  j = make_jpeg(src, w, h, TJPF_RGB, TJSAMP_420, 90, 0, &len);
  if (!j) abort();
  /* shorter side 384 must stay >= 128: 3/8 gives 144, 2/8 gives 96 */
  rc = dec(j, len, NULL, 64, &im, &info);
  CHECK(rc == DM_OK && im.w == 192 && im.h == 144 && info.scale_num == 3 &&
            info.scale_denom == 8 && info.width == 512,
        "DCT scale 3/8 for target 64 (%dx%d, %d/%d)", im.w, im.h,
        info.scale_num, info.scale_denom);
  dm_image_free(&im);
  rc = dec(j, len, NULL, 96, &im, &info);
  CHECK(rc == DM_OK && im.w == 256 && im.h == 192 && info.scale_num == 1 &&
            info.scale_denom == 2,
        "DCT scale 1/2 for target 96");
  dm_image_free(&im);
  rc = dec(j, len, NULL, 200, &im, &info); /* 2 * 200 > 384: no scaling */
  CHECK(rc == DM_OK && im.w == 512 && info.scale_num == info.scale_denom,
        "no DCT scaling when the short side is < 2x target");
  dm_image_free(&im);
  rc = dec(j, len, NULL, 0, &im, &info);
  CHECK(rc == DM_OK && im.w == 512 && im.h == 384, "target 0: full size");
  dm_image_free(&im);
  free(j);
  free(src);
}

static void test_limits(void) {
  const int w = 64, h = 48;
  uint8_t *src = pattern_rgb(w, h), *png, *tiny_png;
  size_t len = 0, tlen = 0;
  dm_image_limits lim;
  dm_image im = {0, 0, 0, NULL};
  uint8_t tiny[4 * 4 * 3];
  png = make_png(src, (size_t)w * (size_t)h * 3, w, h,
                 SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, NULL, 0, &len);
  memset(tiny, 99, sizeof tiny);
  tiny_png = make_png(tiny, sizeof tiny, 4, 4, SPNG_COLOR_TYPE_TRUECOLOR, 8,
                      NULL, NULL, 0, &tlen);
  if (!png || !tiny_png) abort();

  dm_image_limits_init(&lim);
  lim.max_bytes = len - 1;
  expect_refusal("byte limit", png, len, &lim, DM_TOOBIG);
  lim.max_bytes = len;
  CHECK(dec(png, len, &lim, 0, &im, NULL) == DM_OK, "exactly max_bytes ok");
  dm_image_free(&im);
  {
    /* the byte limit comes first, even for garbage */
    static const uint8_t junk[64] = {1, 2, 3};
    lim.max_bytes = 10;
    expect_refusal("byte limit before sniffing", junk, sizeof junk, &lim,
                   DM_TOOBIG);
  }
  dm_image_limits_init(&lim);
  lim.max_pixels = (uint64_t)w * (uint64_t)h - 1;
  expect_refusal("pixel limit", png, len, &lim, DM_IMAGE_SIZE);
  lim.max_pixels = (uint64_t)w * (uint64_t)h;
  CHECK(dec(png, len, &lim, 0, &im, NULL) == DM_OK, "exactly max_pixels ok");
  dm_image_free(&im);

  expect_refusal("4x4 below default min side 8", tiny_png, tlen, NULL,
                 DM_IMAGE_SIZE);
  dm_image_limits_init(&lim);
  lim.min_side = 4;
  CHECK(dec(tiny_png, tlen, &lim, 0, &im, NULL) == DM_OK && im.w == 4 &&
            im.px[0] == 99,
        "4x4 with min side 4");
  dm_image_free(&im);
  {
    /* zero fields mean defaults */
    dm_image_limits z;
    memset(&z, 0, sizeof z);
    expect_refusal("zeroed limits = defaults", tiny_png, tlen, &z,
                   DM_IMAGE_SIZE);
  }
  {
    /* PNG IHDR 65535x65535 (with a token IDAT): refused from the header */
    uint8_t f[128],
        ihdr[13] = {0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 8, 2, 0, 0, 0};
    uint8_t idat[8] = {0x78, 0x9c, 0x03, 0x00, 0, 0, 0, 1};
    size_t n = 8;
    dm_image_info inf;
    memcpy(f, "\x89PNG\r\n\x1a\n", 8);
    n += put_chunk(f + n, "IHDR", ihdr, 13);
    n += put_chunk(f + n, "IDAT", idat, 8);
    n += put_chunk(f + n, "IEND", NULL, 0);
    CHECK(dec(f, n, NULL, 0, &im, &inf) == DM_IMAGE_SIZE &&
              inf.width == 65535 && inf.format == DM_IMAGE_PNG,
          "PNG 65535x65535 -> DM_IMAGE_SIZE");
    /* 2^31-1 wide: beyond libspng's side limit we set */
    ihdr[0] = 0x7f;
    ihdr[1] = ihdr[2] = ihdr[3] = 0xff;
    ihdr[4] = ihdr[5] = ihdr[6] = 0;
    ihdr[7] = 8;
    n = 8;
    n += put_chunk(f + n, "IHDR", ihdr, 13);
    n += put_chunk(f + n, "IDAT", idat, 8);
    n += put_chunk(f + n, "IEND", NULL, 0);
    expect_refusal("PNG 2147483647x8", f, n, NULL, DM_IMAGE_SIZE);
  }
  {
    /* WebP VP8X canvas 16384x16384 (24-bit fields store size - 1) */
    uint8_t f[64];
    size_t n = 0;
    memcpy(f, "RIFF", 4);
    f[4] = 4 + 18 + 8 + 10; /* "WEBP" + VP8X chunk + an empty VP8L chunk */
    f[5] = f[6] = f[7] = 0;
    memcpy(f + 8, "WEBPVP8X", 8);
    f[16] = 10;
    f[17] = f[18] = f[19] = 0;
    memset(f + 20, 0, 10);
    f[24] = 0xff; /* width - 1 = 0x003fff */
    f[25] = 0x3f;
    f[27] = 0xff; /* height - 1 */
    f[28] = 0x3f;
    n = 30;
    memcpy(f + n, "VP8L", 4);
    memset(f + n + 4, 0, 4);
    n += 8;
    f[4] = (uint8_t)(n - 8);
    expect_refusal("WebP 16384x16384", f, n, NULL, DM_IMAGE_SIZE);
  }
  free(png);
  free(tiny_png);
  free(src);
}

static void test_png(void) {
  const int w = 37, h = 21;
  uint8_t *src = pattern_rgb(w, h), *p;
  uint8_t g8[37 * 21], ga[37 * 21 * 2], rgba[37 * 21 * 4], idx[37 * 21];
  uint16_t g16[37 * 21], rgb16[37 * 21 * 3];
  struct spng_plte pl;
  size_t len = 0, i, n = (size_t)w * (size_t)h;
  dm_image im = {0, 0, 0, NULL};
  dm_image_info info;
  int ok;

  p = make_png(src, n * 3, w, h, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, NULL, 0,
               &len);
  CHECK(p && dec(p, len, NULL, 0, &im, &info) == DM_OK &&
            !memcmp(im.px, src, n * 3) && info.channels == 3,
        "PNG RGB8 exact");
  dm_image_free(&im);
  if (p) {
    /* prefixes: refused while image data is missing; a file cut only in
     * the last IDAT's CRC or IEND holds the whole (Adler-32 checked) zlib
     * stream and decodes completely, as PIL does too: never partly. */
    ok = 1;
    for (i = 0; i < len; i++) {
      dm_image t = {0, 0, 0, NULL};
      dm_err rc = dec(p, i, NULL, 0, &t, NULL);
      if (rc != DM_FORMAT &&
          (rc != DM_OK || i + 16 < len || memcmp(t.px, src, n * 3) != 0)) {
        printf("  PNG prefix %zu of %zu: %s\n", i, len, dm_strerror(rc));
        ok = 0;
      }
      dm_image_free(&t);
    }
    CHECK(ok, "PNG prefixes -> DM_FORMAT (or complete)");
    /* a flipped bit in IDAT: CRC error */
    p[len - 20] ^= 0x10;
    expect_refusal("PNG bad CRC", p, len, NULL, DM_FORMAT);
    free(p);
  }
  for (i = 0; i < n; i++) {
    g8[i] = src[3 * i];
    ga[2 * i] = src[3 * i + 1];
    ga[2 * i + 1] = (uint8_t)i;
    memcpy(rgba + 4 * i, src + 3 * i, 3);
    rgba[4 * i + 3] = (uint8_t)(i * 7);
    g16[i] = (uint16_t)(src[3 * i + 2] * 256 + (i & 0xff));
    rgb16[3 * i] = (uint16_t)(src[3 * i] * 256 + 255);
    rgb16[3 * i + 1] = (uint16_t)(src[3 * i + 1] * 256 + 128);
    rgb16[3 * i + 2] = (uint16_t)(src[3 * i + 2] * 256);
    idx[i] = (uint8_t)(i % 5);
  }
  p = make_png(g8, sizeof g8, w, h, SPNG_COLOR_TYPE_GRAYSCALE, 8, NULL, NULL, 0,
               &len);
  ok = p && dec(p, len, NULL, 0, &im, &info) == DM_OK && info.channels == 1;
  for (i = 0; ok && i < n; i++)
    ok = im.px[3 * i] == g8[i] && im.px[3 * i + 1] == g8[i] &&
         im.px[3 * i + 2] == g8[i];
  CHECK(ok, "PNG gray8 replicated");
  dm_image_free(&im);
  free(p);
  p = make_png(ga, sizeof ga, w, h, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 8, NULL,
               NULL, 0, &len);
  ok = p && dec(p, len, NULL, 0, &im, &info) == DM_OK && info.channels == 2;
  for (i = 0; ok && i < n; i++)
    ok = im.px[3 * i] == ga[2 * i] && im.px[3 * i + 2] == ga[2 * i];
  CHECK(ok, "PNG gray+alpha: alpha dropped");
  dm_image_free(&im);
  free(p);
  p = make_png(rgba, sizeof rgba, w, h, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8,
               NULL, NULL, 0, &len);
  CHECK(p && dec(p, len, NULL, 0, &im, &info) == DM_OK &&
            !memcmp(im.px, src, n * 3) && info.channels == 4,
        "PNG RGBA: alpha dropped, not composited");
  dm_image_free(&im);
  free(p);
  p = make_png(g16, sizeof g16, w, h, SPNG_COLOR_TYPE_GRAYSCALE, 16, NULL, NULL,
               0, &len);
  ok = p && dec(p, len, NULL, 0, &im, &info) == DM_OK;
  for (i = 0; ok && i < n; i++)
    ok = im.px[3 * i + 1] == (g16[i] >> 8);
  CHECK(ok, "PNG gray16: high byte");
  dm_image_free(&im);
  free(p);
  p = make_png(rgb16, sizeof rgb16, w, h, SPNG_COLOR_TYPE_TRUECOLOR, 16, NULL,
               NULL, 0, &len);
  CHECK(p && dec(p, len, NULL, 0, &im, &info) == DM_OK &&
            !memcmp(im.px, src, n * 3),
        "PNG RGB16: high byte (as PIL)");
  dm_image_free(&im);
  free(p);
  memset(&pl, 0, sizeof pl);
  pl.n_entries = 5;
  for (i = 0; i < 5; i++) {
    pl.entries[i].red = (uint8_t)(10 * i);
    pl.entries[i].green = (uint8_t)(100 + i);
    pl.entries[i].blue = (uint8_t)(250 - i);
  }
  p = make_png(idx, sizeof idx, w, h, SPNG_COLOR_TYPE_INDEXED, 8, &pl, NULL, 0,
               &len);
  ok = p && dec(p, len, NULL, 0, &im, &info) == DM_OK;
  for (i = 0; ok && i < n; i++)
    ok = im.px[3 * i] == 10 * (i % 5) && im.px[3 * i + 1] == 100 + i % 5 &&
         im.px[3 * i + 2] == 250 - i % 5;
  CHECK(ok, "PNG palette expanded");
  dm_image_free(&im);
  free(p);
  free(src);
}

static void test_webp(void) {
  const int w = 40, h = 30;
  uint8_t *src = pattern_rgb(w, h), *enc = NULL, *enc2 = NULL;
  size_t len, len2, i;
  dm_image im = {0, 0, 0, NULL};
  dm_image_info info;
  int ok;
  len = WebPEncodeLosslessRGB(src, w, h, w * 3, &enc);
  CHECK(len > 0 && dec(enc, len, NULL, 0, &im, &info) == DM_OK &&
            info.format == DM_IMAGE_WEBP &&
            !memcmp(im.px, src, (size_t)w * (size_t)h * 3),
        "WebP lossless exact");
  dm_image_free(&im);
  ok = 1;
  for (i = 0; i < len; i++) {
    dm_image t = {0, 0, 0, NULL};
    dm_err rc = dec(enc, i, NULL, 0, &t, NULL);
    if (rc != DM_FORMAT) {
      printf("  WebP prefix %zu: %s\n", i, dm_strerror(rc));
      ok = 0;
    }
    dm_image_free(&t);
  }
  CHECK(ok, "all %zu WebP lossless prefixes -> DM_FORMAT", len);
  len2 = WebPEncodeRGB(src, w, h, w * 3, 90.0f, &enc2);
  CHECK(len2 > 0 && dec(enc2, len2, NULL, 0, &im, &info) == DM_OK &&
            mean_abs_diff(im.px, src, (size_t)w * (size_t)h * 3) < 8.0,
        "WebP lossy close to source");
  dm_image_free(&im);
  ok = 1;
  for (i = 0; i < len2; i++) {
    dm_image t = {0, 0, 0, NULL};
    dm_err rc = dec(enc2, i, NULL, 0, &t, NULL);
    if (rc != DM_FORMAT) {
      printf("  WebP lossy prefix %zu: %s\n", i, dm_strerror(rc));
      ok = 0;
    }
    dm_image_free(&t);
  }
  CHECK(ok, "all %zu WebP lossy prefixes -> DM_FORMAT", len2);
  WebPFree(enc);
  WebPFree(enc2);
  free(src);
}

/* Expected upright position, per PIL, of a 3x2 image "abc/def". */
static void test_orient_direct(void) {
  static const char *want[9] = {"",       "abcdef", "cbafed",
                                "fedcba", "defabc", "adbecf",
                                "daebfc", "fcebda", "cfbead"};
  static const int ww[9] = {0, 3, 3, 3, 3, 2, 2, 2, 2};
  int o;
  for (o = 1; o <= 8; o++) {
    uint8_t px[6];
    dm_image im;
    dm_errbuf eb;
    memcpy(px, "abcdef", 6);
    im.w = 3;
    im.h = 2;
    im.c = 1;
    im.px = malloc(6);
    if (!im.px) abort();
    memcpy(im.px, px, 6);
    CHECK(dm_image_orient(&im, o, &eb) == DM_OK && im.w == ww[o] &&
              im.h == 6 / ww[o] && !memcmp(im.px, want[o], 6),
          "orientation %d: got %.6s", o, (const char *)im.px);
    dm_image_free(&im);
  }
  {
    dm_image im = {0, 0, 0, NULL};
    CHECK(dm_image_orient(&im, 3, NULL) == DM_ARG, "orient empty image");
  }
}

static void test_exif(void) {
  const int w = 24, h = 16;
  uint8_t *src = pattern_rgb(w, h), *j, *jx, blk[256];
  size_t len = 0, lx = 0, bl;
  dm_image plain = {0, 0, 0, NULL};
  int o, be;
  j = make_jpeg(src, w, h, TJPF_RGB, TJSAMP_444, 100, 0, &len);
  if (!j || dec(j, len, NULL, 0, &plain, NULL) != DM_OK) abort();
  for (be = 0; be < 2; be++)
    for (o = 1; o <= 8; o++) {
      uint32_t e[2][4] = {{0x010f, 2, 4, 0x41414141u}, {0x0112, 3, 1, 0}};
      dm_image got = {0, 0, 0, NULL}, want = {0, 0, 0, NULL};
      dm_image_info info;
      e[1][3] = (uint32_t)o;
      bl = make_exif(blk, be, 2, (const uint32_t(*)[4])e);
      jx = with_app1(j, len, blk, bl, &lx);
      want.w = plain.w;
      want.h = plain.h;
      want.c = 3;
      want.px = malloc((size_t)w * (size_t)h * 3);
      if (!want.px) abort();
      memcpy(want.px, plain.px, (size_t)w * (size_t)h * 3);
      dm_image_orient(&want, o, NULL);
      CHECK(dec(jx, lx, NULL, 0, &got, &info) == DM_OK &&
                info.orientation == o && same_pixels(&got, &want),
            "EXIF orientation %d (%s)", o, be ? "MM" : "II");
      dm_image_free(&got);
      dm_image_free(&want);
      free(jx);
    }
  {
    /* orientation 6 as LONG; last entry wins; bad values ignored */
    uint32_t e1[1][4] = {{0x0112, 4, 1, 6}};
    uint32_t e2[2][4] = {{0x0112, 3, 1, 3}, {0x0112, 3, 1, 8}};
    uint32_t e3[1][4] = {{0x0112, 3, 1, 9}};
    uint32_t e4[1][4] = {{0x0112, 3, 2, 6}};
    uint32_t e5[1][4] = {{0x0112, 2, 1, 6}};
    bl = make_exif(blk, 0, 1, (const uint32_t(*)[4])e1);
    CHECK(dm__exif_orientation(blk, bl) == 6, "EXIF LONG orientation");
    bl = make_exif(blk, 1, 2, (const uint32_t(*)[4])e2);
    CHECK(dm__exif_orientation(blk, bl) == 8, "EXIF last entry wins");
    CHECK(dm__exif_orientation(blk + 6, bl - 6) == 8,
          "EXIF without the Exif\\0\\0 prefix (PNG eXIf, WebP)");
    bl = make_exif(blk, 0, 1, (const uint32_t(*)[4])e3);
    CHECK(dm__exif_orientation(blk, bl) == 1, "EXIF value 9 ignored");
    bl = make_exif(blk, 0, 1, (const uint32_t(*)[4])e4);
    CHECK(dm__exif_orientation(blk, bl) == 1, "EXIF count 2 ignored");
    bl = make_exif(blk, 0, 1, (const uint32_t(*)[4])e5);
    CHECK(dm__exif_orientation(blk, bl) == 1, "EXIF ASCII type ignored");
    bl = make_exif(blk, 0, 1, (const uint32_t(*)[4])e1);
    {
      size_t k;
      int ok = 1;
      /* cut before the end of the entry (6 + 8 + 2 + 12 bytes): no
       * rotation; after it (next-IFD offset missing) the entry counts */
      for (k = 0; k < bl; k++)
        ok &= dm__exif_orientation(blk, k) == (k < 28 ? 1 : 6);
      CHECK(ok, "truncated EXIF blocks");
    }
    blk[10] = 0xf0; /* IFD0 offset far outside */
    CHECK(dm__exif_orientation(blk, bl) == 1, "EXIF IFD offset out of range");
    blk[10] = 8;
    blk[14] = 0xff; /* entry count 0xffff... with 1 real entry */
    blk[15] = 0xff;
    CHECK(dm__exif_orientation(blk, bl) == 6, "EXIF count beyond data");
    memcpy(blk + 6, "XX", 2);
    CHECK(dm__exif_orientation(blk, bl) == 1, "EXIF bad byte order");
    CHECK(dm__exif_orientation(NULL, 0) == 1, "EXIF NULL");
    /* an image with a garbage APP1 Exif still decodes, unrotated */
    memcpy(blk, "Exif\0\0garbage", 13);
    jx = with_app1(j, len, blk, 13, &lx);
    {
      dm_image got = {0, 0, 0, NULL};
      dm_image_info info;
      CHECK(dec(jx, lx, NULL, 0, &got, &info) == DM_OK &&
                info.orientation == 1 && same_pixels(&got, &plain),
            "garbage EXIF ignored");
      dm_image_free(&got);
    }
    free(jx);
  }
  {
    /* PNG eXIf chunk (raw TIFF, no prefix) */
    uint32_t e[1][4] = {{0x0112, 3, 1, 6}};
    size_t pl = 0;
    uint8_t *p;
    dm_image got = {0, 0, 0, NULL};
    dm_image_info info;
    bl = make_exif(blk, 1, 1, (const uint32_t(*)[4])e);
    p = make_png(src, (size_t)w * (size_t)h * 3, w, h,
                 SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, blk + 6, bl - 6, &pl);
    CHECK(p && dec(p, pl, NULL, 0, &got, &info) == DM_OK &&
              info.orientation == 6 && got.w == h && got.h == w,
          "PNG eXIf orientation 6");
    dm_image_free(&got);
    free(p);
  }
  dm_image_free(&plain);
  free(j);
  free(src);
}

static void test_resize(void) {
  static const int sizes[][2] = {{1, 1},   {7, 5},    {64, 48},  {33, 97},
                                 {200, 3}, {128, 96}, {500, 400}};
  const int w = 64, h = 48;
  dm_image src = {0, 0, 0, NULL}, out = {0, 0, 0, NULL};
  dm_errbuf eb;
  size_t k, i;
  int ok;
  src.w = w;
  src.h = h;
  src.c = 3;
  src.px = malloc((size_t)w * (size_t)h * 3);
  if (!src.px) abort();
  for (i = 0; i < (size_t)w * (size_t)h; i++) {
    src.px[3 * i] = 17;
    src.px[3 * i + 1] = 200;
    src.px[3 * i + 2] = 255;
  }
  for (k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    ok = dm_image_resize(&src, sizes[k][0], sizes[k][1], &out, &eb) == DM_OK;
    for (i = 0; ok && i < (size_t)out.w * (size_t)out.h; i++)
      ok = out.px[3 * i] == 17 && out.px[3 * i + 1] == 200 &&
           out.px[3 * i + 2] == 255;
    CHECK(ok, "constant image stays constant at %dx%d", sizes[k][0],
          sizes[k][1]);
    dm_image_free(&out);
  }
  free(src.px);
  src.px = pattern_rgb(w, h);
  CHECK(dm_image_resize(&src, w, h, &out, &eb) == DM_OK &&
            same_pixels(&src, &out),
        "resize to the same size is the identity");
  dm_image_free(&out);
  {
    /* window == the same window of the full resize */
    dm_image full = {0, 0, 0, NULL};
    uint8_t win[20 * 9 * 3];
    int y;
    ok = dm_image_resize(&src, 41, 30, &full, &eb) == DM_OK &&
         dm__resize_window(src.px, w, h, 3, 41, 30, 13, 17, 20, 9, win, &eb) ==
             DM_OK;
    for (y = 0; ok && y < 9; y++)
      ok = !memcmp(win + (size_t)y * 20 * 3,
                   full.px + ((size_t)(17 + y) * 41 + 13) * 3, 20 * 3);
    CHECK(ok, "resize window equals the full resize");
    ok = dm__resize_window(src.px, w, h, 3, 41, 30, 30, 0, 20, 9, win, &eb) ==
         DM_ARG;
    CHECK(ok, "window outside the output refused");
    dm_image_free(&full);
  }
  {
    /* mirror symmetry: resizing a mirrored image gives the mirror */
    dm_image m = {0, 0, 0, NULL}, a = {0, 0, 0, NULL}, b = {0, 0, 0, NULL};
    int x, y, c;
    m.w = w;
    m.h = h;
    m.c = 3;
    m.px = malloc((size_t)w * (size_t)h * 3);
    if (!m.px) abort();
    for (y = 0; y < h; y++)
      for (x = 0; x < w; x++)
        memcpy(m.px + ((size_t)y * (size_t)w + (size_t)x) * 3,
               src.px + ((size_t)y * (size_t)w + (size_t)(w - 1 - x)) * 3, 3);
    ok = dm_image_resize(&src, 23, 17, &a, &eb) == DM_OK &&
         dm_image_resize(&m, 23, 17, &b, &eb) == DM_OK;
    for (y = 0; ok && y < 17; y++)
      for (x = 0; ok && x < 23; x++)
        for (c = 0; ok && c < 3; c++)
          ok = a.px[((size_t)y * 23 + (size_t)x) * 3 + (size_t)c] ==
               b.px[((size_t)y * 23 + (size_t)(22 - x)) * 3 + (size_t)c];
    CHECK(ok, "resize commutes with a horizontal mirror");
    dm_image_free(&m);
    dm_image_free(&a);
    dm_image_free(&b);
  }
  {
    /* 2:1 downscale of alternating 0/255 columns: inside, Pillow's taps
     * are 1/8, 3/8, 3/8, 1/8 (support 2), 127.5 rounds up to 128; the
     * borders cut the filter and renormalise. */
    dm_image s2 = {0, 0, 0, NULL}, o2 = {0, 0, 0, NULL};
    int x;
    s2.w = 16;
    s2.h = 1;
    s2.c = 1;
    s2.px = malloc(16);
    if (!s2.px) abort();
    for (x = 0; x < 16; x++)
      s2.px[x] = (uint8_t)((x & 1) ? 255 : 0);
    ok = dm_image_resize(&s2, 8, 1, &o2, &eb) == DM_OK;
    for (x = 1; ok && x < 7; x++)
      ok = o2.px[x] == 128;
    CHECK(ok, "2:1 bilinear of 0/255 stripes is 128 inside (%d %d %d)",
          o2.px ? o2.px[0] : -1, o2.px ? o2.px[1] : -1, o2.px ? o2.px[7] : -1);
    dm_image_free(&s2);
    dm_image_free(&o2);
  }
  CHECK(dm_image_resize(&src, 0, 5, &out, &eb) == DM_ARG, "resize to 0");
  dm_image_free(&src);
}

static void test_preproc(void) {
  dm_preproc p;
  dm_preproc_geom g;
  dm_errbuf eb;
  dm_image im = {0, 0, 0, NULL};
  float *t, *t2;
  size_t i, n = 3 * 224 * 224;
  int ok;

  dm_preproc_init(&p);
  CHECK(p.size_h == 224 && p.size_w == 224 && p.resize == 256 &&
            p.resize_mode == DM_RESIZE_SHORTER_CROP && !p.bgr && !p.nhwc &&
            p.scale == 1.0f / 255.0f && p.mean[0] == 0.485f &&
            p.std[2] == 0.225f,
        "preproc defaults");
  /* HAM10000 600x450: 341x256, left = round(58.5) = 58 (half to even) */
  CHECK(dm_preproc_geometry(&p, 600, 450, &g, &eb) == DM_OK &&
            g.resized_w == 341 && g.resized_h == 256 && g.crop_x == 58 &&
            g.crop_y == 16,
        "geometry 600x450 (%dx%d +%d+%d)", g.resized_w, g.resized_h, g.crop_x,
        g.crop_y);
  CHECK(dm_preproc_geometry(&p, 450, 600, &g, &eb) == DM_OK &&
            g.resized_w == 256 && g.resized_h == 341 && g.crop_x == 16 &&
            g.crop_y == 58,
        "geometry portrait");
  /* 1000x333: long side int(256 * 1000 / 333) = 768 */
  CHECK(dm_preproc_geometry(&p, 1000, 333, &g, &eb) == DM_OK &&
            g.resized_w == 768 && g.crop_x == 272,
        "geometry truncation (%d, %d)", g.resized_w, g.crop_x);
  p.resize = 200; /* crop 224 > 200: zero padding 12 before */
  CHECK(dm_preproc_geometry(&p, 300, 200, &g, &eb) == DM_OK &&
            g.resized_w == 300 && g.resized_h == 200 && g.crop_x == 38 &&
            g.crop_y == -12,
        "geometry with padding (%d, %d)", g.crop_x, g.crop_y);
  p.resize_mode = DM_RESIZE_DIRECT;
  CHECK(dm_preproc_geometry(&p, 300, 200, &g, &eb) == DM_OK &&
            g.resized_w == 224 && g.resized_h == 224 && g.crop_x == 0,
        "geometry direct");
  p.resize_mode = 7;
  CHECK(dm_preproc_geometry(&p, 300, 200, &g, &eb) == DM_ARG,
        "unknown resize mode");
  dm_preproc_init(&p);
  p.std[1] = 0.0f;
  CHECK(dm_preproc_geometry(&p, 300, 200, &g, &eb) == DM_ARG, "std 0");
  dm_preproc_init(&p);
  p.size_w = 0;
  CHECK(dm_preproc_geometry(&p, 300, 200, &g, &eb) == DM_ARG, "size 0");
  dm_preproc_init(&p);
  CHECK(dm_preproc_geometry(&p, 8, 40000000, &g, &eb) == DM_OK &&
            g.resized_h == 1280000000,
        "extreme aspect ratio");
  CHECK(dm_preproc_geometry(&p, 1, 40000000, &g, &eb) == DM_RANGE,
        "resized side beyond INT_MAX");

  t = malloc(n * sizeof *t);
  t2 = malloc(n * sizeof *t2);
  if (!t || !t2) abort();
  /* constant image: every element is (v/255 - mean) / std of its channel */
  im.w = 300;
  im.h = 200;
  im.c = 3;
  im.px = malloc(300 * 200 * 3);
  if (!im.px) abort();
  for (i = 0; i < 300 * 200; i++) {
    im.px[3 * i] = 10;
    im.px[3 * i + 1] = 128;
    im.px[3 * i + 2] = 250;
  }
  ok = dm_image_to_tensor(&im, &p, t, &eb) == DM_OK;
  for (i = 0; ok && i < n; i++) {
    int c = (int)(i / (224 * 224));
    float v = c == 0 ? 10.0f : c == 1 ? 128.0f : 250.0f;
    ok = t[i] == (v / 255.0f - p.mean[c]) / p.std[c];
  }
  CHECK(ok, "constant image -> constant normalised planes (NCHW)");
  p.nhwc = true;
  ok = dm_image_to_tensor(&im, &p, t2, &eb) == DM_OK;
  for (i = 0; ok && i < 224 * 224; i++)
    ok = t2[3 * i] == t[i] && t2[3 * i + 1] == t[224 * 224 + i] &&
         t2[3 * i + 2] == t[2 * 224 * 224 + i];
  CHECK(ok, "NHWC is the transpose of NCHW");
  p.nhwc = false;
  p.bgr = true;
  p.mean[0] = p.mean[1] = p.mean[2] = 0.0f;
  p.std[0] = p.std[1] = p.std[2] = 1.0f;
  ok = dm_image_to_tensor(&im, &p, t2, &eb) == DM_OK &&
       t2[0] == 250.0f / 255.0f && t2[2 * 224 * 224] == 10.0f / 255.0f;
  CHECK(ok, "BGR puts blue first");
  p.bgr = false;
  p.scale = 1.0f;
  ok = dm_image_to_tensor(&im, &p, t2, &eb) == DM_OK && t2[0] == 10.0f &&
       t2[224 * 224] == 128.0f;
  CHECK(ok, "scale 1 keeps 0..255");
  {
    /* padding: resize 200 -> 300x200, crop 224: rows 0..11 are zero */
    dm_preproc q;
    dm_preproc_init(&q);
    q.resize = 200;
    q.mean[0] = q.mean[1] = q.mean[2] = 0.0f;
    q.std[0] = q.std[1] = q.std[2] = 1.0f;
    ok = dm_image_to_tensor(&im, &q, t2, &eb) == DM_OK;
    CHECK(ok && t2[0] == 0.0f && t2[11 * 224 + 5] == 0.0f &&
              t2[12 * 224 + 5] == 10.0f / 255.0f &&
              t2[211 * 224 + 5] == 10.0f / 255.0f && t2[212 * 224 + 5] == 0.0f,
          "zero padding when the crop exceeds the image");
  }
  im.c = 4;
  CHECK(dm_image_to_tensor(&im, &p, t2, &eb) == DM_ARG, "tensor needs c=3");
  dm_image_free(&im);
  free(t);
  free(t2);
}

int main(void) {
  test_sniff_and_basics();
  test_jpeg();
  test_dct_scaling();
  test_limits();
  test_png();
  test_webp();
  test_orient_direct();
  test_exif();
  test_resize();
  test_preproc();
  printf("test_image: %d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed ? 1 : 0;
}
