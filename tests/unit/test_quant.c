/* test_quant.c: QuantizeLinear / DequantizeLinear in the engine, the
 * calibration hook (dm_engine_opts.keep + dm_session_value) and the ONNX
 * writer (include/dermal/onnxwrite.h).
 *
 * Every model is built from the reader's structs, serialized with
 * dm_onnx_serialize, parsed back with dm_onnx_parse and run on both backends
 * (the onednn backend runs Q/DQ through its reference fallback, so results
 * must be bit-identical).  Expected values are written out by hand where the
 * point is a rule (round half to even, saturation, zero points) and computed
 * with the ONNX reference formula otherwise.
 *
 * Threading: single-threaded.  Last line: `test_quant: N passed, N failed`. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dermal/engine.h"
#include "dermal/onnx.h"
#include "dermal/onnxwrite.h"

/* ---------- model building ---------- */

typedef struct model {
  int64_t opset;
  dm_onnx_node nodes[8];
  size_t n_nodes;
  dm_onnx_tensor inits[8];
  size_t n_inits;
  dm_onnx_value_info ins[4], outs[4];
  size_t n_ins, n_outs;
  dm_onnx_attr attrs[8];
  size_t n_attrs;
  const char *names[64];
  size_t n_names;
} model;

static void m_init(model *m, int64_t opset) {
  memset(m, 0, sizeof *m);
  m->opset = opset;
}

static const char *const *m_list(model *m, const char *a, const char *b,
                                 const char *c) {
  const char **p = &m->names[m->n_names];
  p[0] = a;
  p[1] = b;
  p[2] = c;
  m->n_names += 3;
  return p;
}

/* op(ins...) -> out, with an optional int attribute (name NULL: none). */
static void m_node(model *m, const char *op, const char *i0, const char *i1,
                   const char *i2, const char *out, const char *attr,
                   int64_t val) {
  dm_onnx_node *n = &m->nodes[m->n_nodes++];
  memset(n, 0, sizeof *n);
  n->name = "";
  n->domain = "";
  n->op_type = op;
  n->inputs = m_list(m, i0, i1, i2);
  n->n_inputs = i2 ? 3 : (i1 ? 2 : 1);
  n->outputs = m_list(m, out, NULL, NULL);
  n->n_outputs = 1;
  if (attr) {
    dm_onnx_attr *a = &m->attrs[m->n_attrs++];
    memset(a, 0, sizeof *a);
    a->name = attr;
    a->type = DM_ONNX_ATTR_INT;
    a->i = val;
    n->attrs = a;
    n->n_attrs = 1;
  }
}

static void m_const(model *m, const char *name, int32_t dt, int nd,
                    const int64_t *dims, const void *data) {
  dm_onnx_tensor *t = &m->inits[m->n_inits++];
  memset(t, 0, sizeof *t);
  t->name = name;
  t->dtype = dt;
  t->ndim = nd;
  t->numel = 1;
  for (int i = 0; i < nd; i++) {
    t->dims[i] = dims[i];
    t->numel *= dims[i];
  }
  t->nbytes = (size_t)t->numel * dm_onnx_dtype_size(dt);
  t->data = data;
}

static void m_io(dm_onnx_value_info *v, const char *name, int32_t dt, int nd,
                 const int64_t *dims) {
  memset(v, 0, sizeof *v);
  v->name = name;
  v->dtype = dt;
  v->ndim = nd;
  for (int i = 0; i < nd; i++)
    v->dims[i] = dims[i];
}

static void m_in(model *m, const char *name, int32_t dt, int nd,
                 const int64_t *dims) {
  m_io(&m->ins[m->n_ins++], name, dt, nd, dims);
}
static void m_out(model *m, const char *name, int32_t dt, int nd,
                  const int64_t *dims) {
  m_io(&m->outs[m->n_outs++], name, dt, nd, dims);
}

/* Serializes and parses m; *buf must be freed after dm_onnx_free. */
static dm_err m_build(model *m, dm_onnx_model **out, void **buf,
                      dm_errbuf *eb) {
  dm_onnx_opset os = {"", m->opset};
  dm_onnx_model om;
  memset(&om, 0, sizeof om);
  om.ir_version = 8;
  om.opset = m->opset;
  om.opsets = &os;
  om.n_opsets = 1;
  om.producer_name = "test_quant";
  om.graph.name = "g";
  om.graph.nodes = m->nodes;
  om.graph.n_nodes = m->n_nodes;
  om.graph.initializers = m->inits;
  om.graph.n_initializers = m->n_inits;
  om.graph.inputs = m->ins;
  om.graph.n_inputs = m->n_ins;
  om.graph.outputs = m->outs;
  om.graph.n_outputs = m->n_outs;
  size_t len;
  dm_err rc = dm_onnx_serialize(&om, buf, &len, eb);
  if (rc) return rc;
  rc = dm_onnx_parse(*buf, len, NULL, out, eb);
  if (rc) {
    free(*buf);
    *buf = NULL;
  }
  return rc;
}

