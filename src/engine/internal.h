/* Private engine IR shared by graph.c (loading, shape inference, passes,
 * memory plan), backend_ref.c (plain C kernels, the oracle) and
 * backend_onednn.c (oneDNN fast path).
 *
 * Invariants after dm__graph_build:
 *  - every value has a fully known static shape and dtype;
 *  - nodes[0..n_nodes) are in topological order and all are live;
 *  - CONST values are never written.  Their `data` is aligned to the element
 *    size, except initializers whose raw_data sits at an unaligned file
 *    offset: those stay in place (zero copy, `unaligned` set) until
 *    dm__graph_align_const copies them.  engine.c aligns every constant a
 *    backend reads from C before the backend's prepare(); only weights that a
 *    backend copies anyway (oneDNN reorders of Conv/Gemm weights) stay in
 *    place, read byte-wise by oneDNN's reorder;
 *  - node params are validated: kernels may trust them (no input checks in
 *    the hot path beyond what the graph guarantees).
 * Everything here is read-only after build and shared by all sessions. */
#ifndef DERMAL_ENGINE_INTERNAL_H
#define DERMAL_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dermal/engine.h"
#include "dermal/onnx.h"

/* op enum, ONNX op_type */
#define DM_OP_MAP(X)                                                           \
  X(CONV, "Conv")                                                              \
  X(BATCHNORM, "BatchNormalization")                                           \
  X(UNARY, "(unary)")   /* every elementwise one-input op, see dm_unary */     \
  X(BINARY, "(binary)") /* elementwise two-input ops with broadcasting */      \
  X(WHERE, "Where")                                                            \
  X(MAXPOOL, "MaxPool")                                                        \
  X(AVGPOOL, "AveragePool")                                                    \
  X(GLOBALAVGPOOL, "GlobalAveragePool")                                        \
  X(GLOBALMAXPOOL, "GlobalMaxPool")                                            \
  X(REDUCE, "(reduce)") /* ReduceMean/Sum/Max/Min/Prod/L1/L2/SumSquare...*/    \
  X(RESHAPE, "Reshape") /* also Flatten, Squeeze, Unsqueeze, Identity:    */   \
                        /* a copy (or alias) whose out shape is known     */   \
  X(TRANSPOSE, "Transpose")                                                    \
  X(CONCAT, "Concat")                                                          \
  X(SPLIT, "Split")                                                            \
  X(SLICE, "Slice")                                                            \
  X(PAD, "Pad")                                                                \
  X(GEMM, "Gemm")                                                              \
  X(MATMUL, "MatMul")                                                          \
  X(SOFTMAX, "Softmax") /* also LogSoftmax (p.softmax.log) */                  \
  X(SHAPE, "Shape")                                                            \
  X(GATHER, "Gather")                                                          \
  X(CAST, "Cast")                                                              \
  X(EXPAND, "Expand")                                                          \
  X(CONSTANTOFSHAPE, "ConstantOfShape")                                        \
  X(RANGE, "Range")                                                            \
  X(TILE, "Tile")                                                              \
  X(LAYERNORM, "LayerNormalization")                                           \
  X(INSTANCENORM, "InstanceNormalization")                                     \
  X(PRELU, "PRelu")                                                            \
  X(LRN, "LRN")                                                                \
  X(ARGMAX, "ArgMax")               /* also ArgMin (p.argmax.min) */           \
  X(QUANTIZE, "QuantizeLinear")     /* in: X, scale, [zero point] */           \
  X(DEQUANTIZE, "DequantizeLinear") /* in: X, scale, [zero point] */

typedef enum {
#define X(e, s) DM_OP_##e,
  DM_OP_MAP(X)
#undef X
      DM_OP_COUNT
} dm_op;

