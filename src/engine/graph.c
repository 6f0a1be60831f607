/* graph.c: ONNX model -> dm_graph, the engine's executable IR.
 *
 * One pass over the ONNX nodes (which ONNX requires to be topologically
 * sorted) parses and validates every attribute into node params, infers every
 * output's dtype and static shape, and folds nodes whose inputs are all
 * constant by running the reference kernel on them at once (this is how the
 * Shape/Gather/Cast/Concat/Unsqueeze chains exporters emit around Reshape
 * disappear).  Then, when asked, the optimisation passes run: BatchNorm
 * folded into the preceding Conv, x*hardsigmoid(x) -> HardSwish,
 * x*sigmoid(x) -> Swish, activations and residual Adds fused into Conv/Gemm,
 * dead nodes removed.  Finally the memory plan gives every activation a byte
 * offset in one arena, reusing space by liveness; Reshape-family outputs alias
 * their input.
 *
 * Anything not understood exactly (op, attribute, attribute value, dtype,
 * dynamic shape) fails here, at load time, with a message naming the node, op
 * and attribute.  The built graph is immutable and shared by all sessions. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---------- allocation tied to the graph ---------- */

typedef struct pool_blk {
  struct pool_blk *next;
  size_t pad[7]; /* keeps the payload 64-byte aligned */
} pool_blk;

static void *pool_alloc(dm_graph *g, size_t n, bool zero) {
  size_t total;
  if (__builtin_add_overflow(n, sizeof(pool_blk), &total)) return NULL;
  total = (total + 63) & ~(size_t)63;
  pool_blk *b = aligned_alloc(64, total);
  if (!b) return NULL;
  if (zero) memset(b + 1, 0, total - sizeof *b);
  b->next = g->pool;
  g->pool = b;
  return b + 1;
}

void *dm__graph_alloc(dm_graph *g, size_t n) { return pool_alloc(g, n, true); }

static char *pool_strdup(dm_graph *g, const char *s) {
  size_t n = strlen(s);
  char *d = dm__graph_alloc(g, n + 1);
  if (d) memcpy(d, s, n + 1);
  return d;
}

void dm__graph_free(dm_graph *g) {
  if (!g) return;
  pool_blk *b = g->pool;
  while (b) {
    pool_blk *next = b->next;
    free(b);
    b = next;
  }
  free(g->values);
  free(g->nodes);
  free(g);
}

const char *dm__op_name(dm_op op) {
  static const char *const names[] = {
#define X(e, s) s,
      DM_OP_MAP(X)
#undef X
  };
  return (unsigned)op < DM_OP_COUNT ? names[op] : "?";
}

size_t dm__dtype_size(int32_t dtype) { return dm_onnx_dtype_size(dtype); }

void *dm__value_ptr(const dm_graph *g, int v, void *arena) {
  const dm_value *x = &g->values[v];
  if (x->kind == DM_VAL_CONST) return (void *)(uintptr_t)x->data;
  return (char *)arena + x->offset;
}

/* ---------- op table ---------- */

typedef struct op_entry {
  const char *type;
  dm_op op;
  int sub; /* dm_unary / dm_binary / dm_reduce, or a variant flag */
} op_entry;

enum {
  V_NONE = 0,
  V_FLATTEN,
  V_SQUEEZE,
  V_UNSQUEEZE,
  V_IDENTITY,
  V_DROPOUT,
  V_LOGSOFTMAX,
  V_SUM,
  V_MEAN,
  V_VARMAX,
  V_VARMIN,
  V_CONSTANT,
  V_SIZE,
  V_ARGMIN
};

static const op_entry op_table[] = {
    {"Conv", DM_OP_CONV, 0},
    {"BatchNormalization", DM_OP_BATCHNORM, 0},
#define X(e, s) {s, DM_OP_UNARY, DM_UNARY_##e},
    DM_UNARY_MAP(X)
#undef X
#define X(e, s) {s, DM_OP_BINARY, DM_BINARY_##e},
        DM_BINARY_MAP(X)
#undef X
#define X(e, s) {s, DM_OP_REDUCE, DM_REDUCE_##e},
            DM_REDUCE_MAP(X)
#undef X
                {"Where", DM_OP_WHERE, 0},
    {"MaxPool", DM_OP_MAXPOOL, 0},
    {"AveragePool", DM_OP_AVGPOOL, 0},
    {"GlobalAveragePool", DM_OP_GLOBALAVGPOOL, 0},
    {"GlobalMaxPool", DM_OP_GLOBALMAXPOOL, 0},
    {"Reshape", DM_OP_RESHAPE, V_NONE},
    {"Flatten", DM_OP_RESHAPE, V_FLATTEN},
    {"Squeeze", DM_OP_RESHAPE, V_SQUEEZE},
    {"Unsqueeze", DM_OP_RESHAPE, V_UNSQUEEZE},
    {"Identity", DM_OP_RESHAPE, V_IDENTITY},
    {"Dropout", DM_OP_RESHAPE, V_DROPOUT},
    {"Transpose", DM_OP_TRANSPOSE, 0},
    {"Concat", DM_OP_CONCAT, 0},
    {"Split", DM_OP_SPLIT, 0},
    {"Slice", DM_OP_SLICE, 0},
    {"Pad", DM_OP_PAD, 0},
    {"Gemm", DM_OP_GEMM, 0},
    {"MatMul", DM_OP_MATMUL, 0},
    {"Softmax", DM_OP_SOFTMAX, V_NONE},
    {"LogSoftmax", DM_OP_SOFTMAX, V_LOGSOFTMAX},
    {"Shape", DM_OP_SHAPE, 0},
    {"Gather", DM_OP_GATHER, 0},
    {"Cast", DM_OP_CAST, 0},
    {"Expand", DM_OP_EXPAND, 0},
    {"ConstantOfShape", DM_OP_CONSTANTOFSHAPE, 0},
    {"Range", DM_OP_RANGE, 0},
    {"Tile", DM_OP_TILE, 0},
    {"LayerNormalization", DM_OP_LAYERNORM, 0},
    {"InstanceNormalization", DM_OP_INSTANCENORM, 0},
    {"PRelu", DM_OP_PRELU, 0},
    {"LRN", DM_OP_LRN, 0},
    {"Sum", DM_OP_BINARY, -V_SUM},
    {"Mean", DM_OP_BINARY, -V_MEAN},
    {"Constant", DM_OP_COUNT, V_CONSTANT},
    {"Size", DM_OP_COUNT, V_SIZE},
    {"ArgMax", DM_OP_ARGMAX, 0},
    {"ArgMin", DM_OP_ARGMAX, V_ARGMIN},
    {"QuantizeLinear", DM_OP_QUANTIZE, 0},
    {"DequantizeLinear", DM_OP_DEQUANTIZE, 0},
};

static const op_entry *op_lookup(const char *type) {
  for (size_t i = 0; i < sizeof op_table / sizeof op_table[0]; i++)
    if (op_table[i].type[0] != '(' && strcmp(op_table[i].type, type) == 0)
      return &op_table[i];
  return NULL;
}

static const char *supported[sizeof op_table / sizeof op_table[0] + 1];
static pthread_once_t supported_once = PTHREAD_ONCE_INIT;

static void supported_init(void) {
  size_t k = 0;
  for (size_t i = 0; i < sizeof op_table / sizeof op_table[0]; i++)
    if (op_table[i].type[0] != '(') supported[k++] = op_table[i].type;
  supported[k] = NULL;
}

const char *const *dm_engine_supported_ops(void) {
  pthread_once(&supported_once, supported_init);
  return supported;
}

/* ---------- value table ---------- */

static dm_err grow(void **p, int *cap, int need, size_t elem) {
  if (need <= *cap) return DM_OK;
  int nc = *cap ? *cap : 64;
  while (nc < need)
    nc *= 2;
  void *q = realloc(*p, (size_t)nc * elem);
  if (!q) return DM_NOMEM;
  memset((char *)q + (size_t)*cap * elem, 0, (size_t)(nc - *cap) * elem);
  *p = q;
  *cap = nc;
  return DM_OK;
}

enum { DM_GRAPH_MAX_NODES = 100000 };

typedef struct builder {
  dm_graph *g;
  dm_errbuf *eb;
  /* name -> value index, open addressing */
  int *slots;
  size_t n_slots;
  const dm_onnx_node *cur; /* node being read, for messages */
  int cur_index;
  int n_out;            /* outputs of cur, trailing unnamed ones cut */
  const char *bad_attr; /* an attribute read with the wrong type */
  bool legacy_axis;     /* opset < 7 broadcast axis already handled */
  size_t fold_left;     /* bytes constant folding may still create */
} builder;

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  while (*s)
    h = (h ^ (uint8_t)*s++) * 1099511628211ull;
  return h;
}

static int find_value(const builder *b, const char *name) {
  size_t mask = b->n_slots - 1;
  for (size_t i = hash_str(name) & mask;; i = (i + 1) & mask) {
    int v = b->slots[i];
    if (v < 0) return -1;
    if (strcmp(b->g->values[v].name, name) == 0) return v;
  }
}

static dm_err rehash(builder *b, size_t n) {
  int *s = malloc(n * sizeof *s);
  if (!s) return DM_NOMEM;
  for (size_t i = 0; i < n; i++)
    s[i] = -1;
  free(b->slots);
  b->slots = s;
  b->n_slots = n;
  for (int v = 0; v < b->g->n_values; v++) {
    if (!b->g->values[v].name[0]) continue;
    size_t i = hash_str(b->g->values[v].name) & (n - 1);
    while (s[i] >= 0)
      i = (i + 1) & (n - 1);
    s[i] = v;
  }
  return DM_OK;
}

/* Adds a value (name may be "" for internal ones, which are not looked up).
 * Later definitions of a name shadow earlier ones (ONNX forbids it; we
 * refuse it in the caller). */
static dm_err add_value(builder *b, const char *name, int *out) {
  dm_graph *g = b->g;
  if (grow((void **)&g->values, &g->cap_values, g->n_values + 1,
           sizeof *g->values) != DM_OK)
    return dm_errf(b->eb, DM_NOMEM, "out of memory adding value '%s'", name);
  int v = g->n_values;
  dm_value *x = &g->values[v];
  memset(x, 0, sizeof *x);
  x->name = pool_strdup(g, name);
  if (!x->name) return dm_errf(b->eb, DM_NOMEM, "out of memory");
  x->producer = -1;
  x->alias_of = -1;
  g->n_values++;
  if ((size_t)g->n_values * 2 > b->n_slots) {
    if (rehash(b, b->n_slots ? b->n_slots * 2 : 256) != DM_OK)
      return dm_errf(b->eb, DM_NOMEM, "out of memory");
  } else if (name[0]) {
    size_t mask = b->n_slots - 1;
    size_t i = hash_str(name) & mask;
    while (b->slots[i] >= 0)
      i = (i + 1) & mask;
    b->slots[i] = v;
  }
  *out = v;
  return DM_OK;
}

static dm_err set_shape(builder *b, int v, int32_t dtype, int rank,
                        const int64_t *dims) {
  dm_value *x = &b->g->values[v];
  if (rank < 0 || rank > DM_MAX_RANK)
    return dm_errf(b->eb, DM_UNSUPPORTED, "value '%s': rank %d exceeds %d",
                   x->name, rank, DM_MAX_RANK);
  size_t es = dm__dtype_size(dtype);
  if (!es)
    return dm_errf(b->eb, DM_UNSUPPORTED, "value '%s': dtype %s unsupported",
                   x->name, dm_onnx_dtype_name(dtype));
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (dims[i] < 0)
      return dm_errf(b->eb, DM_UNSUPPORTED,
                     "value '%s': dimension %d is not static", x->name, i);
    if (__builtin_mul_overflow(n, dims[i], &n) || n > ((int64_t)1 << 40))
      return dm_errf(b->eb, DM_RANGE, "value '%s': too many elements", x->name);
    x->dims[i] = dims[i];
  }
  x->dtype = dtype;
  x->rank = rank;
  x->numel = n;
  x->nbytes = (size_t)n * es;
  return DM_OK;
}

/* Makes v a constant with a copy (or in-place view when aligned) of data. */
static dm_err set_const(builder *b, int v, const void *data, bool may_borrow) {
  dm_value *x = &b->g->values[v];
  size_t es = dm__dtype_size(x->dtype);
  x->kind = DM_VAL_CONST;
  if (may_borrow && data) {
    x->data = data; /* zero copy; aligned later only where a C reader needs */
    x->unaligned = ((uintptr_t)data % es) != 0;
    return DM_OK;
  }
  x->owned = dm__graph_alloc(b->g, x->nbytes ? x->nbytes : 1);
  if (!x->owned)
    return dm_errf(b->eb, DM_NOMEM, "out of memory for %zu bytes of '%s'",
                   x->nbytes, x->name ? x->name : "?");
  if (data && x->nbytes) memcpy(x->owned, data, x->nbytes);
  x->data = x->owned;
  return DM_OK;
}

dm_err dm__graph_align_const(dm_graph *g, int v) {
  dm_value *x = &g->values[v];
  if (x->kind != DM_VAL_CONST || !x->unaligned) return DM_OK;
  void *p = pool_alloc(g, x->nbytes ? x->nbytes : 1, false); /* overwritten */
  if (!p) return DM_NOMEM;
  memcpy(p, x->data, x->nbytes);
  x->owned = p;
  x->data = p;
  x->unaligned = false;
  g->stats.weight_copied += x->nbytes;
  return DM_OK;
}

/* ---------- attribute helpers ---------- */

static const char *node_label(const builder *b) {
  const dm_onnx_node *n = b->cur;
  return n->name[0] ? n->name : "(unnamed)";
}