/* Builds, runs on backend be with one input, copies output 0 (nbytes). */
static dm_err m_run(model *m, dm_backend_kind be, const void *x, void *y,
                    size_t nbytes, dm_errbuf *eb) {
  dm_onnx_model *om = NULL;
  void *buf = NULL;
  dm_engine *e = NULL;
  dm_session *s = NULL;
  dm_err rc = m_build(m, &om, &buf, eb);
  dm_engine_opts o = {.backend = be};
  if (!rc) rc = dm_engine_new(om, &o, &e, eb);
  if (!rc) rc = dm_session_new(e, &s, eb);
  if (!rc) {
    dm_tensor in = dm_engine_input(e, 0, NULL);
    in.data = (void *)(uintptr_t)x;
    rc = m->n_ins ? dm_session_run(s, &in, 1, eb) : DM_ARG;
  }
  if (!rc) {
    dm_tensor t = dm_session_output(s, 0);
    memcpy(y, t.data, nbytes);
  }
  dm_session_free(s);
  dm_engine_free(e);
  dm_onnx_free(om);
  free(buf);
  return rc;
}

static const dm_backend_kind backends[2] = {DM_BACKEND_REF, DM_BACKEND_ONEDNN};
static const char *const be_name[2] = {"ref", "onednn"};

/* ---------- QuantizeLinear ---------- */

static void test_quantize_rounding(void) {
  /* scale 0.5, zero point 10: x/0.5 = 2x; halves round to even */
  static const float x[12] = {0.25f, 0.75f, 1.25f, -0.25f, -0.75f, -1.25f,
                              0.0f,  -5.0f, 200.f, -200.f, 1e30f,  -1e30f};
  /* 2x: .5 1.5 2.5 -.5 -1.5 -2.5 0 -10 400 -400 inf -inf
   * rint:  0  2  2  -0  -2  -2  0 -10 ... ; + 10, clamp [0, 255] */
  static const uint8_t want_u8[12] = {10, 12, 12,  10, 8,   8,
                                      10, 0,  255, 0,  255, 0};
  /* int8 with zero point -3: clamp [-128, 127] */
  static const int8_t want_i8[12] = {-3, -1,  -1,  -3,   -5,  -5,
                                     -3, -13, 127, -128, 127, -128};
  float scale = 0.5f;
  uint8_t zu = 10;
  int8_t zi = -3;
  int64_t d12[1] = {12};
  for (int b = 0; b < 2; b++) {
    model m;
    uint8_t yu[12];
    int8_t yi[12];
    dm_errbuf eb = {{0}};
    m_init(&m, 13);
    m_in(&m, "x", DM_ONNX_FLOAT, 1, d12);
    m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &scale);
    m_const(&m, "z", DM_ONNX_UINT8, 0, NULL, &zu);
    m_node(&m, "QuantizeLinear", "x", "s", "z", "y", NULL, 0);
    m_out(&m, "y", DM_ONNX_UINT8, 1, d12);
    dm_err rc = m_run(&m, backends[b], x, yu, sizeof yu, &eb);
    CHECK(rc == DM_OK && !memcmp(yu, want_u8, sizeof yu),
          "%s uint8 quantize: rc %d %s; got %u %u %u %u %u %u", be_name[b], rc,
          eb.msg, yu[0], yu[1], yu[2], yu[3], yu[4], yu[5]);
    m_init(&m, 13);
    m_in(&m, "x", DM_ONNX_FLOAT, 1, d12);
    m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &scale);
    m_const(&m, "z", DM_ONNX_INT8, 0, NULL, &zi);
    m_node(&m, "QuantizeLinear", "x", "s", "z", "y", NULL, 0);
    m_out(&m, "y", DM_ONNX_INT8, 1, d12);
    rc = m_run(&m, backends[b], x, yi, sizeof yi, &eb);
    CHECK(rc == DM_OK && !memcmp(yi, want_i8, sizeof yi),
          "%s int8 quantize: rc %d %s; got %d %d %d %d %d %d", be_name[b], rc,
          eb.msg, yi[0], yi[1], yi[2], yi[3], yi[4], yi[5]);
    /* zero point omitted: uint8, zero point 0; opset 10 */
    static const uint8_t want_nz[12] = {0, 2, 2, 0, 0, 0, 0, 0, 255, 0, 255, 0};
    m_init(&m, 10);
    m_in(&m, "x", DM_ONNX_FLOAT, 1, d12);
    m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &scale);
    m_node(&m, "QuantizeLinear", "x", "s", NULL, "y", NULL, 0);
    m_out(&m, "y", DM_ONNX_UINT8, 1, d12);
    rc = m_run(&m, backends[b], x, yu, sizeof yu, &eb);
    CHECK(rc == DM_OK && !memcmp(yu, want_nz, sizeof yu),
          "%s quantize without zero point: rc %d %s", be_name[b], rc, eb.msg);
  }
}

