/* model.c: a servable classifier = ONNX file + metadata_props + engine.
 *
 * dm_model_open parses the file, reads the service metadata (defaulting and
 * recording what is missing), checks that the graph is an image classifier
 * dermal can feed (one float image input, one [1,K] output, optionally an
 * out-of-distribution score as a second output), fingerprints the
 * file and builds the engine.  After that the model is immutable; a
 * reference count (C11 atomics) lets the server swap or drop it while
 * requests still hold it.  Predictors are per-thread: an engine session and
 * the input tensor buffer, so a prediction allocates nothing but the decoded
 * image.
 *
 * The prediction path is bytes -> dm_image_decode (EXIF applied, JPEG DCT
 * scaling when the picture is much larger than the input) ->
 * dm_image_to_tensor (metadata preprocessing) -> dm_session_run -> softmax
 * (unless the graph already ends in Softmax) -> classes sorted by
 * probability. */
#include "dermal/model.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/sha256.h"

struct dm_model {
  atomic_int refs;
  dm_onnx_model *onnx;
  dm_engine *engine;
  dm_model_info info;
  char *strings; /* one buffer holding labels/names/paths */
  const char **labels, **names;
  bool nhwc;
  size_t in_numel;
  char gradcam_error[256]; /* why Grad-CAM is unavailable, "" if it is */
};

struct dm_predictor {
  dm_model *m;
  dm_session *s;
  float *input;   /* (3, H, W) or (H, W, 3) */
  float *cam;     /* (h, w) of the last explanation */
  dm_image image; /* the last decoded image, kept for overlays */
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---------- metadata parsing ---------- */

typedef struct sbuf { /* growing string arena for the model's strings */
  char *p;
  size_t n, cap;
} sbuf;

/* Appends s (len bytes) + NUL; returns its offset or (size_t)-1. */
static size_t sb_add(sbuf *b, const char *s, size_t len) {
  if (b->n + len + 1 > b->cap) {
    size_t c = b->cap ? b->cap * 2 : 1024;
    while (c < b->n + len + 1)
      c *= 2;
    char *q = realloc(b->p, c);
    if (!q) return (size_t)-1;
    b->p = q;
    b->cap = c;
  }
  memcpy(b->p + b->n, s, len);
  b->p[b->n + len] = 0;
  size_t off = b->n;
  b->n += len + 1;
  return off;
}

/* Splits v at sep into at most max trimmed items (offsets into b). */
static size_t split(sbuf *b, const char *v, char sep, size_t *offs, size_t max,
                    bool *overflow) {
  size_t n = 0;
  *overflow = false;
  const char *p = v;
  for (;;) {
    const char *e = strchr(p, sep);
    size_t len = e ? (size_t)(e - p) : strlen(p);
    const char *s = p;
    while (len && (*s == ' ' || *s == '\t'))
      s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
      len--;
    if (n == max) {
      *overflow = true;
      return n;
    }
    offs[n] = sb_add(b, s, len);
    if (offs[n] == (size_t)-1) return (size_t)-1;
    n++;
    if (!e) break;
    p = e + 1;
  }
  return n;
}

static bool parse_floats3(const char *v, float out[3]) {
  const char *p = v;
  for (int i = 0; i < 3; i++) {
    char *end;
    errno = 0;
    float f = strtof(p, &end);
    if (errno || end == p || !isfinite(f)) return false;
    out[i] = f;
    p = end;
    while (*p == ' ')
      p++;
    if (i < 2) {
      if (*p != ',') return false;
      p++;
    }
  }
  while (*p == ' ')
    p++;
  return *p == 0;
}

static bool parse_pos_int(const char *v, int *out) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || end == v || x < 1 || x > 16384) return false;
  *out = (int)x;
  return true;
}

static bool parse_float(const char *v, float *out) {
  char *end;
  errno = 0;
  float x = strtof(v, &end);
  if (errno || end == v || !isfinite(x)) return false;
  while (*end == ' ')
    end++;
  *out = x;
  return *end == 0;
}

