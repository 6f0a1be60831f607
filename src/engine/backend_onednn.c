/* backend_onednn.c: the fast path.  Runs a built dm_graph with oneDNN 2.6
 * primitives (C API, v2 op descriptors), falling back to dm__ref_node for
 * every node it does not map.
 *
 * prepare() walks g->nodes once, in order, and turns them into a flat list of
 * steps:
 *   PRIM  a oneDNN primitive (conv, inner product, matmul, pooling, eltwise,
 *         binary, concat, softmax, batchnorm, or a reorder between layouts);
 *   REF   dm__ref_node on plain row-major buffers;
 *   COPY  memcpy (graph outputs already in plain layout);
 *   and our own passes (step_kind below).
 * Each graph value is held in one or more "tensors": a layout (oneDNN memory
 * descriptor; float32 only) over a "buffer".  A producer picks its output
 * layout (Conv with format_tag_any; pools, eltwise and binary follow their
 * input's layout), and a consumer that needs another layout gets a converted
 * copy, made once per (value, layout) and shared by later consumers.  Plain
 * copies are made only for REF nodes and graph outputs.  Tensors whose bytes
 * coincide (e.g. [1,C,1,1] in NHWC and NCHW, a Reshape of a plain tensor,
 * or a same-shape Identity in any layout) share their buffer instead of
 * being copied.
 *
 * Buffers are either in the session arena (offsets from our own liveness
 * plan over steps, reusing memory), the caller's input/output buffers (bound
 * per run), or constants (graph data used as is, or weights reordered once at
 * prepare into the layout the primitive asked for).
 *
 * Layouts: activations stay in oneDNN's layout between oneDNN ops; NHWC
 * (format_tag_any on AVX-512 picks the brgemm kernels) except that, when
 * 3x3 stride-1 convs carry a large share of the FLOPs, those run Winograd on
 * nChw16c, and every conv does in graphs where channel Concats dominate
 * (see the policy in prepare).  Plain NCHW only for REF nodes and graph
 * outputs.
 *
 * Fusions on top of the graph's: Conv/Gemm post[] map to oneDNN post-ops
 * (eltwise; a residual ADD becomes a `sum` post-op, computed in place in the
 * addend's buffer when this is its last use, else on a copy of it); the SiLU
 * pattern Mul(y, Sigmoid(y)), when graph.c left it, is computed with the Conv
 * producing y (or as a standalone swish eltwise).  A Conv's trailing swish
 * runs as a SWISH step over its output (ew_run), not as a post-op.
 * Binary ops write over their first input when nothing reads it later.
 *
 * Load: operation descriptors are resolved in one pass; primitive creation
 * (JIT) and weight reorders are queued and run at the end (optionally on
 * several threads).
 *
 * Threading: the engine state is read-only after prepare and shared by all
 * sessions.  Primitives are created with omp_get_max_threads() == threads
 * and run with the same ICV (set per run on the calling thread, restored
 * after); with 2+ threads, runs of steps go in bands, one thread each, on
 * primitives made for one thread (see "bands" below); with one thread, a
 * pointwise conv whose map does not fit the L2 runs tile by tile with the
 * conv that reads it (see "tiles" below).  Everything mutable
 * (memory objects bound to the arena, the stream, the scratchpad: primitives
 * use dnnl_scratchpad_mode_user) belongs to a session, which one thread uses at
 * a time.  Links with -lgomp (the OpenMP runtime Debian's oneDNN uses) and
 * -ldnnl.
 *
 * Debugging: DERMAL_ONEDNN_VERBOSE=1 prints the plan (implementation of each
 * step, ref fallbacks) to stderr; nothing is logged otherwise. */
#include <float.h>
#include <limits.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <math.h>
#include <oneapi/dnnl/dnnl.h>

#include "internal.h"
#include "simd.h"

#define ALIGN 64
#define MAX_BANDS 4 /* threads that run a banded step (see plan_bands) */

/* ---------------------------------------------------------------- state -- */

/* Large buffers (reordered weights, session arenas) are anonymous mappings
 * with transparent huge pages: on the VMs we run on a 4 KiB page fault costs
 * ~12 us, so faulting 14 MB of weights in page by page took ~45 ms. */
typedef struct bigmem {
  void *map;
  size_t len;
  char *base; /* 2 MiB aligned */
  size_t cap, used;
} bigmem;

#define HUGE_PAGE ((size_t)2 << 20)

static bool big_map(bigmem *m, size_t n) {
  memset(m, 0, sizeof *m);
  if (!n) return true;
  size_t cap = (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  size_t len = cap + HUGE_PAGE;
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (p == MAP_FAILED) return false;
  m->map = p;
  m->len = len;
  m->base =
      (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  m->cap = cap;
#ifdef MADV_HUGEPAGE
  (void)madvise(m->base, cap, MADV_HUGEPAGE); /* advisory: ignore errors */
#endif
  return true;
}

static void big_unmap(bigmem *m) {
  if (m->map) munmap(m->map, m->len);
  memset(m, 0, sizeof *m);
}

/* Bump allocation from m (64-byte aligned), NULL when full. */
static void *big_take(bigmem *m, size_t n) {
  size_t off = (m->used + 63) & ~(size_t)63;
  if (!m->base || off > m->cap || m->cap - off < n) return NULL;
  m->used = off + n;
  return m->base + off;
}

typedef enum { BUF_ARENA, BUF_INPUT, BUF_OUTPUT, BUF_CONST } buf_kind;

typedef struct obuf {
  buf_kind kind;
  int ext;           /* INPUT/OUTPUT: index into run()'s arrays */
  const void *konst; /* CONST: data (graph's, or owned when `own`) */
  bool own;
  size_t bytes;    /* ARENA: max bytes of the tensors stored here */
  int first, last; /* ARENA: first and last step touching it */
  int last_node;   /* last node reading a value stored here */
  size_t offset;   /* ARENA: byte offset in the session arena */
  bool own8;       /* ARENA: 8-bit data, bytes of its own (plan_memory) */
} obuf;

typedef struct otensor {
  int value; /* dm_value index */
  int buf;
  int next;    /* next tensor of the same value (another layout), or -1 */
  bool has_md; /* float32, described by md */
  bool plain;  /* dense row-major in the value's dims */
  size_t bytes;
  dnnl_memory_desc_t md;
} otensor;

typedef struct oarg {
  int arg; /* DNNL_ARG_* */
  int tensor;
} oarg;

/* A per-tensor QuantizeLinear or DequantizeLinear (see qdq_span). */
typedef struct qdq_op {
  bool quant; /* QuantizeLinear, else DequantizeLinear */
  bool fake;  /* quant: then DequantizeLinear with the same parameters
                 (float -> float), a QuantizeLinear read by one
                 DequantizeLinear only */
  bool u8;    /* 8-bit side: uint8, else int8 */
  float scale;
  int32_t zp;
} qdq_op;

/* Our own passes over float32 data where oneDNN 2.6 is slow (see ew_run):
 * ST_SWISH: y = x * sigmoid(x) over n floats, src -> dst (in place when
 * they share a buffer); ST_QDQ: per-tensor quantize or dequantize of n
 * elements (qdq_op); ST_NHWC: a 3-channel plain NCHW image batch to
 * channels-last; ST_CSCALE: y = x * s[c] on a channels-last or blocked
 * map (an SE block's Mul; s is tensor aux); ST_GAP: channels-last global
 * average pooling; ST_STEM: a network's first conv and depthwise conv (stem.c),
 * the NCHW image to channels-last rows; ST_TILES: a pointwise conv and the
 * conv after it, tile by tile (see plan_tiles), in place of the second;
 * ST_SKIP: the first of those (nothing to run); ST_CONCAT: a Concat whose
 * inputs are consecutive runs of its output's bytes, copied (args: the
 * inputs, then the output; map_concat_copy); ST_CHAN: channels gathered
 * pixel by pixel from channels-last maps (a channel Slice, a channel
 * shuffle; ochan, args as ST_CONCAT's); ST_PW: a float 1x1 conv on
 * channels-last maps, our own kernel (pw.c; map_pw; n pixels). */
typedef enum {
  ST_PRIM,
  ST_REF,
  ST_COPY,
  ST_SWISH,
  ST_QDQ,
  ST_NHWC,
  ST_CSCALE,
  ST_GAP,
  ST_FC,
  ST_STEM,
  ST_TILES,
  ST_SKIP,
  ST_CONCAT,
  ST_CHAN,
  ST_PW
} step_kind;

/* What a step is, for DERMAL_ONEDNN_VERBOSE and DERMAL_ONEDNN_PROFILE. */
static const char *const step_name[] = {
    [ST_PRIM] = "prim",     [ST_REF] = "ref",     [ST_COPY] = "copy",
    [ST_SWISH] = "swish",   [ST_QDQ] = "qdq",     [ST_NHWC] = "nhwc",
    [ST_CSCALE] = "cscale", [ST_GAP] = "gap",     [ST_FC] = "fc",
    [ST_STEM] = "stem",     [ST_TILES] = "tiles", [ST_SKIP] = "(in tiles)",
    [ST_CONCAT] = "concat", [ST_CHAN] = "chan",   [ST_PW] = "pw"};

/* One band of a step that runs in bands (see plan_bands): a primitive made
 * for the band's part of the tensors, and where that part lies in them, or
 * for a pass its range of units (ew_units). */
typedef struct oband {
  dnnl_primitive_t prim;  /* PRIM */
  dnnl_memory_desc_t *md; /* PRIM: per arg, the view (when view[arg]) */
  size_t *off;            /* PRIM: per arg, the view's byte offset */
  bool *view;             /* PRIM: per arg, a part of the tensor */
  bool has_scratch;       /* PRIM */
  dnnl_memory_desc_t scratch_md;
  int warg;       /* PRIM: the weights arg when the band has its own copy */
  void *wdata;    /* that copy (layout md[warg]), owned; else NULL */
  size_t lo, n;   /* passes: units [lo, lo + n) */
  int64_t pt, pb; /* PRIM, a conv: the part's top and bottom padding */
  bool shared;    /* PRIM: prim and wdata belong to another (tiles) */
} oband;

/* One tile of a TILES step (see "tiles"). */
typedef struct otile {
  oband a, b; /* the pointwise conv on the tile's rows, the conv after it */
  size_t n;   /* elements of the tile's map (the swish pass) */
} otile;

/* An ST_CHAN step (map_cslice, map_shuffle): output channel k of every
 * pixel is channel ch[k] of source src[k] at that pixel, all maps
 * channels-last float32 with the same pixels.  mode tells the kernel the
 * shape of that table: CHAN_RUN, one source's channels [ch[0], ch[0] +
 * c) (a Slice along the channels); CHAN_ZIP2, two runs of c / 2
 * channels interleaved, the first starting at output channel 0's place,
 * the second at channel 1's, each in a source of its own (a shuffle of
 * two groups read from a Concat of two halves: ShuffleNet v2) or the two
 * halves of one source (a shuffle alone); CHAN_GATHER, anything else. */
typedef enum { CHAN_RUN, CHAN_ZIP2, CHAN_GATHER } chan_mode;

#define CHAN_MAX_SRC 16

typedef struct ochan {
  chan_mode mode;
  int c, n_src;            /* output channels; sources (at most CHAN_MAX_SRC) */
  const int32_t *src_c;    /* per source: its channels */
  const int32_t *src, *ch; /* per output channel */
} ochan;

/* The code path of our own passes: portable C, AVX2 + FMA, or AVX-512. */
typedef enum { VEC_C, VEC_AVX2, VEC_AVX512 } vec_isa;

typedef struct ostep {
  step_kind kind;
  int node; /* node index, -1 for graph output copies */
  dnnl_primitive_t prim;
  dnnl_primitive_desc_t pd; /* until the primitive is created (jobs) */
  int n_args;
  oarg *args;
  bool has_scratch;
  dnnl_memory_desc_t scratch_md;
  int *ref_in, *ref_out; /* REF: tensor per node input/output, -1 omitted */
  int src, dst;          /* COPY and the passes */
  int aux;               /* CSCALE: the scale tensor */
  size_t bytes;          /* COPY */
  size_t n;              /* SWISH, QDQ: elements; NHWC, CSCALE, GAP: images */
                         /* STEM: output rows of the batch */
  size_t c, hw;          /* NHWC, CSCALE, GAP: channels, pixels per image */
                         /* STEM: elements per output row, 1 */
  size_t c_all;          /* CSCALE: channels; on a blocked map (nChw8c) c */
                         /* is the block and n counts images x blocks */
  const dm_stem *stem;   /* STEM (in e->wmem) */
  const ochan *chan;     /* CHAN (in e->wmem); n: pixels */
  const dm_pw *pw;       /* PW (in e->wmem); n: pixels */
  qdq_op qdq;            /* QDQ */
  const float *w, *bias; /* FC: weights [c][n] (our copy), bias or NULL */
  bool fc_swish;         /* FC: then y * sigmoid(y) (a Sigmoid+Mul left) */
  const void *wraw;      /* FC, row-major: a Gemm's B [n][c] and C, used */
  const void *braw;      /* in place from the file (any alignment), else NULL */
  struct oband *band;    /* e->n_bands entries when the step runs in bands */
  bool sync;             /* banded: a barrier before it (see plan_sync) */
  struct otile *tile;    /* TILES: n_tiles tiles; xa: the pointwise step */
  bool tile_swish;       /* TILES: a swish pass on each tile's map */
  int n_tiles, xa, tile0; /* tile0: its first tile's index in a session */
} ostep;

/* Deferred load work, run on all cores at the end of prepare: primitive
 * creation (JIT) and weight reorders dominate load time. */
typedef struct ojob {
  int step; /* >= 0: create e->s[step].prim; -1: reorder below */
  int node; /* for messages, -1 none */
  dnnl_memory_desc_t smd, dmd;
  const void *src;
  void *dst;
  dnnl_status_t status;
  const char *what;
} ojob;

typedef struct oeng {
  const dm_graph *g;
  int threads;
  bool verbose;
  bool profile;     /* DERMAL_ONEDNN_PROFILE: per-step times at session end */
  bool follow;      /* conv: try the producer's layout before format_tag_any */
  bool wino;        /* conv: try Winograd (nChw16c) on eligible 3x3 convs */
  bool dw_pref;     /* depthwise convs: prefer dw_prefer's kernels */
  bool wino_pref;   /* Winograd convs: prefer wino_prefer's kernel */
  bool proj_pref;   /* int8_prefer's jit_int8_1x1 rule (DERMAL_ONEDNN_PROJ) */
  bool band_fc;     /* GAP and FC passes may run in bands (_BAND_FC) */
  int amx;          /* int8 convs on AMX: 0 never, 1 always, 2 int8_prefer */
  bool bf16;        /* Conv/Gemm/MatMul in bf16 (see bf16_native) */
  int64_t wino_max; /* largest OC*IC for Winograd */
  vec_isa vec;      /* the passes' code path (pick_vec) */
  bool stem;        /* map_stem may fuse (DERMAL_ONEDNN_STEM=0: never) */
  bool pw;          /* map_pw may take 1x1 convs (dm__pw_cpu; _PW) */
  dnnl_engine_t eng;
  bigmem wmem;  /* reordered weights (virtual reservation) */
  bigmem stage; /* during run_jobs: a weight copied out of the file */
  otensor *t;
  int n_t, cap_t;
  obuf *b;
  int n_b, cap_b;
  ostep *s;
  int n_s, cap_s;
  int *val_t;     /* per value: primary tensor, -1 */
  int *last_use;  /* per value: last node reading it (n_nodes: output) */
  int *n_uses;    /* per value: reads by nodes (+1 if a graph output) */
  uint8_t *done;  /* per node: computed by a fusion, skip */
  uint8_t *swish; /* per node (Mul): compute as swish(in[swish-1]) */
  int max_io;     /* max n_in/n_out over REF steps */
  ojob *jobs;
  int n_jobs, cap_jobs;
  int workers; /* threads running jobs (1: inline) */
  atomic_int next_job;
  size_t arena_bytes, scratch_bytes;
  int n_bands;         /* bands per banded step (the thread count), 0: none */
  size_t band_scratch; /* scratchpad bytes per band */
  int n_banded;        /* steps that run in bands */
  size_t gap_part;     /* floats: threads x the most channels of a GAP pass */
  size_t stem_part;    /* bytes of scratch per thread of a STEM pass */
  bool tiles;          /* plan_tiles may tile (DERMAL_ONEDNN_TILES=0: no) */
  size_t tile_kb;      /* its budget for a tile's map, KiB */
  size_t tile_min;     /* and the smallest map it tiles, bytes */
  int n_tile_all;      /* tiles of all TILES steps */
  size_t tile_buf;     /* bytes of the largest tile's map */
  size_t tile_scratch; /* bytes of the largest tile scratchpad */
  int n_prim, n_ref, n_reorder;
} oeng;

typedef struct osess {
  const oeng *e;
  dnnl_stream_t stream;
  bigmem mem_; /* arena, then scratchpad */
  void *arena, *scratch;
  dnnl_memory_t *mem;     /* per tensor (NULL when !has_md) */
  void **ptr;             /* per tensor: data address */
  dnnl_exec_arg_t **args; /* per step */
  dnnl_memory_t *smem;    /* per step: scratchpad */
  float *gap_part;        /* e->gap_part floats (ew_job.part) */
  char *stem_part;        /* per thread (or band): e->stem_part bytes */
  double *prof;           /* per step: total ms (e->profile) */
  int runs;               /* e->profile */
  const void **ref_in;    /* max_io */
  void **ref_out;         /* max_io */
  void *bscratch;         /* n_bands x e->band_scratch bytes */
  dnnl_stream_t bstream[MAX_BANDS];
  dnnl_memory_t **bmem;    /* per step x band: views, then the scratchpad */
  dnnl_exec_arg_t **bargs; /* per step x band */
  void *tbuf;              /* a tile's map (e->tile_buf bytes), then */
  void *tscratch;          /* the tiles' scratchpad (e->tile_scratch) */
  dnnl_memory_t **tmem;    /* per tile x 2 (its two convs): as bmem */
  dnnl_exec_arg_t **targs; /* per tile x 2 */
} osess;

/* -------------------------------------------------------------- helpers -- */

static bool grow(void **p, int *cap, int need, size_t elem) {
  if (need <= *cap) return true;
  int nc = *cap ? *cap * 2 : 64;
  while (nc < need)
    nc *= 2;
  void *q = realloc(*p, (size_t)nc * elem);
  if (!q) return false;
  *p = q;
  *cap = nc;
  return true;
}

static size_t align_up(size_t n) {
  return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

static const dm_value *val(const oeng *e, int v) { return &e->g->values[v]; }

static bool is_f32(const oeng *e, int v) {
  return v >= 0 && val(e, v)->dtype == DM_ONNX_FLOAT;
}

static bool is_const(const oeng *e, int v) {
  return val(e, v)->kind == DM_VAL_CONST;
}

static const char *nname(const dm_node *n) {
  return n->name && n->name[0] ? n->name : "?";
}

/* Dense row-major descriptor of dims[0..nd) (nd 0 is a 1-element vector). */
/* oneDNN's view of a Conv with weights W, G groups and window win: the
 * weight dims ([G, OC/G, IC/G, k...] when grouped, else ONNX's [OC, IC/G,
 * k...]), strides, dilations (oneDNN counts the gaps: ONNX's minus 1) and
 * paddings.  Returns the rank of the weight dims.  The caller has checked
 * W->rank == 2 + win->nsp and OC % G == 0. */
static int conv_geometry(const dm_value *W, int64_t G, const dm_window *win,
                         int64_t *wdims, dnnl_dims_t strides, dnnl_dims_t dil,
                         dnnl_dims_t pl, dnnl_dims_t pr) {
  int nsp = win->nsp, wnd = 2 + nsp;
  if (G == 1) {
    for (int i = 0; i < wnd; i++)
      wdims[i] = W->dims[i];
  } else {
    wdims[0] = G;
    wdims[1] = W->dims[0] / G;
    for (int i = 1; i < wnd; i++)
      wdims[1 + i] = W->dims[i];
    wnd++;
  }
  for (int i = 0; i < nsp; i++) {
    strides[i] = win->stride[i];
    dil[i] = win->dil[i] - 1;
    pl[i] = win->pad_b[i];
    pr[i] = win->pad_e[i];
  }
  return wnd;
}

static dnnl_status_t md_plain_dims(dnnl_memory_desc_t *md, int nd,
                                   const int64_t *dims) {
  dnnl_dims_t d, st;
  if (nd <= 0) {
    nd = 1;
    d[0] = 1;
  } else {
    for (int i = 0; i < nd; i++)
      d[i] = dims[i];
  }
  dnnl_dim_t s = 1;
  for (int i = nd - 1; i >= 0; i--) {
    st[i] = s;
    s *= d[i] > 0 ? d[i] : 1;
  }
  return dnnl_memory_desc_init_by_strides(md, nd, d, dnnl_f32, st);
}

/* Channels-last (NHWC-like: dim 1 innermost) dense descriptor, nd >= 3. */
static dnnl_status_t md_channels_last(dnnl_memory_desc_t *md, int nd,
                                      const int64_t *dims) {
  dnnl_dims_t d = {0}, st = {0};
  for (int i = 0; i < nd; i++)
    d[i] = dims[i];
  dnnl_dim_t s = 1;
  st[1] = s;
  s *= d[1] > 0 ? d[1] : 1;
  for (int i = nd - 1; i >= 2; i--) {
    st[i] = s;
    s *= d[i] > 0 ? d[i] : 1;
  }
  st[0] = s;
  return dnnl_memory_desc_init_by_strides(md, nd, d, dnnl_f32, st);
}

/* A float32 4-D md of dims in layout tag. */
static dnnl_status_t md_tag(dnnl_memory_desc_t *md, const int64_t *dims,
                            dnnl_format_tag_t tag) {
  dnnl_dims_t d;
  for (int i = 0; i < 4; i++)
    d[i] = dims[i];
  return dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, tag);
}

/* oneDNN data type of a value the backend describes: float32, and 8-bit
 * tensors of the int8 path (dnnl_data_type_undef otherwise). */
static dnnl_data_type_t val_dt(const oeng *e, int v) {
  switch (val(e, v)->dtype) {
  case DM_ONNX_FLOAT: return dnnl_f32;
  case DM_ONNX_UINT8: return dnnl_u8;
  case DM_ONNX_INT8: return dnnl_s8;
  default: return dnnl_data_type_undef;
  }
}

static dnnl_status_t md_plain(const oeng *e, int v, dnnl_memory_desc_t *md) {
  dnnl_status_t s = md_plain_dims(md, val(e, v)->rank, val(e, v)->dims);
  if (s == dnnl_success && val_dt(e, v) != dnnl_f32 &&
      val_dt(e, v) != dnnl_data_type_undef)
    md->data_type = val_dt(e, v); /* strides count elements: same layout */
  return s;
}

static dnnl_status_t md_any_dt(dnnl_memory_desc_t *md, int nd,
                               const int64_t *dims, dnnl_data_type_t dt) {
  dnnl_dims_t d;
  for (int i = 0; i < nd; i++)
    d[i] = dims[i];
  return dnnl_memory_desc_init_by_tag(md, nd, d, dt, dnnl_format_tag_any);
}

static dnnl_status_t md_any(dnnl_memory_desc_t *md, int nd,
                            const int64_t *dims) {
  return md_any_dt(md, nd, dims, dnnl_f32);
}

/* Dense row-major descriptor of data type dt. */
static dnnl_status_t md_plain_dt(dnnl_memory_desc_t *md, int nd,
                                 const int64_t *dims, dnnl_data_type_t dt) {
  dnnl_status_t s = md_plain_dims(md, nd, dims);
  if (s == dnnl_success && dt != dnnl_f32) {
    dnnl_dims_t d, st;
    for (int i = 0; i < md->ndims; i++) {
      d[i] = md->dims[i];
      st[i] = md->format_desc.blocking.strides[i];
    }
    s = dnnl_memory_desc_init_by_strides(md, md->ndims, d, dt, st);
  }
  return s;
}

/* Same bytes at the same addresses for every element: same dims, no padding
 * or inner blocks, and equal strides on every dim longer than 1. */
static bool md_same_bytes(const dnnl_memory_desc_t *a,
                          const dnnl_memory_desc_t *b) {
  if (dnnl_memory_desc_equal(a, b)) return true;
  if (a->ndims != b->ndims || a->data_type != b->data_type) return false;
  if (a->format_kind != dnnl_blocked || b->format_kind != dnnl_blocked)
    return false;
  if (a->offset0 != 0 || b->offset0 != 0) return false;
  if (a->extra.flags || b->extra.flags) return false;
  const dnnl_blocking_desc_t *ba = &a->format_desc.blocking;
  const dnnl_blocking_desc_t *bb = &b->format_desc.blocking;
  if (ba->inner_nblks || bb->inner_nblks) return false;
  for (int i = 0; i < a->ndims; i++) {
    if (a->dims[i] != b->dims[i] || a->padded_dims[i] != a->dims[i] ||
        b->padded_dims[i] != b->dims[i])
      return false;
    if (a->dims[i] > 1 && ba->strides[i] != bb->strides[i]) return false;
  }
  return dnnl_memory_desc_get_size(a) == dnnl_memory_desc_get_size(b);
}

static bool md_is_plain(const dnnl_memory_desc_t *md) {
  dnnl_memory_desc_t p;
  int64_t dims[DNNL_MAX_NDIMS];
  for (int i = 0; i < md->ndims; i++)
    dims[i] = md->dims[i];
  if (md_plain_dims(&p, md->ndims, dims) != dnnl_success) return false;
  p.data_type = md->data_type;
  return md_same_bytes(md, &p);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const char *pd_impl(const_dnnl_primitive_desc_t pd) {
  const char *s = NULL;
  if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) !=
          dnnl_success ||
      !s)
    return "?";
  return s;
}

/* Whether implementation `impl` is what `prefer` asks for: a name prefix
 * ("jit_dw"), or "!" and a part it must not contain ("!amx"). */
static bool impl_wanted(const char *impl, const char *prefer) {
  if (prefer[0] == '!') return strstr(impl, prefer + 1) == NULL;
  return strncmp(impl, prefer, strlen(prefer)) == 0;
}

/* dnnl_primitive_desc_create, except that the first implementation that
 * impl_wanted(prefer) (when not NULL) wins over oneDNN's first choice when
 * it accepts the descriptor too. */
static dnnl_status_t pd_create_pref(dnnl_primitive_desc_t *pd,
                                    const_dnnl_op_desc_t od,
                                    const_dnnl_primitive_attr_t attr,
                                    dnnl_engine_t eng, const char *prefer) {
  dnnl_primitive_desc_iterator_t it = NULL;
  dnnl_status_t s =
      dnnl_primitive_desc_iterator_create(&it, od, attr, eng, NULL);
  if (s != dnnl_success) return s;
  *pd = NULL;
  do {
    dnnl_primitive_desc_t c = dnnl_primitive_desc_iterator_fetch(it);
    if (!c) break;
    const char *impl = NULL;
    bool want = prefer &&
                dnnl_primitive_desc_query(c, dnnl_query_impl_info_str, 0,
                                          &impl) == dnnl_success &&
                impl && impl_wanted(impl, prefer);
    if (!*pd || want) {
      if (*pd) dnnl_primitive_desc_destroy(*pd);
      *pd = c;
    } else {
      dnnl_primitive_desc_destroy(c);
    }
    if (want || !prefer) break;
  } while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
  dnnl_primitive_desc_iterator_destroy(it);
  return *pd ? dnnl_success : dnnl_unimplemented;
}

/* The implementation a depthwise conv should prefer (see pd_create_pref):
 * on AVX-512, oneDNN 2.6 picks brdgmm_dw first, but its older jit kernels
 * ran MobileNetV2's depthwise shapes faster on one thread (`jit_dw` fp32:
 * 0.081 vs 0.131 ms at 32ch 112x112, 0.107 vs 0.156 at 144ch 56x56,
 * 0.028 vs 0.035 at 576ch 14x14; `jit_int8` u8: 0.062 vs 0.078 at 96ch
 * 112x112 stride 2, 0.077 vs 0.091 at 144ch 56x56), but not on maps
 * smaller than 14x14 (EfficientNet-B0's 1152ch 5x5 at 7x7: 0.033 vs
 * 0.037-0.040).  DERMAL_ONEDNN_DW=onednn keeps oneDNN's choice. */
static const char *dw_prefer(const oeng *e, const dm_node *n, bool int8) {
  const dm_value *W = val(e, n->in[1]), *Y = val(e, n->out[0]);
  int64_t G = n->p.conv.group;
  if (!e->dw_pref || G < 2 || W->rank != 4 || W->dims[0] != G ||
      W->dims[1] != 1)
    return NULL;
  if (Y->dims[2] * Y->dims[3] < 196) return NULL;
  return int8 ? "jit_int8" : "jit_dw";
}

/* The implementation a Winograd conv should prefer: oneDNN 2.6 picks
 * F(2x2,3x3) (jit_fp32_wino_2x3) first where it applies, but its F(4x4,3x3)
 * kernel (jit_wino_4x3) ran ResNet's 64-channel 3x3 convs at 56x56 faster:
 * 0.74-0.78 against 1.02-1.05 ms each on one thread (2-vCPU Zen 4), while
 * at 14x14 F(2x2) stays faster (1.07-1.15 against 1.27 ms).  Paired
 * (build/ab, DERMAL_ONEDNN_WINO=onednn against the default): ResNet-18
 * 0.954, ResNet-50 0.988 at one thread and 0.992 at two.
 * DERMAL_ONEDNN_WINO=onednn keeps oneDNN's choice. */
static const char *wino_prefer(const oeng *e, const dm_node *n) {
  const dm_value *Y = val(e, n->out[0]);
  if (!e->wino_pref || Y->dims[2] * Y->dims[3] < 56 * 56) return NULL;
  return "jit_wino_4x3";
}

/* The implementation an int8 conv should prefer: dw_prefer's for
 * depthwise convs; oneDNN's older jit_int8_1x1 kernel for ungrouped 1x1
 * convs to at most 32 channels on maps of 56x56 or more (MobileNet-v2's
 * projections: 20-25 % faster there than brgconv_1x1 on session 10's
 * Xeon, slower elsewhere; docs/engine.md; DERMAL_ONEDNN_PROJ=0: never);
 * else, on CPUs with AMX, oneDNN's choice (its AMX kernels) only for
 * convs with enough work: at least 24 M multiply-accumulates and 64 per
 * output value.  Below that, tile set-up and packing cost more than AMX
 * gains, and the AVX-512 VNNI kernels were faster (one thread, each
 * step's best of three alternating runs: the default model's int8 convs
 * 4.80 ms in all on VNNI against 5.13 ms on AMX; its 16->96 expand at
 * 112x112 0.34 vs 0.44 ms, its 160->960 expands at 7x7 0.059 vs 0.090
 * ms).  ResNet-50's convs are above the line but one (64->64 at 56x56,
 * 12.8 M: 0.095 vs 0.075 ms) and 1.5-3x faster on AMX.
 * DERMAL_ONEDNN_AMX=0 never takes AMX for int8 convs, =1 always does
 * (oneDNN's order). */
static const char *int8_prefer(const oeng *e, const dm_node *n) {
  const char *dw = dw_prefer(e, n, true);
  if (dw) return dw;
  if (e->amx == 1) return NULL;
  const dm_value *W = val(e, n->in[1]), *Y = val(e, n->out[0]);
  if (e->proj_pref && n->p.conv.group == 1 && W->rank == 4 &&
      W->dims[0] <= 32 && W->dims[2] == 1 && W->dims[3] == 1 &&
      Y->dims[2] * Y->dims[3] >= 3136)
    return "jit_int8_1x1";
  if (e->amx == 0) return "!amx";
  int64_t K = W->dims[0] > 0 ? W->numel / W->dims[0] : 0;
  return K >= 64 && (double)Y->numel * (double)K >= 24e6 ? NULL : "!amx";
}

static bool pd_is_ref(const_dnnl_primitive_desc_t pd) {
  const char *s = pd_impl(pd);
  return strncmp(s, "ref", 3) == 0 || strstr(s, ":ref") != NULL;
}

/* The passes' code path: the widest the CPU has and oneDNN may use, so
 * that ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 machine runs what an AVX2
 * host runs.  DERMAL_ONEDNN_VEC=c or avx2 caps it (for tests: oneDNN reads
 * its ISA limit once per process, this at every engine build). */
static vec_isa pick_vec(void) {
#if defined(__x86_64__)
  const char *cap = getenv("DERMAL_ONEDNN_VEC");
  if (cap && !strcmp(cap, "c")) return VEC_C;
  bool avx2_cap = cap && !strcmp(cap, "avx2");
  unsigned isa = (unsigned)dnnl_get_effective_cpu_isa(),
           a512 = (unsigned)dnnl_cpu_isa_avx512_core,
           a2 = (unsigned)dnnl_cpu_isa_avx2;
  if ((isa & a512) == a512 && dm__simd_ok() && !avx2_cap) return VEC_AVX512;
  if ((isa & a2) == a2 && dm__avx2_ok()) return VEC_AVX2;
#endif
  return VEC_C;
}

/* ----------------------------------------------------------------- bf16 -- */

/* Whether this CPU runs bf16 convolutions natively: the ISA oneDNN uses
 * includes AVX512-BF16 (or AMX), and a probe bf16 convolution gets a JIT
 * implementation, not a reference or emulated one.  oneDNN 2.6 ignores
 * fpmath_mode for convolutions, so bf16 compute needs bf16 memory
 * descriptors: this decides whether map_conv asks for them. */
static bool bf16_native(dnnl_engine_t eng, bool verbose) {
  dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  if (((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) !=
      (unsigned)dnnl_cpu_isa_avx512_core_bf16)
    return false;
  int64_t xd[4] = {1, 32, 14, 14}, wd[4] = {32, 32, 3, 3};
  dnnl_memory_desc_t src, w, dst;
  dnnl_dims_t st = {1, 1}, dil = {0, 0}, pad = {1, 1};
  dnnl_convolution_desc_t cd;
  dnnl_primitive_desc_t pd = NULL;
  if (md_any_dt(&src, 4, xd, dnnl_bf16) || md_any_dt(&w, 4, wd, dnnl_bf16) ||
      md_any_dt(&dst, 4, xd, dnnl_bf16) ||
      dnnl_dilated_convolution_forward_desc_init(
          &cd, dnnl_forward_inference, dnnl_convolution_direct, &src, &w, NULL,
          &dst, st, dil, pad, pad) != dnnl_success ||
      dnnl_primitive_desc_create(&pd, &cd, NULL, eng, NULL) != dnnl_success)
    return false;
  bool ok = !pd_is_ref(pd);
  if (verbose) fprintf(stderr, "onednn: bf16 probe conv: %s\n", pd_impl(pd));
  dnnl_primitive_desc_destroy(pd);
  return ok;
}

bool dm__onednn_bf16_native(void) {
  dnnl_engine_t eng = NULL;
  if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success) return false;
  bool ok = bf16_native(eng, false);
  dnnl_engine_destroy(eng);
  return ok;
}

/* Whether oneDNN's int8 convolutions on this CPU add pairs of u8 * s8
 * products in saturating 16-bit lanes (vpmaddubsw): every x86 ISA oneDNN
 * uses below AVX512-VNNI / AVX-VNNI (its "nuances of int8 computations").
 * Such a pair overflows once |w0| + |w1| > 128 with a 255 activation. */
bool dm__onednn_int8_saturates(void) {
  unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
  unsigned vnni = (unsigned)dnnl_cpu_isa_avx512_core_vnni,
           avx2v = (unsigned)dnnl_cpu_isa_avx2_vnni;
  return (isa & vnni) != vnni && (isa & avx2v) != avx2v;
}

/* Which convolutions run in bf16.  Measured on the default model
 * (MobileNetV2, val split): bf16 everywhere flipped 2.5 % of the top-1
 * classes, most of it from the depthwise convs (9 products per output
 * average out no rounding) and the first conv (3 input channels), which are
 * memory-bound anyway; dense convs with many input channels gain from bf16
 * and sum enough products to stay close.  The threshold, 64 input channels,
 * was chosen on 1,258 train images (every 6th): top-1 agreement with fp32
 * 99.29 % at 16 channels, 99.36 % at 32, 99.60 % at 64 and 96, 99.76 % at
 * 192, with p50 2.8 ms at 64 against 4.1 ms in fp32 (1 thread).  On val
 * it gives 99.70 % (docs/quantization.md). */
static bool bf16_conv(const oeng *e, int ni) {
  const dm_node *n = &e->g->nodes[ni];
  if (!e->bf16 || n->op != DM_OP_CONV || n->n_in < 2 || n->p.conv.group != 1)
    return false;
  const dm_value *W = val(e, n->in[1]);
  return W->rank >= 3 && W->dims[1] >= 64;
}

/* Whether Conv node ni writes its output yo in bf16: only when every reader
 * is a bf16 conv reading it as its source (bf16 rounding there costs
 * nothing more); fp32 for graph outputs, adds, depthwise convs, pools. */
static bool bf16_dst(const oeng *e, int ni, int yo) {
  if (!bf16_conv(e, ni) || val(e, yo)->is_output) return false;
  for (int i = ni + 1; i < e->g->n_nodes; i++) {
    const dm_node *c = &e->g->nodes[i];
    for (int k = 0; k < c->n_in; k++)
      if (c->in[k] == yo && (k != 0 || !bf16_conv(e, i))) return false;
  }
  return true;
}

/* Gemm/MatMul with welems weight elements run in bf16: large layers only
 * (a 1280x7 classifier head gains nothing and keeps fp32 accuracy). */
static bool bf16_pays(const oeng *e, int64_t welems) {
  return e->bf16 && welems >= 16384;
}
/* ---------------------------------------------------------------- swish -- */

/* Swish y = x * sigmoid(x) as its own pass after the Conv that produced x.
 * oneDNN 2.6's swish post-op makes the brgemm Conv kernels much slower
 * (EfficientNet-B0's 16->96 1x1 Conv at 112x112: 0.20 ms alone, 0.69 ms
 * with the post-op, 1 thread, this 2-vCPU EPYC); its standalone eltwise swish
 * takes 0.32 ms, this pass 0.19 ms (ONNX Runtime's separate QuickGelu:
 * 0.24 ms).  The compute, not memory, bounds it (swish16 in simd.h): the
 * unmasked main loop and the polynomial in f made it 20 % faster. */
#if defined(__x86_64__)
DM_AVX512 static void swish_avx512(float *y, const float *x, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, swish16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, m, swish16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}
#endif

#if defined(__x86_64__)
DM_AVX2 static void swish_avx2(float *y, const float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, swish8(_mm256_loadu_ps(x + i)));
  if (i < n) { /* the tail through a copy */
    float t[8] = {0};
    memcpy(t, x + i, (n - i) * sizeof *t);
    _mm256_storeu_ps(t, swish8(_mm256_loadu_ps(t)));
    memcpy(y + i, t, (n - i) * sizeof *t);
  }
}
#endif

