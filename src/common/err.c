/* dermal error helpers: names for dm_err and the printf-style error buffer.
 *
 * Purpose: one place that turns DM_ERR_MAP into strings (dm_strerror) and
 * formats details into a caller-supplied dm_errbuf (dm_errf).
 * Invariants: dm_strerror never returns NULL; dm_errf always NUL-terminates
 * eb->msg (vsnprintf truncates) and returns rc unchanged.
 * Threading: no state at all; safe from any thread. */
#include "dermal/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *dm_strerror(dm_err e) {
  switch (e) {
#define X(n, v, s)                                                             \
  case DM_##n: return s;
    DM_ERR_MAP(X)
#undef X
  }
  return "unknown error";
}

dm_err dm_errf(dm_errbuf *eb, dm_err rc, const char *fmt, ...) {
  va_list ap;
  if (!eb) return rc;
  va_start(ap, fmt);
  vsnprintf(eb->msg, sizeof eb->msg, fmt, ap);
  va_end(ap);
  return rc;
}