#define NODE_ERR(b, rc, ...) node_err((b), (rc), __VA_ARGS__)
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static dm_err
node_err(builder *b, dm_err rc, const char *fmt, ...) {
  char tmp[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  return dm_errf(b->eb, rc, "node %d '%s' (%s): %s", b->cur_index,
                 node_label(b), b->cur->op_type, tmp);
}

static const dm_onnx_attr *attr(const builder *b, const char *name, int type) {
  const dm_onnx_attr *a = dm_onnx_attr_find(b->cur, name);
  if (a && a->type != type) {
    ((builder *)(uintptr_t)b)->bad_attr = a->name; /* reported by emit() */
    return NULL;
  }
  return a;
}

static int64_t attr_i(const builder *b, const char *name, int64_t def) {
  const dm_onnx_attr *a = attr(b, name, DM_ONNX_ATTR_INT);
  return a ? a->i : def;
}

static float attr_f(const builder *b, const char *name, float def) {
  const dm_onnx_attr *a = attr(b, name, DM_ONNX_ATTR_FLOAT);
  return a ? a->f : def;
}

static const char *attr_s(const builder *b, const char *name, const char *def) {
  const dm_onnx_attr *a = attr(b, name, DM_ONNX_ATTR_STRING);
  return a ? a->s : def;
}

static const dm_onnx_attr *attr_ints(const builder *b, const char *name) {
  return attr(b, name, DM_ONNX_ATTR_INTS);
}

/* Attributes that exist only in some opsets of their op: before `from`
 * or from `until` on, the spec has no such attribute (it became an input,
 * or did not exist yet), so a file that sets one anyway is inconsistent
 * and its author meant something the engine would not do.  The op lists
 * of check_attrs name every attribute of every opset they read. */
typedef struct attr_span {
  const char *op, *attr;
  int from, until; /* valid in [from, until); until 0: still valid */
} attr_span;

static const attr_span k_spans[] = {
    {"Clip", "min", 1, 11},
    {"Clip", "max", 1, 11},
    {"Pad", "pads", 1, 11},
    {"Pad", "value", 1, 11},
    {"Squeeze", "axes", 1, 13},
    {"Unsqueeze", "axes", 1, 13},
    {"Split", "split", 1, 13},
    {"Split", "num_outputs", 18, 0},
    {"ReduceMean", "axes", 1, 18},
    {"ReduceMean", "noop_with_empty_axes", 18, 0},
    {"ReduceSum", "axes", 1, 13},
    {"ReduceSum", "noop_with_empty_axes", 13, 0},
    {"ReduceMax", "axes", 1, 18},
    {"ReduceMax", "noop_with_empty_axes", 18, 0},
    {"ReduceMin", "axes", 1, 18},
    {"ReduceMin", "noop_with_empty_axes", 18, 0},
    {"AveragePool", "ceil_mode", 10, 0},
    {"AveragePool", "count_include_pad", 7, 0},
    {"AveragePool", "dilations", 19, 0},
    {"MaxPool", "ceil_mode", 10, 0},
    {"MaxPool", "dilations", 10, 0},
    {"MaxPool", "storage_order", 8, 0},
    {"Slice", "starts", 1, 10},
    {"Slice", "ends", 1, 10},
    {"Slice", "axes", 1, 10},
    {"Reshape", "allowzero", 14, 0},
    {"Dropout", "ratio", 1, 12},
    {"Dropout", "seed", 12, 0},
};

/* Refuses attributes the op does not know (a misspelt or newer attribute
 * could change semantics), attributes its opset does not have (k_spans),
 * and attributes of the wrong type. */
static dm_err check_attrs(builder *b, const char *const *known) {
  for (size_t i = 0; i < b->cur->n_attrs; i++) {
    const dm_onnx_attr *a = &b->cur->attrs[i];
    /* opset < 7 attributes handled in add_onnx_node or without effect on
     * results: consumed_inputs (a memory hint), is_test (checked there),
     * broadcast/axis of arithmetic ops (rewritten there). */
    bool ok = b->g->opset < 7 &&
              (!strcmp(a->name, "consumed_inputs") ||
               !strcmp(a->name, "is_test") || !strcmp(a->name, "broadcast") ||
               (!strcmp(a->name, "axis") && b->legacy_axis));
    for (const char *const *k = known; *k; k++)
      if (strcmp(*k, a->name) == 0) ok = true;
    if (!ok)
      return NODE_ERR(b, DM_UNSUPPORTED, "attribute '%s' is not supported",
                      a->name);
    int64_t op = b->g->opset;
    for (size_t k = 0; k < sizeof k_spans / sizeof *k_spans; k++) {
      const attr_span *sp = &k_spans[k];
      if (strcmp(sp->op, b->cur->op_type) || strcmp(sp->attr, a->name) ||
          (op >= sp->from && (!sp->until || op < sp->until)))
        continue;
      if (sp->until)
        return NODE_ERR(b, DM_FORMAT,
                        "attribute '%s' does not exist at opset %lld "
                        "(%s has it in opsets %d-%d)",
                        a->name, (long long)op, sp->op, sp->from,
                        sp->until - 1);
      return NODE_ERR(b, DM_FORMAT,
                      "attribute '%s' does not exist at opset %lld "
                      "(%s has it from opset %d)",
                      a->name, (long long)op, sp->op, sp->from);
    }
  }
  return DM_OK;
}

/* ---------- shape helpers ---------- */

static dm_value *V(builder *b, int v) { return &b->g->values[v]; }

static int norm_axis(int64_t axis, int rank) {
  if (axis < 0) axis += rank;
  return (axis < 0 || axis >= (rank ? rank : 1)) ? -1 : (int)axis;
}

/* Reads a constant integer tensor input (int64 or int32) into dst. */
static dm_err const_ints(builder *b, int v, int64_t *dst, int max, int *n,
                         const char *what) {
  if (v < 0 || V(b, v)->kind != DM_VAL_CONST)
    return NODE_ERR(b, DM_UNSUPPORTED,
                    "input '%s' must be a constant (dynamic shapes are not "
                    "supported)",
                    what);
  if (dm__graph_align_const(b->g, v))
    return dm_errf(b->eb, DM_NOMEM, "out of memory");
  const dm_value *x = V(b, v);
  if (x->numel > max)
    return NODE_ERR(b, DM_UNSUPPORTED, "input '%s' has %lld values (max %d)",
                    what, (long long)x->numel, max);
  for (int64_t i = 0; i < x->numel; i++) {
    if (x->dtype == DM_ONNX_INT64)
      dst[i] = ((const int64_t *)x->data)[i];
    else if (x->dtype == DM_ONNX_INT32)
      dst[i] = ((const int32_t *)x->data)[i];
    else
      return NODE_ERR(b, DM_UNSUPPORTED, "input '%s' must be int64 or int32",
                      what);
  }
  *n = (int)x->numel;
  return DM_OK;
}

static dm_err const_scalar_f(builder *b, int v, double *out, const char *what) {
  if (v < 0) return DM_OK;
  if (dm__graph_align_const(b->g, v))
    return dm_errf(b->eb, DM_NOMEM, "out of memory");
  const dm_value *x = V(b, v);
  if (x->kind != DM_VAL_CONST)
    return NODE_ERR(b, DM_UNSUPPORTED, "input '%s' must be a constant", what);
  if (x->numel != 1)
    return NODE_ERR(b, DM_UNSUPPORTED, "input '%s' must be a scalar", what);
  switch (x->dtype) {
  case DM_ONNX_FLOAT: *out = ((const float *)x->data)[0]; break;
  case DM_ONNX_DOUBLE: *out = ((const double *)x->data)[0]; break;
  case DM_ONNX_INT64: *out = (double)((const int64_t *)x->data)[0]; break;
  case DM_ONNX_INT32: *out = ((const int32_t *)x->data)[0]; break;
  case DM_ONNX_INT8: *out = ((const int8_t *)x->data)[0]; break;
  case DM_ONNX_UINT8: *out = ((const uint8_t *)x->data)[0]; break;
  case DM_ONNX_BOOL: *out = ((const uint8_t *)x->data)[0]; break;
  default:
    return NODE_ERR(b, DM_UNSUPPORTED, "input '%s': dtype %s", what,
                    dm_onnx_dtype_name(x->dtype));
  }
  return DM_OK;
}

static dm_err broadcast(builder *b, const dm_value *x, const dm_value *y,
                        int *rank, int64_t *dims) {
  int r = x->rank > y->rank ? x->rank : y->rank;
  for (int i = 0; i < r; i++) {
    int ix = i - (r - x->rank), iy = i - (r - y->rank);
    int64_t a = ix >= 0 ? x->dims[ix] : 1, c = iy >= 0 ? y->dims[iy] : 1;
    if (a != c && a != 1 && c != 1)
      return NODE_ERR(b, DM_FORMAT,
                      "shapes of '%s' and '%s' do not broadcast (dim %d: "
                      "%lld vs %lld)",
                      x->name, y->name, i, (long long)a, (long long)c);
    dims[i] = a == 1 ? c : a;
  }
  *rank = r;
  return DM_OK;
}

static bool is_float(int32_t dt) { return dt == DM_ONNX_FLOAT; }
static bool is_int(int32_t dt) {
  return dt == DM_ONNX_INT64 || dt == DM_ONNX_INT32;
}

/* Window geometry for Conv and pools.  x: [N, C, spatial...]. */
static dm_err parse_window(builder *b, const dm_value *x, const int64_t *kernel,
                           int nsp, bool ceil_mode, bool is_pool, dm_window *w,
                           int64_t *out_sp) {
  w->nsp = nsp;
  const dm_onnx_attr *st = attr_ints(b, "strides"),
                     *dl = attr_ints(b, "dilations"),
                     *pd = attr_ints(b, "pads");
  if ((st && st->n_ints != (size_t)nsp) || (dl && dl->n_ints != (size_t)nsp) ||
      (pd && pd->n_ints != (size_t)(2 * nsp)))
    return NODE_ERR(b, DM_FORMAT,
                    "strides/dilations/pads do not match %d spatial dims", nsp);
  const char *ap = attr_s(b, "auto_pad", "NOTSET");
  int mode;
  if (!strcmp(ap, "NOTSET"))
    mode = 0;
  else if (!strcmp(ap, "SAME_UPPER"))
    mode = 1;
  else if (!strcmp(ap, "SAME_LOWER"))
    mode = 2;
  else if (!strcmp(ap, "VALID"))
    mode = 3;
  else
    return NODE_ERR(b, DM_UNSUPPORTED, "attribute 'auto_pad' value '%s'", ap);
  for (int i = 0; i < nsp; i++) {
    int64_t in = x->dims[2 + i];
    w->kernel[i] = kernel[i];
    w->stride[i] = st ? st->ints[i] : 1;
    w->dil[i] = dl ? dl->ints[i] : 1;
    if (w->kernel[i] < 1 || w->stride[i] < 1 || w->dil[i] < 1 ||
        w->kernel[i] > 1 << 16 || w->stride[i] > 1 << 16 || w->dil[i] > 1 << 16)
      return NODE_ERR(b, DM_FORMAT,
                      "kernel/stride/dilation out of range on axis %d", i);
    int64_t ek = (w->kernel[i] - 1) * w->dil[i] + 1;
    if (mode == 1 || mode == 2) {
      int64_t o = (in + w->stride[i] - 1) / w->stride[i];
      int64_t total = (o - 1) * w->stride[i] + ek - in;
      if (total < 0) total = 0;
      int64_t small = total / 2;
      w->pad_b[i] = mode == 1 ? small : total - small;
      w->pad_e[i] = total - w->pad_b[i];
      out_sp[i] = o;
      continue;
    }
    if (mode == 3) {
      w->pad_b[i] = w->pad_e[i] = 0;
    } else {
      w->pad_b[i] = pd ? pd->ints[i] : 0;
      w->pad_e[i] = pd ? pd->ints[nsp + i] : 0;
    }
    if (w->pad_b[i] < 0 || w->pad_e[i] < 0 || w->pad_b[i] > 1 << 16 ||
        w->pad_e[i] > 1 << 16)
      return NODE_ERR(b, DM_UNSUPPORTED, "attribute 'pads' value out of range");
    if (is_pool && (w->pad_b[i] >= ek || w->pad_e[i] >= ek))
      return NODE_ERR(b, DM_UNSUPPORTED,
                      "attribute 'pads' not smaller than the kernel");
    int64_t span = in + w->pad_b[i] + w->pad_e[i] - ek;
    if (span < 0)
      return NODE_ERR(b, DM_FORMAT,
                      "kernel larger than padded input on axis %d", i);
    int64_t o = ceil_mode ? (span + w->stride[i] - 1) / w->stride[i] + 1
                          : span / w->stride[i] + 1;
    /* the last window must start inside the input or the begin padding */
    if (ceil_mode && (o - 1) * w->stride[i] >= in + w->pad_b[i]) o--;
    out_sp[i] = o;
  }
  return DM_OK;
}

/* ---------- per-op parsing and shape inference ---------- */

static const char *const A_NONE[] = {NULL};

/* Adds the node's outputs with shapes.  Nodes write params in *n first. */
static dm_err infer(builder *b, dm_node *n, int sub, int32_t *odt, int *orank,
                    int64_t (*odims)[DM_MAX_RANK]);

static dm_err bad_dtype(builder *b, const dm_value *x) {
  return NODE_ERR(b, DM_UNSUPPORTED, "dtype %s of input '%s' is not supported",
                  dm_onnx_dtype_name(x->dtype), x->name);
}

static dm_err need_inputs(builder *b, const dm_node *n, int lo, int hi) {
  int present = n->n_in;
  if (present < lo || present > hi)
    return NODE_ERR(b, DM_FORMAT, "has %d inputs, expected %d..%d", present, lo,
                    hi);
  for (int i = 0; i < lo; i++)
    if (n->in[i] < 0)
      return NODE_ERR(b, DM_FORMAT, "required input %d is missing", i);
  return DM_OK;
}

/* QuantizeLinear / DequantizeLinear (opset 10..18).  Scale and zero point
 * may be runtime values (the ONNX test data feeds them as graph inputs), so
 * only their shapes and dtypes are checked here.  A scale with one element
 * (scalar or [1]) is per-tensor; a 1-D scale of dims[axis] values is per-axis
 * (opset >= 13).  Output shape = input shape. */
static dm_err infer_quant(builder *b, dm_node *n, int32_t *odt) {
  static const char *const k13[] = {"axis", NULL};
  dm_err rc;
  bool q = n->op == DM_OP_QUANTIZE;
  if ((rc = check_attrs(b, b->g->opset >= 13 ? k13 : A_NONE)) ||
      (rc = need_inputs(b, n, 2, 3)))
    return rc;
  const dm_value *x = V(b, n->in[0]), *s = V(b, n->in[1]);
  const dm_value *z = n->n_in > 2 && n->in[2] >= 0 ? V(b, n->in[2]) : NULL;
  if (q ? !(is_float(x->dtype) || x->dtype == DM_ONNX_INT32)
        : !(x->dtype == DM_ONNX_UINT8 || x->dtype == DM_ONNX_INT8 ||
            x->dtype == DM_ONNX_INT32))
    return bad_dtype(b, x);
  if (!is_float(s->dtype)) return bad_dtype(b, s);
  int32_t qt = q ? (z ? z->dtype : DM_ONNX_UINT8) : x->dtype;
  if (q && qt != DM_ONNX_UINT8 && qt != DM_ONNX_INT8)
    return NODE_ERR(b, DM_UNSUPPORTED, "zero point dtype %s (uint8 or int8)",
                    dm_onnx_dtype_name(qt));
  if (z && z->dtype != qt)
    return NODE_ERR(b, DM_FORMAT, "zero point dtype %s differs from %s",
                    dm_onnx_dtype_name(z->dtype), dm_onnx_dtype_name(qt));
  if (z && z->numel != s->numel)
    return NODE_ERR(b, DM_FORMAT, "zero point and scale shapes differ");
  n->p.quant.axis = -1; /* one value (scalar or [1]): per-tensor */
  if (s->rank > 1 || (s->numel != 1 && (s->rank != 1 || b->g->opset < 13)))
    return NODE_ERR(b, DM_FORMAT,
                    "scale must be a scalar or, from opset 13, "
                    "1-D (per-axis)");
  if (s->numel != 1) {
    int64_t a = attr_i(b, "axis", 1);
    int ax = norm_axis(a, x->rank);
    if (ax < 0 || x->rank == 0 || x->dims[ax] != s->numel)
      return NODE_ERR(b, DM_FORMAT,
                      "scale has %lld values, not one per element of axis "
                      "%lld",
                      (long long)s->numel, (long long)a);
    n->p.quant.axis = ax;
  }
  if (!q && x->dtype == DM_ONNX_INT32 && z && z->kind == DM_VAL_CONST) {
    if (dm__graph_align_const(b->g, n->in[2]))
      return dm_errf(b->eb, DM_NOMEM, "out of memory");
    for (int64_t i = 0; i < z->numel; i++)
      if (((const int32_t *)z->data)[i] != 0)
        return NODE_ERR(b, DM_FORMAT, "int32 zero point must be 0");
  }
  odt[0] = q ? qt : DM_ONNX_FLOAT;
  return DM_OK;
}

static dm_err infer(builder *b, dm_node *n, int sub, int32_t *odt, int *orank,
                    int64_t (*odims)[DM_MAX_RANK]) {
  dm_err rc;
  const dm_value *x = n->n_in > 0 && n->in[0] >= 0 ? V(b, n->in[0]) : NULL;
  int64_t opset = b->g->opset;
  odt[0] = x ? x->dtype : DM_ONNX_FLOAT;
  if (x) {
    orank[0] = x->rank;
    memcpy(odims[0], x->dims, sizeof x->dims);
  }
  switch (n->op) {
  case DM_OP_CONV: {
    static const char *const k[] = {
        "auto_pad", "dilations", "group", "kernel_shape",
        "pads",     "strides",   NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 2, 3))) return rc;
    const dm_value *w = V(b, n->in[1]);
    if (!is_float(x->dtype) || !is_float(w->dtype)) return bad_dtype(b, x);
    int nsp = x->rank - 2;
    if (nsp < 1 || nsp > DM_MAX_SPATIAL || w->rank != x->rank)
      return NODE_ERR(b, DM_UNSUPPORTED, "input rank %d / weight rank %d",
                      x->rank, w->rank);
    int64_t group = attr_i(b, "group", 1);
    if (group < 1 || x->dims[1] % group || w->dims[0] % group ||
        w->dims[1] * group != x->dims[1])
      return NODE_ERR(b, DM_FORMAT,
                      "group %lld does not fit %lld input channels and "
                      "weight [%lld,%lld,...]",
                      (long long)group, (long long)x->dims[1],
                      (long long)w->dims[0], (long long)w->dims[1]);
    const dm_onnx_attr *ks = attr_ints(b, "kernel_shape");
    if (ks && (ks->n_ints != (size_t)nsp ||
               memcmp(ks->ints, w->dims + 2, (size_t)nsp * 8) != 0))
      return NODE_ERR(b, DM_FORMAT,
                      "attribute 'kernel_shape' disagrees with the weight");
    if (n->n_in == 3 && n->in[2] >= 0) {
      const dm_value *bias = V(b, n->in[2]);
      if (bias->numel != w->dims[0] || !is_float(bias->dtype))
        return NODE_ERR(b, DM_FORMAT, "bias has %lld values, expected %lld",
                        (long long)bias->numel, (long long)w->dims[0]);
    }
    n->p.conv.group = group;
    int64_t sp[DM_MAX_SPATIAL];
    if ((rc = parse_window(b, x, w->dims + 2, nsp, false, false, &n->p.conv.w,
                           sp)))
      return rc;
    odims[0][1] = w->dims[0];
    for (int i = 0; i < nsp; i++)
      odims[0][2 + i] = sp[i];
    return DM_OK;
  }
  case DM_OP_MAXPOOL:
  case DM_OP_AVGPOOL: {
    static const char *const km[] = {"auto_pad",      "ceil_mode", "dilations",
                                     "kernel_shape",  "pads",      "strides",
                                     "storage_order", NULL};
    static const char *const ka[] = {
        "auto_pad", "ceil_mode", "count_include_pad", "kernel_shape",
        "pads",     "strides",   "dilations",         NULL};
    if ((rc = check_attrs(b, n->op == DM_OP_MAXPOOL ? km : ka)) ||
        (rc = need_inputs(b, n, 1, 1)))
      return rc;
    if (!is_float(x->dtype)) return bad_dtype(b, x);
    if (b->n_out > 1)
      return NODE_ERR(b, DM_UNSUPPORTED, "the Indices output is not supported");
    int nsp = x->rank - 2;
    const dm_onnx_attr *ks = attr_ints(b, "kernel_shape");
    if (nsp < 1 || nsp > DM_MAX_SPATIAL || !ks || ks->n_ints != (size_t)nsp)
      return NODE_ERR(b, DM_UNSUPPORTED,
                      "attribute 'kernel_shape' missing or rank %d input",
                      x->rank);
    n->p.pool.ceil_mode = attr_i(b, "ceil_mode", 0) != 0;
    n->p.pool.count_include_pad = attr_i(b, "count_include_pad", 0) != 0;
    n->p.pool.storage_order = attr_i(b, "storage_order", 0);
    if (n->p.pool.storage_order != 0)
      return NODE_ERR(b, DM_UNSUPPORTED, "attribute 'storage_order' != 0");
    int64_t sp[DM_MAX_SPATIAL];
    if ((rc = parse_window(b, x, ks->ints, nsp, n->p.pool.ceil_mode, true,
                           &n->p.pool.w, sp)))
      return rc;
    if (n->op == DM_OP_AVGPOOL)
      for (int i = 0; i < nsp; i++)
        if (n->p.pool.w.dil[i] != 1)
          return NODE_ERR(b, DM_UNSUPPORTED, "attribute 'dilations' != 1");
    for (int i = 0; i < nsp; i++)
      odims[0][2 + i] = sp[i];
    return DM_OK;
  }
  case DM_OP_GLOBALAVGPOOL:
  case DM_OP_GLOBALMAXPOOL:
    if ((rc = check_attrs(b, A_NONE)) || (rc = need_inputs(b, n, 1, 1)))
      return rc;
    if (!is_float(x->dtype)) return bad_dtype(b, x);
    if (x->rank < 3)
      return NODE_ERR(b, DM_UNSUPPORTED, "input rank %d < 3", x->rank);
    for (int i = 2; i < x->rank; i++)
      odims[0][i] = 1;
    return DM_OK;
  case DM_OP_BATCHNORM: {
    static const char *const k[] = {"epsilon", "momentum", "spatial",
                                    "training_mode", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 5, 5))) return rc;
    if (attr_i(b, "training_mode", 0) != 0 || attr_i(b, "spatial", 1) != 1)
      return NODE_ERR(b, DM_UNSUPPORTED,
                      "attribute 'training_mode'/'spatial' value");
    if (b->n_out > 1)
      return NODE_ERR(b, DM_UNSUPPORTED, "training outputs are not supported");
    if (!is_float(x->dtype) || x->rank < 2) return bad_dtype(b, x);
    for (int i = 1; i < 5; i++)
      if (V(b, n->in[i])->numel != x->dims[1] ||
          !is_float(V(b, n->in[i])->dtype))
        return NODE_ERR(b, DM_FORMAT, "input %d must hold %lld floats", i,
                        (long long)x->dims[1]);
    n->p.bn.eps = attr_f(b, "epsilon", 1e-5f);
    return DM_OK;
  }
  case DM_OP_UNARY: {
    n->p.unary.kind = (dm_unary)sub;
    n->p.unary.alpha = n->p.unary.beta = 0;
    static const char *const k_alpha[] = {"alpha", NULL};
    static const char *const k_ab[] = {"alpha", "beta", NULL};
    static const char *const k_ag[] = {"alpha", "gamma", NULL};
    static const char *const k_clip[] = {"min", "max", NULL};
    const char *const *known = A_NONE;
    switch ((dm_unary)sub) {
    case DM_UNARY_LEAKYRELU:
      known = k_alpha;
      n->p.unary.alpha = attr_f(b, "alpha", 0.01f);
      break;
    case DM_UNARY_ELU:
      known = k_alpha;
      n->p.unary.alpha = attr_f(b, "alpha", 1.0f);
      break;
    case DM_UNARY_SELU:
      known = k_ag;
      n->p.unary.alpha = attr_f(b, "alpha", 1.67326319217681884765625f);
      n->p.unary.beta = attr_f(b, "gamma", 1.05070102214813232421875f);
      break;
    case DM_UNARY_HARDSIGMOID:
      known = k_ab;
      n->p.unary.alpha = attr_f(b, "alpha", 0.2f);
      n->p.unary.beta = attr_f(b, "beta", 0.5f);
      break;
    case DM_UNARY_CLIP: {
      known = k_clip;
      double lo = -INFINITY, hi = INFINITY;
      if (opset < 11) {
        lo = attr_f(b, "min", -INFINITY);
        hi = attr_f(b, "max", INFINITY);
      } else {
        if ((rc = need_inputs(b, n, 1, 3)) ||
            (rc = const_scalar_f(b, n->n_in > 1 ? n->in[1] : -1, &lo, "min")) ||
            (rc = const_scalar_f(b, n->n_in > 2 ? n->in[2] : -1, &hi, "max")))
          return rc;
        n->n_in = 1; /* bounds now live in params */
      }
      n->p.unary.alpha = (float)lo;
      n->p.unary.beta = (float)hi;
      break;
    }
    default: break;
    }
    if ((rc = check_attrs(b, known)) || (rc = need_inputs(b, n, 1, 1)))
      return rc;
    dm_unary u = (dm_unary)sub;
    if (u == DM_UNARY_NOT) {
      if (x->dtype != DM_ONNX_BOOL) return bad_dtype(b, x);
    } else if (u == DM_UNARY_NEG || u == DM_UNARY_ABS || u == DM_UNARY_SIGN) {
      if (!is_float(x->dtype) && !is_int(x->dtype)) return bad_dtype(b, x);
    } else if (!is_float(x->dtype)) {
      return bad_dtype(b, x);
    }
    return DM_OK;
  }
  case DM_OP_BINARY: {
    dm_binary k = (dm_binary)sub;
    static const char *const k_mod[] = {"fmod", NULL};
    if ((rc = check_attrs(b, k == DM_BINARY_MOD ? k_mod : A_NONE)) ||
        (rc = need_inputs(b, n, 2, 2)))
      return rc;
    n->p.binary.kind = k;
    n->p.binary.fmod = attr_i(b, "fmod", 0) != 0;
    const dm_value *y = V(b, n->in[1]);
    bool logic = k == DM_BINARY_AND || k == DM_BINARY_OR || k == DM_BINARY_XOR;
    if (logic) {
      if (x->dtype != DM_ONNX_BOOL || y->dtype != DM_ONNX_BOOL)
        return bad_dtype(b, x);
    } else if (k == DM_BINARY_POW) {
      if (!is_float(x->dtype) || !(is_float(y->dtype) || is_int(y->dtype)))
        return bad_dtype(b, x);
    } else {
      if (x->dtype != y->dtype || !(is_float(x->dtype) || is_int(x->dtype)))
        return bad_dtype(b, x->dtype != y->dtype && is_float(x->dtype) ? y : x);
      if (k == DM_BINARY_MOD && is_float(x->dtype) && !n->p.binary.fmod)
        return NODE_ERR(b, DM_FORMAT, "float Mod requires fmod=1");
    }
    if (k >= DM_BINARY_EQUAL && k <= DM_BINARY_GREATEREQ) odt[0] = DM_ONNX_BOOL;
    return broadcast(b, x, y, &orank[0], odims[0]);
  }
  case DM_OP_WHERE: {
    if ((rc = check_attrs(b, A_NONE)) || (rc = need_inputs(b, n, 3, 3)))
      return rc;
    const dm_value *xv = V(b, n->in[1]), *yv = V(b, n->in[2]);
    if (x->dtype != DM_ONNX_BOOL || xv->dtype != yv->dtype ||
        !dm__dtype_size(xv->dtype))
      return bad_dtype(b, x);
    odt[0] = xv->dtype;
    dm_value tmp = *x;
    if ((rc = broadcast(b, x, xv, &tmp.rank, tmp.dims))) return rc;
    return broadcast(b, &tmp, yv, &orank[0], odims[0]);
  }
  case DM_OP_REDUCE: {
    static const char *const k[] = {"axes", "keepdims", "noop_with_empty_axes",
                                    NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 2))) return rc;
    n->p.reduce.kind = (dm_reduce)sub;
    bool int_ok = sub == DM_REDUCE_SUM || sub == DM_REDUCE_MAX ||
                  sub == DM_REDUCE_MIN || sub == DM_REDUCE_PROD;
    if (!is_float(x->dtype) && !(int_ok && x->dtype == DM_ONNX_INT64))
      return bad_dtype(b, x);
    int64_t axes[DM_MAX_RANK];
    int na = 0;
    const dm_onnx_attr *aa = attr_ints(b, "axes");
    if (n->n_in == 2 && n->in[1] >= 0) {
      if ((rc = const_ints(b, n->in[1], axes, DM_MAX_RANK, &na, "axes")))
        return rc;
      n->n_in = 1;
    } else if (aa) {
      if (aa->n_ints > DM_MAX_RANK)
        return NODE_ERR(b, DM_FORMAT, "too many axes");
      na = (int)aa->n_ints;
      memcpy(axes, aa->ints, (size_t)na * 8);
    }
    uint32_t mask = 0;
    for (int i = 0; i < na; i++) {
      int a = norm_axis(axes[i], x->rank);
      if (a < 0)
        return NODE_ERR(b, DM_FORMAT, "axis %lld out of range",
                        (long long)axes[i]);
      mask |= 1u << a;
    }
    if (na == 0 && !attr_i(b, "noop_with_empty_axes", 0))
      mask = x->rank ? (1u << x->rank) - 1 : 0;
    bool keep = attr_i(b, "keepdims", 1) != 0;
    n->p.reduce.axes_mask = mask;
    n->p.reduce.keepdims = keep;
    int r = 0;
    for (int i = 0; i < x->rank; i++) {
      if (mask & (1u << i)) {
        if (keep) odims[0][r++] = 1;
      } else {
        odims[0][r++] = x->dims[i];
      }
    }
    orank[0] = r;
    return DM_OK;
  }
  case DM_OP_RESHAPE: {
    int64_t dims[DM_MAX_RANK];
    int nd = 0;
    if (sub == V_NONE) {
      const char *const k[] = {"allowzero", opset < 5 ? "shape" : NULL, NULL};
      if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 2, 2)) ||
          (rc = const_ints(b, n->in[1], dims, DM_MAX_RANK, &nd, "shape")))
        return rc;
      bool allowzero = attr_i(b, "allowzero", 0) != 0;
      int neg = -1;
      int64_t known = 1;
      for (int i = 0; i < nd; i++) {
        if (dims[i] == 0 && !allowzero) {
          if (i >= x->rank)
            return NODE_ERR(b, DM_FORMAT, "shape[%d]=0 beyond input rank", i);
          dims[i] = x->dims[i];
        }
        if (dims[i] == -1) {
          if (neg >= 0) return NODE_ERR(b, DM_FORMAT, "two -1 in shape");
          neg = i;
        } else if (dims[i] < 0) {
          return NODE_ERR(b, DM_FORMAT, "shape[%d]=%lld", i,
                          (long long)dims[i]);
        } else {
          known *= dims[i];
        }
      }
      if (neg >= 0) {
        if (known == 0 || x->numel % known)
          return NODE_ERR(b, DM_FORMAT, "cannot infer -1 in shape");
        dims[neg] = x->numel / known;
        known *= dims[neg];
      }
      if (known != x->numel)
        return NODE_ERR(b, DM_FORMAT, "shape has %lld elements, input %lld",
                        (long long)known, (long long)x->numel);
      n->n_in = 1;
    } else if (sub == V_FLATTEN) {
      static const char *const k[] = {"axis", NULL};
      if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 1))) return rc;
      int64_t ax = attr_i(b, "axis", 1);
      if (ax < 0) ax += x->rank;
      if (ax < 0 || ax > x->rank)
        return NODE_ERR(b, DM_FORMAT, "attribute 'axis' out of range");
      int64_t a = 1;
      for (int i = 0; i < ax; i++)
        a *= x->dims[i];
      dims[0] = a;
      dims[1] = a ? x->numel / a : 0;
      if (!a) {
        dims[1] = 1;
        for (int i = (int)ax; i < x->rank; i++)
          dims[1] *= x->dims[i];
      }
      nd = 2;
    } else if (sub == V_SQUEEZE || sub == V_UNSQUEEZE) {
      static const char *const k[] = {"axes", NULL};
      if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 2))) return rc;
      int64_t axes[DM_MAX_RANK];
      int na = 0;
      const dm_onnx_attr *aa = attr_ints(b, "axes");
      if (n->n_in == 2 && n->in[1] >= 0) {
        if ((rc = const_ints(b, n->in[1], axes, DM_MAX_RANK, &na, "axes")))
          return rc;
      } else if (aa) {
        if (aa->n_ints > DM_MAX_RANK) return NODE_ERR(b, DM_FORMAT, "axes");
        na = (int)aa->n_ints;
        memcpy(axes, aa->ints, (size_t)na * 8);
      } else if (sub == V_UNSQUEEZE) {
        return NODE_ERR(b, DM_FORMAT, "missing axes");
      }
      n->n_in = 1;
      if (sub == V_SQUEEZE) {
        uint32_t mask = 0;
        for (int i = 0; i < na; i++) {
          int a = norm_axis(axes[i], x->rank);
          if (a < 0 || x->dims[a] != 1)
            return NODE_ERR(b, DM_FORMAT, "cannot squeeze axis %lld",
                            (long long)axes[i]);
          mask |= 1u << a;
        }
        for (int i = 0; i < x->rank; i++)
          if (na ? !(mask & (1u << i)) : x->dims[i] != 1)
            dims[nd++] = x->dims[i];
      } else {
        int r = x->rank + na;
        if (r > DM_MAX_RANK) return NODE_ERR(b, DM_UNSUPPORTED, "rank > 8");
        uint32_t mask = 0;
        for (int i = 0; i < na; i++) {
          int a = norm_axis(axes[i], r);
          if (a < 0 || (mask & (1u << a)))
            return NODE_ERR(b, DM_FORMAT, "bad unsqueeze axis %lld",
                            (long long)axes[i]);
          mask |= 1u << a;
        }
        int j = 0;
        for (int i = 0; i < r; i++)
          dims[i] = (mask & (1u << i)) ? 1 : x->dims[j++];
        nd = r;
      }
    } else { /* Identity, Dropout */
      static const char *const k[] = {"ratio", "seed", NULL};
      if ((rc = check_attrs(b, sub == V_DROPOUT ? k : A_NONE)) ||
          (rc = need_inputs(b, n, 1, sub == V_DROPOUT ? 3 : 1)))
        return rc;
      if (sub == V_DROPOUT && n->n_in == 3 && n->in[2] >= 0) {
        double tm = 0;
        if ((rc = const_scalar_f(b, n->in[2], &tm, "training_mode"))) return rc;
        if (tm != 0) return NODE_ERR(b, DM_UNSUPPORTED, "training_mode=true");
      }
      n->n_in = 1;
      nd = x->rank;
      memcpy(dims, x->dims, sizeof dims);
    }
    orank[0] = nd;
    memcpy(odims[0], dims, (size_t)nd * 8);
    return DM_OK;
  }
  case DM_OP_TRANSPOSE: {
    static const char *const k[] = {"perm", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 1))) return rc;
    const dm_onnx_attr *pa = attr_ints(b, "perm");
    if (pa && pa->n_ints != (size_t)x->rank)
      return NODE_ERR(b, DM_FORMAT, "attribute 'perm' has wrong length");
    uint32_t seen = 0;
    for (int i = 0; i < x->rank; i++) {
      int64_t p = pa ? pa->ints[i] : x->rank - 1 - i;
      if (p < 0 || p >= x->rank || (seen & (1u << p)))
        return NODE_ERR(b, DM_FORMAT, "attribute 'perm' is not a permutation");
      seen |= 1u << p;
      n->p.transpose.perm[i] = p;
      odims[0][i] = x->dims[p];
    }
    return DM_OK;
  }
  case DM_OP_CONCAT: {
    static const char *const k[] = {"axis", NULL};
    if ((rc = check_attrs(b, k)) ||
        (rc = need_inputs(b, n, n->n_in ? n->n_in : 1, n->n_in)))
      return rc;
    int ax = norm_axis(attr_i(b, "axis", opset < 4 ? 1 : 0), x->rank);
    if (ax < 0) return NODE_ERR(b, DM_FORMAT, "attribute 'axis' out of range");
    n->p.concat.axis = ax;
    int64_t tot = 0;
    for (int i = 0; i < n->n_in; i++) {
      const dm_value *y = V(b, n->in[i]);
      if (y->rank != x->rank || y->dtype != x->dtype)
        return NODE_ERR(b, DM_FORMAT, "input %d rank/dtype mismatch", i);
      for (int d = 0; d < x->rank; d++)
        if (d != ax && y->dims[d] != x->dims[d])
          return NODE_ERR(b, DM_FORMAT, "input %d dim %d mismatch", i, d);
      tot += y->dims[ax];
    }
    odims[0][ax] = tot;
    return DM_OK;
  }
  case DM_OP_SPLIT: {
    static const char *const k[] = {"axis", "split", "num_outputs", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 2))) return rc;
    int ax = norm_axis(attr_i(b, "axis", 0), x->rank);
    if (ax < 0) return NODE_ERR(b, DM_FORMAT, "attribute 'axis' out of range");
    n->p.split.axis = ax;
    int no = n->n_out;
    int64_t sizes[64];
    int ns = 0;
    if (no > 64) return NODE_ERR(b, DM_UNSUPPORTED, "more than 64 outputs");
    const dm_onnx_attr *sa = attr_ints(b, "split");
    if (n->n_in == 2 && n->in[1] >= 0) {
      if ((rc = const_ints(b, n->in[1], sizes, 64, &ns, "split"))) return rc;
      n->n_in = 1;
    } else if (sa) {
      if (sa->n_ints > 64) return NODE_ERR(b, DM_FORMAT, "split too long");
      ns = (int)sa->n_ints;
      memcpy(sizes, sa->ints, (size_t)ns * 8);
    } else {
      int64_t d = x->dims[ax], each = (d + no - 1) / no;
      for (int i = 0; i < no; i++) {
        int64_t left = d - each * i;
        sizes[i] = left < each ? (left < 0 ? 0 : left) : each;
      }
      ns = no;
    }
    int64_t tot = 0;
    if (ns != no)
      return NODE_ERR(b, DM_FORMAT, "split has %d sizes for %d outputs", ns,
                      no);
    for (int i = 0; i < no; i++) {
      if (sizes[i] < 0) return NODE_ERR(b, DM_FORMAT, "negative split");
      tot += sizes[i];
      odt[i] = x->dtype;
      orank[i] = x->rank;
      memcpy(odims[i], x->dims, sizeof x->dims);
      odims[i][ax] = sizes[i];
    }
    if (tot != x->dims[ax])
      return NODE_ERR(b, DM_FORMAT, "split sizes sum to %lld, axis has %lld",
                      (long long)tot, (long long)x->dims[ax]);
    return DM_OK;
  }
  case DM_OP_SLICE: {
    int64_t st[DM_MAX_RANK], en[DM_MAX_RANK], ax[DM_MAX_RANK], sp[DM_MAX_RANK];
    int ns = 0, ne = 0, na = 0, nsp = 0;
    if (opset < 10) {
      static const char *const k[] = {"starts", "ends", "axes", NULL};
      if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 1))) return rc;
      const dm_onnx_attr *s = attr_ints(b, "starts"), *e = attr_ints(b, "ends"),
                         *a = attr_ints(b, "axes");
      if (!s || !e || s->n_ints != e->n_ints || s->n_ints > DM_MAX_RANK ||
          (a && a->n_ints != s->n_ints))
        return NODE_ERR(b, DM_FORMAT, "bad starts/ends/axes");
      ns = ne = (int)s->n_ints;
      memcpy(st, s->ints, (size_t)ns * 8);
      memcpy(en, e->ints, (size_t)ns * 8);
      if (a) {
        na = ns;
        memcpy(ax, a->ints, (size_t)ns * 8);
      }
    } else {
      if ((rc = check_attrs(b, A_NONE)) || (rc = need_inputs(b, n, 3, 5)) ||
          (rc = const_ints(b, n->in[1], st, DM_MAX_RANK, &ns, "starts")) ||
          (rc = const_ints(b, n->in[2], en, DM_MAX_RANK, &ne, "ends")))
        return rc;
      if (n->n_in > 3 && n->in[3] >= 0 &&
          (rc = const_ints(b, n->in[3], ax, DM_MAX_RANK, &na, "axes")))
        return rc;
      if (n->n_in > 4 && n->in[4] >= 0 &&
          (rc = const_ints(b, n->in[4], sp, DM_MAX_RANK, &nsp, "steps")))
        return rc;
      if (ne != ns || (na && na != ns) || (nsp && nsp != ns))
        return NODE_ERR(b, DM_FORMAT, "starts/ends/axes/steps lengths differ");
      n->n_in = 1;
    }
    for (int d = 0; d < x->rank; d++) {
      n->p.slice.start[d] = 0;
      n->p.slice.step[d] = 1;
    }
    uint32_t seen = 0;
    for (int i = 0; i < ns; i++) {
      int d = na ? norm_axis(ax[i], x->rank) : i;
      if (d < 0 || d >= x->rank || (seen & (1u << d)))
        return NODE_ERR(b, DM_FORMAT, "bad axis in slice");
      seen |= 1u << d;
      int64_t dim = x->dims[d], step = nsp ? sp[i] : 1, s = st[i], e = en[i];
      if (step == 0) return NODE_ERR(b, DM_FORMAT, "step 0");
      if (s < 0) s += dim;
      if (e < 0) e += dim;
      int64_t cnt;
      if (step > 0) {
        s = s < 0 ? 0 : (s > dim ? dim : s);
        e = e < 0 ? 0 : (e > dim ? dim : e);
        cnt = e > s ? (e - s + step - 1) / step : 0;
      } else {
        s = s < 0 ? -1 : (s > dim - 1 ? dim - 1 : s);
        e = e < -1 ? -1 : (e > dim - 1 ? dim - 1 : e);
        cnt = s > e ? (s - e + (-step) - 1) / (-step) : 0;
      }
      n->p.slice.start[d] = s;
      n->p.slice.step[d] = step;
      odims[0][d] = cnt;
    }
    return DM_OK;
  }
  case DM_OP_PAD: {
    static const char *const k[] = {"mode", "pads", "value", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 4))) return rc;
    const char *mode = attr_s(b, "mode", "constant");
    if (!strcmp(mode, "constant"))
      n->p.pad.mode = 0;
    else if (!strcmp(mode, "reflect"))
      n->p.pad.mode = 1;
    else if (!strcmp(mode, "edge"))
      n->p.pad.mode = 2;
    else
      return NODE_ERR(b, DM_UNSUPPORTED, "attribute 'mode' value '%s'", mode);
    int64_t pads[2 * DM_MAX_RANK];
    int np = 0;
    double value = 0;
    if (opset < 11) {
      const dm_onnx_attr *pa = attr_ints(b, "pads");
      if (!pa || pa->n_ints != (size_t)(2 * x->rank))
        return NODE_ERR(b, DM_FORMAT, "attribute 'pads' length");
      np = (int)pa->n_ints;
      memcpy(pads, pa->ints, (size_t)np * 8);
      value = attr_f(b, "value", 0.f);
    } else {
      if ((rc = const_ints(b, n->in[1], pads, 2 * DM_MAX_RANK, &np, "pads")))
        return rc;
      if (n->n_in > 2 && n->in[2] >= 0 &&
          (rc = const_scalar_f(b, n->in[2], &value, "constant_value")))
        return rc;
      int64_t axes[DM_MAX_RANK];
      int na = 0;
      if (n->n_in > 3 && n->in[3] >= 0) {
        if ((rc = const_ints(b, n->in[3], axes, DM_MAX_RANK, &na, "axes")))
          return rc;
        if (np != 2 * na) return NODE_ERR(b, DM_FORMAT, "pads/axes length");
        int64_t full[2 * DM_MAX_RANK] = {0};
        for (int i = 0; i < na; i++) {
          int a = norm_axis(axes[i], x->rank);
          if (a < 0) return NODE_ERR(b, DM_FORMAT, "bad axis");
          full[a] = pads[i];
          full[x->rank + a] = pads[na + i];
        }
        memcpy(pads, full, sizeof full);
        np = 2 * x->rank;
      }
      if (np != 2 * x->rank)
        return NODE_ERR(b, DM_FORMAT, "pads length %d", np);
      n->n_in = 1;
    }
    n->p.pad.value = value;
    for (int d = 0; d < x->rank; d++) {
      n->p.pad.pads[d] = pads[d];
      n->p.pad.pads[x->rank + d] = pads[x->rank + d];
      int64_t o = x->dims[d] + pads[d] + pads[x->rank + d];
      if (o < 0 || pads[d] > 1 << 20 || pads[x->rank + d] > 1 << 20)
        return NODE_ERR(b, DM_FORMAT, "pads out of range on axis %d", d);
      if (n->p.pad.mode == 1 &&
          (pads[d] >= x->dims[d] || pads[x->rank + d] >= x->dims[d]))
        return NODE_ERR(b, DM_UNSUPPORTED, "reflect pad wider than the input");
      if (n->p.pad.mode == 2 && x->dims[d] == 0 && o > 0)
        return NODE_ERR(b, DM_FORMAT, "edge pad of an empty axis");
      odims[0][d] = o;
    }
    /* A Pad by zero on every axis (PyTorch exports one before DenseNet's
     * transition pools) is an Identity: a view of its input, instead of a
     * reference-kernel copy that also leaves its output in plain layout. */
    bool none = true;
    for (int d = 0; d < 2 * x->rank; d++)
      if (pads[d]) none = false;
    if (none) {
      memset(&n->p, 0, sizeof n->p);
      n->op = DM_OP_RESHAPE;
    }
    return DM_OK;
  }
  case DM_OP_GEMM: {
    static const char *const k[] = {"alpha", "beta", "transA", "transB", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 2, 3))) return rc;
    const dm_value *w = V(b, n->in[1]);
    if (!is_float(x->dtype) || !is_float(w->dtype))
      return bad_dtype(b, is_float(x->dtype) ? w : x);
    if (x->rank != 2 || w->rank != 2)
      return NODE_ERR(b, DM_FORMAT,
                      "inputs must be 2-D matrices (rank %d and %d)", x->rank,
                      w->rank);
    n->p.gemm.alpha = attr_f(b, "alpha", 1.f);
    n->p.gemm.beta = attr_f(b, "beta", 1.f);
    n->p.gemm.trans_a = attr_i(b, "transA", 0) != 0;
    n->p.gemm.trans_b = attr_i(b, "transB", 0) != 0;
    int64_t m = n->p.gemm.trans_a ? x->dims[1] : x->dims[0];
    int64_t ka = n->p.gemm.trans_a ? x->dims[0] : x->dims[1];
    int64_t kb = n->p.gemm.trans_b ? w->dims[1] : w->dims[0];
    int64_t nn = n->p.gemm.trans_b ? w->dims[0] : w->dims[1];
    if (ka != kb)
      return NODE_ERR(b, DM_FORMAT, "inner dims %lld vs %lld", (long long)ka,
                      (long long)kb);
    orank[0] = 2;
    odims[0][0] = m;
    odims[0][1] = nn;
    if (n->n_in == 3 && n->in[2] >= 0) {
      const dm_value *c = V(b, n->in[2]);
      dm_value mn = {0};
      mn.rank = 2;
      mn.dims[0] = m;
      mn.dims[1] = nn;
      int r;
      int64_t d[DM_MAX_RANK];
      if (!is_float(c->dtype) || c->rank > 2) return bad_dtype(b, c);
      if ((rc = broadcast(b, &mn, c, &r, d))) return rc;
      if (d[0] != m || d[1] != nn)
        return NODE_ERR(b, DM_FORMAT, "C does not broadcast to [M,N]");
    }
    return DM_OK;
  }
  case DM_OP_MATMUL: {
    if ((rc = check_attrs(b, A_NONE)) || (rc = need_inputs(b, n, 2, 2)))
      return rc;
    const dm_value *y = V(b, n->in[1]);
    if (!is_float(x->dtype) || !is_float(y->dtype)) return bad_dtype(b, x);
    if (x->rank < 1 || y->rank < 1)
      return NODE_ERR(b, DM_FORMAT, "scalar operand");
    int64_t ka = x->dims[x->rank - 1];
    int64_t kb = y->rank == 1 ? y->dims[0] : y->dims[y->rank - 2];
    if (ka != kb)
      return NODE_ERR(b, DM_FORMAT, "inner dims %lld vs %lld", (long long)ka,
                      (long long)kb);
    dm_value bx = {0}, by = {0};
    bx.rank = x->rank > 2 ? x->rank - 2 : 0;
    memcpy(bx.dims, x->dims, (size_t)bx.rank * 8);
    by.rank = y->rank > 2 ? y->rank - 2 : 0;
    memcpy(by.dims, y->dims, (size_t)by.rank * 8);
    bx.name = x->name;
    by.name = y->name;
    int r;
    int64_t d[DM_MAX_RANK];
    if ((rc = broadcast(b, &bx, &by, &r, d))) return rc;
    if (x->rank >= 2) d[r++] = x->dims[x->rank - 2];
    if (y->rank >= 2) d[r++] = y->dims[y->rank - 1];
    if (r > DM_MAX_RANK) return NODE_ERR(b, DM_UNSUPPORTED, "rank");
    orank[0] = r;
    memcpy(odims[0], d, (size_t)r * 8);
    return DM_OK;
  }
  case DM_OP_SOFTMAX: {
    static const char *const k[] = {"axis", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 1))) return rc;
    if (!is_float(x->dtype)) return bad_dtype(b, x);
    n->p.softmax.legacy = opset < 13;
    n->p.softmax.log = sub == V_LOGSOFTMAX;
    int ax = norm_axis(attr_i(b, "axis", opset < 13 ? 1 : -1), x->rank);
    if (ax < 0) return NODE_ERR(b, DM_FORMAT, "attribute 'axis' out of range");
    n->p.softmax.axis = ax;
    return DM_OK;
  }
  case DM_OP_SHAPE: {
    static const char *const k[] = {"start", "end", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 1))) return rc;
    int64_t s = attr_i(b, "start", 0), e = attr_i(b, "end", x->rank);
    if (s < 0) s += x->rank;
    if (e < 0) e += x->rank;
    s = s < 0 ? 0 : (s > x->rank ? x->rank : s);
    e = e < 0 ? 0 : (e > x->rank ? x->rank : e);
    if (e < s) e = s;
    n->p.shape.start = s;
    n->p.shape.end = e;
    odt[0] = DM_ONNX_INT64;
    orank[0] = 1;
    odims[0][0] = e - s;
    return DM_OK;
  }
  case DM_OP_GATHER: {
    static const char *const k[] = {"axis", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 2, 2))) return rc;
    const dm_value *idx = V(b, n->in[1]);
    if (!is_int(idx->dtype)) return bad_dtype(b, idx);
    int ax = norm_axis(attr_i(b, "axis", 0), x->rank);
    if (ax < 0 || x->rank == 0)
      return NODE_ERR(b, DM_FORMAT, "attribute 'axis' out of range");
    n->p.gather.axis = ax;
    int r = 0;
    if (x->rank - 1 + idx->rank > DM_MAX_RANK)
      return NODE_ERR(b, DM_UNSUPPORTED, "rank");
    for (int i = 0; i < ax; i++)
      odims[0][r++] = x->dims[i];
    for (int i = 0; i < idx->rank; i++)
      odims[0][r++] = idx->dims[i];
    for (int i = ax + 1; i < x->rank; i++)
      odims[0][r++] = x->dims[i];
    orank[0] = r;
    return DM_OK;
  }
  case DM_OP_CAST: {
    static const char *const k[] = {"to", "saturate", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 1))) return rc;
    int32_t to = (int32_t)attr_i(b, "to", 0);
    static const int32_t ok[] = {DM_ONNX_FLOAT,  DM_ONNX_DOUBLE, DM_ONNX_INT8,
                                 DM_ONNX_INT16,  DM_ONNX_INT32,  DM_ONNX_INT64,
                                 DM_ONNX_UINT8,  DM_ONNX_UINT16, DM_ONNX_UINT32,
                                 DM_ONNX_UINT64, DM_ONNX_BOOL};
    bool to_ok = false, from_ok = false;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
      to_ok |= ok[i] == to;
      from_ok |= ok[i] == x->dtype;
    }
    if (!to_ok || !from_ok)
      return NODE_ERR(b, DM_UNSUPPORTED, "cast from %s to %s",
                      dm_onnx_dtype_name(x->dtype), dm_onnx_dtype_name(to));
    n->p.cast.to = to;
    odt[0] = to;
    return DM_OK;
  }
  case DM_OP_EXPAND: {
    if ((rc = check_attrs(b, A_NONE)) || (rc = need_inputs(b, n, 2, 2)))
      return rc;
    dm_value s = {0};
    int ns;
    if ((rc = const_ints(b, n->in[1], s.dims, DM_MAX_RANK, &ns, "shape")))
      return rc;
    s.rank = ns;
    s.name = "shape";
    n->n_in = 1;
    return broadcast(b, x, &s, &orank[0], odims[0]);
  }
  case DM_OP_CONSTANTOFSHAPE: {
    static const char *const k[] = {"value", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 1))) return rc;
    int ns;
    if ((rc = const_ints(b, n->in[0], odims[0], DM_MAX_RANK, &ns, "input")))
      return rc;
    orank[0] = ns;
    const dm_onnx_attr *va = attr(b, "value", DM_ONNX_ATTR_TENSOR);
    odt[0] = DM_ONNX_FLOAT;
    n->p.constantofshape.value = 0;
    if (va) {
      const dm_onnx_tensor *t = va->t;
      if (t->numel != 1)
        return NODE_ERR(b, DM_FORMAT, "value must hold one element");
      odt[0] = t->dtype;
      double v = 0;
      switch (t->dtype) {
      case DM_ONNX_FLOAT: {
        float f;
        memcpy(&f, t->data, 4);
        v = f;
        break;
      }
      case DM_ONNX_INT64: {
        int64_t q;
        memcpy(&q, t->data, 8);
        v = (double)q;
        break;
      }
      case DM_ONNX_INT32: {
        int32_t q;
        memcpy(&q, t->data, 4);
        v = q;
        break;
      }
      case DM_ONNX_BOOL:
      case DM_ONNX_UINT8: v = ((const uint8_t *)t->data)[0]; break;
      default:
        return NODE_ERR(b, DM_UNSUPPORTED, "value dtype %s",
                        dm_onnx_dtype_name(t->dtype));
      }
      n->p.constantofshape.value = v;
    }
    n->n_in = 0;
    return DM_OK;
  }
  case DM_OP_RANGE: {
    if ((rc = check_attrs(b, A_NONE)) || (rc = need_inputs(b, n, 3, 3)))
      return rc;
    double s = 0, l = 0, d = 0;
    if ((rc = const_scalar_f(b, n->in[0], &s, "start")) ||
        (rc = const_scalar_f(b, n->in[1], &l, "limit")) ||
        (rc = const_scalar_f(b, n->in[2], &d, "delta")))
      return rc;
    if (d == 0) return NODE_ERR(b, DM_FORMAT, "delta 0");
    double cnt = ceil((l - s) / d);
    if (cnt < 0) cnt = 0;
    if (cnt > 1e9) return NODE_ERR(b, DM_RANGE, "range too long");
    if (!is_float(x->dtype) && !is_int(x->dtype)) return bad_dtype(b, x);
    orank[0] = 1;
    odims[0][0] = (int64_t)cnt;
    return DM_OK;
  }
  case DM_OP_TILE: {
    if ((rc = check_attrs(b, A_NONE)) || (rc = need_inputs(b, n, 2, 2)))
      return rc;
    int64_t rep[DM_MAX_RANK];
    int nr;
    if ((rc = const_ints(b, n->in[1], rep, DM_MAX_RANK, &nr, "repeats")))
      return rc;
    if (nr != x->rank) return NODE_ERR(b, DM_FORMAT, "repeats length");
    for (int i = 0; i < nr; i++) {
      if (rep[i] < 0) return NODE_ERR(b, DM_FORMAT, "negative repeat");
      odims[0][i] = x->dims[i] * rep[i];
    }
    return DM_OK;
  }
  case DM_OP_LAYERNORM: {
    static const char *const k[] = {"axis", "epsilon", "stash_type", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 2, 3))) return rc;
    if (!is_float(x->dtype)) return bad_dtype(b, x);
    if (attr_i(b, "stash_type", 1) != 1)
      return NODE_ERR(b, DM_UNSUPPORTED, "attribute 'stash_type' != 1");
    int ax = norm_axis(attr_i(b, "axis", -1), x->rank);
    if (ax < 0) return NODE_ERR(b, DM_FORMAT, "attribute 'axis' out of range");
    n->p.layernorm.axis = ax;
    for (int i = 1; i < n->n_out; i++) { /* Mean, InvStdDev: [..., 1, 1] */
      odt[i] = DM_ONNX_FLOAT;
      orank[i] = x->rank;
      memcpy(odims[i], x->dims, sizeof x->dims);
      for (int d = ax; d < x->rank; d++)
        odims[i][d] = 1;
    }
    n->p.layernorm.eps = attr_f(b, "epsilon", 1e-5f);
    return DM_OK;
  }
  case DM_OP_INSTANCENORM: {
    static const char *const k[] = {"epsilon", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 3, 3))) return rc;
    if (!is_float(x->dtype) || x->rank < 3) return bad_dtype(b, x);
    n->p.instancenorm.eps = attr_f(b, "epsilon", 1e-5f);
    return DM_OK;
  }
  case DM_OP_PRELU: {
    if ((rc = check_attrs(b, A_NONE)) || (rc = need_inputs(b, n, 2, 2)))
      return rc;
    if (!is_float(x->dtype)) return bad_dtype(b, x);
    int r;
    int64_t d[DM_MAX_RANK];
    if ((rc = broadcast(b, x, V(b, n->in[1]), &r, d))) return rc;
    if (r != x->rank || memcmp(d, x->dims, (size_t)r * 8))
      return NODE_ERR(b, DM_FORMAT, "slope does not broadcast to X");
    return DM_OK;
  }
  case DM_OP_LRN: {
    static const char *const k[] = {"alpha", "beta", "bias", "size", NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 1))) return rc;
    if (!is_float(x->dtype) || x->rank < 3) return bad_dtype(b, x);
    n->p.lrn.size = attr_i(b, "size", 0);
    if (n->p.lrn.size < 1) return NODE_ERR(b, DM_FORMAT, "attribute 'size'");
    n->p.lrn.alpha = attr_f(b, "alpha", 1e-4f);
    n->p.lrn.beta = attr_f(b, "beta", 0.75f);
    n->p.lrn.bias = attr_f(b, "bias", 1.0f);
    return DM_OK;
  }
  case DM_OP_ARGMAX: {
    static const char *const k[] = {"axis", "keepdims", "select_last_index",
                                    NULL};
    if ((rc = check_attrs(b, k)) || (rc = need_inputs(b, n, 1, 1))) return rc;
    if (!is_float(x->dtype) && !is_int(x->dtype)) return bad_dtype(b, x);
    int ax = norm_axis(attr_i(b, "axis", 0), x->rank);
    if (ax < 0 || x->rank == 0 || x->dims[ax] == 0)
      return NODE_ERR(b, DM_FORMAT, "attribute 'axis' out of range or empty");
    n->p.argmax.axis = ax;
    n->p.argmax.keepdims = attr_i(b, "keepdims", 1) != 0;
    n->p.argmax.min = sub == V_ARGMIN;
    n->p.argmax.last = attr_i(b, "select_last_index", 0) != 0;
    odt[0] = DM_ONNX_INT64;
    int r = 0;
    for (int i = 0; i < x->rank; i++)
      if (i != ax || n->p.argmax.keepdims)
        odims[0][r++] = i == ax ? 1 : x->dims[i];
    orank[0] = r;
    return DM_OK;
  }
  case DM_OP_QUANTIZE:
  case DM_OP_DEQUANTIZE: return infer_quant(b, n, odt);
  default:
    return NODE_ERR(b, DM_UNSUPPORTED, "internal: op without shape rule");
  }
}

