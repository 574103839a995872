/* lower.c - from the syntax tree of one model (and its train block) to IR.
 *
 * Name resolution, shapes, parameter initialisers, builtin functions and the
 * library losses (mse, bce, cross_entropy are built from primitive ops here,
 * so autodiff and codegen never see them), and the train block's settings.
 *
 * Errors do not stop lowering: a name whose definition failed stays defined
 * with the value DL_NONE, and every IR constructor passes DL_NONE through
 * quietly, so one run reports each independent mistake once.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "ast.h"

/* Largest dimension and element count we accept in a declared shape or a
 * literal: far beyond any model that fits in memory, small enough that
 * products of dimensions cannot overflow. */
#define MAX_DIM ((int64_t)1 << 31)
#define MAX_ELEMENTS ((int64_t)1 << 40)

/* ---- symbols ---- */

typedef enum SymKind { SYM_INPUT, SYM_TARGET, SYM_PARAM, SYM_VAR } SymKind;

typedef struct Sym {
  const char *name;
  SymKind kind;
  DlNodeId node; /* DL_NONE when its definition had an error */
  DlLoc loc;
} Sym;

/* Symbols in definition order, plus an open-addressing index into them. */
typedef struct Scope {
  Sym *syms;
  int nsyms, cap;
  int *index; /* 1 + position in syms, 0 = empty slot */
  int index_cap;
} Scope;

typedef struct Lower {
  DlCompiler *cc;
  DlGraph *g;
  const DlAstFile *ast;
  const AstBlock *model;
  Scope scope;
} Lower;

static uint32_t hash_name(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static void scope_reindex(Lower *L, int cap) {
  Scope *sc = &L->scope;
  sc->index = dl_arena_alloc(L->cc->arena, sizeof(int) * (size_t)cap);
  sc->index_cap = cap;
  for (int i = 0; i < sc->nsyms; i++) {
    uint32_t h = hash_name(sc->syms[i].name) & (uint32_t)(cap - 1);
    while (sc->index[h])
      h = (h + 1) & (uint32_t)(cap - 1);
    sc->index[h] = i + 1;
  }
}

static Sym *scope_find(const Lower *L, const char *name) {
  const Scope *sc = &L->scope;
  if (!sc->index_cap) return NULL;
  uint32_t mask = (uint32_t)(sc->index_cap - 1);
  for (uint32_t h = hash_name(name) & mask; sc->index[h]; h = (h + 1) & mask) {
    Sym *s = &sc->syms[sc->index[h] - 1];
    if (strcmp(s->name, name) == 0) return s;
  }
  return NULL;
}

static const char *sym_kind_word(SymKind k) {
  switch (k) {
  case SYM_INPUT: return "input";
  case SYM_TARGET: return "target";
  case SYM_PARAM: return "parameter";
  case SYM_VAR: return "variable";
  }
  return "name";
}

/* ---- "did you mean" ---- */

/* Edit distance, capped: names longer than this are not worth a guess. */
enum { MAX_SUGGEST_LEN = 48 };

static int edit_distance(const char *a, const char *b) {
  /* Optimal string alignment: insertions, deletions, substitutions and
   * transpositions of neighbours ("xro" is one edit from "xor") cost 1. */
  size_t la = strlen(a), lb = strlen(b);
  if (la > MAX_SUGGEST_LEN || lb > MAX_SUGGEST_LEN) return 1 << 20;
  int rows[3][MAX_SUGGEST_LEN + 1];
  int *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
  for (size_t j = 0; j <= lb; j++)
    prev[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int best = prev[j - 1] + (a[i - 1] != b[j - 1]);
      if (prev[j] + 1 < best) best = prev[j] + 1;
      if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < best)
        best = prev2[j - 2] + 1;
      cur[j] = best;
    }
    int *t = prev2;
    prev2 = prev;
    prev = cur;
    cur = t;
  }
  return prev[lb];
}

typedef struct Suggest {
  const char *name;
  const char *best;
  int best_dist;
} Suggest;

static Suggest suggest_begin(const char *name) {
  return (Suggest){name, NULL, 1 << 20};
}

static void suggest_consider(Suggest *s, const char *candidate) {
  int len = (int)strlen(s->name);
  /* One edit in three characters; single letters are never "close". */
  int limit = len <= 1 ? 0 : (len + 2) / 3;
  int d = edit_distance(s->name, candidate);
  if (d <= limit && d < s->best_dist && strcmp(s->name, candidate) != 0) {
    s->best = candidate;
    s->best_dist = d;
  }
}

static void suggest_note(Lower *L, const Suggest *s, DlLoc loc) {
  if (s->best) dl_note(L->cc, loc, "did you mean '%s'?", s->best);
}

/* ---- builtins ---- */

typedef enum BuiltinKind {
  BI_UNARY,   /* elementwise op */
  BI_LINEAR,  /* identity */
  BI_POW,     /* pow(x, y) */
  BI_SOFTMAX, /* softmax family, last axis */
  BI_REDUCE,  /* sum / mean, optional axis and keepdim */
  BI_MSE,
  BI_BCE,
  BI_CROSS_ENTROPY,
  BI_INIT,  /* parameter initialisers: not usable in expressions */
  BI_TRAIN, /* train-block functions: not usable in expressions */
} BuiltinKind;

enum { MAX_BUILTIN_PARAMS = 3, NO_OP = -1 };

typedef struct Builtin {
  const char *name;
  BuiltinKind kind;
  int op; /* the DlOp of BI_UNARY, BI_POW, BI_SOFTMAX and BI_REDUCE; else NO_OP */
  int nrequired, nparams;
  const char *params[MAX_BUILTIN_PARAMS];
} Builtin;

static const Builtin builtins[] = {
    {"sigmoid", BI_UNARY, DL_OP_SIGMOID, 1, 1, {"x"}},
    {"tanh", BI_UNARY, DL_OP_TANH, 1, 1, {"x"}},
    {"relu", BI_UNARY, DL_OP_RELU, 1, 1, {"x"}},
    {"step", BI_UNARY, DL_OP_STEP, 1, 1, {"x"}},
    {"exp", BI_UNARY, DL_OP_EXP, 1, 1, {"x"}},
    {"log", BI_UNARY, DL_OP_LOG, 1, 1, {"x"}},
    {"sqrt", BI_UNARY, DL_OP_SQRT, 1, 1, {"x"}},
    {"abs", BI_UNARY, DL_OP_ABS, 1, 1, {"x"}},
    {"neg", BI_UNARY, DL_OP_NEG, 1, 1, {"x"}},
    {"linear", BI_LINEAR, NO_OP, 1, 1, {"x"}},
    {"pow", BI_POW, DL_OP_POW, 2, 2, {"x", "y"}},
    {"softmax", BI_SOFTMAX, DL_OP_SOFTMAX, 1, 1, {"x"}},
    {"log_softmax", BI_SOFTMAX, DL_OP_LOG_SOFTMAX, 1, 1, {"x"}},
    {"sum", BI_REDUCE, DL_OP_SUM, 1, 3, {"x", "axis", "keepdim"}},
    {"mean", BI_REDUCE, DL_OP_MEAN, 1, 3, {"x", "axis", "keepdim"}},
    {"mse", BI_MSE, NO_OP, 2, 2, {"prediction", "target"}},
    {"bce", BI_BCE, NO_OP, 2, 2, {"p", "target"}},
    {"cross_entropy", BI_CROSS_ENTROPY, NO_OP, 2, 2, {"logits", "target"}},
    {"uniform", BI_INIT, NO_OP, 2, 2, {"low", "high"}},
    {"normal", BI_INIT, NO_OP, 2, 2, {"mean", "std"}},
    {"xavier", BI_INIT, NO_OP, 0, 0, {0}},
    {"he", BI_INIT, NO_OP, 0, 0, {0}},
    {"csv", BI_TRAIN, NO_OP, 1, 2, {"path", "header"}},
    {"tensors", BI_TRAIN, NO_OP, 0, 0, {0}},
    {"sgd", BI_TRAIN, NO_OP, 0, 1, {"lr"}},
};

static const Builtin *find_builtin(const char *name) {
  for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
    if (strcmp(builtins[i].name, name) == 0) return &builtins[i];
  return NULL;
}

