/* sha256.c: SHA-256 as specified in FIPS 180-4 (section 6.2), written from
 * the specification.  Used to fingerprint model files for /health and the
 * API's `model.sha256`.  No global state; reentrant.
 *
 * Blocks go through the x86 SHA extensions (SHA-NI: Intel since Goldmont and
 * Ice Lake, every AMD Zen) when the CPU has them, else through the portable
 * C rounds.  Hashing the 9 MB default model takes ~45 ms in C and a few ms
 * with SHA-NI; on a one-core host the hash and the engine build of a model
 * load cannot overlap, so this is cold-start time. */
#include "sha256.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DM_SHA_X86 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void block(uint32_t h[8], const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6],
           k = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    uint32_t ch = (e & f) ^ (~e & g);
    uint32_t t1 = k + S1 + ch + K[i] + w[i];
    uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    uint32_t t2 = S0 + maj;
    k = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += k;
}

void dm__sha256_blocks_c(uint32_t h[8], const uint8_t *p, size_t nblocks) {
  for (size_t i = 0; i < nblocks; i++)
    block(h, p + 64 * i);
}

#ifdef DM_SHA_X86
/* The state lives in two registers as the sha256rnds2 instruction wants it:
 * (A,B,E,F) and (C,D,G,H).  Each step of 4 rounds adds K to 4 message words
 * and runs two sha256rnds2 (2 rounds each); the message schedule for 16
 * words ahead comes from sha256msg1/sha256msg2 plus W[t-7]. */
__attribute__((target("sha,sse4.1,ssse3"))) static void
blocks_shani(uint32_t h[8], const uint8_t *p, size_t nblocks) {
  const __m128i bswap =
      _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i t = _mm_loadu_si128((const __m128i *)&h[0]);  /* D C B A */
  __m128i s1 = _mm_loadu_si128((const __m128i *)&h[4]); /* H G F E */
  t = _mm_shuffle_epi32(t, 0xB1);                       /* C D A B */
  s1 = _mm_shuffle_epi32(s1, 0x1B);                     /* E F G H */
  __m128i s0 = _mm_alignr_epi8(t, s1, 8);               /* A B E F */
  s1 = _mm_blend_epi16(s1, t, 0xF0);                    /* C D G H */
  for (size_t b = 0; b < nblocks; b++, p += 64) {
    __m128i save0 = s0, save1 = s1, m[4];
    for (int i = 0; i < 4; i++)
      m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)),
                              bswap);
    for (int r = 0; r < 16; r++) {
      __m128i x =
          _mm_add_epi32(m[r & 3], _mm_loadu_si128((const __m128i *)&K[4 * r]));
      s1 = _mm_sha256rnds2_epu32(s1, s0, x);
      s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(x, 0x0E));
      if (r < 12) { /* words 4(r+4)..4(r+4)+3 replace words 4r..4r+3 */
        __m128i n = _mm_sha256msg1_epu32(m[r & 3], m[(r + 1) & 3]);
        n = _mm_add_epi32(n,
                          _mm_alignr_epi8(m[(r + 3) & 3], m[(r + 2) & 3], 4));
        m[r & 3] = _mm_sha256msg2_epu32(n, m[(r + 3) & 3]);
      }
    }
    s0 = _mm_add_epi32(s0, save0);
    s1 = _mm_add_epi32(s1, save1);
  }
  t = _mm_shuffle_epi32(s0, 0x1B);   /* F E B A */
  s1 = _mm_shuffle_epi32(s1, 0xB1);  /* D C H G */
  s0 = _mm_blend_epi16(t, s1, 0xF0); /* D C B A */
  s1 = _mm_alignr_epi8(s1, t, 8);    /* H G F E */
  _mm_storeu_si128((__m128i *)&h[0], s0);
  _mm_storeu_si128((__m128i *)&h[4], s1);
}
#endif

bool dm__sha256_hw(void) {
#ifdef DM_SHA_X86
  return __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1") &&
         __builtin_cpu_supports("ssse3");
#else
  return false;
#endif
}

void dm__sha256_blocks_hw(uint32_t h[8], const uint8_t *p, size_t nblocks) {
#ifdef DM_SHA_X86
  if (dm__sha256_hw()) {
    blocks_shani(h, p, nblocks);
    return;
  }
#endif
  dm__sha256_blocks_c(h, p, nblocks);
}

void dm__sha256_init(dm__sha256 *s) {
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                 0xa54ff53a, 0x510e527f, 0x9b05688c,
                                 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, h0, sizeof h0);
  s->len = 0;
  s->n = 0;
}

void dm__sha256_update(dm__sha256 *s, const void *data, size_t len) {
  const uint8_t *p = data;
  s->len += len;
  if (s->n) {
    size_t take = 64 - s->n < len ? 64 - s->n : len;
    memcpy(s->buf + s->n, p, take);
    s->n += take;
    p += take;
    len -= take;
    if (s->n < 64) return;
    dm__sha256_blocks_hw(s->h, s->buf, 1);
    s->n = 0;
  }
  dm__sha256_blocks_hw(s->h, p, len / 64);
  p += len / 64 * 64;
  len %= 64;
  memcpy(s->buf, p, len);
  s->n = len;
}

void dm__sha256_final(dm__sha256 *s, uint8_t out[32]) {
  uint64_t bits = s->len * 8;
  uint8_t pad = 0x80;
  dm__sha256_update(s, &pad, 1);
  pad = 0;
  while (s->n != 56)
    dm__sha256_update(s, &pad, 1);
  uint8_t l[8];
  for (int i = 0; i < 8; i++)
    l[i] = (uint8_t)(bits >> (56 - 8 * i));
  dm__sha256_update(s, l, 8);
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)(s->h[i] >> 24);
    out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
    out[4 * i + 3] = (uint8_t)s->h[i];
  }
}

dm_err dm__sha256_file(const char *path, char hex[65], dm_errbuf *eb) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return dm_errf(eb, DM_IO, "%s: %s", path, strerror(errno));
  dm__sha256 s;
  dm__sha256_init(&s);
  static const char digits[] = "0123456789abcdef";
  uint8_t buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      return dm_errf(eb, DM_IO, "%s: %s", path, strerror(e));
    }
    if (n == 0) break;
    dm__sha256_update(&s, buf, (size_t)n);
  }
  close(fd);
  uint8_t d[32];
  dm__sha256_final(&s, d);
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[d[i] >> 4];
    hex[2 * i + 1] = digits[d[i] & 15];
  }
  hex[64] = 0;
  return DM_OK;
}
