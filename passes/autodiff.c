/* autodiff.c - reverse-mode automatic differentiation as a graph transform.
 *
 * Walk the graph backwards from the loss; each node's adjoint (the gradient
 * of the loss with respect to its value) is turned into adjoints of its
 * inputs by the op's vector-Jacobian product, built from ordinary IR nodes.
 * Where a value fans out, the contributions are summed.  Only nodes that
 * depend on a parameter and feed the loss get adjoints.
 */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

typedef struct AdState {
  DlGraph *g;
  DlNodeId *adj; /* adjoint per forward node, DL_NONE if none yet */
  bool *needs;   /* forward node depends on a parameter */
} AdState;

static void accumulate(AdState *st, DlNodeId target, DlNodeId contrib, DlLoc loc) {
  if (contrib == DL_NONE || !st->needs[target]) return;
  DlGraph *g = st->g;
  if (st->adj[target] == DL_NONE)
    st->adj[target] = contrib;
  else
    st->adj[target] = dl_binary(g, DL_OP_ADD, loc, st->adj[target], contrib);
}

/* Shape of a reduction's result with keepdim, so the adjoint can broadcast. */
static DlShape keepdim_shape(const DlShape *in, uint32_t axes) {
  DlShape s = *in;
  for (int i = 0; i < s.rank; i++)
    if (axes & (1u << i)) s.d[i] = 1;
  return s;
}

