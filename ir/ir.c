/* ir.c - the graph, its constructors (shape rules), verifier and printer. */
#include "ir.h"

#include <math.h>
#include <string.h>

const DlOpInfo dl_op_info[DL_OP_COUNT] = {
#define DL_OP(id, name, nin, kind) [DL_OP_##id] = {name, nin, DL_KIND_##kind},
#include "ops.def"
#undef DL_OP
};

DlGraph *dl_graph_new(DlCompiler *cc, const char *name) {
  DlGraph *g = dl_arena_alloc(cc->arena, sizeof(DlGraph));
  g->cc = cc;
  g->name = dl_arena_strdup(cc->arena, name ? name : "model");
  g->output = DL_NONE;
  g->loss = DL_NONE;
  return g;
}

/* ---- shapes ---- */

DlShape dl_shape_make(int rank, const int64_t *dims) {
  DlShape s = {0};
  s.rank = rank;
  for (int i = 0; i < rank && i < DL_MAX_RANK; i++)
    s.d[i] = dims[i];
  return s;
}

DlShape dl_shape_scalar(void) {
  return (DlShape){0};
}

bool dl_shape_eq(const DlShape *a, const DlShape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->d[i] != b->d[i]) return false;
  return true;
}

int64_t dl_shape_numel(const DlShape *s, int64_t n) {
  int64_t k = 1;
  for (int i = 0; i < s->rank; i++)
    k *= s->d[i] == DL_DIM_BATCH ? n : s->d[i];
  return k;
}

int dl_shape_batch_dims(const DlShape *s) {
  int k = 0;
  for (int i = 0; i < s->rank; i++)
    k += s->d[i] == DL_DIM_BATCH;
  return k;
}

char *dl_shape_str(const DlShape *s, char *buf, size_t size) {
  size_t at = 0;
  at += (size_t)snprintf(buf + at, size - at, "[");
  for (int i = 0; i < s->rank && at < size; i++) {
    if (s->d[i] == DL_DIM_BATCH)
      at += (size_t)snprintf(buf + at, size - at, "%sN", i ? ", " : "");
    else
      at += (size_t)snprintf(buf + at, size - at, "%s%lld", i ? ", " : "", (long long)s->d[i]);
  }
  if (at < size) snprintf(buf + at, size - at, "]");
  return buf;
}

bool dl_shape_broadcast(const DlShape *a, const DlShape *b, DlShape *out) {
  DlShape r = {0};
  r.rank = a->rank > b->rank ? a->rank : b->rank;
  for (int i = 0; i < r.rank; i++) {
    int ia = a->rank - r.rank + i, ib = b->rank - r.rank + i;
    int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
    if (da == db)
      r.d[i] = da;
    else if (da == 1)
      r.d[i] = db;
    else if (db == 1)
      r.d[i] = da;
    else
      return false;
  }
  *out = r;
  return true;
}

/* ---- node creation ---- */

static DlNodeId push_node(DlGraph *g, DlOp op, DlLoc loc, DlShape shape, int nin,
                          const DlNodeId *in) {
  DL_ARENA_GROW(g->cc->arena, g->nodes, g->nnodes, g->cap);
  DlNodeId id = g->nnodes++;
  DlNode *nd = &g->nodes[id];
  memset(nd, 0, sizeof(*nd));
  nd->op = op;
  nd->dtype = DL_F32;
  nd->shape = shape;
  nd->nin = nin;
  for (int i = 0; i < nin; i++)
    nd->in[i] = in[i];
  nd->loc = loc;
  return id;
}

static const char *shape_s(DlGraph *g, const DlShape *s) {
  char buf[128];
  return dl_arena_strdup(g->cc->arena, dl_shape_str(s, buf, sizeof buf));
}

DlNodeId dl_input(DlGraph *g, DlLoc loc, const char *name, DlShape shape, DlInputRole role) {
  DlNodeId id = push_node(g, DL_OP_INPUT, loc, shape, 0, NULL);
  g->nodes[id].attr.input.role = role;
  g->nodes[id].name = dl_arena_strdup(g->cc->arena, name);
  return id;
}

DlNodeId dl_param(DlGraph *g, DlLoc loc, const char *name, DlShape shape, DlInit init) {
  if (dl_shape_batch_dims(&shape) > 0) {
    dl_error(g->cc, loc, "parameter '%s' cannot have the batch dimension N: %s", name,
             shape_s(g, &shape));
    return DL_NONE;
  }
  if (init.kind == DL_INIT_DATA) {
    size_t bytes = sizeof(float) * (size_t)dl_shape_numel(&shape, 1);
    float *copy = dl_arena_alloc(g->cc->arena, bytes);
    memcpy(copy, init.data, bytes);
    init.data = copy;
  }
  DlNodeId id = push_node(g, DL_OP_PARAM, loc, shape, 0, NULL);
  g->nodes[id].attr.param = init;
  g->nodes[id].name = dl_arena_strdup(g->cc->arena, name);
  return id;
}

DlNodeId dl_const_fill(DlGraph *g, DlLoc loc, DlShape shape, double value) {
  DlNodeId id = push_node(g, DL_OP_CONST, loc, shape, 0, NULL);
  g->nodes[id].attr.konst.value = value;
  return id;
}

DlNodeId dl_const_scalar(DlGraph *g, DlLoc loc, double value) {
  return dl_const_fill(g, loc, dl_shape_scalar(), value);
}