static const char *plural_args(DlArena *a, int nrequired, int nparams) {
  const char *s = nparams == 1 ? "" : "s";
  if (nrequired == nparams) return dl_arena_printf(a, "%d argument%s", nparams, s);
  if (nrequired == 0) return dl_arena_printf(a, "at most %d argument%s", nparams, s);
  return dl_arena_printf(a, "%d to %d arguments", nrequired, nparams);
}

/* Bind a call's arguments to a signature: positional ones in order, then
 * `name = value` ones by name.  out[i] receives the argument for params[i]
 * (NULL when absent).  Reports every problem; returns false on any. */
static bool bind_args(Lower *L, const AstExpr *call, const char *fname, int nrequired, int nparams,
                      const char *const *params, const AstExpr **out) {
  const AstArgList *args = &call->u.call.args;
  for (int i = 0; i < nparams; i++)
    out[i] = NULL;
  bool ok = true;
  int npositional = 0;
  bool seen_named = false;
  for (int i = 0; i < args->n; i++) {
    const AstArg *a = &args->items[i];
    if (!a->name) {
      if (seen_named) {
        dl_error(L->cc, a->value->loc, "positional argument after a named argument in '%s'", fname);
        ok = false;
      }
      npositional++;
      continue;
    }
    seen_named = true;
  }
  if (npositional > nparams) {
    dl_error(L->cc, call->loc, "'%s' expects %s, got %d", fname,
             plural_args(L->cc->arena, nrequired, nparams), args->n);
    return false;
  }
  int pos = 0;
  for (int i = 0; i < args->n; i++) {
    const AstArg *a = &args->items[i];
    if (!a->name) {
      out[pos++] = a->value;
      continue;
    }
    int k = -1;
    for (int j = 0; j < nparams; j++)
      if (strcmp(params[j], a->name) == 0) k = j;
    if (k < 0) {
      dl_error(L->cc, a->name_loc, "'%s' has no parameter named '%s'", fname, a->name);
      Suggest s = suggest_begin(a->name);
      for (int j = 0; j < nparams; j++)
        suggest_consider(&s, params[j]);
      suggest_note(L, &s, a->name_loc);
      ok = false;
    } else if (out[k]) {
      dl_error(L->cc, a->name_loc, "argument '%s' of '%s' is given twice", a->name, fname);
      ok = false;
    } else {
      out[k] = a->value;
    }
  }
  if (!ok) return false;
  for (int j = 0; j < nrequired; j++) {
    if (out[j]) continue;
    if (args->n < nrequired)
      dl_error(L->cc, call->loc, "'%s' expects %s, got %d", fname,
               plural_args(L->cc->arena, nrequired, nparams), args->n);
    else
      dl_error(L->cc, call->loc, "'%s' is missing its argument '%s'", fname, params[j]);
    return false;
  }
  return true;
}

/* ---- constants ---- */

/* A number literal, possibly negated: the only compile-time constants. */
static bool const_number(const AstExpr *e, double *v) {
  if (!e) return false;
  if (e->kind == AST_NUMBER) {
    *v = e->u.number.value;
    return true;
  }
  if (e->kind == AST_NEG && const_number(e->u.operand, v)) {
    *v = -*v;
    return true;
  }
  return false;
}

/* An integer constant in [min, max]; `what` names it and `range` says in
 * words what is allowed ("a positive integer"). */
static bool expect_int(Lower *L, const AstExpr *e, const char *what, const char *range, int64_t min,
                       int64_t max, int64_t *out) {
  double v;
  if (!const_number(e, &v)) {
    dl_error(L->cc, e->loc, "%s must be %s", what, range);
    return false;
  }
  if (v != floor(v) || v < (double)min || v > (double)max) {
    dl_error(L->cc, e->loc, "%s must be %s, got %g", what, range, v);
    return false;
  }
  *out = (int64_t)v;
  return true;
}

static bool expect_bool(Lower *L, const AstExpr *e, const char *what, bool *out) {
  if (e->kind != AST_BOOL) {
    dl_error(L->cc, e->loc, "%s must be true or false", what);
    return false;
  }
  *out = e->u.boolean;
  return true;
}

static bool fits_float(Lower *L, DlLoc loc, double v) {
  if (fabs(v) > FLT_MAX) {
    dl_error(L->cc, loc, "number %g does not fit in a 32-bit float", v);
    return false;
  }
  return true;
}

static const char *shape_text(Lower *L, const DlShape *s) {
  char buf[128];
  return dl_arena_strdup(L->cc->arena, dl_shape_str(s, buf, sizeof buf));
}

static int64_t per_row_width(const DlShape *s) {
  int64_t w = 1;
  for (int i = 0; i < s->rank; i++)
    if (s->d[i] != DL_DIM_BATCH) w *= s->d[i];
  return w;
}

/* ---- literal tensors ---- */

/* The shape of a nested list, read from its first elements; the elements
 * are checked against it by literal_fill. */
static bool literal_shape(Lower *L, const AstExpr *e, DlShape *shape) {
  shape->rank = 0;
  int64_t numel = 1;
  for (const AstExpr *cur = e; cur->kind == AST_LIST; cur = cur->u.list.items[0]) {
    if (cur->u.list.n == 0) {
      dl_error(L->cc, cur->loc, "empty tensor literal");
      return false;
    }
    if (shape->rank == DL_MAX_RANK) {
      dl_error(L->cc, e->loc, "tensor literal has more than %d dimensions", DL_MAX_RANK);
      return false;
    }
    shape->d[shape->rank++] = cur->u.list.n;
    numel *= cur->u.list.n;
  }
  if (numel > MAX_ELEMENTS) {
    dl_error(L->cc, e->loc, "tensor literal is too large");
    return false;
  }
  return true;
}

static bool literal_fill(Lower *L, const AstExpr *e, const DlShape *shape, int depth, float *out,
                         int64_t *pos) {
  if (depth == shape->rank) {
    double v;
    if (e->kind == AST_LIST) {
      dl_error(L->cc, e->loc, "ragged tensor literal: expected a number here, found a list");
      return false;
    }
    if (!const_number(e, &v)) {
      dl_error(L->cc, e->loc, "tensor literal elements must be numbers");
      return false;
    }
    if (!fits_float(L, e->loc, v)) return false;
    out[(*pos)++] = (float)v;
    return true;
  }
  if (e->kind != AST_LIST) {
    dl_error(L->cc, e->loc, "ragged tensor literal: expected a list of %lld elements here",
             (long long)shape->d[depth]);
    return false;
  }
  if (e->u.list.n != shape->d[depth]) {
    dl_error(L->cc, e->loc, "ragged tensor literal: expected %lld elements here, found %d",
             (long long)shape->d[depth], e->u.list.n);
    return false;
  }
  bool ok = true;
  for (int i = 0; i < e->u.list.n && ok; i++)
    ok = literal_fill(L, e->u.list.items[i], shape, depth + 1, out, pos);
  return ok;
}

/* A literal tensor's shape and row-major values (in the arena). */
static bool literal_tensor(Lower *L, const AstExpr *e, DlShape *shape, float **data) {
  if (!literal_shape(L, e, shape)) return false;
  int64_t numel = dl_shape_numel(shape, 1);
  *data = dl_arena_alloc(L->cc->arena, sizeof(float) * (size_t)numel);
  int64_t pos = 0;
  return literal_fill(L, e, shape, 0, *data, &pos);
}

/* ---- expressions ---- */

static DlNodeId lower_expr(Lower *L, const AstExpr *e);

static bool same_shape_args(Lower *L, const AstExpr *call, const char *fname, DlNodeId a,
                            DlNodeId b) {
  if (a == DL_NONE || b == DL_NONE) return false;
  const DlShape *sa = &dl_node(L->g, a)->shape, *sb = &dl_node(L->g, b)->shape;
  if (dl_shape_eq(sa, sb)) return true;
  dl_error(L->cc, call->loc, "'%s' needs two tensors of the same shape, got %s and %s", fname,
           shape_text(L, sa), shape_text(L, sb));
  return false;
}