/* ---------- building nodes ---------- */

static dm_err push_node(builder *b, const dm_node *tmpl, int *out_idx) {
  dm_graph *g = b->g;
  if (grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes))
    return dm_errf(b->eb, DM_NOMEM, "out of memory");
  g->nodes[g->n_nodes] = *tmpl;
  *out_idx = g->n_nodes++;
  return DM_OK;
}

/* A folded DequantizeLinear of constant 8/32-bit data: remember its source
 * on the float constant it produced (fuse_qdq runs consumers on it). */
static dm_err note_dq(builder *b, const dm_node *n) {
  dm_dqsrc *d = dm__graph_alloc(b->g, sizeof *d);
  if (!d) return dm_errf(b->eb, DM_NOMEM, "out of memory");
  d->q = n->in[0];
  d->scale = n->in[1];
  d->zp = n->n_in > 2 ? n->in[2] : -1;
  d->axis = n->p.quant.axis;
  V(b, n->out[0])->dq = d;
  return DM_OK;
}

/* Creates the node with already-resolved input value indices, infers its
 * outputs (named onames, or internal when NULL) and folds it when every
 * input is constant. */
static dm_err emit(builder *b, dm_op op, int sub, const int *ins, int n_in,
                   const char *const *onames, int n_out, int *outs) {
  dm_graph *g = b->g;
  dm_err rc;
  dm_node n;
  memset(&n, 0, sizeof n);
  n.op = op;
  n.name = pool_strdup(g, b->cur->name[0] ? b->cur->name : b->cur->op_type);
  n.op_type = pool_strdup(g, b->cur->op_type);
  n.n_in = n_in;
  n.n_out = n_out;
  n.in = dm__graph_alloc(g, sizeof(int) * (size_t)(n_in + DM_MAX_POST + 1));
  n.out = dm__graph_alloc(g, sizeof(int) * (size_t)(n_out + 1));
  if (!n.name || !n.op_type || !n.in || !n.out)
    return dm_errf(b->eb, DM_NOMEM, "out of memory");
  memcpy(n.in, ins, sizeof(int) * (size_t)n_in);
  int32_t *odt = calloc((size_t)n_out, sizeof *odt);
  int *orank = calloc((size_t)n_out, sizeof *orank);
  int64_t(*odims)[DM_MAX_RANK] = calloc((size_t)n_out, sizeof *odims);
  if (!odt || !orank || !odims) {
    rc = dm_errf(b->eb, DM_NOMEM, "out of memory");
    goto out;
  }
  b->bad_attr = NULL;
  if ((rc = infer(b, &n, sub, odt, orank, odims))) goto out;
  if (b->bad_attr) {
    rc = NODE_ERR(b, DM_FORMAT, "attribute '%s' has the wrong type",
                  b->bad_attr);
    goto out;
  }
  /* trailing omitted optional inputs are dropped */
  while (n.n_in > 0 && n.in[n.n_in - 1] < 0)
    n.n_in--;
  bool all_const = true;
  for (int i = 0; i < n.n_in; i++)
    if (n.in[i] >= 0 && V(b, n.in[i])->kind != DM_VAL_CONST) all_const = false;
  if (n.op == DM_OP_SHAPE) all_const = true; /* needs the static shape only */
  for (int i = 0; i < n_out; i++) {
    int v;
    const char *nm = onames ? onames[i] : "";
    if (nm[0] && find_value(b, nm) >= 0) {
      rc = NODE_ERR(b, DM_FORMAT, "output '%s' is defined twice", nm);
      goto out;
    }
    if ((rc = add_value(b, nm, &v))) goto out;
    if ((rc = set_shape(b, v, odt[i], orank[i], odims[i]))) goto out;
    V(b, v)->kind = DM_VAL_ACT;
    n.out[i] = v;
    if (outs) outs[i] = v;
  }
  if (all_const) {
    /* fold now: run the reference kernel into owned buffers, within a
     * budget (dm__graph_build): a few bytes of ConstantOfShape or Expand
     * could otherwise ask for gigabytes */
    size_t need = 0;
    for (int i = 0; i < n_out; i++)
      need += V(b, n.out[i])->nbytes;
    if (need > b->fold_left) {
      rc = NODE_ERR(b, DM_UNSUPPORTED,
                    "folding this constant node would need %.1f MB, more "
                    "than the %.1f MB left for constants made at load",
                    (double)need / 1e6, (double)b->fold_left / 1e6);
      goto out;
    }
    b->fold_left -= need;
    const void **ip = calloc((size_t)n.n_in + 1, sizeof *ip);
    void **op_ = calloc((size_t)n_out, sizeof *op_);
    if (!ip || !op_) {
      free(ip);
      free(op_);
      rc = dm_errf(b->eb, DM_NOMEM, "out of memory");
      goto out;
    }
    for (int i = 0; i < n.n_in && !rc; i++)
      if (n.in[i] >= 0) rc = dm__graph_align_const(g, n.in[i]);
    if (rc) {
      free(ip);
      free(op_);
      rc = dm_errf(b->eb, DM_NOMEM, "out of memory");
      goto out;
    }
    for (int i = 0; i < n.n_in; i++)
      ip[i] = n.in[i] < 0 ? NULL
              : V(b, n.in[i])->kind == DM_VAL_CONST
                  ? V(b, n.in[i])->data
                  : (const void *)&n; /* Shape: not read */
    for (int i = 0; i < n_out && !rc; i++) {
      rc = set_const(b, n.out[i], NULL, false);
      op_[i] = V(b, n.out[i])->owned;
    }
    if (!rc) {
      dm_errbuf keb;
      keb.msg[0] = 0;
      rc = dm__ref_node(g, &n, ip, op_, &keb);
      if (rc) rc = NODE_ERR(b, rc, "constant folding failed: %s", keb.msg);
    }
    if (!rc && n.op == DM_OP_DEQUANTIZE) rc = note_dq(b, &n);
    free(ip);
    free(op_);
    g->stats.folded_const++;
    goto out;
  }
  int idx = -1;
  if ((rc = push_node(b, &n, &idx))) goto out;
  for (int i = 0; i < n_out; i++)
    V(b, n.out[i])->producer = idx;
out:
  free(odt);
  free(orank);
  free(odims);
  return rc;
}

