/* cam.c: Grad-CAM, Grad-CAM++ and HiResCAM maps from an activation and its
 * gradient (see include/dermal/explain.h for the formulas).  Double
 * accumulation for the per-channel sums; no allocation beyond one weight
 * vector.  Reentrant. */
#include "dermal/explain.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int dm_cam_method_parse(const char *s) {
  if (!strcmp(s, "gradcam")) return DM_CAM_GRADCAM;
  if (!strcmp(s, "gradcampp") || !strcmp(s, "gradcam++"))
    return DM_CAM_GRADCAMPP;
  if (!strcmp(s, "hirescam")) return DM_CAM_HIRESCAM;
  return -1;
}

const char *dm_cam_method_name(dm_cam_method m) {
  switch (m) {
  case DM_CAM_GRADCAM: return "gradcam";
  case DM_CAM_GRADCAMPP: return "gradcampp";
  case DM_CAM_HIRESCAM: return "hirescam";
  }
  return "?";
}

dm_err dm_cam_compute(const dm_cam_result *r, dm_cam_method m, float *cam,
                      dm_errbuf *eb) {
  int64_t C = r->c, HW = r->h * r->w;
  if (C <= 0 || HW <= 0 || !r->activation || !r->gradient)
    return dm_errf(eb, DM_ARG, "empty Grad-CAM result");
  const float *A = r->activation, *G = r->gradient;
  if (m == DM_CAM_HIRESCAM) {
    for (int64_t i = 0; i < HW; i++) {
      double acc = 0;
      for (int64_t k = 0; k < C; k++)
        acc += (double)G[k * HW + i] * A[k * HW + i];
      cam[i] = acc > 0 ? (float)acc : 0.f;
    }
    return DM_OK;
  }
  double *w = malloc((size_t)C * sizeof *w);
  if (!w) return dm_errf(eb, DM_NOMEM, "out of memory");
  for (int64_t k = 0; k < C; k++) {
    const float *a = A + k * HW, *g = G + k * HW;
    double acc = 0;
    if (m == DM_CAM_GRADCAM) {
      for (int64_t i = 0; i < HW; i++)
        acc += g[i];
      acc /= (double)HW;
    } else {
      double sa = 0;
      for (int64_t i = 0; i < HW; i++)
        sa += a[i];
      for (int64_t i = 0; i < HW; i++) {
        double g2 = (double)g[i] * g[i], g3 = g2 * g[i];
        double alpha = g[i] != 0 ? g2 / (2 * g2 + sa * g3 + 1e-7) : 0;
        acc += (g[i] > 0 ? g[i] : 0) * alpha;
      }
    }
    w[k] = acc;
  }
  for (int64_t i = 0; i < HW; i++) {
    double acc = 0;
    for (int64_t k = 0; k < C; k++)
      acc += w[k] * A[k * HW + i];
    cam[i] = acc > 0 ? (float)acc : 0.f;
  }
  free(w);
  return DM_OK;
}
