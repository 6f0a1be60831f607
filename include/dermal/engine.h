/* dermal engine: runs an ONNX graph on the CPU.
 *
 * A dm_engine is built once from a parsed dm_onnx_model (which must outlive
 * it: constant tensors point into the model's mapping).  Building does all the
 * work that does not depend on input values: shape inference, constant
 * folding, BatchNorm folding, fusion, dead-node removal, the memory plan and,
 * for the oneDNN backend, primitive creation and weight reorders.
 *
 * Threading: a built dm_engine is read-only.  Each thread that runs it owns a
 * dm_session (its activation arena and backend scratch); any number of
 * sessions may run one engine at once.  Each run uses the engine's intra-op
 * thread count (dm_engine_opts.threads). */
#ifndef DERMAL_ENGINE_H
#define DERMAL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dermal/err.h"
#include "dermal/onnx.h"

#define DM_MAX_RANK 8

typedef struct dm_engine dm_engine;
typedef struct dm_session dm_session;

typedef enum { DM_BACKEND_ONEDNN = 0, DM_BACKEND_REF = 1 } dm_backend_kind;

typedef enum {
  DM_PRECISION_FP32 = 0,
  DM_PRECISION_BF16 = 1,
  DM_PRECISION_AUTO = 2
} dm_precision;

typedef struct dm_engine_opts {
  dm_backend_kind backend;
  dm_precision precision;
  int threads; /* intra-op threads per run; <= 0 means 1 */
  bool no_opt; /* skip fusions (constant folding still runs); for tests */
  /* Optional concrete shapes for the graph inputs (index i = i-th input of
   * dm_engine_input), overriding symbolic dims in the file; static dims must
   * agree.  data is ignored.  NULL: symbolic batch dims become 1. */
  const struct dm_tensor *input_shapes;
  size_t n_input_shapes;
  /* Grad-CAM: when cam is set the engine resolves a target tensor (cam_target
   * by name, or NULL: the last tensor with spatial extent > 1x1 before the
   * global pooling that leads to the scores), keeps it materialised, and
   * checks that every op between it and the scores has a backward rule;
   * dm_session_run_cam then works.  Fails at load naming the op otherwise.
   * Ops with a rule: Conv (grouped, strided, dilated; BatchNorm folded and
   * fused activations/residual Adds included), MaxPool, AveragePool, global
   * pooling, BatchNormalization, Add/Sub/Mul/Div with broadcasting, Concat,
   * reshapes, Reduce{Mean,Sum,Max}, Gemm/MatMul with constant weights and
   * the usual activations.  A target before a Conv or pooling window also
   * keeps the forward values between it and the scores (see
   * docs/engine.md), so it costs more memory and time than the default. */
  bool cam;
  const char *cam_target;
  /* Calibration and debugging: names of tensors of the file's graph to keep
   * and expose after each run through dm_session_value.  Kept activations
   * become extra graph outputs, so no fusion crosses them (the values are
   * exactly the unfused graph's).  A name that is not a tensor of the graph
   * fails dm_engine_new with DM_ARG.  Both backends.  NULL/0: none. */
  const char *const *keep;
  size_t n_keep;
} dm_engine_opts;

/* A tensor handed across the API.  data is borrowed. */
typedef struct dm_tensor {
  int32_t dtype; /* DM_ONNX_* */
  int32_t rank;
  int64_t dims[DM_MAX_RANK];
  void *data;
} dm_tensor;

typedef struct dm_engine_stats {
  size_t nodes_in;      /* nodes in the file */
  size_t nodes_run;     /* nodes executed per run after optimisation */
  size_t folded_const;  /* nodes removed by constant folding */
  size_t folded_bn;     /* BatchNormalization folded into Conv */
  size_t fused_act;     /* activations/adds fused into Conv/Gemm */
  size_t int8_ops;      /* Conv/Add/MaxPool run on 8-bit data (QDQ fused) */
  size_t int8_unfused;  /* int8 Conv/Gemm run dequantized: this CPU's int8 */
                        /* kernels would saturate on their weights (no */
                        /* VNNI, e.g. plain AVX2; see docs/engine.md) */
  size_t dead;          /* nodes removed as dead */
  size_t arena_bytes;   /* activation arena each session maps */
  size_t weight_bytes;  /* constant bytes used by the plan */
  size_t weight_copied; /* constant bytes copied (folded, unaligned) */
  double load_ms;       /* build time */
} dm_engine_stats;

