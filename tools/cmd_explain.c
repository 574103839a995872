/* cmd_explain.c - `dlcc explain`: one training step worked through by hand.
 *
 * The course teaches backpropagation by working one step on paper: the
 * forward values, the loss, the gradients from the loss back to the weights
 * with the chain rule, and the updated weights.  This command prints exactly
 * that for any model, from the IR the compiler builds: the forward graph,
 * the gradient graph that autodiff appended and the optimizer update.
 *
 * The values come from the reference interpreter (ir/interp.c), not from the
 * JIT: it evaluates every node, including the intermediates that compiled
 * code never stores under a name (and that fusion or memory sharing may not
 * keep at all); it computes in double precision, so the numbers read the way
 * they are worked on paper (0.191, not 0.19100001); and it needs no LLVM
 * round trip.  It is the oracle that `dlcc gradcheck` checks the JIT
 * against, so the numbers are the ones the compiled step computes, to float
 * rounding.
 *
 * The chain-rule product shown for each gradient is the gradient node that
 * autodiff built, written as an expression over the forward values and the
 * other gradients, so it is what the compiler computes, not a separate
 * textbook formula.
 */
#include "driver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char explain_help[] =
    "usage: dlcc explain FILE.nnl [options]\n"
    "\n"
    "Work one training step through by hand, the way backpropagation is taught:\n"
    "the inputs and initial parameters, the forward values op by op (each under\n"
    "the source line it came from), the loss, the gradients from the loss back\n"
    "to the parameters (each with the chain-rule product that gave it), and the\n"
    "parameters after the update.  Values are computed in double precision by\n"
    "the reference interpreter, on the first rows of the train block's data in\n"
    "file order (training itself shuffles).  Nothing is saved.\n"
    "\n"
    "options:\n"
    "  --model NAME  the model (default: the first train block's)\n"
    "  --batch B     rows in the step (default 1)\n"
    "  --lr X        learning rate (default: the train block's)\n"
    "  --seed S      seed for initialising parameters (default: the train block's)\n"
    "  --load CKPT   start from the parameters in a checkpoint\n";

/* Values print with one more digit than `dlcc run` (a hand-worked update
 * like 0.14 + 0.05 * 0.68765 = 0.1743825 needs seven), and tensors of more
 * than 64 values are abbreviated: this is for reading. */
static const TensorFormat explain_format = {
    .precision = 7, .threshold = 64, .edge = 3, .long_axis = 6, .width = 100};

/* ---- a data-only program table ---- */

bool param_table_init(ParamTable *t, const DlGraph *g, int nnodes, int64_t max_batch) {
  memset(t, 0, sizeof *t);
  t->tensors = calloc((size_t)nnodes + 1, sizeof(DlrtTensor));
  t->node = calloc((size_t)nnodes + 1, sizeof(DlNodeId));
  if (!t->tensors || !t->node) return false;
  int64_t at = 0;
  int n = 0;
  for (DlNodeId id = 0; id < nnodes; id++) {
    const DlNode *nd = &g->nodes[id];
    if (nd->op != DL_OP_PARAM && nd->op != DL_OP_INPUT) continue;
    DlrtTensor *rt = &t->tensors[n];
    rt->name = nd->name;
    rt->rank = nd->shape.rank;
    for (int d = 0; d < nd->shape.rank; d++)
      rt->dims[d] = nd->shape.d[d];
    rt->offset = at;
    if (nd->op == DL_OP_PARAM) {
      rt->role = DLRT_ROLE_PARAM;
      rt->init = dl_runtime_init(nd->attr.param.kind);
      rt->a = nd->attr.param.a;
      rt->b = nd->attr.param.b;
      rt->data = nd->attr.param.data;
    } else {
      rt->role = nd->attr.input.role == DL_ROLE_TARGET ? DLRT_ROLE_TARGET : DLRT_ROLE_INPUT;
    }
    t->node[n++] = id;
    at += dl_shape_numel(&nd->shape, max_batch);
  }
  t->prog = (DlrtProgram){.abi_version = DLRT_ABI_VERSION,
                          .ntensors = n,
                          .model = g->name,
                          .mem_floats = at,
                          .max_batch = max_batch,
                          .tensors = t->tensors};
  return true;
}