static void swish_span(float *y, const float *x, size_t n, vec_isa vec) {
#if defined(__x86_64__)
  if (vec == VEC_AVX512) {
    swish_avx512(y, x, n);
    return;
  }
  if (vec == VEC_AVX2) {
    swish_avx2(y, x, n);
    return;
  }
#else
  (void)vec;
#endif
  for (size_t i = 0; i < n; i++)
    y[i] = x[i] / (1.f + expf(-x[i]));
}

/* ------------------------------------------------------ 1x1 conv on 1x1 -- */

#if defined(__x86_64__)

/* y[o0 .. o0+16) (mask m) of fc_run, weights transposed (wt[i][o]). */
DM_AVX512 static void fc16_avx512(const oeng *e, const ostep *st, float *y,
                                  const float *x, size_t o0, __mmask16 m) {
  const dm_node *n = &e->g->nodes[st->node];
  __m512 a0 =
      st->bias ? _mm512_maskz_loadu_ps(m, st->bias + o0) : _mm512_setzero_ps();
  __m512 a1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 2 <= st->c; i += 2) {
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i]),
                         _mm512_maskz_loadu_ps(m, st->w + i * st->n + o0), a0);
    a1 = _mm512_fmadd_ps(_mm512_set1_ps(x[i + 1]),
                         _mm512_maskz_loadu_ps(m, st->w + (i + 1) * st->n + o0),
                         a1);
  }
  if (i < st->c)
    a0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i]),
                         _mm512_maskz_loadu_ps(m, st->w + i * st->n + o0), a0);
  __m512 v = _mm512_add_ps(a0, a1);
  for (int p = 0; p < n->n_post; p++)
    v = act16(&n->post[p].act, v);
  if (st->fc_swish) v = swish16(v);
  _mm512_mask_storeu_ps(y + o0, m, v);
}

/* The four rows after rows [o, o + 4) of a row-major FC (row bytes each),
 * or those rows again at the end of [o0, o1). */
static inline const char *next4(const char *w, size_t row, size_t o,
                                size_t o1) {
  return w + (o + 4 < o1 ? o + 4 : o) * row;
}

/* Prefetches the 256 bytes at p: while four rows are read 64 bytes each,
 * the next four rows (contiguous) come in at the same pace.  MobileNet-v2's
 * 5 MB classifier from DRAM: 0.30 -> 0.26 ms (2-vCPU Zen 4, one thread). */
static inline void prefetch4(const char *p) {
  __builtin_prefetch(p);
  __builtin_prefetch(p + 64);
  __builtin_prefetch(p + 128);
  __builtin_prefetch(p + 192);
}

/* y[o] = sum_i w[o][i] * x[i] for outputs [o0, o1) of a row-major FC:
 * four rows at a time, each read front to back (what the hardware
 * prefetcher follows best), the next four prefetched. */
DM_AVX512 static void fc_rows_avx512(const ostep *st, float *y, const float *x,
                                     size_t o0, size_t o1) {
  size_t c = st->c, full = c & ~(size_t)15, row = c * sizeof(float);
  __mmask16 m = (__mmask16)((1u << (c - full)) - 1u);
  const char *w = st->wraw;
  size_t o = o0;
  for (; o < o1; o += 4) {
    size_t k = o1 - o < 4 ? o1 - o : 4; /* rows here; the rest repeat */
    const char *r[4];
    for (size_t j = 0; j < 4; j++)
      r[j] = w + (o + (j < k ? j : 0)) * row;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const char *nx = next4(w, row, o, o1);
    for (size_t i = 0; i < full; i += 16) {
      __m512 xv = _mm512_loadu_ps(x + i);
      size_t b = i * sizeof(float);
      prefetch4(nx + 4 * b);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(r[0] + b), xv, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(r[1] + b), xv, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(r[2] + b), xv, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(r[3] + b), xv, a3);
    }
    if (m) {
      __m512 xv = _mm512_maskz_loadu_ps(m, x + full);
      size_t b = full * sizeof(float);
      a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r[0] + b), xv, a0);
      a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r[1] + b), xv, a1);
      a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r[2] + b), xv, a2);
      a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r[3] + b), xv, a3);
    }
    float s4[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1),
                   _mm512_reduce_add_ps(a2), _mm512_reduce_add_ps(a3)};
    memcpy(y + o, s4, k * sizeof *y);
  }
}

DM_AVX2 static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* fc_rows_avx512 on AVX2: 8 floats a vector, the last c % 8 one by one. */
DM_AVX2 static void fc_rows_avx2(const ostep *st, float *y, const float *x,
                                 size_t o0, size_t o1) {
  size_t c = st->c, full = c & ~(size_t)7, row = c * sizeof(float);
  const char *w = st->wraw;
  for (size_t o = o0; o < o1; o += 4) {
    size_t k = o1 - o < 4 ? o1 - o : 4; /* rows here; the rest repeat */
    const char *r[4];
    for (size_t j = 0; j < 4; j++)
      r[j] = w + (o + (j < k ? j : 0)) * row;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const char *nx = next4(w, row, o, o1);
    for (size_t i = 0; i < full; i += 8) {
      __m256 xv = _mm256_loadu_ps(x + i);
      size_t b = i * sizeof(float);
      if (!(i & 8)) prefetch4(nx + 4 * b);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(r[0] + b)), xv, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(r[1] + b)), xv, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(r[2] + b)), xv, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(r[3] + b)), xv, a3);
    }
    float s4[4] = {hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3)};
    for (size_t j = 0; j < k; j++)
      for (size_t i = full; i < c; i++) {
        float wv;
        memcpy(&wv, r[j] + i * sizeof wv, sizeof wv);
        s4[j] += wv * x[i];
      }
    memcpy(y + o, s4, k * sizeof *y);
  }
}

/* y[o0 .. o0+8) of fc_span, weights transposed (wt[i][o]): bias plus the
 * dot products; fc_span applies the post-ops. */
DM_AVX2 static void fc8_avx2(const ostep *st, float *y, const float *x,
                             size_t o0) {
  __m256 a0 = st->bias ? _mm256_loadu_ps(st->bias + o0) : _mm256_setzero_ps();
  __m256 a1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 2 <= st->c; i += 2) {
    a0 = _mm256_fmadd_ps(_mm256_set1_ps(x[i]),
                         _mm256_loadu_ps(st->w + i * st->n + o0), a0);
    a1 = _mm256_fmadd_ps(_mm256_set1_ps(x[i + 1]),
                         _mm256_loadu_ps(st->w + (i + 1) * st->n + o0), a1);
  }
  if (i < st->c)
    a0 = _mm256_fmadd_ps(_mm256_set1_ps(x[i]),
                         _mm256_loadu_ps(st->w + i * st->n + o0), a0);
  _mm256_storeu_ps(y + o0, _mm256_add_ps(a0, a1));
}
#endif

/* libgomp's entry point for `#pragma omp parallel` (GCC's ABI since 4.9).
 * This file is built without -fopenmp, but oneDNN runs on the same
 * libgomp: sharing its thread team keeps the pass from oversubscribing. */
extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned nthreads,
                          unsigned flags);

/* An FC output acc after its sum: the node's activations, then the swish
 * of a Sigmoid+Mul left after it, as the reference computes them. */
static float fc_post(const oeng *e, const ostep *st, float acc) {
  const dm_node *n = &e->g->nodes[st->node];
  const dm_act swish = {DM_UNARY_SWISH, 0.f, 0.f};
  for (int p = 0; p < n->n_post; p++)
    acc = dm__ref_act(&n->post[p].act, acc);
  return st->fc_swish ? dm__ref_act(&swish, acc) : acc;
}

/* Outputs [o0, o1) of a row-major FC (wraw): the dot products, then
 * bias and post-ops. */
static void fc_rows_part(const oeng *e, const ostep *st, float *y,
                         const float *x, size_t o0, size_t o1) {
#if defined(__x86_64__)
  if (e->vec == VEC_AVX512)
    fc_rows_avx512(st, y, x, o0, o1);
  else if (e->vec == VEC_AVX2)
    fc_rows_avx2(st, y, x, o0, o1);
  else
#endif
    for (size_t o = o0; o < o1; o++) {
      float acc = 0.f, w;
      for (size_t i = 0; i < st->c; i++) {
        memcpy(&w, (const char *)st->wraw + (o * st->c + i) * sizeof w,
               sizeof w);
        acc += w * x[i];
      }
      y[o] = acc;
    }
  for (size_t o = o0; o < o1; o++) {
    float b = 0.f;
    if (st->braw) memcpy(&b, (const char *)st->braw + o * sizeof b, sizeof b);
    y[o] = fc_post(e, st, y[o] + b);
  }
}

/* A step whose st->n units (an FC's outputs, a pw pass's pixels) the
 * threads split: part computes units [u0, u1). */
typedef struct rows_job {
  const oeng *e;
  const ostep *st;
  float *y;
  const float *x;
  void (*part)(const oeng *e, const ostep *st, float *y, const float *x,
               size_t u0, size_t u1);
} rows_job;

/* Band b of n over `units`: [*lo, *hi) (threads' shares too). */
static void band_range(int64_t units, int b, int n, int64_t *lo, int64_t *hi) {
  *lo = units * b / n;
  *hi = units * (b + 1) / n;
}

/* ST_CONCAT (map_concat_copy): bytes [lo, hi) of the output, whose inputs
 * args[0 .. n_args - 1) are consecutive runs of bytes in input order. */
static void concat_part(const oeng *e, const ostep *st, void *const *ptr,
                        size_t lo, size_t hi) {
  char *y = ptr[st->args[st->n_args - 1].tensor];
  size_t off = 0;
  for (int i = 0; i + 1 < st->n_args && off < hi; i++) {
    int t = st->args[i].tensor;
    size_t n = e->t[t].bytes, a = lo > off ? lo - off : 0,
           b = hi - off < n ? hi - off : n;
    if (a < b) memcpy(y + off + a, (const char *)ptr[t] + a, b - a);
    off += n;
  }
}

/* A CONCAT or CHAN step and the session's tensor pointers, for the
 * threads that split it. */
typedef struct span_job {
  const oeng *e;
  const ostep *st;
  void *const *ptr;
} span_job;

#if defined(__x86_64__)
/* y[2j] = a[j], y[2j + 1] = b[j] for j < h. */
DM_AVX512 static void zip2_avx512(float *y, const float *a, const float *b,
                                  size_t h) {
  const __m512i lo =
      _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13,
                                       29, 14, 30, 15, 31);
  size_t j = 0;
  for (; j + 16 <= h; j += 16) {
    __m512 va = _mm512_loadu_ps(a + j), vb = _mm512_loadu_ps(b + j);
    _mm512_storeu_ps(y + 2 * j, _mm512_permutex2var_ps(va, lo, vb));
    _mm512_storeu_ps(y + 2 * j + 16, _mm512_permutex2var_ps(va, hi, vb));
  }
  if (j < h) { /* t < 16 pairs left: 2t outputs */
    size_t t = h - j, o = 2 * t;
    __mmask16 m = (__mmask16)((1u << t) - 1u);
    __mmask16 m0 = (__mmask16)(o >= 16 ? 0xffffu : (1u << o) - 1u);
    __mmask16 m1 = (__mmask16)(o > 16 ? (1u << (o - 16)) - 1u : 0u);
    __m512 va = _mm512_maskz_loadu_ps(m, a + j);
    __m512 vb = _mm512_maskz_loadu_ps(m, b + j);
    _mm512_mask_storeu_ps(y + 2 * j, m0, _mm512_permutex2var_ps(va, lo, vb));
    if (m1)
      _mm512_mask_storeu_ps(y + 2 * j + 16, m1,
                            _mm512_permutex2var_ps(va, hi, vb));
  }
}

/* zip2_avx512 on AVX2: 8 pairs at a time, the rest one by one. */
DM_AVX2 static void zip2_avx2(float *y, const float *a, const float *b,
                              size_t h) {
  size_t j = 0;
  for (; j + 8 <= h; j += 8) {
    __m256 va = _mm256_loadu_ps(a + j), vb = _mm256_loadu_ps(b + j);
    __m256 lo = _mm256_unpacklo_ps(va, vb), hi = _mm256_unpackhi_ps(va, vb);
    _mm256_storeu_ps(y + 2 * j, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(y + 2 * j + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  }
  for (; j < h; j++) {
    y[2 * j] = a[j];
    y[2 * j + 1] = b[j];
  }
}
#endif

/* ST_CHAN (ochan): pixels [p0, p1) of the output. */
static void chan_part(const oeng *e, const ostep *st, void *const *ptr,
                      size_t p0, size_t p1) {
  const ochan *m = st->chan;
  size_t c = (size_t)m->c;
  const float *x[CHAN_MAX_SRC];
  for (int i = 0; i < m->n_src; i++)
    x[i] = ptr[st->args[i].tensor];
  float *y = (float *)ptr[st->args[m->n_src].tensor] + p0 * c;
  switch (m->mode) {
  case CHAN_RUN: {
    size_t c0 = (size_t)m->src_c[0];
    for (size_t p = p0; p < p1; p++, y += c)
      memcpy(y, x[0] + p * c0 + (size_t)m->ch[0], c * sizeof *y);
    return;
  }
  case CHAN_ZIP2: {
    /* even channels from run 0, odd from run 1: where output channels 0
     * and 1 come from */
    size_t h = c / 2, sa = (size_t)m->src_c[m->src[0]],
           sb = (size_t)m->src_c[m->src[1]];
    const float *xa = x[m->src[0]] + m->ch[0], *xb = x[m->src[1]] + m->ch[1];
    for (size_t p = p0; p < p1; p++, y += c) {
      const float *a = xa + p * sa, *b = xb + p * sb;
#if defined(__x86_64__)
      if (e->vec == VEC_AVX512) {
        zip2_avx512(y, a, b, h);
        continue;
      }
      if (e->vec == VEC_AVX2) {
        zip2_avx2(y, a, b, h);
        continue;
      }
#endif
      for (size_t j = 0; j < h; j++) {
        y[2 * j] = a[j];
        y[2 * j + 1] = b[j];
      }
    }
    return;
  }
  default:
    for (size_t p = p0; p < p1; p++, y += c)
      for (size_t k = 0; k < c; k++) {
        int i = m->src[k];
        y[k] = x[i][p * (size_t)m->src_c[i] + (size_t)m->ch[k]];
      }
  }
}

/* Part t of nt of a CONCAT step (its bytes) or a CHAN step (its pixels). */
static void span_part(const span_job *j, int t, int nt) {
  const ostep *st = j->st;
  bool cat = st->kind == ST_CONCAT;
  int64_t lo, hi;
  band_range((int64_t)(cat ? st->bytes : st->n), t, nt, &lo, &hi);
  if (cat)
    concat_part(j->e, st, j->ptr, (size_t)lo, (size_t)hi);
  else
    chan_part(j->e, st, j->ptr, (size_t)lo, (size_t)hi);
}

static void span_thread(void *arg) {
  span_part(arg, omp_get_thread_num(), omp_get_num_threads());
}

/* Thread t's share of a rows_job's units. */
static void rows_thread(void *arg) {
  const rows_job *j = arg;
  int64_t u0, u1;
  band_range((int64_t)j->st->n, omp_get_thread_num(), omp_get_num_threads(),
             &u0, &u1);
  if (u1 > u0) j->part(j->e, j->st, j->y, j->x, (size_t)u0, (size_t)u1);
}

/* ST_FC: y[o] = post(bias[o] + sum_i w[i][o] * x[i]) for o < st->n, i <
 * st->c (weights transposed at load): a 1x1 Conv over a 1x1 map, an SE
 * block's squeeze or excitation.  oneDNN's brgemm conv took 4-7 us for
 * each (EfficientNet-B0: 32 such convs, 0.23 ms per run on one thread;
 * this pass 0.16 ms, mostly reading their 2.5 MB of weights).  fc_span
 * computes outputs [o0, o1); fc_run all of them. */
static void fc_span(const oeng *e, const ostep *st, float *y, const float *x,
                    size_t o0, size_t o1) {
  if (st->wraw) {
    fc_rows_part(e, st, y, x, o0, o1);
    return;
  }
  size_t ov = o0; /* outputs [o0, ov) summed by the AVX2 code */
#if defined(__x86_64__)
  if (e->vec == VEC_AVX512) {
    for (size_t o = o0; o < o1; o += 16)
      fc16_avx512(e, st, y, x, o,
                  (__mmask16)(o1 - o >= 16 ? 0xffffu : (1u << (o1 - o)) - 1u));
    return;
  }
  if (e->vec == VEC_AVX2)
    for (; ov + 8 <= o1; ov += 8)
      fc8_avx2(st, y, x, ov);
#endif
  for (size_t o = o0; o < o1; o++) {
    float acc = o < ov ? y[o] : st->bias ? st->bias[o] : 0.f;
    for (size_t i = 0; o >= ov && i < st->c; i++)
      acc += st->w[i * st->n + o] * x[i];
    y[o] = fc_post(e, st, acc);
  }
}

static void fc_run(const oeng *e, const ostep *st, float *y, const float *x) {
  if (st->wraw && e->threads > 1 && st->n * st->c >= 262144) {
    /* row-major: on all threads from 256 K weights */
    rows_job j = {e, st, y, x, fc_rows_part};
    GOMP_parallel(rows_thread, &j, (unsigned)e->threads, 0);
    return;
  }
  fc_span(e, st, y, x, 0, st->n);
}

/* Pixels [p0, p1) of an ST_PW step (a rows_job part). */
static void pw_part(const oeng *e, const ostep *st, float *y, const float *x,
                    size_t p0, size_t p1) {
  (void)e;
  dm__pw_rows(st->pw, y, x, p0, p1);
}

/* ST_PW outside bands: on all threads from 32768 output floats. */
static void pw_run(const oeng *e, const ostep *st, float *y, const float *x) {
  if (e->threads > 1 && st->n * (size_t)st->pw->oc >= 32768) {
    rows_job j = {e, st, y, x, pw_part};
    GOMP_parallel(rows_thread, &j, (unsigned)e->threads, 0);
    return;
  }
  dm__pw_rows(st->pw, y, x, 0, st->n);
}

/* ------------------------------------------------- quantize, dequantize -- */

/* Per-tensor QuantizeLinear exactly as ONNX defines it, y = sat(rint(x /
 * scale) + zp) (half to even, NaN -> zp), and DequantizeLinear, y = (x - zp)
 * * scale, as passes over a dense buffer (any layout: elementwise).  oneDNN
 * 2.6's scaling reorder multiplies by the reciprocal, adds the zero point
 * before rounding, and got slower on 2 threads than on 1 (default int8
 * model: 0.60 -> 1.31 ms for its 27 reorders). */
#if defined(__x86_64__)
DM_AVX512 static void qdq_avx512(const qdq_op *op, void *y, const void *x,
                                 size_t n) {
  const __m512 s = _mm512_set1_ps(op->scale);
  const __m512 zf = _mm512_set1_ps((float)op->zp);
  const __m512i zi = _mm512_set1_epi32(op->zp);
  const __m512 lo = _mm512_set1_ps(op->u8 ? 0.f : -128.f),
               hi = _mm512_set1_ps(op->u8 ? 255.f : 127.f);
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1u);
    if (op->quant) {
      __m512 v =
          _mm512_div_ps(_mm512_maskz_loadu_ps(m, (const float *)x + i), s);
      v = _mm512_roundscale_ps(v,
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
      v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, zf), lo), hi);
      if (op->fake) /* integral: (v - zp) * scale as DequantizeLinear does */
        _mm512_mask_storeu_ps((float *)y + i, m,
                              _mm512_mul_ps(_mm512_sub_ps(v, zf), s));
      else
        _mm512_mask_cvtepi32_storeu_epi8((char *)y + i, m,
                                         _mm512_cvtps_epi32(v));
    } else {
      __m128i b;
      if (m == 0xffff) {
        b = _mm_loadu_si128((const __m128i *)((const char *)x + i));
      } else { /* the tail: no byte-masked load in AVX-512F */
        char t[16] = {0};
        memcpy(t, (const char *)x + i, n - i);
        b = _mm_loadu_si128((const __m128i *)t);
      }
      __m512i q = op->u8 ? _mm512_cvtepu8_epi32(b) : _mm512_cvtepi8_epi32(b);
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, zi)), s);
      _mm512_mask_storeu_ps((float *)y + i, m, v);
    }
  }
}

/* The same on AVX2, 8 at a time: the same division and rounding, so the
 * same bits; the tail goes through qdq_span's portable loop. */
DM_AVX2 static size_t qdq_avx2(const qdq_op *op, void *y, const void *x,
                               size_t n) {
  const __m256 s = _mm256_set1_ps(op->scale);
  const __m256 zf = _mm256_set1_ps((float)op->zp);
  const __m256i zi = _mm256_set1_epi32(op->zp);
  const __m256 lo = _mm256_set1_ps(op->u8 ? 0.f : -128.f),
               hi = _mm256_set1_ps(op->u8 ? 255.f : 127.f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    if (op->quant) {
      __m256 v = _mm256_div_ps(_mm256_loadu_ps((const float *)x + i), s);
      v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q)); /* NaN -> 0 */
      v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, zf), lo), hi);
      if (op->fake) {
        _mm256_storeu_ps((float *)y + i,
                         _mm256_mul_ps(_mm256_sub_ps(v, zf), s));
      } else { /* in range already: the packs do not saturate */
        __m256i q = _mm256_cvtps_epi32(v);
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q),
                                    _mm256_extracti128_si256(q, 1));
        w = op->u8 ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w);
        _mm_storel_epi64((__m128i *)((char *)y + i), w);
      }
    } else {
      __m128i b = _mm_loadl_epi64((const __m128i *)((const char *)x + i));
      __m256i q = op->u8 ? _mm256_cvtepu8_epi32(b) : _mm256_cvtepi8_epi32(b);
      _mm256_storeu_ps(
          (float *)y + i,
          _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, zi)), s));
    }
  }
  return i;
}
#endif

static void qdq_span(const qdq_op *op, void *y, const void *x, size_t n,
                     vec_isa vec) {
  size_t i = 0;
#if defined(__x86_64__)
  if (vec == VEC_AVX512) {
    qdq_avx512(op, y, x, n);
    return;
  }
  if (vec == VEC_AVX2) i = qdq_avx2(op, y, x, n);
#else
  (void)vec;
#endif
  for (; i < n; i++) {
    if (op->quant) {
      int32_t q =
          dm__quantize_one(((const float *)x)[i], op->scale, op->zp, op->u8);
      if (op->fake)
        ((float *)y)[i] = (float)(q - op->zp) * op->scale;
      else if (op->u8)
        ((uint8_t *)y)[i] = (uint8_t)q;
      else
        ((int8_t *)y)[i] = (int8_t)q;
    } else {
      int32_t q = op->u8 ? (int32_t)((const uint8_t *)x)[i]
                         : (int32_t)((const int8_t *)x)[i];
      ((float *)y)[i] = (float)(q - op->zp) * op->scale;
    }
  }
}

/* ------------------------------------------------ layout passes -- */

/* NCHW -> NHWC for 3 channels, pixels [p, p + n) of one image (x: its
 * three planes of hw floats, y: its hw * 3 floats).  16 pixels at a time:
 * each output vector takes its lanes from two of the planes by one
 * permutation, then the third plane's by a second one. */
#if defined(__x86_64__)
DM_AVX512 static void nhwc3_avx512(float *y, const float *x, size_t hw,
                                   size_t p, size_t n) {
  static const int32_t ab[3][16] = {
      {0, 16, 0, 1, 17, 0, 2, 18, 0, 3, 19, 0, 4, 20, 0, 5},
      {21, 0, 6, 22, 0, 7, 23, 0, 8, 24, 0, 9, 25, 0, 10, 26},
      {0, 11, 27, 0, 12, 28, 0, 13, 29, 0, 14, 30, 0, 15, 31, 0}};
  static const int32_t c3[3][16] = {
      {0, 1, 16, 3, 4, 17, 6, 7, 18, 9, 10, 19, 12, 13, 20, 15},
      {0, 21, 2, 3, 22, 5, 6, 23, 8, 9, 24, 11, 12, 25, 14, 15},
      {26, 1, 2, 27, 4, 5, 28, 7, 8, 29, 10, 11, 30, 13, 14, 31}};
  __m512i iab[3], ic[3];
  for (int v = 0; v < 3; v++) {
    iab[v] = _mm512_loadu_si512(ab[v]);
    ic[v] = _mm512_loadu_si512(c3[v]);
  }
  size_t end = p + n;
  for (; p + 16 <= end; p += 16) {
    __m512 r = _mm512_loadu_ps(x + p), g = _mm512_loadu_ps(x + hw + p),
           b = _mm512_loadu_ps(x + 2 * hw + p);
    for (int v = 0; v < 3; v++) {
      __m512 t = _mm512_permutex2var_ps(r, iab[v], g);
      _mm512_storeu_ps(y + 3 * p + 16 * v, _mm512_permutex2var_ps(t, ic[v], b));
    }
  }
  for (; p < end; p++)
    for (size_t c = 0; c < 3; c++)
      y[3 * p + c] = x[c * hw + p];
}

/* y[p][c] = x[p][c] * s[c] for pixels [0, n). */
DM_AVX512 static void cscale_avx512(float *y, const float *x, const float *s,
                                    size_t c, size_t n) {
  size_t full = c & ~(size_t)15;
  __mmask16 m = (__mmask16)((1u << (c - full)) - 1u);
  for (size_t p = 0; p < n; p++, x += c, y += c) {
    size_t k = 0;
    for (; k < full; k += 16)
      _mm512_storeu_ps(
          y + k, _mm512_mul_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(s + k)));
    if (m)
      _mm512_mask_storeu_ps(y + k, m,
                            _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + k),
                                          _mm512_maskz_loadu_ps(m, s + k)));
  }
}

/* y[p][k] = x[p][k] * s[k] for k < kn, x[p][k] for kn <= k < c (a
 * blocked map's padding), pixels [0, n): whole vectors, then one by one. */
DM_AVX2 static void cscale_avx2(float *y, const float *x, const float *s,
                                size_t c, size_t kn, size_t n) {
  for (size_t p = 0; p < n; p++, x += c, y += c) {
    size_t k = 0;
    for (; k + 8 <= kn; k += 8)
      _mm256_storeu_ps(
          y + k, _mm256_mul_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(s + k)));
    for (; k < kn; k++)
      y[k] = x[k] * s[k];
    for (; k < c; k++)
      y[k] = x[k];
  }
}

/* y[k] = sum of x[p][c0 + k] over np pixels from x, k < 16 (masked by m),
 * c channels per pixel.  Four running sums, added as a tree. */
DM_AVX512 static void gap_avx512(float *y, const float *x, size_t c, size_t np,
                                 size_t c0, __mmask16 m) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  x += c0;
  size_t p = 0;
  for (; p + 4 <= np; p += 4, x += 4 * c) {
    s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m, x));
    s1 = _mm512_add_ps(s1, _mm512_maskz_loadu_ps(m, x + c));
    s2 = _mm512_add_ps(s2, _mm512_maskz_loadu_ps(m, x + 2 * c));
    s3 = _mm512_add_ps(s3, _mm512_maskz_loadu_ps(m, x + 3 * c));
  }
  for (; p < np; p++, x += c)
    s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m, x));
  __m512 sum = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
  _mm512_mask_storeu_ps(y + c0, m, sum);
}
#endif

/* ----------------------------------------------- elementwise passes -- */

/* One pass of a step (ST_SWISH ... ST_GAP, see step_kind) on resolved
 * addresses.  It is split into units shared among the threads: elements
 * (SWISH, QDQ) or pixels (NHWC, CSCALE, GAP). */
typedef struct ew_job {
  step_kind kind;
  const qdq_op *qdq; /* QDQ */
  void *y;
  const void *x;
  const float *s; /* CSCALE */
  size_t n;       /* SWISH, QDQ: elements; others: images */
  size_t c, hw;
  size_t c_all; /* CSCALE: channels (c: those of one block, see ostep) */
  vec_isa vec;
  float *part; /* GAP on threads: c partial sums per thread */
  const dm_stem *stem;
  char *scratch; /* STEM: per thread or band, scratch_bytes each */
  size_t scratch_bytes;
} ew_job;

/* y[k] = the sum of channel k over np pixels from x (c channels each). */
static void gap_sums(const ew_job *j, float *y, const float *x, size_t np) {
#if defined(__x86_64__)
  if (j->vec == VEC_AVX512) {
    for (size_t c0 = 0; c0 < j->c; c0 += 16) {
      size_t cn = j->c - c0 < 16 ? j->c - c0 : 16;
      gap_avx512(y, x, j->c, np, c0, (__mmask16)((1u << cn) - 1u));
    }
    return;
  }
#endif
  memset(y, 0, j->c * sizeof *y);
  for (size_t p = 0; p < np; p++)
    for (size_t k = 0; k < j->c; k++)
      y[k] += x[p * j->c + k];
}

/* y[k] for channels [k0, k1): the mean over hw pixels of n rows of
 * partial sums (c floats each, one per thread or band). */
static void gap_means(float *y, const float *part, size_t c, size_t n,
                      size_t hw, size_t k0, size_t k1) {
  for (size_t k = k0; k < k1; k++) {
    float sum = 0;
    for (size_t t = 0; t < n; t++)
      sum += part[t * c + k];
    y[k] = sum / (float)hw;
  }
}

/* SWISH and QDQ count elements; the other passes images of hw pixels. */
static bool ew_by_element(const ew_job *j) {
  return j->kind == ST_SWISH || j->kind == ST_QDQ;
}

static size_t ew_units(const ew_job *j) {
  return ew_by_element(j) ? j->n : j->n * j->hw;
}

/* Units [b, b + n) of j, by thread or band `slot` (its STEM scratch). */
static void ew_span(const ew_job *j, size_t b, size_t n, int slot) {
  const float *x = j->x;
  float *y = j->y;
  switch (j->kind) {
  case ST_QDQ: {
    size_t ys = j->qdq->quant && !j->qdq->fake ? 1 : 4,
           xs = j->qdq->quant ? 4 : 1;
    qdq_span(j->qdq, (char *)j->y + b * ys, (const char *)j->x + b * xs, n,
             j->vec);
    return;
  }
  case ST_NHWC: /* pixel q of the batch: image q / hw; runs within images */
    while (n) {
      size_t img = b / j->hw, p = b % j->hw;
      size_t k = j->hw - p < n ? j->hw - p : n;
      const float *xi = x + img * 3 * j->hw;
      float *yi = y + img * 3 * j->hw;
#if defined(__x86_64__)
      if (j->vec == VEC_AVX512)
        nhwc3_avx512(yi, xi, j->hw, p, k);
      else
#endif
        for (size_t q = p; q < p + k; q++)
          for (size_t c = 0; c < 3; c++)
            yi[3 * q + c] = xi[c * j->hw + q];
      b += k;
      n -= k;
    }
    return;
  case ST_CSCALE: /* unit q: a pixel of block (q / hw) % blocks */
    while (n) {
      size_t blocks = (j->c_all + j->c - 1) / j->c;
      size_t k0 = (b / j->hw) % blocks * j->c;
      size_t kn = j->c_all - k0 < j->c ? j->c_all - k0 : j->c;
      size_t np = j->hw - b % j->hw < n ? j->hw - b % j->hw : n;
      float *yp = y + b * j->c;
      const float *xp = x + b * j->c, *s = j->s + k0;
#if defined(__x86_64__)
      if (j->vec == VEC_AVX512 && kn == j->c)
        cscale_avx512(yp, xp, s, j->c, np);
      else if (j->vec != VEC_C)
        cscale_avx2(yp, xp, s, j->c, kn, np);
      else
#endif
        for (size_t p = 0; p < np; p++, xp += j->c, yp += j->c) {
          for (size_t k = 0; k < kn; k++)
            yp[k] = xp[k] * s[k];
          for (size_t k = kn; k < j->c; k++) /* the block's padding */
            yp[k] = xp[k];
        }
      b += np;
      n -= np;
    }
    return;
  case ST_STEM:
#if defined(__x86_64__)
    dm__stem_rows(j->stem, j->y, j->x, (int64_t)b, (int64_t)(b + n),
                  j->scratch + (size_t)slot * j->scratch_bytes);
#endif
    return;
  case ST_GAP: /* whole images here; ew_part splits one image's pixels */
    for (size_t img = b / j->hw; img < (b + n) / j->hw; img++) {
      float *yi = y + img * j->c;
      gap_sums(j, yi, x + img * j->hw * j->c, j->hw);
      for (size_t k = 0; k < j->c; k++)
        yi[k] /= (float)j->hw;
    }
    return;
  default: swish_span(y + b, x + b, n, j->vec); return;
  }
}

/* Thread t's share: a contiguous range of units, so that consecutive passes
 * over one tensor (swish, GAP, the SE scaling) find their part of it in
 * their own core's cache. */
static void ew_part(void *arg) {
  const ew_job *j = arg;
  size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
  size_t units = ew_units(j);
  size_t per = (units + nt - 1) / nt;
  if (ew_by_element(j)) per = (per + 63) & ~(size_t)63;
  size_t b = t * per, n = b < units ? (units - b < per ? units - b : per) : 0;
  if (j->kind == ST_GAP) { /* one image: partial sums, added up by ew_run */
    if (n) gap_sums(j, j->part + t * j->c, (const float *)j->x + b * j->c, n);
  } else if (n) {
    ew_span(j, b, n, (int)t);
  }
}

/* The pass on `threads` threads when it touches at least 32768 elements
 * (y == x allowed for SWISH and CSCALE); GAP only for one image of at
 * least 64 pixels per thread, with j->part holding threads * c floats
 * (MobileNetV2's 7x7 GAP took 0.0135 ms on two threads, 0.0063 on one). */
static void ew_run(const ew_job *j, int threads) {
  size_t elems = ew_by_element(j) ? j->n : j->n * j->c * j->hw;
  if (threads < 2 || elems < 32768 || ew_units(j) < 2 ||
      (j->kind == ST_GAP &&
       (j->n != 1 || !j->part || j->hw < 64 * (size_t)threads))) {
    ew_span(j, 0, ew_units(j), 0);
    return;
  }
  if (j->kind == ST_GAP) /* zeros stand for threads without pixels */
    memset(j->part, 0, (size_t)threads * j->c * sizeof *j->part);
  GOMP_parallel(ew_part, (void *)j, (unsigned)threads, 0);
  if (j->kind == ST_GAP)
    gap_means(j->y, j->part, j->c, (size_t)threads, j->hw, 0, j->c);
}

/* ---------------------------------------------------- buffers, tensors -- */

static int new_buf(oeng *e, buf_kind k, int ext, const void *konst, bool own) {
  if (!grow((void **)&e->b, &e->cap_b, e->n_b + 1, sizeof *e->b)) return -1;
  obuf *b = &e->b[e->n_b];
  memset(b, 0, sizeof *b);
  b->kind = k;
  b->ext = ext;
  b->konst = konst;
  b->own = own;
  b->first = INT_MAX;
  b->last = -1;
  b->last_node = -1;
  return e->n_b++;
}

/* A tensor of value v over buffer buf; md NULL for non-float32 data.  Linked
 * into v's list when `link`. */
static int new_tensor(oeng *e, int v, int buf, const dnnl_memory_desc_t *md,
                      bool link) {
  if (!grow((void **)&e->t, &e->cap_t, e->n_t + 1, sizeof *e->t)) return -1;
  int ti = e->n_t++;
  otensor *t = &e->t[ti];
  memset(t, 0, sizeof *t);
  t->value = v;
  t->buf = buf;
  t->next = -1;
  if (md) {
    t->has_md = true;
    t->md = *md;
    t->bytes = dnnl_memory_desc_get_size(md);
    t->plain = md_is_plain(md);
  } else {
    t->plain = true;
    t->bytes = val(e, v)->nbytes;
  }
  obuf *b = &e->b[buf];
  if (t->bytes > b->bytes) b->bytes = t->bytes;
  if (e->last_use[v] > b->last_node) b->last_node = e->last_use[v];
  if (link) {
    if (e->val_t[v] < 0) {
      e->val_t[v] = ti;
    } else {
      int p = e->val_t[v];
      while (e->t[p].next >= 0)
        p = e->t[p].next;
      e->t[p].next = ti;
    }
  }
  return ti;
}

/* A fresh arena tensor for value v (linked), md NULL for non-float32. */
static int new_act(oeng *e, int v, const dnnl_memory_desc_t *md) {
  int b = new_buf(e, BUF_ARENA, -1, NULL, false);
  if (b < 0) return -1;
  return new_tensor(e, v, b, md, true);
}

static dm_err nomem(dm_errbuf *eb, const dm_node *n) {
  if (n)
    return dm_errf(eb, DM_NOMEM, "node '%s' (%s): out of memory", nname(n),
                   n->op_type);
  return dm_errf(eb, DM_NOMEM, "onednn: out of memory");
}

static dm_err dnnl_fail(dm_errbuf *eb, const dm_node *n, const char *what,
                        dnnl_status_t st) {
  if (n)
    return dm_errf(eb, DM_BACKEND, "node '%s' (%s): %s failed: status %d",
                   nname(n), n->op_type, what, (int)st);
  return dm_errf(eb, DM_BACKEND, "onednn: %s failed: status %d", what, (int)st);
}

