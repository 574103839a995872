/* simplify.c - graph simplification before planning: constant folding,
 * algebraic identities, common-subexpression elimination.
 *
 * One sweep in id order (which is topological).  Each node first reads its
 * inputs through `rep` (the node that now stands for each earlier node), then:
 *
 *   fold      an op whose inputs are all constants, with a static shape of
 *             at most FOLD_MAX elements, becomes a constant (evaluated by the
 *             reference interpreter, rounded to float as the kernels would)
 *   identity  x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1, pow(x, 1) -> x, only
 *             when x already has the result's shape (otherwise the identity
 *             op is also the broadcast, and stays); -(-x) -> x; a reshape or
 *             expand to x's own shape -> x; reshape(reshape(x)) -> reshape(x)
 *   cse       a node equal to an earlier one (op, shape, inputs, attributes)
 *             is replaced by it; leaves that are distinct values (inputs,
 *             parameters, hyperparameters) and updates are never merged
 *   rewire    step(x) becomes step(relu(x)) where relu(x) exists (the two
 *             are equal: relu(x) > 0 exactly when x > 0, NaN included), so
 *             relu's gradient reads the activation the forward pass keeps
 *             anyway and the pre-activation x need not be stored: fusion can
 *             then compute x inside the kernel of relu(x)
 *
 * x * 0 is not rewritten to 0: it is NaN when x is infinite or NaN, and a
 * computed x may be either; only constant x * 0 folds.  Nodes that lose all
 * their users stay in the graph and are dropped by the planner's dead-code
 * elimination.  The graph's output, loss and gradient table follow `rep`.
 */
#include "passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FOLD_MAX 65536

static bool static_shape(const DlShape *s) {
  return dl_shape_batch_dims(s) == 0;
}

/* Is node id a constant whose every element equals v? */
static bool const_all(const DlGraph *g, DlNodeId id, double v) {
  const DlNode *nd = &g->nodes[id];
  if (nd->op != DL_OP_CONST) return false;
  if (!nd->attr.konst.data) return nd->attr.konst.value == v;
  int64_t count = dl_shape_numel(&nd->shape, 1);
  for (int64_t i = 0; i < count; i++)
    if (nd->attr.konst.data[i] != (float)v) return false;
  return true;
}

/* Replace node id by a constant of its own shape holding the interpreter's
 * value of it. */
static void fold(DlGraph *g, DlNodeId id) {
  DlNode *nd = &g->nodes[id];
  DlInterp it;
  dl_interp_init(&it, g, 1);
  DlNodeId eval[DL_MAX_INPUTS + 1];
  int ne = 0;
  for (int i = 0; i < nd->nin; i++)
    eval[ne++] = nd->in[i];
  eval[ne++] = id;
  dl_interp_run(&it, eval, ne);
  int64_t count = dl_shape_numel(&nd->shape, 1);
  const double *v = it.values[id];
  bool uniform = true;
  for (int64_t i = 1; i < count && uniform; i++)
    uniform = (float)v[i] == (float)v[0];
  nd->op = DL_OP_CONST;
  nd->nin = 0;
  memset(&nd->attr, 0, sizeof nd->attr);
  if (uniform) {
    nd->attr.konst.value = count ? (double)(float)v[0] : 0.0;
  } else {
    float *data = dl_arena_alloc(g->cc->arena, sizeof(float) * (size_t)count);
    for (int64_t i = 0; i < count; i++)
      data[i] = (float)v[i];
    nd->attr.konst.data = data;
  }
  dl_interp_free(&it);
}

static bool foldable(const DlGraph *g, const DlNode *nd) {
  DlOpKind k = dl_op_info[nd->op].kind;
  if (k == DL_KIND_LEAF || k == DL_KIND_ASSIGN || nd->nin == 0) return false;
  if (!static_shape(&nd->shape) || dl_shape_numel(&nd->shape, 1) > FOLD_MAX) return false;
  for (int i = 0; i < nd->nin; i++)
    if (g->nodes[nd->in[i]].op != DL_OP_CONST) return false;
  return true;
}

