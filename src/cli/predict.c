/* predict.c: `dermal predict` and `dermal eval`, the two commands that run a
 * classifier on image files through the same dm_model path the server uses.
 *
 * predict prints one line per image (JSON with --json, the object the HTTP
 * API returns).  eval runs a labelled folder and prints accuracy, balanced
 * accuracy (mean recall over the classes present in the labels), per-class
 * precision/recall/F1/support, macro F1, the confusion matrix (rows = truth)
 * and the expected calibration error (15 equal-width confidence bins); an
 * unreadable or undecodable image is skipped and counted, never fatal. */
#include "predict.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dermal/model.h"
#include "plot.h"
#include "util.h"

#define MAX_IMAGE_BYTES ((size_t)64 << 20)

static int open_model(const char *path, const dm_model_opts *o, dm_model **m,
                      dm_predictor **p) {
  dm_errbuf eb = {{0}};
  dm_err rc = dm_model_open(path, o, m, &eb);
  if (!rc) rc = dm_predictor_new(*m, p, &eb);
  if (rc) {
    fprintf(stderr, "dermal: %s: %s: %s\n", path, dm_strerror(rc), eb.msg);
    dm_model_release(*m);
    *m = NULL;
    return 1;
  }
  return 0;
}

static bool is_model_path(const char *s) {
  size_t n = strlen(s);
  return n > 5 && !strcmp(s + n - 5, ".onnx");
}

/* ---------- predict ---------- */

static const char predict_help[] =
    "usage: dermal predict [--model M] [--top K] [--json] [--threads N]\n"
    "                      [--backend ref|onednn] [--gradcam OUT.png\n"
    "                      [--gradcam-class LABEL] [--gradcam-method "
    "gradcam|gradcampp|hirescam]\n"
    "                      [--alpha A] [--colormap jet|turbo]] IMAGE...\n"
    "  Classifies each image (JPEG, PNG, WebP; EXIF orientation applied).\n"
    "  --json prints one JSON object per image per line: image, label, top,\n"
    "  probabilities, ms.  Without --model: the default model\n"
    "  (models/dermal-ham10000.onnx, or $MODEL_PATH).  A first argument\n"
    "  ending in .onnx is taken as the model.  --gradcam writes the heatmap\n"
    "  overlay (PNG or JPEG by extension) of the top-1 class or LABEL; with\n"
    "  several images OUT is a directory (OUT/NAME.gradcam.png).\n";

/* Renders and writes the overlay of one explanation; path chosen from out
 * (a directory when several images are explained). */
static dm_err write_overlay(const dm_model *m, const dm_explanation *ex,
                            const dm_overlay_opts *ov, const char *out,
                            const char *image, bool dir, char *path,
                            size_t plen, dm_errbuf *eb) {
  if (dir) {
    const char *base = strrchr(image, '/');
    base = base ? base + 1 : image;
    const char *dot = strrchr(base, '.');
    int bl = dot ? (int)(dot - base) : (int)strlen(base);
    if (mkdir(out, 0777) && errno != EEXIST)
      return dm_errf(eb, DM_IO, "%s: %s", out, strerror(errno));
    snprintf(path, plen, "%s/%.*s.gradcam.png", out, bl, base);
  } else {
    snprintf(path, plen, "%s", out);
  }
  dm_image ovl = {0};
  dm_err rc = dm_overlay_render(ex->image, &dm_model_get_info(m)->preproc,
                                ex->cam, ex->cam_h, ex->cam_w, ov, &ovl, eb);
  if (!rc) rc = dm_image_save(&ovl, path, eb);
  dm_image_free(&ovl);
  return rc;
}