/* The optional second output: an out-of-distribution score (one float)
 * named by metadata ood_output (default "ood_score"), with its threshold.
 * It must come after the class scores, which Grad-CAM differentiates. */
static dm_err read_ood(dm_model *m, const char *path, dm_errbuf *eb) {
  const char *want = dm_onnx_meta(m->onnx, "ood_output");
  if (dm_engine_n_outputs(m->engine) == 1) {
    if (want)
      return dm_errf(eb, DM_UNSUPPORTED,
                     "%s: metadata ood_output '%s' but the graph has one "
                     "output",
                     path, want);
    return DM_OK;
  }
  const char *name;
  dm_tensor t = dm_engine_output(m->engine, 1, &name);
  if (strcmp(name, want ? want : "ood_score"))
    return dm_errf(eb, DM_UNSUPPORTED,
                   "%s: second output '%s' is not the OOD score '%s' "
                   "(metadata ood_output)",
                   path, name, want ? want : "ood_score");
  int64_t numel = 1;
  for (int i = 0; i < t.rank; i++)
    numel *= t.dims[i];
  if (t.dtype != DM_ONNX_FLOAT || numel != 1)
    return dm_errf(eb, DM_UNSUPPORTED, "%s: OOD output '%s' must be one float",
                   path, name);
  const char *v = dm_onnx_meta(m->onnx, "ood_threshold");
  if (!v || !parse_float(v, &m->info.ood_threshold))
    return dm_errf(eb, DM_UNSUPPORTED,
                   "%s: OOD output '%s' needs metadata ood_threshold (a "
                   "number)%s%s",
                   path, name, v ? ", not " : "", v ? v : "");
  m->info.has_ood = true;
  return DM_OK;
}

static void note_default(char *list, size_t cap, const char *key) {
  size_t n = strlen(list);
  snprintf(list + n, cap - n, "%s%s", n ? "," : "", key);
}

/* ---------- open / release ---------- */

static void model_free(dm_model *m) {
  if (!m) return;
  dm_engine_free(m->engine);
  dm_onnx_free(m->onnx);
  free(m->labels);
  free(m->names);
  free(m->strings);
  free(m);
}

/* The file's SHA-256 is computed on a second thread while the engine is
 * built (hashing 9 MB takes ~45 ms here, as long as the build itself), so a
 * cold start pays max(hash, build), not the sum. */
typedef struct hash_job {
  const char *path;
  char hex[65];
  dm_err rc;
  dm_errbuf eb;
} hash_job;

static void *hash_main(void *arg) {
  hash_job *j = arg;
  j->rc = dm__sha256_file(j->path, j->hex, &j->eb);
  return NULL;
}

