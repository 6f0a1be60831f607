/* test_onednn.c: the oneDNN backend against the ref backend (the oracle) and,
 * for convolutions, against a naive convolution written here.
 *
 * Small ONNX models are built in memory (pb_builder.h), one per case: every
 * Conv geometry the backend maps (grouped, depthwise, dilated, asymmetric
 * pads, 1-D), fused post-ops (activations, residual sums in place and on a
 * copy, swish), pooling (ceil mode, padding modes), broadcasting binaries,
 * concat, softmax (opset 13 and legacy), Gemm/MatMul, unfolded BatchNorm,
 * every unary the backend maps, and ref-fallback ops between oneDNN ops
 * (layout conversions both ways).  Each case runs on the ref backend without
 * fusions (truth) and on oneDNN with and without fusions, 1 and 2 threads;
 * outputs must agree within max|a-b| <= 1e-4 * max|a|.
 *
 * Then the real models in build/models (<name>.opset13.onnx with
 * <name>.input.npy and <name>.opset13.torch.npy, exported by
 * tools/export_torchvision.py) against ref and PyTorch; skipped, saying so,
 * when absent.  Also concurrent sessions on one engine.
 * Last line: `test_onednn: N tests_passed, N tests_failed`. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

#include "check.h"
#include "cli/npy.h"
#include "dermal/engine.h"
#include "dermal/onnx.h"
#include "engine/internal.h"
#include "pb_builder.h"

#define IN(...) ((const char *const[]){__VA_ARGS__, NULL})
#define TOL 1e-4

static uint32_t rng = 12345;
static float frand(void) { /* uniform in [-1, 1) */
  rng = rng * 1664525u + 1013904223u;
  return (float)(rng >> 8) / 16777216.0f * 2.f - 1.f;
}

static size_t numel(const int64_t *d, int nd) {
  size_t n = 1;
  for (int i = 0; i < nd; i++)
    n *= (size_t)d[i];
  return n;
}

/* A float initializer with values uniform in [lo, hi); returns a malloc'd
 * copy of the data when `keep`, else NULL. */
static float *init(pb *g, const char *name, const int64_t *dims, int nd,
                   float lo, float hi, bool keep) {
  size_t n = numel(dims, nd);
  float *v = malloc((n ? n : 1) * sizeof *v);
  if (!v) abort();
  for (size_t i = 0; i < n; i++)
    v[i] = lo + (frand() + 1.f) * 0.5f * (hi - lo);
  pb_tensor_f(g, 5, name, dims, nd, v);
  if (keep) return v;
  free(v);
  return NULL;
}

static void init_scalar(pb *g, const char *name, float v) {
  pb_tensor_f(g, 5, name, NULL, 0, &v);
}

static void init_i64(pb *g, const char *name, const int64_t *v, int64_t n) {
  pb_tensor_i64(g, 5, name, &n, 1, v);
}

/* graph output: name and float element type, shape inferred */
static void output(pb *g, const char *name) {
  pb tt = {0}, type = {0}, vi = {0};
  pb_int(&tt, 1, 1);
  pb_msg(&type, 1, &tt);
  pb_str(&vi, 1, name);
  pb_msg(&vi, 2, &type);
  pb_msg(g, 12, &vi);
}

static void add(pb *g, pb *n) { pb_msg(g, 1, n); }

/* Conv node `name`: x -> y with weights "<name>.w" [oc, ic/group, k, k] and
 * bias "<name>.b" (when bias). */
static void conv(pb *g, const char *name, const char *x, const char *y,
                 int64_t ic, int64_t oc, int64_t group, int64_t k, int64_t s,
                 int64_t pad, bool bias) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.w", name);
  snprintf(bn, sizeof bn, "%s.b", name);
  pb n = bias ? pb_node("Conv", name, IN(x, wn, bn), IN(y))
              : pb_node("Conv", name, IN(x, wn), IN(y));
  int64_t pads[4] = {pad, pad, pad, pad}, st[2] = {s, s}, ks[2] = {k, k};
  pb_attr_ints(&n, "pads", pads, 4);
  pb_attr_ints(&n, "strides", st, 2);
  pb_attr_ints(&n, "kernel_shape", ks, 2);
  if (group != 1) pb_attr_int(&n, "group", group);
  add(g, &n);
  int64_t wd[4] = {oc, ic / group, k, k};
  float sc = 1.5f / sqrtf((float)(ic / group * k * k));
  init(g, wn, wd, 4, -sc, sc, false);
  if (bias) init(g, bn, &oc, 1, -0.2f, 0.2f, false);
}

static void unary(pb *g, const char *op, const char *x, const char *y) {
  pb n = pb_node(op, y, IN(x), IN(y));
  add(g, &n);
}

static void binary(pb *g, const char *op, const char *a, const char *b,
                   const char *y) {
  pb n = pb_node(op, y, IN(a, b), IN(y));
  add(g, &n);
}

/* ------------------------------------------------------------ running -- */

typedef struct result {
  int n;
  float *y[8];
  size_t len[8];
} result;

static void result_free(result *r) {
  for (int i = 0; i < r->n; i++)
    free(r->y[i]);
  memset(r, 0, sizeof *r);
}

static dm_err run_model(const dm_onnx_model *m, dm_backend_kind be, bool no_opt,
                        int threads, const dm_tensor *x, result *r,
                        double *p50_ms, int iters, dm_errbuf *eb) {
  dm_engine_opts o = {.backend = be, .threads = threads, .no_opt = no_opt};
  dm_engine *e = NULL;
  dm_session *s = NULL;
  memset(r, 0, sizeof *r);
  dm_err rc = dm_engine_new(m, &o, &e, eb);
  if (!rc) rc = dm_session_new(e, &s, eb);
  if (!rc) rc = dm_session_run(s, x, 1, eb);
  if (!rc && iters > 0) {
    double *t = malloc((size_t)iters * sizeof *t);
    if (!t) abort();
    for (int i = 0; i < iters && !rc; i++) {
      struct timespec a, b;
      clock_gettime(CLOCK_MONOTONIC, &a);
      rc = dm_session_run(s, x, 1, eb);
      clock_gettime(CLOCK_MONOTONIC, &b);
      t[i] = (double)(b.tv_sec - a.tv_sec) * 1e3 +
             (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    }
    for (int i = 1; i < iters; i++) /* insertion sort */
      for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
        double u = t[j];
        t[j] = t[j - 1];
        t[j - 1] = u;
      }
    if (p50_ms) *p50_ms = t[iters / 2];
    free(t);
  }
  if (!rc) {
    size_t no = dm_engine_n_outputs(e);
    r->n = no > 8 ? 8 : (int)no;
    for (int i = 0; i < r->n; i++) {
      dm_tensor t = dm_session_output(s, (size_t)i);
      size_t n = 1;
      for (int d = 0; d < t.rank; d++)
        n *= (size_t)t.dims[d];
      r->len[i] = n;
      r->y[i] = malloc((n ? n : 1) * sizeof(float));
      if (!r->y[i]) abort();
      memcpy(r->y[i], t.data, n * sizeof(float));
    }
  }
  dm_session_free(s);
  dm_engine_free(e);
  return rc;
}

/* max|a-b| / max|ref| */
static double rel_err(const float *a, const float *ref, size_t n) {
  double d = 0, m = 0;
  for (size_t i = 0; i < n; i++) {
    double x = fabs((double)a[i] - (double)ref[i]);
    if (!(x <= d)) d = x; /* NaN propagates */
    if (fabs((double)ref[i]) > m) m = fabs((double)ref[i]);
  }
  return m > 0 ? d / m : d;
}

static void compare(const char *name, const char *what, const result *got,
                    const result *ref, double tol) {
  CHECK(got->n == ref->n, "%s (%s): %d outputs, ref %d", name, what, got->n,
        ref->n);
  for (int i = 0; i < got->n && i < ref->n; i++) {
    CHECK(got->len[i] == ref->len[i], "%s (%s): output %d size", name, what, i);
    if (got->len[i] != ref->len[i]) continue;
    double e = rel_err(got->y[i], ref->y[i], got->len[i]);
    CHECK(e <= tol, "%s (%s): output %d rel err %.3g", name, what, i, e);
  }
}

/* Builds the model from graph g (consumed), input "x" of dims xd, and checks
 * oneDNN (fused and not, 1 and 2 threads) against ref.  When truth is not
 * NULL it receives the ref result (caller frees); xdata the input. */