/* Per-axis: x [2, 3, 2], axis 1 (and -2), scale/zero point [3]. */
static void test_quantize_axis(void) {
  float x[12];
  for (int i = 0; i < 12; i++)
    x[i] = (float)(i - 6) * 0.7f;
  static const float sc[3] = {0.5f, 0.1f, 2.0f};
  static const int8_t zp[3] = {0, -20, 100};
  int8_t want[12];
  for (int i = 0; i < 12; i++) {
    int ch = (i / 2) % 3;
    double v = nearbyint((double)(x[i] / sc[ch])) + zp[ch];
    want[i] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
  }
  int64_t d[3] = {2, 3, 2}, d3[1] = {3};
  for (int b = 0; b < 2; b++)
    for (int ax = 0; ax < 2; ax++) {
      model m;
      int8_t y[12];
      dm_errbuf eb = {{0}};
      m_init(&m, 13);
      m_in(&m, "x", DM_ONNX_FLOAT, 3, d);
      m_const(&m, "s", DM_ONNX_FLOAT, 1, d3, sc);
      m_const(&m, "z", DM_ONNX_INT8, 1, d3, zp);
      m_node(&m, "QuantizeLinear", "x", "s", "z", "y", "axis", ax ? -2 : 1);
      m_out(&m, "y", DM_ONNX_INT8, 3, d);
      dm_err rc = m_run(&m, backends[b], x, y, sizeof y, &eb);
      CHECK(rc == DM_OK && !memcmp(y, want, sizeof y),
            "%s per-axis quantize (axis %d): rc %d %s", be_name[b], ax ? -2 : 1,
            rc, eb.msg);
    }
}

/* ---------- DequantizeLinear ---------- */

