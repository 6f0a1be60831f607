/* dermal onnx: bounds-checked reader of ONNX model files (protobuf).
 *
 * The file is memory-mapped read-only.  Initializers stored as raw_data are
 * not copied: dm_onnx_tensor.data points into the mapping (zero copy) and is
 * valid until dm_onnx_free.  Typed fields (float_data, int64_data, ...) are
 * decoded into buffers owned by the model.  External data ("location" in
 * external_data) is mapped from files next to the model; a location that
 * escapes the model's folder is refused.
 *
 * Every varint, length, nesting depth and repeated count is checked; a
 * truncated, corrupt or hostile file yields DM_FORMAT (or DM_RANGE when a cap
 * in DM_ONNX_MAX_* is exceeded) with a message naming the field.
 *
 * Thread-safety: a parsed dm_onnx_model is immutable; any number of threads
 * may read it at once.  dm_onnx_free must not race with readers. */
#ifndef DERMAL_ONNX_H
#define DERMAL_ONNX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dermal/err.h"

#define DM_ONNX_MAX_DIMS 8        /* tensor rank cap */
#define DM_ONNX_MAX_DEPTH 32      /* message nesting cap (subgraphs) */
#define DM_ONNX_MAX_COUNT 1000000 /* any repeated field */

/* ONNX TensorProto.DataType values. */
enum {
  DM_ONNX_UNDEFINED = 0,
  DM_ONNX_FLOAT = 1,
  DM_ONNX_UINT8 = 2,
  DM_ONNX_INT8 = 3,
  DM_ONNX_UINT16 = 4,
  DM_ONNX_INT16 = 5,
  DM_ONNX_INT32 = 6,
  DM_ONNX_INT64 = 7,
  DM_ONNX_STRING = 8,
  DM_ONNX_BOOL = 9,
  DM_ONNX_FLOAT16 = 10,
  DM_ONNX_DOUBLE = 11,
  DM_ONNX_UINT32 = 12,
  DM_ONNX_UINT64 = 13,
  DM_ONNX_BFLOAT16 = 16
};

/* ONNX AttributeProto.AttributeType values. */
enum {
  DM_ONNX_ATTR_UNDEFINED = 0,
  DM_ONNX_ATTR_FLOAT = 1,
  DM_ONNX_ATTR_INT = 2,
  DM_ONNX_ATTR_STRING = 3,
  DM_ONNX_ATTR_TENSOR = 4,
  DM_ONNX_ATTR_GRAPH = 5,
  DM_ONNX_ATTR_FLOATS = 6,
  DM_ONNX_ATTR_INTS = 7,
  DM_ONNX_ATTR_STRINGS = 8,
  DM_ONNX_ATTR_TENSORS = 9,
  DM_ONNX_ATTR_GRAPHS = 10
};

typedef struct dm_onnx_tensor {
  const char *name; /* "" when absent */
  int32_t dtype;    /* DM_ONNX_* */
  int32_t ndim;
  int64_t dims[DM_ONNX_MAX_DIMS]; /* all >= 0 */
  int64_t numel;                  /* product of dims (1 for a scalar) */
  /* Little-endian element data, nbytes == numel * dm_onnx_dtype_size(dtype).
   * May be unaligned when zero_copy: read with memcpy or copy first.
   * NULL only when numel == 0.  STRING tensors are refused by the reader. */
  const void *data;
  size_t nbytes;
  bool zero_copy; /* data points into a mapped file */
} dm_onnx_tensor;

typedef struct dm_onnx_attr {
  const char *name;
  int32_t type; /* DM_ONNX_ATTR_* */
  float f;
  int64_t i;
  const char *s; /* bytes of a STRING attribute, NUL-terminated copy */
  size_t s_len;
  const dm_onnx_tensor *t; /* TENSOR */
  const float *floats;     /* FLOATS, owned copy (aligned) */
  size_t n_floats;
  const int64_t *ints; /* INTS, owned copy (aligned) */
  size_t n_ints;
  const char *const *strings; /* STRINGS */
  size_t n_strings;
  /* GRAPH/GRAPHS/TENSORS attributes are skipped (recorded by type only). */
} dm_onnx_attr;

