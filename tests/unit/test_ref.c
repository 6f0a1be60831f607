/* test_ref.c: unit tests of the reference backend (src/engine/backend_ref.c).
 *
 * Purpose: build tiny dm_graph/dm_node/dm_value structures by hand and check
 * every kernel of dm__ref_node against hand-computed values or an
 * independently written reference (double precision, output-centric loops,
 * index decomposition instead of the kernels' strided iterators), then run a
 * small graph through dm__backend_ref.
 * Invariants: each test owns its buffers and frees them; the only global
 * state is the pass/fail counters and the deterministic RNG seed.
 * Threading: single-threaded.
 *
 * Build (until graph.c links here, with local stand-ins for
 * dm__value_ptr and dm__graph_alloc):
 *   gcc -std=c11 -D_GNU_SOURCE -DDM_REF_STANDALONE_TEST -Iinclude -Isrc \
 *       src/engine/backend_ref.c tests/unit/test_ref.c src/common/err.c -lm
 * Once graph.c links, drop -DDM_REF_STANDALONE_TEST and add graph.c.
 * Last line: "test_ref: N passed, N failed"; exit status 1 on failures. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/internal.h"

/* ---------- stand-ins for graph.c ---------- */
#ifdef DM_REF_STANDALONE_TEST
void *dm__value_ptr(const dm_graph *g, int v, void *arena) {
  const dm_value *x = &g->values[v];
  if (x->kind == DM_VAL_CONST) return (void *)(uintptr_t)x->data;
  return (char *)arena + x->offset;
}

/* Not called by these tests (they use local arrays, so nothing changes when
 * the stand-ins go); provided so the file links against code that calls it.
 * Blocks are chained through g->pool and leak until exit. */
void *dm__graph_alloc(dm_graph *g, size_t n) {
  if (n > SIZE_MAX - 128) return NULL;
  size_t total = (64 + n + 63) & ~(size_t)63;
  char *p = aligned_alloc(64, total);
  if (!p) return NULL;
  memset(p, 0, total);
  memcpy(p, &g->pool, sizeof g->pool);
  g->pool = p;
  return p + 64;
}

#endif

/* ---------- checks ---------- */

/* |got - exp| <= tol * (1 + |exp|) elementwise; NaN matches NaN. */
static bool near_f(const char *what, const float *got, const float *exp,
                   int64_t n, double tol) {
  for (int64_t i = 0; i < n; i++) {
    double g = got[i], e = exp[i];
    if (isnan(e) && isnan(g)) continue;
    if (isinf(e) && g == e) continue;
    if (!(fabs(g - e) <= tol * (1.0 + fabs(e)))) {
      printf("  %s[%" PRId64 "]: got %.9g, expected %.9g\n", what, i, g, e);
      return false;
    }
  }
  return true;
}

static bool eq_i64(const char *what, const int64_t *got, const int64_t *exp,
                   int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (got[i] != exp[i]) {
      printf("  %s[%" PRId64 "]: got %" PRId64 ", expected %" PRId64 "\n", what,
             i, got[i], exp[i]);
      return false;
    }
  return true;
}

static bool eq_i32(const char *what, const int32_t *got, const int32_t *exp,
                   int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (got[i] != exp[i]) {
      printf("  %s[%" PRId64 "]: got %d, expected %d\n", what, i, got[i],
             exp[i]);
      return false;
    }
  return true;
}

static bool eq_u8(const char *what, const uint8_t *got, const uint8_t *exp,
                  int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (got[i] != exp[i]) {
      printf("  %s[%" PRId64 "]: got %u, expected %u\n", what, i, got[i],
             exp[i]);
      return false;
    }
  return true;
}

static uint32_t rng = 12345u;
static float frand(void) { /* [-1, 1) */
  rng = rng * 1664525u + 1013904223u;
  return (float)(rng >> 8) / 8388608.0f - 1.0f;
}
static void fill_rand(float *p, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    p[i] = frand();
}

/* ---------- a tiny graph builder ---------- */

#define MAXV 48
#define MAXIO 16

typedef struct T {
  dm_graph g;
  dm_value v[MAXV];
  dm_node n;
  int in[MAXIO], out[MAXIO];
  const void *ip[MAXIO];
  void *op[MAXIO];
  void *bufs[MAXIO];
  int nbufs;
  dm_errbuf eb;
} T;

/* rank, dims as two arguments: D(2, 3) -> 2, (int64_t[]){2, 3} */
#define D(...)                                                                 \
  (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]) {     \
    __VA_ARGS__                                                                \
  }
#define SCALAR 0, NULL

static size_t dsize(int32_t dt) {
  switch (dt) {
  case DM_ONNX_UINT8:
  case DM_ONNX_INT8:
  case DM_ONNX_BOOL: return 1;
  case DM_ONNX_UINT16:
  case DM_ONNX_INT16: return 2;
  case DM_ONNX_FLOAT:
  case DM_ONNX_INT32:
  case DM_ONNX_UINT32: return 4;
  case DM_ONNX_INT64:
  case DM_ONNX_UINT64:
  case DM_ONNX_DOUBLE: return 8;
  default: return 0;
  }
}

static void t_init(T *t, dm_op op, const char *name) {
  memset(t, 0, sizeof *t);
  t->g.values = t->v;
  t->g.cap_values = MAXV;
  t->g.opset = 17;
  t->n.op = op;
  t->n.name = name;
  t->n.op_type = "TestOp";
  t->n.in = t->in;
  t->n.out = t->out;
}

static int t_val(T *t, int32_t dt, int rank, const int64_t *dims) {
  int i = t->g.n_values++;
  dm_value *v = &t->v[i];
  v->name = "v";
  v->dtype = dt;
  v->rank = rank;
  v->numel = 1;
  for (int d = 0; d < rank; d++) {
    v->dims[d] = dims[d];
    v->numel *= dims[d];
  }
  v->nbytes = (size_t)v->numel * dsize(dt);
  v->kind = DM_VAL_ACT;
  v->producer = -1;
  v->alias_of = -1;
  return i;
}

static void t_in(T *t, int32_t dt, int rank, const int64_t *dims,
                 const void *data) {
  int k = t->n.n_in++;
  t->in[k] = t_val(t, dt, rank, dims);
  t->ip[k] = data;
}

static void t_none(T *t) {
  int k = t->n.n_in++;
  t->in[k] = -1;
  t->ip[k] = NULL;
}

/* Output buffer prefilled with 0x7f bytes (a huge float) to catch holes. */
static void *t_out(T *t, int32_t dt, int rank, const int64_t *dims) {
  int k = t->n.n_out++;
  t->out[k] = t_val(t, dt, rank, dims);
  size_t nb = t->v[t->out[k]].nbytes;
  void *p = malloc(nb ? nb : 1);
  if (!p) abort();
  memset(p, 0x7f, nb ? nb : 1);
  t->bufs[t->nbufs++] = p;
  t->op[k] = p;
  return p;
}

static dm_err t_run(T *t) {
  t->eb.msg[0] = 0;
  return dm__ref_node(&t->g, &t->n, t->ip, t->op, &t->eb);
}

static void t_free(T *t) {
  for (int i = 0; i < t->nbufs; i++)
    free(t->bufs[i]);
  t->nbufs = 0;
}

static int64_t numel(int rank, const int64_t *dims) {
  int64_t p = 1;
  for (int d = 0; d < rank; d++)
    p *= dims[d];
  return p;
}

/* ---------- Conv ---------- */

typedef struct conv_case {
  const char *name;
  int nsp;
  int64_t n, c, m, group;
  int64_t in[3], k[3], stride[3], dil[3], pb[3], pe[3];
  bool bias;
} conv_case;

/* Output-centric N-D conv, index decomposition, double accumulation. */
static void ref_conv(const conv_case *cc, const int64_t *od, const float *x,
                     const float *w, const float *b, float *y) {
  int64_t isz = 1, osz = 1, ksz = 1;
  for (int j = 0; j < cc->nsp; j++) {
    isz *= cc->in[j];
    osz *= od[j];
    ksz *= cc->k[j];
  }
  int64_t cg = cc->c / cc->group, mg = cc->m / cc->group;
  for (int64_t n = 0; n < cc->n; n++)
    for (int64_t m = 0; m < cc->m; m++)
      for (int64_t op = 0; op < osz; op++) {
        int64_t o[3], rem = op;
        for (int j = cc->nsp - 1; j >= 0; j--) {
          o[j] = rem % od[j];
          rem /= od[j];
        }
        double acc = b ? b[m] : 0.0;
        for (int64_t c = 0; c < cg; c++)
          for (int64_t kp = 0; kp < ksz; kp++) {
            int64_t k[3], kr = kp, ii = 0;
            bool inside = true;
            for (int j = cc->nsp - 1; j >= 0; j--) {
              k[j] = kr % cc->k[j];
              kr /= cc->k[j];
            }
            for (int j = 0; j < cc->nsp; j++) {
              int64_t pos =
                  o[j] * cc->stride[j] - cc->pb[j] + k[j] * cc->dil[j];
              if (pos < 0 || pos >= cc->in[j]) inside = false;
              ii = ii * cc->in[j] + pos;
            }
            if (!inside) continue;
            int64_t ch = (m / mg) * cg + c;
            acc += (double)x[(n * cc->c + ch) * isz + ii] *
                   (double)w[(m * cg + c) * ksz + kp];
          }
        y[(n * cc->m + m) * osz + op] = (float)acc;
      }
}

static void conv_setup(T *t, const conv_case *cc, float **x, float **w,
                       float **b, int64_t *od, int64_t *ydims, int *yrank) {
  int64_t xd[5] = {cc->n, cc->c}, wd[5] = {cc->m, cc->c / cc->group};
  for (int j = 0; j < cc->nsp; j++) {
    xd[2 + j] = cc->in[j];
    wd[2 + j] = cc->k[j];
    int64_t ek = (cc->k[j] - 1) * cc->dil[j] + 1;
    od[j] = (cc->in[j] + cc->pb[j] + cc->pe[j] - ek) / cc->stride[j] + 1;
  }
  int r = cc->nsp + 2;
  *x = malloc(sizeof(float) * (size_t)numel(r, xd));
  *w = malloc(sizeof(float) * (size_t)numel(r, wd));
  *b = malloc(sizeof(float) * (size_t)cc->m);
  if (!*x || !*w || !*b) abort();
  fill_rand(*x, numel(r, xd));
  fill_rand(*w, numel(r, wd));
  fill_rand(*b, cc->m);
  t_init(t, DM_OP_CONV, cc->name);
  t_in(t, DM_ONNX_FLOAT, r, xd, *x);
  t_in(t, DM_ONNX_FLOAT, r, wd, *w);
  if (cc->bias) t_in(t, DM_ONNX_FLOAT, 1, &cc->m, *b);
  dm_window *win = &t->n.p.conv.w;
  win->nsp = cc->nsp;
  for (int j = 0; j < cc->nsp; j++) {
    win->kernel[j] = cc->k[j];
    win->stride[j] = cc->stride[j];
    win->dil[j] = cc->dil[j];
    win->pad_b[j] = cc->pb[j];
    win->pad_e[j] = cc->pe[j];
  }
  t->n.p.conv.group = cc->group;
  ydims[0] = cc->n;
  ydims[1] = cc->m;
  for (int j = 0; j < cc->nsp; j++)
    ydims[2 + j] = od[j];
  *yrank = r;
}

