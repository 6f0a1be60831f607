/* util.h: helpers shared by the CLI's subcommand files (src/cli only). */
#ifndef DERMAL_CLI_UTIL_H
#define DERMAL_CLI_UTIL_H

#include <stdbool.h>
#include <stdio.h>

#include "dermal/engine.h"

/* Transparent huge pages for the first 32 MiB of heap growth (util.c). */
void dm_cli_heap_hugepages(void);
double dm_cli_now_ms(void);
double dm_cli_peak_rss_mb(void);
/* Parses an integer in [lo, hi]; prints "dermal: FLAG expects ..." and
 * returns -1 on error. */
int dm_cli_parse_int(const char *flag, const char *s, long lo, long hi,
                     int *out);
/* Parses fp32 | bf16 | auto; prints "dermal: FLAG is fp32, bf16 or auto"
 * and returns 2 (the usage exit status) on error, 0 on success. */
int dm_cli_parse_precision(const char *flag, const char *s, dm_precision *out);
int dm_cli_parse_long(const char *flag, const char *s, long lo, long hi,
                      long *out);
/* Records the model a command was given (`--model M` or positional) in
 * *slot; a second one, even the same path, is a usage error: prints
 * "dermal CMD: two models given ..." and returns 2, else 0. */
int dm_cli_set_model(const char *cmd, const char **slot, const char *path);
/* What e computes in, for people: its float precision ("fp32", "bf16"),
 * or "int8 + fp32, N int8 ops" for a quantized model whose QDQ patterns run
 * as N fused int8 ops.  Written into buf (n bytes). */
const char *dm_cli_precision_label(const dm_engine *e, char *buf, size_t n);
/* Writes s as a JSON string literal: control characters escaped, bytes
 * that are not well-formed UTF-8 as U+FFFD, so the output always parses. */
void dm_cli_json_str(FILE *f, const char *s);
/* Writes s for a terminal or a line-based reader: control characters and
 * bytes that are not well-formed UTF-8 as \xHH. */
void dm_cli_text_str(FILE *f, const char *s);
/* The default model: $MODEL_PATH, else models/dermal-ham10000.onnx in the
 * current directory, else next to the binary (../models/ from build/). */
const char *dm_cli_default_model(void);
/* Reads a whole file (for images); *len set.  NULL + message on error. */
void *dm_cli_read_file(const char *path, size_t max, size_t *len, char *err,
                       size_t errlen);

#endif
