/* quantize.c: `dermal quantize MODEL --calib DIR -o OUT.onnx`, static
 * post-training quantization into a standard ONNX QDQ graph.
 *
 * Purpose: the int8 model is an ordinary ONNX file that ONNX Runtime, dermal
 * and any QDQ-aware runtime execute: QuantizeLinear/DequantizeLinear pairs on
 * the activations that feed Conv/Gemm/MatMul/Add/pooling, DequantizeLinear on
 * int8 weight initializers (symmetric, per output channel unless
 * --per-tensor-weights; in [-63, 63] with --reduce-range, for CPUs without
 * VNNI) and int32 biases (scale = activation scale * weight scale, zero
 * point 0).  The *file's* graph is rewritten (its nodes, in its
 * order, with QDQ inserted), never the engine's optimised IR: BatchNorm
 * folding and fusions are the runtime's business.
 *
 * Calibration: the images in DIR (JPEG/PNG/WebP, sorted by name, the first N)
 * go through the serving path's decode and preprocessing (dm_model's
 * metadata: dm_image_decode + dm_image_to_tensor), then the fp32 model with
 * every candidate activation kept (dm_engine_opts.keep).  Ranges per tensor:
 *   minmax      the observed minimum and maximum;
 *   percentile  the P-th / (100-P)-th percentiles (default P = 99.999) of a
 *               2048-bin histogram (second pass over the images);
 *   entropy     the threshold minimising the KL divergence between the
 *               histogram and its 8-bit quantization (TensorRT's method; a
 *               histogram of |x|, or of x when x >= 0).
 * Every range contains 0 (so zero padding is exact).  Activations are uint8
 * asymmetric per tensor (--act-type int8 for signed).
 *
 * Bias correction (default on): the rounding error of a channel's int8
 * weights shifts that channel's mean output by sum_k dW[c,k] * E[x_k]; the
 * calibration means E[x_k] of the input channels give the shift, which is
 * subtracted from the bias before the bias is quantized.
 *
 * Mixed precision (--fp32-layers auto, default): each quantizable node is
 * quantized alone (everything else fp32) and run on the first
 * --sensitivity-count calibration images; its logit error relative to fp32
 * is its sensitivity.  The most sensitive nodes stay fp32 (no QDQ on their
 * weights and inputs) as long as the file stays within max_ratio of the
 * fp32 file.  The choice is written to metadata_props (quant_fp32_layers).
 * docs/quantization.md has the measurements behind both.
 *
 * Afterwards (unless --no-verify) the written model is opened through
 * dm_model like `dermal predict` would, and its top-1 class compared with the
 * fp32 model's on the calibration images; below --min-agreement it is not
 * kept.  OUT is only ever replaced by renaming a finished, verified file
 * (OUT.tmp); the intermediate files (OUT.all-int8.tmp, OUT.sens.tmp) are
 * removed on every exit, and on SIGINT/SIGTERM.
 *
 * Invariants: the output graph is topologically sorted (weight DQ nodes
 * first, each activation's QDQ pair right after its producer), every name it
 * introduces is unique, all metadata_props of the source are copied (keys
 * quant_* replaced), calibration facts are added.
 *
 * Threading: single-threaded command; the engine uses --threads intra-op
 * threads. */
#include "quantize.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dermal/engine.h"
#include "dermal/image.h"
#include "dermal/model.h"
#include "dermal/onnx.h"
#include "dermal/onnxwrite.h"
#include "util.h"

#define HBINS 2048

/* The size budget of issue 6: the int8 file weighs at most 30 % of the fp32
 * one; --fp32-layers auto keeps layers in fp32 only within it. */
static const double max_ratio = 0.30;

static const char help[] =
    "usage: dermal quantize MODEL --calib DIR -o OUT.onnx [--calib-count N]\n"
    "         [--method minmax|percentile|entropy] [--percentile P]\n"
    "         [--per-tensor-weights] [--reduce-range] [--act-type uint8|int8]\n"
    "         [--fp32-layers auto|none|NAME,...] [--fp32-macs PCT]\n"
    "         [--sensitivity-count N]\n"
    "         [--no-bias-correction]\n"
    "         [--backend onednn|ref] [--threads N (default 1)]\n"
    "         [--min-agreement PCT (default 80)] [--no-verify]\n"
    "  Static post-training quantization to an ONNX QDQ model: int8 weights\n"
    "  (symmetric, per output channel unless --per-tensor-weights), int32\n"
    "  biases corrected for the mean shift the weight rounding causes, 8-bit\n"
    "  activations per tensor calibrated on the first N (default 100)\n"
    "  images of DIR (JPEG/PNG/WebP) preprocessed as in serving.  --method:\n"
    "  how activation ranges are chosen (default minmax; percentile uses\n"
    "  --percentile, default 99.999).  --fp32-layers: nodes left in fp32;\n"
    "  auto (default) measures each node's sensitivity on the first\n"
    "  --sensitivity-count (default 50) calibration images and keeps the\n"
    "  most sensitive in fp32 within 30 % of the fp32 file size and\n"
    "  --fp32-macs (default 5) percent of the model's multiply-accumulates,\n"
    "  so that int8 stays fast; NAME is a node name, or the name of its\n"
    "  output or weight.  Then reports the\n"
    "  top-1 agreement of OUT with MODEL on the calibration images and\n"
    "  writes OUT only if it reaches --min-agreement percent (--no-verify:\n"
    "  skip; OUT is replaced only by a finished file).  A model that is\n"
    "  already quantized is refused.  --reduce-range: weights in [-63, 63] (7 "
    "bits),\n"
    "  for CPUs without VNNI (plain AVX2), whose int8 convolutions would\n"
    "  saturate on 8-bit weights: the engine runs those convs dequantized\n"
    "  instead, so only a 7-bit file is faster than fp32 there.  MODEL may\n"
    "  also be given as --model M.\n";

typedef enum { M_MINMAX, M_PERCENTILE, M_ENTROPY } method;

/* An activation tensor to quantize. */
typedef struct qact {
  const char *name;
  int producer;   /* file node index, -1 for a graph input */
  bool usable;    /* float, seen in the engine */
  float min, max; /* pass 1 */
  double hlo, hw; /* pass 2 histogram: first edge, bin width */
  uint64_t *hist; /* HBINS */
  double *csum;   /* (nch) per-channel sums over axis 1, pass 1 */
  int64_t nch;    /* channels (dims[1]), 0 when rank < 2 */
  double cnt;     /* values summed per channel */
  int64_t h, w;   /* spatial dims (rank 3: w = 1; rank 4), compute costs */
  float scale;
  int zp;
  const char *q_out, *dq_out, *s_name, *z_name; /* names in the output */
} qact;

/* A weight or bias slot of a node that is quantized. */
typedef struct qslot {
  int node, input; /* file node, input position */
  int init;        /* initializer index */
  bool bias;       /* int32 bias, else int8 weight */
  int axis;        /* -1 per-tensor */
  int act;         /* bias: index of the activation feeding input 0 */
  int wslot;       /* bias: index of the weight slot of the same node */
  float *scale;    /* per channel (1 when per-tensor) */
  int64_t n_scale;
  float *corr; /* weight: (c_out) bias correction, subtracted from the float
                  bias before it is quantized; NULL: none */
  void *q;     /* int8 or int32 data */
  const char *dq_out, *q_name, *s_name, *z_name;
} qslot;

typedef struct ctx {
  const dm_onnx_model *m;
  const dm_onnx_graph *g;
  method meth;
  double pct;
  bool per_tensor, act_int8;
  bool reduce_range;     /* weights in [-63, 63]: 7 bits (--reduce-range) */
  bool bias_corr;        /* on unless --no-bias-correction */
  double fp32_macs;      /* --fp32-macs: share of the MACs auto may keep */
  unsigned char *qnode;  /* (g->n_nodes) 1: quantized, 0: left in fp32 */
  const char *fp32_spec; /* --fp32-layers: "auto", "none" or names */
  char *fp32_list;       /* the nodes left in fp32, for the metadata */
  /* sensitivity analysis (--fp32-layers auto): the first max_sens
   * calibration inputs and their fp32 outputs */
  float *sens_in;  /* (n_sens, in_numel) */
  float *sens_ref; /* (n_sens, out_numel) */
  int n_sens, max_sens;
  int64_t in_numel, out_numel;
  qact *acts;
  int n_acts;
  qslot *slots;
  int n_slots;
  char **strs; /* every name we allocate (checked by name_taken), freed */
  size_t n_strs, cap_strs;
  void **bufs; /* other allocations tied to the output graph, freed */
  size_t n_bufs, cap_bufs;
  bool tty;
} ctx;

/* ---------- small helpers ---------- */

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static char *
sfmt(ctx *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  if (c->n_strs == c->cap_strs) {
    size_t nc = c->cap_strs ? c->cap_strs * 2 : 256;
    char **q = realloc(c->strs, nc * sizeof *q);
    if (!q) {
      free(s);
      return NULL;
    }
    c->strs = q;
    c->cap_strs = nc;
  }
  c->strs[c->n_strs++] = s;
  return s;
}

static int find_init(const dm_onnx_graph *g, const char *name) {
  for (size_t i = 0; i < g->n_initializers; i++)
    if (!strcmp(g->initializers[i].name, name)) return (int)i;
  return -1;
}

static int find_producer(const dm_onnx_graph *g, const char *name) {
  for (size_t i = 0; i < g->n_nodes; i++)
    for (size_t k = 0; k < g->nodes[i].n_outputs; k++)
      if (!strcmp(g->nodes[i].outputs[k], name)) return (int)i;
  return -1;
}

static bool name_taken(const ctx *c, const char *name) {
  const dm_onnx_graph *g = c->g;
  if (find_init(g, name) >= 0 || find_producer(g, name) >= 0) return true;
  for (size_t i = 0; i < g->n_inputs; i++)
    if (!strcmp(g->inputs[i].name, name)) return true;
  for (size_t i = 0; i < c->n_strs; i++)
    if (!strcmp(c->strs[i], name)) return true;
  return false;
}

