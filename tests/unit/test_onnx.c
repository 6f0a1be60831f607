/* Unit tests for the ONNX reader (src/onnx/reader.c) and src/common/err.c.
 *
 * Purpose: build small protobuf byte buffers with a tiny encoder (pb_*) and
 * check the reader on valid models (raw and typed tensors, packed and
 * unpacked repeated fields, metadata, symbolic shapes, external data,
 * standalone tensor files) and on hostile ones (truncation at every byte,
 * varint overflow, lengths past the end, nesting bombs, count caps, size
 * overflows, escaping external locations).  When Debian's libonnx-testdata is
 * installed, every model.onnx and .pb under it is parsed too.
 *
 * Output: diagnostics on stderr, informational lines starting with '#', and
 * one final line "test_onnx: N passed, N failed"; exit status 1 on failure.
 * `test_onnx --write-seeds DIR` writes fuzzing seeds instead.
 *
 * Threading: single-threaded; file-scope counters are test-only. */
#include "dermal/onnx.h"

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      return false;                                                            \
    }                                                                          \
  } while (0)

static bool msg_has(const char *msg, const char *part) {
  return !part || strstr(msg, part) != NULL;
}

/* Checks rc and that the message contains `part` (NULL: any). */
#define CHECK_ERR(rc, want, eb, part)                                          \
  do {                                                                         \
    dm_err got_ = (rc); /* evaluated once: rc is often a call */               \
    const char *part_ = (part);                                                \
    if (got_ != (want) || !msg_has((eb).msg, part_)) {                         \
      fprintf(stderr, "%s:%d: got %s '%s', want %s containing '%s'\n",         \
              __FILE__, __LINE__, dm_strerror(got_), (eb).msg,                 \
              dm_strerror(want), part_ ? part_ : "");                          \
      return false;                                                            \
    }                                                                          \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Tiny protobuf encoder. */

typedef struct pb {
  uint8_t *p;
  size_t n, cap;
} pb;

enum { VARINT = 0, I64 = 1, LEN = 2, SGROUP = 3, I32 = 5 };

static void pb_put(pb *b, const void *d, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    uint8_t *q;
    while (cap < b->n + n)
      cap *= 2;
    if (!(q = realloc(b->p, cap))) {
      perror("realloc");
      exit(2);
    }
    b->p = q;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, d, n);
  b->n += n;
}

static void pb_varint(pb *b, uint64_t v) {
  uint8_t t[10];
  size_t k = 0;
  do {
    uint8_t byte = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) byte = (uint8_t)(byte | 0x80);
    t[k++] = byte;
  } while (v);
  pb_put(b, t, k);
}

static void pb_tag(pb *b, uint32_t num, uint32_t wt) {
  pb_varint(b, (uint64_t)num << 3 | wt);
}

static void pb_uint(pb *b, uint32_t num, uint64_t v) {
  pb_tag(b, num, VARINT);
  pb_varint(b, v);
}

static void pb_int(pb *b, uint32_t num, int64_t v) {
  pb_uint(b, num, (uint64_t)v);
}

static void pb_bytes(pb *b, uint32_t num, const void *d, size_t n) {
  pb_tag(b, num, LEN);
  pb_varint(b, n);
  pb_put(b, d, n);
}

static void pb_str(pb *b, uint32_t num, const char *s) {
  pb_bytes(b, num, s, strlen(s));
}

static void pb_f32(pb *b, uint32_t num, float f) {
  pb_tag(b, num, I32);
  pb_put(b, &f, 4);
}

static void pb_fixed64(pb *b, uint32_t num, uint64_t v) {
  pb_tag(b, num, I64);
  pb_put(b, &v, 8);
}

/* Appends sub as a length-delimited field and releases it. */
static void pb_msg(pb *b, uint32_t num, pb *sub) {
  pb_bytes(b, num, sub->p, sub->n);
  free(sub->p);
  memset(sub, 0, sizeof *sub);
}

static void pb_packed_varints(pb *b, uint32_t num, const int64_t *v, size_t n) {
  pb body = {0};
  size_t i;
  for (i = 0; i < n; i++)
    pb_varint(&body, (uint64_t)v[i]);
  pb_msg(b, num, &body);
}

static void pb_packed_f32(pb *b, uint32_t num, const float *v, size_t n) {
  pb_bytes(b, num, v, n * sizeof *v);
}

