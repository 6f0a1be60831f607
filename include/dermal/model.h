/* dermal model: a classifier = an ONNX file + its service metadata
 * (metadata_props) + the engine built for it.  The layer the CLI and the
 * server share, so `dermal predict` and `POST /upload` run exactly the same
 * path: bytes -> image (decode, EXIF) -> tensor (preprocessing from the
 * metadata) -> engine -> probabilities.
 *
 * Metadata keys read (missing keys get defaults, listed in
 * dm_model_info.defaulted):
 *   labels          comma-separated short labels, one per output (default
 *                   class0..classN-1)
 *   label_names     '|'-separated long names (default: the labels)
 *   input_size      "224" or "HxW" (default: the graph input's H, W)
 *   resize          "direct" | "shorter_crop" (default shorter_crop)
 *   resize_shorter  shorter side before the crop (default 256/224 * size)
 *   mean, std       three comma-separated floats on 0..1 pixels (default
 *                   ImageNet)
 *   color           "RGB" | "BGR" (default RGB)
 *   layout          "NCHW" | "NHWC" (default: from the input shape)
 *   output          "logits" | "probabilities" (default: probabilities when
 *                   the graph ends in Softmax, else logits)
 *   gradcam_target  tensor name (default: automatic, issue 5)
 *   ood_output      name of a second graph output, float [1] or [1,1]: an
 *                   out-of-distribution score, larger = less like the
 *                   training images (default "ood_score" when the graph has
 *                   such an output; docs/model-metadata.md)
 *   ood_threshold   scores above it are "not in distribution" (required
 *                   with ood_output)
 *   ood_method      free text describing the score, reported as is
 *   model_version, name
 *
 * Threading: a dm_model is immutable after dm_model_open and reference
 * counted (dm_model_acquire/dm_model_release, atomic); share it across
 * threads freely.  A dm_predictor is one thread's scratch (engine session,
 * input tensor); never use one from two threads at once. */
#ifndef DERMAL_MODEL_H
#define DERMAL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dermal/engine.h"
#include "dermal/err.h"
#include "dermal/explain.h"
#include "dermal/image.h"

#define DM_MAX_CLASSES 1000

typedef struct dm_model dm_model;
typedef struct dm_predictor dm_predictor;

typedef struct dm_model_opts {
  dm_backend_kind backend;    /* default DM_BACKEND_ONEDNN */
  dm_precision precision;     /* default DM_PRECISION_FP32 */
  int threads;                /* intra-op threads per prediction; <= 0: 1 */
  bool gradcam;               /* build for Grad-CAM (dm_predict_explain) */
  const char *gradcam_target; /* override; NULL: metadata, else automatic */
} dm_model_opts;

typedef struct dm_model_info {
  const char *path;
  const char *name;    /* metadata "name", else the file's base name */
  const char *version; /* metadata "model_version", else "" */
  char sha256[65];     /* of the file, lower-case hex */
  size_t file_bytes;
  size_t n_classes;
  const char *const *labels; /* n_classes short labels */
  const char *const *names;  /* n_classes long names */
  dm_preproc preproc;
  bool outputs_probabilities; /* else logits, softmax applied by dermal */
  const char *gradcam_target; /* resolved target tensor ("" without
                                 Grad-CAM) */
  bool gradcam_target_auto;   /* chosen automatically (no metadata) */
  const char *gradcam_error;  /* opened with gradcam but no usable target:
                                 the reason ("" otherwise); the model still
                                 classifies */
  bool has_ood;               /* the graph has an OOD score output */
  float ood_threshold;        /* in_distribution = score <= threshold */
  const char *ood_method;     /* metadata ood_method, "" if absent */
  const char *defaulted;      /* comma-separated metadata keys defaulted */
  double load_ms;             /* open + parse + engine build */
} dm_model_info;