static void check_case(const char *name, pb *g, int64_t opset,
                       const int64_t *xd, int xr, result *truth,
                       float **xdata) {
  pb_value_info(g, 11, "x", xd, xr);
  pb bytes = pb_model(g, opset);
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  dm_err rc = dm_onnx_parse(bytes.p, bytes.n, NULL, &m, &eb);
  CHECK(rc == DM_OK, "%s: parse: %s", name, eb.msg);
  if (rc) {
    free(bytes.p);
    return;
  }
  size_t n = numel(xd, xr);
  float *x = malloc(n * sizeof *x);
  if (!x) abort();
  for (size_t i = 0; i < n; i++)
    x[i] = frand() * 2.f;
  dm_tensor xt = {.dtype = DM_ONNX_FLOAT, .rank = xr, .data = x};
  memcpy(xt.dims, xd, (size_t)xr * sizeof *xd);
  result ref, got;
  rc = run_model(m, DM_BACKEND_REF, true, 1, &xt, &ref, NULL, 0, &eb);
  CHECK(rc == DM_OK, "%s: ref: %s", name, eb.msg);
  if (rc == DM_OK) {
    static const struct {
      bool no_opt;
      int threads;
      const char *what;
    } v[] = {{false, 1, "fused"},
             {true, 1, "no_opt"},
             {false, 2, "2 threads"},
             {false, 3, "3 threads"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
      memset(&eb, 0, sizeof eb);
      rc = run_model(m, DM_BACKEND_ONEDNN, v[i].no_opt, v[i].threads, &xt, &got,
                     NULL, 0, &eb);
      CHECK(rc == DM_OK, "%s (%s): onednn: %s", name, v[i].what, eb.msg);
      if (rc == DM_OK) compare(name, v[i].what, &got, &ref, TOL);
      result_free(&got);
    }
  }
  if (truth)
    *truth = ref;
  else
    result_free(&ref);
  if (xdata)
    *xdata = x;
  else
    free(x);
  dm_onnx_free(m);
  free(bytes.p);
}

/* ------------------------------------------------- conv vs naive conv -- */

typedef struct conv_case {
  int64_t ic, oc, group, h, w, kh, kw, sh, sw, dh, dw;
  int64_t pt, pl, pb_, pr;
  bool bias;
} conv_case;

static void naive_conv(const conv_case *c, const float *x, const float *wt,
                       const float *b, float *y, int64_t oh, int64_t ow) {
  int64_t icg = c->ic / c->group, ocg = c->oc / c->group;
  for (int64_t o = 0; o < c->oc; o++) {
    int64_t gi = o / ocg;
    for (int64_t i = 0; i < oh; i++)
      for (int64_t j = 0; j < ow; j++) {
        double acc = b ? b[o] : 0.0;
        for (int64_t ci = 0; ci < icg; ci++)
          for (int64_t u = 0; u < c->kh; u++)
            for (int64_t v = 0; v < c->kw; v++) {
              int64_t yy = i * c->sh - c->pt + u * c->dh;
              int64_t xx = j * c->sw - c->pl + v * c->dw;
              if (yy < 0 || yy >= c->h || xx < 0 || xx >= c->w) continue;
              acc += (double)x[((gi * icg + ci) * c->h + yy) * c->w + xx] *
                     wt[((o * icg + ci) * c->kh + u) * c->kw + v];
            }
        y[(o * oh + i) * ow + j] = (float)acc;
      }
  }
}

static void test_conv_naive(void) {
  static const conv_case cases[] = {
      /* ic oc  g   h   w kh kw sh sw dh dw pt pl pb pr bias */
      {3, 16, 1, 33, 31, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true},    /* stem */
      {3, 8, 1, 30, 30, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3, false},    /* 7x7 */
      {16, 32, 1, 14, 14, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, true},   /* 1x1 */
      {24, 40, 1, 9, 9, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, true},     /* 1x1 s2 */
      {32, 32, 32, 15, 15, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true},  /* dw */
      {24, 24, 24, 17, 17, 5, 5, 2, 2, 1, 1, 2, 2, 2, 2, true},  /* dw 5x5 */
      {16, 32, 4, 10, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true},   /* grouped */
      {8, 16, 1, 16, 16, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, true},    /* dilated */
      {16, 16, 16, 12, 12, 3, 3, 1, 1, 3, 3, 3, 3, 3, 3, false}, /* dw dil 3 */
      {8, 12, 1, 11, 13, 3, 2, 2, 1, 1, 1, 0, 1, 1, 2, true},    /* asym */
      {64, 1000, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, true},   /* 1x1x1 */
      {5, 7, 1, 6, 6, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, true},       /* odd C */
  };
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const conv_case *c = &cases[ci];
    pb g = {0};
    pb n = c->bias ? pb_node("Conv", "conv", IN("x", "w", "b"), IN("y"))
                   : pb_node("Conv", "conv", IN("x", "w"), IN("y"));
    int64_t pads[4] = {c->pt, c->pl, c->pb_, c->pr}, st[2] = {c->sh, c->sw},
            dl[2] = {c->dh, c->dw}, ks[2] = {c->kh, c->kw};
    pb_attr_ints(&n, "pads", pads, 4);
    pb_attr_ints(&n, "strides", st, 2);
    pb_attr_ints(&n, "dilations", dl, 2);
    pb_attr_ints(&n, "kernel_shape", ks, 2);
    pb_attr_int(&n, "group", c->group);
    add(&g, &n);
    int64_t wd[4] = {c->oc, c->ic / c->group, c->kh, c->kw};
    float *wt = init(&g, "w", wd, 4, -0.5f, 0.5f, true);
    float *b = c->bias ? init(&g, "b", &c->oc, 1, -0.5f, 0.5f, true) : NULL;
    output(&g, "y");
    int64_t xd[4] = {1, c->ic, c->h, c->w};
    int64_t oh = (c->h + c->pt + c->pb_ - (c->kh - 1) * c->dh - 1) / c->sh + 1;
    int64_t ow = (c->w + c->pl + c->pr - (c->kw - 1) * c->dw - 1) / c->sw + 1;
    char name[64];
    snprintf(name, sizeof name, "conv case %zu", ci);
    result ref = {0};
    float *x = NULL;
    check_case(name, &g, 13, xd, 4, &ref, &x);
    if (x && ref.n == 1 && ref.len[0] == (size_t)(c->oc * oh * ow)) {
      float *y = malloc(ref.len[0] * sizeof *y);
      if (!y) abort();
      naive_conv(c, x, wt, b, y, oh, ow);
      double e = rel_err(ref.y[0], y, ref.len[0]);
      CHECK(e <= TOL, "%s: ref vs naive conv: %.3g", name, e);
      free(y);
    } else {
      CHECK(0, "%s: no reference result", name);
    }
    result_free(&ref);
    free(x);
    free(wt);
    free(b);
  }
}

/* oneDNN against the naive conv directly, with fused relu. */
static void test_conv_naive_direct(void) {
  conv_case c = {16, 24, 1, 20, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true};
  pb g = {0};
  pb n = pb_node("Conv", "conv", IN("x", "w", "b"), IN("c"));
  int64_t pads[4] = {1, 1, 1, 1};
  pb_attr_ints(&n, "pads", pads, 4);
  add(&g, &n);
  unary(&g, "Relu", "c", "y");
  int64_t wd[4] = {24, 16, 3, 3};
  float *wt = init(&g, "w", wd, 4, -0.5f, 0.5f, true);
  float *b = init(&g, "b", &c.oc, 1, -0.5f, 0.5f, true);
  output(&g, "y");
  int64_t xd[4] = {1, 16, 20, 20};
  pb_value_info(&g, 11, "x", xd, 4);
  pb bytes = pb_model(&g, 13);
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  dm_err rc = dm_onnx_parse(bytes.p, bytes.n, NULL, &m, &eb);
  CHECK(rc == DM_OK, "parse: %s", eb.msg);
  float *x = malloc(16 * 20 * 20 * sizeof *x),
        *y = malloc(24 * 20 * 20 * sizeof *y);
  if (!x || !y) abort();
  for (int i = 0; i < 16 * 20 * 20; i++)
    x[i] = frand();
  naive_conv(&c, x, wt, b, y, 20, 20);
  for (int i = 0; i < 24 * 20 * 20; i++)
    y[i] = y[i] > 0 ? y[i] : 0;
  dm_tensor xt = {
      .dtype = DM_ONNX_FLOAT, .rank = 4, .dims = {1, 16, 20, 20}, .data = x};
  result got;
  if (rc == DM_OK) {
    rc = run_model(m, DM_BACKEND_ONEDNN, false, 1, &xt, &got, NULL, 0, &eb);
    CHECK(rc == DM_OK, "onednn: %s", eb.msg);
    if (rc == DM_OK) {
      double e = rel_err(got.y[0], y, got.len[0]);
      CHECK(got.len[0] == 24 * 20 * 20 && e <= TOL,
            "onednn conv+relu vs naive: %.3g", e);
      result_free(&got);
    }
  }
  dm_onnx_free(m);
  free(bytes.p);
  free(x);
  free(y);
  free(wt);
  free(b);
}

/* --------------------------------------------------------- other cases -- */

static void case_residual(void) {
  /* addend used after the sum (copy path), addend == conv input, relu */
  pb g = {0};
  conv(&g, "c1", "x", "a", 16, 16, 1, 3, 1, 1, true);
  unary(&g, "Relu", "a", "r");
  conv(&g, "c2", "r", "b", 16, 16, 1, 3, 1, 1, true);
  binary(&g, "Add", "b", "r", "s"); /* r is read again below */
  unary(&g, "Relu", "s", "t");
  conv(&g, "c3", "t", "c", 16, 16, 1, 1, 1, 0, true);
  binary(&g, "Add", "r", "c", "u"); /* addend first */
  conv(&g, "c4", "u", "d", 16, 16, 1, 3, 1, 1, false);
  binary(&g, "Add", "d", "u", "y"); /* u: conv input and addend */
  output(&g, "y");
  int64_t xd[4] = {1, 16, 10, 10};
  check_case("residual", &g, 13, xd, 4, NULL, NULL);
}

static void case_mobile_block(void) {
  /* expand 1x1 + relu6 (Clip with inputs), dw + relu6, project, residual */
  pb g = {0};
  conv(&g, "e", "x", "e1", 24, 144, 1, 1, 1, 0, true);
  pb n = pb_node("Clip", "clip1", IN("e1", "zero", "six"), IN("e2"));
  add(&g, &n);
  conv(&g, "dw", "e2", "d1", 144, 144, 144, 3, 1, 1, true);
  n = pb_node("Clip", "clip2", IN("d1", "zero", "six"), IN("d2"));
  add(&g, &n);
  conv(&g, "p", "d2", "p1", 144, 24, 1, 1, 1, 0, true);
  binary(&g, "Add", "x", "p1", "y");
  init_scalar(&g, "zero", 0.f);
  init_scalar(&g, "six", 6.f);
  output(&g, "y");
  int64_t xd[4] = {1, 24, 14, 14};
  check_case("mobilenet block", &g, 13, xd, 4, NULL, NULL);
}

static void case_bands(void) {
  /* with 2 or more threads, runs of convs on channels-last maps run in
   * bands of rows (windowed convs) or pixels (pointwise ones), each thread
   * its band: odd heights, stride 2, a 5x5 window reaching two rows past a
   * band's edge, a pointwise conv over 7x7 (pixel split 24/25 against the
   * 3x3's row split 3/4), residual joins */
  pb g = {0};
  conv(&g, "a", "x", "a1", 8, 32, 1, 3, 1, 1, true);
  unary(&g, "Relu", "a1", "a2");
  conv(&g, "d", "a2", "d1", 32, 32, 32, 3, 2, 1, true); /* 15x13 -> 8x7 */
  conv(&g, "p", "d1", "p1", 32, 16, 1, 1, 1, 0, true);
  conv(&g, "w", "p1", "w1", 16, 16, 16, 5, 1, 2, false);
  binary(&g, "Add", "w1", "p1", "s1");
  conv(&g, "q", "s1", "q1", 16, 24, 1, 3, 2, 1, true); /* 8x7 -> 4x4 */
  unary(&g, "Relu", "q1", "q2");
  conv(&g, "r", "q2", "r1", 24, 24, 1, 1, 1, 0, true);
  binary(&g, "Add", "q2", "r1", "y");
  output(&g, "y");
  int64_t xd[4] = {1, 8, 15, 13};
  check_case("bands", &g, 13, xd, 4, NULL, NULL);
}

