/* interp.c - the reference interpreter: double precision, one obvious loop
 * per op.  It is the oracle against which code generation and the passes are
 * tested, so it favours clarity over speed everywhere. */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t dim(const DlShape *s, int i, int64_t n) {
  return s->d[i] == DL_DIM_BATCH ? n : s->d[i];
}

/* Advance a row-major multi-index over shape s; false when it wraps. */
static bool next_index(int64_t *idx, const DlShape *s, int64_t n) {
  for (int i = s->rank - 1; i >= 0; i--) {
    if (++idx[i] < dim(s, i, n)) return true;
    idx[i] = 0;
  }
  return false;
}

/* Flat offset into `in` of the element that broadcasting maps to output index
 * oidx (out has rank >= in's rank, aligned on the right). */
static int64_t bcast_offset(const DlShape *in, const DlShape *out, const int64_t *oidx, int64_t n) {
  int64_t off = 0;
  int lead = out->rank - in->rank;
  for (int i = 0; i < in->rank; i++) {
    int64_t d = dim(in, i, n);
    off = off * d + (d == 1 ? 0 : oidx[i + lead]);
  }
  return off;
}

static double unary(DlOp op, double x) {
  switch (op) {
  case DL_OP_NEG: return -x;
  case DL_OP_EXP: return exp(x);
  case DL_OP_LOG: return log(x);
  case DL_OP_SQRT: return sqrt(x);
  case DL_OP_TANH: return tanh(x);
  case DL_OP_SIGMOID: return 1.0 / (1.0 + exp(-x));
  case DL_OP_RELU: return x > 0 ? x : 0;
  case DL_OP_STEP: return x > 0 ? 1 : 0;
  case DL_OP_ABS: return fabs(x);
  case DL_OP_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
  case DL_OP_INPUT:
  case DL_OP_PARAM:
  case DL_OP_CONST:
  case DL_OP_HYPER:
  case DL_OP_ADD:
  case DL_OP_SUB:
  case DL_OP_MUL:
  case DL_OP_DIV:
  case DL_OP_POW:
  case DL_OP_MATMUL:
  case DL_OP_SUM:
  case DL_OP_MEAN:
  case DL_OP_EXPAND:
  case DL_OP_RESHAPE:
  case DL_OP_SOFTMAX:
  case DL_OP_LOG_SOFTMAX:
  case DL_OP_ASSIGN: break;
  }
  return NAN;
}

static double binary(DlOp op, double a, double b) {
  switch (op) {
  case DL_OP_ADD: return a + b;
  case DL_OP_SUB: return a - b;
  case DL_OP_MUL: return a * b;
  case DL_OP_DIV: return a / b;
  case DL_OP_POW: return pow(a, b);
  case DL_OP_INPUT:
  case DL_OP_PARAM:
  case DL_OP_CONST:
  case DL_OP_HYPER:
  case DL_OP_NEG:
  case DL_OP_EXP:
  case DL_OP_LOG:
  case DL_OP_SQRT:
  case DL_OP_TANH:
  case DL_OP_SIGMOID:
  case DL_OP_RELU:
  case DL_OP_STEP:
  case DL_OP_ABS:
  case DL_OP_SIGN:
  case DL_OP_MATMUL:
  case DL_OP_SUM:
  case DL_OP_MEAN:
  case DL_OP_EXPAND:
  case DL_OP_RESHAPE:
  case DL_OP_SOFTMAX:
  case DL_OP_LOG_SOFTMAX:
  case DL_OP_ASSIGN: break;
  }
  return NAN;
}