/* Primary tensor of v; constants get a plain tensor over their data. */
static dm_err primary(oeng *e, int v, int *out, dm_errbuf *eb) {
  if (e->val_t[v] >= 0) {
    *out = e->val_t[v];
    return DM_OK;
  }
  const dm_value *dv = val(e, v);
  if (dv->kind != DM_VAL_CONST)
    return dm_errf(eb, DM_BACKEND, "onednn: value '%s' used before produced",
                   dv->name ? dv->name : "?");
  const void *data = dv->data;
  bool own = false;
  size_t es = dv->numel > 0 ? dv->nbytes / (size_t)dv->numel : 1;
  if (es > 1 && data && ((uintptr_t)data & (es - 1))) {
    /* graph.c promises aligned constants; stay safe if one slips by */
    void *p = aligned_alloc(ALIGN, align_up(dv->nbytes));
    if (!p) return nomem(eb, NULL);
    memcpy(p, data, dv->nbytes);
    data = p;
    own = true;
  }
  int b = new_buf(e, BUF_CONST, -1, data, own);
  if (b < 0) {
    if (own) free((void *)data);
    return nomem(eb, NULL);
  }
  dnnl_memory_desc_t md;
  if (dv->dtype == DM_ONNX_FLOAT && md_plain(e, v, &md) != dnnl_success)
    return dm_errf(eb, DM_BACKEND, "onednn: constant '%s': bad shape",
                   dv->name ? dv->name : "?");
  int t = new_tensor(e, v, b, dv->dtype == DM_ONNX_FLOAT ? &md : NULL, true);
  if (t < 0) return nomem(eb, NULL);
  *out = t;
  return DM_OK;
}

/* A tensor over the bytes of tensor `of` with another descriptor (same
 * bytes at the same addresses); not linked. */
static int view_of(oeng *e, int v, int of, const dnnl_memory_desc_t *md) {
  return new_tensor(e, v, e->t[of].buf, md, false);
}

static dm_err add_step(oeng *e, const ostep *st, dm_errbuf *eb) {
  if (!grow((void **)&e->s, &e->cap_s, e->n_s + 1, sizeof *e->s))
    return nomem(eb, NULL);
  e->s[e->n_s++] = *st;
  return DM_OK;
}

/* Appends step *st (kind and sizes set) of node ni over args[0 .. n)
 * (the inputs, then the output: CONCAT, CHAN), which the step then owns;
 * freed when it cannot be added. */
static dm_err add_args_step(oeng *e, int ni, ostep *st, oarg *args, int n,
                            dm_errbuf *eb) {
  st->node = ni;
  st->src = st->dst = -1;
  st->args = args;
  st->n_args = n;
  dm_err rc = add_step(e, st, eb);
  if (rc != DM_OK) free(args);
  return rc;
}

/* Appends pass step *st (kind and sizes set) reading tensor src, writing
 * tensor dst. */
static dm_err add_pass(oeng *e, int node, ostep *st, int src, int dst,
                       dm_errbuf *eb) {
  st->node = node;
  st->src = src;
  st->dst = dst;
  if (st->kind != ST_CSCALE) st->aux = -1;
  dm_err rc = add_step(e, st, eb);
  if (rc == DM_OK && e->verbose)
    fprintf(stderr, "onednn: %-28s %-20s %s pass\n",
            node >= 0 ? nname(&e->g->nodes[node]) : "(input)",
            node >= 0 ? e->g->nodes[node].op_type : "reorder",
            step_name[st->kind]);
  return rc;
}

static dnnl_status_t user_attr(dnnl_primitive_attr_t *attr) {
  dnnl_status_t st = dnnl_primitive_attr_create(attr);
  if (st != dnnl_success) return st;
  st =
      dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
  if (st != dnnl_success) {
    dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
  }
  return st;
}

static dm_err add_job(oeng *e, int step, int node,
                      const dnnl_memory_desc_t *smd, const void *src,
                      const dnnl_memory_desc_t *dmd, void *dst, dm_errbuf *eb) {
  if (!grow((void **)&e->jobs, &e->cap_jobs, e->n_jobs + 1, sizeof *e->jobs))
    return nomem(eb, node >= 0 ? &e->g->nodes[node] : NULL);
  ojob *j = &e->jobs[e->n_jobs++];
  memset(j, 0, sizeof *j);
  j->step = step;
  j->node = node;
  if (smd) j->smd = *smd;
  if (dmd) j->dmd = *dmd;
  j->src = src;
  j->dst = dst;
  return DM_OK;
}

/* Appends a PRIM step with args (copied) for pd (cloned, not consumed); the
 * primitive is created by the jobs at the end of prepare. */
static dm_err emit_prim(oeng *e, int node, const_dnnl_primitive_desc_t pd,
                        const oarg *args, int n_args, dm_errbuf *eb) {
  const dm_node *n = node >= 0 ? &e->g->nodes[node] : NULL;
  ostep st;
  memset(&st, 0, sizeof st);
  st.kind = ST_PRIM;
  st.node = node;
  st.src = st.dst = -1;
  st.args = malloc((size_t)n_args * sizeof *st.args);
  if (!st.args) return nomem(eb, n);
  memcpy(st.args, args, (size_t)n_args * sizeof *args);
  st.n_args = n_args;
  const dnnl_memory_desc_t *sp =
      dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  if (sp && dnnl_memory_desc_get_size(sp) > 0) {
    st.has_scratch = true;
    st.scratch_md = *sp;
    size_t sz = dnnl_memory_desc_get_size(sp);
    if (sz > e->scratch_bytes) e->scratch_bytes = sz;
  }
  dnnl_status_t s = dnnl_primitive_desc_clone(&st.pd, pd);
  if (s != dnnl_success) {
    free(st.args);
    return dnnl_fail(eb, n, "dnnl_primitive_desc_clone", s);
  }
  dm_err rc = add_step(e, &st, eb);
  if (rc != DM_OK) {
    dnnl_primitive_desc_destroy(st.pd);
    free(st.args);
    return rc;
  }
  if ((rc = add_job(e, e->n_s - 1, node, NULL, NULL, NULL, NULL, eb)) != DM_OK)
    return rc; /* the step's pd is released with the engine */
  e->n_prim++;
  if (e->verbose)
    fprintf(stderr, "onednn: %-28s %-20s %s\n", n ? nname(n) : "(output)",
            n ? n->op_type : "reorder", pd_impl(pd));
  return DM_OK;
}

/* Weights from the model file go through e->stage: the kernel copies them
 * (process_vm_readv on this very process, through its own mapping of
 * physical memory), and the reorder reads huge pages.  On the VMs we
 * measure on, the first touch of each 4 KiB page of the mapping from user
 * space costs microseconds even when the page is in the page cache and
 * mapped: reading MobileNetV2's 14 MB took 10-12 ms that way and 4-5 ms
 * through the kernel.  Tensors of 64 KiB to 16 MiB; returns src itself
 * (the reorder then reads the mapping) for other sizes and when the call
 * fails, e.g. under a seccomp filter. */
#define STAGE_MIN ((size_t)64 << 10)
#define STAGE_MAX ((size_t)16 << 20)

static const void *staged(oeng *e, const void *src, size_t n) {
#if defined(__linux__)
  if (!e->stage.base || n < STAGE_MIN || n > e->stage.cap) return src;
  struct iovec l = {e->stage.base, n}, r = {(void *)src, n};
  if (process_vm_readv(getpid(), &l, 1, &r, 1, 0) == (ssize_t)n)
    return e->stage.base;
#else
  (void)e;
  (void)n;
#endif
  return src;
}

/* Runs one reorder job (constants) on stream st. */
static void job_reorder(oeng *e, ojob *j, dnnl_stream_t st) {
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t pr = NULL;
  dnnl_memory_t ms = NULL, mdst = NULL;
  dnnl_status_t s;
  j->what = "dnnl_reorder_primitive_desc_create";
  s = dnnl_reorder_primitive_desc_create(&pd, &j->smd, e->eng, &j->dmd, e->eng,
                                         NULL);
  if (s != dnnl_success) goto out;
  j->what = "dnnl_primitive_create(reorder)";
  if ((s = dnnl_primitive_create(&pr, pd)) != dnnl_success) goto out;
  j->what = "dnnl_memory_create";
  const void *src = e->workers == 1
                        ? staged(e, j->src, dnnl_memory_desc_get_size(&j->smd))
                        : j->src;
  if ((s = dnnl_memory_create(&ms, &j->smd, e->eng, (void *)src)) !=
      dnnl_success)
    goto out;
  if ((s = dnnl_memory_create(&mdst, &j->dmd, e->eng, j->dst)) != dnnl_success)
    goto out;
  dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, mdst}};
  j->what = "dnnl_primitive_execute(reorder)";
  if ((s = dnnl_primitive_execute(pr, st, 2, a)) != dnnl_success) goto out;
  s = dnnl_stream_wait(st);
out:
  j->status = s;
  if (mdst) dnnl_memory_destroy(mdst);
  if (ms) dnnl_memory_destroy(ms);
  if (pr) dnnl_primitive_destroy(pr);
  if (pd) dnnl_primitive_desc_destroy(pd);
}

static void *job_worker(void *arg) {
  oeng *e = arg;
  dnnl_stream_t st = NULL;
  /* primitives are tuned for the run's thread count (per-thread ICV);
   * reorders run once, on one thread each when several workers share the
   * cores */
  omp_set_num_threads(e->threads);
  for (;;) {
    int k = atomic_fetch_add(&e->next_job, 1);
    if (k >= e->n_jobs) break;
    ojob *j = &e->jobs[k];
    if (j->step >= 0) {
      ostep *sp = &e->s[j->step];
      j->what = "dnnl_primitive_create";
      j->status = dnnl_primitive_create(&sp->prim, sp->pd);
      if (j->status != dnnl_success) sp->prim = NULL;
      continue;
    }
    if (!st) {
      j->what = "dnnl_stream_create";
      if ((j->status = dnnl_stream_create(
               &st, e->eng, dnnl_stream_default_flags)) != dnnl_success) {
        st = NULL;
        continue;
      }
    }
    if (e->workers > 1) omp_set_num_threads(1);
    job_reorder(e, j, st);
    if (e->workers > 1) omp_set_num_threads(e->threads);
  }
  if (st) dnnl_stream_destroy(st);
  return NULL;
}

/* Runs every job on up to `workers` threads (this one included). */
static dm_err run_jobs(oeng *e, dm_errbuf *eb) {
  pthread_t tid[8];
  int spawned = 0;
  size_t stage = 0; /* the largest weight staged (one worker only) */
  for (int k = 0; k < e->n_jobs && e->workers == 1; k++)
    if (e->jobs[k].step < 0) {
      size_t n = dnnl_memory_desc_get_size(&e->jobs[k].smd);
      if (n >= STAGE_MIN && n <= STAGE_MAX && n > stage) stage = n;
    }
  if (stage) (void)big_map(&e->stage, stage); /* none: the mapping */
  atomic_store(&e->next_job, 0);
  for (int i = 1; i < e->workers && i < 8; i++) {
    if (pthread_create(&tid[spawned], NULL, job_worker, e) != 0) break;
    spawned++;
  }
  job_worker(e);
  for (int i = 0; i < spawned; i++)
    pthread_join(tid[i], NULL);
  big_unmap(&e->stage);
  for (int k = 0; k < e->n_jobs; k++) {
    const ojob *j = &e->jobs[k];
    if (j->status != dnnl_success)
      return dnnl_fail(eb, j->node >= 0 ? &e->g->nodes[j->node] : NULL,
                       j->what ? j->what : "job", j->status);
  }
  for (int i = 0; i < e->n_s; i++)
    if (e->s[i].pd) {
      dnnl_primitive_desc_destroy(e->s[i].pd);
      e->s[i].pd = NULL;
    }
  return DM_OK;
}

/* A constant buffer holding src (layout smd) reordered into dmd; returns a
 * tensor of value v with md dmd (linked when `link`). */
static dm_err const_reordered(oeng *e, const dm_node *n, int v,
                              const dnnl_memory_desc_t *smd, const void *src,
                              const dnnl_memory_desc_t *dmd, bool link,
                              int *out, dm_errbuf *eb) {
  size_t sz = align_up(dnnl_memory_desc_get_size(dmd));
  bool own = false;
  void *p = big_take(&e->wmem, sz);
  if (!p) { /* reservation exhausted: plain heap */
    own = true;
    p = aligned_alloc(ALIGN, sz ? sz : ALIGN);
    if (!p) return nomem(eb, n);
  }
  int b = new_buf(e, BUF_CONST, -1, p, own);
  if (b < 0) {
    if (own) free(p);
    return nomem(eb, n);
  }
  dm_err rc =
      add_job(e, -1, n ? (int)(n - e->g->nodes) : -1, smd, src, dmd, p, eb);
  if (rc != DM_OK) return rc; /* p is freed with the buffer list */
  int t = new_tensor(e, v, b, dmd, link);
  if (t < 0) return nomem(eb, n);
  *out = t;
  return DM_OK;
}

/* Is md dense float32 channels-last (dim 1 innermost), rank 4? */
static bool md_is_nhwc(const dnnl_memory_desc_t *md) {
  dnnl_memory_desc_t cl;
  int64_t dims[4];
  if (md->ndims != 4 || md->data_type != dnnl_f32) return false;
  for (int i = 0; i < 4; i++)
    dims[i] = md->dims[i];
  return md_channels_last(&cl, 4, dims) == dnnl_success &&
         md_same_bytes(md, &cl);
}

/* Emits a reorder step src tensor -> dst tensor (an ST_NHWC pass for an
 * RGB image going channels-last). */
static dm_err emit_reorder(oeng *e, int node, int src, int dst, dm_errbuf *eb) {
  const dm_node *n = node >= 0 ? &e->g->nodes[node] : NULL;
  const dnnl_memory_desc_t *sm = &e->t[src].md, *dm = &e->t[dst].md;
  if (sm->ndims == 4 && sm->dims[1] == 3 && sm->data_type == dnnl_f32 &&
      md_is_plain(sm) && md_is_nhwc(dm)) {
    /* an RGB image into the first conv: oneDNN's reorder took 0.19-0.23
     * ms for 224x224 on one thread, this pass 0.03-0.09 ms */
    ostep st;
    memset(&st, 0, sizeof st);
    st.kind = ST_NHWC;
    st.n = (size_t)sm->dims[0];
    st.c = 3;
    st.hw = (size_t)(sm->dims[2] * sm->dims[3]);
    return add_pass(e, node, &st, src, dst, eb);
  }
  dnnl_primitive_attr_t attr = NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t s = user_attr(&attr);
  if (s != dnnl_success)
    return dnnl_fail(eb, n, "dnnl_primitive_attr_create", s);
  s = dnnl_reorder_primitive_desc_create(&pd, &e->t[src].md, e->eng,
                                         &e->t[dst].md, e->eng, attr);
  dnnl_primitive_attr_destroy(attr);
  if (s != dnnl_success)
    return dnnl_fail(eb, n, "dnnl_reorder_primitive_desc_create", s);
  oarg a[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
  dm_err rc = emit_prim(e, node, pd, a, 2, eb);
  dnnl_primitive_desc_destroy(pd);
  if (rc == DM_OK) e->n_reorder++;
  return rc;
}

/* A tensor of v in layout md: an existing one, a view of one with the same
 * bytes, or a converted copy (reordered now for constants, by a step for
 * activations). */
static dm_err get_as(oeng *e, int node, int v, const dnnl_memory_desc_t *md,
                     int *out, dm_errbuf *eb) {
  int t0;
  dm_err rc = primary(e, v, &t0, eb);
  if (rc != DM_OK) return rc;
  for (int t = t0; t >= 0; t = e->t[t].next)
    if (e->t[t].has_md && dnnl_memory_desc_equal(&e->t[t].md, md)) {
      *out = t;
      return DM_OK;
    }
  for (int t = t0; t >= 0; t = e->t[t].next)
    if (e->t[t].has_md && md_same_bytes(&e->t[t].md, md)) {
      int nt = new_tensor(e, v, e->t[t].buf, md, true);
      if (nt < 0) return nomem(eb, NULL);
      *out = nt;
      return DM_OK;
    }
  const dm_node *n = node >= 0 ? &e->g->nodes[node] : NULL;
  if (!e->t[t0].has_md)
    return dm_errf(eb, DM_BACKEND, "onednn: value '%s' is not float32",
                   val(e, v)->name ? val(e, v)->name : "?");
  if (is_const(e, v))
    return const_reordered(e, n, v, &e->t[t0].md, e->b[e->t[t0].buf].konst, md,
                           true, out, eb);
  int nt = new_act(e, v, md);
  if (nt < 0) return nomem(eb, n);
  rc = emit_reorder(e, node, t0, nt, eb);
  if (rc != DM_OK) return rc;
  *out = nt;
  return DM_OK;
}

static dm_err get_plain(oeng *e, int node, int v, int *out, dm_errbuf *eb) {
  int t0;
  dm_err rc = primary(e, v, &t0, eb);
  if (rc != DM_OK) return rc;
  if (!e->t[t0].has_md) {
    *out = t0; /* non-float32 data is always plain */
    return DM_OK;
  }
  for (int t = t0; t >= 0; t = e->t[t].next)
    if (e->t[t].plain &&
        e->t[t].md.ndims == (val(e, v)->rank ? val(e, v)->rank : 1)) {
      *out = t;
      return DM_OK;
    }
  dnnl_memory_desc_t md;
  if (md_plain(e, v, &md) != dnnl_success)
    return dm_errf(eb, DM_BACKEND, "onednn: value '%s': bad shape",
                   val(e, v)->name ? val(e, v)->name : "?");
  return get_as(e, node, v, &md, out, eb);
}

/* A plain view of v (made plain first) with dims[0..nd). */
static dm_err plain_view(oeng *e, int node, int v, int nd, const int64_t *dims,
                         int *out, dm_errbuf *eb) {
  int t;
  dm_err rc = get_plain(e, node, v, &t, eb);
  if (rc != DM_OK) return rc;
  dnnl_memory_desc_t md;
  if (md_plain_dims(&md, nd, dims) != dnnl_success) return DM_UNSUPPORTED;
  if (dnnl_memory_desc_equal(&md, &e->t[t].md)) {
    *out = t;
    return DM_OK;
  }
  int nt = view_of(e, v, t, &md);
  if (nt < 0) return nomem(eb, NULL);
  *out = nt;
  return DM_OK;
}

/* ------------------------------------------------------------ post-ops -- */

/* in[i] of a Conv/Gemm is a fused residual addend (graph.c appends addends
 * after the last input, so without a bias in[2] is an addend). */
static bool is_addend(const dm_node *n, int i) {
  for (int k = 0; k < n->n_post; k++)
    if (n->post[k].kind == DM_POST_ADD && n->post[k].input == i) return true;
  return false;
}

typedef struct act_map {
  int n;
  dnnl_alg_kind_t alg[2];
  float alpha[2], beta[2];
} act_map;

static bool map_act(const dm_act *a, act_map *m) {
  m->n = 1;
  m->alpha[0] = 0.f;
  m->beta[0] = 0.f;
  switch (a->kind) {
  case DM_UNARY_RELU: m->alg[0] = dnnl_eltwise_relu; break;
  case DM_UNARY_LEAKYRELU:
    m->alg[0] = dnnl_eltwise_relu;
    m->alpha[0] = a->alpha;
    break;
  case DM_UNARY_CLIP:
    m->alg[0] = dnnl_eltwise_clip_v2;
    m->alpha[0] = a->alpha;
    m->beta[0] = a->beta;
    break;
  case DM_UNARY_SIGMOID: m->alg[0] = dnnl_eltwise_logistic; break;
  case DM_UNARY_HARDSIGMOID: /* 2.6 has no hardsigmoid: linear, clip */
    m->n = 2;
    m->alg[0] = dnnl_eltwise_linear;
    m->alpha[0] = a->alpha;
    m->beta[0] = a->beta;
    m->alg[1] = dnnl_eltwise_clip_v2;
    m->alpha[1] = 0.f;
    m->beta[1] = 1.f;
    break;
  case DM_UNARY_HARDSWISH: m->alg[0] = dnnl_eltwise_hardswish; break;
  case DM_UNARY_TANH: m->alg[0] = dnnl_eltwise_tanh; break;
  case DM_UNARY_ELU:
    m->alg[0] = dnnl_eltwise_elu;
    m->alpha[0] = a->alpha;
    break;
  case DM_UNARY_SOFTPLUS: m->alg[0] = dnnl_eltwise_soft_relu; break;
  case DM_UNARY_EXP: m->alg[0] = dnnl_eltwise_exp; break;
  case DM_UNARY_LOG: m->alg[0] = dnnl_eltwise_log; break;
  case DM_UNARY_SQRT: m->alg[0] = dnnl_eltwise_sqrt; break;
  case DM_UNARY_ABS: m->alg[0] = dnnl_eltwise_abs; break;
  case DM_UNARY_GELU: m->alg[0] = dnnl_eltwise_gelu_erf; break;
  case DM_UNARY_SWISH:
    m->alg[0] = dnnl_eltwise_swish;
    m->alpha[0] = 1.f;
    break;
  case DM_UNARY_NEG:
    m->alg[0] = dnnl_eltwise_linear;
    m->alpha[0] = -1.f;
    break;
  case DM_UNARY_RECIPROCAL:
    m->alg[0] = dnnl_eltwise_pow;
    m->alpha[0] = 1.f;
    m->beta[0] = -1.f;
    break;
  default: return false;
  }
  return true;
}

/* Attributes of a Conv/Gemm/MatMul: user scratchpad and post[0..n_post)
 * (+ swish).  *sum_value: the residual addend value (-1 if none).
 * DM_UNSUPPORTED when a post-op has no oneDNN equivalent. */
static dm_err make_attr_n(const dm_node *n, int n_post, bool swish,
                          dnnl_primitive_attr_t *out, int *sum_value) {
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dm_err rc = DM_UNSUPPORTED;
  *sum_value = -1;
  if (user_attr(&attr) != dnnl_success) goto fail;
  if (n_post > 0 || swish) {
    if (dnnl_post_ops_create(&po) != dnnl_success) goto fail;
    for (int i = 0; i < n_post; i++) {
      const dm_post *p = &n->post[i];
      if (p->kind == DM_POST_ACT) {
        act_map m;
        if (!map_act(&p->act, &m)) goto fail;
        for (int j = 0; j < m.n; j++)
          if (dnnl_post_ops_append_eltwise(po, 1.f, m.alg[j], m.alpha[j],
                                           m.beta[j]) != dnnl_success)
            goto fail;
      } else if (p->kind == DM_POST_ADD) {
        if (*sum_value >= 0) goto fail; /* one sum post-op only */
        if (p->input < 0 || p->input >= n->n_in || n->in[p->input] < 0)
          goto fail;
        if (dnnl_post_ops_append_sum(po, 1.f) != dnnl_success) goto fail;
        *sum_value = n->in[p->input];
      } else {
        goto fail;
      }
    }
    if (swish && dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_swish, 1.f,
                                              0.f) != dnnl_success)
      goto fail;
    if (dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success) goto fail;
    dnnl_post_ops_destroy(po);
  }
  *out = attr;
  return DM_OK;
fail:
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  return rc;
}

static dm_err make_attr(const dm_node *n, bool swish,
                        dnnl_primitive_attr_t *out, int *sum_value) {
  return make_attr_n(n, n->n_post, swish, out, sum_value);
}

/* The first node after node `from` that reads value v, or -1. */
static int next_reader(const oeng *e, int from, int v) {
  for (int i = from + 1; i < e->g->n_nodes; i++) {
    const dm_node *n = &e->g->nodes[i];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] == v) return i;
  }
  return -1;
}

/* The SiLU pattern around value y: Sigmoid node S (y -> s) whose only
 * reader is Mul node M (y, s).  Returns M or -1; *sig = S. */
static int swish_mul_of_sigmoid(const oeng *e, int si) {
  const dm_graph *g = e->g;
  const dm_node *s = &g->nodes[si];
  if (s->op != DM_OP_UNARY || s->p.unary.kind != DM_UNARY_SIGMOID ||
      s->n_in != 1 || s->n_out != 1)
    return -1;
  int y = s->in[0], sv = s->out[0];
  if (!is_f32(e, y) || e->n_uses[sv] != 1 || val(e, sv)->is_output) return -1;
  int mi = next_reader(e, si, sv);
  if (mi < 0) return -1;
  const dm_node *m = &g->nodes[mi];
  if (m->op != DM_OP_BINARY || m->p.binary.kind != DM_BINARY_MUL ||
      m->n_in != 2 || m->n_out != 1)
    return -1;
  if (!((m->in[0] == y && m->in[1] == sv) || (m->in[1] == y && m->in[0] == sv)))
    return -1;
  const dm_value *a = val(e, y), *o = val(e, m->out[0]);
  if (a->rank != o->rank || a->numel != o->numel) return -1;
  return mi;
}

/* For Conv node ci producing y: the Sigmoid node reading y when y is read
 * only by that Sigmoid and its Mul (fusable swish); -1 otherwise. */
static int conv_swish(const oeng *e, int ci, int *mul) {
  const dm_graph *g = e->g;
  const dm_node *c = &g->nodes[ci];
  if (c->n_out != 1) return -1;
  int y = c->out[0];
  if (e->n_uses[y] != 2 || val(e, y)->is_output) return -1;
  int si = next_reader(e, ci, y);
  int mi = si >= 0 ? swish_mul_of_sigmoid(e, si) : -1;
  if (mi < 0 || e->done[si] || e->done[mi]) return -1;
  *mul = mi;
  return si;
}

/* ---------------------------------------------------------- op mapping -- */

/* Destination tensor for value y with layout md of a node whose post-ops
 * may hold a sum: in place over the addend when this is the last read of
 * its buffer, else a fresh tensor preloaded with a copy of the addend. */
static dm_err dst_for(oeng *e, int ni, int y, const dnnl_memory_desc_t *md,
                      int sum_value, const int *srcs, int n_srcs, int *out,
                      dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (sum_value < 0) {
    int t = new_act(e, y, md);
    if (t < 0) return nomem(eb, n);
    *out = t;
    return DM_OK;
  }
  int ta;
  dm_err rc = get_as(e, ni, sum_value, md, &ta, eb);
  if (rc != DM_OK) return rc;
  obuf *b = &e->b[e->t[ta].buf];
  bool inplace = b->kind == BUF_ARENA && b->last_node <= ni;
  for (int i = 0; i < n_srcs && inplace; i++)
    if (srcs[i] >= 0 && e->t[srcs[i]].buf == e->t[ta].buf) inplace = false;
  if (inplace) {
    int t = new_tensor(e, y, e->t[ta].buf, md, true);
    if (t < 0) return nomem(eb, n);
    *out = t;
    return DM_OK;
  }
  int t = new_act(e, y, md);
  if (t < 0) return nomem(eb, n);
  if (dnnl_memory_desc_equal(&e->t[ta].md, md)) { /* plain copy */
    ostep st;
    memset(&st, 0, sizeof st);
    st.kind = ST_COPY;
    st.node = ni;
    st.src = ta;
    st.dst = t;
    st.bytes = e->t[t].bytes;
    rc = add_step(e, &st, eb);
  } else {
    rc = emit_reorder(e, ni, ta, t, eb);
  }
  if (rc != DM_OK) return rc;
  *out = t;
  return DM_OK;
}

/* Appends an elementwise pass over n elements, tensor src -> tensor dst in
 * the same layout: SWISH (qdq NULL) or QDQ (*qdq). */
static dm_err emit_pass(oeng *e, int node, int src, int dst, size_t n,
                        const qdq_op *qdq, dm_errbuf *eb) {
  ostep st;
  memset(&st, 0, sizeof st);
  st.kind = qdq ? ST_QDQ : ST_SWISH;
  st.n = n;
  if (qdq) st.qdq = *qdq;
  return add_pass(e, node, &st, src, dst, eb);
}

/* Direct-conv FLOPs of a Conv node, and whether oneDNN's Winograd kernels
 * (F(2x2,3x3)/F(4x4,3x3), nChw16c) can run it: 2-D 3x3, stride 1, no
 * dilation, no groups, channels in whole 16-blocks. */
static double conv_flops(const oeng *e, const dm_node *n) {
  if (n->op != DM_OP_CONV || n->n_in < 2 || n->n_out < 1) return 0;
  const dm_value *W = val(e, n->in[1]), *Y = val(e, n->out[0]);
  double f = 2.0 * (double)W->numel;
  for (int i = 2; i < Y->rank; i++)
    f *= (double)Y->dims[i];
  return f * (double)(Y->rank > 0 ? Y->dims[0] : 1);
}

static bool conv_wino_ok(const oeng *e, const dm_node *n) {
  if (n->op != DM_OP_CONV || n->n_in < 2 || n->n_out < 1) return false;
  const dm_window *w = &n->p.conv.w;
  const dm_value *W = val(e, n->in[1]), *X = val(e, n->in[0]);
  if (w->nsp != 2 || n->p.conv.group != 1 || X->rank != 4 || W->rank != 4)
    return false;
  for (int i = 0; i < 2; i++)
    if (w->kernel[i] != 3 || w->stride[i] != 1 || w->dil[i] != 1) return false;
  /* oneDNN 2.6 transforms Winograd weights with a slow reference reorder
   * (~130 ms for 512x512x3x3, ~20 ms for 256x256) that gains little on 7x7
   * maps: cap the size to keep load time reasonable */
  return W->dims[0] % 16 == 0 && W->dims[1] % 16 == 0 &&
         W->dims[0] * W->dims[1] <= e->wino_max;
}

/* A float 1x1 Conv over a 1x1 map of one image with activations only in
 * post[]: run as an ST_FC pass (fc_run). */
static bool fc_conv(const oeng *e, const dm_node *n) {
  if (n->n_in < 2 || n->n_out != 1 || n->p.conv.group != 1) return false;
  const dm_value *X = val(e, n->in[0]), *W = val(e, n->in[1]),
                 *Y = val(e, n->out[0]);
  if (X->rank != 4 || W->rank != 4 || Y->rank != 4 || X->dims[0] != 1 ||
      X->dims[2] != 1 || X->dims[3] != 1 || Y->dims[2] != 1 ||
      Y->dims[3] != 1 || W->dims[2] != 1 || W->dims[3] != 1 ||
      W->dims[1] != X->dims[1] || !W->data)
    return false;
  for (int i = 0; i < 2; i++)
    if (n->p.conv.w.pad_b[i] || n->p.conv.w.pad_e[i]) return false;
  for (int p = 0; p < n->n_post; p++)
    if (n->post[p].kind != DM_POST_ACT) return false;
  return n->n_in < 3 || !is_addend(n, 2);
}

static dm_err map_fc(oeng *e, int ni, dm_errbuf *eb) {
  const dm_graph *g = e->g;
  const dm_node *n = &g->nodes[ni];
  int x = n->in[0], bv = n->n_in > 2 ? n->in[2] : -1;
  const dm_value *W = val(e, n->in[1]);
  int mul = -1;
  int sig = conv_swish(e, ni, &mul);
  int y = sig >= 0 ? g->nodes[mul].out[0] : n->out[0];
  dnnl_memory_desc_t xmd, ymd;
  if (md_plain(e, x, &xmd) != dnnl_success ||
      md_plain(e, y, &ymd) != dnnl_success)
    return DM_UNSUPPORTED;
  /* With at least 32 inputs the weights are read in place, one row of
   * [OC][IC] per output (fc_rows_part, as a classifier's Gemm): each row
   * streams from memory front to back.  Transposed ([IC][OC], 16 outputs
   * a load) the pass read one 64-byte piece of every row per 16 outputs,
   * a stride the prefetchers followed worse: MobileNet-v3-large's 18 FC
   * steps 1.29 -> 1.03 ms per run (one thread, 2-vCPU Zen 4; its SE
   * convs' 230 K weights each come from DRAM), the whole run 0.968 paired
   * at one thread and 0.946 at two (build/ab), EfficientNet-B0 1.000,
   * MobileNet-v3-small 0.988.  Fewer inputs: the transposed copy, then
   * the bias; copied with memcpy: raw_data in the file is not aligned. */
  size_t oc = (size_t)W->dims[0], ic = (size_t)W->dims[1];
  bool rows = ic >= 32;
  float *wt = NULL;
  if (!rows) {
    wt = big_take(&e->wmem, (oc * ic + oc) * sizeof *wt);
    if (!wt)
      return DM_UNSUPPORTED; /* reservation exhausted: map_conv goes on */
    const char *w = W->data;
    for (size_t o = 0; o < oc; o++)
      for (size_t i = 0; i < ic; i++)
        memcpy(&wt[i * oc + o], w + (o * ic + i) * sizeof *wt, sizeof *wt);
    if (bv >= 0) memcpy(wt + oc * ic, val(e, bv)->data, oc * sizeof *wt);
  }
  int tx, ty;
  dm_err rc = get_as(e, ni, x, &xmd, &tx, eb);
  if (rc != DM_OK) return rc;
  if ((ty = new_act(e, y, &ymd)) < 0) return nomem(eb, n);
  ostep st;
  memset(&st, 0, sizeof st);
  st.kind = ST_FC;
  st.n = oc;
  st.c = ic;
  st.w = wt;
  st.bias = !rows && bv >= 0 ? wt + oc * ic : NULL;
  if (rows) {
    st.wraw = W->data;
    st.braw = bv >= 0 ? val(e, bv)->data : NULL;
  }
  st.fc_swish = sig >= 0;
  if ((rc = add_pass(e, ni, &st, tx, ty, eb)) != DM_OK) return rc;
  if (sig >= 0) {
    e->done[sig] = 1;
    e->done[mul] = 1;
  }
  return DM_OK;
}

static dm_err map_stem(oeng *e, int ni, dm_errbuf *eb);

/* A float 1x1 conv, no padding, to a multiple of 8 channels, on a
 * channels-last input, with bias and post-ops act16v computes (and one
 * residual sum): an ST_PW pass (pw.c) when e->pw.  DM_UNSUPPORTED, before
 * it made any tensor, when it does not qualify. */
static dm_err map_pw(oeng *e, int ni, int bv, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  const dm_value *X = val(e, n->in[0]), *W = val(e, n->in[1]);
  const dm_window *win = &n->p.conv.w;
  if (!e->pw || e->bf16 || n->p.conv.group != 1 || X->rank != 4 ||
      W->rank != 4 || win->nsp != 2 || W->dims[2] != 1 || W->dims[3] != 1 ||
      !W->data || W->dims[1] != X->dims[1] || W->dims[0] > INT_MAX ||
      W->dims[1] > INT_MAX || X->dims[2] > INT_MAX || X->dims[3] > INT_MAX ||
      !dm__pw_shape((int)W->dims[0]) || (bv >= 0 && !val(e, bv)->data))
    return DM_UNSUPPORTED;
  for (int i = 0; i < 2; i++)
    if (win->stride[i] != win->stride[0] || win->stride[i] < 1 ||
        win->dil[i] != 1 || win->pad_b[i] || win->pad_e[i])
      return DM_UNSUPPORTED;
  int mul, sum_value = -1;
  if (conv_swish(e, ni, &mul) >= 0) return DM_UNSUPPORTED;
  dm_pw p;
  memset(&p, 0, sizeof p);
  for (int i = 0; i < n->n_post; i++) {
    const dm_post *q = &n->post[i];
    if (q->kind == DM_POST_ACT && act16v_has(q->act.kind)) {
      p.act[i] = q->act;
    } else if (q->kind == DM_POST_ADD && sum_value < 0 && q->input >= 0 &&
               q->input < n->n_in && n->in[q->input] >= 0) {
      p.sum[i] = true;
      sum_value = n->in[q->input];
    } else {
      return DM_UNSUPPORTED;
    }
  }
  p.n_post = n->n_post;
  int tx0;
  dm_err rc = primary(e, n->in[0], &tx0, eb);
  if (rc != DM_OK) return rc;
  dnnl_memory_desc_t xmd, ymd;
  const dm_value *Y = val(e, n->out[0]);
  if (!e->t[tx0].has_md || !md_is_nhwc(&e->t[tx0].md) ||
      md_tag(&xmd, X->dims, dnnl_nhwc) != dnnl_success ||
      md_tag(&ymd, Y->dims, dnnl_nhwc) != dnnl_success)
    return DM_UNSUPPORTED;
  p.k = (int)W->dims[1];
  p.oc = (int)W->dims[0];
  p.stride = (int)win->stride[0];
  p.ih = (int)X->dims[2];
  p.iw = (int)X->dims[3];
  p.oh = (int)Y->dims[2];
  p.ow = (int)Y->dims[3];
  dm_pw *keep = big_take(&e->wmem, sizeof *keep);
  float *mem = big_take(&e->wmem, dm__pw_floats(&p) * sizeof(float));
  if (!keep || !mem) return DM_UNSUPPORTED; /* reservation exhausted */
  dm__pw_pack(&p, mem, W->data, bv >= 0 ? val(e, bv)->data : NULL);
  *keep = p;
  int tx, ty;
  if ((rc = get_as(e, ni, n->in[0], &xmd, &tx, eb)) != DM_OK) return rc;
  if ((rc = dst_for(e, ni, n->out[0], &ymd, sum_value, &tx, 1, &ty, eb)) !=
      DM_OK)
    return rc;
  ostep st;
  memset(&st, 0, sizeof st);
  st.kind = ST_PW;
  st.pw = keep;
  st.n = (size_t)(Y->dims[0] * Y->dims[2] * Y->dims[3]);
  return add_pass(e, ni, &st, tx, ty, eb);
}

