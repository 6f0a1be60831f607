/* writer.c: ONNX (protobuf) serializer over the reader's structs, see
 * include/dermal/onnxwrite.h.
 *
 * Purpose: let dermal write models it edited (`dermal quantize` inserts
 * QuantizeLinear/DequantizeLinear nodes into a parsed graph).
 *
 * How: every message is encoded by one function taking an `enc` that either
 * counts bytes (p == NULL) or writes them.  A nested message is first
 * encoded in counting mode to learn its length prefix, then written; counting
 * never touches tensor data, so the cost of the double pass is negligible and
 * the output buffer is allocated once at its exact size.  Field numbers are
 * those of onnx.proto (IR version 8); repeated scalars are written packed, as
 * proto3 requires readers to accept.
 *
 * Invariants: in writing mode the buffer was sized by a counting pass over the
 * same input, so writes never overflow (checked by DM_ASSERT-like guards that
 * fail with DM_RANGE rather than corrupting memory).
 *
 * Threading: no global mutable state; reentrant. */
#include "dermal/onnxwrite.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------- encoder ---------- */

typedef struct enc {
  uint8_t *p; /* NULL: count only */
  size_t n;   /* bytes produced so far */
  size_t cap; /* writing mode: buffer size */
  dm_err rc;  /* first error */
  dm_errbuf *eb;
} enc;

static void put(enc *e, const void *src, size_t len) {
  if (e->rc) return;
  if (e->p) {
    if (len > e->cap - e->n) { /* cannot happen: sized by a counting pass */
      e->rc = dm_errf(e->eb, DM_RANGE, "onnx writer: internal size mismatch");
      return;
    }
    if (len) memcpy(e->p + e->n, src, len);
  }
  e->n += len;
}

static void varint(enc *e, uint64_t v) {
  uint8_t b[10];
  size_t k = 0;
  do {
    b[k] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) b[k] |= 0x80;
    k++;
  } while (v);
  put(e, b, k);
}

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

static void tag(enc *e, int field, int wt) {
  varint(e, (uint64_t)field << 3 | (uint64_t)wt);
}

static void f_int(enc *e, int field, int64_t v) { /* int32/int64/enum */
  tag(e, field, WT_VARINT);
  varint(e, (uint64_t)v); /* negative: 10-byte two's complement, as protobuf */
}

static void f_bytes(enc *e, int field, const void *p, size_t len) {
  tag(e, field, WT_LEN);
  varint(e, len);
  put(e, p, len);
}

static void f_str(enc *e, int field, const char *s) {
  f_bytes(e, field, s ? s : "", s ? strlen(s) : 0);
}

/* Optional string: omitted when NULL or empty (proto3 default). */
static void f_ostr(enc *e, int field, const char *s) {
  if (s && s[0]) f_str(e, field, s);
}

static void f_float(enc *e, int field, float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16),
                  (uint8_t)(u >> 24)};
  tag(e, field, WT_I32);
  put(e, b, 4);
}

static size_t varint_len(uint64_t v) {
  size_t k = 1;
  while (v >= 0x80) {
    v >>= 7;
    k++;
  }
  return k;
}

static void f_packed_i64(enc *e, int field, const int64_t *v, size_t n) {
  if (!n) return;
  size_t len = 0;
  for (size_t i = 0; i < n; i++)
    len += varint_len((uint64_t)v[i]);
  tag(e, field, WT_LEN);
  varint(e, len);
  for (size_t i = 0; i < n; i++)
    varint(e, (uint64_t)v[i]);
}

static void f_packed_f32(enc *e, int field, const float *v, size_t n) {
  if (!n) return;
  tag(e, field, WT_LEN);
  varint(e, n * 4);
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16),
                    (uint8_t)(u >> 24)};
    put(e, b, 4);
  }
}

/* A nested message: count, then (when writing) write with its length. */
typedef void (*enc_fn)(enc *e, const void *msg);

static void f_msg(enc *e, int field, enc_fn fn, const void *msg) {
  if (e->rc) return;
  enc c = {NULL, 0, 0, DM_OK, e->eb};
  fn(&c, msg);
  if (c.rc) {
    e->rc = c.rc;
    return;
  }
  tag(e, field, WT_LEN);
  varint(e, c.n);
  if (!e->p) {
    e->n += c.n;
    return;
  }
  size_t before = e->n;
  fn(e, msg);
  if (!e->rc && e->n - before != c.n)
    e->rc = dm_errf(e->eb, DM_RANGE, "onnx writer: internal size mismatch");
}

/* ---------- messages ---------- */