static dm_err add_constant_node(builder *b) {
  const dm_onnx_node *on = b->cur;
  static const char *const k[] = {"value",     "value_float", "value_floats",
                                  "value_int", "value_ints",  NULL};
  dm_err rc;
  if ((rc = check_attrs(b, k))) return rc;
  if (on->n_outputs != 1 || on->n_attrs != 1)
    return NODE_ERR(b, DM_UNSUPPORTED, "needs exactly one value attribute");
  const dm_onnx_attr *a = &on->attrs[0];
  int v;
  if (find_value(b, on->outputs[0]) >= 0)
    return NODE_ERR(b, DM_FORMAT, "output '%s' is defined twice",
                    on->outputs[0]);
  if ((rc = add_value(b, on->outputs[0], &v))) return rc;
  int64_t one = 1;
  if (a->type == DM_ONNX_ATTR_TENSOR) {
    const dm_onnx_tensor *t = a->t;
    if ((rc = set_shape(b, v, t->dtype, t->ndim, t->dims))) return rc;
    return set_const(b, v, t->data, true);
  }
  if (a->type == DM_ONNX_ATTR_FLOAT && !strcmp(a->name, "value_float")) {
    if ((rc = set_shape(b, v, DM_ONNX_FLOAT, 0, NULL))) return rc;
    return set_const(b, v, &a->f, false);
  }
  if (a->type == DM_ONNX_ATTR_INT && !strcmp(a->name, "value_int")) {
    if ((rc = set_shape(b, v, DM_ONNX_INT64, 0, NULL))) return rc;
    return set_const(b, v, &a->i, false);
  }
  if (a->type == DM_ONNX_ATTR_FLOATS && !strcmp(a->name, "value_floats")) {
    one = (int64_t)a->n_floats;
    if ((rc = set_shape(b, v, DM_ONNX_FLOAT, 1, &one))) return rc;
    return set_const(b, v, a->floats, false);
  }
  if (a->type == DM_ONNX_ATTR_INTS && !strcmp(a->name, "value_ints")) {
    one = (int64_t)a->n_ints;
    if ((rc = set_shape(b, v, DM_ONNX_INT64, 1, &one))) return rc;
    return set_const(b, v, a->ints, false);
  }
  return NODE_ERR(b, DM_UNSUPPORTED, "attribute '%s' of type %d", a->name,
                  (int)a->type);
}

