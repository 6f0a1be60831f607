/* meta.c: `dermal meta`, which reads and writes the metadata_props dermal
 * uses (docs/model-metadata.md), so a classifier exported elsewhere becomes
 * a dermal model without Python:
 *   dermal meta MODEL                         print the metadata
 *   dermal meta MODEL --set k=v ... -o OUT    write a copy with keys set
 * The copy is written with the ONNX writer (src/onnx/writer.c) and then
 * opened as a classifier (dm_model_open) to prove the metadata is
 * consistent (label count, input size, ...); on failure it is removed. */
#include "meta.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dermal/model.h"
#include "dermal/onnx.h"
#include "dermal/onnxwrite.h"

static const char meta_help[] =
    "usage: dermal meta MODEL [--set KEY=VALUE]... [--unset KEY]... "
    "[-o OUT.onnx]\n"
    "  Without --set/--unset: prints the model's metadata_props.\n"
    "  With them: writes a copy to OUT with the keys changed, then opens it\n"
    "  as a dermal classifier to check the metadata (removing OUT if it does\n"
    "  not load).  Keys dermal reads: labels, label_names, input_size,\n"
    "  resize, resize_shorter, mean, std, color, layout, output,\n"
    "  gradcam_target, name, model_version (docs/model-metadata.md).\n";

int dm_cli_meta(int argc, char **argv) {
  const char *model = NULL, *out = NULL;
  const char **sets = calloc((size_t)argc + 1, sizeof *sets);
  const char **unsets = calloc((size_t)argc + 1, sizeof *unsets);
  int n_set = 0, n_unset = 0, ret = 2;
  dm_onnx_model *m = NULL;
  dm_onnx_prop *props = NULL;
  char **owned = NULL;
  if (!sets || !unsets) goto done;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    bool has = i + 1 < argc;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(meta_help, stdout);
      ret = 0;
      goto done;
    } else if (!strcmp(a, "--set") && has) {
      if (!strchr(argv[i + 1], '=') || argv[i + 1][0] == '=') {
        fprintf(stderr, "dermal meta: --set expects KEY=VALUE\n");
        goto done;
      }
      sets[n_set++] = argv[++i];
    } else if (!strcmp(a, "--unset") && has) {
      unsets[n_unset++] = argv[++i];
    } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has) {
      out = argv[++i];
    } else if (!strcmp(a, "--model") && has) {
      if (dm_cli_set_model("meta", &model, argv[++i])) goto done;
    } else if (a[0] != '-') {
      if (dm_cli_set_model("meta", &model, a)) goto done;
    } else {
      fprintf(stderr, "dermal meta: unknown option '%s'\n%s", a, meta_help);
      goto done;
    }
  }
  if (!model) {
    fprintf(stderr, "dermal meta: no model given\n%s", meta_help);
    goto done;
  }
  if ((n_set || n_unset) && !out) {
    fprintf(stderr, "dermal meta: --set/--unset need -o OUT.onnx\n");
    goto done;
  }
  dm_errbuf eb = {{0}};
  dm_err rc = dm_onnx_open(model, &m, &eb);
  ret = 1;
  if (rc) {
    fprintf(stderr, "dermal: %s\n", eb.msg);
    goto done;
  }
  if (!n_set && !n_unset) {
    for (size_t i = 0; i < m->n_metadata; i++) {
      dm_cli_text_str(stdout, m->metadata[i].key);
      putchar('=');
      dm_cli_text_str(stdout, m->metadata[i].value);
      putchar('\n');
    }
    ret = 0;
    goto done;
  }
  /* new list: old keys not unset or overridden, in order, then the sets */
  size_t cap = m->n_metadata + (size_t)n_set + 1, n = 0;
  props = calloc(cap, sizeof *props);
  owned = calloc((size_t)n_set + 1, sizeof *owned);
  if (!props || !owned) goto done;
  for (size_t i = 0; i < m->n_metadata; i++) {
    const char *k = m->metadata[i].key;
    bool drop = false;
    for (int j = 0; j < n_unset && !drop; j++)
      drop = !strcmp(unsets[j], k);
    for (int j = 0; j < n_set && !drop; j++) {
      size_t kl = (size_t)(strchr(sets[j], '=') - sets[j]);
      drop = strlen(k) == kl && !strncmp(sets[j], k, kl);
    }
    if (!drop) props[n++] = m->metadata[i];
  }
  for (int j = 0; j < n_set; j++) {
    owned[j] = strdup(sets[j]);
    if (!owned[j]) goto done;
    char *eq = strchr(owned[j], '=');
    *eq = 0;
    props[n].key = owned[j];
    props[n].value = eq + 1;
    n++;
  }
  dm_onnx_model copy = *m;
  copy.metadata = props;
  copy.n_metadata = n;
  if ((rc = dm_onnx_write(&copy, out, &eb))) {
    fprintf(stderr, "dermal meta: %s: %s\n", out, eb.msg);
    goto done;
  }
  dm_model *dm = NULL;
  if ((rc = dm_model_open(out, NULL, &dm, &eb))) {
    fprintf(stderr,
            "dermal meta: %s does not load as a classifier (%s); "
            "removed it\n",
            out, eb.msg);
    unlink(out);
    goto done;
  }
  const dm_model_info *info = dm_model_get_info(dm);
  printf("wrote %s: %zu classes, input %dx%d, %s resize; defaults used for: "
         "%s\n",
         out, info->n_classes, info->preproc.size_h, info->preproc.size_w,
         info->preproc.resize_mode == DM_RESIZE_DIRECT ? "direct"
                                                       : "shorter-side+crop",
         info->defaulted[0] ? info->defaulted : "nothing");
  dm_model_release(dm);
  ret = 0;
done:
  if (owned)
    for (int j = 0; j < n_set; j++)
      free(owned[j]);
  free(owned);
  free(props);
  dm_onnx_free(m);
  free(sets);
  free(unsets);
  return ret;
}
