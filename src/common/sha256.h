/* sha256.h: SHA-256 (FIPS 180-4) for model fingerprints.  Private to the
 * library (dm__ names); reentrant. */
#ifndef DERMAL_COMMON_SHA256_H
#define DERMAL_COMMON_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dermal/err.h"

typedef struct dm__sha256 {
  uint32_t h[8];
  uint64_t len; /* bytes hashed */
  uint8_t buf[64];
  size_t n; /* bytes in buf */
} dm__sha256;

void dm__sha256_init(dm__sha256 *s);
void dm__sha256_update(dm__sha256 *s, const void *data, size_t len);
void dm__sha256_final(dm__sha256 *s, uint8_t out[32]);
/* Hashes a file with read(2) in chunks (no mapping: page cache, not RSS);
 * writes 64 lower-case hex digits + NUL into hex. */
dm_err dm__sha256_file(const char *path, char hex[65], dm_errbuf *eb);

/* The compression function over whole 64-byte blocks: the portable C
 * rounds, and the CPU's SHA instructions when it has them (dm__sha256_hw;
 * otherwise the same C rounds).  dm__sha256_update uses the latter; both
 * are exposed so that tests compare them. */
void dm__sha256_blocks_c(uint32_t h[8], const uint8_t *p, size_t nblocks);
void dm__sha256_blocks_hw(uint32_t h[8], const uint8_t *p, size_t nblocks);
bool dm__sha256_hw(void);

#endif
