/* fuse.c - grouping the planned nodes into kernels.
 *
 * A kernel computes a group of nodes in one generated function and stores
 * only its root; the other nodes of the group live in registers for the
 * moment the root needs them, and get no buffer.  Three shapes of group:
 *
 *   map      elementwise ops (unary, binary, expand; broadcast operands are
 *            read with stride 0) in one loop over the root's shape.  The root
 *            may be an ASSIGN: `W <- W - lr * g` is one pass that reads and
 *            writes W in place, and so is any optimizer written as
 *            elementwise IR ending in ASSIGN.
 *   reduce   a reduction whose input is an elementwise chain over the
 *            input's shape: `sum(y * log_softmax(z))` never stores y * ...
 *   matmul   a matrix product followed by elementwise ops of its shape (a
 *            bias add, an activation, or in the backward graph an
 *            activation's gradient dy * step(h)): the GEMM stores into the
 *            root's buffer and the ops are applied to it in place while it is
 *            hot in cache.  Or a batched a^T b summed over its batch, which
 *            is one GEMM with a longer k (see batch_sum_of).
 *
 * A map or matmul kernel may also store a side reduction: the SUM or MEAN
 * of its root over the root's leading axes, when that reduction is a kernel
 * of its own reading only the root (the root is stored anyway, because
 * something else reads it too).  The backward graph's bias gradient
 * db = sum over rows of dz, where dz = (dy @ W^T) * step(h) also feeds two
 * matmuls, is the case: the kernel that computes dz adds each row into db
 * while it applies its epilogue, rather than a second kernel reading dz back
 * (see fold_side_reductions).
 *
 * The rule that decides it (one sweep from the last node to the first, so a
 * node's users are decided before the node): a node joins the group of its
 * users when it is elementwise (or a matmul joining a map that has no matmul
 * yet), every user is in that one group, it has the group's shape (so it is
 * computed once per point of the loop, never recomputed under a broadcast),
 * and nothing outside reads it: a value used by two kernels, or one the
 * runtime reads (output, loss, gradients), stays materialised.  Two limits
 * keep the code simple and correct: a kernel reads at most
 * DL_KERNEL_MAX_OPERANDS distinct inputs and computes at most
 * DL_KERNEL_MAX_NODES nodes, and in a group that assigns a
 * parameter every read of that parameter's buffer must be at the element
 * being written (the update is in place).
 */
#include "plan_internal.h"

#include <stdlib.h>
#include <string.h>

const char *const dl_kernel_kind_names[] = {"op", "map", "reduce", "matmul"};

bool dl_node_computed(const DlNode *nd) {
  DlOpKind k = dl_op_info[nd->op].kind;
  return k != DL_KIND_LEAF && k != DL_KIND_RESHAPE;
}

DlNodeId dl_graph_buffer(const DlGraph *g, DlNodeId id) {
  while (g->nodes[id].op == DL_OP_RESHAPE || g->nodes[id].op == DL_OP_ASSIGN)
    id = g->nodes[id].in[0];
  return id;
}

DlNodeId dl_buffer_of(const DlProgram *p, DlNodeId id) {
  return p->buffer[id];
}

static bool elementwise(const DlNode *nd) {
  DlOpKind k = dl_op_info[nd->op].kind;
  return k == DL_KIND_UNARY || k == DL_KIND_BINARY || k == DL_KIND_EXPAND;
}

static DlKernelKind kind_of(const DlNode *nd) {
  switch (dl_op_info[nd->op].kind) {
  case DL_KIND_UNARY:
  case DL_KIND_BINARY:
  case DL_KIND_EXPAND:
  case DL_KIND_ASSIGN: return DL_KERNEL_MAP;
  case DL_KIND_REDUCE: return DL_KERNEL_REDUCE;
  case DL_KIND_MATMUL: return DL_KERNEL_MATMUL;
  case DL_KIND_LEAF:
  case DL_KIND_RESHAPE:
  case DL_KIND_SOFTMAX:
  case DL_KIND_LAYOUT:
  case DL_KIND_INDEX:
  case DL_KIND_CONV:
  case DL_KIND_POOL:
  case DL_KIND_RANDOM: break;
  }
  return DL_KERNEL_OP;
}

