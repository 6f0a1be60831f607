/* dermal onnx reader: bounds-checked protobuf decoder for ONNX ModelProto and
 * standalone TensorProto files (public API in include/dermal/onnx.h).
 *
 * Purpose: turn an untrusted ONNX file into the plain structs of onnx.h
 * without copying weights.  Only the fields dermal needs are decoded; every
 * other field, of any wire type, is skipped after its length was checked.
 *
 * Invariants:
 *  - All input is read through msg_it/it_next: one call consumes exactly one
 *    field; varints are at most 10 bytes and 64 bits, a length-delimited
 *    payload never exceeds what is left of the enclosing message, groups and
 *    wire types 6/7 are refused, and a known field must have its declared
 *    wire type (repeated scalars: packed or not).
 *  - Each message is walked twice: pass 1 counts repeated fields (capped by
 *    DM_ONNX_MAX_COUNT) so arrays are allocated once at their exact size,
 *    pass 2 fills them.  Nothing is reallocated: pointers never move.
 *  - Message nesting is tracked in pctx.fr (also the error path, e.g.
 *    "graph.node[12].attribute[3]") and capped at DM_ONNX_MAX_DEPTH, so the
 *    recursion through subgraph attributes is bounded.
 *  - Every allocation of a parse comes from one arena; external files are
 *    kept in one list of mappings.  Both are released in one place.
 *  - raw_data and external data are never copied: dm_onnx_tensor.data points
 *    into the mapping and may be unaligned.  Typed fields (float_data, ...)
 *    are decoded into arena buffers in the tensor's own little-endian layout.
 *    Tensor byte sizes use __builtin_mul_overflow and must equal the bytes
 *    actually present.
 *  - The host is little-endian (checked at compile time), so protobuf fixed
 *    fields and tensor bytes are copied as they are.
 *  - A mapped file that another process truncates while mapped raises
 *    SIGBUS on access; models are expected to be replaced, not rewritten.
 *
 * Threading: no global mutable state.  A parse touches only its own context;
 * the resulting dm_onnx_model is immutable and may be read concurrently. */
#include "dermal/onnx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef SYS_openat2
#include <linux/openat2.h>
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the dermal onnx reader assumes a little-endian host"
#endif

#if defined(__GNUC__)
#define PRINTF_LIKE(a, b) __attribute__((format(printf, a, b)))
#else
#define PRINTF_LIKE(a, b)
#endif

static const char EMPTY[] = "";

/* ------------------------------------------------------------------------ */
/* Arena: bump allocation in 64 KiB blocks, big requests get their own block.
 * Freed all at once.  Alignment 16 (max_align_t) suits every element type. */

#define ARENA_ALIGN ((size_t)16)
#define ARENA_BLOCK ((size_t)64 * 1024)

typedef struct arena_blk {
  struct arena_blk *next;
  size_t cap, used;
  max_align_t mem[];
} arena_blk;

typedef struct arena {
  arena_blk *head;
} arena;

_Static_assert(_Alignof(max_align_t) <= 16, "arena alignment");

static void *arena_alloc(arena *a, size_t n) {
  arena_blk *b = a->head, *nb;
  size_t need, cap;
  bool own;
  if (n > SIZE_MAX / 2) return NULL;
  need = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
  if (need == 0) need = ARENA_ALIGN;
  if (b && b->cap - b->used >= need) {
    void *p = (unsigned char *)b->mem + b->used;
    b->used += need;
    return p;
  }
  own = need > ARENA_BLOCK / 4;
  cap = own ? need : ARENA_BLOCK;
  nb = malloc(sizeof *nb + cap);
  if (!nb) return NULL;
  nb->cap = cap;
  nb->used = need;
  if (own && b) { /* keep filling the current block */
    nb->next = b->next;
    b->next = nb;
  } else {
    nb->next = b;
    a->head = nb;
  }
  return nb->mem;
}

static void arena_free(arena *a) {
  arena_blk *b = a->head;
  while (b) {
    arena_blk *next = b->next;
    free(b);
    b = next;
  }
  a->head = NULL;
}

/* ------------------------------------------------------------------------ */
/* Parse context, error path and external mappings. */

typedef struct xmap { /* one mapped external data file */
  struct xmap *next;
  const char *loc; /* location as written in the model (arena) */
  void *addr;      /* NULL when len == 0 */
  size_t len;
} xmap;

typedef struct frame {
  const char *name; /* NULL: unknown field, printed as "field <num>" */
  uint32_t num;
  long idx; /* -1 when not a repeated field */
} frame;

typedef struct pctx {
  arena *ar;
  xmap **maps;          /* list owned by the result */
  const char *base_dir; /* NULL: external data refused */
  int dirfd;            /* base_dir, opened lazily; -1 */
  const char *root;     /* "model" or "tensor", for errors at depth 0 */
  dm_errbuf *eb;
  int depth;
  frame fr[DM_ONNX_MAX_DEPTH + 1]; /* +1: temporary frame of a field error */
} pctx;

static void path_fmt(const pctx *c, char *buf, size_t cap) {
  size_t n = 0;
  int i;
  buf[0] = '\0';
  if (c->depth == 0) {
    snprintf(buf, cap, "%s", c->root);
    return;
  }
  for (i = 0; i < c->depth && n < cap; i++) {
    const frame *fr = &c->fr[i];
    char num[24];
    const char *nm = fr->name;
    int w;
    if (!nm) {
      snprintf(num, sizeof num, "field %u", (unsigned)fr->num);
      nm = num;
    }
    if (fr->idx >= 0)
      w = snprintf(buf + n, cap - n, "%s%s[%ld]", i ? "." : "", nm, fr->idx);
    else
      w = snprintf(buf + n, cap - n, "%s%s", i ? "." : "", nm);
    if (w < 0) break;
    n += (size_t)w;
  }
}

PRINTF_LIKE(3, 0)
static dm_err vperr(const pctx *c, dm_err rc, const char *fmt, va_list ap) {
  char path[160], msg[200];
  if (!c->eb) return rc;
  path_fmt(c, path, sizeof path);
  vsnprintf(msg, sizeof msg, fmt, ap);
  return dm_errf(c->eb, rc, "%s: %s", path, msg);
}

/* Error at the current message. */
PRINTF_LIKE(3, 4)
static dm_err perr(const pctx *c, dm_err rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  rc = vperr(c, rc, fmt, ap);
  va_end(ap);
  return rc;
}

static dm_err nomem(const pctx *c) {
  return perr(c, DM_NOMEM, "out of memory");
}

/* ------------------------------------------------------------------------ */
/* Wire format. */

enum {
  WT_VARINT = 0,
  WT_I64 = 1,
  WT_LEN = 2,
  WT_SGROUP = 3,
  WT_EGROUP = 4,
  WT_I32 = 5
};
enum { VI_OK = 0, VI_TRUNC = 1, VI_OVER = 2 };

typedef struct dm_rd {
  const uint8_t *p, *end;
} dm_rd;

/* At most 10 bytes; the 10th may only carry bit 63. */
static int rd_varint(dm_rd *r, uint64_t *v) {
  uint64_t x = 0;
  unsigned i;
  for (i = 0; i < 10; i++) {
    uint8_t b;
    if (r->p >= r->end) return VI_TRUNC;
    b = *r->p++;
    if (i == 9 && b > 1) return VI_OVER;
    x |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *v = x;
      return VI_OK;
    }
  }
  return VI_OVER; /* not reached: byte 10 > 1 is refused above */
}

/* How a known field may be encoded. */
enum { K_VARINT = 1, K_I32, K_I64, K_LEN, K_PVARINT, K_PI32, K_PI64 };
enum { REP_NO = 0, REP_YES = 1, REP_CAP = 2 }; /* REP_CAP: DM_ONNX_MAX_COUNT */

typedef struct fdesc {
  const char *name; /* NULL: unknown field */
  uint8_t kind;
  uint8_t rep;
} fdesc;

#define SCHEMA_MAX 32 /* field numbers tracked per message; all known < 32 */

typedef struct schema {
  const fdesc *f;
  uint32_t n;
} schema;

#define SCHEMA(arr)                                                            \
  { arr, (uint32_t)(sizeof arr / sizeof arr[0]) }

typedef struct field {
  uint32_t num, wt;
  uint64_t v;          /* VARINT, I32 (low 32 bits), I64 payload */
  const uint8_t *data; /* LEN payload */
  size_t len;
  const fdesc *d; /* NULL for unknown fields */
  long pidx;      /* occurrence index of a repeated field, else -1 */
} field;

typedef struct msg_it {
  dm_rd r;
  const schema *s;
  size_t seen[SCHEMA_MAX];
} msg_it;

static const uint8_t EMPTY_BYTES[1];

