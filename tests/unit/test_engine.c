/* test_engine.c: the graph builder, optimisation passes, memory plan and the
 * public engine API, on a small network built in memory (pb_builder.h) that
 * exercises BN folding, activation/residual fusion, the Sigmoid-gate and
 * HardSigmoid-gate patterns, and a Shape/Gather/Unsqueeze/Concat/Reshape chain
 * that constant folding must remove.  Also: concurrent sessions on one engine
 * (run under TSan by `make check`), and input validation.
 * Last line: `test_engine: N tests_passed, N tests_failed`. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dermal/engine.h"
#include "dermal/onnx.h"
#include "internal.h"
#include "pb_builder.h"

static uint32_t rng = 1;
static float frand(void) {
  rng = rng * 1664525u + 1013904223u;
  return (float)(rng >> 8) / 16777216.0f * 2.f - 1.f;
}

static void init_f(pb *g, const char *name, const int64_t *dims, int nd,
                   float lo, float hi) {
  size_t n = 1;
  for (int i = 0; i < nd; i++)
    n *= (size_t)dims[i];
  float *v = malloc(n * sizeof *v);
  for (size_t i = 0; i < n; i++)
    v[i] = lo + (frand() + 1.f) * 0.5f * (hi - lo);
  pb_tensor_f(g, 5, name, dims, nd, v);
  free(v);
}

#define IN(...) ((const char *const[]){__VA_ARGS__, NULL})

static void node(pb *g, pb *n) { pb_msg(g, 1, n); }

/* The test network; opset 13. */
static pb build_model(void) {
  pb g = {0};
  int64_t pads1[] = {1, 1, 1, 1}, k2[] = {2, 2};
  pb n;
  n = pb_node("Conv", "conv1", IN("x", "w1", "b1"), IN("c1"));
  pb_attr_ints(&n, "pads", pads1, 4);
  node(&g, &n);
  n = pb_node("BatchNormalization", "bn1",
              IN("c1", "bn_s", "bn_b", "bn_m", "bn_v"), IN("n1"));
  pb_attr_float(&n, "epsilon", 1e-3f);
  node(&g, &n);
  n = pb_node("Relu", "relu1", IN("n1"), IN("r1"));
  node(&g, &n);
  n = pb_node("Conv", "conv2", IN("r1", "w2", "b2"), IN("c2"));
  pb_attr_ints(&n, "pads", pads1, 4);
  node(&g, &n);
  n = pb_node("Add", "add", IN("c2", "r1"), IN("a2"));
  node(&g, &n);
  n = pb_node("Relu", "relu2", IN("a2"), IN("r2"));
  node(&g, &n);
  n = pb_node("Conv", "dw", IN("r2", "wd"), IN("cd"));
  pb_attr_ints(&n, "pads", pads1, 4);
  pb_attr_int(&n, "group", 16);
  node(&g, &n);
  n = pb_node("Clip", "relu6", IN("cd", "zero", "six"), IN("r6"));
  node(&g, &n);
  n = pb_node("MaxPool", "pool", IN("r6"), IN("p"));
  pb_attr_ints(&n, "kernel_shape", k2, 2);
  pb_attr_ints(&n, "strides", k2, 2);
  node(&g, &n);
  n = pb_node("Conv", "pw", IN("p", "w3", "b3"), IN("c3"));
  node(&g, &n);
  n = pb_node("HardSigmoid", "hsig", IN("c3"), IN("h3"));
  pb_attr_float(&n, "alpha", 1.0f / 6);
  pb_attr_float(&n, "beta", 0.5f);
  node(&g, &n);
  n = pb_node("Mul", "hswish", IN("c3", "h3"), IN("s3"));
  node(&g, &n);
  n = pb_node("Conv", "pw2", IN("s3", "w4"), IN("c4"));
  node(&g, &n);
  n = pb_node("Sigmoid", "sig", IN("c4"), IN("g4"));
  node(&g, &n);
  n = pb_node("Mul", "swish", IN("g4", "c4"), IN("s4"));
  node(&g, &n);
  n = pb_node("GlobalAveragePool", "gap", IN("s4"), IN("gp"));
  node(&g, &n);
  /* exporter-style reshape: Reshape(gp, Concat(Unsqueeze(Gather(Shape))) */
  n = pb_node("Shape", "shape", IN("gp"), IN("sh"));
  node(&g, &n);
  n = pb_node("Gather", "gather", IN("sh", "idx0"), IN("bdim"));
  node(&g, &n);
  n = pb_node("Unsqueeze", "unsq", IN("bdim", "ax0"), IN("bdim1"));
  node(&g, &n);
  n = pb_node("Concat", "cat", IN("bdim1", "minus1"), IN("newshape"));
  pb_attr_int(&n, "axis", 0);
  node(&g, &n);
  n = pb_node("Reshape", "reshape", IN("gp", "newshape"), IN("flat"));
  node(&g, &n);
  n = pb_node("Gemm", "fc", IN("flat", "fw", "fb"), IN("logits"));
  pb_attr_int(&n, "transB", 1);
  node(&g, &n);
  n = pb_node("Softmax", "softmax", IN("logits"), IN("y"));
  pb_attr_int(&n, "axis", 1);
  node(&g, &n);
  n = pb_node("Relu", "unused", IN("c1"), IN("dead_out"));
  node(&g, &n); /* dead: nothing reads it, not an output */
  pb_str(&g, 2, "test-net");
  int64_t w1[] = {16, 8, 3, 3}, c16[] = {16}, w2[] = {16, 16, 3, 3},
          wd[] = {16, 1, 3, 3}, w3[] = {24, 16, 1, 1}, c24[] = {24},
          w4[] = {24, 24, 1, 1}, fw[] = {7, 24}, c7[] = {7}, one[] = {1};
  init_f(&g, "w1", w1, 4, -0.4f, 0.4f);
  init_f(&g, "b1", c16, 1, -0.1f, 0.1f);
  init_f(&g, "bn_s", c16, 1, 0.5f, 1.5f);
  init_f(&g, "bn_b", c16, 1, -0.2f, 0.2f);
  init_f(&g, "bn_m", c16, 1, -0.2f, 0.2f);
  init_f(&g, "bn_v", c16, 1, 0.5f, 1.5f);
  init_f(&g, "w2", w2, 4, -0.3f, 0.3f);
  init_f(&g, "b2", c16, 1, -0.1f, 0.1f);
  init_f(&g, "wd", wd, 4, -0.5f, 0.5f);
  init_f(&g, "w3", w3, 4, -0.5f, 0.5f);
  init_f(&g, "b3", c24, 1, -0.2f, 0.2f);
  init_f(&g, "w4", w4, 4, -0.4f, 0.4f);
  init_f(&g, "fw", fw, 2, -1.f, 1.f);
  init_f(&g, "fb", c7, 1, -0.1f, 0.1f);
  float zero = 0, six = 6;
  pb_tensor_f(&g, 5, "zero", NULL, 0, &zero);
  pb_tensor_f(&g, 5, "six", NULL, 0, &six);
  int64_t i0 = 0, m1 = -1;
  pb_tensor_i64(&g, 5, "idx0", NULL, 0, &i0);
  pb_tensor_i64(&g, 5, "ax0", one, 1, &i0);
  pb_tensor_i64(&g, 5, "minus1", one, 1, &m1);
  int64_t xd[] = {1, 8, 12, 12}, yd[] = {1, 7};
  pb_value_info(&g, 11, "x", xd, 4);
  pb_value_info(&g, 12, "y", yd, 2);
  return pb_model(&g, 13);
}

