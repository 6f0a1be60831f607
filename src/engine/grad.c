/* grad.c: the gradient half of Grad-CAM, in plain C (Convs and pooling
 * windows of an earlier target can go through backend operators).
 *
 * Grad-CAM needs, for one input, the activation A of a target tensor and
 * dScore_c/dA.  In image classifiers the ops after the natural target (the
 * last feature map before global pooling) are a short "tail": global
 * pooling, reshapes, one or a few Gemm/MatMul layers, activations, adds of
 * constants.  So the engine runs the normal forward pass with the target kept
 * as an extra output (one copy of a small tensor, 7x7xC), then this file
 * re-runs the tail forward from that activation with the reference kernels
 * (keeping every intermediate) and back-propagates the chosen score through
 * it.  A backward pass through the whole network, what pytorch-grad-cam
 * pays for, is never needed; the tail costs microseconds.
 *
 * dm__cam_resolve runs at build time, after the gate rewrites (x*sigmoid(x)
 * -> Swish, x*hardsigmoid(x) -> HardSwish) and before the other passes: it
 * picks the target (named, or automatic), walks the chain from the scores
 * back to it, refuses any op without a backward rule here (naming it), marks
 * the tail nodes no_fuse so they stay elementary, and appends the target to
 * the graph outputs so the memory plan and the backends keep it.
 *
 * Earlier targets (a "section"): when a user-chosen target sits before a
 * Conv (BatchNorm folded in, fused activations and residual Adds), a
 * MaxPool/AveragePool window, an Add/Sub/Mul/Div with broadcasting or a
 * Concat, the ops between target and scores are no longer a chain of cheap
 * C rules.  Then the graph is optimised as usual (fusions included), and
 * dm__cam_finish keeps every forward value the section's nodes read or write
 * as an extra graph output (copied out in plain layout by the backend after
 * each run).  The backward pass walks the section's nodes in reverse
 * topological order, accumulating d score / d value per value:
 *  - Conv: the fused post-ops first, in reverse.  A derivative is taken from
 *    the node's output y when that is exact (a trailing Relu/Clip/LeakyRelu/
 *    Sigmoid/Tanh/Elu/HardSigmoid, any Add: ResNet's [Add, Relu], MobileNet's
 *    [Clip]); otherwise (HardSwish, Swish, Gelu, or an activation before
 *    another post-op) the pre-activations are recomputed: conv + bias once,
 *    then each post-op, keeping every intermediate.  A residual Add passes the
 *    gradient to its addend.  Then backward data of the convolution;
 *  - pooling windows: max (to the first maximum of each window, as the
 *    forward picks it) and average (include/exclude padding, ceil mode);
 *  - the tail rules above for the rest.
 * The Conv and pooling steps go through the backend's dm_grad_ops when it
 * has them (oneDNN backward-data / pooling backward primitives created once
 * at load); the plain C versions here are the oracle and the fallback.  The
 * automatic target is always a tail: its cost does not change.
 *
 * Threading: the graph part is read-only after build; dm_cam_state is per
 * session. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CAM_MAX_TAIL 64

struct dm_cam_state {
  int n;
  float **fwd;    /* per tail node: its output (plain) */
  float *g0, *g1; /* gradient ping-pong buffers, max tail value size */
  int last_fwd;   /* tail nodes [0, last_fwd] must run forward; see below */
  /* section mode */
  int n_values;
  float **grad; /* per value: d score / d value, NULL outside the section */
  int *slot;    /* per value: index in g->outputs, or -1 */
  float *z[DM_MAX_POST + 1]; /* Conv pre-activations, max section value */
  float *tmp, *dz;           /* max section value */
};

/* Does the backward rule of n read its forward input x / its output y? */
static bool needs_x(const dm_node *n) {
  return n->op == DM_OP_UNARY || n->op == DM_OP_GLOBALMAXPOOL ||
         n->op == DM_OP_QUANTIZE || n->op == DM_OP_MAXPOOL ||
         (n->op == DM_OP_REDUCE && n->p.reduce.kind == DM_REDUCE_MAX);
}
static bool needs_y(const dm_node *n) { return n->op == DM_OP_UNARY; }

static const dm_value *val(const dm_graph *g, int v) { return &g->values[v]; }

/* Index of the node input that carries the activation (the only non-constant
 * one), or -1 when there is none or more than one. */
static int chain_input(const dm_graph *g, const dm_node *n) {
  int k = -1;
  for (int i = 0; i < n->n_in; i++) {
    if (n->in[i] < 0 || val(g, n->in[i])->kind == DM_VAL_CONST) continue;
    if (k >= 0) return -1;
    k = i;
  }
  return k;
}

static bool is_global_pool(const dm_graph *g, const dm_node *n) {
  const dm_value *x = val(g, n->in[0]);
  if (x->rank != 4 || x->dims[2] * x->dims[3] <= 1) return false;
  if (n->op == DM_OP_GLOBALAVGPOOL || n->op == DM_OP_GLOBALMAXPOOL) return true;
  if (n->op == DM_OP_REDUCE)
    return (n->p.reduce.kind == DM_REDUCE_MEAN ||
            n->p.reduce.kind == DM_REDUCE_MAX) &&
           n->p.reduce.axes_mask == 0xCu;
  if (n->op == DM_OP_AVGPOOL || n->op == DM_OP_MAXPOOL) {
    const dm_value *y = val(g, n->out[0]);
    return y->dims[2] == 1 && y->dims[3] == 1;
  }
  return false;
}

/* Activations with a derivative in dact(). */
static bool act_ok(dm_unary k) {
  switch (k) {
  case DM_UNARY_RELU:
  case DM_UNARY_LEAKYRELU:
  case DM_UNARY_CLIP:
  case DM_UNARY_SIGMOID:
  case DM_UNARY_TANH:
  case DM_UNARY_HARDSIGMOID:
  case DM_UNARY_HARDSWISH:
  case DM_UNARY_SWISH:
  case DM_UNARY_ELU:
  case DM_UNARY_GELU:
  case DM_UNARY_SOFTPLUS:
  case DM_UNARY_NEG: return true;
  default: return false;
  }
}