static void it_init(msg_it *it, const uint8_t *p, size_t n, const schema *s) {
  if (!p) p = EMPTY_BYTES; /* NULL + 0 is undefined */
  it->r.p = p;
  it->r.end = p + n;
  it->s = s;
  memset(it->seen, 0, sizeof it->seen);
}

static void push_field(pctx *c, const field *f) {
  c->fr[c->depth].name = f->d ? f->d->name : NULL;
  c->fr[c->depth].num = f->num;
  c->fr[c->depth].idx = f->pidx;
  c->depth++;
}

/* Error about field f of the current message. */
PRINTF_LIKE(4, 5)
static dm_err ferr(pctx *c, const field *f, dm_err rc, const char *fmt, ...) {
  va_list ap;
  push_field(c, f); /* fr has one spare slot beyond DM_ONNX_MAX_DEPTH */
  va_start(ap, fmt);
  rc = vperr(c, rc, fmt, ap);
  va_end(ap);
  c->depth--;
  return rc;
}

/* Enter the message held by field f (pops with leave). */
static dm_err enter(pctx *c, const field *f) {
  if (c->depth >= DM_ONNX_MAX_DEPTH)
    return ferr(c, f, DM_RANGE, "messages nested deeper than %d",
                DM_ONNX_MAX_DEPTH);
  push_field(c, f);
  return DM_OK;
}

static void leave(pctx *c) { c->depth--; }

static bool kind_ok(uint8_t kind, uint32_t wt) {
  switch (kind) {
  case K_VARINT: return wt == WT_VARINT;
  case K_I32: return wt == WT_I32;
  case K_I64: return wt == WT_I64;
  case K_LEN: return wt == WT_LEN;
  case K_PVARINT: return wt == WT_VARINT || wt == WT_LEN;
  case K_PI32: return wt == WT_I32 || wt == WT_LEN;
  case K_PI64: return wt == WT_I64 || wt == WT_LEN;
  default: return false;
  }
}

static uint64_t le64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static uint32_t le32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* Reads the next field of the message; *more = false at its end. */
static dm_err it_next(pctx *c, msg_it *it, field *f, bool *more) {
  dm_rd *r = &it->r;
  uint64_t tag, len;
  size_t left;
  int vr;
  if (r->p >= r->end) {
    *more = false;
    return DM_OK;
  }
  if ((vr = rd_varint(r, &tag)) != VI_OK)
    return perr(c, DM_FORMAT, "%s field tag",
                vr == VI_TRUNC ? "truncated" : "overlong");
  if (tag > UINT32_MAX || (tag >> 3) == 0)
    return perr(c, DM_FORMAT, "invalid field tag %llu",
                (unsigned long long)tag);
  f->num = (uint32_t)(tag >> 3);
  f->wt = (uint32_t)(tag & 7u);
  f->v = 0;
  f->data = NULL;
  f->len = 0;
  f->d = NULL;
  f->pidx = -1;
  if (f->num < it->s->n && it->s->f[f->num].name) {
    size_t k = it->seen[f->num]++;
    f->d = &it->s->f[f->num];
    if (f->d->rep != REP_NO) {
      f->pidx = (long)k;
      if (f->d->rep == REP_CAP && k >= DM_ONNX_MAX_COUNT)
        return ferr(c, f, DM_RANGE, "more than %d entries", DM_ONNX_MAX_COUNT);
    }
  }
  switch (f->wt) {
  case WT_VARINT:
    if ((vr = rd_varint(r, &f->v)) != VI_OK)
      return ferr(c, f, DM_FORMAT, "%s varint",
                  vr == VI_TRUNC ? "truncated" : "overlong (over 64 bits)");
    break;
  case WT_I64:
    left = (size_t)(r->end - r->p);
    if (left < 8)
      return ferr(c, f, DM_FORMAT, "fixed64 needs 8 bytes, %zu remain", left);
    f->v = le64(r->p);
    r->p += 8;
    break;
  case WT_I32:
    left = (size_t)(r->end - r->p);
    if (left < 4)
      return ferr(c, f, DM_FORMAT, "fixed32 needs 4 bytes, %zu remain", left);
    f->v = le32(r->p);
    r->p += 4;
    break;
  case WT_LEN:
    if ((vr = rd_varint(r, &len)) != VI_OK)
      return ferr(c, f, DM_FORMAT, "%s length",
                  vr == VI_TRUNC ? "truncated" : "overlong");
    left = (size_t)(r->end - r->p);
    if (len > left)
      return ferr(c, f, DM_FORMAT, "length %llu exceeds remaining %zu bytes",
                  (unsigned long long)len, left);
    f->data = r->p;
    f->len = (size_t)len;
    r->p += f->len;
    break;
  case WT_SGROUP:
  case WT_EGROUP:
    return ferr(c, f, DM_FORMAT, "group wire type is not supported");
  default:
    return ferr(c, f, DM_FORMAT, "invalid wire type %u", (unsigned)f->wt);
  }
  if (f->d && !kind_ok(f->d->kind, f->wt))
    return ferr(c, f, DM_FORMAT, "unexpected wire type %u", (unsigned)f->wt);
  *more = true;
  return DM_OK;
}

/* Elements in one occurrence of a repeated scalar field (packed or not). */
static dm_err elem_count(pctx *c, const field *f, size_t *n) {
  size_t i, k = 0;
  if (f->wt != WT_LEN) {
    *n = 1;
    return DM_OK;
  }
  switch (f->d->kind) {
  case K_PI32:
    if (f->len % 4)
      return ferr(c, f, DM_FORMAT, "packed length %zu not a multiple of 4",
                  f->len);
    *n = f->len / 4;
    return DM_OK;
  case K_PI64:
    if (f->len % 8)
      return ferr(c, f, DM_FORMAT, "packed length %zu not a multiple of 8",
                  f->len);
    *n = f->len / 8;
    return DM_OK;
  default: /* K_PVARINT: one terminating byte per varint */
    for (i = 0; i < f->len; i++)
      k += !(f->data[i] & 0x80);
    if (f->len && (f->data[f->len - 1] & 0x80))
      return ferr(c, f, DM_FORMAT, "truncated varint in packed field");
    *n = k;
    return DM_OK;
  }
}

/* Iterates the varints of a K_PVARINT field occurrence. */
typedef struct vlist {
  const field *f;
  dm_rd r;
  bool first;
} vlist;

static void vl_init(vlist *l, const field *f) {
  l->f = f;
  l->r.p = f->data ? f->data : EMPTY_BYTES;
  l->r.end = l->r.p + f->len;
  l->first = true;
}

static dm_err vl_next(pctx *c, vlist *l, uint64_t *v, bool *got) {
  *v = 0;
  *got = false;
  if (l->f->wt == WT_VARINT) {
    *got = l->first;
    *v = l->f->v;
    l->first = false;
    return DM_OK;
  }
  if (l->r.p >= l->r.end) {
    *got = false;
    return DM_OK;
  }
  if (rd_varint(&l->r, v) != VI_OK)
    return ferr(c, l->f, DM_FORMAT, "bad varint in packed field");
  *got = true;
  return DM_OK;
}

/* NUL-terminated arena copy; names must not contain NUL bytes. */
static dm_err dup_str(pctx *c, const field *f, bool is_name, const char **out) {
  char *s;
  if (is_name && f->len && memchr(f->data, 0, f->len))
    return ferr(c, f, DM_FORMAT, "name contains a NUL byte");
  if (!(s = arena_alloc(c->ar, f->len + 1))) return nomem(c);
  if (f->len) memcpy(s, f->data, f->len);
  s[f->len] = '\0';
  *out = s;
  return DM_OK;
}

static bool bytes_eq(const uint8_t *p, size_t n, const char *lit) {
  size_t m = strlen(lit);
  return n == m && (m == 0 || memcmp(p, lit, m) == 0);
}

/* Decimal digits only, no sign or blanks, no overflow. */
static bool parse_dec(const uint8_t *s, size_t n, uint64_t *out) {
  uint64_t v = 0;
  size_t i;
  if (n == 0 || n > 20) return false;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (__builtin_mul_overflow(v, 10u, &v) ||
        __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
      return false;
  }
  *out = v;
  return true;
}

/* ------------------------------------------------------------------------ */
/* Schemas: field numbers from onnx.proto / onnx-ml.proto (ONNX 1.12). */

