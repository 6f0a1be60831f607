/* test_grad.c: the Grad-CAM gradients (src/engine/grad.c) against finite
 * differences.  Each case is a small generated graph whose input x [1,C,H,W]
 * is also the Grad-CAM target, followed by a head made of the ops the tail
 * supports (global average/max pooling, ReduceMean, Flatten/Reshape, Gemm
 * with transposes, MatMul, Add/Mul/Sub/Div by constants, activations).  The
 * gradient dm_session_run_cam returns must equal
 *   (score(x + h e_i) - score(x - h e_i)) / 2h
 * for every element i, on both backends.  Also: automatic target choice,
 * refusal of a tail op without a backward rule, and the CAM formulas.
 * Then earlier targets: generated graphs with Convs (BatchNorm folded,
 * grouped/depthwise, strided, dilated, fused activations and residual
 * Adds), MaxPool/AveragePool, Mul/Sub/Div with broadcasting and Concat
 * between the target x and the head, checked the same way on oneDNN (its
 * backward primitives), ref, and ref without fusions, plus oneDNN against
 * ref element by element.  Quantized heads: QuantizeLinear/DequantizeLinear
 * pairs against the straight-through gradient.
 * Last line: `test_grad: N tests_passed, N tests_failed`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dermal/engine.h"
#include "dermal/explain.h"
#include "dermal/onnx.h"
#include "pb_builder.h"

#define IN(...) ((const char *const[]){__VA_ARGS__, NULL})

static uint32_t rng = 7;
static float frand(void) {
  rng = rng * 1664525u + 1013904223u;
  return (float)(rng >> 8) / 16777216.0f * 2.f - 1.f;
}

static void init_f(pb *g, const char *name, const int64_t *dims, int nd,
                   float scale) {
  size_t n = 1;
  for (int i = 0; i < nd; i++)
    n *= (size_t)dims[i];
  float *v = malloc(n * sizeof *v);
  for (size_t i = 0; i < n; i++)
    v[i] = frand() * scale;
  pb_tensor_f(g, 5, name, dims, nd, v);
  free(v);
}

enum { C = 4, H = 3, W = 5, K = 6, NCLS = 5 };

typedef enum {
  HEAD_GAP_GEMM,      /* GAP, Flatten, Gemm(transB) */
  HEAD_GMP_MLP,       /* GlobalMaxPool, Flatten, Gemm, HardSwish, Gemm */
  HEAD_REDUCEMEAN_MM, /* ReduceMean(2,3) keepdims 0, MatMul, Add, Sigmoid,
                         Mul const, Sub const, Div const, MatMul */
  HEAD_FLATTEN_MLP,   /* Flatten of the map, Gemm(transA? no), Tanh, Gemm
                         (alpha 0.5), Softmax at the end */
  HEAD_SWISH,         /* GAP, Reshape, Gemm, Sigmoid*x (swish), Gemm */
  HEAD_BAD,           /* GAP, Flatten, Gemm, LRN-free but Softmax in the
                         middle: no backward rule */
} head;

/* The graph's name, input x [1,C,H,W] and output y [1,NCLS]; the model. */
static pb finish_head(pb *g) {
  pb_str(g, 2, "grad-test");
  int64_t xd[] = {1, C, H, W}, yd[] = {1, NCLS};
  pb_value_info(g, 11, "x", xd, 4);
  pb_value_info(g, 12, "y", yd, 2);
  return pb_model(g, 13);
}