static DlNodeId lower_reduce(Lower *L, const Builtin *b, const AstExpr *call,
                             const AstExpr *const *args) {
  DlNodeId x = lower_expr(L, args[0]);
  bool keepdim = false;
  bool ok = true;
  if (args[2]) ok &= expect_bool(L, args[2], "'keepdim'", &keepdim);
  uint32_t axes = 0;
  if (args[1]) {
    int64_t axis;
    if (!expect_int(L, args[1], "'axis'", "an integer", INT32_MIN, INT32_MAX, &axis))
      return DL_NONE;
    if (x == DL_NONE) return DL_NONE;
    int rank = dl_node(L->g, x)->shape.rank;
    int64_t k = axis < 0 ? axis + rank : axis;
    if (k < 0 || k >= rank) {
      dl_error(L->cc, args[1]->loc, "axis %lld is out of range for a tensor of rank %d",
               (long long)axis, rank);
      return DL_NONE;
    }
    axes = 1u << k;
  }
  if (!ok || x == DL_NONE) return DL_NONE;
  return dl_reduce(L->g, (DlOp)b->op, call->loc, x, axes, keepdim);
}

static DlNodeId lower_call(Lower *L, const AstExpr *call) {
  const AstExpr *callee = call->u.call.callee;
  if (callee->kind != AST_NAME) {
    dl_error(L->cc, callee->loc, "only a function name can be called");
    return DL_NONE;
  }
  const char *fname = callee->u.name;
  const Builtin *b = find_builtin(fname);
  if (!b) {
    const Sym *sym = scope_find(L, fname);
    if (sym) {
      dl_error(L->cc, callee->loc, "'%s' is %s %s, not a function", fname,
               sym->kind == SYM_INPUT ? "an" : "a", sym_kind_word(sym->kind));
      return DL_NONE;
    }
    dl_error(L->cc, callee->loc, "unknown function '%s'", fname);
    Suggest s = suggest_begin(fname);
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
      if (builtins[i].kind != BI_INIT && builtins[i].kind != BI_TRAIN)
        suggest_consider(&s, builtins[i].name);
    suggest_note(L, &s, callee->loc);
    return DL_NONE;
  }
  if (b->kind == BI_INIT) {
    dl_error(L->cc, callee->loc, "'%s' can only be used as a parameter initialiser", fname);
    return DL_NONE;
  }
  if (b->kind == BI_TRAIN) {
    dl_error(L->cc, callee->loc, "'%s' can only be used in a train block", fname);
    return DL_NONE;
  }
  const AstExpr *args[MAX_BUILTIN_PARAMS];
  if (!bind_args(L, call, fname, b->nrequired, b->nparams, b->params, args)) return DL_NONE;

  DlGraph *g = L->g;
  DlLoc loc = call->loc;
  switch (b->kind) {
  case BI_UNARY: return dl_unary(g, (DlOp)b->op, loc, lower_expr(L, args[0]));
  case BI_LINEAR: return lower_expr(L, args[0]);
  case BI_POW: {
    DlNodeId x = lower_expr(L, args[0]);
    DlNodeId y = lower_expr(L, args[1]);
    return dl_binary(g, DL_OP_POW, loc, x, y);
  }
  case BI_SOFTMAX: return dl_softmax(g, (DlOp)b->op, loc, lower_expr(L, args[0]));
  case BI_REDUCE: return lower_reduce(L, b, call, args);
  case BI_MSE: {
    /* mean((a - b)^2), the square as a product so no pow gradient is needed */
    DlNodeId a = lower_expr(L, args[0]);
    DlNodeId t = lower_expr(L, args[1]);
    if (!same_shape_args(L, call, fname, a, t)) return DL_NONE;
    DlNodeId d = dl_binary(g, DL_OP_SUB, loc, a, t);
    DlNodeId sq = dl_binary(g, DL_OP_MUL, loc, d, d);
    return dl_reduce(g, DL_OP_MEAN, loc, sq, 0, false);
  }
  case BI_BCE: {
    /* -mean(y * log(p) + (1 - y) * log(1 - p)) */
    DlNodeId p = lower_expr(L, args[0]);
    DlNodeId y = lower_expr(L, args[1]);
    if (!same_shape_args(L, call, fname, p, y)) return DL_NONE;
    DlNodeId one = dl_const_scalar(g, loc, 1.0);
    DlNodeId pos = dl_binary(g, DL_OP_MUL, loc, y, dl_unary(g, DL_OP_LOG, loc, p));
    DlNodeId one_minus_y = dl_binary(g, DL_OP_SUB, loc, one, y);
    DlNodeId one_minus_p = dl_binary(g, DL_OP_SUB, loc, one, p);
    DlNodeId neg =
        dl_binary(g, DL_OP_MUL, loc, one_minus_y, dl_unary(g, DL_OP_LOG, loc, one_minus_p));
    DlNodeId m = dl_reduce(g, DL_OP_MEAN, loc, dl_binary(g, DL_OP_ADD, loc, pos, neg), 0, false);
    return dl_unary(g, DL_OP_NEG, loc, m);
  }
  case BI_CROSS_ENTROPY: {
    /* mean over rows of -sum(y * log_softmax(z), last axis) */
    DlNodeId z = lower_expr(L, args[0]);
    DlNodeId y = lower_expr(L, args[1]);
    if (!same_shape_args(L, call, fname, z, y)) return DL_NONE;
    int rank = dl_node(g, z)->shape.rank;
    if (rank == 0) {
      dl_error(L->cc, loc, "'%s' needs logits with at least one axis", fname);
      return DL_NONE;
    }
    DlNodeId ls = dl_softmax(g, DL_OP_LOG_SOFTMAX, loc, z);
    DlNodeId s =
        dl_reduce(g, DL_OP_SUM, loc, dl_binary(g, DL_OP_MUL, loc, y, ls), 1u << (rank - 1), false);
    if (rank > 1) s = dl_reduce(g, DL_OP_MEAN, loc, s, 0, false);
    return dl_unary(g, DL_OP_NEG, loc, s);
  }
  case BI_INIT:
  case BI_TRAIN: break; /* rejected above */
  }
  return DL_NONE;
}

static DlNodeId lower_binary(Lower *L, const AstExpr *e) {
  DlNodeId a = lower_expr(L, e->u.binary.lhs);
  DlNodeId b = lower_expr(L, e->u.binary.rhs);
  DlGraph *g = L->g;
  switch (e->u.binary.op) {
  case '+': return dl_binary(g, DL_OP_ADD, e->loc, a, b);
  case '-': return dl_binary(g, DL_OP_SUB, e->loc, a, b);
  case '*': return dl_binary(g, DL_OP_MUL, e->loc, a, b);
  case '/': return dl_binary(g, DL_OP_DIV, e->loc, a, b);
  case '^': return dl_binary(g, DL_OP_POW, e->loc, a, b);
  case '@': return dl_matmul(g, e->loc, a, b, false, false);
  default: break;
  }
  dl_error(L->cc, e->loc, "internal error: unknown operator '%c'", e->u.binary.op);
  return DL_NONE;
}

static DlNodeId lower_name(Lower *L, const AstExpr *e) {
  const char *name = e->u.name;
  const Sym *sym = scope_find(L, name);
  if (sym) return sym->node;
  const Builtin *b = find_builtin(name);
  if (b) {
    if (b->kind == BI_INIT)
      dl_error(L->cc, e->loc, "'%s' can only be used as a parameter initialiser", name);
    else if (b->kind == BI_TRAIN)
      dl_error(L->cc, e->loc, "'%s' can only be used in a train block", name);
    else
      dl_error(L->cc, e->loc, "'%s' is a function; call it as %s(...)", name, name);
    return DL_NONE;
  }
  dl_error(L->cc, e->loc, "unknown name '%s'", name);
  Suggest s = suggest_begin(name);
  for (int i = 0; i < L->scope.nsyms; i++)
    suggest_consider(&s, L->scope.syms[i].name);
  suggest_note(L, &s, e->loc);
  return DL_NONE;
}

static DlNodeId lower_expr(Lower *L, const AstExpr *e) {
  if (!e) return DL_NONE;
  switch (e->kind) {
  case AST_NUMBER: return dl_const_scalar(L->g, e->loc, e->u.number.value);
  case AST_NAME: return lower_name(L, e);
  case AST_STRING: dl_error(L->cc, e->loc, "a string is not a tensor"); return DL_NONE;
  case AST_BOOL:
    dl_error(L->cc, e->loc, "'%s' is not a tensor", e->u.boolean ? "true" : "false");
    return DL_NONE;
  case AST_RANGE:
    dl_error(L->cc, e->loc, "a range (a..b) can only select csv() columns");
    return DL_NONE;
  case AST_LIST: {
    DlShape shape;
    float *data;
    if (!literal_tensor(L, e, &shape, &data)) return DL_NONE;
    return dl_const_data(L->g, e->loc, shape, data);
  }
  case AST_NEG: {
    double v;
    if (const_number(e, &v)) return dl_const_scalar(L->g, e->loc, v);
    return dl_unary(L->g, DL_OP_NEG, e->loc, lower_expr(L, e->u.operand));
  }
  case AST_BINARY: return lower_binary(L, e);
  case AST_CALL: return lower_call(L, e);
  }
  return DL_NONE;
}