static void test_dequantize(void) {
  /* 12 codes: one vector of the AVX2 pass and a tail */
  static const uint8_t xu[12] = {0, 1,   127, 128, 254, 255,
                                 3, 200, 64,  90,  17,  250};
  static const int8_t xi[12] = {-128, -1, 0,  1,   126,  127,
                                -77,  33, -5, 100, -100, 64};
  static const int32_t x32[6] = {-2147483647, -1000, 0, 1, 1000, 2147483647};
  float s = 0.25f;
  uint8_t zu = 128;
  int8_t zi = -1;
  int32_t z32 = 0;
  int64_t d6[1] = {6}, d12[1] = {12};
  for (int b = 0; b < 2; b++) {
    model m;
    float y[12];
    dm_errbuf eb = {{0}};
    m_init(&m, 13);
    m_in(&m, "x", DM_ONNX_UINT8, 1, d12);
    m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &s);
    m_const(&m, "z", DM_ONNX_UINT8, 0, NULL, &zu);
    m_node(&m, "DequantizeLinear", "x", "s", "z", "y", NULL, 0);
    m_out(&m, "y", DM_ONNX_FLOAT, 1, d12);
    dm_err rc = m_run(&m, backends[b], xu, y, sizeof y, &eb);
    bool ok = rc == DM_OK;
    for (int i = 0; i < 12 && ok; i++)
      ok = y[i] == ((float)xu[i] - 128.f) * s;
    CHECK(ok, "%s uint8 dequantize: rc %d %s", be_name[b], rc, eb.msg);

    m_init(&m, 13);
    m_in(&m, "x", DM_ONNX_INT8, 1, d12);
    m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &s);
    m_const(&m, "z", DM_ONNX_INT8, 0, NULL, &zi);
    m_node(&m, "DequantizeLinear", "x", "s", "z", "y", NULL, 0);
    m_out(&m, "y", DM_ONNX_FLOAT, 1, d12);
    rc = m_run(&m, backends[b], xi, y, sizeof y, &eb);
    ok = rc == DM_OK;
    for (int i = 0; i < 12 && ok; i++)
      ok = y[i] == ((float)xi[i] + 1.f) * s;
    CHECK(ok, "%s int8 dequantize: rc %d %s", be_name[b], rc, eb.msg);

    m_init(&m, 13);
    m_in(&m, "x", DM_ONNX_INT32, 1, d6);
    m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &s);
    m_const(&m, "z", DM_ONNX_INT32, 0, NULL, &z32);
    m_node(&m, "DequantizeLinear", "x", "s", "z", "y", NULL, 0);
    m_out(&m, "y", DM_ONNX_FLOAT, 1, d6);
    rc = m_run(&m, backends[b], x32, y, 6 * sizeof *y, &eb);
    ok = rc == DM_OK;
    for (int i = 0; i < 6 && ok; i++)
      ok = y[i] == (float)x32[i] * s;
    CHECK(ok, "%s int32 dequantize: rc %d %s", be_name[b], rc, eb.msg);

    /* per-axis on axis 0 of [3, 2] (weights layout) */
    static const float sc[3] = {1.f, 0.5f, 0.125f};
    static const int8_t zc[3] = {0, 0, 0};
    int64_t d32[2] = {3, 2}, d3[1] = {3};
    m_init(&m, 13);
    m_in(&m, "x", DM_ONNX_INT8, 2, d32);
    m_const(&m, "s", DM_ONNX_FLOAT, 1, d3, sc);
    m_const(&m, "z", DM_ONNX_INT8, 1, d3, zc);
    m_node(&m, "DequantizeLinear", "x", "s", "z", "y", "axis", 0);
    m_out(&m, "y", DM_ONNX_FLOAT, 2, d32);
    rc = m_run(&m, backends[b], xi, y, 6 * sizeof *y, &eb);
    ok = rc == DM_OK;
    for (int i = 0; i < 6 && ok; i++)
      ok = y[i] == (float)xi[i] * sc[i / 2];
    CHECK(ok, "%s per-axis dequantize: rc %d %s", be_name[b], rc, eb.msg);
  }
}

/* x -> QuantizeLinear (scale s, zero point 130 as uint8, codes above 127
 * among the outputs, or -3 as int8) ->
 * DequantizeLinear on both backends; with `twice`, two DequantizeLinears
 * of q, added (onednn: a quantize pass and dequantize passes; without, the
 * float-to-float pair).  Returns how many of the n outputs differ from
 * ref's in their bits, -1 when a run failed (eb says why). */
static int qdq_differs(const float *x, int64_t n, float s, bool u8, bool twice,
                       dm_errbuf *eb) {
  uint8_t zu = 130;
  int8_t zi = -3;
  int64_t d[1] = {n};
  float *y[2] = {calloc((size_t)n, sizeof(float)),
                 calloc((size_t)n, sizeof(float))};
  int bad = y[0] && y[1] ? 0 : -1;
  for (int b = 0; b < 2 && bad == 0; b++) {
    model m;
    m_init(&m, 13);
    m_in(&m, "x", DM_ONNX_FLOAT, 1, d);
    m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &s);
    if (u8)
      m_const(&m, "z", DM_ONNX_UINT8, 0, NULL, &zu);
    else
      m_const(&m, "z", DM_ONNX_INT8, 0, NULL, &zi);
    m_node(&m, "QuantizeLinear", "x", "s", "z", "q", NULL, 0);
    m_node(&m, "DequantizeLinear", "q", "s", "z", twice ? "a" : "y", NULL, 0);
    if (twice) {
      m_node(&m, "DequantizeLinear", "q", "s", "z", "c", NULL, 0);
      m_node(&m, "Add", "a", "c", NULL, "y", NULL, 0);
    }
    m_out(&m, "y", DM_ONNX_FLOAT, 1, d);
    if (m_run(&m, backends[b], x, y[b], (size_t)n * sizeof(float), eb))
      bad = -1;
  }
  for (int64_t i = 0; i < n && bad >= 0; i++)
    bad += memcmp(&y[0][i], &y[1][i], sizeof(float)) != 0;
  free(y[0]);
  free(y[1]);
  return bad;
}

/* The quantize and dequantize passes (a QuantizeLinear read by two
 * DequantizeLinears) equal ref bit for bit on 19 elements: two AVX2
 * vectors and a tail. */
