/* main.c: the `dermal` command line.
 *
 * Only this folder parses argv, prints for the user and calls exit().  Each
 * subcommand is a function taking (argc, argv) after the subcommand name and
 * returning the process exit status: 0 success, 1 failure, 2 usage error.
 * Commands that do not need a model (help, version) never open one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "dermal/engine.h"
#include "dermal/explain.h"
#include "dermal/onnx.h"
#include "meta.h"
#include "npy.h"
#include "predict.h"
#include "quantize.h"
#include "util.h"

#define DERMAL_VERSION "0.1.0"

/* ---------- small helpers ---------- */

/* Common options: the model (--model M or first positional), backend,
 * threads, precision. */
typedef struct opts {
  const char *model;
  const char *input, *output;
  const char *cam, *cam_target;
  int cam_class, cam_method;
  int output_index; /* run: which graph output --output writes */
  dm_engine_opts eng;
  int iters, warmup;
  bool json;
  bool help;
  bool gradcam; /* bench: measure Grad-CAM cost */
} opts;

static int need_value(int i, int argc, const char *flag) {
  if (i + 1 >= argc) {
    fprintf(stderr, "dermal: %s needs a value\n", flag);
    return -1;
  }
  return 0;
}

/* Parses argv into o.  `allowed` is a space-separated list of flags the
 * subcommand accepts.  Returns 0, or 2 on a usage error (message printed). */
static int parse_opts(const char *cmd, int argc, char **argv,
                      const char *allowed, opts *o) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      o->help = true;
      continue;
    }
    if (a[0] != '-') {
      if (dm_cli_set_model(cmd, &o->model, a)) return 2;
      continue;
    }
    char key[64];
    snprintf(key, sizeof key, " %s ", a);
    char list[512];
    snprintf(list, sizeof list, " %s ", allowed);
    if (!strstr(list, key)) {
      fprintf(stderr, "dermal: unknown option '%s' (see --help)\n", a);
      return 2;
    }
    if (!strcmp(a, "--json")) {
      o->json = true;
      continue;
    }
    if (!strcmp(a, "--gradcam")) {
      o->gradcam = true;
      continue;
    }
    if (need_value(i, argc, a)) return 2;
    const char *v = argv[++i];
    if (!strcmp(a, "--model")) {
      if (dm_cli_set_model(cmd, &o->model, v)) return 2;
    } else if (!strcmp(a, "--input")) {
      o->input = v;
    } else if (!strcmp(a, "--output")) {
      o->output = v;
    } else if (!strcmp(a, "--cam")) {
      o->cam = v;
    } else if (!strcmp(a, "--cam-target")) {
      o->cam_target = v;
    } else if (!strcmp(a, "--output-index")) {
      if (dm_cli_parse_int(a, v, 0, 1 << 20, &o->output_index)) return 2;
    } else if (!strcmp(a, "--cam-class")) {
      if (dm_cli_parse_int(a, v, 0, 1 << 20, &o->cam_class)) return 2;
    } else if (!strcmp(a, "--cam-method")) {
      o->cam_method = dm_cam_method_parse(v);
      if (o->cam_method < 0) {
        fprintf(stderr, "dermal: --cam-method is gradcam, gradcampp or "
                        "hirescam\n");
        return 2;
      }
    } else if (!strcmp(a, "--backend")) {
      if (!strcmp(v, "ref"))
        o->eng.backend = DM_BACKEND_REF;
      else if (!strcmp(v, "onednn"))
        o->eng.backend = DM_BACKEND_ONEDNN;
      else {
        fprintf(stderr, "dermal: --backend is ref or onednn, not '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--precision")) {
      if (dm_cli_parse_precision(a, v, &o->eng.precision)) return 2;
    } else if (!strcmp(a, "--threads")) {
      if (dm_cli_parse_int(a, v, 1, 256, &o->eng.threads)) return 2;
    } else if (!strcmp(a, "--iters")) {
      if (dm_cli_parse_int(a, v, 1, 1000000, &o->iters)) return 2;
    } else if (!strcmp(a, "--warmup")) {
      if (dm_cli_parse_int(a, v, 0, 1000000, &o->warmup)) return 2;
    }
  }
  return 0;
}

