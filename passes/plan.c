/* plan.c - entry points, dead-code elimination, schedule and memory layout.
 *
 * Each entry point computes what its roots need and nothing more (dead-code
 * elimination is reachability from the roots).  The live nodes are grouped
 * into kernels (fuse.c); kernels run in the order of their roots' ids, which
 * is topological; optimizer updates (kernels ending in ASSIGN) run last so no
 * kernel reads a parameter after it changed.
 *
 * Memory: one float arena, every buffer 64-byte aligned and sized for the
 * largest batch; RESHAPE is a view of its input, ASSIGN writes its
 * parameter's slot, and a node that a kernel computes without storing has no
 * buffer.  Buffers whose lifetimes never overlap share memory (see
 * plan_memory below).
 */
#include "plan_internal.h"

#include <stdlib.h>
#include <string.h>

const char *const dl_entry_names[DL_ENTRY_COUNT] = {"forward", "grad", "train_step"};

static void plan_memory(DlProgram *p, const bool *keep);
static void mark_persistent(const DlGraph *g, bool *keep);

static void mark(const DlGraph *g, bool *reach, DlNodeId root) {
  if (root == DL_NONE || reach[root]) return;
  /* Iterative: graphs of unrolled loops can be deep. */
  DlNodeId *stack = malloc(sizeof(DlNodeId) * (size_t)g->nnodes);
  int sp = 0;
  stack[sp++] = root;
  reach[root] = true;
  while (sp > 0) {
    const DlNode *nd = &g->nodes[stack[--sp]];
    for (int i = 0; i < nd->nin; i++)
      if (!reach[nd->in[i]]) {
        reach[nd->in[i]] = true;
        stack[sp++] = nd->in[i];
      }
  }
  free(stack);
}

/* The roots of each entry, marked in reach[e][]. */
static bool mark_entries(DlProgram *p, bool *reach[DL_ENTRY_COUNT]) {
  DlGraph *g = p->g;
  int nn = g->nnodes;
  bool has_params = false;
  for (DlNodeId id = 0; id < nn; id++)
    has_params |=
        g->nodes[id].op == DL_OP_PARAM && g->grad && id < g->ngrad && g->grad[id] != DL_NONE;
  /* forward: prediction and loss */
  mark(g, reach[DL_ENTRY_FORWARD], g->output);
  mark(g, reach[DL_ENTRY_FORWARD], g->loss);
  if (g->loss == DL_NONE || !has_params) return false;
  /* grad: loss and every parameter gradient */
  mark(g, reach[DL_ENTRY_GRAD], g->loss);
  for (DlNodeId id = 0; id < g->ngrad; id++)
    if (g->nodes[id].op == DL_OP_PARAM) mark(g, reach[DL_ENTRY_GRAD], g->grad[id]);
  /* train_step: prediction, loss and the updates */
  mark(g, reach[DL_ENTRY_TRAIN], g->output);
  mark(g, reach[DL_ENTRY_TRAIN], g->loss);
  for (DlNodeId id = 0; id < nn; id++)
    if (g->nodes[id].op == DL_OP_ASSIGN) mark(g, reach[DL_ENTRY_TRAIN], id);
  return true;
}

/* The kernels whose roots the entry reaches, in root order, those that
 * assign last (so no kernel reads a parameter after it changed), and the
 * nodes they compute in that order. */
static void build_entry(DlProgram *p, DlEntry *e, const bool *reach) {
  DlArena *arena = p->g->cc->arena;
  e->kernels = dl_arena_alloc(arena, sizeof(int) * (size_t)(p->nkernels + 1));
  e->nodes = dl_arena_alloc(arena, sizeof(DlNodeId) * (size_t)(p->g->nnodes + 1));
  e->nkernels = e->nnodes = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int k = 0; k < p->nkernels; k++) {
      const DlKernel *kern = &p->kernels[k];
      bool assigns = p->g->nodes[kern->root].op == DL_OP_ASSIGN;
      if (!reach[kern->root] || assigns != (pass == 1)) continue;
      e->kernels[e->nkernels++] = k;
      for (int i = 0; i < kern->nnodes; i++)
        e->nodes[e->nnodes++] = kern->nodes[i];
    }
  e->present = true;
}