/* Elementwise one-input functions.  alpha/beta in dm_node.p.unary. */
#define DM_UNARY_MAP(X)                                                        \
  X(RELU, "Relu")                                                              \
  X(LEAKYRELU, "LeakyRelu") /* alpha */                                        \
  X(CLIP, "Clip")           /* alpha=min, beta=max */                          \
  X(SIGMOID, "Sigmoid")                                                        \
  X(HARDSIGMOID, "HardSigmoid") /* max(0,min(1,alpha*x+beta)) */               \
  X(HARDSWISH, "HardSwish")     /* x*max(0,min(1,x/6+0.5)) */                  \
  X(TANH, "Tanh")                                                              \
  X(ELU, "Elu")   /* alpha */                                                  \
  X(SELU, "Selu") /* alpha, beta=gamma */                                      \
  X(SOFTPLUS, "Softplus")                                                      \
  X(SOFTSIGN, "Softsign")                                                      \
  X(ERF, "Erf")                                                                \
  X(EXP, "Exp")                                                                \
  X(LOG, "Log")                                                                \
  X(SQRT, "Sqrt")                                                              \
  X(NEG, "Neg")                                                                \
  X(ABS, "Abs")                                                                \
  X(RECIPROCAL, "Reciprocal")                                                  \
  X(FLOOR, "Floor")                                                            \
  X(CEIL, "Ceil")                                                              \
  X(ROUND, "Round")                                                            \
  X(SIGN, "Sign")                                                              \
  X(SIN, "Sin")                                                                \
  X(COS, "Cos")                                                                \
  X(NOT, "Not")       /* bool */                                               \
  X(GELU, "(gelu)")   /* x*0.5*(1+erf(x/sqrt2)), from a fused Erf pattern */   \
  X(SWISH, "(swish)") /* x*sigmoid(x), from a fused Sigmoid+Mul pattern */

typedef enum {
#define X(e, s) DM_UNARY_##e,
  DM_UNARY_MAP(X)
#undef X
      DM_UNARY_COUNT
} dm_unary;

#define DM_BINARY_MAP(X)                                                       \
  X(ADD, "Add")                                                                \
  X(SUB, "Sub")                                                                \
  X(MUL, "Mul")                                                                \
  X(DIV, "Div") /* integer Div truncates toward zero */                        \
  X(POW, "Pow")                                                                \
  X(MAX, "Max")                                                                \
  X(MIN, "Min")                                                                \
  X(MOD, "Mod")                                                                \
  X(EQUAL, "Equal") /* -> bool */                                              \
  X(LESS, "Less")                                                              \
  X(GREATER, "Greater")                                                        \
  X(LESSEQ, "LessOrEqual")                                                     \
  X(GREATEREQ, "GreaterOrEqual")                                               \
  X(AND, "And")                                                                \
  X(OR, "Or")                                                                  \
  X(XOR, "Xor")

typedef enum {
#define X(e, s) DM_BINARY_##e,
  DM_BINARY_MAP(X)
#undef X
      DM_BINARY_COUNT
} dm_binary;

#define DM_REDUCE_MAP(X)                                                       \
  X(MEAN, "ReduceMean")                                                        \
  X(SUM, "ReduceSum")                                                          \
  X(MAX, "ReduceMax")                                                          \
  X(MIN, "ReduceMin")                                                          \
  X(PROD, "ReduceProd")                                                        \
  X(L1, "ReduceL1")                                                            \
  X(L2, "ReduceL2")                                                            \
  X(SUMSQUARE, "ReduceSumSquare")                                              \
  X(LOGSUMEXP, "ReduceLogSumExp")

typedef enum {
#define X(e, s) DM_REDUCE_##e,
  DM_REDUCE_MAP(X)
#undef X
      DM_REDUCE_COUNT
} dm_reduce;

/* An activation fused into a producer, or a standalone unary. */
typedef struct dm_act {
  dm_unary kind;
  float alpha, beta;
} dm_act;

#define DM_MAX_POST 4
/* Post-operations of Conv/Gemm, applied in order to the output y:
 *   DM_POST_ACT: y = act(y)
 *   DM_POST_ADD: y = y + in[input]  (same shape as y; a residual Add)     */
typedef enum { DM_POST_ACT = 1, DM_POST_ADD = 2 } dm_post_kind;
typedef struct dm_post {
  dm_post_kind kind;
  dm_act act; /* ACT */
  int input;  /* ADD: index into dm_node.in */
} dm_post;

/* Quantization parameters of an 8-bit tensor: n scales and zero points
 * (n == 1: per tensor, else one per channel of the quantized axis). */
