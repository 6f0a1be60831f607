/* libFuzzer target for the engine behind the reader: graph building
 * (shape inference, constant folding, fusions, the memory plan) and one
 * run of the reference backend (src/engine, backend "ref").
 *
 * Purpose: a file that parses but says hostile things (shapes that
 * overflow, Reshape/Slice/Gather/Concat attributes out of range, constants
 * of the wrong size, cycles through names) must fail dm_engine_new or
 * dm_session_run with a message, never crash or read out of bounds.
 * Inputs that pass are run once on zeros when their inputs and arena are
 * small (16 M elements, 256 MB), so that ASan sees every kernel's reads.
 * Invariants: never aborts on input; errors must come with a message.
 * Threading: single-threaded (threads = 1), as libFuzzer runs it.
 *
 * Build: tests/fuzz/Makefile (clang, -fsanitize=fuzzer,address,undefined,
 * linked with oneDNN, which the engine links even when it runs ref).
 * Seeds: tests/fuzz/corpus_onnx/ (the reader's). */
#include "dermal/engine.h"
#include "dermal/onnx.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ELEMS ((int64_t)16 << 20)
#define MAX_ARENA ((size_t)256 << 20)

static void need_msg(dm_err rc, const dm_errbuf *eb) {
  if (rc != DM_OK && !eb->msg[0]) abort(); /* an error without a message */
}

/* Elements of t, -1 when a dim is negative or the count passes MAX_ELEMS. */
static int64_t elems(const dm_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) {
    if (t->dims[i] < 0) return -1;
    if (t->dims[i] && n > MAX_ELEMS / t->dims[i]) return -1;
    n *= t->dims[i];
  }
  return n;
}

static void run_once(const dm_engine *e) {
  size_t n = dm_engine_n_inputs(e);
  if (n > 16) return;
  dm_tensor in[16];
  void *buf[16] = {0};
  size_t k;
  for (k = 0; k < n; k++) {
    in[k] = dm_engine_input(e, k, NULL);
    int64_t c = elems(&in[k]);
    size_t es = dm_onnx_dtype_size(in[k].dtype);
    if (c < 0 || !es) goto out;
    buf[k] = calloc((size_t)c ? (size_t)c : 1, es);
    if (!buf[k]) goto out;
    in[k].data = buf[k];
  }
  dm_session *s = NULL;
  dm_errbuf eb = {{0}};
  dm_err rc = dm_session_new(e, &s, &eb);
  need_msg(rc, &eb);
  if (rc == DM_OK) {
    memset(&eb, 0, sizeof eb);
    rc = dm_session_run(s, in, n, &eb);
    need_msg(rc, &eb);
    dm_session_free(s);
  }
out:
  for (size_t i = 0; i < n && i < 16; i++)
    free(buf[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dm_onnx_model *m = NULL;
  dm_errbuf eb = {{0}};
  dm_err rc = dm_onnx_parse(data, size, NULL, &m, &eb);
  need_msg(rc, &eb);
  if (rc != DM_OK) return 0;
  dm_engine_opts o;
  memset(&o, 0, sizeof o);
  o.backend = DM_BACKEND_REF;
  o.threads = 1;
  dm_engine *e = NULL;
  memset(&eb, 0, sizeof eb);
  rc = dm_engine_new(m, &o, &e, &eb);
  need_msg(rc, &eb);
  if (rc == DM_OK) {
    if (dm_engine_get_stats(e)->arena_bytes <= MAX_ARENA) run_once(e);
    dm_engine_free(e);
  }
  dm_onnx_free(m);
  return 0;
}
