/* npy.c: reader/writer for NumPy .npy files.  The header is a Python dict
 * literal; we accept the exact form numpy writes ({'descr': ...,
 * 'fortran_order': False, 'shape': (...), }) and refuse anything else with a
 * message. Reentrant; no globals. */
#include "npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
  const char *descr;
  int32_t dtype;
} npy_types[] = {
    {"<f4", DM_ONNX_FLOAT}, {"<f8", DM_ONNX_DOUBLE}, {"<i8", DM_ONNX_INT64},
    {"<i4", DM_ONNX_INT32}, {"|u1", DM_ONNX_UINT8},  {"|i1", DM_ONNX_INT8},
    {"|b1", DM_ONNX_BOOL},  {"<i2", DM_ONNX_INT16},  {"<u2", DM_ONNX_UINT16},
};

static dm_err parse_header(const char *h, dm_tensor *t, const char *path,
                           dm_errbuf *eb) {
  const char *d = strstr(h, "'descr':");
  const char *f = strstr(h, "'fortran_order':");
  const char *s = strstr(h, "'shape':");
  if (!d || !f || !s)
    return dm_errf(eb, DM_FORMAT, "%s: not an .npy header", path);
  d += 8;
  while (*d == ' ')
    d++;
  t->dtype = 0;
  for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++) {
    size_t n = strlen(npy_types[i].descr);
    if (d[0] == '\'' && strncmp(d + 1, npy_types[i].descr, n) == 0 &&
        d[1 + n] == '\'')
      t->dtype = npy_types[i].dtype;
  }
  if (!t->dtype) {
    int n = 0; /* the quoted descr, e.g. '>f4' (big-endian) */
    if (d[0] == '\'')
      while (n < 16 && d[1 + n] && d[1 + n] != '\'')
        n++;
    return dm_errf(eb, DM_UNSUPPORTED,
                   "%s: unsupported dtype '%.*s' (little-endian float32, "
                   "float64, integer or bool .npy files are read)",
                   path, n, d + 1);
  }
  f += 16;
  while (*f == ' ')
    f++;
  if (strncmp(f, "False", 5) != 0)
    return dm_errf(eb, DM_UNSUPPORTED, "%s: Fortran order is not supported",
                   path);
  s += 8;
  while (*s == ' ')
    s++;
  if (*s++ != '(') return dm_errf(eb, DM_FORMAT, "%s: bad shape", path);
  t->rank = 0;
  for (;;) {
    while (*s == ' ' || *s == ',')
      s++;
    if (*s == ')') break;
    if (t->rank >= DM_MAX_RANK)
      return dm_errf(eb, DM_UNSUPPORTED, "%s: rank > %d", path, DM_MAX_RANK);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0 || v > (1ll << 40))
      return dm_errf(eb, DM_FORMAT, "%s: bad shape value", path);
    t->dims[t->rank++] = v;
    s = end;
  }
  return DM_OK;
}

