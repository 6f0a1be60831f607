/* Private declarations shared by the files of src/image/ (dm__ names).
 * Nothing here is part of the public API in include/dermal/image.h. */
#ifndef DERMAL_IMAGE_INTERNAL_H
#define DERMAL_IMAGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dermal/image.h"

/* Progressive JPEG scans beyond this are refused (libjpeg-turbo's own
 * TJFLAG_LIMITSCANS uses 500 as well): a crafted file with thousands of tiny
 * scans costs seconds of CPU per request otherwise. */
#define DM__JPEG_MAX_SCANS 500
/* Memory libspng may spend on ancillary chunks (text, iCCP, eXIf, ...). */
#define DM__PNG_CACHE_MAX ((size_t)8 * 1024 * 1024)

/* decode.c: checks header dimensions against the limits (already resolved,
 * no zero fields); fills info->width/height first.  DM_FORMAT for zero
 * dimensions, DM_IMAGE_SIZE for a refusal. */
dm_err dm__check_dims(const char *what, uint64_t w, uint64_t h,
                      const dm_image_limits *lim, dm_image_info *info,
                      dm_errbuf *eb);

/* decode.c: malloc of w * h * c bytes with overflow checks (NULL on
 * failure or overflow); w, h, c > 0. */
uint8_t *dm__alloc_pixels(int w, int h, int c);

/* jpeg.c: decodes a JPEG (buf starts with FF D8 FF) into out (RGB, not yet
 * oriented); info->orientation receives the raw EXIF orientation tag (1 when
 * absent).  Errors as dm_image_decode. */
dm_err dm__decode_jpeg(const uint8_t *buf, size_t len,
                       const dm_image_limits *lim, int target_short_side,
                       dm_image *out, dm_image_info *info, dm_errbuf *eb);

/* exif.c: the orientation tag (0x0112) of IFD0 of an EXIF block: a TIFF
 * header ("II*\0" / "MM\0*") optionally preceded by "Exif\0\0".  Returns
 * 1..8, or 1 when the block is absent, malformed or the value is invalid
 * (a broken EXIF block never rejects an image). */
int dm__exif_orientation(const uint8_t *p, size_t n);

/* resize.c: Pillow bilinear resize of src (sh, sw, c) to oh x ow, computing
 * only the window of output columns [x0, x0 + cw) and rows [y0, y0 + ch)
 * into dst (ch, cw, c).  Every output pixel equals the one of the full
 * resize (Pillow's per-pixel coefficients do not depend on the window).
 * Requires 0 <= x0, cw >= 1, x0 + cw <= ow (same for y), c in 1..4. */
dm_err dm__resize_window(const uint8_t *src, int sw, int sh, int c, int ow,
                         int oh, int x0, int y0, int cw, int ch, uint8_t *dst,
                         dm_errbuf *eb);

#endif
