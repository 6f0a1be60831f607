/* backend_ref.c: the plain-C reference backend, the engine's oracle.
 *
 * Purpose: run any dm_node of a built dm_graph on plain row-major (NCHW)
 * buffers with exact ONNX semantics.  Used three ways: as the "ref" backend
 * (dm__backend_ref), by graph.c for constant folding, and by
 * backend_onednn.c for ops oneDNN lacks.  "Obviously correct" beats fast;
 * Conv is a direct loop whose innermost loop walks one contiguous output row
 * (fast enough for resnet50 in seconds), everything else is the textbook loop.
 *
 * Invariants relied on (guaranteed by dm__graph_build, see internal.h):
 *  - all geometry (shapes, dtypes, window, axes, perm, slice starts...) comes
 *    from node params and g->values[...]; output shapes are already inferred
 *    and kernels use them rather than recomputing (e.g. pool output sizes,
 *    split sizes, slice counts, Range length);
 *  - buffers are aligned to their element size and hold value.numel elements;
 *  - an output never overlaps an input, except exact aliasing (out == in),
 *    which is safe for the Reshape family (copy skipped) and for same-shape
 *    elementwise ops (each element is read before it is written).
 * Cheap checks that protect memory (Gather indices, slice bounds, shape
 * consistency) are still made and fail with DM_RANGE/DM_FORMAT; any
 * op/dtype combination not implemented fails with DM_UNSUPPORTED naming the
 * node, op and dtype.  Nothing is ever silently wrong.
 *
 * Float math is float32 with float accumulation (no double accumulation);
 * integer arithmetic wraps (computed on unsigned), integer division by zero
 * is an error, never a trap.
 *
 * Threading: kernels are reentrant and keep no global or static mutable
 * state; the backend's per-engine state is read-only after prepare and each
 * session owns its arena, so sessions may run concurrently. */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---------- names and errors ---------- */

static const char *unary_name(dm_unary k) {
  static const char *const names[] = {
#define X(e, s) s,
      DM_UNARY_MAP(X)
#undef X
  };
  return (unsigned)k < DM_UNARY_COUNT ? names[k] : "?";
}

static const char *binary_name(dm_binary k) {
  static const char *const names[] = {
#define X(e, s) s,
      DM_BINARY_MAP(X)
#undef X
  };
  return (unsigned)k < DM_BINARY_COUNT ? names[k] : "?";
}

static const char *reduce_name(dm_reduce k) {
  static const char *const names[] = {
#define X(e, s) s,
      DM_REDUCE_MAP(X)
#undef X
  };
  return (unsigned)k < DM_REDUCE_COUNT ? names[k] : "?";
}

/* "node 'name' (OpType): <details>" */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static dm_err
nerr(dm_errbuf *eb, dm_err rc, const dm_node *n, const char *fmt, ...) {
  char what[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return dm_errf(eb, rc, "node '%s' (%s): %s", n->name ? n->name : "?",
                 n->op_type ? n->op_type : dm__op_name(n->op), what);
}

/* ---------- dtypes ---------- */

static int64_t esize(int32_t dt) {
  switch (dt) {
  case DM_ONNX_UINT8:
  case DM_ONNX_INT8:
  case DM_ONNX_BOOL: return 1;
  case DM_ONNX_UINT16:
  case DM_ONNX_INT16:
  case DM_ONNX_FLOAT16:
  case DM_ONNX_BFLOAT16: return 2;
  case DM_ONNX_FLOAT:
  case DM_ONNX_INT32:
  case DM_ONNX_UINT32: return 4;
  case DM_ONNX_INT64:
  case DM_ONNX_UINT64:
  case DM_ONNX_DOUBLE: return 8;
  default: return 0;
  }
}

/* Integer types whose values fit int64 (uint64 is handled apart). */
static bool is_i64able(int32_t dt) {
  switch (dt) {
  case DM_ONNX_UINT8:
  case DM_ONNX_INT8:
  case DM_ONNX_UINT16:
  case DM_ONNX_INT16:
  case DM_ONNX_INT32:
  case DM_ONNX_INT64:
  case DM_ONNX_UINT32:
  case DM_ONNX_BOOL: return true;
  default: return false;
  }
}

static bool is_real(int32_t dt) {
  return dt == DM_ONNX_FLOAT || dt == DM_ONNX_DOUBLE;
}

/* Element i of an integer/bool buffer (uint64: its bits); 0 for others. */
static int64_t ld_i(const void *p, int32_t dt, int64_t i) {
  switch (dt) {
  case DM_ONNX_UINT8:
  case DM_ONNX_BOOL: return ((const uint8_t *)p)[i];
  case DM_ONNX_INT8: return ((const int8_t *)p)[i];
  case DM_ONNX_UINT16: return ((const uint16_t *)p)[i];
  case DM_ONNX_INT16: return ((const int16_t *)p)[i];
  case DM_ONNX_INT32: return ((const int32_t *)p)[i];
  case DM_ONNX_UINT32: return ((const uint32_t *)p)[i];
  case DM_ONNX_INT64: return ((const int64_t *)p)[i];
  case DM_ONNX_UINT64: return (int64_t)((const uint64_t *)p)[i];
  default: return 0; /* float types go through ld_d */
  }
}

/* Element i of any numeric buffer as double. */
static double ld_d(const void *p, int32_t dt, int64_t i) {
  switch (dt) {
  case DM_ONNX_FLOAT: return ((const float *)p)[i];
  case DM_ONNX_DOUBLE: return ((const double *)p)[i];
  case DM_ONNX_UINT64: return (double)((const uint64_t *)p)[i];
  default: return (double)ld_i(p, dt, i);
  }
}

/* Stores v into element i; integer targets wrap modulo their width (two's
 * complement, as gcc defines the conversion), bool is v != 0, float targets
 * round to nearest. */
static void st_i(void *p, int32_t dt, int64_t i, int64_t v) {
  switch (dt) {
  case DM_ONNX_BOOL: ((uint8_t *)p)[i] = v != 0; break;
  case DM_ONNX_UINT8: ((uint8_t *)p)[i] = (uint8_t)v; break;
  case DM_ONNX_INT8: ((int8_t *)p)[i] = (int8_t)v; break;
  case DM_ONNX_UINT16: ((uint16_t *)p)[i] = (uint16_t)v; break;
  case DM_ONNX_INT16: ((int16_t *)p)[i] = (int16_t)v; break;
  case DM_ONNX_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
  case DM_ONNX_UINT32: ((uint32_t *)p)[i] = (uint32_t)v; break;
  case DM_ONNX_INT64: ((int64_t *)p)[i] = v; break;
  case DM_ONNX_UINT64: ((uint64_t *)p)[i] = (uint64_t)v; break;
  case DM_ONNX_FLOAT: ((float *)p)[i] = (float)v; break;
  case DM_ONNX_DOUBLE: ((double *)p)[i] = (double)v; break;
  default: break;
  }
}

/* Truncation toward zero without UB: NaN -> 0, saturating at the int64
 * range (2^63 is exactly representable as a double). */
static int64_t d2i(double v) {
  if (v != v) return 0;
  if (v >= 9223372036854775808.0) return INT64_MAX;
  if (v <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)v;
}

/* Stores v into element i; float -> integer truncates toward zero (then
 * wraps to the target width like x86 does), float -> bool is v != 0. */
static void st_d(void *p, int32_t dt, int64_t i, double v) {
  switch (dt) {
  case DM_ONNX_FLOAT: ((float *)p)[i] = (float)v; break;
  case DM_ONNX_DOUBLE: ((double *)p)[i] = v; break;
  case DM_ONNX_BOOL: ((uint8_t *)p)[i] = v != 0; break;
  case DM_ONNX_UINT64:
    if (v >= 18446744073709551616.0)
      ((uint64_t *)p)[i] = UINT64_MAX;
    else if (v >= 9223372036854775808.0)
      ((uint64_t *)p)[i] = (uint64_t)v;
    else
      ((uint64_t *)p)[i] = (uint64_t)d2i(v);
    break;
  default: st_i(p, dt, i, d2i(v)); break;
  }
}

/* One element of any dtype, suitably aligned and typed for st_d/st_i. */
typedef union scalar8 {
  double d;
  float f;
  int64_t i64;
  uint64_t u64;
  int32_t i32;
  uint32_t u32;
  int16_t i16;
  uint16_t u16;
  int8_t i8;
  uint8_t u8;
} scalar8;

/* ---------- strided iteration ----------
 * An iterator walks a row-major index space `dims` (the destination, which is
 * contiguous) and keeps, for up to 3 source operands, the element offset
 * sum(idx[d] * st[k][d]).  Strides may be 0 (broadcast) or negative (Slice).
 * The last dim is left to the caller's inner loop:
 *   for (o = 0; o < it.outer; o++, it_step(&it))
 *     for (i = 0; i < it.inner; i++)  src_k[it.off[k] + i * it.ist[k]]
 * and the destination element is o * it.inner + i. */
#define IT_MAXR (2 * DM_MAX_RANK)
#define IT_MAXOPS 3
typedef struct iter {
  int rank, nops;
  int64_t dims[IT_MAXR];
  int64_t st[IT_MAXOPS][IT_MAXR];
  int64_t idx[IT_MAXR];
  int64_t off[IT_MAXOPS];
  int64_t ist[IT_MAXOPS]; /* inner-dim strides */
  int64_t inner, outer, total;
} iter;

static void it_init(iter *it, int rank, const int64_t *dims, int nops) {
  memset(it, 0, sizeof *it);
  it->rank = rank;
  it->nops = nops;
  for (int d = 0; d < rank; d++)
    it->dims[d] = dims[d];
}

/* Operand k is a tensor of rank r and dims od broadcast (numpy, right
 * aligned) to the iterator dims; its natural strides are scaled by `scale`. */
static void it_bcast(iter *it, int k, int r, const int64_t *od, int64_t scale) {
  int64_t s = scale;
  for (int d = it->rank - 1; d >= 0; d--) {
    int j = d - (it->rank - r);
    if (j < 0) {
      it->st[k][d] = 0;
      continue;
    }
    it->st[k][d] = od[j] == 1 ? 0 : s;
    s *= od[j];
  }
}

static void it_reset(iter *it) {
  memset(it->idx, 0, sizeof it->idx);
  memset(it->off, 0, sizeof it->off);
}

/* Drops size-1 dims, merges dims that are contiguous for every operand, and
 * sets inner/outer.  Call once after the strides are set. */
static void it_finish(iter *it) {
  int r = 0;
  it->total = 1;
  for (int d = 0; d < it->rank; d++)
    it->total *= it->dims[d];
  for (int d = 0; d < it->rank; d++) {
    if (it->dims[d] == 1) continue;
    bool merge = r > 0;
    for (int k = 0; k < it->nops && merge; k++)
      merge = it->st[k][r - 1] == it->st[k][d] * it->dims[d];
    if (merge) {
      it->dims[r - 1] *= it->dims[d];
      for (int k = 0; k < it->nops; k++)
        it->st[k][r - 1] = it->st[k][d];
    } else {
      it->dims[r] = it->dims[d];
      for (int k = 0; k < it->nops; k++)
        it->st[k][r] = it->st[k][d];
      r++;
    }
  }
  if (r == 0) {
    it->dims[0] = 1;
    for (int k = 0; k < it->nops; k++)
      it->st[k][0] = 0;
    r = 1;
  }
  it->rank = r;
  it->inner = it->dims[r - 1];
  for (int k = 0; k < it->nops; k++)
    it->ist[k] = it->st[k][r - 1];
  it->outer = it->total == 0 ? 0 : it->total / it->inner;
  it_reset(it);
}

static void it_step(iter *it) {
  for (int d = it->rank - 2; d >= 0; d--) {
    it->idx[d]++;
    for (int k = 0; k < it->nops; k++)
      it->off[k] += it->st[k][d];
    if (it->idx[d] < it->dims[d]) return;
    for (int k = 0; k < it->nops; k++)
      it->off[k] -= it->st[k][d] * it->dims[d];
    it->idx[d] = 0;
  }
}

/* Copies one element of es bytes (constant-size memcpy compiles to a move). */
static inline void cp_elem(char *d, const char *s, int64_t es) {
  switch (es) {
  case 1: *d = *s; break;
  case 2: memcpy(d, s, 2); break;
  case 4: memcpy(d, s, 4); break;
  case 8: memcpy(d, s, 8); break;
  default: memcpy(d, s, (size_t)es); break;
  }
}

/* dst (contiguous over it->dims) = src[base + off0] for every element. */
static void strided_copy(void *dst, const void *src, int64_t base, int64_t es,
                         iter *it) {
  char *d = dst;
  const char *s = src;
  for (int64_t o = 0; o < it->outer; o++, it_step(it)) {
    const char *row = s + (base + it->off[0]) * es;
    char *out = d + o * it->inner * es;
    if (it->ist[0] == 1) {
      memcpy(out, row, (size_t)(it->inner * es));
      continue;
    }
    for (int64_t i = 0; i < it->inner; i++)
      cp_elem(out + i * es, row + i * it->ist[0] * es, es);
  }
}

static void row_strides(const dm_value *v, int64_t *st) {
  int64_t s = 1;
  for (int d = v->rank - 1; d >= 0; d--) {
    st[d] = s;
    s *= v->dims[d];
  }
}

static int64_t prod(const int64_t *dims, int from, int to) {
  int64_t p = 1;
  for (int d = from; d < to; d++)
    p *= dims[d];
  return p;
}

/* ---------- kernel context ---------- */

typedef struct kc {
  const dm_graph *g;
  const dm_node *n;
  const void *const *in;
  void *const *out;
  dm_errbuf *eb;
} kc;

/* Value of a required input/output (checked by need()). */
static const dm_value *rin(const kc *c, int i) {
  return &c->g->values[c->n->in[i]];
}
static const dm_value *rout(const kc *c, int i) {
  return &c->g->values[c->n->out[i]];
}
/* Input i is present: a value with a buffer (an empty value may have a NULL
 * buffer, e.g. a 0-element constant). */
static bool has_in(const kc *c, int i) {
  return i >= 0 && i < c->n->n_in && c->n->in[i] >= 0 &&
         (c->in[i] || c->g->values[c->n->in[i]].nbytes == 0);
}
/* Value of an optional input, or NULL when omitted. */
static const dm_value *oin(const kc *c, int i) {
  return has_in(c, i) ? &c->g->values[c->n->in[i]] : NULL;
}

/* Inputs 0..nin-1 and outputs 0..nout-1 must be present with buffers. */
static dm_err need(const kc *c, int nin, int nout) {
  const dm_node *n = c->n;
  if (n->n_in < nin || n->n_out < nout)
    return nerr(c->eb, DM_FORMAT, n, "has %d inputs/%d outputs, needs %d/%d",
                n->n_in, n->n_out, nin, nout);
  for (int i = 0; i < nin; i++)
    if (!has_in(c, i))
      return nerr(c->eb, DM_FORMAT, n, "required input %d is missing", i);
  for (int i = 0; i < nout; i++)
    if (n->out[i] < 0 || (!c->out[i] && rout(c, i)->nbytes))
      return nerr(c->eb, DM_FORMAT, n, "output %d has no buffer", i);
  return DM_OK;
}

static dm_err bad_dtype(const kc *c, const dm_value *v) {
  return nerr(c->eb, DM_UNSUPPORTED, c->n, "dtype %s of '%s' not supported",
              dm_onnx_dtype_name(v->dtype), v->name ? v->name : "?");
}

static bool all_f32(const dm_value *a, const dm_value *b) {
  return a->dtype == DM_ONNX_FLOAT && b->dtype == DM_ONNX_FLOAT;
}

/* ---------- elementwise float functions ---------- */

static float sigmoid_f32(float x) { /* no overflow for large |x| */
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  float e = expf(x);
  return e / (1.0f + e);
}

/* One element of a float activation.  The switch has no default on purpose:
 * a new dm_unary kind fails the build (-Wswitch) instead of computing junk. */
static float act_f32(const dm_act *a, float x) {
  switch (a->kind) {
  case DM_UNARY_RELU: return x < 0.0f ? 0.0f : x; /* keeps NaN */
  case DM_UNARY_LEAKYRELU: return x < 0.0f ? a->alpha * x : x;
  case DM_UNARY_CLIP: {
    float y = x < a->alpha ? a->alpha : x;
    return y > a->beta ? a->beta : y;
  }
  case DM_UNARY_SIGMOID: return sigmoid_f32(x);
  case DM_UNARY_HARDSIGMOID: {
    float y = a->alpha * x + a->beta;
    return y < 0.0f ? 0.0f : (y > 1.0f ? 1.0f : y);
  }
  case DM_UNARY_HARDSWISH: {
    float y = x * (1.0f / 6.0f) + 0.5f;
    return x * (y < 0.0f ? 0.0f : (y > 1.0f ? 1.0f : y));
  }
  case DM_UNARY_TANH: return tanhf(x);
  case DM_UNARY_ELU: return x < 0.0f ? a->alpha * expm1f(x) : x;
  case DM_UNARY_SELU: return a->beta * (x <= 0.0f ? a->alpha * expm1f(x) : x);
  case DM_UNARY_SOFTPLUS: /* log(exp(x) + 1) without overflow */
    return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
  case DM_UNARY_SOFTSIGN: return x / (1.0f + fabsf(x));
  case DM_UNARY_ERF: return erff(x);
  case DM_UNARY_EXP: return expf(x);
  case DM_UNARY_LOG: return logf(x);
  case DM_UNARY_SQRT: return sqrtf(x);
  case DM_UNARY_NEG: return -x;
  case DM_UNARY_ABS: return fabsf(x);
  case DM_UNARY_RECIPROCAL: return 1.0f / x;
  case DM_UNARY_FLOOR: return floorf(x);
  case DM_UNARY_CEIL: return ceilf(x);
  case DM_UNARY_ROUND: return rintf(x); /* default mode: half to even */
  case DM_UNARY_SIGN: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x);
  case DM_UNARY_SIN: return sinf(x);
  case DM_UNARY_COS: return cosf(x);
  case DM_UNARY_NOT: return x == 0.0f ? 1.0f : 0.0f;
  case DM_UNARY_GELU: return 0.5f * x * (1.0f + erff(x / 1.41421356237f));
  case DM_UNARY_SWISH: return x * sigmoid_f32(x);
  case DM_UNARY_COUNT: break;
  }
  return NAN;
}