/* A group while it grows. */
typedef struct Group {
  DlKernelKind kind;
  DlNodeId root;
  DlNodeId anchor; /* the matmul of a map that absorbed one, else DL_NONE */
  DlNodeId side;   /* the side reduction (DlKernel.side), else DL_NONE */
  DlShape space;   /* the shape of every node but a reduction root */
  int nnodes;
  int nops;
  DlNodeId ops[DL_KERNEL_MAX_OPERANDS + DL_MAX_INPUTS]; /* read from other kernels */
} Group;

typedef struct Fuser {
  const DlGraph *g;
  const bool *live;
  int *group_of; /* per node */
  Group *groups;
  int ngroups;
  int *user_start; /* CSR: the live users of node i are users[user_start[i] .. [i+1]) */
  DlNodeId *users;
} Fuser;

/* Is input i of nd the first of nd's inputs that is that node? */
static bool first_read(const DlNode *nd, int i) {
  for (int j = 0; j < i; j++)
    if (nd->in[j] == nd->in[i]) return false;
  return true;
}

static bool has_op(const Group *gr, DlNodeId id) {
  for (int i = 0; i < gr->nops; i++)
    if (gr->ops[i] == id) return true;
  return false;
}

static void add_op(Group *gr, DlNodeId id) {
  if (!has_op(gr, id)) gr->ops[gr->nops++] = id;
}

static void remove_op(Group *gr, DlNodeId id) {
  for (int i = 0; i < gr->nops; i++)
    if (gr->ops[i] == id) {
      memmove(&gr->ops[i], &gr->ops[i + 1], sizeof(DlNodeId) * (size_t)(gr->nops - i - 1));
      gr->nops--;
      return;
    }
}

/* Can the matmul nd join gr, a sum over its batch axes?  sum over b of
 * a_b^T c_b, with a [B.., K, M] and c [B.., K, P] contiguous and not
 * broadcast, is a^T c over K' = B K rows: one GEMM whose k runs over the
 * batch (the weight gradient of x @ W with x batched). */
static bool batch_sum_of(const DlGraph *g, const DlNode *nd, const Group *gr) {
  const DlNode *root = &g->nodes[gr->root];
  const DlShape *s = &nd->shape;
  if (root->op != DL_OP_SUM || gr->nnodes != 1 || s->rank < 3 || !nd->attr.matmul.ta ||
      nd->attr.matmul.tb)
    return false;
  uint32_t batch = (1u << (s->rank - 2)) - 1u;
  if (root->attr.reduce.axes != batch) return false;
  for (int i = 0; i < 2; i++) {
    const DlShape *in = &g->nodes[nd->in[i]].shape;
    if (in->rank != s->rank) return false;
    for (int d = 0; d < s->rank - 2; d++)
      if (in->d[d] != s->d[d]) return false;
  }
  return true;
}

/* The group node x can join, or -1. */
static int join_target(const Fuser *f, DlNodeId x, const bool *materialise) {
  const DlGraph *g = f->g;
  const DlNode *nd = &g->nodes[x];
  bool is_matmul = nd->op == DL_OP_MATMUL;
  if (materialise[x] || !(elementwise(nd) || is_matmul)) return -1;
  int first = f->user_start[x], last = f->user_start[x + 1];
  if (first == last) return -1;
  int target = f->group_of[f->users[first]];
  if (target < 0) return -1;
  const Group *gr = &f->groups[target];
  for (int u = first; u < last; u++)
    /* A matmul's operands are read from memory by the GEMM. */
    if (f->group_of[f->users[u]] != target || f->users[u] == gr->anchor) return -1;
  if (!dl_shape_eq(&nd->shape, &gr->space) || gr->nnodes >= DL_KERNEL_MAX_NODES) return -1;
  bool assigns = g->nodes[gr->root].op == DL_OP_ASSIGN;
  if (is_matmul && gr->kind == DL_KERNEL_REDUCE) return batch_sum_of(g, nd, gr) ? target : -1;
  if (is_matmul && (gr->kind != DL_KERNEL_MAP || gr->anchor != DL_NONE || assigns)) return -1;
  if (!is_matmul && gr->kind != DL_KERNEL_MAP && gr->kind != DL_KERNEL_REDUCE) return -1;
  /* The operands after joining: x's inputs replace x. */
  int nops = gr->nops - 1;
  DlNodeId param = assigns ? dl_graph_buffer(g, gr->root) : DL_NONE;
  for (int i = 0; i < nd->nin; i++) {
    DlNodeId in = nd->in[i];
    nops += !has_op(gr, in) && first_read(nd, i);
    /* In place: the parameter is read only where it is written. */
    if (param != DL_NONE && dl_graph_buffer(g, in) == param &&
        !dl_shape_eq(&g->nodes[in].shape, &gr->space))
      return -1;
  }
  return nops <= DL_KERNEL_MAX_OPERANDS ? target : -1;
}