dm_err dm_model_open(const char *path, const dm_model_opts *opts,
                     dm_model **out, dm_errbuf *eb) {
  double t0 = now_ms();
  dm_err rc = DM_NOMEM;
  sbuf sb = {0};
  size_t *loff = NULL, *noff = NULL;
  char defaulted[256] = "";
  hash_job hj = {.path = path};
  pthread_t hash_thread;
  bool hashing = false;
  dm_model *m = calloc(1, sizeof *m);
  if (!m) return dm_errf(eb, DM_NOMEM, "out of memory");
  atomic_init(&m->refs, 1);
  dm_model_info *info = &m->info;
  if ((rc = dm_onnx_open(path, &m->onnx, eb))) goto fail;
  hashing = pthread_create(&hash_thread, NULL, hash_main, &hj) == 0;
  if (!hashing) hash_main(&hj); /* no thread: hash inline */
  info->file_bytes = m->onnx->file_bytes;

  /* build, then check that the graph is a classifier dermal can feed */
  const char *meta_target = dm_onnx_meta(m->onnx, "gradcam_target");
  dm_engine_opts eo = {.backend = opts ? opts->backend : DM_BACKEND_ONEDNN,
                       .precision = opts ? opts->precision : DM_PRECISION_FP32,
                       .threads = opts && opts->threads > 0 ? opts->threads : 1,
                       .cam = opts && opts->gradcam,
                       .cam_target = opts && opts->gradcam_target
                                         ? opts->gradcam_target
                                         : meta_target};
  info->gradcam_target_auto = eo.cam && !eo.cam_target;
  rc = dm_engine_new(m->onnx, &eo, &m->engine, eb);
  if (rc && eo.cam) {
    /* A model without a usable Grad-CAM target still classifies: build it
     * plain and report why explanations are unavailable. */
    snprintf(m->gradcam_error, sizeof m->gradcam_error, "%s",
             eb ? eb->msg : "");
    eo.cam = false;
    info->gradcam_target_auto = false;
    rc = dm_engine_new(m->onnx, &eo, &m->engine, eb);
  }
  if (rc) goto fail;
  if (dm_engine_n_inputs(m->engine) != 1 ||
      dm_engine_n_outputs(m->engine) < 1 ||
      dm_engine_n_outputs(m->engine) > 2) {
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "%s: a classifier has one input and one output, plus "
                 "optionally an OOD score (this model: %zu and %zu)",
                 path, dm_engine_n_inputs(m->engine),
                 dm_engine_n_outputs(m->engine));
    goto fail;
  }
  if ((rc = read_ood(m, path, eb))) goto fail;
  dm_tensor in = dm_engine_input(m->engine, 0, NULL);
  dm_tensor outp = dm_engine_output(m->engine, 0, NULL);
  bool nchw = in.rank == 4 && in.dims[0] == 1 && in.dims[1] == 3;
  bool nhwc = in.rank == 4 && in.dims[0] == 1 && in.dims[3] == 3;
  if (in.dtype != DM_ONNX_FLOAT || (!nchw && !nhwc)) {
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "%s: input must be float32 [1,3,H,W] or [1,H,W,3]", path);
    goto fail;
  }
  int64_t k = outp.rank == 2 && outp.dims[0] == 1 ? outp.dims[1]
              : outp.rank == 1                    ? outp.dims[0]
                                                  : -1;
  if (outp.dtype != DM_ONNX_FLOAT || k < 1 || k > DM_MAX_CLASSES) {
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "%s: output must be float32 [1,K] with K <= %d", path,
                 DM_MAX_CLASSES);
    goto fail;
  }
  info->n_classes = (size_t)k;

  /* layout: metadata wins when it agrees with the shape */
  const char *lay = dm_onnx_meta(m->onnx, "layout");
  if (lay && !strcmp(lay, "NHWC") && nhwc)
    m->nhwc = true;
  else if (lay && !strcmp(lay, "NCHW") && nchw)
    m->nhwc = false;
  else if (lay) {
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "%s: metadata layout '%s' contradicts "
                 "the input shape",
                 path, lay);
    goto fail;
  } else {
    m->nhwc = !nchw;
    note_default(defaulted, sizeof defaulted, "layout");
  }
  int gh = (int)(m->nhwc ? in.dims[1] : in.dims[2]);
  int gw = (int)(m->nhwc ? in.dims[2] : in.dims[3]);
  m->in_numel = (size_t)3 * (size_t)gh * (size_t)gw;

  dm_preproc *pp = &info->preproc;
  dm_preproc_init(pp);
  pp->nhwc = m->nhwc;
  const char *v;
  if ((v = dm_onnx_meta(m->onnx, "input_size"))) {
    int h = 0, w = 0;
    const char *x = strchr(v, 'x');
    bool ok = x ? sscanf(v, "%dx%d", &h, &w) == 2 : parse_pos_int(v, &h);
    if (!x) w = h;
    if (!ok || h != gh || w != gw) {
      rc = dm_errf(eb, DM_UNSUPPORTED,
                   "%s: metadata input_size '%s' contradicts the input %dx%d",
                   path, v, gh, gw);
      goto fail;
    }
  } else {
    note_default(defaulted, sizeof defaulted, "input_size");
  }
  pp->size_h = gh;
  pp->size_w = gw;
  v = dm_onnx_meta(m->onnx, "resize");
  if (!v) {
    note_default(defaulted, sizeof defaulted, "resize");
    pp->resize_mode = DM_RESIZE_SHORTER_CROP;
  } else if (!strcmp(v, "direct")) {
    pp->resize_mode = DM_RESIZE_DIRECT;
  } else if (!strcmp(v, "shorter_crop")) {
    pp->resize_mode = DM_RESIZE_SHORTER_CROP;
  } else {
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "%s: metadata resize '%s' (direct or "
                 "shorter_crop)",
                 path, v);
    goto fail;
  }
  int shorter = (gh < gw ? gh : gw) * 256 / 224;
  if ((v = dm_onnx_meta(m->onnx, "resize_shorter"))) {
    if (!parse_pos_int(v, &shorter)) {
      rc = dm_errf(eb, DM_UNSUPPORTED, "%s: metadata resize_shorter '%s'", path,
                   v);
      goto fail;
    }
  } else if (pp->resize_mode == DM_RESIZE_SHORTER_CROP) {
    note_default(defaulted, sizeof defaulted, "resize_shorter");
  }
  pp->resize = shorter;
  static const char *const fkeys[2] = {"mean", "std"};
  for (int i = 0; i < 2; i++) {
    float *dst = i ? pp->std : pp->mean;
    if ((v = dm_onnx_meta(m->onnx, fkeys[i]))) {
      if (!parse_floats3(v, dst) ||
          (i && (dst[0] <= 0 || dst[1] <= 0 || dst[2] <= 0))) {
        rc = dm_errf(eb, DM_UNSUPPORTED, "%s: metadata %s '%s' (three numbers)",
                     path, fkeys[i], v);
        goto fail;
      }
    } else {
      note_default(defaulted, sizeof defaulted, fkeys[i]);
    }
  }
  v = dm_onnx_meta(m->onnx, "color");
  if (v && !strcmp(v, "BGR")) {
    pp->bgr = true;
  } else if (v && strcmp(v, "RGB")) {
    rc = dm_errf(eb, DM_UNSUPPORTED, "%s: metadata color '%s'", path, v);
    goto fail;
  } else if (!v) {
    note_default(defaulted, sizeof defaulted, "color");
  }
  v = dm_onnx_meta(m->onnx, "output");
  if (v && !strcmp(v, "probabilities")) {
    info->outputs_probabilities = true;
  } else if (v && strcmp(v, "logits")) {
    rc = dm_errf(eb, DM_UNSUPPORTED, "%s: metadata output '%s'", path, v);
    goto fail;
  } else if (!v) {
    const dm_onnx_graph *g = &m->onnx->graph;
    info->outputs_probabilities =
        g->n_nodes > 0 && !strcmp(g->nodes[g->n_nodes - 1].op_type, "Softmax");
    note_default(defaulted, sizeof defaulted, "output");
  }

  /* labels and names */
  loff = calloc(info->n_classes + 1, sizeof *loff);
  noff = calloc(info->n_classes + 1, sizeof *noff);
  m->labels = calloc(info->n_classes + 1, sizeof *m->labels);
  m->names = calloc(info->n_classes + 1, sizeof *m->names);
  if (!loff || !noff || !m->labels || !m->names) goto nomem;
  bool over;
  size_t nl = 0, nn = 0;
  if ((v = dm_onnx_meta(m->onnx, "labels"))) {
    nl = split(&sb, v, ',', loff, info->n_classes, &over);
    if (nl == (size_t)-1) goto nomem;
    if (over || nl != info->n_classes) {
      rc = dm_errf(eb, DM_UNSUPPORTED,
                   "%s: metadata labels has %s%zu entries, the output %zu",
                   path, over ? "more than " : "", nl, info->n_classes);
      goto fail;
    }
  } else {
    note_default(defaulted, sizeof defaulted, "labels");
    for (size_t i = 0; i < info->n_classes; i++) {
      char tmp[32];
      int len = snprintf(tmp, sizeof tmp, "class%zu", i);
      if ((loff[i] = sb_add(&sb, tmp, (size_t)len)) == (size_t)-1) goto nomem;
    }
    nl = info->n_classes;
  }
  if ((v = dm_onnx_meta(m->onnx, "label_names"))) {
    nn = split(&sb, v, '|', noff, info->n_classes, &over);
    if (nn == (size_t)-1) goto nomem;
    if (over || nn != info->n_classes) {
      rc = dm_errf(eb, DM_UNSUPPORTED,
                   "%s: metadata label_names has %zu entries, the output %zu",
                   path, nn, info->n_classes);
      goto fail;
    }
  } else {
    note_default(defaulted, sizeof defaulted, "label_names");
    memcpy(noff, loff, info->n_classes * sizeof *noff);
  }
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  const char *nm = dm_onnx_meta(m->onnx, "name");
  const char *ver = dm_onnx_meta(m->onnx, "model_version");
  const char *gt = dm_engine_cam_target(m->engine);
  if (!meta_target) note_default(defaulted, sizeof defaulted, "gradcam_target");
  size_t o_path = sb_add(&sb, path, strlen(path));
  size_t o_name =
      nm ? sb_add(&sb, nm, strlen(nm)) : sb_add(&sb, base, strlen(base));
  size_t o_ver = sb_add(&sb, ver ? ver : "", ver ? strlen(ver) : 0);
  size_t o_gt = sb_add(&sb, gt, strlen(gt));
  size_t o_def = sb_add(&sb, defaulted, strlen(defaulted));
  const char *om = dm_onnx_meta(m->onnx, "ood_method");
  size_t o_om = sb_add(&sb, om ? om : "", om ? strlen(om) : 0);
  if (o_path == (size_t)-1 || o_name == (size_t)-1 || o_ver == (size_t)-1 ||
      o_gt == (size_t)-1 || o_def == (size_t)-1 || o_om == (size_t)-1)
    goto nomem;
  m->strings = sb.p; /* final: no more appends, pointers are stable now */
  sb.p = NULL;
  for (size_t i = 0; i < info->n_classes; i++) {
    m->labels[i] = m->strings + loff[i];
    m->names[i] = m->strings + noff[i];
  }
  info->labels = m->labels;
  info->names = m->names;
  info->path = m->strings + o_path;
  info->name = m->strings + o_name;
  info->version = m->strings + o_ver;
  info->gradcam_target = m->strings + o_gt;
  info->gradcam_error = m->gradcam_error;
  info->defaulted = m->strings + o_def;
  info->ood_method = m->strings + o_om;
  if (hashing) pthread_join(hash_thread, NULL);
  hashing = false;
  if (hj.rc) {
    rc = dm_errf(eb, hj.rc, "%s", hj.eb.msg);
    goto fail;
  }
  memcpy(info->sha256, hj.hex, sizeof info->sha256);
  info->load_ms = now_ms() - t0;
  free(loff);
  free(noff);
  *out = m;
  return DM_OK;