float dm__ref_act(const dm_act *a, float x) { return act_f32(a, x); }

static bool act_is_float(dm_unary k) {
  return (unsigned)k < DM_UNARY_COUNT && k != DM_UNARY_NOT;
}

/* n->post[] on out[0] (float32), in order. */
static dm_err apply_post(const kc *c) {
  const dm_node *n = c->n;
  const dm_value *y = rout(c, 0);
  float *yp = c->out[0];
  if (y->dtype != DM_ONNX_FLOAT) return bad_dtype(c, y);
  for (int p = 0; p < n->n_post && p < DM_MAX_POST; p++) {
    const dm_post *q = &n->post[p];
    if (q->kind == DM_POST_ACT) {
      if (!act_is_float(q->act.kind))
        return nerr(c->eb, DM_UNSUPPORTED, n, "post-op %s",
                    unary_name(q->act.kind));
      for (int64_t i = 0; i < y->numel; i++)
        yp[i] = act_f32(&q->act, yp[i]);
    } else if (q->kind == DM_POST_ADD) {
      const dm_value *a = oin(c, q->input);
      if (!a || a->dtype != DM_ONNX_FLOAT || a->numel != y->numel)
        return nerr(c->eb, DM_FORMAT, n, "post-op add input %d invalid",
                    q->input);
      const float *ap = c->in[q->input];
      for (int64_t i = 0; i < y->numel; i++)
        yp[i] += ap[i];
    } else {
      return nerr(c->eb, DM_UNSUPPORTED, n, "post-op kind %d", (int)q->kind);
    }
  }
  return DM_OK;
}

/* ---------- Conv ---------- */

/* Output positions o in [lo, hi) with 0 <= o*s + off < n_in (s >= 1). */
void dm__valid_range(int64_t off, int64_t s, int64_t n_in, int64_t n_out,
                     int64_t *lo, int64_t *hi) {
  int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
  int64_t b = n_in - 1 - off < 0 ? 0 : (n_in - 1 - off) / s + 1;
  if (b > n_out) b = n_out;
  if (a > b) a = b;
  *lo = a;
  *hi = b;
}

/* Spatial geometry padded to 3 dims (leading dims of size 1). */
typedef struct geo3 {
  int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
} geo3;

static void geo_fill(geo3 *q, const dm_window *w, const dm_value *x,
                     const dm_value *y, const int64_t *kdims) {
  for (int j = 0; j < 3; j++) {
    int sj = j - (3 - w->nsp);
    if (sj < 0) {
      q->in[j] = q->out[j] = q->k[j] = q->s[j] = q->d[j] = 1;
      q->pb[j] = q->pe[j] = 0;
      continue;
    }
    q->in[j] = x->dims[2 + sj];
    q->out[j] = y->dims[2 + sj];
    q->k[j] = kdims ? kdims[sj] : w->kernel[sj];
    q->s[j] = w->stride[sj];
    q->d[j] = w->dil[sj];
    q->pb[j] = w->pad_b[sj];
    q->pe[j] = w->pad_e[sj];
  }
}

static bool window_ok(const dm_window *w, const dm_value *x,
                      const dm_value *y) {
  if (w->nsp < 1 || w->nsp > DM_MAX_SPATIAL || x->rank != w->nsp + 2 ||
      y->rank != x->rank)
    return false;
  for (int i = 0; i < w->nsp; i++)
    if (w->stride[i] < 1 || w->dil[i] < 1 || w->kernel[i] < 1) return false;
  return true;
}

/* QuantizeLinear of one value (internal.h). */
int32_t dm__quantize_one(float x, float scale, int32_t zp, bool u8) {
  float r = nearbyintf(x / scale);
  double d = (isnan(r) ? 0.0 : (double)r) + (double)zp;
  double lo = u8 ? 0 : -128, hi = u8 ? 255 : 127;
  return (int32_t)(d < lo ? lo : (d > hi ? hi : d));
}

/* Requantizes one float result of an 8-bit op: post-ops, then
 * QuantizeLinear's sat(rint(v / scale) + zp) (ties to even). */
static int32_t requant(const dm_node *n, const dm_qparam *y, float v) {
  for (int p = 0; p < n->n_post && p < DM_MAX_POST; p++)
    if (n->post[p].kind == DM_POST_ACT) v = act_f32(&n->post[p].act, v);
  return dm__quantize_one(v, y->scale[0], y->zp[0], y->dtype == DM_ONNX_UINT8);
}

/* The operands of a conv or Gemm on 8-bit data (dm_qconv), checked
 * against its parameters: x_q, the float weights (for shapes; the int8
 * ones are q->w_q), the output, the optional float bias. */
static dm_err q_operands(const kc *c, const dm_value **X, const dm_value **W,
                         const dm_value **Y, const dm_value **B) {
  const dm_qconv *q = c->n->q;
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  *X = rin(c, 0);
  *W = rin(c, 1);
  *Y = rout(c, 0);
  *B = oin(c, 2);
  const dm_value *WQ = &c->g->values[q->w_q];
  if ((*X)->dtype != q->x.dtype || (*Y)->dtype != q->y.dtype ||
      WQ->dtype != DM_ONNX_INT8 || WQ->numel != (*W)->numel || !WQ->data ||
      (*B && (*B)->dtype != DM_ONNX_FLOAT))
    return bad_dtype(c, *X);
  return DM_OK;
}

/* Conv on 8-bit data (dm_qconv): int32 accumulation of (x_q - zp) * w_q
 * over the valid (unpadded) taps, then requant(), or with a float output
 * the scaled value (apply_post does post[]).  The oracle for the oneDNN
 * int8 convolution. */