DlNodeId dl_const_data(DlGraph *g, DlLoc loc, DlShape shape, const float *data) {
  size_t bytes = sizeof(float) * (size_t)dl_shape_numel(&shape, 1);
  float *copy = dl_arena_alloc(g->cc->arena, bytes);
  memcpy(copy, data, bytes);
  DlNodeId id = push_node(g, DL_OP_CONST, loc, shape, 0, NULL);
  g->nodes[id].attr.konst.data = copy;
  return id;
}

DlNodeId dl_hyper(DlGraph *g, DlLoc loc, const char *name, double default_value) {
  DlNodeId id = push_node(g, DL_OP_HYPER, loc, dl_shape_scalar(), 0, NULL);
  g->nodes[id].attr.hyper.value = default_value;
  g->nodes[id].name = dl_arena_strdup(g->cc->arena, name);
  return id;
}

DlNodeId dl_unary(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a) {
  if (a == DL_NONE) return DL_NONE;
  return push_node(g, op, loc, g->nodes[a].shape, 1, &a);
}

DlNodeId dl_binary(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a, DlNodeId b) {
  if (a == DL_NONE || b == DL_NONE) return DL_NONE;
  DlShape out;
  if (!dl_shape_broadcast(&g->nodes[a].shape, &g->nodes[b].shape, &out)) {
    dl_error(g->cc, loc, "shape mismatch in '%s': %s vs %s (cannot broadcast)", dl_op_info[op].name,
             shape_s(g, &g->nodes[a].shape), shape_s(g, &g->nodes[b].shape));
    return DL_NONE;
  }
  DlNodeId in[2] = {a, b};
  return push_node(g, op, loc, out, 2, in);
}

DlNodeId dl_matmul(DlGraph *g, DlLoc loc, DlNodeId a, DlNodeId b, bool ta, bool tb) {
  if (a == DL_NONE || b == DL_NONE) return DL_NONE;
  const DlShape *sa = &g->nodes[a].shape, *sb = &g->nodes[b].shape;
  if (sa->rank < 2 || sb->rank < 2) {
    dl_error(g->cc, loc, "shape mismatch in 'matmul': %s @ %s (both operands must be matrices)",
             shape_s(g, sa), shape_s(g, sb));
    return DL_NONE;
  }
  int64_t m = ta ? sa->d[sa->rank - 1] : sa->d[sa->rank - 2];
  int64_t ka = ta ? sa->d[sa->rank - 2] : sa->d[sa->rank - 1];
  int64_t kb = tb ? sb->d[sb->rank - 1] : sb->d[sb->rank - 2];
  int64_t p = tb ? sb->d[sb->rank - 2] : sb->d[sb->rank - 1];
  if (ka != kb) {
    dl_error(g->cc, loc, "shape mismatch in 'matmul': %s @ %s (inner dimensions differ)",
             shape_s(g, sa), shape_s(g, sb));
    return DL_NONE;
  }
  DlShape la = *sa, lb = *sb, lead;
  la.rank -= 2;
  lb.rank -= 2;
  if (!dl_shape_broadcast(&la, &lb, &lead)) {
    dl_error(g->cc, loc, "shape mismatch in 'matmul': %s @ %s (batch dimensions differ)",
             shape_s(g, sa), shape_s(g, sb));
    return DL_NONE;
  }
  if (lead.rank + 2 > DL_MAX_RANK) {
    dl_error(g->cc, loc, "'matmul' result has more than %d dimensions", DL_MAX_RANK);
    return DL_NONE;
  }
  DlShape out = lead;
  out.d[out.rank++] = m;
  out.d[out.rank++] = p;
  DlNodeId in[2] = {a, b};
  DlNodeId id = push_node(g, DL_OP_MATMUL, loc, out, 2, in);
  g->nodes[id].attr.matmul.ta = ta;
  g->nodes[id].attr.matmul.tb = tb;
  return id;
}

DlNodeId dl_reduce(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a, uint32_t axes, bool keepdim) {
  if (a == DL_NONE) return DL_NONE;
  const DlShape *s = &g->nodes[a].shape;
  if (axes == 0) axes = (uint32_t)((1u << s->rank) - 1);
  if (axes >> s->rank) {
    dl_error(g->cc, loc, "'%s' over an axis that %s does not have", dl_op_info[op].name,
             shape_s(g, s));
    return DL_NONE;
  }
  DlShape out = {0};
  for (int i = 0; i < s->rank; i++) {
    if (axes & (1u << i)) {
      if (keepdim) out.d[out.rank++] = 1;
    } else {
      out.d[out.rank++] = s->d[i];
    }
  }
  DlNodeId id = push_node(g, op, loc, out, 1, &a);
  g->nodes[id].attr.reduce.axes = axes;
  g->nodes[id].attr.reduce.keepdim = keepdim;
  return id;
}

DlNodeId dl_expand(DlGraph *g, DlLoc loc, DlNodeId a, DlShape shape, bool mean) {
  if (a == DL_NONE) return DL_NONE;
  DlShape b;
  if (!dl_shape_broadcast(&g->nodes[a].shape, &shape, &b) || !dl_shape_eq(&b, &shape)) {
    dl_error(g->cc, loc, "shape mismatch in 'expand': %s cannot broadcast to %s",
             shape_s(g, &g->nodes[a].shape), shape_s(g, &shape));
    return DL_NONE;
  }
  DlNodeId id = push_node(g, DL_OP_EXPAND, loc, shape, 1, &a);
  g->nodes[id].attr.expand.mean = mean;
  return id;
}