static const fdesc model_f[26] = {
    [1] = {"ir_version", K_VARINT, REP_NO},
    [2] = {"producer_name", K_LEN, REP_NO},
    [3] = {"producer_version", K_LEN, REP_NO},
    [4] = {"domain", K_LEN, REP_NO},
    [5] = {"model_version", K_VARINT, REP_NO},
    [6] = {"doc_string", K_LEN, REP_NO},
    [7] = {"graph", K_LEN, REP_NO},
    [8] = {"opset_import", K_LEN, REP_CAP},
    [14] = {"metadata_props", K_LEN, REP_CAP},
    [20] = {"training_info", K_LEN, REP_YES},
    [25] = {"functions", K_LEN, REP_YES},
};
static const fdesc opset_f[3] = {
    [1] = {"domain", K_LEN, REP_NO},
    [2] = {"version", K_VARINT, REP_NO},
};
static const fdesc prop_f[3] = {
    [1] = {"key", K_LEN, REP_NO},
    [2] = {"value", K_LEN, REP_NO},
};
static const fdesc graph_f[16] = {
    [1] = {"node", K_LEN, REP_CAP},
    [2] = {"name", K_LEN, REP_NO},
    [5] = {"initializer", K_LEN, REP_CAP},
    [10] = {"doc_string", K_LEN, REP_NO},
    [11] = {"input", K_LEN, REP_CAP},
    [12] = {"output", K_LEN, REP_CAP},
    [13] = {"value_info", K_LEN, REP_CAP},
    [14] = {"quantization_annotation", K_LEN, REP_YES},
    [15] = {"sparse_initializer", K_LEN, REP_YES},
};
static const fdesc node_f[8] = {
    [1] = {"input", K_LEN, REP_CAP},     [2] = {"output", K_LEN, REP_CAP},
    [3] = {"name", K_LEN, REP_NO},       [4] = {"op_type", K_LEN, REP_NO},
    [5] = {"attribute", K_LEN, REP_CAP}, [6] = {"doc_string", K_LEN, REP_NO},
    [7] = {"domain", K_LEN, REP_NO},
};
static const fdesc attr_f[24] = {
    [1] = {"name", K_LEN, REP_NO},
    [2] = {"f", K_I32, REP_NO},
    [3] = {"i", K_VARINT, REP_NO},
    [4] = {"s", K_LEN, REP_NO},
    [5] = {"t", K_LEN, REP_NO},
    [6] = {"g", K_LEN, REP_NO},
    [7] = {"floats", K_PI32, REP_CAP},
    [8] = {"ints", K_PVARINT, REP_CAP},
    [9] = {"strings", K_LEN, REP_CAP},
    [10] = {"tensors", K_LEN, REP_CAP},
    [11] = {"graphs", K_LEN, REP_CAP},
    [13] = {"doc_string", K_LEN, REP_NO},
    [14] = {"tp", K_LEN, REP_NO},
    [15] = {"type_protos", K_LEN, REP_CAP},
    [20] = {"type", K_VARINT, REP_NO},
    [21] = {"ref_attr_name", K_LEN, REP_NO},
    [22] = {"sparse_tensor", K_LEN, REP_NO},
    [23] = {"sparse_tensors", K_LEN, REP_CAP},
};
/* Tensor data fields are not REP_CAP: their element count must equal the
 * product of dims, and each element costs at least one byte of input. */
static const fdesc tensor_f[15] = {
    [1] = {"dims", K_PVARINT, REP_YES},
    [2] = {"data_type", K_VARINT, REP_NO},
    [3] = {"segment", K_LEN, REP_NO},
    [4] = {"float_data", K_PI32, REP_YES},
    [5] = {"int32_data", K_PVARINT, REP_YES},
    [6] = {"string_data", K_LEN, REP_YES},
    [7] = {"int64_data", K_PVARINT, REP_YES},
    [8] = {"name", K_LEN, REP_NO},
    [9] = {"raw_data", K_LEN, REP_NO},
    [10] = {"double_data", K_PI64, REP_YES},
    [11] = {"uint64_data", K_PVARINT, REP_YES},
    [12] = {"doc_string", K_LEN, REP_NO},
    [13] = {"external_data", K_LEN, REP_CAP},
    [14] = {"data_location", K_VARINT, REP_NO},
};
static const fdesc vinfo_f[4] = {
    [1] = {"name", K_LEN, REP_NO},
    [2] = {"type", K_LEN, REP_NO},
    [3] = {"doc_string", K_LEN, REP_NO},
};
static const fdesc type_f[10] = {
    [1] = {"tensor_type", K_LEN, REP_NO},
    [4] = {"sequence_type", K_LEN, REP_NO},
    [5] = {"map_type", K_LEN, REP_NO},
    [6] = {"denotation", K_LEN, REP_NO},
    [7] = {"opaque_type", K_LEN, REP_NO},
    [8] = {"sparse_tensor_type", K_LEN, REP_NO},
    [9] = {"optional_type", K_LEN, REP_NO},
};
static const fdesc ttype_f[3] = {
    [1] = {"elem_type", K_VARINT, REP_NO},
    [2] = {"shape", K_LEN, REP_NO},
};
static const fdesc shape_f[2] = {
    [1] = {"dim", K_LEN, REP_CAP},
};
static const fdesc dim_f[4] = {
    [1] = {"dim_value", K_VARINT, REP_NO},
    [2] = {"dim_param", K_LEN, REP_NO},
    [3] = {"denotation", K_LEN, REP_NO},
};

static const schema model_s = SCHEMA(model_f), opset_s = SCHEMA(opset_f),
                    prop_s = SCHEMA(prop_f), graph_s = SCHEMA(graph_f),
                    node_s = SCHEMA(node_f), attr_s = SCHEMA(attr_f),
                    tensor_s = SCHEMA(tensor_f), vinfo_s = SCHEMA(vinfo_f),
                    type_s = SCHEMA(type_f), ttype_s = SCHEMA(ttype_f),
                    shape_s = SCHEMA(shape_f), dim_s = SCHEMA(dim_f);

_Static_assert(sizeof model_f / sizeof model_f[0] <= SCHEMA_MAX, "schema");
_Static_assert(sizeof attr_f / sizeof attr_f[0] <= SCHEMA_MAX, "schema");

/* Loop helper: `FOR_FIELDS(c, it, f) { ... }` walks every field, leaving the
 * loop with rc set on error.  Each user declares msg_it it; field f; rc. */
#define FOR_FIELDS(c, it, f, more, rc)                                         \
  for (;;)                                                                     \
    if (((rc) = it_next((c), &(it), &(f), &(more))) != DM_OK || !(more))       \
      break;                                                                   \
    else

/* ------------------------------------------------------------------------ */
/* Public helpers. */

size_t dm_onnx_dtype_size(int32_t dtype) {
  switch (dtype) {
  case DM_ONNX_FLOAT: return 4;
  case DM_ONNX_UINT8: return 1;
  case DM_ONNX_INT8: return 1;
  case DM_ONNX_UINT16: return 2;
  case DM_ONNX_INT16: return 2;
  case DM_ONNX_INT32: return 4;
  case DM_ONNX_INT64: return 8;
  case DM_ONNX_BOOL: return 1;
  case DM_ONNX_FLOAT16: return 2;
  case DM_ONNX_DOUBLE: return 8;
  case DM_ONNX_UINT32: return 4;
  case DM_ONNX_UINT64: return 8;
  case DM_ONNX_BFLOAT16: return 2;
  default: return 0; /* STRING, complex, unknown */
  }
}

const char *dm_onnx_dtype_name(int32_t dtype) {
  switch (dtype) {
  case DM_ONNX_FLOAT: return "float32";
  case DM_ONNX_UINT8: return "uint8";
  case DM_ONNX_INT8: return "int8";
  case DM_ONNX_UINT16: return "uint16";
  case DM_ONNX_INT16: return "int16";
  case DM_ONNX_INT32: return "int32";
  case DM_ONNX_INT64: return "int64";
  case DM_ONNX_STRING: return "string";
  case DM_ONNX_BOOL: return "bool";
  case DM_ONNX_FLOAT16: return "float16";
  case DM_ONNX_DOUBLE: return "float64";
  case DM_ONNX_UINT32: return "uint32";
  case DM_ONNX_UINT64: return "uint64";
  case DM_ONNX_BFLOAT16: return "bfloat16";
  default: return "unknown";
  }
}

const char *dm_onnx_meta(const dm_onnx_model *m, const char *key) {
  size_t i;
  if (!m || !key) return NULL;
  for (i = 0; i < m->n_metadata; i++)
    if (strcmp(m->metadata[i].key, key) == 0) return m->metadata[i].value;
  return NULL;
}

