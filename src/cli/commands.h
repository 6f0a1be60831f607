/* commands.h: subcommands implemented outside main.c.  Each takes the
 * arguments after the subcommand name and returns the process exit status
 * (0 success, 1 failure, 2 usage error). */
#ifndef DERMAL_CLI_COMMANDS_H
#define DERMAL_CLI_COMMANDS_H

/* `dermal serve`: the HTTP service (src/cli/serve.c). */
int dm_cli_serve(int argc, char **argv);
/* `dermal migrate`: applies history-store migrations; never opens the
 * model (src/cli/serve.c). */
int dm_cli_migrate(int argc, char **argv);

#endif