/* Does the tail know how to back-propagate through n (chain input k)? */
static const char *unsupported(const dm_graph *g, const dm_node *n, int k) {
  const dm_value *x = val(g, n->in[k]), *y = val(g, n->out[0]);
  if (n->n_out != 1) return "several outputs";
  /* A QuantizeLinear -> DequantizeLinear pair in a quantized model is
   * differentiated as fake quantization (straight-through, zero where the
   * quantizer saturates).  The 8-bit value between them is the only
   * non-float tensor a chain may carry: nothing else accepts one. */
  if (n->op == DM_OP_DEQUANTIZE)
    return k == 0 && (x->dtype == DM_ONNX_INT8 || x->dtype == DM_ONNX_UINT8)
               ? NULL
               : "DequantizeLinear of a non-8-bit tensor";
  if (x->dtype != DM_ONNX_FLOAT) return "non-float tensor";
  switch (n->op) {
  case DM_OP_QUANTIZE:
    return k == 0 && (y->dtype == DM_ONNX_INT8 || y->dtype == DM_ONNX_UINT8)
               ? NULL
               : "QuantizeLinear to a non-8-bit type";
  case DM_OP_RESHAPE:
  case DM_OP_GLOBALAVGPOOL:
  case DM_OP_GLOBALMAXPOOL: return NULL;
  case DM_OP_AVGPOOL:
  case DM_OP_MAXPOOL:
    for (int i = 0; i < n->p.pool.w.nsp; i++)
      if (y->dims[2 + i] != 1 || n->p.pool.w.pad_b[i] || n->p.pool.w.pad_e[i] ||
          n->p.pool.w.kernel[i] != x->dims[2 + i])
        return "pooling that is not global";
    return NULL;
  case DM_OP_REDUCE:
    return n->p.reduce.kind == DM_REDUCE_MEAN ||
                   n->p.reduce.kind == DM_REDUCE_SUM ||
                   n->p.reduce.kind == DM_REDUCE_MAX
               ? NULL
               : "this reduction";
  case DM_OP_UNARY: return act_ok(n->p.unary.kind) ? NULL : "this activation";
  case DM_OP_BINARY:
    if (x->numel != y->numel) return "a broadcast that expands the activation";
    switch (n->p.binary.kind) {
    case DM_BINARY_ADD:
    case DM_BINARY_SUB:
    case DM_BINARY_MUL: return NULL;
    case DM_BINARY_DIV: return k == 0 ? NULL : "division by the activation";
    default: return "this binary op";
    }
  case DM_OP_GEMM:
    return k == 0 && n->n_post == 0 ? NULL : "Gemm on its second input";
  case DM_OP_MATMUL:
    return k == 0 && x->rank == 2 && val(g, n->in[1])->rank == 2
               ? NULL
               : "MatMul other than [M,K] x constant [K,N]";
  default: return "this op";
  }
}

/* Nodes from target t to score s, forward order, into out (max entries). */
static dm_err walk_chain(const dm_graph *g, int s, int t, int *out, int *n_out,
                         dm_errbuf *eb) {
  int n = 0, v = s;
  while (v != t) {
    int p = val(g, v)->producer;
    if (p < 0)
      return dm_errf(eb, DM_UNSUPPORTED,
                     "Grad-CAM target '%s' does not lead to the scores along "
                     "a single chain of ops",
                     val(g, t)->name);
    const dm_node *nd = &g->nodes[p];
    int k = chain_input(g, nd);
    if (k < 0)
      return dm_errf(eb, DM_UNSUPPORTED,
                     "Grad-CAM: node '%s' (%s) between target and scores has "
                     "%s non-constant inputs",
                     nd->name, nd->op_type, k < 0 ? "several or no" : "");
    const char *why = unsupported(g, nd, k);
    if (why)
      return dm_errf(eb, DM_UNSUPPORTED,
                     "Grad-CAM: node '%s' (%s) between target '%s' and the "
                     "scores has no backward rule (%s); choose a later target",
                     nd->name, nd->op_type, val(g, t)->name, why);
    if (n == CAM_MAX_TAIL)
      return dm_errf(eb, DM_UNSUPPORTED,
                     "Grad-CAM: more than %d ops after "
                     "the target",
                     CAM_MAX_TAIL);
    out[n++] = p;
    v = nd->in[k];
  }
  for (int i = 0; i < n / 2; i++) {
    int tmp = out[i];
    out[i] = out[n - 1 - i];
    out[n - 1 - i] = tmp;
  }
  *n_out = n;
  return DM_OK;
}

/* ---------------------------------------------------------- section -- */

/* mark[v] bit 1: v depends on the target; bit 2: the score depends on v.
 * Nodes are in topological order.  NULL when out of memory. */
static uint8_t *section_marks(const dm_graph *g, int t, int s) {
  uint8_t *m = calloc((size_t)g->n_values + 1, 1);
  if (!m) return NULL;
  m[t] |= 1;
  for (int i = 0; i < g->n_nodes; i++) {
    const dm_node *n = &g->nodes[i];
    bool r = false;
    for (int k = 0; k < n->n_in; k++)
      r |= n->in[k] >= 0 && (m[n->in[k]] & 1);
    for (int k = 0; r && k < n->n_out; k++)
      m[n->out[k]] |= 1;
  }
  m[s] |= 2;
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    const dm_node *n = &g->nodes[i];
    bool r = false;
    for (int k = 0; k < n->n_out; k++)
      r |= (m[n->out[k]] & 2) != 0;
    for (int k = 0; r && k < n->n_in; k++)
      if (n->in[k] >= 0) m[n->in[k]] |= 2;
  }
  return m;
}

/* A node of the section: reads a value that depends on the target and
 * writes one the score depends on. */
static bool in_section(const dm_node *n, const uint8_t *m) {
  bool r = false;
  for (int k = 0; k < n->n_in; k++)
    r |= n->in[k] >= 0 && (m[n->in[k]] & 1);
  return r && (m[n->out[0]] & 2);
}

static bool is_const(const dm_graph *g, int v) {
  return v < 0 || val(g, v)->kind == DM_VAL_CONST;
}

/* Activations whose derivative follows exactly from their output. */
static bool dact_from_y(const dm_act *a) {
  switch (a->kind) {
  case DM_UNARY_RELU:
  case DM_UNARY_CLIP:
  case DM_UNARY_SIGMOID:
  case DM_UNARY_TANH:
  case DM_UNARY_HARDSIGMOID: return true;
  case DM_UNARY_LEAKYRELU:
  case DM_UNARY_ELU: return a->alpha > 0;
  default: return false;
  }
}