const dm_onnx_attr *dm_onnx_attr_find(const dm_onnx_node *n, const char *name) {
  size_t i;
  if (!n || !name) return NULL;
  for (i = 0; i < n->n_attrs; i++)
    if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Files. */

/* Opens a regular file read-only without blocking on FIFOs or devices. */
static int open_regular(int dirfd, const char *path, bool beneath, int *err) {
  int fd = -1;
  const int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
#ifdef SYS_openat2
  if (beneath) {
    struct open_how how;
    long r;
    memset(&how, 0, sizeof how);
    how.flags = (__u64)(unsigned)flags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    r = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (r >= 0) return (int)r;
    if (errno != ENOSYS && errno != EPERM) {
      *err = errno;
      return -1;
    }
  }
#endif
  /* Without openat2 a symlink as last component is refused; ".." and
   * absolute locations were refused before. */
  fd = openat(dirfd, path, flags | (beneath ? O_NOFOLLOW : 0));
  if (fd < 0) *err = errno;
  return fd;
}

/* Maps fd whole (read-only).  *addr NULL for an empty file. */
static dm_err map_fd(int fd, void **addr, size_t *len, int *err) {
  struct stat st;
  void *p;
  *addr = NULL;
  *len = 0;
  if (fstat(fd, &st) != 0) {
    *err = errno;
    return DM_IO;
  }
  if (!S_ISREG(st.st_mode)) {
    *err = EINVAL;
    return DM_IO;
  }
  if (st.st_size <= 0) return DM_OK;
  if ((uint64_t)st.st_size > SIZE_MAX) {
    *err = EFBIG;
    return DM_IO;
  }
  p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) {
    *err = errno;
    return DM_IO;
  }
  *addr = p;
  *len = (size_t)st.st_size;
  return DM_OK;
}

static void unmap_all(xmap *m) {
  for (; m; m = m->next)
    if (m->addr) munmap(m->addr, m->len);
}

/* Refuses absolute locations and any ".." component. */
static bool loc_safe(const char *s) {
  const char *p = s;
  if (!*s || *s == '/') return false;
  for (;;) {
    const char *q = strchr(p, '/');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    if (n == 2 && p[0] == '.' && p[1] == '.') return false;
    if (!q) return true;
    p = q + 1;
  }
}

/* Finds or maps an external data file relative to base_dir.  strerror is
 * thread-safe in glibc >= 2.32. */
static dm_err map_external(pctx *c, const char *loc, const xmap **out) {
  xmap *m;
  int fd, err = 0;
  dm_err rc;
  for (m = *c->maps; m; m = m->next)
    if (strcmp(m->loc, loc) == 0) {
      *out = m;
      return DM_OK;
    }
  if (c->dirfd < 0) {
    c->dirfd = open(c->base_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c->dirfd < 0)
      return perr(c, DM_IO, "cannot open directory '%s': %s", c->base_dir,
                  strerror(errno));
  }
  fd = open_regular(c->dirfd, loc, true, &err);
  if (fd < 0)
    return perr(c, DM_IO, "external data '%s': %s", loc,
                err == EXDEV ? "escapes the model directory" : strerror(err));
  if (!(m = arena_alloc(c->ar, sizeof *m))) {
    close(fd);
    return nomem(c);
  }
  rc = map_fd(fd, &m->addr, &m->len, &err);
  close(fd);
  if (rc != DM_OK)
    return perr(c, rc, "external data '%s': %s", loc,
                err == EINVAL ? "not a regular file" : strerror(err));
  m->loc = loc;
  m->next = *c->maps;
  *c->maps = m;
  *out = m;
  return DM_OK;
}

/* ------------------------------------------------------------------------ */
/* TensorProto. */

typedef struct extinfo {
  const uint8_t *loc;
  size_t loc_len;
  uint64_t off, len;
  bool has_loc, has_len;
} extinfo;

static dm_err parse_ext_entry(pctx *c, const uint8_t *p, size_t n, extinfo *x) {
  msg_it it;
  field f, kf = {0}, vf = {0};
  bool more, has_k = false;
  dm_err rc;
  it_init(&it, p, n, &prop_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num == 1) {
      kf = f;
      has_k = true;
    } else if (f.num == 2) {
      vf = f;
    }
  }
  if (rc != DM_OK) return rc;
  if (!has_k) return DM_OK; /* nothing we know; ignore like other keys */
  if (bytes_eq(kf.data, kf.len, "location")) {
    x->loc = vf.data;
    x->loc_len = vf.len;
    x->has_loc = true;
  } else if (bytes_eq(kf.data, kf.len, "offset")) {
    if (!parse_dec(vf.data, vf.len, &x->off))
      return perr(c, DM_FORMAT,
                  "offset '%.*s' is not a decimal number below 2^64",
                  (int)(vf.len > 32 ? 32 : vf.len), (const char *)vf.data);
  } else if (bytes_eq(kf.data, kf.len, "length")) {
    if (!parse_dec(vf.data, vf.len, &x->len))
      return perr(c, DM_FORMAT,
                  "length '%.*s' is not a decimal number below 2^64",
                  (int)(vf.len > 32 ? 32 : vf.len), (const char *)vf.data);
    x->has_len = true;
  }
  return DM_OK; /* "checksum" and unknown keys are ignored */
}

static dm_err tensor_external(pctx *c, dm_onnx_tensor *t, const extinfo *x,
                              size_t nb) {
  field lf = {0};
  const char *loc;
  const xmap *m = NULL;
  dm_err rc;
  if (!x->has_loc)
    return perr(c, DM_FORMAT, "tensor '%s': external data without location",
                t->name);
  if (!c->base_dir)
    return perr(c, DM_UNSUPPORTED,
                "tensor '%s': external data needs a base directory", t->name);
  lf.data = x->loc;
  lf.len = x->loc_len;
  lf.num = 13;
  lf.pidx = -1;
  lf.d = &tensor_f[13];
  if ((rc = dup_str(c, &lf, true, &loc)) != DM_OK) return rc;
  if (!loc[0])
    return perr(c, DM_FORMAT, "tensor '%s': external location is empty",
                t->name);
  if (!loc_safe(loc))
    return perr(c, DM_FORMAT,
                "tensor '%s': external location '%s' must be relative and "
                "must not contain '..'",
                t->name, loc);
  if ((rc = map_external(c, loc, &m)) != DM_OK) return rc;
  if (x->has_len && x->len != nb)
    return perr(c, DM_FORMAT, "tensor '%s': external length %llu != %zu bytes",
                t->name, (unsigned long long)x->len, nb);
  if (x->off > m->len || nb > m->len - x->off)
    return perr(c, DM_FORMAT, "tensor '%s': offset+size %llu+%zu > file %zu",
                t->name, (unsigned long long)x->off, nb, m->len);
  t->data = nb ? (const uint8_t *)m->addr + x->off : NULL;
  t->nbytes = nb;
  t->zero_copy = nb > 0;
  return DM_OK;
}

/* Which typed field holds values of dtype. */
static uint32_t typed_field(int32_t dt) {
  switch (dt) {
  case DM_ONNX_FLOAT: return 4;
  case DM_ONNX_INT32:
  case DM_ONNX_INT16:
  case DM_ONNX_INT8:
  case DM_ONNX_UINT16:
  case DM_ONNX_UINT8:
  case DM_ONNX_BOOL:
  case DM_ONNX_FLOAT16:
  case DM_ONNX_BFLOAT16: return 5;
  case DM_ONNX_INT64: return 7;
  case DM_ONNX_DOUBLE: return 10;
  case DM_ONNX_UINT32:
  case DM_ONNX_UINT64: return 11;
  default: return 0;
  }
}

static bool int32_fits(int32_t dt, int32_t x) {
  switch (dt) {
  case DM_ONNX_INT8: return x >= -128 && x <= 127;
  case DM_ONNX_UINT8: return x >= 0 && x <= 255;
  case DM_ONNX_INT16: return x >= -32768 && x <= 32767;
  case DM_ONNX_UINT16:
  case DM_ONNX_FLOAT16:
  case DM_ONNX_BFLOAT16: return x >= 0 && x <= 65535;
  case DM_ONNX_BOOL: return x == 0 || x == 1;
  default: return true;
  }
}

/* Pass 2 of a typed tensor: decodes field `want` into dst (numel elements
 * of es bytes).  Pass 1 already counted exactly numel elements. */