static pb model_bytes;
static dm_onnx_model *model;
static float input[8 * 12 * 12];
static float expect_y[7];

static dm_tensor in_tensor(void) {
  dm_tensor t = {
      .dtype = DM_ONNX_FLOAT, .rank = 4, .dims = {1, 8, 12, 12}, .data = input};
  return t;
}

static int run_once(dm_backend_kind be, bool no_opt, float *y) {
  dm_errbuf eb = {{0}};
  dm_engine_opts o = {.backend = be, .threads = 1, .no_opt = no_opt};
  dm_engine *e = NULL;
  dm_session *s = NULL;
  dm_tensor x = in_tensor();
  int rc = dm_engine_new(model, &o, &e, &eb);
  if (!rc) rc = dm_session_new(e, &s, &eb);
  if (!rc) rc = dm_session_run(s, &x, 1, &eb);
  if (!rc) memcpy(y, dm_session_output(s, 0).data, 7 * sizeof *y);
  if (rc)
    printf("run (%s%s): %s\n", be ? "ref" : "onednn", no_opt ? ", no_opt" : "",
           eb.msg);
  dm_session_free(s);
  dm_engine_free(e);
  return rc;
}

static float max_rel(const float *a, const float *b, int n) {
  float d = 0, m = 0;
  for (int i = 0; i < n; i++) {
    d = fmaxf(d, fabsf(a[i] - b[i]));
    m = fmaxf(m, fabsf(b[i]));
  }
  return m > 0 ? d / m : d;
}