DlNodeId dl_reshape(DlGraph *g, DlLoc loc, DlNodeId a, DlShape shape) {
  if (a == DL_NONE) return DL_NONE;
  const DlShape *s = &g->nodes[a].shape;
  if (dl_shape_batch_dims(s) != dl_shape_batch_dims(&shape) ||
      dl_shape_numel(s, 1) != dl_shape_numel(&shape, 1)) {
    dl_error(g->cc, loc, "shape mismatch in 'reshape': %s has a different size from %s",
             shape_s(g, s), shape_s(g, &shape));
    return DL_NONE;
  }
  return push_node(g, DL_OP_RESHAPE, loc, shape, 1, &a);
}

DlNodeId dl_softmax(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a) {
  if (a == DL_NONE) return DL_NONE;
  if (g->nodes[a].shape.rank < 1) {
    dl_error(g->cc, loc, "'%s' needs at least one axis, got a scalar", dl_op_info[op].name);
    return DL_NONE;
  }
  return push_node(g, op, loc, g->nodes[a].shape, 1, &a);
}

DlNodeId dl_assign(DlGraph *g, DlLoc loc, DlNodeId param, DlNodeId value) {
  if (param == DL_NONE || value == DL_NONE) return DL_NONE;
  if (g->nodes[param].op != DL_OP_PARAM ||
      !dl_shape_eq(&g->nodes[param].shape, &g->nodes[value].shape)) {
    dl_error(g->cc, loc, "internal error: bad assignment to node %d", param);
    return DL_NONE;
  }
  DlNodeId in[2] = {param, value};
  return push_node(g, DL_OP_ASSIGN, loc, g->nodes[param].shape, 2, in);
}

/* Reduce a (a broadcast result) back to `shape` over the axes broadcasting
 * added on the left or stretched from 1, with SUM or MEAN. */
static DlNodeId reduce_to(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a, DlShape shape) {
  if (a == DL_NONE) return DL_NONE;
  const DlShape s = g->nodes[a].shape;
  if (dl_shape_eq(&s, &shape)) return a;
  int lead = s.rank - shape.rank;
  uint32_t axes = 0;
  for (int i = 0; i < s.rank; i++) {
    int j = i - lead;
    if (j < 0 || (shape.d[j] == 1 && s.d[i] != 1)) axes |= 1u << i;
  }
  DlNodeId r = a;
  if (axes) r = dl_reduce(g, op, loc, a, axes, true);
  if (r != DL_NONE && !dl_shape_eq(&g->nodes[r].shape, &shape)) r = dl_reshape(g, loc, r, shape);
  return r;
}

DlNodeId dl_reduce_to(DlGraph *g, DlLoc loc, DlNodeId a, DlShape shape) {
  return reduce_to(g, DL_OP_SUM, loc, a, shape);
}

DlNodeId dl_mean_to(DlGraph *g, DlLoc loc, DlNodeId a, DlShape shape) {
  return reduce_to(g, DL_OP_MEAN, loc, a, shape);
}

/* ---- layout ---- */

static const char *ints_s(DlGraph *g, const int64_t *v, int n) {
  char buf[160];
  size_t at = 0;
  at += (size_t)snprintf(buf, sizeof buf, "[");
  for (int i = 0; i < n && at < sizeof buf; i++)
    at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%lld", i ? ", " : "", (long long)v[i]);
  if (at < sizeof buf) snprintf(buf + at, sizeof buf - at, "]");
  return dl_arena_strdup(g->cc->arena, buf);
}

DlNodeId dl_permute(DlGraph *g, DlLoc loc, DlNodeId a, const int *perm) {
  if (a == DL_NONE) return DL_NONE;
  const DlShape *s = &g->nodes[a].shape;
  bool seen[DL_MAX_RANK] = {false};
  int64_t shown[DL_MAX_RANK];
  bool ok = true;
  for (int i = 0; i < s->rank; i++) {
    shown[i] = perm[i];
    if (perm[i] < 0 || perm[i] >= s->rank || seen[perm[i]])
      ok = false;
    else
      seen[perm[i]] = true;
  }
  if (!ok) {
    dl_error(g->cc, loc,
             "shape mismatch in 'permute': %s is not a permutation of the %d axes of %s",
             ints_s(g, shown, s->rank), s->rank, shape_s(g, s));
    return DL_NONE;
  }
  DlShape out = {.rank = s->rank};
  for (int i = 0; i < s->rank; i++)
    out.d[i] = s->d[perm[i]];
  DlNodeId id = push_node(g, DL_OP_PERMUTE, loc, out, 1, &a);
  for (int i = 0; i < s->rank; i++)
    g->nodes[id].attr.permute.perm[i] = perm[i];
  return id;
}

DlNodeId dl_slice(DlGraph *g, DlLoc loc, DlNodeId a, const int64_t *start, const int64_t *stop) {
  if (a == DL_NONE) return DL_NONE;
  const DlShape *s = &g->nodes[a].shape;
  DlShape out = {.rank = s->rank};
  for (int i = 0; i < s->rank; i++) {
    if (s->d[i] == DL_DIM_BATCH) {
      if (start[i] != 0 || stop[i] != DL_DIM_BATCH) {
        dl_error(g->cc, loc,
                 "shape mismatch in 'slice': axis %d of %s is the batch dimension N, which can "
                 "only be taken whole",
                 i, shape_s(g, s));
        return DL_NONE;
      }
      out.d[i] = DL_DIM_BATCH;
      continue;
    }
    if (start[i] < 0 || stop[i] > s->d[i] || start[i] >= stop[i]) {
      dl_error(g->cc, loc,
               "shape mismatch in 'slice': %lld:%lld is not a non-empty range within axis %d of %s",
               (long long)start[i], (long long)stop[i], i, shape_s(g, s));
      return DL_NONE;
    }
    out.d[i] = stop[i] - start[i];
  }
  DlNodeId id = push_node(g, DL_OP_SLICE, loc, out, 1, &a);
  for (int i = 0; i < s->rank; i++)
    g->nodes[id].attr.slice.start[i] = start[i];
  return id;
}