static dm_err fill_typed(pctx *c, const uint8_t *p, size_t n, int32_t dt,
                         uint32_t want, size_t es, uint8_t *dst, size_t numel) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  size_t k = 0;
  it_init(&it, p, n, &tensor_s);
  FOR_FIELDS(c, it, f, more, rc) {
    vlist l;
    if (f.num != want) continue;
    if (want == 4 || want == 10) { /* fixed-width: copy as is */
      if (f.wt == WT_LEN) {
        size_t m = f.len / es;
        if (m > numel - k) goto changed;
        if (f.len) memcpy(dst + k * es, f.data, f.len);
        k += m;
      } else {
        uint32_t u = (uint32_t)f.v;
        if (k >= numel) goto changed;
        if (es == 4)
          memcpy(dst + k * 4, &u, 4);
        else
          memcpy(dst + k * 8, &f.v, 8);
        k++;
      }
      continue;
    }
    vl_init(&l, &f);
    for (;;) {
      uint64_t v;
      bool got;
      if ((rc = vl_next(c, &l, &v, &got)) != DM_OK) return rc;
      if (!got) break;
      if (k >= numel) goto changed;
      if (want == 5) {
        int32_t x = (int32_t)(uint32_t)v; /* protobuf int32 semantics */
        if (!int32_fits(dt, x))
          return ferr(c, &f, DM_FORMAT, "value %d out of range for %s", (int)x,
                      dm_onnx_dtype_name(dt));
        if (es == 1) {
          dst[k] = (uint8_t)x;
        } else if (es == 2) {
          uint16_t h = (uint16_t)x;
          memcpy(dst + k * 2, &h, 2);
        } else {
          memcpy(dst + k * 4, &x, 4);
        }
      } else if (want == 11 && es == 4) {
        uint32_t u;
        if (v > UINT32_MAX)
          return ferr(c, &f, DM_FORMAT, "value %llu out of range for uint32",
                      (unsigned long long)v);
        u = (uint32_t)v;
        memcpy(dst + k * 4, &u, 4);
      } else { /* int64_data, uint64_data as uint64 */
        memcpy(dst + k * 8, &v, 8);
      }
      k++;
    }
  }
  if (rc != DM_OK) return rc;
  if (k == numel) return DM_OK;
changed:
  return perr(c, DM_FORMAT, "typed data count changed between passes");
}

/* Parses a TensorProto into t (arena-owned strings and typed data). */
static dm_err parse_tensor(pctx *c, const uint8_t *p, size_t n,
                           dm_onnx_tensor *t) {
  msg_it it;
  field f;
  bool more, has_raw = false;
  dm_err rc;
  const uint8_t *raw = NULL;
  size_t raw_len = 0, cnt[12] = {0}, es, nb, typed = 0, i;
  int64_t numel = 1;
  uint64_t location = 0;
  uint32_t want;
  extinfo x;

  memset(t, 0, sizeof *t);
  memset(&x, 0, sizeof x);
  t->name = EMPTY;
  it_init(&it, p, n, &tensor_s);
  FOR_FIELDS(c, it, f, more, rc) {
    vlist l;
    size_t k;
    switch (f.num) {
    case 1: /* dims */
      vl_init(&l, &f);
      for (;;) {
        uint64_t v;
        bool got;
        if ((rc = vl_next(c, &l, &v, &got)) != DM_OK) return rc;
        if (!got) break;
        if (t->ndim >= DM_ONNX_MAX_DIMS)
          return ferr(c, &f, DM_RANGE, "more than %d dims", DM_ONNX_MAX_DIMS);
        if ((int64_t)v < 0)
          return ferr(c, &f, DM_FORMAT, "negative dim %lld",
                      (long long)(int64_t)v);
        t->dims[t->ndim++] = (int64_t)v;
      }
      break;
    case 2: t->dtype = (int32_t)(uint32_t)f.v; break;
    case 3:
      return ferr(c, &f, DM_UNSUPPORTED, "segmented tensors are not supported");
    case 4:
    case 5:
    case 7:
    case 10:
    case 11:
      if ((rc = elem_count(c, &f, &k)) != DM_OK) return rc;
      cnt[f.num] += k;
      break;
    case 6: cnt[6]++; break;
    case 8:
      if ((rc = dup_str(c, &f, true, &t->name)) != DM_OK) return rc;
      break;
    case 9:
      raw = f.data;
      raw_len = f.len;
      has_raw = true;
      break;
    case 13:
      if ((rc = enter(c, &f)) != DM_OK) return rc;
      rc = parse_ext_entry(c, f.data, f.len, &x);
      leave(c);
      if (rc != DM_OK) return rc;
      break;
    case 14: location = f.v; break;
    default: break; /* doc_string, unknown */
    }
  }
  if (rc != DM_OK) return rc;

  if (t->dtype == DM_ONNX_STRING)
    return perr(c, DM_UNSUPPORTED,
                "tensor '%s': STRING tensors are not "
                "supported",
                t->name);
  if ((es = dm_onnx_dtype_size(t->dtype)) == 0) {
    if (t->dtype == DM_ONNX_UNDEFINED)
      return perr(c, DM_FORMAT, "tensor '%s': data_type missing", t->name);
    return perr(c, DM_UNSUPPORTED, "tensor '%s': data_type %d not supported",
                t->name, (int)t->dtype);
  }
  for (i = 0; i < (size_t)t->ndim; i++)
    if (__builtin_mul_overflow(numel, t->dims[i], &numel))
      return perr(c, DM_RANGE, "tensor '%s': product of dims overflows",
                  t->name);
  t->numel = numel;
  if ((uint64_t)numel > SIZE_MAX ||
      __builtin_mul_overflow((size_t)numel, es, &nb))
    return perr(c, DM_RANGE, "tensor '%s': byte size overflows", t->name);

  for (i = 0; i < 12; i++)
    if (cnt[i]) typed++;
  if (cnt[6])
    return perr(c, DM_FORMAT, "tensor '%s': string_data in a %s tensor",
                t->name, dm_onnx_dtype_name(t->dtype));
  if (location == 1) { /* EXTERNAL */
    if (has_raw || typed)
      return perr(c, DM_FORMAT,
                  "tensor '%s': external tensor also has "
                  "inline data",
                  t->name);
    return tensor_external(c, t, &x, nb);
  }
  if (location != 0)
    return perr(c, DM_UNSUPPORTED, "tensor '%s': data_location %llu", t->name,
                (unsigned long long)location);
  if (has_raw) {
    if (typed)
      return perr(c, DM_FORMAT, "tensor '%s': both raw_data and typed data",
                  t->name);
    if (raw_len != nb)
      return perr(c, DM_FORMAT,
                  "tensor '%s': raw_data has %zu bytes, expected %zu "
                  "(%lld x %s)",
                  t->name, raw_len, nb, (long long)numel,
                  dm_onnx_dtype_name(t->dtype));
    t->data = nb ? raw : NULL;
    t->nbytes = nb;
    t->zero_copy = nb > 0;
    return DM_OK;
  }
  if (!typed) {
    if (numel != 0)
      return perr(c, DM_FORMAT, "tensor '%s': no data for %lld elements",
                  t->name, (long long)numel);
    return DM_OK;
  }
  want = typed_field(t->dtype);
  for (i = 0; i < 12; i++)
    if (cnt[i] && i != want)
      return perr(c, DM_FORMAT, "tensor '%s': %s given for a %s tensor",
                  t->name, tensor_f[i].name, dm_onnx_dtype_name(t->dtype));
  if (cnt[want] != (size_t)numel)
    return perr(c, DM_FORMAT, "tensor '%s': %s has %zu values, expected %lld",
                t->name, tensor_f[want].name, cnt[want], (long long)numel);
  if (numel == 0) return DM_OK;
  {
    uint8_t *dst = arena_alloc(c->ar, nb);
    if (!dst) return nomem(c);
    if ((rc = fill_typed(c, p, n, t->dtype, want, es, dst, (size_t)numel)) !=
        DM_OK)
      return rc;
    t->data = dst;
    t->nbytes = nb;
  }
  return DM_OK;
}

/* ------------------------------------------------------------------------ */
/* Subgraphs (GRAPH/GRAPHS attributes): not decoded, but walked so that their
 * framing is checked and nesting is capped by DM_ONNX_MAX_DEPTH. */

static dm_err check_graph(pctx *c, const uint8_t *p, size_t n);

static dm_err check_attr(pctx *c, const uint8_t *p, size_t n) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  it_init(&it, p, n, &attr_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num != 6 && f.num != 11) continue;
    if ((rc = enter(c, &f)) != DM_OK) return rc;
    rc = check_graph(c, f.data, f.len);
    leave(c);
    if (rc != DM_OK) return rc;
  }
  return rc;
}

static dm_err check_node(pctx *c, const uint8_t *p, size_t n) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  it_init(&it, p, n, &node_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num != 5) continue;
    if ((rc = enter(c, &f)) != DM_OK) return rc;
    rc = check_attr(c, f.data, f.len);
    leave(c);
    if (rc != DM_OK) return rc;
  }
  return rc;
}

static dm_err check_graph(pctx *c, const uint8_t *p, size_t n) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  it_init(&it, p, n, &graph_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num != 1) continue;
    if ((rc = enter(c, &f)) != DM_OK) return rc;
    rc = check_node(c, f.data, f.len);
    leave(c);
    if (rc != DM_OK) return rc;
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* AttributeProto. */