static int need_model(const opts *o, const char *cmd) {
  if (o->model) return 0;
  fprintf(stderr, "dermal %s: no model given (dermal %s --help)\n", cmd, cmd);
  return 2;
}

static int fail(const char *what, dm_err rc, const dm_errbuf *eb) {
  fprintf(stderr, "dermal: %s: %s: %s\n", what, dm_strerror(rc), eb->msg);
  return 1;
}

static void fill_input(dm_tensor *t, size_t n) {
  /* deterministic pseudo-random N(0,1)-ish data for benchmarks */
  float *p = t->data;
  uint32_t s = 12345;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 3.4f;
  }
}

/* ---------- run ---------- */

static const char run_help[] =
    "usage: dermal run MODEL --input X.npy [--output Y.npy [--output-index "
    "I]]\n"
    "                  [--backend ref|onednn] [--threads N]\n"
    "                  [--cam CAM.npy [--cam-class INDEX] [--cam-method "
    "gradcam|gradcampp|hirescam]\n"
    "                   [--cam-target TENSOR]]\n"
    "  Feeds the float32 .npy tensor X to the model's first input and writes\n"
    "  its first output (or output I) to Y.npy.  MODEL may also be given as\n"
    "  --model M.\n"
    "  --cam writes the raw class activation map (float32 H x W at the target\n"
    "  layer's resolution, after the ReLU, before any normalisation) for the\n"
    "  top-1 class or --cam-class; the target is the model's gradcam_target\n"
    "  metadata, --cam-target, or the last feature map before global "
    "pooling.\n";

static int cmd_run(int argc, char **argv) {
  opts o = {0};
  o.cam_class = -1;
  int st = parse_opts("run", argc, argv,
                      "--model --input --output --output-index --backend "
                      "--threads --precision --cam --cam-target --cam-class "
                      "--cam-method",
                      &o);
  if (st || o.help) {
    fputs(run_help, st ? stderr : stdout);
    return st;
  }
  if ((st = need_model(&o, "run"))) return st;
  if (!o.input || (!o.output && !o.cam)) {
    fprintf(stderr, "dermal run: --input and --output (or --cam) are "
                    "required\n");
    return 2;
  }
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  dm_engine *e = NULL;
  dm_session *s = NULL;
  dm_tensor in = {0};
  dm_err rc;
  int ret = 1;
  if ((rc = dm_onnx_open(o.model, &m, &eb))) {
    ret = fail(o.model, rc, &eb);
    goto out;
  }
  if (o.cam) {
    o.eng.cam = true;
    o.eng.cam_target =
        o.cam_target ? o.cam_target : dm_onnx_meta(m, "gradcam_target");
  }
  if ((rc = dm_engine_new(m, &o.eng, &e, &eb))) {
    ret = fail(o.model, rc, &eb);
    goto out;
  }
  if ((rc = dm_npy_read(o.input, &in, &eb))) {
    ret = fail("input", rc, &eb);
    goto out;
  }
  if (dm_engine_n_inputs(e) != 1) {
    fprintf(stderr, "dermal run: the model has %zu inputs; run feeds one\n",
            dm_engine_n_inputs(e));
    goto out;
  }
  dm_cam_result cr;
  if ((rc = dm_session_new(e, &s, &eb)) ||
      (rc = o.cam ? dm_session_run_cam(s, &in, 1, o.cam_class, &cr, &eb)
                  : dm_session_run(s, &in, 1, &eb))) {
    ret = fail("run", rc, &eb);
    goto out;
  }
  if ((size_t)o.output_index >= dm_engine_n_outputs(e)) {
    fprintf(stderr,
            "dermal run: --output-index %d: the model has %zu "
            "outputs\n",
            o.output_index, dm_engine_n_outputs(e));
    goto out;
  }
  dm_tensor y = dm_session_output(s, (size_t)o.output_index);
  if (o.output && (rc = dm_npy_write(o.output, &y, &eb))) {
    ret = fail("output", rc, &eb);
    goto out;
  }
  if (o.cam) {
    float *map = malloc((size_t)(cr.h * cr.w) * sizeof *map);
    dm_tensor t = {
        .dtype = DM_ONNX_FLOAT, .rank = 2, .dims = {cr.h, cr.w}, .data = map};
    if (!map) goto out;
    rc = dm_cam_compute(&cr, (dm_cam_method)o.cam_method, map, &eb);
    if (!rc) rc = dm_npy_write(o.cam, &t, &eb);
    free(map);
    if (rc) {
      ret = fail("cam", rc, &eb);
      goto out;
    }
    fprintf(stderr,
            "dermal: Grad-CAM (%s) of class %d (score %.4g) at '%s' "
            "[%lldx%lldx%lld]\n",
            dm_cam_method_name((dm_cam_method)o.cam_method), cr.class_index,
            (double)cr.score, dm_engine_cam_target(e), (long long)cr.c,
            (long long)cr.h, (long long)cr.w);
  }
  ret = 0;
out:
  free(in.data);
  dm_session_free(s);
  dm_engine_free(e);
  dm_onnx_free(m);
  return ret;
}

