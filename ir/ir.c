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
    case DL_OP_MATMUL:
    case DL_OP_SUM:
    case DL_OP_MEAN:
    case DL_OP_EXPAND:
    case DL_OP_RESHAPE:
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