static void case_dw_fusion(void) {
  /* 1x1 expansion + depthwise 3x3 on large maps (MobileNet-v2 shapes),
   * NHWC input, stride 1 and 2, with and without biases, relu6 and swish.
   * Guards against oneDNN 2.6's fused 1x1+dw kernel (dw post-op), which
   * gives wrong results on NHWC and reads a missing 1x1 bias: the backend
   * must not use it. */
  pb g = {0};
  conv(&g, "p0", "x", "a0", 24, 24, 1, 1, 1, 0, true); /* NHWC input */
  conv(&g, "e1", "a0", "a1", 24, 144, 1, 1, 1, 0, true);
  pb n = pb_node("Clip", "clip1", IN("a1", "zero", "six"), IN("a2"));
  add(&g, &n);
  conv(&g, "dw1", "a2", "b1", 144, 144, 144, 3, 1, 1, true);
  n = pb_node("Clip", "clip2", IN("b1", "zero", "six"), IN("y"));
  add(&g, &n);
  init_scalar(&g, "zero", 0.f);
  init_scalar(&g, "six", 6.f);
  output(&g, "y");
  int64_t xd[4] = {1, 24, 56, 56};
  check_case("1x1 + dw, relu6", &g, 13, xd, 4, NULL, NULL);

  pb h = {0};
  conv(&h, "p0", "x", "c0", 16, 16, 1, 1, 1, 0, true); /* NHWC input */
  conv(&h, "e2", "c0", "c1", 16, 96, 1, 1, 1, 0, false);
  unary(&h, "Sigmoid", "c1", "c1s");
  binary(&h, "Mul", "c1", "c1s", "c2");
  conv(&h, "dw2", "c2", "d1", 96, 96, 96, 3, 2, 1, false);
  unary(&h, "Sigmoid", "d1", "d1s");
  binary(&h, "Mul", "d1", "d1s", "y");
  output(&h, "y");
  int64_t xd2[4] = {1, 16, 56, 56};
  check_case("1x1 + dw, swish", &h, 13, xd2, 4, NULL, NULL);
}

/* Arena bytes of m's onednn engine (1 thread). */
static size_t arena_of(const dm_onnx_model *m) {
  dm_engine_opts o = {.backend = DM_BACKEND_ONEDNN, .threads = 1};
  dm_engine *e = NULL;
  dm_errbuf eb = {{0}};
  if (dm_engine_new(m, &o, &e, &eb) != DM_OK) return 0;
  size_t n = dm_engine_get_stats(e)->arena_bytes;
  dm_engine_free(e);
  return n;
}

/* With one thread, a pointwise conv and the conv reading its map run
 * tile by tile (plan_tiles); a 4 KiB budget makes tiles of one to a few
 * rows here: odd heights, stride 2 after a swish, a dense 3x3 conv after
 * the pointwise one, a 5x5 window, a residual join after the tiles. */
static void tiles_graph(pb *gp) {
  pb g = {0};
  conv(&g, "e1", "x", "a1", 8, 32, 1, 1, 1, 0, true);
  unary(&g, "Relu", "a1", "a2");
  conv(&g, "d1", "a2", "b1", 32, 32, 32, 3, 1, 1, true); /* 23x17 */
  conv(&g, "e2", "b1", "c0", 32, 48, 1, 1, 1, 0, false);
  unary(&g, "Sigmoid", "c0", "c0s"); /* swish: a pass on the tile's map */
  binary(&g, "Mul", "c0", "c0s", "c1");
  conv(&g, "d2", "c1", "c2", 48, 48, 48, 3, 2, 1, true); /* -> 12x9 */
  conv(&g, "e3", "c2", "f1", 48, 16, 1, 1, 1, 0, true);
  conv(&g, "k3", "f1", "f2", 16, 16, 1, 3, 1, 1, true); /* dense */
  conv(&g, "e4", "f2", "h1", 16, 24, 1, 1, 1, 0, true);
  conv(&g, "d4", "h1", "h2", 24, 16, 1, 5, 1, 2, true);
  binary(&g, "Add", "h2", "f2", "y");
  /* the other way round: a windowed conv whose map only a pointwise conv
   * reads, depthwise (tiled; m2 has two readers, so k6 is not) and dense
   * (k7: Winograd on nChw16c here, so not tiled; checked all the same) */
  unary(&g, "Relu", "y", "r"); /* maps in the arena, not graph outputs */
  conv(&g, "k6", "r", "m2", 16, 32, 1, 3, 1, 1, true);
  conv(&g, "d5", "m2", "m1", 32, 32, 32, 3, 1, 1, true);
  conv(&g, "e5", "m1", "n1", 32, 8, 1, 1, 1, 0, true);
  conv(&g, "c7", "n1", "y2", 8, 8, 1, 3, 1, 1, true);
  conv(&g, "k7", "r", "m3", 16, 32, 1, 3, 1, 1, false);
  conv(&g, "e7", "m3", "n2", 32, 8, 1, 1, 1, 0, false);
  conv(&g, "c8", "n2", "y3", 8, 8, 1, 3, 1, 1, true);
  conv(&g, "e6", "m2", "y4", 32, 8, 1, 1, 1, 0, true);
  output(&g, "y");
  output(&g, "y2");
  output(&g, "y3");
  output(&g, "y4");
  *gp = g;
}

static void case_tiles(void) {
  /* PW=0: every conv a oneDNN primitive; PW=1: the pw pass (pw.c) takes
   * the 1x1 convs, and a pass can be a tile's first step */
  const char *pw[] = {"0", "1"};
  for (int v = 0; v < 2; v++) {
    setenv("DERMAL_ONEDNN_PW", pw[v], 1);
    setenv("DERMAL_ONEDNN_TILE_KB", "4", 1);
    setenv("DERMAL_ONEDNN_TILE_MIN_KB", "8", 1);
    pb g;
    tiles_graph(&g);
    int64_t xd[4] = {1, 8, 23, 17};
    pb_value_info(&g, 11, "x", xd, 4);
    pb bytes = pb_model(&g, 13);
    dm_errbuf eb = {{0}};
    dm_onnx_model *m = NULL;
    CHECK(dm_onnx_parse(bytes.p, bytes.n, NULL, &m, &eb) == DM_OK,
          "tiles: parse: %s", eb.msg);
    if (m) { /* the pointwise convs' maps get no arena bytes */
      size_t tiled = arena_of(m);
      setenv("DERMAL_ONEDNN_TILES", "0", 1);
      size_t whole = arena_of(m);
      unsetenv("DERMAL_ONEDNN_TILES");
      /* tiles take channels-last maps, which oneDNN keeps with AVX-512
       * only (below it, nChw8c: nothing is tiled, the outputs still
       * checked) */
      unsigned isa = (unsigned)dnnl_get_effective_cpu_isa(),
               a512 = (unsigned)dnnl_cpu_isa_avx512_core;
      if ((isa & a512) != a512)
        printf("skip tiles arena: oneDNN below AVX-512 (blocked maps)\n");
      else
        CHECK(tiled > 0 && tiled < whole,
              "tiles (PW=%s): arena %zu B, untiled %zu B", pw[v], tiled, whole);
      dm_onnx_free(m);
    }
    free(bytes.p);
    pb h; /* the same graph, against the reference */
    tiles_graph(&h);
    check_case(v ? "tiles, pw pass" : "tiles", &h, 13, xd, 4, NULL, NULL);
  }
  unsetenv("DERMAL_ONEDNN_PW");
  unsetenv("DERMAL_ONEDNN_TILE_KB");
  unsetenv("DERMAL_ONEDNN_TILE_MIN_KB");
}

static void case_se_swish(void) {
  /* efficientnet block: conv+swish, dw+swish, SE (GAP, conv, swish, conv,
   * sigmoid, Mul broadcast), project; plus HardSwish and HardSigmoid */
  pb g = {0};
  conv(&g, "e", "x", "e1", 16, 96, 1, 1, 1, 0, true);
  unary(&g, "Sigmoid", "e1", "e1s");
  binary(&g, "Mul", "e1", "e1s", "e2");
  conv(&g, "dw", "e2", "d1", 96, 96, 96, 3, 2, 1, true);
  unary(&g, "Sigmoid", "d1", "d1s");
  binary(&g, "Mul", "d1s", "d1", "d2");
  unary(&g, "GlobalAveragePool", "d2", "gp");
  conv(&g, "f1", "gp", "f1o", 96, 4, 1, 1, 1, 0, true);
  unary(&g, "Sigmoid", "f1o", "f1s");
  binary(&g, "Mul", "f1o", "f1s", "f1m");
  conv(&g, "f2", "f1m", "f2o", 4, 96, 1, 1, 1, 0, true);
  unary(&g, "Sigmoid", "f2o", "sc");
  binary(&g, "Mul", "d2", "sc", "se");
  conv(&g, "p", "se", "p1", 96, 24, 1, 1, 1, 0, true);
  pb n = pb_node("HardSigmoid", "hs", IN("p1"), IN("p2"));
  pb_attr_float(&n, "alpha", 0.2f);
  pb_attr_float(&n, "beta", 0.4f);
  add(&g, &n);
  binary(&g, "Mul", "p1", "p2", "p3");
  n = pb_node("HardSigmoid", "hs2", IN("p3"), IN("p4"));
  pb_attr_float(&n, "alpha", 1.f / 6);
  pb_attr_float(&n, "beta", 0.5f);
  add(&g, &n);
  binary(&g, "Mul", "p3", "p4", "y");
  output(&g, "y");
  int64_t xd[4] = {1, 16, 16, 16};
  check_case("SE + swish", &g, 13, xd, 4, NULL, NULL);
}