/* A fresh tensor name: base+suffix, or base+suffix+"_N" when taken. */
static const char *uniq(ctx *c, const char *base, const char *suffix) {
  char *tmp = NULL;
  for (int k = 0; k < 1000; k++) {
    free(tmp);
    tmp = NULL;
    size_t n = strlen(base) + strlen(suffix) + 16;
    tmp = malloc(n);
    if (!tmp) return NULL;
    if (k)
      snprintf(tmp, n, "%s%s_%d", base, suffix, k);
    else
      snprintf(tmp, n, "%s%s", base, suffix);
    if (!name_taken(c, tmp)) {
      const char *r = sfmt(c, "%s", tmp);
      free(tmp);
      return r;
    }
  }
  free(tmp);
  return NULL;
}

static bool is_default_domain(const dm_onnx_node *n) {
  return !n->domain[0] || !strcmp(n->domain, "ai.onnx");
}

static bool is_target(const dm_onnx_node *n) {
  static const char *const ops[] = {"Conv",
                                    "Gemm",
                                    "MatMul",
                                    "Add",
                                    "MaxPool",
                                    "AveragePool",
                                    "GlobalAveragePool",
                                    "GlobalMaxPool",
                                    NULL};
  if (!is_default_domain(n)) return false;
  for (const char *const *o = ops; *o; o++)
    if (!strcmp(n->op_type, *o)) return true;
  return false;
}

static int64_t attr_int(const dm_onnx_node *n, const char *name, int64_t def) {
  const dm_onnx_attr *a = dm_onnx_attr_find(n, name);
  return a && a->type == DM_ONNX_ATTR_INT ? a->i : def;
}

static float attr_float(const dm_onnx_node *n, const char *name, float def) {
  const dm_onnx_attr *a = dm_onnx_attr_find(n, name);
  return a && a->type == DM_ONNX_ATTR_FLOAT ? a->f : def;
}

static int act_index(const ctx *c, const char *name) {
  for (int i = 0; i < c->n_acts; i++)
    if (!strcmp(c->acts[i].name, name)) return i;
  return -1;
}

/* A constant in the file: an initializer or a Constant node's output. */
static bool is_const_name(const dm_onnx_graph *g, const char *name) {
  if (find_init(g, name) >= 0) return true;
  int p = find_producer(g, name);
  return p >= 0 && !strcmp(g->nodes[p].op_type, "Constant");
}

static dm_err add_act(ctx *c, const char *name) {
  if (!name[0] || is_const_name(c->g, name) || act_index(c, name) >= 0)
    return DM_OK;
  qact *q = realloc(c->acts, (size_t)(c->n_acts + 1) * sizeof *q);
  if (!q) return DM_NOMEM;
  c->acts = q;
  memset(&q[c->n_acts], 0, sizeof *q);
  q[c->n_acts].name = name;
  q[c->n_acts].producer = find_producer(c->g, name);
  q[c->n_acts].min = INFINITY;
  q[c->n_acts].max = -INFINITY;
  c->n_acts++;
  return DM_OK;
}

static dm_err add_slot(ctx *c, int node, int input, int init, bool bias,
                       int axis) {
  qslot *q = realloc(c->slots, (size_t)(c->n_slots + 1) * sizeof *q);
  if (!q) return DM_NOMEM;
  c->slots = q;
  memset(&q[c->n_slots], 0, sizeof *q);
  q[c->n_slots].node = node;
  q[c->n_slots].input = input;
  q[c->n_slots].init = init;
  q[c->n_slots].bias = bias;
  q[c->n_slots].axis = axis;
  q[c->n_slots].act = -1;
  q[c->n_slots].wslot = -1;
  c->n_slots++;
  return DM_OK;
}

/* Float initializer usable as a weight of rank >= min_rank. */
static int weight_init(const dm_onnx_graph *g, const dm_onnx_node *n, size_t k,
                       int min_rank) {
  if (k >= n->n_inputs || !n->inputs[k][0]) return -1;
  int i = find_init(g, n->inputs[k]);
  if (i < 0) return -1;
  const dm_onnx_tensor *t = &g->initializers[i];
  return t->dtype == DM_ONNX_FLOAT && t->ndim >= min_rank && t->numel > 0 ? i
                                                                          : -1;
}

/* ---------- the plan: which tensors get quantized ---------- */

static dm_err plan(ctx *c) {
  const dm_onnx_graph *g = c->g;
  dm_err rc = DM_OK;
  for (size_t ni = 0; ni < g->n_nodes && !rc; ni++) {
    const dm_onnx_node *n = &g->nodes[ni];
    if (!is_target(n)) continue;
    const char *op = n->op_type;
    int node = (int)ni;
    if (!strcmp(op, "Conv")) {
      if ((rc = add_act(c, n->inputs[0]))) break;
      int w = weight_init(g, n, 1, 3);
      if (w < 0) continue; /* dynamic weights: left in float */
      int ws = c->n_slots;
      if ((rc = add_slot(c, node, 1, w, false, c->per_tensor ? -1 : 0))) break;
      int b = weight_init(g, n, 2, 1);
      if (b >= 0 && g->initializers[b].ndim == 1) {
        if ((rc = add_slot(c, node, 2, b, true, c->per_tensor ? -1 : 0))) break;
        c->slots[c->n_slots - 1].wslot = ws;
      }
    } else if (!strcmp(op, "Gemm")) {
      if (attr_int(n, "transA", 0) == 0 && (rc = add_act(c, n->inputs[0])))
        break;
      int w = weight_init(g, n, 1, 2);
      if (w < 0) {
        if ((rc = add_act(c, n->inputs[1]))) break;
        continue;
      }
      int ws = c->n_slots;
      int axis = attr_int(n, "transB", 0) ? 0 : 1;
      if ((rc = add_slot(c, node, 1, w, false, c->per_tensor ? -1 : axis)))
        break;
      int b = weight_init(g, n, 2, 1);
      int64_t nout = g->initializers[w].dims[axis];
      if (b >= 0 && g->initializers[b].ndim == 1 &&
          g->initializers[b].dims[0] == nout &&
          attr_float(n, "alpha", 1.f) == 1.f &&
          attr_float(n, "beta", 1.f) == 1.f && attr_int(n, "transA", 0) == 0) {
        if ((rc = add_slot(c, node, 2, b, true, c->per_tensor ? -1 : 0))) break;
        c->slots[c->n_slots - 1].wslot = ws;
      }
    } else if (!strcmp(op, "MatMul")) {
      if ((rc = add_act(c, n->inputs[0]))) break;
      int w = weight_init(g, n, 1, 2);
      if (w >= 0 && g->initializers[w].ndim == 2) {
        if ((rc = add_slot(c, node, 1, w, false, c->per_tensor ? -1 : 1)))
          break;
      } else if ((rc = add_act(c, n->inputs[1]))) {
        break;
      }
    } else { /* Add, pooling */
      for (size_t k = 0; k < n->n_inputs && !rc; k++)
        rc = add_act(c, n->inputs[k]);
    }
  }
  return rc;
}

/* ---------- calibration ---------- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool image_ext(const char *name) {
  const char *dot = strrchr(name, '.');
  return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
                 !strcasecmp(dot, ".png") || !strcasecmp(dot, ".webp"));
}

/* Sorted image paths in dir, at most max. */
static char **list_images(const char *dir, int max, int *n) {
  DIR *d = opendir(dir);
  *n = 0;
  if (!d) return NULL;
  char **v = NULL;
  int cnt = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.' || !image_ext(e->d_name)) continue;
    if (cnt == cap) {
      cap = cap ? cap * 2 : 256;
      char **q = realloc(v, (size_t)cap * sizeof *q);
      if (!q) break;
      v = q;
    }
    size_t len = strlen(dir) + strlen(e->d_name) + 2;
    v[cnt] = malloc(len);
    if (!v[cnt]) break;
    snprintf(v[cnt], len, "%s/%s", dir, e->d_name);
    cnt++;
  }
  closedir(d);
  if (v) qsort(v, (size_t)cnt, sizeof *v, cmp_str);
  for (int i = max; i < cnt; i++)
    free(v[i]);
  *n = cnt < max ? cnt : max;
  return v;
}

static void progress(const ctx *c, const char *what, int done, int total) {
  if (!c->tty || total <= 0) return;
  int width = 30, fill = (int)((long)done * width / total);
  char bar[64];
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[width] = 0;
  fprintf(stderr, "\r%-22s [%s] %d/%d", what, bar, done, total);
  if (done == total) fputc('\n', stderr);
  fflush(stderr);
}

/* Decodes path and writes the model input into buf (preprocessing of m). */
static dm_err load_input(const char *path, const dm_model_info *info,
                         float *buf, dm_image *im_out, dm_errbuf *eb) {
  char err[256];
  size_t len = 0;
  void *bytes =
      dm_cli_read_file(path, DM_IMAGE_DEFAULT_MAX_BYTES, &len, err, sizeof err);
  if (!bytes) return dm_errf(eb, DM_IO, "%s: %s", path, err);
  const dm_preproc *pp = &info->preproc;
  int target = pp->resize_mode == DM_RESIZE_SHORTER_CROP
                   ? pp->resize
                   : (pp->size_h > pp->size_w ? pp->size_h : pp->size_w);
  dm_image im = {0};
  dm_err rc = dm_image_decode(bytes, len, NULL, target, &im, NULL, eb);
  free(bytes);
  if (rc) return rc;
  if (buf) rc = dm_image_to_tensor(&im, pp, buf, eb);
  if (!rc && im_out)
    *im_out = im;
  else
    dm_image_free(&im);
  return rc;
}

static int argmax(const float *x, int64_t n) {
  int best = 0;
  for (int64_t i = 1; i < n; i++)
    if (x[i] > x[best]) best = (int)i;
  return best;
}