static void test_conv(void) {
  static const conv_case cases[] = {
      {"conv2d_group_dil_asym",
       2,
       2,
       4,
       6,
       2,
       {7, 6},
       {3, 2},
       {2, 1},
       {1, 2},
       {1, 0},
       {0, 2},
       true},
      {"conv2d_depthwise_x2",
       2,
       1,
       3,
       6,
       3,
       {5, 5},
       {3, 3},
       {1, 1},
       {1, 1},
       {1, 1},
       {1, 1},
       true},
      {"conv2d_depthwise_s2",
       2,
       1,
       4,
       4,
       4,
       {8, 7},
       {3, 3},
       {2, 2},
       {1, 1},
       {1, 1},
       {0, 1},
       false},
      {"conv1d", 1, 2, 2, 3, 1, {9}, {3}, {2}, {2}, {2}, {1}, true},
      {"conv3d",
       3,
       1,
       2,
       2,
       1,
       {4, 5, 3},
       {2, 3, 2},
       {1, 2, 1},
       {1, 1, 1},
       {1, 1, 0},
       {0, 1, 1},
       true},
      {"conv_pointwise",
       2,
       2,
       5,
       3,
       1,
       {4, 4},
       {1, 1},
       {1, 1},
       {1, 1},
       {0, 0},
       {0, 0},
       true},
      {"conv_pointwise_s2",
       2,
       1,
       3,
       2,
       1,
       {5, 4},
       {1, 1},
       {2, 2},
       {1, 1},
       {0, 0},
       {0, 0},
       false},
      {"conv_pointwise_pad_end",
       2,
       1,
       2,
       2,
       1,
       {3, 3},
       {1, 1},
       {1, 1},
       {1, 1},
       {0, 0},
       {1, 0},
       true},
      {"conv_big_pad",
       2,
       1,
       1,
       1,
       1,
       {2, 2},
       {2, 2},
       {1, 1},
       {1, 1},
       {3, 2},
       {2, 3},
       true},
  };
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const conv_case *cc = &cases[ci];
    T t;
    float *x, *w, *b;
    int64_t od[3], yd[5];
    int yr;
    conv_setup(&t, cc, &x, &w, &b, od, yd, &yr);
    float *y = t_out(&t, DM_ONNX_FLOAT, yr, yd);
    int64_t ny = numel(yr, yd);
    float *e = malloc(sizeof(float) * (size_t)ny);
    if (!e) abort();
    ref_conv(cc, od, x, w, cc->bias ? b : NULL, e);
    dm_err rc = t_run(&t);
    CHECK(rc == DM_OK && near_f(cc->name, y, e, ny, 1e-5), "%s: rc %d %s",
          cc->name, rc, t.eb.msg);
    free(e);
    free(x);
    free(w);
    free(b);
    t_free(&t);
  }
}

/* Post-ops run in order: relu(conv) + r  versus  relu(conv + r). */
static void test_conv_post(void) {
  static const conv_case cc = {"conv_post", 2,      1,      2,      3,
                               1,           {4, 4}, {3, 3}, {1, 1}, {1, 1},
                               {1, 1},      {1, 1}, true};
  for (int order = 0; order < 2; order++) {
    T t;
    float *x, *w, *b;
    int64_t od[3], yd[5];
    int yr;
    conv_setup(&t, &cc, &x, &w, &b, od, yd, &yr);
    float res[48];
    fill_rand(res, 48);
    t_in(&t, DM_ONNX_FLOAT, yr, yd, res); /* in[3]: the residual */
    float *y = t_out(&t, DM_ONNX_FLOAT, yr, yd);
    dm_post act = {.kind = DM_POST_ACT, .act = {DM_UNARY_RELU, 0, 0}};
    dm_post add = {.kind = DM_POST_ADD, .input = 3};
    t.n.n_post = 2;
    t.n.post[0] = order ? add : act;
    t.n.post[1] = order ? act : add;
    float e[48];
    ref_conv(&cc, od, x, w, b, e);
    for (int i = 0; i < 48; i++) {
      if (order)
        e[i] = fmaxf(e[i] + res[i], 0.0f);
      else
        e[i] = fmaxf(e[i], 0.0f) + res[i];
    }
    dm_err rc = t_run(&t);
    CHECK(rc == DM_OK && near_f("conv_post", y, e, 48, 1e-5),
          "conv post order %d: %s", order, t.eb.msg);
    free(x);
    free(w);
    free(b);
    t_free(&t);
  }
}

/* ---------- pooling ---------- */

static const float x16[16] = {1, 2,  3,  4,  5,  6,  7,  8,
                              9, 10, 11, 12, 13, 14, 15, 16};

static void pool_node(T *t, dm_op op, int64_t k, int64_t s, int64_t pad,
                      bool ceil_mode, bool incl) {
  dm_window *w = &t->n.p.pool.w;
  w->nsp = 2;
  for (int j = 0; j < 2; j++) {
    w->kernel[j] = k;
    w->stride[j] = s;
    w->dil[j] = 1;
    w->pad_b[j] = w->pad_e[j] = pad;
  }
  t->n.op = op;
  t->n.p.pool.ceil_mode = ceil_mode;
  t->n.p.pool.count_include_pad = incl;
}

static void test_pools(void) {
  T t;
  /* MaxPool 3x3 s2 ceil_mode, no pads: 4x4 -> 2x2 */
  t_init(&t, DM_OP_MAXPOOL, "maxpool_ceil");
  t_in(&t, DM_ONNX_FLOAT, D(1, 1, 4, 4), x16);
  float *y = t_out(&t, DM_ONNX_FLOAT, D(1, 1, 2, 2));
  pool_node(&t, DM_OP_MAXPOOL, 3, 2, 0, true, false);
  CHECK(t_run(&t) == DM_OK &&
            near_f("maxpool_ceil", y, (const float[]){11, 12, 15, 16}, 4, 0),
        "maxpool ceil_mode");
  t_free(&t);

  /* AveragePool same geometry: the ceil overhang is not counted */
  for (int incl = 0; incl < 2; incl++) {
    t_init(&t, DM_OP_AVGPOOL, "avgpool_ceil");
    t_in(&t, DM_ONNX_FLOAT, D(1, 1, 4, 4), x16);
    y = t_out(&t, DM_ONNX_FLOAT, D(1, 1, 2, 2));
    pool_node(&t, DM_OP_AVGPOOL, 3, 2, 0, true, incl);
    CHECK(t_run(&t) == DM_OK &&
              near_f("avgpool_ceil", y, (const float[]){6, 7.5f, 12, 13.5f}, 4,
                     1e-6),
          "avgpool ceil_mode incl=%d", incl);
    t_free(&t);
  }

  /* AveragePool 3x3 s2 pads 1 ceil_mode: 4x4 -> 3x3; with
   * count_include_pad the divisor counts the pads but not the overhang
   * (per dim 3, 3, 2), without it only the real elements. */
  static const float incl_e[9] = {14.0f / 9, 30.0f / 9, 12.0f / 6,
                                  57.0f / 9, 99.0f / 9, 36.0f / 6,
                                  27.0f / 6, 45.0f / 6, 16.0f / 4};
  static const float excl_e[9] = {3.5f, 5, 6, 9.5f, 11, 12, 13.5f, 15, 16};
  for (int incl = 0; incl < 2; incl++) {
    t_init(&t, DM_OP_AVGPOOL, "avgpool_pad_ceil");
    t_in(&t, DM_ONNX_FLOAT, D(1, 1, 4, 4), x16);
    y = t_out(&t, DM_ONNX_FLOAT, D(1, 1, 3, 3));
    pool_node(&t, DM_OP_AVGPOOL, 3, 2, 1, true, incl);
    CHECK(t_run(&t) == DM_OK &&
              near_f("avgpool_pad_ceil", y, incl ? incl_e : excl_e, 9, 1e-6),
          "avgpool pads+ceil incl=%d", incl);
    t_free(&t);
  }

  /* MaxPool with pads on negative input: padding never wins */
  float neg[16];
  for (int i = 0; i < 16; i++)
    neg[i] = -x16[i];
  t_init(&t, DM_OP_MAXPOOL, "maxpool_neg_pad");
  t_in(&t, DM_ONNX_FLOAT, D(1, 1, 4, 4), neg);
  y = t_out(&t, DM_ONNX_FLOAT, D(1, 1, 4, 4));
  pool_node(&t, DM_OP_MAXPOOL, 3, 1, 1, false, false);
  CHECK(t_run(&t) == DM_OK &&
            near_f("maxpool_neg_pad", y,
                   (const float[]){-1, -1, -2, -3, -1, -1, -2, -3, -5, -5, -6,
                                   -7, -9, -9, -10, -11},
                   16, 0),
        "maxpool negative input with pads");
  t_free(&t);

  /* 1-D MaxPool with dilation 3, kernel 2 */
  t_init(&t, DM_OP_MAXPOOL, "maxpool_dil");
  t_in(&t, DM_ONNX_FLOAT, D(1, 1, 7), (const float[]){3, 1, 4, 1, 5, 9, 2});
  y = t_out(&t, DM_ONNX_FLOAT, D(1, 1, 4));
  t.n.p.pool.w =
      (dm_window){.nsp = 1, .kernel = {2}, .stride = {1}, .dil = {3}};
  CHECK(t_run(&t) == DM_OK &&
            near_f("maxpool_dil", y, (const float[]){3, 5, 9, 2}, 4, 0),
        "maxpool dilation");
  t_free(&t);

  /* Global pools over [2, 2, 2, 3] */
  float g[24];
  for (int i = 0; i < 24; i++)
    g[i] = (float)((i * 7) % 11) - 5.0f;
  for (int mx = 0; mx < 2; mx++) {
    t_init(&t, mx ? DM_OP_GLOBALMAXPOOL : DM_OP_GLOBALAVGPOOL, "gpool");
    t_in(&t, DM_ONNX_FLOAT, D(2, 2, 2, 3), g);
    y = t_out(&t, DM_ONNX_FLOAT, D(2, 2, 1, 1));
    float e[4];
    for (int p = 0; p < 4; p++) {
      float s = 0, m = -INFINITY;
      for (int j = 0; j < 6; j++) {
        s += g[p * 6 + j];
        m = fmaxf(m, g[p * 6 + j]);
      }
      e[p] = mx ? m : s / 6;
    }
    CHECK(t_run(&t) == DM_OK && near_f("gpool", y, e, 4, 1e-6),
          "global pool max=%d", mx);
    t_free(&t);
  }
}

/* ---------- unary ---------- */

typedef struct un_case {
  dm_unary k;
  float alpha, beta;
  double (*f)(double x, double a, double b);
  bool positive_only;
} un_case;