static void case_se_bands(void) {
  /* with 2 or 3 threads, SE blocks run inside the bands: a GAP's partial
   * sums per band, then each band's share of the channels; each FC's
   * share of its outputs (8 at a time: the 5-output squeeze leaves bands
   * with none); the channel scale on the band's pixels.  Two SE blocks in
   * a row share the partial sums' buffer; the last GAP averages 2 pixels,
   * fewer than 3 bands. */
  pb g = {0};
  conv(&g, "c", "x", "a", 40, 40, 1, 3, 1, 1, true);
  unary(&g, "Relu", "a", "a1");
  char in[16] = "a1", nm[6][16];
  for (int k = 0; k < 2; k++) {
    snprintf(nm[0], 16, "g%d", k);
    snprintf(nm[1], 16, "s%d", k);
    snprintf(nm[2], 16, "s%dr", k);
    snprintf(nm[3], 16, "e%d", k);
    snprintf(nm[4], 16, "e%ds", k);
    snprintf(nm[5], 16, "m%d", k);
    unary(&g, "GlobalAveragePool", in, nm[0]);
    conv(&g, nm[1], nm[0], nm[1], 40, 5, 1, 1, 1, 0, true);
    unary(&g, "Relu", nm[1], nm[2]);
    conv(&g, nm[3], nm[2], nm[3], 5, 40, 1, 1, 1, 0, true);
    unary(&g, "Sigmoid", nm[3], nm[4]);
    binary(&g, "Mul", in, nm[4], nm[5]);
    memcpy(in, nm[5], sizeof in);
  }
  conv(&g, "p", in, "p1", 40, 24, 1, 3, 8, 1, true); /* 9x7 -> 2x1 */
  unary(&g, "GlobalAveragePool", "p1", "gp");
  conv(&g, "f", "gp", "y", 24, 19, 1, 1, 1, 0, true);
  output(&g, "y");
  int64_t xd[4] = {1, 40, 9, 7};
  check_case("SE in bands", &g, 13, xd, 4, NULL, NULL);
}

static void case_se_fc(void) {
  /* 1x1 convs over a 1x1 map run as our own pass (fc_run): channel counts
   * off the 16-lane blocks (37, 10, 300), no bias, Relu, HardSigmoid (one
   * element at a time), Sigmoid (vector), and the squeeze read twice */
  pb g = {0};
  unary(&g, "GlobalAveragePool", "x", "gp");
  conv(&g, "f1", "gp", "f1o", 37, 10, 1, 1, 1, 0, false);
  unary(&g, "Relu", "f1o", "f1r");
  conv(&g, "f2", "f1r", "f2o", 10, 37, 1, 1, 1, 0, true);
  pb n = pb_node("HardSigmoid", "hs", IN("f2o"), IN("sc"));
  pb_attr_float(&n, "alpha", 0.2f);
  pb_attr_float(&n, "beta", 0.5f);
  add(&g, &n);
  binary(&g, "Mul", "x", "sc", "se");
  conv(&g, "f3", "gp", "f3o", 37, 300, 1, 1, 1, 0, true);
  unary(&g, "Sigmoid", "f3o", "y2");
  output(&g, "se");
  output(&g, "y2");
  int64_t xd[4] = {1, 37, 9, 9};
  check_case("SE fc", &g, 13, xd, 4, NULL, NULL);
}

static void case_channel_passes(void) {
  /* the backend's own passes: an RGB input to channels-last (pixel counts
   * not a multiple of 16), GAP (one image split among threads, or two
   * images), the SE scaling by a computed [1, C, 1, 1] and by a constant
   * [C, 1, 1], with C = 40 (not a multiple of 16) */
  for (int batch = 1; batch <= 2; batch++) {
    pb g = {0};
    conv(&g, "c", "x", "c1", 3, 40, 1, 3, 1, 1, true);
    unary(&g, "Sigmoid", "c1", "c1s");
    binary(&g, "Mul", "c1", "c1s", "c2");
    unary(&g, "GlobalAveragePool", "c2", "gp");
    conv(&g, "f1", "gp", "f1o", 40, 8, 1, 1, 1, 0, true);
    unary(&g, "Relu", "f1o", "f1r");
    conv(&g, "f2", "f1r", "f2o", 8, 40, 1, 1, 1, 0, true);
    unary(&g, "Sigmoid", "f2o", "sc");
    binary(&g, "Mul", "c2", "sc", "se");
    int64_t kd[3] = {40, 1, 1};
    init(&g, "k", kd, 3, 0.5f, 1.5f, false);
    binary(&g, "Mul", "se", "k", "se2");
    conv(&g, "p", "se2", "y", 40, 16, 1, 1, 1, 0, true);
    output(&g, "y");
    int64_t xd[4] = {batch, 3, batch == 1 ? 37 : 23, batch == 1 ? 29 : 21};
    check_case(batch == 1 ? "channel passes" : "channel passes, batch 2", &g,
               13, xd, 4, NULL, NULL);
  }
}

static void case_gemm_matmul(void);
static void case_channel_shuffle(void);

static void case_channel_passes_narrow(void) {
  /* the same, the SE FCs, Gemm/MatMul (FC passes) and the channel
   * shuffle, with the passes' AVX2 and portable code */
  const char *vec[] = {"avx2", "c"};
  for (int i = 0; i < 2; i++) {
    setenv("DERMAL_ONEDNN_VEC", vec[i], 1);
    case_channel_passes();
    case_se_swish();
    case_se_fc();
    case_gemm_matmul();
    case_channel_shuffle();
    unsetenv("DERMAL_ONEDNN_VEC");
  }
}

static void case_pools(void) {
  pb g = {0};
  conv(&g, "c", "x", "c1", 8, 16, 1, 3, 1, 1, true);
  pb n = pb_node("MaxPool", "mp", IN("c1"), IN("m1"));
  int64_t k3[2] = {3, 3}, s2[2] = {2, 2}, p1[4] = {1, 1, 1, 1},
          pa[4] = {0, 1, 1, 0}, d2[2] = {2, 2};
  pb_attr_ints(&n, "kernel_shape", k3, 2);
  pb_attr_ints(&n, "strides", s2, 2);
  pb_attr_ints(&n, "pads", p1, 4);
  add(&g, &n);
  n = pb_node("MaxPool", "mpc", IN("c1"), IN("m2"));
  pb_attr_ints(&n, "kernel_shape", k3, 2);
  pb_attr_ints(&n, "strides", s2, 2);
  pb_attr_int(&n, "ceil_mode", 1);
  add(&g, &n);
  n = pb_node("AveragePool", "ap", IN("c1"), IN("a1"));
  pb_attr_ints(&n, "kernel_shape", k3, 2);
  pb_attr_ints(&n, "strides", s2, 2);
  pb_attr_ints(&n, "pads", p1, 4);
  pb_attr_int(&n, "count_include_pad", 1);
  add(&g, &n);
  n = pb_node("AveragePool", "apc", IN("c1"), IN("a2"));
  pb_attr_ints(&n, "kernel_shape", k3, 2);
  pb_attr_ints(&n, "strides", s2, 2);
  pb_attr_ints(&n, "pads", pa, 4);
  pb_attr_int(&n, "ceil_mode", 1);
  add(&g, &n);
  n = pb_node("AveragePool", "api", IN("c1"), IN("a3"));
  pb_attr_ints(&n, "kernel_shape", k3, 2);
  pb_attr_ints(&n, "strides", s2, 2);
  pb_attr_int(&n, "ceil_mode", 1);
  pb_attr_int(&n, "count_include_pad", 1);
  add(&g, &n);
  n = pb_node("MaxPool", "mpd", IN("c1"), IN("m3"));
  pb_attr_ints(&n, "kernel_shape", k3, 2);
  pb_attr_ints(&n, "dilations", d2, 2);
  add(&g, &n);
  conv(&g, "c12", "x", "c2", 8, 16, 1, 2, 1, 0, true);    /* 12x12 */
  n = pb_node("AveragePool", "api2", IN("c2"), IN("a4")); /* overhang */
  pb_attr_ints(&n, "kernel_shape", k3, 2);
  pb_attr_ints(&n, "strides", s2, 2);
  pb_attr_int(&n, "ceil_mode", 1);
  pb_attr_int(&n, "count_include_pad", 1);
  add(&g, &n);
  n = pb_node("MaxPool", "mpc2", IN("c2"), IN("m4"));
  pb_attr_ints(&n, "kernel_shape", k3, 2);
  pb_attr_ints(&n, "strides", s2, 2);
  pb_attr_int(&n, "ceil_mode", 1);
  add(&g, &n);
  binary(&g, "Add", "a4", "m4", "y4");
  output(&g, "y4");
  unary(&g, "GlobalMaxPool", "c1", "g1");
  unary(&g, "GlobalAveragePool", "m3", "g2");
  /* sum everything down to one tensor per family to keep 4 outputs */
  binary(&g, "Add", "m1", "a1", "y1");
  binary(&g, "Add", "m2", "a3", "y2");
  binary(&g, "Add", "g1", "g2", "y3");
  output(&g, "y1");
  output(&g, "y2");
  output(&g, "m3");
  output(&g, "y3");
  output(&g, "a2");
  int64_t xd[4] = {1, 8, 13, 13};
  check_case("pools", &g, 13, xd, 4, NULL, NULL);

  /* ReduceMean over H and W (keepdims 0 and 1, negative axes): the GAP
   * pass (map_reduce_gap); over C and W: not a pool, the reference */
  pb r = {0};
  conv(&r, "c", "x", "c1", 8, 40, 1, 3, 1, 1, true);
  int64_t hw[2] = {2, 3}, neg[2] = {-1, -2}, cw[2] = {1, 3};
  n = pb_node("ReduceMean", "rm0", IN("c1"), IN("y0"));
  pb_attr_ints(&n, "axes", hw, 2);
  pb_attr_int(&n, "keepdims", 0);
  add(&r, &n);
  n = pb_node("ReduceMean", "rm1", IN("c1"), IN("y1"));
  pb_attr_ints(&n, "axes", neg, 2);
  add(&r, &n);
  n = pb_node("ReduceMean", "rm2", IN("c1"), IN("y2"));
  pb_attr_ints(&n, "axes", cw, 2);
  add(&r, &n);
  output(&r, "y0");
  output(&r, "y1");
  output(&r, "y2");
  check_case("reducemean pools", &r, 13, xd, 4, NULL, NULL);
}

