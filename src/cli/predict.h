/* predict.h: the `predict` and `eval` subcommands (src/cli/predict.c). */
#ifndef DERMAL_CLI_PREDICT_H
#define DERMAL_CLI_PREDICT_H

int dm_cli_predict(int argc, char **argv);
int dm_cli_eval(int argc, char **argv);

#endif