static dm_err k_qconv(const kc *c) {
  const dm_node *n = c->n;
  const dm_qconv *q = n->q;
  const dm_value *X, *W, *Y, *B;
  dm_err rc = q_operands(c, &X, &W, &Y, &B);
  if (rc) return rc;
  const dm_window *w = &n->p.conv.w;
  int64_t N = X->dims[0], C = X->dims[1], M = Y->dims[1], G = n->p.conv.group;
  if (!window_ok(w, X, Y) || W->rank != X->rank || G < 1 || C % G || M % G ||
      W->dims[0] != M || W->dims[1] * G != C || Y->dims[0] != N ||
      (B && B->numel != M) || (q->w.n != 1 && q->w.n != M))
    return nerr(c->eb, DM_FORMAT, n, "inconsistent Conv shapes");
  geo3 g3;
  geo_fill(&g3, w, X, Y, W->dims + 2);
  const int8_t *wt = c->g->values[q->w_q].data;
  const float *bias = B ? (const float *)c->in[2] : NULL;
  bool fout = q->y.dtype == DM_ONNX_FLOAT;
  bool u8in = X->dtype == DM_ONNX_UINT8;
  const uint8_t *xu = c->in[0];
  const int8_t *xs = c->in[0];
  int32_t zx = q->x.zp[0];
  int64_t Cg = C / G, Mg = M / G;
  int64_t IS = g3.in[0] * g3.in[1] * g3.in[2];
  int64_t KS = g3.k[0] * g3.k[1] * g3.k[2];
  for (int64_t b = 0; b < N; b++)
    for (int64_t m = 0; m < M; m++) {
      int64_t grp = m / Mg;
      float sc = q->x.scale[0] * q->w.scale[q->w.n == 1 ? 0 : m];
      for (int64_t o0 = 0; o0 < g3.out[0]; o0++)
        for (int64_t o1 = 0; o1 < g3.out[1]; o1++)
          for (int64_t o2 = 0; o2 < g3.out[2]; o2++) {
            int32_t acc = 0;
            for (int64_t ci = 0; ci < Cg; ci++) {
              int64_t xb = (b * C + grp * Cg + ci) * IS;
              const int8_t *wp = wt + (m * Cg + ci) * KS;
              for (int64_t k0 = 0; k0 < g3.k[0]; k0++) {
                int64_t i0 = o0 * g3.s[0] + k0 * g3.d[0] - g3.pb[0];
                if (i0 < 0 || i0 >= g3.in[0]) continue;
                for (int64_t k1 = 0; k1 < g3.k[1]; k1++) {
                  int64_t i1 = o1 * g3.s[1] + k1 * g3.d[1] - g3.pb[1];
                  if (i1 < 0 || i1 >= g3.in[1]) continue;
                  for (int64_t k2 = 0; k2 < g3.k[2]; k2++) {
                    int64_t i2 = o2 * g3.s[2] + k2 * g3.d[2] - g3.pb[2];
                    if (i2 < 0 || i2 >= g3.in[2]) continue;
                    int64_t xi = xb + (i0 * g3.in[1] + i1) * g3.in[2] + i2;
                    int32_t xv = u8in ? (int32_t)xu[xi] : (int32_t)xs[xi];
                    acc += (xv - zx) *
                           (int32_t)wp[(k0 * g3.k[1] + k1) * g3.k[2] + k2];
                  }
                }
              }
            }
            float v = (float)acc * sc + (bias ? bias[m] : 0.0f);
            int64_t yi =
                ((b * M + m) * g3.out[0] + o0) * g3.out[1] * g3.out[2] +
                o1 * g3.out[2] + o2;
            if (fout)
              ((float *)c->out[0])[yi] = v; /* post[] by apply_post */
            else
              st_i(c->out[0], Y->dtype, yi, requant(n, &q->y, v));
          }
    }
  return DM_OK;
}

/* Gemm on 8-bit data (dm_qconv, fuse_qgemm): acc[m][o] = sum_k (x_q[m][k]
 * - x.zp) * w_q[o][k] (trans_b, else w_q[k][o]) in int32, then as
 * k_qconv.  The oracle for the oneDNN int8 matmul. */
static dm_err k_qgemm(const kc *c) {
  const dm_node *n = c->n;
  const dm_qconv *q = n->q;
  const dm_value *X, *W, *Y, *B;
  dm_err rc = q_operands(c, &X, &W, &Y, &B);
  if (rc) return rc;
  bool tb = n->p.gemm.trans_b;
  int64_t M = X->dims[0], K = X->dims[1];
  int64_t N = tb ? W->dims[0] : W->dims[1];
  if (X->rank != 2 || W->rank != 2 || Y->rank != 2 ||
      (tb ? W->dims[1] : W->dims[0]) != K || Y->dims[0] != M ||
      Y->dims[1] != N || (B && B->numel != N) || (q->w.n != 1 && q->w.n != N))
    return nerr(c->eb, DM_FORMAT, n, "inconsistent Gemm shapes");
  const int8_t *wt = c->g->values[q->w_q].data;
  const float *bias = B ? (const float *)c->in[2] : NULL;
  bool fout = q->y.dtype == DM_ONNX_FLOAT;
  int32_t zx = q->x.zp[0];
  for (int64_t m = 0; m < M; m++)
    for (int64_t o = 0; o < N; o++) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; k++)
        acc += ((int32_t)ld_i(c->in[0], X->dtype, m * K + k) - zx) *
               (int32_t)wt[tb ? o * K + k : k * N + o];
      float v = (float)acc * (q->x.scale[0] * q->w.scale[q->w.n == 1 ? 0 : o]) +
                (bias ? bias[o] : 0.0f);
      if (fout)
        ((float *)c->out[0])[m * N + o] = v; /* post[] by apply_post */
      else
        st_i(c->out[0], Y->dtype, m * N + o, requant(n, &q->y, v));
    }
  return DM_OK;
}

/* Add on 8-bit data (dm_qadd): both operands dequantized, added in float,
 * then requant().  The oracle for the oneDNN int8 binary. */
static dm_err k_qadd(const kc *c) {
  const dm_node *n = c->n;
  const dm_qadd *q = n->qadd;
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *A = rin(c, 0), *B = rin(c, 1), *Y = rout(c, 0);
  if (A->dtype != q->a.dtype || B->dtype != q->b.dtype ||
      Y->dtype != q->y.dtype)
    return bad_dtype(c, A);
  if (A->numel != Y->numel || B->numel != Y->numel)
    return nerr(c->eb, DM_FORMAT, n, "inconsistent Add shapes");
  float sa = q->a.scale[0], sb = q->b.scale[0];
  int32_t za = q->a.zp[0], zb = q->b.zp[0];
  for (int64_t i = 0; i < Y->numel; i++) {
    float va = (float)(ld_i(c->in[0], A->dtype, i) - za) * sa;
    float vb = (float)(ld_i(c->in[1], B->dtype, i) - zb) * sb;
    st_i(c->out[0], Y->dtype, i, requant(n, &q->y, va + vb));
  }
  return DM_OK;
}

static dm_err k_conv(const kc *c) {
  const dm_node *n = c->n;
  if (n->q) return k_qconv(c);
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *W = rin(c, 1), *Y = rout(c, 0);
  const dm_value *B = oin(c, 2);
  if (!all_f32(X, W) || Y->dtype != DM_ONNX_FLOAT ||
      (B && B->dtype != DM_ONNX_FLOAT))
    return bad_dtype(c, X->dtype != DM_ONNX_FLOAT ? X : W);
  const dm_window *w = &n->p.conv.w;
  int64_t N = X->dims[0], C = X->dims[1], M = Y->dims[1], G = n->p.conv.group;
  if (!window_ok(w, X, Y) || W->rank != X->rank || G < 1 || C % G || M % G ||
      W->dims[0] != M || W->dims[1] * G != C || Y->dims[0] != N ||
      (B && B->numel != M))
    return nerr(c->eb, DM_FORMAT, n, "inconsistent Conv shapes");
  geo3 q;
  geo_fill(&q, w, X, Y, W->dims + 2);
  /* pointwise conv over identical spatial dims: one flat row per plane */
  bool pw = true;
  for (int j = 0; j < 3; j++)
    pw =
        pw && q.k[j] == 1 && q.s[j] == 1 && q.pb[j] == 0 && q.in[j] == q.out[j];
  if (pw) {
    q.in[2] = q.out[2] = q.in[0] * q.in[1] * q.in[2];
    q.in[0] = q.in[1] = q.out[0] = q.out[1] = 1;
  }
  const float *x = c->in[0], *wt = c->in[1];
  const float *bias = B ? (const float *)c->in[2] : NULL;
  float *y = c->out[0];
  int64_t Cg = C / G, Mg = M / G;
  int64_t IS = q.in[0] * q.in[1] * q.in[2];
  int64_t OS = q.out[0] * q.out[1] * q.out[2];
  int64_t KS = q.k[0] * q.k[1] * q.k[2];
  for (int64_t b = 0; b < N; b++) {
    for (int64_t m = 0; m < M; m++) {
      int64_t grp = m / Mg;
      float *yp = y + (b * M + m) * OS;
      float bv = bias ? bias[m] : 0.0f;
      for (int64_t i = 0; i < OS; i++)
        yp[i] = bv;
      for (int64_t ci = 0; ci < Cg; ci++) {
        const float *xp = x + (b * C + grp * Cg + ci) * IS;
        const float *wp = wt + (m * Cg + ci) * KS;
        for (int64_t k0 = 0; k0 < q.k[0]; k0++) {
          int64_t off0 = k0 * q.d[0] - q.pb[0], lo0, hi0;
          dm__valid_range(off0, q.s[0], q.in[0], q.out[0], &lo0, &hi0);
          for (int64_t k1 = 0; k1 < q.k[1]; k1++) {
            int64_t off1 = k1 * q.d[1] - q.pb[1], lo1, hi1;
            dm__valid_range(off1, q.s[1], q.in[1], q.out[1], &lo1, &hi1);
            for (int64_t k2 = 0; k2 < q.k[2]; k2++) {
              int64_t off2 = k2 * q.d[2] - q.pb[2], lo2, hi2;
              dm__valid_range(off2, q.s[2], q.in[2], q.out[2], &lo2, &hi2);
              float wv = wp[(k0 * q.k[1] + k1) * q.k[2] + k2];
              int64_t s2 = q.s[2];
              for (int64_t o0 = lo0; o0 < hi0; o0++) {
                int64_t i0 = o0 * q.s[0] + off0;
                for (int64_t o1 = lo1; o1 < hi1; o1++) {
                  int64_t i1 = o1 * q.s[1] + off1;
                  float *restrict yr = yp + (o0 * q.out[1] + o1) * q.out[2];
                  const float *restrict xr = xp + (i0 * q.in[1] + i1) * q.in[2];
                  if (s2 == 1)
                    for (int64_t o2 = lo2; o2 < hi2; o2++)
                      yr[o2] += wv * xr[o2 + off2];
                  else
                    for (int64_t o2 = lo2; o2 < hi2; o2++)
                      yr[o2] += wv * xr[o2 * s2 + off2];
                }
              }
            }
          }
        }
      }
    }
  }
  return DM_OK;
}

/* ---------- pooling ---------- */

static dm_err k_pool(const kc *c, bool is_max) {
  const dm_node *n = c->n;
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  /* MaxPool also on 8-bit data (graph.c fuse_qpool) */
  bool q8 = is_max && X->dtype == Y->dtype &&
            (X->dtype == DM_ONNX_UINT8 || X->dtype == DM_ONNX_INT8);
  if (!q8 && !all_f32(X, Y)) return bad_dtype(c, X);
  if (n->n_out > 1)
    return nerr(c->eb, DM_UNSUPPORTED, n, "MaxPool Indices output");
  const dm_window *w = &n->p.pool.w;
  if (!window_ok(w, X, Y) || X->dims[0] != Y->dims[0] ||
      X->dims[1] != Y->dims[1])
    return nerr(c->eb, DM_FORMAT, n, "inconsistent pool shapes");
  geo3 q;
  geo_fill(&q, w, X, Y, NULL);
  const float *x = c->in[0];
  float *y = c->out[0];
  bool incl = n->p.pool.count_include_pad;
  int64_t NC = X->dims[0] * X->dims[1];
  int64_t IS = q.in[0] * q.in[1] * q.in[2];
  int64_t OS = q.out[0] * q.out[1] * q.out[2];
  for (int64_t nc = 0; nc < NC; nc++) {
    const float *xp = x + nc * IS;
    float *yp = y + nc * OS;
    int64_t x0 = nc * IS, y0 = nc * OS; /* 8-bit data: element offsets */
    for (int64_t o0 = 0; o0 < q.out[0]; o0++)
      for (int64_t o1 = 0; o1 < q.out[1]; o1++)
        for (int64_t o2 = 0; o2 < q.out[2]; o2++) {
          int64_t st[3] = {o0 * q.s[0] - q.pb[0], o1 * q.s[1] - q.pb[1],
                           o2 * q.s[2] - q.pb[2]};
          /* window positions inside the padded input [-pb, in+pe) */
          int64_t padded = 1;
          for (int j = 0; j < 3; j++) {
            int64_t cnt = 0;
            for (int64_t k = 0; k < q.k[j]; k++)
              if (st[j] + k * q.d[j] < q.in[j] + q.pe[j]) cnt++;
            padded *= cnt;
          }
          float m = -INFINITY, sum = 0.0f;
          int64_t valid = 0;
          for (int64_t k0 = 0; k0 < q.k[0]; k0++) {
            int64_t i0 = st[0] + k0 * q.d[0];
            if (i0 < 0 || i0 >= q.in[0]) continue;
            for (int64_t k1 = 0; k1 < q.k[1]; k1++) {
              int64_t i1 = st[1] + k1 * q.d[1];
              if (i1 < 0 || i1 >= q.in[1]) continue;
              for (int64_t k2 = 0; k2 < q.k[2]; k2++) {
                int64_t i2 = st[2] + k2 * q.d[2];
                if (i2 < 0 || i2 >= q.in[2]) continue;
                int64_t xi = (i0 * q.in[1] + i1) * q.in[2] + i2;
                float v =
                    q8 ? (float)ld_i(c->in[0], X->dtype, x0 + xi) : xp[xi];
                if (v > m || v != v) m = v; /* NaN propagates */
                sum += v;
                valid++;
              }
            }
          }
          float r;
          if (is_max)
            r = m;
          else
            r = sum / (float)(incl ? padded : valid);
          int64_t yi = (o0 * q.out[1] + o1) * q.out[2] + o2;
          if (q8) /* no window lies wholly in the padding (pads < kernel,
                   * ceil-mode windows starting there are dropped); were
                   * one to, -inf saturates to the lowest value */
            st_i(c->out[0], Y->dtype, y0 + yi,
                 valid ? (int64_t)r
                       : (Y->dtype == DM_ONNX_UINT8 ? 0 : INT8_MIN));
          else
            yp[yi] = r;
        }
  }
  return DM_OK;
}