static void test_qdq_passes(void) {
  enum { N = 19 };
  float x[N];
  for (int i = 0; i < N; i++)
    x[i] = ((float)i - 9.f) * 0.37f + (i % 2 ? 0.125f : -0.0625f);
  for (int u8 = 0; u8 < 2; u8++) {
    dm_errbuf eb = {{0}};
    int bad = qdq_differs(x, N, 0.125f, u8, true, &eb); /* exact ties */
    CHECK(bad == 0,
          "%s quantize + dequantize passes: %d of %d differ from "
          "ref %s",
          u8 ? "uint8" : "int8", bad, N, eb.msg);
  }
}

/* Q(DQ(q)) == q for every code; |DQ(Q(x)) - x| <= scale / 2 in range. */
static void test_round_trips(void) {
  uint8_t codes[256], back[256];
  for (int i = 0; i < 256; i++)
    codes[i] = (uint8_t)i;
  float s = 0.0371f;
  uint8_t z = 77;
  int64_t d[1] = {256};
  for (int b = 0; b < 2; b++) {
    model m;
    dm_errbuf eb = {{0}};
    m_init(&m, 13);
    m_in(&m, "q", DM_ONNX_UINT8, 1, d);
    m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &s);
    m_const(&m, "z", DM_ONNX_UINT8, 0, NULL, &z);
    m_node(&m, "DequantizeLinear", "q", "s", "z", "f", NULL, 0);
    m_node(&m, "QuantizeLinear", "f", "s", "z", "y", NULL, 0);
    m_out(&m, "y", DM_ONNX_UINT8, 1, d);
    dm_err rc = m_run(&m, backends[b], codes, back, sizeof back, &eb);
    CHECK(rc == DM_OK && !memcmp(codes, back, sizeof back),
          "%s Q(DQ(q)) != q: rc %d %s", be_name[b], rc, eb.msg);

    float x[1000], y[1000];
    int64_t dx[1] = {1000};
    for (int i = 0; i < 1000; i++)
      x[i] = (-77.f + 255.f * (float)i / 999.f) * s * 0.999f;
    m_init(&m, 13);
    m_in(&m, "x", DM_ONNX_FLOAT, 1, dx);
    m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &s);
    m_const(&m, "z", DM_ONNX_UINT8, 0, NULL, &z);
    m_node(&m, "QuantizeLinear", "x", "s", "z", "q", NULL, 0);
    m_node(&m, "DequantizeLinear", "q", "s", "z", "y", NULL, 0);
    m_out(&m, "y", DM_ONNX_FLOAT, 1, dx);
    rc = m_run(&m, backends[b], x, y, sizeof y, &eb);
    double worst = 0;
    for (int i = 0; i < 1000 && rc == DM_OK; i++)
      worst = fmax(worst, fabs((double)y[i] - (double)x[i]));
    CHECK(rc == DM_OK && worst <= s * 0.5001,
          "%s |DQ(Q(x)) - x| = %g > scale/2: rc %d %s", be_name[b], worst, rc,
          eb.msg);
  }
}

/* QuantizeLinear read only by a DequantizeLinear (an fp32 island in a QDQ
 * model): onednn runs the pair as one float-to-float pass; it must equal
 * ref bit for bit, ties, saturation and the tail included, on the AVX-512
 * code, the AVX2 one and the portable one (DERMAL_ONEDNN_VEC). */
static void test_fake_quant(void) {
  enum { N = 1037 };
  static float x[N];
  float s = 0.0625f; /* exact ties: x = (k + 0.5) * s */
  for (int i = 0; i < N; i++)
    x[i] = i % 3 ? ((float)(i % 400) - 200.f + 0.5f) * s
                 : ((float)i - 518.f) * 0.0371f;
  const char *vec[] = {NULL, "avx2", "c"};
  for (int sc = 0; sc < 3; sc++) {
    if (vec[sc]) setenv("DERMAL_ONEDNN_VEC", vec[sc], 1);
    for (int u8 = 0; u8 < 2; u8++) {
      dm_errbuf eb = {{0}};
      int bad = qdq_differs(x, N, s, u8, false, &eb);
      CHECK(bad == 0, "%s fake quant (%s): %d of %d differ from ref %s",
            u8 ? "uint8" : "int8", vec[sc] ? vec[sc] : "native", bad, N,
            eb.msg);
    }
    unsetenv("DERMAL_ONEDNN_VEC");
  }
}