static pb build(head h) {
  pb g = {0}, n;
  int64_t wd[2];
  switch (h) {
  case HEAD_GAP_GEMM:
    n = pb_node("GlobalAveragePool", "gap", IN("x"), IN("p"));
    pb_msg(&g, 1, &n);
    n = pb_node("Flatten", "flat", IN("p"), IN("f"));
    pb_msg(&g, 1, &n);
    n = pb_node("Gemm", "fc", IN("f", "w1", "b1"), IN("y"));
    pb_attr_int(&n, "transB", 1);
    pb_msg(&g, 1, &n);
    wd[0] = NCLS, wd[1] = C;
    init_f(&g, "w1", wd, 2, 1.f);
    init_f(&g, "b1", wd, 1, 0.1f);
    break;
  case HEAD_GMP_MLP:
    n = pb_node("GlobalMaxPool", "gmp", IN("x"), IN("p"));
    pb_msg(&g, 1, &n);
    n = pb_node("Flatten", "flat", IN("p"), IN("f"));
    pb_msg(&g, 1, &n);
    n = pb_node("Gemm", "fc1", IN("f", "w1"), IN("h1"));
    pb_msg(&g, 1, &n);
    n = pb_node("HardSwish", "hs", IN("h1"), IN("a1"));
    pb_msg(&g, 1, &n);
    n = pb_node("Gemm", "fc2", IN("a1", "w2", "b2"), IN("y"));
    pb_attr_int(&n, "transB", 1);
    pb_msg(&g, 1, &n);
    wd[0] = C, wd[1] = K;
    init_f(&g, "w1", wd, 2, 2.f);
    wd[0] = NCLS, wd[1] = K;
    init_f(&g, "w2", wd, 2, 1.f);
    init_f(&g, "b2", wd, 1, 0.1f);
    break;
  case HEAD_REDUCEMEAN_MM: {
    n = pb_node("ReduceMean", "rm", IN("x"), IN("p"));
    int64_t ax[2] = {2, 3};
    pb_attr_ints(&n, "axes", ax, 2);
    pb_attr_int(&n, "keepdims", 0);
    pb_msg(&g, 1, &n);
    n = pb_node("MatMul", "mm1", IN("p", "w1"), IN("h1"));
    pb_msg(&g, 1, &n);
    n = pb_node("Add", "add", IN("h1", "b1"), IN("h2"));
    pb_msg(&g, 1, &n);
    n = pb_node("Sigmoid", "sig", IN("h2"), IN("h3"));
    pb_msg(&g, 1, &n);
    n = pb_node("Mul", "mul", IN("s2", "h3"), IN("h4"));
    pb_msg(&g, 1, &n);
    n = pb_node("Sub", "sub", IN("h4", "b1"), IN("h5"));
    pb_msg(&g, 1, &n);
    n = pb_node("Div", "div", IN("h5", "s2"), IN("h6"));
    pb_msg(&g, 1, &n);
    n = pb_node("MatMul", "mm2", IN("h6", "w2"), IN("y"));
    pb_msg(&g, 1, &n);
    wd[0] = C, wd[1] = K;
    init_f(&g, "w1", wd, 2, 2.f);
    wd[0] = K;
    init_f(&g, "b1", wd, 1, 0.2f);
    float two = 2.5f;
    pb_tensor_f(&g, 5, "s2", NULL, 0, &two);
    wd[0] = K, wd[1] = NCLS;
    init_f(&g, "w2", wd, 2, 1.f);
    break;
  }
  case HEAD_FLATTEN_MLP:
    n = pb_node("Flatten", "flat", IN("x"), IN("f"));
    pb_msg(&g, 1, &n);
    n = pb_node("Gemm", "fc1", IN("f", "w1"), IN("h1"));
    pb_msg(&g, 1, &n);
    n = pb_node("Tanh", "tanh", IN("h1"), IN("a1"));
    pb_msg(&g, 1, &n);
    n = pb_node("Gemm", "fc2", IN("a1", "w2"), IN("l"));
    pb_attr_float(&n, "alpha", 0.5f);
    pb_msg(&g, 1, &n);
    n = pb_node("Softmax", "sm", IN("l"), IN("y"));
    pb_msg(&g, 1, &n);
    wd[0] = C * H * W, wd[1] = K;
    init_f(&g, "w1", wd, 2, 0.3f);
    wd[0] = K, wd[1] = NCLS;
    init_f(&g, "w2", wd, 2, 1.f);
    break;
  case HEAD_SWISH: {
    n = pb_node("GlobalAveragePool", "gap", IN("x"), IN("p"));
    pb_msg(&g, 1, &n);
    n = pb_node("Reshape", "rs", IN("p", "shape"), IN("f"));
    pb_msg(&g, 1, &n);
    n = pb_node("Gemm", "fc1", IN("f", "w1"), IN("h1"));
    pb_msg(&g, 1, &n);
    n = pb_node("Sigmoid", "sig", IN("h1"), IN("s1"));
    pb_msg(&g, 1, &n);
    n = pb_node("Mul", "swish", IN("h1", "s1"), IN("a1"));
    pb_msg(&g, 1, &n);
    n = pb_node("Gemm", "fc2", IN("a1", "w2"), IN("y"));
    pb_msg(&g, 1, &n);
    int64_t two = 2, shp[2] = {1, C};
    pb_tensor_i64(&g, 5, "shape", &two, 1, shp);
    wd[0] = C, wd[1] = K;
    init_f(&g, "w1", wd, 2, 3.f);
    wd[0] = K, wd[1] = NCLS;
    init_f(&g, "w2", wd, 2, 1.f);
    break;
  }
  case HEAD_BAD:
    n = pb_node("GlobalAveragePool", "gap", IN("x"), IN("p"));
    pb_msg(&g, 1, &n);
    n = pb_node("Flatten", "flat", IN("p"), IN("f"));
    pb_msg(&g, 1, &n);
    n = pb_node("Softmax", "inner_softmax", IN("f"), IN("s"));
    pb_msg(&g, 1, &n);
    n = pb_node("Gemm", "fc", IN("s", "w1"), IN("y"));
    pb_attr_int(&n, "transB", 1);
    pb_msg(&g, 1, &n);
    wd[0] = NCLS, wd[1] = C;
    init_f(&g, "w1", wd, 2, 1.f);
    break;
  }
  return finish_head(&g);
}

/* Score of class c for input x (pre-softmax when the graph ends in Softmax:
 * the test recomputes log-free logits by running without the Softmax is
 * not possible, so the FD uses the engine's own score through run_cam). */
static float score_of(dm_session *s, float *x, int c) {
  dm_tensor t = {
      .dtype = DM_ONNX_FLOAT, .rank = 4, .dims = {1, C, H, W}, .data = x};
  dm_cam_result r;
  dm_errbuf eb;
  if (dm_session_run_cam(s, &t, 1, c, &r, &eb)) return NAN;
  return r.score;
}