DlNodeId dl_pad(DlGraph *g, DlLoc loc, DlNodeId a, const int64_t *before, const int64_t *after) {
  if (a == DL_NONE) return DL_NONE;
  const DlShape *s = &g->nodes[a].shape;
  DlShape out = {.rank = s->rank};
  for (int i = 0; i < s->rank; i++) {
    if (before[i] < 0 || after[i] < 0) {
      dl_error(g->cc, loc, "shape mismatch in 'pad': negative padding %lld, %lld on axis %d of %s",
               (long long)before[i], (long long)after[i], i, shape_s(g, s));
      return DL_NONE;
    }
    if (s->d[i] == DL_DIM_BATCH) {
      if (before[i] || after[i]) {
        dl_error(g->cc, loc,
                 "shape mismatch in 'pad': axis %d of %s is the batch dimension N, which "
                 "cannot be padded",
                 i, shape_s(g, s));
        return DL_NONE;
      }
      out.d[i] = DL_DIM_BATCH;
    } else {
      out.d[i] = s->d[i] + before[i] + after[i];
    }
  }
  DlNodeId id = push_node(g, DL_OP_PAD, loc, out, 1, &a);
  for (int i = 0; i < s->rank; i++)
    g->nodes[id].attr.pad.before[i] = before[i];
  return id;
}

DlNodeId dl_concat(DlGraph *g, DlLoc loc, DlNodeId a, DlNodeId b, int axis) {
  if (a == DL_NONE || b == DL_NONE) return DL_NONE;
  const DlShape *sa = &g->nodes[a].shape, *sb = &g->nodes[b].shape;
  if (sa->rank != sb->rank || axis < 0 || axis >= sa->rank) {
    dl_error(g->cc, loc, "shape mismatch in 'concat': %s and %s along axis %d", shape_s(g, sa),
             shape_s(g, sb), axis);
    return DL_NONE;
  }
  if (sa->d[axis] == DL_DIM_BATCH || sb->d[axis] == DL_DIM_BATCH) {
    dl_error(g->cc, loc,
             "shape mismatch in 'concat': %s and %s along axis %d, the batch dimension N",
             shape_s(g, sa), shape_s(g, sb), axis);
    return DL_NONE;
  }
  for (int i = 0; i < sa->rank; i++)
    if (i != axis && sa->d[i] != sb->d[i]) {
      dl_error(g->cc, loc,
               "shape mismatch in 'concat': %s and %s differ in axis %d (concatenating along "
               "axis %d)",
               shape_s(g, sa), shape_s(g, sb), i, axis);
      return DL_NONE;
    }
  DlShape out = *sa;
  out.d[axis] = sa->d[axis] + sb->d[axis];
  DlNodeId in[2] = {a, b};
  DlNodeId id = push_node(g, DL_OP_CONCAT, loc, out, 2, in);
  g->nodes[id].attr.concat.axis = axis;
  return id;
}

/* ---- indexing ---- */

/* idx.shape ++ table.shape[1:], or false (error recorded) */
static bool gathered_shape(DlGraph *g, DlLoc loc, const char *op, const DlShape *table,
                           const DlShape *idx, DlShape *out) {
  if (table->rank < 1 || table->d[0] == DL_DIM_BATCH) {
    dl_error(g->cc, loc,
             "shape mismatch in '%s': the table %s needs a first axis of fixed size (the rows "
             "indexed)",
             op, shape_s(g, table));
    return false;
  }
  if (idx->rank + table->rank - 1 > DL_MAX_RANK) {
    dl_error(g->cc, loc, "shape mismatch in '%s': indices %s into %s give more than %d dimensions",
             op, shape_s(g, idx), shape_s(g, table), DL_MAX_RANK);
    return false;
  }
  *out = *idx;
  for (int i = 1; i < table->rank; i++)
    out->d[out->rank++] = table->d[i];
  return true;
}

DlNodeId dl_gather(DlGraph *g, DlLoc loc, DlNodeId table, DlNodeId idx) {
  if (table == DL_NONE || idx == DL_NONE) return DL_NONE;
  DlShape out;
  if (!gathered_shape(g, loc, "gather", &g->nodes[table].shape, &g->nodes[idx].shape, &out))
    return DL_NONE;
  DlNodeId in[2] = {table, idx};
  return push_node(g, DL_OP_GATHER, loc, out, 2, in);
}

DlNodeId dl_scatter_add(DlGraph *g, DlLoc loc, DlNodeId src, DlNodeId idx, DlShape table_shape) {
  if (src == DL_NONE || idx == DL_NONE) return DL_NONE;
  DlShape want;
  if (!gathered_shape(g, loc, "scatter_add", &table_shape, &g->nodes[idx].shape, &want))
    return DL_NONE;
  if (!dl_shape_eq(&want, &g->nodes[src].shape)) {
    dl_error(g->cc, loc,
             "shape mismatch in 'scatter_add': values %s do not match indices %s into %s "
             "(expected %s)",
             shape_s(g, &g->nodes[src].shape), shape_s(g, &g->nodes[idx].shape),
             shape_s(g, &table_shape), shape_s(g, &want));
    return DL_NONE;
  }
  DlNodeId in[2] = {src, idx};
  return push_node(g, DL_OP_SCATTER_ADD, loc, table_shape, 2, in);
}

