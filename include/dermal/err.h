/* dermal error codes and error buffer.
 *
 * Every fallible function returns a dm_err and, when given a non-NULL
 * dm_errbuf, writes a one-line human-readable reason into it (for example
 * "tensor 'conv1.w': offset+size 9120 > file 8192").  Thread-safe: no state. */
#ifndef DERMAL_ERR_H
#define DERMAL_ERR_H

#include <stddef.h>

#define DM_ERR_MAP(X)                                                          \
  X(OK, 0, "success")                                                          \
  X(NOMEM, 1, "out of memory")                                                 \
  X(IO, 2, "I/O error")                                                        \
  X(FORMAT, 3, "malformed input")                                              \
  X(RANGE, 4, "value out of range")                                            \
  X(UNSUPPORTED, 5, "unsupported")                                             \
  X(DB, 6, "database error")                                                   \
  X(BUSY, 7, "busy")                                                           \
  X(ARG, 8, "invalid argument")                                                \
  X(BACKEND, 9, "backend failure")                                             \
  X(TOOBIG, 10, "too large")                                                   \
  X(IMAGE_SIZE, 11, "image dimensions out of range")

typedef enum {
#define X(n, v, s) DM_##n = v,
  DM_ERR_MAP(X)
#undef X
} dm_err;

typedef struct dm_errbuf {
  char msg[256];
} dm_errbuf;

/* Static string naming the error class; never NULL. */
const char *dm_strerror(dm_err e);

/* printf-style: writes into eb (if not NULL), truncating; returns rc so
 * callers can write `return dm_errf(eb, DM_FORMAT, "...", ...);`. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
dm_err
dm_errf(dm_errbuf *eb, dm_err rc, const char *fmt, ...);

#endif