void param_table_free(ParamTable *t) {
  free(t->tensors);
  free(t->node);
  memset(t, 0, sizeof *t);
}

/* ---- rendering the graph as expressions ---- */

typedef struct Explain {
  const DlGraph *g;
  const DlProgram *prog;
  int nfwd;  /* nodes of the forward graph (before autodiff) */
  int64_t n; /* rows */
  DlInterp it;
  char **label;        /* per forward node: its name, t<k> or c<k>; NULL: a scalar constant */
  DlNodeId *adj_owner; /* per node: the forward node (lowest id) whose gradient it is */
  DlNodeId *adj_first; /* per node: the same, highest id (where backprop made it) */
  FILE *out;
  const char *main_file; /* the model's file: its lines are "line N", others "FILE:N" */
} Explain;

enum { PREC_ADD = 1, PREC_MUL = 2, PREC_NEG = 3, PREC_POW = 4, PREC_ATOM = 5 };

static bool is_scalar_const(const DlNode *nd) {
  return nd->op == DL_OP_CONST && !nd->attr.konst.data && nd->shape.rank == 0;
}

static const char *binary_symbol(DlOp op) {
  return op == DL_OP_ADD   ? "+"
         : op == DL_OP_SUB ? "-"
         : op == DL_OP_MUL ? "*"
         : op == DL_OP_DIV ? "/"
         : op == DL_OP_POW ? "^"
                           : NULL;
}

static int op_prec(DlOp op) {
  return op == DL_OP_ADD || op == DL_OP_SUB                         ? PREC_ADD
         : op == DL_OP_MUL || op == DL_OP_DIV || op == DL_OP_MATMUL ? PREC_MUL
         : op == DL_OP_NEG                                          ? PREC_NEG
         : op == DL_OP_POW                                          ? PREC_POW
                                                                    : PREC_ATOM;
}

/* A reshape that only adds or drops axes of size 1 (the keepdim shape of a
 * reduction's gradient) changes nothing a reader cares about. */
static bool unit_reshape(const DlGraph *g, const DlNode *nd) {
  if (nd->op != DL_OP_RESHAPE) return false;
  const DlShape *a = &g->nodes[nd->in[0]].shape, *b = &nd->shape;
  int i = 0, j = 0;
  for (;;) {
    while (i < a->rank && a->d[i] == 1)
      i++;
    while (j < b->rank && b->d[j] == 1)
      j++;
    if (i == a->rank || j == b->rank) return i == a->rank && j == b->rank;
    if (a->d[i++] != b->d[j++]) return false;
  }
}

static bool renders_as_atom(const Explain *E, DlNodeId id) {
  const DlNode *nd = &E->g->nodes[id];
  if (id < E->nfwd || E->adj_owner[id] != DL_NONE) return true;
  if (dl_op_info[nd->op].kind == DL_KIND_LEAF) return true;
  if (unit_reshape(E->g, nd)) return renders_as_atom(E, nd->in[0]);
  return op_prec(nd->op) == PREC_ATOM;
}

static int node_prec(const Explain *E, DlNodeId id) {
  if (renders_as_atom(E, id)) return PREC_ATOM;
  return op_prec(E->g->nodes[id].op);
}

static void render(Explain *E, FILE *f, DlNodeId id, bool top);

static void render_operand(Explain *E, FILE *f, DlNodeId id, bool paren) {
  if (paren) fputc('(', f);
  render(E, f, id, false);
  if (paren) fputc(')', f);
}

static void render_leaf(const Explain *E, FILE *f, DlNodeId id) {
  const DlNode *nd = &E->g->nodes[id];
  if (id < E->nfwd && E->label[id]) {
    fputs(E->label[id], f);
  } else if (nd->op == DL_OP_CONST && !nd->attr.konst.data) {
    fprintf(f, "%.7g", nd->attr.konst.value);
  } else if (nd->name) {
    fputs(nd->name, f);
  } else {
    fprintf(f, "%%%d", (int)id);
  }
}

/* The node as an expression.  Below the top, forward nodes appear by label
 * and gradients as dL/dX; at the top the node's own operation is shown. */