static void check_head(head h, const char *name) {
  pb mb = build(h);
  dm_onnx_model *m = NULL;
  dm_errbuf eb = {{0}};
  if (dm_onnx_parse(mb.p, mb.n, NULL, &m, &eb)) {
    CHECK(0, "%s: parse: %s", name, eb.msg);
    free(mb.p);
    return;
  }
  for (int be = 0; be < 2; be++) {
    dm_engine_opts o = {.backend = (dm_backend_kind)be,
                        .threads = 1,
                        .cam = true,
                        .cam_target = "x"};
    dm_engine *e = NULL;
    dm_session *s = NULL;
    if (dm_engine_new(m, &o, &e, &eb) || dm_session_new(e, &s, &eb)) {
      CHECK(0, "%s: engine: %s", name, eb.msg);
      dm_engine_free(e);
      continue;
    }
    float x[C * H * W], g[C * H * W];
    for (int i = 0; i < C * H * W; i++)
      x[i] = frand() * 1.5f;
    dm_tensor t = {
        .dtype = DM_ONNX_FLOAT, .rank = 4, .dims = {1, C, H, W}, .data = x};
    dm_cam_result r;
    for (int cls = 0; cls < NCLS; cls += 2) {
      if (dm_session_run_cam(s, &t, 1, cls, &r, &eb)) {
        CHECK(0, "%s: run_cam: %s", name, eb.msg);
        break;
      }
      CHECK(r.class_index == cls && r.c == C && r.h == H && r.w == W,
            "%s: result shape", name);
      memcpy(g, r.gradient, sizeof g);
      double worst = 0, gmax = 0;
      for (int i = 0; i < C * H * W; i++) {
        float keep = x[i], hh = 1e-2f;
        x[i] = keep + hh;
        float up = score_of(s, x, cls);
        x[i] = keep - hh;
        float dn = score_of(s, x, cls);
        x[i] = keep;
        double fd = ((double)up - dn) / (2.0 * hh);
        double d = fabs(fd - g[i]);
        if (d > worst) worst = d;
        if (fabs(fd) > gmax) gmax = fabs(fd);
      }
      CHECK(worst <= 2e-3 * (gmax > 1 ? gmax : 1),
            "%s [%s] class %d: |analytic - finite difference| %.3g (max %.3g)",
            name, be ? "ref" : "onednn", cls, worst, gmax);
    }
    /* the top-1 class by default */
    if (!dm_session_run_cam(s, &t, 1, -1, &r, &eb)) {
      dm_tensor y = dm_session_output(s, 0);
      const float *p = y.data;
      int best = 0;
      for (int i = 1; i < NCLS; i++)
        if (p[i] > p[best]) best = i;
      CHECK(r.class_index == best, "%s: default class %d, top-1 %d", name,
            r.class_index, best);
    }
    dm_session_free(s);
    dm_engine_free(e);
  }
  dm_onnx_free(m);
  free(mb.p);
}

static void check_refusals(void) {
  pb mb = build(HEAD_BAD);
  dm_onnx_model *m = NULL;
  dm_errbuf eb = {{0}};
  if (dm_onnx_parse(mb.p, mb.n, NULL, &m, &eb)) {
    CHECK(0, "parse: %s", eb.msg);
    free(mb.p);
    return;
  }
  dm_engine_opts o = {
      .backend = DM_BACKEND_REF, .cam = true, .cam_target = "x"};
  dm_engine *e = NULL;
  dm_err rc = dm_engine_new(m, &o, &e, &eb);
  CHECK(rc == DM_UNSUPPORTED && strstr(eb.msg, "inner_softmax") &&
            strstr(eb.msg, "Softmax"),
        "tail op without backward refused, naming it: %s", eb.msg);
  dm_engine_free(e);
  o.cam_target = "nope";
  e = NULL;
  rc = dm_engine_new(m, &o, &e, &eb);
  CHECK(rc == DM_ARG && strstr(eb.msg, "nope"), "unknown target: %s", eb.msg);
  dm_engine_free(e);
  dm_onnx_free(m);
  free(mb.p);
  /* automatic target: the input of the global pooling */
  mb = build(HEAD_GAP_GEMM);
  if (!dm_onnx_parse(mb.p, mb.n, NULL, &m, &eb)) {
    o.cam_target = NULL;
    e = NULL;
    rc = dm_engine_new(m, &o, &e, &eb);
    CHECK(rc == DM_OK && !strcmp(dm_engine_cam_target(e), "x"),
          "automatic target: %s", rc ? eb.msg : dm_engine_cam_target(e));
    CHECK(e && dm_engine_n_outputs(e) == 1, "target not counted as output");
    dm_engine_free(e);
    dm_onnx_free(m);
  }
  free(mb.p);
}

/* ---- earlier targets: Conv, pooling, Add/Mul, Concat before the head ---- */

enum { SC = 4, SH = 8, SW = 8 }; /* x [1, SC, SH, SW] */