static void eval_matmul(const DlGraph *g, const DlNode *nd, double *out, const double *a,
                        const double *b, int64_t n) {
  const DlShape *sa = &g->nodes[nd->in[0]].shape, *sb = &g->nodes[nd->in[1]].shape;
  const DlShape *so = &nd->shape;
  bool ta = nd->attr.matmul.ta, tb = nd->attr.matmul.tb;
  int64_t m = dim(so, so->rank - 2, n), p = dim(so, so->rank - 1, n);
  int64_t k = ta ? dim(sa, sa->rank - 2, n) : dim(sa, sa->rank - 1, n);
  /* Leading (batch-of-matrices) shapes, for broadcasting. */
  DlShape lo = *so, la = *sa, lb = *sb;
  lo.rank -= 2;
  la.rank -= 2;
  lb.rank -= 2;
  int64_t idx[DL_MAX_RANK] = {0};
  int64_t nbatch = dl_shape_numel(&lo, n);
  for (int64_t bi = 0; bi < nbatch; bi++) {
    const double *ma = a + bcast_offset(&la, &lo, idx, n) * m * k;
    const double *mb = b + bcast_offset(&lb, &lo, idx, n) * k * p;
    double *mo = out + bi * m * p;
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < p; j++) {
        double acc = 0;
        for (int64_t q = 0; q < k; q++)
          acc += (ta ? ma[q * m + i] : ma[i * k + q]) * (tb ? mb[j * k + q] : mb[q * p + j]);
        mo[i * p + j] = acc;
      }
    next_index(idx, &lo, n);
  }
}

static void eval_reduce(const DlGraph *g, const DlNode *nd, double *out, const double *a,
                        int64_t n) {
  const DlShape *si = &g->nodes[nd->in[0]].shape;
  uint32_t axes = nd->attr.reduce.axes;
  int64_t total_out = dl_shape_numel(&nd->shape, n);
  memset(out, 0, sizeof(double) * (size_t)total_out);
  int64_t count = 1;
  for (int i = 0; i < si->rank; i++)
    if (axes & (1u << i)) count *= dim(si, i, n);
  int64_t idx[DL_MAX_RANK] = {0};
  int64_t total_in = dl_shape_numel(si, n);
  for (int64_t e = 0; e < total_in; e++) {
    /* Output offset: the input index with the reduced axes dropped. */
    int64_t off = 0;
    for (int i = 0; i < si->rank; i++)
      if (!(axes & (1u << i))) off = off * dim(si, i, n) + idx[i];
    out[off] += a[e];
    next_index(idx, si, n);
  }
  if (nd->op == DL_OP_MEAN)
    for (int64_t e = 0; e < total_out; e++)
      out[e] /= (double)count;
}

static void eval_softmax(const DlNode *nd, double *out, const double *a, int64_t n) {
  int64_t w = dim(&nd->shape, nd->shape.rank - 1, n);
  int64_t rows = dl_shape_numel(&nd->shape, n) / (w ? w : 1);
  for (int64_t r = 0; r < rows; r++) {
    const double *x = a + r * w;
    double *y = out + r * w;
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < w; j++)
      mx = x[j] > mx ? x[j] : mx;
    for (int64_t j = 0; j < w; j++)
      sum += exp(x[j] - mx);
    for (int64_t j = 0; j < w; j++)
      y[j] = nd->op == DL_OP_SOFTMAX ? exp(x[j] - mx) / sum : x[j] - mx - log(sum);
  }
}