static dm_err parse_attr(pctx *c, const uint8_t *p, size_t n, dm_onnx_attr *a) {
  msg_it it;
  field f;
  bool more, has_type = false, has_f = false, has_i = false, has_s = false;
  bool has_g = false;
  dm_err rc;
  size_t n_tensors = 0, n_graphs = 0, k;
  dm_onnx_tensor *t = NULL;
  float *floats = NULL;
  int64_t *ints = NULL;
  const char **strings = NULL;

  memset(a, 0, sizeof *a);
  a->name = EMPTY;
  it_init(&it, p, n, &attr_s);
  FOR_FIELDS(c, it, f, more, rc) {
    switch (f.num) {
    case 1:
      if ((rc = dup_str(c, &f, true, &a->name)) != DM_OK) return rc;
      break;
    case 2: {
      uint32_t u = (uint32_t)f.v;
      memcpy(&a->f, &u, 4);
      has_f = true;
      break;
    }
    case 3:
      a->i = (int64_t)f.v;
      has_i = true;
      break;
    case 4:
      if ((rc = dup_str(c, &f, false, &a->s)) != DM_OK) return rc;
      a->s_len = f.len;
      has_s = true;
      break;
    case 5:
      if (t) return ferr(c, &f, DM_FORMAT, "duplicate tensor");
      if (!(t = arena_alloc(c->ar, sizeof *t))) return nomem(c);
      if ((rc = enter(c, &f)) != DM_OK) return rc;
      rc = parse_tensor(c, f.data, f.len, t);
      leave(c);
      if (rc != DM_OK) return rc;
      break;
    case 6:
    case 11:
      if ((rc = enter(c, &f)) != DM_OK) return rc;
      rc = check_graph(c, f.data, f.len);
      leave(c);
      if (rc != DM_OK) return rc;
      if (f.num == 6)
        has_g = true;
      else
        n_graphs++;
      break;
    case 7:
      if ((rc = elem_count(c, &f, &k)) != DM_OK) return rc;
      if ((a->n_floats += k) > DM_ONNX_MAX_COUNT)
        return ferr(c, &f, DM_RANGE, "more than %d values", DM_ONNX_MAX_COUNT);
      break;
    case 8:
      if ((rc = elem_count(c, &f, &k)) != DM_OK) return rc;
      if ((a->n_ints += k) > DM_ONNX_MAX_COUNT)
        return ferr(c, &f, DM_RANGE, "more than %d values", DM_ONNX_MAX_COUNT);
      break;
    case 9: a->n_strings++; break;
    case 10: n_tensors++; break;
    case 20:
      a->type = (int32_t)(uint32_t)f.v;
      has_type = true;
      break;
    default: break; /* doc_string, ref_attr_name, tp, sparse, unknown */
    }
  }
  if (rc != DM_OK) return rc;
  a->t = t;

  if (!a->name[0]) return perr(c, DM_FORMAT, "attribute without a name");
  if (!has_type) { /* IR v1 files have no type: infer from the field set */
    if (a->n_floats)
      a->type = DM_ONNX_ATTR_FLOATS;
    else if (a->n_ints)
      a->type = DM_ONNX_ATTR_INTS;
    else if (a->n_strings)
      a->type = DM_ONNX_ATTR_STRINGS;
    else if (n_tensors)
      a->type = DM_ONNX_ATTR_TENSORS;
    else if (n_graphs)
      a->type = DM_ONNX_ATTR_GRAPHS;
    else if (t)
      a->type = DM_ONNX_ATTR_TENSOR;
    else if (has_g)
      a->type = DM_ONNX_ATTR_GRAPH;
    else if (has_s)
      a->type = DM_ONNX_ATTR_STRING;
    else if (has_i)
      a->type = DM_ONNX_ATTR_INT;
    else if (has_f)
      a->type = DM_ONNX_ATTR_FLOAT;
  }
  /* 11..14: SPARSE_TENSOR, SPARSE_TENSORS, TYPE_PROTO, TYPE_PROTOS (kept by
   * type only, like GRAPH/TENSORS). */
  if (a->type <= DM_ONNX_ATTR_UNDEFINED || a->type > 14)
    return perr(c,
                a->type == DM_ONNX_ATTR_UNDEFINED ? DM_FORMAT : DM_UNSUPPORTED,
                "attribute '%s': %s", a->name,
                a->type == DM_ONNX_ATTR_UNDEFINED ? "no value"
                                                  : "unknown attribute type");
  if (a->type == DM_ONNX_ATTR_TENSOR && !t)
    return perr(c, DM_FORMAT, "attribute '%s': TENSOR without t", a->name);
  if (a->type == DM_ONNX_ATTR_STRING && !has_s) a->s = EMPTY;

  if (a->n_floats &&
      !(floats = arena_alloc(c->ar, a->n_floats * sizeof *floats)))
    return nomem(c);
  if (a->n_ints && !(ints = arena_alloc(c->ar, a->n_ints * sizeof *ints)))
    return nomem(c);
  if (a->n_strings &&
      !(strings = arena_alloc(c->ar, a->n_strings * sizeof *strings)))
    return nomem(c);
  a->floats = floats;
  a->ints = ints;
  a->strings = strings;
  if (!floats && !ints && !strings) return DM_OK;

  { /* pass 2: repeated values */
    size_t nf = 0, ni = 0, ns = 0;
    it_init(&it, p, n, &attr_s);
    FOR_FIELDS(c, it, f, more, rc) {
      if (f.num == 7) {
        if (f.wt == WT_LEN) {
          if (f.len / 4 > a->n_floats - nf) break;
          if (f.len) memcpy(floats + nf, f.data, f.len);
          nf += f.len / 4;
        } else {
          uint32_t u = (uint32_t)f.v;
          if (nf >= a->n_floats) break;
          memcpy(floats + nf++, &u, 4);
        }
      } else if (f.num == 8) {
        vlist l;
        vl_init(&l, &f);
        for (;;) {
          uint64_t v;
          bool got;
          if ((rc = vl_next(c, &l, &v, &got)) != DM_OK) return rc;
          if (!got) break;
          if (ni >= a->n_ints) return perr(c, DM_FORMAT, "ints count changed");
          ints[ni++] = (int64_t)v;
        }
      } else if (f.num == 9) {
        if (f.len && memchr(f.data, 0, f.len))
          return ferr(c, &f, DM_UNSUPPORTED, "string with a NUL byte");
        if (ns >= a->n_strings) break;
        if ((rc = dup_str(c, &f, false, &strings[ns++])) != DM_OK) return rc;
      }
    }
    if (rc != DM_OK) return rc;
    if (nf != a->n_floats || ni != a->n_ints || ns != a->n_strings)
      return perr(c, DM_FORMAT, "attribute '%s': value count changed", a->name);
  }
  return DM_OK;
}

/* ------------------------------------------------------------------------ */
/* NodeProto. */

static dm_err parse_node(pctx *c, const uint8_t *p, size_t n,
                         dm_onnx_node *nd) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  const char **ins = NULL, **outs = NULL;
  dm_onnx_attr *attrs = NULL;
  size_t ni = 0, no = 0, na = 0;

  memset(nd, 0, sizeof *nd);
  nd->name = nd->op_type = nd->domain = EMPTY;
  it_init(&it, p, n, &node_s);
  FOR_FIELDS(c, it, f, more, rc) {
    switch (f.num) {
    case 3: rc = dup_str(c, &f, true, &nd->name); break;
    case 4: rc = dup_str(c, &f, true, &nd->op_type); break;
    case 7: rc = dup_str(c, &f, true, &nd->domain); break;
    default: break;
    }
    if (rc != DM_OK) return rc;
  }
  if (rc != DM_OK) return rc;
  if (!nd->op_type[0]) return perr(c, DM_FORMAT, "node without op_type");
  nd->n_inputs = it.seen[1];
  nd->n_outputs = it.seen[2];
  nd->n_attrs = it.seen[5];
  if (nd->n_inputs && !(ins = arena_alloc(c->ar, nd->n_inputs * sizeof *ins)))
    return nomem(c);
  if (nd->n_outputs &&
      !(outs = arena_alloc(c->ar, nd->n_outputs * sizeof *outs)))
    return nomem(c);
  if (nd->n_attrs && !(attrs = arena_alloc(c->ar, nd->n_attrs * sizeof *attrs)))
    return nomem(c);
  nd->inputs = ins;
  nd->outputs = outs;
  nd->attrs = attrs;

  it_init(&it, p, n, &node_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num == 1 && ni < nd->n_inputs) {
      rc = dup_str(c, &f, true, &ins[ni++]);
    } else if (f.num == 2 && no < nd->n_outputs) {
      rc = dup_str(c, &f, true, &outs[no++]);
    } else if (f.num == 5 && na < nd->n_attrs) {
      if ((rc = enter(c, &f)) != DM_OK) return rc;
      rc = parse_attr(c, f.data, f.len, &attrs[na++]);
      leave(c);
    }
    if (rc != DM_OK) return rc;
  }
  if (rc != DM_OK) return rc;
  if (ni != nd->n_inputs || no != nd->n_outputs || na != nd->n_attrs)
    return perr(c, DM_FORMAT, "node field count changed");
  return DM_OK;
}