typedef struct dm_qparam {
  int64_t n;
  const float *scale; /* (n) */
  const int32_t *zp;  /* (n), widened */
  int32_t dtype;      /* DM_ONNX_UINT8 or DM_ONNX_INT8 */
} dm_qparam;

/* A Conv whose input and output are 8-bit (graph.c fuse_qdq folds
 * DequantizeLinear(x_q) -> Conv(+Relu/Clip) -> QuantizeLinear into it):
 * in[0] is x_q (uint8/int8, per-tensor x), in[1] the float weights (kept
 * for shapes and fallbacks), in[2] the float bias, out[0] the 8-bit output.
 * With acc[o] = sum (x_q - x.zp) * w_q (int32; padding contributes 0):
 *   y_q = sat(rint(post(acc * (x.scale * w.scale[o]) + bias[o]) / y.scale)
 *             + y.zp)
 * (rint: half to even), exactly QuantizeLinear of the float graph's value
 * up to float rounding of the scale products.
 * Float output (y.dtype == DM_ONNX_FLOAT, y.n == 0): when no QuantizeLinear
 * follows (e.g. a projection conv feeding a residual Add kept in fp32),
 * out[0] is float, y = post(acc * (x.scale * w.scale[o]) + bias[o]), and
 * post[] may also hold the residual ADD.
 * The same for a Gemm (fuse_qgemm: x_q [M, K], weights [N, K] with
 * trans_b, else [K, N], o the output column, C the bias; no ADD). */
typedef struct dm_qconv {
  dm_qparam x, w, y;
  int w_q; /* value index: int8 weights, the Conv's layout */
} dm_qconv;

/* An Add whose inputs and output are 8-bit (graph.c fuse_qadd folds
 * Add(DequantizeLinear(a_q), DequantizeLinear(b_q)) (+Relu/Clip in post[]) ->
 * QuantizeLinear into it, per-tensor parameters, same shapes, no
 * broadcasting): in[0], in[1] are a_q, b_q, out[0] the 8-bit output:
 *   y_q = sat(rint(post(a.scale * (a_q - a.zp) + b.scale * (b_q - b.zp))
 *                  / y.scale) + y.zp)
 * (rint: half to even), the float graph's value up to float rounding. */
typedef struct dm_qadd {
  dm_qparam a, b, y;
} dm_qadd;

/* A constant folded from DequantizeLinear of a constant (graph.c): its
 * quantized source, so fuse_qdq can run the consumer on the int8 data. */
typedef struct dm_dqsrc {
  int q, scale, zp; /* value indices (zp -1 when omitted) */
  int axis;         /* -1 per tensor */
} dm_dqsrc;

#define DM_MAX_SPATIAL 3
typedef struct dm_window { /* Conv and pooling geometry */
  int nsp;                 /* spatial dims: 1, 2 or 3 */
  int64_t kernel[DM_MAX_SPATIAL];
  int64_t stride[DM_MAX_SPATIAL];
  int64_t dil[DM_MAX_SPATIAL];   /* 1 when absent */
  int64_t pad_b[DM_MAX_SPATIAL]; /* begin pads, auto_pad resolved */
  int64_t pad_e[DM_MAX_SPATIAL]; /* end pads; for ceil_mode pooling these */
                                 /* are the ONNX pads, not the overhang   */
} dm_window;