/* DequantizeLinear of an int8 initializer folds into float weights at load:
 * Add(x, DQ(w)) runs one node. */
static void test_folding(void) {
  static const int8_t w[4] = {-127, -1, 0, 127};
  static const float x[4] = {1, 2, 3, 4};
  float s = 0.5f, y[4];
  int8_t z = 0;
  int64_t d[1] = {4};
  model m;
  dm_errbuf eb = {{0}};
  m_init(&m, 13);
  m_in(&m, "x", DM_ONNX_FLOAT, 1, d);
  m_const(&m, "w", DM_ONNX_INT8, 1, d, w);
  m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &s);
  m_const(&m, "z", DM_ONNX_INT8, 0, NULL, &z);
  m_node(&m, "DequantizeLinear", "w", "s", "z", "wf", NULL, 0);
  m_node(&m, "Add", "x", "wf", NULL, "y", NULL, 0);
  m_out(&m, "y", DM_ONNX_FLOAT, 1, d);
  dm_onnx_model *om = NULL;
  void *buf = NULL;
  dm_engine *e = NULL;
  dm_err rc = m_build(&m, &om, &buf, &eb);
  dm_engine_opts o = {.backend = DM_BACKEND_REF};
  if (!rc) rc = dm_engine_new(om, &o, &e, &eb);
  CHECK(rc == DM_OK && dm_engine_get_stats(e)->nodes_run == 1 &&
            dm_engine_get_stats(e)->folded_const == 1,
        "DQ of a constant not folded: rc %d %s", rc, eb.msg);
  dm_engine_free(e);
  dm_onnx_free(om);
  free(buf);
  rc = m_run(&m, DM_BACKEND_ONEDNN, x, y, sizeof y, &eb);
  CHECK(rc == DM_OK && y[0] == 1 - 63.5f && y[1] == 1.5f && y[2] == 3 &&
            y[3] == 4 + 63.5f,
        "folded DQ + Add: rc %d %s", rc, eb.msg);
}

/* Refusals at load, naming the problem. */
static void test_errors(void) {
  float s3[3] = {1, 1, 1}, s = 1;
  uint16_t z16 = 0;
  int8_t z8 = 0;
  int64_t d[2] = {3, 2}, d3[1] = {3};
  uint8_t x[6] = {0};
  float y[6];
  struct {
    const char *what;
    int64_t opset;
    int kind;
  } cases[] = {{"per-axis scale at opset 10", 10, 0},
               {"axis does not match the scale", 13, 1},
               {"uint16 zero point", 13, 2},
               {"zero point dtype differs from x", 13, 3}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    model m;
    dm_errbuf eb = {{0}};
    m_init(&m, cases[i].opset);
    m_in(&m, "x", cases[i].kind == 2 ? DM_ONNX_FLOAT : DM_ONNX_UINT8, 2, d);
    if (cases[i].kind <= 1) {
      m_const(&m, "s", DM_ONNX_FLOAT, 1, d3, s3);
      m_node(&m, "DequantizeLinear", "x", "s", NULL, "y",
             cases[i].kind == 1 ? "axis" : NULL, 1);
    } else if (cases[i].kind == 2) {
      m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &s);
      m_const(&m, "z", DM_ONNX_UINT16, 0, NULL, &z16);
      m_node(&m, "QuantizeLinear", "x", "s", "z", "y", NULL, 0);
    } else {
      m_const(&m, "s", DM_ONNX_FLOAT, 0, NULL, &s);
      m_const(&m, "z", DM_ONNX_INT8, 0, NULL, &z8);
      m_node(&m, "DequantizeLinear", "x", "s", "z", "y", NULL, 0);
    }
    m_out(&m, "y", DM_ONNX_FLOAT, 2, d);
    dm_err rc = m_run(&m, DM_BACKEND_REF, x, y, sizeof y, &eb);
    CHECK(rc == DM_FORMAT || rc == DM_UNSUPPORTED, "%s: accepted (rc %d)",
          cases[i].what, rc);
    CHECK(rc == DM_OK || strstr(eb.msg, "Linear"),
          "%s: message does not name the op: %s", cases[i].what, eb.msg);
  }
}

/* ---------- the calibration hook ---------- */