/* ---- declarations ---- */

static bool lower_shape(Lower *L, const AstStmt *s, bool allow_batch, DlShape *shape) {
  const AstExprList *dims = s->shape;
  *shape = dl_shape_scalar();
  if (dims->n > DL_MAX_RANK) {
    dl_error(L->cc, dims->items[0]->loc, "shape has %d dimensions; at most %d are supported",
             dims->n, DL_MAX_RANK);
    return false;
  }
  bool ok = true, batch_seen = false;
  int64_t numel = 1;
  for (int i = 0; i < dims->n; i++) {
    const AstExpr *d = dims->items[i];
    int64_t v = 1;
    if (d->kind == AST_NAME && strcmp(d->u.name, "N") == 0) {
      if (!allow_batch) {
        dl_error(L->cc, d->loc, "parameter shapes cannot use the batch dimension N");
        ok = false;
      } else if (batch_seen) {
        dl_error(L->cc, d->loc, "the batch dimension N can appear only once in a shape");
        ok = false;
      }
      batch_seen = true;
      shape->d[i] = DL_DIM_BATCH;
      continue;
    }
    if (d->kind == AST_NAME) {
      dl_error(L->cc, d->loc, "unknown dimension '%s' (a dimension is a positive integer or N)",
               d->u.name);
      ok = false;
      continue;
    }
    if (!expect_int(L, d, "a shape dimension", "a positive integer or N", 1, MAX_DIM, &v)) {
      ok = false;
      continue;
    }
    shape->d[i] = v;
    numel *= v;
    if (numel > MAX_ELEMENTS) {
      dl_error(L->cc, d->loc, "shape is too large");
      return false;
    }
  }
  shape->rank = dims->n;
  return ok;
}

/* Fan-in and fan-out for xavier and he, as Glorot and He define them:
 * [I, O] has fan_in I and fan_out O; a vector d0 both; higher ranks (conv
 * kernels [out, in, kh, kw]) fan_in = prod(d[1:]), fan_out = d0 * prod(d[2:]). */
static void fans(const DlShape *s, double *fan_in, double *fan_out) {
  if (s->rank == 0) {
    *fan_in = *fan_out = 1;
  } else if (s->rank == 1) {
    *fan_in = *fan_out = (double)s->d[0];
  } else if (s->rank == 2) {
    *fan_in = (double)s->d[0];
    *fan_out = (double)s->d[1];
  } else {
    double rest = 1;
    for (int i = 2; i < s->rank; i++)
      rest *= (double)s->d[i];
    *fan_in = (double)s->d[1] * rest;
    *fan_out = (double)s->d[0] * rest;
  }
}

static bool lower_named_init(Lower *L, const char *name, const AstExpr *e, const AstStmt *s,
                             const DlShape *shape, DlInit *init) {
  const Builtin *b = find_builtin(name);
  if (!b || b->kind != BI_INIT) {
    dl_error(L->cc, e->loc, "unknown initialiser '%s' for '%s'", name, s->name);
    Suggest sg = suggest_begin(name);
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
      if (builtins[i].kind == BI_INIT) suggest_consider(&sg, builtins[i].name);
    suggest_note(L, &sg, e->loc);
    return false;
  }
  double fan_in, fan_out;
  fans(shape, &fan_in, &fan_out);
  if (strcmp(name, "xavier") == 0 || strcmp(name, "he") == 0) {
    if (e->kind == AST_CALL) {
      const AstExpr *none[1];
      if (!bind_args(L, e, name, 0, 0, NULL, none)) return false;
    }
    if (name[0] == 'x') {
      double limit = sqrt(6.0 / (fan_in + fan_out));
      *init = (DlInit){DL_INIT_UNIFORM, -limit, limit, NULL};
    } else {
      *init = (DlInit){DL_INIT_NORMAL, 0.0, sqrt(2.0 / fan_in), NULL};
    }
    return true;
  }
  if (e->kind != AST_CALL) {
    dl_error(L->cc, e->loc, "'%s' needs arguments: %s(%s, %s)", name, name, b->params[0],
             b->params[1]);
    return false;
  }
  const AstExpr *args[2];
  if (!bind_args(L, e, name, b->nrequired, b->nparams, b->params, args)) return false;
  double v[2];
  for (int i = 0; i < 2; i++) {
    if (!const_number(args[i], &v[i])) {
      dl_error(L->cc, args[i]->loc, "argument '%s' of '%s' must be a number", b->params[i], name);
      return false;
    }
  }
  if (strcmp(name, "uniform") == 0) {
    if (v[0] > v[1]) {
      dl_error(L->cc, e->loc, "uniform(low, high) needs low <= high, got %g > %g", v[0], v[1]);
      return false;
    }
    *init = (DlInit){DL_INIT_UNIFORM, v[0], v[1], NULL};
  } else {
    if (v[1] < 0) {
      dl_error(L->cc, args[1]->loc, "normal(mean, std) needs std >= 0, got %g", v[1]);
      return false;
    }
    *init = (DlInit){DL_INIT_NORMAL, v[0], v[1], NULL};
  }
  return true;
}

static bool lower_init(Lower *L, const AstStmt *s, const DlShape *shape, DlInit *init) {
  const AstExpr *e = s->value;
  *init = (DlInit){DL_INIT_ZERO, 0, 0, NULL};
  if (!e) return true;
  double v;
  if (const_number(e, &v)) {
    if (!fits_float(L, e->loc, v)) return false;
    if (v != 0) *init = (DlInit){DL_INIT_CONST, v, 0, NULL};
    return true;
  }
  switch (e->kind) {
  case AST_LIST: {
    DlShape lit;
    float *data;
    if (!literal_tensor(L, e, &lit, &data)) return false;
    if (!dl_shape_eq(&lit, shape)) {
      dl_error(L->cc, e->loc, "initial value of '%s' has shape %s, but '%s' is declared %s",
               s->name, shape_text(L, &lit), s->name, shape_text(L, shape));
      return false;
    }
    *init = (DlInit){DL_INIT_DATA, 0, 0, data};
    return true;
  }
  case AST_NAME: return lower_named_init(L, e->u.name, e, s, shape, init);
  case AST_CALL:
    if (e->u.call.callee->kind == AST_NAME)
      return lower_named_init(L, e->u.call.callee->u.name, e, s, shape, init);
    break;
  case AST_NUMBER:
  case AST_STRING:
  case AST_BOOL:
  case AST_NEG:
  case AST_BINARY:
  case AST_RANGE: break;
  }
  dl_error(L->cc, e->loc,
           "invalid initialiser for '%s': expected a number, a literal tensor, "
           "uniform(low, high), normal(mean, std), xavier or he",
           s->name);
  return false;
}

/* Define a name; on a redefinition report both places and keep the first. */
static void define(Lower *L, const char *name, SymKind kind, DlNodeId node, DlLoc loc) {
  Sym *old = scope_find(L, name);
  if (old) {
    dl_error(L->cc, loc, "redefinition of '%s'", name);
    dl_note(L->cc, old->loc, "previous definition is here");
    return;
  }
  Scope *sc = &L->scope;
  DL_ARENA_GROW(L->cc->arena, sc->syms, sc->nsyms, sc->cap);
  sc->syms[sc->nsyms++] = (Sym){name, kind, node, loc};
  if (sc->nsyms * 2 > sc->index_cap) {
    scope_reindex(L, sc->index_cap ? sc->index_cap * 2 : 64);
  } else {
    uint32_t mask = (uint32_t)(sc->index_cap - 1);
    uint32_t h = hash_name(name) & mask;
    while (sc->index[h])
      h = (h + 1) & mask;
    sc->index[h] = sc->nsyms;
  }
}

