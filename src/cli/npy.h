/* npy.h: NumPy .npy files (format 1.0/2.0/3.0, little-endian, C order) for
 * `dermal run`.  Only the dtypes the engine's inputs and outputs use. */
#ifndef DERMAL_CLI_NPY_H
#define DERMAL_CLI_NPY_H

#include "dermal/engine.h"

/* Reads path into *t; t->data is malloc'd (caller frees).  dtype is the
 * DM_ONNX_* equivalent of '<f4', '<f8', '<i8', '<i4', '|u1', '|i1', '|b1'. */
dm_err dm_npy_read(const char *path, dm_tensor *t, dm_errbuf *eb);
dm_err dm_npy_write(const char *path, const dm_tensor *t, dm_errbuf *eb);

#endif