typedef enum {
  SECT_RESNET, /* Conv+BN+Relu, MaxPool(3,s2,p1), basic block with residual
                  Add, strided 1x1 downsample branch, GAP, Gemm */
  SECT_MOBILE, /* 1x1 expand + Clip(0,6), depthwise 3x3 s2 + Clip, 1x1
                  project, SE (GAP, Conv, Relu, Conv, HardSigmoid, Mul
                  broadcast), HardSwish, AveragePool(ceil, exclude pad),
                  Concat with a dilated branch, GAP, Gemm */
  SECT_SWISH,  /* Conv + x*Sigmoid(x) (pre-activation recomputed), dilated
                  Conv + Relu + Add + Relu (two activations fused around an
                  Add), Mul of two branches, Sub/Div by constants,
                  AveragePool(include pad), ReduceMean, MatMul */
  SECT_BAD,    /* Conv, LRN, GAP, Gemm: LRN has no backward rule */
} sect;

static void conv_node(pb *g, const char *name, const char *x, const char *y,
                      int64_t cin, int64_t cout, int64_t k, int64_t stride,
                      int64_t pad, int64_t dil, int64_t group, bool bias) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.w", name);
  snprintf(bn, sizeof bn, "%s.b", name);
  pb n = bias ? pb_node("Conv", name, IN(x, wn, bn), IN(y))
              : pb_node("Conv", name, IN(x, wn), IN(y));
  int64_t ks[2] = {k, k}, st[2] = {stride, stride},
          pd[4] = {pad, pad, pad, pad}, dl[2] = {dil, dil};
  pb_attr_ints(&n, "kernel_shape", ks, 2);
  pb_attr_ints(&n, "strides", st, 2);
  pb_attr_ints(&n, "pads", pd, 4);
  pb_attr_ints(&n, "dilations", dl, 2);
  pb_attr_int(&n, "group", group);
  pb_msg(g, 1, &n);
  int64_t wd[4] = {cout, cin / group, k, k};
  init_f(g, wn, wd, 4, 1.5f / sqrtf((float)(cin / group * k * k)));
  if (bias) init_f(g, bn, wd, 1, 0.2f);
}

static void bn_node(pb *g, const char *name, const char *x, const char *y,
                    int64_t c) {
  char s[64], b[64], m[64], v[64];
  snprintf(s, sizeof s, "%s.s", name);
  snprintf(b, sizeof b, "%s.b", name);
  snprintf(m, sizeof m, "%s.m", name);
  snprintf(v, sizeof v, "%s.v", name);
  pb n = pb_node("BatchNormalization", name, IN(x, s, b, m, v), IN(y));
  pb_msg(g, 1, &n);
  float sv[64], bv[64], mv[64], vv[64];
  for (int64_t i = 0; i < c; i++) {
    sv[i] = 0.8f + 0.4f * frand();
    bv[i] = 0.2f * frand();
    mv[i] = 0.1f * frand();
    vv[i] = 1.0f + 0.5f * frand();
  }
  pb_tensor_f(g, 5, s, &c, 1, sv);
  pb_tensor_f(g, 5, b, &c, 1, bv);
  pb_tensor_f(g, 5, m, &c, 1, mv);
  pb_tensor_f(g, 5, v, &c, 1, vv);
}

static void unary_node(pb *g, const char *op, const char *x, const char *y) {
  pb n = pb_node(op, y, IN(x), IN(y));
  pb_msg(g, 1, &n);
}

static void binary_node(pb *g, const char *op, const char *a, const char *b,
                        const char *y) {
  pb n = pb_node(op, y, IN(a, b), IN(y));
  pb_msg(g, 1, &n);
}

static void pool_node(pb *g, const char *op, const char *x, const char *y,
                      int64_t k, int64_t s, int64_t pad, int ceil, int incl) {
  pb n = pb_node(op, y, IN(x), IN(y));
  int64_t ks[2] = {k, k}, st[2] = {s, s}, pd[4] = {pad, pad, pad, pad};
  pb_attr_ints(&n, "kernel_shape", ks, 2);
  pb_attr_ints(&n, "strides", st, 2);
  pb_attr_ints(&n, "pads", pd, 4);
  if (ceil) pb_attr_int(&n, "ceil_mode", 1);
  if (incl) pb_attr_int(&n, "count_include_pad", 1);
  pb_msg(g, 1, &n);
}

/* GAP, Flatten, Gemm(transB) from a [1, c, h, w] map to y [1, NCLS]. */
/* GlobalAveragePool, Flatten, Gemm(transB) to y [1,NCLS]; the Gemm weights
 * [NCLS,c] are also copied to w when it is not NULL. */
static void gap_head(pb *g, const char *x, int64_t c, float *w) {
  unary_node(g, "GlobalAveragePool", x, "gp");
  unary_node(g, "Flatten", "gp", "gf");
  pb n = pb_node("Gemm", "fc", IN("gf", "fc.w", "fc.b"), IN("y"));
  pb_attr_int(&n, "transB", 1);
  pb_msg(g, 1, &n);
  int64_t wd[2] = {NCLS, c};
  float *v = malloc((size_t)(NCLS * c) * sizeof *v);
  for (int64_t i = 0; i < NCLS * c; i++)
    v[i] = frand();
  pb_tensor_f(g, 5, "fc.w", wd, 2, v);
  if (w) memcpy(w, v, (size_t)(NCLS * c) * sizeof *v);
  free(v);
  init_f(g, "fc.b", wd, 1, 0.1f);
}