static void test_backends_agree(void) {
  float a[7], b[7], c[7], d[7];
  CHECK(run_once(DM_BACKEND_REF, true, a) == 0, "ref unoptimised runs");
  CHECK(run_once(DM_BACKEND_REF, false, b) == 0, "ref optimised runs");
  CHECK(run_once(DM_BACKEND_ONEDNN, false, c) == 0, "onednn runs");
  CHECK(run_once(DM_BACKEND_ONEDNN, true, d) == 0, "onednn unoptimised runs");
  float sum = 0;
  for (int i = 0; i < 7; i++)
    sum += a[i];
  CHECK(fabsf(sum - 1.f) < 1e-5f, "softmax sums to %g", (double)sum);
  CHECK(max_rel(b, a, 7) < 1e-5f, "fusion changes results: %g",
        (double)max_rel(b, a, 7));
  CHECK(max_rel(c, a, 7) < 1e-4f, "onednn vs ref: %g",
        (double)max_rel(c, a, 7));
  CHECK(max_rel(d, a, 7) < 1e-4f, "onednn no_opt vs ref: %g",
        (double)max_rel(d, a, 7));
  memcpy(expect_y, c, sizeof expect_y);
}

static void test_passes_and_plan(void) {
  dm_errbuf eb = {{0}};
  dm_graph *g = NULL;
  dm_graph_opts o = {.fuse = true, .alias_views = true};
  dm_err rc = dm__graph_build(model, &o, &g, &eb);
  CHECK(rc == DM_OK, "graph build: %s", eb.msg);
  if (rc) return;
  CHECK(g->stats.folded_bn == 1, "BN folded: %zu", g->stats.folded_bn);
  CHECK(g->stats.folded_const >= 4, "shape chain folded: %zu",
        g->stats.folded_const);
  CHECK(g->stats.dead >= 1, "dead node removed: %zu", g->stats.dead);
  int convs = 0, unaries = 0, binaries = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const dm_node *n = &g->nodes[i];
    convs += n->op == DM_OP_CONV;
    unaries += n->op == DM_OP_UNARY;
    binaries += n->op == DM_OP_BINARY;
    if (!strcmp(n->name, "conv2"))
      CHECK(n->n_post == 2 && n->post[0].kind == DM_POST_ADD &&
                n->post[1].kind == DM_POST_ACT &&
                n->post[1].act.kind == DM_UNARY_RELU,
            "conv2 has add+relu fused (n_post %d)", n->n_post);
    if (!strcmp(n->name, "pw"))
      CHECK(n->n_post == 1 && n->post[0].act.kind == DM_UNARY_HARDSWISH,
            "pw has hardswish fused");
    if (!strcmp(n->name, "pw2"))
      CHECK(n->n_post == 1 && n->post[0].act.kind == DM_UNARY_SWISH,
            "pw2 has swish fused");
    if (!strcmp(n->name, "dw"))
      CHECK(n->n_post == 1 && n->post[0].act.kind == DM_UNARY_CLIP &&
                n->post[0].act.beta == 6.f,
            "dw has relu6 fused");
  }
  CHECK(convs == 5 && unaries == 0 && binaries == 0,
        "all activations fused: %d convs, %d unary, %d binary left", convs,
        unaries, binaries);
  /* memory plan: values alive at the same time never share bytes */
  int nv = g->n_values;
  int *first = malloc(sizeof(int) * (size_t)nv),
      *last = malloc(sizeof(int) * (size_t)nv);
  for (int v = 0; v < nv; v++) {
    first[v] = g->values[v].kind == DM_VAL_INPUT ? -1 : 1 << 30;
    last[v] = -2;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const dm_node *n = &g->nodes[i];
    for (int k = 0; k < n->n_out; k++) {
      int v = n->out[k];
      if (first[v] > i) first[v] = i;
      if (last[v] < i) last[v] = i;
    }
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0 && last[n->in[k]] < i) last[n->in[k]] = i;
  }
  for (int k = 0; k < g->n_outputs; k++)
    last[g->outputs[k]] = g->n_nodes;
  int overlaps = 0;
  size_t sum = 0;
  for (int a = 0; a < nv; a++) {
    const dm_value *x = &g->values[a];
    if (x->kind == DM_VAL_CONST || last[a] < -1 || x->alias_of >= 0) continue;
    sum += x->nbytes;
    CHECK(x->offset + x->nbytes <= g->arena_bytes, "value in arena");
    for (int b = a + 1; b < nv; b++) {
      const dm_value *y = &g->values[b];
      if (y->kind == DM_VAL_CONST || last[b] < -1 || y->alias_of >= 0) continue;
      bool live = !(last[a] < first[b] || last[b] < first[a]);
      bool mem = x->offset < y->offset + y->nbytes &&
                 y->offset < x->offset + x->nbytes;
      if (live && mem) overlaps++;
    }
  }
  CHECK(overlaps == 0, "%d live values share memory", overlaps);
  CHECK(g->arena_bytes < sum, "arena %zu reuses memory (sum %zu)",
        g->arena_bytes, sum);
  free(first);
  free(last);
  dm__graph_free(g);
}