/* Opens, parses and builds.  Errors: those of dm_onnx_open/dm_engine_new,
 * and DM_UNSUPPORTED when the model is not an image classifier dermal can
 * serve (one float input [1,3,H,W] or [1,H,W,3], a first output [1,K] with
 * K <= DM_MAX_CLASSES and at most a second one, the OOD score, or metadata
 * that contradicts it, e.g. 5 labels for 7 outputs).  The returned model has
 * one reference. */
dm_err dm_model_open(const char *path, const dm_model_opts *opts,
                     dm_model **out, dm_errbuf *eb);
void dm_model_acquire(dm_model *m);
void dm_model_release(dm_model *m); /* NULL ok; frees at zero */

/* Borrowed; valid while the caller holds a reference. */
const dm_model_info *dm_model_get_info(const dm_model *m);
const dm_engine *dm_model_engine(const dm_model *m);

/* One thread's scratch.  Holds a reference on m until freed. */
dm_err dm_predictor_new(dm_model *m, dm_predictor **out, dm_errbuf *eb);
void dm_predictor_free(dm_predictor *p);

typedef struct dm_prediction {
  size_t n_classes;
  float prob[DM_MAX_CLASSES];  /* softmax probabilities, sum 1 */
  float logit[DM_MAX_CLASSES]; /* raw model output */
  int order[DM_MAX_CLASSES];   /* class indices by decreasing probability */
  bool has_ood;                /* the model computes an OOD score */
  float ood_score;             /* valid when has_ood */
  bool in_distribution;        /* ood_score <= threshold; true without OOD */
  dm_image_info image;         /* what the decoder saw */
  int width, height;           /* upright decoded size */
  double ms_decode, ms_preprocess, ms_inference;
} dm_prediction;

/* Decodes an encoded image (JPEG/PNG/WebP) and classifies it.  Errors are
 * dm_image_decode's (DM_TOOBIG, DM_FORMAT, DM_IMAGE_SIZE: 413/415/422 in
 * HTTP terms) or the engine's.  lim NULL: defaults. */
dm_err dm_predict(dm_predictor *p, const void *bytes, size_t len,
                  const dm_image_limits *lim, dm_prediction *out,
                  dm_errbuf *eb);

/* Classifies an already decoded upright RGB image. */
dm_err dm_predict_image(dm_predictor *p, const dm_image *im, dm_prediction *out,
                        dm_errbuf *eb);

/* An explanation of one prediction.  cam and image belong to the predictor
 * and stay valid until its next call. */
typedef struct dm_explanation {
  int class_index; /* the explained class */
  dm_cam_method method;
  int cam_h, cam_w;
  const float *cam;      /* (cam_h, cam_w), after ReLU, not normalised */
  const dm_image *image; /* the decoded upright image */
  double ms_cam;         /* gradient tail + map, on top of the inference */
} dm_explanation;

/* Like dm_predict, plus the CAM of class_index (< 0: the top-1 class).
 * DM_UNSUPPORTED when the model was opened without opts.gradcam. */
dm_err dm_predict_explain(dm_predictor *p, const void *bytes, size_t len,
                          const dm_image_limits *lim, int class_index,
                          dm_cam_method method, dm_prediction *out,
                          dm_explanation *ex, dm_errbuf *eb);

/* Index of a class label, or -1. */
int dm_model_class_index(const dm_model *m, const char *label);

/* The JSON object `dermal predict --json` prints and the HTTP API returns
 * (without request-specific keys): {"image": ..., "label": ..., "top":
 * [{"label","name","probability"}...], "probabilities": {...},
 * "in_distribution": bool, "ood_score": number, "ood_threshold": number
 * (the three are null when the model has no OOD score), "ms":
 * {"decode","preprocess","inference"}}.  image may be NULL (key omitted).
 * top_k <= 0 or > n_classes means all.  Returns a malloc'd NUL-terminated
 * string (caller frees), NULL on allocation failure. */
char *dm_prediction_json(const dm_model *m, const dm_prediction *r,
                         const char *image, int top_k);

#endif