static void case_binaries(void) {
  pb g = {0};
  conv(&g, "c", "x", "c1", 8, 16, 1, 3, 1, 1, true);
  conv(&g, "d", "x", "d1", 8, 16, 1, 1, 1, 0, true);
  int64_t cd[3] = {16, 1, 1}, c4[4] = {1, 16, 1, 1}, wd[1] = {9},
          hw[2] = {9, 9};
  init(&g, "k3", cd, 3, -1.f, 1.f, false);
  init(&g, "k4", c4, 4, 0.5f, 1.5f, false);
  init(&g, "kw", wd, 1, -1.f, 1.f, false);
  init(&g, "khw", hw, 2, -1.f, 1.f, false);
  init_scalar(&g, "two", 2.f);
  binary(&g, "Add", "c1", "k3", "b1");  /* [C,1,1] const */
  binary(&g, "Mul", "k4", "b1", "b2");  /* const first, commutes */
  binary(&g, "Sub", "k4", "b2", "b3");  /* src0 broadcast: not commutative */
  binary(&g, "Div", "b3", "two", "b4"); /* scalar */
  binary(&g, "Max", "b4", "d1", "b5");  /* two activations */
  binary(&g, "Min", "b5", "kw", "b6");  /* last-dim vector */
  binary(&g, "Add", "b6", "khw", "b7"); /* [H,W] */
  pb n = pb_node("Transpose", "tr", IN("d1"), IN("t1"));
  int64_t perm[4] = {0, 1, 3, 2};
  pb_attr_ints(&n, "perm", perm, 4);
  add(&g, &n);
  binary(&g, "Add", "t1", "b7", "b8");  /* plain + blocked */
  binary(&g, "Pow", "b8", "two", "b9"); /* not mapped: ref */
  binary(&g, "Mul", "b9", "c1", "y");
  output(&g, "y");
  int64_t xd[4] = {1, 8, 9, 9};
  check_case("binaries", &g, 13, xd, 4, NULL, NULL);
}

static void case_unaries(void) {
  static const char *ops[] = {"Relu",  "Sigmoid",  "Tanh",      "Elu",
                              "Exp",   "Softplus", "Abs",       "Neg",
                              "Floor", "Erf",      "HardSwish", "Softsign"};
  pb g = {0};
  /* on the plain input, then on a conv output that is also a graph output
   * (so nothing fuses) */
  conv(&g, "c", "x", "c1", 8, 16, 1, 3, 1, 1, true);
  output(&g, "c1");
  char prev[32] = "c1", cur[32];
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    snprintf(cur, sizeof cur, "u%zu", i);
    if (!strcmp(ops[i], "Elu")) {
      pb n = pb_node("Elu", cur, IN(prev), IN(cur));
      pb_attr_float(&n, "alpha", 0.7f);
      add(&g, &n);
    } else {
      unary(&g, ops[i], prev, cur);
    }
    memcpy(prev, cur, sizeof prev);
  }
  pb n = pb_node("LeakyRelu", "lr", IN("x"), IN("l1"));
  pb_attr_float(&n, "alpha", 0.1f);
  add(&g, &n);
  unary(&g, "Abs", "l1", "l2");
  unary(&g, "Sqrt", "l2", "l3");
  unary(&g, "Exp", "l3", "l4");
  unary(&g, "Log", "l4", "l5");
  unary(&g, "Reciprocal", "l4", "l6");
  binary(&g, "Add", "l5", "l6", "l7");
  conv(&g, "c2", "l7", "c2o", 8, 16, 1, 1, 1, 0, true);
  unary(&g, "Tanh", "c2o", "c2t");
  binary(&g, "Add", prev, "c2t", "y");
  output(&g, "y");
  int64_t xd[4] = {1, 8, 7, 7};
  check_case("unaries", &g, 13, xd, 4, NULL, NULL);
}

static void case_concat_softmax(void) {
  pb g = {0};
  conv(&g, "a", "x", "a1", 8, 24, 1, 3, 1, 1, true);
  conv(&g, "b", "x", "b1", 8, 8, 1, 1, 1, 0, true);
  unary(&g, "Relu", "a1", "a2");
  pb n = pb_node("Concat", "cat", IN("a2", "b1", "x"), IN("c"));
  pb_attr_int(&n, "axis", 1);
  add(&g, &n);
  conv(&g, "d", "c", "d1", 40, 16, 1, 3, 1, 1, true);
  n = pb_node("Concat", "cat2", IN("d1", "d1"), IN("e"));
  pb_attr_int(&n, "axis", 2);
  add(&g, &n);
  n = pb_node("Softmax", "sm", IN("e"), IN("y1"));
  pb_attr_int(&n, "axis", 1);
  add(&g, &n);
  n = pb_node("LogSoftmax", "lsm", IN("d1"), IN("y2"));
  pb_attr_int(&n, "axis", -1);
  add(&g, &n);
  output(&g, "y1");
  output(&g, "y2");
  int64_t xd[4] = {1, 8, 6, 6};
  check_case("concat + softmax", &g, 13, xd, 4, NULL, NULL);

  /* Concats that are copies of whole runs (map_concat_copy): below
   * AVX-512 (the test_onednn.avx2 run) conv outputs are nChw8c, and with
   * whole channel blocks each input is one run of the output; 512 KB, so
   * 2 and 3 threads split the copy.  12 + 4 channels: not whole blocks,
   * oneDNN's concat.  The graph input x is plain: brought to the layout. */
  pb r = {0};
  conv(&r, "a", "x", "a1", 8, 32, 1, 3, 1, 1, true);
  conv(&r, "b", "x", "b1", 8, 16, 1, 1, 1, 0, true);
  n = pb_node("Concat", "cat", IN("a1", "b1", "a1", "x"), IN("c"));
  pb_attr_int(&n, "axis", 1);
  add(&r, &n);
  conv(&r, "d", "c", "y1", 88, 8, 1, 3, 1, 1, true);
  conv(&r, "e", "x", "e1", 8, 12, 1, 1, 1, 0, true);
  conv(&r, "f", "x", "f1", 8, 4, 1, 1, 1, 0, true);
  n = pb_node("Concat", "cat2", IN("e1", "f1"), IN("g"));
  pb_attr_int(&n, "axis", 1);
  add(&r, &n);
  conv(&r, "h", "g", "y2", 16, 8, 1, 3, 1, 1, true);
  output(&r, "y1");
  output(&r, "y2");
  int64_t rd[4] = {1, 8, 40, 40};
  check_case("concat runs", &r, 13, rd, 4, NULL, NULL);

  /* legacy softmax (opset 11): coerced to 2-D at axis 1 */
  pb h = {0};
  conv(&h, "a", "x", "a1", 8, 4, 1, 3, 1, 1, true);
  n = pb_node("Softmax", "sm", IN("a1"), IN("y"));
  pb_attr_int(&n, "axis", 1);
  add(&h, &n);
  output(&h, "y");
  check_case("legacy softmax", &h, 11, xd, 4, NULL, NULL);
}

static void case_gemm_matmul(void) {
  pb g = {0};
  conv(&g, "c", "x", "c1", 8, 32, 1, 3, 1, 1, true);
  unary(&g, "GlobalAveragePool", "c1", "gp");
  pb n = pb_node("Flatten", "fl", IN("gp"), IN("f"));
  add(&g, &n);
  n = pb_node("Gemm", "g1", IN("f", "w1", "b1"), IN("h1"));
  pb_attr_int(&n, "transB", 1);
  add(&g, &n);
  unary(&g, "Relu", "h1", "h2");
  n = pb_node("Gemm", "g2", IN("h2", "w2", "b2"), IN("h3")); /* transB 0 */
  pb_attr_float(&n, "beta", 0.5f);
  add(&g, &n);
  n = pb_node("Gemm", "g3", IN("h3", "w3", "b3"), IN("y1")); /* alpha: ref */
  pb_attr_float(&n, "alpha", 2.f);
  add(&g, &n);
  int64_t w1[2] = {20, 32}, b1[2] = {1, 20}, w2[2] = {20, 10}, b2[1] = {10},
          w3[2] = {10, 5}, b3[1] = {5};
  init(&g, "w1", w1, 2, -0.3f, 0.3f, false);
  init(&g, "b1", b1, 2, -0.3f, 0.3f, false);
  init(&g, "w2", w2, 2, -0.3f, 0.3f, false);
  init(&g, "b2", b2, 1, -0.3f, 0.3f, false);
  init(&g, "w3", w3, 2, -0.3f, 0.3f, false);
  init(&g, "b3", b3, 1, -0.3f, 0.3f, false);
  /* MatMul: [1,32,H*W]^T-ish via Reshape + Transpose, const weights */
  int64_t shp[3] = {1, 32, 36};
  init_i64(&g, "shp", shp, 3);
  n = pb_node("Reshape", "rs", IN("c1", "shp"), IN("r1"));
  add(&g, &n);
  n = pb_node("Transpose", "tr", IN("r1"), IN("r2"));
  int64_t perm[3] = {0, 2, 1};
  pb_attr_ints(&n, "perm", perm, 3);
  add(&g, &n);
  int64_t wm[2] = {32, 12};
  init(&g, "wm", wm, 2, -0.3f, 0.3f, false);
  binary(&g, "MatMul", "r2", "wm", "m1");
  binary(&g, "MatMul", "r1", "m1", "y2"); /* two activations */
  output(&g, "y1");
  output(&g, "y2");
  int64_t xd[4] = {1, 8, 6, 6};
  check_case("gemm + matmul", &g, 13, xd, 4, NULL, NULL);

  /* classifier heads (one row, transB): the row-major fc pass, with rows
   * and inputs that are not whole vectors, and one large enough to be
   * split between threads */
  pb h = {0};
  conv(&h, "c", "x", "c1", 8, 37, 1, 3, 1, 1, true);
  unary(&h, "GlobalAveragePool", "c1", "gp");
  n = pb_node("Flatten", "fl", IN("gp"), IN("f"));
  add(&h, &n);
  n = pb_node("Gemm", "h1", IN("f", "v1", "c1b"), IN("k1"));
  pb_attr_int(&n, "transB", 1);
  add(&h, &n);
  unary(&h, "Relu", "k1", "k2");
  n = pb_node("Gemm", "h2", IN("k2", "v2"), IN("y"));
  pb_attr_int(&n, "transB", 1);
  add(&h, &n);
  int64_t v1[2] = {523, 37}, c1b[1] = {523}, v2[2] = {1030, 523};
  init(&h, "v1", v1, 2, -0.3f, 0.3f, false);
  init(&h, "c1b", c1b, 1, -0.3f, 0.3f, false);
  init(&h, "v2", v2, 2, -0.1f, 0.1f, false);
  output(&h, "y");
  check_case("gemm heads (fc rows)", &h, 13, xd, 4, NULL, NULL);
}