/* ---------- inspect ---------- */

static const char inspect_help[] =
    "usage: dermal inspect MODEL [--json] [--precision fp32|bf16|auto]\n"
    "  Parses the ONNX file (builds no engine) and prints its inputs and\n"
    "  outputs, op histogram, parameter count and bytes, metadata_props, the\n"
    "  Grad-CAM target (metadata or automatic) and the ops the engine does\n"
    "  not support, and the compute precision an engine would use on this\n"
    "  CPU (bf16 and auto run bf16 only where the CPU has it natively).\n";

static bool op_supported(const char *op) {
  for (const char *const *s = dm_engine_supported_ops(); *s; s++)
    if (!strcmp(*s, op)) return true;
  return false;
}

/* A shape as declared: [1x3x224x224] (JSON [1,3,224,224]), a symbolic
 * dimension ? (null); no shape in the file at all: ? (null), unlike a
 * scalar's [] */
static void print_dims(FILE *f, const dm_onnx_value_info *v, bool json) {
  if (v->ndim < 0) {
    fputs(json ? "null" : "?", f);
    return;
  }
  fputc('[', f);
  for (int d = 0; d < v->ndim; d++) {
    if (d) fputs(json ? "," : "x", f);
    if (v->dims[d] < 0)
      fputs(json ? "null" : "?", f);
    else
      fprintf(f, "%lld", (long long)v->dims[d]);
  }
  fputc(']', f);
}

typedef struct hist {
  const char *op;
  const char *domain;
  int count;
} hist;