/* Emits an internal node that reads no attributes of the current node. */
static dm_err emit_plain(builder *b, dm_op op, int sub, const int *ins,
                         int n_in, int *out) {
  const dm_onnx_node *saved = b->cur;
  dm_onnx_node plain = *saved;
  plain.n_attrs = 0;
  b->cur = &plain;
  dm_err rc = emit(b, op, sub, ins, n_in, NULL, 1, out);
  b->cur = saved;
  return rc;
}

/* Opset < 7 semantics that differ from today's: is_test (training mode is
 * refused), Reshape's shape attribute (opset < 5), and arithmetic ops'
 * broadcast=1 with an axis, where B's dims align with A's starting at axis
 * (rewritten as a Reshape of B followed by numpy broadcasting). */
static dm_err legacy_rewrite(builder *b, const op_entry *e, int *ins,
                             int *n_in_io) {
  dm_err rc;
  int n_in = *n_in_io;
  b->legacy_axis = false;
  bool training_op = e->op == DM_OP_BATCHNORM ||
                     (e->op == DM_OP_RESHAPE && e->sub == V_DROPOUT);
  if (training_op && attr_i(b, "is_test", 0) == 0)
    return NODE_ERR(b, DM_UNSUPPORTED,
                    "training mode (attribute 'is_test' is 0 or absent)");
  if (e->op == DM_OP_RESHAPE && e->sub == V_NONE && n_in == 1) {
    const dm_onnx_attr *sa = attr_ints(b, "shape");
    if (!sa) return NODE_ERR(b, DM_FORMAT, "missing shape");
    int v;
    int64_t len = (int64_t)sa->n_ints;
    if ((rc = add_value(b, "", &v)) ||
        (rc = set_shape(b, v, DM_ONNX_INT64, 1, &len)) ||
        (rc = set_const(b, v, sa->ints, false)))
      return rc;
    ins[1] = v;
    *n_in_io = 2;
    return DM_OK;
  }
  if (e->op == DM_OP_PRELU && n_in == 2 && ins[0] >= 0 && ins[1] >= 0 &&
      V(b, ins[1])->rank == 1 && V(b, ins[0])->rank > 2 &&
      V(b, ins[1])->dims[0] == V(b, ins[0])->dims[1] &&
      V(b, ins[1])->dims[0] != 1) {
    /* opset < 7 PRelu: a [C] slope applies per channel (axis 1) */
    int64_t shape[DM_MAX_RANK], r = V(b, ins[0])->rank - 1;
    shape[0] = V(b, ins[1])->dims[0];
    for (int i = 1; i < r; i++)
      shape[i] = 1;
    int sv, ns;
    if ((rc = add_value(b, "", &sv)) ||
        (rc = set_shape(b, sv, DM_ONNX_INT64, 1, &r)) ||
        (rc = set_const(b, sv, shape, false)))
      return rc;
    int pair[2] = {ins[1], sv};
    if ((rc = emit_plain(b, DM_OP_RESHAPE, V_NONE, pair, 2, &ns))) return rc;
    ins[1] = ns;
    return DM_OK;
  }
  if (e->op != DM_OP_BINARY || e->sub < 0 || n_in != 2 ||
      attr_i(b, "broadcast", 0) == 0)
    return DM_OK;
  const dm_onnx_attr *ax = attr(b, "axis", DM_ONNX_ATTR_INT);
  b->legacy_axis = true;
  if (!ax || ins[0] < 0 || ins[1] < 0) return DM_OK; /* suffix = numpy */
  const dm_value *A = V(b, ins[0]), *B = V(b, ins[1]);
  int axis = norm_axis(ax->i, A->rank);
  if (axis < 0 || axis + B->rank > A->rank)
    return NODE_ERR(b, DM_FORMAT, "broadcast axis %lld out of range",
                    (long long)ax->i);
  int64_t shape[DM_MAX_RANK], r = A->rank - axis;
  for (int i = 0; i < r; i++)
    shape[i] = i < B->rank ? B->dims[i] : 1;
  int sv, nb;
  if ((rc = add_value(b, "", &sv)) ||
      (rc = set_shape(b, sv, DM_ONNX_INT64, 1, &r)) ||
      (rc = set_const(b, sv, shape, false)))
    return rc;
  int pair[2] = {ins[1], sv};
  if ((rc = emit_plain(b, DM_OP_RESHAPE, V_NONE, pair, 2, &nb))) return rc;
  ins[1] = nb;
  return DM_OK;
}