dm_err dm_npy_read(const char *path, dm_tensor *t, dm_errbuf *eb) {
  dm_err rc = DM_IO;
  char *hdr = NULL;
  void *data = NULL;
  FILE *fp = fopen(path, "rb");
  if (!fp) return dm_errf(eb, DM_IO, "%s: %s", path, strerror(errno));
  unsigned char pre[10];
  if (fread(pre, 1, 10, fp) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
    rc = dm_errf(eb, DM_FORMAT, "%s: not an .npy file", path);
    goto fail;
  }
  size_t hlen;
  if (pre[6] == 1) {
    hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
  } else if (pre[6] == 2 || pre[6] == 3) {
    unsigned char more[2];
    if (fread(more, 1, 2, fp) != 2) {
      rc = dm_errf(eb, DM_FORMAT, "%s: truncated header", path);
      goto fail;
    }
    hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)more[0] << 16 |
           (size_t)more[1] << 24;
  } else {
    rc = dm_errf(eb, DM_UNSUPPORTED, "%s: .npy version %d", path, pre[6]);
    goto fail;
  }
  if (hlen > 1 << 20) {
    rc = dm_errf(eb, DM_FORMAT, "%s: header too long", path);
    goto fail;
  }
  hdr = malloc(hlen + 1);
  if (!hdr) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory");
    goto fail;
  }
  if (fread(hdr, 1, hlen, fp) != hlen) {
    rc = dm_errf(eb, DM_FORMAT, "%s: truncated header", path);
    goto fail;
  }
  hdr[hlen] = 0;
  memset(t, 0, sizeof *t);
  if ((rc = parse_header(hdr, t, path, eb)) != DM_OK) goto fail;
  size_t n = dm_onnx_dtype_size(t->dtype);
  for (int i = 0; i < t->rank; i++)
    if (__builtin_mul_overflow(n, (size_t)t->dims[i], &n)) {
      rc = dm_errf(eb, DM_FORMAT, "%s: shape too large", path);
      goto fail;
    }
  data = malloc(n ? n : 1);
  if (!data) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory reading %s", path);
    goto fail;
  }
  if (fread(data, 1, n, fp) != n) {
    rc = dm_errf(eb, DM_FORMAT, "%s: truncated data (expected %zu bytes)", path,
                 n);
    goto fail;
  }
  t->data = data;
  free(hdr);
  fclose(fp);
  return DM_OK;
fail:
  free(data);
  free(hdr);
  fclose(fp);
  return rc;
}

dm_err dm_npy_write(const char *path, const dm_tensor *t, dm_errbuf *eb) {
  const char *descr = NULL;
  for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
    if (npy_types[i].dtype == t->dtype) descr = npy_types[i].descr;
  if (!descr)
    return dm_errf(eb, DM_UNSUPPORTED, "%s: cannot write dtype %s", path,
                   dm_onnx_dtype_name(t->dtype));
  char shape[256];
  size_t o = 0;
  size_t n = dm_onnx_dtype_size(t->dtype);
  shape[0] = 0;
  for (int i = 0; i < t->rank && o < sizeof shape; i++) {
    o += (size_t)snprintf(shape + o, sizeof shape - o, "%lld,%s",
                          (long long)t->dims[i], i + 1 < t->rank ? " " : "");
    n *= (size_t)t->dims[i];
  }
  if (t->rank > 1 && o > 0 && o < sizeof shape) shape[o - 1] = 0; /* drop ',' */
  char hdr[512];
  int hl = snprintf(hdr, sizeof hdr,
                    "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                    descr, shape);
  if (hl < 0 || (size_t)hl >= sizeof hdr - 64)
    return dm_errf(eb, DM_RANGE, "%s: header too long", path);
  size_t total = 10 + (size_t)hl + 1;
  size_t pad = (64 - total % 64) % 64;
  FILE *fp = fopen(path, "wb");
  if (!fp) return dm_errf(eb, DM_IO, "%s: %s", path, strerror(errno));
  size_t hlen = (size_t)hl + pad + 1;
  unsigned char pre[10] = {0x93,
                           'N',
                           'U',
                           'M',
                           'P',
                           'Y',
                           1,
                           0,
                           (unsigned char)(hlen & 0xff),
                           (unsigned char)(hlen >> 8)};
  bool ok = fwrite(pre, 1, 10, fp) == 10 &&
            fwrite(hdr, 1, (size_t)hl, fp) == (size_t)hl;
  for (size_t i = 0; ok && i < pad; i++)
    ok = fputc(' ', fp) != EOF;
  ok = ok && fputc('\n', fp) != EOF;
  ok = ok && (n == 0 || fwrite(t->data, 1, n, fp) == n);
  if (fclose(fp) != 0) ok = false;
  return ok ? DM_OK : dm_errf(eb, DM_IO, "%s: write failed", path);
}