static void pb_free(pb *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

/* One unknown field of every wire type (field numbers unused by ONNX). */
static void pb_unknowns(pb *b) {
  pb_uint(b, 1000, 123456789);
  pb_fixed64(b, 1001, 0x0102030405060708ull);
  pb_str(b, 1002, "unknown bytes");
  pb_f32(b, 1003, 1.0f);
}

/* ------------------------------------------------------------------------ */
/* ONNX message builders. */

static void t_dims(pb *t, const int64_t *dims, int nd) {
  int i;
  for (i = 0; i < nd; i++)
    pb_int(t, 1, dims[i]);
}

static pb tensor_raw(const char *name, int32_t dtype, const int64_t *dims,
                     int nd, const void *data, size_t nbytes) {
  pb t = {0};
  t_dims(&t, dims, nd);
  pb_int(&t, 2, dtype);
  if (name) pb_str(&t, 8, name);
  pb_bytes(&t, 9, data, nbytes);
  return t;
}

static pb vinfo(const char *name, int32_t elem, int nd, const int64_t *dims) {
  pb v = {0}, ty = {0}, tt = {0}, sh = {0};
  int i;
  pb_str(&v, 1, name);
  pb_int(&tt, 1, elem);
  if (nd >= 0) {
    for (i = 0; i < nd; i++) {
      pb d = {0};
      if (dims[i] >= 0)
        pb_int(&d, 1, dims[i]);
      else if (dims[i] == -1)
        pb_str(&d, 2, "N"); /* symbolic */
      /* dims[i] == -2: neither field set */
      pb_msg(&sh, 1, &d);
    }
    pb_msg(&tt, 2, &sh);
  }
  pb_msg(&ty, 1, &tt);
  pb_msg(&v, 2, &ty);
  return v;
}

static pb opset(const char *domain, int64_t version) {
  pb o = {0};
  pb_str(&o, 1, domain);
  pb_int(&o, 2, version);
  return o;
}

static pb kv(const char *k, const char *v) {
  pb e = {0};
  pb_str(&e, 1, k);
  pb_str(&e, 2, v);
  return e;
}

static pb node(const char *op, const char *name, const char *const *ins,
               size_t n_in, const char *const *outs, size_t n_out) {
  pb n = {0};
  size_t i;
  for (i = 0; i < n_in; i++)
    pb_str(&n, 1, ins[i]);
  for (i = 0; i < n_out; i++)
    pb_str(&n, 2, outs[i]);
  if (name) pb_str(&n, 3, name);
  pb_str(&n, 4, op);
  return n;
}

/* Wraps a graph into a model; ir_version is written last on purpose, so
 * every strict prefix of the model lacks it and must be refused. */
static pb wrap_model(pb *graph) {
  pb m = {0}, o = opset("", 13);
  pb_msg(&m, 8, &o);
  pb_msg(&m, 7, graph);
  pb_int(&m, 1, 8);
  return m;
}

/* Graph holding a single tensor as initializer. */
static pb model_with_init(pb *tensor) {
  pb g = {0};
  pb_str(&g, 2, "g");
  pb_msg(&g, 5, tensor);
  return wrap_model(&g);
}

static const float W_DATA[18] = {1,  -2, 3,  0.5f, 0.25f, 8,  9,  10, 11,
                                 12, 13, 14, 15,   16,    17, 18, 19, -20};

/* The reference valid model used by several tests. */
static pb build_model(void) {
  pb m = {0}, g = {0}, n, a, t, sub, sub_g;
  static const char *const conv_in[] = {"X", "W", "B"};
  static const char *const conv_out[] = {"C"};
  static const char *const relu_in[] = {"C"};
  static const char *const relu_out[] = {"R"};
  static const char *const gemm_in[] = {"R", "", "B"};
  static const char *const gemm_out[] = {"Y"};
  static const char *const k_out[] = {"K"};
  static const int64_t w_dims[] = {2, 1, 3, 3};
  static const int64_t ks[] = {3, 3};
  static const int64_t x_dims[] = {-1, 3, 224, 224};
  static const int64_t c_dims[] = {-1, -2, 7};
  static const float fl[] = {1.5f, -2.25f};
  static const float b_data[] = {0.25f, -1.0f};
  static const int64_t i8[] = {-128, 0, 127};
  static const int64_t dims2[] = {2};
  static const int64_t dims3[] = {3};
  static const int64_t dims1[] = {1};
  static const int64_t e_dims[] = {0, 4};
  double d = 3.5;

  pb_str(&m, 2, "dermal-test");
  pb_str(&m, 3, "1.0");
  pb_str(&m, 4, "org.dermal");
  pb_int(&m, 5, 42);
  pb_str(&m, 6, "doc");
  t = opset("", 13);
  pb_msg(&m, 8, &t);
  t = opset("ai.onnx.ml", 3);
  pb_msg(&m, 8, &t);
  t = kv("classes", "mel,nv,bcc");
  pb_msg(&m, 14, &t);
  t = kv("input_size", "224");
  pb_msg(&m, 14, &t);
  pb_unknowns(&m);

  pb_str(&g, 2, "main");
  pb_str(&g, 10, "graph doc");
  pb_unknowns(&g);

  /* Conv: INTS packed with type, INTS unpacked without type, INT, STRING */
  n = node("Conv", "conv0", conv_in, 3, conv_out, 1);
  a = (pb){0};
  pb_str(&a, 1, "kernel_shape");
  pb_packed_varints(&a, 8, ks, 2);
  pb_int(&a, 20, 7);
  pb_msg(&n, 5, &a);
  pb_str(&a, 1, "pads");
  pb_int(&a, 8, 1);
  pb_int(&a, 8, -1);
  pb_int(&a, 8, 1);
  pb_int(&a, 8, 2);
  pb_msg(&n, 5, &a);
  pb_str(&a, 1, "group");
  pb_int(&a, 3, 1);
  pb_int(&a, 20, 2);
  pb_msg(&n, 5, &a);
  pb_str(&a, 1, "auto_pad");
  pb_str(&a, 4, "NOTSET");
  pb_int(&a, 20, 3);
  pb_unknowns(&a);
  pb_msg(&n, 5, &a);
  pb_str(&n, 6, "node doc");
  pb_unknowns(&n);
  pb_msg(&g, 1, &n);

  n = node("Relu", NULL, relu_in, 1, relu_out, 1);
  pb_msg(&g, 1, &n);

  /* Gemm: FLOAT without type (inferred), omitted optional input "" */
  n = node("Gemm", "fc", gemm_in, 3, gemm_out, 1);
  pb_str(&a, 1, "alpha");
  pb_f32(&a, 2, 0.5f);
  pb_msg(&n, 5, &a);
  pb_str(&a, 1, "transB");
  pb_int(&a, 3, 1);
  pb_int(&a, 20, 2);
  pb_msg(&n, 5, &a);
  pb_msg(&g, 1, &n);

  /* Constant: TENSOR attribute with unpacked int64_data; FLOATS mixed */
  n = node("Constant", "k", NULL, 0, k_out, 1);
  t = (pb){0};
  t_dims(&t, dims2, 1);
  pb_int(&t, 2, DM_ONNX_INT64);
  pb_int(&t, 7, -5);
  pb_int(&t, 7, 7);
  pb_str(&a, 1, "value");
  pb_msg(&a, 5, &t);
  pb_int(&a, 20, 4);
  pb_msg(&n, 5, &a);
  pb_str(&a, 1, "scales");
  pb_packed_f32(&a, 7, fl, 2);
  pb_f32(&a, 7, 3.0f);
  pb_msg(&n, 5, &a);
  pb_msg(&g, 1, &n);

  /* Custom-domain node: STRINGS, GRAPH (subgraph), TENSORS */
  n = node("Foo", "foo", k_out, 1, NULL, 0);
  pb_str(&n, 7, "com.dermal");
  pb_str(&a, 1, "labels");
  pb_str(&a, 9, "a");
  pb_str(&a, 9, "bc");
  pb_int(&a, 20, 8);
  pb_msg(&n, 5, &a);
  sub_g = (pb){0};
  sub = node("Identity", NULL, relu_in, 1, relu_out, 1);
  pb_msg(&sub_g, 1, &sub);
  pb_str(&a, 1, "body");
  pb_msg(&a, 6, &sub_g);
  pb_int(&a, 20, 5);
  pb_msg(&n, 5, &a);
  t = tensor_raw("tt", DM_ONNX_FLOAT, dims1, 1, W_DATA, 4);
  pb_str(&a, 1, "many");
  pb_msg(&a, 10, &t);
  pb_msg(&n, 5, &a);
  pb_msg(&g, 1, &n);

  /* Initializers: raw, float_data, int64 unpacked, int8/float16/bool via
   * int32_data, uint64/uint32 via uint64_data, double scalar, empty. */
  t = tensor_raw("W", DM_ONNX_FLOAT, w_dims, 4, W_DATA, sizeof W_DATA);
  pb_unknowns(&t);
  pb_msg(&g, 5, &t);
  t = (pb){0};
  pb_packed_varints(&t, 1, dims2, 1); /* packed dims */
  pb_int(&t, 2, DM_ONNX_FLOAT);
  pb_str(&t, 8, "B");
  pb_packed_f32(&t, 4, b_data, 2);
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, dims3, 1);
  pb_int(&t, 2, DM_ONNX_INT64);
  pb_str(&t, 8, "I64");
  pb_int(&t, 7, 1);
  pb_int(&t, 7, -2);
  pb_int(&t, 7, 3);
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, dims3, 1);
  pb_int(&t, 2, DM_ONNX_INT8);
  pb_str(&t, 8, "I8");
  pb_packed_varints(&t, 5, i8, 3);
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, dims2, 1);
  pb_int(&t, 2, DM_ONNX_FLOAT16);
  pb_str(&t, 8, "H");
  pb_int(&t, 5, 0x3c00);
  pb_int(&t, 5, 0xc000);
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, dims3, 1);
  pb_int(&t, 2, DM_ONNX_BOOL);
  pb_str(&t, 8, "BOOLS");
  pb_int(&t, 5, 1);
  pb_int(&t, 5, 0);
  pb_int(&t, 5, 1);
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, dims1, 1);
  pb_int(&t, 2, DM_ONNX_UINT64);
  pb_str(&t, 8, "U64");
  pb_uint(&t, 11, 0x8000000000000005ull);
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, dims1, 1);
  pb_int(&t, 2, DM_ONNX_UINT32);
  pb_str(&t, 8, "U32");
  pb_uint(&t, 11, 4000000000u);
  pb_msg(&g, 5, &t);
  t = (pb){0};
  pb_int(&t, 2, DM_ONNX_DOUBLE);
  pb_str(&t, 8, "D");
  pb_bytes(&t, 10, &d, 8); /* packed double_data, scalar (no dims) */
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, e_dims, 2);
  pb_int(&t, 2, DM_ONNX_FLOAT);
  pb_str(&t, 8, "E");
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, dims1, 1);
  pb_int(&t, 2, DM_ONNX_INT32);
  pb_str(&t, 8, "I32");
  pb_int(&t, 5, -7); /* 10-byte negative varint */
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, dims2, 1);
  pb_int(&t, 2, DM_ONNX_FLOAT);
  pb_str(&t, 8, "F2");
  pb_f32(&t, 4, 2.5f); /* unpacked float_data */
  pb_f32(&t, 4, -4.0f);
  pb_msg(&g, 5, &t);
  t = (pb){0};
  t_dims(&t, dims2, 1);
  pb_int(&t, 2, DM_ONNX_DOUBLE);
  pb_str(&t, 8, "D2");
  pb_fixed64(&t, 10, 0x3ff0000000000000ull); /* unpacked double_data: 1.0 */
  pb_bytes(&t, 10, &d, 8);                   /* then a packed chunk */
  pb_msg(&g, 5, &t);

  t = vinfo("X", DM_ONNX_FLOAT, 4, x_dims);
  pb_msg(&g, 11, &t);
  t = vinfo("Y", DM_ONNX_FLOAT, -1, NULL);
  pb_msg(&g, 12, &t);
  t = vinfo("C", DM_ONNX_FLOAT, 3, c_dims);
  pb_msg(&g, 13, &t);
  { /* a sequence-typed value: described as unknown */
    pb v = {0}, ty = {0}, seq = {0};
    pb_str(&v, 1, "S");
    pb_msg(&ty, 4, &seq);
    pb_msg(&v, 2, &ty);
    pb_msg(&g, 13, &v);
  }

  pb_msg(&m, 7, &g);
  pb_int(&m, 1, 8); /* last: see wrap_model */
  return m;
}

