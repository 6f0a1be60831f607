/* quantize.h: the `quantize` subcommand (src/cli/quantize.c): static
 * post-training int8 quantization of an ONNX classifier into a standard ONNX
 * QDQ graph. */
#ifndef DERMAL_CLI_QUANTIZE_H
#define DERMAL_CLI_QUANTIZE_H

int dm_cli_quantize(int argc, char **argv);

#endif