static void case_batchnorm_ref_ops(void) {
  /* BN after a pool (cannot fold), ops that fall back to ref between oneDNN
   * ops: Pad, Slice, Transpose, Reshape; a 1-D conv */
  pb g = {0};
  conv(&g, "c", "x", "c1", 8, 16, 1, 3, 1, 1, true);
  pb n = pb_node("MaxPool", "mp", IN("c1"), IN("m"));
  int64_t k2[2] = {2, 2};
  pb_attr_ints(&n, "kernel_shape", k2, 2);
  pb_attr_ints(&n, "strides", k2, 2);
  add(&g, &n);
  n = pb_node("BatchNormalization", "bn", IN("m", "s", "b", "mu", "var"),
              IN("n1"));
  pb_attr_float(&n, "epsilon", 1e-3f);
  add(&g, &n);
  int64_t c16[1] = {16};
  init(&g, "s", c16, 1, 0.5f, 1.5f, false);
  init(&g, "b", c16, 1, -0.5f, 0.5f, false);
  init(&g, "mu", c16, 1, -0.5f, 0.5f, false);
  init(&g, "var", c16, 1, 0.5f, 1.5f, false);
  int64_t pads[8] = {0, 0, 1, 2, 0, 0, 2, 1};
  init_i64(&g, "pads", pads, 8);
  n = pb_node("Pad", "pad", IN("n1", "pads"), IN("p1"));
  add(&g, &n);
  conv(&g, "c2", "p1", "c2o", 16, 16, 16, 3, 1, 0, true);
  int64_t st[1] = {1}, en[1] = {5}, ax[1] = {2};
  init_i64(&g, "st", st, 1);
  init_i64(&g, "en", en, 1);
  init_i64(&g, "ax", ax, 1);
  n = pb_node("Slice", "sl", IN("c2o", "st", "en", "ax"), IN("s1"));
  add(&g, &n);
  int64_t shp[3] = {1, 16, -1};
  init_i64(&g, "shp", shp, 3);
  n = pb_node("Reshape", "rs", IN("s1", "shp"), IN("r1"));
  add(&g, &n);
  /* 1-D conv on [1,16,L] */
  n = pb_node("Conv", "c1d", IN("r1", "w1d", "b1d"), IN("q1"));
  int64_t k3[1] = {3}, p1[2] = {1, 1};
  pb_attr_ints(&n, "kernel_shape", k3, 1);
  pb_attr_ints(&n, "pads", p1, 2);
  add(&g, &n);
  int64_t w1d[3] = {12, 16, 3}, b1d[1] = {12};
  init(&g, "w1d", w1d, 3, -0.3f, 0.3f, false);
  init(&g, "b1d", b1d, 1, -0.3f, 0.3f, false);
  unary(&g, "Relu", "q1", "y");
  output(&g, "y");
  output(&g, "n1"); /* also read internally */
  int64_t xd[4] = {1, 8, 12, 12};
  check_case("batchnorm + ref ops", &g, 13, xd, 4, NULL, NULL);
}

static void case_zero_pad(void) {
  /* DenseNet's transition: a Pad by zero on every axis before an
   * AveragePool (graph.c makes it an Identity: a view in any layout), then
   * a Concat reading the pool and the pad's output */
  pb g = {0};
  conv(&g, "c", "x", "c1", 8, 16, 1, 1, 1, 0, true);
  int64_t zeros[8] = {0};
  init_i64(&g, "pads", zeros, 8);
  pb n = pb_node("Pad", "pad", IN("c1", "pads"), IN("p1"));
  add(&g, &n);
  n = pb_node("AveragePool", "ap", IN("p1"), IN("a1"));
  int64_t k2[2] = {2, 2};
  pb_attr_ints(&n, "kernel_shape", k2, 2);
  pb_attr_ints(&n, "strides", k2, 2);
  add(&g, &n);
  conv(&g, "d", "a1", "d1", 16, 8, 1, 3, 1, 1, true);
  n = pb_node("MaxPool", "mp", IN("p1"), IN("m1"));
  pb_attr_ints(&n, "kernel_shape", k2, 2);
  pb_attr_ints(&n, "strides", k2, 2);
  add(&g, &n);
  n = pb_node("Concat", "cat", IN("d1", "m1"), IN("y"));
  pb_attr_int(&n, "axis", 1);
  add(&g, &n);
  output(&g, "y");
  output(&g, "p1"); /* the view is also a graph output */
  int64_t xd[4] = {1, 8, 10, 10};
  check_case("zero pad", &g, 13, xd, 4, NULL, NULL);
}

/* A channel Slice (starts, ends, axes, steps as initializers) of x. */
static void cslice(pb *g, const char *name, const char *x, const char *y,
                   int64_t axis, int64_t a, int64_t b, int64_t step) {
  char sn[4][80];
  const int64_t v[4] = {a, b, axis, step};
  const char *what[4] = {"starts", "ends", "axes", "steps"};
  for (int i = 0; i < 4; i++) {
    snprintf(sn[i], sizeof sn[i], "%s_%s", name, what[i]);
    init_i64(g, sn[i], &v[i], 1);
  }
  pb n = pb_node("Slice", name, IN(x, sn[0], sn[1], sn[2], sn[3]), IN(y));
  add(g, &n);
}

/* ShuffleNet's channel shuffle of x ([1, c, h, w]) in `groups` groups:
 * Reshape, Transpose (0, 2, 1, 3, 4), Reshape back. */
static void shuffle(pb *g, const char *name, const char *x, const char *y,
                    int64_t c, int64_t groups, int64_t h, int64_t w) {
  char s5[80], s4[80], r5[80], t5[80];
  snprintf(s5, sizeof s5, "%s_s5", name);
  snprintf(s4, sizeof s4, "%s_s4", name);
  snprintf(r5, sizeof r5, "%s_r5", name);
  snprintf(t5, sizeof t5, "%s_t5", name);
  const int64_t d5[5] = {1, groups, c / groups, h, w}, d4[4] = {1, c, h, w};
  init_i64(g, s5, d5, 5);
  init_i64(g, s4, d4, 4);
  pb n = pb_node("Reshape", r5, IN(x, s5), IN(r5));
  add(g, &n);
  n = pb_node("Transpose", t5, IN(r5), IN(t5));
  const int64_t perm[5] = {0, 2, 1, 3, 4};
  pb_attr_ints(&n, "perm", perm, 5);
  add(g, &n);
  n = pb_node("Reshape", name, IN(t5, s4), IN(y));
  add(g, &n);
}

static void case_channel_shuffle(void) {
  /* ShuffleNet v2's block (map_cslice, map_shuffle): the two halves of a
   * channels-last map as Slices, one half through a conv, a Concat of the
   * two and a shuffle in two groups (the interleaving kernel; 29-channel
   * halves leave a partial vector); 40x40x58 floats, so 2 and 3 threads
   * split the passes.  Then a shuffle alone in two groups (the two halves
   * of one map) and in four (the gather), a Concat of three inputs
   * followed by a shuffle, and Slices that stay on the reference kernel
   * (a step of 2, along the height). */
  pb g = {0};
  conv(&g, "c0", "x", "t", 8, 58, 1, 1, 1, 0, true);
  cslice(&g, "s1", "t", "h1", 1, 0, 29, 1);
  cslice(&g, "s2", "t", "h2", 1, 29, 58, 1);
  conv(&g, "c1", "h2", "b1", 29, 29, 1, 3, 1, 1, true);
  pb n = pb_node("Concat", "cat", IN("h1", "b1"), IN("cat1"));
  pb_attr_int(&n, "axis", 1);
  add(&g, &n);
  shuffle(&g, "sh1", "cat1", "u", 58, 2, 40, 40);
  conv(&g, "c2", "u", "y1", 58, 8, 1, 1, 1, 0, true);
  conv(&g, "c3", "u", "v", 58, 32, 1, 1, 1, 0, true);
  shuffle(&g, "sh2", "v", "v2", 32, 2, 40, 40);
  shuffle(&g, "sh4", "v2", "v4", 32, 4, 40, 40);
  conv(&g, "c4", "v4", "y2", 32, 8, 1, 3, 1, 1, true);
  conv(&g, "c5", "x", "w1", 8, 10, 1, 1, 1, 0, true);
  conv(&g, "c6", "x", "w2", 8, 6, 1, 1, 1, 0, true);
  n = pb_node("Concat", "cat3", IN("w1", "w2", "v"), IN("cat2"));
  pb_attr_int(&n, "axis", 1);
  add(&g, &n);
  shuffle(&g, "sh3", "cat2", "y3", 48, 2, 40, 40);
  cslice(&g, "s3", "v", "y4", 1, 1, 32, 2);
  cslice(&g, "s4", "v", "y5", 2, 3, 17, 1);
  cslice(&g, "s5", "v", "y6", 1, 5, 21, 1);
  output(&g, "y1");
  output(&g, "y2");
  output(&g, "y3");
  output(&g, "y4");
  output(&g, "y5");
  output(&g, "y6");
  int64_t xd[4] = {1, 8, 40, 40};
  check_case("channel shuffle", &g, 13, xd, 4, NULL, NULL);
}

static void case_dense_block(void) {
  /* DenseNet's pattern: each layer's 3x3 conv (Winograd-eligible: 16
   * output channels) reads a Concat of every earlier map, through a
   * BatchNorm + Relu that cannot fold.  The Concats write more bytes than
   * the convs, so every conv keeps nChw16c (follow) and the Concats copy
   * whole blocks (map_concat_copy) on AVX-512; one Concat is also a graph
   * output. */
  pb g = {0};
  conv(&g, "l1", "x", "a1", 16, 16, 1, 3, 1, 1, true);
  pb n = pb_node("Concat", "cat1", IN("x", "a1"), IN("k1"));
  pb_attr_int(&n, "axis", 1);
  add(&g, &n);
  conv(&g, "b1", "k1", "b1o", 32, 32, 1, 1, 1, 0, true);
  unary(&g, "Relu", "b1o", "b1r");
  conv(&g, "l2", "b1r", "a2", 32, 16, 1, 3, 1, 1, true);
  n = pb_node("Concat", "cat2", IN("x", "a1", "a2"), IN("k2"));
  pb_attr_int(&n, "axis", 1);
  add(&g, &n);
  n = pb_node("BatchNormalization", "bn", IN("k2", "s", "b", "mu", "var"),
              IN("n2"));
  add(&g, &n);
  int64_t c48[1] = {48};
  init(&g, "s", c48, 1, 0.5f, 1.5f, false);
  init(&g, "b", c48, 1, -0.5f, 0.5f, false);
  init(&g, "mu", c48, 1, -0.5f, 0.5f, false);
  init(&g, "var", c48, 1, 0.5f, 1.5f, false);
  unary(&g, "Relu", "n2", "n2r");
  conv(&g, "l3", "n2r", "a3", 48, 16, 1, 3, 1, 1, true);
  n = pb_node("Concat", "cat3", IN("k2", "a3"), IN("k3"));
  pb_attr_int(&n, "axis", 1);
  add(&g, &n);
  conv(&g, "t", "k3", "y", 64, 8, 1, 1, 1, 0, true);
  output(&g, "y");
  output(&g, "k2");
  int64_t xd[4] = {1, 16, 20, 20};
  check_case("dense block", &g, 13, xd, 4, NULL, NULL);
}