static int cmd_inspect(int argc, char **argv) {
  opts o = {0};
  int st = parse_opts("inspect", argc, argv, "--model --json --precision", &o);
  if (st || o.help) {
    fputs(inspect_help, st ? stderr : stdout);
    return st;
  }
  if ((st = need_model(&o, "inspect"))) return st;
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  dm_err rc = dm_onnx_open(o.model, &m, &eb);
  if (rc) return fail(o.model, rc, &eb);
  const dm_onnx_graph *g = &m->graph;
  hist *h = calloc(g->n_nodes + 1, sizeof *h);
  if (!h) {
    dm_onnx_free(m);
    fprintf(stderr, "dermal: out of memory\n");
    return 1;
  }
  size_t nh = 0;
  for (size_t i = 0; i < g->n_nodes; i++) {
    size_t k = 0;
    while (k < nh && (strcmp(h[k].op, g->nodes[i].op_type) ||
                      strcmp(h[k].domain, g->nodes[i].domain)))
      k++;
    if (k == nh) {
      h[nh].op = g->nodes[i].op_type;
      h[nh].domain = g->nodes[i].domain;
      nh++;
    }
    h[k].count++;
  }
  /* the Grad-CAM target, resolved on the graph (no engine is built) */
  const char *meta_target = dm_onnx_meta(m, "gradcam_target");
  char cam[256] = "";
  dm_errbuf ceb = {{0}};
  dm_err cam_rc = dm_engine_cam_preview(m, meta_target, cam, sizeof cam, &ceb);
  const char *prec =
      dm_engine_precision_resolve(o.eng.backend, o.eng.precision);
  bool bf16_native =
      !strcmp(dm_engine_precision_resolve(DM_BACKEND_ONEDNN, DM_PRECISION_AUTO),
              "bf16");
  int64_t params = 0;
  size_t bytes = 0;
  for (size_t i = 0; i < g->n_initializers; i++) {
    params += g->initializers[i].numel;
    bytes += g->initializers[i].nbytes;
  }
  FILE *f = stdout;
  if (o.json) {
    fprintf(f, "{\"model\":");
    dm_cli_json_str(f, o.model);
    fprintf(f, ",\"ir_version\":%lld,\"opset\":%lld,\"producer\":",
            (long long)m->ir_version, (long long)m->opset);
    dm_cli_json_str(f, m->producer_name);
    fprintf(f, ",\"file_bytes\":%zu,\"inputs\":[", m->file_bytes);
    size_t shown = 0;
    for (size_t i = 0; i < g->n_inputs; i++) {
      bool init = false;
      for (size_t k = 0; k < g->n_initializers && !init; k++)
        init = !strcmp(g->initializers[k].name, g->inputs[i].name);
      if (init) continue;
      fprintf(f, "%s{\"name\":", shown++ ? "," : "");
      dm_cli_json_str(f, g->inputs[i].name);
      fprintf(f, ",\"dtype\":\"%s\",\"shape\":",
              dm_onnx_dtype_name(g->inputs[i].dtype));
      print_dims(f, &g->inputs[i], true);
      fputc('}', f);
    }
    fprintf(f, "],\"outputs\":[");
    for (size_t i = 0; i < g->n_outputs; i++) {
      fprintf(f, "%s{\"name\":", i ? "," : "");
      dm_cli_json_str(f, g->outputs[i].name);
      fprintf(f, ",\"dtype\":\"%s\",\"shape\":",
              dm_onnx_dtype_name(g->outputs[i].dtype));
      print_dims(f, &g->outputs[i], true);
      fputc('}', f);
    }
    fprintf(f, "],\"nodes\":%zu,\"ops\":{", g->n_nodes);
    for (size_t k = 0; k < nh; k++) {
      if (k) fputc(',', f);
      dm_cli_json_str(f, h[k].op);
      fprintf(f, ":%d", h[k].count);
    }
    fprintf(f, "},\"parameters\":%lld,\"parameter_bytes\":%zu,\"metadata\":{",
            (long long)params, bytes);
    for (size_t i = 0; i < m->n_metadata; i++) {
      if (i) fputc(',', f);
      dm_cli_json_str(f, m->metadata[i].key);
      fputc(':', f);
      dm_cli_json_str(f, m->metadata[i].value);
    }
    fprintf(f, "},\"gradcam_target\":");
    if (cam_rc)
      fprintf(f, "null");
    else
      dm_cli_json_str(f, cam);
    fprintf(f, ",\"gradcam_target_source\":\"%s\",\"unsupported_ops\":[",
            meta_target ? "metadata" : "automatic");
    size_t nu = 0;
    for (size_t k = 0; k < nh; k++)
      if ((h[k].domain[0] && strcmp(h[k].domain, "ai.onnx")) ||
          !op_supported(h[k].op)) {
        if (nu++) fputc(',', f);
        dm_cli_json_str(f, h[k].op);
      }
    fprintf(f, "],\"precision\":\"%s\",\"bf16_native\":%s}\n", prec,
            bf16_native ? "true" : "false");
  } else {
    /* strings from the file through dm_cli_text_str: they may hold
     * control characters (a terminal escape, a newline) */
    fputs("model      ", f);
    dm_cli_text_str(f, o.model);
    fprintf(f, "\nformat     ONNX IR %lld, opset %lld, producer ",
            (long long)m->ir_version, (long long)m->opset);
    dm_cli_text_str(f, m->producer_name);
    fputc(' ', f);
    dm_cli_text_str(f, m->producer_version);
    fprintf(f, ", %zu bytes\n", m->file_bytes);
    for (size_t i = 0; i < g->n_inputs; i++) {
      bool init = false;
      for (size_t k = 0; k < g->n_initializers && !init; k++)
        init = !strcmp(g->initializers[k].name, g->inputs[i].name);
      if (init) continue;
      fputs("input      ", f);
      dm_cli_text_str(f, g->inputs[i].name);
      fprintf(f, " %s ", dm_onnx_dtype_name(g->inputs[i].dtype));
      print_dims(f, &g->inputs[i], false);
      fputc('\n', f);
    }
    for (size_t i = 0; i < g->n_outputs; i++) {
      fputs("output     ", f);
      dm_cli_text_str(f, g->outputs[i].name);
      fprintf(f, " %s ", dm_onnx_dtype_name(g->outputs[i].dtype));
      print_dims(f, &g->outputs[i], false);
      fputc('\n', f);
    }
    fprintf(f, "parameters %lld (%.1f MB)\n", (long long)params,
            (double)bytes / 1e6);
    fputs("gradcam    ", f);
    if (cam_rc) fputs("unavailable: ", f);
    dm_cli_text_str(f, cam_rc ? ceb.msg : cam);
    if (!cam_rc)
      fprintf(f, " (%s)",
              meta_target ? "from metadata" : "chosen automatically");
    fputc('\n', f);
    fprintf(f, "precision  %s (bf16 %s on this CPU)\n", prec,
            bf16_native ? "native" : "not native");
    fprintf(f, "nodes      %zu\n", g->n_nodes);
    for (size_t k = 0; k < nh; k++) {
      fputs("  ", f);
      dm_cli_text_str(f, h[k].op);
      size_t w = strlen(h[k].op);
      fprintf(f, "%*s %d%s\n", w < 24 ? (int)(24 - w) : 0, "", h[k].count,
              (h[k].domain[0] && strcmp(h[k].domain, "ai.onnx")) ||
                      !op_supported(h[k].op)
                  ? "   UNSUPPORTED"
                  : "");
    }
    for (size_t i = 0; i < m->n_metadata; i++) {
      fputs("meta       ", f);
      dm_cli_text_str(f, m->metadata[i].key);
      fputs(" = ", f);
      dm_cli_text_str(f, m->metadata[i].value);
      fputc('\n', f);
    }
  }
  free(h);
  dm_onnx_free(m);
  return 0;
}