static void render(Explain *E, FILE *f, DlNodeId id, bool top) {
  const DlGraph *g = E->g;
  const DlNode *nd = &g->nodes[id];
  if (!top && id < E->nfwd) {
    render_leaf(E, f, id);
    return;
  }
  if (!top && E->adj_owner[id] != DL_NONE) {
    fprintf(f, "dL/d%s", E->label[E->adj_owner[id]]);
    return;
  }
  char shape[128];
  int prec = op_prec(nd->op);
  /* An if-chain with a general case rather than a switch: an op this
   * printer knows nothing special about still reads as name(operands). */
  DlOpKind kind = dl_op_info[nd->op].kind;
  if (kind == DL_KIND_LEAF) {
    render_leaf(E, f, id);
  } else if (nd->op == DL_OP_NEG) {
    fputc('-', f);
    render_operand(E, f, nd->in[0], node_prec(E, nd->in[0]) <= PREC_NEG);
  } else if (kind == DL_KIND_BINARY && binary_symbol(nd->op)) {
    int pl = node_prec(E, nd->in[0]), pr = node_prec(E, nd->in[1]);
    render_operand(E, f, nd->in[0], nd->op == DL_OP_POW ? pl <= prec : pl < prec);
    fprintf(f, nd->op == DL_OP_POW ? "%s" : " %s ", binary_symbol(nd->op));
    /* '+' and '*' are associative; '-', '/' and '^' need their right side
     * grouped. */
    bool assoc = nd->op == DL_OP_ADD || nd->op == DL_OP_MUL;
    render_operand(E, f, nd->in[1], assoc ? pr < prec : pr <= prec);
  } else if (kind == DL_KIND_MATMUL) {
    render_operand(E, f, nd->in[0],
                   nd->attr.matmul.ta ? node_prec(E, nd->in[0]) < PREC_ATOM
                                      : node_prec(E, nd->in[0]) < prec);
    if (nd->attr.matmul.ta) fputs("^T", f);
    fputs(" @ ", f);
    render_operand(E, f, nd->in[1],
                   nd->attr.matmul.tb ? node_prec(E, nd->in[1]) < PREC_ATOM
                                      : node_prec(E, nd->in[1]) <= prec);
    if (nd->attr.matmul.tb) fputs("^T", f);
  } else if (kind == DL_KIND_REDUCE) {
    const DlShape *in = &g->nodes[nd->in[0]].shape;
    fprintf(f, "%s(", dl_op_info[nd->op].name);
    render(E, f, nd->in[0], false);
    uint32_t all = in->rank >= 32 ? ~0u : (1u << in->rank) - 1;
    if ((nd->attr.reduce.axes & all) != all) {
      int count = 0;
      for (int i = 0; i < in->rank; i++)
        count += (nd->attr.reduce.axes >> i) & 1;
      fputs(count == 1 ? ", axis = " : ", axes = [", f);
      bool first = true;
      for (int i = 0; i < in->rank; i++)
        if (nd->attr.reduce.axes & (1u << i)) {
          fprintf(f, "%s%d", first ? "" : ", ", i);
          first = false;
        }
      if (count != 1) fputc(']', f);
      if (nd->attr.reduce.keepdim) fputs(", keepdim = true", f);
    }
    fputc(')', f);
  } else if (kind == DL_KIND_EXPAND) {
    fputs("broadcast(", f);
    render(E, f, nd->in[0], false);
    fprintf(f, ", %s)", dl_shape_str(&nd->shape, shape, sizeof shape));
    if (nd->attr.expand.mean) {
      int64_t from = dl_shape_numel(&g->nodes[nd->in[0]].shape, E->n);
      int64_t to = dl_shape_numel(&nd->shape, E->n);
      fprintf(f, " / %lld", (long long)(from ? to / from : 1));
    }
  } else if (kind == DL_KIND_RESHAPE && unit_reshape(g, nd)) {
    render(E, f, nd->in[0], top);
  } else if (kind == DL_KIND_RESHAPE) {
    fputs("reshape(", f);
    render(E, f, nd->in[0], false);
    fprintf(f, ", %s)", dl_shape_str(&nd->shape, shape, sizeof shape));
  } else if (kind == DL_KIND_ASSIGN) {
    render(E, f, nd->in[0], false);
    fputs(" <- ", f);
    render(E, f, nd->in[1], true);
  } else {
    fprintf(f, "%s(", dl_op_info[nd->op].name);
    for (int i = 0; i < nd->nin; i++) {
      if (i) fputs(", ", f);
      render(E, f, nd->in[i], false);
    }
    fputc(')', f);
  }
}