/* Builds an engine for m.  Fails with DM_UNSUPPORTED naming node, op and
 * attribute for anything the engine cannot run exactly. */
dm_err dm_engine_new(const dm_onnx_model *m, const dm_engine_opts *opts,
                     dm_engine **out, dm_errbuf *eb);
void dm_engine_free(dm_engine *e);

const dm_engine_stats *dm_engine_get_stats(const dm_engine *e);
const char *dm_engine_backend_name(const dm_engine *e);
/* "fp32" or "bf16": the compute precision the engine chose (bf16 and auto
 * give bf16 only where the CPU runs it natively, AVX512-BF16 or AMX). */
const char *dm_engine_precision_name(const dm_engine *e);
/* The precision an engine built with (backend, p) would report on this CPU,
 * without building one (for `dermal inspect`).  Thread-safe. */
const char *dm_engine_precision_resolve(dm_backend_kind backend,
                                        dm_precision p);

/* Graph inputs (without initializers) and outputs, with their shapes.  The
 * returned tensors have data == NULL.  Index must be < the count. */
size_t dm_engine_n_inputs(const dm_engine *e);
size_t dm_engine_n_outputs(const dm_engine *e);
dm_tensor dm_engine_input(const dm_engine *e, size_t i, const char **name);
dm_tensor dm_engine_output(const dm_engine *e, size_t i, const char **name);

dm_err dm_session_new(const dm_engine *e, dm_session **out, dm_errbuf *eb);
void dm_session_free(dm_session *s);

/* Runs once.  inputs[i] must match dm_engine_input(e, i) in dtype and shape.
 * Outputs stay valid until the next run or dm_session_free. */
dm_err dm_session_run(dm_session *s, const dm_tensor *inputs, size_t n_inputs,
                      dm_errbuf *eb);
dm_tensor dm_session_output(const dm_session *s, size_t i);

/* The value of tensor `name` in the last run, for a name listed in
 * dm_engine_opts.keep (also graph inputs and outputs).  out->data is borrowed:
 * valid until the next run or dm_session_free (constants: until
 * dm_engine_free; graph inputs: the caller's buffer).  DM_ARG when the name
 * was not kept or no run has happened. */
dm_err dm_session_value(const dm_session *s, const char *name, dm_tensor *out,
                        dm_errbuf *eb);

/* Grad-CAM inputs for one run (engine built with opts.cam). */
typedef struct dm_cam_result {
  int class_index;         /* explained class (top-1 unless asked) */
  float score;             /* its pre-softmax score */
  int64_t c, h, w;         /* target tensor [1, c, h, w] */
  const float *activation; /* (c, h, w) target activation */
  const float *gradient;   /* (c, h, w) d score / d activation */
  double ms_tail;          /* time of the backward pass (and tail forward) */
} dm_cam_result;

/* Runs once like dm_session_run, then back-propagates the score of
 * class_index (< 0: the top-1 class) from the output to the target through
 * the ops after it (gradients w.r.t. activations only).  When those are a
 * head of global pooling, reshapes, Gemm/MatMul and activations (the
 * automatic target), that is plain C over a few small tensors.  Through
 * Convs and pooling windows (an earlier target) the onednn backend uses
 * oneDNN backward-data and pooling-backward primitives built at load, the
 * ref backend plain C.  ms_tail times the backward part.  The pointers in
 * *out stay valid until the next run on s.  Errors: DM_ARG (engine built
 * without cam, class out of range), DM_NOMEM, DM_BACKEND. */
dm_err dm_session_run_cam(dm_session *s, const dm_tensor *inputs,
                          size_t n_inputs, int class_index, dm_cam_result *out,
                          dm_errbuf *eb);
/* Name of the Grad-CAM target ("" when the engine was built without cam). */
const char *dm_engine_cam_target(const dm_engine *e);

/* Resolves the Grad-CAM target of m (by name, or automatically when target
 * is NULL) and checks the ops after it, without building an engine: shape
 * inference and folding only, no backend, no weight reorders.  For
 * `dermal inspect`.  Writes the tensor name into out. */
dm_err dm_engine_cam_preview(const dm_onnx_model *m, const char *target,
                             char *out, size_t n, dm_errbuf *eb);

/* Op types the engine runs (default domain), for the conformance runner and
 * `dermal inspect`.  NULL-terminated static list. */
const char *const *dm_engine_supported_ops(void);

#endif