static dm_err k_global_pool(const kc *c, bool is_max) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  if (!all_f32(X, Y)) return bad_dtype(c, X);
  if (X->rank < 2)
    return nerr(c->eb, DM_FORMAT, c->n, "input rank %d < 2", X->rank);
  int64_t NC = X->dims[0] * X->dims[1], S = prod(X->dims, 2, X->rank);
  if (Y->numel != NC)
    return nerr(c->eb, DM_FORMAT, c->n, "output has %" PRId64 " elements",
                Y->numel);
  const float *x = c->in[0];
  float *y = c->out[0];
  for (int64_t i = 0; i < NC; i++) {
    const float *p = x + i * S;
    float m = -INFINITY, s = 0.0f;
    for (int64_t j = 0; j < S; j++) {
      if (p[j] > m || p[j] != p[j]) m = p[j];
      s += p[j];
    }
    y[i] = is_max ? m : s / (float)S;
  }
  return DM_OK;
}

/* ---------- normalisations ---------- */

static dm_err k_batchnorm(const kc *c) {
  dm_err rc = need(c, 5, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  if (c->n->n_out > 1)
    return nerr(c->eb, DM_UNSUPPORTED, c->n, "training-mode outputs");
  if (!all_f32(X, Y)) return bad_dtype(c, X);
  if (X->rank < 2)
    return nerr(c->eb, DM_FORMAT, c->n, "input rank %d < 2", X->rank);
  int64_t N = X->dims[0], C = X->dims[1], S = prod(X->dims, 2, X->rank);
  for (int i = 1; i < 5; i++)
    if (rin(c, i)->dtype != DM_ONNX_FLOAT || rin(c, i)->numel != C)
      return nerr(c->eb, DM_FORMAT, c->n,
                  "input %d must hold %" PRId64 " floats", i, C);
  const float *x = c->in[0], *sc = c->in[1], *bi = c->in[2], *mu = c->in[3],
              *var = c->in[4];
  float *y = c->out[0];
  float eps = c->n->p.bn.eps;
  for (int64_t ch = 0; ch < C; ch++) {
    float a = sc[ch] / sqrtf(var[ch] + eps), b = bi[ch] - mu[ch] * a;
    for (int64_t b0 = 0; b0 < N; b0++) {
      const float *p = x + (b0 * C + ch) * S;
      float *q = y + (b0 * C + ch) * S;
      for (int64_t j = 0; j < S; j++)
        q[j] = p[j] * a + b;
    }
  }
  return DM_OK;
}

static dm_err k_instancenorm(const kc *c) {
  dm_err rc = need(c, 3, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  if (!all_f32(X, Y)) return bad_dtype(c, X);
  if (X->rank < 2)
    return nerr(c->eb, DM_FORMAT, c->n, "input rank %d < 2", X->rank);
  int64_t N = X->dims[0], C = X->dims[1], S = prod(X->dims, 2, X->rank);
  for (int i = 1; i < 3; i++)
    if (rin(c, i)->dtype != DM_ONNX_FLOAT || rin(c, i)->numel != C)
      return nerr(c->eb, DM_FORMAT, c->n,
                  "input %d must hold %" PRId64 " floats", i, C);
  const float *x = c->in[0], *sc = c->in[1], *bi = c->in[2];
  float *y = c->out[0];
  float eps = c->n->p.instancenorm.eps;
  for (int64_t b = 0; b < N; b++)
    for (int64_t ch = 0; ch < C; ch++) {
      const float *p = x + (b * C + ch) * S;
      float *q = y + (b * C + ch) * S;
      float mean = 0.0f, var = 0.0f;
      for (int64_t j = 0; j < S; j++)
        mean += p[j];
      mean /= (float)S;
      for (int64_t j = 0; j < S; j++)
        var += (p[j] - mean) * (p[j] - mean);
      var /= (float)S;
      float a = sc[ch] / sqrtf(var + eps);
      for (int64_t j = 0; j < S; j++)
        q[j] = (p[j] - mean) * a + bi[ch];
    }
  return DM_OK;
}

static dm_err k_layernorm(const kc *c) {
  const dm_node *n = c->n;
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0), *S = rin(c, 1);
  const dm_value *B = oin(c, 2);
  if (!all_f32(X, Y) || S->dtype != DM_ONNX_FLOAT ||
      (B && B->dtype != DM_ONNX_FLOAT))
    return bad_dtype(c, X);
  /* optional outputs 1 (Mean) and 2 (InvStdDev): float, one per row */
  float *mean_out = n->n_out > 1 ? c->out[1] : NULL;
  float *inv_out = n->n_out > 2 ? c->out[2] : NULL;
  int ax = n->p.layernorm.axis, r = X->rank;
  if (ax < 0 || ax > r || S->rank > r - ax || (B && B->rank > r - ax))
    return nerr(c->eb, DM_FORMAT, n, "axis %d / scale rank mismatch", ax);
  int64_t outer = prod(X->dims, 0, ax), D = prod(X->dims, ax, r);
  /* scale and bias broadcast over the normalised dims [ax, r) */
  iter sb;
  it_init(&sb, r - ax, X->dims + ax, 2);
  it_bcast(&sb, 0, S->rank, S->dims, 1);
  if (B) it_bcast(&sb, 1, B->rank, B->dims, 1);
  it_finish(&sb);
  const float *x = c->in[0], *sc = c->in[1];
  const float *bi = B ? (const float *)c->in[2] : NULL;
  float *y = c->out[0];
  float eps = n->p.layernorm.eps;
  for (int64_t o = 0; o < outer; o++) {
    const float *p = x + o * D;
    float *q = y + o * D;
    float mean = 0.0f, var = 0.0f;
    for (int64_t j = 0; j < D; j++)
      mean += p[j];
    mean /= (float)D;
    for (int64_t j = 0; j < D; j++)
      var += (p[j] - mean) * (p[j] - mean);
    var /= (float)D;
    float inv = 1.0f / sqrtf(var + eps);
    if (mean_out) mean_out[o] = mean;
    if (inv_out) inv_out[o] = inv;
    it_reset(&sb);
    for (int64_t a = 0; a < sb.outer; a++, it_step(&sb))
      for (int64_t i = 0; i < sb.inner; i++) {
        int64_t j = a * sb.inner + i;
        float v = (p[j] - mean) * inv * sc[sb.off[0] + i * sb.ist[0]];
        if (bi) v += bi[sb.off[1] + i * sb.ist[1]];
        q[j] = v;
      }
  }
  return DM_OK;
}

static dm_err k_lrn(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  if (!all_f32(X, Y)) return bad_dtype(c, X);
  if (X->rank < 2 || c->n->p.lrn.size < 1)
    return nerr(c->eb, DM_FORMAT, c->n, "rank %d / size", X->rank);
  int64_t N = X->dims[0], C = X->dims[1], S = prod(X->dims, 2, X->rank);
  int64_t size = c->n->p.lrn.size;
  int64_t lo_off = (size - 1) / 2, hi_off = size / 2; /* floor, ceil */
  float alpha = c->n->p.lrn.alpha, beta = c->n->p.lrn.beta,
        bias = c->n->p.lrn.bias;
  const float *x = c->in[0];
  float *y = c->out[0];
  for (int64_t b = 0; b < N; b++)
    for (int64_t ch = 0; ch < C; ch++) {
      int64_t c0 = ch - lo_off < 0 ? 0 : ch - lo_off;
      int64_t c1 = ch + hi_off > C - 1 ? C - 1 : ch + hi_off;
      for (int64_t j = 0; j < S; j++) {
        float sq = 0.0f;
        for (int64_t k = c0; k <= c1; k++) {
          float v = x[(b * C + k) * S + j];
          sq += v * v;
        }
        y[(b * C + ch) * S + j] = x[(b * C + ch) * S + j] /
                                  powf(bias + alpha / (float)size * sq, beta);
      }
    }
  return DM_OK;
}

static dm_err k_prelu(const kc *c) {
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *S = rin(c, 1), *Y = rout(c, 0);
  if (!all_f32(X, S) || Y->dtype != DM_ONNX_FLOAT) return bad_dtype(c, X);
  if (S->rank > X->rank || Y->numel != X->numel)
    return nerr(c->eb, DM_FORMAT, c->n, "slope does not broadcast to X");
  iter it;
  it_init(&it, X->rank, X->dims, 1);
  it_bcast(&it, 0, S->rank, S->dims, 1);
  it_finish(&it);
  const float *x = c->in[0], *s = c->in[1];
  float *y = c->out[0];
  for (int64_t o = 0; o < it.outer; o++, it_step(&it))
    for (int64_t i = 0; i < it.inner; i++) {
      int64_t j = o * it.inner + i;
      float v = x[j];
      y[j] = v < 0.0f ? s[it.off[0] + i * it.ist[0]] * v : v;
    }
  return DM_OK;
}

/* ---------- unary ---------- */

static dm_err k_unary(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  const dm_act *a = &c->n->p.unary;
  dm_unary k = a->kind;
  if (Y->numel != X->numel)
    return nerr(c->eb, DM_FORMAT, c->n, "output size differs from input");
  int64_t cnt = X->numel;
  if (k == DM_UNARY_NOT) {
    if (X->dtype != DM_ONNX_BOOL || Y->dtype != DM_ONNX_BOOL)
      return bad_dtype(c, X);
    const uint8_t *x = c->in[0];
    uint8_t *y = c->out[0];
    for (int64_t i = 0; i < cnt; i++)
      y[i] = (uint8_t)!x[i];
    return DM_OK;
  }
  if (X->dtype != Y->dtype) return bad_dtype(c, Y);
  if (X->dtype == DM_ONNX_FLOAT && act_is_float(k)) {
    const float *x = c->in[0];
    float *y = c->out[0];
    for (int64_t i = 0; i < cnt; i++)
      y[i] = act_f32(a, x[i]);
    return DM_OK;
  }
  if ((k == DM_UNARY_NEG || k == DM_UNARY_ABS || k == DM_UNARY_SIGN) &&
      (X->dtype == DM_ONNX_INT32 || X->dtype == DM_ONNX_INT64 ||
       X->dtype == DM_ONNX_INT8 || X->dtype == DM_ONNX_INT16)) {
    for (int64_t i = 0; i < cnt; i++) {
      int64_t v = ld_i(c->in[0], X->dtype, i);
      /* negation on unsigned: INT_MIN wraps instead of overflowing */
      int64_t neg = (int64_t)(0u - (uint64_t)v);
      int64_t r = k == DM_UNARY_NEG   ? neg
                  : k == DM_UNARY_ABS ? (v < 0 ? neg : v)
                                      : (v > 0) - (v < 0);
      st_i(c->out[0], Y->dtype, i, r);
    }
    return DM_OK;
  }
  return nerr(c->eb, DM_UNSUPPORTED, c->n, "%s on %s", unary_name(k),
              dm_onnx_dtype_name(X->dtype));
}

/* ---------- binary ---------- */

/* Exhaustive on purpose (no default): a new dm_binary kind must be
 * classified here before it can run. */
typedef enum { BIN_ARITH, BIN_CMP, BIN_LOGIC, BIN_UNKNOWN } bin_class;
static bin_class bin_classify(dm_binary k) {
  switch (k) {
  case DM_BINARY_ADD:
  case DM_BINARY_SUB:
  case DM_BINARY_MUL:
  case DM_BINARY_DIV:
  case DM_BINARY_POW:
  case DM_BINARY_MAX:
  case DM_BINARY_MIN:
  case DM_BINARY_MOD: return BIN_ARITH;
  case DM_BINARY_EQUAL:
  case DM_BINARY_LESS:
  case DM_BINARY_GREATER:
  case DM_BINARY_LESSEQ:
  case DM_BINARY_GREATEREQ: return BIN_CMP;
  case DM_BINARY_AND:
  case DM_BINARY_OR:
  case DM_BINARY_XOR: return BIN_LOGIC;
  case DM_BINARY_COUNT: break;
  }
  return BIN_UNKNOWN;
}
static bool is_cmp(dm_binary k) { return bin_classify(k) == BIN_CMP; }
static bool is_logic(dm_binary k) { return bin_classify(k) == BIN_LOGIC; }

/* One broadcast row of a float32 binary op: y[i] = a[i*sa] op b[i*sb].
 * The switches below have no default: adding a dm_binary kind fails the
 * build (-Wswitch) until every kernel handles or rejects it. */
static void bin_f32_row(dm_binary k, const float *a, int64_t sa, const float *b,
                        int64_t sb, float *y, int64_t cnt) {
#define ROW(EXPR)                                                              \
  for (int64_t i = 0; i < cnt; i++) {                                          \
    float u = a[i * sa], v = b[i * sb];                                        \
    y[i] = (EXPR);                                                             \
  }                                                                            \
  break
  switch (k) {
  case DM_BINARY_ADD: ROW(u + v);
  case DM_BINARY_SUB: ROW(u - v);
  case DM_BINARY_MUL: ROW(u * v);
  case DM_BINARY_DIV: ROW(u / v);
  case DM_BINARY_POW: ROW(powf(u, v));
  case DM_BINARY_MAX: ROW(u > v || u != u ? u : v); /* NaN propagates */
  case DM_BINARY_MIN: ROW(u < v || u != u ? u : v);
  case DM_BINARY_MOD: ROW(fmodf(u, v)); /* float Mod requires fmod=1 */
  case DM_BINARY_EQUAL:
  case DM_BINARY_LESS:
  case DM_BINARY_GREATER:
  case DM_BINARY_LESSEQ:
  case DM_BINARY_GREATEREQ:
  case DM_BINARY_AND:
  case DM_BINARY_OR:
  case DM_BINARY_XOR:
  case DM_BINARY_COUNT: break;
  }
#undef ROW
}

static void cmp_f32_row(dm_binary k, const float *a, int64_t sa, const float *b,
                        int64_t sb, uint8_t *y, int64_t cnt) {
#define ROW(EXPR)                                                              \
  for (int64_t i = 0; i < cnt; i++) {                                          \
    float u = a[i * sa], v = b[i * sb];                                        \
    y[i] = (uint8_t)(EXPR);                                                    \
  }                                                                            \
  break
  switch (k) {
  case DM_BINARY_EQUAL: ROW(u == v);
  case DM_BINARY_LESS: ROW(u < v);
  case DM_BINARY_GREATER: ROW(u > v);
  case DM_BINARY_LESSEQ: ROW(u <= v);
  case DM_BINARY_GREATEREQ: ROW(u >= v);
  case DM_BINARY_ADD:
  case DM_BINARY_SUB:
  case DM_BINARY_MUL:
  case DM_BINARY_DIV:
  case DM_BINARY_POW:
  case DM_BINARY_MAX:
  case DM_BINARY_MIN:
  case DM_BINARY_MOD:
  case DM_BINARY_AND:
  case DM_BINARY_OR:
  case DM_BINARY_XOR:
  case DM_BINARY_COUNT: break;
  }
#undef ROW
}

/* Scalar double op (float64 and mixed-dtype Pow). */
static double bin_d(dm_binary k, double u, double v) {
  switch (k) {
  case DM_BINARY_ADD: return u + v;
  case DM_BINARY_SUB: return u - v;
  case DM_BINARY_MUL: return u * v;
  case DM_BINARY_DIV: return u / v;
  case DM_BINARY_POW: return pow(u, v);
  case DM_BINARY_MAX: return u > v || u != u ? u : v;
  case DM_BINARY_MIN: return u < v || u != u ? u : v;
  case DM_BINARY_MOD: return fmod(u, v);
  case DM_BINARY_EQUAL: return u == v;
  case DM_BINARY_LESS: return u < v;
  case DM_BINARY_GREATER: return u > v;
  case DM_BINARY_LESSEQ: return u <= v;
  case DM_BINARY_GREATEREQ: return u >= v;
  case DM_BINARY_AND:
  case DM_BINARY_OR:
  case DM_BINARY_XOR:
  case DM_BINARY_COUNT: break;
  }
  return NAN;
}

/* Integer power by squaring, wrapping; negative exponents truncate 1/u^-v. */
static int64_t ipow(int64_t u, int64_t v) {
  if (v < 0) return u == 1 ? 1 : u == -1 ? ((v & 1) ? -1 : 1) : 0;
  uint64_t r = 1, b = (uint64_t)u;
  uint64_t e = (uint64_t)v;
  while (e) {
    if (e & 1) r *= b;
    b *= b;
    e >>= 1;
  }
  return (int64_t)r;
}

/* Scalar integer op, wrapping.  Returns false on division by zero. */
static bool bin_i(dm_binary k, bool c_fmod, int64_t u, int64_t v, int64_t *r) {
  uint64_t uu = (uint64_t)u, uv = (uint64_t)v;
  switch (k) {
  case DM_BINARY_ADD: *r = (int64_t)(uu + uv); return true;
  case DM_BINARY_SUB: *r = (int64_t)(uu - uv); return true;
  case DM_BINARY_MUL: *r = (int64_t)(uu * uv); return true;
  case DM_BINARY_DIV: /* truncates toward zero, like C */
    if (v == 0) return false;
    *r = (u == INT64_MIN && v == -1) ? INT64_MIN : u / v;
    return true;
  case DM_BINARY_MOD: {
    if (v == 0) return false;
    int64_t m = (v == -1) ? 0 : u % v; /* sign of the dividend */
    if (!c_fmod && m != 0 && ((m < 0) != (v < 0))) m += v; /* of divisor */
    *r = m;
    return true;
  }
  case DM_BINARY_POW: *r = ipow(u, v); return true;
  case DM_BINARY_MAX: *r = u > v ? u : v; return true;
  case DM_BINARY_MIN: *r = u < v ? u : v; return true;
  case DM_BINARY_EQUAL: *r = u == v; return true;
  case DM_BINARY_LESS: *r = u < v; return true;
  case DM_BINARY_GREATER: *r = u > v; return true;
  case DM_BINARY_LESSEQ: *r = u <= v; return true;
  case DM_BINARY_GREATEREQ: *r = u >= v; return true;
  case DM_BINARY_AND: *r = (u != 0) & (v != 0); return true;
  case DM_BINARY_OR: *r = (u != 0) | (v != 0); return true;
  case DM_BINARY_XOR: *r = (u != 0) ^ (v != 0); return true;
  case DM_BINARY_COUNT: break;
  }
  *r = 0;
  return true;
}

static dm_err k_binary(const kc *c) {
  const dm_node *n = c->n;
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *A = rin(c, 0), *B = rin(c, 1), *Y = rout(c, 0);
  dm_binary k = n->p.binary.kind;
  int32_t ta = A->dtype, tb = B->dtype, ty = Y->dtype;
  if (bin_classify(k) == BIN_UNKNOWN)
    return nerr(c->eb, DM_UNSUPPORTED, n, "binary kind %d", (int)k);
  bool ok_types;
  if (is_logic(k))
    ok_types = ta == DM_ONNX_BOOL && tb == DM_ONNX_BOOL && ty == DM_ONNX_BOOL;
  else if (is_cmp(k))
    ok_types =
        ta == tb && ty == DM_ONNX_BOOL && (is_real(ta) || is_i64able(ta));
  else if (k == DM_BINARY_POW)
    ok_types = ty == ta && (is_real(ta) || is_i64able(ta)) &&
               (is_real(tb) || is_i64able(tb)) && ta != DM_ONNX_BOOL;
  else
    ok_types = ta == tb && ty == ta && ta != DM_ONNX_BOOL &&
               (is_real(ta) || is_i64able(ta));
  if (!ok_types)
    return nerr(c->eb, DM_UNSUPPORTED, n, "%s on %s, %s -> %s", binary_name(k),
                dm_onnx_dtype_name(ta), dm_onnx_dtype_name(tb),
                dm_onnx_dtype_name(ty));
  if (A->rank > Y->rank || B->rank > Y->rank)
    return nerr(c->eb, DM_FORMAT, n, "operand rank exceeds output rank");
  iter it;
  it_init(&it, Y->rank, Y->dims, 2);
  it_bcast(&it, 0, A->rank, A->dims, 1);
  it_bcast(&it, 1, B->rank, B->dims, 1);
  it_finish(&it);
  const void *pa = c->in[0], *pb = c->in[1];
  void *py = c->out[0];
  if (ta == DM_ONNX_FLOAT && tb == DM_ONNX_FLOAT) {
    for (int64_t o = 0; o < it.outer; o++, it_step(&it)) {
      const float *a = (const float *)pa + it.off[0];
      const float *b = (const float *)pb + it.off[1];
      if (is_cmp(k))
        cmp_f32_row(k, a, it.ist[0], b, it.ist[1], (uint8_t *)py + o * it.inner,
                    it.inner);
      else
        bin_f32_row(k, a, it.ist[0], b, it.ist[1], (float *)py + o * it.inner,
                    it.inner);
    }
    return DM_OK;
  }
  bool real = is_real(ta) || is_real(tb);
  bool c_fmod = n->p.binary.fmod;
  for (int64_t o = 0; o < it.outer; o++, it_step(&it))
    for (int64_t i = 0; i < it.inner; i++) {
      int64_t ia = it.off[0] + i * it.ist[0], ib = it.off[1] + i * it.ist[1];
      int64_t iy = o * it.inner + i;
      if (real) {
        st_d(py, ty, iy, bin_d(k, ld_d(pa, ta, ia), ld_d(pb, tb, ib)));
      } else {
        int64_t r;
        int64_t u = ld_i(pa, ta, ia), v = ld_i(pb, tb, ib);
        if (!bin_i(k, c_fmod, u, v, &r))
          return nerr(c->eb, DM_RANGE, n,
                      "integer %s by zero (%" PRId64 " / 0)", binary_name(k),
                      u);
        st_i(py, ty, iy, r);
      }
    }
  return DM_OK;
}

static dm_err k_where(const kc *c) {
  dm_err rc = need(c, 3, 1);
  if (rc) return rc;
  const dm_value *C = rin(c, 0), *X = rin(c, 1), *Z = rin(c, 2),
                 *Y = rout(c, 0);
  int64_t es = esize(Y->dtype);
  if (C->dtype != DM_ONNX_BOOL || X->dtype != Y->dtype ||
      Z->dtype != Y->dtype || !es)
    return nerr(c->eb, DM_UNSUPPORTED, c->n, "Where on %s, %s, %s",
                dm_onnx_dtype_name(C->dtype), dm_onnx_dtype_name(X->dtype),
                dm_onnx_dtype_name(Z->dtype));
  if (C->rank > Y->rank || X->rank > Y->rank || Z->rank > Y->rank)
    return nerr(c->eb, DM_FORMAT, c->n, "operand rank exceeds output rank");
  iter it;
  it_init(&it, Y->rank, Y->dims, 3);
  it_bcast(&it, 0, C->rank, C->dims, 1);
  it_bcast(&it, 1, X->rank, X->dims, 1);
  it_bcast(&it, 2, Z->rank, Z->dims, 1);
  it_finish(&it);
  const uint8_t *cond = c->in[0];
  const char *x = c->in[1], *z = c->in[2];
  char *y = c->out[0];
  for (int64_t o = 0; o < it.outer; o++, it_step(&it))
    for (int64_t i = 0; i < it.inner; i++) {
      const char *src = cond[it.off[0] + i * it.ist[0]]
                            ? x + (it.off[1] + i * it.ist[1]) * es
                            : z + (it.off[2] + i * it.ist[2]) * es;
      cp_elem(y + (o * it.inner + i) * es, src, es);
    }
  return DM_OK;
}

/* ---------- reductions ---------- */

static dm_err k_reduce(const kc *c) {
  const dm_node *n = c->n;
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  dm_reduce k = n->p.reduce.kind;
  uint32_t mask = n->p.reduce.axes_mask;
  bool fl = X->dtype == DM_ONNX_FLOAT;
  bool in = (X->dtype == DM_ONNX_INT64 || X->dtype == DM_ONNX_INT32) &&
            (k == DM_REDUCE_SUM || k == DM_REDUCE_MAX || k == DM_REDUCE_MIN ||
             k == DM_REDUCE_PROD);
  if ((!fl && !in) || Y->dtype != X->dtype || (unsigned)k >= DM_REDUCE_COUNT)
    return nerr(c->eb, DM_UNSUPPORTED, n, "%s on %s", reduce_name(k),
                dm_onnx_dtype_name(X->dtype));
  if (X->rank < 32 && (mask >> X->rank) != 0)
    return nerr(c->eb, DM_FORMAT, n, "axes mask 0x%x beyond rank %d",
                (unsigned)mask, X->rank);
  int64_t xs[DM_MAX_RANK], kd[DM_MAX_RANK], rd[DM_MAX_RANK];
  row_strides(X, xs);
  iter ko, ro; /* kept dims (output order) and reduced dims */
  int nk = 0, nr = 0;
  for (int d = 0; d < X->rank; d++) {
    if (mask & (1u << d))
      rd[nr++] = X->dims[d];
    else
      kd[nk++] = X->dims[d];
  }
  it_init(&ko, nk, kd, 1);
  it_init(&ro, nr, rd, 1);
  nk = nr = 0;
  for (int d = 0; d < X->rank; d++) {
    if (mask & (1u << d))
      ro.st[0][nr++] = xs[d];
    else
      ko.st[0][nk++] = xs[d];
  }
  it_finish(&ko);
  it_finish(&ro);
  if (ko.total != Y->numel)
    return nerr(c->eb, DM_FORMAT, n,
                "output has %" PRId64 " elements, "
                "expected %" PRId64,
                Y->numel, ko.total);
  int64_t cnt = ro.total;
  for (int64_t o = 0; o < ko.outer; o++, it_step(&ko))
    for (int64_t i = 0; i < ko.inner; i++) {
      int64_t base = ko.off[0] + i * ko.ist[0], iy = o * ko.inner + i;
      if (fl) {
        const float *x = (const float *)c->in[0] + base;
        float acc = k == DM_REDUCE_PROD                              ? 1.0f
                    : k == DM_REDUCE_MAX || k == DM_REDUCE_LOGSUMEXP ? -INFINITY
                    : k == DM_REDUCE_MIN                             ? INFINITY
                                                                     : 0.0f;
        it_reset(&ro);
        for (int64_t a = 0; a < ro.outer; a++, it_step(&ro))
          for (int64_t b = 0; b < ro.inner; b++) {
            float v = x[ro.off[0] + b * ro.ist[0]];
            switch (k) {
            case DM_REDUCE_MAX:
            case DM_REDUCE_LOGSUMEXP:
              if (v > acc || v != v) acc = v;
              break;
            case DM_REDUCE_MIN:
              if (v < acc || v != v) acc = v;
              break;
            case DM_REDUCE_PROD: acc *= v; break;
            case DM_REDUCE_L1: acc += fabsf(v); break;
            case DM_REDUCE_L2:
            case DM_REDUCE_SUMSQUARE: acc += v * v; break;
            case DM_REDUCE_SUM:
            case DM_REDUCE_MEAN: acc += v; break;
            case DM_REDUCE_COUNT: break; /* no default: see -Wswitch */
            }
          }
        if (k == DM_REDUCE_MEAN)
          acc /= (float)cnt;
        else if (k == DM_REDUCE_L2)
          acc = sqrtf(acc);
        else if (k == DM_REDUCE_LOGSUMEXP && isfinite(acc)) {
          float mx = acc, s = 0.0f;
          it_reset(&ro);
          for (int64_t a = 0; a < ro.outer; a++, it_step(&ro))
            for (int64_t b = 0; b < ro.inner; b++)
              s += expf(x[ro.off[0] + b * ro.ist[0]] - mx);
          acc = mx + logf(s);
        }
        ((float *)c->out[0])[iy] = acc;
      } else {
        bool i32 = X->dtype == DM_ONNX_INT32;
        int64_t acc = k == DM_REDUCE_PROD  ? 1
                      : k == DM_REDUCE_MAX ? (i32 ? INT32_MIN : INT64_MIN)
                      : k == DM_REDUCE_MIN ? (i32 ? INT32_MAX : INT64_MAX)
                                           : 0;
        it_reset(&ro);
        for (int64_t a = 0; a < ro.outer; a++, it_step(&ro))
          for (int64_t b = 0; b < ro.inner; b++) {
            int64_t v =
                ld_i(c->in[0], X->dtype, base + ro.off[0] + b * ro.ist[0]);
            if (k == DM_REDUCE_MAX)
              acc = v > acc ? v : acc;
            else if (k == DM_REDUCE_MIN)
              acc = v < acc ? v : acc;
            else if (k == DM_REDUCE_PROD)
              acc = (int64_t)((uint64_t)acc * (uint64_t)v);
            else
              acc = (int64_t)((uint64_t)acc + (uint64_t)v);
          }
        st_i(c->out[0], Y->dtype, iy, acc);
      }
    }
  return DM_OK;
}

/* ---------- softmax ---------- */

static dm_err k_softmax(const kc *c) {
  const dm_node *n = c->n;
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  if (!all_f32(X, Y)) return bad_dtype(c, X);
  int ax = n->p.softmax.axis, r = X->rank;
  if (r == 0)
    ax = 0;
  else if (ax < 0 || ax >= r)
    return nerr(c->eb, DM_FORMAT, n, "axis %d out of range", ax);
  int64_t outer = prod(X->dims, 0, ax), A, inner;
  if (n->p.softmax.legacy) { /* coerced to 2-D [outer, prod(dims[ax:])] */
    A = prod(X->dims, ax, r);
    inner = 1;
  } else {
    A = r ? X->dims[ax] : 1;
    inner = prod(X->dims, ax + 1, r);
  }
  const float *x = c->in[0];
  float *y = c->out[0];
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const float *p = x + o * A * inner + i;
      float *q = y + o * A * inner + i;
      float mx = -INFINITY, s = 0.0f;
      for (int64_t j = 0; j < A; j++)
        if (p[j * inner] > mx) mx = p[j * inner];
      if (n->p.softmax.log) {
        for (int64_t j = 0; j < A; j++)
          s += expf(p[j * inner] - mx);
        float ls = logf(s);
        for (int64_t j = 0; j < A; j++)
          q[j * inner] = p[j * inner] - mx - ls;
      } else {
        for (int64_t j = 0; j < A; j++) {
          float e = expf(p[j * inner] - mx);
          q[j * inner] = e;
          s += e;
        }
        for (int64_t j = 0; j < A; j++)
          q[j * inner] /= s;
      }
    }
  return DM_OK;
}