static char *render_string(Explain *E, DlNodeId id, bool top) {
  char *s = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&s, &len);
  if (!f) return NULL;
  render(E, f, id, top);
  fclose(f);
  return s;
}

/* ---- printing ---- */

static void value_dims(const Explain *E, DlNodeId id, int64_t *dims) {
  const DlShape *s = &E->g->nodes[id].shape;
  for (int i = 0; i < s->rank; i++)
    dims[i] = s->d[i] == DL_DIM_BATCH ? E->n : s->d[i];
}

/* "    text = VALUE" with continuation lines under the value's bracket. */
static void print_line(Explain *E, const char *text, DlNodeId node, const char *suffix) {
  if (!E->it.values[node]) {
    fprintf(E->out, "    %s (not computed)%s\n", text, suffix ? suffix : "");
    return;
  }
  int64_t dims[DL_MAX_RANK];
  value_dims(E, node, dims);
  TensorValues v = {.f64 = E->it.values[node], .rank = E->g->nodes[node].shape.rank, .dims = dims};
  int indent = 4 + (int)strlen(text) + 3;
  char *value = tensor_to_string(&v, &explain_format, indent);
  if (value && strchr(value, '\n') && indent > 40) {
    /* A long formula: the value goes below it rather than in a narrow
     * column at the right. */
    free(value);
    indent = 8;
    value = tensor_to_string(&v, &explain_format, indent);
    fprintf(E->out, "    %s =\n%*s%s", text, indent, "", value ? value : "");
  } else {
    fprintf(E->out, "    %s = %s", text, value ? value : "");
  }
  free(value);
  fprintf(E->out, "%s\n", suffix ? suffix : "");
}

/* A header with the source line a group of values came from. */
static void print_source_line(Explain *E, const DlCompiler *cc, DlLoc loc, DlLoc *last) {
  bool same_file =
      loc.file == last->file || (loc.file && last->file && !strcmp(loc.file, last->file));
  if (same_file && loc.line == last->line) return;
  *last = loc;
  const DlSource *src = dl_source_find(cc, loc.file);
  if (!src || loc.line <= 0) {
    fprintf(E->out, "  (no source line)\n");
    return;
  }
  const char *p = src->text, *end = src->text + src->len;
  for (int line = 1; line < loc.line && p < end; p++)
    if (*p == '\n') line++;
  const char *eol = memchr(p, '\n', (size_t)(end - p));
  if (!eol) eol = end;
  while (p < eol && (*p == ' ' || *p == '\t'))
    p++;
  int len = (int)(eol - p);
  while (len > 0 && (p[len - 1] == '\r' || p[len - 1] == ' '))
    len--;
  if (E->main_file && loc.file && strcmp(loc.file, E->main_file) != 0)
    fprintf(E->out, "  %s:%d: %.*s\n", loc.file, loc.line, len, p); /* a def in another file */
  else
    fprintf(E->out, "  line %d: %.*s\n", loc.line, len, p);
}

/* Whether two evaluated nodes hold the same values (to 1e-9, relative). */
static bool same_values(const Explain *E, DlNodeId a, DlNodeId b) {
  const DlShape *sa = &E->g->nodes[a].shape, *sb = &E->g->nodes[b].shape;
  if (!dl_shape_eq(sa, sb) || !E->it.values[a] || !E->it.values[b]) return false;
  int64_t total = dl_shape_numel(sa, E->n);
  for (int64_t i = 0; i < total; i++) {
    double x = E->it.values[a][i], y = E->it.values[b][i];
    if (!(fabs(x - y) <= 1e-9 * fmax(1.0, fmax(fabs(x), fabs(y))))) return false;
  }
  return true;
}

