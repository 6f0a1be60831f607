/* image_dump: test-only bridge from the parity script to src/image/.
 *
 * Purpose: decode an image file with dm_image_decode and write either the
 * decoded RGB pixels (uint8, shape (h, w, 3)) or the preprocessed tensor
 * (float32, shape (3, H, W), resize-shorter-side + center crop, mean 0,
 * std 1, scale 1/255) as a NumPy .npy file (format 1.0), so
 * tests/integration/image_parity.py can compare it with PIL/torchvision.
 *
 * usage: image_dump rgb IN OUT.npy [TARGET_SHORT_SIDE]
 *        image_dump tensor IN OUT.npy RESIZE CROP
 *        image_dump resize IN OUT.npy W H      (dm_image_resize of the decode)
 * Exit status: 0 on success, 3 + dm_err on a decode/preprocess error (the
 * message goes to stderr), 2 on usage or I/O errors.
 *
 * Threading: single-threaded program.  Not part of the product. */
#include "dermal/image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_int(const char *s, int *v) {
  char *end;
  long x;
  errno = 0;
  x = strtol(s, &end, 10);
  if (errno || end == s || *end || x < 0 || x > 1000000) return 0;
  *v = (int)x;
  return 1;
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf = NULL;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
      fseek(f, 0, SEEK_SET) != 0)
    goto out;
  buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  *len = (size_t)n;
out:
  fclose(f);
  return buf;
}

/* .npy v1.0: magic, version, u16 header length, dict padded with spaces to
 * a multiple of 64 bytes (including the final newline). */
static int write_npy(const char *path, const char *descr, const int *shape,
                     int ndim, const void *data, size_t nbytes) {
  char hdr[256], dims[96];
  size_t hl, pos = 0;
  int i, n;
  FILE *f;
  dims[0] = '\0';
  for (i = 0; i < ndim; i++) {
    n = snprintf(dims + pos, sizeof dims - pos, "%d,%s", shape[i],
                 i + 1 < ndim ? " " : "");
    if (n < 0 || (size_t)n >= sizeof dims - pos) return 0;
    pos += (size_t)n;
  }
  n = snprintf(hdr, sizeof hdr,
               "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
               descr, dims);
  if (n < 0 || (size_t)n >= sizeof hdr - 64) return 0;
  hl = (size_t)n;
  while ((10 + hl + 1) % 64)
    hdr[hl++] = ' ';
  hdr[hl++] = '\n';
  f = fopen(path, "wb");
  if (!f) return 0;
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc((int)(hl & 0xff), f);
  fputc((int)(hl >> 8), f);
  fwrite(hdr, 1, hl, f);
  fwrite(data, 1, nbytes, f);
  return fclose(f) == 0;
}

int main(int argc, char **argv) {
  dm_errbuf eb;
  dm_image im = {0, 0, 0, NULL};
  dm_image_info info;
  unsigned char *buf;
  size_t len = 0;
  dm_err rc;
  int target = 0, a = 0, b = 0, shape[3], st = 0;

  if (argc < 4 || (strcmp(argv[1], "rgb") && strcmp(argv[1], "tensor") &&
                   strcmp(argv[1], "resize"))) {
    fprintf(stderr, "usage: image_dump rgb|tensor|resize IN OUT.npy [ARGS]\n");
    return 2;
  }
  if (!strcmp(argv[1], "rgb") && argc > 4 && !parse_int(argv[4], &target))
    return 2;
  if (strcmp(argv[1], "rgb") &&
      (argc != 6 || !parse_int(argv[4], &a) || !parse_int(argv[5], &b)))
    return 2;
  buf = read_file(argv[2], &len);
  if (!buf) {
    fprintf(stderr, "image_dump: cannot read %s\n", argv[2]);
    return 2;
  }
  eb.msg[0] = '\0';
  rc = dm_image_decode(buf, len, NULL, target, &im, &info, &eb);
  free(buf);
  if (rc != DM_OK) {
    fprintf(stderr, "image_dump: %s: %s\n", dm_strerror(rc), eb.msg);
    return 3 + (int)rc;
  }
  fprintf(stderr, "%s %dx%d c=%d orientation=%d scale=%d/%d -> %dx%d\n",
          dm_image_format_name(info.format), info.width, info.height,
          info.channels, info.orientation, info.scale_num, info.scale_denom,
          im.w, im.h);
  if (!strcmp(argv[1], "rgb")) {
    shape[0] = im.h;
    shape[1] = im.w;
    shape[2] = 3;
    st = write_npy(argv[3], "|u1", shape, 3, im.px,
                   (size_t)im.w * (size_t)im.h * 3)
             ? 0
             : 2;
  } else if (!strcmp(argv[1], "resize")) {
    dm_image r = {0, 0, 0, NULL};
    rc = dm_image_resize(&im, a, b, &r, &eb);
    if (rc != DM_OK) {
      fprintf(stderr, "image_dump: %s: %s\n", dm_strerror(rc), eb.msg);
      st = 3 + (int)rc;
    } else {
      shape[0] = r.h;
      shape[1] = r.w;
      shape[2] = 3;
      st = write_npy(argv[3], "|u1", shape, 3, r.px,
                     (size_t)r.w * (size_t)r.h * 3)
               ? 0
               : 2;
    }
    dm_image_free(&r);
  } else {
    dm_preproc p;
    float *t;
    dm_preproc_init(&p);
    p.resize = a;
    p.size_h = p.size_w = b;
    p.mean[0] = p.mean[1] = p.mean[2] = 0.0f;
    p.std[0] = p.std[1] = p.std[2] = 1.0f;
    t = malloc((size_t)3 * (size_t)b * (size_t)b * sizeof *t);
    if (!t) {
      st = 2;
    } else if ((rc = dm_image_to_tensor(&im, &p, t, &eb)) != DM_OK) {
      fprintf(stderr, "image_dump: %s: %s\n", dm_strerror(rc), eb.msg);
      st = 3 + (int)rc;
    } else {
      shape[0] = 3;
      shape[1] = b;
      shape[2] = b;
      st = write_npy(argv[3], "<f4", shape, 3, t,
                     (size_t)3 * (size_t)b * (size_t)b * sizeof *t)
               ? 0
               : 2;
    }
    free(t);
  }
  dm_image_free(&im);
  return st;
}