/* ---------- Gemm / MatMul ---------- */

static dm_err k_gemm(const kc *c) {
  const dm_node *n = c->n;
  if (n->q) return k_qgemm(c);
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *A = rin(c, 0), *B = rin(c, 1), *Y = rout(c, 0);
  const dm_value *C = oin(c, 2);
  if (!all_f32(A, B) || Y->dtype != DM_ONNX_FLOAT ||
      (C && C->dtype != DM_ONNX_FLOAT))
    return bad_dtype(c, A->dtype != DM_ONNX_FLOAT ? A : B);
  bool ta = n->p.gemm.trans_a, tb = n->p.gemm.trans_b;
  if (A->rank != 2 || B->rank != 2 || Y->rank != 2 || (C && C->rank > 2))
    return nerr(c->eb, DM_FORMAT, n, "Gemm operands must be 2-D");
  int64_t M = Y->dims[0], N = Y->dims[1], K = ta ? A->dims[0] : A->dims[1];
  if ((ta ? A->dims[1] : A->dims[0]) != M ||
      (tb ? B->dims[1] : B->dims[0]) != K ||
      (tb ? B->dims[0] : B->dims[1]) != N)
    return nerr(c->eb, DM_FORMAT, n, "inconsistent Gemm shapes");
  const float *a = c->in[0], *b = c->in[1];
  float *y = c->out[0];
  float alpha = n->p.gemm.alpha, beta = n->p.gemm.beta;
  for (int64_t i = 0; i < M; i++) {
    float *yr = y + i * N;
    if (!tb) { /* y[i,:] += A'[i,k] * B[k,:], contiguous rows of B */
      for (int64_t j = 0; j < N; j++)
        yr[j] = 0.0f;
      for (int64_t k = 0; k < K; k++) {
        float av = ta ? a[k * M + i] : a[i * K + k];
        const float *br = b + k * N;
        for (int64_t j = 0; j < N; j++)
          yr[j] += av * br[j];
      }
    } else { /* dot with contiguous rows of B (torch Linear layout) */
      for (int64_t j = 0; j < N; j++) {
        const float *br = b + j * K;
        float s = 0.0f;
        if (ta)
          for (int64_t k = 0; k < K; k++)
            s += a[k * M + i] * br[k];
        else
          for (int64_t k = 0; k < K; k++)
            s += a[i * K + k] * br[k];
        yr[j] = s;
      }
    }
    for (int64_t j = 0; j < N; j++)
      yr[j] *= alpha;
  }
  if (C && beta != 0.0f) { /* C broadcast unidirectionally to [M, N] */
    const float *cp = c->in[2];
    iter it;
    it_init(&it, 2, Y->dims, 1);
    it_bcast(&it, 0, C->rank, C->dims, 1);
    it_finish(&it);
    for (int64_t o = 0; o < it.outer; o++, it_step(&it))
      for (int64_t i = 0; i < it.inner; i++)
        y[o * it.inner + i] += beta * cp[it.off[0] + i * it.ist[0]];
  }
  return DM_OK;
}