/* Backward rule for section node n (before or after fusion)? */
static const char *section_unsupported(const dm_graph *g, const dm_node *n,
                                       const uint8_t *m) {
  if (n->n_out != 1) return "several outputs";
  if (val(g, n->out[0])->dtype != DM_ONNX_FLOAT) return "non-float tensor";
  for (int k = 0; k < n->n_in; k++)
    if (n->in[k] >= 0 && (m[n->in[k]] & 1) &&
        val(g, n->in[k])->dtype != DM_ONNX_FLOAT)
      return "non-float tensor";
  switch (n->op) {
  case DM_OP_CONV:
    if (n->p.conv.w.nsp != 2) return "a Conv that is not 2-D";
    if (!is_const(g, n->in[1]) || (n->n_in > 2 && !is_const(g, n->in[2])))
      return "non-constant weights";
    for (int j = 0; j < n->n_post; j++)
      if (n->post[j].kind == DM_POST_ACT && !act_ok(n->post[j].act.kind))
        return "this fused activation";
    return NULL;
  case DM_OP_BATCHNORM:
    for (int k = 1; k < 5; k++)
      if (!is_const(g, n->in[k])) return "non-constant statistics";
    return NULL;
  case DM_OP_MAXPOOL:
  case DM_OP_AVGPOOL:
    return n->p.pool.w.nsp == 2 ? NULL : "pooling that is not 2-D";
  case DM_OP_BINARY:
    switch (n->p.binary.kind) {
    case DM_BINARY_ADD:
    case DM_BINARY_SUB:
    case DM_BINARY_MUL:
    case DM_BINARY_DIV:
      for (int k = 0; k < 2; k++)
        if (val(g, n->in[k])->dtype != DM_ONNX_FLOAT) return "non-float tensor";
      return NULL;
    default: return "this binary op";
    }
  case DM_OP_CONCAT: return NULL;
  case DM_OP_GEMM:
  case DM_OP_MATMUL:
    for (int k = 1; k < n->n_in; k++)
      if (!is_const(g, n->in[k])) return "a non-constant second operand";
    if (n->n_post) return "fused post-ops";
    return unsupported(g, n, 0);
  case DM_OP_RESHAPE:
  case DM_OP_GLOBALAVGPOOL:
  case DM_OP_GLOBALMAXPOOL:
  case DM_OP_REDUCE:
  case DM_OP_UNARY:
    for (int k = 1; k < n->n_in; k++)
      if (!is_const(g, n->in[k])) return "a non-constant second input";
    return unsupported(g, n, 0);
  default: return "this op";
  }
}

/* Checks every node between target t and score s; before fusion (resolve)
 * it also marks the nodes that must stay elementary.  Writes the section's
 * node indices in order into out (may be NULL). */
static dm_err section_walk(dm_graph *g, int t, int s, bool mark, int *out,
                           int *n_out, dm_errbuf *eb) {
  uint8_t *m = section_marks(g, t, s);
  if (!m) return dm_errf(eb, DM_NOMEM, "out of memory");
  dm_err rc = DM_OK;
  int cnt = 0;
  if (!(m[t] & 2))
    rc = dm_errf(eb, DM_UNSUPPORTED,
                 "Grad-CAM target '%s' does not lead to the scores",
                 val(g, t)->name);
  for (int i = 0; i < g->n_nodes && !rc; i++) {
    dm_node *n = &g->nodes[i];
    if (!in_section(n, m)) continue;
    const char *why = section_unsupported(g, n, m);
    if (why) {
      rc = dm_errf(eb, DM_UNSUPPORTED,
                   "Grad-CAM: node '%s' (%s) between target '%s' and the "
                   "scores has no backward rule (%s); choose a later target",
                   n->name, n->op_type, val(g, t)->name, why);
      break;
    }
    /* Conv, BatchNorm (folded), activations and residual Adds fuse as
     * usual: the Conv rule handles the result.  Gemm/MatMul stay bare. */
    if (mark && n->op != DM_OP_CONV && n->op != DM_OP_BATCHNORM &&
        n->op != DM_OP_UNARY &&
        !(n->op == DM_OP_BINARY && n->p.binary.kind == DM_BINARY_ADD))
      n->no_fuse = true;
    if (out) out[cnt] = i;
    cnt++;
  }
  free(m);
  if (n_out) *n_out = cnt;
  return rc;
}

static void set_producers(dm_graph *g) {
  for (int v = 0; v < g->n_values; v++)
    g->values[v].producer = -1;
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_out; k++)
      g->values[g->nodes[i].out[k]].producer = i;
}

dm_err dm__cam_resolve(dm_graph *g, const char *target, dm_errbuf *eb) {
  set_producers(g);
  if (g->n_outputs < 1) return dm_errf(eb, DM_UNSUPPORTED, "no outputs");
  int s = g->outputs[0];
  int p = val(g, s)->producer;
  if (p >= 0 && g->nodes[p].op == DM_OP_SOFTMAX) s = g->nodes[p].in[0];
  int t = -1;
  if (target && target[0]) {
    for (int v = 0; v < g->n_values && t < 0; v++)
      if (!strcmp(g->values[v].name, target)) t = v;
    if (t < 0)
      return dm_errf(eb, DM_ARG, "Grad-CAM target '%s': no such tensor",
                     target);
  } else {
    /* automatic: follow the chain back from the scores to global pooling */
    int v = s;
    for (int steps = 0; steps < CAM_MAX_TAIL && t < 0; steps++) {
      int q = val(g, v)->producer;
      if (q < 0) break;
      const dm_node *nd = &g->nodes[q];
      int k = chain_input(g, nd);
      if (k < 0) break;
      const dm_value *in = val(g, nd->in[k]);
      bool flat_map = nd->op == DM_OP_RESHAPE && in->rank == 4 &&
                      in->dims[2] * in->dims[3] > 1; /* VGG: Flatten + MLP */
      if (is_global_pool(g, nd) || flat_map) t = nd->in[k];
      v = nd->in[k];
    }
    if (t < 0)
      return dm_errf(eb, DM_UNSUPPORTED,
                     "Grad-CAM: found no global pooling between the scores "
                     "and a feature map; name a target tensor");
  }
  const dm_value *tv = val(g, t);
  if (tv->dtype != DM_ONNX_FLOAT || tv->rank != 4 || tv->dims[0] != 1)
    return dm_errf(eb, DM_UNSUPPORTED,
                   "Grad-CAM target '%s' must be a float [1,C,H,W] tensor",
                   tv->name);
  int tail[CAM_MAX_TAIL], nt = 0;
  dm_errbuf teb;
  dm_err rc = walk_chain(g, s, t, tail, &nt, &teb);
  if (rc == DM_UNSUPPORTED) {
    /* not a plain tail: backward through the section (Conv, pooling...) */
    if ((rc = section_walk(g, t, s, true, NULL, NULL, eb))) return rc;
    g->cam_section = true;
  } else if (rc) {
    return dm_errf(eb, rc, "%s", teb.msg);
  } else {
    for (int i = 0; i < nt; i++)
      g->nodes[tail[i]].no_fuse = true;
  }
  bool already = false;
  for (int i = 0; i < g->n_outputs; i++)
    already |= g->outputs[i] == t;
  if (!already) {
    g->outputs[g->n_outputs++] = t; /* room reserved by graph.c */
    g->values[t].is_output = true;
  }
  g->cam_target = t;
  g->cam_score = s;
  return DM_OK;
}