static pb build_sect(sect k) {
  pb g = {0};
  switch (k) {
  case SECT_RESNET:
    conv_node(&g, "c1", "x", "c1o", SC, 6, 3, 1, 1, 1, 1, false);
    bn_node(&g, "bn1", "c1o", "b1o", 6);
    unary_node(&g, "Relu", "b1o", "r1");
    pool_node(&g, "MaxPool", "r1", "mp", 3, 2, 1, 0, 0); /* 4x4 */
    conv_node(&g, "c2", "mp", "c2o", 6, 6, 3, 1, 1, 1, 1, false);
    bn_node(&g, "bn2", "c2o", "b2o", 6);
    unary_node(&g, "Relu", "b2o", "r2");
    conv_node(&g, "c3", "r2", "c3o", 6, 6, 3, 1, 1, 1, 1, true);
    bn_node(&g, "bn3", "c3o", "b3o", 6);
    binary_node(&g, "Add", "b3o", "mp", "a3");
    unary_node(&g, "Relu", "a3", "r3");
    conv_node(&g, "c4", "r3", "c4o", 6, 8, 3, 2, 1, 1, 1, true); /* 2x2 */
    unary_node(&g, "Relu", "c4o", "r4");
    conv_node(&g, "ds", "r3", "dso", 6, 8, 1, 2, 0, 1, 1, false);
    binary_node(&g, "Add", "dso", "r4", "a4");
    unary_node(&g, "Relu", "a4", "r5");
    gap_head(&g, "r5", 8, NULL);
    break;
  case SECT_MOBILE: {
    conv_node(&g, "ex", "x", "exo", SC, 8, 1, 1, 0, 1, 1, true);
    pb n = pb_node("Clip", "clip1", IN("exo", "lo", "hi"), IN("e1"));
    pb_msg(&g, 1, &n);
    conv_node(&g, "dw", "e1", "dwo", 8, 8, 3, 2, 1, 1, 8, true); /* 4x4 */
    n = pb_node("Clip", "clip2", IN("dwo", "lo", "hi"), IN("d1"));
    pb_msg(&g, 1, &n);
    conv_node(&g, "pj", "d1", "pjo", 8, 6, 1, 1, 0, 1, 1, true);
    unary_node(&g, "GlobalAveragePool", "pjo", "sq");
    conv_node(&g, "se1", "sq", "se1o", 6, 3, 1, 1, 0, 1, 1, true);
    unary_node(&g, "Relu", "se1o", "se1r");
    conv_node(&g, "se2", "se1r", "se2o", 3, 6, 1, 1, 0, 1, 1, true);
    unary_node(&g, "HardSigmoid", "se2o", "seg");
    binary_node(&g, "Mul", "pjo", "seg", "sem");
    unary_node(&g, "HardSwish", "sem", "hs");
    pool_node(&g, "AveragePool", "hs", "ap", 2, 2, 1, 1, 0);     /* 3x3 */
    conv_node(&g, "br", "x", "bro", SC, 2, 3, 3, 2, 2, 1, true); /* 3x3 */
    n = pb_node("Concat", "cat", IN("ap", "bro"), IN("cat"));
    pb_attr_int(&n, "axis", 1);
    pb_msg(&g, 1, &n);
    gap_head(&g, "cat", 8, NULL);
    float lo = 0, hi = 6;
    pb_tensor_f(&g, 5, "lo", NULL, 0, &lo);
    pb_tensor_f(&g, 5, "hi", NULL, 0, &hi);
    break;
  }
  case SECT_SWISH: {
    conv_node(&g, "c1", "x", "c1o", SC, 6, 3, 1, 1, 1, 1, true);
    unary_node(&g, "Sigmoid", "c1o", "sg");
    binary_node(&g, "Mul", "c1o", "sg", "sw");
    conv_node(&g, "c2", "sw", "c2o", 6, 6, 3, 1, 2, 2, 1, true);
    unary_node(&g, "Relu", "c2o", "r2");
    binary_node(&g, "Add", "r2", "sw", "a2");
    unary_node(&g, "Relu", "a2", "r3");
    conv_node(&g, "c3", "x", "c3o", SC, 6, 1, 1, 0, 1, 1, true);
    binary_node(&g, "Mul", "r3", "c3o", "m");
    binary_node(&g, "Sub", "m", "cb", "s");
    binary_node(&g, "Div", "s", "two", "dv");
    pool_node(&g, "AveragePool", "dv", "ap", 3, 2, 1, 0, 1); /* 4x4 */
    pb n = pb_node("ReduceMean", "rm", IN("ap"), IN("p"));
    int64_t ax[2] = {2, 3};
    pb_attr_ints(&n, "axes", ax, 2);
    pb_attr_int(&n, "keepdims", 0);
    pb_msg(&g, 1, &n);
    n = pb_node("MatMul", "mm", IN("p", "mw"), IN("y"));
    pb_msg(&g, 1, &n);
    int64_t cd[4] = {1, 6, 1, 1}, md[2] = {6, NCLS};
    init_f(&g, "cb", cd, 4, 0.5f);
    init_f(&g, "mw", md, 2, 1.f);
    float two = 2.f;
    pb_tensor_f(&g, 5, "two", NULL, 0, &two);
    break;
  }
  case SECT_BAD: {
    conv_node(&g, "c1", "x", "c1o", SC, 4, 3, 1, 1, 1, 1, true);
    pb n = pb_node("LRN", "lrn", IN("c1o"), IN("l"));
    pb_attr_int(&n, "size", 3);
    pb_msg(&g, 1, &n);
    gap_head(&g, "l", 4, NULL);
    break;
  }
  }
  pb_str(&g, 2, "grad-section-test");
  int64_t xd[] = {1, SC, SH, SW}, yd[] = {1, NCLS};
  pb_value_info(&g, 11, "x", xd, 4);
  pb_value_info(&g, 12, "y", yd, 2);
  return pb_model(&g, 13);
}