static double f_relu(double x, double a, double b) {
  (void)a;
  (void)b;
  return x > 0 ? x : 0;
}
static double f_leaky(double x, double a, double b) {
  (void)b;
  return x >= 0 ? x : a * x;
}
static double f_clip(double x, double a, double b) {
  return x < a ? a : x > b ? b : x;
}
static double f_sigm(double x, double a, double b) {
  (void)a;
  (void)b;
  return 1 / (1 + exp(-x));
}
static double f_hsig(double x, double a, double b) {
  return fmax(0, fmin(1, a * x + b));
}
static double f_hswish(double x, double a, double b) {
  (void)a;
  (void)b;
  return x * fmax(0, fmin(1, x / 6 + 0.5));
}
static double f_tanh(double x, double a, double b) {
  (void)a;
  (void)b;
  return tanh(x);
}
static double f_elu(double x, double a, double b) {
  (void)b;
  return x >= 0 ? x : a * (exp(x) - 1);
}
static double f_selu(double x, double a, double b) {
  return x > 0 ? b * x : b * (a * exp(x) - a);
}
static double f_softplus(double x, double a, double b) {
  (void)a;
  (void)b;
  return log(exp(x) + 1);
}
static double f_softsign(double x, double a, double b) {
  (void)a;
  (void)b;
  return x / (1 + fabs(x));
}
static double f_erf(double x, double a, double b) {
  (void)a;
  (void)b;
  return erf(x);
}
static double f_exp(double x, double a, double b) {
  (void)a;
  (void)b;
  return exp(x);
}
static double f_log(double x, double a, double b) {
  (void)a;
  (void)b;
  return log(x);
}
static double f_sqrt(double x, double a, double b) {
  (void)a;
  (void)b;
  return sqrt(x);
}
static double f_neg(double x, double a, double b) {
  (void)a;
  (void)b;
  return -x;
}
static double f_abs(double x, double a, double b) {
  (void)a;
  (void)b;
  return fabs(x);
}
static double f_recip(double x, double a, double b) {
  (void)a;
  (void)b;
  return 1 / x;
}
static double f_floor(double x, double a, double b) {
  (void)a;
  (void)b;
  return floor(x);
}
static double f_ceil(double x, double a, double b) {
  (void)a;
  (void)b;
  return ceil(x);
}
static double f_sign(double x, double a, double b) {
  (void)a;
  (void)b;
  return x > 0 ? 1 : x < 0 ? -1 : 0;
}
static double f_sin(double x, double a, double b) {
  (void)a;
  (void)b;
  return sin(x);
}
static double f_cos(double x, double a, double b) {
  (void)a;
  (void)b;
  return cos(x);
}
static double f_gelu(double x, double a, double b) {
  (void)a;
  (void)b;
  return 0.5 * x * (1 + erf(x / sqrt(2.0)));
}
static double f_swish(double x, double a, double b) {
  (void)a;
  (void)b;
  return x / (1 + exp(-x));
}

static void test_unary(void) {
  static const float xs[10] = {-3.25f, -2.5f, -1.0f, -0.5f, -0.125f,
                               0.0f,   0.5f,  1.5f,  2.5f,  4.0f};
  static const un_case cases[] = {
      {DM_UNARY_RELU, 0, 0, f_relu, false},
      {DM_UNARY_LEAKYRELU, 0.1f, 0, f_leaky, false},
      {DM_UNARY_CLIP, -1.0f, 1.25f, f_clip, false},
      {DM_UNARY_SIGMOID, 0, 0, f_sigm, false},
      {DM_UNARY_HARDSIGMOID, 0.2f, 0.5f, f_hsig, false},
      {DM_UNARY_HARDSWISH, 0, 0, f_hswish, false},
      {DM_UNARY_TANH, 0, 0, f_tanh, false},
      {DM_UNARY_ELU, 0.7f, 0, f_elu, false},
      {DM_UNARY_SELU, 1.6732632f, 1.0507010f, f_selu, false},
      {DM_UNARY_SOFTPLUS, 0, 0, f_softplus, false},
      {DM_UNARY_SOFTSIGN, 0, 0, f_softsign, false},
      {DM_UNARY_ERF, 0, 0, f_erf, false},
      {DM_UNARY_EXP, 0, 0, f_exp, false},
      {DM_UNARY_LOG, 0, 0, f_log, true},
      {DM_UNARY_SQRT, 0, 0, f_sqrt, true},
      {DM_UNARY_NEG, 0, 0, f_neg, false},
      {DM_UNARY_ABS, 0, 0, f_abs, false},
      {DM_UNARY_RECIPROCAL, 0, 0, f_recip, true},
      {DM_UNARY_FLOOR, 0, 0, f_floor, false},
      {DM_UNARY_CEIL, 0, 0, f_ceil, false},
      {DM_UNARY_SIGN, 0, 0, f_sign, false},
      {DM_UNARY_SIN, 0, 0, f_sin, false},
      {DM_UNARY_COS, 0, 0, f_cos, false},
      {DM_UNARY_GELU, 0, 0, f_gelu, false},
      {DM_UNARY_SWISH, 0, 0, f_swish, false},
  };
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const un_case *uc = &cases[ci];
    float x[10], e[10];
    for (int i = 0; i < 10; i++) {
      x[i] = uc->positive_only ? fabsf(xs[i]) + 0.25f : xs[i];
      e[i] = (float)uc->f(x[i], uc->alpha, uc->beta);
    }
    T t;
    t_init(&t, DM_OP_UNARY, "unary");
    t_in(&t, DM_ONNX_FLOAT, D(2, 5), x);
    float *y = t_out(&t, DM_ONNX_FLOAT, D(2, 5));
    t.n.p.unary = (dm_act){uc->k, uc->alpha, uc->beta};
    dm_err rc = t_run(&t);
    CHECK(rc == DM_OK && near_f("unary", y, e, 10, 2e-6), "unary kind %d: %s",
          (int)uc->k, t.eb.msg);
    t_free(&t);
  }

  /* Round: half to even */
  T t;
  t_init(&t, DM_OP_UNARY, "round");
  t_in(&t, DM_ONNX_FLOAT, D(8),
       (const float[]){-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 2.6f, -2.4f});
  float *y = t_out(&t, DM_ONNX_FLOAT, D(8));
  t.n.p.unary.kind = DM_UNARY_ROUND;
  CHECK(t_run(&t) == DM_OK &&
            near_f("round", y, (const float[]){-2, -2, -0.0f, 0, 2, 2, 3, -2},
                   8, 0) &&
            signbit(y[2]),
        "round half to even");
  t_free(&t);

  /* Neg/Abs/Sign on int64 and int32, INT_MIN wraps */
  static const int64_t i64[4] = {-3, 0, 5, INT64_MIN};
  static const int64_t e64[3][4] = {
      {3, 0, -5, INT64_MIN}, {3, 0, 5, INT64_MIN}, {-1, 0, 1, -1}};
  static const int32_t i32[4] = {-3, 0, 5, INT32_MIN};
  static const int32_t e32[3][4] = {
      {3, 0, -5, INT32_MIN}, {3, 0, 5, INT32_MIN}, {-1, 0, 1, -1}};
  static const dm_unary ik[3] = {DM_UNARY_NEG, DM_UNARY_ABS, DM_UNARY_SIGN};
  for (int k = 0; k < 3; k++) {
    t_init(&t, DM_OP_UNARY, "int_unary");
    t_in(&t, DM_ONNX_INT64, D(4), i64);
    int64_t *y64 = t_out(&t, DM_ONNX_INT64, D(4));
    t.n.p.unary.kind = ik[k];
    CHECK(t_run(&t) == DM_OK && eq_i64("int64 unary", y64, e64[k], 4),
          "int64 unary %d", k);
    t_free(&t);
    t_init(&t, DM_OP_UNARY, "int_unary");
    t_in(&t, DM_ONNX_INT32, D(4), i32);
    int32_t *y32 = t_out(&t, DM_ONNX_INT32, D(4));
    t.n.p.unary.kind = ik[k];
    CHECK(t_run(&t) == DM_OK && eq_i32("int32 unary", y32, e32[k], 4),
          "int32 unary %d", k);
    t_free(&t);
  }

  /* Not on bool */
  t_init(&t, DM_OP_UNARY, "not");
  t_in(&t, DM_ONNX_BOOL, D(4), (const uint8_t[]){0, 1, 1, 0});
  uint8_t *yb = t_out(&t, DM_ONNX_BOOL, D(4));
  t.n.p.unary.kind = DM_UNARY_NOT;
  CHECK(t_run(&t) == DM_OK &&
            eq_u8("not", yb, (const uint8_t[]){1, 0, 0, 1}, 4),
        "not");
  t_free(&t);

  /* Sigmoid on int64 is refused, naming node and dtype */
  t_init(&t, DM_OP_UNARY, "sig_i64");
  t_in(&t, DM_ONNX_INT64, D(4), i64);
  t_out(&t, DM_ONNX_INT64, D(4));
  t.n.p.unary.kind = DM_UNARY_SIGMOID;
  CHECK(t_run(&t) == DM_UNSUPPORTED && strstr(t.eb.msg, "sig_i64") &&
            strstr(t.eb.msg, "int64"),
        "sigmoid int64 unsupported: '%s'", t.eb.msg);
  t_free(&t);
}

/* ---------- binary ---------- */

/* Offset of output index o (dims od, rank ro) in a broadcast operand. */
static int64_t bc_off(int64_t o, int ro, const int64_t *od, int ra,
                      const int64_t *ad) {
  int64_t idx[DM_MAX_RANK], off = 0;
  for (int d = ro - 1; d >= 0; d--) {
    idx[d] = o % od[d];
    o /= od[d];
  }
  for (int j = 0; j < ra; j++) {
    int d = j + ro - ra;
    off = off * ad[j] + (ad[j] == 1 ? 0 : idx[d]);
  }
  return off;
}

static void bin_node(T *t, dm_binary k) {
  t->n.p.binary.kind = k;
  t->n.p.binary.fmod = false;
}