static void case_pointwise(void) {
  /* 1x1 convs, as the ST_PW pass (pw.c) runs them where the CPU has
   * AVX-512 (DERMAL_ONEDNN_PW=1: off Zen 4 too) and as oneDNN does (=0):
   * 8 to 64 output channels, a swish after, with and without a bias,
   * activations, a residual sum in place
   * and one copied (its addend read again later), an activation after
   * the sum, a stride of 2 (11x13 -> 6x7); 143 pixels (not a multiple of
   * the kernels' 8 or 6), batch 1 and 2 */
  const char *on[] = {"1", "0"};
  for (int k = 0; k < 2; k++) {
    setenv("DERMAL_ONEDNN_PW", on[k], 1);
    for (int batch = 1; batch <= 2; batch++) {
      pb g = {0};
      conv(&g, "a", "x", "a1", 3, 32, 1, 3, 1, 1, true);
      unary(&g, "Relu", "a1", "a2");
      conv(&g, "p1", "a2", "b1", 32, 24, 1, 1, 1, 0, true);
      conv(&g, "p2", "b1", "c1", 24, 40, 1, 1, 1, 0, false);
      unary(&g, "Relu", "c1", "c2");
      conv(&g, "p3", "c2", "d0", 40, 64, 1, 1, 1, 0, true);
      unary(&g, "Sigmoid", "d0", "d0s"); /* swish: in the kernel */
      binary(&g, "Mul", "d0", "d0s", "d0m");
      conv(&g, "p7", "d0m", "d1", 64, 56, 1, 1, 1, 0, true);
      unary(&g, "HardSwish", "d1", "d2");
      conv(&g, "p4", "d2", "e1", 56, 24, 1, 1, 1, 0, true);
      binary(&g, "Add", "e1", "b1", "e2"); /* b1 read again: a copy */
      unary(&g, "Relu", "e2", "e3");
      conv(&g, "p5", "e3", "f1", 24, 24, 1, 1, 1, 0, true);
      binary(&g, "Add", "b1", "f1", "f2"); /* b1's last read: in place */
      conv(&g, "p6", "f2", "g1", 24, 40, 1, 1, 1, 0, true);
      binary(&g, "Add", "g1", "c2", "y"); /* in place over c2 */
      conv(&g, "p8", "f2", "y2", 24, 32, 1, 1, 2, 0, true); /* strided */
      output(&g, "y");
      output(&g, "y2");
      int64_t xd[4] = {batch, 3, 11, 13};
      char name[64];
      snprintf(name, sizeof name, "pointwise, PW=%s, batch %d", on[k], batch);
      check_case(name, &g, 13, xd, 4, NULL, NULL);
    }
  }
  unsetenv("DERMAL_ONEDNN_PW");
}

/* Conv -> Add -> Add: graph.c fuses the first sum only (oneDNN takes one
 * sum post-op; with two, the whole conv ran on the reference kernel) and
 * the result still matches. */
static pb two_sums_graph(void) {
  pb g = {0};
  conv(&g, "b", "x", "x2", 8, 16, 1, 1, 1, 0, false);
  conv(&g, "a", "x", "a1", 8, 16, 1, 3, 1, 1, true);
  conv(&g, "c", "a1", "c1", 16, 16, 1, 1, 1, 0, true);
  binary(&g, "Add", "c1", "a1", "s1");
  binary(&g, "Add", "s1", "x2", "y");
  output(&g, "y");
  return g;
}

static void case_two_sums(void) {
  pb g = two_sums_graph();
  int64_t xd[4] = {1, 8, 9, 7};
  pb_value_info(&g, 11, "x", xd, 4);
  pb bytes = pb_model(&g, 13);
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  dm_graph *gr = NULL;
  dm_graph_opts o = {.fuse = true, .alias_views = true};
  CHECK(dm_onnx_parse(bytes.p, bytes.n, NULL, &m, &eb) == DM_OK &&
            dm__graph_build(m, &o, &gr, &eb) == DM_OK,
        "two sums: graph: %s", eb.msg);
  if (gr) {
    int sums = -1, adds = 0;
    for (int i = 0; i < gr->n_nodes; i++) {
      const dm_node *n = &gr->nodes[i];
      adds += n->op == DM_OP_BINARY;
      if (!strcmp(n->name, "c")) {
        sums = 0;
        for (int k = 0; k < n->n_post; k++)
          sums += n->post[k].kind == DM_POST_ADD;
      }
    }
    CHECK(sums == 1 && adds == 1, "two sums: conv c fuses %d, %d Add left",
          sums, adds);
    dm__graph_free(gr);
  }
  dm_onnx_free(m);
  free(bytes.p);
  pb h = two_sums_graph(); /* against the reference */
  check_case("two sums", &h, 13, xd, 4, NULL, NULL);
}

/* dm__pw_rows against a plain loop: every register shape, pixel ranges
 * that start and end inside a block, post-op chains with the sum first,
 * last and between activations. */
static void test_pw_kernel(void) {
  if (!__builtin_cpu_supports("avx512f") ||
      !__builtin_cpu_supports("avx512dq")) {
    printf("skip pw kernel: no AVX-512\n");
    return;
  }
  const int ocs[] = {8, 16, 24, 32, 40, 48, 56, 64, 72, 120, 200};
  for (int oi = 0; oi < 11; oi++) {
    for (int chain = 0; chain < 4; chain++) {
      /* chain 3: inputs of 2049 channels, so that 131 pixels take three
       * chunks (CHUNK_BYTES) */
      int oc = ocs[oi], k = chain == 3 ? 2049 : 37, np = chain == 3 ? 131 : 29;
      dm_pw p;
      memset(&p, 0, sizeof p);
      p.k = k;
      p.oc = oc;
      p.stride = 1;
      if (chain == 1) { /* relu, sum */
        p.n_post = 2;
        p.act[0].kind = DM_UNARY_RELU;
        p.sum[1] = true;
      } else if (chain == 2) { /* sum, clip, swish */
        p.n_post = 3;
        p.sum[0] = true;
        p.act[1] = (dm_act){DM_UNARY_CLIP, -1.f, 1.5f};
        p.act[2].kind = DM_UNARY_SWISH;
      }
      float *w = malloc((size_t)(oc * k) * sizeof *w);
      float *b = malloc((size_t)oc * sizeof *b);
      float *mem = malloc(dm__pw_floats(&p) * sizeof *mem);
      float *x = malloc((size_t)(np * k) * sizeof *x);
      float *y = malloc((size_t)(np * oc) * sizeof *y);
      float *want = malloc((size_t)(np * oc) * sizeof *want);
      if (!w || !b || !mem || !x || !y || !want) abort();
      for (int i = 0; i < oc * k; i++)
        w[i] = frand();
      for (int i = 0; i < oc; i++)
        b[i] = frand();
      for (int i = 0; i < np * k; i++)
        x[i] = frand();
      for (int i = 0; i < np * oc; i++)
        y[i] = want[i] = frand();
      dm__pw_pack(&p, mem, w, chain == 1 ? NULL : b);
      int p0 = 3, p1 = np - 2; /* pixels outside stay as they were */
      for (int q = p0; q < p1; q++)
        for (int o = 0; o < oc; o++) {
          float acc = chain == 1 ? 0.f : b[o];
          for (int i = 0; i < k; i++)
            acc = fmaf(x[q * k + i], w[o * k + i], acc);
          for (int j = 0; j < p.n_post; j++)
            acc =
                p.sum[j] ? acc + want[q * oc + o] : dm__ref_act(&p.act[j], acc);
          want[q * oc + o] = acc;
        }
      dm__pw_rows(&p, y, x, (size_t)p0, (size_t)p1);
      double e = rel_err(y, want, (size_t)(np * oc));
      CHECK(e <= 1e-5, "pw kernel oc %d chain %d: %.3g", oc, chain, e);
      free(w);
      free(b);
      free(mem);
      free(x);
      free(y);
      free(want);
    }
  }
}

/* ------------------------------------------------------ real models -- */

static const char *const model_names[] = {
    "mobilenet_v2", "resnet50",      "efficientnet_b0",
    "resnet18",     "squeezenet1_1", "mobilenet_v3_small"};

static void test_real_models(void) {
  const char *dir = getenv("DERMAL_MODELS");
  if (!dir) dir = "build/models";
  const char *bench = getenv("DERMAL_ONEDNN_BENCH");
  size_t n_models = sizeof model_names / sizeof model_names[0];
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  n_models = 1; /* the ref backend is slow under sanitizers */
#endif
  for (size_t mi = 0; mi < n_models; mi++) {
    const char *nm = model_names[mi];
    char path[512], inp[512], tpath[512];
    snprintf(path, sizeof path, "%s/%s.opset13.onnx", dir, nm);
    snprintf(inp, sizeof inp, "%s/%s.input.npy", dir, nm);
    snprintf(tpath, sizeof tpath, "%s/%s.opset13.torch.npy", dir, nm);
    FILE *f = fopen(path, "rb");
    if (!f) {
      printf("skip %s: %s not found (tools/export_torchvision.py)\n", nm, path);
      continue;
    }
    fclose(f);
    dm_errbuf eb = {{0}};
    dm_onnx_model *m = NULL;
    dm_tensor x = {0}, t = {0};
    dm_err rc = dm_onnx_open(path, &m, &eb);
    CHECK(rc == DM_OK, "%s: open: %s", nm, eb.msg);
    if (!rc) rc = dm_npy_read(inp, &x, &eb);
    CHECK(rc == DM_OK, "%s: input: %s", nm, eb.msg);
    if (rc) {
      dm_onnx_free(m);
      continue;
    }
    bool have_torch = dm_npy_read(tpath, &t, &eb) == DM_OK;
    result ref = {0}, got = {0}, got2 = {0};
    rc = run_model(m, DM_BACKEND_REF, false, 1, &x, &ref, NULL, 0, &eb);
    CHECK(rc == DM_OK, "%s: ref: %s", nm, eb.msg);
    double p50 = 0, p50b = 0;
    int iters = bench ? 100 : 0;
    dm_err rc1 =
        run_model(m, DM_BACKEND_ONEDNN, false, 1, &x, &got, &p50, iters, &eb);
    CHECK(rc1 == DM_OK, "%s: onednn: %s", nm, eb.msg);
    dm_err rc2 =
        run_model(m, DM_BACKEND_ONEDNN, false, 2, &x, &got2, &p50b, iters, &eb);
    CHECK(rc2 == DM_OK, "%s: onednn 2 threads: %s", nm, eb.msg);
    if (!rc && !rc1) compare(nm, "vs ref", &got, &ref, TOL);
    if (!rc && !rc2) compare(nm, "2 threads vs ref", &got2, &ref, TOL);
    if (have_torch && !rc1 && got.n == 1) {
      size_t n = 1;
      for (int d = 0; d < t.rank; d++)
        n *= (size_t)t.dims[d];
      CHECK(n == got.len[0], "%s: torch output size", nm);
      if (n == got.len[0]) {
        double e = rel_err(got.y[0], t.data, n);
        CHECK(e <= 1e-3, "%s: onednn vs torch rel err %.3g", nm, e);
        printf("  %-20s vs ref %.2g, vs torch %.2g", nm,
               !rc ? rel_err(got.y[0], ref.y[0], n) : -1.0, e);
        if (bench) printf(", p50 %.3f ms (1t) %.3f ms (2t)", p50, p50b);
        printf("\n");
      }
    }
    result_free(&ref);
    result_free(&got);
    result_free(&got2);
    free(x.data);
    free(t.data);
    dm_onnx_free(m);
  }
}