/* The existing node that node id equals by an algebraic identity, or
 * DL_NONE.  May rewrite id's inputs (reshape of reshape). */
static DlNodeId identity(DlGraph *g, DlNodeId id) {
  DlNode *nd = &g->nodes[id];
  DlNodeId a = nd->nin > 0 ? nd->in[0] : DL_NONE, b = nd->nin > 1 ? nd->in[1] : DL_NONE;
  /* x keeps the result's shape: replacing the node by x changes nothing. */
#define SAME(x) dl_shape_eq(&g->nodes[x].shape, &nd->shape)
  /* An if chain, not a switch: ops without identities need not be listed. */
  if (nd->op == DL_OP_ADD) {
    if (const_all(g, b, 0) && SAME(a)) return a;
    if (const_all(g, a, 0) && SAME(b)) return b;
  } else if (nd->op == DL_OP_SUB) {
    if (const_all(g, b, 0) && SAME(a)) return a;
  } else if (nd->op == DL_OP_MUL) {
    if (const_all(g, b, 1) && SAME(a)) return a;
    if (const_all(g, a, 1) && SAME(b)) return b;
  } else if (nd->op == DL_OP_DIV || nd->op == DL_OP_POW) {
    if (const_all(g, b, 1) && SAME(a)) return a;
  } else if (nd->op == DL_OP_NEG) {
    if (g->nodes[a].op == DL_OP_NEG) return g->nodes[a].in[0];
  } else if (nd->op == DL_OP_RESHAPE) {
    while (g->nodes[a].op == DL_OP_RESHAPE)
      a = nd->in[0] = g->nodes[a].in[0];
    if (SAME(a)) return a;
  } else if (nd->op == DL_OP_EXPAND) {
    if (SAME(a)) return a; /* nothing broadcast: the mean factor is 1 */
  }
#undef SAME
  return DL_NONE;
}

/* ---- common subexpressions ---- */

static bool cse_candidate(const DlNode *nd) {
  return nd->op != DL_OP_INPUT && nd->op != DL_OP_PARAM && nd->op != DL_OP_HYPER &&
         nd->op != DL_OP_ASSIGN;
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  return h;
}

static uint64_t node_hash(const DlNode *nd) {
  uint64_t h = mix(0, (uint64_t)nd->op);
  h = mix(h, (uint64_t)nd->shape.rank);
  for (int i = 0; i < nd->shape.rank; i++)
    h = mix(h, (uint64_t)nd->shape.d[i]);
  for (int i = 0; i < nd->nin; i++)
    h = mix(h, (uint64_t)nd->in[i]);
  if (nd->op == DL_OP_CONST && !nd->attr.konst.data) {
    double v = nd->attr.konst.value;
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    h = mix(h, bits);
  }
  return h;
}

static bool same_attrs(const DlNode *x, const DlNode *y) {
  switch (dl_op_info[x->op].kind) {
  case DL_KIND_LEAF: {
    /* Only constants get here. */
    int64_t count = dl_shape_numel(&x->shape, 1);
    if (!x->attr.konst.data || !y->attr.konst.data)
      return !x->attr.konst.data && !y->attr.konst.data &&
             memcmp(&x->attr.konst.value, &y->attr.konst.value, sizeof(double)) == 0;
    return memcmp(x->attr.konst.data, y->attr.konst.data, sizeof(float) * (size_t)count) == 0;
  }
  case DL_KIND_MATMUL:
    return x->attr.matmul.ta == y->attr.matmul.ta && x->attr.matmul.tb == y->attr.matmul.tb;
  case DL_KIND_REDUCE:
    return x->attr.reduce.axes == y->attr.reduce.axes &&
           x->attr.reduce.keepdim == y->attr.reduce.keepdim;
  case DL_KIND_EXPAND: return x->attr.expand.mean == y->attr.expand.mean;
  /* Constructors zero the whole attribute union, so comparing an op's
   * attribute struct byte for byte is exact (two dropouts differ by their
   * stream: independent masks). */
  case DL_KIND_LAYOUT:
    return x->op == DL_OP_PERMUTE
               ? !memcmp(&x->attr.permute, &y->attr.permute, sizeof x->attr.permute)
           : x->op == DL_OP_SLICE ? !memcmp(&x->attr.slice, &y->attr.slice, sizeof x->attr.slice)
           : x->op == DL_OP_PAD   ? !memcmp(&x->attr.pad, &y->attr.pad, sizeof x->attr.pad)
                                  : x->attr.concat.axis == y->attr.concat.axis;
  case DL_KIND_CONV: return !memcmp(&x->attr.conv, &y->attr.conv, sizeof x->attr.conv);
  case DL_KIND_POOL: return !memcmp(&x->attr.pool, &y->attr.pool, sizeof x->attr.pool);
  case DL_KIND_RANDOM:
    return x->attr.dropout.p == y->attr.dropout.p &&
           x->attr.dropout.stream == y->attr.dropout.stream;
  case DL_KIND_INDEX: /* no attributes: the shapes say it all */
  case DL_KIND_UNARY:
  case DL_KIND_BINARY:
  case DL_KIND_RESHAPE:
  case DL_KIND_SOFTMAX:
  case DL_KIND_ASSIGN: return true;
  }
  return false;
}