nomem:
  rc = dm_errf(eb, DM_NOMEM, "out of memory opening %s", path);
fail:
  if (hashing) pthread_join(hash_thread, NULL);
  free(sb.p);
  free(loff);
  free(noff);
  model_free(m);
  return rc;
}

void dm_model_acquire(dm_model *m) { atomic_fetch_add(&m->refs, 1); }

void dm_model_release(dm_model *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1) model_free(m);
}

const dm_model_info *dm_model_get_info(const dm_model *m) { return &m->info; }
const dm_engine *dm_model_engine(const dm_model *m) { return m->engine; }

/* ---------- prediction ---------- */

dm_err dm_predictor_new(dm_model *m, dm_predictor **out, dm_errbuf *eb) {
  dm_predictor *p = calloc(1, sizeof *p);
  if (!p) return dm_errf(eb, DM_NOMEM, "out of memory");
  p->input =
      aligned_alloc(64, (m->in_numel * sizeof(float) + 63) & ~(size_t)63);
  dm_err rc;
  if (!p->input) {
    rc = dm_errf(eb, DM_NOMEM, "out of memory");
    goto fail;
  }
  if ((rc = dm_session_new(m->engine, &p->s, eb))) goto fail;
  dm_model_acquire(m);
  p->m = m;
  *out = p;
  return DM_OK;
fail:
  free(p->input);
  free(p);
  return rc;
}