static float sect_score(dm_session *s, float *x, int c) {
  dm_tensor t = {
      .dtype = DM_ONNX_FLOAT, .rank = 4, .dims = {1, SC, SH, SW}, .data = x};
  dm_cam_result r;
  dm_errbuf eb;
  if (dm_session_run_cam(s, &t, 1, c, &r, &eb)) return NAN;
  return r.score;
}

/* Gradient w.r.t. x through the section against central differences, on
 * oneDNN (fused), ref (fused) and ref without fusions; and oneDNN against
 * ref element by element.  An element where the difference quotient
 * straddles a kink (Relu, Clip, max pooling, HardSwish) can disagree with
 * the derivative at h = 1e-2: it is retried with h = 1e-3; at most 2% of
 * the elements may still differ. */
static void check_sect(sect k, const char *name) {
  enum { NX = SC * SH * SW };
  pb mb = build_sect(k);
  dm_onnx_model *m = NULL;
  dm_errbuf eb = {{0}};
  if (dm_onnx_parse(mb.p, mb.n, NULL, &m, &eb)) {
    CHECK(0, "%s: parse: %s", name, eb.msg);
    free(mb.p);
    return;
  }
  static float grads[3][NCLS][NX];
  float x[NX];
  for (int i = 0; i < NX; i++)
    x[i] = frand() * 1.5f;
  const char *cfg[3] = {"onednn", "ref", "ref unfused"};
  bool ok[3] = {false, false, false};
  for (int be = 0; be < 3; be++) {
    dm_engine_opts o = {.backend = be ? DM_BACKEND_REF : DM_BACKEND_ONEDNN,
                        .threads = 1,
                        .no_opt = be == 2,
                        .cam = true,
                        .cam_target = "x"};
    dm_engine *e = NULL;
    dm_session *s = NULL;
    if (dm_engine_new(m, &o, &e, &eb) || dm_session_new(e, &s, &eb)) {
      CHECK(0, "%s [%s]: engine: %s", name, cfg[be], eb.msg);
      dm_engine_free(e);
      continue;
    }
    dm_tensor t = {
        .dtype = DM_ONNX_FLOAT, .rank = 4, .dims = {1, SC, SH, SW}, .data = x};
    dm_cam_result r;
    ok[be] = true;
    for (int cls = 0; cls < NCLS && ok[be]; cls += 2) {
      if (dm_session_run_cam(s, &t, 1, cls, &r, &eb)) {
        CHECK(0, "%s [%s]: run_cam: %s", name, cfg[be], eb.msg);
        ok[be] = false;
        break;
      }
      CHECK(r.class_index == cls && r.c == SC && r.h == SH && r.w == SW,
            "%s: result shape", name);
      float *g = grads[be][cls];
      memcpy(g, r.gradient, sizeof grads[be][cls]);
      double gmax = 0, worst = 0;
      double fd[NX];
      for (int i = 0; i < NX; i++) {
        float keep = x[i], hh = 1e-2f;
        x[i] = keep + hh;
        float up = sect_score(s, x, cls);
        x[i] = keep - hh;
        float dn = sect_score(s, x, cls);
        x[i] = keep;
        fd[i] = ((double)up - dn) / (2.0 * hh);
        if (fabs(fd[i]) > gmax) gmax = fabs(fd[i]);
      }
      double tol = 2e-3 * gmax + 1e-5;
      int bad = 0;
      for (int i = 0; i < NX; i++) {
        if (fabs(fd[i] - g[i]) <= tol) continue;
        float keep = x[i], hh = 1e-3f;
        x[i] = keep + hh;
        float up = sect_score(s, x, cls);
        x[i] = keep - hh;
        float dn = sect_score(s, x, cls);
        x[i] = keep;
        double f2 = ((double)up - dn) / (2.0 * hh);
        double d = fabs(f2 - g[i]);
        if (d <= 3 * tol) continue;
        bad++;
        if (d > worst) worst = d;
      }
      CHECK(bad <= NX / 50 && gmax > 1e-3,
            "%s [%s] class %d: %d of %d elements off the finite difference "
            "(worst %.3g, max |g| %.3g)",
            name, cfg[be], cls, bad, NX, worst, gmax);
    }
    dm_session_free(s);
    dm_engine_free(e);
  }
  /* the backends agree element by element (same forward values up to
   * rounding, so the same kinks) */
  for (int be = 0; be < 3; be += 2) {
    if (!ok[be] || !ok[1]) continue;
    double worst = 0, gmax = 0;
    for (int cls = 0; cls < NCLS; cls += 2)
      for (int i = 0; i < NX; i++) {
        double d = fabs((double)grads[be][cls][i] - grads[1][cls][i]);
        if (d > worst) worst = d;
        if (fabs(grads[1][cls][i]) > gmax) gmax = fabs(grads[1][cls][i]);
      }
    CHECK(worst <= 1e-4 * gmax + 1e-6,
          "%s: [%s] vs [ref] gradients differ by %.3g (max %.3g)", name,
          cfg[be], worst, gmax);
  }
  dm_onnx_free(m);
  free(mb.p);
}