static dm_err k_matmul(const kc *c) {
  const dm_node *n = c->n;
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *A = rin(c, 0), *B = rin(c, 1), *Y = rout(c, 0);
  if (!all_f32(A, B) || Y->dtype != DM_ONNX_FLOAT)
    return nerr(c->eb, DM_UNSUPPORTED, n, "MatMul on %s x %s",
                dm_onnx_dtype_name(A->dtype), dm_onnx_dtype_name(B->dtype));
  int ra = A->rank, rb = B->rank;
  if (ra < 1 || rb < 1) return nerr(c->eb, DM_FORMAT, n, "MatMul of a scalar");
  /* numpy: a 1-D A is [1,K] and a 1-D B is [K,1]; those dims are dropped */
  int64_t M = ra == 1 ? 1 : A->dims[ra - 2], K = A->dims[ra - 1];
  int64_t N = rb == 1 ? 1 : B->dims[rb - 1];
  int64_t KB = rb == 1 ? B->dims[0] : B->dims[rb - 2];
  int bra = ra > 2 ? ra - 2 : 0, brb = rb > 2 ? rb - 2 : 0;
  int bro = Y->rank - (ra > 1) - (rb > 1);
  if (KB != K || bro < 0 || bra > bro || brb > bro ||
      (ra > 1 && Y->dims[Y->rank - 1 - (rb > 1)] != M) ||
      (rb > 1 && Y->dims[Y->rank - 1] != N))
    return nerr(c->eb, DM_FORMAT, n, "inconsistent MatMul shapes");
  iter it; /* batch dims, broadcast */
  it_init(&it, bro, Y->dims, 2);
  it_bcast(&it, 0, bra, A->dims, M * K);
  it_bcast(&it, 1, brb, B->dims, K * N);
  it_finish(&it);
  if (it.total * M * N != Y->numel)
    return nerr(c->eb, DM_FORMAT, n, "inconsistent MatMul output size");
  const float *a = c->in[0], *b = c->in[1];
  float *y = c->out[0];
  for (int64_t o = 0; o < it.outer; o++, it_step(&it))
    for (int64_t t = 0; t < it.inner; t++) {
      const float *ab = a + it.off[0] + t * it.ist[0];
      const float *bb = b + it.off[1] + t * it.ist[1];
      float *yb = y + (o * it.inner + t) * M * N;
      for (int64_t i = 0; i < M; i++) {
        float *yr = yb + i * N;
        for (int64_t j = 0; j < N; j++)
          yr[j] = 0.0f;
        for (int64_t k = 0; k < K; k++) {
          float av = ab[i * K + k];
          const float *br = bb + k * N;
          for (int64_t j = 0; j < N; j++)
            yr[j] += av * br[j];
        }
      }
    }
  return DM_OK;
}

/* ---------- data movement (dtype-generic by element size) ---------- */

static dm_err k_reshape(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  if (X->nbytes != Y->nbytes || X->dtype != Y->dtype)
    return nerr(c->eb, DM_FORMAT, c->n, "reshape of %zu bytes into %zu",
                X->nbytes, Y->nbytes);
  if (Y->nbytes && c->out[0] != c->in[0])
    memcpy(c->out[0], c->in[0], Y->nbytes);
  return DM_OK;
}

static dm_err k_transpose(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  int64_t es = esize(X->dtype), xs[DM_MAX_RANK];
  if (!es || Y->dtype != X->dtype) return bad_dtype(c, X);
  if (Y->rank != X->rank) return nerr(c->eb, DM_FORMAT, c->n, "rank mismatch");
  row_strides(X, xs);
  iter it;
  it_init(&it, Y->rank, Y->dims, 1);
  for (int d = 0; d < Y->rank; d++) {
    int64_t p = c->n->p.transpose.perm[d];
    if (p < 0 || p >= X->rank || X->dims[p] != Y->dims[d])
      return nerr(c->eb, DM_FORMAT, c->n, "bad perm[%d]=%" PRId64, d, p);
    it.st[0][d] = xs[p];
  }
  it_finish(&it);
  strided_copy(c->out[0], c->in[0], 0, es, &it);
  return DM_OK;
}

static dm_err k_concat(const kc *c) {
  const dm_node *n = c->n;
  dm_err rc = need(c, n->n_in, 1);
  if (rc) return rc;
  const dm_value *Y = rout(c, 0);
  int ax = n->p.concat.axis;
  int64_t es = esize(Y->dtype);
  if (!es || ax < 0 || ax >= Y->rank)
    return nerr(c->eb, DM_FORMAT, n, "axis %d / dtype %s", ax,
                dm_onnx_dtype_name(Y->dtype));
  int64_t outer = prod(Y->dims, 0, ax), inner = prod(Y->dims, ax + 1, Y->rank);
  int64_t tot = 0;
  for (int i = 0; i < n->n_in; i++) {
    const dm_value *X = rin(c, i);
    if (X->dtype != Y->dtype || X->rank != Y->rank ||
        X->numel != outer * X->dims[ax] * inner)
      return nerr(c->eb, DM_FORMAT, n, "input %d does not fit the output", i);
    tot += X->dims[ax];
  }
  if (tot != Y->dims[ax])
    return nerr(c->eb, DM_FORMAT, n, "inputs sum to %" PRId64 " on axis %d",
                tot, ax);
  char *y = c->out[0];
  for (int64_t o = 0; o < outer; o++)
    for (int i = 0; i < n->n_in; i++) {
      int64_t blk = rin(c, i)->dims[ax] * inner * es;
      if (blk) memcpy(y, (const char *)c->in[i] + o * blk, (size_t)blk);
      y += blk;
    }
  return DM_OK;
}