/* Size: the element count of a statically shaped input, a constant. */
static dm_err add_size_node(builder *b) {
  const dm_onnx_node *on = b->cur;
  dm_err rc;
  if ((rc = check_attrs(b, A_NONE))) return rc;
  if (on->n_inputs != 1 || on->n_outputs != 1 || !on->inputs[0][0])
    return NODE_ERR(b, DM_FORMAT, "needs one input and one output");
  int x = find_value(b, on->inputs[0]), v;
  if (x < 0)
    return NODE_ERR(b, DM_FORMAT, "input '%s' is not defined", on->inputs[0]);
  if (find_value(b, on->outputs[0]) >= 0)
    return NODE_ERR(b, DM_FORMAT, "output '%s' is defined twice",
                    on->outputs[0]);
  int64_t numel = V(b, x)->numel;
  if ((rc = add_value(b, on->outputs[0], &v)) ||
      (rc = set_shape(b, v, DM_ONNX_INT64, 0, NULL)) ||
      (rc = set_const(b, v, &numel, false)))
    return rc;
  b->g->stats.folded_const++;
  return DM_OK;
}

static dm_err add_onnx_node(builder *b) {
  const dm_onnx_node *on = b->cur;
  dm_err rc = DM_OK;
  if (on->domain[0] && strcmp(on->domain, "ai.onnx") != 0)
    return NODE_ERR(b, DM_UNSUPPORTED, "domain '%s' is not supported",
                    on->domain);
  const op_entry *e = op_lookup(on->op_type);
  if (!e) return NODE_ERR(b, DM_UNSUPPORTED, "op is not supported");
  if (e->sub == V_CONSTANT && e->op == DM_OP_COUNT) return add_constant_node(b);
  if (e->sub == V_SIZE && e->op == DM_OP_COUNT) return add_size_node(b);
  if (on->n_inputs > 4096 || on->n_outputs > 64)
    return NODE_ERR(b, DM_UNSUPPORTED, "too many inputs/outputs");
  int ins[4096];
  int n_in = (int)on->n_inputs;
  for (int i = 0; i < n_in; i++) {
    if (!on->inputs[i][0]) {
      ins[i] = -1;
      continue;
    }
    ins[i] = find_value(b, on->inputs[i]);
    if (ins[i] < 0)
      return NODE_ERR(b, DM_FORMAT,
                      "input '%s' is not produced by an earlier node, an "
                      "initializer or a graph input",
                      on->inputs[i]);
  }
  int n_out = (int)on->n_outputs;
  while (n_out > 1 && !on->outputs[n_out - 1][0])
    n_out--;
  b->n_out = n_out;
  /* Dropout's optional mask output: a constant all-true tensor. */
  if (e->op == DM_OP_RESHAPE && e->sub == V_DROPOUT && n_out == 2) {
    if ((rc = emit(b, e->op, e->sub, ins, n_in,
                   (const char *const *)on->outputs, 1, NULL)))
      return rc;
    int v, src = find_value(b, on->outputs[0]);
    if (!on->outputs[1][0]) return DM_OK;
    if ((rc = add_value(b, on->outputs[1], &v)) ||
        (rc =
             set_shape(b, v, DM_ONNX_BOOL, V(b, src)->rank, V(b, src)->dims)) ||
        (rc = set_const(b, v, NULL, false)))
      return rc;
    memset(V(b, v)->owned, 1, V(b, v)->nbytes);
    return DM_OK;
  }
  if (b->g->opset < 7 && (rc = legacy_rewrite(b, e, ins, &n_in))) return rc;
  /* Variadic Sum/Mean/Max/Min: a chain of binary nodes. */
  bool variadic =
      e->op == DM_OP_BINARY &&
      (e->sub < 0 ||
       ((e->sub == DM_BINARY_MAX || e->sub == DM_BINARY_MIN) && n_in != 2));
  if (variadic) {
    dm_binary k = e->sub == -V_SUM || e->sub == -V_MEAN ? DM_BINARY_ADD
                                                        : (dm_binary)e->sub;
    if (n_in < 1 || n_out != 1)
      return NODE_ERR(b, DM_FORMAT, "needs at least one input");
    for (int i = 0; i < n_in; i++)
      if (ins[i] < 0) return NODE_ERR(b, DM_FORMAT, "empty input name");
    int acc = ins[0];
    bool mean = e->sub == -V_MEAN;
    if (n_in == 1 && !mean) {
      return emit(b, DM_OP_RESHAPE, V_IDENTITY, ins, 1,
                  (const char *const *)on->outputs, 1, NULL);
    }
    for (int i = 1; i < n_in; i++) {
      int pair[2] = {acc, ins[i]};
      bool last = i == n_in - 1 && !mean;
      if ((rc = emit(b, DM_OP_BINARY, (int)k, pair, 2,
                     last ? (const char *const *)on->outputs : NULL, 1, &acc)))
        return rc;
    }
    if (mean) {
      int c;
      if ((rc = add_value(b, "", &c)) ||
          (rc = set_shape(b, c, V(b, acc)->dtype, 0, NULL)))
        return rc;
      if (!is_float(V(b, c)->dtype)) return bad_dtype(b, V(b, acc));
      float inv = (float)n_in;
      if ((rc = set_const(b, c, &inv, false))) return rc;
      int pair[2] = {acc, c};
      return emit(b, DM_OP_BINARY, DM_BINARY_DIV, pair, 2,
                  (const char *const *)on->outputs, 1, NULL);
    }
    return DM_OK;
  }
  if (n_out < 1) return NODE_ERR(b, DM_FORMAT, "has no outputs");
  for (int i = 0; i < n_out; i++)
    if (!on->outputs[i][0] && !(i > 0))
      return NODE_ERR(b, DM_FORMAT, "output %d has an empty name", i);
  /* Unused optional outputs beyond the first are refused by infer() for the
   * ops that have them; Split needs all. */
  return emit(b, e->op, e->sub, ins, n_in, (const char *const *)on->outputs,
              e->op == DM_OP_SPLIT || e->op == DM_OP_LAYERNORM ? n_out : 1,
              NULL);
}

/* ---------- optimisation passes ---------- */

/* Consumers and producers over the live nodes (dead may be NULL). */
static void count_consumers(dm_graph *g, const bool *dead) {
  for (int v = 0; v < g->n_values; v++) {
    g->values[v].n_consumers = g->values[v].is_output ? 1 : 0;
    g->values[v].producer = -1;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    if (dead && dead[i]) continue;
    const dm_node *n = &g->nodes[i];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0) g->values[n->in[k]].n_consumers++;
    for (int k = 0; k < n->n_out; k++)
      g->values[n->out[k]].producer = i;
  }
}

/* Index of the only node reading v, or -1. */
static int sole_consumer(const dm_graph *g, int v, const bool *dead) {
  if (g->values[v].n_consumers != 1 || g->values[v].is_output) return -1;
  for (int i = 0; i < g->n_nodes; i++) {
    if (dead[i]) continue;
    const dm_node *n = &g->nodes[i];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] == v) return i;
  }
  return -1;
}

static bool fusable_act(dm_unary u) {
  switch (u) {
  case DM_UNARY_RELU:
  case DM_UNARY_LEAKYRELU:
  case DM_UNARY_CLIP:
  case DM_UNARY_SIGMOID:
  case DM_UNARY_HARDSIGMOID:
  case DM_UNARY_HARDSWISH:
  case DM_UNARY_TANH:
  case DM_UNARY_ELU:
  case DM_UNARY_SWISH:
  case DM_UNARY_GELU: return true;
  default: return false;
  }
}

/* Conv -> BatchNormalization with constant statistics: new weights/bias. */
static dm_err fold_bn(dm_graph *g, bool *dead, dm_errbuf *eb) {
  for (int i = 0; i < g->n_nodes; i++) {
    dm_node *c = &g->nodes[i];
    if (dead[i] || c->op != DM_OP_CONV || c->n_post || c->no_fuse) continue;
    int bi = sole_consumer(g, c->out[0], dead);
    if (bi < 0) continue;
    dm_node *bn = &g->nodes[bi];
    if (bn->op != DM_OP_BATCHNORM || bn->in[0] != c->out[0] || bn->no_fuse)
      continue;
    bool cst = g->values[c->in[1]].kind == DM_VAL_CONST &&
               (c->n_in < 3 || c->in[2] < 0 ||
                g->values[c->in[2]].kind == DM_VAL_CONST);
    for (int k = 1; k < 5; k++)
      cst = cst && g->values[bn->in[k]].kind == DM_VAL_CONST;
    if (!cst) continue;
    for (int k = 1; k < 5; k++)
      if (dm__graph_align_const(g, bn->in[k]))
        return dm_errf(eb, DM_NOMEM, "out of memory");
    if (dm__graph_align_const(g, c->in[1]) ||
        (c->n_in >= 3 && c->in[2] >= 0 && dm__graph_align_const(g, c->in[2])))
      return dm_errf(eb, DM_NOMEM, "out of memory");
    const dm_value *w = &g->values[c->in[1]];
    int64_t oc = w->dims[0], per = w->numel / oc;
    const float *sc = g->values[bn->in[1]].data,
                *bb = g->values[bn->in[2]].data,
                *mu = g->values[bn->in[3]].data,
                *var = g->values[bn->in[4]].data;
    const float *w0 = w->data;
    const float *b0 =
        c->n_in >= 3 && c->in[2] >= 0 ? g->values[c->in[2]].data : NULL;
    float *nw = dm__graph_alloc(g, w->nbytes);
    float *nb = dm__graph_alloc(g, (size_t)oc * sizeof(float));
    if (!nw || !nb) return dm_errf(eb, DM_NOMEM, "out of memory folding BN");
    for (int64_t o = 0; o < oc; o++) {
      float s = sc[o] / sqrtf(var[o] + bn->p.bn.eps);
      for (int64_t j = 0; j < per; j++)
        nw[o * per + j] = w0[o * per + j] * s;
      nb[o] = ((b0 ? b0[o] : 0.f) - mu[o]) * s + bb[o];
    }
    /* new constant values for the folded weight and bias */
    int vw = g->n_values, vb = g->n_values + 1;
    if (grow((void **)&g->values, &g->cap_values, g->n_values + 2,
             sizeof *g->values))
      return dm_errf(eb, DM_NOMEM, "out of memory");
    g->n_values += 2;
    w = &g->values[c->in[1]]; /* realloc may have moved it */
    dm_value *W = &g->values[vw], *B = &g->values[vb];
    *W = *w;
    W->dq = NULL; /* new weights, no longer the file's int8 data */
    W->owned = nw;
    W->data = nw;
    W->name = "(folded weight)";
    memset(B, 0, sizeof *B);
    B->name = "(folded bias)";
    B->dtype = DM_ONNX_FLOAT;
    B->rank = 1;
    B->dims[0] = oc;
    B->numel = oc;
    B->nbytes = (size_t)oc * 4;
    B->kind = DM_VAL_CONST;
    B->owned = nb;
    B->data = nb;
    B->producer = -1;
    B->alias_of = -1;
    g->stats.weight_copied += W->nbytes + B->nbytes;
    W->unaligned = false;
    c->in[1] = vw;
    c->in[2] = vb;
    c->n_in = 3;
    c->out[0] = bn->out[0];
    dead[bi] = true;
    g->stats.folded_bn++;
    count_consumers(g, dead);
  }
  return DM_OK;
}

/* Mul(a, HardSigmoid(a; 1/6, 0.5)) -> HardSwish(a);
 * Mul(a, Sigmoid(a)) -> Swish(a). */
static void fuse_gates(dm_graph *g, bool *dead) {
  for (int i = 0; i < g->n_nodes; i++) {
    dm_node *m = &g->nodes[i];
    if (dead[i] || m->op != DM_OP_BINARY || m->p.binary.kind != DM_BINARY_MUL ||
        m->no_fuse)
      continue;
    for (int side = 0; side < 2; side++) {
      int gv = m->in[side], a = m->in[1 - side];
      int pi = g->values[gv].producer;
      if (pi < 0 || dead[pi]) continue;
      dm_node *p = &g->nodes[pi];
      if (p->op != DM_OP_UNARY || p->in[0] != a || p->no_fuse ||
          g->values[gv].n_consumers != 1 || g->values[gv].is_output)
        continue;
      dm_unary to;
      if (p->p.unary.kind == DM_UNARY_SIGMOID)
        to = DM_UNARY_SWISH;
      else if (p->p.unary.kind == DM_UNARY_HARDSIGMOID &&
               fabsf(p->p.unary.alpha - 1.0f / 6) < 1e-6f &&
               fabsf(p->p.unary.beta - 0.5f) < 1e-6f)
        to = DM_UNARY_HARDSWISH;
      else
        continue;
      if (g->values[a].rank != g->values[m->out[0]].rank ||
          g->values[a].numel != g->values[m->out[0]].numel)
        continue;
      m->op = DM_OP_UNARY;
      m->p.unary.kind = to;
      m->p.unary.alpha = m->p.unary.beta = 0;
      m->in[0] = a;
      m->n_in = 1;
      dead[pi] = true;
      count_consumers(g, dead);
      break;
    }
  }
}

/* Absorbs into Conv/Gemm the chain of single-consumer activations and
 * same-shape Adds that follow it. */