DlProgram *dl_plan(DlGraph *g, int64_t max_batch) {
  return dl_plan_with(g, max_batch, NULL);
}

DlProgram *dl_plan_with(DlGraph *g, int64_t max_batch, const DlPlanOptions *opts) {
  DlCompiler *cc = g->cc;
  if (!dl_graph_verify(g)) return NULL;
  if (max_batch < 1) max_batch = 1;
  DlProgram *p = dl_arena_alloc(cc->arena, sizeof(DlProgram));
  int nn = g->nnodes;
  p->g = g;
  p->max_batch = max_batch;
  p->offset = dl_arena_alloc(cc->arena, sizeof(int64_t) * (size_t)(nn + 1));
  p->size = dl_arena_alloc(cc->arena, sizeof(int64_t) * (size_t)(nn + 1));
  p->live = dl_arena_alloc(cc->arena, sizeof(bool) * (size_t)(nn + 1));

  bool *reach[DL_ENTRY_COUNT];
  for (int e = 0; e < DL_ENTRY_COUNT; e++)
    reach[e] = calloc((size_t)nn + 1, sizeof(bool));
  bool trains = mark_entries(p, reach);
  for (int e = 0; e < DL_ENTRY_COUNT; e++)
    for (int i = 0; i < nn; i++)
      p->live[i] |= reach[e][i];

  bool *keep = malloc(sizeof(bool) * (size_t)(nn + 1));
  mark_persistent(g, keep);
  dl_fuse(p, keep, reach, !(opts && opts->no_fuse));
  build_entry(p, &p->entry[DL_ENTRY_FORWARD], reach[DL_ENTRY_FORWARD]);
  if (trains) {
    build_entry(p, &p->entry[DL_ENTRY_GRAD], reach[DL_ENTRY_GRAD]);
    build_entry(p, &p->entry[DL_ENTRY_TRAIN], reach[DL_ENTRY_TRAIN]);
  }
  for (int e = 0; e < DL_ENTRY_COUNT; e++)
    free(reach[e]);

  plan_memory(p, keep);
  free(keep);
  return p;
}

/* ---- memory ----------------------------------------------------------------
 *
 * Persistent buffers keep their own slot: what lives across calls
 * (parameters, inputs and targets, hyperparameters, constants) and what the
 * runtime reads after a call by name (the output, the loss, the gradients).
 * Every other buffer is a temporary of the entry that computes it: it lives
 * from the kernel that writes it to the last kernel that reads it (a RESHAPE
 * view's readers read its input's buffer; the nodes fused into a kernel have
 * none).  The three entries share the
 * arena, and a temporary may appear in several of them at different
 * positions, so two temporaries conflict when their intervals overlap in any
 * entry.  Intervals are closed: a kernel's output never shares memory with
 * its inputs (kernels take noalias pointers).
 *
 * Placement is greedy by size (largest first), each temporary at the lowest
 * offset where it overlaps no conflicting temporary already placed, as in
 * TensorFlow Lite's arena planner.  Temporaries go after the persistent
 * buffers. */

typedef struct Interval {
  int first, last; /* positions in an entry's schedule, -1 when absent */
} Interval;

typedef struct Temp {
  DlNodeId id;
  int64_t size; /* floats, rounded up to 16 (64 bytes) */
  int64_t offset;
  Interval in[DL_ENTRY_COUNT];
} Temp;

static int64_t round16(int64_t n) {
  return (n + 15) & ~(int64_t)15;
}

/* keep[b]: buffer b is persistent (see above). */
static void mark_persistent(const DlGraph *g, bool *keep) {
  for (DlNodeId id = 0; id < g->nnodes; id++)
    keep[id] = dl_op_info[g->nodes[id].op].kind == DL_KIND_LEAF;
  if (g->output != DL_NONE) keep[dl_graph_buffer(g, g->output)] = true;
  if (g->loss != DL_NONE) keep[dl_graph_buffer(g, g->loss)] = true;
  for (DlNodeId p = 0; g->grad && p < g->ngrad; p++)
    if (g->nodes[p].op == DL_OP_PARAM && g->grad[p] != DL_NONE)
      keep[dl_graph_buffer(g, g->grad[p])] = true;
}