/* ------------------------------------------------------- concurrency -- */

typedef struct worker {
  const dm_engine *e;
  const dm_tensor *x;
  const float *expect;
  size_t n;
  int bad;
} worker;

static void *work(void *arg) {
  worker *w = arg;
  dm_errbuf eb = {{0}};
  dm_session *s = NULL;
  if (dm_session_new(w->e, &s, &eb)) {
    w->bad = 1000;
    return NULL;
  }
  for (int i = 0; i < 20; i++) {
    if (dm_session_run(s, w->x, 1, &eb)) {
      w->bad++;
      continue;
    }
    const float *y = dm_session_output(s, 0).data;
    if (memcmp(y, w->expect, w->n * sizeof *y)) w->bad++;
  }
  dm_session_free(s);
  return NULL;
}

static void test_concurrent(void) {
  pb g = {0};
  conv(&g, "a", "x", "a1", 8, 32, 1, 3, 1, 1, true);
  unary(&g, "Relu", "a1", "a2");
  conv(&g, "b", "a2", "b1", 32, 32, 32, 3, 1, 1, true);
  binary(&g, "Add", "b1", "a2", "b2");
  conv(&g, "c", "b2", "c1", 32, 16, 1, 1, 1, 0, true);
  pb n = pb_node("Transpose", "tr", IN("c1"), IN("y"));
  int64_t perm[4] = {0, 2, 3, 1};
  pb_attr_ints(&n, "perm", perm, 4);
  add(&g, &n);
  output(&g, "y");
  int64_t xd[4] = {1, 8, 24, 24};
  pb_value_info(&g, 11, "x", xd, 4);
  pb bytes = pb_model(&g, 13);
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  dm_engine *e = NULL;
  dm_session *s = NULL;
  size_t nx = numel(xd, 4), ny = 16 * 24 * 24;
  float *x = malloc(nx * sizeof *x), *expect = malloc(ny * sizeof *expect);
  if (!x || !expect) abort();
  for (size_t i = 0; i < nx; i++)
    x[i] = frand();
  dm_tensor xt = {
      .dtype = DM_ONNX_FLOAT, .rank = 4, .dims = {1, 8, 24, 24}, .data = x};
  dm_engine_opts o = {.backend = DM_BACKEND_ONEDNN, .threads = 2};
  dm_err rc = dm_onnx_parse(bytes.p, bytes.n, NULL, &m, &eb);
  if (!rc) rc = dm_engine_new(m, &o, &e, &eb);
  if (!rc) rc = dm_session_new(e, &s, &eb);
  if (!rc) rc = dm_session_run(s, &xt, 1, &eb);
  CHECK(rc == DM_OK, "concurrent: setup: %s", eb.msg);
  if (!rc) {
    memcpy(expect, dm_session_output(s, 0).data, ny * sizeof *expect);
    worker w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
      w[i] = (worker){e, &xt, expect, ny, 0};
      pthread_create(&t[i], NULL, work, &w[i]);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
      pthread_join(t[i], NULL);
      bad += w[i].bad;
    }
    CHECK(bad == 0, "concurrent sessions: %d runs differ or failed", bad);
  }
  dm_session_free(s);
  dm_engine_free(e);
  dm_onnx_free(m);
  free(bytes.p);
  free(x);
  free(expect);
}

/* The stem pass's QuantizeLinear (stem.c put16) against ONNX's formula,
 * sat(rint(x / scale) + zp), half to even, NaN -> zp: every output is
 * the input's centre pixel (centre taps 1, the rest 0), and the inputs
 * sit on and 1-2 ulp around the half-integer multiples of the scale,
 * where x * (1 / scale) and x / scale round apart, plus NaN, infinities
 * and huge values. */
static void test_stem_quantize(void) {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx512f")) {
    printf("skip stem quantize: no AVX-512F\n");
    return;
  }
  /* 16 channels: one vector per pixel; 32: two (put16 with each mask) */
  enum { OH = 9, OW = 70, CM = 32, IH = 2 * OH + 1, IW = 2 * OW + 1 };
  static float x[IH * IW], w1[CM * 9], w2[CM * 9], b[CM];
  static uint8_t y[OH * OW * CM];
  static const struct {
    float scale;
    int32_t zp;
    bool u8;
  } qs[] = {{0.037f, 7, true}, {0.1f, 0, false}, {0.0173f, -20, false}};
  for (int o = 0; o < CM; o++) {
    w1[o * 9 + 4] = 1.f;
    w2[o * 9 + 4] = 1.f;
  }
  for (int C = 16; C <= CM; C += 16)
    for (size_t qi = 0; qi < sizeof qs / sizeof *qs; qi++) {
      float sc = qs[qi].scale;
      for (int i = 0; i < IH * IW; i++) { /* ties, their neighbours, specials */
        float t = ((float)((i / 5) % 300 - 150) + 0.5f) * sc;
        int k = i % 5;
        x[i] = k == 0 ? t : nextafterf(t, k < 3 ? INFINITY : -INFINITY);
        if (k == 2 || k == 4)
          x[i] = nextafterf(x[i], k == 2 ? INFINITY : -INFINITY);
      }
      int sp = 2 * IW + 2 * 7 + 1; /* centre pixels of row 1 */
      x[sp] = NAN;
      x[sp + 2] = INFINITY;
      x[sp + 4] = -INFINITY;
      x[sp + 6] = 1e30f;
      x[sp + 8] = -1e30f;
      dm_stem st;
      memset(&st, 0, sizeof st);
      st.cin = 1;
      st.c = C;
      st.ih = IH;
      st.iw = IW;
      st.oh = OH;
      st.ow = OW;
      st.u8 = qs[qi].u8;
      st.scale = sc;
      st.zp = qs[qi].zp;
      float *mem = aligned_alloc(
          64, (dm__stem_floats(&st) * sizeof(float) + 63) & ~(size_t)63);
      void *scratch = malloc(dm__stem_scratch(&st));
      CHECK(mem && scratch, "stem quantize: out of memory");
      if (!mem || !scratch) return;
      dm__stem_pack(&st, mem, w1, b, w2, b);
      dm__stem_rows(&st, y, x, 0, OH, scratch);
      /* the first conv: the centre input, NaN when another input of its
       * window is not finite (0 * inf); the depthwise conv the same again */
      static float c1[OH][OW];
      for (int r = 0; r < OH; r++)
        for (int c = 0; c < OW; c++) {
          float v = x[(2 * r + 1) * IW + 2 * c + 1];
          for (int k = 0; k < 9; k++)
            if (k != 4 && !isfinite(x[(2 * r + k / 3) * IW + 2 * c + k % 3]))
              v = NAN;
          c1[r][c] = v;
        }
      int bad = 0, lo = st.u8 ? 0 : -128, hi = st.u8 ? 255 : 127;
      for (int r = 0; r < OH; r++)
        for (int c = 0; c < OW; c++) {
          float v = c1[r][c];
          for (int k = 0; k < 9; k++) {
            int yy = r + k / 3 - 1, xx = c + k % 3 - 1;
            if (k != 4 && yy >= 0 && yy < OH && xx >= 0 && xx < OW &&
                !isfinite(c1[yy][xx]))
              v = NAN;
          }
          float q = isnan(v) ? 0.f : rintf(v / sc);
          q += (float)st.zp;
          q = q < (float)lo ? (float)lo : q > (float)hi ? (float)hi : q;
          int want = (int)q;
          for (int o = 0; o < C; o++) {
            uint8_t got = y[(r * OW + c) * C + o];
            int g = st.u8 ? got : (int)(int8_t)got;
            if (g != want && bad++ < 3)
              printf(
                  "stem quantize %d ch, scale %g: (%d,%d) ch %d: %d, want %d "
                  "(x %a)\n",
                  C, (double)sc, r, c, o, g, want, (double)v);
          }
        }
      CHECK(bad == 0,
            "stem quantize %d ch, scale %g: %d outputs differ from ONNX's", C,
            (double)sc, bad);
      free(mem);
      free(scratch);
    }
#endif
}

int main(void) {
  test_conv_naive();
  test_conv_naive_direct();
  case_residual();
  case_mobile_block();
  case_bands();
  case_se_fc();
  case_se_bands();
  case_dw_fusion();
  case_tiles();
  case_se_swish();
  case_channel_passes();
  case_channel_passes_narrow();
  case_pools();
  case_binaries();
  case_unaries();
  case_concat_softmax();
  case_gemm_matmul();
  case_batchnorm_ref_ops();
  case_zero_pad();
  case_channel_shuffle();
  case_dense_block();
  case_pointwise();
  case_two_sums();
  test_pw_kernel();
  test_stem_quantize();
  test_concurrent();
  test_real_models();
  printf("test_onednn: %d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed ? 1 : 0;
}