static void test_keep(void) {
  static const float x[4] = {-2, -1, 1, 2};
  int64_t d[1] = {4};
  for (int b = 0; b < 2; b++) {
    model m;
    dm_errbuf eb = {{0}};
    m_init(&m, 13);
    m_in(&m, "x", DM_ONNX_FLOAT, 1, d);
    m_node(&m, "Relu", "x", NULL, NULL, "r", NULL, 0);
    m_node(&m, "Add", "r", "x", NULL, "y", NULL, 0);
    m_out(&m, "y", DM_ONNX_FLOAT, 1, d);
    dm_onnx_model *om = NULL;
    void *buf = NULL;
    dm_engine *e = NULL;
    dm_session *s = NULL;
    dm_err rc = m_build(&m, &om, &buf, &eb);
    const char *bad[1] = {"nope"};
    dm_engine_opts o = {.backend = backends[b], .keep = bad, .n_keep = 1};
    CHECK(rc == DM_OK && dm_engine_new(om, &o, &e, &eb) == DM_ARG &&
              strstr(eb.msg, "nope"),
          "%s: unknown kept tensor accepted: %s", be_name[b], eb.msg);
    const char *keep[2] = {"r", "x"};
    o.keep = keep;
    o.n_keep = 2;
    if (!rc) rc = dm_engine_new(om, &o, &e, &eb);
    if (!rc) rc = dm_session_new(e, &s, &eb);
    dm_tensor t;
    CHECK(rc == DM_OK && dm_session_value(s, "r", &t, NULL) == DM_ARG,
          "%s: value before any run", be_name[b]);
    dm_tensor in = {.dtype = DM_ONNX_FLOAT,
                    .rank = 1,
                    .dims = {4},
                    .data = (void *)(uintptr_t)x};
    if (!rc) rc = dm_session_run(s, &in, 1, &eb);
    dm_tensor r = {0}, xi = {0};
    if (!rc) rc = dm_session_value(s, "r", &r, &eb);
    if (!rc) rc = dm_session_value(s, "x", &xi, &eb);
    const float *rp = r.data, *yp = rc ? NULL : dm_session_output(s, 0).data;
    CHECK(rc == DM_OK && r.rank == 1 && r.dims[0] == 4 && rp[0] == 0 &&
              rp[1] == 0 && rp[2] == 1 && rp[3] == 2 && xi.data == in.data &&
              yp[0] == -2 && yp[3] == 4,
          "%s: kept value: rc %d %s", be_name[b], rc, eb.msg);
    CHECK(s && dm_session_value(s, "y", &t, NULL) == DM_OK &&
              dm_session_value(s, "zz", &t, NULL) == DM_ARG,
          "%s: output lookup / unknown name", be_name[b]);
    dm_session_free(s);
    dm_engine_free(e);
    dm_onnx_free(om);
    free(buf);
  }
}

/* ---------- the writer ---------- */