/* Floating-point operations of one node's kernel at batch n (a transcendental
 * function counts as one). */
static double node_flops(const DlGraph *g, DlNodeId id, int64_t n) {
  const DlNode *nd = &g->nodes[id];
  double out = (double)dl_shape_numel(&nd->shape, n);
  switch (dl_op_info[nd->op].kind) {
  case DL_KIND_LEAF:
  case DL_KIND_RESHAPE:
  case DL_KIND_ASSIGN: return 0;
  case DL_KIND_UNARY:
  case DL_KIND_BINARY: return out;
  case DL_KIND_EXPAND: return nd->attr.expand.mean ? out : 0;
  case DL_KIND_MATMUL: {
    const DlShape *a = &g->nodes[nd->in[0]].shape;
    int64_t k = nd->attr.matmul.ta ? a->d[a->rank - 2] : a->d[a->rank - 1];
    return 2.0 * out * (double)(k == DL_DIM_BATCH ? n : k);
  }
  case DL_KIND_REDUCE: return (double)dl_shape_numel(&g->nodes[nd->in[0]].shape, n);
  case DL_KIND_SOFTMAX: return 4.0 * out; /* max, exp, sum, divide */
  case DL_KIND_LAYOUT: return 0;
  case DL_KIND_INDEX:
    return nd->op == DL_OP_SCATTER_ADD ? (double)dl_shape_numel(&g->nodes[nd->in[0]].shape, n) : 0;
  case DL_KIND_CONV: {
    /* every op of the family does one multiply-add per (output, tap) pair */
    const DlShape *w = nd->op == DL_OP_CONV2D_GRAD_FILTER ? &nd->shape : &g->nodes[nd->in[1]].shape;
    const DlShape *y = nd->op == DL_OP_CONV2D              ? &nd->shape
                       : nd->op == DL_OP_CONV2D_GRAD_INPUT ? &g->nodes[nd->in[0]].shape
                                                           : &g->nodes[nd->in[1]].shape;
    return 2.0 * (double)dl_shape_numel(y, n) * (double)(w->d[1] * w->d[2] * w->d[3]);
  }
  case DL_KIND_POOL: {
    const DlShape *y = nd->op == DL_OP_MAXPOOL2D_GRAD   ? &g->nodes[nd->in[1]].shape
                       : nd->op == DL_OP_AVGPOOL2D_GRAD ? &g->nodes[nd->in[0]].shape
                                                        : &nd->shape;
    return (double)dl_shape_numel(y, n) * nd->attr.pool.kh * nd->attr.pool.kw;
  }
  case DL_KIND_RANDOM: return out;
  }
  return 0;
}

static bool temps_conflict(const Temp *a, const Temp *b) {
  for (int e = 0; e < DL_ENTRY_COUNT; e++) {
    const Interval *x = &a->in[e], *y = &b->in[e];
    if (x->first >= 0 && y->first >= 0 && x->first <= y->last && y->first <= x->last) return true;
  }
  return false;
}

static int by_size_desc(const void *pa, const void *pb) {
  const Temp *a = pa, *b = pb;
  if (a->size != b->size) return a->size > b->size ? -1 : 1;
  return a->id - b->id; /* deterministic */
}

static int by_offset(const void *pa, const void *pb) {
  const Temp *a = *(Temp *const *)pa, *b = *(Temp *const *)pb;
  return a->offset < b->offset ? -1 : a->offset > b->offset;
}

