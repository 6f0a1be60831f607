/* dermal image: decode uploads (JPEG, PNG, WebP) into upright 8-bit RGB and
 * turn them into the model's input tensor exactly as the training pipeline
 * did (torchvision on PIL images).
 *
 * Decoding follows PIL's `Image.open(f)`, `ImageOps.exif_transpose(im)`,
 * `im.convert("RGB")`: alpha is dropped (not composited), grayscale is
 * replicated, palette images are expanded, CMYK/YCCK JPEGs are converted with
 * PIL's formula (Adobe inverted polarity), 16-bit samples keep their high
 * byte, the EXIF orientation (JPEG APP1, PNG eXIf, WebP EXIF) is applied.
 * One deliberate difference: PIL opens a 16-bit grayscale PNG as mode "I"
 * and convert("RGB") clips the 16-bit value at 255 (an almost white image);
 * dermal keeps the high byte, as PIL does for every other 16-bit PNG.
 * Input is untrusted: every refusal is a distinct dm_err (see
 * dm_image_decode) and never leaves a partly decoded image behind.
 *
 * Preprocessing reproduces torchvision's Resize (PIL antialiased bilinear,
 * Pillow's fixed-point arithmetic, bit-exact) + CenterCrop + ToTensor +
 * Normalize, in NCHW or NHWC, RGB or BGR.
 *
 * Threading: no global state; every function may run concurrently on
 * different images.  A dm_image is not synchronised. */
#ifndef DERMAL_IMAGE_H
#define DERMAL_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dermal/err.h"

/* An owned 8-bit image, row-major, interleaved, c channels per pixel
 * (always 3 = RGB from the decoder).  Release px with dm_image_free. */
typedef struct dm_image {
  int w, h, c;
  uint8_t *px; /* (h, w, c), malloc'd, owned */
} dm_image;

typedef enum dm_image_format {
  DM_IMAGE_UNKNOWN = 0,
  DM_IMAGE_JPEG = 1,
  DM_IMAGE_PNG = 2,
  DM_IMAGE_WEBP = 3
} dm_image_format;

/* What the decoder found and did.  Complete on DM_OK; on an error it holds
 * what was learned before the refusal (format; width and height once the
 * header was read, so a caller can say "image is 65535x65535"). */
typedef struct dm_image_info {
  dm_image_format format;
  int width, height; /* as stored in the file, before scaling/orientation */
  int channels;      /* components in the file: 1 gray, 2 gray+alpha,
                        3 RGB/YCbCr/palette, 4 RGBA or CMYK/YCCK */
  int orientation;   /* EXIF orientation applied, 1..8 (1: none/absent) */
  int scale_num, scale_denom; /* JPEG DCT scaling applied (1/1 = none) */
  bool progressive;           /* progressive JPEG (or interlaced PNG) */
} dm_image_info;

/* Refusal limits.  A zero field takes its default. */
typedef struct dm_image_limits {
  size_t max_bytes;    /* encoded size; default 20 MB (20 * 1024 * 1024) */
  uint64_t max_pixels; /* width * height from the header; default 40e6 */
  int min_side;        /* smaller of width, height; default 8 */
} dm_image_limits;

#define DM_IMAGE_DEFAULT_MAX_BYTES ((size_t)20 * 1024 * 1024)
#define DM_IMAGE_DEFAULT_MAX_PIXELS ((uint64_t)40000000)
#define DM_IMAGE_DEFAULT_MIN_SIDE 8

/* Sets *lim to the defaults above. */
void dm_image_limits_init(dm_image_limits *lim);

/* Recognises the format from the first bytes (no decoding). */
dm_image_format dm_image_sniff(const void *buf, size_t len);
/* "jpeg", "png", "webp" or "unknown"; never NULL. */
const char *dm_image_format_name(dm_image_format f);

