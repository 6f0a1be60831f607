/* plot.h: the confusion-matrix PNG of `dermal eval --plot`. */
#ifndef DERMAL_CLI_PLOT_H
#define DERMAL_CLI_PLOT_H

#include <stddef.h>

/* conf is K x K, rows = truth.  Cells are coloured by row-normalised value
 * (recall per true class), each shows its count; labels on both axes.
 * Returns 0, or -1 with a reason in err. */
int dm_cli_plot_confusion(const char *path, const char *const *labels, size_t K,
                          const size_t *conf, char *err, size_t errlen);

#endif