typedef struct dm_node {
  dm_op op;
  const char *name;    /* ONNX node name (or op_type#index), for messages */
  const char *op_type; /* ONNX op_type as written */
  int n_in, n_out;
  int *in;  /* value indices; -1 for an omitted optional input */
  int *out; /* value indices */
  int n_post;
  dm_post post[DM_MAX_POST]; /* CONV, GEMM; ACT only on 8-bit ADD */
  bool no_fuse;        /* on the Grad-CAM tail: kept elementary (grad.c) */
  const dm_qconv *q;   /* CONV or GEMM on 8-bit data (fuse_qdq, fuse_qgemm) */
  const dm_qadd *qadd; /* BINARY ADD on 8-bit data (fuse_qadd), else NULL */
  union {
    struct {
      dm_window w;
      int64_t group;
    } conv; /* in: X, W, [B], adds.. */
    struct {
      float eps;
    } bn;         /* in: X, scale, B, mean, var */
    dm_act unary; /* in: X */
    struct {
      dm_binary kind;
      bool fmod;
    } binary; /* numpy broadcasting */
    struct {
      dm_window w;
      bool ceil_mode, count_include_pad;
      int64_t storage_order; /* only 0 */
    } pool;
    struct {
      dm_reduce kind;
      uint32_t axes_mask; /* bit i set: reduce dim i (empty = all unless */
      bool keepdims;      /* noop_with_empty_axes; resolved at build)    */
    } reduce;
    struct {
      int64_t perm[DM_MAX_RANK];
    } transpose;
    struct {
      int axis;
    } concat;
    struct {
      int axis;
    } split; /* output sizes from the out shapes */
    struct {
      int64_t start[DM_MAX_RANK]; /* per input dim, normalised, clamped */
      int64_t step[DM_MAX_RANK];  /* out dims give the counts */
    } slice;
    struct {
      int mode;                      /* 0 constant, 1 reflect, 2 edge */
      int64_t pads[2 * DM_MAX_RANK]; /* begins then ends, may be negative */
      double value;
    } pad;
    struct {
      float alpha, beta;
      bool trans_a, trans_b;
    } gemm; /* C optional */
    struct {
      int axis;    /* normalised; opset < 13: coerced 2-D at axis */
      bool legacy; /* opset < 13 semantics (flatten at axis) */
      bool log;    /* LogSoftmax */
    } softmax;
    struct {
      int64_t start, end;
    } shape; /* normalised slice of the shape */
    struct {
      int axis;
    } gather; /* indices may be negative */
    struct {
      int32_t to;
    } cast;
    struct {
      double value;
    } constantofshape; /* dtype from output value */
    struct {
      int axis;
      float eps;
    } layernorm; /* in: X, scale, [B] */
    struct {
      float eps;
    } instancenorm; /* in: X, scale, B */
    struct {
      int64_t size;
      float alpha, beta, bias;
    } lrn;
    struct {
      int axis;
      bool keepdims, min, last;
    } argmax; /* -> int64 */
    /* QuantizeLinear: y = sat(rint_half_even(x / scale) + zp), y dtype =
     * zp dtype (uint8 when zp is omitted); DequantizeLinear: y = (x - zp) *
     * scale in float32.  axis < 0: per-tensor (scale has one value), else
     * scale and zp hold dims[axis] values (per-axis, opset >= 13). */
    struct {
      int axis;
    } quant;
  } p;
} dm_node;

typedef enum { DM_VAL_INPUT, DM_VAL_CONST, DM_VAL_ACT } dm_val_kind;

typedef struct dm_value {
  const char *name;
  int32_t dtype; /* DM_ONNX_* */
  int rank;
  int64_t dims[DM_MAX_RANK];
  int64_t numel;
  size_t nbytes;
  dm_val_kind kind;
  const void *data;   /* CONST: element data (see `unaligned`) */
  bool unaligned;     /* CONST: data points into the file, not aligned */
  const dm_dqsrc *dq; /* CONST folded from DequantizeLinear, or NULL */
  void *owned;        /* CONST: buffer owned by the graph, or NULL */
  int producer;       /* node index, -1 for INPUT/CONST */
  int n_consumers;    /* live nodes reading it (+1 if a graph output) */
  bool is_output;     /* a graph output */
  /* memory plan for INPUT/ACT values (set by dm__graph_plan) */
  size_t offset; /* byte offset in the session arena */
  int alias_of;  /* value whose storage this one shares (views), or -1 */
} dm_value;

typedef struct dm_graph {
  const dm_onnx_model *model;
  int64_t opset;
  dm_value *values;
  int n_values, cap_values;
  dm_node *nodes;
  int n_nodes, cap_nodes;
  int *inputs; /* graph inputs (INPUT values) in file order */
  int n_inputs;
  int *outputs; /* graph outputs in file order */
  int n_outputs;
  size_t arena_bytes;
  dm_engine_stats stats;
  /* Grad-CAM (dm_graph_opts.cam): the target value (also the last graph
   * output), the score value (the first output, or the input of a final
   * Softmax) and the tail: node indices from target to score in order.
   * cam_section: the ops after the target are not a plain-C tail (a Conv,
   * pooling window, residual Add or Concat sits in between); cam_tail then
   * lists every node on a path from target to score (topological order),
   * and the forward values they read and write are kept as extra graph
   * outputs (after the target) for the backward pass. */
  int cam_target, cam_score;
  int *cam_tail;
  int n_cam_tail;
  bool cam_section;
  int n_user_outputs; /* outputs of the file; kept values, then the */
                      /* Grad-CAM target come after                   */
  int *keep;          /* dm_graph_opts.keep resolved to value indices */
  int n_keep;
  void *pool; /* allocation list of the graph (names, params, buffers) */
} dm_graph;