static void test_writer(void) {
  /* every attribute kind the reader keeps survives a round trip */
  static const float fl[2] = {1.5f, -2.f};
  static const int64_t in[3] = {1, -1, 1LL << 40};
  static const char *const strs[2] = {"a", "bc"};
  static const float tv[2] = {3.f, 4.f};
  int64_t d2[1] = {2};
  dm_onnx_tensor tt = {.name = "t",
                       .dtype = DM_ONNX_FLOAT,
                       .ndim = 1,
                       .dims = {2},
                       .numel = 2,
                       .data = tv,
                       .nbytes = 8};
  dm_onnx_attr attrs[6] = {
      {.name = "f", .type = DM_ONNX_ATTR_FLOAT, .f = 0.25f},
      {.name = "i", .type = DM_ONNX_ATTR_INT, .i = -7},
      {.name = "s", .type = DM_ONNX_ATTR_STRING, .s = "hi", .s_len = 2},
      {.name = "fs", .type = DM_ONNX_ATTR_FLOATS, .floats = fl, .n_floats = 2},
      {.name = "is", .type = DM_ONNX_ATTR_INTS, .ints = in, .n_ints = 3},
      {.name = "ss",
       .type = DM_ONNX_ATTR_STRINGS,
       .strings = strs,
       .n_strings = 2}};
  dm_onnx_attr ta = {.name = "value", .type = DM_ONNX_ATTR_TENSOR, .t = &tt};
  const char *ins[1] = {"x"}, *outs[1] = {"y"}, *couts[1] = {"c"};
  dm_onnx_node nodes[2] = {{.name = "n0",
                            .op_type = "Custom",
                            .domain = "my.domain",
                            .inputs = ins,
                            .n_inputs = 1,
                            .outputs = outs,
                            .n_outputs = 1,
                            .attrs = attrs,
                            .n_attrs = 6},
                           {.name = "",
                            .op_type = "Constant",
                            .domain = "",
                            .outputs = couts,
                            .n_outputs = 1,
                            .attrs = &ta,
                            .n_attrs = 1}};
  dm_onnx_value_info vi[2];
  m_io(&vi[0], "x", DM_ONNX_FLOAT, 1, d2);
  vi[0].dims[0] = -1; /* symbolic */
  m_io(&vi[1], "y", DM_ONNX_FLOAT, 1, d2);
  dm_onnx_prop props[2] = {{"k", "v"}, {"empty", ""}};
  dm_onnx_opset os[2] = {{"", 13}, {"my.domain", 1}};
  dm_onnx_model om = {.ir_version = 8,
                      .opset = 13,
                      .opsets = os,
                      .n_opsets = 2,
                      .producer_name = "p",
                      .metadata = props,
                      .n_metadata = 2};
  om.graph.name = "g";
  om.graph.nodes = nodes;
  om.graph.n_nodes = 2;
  om.graph.inputs = &vi[0];
  om.graph.n_inputs = 1;
  om.graph.outputs = &vi[1];
  om.graph.n_outputs = 1;
  void *buf = NULL;
  size_t len = 0;
  dm_errbuf eb = {{0}};
  dm_onnx_model *p = NULL;
  dm_err rc = dm_onnx_serialize(&om, &buf, &len, &eb);
  if (!rc) rc = dm_onnx_parse(buf, len, NULL, &p, &eb);
  bool ok = rc == DM_OK && p->graph.n_nodes == 2 && p->n_opsets == 2 &&
            p->opset == 13 && p->n_metadata == 2 &&
            !strcmp(dm_onnx_meta(p, "k"), "v") &&
            !strcmp(p->graph.nodes[0].domain, "my.domain") &&
            p->graph.inputs[0].dims[0] == -1 &&
            p->graph.outputs[0].dims[0] == 2;
  const dm_onnx_node *n = ok ? &p->graph.nodes[0] : NULL;
  const dm_onnx_attr *a;
  ok = ok && (a = dm_onnx_attr_find(n, "f")) && a->f == 0.25f;
  ok = ok && (a = dm_onnx_attr_find(n, "i")) && a->i == -7;
  ok = ok && (a = dm_onnx_attr_find(n, "s")) && !strcmp(a->s, "hi");
  ok = ok && (a = dm_onnx_attr_find(n, "fs")) && a->n_floats == 2 &&
       a->floats[1] == -2.f;
  ok = ok && (a = dm_onnx_attr_find(n, "is")) && a->n_ints == 3 &&
       a->ints[1] == -1 && a->ints[2] == 1LL << 40;
  ok = ok && (a = dm_onnx_attr_find(n, "ss")) && a->n_strings == 2 &&
       !strcmp(a->strings[1], "bc");
  ok = ok && (a = dm_onnx_attr_find(&p->graph.nodes[1], "value")) && a->t &&
       a->t->numel == 2 && !memcmp(a->t->data, tv, 8);
  CHECK(ok, "writer round trip: rc %d %s", rc, eb.msg);
  dm_onnx_free(p);
  free(buf);
  /* a GRAPH attribute cannot be written: refused, naming it */
  dm_onnx_attr ga = {.name = "then_branch", .type = DM_ONNX_ATTR_GRAPH};
  nodes[0].attrs = &ga;
  nodes[0].n_attrs = 1;
  buf = NULL;
  rc = dm_onnx_serialize(&om, &buf, &len, &eb);
  CHECK(rc == DM_UNSUPPORTED && strstr(eb.msg, "then_branch"),
        "GRAPH attribute: rc %d %s", rc, eb.msg);
  free(buf);
  rc = dm_onnx_write(&om, "/nonexistent-dir/x.onnx", &eb);
  CHECK(rc != DM_OK, "write to a missing folder succeeded");
}

int main(void) {
  /* the per-tensor passes on the native, AVX2 and portable code (their
   * tests count once per code path) */
  const char *vec[] = {NULL, "avx2", "c"};
  for (int i = 0; i < 3; i++) {
    if (vec[i]) setenv("DERMAL_ONEDNN_VEC", vec[i], 1);
    test_quantize_rounding();
    test_dequantize();
    test_round_trips();
    test_qdq_passes();
    unsetenv("DERMAL_ONEDNN_VEC");
  }
  test_quantize_axis();
  test_fake_quant();
  test_folding();
  test_errors();
  test_keep();
  test_writer();
  printf("test_quant: %d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed ? 1 : 0;
}