static dm_err map_conv(oeng *e, int ni, dm_errbuf *eb) {
  const dm_graph *g = e->g;
  const dm_node *n = &g->nodes[ni];
  if (n->n_in < 2 || n->n_out != 1) return DM_UNSUPPORTED;
  dm_err stem_rc = map_stem(e, ni, eb);
  if (stem_rc != DM_UNSUPPORTED) return stem_rc;
  int x = n->in[0], w = n->in[1];
  int bv = n->n_in > 2 && !is_addend(n, 2) ? n->in[2] : -1;
  int y = n->out[0];
  if (!is_f32(e, x) || !is_f32(e, w) || !is_f32(e, y)) return DM_UNSUPPORTED;
  if (!is_const(e, w)) return DM_UNSUPPORTED;
  if (bv >= 0 && (!is_f32(e, bv) || !is_const(e, bv))) return DM_UNSUPPORTED;
  if (fc_conv(e, n)) { /* UNSUPPORTED before it made any tensor */
    dm_err r = map_fc(e, ni, eb);
    if (r != DM_UNSUPPORTED) return r;
  }
  {
    dm_err r = map_pw(e, ni, bv, eb);
    if (r != DM_UNSUPPORTED) return r;
  }
  const dm_value *X = val(e, x), *W = val(e, w), *Y = val(e, y);
  const dm_window *win = &n->p.conv.w;
  int nsp = win->nsp, nd = 2 + nsp;
  int64_t G = n->p.conv.group;
  if (nsp < 1 || nsp > 3 || X->rank != nd || W->rank != nd || Y->rank != nd ||
      G < 1)
    return DM_UNSUPPORTED;
  if (X->numel == 0 || Y->numel == 0) return DM_UNSUPPORTED;
  int64_t OC = W->dims[0];
  if (OC % G) return DM_UNSUPPORTED;

  int mul = -1;
  int sig = conv_swish(e, ni, &mul);
  int yo = sig >= 0 ? g->nodes[mul].out[0] : y; /* value computed here */
  /* A trailing swish (fused by graph.c, or the Sigmoid+Mul left around y)
   * runs as a pass over the output (ew_run) instead of a post-op, when
   * the output is float32. */
  const dm_post *lp = n->n_post > 0 ? &n->post[n->n_post - 1] : NULL;
  bool last_swish =
      lp && lp->kind == DM_POST_ACT && lp->act.kind == DM_UNARY_SWISH;
  bool defer = sig >= 0 || last_swish;

  int64_t wdims[DNNL_MAX_NDIMS];
  dnnl_dims_t strides, dil, pl, pr;
  int wnd = conv_geometry(W, G, win, wdims, strides, dil, pl, pr);
  dnnl_memory_desc_t src_any, w_any, b_md, dst_any, w_plain;
  dnnl_memory_desc_t src_bf, w_bf, dst_bf; /* bf16 compute (e->bf16) */
  if (md_any(&src_any, nd, X->dims) || md_any(&w_any, wnd, wdims) ||
      md_any(&dst_any, nd, Y->dims) || md_plain_dims(&w_plain, wnd, wdims))
    return DM_UNSUPPORTED;
  if (e->bf16 && (md_any_dt(&src_bf, nd, X->dims, dnnl_bf16) ||
                  md_any_dt(&w_bf, wnd, wdims, dnnl_bf16) ||
                  md_any_dt(&dst_bf, nd, Y->dims,
                            bf16_dst(e, ni, yo) ? dnnl_bf16 : dnnl_f32)))
    return DM_UNSUPPORTED;
  if (bv >= 0 && md_plain_dims(&b_md, 1, &OC)) return DM_UNSUPPORTED;

  dnnl_primitive_attr_t attr = NULL;
  dnnl_primitive_desc_t pd = NULL;
  int sum_value = -1, tx0;
  dm_err rc;
retry:
  rc = make_attr_n(n, n->n_post - (defer && sig < 0 ? 1 : 0),
                   sig >= 0 && !defer, &attr, &sum_value);
  if (rc != DM_OK) return rc;
  if ((rc = primary(e, x, &tx0, eb)) != DM_OK) goto out;
  /* attempts: -1 bf16 with format_tag_any (e->bf16; graph outputs stay
   * fp32), 0 Winograd on nChw16c (blocked layout policy, eligible 3x3
   * convs), 1 the producer's layout (blocked policy), 2 format_tag_any */
  bool wino = e->wino && conv_wino_ok(e, n);
  dnnl_memory_desc_t blk_src, blk_dst;
  if (wino)
    wino = md_tag(&blk_src, X->dims, dnnl_nChw16c) == dnnl_success &&
           md_tag(&blk_dst, Y->dims, dnnl_nChw16c) == dnnl_success;
  for (int attempt = -1; attempt < 3 && !pd; attempt++) {
    const dnnl_memory_desc_t *smd = &src_any, *dmd = &dst_any, *wmd0 = &w_any;
    dnnl_alg_kind_t alg = dnnl_convolution_direct;
    if (attempt == -1) {
      if (!bf16_conv(e, ni)) continue;
      smd = &src_bf;
      dmd = &dst_bf;
      wmd0 = &w_bf;
    } else if (attempt == 0) {
      if (!wino) continue;
      smd = &blk_src;
      dmd = &blk_dst;
      alg = dnnl_convolution_winograd;
    } else if (attempt == 1) {
      if (!e->follow || !e->t[tx0].has_md) continue;
      smd = &e->t[tx0].md;
    }
    dnnl_convolution_desc_t cd;
    if (dnnl_dilated_convolution_forward_desc_init(
            &cd, dnnl_forward_inference, alg, smd, wmd0, bv >= 0 ? &b_md : NULL,
            dmd, strides, dil, pl, pr) != dnnl_success)
      continue;
    if (pd_create_pref(&pd, &cd, attr, e->eng,
                       attempt == 2   ? dw_prefer(e, n, false)
                       : attempt == 0 ? wino_prefer(e, n)
                                      : NULL) != dnnl_success) {
      pd = NULL;
      continue;
    }
    if (attempt < 2 && pd_is_ref(pd)) {
      dnnl_primitive_desc_destroy(pd);
      pd = NULL;
    }
  }
  if (!pd) {
    rc = DM_UNSUPPORTED;
    goto out;
  }
  if (defer &&
      dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0)->data_type !=
          dnnl_f32) { /* the swish pass is float32 only: keep the post-op */
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    pd = NULL;
    attr = NULL;
    defer = false;
    goto retry;
  }
  {
    const dnnl_memory_desc_t *smd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *wmd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *dmd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    int tx, tw, tb = -1, ty;
    if ((rc = get_as(e, ni, x, smd, &tx, eb)) != DM_OK) goto out_pd;
    if ((rc = const_reordered(e, n, w, &w_plain, W->data, wmd, false, &tw,
                              eb)) != DM_OK)
      goto out_pd;
    if (bv >= 0) {
      int tb0;
      if ((rc = primary(e, bv, &tb0, eb)) != DM_OK) goto out_pd;
      tb = view_of(e, bv, tb0, &b_md);
      if (tb < 0) {
        rc = nomem(eb, n);
        goto out_pd;
      }
    }
    if ((rc = dst_for(e, ni, yo, dmd, sum_value, &tx, 1, &ty, eb)) != DM_OK)
      goto out_pd;
    oarg a[4] = {{DNNL_ARG_SRC, tx},
                 {DNNL_ARG_WEIGHTS, tw},
                 {DNNL_ARG_DST, ty},
                 {DNNL_ARG_BIAS, tb}};
    rc = emit_prim(e, ni, pd, a, tb >= 0 ? 4 : 3, eb);
    if (rc == DM_OK && defer)
      rc = emit_pass(e, ni, ty, ty, e->t[ty].bytes / sizeof(float), NULL, eb);
    if (rc == DM_OK && sig >= 0) {
      e->done[sig] = 1;
      e->done[mul] = 1;
    }
  }
out_pd:
  dnnl_primitive_desc_destroy(pd);
out:
  dnnl_primitive_attr_destroy(attr);
  return rc;
}

/* A Gemm of one row by transposed weights B [N][K] (a classifier head):
 * an ST_FC pass on wraw, reading B in place from the model file.
 * oneDNN 2.6's inner product took 0.73-0.82 ms per run for MobileNetV2's
 * 1280->1000 head on one thread of session 8's machine, reading its 5 MB
 * of reordered weights; this pass 0.53-0.68 ms (three alternating runs;
 * copying B to huge pages first did not change it), and the reordered
 * copy is gone from RSS (55 -> 51 MB).  Post-ops: activations only; C a
 * vector with beta 1 (map_gemm checks). */
static dm_err map_gemv(oeng *e, int ni, int c, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  int a = n->in[0], y = n->out[0];
  const dm_value *A = val(e, a), *B = val(e, n->in[1]), *Y = val(e, y);
  for (int p = 0; p < n->n_post; p++)
    if (n->post[p].kind != DM_POST_ACT) return DM_UNSUPPORTED;
  if (!B->data || (c >= 0 && !val(e, c)->data)) return DM_UNSUPPORTED;
  dnnl_memory_desc_t ymd;
  if (md_plain(e, y, &ymd) != dnnl_success) return DM_UNSUPPORTED;
  int ta, ty;
  dm_err rc = plain_view(e, ni, a, 2, A->dims, &ta, eb);
  if (rc != DM_OK) return rc;
  if ((ty = new_act(e, y, &ymd)) < 0) return nomem(eb, n);
  ostep st;
  memset(&st, 0, sizeof st);
  st.kind = ST_FC;
  st.n = (size_t)Y->dims[1];
  st.c = (size_t)A->dims[1];
  st.wraw = B->data;
  st.braw = c >= 0 ? val(e, c)->data : NULL;
  return add_pass(e, ni, &st, ta, ty, eb);
}

static dm_err map_gemm(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in < 2 || n->n_out != 1) return DM_UNSUPPORTED;
  int a = n->in[0], bw = n->in[1];
  int c = n->n_in > 2 && !is_addend(n, 2) ? n->in[2] : -1;
  int y = n->out[0];
  if (!is_f32(e, a) || !is_f32(e, bw) || !is_f32(e, y)) return DM_UNSUPPORTED;
  if (!is_const(e, bw) || n->p.gemm.trans_a || n->p.gemm.alpha != 1.f)
    return DM_UNSUPPORTED;
  const dm_value *A = val(e, a), *B = val(e, bw), *Y = val(e, y);
  if (A->rank != 2 || B->rank != 2 || Y->rank != 2) return DM_UNSUPPORTED;
  int64_t M = A->dims[0], K = A->dims[1];
  int64_t N = n->p.gemm.trans_b ? B->dims[0] : B->dims[1];
  if (M == 0 || K == 0 || N == 0) return DM_UNSUPPORTED;
  bool bias_plain = false;
  if (c >= 0) {
    const dm_value *C = val(e, c);
    if (!is_f32(e, c) || !is_const(e, c)) return DM_UNSUPPORTED;
    bool vec =
        C->numel == N && (C->rank == 1 || (C->rank == 2 && C->dims[0] == 1));
    if (!vec && C->numel != 1) return DM_UNSUPPORTED;
    bias_plain = vec && n->p.gemm.beta == 1.f;
  }
  int64_t wd[2] = {N, K}, bd[1] = {N};
  dnnl_memory_desc_t src_md, w_any, w_src, b_md, dst_md;
  dnnl_dims_t wdd = {N, K};
  /* bf16: source and weights in bf16, the (small) output stays fp32 */
  dnnl_data_type_t cdt = bf16_pays(e, K * N) ? dnnl_bf16 : dnnl_f32;
  if (M == 1 && n->p.gemm.trans_b && cdt == dnnl_f32 && (c < 0 || bias_plain)) {
    dm_err rc = map_gemv(e, ni, c, eb);
    if (rc != DM_UNSUPPORTED) return rc;
  }
  if (md_plain_dt(&src_md, 2, A->dims, cdt) || md_any_dt(&w_any, 2, wd, cdt) ||
      dnnl_memory_desc_init_by_tag(&w_src, 2, wdd, dnnl_f32,
                                   n->p.gemm.trans_b ? dnnl_ab : dnnl_ba) ||
      md_plain_dims(&b_md, 1, bd) || md_plain_dims(&dst_md, 2, Y->dims))
    return DM_UNSUPPORTED;
  dnnl_primitive_attr_t attr = NULL;
  int sum_value = -1;
  dm_err rc = make_attr(n, false, &attr, &sum_value);
  if (rc != DM_OK) return rc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_inner_product_desc_t ipd;
  if (dnnl_inner_product_forward_desc_init(
          &ipd, dnnl_forward_inference, &src_md, &w_any, c >= 0 ? &b_md : NULL,
          &dst_md) != dnnl_success ||
      dnnl_primitive_desc_create(&pd, &ipd, attr, e->eng, NULL) !=
          dnnl_success) {
    pd = NULL;
    rc = DM_UNSUPPORTED;
    goto out;
  }
  {
    const dnnl_memory_desc_t *wmd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    int ta, tw, tb = -1, ty;
    if ((rc = cdt == dnnl_f32 ? plain_view(e, ni, a, 2, A->dims, &ta, eb)
                              : get_as(e, ni, a, &src_md, &ta, eb)) != DM_OK)
      goto out;
    if ((rc = const_reordered(e, n, bw, &w_src, B->data, wmd, false, &tw,
                              eb)) != DM_OK)
      goto out;
    if (c >= 0) {
      int tc0;
      if ((rc = primary(e, c, &tc0, eb)) != DM_OK) goto out;
      if (bias_plain) {
        tb = view_of(e, c, tc0, &b_md);
        if (tb < 0) {
          rc = nomem(eb, n);
          goto out;
        }
      } else { /* beta * C broadcast to N, owned */
        size_t sz = align_up((size_t)N * sizeof(float));
        float *p = aligned_alloc(ALIGN, sz);
        if (!p) {
          rc = nomem(eb, n);
          goto out;
        }
        const float *cd = val(e, c)->data;
        for (int64_t i = 0; i < N; i++)
          p[i] = n->p.gemm.beta * cd[val(e, c)->numel == 1 ? 0 : i];
        int bb = new_buf(e, BUF_CONST, -1, p, true);
        if (bb < 0) {
          free(p);
          rc = nomem(eb, n);
          goto out;
        }
        tb = new_tensor(e, c, bb, &b_md, false);
        if (tb < 0) {
          rc = nomem(eb, n);
          goto out;
        }
      }
    }
    if ((rc = dst_for(e, ni, y, &dst_md, sum_value, &ta, 1, &ty, eb)) != DM_OK)
      goto out;
    oarg args[4] = {{DNNL_ARG_SRC, ta},
                    {DNNL_ARG_WEIGHTS, tw},
                    {DNNL_ARG_DST, ty},
                    {DNNL_ARG_BIAS, tb}};
    rc = emit_prim(e, ni, pd, args, tb >= 0 ? 4 : 3, eb);
  }
out:
  if (pd) dnnl_primitive_desc_destroy(pd);
  dnnl_primitive_attr_destroy(attr);
  return rc;
}

static dm_err map_matmul(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in != 2 || n->n_out != 1) return DM_UNSUPPORTED;
  int a = n->in[0], bw = n->in[1], y = n->out[0];
  if (!is_f32(e, a) || !is_f32(e, bw) || !is_f32(e, y)) return DM_UNSUPPORTED;
  const dm_value *A = val(e, a), *B = val(e, bw), *Y = val(e, y);
  int r = Y->rank;
  if (A->rank < 2 || B->rank < 2 || r < 2 || A->rank > r || B->rank > r ||
      r > DNNL_MAX_NDIMS || Y->numel == 0 || A->numel == 0 || B->numel == 0)
    return DM_UNSUPPORTED;
  int64_t ad[DNNL_MAX_NDIMS], bd[DNNL_MAX_NDIMS];
  for (int i = 0; i < r; i++) {
    int ia = i - (r - A->rank), ib = i - (r - B->rank);
    ad[i] = ia >= 0 ? A->dims[ia] : 1;
    bd[i] = ib >= 0 ? B->dims[ib] : 1;
  }
  bool wconst = is_const(e, bw);
  /* bf16 for large constant weights, when A is a plain tensor of rank r */
  dnnl_data_type_t cdt =
      wconst && A->rank == r && bf16_pays(e, B->numel) ? dnnl_bf16 : dnnl_f32;
  dnnl_memory_desc_t a_md, b_md, b_any, y_md;
  if (md_plain_dt(&a_md, r, ad, cdt) || md_plain_dims(&b_md, r, bd) ||
      md_any_dt(&b_any, r, bd, cdt) || md_plain_dims(&y_md, r, Y->dims))
    return DM_UNSUPPORTED;
  dnnl_primitive_attr_t attr = NULL;
  int sum_value = -1;
  dm_err rc = make_attr(n, false, &attr, &sum_value);
  if (rc != DM_OK) return rc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_matmul_desc_t md;
  if (dnnl_matmul_desc_init(&md, &a_md, wconst ? &b_any : &b_md, NULL, &y_md) !=
          dnnl_success ||
      dnnl_primitive_desc_create(&pd, &md, attr, e->eng, NULL) !=
          dnnl_success) {
    pd = NULL;
    rc = DM_UNSUPPORTED;
    goto out;
  }
  {
    int ta, tb, ty;
    if ((rc = cdt == dnnl_f32 ? plain_view(e, ni, a, r, ad, &ta, eb)
                              : get_as(e, ni, a, &a_md, &ta, eb)) != DM_OK)
      goto out;
    if (wconst) {
      const dnnl_memory_desc_t *wmd =
          dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
      rc = const_reordered(e, n, bw, &b_md, B->data, wmd, false, &tb, eb);
    } else {
      rc = plain_view(e, ni, bw, r, bd, &tb, eb);
    }
    if (rc != DM_OK) goto out;
    int srcs[2] = {ta, tb};
    if ((rc = dst_for(e, ni, y, &y_md, sum_value, srcs, 2, &ty, eb)) != DM_OK)
      goto out;
    oarg args[3] = {
        {DNNL_ARG_SRC, ta}, {DNNL_ARG_WEIGHTS, tb}, {DNNL_ARG_DST, ty}};
    rc = emit_prim(e, ni, pd, args, 3, eb);
  }
out:
  if (pd) dnnl_primitive_desc_destroy(pd);
  dnnl_primitive_attr_destroy(attr);
  return rc;
}

/* Creates pd from an op descriptor with a plain user-scratchpad attr. */
static bool make_pd(oeng *e, const_dnnl_op_desc_t d,
                    dnnl_primitive_desc_t *pd) {
  dnnl_primitive_attr_t attr = NULL;
  if (user_attr(&attr) != dnnl_success) return false;
  dnnl_status_t s = dnnl_primitive_desc_create(pd, d, attr, e->eng, NULL);
  dnnl_primitive_attr_destroy(attr);
  if (s != dnnl_success) *pd = NULL;
  return s == dnnl_success;
}

/* src -> dst primitive on a tensor whose layout the op follows. */
static dm_err emit_unary_like(oeng *e, int ni, dnnl_primitive_desc_t pd, int tx,
                              int yo, dm_errbuf *eb) {
  const dnnl_memory_desc_t *dmd =
      dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  int ty = new_act(e, yo, dmd);
  if (ty < 0) return nomem(eb, &e->g->nodes[ni]);
  oarg a[2] = {{DNNL_ARG_SRC, tx}, {DNNL_ARG_DST, ty}};
  return emit_prim(e, ni, pd, a, 2, eb);
}

/* An ST_GAP pass of node ni from tensor tx (a channels-last N x C x H x W
 * map) to a new tensor of its output with layout ymd. */
static dm_err emit_gap(oeng *e, int ni, int tx, const dnnl_memory_desc_t *ymd,
                       dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  const dm_value *X = val(e, n->in[0]);
  int ty = new_act(e, n->out[0], ymd);
  if (ty < 0) return nomem(eb, n);
  ostep st;
  memset(&st, 0, sizeof st);
  st.kind = ST_GAP;
  st.n = (size_t)X->dims[0];
  st.c = (size_t)X->dims[1];
  st.hw = (size_t)(X->dims[2] * X->dims[3]);
  if (st.c * (size_t)e->threads > e->gap_part)
    e->gap_part = st.c * (size_t)e->threads;
  return add_pass(e, ni, &st, tx, ty, eb);
}

static dm_err map_pool(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in < 1 || n->n_out != 1) return DM_UNSUPPORTED;
  int x = n->in[0], y = n->out[0];
  const dm_value *X = val(e, x), *Y = val(e, y);
  bool q8 = n->op == DM_OP_MAXPOOL && X->dtype == Y->dtype &&
            (X->dtype == DM_ONNX_UINT8 || X->dtype == DM_ONNX_INT8);
  if (!q8 && (!is_f32(e, x) || !is_f32(e, y))) return DM_UNSUPPORTED;
  int nd = X->rank, nsp = nd - 2;
  if (nsp < 1 || nsp > 3 || Y->rank != nd || X->numel == 0 || Y->numel == 0)
    return DM_UNSUPPORTED;
  dnnl_dims_t k, s, d, pl, pr;
  dnnl_alg_kind_t alg;
  if (n->op == DM_OP_GLOBALAVGPOOL || n->op == DM_OP_GLOBALMAXPOOL) {
    alg = n->op == DM_OP_GLOBALMAXPOOL ? dnnl_pooling_max
                                       : dnnl_pooling_avg_exclude_padding;
    for (int i = 0; i < nsp; i++) {
      k[i] = X->dims[2 + i];
      s[i] = 1;
      d[i] = 0;
      pl[i] = pr[i] = 0;
    }
  } else {
    const dm_window *w = &n->p.pool.w;
    if (w->nsp != nsp || n->p.pool.storage_order != 0 || n->n_out != 1)
      return DM_UNSUPPORTED;
    if (n->op == DM_OP_MAXPOOL)
      alg = dnnl_pooling_max;
    else
      alg = n->p.pool.count_include_pad ? dnnl_pooling_avg_include_padding
                                        : dnnl_pooling_avg_exclude_padding;
    for (int i = 0; i < nsp; i++) {
      k[i] = w->kernel[i];
      s[i] = w->stride[i];
      d[i] = w->dil[i] - 1;
      pl[i] = w->pad_b[i];
      /* end pad so that the output size comes out as Y's (ceil_mode) */
      int64_t ek = (w->kernel[i] - 1) * w->dil[i] + 1;
      int64_t need = (Y->dims[2 + i] - 1) * w->stride[i] + ek - X->dims[2 + i] -
                     w->pad_b[i];
      pr[i] = need > w->pad_e[i] ? need : w->pad_e[i];
      if (pr[i] != w->pad_e[i] && alg == dnnl_pooling_avg_include_padding)
        return DM_UNSUPPORTED; /* ONNX divides by the unclipped-pad window */
      if ((X->dims[2 + i] + pl[i] + pr[i] - ek) / s[i] + 1 != Y->dims[2 + i])
        return DM_UNSUPPORTED;
    }
  }
  int tx;
  dm_err rc = primary(e, x, &tx, eb);
  if (rc != DM_OK) return rc;
  if (!e->t[tx].has_md) return DM_UNSUPPORTED;
  if (n->op == DM_OP_GLOBALAVGPOOL && md_is_nhwc(&e->t[tx].md)) {
    /* our own pass: oneDNN 2.6's got slower on two threads than on one
     * (EfficientNet-B0's 17: 0.13 -> 0.33 ms) */
    dnnl_memory_desc_t md;
    if (md_channels_last(&md, nd, Y->dims) != dnnl_success)
      return DM_UNSUPPORTED;
    return emit_gap(e, ni, tx, &md, eb);
  }
  dnnl_memory_desc_t dst_any; /* data type follows the source (bf16) */
  if (md_any_dt(&dst_any, nd, Y->dims, e->t[tx].md.data_type))
    return DM_UNSUPPORTED;
  dnnl_pooling_v2_desc_t pdsc;
  dnnl_primitive_desc_t pd = NULL;
  for (int again = 0;; again++) {
    if (dnnl_pooling_v2_forward_desc_init(&pdsc, dnnl_forward_inference, alg,
                                          &e->t[tx].md, &dst_any, s, k, d, pl,
                                          pr) != dnnl_success ||
        !make_pd(e, &pdsc, &pd))
      return DM_UNSUPPORTED;
    if (!q8 || !pd_is_ref(pd)) break;
    /* 8-bit pooling has JIT kernels only channels-last below AVX-512 (a
     * blocked u8 input got oneDNN's reference kernel: 46 ms for ResNet's
     * stem pool with ONEDNN_MAX_CPU_ISA=AVX2): once more on NHWC */
    dnnl_primitive_desc_destroy(pd);
    dnnl_memory_desc_t nhwc;
    if (again || md_channels_last(&nhwc, nd, X->dims) != dnnl_success)
      return DM_UNSUPPORTED;
    nhwc.data_type = e->t[tx].md.data_type;
    if ((rc = get_as(e, ni, x, &nhwc, &tx, eb)) != DM_OK) return rc;
  }
  rc = emit_unary_like(e, ni, pd, tx, y, eb);
  dnnl_primitive_desc_destroy(pd);
  return rc;
}

/* ReduceMean over H and W of a float NCHW map (keepdims or not): a global
 * average pool, Keras' and MNASNet's (`x.mean([2, 3])`).  It ran on the
 * reference kernel, after a reorder to plain layout (MNASNet 1.0: 0.09 +
 * 0.02 ms per run on one thread); now the ST_GAP pass on channels-last
 * data, whose output, N x C floats, is Y's plain layout either way. */
static dm_err map_reduce_gap(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in != 1 || n->n_out != 1 || n->p.reduce.kind != DM_REDUCE_MEAN ||
      n->p.reduce.axes_mask != ((1u << 2) | (1u << 3)))
    return DM_UNSUPPORTED;
  int x = n->in[0], y = n->out[0];
  const dm_value *X = val(e, x), *Y = val(e, y);
  if (!is_f32(e, x) || !is_f32(e, y) || X->rank != 4 || X->numel == 0 ||
      Y->numel != X->dims[0] * X->dims[1])
    return DM_UNSUPPORTED;
  dnnl_memory_desc_t xmd, ymd;
  if (md_channels_last(&xmd, 4, X->dims) != dnnl_success ||
      md_plain(e, y, &ymd) != dnnl_success)
    return DM_UNSUPPORTED;
  int tx;
  dm_err rc = get_as(e, ni, x, &xmd, &tx, eb);
  if (rc != DM_OK) return rc;
  return emit_gap(e, ni, tx, &ymd, eb);
}

static dm_err map_batchnorm(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in != 5 || n->n_out < 1) return DM_UNSUPPORTED;
  for (int i = 1; i < n->n_out; i++)
    if (n->out[i] >= 0) return DM_UNSUPPORTED; /* training outputs */
  int x = n->in[0], y = n->out[0];
  if (!is_f32(e, x) || !is_f32(e, y)) return DM_UNSUPPORTED;
  const dm_value *X = val(e, x);
  if (X->rank < 2 || X->rank > 5 || X->numel == 0) return DM_UNSUPPORTED;
  for (int i = 1; i < 5; i++)
    if (!is_f32(e, n->in[i]) || !is_const(e, n->in[i]) ||
        val(e, n->in[i])->numel != X->dims[1])
      return DM_UNSUPPORTED;
  int tx;
  dm_err rc = primary(e, x, &tx, eb);
  if (rc != DM_OK) return rc;
  dnnl_batch_normalization_desc_t bd;
  dnnl_primitive_desc_t pd = NULL;
  if (dnnl_batch_normalization_forward_desc_init(
          &bd, dnnl_forward_inference, &e->t[tx].md, n->p.bn.eps,
          dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift) !=
          dnnl_success ||
      !make_pd(e, &bd, &pd))
    return DM_UNSUPPORTED;
  int tp[4];
  int64_t C = X->dims[1];
  dnnl_memory_desc_t cmd;
  if (md_plain_dims(&cmd, 1, &C)) {
    dnnl_primitive_desc_destroy(pd);
    return DM_UNSUPPORTED;
  }
  for (int i = 0; i < 4; i++) {
    int t0;
    if ((rc = primary(e, n->in[1 + i], &t0, eb)) != DM_OK) goto out;
    tp[i] = view_of(e, n->in[1 + i], t0, &cmd);
    if (tp[i] < 0) {
      rc = nomem(eb, n);
      goto out;
    }
  }
  {
    const dnnl_memory_desc_t *dmd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    int ty = new_act(e, y, dmd);
    if (ty < 0) {
      rc = nomem(eb, n);
      goto out;
    }
    oarg a[6] = {{DNNL_ARG_SRC, tx},      {DNNL_ARG_DST, ty},
                 {DNNL_ARG_SCALE, tp[0]}, {DNNL_ARG_SHIFT, tp[1]},
                 {DNNL_ARG_MEAN, tp[2]},  {DNNL_ARG_VARIANCE, tp[3]}};
    rc = emit_prim(e, ni, pd, a, 6, eb);
  }
out:
  dnnl_primitive_desc_destroy(pd);
  return rc;
}

/* Eltwise of x (in its current layout) -> value yo; act NULL means swish. */
static dm_err map_eltwise(oeng *e, int ni, int x, int yo, const dm_act *act,
                          dm_errbuf *eb) {
  if (!is_f32(e, x) || !is_f32(e, yo) || val(e, x)->numel == 0)
    return DM_UNSUPPORTED;
  act_map m;
  if (act) {
    if (!map_act(act, &m)) return DM_UNSUPPORTED;
    /* A standalone two-step eltwise (HardSigmoid = linear + clip post-op)
     * gave wrong results from oneDNN 2.6 on a 1-D [3] tensor (ONNX test
     * test_hardsigmoid_example: 0 instead of 0.1); such nodes are rare
     * outside Conv post-ops, so the reference kernel runs them. */
    if (m.n > 1) return DM_UNSUPPORTED;
  } else {
    m.n = 1;
    m.alg[0] = dnnl_eltwise_swish;
    m.alpha[0] = 1.f;
    m.beta[0] = 0.f;
  }
  int tx;
  dm_err rc = primary(e, x, &tx, eb);
  if (rc != DM_OK) return rc;
  dnnl_eltwise_desc_t ed;
  if (dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, m.alg[0],
                                     &e->t[tx].md, m.alpha[0],
                                     m.beta[0]) != dnnl_success)
    return DM_UNSUPPORTED;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  rc = DM_UNSUPPORTED;
  if (user_attr(&attr) != dnnl_success) goto out;
  if (m.n > 1) {
    if (dnnl_post_ops_create(&po) != dnnl_success) goto out;
    for (int j = 1; j < m.n; j++)
      if (dnnl_post_ops_append_eltwise(po, 1.f, m.alg[j], m.alpha[j],
                                       m.beta[j]) != dnnl_success)
        goto out;
    if (dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success) goto out;
  }
  if (dnnl_primitive_desc_create(&pd, &ed, attr, e->eng, NULL) !=
      dnnl_success) {
    pd = NULL;
    goto out;
  }
  rc = emit_unary_like(e, ni, pd, tx, yo, eb);
out:
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  return rc;
}

/* The channel block of a float32 nChw8c or nChw16c map (oneDNN's layout
 * for activations below AVX-512), 0 for any other layout; *tag (when not
 * NULL) gets that layout's tag. */
static size_t md_cblock(const dnnl_memory_desc_t *md, dnnl_format_tag_t *tag) {
  static const struct {
    dnnl_format_tag_t tag;
    size_t block;
  } k[] = {{dnnl_nChw8c, 8}, {dnnl_nChw16c, 16}};
  if (md->ndims != 4 || md->data_type != dnnl_f32) return 0;
  for (size_t i = 0; i < sizeof k / sizeof *k; i++) {
    dnnl_memory_desc_t b;
    if (dnnl_memory_desc_init_by_tag(&b, 4, md->dims, dnnl_f32, k[i].tag) ==
            dnnl_success &&
        dnnl_memory_desc_equal(md, &b)) {
      if (tag) *tag = k[i].tag;
      return k[i].block;
    }
  }
  return 0;
}

/* y = a * b with a (tensor ta) channels-last [N, C, H, W] or blocked
 * (nChw8c, nChw16c) and b holding C floats, one per channel ([C, 1, 1],
 * [1, C, 1, 1], ...: an SE block's scaling) as an ST_CSCALE pass, in place
 * over a when nothing reads a later.  oneDNN 2.6's broadcasting binary got
 * slower on two threads than on one (EfficientNet-B0's 16 SE Muls: 0.29 ->
 * 0.92 ms), and on blocked maps it is its reference code (the same Muls
 * under ONEDNN_MAX_CPU_ISA=AVX2: 16-26 ms each). */
static dm_err map_cscale(oeng *e, int ni, int ta, int b, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  int tb;
  dm_err rc = get_plain(e, ni, b, &tb, eb);
  if (rc != DM_OK) return rc;
  const obuf *ba = &e->b[e->t[ta].buf];
  bool inplace = ba->kind == BUF_ARENA && ba->last_node <= ni &&
                 e->t[tb].buf != e->t[ta].buf;
  int y = n->out[0];
  int ty = inplace ? new_tensor(e, y, e->t[ta].buf, &e->t[ta].md, true)
                   : new_act(e, y, &e->t[ta].md);
  if (ty < 0) return nomem(eb, n);
  const int64_t *d = val(e, y)->dims;
  ostep st;
  memset(&st, 0, sizeof st);
  size_t block = md_cblock(&e->t[ta].md, NULL);
  st.kind = ST_CSCALE;
  st.aux = tb;
  st.c_all = (size_t)d[1];
  st.c = block ? block : st.c_all;
  st.n = (size_t)d[0] * ((st.c_all + st.c - 1) / st.c);
  st.hw = (size_t)(d[2] * d[3]);
  return add_pass(e, ni, &st, ta, ty, eb);
}

static dm_err map_binary(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in != 2 || n->n_out != 1) return DM_UNSUPPORTED;
  dnnl_alg_kind_t alg;
  bool comm = true;
  switch (n->p.binary.kind) {
  case DM_BINARY_ADD: alg = dnnl_binary_add; break;
  case DM_BINARY_MUL: alg = dnnl_binary_mul; break;
  case DM_BINARY_MAX: alg = dnnl_binary_max; break;
  case DM_BINARY_MIN: alg = dnnl_binary_min; break;
  case DM_BINARY_SUB:
    alg = dnnl_binary_sub;
    comm = false;
    break;
  case DM_BINARY_DIV:
    alg = dnnl_binary_div;
    comm = false;
    break;
  default: return DM_UNSUPPORTED;
  }
  int a = n->in[0], b = n->in[1], y = n->out[0];
  if (!is_f32(e, a) || !is_f32(e, b) || !is_f32(e, y)) return DM_UNSUPPORTED;
  const dm_value *Y = val(e, y);
  int r = Y->rank;
  if (r < 1 || Y->numel == 0) return DM_UNSUPPORTED;
  const dm_value *A = val(e, a), *B = val(e, b);
  bool fa = A->rank == r &&
            memcmp(A->dims, Y->dims, (size_t)r * sizeof *A->dims) == 0;
  bool fb = B->rank == r &&
            memcmp(B->dims, Y->dims, (size_t)r * sizeof *B->dims) == 0;
  if (comm &&
      ((!fa && fb) || (fa && fb && is_const(e, a) && !is_const(e, b)))) {
    int t = a;
    a = b;
    b = t;
    bool f = fa;
    fa = fb;
    fb = f;
    A = val(e, a);
    B = val(e, b);
  }
  if (!fa || B->rank > r) return DM_UNSUPPORTED;
  int ta, tb;
  dm_err rc = primary(e, a, &ta, eb);
  if (rc != DM_OK) return rc;
  if (alg == dnnl_binary_mul && !fb && r == 4 &&
      (md_is_nhwc(&e->t[ta].md) || md_cblock(&e->t[ta].md, NULL)) &&
      B->rank >= 3 && B->numel == Y->dims[1] &&
      B->dims[B->rank - 3] == Y->dims[1])
    return map_cscale(e, ni, ta, b, eb);
  dnnl_primitive_desc_t pd = NULL;
  if (fb) {
    int tb0;
    if ((rc = primary(e, b, &tb0, eb)) != DM_OK) return rc;
    if (e->t[ta].plain && !e->t[tb0].plain && !is_const(e, b)) {
      tb = tb0;
      if ((rc = get_as(e, ni, a, &e->t[tb].md, &ta, eb)) != DM_OK) return rc;
    } else if ((rc = get_as(e, ni, b, &e->t[ta].md, &tb, eb)) != DM_OK) {
      return rc;
    }
    dnnl_binary_desc_t bd;
    if (dnnl_binary_desc_init(&bd, alg, &e->t[ta].md, &e->t[tb].md,
                              &e->t[ta].md) != dnnl_success ||
        !make_pd(e, &bd, &pd))
      return DM_UNSUPPORTED;
  } else {
    /* broadcast src1: its own layout when it has rank r, else (or when
     * that takes a ref implementation) a plain view padded to rank r */
    int64_t bd_[DNNL_MAX_NDIMS];
    for (int i = 0; i < r; i++) {
      int ib = i - (r - B->rank);
      bd_[i] = ib >= 0 ? B->dims[ib] : 1;
      if (bd_[i] != 1 && bd_[i] != Y->dims[i]) return DM_UNSUPPORTED;
    }
    int cand[2] = {-1, -1};
    int tb0;
    if ((rc = primary(e, b, &tb0, eb)) != DM_OK) return rc;
    if (B->rank == r && e->t[tb0].has_md && !e->t[tb0].plain) cand[0] = tb0;
    for (int c = 0; c < 2 && !pd; c++) {
      int tc = cand[c];
      if (c == 1) {
        if ((rc = plain_view(e, ni, b, r, bd_, &tc, eb)) != DM_OK) return rc;
      }
      if (tc < 0) continue;
      dnnl_binary_desc_t bd;
      if (dnnl_binary_desc_init(&bd, alg, &e->t[ta].md, &e->t[tc].md,
                                &e->t[ta].md) != dnnl_success ||
          !make_pd(e, &bd, &pd))
        continue;
      if (c == 0 && pd_is_ref(pd)) {
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        continue;
      }
      tb = tc;
    }
    if (!pd) return DM_UNSUPPORTED;
  }
  /* in place over src0 when this is the last read of its buffer (an SE
   * block's Mul writes its scaled map over the map) */
  const obuf *ba = &e->b[e->t[ta].buf];
  bool inplace = ba->kind == BUF_ARENA && ba->last_node <= ni &&
                 e->t[tb].buf != e->t[ta].buf;
  int ty = inplace ? new_tensor(e, y, e->t[ta].buf, &e->t[ta].md, true)
                   : new_act(e, y, &e->t[ta].md);
  if (ty < 0) {
    dnnl_primitive_desc_destroy(pd);
    return nomem(eb, n);
  }
  oarg args[3] = {
      {DNNL_ARG_SRC_0, ta}, {DNNL_ARG_SRC_1, tb}, {DNNL_ARG_DST, ty}};
  rc = emit_prim(e, ni, pd, args, 3, eb);
  dnnl_primitive_desc_destroy(pd);
  return rc;
}

/* A Concat whose inputs are whole runs of bytes in its output, one after
 * the other: along the outermost axis of a plain map (only 1s before it),
 * or along the channels of one image in nChw8c or nChw16c when every input
 * has whole channel blocks.  It runs as ST_CONCAT, copies of those runs.
 * Below AVX-512 oneDNN keeps activations in nChw8c, where its own concat
 * (simple:any) ran DenseNet-121's 62 Concats in 16.1 ms per run on one
 * thread (2-vCPU Zen 4, ONEDNN_MAX_CPU_ISA=AVX2); on channels-last maps
 * (AVX-512) no input is one run and oneDNN's concat stays.  The inputs
 * are brought to the first input's layout. */