int dm_cli_predict(int argc, char **argv) {
  const char *model = NULL, *cam_out = NULL, *cam_label = NULL;
  int top = 3, method = DM_CAM_GRADCAM;
  bool json = false;
  dm_model_opts mo = {0};
  dm_overlay_opts ov = {DM_CMAP_JET, 0.5f, 0};
  const char **images = calloc((size_t)argc + 1, sizeof *images);
  int n_images = 0;
  if (!images) return 1;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    bool has = i + 1 < argc;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(predict_help, stdout);
      free(images);
      return 0;
    } else if (!strcmp(a, "--json")) {
      json = true;
    } else if (!strcmp(a, "--model") && has) {
      if (dm_cli_set_model("predict", &model, argv[++i])) goto usage;
    } else if (!strcmp(a, "--top") && has) {
      if (dm_cli_parse_int(a, argv[++i], 1, DM_MAX_CLASSES, &top)) goto usage;
    } else if (!strcmp(a, "--threads") && has) {
      if (dm_cli_parse_int(a, argv[++i], 1, 256, &mo.threads)) goto usage;
    } else if (!strcmp(a, "--gradcam") && has) {
      cam_out = argv[++i];
    } else if (!strcmp(a, "--gradcam-class") && has) {
      cam_label = argv[++i];
    } else if (!strcmp(a, "--gradcam-method") && has) {
      if ((method = dm_cam_method_parse(argv[++i])) < 0) {
        fprintf(stderr, "dermal: --gradcam-method is gradcam, gradcampp or "
                        "hirescam\n");
        goto usage;
      }
    } else if (!strcmp(a, "--colormap") && has) {
      int cm = dm_colormap_parse(argv[++i]);
      if (cm < 0) {
        fprintf(stderr, "dermal: --colormap is jet or turbo\n");
        goto usage;
      }
      ov.colormap = (dm_colormap)cm;
    } else if (!strcmp(a, "--alpha") && has) {
      char *end;
      ov.alpha = strtof(argv[++i], &end);
      if (*end || !(ov.alpha >= 0 && ov.alpha <= 1)) {
        fprintf(stderr, "dermal: --alpha expects a number in 0..1\n");
        goto usage;
      }
    } else if (!strcmp(a, "--backend") && has) {
      const char *b = argv[++i];
      if (!strcmp(b, "ref"))
        mo.backend = DM_BACKEND_REF;
      else if (strcmp(b, "onednn")) {
        fprintf(stderr, "dermal: --backend is ref or onednn\n");
        goto usage;
      }
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "dermal: unknown option '%s' (or missing value)\n", a);
      goto usage;
    } else if (n_images == 0 && is_model_path(a)) {
      if (dm_cli_set_model("predict", &model, a)) goto usage;
    } else {
      images[n_images++] = a;
    }
  }
  if (n_images == 0) {
    fprintf(stderr, "dermal predict: no image given\n");
    goto usage;
  }
  if (!model) model = dm_cli_default_model();
  mo.gradcam = cam_out != NULL;
  dm_model *m = NULL;
  dm_predictor *p = NULL;
  if (open_model(model, &mo, &m, &p)) {
    free(images);
    return 1;
  }
  const dm_model_info *info = dm_model_get_info(m);
  int cam_class = -1;
  if (cam_label && (cam_class = dm_model_class_index(m, cam_label)) < 0) {
    fprintf(stderr, "dermal: --gradcam-class: the model has no label '%s'\n",
            cam_label);
    dm_predictor_free(p);
    dm_model_release(m);
    free(images);
    return 2;
  }
  int failures = 0;
  dm_prediction *r = malloc(sizeof *r);
  for (int i = 0; r && i < n_images; i++) {
    char err[256];
    size_t len = 0;
    void *bytes =
        dm_cli_read_file(images[i], MAX_IMAGE_BYTES, &len, err, sizeof err);
    dm_errbuf eb = {{0}};
    dm_err rc = DM_IO;
    dm_explanation ex;
    char cam_path[4096] = "";
    if (bytes && cam_out) {
      rc = dm_predict_explain(p, bytes, len, NULL, cam_class,
                              (dm_cam_method)method, r, &ex, &eb);
      if (!rc)
        rc = write_overlay(m, &ex, &ov, cam_out, images[i], n_images > 1,
                           cam_path, sizeof cam_path, &eb);
    } else if (bytes) {
      rc = dm_predict(p, bytes, len, NULL, r, &eb);
    }
    free(bytes);
    if (!bytes || rc) {
      failures++;
      const char *why = bytes ? eb.msg : err;
      if (json) {
        printf("{\"image\":");
        dm_cli_json_str(stdout, images[i]);
        printf(",\"error\":");
        dm_cli_json_str(stdout, why);
        printf("}\n");
      } else {
        fprintf(stderr, "dermal: %s: %s\n", images[i], why);
      }
      continue;
    }
    if (json) {
      char *s = dm_prediction_json(m, r, images[i], top);
      if (s && cam_out) { /* append the explanation to the object */
        size_t l = strlen(s);
        s[l - 1] = 0;
        printf("%s,\"gradcam\":{\"path\":", s);
        dm_cli_json_str(stdout, cam_path);
        printf(",\"class\":");
        dm_cli_json_str(stdout, info->labels[ex.class_index]);
        printf(",\"method\":\"%s\",\"target\":",
               dm_cam_method_name((dm_cam_method)method));
        dm_cli_json_str(stdout, info->gradcam_target);
        printf(",\"ms\":%.3f}}\n", ex.ms_cam);
      } else if (s) {
        printf("%s\n", s);
      }
      free(s);
    } else {
      printf("%s: %s", images[i], info->labels[r->order[0]]);
      printf(" (%s)", info->names[r->order[0]]);
      for (int k = 0; k < top && (size_t)k < r->n_classes; k++)
        printf("%s%s %.1f%%", k ? ", " : "  ", info->labels[r->order[k]],
               100.0 * (double)r->prob[r->order[k]]);
      if (r->has_ood && !r->in_distribution)
        printf("  NOT IN DISTRIBUTION (OOD score %.1f > %.1f: this does not "
               "look like a dermatoscopic image)",
               (double)r->ood_score, (double)info->ood_threshold);
      printf("  [decode %.1f ms, preprocess %.1f ms, inference %.1f ms",
             r->ms_decode, r->ms_preprocess, r->ms_inference);
      if (cam_out)
        printf(", Grad-CAM %.2f ms -> %s (%s)", ex.ms_cam, cam_path,
               info->labels[ex.class_index]);
      printf("]\n");
    }
  }
  free(r);
  dm_predictor_free(p);
  dm_model_release(m);
  free(images);
  return failures ? 1 : 0;