void dm_predictor_free(dm_predictor *p) {
  if (!p) return;
  dm_session_free(p->s);
  free(p->input);
  free(p->cam);
  dm_image_free(&p->image);
  dm_model_release(p->m);
  free(p);
}

/* Preprocesses im, runs the engine (with the Grad-CAM tail when cr is not
 * NULL) and fills out from the scores. */
static dm_err run(dm_predictor *p, const dm_image *im, dm_prediction *out,
                  int cam_class, dm_cam_result *cr, dm_errbuf *eb) {
  const dm_model *m = p->m;
  double t0 = now_ms();
  dm_err rc = dm_image_to_tensor(im, &m->info.preproc, p->input, eb);
  if (rc) return rc;
  double t1 = now_ms();
  dm_tensor x = dm_engine_input(m->engine, 0, NULL);
  x.data = p->input;
  rc = cr ? dm_session_run_cam(p->s, &x, 1, cam_class, cr, eb)
          : dm_session_run(p->s, &x, 1, eb);
  if (rc) return rc;
  double t2 = now_ms();
  if (cr) t2 -= cr->ms_tail; /* reported as ms_cam by the caller */
  const float *y = dm_session_output(p->s, 0).data;
  size_t n = m->info.n_classes;
  out->n_classes = n;
  out->width = im->w;
  out->height = im->h;
  out->ms_preprocess = t1 - t0;
  out->ms_inference = t2 - t1;
  out->has_ood = m->info.has_ood;
  out->in_distribution = true;
  if (out->has_ood) {
    out->ood_score = *(const float *)dm_session_output(p->s, 1).data;
    /* NaN (a broken input) is not in distribution either */
    out->in_distribution = out->ood_score <= m->info.ood_threshold;
  }
  float mx = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    out->logit[i] = y[i];
    if (y[i] > mx) mx = y[i];
  }
  if (m->info.outputs_probabilities) {
    for (size_t i = 0; i < n; i++)
      out->prob[i] = y[i];
  } else {
    double sum = 0;
    for (size_t i = 0; i < n; i++)
      sum += exp((double)(y[i] - mx));
    for (size_t i = 0; i < n; i++)
      out->prob[i] = (float)(exp((double)(y[i] - mx)) / sum);
  }
  /* insertion sort by probability, ties by index: n is small */
  for (size_t i = 0; i < n; i++) {
    size_t j = i;
    while (j > 0 && out->prob[out->order[j - 1]] < out->prob[i]) {
      out->order[j] = out->order[j - 1];
      j--;
    }
    out->order[j] = (int)i;
  }
  return DM_OK;
}