static dm_err map_concat_copy(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  int y = n->out[0], axis = n->p.concat.axis;
  const dm_value *Y = val(e, y);
  int t0;
  dm_err rc = primary(e, n->in[0], &t0, eb);
  if (rc != DM_OK) return rc;
  if (!e->t[t0].has_md) return DM_UNSUPPORTED;
  const dnnl_memory_desc_t *m0 = &e->t[t0].md;
  dnnl_format_tag_t tag = dnnl_format_tag_undef; /* undef: plain */
  if (e->t[t0].plain) {
    for (int d = 0; d < axis; d++)
      if (Y->dims[d] != 1) return DM_UNSUPPORTED;
  } else {
    size_t blk = md_cblock(m0, &tag);
    if (!blk || Y->rank != 4 || axis != 1 || Y->dims[0] != 1)
      return DM_UNSUPPORTED;
    for (int i = 0; i < n->n_in; i++)
      if (val(e, n->in[i])->dims[1] % (int64_t)blk) return DM_UNSUPPORTED;
  }
  oarg *args = malloc(((size_t)n->n_in + 1) * sizeof *args);
  if (!args) return nomem(eb, n);
  dnnl_memory_desc_t md;
  size_t total = 0;
  for (int i = 0; i < n->n_in; i++) {
    dnnl_status_t s = tag == dnnl_format_tag_undef
                          ? md_plain(e, n->in[i], &md)
                          : md_tag(&md, val(e, n->in[i])->dims, tag);
    if (s != dnnl_success) {
      rc = DM_UNSUPPORTED;
      goto out;
    }
    int t;
    if ((rc = get_as(e, ni, n->in[i], &md, &t, eb)) != DM_OK) goto out;
    args[i] = (oarg){DNNL_ARG_MULTIPLE_SRC + i, t};
    total += e->t[t].bytes;
  }
  if ((tag == dnnl_format_tag_undef
           ? md_plain(e, y, &md)
           : md_tag(&md, Y->dims, tag)) != dnnl_success ||
      dnnl_memory_desc_get_size(&md) != total) { /* same sizes: cannot be */
    rc = DM_UNSUPPORTED;
    goto out;
  }
  int ty = new_act(e, y, &md);
  if (ty < 0) {
    rc = nomem(eb, n);
    goto out;
  }
  args[n->n_in] = (oarg){DNNL_ARG_DST, ty};
  ostep st = {.kind = ST_CONCAT, .bytes = total};
  if ((rc = add_args_step(e, ni, &st, args, n->n_in + 1, eb)) != DM_OK)
    return rc;
  if (e->verbose)
    fprintf(stderr, "onednn: %-28s %-20s concat pass\n", nname(n), n->op_type);
  return DM_OK;
out:
  free(args);
  return rc;
}

/* ---- channel passes (ST_CHAN) ----
 * ShuffleNet v2 splits each block's channels in halves (two Slices),
 * concatenates the halves again and shuffles them (Reshape to [N, 2, C /
 * 2, H, W], Transpose (0, 2, 1, 3, 4), Reshape back).  oneDNN has no
 * channel slice or shuffle: those ran on the reference kernels over plain
 * NCHW copies, with reorders from and to the convs' channels-last maps
 * around them, about 0.5 ms of a 4.2 ms run (one thread, 2-vCPU Zen 4).
 * On channels-last maps each is a pass over the pixels: a Slice copies
 * one run of channels per pixel, a Concat followed by the shuffle
 * interleaves its inputs' channels, and a shuffle alone gathers them. */

/* The channel shuffle that reads value v ([N, C, H, W]) after node
 * `from`: nodes[0] a Reshape of v to [N, g, C / g, H, W], nodes[1] a
 * Transpose (0, 2, 1, 3, 4) of that, nodes[2] a Reshape back to v's dims,
 * each value in between read only by the next node and not a graph
 * output; v too when `only` (it will not be made). */
static bool shuffle_after(const oeng *e, int from, int v, bool only, int64_t *g,
                          int nodes[3]) {
  const dm_value *V = val(e, v);
  if (V->rank != 4 || !is_f32(e, v)) return false;
  int cur = v;
  for (int k = 0; k < 3; k++) {
    if ((k || only) && (e->n_uses[cur] != 1 || val(e, cur)->is_output))
      return false;
    int r = next_reader(e, k ? nodes[k - 1] : from, cur);
    if (r < 0 || e->done[r]) return false;
    const dm_node *n = &e->g->nodes[r];
    if (n->op != (k == 1 ? DM_OP_TRANSPOSE : DM_OP_RESHAPE) ||
        n->in[0] != cur || n->n_out != 1 || !is_f32(e, n->out[0]))
      return false;
    nodes[k] = r;
    cur = n->out[0];
  }
  const dm_value *R = val(e, e->g->nodes[nodes[0]].out[0]), *Y = val(e, cur);
  const int64_t *perm = e->g->nodes[nodes[1]].p.transpose.perm;
  if (R->rank != 5 || R->dims[0] != V->dims[0] || R->dims[1] < 1 ||
      R->dims[1] * R->dims[2] != V->dims[1] || R->dims[3] != V->dims[2] ||
      R->dims[4] != V->dims[3] || perm[0] != 0 || perm[1] != 2 ||
      perm[2] != 1 || perm[3] != 3 || perm[4] != 4 || Y->rank != 4 ||
      memcmp(Y->dims, V->dims, 4 * sizeof *Y->dims))
    return false;
  *g = R->dims[1];
  return true;
}

/* An ST_CHAN step for node ni: value y (channels-last) from values
 * xs[0..n), whose channels, one source after the other, are numbered
 * 0, 1, ...: output channel k is number cat[k].  The sources must be
 * channels-last float32 maps already (no reorder is added for them);
 * DM_UNSUPPORTED otherwise. */
static dm_err emit_chan(oeng *e, int ni, const int *xs, int n, int y,
                        const int32_t *cat, dm_errbuf *eb) {
  const dm_node *nd = &e->g->nodes[ni];
  const dm_value *Y = val(e, y);
  int c = (int)Y->dims[1], ts[CHAN_MAX_SRC];
  if (n < 1 || n > CHAN_MAX_SRC || Y->rank != 4 || Y->numel == 0)
    return DM_UNSUPPORTED;
  for (int i = 0; i < n; i++) {
    dm_err rc = primary(e, xs[i], &ts[i], eb);
    if (rc != DM_OK) return rc;
    const dm_value *X = val(e, xs[i]);
    if (!e->t[ts[i]].has_md || !md_is_nhwc(&e->t[ts[i]].md) ||
        X->dims[0] != Y->dims[0] || X->dims[2] != Y->dims[2] ||
        X->dims[3] != Y->dims[3])
      return DM_UNSUPPORTED;
  }
  int64_t all = 0;
  for (int i = 0; i < n; i++)
    all += val(e, xs[i])->dims[1];
  for (int k = 0; k < c; k++)
    if (cat[k] < 0 || cat[k] >= all) return DM_UNSUPPORTED;
  dnnl_memory_desc_t md;
  if (md_channels_last(&md, 4, Y->dims) != dnnl_success) return DM_UNSUPPORTED;
  ochan *m = big_take(&e->wmem, sizeof *m);
  int32_t *src_c = big_take(&e->wmem, (size_t)n * sizeof *src_c);
  int32_t *src = big_take(&e->wmem, (size_t)c * sizeof *src);
  int32_t *ch = big_take(&e->wmem, (size_t)c * sizeof *ch);
  if (!m || !src_c || !src || !ch) return DM_UNSUPPORTED; /* no room */
  for (int i = 0; i < n; i++)
    src_c[i] = (int32_t)val(e, xs[i])->dims[1];
  bool run = n == 1, zip = c % 2 == 0;
  for (int k = 0; k < c; k++) {
    int i = 0;
    int32_t j = cat[k];
    while (j >= src_c[i])
      j -= src_c[i++];
    src[k] = i;
    ch[k] = j;
    run = run && cat[k] == cat[0] + k;
  }
  /* two runs interleaved: even channels from one, odd from the other */
  for (int k = 0; zip && k < c; k++)
    zip = src[k] == src[k % 2] && ch[k] == ch[k % 2] + k / 2;
  *m = (ochan){.mode = run   ? CHAN_RUN
                       : zip ? CHAN_ZIP2
                             : CHAN_GATHER,
               .c = c,
               .n_src = n,
               .src_c = src_c,
               .src = src,
               .ch = ch};
  int ty = new_act(e, y, &md);
  oarg *args = malloc(((size_t)n + 1) * sizeof *args);
  if (ty < 0 || !args) {
    free(args);
    return nomem(eb, nd);
  }
  for (int i = 0; i < n; i++)
    args[i] = (oarg){DNNL_ARG_MULTIPLE_SRC + i, ts[i]};
  args[n] = (oarg){DNNL_ARG_DST, ty};
  ostep st = {.kind = ST_CHAN,
              .chan = m,
              .n = (size_t)(Y->dims[0] * Y->dims[2] * Y->dims[3]),
              .bytes = e->t[ty].bytes};
  dm_err rc = add_args_step(e, ni, &st, args, n + 1, eb);
  if (rc != DM_OK) return rc;
  if (e->verbose)
    fprintf(stderr, "onednn: %-28s %-20s chan pass (%s)\n", nname(nd),
            nd->op_type,
            run   ? "channel run"
            : zip ? "two runs interleaved"
                  : "gather");
  return DM_OK;
}

/* Output channel k of a shuffle of c channels in g groups: channel
 * (k % g) * (c / g) + k / g of its input. */
static int32_t *shuffle_table(int64_t c, int64_t g) {
  int32_t *cat = malloc((size_t)c * sizeof *cat);
  for (int64_t k = 0; cat && k < c; k++)
    cat[k] = (int32_t)((k % g) * (c / g) + k / g);
  return cat;
}

/* A channel shuffle of value x starting at Reshape node ni, or of the
 * inputs of Concat node ni (along the channels) with the shuffle after
 * it, as one ST_CHAN step; the shuffle's nodes are then done. */
static dm_err map_shuffle(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  bool concat = n->op == DM_OP_CONCAT;
  int64_t g;
  int nodes[3];
  if (concat) {
    if (n->p.concat.axis != 1 || n->n_out != 1 ||
        !shuffle_after(e, ni, n->out[0], true, &g, nodes))
      return DM_UNSUPPORTED;
  } else {
    int x = n->in[0];
    if (x < 0 || !shuffle_after(e, ni - 1, x, false, &g, nodes) ||
        nodes[0] != ni)
      return DM_UNSUPPORTED;
  }
  int y = e->g->nodes[nodes[2]].out[0];
  int32_t *cat = shuffle_table(val(e, y)->dims[1], g);
  if (!cat) return nomem(eb, n);
  dm_err rc = emit_chan(e, ni, n->in, concat ? n->n_in : 1, y, cat, eb);
  free(cat);
  if (rc == DM_OK)
    for (int k = concat ? 0 : 1; k < 3; k++)
      e->done[nodes[k]] = 1;
  return rc;
}

/* A Slice of a channels-last map along its channels only: one run of
 * channels per pixel. */
static dm_err map_cslice(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in < 1 || n->n_out != 1 || n->in[0] < 0) return DM_UNSUPPORTED;
  int x = n->in[0], y = n->out[0];
  const dm_value *X = val(e, x), *Y = val(e, y);
  if (!is_f32(e, x) || !is_f32(e, y) || X->rank != 4 || Y->rank != 4)
    return DM_UNSUPPORTED;
  for (int d = 0; d < 4; d++)
    if (n->p.slice.step[d] != 1 ||
        (d != 1 && (n->p.slice.start[d] != 0 || Y->dims[d] != X->dims[d])))
      return DM_UNSUPPORTED;
  int64_t c = Y->dims[1], off = n->p.slice.start[1];
  if (off < 0 || off + c > X->dims[1]) return DM_UNSUPPORTED;
  int32_t *cat = malloc((size_t)(c > 0 ? c : 1) * sizeof *cat);
  if (!cat) return nomem(eb, n);
  for (int64_t k = 0; k < c; k++)
    cat[k] = (int32_t)(off + k);
  dm_err rc = emit_chan(e, ni, &x, 1, y, cat, eb);
  free(cat);
  return rc;
}

static dm_err map_concat(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in < 1 || n->n_out != 1) return DM_UNSUPPORTED;
  int y = n->out[0];
  if (!is_f32(e, y)) return DM_UNSUPPORTED;
  const dm_value *Y = val(e, y);
  int r = Y->rank, axis = n->p.concat.axis;
  if (r < 1 || axis < 0 || axis >= r || Y->numel == 0) return DM_UNSUPPORTED;
  for (int i = 0; i < n->n_in; i++)
    if (n->in[i] < 0 || !is_f32(e, n->in[i]) || val(e, n->in[i])->rank != r ||
        val(e, n->in[i])->numel == 0)
      return DM_UNSUPPORTED;
  dm_err rc = map_shuffle(e, ni, eb);
  if (rc != DM_UNSUPPORTED) return rc;
  rc = map_concat_copy(e, ni, eb);
  if (rc != DM_UNSUPPORTED) return rc;
  rc = DM_NOMEM;
  dnnl_memory_desc_t *mds = malloc((size_t)n->n_in * sizeof *mds);
  int *ts = malloc((size_t)n->n_in * sizeof *ts);
  oarg *args = malloc(((size_t)n->n_in + 1) * sizeof *args);
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = NULL;
  if (!mds || !ts || !args) {
    rc = nomem(eb, n);
    goto out;
  }
  for (int i = 0; i < n->n_in; i++) {
    if ((rc = primary(e, n->in[i], &ts[i], eb)) != DM_OK) goto out;
    mds[i] = e->t[ts[i]].md;
  }
  dnnl_memory_desc_t dst_any;
  rc = DM_UNSUPPORTED;
  if (md_any_dt(&dst_any, r, Y->dims, mds[0].data_type) ||
      user_attr(&attr) != dnnl_success)
    goto out;
  if (dnnl_concat_primitive_desc_create(&pd, &dst_any, n->n_in, axis, mds, attr,
                                        e->eng) != dnnl_success)
    pd = NULL;
  if ((!pd || pd_is_ref(pd)) && r >= 3) {
    /* inputs in different layouts (e.g. NHWC next to Winograd's nChw16c)
     * get oneDNN's reference concat: bring them all to NHWC instead */
    dnnl_primitive_desc_t pd2 = NULL;
    bool ok = md_any(&dst_any, r, Y->dims) == dnnl_success;
    for (int i = 0; i < n->n_in && ok; i++)
      ok = md_channels_last(&mds[i], r, val(e, n->in[i])->dims) == dnnl_success;
    if (ok &&
        dnnl_concat_primitive_desc_create(&pd2, &dst_any, n->n_in, axis, mds,
                                          attr, e->eng) == dnnl_success) {
      if (pd_is_ref(pd2)) {
        dnnl_primitive_desc_destroy(pd2);
      } else {
        if (pd) dnnl_primitive_desc_destroy(pd);
        pd = pd2;
        for (int i = 0; i < n->n_in; i++)
          if ((rc = get_as(e, ni, n->in[i], &mds[i], &ts[i], eb)) != DM_OK)
            goto out;
      }
    }
  }
  if (!pd) goto out;
  {
    const dnnl_memory_desc_t *dmd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    int ty = new_act(e, y, dmd);
    if (ty < 0) {
      rc = nomem(eb, n);
      goto out;
    }
    for (int i = 0; i < n->n_in; i++)
      args[i] = (oarg){DNNL_ARG_MULTIPLE_SRC + i, ts[i]};
    args[n->n_in] = (oarg){DNNL_ARG_DST, ty};
    rc = emit_prim(e, ni, pd, args, n->n_in + 1, eb);
  }
out:
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (attr) dnnl_primitive_attr_destroy(attr);
  free(args);
  free(ts);
  free(mds);
  return rc;
}

static dm_err map_softmax(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in != 1 || n->n_out != 1) return DM_UNSUPPORTED;
  int x = n->in[0], y = n->out[0];
  if (!is_f32(e, x) || !is_f32(e, y)) return DM_UNSUPPORTED;
  const dm_value *X = val(e, x);
  int r = X->rank, axis = n->p.softmax.axis;
  if (r < 1 || axis < 0 || axis >= r || X->numel == 0) return DM_UNSUPPORTED;
  int64_t d[DNNL_MAX_NDIMS];
  int nd = r;
  if (n->p.softmax.legacy) { /* [prod(dims[:axis]), prod(dims[axis:])] */
    d[0] = d[1] = 1;
    for (int i = 0; i < r; i++)
      d[i < axis ? 0 : 1] *= X->dims[i];
    nd = 2;
    axis = 1;
  } else {
    for (int i = 0; i < r; i++)
      d[i] = X->dims[i];
  }
  int tx;
  dm_err rc = plain_view(e, ni, x, nd, d, &tx, eb);
  if (rc != DM_OK) return rc;
  dnnl_softmax_v2_desc_t sd;
  dnnl_primitive_desc_t pd = NULL;
  if (dnnl_softmax_v2_forward_desc_init(
          &sd, dnnl_forward_inference,
          n->p.softmax.log ? dnnl_softmax_log : dnnl_softmax_accurate,
          &e->t[tx].md, &e->t[tx].md, axis) != dnnl_success ||
      !make_pd(e, &sd, &pd))
    return DM_UNSUPPORTED;
  /* output: plain in y's own dims, viewed as the softmax's dims */
  dnnl_memory_desc_t ymd;
  int ty, tyv;
  if (md_plain(e, y, &ymd) != dnnl_success) {
    dnnl_primitive_desc_destroy(pd);
    return DM_UNSUPPORTED;
  }
  ty = new_act(e, y, &ymd);
  tyv = ty >= 0 ? view_of(e, y, ty, &e->t[tx].md) : -1;
  if (tyv < 0) {
    dnnl_primitive_desc_destroy(pd);
    return nomem(eb, n);
  }
  oarg a[2] = {{DNNL_ARG_SRC, tx}, {DNNL_ARG_DST, tyv}};
  rc = emit_prim(e, ni, pd, a, 2, eb);
  dnnl_primitive_desc_destroy(pd);
  return rc;
}

/* Reshape-family: the output is a view of the plain input. */
static dm_err map_reshape(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  if (n->n_in < 1 || n->n_out != 1 || n->in[0] < 0) return DM_UNSUPPORTED;
  int x = n->in[0], y = n->out[0];
  if (val(e, x)->dtype != val(e, y)->dtype ||
      val(e, x)->nbytes != val(e, y)->nbytes)
    return DM_UNSUPPORTED;
  int tx;
  dm_err rc;
  const dm_value *X = val(e, x), *Y = val(e, y);
  if (X->rank == 4 && Y->rank == 5 &&
      (rc = map_shuffle(e, ni, eb)) != DM_UNSUPPORTED)
    return rc;
  if (X->rank == Y->rank &&
      !memcmp(X->dims, Y->dims, (size_t)X->rank * sizeof *X->dims)) {
    /* same shape (Identity, Dropout, a Pad by zero): the input's tensor
     * in whatever layout it has */
    if ((rc = primary(e, x, &tx, eb)) != DM_OK) return rc;
    const otensor *t = &e->t[tx];
    if (new_tensor(e, y, t->buf, t->has_md ? &t->md : NULL, true) < 0)
      return nomem(eb, n);
    return DM_OK;
  }
  if ((rc = get_plain(e, ni, x, &tx, eb)) != DM_OK) return rc;
  dnnl_memory_desc_t md;
  bool f = val_dt(e, y) != dnnl_data_type_undef;
  if (f && md_plain(e, y, &md) != dnnl_success) return DM_UNSUPPORTED;
  int ty = new_tensor(e, y, e->t[tx].buf, f ? &md : NULL, true);
  if (ty < 0) return nomem(eb, n);
  return DM_OK;
}

static dm_err map_ref(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  ostep st;
  memset(&st, 0, sizeof st);
  st.kind = ST_REF;
  st.node = ni;
  st.src = st.dst = -1;
  st.ref_in = malloc(((size_t)n->n_in + 1) * sizeof *st.ref_in);
  st.ref_out = malloc(((size_t)n->n_out + 1) * sizeof *st.ref_out);
  dm_err rc = DM_OK;
  if (!st.ref_in || !st.ref_out) {
    rc = nomem(eb, n);
    goto fail;
  }
  /* The reference kernel reads constants as typed C arrays: weights that
   * engine.c left unaligned in the mapping (for oneDNN's reorder) get their
   * aligned copy now.  Build time, single-threaded: the graph is not shared
   * yet, hence the cast. */
  for (int i = 0; i < n->n_in; i++)
    if (n->in[i] >= 0 &&
        dm__graph_align_const((dm_graph *)(uintptr_t)e->g, n->in[i]) != DM_OK) {
      rc = nomem(eb, n);
      goto fail;
    }
  for (int i = 0; i < n->n_in; i++) {
    st.ref_in[i] = -1;
    if (n->in[i] >= 0 &&
        (rc = get_plain(e, ni, n->in[i], &st.ref_in[i], eb)) != DM_OK)
      goto fail;
  }
  for (int i = 0; i < n->n_out; i++) {
    st.ref_out[i] = -1;
    int y = n->out[i];
    if (y < 0) continue;
    dnnl_memory_desc_t md;
    bool f = val_dt(e, y) != dnnl_data_type_undef;
    if (f && md_plain(e, y, &md) != dnnl_success) {
      rc = dm_errf(eb, DM_BACKEND, "node '%s' (%s): bad output shape", nname(n),
                   n->op_type);
      goto fail;
    }
    st.ref_out[i] = new_act(e, y, f ? &md : NULL);
    if (st.ref_out[i] < 0) {
      rc = nomem(eb, n);
      goto fail;
    }
  }
  if ((rc = add_step(e, &st, eb)) != DM_OK) goto fail;
  if (n->n_in > e->max_io) e->max_io = n->n_in;
  if (n->n_out > e->max_io) e->max_io = n->n_out;
  e->n_ref++;
  if (e->verbose)
    fprintf(stderr, "onednn: %-28s %-20s dm__ref_node\n", nname(n), n->op_type);
  return DM_OK;
fail:
  free(st.ref_in);
  free(st.ref_out);
  return rc;
}

/* ----------------------------------------------------------------- int8 -- */

static dnnl_data_type_t q8_dt(int32_t dt) {
  return dt == DM_ONNX_UINT8 ? dnnl_u8 : dnnl_s8;
}

/* Whether a window reads no padding. */
static bool unpadded(const dm_window *w) {
  for (int i = 0; i < w->nsp; i++)
    if (w->pad_b[i] || w->pad_e[i]) return false;
  return true;
}

/* Sets a zero point of arg on attr (compile time), when it is not 0. */
static bool set_zp(dnnl_primitive_attr_t attr, int arg, int32_t zp) {
  return zp == 0 || dnnl_primitive_attr_set_zero_points(attr, arg, 1, 0, &zp) ==
                        dnnl_success;
}

/* The attr of an int8 conv or matmul (dm_qconv): output scales sc[0, n_sc)
 * on dim 1, the source zero point xzp; for an 8-bit output its zero point
 * and Relu/Clip as post-ops in output steps, for a float output
 * make_attr's post-ops (sum_value as there).  DM_UNSUPPORTED when oneDNN
 * refuses any of it. */
static dm_err q_attr(const dm_node *n, const dm_qconv *q, int64_t n_sc,
                     const float *sc, int32_t xzp, dnnl_primitive_attr_t *out,
                     int *sum_value) {
  bool fout = q->y.dtype == DM_ONNX_FLOAT;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  *out = NULL;
  if (fout) {
    dm_err rc = make_attr(n, false, &attr, sum_value);
    if (rc != DM_OK) return rc;
  } else if (user_attr(&attr) != dnnl_success) {
    return DM_UNSUPPORTED;
  }
  if (dnnl_primitive_attr_set_output_scales(attr, n_sc, 1 << 1, sc) !=
          dnnl_success ||
      !set_zp(attr, DNNL_ARG_SRC, xzp) ||
      (!fout && !set_zp(attr, DNNL_ARG_DST, q->y.zp[0])))
    goto bad;
  if (n->n_post > 0 && !fout) {
    if (dnnl_post_ops_create(&po) != dnnl_success) goto bad;
    for (int i = 0; i < n->n_post; i++) {
      const dm_act *a = &n->post[i].act;
      dnnl_status_t s;
      if (n->post[i].kind != DM_POST_ACT) goto bad;
      if (a->kind == DM_UNARY_RELU)
        s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0.f, 0.f);
      else if (a->kind == DM_UNARY_CLIP)
        s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip_v2,
                                         a->alpha / q->y.scale[0],
                                         a->beta / q->y.scale[0]);
      else
        goto bad;
      if (s != dnnl_success) goto bad;
    }
    if (dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success) goto bad;
    dnnl_post_ops_destroy(po);
  }
  *out = attr;
  return DM_OK;
bad:
  if (po) dnnl_post_ops_destroy(po);
  dnnl_primitive_attr_destroy(attr);
  return DM_UNSUPPORTED;
}

/* The output scales and bias of an int8 conv or matmul (dm_qconv) with
 * `no` output channels: *sc = x.scale * w.scale[o] (/ y.scale for an 8-bit
 * output), *bias = the float bias bv (or 0) in accumulator units, oneDNN adding
 * it before scaling; with fold, minus x.zp * sum_k w[o * so + k * sk] over the
 * K int8 weights of output o (the source zero point folded in). Both allocated
 * here, freed by the caller (also on error). */
static dm_err q_scales(oeng *e, const dm_node *n, int bv, int64_t no, int64_t K,
                       int64_t so, int64_t sk, bool fold, float **sc,
                       float **bias, dm_errbuf *eb) {
  const dm_qconv *q = n->q;
  *sc = malloc((size_t)no * sizeof **sc);
  *bias = aligned_alloc(ALIGN, align_up((size_t)no * sizeof **bias));
  if (!*sc || !*bias) return nomem(eb, n);
  const float *b0 = bv >= 0 ? val(e, bv)->data : NULL;
  if (bv >= 0 &&
      (val(e, bv)->dtype != DM_ONNX_FLOAT || val(e, bv)->numel != no || !b0))
    return DM_UNSUPPORTED;
  const int8_t *wq = val(e, q->w_q)->data;
  bool fout = q->y.dtype == DM_ONNX_FLOAT;
  for (int64_t o = 0; o < no; o++) {
    float acc_scale = q->x.scale[0] * q->w.scale[q->w.n == 1 ? 0 : o];
    (*sc)[o] = fout ? acc_scale : acc_scale / q->y.scale[0];
    (*bias)[o] = b0 ? b0[o] / acc_scale : 0.f;
    if (fold && q->x.zp[0] != 0) {
      int64_t s = 0;
      for (int64_t k = 0; k < K; k++)
        s += wq[o * so + k * sk];
      (*bias)[o] -= (float)(q->x.zp[0] * s);
    }
  }
  return DM_OK;
}

/* The step of an int8 conv or matmul whose pd is made: x_q in the
 * source layout pd asks for, the int8 weights (w_plain: their layout in
 * the file) reordered once, *bias (accumulator units, b_md; bv its value
 * or -1) handed to the buffer list, the output (sum_value as make_attr
 * set it). */
static dm_err emit_q_pd(oeng *e, int ni, dnnl_primitive_desc_t pd,
                        const dnnl_memory_desc_t *w_plain,
                        const dnnl_memory_desc_t *b_md, int bv, float **bias,
                        int sum_value, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  int x = n->in[0], y = n->out[0], q_w = n->q->w_q;
  const dnnl_memory_desc_t *smd =
      dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
  const dnnl_memory_desc_t *wmd =
      dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *dmd =
      dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  int tx, tw, tb, ty;
  dm_err rc;
  if ((rc = get_as(e, ni, x, smd, &tx, eb)) != DM_OK ||
      (rc = const_reordered(e, n, q_w, w_plain, val(e, q_w)->data, wmd, false,
                            &tw, eb)) != DM_OK)
    return rc;
  int bb = new_buf(e, BUF_CONST, -1, *bias, true);
  if (bb < 0) return nomem(eb, n);
  *bias = NULL; /* owned by the buffer list */
  tb = new_tensor(e, bv >= 0 ? bv : x, bb, b_md, false);
  if (tb < 0) return nomem(eb, n);
  int srcs[1] = {tx};
  if ((rc = dst_for(e, ni, y, dmd, sum_value, srcs, 1, &ty, eb)) != DM_OK)
    return rc;
  oarg a[4] = {{DNNL_ARG_SRC, tx},
               {DNNL_ARG_WEIGHTS, tw},
               {DNNL_ARG_DST, ty},
               {DNNL_ARG_BIAS, tb}};
  return emit_prim(e, ni, pd, a, 4, eb);
}

/* The step of an int8 conv or matmul (dm_qconv) from its operation
 * descriptor od: output scales and bias for `no` outputs of K weights each
 * (q_scales; fold: the source zero point folded into the bias, else left
 * to oneDNN), the attributes (q_attr), the implementation (prefer, see
 * pd_create_pref; NULL: oneDNN's first), then emit_q_pd.  DM_UNSUPPORTED
 * when oneDNN offers only its reference implementation. */
static dm_err emit_q(oeng *e, int ni, const_dnnl_op_desc_t od,
                     const char *prefer, int64_t no, int64_t K, int64_t so,
                     int64_t sk, bool fold, const dnnl_memory_desc_t *w_plain,
                     const dnnl_memory_desc_t *b_md, int bv, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  dnnl_primitive_attr_t attr = NULL;
  dnnl_primitive_desc_t pd = NULL;
  float *sc = NULL, *bias = NULL;
  int sum_value = -1;
  dm_err rc = q_scales(e, n, bv, no, K, so, sk, fold, &sc, &bias, eb);
  if (rc == DM_OK)
    rc = q_attr(n, n->q, no, sc, fold ? 0 : n->q->x.zp[0], &attr, &sum_value);
  if (rc == DM_OK) {
    if (pd_create_pref(&pd, od, attr, e->eng, prefer) != dnnl_success)
      pd = NULL;
    rc = pd && !pd_is_ref(pd)
             ? emit_q_pd(e, ni, pd, w_plain, b_md, bv, &bias, sum_value, eb)
             : DM_UNSUPPORTED;
  }
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (attr) dnnl_primitive_attr_destroy(attr);
  free(bias);
  free(sc);
  return rc;
}

/* A Conv on 8-bit data (dm_qconv, see internal.h) as a oneDNN int8
 * convolution: u8/s8 source, s8 weights reordered once, float bias divided
 * by the accumulator scale (oneDNN adds the bias before scaling), output
 * scales x.scale * w.scale[o] / y.scale per channel, source and destination
 * zero points, Relu/Clip post-ops in the output's scaled units, u8/s8
 * destination in the layout oneDNN picks.  A float output (q->y.n == 0)
 * is an f32 destination: output scales x.scale * w.scale[o], post[] as
 * for a float Conv (make_attr, the residual ADD a sum post-op).
 * DM_UNSUPPORTED (the reference integer kernel runs it) when oneDNN has no
 * non-reference kernel. */
static dm_err map_qconv(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  const dm_qconv *q = n->q;
  bool fout = q->y.dtype == DM_ONNX_FLOAT;
  if (n->n_in < 2 || n->n_out != 1 || (n->n_in > 3 && !fout))
    return DM_UNSUPPORTED;
  int x = n->in[0], y = n->out[0];
  int bv = n->n_in > 2 && !is_addend(n, 2) ? n->in[2] : -1;
  const dm_value *X = val(e, x), *W = val(e, n->in[1]), *Y = val(e, y);
  const dm_value *WQ = val(e, q->w_q);
  const dm_window *win = &n->p.conv.w;
  int nsp = win->nsp, nd = 2 + nsp;
  int64_t G = n->p.conv.group;
  if (nsp < 1 || nsp > 3 || X->rank != nd || W->rank != nd || Y->rank != nd ||
      G < 1 || WQ->numel != W->numel || !WQ->data)
    return DM_UNSUPPORTED;
  int64_t OC = W->dims[0];
  if (OC % G) return DM_UNSUPPORTED;
  int64_t wdims[DNNL_MAX_NDIMS];
  dnnl_dims_t strides, dil, pl, pr;
  int wnd = conv_geometry(W, G, win, wdims, strides, dil, pl, pr);
  dnnl_memory_desc_t src_any, w_any, dst_any, w_plain, b_md;
  if (md_any_dt(&src_any, nd, X->dims, q8_dt(X->dtype)) ||
      md_any_dt(&w_any, wnd, wdims, dnnl_s8) ||
      md_any_dt(&dst_any, nd, Y->dims, fout ? dnnl_f32 : q8_dt(Y->dtype)) ||
      md_plain_dt(&w_plain, wnd, wdims, dnnl_s8) ||
      md_plain_dims(&b_md, 1, &OC))
    return DM_UNSUPPORTED;
  dnnl_convolution_desc_t cd;
  if (dnnl_dilated_convolution_forward_desc_init(
          &cd, dnnl_forward_inference, dnnl_convolution_direct, &src_any,
          &w_any, &b_md, &dst_any, strides, dil, pl, pr) != dnnl_success)
    return DM_UNSUPPORTED;
  /* Where no padding reads it, the source zero point is a constant per
   * output channel, x.zp * sum(w[o]): folded into the bias, it leaves
   * oneDNN a zero-point-free conv.  Its AMX kernels run those 1.5-2.4x
   * faster (the default model's expand convs, whose sources are
   * projections with zero points: see int8_prefer). */
  int64_t K = W->numel / OC;
  return emit_q(e, ni, &cd, int8_prefer(e, n), OC, K, K, 1, unpadded(win),
                &w_plain, &b_md, bv, eb);
}

/* A Gemm on 8-bit data (dm_qconv, fuse_qgemm) as a oneDNN int8 matmul:
 * x_q [M, K] by the int8 weights as [K, N] (a transposed view when the
 * file stores [N, K]), output scales x.scale * w.scale[o] (/ y.scale for
 * an 8-bit output), the bias in accumulator units with the source zero
 * point folded in (x.zp * sum_k w[o][k]: no padding here), the output
 * zero point and Relu/Clip as for map_qconv.  DM_UNSUPPORTED: the
 * reference integer kernel runs it. */
static dm_err map_qgemm(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  const dm_qconv *q = n->q;
  bool fout = q->y.dtype == DM_ONNX_FLOAT;
  if (n->n_in < 2 || n->n_in > 3 || n->n_out != 1) return DM_UNSUPPORTED;
  int x = n->in[0], y = n->out[0];
  int bv = n->n_in > 2 ? n->in[2] : -1;
  const dm_value *X = val(e, x), *W = val(e, n->in[1]), *Y = val(e, y);
  const dm_value *WQ = val(e, q->w_q);
  bool tb = n->p.gemm.trans_b;
  if (X->rank != 2 || W->rank != 2 || Y->rank != 2 || !WQ->data ||
      WQ->numel != W->numel)
    return DM_UNSUPPORTED;
  int64_t M = X->dims[0], K = X->dims[1], N = tb ? W->dims[0] : W->dims[1];
  dnnl_dims_t wd = {K, N};
  int64_t bd[2] = {1, N};
  dnnl_memory_desc_t src_md, w_any, w_plain, b_md, dst_md;
  if (M < 1 || K < 1 || N < 1 ||
      md_plain_dt(&src_md, 2, X->dims, q8_dt(X->dtype)) ||
      md_any_dt(&w_any, 2, wd, dnnl_s8) ||
      dnnl_memory_desc_init_by_tag(&w_plain, 2, wd, dnnl_s8,
                                   tb ? dnnl_ba : dnnl_ab) != dnnl_success ||
      md_plain_dims(&b_md, 2, bd) ||
      md_plain_dt(&dst_md, 2, Y->dims, fout ? dnnl_f32 : q8_dt(Y->dtype)))
    return DM_UNSUPPORTED;
  dnnl_matmul_desc_t md;
  if (dnnl_matmul_desc_init(&md, &src_md, &w_any, &b_md, &dst_md) !=
      dnnl_success)
    return DM_UNSUPPORTED;
  return emit_q(e, ni, &md, NULL, N, K, tb ? K : 1, tb ? 1 : N, true, &w_plain,
                &b_md, bv, eb);
}

/* An Add on 8-bit data (dm_qadd, see internal.h) as a oneDNN int8 binary
 * add in the first operand's layout: input scales a.scale / y.scale and
 * b.scale / y.scale, then post-ops in the output's units: a linear shift
 * that removes the operands' zero points and adds the output's (the binary
 * primitive has no zero points of its own), then Relu/Clip as a clip at the
 * shifted bounds.
 * DM_UNSUPPORTED (the reference kernel runs it) when oneDNN offers only its
 * reference implementation. */
static dm_err map_qadd(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  const dm_qadd *q = n->qadd;
  int a = n->in[0], b = n->in[1], y = n->out[0];
  float sy = q->y.scale[0];
  float s0 = q->a.scale[0] / sy, s1 = q->b.scale[0] / sy;
  float shift = -(s0 * (float)q->a.zp[0] + s1 * (float)q->b.zp[0]);
  int ta, tb;
  dm_err rc = primary(e, a, &ta, eb);
  if (rc != DM_OK) return rc;
  if (!e->t[ta].has_md) return DM_UNSUPPORTED;
  if ((rc = get_as(e, ni, b, &e->t[ta].md, &tb, eb)) != DM_OK) return rc;
  dnnl_memory_desc_t dmd = e->t[ta].md;
  dmd.data_type = q8_dt(q->y.dtype);
  rc = DM_UNSUPPORTED;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  if (user_attr(&attr) != dnnl_success) return rc;
  if (dnnl_primitive_attr_set_scales(attr, DNNL_ARG_SRC_0, 1, 0, &s0) !=
          dnnl_success ||
      dnnl_primitive_attr_set_scales(attr, DNNL_ARG_SRC_1, 1, 0, &s1) !=
          dnnl_success ||
      dnnl_post_ops_create(&po) != dnnl_success)
    goto out;
  /* post(v) + zy as post'(v + zy): one linear shift, then the activation
   * with its bounds moved by zy (Relu: clip at zy).  oneDNN 2.6's jit
   * binary gives a second eltwise_linear the first one's parameters. */
  const dm_act *act = n->n_post > 0 ? &n->post[0].act : NULL;
  float zy = (float)q->y.zp[0];
  if (act && act->kind != DM_UNARY_RELU && act->kind != DM_UNARY_CLIP) goto out;
  shift += zy;
  if (shift != 0.f && dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_linear,
                                                   1.f, shift) != dnnl_success)
    goto out;
  if (act) {
    dnnl_status_t st;
    if (act->kind == DM_UNARY_CLIP)
      st = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip_v2,
                                        act->alpha / sy + zy,
                                        act->beta / sy + zy);
    else if (zy != 0.f)
      st = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip_v2, zy,
                                        FLT_MAX);
    else
      st = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0.f, 0.f);
    if (st != dnnl_success) goto out;
  }
  if (dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success) goto out;
  dnnl_binary_desc_t bd;
  if (dnnl_binary_desc_init(&bd, dnnl_binary_add, &e->t[ta].md, &e->t[tb].md,
                            &dmd) != dnnl_success ||
      dnnl_primitive_desc_create(&pd, &bd, attr, e->eng, NULL) !=
          dnnl_success) {
    pd = NULL;
    goto out;
  }
  if (pd_is_ref(pd)) goto out;
  {
    int ty = new_act(e, y, &dmd);
    if (ty < 0) {
      rc = nomem(eb, n);
      goto out;
    }
    oarg args[3] = {
        {DNNL_ARG_SRC_0, ta}, {DNNL_ARG_SRC_1, tb}, {DNNL_ARG_DST, ty}};
    rc = emit_prim(e, ni, pd, args, 3, eb);
  }