static dm_err k_split(const kc *c) {
  const dm_node *n = c->n;
  dm_err rc = need(c, 1, n->n_out); /* every output: sizes come from them */
  if (rc) return rc;
  const dm_value *X = rin(c, 0);
  int ax = n->p.split.axis;
  int64_t es = esize(X->dtype);
  if (!es || ax < 0 || ax >= X->rank)
    return nerr(c->eb, DM_FORMAT, n, "axis %d / dtype %s", ax,
                dm_onnx_dtype_name(X->dtype));
  int64_t outer = prod(X->dims, 0, ax), inner = prod(X->dims, ax + 1, X->rank);
  int64_t tot = 0;
  for (int j = 0; j < n->n_out; j++) {
    const dm_value *Y = rout(c, j);
    if (Y->dtype != X->dtype || Y->rank != X->rank ||
        Y->numel != outer * Y->dims[ax] * inner)
      return nerr(c->eb, DM_FORMAT, n, "output %d does not fit the input", j);
    tot += Y->dims[ax];
  }
  if (tot != X->dims[ax])
    return nerr(c->eb, DM_FORMAT, n, "outputs sum to %" PRId64 " on axis %d",
                tot, ax);
  const char *x = c->in[0];
  for (int64_t o = 0; o < outer; o++)
    for (int j = 0; j < n->n_out; j++) {
      int64_t blk = rout(c, j)->dims[ax] * inner * es;
      if (blk) memcpy((char *)c->out[j] + o * blk, x, (size_t)blk);
      x += blk;
    }
  return DM_OK;
}

static dm_err k_slice(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  int64_t es = esize(X->dtype), xs[DM_MAX_RANK], base = 0;
  if (!es || Y->dtype != X->dtype) return bad_dtype(c, X);
  if (Y->rank != X->rank) return nerr(c->eb, DM_FORMAT, c->n, "rank mismatch");
  row_strides(X, xs);
  iter it;
  it_init(&it, Y->rank, Y->dims, 1);
  for (int d = 0; d < X->rank; d++) {
    int64_t s = c->n->p.slice.start[d], st = c->n->p.slice.step[d];
    int64_t last = s + (Y->dims[d] - 1) * st;
    if (Y->dims[d] > 0 &&
        (st == 0 || s < 0 || s >= X->dims[d] || last < 0 || last >= X->dims[d]))
      return nerr(c->eb, DM_RANGE, c->n,
                  "slice start %" PRId64 " step %" PRId64 " count %" PRId64
                  " outside dim %d of size %" PRId64,
                  s, st, Y->dims[d], d, X->dims[d]);
    base += s * xs[d];
    it.st[0][d] = st * xs[d];
  }
  it_finish(&it);
  if (it.total) strided_copy(c->out[0], c->in[0], base, es, &it);
  return DM_OK;
}

/* Maps a padded coordinate to the input, or -1 for the constant. */
static int64_t pad_map(int64_t i, int64_t n, int mode) {
  if (i >= 0 && i < n) return i;
  if (mode == 0 || n <= 0) return -1;
  if (mode == 2) return i < 0 ? 0 : n - 1;
  if (n == 1) return 0;
  int64_t period = 2 * (n - 1); /* reflect without repeating the edge */
  int64_t m = i % period;
  if (m < 0) m += period;
  return m < n ? m : period - m;
}

static dm_err k_pad(const kc *c) {
  const dm_node *n = c->n;
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  int64_t es = esize(X->dtype), xs[DM_MAX_RANK];
  int mode = n->p.pad.mode, r = X->rank;
  if (!es || Y->dtype != X->dtype) return bad_dtype(c, X);
  if (Y->rank != r || mode < 0 || mode > 2)
    return nerr(c->eb, DM_FORMAT, n, "rank/mode mismatch");
  for (int d = 0; d < r; d++) {
    if (Y->dims[d] != X->dims[d] + n->p.pad.pads[d] + n->p.pad.pads[r + d])
      return nerr(c->eb, DM_FORMAT, n, "pads disagree with output dim %d", d);
    if (mode != 0 && X->dims[d] == 0 && Y->numel > 0)
      return nerr(c->eb, DM_RANGE, n, "cannot %s-pad an empty axis",
                  mode == 1 ? "reflect" : "edge");
  }
  if (Y->numel == 0) return DM_OK;
  row_strides(X, xs);
  scalar8 fill = {0};
  st_d(&fill, X->dtype, 0, n->p.pad.value);
  const char *x = c->in[0];
  char *y = c->out[0];
  int64_t idx[DM_MAX_RANK] = {0};
  int64_t inner = r ? Y->dims[r - 1] : 1, outer = inner ? Y->numel / inner : 0;
  for (int64_t o = 0; o < outer; o++) {
    /* outer coordinates -> input offset, or the whole row is constant */
    int64_t off = 0;
    bool konst = false;
    for (int d = 0; d < r - 1; d++) {
      int64_t m = pad_map(idx[d] - n->p.pad.pads[d], X->dims[d], mode);
      if (m < 0)
        konst = true;
      else
        off += m * xs[d];
    }
    char *yr = y + o * inner * es;
    for (int64_t i = 0; i < inner; i++) {
      int64_t m =
          r ? pad_map(i - n->p.pad.pads[r - 1], X->dims[r - 1], mode) : 0;
      if (konst || m < 0)
        cp_elem(yr + i * es, (const char *)&fill, es);
      else
        cp_elem(yr + i * es, x + (off + m) * es, es);
    }
    for (int d = r - 2; d >= 0; d--) {
      if (++idx[d] < Y->dims[d]) break;
      idx[d] = 0;
    }
  }
  return DM_OK;
}

static dm_err k_gather(const kc *c) {
  const dm_node *n = c->n;
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *I = rin(c, 1), *Y = rout(c, 0);
  int ax = n->p.gather.axis;
  int64_t es = esize(X->dtype);
  if (!es || Y->dtype != X->dtype ||
      (I->dtype != DM_ONNX_INT32 && I->dtype != DM_ONNX_INT64))
    return nerr(c->eb, DM_UNSUPPORTED, n, "Gather of %s by %s",
                dm_onnx_dtype_name(X->dtype), dm_onnx_dtype_name(I->dtype));
  if (ax < 0 || ax >= X->rank)
    return nerr(c->eb, DM_FORMAT, n, "axis %d out of range", ax);
  int64_t outer = prod(X->dims, 0, ax), A = X->dims[ax];
  int64_t inner = prod(X->dims, ax + 1, X->rank), ni = I->numel;
  if (Y->numel != outer * ni * inner)
    return nerr(c->eb, DM_FORMAT, n, "output size mismatch");
  for (int64_t j = 0; j < ni; j++) { /* validate before writing anything */
    int64_t v = ld_i(c->in[1], I->dtype, j);
    if (v < -A || v >= A)
      return nerr(c->eb, DM_RANGE, n,
                  "index %" PRId64 " out of range [-%" PRId64 ", %" PRId64
                  ") on axis %d",
                  v, A, A, ax);
  }
  const char *x = c->in[0];
  char *y = c->out[0];
  int64_t blk = inner * es;
  if (blk == 0) return DM_OK;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < ni; j++) {
      int64_t v = ld_i(c->in[1], I->dtype, j);
      if (v < 0) v += A;
      memcpy(y + (o * ni + j) * blk, x + (o * A + v) * blk, (size_t)blk);
    }
  return DM_OK;
}

static dm_err k_expand(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  int64_t es = esize(X->dtype);
  if (!es || Y->dtype != X->dtype) return bad_dtype(c, X);
  if (X->rank > Y->rank)
    return nerr(c->eb, DM_FORMAT, c->n, "input rank exceeds output rank");
  for (int d = 0; d < X->rank; d++) {
    int64_t xd = X->dims[d], yd = Y->dims[d + Y->rank - X->rank];
    if (xd != 1 && xd != yd)
      return nerr(c->eb, DM_FORMAT, c->n, "dim %d does not broadcast", d);
  }
  iter it;
  it_init(&it, Y->rank, Y->dims, 1);
  it_bcast(&it, 0, X->rank, X->dims, 1);
  it_finish(&it);
  strided_copy(c->out[0], c->in[0], 0, es, &it);
  return DM_OK;
}

static dm_err k_tile(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0), *R = oin(c, 1);
  int64_t es = esize(X->dtype), xs[DM_MAX_RANK];
  if (!es || Y->dtype != X->dtype) return bad_dtype(c, X);
  if (Y->rank != X->rank) return nerr(c->eb, DM_FORMAT, c->n, "rank mismatch");
  if (Y->numel == 0) return DM_OK;
  /* out viewed as [rep0, d0, rep1, d1, ...] with strides [0, s0, 0, s1...] */
  int64_t dims[IT_MAXR];
  row_strides(X, xs);
  iter it;
  for (int d = 0; d < X->rank; d++) {
    int64_t rep = Y->dims[d] / X->dims[d]; /* X dims > 0 as Y is nonempty */
    if (rep * X->dims[d] != Y->dims[d] ||
        (R && R->dtype == DM_ONNX_INT64 && R->numel == X->rank &&
         ((const int64_t *)c->in[1])[d] != rep))
      return nerr(c->eb, DM_FORMAT, c->n, "repeats disagree with dim %d", d);
    dims[2 * d] = rep;
    dims[2 * d + 1] = X->dims[d];
  }
  it_init(&it, 2 * X->rank, dims, 1);
  for (int d = 0; d < X->rank; d++)
    it.st[0][2 * d + 1] = xs[d];
  it_finish(&it);
  strided_copy(c->out[0], c->in[0], 0, es, &it);
  return DM_OK;
}

static dm_err k_shape(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  int64_t s = c->n->p.shape.start;
  if (Y->dtype != DM_ONNX_INT64 || s < 0 || s + Y->numel > X->rank ||
      c->n->p.shape.end - s != Y->numel)
    return nerr(c->eb, DM_FORMAT, c->n, "shape slice out of range");
  int64_t *y = c->out[0];
  for (int64_t i = 0; i < Y->numel; i++)
    y[i] = X->dims[s + i];
  return DM_OK;
}

/* ArgMax/ArgMin along one axis; ties go to the first (or, with
 * select_last_index, the last) index; NaN never wins. */
static dm_err k_argmax(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0);
  const dm_node *n = c->n;
  int ax = n->p.argmax.axis;
  int64_t outer = prod(X->dims, 0, ax), D = X->dims[ax],
          inner = prod(X->dims, ax + 1, X->rank);
  int64_t *y = c->out[0];
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t best = 0;
      double bv = 0;
      for (int64_t j = 0; j < D; j++) {
        int64_t at = (o * D + j) * inner + i;
        double v = X->dtype == DM_ONNX_FLOAT ? ((const float *)c->in[0])[at]
                   : X->dtype == DM_ONNX_INT64
                       ? (double)((const int64_t *)c->in[0])[at]
                       : ((const int32_t *)c->in[0])[at];
        bool better;
        if (j == 0)
          better = true;
        else if (n->p.argmax.min)
          better = n->p.argmax.last ? v <= bv : v < bv;
        else
          better = n->p.argmax.last ? v >= bv : v > bv;
        if (better) {
          best = j;
          bv = v;
        }
      }
      y[o * inner + i] = best;
    }
  return DM_OK;
}

static dm_err k_constantofshape(const kc *c) {
  dm_err rc = need(c, 0, 1);
  if (rc) return rc;
  const dm_value *Y = rout(c, 0);
  int64_t es = esize(Y->dtype);
  if (!es || Y->dtype == DM_ONNX_FLOAT16 || Y->dtype == DM_ONNX_BFLOAT16)
    return bad_dtype(c, Y);
  scalar8 v = {0};
  st_d(&v, Y->dtype, 0, c->n->p.constantofshape.value);
  char *y = c->out[0];
  for (int64_t i = 0; i < Y->numel; i++)
    cp_elem(y + i * es, (const char *)&v, es);
  return DM_OK;
}