/* Runs every image once; pass 1 collects min/max (and the fp32 top-1),
 * pass 2 the histograms. */
static dm_err calib_pass(ctx *c, int pass, dm_session *s, const dm_engine *e,
                         const dm_model_info *info, char **imgs, int n_img,
                         int *top1, int *used, dm_errbuf *eb) {
  dm_tensor in = dm_engine_input(e, 0, NULL);
  size_t numel = 1;
  for (int d = 0; d < in.rank; d++)
    numel *= (size_t)in.dims[d];
  float *buf = malloc(numel * sizeof *buf);
  if (!buf) return dm_errf(eb, DM_NOMEM, "out of memory");
  in.data = buf;
  dm_err rc = DM_OK;
  int ok = 0;
  char what[32];
  snprintf(what, sizeof what, "calibrating (pass %d)", pass);
  for (int i = 0; i < n_img; i++) {
    progress(c, what, i, n_img);
    dm_errbuf ieb = {{0}};
    if (load_input(imgs[i], info, buf, NULL, &ieb)) {
      if (pass == 1) fprintf(stderr, "dermal quantize: skipping %s\n", ieb.msg);
      if (top1) top1[i] = -1;
      continue;
    }
    if ((rc = dm_session_run(s, &in, 1, eb))) goto out;
    ok++;
    if (top1) {
      dm_tensor o = dm_session_output(s, 0);
      int64_t k = 1;
      for (int d = 0; d < o.rank; d++)
        k *= o.dims[d];
      top1[i] = o.dtype == DM_ONNX_FLOAT ? argmax(o.data, k) : -1;
      if (c->max_sens > 0 && !c->sens_in && o.dtype == DM_ONNX_FLOAT) {
        c->in_numel = (int64_t)numel;
        c->out_numel = k;
        c->sens_in = malloc((size_t)c->max_sens * numel * sizeof *buf);
        c->sens_ref = malloc((size_t)c->max_sens * (size_t)k * sizeof *buf);
        if (!c->sens_in || !c->sens_ref) {
          rc = dm_errf(eb, DM_NOMEM, "out of memory");
          goto out;
        }
      }
      if (c->sens_in && c->n_sens < c->max_sens && o.dtype == DM_ONNX_FLOAT &&
          k == c->out_numel) {
        memcpy(c->sens_in + (size_t)c->n_sens * numel, buf,
               numel * sizeof *buf);
        memcpy(c->sens_ref + (size_t)c->n_sens * (size_t)k, o.data,
               (size_t)k * sizeof *c->sens_ref);
        c->n_sens++;
      }
    }
    for (int a = 0; a < c->n_acts; a++) {
      qact *q = &c->acts[a];
      dm_tensor t;
      if (dm_session_value(s, q->name, &t, NULL) || t.dtype != DM_ONNX_FLOAT) {
        q->usable = false;
        continue;
      }
      if (pass == 1 && ok == 1) q->usable = true;
      if (!q->usable) continue;
      int64_t k = 1;
      for (int d = 0; d < t.rank; d++)
        k *= t.dims[d];
      const float *x = t.data;
      if (pass == 1) {
        float lo = q->min, hi = q->max;
        for (int64_t j = 0; j < k; j++) {
          if (x[j] < lo) lo = x[j];
          if (x[j] > hi) hi = x[j];
        }
        q->min = lo;
        q->max = hi;
        /* per-channel means (axis 1, N = 1) for bias correction */
        if (ok == 1 && t.rank >= 2 && t.dims[0] == 1 && !q->csum) {
          q->nch = t.dims[1];
          if (t.rank == 3 || t.rank == 4) {
            q->h = t.dims[2];
            q->w = t.rank == 4 ? t.dims[3] : 1;
          }
          q->csum = calloc((size_t)q->nch, sizeof *q->csum);
        }
        if (q->csum && t.rank >= 2 && t.dims[0] == 1 && t.dims[1] == q->nch) {
          int64_t inner = k / q->nch;
          for (int64_t ch = 0; ch < q->nch; ch++) {
            double sum = 0;
            for (int64_t j = 0; j < inner; j++)
              sum += x[ch * inner + j];
            q->csum[ch] += sum;
          }
          q->cnt += (double)inner;
        }
      } else if (q->hist && q->hw > 0) {
        bool ent = c->meth == M_ENTROPY, absv = ent && q->min < 0;
        for (int64_t j = 0; j < k; j++) {
          /* entropy: exact zeros (a ReLU's negative half) are exact at
           * every threshold, so they do not vote on it (choose_range) */
          if (ent && x[j] == 0) continue;
          double v = absv ? fabs((double)x[j]) : (double)x[j];
          double f = (v - q->hlo) / q->hw;
          int64_t b = f <= 0 ? 0 : (f >= HBINS - 1 ? HBINS - 1 : (int64_t)f);
          q->hist[b]++;
        }
      }
    }
  }
  progress(c, what, n_img, n_img);
  if (used) *used = ok;
out:
  free(buf);
  return rc;
}

/* Adds eps to the zero bins of d[0, n) and takes it from the others
 * (the reference implementations' smoothing); false when all are zero. */
static bool smooth(double *d, int n) {
  const double eps = 1e-4;
  int nz = 0;
  for (int k = 0; k < n; k++)
    nz += d[k] != 0;
  if (!nz) return false;
  double take = eps * (double)(n - nz) / nz;
  for (int k = 0; k < n; k++)
    d[k] += d[k] != 0 ? -take : eps;
  return true;
}

/* KL(P || Q) of TensorRT's entropy calibration (as MXNet and ONNX Runtime
 * implement it) for a threshold at bin i: P the first i bins with the
 * outliers added to the last, Q the same bins merged into `levels` groups
 * of i / levels whole bins (the last group takes the remainder), each
 * group's count spread over its non-empty bins; both smoothed.  Groups
 * of fractional width (session 11's version) let the first group shrink
 * to one bin at some thresholds (i = 508, 764, ... of 2048), and the KL
 * then chose those: ReLU6 ranges clipped at 1.25-3.74 and 25 % top-1
 * agreement on the default model (session 12's audit). */
static double kl_at(const uint64_t *h, int i, int levels, double *p,
                    double *q) {
  double outl = 0;
  for (int k = i; k < HBINS; k++)
    outl += (double)h[k];
  for (int k = 0; k < i; k++)
    p[k] = (double)h[k];
  p[i - 1] += outl;
  int w = i / levels;
  for (int j = 0; j < levels; j++) {
    int s = j * w, e = j == levels - 1 ? i : s + w;
    double tot = 0;
    int nz = 0;
    for (int k = s; k < e; k++) {
      tot += (double)h[k];
      nz += p[k] != 0;
    }
    for (int k = s; k < e; k++)
      q[k] = p[k] != 0 && nz ? tot / nz : 0;
  }
  if (!smooth(p, i) || !smooth(q, i)) return INFINITY;
  double sp = 0, sq = 0;
  for (int k = 0; k < i; k++) {
    sp += p[k];
    sq += q[k];
  }
  double kl = 0;
  for (int k = 0; k < i; k++) {
    double pk = p[k] / sp, qk = q[k] / sq;
    if (pk > 0 && qk > 0) kl += pk * log(pk / qk);
  }
  return kl;
}

/* The calibrated range of q (contains 0). */
static void choose_range(const ctx *c, const qact *q, double *lo, double *hi) {
  *lo = q->min;
  *hi = q->max;
  if (c->meth == M_PERCENTILE && q->hist && q->hw > 0) {
    uint64_t tot = 0;
    for (int k = 0; k < HBINS; k++)
      tot += q->hist[k];
    double tail = (1.0 - c->pct / 100.0) * (double)tot;
    uint64_t acc = 0;
    int kl = 0, kh = HBINS - 1;
    for (kl = 0; kl < HBINS; kl++) {
      acc += q->hist[kl];
      if ((double)acc > tail) break;
    }
    acc = 0;
    for (kh = HBINS - 1; kh > 0; kh--) {
      acc += q->hist[kh];
      if ((double)acc > tail) break;
    }
    double l = q->hlo + kl * q->hw, h = q->hlo + (kh + 1) * q->hw;
    if (l > *lo) *lo = l;
    if (h < *hi) *hi = h;
  } else if (c->meth == M_ENTROPY && q->hist && q->hw > 0) {
    int levels = q->min < 0 ? 128 : 256;
    double *p = malloc(HBINS * sizeof *p), *qq = malloc(HBINS * sizeof *qq);
    if (p && qq) {
      double best = INFINITY;
      int bi = HBINS;
      for (int i = levels; i <= HBINS; i += 4) {
        double kl = kl_at(q->hist, i, levels, p, qq);
        if (kl < best) {
          best = kl;
          bi = i;
        }
      }
      double t = bi * q->hw;
      if (t < *hi) *hi = t;
      if (-t > *lo) *lo = -t;
    }
    free(p);
    free(qq);
  }
  if (*lo > 0) *lo = 0;
  if (*hi < 0) *hi = 0;
}

/* Activation scale and zero point from a range (ONNX Runtime's formulas). */
static void act_params(bool int8, double lo, double hi, float *scale, int *zp) {
  double qmin = int8 ? -128 : 0, qmax = int8 ? 127 : 255;
  if (hi - lo < 1e-30) {
    *scale = 1.0f; /* an all-zero tensor: any scale is exact */
    *zp = 0;
    return;
  }
  float s = (float)((hi - lo) / (qmax - qmin));
  double z = nearbyint(qmin - lo / s);
  *scale = s;
  *zp = (int)(z < qmin ? qmin : (z > qmax ? qmax : z));
}

/* ---------- weights ---------- */

/* QuantizeLinear's arithmetic: float division, round half to even, clamp. */
static int64_t qround(float x, float s, int64_t lo, int64_t hi) {
  float r = nearbyintf(x / s);
  if (isnan(r)) return 0;
  double v = r;
  return v < (double)lo ? lo : (v > (double)hi ? hi : (int64_t)v);
}