static void fuse_post(dm_graph *g, bool *dead) {
  for (int i = 0; i < g->n_nodes; i++) {
    dm_node *c = &g->nodes[i];
    if (dead[i] || (c->op != DM_OP_CONV && c->op != DM_OP_GEMM) || c->no_fuse)
      continue;
    for (;;) {
      if (c->n_post >= DM_MAX_POST) break;
      int ni = sole_consumer(g, c->out[0], dead);
      if (ni < 0) break;
      dm_node *n = &g->nodes[ni];
      if (n->no_fuse) break;
      const dm_value *y = &g->values[c->out[0]];
      if (n->op == DM_OP_UNARY && fusable_act(n->p.unary.kind)) {
        c->post[c->n_post].kind = DM_POST_ACT;
        c->post[c->n_post].act = n->p.unary;
        c->n_post++;
      } else if (n->op == DM_OP_BINARY && n->p.binary.kind == DM_BINARY_ADD) {
        /* one residual sum per node: oneDNN 2.6 takes a single sum
         * post-op, and a Conv with two ran whole on the reference kernel */
        bool has_add = false;
        for (int k = 0; k < c->n_post; k++)
          has_add |= c->post[k].kind == DM_POST_ADD;
        if (has_add) break;
        int other = n->in[0] == c->out[0] ? n->in[1] : n->in[0];
        if (other == c->out[0]) break;
        const dm_value *o = &g->values[other];
        const dm_value *z = &g->values[n->out[0]];
        if (o->rank != y->rank ||
            memcmp(o->dims, y->dims, sizeof(int64_t) * (size_t)y->rank) ||
            z->numel != y->numel || o->dtype != DM_ONNX_FLOAT)
          break;
        /* the addend must exist before c runs */
        if (o->producer > i) break;
        /* addends go after the optional bias/C slot, which stays -1 when
         * absent, so kernels never mistake an addend for a bias */
        while (c->n_in < 3)
          c->in[c->n_in++] = -1;
        c->in[c->n_in] = other;
        c->post[c->n_post].kind = DM_POST_ADD;
        c->post[c->n_post].input = c->n_in;
        c->n_in++;
        c->n_post++;
      } else {
        break;
      }
      c->out[0] = n->out[0];
      dead[ni] = true;
      g->stats.fused_act++;
      count_consumers(g, dead);
    }
  }
}

/* ---------- QDQ: Conv on 8-bit data ---------- */

/* Reads per-tensor or per-channel scale/zero point constants into p
 * (copied, widened).  false when they are not usable constants. */
static bool read_qparam(dm_graph *g, int sv, int zv, int32_t qt, dm_qparam *p) {
  if (sv < 0 || g->values[sv].kind != DM_VAL_CONST ||
      g->values[sv].dtype != DM_ONNX_FLOAT)
    return false;
  if (zv >= 0 &&
      (g->values[zv].kind != DM_VAL_CONST || g->values[zv].dtype != qt ||
       g->values[zv].numel != g->values[sv].numel))
    return false;
  if (dm__graph_align_const(g, sv) || (zv >= 0 && dm__graph_align_const(g, zv)))
    return false;
  int64_t n = g->values[sv].numel;
  float *s = dm__graph_alloc(g, (size_t)n * sizeof *s);
  int32_t *z = dm__graph_alloc(g, (size_t)n * sizeof *z);
  if (n < 1 || !s || !z) return false;
  const float *sd = g->values[sv].data;
  for (int64_t i = 0; i < n; i++) {
    if (!(sd[i] > 0) || !isfinite(sd[i])) return false;
    s[i] = sd[i];
    z[i] = 0;
    if (zv >= 0)
      z[i] = qt == DM_ONNX_UINT8
                 ? (int32_t)((const uint8_t *)g->values[zv].data)[i]
                 : (int32_t)((const int8_t *)g->values[zv].data)[i];
  }
  p->n = n;
  p->scale = s;
  p->zp = z;
  p->dtype = qt;
  return true;
}

static bool is_q8(int32_t dt) {
  return dt == DM_ONNX_UINT8 || dt == DM_ONNX_INT8;
}

/* The per-tensor DequantizeLinear of an 8-bit activation producing v (the
 * node index), else -1. */
static int dq_act(const dm_graph *g, int v, const bool *dead) {
  int di = g->values[v].producer;
  if (di < 0 || dead[di]) return -1;
  const dm_node *d = &g->nodes[di];
  if (d->op != DM_OP_DEQUANTIZE || d->p.quant.axis >= 0 ||
      !is_q8(g->values[d->in[0]].dtype) ||
      g->values[d->in[0]].kind != DM_VAL_ACT)
    return -1;
  return di;
}

/* The per-tensor QuantizeLinear to 8 bits that is the only reader of v
 * (the node index), else -1. */
static int q_act(const dm_graph *g, int v, const bool *dead) {
  int qi = sole_consumer(g, v, dead);
  if (qi < 0) return -1;
  const dm_node *qn = &g->nodes[qi];
  if (qn->op != DM_OP_QUANTIZE || qn->in[0] != v || qn->p.quant.axis >= 0 ||
      qn->no_fuse || !is_q8(g->values[qn->out[0]].dtype))
    return -1;
  return qi;
}

/* Node n now writes what QuantizeLinear qi wrote (qi is absorbed). */
static void absorb_q(dm_graph *g, bool *dead, dm_node *n, int qi) {
  n->out[0] = g->nodes[qi].out[0];
  dead[qi] = true;
  g->stats.int8_ops++;
  count_consumers(g, dead);
}

/* The parameters of a conv or matrix product on 8-bit data: x from the
 * DequantizeLinear d of its input, w from its folded int8 weights wd
 * (zero points 0; per tensor or one scale per output channel of n_out),
 * y from the QuantizeLinear qi after it, or float when qi < 0.  NULL
 * when any is unusable.  w_q is left for the caller. */
static dm_qconv *new_qconv(dm_graph *g, const dm_node *d, const dm_dqsrc *wd,
                           int qi, int64_t n_out) {
  dm_qconv *q = dm__graph_alloc(g, sizeof *q);
  if (!q ||
      !read_qparam(g, d->in[1], d->n_in > 2 ? d->in[2] : -1,
                   g->values[d->in[0]].dtype, &q->x) ||
      !read_qparam(g, wd->scale, wd->zp, DM_ONNX_INT8, &q->w))
    return NULL;
  if (qi >= 0) {
    const dm_node *qn = &g->nodes[qi];
    if (!read_qparam(g, qn->in[1], qn->n_in > 2 ? qn->in[2] : -1,
                     g->values[qn->out[0]].dtype, &q->y))
      return NULL;
  } else {
    q->y.n = 0;
    q->y.dtype = DM_ONNX_FLOAT;
  }
  if (q->w.n != 1 && q->w.n != n_out) return NULL;
  for (int64_t k = 0; k < q->w.n; k++)
    if (q->w.zp[k] != 0) return NULL;
  return q;
}

/* Whether every int8 weight of wd lies within [-wmax, wmax] (wmax 0: no
 * limit; dm_graph_opts.int8_wmax). */
static bool weights_within(const dm_graph *g, const dm_dqsrc *wd, int wmax) {
  const int8_t *wq = g->values[wd->q].data;
  for (int64_t k = 0; wmax > 0 && k < g->values[wd->q].numel; k++)
    if (wq[k] < -wmax || wq[k] > wmax) return false;
  return true;
}

/* Node n now runs on 8-bit data: q (weights wd) on the input of
 * DequantizeLinear d, writing what QuantizeLinear qi wrote (absorbed) or,
 * when qi < 0, its float output. */
static void attach_q(dm_graph *g, bool *dead, dm_node *n, dm_qconv *q,
                     const dm_dqsrc *wd, const dm_node *d, int qi) {
  q->w_q = wd->q;
  n->q = q;
  n->in[0] = d->in[0];
  if (qi >= 0) {
    absorb_q(g, dead, n, qi);
  } else {
    g->stats.int8_ops++;
    count_consumers(g, dead);
  }
}

/* DequantizeLinear(x_q) -> Conv(W = DequantizeLinear(int8 const), float
 * bias; post: Relu/Clip) -> QuantizeLinear becomes one Conv on 8-bit data
 * (dm_qconv): per-tensor activations, symmetric int8 weights per output
 * channel or per tensor.  The pattern dermal quantize, ONNX Runtime's QDQ
 * quantizer and PyTorch's exporter all emit.  Nodes on the Grad-CAM tail
 * (no_fuse) and kept or output values are left alone. */
static void fuse_qdq(dm_graph *g, bool *dead, int wmax) {
  for (int i = 0; i < g->n_nodes; i++) {
    dm_node *c = &g->nodes[i];
    if (dead[i] || c->op != DM_OP_CONV || c->no_fuse || c->q || c->n_in < 2 ||
        c->n_out != 1)
      continue;
    bool ok = true, has_add = false;
    for (int k = 0; k < c->n_post && ok; k++) {
      has_add |= c->post[k].kind == DM_POST_ADD;
      ok = c->post[k].kind == DM_POST_ADD ||
           (c->post[k].kind == DM_POST_ACT &&
            (c->post[k].act.kind == DM_UNARY_RELU ||
             c->post[k].act.kind == DM_UNARY_CLIP));
    }
    if (!ok) continue;
    /* input: DequantizeLinear per tensor */
    int di = dq_act(g, c->in[0], dead);
    if (di < 0) continue;
    const dm_node *d = &g->nodes[di];
    /* weights: folded DequantizeLinear of int8, zero points 0 */
    const dm_value *W = &g->values[c->in[1]];
    const dm_dqsrc *wd = W->kind == DM_VAL_CONST ? W->dq : NULL;
    if (!wd || g->values[wd->q].dtype != DM_ONNX_INT8 ||
        (wd->axis >= 0 && wd->axis != 0))
      continue;
    /* bias: float constant or none */
    if (c->n_in > 2 && c->in[2] >= 0 &&
        (g->values[c->in[2]].kind != DM_VAL_CONST ||
         g->values[c->in[2]].dtype != DM_ONNX_FLOAT))
      continue;
    /* output: read only by a per-tensor QuantizeLinear, else float (the
     * inputs after the bias are then residual addends) */
    int qi = has_add ? -1 : q_act(g, c->out[0], dead);
    int n_addend = 0;
    for (int k = 0; k < c->n_post; k++)
      n_addend += c->post[k].kind == DM_POST_ADD;
    if (c->n_in > 3 + n_addend) continue;
    dm_qconv *q = new_qconv(g, d, wd, qi, W->dims[0]);
    if (!q) continue;
    int32_t xt = q->x.dtype;
    /* saturating pairs (dm_graph_opts.int8_wmax): depthwise kernels on u8
     * widen to 32 bits and are exact; dense ones, and depthwise ones on s8
     * (shifted to u8 by 128, then multiplied in pairs: measured up to 2
     * steps off on AVX2), need small weights */
    bool depthwise = W->dims[1] == 1 && c->p.conv.group == W->dims[0];
    if ((!depthwise || xt != DM_ONNX_UINT8) && !weights_within(g, wd, wmax)) {
      g->stats.int8_unfused++;
      continue;
    }
    attach_q(g, dead, c, q, wd, d, qi);
  }
}

/* DequantizeLinear(x_q) -> Gemm(x, B = DequantizeLinear(int8 const),
 * float C; post: Relu/Clip) [-> QuantizeLinear], or MatMul(x, B) of 2-D
 * operands (made a Gemm here: no transposes, no C), becomes one matrix
 * product on 8-bit data (dm_qconv, the weights in the file's layout,
 * trans_b saying which): per-tensor x, symmetric int8 B per output column
 * (axis 0 of a transposed B, else 1) or per tensor.  A classifier's head:
 * with Grad-CAM on it lies on the tail and stays float (no_fuse). */
static void fuse_qgemm(dm_graph *g, bool *dead, int wmax) {
  for (int i = 0; i < g->n_nodes; i++) {
    dm_node *n = &g->nodes[i];
    bool mm = n->op == DM_OP_MATMUL;
    if (dead[i] || (n->op != DM_OP_GEMM && !mm) || n->no_fuse || n->q ||
        n->n_out != 1 || n->n_in < 2 || n->n_in > (mm ? 2 : 3))
      continue;
    bool has_c = !mm && n->n_in > 2 && n->in[2] >= 0;
    if (!mm && (n->p.gemm.trans_a || n->p.gemm.alpha != 1.f ||
                (has_c && n->p.gemm.beta != 1.f)))
      continue;
    bool ok = true;
    for (int k = 0; k < n->n_post && ok; k++)
      ok = n->post[k].kind == DM_POST_ACT &&
           (n->post[k].act.kind == DM_UNARY_RELU ||
            n->post[k].act.kind == DM_UNARY_CLIP);
    const dm_value *X = &g->values[n->in[0]], *W = &g->values[n->in[1]],
                   *Y = &g->values[n->out[0]];
    if (!ok || X->rank != 2 || W->rank != 2 || Y->rank != 2) continue;
    bool tb = !mm && n->p.gemm.trans_b;
    int64_t N = tb ? W->dims[0] : W->dims[1];
    int di = dq_act(g, n->in[0], dead);
    const dm_dqsrc *wd = W->kind == DM_VAL_CONST ? W->dq : NULL;
    if (di < 0 || !wd || g->values[wd->q].dtype != DM_ONNX_INT8 ||
        (wd->axis >= 0 && wd->axis != (tb ? 0 : 1)))
      continue;
    if (has_c) {
      const dm_value *C = &g->values[n->in[2]];
      if (C->kind != DM_VAL_CONST || C->dtype != DM_ONNX_FLOAT ||
          C->numel != N || C->rank > 2)
        continue;
    }
    const dm_node *d = &g->nodes[di];
    int qi = q_act(g, n->out[0], dead);
    dm_qconv *q = new_qconv(g, d, wd, qi, N);
    if (!q) continue;
    /* saturating pairs, as for dense convs (fuse_qdq) */
    if (!weights_within(g, wd, wmax)) {
      g->stats.int8_unfused++;
      continue;
    }
    if (mm) {
      n->op = DM_OP_GEMM;
      n->p.gemm.alpha = n->p.gemm.beta = 1.f;
      n->p.gemm.trans_a = n->p.gemm.trans_b = false;
    }
    attach_q(g, dead, n, q, wd, d, qi);
  }
}

/* Add(DequantizeLinear(a_q), DequantizeLinear(b_q)) [-> Relu | Clip] ->
 * QuantizeLinear, all per tensor and of one shape, becomes one Add on
 * 8-bit data (dm_qadd): the residual joins of quantized ResNets and
 * MobileNets, which would otherwise dequantize both operands, add, clip
 * and requantize in float (four passes over the tensor).  The
 * DequantizeLinear nodes stay for their other readers (remove_dead drops
 * them when there are none). */
static void fuse_qadd(dm_graph *g, bool *dead) {
  for (int i = 0; i < g->n_nodes; i++) {
    dm_node *n = &g->nodes[i];
    if (dead[i] || n->op != DM_OP_BINARY || n->p.binary.kind != DM_BINARY_ADD ||
        n->no_fuse || n->qadd || n->n_in != 2 || n->n_out != 1 || n->n_post)
      continue;
    const dm_value *Y = &g->values[n->out[0]];
    bool same = true;
    for (int k = 0; k < 2; k++) {
      const dm_value *A = &g->values[n->in[k]];
      same &= A->rank == Y->rank && A->numel == Y->numel &&
              !memcmp(A->dims, Y->dims, sizeof(int64_t) * (size_t)Y->rank);
    }
    int da = dq_act(g, n->in[0], dead), db = dq_act(g, n->in[1], dead);
    if (!same || da < 0 || db < 0) continue;
    /* optional Relu/Clip, then the QuantizeLinear */
    int last = n->out[0], ai = -1;
    int ci = sole_consumer(g, last, dead);
    if (ci >= 0 && g->nodes[ci].op == DM_OP_UNARY && !g->nodes[ci].no_fuse &&
        (g->nodes[ci].p.unary.kind == DM_UNARY_RELU ||
         g->nodes[ci].p.unary.kind == DM_UNARY_CLIP)) {
      ai = ci;
      last = g->nodes[ai].out[0];
    }
    ci = q_act(g, last, dead);
    if (ci < 0) continue;
    const dm_node *qn = &g->nodes[ci];
    const dm_node *a = &g->nodes[da], *b = &g->nodes[db];
    dm_qadd *q = dm__graph_alloc(g, sizeof *q);
    if (!q ||
        !read_qparam(g, a->in[1], a->n_in > 2 ? a->in[2] : -1,
                     g->values[a->in[0]].dtype, &q->a) ||
        !read_qparam(g, b->in[1], b->n_in > 2 ? b->in[2] : -1,
                     g->values[b->in[0]].dtype, &q->b) ||
        !read_qparam(g, qn->in[1], qn->n_in > 2 ? qn->in[2] : -1,
                     g->values[qn->out[0]].dtype, &q->y))
      continue;
    if (ai >= 0) {
      n->post[0].kind = DM_POST_ACT;
      n->post[0].act = g->nodes[ai].p.unary;
      n->n_post = 1;
      dead[ai] = true;
      g->stats.fused_act++;
    }
    n->qadd = q;
    n->in[0] = a->in[0];
    n->in[1] = b->in[0];
    absorb_q(g, dead, n, ci);
  }
}