static void assign_labels(Explain *E) {
  const DlGraph *g = E->g;
  int temps = 0, consts = 0;
  E->label = calloc((size_t)E->nfwd + 1, sizeof(char *));
  for (DlNodeId id = 0; id < E->nfwd; id++) {
    const DlNode *nd = &g->nodes[id];
    char buf[64];
    if (is_scalar_const(nd)) continue;
    if (nd->name) {
      E->label[id] = strdup(nd->name);
      continue;
    }
    snprintf(buf, sizeof buf, "%s%d", nd->op == DL_OP_CONST ? "c" : "t",
             nd->op == DL_OP_CONST ? ++consts : ++temps);
    E->label[id] = strdup(buf);
  }
  /* Each gradient node is named after the forward node it is the gradient
   * of; when several share one (out = t1 - ... passes dL/dt1 through), the
   * lowest id names it. */
  E->adj_owner = malloc(sizeof(DlNodeId) * ((size_t)g->nnodes + 1));
  E->adj_first = malloc(sizeof(DlNodeId) * ((size_t)g->nnodes + 1));
  for (DlNodeId id = 0; id < g->nnodes; id++)
    E->adj_owner[id] = E->adj_first[id] = DL_NONE;
  for (DlNodeId id = E->nfwd - 1; id >= 0; id--) {
    DlNodeId a = g->grad && id < g->ngrad ? g->grad[id] : DL_NONE;
    if (a == DL_NONE || a < E->nfwd || !E->label[id]) continue;
    E->adj_owner[a] = id;
    if (E->adj_first[a] == DL_NONE) E->adj_first[a] = id;
  }
}

static void free_labels(Explain *E) {
  if (E->label)
    for (int i = 0; i < E->nfwd; i++)
      free(E->label[i]);
  free(E->label);
  free(E->adj_owner);
  free(E->adj_first);
}

/* Leaves for the interpreter: parameters and inputs from the context,
 * hyperparameters from their default values. */
static double **make_leaves(Explain *E, const ParamTable *pt, DlrtContext *ctx) {
  const DlGraph *g = E->g;
  double **leaf = calloc((size_t)g->nnodes + 1, sizeof(double *));
  for (int t = 0; t < pt->prog.ntensors; t++) {
    DlNodeId id = pt->node[t];
    int64_t total = dl_shape_numel(&g->nodes[id].shape, E->n);
    leaf[id] = malloc(sizeof(double) * (size_t)(total ? total : 1));
    const float *src = dlrt_data(ctx, t);
    for (int64_t i = 0; i < total; i++)
      leaf[id][i] = src[i];
  }
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == DL_OP_HYPER) {
      leaf[id] = malloc(sizeof(double));
      leaf[id][0] = g->nodes[id].attr.hyper.value;
    }
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (leaf[id]) E->it.values[id] = leaf[id];
  return leaf;
}

static void print_leaves(Explain *E, DlOp op, const char *title) {
  bool any = false;
  for (DlNodeId id = 0; id < E->nfwd; id++) {
    const DlNode *nd = &E->g->nodes[id];
    if (nd->op != op || !E->prog->live[id]) continue;
    if (!any) fprintf(E->out, "%s\n", title);
    any = true;
    char shape[128];
    const char *role =
        nd->op == DL_OP_INPUT && nd->attr.input.role == DL_ROLE_TARGET ? "  (target)" : "";
    char *suffix = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&suffix, &len);
    int64_t dims[DL_MAX_RANK];
    value_dims(E, id, dims);
    fprintf(f, "  : f32%s%s", dims_str(shape, sizeof shape, nd->shape.rank, dims), role);
    fclose(f);
    print_line(E, nd->name, id, suffix);
    free(suffix);
  }
  if (any) fputc('\n', E->out);
}

static void print_forward(Explain *E, const DlCompiler *cc) {
  const DlGraph *g = E->g;
  fprintf(E->out, "forward, op by op\n");
  DlLoc last = {0};
  for (DlNodeId id = 0; id < E->nfwd; id++) {
    const DlNode *nd = &g->nodes[id];
    if (!E->prog->live[id] || !E->it.values[id]) continue;
    bool leaf = dl_op_info[nd->op].kind == DL_KIND_LEAF;
    /* Inputs and parameters are listed above; scalar constants appear inline. */
    if (leaf && (nd->op != DL_OP_CONST || is_scalar_const(nd))) continue;
    print_source_line(E, cc, nd->loc, &last);
    char *def = leaf ? NULL : render_string(E, id, true);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fputs(E->label[id], f);
    if (def && strcmp(def, E->label[id]) != 0) fprintf(f, " = %s", def);
    fclose(f);
    const char *mark = id == g->output ? "   <- the prediction"
                       : id == g->loss ? "   <- the loss"
                                       : "";
    print_line(E, text, id, mark);
    free(text);
    free(def);
  }
  fputc('\n', E->out);
}