/* Called by graph.c after the passes: node indices changed. */
/* Section: the node list, and every non-constant value its nodes read or
 * write becomes a graph output (kept for the backward pass). */
static dm_err section_finish(dm_graph *g, dm_errbuf *eb) {
  int nt = 0;
  dm_err rc =
      section_walk(g, g->cam_target, g->cam_score, false, NULL, &nt, eb);
  if (rc) return rc;
  g->cam_tail = dm__graph_alloc(g, sizeof(int) * (size_t)(nt + 1));
  if (!g->cam_tail) return dm_errf(eb, DM_NOMEM, "out of memory");
  if ((rc = section_walk(g, g->cam_target, g->cam_score, false, g->cam_tail,
                         &nt, eb)))
    return rc;
  g->n_cam_tail = nt;
  int extra = 0;
  for (int i = 0; i < nt; i++)
    extra += g->nodes[g->cam_tail[i]].n_in + 1;
  int *outs = dm__graph_alloc(g, sizeof(int) * (size_t)(g->n_outputs + extra));
  if (!outs) return dm_errf(eb, DM_NOMEM, "out of memory");
  memcpy(outs, g->outputs, sizeof(int) * (size_t)g->n_outputs);
  g->outputs = outs;
  for (int i = 0; i < nt; i++) {
    const dm_node *n = &g->nodes[g->cam_tail[i]];
    for (int k = -1; k < n->n_in; k++) {
      int v = k < 0 ? n->out[0] : n->in[k];
      if (is_const(g, v) || g->values[v].is_output) continue;
      g->values[v].is_output = true;
      g->values[v].n_consumers++;
      g->outputs[g->n_outputs++] = v;
    }
  }
  return DM_OK;
}

dm_err dm__cam_finish(dm_graph *g, dm_errbuf *eb) {
  set_producers(g);
  if (g->cam_section) return section_finish(g, eb);
  int tail[CAM_MAX_TAIL], nt = 0;
  dm_err rc = walk_chain(g, g->cam_score, g->cam_target, tail, &nt, eb);
  if (rc) return rc;
  g->cam_tail = dm__graph_alloc(g, sizeof(int) * (size_t)(nt + 1));
  if (!g->cam_tail) return dm_errf(eb, DM_NOMEM, "out of memory");
  memcpy(g->cam_tail, tail, sizeof(int) * (size_t)nt);
  g->n_cam_tail = nt;
  return DM_OK;
}

/* Section: gradient buffers for the values between target and score, the
 * output slot of every kept value, scratch for the Conv rule. */
static dm_err section_state_new(const dm_graph *g, dm_cam_state *st) {
  st->n_values = g->n_values;
  st->grad = calloc((size_t)g->n_values + 1, sizeof *st->grad);
  st->slot = malloc(((size_t)g->n_values + 1) * sizeof *st->slot);
  if (!st->grad || !st->slot) return DM_NOMEM;
  for (int v = 0; v < g->n_values; v++)
    st->slot[v] = -1;
  for (int k = 0; k < g->n_outputs; k++)
    st->slot[g->outputs[k]] = k;
  uint8_t *m = section_marks(g, g->cam_target, g->cam_score);
  if (!m) return DM_NOMEM;
  size_t mx = 4;
  for (int v = 0; v < g->n_values; v++) {
    if (m[v] != 3 || is_const(g, v)) continue;
    size_t nb = val(g, v)->nbytes;
    if (nb > mx) mx = nb;
    st->grad[v] = malloc(nb ? nb : 4);
    if (!st->grad[v]) {
      free(m);
      return DM_NOMEM;
    }
  }
  free(m);
  for (int i = 0; i < st->n; i++) {
    const dm_node *n = &g->nodes[g->cam_tail[i]];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0 && val(g, n->in[k])->nbytes > mx)
        mx = val(g, n->in[k])->nbytes;
    if (val(g, n->out[0])->nbytes > mx) mx = val(g, n->out[0])->nbytes;
  }
  for (int j = 0; j <= DM_MAX_POST; j++)
    if (!(st->z[j] = malloc(mx))) return DM_NOMEM;
  st->tmp = malloc(mx);
  st->dz = malloc(mx);
  return st->tmp && st->dz ? DM_OK : DM_NOMEM;
}

dm_err dm__cam_state_new(const dm_graph *g, dm_cam_state **out, dm_errbuf *eb) {
  dm_cam_state *st = calloc(1, sizeof *st);
  if (!st) return dm_errf(eb, DM_NOMEM, "out of memory");
  st->n = g->n_cam_tail;
  if (g->cam_section) {
    if (section_state_new(g, st)) goto nomem;
    *out = st;
    return DM_OK;
  }
  st->fwd = calloc((size_t)st->n + 1, sizeof *st->fwd);
  /* gradients are float, also those of the 8-bit values of Q/DQ pairs */
  size_t mx = val(g, g->cam_target)->nbytes;
  for (int i = 0; st->fwd && i < st->n; i++) {
    const dm_value *y = val(g, g->nodes[g->cam_tail[i]].out[0]);
    size_t gb = (size_t)y->numel * sizeof(float);
    if (gb > mx) mx = gb;
    st->fwd[i] = malloc(y->nbytes ? y->nbytes : 4);
    if (!st->fwd[i]) goto nomem;
  }
  if (!st->fwd) goto nomem;
  /* Forward work is needed only up to the last node whose output some
   * backward rule reads; the final scores come from the engine's own output
   * when the score tensor is a graph output (dm__cam_backward's `scores`).
   * For a GAP + Flatten + Gemm head nothing runs forward at all. */
  st->last_fwd = -1;
  for (int i = 0; i < st->n; i++) {
    const dm_node *nd = &g->nodes[g->cam_tail[i]];
    if (needs_x(nd) && i - 1 > st->last_fwd) st->last_fwd = i - 1;
    if (needs_y(nd)) st->last_fwd = i;
  }
  st->g0 = malloc(mx);
  st->g1 = malloc(mx);
  if (!st->g0 || !st->g1) goto nomem;
  *out = st;
  return DM_OK;
nomem:
  dm__cam_state_free(st);
  return dm_errf(eb, DM_NOMEM, "out of memory");
}

void dm__cam_state_free(dm_cam_state *st) {
  if (!st) return;
  for (int i = 0; st->fwd && i < st->n; i++)
    free(st->fwd[i]);
  free(st->fwd);
  free(st->g0);
  free(st->g1);
  for (int v = 0; st->grad && v < st->n_values; v++)
    free(st->grad[v]);
  free(st->grad);
  free(st->slot);
  for (int j = 0; j <= DM_MAX_POST; j++)
    free(st->z[j]);
  free(st->tmp);
  free(st->dz);
  free(st);
}