static int new_group(Fuser *f, DlNodeId x) {
  const DlGraph *g = f->g;
  const DlNode *nd = &g->nodes[x];
  Group *gr = &f->groups[f->ngroups];
  memset(gr, 0, sizeof *gr);
  gr->kind = kind_of(nd);
  gr->root = x;
  gr->anchor = nd->op == DL_OP_MATMUL ? x : DL_NONE;
  gr->side = DL_NONE;
  gr->space = gr->kind == DL_KERNEL_REDUCE ? g->nodes[nd->in[0]].shape : nd->shape;
  gr->nnodes = 1;
  for (int i = nd->op == DL_OP_ASSIGN ? 1 : 0; i < nd->nin; i++)
    add_op(gr, nd->in[i]);
  f->group_of[x] = f->ngroups;
  return f->ngroups++;
}

static void join(Fuser *f, int target, DlNodeId x) {
  Group *gr = &f->groups[target];
  const DlNode *nd = &f->g->nodes[x];
  remove_op(gr, x);
  for (int i = 0; i < nd->nin; i++)
    add_op(gr, nd->in[i]);
  if (nd->op == DL_OP_MATMUL) gr->anchor = x;
  gr->nnodes++;
  f->group_of[x] = target;
}

/* The live users of every node, each user once per node it reads. */
static void find_users(Fuser *f) {
  const DlGraph *g = f->g;
  int nn = g->nnodes;
  f->user_start = calloc((size_t)nn + 2, sizeof(int));
  for (DlNodeId u = 0; u < nn; u++) {
    const DlNode *nd = &g->nodes[u];
    for (int i = 0; f->live[u] && i < nd->nin; i++)
      if (first_read(nd, i)) f->user_start[nd->in[i] + 1]++;
  }
  for (int i = 0; i < nn; i++)
    f->user_start[i + 1] += f->user_start[i];
  f->users = malloc(sizeof(DlNodeId) * (size_t)(f->user_start[nn] + 1));
  int *fill = malloc(sizeof(int) * (size_t)(nn + 1));
  memcpy(fill, f->user_start, sizeof(int) * (size_t)(nn + 1));
  for (DlNodeId u = 0; u < nn; u++) {
    const DlNode *nd = &g->nodes[u];
    for (int i = 0; f->live[u] && i < nd->nin; i++)
      if (first_read(nd, i)) f->users[fill[nd->in[i]]++] = u;
  }
  free(fill);
}

/* An optimizer's state update, `S <- X` with X also read by other updates
 * (momentum's v' = mu v + g feeds both `v <- v'` and `W <- W - lr v'`), would
 * store X and then copy it into S.  Instead X's kernel writes S in place and
 * the ASSIGN has no kernel: X's value lives in S's buffer.  That is safe
 * when nothing else reads the old S (X's kernel reads it only at the element
 * it writes), and X is a map of S's shape that the runtime does not read:
 * then every reader of X runs after X's kernel (kernels run in root order)
 * and finds it in S. */