usage:
  fputs(predict_help, stderr);
  free(images);
  return 2;
}

/* ---------- eval ---------- */

static const char eval_help[] =
    "usage: dermal eval [--model M] --images DIR --labels CSV [--json]\n"
    "                   [--plot PNG] [--compare M2] [--threads N]\n"
    "                   [--backend ref|onednn] [--precision P]\n"
    "                   [--compare-precision P]\n"
    "  CSV has a header naming the columns image_id and dx; each image is\n"
    "  DIR/<image_id>.jpg or .png (or image_id itself when it has an\n"
    "  extension).  Prints accuracy, balanced accuracy (mean per-class recall\n"
    "  over the classes present), per-class precision/recall/F1/support,\n"
    "  macro F1, the confusion matrix (rows = truth) and the expected\n"
    "  calibration error.  Unreadable images are skipped and counted.\n"
    "  --compare M2 also runs M2 (e.g. the int8 model) on the same images and\n"
    "  prints its metrics beside M's, with their top-1 agreement.\n"
    "  --precision fp32|bf16|auto is M's compute precision (default fp32);\n"
    "  --compare-precision P runs M2 at P (default: M's precision), and\n"
    "  without --compare compares M with itself: `--compare-precision bf16`\n"
    "  measures what bf16 compute changes.\n";

typedef struct row {
  char *id, *dx;
} row;

/* Splits one CSV line in place (quotes allowed, no embedded newlines). */
static int csv_fields(char *line, char **f, int max) {
  int n = 0;
  char *p = line;
  while (n < max) {
    if (*p == '"') {
      char *w = ++p;
      f[n++] = w;
      while (*p && !(*p == '"' && p[1] != '"')) {
        if (*p == '"') p++;
        *w++ = *p++;
      }
      if (*p == '"') p++;
      *w = 0;
      if (*p == ',')
        p++;
      else
        break;
      continue;
    }
    f[n++] = p;
    char *c = strchr(p, ',');
    if (!c) break;
    *c = 0;
    p = c + 1;
  }
  for (int i = 0; i < n; i++) {
    size_t l = strlen(f[i]);
    while (l &&
           (f[i][l - 1] == '\r' || f[i][l - 1] == '\n' || f[i][l - 1] == ' '))
      f[i][--l] = 0;
  }
  return n;
}

