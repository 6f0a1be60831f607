/* grad.c: the gradient half of Grad-CAM, in plain C.
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
};

/* Does the backward rule of n read its forward input x / its output y? */
static bool needs_x(const dm_node *n) {
  return n->op == DM_OP_UNARY || n->op == DM_OP_GLOBALMAXPOOL ||
         n->op == DM_OP_MAXPOOL ||
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

/* Does the tail know how to back-propagate through n (chain input k)? */
static const char *unsupported(const dm_graph *g, const dm_node *n, int k) {
  const dm_value *x = val(g, n->in[k]), *y = val(g, n->out[0]);
  if (x->dtype != DM_ONNX_FLOAT) return "non-float tensor";
  if (n->n_out != 1) return "several outputs";
  switch (n->op) {
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
  case DM_OP_UNARY:
    switch (n->p.unary.kind) {
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
    case DM_UNARY_NEG: return NULL;
    default: return "this activation";
    }
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
  dm_err rc = walk_chain(g, s, t, tail, &nt, eb);
  if (rc) return rc;
  for (int i = 0; i < nt; i++)
    g->nodes[tail[i]].no_fuse = true;
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
dm_err dm__cam_finish(dm_graph *g, dm_errbuf *eb) {
  set_producers(g);
  int tail[CAM_MAX_TAIL], nt = 0;
  dm_err rc = walk_chain(g, g->cam_score, g->cam_target, tail, &nt, eb);
  if (rc) return rc;
  g->cam_tail = dm__graph_alloc(g, sizeof(int) * (size_t)(nt + 1));
  if (!g->cam_tail) return dm_errf(eb, DM_NOMEM, "out of memory");
  memcpy(g->cam_tail, tail, sizeof(int) * (size_t)nt);
  g->n_cam_tail = nt;
  return DM_OK;
}

dm_err dm__cam_state_new(const dm_graph *g, dm_cam_state **out, dm_errbuf *eb) {
  dm_cam_state *st = calloc(1, sizeof *st);
  if (!st) return dm_errf(eb, DM_NOMEM, "out of memory");
  st->n = g->n_cam_tail;
  st->fwd = calloc((size_t)st->n + 1, sizeof *st->fwd);
  size_t mx = val(g, g->cam_target)->nbytes;
  for (int i = 0; st->fwd && i < st->n; i++) {
    const dm_value *y = val(g, g->nodes[g->cam_tail[i]].out[0]);
    if (y->nbytes > mx) mx = y->nbytes;
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

dm_err dm__cam_backward(const dm_graph *g, dm_cam_state *st,
                        const float *activation, const float *scores,
                        int class_index, int *class_out, float *score_out,
                        float *grad_out, dm_errbuf *eb) {
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
  int c = class_index;
  if (c < 0) {
    c = 0;
    for (int64_t i = 1; i < ns; i++)
      if (score[i] > score[c]) c = (int)i;
  }
  if (c >= ns)
    return dm_errf(eb, DM_ARG, "class %d out of range (%lld scores)", c,
                   (long long)ns);
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
