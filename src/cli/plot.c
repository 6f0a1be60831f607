/* plot.c: draws a confusion matrix into an RGB buffer and writes it as PNG
 * with libspng.  Text uses a built-in 3x5 pixel font (digits, lower-case
 * letters, a few signs) scaled 3x, so no font library is needed.
 * Reentrant. */
#include "plot.h"

#include <spng.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 3x5 glyphs: 5 rows of 3 bits, MSB = left column. */
static const struct {
  char c;
  uint8_t rows[5];
} font[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}},
    {'3', {7, 1, 7, 1, 7}}, {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}},
    {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}}, {'8', {7, 5, 7, 5, 7}},
    {'9', {7, 5, 7, 1, 7}}, {'a', {2, 5, 7, 5, 5}}, {'b', {6, 5, 6, 5, 6}},
    {'c', {7, 4, 4, 4, 7}}, {'d', {6, 5, 5, 5, 6}}, {'e', {7, 4, 6, 4, 7}},
    {'f', {7, 4, 6, 4, 4}}, {'g', {7, 4, 5, 5, 7}}, {'h', {5, 5, 7, 5, 5}},
    {'i', {7, 2, 2, 2, 7}}, {'j', {1, 1, 1, 5, 7}}, {'k', {5, 5, 6, 5, 5}},
    {'l', {4, 4, 4, 4, 7}}, {'m', {5, 7, 7, 5, 5}}, {'n', {6, 5, 5, 5, 5}},
    {'o', {7, 5, 5, 5, 7}}, {'p', {7, 5, 7, 4, 4}}, {'q', {7, 5, 5, 7, 1}},
    {'r', {6, 5, 6, 5, 5}}, {'s', {7, 4, 7, 1, 7}}, {'t', {7, 2, 2, 2, 2}},
    {'u', {5, 5, 5, 5, 7}}, {'v', {5, 5, 5, 5, 2}}, {'w', {5, 5, 7, 7, 5}},
    {'x', {5, 5, 2, 5, 5}}, {'y', {5, 5, 7, 2, 2}}, {'z', {7, 1, 2, 4, 7}},
    {'-', {0, 0, 7, 0, 0}}, {'_', {0, 0, 0, 0, 7}}, {'.', {0, 0, 0, 0, 2}},
};

enum { S = 3, GW = 4 * S, CELL = 64, MARGIN = 110 };

typedef struct canvas {
  int w, h;
  uint8_t *px;
} canvas;

static void fill(canvas *c, int x0, int y0, int w, int h,
                 const uint8_t rgb[3]) {
  for (int y = y0; y < y0 + h; y++)
    for (int x = x0; x < x0 + w; x++)
      if (x >= 0 && y >= 0 && x < c->w && y < c->h)
        memcpy(c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3, rgb, 3);
}

static void text(canvas *c, int x, int y, const char *s, const uint8_t rgb[3]) {
  for (; *s; s++, x += GW) {
    char ch = (char)(*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s);
    for (size_t g = 0; g < sizeof font / sizeof font[0]; g++) {
      if (font[g].c != ch) continue;
      for (int r = 0; r < 5; r++)
        for (int b = 0; b < 3; b++)
          if (font[g].rows[r] & (4 >> b))
            fill(c, x + b * S, y + r * S, S, S, rgb);
    }
  }
}

int dm_cli_plot_confusion(const char *path, const char *const *labels, size_t K,
                          const size_t *conf, char *err, size_t errlen) {
  if (K == 0 || K > 64) {
    snprintf(err, errlen, "cannot plot %zu classes (1..64)", K);
    return -1;
  }
  canvas c;
  c.w = MARGIN + (int)K * CELL + 20;
  c.h = MARGIN + (int)K * CELL + 20;
  c.px = malloc((size_t)c.w * (size_t)c.h * 3);
  if (!c.px) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  static const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0},
                       grey[3] = {90, 90, 90};
  fill(&c, 0, 0, c.w, c.h, white);
  text(&c, MARGIN, 20, "predicted", grey);
  text(&c, 8, 20, "true", grey);
  for (size_t t = 0; t < K; t++) {
    size_t row = 0;
    for (size_t p = 0; p < K; p++)
      row += conf[t * K + p];
    char lab[9];
    snprintf(lab, sizeof lab, "%s", labels[t]);
    text(&c, 8, MARGIN + (int)t * CELL + CELL / 2 - 7, lab, black);
    text(&c, MARGIN + (int)t * CELL + 4, MARGIN - 30, lab, black);
    for (size_t p = 0; p < K; p++) {
      double f = row ? (double)conf[t * K + p] / (double)row : 0;
      /* white -> dark blue */
      uint8_t rgb[3] = {(uint8_t)(255 - 225 * f), (uint8_t)(255 - 185 * f),
                        (uint8_t)(255 - 105 * f)};
      int x = MARGIN + (int)p * CELL, y = MARGIN + (int)t * CELL;
      fill(&c, x, y, CELL - 2, CELL - 2, rgb);
      char num[24];
      snprintf(num, sizeof num, "%zu", conf[t * K + p]);
      int tw = (int)strlen(num) * GW;
      text(&c, x + (CELL - tw) / 2, y + CELL / 2 - 8, num,
           f > 0.5 ? white : black);
    }
  }
  int rc = -1;
  FILE *fp = fopen(path, "wb");
  spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
  if (!fp || !ctx) {
    snprintf(err, errlen, "cannot open for writing");
    goto out;
  }
  struct spng_ihdr ihdr = {0};
  ihdr.width = (uint32_t)c.w;
  ihdr.height = (uint32_t)c.h;
  ihdr.bit_depth = 8;
  ihdr.color_type = SPNG_COLOR_TYPE_TRUECOLOR;
  int e;
  if ((e = spng_set_png_file(ctx, fp)) || (e = spng_set_ihdr(ctx, &ihdr)) ||
      (e = spng_encode_image(ctx, c.px, (size_t)c.w * (size_t)c.h * 3,
                             SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE))) {
    snprintf(err, errlen, "png encoding failed: %s", spng_strerror(e));
    goto out;
  }
  rc = 0;
out:
  spng_ctx_free(ctx);
  if (fp && fclose(fp) && rc == 0) {
    snprintf(err, errlen, "write failed");
    rc = -1;
  }
  free(c.px);
  return rc;
}