static void lower_model(Lower *L, const AstBlock *m) {
  DlGraph *g = L->g;
  const AstStmt *output_stmt = NULL;
  DlNodeId last_var = DL_NONE; /* the last variable other than loss */
  for (int i = 0; i < m->stmts.n; i++) {
    const AstStmt *s = m->stmts.items[i];
    switch (s->kind) {
    case AST_STMT_INPUT:
    case AST_STMT_TARGET: {
      DlShape shape;
      DlNodeId node = DL_NONE;
      bool target = s->kind == AST_STMT_TARGET;
      if (lower_shape(L, s, true, &shape))
        node = dl_input(g, s->name_loc, s->name, shape, target ? DL_ROLE_TARGET : DL_ROLE_INPUT);
      define(L, s->name, target ? SYM_TARGET : SYM_INPUT, node, s->name_loc);
      break;
    }
    case AST_STMT_PARAM: {
      DlShape shape;
      DlInit init;
      DlNodeId node = DL_NONE;
      bool shape_ok = lower_shape(L, s, false, &shape);
      if (shape_ok && lower_init(L, s, &shape, &init))
        node = dl_param(g, s->name_loc, s->name, shape, init);
      define(L, s->name, SYM_PARAM, node, s->name_loc);
      break;
    }
    case AST_STMT_ASSIGN: {
      DlNodeId node = lower_expr(L, s->value);
      /* An alias (h2 = h, out = x) keeps the node's first name: inputs and
       * parameters are fed and saved by their declared names. */
      if (node != DL_NONE && !dl_node(g, node)->name) dl_node_set_name(g, node, s->name);
      bool fresh = scope_find(L, s->name) == NULL;
      define(L, s->name, SYM_VAR, node, s->name_loc);
      if (fresh && strcmp(s->name, "loss") != 0) last_var = node;
      break;
    }
    case AST_STMT_OUTPUT:
      if (output_stmt) {
        dl_error(L->cc, s->loc, "the model's output is already given");
        dl_note(L->cc, output_stmt->loc, "previous 'output' is here");
      } else {
        output_stmt = s;
      }
      break;
    }
  }

  g->output = DL_NONE;
  if (output_stmt) {
    const Sym *sym = scope_find(L, output_stmt->name);
    if (sym) {
      g->output = sym->node;
    } else {
      AstExpr name = {.kind = AST_NAME, .loc = output_stmt->name_loc};
      name.u.name = output_stmt->name;
      lower_name(L, &name); /* reports it, with a suggestion */
    }
  } else {
    const Sym *out = scope_find(L, "out");
    if (out)
      g->output = out->node;
    else
      g->output = last_var;
  }

  g->loss = DL_NONE;
  const Sym *loss = scope_find(L, "loss");
  if (loss && loss->node != DL_NONE) {
    const DlShape *shape = &dl_node(g, loss->node)->shape;
    if (shape->rank != 0)
      dl_error(L->cc, loss->loc,
               "'loss' must be a scalar, but its shape is %s (reduce it with mean or sum)",
               shape_text(L, shape));
    else
      g->loss = loss->node;
  }
}

/* ---- the train block ---- */

static const char *data_path(Lower *L, const char *nnl_file, const char *path) {
  if (path[0] == '/' || !nnl_file) return path;
  const char *slash = strrchr(nnl_file, '/');
  if (!slash) return path;
  return dl_arena_printf(L->cc->arena, "%.*s/%s", (int)(slash - nnl_file), nnl_file, path);
}

/* The name of a call (or of a bare name, which counts as a call without
 * arguments), or NULL. */
static const char *callee_name(const AstExpr *v) {
  const AstExpr *callee = v->kind == AST_CALL ? v->u.call.callee : v;
  return callee->kind == AST_NAME ? callee->u.name : NULL;
}

static const Sym *data_field_target(Lower *L, const AstArg *a) {
  const Sym *sym = scope_find(L, a->name);
  if (sym && (sym->kind == SYM_INPUT || sym->kind == SYM_TARGET)) return sym;
  dl_error(L->cc, a->name_loc, "'%s' is not an input or target of model '%s'", a->name,
           L->model->name);
  if (!sym) {
    Suggest s = suggest_begin(a->name);
    for (int i = 0; i < L->scope.nsyms; i++)
      if (L->scope.syms[i].kind == SYM_INPUT || L->scope.syms[i].kind == SYM_TARGET)
        suggest_consider(&s, L->scope.syms[i].name);
    suggest_note(L, &s, a->name_loc);
  }
  return NULL;
}

/* Append a field unless the name is fed twice or there are too many. */
static DlDataField *add_field(Lower *L, DlDataSpec *d, const AstArg *a) {
  for (int i = 0; i < d->nfields; i++) {
    if (strcmp(d->fields[i].name, a->name) == 0) {
      dl_error(L->cc, a->name_loc, "'%s' is given twice", a->name);
      dl_note(L->cc, d->fields[i].loc, "previous definition is here");
      return NULL;
    }
  }
  if (d->nfields == DL_MAX_DATA_FIELDS) {
    dl_error(L->cc, a->name_loc, "too many data fields (at most %d)", DL_MAX_DATA_FIELDS);
    return NULL;
  }
  DlDataField *f = &d->fields[d->nfields++];
  memset(f, 0, sizeof *f);
  f->name = a->name;
  f->loc = a->name_loc;
  return f;
}

static bool csv_columns(Lower *L, const AstExpr *v, int *first, int *count) {
  int64_t lo, hi;
  const char *what = "a csv column";
  const char *range = "a non-negative integer";
  if (v->kind == AST_RANGE) {
    if (!expect_int(L, v->u.range.lo, what, range, 0, INT32_MAX, &lo) ||
        !expect_int(L, v->u.range.hi, what, range, 0, INT32_MAX, &hi))
      return false;
    if (hi <= lo) {
      dl_error(L->cc, v->loc, "empty column range %lld..%lld (the end is exclusive)", (long long)lo,
               (long long)hi);
      return false;
    }
  } else {
    if (!expect_int(L, v, what, range, 0, INT32_MAX - 1, &lo)) return false;
    hi = lo + 1;
  }
  *first = (int)lo;
  *count = (int)(hi - lo);
  return true;
}

static void lower_csv(Lower *L, const AstExpr *call, DlDataSpec *d) {
  d->kind = DL_DATA_CSV;
  const AstArgList *args = &call->u.call.args;
  for (int i = 0; i < args->n; i++) {
    const AstArg *a = &args->items[i];
    if (!a->name) {
      if (i != 0) {
        dl_error(L->cc, a->value->loc, "csv() takes the file path first, then named fields");
        continue;
      }
      if (a->value->kind != AST_STRING) {
        dl_error(L->cc, a->value->loc, "the csv() file path must be a string");
        continue;
      }
      d->path = data_path(L, call->loc.file, a->value->u.string);
      d->loc = a->value->loc;
      continue;
    }
    if (strcmp(a->name, "header") == 0) {
      expect_bool(L, a->value, "'header'", &d->header);
      continue;
    }
    const Sym *sym = data_field_target(L, a);
    /* one_hot(k): column k holds class indices, expanded to the width. */
    const AstExpr *cols = a->value;
    bool one_hot = cols->kind == AST_CALL && callee_name(cols) &&
                   strcmp(callee_name(cols), "one_hot") == 0;
    if (one_hot) {
      static const char *const one_hot_params[] = {"column"};
      const AstExpr *col = NULL;
      if (!bind_args(L, cols, "one_hot", 1, 1, one_hot_params, &col)) continue;
      cols = col;
    }
    int first, count;
    if (!csv_columns(L, cols, &first, &count) || !sym) continue;
    if (one_hot && count != 1) {
      dl_error(L->cc, cols->loc, "one_hot() takes a single column of class indices");
      continue;
    }
    DlDataField *f = add_field(L, d, a);
    if (!f) continue;
    f->first = first;
    f->count = count;
    f->one_hot = one_hot;
    if (sym->node != DL_NONE && one_hot) {
      const DlShape *shape = &dl_node(L->g, sym->node)->shape;
      if (per_row_width(shape) < 2)
        dl_error(L->cc, a->value->loc,
                 "one_hot() needs %s '%s' to have a column per class, but it is declared %s",
                 sym_kind_word(sym->kind), sym->name, shape_text(L, shape));
    } else if (sym->node != DL_NONE) {
      const DlShape *shape = &dl_node(L->g, sym->node)->shape;
      int64_t width = per_row_width(shape);
      if (width != count)
        dl_error(L->cc, a->value->loc,
                 "%s '%s' is declared %s (%lld values per row), but this selects %d column%s",
                 sym_kind_word(sym->kind), sym->name, shape_text(L, shape), (long long)width, count,
                 count == 1 ? "" : "s");
    }
  }
  bool path_given = args->n > 0 && !args->items[0].name;
  if (!path_given) dl_error(L->cc, call->loc, "csv() needs a file path as its first argument");
}

