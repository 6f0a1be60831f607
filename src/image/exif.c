/* dermal EXIF orientation: reading tag 0x0112 and applying it.
 *
 * Purpose: phone photos are stored sideways with an EXIF orientation tag;
 * the model and the Grad-CAM overlay must see them upright, exactly as
 * PIL's ImageOps.exif_transpose turns them.
 *
 * Invariants:
 *  - The EXIF block is untrusted: every read goes through rd16/rd32, which
 *    check offset and size against the block; only IFD0 is read, no offsets
 *    are followed except the one to IFD0, so there are no loops.
 *  - Like PIL, the last orientation entry of IFD0 wins; an entry that is not
 *    a single SHORT or LONG, or a value outside 1..8, means "no rotation".
 *    A malformed block is ignored (orientation 1), never an error: PIL's
 *    reader also gives up silently on truncated IFDs.
 *  - Orientation n maps the stored pixel (sx, sy) to the upright output as
 *    PIL's Transpose methods do: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180,
 *    4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270 (90 degrees clockwise),
 *    7 TRANSVERSE, 8 ROTATE_90 (counter-clockwise).
 *
 * Threading: pure functions. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct tiff_rd {
  const uint8_t *p;
  size_t n;
  int le; /* 1: "II" little-endian, 0: "MM" big-endian */
} tiff_rd;

static int rd16(const tiff_rd *t, size_t off, uint32_t *v) {
  if (off > t->n || t->n - off < 2) return 0;
  *v = t->le ? (uint32_t)t->p[off] | (uint32_t)t->p[off + 1] << 8
             : (uint32_t)t->p[off] << 8 | (uint32_t)t->p[off + 1];
  return 1;
}

static int rd32(const tiff_rd *t, size_t off, uint32_t *v) {
  const uint8_t *q;
  if (off > t->n || t->n - off < 4) return 0;
  q = t->p + off;
  *v = t->le ? (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                   (uint32_t)q[3] << 24
             : (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 |
                   (uint32_t)q[2] << 8 | (uint32_t)q[3];
  return 1;
}

int dm__exif_orientation(const uint8_t *p, size_t n) {
  tiff_rd t;
  uint32_t magic, ifd, count, i;
  int orient = 1;
  if (!p) return 1;
  if (n >= 6 && memcmp(p, "Exif\0\0", 6) == 0) {
    p += 6;
    n -= 6;
  }
  if (n < 8) return 1;
  if (p[0] == 'I' && p[1] == 'I')
    t.le = 1;
  else if (p[0] == 'M' && p[1] == 'M')
    t.le = 0;
  else
    return 1;
  t.p = p;
  t.n = n;
  if (!rd16(&t, 2, &magic) || magic != 42 || !rd32(&t, 4, &ifd) ||
      !rd16(&t, ifd, &count))
    return 1;
  for (i = 0; i < count; i++) {
    size_t e = (size_t)ifd + 2 + (size_t)i * 12;
    uint32_t tag, type, cnt, v = 0;
    if (!rd16(&t, e, &tag) || !rd16(&t, e + 2, &type) ||
        !rd32(&t, e + 4, &cnt) || e + 12 > n)
      break; /* truncated IFD: keep what was read */
    if (tag != 0x0112) continue;
    if (cnt == 1 && type == 3) /* SHORT, left-justified in the value */
      (void)rd16(&t, e + 8, &v);
    else if (cnt == 1 && type == 4) /* LONG */
      (void)rd32(&t, e + 8, &v);
    orient = v >= 1 && v <= 8 ? (int)v : 1;
  }
  return orient;
}

dm_err dm_image_orient(dm_image *im, int orientation, dm_errbuf *eb) {
  /* Source pixel of output (ox, oy): sx = sx0 + ax * ox + bx * oy,
   * sy = sy0 + ay * ox + by * oy, per orientation (index 1..8). */
  static const int8_t tab[9][6] = {
      /* sx0 ax bx sy0 ay by; sx0/sy0: 1 means w-1 / h-1 */
      {0, 0, 0, 0, 0, 0},   {0, 1, 0, 0, 0, 1},   {1, -1, 0, 0, 0, 1},
      {1, -1, 0, 1, 0, -1}, {0, 1, 0, 1, 0, -1},  {0, 0, 1, 0, 1, 0},
      {0, 0, 1, 1, -1, 0},  {1, 0, -1, 1, -1, 0}, {1, 0, -1, 0, 1, 0}};
  const int8_t *t;
  int w, h, c, ow, oh, ox, oy;
  ptrdiff_t base, stepx, stepy;
  uint8_t *dst;
  if (!im || !im->px || im->w <= 0 || im->h <= 0 || im->c <= 0 ||
      orientation < 1 || orientation > 8)
    return dm_errf(eb, DM_ARG, "dm_image_orient: bad image or orientation %d",
                   orientation);
  if (orientation == 1) return DM_OK;
  w = im->w;
  h = im->h;
  c = im->c;
  ow = orientation <= 4 ? w : h;
  oh = orientation <= 4 ? h : w;
  t = tab[orientation];
  base = ((ptrdiff_t)(t[3] ? h - 1 : 0) * w + (t[0] ? w - 1 : 0)) * c;
  stepx = ((ptrdiff_t)t[4] * w + t[1]) * c;
  stepy = ((ptrdiff_t)t[5] * w + t[2]) * c;
  dst = dm__alloc_pixels(ow, oh, c);
  if (!dst)
    return dm_errf(eb, DM_NOMEM, "out of memory (orienting %dx%d)", w, h);
  for (oy = 0; oy < oh; oy++) {
    /* offsets as integers: one step past the last pixel of a row may lie
     * before the buffer, which a pointer may not. */
    uint8_t *d = dst + (size_t)oy * (size_t)ow * (size_t)c;
    const uint8_t *src = im->px;
    ptrdiff_t so = base + stepy * oy;
    if (c == 3) {
      for (ox = 0; ox < ow; ox++, d += 3, so += stepx) {
        d[0] = src[so];
        d[1] = src[so + 1];
        d[2] = src[so + 2];
      }
    } else {
      for (ox = 0; ox < ow; ox++, d += c, so += stepx)
        memcpy(d, src + so, (size_t)c);
    }
  }
  free(im->px);
  im->px = dst;
  im->w = ow;
  im->h = oh;
  return DM_OK;
}
