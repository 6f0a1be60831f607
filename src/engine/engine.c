/* engine.c: the public engine API (include/dermal/engine.h) over the graph
 * builder and the two backends.
 *
 * dm_engine owns the optimised graph and the backend's per-model state; both
 * are read-only after dm_engine_new, so sessions on different threads share
 * them without locks.  A dm_session owns the backend's per-run scratch and the
 * output buffers handed back by dm_session_output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

struct dm_engine {
  dm_graph *g;
  const dm_backend *be;
  void *state;
  dm_engine_opts opts;
  dm_engine_stats stats;
  void **cam_op; /* Grad-CAM section: per node, the backend's backward op */
};

struct dm_session {
  const dm_engine *e;
  void *sess;
  void **outs;       /* one buffer per graph output */
  const void **ins;  /* scratch for input pointers (last run's inputs) */
  bool ran;          /* a run completed: outputs hold values */
  dm_cam_state *cam; /* Grad-CAM tail buffers, when built with cam */
  float *cam_grad;   /* (c, h, w) */
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Aligns every constant some C code will read.  With oneDNN, Conv and Gemm
 * weights (input 1) are only read by oneDNN's reorder into its own layout,
 * so they stay in place in the mapped file: zero copy. */
static dm_err align_consts(dm_graph *g, dm_backend_kind be, dm_errbuf *eb) {
  bool *keep = calloc((size_t)g->n_values + 1, 1);
  if (!keep) return dm_errf(eb, DM_NOMEM, "out of memory");
  if (be == DM_BACKEND_ONEDNN)
    for (int i = 0; i < g->n_nodes; i++) {
      const dm_node *n = &g->nodes[i];
      if ((n->op == DM_OP_CONV || n->op == DM_OP_GEMM) && n->n_in > 1)
        keep[n->in[1]] = true;
    }
  /* a weight also read by another node must be aligned after all */
  for (int i = 0; i < g->n_nodes; i++) {
    const dm_node *n = &g->nodes[i];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0 &&
          !((n->op == DM_OP_CONV || n->op == DM_OP_GEMM) && k == 1))
        keep[n->in[k]] = false;
  }
  for (int k = 0; k < g->n_outputs; k++)
    keep[g->outputs[k]] = false;
  for (int k = 0; k < g->n_keep; k++)
    keep[g->keep[k]] = false; /* handed out */
  for (int i = 0; i < g->n_cam_tail;
       i++) { /* read by grad.c in C, and by the backward ops as plain arrays */
    const dm_node *n = &g->nodes[g->cam_tail[i]];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0) keep[n->in[k]] = false;
  }
  dm_err rc = DM_OK;
  for (int v = 0; v < g->n_values && !rc; v++)
    if (!keep[v] && dm__graph_align_const(g, v) != DM_OK)
      rc = dm_errf(eb, DM_NOMEM, "out of memory aligning constants");
  free(keep);
  return rc;
}

/* Grad-CAM section: the backend's backward operators for its Conv and
 * pooling nodes, created once here (grad.c runs the rest in plain C). */
static dm_err cam_ops_new(dm_engine *e, dm_errbuf *eb) {
  const dm_graph *g = e->g;
  const dm_grad_ops *ops = e->be->grad;
  if (!g->cam_section || !ops || !ops->op_new) return DM_OK;
  e->cam_op = calloc((size_t)g->n_nodes + 1, sizeof *e->cam_op);
  if (!e->cam_op) return dm_errf(eb, DM_NOMEM, "out of memory");
  for (int i = 0; i < g->n_cam_tail; i++) {
    int ni = g->cam_tail[i];
    dm_op op = g->nodes[ni].op;
    if (op != DM_OP_CONV && op != DM_OP_MAXPOOL && op != DM_OP_AVGPOOL)
      continue;
    dm_err rc = ops->op_new(e->state, ni, &e->cam_op[ni], eb);
    if (rc) return rc;
  }
  return DM_OK;
}

dm_err dm_engine_new(const dm_onnx_model *m, const dm_engine_opts *opts,
                     dm_engine **out, dm_errbuf *eb) {
  double t0 = now_ms();
  dm_err rc = DM_NOMEM;
  dm_engine *e = calloc(1, sizeof *e);
  if (!e) return dm_errf(eb, DM_NOMEM, "out of memory");
  if (opts) e->opts = *opts;
  if (e->opts.threads <= 0) e->opts.threads = 1;
  e->be = e->opts.backend == DM_BACKEND_REF ? &dm__backend_ref
                                            : &dm__backend_onednn;
  dm_graph_opts go = {.fuse = !e->opts.no_opt,
                      .alias_views = true,
                      .input_shapes = e->opts.input_shapes,
                      .n_input_shapes = e->opts.n_input_shapes,
                      .cam = e->opts.cam,
                      .cam_target = e->opts.cam_target,
                      .keep = e->opts.keep,
                      .n_keep = e->opts.n_keep,
                      .int8_wmax = e->opts.backend != DM_BACKEND_REF &&
                                           dm__onednn_int8_saturates()
                                       ? 64
                                       : 0};
  if ((rc = dm__graph_build(m, &go, &e->g, eb)) != DM_OK) goto fail;
  if ((rc = align_consts(e->g, e->opts.backend, eb)) != DM_OK) goto fail;
  if ((rc = e->be->prepare(e->g, &e->opts, &e->state, eb)) != DM_OK) goto fail;
  if ((rc = cam_ops_new(e, eb)) != DM_OK) goto fail;
  e->stats = e->g->stats; /* after prepare: includes aligned copies */
  if (e->be->arena_bytes) e->stats.arena_bytes = e->be->arena_bytes(e->state);
  e->stats.load_ms = now_ms() - t0;
  *out = e;
  return DM_OK;
fail:
  dm_engine_free(e);
  return rc;
}