/* ---------- bench ---------- */

static const char bench_help[] =
    "usage: dermal bench MODEL [--threads N] [--iters N] [--warmup N]\n"
    "                          [--backend ref|onednn] [--precision "
    "fp32|bf16|auto]\n"
    "                          [--json] [--gradcam]\n"
    "  Loads the model, runs it on deterministic random input and prints the\n"
    "  load time, first-run time, p50/p90/p99 latency and peak RSS.\n"
    "  Defaults: backend onednn, precision fp32, threads 1, iters 100,\n"
    "  warmup 10.  --json prints one line holding one flat JSON object.\n"
    "  --gradcam instead measures, interleaved in one process, plain\n"
    "  inference against inference + Grad-CAM (gradient tail and map) on an\n"
    "  engine built for it, plus overlay rendering and PNG encoding of a\n"
    "  600x450 image, and prints the ratio.\n";

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p) {
  int i = (int)ceil(p / 100.0 * n) - 1;
  if (i < 0) i = 0;
  if (i >= n) i = n - 1;
  return v[i];
}

static int bench_gradcam(const opts *o) {
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  dm_engine *e0 = NULL, *e1 = NULL;
  dm_session *s0 = NULL, *s1 = NULL;
  double *l0 = calloc((size_t)o->iters, sizeof *l0);
  double *l1 = calloc((size_t)o->iters, sizeof *l1);
  double lo[20], lp[20];
  float *map = NULL;
  dm_tensor x = {0};
  dm_image im = {0}, ovl = {0};
  int ret = 1;
  dm_err rc;
  dm_engine_opts eo = o->eng;
  if (!l0 || !l1) goto out;
  if ((rc = dm_onnx_open(o->model, &m, &eb)) ||
      (rc = dm_engine_new(m, &eo, &e0, &eb)))
    goto fail;
  eo.cam = true;
  eo.cam_target = dm_onnx_meta(m, "gradcam_target");
  if ((rc = dm_engine_new(m, &eo, &e1, &eb)) ||
      (rc = dm_session_new(e0, &s0, &eb)) ||
      (rc = dm_session_new(e1, &s1, &eb)))
    goto fail;
  x = dm_engine_input(e0, 0, NULL);
  size_t n = 1;
  for (int d = 0; d < x.rank; d++)
    n *= (size_t)x.dims[d];
  if (!(x.data = malloc(n * sizeof(float)))) goto out;
  fill_input(&x, n);
  dm_cam_result cr;
  for (int i = 0; i < o->warmup + o->iters; i++) {
    double a = dm_cli_now_ms();
    if ((rc = dm_session_run(s0, &x, 1, &eb))) goto fail;
    double b = dm_cli_now_ms();
    if ((rc = dm_session_run_cam(s1, &x, 1, -1, &cr, &eb))) goto fail;
    if (!map && !(map = malloc((size_t)(cr.h * cr.w) * sizeof *map))) goto out;
    if ((rc = dm_cam_compute(&cr, DM_CAM_GRADCAM, map, &eb))) goto fail;
    double c = dm_cli_now_ms();
    if (i >= o->warmup) {
      l0[i - o->warmup] = b - a;
      l1[i - o->warmup] = c - b;
    }
  }
  /* overlay + PNG of a 600x450 picture, ImageNet-style preprocessing */
  im.w = 600, im.h = 450, im.c = 3;
  if (!(im.px = malloc(600 * 450 * 3))) goto out;
  for (int i = 0; i < 600 * 450 * 3; i++)
    im.px[i] = (uint8_t)(i * 7 % 251);
  dm_preproc pp;
  dm_preproc_init(&pp);
  dm_overlay_opts ov = {DM_CMAP_JET, 0.5f, 0};
  for (int i = 0; i < 20; i++) {
    double a = dm_cli_now_ms();
    if ((rc = dm_overlay_render(&im, &pp, map, (int)cr.h, (int)cr.w, &ov, &ovl,
                                &eb)))
      goto fail;
    double b = dm_cli_now_ms();
    uint8_t *png = NULL;
    size_t plen = 0;
    rc = dm_image_encode_png(&ovl, &png, &plen, &eb);
    free(png);
    dm_image_free(&ovl);
    if (rc) goto fail;
    lo[i] = b - a;
    lp[i] = dm_cli_now_ms() - b;
  }
  qsort(l0, (size_t)o->iters, sizeof *l0, cmp_double);
  qsort(l1, (size_t)o->iters, sizeof *l1, cmp_double);
  qsort(lo, 20, sizeof *lo, cmp_double);
  qsort(lp, 20, sizeof *lp, cmp_double);
  double p0 = pct(l0, o->iters, 50), p1 = pct(l1, o->iters, 50);
  if (o->json) {
    printf("{\"model\":");
    dm_cli_json_str(stdout, o->model);
    printf(",\"backend\":\"%s\",\"threads\":%d,\"iters\":%d,\"target\":",
           dm_engine_backend_name(e0), o->eng.threads, o->iters);
    dm_cli_json_str(stdout, dm_engine_cam_target(e1));
    printf(",\"p50_ms\":%.3f,\"cam_p50_ms\":%.3f,\"cam_ratio\":%.3f,"
           "\"overlay_600x450_ms\":%.3f,\"png_ms\":%.3f}\n",
           p0, p1, p1 / p0, lo[10], lp[10]);
  } else {
    printf("model        %s (%s, %d thread%s)\n", o->model,
           dm_engine_backend_name(e0), o->eng.threads,
           o->eng.threads == 1 ? "" : "s");
    printf("target       %s [%lldx%lldx%lld]\n", dm_engine_cam_target(e1),
           (long long)cr.c, (long long)cr.h, (long long)cr.w);
    printf("inference    p50 %.3f ms\n", p0);
    printf("+ Grad-CAM   p50 %.3f ms  (ratio %.3f, interleaved, %d iters)\n",
           p1, p1 / p0, o->iters);
    printf("overlay      %.2f ms (600x450), PNG encode %.2f ms\n", lo[10],
           lp[10]);
  }
  ret = 0;
  goto out;
fail:
  ret = fail(o->model, rc, &eb);
out:
  free(l0);
  free(l1);
  free(map);
  free(x.data);
  dm_image_free(&im);
  dm_session_free(s0);
  dm_session_free(s1);
  dm_engine_free(e0);
  dm_engine_free(e1);
  dm_onnx_free(m);
  return ret;
}