typedef struct dm_graph_opts {
  bool fuse;        /* BN folding, activation/add fusion */
  bool alias_views; /* Reshape-family outputs alias their input storage */
  const dm_tensor *input_shapes; /* see dm_engine_opts */
  size_t n_input_shapes;
  bool cam;                /* resolve a Grad-CAM target, keep it as output */
  const char *cam_target;  /* tensor name, NULL = automatic */
  const char *const *keep; /* see dm_engine_opts.keep */
  size_t n_keep;
  /* Largest |int8 weight| a dense Conv, or a depthwise Conv on int8 input,
   * fused to 8-bit (fuse_qdq) may have;
   * 0: any.  64 where the backend's int8 convs add pairs of products in
   * saturating 16-bit lanes (CPUs without VNNI): 255 * (64 + 64) < 2^15.
   * Convs with larger weights then run in float on dequantized weights,
   * which is what the QDQ graph means. */
  int int8_wmax;
} dm_graph_opts;

/* graph.c */
dm_err dm__graph_build(const dm_onnx_model *m, const dm_graph_opts *o,
                       dm_graph **out, dm_errbuf *eb);
void dm__graph_free(dm_graph *g);
/* Copies an unaligned constant into an aligned buffer owned by the graph
 * (no-op when aligned).  Build time only: not thread-safe. */
dm_err dm__graph_align_const(dm_graph *g, int v);
/* Allocation tied to the graph's lifetime (zeroed, 64-byte aligned). */
void *dm__graph_alloc(dm_graph *g, size_t n);
/* Byte address of value v inside a session arena (INPUT/ACT) or its constant
 * data. */
void *dm__value_ptr(const dm_graph *g, int v, void *arena);
const char *dm__op_name(dm_op op);
size_t dm__dtype_size(int32_t dtype);

/* grad.c: Grad-CAM support, see engine.h dm_session_run_cam.  Resolves the
 * target and the tail on the graph before optimisation (graph.c calls it). */
dm_err dm__cam_resolve(dm_graph *g, const char *target, dm_errbuf *eb);
/* After the passes: recomputes the tail's node indices. */
dm_err dm__cam_finish(dm_graph *g, dm_errbuf *eb);
typedef struct dm_cam_state dm_cam_state;
dm_err dm__cam_state_new(const dm_graph *g, dm_cam_state **out, dm_errbuf *eb);
void dm__cam_state_free(dm_cam_state *st);

/* Grad-CAM backward operators a backend may provide for the Conv and
 * pooling nodes of a section (g->cam_section).  All buffers are plain
 * row-major float32 in the node's shapes.  Ops are built once per engine,
 * after prepare(), and are read-only afterwards: sessions on different
 * threads may call them at once (each call brings its own stream and
 * scratch).  A backend without them (NULL dm_backend.grad, or op_new leaving
 * *op NULL) gets grad.c's plain C for that node. */
typedef struct dm_grad_ops {
  /* Node ni of the prepared graph: CONV (backward data of the convolution,
   * and its forward with bias but without post-ops, to recompute
   * pre-activations) or MAXPOOL/AVGPOOL (backward). */
  dm_err (*op_new)(void *state, int ni, void **op, dm_errbuf *eb);
  void (*op_free)(void *op);
  /* dx = J^T dy of the node's convolution (no bias, no post-ops) or
   * pooling; x is the node's forward input (max pooling reads it).  dx is
   * overwritten. */
  dm_err (*backward)(void *op, const float *x, const float *dy, float *dx,
                     dm_errbuf *eb);
  /* CONV only: y = conv(x) + bias, before the post-ops. */
  dm_err (*forward)(void *op, const float *x, float *y, dm_errbuf *eb);
} dm_grad_ops;