static void backprop_node(AdState *st, DlNodeId id) {
  DlGraph *g = st->g;
  /* Copy: constructors may grow (move) the node array. */
  const DlNode nd = g->nodes[id];
  DlNodeId dy = st->adj[id];
  DlLoc loc = nd.loc;
  DlNodeId a = nd.nin > 0 ? nd.in[0] : DL_NONE, b = nd.nin > 1 ? nd.in[1] : DL_NONE;
  bool need_a = a != DL_NONE && st->needs[a], need_b = b != DL_NONE && st->needs[b];
  DlShape sa = a != DL_NONE ? g->nodes[a].shape : dl_shape_scalar();
  DlShape sb = b != DL_NONE ? g->nodes[b].shape : dl_shape_scalar();
#define K(v) dl_const_scalar(g, loc, (v))
#define MUL(x, y) dl_binary(g, DL_OP_MUL, loc, (x), (y))
#define SUB(x, y) dl_binary(g, DL_OP_SUB, loc, (x), (y))
#define DIV(x, y) dl_binary(g, DL_OP_DIV, loc, (x), (y))

  switch (nd.op) {
  case DL_OP_INPUT:
  case DL_OP_PARAM:
  case DL_OP_CONST:
  case DL_OP_HYPER:
  case DL_OP_ASSIGN:
  case DL_OP_STEP:
  case DL_OP_SIGN:
  case DL_OP_GT:
  case DL_OP_EQ:
  case DL_OP_ONE_HOT: /* piecewise constant: zero gradient */ break;
  case DL_OP_NEG: accumulate(st, a, dl_unary(g, DL_OP_NEG, loc, dy), loc); break;
  case DL_OP_EXP: accumulate(st, a, MUL(dy, id), loc); break;
  case DL_OP_LOG: accumulate(st, a, DIV(dy, a), loc); break;
  case DL_OP_SQRT: accumulate(st, a, MUL(dy, DIV(K(0.5), id)), loc); break;
  case DL_OP_TANH: accumulate(st, a, MUL(dy, SUB(K(1), MUL(id, id))), loc); break;
  case DL_OP_SIGMOID: accumulate(st, a, MUL(dy, MUL(id, SUB(K(1), id))), loc); break;
  case DL_OP_RELU: accumulate(st, a, MUL(dy, dl_unary(g, DL_OP_STEP, loc, a)), loc); break;
  case DL_OP_ABS: accumulate(st, a, MUL(dy, dl_unary(g, DL_OP_SIGN, loc, a)), loc); break;
  case DL_OP_ADD:
    if (need_a) accumulate(st, a, dl_reduce_to(g, loc, dy, sa), loc);
    if (need_b) accumulate(st, b, dl_reduce_to(g, loc, dy, sb), loc);
    break;
  case DL_OP_SUB:
    if (need_a) accumulate(st, a, dl_reduce_to(g, loc, dy, sa), loc);
    if (need_b) accumulate(st, b, dl_reduce_to(g, loc, dl_unary(g, DL_OP_NEG, loc, dy), sb), loc);
    break;
  case DL_OP_MUL:
    if (need_a) accumulate(st, a, dl_reduce_to(g, loc, MUL(dy, b), sa), loc);
    if (need_b) accumulate(st, b, dl_reduce_to(g, loc, MUL(dy, a), sb), loc);
    break;
  case DL_OP_DIV:
    if (need_a) accumulate(st, a, dl_reduce_to(g, loc, DIV(dy, b), sa), loc);
    if (need_b)
      accumulate(st, b, dl_reduce_to(g, loc, dl_unary(g, DL_OP_NEG, loc, DIV(MUL(dy, id), b)), sb),
                 loc);
    break;
  case DL_OP_POW:
    /* d/da a^b = b a^(b-1);  d/db a^b = a^b log a */
    if (need_a) {
      DlNodeId p = dl_binary(g, DL_OP_POW, loc, a, SUB(b, K(1)));
      accumulate(st, a, dl_reduce_to(g, loc, MUL(dy, MUL(b, p)), sa), loc);
    }
    if (need_b)
      accumulate(st, b, dl_reduce_to(g, loc, MUL(dy, MUL(id, dl_unary(g, DL_OP_LOG, loc, a))), sb),
                 loc);
    break;
  case DL_OP_MAXIMUM: {
    /* to the larger input; on a tie, half to each */
    DlNodeId tie = MUL(K(0.5), dl_compare(g, DL_OP_EQ, loc, a, b));
    if (need_a) {
      DlNodeId share = dl_binary(g, DL_OP_ADD, loc, dl_compare(g, DL_OP_GT, loc, a, b), tie);
      accumulate(st, a, dl_reduce_to(g, loc, MUL(dy, share), sa), loc);
    }
    if (need_b) {
      DlNodeId share = dl_binary(g, DL_OP_ADD, loc, dl_compare(g, DL_OP_GT, loc, b, a), tie);
      accumulate(st, b, dl_reduce_to(g, loc, MUL(dy, share), sb), loc);
    }
    break;
  }
  case DL_OP_MATMUL: {
    /* y = op(A) op(B); the adjoint of each operand, in its stored layout. */
    bool ta = nd.attr.matmul.ta, tb = nd.attr.matmul.tb;
    if (need_a) {
      DlNodeId da = !ta ? dl_matmul(g, loc, dy, b, false, !tb) : dl_matmul(g, loc, b, dy, tb, true);
      accumulate(st, a, dl_reduce_to(g, loc, da, sa), loc);
    }
    if (need_b) {
      DlNodeId db = !tb ? dl_matmul(g, loc, a, dy, !ta, false) : dl_matmul(g, loc, dy, a, true, ta);
      accumulate(st, b, dl_reduce_to(g, loc, db, sb), loc);
    }
    break;
  }
  case DL_OP_SUM:
  case DL_OP_MEAN: {
    DlShape ks = keepdim_shape(&sa, nd.attr.reduce.axes);
    DlNodeId k = dl_shape_eq(&g->nodes[dy].shape, &ks) ? dy : dl_reshape(g, loc, dy, ks);
    accumulate(st, a, dl_expand(g, loc, k, sa, nd.op == DL_OP_MEAN), loc);
    break;
  }
  case DL_OP_MAX: {
    /* dy goes to the elements equal to the max, shared evenly among ties */
    DlShape ks = keepdim_shape(&sa, nd.attr.reduce.axes);
    DlNodeId yk = dl_shape_eq(&nd.shape, &ks) ? id : dl_reshape(g, loc, id, ks);
    DlNodeId dyk = dl_shape_eq(&g->nodes[dy].shape, &ks) ? dy : dl_reshape(g, loc, dy, ks);
    DlNodeId hit = dl_compare(g, DL_OP_EQ, loc, a, yk);
    DlNodeId ties = dl_reduce(g, DL_OP_SUM, loc, hit, nd.attr.reduce.axes, true);
    accumulate(st, a, MUL(hit, DIV(dyk, ties)), loc);
    break;
  }
  case DL_OP_PERMUTE: {
    int inv[DL_MAX_RANK];
    for (int i = 0; i < sa.rank; i++)
      inv[nd.attr.permute.perm[i]] = i;
    accumulate(st, a, dl_permute(g, loc, dy, inv), loc);
    break;
  }
  case DL_OP_SLICE: {
    int64_t before[DL_MAX_RANK], after[DL_MAX_RANK];
    for (int i = 0; i < sa.rank; i++) {
      bool batch = sa.d[i] == DL_DIM_BATCH;
      before[i] = batch ? 0 : nd.attr.slice.start[i];
      after[i] = batch ? 0 : sa.d[i] - nd.attr.slice.start[i] - nd.shape.d[i];
    }
    accumulate(st, a, dl_pad(g, loc, dy, before, after), loc);
    break;
  }
  case DL_OP_PAD: {
    int64_t start[DL_MAX_RANK], stop[DL_MAX_RANK];
    for (int i = 0; i < sa.rank; i++) {
      bool batch = sa.d[i] == DL_DIM_BATCH;
      start[i] = batch ? 0 : nd.attr.pad.before[i];
      stop[i] = batch ? DL_DIM_BATCH : nd.attr.pad.before[i] + sa.d[i];
    }
    accumulate(st, a, dl_slice(g, loc, dy, start, stop), loc);
    break;
  }
  case DL_OP_CONCAT: {
    int ax = nd.attr.concat.axis;
    int64_t start[DL_MAX_RANK], stop[DL_MAX_RANK];
    for (int i = 0; i < sa.rank; i++) {
      start[i] = 0;
      stop[i] = sa.d[i];
    }
    if (need_a) accumulate(st, a, dl_slice(g, loc, dy, start, stop), loc);
    start[ax] = sa.d[ax];
    stop[ax] = sa.d[ax] + sb.d[ax];
    if (need_b) accumulate(st, b, dl_slice(g, loc, dy, start, stop), loc);
    break;
  }
  case DL_OP_GATHER: /* to the table rows; indices are piecewise constant */
    accumulate(st, a, dl_scatter_add(g, loc, dy, b, sa), loc);
    break;
  case DL_OP_SCATTER_ADD: accumulate(st, a, dl_gather(g, loc, dy, b), loc); break;
  case DL_OP_CONV2D: {
    int sh = nd.attr.conv.sh, sw = nd.attr.conv.sw, ph = nd.attr.conv.ph, pw = nd.attr.conv.pw;
    if (need_a) accumulate(st, a, dl_conv2d_grad_input(g, loc, dy, b, sa, sh, sw, ph, pw), loc);
    if (need_b) accumulate(st, b, dl_conv2d_grad_filter(g, loc, a, dy, sb, sh, sw, ph, pw), loc);
    break;
  }
  case DL_OP_CONV2D_GRAD_INPUT: {
    /* y = dx(a = dy, b = w) is bilinear: da = conv2d(dy', w), db = dw(dy', a) */
    int sh = nd.attr.conv.sh, sw = nd.attr.conv.sw, ph = nd.attr.conv.ph, pw = nd.attr.conv.pw;
    if (need_a) accumulate(st, a, dl_conv2d(g, loc, dy, b, sh, sw, ph, pw), loc);
    if (need_b) accumulate(st, b, dl_conv2d_grad_filter(g, loc, dy, a, sb, sh, sw, ph, pw), loc);
    break;
  }
  case DL_OP_CONV2D_GRAD_FILTER: {
    /* y = dw(a = x, b = dy): da = dx(b, dy'), db = conv2d(a, dy') */
    int sh = nd.attr.conv.sh, sw = nd.attr.conv.sw, ph = nd.attr.conv.ph, pw = nd.attr.conv.pw;
    if (need_a) accumulate(st, a, dl_conv2d_grad_input(g, loc, b, dy, sa, sh, sw, ph, pw), loc);
    if (need_b) accumulate(st, b, dl_conv2d(g, loc, a, dy, sh, sw, ph, pw), loc);
    break;
  }
  case DL_OP_MAXPOOL2D:
    accumulate(st, a,
               dl_maxpool2d_grad(g, loc, a, dy, nd.attr.pool.kh, nd.attr.pool.kw, nd.attr.pool.sh,
                                 nd.attr.pool.sw),
               loc);
    break;
  case DL_OP_AVGPOOL2D:
    accumulate(st, a,
               dl_avgpool2d_grad(g, loc, dy, sa, nd.attr.pool.kh, nd.attr.pool.kw, nd.attr.pool.sh,
                                 nd.attr.pool.sw),
               loc);
    break;
  case DL_OP_AVGPOOL2D_GRAD: /* linear, the adjoint of avgpool2d */
    accumulate(st, a,
               dl_pool2d(g, DL_OP_AVGPOOL2D, loc, dy, nd.attr.pool.kh, nd.attr.pool.kw,
                         nd.attr.pool.sh, nd.attr.pool.sw),
               loc);
    break;
  case DL_OP_MAXPOOL2D_GRAD:
    /* Zero with respect to x (the routing is piecewise constant); with
     * respect to dy it would need an op that reads the window maxima's
     * positions, which no model needs yet. */
    if (need_b)
      dl_error(g->cc, loc,
               "the gradient of 'maxpool2d_grad' (a second derivative through "
               "max-pooling) is not supported");
    break;
  case DL_OP_DROPOUT: /* the same mask: same seed, same stream */
    accumulate(st, a, dl_dropout_stream(g, loc, dy, nd.attr.dropout.p, nd.attr.dropout.stream),
               loc);
    break;
  case DL_OP_EXPAND:
    accumulate(st, a,
               nd.attr.expand.mean ? dl_mean_to(g, loc, dy, sa) : dl_reduce_to(g, loc, dy, sa),
               loc);
    break;
  case DL_OP_RESHAPE: accumulate(st, a, dl_reshape(g, loc, dy, sa), loc); break;
  case DL_OP_SOFTMAX: {
    /* da = y * (dy - sum(dy * y, last axis)) */
    uint32_t last = 1u << (sa.rank - 1);
    DlNodeId s = dl_reduce(g, DL_OP_SUM, loc, MUL(dy, id), last, true);
    accumulate(st, a, MUL(id, SUB(dy, s)), loc);
    break;
  }
  case DL_OP_LOG_SOFTMAX: {
    /* da = dy - softmax(a) * sum(dy, last axis), softmax(a) = exp(y) */
    uint32_t last = 1u << (sa.rank - 1);
    DlNodeId s = dl_reduce(g, DL_OP_SUM, loc, dy, last, true);
    accumulate(st, a, SUB(dy, MUL(dl_unary(g, DL_OP_EXP, loc, id), s)), loc);
    break;
  }
  }
#undef K
#undef MUL
#undef SUB
#undef DIV
}

