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

#endif