static void test_binary(void) {
  T t;
  /* [2,3,4] op [3,1] for every float arithmetic kind */
  float a[24], b[3];
  fill_rand(a, 24);
  fill_rand(b, 3);
  for (int i = 0; i < 3; i++)
    b[i] += 2.0f; /* positive: Pow, Div */
  static const dm_binary ks[] = {DM_BINARY_ADD, DM_BINARY_SUB, DM_BINARY_MUL,
                                 DM_BINARY_DIV, DM_BINARY_POW, DM_BINARY_MAX,
                                 DM_BINARY_MIN};
  for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
    for (int swap = 0; swap < 2; swap++) {
      t_init(&t, DM_OP_BINARY, "bin_bcast");
      const int64_t ad[3] = {2, 3, 4}, bd[2] = {3, 1};
      float pa[24];
      for (int i = 0; i < 24; i++)
        pa[i] = fabsf(a[i]) + 0.5f;
      if (swap) {
        t_in(&t, DM_ONNX_FLOAT, 2, bd, b);
        t_in(&t, DM_ONNX_FLOAT, 3, ad, pa);
      } else {
        t_in(&t, DM_ONNX_FLOAT, 3, ad, pa);
        t_in(&t, DM_ONNX_FLOAT, 2, bd, b);
      }
      float *y = t_out(&t, DM_ONNX_FLOAT, 3, ad);
      bin_node(&t, ks[ki]);
      float e[24];
      for (int o = 0; o < 24; o++) {
        double u = pa[bc_off(o, 3, ad, 3, ad)], v = b[bc_off(o, 3, ad, 2, bd)];
        if (swap) {
          double tmp = u;
          u = v;
          v = tmp;
        }
        double r = 0;
        switch (ks[ki]) {
        case DM_BINARY_ADD: r = u + v; break;
        case DM_BINARY_SUB: r = u - v; break;
        case DM_BINARY_MUL: r = u * v; break;
        case DM_BINARY_DIV: r = u / v; break;
        case DM_BINARY_POW: r = pow(u, v); break;
        case DM_BINARY_MAX: r = fmax(u, v); break;
        default: r = fmin(u, v); break;
        }
        e[o] = (float)r;
      }
      dm_err rc = t_run(&t);
      CHECK(rc == DM_OK && near_f("bin_bcast", y, e, 24, 1e-6),
            "binary kind %d swap %d: %s", (int)ks[ki], swap, t.eb.msg);
      t_free(&t);
    }
  }

  /* scalar operand and NaN propagation in Max */
  t_init(&t, DM_OP_BINARY, "max_nan");
  t_in(&t, DM_ONNX_FLOAT, D(4), (const float[]){1, NAN, -3, 5});
  t_in(&t, DM_ONNX_FLOAT, SCALAR, (const float[]){2});
  float *y = t_out(&t, DM_ONNX_FLOAT, D(4));
  bin_node(&t, DM_BINARY_MAX);
  CHECK(t_run(&t) == DM_OK &&
            near_f("max_nan", y, (const float[]){2, NAN, 2, 5}, 4, 0),
        "max with scalar and NaN");
  t_free(&t);

  /* integer Div truncates, Mod follows the divisor (fmod=0) or dividend */
  static const int64_t ia[6] = {-7, 7, -7, 7, 6, INT64_MIN};
  static const int64_t ib[6] = {2, -2, -2, 2, 3, -1};
  static const int64_t ediv[6] = {-3, -3, 3, 3, 2, INT64_MIN};
  static const int64_t emod[6] = {1, -1, -1, 1, 0, 0};
  static const int64_t efmod[6] = {-1, 1, -1, 1, 0, 0};
  for (int k = 0; k < 3; k++) {
    t_init(&t, DM_OP_BINARY, "int_divmod");
    t_in(&t, DM_ONNX_INT64, D(6), ia);
    t_in(&t, DM_ONNX_INT64, D(6), ib);
    int64_t *yi = t_out(&t, DM_ONNX_INT64, D(6));
    bin_node(&t, k == 0 ? DM_BINARY_DIV : DM_BINARY_MOD);
    t.n.p.binary.fmod = k == 2;
    CHECK(t_run(&t) == DM_OK && eq_i64("divmod", yi,
                                       k == 0   ? ediv
                                       : k == 1 ? emod
                                                : efmod,
                                       6),
          "int64 div/mod %d", k);
    t_free(&t);
  }

  /* int32 Mod python style, Add wraps */
  t_init(&t, DM_OP_BINARY, "int32_mod");
  t_in(&t, DM_ONNX_INT32, D(3), (const int32_t[]){-5, 5, INT32_MAX});
  t_in(&t, DM_ONNX_INT32, D(3), (const int32_t[]){3, -3, 7});
  int32_t *y32 = t_out(&t, DM_ONNX_INT32, D(3));
  bin_node(&t, DM_BINARY_MOD);
  CHECK(t_run(&t) == DM_OK &&
            eq_i32("int32_mod", y32, (const int32_t[]){1, -1, 1}, 3),
        "int32 mod");
  bin_node(&t, DM_BINARY_ADD);
  CHECK(
      t_run(&t) == DM_OK &&
          eq_i32("int32_add", y32, (const int32_t[]){-2, 2, INT32_MIN + 6}, 3),
      "int32 add wraps");
  t_free(&t);

  /* integer division by zero is an error, not a trap */
  t_init(&t, DM_OP_BINARY, "div0");
  t_in(&t, DM_ONNX_INT32, D(2), (const int32_t[]){4, 5});
  t_in(&t, DM_ONNX_INT32, D(2), (const int32_t[]){2, 0});
  t_out(&t, DM_ONNX_INT32, D(2));
  bin_node(&t, DM_BINARY_DIV);
  CHECK(t_run(&t) == DM_RANGE && strstr(t.eb.msg, "div0"),
        "int div by zero: '%s'", t.eb.msg);
  t_free(&t);

  /* float Mod is fmod */
  t_init(&t, DM_OP_BINARY, "fmod");
  t_in(&t, DM_ONNX_FLOAT, D(3), (const float[]){-7, 5.5f, 7});
  t_in(&t, DM_ONNX_FLOAT, D(3), (const float[]){2, 2, -3});
  y = t_out(&t, DM_ONNX_FLOAT, D(3));
  bin_node(&t, DM_BINARY_MOD);
  t.n.p.binary.fmod = true;
  CHECK(t_run(&t) == DM_OK &&
            near_f("fmod", y, (const float[]){-1, 1.5f, 1}, 3, 0),
        "float mod");
  t_free(&t);

  /* Pow float ^ int64 and float ^ int32 exponent */
  for (int w = 0; w < 2; w++) {
    t_init(&t, DM_OP_BINARY, "pow_int");
    t_in(&t, DM_ONNX_FLOAT, D(3), (const float[]){2, 3, -2});
    /* not compound literals in the if: their lifetime would end there */
    static const int32_t e32[3] = {3, 2, 3};
    static const int64_t e64[3] = {3, 2, 3};
    if (w)
      t_in(&t, DM_ONNX_INT32, D(3), e32);
    else
      t_in(&t, DM_ONNX_INT64, D(3), e64);
    y = t_out(&t, DM_ONNX_FLOAT, D(3));
    bin_node(&t, DM_BINARY_POW);
    CHECK(t_run(&t) == DM_OK &&
              near_f("pow_int", y, (const float[]){8, 9, -8}, 3, 0),
          "pow float^int %d: %s", w, t.eb.msg);
    t_free(&t);
  }

  /* comparisons -> bool */
  static const dm_binary cks[5] = {DM_BINARY_EQUAL, DM_BINARY_LESS,
                                   DM_BINARY_GREATER, DM_BINARY_LESSEQ,
                                   DM_BINARY_GREATEREQ};
  static const uint8_t ce[5][3] = {
      {0, 1, 0}, {1, 0, 0}, {0, 0, 1}, {1, 1, 0}, {0, 1, 1}};
  for (int k = 0; k < 5; k++) {
    t_init(&t, DM_OP_BINARY, "cmp");
    t_in(&t, DM_ONNX_FLOAT, D(3), (const float[]){1, 2, 3});
    t_in(&t, DM_ONNX_FLOAT, D(1), (const float[]){2});
    uint8_t *yb = t_out(&t, DM_ONNX_BOOL, D(3));
    bin_node(&t, cks[k]);
    CHECK(t_run(&t) == DM_OK && eq_u8("cmp", yb, ce[k], 3), "cmp f32 %d", k);
    t_free(&t);
    t_init(&t, DM_OP_BINARY, "cmp");
    t_in(&t, DM_ONNX_INT64, D(3), (const int64_t[]){1, 2, 3});
    t_in(&t, DM_ONNX_INT64, SCALAR, (const int64_t[]){2});
    yb = t_out(&t, DM_ONNX_BOOL, D(3));
    bin_node(&t, cks[k]);
    CHECK(t_run(&t) == DM_OK && eq_u8("cmp", yb, ce[k], 3), "cmp i64 %d", k);
    t_free(&t);
  }

  /* And/Or/Xor with broadcasting [2,2] x [2] */
  static const dm_binary lk[3] = {DM_BINARY_AND, DM_BINARY_OR, DM_BINARY_XOR};
  static const uint8_t le[3][4] = {{0, 0, 0, 1}, {0, 1, 1, 1}, {0, 1, 1, 0}};
  for (int k = 0; k < 3; k++) {
    t_init(&t, DM_OP_BINARY, "logic");
    t_in(&t, DM_ONNX_BOOL, D(2, 2), (const uint8_t[]){0, 0, 1, 1});
    t_in(&t, DM_ONNX_BOOL, D(2), (const uint8_t[]){0, 1});
    uint8_t *yb = t_out(&t, DM_ONNX_BOOL, D(2, 2));
    bin_node(&t, lk[k]);
    CHECK(t_run(&t) == DM_OK && eq_u8("logic", yb, le[k], 4), "logic %d", k);
    t_free(&t);
  }

  /* float64 Add (optional dtype) */
  t_init(&t, DM_OP_BINARY, "f64");
  t_in(&t, DM_ONNX_DOUBLE, D(2), (const double[]){0.1, 1e300});
  t_in(&t, DM_ONNX_DOUBLE, D(2), (const double[]){0.2, 1e300});
  double *yd = t_out(&t, DM_ONNX_DOUBLE, D(2));
  bin_node(&t, DM_BINARY_ADD);
  CHECK(t_run(&t) == DM_OK && yd[0] == 0.1 + 0.2 && yd[1] == 2e300,
        "float64 add");
  t_free(&t);

  /* mixed dtypes are refused */
  t_init(&t, DM_OP_BINARY, "mixed");
  t_in(&t, DM_ONNX_FLOAT, D(2), (const float[]){1, 2});
  t_in(&t, DM_ONNX_INT64, D(2), (const int64_t[]){1, 2});
  t_out(&t, DM_ONNX_FLOAT, D(2));
  bin_node(&t, DM_BINARY_ADD);
  CHECK(t_run(&t) == DM_UNSUPPORTED && strstr(t.eb.msg, "mixed"),
        "mixed dtypes: '%s'", t.eb.msg);
  t_free(&t);

  /* rank-8 broadcasting */
  int64_t d8[8] = {2, 1, 2, 1, 2, 1, 2, 3}, e8[8] = {1, 2, 1, 2, 1, 2, 1, 3};
  int64_t o8[8] = {2, 2, 2, 2, 2, 2, 2, 3};
  float a8[48], b8[24], ex8[384];
  fill_rand(a8, 48);
  fill_rand(b8, 24);
  for (int o = 0; o < 384; o++)
    ex8[o] = a8[bc_off(o, 8, o8, 8, d8)] * b8[bc_off(o, 8, o8, 8, e8)];
  t_init(&t, DM_OP_BINARY, "rank8");
  t_in(&t, DM_ONNX_FLOAT, 8, d8, a8);
  t_in(&t, DM_ONNX_FLOAT, 8, e8, b8);
  y = t_out(&t, DM_ONNX_FLOAT, 8, o8);
  bin_node(&t, DM_BINARY_MUL);
  CHECK(t_run(&t) == DM_OK && near_f("rank8", y, ex8, 384, 0), "rank 8 mul");
  t_free(&t);
}

static void test_where(void) {
  T t;
  t_init(&t, DM_OP_WHERE, "where");
  t_in(&t, DM_ONNX_BOOL, D(2, 1), (const uint8_t[]){1, 0});
  t_in(&t, DM_ONNX_FLOAT, D(1, 3), (const float[]){1, 2, 3});
  t_in(&t, DM_ONNX_FLOAT, SCALAR, (const float[]){-1});
  float *y = t_out(&t, DM_ONNX_FLOAT, D(2, 3));
  CHECK(t_run(&t) == DM_OK &&
            near_f("where", y, (const float[]){1, 2, 3, -1, -1, -1}, 6, 0),
        "where float");
  t_free(&t);
  t_init(&t, DM_OP_WHERE, "where_i64");
  t_in(&t, DM_ONNX_BOOL, D(3), (const uint8_t[]){1, 0, 1});
  t_in(&t, DM_ONNX_INT64, D(3), (const int64_t[]){10, 20, 30});
  t_in(&t, DM_ONNX_INT64, D(2, 1), (const int64_t[]){-1, -2});
  int64_t *yi = t_out(&t, DM_ONNX_INT64, D(2, 3));
  CHECK(
      t_run(&t) == DM_OK &&
          eq_i64("where_i64", yi, (const int64_t[]){10, -1, 30, 10, -2, 30}, 6),
      "where int64");
  t_free(&t);
}

/* ---------- reductions ---------- */