DlNodeId dl_one_hot(DlGraph *g, DlLoc loc, DlNodeId labels, int64_t classes) {
  if (labels == DL_NONE) return DL_NONE;
  const DlShape *s = &g->nodes[labels].shape;
  if (classes < 1 || s->rank + 1 > DL_MAX_RANK) {
    dl_error(g->cc, loc, "shape mismatch in 'one_hot': labels %s with %lld classes", shape_s(g, s),
             (long long)classes);
    return DL_NONE;
  }
  DlShape out = *s;
  out.d[out.rank++] = classes;
  return push_node(g, DL_OP_ONE_HOT, loc, out, 1, &labels);
}

DlNodeId dl_compare(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a, DlNodeId b) {
  if (a == DL_NONE || b == DL_NONE) return DL_NONE;
  if (op != DL_OP_GT && op != DL_OP_EQ) {
    dl_error(g->cc, loc, "internal error: '%s' is not a comparison", dl_op_info[op].name);
    return DL_NONE;
  }
  return dl_binary(g, op, loc, a, b);
}

/* ---- convolution ---- */

static bool conv_args_ok(DlGraph *g, DlLoc loc, const char *op, int sh, int sw, int ph, int pw) {
  if (sh < 1 || sw < 1 || ph < 0 || pw < 0) {
    dl_error(g->cc, loc,
             "'%s' needs strides of at least 1 and padding of at least 0, got "
             "stride %d, %d and padding %d, %d",
             op, sh, sw, ph, pw);
    return false;
  }
  return true;
}

static bool fixed_dims(const DlShape *s, int from) {
  for (int i = from; i < s->rank; i++)
    if (s->d[i] == DL_DIM_BATCH) return false;
  return true;
}

/* The output shape of conv2d(x, w), or false (error recorded against op). */
static bool conv_shape(DlGraph *g, DlLoc loc, const char *op, const DlShape *x, const DlShape *w,
                       int sh, int sw, int ph, int pw, DlShape *out) {
  if (!conv_args_ok(g, loc, op, sh, sw, ph, pw)) return false;
  if (x->rank != 4 || w->rank != 4 || !fixed_dims(x, 1) || !fixed_dims(w, 0)) {
    dl_error(g->cc, loc,
             "shape mismatch in '%s': input %s and filter %s must be [N, C, H, W] and "
             "[O, C, KH, KW]",
             op, shape_s(g, x), shape_s(g, w));
    return false;
  }
  if (x->d[1] != w->d[1]) {
    dl_error(g->cc, loc,
             "shape mismatch in '%s': input %s has %lld channels, filter %s expects %lld", op,
             shape_s(g, x), (long long)x->d[1], shape_s(g, w), (long long)w->d[1]);
    return false;
  }
  if (x->d[2] + 2 * ph < w->d[2] || x->d[3] + 2 * pw < w->d[3]) {
    dl_error(g->cc, loc,
             "shape mismatch in '%s': filter %s is larger than input %s with padding %d, %d", op,
             shape_s(g, w), shape_s(g, x), ph, pw);
    return false;
  }
  *out = (DlShape){.rank = 4,
                   .d = {x->d[0], w->d[0], (x->d[2] + 2 * ph - w->d[2]) / sh + 1,
                         (x->d[3] + 2 * pw - w->d[3]) / sw + 1}};
  return true;
}

static DlNodeId conv_node(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a, DlNodeId b, DlShape shape,
                          int sh, int sw, int ph, int pw) {
  DlNodeId in[2] = {a, b};
  DlNodeId id = push_node(g, op, loc, shape, 2, in);
  g->nodes[id].attr.conv.sh = sh;
  g->nodes[id].attr.conv.sw = sw;
  g->nodes[id].attr.conv.ph = ph;
  g->nodes[id].attr.conv.pw = pw;
  return id;
}

DlNodeId dl_conv2d(DlGraph *g, DlLoc loc, DlNodeId x, DlNodeId w, int stride_h, int stride_w,
                   int pad_h, int pad_w) {
  if (x == DL_NONE || w == DL_NONE) return DL_NONE;
  DlShape out;
  if (!conv_shape(g, loc, "conv2d", &g->nodes[x].shape, &g->nodes[w].shape, stride_h, stride_w,
                  pad_h, pad_w, &out))
    return DL_NONE;
  return conv_node(g, DL_OP_CONV2D, loc, x, w, out, stride_h, stride_w, pad_h, pad_w);
}

/* The gradient ops check that dy has the shape conv2d(x, w) would give. */
static bool conv_dy_ok(DlGraph *g, DlLoc loc, const char *op, const DlShape *x, const DlShape *w,
                       const DlShape *dy, int sh, int sw, int ph, int pw) {
  DlShape y;
  if (!conv_shape(g, loc, op, x, w, sh, sw, ph, pw, &y)) return false;
  if (!dl_shape_eq(&y, dy)) {
    dl_error(g->cc, loc, "shape mismatch in '%s': gradient %s, expected %s", op, shape_s(g, dy),
             shape_s(g, &y));
    return false;
  }
  return true;
}

