/* dermal JPEG decoding with libjpeg-turbo's TurboJPEG 2.x API.
 *
 * Purpose: decode baseline, progressive, arithmetic, grayscale, RGB and
 * CMYK/YCCK JPEGs into RGB8 with the pixels PIL produces, optionally using
 * DCT-domain downscaling for large photos.
 *
 * Invariants:
 *  - Before libjpeg sees the data, a bounds-checked marker walk (jpeg_walk)
 *    reads SOF (dimensions, components, precision), the first EXIF APP1
 *    segment and counts scans; it refuses files whose marker structure is
 *    broken or that end before EOI.  libjpeg would only warn about those and
 *    fill the missing rows with grey: here they never reach the decoder.
 *  - Dimensions are checked against the limits (dm__check_dims) before any
 *    pixel buffer exists.  tjDecompress2 is given exactly the scaled size we
 *    allocated for, so it can never write outside the buffer (it picks the
 *    largest scaling factor that fits width x height).
 *  - Any libjpeg-turbo warning (TJERR_WARNING: truncated data, corrupt
 *    entropy data, extraneous bytes) is an error: TJFLAG_STOPONWARNING plus
 *    a check of the return value; TJFLAG_LIMITSCANS caps progressive scans.
 *  - CMYK/YCCK: libjpeg returns the stored (Adobe, inverted) CMYK samples;
 *    PIL reads them as "CMYK;I" and converts with
 *    r = 255 - k' - MULDIV255(c', 255 - k') where c' = 255 - stored.  We
 *    apply the same integer formula, so the result is bit-identical to PIL.
 *  - Grayscale is decoded as one channel and replicated (like PIL's "L" to
 *    "RGB"); DCT method and upsampling are libjpeg's defaults (ISLOW, fancy
 *    upsampling), the same as PIL's.
 *
 * Threading: one TurboJPEG handle per call; no shared state. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <turbojpeg.h>

typedef struct jpeg_hdr {
  int width, height, ncomp, precision;
  int sof; /* SOF marker byte (0xC0..0xCF), 0 = none */
  int nscans;
  const uint8_t *exif; /* first APP1 "Exif\0\0" payload, or NULL */
  size_t exif_len;
} jpeg_hdr;

static int is_sof(int m) {
  return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
}

static dm_err trunc_err(dm_errbuf *eb, size_t pos) {
  return dm_errf(eb, DM_FORMAT,
                 "truncated or corrupt JPEG (ends at %zu before EOI)", pos);
}

/* Walks the marker segments of b[0, n) (b starts with FF D8).  Stops at the
 * first EOI after at least one scan.  Entropy-coded data after SOS is
 * skipped by looking for the next marker (FF xx with xx not 00, not RSTn). */