static void test_reduce(void) {
  float x[24];
  for (int i = 0; i < 24; i++)
    x[i] = (float)((i * 5) % 7) * 0.5f - 1.0f;
  static const dm_reduce ks[] = {
      DM_REDUCE_MEAN, DM_REDUCE_SUM,       DM_REDUCE_MAX,
      DM_REDUCE_MIN,  DM_REDUCE_PROD,      DM_REDUCE_L1,
      DM_REDUCE_L2,   DM_REDUCE_SUMSQUARE, DM_REDUCE_LOGSUMEXP};
  static const uint32_t masks[] = {0x2, 0x5, 0x7, 0x4};
  for (size_t mi = 0; mi < sizeof masks / sizeof masks[0]; mi++)
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
      uint32_t m = masks[mi];
      int64_t xd[3] = {2, 3, 4}, od[3];
      int orank = 0;
      for (int d = 0; d < 3; d++)
        if (!(m & (1u << d))) od[orank++] = xd[d];
      int64_t on = numel(orank, od);
      /* reference: for each input element find its output slot */
      double acc[24], cnt[24], mx[24];
      for (int o = 0; o < 24; o++) {
        acc[o] = ks[ki] == DM_REDUCE_PROD ? 1 : 0;
        cnt[o] = 0;
        mx[o] = -INFINITY;
      }
      for (int i = 0; i < 24; i++) {
        int idx[3] = {i / 12, (i / 4) % 3, i % 4}, o = 0;
        for (int d = 0; d < 3; d++)
          if (!(m & (1u << d))) o = o * (int)xd[d] + idx[d];
        mx[o] = fmax(mx[o], x[i]);
        cnt[o]++;
      }
      for (int i = 0; i < 24; i++) {
        int idx[3] = {i / 12, (i / 4) % 3, i % 4}, o = 0;
        for (int d = 0; d < 3; d++)
          if (!(m & (1u << d))) o = o * (int)xd[d] + idx[d];
        double v = x[i];
        switch (ks[ki]) {
        case DM_REDUCE_MAX: acc[o] = cnt[o] ? mx[o] : 0; break;
        case DM_REDUCE_MIN:
          acc[o] = (acc[o] == 0 && v > 0) ? 0 : fmin(acc[o], v);
          break;
        case DM_REDUCE_PROD: acc[o] *= v; break;
        case DM_REDUCE_L1: acc[o] += fabs(v); break;
        case DM_REDUCE_L2:
        case DM_REDUCE_SUMSQUARE: acc[o] += v * v; break;
        case DM_REDUCE_LOGSUMEXP: acc[o] += exp(v - mx[o]); break;
        default: acc[o] += v; break;
        }
      }
      float e[24];
      for (int o = 0; o < on; o++) {
        double r = acc[o];
        if (ks[ki] == DM_REDUCE_MEAN) r /= cnt[o];
        if (ks[ki] == DM_REDUCE_L2) r = sqrt(r);
        if (ks[ki] == DM_REDUCE_LOGSUMEXP) r = log(r) + mx[o];
        e[o] = (float)r;
      }
      if (ks[ki] == DM_REDUCE_MIN) { /* recompute plainly */
        for (int o = 0; o < on; o++)
          e[o] = INFINITY;
        for (int i = 0; i < 24; i++) {
          int idx[3] = {i / 12, (i / 4) % 3, i % 4}, o = 0;
          for (int d = 0; d < 3; d++)
            if (!(m & (1u << d))) o = o * (int)xd[d] + idx[d];
          e[o] = fminf(e[o], x[i]);
        }
      }
      T t;
      t_init(&t, DM_OP_REDUCE, "reduce");
      t_in(&t, DM_ONNX_FLOAT, 3, xd, x);
      float *y = t_out(&t, DM_ONNX_FLOAT, orank, od);
      t.n.p.reduce.kind = ks[ki];
      t.n.p.reduce.axes_mask = m;
      dm_err rc = t_run(&t);
      CHECK(rc == DM_OK && near_f("reduce", y, e, on, 2e-6),
            "reduce kind %d mask %u: %s", (int)ks[ki], m, t.eb.msg);
      t_free(&t);
    }

  /* int64 sum/prod/max/min over axis 1 of [2,3] */
  static const int64_t xi[6] = {1, -2, 3, 4, 5, -6};
  static const dm_reduce iks[4] = {DM_REDUCE_SUM, DM_REDUCE_PROD, DM_REDUCE_MAX,
                                   DM_REDUCE_MIN};
  static const int64_t ie[4][2] = {{2, 3}, {-6, -120}, {3, 5}, {-2, -6}};
  for (int k = 0; k < 4; k++) {
    T t;
    t_init(&t, DM_OP_REDUCE, "reduce_i64");
    t_in(&t, DM_ONNX_INT64, D(2, 3), xi);
    int64_t *y = t_out(&t, DM_ONNX_INT64, D(2, 1));
    t.n.p.reduce.kind = iks[k];
    t.n.p.reduce.axes_mask = 0x2;
    t.n.p.reduce.keepdims = true;
    CHECK(t_run(&t) == DM_OK && eq_i64("reduce_i64", y, ie[k], 2),
          "int64 reduce %d", k);
    t_free(&t);
  }

  /* noop_with_empty_axes (mask 0): one-element reductions */
  T t;
  t_init(&t, DM_OP_REDUCE, "reduce_noop");
  t_in(&t, DM_ONNX_FLOAT, D(3), (const float[]){-2, 3, 0.5f});
  float *y = t_out(&t, DM_ONNX_FLOAT, D(3));
  t.n.p.reduce.kind = DM_REDUCE_SUMSQUARE;
  CHECK(t_run(&t) == DM_OK &&
            near_f("noop", y, (const float[]){4, 9, 0.25f}, 3, 0),
        "reduce with empty mask");
  t_free(&t);

  /* reduction over an empty axis: Max -> -inf, int64 Max -> INT64_MIN,
   * Sum -> 0 */
  t_init(&t, DM_OP_REDUCE, "reduce_empty");
  t_in(&t, DM_ONNX_FLOAT, D(2, 0), NULL);
  y = t_out(&t, DM_ONNX_FLOAT, D(2));
  t.n.p.reduce.kind = DM_REDUCE_MAX;
  t.n.p.reduce.axes_mask = 0x2;
  CHECK(t_run(&t) == DM_OK &&
            near_f("empty", y, (const float[]){-INFINITY, -INFINITY}, 2, 0),
        "reduce max over empty axis: %s", t.eb.msg);
  t.n.p.reduce.kind = DM_REDUCE_SUM;
  CHECK(t_run(&t) == DM_OK && near_f("empty", y, (const float[]){0, 0}, 2, 0),
        "reduce sum over empty axis");
  t_free(&t);
  t_init(&t, DM_OP_REDUCE, "reduce_empty_i64");
  t_in(&t, DM_ONNX_INT64, D(2, 0), NULL);
  int64_t *yi = t_out(&t, DM_ONNX_INT64, D(2));
  t.n.p.reduce.kind = DM_REDUCE_MAX;
  t.n.p.reduce.axes_mask = 0x2;
  CHECK(t_run(&t) == DM_OK &&
            eq_i64("empty_i64", yi, (const int64_t[]){INT64_MIN, INT64_MIN}, 2),
        "int64 reduce max over empty axis");
  t_free(&t);
}

/* ---------- softmax ---------- */

static void ref_softmax(const float *x, float *y, int64_t outer, int64_t a,
                        int64_t inner, bool lg) {
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      double mx = -INFINITY, s = 0;
      for (int64_t j = 0; j < a; j++)
        mx = fmax(mx, x[(o * a + j) * inner + i]);
      for (int64_t j = 0; j < a; j++)
        s += exp(x[(o * a + j) * inner + i] - mx);
      for (int64_t j = 0; j < a; j++) {
        double v = x[(o * a + j) * inner + i];
        y[(o * a + j) * inner + i] =
            (float)(lg ? v - mx - log(s) : exp(v - mx) / s);
      }
    }
}

static void test_softmax(void) {
  float x[24], e[24];
  fill_rand(x, 24);
  for (int i = 0; i < 24; i++)
    x[i] *= 4.0f;
  x[5] = 1000.0f; /* stability */
  struct {
    int axis;
    bool legacy, lg;
    int64_t outer, a, inner;
  } cs[] = {
      {1, false, false, 2, 3, 4}, /* along axis 1 only */
      {1, true, false, 2, 12, 1}, /* legacy: flatten [2, 12] */
      {2, false, true, 6, 4, 1},  /* LogSoftmax last axis */
      {0, true, true, 1, 24, 1},  /* legacy axis 0: everything */
      {0, false, false, 1, 2, 12},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    T t;
    t_init(&t, DM_OP_SOFTMAX, "softmax");
    t_in(&t, DM_ONNX_FLOAT, D(2, 3, 4), x);
    float *y = t_out(&t, DM_ONNX_FLOAT, D(2, 3, 4));
    t.n.p.softmax.axis = cs[i].axis;
    t.n.p.softmax.legacy = cs[i].legacy;
    t.n.p.softmax.log = cs[i].lg;
    ref_softmax(x, e, cs[i].outer, cs[i].a, cs[i].inner, cs[i].lg);
    CHECK(t_run(&t) == DM_OK && near_f("softmax", y, e, 24, 1e-6),
          "softmax case %zu", i);
    t_free(&t);
  }
}

/* ---------- Gemm / MatMul ---------- */

static void test_gemm(void) {
  const int64_t M = 3, K = 5, N = 4;
  float a[15], b[20], cm[3], cn[4], e[12];
  fill_rand(a, 15);
  fill_rand(b, 20);
  fill_rand(cm, 3);
  fill_rand(cn, 4);
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int cmode = 0; cmode < 4; cmode++) {
        /* a holds A (M x K) or A^T (K x M) in the same 15 floats; element
         * (i,k) of op(A) is a[ta ? k*M+i : i*K+k]. */
        T t;
        t_init(&t, DM_OP_GEMM, "gemm");
        if (ta)
          t_in(&t, DM_ONNX_FLOAT, D(5, 3), a);
        else
          t_in(&t, DM_ONNX_FLOAT, D(3, 5), a);
        if (tb)
          t_in(&t, DM_ONNX_FLOAT, D(4, 5), b);
        else
          t_in(&t, DM_ONNX_FLOAT, D(5, 4), b);
        if (cmode == 1)
          t_in(&t, DM_ONNX_FLOAT, D(4), cn);
        else if (cmode == 2)
          t_in(&t, DM_ONNX_FLOAT, D(3, 1), cm);
        else if (cmode == 3)
          t_in(&t, DM_ONNX_FLOAT, SCALAR, cm);
        float *y = t_out(&t, DM_ONNX_FLOAT, D(3, 4));
        t.n.p.gemm.alpha = 0.5f;
        t.n.p.gemm.beta = 2.0f;
        t.n.p.gemm.trans_a = ta;
        t.n.p.gemm.trans_b = tb;
        t.n.n_post = 1;
        t.n.post[0] = (dm_post){.kind = DM_POST_ACT,
                                .act = {DM_UNARY_LEAKYRELU, 0.1f, 0}};
        for (int64_t i = 0; i < M; i++)
          for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
              s += (double)a[ta ? k * M + i : i * K + k] *
                   b[tb ? j * K + k : k * N + j];
            double c = cmode == 1   ? cn[j]
                       : cmode == 2 ? cm[i]
                       : cmode == 3 ? cm[0]
                                    : 0;
            double r = 0.5 * s + 2.0 * c;
            e[i * N + j] = (float)(r < 0 ? 0.1 * r : r);
          }
        CHECK(t_run(&t) == DM_OK && near_f("gemm", y, e, 12, 1e-6),
              "gemm ta=%d tb=%d c=%d: %s", ta, tb, cmode, t.eb.msg);
        t_free(&t);
      }
}