static void check_sect_refusal(void) {
  pb mb = build_sect(SECT_BAD);
  dm_onnx_model *m = NULL;
  dm_errbuf eb = {{0}};
  if (dm_onnx_parse(mb.p, mb.n, NULL, &m, &eb)) {
    CHECK(0, "parse: %s", eb.msg);
    free(mb.p);
    return;
  }
  dm_engine_opts o = {
      .backend = DM_BACKEND_ONEDNN, .cam = true, .cam_target = "x"};
  dm_engine *e = NULL;
  dm_err rc = dm_engine_new(m, &o, &e, &eb);
  CHECK(rc == DM_UNSUPPORTED && strstr(eb.msg, "'lrn'") &&
            strstr(eb.msg, "LRN"),
        "section op without backward refused, naming it: %s", eb.msg);
  dm_engine_free(e);
  /* a later target on the same graph is fine (automatic: GAP's input) */
  o.cam_target = NULL;
  e = NULL;
  rc = dm_engine_new(m, &o, &e, &eb);
  CHECK(rc == DM_OK && !strcmp(dm_engine_cam_target(e), "l"),
        "automatic target after the LRN: %s",
        rc ? eb.msg : dm_engine_cam_target(e));
  dm_engine_free(e);
  dm_onnx_free(m);
  free(mb.p);
}

/* Quantized models: x -> QuantizeLinear -> DequantizeLinear -> GAP ->
 * Flatten -> Gemm.  The pair is differentiated as fake quantization
 * (straight-through): the gradient is the float head's, w[c][ch] / (H*W),
 * where the quantizer does not saturate, and 0 where it does.  Finite
 * differences do not apply (the pair is piecewise constant), so the expected
 * gradient is computed here.  Per tensor int8 (zero point 0) and per channel
 * uint8 (zero point 128). */
static void zp_tensor(pb *g, const char *name, int32_t dtype, int n,
                      const uint8_t *v) {
  pb t = {0};
  if (n > 1) pb_int(&t, 1, n);
  pb_int(&t, 2, dtype);
  pb_str(&t, 8, name);
  pb_bytes(&t, 9, v, (size_t)n);
  pb_msg(g, 5, &t);
}