out:
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (po) dnnl_post_ops_destroy(po);
  dnnl_primitive_attr_destroy(attr);
  return rc;
}

/* The per-tensor parameters of QuantizeLinear/DequantizeLinear node n
 * (8-bit side qt); false when it is not one the backend maps. */
static bool quant_params(const oeng *e, const dm_node *n, float *scale,
                         int32_t *zp, int32_t *qt) {
  bool isq = n->op == DM_OP_QUANTIZE;
  if ((!isq && n->op != DM_OP_DEQUANTIZE) || n->n_in < 2 || n->n_out != 1 ||
      n->p.quant.axis >= 0)
    return false;
  int x = n->in[0], y = n->out[0];
  int sv = n->in[1], zv = n->n_in > 2 ? n->in[2] : -1;
  *qt = isq ? val(e, y)->dtype : val(e, x)->dtype;
  if (val_dt(e, x) == dnnl_data_type_undef ||
      val_dt(e, y) == dnnl_data_type_undef || val(e, x)->numel == 0 ||
      (*qt != DM_ONNX_UINT8 && *qt != DM_ONNX_INT8) || !is_const(e, sv) ||
      !is_f32(e, sv) || val(e, sv)->numel != 1 ||
      (zv >= 0 && (!is_const(e, zv) || val(e, zv)->dtype != *qt)))
    return false;
  *scale = *(const float *)val(e, sv)->data;
  *zp = 0;
  if (zv >= 0)
    *zp = *qt == DM_ONNX_UINT8 ? (int32_t) * (const uint8_t *)val(e, zv)->data
                               : (int32_t) * (const int8_t *)val(e, zv)->data;
  return *scale > 0;
}

/* For QuantizeLinear node qi: the DequantizeLinear node that is the only
 * reader of its output, with the same scale and zero point; -1 if none. */
static int quant_dq_pair(const oeng *e, int qi, float s, int32_t zp) {
  const dm_graph *g = e->g;
  int y = g->nodes[qi].out[0];
  if (e->n_uses[y] != 1 || val(e, y)->is_output) return -1;
  int di = next_reader(e, qi, y);
  if (di < 0) return -1;
  const dm_node *d = &g->nodes[di];
  float ds;
  int32_t dz, dt;
  if (e->done[di] || d->in[0] != y || !quant_params(e, d, &ds, &dz, &dt) ||
      d->op != DM_OP_DEQUANTIZE || ds != s || dz != zp || !is_f32(e, d->out[0]))
    return -1;
  return di;
}

/* Per-tensor QuantizeLinear / DequantizeLinear with constant parameters,
 * in the input's layout.  A dense layout gets a QDQ pass (qdq_span: ONNX's
 * arithmetic exactly, on the session's threads); a padded one a oneDNN
 * scaling reorder, y = x * (1/scale) + zp rounded to nearest even and
 * saturated, y = (x - zp) * scale, where the reciprocal and adding the zero
 * point before rounding differ from ONNX's rint(x / scale) + zp by at most
 * one step, on exact ties.  (Before either, the reference kernel took
 * 1.3 ms for a 224x224 RGB input.)  A Quantize whose only reader is its
 * Dequantize (quant_dq_pair) is one float-to-float pass. */
static dm_err map_quant(oeng *e, int ni, dm_errbuf *eb) {
  const dm_node *n = &e->g->nodes[ni];
  bool isq = n->op == DM_OP_QUANTIZE;
  float s;
  int32_t zp, qt;
  if (!quant_params(e, n, &s, &zp, &qt)) return DM_UNSUPPORTED;
  int x = n->in[0], y = n->out[0];
  int tx;
  dm_err rc = primary(e, x, &tx, eb);
  if (rc != DM_OK) return rc;
  if (!e->t[tx].has_md) return DM_UNSUPPORTED;
  dnnl_memory_desc_t dmd = e->t[tx].md;
  dmd.data_type = val_dt(e, y);
  /* a dense layout (no padding): our own pass, exactly ONNX's arithmetic */
  if (dnnl_memory_desc_get_size(&dmd) ==
      (size_t)val(e, y)->numel * (isq ? 1 : sizeof(float))) {
    /* a Quantize read only by its Dequantize (between two float nodes):
     * one pass, float to float, no 8-bit tensor in between */
    int di = isq ? quant_dq_pair(e, ni, s, zp) : -1;
    if (di >= 0) {
      y = e->g->nodes[di].out[0];
      dmd.data_type = dnnl_f32;
    }
    int ty = new_act(e, y, &dmd);
    if (ty < 0) return nomem(eb, n);
    qdq_op op = {isq, di >= 0, qt == DM_ONNX_UINT8, s, zp};
    rc = emit_pass(e, ni, tx, ty, (size_t)val(e, y)->numel, &op, eb);
    if (rc == DM_OK && di >= 0) e->done[di] = 1;
    return rc;
  }
  float osc = isq ? 1.f / s : s;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_primitive_desc_t pd = NULL;
  rc = DM_UNSUPPORTED;
  if (user_attr(&attr) != dnnl_success) return rc;
  if (dnnl_primitive_attr_set_output_scales(attr, 1, 0, &osc) != dnnl_success ||
      !set_zp(attr, isq ? DNNL_ARG_DST : DNNL_ARG_SRC, zp))
    goto out;
  if (dnnl_reorder_primitive_desc_create(&pd, &e->t[tx].md, e->eng, &dmd,
                                         e->eng, attr) != dnnl_success) {
    pd = NULL;
    goto out;
  }
  {
    int ty = new_act(e, y, &dmd);
    if (ty < 0) {
      rc = nomem(eb, n);
      goto out;
    }
    oarg a[2] = {{DNNL_ARG_FROM, tx}, {DNNL_ARG_TO, ty}};
    rc = emit_prim(e, ni, pd, a, 2, eb);
  }
out:
  if (pd) dnnl_primitive_desc_destroy(pd);
  dnnl_primitive_attr_destroy(attr);
  return rc;
}

/* ----------------------------------------------------------------- stem -- */

/* Is n a float Conv, 3x3, stride s, no dilation, group `group`, with
 * constant weights and bias, whose post-ops are activations (into a[], *na,
 * then a swish when sw)? */
static bool stem_conv(const oeng *e, const dm_node *n, int64_t group, int64_t s,
                      bool sw, dm_act *a, int *na) {
  if (n->op != DM_OP_CONV || n->q || n->n_in < 2 || n->n_in > 3 ||
      n->n_out != 1 || n->p.conv.group != group)
    return false;
  int w = n->in[1], bv = n->n_in > 2 ? n->in[2] : -1;
  if (!is_f32(e, n->in[0]) || !is_f32(e, w) || !is_f32(e, n->out[0]) ||
      !is_const(e, w) || (bv >= 0 && (!is_f32(e, bv) || !is_const(e, bv))))
    return false;
  const dm_window *win = &n->p.conv.w;
  const dm_value *W = val(e, w), *Y = val(e, n->out[0]);
  if (win->nsp != 2 || W->rank != 4 || W->dims[2] != 3 || W->dims[3] != 3 ||
      Y->rank != 4 || Y->dims[2] < 1 || Y->dims[3] < 1 || Y->dims[2] > 65536 ||
      Y->dims[3] > 65536)
    return false;
  for (int i = 0; i < 2; i++)
    if (win->kernel[i] != 3 || win->stride[i] != s || win->dil[i] != 1)
      return false;
  *na = 0;
  for (int p = 0; p < n->n_post; p++) {
    if (n->post[p].kind != DM_POST_ACT || *na >= DM_MAX_POST ||
        !act16v_has(n->post[p].act.kind))
      return false;
    a[(*na)++] = n->post[p].act;
  }
  if (sw) a[(*na)++] = (dm_act){DM_UNARY_SWISH, 0.f, 0.f};
  return true;
}

/* A network's stem as one STEM pass (stem.c): Conv node ni, 3x3 stride 2
 * from a plain NCHW image of at most 4 channels to at most 32, padded by
 * at most 1 in front; its activations (post-ops, a Sigmoid+Mul swish); the
 * only reader of that, a 3x3 stride-1 depthwise Conv padded by 1 all round,
 * and its activations; and the per-tensor QuantizeLinear to 8 bits that is
 * the only reader of that (int8 files that keep the stem in float for
 * accuracy, as the shipped one does).  Channels-last 8-bit output.
 * Without that QuantizeLinear the oneDNN steps stay: with float output
 * (also with MobileNet-v2's first 1x1 conv folded in) the whole network
 * ran 1-6 % slower than with them, with 8-bit output the int8 default
 * model 4-7 % faster (docs/engine.md).  DM_UNSUPPORTED when the pattern is not
 * there, AVX-512F is missing or DERMAL_ONEDNN_STEM=0; map_conv goes on. */
static dm_err map_stem(oeng *e, int ni, dm_errbuf *eb) {
#if defined(__x86_64__)
  const dm_graph *g = e->g;
  const dm_node *n = &g->nodes[ni];
  dm_stem sm;
  memset(&sm, 0, sizeof sm);
  int m1 = -1, s1 = e->stem ? conv_swish(e, ni, &m1) : -1;
  if (!e->stem || !stem_conv(e, n, 1, 2, s1 >= 0, sm.act1, &sm.n_act1))
    return DM_UNSUPPORTED;
  int x = n->in[0], v1 = s1 >= 0 ? g->nodes[m1].out[0] : n->out[0];
  const dm_value *X = val(e, x), *W1 = val(e, n->in[1]), *Y1 = val(e, v1);
  const dm_window *w1 = &n->p.conv.w;
  int64_t c = W1->dims[0], cin = W1->dims[1];
  if (X->rank != 4 || X->dims[1] != cin || cin > DM_STEM_MAX_CIN ||
      c > DM_STEM_MAX_C || X->dims[2] > 131072 || X->dims[3] > 131072 ||
      w1->pad_b[0] > 1 || w1->pad_b[1] > 1 || e->n_uses[v1] != 1 ||
      Y1->is_output)
    return DM_UNSUPPORTED;
  int di = next_reader(e, s1 >= 0 ? m1 : ni, v1);
  if (di < 0 || e->done[di]) return DM_UNSUPPORTED;
  const dm_node *d = &g->nodes[di];
  int m2 = -1, s2 = conv_swish(e, di, &m2);
  if (!stem_conv(e, d, c, 1, s2 >= 0, sm.act2, &sm.n_act2) || d->in[0] != v1)
    return DM_UNSUPPORTED;
  const dm_value *W2 = val(e, d->in[1]), *Y = val(e, d->out[0]);
  for (int i = 0; i < 2; i++)
    if (d->p.conv.w.pad_b[i] != 1 || d->p.conv.w.pad_e[i] != 1)
      return DM_UNSUPPORTED;
  if (W2->dims[0] != c || W2->dims[1] != 1 ||
      memcmp(Y->dims, Y1->dims, 4 * sizeof *Y->dims))
    return DM_UNSUPPORTED;
  int v2 = s2 >= 0 ? g->nodes[m2].out[0] : d->out[0], vo = v2;
  int qi = -1; /* the QuantizeLinear, when it is v2's only reader */
  float qs;
  int32_t qz, qt;
  if (e->n_uses[v2] == 1 && !val(e, v2)->is_output) {
    int r = next_reader(e, s2 >= 0 ? m2 : di, v2);
    const dm_node *q = r >= 0 ? &g->nodes[r] : NULL;
    if (q && !e->done[r] && q->op == DM_OP_QUANTIZE && q->in[0] == v2 &&
        quant_params(e, q, &qs, &qz, &qt) && quant_dq_pair(e, r, qs, qz) < 0) {
      qi = r;
      vo = q->out[0];
      sm.u8 = qt == DM_ONNX_UINT8;
      sm.scale = qs;
      sm.zp = qz;
    }
  }
  if (qi < 0) return DM_UNSUPPORTED;
  int tx;
  dm_err rc = primary(e, x, &tx, eb);
  if (rc != DM_OK) return rc;
  if (!e->t[tx].has_md || !md_is_plain(&e->t[tx].md)) return DM_UNSUPPORTED;
  dnnl_memory_desc_t md;
  if (md_channels_last(&md, 4, Y->dims) != dnnl_success) return DM_UNSUPPORTED;
  md.data_type = val_dt(e, vo);
  sm.cin = (int)cin;
  sm.c = (int)c;
  sm.ih = (int)X->dims[2];
  sm.iw = (int)X->dims[3];
  sm.oh = (int)Y->dims[2];
  sm.ow = (int)Y->dims[3];
  sm.pt = (int)w1->pad_b[0];
  sm.pl = (int)w1->pad_b[1];
  dm_stem *sp = big_take(&e->wmem, sizeof *sp);
  float *wm = big_take(&e->wmem, dm__stem_floats(&sm) * sizeof *wm);
  if (!sp || !wm) return DM_UNSUPPORTED; /* reservation exhausted */
  int b1 = n->n_in > 2 ? n->in[2] : -1, b2 = d->n_in > 2 ? d->in[2] : -1;
  dm__stem_pack(&sm, wm, W1->data, b1 >= 0 ? val(e, b1)->data : NULL, W2->data,
                b2 >= 0 ? val(e, b2)->data : NULL);
  *sp = sm;
  int ty = new_act(e, vo, &md);
  if (ty < 0) return nomem(eb, n);
  ostep st;
  memset(&st, 0, sizeof st);
  st.kind = ST_STEM;
  st.n = (size_t)(Y->dims[0] * Y->dims[2]);
  st.c = (size_t)(Y->dims[3] * c);
  st.hw = 1;
  st.stem = sp;
  if ((rc = add_pass(e, ni, &st, tx, ty, eb)) != DM_OK) return rc;
  size_t need = dm__stem_scratch(sp);
  if (need > e->stem_part) e->stem_part = need;
  int fused[6] = {s1, m1, di, s2, m2, qi};
  for (int i = 0; i < 6; i++)
    if (fused[i] >= 0) e->done[fused[i]] = 1;
  return DM_OK;
#else
  (void)e;
  (void)ni;
  (void)eb;
  return DM_UNSUPPORTED;
#endif
}

static dm_err map_node(oeng *e, int ni, dm_errbuf *eb) {
  const dm_graph *g = e->g;
  const dm_node *n = &g->nodes[ni];
  dm_err rc = DM_UNSUPPORTED;
  switch (n->op) {
  case DM_OP_CONV:
    rc = n->q ? map_qconv(e, ni, eb) : map_conv(e, ni, eb);
    break;
  case DM_OP_QUANTIZE:
  case DM_OP_DEQUANTIZE: rc = map_quant(e, ni, eb); break;
  case DM_OP_GEMM:
    rc = n->q ? map_qgemm(e, ni, eb) : map_gemm(e, ni, eb);
    break;
  case DM_OP_MATMUL: rc = map_matmul(e, ni, eb); break;
  case DM_OP_MAXPOOL:
  case DM_OP_AVGPOOL:
  case DM_OP_GLOBALAVGPOOL:
  case DM_OP_GLOBALMAXPOOL: rc = map_pool(e, ni, eb); break;
  case DM_OP_BATCHNORM: rc = map_batchnorm(e, ni, eb); break;
  case DM_OP_REDUCE: rc = map_reduce_gap(e, ni, eb); break;
  case DM_OP_UNARY: {
    int mi = swish_mul_of_sigmoid(e, ni);
    if (mi >= 0 && !e->done[mi]) { /* computed at the Mul */
      e->swish[mi] = (uint8_t)(1 + (g->nodes[mi].in[0] == n->in[0] ? 0 : 1));
      return DM_OK;
    }
    if (n->n_in == 1 && n->n_out == 1)
      rc = map_eltwise(e, ni, n->in[0], n->out[0], &n->p.unary, eb);
    break;
  }
  case DM_OP_BINARY:
    if (n->qadd) {
      rc = map_qadd(e, ni, eb);
      break;
    }
    if (e->swish[ni]) {
      const dm_node *m = n;
      int y = m->in[e->swish[ni] - 1];
      rc = map_eltwise(e, ni, y, m->out[0], NULL, eb);
      if (rc == DM_UNSUPPORTED) { /* run the skipped Sigmoid, then the Mul */
        int sv = m->in[e->swish[ni] == 1 ? 1 : 0];
        int si = val(e, sv)->producer;
        if (si < 0) return dm_errf(eb, DM_BACKEND, "onednn: swish lost");
        if ((rc = map_ref(e, si, eb)) != DM_OK) return rc;
        return map_ref(e, ni, eb);
      }
      return rc;
    }
    rc = map_binary(e, ni, eb);
    break;
  case DM_OP_CONCAT: rc = map_concat(e, ni, eb); break;
  case DM_OP_SOFTMAX: rc = map_softmax(e, ni, eb); break;
  case DM_OP_RESHAPE: rc = map_reshape(e, ni, eb); break;
  case DM_OP_SLICE: rc = map_cslice(e, ni, eb); break;
  default: break;
  }
  if (rc == DM_UNSUPPORTED) rc = map_ref(e, ni, eb);
  return rc;
}

/* ---------------------------------------------------------- memory plan -- */

static void touch(oeng *e, int t, int step) {
  if (t < 0) return;
  obuf *b = &e->b[e->t[t].buf];
  if (step < b->first) b->first = step;
  if (step > b->last) b->last = step;
}

typedef struct span {
  size_t off, end;
} span;

static int cmp_span(const void *a, const void *b) {
  const span *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

/* Calls f(ctx, tensor, arg) for every tensor step st names, until f
 * returns true (then true): a primitive's args (also a TILES step's,
 * its second conv's, and a SKIP step's own), a REF node's inputs and
 * outputs (arg 0), a pass's or copy's source, destination and CSCALE
 * scales (arg 0).  Tensors < 0 (omitted) are passed too. */
static bool each_tensor(const oeng *e, const ostep *st,
                        bool (*f)(void *ctx, int t, int arg), void *ctx) {
  if (st->kind == ST_REF) {
    const dm_node *n = &e->g->nodes[st->node];
    for (int i = 0; i < n->n_in; i++)
      if (f(ctx, st->ref_in[i], 0)) return true;
    for (int i = 0; i < n->n_out; i++)
      if (f(ctx, st->ref_out[i], 0)) return true;
    return false;
  }
  if (st->n_args) {
    for (int i = 0; i < st->n_args; i++)
      if (f(ctx, st->args[i].tensor, st->args[i].arg)) return true;
    return false;
  }
  return f(ctx, st->src, 0) || f(ctx, st->dst, 0) ||
         (st->kind == ST_CSCALE && f(ctx, st->aux, 0));
}

typedef struct touch_at {
  oeng *e;
  int step, except; /* the step; an arg not to touch (0: none) */
} touch_at;

static bool touch_one(void *ctx, int t, int arg) {
  const touch_at *c = ctx;
  if (!c->except || arg != c->except) touch(c->e, t, c->step);
  return false;
}

static dm_err plan_memory(oeng *e, dm_errbuf *eb) {
  for (int s = 0; s < e->n_s; s++) {
    const ostep *st = &e->s[s];
    if (st->kind == ST_SKIP) continue;
    if (st->kind == ST_TILES) { /* both convs' args but the map */
      touch_at a = {e, s, DNNL_ARG_DST}, b = {e, s, DNNL_ARG_SRC};
      if (e->s[st->xa].pw)
        touch(e, e->s[st->xa].src, s);
      else
        each_tensor(e, &e->s[st->xa], touch_one, &a);
      if (st->pw)
        touch(e, st->dst, s);
      else
        each_tensor(e, st, touch_one, &b);
    } else {
      touch_at c = {e, s, 0};
      each_tensor(e, st, touch_one, &c);
    }
  }
  int *order = malloc(((size_t)e->n_b + 1) * sizeof *order);
  span *sp = malloc(((size_t)e->n_b + 1) * sizeof *sp);
  if (!order || !sp) {
    free(order);
    free(sp);
    return nomem(eb, NULL);
  }
  int n = 0;
  for (int i = 0; i < e->n_b; i++)
    if (e->b[i].kind == BUF_ARENA && e->b[i].last >= 0) order[n++] = i;
  /* With bands, 8-bit maps get bytes of their own, after the rest: a
   * buffer reused by another tensor is split between the threads at
   * another place, so a thread writes lines the other core holds (the
   * int8 default model, 2 threads: 1.35-1.39 -> 1.24-1.27 ms; with no
   * reuse at all 1.23-1.24; fp32 maps, 4x the bytes, did not gain). */
  for (int i = 0; i < e->n_b; i++)
    e->b[i].own8 = e->n_bands > 0 && e->b[i].kind == BUF_ARENA;
  for (int i = 0; i < e->n_t; i++) {
    dnnl_data_type_t dt = val_dt(e, e->t[i].value);
    if (dt != dnnl_u8 && dt != dnnl_s8) e->b[e->t[i].buf].own8 = false;
  }
  /* largest first (8-bit ones last when apart); insertion sort keeps it
   * dependency-free and stable */
  for (int i = 1; i < n; i++) {
    int k = order[i], j = i - 1;
    while (j >= 0 && (e->b[order[j]].own8 > e->b[k].own8 ||
                      (e->b[order[j]].own8 == e->b[k].own8 &&
                       e->b[order[j]].bytes < e->b[k].bytes))) {
      order[j + 1] = order[j];
      j--;
    }
    order[j + 1] = k;
  }
  size_t total = 0;
  for (int i = 0; i < n; i++) {
    obuf *b = &e->b[order[i]];
    if (b->own8) {
      b->offset = total;
      total += align_up(b->bytes);
      continue;
    }
    int ns = 0;
    for (int j = 0; j < i; j++) {
      const obuf *o = &e->b[order[j]];
      if (o->first <= b->last && b->first <= o->last)
        sp[ns++] = (span){o->offset, o->offset + align_up(o->bytes)};
    }
    qsort(sp, (size_t)ns, sizeof *sp, cmp_span);
    size_t off = 0, need = align_up(b->bytes);
    for (int j = 0; j < ns; j++) {
      if (sp[j].off >= off + need) break;
      if (sp[j].end > off) off = sp[j].end;
    }
    b->offset = off;
    if (off + need > total) total = off + need;
  }
  e->arena_bytes = total;
  free(order);
  free(sp);
  return DM_OK;
}

/* ---------------------------------------------------------------- bands -- */

/* Two vCPUs of the VMs we measure on share no cache: a cache line written
 * by one core and read by the other took ~240 ns (a ping-pong between two
 * pinned threads: 484 ns per round trip).  oneDNN splits every primitive
 * among the threads on its own terms, so the next primitive often reads
 * what the other core wrote.  With n_bands threads, a run of consecutive
 * steps on channels-last tensors of one image instead runs inside one
 * parallel region: thread b computes band b of every step's output (a
 * range of rows, or of pixels for pointwise steps) with a primitive made
 * for that band on one thread (plan_bands).  Each core then finds its part
 * of a map in its own cache, except the window rows a 3x3 conv reads
 * across the band's edge.  The threads meet at a barrier only before a
 * step that could touch what another band did since the last one
 * (plan_sync), and a run has one fork and join instead of one per
 * primitive.  Integer results are bit-identical to one thread. */

extern void GOMP_barrier(void);

/* c, h, w of md when it is a dense channels-last tensor of one image. */
static bool md_nhwc1(const dnnl_memory_desc_t *md, int64_t *c, int64_t *h,
                     int64_t *w) {
  if (md->ndims != 4 || md->format_kind != dnnl_blocked || md->dims[0] != 1 ||
      md->offset0 || md->extra.flags)
    return false;
  const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
  if (b->inner_nblks) return false;
  for (int i = 0; i < 4; i++)
    if (md->padded_dims[i] != md->dims[i]) return false;
  *c = md->dims[1];
  *h = md->dims[2];
  *w = md->dims[3];
  return b->strides[1] == 1 && (*w == 1 || b->strides[3] == *c) &&
         (*h == 1 || b->strides[2] == *w * *c);
}

/* Arg j of band ob views h x w pixels of channels-last tensor md (c
 * channels), starting at its pixel `first`. */
static bool band_view(oband *ob, int j, const dnnl_memory_desc_t *md, int64_t c,
                      int64_t h, int64_t w, int64_t first) {
  int64_t d[4] = {1, c, h, w};
  if (md_channels_last(&ob->md[j], 4, d) != dnnl_success) return false;
  ob->md[j].data_type = md->data_type; /* strides count elements */
  ob->off[j] = (size_t)(first * c) * dnnl_data_type_size(md->data_type);
  ob->view[j] = true;
  return true;
}

/* Are attr's post-ops only eltwise and sum?  *sum (when not NULL): is
 * a sum among them. */
static bool post_ops_plain(const_dnnl_primitive_attr_t attr, bool *sum) {
  const_dnnl_post_ops_t po = NULL;
  if (dnnl_primitive_attr_get_post_ops(attr, &po) != dnnl_success) return false;
  if (sum) *sum = false;
  for (int i = 0; po && i < dnnl_post_ops_len(po); i++) {
    dnnl_primitive_kind_t k = dnnl_post_ops_get_kind(po, i);
    if (k != dnnl_eltwise && k != dnnl_sum) return false;
    if (k == dnnl_sum && sum) *sum = true;
  }
  return true;
}

/* Band geometry of a step: for every arg, whether it is viewed and the
 * view (md, byte offset); plus the op descriptor to create. */
typedef struct bgeo {
  dnnl_convolution_desc_t conv;
  dnnl_binary_desc_t bin;
  bool is_conv;
} bgeo;

static bool arg_tensor_ok(const oeng *e, int t) {
  return t >= 0 && e->t[t].has_md && e->b[e->t[t].buf].kind != BUF_INPUT &&
         e->b[e->t[t].buf].kind != BUF_OUTPUT;
}

/* Which part of a step a band or tile primitive computes. */
typedef struct vsel {
  int band;                /* >= 0: band `band` of e->n_bands */
  int64_t r0, r1;          /* else output rows [r0, r1) of a conv, */
  bool src_tile, dst_tile; /* its source or destination a tile's map */
  int64_t a, z;            /* out (convs by rows): the source rows read */
} vsel;

/* The views of part w of prim step st into ob (md/off/view sized n_args)
 * and the op descriptor in *g.  False when the step cannot run so. */
static bool band_views(const oeng *e, const ostep *st,
                       const_dnnl_primitive_desc_t pd, vsel *w, oband *ob,
                       bgeo *g) {
  dnnl_primitive_kind_t kind;
  if (dnnl_primitive_desc_query(pd, dnnl_query_primitive_kind, 0, &kind) !=
      dnnl_success)
    return false;
  int src = -1, src1 = -1, dst = -1;
  for (int j = 0; j < st->n_args; j++) {
    ob->view[j] = false;
    if (st->args[j].arg == DNNL_ARG_SRC) src = j;
    if (st->args[j].arg == DNNL_ARG_SRC_1) src1 = j;
    if (st->args[j].arg == DNNL_ARG_DST) dst = j;
  }
  if (src < 0 || dst < 0) return false;
  int ts = st->args[src].tensor, td = st->args[dst].tensor;
  if (!arg_tensor_ok(e, ts) || !arg_tensor_ok(e, td)) return false;
  const dnnl_memory_desc_t *ms = &e->t[ts].md, *md = &e->t[td].md;
  int64_t ic, ih, iw, oc, oh, ow;
  if (!md_nhwc1(ms, &ic, &ih, &iw) || !md_nhwc1(md, &oc, &oh, &ow))
    return false;
  int nb = e->n_bands, b = w->band;
  if (b < 0 && kind != dnnl_convolution) return false;
  if (kind == dnnl_convolution) {
    const dnnl_convolution_desc_t *cd = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_convolution_d, 0, &cd) !=
            dnnl_success ||
        !cd || cd->prop_kind != dnnl_forward_inference || src1 >= 0)
      return false;
    const dnnl_memory_desc_t *wmd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *bmd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
    if (!wmd) return false;
    int64_t kh = wmd->dims[wmd->ndims - 2], kw = wmd->dims[wmd->ndims - 1];
    g->is_conv = true;
    g->conv = *cd;
    g->conv.weights_desc = *wmd;
    if (bmd) g->conv.bias_desc = *bmd;
    bool pointwise = kh == 1 && kw == 1 && cd->strides[0] == 1 &&
                     cd->strides[1] == 1 && cd->padding[0][0] == 0 &&
                     cd->padding[0][1] == 0 && cd->padding[1][0] == 0 &&
                     cd->padding[1][1] == 0 && ih == oh && iw == ow;
    if (pointwise && b >= 0) {
      int64_t p0, p1;
      band_range(oh * ow, b, nb, &p0, &p1);
      if (p1 <= p0) return false;
      if (!band_view(ob, src, ms, ic, 1, p1 - p0, p0) ||
          !band_view(ob, dst, md, oc, 1, p1 - p0, p0))
        return false;
    } else {
      int64_t r0, r1, s = cd->strides[0], pt = cd->padding[0][0];
      int64_t kext = (kh - 1) * (cd->dilates[0] + 1) + 1;
      if (b >= 0) {
        band_range(oh, b, nb, &r0, &r1);
      } else {
        r0 = w->r0;
        r1 = w->r1;
      }
      if (r1 <= r0 || r0 < 0 || r1 > oh) return false;
      int64_t first = r0 * s - pt, end = (r1 - 1) * s - pt + kext;
      int64_t a = first > 0 ? first : 0, z = end < ih ? end : ih;
      if (z <= a) return false;
      w->a = a;
      w->z = z;
      if (!band_view(ob, src, ms, ic, z - a, iw, w->src_tile ? 0 : a * iw) ||
          !band_view(ob, dst, md, oc, r1 - r0, ow, w->dst_tile ? 0 : r0 * ow))
        return false;
      g->conv.padding[0][0] = a - first;
      g->conv.padding[1][0] = end - z;
    }
    g->conv.src_desc = ob->md[src];
    g->conv.dst_desc = ob->md[dst];
  } else if (kind == dnnl_binary) {
    const dnnl_binary_desc_t *bd = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_binary_d, 0, &bd) !=
            dnnl_success ||
        !bd || src1 < 0 || ih != oh || iw != ow || ic != oc)
      return false;
    int t1 = st->args[src1].tensor;
    int64_t c1, h1, w1;
    if (!arg_tensor_ok(e, t1) || !md_nhwc1(&e->t[t1].md, &c1, &h1, &w1))
      return false;
    bool whole1 = h1 == 1 && w1 == 1; /* broadcast over the pixels */
    if (!whole1 && (h1 != oh || w1 != ow || c1 != oc)) return false;
    int64_t p0, p1;
    band_range(oh * ow, b, nb, &p0, &p1);
    if (p1 <= p0) return false;
    g->is_conv = false;
    g->bin = *bd;
    if (!band_view(ob, src, ms, ic, 1, p1 - p0, p0) ||
        !band_view(ob, dst, md, oc, 1, p1 - p0, p0))
      return false;
    g->bin.src_desc[0] = ob->md[src];
    g->bin.dst_desc = ob->md[dst];
    if (whole1) {
      g->bin.src_desc[1] = e->t[t1].md;
    } else {
      if (!band_view(ob, src1, &e->t[t1].md, c1, 1, p1 - p0, p0)) return false;
      g->bin.src_desc[1] = ob->md[src1];
    }
  } else {
    return false;
  }
  return true;
}

/* Band b of pass step st: its range of units. */
static bool band_pass(const oeng *e, const ostep *st, int b, oband *ob) {
  if (st->kind == ST_STEM) { /* rows */
    int64_t lo, hi;
    band_range((int64_t)st->n, b, e->n_bands, &lo, &hi);
    ob->lo = (size_t)lo;
    ob->n = (size_t)(hi - lo);
    return hi > lo;
  }
  if (st->kind == ST_FC) { /* outputs, 8 at a time; a band may get none */
    int64_t lo, hi, units = ((int64_t)st->n + 7) / 8;
    if (!e->band_fc) return false;
    band_range(units, b, e->n_bands, &lo, &hi);
    size_t o0 = (size_t)lo * 8, o1 = (size_t)hi * 8;
    if (o1 > st->n) o1 = st->n;
    ob->lo = o0 < o1 ? o0 : 0;
    ob->n = o0 < o1 ? o1 - o0 : 0;
    return true;
  }
  if (st->kind == ST_CHAN || st->kind == ST_PW) { /* one image's pixels */
    int ty = st->kind == ST_PW ? st->dst : st->args[st->n_args - 1].tensor;
    size_t c = st->kind == ST_PW ? (size_t)st->pw->oc : (size_t)st->chan->c;
    int64_t lo, hi;
    if (val(e, e->t[ty].value)->dims[0] != 1 || st->n * c < 1024) return false;
    band_range((int64_t)st->n, b, e->n_bands, &lo, &hi);
    ob->lo = (size_t)lo;
    ob->n = (size_t)(hi - lo);
    return hi > lo;
  }
  if (st->kind == ST_GAP) { /* one image's pixels; a band may get none */
    int64_t lo, hi;
    if (st->n != 1 || !e->band_fc) return false;
    band_range((int64_t)st->hw, b, e->n_bands, &lo, &hi);
    ob->lo = (size_t)lo;
    ob->n = (size_t)(hi - lo);
    return true;
  }
  bool pixels = st->kind == ST_CSCALE || st->kind == ST_NHWC;
  if (st->kind != ST_SWISH && st->kind != ST_QDQ && !pixels) return false;
  if (pixels && st->n != 1) return false;
  const dm_value *v = val(e, e->t[st->dst].value);
  int64_t units = (int64_t)(pixels ? st->hw : st->n);
  int64_t pix = v->rank == 4 && v->dims[0] == 1 ? v->dims[2] * v->dims[3] : 0;
  int64_t per = pix > 0 && units % pix == 0 ? units / pix : 0;
  int64_t lo, hi;
  if (per) { /* whole pixels, as the convs' pointwise bands */
    band_range(pix, b, e->n_bands, &lo, &hi);
    lo *= per;
    hi *= per;
  } else {
    band_range(units, b, e->n_bands, &lo, &hi);
  }
  /* at least 1024 floats (a CSCALE of 28x28 or 7x7 pixels has that many:
   * running it whole would end the run of banded steps) */
  if (hi <= lo || units * (int64_t)(pixels ? st->c : 1) < 1024) return false;
  ob->lo = (size_t)lo;
  ob->n = (size_t)(hi - lo);
  return true;
}

static void band_free_one(oband *o) {
  if (o->prim && !o->shared) dnnl_primitive_destroy(o->prim);
  if (!o->shared) free(o->wdata);
  free(o->md);
  free(o->off);
  free(o->view);
}

static void band_free(oband *ob, int n) {
  if (!ob) return;
  for (int b = 0; b < n; b++)
    band_free_one(&ob[b]);
  free(ob);
}

/* Band o of conv step st gets its own copy of the weights in the layout
 * band primitive bpd wants, reordered from where the step's came from (the
 * load job that made them, or the constant itself). */
static bool band_weights(oeng *e, const ostep *st,
                         const_dnnl_primitive_desc_t bpd, oband *o,
                         dnnl_stream_t rs) {
  int j = -1;
  for (int k = 0; k < st->n_args; k++)
    if (st->args[k].arg == DNNL_ARG_WEIGHTS) j = k;
  const dnnl_memory_desc_t *wmd =
      dnnl_primitive_desc_query_md(bpd, dnnl_query_weights_md, 0);
  if (j < 0 || !wmd || !rs) return false;
  const otensor *t = &e->t[st->args[j].tensor];
  const obuf *buf = &e->b[t->buf];
  if (buf->kind != BUF_CONST || !t->has_md) return false;
  ojob r;
  memset(&r, 0, sizeof r);
  r.step = -1;
  r.smd = t->md;
  r.src = buf->konst;
  for (int k = 0; k < e->n_jobs; k++)
    if (e->jobs[k].step < 0 && e->jobs[k].dst == buf->konst) {
      r.smd = e->jobs[k].smd;
      r.src = e->jobs[k].src;
    }
  r.dmd = *wmd;
  size_t sz = align_up(dnnl_memory_desc_get_size(wmd));
  if (!(r.dst = aligned_alloc(ALIGN, sz ? sz : ALIGN))) return false;
  job_reorder(e, &r, rs);
  if (r.status != dnnl_success) {
    free(r.dst);
    return false;
  }
  free(o->wdata);
  o->wdata = r.dst;
  o->warg = j;
  o->md[j] = *wmd;
  return true;
}

/* Band or tile w of prim step st (primitive desc pd, attributes attr)
 * into o: its per-arg arrays, the views, and a primitive for one thread
 * of the step's implementation family (e.g. "jit_dw:avx512_core"), with
 * its own copy of the weights when its kernel wants another layout (the
 * default model's int8 96->576 1x1 convs: OC blocks of 48 for two threads
 * over 14x14, of 64 for one over 98 pixels, which only ref_int8 took in
 * the other).  *scratch grows to its scratchpad's bytes. */