bool dl_autodiff(DlGraph *g) {
  DlCompiler *cc = g->cc;
  if (g->loss == DL_NONE) {
    dl_error(cc, DL_NOLOC, "model '%s' has no 'loss' to differentiate", g->name);
    return false;
  }
  int nfwd = g->nnodes;
  AdState st = {g, NULL, NULL};
  st.adj = malloc(sizeof(DlNodeId) * (size_t)nfwd);
  st.needs = calloc((size_t)nfwd, sizeof(bool));
  for (int i = 0; i < nfwd; i++) {
    st.adj[i] = DL_NONE;
    const DlNode *nd = &g->nodes[i];
    st.needs[i] = nd->op == DL_OP_PARAM;
    for (int k = 0; k < nd->nin; k++)
      st.needs[i] |= st.needs[nd->in[k]];
  }
  if (st.needs[g->loss]) {
    st.adj[g->loss] = dl_const_scalar(g, g->nodes[g->loss].loc, 1.0);
    for (DlNodeId id = g->loss; id >= 0 && !dl_failed(cc); id--)
      if (st.adj[id] != DL_NONE) backprop_node(&st, id);
  }
  g->grad = dl_arena_alloc(cc->arena, sizeof(DlNodeId) * (size_t)nfwd);
  g->ngrad = nfwd;
  for (int i = 0; i < nfwd; i++) {
    g->grad[i] = st.adj[i];
    if (st.adj[i] != DL_NONE && g->nodes[i].op == DL_OP_PARAM && !g->nodes[st.adj[i]].name)
      dl_node_set_name(g, st.adj[i], dl_arena_printf(cc->arena, "d%s", g->nodes[i].name));
  }
  free(st.adj);
  free(st.needs);
  return !dl_failed(cc);
}