static void lower_tensors(Lower *L, const AstExpr *call, DlDataSpec *d) {
  d->kind = DL_DATA_TENSORS;
  const AstArgList *args = &call->u.call.args;
  const DlDataField *first_field = NULL;
  for (int i = 0; i < args->n; i++) {
    const AstArg *a = &args->items[i];
    if (!a->name) {
      dl_error(L->cc, a->value->loc, "tensors() takes only named fields, like x = [[0, 1]]");
      continue;
    }
    const Sym *sym = data_field_target(L, a);
    if (a->value->kind != AST_LIST) {
      dl_error(L->cc, a->value->loc, "data field '%s' must be a literal tensor", a->name);
      continue;
    }
    DlShape lit;
    float *values;
    if (!literal_tensor(L, a->value, &lit, &values) || !sym) continue;
    DlDataField *f = add_field(L, d, a);
    if (!f) continue;
    f->nrows = lit.d[0];
    f->width = dl_shape_numel(&lit, 1) / lit.d[0];
    f->values = values;
    if (sym->node != DL_NONE) {
      const DlShape *shape = &dl_node(L->g, sym->node)->shape;
      int64_t width = per_row_width(shape);
      if (width != f->width)
        dl_error(L->cc, a->value->loc,
                 "'%s' has %lld value%s per row, but %s '%s' is declared %s (%lld per row)",
                 a->name, (long long)f->width, f->width == 1 ? "" : "s", sym_kind_word(sym->kind),
                 sym->name, shape_text(L, shape), (long long)width);
    }
    if (!first_field) {
      first_field = f;
    } else if (f->nrows != first_field->nrows) {
      dl_error(L->cc, a->value->loc, "'%s' has %lld row%s, but '%s' has %lld", a->name,
               (long long)f->nrows, f->nrows == 1 ? "" : "s", first_field->name,
               (long long)first_field->nrows);
    }
  }
  d->loc = call->loc;
}

/* A number (possibly negative) in [min, max]; `range` says in words what
 * is allowed. */
static bool expect_number(Lower *L, const AstExpr *e, const char *what, const char *range,
                          double min, double max, double *out) {
  double v;
  if (!const_number(e, &v) || !(v >= min && v <= max) || !isfinite(v)) {
    if (const_number(e, &v))
      dl_error(L->cc, e->loc, "%s must be %s, got %g", what, range, v);
    else
      dl_error(L->cc, e->loc, "%s must be %s", what, range);
    return false;
  }
  *out = v;
  return true;
}

/* The signatures of the train block's functions. */
enum { MAX_TRAIN_PARAMS = 6 };
typedef struct TrainFn {
  const char *name;
  int nrequired, nparams;
  const char *params[MAX_TRAIN_PARAMS];
} TrainFn;

static const TrainFn train_fns[] = {
    {"idx", 2, 3, {"images", "labels", "limit"}},
    {"mnist", 0, 2, {"split", "limit"}},
    {"fashion_mnist", 0, 2, {"split", "limit"}},
    {"text", 1, 3, {"path", "context", "limit"}},
    {"sgd", 0, 4, {"lr", "momentum", "nesterov", "weight_decay"}},
    {"adam", 0, 5, {"lr", "beta1", "beta2", "eps", "weight_decay"}},
    {"adamw", 0, 5, {"lr", "beta1", "beta2", "eps", "weight_decay"}},
    {"constant", 0, 1, {"warmup"}},
    {"step", 1, 3, {"every", "gamma", "warmup"}},
    {"cosine", 0, 2, {"min_lr", "warmup"}},
    {"shift", 1, 1, {"pixels"}},
    {"noise", 1, 1, {"std"}},
};

static const TrainFn *find_train_fn(const char *name) {
  for (size_t i = 0; i < sizeof train_fns / sizeof train_fns[0]; i++)
    if (strcmp(train_fns[i].name, name) == 0) return &train_fns[i];
  return NULL;
}

static DlLoc callee_loc(const AstExpr *v) {
  return v->kind == AST_CALL ? v->u.call.callee->loc : v->loc;
}

/* Bind the arguments of a train-block function call (a bare name has none). */
static bool bind_train_args(Lower *L, const AstExpr *v, const char *fname,
                            const AstExpr **args) {
  const TrainFn *fn = find_train_fn(fname);
  for (int i = 0; i < MAX_TRAIN_PARAMS; i++)
    args[i] = NULL;
  if (v->kind != AST_CALL) {
    if (fn->nrequired == 0) return true;
    dl_error(L->cc, v->loc, "'%s' needs arguments: %s(%s%s)", fname, fname, fn->params[0],
             fn->nrequired > 1 ? ", ..." : " = ...");
    return false;
  }
  return bind_args(L, v, fname, fn->nrequired, fn->nparams, fn->params, args);
}

/* "unknown X 'name' (supported: a, b, c)" with a did-you-mean note. */
static void unknown_choice(Lower *L, DlLoc loc, const char *what, const char *name,
                           const char *const *choices, int nchoices) {
  char list[256] = "";
  Suggest sg = suggest_begin(name);
  for (int i = 0; i < nchoices; i++) {
    size_t used = strlen(list);
    snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", choices[i]);
    suggest_consider(&sg, choices[i]);
  }
  dl_error(L->cc, loc, "unknown %s '%s' (supported: %s)", what, name, list);
  suggest_note(L, &sg, loc);
}

/* IDX, MNIST and text data feed the model's one input and one target. */
static bool single_fields(Lower *L, const AstExpr *call, const char *fname, DlDataSpec *d) {
  int ninputs = 0, ntargets = 0;
  for (int i = 0; i < L->scope.nsyms; i++) {
    const Sym *sym = &L->scope.syms[i];
    if (sym->kind != SYM_INPUT && sym->kind != SYM_TARGET) continue;
    int64_t width =
        sym->node != DL_NONE ? per_row_width(&dl_node(L->g, sym->node)->shape) : 0;
    if (sym->kind == SYM_INPUT && ninputs++ == 0) {
      d->input = sym->name;
      d->input_width = width;
    } else if (sym->kind == SYM_TARGET && ntargets++ == 0) {
      d->target = sym->name;
      d->target_width = width;
    }
  }
  if (ninputs == 1 && ntargets == 1) return true;
  dl_error(L->cc, call->loc,
           "%s() feeds one input and one target, but model '%s' has %d input%s and %d "
           "target%s",
           fname, L->model->name, ninputs, ninputs == 1 ? "" : "s", ntargets,
           ntargets == 1 ? "" : "s");
  return false;
}

static void data_limit(Lower *L, const AstExpr *e, DlDataSpec *d) {
  int64_t n;
  if (e && expect_int(L, e, "'limit'", "a positive integer", 1, INT64_C(1) << 53, &n))
    d->limit = n;
}

static void data_path_arg(Lower *L, const AstExpr *e, const char *fname, const char *what,
                          const char **out) {
  if (e->kind != AST_STRING) {
    dl_error(L->cc, e->loc, "the %s() %s must be a string", fname, what);
    return;
  }
  *out = data_path(L, e->loc.file, e->u.string);
}

static void lower_idx(Lower *L, const AstExpr *call, const char *fname, DlDataSpec *d) {
  const AstExpr *args[MAX_TRAIN_PARAMS];
  d->loc = call->loc;
  if (!bind_train_args(L, call, fname, args)) return;
  single_fields(L, call, fname, d);
  data_limit(L, args[2], d);
  if (strcmp(fname, "idx") == 0) {
    d->kind = DL_DATA_IDX;
    data_path_arg(L, args[0], fname, "images path", &d->path);
    data_path_arg(L, args[1], fname, "labels path", &d->labels);
    return;
  }
  d->kind = strcmp(fname, "mnist") == 0 ? DL_DATA_MNIST : DL_DATA_FASHION_MNIST;
  if (args[0]) {
    const AstExpr *e = args[0];
    if (e->kind != AST_STRING || (strcmp(e->u.string, "train") && strcmp(e->u.string, "test")))
      dl_error(L->cc, e->loc, "'split' must be \"train\" or \"test\"");
    else
      d->test_split = strcmp(e->u.string, "test") == 0;
  }
  if (d->input && d->input_width != 784)
    dl_error(L->cc, call->loc,
             "%s() gives 28x28 images (784 values per row), but input '%s' takes %lld", fname,
             d->input, (long long)d->input_width);
}