static dm_err jpeg_walk(const uint8_t *b, size_t n, jpeg_hdr *s,
                        dm_errbuf *eb) {
  size_t pos = 2;
  memset(s, 0, sizeof *s);
  for (;;) {
    int m;
    size_t seglen, plen;
    const uint8_t *p;
    if (pos >= n) return trunc_err(eb, pos);
    if (b[pos] != 0xff)
      return dm_errf(eb, DM_FORMAT,
                     "corrupt JPEG: expected a marker at offset %zu", pos);
    while (pos < n && b[pos] == 0xff)
      pos++; /* fill bytes */
    if (pos >= n) return trunc_err(eb, pos);
    m = b[pos++];
    if (m == 0xd9) {
      if (s->nscans == 0)
        return dm_errf(eb, DM_FORMAT,
                       "corrupt JPEG: no image data before "
                       "EOI");
      return DM_OK;
    }
    if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; /* no length */
    if (m == 0x00 || m == 0xd8)
      return dm_errf(eb, DM_FORMAT,
                     "corrupt JPEG: unexpected marker 0x%02x at %zu", m,
                     pos - 1);
    if (n - pos < 2) return trunc_err(eb, pos);
    seglen = (size_t)b[pos] << 8 | b[pos + 1];
    if (seglen < 2)
      return dm_errf(eb, DM_FORMAT, "corrupt JPEG: segment length %zu", seglen);
    if (n - pos < seglen) return trunc_err(eb, pos);
    p = b + pos + 2;
    plen = seglen - 2;
    pos += seglen;
    if (m == 0xe1 && !s->exif && plen >= 6 && memcmp(p, "Exif\0\0", 6) == 0) {
      s->exif = p;
      s->exif_len = plen;
    } else if (is_sof(m)) {
      if (s->sof)
        return dm_errf(eb, DM_FORMAT, "corrupt JPEG: two SOF markers");
      if (plen < 6)
        return dm_errf(eb, DM_FORMAT, "corrupt JPEG: short SOF segment");
      s->sof = m;
      s->precision = p[0];
      s->height = p[1] << 8 | p[2];
      s->width = p[3] << 8 | p[4];
      s->ncomp = p[5];
    } else if (m == 0xda) {
      if (!s->sof)
        return dm_errf(eb, DM_FORMAT, "corrupt JPEG: scan before SOF");
      if (++s->nscans > DM__JPEG_MAX_SCANS)
        return dm_errf(eb, DM_FORMAT, "JPEG has more than %d scans",
                       DM__JPEG_MAX_SCANS);
      for (;;) { /* entropy-coded segment */
        const uint8_t *q = memchr(b + pos, 0xff, n - pos);
        uint8_t nx;
        if (!q) return trunc_err(eb, n);
        pos = (size_t)(q - b);
        if (n - pos < 2) return trunc_err(eb, n);
        nx = b[pos + 1];
        if (nx == 0x00 || (nx >= 0xd0 && nx <= 0xd7)) {
          pos += 2;
          continue;
        }
        if (nx == 0xff) { /* fill byte before a marker */
          pos++;
          continue;
        }
        break;
      }
    }
  }
}

/* The smallest libjpeg-turbo scaling factor < 1 keeping the shorter side
 * >= 2 * target; 1/1 when none qualifies. */
static tjscalingfactor pick_scale(int w, int h, int target) {
  tjscalingfactor best = {1, 1};
  tjscalingfactor *sf;
  int i, nsf = 0, shorter = w < h ? w : h;
  if (target <= 0) return best;
  sf = tjGetScalingFactors(&nsf);
  if (!sf) return best;
  for (i = 0; i < nsf; i++) {
    if (sf[i].num <= 0 || sf[i].denom <= 0 || sf[i].num >= sf[i].denom)
      continue;
    if ((long long)TJSCALED(shorter, sf[i]) < 2LL * target) continue;
    /* smaller factor: num/denom < best.num/best.denom */
    if ((long long)sf[i].num * best.denom < (long long)best.num * sf[i].denom)
      best = sf[i];
  }
  return best;
}

/* PIL's cmyk2rgb on "CMYK;I" data: MULDIV255(a, b) = ((t >> 8) + t) >> 8
 * with t = a * b + 128.  In place, 4 -> 3 bytes per pixel (forward: the
 * write position never passes the read position). */
static void cmyk_to_rgb(uint8_t *px, size_t npix) {
  size_t i;
  for (i = 0; i < npix; i++) {
    int nk = px[4 * i + 3]; /* 255 - k' where k' = 255 - stored */
    int j, v[3];
    for (j = 0; j < 3; j++) {
      int c = 255 - px[4 * i + (size_t)j];
      int t = c * nk + 128;
      int r = nk - (((t >> 8) + t) >> 8);
      v[j] = r < 0 ? 0 : r > 255 ? 255 : r;
    }
    px[3 * i + 0] = (uint8_t)v[0];
    px[3 * i + 1] = (uint8_t)v[1];
    px[3 * i + 2] = (uint8_t)v[2];
  }
}

/* In place, 1 -> 3 bytes per pixel, backwards. */
static void gray_to_rgb(uint8_t *px, size_t npix) {
  size_t i = npix;
  while (i-- > 0) {
    uint8_t v = px[i];
    px[3 * i + 0] = v;
    px[3 * i + 1] = v;
    px[3 * i + 2] = v;
  }
}