/* ------------------------------------------------------------------------ */
/* ValueInfoProto -> TypeProto -> Tensor -> TensorShapeProto -> Dimension. */

static dm_err parse_dim(pctx *c, const uint8_t *p, size_t n, int64_t *d) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  *d = -1;
  it_init(&it, p, n, &dim_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num == 1)
      *d = (int64_t)f.v >= 0 ? (int64_t)f.v : -1;
    else if (f.num == 2)
      *d = -1; /* oneof: last one wins */
  }
  return rc;
}

static dm_err parse_shape(pctx *c, const uint8_t *p, size_t n,
                          dm_onnx_value_info *vi) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  vi->ndim = 0;
  it_init(&it, p, n, &shape_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num != 1) continue;
    if (vi->ndim >= DM_ONNX_MAX_DIMS)
      return ferr(c, &f, DM_RANGE, "more than %d dims", DM_ONNX_MAX_DIMS);
    if ((rc = enter(c, &f)) != DM_OK) return rc;
    rc = parse_dim(c, f.data, f.len, &vi->dims[vi->ndim++]);
    leave(c);
    if (rc != DM_OK) return rc;
  }
  return rc;
}

static dm_err parse_ttype(pctx *c, const uint8_t *p, size_t n,
                          dm_onnx_value_info *vi) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  it_init(&it, p, n, &ttype_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num == 1) {
      vi->dtype = (int32_t)(uint32_t)f.v;
    } else if (f.num == 2) {
      if ((rc = enter(c, &f)) != DM_OK) return rc;
      rc = parse_shape(c, f.data, f.len, vi);
      leave(c);
      if (rc != DM_OK) return rc;
    }
  }
  return rc;
}

/* Only tensor types are described; sequence/map/optional/sparse/opaque keep
 * dtype 0 and ndim -1 ("unknown"). */
static dm_err parse_type(pctx *c, const uint8_t *p, size_t n,
                         dm_onnx_value_info *vi) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  it_init(&it, p, n, &type_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num != 1) continue;
    if ((rc = enter(c, &f)) != DM_OK) return rc;
    rc = parse_ttype(c, f.data, f.len, vi);
    leave(c);
    if (rc != DM_OK) return rc;
  }
  return rc;
}

static dm_err parse_vinfo(pctx *c, const uint8_t *p, size_t n,
                          dm_onnx_value_info *vi) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  int i;
  memset(vi, 0, sizeof *vi);
  vi->name = EMPTY;
  vi->ndim = -1;
  for (i = 0; i < DM_ONNX_MAX_DIMS; i++)
    vi->dims[i] = -1;
  it_init(&it, p, n, &vinfo_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num == 1) {
      if ((rc = dup_str(c, &f, true, &vi->name)) != DM_OK) return rc;
    } else if (f.num == 2) {
      if (it.seen[2] > 1) return ferr(c, &f, DM_FORMAT, "duplicate type");
      if ((rc = enter(c, &f)) != DM_OK) return rc;
      rc = parse_type(c, f.data, f.len, vi);
      leave(c);
      if (rc != DM_OK) return rc;
    }
  }
  if (rc != DM_OK) return rc;
  if (!vi->name[0]) return perr(c, DM_FORMAT, "value without a name");
  return DM_OK;
}

/* ------------------------------------------------------------------------ */
/* GraphProto. */

static dm_err parse_graph(pctx *c, const uint8_t *p, size_t n,
                          dm_onnx_graph *g) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  dm_onnx_node *nodes = NULL;
  dm_onnx_tensor *inits = NULL;
  dm_onnx_value_info *ins = NULL, *outs = NULL, *vis = NULL;
  size_t nn = 0, nt = 0, ni = 0, no = 0, nv = 0;

  memset(g, 0, sizeof *g);
  g->name = EMPTY;
  it_init(&it, p, n, &graph_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num == 2) {
      if ((rc = dup_str(c, &f, true, &g->name)) != DM_OK) return rc;
    } else if (f.num == 15) {
      return ferr(c, &f, DM_UNSUPPORTED,
                  "sparse initializers are not supported");
    }
  }
  if (rc != DM_OK) return rc;
  g->n_nodes = it.seen[1];
  g->n_initializers = it.seen[5];
  g->n_inputs = it.seen[11];
  g->n_outputs = it.seen[12];
  g->n_value_info = it.seen[13];
#define ALLOC_ARR(ptr, count)                                                  \
  if ((count) && !((ptr) = arena_alloc(c->ar, (count) * sizeof *(ptr))))       \
    return nomem(c);
  ALLOC_ARR(nodes, g->n_nodes)
  ALLOC_ARR(inits, g->n_initializers)
  ALLOC_ARR(ins, g->n_inputs)
  ALLOC_ARR(outs, g->n_outputs)
  ALLOC_ARR(vis, g->n_value_info)
#undef ALLOC_ARR
  g->nodes = nodes;
  g->initializers = inits;
  g->inputs = ins;
  g->outputs = outs;
  g->value_info = vis;

  it_init(&it, p, n, &graph_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num != 1 && f.num != 5 && (f.num < 11 || f.num > 13)) continue;
    if ((rc = enter(c, &f)) != DM_OK) return rc;
    if (f.num == 1 && nn < g->n_nodes) {
      rc = parse_node(c, f.data, f.len, &nodes[nn++]);
    } else if (f.num == 5 && nt < g->n_initializers) {
      rc = parse_tensor(c, f.data, f.len, &inits[nt]);
      if (rc == DM_OK && !inits[nt].name[0])
        rc = perr(c, DM_FORMAT, "initializer without a name");
      nt++;
    } else if (f.num == 11 && ni < g->n_inputs) {
      rc = parse_vinfo(c, f.data, f.len, &ins[ni++]);
    } else if (f.num == 12 && no < g->n_outputs) {
      rc = parse_vinfo(c, f.data, f.len, &outs[no++]);
    } else if (f.num == 13 && nv < g->n_value_info) {
      rc = parse_vinfo(c, f.data, f.len, &vis[nv++]);
    }
    leave(c);
    if (rc != DM_OK) return rc;
  }
  if (rc != DM_OK) return rc;
  if (nn != g->n_nodes || nt != g->n_initializers || ni != g->n_inputs ||
      no != g->n_outputs || nv != g->n_value_info)
    return perr(c, DM_FORMAT, "graph field count changed");
  return DM_OK;
}

/* ------------------------------------------------------------------------ */
/* ModelProto. */

static dm_err parse_kv(pctx *c, const uint8_t *p, size_t n, const schema *s,
                       const char **k, const char **v, int64_t *ver) {
  msg_it it;
  field f;
  bool more;
  dm_err rc;
  it_init(&it, p, n, s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num == 1) {
      if ((rc = dup_str(c, &f, true, k)) != DM_OK) return rc;
    } else if (f.num == 2) {
      if (ver)
        *ver = (int64_t)f.v;
      else if ((rc = dup_str(c, &f, false, v)) != DM_OK)
        return rc;
    }
  }
  return rc;
}