static void lower_text(Lower *L, const AstExpr *call, DlDataSpec *d) {
  const AstExpr *args[MAX_TRAIN_PARAMS];
  d->kind = DL_DATA_TEXT;
  d->loc = call->loc;
  d->context = 1;
  if (!bind_train_args(L, call, "text", args)) return;
  data_path_arg(L, args[0], "text", "file path", &d->path);
  int64_t n;
  if (args[1] && expect_int(L, args[1], "'context'", "a positive integer", 1, 4096, &n))
    d->context = n;
  data_limit(L, args[2], d);
  single_fields(L, call, "text", d);
}

static void lower_data(Lower *L, const AstExpr *v, DlDataSpec *d, const char *setting) {
  bool fraction_allowed = strcmp(setting, "data") != 0;
  const char *fname = v->kind == AST_CALL ? callee_name(v) : NULL;
  double f;
  if (fraction_allowed && (v->kind == AST_NUMBER || v->kind == AST_NEG)) {
    d->loc = v->loc;
    if (expect_number(L, v, "a held-out fraction", "between 0 and 1", 0, 1, &f)) {
      if (f <= 0 || f >= 1)
        dl_error(L->cc, v->loc, "a held-out fraction must be between 0 and 1, got %g", f);
      d->kind = DL_DATA_FRACTION;
      d->fraction = f;
    }
    return;
  }
  if (fname && strcmp(fname, "csv") == 0) {
    lower_csv(L, v, d);
  } else if (fname && strcmp(fname, "tensors") == 0) {
    lower_tensors(L, v, d);
  } else if (fname && (strcmp(fname, "idx") == 0 || strcmp(fname, "mnist") == 0 ||
                       strcmp(fname, "fashion_mnist") == 0)) {
    lower_idx(L, v, fname, d);
    return;
  } else if (fname && strcmp(fname, "text") == 0) {
    lower_text(L, v, d);
    return;
  } else {
    dl_error(L->cc, v->loc,
             "'%s' must be csv(\"file.csv\", ...), tensors(...), idx(\"images\", \"labels\"), "
             "mnist(...), fashion_mnist(...) or text(\"file\", ...)%s",
             setting, fraction_allowed ? ", or a fraction of the data such as 0.1" : "");
    return;
  }
  /* Every input and target must be fed: the runtime has nothing else. */
  for (int i = 0; i < L->scope.nsyms; i++) {
    const Sym *sym = &L->scope.syms[i];
    if (sym->kind != SYM_INPUT && sym->kind != SYM_TARGET) continue;
    bool fed = false;
    for (int j = 0; j < d->nfields; j++)
      fed |= strcmp(d->fields[j].name, sym->name) == 0;
    if (!fed) {
      dl_error(L->cc, v->loc, "data does not provide %s '%s'", sym_kind_word(sym->kind), sym->name);
    }
  }
}

static void lower_optimizer(Lower *L, const AstExpr *v, DlTrainSpec *t) {
  t->optimizer_loc = v->loc;
  const char *name = callee_name(v);
  if (!name) {
    dl_error(L->cc, v->loc, "'optimizer' must be an optimizer such as sgd(lr = 0.1)");
    return;
  }
  static const char *const names[] = {"sgd", "adam", "adamw"};
  if (strcmp(name, "sgd") && strcmp(name, "adam") && strcmp(name, "adamw")) {
    unknown_choice(L, callee_loc(v), "optimizer", name, names, 3);
    return;
  }
  const AstExpr *args[MAX_TRAIN_PARAMS];
  if (!bind_train_args(L, v, name, args)) return;
  bool sgd = strcmp(name, "sgd") == 0;
  t->optimizer = sgd ? DL_OPT_SGD : strcmp(name, "adam") == 0 ? DL_OPT_ADAM : DL_OPT_ADAMW;
  t->lr = sgd ? 0.01 : 0.001;
  t->weight_decay = t->optimizer == DL_OPT_ADAMW ? 0.01 : 0;
  const double big = 1e30;
  if (args[0]) {
    double lr;
    if (!const_number(args[0], &lr) || !(lr > 0) || !isfinite(lr))
      dl_error(L->cc, args[0]->loc, "the learning rate 'lr' must be a positive number");
    else
      t->lr = lr;
  }
  const char *decay_word = "a non-negative number";
  if (sgd) {
    if (args[1])
      expect_number(L, args[1], "'momentum'", "at least 0 and below 1", 0, 0.999999, &t->momentum);
    if (args[2] && expect_bool(L, args[2], "'nesterov'", &t->nesterov) && t->nesterov &&
        !(t->momentum > 0))
      dl_error(L->cc, args[2]->loc, "Nesterov momentum needs a 'momentum' above 0");
    if (args[3]) expect_number(L, args[3], "'weight_decay'", decay_word, 0, big, &t->weight_decay);
    return;
  }
  if (args[1]) expect_number(L, args[1], "'beta1'", "at least 0 and below 1", 0, 0.999999, &t->beta1);
  if (args[2]) expect_number(L, args[2], "'beta2'", "at least 0 and below 1", 0, 0.999999, &t->beta2);
  if (args[3] && expect_number(L, args[3], "'eps'", "a positive number", 0, big, &t->eps) &&
      !(t->eps > 0))
    dl_error(L->cc, args[3]->loc, "'eps' must be a positive number, got 0");
  if (args[4]) expect_number(L, args[4], "'weight_decay'", decay_word, 0, big, &t->weight_decay);
}

static void lower_schedule(Lower *L, const AstExpr *v, DlTrainSpec *t) {
  t->schedule_loc = v->loc;
  const char *name = callee_name(v);
  static const char *const names[] = {"constant", "step", "cosine"};
  if (!name) {
    dl_error(L->cc, v->loc, "'schedule' must be constant, step(every = E) or cosine()");
    return;
  }
  if (strcmp(name, "constant") && strcmp(name, "step") && strcmp(name, "cosine")) {
    unknown_choice(L, callee_loc(v), "schedule", name, names, 3);
    return;
  }
  const AstExpr *args[MAX_TRAIN_PARAMS];
  if (!bind_train_args(L, v, name, args)) return;
  const AstExpr *warmup = NULL;
  if (strcmp(name, "constant") == 0) {
    t->schedule = DL_SCHEDULE_CONSTANT;
    warmup = args[0];
  } else if (strcmp(name, "step") == 0) {
    t->schedule = DL_SCHEDULE_STEP;
    int64_t n;
    if (expect_int(L, args[0], "'every'", "a positive integer (epochs)", 1, INT64_C(1) << 53, &n))
      t->step_every = n;
    if (args[1]) expect_number(L, args[1], "'gamma'", "a positive number", 1e-30, 1e30, &t->gamma);
    warmup = args[2];
  } else {
    t->schedule = DL_SCHEDULE_COSINE;
    if (args[0]) expect_number(L, args[0], "'min_lr'", "a non-negative number", 0, 1e30, &t->min_lr);
    warmup = args[1];
  }
  if (warmup) expect_number(L, warmup, "'warmup'", "a non-negative number of epochs", 0, 1e9, &t->warmup);
}

static void lower_augment_one(Lower *L, const AstExpr *v, DlTrainSpec *t) {
  const char *name = callee_name(v);
  static const char *const names[] = {"shift", "noise"};
  if (!name) {
    dl_error(L->cc, v->loc, "'augment' must be shift(pixels), noise(std) or a list of them");
    return;
  }
  if (strcmp(name, "shift") && strcmp(name, "noise")) {
    unknown_choice(L, callee_loc(v), "augmentation", name, names, 2);
    return;
  }
  const AstExpr *args[MAX_TRAIN_PARAMS];
  if (!bind_train_args(L, v, name, args)) return;
  int64_t n;
  if (strcmp(name, "shift") == 0) {
    if (expect_int(L, args[0], "'pixels'", "a positive integer", 1, 1 << 20, &n))
      t->augment_shift = n;
  } else {
    expect_number(L, args[0], "'std'", "a positive number", 1e-30, 1e30, &t->augment_noise);
  }
}

