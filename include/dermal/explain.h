/* dermal explain: class activation maps from the engine's Grad-CAM inputs
 * (dm_cam_result: target activation and d score / d activation).
 *
 * Methods (as pytorch-grad-cam computes them):
 *   Grad-CAM    w_k = mean_ij g_kij;           cam = relu(sum_k w_k A_k)
 *   Grad-CAM++  a_kij = g^2 / (2 g^2 + sum_ij(A_k) g^3) (0 where g = 0),
 *               w_k = sum_ij relu(g_kij) a_kij; cam = relu(sum_k w_k A_k)
 *   HiResCAM    cam = relu(sum_k g_k * A_k) elementwise
 * The raw map is h x w (the target's resolution), after the ReLU, before
 * any normalisation.  Reentrant. */
#ifndef DERMAL_EXPLAIN_H
#define DERMAL_EXPLAIN_H

#include <stddef.h>
#include <stdint.h>

#include "dermal/engine.h"
#include "dermal/err.h"
#include "dermal/image.h"

typedef enum {
  DM_CAM_GRADCAM = 0,
  DM_CAM_GRADCAMPP = 1,
  DM_CAM_HIRESCAM = 2
} dm_cam_method;

/* Parses "gradcam", "gradcampp" (or "gradcam++"), "hirescam"; -1 if not. */
int dm_cam_method_parse(const char *s);
const char *dm_cam_method_name(dm_cam_method m);

/* Writes r->h * r->w floats into cam. */
dm_err dm_cam_compute(const dm_cam_result *r, dm_cam_method m, float *cam,
                      dm_errbuf *eb);

/* ---- overlays --------------------------------------------------------- */

typedef enum { DM_CMAP_JET = 0, DM_CMAP_TURBO = 1 } dm_colormap;
int dm_colormap_parse(const char *s); /* "jet" | "turbo"; -1 otherwise */

/* Maps t in [0,1] to RGB8. */
void dm_colormap_rgb(dm_colormap m, float t, uint8_t rgb[3]);

typedef struct dm_overlay_opts {
  dm_colormap colormap; /* default jet, as pytorch-grad-cam */
  float alpha;          /* heatmap weight in the blend, default 0.5 */
  int max_side;         /* longest side of the output; 0 = original size */
} dm_overlay_opts;

/* Renders the CAM (cam_h x cam_w, covering the model input) over the
 * upright image it was computed from: the map is placed through the same
 * resize/crop geometry the preprocessing used (pp), upsampled bilinearly,
 * normalised to 0..1 (min-max), coloured and blended:
 *   out = alpha * colour + (1 - alpha) * image.
 * Pixels outside the model's crop keep the image.  out->px is malloc'd. */
dm_err dm_overlay_render(const dm_image *im, const dm_preproc *pp,
                         const float *cam, int cam_h, int cam_w,
                         const dm_overlay_opts *o, dm_image *out,
                         dm_errbuf *eb);

/* The raw CAM as an 8-bit grayscale image (min-max normalised), c == 1. */
dm_err dm_cam_to_gray(const float *cam, int h, int w, dm_image *out,
                      dm_errbuf *eb);

/* PNG (8-bit gray or RGB by im->c) and JPEG (RGB, quality 1..100) encoders.
 * *out is malloc'd. */
dm_err dm_image_encode_png(const dm_image *im, uint8_t **out, size_t *len,
                           dm_errbuf *eb);
dm_err dm_image_encode_jpeg(const dm_image *im, int quality, uint8_t **out,
                            size_t *len, dm_errbuf *eb);
/* Writes PNG or JPEG by the path's extension (.png, .jpg/.jpeg). */
dm_err dm_image_save(const dm_image *im, const char *path, dm_errbuf *eb);

#endif