DlNodeId dl_conv2d_grad_input(DlGraph *g, DlLoc loc, DlNodeId dy, DlNodeId w, DlShape x_shape,
                              int stride_h, int stride_w, int pad_h, int pad_w) {
  if (dy == DL_NONE || w == DL_NONE) return DL_NONE;
  if (!conv_dy_ok(g, loc, "conv2d_grad_input", &x_shape, &g->nodes[w].shape, &g->nodes[dy].shape,
                  stride_h, stride_w, pad_h, pad_w))
    return DL_NONE;
  return conv_node(g, DL_OP_CONV2D_GRAD_INPUT, loc, dy, w, x_shape, stride_h, stride_w, pad_h,
                   pad_w);
}

DlNodeId dl_conv2d_grad_filter(DlGraph *g, DlLoc loc, DlNodeId x, DlNodeId dy, DlShape w_shape,
                               int stride_h, int stride_w, int pad_h, int pad_w) {
  if (x == DL_NONE || dy == DL_NONE) return DL_NONE;
  if (!conv_dy_ok(g, loc, "conv2d_grad_filter", &g->nodes[x].shape, &w_shape, &g->nodes[dy].shape,
                  stride_h, stride_w, pad_h, pad_w))
    return DL_NONE;
  return conv_node(g, DL_OP_CONV2D_GRAD_FILTER, loc, x, dy, w_shape, stride_h, stride_w, pad_h,
                   pad_w);
}

/* ---- pooling ---- */

static bool pool_shape(DlGraph *g, DlLoc loc, const char *op, const DlShape *x, int kh, int kw,
                       int sh, int sw, DlShape *out) {
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1) {
    dl_error(g->cc, loc,
             "'%s' needs windows and strides of at least 1, got window %d, %d and "
             "stride %d, %d",
             op, kh, kw, sh, sw);
    return false;
  }
  if (x->rank < 2 || !fixed_dims(x, x->rank - 2)) {
    dl_error(g->cc, loc, "shape mismatch in '%s': %s needs two last axes of fixed size", op,
             shape_s(g, x));
    return false;
  }
  int64_t h = x->d[x->rank - 2], w = x->d[x->rank - 1];
  if (h < kh || w < kw) {
    dl_error(g->cc, loc, "shape mismatch in '%s': window %d x %d is larger than %s", op, kh, kw,
             shape_s(g, x));
    return false;
  }
  *out = *x;
  out->d[x->rank - 2] = (h - kh) / sh + 1;
  out->d[x->rank - 1] = (w - kw) / sw + 1;
  return true;
}

static DlNodeId pool_node(DlGraph *g, DlOp op, DlLoc loc, int nin, const DlNodeId *in,
                          DlShape shape, int kh, int kw, int sh, int sw) {
  DlNodeId id = push_node(g, op, loc, shape, nin, in);
  g->nodes[id].attr.pool.kh = kh;
  g->nodes[id].attr.pool.kw = kw;
  g->nodes[id].attr.pool.sh = sh;
  g->nodes[id].attr.pool.sw = sw;
  return id;
}

DlNodeId dl_pool2d(DlGraph *g, DlOp op, DlLoc loc, DlNodeId x, int kh, int kw, int sh, int sw) {
  if (x == DL_NONE) return DL_NONE;
  if (op != DL_OP_MAXPOOL2D && op != DL_OP_AVGPOOL2D) {
    dl_error(g->cc, loc, "internal error: '%s' is not a pooling op", dl_op_info[op].name);
    return DL_NONE;
  }
  DlShape out;
  if (!pool_shape(g, loc, dl_op_info[op].name, &g->nodes[x].shape, kh, kw, sh, sw, &out))
    return DL_NONE;
  return pool_node(g, op, loc, 1, &x, out, kh, kw, sh, sw);
}

static bool pool_dy_ok(DlGraph *g, DlLoc loc, const char *op, const DlShape *x, const DlShape *dy,
                       int kh, int kw, int sh, int sw) {
  DlShape y;
  if (!pool_shape(g, loc, op, x, kh, kw, sh, sw, &y)) return false;
  if (!dl_shape_eq(&y, dy)) {
    dl_error(g->cc, loc, "shape mismatch in '%s': gradient %s, expected %s", op, shape_s(g, dy),
             shape_s(g, &y));
    return false;
  }
  return true;
}

DlNodeId dl_maxpool2d_grad(DlGraph *g, DlLoc loc, DlNodeId x, DlNodeId dy, int kh, int kw, int sh,
                           int sw) {
  if (x == DL_NONE || dy == DL_NONE) return DL_NONE;
  const DlShape xs = g->nodes[x].shape;
  if (!pool_dy_ok(g, loc, "maxpool2d_grad", &xs, &g->nodes[dy].shape, kh, kw, sh, sw))
    return DL_NONE;
  DlNodeId in[2] = {x, dy};
  return pool_node(g, DL_OP_MAXPOOL2D_GRAD, loc, 2, in, xs, kh, kw, sh, sw);
}

DlNodeId dl_avgpool2d_grad(DlGraph *g, DlLoc loc, DlNodeId dy, DlShape x_shape, int kh, int kw,
                           int sh, int sw) {
  if (dy == DL_NONE) return DL_NONE;
  if (!pool_dy_ok(g, loc, "avgpool2d_grad", &x_shape, &g->nodes[dy].shape, kh, kw, sh, sw))
    return DL_NONE;
  return pool_node(g, DL_OP_AVGPOOL2D_GRAD, loc, 1, &dy, x_shape, kh, kw, sh, sw);
}

/* ---- dropout ---- */