static void test_matmul(void) {
  struct {
    int ra, rb, ro;
    int64_t ad[4], bd[4], od[4];
  } cs[] = {
      {4, 3, 4, {2, 1, 3, 4}, {3, 4, 5}, {2, 3, 3, 5}},
      {3, 2, 3, {2, 3, 4}, {4, 2}, {2, 3, 2}},
      {1, 2, 1, {4}, {4, 5}, {5}},
      {2, 1, 1, {3, 4}, {4}, {3}},
      {1, 1, 0, {4}, {4}, {0}},
      {1, 3, 2, {4}, {2, 4, 3}, {2, 3}},
      {3, 1, 2, {2, 3, 4}, {4}, {2, 3}},
  };
  for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
    int ra = cs[ci].ra, rb = cs[ci].rb, ro = cs[ci].ro;
    int64_t na = numel(ra, cs[ci].ad), nb = numel(rb, cs[ci].bd),
            no = numel(ro, cs[ci].od);
    float a[96], b[96], e[96];
    fill_rand(a, na);
    fill_rand(b, nb);
    /* promote to >= 2-D, broadcast batch dims by index decomposition */
    int64_t M = ra == 1 ? 1 : cs[ci].ad[ra - 2], K = cs[ci].ad[ra - 1];
    int64_t N = rb == 1 ? 1 : cs[ci].bd[rb - 1];
    int64_t nbatch = no / (M * N);
    int bra = ra > 2 ? ra - 2 : 0, brb = rb > 2 ? rb - 2 : 0;
    int bro = ro - (ra > 1) - (rb > 1);
    for (int64_t bt = 0; bt < nbatch; bt++) {
      int64_t oa = bra ? bc_off(bt, bro, cs[ci].od, bra, cs[ci].ad) : 0;
      int64_t ob = brb ? bc_off(bt, bro, cs[ci].od, brb, cs[ci].bd) : 0;
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
          double s = 0;
          for (int64_t k = 0; k < K; k++)
            s += (double)a[oa * M * K + i * K + k] * b[ob * K * N + k * N + j];
          e[bt * M * N + i * N + j] = (float)s;
        }
    }
    T t;
    t_init(&t, DM_OP_MATMUL, "matmul");
    t_in(&t, DM_ONNX_FLOAT, ra, cs[ci].ad, a);
    t_in(&t, DM_ONNX_FLOAT, rb, cs[ci].bd, b);
    float *y = t_out(&t, DM_ONNX_FLOAT, ro, cs[ci].od);
    dm_err rc = t_run(&t);
    CHECK(rc == DM_OK && near_f("matmul", y, e, no, 1e-6),
          "matmul case %zu: %s", ci, t.eb.msg);
    t_free(&t);
  }
  T t;
  t_init(&t, DM_OP_MATMUL, "matmul_i64");
  t_in(&t, DM_ONNX_INT64, D(1, 1), (const int64_t[]){1});
  t_in(&t, DM_ONNX_INT64, D(1, 1), (const int64_t[]){1});
  t_out(&t, DM_ONNX_INT64, D(1, 1));
  CHECK(t_run(&t) == DM_UNSUPPORTED && strstr(t.eb.msg, "matmul_i64"),
        "matmul int64 unsupported");
  t_free(&t);
}

/* ---------- normalisations ---------- */

static void test_norms(void) {
  T t;
  /* BatchNorm [2,3,2,2] */
  float x[24], sc[3] = {1.5f, -0.5f, 2}, bi[3] = {0.1f, 0.2f, -0.3f},
               mu[3] = {0.05f, -0.1f, 0.3f}, var[3] = {0.5f, 2, 0.01f}, e[24];
  fill_rand(x, 24);
  for (int i = 0; i < 24; i++) {
    int c = (i / 4) % 3;
    e[i] = (float)((x[i] - mu[c]) / sqrt(var[c] + 1e-5) * sc[c] + bi[c]);
  }
  t_init(&t, DM_OP_BATCHNORM, "bn");
  t_in(&t, DM_ONNX_FLOAT, D(2, 3, 2, 2), x);
  t_in(&t, DM_ONNX_FLOAT, D(3), sc);
  t_in(&t, DM_ONNX_FLOAT, D(3), bi);
  t_in(&t, DM_ONNX_FLOAT, D(3), mu);
  t_in(&t, DM_ONNX_FLOAT, D(3), var);
  float *y = t_out(&t, DM_ONNX_FLOAT, D(2, 3, 2, 2));
  t.n.p.bn.eps = 1e-5f;
  CHECK(t_run(&t) == DM_OK && near_f("bn", y, e, 24, 1e-5), "batchnorm");
  t_free(&t);

  /* LayerNorm [2,3,4]: axis 2 with scale+bias [4]; axis 1 with scale [4]
   * broadcast over [3,4] and no bias */
  float s4[4] = {1, 2, -1, 0.5f}, b4[4] = {0, 0.5f, 1, -1};
  for (int ax = 1; ax <= 2; ax++) {
    int64_t outer = ax == 2 ? 6 : 2, d = ax == 2 ? 4 : 12;
    for (int64_t o = 0; o < outer; o++) {
      double m = 0, v = 0;
      for (int64_t j = 0; j < d; j++)
        m += x[o * d + j];
      m /= (double)d;
      for (int64_t j = 0; j < d; j++)
        v += (x[o * d + j] - m) * (x[o * d + j] - m);
      v /= (double)d;
      for (int64_t j = 0; j < d; j++)
        e[o * d + j] = (float)((x[o * d + j] - m) / sqrt(v + 1e-5) * s4[j % 4] +
                               (ax == 2 ? b4[j % 4] : 0));
    }
    t_init(&t, DM_OP_LAYERNORM, "ln");
    t_in(&t, DM_ONNX_FLOAT, D(2, 3, 4), x);
    t_in(&t, DM_ONNX_FLOAT, D(4), s4);
    if (ax == 2)
      t_in(&t, DM_ONNX_FLOAT, D(4), b4);
    else
      t_none(&t);
    y = t_out(&t, DM_ONNX_FLOAT, D(2, 3, 4));
    t.n.p.layernorm.axis = ax;
    t.n.p.layernorm.eps = 1e-5f;
    CHECK(t_run(&t) == DM_OK && near_f("ln", y, e, 24, 1e-5),
          "layernorm axis %d: %s", ax, t.eb.msg);
    t_free(&t);
  }

  /* InstanceNorm [2,3,4] (scale/bias per channel) */
  for (int64_t p = 0; p < 6; p++) {
    int c = (int)(p % 3);
    double m = 0, v = 0;
    for (int j = 0; j < 4; j++)
      m += x[p * 4 + j];
    m /= 4;
    for (int j = 0; j < 4; j++)
      v += (x[p * 4 + j] - m) * (x[p * 4 + j] - m);
    v /= 4;
    for (int j = 0; j < 4; j++)
      e[p * 4 + j] =
          (float)((x[p * 4 + j] - m) / sqrt(v + 1e-3) * sc[c] + bi[c]);
  }
  t_init(&t, DM_OP_INSTANCENORM, "in");
  t_in(&t, DM_ONNX_FLOAT, D(2, 3, 4), x);
  t_in(&t, DM_ONNX_FLOAT, D(3), sc);
  t_in(&t, DM_ONNX_FLOAT, D(3), bi);
  y = t_out(&t, DM_ONNX_FLOAT, D(2, 3, 4));
  t.n.p.instancenorm.eps = 1e-3f;
  CHECK(t_run(&t) == DM_OK && near_f("in", y, e, 24, 1e-5), "instancenorm");
  t_free(&t);

  /* LRN [1,5,2,2] size 3 (window [c-1, c+1]) and size 4 ([c-1, c+2]) */
  float xl[20];
  fill_rand(xl, 20);
  for (int size = 3; size <= 4; size++) {
    float el[20];
    for (int c = 0; c < 5; c++)
      for (int j = 0; j < 4; j++) {
        double sq = 0;
        for (int k = c - (size - 1) / 2; k <= c + size / 2; k++)
          if (k >= 0 && k < 5) sq += (double)xl[k * 4 + j] * xl[k * 4 + j];
        el[c * 4 + j] =
            (float)(xl[c * 4 + j] / pow(2.0 + 0.5 / size * sq, 0.75));
      }
    t_init(&t, DM_OP_LRN, "lrn");
    t_in(&t, DM_ONNX_FLOAT, D(1, 5, 2, 2), xl);
    y = t_out(&t, DM_ONNX_FLOAT, D(1, 5, 2, 2));
    t.n.p.lrn.size = size;
    t.n.p.lrn.alpha = 0.5f;
    t.n.p.lrn.beta = 0.75f;
    t.n.p.lrn.bias = 2.0f;
    CHECK(t_run(&t) == DM_OK && near_f("lrn", y, el, 20, 1e-6), "lrn size %d",
          size);
    t_free(&t);
  }

  /* PRelu: slope [3,1] broadcast to [2,3,2] */
  float xp[12], sl[3] = {0.1f, -2, 0.5f}, ep[12];
  fill_rand(xp, 12);
  for (int i = 0; i < 12; i++)
    ep[i] = xp[i] < 0 ? sl[(i / 2) % 3] * xp[i] : xp[i];
  t_init(&t, DM_OP_PRELU, "prelu");
  t_in(&t, DM_ONNX_FLOAT, D(2, 3, 2), xp);
  t_in(&t, DM_ONNX_FLOAT, D(3, 1), sl);
  y = t_out(&t, DM_ONNX_FLOAT, D(2, 3, 2));
  CHECK(t_run(&t) == DM_OK && near_f("prelu", y, ep, 12, 0), "prelu");
  t_free(&t);
}

/* ---------- data movement ---------- */