static void update_states_in_place(Fuser *f, DlProgram *p, const bool *materialise) {
  const DlGraph *g = f->g;
  for (DlNodeId a = 0; a < g->nnodes; a++) {
    const DlNode *an = &g->nodes[a];
    if (an->op != DL_OP_ASSIGN || !p->live[a] || f->group_of[a] < 0) continue;
    DlNodeId s = dl_graph_buffer(g, a), x = an->in[1];
    int gx = f->group_of[x];
    if (f->groups[f->group_of[a]].nnodes != 1 || gx < 0) continue;
    const Group *gr = &f->groups[gx];
    if (gr->root != x || gr->kind != DL_KERNEL_MAP || gr->anchor != DL_NONE || materialise[x] ||
        g->nodes[x].op == DL_OP_ASSIGN || g->nodes[s].op != DL_OP_PARAM ||
        !dl_shape_eq(&g->nodes[x].shape, &g->nodes[s].shape))
      continue;
    bool ok = true;
    for (int u = f->user_start[s]; ok && u < f->user_start[s + 1]; u++)
      ok = f->users[u] == a || f->group_of[f->users[u]] == gx;
    for (int i = 0; ok && i < gr->nops; i++)
      ok = dl_graph_buffer(g, gr->ops[i]) != s ||
           dl_shape_eq(&g->nodes[gr->ops[i]].shape, &gr->space);
    if (!ok) continue;
    p->buffer[x] = s;
    f->group_of[a] = -1; /* the ASSIGN is done when X is */
  }
}

/* Do `axes` of a reduction of a rank-`rank` value name its leading axes
 * 0 .. r-1 (r >= 1; 0 is every axis, the constructors' convention)? */
static bool leading_axes(uint32_t axes, int rank) {
  if (axes == 0) return rank >= 1;
  return (axes & (axes + 1)) == 0 && rank < 32 && axes < (1u << rank);
}

/* A reduction kernel that is only `s = sum or mean of R over R's leading
 * axes`, with R the root of a map or matmul kernel, becomes that kernel's
 * side reduction: the kernel adds each value of R into s as it produces it
 * (on the CPU, row by row in the order the separate kernel adds them, so the
 * bits are the same; on the GPU one thread per column of s loops over the
 * rows).  The rule is one of placement only: s's kernel would read R from
 * memory and nothing else, so no value is computed twice.  It declines for
 * an ASSIGN root or one computed in place of a state (the kernel's output is
 * not R's own buffer), for a sum over other axes (a row sum is a
 * reduction over each row, not a running sum across them), for a reduction
 * that reads more than R (it is a reduce kernel of its own, fused with its
 * elementwise input), for the batched weight-gradient GEMM (a reduce kernel
 * already), and where the kernel's buffers would exceed
 * DL_KERNEL_MAX_OPERANDS.  s runs earlier than it did, at R's kernel: every
 * reader of s has a larger id than s, so its kernel's root comes after R. */
static void fold_side_reductions(Fuser *f, DlProgram *p, bool *const reach[DL_ENTRY_COUNT]) {
  const DlGraph *g = f->g;
  for (DlNodeId s = 0; s < g->nnodes; s++) {
    const DlNode *nd = &g->nodes[s];
    int gs = f->group_of[s];
    if (!p->live[s] || (nd->op != DL_OP_SUM && nd->op != DL_OP_MEAN) || gs < 0) continue;
    DlNodeId r = nd->in[0];
    int gr = f->group_of[r];
    if (f->groups[gs].nnodes != 1 || f->groups[gs].root != s || gr < 0) continue;
    Group *G = &f->groups[gr];
    if (G->root != r || (G->kind != DL_KERNEL_MAP && G->kind != DL_KERNEL_MATMUL) ||
        G->side != DL_NONE || g->nodes[r].op == DL_OP_ASSIGN || p->buffer[r] != r ||
        G->nnodes >= DL_KERNEL_MAX_NODES || G->nops >= DL_KERNEL_MAX_OPERANDS ||
        !leading_axes(nd->attr.reduce.axes, g->nodes[r].shape.rank))
      continue;
    /* Every entry that computes R needs s too (else it would store s, a
     * gradient perhaps, where it used not to). */
    bool same = true;
    for (int e = 0; e < DL_ENTRY_COUNT; e++)
      same &= reach[e][r] == reach[e][s];
    if (!same) continue;
    G->side = s;
    G->nnodes++;
    f->groups[gs].root = DL_NONE; /* the reduction's own group is gone */
    f->group_of[s] = gr;
  }
}