static int cmd_bench(int argc, char **argv) {
  opts o = {0};
  o.iters = 100;
  o.warmup = 10;
  int st = parse_opts("bench", argc, argv,
                      "--model --threads --iters --warmup --backend "
                      "--precision --json --gradcam",
                      &o);
  if (st || o.help) {
    fputs(bench_help, st ? stderr : stdout);
    return st;
  }
  if ((st = need_model(&o, "bench"))) return st;
  if (o.eng.threads <= 0) o.eng.threads = 1;
  if (o.eng.backend == DM_BACKEND_REF && o.eng.threads > 1) {
    /* the oracle is plain sequential C: report what runs */
    fprintf(stderr, "dermal bench: the ref backend runs on one thread\n");
    o.eng.threads = 1;
  }
  if (o.gradcam) return bench_gradcam(&o);
  dm_errbuf eb = {{0}};
  dm_onnx_model *m = NULL;
  dm_engine *e = NULL;
  dm_session *s = NULL;
  dm_tensor *ins = NULL;
  double *lat = NULL;
  int ret = 1;
  dm_err rc;
  double t0 = dm_cli_now_ms();
  if ((rc = dm_onnx_open(o.model, &m, &eb)) ||
      (rc = dm_engine_new(m, &o.eng, &e, &eb)) ||
      (rc = dm_session_new(e, &s, &eb))) {
    ret = fail(o.model, rc, &eb);
    goto out;
  }
  double load_ms = dm_cli_now_ms() - t0;
  size_t ni = dm_engine_n_inputs(e);
  ins = calloc(ni + 1, sizeof *ins);
  lat = calloc((size_t)o.iters, sizeof *lat);
  if (!ins || !lat) goto out;
  for (size_t i = 0; i < ni; i++) {
    ins[i] = dm_engine_input(e, i, NULL);
    size_t n = 1;
    for (int d = 0; d < ins[i].rank; d++)
      n *= (size_t)ins[i].dims[d];
    size_t es = dm_onnx_dtype_size(ins[i].dtype);
    ins[i].data = calloc(n ? n : 1, es ? es : 1);
    if (!ins[i].data) goto out;
    if (ins[i].dtype == DM_ONNX_FLOAT) fill_input(&ins[i], n);
  }
  double t1 = dm_cli_now_ms();
  if ((rc = dm_session_run(s, ins, ni, &eb))) {
    ret = fail("run", rc, &eb);
    goto out;
  }
  double first_ms = dm_cli_now_ms() - t1;
  for (int i = 0; i < o.warmup; i++)
    if ((rc = dm_session_run(s, ins, ni, &eb))) {
      ret = fail("run", rc, &eb);
      goto out;
    }
  for (int i = 0; i < o.iters; i++) {
    double a = dm_cli_now_ms();
    if ((rc = dm_session_run(s, ins, ni, &eb))) {
      ret = fail("run", rc, &eb);
      goto out;
    }
    lat[i] = dm_cli_now_ms() - a;
  }
  qsort(lat, (size_t)o.iters, sizeof *lat, cmp_double);
  double mean = 0;
  for (int i = 0; i < o.iters; i++)
    mean += lat[i];
  mean /= o.iters;
  const dm_engine_stats *es = dm_engine_get_stats(e);
  if (o.json) {
    printf("{\"model\":");
    dm_cli_json_str(stdout, o.model);
    printf(",\"backend\":\"%s\",\"precision\":\"%s\",\"threads\":%d,"
           "\"iters\":%d,\"load_ms\":%.3f,\"build_ms\":%.3f,\"first_ms\":%.3f,"
           "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"mean_ms\":%.3f,"
           "\"min_ms\":%.3f,\"peak_rss_mb\":%.1f,\"nodes_in\":%zu,"
           "\"nodes_run\":%zu,\"arena_bytes\":%zu,\"weight_bytes\":%zu,"
           "\"weight_copied_bytes\":%zu,\"int8_ops\":%zu,"
           "\"int8_unfused\":%zu}\n",
           dm_engine_backend_name(e), dm_engine_precision_name(e),
           o.eng.threads, o.iters, load_ms, es->load_ms, first_ms,
           pct(lat, o.iters, 50), pct(lat, o.iters, 90), pct(lat, o.iters, 99),
           mean, lat[0], dm_cli_peak_rss_mb(), es->nodes_in, es->nodes_run,
           es->arena_bytes, es->weight_bytes, es->weight_copied, es->int8_ops,
           es->int8_unfused);
  } else {
    char lab[64];
    printf("model      %s\n", o.model);
    printf("backend    %s (%s), %d thread%s\n", dm_engine_backend_name(e),
           dm_cli_precision_label(e, lab, sizeof lab), o.eng.threads,
           o.eng.threads == 1 ? "" : "s");
    printf("graph      %zu nodes in file, %zu run (%zu folded, %zu BN folded, "
           "%zu fused, %zu dead, %zu int8)\n",
           es->nodes_in, es->nodes_run, es->folded_const, es->folded_bn,
           es->fused_act, es->dead, es->int8_ops);
    printf("load       %.2f ms (engine build %.2f ms)\n", load_ms, es->load_ms);
    printf("first run  %.2f ms\n", first_ms);
    printf("latency    p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  (%d iters)\n",
           pct(lat, o.iters, 50), pct(lat, o.iters, 90), pct(lat, o.iters, 99),
           o.iters);
    printf("memory     peak RSS %.1f MB, arena %.1f MB, weights %.1f MB "
           "(%.1f MB copied from the file, the rest used in place)\n",
           dm_cli_peak_rss_mb(), (double)es->arena_bytes / 1e6,
           (double)es->weight_bytes / 1e6, (double)es->weight_copied / 1e6);
  }
  ret = 0;
out:
  if (ins)
    for (size_t i = 0; i < dm_engine_n_inputs(e); i++)
      free(ins[i].data);
  free(ins);
  free(lat);
  dm_session_free(s);
  dm_engine_free(e);
  dm_onnx_free(m);
  return ret;
}