void dm_engine_free(dm_engine *e) {
  if (!e) return;
  if (e->cam_op)
    for (int i = 0; i < e->g->n_nodes; i++)
      if (e->cam_op[i]) e->be->grad->op_free(e->cam_op[i]);
  free(e->cam_op);
  if (e->state) e->be->release(e->state);
  dm__graph_free(e->g);
  free(e);
}

const dm_engine_stats *dm_engine_get_stats(const dm_engine *e) {
  return &e->stats;
}

const char *dm_engine_backend_name(const dm_engine *e) { return e->be->name; }

const char *dm_engine_precision_name(const dm_engine *e) {
  return e->be->precision ? e->be->precision(e->state) : "fp32";
}

const char *dm_engine_precision_resolve(dm_backend_kind backend,
                                        dm_precision p) {
  if (backend == DM_BACKEND_REF || p == DM_PRECISION_FP32) return "fp32";
  return dm__onednn_bf16_native() ? "bf16" : "fp32";
}

size_t dm_engine_n_inputs(const dm_engine *e) { return (size_t)e->g->n_inputs; }
size_t dm_engine_n_outputs(const dm_engine *e) {
  return (size_t)e->g->n_user_outputs; /* a Grad-CAM target comes after */
}

const char *dm_engine_cam_target(const dm_engine *e) {
  return e->g->cam_target >= 0 ? e->g->values[e->g->cam_target].name : "";
}

static dm_tensor describe(const dm_value *v) {
  dm_tensor t;
  memset(&t, 0, sizeof t);
  t.dtype = v->dtype;
  t.rank = v->rank;
  memcpy(t.dims, v->dims, sizeof t.dims);
  return t;
}

dm_tensor dm_engine_input(const dm_engine *e, size_t i, const char **name) {
  const dm_value *v = &e->g->values[e->g->inputs[i]];
  if (name) *name = v->name;
  return describe(v);
}

dm_tensor dm_engine_output(const dm_engine *e, size_t i, const char **name) {
  const dm_value *v = &e->g->values[e->g->outputs[i]];
  if (name) *name = v->name;
  return describe(v);
}

dm_err dm_session_new(const dm_engine *e, dm_session **out, dm_errbuf *eb) {
  dm_err rc = DM_NOMEM;
  dm_session *s = calloc(1, sizeof *s);
  if (!s) return dm_errf(eb, DM_NOMEM, "out of memory");
  s->e = e;
  s->outs = calloc((size_t)e->g->n_outputs + 1, sizeof *s->outs);
  s->ins = calloc((size_t)e->g->n_inputs + 1, sizeof *s->ins);
  if (!s->outs || !s->ins) goto nomem;
  for (int i = 0; i < e->g->n_outputs; i++) {
    size_t n = e->g->values[e->g->outputs[i]].nbytes;
    s->outs[i] = aligned_alloc(64, n ? (n + 63) & ~(size_t)63 : 64);
    if (!s->outs[i]) goto nomem;
  }
  if ((rc = e->be->session_new(e->state, &s->sess, eb)) != DM_OK) goto fail;
  if (e->g->cam_target >= 0) {
    if ((rc = dm__cam_state_new(e->g, &s->cam, eb)) != DM_OK) goto fail;
    s->cam_grad = malloc(e->g->values[e->g->cam_target].nbytes);
    if (!s->cam_grad) goto nomem;
  }
  *out = s;
  return DM_OK;
nomem:
  rc = dm_errf(eb, DM_NOMEM, "out of memory creating a session");
fail:
  dm_session_free(s);
  return rc;
}

void dm_session_free(dm_session *s) {
  if (!s) return;
  if (s->sess) s->e->be->session_free(s->sess);
  if (s->outs)
    for (int i = 0; i < s->e->g->n_outputs; i++)
      free(s->outs[i]);
  free(s->outs);
  free(s->ins);
  dm__cam_state_free(s->cam);
  free(s->cam_grad);
  free(s);
}