static void lower_augment(Lower *L, const AstExpr *v, DlTrainSpec *t) {
  t->augment_loc = v->loc;
  if (v->kind != AST_LIST) {
    lower_augment_one(L, v, t);
    return;
  }
  for (int i = 0; i < v->u.list.n; i++)
    lower_augment_one(L, v->u.list.items[i], t);
}

typedef enum TrainSetting {
  SET_DATA,
  SET_VALIDATION,
  SET_TEST,
  SET_OPTIMIZER,
  SET_SCHEDULE,
  SET_CLIP,
  SET_EPOCHS,
  SET_BATCH,
  SET_SEED,
  SET_PATIENCE,
  SET_RESTORE_BEST,
  SET_AUGMENT,
  SET_NORMALIZE,
  NSETTINGS
} TrainSetting;

static const char *const train_settings[NSETTINGS] = {
    "data",  "validation", "test", "optimizer",    "schedule", "clip",     "epochs",
    "batch", "seed",       "patience", "restore_best", "augment", "normalize"};

static void lower_setting(Lower *L, TrainSetting k, const AstStmt *s, DlTrainSpec *t) {
  const AstExpr *v = s->value;
  int64_t n;
  switch (k) {
  case SET_DATA:
    t->data.loc = s->name_loc;
    lower_data(L, v, &t->data, "data");
    break;
  case SET_VALIDATION: lower_data(L, v, &t->validation, "validation"); break;
  case SET_TEST: lower_data(L, v, &t->test, "test"); break;
  case SET_OPTIMIZER: lower_optimizer(L, v, t); break;
  case SET_SCHEDULE: lower_schedule(L, v, t); break;
  case SET_CLIP:
    expect_number(L, v, "'clip'", "a positive number (the largest gradient norm)", 1e-30, 1e30,
                  &t->clip);
    break;
  case SET_EPOCHS:
    if (expect_int(L, v, "'epochs'", "a positive integer", 1, INT64_C(1) << 53, &n)) t->epochs = n;
    break;
  case SET_BATCH:
    if (expect_int(L, v, "'batch'", "a positive integer", 1, INT64_C(1) << 53, &n)) t->batch = n;
    break;
  case SET_SEED:
    if (expect_int(L, v, "'seed'", "a non-negative integer", 0, INT64_C(1) << 53, &n))
      t->seed = (uint64_t)n;
    break;
  case SET_PATIENCE:
    t->patience_loc = v->loc;
    if (expect_int(L, v, "'patience'", "a positive integer (epochs)", 1, INT64_C(1) << 53, &n))
      t->patience = n;
    break;
  case SET_RESTORE_BEST: expect_bool(L, v, "'restore_best'", &t->restore_best); break;
  case SET_AUGMENT: lower_augment(L, v, t); break;
  case SET_NORMALIZE: expect_bool(L, v, "'normalize'", &t->normalize); break;
  case NSETTINGS: break;
  }
}

static void lower_train(Lower *L, const AstBlock *tb, DlTrainSpec *t) {
  t->present = true;
  t->loc = tb->loc;
  DlLoc seen[NSETTINGS];
  bool have[NSETTINGS] = {false};
  for (int i = 0; i < tb->stmts.n; i++) {
    const AstStmt *s = tb->stmts.items[i];
    if (s->kind != AST_STMT_ASSIGN) {
      dl_error(L->cc, s->loc,
               "a train block holds only settings (name = value); "
               "declarations belong in the model");
      continue;
    }
    int k = -1;
    for (int j = 0; j < NSETTINGS; j++)
      if (strcmp(train_settings[j], s->name) == 0) k = j;
    if (k < 0) {
      dl_error(L->cc, s->name_loc, "unknown train setting '%s'", s->name);
      Suggest sg = suggest_begin(s->name);
      for (int j = 0; j < NSETTINGS; j++)
        suggest_consider(&sg, train_settings[j]);
      suggest_note(L, &sg, s->name_loc);
      continue;
    }
    if (have[k]) {
      dl_error(L->cc, s->name_loc, "redefinition of '%s'", s->name);
      dl_note(L->cc, seen[k], "previous definition is here");
      continue;
    }
    have[k] = true;
    seen[k] = s->name_loc;
    if (!s->value) continue; /* a syntax error, already reported */
    lower_setting(L, (TrainSetting)k, s, t);
  }
  if (t->patience > 0 && t->validation.kind == DL_DATA_NONE)
    dl_error(L->cc, t->patience_loc,
             "early stopping watches the validation loss: add a 'validation' setting "
             "(e.g. validation = 0.1)");
  if (have[SET_RESTORE_BEST] && t->restore_best && t->patience == 0)
    dl_error(L->cc, seen[SET_RESTORE_BEST], "'restore_best' needs early stopping ('patience')");
  if (t->patience > 0 && !have[SET_RESTORE_BEST]) t->restore_best = true;
  /* A block without data (gradcheck needs none) or a model without a loss
   * is not an error here: `dlcc train` reports those when it needs them. */
}

/* ---- the file ---- */

static const AstBlock *find_block(const DlAstFile *ast, AstBlockKind kind, const char *name,
                                  int before) {
  for (int i = 0; i < before; i++)
    if (ast->blocks[i]->kind == kind && strcmp(ast->blocks[i]->name, name) == 0)
      return ast->blocks[i];
  return NULL;
}

/* Checks across blocks: model names unique, every train block names a model
 * and no model has two. */
static void check_file(DlCompiler *cc, const DlAstFile *ast) {
  for (int i = 0; i < ast->nblocks; i++) {
    const AstBlock *b = ast->blocks[i];
    const AstBlock *prev = find_block(ast, b->kind, b->name, i);
    if (b->kind == AST_BLOCK_MODEL) {
      if (prev) {
        dl_error(cc, b->name_loc, "redefinition of model '%s'", b->name);
        dl_note(cc, prev->name_loc, "previous definition is here");
      }
      continue;
    }
    if (!find_block(ast, AST_BLOCK_MODEL, b->name, ast->nblocks)) {
      dl_error(cc, b->name_loc, "unknown model '%s' in train block", b->name);
      Suggest s = suggest_begin(b->name);
      for (int j = 0; j < ast->nblocks; j++)
        if (ast->blocks[j]->kind == AST_BLOCK_MODEL) suggest_consider(&s, ast->blocks[j]->name);
      if (s.best) dl_note(cc, b->name_loc, "did you mean '%s'?", s.best);
    } else if (prev) {
      dl_error(cc, b->name_loc, "model '%s' already has a train block", b->name);
      dl_note(cc, prev->name_loc, "previous train block is here");
    }
  }
}

static void train_defaults(DlTrainSpec *t, const char *model) {
  memset(t, 0, sizeof *t);
  t->model = model;
  t->optimizer = DL_OPT_SGD;
  t->lr = 0.01;
  t->beta1 = 0.9;
  t->beta2 = 0.999;
  t->eps = 1e-8;
  t->gamma = 0.1;
  t->epochs = 1;
  t->batch = 32;
  t->seed = 0;
}

DlGraph *dl_lower(DlCompiler *cc, const DlAstFile *ast, const char *name, DlTrainSpec *train) {
  if (!ast) return NULL;
  check_file(cc, ast);
  bool named_by_user = name != NULL;
  if (!name) name = dl_default_model(ast);
  if (!name) {
    dl_error(cc, DL_NOLOC, "%s contains no model", ast->path);
    return NULL;
  }
  const AstBlock *model = find_block(ast, AST_BLOCK_MODEL, name, ast->nblocks);
  if (!model && named_by_user) {
    dl_error(cc, DL_NOLOC, "%s has no model named '%s'", ast->path, name);
    return NULL;
  }
  /* A default taken from a train block that names no model was reported by
   * check_file; lower the first model anyway so its errors show too. */
  for (int i = 0; !model && i < ast->nblocks; i++)
    if (ast->blocks[i]->kind == AST_BLOCK_MODEL) model = ast->blocks[i];
  if (!model) return NULL;
  Lower L = {.cc = cc, .ast = ast, .model = model};
  L.g = dl_graph_new(cc, model->name);
  lower_model(&L, model);

  DlTrainSpec local;
  DlTrainSpec *t = train ? train : &local;
  train_defaults(t, model->name);
  const AstBlock *tb = find_block(ast, AST_BLOCK_TRAIN, model->name, ast->nblocks);
  if (tb) lower_train(&L, tb, t);

  if (dl_failed(cc)) return NULL;
  return L.g;
}
