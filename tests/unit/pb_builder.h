/* pb_builder.h: a tiny protobuf writer for tests, enough to build ONNX models
 * in memory (ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto).
 * Header-only, test code only.  Buffers grow with realloc; on allocation
 * failure the test aborts (tests may). */
#ifndef DERMAL_TESTS_PB_BUILDER_H
#define DERMAL_TESTS_PB_BUILDER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pb {
  uint8_t *p;
  size_t n, cap;
} pb;

static inline void pb_raw(pb *b, const void *d, size_t n) {
  if (b->n + n > b->cap) {
    size_t c = b->cap ? b->cap : 256;
    while (c < b->n + n)
      c *= 2;
    b->p = realloc(b->p, c);
    if (!b->p) abort();
    b->cap = c;
  }
  if (n) memcpy(b->p + b->n, d, n);
  b->n += n;
}
static inline void pb_varint(pb *b, uint64_t v) {
  uint8_t t[10];
  size_t k = 0;
  do {
    t[k] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) t[k] |= 0x80;
    k++;
  } while (v);
  pb_raw(b, t, k);
}
static inline void pb_key(pb *b, unsigned field, unsigned wt) {
  pb_varint(b, (uint64_t)field << 3 | wt);
}
static inline void pb_int(pb *b, unsigned f, int64_t v) {
  pb_key(b, f, 0);
  pb_varint(b, (uint64_t)v);
}
static inline void pb_float(pb *b, unsigned f, float v) {
  pb_key(b, f, 5);
  pb_raw(b, &v, 4);
}
static inline void pb_bytes(pb *b, unsigned f, const void *d, size_t n) {
  pb_key(b, f, 2);
  pb_varint(b, n);
  pb_raw(b, d, n);
}
static inline void pb_str(pb *b, unsigned f, const char *s) {
  pb_bytes(b, f, s, strlen(s));
}
/* Appends sub as a length-delimited field and frees it. */
static inline void pb_msg(pb *b, unsigned f, pb *sub) {
  pb_bytes(b, f, sub->p, sub->n);
  free(sub->p);
  memset(sub, 0, sizeof *sub);
}

/* TensorProto with float raw_data. */
static inline void pb_tensor_f(pb *g, unsigned field, const char *name,
                               const int64_t *dims, int nd, const float *v) {
  pb t = {0};
  size_t n = 1;
  for (int i = 0; i < nd; i++) {
    pb_int(&t, 1, dims[i]);
    n *= (size_t)dims[i];
  }
  pb_int(&t, 2, 1);
  pb_str(&t, 8, name);
  pb_bytes(&t, 9, v, n * 4);
  pb_msg(g, field, &t);
}
static inline void pb_tensor_i64(pb *g, unsigned field, const char *name,
                                 const int64_t *dims, int nd,
                                 const int64_t *v) {
  pb t = {0};
  size_t n = 1;
  for (int i = 0; i < nd; i++) {
    pb_int(&t, 1, dims[i]);
    n *= (size_t)dims[i];
  }
  pb_int(&t, 2, 7);
  pb_str(&t, 8, name);
  pb_bytes(&t, 9, v, n * 8);
  pb_msg(g, field, &t);
}

/* ValueInfoProto float tensor with static dims. */
static inline void pb_value_info(pb *g, unsigned field, const char *name,
                                 const int64_t *dims, int nd) {
  pb shape = {0}, tt = {0}, type = {0}, vi = {0};
  for (int i = 0; i < nd; i++) {
    pb d = {0};
    pb_int(&d, 1, dims[i]);
    pb_msg(&shape, 1, &d);
  }
  pb_int(&tt, 1, 1);
  pb_msg(&tt, 2, &shape);
  pb_msg(&type, 1, &tt);
  pb_str(&vi, 1, name);
  pb_msg(&vi, 2, &type);
  pb_msg(g, field, &vi);
}

/* NodeProto; ins/outs NULL-terminated; attrs appended by the caller via
 * pb_attr_* on the returned node buffer before pb_msg(graph, 1, &node). */
static inline pb pb_node(const char *op, const char *name,
                         const char *const *ins, const char *const *outs) {
  pb n = {0};
  for (; *ins; ins++)
    pb_str(&n, 1, *ins);
  for (; *outs; outs++)
    pb_str(&n, 2, *outs);
  pb_str(&n, 3, name);
  pb_str(&n, 4, op);
  return n;
}
static inline void pb_attr_int(pb *n, const char *name, int64_t v) {
  pb a = {0};
  pb_str(&a, 1, name);
  pb_int(&a, 3, v);
  pb_int(&a, 20, 2);
  pb_msg(n, 5, &a);
}
static inline void pb_attr_float(pb *n, const char *name, float v) {
  pb a = {0};
  pb_str(&a, 1, name);
  pb_float(&a, 2, v);
  pb_int(&a, 20, 1);
  pb_msg(n, 5, &a);
}
static inline void pb_attr_ints(pb *n, const char *name, const int64_t *v,
                                int k) {
  pb a = {0};
  pb_str(&a, 1, name);
  for (int i = 0; i < k; i++)
    pb_int(&a, 8, v[i]);
  pb_int(&a, 20, 7);
  pb_msg(n, 5, &a);
}

/* ModelProto around a finished graph. */
static inline pb pb_model(pb *graph, int64_t opset) {
  pb m = {0}, os = {0};
  pb_int(&m, 1, 8);
  pb_str(&m, 2, "dermal-tests");
  pb_str(&os, 1, "");
  pb_int(&os, 2, opset);
  pb_msg(&m, 8, &os);
  pb_msg(&m, 7, graph);
  return m;
}

#endif