/* ------------------------------------------------------------------------ */
/* Tests. */

static bool in_buf(const void *p, const pb *b) {
  const uint8_t *q = p;
  return q >= b->p && q < b->p + b->n;
}

static float f32_at(const void *data, size_t i) {
  float f;
  memcpy(&f, (const uint8_t *)data + i * 4, 4);
  return f;
}

static const dm_onnx_tensor *find_init(const dm_onnx_model *m, const char *n) {
  size_t i;
  for (i = 0; i < m->graph.n_initializers; i++)
    if (!strcmp(m->graph.initializers[i].name, n))
      return &m->graph.initializers[i];
  return NULL;
}

static bool check_model(const dm_onnx_model *m, const pb *b) {
  const dm_onnx_graph *g = &m->graph;
  const dm_onnx_node *n;
  const dm_onnx_attr *a;
  const dm_onnx_tensor *t;
  int64_t i64[3];
  uint64_t u64;
  uint32_t u32;
  uint16_t h[2];
  double d;
  int32_t i32;

  CHECK(m->ir_version == 8);
  CHECK(m->opset == 13);
  CHECK(m->n_opsets == 2);
  CHECK(!strcmp(m->opsets[1].domain, "ai.onnx.ml") &&
        m->opsets[1].version == 3);
  CHECK(!strcmp(m->producer_name, "dermal-test"));
  CHECK(!strcmp(m->producer_version, "1.0"));
  CHECK(!strcmp(m->domain, "org.dermal"));
  CHECK(m->model_version == 42);
  CHECK(!strcmp(m->doc_string, "doc"));
  CHECK(m->n_metadata == 2);
  CHECK(!strcmp(m->metadata[0].key, "classes"));
  CHECK(!strcmp(dm_onnx_meta(m, "classes"), "mel,nv,bcc"));
  CHECK(!strcmp(dm_onnx_meta(m, "input_size"), "224"));
  CHECK(dm_onnx_meta(m, "absent") == NULL);
  CHECK(m->file_bytes == b->n);
  CHECK(!strcmp(g->name, "main"));
  CHECK(g->n_nodes == 5);

  n = &g->nodes[0];
  CHECK(!strcmp(n->op_type, "Conv") && !strcmp(n->name, "conv0"));
  CHECK(!strcmp(n->domain, ""));
  CHECK(n->n_inputs == 3 && !strcmp(n->inputs[2], "B"));
  CHECK(n->n_outputs == 1 && !strcmp(n->outputs[0], "C"));
  CHECK(n->n_attrs == 4);
  a = dm_onnx_attr_find(n, "kernel_shape");
  CHECK(a && a->type == DM_ONNX_ATTR_INTS && a->n_ints == 2);
  CHECK(a->ints[0] == 3 && a->ints[1] == 3);
  CHECK((uintptr_t)a->ints % 8 == 0);
  a = dm_onnx_attr_find(n, "pads");
  CHECK(a && a->type == DM_ONNX_ATTR_INTS && a->n_ints == 4); /* inferred */
  CHECK(a->ints[0] == 1 && a->ints[1] == -1 && a->ints[3] == 2);
  a = dm_onnx_attr_find(n, "group");
  CHECK(a && a->type == DM_ONNX_ATTR_INT && a->i == 1);
  a = dm_onnx_attr_find(n, "auto_pad");
  CHECK(a && a->type == DM_ONNX_ATTR_STRING && a->s_len == 6);
  CHECK(!strcmp(a->s, "NOTSET"));
  CHECK(dm_onnx_attr_find(n, "nope") == NULL);

  n = &g->nodes[1];
  CHECK(!strcmp(n->op_type, "Relu") && !strcmp(n->name, "") && n->n_attrs == 0);

  n = &g->nodes[2];
  CHECK(n->n_inputs == 3 && !strcmp(n->inputs[1], ""));
  a = dm_onnx_attr_find(n, "alpha");
  CHECK(a && a->type == DM_ONNX_ATTR_FLOAT && a->f == 0.5f);
  a = dm_onnx_attr_find(n, "transB");
  CHECK(a && a->type == DM_ONNX_ATTR_INT && a->i == 1);

  n = &g->nodes[3];
  CHECK(n->n_inputs == 0 && n->n_outputs == 1);
  a = dm_onnx_attr_find(n, "value");
  CHECK(a && a->type == DM_ONNX_ATTR_TENSOR && a->t);
  CHECK(a->t->dtype == DM_ONNX_INT64 && a->t->ndim == 1 && a->t->numel == 2);
  CHECK(a->t->nbytes == 16 && !a->t->zero_copy);
  memcpy(i64, a->t->data, 16);
  CHECK(i64[0] == -5 && i64[1] == 7);
  a = dm_onnx_attr_find(n, "scales");
  CHECK(a && a->type == DM_ONNX_ATTR_FLOATS && a->n_floats == 3);
  CHECK(a->floats[0] == 1.5f && a->floats[1] == -2.25f && a->floats[2] == 3.0f);

  n = &g->nodes[4];
  CHECK(!strcmp(n->domain, "com.dermal") && n->n_outputs == 0);
  a = dm_onnx_attr_find(n, "labels");
  CHECK(a && a->type == DM_ONNX_ATTR_STRINGS && a->n_strings == 2);
  CHECK(!strcmp(a->strings[0], "a") && !strcmp(a->strings[1], "bc"));
  a = dm_onnx_attr_find(n, "body");
  CHECK(a && a->type == DM_ONNX_ATTR_GRAPH);
  a = dm_onnx_attr_find(n, "many");
  CHECK(a && a->type == DM_ONNX_ATTR_TENSORS); /* inferred, skipped */

  CHECK(g->n_initializers == 13);
  t = find_init(m, "W");
  CHECK(t && t->dtype == DM_ONNX_FLOAT && t->ndim == 4 && t->numel == 18);
  CHECK(t->dims[0] == 2 && t->dims[3] == 3);
  CHECK(t->nbytes == sizeof W_DATA && t->zero_copy && in_buf(t->data, b));
  CHECK(f32_at(t->data, 0) == 1.0f && f32_at(t->data, 17) == -20.0f);
  t = find_init(m, "B");
  CHECK(t && t->ndim == 1 && t->dims[0] == 2 && !t->zero_copy);
  CHECK(!in_buf(t->data, b) && (uintptr_t)t->data % 4 == 0);
  CHECK(f32_at(t->data, 0) == 0.25f && f32_at(t->data, 1) == -1.0f);
  t = find_init(m, "I64");
  CHECK(t && t->nbytes == 24);
  memcpy(i64, t->data, 24);
  CHECK(i64[0] == 1 && i64[1] == -2 && i64[2] == 3);
  t = find_init(m, "I8");
  CHECK(t && t->nbytes == 3);
  CHECK(((const int8_t *)t->data)[0] == -128 &&
        ((const int8_t *)t->data)[2] == 127);
  t = find_init(m, "H");
  CHECK(t && t->nbytes == 4);
  memcpy(h, t->data, 4);
  CHECK(h[0] == 0x3c00 && h[1] == 0xc000);
  t = find_init(m, "BOOLS");
  CHECK(t && t->nbytes == 3 && ((const uint8_t *)t->data)[0] == 1 &&
        ((const uint8_t *)t->data)[1] == 0);
  t = find_init(m, "U64");
  CHECK(t && t->nbytes == 8);
  memcpy(&u64, t->data, 8);
  CHECK(u64 == 0x8000000000000005ull);
  t = find_init(m, "U32");
  CHECK(t && t->nbytes == 4);
  memcpy(&u32, t->data, 4);
  CHECK(u32 == 4000000000u);
  t = find_init(m, "D");
  CHECK(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 8);
  memcpy(&d, t->data, 8);
  CHECK(d == 3.5);
  t = find_init(m, "E");
  CHECK(t && t->ndim == 2 && t->numel == 0 && t->data == NULL &&
        t->nbytes == 0);
  t = find_init(m, "I32");
  CHECK(t && t->nbytes == 4);
  memcpy(&i32, t->data, 4);
  CHECK(i32 == -7);
  t = find_init(m, "F2");
  CHECK(t && t->nbytes == 8 && f32_at(t->data, 0) == 2.5f &&
        f32_at(t->data, 1) == -4.0f);
  t = find_init(m, "D2");
  CHECK(t && t->nbytes == 16);
  memcpy(&d, t->data, 8);
  CHECK(d == 1.0);
  memcpy(&d, (const uint8_t *)t->data + 8, 8);
  CHECK(d == 3.5);

  CHECK(g->n_inputs == 1 && !strcmp(g->inputs[0].name, "X"));
  CHECK(g->inputs[0].dtype == DM_ONNX_FLOAT && g->inputs[0].ndim == 4);
  CHECK(g->inputs[0].dims[0] == -1 && g->inputs[0].dims[1] == 3 &&
        g->inputs[0].dims[3] == 224);
  CHECK(g->n_outputs == 1 && g->outputs[0].ndim == -1);
  CHECK(g->n_value_info == 2);
  CHECK(g->value_info[0].ndim == 3 && g->value_info[0].dims[1] == -1 &&
        g->value_info[0].dims[2] == 7);
  CHECK(!strcmp(g->value_info[1].name, "S") && g->value_info[1].dtype == 0 &&
        g->value_info[1].ndim == -1);
  return true;
}