typedef struct dm_onnx_node {
  const char *name; /* "" when absent */
  const char *op_type;
  const char *domain;        /* "" for the default ONNX domain */
  const char *const *inputs; /* "" marks an omitted optional input */
  size_t n_inputs;
  const char *const *outputs;
  size_t n_outputs;
  const dm_onnx_attr *attrs;
  size_t n_attrs;
} dm_onnx_node;

typedef struct dm_onnx_value_info {
  const char *name;
  int32_t dtype;                  /* elem_type, 0 when unknown */
  int32_t ndim;                   /* -1 when the shape is absent */
  int64_t dims[DM_ONNX_MAX_DIMS]; /* -1 for a symbolic or unknown dim */
} dm_onnx_value_info;

typedef struct dm_onnx_graph {
  const char *name;
  const dm_onnx_node *nodes;
  size_t n_nodes;
  const dm_onnx_tensor *initializers;
  size_t n_initializers;
  const dm_onnx_value_info *inputs; /* may include initializers (IR < 4) */
  size_t n_inputs;
  const dm_onnx_value_info *outputs;
  size_t n_outputs;
  const dm_onnx_value_info *value_info;
  size_t n_value_info;
} dm_onnx_graph;

typedef struct dm_onnx_opset {
  const char *domain; /* "" or "ai.onnx" for the default domain */
  int64_t version;
} dm_onnx_opset;

typedef struct dm_onnx_prop {
  const char *key;
  const char *value;
} dm_onnx_prop;

typedef struct dm_onnx_model {
  int64_t ir_version;
  int64_t opset; /* version of the default domain, 0 if not imported */
  const char *producer_name;
  const char *producer_version;
  const char *domain;
  int64_t model_version;
  const char *doc_string;
  const dm_onnx_opset *opsets;
  size_t n_opsets;
  const dm_onnx_prop *metadata; /* metadata_props, file order */
  size_t n_metadata;
  dm_onnx_graph graph;
  size_t file_bytes; /* size of the main file */
} dm_onnx_model;

/* Maps and parses the file at path.  On success *out owns the mapping and all
 * parsed data; free with dm_onnx_free.  Errors: DM_IO (cannot open/map),
 * DM_FORMAT (corrupt), DM_RANGE (a DM_ONNX_MAX_* cap), DM_UNSUPPORTED
 * (e.g. STRING tensors, data_location other than raw/external), DM_NOMEM. */
dm_err dm_onnx_open(const char *path, dm_onnx_model **out, dm_errbuf *eb);

/* Parses a model held in memory; buf must stay valid and unchanged until
 * dm_onnx_free (tensors may point into it).  base_dir is where external data
 * files are looked up; NULL refuses external data.  Used by fuzzers. */
dm_err dm_onnx_parse(const void *buf, size_t len, const char *base_dir,
                     dm_onnx_model **out, dm_errbuf *eb);

/* Releases everything; NULL is a no-op. */
void dm_onnx_free(dm_onnx_model *m);

/* Reads one serialized TensorProto file (the ONNX test-data .pb format).
 * The returned tensor owns a copy of its data; free with
 * dm_onnx_tensor_free. */
dm_err dm_onnx_read_tensor_file(const char *path, dm_onnx_tensor **out,
                                dm_errbuf *eb);
dm_err dm_onnx_parse_tensor(const void *buf, size_t len, dm_onnx_tensor **out,
                            dm_errbuf *eb);
void dm_onnx_tensor_free(dm_onnx_tensor *t);

/* Value of metadata_props[key], or NULL.  Borrowed from m. */
const char *dm_onnx_meta(const dm_onnx_model *m, const char *key);

/* Bytes per element of a DM_ONNX_* dtype; 0 for STRING/unknown. */
size_t dm_onnx_dtype_size(int32_t dtype);

/* Lower-case name such as "float32", "int64"; "unknown" otherwise. */
const char *dm_onnx_dtype_name(int32_t dtype);

/* Attribute lookup on a node; NULL when absent. */
const dm_onnx_attr *dm_onnx_attr_find(const dm_onnx_node *n, const char *name);

#endif