/* What dm__cam_backward reads from one run. */
typedef struct dm_cam_io {
  const float *activation; /* target value (plain NCHW) */
  const float *scores;     /* the engine's output when it is the score */
                           /* tensor (saves the tail forward), or NULL  */
  const void *const *outs; /* every graph output (g->outputs order): the */
                           /* section's kept forward values             */
  const dm_grad_ops *ops;  /* section: backend operators, or NULL */
  void *const *op;         /* per node index: backend op or NULL */
} dm_cam_io;

/* Tail: forward from the target activation, then backward of score[class]
 * to the target.  Section: backward of score[class] through the section on
 * the kept forward values.  class_index < 0: argmax of the score. */
dm_err dm__cam_backward(const dm_graph *g, dm_cam_state *st,
                        const dm_cam_io *io, int class_index, int *class_out,
                        float *score_out, float *grad_out, dm_errbuf *eb);

/* Output positions o in [lo, hi) with 0 <= o*s + off < n_in (s >= 1): the
 * window loops of the reference Conv (backend_ref.c) and of its backward
 * (grad.c). */
void dm__valid_range(int64_t off, int64_t s, int64_t n_in, int64_t n_out,
                     int64_t *lo, int64_t *hi);

/* backend_ref.c: QuantizeLinear of one value, sat(rint(x / scale) + zp)
 * (ties to even, NaN -> zp) saturated to uint8 (u8) or int8: the oracle's
 * arithmetic, shared by every 8-bit kernel. */
int32_t dm__quantize_one(float x, float scale, int32_t zp, bool u8);

/* backend_ref.c: one node on plain (row-major, NCHW) buffers.  in[i] is NULL
 * for an omitted optional input.  Supports every dm_op and every dtype the
 * graph builder lets through for it (float32 for math; int64/int32/bool and
 * others for the data-movement and shape ops used in constant folding).
 * Never allocates for float32 Conv/Gemm/MatMul beyond small stack use; may
 * malloc for rare ops (returns DM_NOMEM on failure). */
dm_err dm__ref_node(const dm_graph *g, const dm_node *n, const void *const *in,
                    void *const *out, dm_errbuf *eb);

/* backend_ref.c: one element of float activation a (what the reference
 * kernels compute for it). */
float dm__ref_act(const dm_act *a, float x);

/* stem.c: a network's first two convolutions as one pass (backend_onednn.c
 * runs it when the CPU has AVX-512F): a 3x3 stride-2 conv from a
 * plain NCHW float image of cin channels to c channels, its activations,
 * a 3x3 stride-1 depthwise conv padded by 1, its activations, and the
 * per-tensor QuantizeLinear after it.  Output channels-last (NHWC),
 * 8-bit.  Weights packed by dm__stem_pack. */
#define DM_STEM_MAX_CIN 4
#define DM_STEM_MAX_C 32
typedef struct dm_stem {
  int cin, c;         /* input channels, channels */
  int ih, iw, oh, ow; /* input map; output map of both convs */
  int pt, pl;         /* the first conv's top and left padding, 0 or 1 */
  float *w1;          /* (9*cin, DM_STEM_MAX_C): first conv, tap (ky,kx,ci) */
  float *b1;          /* (DM_STEM_MAX_C), zero past c */
  float *w2;          /* (9, DM_STEM_MAX_C): the depthwise conv */
  float *b2;          /* (DM_STEM_MAX_C) */
  dm_act act1[DM_MAX_POST + 1], act2[DM_MAX_POST + 1];
  int n_act1, n_act2;
  bool u8;     /* uint8 output, else int8 */
  float scale; /* y = sat(rint(x / scale) + zp), as the QDQ pass */
  int32_t zp;
} dm_stem;

/* Floats of packed weights for s (cin, c set): w1, b1, w2, b2 in a row. */
size_t dm__stem_floats(const dm_stem *s);

/* Points s's weights into `mem` (dm__stem_floats of them, 64-byte
 * aligned) and fills them: w1 from a Conv's (c, cin, 3, 3) float weights,
 * w2 from a depthwise Conv's (c, 1, 3, 3); biases may be NULL (zero).
 * The sources may be unaligned (raw_data in a mapped file). */