static bool test_valid_model(void) {
  pb b = build_model();
  dm_onnx_model *m = NULL;
  dm_errbuf eb = {{0}};
  dm_err rc = dm_onnx_parse(b.p, b.n, NULL, &m, &eb);
  bool ok;
  CHECK_ERR(rc, DM_OK, eb, NULL);
  ok = check_model(m, &b);
  dm_onnx_free(m);
  pb_free(&b);
  return ok;
}

static bool test_truncated_everywhere(void) {
  pb b = build_model();
  size_t k;
  for (k = 0; k < b.n; k++) {
    dm_onnx_model *m = NULL;
    dm_errbuf eb = {{0}};
    /* a heap copy of exactly k bytes, so ASan sees any overread */
    uint8_t *copy = malloc(k ? k : 1);
    dm_err rc;
    if (!copy) return false;
    if (k) memcpy(copy, b.p, k);
    rc = dm_onnx_parse(copy, k, NULL, &m, (k & 1) ? &eb : NULL);
    if (rc == DM_OK) {
      fprintf(stderr, "truncation at %zu of %zu accepted\n", k, b.n);
      dm_onnx_free(m);
      free(copy);
      pb_free(&b);
      return false;
    }
    if ((k & 1) && !eb.msg[0]) {
      fprintf(stderr, "truncation at %zu: empty message\n", k);
      free(copy);
      pb_free(&b);
      return false;
    }
    free(copy);
  }
  pb_free(&b);
  return true;
}

static dm_err parse_buf(const pb *b, dm_errbuf *eb) {
  dm_onnx_model *m = NULL;
  dm_err rc = dm_onnx_parse(b->p, b->n, NULL, &m, eb);
  dm_onnx_free(m);
  return rc;
}

static bool test_varints(void) {
  static const uint8_t ff[10] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                 0xff, 0xff, 0xff, 0xff, 0xff};
  pb b = {0}, g = {0}, n;
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  uint8_t x;
  dm_err rc;
  static const char *const o[] = {"y"};

  /* 11-byte varint */
  pb_tag(&b, 1, VARINT);
  pb_put(&b, ff, 10);
  x = 0x01;
  pb_put(&b, &x, 1);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "ir_version: overlong");
  pb_free(&b);
  /* 10 bytes, last byte carries more than bit 63 */
  pb_tag(&b, 1, VARINT);
  pb_put(&b, ff, 9);
  x = 0x02;
  pb_put(&b, &x, 1);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "overlong");
  pb_free(&b);
  /* overlong length of a length-delimited field */
  pb_tag(&b, 6, LEN);
  pb_put(&b, ff, 10);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "doc_string: overlong length");
  pb_free(&b);
  /* overlong tag */
  pb_put(&b, ff, 10);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "tag");
  pb_free(&b);
  /* truncated varint at end */
  pb_tag(&b, 1, VARINT);
  x = 0x80;
  pb_put(&b, &x, 1);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "truncated varint");
  pb_free(&b);

  /* the largest 10-byte varint is valid: model_version = -1 */
  n = node("Relu", NULL, NULL, 0, o, 1);
  pb_msg(&g, 1, &n);
  b = wrap_model(&g);
  pb_tag(&b, 5, VARINT);
  pb_put(&b, ff, 9);
  x = 0x01;
  pb_put(&b, &x, 1);
  rc = dm_onnx_parse(b.p, b.n, NULL, &m, &eb);
  CHECK_ERR(rc, DM_OK, eb, NULL);
  CHECK(m->model_version == -1);
  dm_onnx_free(m);
  pb_free(&b);
  return true;
}