/* Bias correction (Nagel et al. 2019, "Data-free quantization", sec. 4.2,
 * empirical form): rounding the weights of a channel shifts its expected
 * output by sum_k (Wq - W)[c, k] * E[x_k].  Per output channel that shift is
 * not zero-mean noise but a constant offset, and in this network it is the
 * dominant error: with per-channel int8 weights alone (activations float)
 * the default MobileNetV2 kept only 94 % top-1 agreement on train images
 * (docs/quantization.md).  E[x_k] is the calibration mean of input channel k
 * (zero padding at the borders is ignored).  Fills sl->corr (c_out) for a
 * Conv (weights (c_out, c_in/group, kh, kw)) or Gemm whose input activation
 * has channel means; w is the float weight, sl->q/sl->scale the int8 one. */
static dm_err bias_correction(ctx *c, qslot *sl, const float *w) {
  const dm_onnx_node *n = &c->g->nodes[sl->node];
  const dm_onnx_tensor *t = &c->g->initializers[sl->init];
  int a = act_index(c, n->inputs[0]);
  if (a < 0 || !c->acts[a].csum || c->acts[a].cnt <= 0) return DM_OK;
  const qact *x = &c->acts[a];
  const int8_t *q = sl->q;
  bool conv = !strcmp(n->op_type, "Conv");
  bool gemm = !strcmp(n->op_type, "Gemm");
  if (!conv && !gemm) return DM_OK;
  if (gemm && (attr_int(n, "transA", 0) || t->ndim != 2)) return DM_OK;
  int64_t cout, cin, inner;
  int64_t group = conv ? attr_int(n, "group", 1) : 1;
  bool transb = gemm && attr_int(n, "transB", 0);
  if (conv) {
    cout = t->dims[0];
    cin = t->dims[1]; /* per group */
    inner = t->numel / (cout * cin);
    if (group < 1 || cout % group || cin * group != x->nch) return DM_OK;
  } else {
    cout = transb ? t->dims[0] : t->dims[1];
    cin = transb ? t->dims[1] : t->dims[0];
    inner = 1;
    if (cin != x->nch) return DM_OK;
  }
  sl->corr = calloc((size_t)cout, sizeof *sl->corr);
  if (!sl->corr) return DM_NOMEM;
  for (int64_t o = 0; o < cout; o++) {
    int64_t g0 = conv ? (o / (cout / group)) * cin : 0;
    double d = 0;
    for (int64_t k = 0; k < cin; k++) {
      double mu = x->csum[g0 + k] / x->cnt, dw = 0;
      for (int64_t j = 0; j < inner; j++) {
        int64_t i = conv || transb ? (o * cin + k) * inner + j : k * cout + o;
        int64_t ch =
            sl->axis < 0 ? 0 : (sl->axis == 0 ? i / (cin * inner) : i % cout);
        dw += (double)q[i] * sl->scale[ch] - (double)w[i];
      }
      d += dw * mu;
    }
    sl->corr[o] = (float)d;
  }
  return DM_OK;
}

static dm_err quantize_slot(ctx *c, qslot *sl) {
  const dm_onnx_tensor *t = &c->g->initializers[sl->init];
  float *w = malloc(t->nbytes ? t->nbytes : 1);
  if (!w) return DM_NOMEM;
  if (t->nbytes) memcpy(w, t->data, t->nbytes); /* maybe unaligned */
  int64_t nch = sl->axis < 0 ? 1 : t->dims[sl->axis];
  int64_t inner = 1;
  if (sl->axis >= 0)
    for (int d = sl->axis + 1; d < t->ndim; d++)
      inner *= t->dims[d];
  sl->n_scale = nch;
  sl->scale = calloc((size_t)nch, sizeof *sl->scale);
  sl->q = malloc((size_t)t->numel * (sl->bias ? 4 : 1));
  if (!sl->scale || !sl->q) {
    free(w);
    return DM_NOMEM;
  }
  if (!sl->bias) {
    int64_t wmax = c->reduce_range ? 63 : 127;
    float *amax = calloc((size_t)nch, sizeof *amax);
    if (!amax) {
      free(w);
      return DM_NOMEM;
    }
    for (int64_t i = 0; i < t->numel; i++) {
      int64_t ch = sl->axis < 0 ? 0 : (i / inner) % nch;
      float a = fabsf(w[i]);
      if (a > amax[ch]) amax[ch] = a;
    }
    for (int64_t ch = 0; ch < nch; ch++)
      sl->scale[ch] = amax[ch] > 0 ? amax[ch] / (float)wmax : 1.0f;
    free(amax);
    int8_t *q = sl->q;
    for (int64_t i = 0; i < t->numel; i++) {
      int64_t ch = sl->axis < 0 ? 0 : (i / inner) % nch;
      q[i] = (int8_t)qround(w[i], sl->scale[ch], -wmax, wmax);
    }
    bool has_bias = false;
    for (int i = 0; i < c->n_slots; i++)
      has_bias |= c->slots[i].bias && c->slots[i].wslot == (int)(sl - c->slots);
    if (c->bias_corr && has_bias && bias_correction(c, sl, w)) {
      free(w);
      return DM_NOMEM;
    }
  } else {
    const qslot *ws = &c->slots[sl->wslot];
    float sx = c->acts[sl->act].scale;
    int32_t *q = sl->q;
    for (int64_t ch = 0; ch < nch; ch++)
      sl->scale[ch] = sx * ws->scale[ws->n_scale == 1 ? 0 : ch];
    for (int64_t i = 0; i < t->numel; i++) {
      float s = sl->scale[sl->axis < 0 ? 0 : i];
      float b = ws->corr ? w[i] - ws->corr[i] : w[i];
      q[i] = (int32_t)qround(b, s, -2147483647, 2147483647);
    }
  }
  free(w);
  return DM_OK;
}

/* ---------- writing the QDQ graph ---------- */

typedef struct out_graph {
  dm_onnx_node *nodes;
  size_t n_nodes, cap_nodes;
  dm_onnx_tensor *inits;
  size_t n_inits, cap_inits;
} out_graph;

static dm_onnx_node *new_node(out_graph *o) {
  if (o->n_nodes == o->cap_nodes) {
    size_t nc = o->cap_nodes ? o->cap_nodes * 2 : 256;
    dm_onnx_node *q = realloc(o->nodes, nc * sizeof *q);
    if (!q) return NULL;
    o->nodes = q;
    o->cap_nodes = nc;
  }
  dm_onnx_node *n = &o->nodes[o->n_nodes++];
  memset(n, 0, sizeof *n);
  n->name = n->domain = "";
  return n;
}

static dm_onnx_tensor *new_init(out_graph *o) {
  if (o->n_inits == o->cap_inits) {
    size_t nc = o->cap_inits ? o->cap_inits * 2 : 256;
    dm_onnx_tensor *q = realloc(o->inits, nc * sizeof *q);
    if (!q) return NULL;
    o->inits = q;
    o->cap_inits = nc;
  }
  dm_onnx_tensor *t = &o->inits[o->n_inits++];
  memset(t, 0, sizeof *t);
  return t;
}

/* Zeroed storage tied to the output graph (node arrays, tensor data). */
static void *keep_alloc(ctx *c, size_t n) {
  if (c->n_bufs == c->cap_bufs) {
    size_t nc = c->cap_bufs ? c->cap_bufs * 2 : 256;
    void **q = realloc(c->bufs, nc * sizeof *q);
    if (!q) return NULL;
    c->bufs = q;
    c->cap_bufs = nc;
  }
  void *p = calloc(1, n ? n : 1);
  if (p) c->bufs[c->n_bufs++] = p;
  return p;
}

static dm_err add_tensor(ctx *c, out_graph *o, const char *name, int32_t dt,
                         int ndim, const int64_t *dims, const void *data) {
  dm_onnx_tensor *t = new_init(o);
  if (!t) return DM_NOMEM;
  t->name = name;
  t->dtype = dt;
  t->ndim = ndim;
  t->numel = 1;
  for (int d = 0; d < ndim; d++) {
    t->dims[d] = dims[d];
    t->numel *= dims[d];
  }
  t->nbytes = (size_t)t->numel * dm_onnx_dtype_size(dt);
  void *copy = keep_alloc(c, t->nbytes);
  if (!copy) return DM_NOMEM;
  if (t->nbytes) memcpy(copy, data, t->nbytes);
  t->data = copy;
  return DM_OK;
}

/* A QuantizeLinear or DequantizeLinear node x -> y with axis (>= 0) or
 * per-tensor (axis < 0). */
static dm_err add_qdq_node(ctx *c, out_graph *o, bool quant, const char *x,
                           const char *s, const char *z, const char *y,
                           int axis) {
  dm_onnx_node *n = new_node(o);
  if (!n) return DM_NOMEM;
  const char **ins = keep_alloc(c, 3 * sizeof *ins);
  const char **outs = keep_alloc(c, sizeof *outs);
  dm_onnx_attr *a = keep_alloc(c, sizeof *a);
  if (!ins || !outs || !a) return DM_NOMEM;
  ins[0] = x;
  ins[1] = s;
  ins[2] = z;
  outs[0] = y;
  n->op_type = quant ? "QuantizeLinear" : "DequantizeLinear";
  n->name = sfmt(c, "%s_%s", y, quant ? "QuantizeLinear" : "DequantizeLinear");
  if (!n->name) return DM_NOMEM;
  n->inputs = ins;
  n->n_inputs = z ? 3 : 2;
  n->outputs = outs;
  n->n_outputs = 1;
  if (axis >= 0) {
    a->name = "axis";
    a->type = DM_ONNX_ATTR_INT;
    a->i = axis;
    n->attrs = a;
    n->n_attrs = 1;
  }
  return DM_OK;
}

