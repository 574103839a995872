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
  case DL_OP_MAXIMUM:
  case DL_OP_GT:
  case DL_OP_EQ:
  case DL_OP_MAX:
  case DL_OP_PERMUTE:
  case DL_OP_SLICE:
  case DL_OP_PAD:
  case DL_OP_CONCAT:
  case DL_OP_GATHER:
  case DL_OP_SCATTER_ADD:
  case DL_OP_ONE_HOT:
  case DL_OP_CONV2D:
  case DL_OP_CONV2D_GRAD_INPUT:
  case DL_OP_CONV2D_GRAD_FILTER:
  case DL_OP_MAXPOOL2D:
  case DL_OP_AVGPOOL2D:
  case DL_OP_MAXPOOL2D_GRAD:
  case DL_OP_AVGPOOL2D_GRAD:
  case DL_OP_DROPOUT:
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
  case DL_OP_MAXIMUM: return a > b ? a : b;
  case DL_OP_GT: return a > b ? 1 : 0;
  case DL_OP_EQ: return a == b ? 1 : 0;
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
  case DL_OP_MAX:
  case DL_OP_PERMUTE:
  case DL_OP_SLICE:
  case DL_OP_PAD:
  case DL_OP_CONCAT:
  case DL_OP_GATHER:
  case DL_OP_SCATTER_ADD:
  case DL_OP_ONE_HOT:
  case DL_OP_CONV2D:
  case DL_OP_CONV2D_GRAD_INPUT:
  case DL_OP_CONV2D_GRAD_FILTER:
  case DL_OP_MAXPOOL2D:
  case DL_OP_AVGPOOL2D:
  case DL_OP_MAXPOOL2D_GRAD:
  case DL_OP_AVGPOOL2D_GRAD:
  case DL_OP_DROPOUT:
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
  bool is_max = nd->op == DL_OP_MAX;
  for (int64_t e = 0; e < total_out; e++)
    out[e] = is_max ? -INFINITY : 0.0;
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
    if (is_max)
      out[off] = a[e] > out[off] ? a[e] : out[off];
    else
      out[off] += a[e];
    next_index(idx, si, n);
  }
  if (nd->op == DL_OP_MEAN)
    for (int64_t e = 0; e < total_out; e++)
      out[e] /= (double)count;
}

/* Row-major offset of a multi-index. */
static int64_t offset_of(const DlShape *s, const int64_t *idx, int64_t n) {
  int64_t off = 0;
  for (int i = 0; i < s->rank; i++)
    off = off * dim(s, i, n) + idx[i];
  return off;
}

/* permute, slice, pad, concat: each output element is one input element or
 * (pad) zero. */
static void eval_layout(const DlGraph *g, const DlNode *nd, double *out, const double *a,
                        const double *b, int64_t n) {
  const DlShape *so = &nd->shape, *sa = &g->nodes[nd->in[0]].shape;
  int64_t total = dl_shape_numel(so, n);
  int64_t o[DL_MAX_RANK] = {0}, i[DL_MAX_RANK];
  for (int64_t e = 0; e < total; e++, next_index(o, so, n)) {
    const double *src = a;
    const DlShape *ss = sa;
    bool zero = false;
    for (int k = 0; k < so->rank; k++)
      i[k] = o[k];
    if (nd->op == DL_OP_PERMUTE) {
      for (int k = 0; k < so->rank; k++)
        i[nd->attr.permute.perm[k]] = o[k];
    } else if (nd->op == DL_OP_SLICE) {
      for (int k = 0; k < so->rank; k++)
        i[k] = o[k] + nd->attr.slice.start[k];
    } else if (nd->op == DL_OP_PAD) {
      for (int k = 0; k < so->rank; k++) {
        i[k] = o[k] - nd->attr.pad.before[k];
        zero |= i[k] < 0 || i[k] >= dim(sa, k, n);
      }
    } else { /* concat */
      int ax = nd->attr.concat.axis;
      if (o[ax] >= sa->d[ax]) {
        i[ax] = o[ax] - sa->d[ax];
        src = b;
        ss = &g->nodes[nd->in[1]].shape;
      }
    }
    out[e] = zero ? 0.0 : src[offset_of(ss, i, n)];
  }
}