dm_err dm__decode_jpeg(const uint8_t *buf, size_t len,
                       const dm_image_limits *lim, int target_short_side,
                       dm_image *out, dm_image_info *info, dm_errbuf *eb) {
  dm_err rc;
  jpeg_hdr s;
  tjhandle tj = NULL;
  uint8_t *px = NULL;
  int w = 0, h = 0, subsamp = 0, cs = 0, pf, ps, sw, sh;
  tjscalingfactor sf;
  unsigned long jlen;

  rc = jpeg_walk(buf, len, &s, eb);
  if (s.sof) {
    /* A frame header was seen: refuse absurd dimensions first (HTTP 422),
     * even when the rest of the file is broken. */
    dm_err rd;
    dm_errbuf tmp;
    info->channels = s.ncomp;
    info->progressive = (s.sof & 3) == 2;
    rd = dm__check_dims("JPEG", (uint64_t)s.width, (uint64_t)s.height, lim,
                        info, &tmp);
    if (rd == DM_IMAGE_SIZE || (rd != DM_OK && rc == DM_OK)) {
      if (eb) *eb = tmp;
      rc = rd;
    }
  }
  if (rc != DM_OK) goto fail;
  if (s.precision != 8 || (s.sof & 3) == 3) {
    rc = dm_errf(eb, DM_FORMAT, "unsupported JPEG (%d-bit%s)", s.precision,
                 (s.sof & 3) == 3 ? ", lossless" : "");
    goto fail;
  }
  if (s.ncomp != 1 && s.ncomp != 3 && s.ncomp != 4) {
    rc = dm_errf(eb, DM_FORMAT, "unsupported JPEG with %d components", s.ncomp);
    goto fail;
  }
  jlen = (unsigned long)len;
  if ((size_t)jlen != len) {
    rc = dm_errf(eb, DM_TOOBIG, "JPEG too large");
    goto fail;
  }
  tj = tjInitDecompress();
  if (!tj) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory (JPEG decoder)");
    goto fail;
  }
  if (tjDecompressHeader3(tj, buf, jlen, &w, &h, &subsamp, &cs) != 0) {
    /* TurboJPEG 2.x refuses headers whose chroma subsampling has no TJSAMP
     * name (e.g. 3x1); libjpeg itself decodes them, and our own SOF parse
     * has the dimensions, so go on with those. */
    const char *msg = tjGetErrorStr2(tj);
    if (!msg || !strstr(msg, "subsampling")) {
      rc = dm_errf(eb, DM_FORMAT, "corrupt JPEG header: %s", msg ? msg : "?");
      goto fail;
    }
    w = s.width;
    h = s.height;
  }
  if (w != s.width || h != s.height) {
    rc = dm_errf(eb, DM_FORMAT, "corrupt JPEG: inconsistent dimensions");
    goto fail;
  }
  if (s.ncomp == 1) {
    pf = TJPF_GRAY;
    ps = 1;
  } else if (s.ncomp == 4) {
    pf = TJPF_CMYK;
    ps = 4;
  } else {
    pf = TJPF_RGB;
    ps = 3;
  }
  sf = pick_scale(w, h, target_short_side);
  sw = TJSCALED(w, sf);
  sh = TJSCALED(h, sf);
  info->scale_num = sf.num;
  info->scale_denom = sf.denom;
  px = dm__alloc_pixels(sw, sh, ps < 3 ? 3 : ps);
  if (!px) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory (%dx%d JPEG)", sw, sh);
    goto fail;
  }
  if (tjDecompress2(tj, buf, jlen, px, sw, sw * ps, sh, pf,
                    TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
    const char *msg = tjGetErrorStr2(tj);
    rc = dm_errf(eb, DM_FORMAT, "%s JPEG: %s",
                 tjGetErrorCode(tj) == TJERR_WARNING ? "truncated or corrupt"
                                                     : "corrupt",
                 msg ? msg : "?");
    goto fail;
  }
  if (ps == 4) {
    uint8_t *shrunk;
    cmyk_to_rgb(px, (size_t)sw * (size_t)sh);
    shrunk = realloc(px, (size_t)sw * (size_t)sh * 3);
    if (shrunk) px = shrunk; /* a failed shrink keeps the larger buffer */
  } else if (ps == 1) {
    gray_to_rgb(px, (size_t)sw * (size_t)sh);
  }
  info->orientation = s.exif ? dm__exif_orientation(s.exif, s.exif_len) : 1;
  tjDestroy(tj);
  out->w = sw;
  out->h = sh;
  out->c = 3;
  out->px = px;
  return DM_OK;
fail:
  free(px);
  if (tj) tjDestroy(tj);
  return rc;
}