static dm_err parse_model(pctx *c, const uint8_t *p, size_t n,
                          dm_onnx_model *m) {
  msg_it it;
  field f, gf = {0};
  bool more, has_graph = false;
  dm_err rc;
  dm_onnx_opset *ops = NULL;
  dm_onnx_prop *props = NULL;
  size_t no = 0, np = 0, i;

  m->producer_name = m->producer_version = m->domain = m->doc_string = EMPTY;
  m->file_bytes = n;
  it_init(&it, p, n, &model_s);
  FOR_FIELDS(c, it, f, more, rc) {
    switch (f.num) {
    case 1: m->ir_version = (int64_t)f.v; break;
    case 2: rc = dup_str(c, &f, false, &m->producer_name); break;
    case 3: rc = dup_str(c, &f, false, &m->producer_version); break;
    case 4: rc = dup_str(c, &f, false, &m->domain); break;
    case 5: m->model_version = (int64_t)f.v; break;
    case 6: rc = dup_str(c, &f, false, &m->doc_string); break;
    case 7:
      if (has_graph) return ferr(c, &f, DM_FORMAT, "duplicate graph");
      gf = f;
      has_graph = true;
      break;
    default: break; /* training_info, functions, unknown */
    }
    if (rc != DM_OK) return rc;
  }
  if (rc != DM_OK) return rc;
  if (m->ir_version <= 0)
    return perr(c, DM_FORMAT, "ir_version missing or invalid");
  if (!has_graph) return perr(c, DM_FORMAT, "model has no graph");
  m->n_opsets = it.seen[8];
  m->n_metadata = it.seen[14];
  if (m->ir_version >= 3 && m->n_opsets == 0)
    return perr(c, DM_FORMAT, "ir_version %lld requires opset_import",
                (long long)m->ir_version);
  if (m->n_opsets && !(ops = arena_alloc(c->ar, m->n_opsets * sizeof *ops)))
    return nomem(c);
  if (m->n_metadata &&
      !(props = arena_alloc(c->ar, m->n_metadata * sizeof *props)))
    return nomem(c);
  m->opsets = ops;
  m->metadata = props;

  it_init(&it, p, n, &model_s);
  FOR_FIELDS(c, it, f, more, rc) {
    if (f.num == 8 && no < m->n_opsets) {
      ops[no].domain = EMPTY;
      ops[no].version = 0;
      if ((rc = enter(c, &f)) != DM_OK) return rc;
      rc = parse_kv(c, f.data, f.len, &opset_s, &ops[no].domain, NULL,
                    &ops[no].version);
      leave(c);
      no++;
    } else if (f.num == 14 && np < m->n_metadata) {
      props[np].key = props[np].value = EMPTY;
      if ((rc = enter(c, &f)) != DM_OK) return rc;
      rc = parse_kv(c, f.data, f.len, &prop_s, &props[np].key, &props[np].value,
                    NULL);
      leave(c);
      np++;
    }
    if (rc != DM_OK) return rc;
  }
  if (rc != DM_OK) return rc;
  if (no != m->n_opsets || np != m->n_metadata)
    return perr(c, DM_FORMAT, "model field count changed");
  for (i = 0; i < m->n_opsets; i++)
    if (!strcmp(ops[i].domain, "") || !strcmp(ops[i].domain, "ai.onnx"))
      m->opset = ops[i].version;

  if ((rc = enter(c, &gf)) != DM_OK) return rc;
  rc = parse_graph(c, gf.data, gf.len, &m->graph);
  leave(c);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Model lifetime.  The public struct is the first member, so the pointer
 * handed out is also the pointer to the whole object. */

typedef struct model_impl {
  dm_onnx_model pub;
  arena ar;
  xmap *maps; /* external data files */
  void *map;  /* main file mapping (dm_onnx_open), NULL otherwise */
  size_t map_len;
} model_impl;

void dm_onnx_free(dm_onnx_model *m) {
  model_impl *mi = (model_impl *)m;
  if (!mi) return;
  unmap_all(mi->maps);
  if (mi->map) munmap(mi->map, mi->map_len);
  arena_free(&mi->ar);
  free(mi);
}

static void ctx_init(pctx *c, arena *ar, xmap **maps, const char *base_dir,
                     const char *root, dm_errbuf *eb) {
  memset(c, 0, sizeof *c);
  c->ar = ar;
  c->maps = maps;
  c->base_dir = base_dir;
  c->dirfd = -1;
  c->root = root;
  c->eb = eb;
}

static void ctx_deinit(pctx *c) {
  if (c->dirfd >= 0) close(c->dirfd);
  c->dirfd = -1;
}

static dm_err model_parse(model_impl *mi, const uint8_t *buf, size_t len,
                          const char *base_dir, dm_errbuf *eb) {
  pctx c;
  dm_err rc;
  ctx_init(&c, &mi->ar, &mi->maps, base_dir, "model", eb);
  rc = parse_model(&c, buf, len, &mi->pub);
  ctx_deinit(&c);
  return rc;
}

dm_err dm_onnx_parse(const void *buf, size_t len, const char *base_dir,
                     dm_onnx_model **out, dm_errbuf *eb) {
  model_impl *mi;
  dm_err rc;
  if (!out || (!buf && len))
    return dm_errf(eb, DM_ARG, "dm_onnx_parse: NULL argument");
  if (!(mi = calloc(1, sizeof *mi)))
    return dm_errf(eb, DM_NOMEM, "model: out of memory");
  if ((rc = model_parse(mi, buf, len, base_dir, eb)) != DM_OK) {
    dm_onnx_free(&mi->pub);
    return rc;
  }
  *out = &mi->pub;
  return DM_OK;
}

/* Directory part of path ("." when none), as an arena string. */
static char *dir_of(arena *ar, const char *path) {
  const char *slash = strrchr(path, '/');
  size_t n = slash ? (size_t)(slash - path) : 1;
  char *d;
  if (slash && n == 0) n = 1; /* "/model.onnx" -> "/" */
  if (!(d = arena_alloc(ar, n + 1))) return NULL;
  memcpy(d, slash ? path : ".", n);
  d[n] = '\0';
  return d;
}

static dm_err map_path(const char *path, void **addr, size_t *len,
                       dm_errbuf *eb) {
  int err = 0, fd = open_regular(AT_FDCWD, path, false, &err);
  dm_err rc;
  if (fd < 0) return dm_errf(eb, DM_IO, "%s: %s", path, strerror(err));
  rc = map_fd(fd, addr, len, &err);
  close(fd);
  if (rc != DM_OK)
    return dm_errf(eb, rc, "%s: %s", path,
                   err == EINVAL ? "not a regular file" : strerror(err));
  return DM_OK;
}

dm_err dm_onnx_open(const char *path, dm_onnx_model **out, dm_errbuf *eb) {
  model_impl *mi;
  const char *dir;
  dm_err rc;
  if (!path || !out) return dm_errf(eb, DM_ARG, "dm_onnx_open: NULL argument");
  if (!(mi = calloc(1, sizeof *mi)))
    return dm_errf(eb, DM_NOMEM, "model: out of memory");
  rc = DM_NOMEM;
  if (!(dir = dir_of(&mi->ar, path))) {
    dm_errf(eb, rc, "model: out of memory");
    goto fail;
  }
  if ((rc = map_path(path, &mi->map, &mi->map_len, eb)) != DM_OK) goto fail;
  if ((rc = model_parse(mi, mi->map, mi->map_len, dir, eb)) != DM_OK) goto fail;
  *out = &mi->pub;
  return DM_OK;
fail:
  dm_onnx_free(&mi->pub);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Standalone tensors: one malloc holding the struct, the name and a copy of
 * the data (16-byte aligned). */

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

static dm_err tensor_standalone(const void *buf, size_t len,
                                const char *base_dir, dm_onnx_tensor **out,
                                dm_errbuf *eb) {
  arena ar = {0};
  xmap *maps = NULL;
  pctx c;
  dm_onnx_tensor t, *res;
  size_t name_len, off_name, off_data, total;
  dm_err rc;

  ctx_init(&c, &ar, &maps, base_dir, "tensor", eb);
  if ((rc = parse_tensor(&c, buf, len, &t)) != DM_OK) goto out;
  name_len = strlen(t.name);
  off_name = round16(sizeof t);
  off_data = round16(off_name + name_len + 1);
  if (__builtin_add_overflow(off_data, t.nbytes, &total)) {
    rc = perr(&c, DM_RANGE, "tensor too large");
    goto out;
  }
  if (!(res = malloc(total))) {
    rc = nomem(&c);
    goto out;
  }
  *res = t;
  memcpy((char *)res + off_name, t.name, name_len + 1);
  res->name = (char *)res + off_name;
  if (t.nbytes) {
    memcpy((char *)res + off_data, t.data, t.nbytes);
    res->data = (char *)res + off_data;
  } else {
    res->data = NULL;
  }
  res->zero_copy = false;
  *out = res;
out:
  ctx_deinit(&c);
  unmap_all(maps);
  arena_free(&ar);
  return rc;
}

dm_err dm_onnx_parse_tensor(const void *buf, size_t len, dm_onnx_tensor **out,
                            dm_errbuf *eb) {
  if (!out || (!buf && len))
    return dm_errf(eb, DM_ARG, "dm_onnx_parse_tensor: NULL argument");
  return tensor_standalone(buf, len, NULL, out, eb);
}

dm_err dm_onnx_read_tensor_file(const char *path, dm_onnx_tensor **out,
                                dm_errbuf *eb) {
  arena ar = {0};
  void *addr = NULL;
  size_t len = 0;
  const char *dir;
  dm_err rc;
  if (!path || !out)
    return dm_errf(eb, DM_ARG, "dm_onnx_read_tensor_file: NULL argument");
  if (!(dir = dir_of(&ar, path)))
    return dm_errf(eb, DM_NOMEM, "tensor: out of memory");
  if ((rc = map_path(path, &addr, &len, eb)) == DM_OK) {
    rc = tensor_standalone(addr, len, dir, out, eb);
    if (addr) munmap(addr, len);
  }
  arena_free(&ar);
  return rc;
}

void dm_onnx_tensor_free(dm_onnx_tensor *t) { free(t); }