/* The row of a table an index value selects: clamped to [0, rows - 1] (NaN
 * counts as 0), truncated toward zero. */
static int64_t table_row(double v, int64_t rows) {
  double hi = (double)(rows - 1);
  v = v > 0 ? v : 0;
  v = v < hi ? v : hi;
  return (int64_t)v;
}

/* gather: out[p, d] = table[row(idx[p]), d]; scatter_add: the adjoint. */
static void eval_index(const DlGraph *g, const DlNode *nd, double *out, const double *a,
                       const double *b, int64_t n) {
  if (nd->op == DL_OP_ONE_HOT) {
    int64_t classes = nd->shape.d[nd->shape.rank - 1];
    int64_t count = dl_shape_numel(&g->nodes[nd->in[0]].shape, n);
    for (int64_t p = 0; p < count; p++)
      for (int64_t c = 0; c < classes; c++)
        out[p * classes + c] = a[p] == (double)c ? 1.0 : 0.0;
    return;
  }
  bool gather = nd->op == DL_OP_GATHER;
  const DlShape *table = gather ? &g->nodes[nd->in[0]].shape : &nd->shape;
  int64_t rows = table->d[0], width = dl_shape_numel(table, n) / rows;
  int64_t count = dl_shape_numel(&g->nodes[nd->in[1]].shape, n);
  if (!gather) memset(out, 0, sizeof(double) * (size_t)(rows * width));
  for (int64_t p = 0; p < count; p++) {
    int64_t r = table_row(b[p], rows);
    for (int64_t d = 0; d < width; d++) {
      if (gather)
        out[p * width + d] = a[r * width + d];
      else
        out[r * width + d] += a[p * width + d];
    }
  }
}

/* conv2d and its two gradients share one loop over every (output element,
 * filter tap) pair that touches the input: y += x w, dx += dy w, dw += x dy. */
static void eval_conv(const DlGraph *g, const DlNode *nd, double *out, const double *a,
                      const double *b, int64_t n) {
  const DlShape *in0 = &g->nodes[nd->in[0]].shape, *in1 = &g->nodes[nd->in[1]].shape;
  const DlShape *xs = nd->op == DL_OP_CONV2D_GRAD_INPUT ? &nd->shape : in0;
  const DlShape *ws = nd->op == DL_OP_CONV2D_GRAD_FILTER ? &nd->shape : in1;
  const DlShape *ys = nd->op == DL_OP_CONV2D              ? &nd->shape
                      : nd->op == DL_OP_CONV2D_GRAD_INPUT ? in0
                                                          : in1;
  int64_t batch = dim(xs, 0, n), C = xs->d[1], H = xs->d[2], W = xs->d[3];
  int64_t O = ws->d[0], KH = ws->d[2], KW = ws->d[3], OH = ys->d[2], OW = ys->d[3];
  int sh = nd->attr.conv.sh, sw = nd->attr.conv.sw, ph = nd->attr.conv.ph, pw = nd->attr.conv.pw;
  memset(out, 0, sizeof(double) * (size_t)dl_shape_numel(&nd->shape, n));
  for (int64_t s = 0; s < batch; s++)
    for (int64_t o = 0; o < O; o++)
      for (int64_t i = 0; i < OH; i++)
        for (int64_t j = 0; j < OW; j++)
          for (int64_t c = 0; c < C; c++)
            for (int64_t ki = 0; ki < KH; ki++)
              for (int64_t kj = 0; kj < KW; kj++) {
                int64_t h = i * sh + ki - ph, w = j * sw + kj - pw;
                if (h < 0 || h >= H || w < 0 || w >= W) continue;
                int64_t xo = ((s * C + c) * H + h) * W + w;
                int64_t wo = ((o * C + c) * KH + ki) * KW + kj;
                int64_t yo = ((s * O + o) * OH + i) * OW + j;
                if (nd->op == DL_OP_CONV2D)
                  out[yo] += a[xo] * b[wo];
                else if (nd->op == DL_OP_CONV2D_GRAD_INPUT)
                  out[xo] += a[yo] * b[wo];
                else
                  out[wo] += a[xo] * b[yo];
              }
}

/* Pooling over the last two axes; the gradients visit the same windows.  A
 * window's max is its first element greater than all before it (starting
 * from -inf), and that element alone receives the gradient. */