void dm__stem_pack(dm_stem *s, float *mem, const void *w1, const void *b1,
                   const void *w2, const void *b2);

/* Scratch bytes one thread needs for dm__stem_rows. */
size_t dm__stem_scratch(const dm_stem *s);

/* Output rows [r0, r1) of a batch (row r of image r / oh): x the NCHW
 * input batch, y the NHWC output batch.  Needs AVX-512F.  Threads may run
 * disjoint row ranges at once, each with its own scratch. */
void dm__stem_rows(const dm_stem *s, void *y, const float *x, int64_t r0,
                   int64_t r1, void *scratch);

/* pw.c: a float 1x1 convolution (no padding) on channels-last
 * maps, any multiple of 8 output channels, with its bias and post-ops,
 * for Zen 4 (dm__pw_cpu), where it beats oneDNN 2.6's kernel.  Weights
 * packed by dm__pw_pack. */
typedef struct dm_pw {
  int k, oc;          /* input channels, output channels */
  int stride;         /* 1, or both dims' stride, with the maps below: */
  int ih, iw, oh, ow; /* one image's input and output map */
  float *w;   /* per group of 64 output channels (k, 64), then the rest */
  float *b;   /* (oc), zeros without a bias */
  int n_post; /* post-ops in order: */
  bool sum[DM_MAX_POST + 1];   /* y += what y held before (a residual) */
  dm_act act[DM_MAX_POST + 1]; /* else this activation */
} dm_pw;

/* Whether dm__pw_rows takes oc output channels: a multiple of 8. */
bool dm__pw_shape(int oc);

/* Whether the CPU is one the pass is for: AVX-512 on an AMD family 19h
 * core (Zen 4, whose 512-bit FMAs are two 256-bit halves). */
bool dm__pw_cpu(void);

/* Floats of packed weights for p (k, oc set): w, then b. */
size_t dm__pw_floats(const dm_pw *p);

/* Points p's weights into mem (dm__pw_floats of them) and fills them from
 * a Conv's (oc, k, 1, 1) float weights and bias (may be NULL); the
 * sources may be unaligned (raw_data in a mapped file). */
void dm__pw_pack(dm_pw *p, float *mem, const void *w, const void *b);

/* Pixels [p0, p1) of a channels-last batch: y (oc floats a pixel; read
 * first where a post-op is a sum) from x (k floats a pixel).  Needs
 * AVX-512F; threads may run disjoint pixel ranges at once. */
void dm__pw_rows(const dm_pw *p, float *y, const float *x, size_t p0,
                 size_t p1);

/* A backend executes a built graph. */
typedef struct dm_backend {
  const char *name;
  /* Builds per-engine state (primitives, reordered weights). */
  dm_err (*prepare)(const dm_graph *g, const dm_engine_opts *o, void **state,
                    dm_errbuf *eb);
  void (*release)(void *state);
  /* Per-session scratch. */
  dm_err (*session_new)(void *state, void **sess, dm_errbuf *eb);
  void (*session_free)(void *sess);
  /* inputs: plain buffers of the graph inputs, in dm_graph.inputs order.
   * outputs: where to write the graph outputs (plain layout, float32 or the
   * output dtype), in dm_graph.outputs order. */
  dm_err (*run)(void *state, void *sess, const void *const *inputs,
                void *const *outputs, dm_errbuf *eb);
  const char *(*precision)(void *state);
  const dm_grad_ops *grad; /* Grad-CAM section operators; NULL: plain C */
  /* Bytes of the activation arena each session maps, when the backend
   * plans its own (NULL: the graph's plan, dm_graph.arena_bytes). */
  size_t (*arena_bytes)(void *state);
} dm_backend;

/* backend_onednn.c: whether this CPU runs bf16 convolutions natively
 * (AVX512-BF16 or AMX, a JIT kernel for a probe conv). */
bool dm__onednn_bf16_native(void);
/* backend_onednn.c: whether oneDNN's int8 convs here add pairs of products
 * in saturating 16-bit lanes (no VNNI; see dm_graph_opts.int8_wmax). */
bool dm__onednn_int8_saturates(void);

extern const dm_backend dm__backend_ref;
extern const dm_backend dm__backend_onednn;

#endif