static bool same_node(const DlNode *x, const DlNode *y) {
  if (x->op != y->op || x->dtype != y->dtype || x->nin != y->nin ||
      !dl_shape_eq(&x->shape, &y->shape))
    return false;
  for (int i = 0; i < x->nin; i++)
    if (x->in[i] != y->in[i]) return false;
  return same_attrs(x, y);
}

bool dl_simplify(DlGraph *g, DlSimplifyStats *stats) {
  DlSimplifyStats st = {0};
  if (!dl_graph_verify(g)) return false;
  int nn = g->nnodes;
  DlNodeId *rep = malloc(sizeof(DlNodeId) * (size_t)(nn + 1));
  /* Open addressing, power-of-two capacity at least twice the node count. */
  size_t cap = 16;
  while (cap < 2 * (size_t)nn)
    cap <<= 1;
  DlNodeId *table = malloc(sizeof(DlNodeId) * cap);
  for (size_t i = 0; i < cap; i++)
    table[i] = DL_NONE;

  /* relu_of[x]: a RELU node of input x, or DL_NONE. */
  DlNodeId *relu_of = malloc(sizeof(DlNodeId) * (size_t)(nn + 1));
  for (DlNodeId id = 0; id < nn; id++) {
    DlNode *nd = &g->nodes[id];
    rep[id] = id;
    relu_of[id] = DL_NONE;
    for (int i = 0; i < nd->nin; i++)
      nd->in[i] = rep[nd->in[i]];
    if (nd->op == DL_OP_STEP && relu_of[nd->in[0]] != DL_NONE) {
      nd->in[0] = relu_of[nd->in[0]];
      st.rewired++;
    }
    if (foldable(g, nd)) {
      fold(g, id);
      st.folded++;
    } else {
      DlNodeId same = identity(g, id);
      if (same != DL_NONE) {
        rep[id] = same;
        st.identities++;
        continue;
      }
    }
    if (nd->op == DL_OP_RELU && relu_of[nd->in[0]] == DL_NONE) relu_of[nd->in[0]] = id;
    if (!cse_candidate(nd)) continue;
    size_t h = (size_t)node_hash(nd) & (cap - 1);
    while (table[h] != DL_NONE && !same_node(&g->nodes[table[h]], nd))
      h = (h + 1) & (cap - 1);
    if (table[h] == DL_NONE) {
      table[h] = id;
    } else {
      rep[id] = table[h];
      /* The survivor keeps a source name if it had none. */
      if (!g->nodes[table[h]].name) g->nodes[table[h]].name = nd->name;
      st.merged++;
    }
  }
  if (g->output != DL_NONE) g->output = rep[g->output];
  if (g->loss != DL_NONE) g->loss = rep[g->loss];
  for (DlNodeId id = 0; g->grad && id < g->ngrad; id++)
    if (g->grad[id] != DL_NONE) g->grad[id] = rep[g->grad[id]];
  free(relu_of);
  free(table);
  free(rep);
  if (stats) *stats = st;
  return dl_graph_verify(g);
}