dm_err dm_session_run(dm_session *s, const dm_tensor *inputs, size_t n_inputs,
                      dm_errbuf *eb) {
  const dm_graph *g = s->e->g;
  if (n_inputs != (size_t)g->n_inputs)
    return dm_errf(eb, DM_ARG, "model takes %d inputs, got %zu", g->n_inputs,
                   n_inputs);
  for (int i = 0; i < g->n_inputs; i++) {
    const dm_value *v = &g->values[g->inputs[i]];
    const dm_tensor *t = &inputs[i];
    bool same = t->dtype == v->dtype && t->rank == v->rank;
    for (int d = 0; same && d < v->rank; d++)
      same = t->dims[d] == v->dims[d];
    if (!same) {
      char want[128], got[128];
      size_t o = 0;
      for (int d = 0; d < v->rank && o < sizeof want; d++)
        o += (size_t)snprintf(want + o, sizeof want - o, d ? "x%lld" : "%lld",
                              (long long)v->dims[d]);
      if (!v->rank) snprintf(want, sizeof want, "scalar");
      o = 0;
      for (int d = 0; d < t->rank && d < DM_MAX_RANK && o < sizeof got; d++)
        o += (size_t)snprintf(got + o, sizeof got - o, d ? "x%lld" : "%lld",
                              (long long)t->dims[d]);
      if (t->rank <= 0) snprintf(got, sizeof got, "scalar");
      return dm_errf(eb, DM_ARG, "input '%s' expects %s %s, got %s %s", v->name,
                     dm_onnx_dtype_name(v->dtype), want,
                     dm_onnx_dtype_name(t->dtype), got);
    }
    if (!t->data && v->nbytes)
      return dm_errf(eb, DM_ARG, "input '%s' has no data", v->name);
    s->ins[i] = t->data;
  }
  s->ran = false;
  dm_err rc = s->e->be->run(s->e->state, s->sess, s->ins, s->outs, eb);
  s->ran = rc == DM_OK;
  return rc;
}

dm_err dm_session_value(const dm_session *s, const char *name, dm_tensor *out,
                        dm_errbuf *eb) {
  const dm_graph *g = s->e->g;
  if (!s->ran) return dm_errf(eb, DM_ARG, "no completed run");
  int v = -1;
  for (int i = 0; i < g->n_keep && v < 0; i++)
    if (!strcmp(g->values[g->keep[i]].name, name)) v = g->keep[i];
  for (int i = 0; i < g->n_inputs && v < 0; i++)
    if (!strcmp(g->values[g->inputs[i]].name, name)) v = g->inputs[i];
  for (int i = 0; i < g->n_user_outputs && v < 0; i++)
    if (!strcmp(g->values[g->outputs[i]].name, name)) v = g->outputs[i];
  if (v < 0) return dm_errf(eb, DM_ARG, "tensor '%s' was not kept", name);
  dm_tensor t = describe(&g->values[v]);
  if (g->values[v].kind == DM_VAL_CONST)
    t.data = (void *)(uintptr_t)g->values[v].data; /* aligned at load */
  for (int i = 0; i < g->n_inputs; i++)
    if (g->inputs[i] == v) t.data = (void *)(uintptr_t)s->ins[i];
  for (int i = 0; i < g->n_outputs; i++)
    if (g->outputs[i] == v) t.data = s->outs[i];
  *out = t;
  return DM_OK;
}

dm_tensor dm_session_output(const dm_session *s, size_t i) {
  dm_tensor t = describe(&s->e->g->values[s->e->g->outputs[i]]);
  t.data = s->outs[i];
  return t;
}

dm_err dm_session_run_cam(dm_session *s, const dm_tensor *inputs,
                          size_t n_inputs, int class_index, dm_cam_result *out,
                          dm_errbuf *eb) {
  const dm_graph *g = s->e->g;
  if (!s->cam)
    return dm_errf(eb, DM_ARG, "the engine was built without Grad-CAM");
  dm_err rc = dm_session_run(s, inputs, n_inputs, eb);
  if (rc) return rc;
  int slot = -1;
  for (int i = 0; i < g->n_outputs; i++)
    if (g->outputs[i] == g->cam_target) slot = i;
  const float *act = s->outs[slot];
  const dm_value *t = &g->values[g->cam_target];
  double t0 = now_ms();
  dm_cam_io io = {.activation = act,
                  .scores = g->cam_score == g->outputs[0] ? s->outs[0] : NULL,
                  .outs = (const void *const *)s->outs,
                  .ops = s->e->be->grad,
                  .op = s->e->cam_op};
  if ((rc = dm__cam_backward(g, s->cam, &io, class_index, &out->class_index,
                             &out->score, s->cam_grad, eb)))
    return rc;
  out->ms_tail = now_ms() - t0;
  out->c = t->dims[1];
  out->h = t->dims[2];
  out->w = t->dims[3];
  out->activation = act;
  out->gradient = s->cam_grad;
  return DM_OK;
}

dm_err dm_engine_cam_preview(const dm_onnx_model *m, const char *target,
                             char *out, size_t n, dm_errbuf *eb) {
  dm_graph *g = NULL;
  dm_graph_opts go = {.fuse = false, .cam = true, .cam_target = target};
  dm_err rc = dm__graph_build(m, &go, &g, eb);
  if (!rc) snprintf(out, n, "%s", g->values[g->cam_target].name);
  dm__graph_free(g);
  return rc;
}