dm_err dm_predict_image(dm_predictor *p, const dm_image *im, dm_prediction *out,
                        dm_errbuf *eb) {
  return run(p, im, out, -1, NULL, eb);
}

/* Decodes into p->image (replacing the previous one).  JPEG DCT scaling
 * keeps the shorter side >= 2 * target: the model's resize target, or at
 * least 384 when the image will carry an overlay (so a 768 px heatmap is
 * drawn on real pixels, not upscaled ones). */
static dm_err decode(dm_predictor *p, const void *bytes, size_t len,
                     const dm_image_limits *lim, int min_target,
                     dm_prediction *out, dm_errbuf *eb) {
  const dm_preproc *pp = &p->m->info.preproc;
  int target = pp->resize_mode == DM_RESIZE_SHORTER_CROP
                   ? pp->resize
                   : (pp->size_h > pp->size_w ? pp->size_h : pp->size_w);
  if (target < min_target) target = min_target;
  double t0 = now_ms();
  memset(&out->image, 0, sizeof out->image);
  dm_image_free(&p->image);
  dm_err rc =
      dm_image_decode(bytes, len, lim, target, &p->image, &out->image, eb);
  out->ms_decode = now_ms() - t0;
  return rc;
}

dm_err dm_predict(dm_predictor *p, const void *bytes, size_t len,
                  const dm_image_limits *lim, dm_prediction *out,
                  dm_errbuf *eb) {
  dm_err rc = decode(p, bytes, len, lim, 0, out, eb);
  if (!rc) rc = run(p, &p->image, out, -1, NULL, eb);
  return rc;
}