static row *read_labels(const char *path, size_t *n_out) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    return NULL;
  }
  char line[4096];
  char *fields[64];
  int c_id = -1, c_dx = -1;
  if (!fgets(line, sizeof line, f)) {
    fprintf(stderr, "dermal: %s: empty\n", path);
    fclose(f);
    return NULL;
  }
  int nf = csv_fields(line, fields, 64);
  for (int i = 0; i < nf; i++) {
    if (!strcmp(fields[i], "image_id")) c_id = i;
    if (!strcmp(fields[i], "dx")) c_dx = i;
  }
  if (c_id < 0 || c_dx < 0) {
    fprintf(stderr, "dermal: %s: header must name columns image_id and dx\n",
            path);
    fclose(f);
    return NULL;
  }
  size_t n = 0, cap = 256;
  row *rows = malloc(cap * sizeof *rows);
  while (rows && fgets(line, sizeof line, f)) {
    nf = csv_fields(line, fields, 64);
    if (nf <= c_id || nf <= c_dx || !fields[c_id][0]) continue;
    if (n == cap) {
      row *nr = realloc(rows, 2 * cap * sizeof *rows);
      if (!nr) break;
      rows = nr;
      cap *= 2;
    }
    rows[n].id = strdup(fields[c_id]);
    rows[n].dx = strdup(fields[c_dx]);
    if (!rows[n].id || !rows[n].dx) break;
    n++;
  }
  fclose(f);
  *n_out = n;
  return rows;
}

static char *image_path(const char *dir, const char *id) {
  static const char *const exts[] = {"", ".jpg", ".jpeg", ".png", ".webp"};
  size_t cap = strlen(dir) + strlen(id) + 8;
  char *p = malloc(cap);
  if (!p) return NULL;
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    snprintf(p, cap, "%s/%s%s", dir, id, exts[i]);
    if (i == 0 && !strchr(id, '.')) continue;
    if (access(p, R_OK) == 0) return p;
  }
  free(p);
  return NULL;
}

/* Confusion matrix and calibration bins of one model over a run. */
enum { BINS = 15 };
typedef struct tally {
  size_t K;
  size_t *conf; /* K x K, rows = truth */
  double bin_conf[BINS], bin_acc[BINS];
  size_t bin_n[BINS];
  size_t ood_n, ood_out; /* images with an OOD score; those above threshold */
} tally;

typedef struct scores {
  size_t total, present;
  double acc, bal, macro_f1, ece;
  double *prec, *rec, *f1;
  size_t *support;
} scores;

static void tally_add(tally *t, size_t truth, const dm_prediction *r) {
  size_t pred = (size_t)r->order[0];
  t->conf[truth * t->K + pred]++;
  double c = (double)r->prob[pred];
  int b = (int)(c * BINS);
  b = b < 0 ? 0 : b >= BINS ? BINS - 1 : b;
  t->bin_conf[b] += c;
  t->bin_acc[b] += pred == truth;
  t->bin_n[b]++;
  if (r->has_ood) {
    t->ood_n++;
    t->ood_out += !r->in_distribution;
  }
}

static void scores_free(scores *s) {
  free(s->prec);
  free(s->rec);
  free(s->f1);
  free(s->support);
}

/* Accuracy, balanced accuracy (mean recall over classes present), macro F1
 * (same classes), per-class precision/recall/F1/support, ECE. */
static int scores_compute(const tally *t, scores *s) {
  size_t K = t->K;
  memset(s, 0, sizeof *s);
  s->prec = calloc(K, sizeof *s->prec);
  s->rec = calloc(K, sizeof *s->rec);
  s->f1 = calloc(K, sizeof *s->f1);
  s->support = calloc(K, sizeof *s->support);
  if (!s->prec || !s->rec || !s->f1 || !s->support) {
    scores_free(s);
    return -1;
  }
  size_t correct = 0;
  for (size_t c = 0; c < K; c++) {
    size_t tp = t->conf[c * K + c], col = 0;
    for (size_t j = 0; j < K; j++) {
      s->support[c] += t->conf[c * K + j];
      col += t->conf[j * K + c];
    }
    s->total += s->support[c];
    correct += tp;
    s->prec[c] = col ? (double)tp / (double)col : 0;
    s->rec[c] = s->support[c] ? (double)tp / (double)s->support[c] : 0;
    s->f1[c] = s->prec[c] + s->rec[c] > 0
                   ? 2 * s->prec[c] * s->rec[c] / (s->prec[c] + s->rec[c])
                   : 0;
    if (s->support[c]) {
      s->present++;
      s->bal += s->rec[c];
      s->macro_f1 += s->f1[c];
    }
  }
  s->acc = s->total ? (double)correct / (double)s->total : 0;
  s->bal = s->present ? s->bal / (double)s->present : 0;
  s->macro_f1 = s->present ? s->macro_f1 / (double)s->present : 0;
  for (int b = 0; b < BINS; b++)
    if (t->bin_n[b])
      s->ece += (double)t->bin_n[b] / (double)(s->total ? s->total : 1) *
                fabs(t->bin_acc[b] / (double)t->bin_n[b] -
                     t->bin_conf[b] / (double)t->bin_n[b]);
  return 0;
}