/* Scale/zero point initializers and the QDQ pair of activation q. */
static dm_err emit_act(ctx *c, out_graph *o, qact *q) {
  dm_err rc;
  int32_t zt = c->act_int8 ? DM_ONNX_INT8 : DM_ONNX_UINT8;
  uint8_t zb = c->act_int8 ? (uint8_t)(int8_t)q->zp : (uint8_t)q->zp;
  if ((rc = add_tensor(c, o, q->s_name, DM_ONNX_FLOAT, 0, NULL, &q->scale)) ||
      (rc = add_tensor(c, o, q->z_name, zt, 0, NULL, &zb)) ||
      (rc = add_qdq_node(c, o, true, q->name, q->s_name, q->z_name, q->q_out,
                         -1)) ||
      (rc = add_qdq_node(c, o, false, q->q_out, q->s_name, q->z_name, q->dq_out,
                         -1)))
    return rc;
  return DM_OK;
}

static dm_err emit_slot(ctx *c, out_graph *o, qslot *sl) {
  const dm_onnx_tensor *t = &c->g->initializers[sl->init];
  if (!sl->dq_out) { /* names chosen once: the model may be written again */
    sl->q_name = uniq(c, t->name, "_quantized");
    sl->s_name = uniq(c, t->name, "_scale");
    sl->z_name = uniq(c, t->name, "_zero_point");
    sl->dq_out = uniq(c, t->name, "_dequantized");
  }
  const char *qn = sl->q_name, *sn = sl->s_name, *zn = sl->z_name;
  if (!qn || !sn || !zn || !sl->dq_out) return DM_NOMEM;
  dm_err rc;
  int64_t ns = sl->n_scale;
  void *zeros = keep_alloc(c, (size_t)ns * 4);
  if (!zeros) return DM_NOMEM;
  int32_t zt = sl->bias ? DM_ONNX_INT32 : DM_ONNX_INT8;
  bool per_axis = sl->axis >= 0;
  if ((rc = add_tensor(c, o, qn, zt, t->ndim, t->dims, sl->q)) ||
      (rc = add_tensor(c, o, sn, DM_ONNX_FLOAT, per_axis ? 1 : 0, &ns,
                       sl->scale)) ||
      (rc = add_tensor(c, o, zn, zt, per_axis ? 1 : 0, &ns, zeros)) ||
      (rc = add_qdq_node(c, o, false, qn, sn, zn, sl->dq_out, sl->axis)))
    return rc;
  return DM_OK;
}

static bool act_on(const ctx *c, const qact *q);

/* Metadata: the source's, quant_* keys replaced by the calibration facts. */
static dm_err build_meta(ctx *c, const char *calib_dir, int used,
                         dm_onnx_prop **out, size_t *n_out) {
  const dm_onnx_model *m = c->m;
  dm_onnx_prop *p = calloc(m->n_metadata + 12, sizeof *p);
  if (!p) return DM_NOMEM;
  size_t n = 0;
  for (size_t i = 0; i < m->n_metadata; i++) {
    if (!strncmp(m->metadata[i].key, "quant_", 6)) continue;
    p[n] = m->metadata[i];
    if (!strncmp(p[n].key, "val_", 4)) { /* measured on the source model */
      size_t kl = strlen(p[n].key) + sizeof "source_";
      char *k = keep_alloc(c, kl);
      if (!k) {
        free(p);
        return DM_NOMEM;
      }
      snprintf(k, kl, "source_%s", p[n].key);
      p[n].key = k;
    }
    /* Grad-CAM reads the dequantized copy of a quantized target: every
     * consumer reads that copy, so the explanation is of what the rest of
     * the network sees, and the float target no longer blocks the fusion
     * of its producer with the QuantizeLinear into one int8 Conv. */
    int a = strcmp(p[n].key, "gradcam_target") ? -1 : act_index(c, p[n].value);
    if (a >= 0 && act_on(c, &c->acts[a])) p[n].value = c->acts[a].dq_out;
    n++;
  }
  char date[32];
  time_t now = time(NULL);
  struct tm tmv;
  gmtime_r(&now, &tmv);
  strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tmv);
  const char *base = strrchr(calib_dir, '/');
  static const char *const mname[] = {"minmax", "percentile", "entropy"};
  const char *method_s = c->meth == M_PERCENTILE
                             ? sfmt(c, "percentile %g", c->pct)
                             : sfmt(c, "%s", mname[c->meth]);
  p[n++] = (dm_onnx_prop){"quant_format", "QDQ"};
  p[n++] = (dm_onnx_prop){
      "quant_weights",
      sfmt(c, "int8 symmetric per-%s%s", c->per_tensor ? "tensor" : "channel",
           c->reduce_range ? ", 7-bit range [-63, 63]" : "")};
  p[n++] = (dm_onnx_prop){"quant_activations",
                          c->act_int8 ? "int8 asymmetric per-tensor"
                                      : "uint8 asymmetric per-tensor"};
  p[n++] = (dm_onnx_prop){"quant_method", method_s};
  p[n++] = (dm_onnx_prop){"quant_calib_count", sfmt(c, "%d", used)};
  p[n++] = (dm_onnx_prop){
      "quant_calib_dir", sfmt(c, "%s", base && base[1] ? base + 1 : calib_dir)};
  p[n++] = (dm_onnx_prop){"quant_date", sfmt(c, "%s", date)};
  p[n++] = (dm_onnx_prop){"quant_bias_correction", c->bias_corr ? "on" : "off"};
  p[n++] =
      (dm_onnx_prop){"quant_fp32_layers", c->fp32_list ? c->fp32_list : "none"};
  if (!strcmp(c->fp32_spec, "auto"))
    p[n++] = (dm_onnx_prop){
        "quant_fp32_selection",
        sfmt(c,
             "auto: per-node sensitivity (logit error with that node alone "
             "quantized) on %d calibration images, within %.0f%% of the fp32 "
             "size and %g%% of its multiply-accumulates",
             c->n_sens, 100 * max_ratio, 100 * c->fp32_macs)};
  for (size_t i = 0; i < n; i++)
    if (!p[i].value) {
      free(p);
      return DM_NOMEM;
    }
  *out = p;
  *n_out = n;
  return DM_OK;
}

/* Mixed precision: c->qnode[i] says whether file node i is quantized (its
 * weights and bias, and its input activations).  An activation gets its QDQ
 * pair when at least one quantized target node reads it. */
static bool slot_on(const ctx *c, const qslot *sl) {
  return sl->q && c->qnode[sl->node];
}

static bool act_on(const ctx *c, const qact *q) {
  if (!q->usable) return false;
  const dm_onnx_graph *g = c->g;
  for (size_t ni = 0; ni < g->n_nodes; ni++) {
    if (!c->qnode[ni] || !is_target(&g->nodes[ni])) continue;
    for (size_t k = 0; k < g->nodes[ni].n_inputs; k++)
      if (!strcmp(g->nodes[ni].inputs[k], q->name)) return true;
  }
  return false;
}

static dm_err write_qdq(ctx *c, const char *path, const char *calib_dir,
                        int used, dm_errbuf *eb) {
  const dm_onnx_graph *g = c->g;
  out_graph o = {0};
  dm_err rc = DM_NOMEM;
  dm_onnx_prop *meta = NULL;
  size_t n_meta = 0;
  dm_onnx_opset *ops = NULL;
  /* initializers: the originals still read by something unquantized */
  for (size_t i = 0; i < g->n_initializers; i++) {
    bool used_float = false, quantized = false;
    for (size_t ni = 0; ni < g->n_nodes; ni++)
      for (size_t k = 0; k < g->nodes[ni].n_inputs; k++) {
        if (strcmp(g->nodes[ni].inputs[k], g->initializers[i].name)) continue;
        bool q = false;
        for (int s = 0; s < c->n_slots; s++)
          q |= c->slots[s].node == (int)ni && c->slots[s].input == (int)k &&
               slot_on(c, &c->slots[s]);
        quantized |= q;
        used_float |= !q;
      }
    for (size_t k = 0; k < g->n_outputs; k++)
      used_float |= !strcmp(g->outputs[k].name, g->initializers[i].name);
    if (used_float || !quantized) {
      dm_onnx_tensor *t = new_init(&o);
      if (!t) goto out;
      *t = g->initializers[i];
    }
  }
  /* weight and bias DequantizeLinear first */
  for (int s = 0; s < c->n_slots; s++)
    if (slot_on(c, &c->slots[s]) && (rc = emit_slot(c, &o, &c->slots[s])))
      goto out;
  /* QDQ of graph inputs */
  for (int a = 0; a < c->n_acts; a++)
    if (act_on(c, &c->acts[a]) && c->acts[a].producer < 0 &&
        (rc = emit_act(c, &o, &c->acts[a])))
      goto out;
  rc = DM_NOMEM;
  for (size_t ni = 0; ni < g->n_nodes; ni++) {
    const dm_onnx_node *src = &g->nodes[ni];
    dm_onnx_node *n = new_node(&o);
    if (!n) goto out;
    *n = *src;
    const char **ins = keep_alloc(c, (src->n_inputs + 1) * sizeof *ins);
    if (!ins) goto out;
    for (size_t k = 0; k < src->n_inputs; k++) {
      ins[k] = src->inputs[k];
      int a = ins[k][0] ? act_index(c, ins[k]) : -1;
      if (a >= 0 && act_on(c, &c->acts[a])) ins[k] = c->acts[a].dq_out;
      for (int s = 0; s < c->n_slots; s++)
        if (slot_on(c, &c->slots[s]) && c->slots[s].node == (int)ni &&
            c->slots[s].input == (int)k)
          ins[k] = c->slots[s].dq_out;
    }
    n->inputs = ins;
    for (size_t k = 0; k < src->n_outputs; k++) {
      int a = src->outputs[k][0] ? act_index(c, src->outputs[k]) : -1;
      if (a >= 0 && act_on(c, &c->acts[a]) &&
          (rc = emit_act(c, &o, &c->acts[a])))
        goto out;
      rc = DM_NOMEM;
    }
  }
  if ((rc = build_meta(c, calib_dir, used, &meta, &n_meta))) goto out;
  rc = DM_NOMEM;
  dm_onnx_model m = *c->m;
  m.producer_name = "dermal quantize";
  m.producer_version = "";
  m.metadata = meta;
  m.n_metadata = n_meta;
  if (m.ir_version < 7) m.ir_version = 7; /* QDQ per-axis needs IR >= 7 */
  m.graph.nodes = o.nodes;
  m.graph.n_nodes = o.n_nodes;
  m.graph.initializers = o.inits;
  m.graph.n_initializers = o.n_inits;
  /* IR < 4 listed initializers among the inputs; keep only real inputs */
  dm_onnx_value_info *vin = calloc(g->n_inputs + 1, sizeof *vin);
  if (!vin) goto out;
  size_t nin = 0;
  for (size_t i = 0; i < g->n_inputs; i++)
    if (find_init(g, g->inputs[i].name) < 0) vin[nin++] = g->inputs[i];
  m.graph.inputs = vin;
  m.graph.n_inputs = nin;
  rc = dm_onnx_write(&m, path, eb);
  free(vin);
out:
  if (rc == DM_NOMEM && !eb->msg[0]) dm_errf(eb, DM_NOMEM, "out of memory");
  free(o.nodes);
  free(o.inits);
  free(meta);
  free(ops);
  return rc;
}