/* TensorProto: dims=1, data_type=2, name=8, raw_data=9. */
static void enc_tensor(enc *e, const void *msg) {
  const dm_onnx_tensor *t = msg;
  size_t es = dm_onnx_dtype_size(t->dtype);
  if (!es) {
    e->rc = dm_errf(e->eb, DM_UNSUPPORTED, "tensor '%s': dtype %d",
                    t->name ? t->name : "", (int)t->dtype);
    return;
  }
  if (t->ndim < 0 || t->ndim > DM_ONNX_MAX_DIMS || t->numel < 0 ||
      (size_t)t->numel * es != t->nbytes || (t->nbytes && !t->data)) {
    e->rc = dm_errf(e->eb, DM_ARG,
                    "tensor '%s': %zu bytes for %lld elements of %zu bytes",
                    t->name ? t->name : "", t->nbytes, (long long)t->numel, es);
    return;
  }
  f_packed_i64(e, 1, t->dims, (size_t)t->ndim);
  f_int(e, 2, t->dtype);
  f_ostr(e, 8, t->name);
  if (t->nbytes) f_bytes(e, 9, t->data, t->nbytes);
}

/* AttributeProto: name=1, f=2, i=3, s=4, t=5, floats=7, ints=8, strings=9,
 * type=20. */
typedef struct attr_ctx {
  const dm_onnx_node *node;
  const dm_onnx_attr *a;
} attr_ctx;

static void enc_attr(enc *e, const void *msg) {
  const attr_ctx *c = msg;
  const dm_onnx_attr *a = c->a;
  f_str(e, 1, a->name);
  switch (a->type) {
  case DM_ONNX_ATTR_FLOAT: f_float(e, 2, a->f); break;
  case DM_ONNX_ATTR_INT: f_int(e, 3, a->i); break;
  case DM_ONNX_ATTR_STRING:
    f_bytes(e, 4, a->s ? a->s : "", a->s ? a->s_len : 0);
    break;
  case DM_ONNX_ATTR_TENSOR:
    if (!a->t) goto bad;
    f_msg(e, 5, enc_tensor, a->t);
    break;
  case DM_ONNX_ATTR_FLOATS: f_packed_f32(e, 7, a->floats, a->n_floats); break;
  case DM_ONNX_ATTR_INTS: f_packed_i64(e, 8, a->ints, a->n_ints); break;
  case DM_ONNX_ATTR_STRINGS:
    for (size_t i = 0; i < a->n_strings; i++)
      f_str(e, 9, a->strings[i]);
    break;
  default: goto bad;
  }
  f_int(e, 20, a->type);
  return;
bad:
  e->rc = dm_errf(e->eb, DM_UNSUPPORTED,
                  "node '%s' (%s): attribute '%s' of type %d cannot be written",
                  c->node->name ? c->node->name : "", c->node->op_type, a->name,
                  (int)a->type);
}

/* NodeProto: input=1, output=2, name=3, op_type=4, attribute=5, domain=7. */
static void enc_node(enc *e, const void *msg) {
  const dm_onnx_node *n = msg;
  for (size_t i = 0; i < n->n_inputs; i++)
    f_str(e, 1, n->inputs[i]);
  for (size_t i = 0; i < n->n_outputs; i++)
    f_str(e, 2, n->outputs[i]);
  f_ostr(e, 3, n->name);
  f_str(e, 4, n->op_type);
  for (size_t i = 0; i < n->n_attrs; i++) {
    attr_ctx c = {n, &n->attrs[i]};
    f_msg(e, 5, enc_attr, &c);
  }
  f_ostr(e, 7, n->domain);
}

/* TensorShapeProto.Dimension: dim_value=1 (absent when unknown). */
static void enc_dim(enc *e, const void *msg) {
  int64_t d = *(const int64_t *)msg;
  if (d >= 0) f_int(e, 1, d);
}

/* TensorShapeProto: dim=1. */
static void enc_shape(enc *e, const void *msg) {
  const dm_onnx_value_info *v = msg;
  for (int i = 0; i < v->ndim && i < DM_ONNX_MAX_DIMS; i++)
    f_msg(e, 1, enc_dim, &v->dims[i]);
}

/* TypeProto.Tensor: elem_type=1, shape=2 (absent when ndim < 0). */
static void enc_tensor_type(enc *e, const void *msg) {
  const dm_onnx_value_info *v = msg;
  if (v->dtype) f_int(e, 1, v->dtype);
  if (v->ndim >= 0) f_msg(e, 2, enc_shape, v);
}

/* TypeProto: tensor_type=1. */
static void enc_type(enc *e, const void *msg) {
  f_msg(e, 1, enc_tensor_type, msg);
}

/* ValueInfoProto: name=1, type=2. */
static void enc_value_info(enc *e, const void *msg) {
  const dm_onnx_value_info *v = msg;
  f_str(e, 1, v->name);
  if (v->dtype || v->ndim >= 0) f_msg(e, 2, enc_type, v);
}

/* GraphProto: node=1, name=2, initializer=5, input=11, output=12,
 * value_info=13. */
