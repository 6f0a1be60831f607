/* libFuzzer target for the ONNX reader (src/onnx/reader.c).
 *
 * Purpose: feed arbitrary bytes to dm_onnx_parse (as a ModelProto, external
 * data refused: base_dir NULL) and to dm_onnx_parse_tensor (as a standalone
 * TensorProto).  On success every string and every tensor byte is read, so
 * that ASan reports any pointer that escapes the input or an owned buffer
 * (libFuzzer's input is an exactly sized heap copy).
 * Invariants: never aborts on input; errors must come with a message.
 * Threading: single-threaded, as libFuzzer runs it.
 *
 * Build: clang -std=c11 -D_GNU_SOURCE -g -O1
 * -fsanitize=fuzzer,address,undefined -Iinclude src/onnx/reader.c
 * src/common/err.c tests/fuzz/fuzz_onnx.c Seeds: tests/fuzz/corpus_onnx/ */
#include "dermal/onnx.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink; /* keeps the reads below from being elided */

static void touch(const void *p, size_t n) {
  const uint8_t *b = p;
  uint64_t acc = 0;
  size_t i;
  for (i = 0; i < n; i++)
    acc += b[i];
  sink += acc;
}

static void touch_str(const char *s) { touch(s, strlen(s) + 1); }

static void touch_tensor(const dm_onnx_tensor *t) {
  touch_str(t->name);
  if (t->ndim < 0 || t->ndim > DM_ONNX_MAX_DIMS) abort();
  if (t->numel && (!t->data || t->nbytes != (size_t)t->numel *
                                                dm_onnx_dtype_size(t->dtype)))
    abort(); /* contract of dm_onnx_tensor */
  if (t->data) touch(t->data, t->nbytes);
}

static void touch_vi(const dm_onnx_value_info *v, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    touch_str(v[i].name);
    if (v[i].ndim > DM_ONNX_MAX_DIMS) abort();
  }
}

static void touch_model(const dm_onnx_model *m) {
  const dm_onnx_graph *g = &m->graph;
  size_t i, j, k;
  touch_str(m->producer_name);
  touch_str(m->producer_version);
  touch_str(m->domain);
  touch_str(m->doc_string);
  for (i = 0; i < m->n_opsets; i++)
    touch_str(m->opsets[i].domain);
  for (i = 0; i < m->n_metadata; i++) {
    touch_str(m->metadata[i].key);
    touch_str(m->metadata[i].value);
    if (dm_onnx_meta(m, m->metadata[i].key) == NULL) abort();
  }
  touch_str(g->name);
  for (i = 0; i < g->n_nodes; i++) {
    const dm_onnx_node *n = &g->nodes[i];
    touch_str(n->name);
    touch_str(n->op_type);
    touch_str(n->domain);
    for (j = 0; j < n->n_inputs; j++)
      touch_str(n->inputs[j]);
    for (j = 0; j < n->n_outputs; j++)
      touch_str(n->outputs[j]);
    for (j = 0; j < n->n_attrs; j++) {
      const dm_onnx_attr *a = &n->attrs[j];
      touch_str(a->name);
      if (a->s) touch(a->s, a->s_len + 1);
      if (a->t) touch_tensor(a->t);
      touch(a->floats, a->n_floats * sizeof *a->floats);
      touch(a->ints, a->n_ints * sizeof *a->ints);
      for (k = 0; k < a->n_strings; k++)
        touch_str(a->strings[k]);
      if (dm_onnx_attr_find(n, a->name) == NULL) abort();
    }
  }
  for (i = 0; i < g->n_initializers; i++)
    touch_tensor(&g->initializers[i]);
  touch_vi(g->inputs, g->n_inputs);
  touch_vi(g->outputs, g->n_outputs);
  touch_vi(g->value_info, g->n_value_info);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dm_errbuf eb;
  dm_onnx_model *m = NULL;
  dm_onnx_tensor *t = NULL;
  eb.msg[0] = '\0';
  if (dm_onnx_parse(data, size, NULL, &m, &eb) == DM_OK) {
    touch_model(m);
    dm_onnx_free(m);
  } else if (!eb.msg[0]) {
    abort(); /* every error explains itself */
  }
  if (dm_onnx_parse_tensor(data, size, &t, NULL) == DM_OK) {
    touch_tensor(t);
    dm_onnx_tensor_free(t);
  }
  return 0;
}