static void eval_node(DlInterp *it, DlNodeId id) {
  const DlGraph *g = it->g;
  const DlNode *nd = &g->nodes[id];
  int64_t n = it->n;
  int64_t total = dl_shape_numel(&nd->shape, n);
  double *const *v = it->values;
  const double *a = nd->nin > 0 ? v[nd->in[0]] : NULL;
  const double *b = nd->nin > 1 ? v[nd->in[1]] : NULL;

  if (nd->op == DL_OP_ASSIGN) {
    /* Writes the parameter's storage; the node itself aliases it. */
    memcpy(v[nd->in[0]], b, sizeof(double) * (size_t)total);
    it->values[id] = v[nd->in[0]];
    it->owned[id] = false;
    return;
  }
  if ((nd->op == DL_OP_INPUT || nd->op == DL_OP_PARAM || nd->op == DL_OP_HYPER) && v[id] &&
      !it->owned[id])
    return;          /* supplied by the caller */
  if (it->owned[id]) /* evaluated before: evaluate again */
    free(it->values[id]);

  double *out = calloc((size_t)(total > 0 ? total : 1), sizeof(double));
  it->values[id] = out;
  it->owned[id] = true;
  int64_t idx[DL_MAX_RANK] = {0};

  switch (nd->op) {
  case DL_OP_INPUT: break; /* not supplied: zeros */
  case DL_OP_PARAM:
    for (int64_t e = 0; e < total; e++)
      out[e] = nd->attr.param.kind == DL_INIT_DATA    ? nd->attr.param.data[e]
               : nd->attr.param.kind == DL_INIT_CONST ? nd->attr.param.a
                                                      : 0;
    break;
  case DL_OP_HYPER: out[0] = nd->attr.hyper.value; break;
  case DL_OP_CONST:
    for (int64_t e = 0; e < total; e++)
      out[e] = nd->attr.konst.data ? nd->attr.konst.data[e] : nd->attr.konst.value;
    break;
  case DL_OP_NEG:
  case DL_OP_EXP:
  case DL_OP_LOG:
  case DL_OP_SQRT:
  case DL_OP_TANH:
  case DL_OP_SIGMOID:
  case DL_OP_RELU:
  case DL_OP_STEP:
  case DL_OP_ABS:
  case DL_OP_SIGN:
    for (int64_t e = 0; e < total; e++)
      out[e] = unary(nd->op, a[e]);
    break;
  case DL_OP_ADD:
  case DL_OP_SUB:
  case DL_OP_MUL:
  case DL_OP_DIV:
  case DL_OP_POW: {
    const DlShape *sa = &g->nodes[nd->in[0]].shape, *sb = &g->nodes[nd->in[1]].shape;
    for (int64_t e = 0; e < total; e++) {
      out[e] = binary(nd->op, a[bcast_offset(sa, &nd->shape, idx, n)],
                      b[bcast_offset(sb, &nd->shape, idx, n)]);
      next_index(idx, &nd->shape, n);
    }
    break;
  }
  case DL_OP_MATMUL: eval_matmul(g, nd, out, a, b, n); break;
  case DL_OP_SUM:
  case DL_OP_MEAN: eval_reduce(g, nd, out, a, n); break;
  case DL_OP_EXPAND: {
    const DlShape *sa = &g->nodes[nd->in[0]].shape;
    double scale =
        nd->attr.expand.mean ? (double)dl_shape_numel(sa, n) / (double)(total ? total : 1) : 1.0;
    for (int64_t e = 0; e < total; e++) {
      out[e] = a[bcast_offset(sa, &nd->shape, idx, n)] * scale;
      next_index(idx, &nd->shape, n);
    }
    break;
  }
  case DL_OP_RESHAPE: memcpy(out, a, sizeof(double) * (size_t)total); break;
  case DL_OP_SOFTMAX:
  case DL_OP_LOG_SOFTMAX: eval_softmax(nd, out, a, n); break;
  case DL_OP_ASSIGN: break; /* handled above / not an op */
  }
}

void dl_interp_init(DlInterp *it, const DlGraph *g, int64_t n) {
  it->g = g;
  it->n = n;
  it->values = calloc((size_t)g->nnodes + 1, sizeof(double *));
  it->owned = calloc((size_t)g->nnodes + 1, sizeof(bool));
}

void dl_interp_run(DlInterp *it, const DlNodeId *eval, int neval) {
  if (!eval) {
    for (DlNodeId id = 0; id < it->g->nnodes; id++)
      eval_node(it, id);
    return;
  }
  for (int i = 0; i < neval; i++)
    eval_node(it, eval[i]);
}

void dl_interp_free(DlInterp *it) {
  if (!it->values) return;
  for (int i = 0; i < it->g->nnodes; i++)
    if (it->owned[i]) free(it->values[i]);
  free(it->values);
  free(it->owned);
  it->values = NULL;
  it->owned = NULL;
}