static bool view_prim(oeng *e, const ostep *st, const_dnnl_primitive_desc_t pd,
                      const_dnnl_primitive_attr_t attr, vsel *w, oband *o,
                      dnnl_stream_t rs, size_t *scratch, const oband *like) {
  size_t na = (size_t)st->n_args;
  o->md = calloc(na, sizeof *o->md);
  o->off = calloc(na, sizeof *o->off);
  o->view = calloc(na, sizeof *o->view);
  if (!o->md || !o->off || !o->view) return false;
  o->warg = -1;
  if (like && like->prim) { /* the same shape as `like`: its primitive */
    bgeo g;
    if (!band_views(e, st, pd, w, o, &g)) return false;
    bool same = g.is_conv && g.conv.padding[0][0] == like->pt &&
                g.conv.padding[1][0] == like->pb;
    for (size_t j = 0; j < na && same; j++)
      same = o->view[j] == like->view[j] &&
             (!o->view[j] || dnnl_memory_desc_equal(&o->md[j], &like->md[j]));
    if (same) {
      o->prim = like->prim;
      o->has_scratch = like->has_scratch;
      o->scratch_md = like->scratch_md;
      o->warg = like->warg;
      o->wdata = like->wdata;
      if (o->warg >= 0) o->md[o->warg] = like->md[o->warg];
      o->pt = like->pt;
      o->pb = like->pb;
      o->shared = true;
      return true;
    }
  }
  char fam[64];
  snprintf(fam, sizeof fam, "%s", pd_impl(pd));
  dnnl_primitive_desc_t bpd = NULL;
  for (int own = 0; own < 2 && !bpd; own++) {
    bgeo g;
    if (!band_views(e, st, pd, w, o, &g) || (own && !g.is_conv)) return false;
    dnnl_memory_desc_t *wd = &g.conv.weights_desc;
    if (own && md_any_dt(wd, wd->ndims, wd->dims, wd->data_type)) return false;
    const_dnnl_op_desc_t od = g.is_conv ? (const_dnnl_op_desc_t)&g.conv
                                        : (const_dnnl_op_desc_t)&g.bin;
    o->pt = g.is_conv ? g.conv.padding[0][0] : 0;
    o->pb = g.is_conv ? g.conv.padding[1][0] : 0;
    if (pd_create_pref(&bpd, od, attr, e->eng, fam) != dnnl_success)
      bpd = NULL;
    else if (pd_is_ref(bpd) || (own && !band_weights(e, st, bpd, o, rs))) {
      dnnl_primitive_desc_destroy(bpd);
      bpd = NULL;
    }
  }
  if (!bpd) return false;
  const dnnl_memory_desc_t *sp =
      dnnl_primitive_desc_query_md(bpd, dnnl_query_scratchpad_md, 0);
  bool ok = dnnl_primitive_create(&o->prim, bpd) == dnnl_success;
  if (!ok) o->prim = NULL;
  if (ok && sp && dnnl_memory_desc_get_size(sp) > 0) {
    o->has_scratch = true;
    o->scratch_md = *sp;
    size_t sz = dnnl_memory_desc_get_size(sp);
    if (sz > *scratch) *scratch = sz;
  }
  dnnl_primitive_desc_destroy(bpd);
  return ok;
}

/* The primitive desc and attributes of prim step st, when its post-ops
 * are plain (eltwise, sum; *sum: a sum among them, when not NULL): what
 * band and tile primitives start from. */
static bool step_pd(const ostep *st, const_dnnl_primitive_desc_t *pd,
                    const_dnnl_primitive_attr_t *attr, bool *sum) {
  return st->kind == ST_PRIM && st->prim &&
         dnnl_primitive_get_primitive_desc(st->prim, pd) == dnnl_success &&
         dnnl_primitive_desc_get_attr(*pd, attr) == dnnl_success &&
         post_ops_plain(*attr, sum);
}

/* Step st in bands, or NULL (it runs whole); rs: a stream for reorders. */
static oband *band_step(oeng *e, const ostep *st, dnnl_stream_t rs) {
  int nb = e->n_bands;
  oband *ob = calloc((size_t)nb, sizeof *ob);
  if (!ob) return NULL;
  if (st->kind != ST_PRIM) {
    for (int b = 0; b < nb; b++)
      if (!band_pass(e, st, b, &ob[b])) goto no;
    return ob;
  }
  const_dnnl_primitive_desc_t pd = NULL;
  const_dnnl_primitive_attr_t attr = NULL;
  if (!step_pd(st, &pd, &attr, NULL)) goto no;
  for (int b = 0; b < nb; b++) {
    vsel w = {.band = b};
    if (!view_prim(e, st, pd, attr, &w, &ob[b], rs, &e->band_scratch, NULL))
      goto no;
  }
  return ob;
no:
  band_free(ob, nb);
  return NULL;
}

static bool plan_sync(oeng *e);

static oband *tile_bands(const oeng *e, const ostep *st);

/* With threads > 1 (and DERMAL_ONEDNN_BANDS not 0), gives every step that
 * can run in bands its bands.  Band primitives are made for one thread. */
static void plan_bands(oeng *e) {
  if (!e->n_bands) return;
  omp_set_num_threads(1);
  dnnl_stream_t rs = NULL; /* for weights a band copies (band_weights) */
  if (dnnl_stream_create(&rs, e->eng, dnnl_stream_default_flags) !=
      dnnl_success)
    rs = NULL;
  for (int i = 0; i < e->n_s; i++) {
    ostep *st = &e->s[i];
    if (st->kind == ST_PRIM || st->kind == ST_SWISH || st->kind == ST_QDQ ||
        st->kind == ST_CSCALE || st->kind == ST_NHWC || st->kind == ST_STEM ||
        st->kind == ST_GAP || st->kind == ST_FC || st->kind == ST_CHAN ||
        st->kind == ST_PW)
      st->band = band_step(e, st, rs);
    else if (st->kind == ST_TILES)
      st->band = tile_bands(e, st);
    if (st->band) e->n_banded++;
  }
  if (rs) dnnl_stream_destroy(rs);
  omp_set_num_threads(e->threads);
  if (!plan_sync(e)) /* no room to plan: a barrier before every step */
    for (int i = 0; i < e->n_s; i++)
      e->s[i].sync = true;
  int n_sync = 0;
  for (int i = 0; i < e->n_s; i++)
    n_sync += e->s[i].band && e->s[i].sync;
  if (e->verbose)
    fprintf(stderr, "onednn: %d of %d steps run in %d bands, %d barriers\n",
            e->n_banded, e->n_s, e->n_bands, n_sync);
}

static int arg_index(const ostep *st, int arg) {
  for (int j = 0; j < st->n_args; j++)
    if (st->args[j].arg == arg) return j;
  return -1;
}

/* One memory access of a band: bytes [lo, hi) of space (-1: the arena,
 * offsets in it; else a non-arena buffer). */
typedef struct bacc {
  int space, band;
  bool write;
  size_t lo, hi;
} bacc;

static int acc_add(const oeng *e, bacc *a, int n, int t, int band, bool write,
                   size_t lo, size_t hi) {
  const obuf *b = &e->b[e->t[t].buf];
  if (b->kind == BUF_CONST) return n;
  size_t base = b->kind == BUF_ARENA ? b->offset : 0;
  a[n] = (bacc){b->kind == BUF_ARENA ? -1 : e->t[t].buf, band, write, base + lo,
                base + hi};
  return n + 1;
}

/* A GAP's partial sums of band b (all bands: -1), as an access to space
 * -2 (the session's gap_part). */
static bacc gap_part_acc(const ostep *st, int b, int band, bool write) {
  size_t row = st->c * sizeof(float);
  return (bacc){-2, band, write, b < 0 ? 0 : (size_t)b * row,
                b < 0 ? MAX_BANDS * row : (size_t)(b + 1) * row};
}

/* The accesses of every band of banded step st into a (room for
 * n_bands * (n_args + 3)); returns how many.  A GAP's are those of its
 * first half (late: of its second half, after its own barrier). */
static int step_accesses(const oeng *e, const ostep *st, bacc *a, bool late) {
  int n = 0;
  for (int b = 0; b < e->n_bands; b++) {
    const oband *ob = &st->band[b];
    if (st->kind == ST_GAP) {
      const size_t px = st->c * sizeof(float);
      if (late) { /* all partial sums, the band's share of the channels */
        int64_t c0, c1;
        band_range((int64_t)st->c, b, e->n_bands, &c0, &c1);
        a[n++] = gap_part_acc(st, -1, b, false);
        n = acc_add(e, a, n, st->dst, b, true, (size_t)c0 * sizeof(float),
                    (size_t)c1 * sizeof(float));
      } else { /* the band's pixels, its partial sums */
        n = acc_add(e, a, n, st->src, b, false, ob->lo * px,
                    (ob->lo + ob->n) * px);
        a[n++] = gap_part_acc(st, b, b, true);
      }
      continue;
    }
    if (st->kind == ST_TILES) { /* rows of the input, rows of the output */
      if (!ob->n) continue;
      const ostep *A = &e->s[st->xa];
      const otile *f = &st->tile[ob->lo], *l = &st->tile[ob->lo + ob->n - 1];
      for (int h = A->pw ? 1 : 0; h < (st->pw ? 1 : 2); h++) {
        const ostep *c = h ? st : A;
        int j = arg_index(c, h ? DNNL_ARG_DST : DNNL_ARG_SRC);
        const oband *x = h ? &f->b : &f->a, *y = h ? &l->b : &l->a;
        n = acc_add(e, a, n, c->args[j].tensor, b, h == 1, x->off[j],
                    y->off[j] + dnnl_memory_desc_get_size(&y->md[j]));
      }
      if (A->pw) { /* a pw pass: its input rows (a: lo, n) */
        size_t row = (size_t)A->pw->iw * (size_t)A->pw->k * sizeof(float);
        n = acc_add(e, a, n, A->src, b, false, f->a.lo * row,
                    (l->a.lo + l->a.n) * row);
      }
      if (st->pw) { /* a pw pass second: its output rows (b: lo, n) */
        size_t row = (size_t)st->pw->ow * (size_t)st->pw->oc * sizeof(float);
        n = acc_add(e, a, n, st->dst, b, true, f->b.lo * row,
                    (l->b.lo + l->b.n) * row);
      }
      continue;
    }
    if (st->kind == ST_CHAN) { /* the band's pixels of every map */
      for (int j = 0; j < st->n_args; j++) {
        size_t px =
            (size_t)(j < st->chan->n_src ? st->chan->src_c[j] : st->chan->c) *
            sizeof(float);
        n = acc_add(e, a, n, st->args[j].tensor, b, j == st->chan->n_src,
                    ob->lo * px, (ob->lo + ob->n) * px);
      }
      continue;
    }
    if (st->kind == ST_PRIM) {
      for (int j = 0; j < st->n_args; j++) {
        int t = st->args[j].tensor;
        bool w = st->args[j].arg == DNNL_ARG_DST;
        if (ob->view[j])
          n = acc_add(e, a, n, t, b, w, ob->off[j],
                      ob->off[j] + dnnl_memory_desc_get_size(&ob->md[j]));
        else
          n = acc_add(e, a, n, t, b, w, 0, e->t[t].bytes);
      }
      continue;
    }
    size_t xs = 4, ys = 4; /* bytes per unit, as ew_span counts them */
    if (st->kind == ST_QDQ) {
      xs = st->qdq.quant ? 4 : 1;
      ys = st->qdq.quant && !st->qdq.fake ? 1 : 4;
    } else if (st->kind == ST_CSCALE) {
      xs = ys = 4 * st->c;
    } else if (st->kind == ST_NHWC) {
      xs = 0; /* planes: the whole input */
      ys = 12;
    } else if (st->kind == ST_STEM) {
      xs = 0;     /* rows of the image around the band's: the whole input */
      ys = st->c; /* 8-bit */
    } else if (st->kind == ST_FC) {
      xs = 0;                       /* every output reads the whole input */
    } else if (st->kind == ST_PW) { /* strided: the whole input */
      xs = st->pw->stride == 1 ? 4 * (size_t)st->pw->k : 0;
      ys = 4 * (size_t)st->pw->oc;
    }
    if (xs)
      n = acc_add(e, a, n, st->src, b, false, ob->lo * xs,
                  (ob->lo + ob->n) * xs);
    else
      n = acc_add(e, a, n, st->src, b, false, 0, e->t[st->src].bytes);
    n = acc_add(e, a, n, st->dst, b, true, ob->lo * ys, (ob->lo + ob->n) * ys);
    if (st->kind == ST_CSCALE)
      n = acc_add(e, a, n, st->aux, b, false, 0, e->t[st->aux].bytes);
  }
  return n;
}

/* Barriers inside runs of banded steps, only where needed: before a step
 * when one of its bands touches bytes that another band wrote since the
 * last barrier, or writes bytes another band read or wrote since then
 * (window rows across a band's edge, bands that split a map differently,
 * a buffer the memory plan reuses).  Needs the memory plan. */
static bool plan_sync(oeng *e) {
  int cap = 0;
  for (int i = 0; i < e->n_s; i++)
    if (e->s[i].band) {
      int k = e->n_bands * (e->s[i].n_args + 3);
      if (k > cap) cap = k;
    }
  int room = 64 * cap;
  bacc *seen = malloc(((size_t)room + 1) * sizeof *seen);
  bacc *cur = malloc(((size_t)cap + 1) * sizeof *cur);
  if (!seen || !cur) {
    free(seen);
    free(cur);
    return false;
  }
  int n_seen = 0;
  for (int i = 0; i < e->n_s; i++) {
    ostep *st = &e->s[i];
    if (!st->band) {
      n_seen = 0; /* the parallel region ends */
      continue;
    }
    int nc = step_accesses(e, st, cur, false);
    bool clash = n_seen + nc > room;
    for (int x = 0; x < nc && !clash; x++)
      for (int y = 0; y < n_seen && !clash; y++) {
        const bacc *p = &cur[x], *q = &seen[y];
        clash = p->band != q->band && p->space == q->space &&
                (p->write || q->write) && p->lo < q->hi && q->lo < p->hi;
      }
    st->sync = clash;
    if (clash) n_seen = 0;
    memcpy(seen + n_seen, cur, (size_t)nc * sizeof *cur);
    n_seen += nc;
    if (st->kind == ST_GAP) /* its own barrier, then its second half */
      n_seen = step_accesses(e, st, seen, true);
  }
  free(seen);
  free(cur);
  return true;
}

typedef struct band_run {
  const oeng *e;
  osess *ss;
  int i0, i1;                  /* steps [i0, i1) */
  dnnl_status_t st[MAX_BANDS]; /* first failure per band */
  int bad[MAX_BANDS];          /* its step */
} band_run;

/* Pass step st of session ss on the session's addresses. */
static ew_job step_job(const oeng *e, const osess *ss, const ostep *st) {
  return (ew_job){st->kind,
                  &st->qdq,
                  ss->ptr[st->dst],
                  ss->ptr[st->src],
                  st->aux >= 0 ? ss->ptr[st->aux] : NULL,
                  st->n,
                  st->c,
                  st->hw,
                  st->c_all,
                  e->vec,
                  ss->gap_part,
                  st->stem,
                  ss->stem_part,
                  e->stem_part};
}

static dnnl_status_t tile_run(const oeng *e, osess *ss, int i, int b,
                              dnnl_stream_t sm);

static void band_exec(band_run *r, int i, int b) {
  const oeng *e = r->e;
  osess *ss = r->ss;
  const ostep *st = &e->s[i];
  const oband *ob = &st->band[b];
  if (st->kind == ST_TILES) {
    dnnl_status_t s = tile_run(e, ss, i, b, ss->bstream[b]);
    if (s != dnnl_success && r->st[b] == dnnl_success) {
      r->st[b] = s;
      r->bad[b] = i;
    }
    return;
  }
  if (st->kind == ST_PRIM) {
    dnnl_status_t s = dnnl_primitive_execute(
        ob->prim, ss->bstream[b], st->n_args + (ob->has_scratch ? 1 : 0),
        ss->bargs[(size_t)i * (size_t)e->n_bands + (size_t)b]);
    if (s != dnnl_success && r->st[b] == dnnl_success) {
      r->st[b] = s;
      r->bad[b] = i;
    }
    return;
  }
  if (st->kind == ST_FC) { /* its share of the outputs */
    if (ob->n)
      fc_span(e, st, ss->ptr[st->dst], ss->ptr[st->src], ob->lo,
              ob->lo + ob->n);
    return;
  }
  if (st->kind == ST_CHAN) {
    chan_part(e, st, ss->ptr, ob->lo, ob->lo + ob->n);
    return;
  }
  if (st->kind == ST_PW) {
    dm__pw_rows(st->pw, ss->ptr[st->dst], ss->ptr[st->src], ob->lo,
                ob->lo + ob->n);
    return;
  }
  ew_job j = step_job(e, ss, st);
  if (st->kind == ST_GAP) { /* first half: the band's partial sums */
    float *part = j.part + (size_t)b * st->c;
    if (ob->n)
      gap_sums(&j, part, (const float *)j.x + ob->lo * st->c, ob->n);
    else
      memset(part, 0, st->c * sizeof *part);
    return;
  }
  ew_span(&j, ob->lo, ob->n, b);
}

/* Second half of a GAP in bands, after a barrier: band b's share of the
 * channels, the bands' partial sums added up. */
static void gap_reduce(const band_run *r, int i, int b) {
  const oeng *e = r->e;
  const ostep *st = &e->s[i];
  int64_t c0, c1;
  band_range((int64_t)st->c, b, e->n_bands, &c0, &c1);
  gap_means(r->ss->ptr[st->dst], r->ss->gap_part, st->c, (size_t)e->n_bands,
            st->hw, (size_t)c0, (size_t)c1);
}

static void band_part(void *arg) {
  band_run *r = arg;
  const oeng *e = r->e;
  int nt = omp_get_num_threads(), t = omp_get_thread_num();
  for (int i = r->i0; i < r->i1; i++) {
    double t0 = t == 0 && r->ss->prof ? now_ms() : 0;
    if (i > r->i0 && e->s[i].sync) GOMP_barrier();
    for (int b = t; b < e->n_bands; b += nt)
      band_exec(r, i, b);
    if (e->s[i].kind == ST_GAP) {
      GOMP_barrier();
      for (int b = t; b < e->n_bands; b += nt)
        gap_reduce(r, i, b);
    }
    if (t == 0 && r->ss->prof) r->ss->prof[i] += now_ms() - t0;
  }
}

/* Memory objects (*mo) and exec args (*ao) of band or tile primitive ob
 * of step st: the session's memory for whole tensors, views at their
 * offsets, the band's weights copy, `map` for arg tj (a tile's map; -1:
 * none), and the scratchpad at scr. */
static dm_err view_args(const oeng *e, const osess *ss, const ostep *st,
                        const oband *ob, int tj, void *map, void *scr,
                        dnnl_memory_t **mo, dnnl_exec_arg_t **ao,
                        dm_errbuf *eb) {
  size_t na = (size_t)st->n_args;
  dnnl_memory_t *m = *mo = calloc(na + 1, sizeof *m);
  dnnl_exec_arg_t *a = *ao = calloc(na + 1, sizeof *a);
  if (!m || !a) return nomem(eb, NULL);
  for (size_t j = 0; j < na; j++) {
    int t = st->args[j].tensor;
    a[j] = (dnnl_exec_arg_t){st->args[j].arg, ss->mem[t]};
    if (!ob->view[j] && (int)j != ob->warg) continue;
    void *p = (int)j == ob->warg ? ob->wdata
              : (int)j == tj     ? map
                                 : (char *)ss->ptr[t] + ob->off[j];
    dnnl_status_t s = dnnl_memory_create(&m[j], &ob->md[j], e->eng, p);
    if (s != dnnl_success) {
      m[j] = NULL;
      return dnnl_fail(eb, NULL, "dnnl_memory_create(band view)", s);
    }
    a[j].memory = m[j];
  }
  if (ob->has_scratch) {
    dnnl_status_t s = dnnl_memory_create(&m[na], &ob->scratch_md, e->eng, scr);
    if (s != dnnl_success) {
      m[na] = NULL;
      return dnnl_fail(eb, NULL, "dnnl_memory_create(band scratchpad)", s);
    }
    a[na] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m[na]};
  }
  return DM_OK;
}

/* Frees what view_args made for a step of na args (m, a may be NULL). */
static void view_args_free(dnnl_memory_t *m, dnnl_exec_arg_t *a, size_t na) {
  for (size_t j = 0; m && j <= na; j++)
    if (m[j]) dnnl_memory_destroy(m[j]);
  free(m);
  free(a);
}

/* Session side: views, exec args and streams of every banded step. */
static dm_err band_session(const oeng *e, osess *ss, dm_errbuf *eb) {
  int nb = e->n_bands;
  dnnl_status_t s;
  for (int b = 0; b < nb; b++)
    if ((s = dnnl_stream_create(&ss->bstream[b], e->eng,
                                dnnl_stream_default_flags)) != dnnl_success) {
      ss->bstream[b] = NULL;
      return dnnl_fail(eb, NULL, "dnnl_stream_create", s);
    }
  size_t n = (size_t)e->n_s * (size_t)nb;
  ss->bmem = calloc(n, sizeof *ss->bmem);
  ss->bargs = calloc(n, sizeof *ss->bargs);
  if (!ss->bmem || !ss->bargs) return nomem(eb, NULL);
  for (int i = 0; i < e->n_s; i++) {
    const ostep *st = &e->s[i];
    if (!st->band || st->kind != ST_PRIM) continue;
    for (int b = 0; b < nb; b++) {
      const oband *ob = &st->band[b];
      size_t k = (size_t)i * (size_t)nb + (size_t)b;
      dm_err rc = view_args(e, ss, st, ob, -1, NULL,
                            (char *)ss->bscratch + (size_t)b * e->band_scratch,
                            &ss->bmem[k], &ss->bargs[k], eb);
      if (rc != DM_OK) return rc;
    }
  }
  return DM_OK;
}

static void band_session_free(const oeng *e, osess *ss) {
  size_t n = (size_t)e->n_s * (size_t)e->n_bands;
  for (size_t k = 0; k < n; k++)
    view_args_free(ss->bmem ? ss->bmem[k] : NULL,
                   ss->bargs ? ss->bargs[k] : NULL,
                   (size_t)e->s[k / (size_t)e->n_bands].n_args);
  free(ss->bmem);
  free(ss->bargs);
  for (int b = 0; b < MAX_BANDS; b++)
    if (ss->bstream[b]) dnnl_stream_destroy(ss->bstream[b]);
}

/* ---------------------------------------------------------------- tiles -- */

/* Inverted-residual blocks (MobileNet-v2, EfficientNet) widen their input
 * with a pointwise conv into the largest map of the block, which only the
 * next conv (depthwise) reads: MobileNet-v2's 16->96 expand at 112x112
 * writes 4.8 MB, more than a core's L2, and the depthwise conv reads it
 * back from L3.  With one thread, plan_tiles runs such a pair tile by
 * tile instead: for rows [r0, r1) of the second conv's output, the first
 * conv computes just the rows of its map those read (a few rows more than
 * r1 - r0 per tile, one or two computed twice) into a small buffer, which
 * the second conv reads while it is still in L2.  The big map is never
 * written.  Both run as oneDNN primitives made for the tile's rows, of the
 * step's own implementation family (view_prim); tiles of one shape share
 * one.  Paired in one process (build/ab, DERMAL_ONEDNN_TILES 0 against 1,
 * session 9's Xeon): the whole mobilenet_v2 run 0.92-0.96 on one thread,
 * 0.96 on two; EfficientNet-B0 (a swish pass on each tile's map between
 * the convs) 0.98-0.99, 1.00.  Maps
 * that fit the L2 (MobileNet-v2's 56x56x144 ones, 1.8 MB) gained nothing
 * and 8-bit maps (the int8 model's 16->96 expand, 1.2 MB) lost 2 %, so
 * neither is tiled.  With bands (2+ threads), each band runs a run of the
 * tiles, on a map of its own.  The pair may also be the other way round
 * (session 15): any conv whose map only a pointwise conv reads, as
 * MobileNet-v2's first depthwise conv (32 channels at 112x112, 1.6 MB)
 * and its 32 -> 16 projection; the first conv then computes each tile's
 * rows from its own input, halo included.  Paired (build/ab on a
 * throwaway switch, 40 blocks, 2-vCPU Zen 4): mobilenet_v2 0.982 at one
 * thread (1.024 in the reverse order) and 0.979 at two, the fp32 default
 * model 0.996 and 0.991, MNASNet 0.999. */

static void tile_free(otile *t, int n) {
  if (!t) return;
  for (int i = 0; i < n; i++) {
    band_free_one(&t[i].a);
    band_free_one(&t[i].b);
  }
  free(t);
}

typedef struct in_buf {
  const oeng *e;
  int buf;
} in_buf;

static bool is_in_buf(void *ctx, int t, int arg) {
  const in_buf *c = ctx;
  (void)arg;
  return t >= 0 && c->e->t[t].buf == c->buf;
}

/* Does any step outside [i0, i1] use a tensor in buffer bf (a value, or
 * a conv's output written in place over its residual addend)? */
static bool buf_used_elsewhere(const oeng *e, int bf, int i0, int i1) {
  in_buf c = {e, bf};
  for (int i = 0; i < e->n_s; i++)
    if ((i < i0 || i > i1) && each_tensor(e, &e->s[i], is_in_buf, &c))
      return true;
  return false;
}

/* Whether conv cd with weights wmd is pointwise: 1x1, stride 1, unpadded. */
static bool conv_pointwise(const dnnl_convolution_desc_t *cd,
                           const dnnl_memory_desc_t *wmd) {
  return wmd->dims[wmd->ndims - 1] == 1 && wmd->dims[wmd->ndims - 2] == 1 &&
         cd->strides[0] == 1 && cd->strides[1] == 1 && !cd->padding[0][0] &&
         !cd->padding[0][1] && !cd->padding[1][0] && !cd->padding[1][1];
}

/* Steps i (a conv), maybe a swish pass on its map (EfficientNet), and the
 * conv that alone reads that map, as tiles, when one of the two is
 * pointwise (1x1, stride 1, unpadded); false: they stay as they are. */
static bool tile_pair(oeng *e, int i, dnnl_stream_t rs) {
  ostep *A = &e->s[i], *S = NULL, *B = &e->s[i + 1];
  if (B->kind == ST_SWISH && i + 2 < e->n_s) {
    S = B;
    B = &e->s[i + 2];
  }
  int last = S ? i + 2 : i + 1;
  const_dnnl_primitive_desc_t pa = NULL, pb = NULL;
  const_dnnl_primitive_attr_t aa = NULL, ab = NULL;
  /* A or B may be a pw pass (pw.c) of stride 1 over one image: its tiles
   * are rows of that image's map */
  bool a_sum = false, apw = A->kind == ST_PW, bpw = B->kind == ST_PW;
  for (int h = 0; h < 2; h++) {
    const ostep *P = h ? B : A;
    if (P->kind == ST_PW &&
        (P->pw->stride != 1 || val(e, e->t[P->dst].value)->dims[0] != 1))
      return false;
  }
  if (apw)
    for (int k = 0; k < A->pw->n_post; k++)
      a_sum |= A->pw->sum[k];
  if ((apw && bpw) || (!apw && !step_pd(A, &pa, &aa, &a_sum)) ||
      (!bpw && !step_pd(B, &pb, &ab, NULL)))
    return false;
  const dnnl_convolution_desc_t *ca = NULL, *cb = NULL;
  if ((!apw && (dnnl_primitive_desc_query(pa, dnnl_query_convolution_d, 0,
                                          &ca) != dnnl_success ||
                !ca)) ||
      (!bpw && (dnnl_primitive_desc_query(pb, dnnl_query_convolution_d, 0,
                                          &cb) != dnnl_success ||
                !cb)))
    return false;
  int ad = apw ? 0 : arg_index(A, DNNL_ARG_DST),
      bs = bpw ? 0 : arg_index(B, DNNL_ARG_SRC);
  int as = apw ? 0 : arg_index(A, DNNL_ARG_SRC),
      bd = bpw ? 0 : arg_index(B, DNNL_ARG_DST);
  if (ad < 0 || bs < 0 || as < 0 || bd < 0) return false;
  int tx = apw ? A->src : A->args[as].tensor;
  int tbs = bpw ? B->src : B->args[bs].tensor;
  int tbd = bpw ? B->dst : B->args[bd].tensor;
  int ty = apw ? A->dst : A->args[ad].tensor, t2 = ty; /* the map; swish */
  if (S) {
    if (S->src != ty || !arg_tensor_ok(e, S->dst) ||
        e->b[e->t[S->dst].buf].kind != BUF_ARENA ||
        val(e, e->t[S->dst].value)->is_output ||
        buf_used_elsewhere(e, e->t[S->dst].buf, i, last))
      return false;
    t2 = S->dst;
  }
  if (tbs != t2 || !arg_tensor_ok(e, ty) || !arg_tensor_ok(e, tx) ||
      !arg_tensor_ok(e, tbd) || e->b[e->t[ty].buf].kind != BUF_ARENA)
    return false;
  /* the map: nobody else's; the second conv's output: not where the
   * first conv's input lies (a residual sum written in place over it
   * would overwrite rows later tiles read); the first: no sum (its
   * addend is not in the tile's map) */
  if (val(e, e->t[ty].value)->is_output ||
      buf_used_elsewhere(e, e->t[ty].buf, i, last) ||
      e->t[tbd].buf == e->t[tx].buf || a_sum)
    return false;
  const dnnl_memory_desc_t *wa =
      apw ? NULL : dnnl_primitive_desc_query_md(pa, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *wb =
      bpw ? NULL : dnnl_primitive_desc_query_md(pb, dnnl_query_weights_md, 0);
  int64_t c, h, w, oc, oh, ow;
  if ((!wa && !apw) || (!wb && !bpw) || !md_nhwc1(&e->t[ty].md, &c, &h, &w) ||
      !md_nhwc1(&e->t[tbd].md, &oc, &oh, &ow))
    return false;
  size_t row = (size_t)(w * c) * dnnl_data_type_size(e->t[ty].md.data_type);
  if ((!apw && !bpw && !conv_pointwise(ca, wa) && !conv_pointwise(cb, wb)) ||
      e->t[ty].md.data_type != dnnl_f32 || row * (size_t)h < e->tile_min)
    return false;
  /* output rows per tile: the most whose map rows fit the budget */
  int64_t s = bpw ? 1 : cb->strides[0];
  int64_t kext =
      bpw ? 1 : (wb->dims[wb->ndims - 2] - 1) * (cb->dilates[0] + 1) + 1;
  int64_t zr = ((int64_t)(e->tile_kb * 1024 / row) - kext) / s + 1;
  if (zr < 1) zr = 1;
  for (int64_t d = zr; d > zr / 2; d--) /* equal tiles: fewer shapes, */
    if (oh % d == 0) {                  /* fewer primitives to make at load */
      zr = d;
      break;
    }
  int nt = (int)((oh + zr - 1) / zr);
  if (nt < 2) return false;
  otile *t = calloc((size_t)nt, sizeof *t);
  if (!t) return false;
  size_t buf = 0;
  for (int k = 0; k < nt; k++) {
    vsel vb = {.band = -1, .r0 = k * zr, .r1 = (k + 1) * zr, .src_tile = true};
    if (vb.r1 > oh) vb.r1 = oh;
    const otile *p = k ? &t[k - 1] : NULL; /* middle tiles share theirs */
    if (bpw) { /* the pass's rows, the same rows of the map */
      vb.a = vb.r0;
      vb.z = vb.r1;
      t[k].b.lo = (size_t)vb.r0;
      t[k].b.n = (size_t)(vb.r1 - vb.r0);
    } else if (!view_prim(e, B, pb, ab, &vb, &t[k].b, rs, &e->tile_scratch,
                          p ? &p->b : NULL)) {
      goto no;
    }
    vsel va = {.band = -1, .r0 = vb.a, .r1 = vb.z, .dst_tile = true};
    if (apw) { /* the pass's rows */
      t[k].a.lo = (size_t)vb.a;
      t[k].a.n = (size_t)(vb.z - vb.a);
    } else if (!view_prim(e, A, pa, aa, &va, &t[k].a, rs, &e->tile_scratch,
                          p ? &p->a : NULL)) {
      goto no;
    }
    size_t need = (size_t)(vb.z - vb.a) * row;
    t[k].n = (size_t)(vb.z - vb.a) * (size_t)(w * c);
    if (need > buf) buf = need;
  }
  if (buf > e->tile_buf) e->tile_buf = buf;
  B->kind = ST_TILES;
  B->tile = t;
  B->n_tiles = nt;
  B->xa = i;
  B->tile_swish = S != NULL;
  B->tile0 = e->n_tile_all;
  e->n_tile_all += nt;
  A->kind = ST_SKIP;
  if (S) S->kind = ST_SKIP;
  if (e->verbose) {
    int own = 0, prims = 0;
    for (int k = 0; k < nt; k++) {
      prims += (!apw && !t[k].a.shared) + (!bpw && !t[k].b.shared);
      own += (!apw && !t[k].a.shared && t[k].a.warg >= 0) +
             (!bpw && !t[k].b.shared && t[k].b.warg >= 0);
    }
    fprintf(stderr,
            "onednn: %s%s + %s in %d tiles of %lld rows (%d primitives, %d "
            "weight copies)\n",
            nname(&e->g->nodes[A->node]), S ? " + swish" : "",
            nname(&e->g->nodes[B->node]), nt, (long long)zr, prims, own);
  }
  return true;
no:
  tile_free(t, nt);
  return false;
}

/* With one thread or bands (and DERMAL_ONEDNN_TILES not 0): every
 * conv whose float map is larger than the L2 (or
 * DERMAL_ONEDNN_TILE_MIN_KB, and at least twice the tile budget,
 * DERMAL_ONEDNN_TILE_KB, default 512 KiB) and read only by the conv right
 * after it (or through a swish pass), one of the two pointwise, runs in
 * tiles with that conv.  Before the memory plan, so the map gets no
 * bytes. */
static void plan_tiles(oeng *e) {
  if (!e->tiles || (e->threads > 1 && !e->n_bands)) return;
  dnnl_stream_t rs = NULL; /* for weights a tile copies (band_weights) */
  if (dnnl_stream_create(&rs, e->eng, dnnl_stream_default_flags) !=
      dnnl_success)
    return;
  omp_set_num_threads(1); /* with bands, each band runs its tiles */
  for (int i = 0; i + 1 < e->n_s; i++)
    if (tile_pair(e, i, rs)) i += e->s[i + 1].kind == ST_SKIP ? 2 : 1;
  omp_set_num_threads(e->threads);
  dnnl_stream_destroy(rs);
}

/* Bands of TILES step st: band b runs a run of its tiles (lo, n), on a
 * tile map of its own.  NULL when there are fewer tiles than bands. */
static oband *tile_bands(const oeng *e, const ostep *st) {
  int nb = e->n_bands;
  if (st->n_tiles < nb) return NULL;
  oband *ob = calloc((size_t)nb, sizeof *ob);
  for (int b = 0; ob && b < nb; b++) {
    int64_t lo, hi;
    band_range(st->n_tiles, b, nb, &lo, &hi);
    ob[b].lo = (size_t)lo;
    ob[b].n = (size_t)(hi - lo);
  }
  return ob;
}

/* The band whose run of tiles holds tile k of TILES step st (0 unbanded). */
static int tile_band(const oeng *e, const ostep *st, int k) {
  for (int b = 0; st->band && b < e->n_bands; b++)
    if ((size_t)k >= st->band[b].lo &&
        (size_t)k < st->band[b].lo + st->band[b].n)
      return b;
  return 0;
}

/* Band b's tile map (b 0 unbanded). */
static char *tile_map(const oeng *e, const osess *ss, size_t b) {
  return (char *)ss->tbuf + b * align_up(e->tile_buf);
}

/* Session side: the memory objects and exec args of every tile. */
static dm_err tile_session(const oeng *e, osess *ss, dm_errbuf *eb) {
  size_t n = 2 * (size_t)e->n_tile_all;
  ss->tmem = calloc(n, sizeof *ss->tmem);
  ss->targs = calloc(n, sizeof *ss->targs);
  if (!ss->tmem || !ss->targs) return nomem(eb, NULL);
  size_t nb = e->n_bands > 0 ? (size_t)e->n_bands : 1;
  if (!(ss->tbuf = aligned_alloc(ALIGN, nb * align_up(e->tile_buf))) ||
      (e->tile_scratch &&
       !(ss->tscratch = aligned_alloc(ALIGN, nb * align_up(e->tile_scratch)))))
    return nomem(eb, NULL);
  for (int i = 0; i < e->n_s; i++) {
    const ostep *B = &e->s[i];
    if (B->kind != ST_TILES) continue;
    for (int k = 0; k < B->n_tiles; k++)
      for (int h = 0; h < 2; h++) {
        const otile *t = &B->tile[k];
        const ostep *st = h ? B : &e->s[B->xa];
        const oband *ob = h ? &t->b : &t->a;
        int tj = arg_index(st, h ? DNNL_ARG_SRC : DNNL_ARG_DST);
        size_t bk = (size_t)tile_band(e, B, k);
        char *map = tile_map(e, ss, bk);
        char *scr = ss->tscratch
                        ? (char *)ss->tscratch + bk * align_up(e->tile_scratch)
                        : NULL;
        size_t q = 2 * (size_t)(B->tile0 + k) + (size_t)h;
        dm_err rc = view_args(e, ss, st, ob, tj, map, scr, &ss->tmem[q],
                              &ss->targs[q], eb);
        if (rc != DM_OK) return rc;
      }
  }
  return DM_OK;
}

static void tile_session_free(const oeng *e, osess *ss) {
  for (int i = 0; i < e->n_s; i++) {
    const ostep *B = &e->s[i];
    if (B->kind != ST_TILES) continue;
    for (int k = 0; k < B->n_tiles; k++)
      for (int h = 0; h < 2; h++) {
        size_t q = 2 * (size_t)(B->tile0 + k) + (size_t)h;
        view_args_free(ss->tmem ? ss->tmem[q] : NULL,
                       ss->targs ? ss->targs[q] : NULL,
                       (size_t)(h ? B : &e->s[B->xa])->n_args);
      }
  }
  free(ss->tmem);
  free(ss->targs);
  free(ss->tbuf);
  free(ss->tscratch);
}

/* TILES step i: the tiles of band b (all of them unbanded), each tile's
 * two convs in turn, on stream sm; the first failure. */
static dnnl_status_t tile_run(const oeng *e, osess *ss, int i, int b,
                              dnnl_stream_t sm) {
  const ostep *B = &e->s[i];
  const ostep *A = &e->s[B->xa];
  int k0 = B->band ? (int)B->band[b].lo : 0;
  int k1 = B->band ? k0 + (int)B->band[b].n : B->n_tiles;
  float *map = (float *)tile_map(e, ss, (size_t)b);
  for (int k = k0; k < k1; k++) {
    const otile *t = &B->tile[k];
    size_t q = 2 * (size_t)(B->tile0 + k);
    dnnl_status_t s = dnnl_success;
    if (A->pw) { /* map rows [lo, lo + n) from the same input rows */
      size_t px = (size_t)A->pw->iw; /* = ow: stride 1 */
      dm__pw_rows(A->pw, map,
                  (const float *)ss->ptr[A->src] +
                      t->a.lo * px * (size_t)A->pw->k,
                  0, t->a.n * px);
    } else {
      s = dnnl_primitive_execute(
          t->a.prim, sm, A->n_args + (t->a.has_scratch ? 1 : 0), ss->targs[q]);
    }
    if (s == dnnl_success && B->tile_swish) swish_span(map, map, t->n, e->vec);
    if (s == dnnl_success && B->pw) { /* rows [lo, lo + n) from the map's */
      size_t px = (size_t)B->pw->ow;
      dm__pw_rows(B->pw,
                  (float *)ss->ptr[B->dst] + t->b.lo * px * (size_t)B->pw->oc,
                  map, 0, t->b.n * px);
    } else if (s == dnnl_success) {
      s = dnnl_primitive_execute(t->b.prim, sm,
                                 B->n_args + (t->b.has_scratch ? 1 : 0),
                                 ss->targs[q + 1]);
    }
    if (s != dnnl_success) return s;
  }
  return dnnl_success;
}

/* -------------------------------------------------------------- backend -- */

static void onednn_release(void *state) {
  oeng *e = state;
  if (!e) return;
  for (int i = 0; i < e->n_s; i++) {
    if (e->s[i].prim) dnnl_primitive_destroy(e->s[i].prim);
    if (e->s[i].pd) dnnl_primitive_desc_destroy(e->s[i].pd);
    free(e->s[i].args);
    free(e->s[i].ref_in);
    free(e->s[i].ref_out);
    band_free(e->s[i].band, e->n_bands);
    tile_free(e->s[i].tile, e->s[i].n_tiles);
  }
  for (int i = 0; i < e->n_b; i++)
    if (e->b[i].own) free((void *)e->b[i].konst);
  big_unmap(&e->wmem);
  if (e->eng) dnnl_engine_destroy(e->eng);
  free(e->jobs);
  free(e->s);
  free(e->b);
  free(e->t);
  free(e->val_t);
  free(e->last_use);
  free(e->n_uses);
  free(e->done);
  free(e->swish);
  free(e);
}

/* A positive count of KiB from environment variable `name`, else dflt. */
static size_t env_kib(const char *name, size_t dflt) {
  const char *v = getenv(name);
  char *end = NULL;
  long k = v ? strtol(v, &end, 10) : 0;
  return v && end != v && *end == '\0' && k > 0 && k < (1L << 30) ? (size_t)k
                                                                  : dflt;
}

static dm_err onednn_prepare(const dm_graph *g, const dm_engine_opts *o,
                             void **state, dm_errbuf *eb) {
  dm_err rc = DM_NOMEM;
  int threads = o && o->threads > 0 ? o->threads : 1;
  int prev_threads = omp_get_max_threads();
  omp_set_num_threads(threads);
  oeng *e = calloc(1, sizeof *e);
  if (!e) goto fail;
  e->g = g;
  e->threads = threads;
#if defined(__x86_64__)
  e->vec = pick_vec();
#endif
  const char *vb = getenv("DERMAL_ONEDNN_VERBOSE");
  e->verbose = vb && vb[0] && vb[0] != '0';
  const char *pf = getenv("DERMAL_ONEDNN_PROFILE");
  e->profile = pf && pf[0] && pf[0] != '0';
  {
    /* Layout policy.  oneDNN 2.6 on AVX-512 has two fp32 conv families:
     * brgemm kernels on NHWC (what format_tag_any picks; the fastest for
     * 1x1, depthwise and strided convs here) and the older blocked nChw16c
     * kernels, including Winograd, which runs 3x3 stride-1 convs about
     * twice as fast.  When such convs carry a good share of the FLOPs
     * (ResNets, VGG) they run Winograd on nChw16c, everything else stays
     * NHWC, and reorders go between (measured on ResNet-50: 44 -> 38 ms;
     * all-blocked was 42 ms).  DERMAL_ONEDNN_LAYOUT=any|blocked|wino|mixed
     * overrides, for benchmarks. */
    const char *dw = getenv("DERMAL_ONEDNN_DW");
    e->dw_pref = !(dw && !strcmp(dw, "onednn"));
    const char *wp = getenv("DERMAL_ONEDNN_WINO");
    e->wino_pref = !(wp && !strcmp(wp, "onednn"));
    const char *pj = getenv("DERMAL_ONEDNN_PROJ");
    e->proj_pref = !(pj && pj[0] == '0');
    const char *bf = getenv("DERMAL_ONEDNN_BAND_FC");
    e->band_fc = !(bf && bf[0] == '0');
    const char *sm = getenv("DERMAL_ONEDNN_STEM");
    e->stem = e->vec == VEC_AVX512 && !(sm && sm[0] == '0');
    /* DERMAL_ONEDNN_PW=0: never; =1: on any AVX-512 CPU (tests) */
    const char *pw = getenv("DERMAL_ONEDNN_PW");
    e->pw = e->vec == VEC_AVX512 && (pw ? pw[0] == '1' : dm__pw_cpu());
    const char *tl = getenv("DERMAL_ONEDNN_TILES");
    e->tiles = !(tl && tl[0] == '0');
    e->tile_kb = env_kib("DERMAL_ONEDNN_TILE_KB", 512);
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE); /* 0 or -1 when unknown */
    e->tile_min = 1024 * env_kib("DERMAL_ONEDNN_TILE_MIN_KB",
                                 l2 > 0 ? (size_t)l2 / 1024 : 2048);
    if (e->tile_min < 2 * e->tile_kb * 1024)
      e->tile_min = 2 * e->tile_kb * 1024;
    const char *ax = getenv("DERMAL_ONEDNN_AMX");
    e->amx = ax && (ax[0] == '0' || ax[0] == '1') ? ax[0] - '0' : 2;
    e->wino_max = 256 * 256;
    const char *wm = getenv("DERMAL_ONEDNN_WINO_MAX");
    if (wm) e->wino_max = atoll(wm);
    double all = 0, w3 = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      double f = conv_flops(e, &g->nodes[i]);
      all += f;
      if (conv_wino_ok(e, &g->nodes[i])) w3 += f;
    }
    e->wino = all > 0 && w3 >= 0.25 * all;
    /* Graphs whose Concats along the channels write more bytes than their
     * convs do (DenseNet: each layer concatenates every earlier map of
     * its block) keep the Winograd convs' nChw16c for every conv
     * (follow): a Concat of whole 16-channel blocks is then one run of
     * bytes per input (map_concat_copy), where on NHWC oneDNN's concat
     * interleaves every pixel and reorders go around it.  DenseNet-121,
     * session 15: 2.9 ms of concat and 0.9 ms of reorders per run on one
     * thread became 1.3 ms of copies. */
    double cat_b = 0, conv_b = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      const dm_node *n = &g->nodes[i];
      if (n->n_out < 1 || n->out[0] < 0) continue;
      const dm_value *Y = &g->values[n->out[0]];
      if (n->op == DM_OP_CONV) conv_b += (double)Y->nbytes;
      if (n->op == DM_OP_CONCAT && Y->rank == 4 && n->p.concat.axis == 1)
        cat_b += (double)Y->nbytes;
    }
    e->follow = e->wino && cat_b > conv_b;
    const char *lay = getenv("DERMAL_ONEDNN_LAYOUT");
    if (lay && !strcmp(lay, "any")) e->wino = e->follow = false;
    if (lay && !strcmp(lay, "blocked")) {
      e->follow = true;
      e->wino = false;
    }
    if (lay && !strcmp(lay, "wino")) e->wino = e->follow = true;
    if (lay && !strcmp(lay, "mixed")) {
      e->wino = true;
      e->follow = false;
    }
  }
  size_t nv = (size_t)g->n_values + 1, nn = (size_t)g->n_nodes + 1;
  e->val_t = malloc(nv * sizeof *e->val_t);
  e->last_use = calloc(nv, sizeof *e->last_use);
  e->n_uses = calloc(nv, sizeof *e->n_uses);
  e->done = calloc(nn, 1);
  e->swish = calloc(nn, 1);
  if (!e->val_t || !e->last_use || !e->n_uses || !e->done || !e->swish)
    goto fail;
  for (int v = 0; v < g->n_values; v++) {
    e->val_t[v] = -1;
    e->last_use[v] = -1;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const dm_node *n = &g->nodes[i];
    for (int j = 0; j < n->n_in; j++)
      if (n->in[j] >= 0) {
        e->last_use[n->in[j]] = i;
        e->n_uses[n->in[j]]++;
      }
  }
  for (int k = 0; k < g->n_outputs; k++) {
    e->last_use[g->outputs[k]] = g->n_nodes;
    e->n_uses[g->outputs[k]]++;
  }

  dnnl_status_t s;
  double t_eng = now_ms();
  if ((s = dnnl_engine_create(&e->eng, dnnl_cpu, 0)) != dnnl_success) {
    e->eng = NULL;
    rc = dnnl_fail(eb, NULL, "dnnl_engine_create", s);
    goto fail;
  }
  if (o && o->precision != DM_PRECISION_FP32)
    e->bf16 = bf16_native(e->eng, e->verbose);
  {
    /* Load jobs run on this thread by default: on the 2-vCPU VMs we measure
     * on, two workers were no faster (JIT mprotect and page faults
     * serialise on the address space).  DERMAL_ONEDNN_LOAD_THREADS=N tries
     * N workers. */
    const char *lt = getenv("DERMAL_ONEDNN_LOAD_THREADS");
    e->workers = lt ? (int)strtol(lt, NULL, 10) : 1; /* clamped below */
    if (e->workers < 1) e->workers = 1;
    if (e->workers > 8) e->workers = 8;
  }
  { /* virtual reservation for reordered weights: blocked layouts pad, so
       twice the constants plus slack; only touched pages become resident */
    size_t cb = 0;
    for (int v = 0; v < g->n_values; v++)
      if (g->values[v].kind == DM_VAL_CONST) cb += g->values[v].nbytes;
    if (!big_map(&e->wmem, 2 * cb + (16u << 20))) goto fail;
  }
  for (int k = 0; k < g->n_inputs; k++) {
    int v = g->inputs[k];
    int b = new_buf(e, BUF_INPUT, k, NULL, false);
    if (b < 0) goto fail;
    dnnl_memory_desc_t md;
    bool f = is_f32(e, v);
    if (f && md_plain(e, v, &md) != dnnl_success) {
      rc = dm_errf(eb, DM_BACKEND, "onednn: input '%s': bad shape",
                   val(e, v)->name ? val(e, v)->name : "?");
      goto fail;
    }
    if (new_tensor(e, v, b, f ? &md : NULL, true) < 0) goto fail;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    if (e->done[i]) continue;
    double t0 = e->verbose ? now_ms() : 0;
    if ((rc = map_node(e, i, eb)) != DM_OK) goto fail;
    if (e->verbose)
      fprintf(stderr, "onednn: %-28s %.3f ms\n", nname(&g->nodes[i]),
              now_ms() - t0);
  }
  for (int k = 0; k < g->n_outputs; k++) {
    int v = g->outputs[k], t0;
    if ((rc = primary(e, v, &t0, eb)) != DM_OK) goto fail;
    int b = new_buf(e, BUF_OUTPUT, k, NULL, false);
    if (b < 0) goto fail;
    rc = DM_NOMEM;
    if (e->t[t0].has_md && !e->t[t0].plain) {
      dnnl_memory_desc_t md;
      if (md_plain(e, v, &md) != dnnl_success) goto fail;
      int t = new_tensor(e, v, b, &md, false);
      if (t < 0) goto fail;
      if ((rc = emit_reorder(e, -1, t0, t, eb)) != DM_OK) goto fail;
    } else {
      int t = new_tensor(e, v, b, NULL, false);
      if (t < 0) goto fail;
      ostep st;
      memset(&st, 0, sizeof st);
      st.kind = ST_COPY;
      st.node = -1;
      st.src = t0;
      st.dst = t;
      st.bytes = val(e, v)->nbytes;
      if ((rc = add_step(e, &st, eb)) != DM_OK) goto fail;
    }
  }
  if ((rc = run_jobs(e, eb)) != DM_OK) goto fail;
  { /* bands: see plan_bands; known before the memory plan */
    const char *bv = getenv("DERMAL_ONEDNN_BANDS");
    if (threads > 1 && !(bv && bv[0] == '0'))
      e->n_bands = threads < MAX_BANDS ? threads : MAX_BANDS;
  }
  double t_tiles = now_ms();
  plan_tiles(e);
  if (e->verbose && e->n_tile_all)
    fprintf(stderr, "onednn: tiles planned in %.2f ms\n", now_ms() - t_tiles);
  if ((rc = plan_memory(e, eb)) != DM_OK) goto fail;
  plan_bands(e);
  if (e->verbose)
    fprintf(stderr,
            "onednn: %d steps (%d primitives, %d reorders, %d ref), "
            "arena %zu B, scratchpad %zu B, weights %zu B, prepare %.1f ms\n",
            e->n_s, e->n_prim, e->n_reorder, e->n_ref, e->arena_bytes,
            e->scratch_bytes, e->wmem.used, now_ms() - t_eng);
  omp_set_num_threads(prev_threads);
  *state = e;
  return DM_OK;