/* Offset into constant c for output element i (numpy broadcasting). */
static int64_t bcast_off(const dm_value *c, const dm_value *y, int64_t i) {
  int64_t off = 0, stride = 1;
  for (int d = y->rank - 1; d >= 0; d--) {
    int64_t coord = i % y->dims[d];
    i /= y->dims[d];
    int cd = d - (y->rank - c->rank);
    if (cd >= 0) {
      if (c->dims[cd] != 1) off += coord * stride;
      stride *= c->dims[cd];
    }
  }
  return off;
}

static float dact(const dm_act *a, float x, float y) {
  switch (a->kind) {
  case DM_UNARY_RELU: return x > 0 ? 1.f : 0.f;
  case DM_UNARY_LEAKYRELU: return x > 0 ? 1.f : a->alpha;
  case DM_UNARY_CLIP: return x > a->alpha && x < a->beta ? 1.f : 0.f;
  case DM_UNARY_SIGMOID: return y * (1 - y);
  case DM_UNARY_TANH: return 1 - y * y;
  case DM_UNARY_HARDSIGMOID: {
    float z = a->alpha * x + a->beta;
    return z > 0 && z < 1 ? a->alpha : 0.f;
  }
  case DM_UNARY_HARDSWISH: return x < -3 ? 0.f : x > 3 ? 1.f : (2 * x + 3) / 6;
  case DM_UNARY_SWISH: {
    float s = 1 / (1 + expf(-x));
    return s + x * s * (1 - s);
  }
  case DM_UNARY_ELU: return x > 0 ? 1.f : y + a->alpha;
  case DM_UNARY_GELU:
    return 0.5f * (1 + erff(x * 0.70710678f)) +
           x * expf(-0.5f * x * x) * 0.39894228f;
  case DM_UNARY_SOFTPLUS: return 1 / (1 + expf(-x));
  case DM_UNARY_NEG: return -1.f;
  default: return 0.f; /* refused by unsupported() */
  }
}

/* dx = d(score)/d(chain input of n), given dy = d(score)/d(output). */
static void backward(const dm_graph *g, const dm_node *n, int k, const float *x,
                     const float *y, const float *dy, float *dx) {
  const dm_value *X = val(g, n->in[k]), *Y = val(g, n->out[0]);
  int64_t nx = X->numel;
  switch (n->op) {
  case DM_OP_RESHAPE: memcpy(dx, dy, (size_t)nx * sizeof *dx); return;
  case DM_OP_GLOBALAVGPOOL:
  case DM_OP_AVGPOOL:
  case DM_OP_GLOBALMAXPOOL:
  case DM_OP_MAXPOOL: {
    int64_t C = X->dims[0] * X->dims[1], inner = nx / (C ? C : 1);
    bool mx = n->op == DM_OP_GLOBALMAXPOOL || n->op == DM_OP_MAXPOOL;
    for (int64_t c = 0; c < C; c++) {
      float *d = dx + c * inner;
      const float *p = x + c * inner;
      if (!mx) {
        for (int64_t i = 0; i < inner; i++)
          d[i] = dy[c] / (float)inner;
        continue;
      }
      int64_t am = 0;
      for (int64_t i = 0; i < inner; i++) {
        d[i] = 0;
        if (p[i] > p[am]) am = i;
      }
      d[am] = dy[c];
    }
    return;
  }
  case DM_OP_REDUCE: {
    /* map each input element to its output element */
    int64_t ystride[DM_MAX_RANK], count = 1, s = 1;
    for (int d = X->rank - 1; d >= 0; d--) {
      bool red = n->p.reduce.axes_mask & (1u << d);
      ystride[d] = red ? 0 : s;
      if (red)
        count *= X->dims[d];
      else
        s *= X->dims[d];
    }
    if (n->p.reduce.kind == DM_REDUCE_MAX) {
      for (int64_t i = 0; i < nx; i++)
        dx[i] = 0;
      /* one winner per output element: the first maximum */
      for (int64_t o = 0; o < Y->numel; o++) {
        int64_t best = -1;
        for (int64_t i = 0; i < nx; i++) {
          int64_t r = i, yo = 0;
          for (int d = X->rank - 1; d >= 0; d--) {
            yo += (r % X->dims[d]) * ystride[d];
            r /= X->dims[d];
          }
          if (yo == o && (best < 0 || x[i] > x[best])) best = i;
        }
        if (best >= 0) dx[best] = dy[o];
      }
      return;
    }
    float f = n->p.reduce.kind == DM_REDUCE_MEAN ? 1.f / (float)count : 1.f;
    for (int64_t i = 0; i < nx; i++) {
      int64_t r = i, yo = 0;
      for (int d = X->rank - 1; d >= 0; d--) {
        yo += (r % X->dims[d]) * ystride[d];
        r /= X->dims[d];
      }
      dx[i] = dy[yo] * f;
    }
    return;
  }
  case DM_OP_UNARY:
    for (int64_t i = 0; i < nx; i++)
      dx[i] = dy[i] * dact(&n->p.unary, x[i], y[i]);
    return;
  case DM_OP_BINARY: {
    const dm_value *C = val(g, n->in[1 - k]);
    const float *c = C->data;
    for (int64_t i = 0; i < nx; i++) {
      float ci = c[bcast_off(C, Y, i)];
      switch (n->p.binary.kind) {
      case DM_BINARY_ADD: dx[i] = dy[i]; break;
      case DM_BINARY_SUB: dx[i] = k == 0 ? dy[i] : -dy[i]; break;
      case DM_BINARY_MUL: dx[i] = dy[i] * ci; break;
      case DM_BINARY_DIV: dx[i] = dy[i] / ci; break;
      default: dx[i] = 0; break;
      }
    }
    return;
  }
  case DM_OP_QUANTIZE:
  case DM_OP_DEQUANTIZE: {
    /* y = sat(round(x / s) + zp): dy / s where no saturation, else 0 (the
     * straight-through estimator of fake quantization); y = (x - zp) * s:
     * dy * s.  Through a pair with one scale the two factors cancel. */
    const float *sc = val(g, n->in[1])->data;
    const dm_value *Z = n->n_in > 2 && n->in[2] >= 0 ? val(g, n->in[2]) : NULL;
    int ax = n->p.quant.axis;
    int64_t inner = 1, dim = ax < 0 ? 1 : X->dims[ax];
    for (int d = ax < 0 ? X->rank : ax + 1; d < X->rank; d++)
      inner *= X->dims[d];
    int32_t qt = n->op == DM_OP_QUANTIZE ? Y->dtype : X->dtype;
    float lo = qt == DM_ONNX_UINT8 ? 0.f : -128.f,
          hi = qt == DM_ONNX_UINT8 ? 255.f : 127.f;
    for (int64_t i = 0; i < nx; i++) {
      int64_t ch = (i / inner) % dim;
      if (n->op == DM_OP_DEQUANTIZE) {
        dx[i] = dy[i] * sc[ch];
        continue;
      }
      float zp = 0.f;
      if (Z)
        zp = qt == DM_ONNX_UINT8 ? (float)((const uint8_t *)Z->data)[ch]
                                 : (float)((const int8_t *)Z->data)[ch];
      float q = nearbyintf(x[i] / sc[ch]) + zp;
      dx[i] = q >= lo && q <= hi ? dy[i] / sc[ch] : 0.f;
    }
    return;
  }
  case DM_OP_GEMM:
  case DM_OP_MATMUL: {
    /* y[m,n] = alpha * sum_k opA[m,k] opB[k,n] (+ ...) */
    const dm_value *B = val(g, n->in[1]);
    const float *b = B->data;
    bool ta = n->op == DM_OP_GEMM && n->p.gemm.trans_a;
    bool tb = n->op == DM_OP_GEMM && n->p.gemm.trans_b;
    float alpha = n->op == DM_OP_GEMM ? n->p.gemm.alpha : 1.f;
    int64_t M = Y->dims[0], N = Y->dims[1];
    int64_t K = ta ? X->dims[0] : X->dims[1];
    memset(dx, 0, (size_t)nx * sizeof *dx);
    /* row by row of B, skipping zero gradients: the last layer's dy is
     * one-hot, so explaining one class costs one row of weights */
    for (int64_t m = 0; m < M; m++)
      for (int64_t j = 0; j < N; j++) {
        float d = alpha * dy[m * N + j];
        if (d == 0) continue;
        for (int64_t kk = 0; kk < K; kk++)
          dx[ta ? kk * M + m : m * K + kk] +=
              d * (tb ? b[j * K + kk] : b[kk * N + j]);
      }
    return;
  }
  default: memset(dx, 0, (size_t)nx * sizeof *dx); return;
  }
}