void dl_fuse(DlProgram *p, const bool *materialise, bool *const reach[DL_ENTRY_COUNT], bool fuse) {
  DlGraph *g = p->g;
  DlArena *arena = g->cc->arena;
  int nn = g->nnodes;
  Fuser f = {.g = g, .live = p->live};
  f.group_of = malloc(sizeof(int) * (size_t)(nn + 1));
  f.groups = malloc(sizeof(Group) * (size_t)(nn + 1));
  for (int i = 0; i < nn; i++)
    f.group_of[i] = -1;
  find_users(&f);
  p->buffer = dl_arena_alloc(arena, sizeof(DlNodeId) * (size_t)(nn + 1));
  for (DlNodeId id = 0; id < nn; id++)
    p->buffer[id] = dl_graph_buffer(g, id);
  for (DlNodeId x = nn - 1; x >= 0; x--) {
    if (!p->live[x] || !dl_node_computed(&g->nodes[x])) continue;
    int target = fuse ? join_target(&f, x, materialise) : -1;
    if (target >= 0)
      join(&f, target, x);
    else
      new_group(&f, x);
  }

  if (fuse) {
    update_states_in_place(&f, p, materialise);
    fold_side_reductions(&f, p, reach);
  }

  /* Kernels in order of their roots (a topological order: every input of a
   * group comes from a group whose root has a smaller id). */
  p->kernels = dl_arena_alloc(arena, sizeof(DlKernel) * (size_t)(f.ngroups + 1));
  p->kernel_of = dl_arena_alloc(arena, sizeof(int) * (size_t)(nn + 1));
  int *index = malloc(sizeof(int) * (size_t)(f.ngroups + 1));
  int k = 0;
  for (DlNodeId id = 0; id < nn; id++) {
    p->kernel_of[id] = -1;
    int gi = f.group_of[id];
    /* (a dropped ASSIGN's group, or a side reduction's, has no root) */
    if (gi >= 0 && f.groups[gi].root == id) {
      const Group *gr = &f.groups[gi];
      index[gi] = k;
      p->kernels[k] = (DlKernel){
          .kind = gr->anchor != DL_NONE ? DL_KERNEL_MATMUL : gr->kind,
          .root = id,
          .nodes = dl_arena_alloc(arena, sizeof(DlNodeId) * (size_t)gr->nnodes),
          .nnodes = 0,
          .side = gr->side,
      };
      k++;
    }
  }
  p->nkernels = k;
  for (DlNodeId id = 0; id < nn; id++) {
    int gi = f.group_of[id];
    if (gi < 0) continue;
    DlKernel *kern = &p->kernels[index[gi]];
    kern->nodes[kern->nnodes++] = id;
    p->kernel_of[id] = index[gi];
  }
  free(index);
  free(f.users);
  free(f.user_start);
  free(f.groups);
  free(f.group_of);
}

int dl_kernel_operands(const DlProgram *p, int k, DlNodeId ops[DL_KERNEL_MAX_OPERANDS]) {
  const DlGraph *g = p->g;
  const DlKernel *kern = &p->kernels[k];
  int nops = 0;
  for (int i = 0; i < kern->nnodes; i++) {
    const DlNode *nd = &g->nodes[kern->nodes[i]];
    for (int j = nd->op == DL_OP_ASSIGN ? 1 : 0; j < nd->nin; j++) {
      DlNodeId in = nd->in[j];
      if (p->kernel_of[in] == k) continue;
      bool seen = false;
      for (int o = 0; o < nops && !seen; o++)
        seen = ops[o] == in;
      if (!seen && nops < DL_KERNEL_MAX_OPERANDS) ops[nops++] = in;
    }
  }
  return nops;
}