dm_err dm_predict_explain(dm_predictor *p, const void *bytes, size_t len,
                          const dm_image_limits *lim, int class_index,
                          dm_cam_method method, dm_prediction *out,
                          dm_explanation *ex, dm_errbuf *eb) {
  if (!p->m->info.gradcam_target[0])
    return dm_errf(eb, DM_UNSUPPORTED, "the model was opened without Grad-CAM");
  if (class_index >= (int)p->m->info.n_classes)
    return dm_errf(eb, DM_ARG, "class %d out of range", class_index);
  dm_err rc = decode(p, bytes, len, lim, 384, out, eb);
  if (rc) return rc;
  dm_cam_result cr;
  if ((rc = run(p, &p->image, out, class_index, &cr, eb))) return rc;
  double t1 = now_ms();
  size_t n = (size_t)(cr.h * cr.w);
  float *cam = realloc(p->cam, n * sizeof *cam);
  if (!cam) return dm_errf(eb, DM_NOMEM, "out of memory");
  p->cam = cam;
  if ((rc = dm_cam_compute(&cr, method, cam, eb))) return rc;
  /* the CAM cost: the tail backward inside the run plus the map itself */
  ex->ms_cam = cr.ms_tail + (now_ms() - t1);
  ex->class_index = cr.class_index;
  ex->method = method;
  ex->cam_h = (int)cr.h;
  ex->cam_w = (int)cr.w;
  ex->cam = cam;
  ex->image = &p->image;
  return DM_OK;
}

int dm_model_class_index(const dm_model *m, const char *label) {
  for (size_t i = 0; i < m->info.n_classes; i++)
    if (!strcmp(m->labels[i], label)) return (int)i;
  return -1;
}

char *dm_prediction_json(const dm_model *m, const dm_prediction *r,
                         const char *image, int top_k) {
  size_t n = r->n_classes;
  size_t k = top_k <= 0 || (size_t)top_k > n ? n : (size_t)top_k;
  json_t *o = json_object(), *top = json_array(), *probs = json_object(),
         *ms = json_object();
  char *s = NULL;
  if (!o || !top || !probs || !ms) goto out;
  if (image) json_object_set_new(o, "image", json_string(image));
  json_object_set_new(o, "label", json_string(m->labels[r->order[0]]));
  for (size_t i = 0; i < k; i++) {
    int c = r->order[i];
    json_t *e = json_pack("{s:s, s:s, s:f}", "label", m->labels[c], "name",
                          m->names[c], "probability", (double)r->prob[c]);
    if (!e || json_array_append_new(top, e)) goto out;
  }
  for (size_t i = 0; i < n; i++)
    json_object_set_new(probs, m->labels[i], json_real((double)r->prob[i]));
  json_object_set_new(ms, "decode", json_real(r->ms_decode));
  json_object_set_new(ms, "preprocess", json_real(r->ms_preprocess));
  json_object_set_new(ms, "inference", json_real(r->ms_inference));
  json_object_set(o, "top", top);
  json_object_set(o, "probabilities", probs);
  json_object_set_new(o, "in_distribution",
                      r->has_ood ? json_boolean(r->in_distribution)
                                 : json_null());
  json_object_set_new(o, "ood_score",
                      r->has_ood && isfinite(r->ood_score)
                          ? json_real((double)r->ood_score)
                          : json_null());
  json_object_set_new(o, "ood_threshold",
                      r->has_ood ? json_real((double)m->info.ood_threshold)
                                 : json_null());
  json_object_set(o, "ms", ms);
  s = json_dumps(o,
                 JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
out:
  json_decref(o);
  json_decref(top);
  json_decref(probs);
  json_decref(ms);
  return s;
}
