/* meta.h: the `meta` subcommand (src/cli/meta.c). */
#ifndef DERMAL_CLI_META_H
#define DERMAL_CLI_META_H

int dm_cli_meta(int argc, char **argv);

#endif