typedef struct worker {
  const dm_engine *e;
  int bad;
} worker;

static void *work(void *arg) {
  worker *w = arg;
  dm_errbuf eb = {{0}};
  dm_session *s = NULL;
  dm_tensor x = in_tensor();
  if (dm_session_new(w->e, &s, &eb)) {
    w->bad = 1000;
    return NULL;
  }
  for (int i = 0; i < 25; i++) {
    if (dm_session_run(s, &x, 1, &eb)) {
      w->bad++;
      continue;
    }
    const float *y = dm_session_output(s, 0).data;
    if (max_rel(y, expect_y, 7) > 1e-6f) w->bad++;
  }
  dm_session_free(s);
  return NULL;
}

static void test_concurrent_sessions(void) {
  for (int be = 0; be < 2; be++) {
    dm_errbuf eb = {{0}};
    dm_engine_opts o = {.backend = (dm_backend_kind)be, .threads = 1};
    dm_engine *e = NULL;
    if (dm_engine_new(model, &o, &e, &eb)) {
      CHECK(0, "engine: %s", eb.msg);
      continue;
    }
    worker w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
      w[i].e = e;
      w[i].bad = 0;
      pthread_create(&t[i], NULL, work, &w[i]);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
      pthread_join(t[i], NULL);
      bad += w[i].bad;
    }
    CHECK(bad == 0, "%s: %d concurrent runs differ or failed",
          be ? "ref" : "onednn", bad);
    /* the arena a session maps: the backend's own plan on onednn */
    CHECK(dm_engine_get_stats(e)->arena_bytes > 0, "%s: arena_bytes %zu",
          be ? "ref" : "onednn", dm_engine_get_stats(e)->arena_bytes);
    dm_engine_free(e);
  }
}