uint64_t dl_hash64(uint64_t x) {
  /* splitmix64's finaliser, as dlrt_hash64 in runtime/rt_random.c */
  uint64_t z = x + UINT64_C(0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

uint64_t dl_dropout_seed(double seed_value) {
  /* NaN and negatives give 0; the runtime keeps seeds below 2^24, where a
   * float holds every integer. */
  double v = seed_value > 0 ? seed_value : 0;
  v = v < 4294967296.0 ? v : 4294967296.0;
  return (uint64_t)v;
}

bool dl_dropout_keep(uint64_t seed, uint64_t stream, uint64_t counter, double p) {
  /* The bits are dlrt_uniform01's: the top 53 bits of
   * h(h(h(seed) ^ stream) ^ counter), scaled to [0, 1). */
  uint64_t bits = dl_hash64(dl_hash64(dl_hash64(seed) ^ stream) ^ counter);
  return (double)(bits >> 11) * 0x1.0p-53 >= p;
}

static DlNodeId train_hyper(DlGraph *g, DlLoc loc, const char *name) {
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == DL_OP_HYPER && !strcmp(g->nodes[id].name, name)) return id;
  return dl_hyper(g, loc, name, 0.0);
}

DlNodeId dl_dropout_stream(DlGraph *g, DlLoc loc, DlNodeId x, double p, uint64_t stream) {
  if (x == DL_NONE) return DL_NONE;
  if (!(p >= 0 && p < 1)) {
    dl_error(g->cc, loc, "'dropout' needs a probability in [0, 1), got %g", p);
    return DL_NONE;
  }
  DlNodeId in[3] = {x, train_hyper(g, loc, DL_HYPER_TRAIN_MODE),
                    train_hyper(g, loc, DL_HYPER_TRAIN_SEED)};
  DlNodeId id = push_node(g, DL_OP_DROPOUT, loc, g->nodes[x].shape, 3, in);
  g->nodes[id].attr.dropout.p = p;
  g->nodes[id].attr.dropout.stream = stream;
  return id;
}

DlNodeId dl_dropout(DlGraph *g, DlLoc loc, DlNodeId x, double p) {
  if (x == DL_NONE) return DL_NONE;
  /* The node about to be made is the last one, after the hyper leaves. */
  DlNodeId id = dl_dropout_stream(g, loc, x, p, 0);
  if (id != DL_NONE) g->nodes[id].attr.dropout.stream = (uint64_t)id;
  return id;
}

void dl_node_set_name(DlGraph *g, DlNodeId id, const char *name) {
  if (id != DL_NONE) g->nodes[id].name = dl_arena_strdup(g->cc->arena, name);
}

/* ---- verifier ---- */

bool dl_graph_verify(DlGraph *g) {
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    const DlNode *nd = &g->nodes[id];
    if ((int)nd->op < 0 || (int)nd->op >= (int)DL_OP_COUNT || nd->nin != dl_op_info[nd->op].nin) {
      dl_error(g->cc, nd->loc, "internal error: IR node %%%d is malformed", id);
      return false;
    }
    for (int i = 0; i < nd->nin; i++) {
      if (nd->in[i] < 0 || nd->in[i] >= id) {
        dl_error(g->cc, nd->loc, "internal error: IR node %%%d uses %%%d out of order", id,
                 nd->in[i]);
        return false;
      }
    }
    if (nd->shape.rank < 0 || nd->shape.rank > DL_MAX_RANK) {
      dl_error(g->cc, nd->loc, "internal error: IR node %%%d has rank %d", id, nd->shape.rank);
      return false;
    }
  }
  if (g->loss != DL_NONE && g->nodes[g->loss].shape.rank != 0) {
    dl_error(g->cc, g->nodes[g->loss].loc, "internal error: loss is not a scalar");
    return false;
  }
  return true;
}

/* ---- printer ---- */

static void print_floats(FILE *out, const DlShape *s, int axis, const float *data, int64_t *at) {
  if (axis == s->rank) {
    fprintf(out, "%g", (double)data[(*at)++]);
    return;
  }
  fputc('[', out);
  for (int64_t i = 0; i < s->d[axis]; i++) {
    if (i) fputs(", ", out);
    print_floats(out, s, axis + 1, data, at);
  }
  fputc(']', out);
}

static void print_data(FILE *out, const DlShape *s, const float *data) {
  if (dl_shape_numel(s, 1) > 16) {
    fputs("[...]", out);
    return;
  }
  int64_t at = 0;
  print_floats(out, s, 0, data, &at);
}

static void print_init(FILE *out, const DlNode *nd) {
  const DlInit *in = &nd->attr.param;
  switch (in->kind) {
  case DL_INIT_ZERO: fputs(" = 0", out); break;
  case DL_INIT_CONST: fprintf(out, " = %g", in->a); break;
  case DL_INIT_UNIFORM: fprintf(out, " = uniform(%g, %g)", in->a, in->b); break;
  case DL_INIT_NORMAL: fprintf(out, " = normal(%g, %g)", in->a, in->b); break;
  case DL_INIT_DATA:
    fputs(" = ", out);
    print_data(out, &nd->shape, in->data);
    break;
  }
}

static void print_list(FILE *out, const char *key, const int64_t *v, int n) {
  fprintf(out, "%s=[", key);
  for (int i = 0; i < n; i++)
    fprintf(out, "%s%lld", i ? ", " : "", (long long)v[i]);
  fputc(']', out);
}