/* Decodes buf[0, len) into an upright RGB image (out->c == 3).
 *
 * lim: NULL means defaults.  target_short_side > 0 lets a JPEG be decoded
 * with libjpeg-turbo's DCT scaling: the smallest supported factor whose
 * shorter decoded side is still >= 2 * target_short_side (0: never scale).
 *
 * Errors (out untouched, nothing allocated):
 *   DM_TOOBIG      len > max_bytes                       (HTTP 413)
 *   DM_FORMAT      unknown format, corrupt or truncated data, libjpeg-turbo
 *                  warnings included; unsupported variants (12-bit or
 *                  lossless JPEG, animated WebP)         (HTTP 415)
 *   DM_IMAGE_SIZE  header width*height > max_pixels or a side < min_side;
 *                  refused before any pixel memory is allocated (HTTP 422)
 *   DM_NOMEM       allocation failure
 *   DM_ARG         NULL buf/out
 * info (optional) is filled as documented at dm_image_info. */
dm_err dm_image_decode(const void *buf, size_t len, const dm_image_limits *lim,
                       int target_short_side, dm_image *out,
                       dm_image_info *info, dm_errbuf *eb);

/* Frees im->px and zeroes *im.  NULL and zeroed images are fine. */
void dm_image_free(dm_image *im);

/* Resizes an 8-bit image (any c in 1..4) to out_w x out_h exactly as
 * Pillow's Image.resize(..., Image.BILINEAR) does (antialiased triangle
 * filter, 22-bit fixed-point coefficients, horizontal pass first, rounding to
 * 8 bits after each pass).  Same size: a copy.  out is written on DM_OK. */
dm_err dm_image_resize(const dm_image *in, int out_w, int out_h, dm_image *out,
                       dm_errbuf *eb);

/* Applies an EXIF orientation (1..8, as PIL's ImageOps.exif_transpose) in
 * place; may replace im->px.  Other values: DM_ARG. */
dm_err dm_image_orient(dm_image *im, int orientation, dm_errbuf *eb);

/* ---- preprocessing ---------------------------------------------------- */

enum {
  /* torchvision Resize(resize) (shorter side -> resize, longer side
   * int(resize * long / short)) then CenterCrop((size_h, size_w)). */
  DM_RESIZE_SHORTER_CROP = 0,
  /* torchvision Resize((size_h, size_w)): both sides, aspect not kept. */
  DM_RESIZE_DIRECT = 1
};

typedef struct dm_preproc {
  int size_h, size_w;    /* tensor spatial size H, W */
  int resize_mode;       /* DM_RESIZE_* */
  int resize;            /* shorter side before the crop (SHORTER_CROP only) */
  float mean[3], std[3]; /* per OUTPUT channel (BGR order when bgr) */
  bool bgr;              /* channel 0 is blue */
  bool nhwc;             /* (H, W, 3) instead of (3, H, W) */
  float scale; /* pixel multiplier before mean/std; 1/255 = ToTensor */
} dm_preproc;

/* Defaults: 224x224, SHORTER_CROP with resize 256, ImageNet mean/std
 * (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), RGB, NCHW, scale 1/255. */
void dm_preproc_init(dm_preproc *p);

/* Geometry of a preprocessing run on a w x h image, for mapping a heatmap
 * back onto the picture: the image is resized to resized_w x resized_h and
 * the tensor's pixel (y, x) is the resized pixel (y + crop_y, x + crop_x);
 * pixels outside the resized image (negative or too large coordinates,
 * torchvision's zero padding when the crop exceeds the image) are 0. */
typedef struct dm_preproc_geom {
  int resized_w, resized_h;
  int crop_x, crop_y;
} dm_preproc_geom;

dm_err dm_preproc_geometry(const dm_preproc *p, int w, int h,
                           dm_preproc_geom *g, dm_errbuf *eb);

/* Writes the model input for im (c == 3, RGB) into out, caller-allocated,
 * 3 * size_h * size_w floats: value = (pixel * scale - mean[c]) / std[c]
 * (pixel / 255 in float when scale is 1/255, as ToTensor divides).
 * Errors: DM_ARG for an invalid dm_preproc or image, DM_RANGE when the
 * resized size does not fit an int, DM_NOMEM. */
dm_err dm_image_to_tensor(const dm_image *im, const dm_preproc *p, float *out,
                          dm_errbuf *eb);

#endif
