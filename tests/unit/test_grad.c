/* test_grad.c: the Grad-CAM gradient tail (src/engine/grad.c) against finite
 * differences.  Each case is a small generated graph whose input x [1,C,H,W]
 * is also the Grad-CAM target, followed by a head made of the ops the tail
 * supports (global average/max pooling, ReduceMean, Flatten/Reshape, Gemm
 * with transposes, MatMul, Add/Mul/Sub/Div by constants, activations).  The
 * gradient dm_session_run_cam returns must equal
 *   (score(x + h e_i) - score(x - h e_i)) / 2h
 * for every element i, on both backends.  Also: automatic target choice,
 * refusal of a tail op without a backward rule, and the CAM formulas.
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
  pb_str(&g, 2, "grad-test");
  int64_t xd[] = {1, C, H, W}, yd[] = {1, NCLS};
  pb_value_info(&g, 11, "x", xd, 4);
  pb_value_info(&g, 12, "y", yd, 2);
  return pb_model(&g, 13);
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
  check_cam_formulas();
  printf("test_grad: %d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed != 0;
}