/* ------------------------------------------------ section backward -- */

/* Forward value of v in the last run: a constant, or a kept output. */
static const float *fwd_of(const dm_graph *g, const dm_cam_state *st,
                           const dm_cam_io *io, int v) {
  if (v < 0) return NULL;
  if (val(g, v)->kind == DM_VAL_CONST) return val(g, v)->data;
  return st->slot[v] >= 0 ? io->outs[st->slot[v]] : NULL;
}

static void acc(float *d, const float *s, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    d[i] += s[i];
}

/* dx = backward data of a 2-D convolution (weights w (M, C/G, kh, kw)),
 * given dz (N, M, OH, OW); the transpose of backend_ref.c's k_conv loops. */
static void conv_bwd_c(const dm_graph *g, const dm_node *n, const float *dz,
                       float *dx) {
  const dm_value *X = val(g, n->in[0]), *W = val(g, n->in[1]),
                 *Y = val(g, n->out[0]);
  const dm_window *w = &n->p.conv.w;
  const float *wt = W->data;
  int64_t N = X->dims[0], C = X->dims[1], M = Y->dims[1], G = n->p.conv.group;
  int64_t IH = X->dims[2], IW = X->dims[3], OH = Y->dims[2], OW = Y->dims[3];
  int64_t KH = W->dims[2], KW = W->dims[3], Cg = C / G, Mg = M / G;
  memset(dx, 0, X->nbytes);
  for (int64_t b = 0; b < N; b++)
    for (int64_t m = 0; m < M; m++) {
      const float *dzp = dz + (b * M + m) * OH * OW;
      for (int64_t ci = 0; ci < Cg; ci++) {
        float *dxp = dx + (b * C + (m / Mg) * Cg + ci) * IH * IW;
        const float *wp = wt + (m * Cg + ci) * KH * KW;
        for (int64_t kh = 0; kh < KH; kh++) {
          int64_t offh = kh * w->dil[0] - w->pad_b[0], loh, hih;
          dm__valid_range(offh, w->stride[0], IH, OH, &loh, &hih);
          for (int64_t kw = 0; kw < KW; kw++) {
            int64_t offw = kw * w->dil[1] - w->pad_b[1], low, hiw;
            dm__valid_range(offw, w->stride[1], IW, OW, &low, &hiw);
            float wv = wp[kh * KW + kw];
            for (int64_t oh = loh; oh < hih; oh++) {
              float *xr = dxp + (oh * w->stride[0] + offh) * IW;
              const float *zr = dzp + oh * OW;
              for (int64_t ow = low; ow < hiw; ow++)
                xr[ow * w->stride[1] + offw] += wv * zr[ow];
            }
          }
        }
      }
    }
}

/* dx = backward of a 2-D MaxPool/AveragePool, mirroring backend_ref.c's
 * k_pool (the first maximum of a window wins; ceil-mode windows count the
 * padded positions as the forward does). */
static void pool_bwd_c(const dm_graph *g, const dm_node *n, const float *x,
                       const float *dy, float *dx) {
  const dm_value *X = val(g, n->in[0]), *Y = val(g, n->out[0]);
  const dm_window *w = &n->p.pool.w;
  bool is_max = n->op == DM_OP_MAXPOOL, incl = n->p.pool.count_include_pad;
  int64_t NC = X->dims[0] * X->dims[1];
  int64_t IH = X->dims[2], IW = X->dims[3], OH = Y->dims[2], OW = Y->dims[3];
  memset(dx, 0, X->nbytes);
  for (int64_t nc = 0; nc < NC; nc++) {
    const float *xp = x ? x + nc * IH * IW : NULL;
    float *dp = dx + nc * IH * IW;
    const float *gp = dy + nc * OH * OW;
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t sh = oh * w->stride[0] - w->pad_b[0];
        int64_t sw = ow * w->stride[1] - w->pad_b[1];
        int64_t ch = 0, cw = 0, valid = 0, best = -1;
        for (int64_t k = 0; k < w->kernel[0]; k++)
          ch += sh + k * w->dil[0] < IH + w->pad_e[0];
        for (int64_t k = 0; k < w->kernel[1]; k++)
          cw += sw + k * w->dil[1] < IW + w->pad_e[1];
        float mv = -INFINITY;
        for (int pass = 0; pass < 2; pass++)
          for (int64_t kh = 0; kh < w->kernel[0]; kh++) {
            int64_t ih = sh + kh * w->dil[0];
            if (ih < 0 || ih >= IH) continue;
            for (int64_t kw = 0; kw < w->kernel[1]; kw++) {
              int64_t iw = sw + kw * w->dil[1];
              if (iw < 0 || iw >= IW) continue;
              int64_t at = ih * IW + iw;
              if (pass == 0) {
                valid++;
                if (is_max && (xp[at] > mv || xp[at] != xp[at])) {
                  mv = xp[at]; /* the forward's update rule */
                  best = at;
                }
              } else if (!is_max) {
                dp[at] += gp[oh * OW + ow] / (float)(incl ? ch * cw : valid);
              }
            }
          }
        if (is_max && best >= 0) dp[best] += gp[oh * OW + ow];
      }
  }
}