/* ---------- mixed precision ---------- */

/* c->fp32_list: the names of the target nodes left in fp32, comma-separated
 * ("none" when there is none), for the report and the metadata. */
static bool fp32_list_build(ctx *c) {
  const dm_onnx_graph *g = c->g;
  size_t len = 8;
  for (size_t ni = 0; ni < g->n_nodes; ni++)
    if (!c->qnode[ni] && is_target(&g->nodes[ni]))
      len += strlen(g->nodes[ni].name) + 1;
  free(c->fp32_list);
  c->fp32_list = malloc(len);
  if (!c->fp32_list) return false;
  size_t at = 0;
  for (size_t ni = 0; ni < g->n_nodes; ni++) {
    if (c->qnode[ni] || !is_target(&g->nodes[ni])) continue;
    size_t nl = strlen(g->nodes[ni].name);
    if (at) c->fp32_list[at++] = ',';
    memcpy(c->fp32_list + at, g->nodes[ni].name, nl);
    at += nl;
  }
  if (!at)
    memcpy(c->fp32_list, "none", 5);
  else
    c->fp32_list[at] = 0;
  return true;
}

/* Runs the model written to path on the stored sensitivity inputs:
 * *nmse = sum |y - y_fp32|^2 / sum |y_fp32|^2 over them. */
static dm_err run_written(ctx *c, const char *path, dm_backend_kind backend,
                          int threads, double *nmse, dm_errbuf *eb) {
  dm_onnx_model *om = NULL;
  dm_engine *e = NULL;
  dm_session *s = NULL;
  dm_engine_opts eo = {.backend = backend, .threads = threads};
  dm_err rc;
  if ((rc = dm_onnx_open(path, &om, eb)) ||
      (rc = dm_engine_new(om, &eo, &e, eb)) || (rc = dm_session_new(e, &s, eb)))
    goto out;
  dm_tensor in = dm_engine_input(e, 0, NULL);
  double num = 0, den = 0;
  for (int i = 0; i < c->n_sens; i++) {
    in.data = c->sens_in + (size_t)i * (size_t)c->in_numel;
    if ((rc = dm_session_run(s, &in, 1, eb))) goto out;
    dm_tensor o = dm_session_output(s, 0);
    const float *y = o.data,
                *r = c->sens_ref + (size_t)i * (size_t)c->out_numel;
    for (int64_t k = 0; k < c->out_numel; k++) {
      double d = (double)y[k] - r[k];
      num += d * d;
      den += (double)r[k] * r[k];
    }
  }
  *nmse = den > 0 ? num / den : 0;
out:
  dm_session_free(s);
  dm_engine_free(e);
  dm_onnx_free(om);
  return rc;
}

/* Bytes a node's weights would add if left in fp32 (4 instead of 1 per
 * weight; the bias stays 4 bytes either way). */
static int64_t fp32_cost(const ctx *c, int node) {
  int64_t b = 0;
  for (int s = 0; s < c->n_slots; s++)
    if (c->slots[s].node == node && c->slots[s].q && !c->slots[s].bias)
      b += 3 * c->g->initializers[c->slots[s].init].numel;
  return b;
}

/* Multiply-accumulates of a Conv, Gemm or MatMul node per image (0 for
 * other nodes): weights times output pixels (a Conv's from its input's
 * calibrated shape and the strides, at least one pixel when that shape
 * was not seen; one row for Gemm/MatMul, as in a classifier head). */
static double node_macs(const ctx *c, int node) {
  const dm_onnx_node *n = &c->g->nodes[node];
  bool conv = !strcmp(n->op_type, "Conv");
  if (!conv && strcmp(n->op_type, "Gemm") && strcmp(n->op_type, "MatMul"))
    return 0;
  double w = 0;
  for (int s = 0; s < c->n_slots; s++)
    if (c->slots[s].node == node && !c->slots[s].bias)
      w += (double)c->g->initializers[c->slots[s].init].numel;
  if (!conv) return w;
  int a = act_index(c, n->inputs[0]);
  if (a < 0 || c->acts[a].h <= 0) return w;
  int64_t sh = 1, sw = 1;
  const dm_onnx_attr *st = dm_onnx_attr_find(n, "strides");
  if (st && st->type == DM_ONNX_ATTR_INTS && st->n_ints >= 1) {
    sh = st->ints[0] > 0 ? st->ints[0] : 1;
    sw = st->n_ints > 1 && st->ints[1] > 0 ? st->ints[1] : 1;
  }
  return w * (double)((c->acts[a].h + sh - 1) / sh) *
         (double)((c->acts[a].w + sw - 1) / sw);
}

typedef struct sens {
  int node;
  double nmse;
} sens;

static int cmp_sens(const void *a, const void *b) {
  double x = ((const sens *)a)->nmse, y = ((const sens *)b)->nmse;
  return x < y ? 1 : (x > y ? -1 : 0);
}

/* --fp32-layers auto.  Sensitivity of each quantized node measured alone
 * (that node's weights and input activations quantized, everything else
 * fp32) as the logit error on the first calibration images; the noise of
 * independent quantization points adds up, so the nodes are left in fp32
 * from the most sensitive down while the node contributes at least half
 * the mean sensitivity, skipping a node when (a) the weights it keeps in
 * fp32 do not fit in the size budget (budget bytes, what the 30 % bar
 * allows above the all-int8 file) or (b) its multiply-accumulates do not
 * fit in the compute budget (c->fp32_macs of the model's).  A residual Add
 * costs no MACs: the engine runs the int8 conv before it with a float
 * output and the Add as its post-op. */
static dm_err choose_fp32(ctx *c, const char *tmp, dm_backend_kind backend,
                          int threads, int64_t budget, const char *calib,
                          int used, dm_errbuf *eb) {
  const dm_onnx_graph *g = c->g;
  size_t nn = g->n_nodes;
  unsigned char *all = malloc(nn);
  sens *v = calloc(nn, sizeof *v);
  dm_err rc = DM_NOMEM;
  int nv = 0;
  if (!all || !v) goto out;
  memcpy(all, c->qnode, nn);
  for (size_t ni = 0; ni < nn; ni++) {
    if (!all[ni] || !is_target(&g->nodes[ni])) continue;
    bool any = false; /* something to quantize at this node */
    for (int s = 0; s < c->n_slots; s++)
      any |= c->slots[s].node == (int)ni && c->slots[s].q;
    for (int a = 0; a < c->n_acts && !any; a++)
      for (size_t k = 0; k < g->nodes[ni].n_inputs; k++)
        any |= c->acts[a].usable &&
               !strcmp(g->nodes[ni].inputs[k], c->acts[a].name);
    if (any) v[nv++].node = (int)ni;
  }
  for (int i = 0; i < nv; i++) {
    progress(c, "sensitivity", i, nv);
    memset(c->qnode, 0, nn);
    c->qnode[v[i].node] = 1;
    if ((rc = write_qdq(c, tmp, calib, used, eb)) ||
        (rc = run_written(c, tmp, backend, threads, &v[i].nmse, eb)))
      goto out;
  }
  progress(c, "sensitivity", nv, nv);
  memcpy(c->qnode, all, nn);
  qsort(v, (size_t)nv, sizeof *v, cmp_sens);
  double total = 0;
  for (int i = 0; i < nv; i++)
    total += v[i].nmse;
  printf("  sensitivity (logit error with one node quantized, %d calibration "
         "images; sum %.3g):\n",
         c->n_sens, total);
  for (int i = 0; i < nv && i < 8; i++)
    printf("    %-48s %.3g (%.1f%%)\n", g->nodes[v[i].node].name, v[i].nmse,
           total > 0 ? 100 * v[i].nmse / total : 0);
  double macs = 0;
  for (size_t i = 0; i < g->n_nodes; i++)
    macs += node_macs(c, (int)i);
  double mac_budget = c->fp32_macs * macs;
  for (int i = 0; i < nv; i++) {
    if (v[i].nmse < 0.5 * total / nv) break;
    int64_t cost = fp32_cost(c, v[i].node);
    double mc = node_macs(c, v[i].node);
    if (cost > budget || mc > mac_budget) continue;
    budget -= cost;
    mac_budget -= mc;
    c->qnode[v[i].node] = 0;
  }
  rc = fp32_list_build(c) ? DM_OK : DM_NOMEM;
out:
  if (rc) memcpy(c->qnode, all ? all : c->qnode, nn);
  free(all);
  free(v);
  return rc;
}

/* --fp32-layers NAME,...: node names, or the name of a node's output or
 * weight.  Returns false (and says which) for a name that matches nothing. */