static void test_movement(void) {
  T t;
  /* Reshape: copy, and no-op when aliased */
  t_init(&t, DM_OP_RESHAPE, "reshape");
  float r6[6] = {1, 2, 3, 4, 5, 6};
  t_in(&t, DM_ONNX_FLOAT, D(2, 3), r6);
  float *y = t_out(&t, DM_ONNX_FLOAT, D(3, 2));
  CHECK(t_run(&t) == DM_OK && near_f("reshape", y, r6, 6, 0), "reshape");
  t.op[0] = r6; /* aliased view */
  CHECK(t_run(&t) == DM_OK && r6[5] == 6, "reshape aliased");
  t_free(&t);

  /* Transpose [2,3,4] perm (2,0,1), int64 and uint8 */
  int64_t xi[24];
  uint8_t xb[24];
  for (int i = 0; i < 24; i++) {
    xi[i] = i * 10;
    xb[i] = (uint8_t)i;
  }
  int64_t et[24];
  uint8_t ebt[24];
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 2; b++)
      for (int c = 0; c < 3; c++) {
        et[(a * 2 + b) * 3 + c] = xi[(b * 3 + c) * 4 + a];
        ebt[(a * 2 + b) * 3 + c] = xb[(b * 3 + c) * 4 + a];
      }
  t_init(&t, DM_OP_TRANSPOSE, "transpose");
  t_in(&t, DM_ONNX_INT64, D(2, 3, 4), xi);
  int64_t *yi = t_out(&t, DM_ONNX_INT64, D(4, 2, 3));
  memcpy(t.n.p.transpose.perm, (const int64_t[]){2, 0, 1}, 3 * 8);
  CHECK(t_run(&t) == DM_OK && eq_i64("transpose", yi, et, 24), "transpose");
  t_free(&t);
  t_init(&t, DM_OP_TRANSPOSE, "transpose_u8");
  t_in(&t, DM_ONNX_UINT8, D(2, 3, 4), xb);
  uint8_t *yb = t_out(&t, DM_ONNX_UINT8, D(4, 2, 3));
  memcpy(t.n.p.transpose.perm, (const int64_t[]){2, 0, 1}, 3 * 8);
  CHECK(t_run(&t) == DM_OK && eq_u8("transpose_u8", yb, ebt, 24),
        "transpose uint8");
  t_free(&t);

  /* Concat axis 1: [2,1,2] + [2,3,2] + [2,0,2] (empty, NULL data) */
  int32_t c1[4] = {1, 2, 3, 4}, c2[12];
  for (int i = 0; i < 12; i++)
    c2[i] = 100 + i;
  t_init(&t, DM_OP_CONCAT, "concat");
  t_in(&t, DM_ONNX_INT32, D(2, 1, 2), c1);
  t_in(&t, DM_ONNX_INT32, D(2, 3, 2), c2);
  t_in(&t, DM_ONNX_INT32, D(2, 0, 2), NULL);
  int32_t *yc = t_out(&t, DM_ONNX_INT32, D(2, 4, 2));
  t.n.p.concat.axis = 1;
  CHECK(t_run(&t) == DM_OK &&
            eq_i32("concat", yc,
                   (const int32_t[]){1, 2, 100, 101, 102, 103, 104, 105, 3, 4,
                                     106, 107, 108, 109, 110, 111},
                   16),
        "concat: %s", t.eb.msg);
  t_free(&t);

  /* Split axis 1 of [2,5] into 2 + 3 */
  t_init(&t, DM_OP_SPLIT, "split");
  t_in(&t, DM_ONNX_FLOAT, D(2, 5),
       (const float[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  float *s0 = t_out(&t, DM_ONNX_FLOAT, D(2, 2));
  float *s1 = t_out(&t, DM_ONNX_FLOAT, D(2, 3));
  t.n.p.split.axis = 1;
  CHECK(t_run(&t) == DM_OK &&
            near_f("split0", s0, (const float[]){0, 1, 5, 6}, 4, 0) &&
            near_f("split1", s1, (const float[]){2, 3, 4, 7, 8, 9}, 6, 0),
        "split");
  t_free(&t);

  /* Slice [4,5] with negative steps: rows 3,1 and cols 4,1 */
  float x20[20];
  for (int i = 0; i < 20; i++)
    x20[i] = (float)i;
  t_init(&t, DM_OP_SLICE, "slice_neg");
  t_in(&t, DM_ONNX_FLOAT, D(4, 5), x20);
  y = t_out(&t, DM_ONNX_FLOAT, D(2, 2));
  t.n.p.slice.start[0] = 3;
  t.n.p.slice.step[0] = -2;
  t.n.p.slice.start[1] = 4;
  t.n.p.slice.step[1] = -3;
  CHECK(t_run(&t) == DM_OK &&
            near_f("slice_neg", y, (const float[]){19, 16, 9, 6}, 4, 0),
        "slice negative steps");
  /* positive step, rows 1..3 all cols reversed */
  t_free(&t);
  t_init(&t, DM_OP_SLICE, "slice_pos");
  t_in(&t, DM_ONNX_FLOAT, D(4, 5), x20);
  y = t_out(&t, DM_ONNX_FLOAT, D(2, 5));
  t.n.p.slice.start[0] = 1;
  t.n.p.slice.step[0] = 2;
  t.n.p.slice.start[1] = 4;
  t.n.p.slice.step[1] = -1;
  CHECK(t_run(&t) == DM_OK &&
            near_f("slice_pos", y,
                   (const float[]){9, 8, 7, 6, 5, 19, 18, 17, 16, 15}, 10, 0),
        "slice step 2 / reversed");
  /* a start that would read out of bounds is refused */
  t.n.p.slice.start[0] = 3;
  CHECK(t_run(&t) == DM_RANGE, "slice out of bounds refused");
  t_free(&t);

  /* Pad: constant, reflect, edge, negative (crop) */
  static const float p4[4] = {1, 2, 3, 4};
  static const float pe[3][9] = {{9, 9, 1, 2, 3, 4, 9, 9, 9},
                                 {3, 2, 1, 2, 3, 4, 3, 2, 1},
                                 {1, 1, 1, 2, 3, 4, 4, 4, 4}};
  for (int mode = 0; mode < 3; mode++) {
    t_init(&t, DM_OP_PAD, "pad");
    t_in(&t, DM_ONNX_FLOAT, D(1, 4), p4);
    y = t_out(&t, DM_ONNX_FLOAT, D(1, 9));
    t.n.p.pad.mode = mode;
    memcpy(t.n.p.pad.pads, (const int64_t[]){0, 2, 0, 3}, 4 * 8);
    t.n.p.pad.value = 9;
    CHECK(t_run(&t) == DM_OK && near_f("pad", y, pe[mode], 9, 0), "pad mode %d",
          mode);
    t_free(&t);
  }
  t_init(&t, DM_OP_PAD, "pad_crop");
  t_in(&t, DM_ONNX_INT64, D(2, 4), (const int64_t[]){1, 2, 3, 4, 5, 6, 7, 8});
  yi = t_out(&t, DM_ONNX_INT64, D(3, 4));
  memcpy(t.n.p.pad.pads, (const int64_t[]){1, -1, 0, 1}, 4 * 8);
  t.n.p.pad.value = -7;
  CHECK(t_run(&t) == DM_OK &&
            eq_i64("pad_crop", yi,
                   (const int64_t[]){-7, -7, -7, -7, 2, 3, 4, -7, 6, 7, 8, -7},
                   12),
        "pad negative + constant int64");
  t_free(&t);
  /* 2-D reflect [3,3] pads 2 on each side of dim 0, 1 on dim 1 */
  float x9[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  t_init(&t, DM_OP_PAD, "pad_reflect2d");
  t_in(&t, DM_ONNX_FLOAT, D(3, 3), x9);
  y = t_out(&t, DM_ONNX_FLOAT, D(7, 5));
  t.n.p.pad.mode = 1;
  memcpy(t.n.p.pad.pads, (const int64_t[]){2, 1, 2, 1}, 4 * 8);
  {
    static const int rm[7] = {2, 1, 0, 1, 2, 1, 0}, cm[5] = {1, 0, 1, 2, 1};
    float e[35];
    for (int r = 0; r < 7; r++)
      for (int c = 0; c < 5; c++)
        e[r * 5 + c] = x9[rm[r] * 3 + cm[c]];
    CHECK(t_run(&t) == DM_OK && near_f("pad_reflect2d", y, e, 35, 0),
          "pad reflect 2-D");
  }
  t_free(&t);

  /* Gather: negative indices, int32 indices, scalar index, out of range */
  float g6[6] = {1, 2, 3, 4, 5, 6};
  t_init(&t, DM_OP_GATHER, "gather");
  t_in(&t, DM_ONNX_FLOAT, D(3, 2), g6);
  t_in(&t, DM_ONNX_INT64, D(2), (const int64_t[]){-1, 0});
  y = t_out(&t, DM_ONNX_FLOAT, D(2, 2));
  CHECK(t_run(&t) == DM_OK &&
            near_f("gather", y, (const float[]){5, 6, 1, 2}, 4, 0),
        "gather negative index");
  t_free(&t);
  t_init(&t, DM_OP_GATHER, "gather_ax1");
  t_in(&t, DM_ONNX_FLOAT, D(3, 2), g6);
  t_in(&t, DM_ONNX_INT32, D(2, 2), (const int32_t[]){1, 0, -2, 1});
  y = t_out(&t, DM_ONNX_FLOAT, D(3, 2, 2));
  t.n.p.gather.axis = 1;
  CHECK(t_run(&t) == DM_OK &&
            near_f("gather_ax1", y,
                   (const float[]){2, 1, 1, 2, 4, 3, 3, 4, 6, 5, 5, 6}, 12, 0),
        "gather axis 1 int32");
  t_free(&t);
  t_init(&t, DM_OP_GATHER, "gather_scalar");
  t_in(&t, DM_ONNX_INT64, D(4), (const int64_t[]){7, 8, 9, 10});
  t_in(&t, DM_ONNX_INT64, SCALAR, (const int64_t[]){-2});
  yi = t_out(&t, DM_ONNX_INT64, SCALAR);
  CHECK(t_run(&t) == DM_OK && yi[0] == 9, "gather scalar index");
  t_free(&t);
  for (int bad = 0; bad < 2; bad++) {
    t_init(&t, DM_OP_GATHER, "gather_oob");
    t_in(&t, DM_ONNX_FLOAT, D(3, 2), g6);
    t_in(&t, DM_ONNX_INT64, D(2),
         bad ? (const int64_t[]){0, -4} : (const int64_t[]){0, 3});
    t_out(&t, DM_ONNX_FLOAT, D(2, 2));
    CHECK(t_run(&t) == DM_RANGE && strstr(t.eb.msg, "gather_oob") &&
              strstr(t.eb.msg, bad ? "-4" : "3"),
          "gather out of range: '%s'", t.eb.msg);
    t_free(&t);
  }

  /* Expand [3,1] -> [2,3,4] */
  t_init(&t, DM_OP_EXPAND, "expand");
  t_in(&t, DM_ONNX_INT32, D(3, 1), (const int32_t[]){1, 2, 3});
  int32_t *ye = t_out(&t, DM_ONNX_INT32, D(2, 3, 4));
  {
    int32_t e[24];
    for (int i = 0; i < 24; i++)
      e[i] = (i / 4) % 3 + 1;
    CHECK(t_run(&t) == DM_OK && eq_i32("expand", ye, e, 24), "expand");
  }
  t_free(&t);

  /* Tile [2,3] by [2,2] -> [4,6] */
  t_init(&t, DM_OP_TILE, "tile");
  t_in(&t, DM_ONNX_FLOAT, D(2, 3), r6);
  t_in(&t, DM_ONNX_INT64, D(2), (const int64_t[]){2, 2});
  y = t_out(&t, DM_ONNX_FLOAT, D(4, 6));
  {
    float e[24];
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < 6; c++)
        e[r * 6 + c] = r6[(r % 2) * 3 + c % 3];
    CHECK(t_run(&t) == DM_OK && near_f("tile", y, e, 24, 0), "tile");
  }
  t_free(&t);

  /* Shape with start/end */
  t_init(&t, DM_OP_SHAPE, "shape");
  t_in(&t, DM_ONNX_FLOAT, D(2, 3, 5, 7), NULL);
  t.ip[0] = r6; /* any buffer: Shape reads no data */
  yi = t_out(&t, DM_ONNX_INT64, D(2));
  t.n.p.shape.start = 1;
  t.n.p.shape.end = 3;
  CHECK(t_run(&t) == DM_OK && eq_i64("shape", yi, (const int64_t[]){3, 5}, 2),
        "shape");
  t_free(&t);

  /* ConstantOfShape float / int64 / bool */
  t_init(&t, DM_OP_CONSTANTOFSHAPE, "cos_f");
  y = t_out(&t, DM_ONNX_FLOAT, D(2, 3));
  t.n.p.constantofshape.value = 1.5;
  CHECK(t_run(&t) == DM_OK &&
            near_f("cos_f", y,
                   (const float[]){1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f}, 6, 0),
        "constantofshape float");
  t_free(&t);
  t_init(&t, DM_OP_CONSTANTOFSHAPE, "cos_i");
  yi = t_out(&t, DM_ONNX_INT64, D(3));
  t.n.p.constantofshape.value = -7;
  CHECK(t_run(&t) == DM_OK &&
            eq_i64("cos_i", yi, (const int64_t[]){-7, -7, -7}, 3),
        "constantofshape int64");
  t_free(&t);
  t_init(&t, DM_OP_CONSTANTOFSHAPE, "cos_b");
  yb = t_out(&t, DM_ONNX_BOOL, D(2));
  t.n.p.constantofshape.value = 1;
  CHECK(t_run(&t) == DM_OK && eq_u8("cos_b", yb, (const uint8_t[]){1, 1}, 2),
        "constantofshape bool");
  t_free(&t);

  /* Range float and int64 (negative delta) */
  t_init(&t, DM_OP_RANGE, "range_f");
  t_in(&t, DM_ONNX_FLOAT, SCALAR, (const float[]){1});
  t_in(&t, DM_ONNX_FLOAT, SCALAR, (const float[]){3.1f});
  t_in(&t, DM_ONNX_FLOAT, SCALAR, (const float[]){0.5f});
  y = t_out(&t, DM_ONNX_FLOAT, D(5));
  CHECK(t_run(&t) == DM_OK &&
            near_f("range_f", y, (const float[]){1, 1.5f, 2, 2.5f, 3}, 5, 0),
        "range float");
  t_free(&t);
  t_init(&t, DM_OP_RANGE, "range_i");
  t_in(&t, DM_ONNX_INT64, SCALAR, (const int64_t[]){10});
  t_in(&t, DM_ONNX_INT64, SCALAR, (const int64_t[]){3});
  t_in(&t, DM_ONNX_INT64, SCALAR, (const int64_t[]){-3});
  yi = t_out(&t, DM_ONNX_INT64, D(3));
  CHECK(t_run(&t) == DM_OK &&
            eq_i64("range_i", yi, (const int64_t[]){10, 7, 4}, 3),
        "range int64");
  t_free(&t);
}

/* ---------- Cast ---------- */

static void test_cast(void) {
  static const float xf[7] = {-1.7f, 2.9f, 2.5f, -0.5f, 300.0f, NAN, 0.0f};
  T t;
  t_init(&t, DM_OP_CAST, "cast_f_i32");
  t_in(&t, DM_ONNX_FLOAT, D(7), xf);
  int32_t *y32 = t_out(&t, DM_ONNX_INT32, D(7));
  t.n.p.cast.to = DM_ONNX_INT32;
  CHECK(t_run(&t) == DM_OK &&
            eq_i32("cast_f_i32", y32, (const int32_t[]){-1, 2, 2, 0, 300, 0, 0},
                   7),
        "cast float->int32 truncates");
  t_free(&t);
  t_init(&t, DM_OP_CAST, "cast_f_u8");
  t_in(&t, DM_ONNX_FLOAT, D(7), xf);
  uint8_t *yb = t_out(&t, DM_ONNX_UINT8, D(7));
  t.n.p.cast.to = DM_ONNX_UINT8;
  CHECK(
      t_run(&t) == DM_OK &&
          eq_u8("cast_f_u8", yb, (const uint8_t[]){255, 2, 2, 0, 44, 0, 0}, 7),
      "cast float->uint8 wraps");
  t_free(&t);
  t_init(&t, DM_OP_CAST, "cast_f_b");
  t_in(&t, DM_ONNX_FLOAT, D(7), xf);
  yb = t_out(&t, DM_ONNX_BOOL, D(7));
  t.n.p.cast.to = DM_ONNX_BOOL;
  CHECK(t_run(&t) == DM_OK &&
            eq_u8("cast_f_b", yb, (const uint8_t[]){1, 1, 1, 1, 1, 1, 0}, 7),
        "cast float->bool");
  t_free(&t);
  /* int64 -> float rounds to nearest even once; -> int8 wraps */
  static const int64_t xi[4] = {16777217, 16777219, 200, -129};
  t_init(&t, DM_OP_CAST, "cast_i_f");
  t_in(&t, DM_ONNX_INT64, D(4), xi);
  float *yf = t_out(&t, DM_ONNX_FLOAT, D(4));
  t.n.p.cast.to = DM_ONNX_FLOAT;
  CHECK(t_run(&t) == DM_OK &&
            near_f("cast_i_f", yf,
                   (const float[]){16777216.0f, 16777220.0f, 200, -129}, 4, 0),
        "cast int64->float rounding");
  t_free(&t);
  t_init(&t, DM_OP_CAST, "cast_i_i8");
  t_in(&t, DM_ONNX_INT64, D(4), xi);
  int8_t *y8 = t_out(&t, DM_ONNX_INT8, D(4));
  t.n.p.cast.to = DM_ONNX_INT8;
  CHECK(t_run(&t) == DM_OK && y8[2] == -56 && y8[3] == 127 && y8[0] == 1,
        "cast int64->int8 wraps");
  t_free(&t);
  /* double -> float rounds; bool -> float; uint64 -> float */
  t_init(&t, DM_OP_CAST, "cast_d_f");
  t_in(&t, DM_ONNX_DOUBLE, D(2), (const double[]){0.1, 1e300});
  yf = t_out(&t, DM_ONNX_FLOAT, D(2));
  t.n.p.cast.to = DM_ONNX_FLOAT;
  CHECK(t_run(&t) == DM_OK && yf[0] == 0.1f && isinf(yf[1]),
        "cast double->float");
  t_free(&t);
  t_init(&t, DM_OP_CAST, "cast_b_f");
  t_in(&t, DM_ONNX_BOOL, D(2), (const uint8_t[]){1, 0});
  yf = t_out(&t, DM_ONNX_FLOAT, D(2));
  t.n.p.cast.to = DM_ONNX_FLOAT;
  CHECK(t_run(&t) == DM_OK && yf[0] == 1.0f && yf[1] == 0.0f,
        "cast bool->float");
  t_free(&t);
  t_init(&t, DM_OP_CAST, "cast_u64");
  t_in(&t, DM_ONNX_UINT64, D(1), (const uint64_t[]){UINT64_MAX});
  double *yd = t_out(&t, DM_ONNX_DOUBLE, D(1));
  t.n.p.cast.to = DM_ONNX_DOUBLE;
  CHECK(t_run(&t) == DM_OK && yd[0] == 18446744073709551616.0,
        "cast uint64->double");
  t_free(&t);
  /* float16 is not implemented: refused, not guessed */
  t_init(&t, DM_OP_CAST, "cast_f16");
  t_in(&t, DM_ONNX_FLOAT, D(1), xf);
  t_out(&t, DM_ONNX_INT16, D(1));
  t.v[t.out[0]].dtype = DM_ONNX_FLOAT16;
  t.n.p.cast.to = DM_ONNX_FLOAT16;
  CHECK(t_run(&t) == DM_UNSUPPORTED && strstr(t.eb.msg, "float16"),
        "cast to float16 unsupported: '%s'", t.eb.msg);
  t_free(&t);
}

/* ---------- misc errors ---------- */

static void test_errors(void) {
  T t;
  t_init(&t, DM_OP_CONV, "conv_i64");
  t_in(&t, DM_ONNX_INT64, D(1, 1, 2, 2), (const int64_t[]){1, 2, 3, 4});
  t_in(&t, DM_ONNX_INT64, D(1, 1, 1, 1), (const int64_t[]){1});
  t_out(&t, DM_ONNX_INT64, D(1, 1, 2, 2));
  t.n.p.conv.w =
      (dm_window){.nsp = 2, .kernel = {1, 1}, .stride = {1, 1}, .dil = {1, 1}};
  t.n.p.conv.group = 1;
  CHECK(t_run(&t) == DM_UNSUPPORTED && strstr(t.eb.msg, "conv_i64") &&
            strstr(t.eb.msg, "int64"),
        "conv int64: '%s'", t.eb.msg);
  t_free(&t);
  t_init(&t, DM_OP_COUNT, "bogus");
  CHECK(t_run(&t) == DM_UNSUPPORTED && strstr(t.eb.msg, "bogus"),
        "unknown op: '%s'", t.eb.msg);
  t_free(&t);
  t_init(&t, DM_OP_BINARY, "missing");
  t_in(&t, DM_ONNX_FLOAT, D(1), (const float[]){1});
  t_none(&t);
  t_out(&t, DM_ONNX_FLOAT, D(1));
  CHECK(t_run(&t) != DM_OK, "missing required input refused");
  t_free(&t);
}

/* ---------- the backend on a small graph ---------- */

/* X[1,2,3,3] -> Conv(1x1, W const, B const) -> Y -> Relu -> Z (output);
 * second output: the constant W itself; third: the input X. */
static void test_backend(void) {
  dm_graph g;
  dm_value values[5];
  dm_node nodes[2];
  int io[16];
  memset(&g, 0, sizeof g);
  memset(values, 0, sizeof values);
  memset(nodes, 0, sizeof nodes);
  g.opset = 17;
  g.values = values;
  g.nodes = nodes;
  static const float w[4] = {1, -1, 0.5f, 2}, b[2] = {0.25f, -10};
  static const struct {
    int32_t rank;
    int64_t dims[4];
    dm_val_kind kind;
    const void *data;
    size_t off;
  } vs[5] = {
      {4, {1, 2, 3, 3}, DM_VAL_INPUT, NULL, 0},
      {4, {2, 2, 1, 1}, DM_VAL_CONST, w, 0},
      {1, {2}, DM_VAL_CONST, b, 0},
      {4, {1, 2, 3, 3}, DM_VAL_ACT, NULL, 128},
      {4, {1, 2, 3, 3}, DM_VAL_ACT, NULL, 256},
  };
  for (int i = 0; i < 5; i++) {
    dm_value *v = &g.values[i];
    v->name = "v";
    v->dtype = DM_ONNX_FLOAT;
    v->rank = vs[i].rank;
    memcpy(v->dims, vs[i].dims, sizeof vs[i].dims);
    v->numel = numel(v->rank, v->dims);
    v->nbytes = (size_t)v->numel * 4;
    v->kind = vs[i].kind;
    v->data = vs[i].data;
    v->offset = vs[i].off;
    v->alias_of = -1;
  }
  g.n_values = 5;
  g.arena_bytes = 256 + 72;
  int *cin = io, *cout = io + 3, *rin = io + 4, *rout = io + 5;
  cin[0] = 0, cin[1] = 1, cin[2] = 2, cout[0] = 3, rin[0] = 3, rout[0] = 4;
  dm_node *c = &g.nodes[0], *r = &g.nodes[1];
  c->op = DM_OP_CONV;
  c->name = "c";
  c->n_in = 3;
  c->n_out = 1;
  c->in = cin;
  c->out = cout;
  c->p.conv.w =
      (dm_window){.nsp = 2, .kernel = {1, 1}, .stride = {1, 1}, .dil = {1, 1}};
  c->p.conv.group = 1;
  r->op = DM_OP_UNARY;
  r->name = "r";
  r->n_in = 1;
  r->n_out = 1;
  r->in = rin;
  r->out = rout;
  r->p.unary.kind = DM_UNARY_RELU;
  g.n_nodes = 2;
  g.inputs = io + 6;
  g.inputs[0] = 0;
  g.n_inputs = 1;
  g.outputs = io + 7;
  g.outputs[0] = 4;
  g.outputs[1] = 1;
  g.outputs[2] = 0;
  g.n_outputs = 3;

  float x[18], z[18], wo[4], xo[18], e[18];
  for (int i = 0; i < 18; i++)
    x[i] = (float)i - 4.0f;
  for (int p = 0; p < 9; p++)
    for (int m = 0; m < 2; m++) {
      float v = b[m] + w[m * 2] * x[p] + w[m * 2 + 1] * x[9 + p];
      e[m * 9 + p] = v > 0 ? v : 0;
    }
  const dm_backend *be = &dm__backend_ref;
  void *st = NULL, *ss = NULL;
  dm_errbuf eb = {{0}};
  dm_err rc = be->prepare(&g, NULL, &st, &eb);
  if (rc == DM_OK) rc = be->session_new(st, &ss, &eb);
  const void *ins[1] = {x};
  void *outs[3] = {z, wo, xo};
  for (int run = 0; run < 2 && rc == DM_OK; run++)
    rc = be->run(st, ss, ins, outs, &eb);
  CHECK(rc == DM_OK && near_f("backend", z, e, 18, 1e-6) &&
            near_f("backend_const_out", wo, w, 4, 0) &&
            near_f("backend_input_out", xo, x, 18, 0),
        "backend run: %s", eb.msg);
  CHECK(!strcmp(be->name, "ref") && !strcmp(be->precision(st), "fp32"),
        "backend name/precision");
  /* a failing node stops the run with its message */
  r->p.unary.kind = DM_UNARY_NOT;
  rc = be->run(st, ss, ins, outs, &eb);
  CHECK(rc == DM_UNSUPPORTED && strstr(eb.msg, "'r'"), "backend error: %s",
        eb.msg);
  be->session_free(ss);
  be->release(st);
}

int main(void) {
  test_conv();
  test_conv_post();
  test_pools();
  test_unary();
  test_binary();
  test_where();
  test_reduce();
  test_softmax();
  test_gemm();
  test_matmul();
  test_norms();
  test_movement();
  test_cast();
  test_errors();
  test_backend();
  printf("test_ref: %d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed ? 1 : 0;
}