static bool test_length_past_end(void) {
  pb b = {0}, g = {0}, n0, n1;
  dm_errbuf eb = {{0}};
  static const char *const o[] = {"y"};
  uint8_t junk[12] = {0};

  pb_tag(&b, 7, LEN);
  pb_varint(&b, 4000);
  pb_put(&b, junk, 12);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb,
            "graph: length 4000 exceeds remaining 12 bytes");
  pb_free(&b);

  /* nested: the message names the path */
  n0 = node("Relu", NULL, NULL, 0, o, 1);
  n1 = node("Relu", NULL, NULL, 0, o, 1);
  pb_tag(&n1, 5, LEN);
  pb_varint(&n1, 4000);
  pb_put(&n1, junk, 3);
  pb_msg(&g, 1, &n0);
  pb_msg(&g, 1, &n1);
  b = wrap_model(&g);
  CHECK_ERR(
      parse_buf(&b, &eb), DM_FORMAT, eb,
      "graph.node[1].attribute[0]: length 4000 exceeds remaining 3 bytes");
  pb_free(&b);
  return true;
}

static bool test_wire_types(void) {
  pb b = {0}, g = {0}, n;
  dm_errbuf eb = {{0}};
  static const char *const o[] = {"y"};
  uint8_t x = 0;

  pb_tag(&b, 50, SGROUP); /* groups are refused */
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "group");
  pb_free(&b);
  pb_tag(&b, 50, 4);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "group");
  pb_free(&b);
  pb_tag(&b, 50, 6);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "invalid wire type 6");
  pb_free(&b);
  pb_tag(&b, 50, 7);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "invalid wire type 7");
  pb_free(&b);
  pb_put(&b, &x, 1); /* field number 0 */
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "invalid field tag");
  pb_free(&b);
  pb_str(&b, 1, "8"); /* ir_version as bytes */
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb,
            "ir_version: unexpected wire type 2");
  pb_free(&b);
  pb_tag(&b, 2000, I64); /* truncated fixed64 */
  pb_put(&b, &x, 1);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "fixed64");
  pb_free(&b);
  pb_tag(&b, 2000, I32); /* truncated fixed32 */
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "fixed32");
  pb_free(&b);

  /* attribute f encoded as varint */
  n = node("Relu", NULL, NULL, 0, o, 1);
  {
    pb a = {0};
    pb_str(&a, 1, "alpha");
    pb_int(&a, 2, 1);
    pb_msg(&n, 5, &a);
  }
  pb_msg(&g, 1, &n);
  b = wrap_model(&g);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb,
            "graph.node[0].attribute[0].f: unexpected wire type 0");
  pb_free(&b);
  return true;
}

/* Subgraph nested `levels` deep through GRAPH attributes. */
static pb nested_graph(int levels) {
  pb g = {0};
  static const char *const o[] = {"y"};
  int i;
  {
    pb n = node("Relu", NULL, NULL, 0, o, 1);
    pb_msg(&g, 1, &n);
  }
  for (i = 0; i < levels; i++) {
    pb a = {0}, n = node("If", NULL, NULL, 0, o, 1), outer = {0};
    pb_str(&a, 1, "then_branch");
    pb_int(&a, 20, 5);
    pb_msg(&a, 6, &g);
    pb_msg(&n, 5, &a);
    pb_msg(&outer, 1, &n);
    g = outer;
  }
  return g;
}

static bool test_depth(void) {
  pb g = nested_graph(5), b = wrap_model(&g);
  dm_errbuf eb = {{0}};
  CHECK_ERR(parse_buf(&b, &eb), DM_OK, eb, NULL);
  pb_free(&b);
  g = nested_graph(300);
  b = wrap_model(&g);
  CHECK_ERR(parse_buf(&b, &eb), DM_RANGE, eb, "nested deeper than 32");
  CHECK(strstr(eb.msg, "graph.node[0].attribute[0].g.node[0]") == eb.msg);
  pb_free(&b);
  /* deep nesting inside an unknown field is skipped, not followed */
  {
    pb u = {0};
    int i;
    for (i = 0; i < 10000; i++) {
      pb outer = {0};
      pb_msg(&outer, 77, &u);
      u = outer;
    }
    g = nested_graph(0);
    b = wrap_model(&g);
    pb_msg(&b, 77, &u);
    CHECK_ERR(parse_buf(&b, &eb), DM_OK, eb, NULL);
    pb_free(&b);
  }
  return true;
}

static bool test_count_cap(void) {
  pb g = {0}, b;
  dm_errbuf eb = {{0}};
  size_t i;
  static const uint8_t empty_node[2] = {0x0a, 0x00}; /* field 1, length 0 */
  for (i = 0; i <= DM_ONNX_MAX_COUNT; i++)
    pb_put(&g, empty_node, 2);
  b = wrap_model(&g);
  CHECK_ERR(parse_buf(&b, &eb), DM_RANGE, eb, "graph.node[1000000]: more than");
  pb_free(&b);
  return true;
}

static dm_err parse_tensor_model(pb *t, dm_errbuf *eb) {
  pb b = model_with_init(t);
  dm_err rc = parse_buf(&b, eb);
  pb_free(&b);
  return rc;
}

static bool test_tensor_errors(void) {
  dm_errbuf eb = {{0}};
  pb t;
  static const int64_t huge[] = {(int64_t)1 << 62, 4};
  static const int64_t big[] = {(int64_t)1 << 61, 1};
  static const int64_t d22[] = {2, 2};
  static const int64_t d9[] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  static const int64_t d2[] = {2};
  static const int64_t neg[] = {-3};

  t = tensor_raw("w", DM_ONNX_FLOAT, huge, 2, W_DATA, 4);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_RANGE, eb,
            "product of dims overflows");
  t = tensor_raw("w", DM_ONNX_INT64, big, 2, W_DATA, 8);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_RANGE, eb, "byte size overflows");
  t = tensor_raw("w", DM_ONNX_FLOAT, d22, 2, W_DATA, 12);
  CHECK_ERR(
      parse_tensor_model(&t, &eb), DM_FORMAT, eb,
      "graph.initializer[0]: tensor 'w': raw_data has 12 bytes, expected 16");
  t = tensor_raw("w", DM_ONNX_FLOAT, d9, 9, W_DATA, 4);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_RANGE, eb, "more than 8 dims");
  t = tensor_raw("w", DM_ONNX_FLOAT, neg, 1, W_DATA, 4);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb, "negative dim");
  t = tensor_raw("w", DM_ONNX_STRING, d2, 1, "ab", 2);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_UNSUPPORTED, eb, "STRING");
  t = tensor_raw("w", 14, d2, 1, W_DATA, 16); /* COMPLEX64 */
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_UNSUPPORTED, eb, "data_type 14");
  t = tensor_raw("w", 0, d2, 1, W_DATA, 8);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb, "data_type missing");
  t = tensor_raw("", DM_ONNX_FLOAT, d2, 1, W_DATA, 8);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb,
            "initializer without a name");

  t = (pb){0}; /* no data */
  t_dims(&t, d2, 1);
  pb_int(&t, 2, DM_ONNX_FLOAT);
  pb_str(&t, 8, "w");
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb,
            "no data for 2 elements");
  t = (pb){0}; /* typed count mismatch */
  t_dims(&t, d2, 1);
  pb_int(&t, 2, DM_ONNX_FLOAT);
  pb_str(&t, 8, "w");
  pb_f32(&t, 4, 1.0f);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb,
            "float_data has 1 values, expected 2");
  t = (pb){0}; /* wrong typed field */
  t_dims(&t, d2, 1);
  pb_int(&t, 2, DM_ONNX_INT64);
  pb_str(&t, 8, "w");
  pb_packed_f32(&t, 4, W_DATA, 2);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb,
            "float_data given for a int64 tensor");
  t = (pb){0}; /* packed float length not a multiple of 4 */
  t_dims(&t, d2, 1);
  pb_int(&t, 2, DM_ONNX_FLOAT);
  pb_bytes(&t, 4, W_DATA, 7);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb, "not a multiple of 4");
  t = (pb){0}; /* int8 out of range */
  t_dims(&t, d2, 1);
  pb_int(&t, 2, DM_ONNX_INT8);
  pb_str(&t, 8, "w");
  pb_int(&t, 5, 1);
  pb_int(&t, 5, 200);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb,
            "value 200 out of range for int8");
  t = tensor_raw("w", DM_ONNX_FLOAT, d2, 1, W_DATA, 8); /* raw + typed */
  pb_f32(&t, 4, 1.0f);
  pb_f32(&t, 4, 1.0f);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb,
            "both raw_data and typed");
  t = tensor_raw("w", DM_ONNX_FLOAT, d2, 1, W_DATA, 8); /* segment */
  {
    pb s = {0};
    pb_int(&s, 1, 0);
    pb_msg(&t, 3, &s);
  }
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_UNSUPPORTED, eb, "segment");
  t = tensor_raw("w", DM_ONNX_FLOAT, d2, 1, W_DATA, 8); /* bad location */
  pb_int(&t, 14, 5);
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_UNSUPPORTED, eb, "data_location 5");
  t = tensor_raw("w", DM_ONNX_FLOAT, d2, 1, W_DATA, 8); /* string_data */
  pb_str(&t, 6, "x");
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb, "string_data");
  t = (pb){0}; /* packed varints cut inside a value */
  t_dims(&t, d2, 1);
  pb_int(&t, 2, DM_ONNX_INT64);
  {
    uint8_t bad[2] = {0x01, 0x81};
    pb_bytes(&t, 7, bad, 2);
  }
  CHECK_ERR(parse_tensor_model(&t, &eb), DM_FORMAT, eb,
            "truncated varint in packed");
  return true;
}