fail:
  if (rc == DM_NOMEM) nomem(eb, NULL);
  onednn_release(e);
  omp_set_num_threads(prev_threads);
  return rc;
}

/* DERMAL_ONEDNN_PROFILE: each step's mean time over the session's runs,
 * on stderr (what it is, the node, ms). */
static void print_profile(const osess *ss) {
  const oeng *e = ss->e;
  double total = 0;
  for (int i = 0; i < e->n_s; i++)
    total += ss->prof[i];
  for (int i = 0; i < e->n_s; i++) {
    const ostep *st = &e->s[i];
    const char *what = step_name[st->kind];
    if (st->kind == ST_PRIM && st->prim) {
      const_dnnl_primitive_desc_t pd = NULL;
      if (dnnl_primitive_get_primitive_desc(st->prim, &pd) == dnnl_success)
        what = pd_impl(pd);
    }
    fprintf(stderr, "profile: %3d %-26s %-40s %8.4f ms\n", i, what,
            st->node >= 0 ? nname(&e->g->nodes[st->node]) : "(output)",
            ss->prof[i] / ss->runs);
  }
  fprintf(stderr, "profile: %d steps, %.4f ms per run (%d runs)\n", e->n_s,
          total / ss->runs, ss->runs);
}

static void onednn_session_free(void *sess) {
  osess *ss = sess;
  if (!ss) return;
  const oeng *e = ss->e;
  if (ss->prof && ss->runs) print_profile(ss);
  free(ss->prof);
  free(ss->gap_part);
  free(ss->stem_part);
  if (ss->args)
    for (int i = 0; i < e->n_s; i++)
      free(ss->args[i]);
  if (ss->smem)
    for (int i = 0; i < e->n_s; i++)
      if (ss->smem[i]) dnnl_memory_destroy(ss->smem[i]);
  if (ss->mem)
    for (int i = 0; i < e->n_t; i++)
      if (ss->mem[i]) dnnl_memory_destroy(ss->mem[i]);
  if (ss->stream) dnnl_stream_destroy(ss->stream);
  band_session_free(e, ss);
  tile_session_free(e, ss);
  free(ss->args);
  free(ss->smem);
  free(ss->mem);
  free(ss->ptr);
  free(ss->ref_in);
  free(ss->ref_out);
  big_unmap(&ss->mem_);
  free(ss);
}

static dm_err onednn_session_new(void *state, void **sess, dm_errbuf *eb) {
  const oeng *e = state;
  dm_err rc = DM_NOMEM;
  dnnl_status_t s;
  osess *ss = calloc(1, sizeof *ss);
  if (!ss) goto fail;
  ss->e = e;
  size_t arena = (e->arena_bytes + 4095) & ~(size_t)4095;
  size_t scratch = align_up(e->scratch_bytes);
  if (!big_map(&ss->mem_,
               arena + scratch + (size_t)e->n_bands * e->band_scratch + 4096))
    goto fail;
  ss->arena = ss->mem_.base;
  ss->scratch = ss->mem_.base + arena;
  ss->bscratch = ss->mem_.base + arena + scratch;
  ss->mem = calloc((size_t)e->n_t + 1, sizeof *ss->mem);
  ss->ptr = calloc((size_t)e->n_t + 1, sizeof *ss->ptr);
  ss->args = calloc((size_t)e->n_s + 1, sizeof *ss->args);
  ss->smem = calloc((size_t)e->n_s + 1, sizeof *ss->smem);
  ss->ref_in = calloc((size_t)e->max_io + 1, sizeof *ss->ref_in);
  ss->ref_out = calloc((size_t)e->max_io + 1, sizeof *ss->ref_out);
  if (e->profile && !(ss->prof = calloc((size_t)e->n_s + 1, sizeof *ss->prof)))
    goto fail;
  if (e->gap_part &&
      !(ss->gap_part = malloc(e->gap_part * sizeof *ss->gap_part)))
    goto fail;
  if (e->stem_part &&
      !(ss->stem_part = malloc((size_t)e->threads * e->stem_part)))
    goto fail;
  if (!ss->mem || !ss->ptr || !ss->args || !ss->smem || !ss->ref_in ||
      !ss->ref_out)
    goto fail;
  if ((s = dnnl_stream_create(&ss->stream, e->eng,
                              dnnl_stream_default_flags)) != dnnl_success) {
    ss->stream = NULL;
    rc = dnnl_fail(eb, NULL, "dnnl_stream_create", s);
    goto fail;
  }
  for (int i = 0; i < e->n_t; i++) {
    const otensor *t = &e->t[i];
    const obuf *b = &e->b[t->buf];
    void *p = NULL;
    if (b->kind == BUF_ARENA)
      p = (char *)ss->arena + b->offset;
    else if (b->kind == BUF_CONST)
      p = (void *)b->konst;
    ss->ptr[i] = p;
    if (t->has_md) {
      s = dnnl_memory_create(&ss->mem[i], &t->md, e->eng, p);
      if (s != dnnl_success) {
        ss->mem[i] = NULL;
        rc = dnnl_fail(eb, NULL, "dnnl_memory_create", s);
        goto fail;
      }
    }
  }
  for (int i = 0; i < e->n_s; i++) {
    const ostep *st = &e->s[i];
    if (st->kind != ST_PRIM) continue;
    ss->args[i] = malloc(((size_t)st->n_args + 1) * sizeof **ss->args);
    if (!ss->args[i]) goto fail;
    for (int j = 0; j < st->n_args; j++)
      ss->args[i][j] =
          (dnnl_exec_arg_t){st->args[j].arg, ss->mem[st->args[j].tensor]};
    if (st->has_scratch) {
      s = dnnl_memory_create(&ss->smem[i], &st->scratch_md, e->eng,
                             ss->scratch);
      if (s != dnnl_success) {
        ss->smem[i] = NULL;
        rc = dnnl_fail(eb, NULL, "dnnl_memory_create(scratchpad)", s);
        goto fail;
      }
      ss->args[i][st->n_args] =
          (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, ss->smem[i]};
    }
  }
  if (e->n_banded && (rc = band_session(e, ss, eb)) != DM_OK) goto fail;
  if (e->n_tile_all && (rc = tile_session(e, ss, eb)) != DM_OK) goto fail;
  *sess = ss;
  return DM_OK;
fail:
  if (rc == DM_NOMEM) nomem(eb, NULL);
  onednn_session_free(ss);
  return rc;
}

static dm_err onednn_run(void *state, void *sess, const void *const *inputs,
                         void *const *outputs, dm_errbuf *eb) {
  const oeng *e = state;
  osess *ss = sess;
  const dm_graph *g = e->g;
  dm_err rc = DM_OK;
  int prev_threads = omp_get_max_threads();
  if (prev_threads != e->threads) omp_set_num_threads(e->threads);
  for (int i = 0; i < e->n_t; i++) {
    const obuf *b = &e->b[e->t[i].buf];
    void *p;
    if (b->kind == BUF_INPUT)
      p = (void *)inputs[b->ext];
    else if (b->kind == BUF_OUTPUT)
      p = outputs[b->ext];
    else
      continue;
    if (ss->ptr[i] == p) continue; /* same caller buffer as last run */
    if (ss->mem[i]) {
      dnnl_status_t s = dnnl_memory_set_data_handle(ss->mem[i], p);
      if (s != dnnl_success) {
        rc = dnnl_fail(eb, NULL, "dnnl_memory_set_data_handle", s);
        goto out;
      }
    }
    ss->ptr[i] = p;
  }
  if (ss->prof) ss->runs++;
  for (int i = 0; i < e->n_s; i++) {
    const ostep *st = &e->s[i];
    if (st->band) { /* this step and the banded ones after it */
      band_run r = {.e = e, .ss = ss, .i0 = i, .i1 = i + 1};
      while (r.i1 < e->n_s && e->s[r.i1].band)
        r.i1++;
      GOMP_parallel(band_part, &r, (unsigned)e->n_bands, 0);
      for (int b = 0; b < e->n_bands; b++)
        if (r.st[b] != dnnl_success) {
          int nd = e->s[r.bad[b]].node;
          rc = dnnl_fail(eb, nd >= 0 ? &g->nodes[nd] : NULL,
                         "dnnl_primitive_execute", r.st[b]);
          goto out;
        }
      i = r.i1 - 1;
      continue;
    }
    if (st->kind == ST_SKIP) continue;
    double t0 = ss->prof ? now_ms() : 0;
    if (st->kind == ST_TILES) {
      dnnl_status_t s = tile_run(e, ss, i, 0, ss->stream);
      if (s != dnnl_success) {
        rc = dnnl_fail(eb, &g->nodes[st->node], "dnnl_primitive_execute", s);
        goto out;
      }
    } else if (st->kind == ST_PRIM) {
      dnnl_status_t s = dnnl_primitive_execute(
          st->prim, ss->stream, st->n_args + (st->has_scratch ? 1 : 0),
          ss->args[i]);
      if (s != dnnl_success) {
        rc = dnnl_fail(eb, st->node >= 0 ? &g->nodes[st->node] : NULL,
                       "dnnl_primitive_execute", s);
        goto out;
      }
    } else if (st->kind == ST_REF) {
      const dm_node *n = &g->nodes[st->node];
      for (int j = 0; j < n->n_in; j++)
        ss->ref_in[j] = st->ref_in[j] >= 0 ? ss->ptr[st->ref_in[j]] : NULL;
      for (int j = 0; j < n->n_out; j++)
        ss->ref_out[j] = st->ref_out[j] >= 0 ? ss->ptr[st->ref_out[j]] : NULL;
      rc = dm__ref_node(g, n, ss->ref_in, ss->ref_out, eb);
      if (rc != DM_OK) goto out;
    } else if (st->kind == ST_FC) {
      fc_run(e, st, ss->ptr[st->dst], ss->ptr[st->src]);
    } else if (st->kind == ST_PW) {
      pw_run(e, st, ss->ptr[st->dst], ss->ptr[st->src]);
    } else if (st->kind == ST_CONCAT || st->kind == ST_CHAN) {
      span_job j = {e, st, ss->ptr}; /* threads from 256 KiB */
      if (e->threads > 1 && st->bytes >= ((size_t)256 << 10))
        GOMP_parallel(span_thread, &j, (unsigned)e->threads, 0);
      else
        span_part(&j, 0, 1);
    } else if (st->kind != ST_COPY) {
      ew_job j = step_job(e, ss, st);
      ew_run(&j, e->threads);
    } else if (st->bytes) {
      memcpy(ss->ptr[st->dst], ss->ptr[st->src], st->bytes);
    }
    if (ss->prof) ss->prof[i] += now_ms() - t0;
  }
  {
    dnnl_status_t s = dnnl_stream_wait(ss->stream);
    if (s != dnnl_success) rc = dnnl_fail(eb, NULL, "dnnl_stream_wait", s);
  }
out:
  if (prev_threads != e->threads) omp_set_num_threads(prev_threads);
  return rc;
}

static const char *onednn_precision(void *state) {
  const oeng *e = state;
  return e && e->bf16 ? "bf16" : "fp32";
}

/* ------------------------------------------------- Grad-CAM backward -- */

/* Backward operators for the section between an early Grad-CAM target and
 * the scores (internal.h dm_grad_ops; grad.c runs everything else in C):
 *   Conv:    convolution backward data (no bias, no post-ops: grad.c has
 *            already taken dz through them), and a forward convolution with
 *            bias but without post-ops, run only when grad.c must recompute
 *            pre-activations (HardSwish, Swish, ...);
 *   pooling: pooling backward; max pooling first re-runs a forward_training
 *            pooling on the kept input to get oneDNN's workspace (argmax).
 * Every buffer is plain NCHW (weights OIHW/GOIHW, aligned by engine.c):
 * these maps are small (the section lies after the target), and plain
 * layouts keep grad.c's interface free of oneDNN.  Primitives are created
 * once per engine; each call creates its own stream, memory objects and
 * scratchpad, so sessions may run one op at once. */

typedef struct ograd {
  const oeng *e;
  int node;
  dnnl_primitive_t bwd; /* backward data / pooling backward */
  dnnl_primitive_t fwd; /* conv forward, or max pooling forward_training */
  dnnl_memory_desc_t x_md, y_md, w_md, b_md, ws_md, bwd_scr, fwd_scr;
  const void *w, *b; /* conv weights and bias (graph constants) */
  bool ws;           /* max pooling: workspace between fwd and bwd */
} ograd;

static void ograd_free(void *op) {
  ograd *o = op;
  if (!o) return;
  if (o->bwd) dnnl_primitive_destroy(o->bwd);
  if (o->fwd) dnnl_primitive_destroy(o->fwd);
  free(o);
}

static dnnl_status_t ograd_md(dnnl_memory_desc_t *md, int nd,
                              const int64_t *dims, dnnl_format_tag_t tag) {
  dnnl_dims_t d;
  for (int i = 0; i < nd; i++)
    d[i] = dims[i];
  return dnnl_memory_desc_init_by_tag(md, nd, d, dnnl_f32, tag);
}

/* Primitive and scratchpad descriptor from an op descriptor (and hint). */
static dnnl_status_t ograd_prim(const oeng *e, const_dnnl_op_desc_t d,
                                const_dnnl_primitive_desc_t hint,
                                dnnl_primitive_desc_t *pd_out,
                                dnnl_primitive_t *prim,
                                dnnl_memory_desc_t *scr) {
  dnnl_primitive_attr_t attr = NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t s = user_attr(&attr);
  if (s == dnnl_success)
    s = dnnl_primitive_desc_create(&pd, d, attr, e->eng, hint);
  dnnl_primitive_attr_destroy(attr);
  if (s != dnnl_success) return s;
  *scr = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  if (prim) { /* NULL: only the descriptor is needed, as a hint */
    s = dnnl_primitive_create(prim, pd);
    if (s != dnnl_success) *prim = NULL;
  }
  if (pd_out && s == dnnl_success)
    *pd_out = pd;
  else
    dnnl_primitive_desc_destroy(pd);
  return s;
}

static dm_err ograd_conv(ograd *o, const dm_node *n, dm_errbuf *eb) {
  const oeng *e = o->e;
  const dm_value *X = val(e, n->in[0]), *W = val(e, n->in[1]),
                 *Y = val(e, n->out[0]);
  const dm_window *win = &n->p.conv.w;
  int64_t G = n->p.conv.group, wd[DNNL_MAX_NDIMS];
  int bv = n->n_in > 2 ? n->in[2] : -1; /* addends come after slot 2 */
  if (win->nsp != 2 || X->rank != 4 || W->rank != 4) return DM_OK;
  dnnl_dims_t st, dil, pl, pr;
  int wnd = conv_geometry(W, G, win, wd, st, dil, pl, pr);
  int64_t oc = W->dims[0];
  if (ograd_md(&o->x_md, 4, X->dims, dnnl_nchw) ||
      ograd_md(&o->y_md, 4, Y->dims, dnnl_nchw) ||
      ograd_md(&o->w_md, wnd, wd, wnd == 4 ? dnnl_oihw : dnnl_goihw) ||
      ograd_md(&o->b_md, 1, &oc, dnnl_x))
    return DM_OK; /* not expressible: plain C */
  o->w = W->data;
  o->b = bv >= 0 ? val(e, bv)->data : NULL;
  dnnl_convolution_desc_t fd, bd;
  dnnl_primitive_desc_t fpd = NULL;
  dnnl_status_t s = dnnl_dilated_convolution_forward_desc_init(
      &fd, dnnl_forward_training, dnnl_convolution_direct, &o->x_md, &o->w_md,
      o->b ? &o->b_md : NULL, &o->y_md, st, dil, pl, pr);
  if (s == dnnl_success)
    s = ograd_prim(e, &fd, NULL, &fpd, &o->fwd, &o->fwd_scr);
  if (s == dnnl_success)
    s = dnnl_dilated_convolution_backward_data_desc_init(
        &bd, dnnl_convolution_direct, &o->x_md, &o->w_md, &o->y_md, st, dil, pl,
        pr);
  if (s == dnnl_success)
    s = ograd_prim(e, &bd, fpd, NULL, &o->bwd, &o->bwd_scr);
  if (fpd) dnnl_primitive_desc_destroy(fpd);
  if (s != dnnl_success)
    return dnnl_fail(eb, n, "Grad-CAM convolution backward data", s);
  return DM_OK;
}

static dm_err ograd_pool(ograd *o, const dm_node *n, dm_errbuf *eb) {
  const oeng *e = o->e;
  const dm_value *X = val(e, n->in[0]), *Y = val(e, n->out[0]);
  const dm_window *w = &n->p.pool.w;
  if (w->nsp != 2 || X->rank != 4 || n->p.pool.storage_order) return DM_OK;
  bool mx = n->op == DM_OP_MAXPOOL;
  dnnl_alg_kind_t alg = mx ? dnnl_pooling_max
                        : n->p.pool.count_include_pad
                            ? dnnl_pooling_avg_include_padding
                            : dnnl_pooling_avg_exclude_padding;
  dnnl_dims_t k, s, d, pl, pr;
  for (int i = 0; i < 2; i++) {
    k[i] = w->kernel[i];
    s[i] = w->stride[i];
    d[i] = w->dil[i] - 1;
    pl[i] = w->pad_b[i];
    /* end pad that gives Y's size (ceil mode), as map_pool does */
    int64_t ek = (w->kernel[i] - 1) * w->dil[i] + 1;
    int64_t need =
        (Y->dims[2 + i] - 1) * w->stride[i] + ek - X->dims[2 + i] - w->pad_b[i];
    pr[i] = need > w->pad_e[i] ? need : w->pad_e[i];
    if (pr[i] != w->pad_e[i] && alg == dnnl_pooling_avg_include_padding)
      return DM_OK; /* ONNX's divisor differs there: plain C */
    if ((X->dims[2 + i] + pl[i] + pr[i] - ek) / s[i] + 1 != Y->dims[2 + i])
      return DM_OK;
  }
  if (ograd_md(&o->x_md, 4, X->dims, dnnl_nchw) ||
      ograd_md(&o->y_md, 4, Y->dims, dnnl_nchw))
    return DM_OK;
  dnnl_pooling_v2_desc_t fd, bd;
  dnnl_primitive_desc_t fpd = NULL;
  dnnl_status_t st = dnnl_pooling_v2_forward_desc_init(
      &fd, dnnl_forward_training, alg, &o->x_md, &o->y_md, s, k, d, pl, pr);
  if (st == dnnl_success)
    st = ograd_prim(e, &fd, NULL, &fpd, mx ? &o->fwd : NULL, &o->fwd_scr);
  if (st == dnnl_success && mx) {
    o->ws_md = *dnnl_primitive_desc_query_md(fpd, dnnl_query_workspace_md, 0);
    o->ws = true;
  }
  if (st == dnnl_success)
    st = dnnl_pooling_v2_backward_desc_init(&bd, alg, &o->x_md, &o->y_md, s, k,
                                            d, pl, pr);
  if (st == dnnl_success)
    st = ograd_prim(e, &bd, fpd, NULL, &o->bwd, &o->bwd_scr);
  if (fpd) dnnl_primitive_desc_destroy(fpd);
  if (st != dnnl_success)
    return dnnl_fail(eb, n, "Grad-CAM pooling backward", st);
  return DM_OK;
}

static dm_err ograd_new(void *state, int ni, void **op, dm_errbuf *eb) {
  const oeng *e = state;
  const dm_node *n = &e->g->nodes[ni];
  *op = NULL;
  ograd *o = calloc(1, sizeof *o);
  if (!o) return nomem(eb, n);
  o->e = e;
  o->node = ni;
  int prev_threads = omp_get_max_threads();
  omp_set_num_threads(e->threads); /* primitives keep the creation ICV */
  dm_err rc = DM_OK;
  if (n->op == DM_OP_CONV)
    rc = ograd_conv(o, n, eb);
  else if (n->op == DM_OP_MAXPOOL || n->op == DM_OP_AVGPOOL)
    rc = ograd_pool(o, n, eb);
  omp_set_num_threads(prev_threads);
  if (rc || !o->bwd) {
    ograd_free(o); /* an op oneDNN cannot express runs in plain C */
    return rc;
  }
  *op = o;
  return DM_OK;
}

/* Runs prim with args (memory objects over the given buffers) and a fresh
 * scratchpad, on a stream of its own. */
static dm_err ograd_exec(const ograd *o, dnnl_primitive_t prim,
                         const dnnl_memory_desc_t *scr, int n_args,
                         const int *kinds, const dnnl_memory_desc_t *const *mds,
                         void *const *ptrs, dm_errbuf *eb) {
  const oeng *e = o->e;
  const dm_node *n = &e->g->nodes[o->node];
  dnnl_exec_arg_t args[8];
  dnnl_stream_t stream = NULL;
  size_t ssz = dnnl_memory_desc_get_size(scr);
  void *sbuf = ssz ? aligned_alloc(ALIGN, align_up(ssz)) : NULL;
  int na = 0;
  dm_err rc = DM_OK;
  dnnl_status_t s = dnnl_success;
  if (ssz && !sbuf) return nomem(eb, n);
  for (int i = 0; i < n_args + 1 && s == dnnl_success; i++) {
    if (i == n_args && !ssz) break;
    const dnnl_memory_desc_t *md = i < n_args ? mds[i] : scr;
    void *p = i < n_args ? ptrs[i] : sbuf;
    args[na].arg = i < n_args ? kinds[i] : DNNL_ARG_SCRATCHPAD;
    s = dnnl_memory_create(&args[na].memory, md, e->eng, p);
    if (s == dnnl_success) na++;
  }
  if (s == dnnl_success)
    s = dnnl_stream_create(&stream, e->eng, dnnl_stream_default_flags);
  if (s == dnnl_success) {
    int prev_threads = omp_get_max_threads();
    if (prev_threads != e->threads) omp_set_num_threads(e->threads);
    s = dnnl_primitive_execute(prim, stream, na, args);
    if (s == dnnl_success) s = dnnl_stream_wait(stream);
    if (prev_threads != e->threads) omp_set_num_threads(prev_threads);
  }
  if (s != dnnl_success) rc = dnnl_fail(eb, n, "Grad-CAM backward step", s);
  if (stream) dnnl_stream_destroy(stream);
  for (int i = 0; i < na; i++)
    dnnl_memory_destroy(args[i].memory);
  free(sbuf);
  return rc;
}

static dm_err ograd_backward(void *op, const float *x, const float *dy,
                             float *dx, dm_errbuf *eb) {
  const ograd *o = op;
  const dm_node *n = &o->e->g->nodes[o->node];
  if (n->op == DM_OP_CONV) {
    int k[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
    const dnnl_memory_desc_t *m[3] = {&o->y_md, &o->w_md, &o->x_md};
    void *p[3] = {(void *)(uintptr_t)dy, (void *)(uintptr_t)o->w, dx};
    return ograd_exec(o, o->bwd, &o->bwd_scr, 3, k, m, p, eb);
  }
  if (!o->ws) {
    int k[2] = {DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC};
    const dnnl_memory_desc_t *m[2] = {&o->y_md, &o->x_md};
    void *p[2] = {(void *)(uintptr_t)dy, dx};
    return ograd_exec(o, o->bwd, &o->bwd_scr, 2, k, m, p, eb);
  }
  /* max pooling: forward_training for the workspace, then backward */
  size_t yb = dnnl_memory_desc_get_size(&o->y_md);
  size_t wb = dnnl_memory_desc_get_size(&o->ws_md);
  void *y = aligned_alloc(ALIGN, align_up(yb ? yb : 1));
  void *ws = aligned_alloc(ALIGN, align_up(wb ? wb : 1));
  dm_err rc = y && ws ? DM_OK : nomem(eb, n);
  if (!rc) {
    int k[3] = {DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_WORKSPACE};
    const dnnl_memory_desc_t *m[3] = {&o->x_md, &o->y_md, &o->ws_md};
    void *p[3] = {(void *)(uintptr_t)x, y, ws};
    rc = ograd_exec(o, o->fwd, &o->fwd_scr, 3, k, m, p, eb);
  }
  if (!rc) {
    int k[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WORKSPACE, DNNL_ARG_DIFF_SRC};
    const dnnl_memory_desc_t *m[3] = {&o->y_md, &o->ws_md, &o->x_md};
    void *p[3] = {(void *)(uintptr_t)dy, ws, dx};
    rc = ograd_exec(o, o->bwd, &o->bwd_scr, 3, k, m, p, eb);
  }
  free(y);
  free(ws);
  return rc;
}

static dm_err ograd_forward(void *op, const float *x, float *y, dm_errbuf *eb) {
  const ograd *o = op;
  const dm_node *n = &o->e->g->nodes[o->node];
  if (n->op != DM_OP_CONV || !o->fwd)
    return dm_errf(eb, DM_BACKEND, "node '%s': no Grad-CAM forward", nname(n));
  int k[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
  const dnnl_memory_desc_t *m[4] = {&o->x_md, &o->w_md, &o->y_md, &o->b_md};
  void *p[4] = {(void *)(uintptr_t)x, (void *)(uintptr_t)o->w, y,
                (void *)(uintptr_t)o->b};
  return ograd_exec(o, o->fwd, &o->fwd_scr, o->b ? 4 : 3, k, m, p, eb);
}

static const dm_grad_ops onednn_grad = {
    .op_new = ograd_new,
    .op_free = ograd_free,
    .backward = ograd_backward,
    .forward = ograd_forward,
};

/* The arena onednn_session_new maps (its own plan: layouts, bands). */
static size_t onednn_arena_bytes(void *state) {
  const oeng *e = state;
  return e->arena_bytes;
}

const dm_backend dm__backend_onednn = {
    .name = "onednn",
    .prepare = onednn_prepare,
    .release = onednn_release,
    .session_new = onednn_session_new,
    .session_free = onednn_session_free,
    .run = onednn_run,
    .precision = onednn_precision,
    .grad = &onednn_grad,
    .arena_bytes = onednn_arena_bytes,
};