/* DequantizeLinear(x_q) -> MaxPool -> QuantizeLinear with the same scale
 * and zero point: max commutes with the monotone dequantization, so the
 * MaxPool runs on x_q itself (ONNX MaxPool takes 8-bit input from opset 12)
 * and the pair disappears.  ResNet's stem pool in a quantized model. */
static void fuse_qpool(dm_graph *g, bool *dead) {
  for (int i = 0; i < g->n_nodes; i++) {
    dm_node *n = &g->nodes[i];
    if (dead[i] || n->op != DM_OP_MAXPOOL || n->no_fuse || n->n_in != 1 ||
        n->n_out != 1)
      continue;
    int di = dq_act(g, n->in[0], dead), qi = q_act(g, n->out[0], dead);
    if (di < 0 || qi < 0) continue;
    const dm_node *d = &g->nodes[di], *qn = &g->nodes[qi];
    if (g->values[qn->out[0]].dtype != g->values[d->in[0]].dtype) continue;
    int32_t qt = g->values[d->in[0]].dtype;
    dm_qparam a, b;
    if (!read_qparam(g, d->in[1], d->n_in > 2 ? d->in[2] : -1, qt, &a) ||
        !read_qparam(g, qn->in[1], qn->n_in > 2 ? qn->in[2] : -1, qt, &b) ||
        a.scale[0] != b.scale[0] || a.zp[0] != b.zp[0])
      continue;
    n->in[0] = d->in[0];
    absorb_q(g, dead, n, qi);
  }
}

static void remove_dead(dm_graph *g, bool *dead) {
  /* liveness from the outputs backwards */
  bool *need = calloc((size_t)g->n_values, 1);
  if (!need) return; /* keep everything: still correct */
  for (int k = 0; k < g->n_outputs; k++)
    need[g->outputs[k]] = true;
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    if (dead[i]) continue;
    const dm_node *n = &g->nodes[i];
    bool live = false;
    for (int k = 0; k < n->n_out; k++)
      live |= need[n->out[k]];
    if (!live) {
      dead[i] = true;
      g->stats.dead++;
      continue;
    }
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0) need[n->in[k]] = true;
  }
  free(need);
  int w = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (!dead[i]) g->nodes[w++] = g->nodes[i];
  g->n_nodes = w;
  memset(dead, 0, (size_t)w);
  count_consumers(g, NULL);
}

/* ---------- memory plan ---------- */

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

typedef struct live {
  int v;
  int first, last;
  size_t size;
} live;

static int cmp_size_desc(const void *a, const void *b) {
  const live *x = a, *y = b;
  if (x->size != y->size) return x->size < y->size ? 1 : -1;
  return x->first - y->first;
}

static dm_err plan_memory(dm_graph *g, bool alias_views, dm_errbuf *eb) {
  int nv = g->n_values;
  int *first = malloc(sizeof(int) * (size_t)nv);
  int *last = malloc(sizeof(int) * (size_t)nv);
  live *ls = malloc(sizeof(live) * (size_t)nv);
  int *placed = malloc(sizeof(int) * (size_t)nv);
  dm_err rc = DM_OK;
  if (!first || !last || !ls || !placed) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory planning");
    goto out;
  }
  for (int v = 0; v < nv; v++) {
    first[v] = g->values[v].kind == DM_VAL_INPUT ? -1 : INT32_MAX;
    last[v] = -2;
    g->values[v].alias_of = -1;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    dm_node *n = &g->nodes[i];
    if (alias_views && n->op == DM_OP_RESHAPE && n->in[0] >= 0 &&
        g->values[n->in[0]].kind != DM_VAL_CONST) {
      int root = n->in[0];
      while (g->values[root].alias_of >= 0)
        root = g->values[root].alias_of;
      g->values[n->out[0]].alias_of = root;
    }
    for (int k = 0; k < n->n_out; k++) {
      int v = n->out[k];
      int r = g->values[v].alias_of >= 0 ? g->values[v].alias_of : v;
      if (first[r] > i) first[r] = i;
      if (last[r] < i) last[r] = i;
    }
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      if (v < 0 || g->values[v].kind == DM_VAL_CONST) continue;
      int r = g->values[v].alias_of >= 0 ? g->values[v].alias_of : v;
      if (last[r] < i) last[r] = i;
    }
  }
  for (int k = 0; k < g->n_outputs; k++) {
    int v = g->outputs[k];
    int r = g->values[v].alias_of >= 0 ? g->values[v].alias_of : v;
    last[r] = g->n_nodes;
  }
  for (int k = 0; k < g->n_inputs; k++) {
    int v = g->inputs[k];
    if (last[v] < -1) last[v] = -1;
  }
  int nl = 0;
  for (int v = 0; v < nv; v++) {
    if (g->values[v].kind == DM_VAL_CONST || g->values[v].alias_of >= 0)
      continue;
    if (last[v] < -1 || first[v] == INT32_MAX) continue; /* unused */
    ls[nl].v = v;
    ls[nl].first = first[v];
    ls[nl].last = last[v];
    ls[nl].size = align64(g->values[v].nbytes ? g->values[v].nbytes : 1);
    nl++;
  }
  qsort(ls, (size_t)nl, sizeof *ls, cmp_size_desc);
  /* greedy: each value at the lowest offset free during its lifetime */
  size_t total = 0;
  for (int i = 0; i < nl; i++) {
    size_t off = 0;
    int np = 0;
    for (int j = 0; j < i; j++)
      if (!(ls[j].last < ls[i].first || ls[i].last < ls[j].first))
        placed[np++] = j;
    bool moved = true;
    while (moved) {
      moved = false;
      for (int q = 0; q < np; q++) {
        const live *o = &ls[placed[q]];
        size_t oo = g->values[o->v].offset;
        if (off < oo + o->size && oo < off + ls[i].size) {
          off = oo + o->size;
          moved = true;
        }
      }
    }
    g->values[ls[i].v].offset = off;
    if (off + ls[i].size > total) total = off + ls[i].size;
  }
  for (int v = 0; v < nv; v++)
    if (g->values[v].alias_of >= 0)
      g->values[v].offset = g->values[g->values[v].alias_of].offset;
  g->arena_bytes = total ? total : 64;
out:
  free(first);
  free(last);
  free(ls);
  free(placed);
  return rc;
}

/* ---------- entry point ---------- */

/* A graph output's declared type and shape (where the file gives them)
 * must be what the graph computes: a file that says int64 [1, 1000] for
 * a float32 [1, 7] output is inconsistent, and a caller that trusts the
 * declaration (inspect prints it) would be misled. */
static dm_err check_declared(const dm_value *x, const dm_onnx_value_info *vi,
                             dm_errbuf *eb) {
  if (vi->dtype && vi->dtype != x->dtype)
    return dm_errf(eb, DM_FORMAT,
                   "graph output '%s' is declared %s but the graph computes %s",
                   vi->name, dm_onnx_dtype_name(vi->dtype),
                   dm_onnx_dtype_name(x->dtype));
  if (vi->ndim < 0) return DM_OK;
  bool same = vi->ndim == x->rank;
  for (int d = 0; same && d < x->rank; d++)
    same = vi->dims[d] < 0 || vi->dims[d] == x->dims[d];
  if (same) return DM_OK;
  char want[160], got[160];
  size_t a = 0, c = 0;
  want[0] = got[0] = 0;
  for (int d = 0; d < vi->ndim && a < sizeof want - 24; d++)
    a += (size_t)snprintf(want + a, sizeof want - a, d ? "x%lld" : "%lld",
                          (long long)vi->dims[d]);
  for (int d = 0; d < x->rank && c < sizeof got - 24; d++)
    c += (size_t)snprintf(got + c, sizeof got - c, d ? "x%lld" : "%lld",
                          (long long)x->dims[d]);
  return dm_errf(eb, DM_FORMAT,
                 "graph output '%s' is declared with shape [%s] but the graph "
                 "computes [%s]",
                 vi->name, want, got);
}

dm_err dm__graph_build(const dm_onnx_model *m, const dm_graph_opts *o,
                       dm_graph **out, dm_errbuf *eb) {
  dm_err rc = DM_NOMEM;
  builder b;
  memset(&b, 0, sizeof b);
  bool *dead = NULL;
  dm_graph *g = calloc(1, sizeof *g);
  if (!g) return dm_errf(eb, DM_NOMEM, "out of memory");
  b.g = g;
  b.eb = eb;
  /* constants made at load (folded nodes, dequantized weights: 4 bytes
   * per int8 weight) may reach 8x the file plus 64 MB */
  b.fold_left = m->file_bytes > (SIZE_MAX - ((size_t)64 << 20)) / 8
                    ? SIZE_MAX
                    : 8 * m->file_bytes + ((size_t)64 << 20);
  g->model = m;
  g->opset = m->opset;
  if (m->opset < 1 || m->opset > 18) {
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "default-domain opset %lld is not supported (1..18)",
                 (long long)m->opset);
    goto fail;
  }
  for (size_t i = 0; i < m->n_opsets; i++) {
    const char *d = m->opsets[i].domain;
    if (d[0] && strcmp(d, "ai.onnx") && strcmp(d, "ai.onnx.ml") &&
        strcmp(d, "ai.onnx.preview.training")) {
      /* other domains matter only if a node uses them: checked per node */
    }
  }
  if ((rc = rehash(&b, 1024))) {
    rc = dm_errf(eb, rc, "out of memory");
    goto fail;
  }
  const dm_onnx_graph *og = &m->graph;
  /* The graph takes ~1.5 KB per node while it is built (values, edges,
   * names): a 6 MB file of 300,000 Relu nodes made inspect and run take
   * 690 MB.  Image classifiers have a few hundred to a few thousand. */
  if (og->n_nodes > DM_GRAPH_MAX_NODES) {
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "the graph has %zu nodes; at most %d are supported",
                 og->n_nodes, DM_GRAPH_MAX_NODES);
    goto fail;
  }
  for (size_t i = 0; i < og->n_initializers; i++) {
    const dm_onnx_tensor *t = &og->initializers[i];
    int v;
    if (find_value(&b, t->name) >= 0) {
      rc = dm_errf(eb, DM_FORMAT, "initializer '%s' is defined twice", t->name);
      goto fail;
    }
    if ((rc = add_value(&b, t->name, &v)) ||
        (rc = set_shape(&b, v, t->dtype, t->ndim, t->dims)) ||
        (rc = set_const(&b, v, t->data, true)))
      goto fail;
  }
  g->inputs = dm__graph_alloc(g, sizeof(int) * (og->n_inputs + 1));
  size_t n_keep = o ? o->n_keep : 0;
  if (n_keep > DM_ONNX_MAX_COUNT) {
    rc = dm_errf(eb, DM_ARG, "too many kept tensors (%zu)", n_keep);
    goto fail;
  }
  /* room for the kept values and a Grad-CAM target after the file's */
  g->outputs = dm__graph_alloc(g, sizeof(int) * (og->n_outputs + n_keep + 1));
  g->keep = dm__graph_alloc(g, sizeof(int) * (n_keep + 1));
  if (!g->inputs || !g->outputs || !g->keep) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < og->n_inputs; i++) {
    const dm_onnx_value_info *vi = &og->inputs[i];
    if (find_value(&b, vi->name) >= 0) continue; /* initializer (IR < 4) */
    if (vi->ndim < 0) {
      rc = dm_errf(eb, DM_UNSUPPORTED, "graph input '%s' has no shape",
                   vi->name);
      goto fail;
    }
    int64_t dims[DM_ONNX_MAX_DIMS];
    const dm_tensor *ov = o && (size_t)g->n_inputs < o->n_input_shapes
                              ? &o->input_shapes[g->n_inputs]
                              : NULL;
    if (ov && ov->rank != vi->ndim) {
      rc = dm_errf(eb, DM_ARG, "graph input '%s' has rank %d, override %d",
                   vi->name, (int)vi->ndim, (int)ov->rank);
      goto fail;
    }
    for (int d = 0; d < vi->ndim; d++) {
      dims[d] = vi->dims[d];
      if (ov) {
        if (dims[d] >= 0 && dims[d] != ov->dims[d]) {
          rc = dm_errf(eb, DM_ARG,
                       "graph input '%s': dimension %d is %lld, override %lld",
                       vi->name, d, (long long)dims[d], (long long)ov->dims[d]);
          goto fail;
        }
        dims[d] = ov->dims[d];
      }
      if (dims[d] < 0) {
        if (d == 0) {
          dims[d] = 1; /* symbolic batch dimension: batch 1 */
        } else {
          rc = dm_errf(eb, DM_UNSUPPORTED,
                       "graph input '%s': dimension %d is symbolic; only the "
                       "batch dimension may be",
                       vi->name, d);
          goto fail;
        }
      }
    }
    int v;
    if ((rc = add_value(&b, vi->name, &v)) ||
        (rc = set_shape(&b, v, vi->dtype ? vi->dtype : DM_ONNX_FLOAT, vi->ndim,
                        dims)))
      goto fail;
    g->values[v].kind = DM_VAL_INPUT;
    g->inputs[g->n_inputs++] = v;
  }
  g->stats.nodes_in = og->n_nodes;
  for (size_t i = 0; i < og->n_nodes; i++) {
    b.cur = &og->nodes[i];
    b.cur_index = (int)i;
    if ((rc = add_onnx_node(&b))) goto fail;
  }
  for (size_t i = 0; i < og->n_outputs; i++) {
    int v = find_value(&b, og->outputs[i].name);
    if (v < 0) {
      rc = dm_errf(eb, DM_FORMAT, "graph output '%s' is never produced",
                   og->outputs[i].name);
      goto fail;
    }
    if ((rc = check_declared(&g->values[v], &og->outputs[i], eb))) goto fail;
    g->values[v].is_output = true;
    g->outputs[g->n_outputs++] = v;
  }
  g->n_user_outputs = g->n_outputs;
  for (size_t i = 0; i < n_keep; i++) {
    const char *name = o->keep[i] ? o->keep[i] : "";
    int v = name[0] ? find_value(&b, name) : -1;
    if (v < 0) {
      rc = dm_errf(eb, DM_ARG, "kept tensor '%s' is not in the graph", name);
      goto fail;
    }
    g->keep[g->n_keep++] = v;
    /* constants and inputs are read in place; activations become outputs */
    if (g->values[v].kind == DM_VAL_ACT && !g->values[v].is_output) {
      g->values[v].is_output = true;
      g->outputs[g->n_outputs++] = v;
    }
  }
  g->cam_target = g->cam_score = -1;
  dead = calloc((size_t)g->n_nodes + 1, 1);
  if (!dead) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory");
    goto fail;
  }
  count_consumers(g, NULL);
  remove_dead(g, dead); /* first, so dead readers do not block fusion */
  /* Gate rewrites also make Grad-CAM tails elementary (MobileNetV3's
   * Hardswish head is exported as x * HardSigmoid(x) at opset 13). */
  if (o && (o->fuse || o->cam)) {
    fuse_gates(g, dead);
    remove_dead(g, dead);
  }
  if (o && o->cam && (rc = dm__cam_resolve(g, o->cam_target, eb))) goto fail;
  count_consumers(g, NULL);
  if (o && o->fuse) {
    if ((rc = fold_bn(g, dead, eb))) goto fail;
    fuse_post(g, dead);
    remove_dead(g, dead);
    fuse_qdq(g, dead, o->int8_wmax);
    fuse_qgemm(g, dead, o->int8_wmax);
    fuse_qadd(g, dead);
    fuse_qpool(g, dead);
    remove_dead(g, dead);
  }
  if (g->cam_target >= 0 && (rc = dm__cam_finish(g, eb))) goto fail;
  if ((rc = plan_memory(g, o ? o->alias_views : true, eb))) goto fail;
  g->stats.nodes_run = (size_t)g->n_nodes;
  g->stats.arena_bytes = g->arena_bytes;
  for (int v = 0; v < g->n_values; v++)
    if (g->values[v].kind == DM_VAL_CONST && g->values[v].n_consumers > 0)
      g->stats.weight_bytes += g->values[v].nbytes;
  free(dead);
  free(b.slots);
  *out = g;
  return DM_OK;
fail:
  free(dead);
  free(b.slots);
  dm__graph_free(g);
  return rc;
}