/* The JSON members of one model's scores (no braces). */
static void scores_json(const tally *t, const scores *s,
                        const dm_model_info *info) {
  size_t K = t->K;
  printf("\"n\":%zu,\"accuracy\":%.6f,\"balanced_accuracy\":%.6f,"
         "\"macro_f1\":%.6f,\"ece\":%.6f,",
         s->total, s->acc, s->bal, s->macro_f1, s->ece);
  if (t->ood_n)
    printf("\"ood_rejected\":%zu,\"ood_rejected_rate\":%.6f,"
           "\"ood_threshold\":%.6g,",
           t->ood_out, (double)t->ood_out / (double)t->ood_n,
           (double)info->ood_threshold);
  else
    printf("\"ood_rejected\":null,\"ood_rejected_rate\":null,"
           "\"ood_threshold\":null,");
  printf("\"labels\":[");
  for (size_t c = 0; c < K; c++) {
    if (c) putchar(',');
    dm_cli_json_str(stdout, info->labels[c]);
  }
  printf("],\"per_class\":{");
  for (size_t c = 0; c < K; c++) {
    if (c) putchar(',');
    dm_cli_json_str(stdout, info->labels[c]);
    printf(":{\"precision\":%.6f,\"recall\":%.6f,\"f1\":%.6f,\"support\":%zu}",
           s->prec[c], s->rec[c], s->f1[c], s->support[c]);
  }
  printf("},\"confusion\":[");
  for (size_t r = 0; r < K; r++) {
    printf("%s[", r ? "," : "");
    for (size_t c = 0; c < K; c++)
      printf("%s%zu", c ? "," : "", t->conf[r * K + c]);
    putchar(']');
  }
  putchar(']');
}

static void scores_text(const tally *t, const scores *s,
                        const dm_model_info *info) {
  size_t K = t->K;
  printf("accuracy           %.4f\n", s->acc);
  printf("balanced accuracy  %.4f  (mean recall over %zu classes present)\n",
         s->bal, s->present);
  printf("macro F1           %.4f\n", s->macro_f1);
  printf("ECE                %.4f  (15 bins)\n", s->ece);
  if (t->ood_n)
    printf("out of distr.      %zu of %zu (%.2f%%) above the OOD threshold "
           "%.6g\n",
           t->ood_out, t->ood_n, 100.0 * (double)t->ood_out / (double)t->ood_n,
           (double)info->ood_threshold);
  putchar('\n');
  printf("%-8s %9s %9s %9s %8s\n", "class", "precision", "recall", "f1",
         "support");
  for (size_t c = 0; c < K; c++)
    printf("%-8s %9.4f %9.4f %9.4f %8zu\n", info->labels[c], s->prec[c],
           s->rec[c], s->f1[c], s->support[c]);
  printf("\nconfusion (rows = truth, columns = prediction)\n%8s", "");
  for (size_t c = 0; c < K; c++)
    printf(" %6.6s", info->labels[c]);
  putchar('\n');
  for (size_t r = 0; r < K; r++) {
    printf("%-8.8s", info->labels[r]);
    for (size_t c = 0; c < K; c++)
      printf(" %6zu", t->conf[r * K + c]);
    putchar('\n');
  }
}