static void test_input_checks(void) {
  dm_errbuf eb = {{0}};
  dm_engine_opts o = {.backend = DM_BACKEND_REF};
  dm_engine *e = NULL;
  dm_session *s = NULL;
  if (dm_engine_new(model, &o, &e, &eb) || dm_session_new(e, &s, &eb)) {
    CHECK(0, "engine: %s", eb.msg);
    return;
  }
  dm_tensor x = in_tensor();
  x.dims[2] = 13;
  CHECK(dm_session_run(s, &x, 1, &eb) == DM_ARG && strstr(eb.msg, "1x8x12x12"),
        "wrong shape refused: %s", eb.msg);
  x = in_tensor();
  x.dtype = DM_ONNX_INT64;
  CHECK(dm_session_run(s, &x, 1, &eb) == DM_ARG, "wrong dtype refused");
  CHECK(dm_session_run(s, &x, 0, &eb) == DM_ARG, "missing input refused");
  dm_tensor info = dm_engine_input(e, 0, NULL);
  CHECK(info.rank == 4 && info.dims[1] == 8, "input described");
  dm_session_free(s);
  dm_engine_free(e);
}

/* A residual Add fused into a Conv without bias: the addend must not land
 * in the bias slot (regression). */
static void test_add_into_biasless_conv(void) {
  pb g = {0}, n;
  int64_t pads1[] = {1, 1, 1, 1};
  n = pb_node("Conv", "conv", IN("x", "w"), IN("c"));
  pb_attr_ints(&n, "pads", pads1, 4);
  node(&g, &n);
  n = pb_node("Add", "add", IN("c", "x"), IN("y"));
  node(&g, &n);
  int64_t wd[] = {8, 8, 3, 3}, xd[] = {1, 8, 12, 12};
  init_f(&g, "w", wd, 4, -0.3f, 0.3f);
  pb_value_info(&g, 11, "x", xd, 4);
  pb_value_info(&g, 12, "y", xd, 4);
  pb mb = pb_model(&g, 13);
  dm_onnx_model *m = NULL;
  dm_errbuf eb = {{0}};
  if (dm_onnx_parse(mb.p, mb.n, NULL, &m, &eb)) {
    CHECK(0, "parse: %s", eb.msg);
    free(mb.p);
    return;
  }
  static float out[3][8 * 12 * 12];
  for (int k = 0; k < 3; k++) {
    dm_engine_opts o = {.backend = k == 2 ? DM_BACKEND_ONEDNN : DM_BACKEND_REF,
                        .threads = 1,
                        .no_opt = k == 0};
    dm_engine *e = NULL;
    dm_session *s = NULL;
    dm_tensor x = in_tensor();
    dm_err rc = dm_engine_new(m, &o, &e, &eb);
    if (!rc) rc = dm_session_new(e, &s, &eb);
    if (!rc) rc = dm_session_run(s, &x, 1, &eb);
    CHECK(rc == DM_OK, "biasless conv + add, variant %d: %s", k, eb.msg);
    if (!rc) memcpy(out[k], dm_session_output(s, 0).data, sizeof out[k]);
    if (k == 1 && e) CHECK(dm_engine_get_stats(e)->fused_act == 1, "add fused");
    dm_session_free(s);
    dm_engine_free(e);
  }
  float d1 = 0, d2 = 0;
  for (int i = 0; i < 8 * 12 * 12; i++) {
    d1 = fmaxf(d1, fabsf(out[1][i] - out[0][i]));
    d2 = fmaxf(d2, fabsf(out[2][i] - out[0][i]));
  }
  CHECK(d1 < 1e-5f && d2 < 1e-4f, "fused biasless conv+add: %g %g", (double)d1,
        (double)d2);
  dm_onnx_free(m);
  free(mb.p);
}

int main(void) {
  for (size_t i = 0; i < sizeof input / sizeof input[0]; i++)
    input[i] = frand() * 2.f;
  model_bytes = build_model();
  dm_errbuf eb = {{0}};
  if (dm_onnx_parse(model_bytes.p, model_bytes.n, NULL, &model, &eb)) {
    printf("FAIL parse: %s\ntest_engine: 0 passed, 1 failed\n", eb.msg);
    return 1;
  }
  test_backends_agree();
  test_passes_and_plan();
  test_concurrent_sessions();
  test_input_checks();
  test_add_into_biasless_conv();
  dm_onnx_free(model);
  free(model_bytes.p);
  printf("test_engine: %d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed != 0;
}