static void plan_memory(DlProgram *p, const bool *keep) {
  DlGraph *g = p->g;
  int nn = g->nnodes;
  /* Buffers are the nodes that own memory: not views, not assigns, not the
   * nodes a kernel computes without storing. */
  int *slot = malloc(sizeof(int) * (size_t)(nn + 1));
  Temp *temps = malloc(sizeof(Temp) * (size_t)(nn + 1));
  int ntemps = 0;
  int64_t at = 0;
  for (DlNodeId id = 0; id < nn; id++) {
    const DlNode *nd = &g->nodes[id];
    slot[id] = -1;
    p->offset[id] = -1;
    p->size[id] = 0;
    bool state = nd->op == DL_OP_PARAM || nd->op == DL_OP_INPUT || nd->op == DL_OP_HYPER;
    if ((!p->live[id] && !state) || dl_buffer_of(p, id) != id) continue;
    int k = p->kernel_of[id];
    if (k >= 0 && p->kernels[k].root != id && p->kernels[k].side != id)
      continue; /* fused: in registers only */
    p->size[id] = dl_shape_numel(&nd->shape, p->max_batch);
    if (keep[id]) {
      p->offset[id] = at;
      at += round16(p->size[id]);
      continue;
    }
    Temp *t = &temps[ntemps];
    *t = (Temp){.id = id, .size = round16(p->size[id]), .offset = -1};
    for (int e = 0; e < DL_ENTRY_COUNT; e++)
      t->in[e] = (Interval){-1, -1};
    slot[id] = ntemps++;
  }
  /* Lifetimes: each kernel defines its root's buffer (and its side
   * reduction's) and uses its operands'. */
  for (int e = 0; e < DL_ENTRY_COUNT; e++) {
    const DlEntry *en = &p->entry[e];
    if (!en->present) continue;
    for (int pos = 0; pos < en->nkernels; pos++) {
      int k = en->kernels[pos];
      DlNodeId touched[2 + DL_KERNEL_MAX_OPERANDS];
      int nt = dl_kernel_operands(p, k, touched + 2) + 2;
      touched[0] = p->kernels[k].root;
      touched[1] = p->kernels[k].side != DL_NONE ? p->kernels[k].side : p->kernels[k].root;
      for (int i = 0; i < nt; i++) {
        int s = slot[dl_buffer_of(p, touched[i])];
        if (s < 0) continue;
        Interval *iv = &temps[s].in[e];
        if (iv->first < 0) iv->first = pos;
        iv->last = pos;
      }
    }
  }
  int64_t temp_base = at, temp_end = at;
  qsort(temps, (size_t)ntemps, sizeof(Temp), by_size_desc);
  /* Placed temporaries that conflict with the current one, by offset. */
  Temp **placed = malloc(sizeof(Temp *) * (size_t)(ntemps + 1));
  for (int i = 0; i < ntemps; i++) {
    Temp *t = &temps[i];
    int np = 0;
    for (int j = 0; j < i; j++)
      if (temps_conflict(t, &temps[j])) placed[np++] = &temps[j];
    qsort(placed, (size_t)np, sizeof(Temp *), by_offset);
    int64_t off = temp_base;
    for (int j = 0; j < np; j++) {
      if (placed[j]->offset >= off + t->size) break; /* fits in the gap before it */
      int64_t end = placed[j]->offset + placed[j]->size;
      if (end > off) off = end;
    }
    t->offset = off;
    if (off + t->size > temp_end) temp_end = off + t->size;
    p->offset[t->id] = off;
  }
  free(placed);
  /* Views and assigns use their source's buffer. */
  for (DlNodeId id = 0; id < nn; id++) {
    DlNodeId b = dl_buffer_of(p, id);
    if (b != id && p->offset[b] >= 0 && (p->live[id] || p->offset[id] >= 0)) {
      p->offset[id] = p->offset[b];
      p->size[id] = p->size[b];
    }
  }
  p->mem_floats = temp_end > 0 ? temp_end : 16;
  free(temps);
  free(slot);
}

void dl_plan_stats(const DlProgram *p, DlPlanStats *st) {
  const DlGraph *g = p->g;
  memset(st, 0, sizeof *st);
  st->arena_bytes = p->mem_floats * (int64_t)sizeof(float);
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (p->offset[id] >= 0 && dl_buffer_of(p, id) == id)
      st->buffer_bytes += round16(p->size[id]) * (int64_t)sizeof(float);
  for (int e = 0; e < DL_ENTRY_COUNT; e++) {
    const DlEntry *en = &p->entry[e];
    st->present[e] = en->present || e == DL_ENTRY_FORWARD;
    if (!en->present) continue;
    st->kernels[e] = en->nkernels;
    for (int i = 0; i < en->nnodes; i++)
      st->flops[e] += node_flops(g, en->nodes[i], p->max_batch);
  }
}