static void enc_graph(enc *e, const void *msg) {
  const dm_onnx_graph *g = msg;
  for (size_t i = 0; i < g->n_nodes; i++)
    f_msg(e, 1, enc_node, &g->nodes[i]);
  f_str(e, 2, g->name && g->name[0] ? g->name : "graph");
  for (size_t i = 0; i < g->n_initializers; i++)
    f_msg(e, 5, enc_tensor, &g->initializers[i]);
  for (size_t i = 0; i < g->n_inputs; i++)
    f_msg(e, 11, enc_value_info, &g->inputs[i]);
  for (size_t i = 0; i < g->n_outputs; i++)
    f_msg(e, 12, enc_value_info, &g->outputs[i]);
  for (size_t i = 0; i < g->n_value_info; i++)
    f_msg(e, 13, enc_value_info, &g->value_info[i]);
}

/* OperatorSetIdProto: domain=1, version=2. */
static void enc_opset(enc *e, const void *msg) {
  const dm_onnx_opset *o = msg;
  f_ostr(e, 1, o->domain);
  f_int(e, 2, o->version);
}

/* StringStringEntryProto: key=1, value=2. */
static void enc_prop(enc *e, const void *msg) {
  const dm_onnx_prop *p = msg;
  f_str(e, 1, p->key);
  f_str(e, 2, p->value);
}

/* ModelProto: ir_version=1, producer_name=2, producer_version=3, domain=4,
 * model_version=5, doc_string=6, graph=7, opset_import=8,
 * metadata_props=14. */
static void enc_model(enc *e, const void *msg) {
  const dm_onnx_model *m = msg;
  f_int(e, 1, m->ir_version);
  f_ostr(e, 2, m->producer_name);
  f_ostr(e, 3, m->producer_version);
  f_ostr(e, 4, m->domain);
  if (m->model_version) f_int(e, 5, m->model_version);
  f_ostr(e, 6, m->doc_string);
  f_msg(e, 7, enc_graph, &m->graph);
  if (m->n_opsets) {
    for (size_t i = 0; i < m->n_opsets; i++)
      f_msg(e, 8, enc_opset, &m->opsets[i]);
  } else if (m->opset) {
    dm_onnx_opset o = {"", m->opset};
    f_msg(e, 8, enc_opset, &o);
  }
  for (size_t i = 0; i < m->n_metadata; i++)
    f_msg(e, 14, enc_prop, &m->metadata[i]);
}

/* ---------- API ---------- */

dm_err dm_onnx_serialize(const dm_onnx_model *m, void **out, size_t *len,
                         dm_errbuf *eb) {
  if (!m || !out || !len) return dm_errf(eb, DM_ARG, "onnx writer: NULL");
  enc c = {NULL, 0, 0, DM_OK, eb};
  enc_model(&c, m);
  if (c.rc) return c.rc;
  if (c.n > (size_t)INT32_MAX)
    return dm_errf(eb, DM_RANGE, "model of %zu bytes exceeds protobuf's 2 GiB",
                   c.n);
  uint8_t *buf = malloc(c.n ? c.n : 1);
  if (!buf) return dm_errf(eb, DM_NOMEM, "out of memory (%zu bytes)", c.n);
  enc w = {buf, 0, c.n, DM_OK, eb};
  enc_model(&w, m);
  if (!w.rc && w.n != c.n)
    w.rc = dm_errf(eb, DM_RANGE, "onnx writer: internal size mismatch");
  if (w.rc) {
    free(buf);
    return w.rc;
  }
  *out = buf;
  *len = w.n;
  return DM_OK;
}

dm_err dm_onnx_write(const dm_onnx_model *m, const char *path, dm_errbuf *eb) {
  void *buf = NULL;
  size_t len = 0;
  dm_err rc = dm_onnx_serialize(m, &buf, &len, eb);
  if (rc) return rc;
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 16);
  int fd = -1;
  if (!tmp) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory");
    goto out;
  }
  snprintf(tmp, pl + 16, "%s.tmp%ld", path, (long)getpid() % 100000);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    rc = dm_errf(eb, DM_IO, "%s: %s", tmp, strerror(errno));
    goto out;
  }
  for (size_t off = 0; off < len;) {
    ssize_t k = write(fd, (const char *)buf + off, len - off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      rc = dm_errf(eb, DM_IO, "%s: %s", tmp,
                   k < 0 ? strerror(errno) : "short write");
      goto out;
    }
    off += (size_t)k;
  }
  if (fsync(fd) != 0) {
    rc = dm_errf(eb, DM_IO, "%s: fsync: %s", tmp, strerror(errno));
    goto out;
  }
  if (close(fd) != 0) {
    fd = -1;
    rc = dm_errf(eb, DM_IO, "%s: close: %s", tmp, strerror(errno));
    goto out;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    rc = dm_errf(eb, DM_IO, "%s: %s", path, strerror(errno));
    goto out;
  }
out:
  if (fd >= 0) close(fd);
  if (rc && tmp) unlink(tmp);
  free(tmp);
  free(buf);
  return rc;
}