static bool fp32_by_name(ctx *c) {
  const dm_onnx_graph *g = c->g;
  size_t len = strlen(c->fp32_spec);
  char *buf = malloc(len + 1), *save = NULL;
  if (!buf) return false;
  memcpy(buf, c->fp32_spec, len + 1);
  bool ok = true;
  for (char *tok = strtok_r(buf, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    bool hit = false;
    for (size_t ni = 0; ni < g->n_nodes; ni++) {
      const dm_onnx_node *n = &g->nodes[ni];
      bool m = !strcmp(n->name, tok);
      for (size_t k = 0; k < n->n_outputs && !m; k++)
        m = !strcmp(n->outputs[k], tok);
      for (size_t k = 1; k < n->n_inputs && !m; k++)
        m = !strcmp(n->inputs[k], tok) && find_init(g, tok) >= 0;
      if (m) {
        c->qnode[ni] = 0;
        hit = true;
      }
    }
    if (!hit) {
      fprintf(stderr,
              "dermal quantize: --fp32-layers: no node, output or "
              "weight named '%s'\n",
              tok);
      ok = false;
    }
  }
  free(buf);
  return ok && fp32_list_build(c);
}

/* ---------- the command ---------- */

/* The run's temporary files (and the writer's own temporaries of them),
 * removed by tmp_cleanup and by a SIGINT/SIGTERM handler; unlink is
 * async-signal-safe, the names are made before the handler is set. */
enum { N_TMP = 3 };
static char tmp_path[N_TMP][2][4096];

static void tmp_cleanup(void) {
  for (int i = 0; i < N_TMP; i++)
    for (int k = 0; k < 2; k++)
      if (tmp_path[i][k][0]) unlink(tmp_path[i][k]);
}

static void tmp_on_signal(int sig) {
  tmp_cleanup();
  signal(sig, SIG_DFL);
  raise(sig);
}

/* Names OUT + suffix (and dm_onnx_write's temporary of it) as temporary
 * file i; false when too long. */
static bool tmp_name(int i, const char *out, const char *suffix) {
  long pid = (long)getpid() % 100000;
  int n = snprintf(tmp_path[i][0], sizeof tmp_path[i][0], "%s%s", out, suffix);
  int m = snprintf(tmp_path[i][1], sizeof tmp_path[i][1], "%s%s.tmp%ld", out,
                   suffix, pid);
  return n > 0 && m > 0 && (size_t)m < sizeof tmp_path[i][1];
}

/* Nodes that make a graph already quantized. */
static int quantized_nodes(const dm_onnx_graph *g) {
  static const char *const ops[] = {"QuantizeLinear",       "DequantizeLinear",
                                    "QLinearConv",          "QLinearMatMul",
                                    "ConvInteger",          "MatMulInteger",
                                    "DynamicQuantizeLinear"};
  int n = 0;
  for (size_t i = 0; i < g->n_nodes; i++)
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++)
      n += !strcmp(g->nodes[i].op_type, ops[k]);
  return n;
}

static size_t file_size(const char *path) {
  FILE *f = fopen(path, "rb");
  long l = -1;
  if (f) {
    if (!fseek(f, 0, SEEK_END)) l = ftell(f);
    fclose(f);
  }
  return l > 0 ? (size_t)l : 0;
}

static void ctx_free(ctx *c) {
  for (int a = 0; a < c->n_acts; a++) {
    free(c->acts[a].hist);
    free(c->acts[a].csum);
  }
  free(c->acts);
  for (int s = 0; s < c->n_slots; s++) {
    free(c->slots[s].scale);
    free(c->slots[s].q);
    free(c->slots[s].corr);
  }
  free(c->slots);
  for (size_t i = 0; i < c->n_strs; i++)
    free(c->strs[i]);
  free(c->strs);
  for (size_t i = 0; i < c->n_bufs; i++)
    free(c->bufs[i]);
  free(c->bufs);
  free(c->qnode);
  free(c->fp32_list);
  free(c->sens_in);
  free(c->sens_ref);
}