static dm_err k_range(const kc *c) {
  dm_err rc = need(c, 3, 1);
  if (rc) return rc;
  const dm_value *Y = rout(c, 0);
  int32_t dt = Y->dtype;
  for (int i = 0; i < 3; i++)
    if (rin(c, i)->dtype != dt || rin(c, i)->numel != 1)
      return nerr(c->eb, DM_FORMAT, c->n, "input %d must be a %s scalar", i,
                  dm_onnx_dtype_name(dt));
  if (dt == DM_ONNX_FLOAT) { /* spec: start + i * delta, not accumulated */
    float s = *(const float *)c->in[0], d = *(const float *)c->in[2];
    float *y = c->out[0];
    for (int64_t i = 0; i < Y->numel; i++)
      y[i] = s + (float)i * d;
  } else if (dt == DM_ONNX_DOUBLE) {
    double s = *(const double *)c->in[0], d = *(const double *)c->in[2];
    double *y = c->out[0];
    for (int64_t i = 0; i < Y->numel; i++)
      y[i] = s + (double)i * d;
  } else if (dt == DM_ONNX_INT32 || dt == DM_ONNX_INT64 ||
             dt == DM_ONNX_INT16) {
    uint64_t s = (uint64_t)ld_i(c->in[0], dt, 0);
    uint64_t d = (uint64_t)ld_i(c->in[2], dt, 0);
    for (int64_t i = 0; i < Y->numel; i++)
      st_i(c->out[0], dt, i, (int64_t)(s + (uint64_t)i * d));
  } else {
    return bad_dtype(c, Y);
  }
  return DM_OK;
}

static dm_err k_cast(const kc *c) {
  dm_err rc = need(c, 1, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0);
  int32_t from = X->dtype, to = Y->dtype;
  bool from_ok = is_real(from) || is_i64able(from) || from == DM_ONNX_UINT64;
  bool to_ok = is_real(to) || is_i64able(to) || to == DM_ONNX_UINT64;
  if (!from_ok || !to_ok || to != c->n->p.cast.to || Y->numel != X->numel)
    return nerr(c->eb, DM_UNSUPPORTED, c->n, "Cast from %s to %s",
                dm_onnx_dtype_name(from), dm_onnx_dtype_name(to));
  const void *x = c->in[0];
  void *y = c->out[0];
  if (from == to) {
    if (Y->nbytes && x != y) memcpy(y, x, Y->nbytes);
    return DM_OK;
  }
  for (int64_t i = 0; i < X->numel; i++) {
    if (is_real(from)) {
      st_d(y, to, i, ld_d(x, from, i));
    } else if (from == DM_ONNX_UINT64) {
      uint64_t u = ((const uint64_t *)x)[i];
      if (to == DM_ONNX_FLOAT)
        ((float *)y)[i] = (float)u;
      else if (to == DM_ONNX_DOUBLE)
        ((double *)y)[i] = (double)u;
      else
        st_i(y, to, i, (int64_t)u);
    } else {
      st_i(y, to, i, ld_i(x, from, i)); /* int -> float rounds once */
    }
  }
  return DM_OK;
}

/* ---------- QuantizeLinear / DequantizeLinear ---------- */

/* Channel of element i: per-tensor (axis < 0) -> 0, else (i / inner) % dim
 * where inner is the product of the dims after the axis. */
static void quant_geom(const kc *c, const dm_value *X, int64_t *inner,
                       int64_t *dim) {
  int ax = c->n->p.quant.axis;
  *inner = ax < 0 ? 1 : prod(X->dims, ax + 1, X->rank);
  *dim = ax < 0 ? 1 : X->dims[ax];
}

/* y = saturate(round_half_even(x / scale) + zp), computed as ONNX's
 * reference does: float32 division, then rint (the default rounding mode is
 * to nearest, ties to even; nearbyintf keeps the inexact flag quiet), then the
 * zero point, then clamping to the 8-bit range.  NaN quantizes to the zero
 * point (ONNX leaves it undefined; this avoids a UB float->int cast). */
static dm_err k_quantize(const kc *c) {
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0), *Z = oin(c, 2);
  const float *s = c->in[1];
  const void *z = Z ? c->in[2] : NULL;
  int32_t qt = Y->dtype;
  if ((qt != DM_ONNX_UINT8 && qt != DM_ONNX_INT8) ||
      (X->dtype != DM_ONNX_FLOAT && X->dtype != DM_ONNX_INT32) ||
      (Z && Z->dtype != qt))
    return bad_dtype(c, X);
  int64_t inner, dim;
  quant_geom(c, X, &inner, &dim);
  for (int64_t i = 0; i < X->numel; i++) {
    int64_t ch = (i / inner) % dim;
    float x = X->dtype == DM_ONNX_FLOAT ? ((const float *)c->in[0])[i]
                                        : (float)((const int32_t *)c->in[0])[i];
    int32_t zp = z ? (int32_t)ld_i(z, qt, ch) : 0;
    st_i(c->out[0], qt, i, dm__quantize_one(x, s[ch], zp, qt == DM_ONNX_UINT8));
  }
  return DM_OK;
}

/* y = (x - zp) * scale in float32; the subtraction is exact in int64. */
static dm_err k_dequantize(const kc *c) {
  dm_err rc = need(c, 2, 1);
  if (rc) return rc;
  const dm_value *X = rin(c, 0), *Y = rout(c, 0), *Z = oin(c, 2);
  const float *s = c->in[1];
  const void *z = Z ? c->in[2] : NULL;
  if ((X->dtype != DM_ONNX_UINT8 && X->dtype != DM_ONNX_INT8 &&
       X->dtype != DM_ONNX_INT32) ||
      Y->dtype != DM_ONNX_FLOAT || (Z && Z->dtype != X->dtype))
    return bad_dtype(c, X);
  int64_t inner, dim;
  quant_geom(c, X, &inner, &dim);
  float *y = c->out[0];
  for (int64_t i = 0; i < X->numel; i++) {
    int64_t ch = (i / inner) % dim;
    int64_t q = ld_i(c->in[0], X->dtype, i) - (z ? ld_i(z, X->dtype, ch) : 0);
    y[i] = (float)q * s[ch];
  }
  return DM_OK;
}

/* ---------- entry point ---------- */

dm_err dm__ref_node(const dm_graph *g, const dm_node *n, const void *const *in,
                    void *const *out, dm_errbuf *eb) {
  kc c = {g, n, in, out, eb};
  dm_err rc;
  switch (n->op) {
  case DM_OP_CONV: rc = k_conv(&c); break;
  case DM_OP_BATCHNORM: rc = k_batchnorm(&c); break;
  case DM_OP_UNARY: rc = k_unary(&c); break;
  case DM_OP_BINARY: rc = n->qadd ? k_qadd(&c) : k_binary(&c); break;
  case DM_OP_WHERE: rc = k_where(&c); break;
  case DM_OP_MAXPOOL: rc = k_pool(&c, true); break;
  case DM_OP_AVGPOOL: rc = k_pool(&c, false); break;
  case DM_OP_GLOBALAVGPOOL: rc = k_global_pool(&c, false); break;
  case DM_OP_GLOBALMAXPOOL: rc = k_global_pool(&c, true); break;
  case DM_OP_REDUCE: rc = k_reduce(&c); break;
  case DM_OP_RESHAPE: rc = k_reshape(&c); break;
  case DM_OP_TRANSPOSE: rc = k_transpose(&c); break;
  case DM_OP_CONCAT: rc = k_concat(&c); break;
  case DM_OP_SPLIT: rc = k_split(&c); break;
  case DM_OP_SLICE: rc = k_slice(&c); break;
  case DM_OP_PAD: rc = k_pad(&c); break;
  case DM_OP_GEMM: rc = k_gemm(&c); break;
  case DM_OP_MATMUL: rc = k_matmul(&c); break;
  case DM_OP_SOFTMAX: rc = k_softmax(&c); break;
  case DM_OP_SHAPE: rc = k_shape(&c); break;
  case DM_OP_GATHER: rc = k_gather(&c); break;
  case DM_OP_CAST: rc = k_cast(&c); break;
  case DM_OP_EXPAND: rc = k_expand(&c); break;
  case DM_OP_CONSTANTOFSHAPE: rc = k_constantofshape(&c); break;
  case DM_OP_RANGE: rc = k_range(&c); break;
  case DM_OP_TILE: rc = k_tile(&c); break;
  case DM_OP_LAYERNORM: rc = k_layernorm(&c); break;
  case DM_OP_INSTANCENORM: rc = k_instancenorm(&c); break;
  case DM_OP_PRELU: rc = k_prelu(&c); break;
  case DM_OP_LRN: rc = k_lrn(&c); break;
  case DM_OP_ARGMAX: rc = k_argmax(&c); break;
  case DM_OP_QUANTIZE: rc = k_quantize(&c); break;
  case DM_OP_DEQUANTIZE: rc = k_dequantize(&c); break;
  default:
    return nerr(eb, DM_UNSUPPORTED, n, "op %d has no reference kernel",
                (int)n->op);
  }
  /* 8-bit convs apply their post-ops before requantizing (k_qconv),
   * unless their output is float */
  if (rc == DM_OK && n->n_post > 0 && !n->qadd &&
      (!n->q || n->q->y.dtype == DM_ONNX_FLOAT))
    rc = apply_post(&c);
  return rc;
}

/* ---------- the backend ---------- */

typedef struct ref_state {
  const dm_graph *g;
} ref_state;

typedef struct ref_sess {
  void *arena; /* g->arena_bytes, 64-byte aligned */
} ref_sess;

static dm_err ref_prepare(const dm_graph *g, const dm_engine_opts *o,
                          void **state, dm_errbuf *eb) {
  (void)o; /* single-threaded fp32; precision/threads do not apply */
  ref_state *s = malloc(sizeof *s);
  if (!s) return dm_errf(eb, DM_NOMEM, "ref backend: out of memory");
  s->g = g;
  *state = s;
  return DM_OK;
}

static void ref_release(void *state) { free(state); }

static dm_err ref_session_new(void *state, void **sess, dm_errbuf *eb) {
  const ref_state *st = state;
  size_t bytes = st->g->arena_bytes;
  if (bytes > SIZE_MAX - 64)
    return dm_errf(eb, DM_NOMEM, "ref backend: arena of %zu bytes", bytes);
  bytes = (bytes + 63) & ~(size_t)63; /* aligned_alloc wants a multiple */
  if (!bytes) bytes = 64;
  ref_sess *s = malloc(sizeof *s);
  if (!s) return dm_errf(eb, DM_NOMEM, "ref backend: out of memory");
  s->arena = aligned_alloc(64, bytes);
  if (!s->arena) {
    free(s);
    return dm_errf(eb, DM_NOMEM, "ref backend: arena of %zu bytes", bytes);
  }
  memset(s->arena, 0, bytes); /* deterministic even if a kernel misbehaves */
  *sess = s;
  return DM_OK;
}

static void ref_session_free(void *sess) {
  ref_sess *s = sess;
  if (!s) return;
  free(s->arena);
  free(s);
}

#define REF_STACK_PTRS 32

static dm_err ref_run(void *state, void *sess, const void *const *inputs,
                      void *const *outputs, dm_errbuf *eb) {
  const dm_graph *g = ((const ref_state *)state)->g;
  void *arena = ((ref_sess *)sess)->arena;
  for (int i = 0; i < g->n_inputs; i++) {
    int v = g->inputs[i];
    void *dst = dm__value_ptr(g, v, arena);
    size_t nb = g->values[v].nbytes;
    if (nb && dst != inputs[i]) memcpy(dst, inputs[i], nb);
  }
  const void *in_stack[REF_STACK_PTRS];
  void *out_stack[REF_STACK_PTRS];
  for (int k = 0; k < g->n_nodes; k++) {
    const dm_node *n = &g->nodes[k];
    const void **ip = in_stack;
    void **op = out_stack;
    if (n->n_in > REF_STACK_PTRS || n->n_out > REF_STACK_PTRS) {
      ip = malloc(sizeof *ip * (size_t)(n->n_in > 0 ? n->n_in : 1));
      op = malloc(sizeof *op * (size_t)(n->n_out > 0 ? n->n_out : 1));
      if (!ip || !op) {
        free(ip);
        free(op);
        return dm_errf(eb, DM_NOMEM, "ref backend: out of memory");
      }
    }
    for (int i = 0; i < n->n_in; i++)
      ip[i] = n->in[i] >= 0 ? dm__value_ptr(g, n->in[i], arena) : NULL;
    for (int i = 0; i < n->n_out; i++)
      op[i] = n->out[i] >= 0 ? dm__value_ptr(g, n->out[i], arena) : NULL;
    dm_err rc = dm__ref_node(g, n, ip, op, eb);
    if (ip != in_stack) {
      free(ip);
      free(op);
    }
    if (rc) return rc;
  }
  for (int i = 0; i < g->n_outputs; i++) {
    int v = g->outputs[i];
    const void *src = dm__value_ptr(g, v, arena);
    size_t nb = g->values[v].nbytes;
    if (nb && src != outputs[i]) memcpy(outputs[i], src, nb);
  }
  return DM_OK;
}

static const char *ref_precision(void *state) {
  (void)state;
  return "fp32";
}

const dm_backend dm__backend_ref = {
    .name = "ref",
    .prepare = ref_prepare,
    .release = ref_release,
    .session_new = ref_session_new,
    .session_free = ref_session_free,
    .run = ref_run,
    .precision = ref_precision,
};