static void eval_pool(const DlGraph *g, const DlNode *nd, double *out, const double *a,
                      const double *b, int64_t n) {
  bool grad = nd->op == DL_OP_MAXPOOL2D_GRAD || nd->op == DL_OP_AVGPOOL2D_GRAD;
  const DlShape *xs = grad ? &nd->shape : &g->nodes[nd->in[0]].shape;
  const DlShape *ys = !grad                            ? &nd->shape
                      : nd->op == DL_OP_AVGPOOL2D_GRAD ? &g->nodes[nd->in[0]].shape
                                                       : &g->nodes[nd->in[1]].shape;
  const double *dy = nd->op == DL_OP_MAXPOOL2D_GRAD ? b : a;
  int r = xs->rank;
  int64_t H = xs->d[r - 2], W = xs->d[r - 1], OH = ys->d[r - 2], OW = ys->d[r - 1];
  int64_t planes = dl_shape_numel(xs, n) / (H * W);
  int kh = nd->attr.pool.kh, kw = nd->attr.pool.kw, sh = nd->attr.pool.sh, sw = nd->attr.pool.sw;
  if (grad) memset(out, 0, sizeof(double) * (size_t)dl_shape_numel(xs, n));
  for (int64_t p = 0; p < planes; p++)
    for (int64_t i = 0; i < OH; i++)
      for (int64_t j = 0; j < OW; j++) {
        int64_t yo = (p * OH + i) * OW + j, first = (p * H + i * sh) * W + j * sw;
        double best = -INFINITY, sum = 0;
        int64_t at = first;
        for (int ki = 0; ki < kh; ki++)
          for (int kj = 0; kj < kw; kj++) {
            int64_t xo = first + ki * W + kj;
            if (nd->op == DL_OP_AVGPOOL2D_GRAD) {
              out[xo] += dy[yo] / (kh * kw);
            } else if (nd->op == DL_OP_AVGPOOL2D) {
              sum += a[xo];
            } else if (a[xo] > best) {
              best = a[xo];
              at = xo;
            }
          }
        if (nd->op == DL_OP_MAXPOOL2D) out[yo] = best;
        if (nd->op == DL_OP_AVGPOOL2D) out[yo] = sum / (kh * kw);
        if (nd->op == DL_OP_MAXPOOL2D_GRAD) out[at] += dy[yo];
      }
}

static void eval_dropout(const DlNode *nd, double *out, const double *x, double mode,
                         double seed_value, int64_t total) {
  double p = nd->attr.dropout.p;
  uint64_t seed = dl_dropout_seed(seed_value);
  for (int64_t e = 0; e < total; e++)
    out[e] = mode == 0                                                        ? x[e]
             : dl_dropout_keep(seed, nd->attr.dropout.stream, (uint64_t)e, p) ? x[e] / (1 - p)
                                                                              : 0.0;
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
  const double *c = nd->nin > 2 ? v[nd->in[2]] : NULL;

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
  case DL_OP_POW:
  case DL_OP_MAXIMUM:
  case DL_OP_GT:
  case DL_OP_EQ: {
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
  case DL_OP_MEAN:
  case DL_OP_MAX: eval_reduce(g, nd, out, a, n); break;
  case DL_OP_PERMUTE:
  case DL_OP_SLICE:
  case DL_OP_PAD:
  case DL_OP_CONCAT: eval_layout(g, nd, out, a, b, n); break;
  case DL_OP_GATHER:
  case DL_OP_SCATTER_ADD:
  case DL_OP_ONE_HOT: eval_index(g, nd, out, a, b, n); break;
  case DL_OP_CONV2D:
  case DL_OP_CONV2D_GRAD_INPUT:
  case DL_OP_CONV2D_GRAD_FILTER: eval_conv(g, nd, out, a, b, n); break;
  case DL_OP_MAXPOOL2D:
  case DL_OP_AVGPOOL2D:
  case DL_OP_MAXPOOL2D_GRAD:
  case DL_OP_AVGPOOL2D_GRAD: eval_pool(g, nd, out, a, b, n); break;
  case DL_OP_DROPOUT: eval_dropout(nd, out, a, b[0], c[0], total); break;
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