/* Gradient of a 2-input elementwise op with broadcasting to each input that
 * depends on the target. */
static void binary_bwd(const dm_graph *g, const dm_cam_state *st,
                       const dm_cam_io *io, const dm_node *n, const float *dy) {
  const dm_value *Y = val(g, n->out[0]);
  const dm_value *A = val(g, n->in[0]), *B = val(g, n->in[1]);
  const float *a = fwd_of(g, st, io, n->in[0]),
              *b = fwd_of(g, st, io, n->in[1]);
  float *da = st->grad[n->in[0]], *db = st->grad[n->in[1]];
  if (n->in[0] == n->in[1]) db = NULL; /* x op x: da gets both terms */
  for (int64_t i = 0; i < Y->numel; i++) {
    int64_t ia = bcast_off(A, Y, i), ib = bcast_off(B, Y, i);
    float d = dy[i], ga = 0, gb = 0;
    switch (n->p.binary.kind) {
    case DM_BINARY_ADD: ga = d, gb = d; break;
    case DM_BINARY_SUB: ga = d, gb = -d; break;
    case DM_BINARY_MUL: ga = d * b[ib], gb = d * a[ia]; break;
    case DM_BINARY_DIV:
      ga = d / b[ib], gb = -d * a[ia] / (b[ib] * b[ib]);
      break;
    default: break;
    }
    if (n->in[0] == n->in[1]) ga += gb;
    if (da) da[ia] += ga;
    if (db) db[ib] += gb;
  }
}

static void concat_bwd(const dm_graph *g, const dm_cam_state *st,
                       const dm_node *n, const float *dy) {
  const dm_value *Y = val(g, n->out[0]);
  int ax = n->p.concat.axis;
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < ax; d++)
    outer *= Y->dims[d];
  for (int d = ax + 1; d < Y->rank; d++)
    inner *= Y->dims[d];
  int64_t yrow = Y->dims[ax] * inner, at = 0;
  for (int k = 0; k < n->n_in; k++) {
    if (n->in[k] < 0) continue;
    int64_t row = val(g, n->in[k])->dims[ax] * inner;
    float *d = st->grad[n->in[k]];
    for (int64_t o = 0; d && o < outer; o++)
      acc(d + o * row, dy + o * yrow + at, row);
    at += row;
  }
}

/* Conv with fused post-ops: dz through the post-ops (to the residual
 * addends too), then backward data to the input. */
static dm_err conv_bwd(const dm_graph *g, dm_cam_state *st, const dm_cam_io *io,
                       int ni, const float *dy, dm_errbuf *eb) {
  const dm_node *n = &g->nodes[ni];
  const dm_value *Y = val(g, n->out[0]);
  int64_t ny = Y->numel;
  void *op = io->op ? io->op[ni] : NULL;
  const float *x = fwd_of(g, st, io, n->in[0]);
  float *dz = st->dz;
  memcpy(dz, dy, Y->nbytes);
  /* exact from the output alone? (see the file comment) */
  bool known = true, recompute = false;
  for (int j = n->n_post - 1; j >= 0; j--) {
    if (n->post[j].kind == DM_POST_ACT &&
        !(known && dact_from_y(&n->post[j].act)))
      recompute = true;
    known = false;
  }
  if (recompute) {
    /* z[0] = conv(x) + bias; z[j+1] = post_j(z[j]) */
    if (op && io->ops->forward) {
      dm_err rc = io->ops->forward(op, x, st->z[0], eb);
      if (rc) return rc;
    } else {
      dm_node c = *n;
      c.n_post = 0;
      c.n_in = n->n_in < 3 ? n->n_in : 3;
      const void *ins[3] = {x, fwd_of(g, st, io, n->in[1]),
                            c.n_in > 2 ? fwd_of(g, st, io, n->in[2]) : NULL};
      void *outs[1] = {st->z[0]};
      dm_err rc = dm__ref_node(g, &c, ins, outs, eb);
      if (rc) return rc;
    }
    for (int j = 0; j < n->n_post; j++) {
      const dm_post *p = &n->post[j];
      if (p->kind == DM_POST_ADD) {
        const float *a = fwd_of(g, st, io, n->in[p->input]);
        for (int64_t i = 0; i < ny; i++)
          st->z[j + 1][i] = st->z[j][i] + a[i];
        continue;
      }
      int io_v[2] = {n->out[0], n->out[0]};
      dm_node u = {.op = DM_OP_UNARY, .name = n->name, .op_type = "(post)"};
      u.n_in = u.n_out = 1;
      u.in = &io_v[0];
      u.out = &io_v[1];
      u.p.unary = p->act;
      const void *ins[1] = {st->z[j]};
      void *outs[1] = {st->z[j + 1]};
      dm_err rc = dm__ref_node(g, &u, ins, outs, eb);
      if (rc) return rc;
    }
  }
  const float *y = fwd_of(g, st, io, n->out[0]);
  for (int j = n->n_post - 1; j >= 0; j--) {
    const dm_post *p = &n->post[j];
    if (p->kind == DM_POST_ADD) {
      float *da = st->grad[n->in[p->input]];
      if (da) acc(da, dz, ny);
      continue;
    }
    const float *pz = recompute ? st->z[j] : NULL;
    const float *py = recompute ? st->z[j + 1] : y;
    for (int64_t i = 0; i < ny; i++) {
      float xi = pz ? pz[i] : py[i], d;
      if (!pz) { /* derivative from the output (dact_from_y) */
        float yi = py[i];
        const dm_act *a = &p->act;
        switch (a->kind) {
        case DM_UNARY_RELU: d = yi > 0 ? 1.f : 0.f; break;
        case DM_UNARY_CLIP:
          d = yi > a->alpha && yi < a->beta ? 1.f : 0.f;
          break;
        case DM_UNARY_LEAKYRELU: d = yi > 0 ? 1.f : a->alpha; break;
        case DM_UNARY_ELU: d = yi > 0 ? 1.f : yi + a->alpha; break;
        case DM_UNARY_HARDSIGMOID: d = yi > 0 && yi < 1 ? a->alpha : 0.f; break;
        default: d = dact(a, xi, yi); break; /* Sigmoid, Tanh: from y */
        }
      } else {
        d = dact(&p->act, xi, py[i]);
      }
      dz[i] *= d;
    }
  }
  float *dx = st->grad[n->in[0]];
  if (!dx) return DM_OK; /* input does not depend on the target */
  if (op) {
    dm_err rc = io->ops->backward(op, x, dz, st->tmp, eb);
    if (rc) return rc;
  } else {
    conv_bwd_c(g, n, dz, st->tmp);
  }
  acc(dx, st->tmp, val(g, n->in[0])->numel);
  return DM_OK;
}