static bool test_model_errors(void) {
  dm_errbuf eb = {{0}};
  pb b = {0}, g = {0}, n, o;
  static const char *const out[] = {"y"};
  static const char nul_name[] = {'a', '\0', 'b'};

  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "model: ir_version missing");
  CHECK(dm_onnx_parse(NULL, 0, NULL, &(dm_onnx_model *){NULL}, NULL) ==
        DM_FORMAT);
  pb_int(&b, 1, 8);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "model has no graph");
  pb_free(&b);

  n = node("Relu", NULL, NULL, 0, out, 1); /* no opset_import at IR 8 */
  pb_msg(&g, 1, &n);
  pb_msg(&b, 7, &g);
  pb_int(&b, 1, 8);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "requires opset_import");
  pb_free(&b);

  g = (pb){0}; /* duplicate graph */
  b = wrap_model(&g);
  pb_msg(&b, 7, &g);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "duplicate graph");
  pb_free(&b);

  n = (pb){0}; /* node without op_type */
  pb_str(&n, 1, "x");
  pb_msg(&g, 1, &n);
  b = wrap_model(&g);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb,
            "graph.node[0]: node without op_type");
  pb_free(&b);

  n = node("Relu", NULL, NULL, 0, out, 1); /* NUL in a name */
  pb_bytes(&n, 3, nul_name, 3);
  pb_msg(&g, 1, &n);
  b = wrap_model(&g);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb,
            "graph.node[0].name: name contains a NUL");
  pb_free(&b);

  n = node("Relu", NULL, NULL, 0, out, 1); /* attribute without value */
  {
    pb a = {0};
    pb_str(&a, 1, "alpha");
    pb_msg(&n, 5, &a);
  }
  pb_msg(&g, 1, &n);
  b = wrap_model(&g);
  CHECK_ERR(parse_buf(&b, &eb), DM_FORMAT, eb, "attribute 'alpha': no value");
  pb_free(&b);

  o = (pb){0}; /* sparse initializer */
  pb_str(&o, 3, "x");
  pb_msg(&g, 15, &o);
  b = wrap_model(&g);
  CHECK_ERR(parse_buf(&b, &eb), DM_UNSUPPORTED, eb, "sparse");
  pb_free(&b);

  { /* value_info with 9 dims */
    static const int64_t d9[] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    pb v = vinfo("x", DM_ONNX_FLOAT, 9, d9);
    pb_msg(&g, 11, &v);
    b = wrap_model(&g);
    CHECK_ERR(parse_buf(&b, &eb), DM_RANGE, eb,
              "graph.input[0].type.tensor_type.shape.dim[8]: more than 8 dims");
    pb_free(&b);
  }
  CHECK(dm_onnx_parse(NULL, 1, NULL, &(dm_onnx_model *){NULL}, &eb) == DM_ARG);
  return true;
}

/* ------------------------------------------------------------------------ */
/* Files: external data, standalone tensors, dm_onnx_open. */

static bool write_file(const char *path, const void *d, size_t n) {
  FILE *f = fopen(path, "wb");
  bool ok;
  if (!f) return false;
  ok = fwrite(d, 1, n, f) == n;
  return fclose(f) == 0 && ok;
}

static pb ext_tensor(const char *name, int64_t n, const char *loc,
                     const char *off, const char *len) {
  pb t = {0}, e;
  pb_int(&t, 1, n);
  pb_int(&t, 2, DM_ONNX_FLOAT);
  pb_str(&t, 8, name);
  e = kv("location", loc);
  pb_msg(&t, 13, &e);
  if (off) {
    e = kv("offset", off);
    pb_msg(&t, 13, &e);
  }
  if (len) {
    e = kv("length", len);
    pb_msg(&t, 13, &e);
  }
  e = kv("checksum", "ignored");
  pb_msg(&t, 13, &e);
  pb_int(&t, 14, 1);
  return t;
}

static char tmpdir[256];

static void path_in(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", tmpdir, name);
}

/* Writes a model with one external tensor and opens it. */
static dm_err open_ext(const char *loc, const char *off, const char *len,
                       int64_t n, dm_errbuf *eb) {
  pb t = ext_tensor("w", n, loc, off, len), b = model_with_init(&t);
  char p[512];
  dm_onnx_model *m = NULL;
  dm_err rc;
  path_in(p, sizeof p, "ext.onnx");
  if (!write_file(p, b.p, b.n)) {
    pb_free(&b);
    return DM_IO;
  }
  rc = dm_onnx_open(p, &m, eb);
  dm_onnx_free(m);
  pb_free(&b);
  return rc;
}