/* The node of the forward graph that computes prediction - target, if any:
 * for the usual losses the gradient at the prediction is a multiple of it. */
static DlNodeId error_node(const Explain *E) {
  for (DlNodeId id = 0; id < E->nfwd; id++) {
    const DlNode *nd = &E->g->nodes[id];
    if (nd->op == DL_OP_SUB && nd->in[0] == E->g->output &&
        E->g->nodes[nd->in[1]].op == DL_OP_INPUT && E->it.values[id])
      return id;
  }
  return DL_NONE;
}

static int cmp_by_adjoint(const void *pa, const void *pb, void *ctx) {
  const DlGraph *g = ctx;
  DlNodeId a = *(const DlNodeId *)pa, b = *(const DlNodeId *)pb;
  /* Latest adjoint first would be the reverse; the order autodiff computed
   * them (ascending node id) is the order of backpropagation. */
  DlNodeId ga = g->grad[a], gb = g->grad[b];
  if (ga != gb) return ga < gb ? -1 : 1;
  return a > b ? -1 : a < b ? 1 : 0; /* shared gradient: downstream first */
}

static void print_backward(Explain *E, const DlCompiler *cc) {
  const DlGraph *g = E->g;
  fprintf(E->out, "backward: the chain rule, from the loss back to the parameters\n");
  DlNodeId *order = malloc(sizeof(DlNodeId) * ((size_t)E->nfwd + 1));
  int count = 0;
  for (DlNodeId id = 0; id < E->nfwd; id++) {
    const DlNode *nd = &g->nodes[id];
    if (id >= g->ngrad || g->grad[id] == DL_NONE || !E->label[id]) continue;
    if (dl_op_info[nd->op].kind == DL_KIND_LEAF && nd->op != DL_OP_PARAM) continue;
    order[count++] = id;
  }
  qsort_r(order, (size_t)count, sizeof *order, cmp_by_adjoint, (void *)g);
  DlNodeId err = error_node(E);
  DlLoc last = {0};
  for (int k = 0; k < count; k++) {
    DlNodeId id = order[k], adj = g->grad[id];
    print_source_line(E, cc, g->nodes[adj].loc, &last);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    bool prediction = id == g->output;
    if (prediction) fputs("Δ = ", f);
    fprintf(f, "dL/d%s", E->label[id]);
    if (id == g->loss) {
      /* the seed: dL/dL = 1 */
    } else if (E->adj_first[adj] != id) {
      /* The gradient passed through unchanged (out = t1 + ..., dL/dout = dL/dt1). */
      fprintf(f, " = dL/d%s", E->label[E->adj_first[adj]]);
    } else {
      char *chain = render_string(E, adj, true);
      fprintf(f, " = %s", chain);
      free(chain);
    }
    if (prediction && err != DL_NONE && same_values(E, adj, err)) {
      char *e = render_string(E, err, true);
      fprintf(f, " = %s", e);
      free(e);
    }
    fclose(f);
    print_line(E, text, adj, prediction ? "   <- the error at the prediction" : "");
    free(text);
  }
  free(order);
  fputc('\n', E->out);
}

static void print_update(Explain *E, const DlCompiler *cc, double lr) {
  const DlGraph *g = E->g;
  fprintf(E->out, "update (lr %g)\n", lr);
  for (DlNodeId id = E->nfwd; id < g->nnodes; id++) {
    const DlNode *nd = &g->nodes[id];
    if (nd->op != DL_OP_ASSIGN) continue;
    char *text = render_string(E, id, true);
    print_line(E, text, nd->in[1], "");
    free(text);
  }
}

/* ---- the step ---- */