int dm_cli_quantize(int argc, char **argv) {
  const char *model = NULL, *calib = NULL, *out = NULL;
  int count = 100, threads = 1, st = 1, sens_count = 50;
  bool verify = true;
  int min_agree = 80;
  dm_backend_kind backend = DM_BACKEND_ONEDNN;
  ctx c;
  memset(&c, 0, sizeof c);
  c.pct = 99.999;
  c.bias_corr = true;
  c.fp32_spec = "auto";
  c.fp32_macs = 0.05;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    bool has = i + 1 < argc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(help, stdout);
      return 0;
    } else if (!strcmp(a, "--model") && has) {
      if (dm_cli_set_model("quantize", &model, argv[++i])) goto usage;
    } else if (!strcmp(a, "--calib") && has) {
      calib = argv[++i];
    } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has) {
      out = argv[++i];
    } else if (!strcmp(a, "--calib-count") && has) {
      if (dm_cli_parse_int(a, argv[++i], 1, 1000000, &count)) goto usage;
    } else if (!strcmp(a, "--threads") && has) {
      if (dm_cli_parse_int(a, argv[++i], 1, 256, &threads)) goto usage;
    } else if (!strcmp(a, "--method") && has) {
      const char *v = argv[++i];
      if (!strcmp(v, "minmax"))
        c.meth = M_MINMAX;
      else if (!strcmp(v, "percentile"))
        c.meth = M_PERCENTILE;
      else if (!strcmp(v, "entropy"))
        c.meth = M_ENTROPY;
      else {
        fprintf(stderr, "dermal quantize: --method expects minmax, percentile "
                        "or entropy\n");
        goto usage;
      }
    } else if (!strcmp(a, "--percentile") && has) {
      char *end;
      c.pct = strtod(argv[++i], &end);
      if (*end || !(c.pct > 50 && c.pct <= 100)) {
        fprintf(stderr, "dermal quantize: --percentile expects (50, 100]\n");
        goto usage;
      }
    } else if (!strcmp(a, "--per-tensor-weights")) {
      c.per_tensor = true;
    } else if (!strcmp(a, "--reduce-range")) {
      c.reduce_range = true;
    } else if (!strcmp(a, "--act-type") && has) {
      const char *v = argv[++i];
      if (!strcmp(v, "int8"))
        c.act_int8 = true;
      else if (strcmp(v, "uint8")) {
        fprintf(stderr, "dermal quantize: --act-type expects uint8 or int8\n");
        goto usage;
      }
    } else if (!strcmp(a, "--backend") && has) {
      const char *v = argv[++i];
      if (!strcmp(v, "ref"))
        backend = DM_BACKEND_REF;
      else if (strcmp(v, "onednn")) {
        fprintf(stderr, "dermal quantize: --backend expects onednn or ref\n");
        goto usage;
      }
    } else if (!strcmp(a, "--fp32-layers") && has) {
      c.fp32_spec = argv[++i];
    } else if (!strcmp(a, "--fp32-macs") && has) {
      char *end;
      double pc = strtod(argv[++i], &end);
      if (*end || !(pc >= 0 && pc <= 100)) {
        fprintf(stderr, "dermal quantize: --fp32-macs expects a percentage "
                        "in [0, 100]\n");
        goto usage;
      }
      c.fp32_macs = pc / 100;
    } else if (!strcmp(a, "--sensitivity-count") && has) {
      if (dm_cli_parse_int(a, argv[++i], 1, 10000, &sens_count)) goto usage;
    } else if (!strcmp(a, "--no-bias-correction")) {
      c.bias_corr = false;
    } else if (!strcmp(a, "--no-verify")) {
      verify = false;
    } else if (!strcmp(a, "--min-agreement") && has) {
      if (dm_cli_parse_int(a, argv[++i], 0, 100, &min_agree)) goto usage;
    } else if (a[0] != '-') {
      if (dm_cli_set_model("quantize", &model, a)) goto usage;
    } else {
      fprintf(stderr, "dermal quantize: unexpected argument '%s'\n", a);
      goto usage;
    }
  }
  if (!model || !calib || !out) {
    fprintf(stderr, "dermal quantize: MODEL, --calib DIR and -o OUT are "
                    "required\n");
    goto usage;
  }
  c.tty = isatty(2);
  struct stat cst;
  if (stat(calib, &cst) != 0 || !S_ISDIR(cst.st_mode)) {
    fprintf(stderr, "dermal quantize: --calib %s: %s\n", calib,
            stat(calib, &cst) != 0 ? strerror(errno) : "not a directory");
    return 1;
  }
  if (stat(out, &cst) == 0 && S_ISDIR(cst.st_mode)) {
    fprintf(stderr, "dermal quantize: -o %s is a directory\n", out);
    return 1;
  }
  if (!tmp_name(0, out, ".tmp") || !tmp_name(1, out, ".all-int8.tmp") ||
      !tmp_name(2, out, ".sens.tmp")) {
    fprintf(stderr, "dermal quantize: -o %s: path too long\n", out);
    return 1;
  }
  { /* OUT's directory must take files before hours of calibration */
    int fd = open(tmp_path[0][0], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
      fprintf(stderr, "dermal quantize: cannot write %s: %s\n", tmp_path[0][0],
              strerror(errno));
      return 1;
    }
    close(fd);
    unlink(tmp_path[0][0]);
  }
  signal(SIGINT, tmp_on_signal);
  signal(SIGTERM, tmp_on_signal);

  dm_errbuf eb = {{0}};
  dm_onnx_model *om = NULL;
  dm_model *dmm = NULL, *qm = NULL;
  dm_engine *e = NULL;
  dm_session *s = NULL;
  dm_predictor *pr = NULL;
  char **imgs = NULL;
  int n_img = 0, used = 0, *top1 = NULL;
  const char **keep = NULL;
  double t0 = dm_cli_now_ms();
  dm_err rc;

  dm_model_opts mo = {.backend = backend, .threads = threads};
  if ((rc = dm_model_open(model, &mo, &dmm, &eb)) ||
      (rc = dm_onnx_open(model, &om, &eb))) {
    fprintf(stderr, "dermal quantize: %s: %s\n", model, eb.msg);
    goto done;
  }
  c.m = om;
  c.g = &om->graph;
  int nq = quantized_nodes(c.g);
  if (nq) {
    fprintf(stderr,
            "dermal quantize: %s is already quantized (%d quantization "
            "nodes); quantize its fp32 source instead\n",
            model, nq);
    goto done;
  }
  if (om->opset < 10) {
    fprintf(stderr,
            "dermal quantize: %s: opset %lld < 10 has no "
            "QuantizeLinear\n",
            model, (long long)om->opset);
    goto done;
  }
  if (om->opset < 13 && !c.per_tensor) {
    fprintf(stderr,
            "dermal quantize: opset %lld < 13: per-tensor weights "
            "(per-axis DequantizeLinear needs opset 13)\n",
            (long long)om->opset);
    c.per_tensor = true;
  }
  if (plan(&c) || !(c.qnode = malloc(c.g->n_nodes + 1))) {
    fprintf(stderr, "dermal quantize: out of memory\n");
    goto done;
  }
  memset(c.qnode, 1, c.g->n_nodes + 1);
  bool auto_fp32 = !strcmp(c.fp32_spec, "auto");
  if (auto_fp32) {
    c.max_sens = sens_count;
  } else if (!strcmp(c.fp32_spec, "none")) {
    if (!fp32_list_build(&c)) goto nomem;
  } else if (!fp32_by_name(&c)) {
    goto done;
  }
  imgs = list_images(calib, count, &n_img);
  if (n_img == 0) {
    fprintf(stderr, "dermal quantize: no JPEG/PNG/WebP images in %s\n", calib);
    goto done;
  }
  keep = calloc((size_t)c.n_acts + 1, sizeof *keep);
  top1 = calloc((size_t)n_img, sizeof *top1);
  if (!keep || !top1) goto nomem;
  for (int a = 0; a < c.n_acts; a++)
    keep[a] = c.acts[a].name;
  dm_engine_opts eo = {.backend = backend,
                       .threads = threads,
                       .keep = keep,
                       .n_keep = (size_t)c.n_acts};
  if ((rc = dm_engine_new(om, &eo, &e, &eb)) ||
      (rc = dm_session_new(e, &s, &eb))) {
    fprintf(stderr, "dermal quantize: %s\n", eb.msg);
    goto done;
  }
  const dm_model_info *info = dm_model_get_info(dmm);
  if ((rc = calib_pass(&c, 1, s, e, info, imgs, n_img, top1, &used, &eb))) {
    fprintf(stderr, "dermal quantize: %s\n", eb.msg);
    goto done;
  }
  if (used == 0) {
    fprintf(stderr, "dermal quantize: no calibration image could be read\n");
    goto done;
  }
  if (c.meth != M_MINMAX) {
    for (int a = 0; a < c.n_acts; a++) {
      qact *q = &c.acts[a];
      if (!q->usable) continue;
      q->hist = calloc(HBINS, sizeof *q->hist);
      if (!q->hist) goto nomem;
      if (c.meth == M_ENTROPY) {
        double amax = fmax(fabs((double)q->min), fabs((double)q->max));
        q->hlo = 0;
        q->hw = amax / HBINS;
      } else {
        q->hlo = q->min;
        q->hw = ((double)q->max - q->min) / HBINS;
      }
    }
    if ((rc = calib_pass(&c, 2, s, e, info, imgs, n_img, NULL, NULL, &eb))) {
      fprintf(stderr, "dermal quantize: %s\n", eb.msg);
      goto done;
    }
  }
  dm_session_free(s);
  s = NULL;
  dm_engine_free(e);
  e = NULL;
  /* scales, names */
  int n_q = 0;
  for (int a = 0; a < c.n_acts; a++) {
    qact *q = &c.acts[a];
    if (!q->usable || !(q->min <= q->max)) {
      q->usable = false;
      continue;
    }
    double lo, hi;
    choose_range(&c, q, &lo, &hi);
    act_params(c.act_int8, lo, hi, &q->scale, &q->zp);
    q->q_out = uniq(&c, q->name, "_quantized");
    q->dq_out = uniq(&c, q->name, "_dequantized");
    q->s_name = uniq(&c, q->name, "_scale");
    q->z_name = uniq(&c, q->name, "_zero_point");
    if (!q->q_out || !q->dq_out || !q->s_name || !q->z_name) goto nomem;
    n_q++;
  }
  int n_w = 0, n_b = 0;
  for (int pass = 0; pass < 2; pass++) /* weights before the biases */
    for (int i = 0; i < c.n_slots; i++) {
      qslot *sl = &c.slots[i];
      if (sl->bias != (pass == 1)) continue;
      if (sl->bias) {
        const dm_onnx_node *n = &c.g->nodes[sl->node];
        sl->act = act_index(&c, n->inputs[0]);
        if (sl->act < 0 || !c.acts[sl->act].usable || !c.slots[sl->wslot].q)
          continue; /* input not quantized: the bias stays float */
        int64_t nch = c.g->initializers[sl->init].dims[0];
        if (c.slots[sl->wslot].n_scale != 1 &&
            c.slots[sl->wslot].n_scale != nch)
          continue;
        if (c.slots[sl->wslot].n_scale == 1) sl->axis = -1;
      }
      if (quantize_slot(&c, sl)) goto nomem;
      if (sl->bias)
        n_b++;
      else
        n_w++;
    }
  eb.msg[0] = 0;
  size_t in_bytes = om->file_bytes, out_bytes = 0;
  const char *fin = tmp_path[0][0];
  if (auto_fp32) { /* all-int8 first: its size sets the fp32 budget */
    if (!fp32_list_build(&c)) goto nomem;
    const char *all8 = tmp_path[1][0];
    if ((rc = write_qdq(&c, all8, calib, used, &eb))) {
      fprintf(stderr, "dermal quantize: %s: %s\n", all8, eb.msg);
      goto done;
    }
    int64_t budget = (int64_t)(max_ratio * (double)in_bytes) -
                     (int64_t)file_size(all8) - 4096;
    unlink(all8);
    rc = choose_fp32(&c, tmp_path[2][0], backend, threads,
                     budget < 0 ? 0 : budget, calib, used, &eb);
    unlink(tmp_path[2][0]);
    if (rc) {
      fprintf(stderr, "dermal quantize: sensitivity analysis: %s\n", eb.msg);
      goto done;
    }
  }
  if ((rc = write_qdq(&c, fin, calib, used, &eb))) {
    fprintf(stderr, "dermal quantize: %s: %s\n", fin, eb.msg);
    goto done;
  }
  out_bytes = file_size(fin);
  printf("quantized %s -> %s\n", model, out);
  printf("  activations: %d tensors (%s, %s), weights: %d int8 (%s), biases: "
         "%d int32\n",
         n_q, c.act_int8 ? "int8" : "uint8",
         c.meth == M_MINMAX
             ? "minmax"
             : (c.meth == M_PERCENTILE ? "percentile" : "entropy"),
         n_w, c.per_tensor ? "per-tensor" : "per-channel", n_b);
  printf("  calibration: %d images from %s; bias correction %s\n", used, calib,
         c.bias_corr ? "on" : "off");
  printf("  left in fp32: %s\n", c.fp32_list);
  printf("  size: %zu -> %zu bytes (%.1f%%)\n", in_bytes, out_bytes,
         in_bytes ? 100.0 * (double)out_bytes / (double)in_bytes : 0.0);
  if (verify) {
    dm_model_opts qo = {.backend = backend, .threads = threads};
    if ((rc = dm_model_open(fin, &qo, &qm, &eb)) ||
        (rc = dm_predictor_new(qm, &pr, &eb))) {
      fprintf(stderr, "dermal quantize: the written model does not load: %s\n",
              eb.msg);
      goto done;
    }
    int agree = 0, total = 0;
    for (int i = 0; i < n_img; i++) {
      progress(&c, "verifying", i, n_img);
      if (top1[i] < 0) continue;
      dm_image im = {0};
      dm_prediction pd;
      if (load_input(imgs[i], dm_model_get_info(qm), NULL, &im, &eb)) continue;
      rc = dm_predict_image(pr, &im, &pd, &eb);
      dm_image_free(&im);
      if (rc) {
        fprintf(stderr, "dermal quantize: %s: %s\n", imgs[i], eb.msg);
        goto done;
      }
      total++;
      agree += pd.order[0] == top1[i];
    }
    progress(&c, "verifying", n_img, n_img);
    double pct = total ? 100.0 * agree / total : 0.0;
    printf("  top-1 agreement with fp32 on the calibration images: %.1f%% "
           "(%d/%d)\n",
           pct, agree, total);
    if (pct < min_agree) {
      fprintf(stderr,
              "dermal quantize: %s not written: top-1 agreement %.1f%% is "
              "below --min-agreement %d%% (try another --method, more "
              "--calib-count, or --fp32-layers)\n",
              out, pct, min_agree);
      goto done;
    }
  }
  if (rename(fin, out) != 0) {
    fprintf(stderr, "dermal quantize: %s: %s\n", out, strerror(errno));
    goto done;
  }
  printf("  time: %.1f s\n", (dm_cli_now_ms() - t0) / 1000.0);
  st = 0;
  goto done;
nomem:
  fprintf(stderr, "dermal quantize: out of memory\n");
done:
  tmp_cleanup();
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  dm_predictor_free(pr);
  dm_model_release(qm);
  dm_session_free(s);
  dm_engine_free(e);
  dm_model_release(dmm);
  dm_onnx_free(om);
  for (int i = 0; i < n_img; i++)
    free(imgs[i]);
  free(imgs);
  free(keep);
  free(top1);
  ctx_free(&c);
  return st;
usage:
  fputs(help, stderr);
  return 2;
}
