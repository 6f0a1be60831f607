/* check.h: the assertion macro of dermal's plain-C unit tests.  Each test
 * program counts checks in tests_passed/tests_failed and ends with the line
 * `NAME: N passed, N failed` that tests/run-all.sh sums. */
#ifndef DERMAL_TESTS_CHECK_H
#define DERMAL_TESTS_CHECK_H

#include <stdio.h>

static int tests_passed, tests_failed;

/* CHECK(condition, printf-format, args...): counts, and on failure prints
 * `FAIL file:line: message`. */
#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (cond) {                                                                \
      tests_passed++;                                                          \
    } else {                                                                   \
      tests_failed++;                                                          \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);                              \
      printf(__VA_ARGS__);                                                     \
      printf("\n");                                                            \
    }                                                                          \
  } while (0)

#endif