bool explain_step(Session *s, const DriverOptions *o, const ExplainParams *ep, FILE *out) {
  DlGraph *g = s->graph;
  bool ok = false;
  DlrtDataset ds = {0};
  ParamTable pt = {0};
  DlrtContext *ctx = NULL;
  double **leaf = NULL;
  Explain E = {.g = g, .nfwd = g->nnodes, .out = out};
  if (g->loss == DL_NONE) {
    driver_error("model '%s' has no 'loss': there is no training step to explain", g->name);
    return false;
  }
  bool has_inputs = false, has_params = false;
  for (int i = 0; i < g->nnodes; i++) {
    has_inputs |= g->nodes[i].op == DL_OP_INPUT;
    has_params |= g->nodes[i].op == DL_OP_PARAM;
  }
  if (!has_params) {
    driver_error("model '%s' has no parameters: there is nothing to train", g->name);
    return false;
  }
  E.n = o->batch > 0 ? o->batch : 1;
  if (has_inputs) {
    if (!session_load_train_data(s, &ds)) goto done;
    if (E.n > ds.nrows) E.n = ds.nrows;
  }
  /* The gradient graph as autodiff built it: simplification would fold
   * the chain rule's factors (2 * t1^(2 - 1)) out of sight. */
  DriverOptions plan_options = *o;
  plan_options.no_simplify = true;
  if (!session_plan(s, &plan_options, E.n)) goto done;
  E.prog = s->prog;
  if (!g->grad) {
    driver_error("model '%s': no parameter affects the loss", g->name);
    goto done;
  }
  DlrtError err = {{0}};
  if (!param_table_init(&pt, g, E.nfwd, E.n)) {
    driver_error("out of memory");
    goto done;
  }
  ctx = dlrt_context_new(&pt.prog, ep->seed, &err);
  if (!ctx || (has_inputs && dlrt_dataset_check(&pt.prog, &ds, true, &err) != 0) ||
      (o->load && dlrt_load(ctx, o->load, &err) != 0) ||
      (ep->set_params && ep->set_params(ep->user, ctx, &err) != 0)) {
    driver_error("%s", err.msg);
    goto done;
  }
  for (int t = 0; t < pt.prog.ntensors && has_inputs; t++) {
    const DlrtTensor *tt = &pt.tensors[t];
    if (tt->role == DLRT_ROLE_PARAM) continue;
    const DlrtField *fd = dlrt_dataset_field(&ds, tt->name);
    memcpy(dlrt_data(ctx, t), fd->data, sizeof(float) * (size_t)dlrt_numel(tt, E.n));
  }

  dl_interp_init(&E.it, g, E.n);
  leaf = make_leaves(&E, &pt, ctx);
  DlNodeId *eval = malloc(sizeof(DlNodeId) * ((size_t)g->nnodes + 1));
  int neval = 0;
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (s->prog->live[id] && g->nodes[id].op != DL_OP_ASSIGN && !leaf[id]) eval[neval++] = id;
  dl_interp_run(&E.it, eval, neval);
  free(eval);
  assign_labels(&E);
  E.main_file = g->nodes[g->loss].loc.file;

  double lr = 0;
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == DL_OP_HYPER && g->nodes[id].name && !strcmp(g->nodes[id].name, "lr"))
      lr = g->nodes[id].attr.hyper.value;
  fprintf(out, "explain %s: one training step on %s%lld row%s of the training data, lr %g\n\n",
          g->name, has_inputs ? "the first " : "", (long long)E.n, E.n == 1 ? "" : "s", lr);
  print_leaves(&E, DL_OP_INPUT, "inputs");
  print_leaves(&E, DL_OP_PARAM, "parameters");
  print_forward(&E, s->cc);
  print_backward(&E, s->cc);
  print_update(&E, s->cc, lr);
  ok = true;
done:
  free_labels(&E);
  if (E.it.values) dl_interp_free(&E.it);
  if (leaf) {
    for (int i = 0; i < g->nnodes; i++)
      free(leaf[i]);
    free(leaf);
  }
  dlrt_context_free(ctx);
  param_table_free(&pt);
  dlrt_dataset_free(&ds);
  return ok;
}

int cmd_explain(int argc, char **argv) {
  DriverOptions o;
  int rc = parse_command_args(&o, argc, argv, "--model --batch --lr --seed --load", explain_help);
  if (rc) return rc == 2 ? 0 : 1;
  Session s = {0};
  int status = 1;
  if (session_lower(&s, &o)) {
    ExplainParams ep = {.seed = o.seed >= 0 ? (uint64_t)o.seed : s.train.seed};
    if (explain_step(&s, &o, &ep, stdout)) status = 0;
  }
  session_free(&s);
  return status;
}