static bool test_external(void) {
  char p[512], q[512], outside[512];
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  pb g = {0}, t, b;
  float w[16];
  int i;
  dm_err rc;

  for (i = 0; i < 16; i++)
    w[i] = (float)i;
  path_in(p, sizeof p, "weights.bin");
  CHECK(write_file(p, w, sizeof w));
  path_in(p, sizeof p, "sub");
  CHECK(mkdir(p, 0700) == 0);
  path_in(p, sizeof p, "sub/w2.bin");
  CHECK(write_file(p, w, 8));

  pb_str(&g, 2, "g");
  t = ext_tensor("a", 4, "weights.bin", "16", "16");
  pb_msg(&g, 5, &t);
  t = ext_tensor("b", 2, "weights.bin", NULL, NULL);
  pb_msg(&g, 5, &t);
  t = ext_tensor("c", 2, "sub/w2.bin", "0", "8");
  pb_msg(&g, 5, &t);
  t = ext_tensor("d", 0, "sub/w2.bin", "8", "0"); /* empty, at end of file */
  pb_msg(&g, 5, &t);
  b = wrap_model(&g);
  path_in(p, sizeof p, "model.onnx");
  CHECK(write_file(p, b.p, b.n));

  rc = dm_onnx_open(p, &m, &eb);
  CHECK_ERR(rc, DM_OK, eb, NULL);
  CHECK(m->graph.n_initializers == 4);
  {
    const dm_onnx_tensor *ta = &m->graph.initializers[0];
    const dm_onnx_tensor *tb = &m->graph.initializers[1];
    const dm_onnx_tensor *tc = &m->graph.initializers[2];
    const dm_onnx_tensor *td = &m->graph.initializers[3];
    CHECK(ta->zero_copy && ta->nbytes == 16 && f32_at(ta->data, 0) == 4.0f &&
          f32_at(ta->data, 3) == 7.0f);
    CHECK(tb->zero_copy && tb->nbytes == 8 && f32_at(tb->data, 1) == 1.0f);
    CHECK(tc->zero_copy && f32_at(tc->data, 1) == 1.0f);
    CHECK(td->numel == 0 && td->data == NULL);
  }
  CHECK(m->file_bytes == b.n);
  dm_onnx_free(m);
  m = NULL;

  /* the same bytes from memory: with and without a base directory */
  rc = dm_onnx_parse(b.p, b.n, tmpdir, &m, &eb);
  CHECK_ERR(rc, DM_OK, eb, NULL);
  dm_onnx_free(m);
  m = NULL;
  rc = dm_onnx_parse(b.p, b.n, NULL, &m, &eb);
  CHECK_ERR(rc, DM_UNSUPPORTED, eb, "external data needs a base directory");
  pb_free(&b);

  /* refusals */
  CHECK_ERR(open_ext("../x", NULL, NULL, 1, &eb), DM_FORMAT, eb,
            "must not contain '..'");
  CHECK_ERR(open_ext("sub/../weights.bin", NULL, NULL, 1, &eb), DM_FORMAT, eb,
            "'..'");
  CHECK_ERR(open_ext("/etc/passwd", NULL, NULL, 1, &eb), DM_FORMAT, eb,
            "relative");
  CHECK_ERR(open_ext("", NULL, NULL, 1, &eb), DM_FORMAT, eb,
            "location is empty");
  CHECK_ERR(open_ext("missing.bin", NULL, NULL, 1, &eb), DM_IO, eb,
            "missing.bin");
  CHECK_ERR(open_ext("sub", NULL, NULL, 1, &eb), DM_IO, eb,
            NULL); /* a directory */
  CHECK_ERR(open_ext("weights.bin", "60", NULL, 2, &eb), DM_FORMAT, eb,
            "offset+size 60+8 > file 64");
  CHECK_ERR(open_ext("weights.bin", "99999999999999999999999", NULL, 2, &eb),
            DM_FORMAT, eb, "not a decimal number");
  CHECK_ERR(open_ext("weights.bin", "-1", NULL, 2, &eb), DM_FORMAT, eb,
            "not a decimal number");
  CHECK_ERR(open_ext("weights.bin", "0", "12", 2, &eb), DM_FORMAT, eb,
            "external length 12 != 8 bytes");
  CHECK_ERR(open_ext("weights.bin", "0", NULL, 17, &eb), DM_FORMAT, eb,
            "> file 64");

  /* a symlink leading out of the model's folder */
  snprintf(outside, sizeof outside, "%s.outside", tmpdir);
  CHECK(write_file(outside, w, sizeof w));
  path_in(q, sizeof q, "link.bin");
  CHECK(symlink(outside, q) == 0);
  rc = open_ext("link.bin", NULL, NULL, 2, &eb);
  unlink(outside);
  CHECK_ERR(rc, DM_IO, eb, "link.bin");
  return true;
}

static bool test_tensor_file(void) {
  static const int64_t dims[] = {1, 3, 2};
  pb t = tensor_raw("input_0", DM_ONNX_FLOAT, dims, 3, W_DATA, 24);
  dm_onnx_tensor *x = NULL;
  dm_errbuf eb = {{0}};
  char p[512];
  dm_err rc;

  path_in(p, sizeof p, "input_0.pb");
  CHECK(write_file(p, t.p, t.n));
  rc = dm_onnx_read_tensor_file(p, &x, &eb);
  CHECK_ERR(rc, DM_OK, eb, NULL);
  CHECK(!strcmp(x->name, "input_0") && x->ndim == 3 && x->numel == 6);
  CHECK(x->nbytes == 24 && !x->zero_copy && (uintptr_t)x->data % 16 == 0);
  CHECK(!memcmp(x->data, W_DATA, 24));
  dm_onnx_tensor_free(x);
  x = NULL;

  /* from memory, owned copy: survives the buffer */
  rc = dm_onnx_parse_tensor(t.p, t.n, &x, &eb);
  CHECK_ERR(rc, DM_OK, eb, NULL);
  memset(t.p, 0, t.n);
  CHECK(!memcmp(x->data, W_DATA, 24));
  dm_onnx_tensor_free(x);
  pb_free(&t);

  /* typed and empty tensors */
  pb_int(&t, 2, DM_ONNX_INT64);
  pb_int(&t, 7, 9);
  rc = dm_onnx_parse_tensor(t.p, t.n, &x, &eb);
  CHECK_ERR(rc, DM_OK, eb, NULL);
  CHECK(x->ndim == 0 && x->numel == 1 && x->nbytes == 8 &&
        !strcmp(x->name, ""));
  dm_onnx_tensor_free(x);
  pb_free(&t);
  pb_int(&t, 1, 0);
  pb_int(&t, 2, DM_ONNX_UINT8);
  rc = dm_onnx_parse_tensor(t.p, t.n, &x, &eb);
  CHECK_ERR(rc, DM_OK, eb, NULL);
  CHECK(x->numel == 0 && x->data == NULL);
  dm_onnx_tensor_free(x);
  pb_free(&t);

  rc = dm_onnx_parse_tensor(NULL, 0, &x, &eb);
  CHECK_ERR(rc, DM_FORMAT, eb, "tensor: tensor '': data_type missing");
  path_in(p, sizeof p, "nope.pb");
  CHECK_ERR(dm_onnx_read_tensor_file(p, &x, &eb), DM_IO, eb, "nope.pb");
  dm_onnx_tensor_free(NULL);
  return true;
}

static bool test_open_errors(void) {
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  char p[512];
  pb b = build_model();
  path_in(p, sizeof p, "does-not-exist.onnx");
  CHECK_ERR(dm_onnx_open(p, &m, &eb), DM_IO, eb, "does-not-exist.onnx");
  CHECK_ERR(dm_onnx_open(tmpdir, &m, &eb), DM_IO, eb, "not a regular file");
  CHECK_ERR(dm_onnx_open("/dev/null", &m, &eb), DM_IO, eb,
            "not a regular file");
  path_in(p, sizeof p, "empty.onnx");
  CHECK(write_file(p, "", 0));
  CHECK_ERR(dm_onnx_open(p, &m, &eb), DM_FORMAT, eb, "ir_version missing");
  path_in(p, sizeof p, "valid.onnx");
  CHECK(write_file(p, b.p, b.n));
  CHECK_ERR(dm_onnx_open(p, &m, &eb), DM_OK, eb, NULL);
  CHECK(m->graph.n_nodes == 5 && m->file_bytes == b.n);
  CHECK(m->graph.initializers[0].zero_copy);
  dm_onnx_free(m);
  dm_onnx_free(NULL);
  CHECK(dm_onnx_open(NULL, &m, NULL) == DM_ARG);
  pb_free(&b);
  return true;
}