/* ---------- version, help, dispatch ---------- */

static int cmd_version(int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      puts("usage: dermal version\n  Prints dermal's version (no model is "
           "opened).");
      return 0;
    }
    fprintf(stderr, "dermal version: unexpected argument '%s'\n", argv[i]);
    return 2;
  }
  printf("dermal %s (model not opened)\n", DERMAL_VERSION);
  return 0;
}

static const char main_help[] =
    "usage: dermal COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  serve     the web service (POST /upload, /api/v1/predict, /health...)\n"
    "  migrate   apply the history store's migrations (never opens the model)\n"
    "  predict   classify images (default model: models/dermal-ham10000.onnx)\n"
    "  eval      accuracy, balanced accuracy, confusion matrix on a labelled "
    "folder\n"
    "  quantize  int8 QDQ model from calibration images\n"
    "  meta      print or set the metadata dermal reads (labels, "
    "preprocessing)\n"
    "  run       run a model on a .npy tensor, write the output as .npy\n"
    "  inspect   show a model's inputs, outputs, ops and metadata\n"
    "  bench     measure load time, latency and memory of a model\n"
    "  version   print the version\n"
    "\n"
    "`dermal COMMAND --help` describes each command.\n";

typedef struct cmd {
  const char *name;
  int (*fn)(int, char **);
} cmd;

/* clang-format off */
static const cmd cmds[] = {
    {"serve", dm_cli_serve},
    {"migrate", dm_cli_migrate},
    {"predict", dm_cli_predict},
    {"eval", dm_cli_eval},
    {"quantize", dm_cli_quantize},
    {"meta", dm_cli_meta},
    {"run", cmd_run},
    {"inspect", cmd_inspect},
    {"bench", cmd_bench},
    {"version", cmd_version},
};
/* clang-format on */

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "help")) { /* dermal help COMMAND */
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
      if (!strcmp(argv[2], cmds[i].name))
        return cmds[i].fn(1, (char *[]){"--help", NULL});
    fprintf(stderr, "dermal: unknown command '%s'\n\n%s", argv[2], main_help);
    return 2;
  }
  if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
      !strcmp(argv[1], "-h")) {
    fputs(main_help, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) return cmd_version(0, NULL);
  dm_cli_heap_hugepages();
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 2, argv + 2);
  fprintf(stderr, "dermal: unknown command '%s'\n\n%s", argv[1], main_help);
  return 2;
}