static void check_qdq_head(bool per_channel) {
  const char *name = per_channel ? "q/dq per channel uint8" : "q/dq int8";
  pb g = {0}, n;
  n = pb_node("QuantizeLinear", "q", IN("x", "s", "z"), IN("xq"));
  if (per_channel) pb_attr_int(&n, "axis", 1);
  pb_msg(&g, 1, &n);
  n = pb_node("DequantizeLinear", "dq", IN("xq", "s", "z"), IN("xd"));
  if (per_channel) pb_attr_int(&n, "axis", 1);
  pb_msg(&g, 1, &n);
  float sc[C] = {0.01f, 0.01f, 0.01f, 0.01f}, w1[NCLS * C];
  uint8_t zp[C] = {0, 0, 0, 0};
  int ns = per_channel ? C : 1;
  if (per_channel) {
    const float pc[C] = {0.005f, 0.01f, 0.02f, 0.008f};
    memcpy(sc, pc, sizeof sc);
    memset(zp, 128, sizeof zp);
  }
  int64_t sd[1] = {ns};
  pb_tensor_f(&g, 5, "s", sd, per_channel ? 1 : 0, sc);
  zp_tensor(&g, "z", per_channel ? 2 /* uint8 */ : 3 /* int8 */, ns, zp);
  gap_head(&g, "xd", C, w1);
  pb mb = finish_head(&g);
  dm_onnx_model *m = NULL;
  dm_errbuf eb = {{0}};
  if (dm_onnx_parse(mb.p, mb.n, NULL, &m, &eb)) {
    CHECK(0, "%s: parse: %s", name, eb.msg);
    free(mb.p);
    return;
  }
  for (int be = 0; be < 2; be++) {
    /* the named target in front of the pair, and the automatic one (the
     * dequantized tensor in front of the pooling) */
    for (int auto_t = 0; auto_t < 2; auto_t++) {
      dm_engine_opts o = {.backend = (dm_backend_kind)be,
                          .threads = 1,
                          .cam = true,
                          .cam_target = auto_t ? NULL : "x"};
      dm_engine *e = NULL;
      dm_session *s = NULL;
      if (dm_engine_new(m, &o, &e, &eb) || dm_session_new(e, &s, &eb)) {
        CHECK(0, "%s: engine: %s", name, eb.msg);
        dm_engine_free(e);
        continue;
      }
      float x[C * H * W];
      int sat = 0;
      for (int i = 0; i < C * H * W; i++) {
        x[i] = frand() * 1.6f;
        int ch = i / (H * W);
        float q = nearbyintf(x[i] / sc[ch]) + (float)zp[ch];
        sat += per_channel ? (q < 0 || q > 255) : (q < -128 || q > 127);
      }
      dm_tensor t = {
          .dtype = DM_ONNX_FLOAT, .rank = 4, .dims = {1, C, H, W}, .data = x};
      dm_cam_result r;
      for (int cls = 0; cls < NCLS; cls += 2) {
        if (dm_session_run_cam(s, &t, 1, cls, &r, &eb)) {
          CHECK(0, "%s: run_cam: %s", name, eb.msg);
          break;
        }
        double worst = 0;
        for (int i = 0; i < C * H * W; i++) {
          int ch = i / (H * W);
          float q = nearbyintf(x[i] / sc[ch]) + (float)zp[ch];
          bool in =
              per_channel ? (q >= 0 && q <= 255) : (q >= -128 && q <= 127);
          /* the automatic target is after the pair: nothing saturates */
          double want = auto_t || in ? w1[cls * C + ch] / (double)(H * W) : 0;
          double d = fabs(want - r.gradient[i]);
          if (d > worst) worst = d;
        }
        CHECK(worst <= 1e-6,
              "%s [%s, %s target] class %d: |gradient - "
              "straight-through| %.3g",
              name, be ? "ref" : "onednn", auto_t ? "automatic" : "named", cls,
              worst);
      }
      CHECK(auto_t || sat > 0, "%s: the input saturates somewhere (%d)", name,
            sat);
      dm_session_free(s);
      dm_engine_free(e);
    }
  }
  dm_onnx_free(m);
  free(mb.p);
}

static void check_cam_formulas(void) {
  /* 2 channels, 1x2 map: A = [[1,2],[3,0]], G = [[1,1],[-1,0]] */
  float A[4] = {1, 2, 3, 0}, G[4] = {1, 1, -1, 0}, cam[2];
  dm_cam_result r = {.c = 2, .h = 1, .w = 2, .activation = A, .gradient = G};
  dm_errbuf eb;
  /* Grad-CAM: w = (1, -0.5); cam = relu(1*[1,2] - 0.5*[3,0]) = [0, 2] */
  CHECK(!dm_cam_compute(&r, DM_CAM_GRADCAM, cam, &eb) && cam[0] == 0 &&
            fabsf(cam[1] - 2) < 1e-6f,
        "Grad-CAM formula: %g %g", (double)cam[0], (double)cam[1]);
  /* HiResCAM: relu([1*1 + -1*3, 1*2 + 0]) = [0, 2] */
  CHECK(!dm_cam_compute(&r, DM_CAM_HIRESCAM, cam, &eb) && cam[0] == 0 &&
            fabsf(cam[1] - 2) < 1e-6f,
        "HiResCAM formula");
  /* Grad-CAM++: channel 0: sum A = 3, g = 1: a = 1/(2+3) = 0.2 per pixel,
   * w0 = 0.4; channel 1: g <= 0 -> w1 = 0; cam = 0.4 * [1, 2] */
  CHECK(!dm_cam_compute(&r, DM_CAM_GRADCAMPP, cam, &eb) &&
            fabsf(cam[0] - 0.4f) < 1e-6f && fabsf(cam[1] - 0.8f) < 1e-6f,
        "Grad-CAM++ formula: %g %g", (double)cam[0], (double)cam[1]);
}

int main(void) {
  check_head(HEAD_GAP_GEMM, "gap+gemm");
  check_head(HEAD_GMP_MLP, "gmp+mlp(hardswish)");
  check_head(HEAD_REDUCEMEAN_MM, "reducemean+matmul+consts");
  check_head(HEAD_FLATTEN_MLP, "flatten+mlp(tanh)+softmax");
  check_head(HEAD_SWISH, "gap+reshape+swish");
  check_refusals();
  check_qdq_head(false);
  check_qdq_head(true);
  check_sect(SECT_RESNET, "section: conv+bn+relu, maxpool, residual blocks");
  check_sect(SECT_MOBILE,
             "section: depthwise, clip, SE mul, hardswish, avgpool, concat");
  check_sect(SECT_SWISH, "section: swish, dilated conv, relu-add-relu, mul");
  check_sect_refusal();
  check_cam_formulas();
  printf("test_grad: %d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed != 0;
}