/* The explained class: class_index, or the top-scoring one when it is < 0;
 * -1 (with eb set) when class_index is out of range. */
static int pick_class(const float *score, int64_t ns, int class_index,
                      dm_errbuf *eb) {
  int c = class_index;
  if (c < 0) {
    c = 0;
    for (int64_t i = 1; i < ns; i++)
      if (score[i] > score[c]) c = (int)i;
  }
  if (c >= ns) {
    dm_errf(eb, DM_ARG, "class %d out of range (%lld scores)", c,
            (long long)ns);
    return -1;
  }
  return c;
}

static dm_err section_backward(const dm_graph *g, dm_cam_state *st,
                               const dm_cam_io *io, int class_index,
                               int *class_out, float *score_out,
                               float *grad_out, dm_errbuf *eb) {
  const dm_value *S = val(g, g->cam_score);
  const float *score = fwd_of(g, st, io, g->cam_score);
  if (io->scores) score = io->scores;
  if (!score) return dm_errf(eb, DM_BACKEND, "Grad-CAM: score not kept");
  int64_t ns = S->numel;
  int c = pick_class(score, ns, class_index, eb);
  if (c < 0) return DM_ARG;
  *class_out = c;
  *score_out = score[c];
  for (int v = 0; v < g->n_values; v++)
    if (st->grad[v]) memset(st->grad[v], 0, val(g, v)->nbytes);
  st->grad[g->cam_score][c] = 1;
  for (int i = st->n - 1; i >= 0; i--) {
    int ni = g->cam_tail[i];
    const dm_node *n = &g->nodes[ni];
    const float *dy = st->grad[n->out[0]];
    if (!dy) continue;
    dm_err rc = DM_OK;
    switch (n->op) {
    case DM_OP_CONV: rc = conv_bwd(g, st, io, ni, dy, eb); break;
    case DM_OP_BINARY: binary_bwd(g, st, io, n, dy); break;
    case DM_OP_CONCAT: concat_bwd(g, st, n, dy); break;
    case DM_OP_MAXPOOL:
    case DM_OP_AVGPOOL: {
      float *dx = st->grad[n->in[0]];
      if (!dx) break;
      const float *x = fwd_of(g, st, io, n->in[0]);
      void *op = io->op ? io->op[ni] : NULL;
      if (op)
        rc = io->ops->backward(op, x, dy, st->tmp, eb);
      else
        pool_bwd_c(g, n, x, dy, st->tmp);
      if (!rc) acc(dx, st->tmp, val(g, n->in[0])->numel);
      break;
    }
    case DM_OP_BATCHNORM: {
      float *dx = st->grad[n->in[0]];
      const dm_value *X = val(g, n->in[0]);
      const float *sc = fwd_of(g, st, io, n->in[1]),
                  *var = fwd_of(g, st, io, n->in[4]);
      int64_t C = X->rank > 1 ? X->dims[1] : 1;
      int64_t inner = X->numel / (X->dims[0] * C);
      for (int64_t j = 0; dx && j < X->numel; j++) {
        int64_t ch = (j / inner) % C;
        dx[j] += dy[j] * sc[ch] / sqrtf(var[ch] + n->p.bn.eps);
      }
      break;
    }
    default: {
      float *dx = st->grad[n->in[0]];
      if (!dx) break;
      backward(g, n, 0, fwd_of(g, st, io, n->in[0]),
               fwd_of(g, st, io, n->out[0]), dy, st->tmp);
      acc(dx, st->tmp, val(g, n->in[0])->numel);
      break;
    }
    }
    if (rc) return rc;
  }
  memcpy(grad_out, st->grad[g->cam_target], val(g, g->cam_target)->nbytes);
  return DM_OK;
}

dm_err dm__cam_backward(const dm_graph *g, dm_cam_state *st,
                        const dm_cam_io *io, int class_index, int *class_out,
                        float *score_out, float *grad_out, dm_errbuf *eb) {
  if (g->cam_section)
    return section_backward(g, st, io, class_index, class_out, score_out,
                            grad_out, eb);
  const float *activation = io->activation, *scores = io->scores;
  const void *ins[DM_MAX_POST + 8];
  void *outs[1];
  const float *cur = activation;
  int last = scores ? st->last_fwd : st->n - 1;
  for (int i = 0; i <= last; i++) {
    const dm_node *n = &g->nodes[g->cam_tail[i]];
    int k = chain_input(g, n);
    if (n->n_in > (int)(sizeof ins / sizeof ins[0]))
      return dm_errf(eb, DM_UNSUPPORTED, "too many inputs");
    for (int j = 0; j < n->n_in; j++)
      ins[j] = j == k          ? (const void *)cur
               : n->in[j] >= 0 ? dm__value_ptr(g, n->in[j], NULL)
                               : NULL;
    outs[0] = st->fwd[i];
    dm_err rc = dm__ref_node(g, n, ins, outs, eb);
    if (rc) return rc;
    cur = st->fwd[i];
  }
  const dm_value *S = val(g, g->cam_score);
  int64_t ns = S->numel;
  const float *score = scores  ? scores
                       : st->n ? st->fwd[st->n - 1]
                               : activation;
  int c = pick_class(score, ns, class_index, eb);
  if (c < 0) return DM_ARG;
  *class_out = c;
  *score_out = score[c];
  float *dy = st->g0, *dx = st->g1;
  memset(dy, 0, (size_t)ns * sizeof *dy);
  dy[c] = 1;
  for (int i = st->n - 1; i >= 0; i--) {
    const dm_node *n = &g->nodes[g->cam_tail[i]];
    int k = chain_input(g, n);
    const float *x = i ? st->fwd[i - 1] : activation;
    backward(g, n, k, x, st->fwd[i], dy, dx);
    float *t = dy;
    dy = dx;
    dx = t;
  }
  memcpy(grad_out, dy, val(g, g->cam_target)->nbytes);
  return DM_OK;
}