int dm_cli_eval(int argc, char **argv) {
  const char *model = NULL, *dir = NULL, *labels = NULL, *plot = NULL,
             *compare = NULL;
  bool json = false, cmp_prec = false;
  dm_model_opts mo = {0};
  dm_precision p2prec = DM_PRECISION_FP32;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    bool has = i + 1 < argc;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(eval_help, stdout);
      return 0;
    } else if (!strcmp(a, "--json")) {
      json = true;
    } else if (!strcmp(a, "--model") && has) {
      if (dm_cli_set_model("eval", &model, argv[++i])) return 2;
    } else if (!strcmp(a, "--compare") && has) {
      compare = argv[++i];
    } else if (!strcmp(a, "--precision") && has) {
      if (dm_cli_parse_precision(a, argv[++i], &mo.precision)) return 2;
    } else if (!strcmp(a, "--compare-precision") && has) {
      if (dm_cli_parse_precision(a, argv[++i], &p2prec)) return 2;
      cmp_prec = true;
    } else if (!strcmp(a, "--images") && has) {
      dir = argv[++i];
    } else if (!strcmp(a, "--labels") && has) {
      labels = argv[++i];
    } else if (!strcmp(a, "--plot") && has) {
      plot = argv[++i];
    } else if (!strcmp(a, "--threads") && has) {
      if (dm_cli_parse_int(a, argv[++i], 1, 256, &mo.threads)) return 2;
    } else if (!strcmp(a, "--backend") && has) {
      const char *b = argv[++i];
      if (!strcmp(b, "ref"))
        mo.backend = DM_BACKEND_REF;
      else if (strcmp(b, "onednn")) {
        fprintf(stderr, "dermal: --backend is ref or onednn\n");
        return 2;
      }
    } else if (a[0] != '-') {
      if (dm_cli_set_model("eval", &model, a)) return 2;
    } else {
      fprintf(stderr, "dermal: unknown option '%s' (or missing value)\n%s", a,
              eval_help);
      return 2;
    }
  }
  if (!dir || !labels) {
    fprintf(stderr, "dermal eval: --images and --labels are required\n%s",
            eval_help);
    return 2;
  }
  if (!model) model = dm_cli_default_model();
  if (cmp_prec && !compare) compare = model;
  dm_model_opts mo2 = mo;
  if (cmp_prec) mo2.precision = p2prec;
  size_t n_rows = 0;
  row *rows = read_labels(labels, &n_rows);
  if (!rows) return 1;
  dm_model *m = NULL, *m2 = NULL;
  dm_predictor *p = NULL, *p2 = NULL;
  int ret = 1;
  tally t1 = {0}, t2 = {0};
  scores s1 = {0}, s2 = {0};
  dm_prediction *r = NULL, *r2 = NULL;
  if (open_model(model, &mo, &m, &p)) goto out;
  if (compare && open_model(compare, &mo2, &m2, &p2)) goto out;
  const char *prec1 = dm_engine_precision_name(dm_model_engine(m));
  const char *prec2 = m2 ? dm_engine_precision_name(dm_model_engine(m2)) : "";
  char lab1[64], lab2[64] = "";
  dm_cli_precision_label(dm_model_engine(m), lab1, sizeof lab1);
  if (m2) dm_cli_precision_label(dm_model_engine(m2), lab2, sizeof lab2);
  size_t i8_1 = dm_engine_get_stats(dm_model_engine(m))->int8_ops,
         i8_2 = m2 ? dm_engine_get_stats(dm_model_engine(m2))->int8_ops : 0;
  const dm_model_info *info = dm_model_get_info(m);
  size_t K = info->n_classes;
  if (m2) { /* the same classes in the same order, or comparing is moot */
    const dm_model_info *i2 = dm_model_get_info(m2);
    bool same = i2->n_classes == K;
    for (size_t c = 0; same && c < K; c++)
      same = !strcmp(i2->labels[c], info->labels[c]);
    if (!same) {
      fprintf(stderr, "dermal eval: --compare %s has other labels than %s\n",
              compare, model);
      goto out;
    }
  }
  t1.K = t2.K = K;
  t1.conf = calloc(K * K, sizeof *t1.conf);
  t2.conf = calloc(K * K, sizeof *t2.conf);
  r = malloc(sizeof *r);
  r2 = malloc(sizeof *r2);
  if (!t1.conf || !t2.conf || !r || !r2) goto out;
  size_t skipped = 0, unknown = 0, done = 0, agree = 0;
  bool tty = isatty(2);
  double t0 = dm_cli_now_ms();
  for (size_t i = 0; i < n_rows; i++) {
    size_t truth = K;
    for (size_t c = 0; c < K; c++)
      if (!strcmp(info->labels[c], rows[i].dx)) truth = c;
    if (truth == K) {
      unknown++;
      continue;
    }
    char *path = image_path(dir, rows[i].id);
    char err[256];
    size_t len = 0;
    void *bytes =
        path ? dm_cli_read_file(path, MAX_IMAGE_BYTES, &len, err, sizeof err)
             : NULL;
    dm_errbuf eb = {{0}};
    bool bad = !bytes || dm_predict(p, bytes, len, NULL, r, &eb) ||
               (m2 && dm_predict(p2, bytes, len, NULL, r2, &eb));
    if (bad) {
      skipped++;
      if (!json || tty)
        fprintf(stderr, "%sdermal: skipped %s: %s\n", tty ? "\r" : "",
                rows[i].id,
                !path    ? "not found"
                : !bytes ? err
                         : eb.msg);
      free(bytes);
      free(path);
      continue;
    }
    free(bytes);
    free(path);
    tally_add(&t1, truth, r);
    if (m2) {
      tally_add(&t2, truth, r2);
      agree += r->order[0] == r2->order[0];
    }
    done++;
    if (tty && (done % 10 == 0 || i + 1 == n_rows)) {
      int w = 30, f = (int)((double)w * (double)(i + 1) / (double)n_rows);
      fprintf(stderr, "\r[%.*s%*s] %zu/%zu  %.0f img/s", f,
              "==============================", w - f, "", i + 1, n_rows,
              (double)done * 1e3 / (dm_cli_now_ms() - t0 + 1e-9));
    }
  }
  if (tty) fputc('\n', stderr);
  if (scores_compute(&t1, &s1) || (m2 && scores_compute(&t2, &s2))) goto out;
  double agreement = done ? (double)agree / (double)done : 0;
  if (json) {
    printf("{\"model\":");
    dm_cli_json_str(stdout, model);
    printf(",\"precision\":\"%s\",\"int8_ops\":%zu", prec1, i8_1);
    printf(",\"skipped\":%zu,\"unknown_labels\":%zu,", skipped, unknown);
    scores_json(&t1, &s1, info);
    if (m2) {
      printf(",\"compare\":{\"model\":");
      dm_cli_json_str(stdout, compare);
      printf(",\"precision\":\"%s\",\"int8_ops\":%zu", prec2, i8_2);
      printf(",\"top1_agreement\":%.6f,\"balanced_accuracy_delta\":%.6f,",
             agreement, s2.bal - s1.bal);
      scores_json(&t2, &s2, info);
      putchar('}');
    }
    printf("}\n");
  } else {
    printf("model              %s (%s)\n", model, lab1);
    printf("images             %zu evaluated, %zu skipped, %zu with labels "
           "the model lacks\n",
           s1.total, skipped, unknown);
    scores_text(&t1, &s1, info);
    if (m2) {
      printf("\ncompared with      %s (%s)\n", compare, lab2);
      printf("top-1 agreement    %.4f\n", agreement);
      printf("accuracy           %.4f  (%+.4f)\n", s2.acc, s2.acc - s1.acc);
      printf("balanced accuracy  %.4f  (%+.4f)\n", s2.bal, s2.bal - s1.bal);
      printf("macro F1           %.4f  (%+.4f)\n", s2.macro_f1,
             s2.macro_f1 - s1.macro_f1);
      printf("ECE                %.4f  (%+.4f)\n", s2.ece, s2.ece - s1.ece);
    }
  }
  ret = 0;
  if (plot) {
    char err[256];
    if (dm_cli_plot_confusion(plot, info->labels, K, t1.conf, err,
                              sizeof err)) {
      fprintf(stderr, "dermal: --plot %s: %s\n", plot, err);
      ret = 1;
    }
  }
out:
  scores_free(&s1);
  scores_free(&s2);
  free(r);
  free(r2);
  free(t1.conf);
  free(t2.conf);
  dm_predictor_free(p);
  dm_predictor_free(p2);
  dm_model_release(m);
  dm_model_release(m2);
  for (size_t i = 0; i < n_rows; i++) {
    free(rows[i].id);
    free(rows[i].dx);
  }
  free(rows);
  return ret;
}
