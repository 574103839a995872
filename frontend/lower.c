/* lower.c - from the syntax tree of one model (and its train block) to IR.
 *
 * This file holds what the parts of lowering share (see lower_internal.h):
 * symbols and scopes, "did you mean" suggestions, the table of builtin
 * functions and argument binding, literal tensors; and the train block's
 * settings and the entry point dl_lower.  Expressions are in lower_expr.c,
 * statements, defs and loops in lower_stmt.c.
 *
 * Errors do not stop lowering: a name whose definition failed stays defined
 * with an error value, and every IR constructor passes DL_NONE through
 * quietly, so one run reports each independent mistake once.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "lower_internal.h"

/* ---- symbols ---- */

static uint32_t hash_name(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static void scope_reindex(Lower *L, Scope *sc, int cap) {
  sc->index = dl_arena_alloc(L->cc->arena, sizeof(int) * (size_t)cap);
  sc->index_cap = cap;
  for (int i = 0; i < sc->nsyms; i++) {
    uint32_t h = hash_name(sc->syms[i].name) & (uint32_t)(cap - 1);
    while (sc->index[h])
      h = (h + 1) & (uint32_t)(cap - 1);
    sc->index[h] = i + 1;
  }
}

Sym *scope_find_local(const Scope *sc, const char *name) {
  if (!sc->index_cap) return NULL;
  uint32_t mask = (uint32_t)(sc->index_cap - 1);
  for (uint32_t h = hash_name(name) & mask; sc->index[h]; h = (h + 1) & mask) {
    Sym *s = &sc->syms[sc->index[h] - 1];
    if (strcmp(s->name, name) == 0) return s;
  }
  return NULL;
}

/* The innermost visible symbol of that name. */
Sym *scope_find(const Lower *L, const char *name) {
  for (const Scope *sc = L->cur ? L->cur : &L->scope; sc; sc = sc->parent) {
    Sym *s = scope_find_local(sc, name);
    if (s) return s;
  }
  return NULL;
}

void scope_add(Lower *L, Scope *sc, const char *name, SymKind kind, Value v, DlLoc loc) {
  DL_ARENA_GROW(L->cc->arena, sc->syms, sc->nsyms, sc->cap);
  DlNodeId node = v.kind == VAL_TENSOR ? v.node : DL_NONE;
  sc->syms[sc->nsyms++] = (Sym){name, kind, node, v, loc};
  if (sc->nsyms * 2 > sc->index_cap) {
    scope_reindex(L, sc, sc->index_cap ? sc->index_cap * 2 : 16);
  } else {
    uint32_t mask = (uint32_t)(sc->index_cap - 1);
    uint32_t h = hash_name(name) & mask;
    while (sc->index[h])
      h = (h + 1) & mask;
    sc->index[h] = sc->nsyms;
  }
}

const char *sym_kind_word(SymKind k) {
  switch (k) {
  case SYM_INPUT: return "input";
  case SYM_TARGET: return "target";
  case SYM_PARAM: return "parameter";
  case SYM_VAR: return "variable";
  case SYM_LOOP: return "loop variable";
  }
  return "name";
}

const AstBlock *find_def(const Lower *L, const char *name) {
  for (int i = 0; i < L->ndefs; i++)
    if (strcmp(L->defs[i]->name, name) == 0) return L->defs[i];
  return NULL;
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

Suggest suggest_begin(const char *name) {
  return (Suggest){name, NULL, 1 << 20};
}

void suggest_consider(Suggest *s, const char *candidate) {
  int len = (int)strlen(s->name);
  /* One edit in three characters; single letters are never "close". */
  int limit = len <= 1 ? 0 : (len + 2) / 3;
  int d = edit_distance(s->name, candidate);
  if (d <= limit && d < s->best_dist && strcmp(s->name, candidate) != 0) {
    s->best = candidate;
    s->best_dist = d;
  }
}

void suggest_note(Lower *L, const Suggest *s, DlLoc loc) {
  if (s->best) dl_note(L->cc, loc, "did you mean '%s'?", s->best);
}

void suggest_visible(const Lower *L, Suggest *s) {
  for (const Scope *sc = L->cur ? L->cur : &L->scope; sc; sc = sc->parent)
    for (int i = 0; i < sc->nsyms; i++)
      suggest_consider(s, sc->syms[i].name);
}

/* ---- builtins ---- */

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
    {"pow", BI_BINARY, DL_OP_POW, 2, 2, {"x", "y"}},
    {"maximum", BI_BINARY, DL_OP_MAXIMUM, 2, 2, {"a", "b"}},
    {"greater", BI_COMPARE, DL_OP_GT, 2, 2, {"a", "b"}},
    {"equal", BI_COMPARE, DL_OP_EQ, 2, 2, {"a", "b"}},
    {"softmax", BI_SOFTMAX, DL_OP_SOFTMAX, 1, 1, {"x"}},
    {"log_softmax", BI_SOFTMAX, DL_OP_LOG_SOFTMAX, 1, 1, {"x"}},
    {"sum", BI_REDUCE, DL_OP_SUM, 1, 3, {"x", "axis", "keepdim"}},
    {"mean", BI_REDUCE, DL_OP_MEAN, 1, 3, {"x", "axis", "keepdim"}},
    {"max", BI_REDUCE, DL_OP_MAX, 1, 3, {"x", "axis", "keepdim"}},
    {"mse", BI_MSE, NO_OP, 2, 2, {"prediction", "target"}},
    {"bce", BI_BCE, NO_OP, 2, 2, {"p", "target"}},
    {"cross_entropy", BI_CROSS_ENTROPY, NO_OP, 2, 2, {"logits", "target"}},
    {"nll", BI_NLL, NO_OP, 2, 2, {"log_probs", "target"}},
    {"reshape", BI_RESHAPE, NO_OP, 2, 2, {"x", "shape"}},
    {"transpose", BI_TRANSPOSE, NO_OP, 1, 1, {"x"}},
    {"permute", BI_PERMUTE, NO_OP, 2, 2, {"x", "axes"}},
    {"concat", BI_CONCAT, NO_OP, 1, 1, {"axis"}}, /* positional tensors, then axis */
    {"stack", BI_STACK, NO_OP, 1, 2, {"tensors", "axis"}},
    {"pad", BI_PAD, NO_OP, 2, 2, {"x", "widths"}},
    {"conv2d", BI_CONV2D, NO_OP, 2, 4, {"x", "w", "stride", "padding"}},
    {"maxpool2d", BI_POOL2D, DL_OP_MAXPOOL2D, 2, 3, {"x", "size", "stride"}},
    {"avgpool2d", BI_POOL2D, DL_OP_AVGPOOL2D, 2, 3, {"x", "size", "stride"}},
    {"gather", BI_GATHER, NO_OP, 2, 2, {"table", "indices"}},
    {"embedding", BI_GATHER, NO_OP, 2, 2, {"table", "indices"}},
    {"one_hot", BI_ONE_HOT, NO_OP, 2, 2, {"labels", "classes"}},
    {"dropout", BI_DROPOUT, NO_OP, 2, 2, {"x", "p"}},
    {"causal_mask", BI_CAUSAL_MASK, NO_OP, 1, 1, {"size"}},
    {"sinusoids", BI_SINUSOIDS, NO_OP, 2, 2, {"length", "dim"}},
    {"zeros", BI_FILL, 0, 1, 1, {"shape"}},
    {"ones", BI_FILL, 1, 1, 1, {"shape"}},
    {"size", BI_SIZE, NO_OP, 2, 2, {"x", "axis"}},
    {"uniform", BI_INIT, NO_OP, 2, 2, {"low", "high"}},
    {"normal", BI_INIT, NO_OP, 2, 2, {"mean", "std"}},
    {"xavier", BI_INIT, NO_OP, 0, 0, {0}},
    {"he", BI_INIT, NO_OP, 0, 0, {0}},
    {"csv", BI_TRAIN, NO_OP, 1, 2, {"path", "header"}},
    {"tensors", BI_TRAIN, NO_OP, 0, 0, {0}},
    {"sgd", BI_TRAIN, NO_OP, 0, 1, {"lr"}},
};

const Builtin *find_builtin(const char *name) {
  for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
    if (strcmp(builtins[i].name, name) == 0) return &builtins[i];
  return NULL;
}

int builtin_count(void) {
  return (int)(sizeof builtins / sizeof builtins[0]);
}

const Builtin *builtin_at(int i) {
  return &builtins[i];
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
bool bind_args(Lower *L, const AstExpr *call, const char *fname, int nrequired, int nparams,
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
bool const_number(const AstExpr *e, double *v) {
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
bool expect_int(Lower *L, const AstExpr *e, const char *what, const char *range, int64_t min,
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

bool expect_bool(Lower *L, const AstExpr *e, const char *what, bool *out) {
  if (e->kind != AST_BOOL) {
    dl_error(L->cc, e->loc, "%s must be true or false", what);
    return false;
  }
  *out = e->u.boolean;
  return true;
}

bool fits_float(Lower *L, DlLoc loc, double v) {
  if (fabs(v) > FLT_MAX) {
    dl_error(L->cc, loc, "number %g does not fit in a 32-bit float", v);
    return false;
  }
  return true;
}

const char *shape_text(Lower *L, const DlShape *s) {
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
      /* Sizes and other compile-time numbers are welcome: [[1 / D, 0]]. */
      if (!is_static(L, e)) {
        dl_error(L->cc, e->loc, "tensor literal elements must be numbers");
        return false;
      }
      if (!expect_static_number(L, e, "a tensor literal element", &v)) return false;
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
bool literal_tensor(Lower *L, const AstExpr *e, DlShape *shape, float **data) {
  if (!literal_shape(L, e, shape)) return false;
  int64_t numel = dl_shape_numel(shape, 1);
  *data = dl_arena_alloc(L->cc->arena, sizeof(float) * (size_t)numel);
  int64_t pos = 0;
  return literal_fill(L, e, shape, 0, *data, &pos);
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
    bool one_hot =
        cols->kind == AST_CALL && callee_name(cols) && strcmp(callee_name(cols), "one_hot") == 0;
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
static bool bind_train_args(Lower *L, const AstExpr *v, const char *fname, const AstExpr **args) {
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
    int64_t width = sym->node != DL_NONE ? per_row_width(&dl_node(L->g, sym->node)->shape) : 0;
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
  if (e && expect_int(L, e, "'limit'", "a positive integer", 1, INT64_C(1) << 53, &n)) d->limit = n;
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
  if (strcmp(fname, "idx") == 0) {
    data_limit(L, args[2], d);
    d->kind = DL_DATA_IDX;
    data_path_arg(L, args[0], fname, "images path", &d->path);
    data_path_arg(L, args[1], fname, "labels path", &d->labels);
    return;
  }
  data_limit(L, args[1], d);
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
  if (args[1])
    expect_number(L, args[1], "'beta1'", "at least 0 and below 1", 0, 0.999999, &t->beta1);
  if (args[2])
    expect_number(L, args[2], "'beta2'", "at least 0 and below 1", 0, 0.999999, &t->beta2);
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
    if (args[0])
      expect_number(L, args[0], "'min_lr'", "a non-negative number", 0, 1e30, &t->min_lr);
    warmup = args[1];
  }
  if (warmup)
    expect_number(L, warmup, "'warmup'", "a non-negative number of epochs", 0, 1e9, &t->warmup);
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
    "data",  "validation", "test",     "optimizer",    "schedule", "clip",     "epochs",
    "batch", "seed",       "patience", "restore_best", "augment",  "normalize"};

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
    if (b->kind == AST_BLOCK_DEF) continue; /* checked by collect_defs */
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
  Lower L = {.cc = cc, .ast = ast, .model = model, .prefix = ""};
  L.cur = &L.scope;
  L.g = dl_graph_new(cc, model->name);
  collect_defs(&L);
  lower_model(&L, model);

  DlTrainSpec local;
  DlTrainSpec *t = train ? train : &local;
  train_defaults(t, model->name);
  const AstBlock *tb = find_block(ast, AST_BLOCK_TRAIN, model->name, ast->nblocks);
  if (tb) lower_train(&L, tb, t);

  if (dl_failed(cc)) return NULL;
  return L.g;
}