/* The attributes of the layout, convolution, pooling and dropout ops. */
static void print_attrs(FILE *out, const DlGraph *g, const DlNode *nd) {
  int r = nd->shape.rank;
  int64_t v[DL_MAX_RANK];
  switch (dl_op_info[nd->op].kind) {
  case DL_KIND_LAYOUT:
    fputs(" {", out);
    if (nd->op == DL_OP_PERMUTE) {
      for (int i = 0; i < r; i++)
        v[i] = nd->attr.permute.perm[i];
      print_list(out, "perm", v, r);
    } else if (nd->op == DL_OP_SLICE) {
      print_list(out, "start", nd->attr.slice.start, r);
    } else if (nd->op == DL_OP_PAD) {
      const DlShape *s = &g->nodes[nd->in[0]].shape;
      print_list(out, "before", nd->attr.pad.before, r);
      for (int i = 0; i < r; i++)
        v[i] = s->d[i] == DL_DIM_BATCH ? 0 : nd->shape.d[i] - s->d[i] - nd->attr.pad.before[i];
      print_list(out, ", after", v, r);
    } else {
      fprintf(out, "axis=%d", nd->attr.concat.axis);
    }
    fputc('}', out);
    break;
  case DL_KIND_CONV:
    fprintf(out, " {stride=[%d, %d], pad=[%d, %d]}", nd->attr.conv.sh, nd->attr.conv.sw,
            nd->attr.conv.ph, nd->attr.conv.pw);
    break;
  case DL_KIND_POOL:
    fprintf(out, " {window=[%d, %d], stride=[%d, %d]}", nd->attr.pool.kh, nd->attr.pool.kw,
            nd->attr.pool.sh, nd->attr.pool.sw);
    break;
  case DL_KIND_RANDOM:
    fprintf(out, " {p=%g, stream=%llu}", nd->attr.dropout.p,
            (unsigned long long)nd->attr.dropout.stream);
    break;
  case DL_KIND_LEAF:
  case DL_KIND_UNARY:
  case DL_KIND_BINARY:
  case DL_KIND_MATMUL:
  case DL_KIND_REDUCE:
  case DL_KIND_EXPAND:
  case DL_KIND_RESHAPE:
  case DL_KIND_SOFTMAX:
  case DL_KIND_ASSIGN:
  case DL_KIND_INDEX: break;
  }
}

void dl_graph_print(const DlGraph *g, const bool *live, FILE *out) {
  fprintf(out, "graph %s {\n", g->name);
  char sbuf[128];
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    if (live && !live[id]) continue;
    const DlNode *nd = &g->nodes[id];
    fprintf(out, "  %%%d = %s", id, dl_op_info[nd->op].name);
    switch (nd->op) {
    case DL_OP_INPUT:
      fprintf(out, "%s %s", nd->attr.input.role == DL_ROLE_TARGET ? ".target" : "", nd->name);
      break;
    case DL_OP_PARAM: fprintf(out, " %s", nd->name); break;
    case DL_OP_HYPER: fprintf(out, " %s = %g", nd->name, nd->attr.hyper.value); break;
    case DL_OP_CONST:
      fputc(' ', out);
      if (nd->attr.konst.data)
        print_data(out, &nd->shape, nd->attr.konst.data);
      else
        fprintf(out, "%g", nd->attr.konst.value);
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
    case DL_OP_ADD:
    case DL_OP_SUB:
    case DL_OP_MUL:
    case DL_OP_DIV:
    case DL_OP_POW:
    case DL_OP_MAXIMUM:
    case DL_OP_GT:
    case DL_OP_EQ:
    case DL_OP_MATMUL:
    case DL_OP_SUM:
    case DL_OP_MEAN:
    case DL_OP_MAX:
    case DL_OP_EXPAND:
    case DL_OP_RESHAPE:
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
    case DL_OP_SOFTMAX:
    case DL_OP_LOG_SOFTMAX:
    case DL_OP_ASSIGN:
      for (int i = 0; i < nd->nin; i++)
        fprintf(out, "%s %%%d", i ? "," : "", nd->in[i]);
      break;
    }
    if (nd->op == DL_OP_MATMUL && (nd->attr.matmul.ta || nd->attr.matmul.tb))
      fprintf(out, " {%s%s%s}", nd->attr.matmul.ta ? "ta" : "",
              nd->attr.matmul.ta && nd->attr.matmul.tb ? ", " : "", nd->attr.matmul.tb ? "tb" : "");
    if (dl_op_info[nd->op].kind == DL_KIND_REDUCE) {
      fputs(" {axes=[", out);
      bool first = true;
      for (int i = 0; i < 32; i++)
        if (nd->attr.reduce.axes & (1u << i)) {
          fprintf(out, "%s%d", first ? "" : ", ", i);
          first = false;
        }
      fprintf(out, "]%s}", nd->attr.reduce.keepdim ? ", keepdim" : "");
    }
    if (nd->op == DL_OP_EXPAND && nd->attr.expand.mean) fputs(" {mean}", out);
    print_attrs(out, g, nd);
    fprintf(out, " : f32%s", dl_shape_str(&nd->shape, sbuf, sizeof sbuf));
    if (nd->op == DL_OP_PARAM) print_init(out, nd);
    if (nd->name && dl_op_info[nd->op].kind != DL_KIND_LEAF) fprintf(out, "  # %s", nd->name);
    fputc('\n', out);
  }
  if (g->output != DL_NONE && (!live || live[g->output]))
    fprintf(out, "  output %%%d\n", g->output);
  if (g->loss != DL_NONE && (!live || live[g->loss])) fprintf(out, "  loss %%%d\n", g->loss);
  fputs("}\n", out);
}
