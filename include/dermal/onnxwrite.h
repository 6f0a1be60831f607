/* dermal onnxwrite: serializes an ONNX model (protobuf) from the reader's
 * structs (include/dermal/onnx.h), so a parsed model can be copied, edited
 * (nodes inserted, initializers replaced, metadata added) and written back.
 * Used by `dermal quantize`.
 *
 * What is written: ir_version, opset_import, producer name/version, domain,
 * model_version, doc_string, metadata_props, and the graph (name, nodes with
 * their attributes, initializers as raw_data, inputs, outputs, value_info).
 * Symbolic dimensions (-1 in dm_onnx_value_info) are written as unknown
 * dimensions (no dim_value, no dim_param).  What cannot be written, because
 * the reader does not keep it: GRAPH, GRAPHS and TENSORS attributes (If,
 * Loop, Scan bodies) -> DM_UNSUPPORTED naming the node and attribute.
 *
 * Tensor data is always written inline (raw_data, little-endian); external
 * data is not produced.  A serialized ModelProto must stay under 2 GiB
 * (protobuf's limit): DM_RANGE otherwise.
 *
 * Thread-safety: no global state; the input is only read. */
#ifndef DERMAL_ONNXWRITE_H
#define DERMAL_ONNXWRITE_H

#include <stddef.h>

#include "dermal/err.h"
#include "dermal/onnx.h"

/* Serializes m into a malloc'd buffer (*out, *len; caller frees with free()).
 * Only the fields listed above are read; file_bytes and zero_copy are
 * ignored.  Errors: DM_UNSUPPORTED, DM_RANGE, DM_NOMEM, DM_ARG (a NULL
 * pointer where data is required, e.g. a tensor with numel > 0 and no data,
 * or nbytes != numel * element size). */
dm_err dm_onnx_serialize(const dm_onnx_model *m, void **out, size_t *len,
                         dm_errbuf *eb);

/* Serializes m and writes it to path atomically (a temporary file next to it,
 * fsync'd, then renamed).  Errors: those of dm_onnx_serialize and DM_IO. */
dm_err dm_onnx_write(const dm_onnx_model *m, const char *path, dm_errbuf *eb);

#endif