static bool test_helpers(void) {
  dm_errbuf eb;
  char big[400];
  CHECK(dm_onnx_dtype_size(DM_ONNX_FLOAT) == 4);
  CHECK(dm_onnx_dtype_size(DM_ONNX_BFLOAT16) == 2);
  CHECK(dm_onnx_dtype_size(DM_ONNX_UINT64) == 8);
  CHECK(dm_onnx_dtype_size(DM_ONNX_BOOL) == 1);
  CHECK(dm_onnx_dtype_size(DM_ONNX_STRING) == 0);
  CHECK(dm_onnx_dtype_size(99) == 0);
  CHECK(!strcmp(dm_onnx_dtype_name(DM_ONNX_FLOAT), "float32"));
  CHECK(!strcmp(dm_onnx_dtype_name(DM_ONNX_INT64), "int64"));
  CHECK(!strcmp(dm_onnx_dtype_name(DM_ONNX_DOUBLE), "float64"));
  CHECK(!strcmp(dm_onnx_dtype_name(-1), "unknown"));
  CHECK(dm_onnx_meta(NULL, "x") == NULL);
  CHECK(dm_onnx_attr_find(NULL, "x") == NULL);
  CHECK(!strcmp(dm_strerror(DM_OK), "success"));
  CHECK(!strcmp(dm_strerror(DM_FORMAT), "malformed input"));
  CHECK(!strcmp(dm_strerror(DM_BACKEND), "backend failure"));
  CHECK(!strcmp(dm_strerror((dm_err)77), "unknown error"));
  CHECK(dm_errf(NULL, DM_IO, "x %d", 1) == DM_IO);
  CHECK(dm_errf(&eb, DM_RANGE, "n=%d s=%s", 5, "ab") == DM_RANGE);
  CHECK(!strcmp(eb.msg, "n=5 s=ab"));
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK(dm_errf(&eb, DM_IO, "%s", big) == DM_IO);
  CHECK(strlen(eb.msg) == sizeof eb.msg - 1);
  return true;
}

/* ------------------------------------------------------------------------ */
/* Conformance data from Debian's libonnx-testdata. */

#define CONF_DIR "/usr/share/libonnx-testdata/data"

static struct {
  size_t models_ok, models_bad, pb_ok, pb_string, pb_seq, pb_bad;
} conf;

static bool ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

/* Sequence/optional test data is stored as SequenceProto/OptionalProto,
 * which is not a TensorProto: refusing it cleanly is the right answer. */
static bool seq_or_optional(const char *path) {
  return strstr(path, "sequence") || strstr(path, "_seq") ||
         strstr(path, "optional") || strstr(path, "_opt");
}

static int conf_visit(const char *path, const struct stat *st, int type,
                      struct FTW *ftw) {
  dm_errbuf eb = {{0}};
  (void)st;
  (void)ftw;
  if (type != FTW_F) return 0;
  if (ends_with(path, ".onnx")) {
    dm_onnx_model *m = NULL;
    dm_err rc = dm_onnx_open(path, &m, &eb);
    if (rc == DM_OK) {
      conf.models_ok++;
    } else {
      conf.models_bad++;
      fprintf(stderr, "conformance model %s: %s\n", path, eb.msg);
    }
    dm_onnx_free(m);
  } else if (ends_with(path, ".pb")) {
    dm_onnx_tensor *t = NULL;
    dm_err rc = dm_onnx_read_tensor_file(path, &t, &eb);
    if (rc == DM_OK) {
      conf.pb_ok++;
      dm_onnx_tensor_free(t);
    } else if (rc == DM_UNSUPPORTED && strstr(eb.msg, "STRING")) {
      conf.pb_string++;
    } else if (seq_or_optional(path) && rc != DM_IO && rc != DM_NOMEM) {
      conf.pb_seq++;
    } else {
      conf.pb_bad++;
      fprintf(stderr, "conformance tensor %s: %s\n", path, eb.msg);
    }
  }
  return 0;
}

static bool test_conformance(void) {
  struct stat st;
  if (stat(CONF_DIR, &st) != 0) {
    printf("# skip conformance: %s absent (Debian package libonnx-testdata)\n",
           CONF_DIR);
    return true;
  }
  CHECK(nftw(CONF_DIR, conf_visit, 16, FTW_PHYS) == 0);
  printf("# conformance: models %zu ok, %zu failed; tensors %zu ok, %zu "
         "STRING refused, %zu sequence/optional refused, %zu failed\n",
         conf.models_ok, conf.models_bad, conf.pb_ok, conf.pb_string,
         conf.pb_seq, conf.pb_bad);
  CHECK(conf.models_ok > 0 && conf.models_bad == 0 && conf.pb_bad == 0);
  return true;
}

/* ------------------------------------------------------------------------ */

static int write_seeds(const char *dir) {
  static const int64_t dims[] = {2, 3};
  pb b = build_model(), t = tensor_raw("x", DM_ONNX_FLOAT, dims, 2, W_DATA, 24);
  pb g = nested_graph(3), n = wrap_model(&g);
  char p[512];
  int ok = 1;
  snprintf(p, sizeof p, "%s/encoder_model.onnx", dir);
  ok &= write_file(p, b.p, b.n);
  snprintf(p, sizeof p, "%s/encoder_tensor.pb", dir);
  ok &= write_file(p, t.p, t.n);
  snprintf(p, sizeof p, "%s/encoder_nested.onnx", dir);
  ok &= write_file(p, n.p, n.n);
  pb_free(&n);
  g = ext_tensor("e", 4, "weights.bin", "16", "16");
  n = model_with_init(&g);
  snprintf(p, sizeof p, "%s/encoder_external.onnx", dir);
  ok &= write_file(p, n.p, n.n);
  pb_free(&b);
  pb_free(&t);
  pb_free(&n);
  return ok ? 0 : 1;
}

static int rm_visit(const char *path, const struct stat *st, int type,
                    struct FTW *ftw) {
  (void)st;
  (void)type;
  (void)ftw;
  remove(path);
  return 0;
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    bool (*fn)(void);
  } tests[] = {
      {"valid_model", test_valid_model},
      {"truncated_everywhere", test_truncated_everywhere},
      {"varints", test_varints},
      {"length_past_end", test_length_past_end},
      {"wire_types", test_wire_types},
      {"depth", test_depth},
      {"count_cap", test_count_cap},
      {"tensor_errors", test_tensor_errors},
      {"model_errors", test_model_errors},
      {"external", test_external},
      {"tensor_file", test_tensor_file},
      {"open_errors", test_open_errors},
      {"helpers", test_helpers},
      {"conformance", test_conformance},
  };
  const char *tmp = getenv("TMPDIR");
  int passed = 0, failed = 0;
  size_t i;

  if (argc == 3 && !strcmp(argv[1], "--write-seeds"))
    return write_seeds(argv[2]);
  snprintf(tmpdir, sizeof tmpdir, "%s/test_onnx.XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  for (i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    if (tests[i].fn()) {
      passed++;
    } else {
      failed++;
      fprintf(stderr, "FAIL %s\n", tests[i].name);
    }
  }
  nftw(tmpdir, rm_visit, 16, FTW_DEPTH | FTW_PHYS);
  printf("test_onnx: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
