/* lower_stmt.c - statements: declarations, assignments, def expansion, loop
 * unrolling, and the naming and sharing of parameters.
 *
 * A def call is expanded inline: its arguments are evaluated in the caller,
 * bound to the def's parameters in a fresh scope (shape patterns bind size
 * variables), and its body is lowered there.  Parameters declared in the
 * body are named after the call's instance path (`h1.W`, `block1.attn.Wq`):
 *
 *   - `f(x) as name` or `as name[i]`          the instance named explicitly
 *   - `v = f(x)`, `v, w = f(x)`                the variable assigned (the first)
 *   - any other call                           `v.f` (v the statement's
 *                                              variable, none for return),
 *                                              `v.f_2`, `v.f_3` for further
 *                                              calls of f in the statement
 *
 * each under the instance path of the enclosing call.  Parameters are
 * identified by that full name: a call with the same instance name uses the
 * same parameters, which is how a loop shares weights across its
 * iterations (`h = rnn_cell(x[:, t, :], h)` creates h.W once).
 *
 * A loop `for t in a..b { ... }` is unrolled; each iteration has its own
 * scope with t bound to a number.  Assigning a variable declared outside
 * the loop updates it (the loop-carried value); names first assigned in the
 * body are local to one iteration.  Outside loops every name is defined
 * once.
 */
#include <math.h>
#include <string.h>

#include "lower_internal.h"

/* Guards against runaway expansion: far beyond real models. */
enum { MAX_UNROLL = 1 << 16, MAX_DEF_PARAMS = 64 };

static const char *full_name(Lower *L, const char *name) {
  if (!L->prefix[0]) return name;
  return dl_arena_printf(L->cc->arena, "%s.%s", L->prefix, name);
}

static bool in_loop(const Lower *L) {
  return L->cur->parent != NULL;
}

static void lower_stmt(Lower *L, const AstStmt *s);

/* ---- parameters ---- */

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
    for (int i = 0; i < builtin_count(); i++)
      if (builtin_at(i)->kind == BI_INIT) suggest_consider(&sg, builtin_at(i)->name);
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
    if (!is_static(L, args[i])) {
      dl_error(L->cc, args[i]->loc, "argument '%s' of '%s' must be a number", b->params[i], name);
      return false;
    }
    if (!expect_static_number(L, args[i], "an initialiser argument", &v[i])) return false;
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
  if (is_static(L, e)) {
    if (!expect_static_number(L, e, "an initial value", &v) || !fits_float(L, e->loc, v))
      return false;
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
  case AST_RANGE:
  case AST_INDEX:
  case AST_SLICE:
  case AST_ELLIPSIS: break;
  }
  dl_error(L->cc, e->loc,
           "invalid initialiser for '%s': expected a number, a literal tensor, "
           "uniform(low, high), normal(mean, std), xavier or he",
           s->name);
  return false;
}

static bool same_init(const DlInit *a, const DlInit *b, const DlShape *shape) {
  if (a->kind != b->kind || a->a != b->a || a->b != b->b) return false;
  if (a->kind != DL_INIT_DATA) return true;
  return memcmp(a->data, b->data, sizeof(float) * (size_t)dl_shape_numel(shape, 1)) == 0;
}

/* The parameter of that full name: created on its first declaration, the
 * same node on every later one (which must agree on shape and initialiser). */
static DlNodeId declare_param(Lower *L, const char *name, DlLoc loc, DlShape shape, DlInit init) {
  for (int i = 0; i < L->nparams; i++) {
    const ParamEntry *p = &L->params[i];
    if (strcmp(p->name, name) != 0) continue;
    if (p->node == DL_NONE) return DL_NONE;
    const DlNode *nd = dl_node(L->g, p->node);
    if (!dl_shape_eq(&nd->shape, &shape)) {
      dl_error(L->cc, loc, "parameter '%s' is shared, but its shape is %s here and %s before", name,
               shape_text(L, &shape), shape_text(L, &nd->shape));
    } else if (!same_init(&nd->attr.param, &init, &shape)) {
      dl_error(L->cc, loc, "parameter '%s' is shared, but its initial value differs from before",
               name);
    } else {
      return p->node;
    }
    dl_note(L->cc, p->loc, "'%s' was first created here", name);
    dl_note(L->cc, loc,
            "calls with the same instance name share parameters; give one call its own name with "
            "'as'");
    return DL_NONE;
  }
  DlNodeId node = dl_param(L->g, loc, name, shape, init);
  DL_ARENA_GROW(L->cc->arena, L->params, L->nparams, L->param_cap);
  /* Inside a def, the call that created it says more than the declaration. */
  L->params[L->nparams++] = (ParamEntry){name, node, L->frames ? L->frames->call_loc : loc};
  return node;
}

/* ---- names ---- */

static void redefinition(Lower *L, const char *name, DlLoc loc, DlLoc previous) {
  dl_error(L->cc, loc, "redefinition of '%s'", name);
  dl_note(L->cc, previous, "previous definition is here");
}

/* A declaration (input, target, param) may not reuse any visible name. */
static void declare_name(Lower *L, const char *name, SymKind kind, Value v, DlLoc loc) {
  const Sym *old = scope_find(L, name);
  if (old) {
    redefinition(L, name, loc, old->loc);
    return;
  }
  scope_add(L, L->cur, name, kind, v, loc);
}

/* `name = value`: defines name, or in a loop updates a variable declared
 * outside it. */
static void assign_var(Lower *L, const char *name, Value v, DlLoc loc) {
  if (v.kind == VAL_TENSOR && !dl_node(L->g, v.node)->name)
    dl_node_set_name(L->g, v.node, full_name(L, name));
  Sym *here = scope_find_local(L->cur, name);
  if (here && here->kind == SYM_LOOP) {
    dl_error(L->cc, loc, "cannot assign to the loop variable '%s'", name);
    dl_note(L->cc, here->loc, "'%s' is declared here", name);
    return;
  }
  if (here) {
    redefinition(L, name, loc, here->loc);
    return;
  }
  Sym *outer = in_loop(L) ? scope_find(L, name) : NULL;
  if (!outer) {
    scope_add(L, L->cur, name, SYM_VAR, v, loc);
    return;
  }
  if (outer->kind != SYM_VAR) {
    if (outer->kind == SYM_LOOP)
      dl_error(L->cc, loc, "cannot assign to the loop variable '%s'", name);
    else
      dl_error(L->cc, loc, "cannot assign to %s '%s': only variables can be reassigned in a loop",
               sym_kind_word(outer->kind), name);
    dl_note(L->cc, outer->loc, "'%s' is declared here", name);
    return;
  }
  outer->value = v;
  outer->node = v.kind == VAL_TENSOR ? v.node : DL_NONE;
}

/* A value bound to one name: a tuple or nothing is an error here. */
static Value single_value(Lower *L, Value v, DlLoc loc) {
  if (v.kind == VAL_TUPLE) {
    dl_error(L->cc, loc, "'%s' returns %d values, but 1 name is assigned", v.origin, v.n);
    return val_error();
  }
  if (v.kind == VAL_NOTHING) {
    dl_error(L->cc, loc, "'%s' returns no value", v.origin);
    return val_error();
  }
  return v;
}

/* The value of an assignment's right-hand side; a call directly assigned
 * names its instance after the variable. */
static Value assigned_value(Lower *L, const AstExpr *e, const char *var) {
  if (!e) return val_error(); /* a syntax error, already reported */
  StmtNaming naming = {.var = var};
  StmtNaming *saved = L->naming;
  L->naming = &naming;
  Value v = e->kind == AST_CALL ? lower_call(L, e, var) : lower_value(L, e);
  L->naming = saved;
  return v;
}

/* ---- instance names ---- */

/* `as cell` -> "cell"; `as layer[l]` -> "layer.3" (l = 3). */
static const char *instance_path(Lower *L, const AstExpr *e) {
  if (e->kind == AST_NAME) return e->u.name;
  const char *base = instance_path(L, e->u.index.base);
  int64_t k;
  if (!base || !expect_static_int(L, e->u.index.items.items[0], "an instance index",
                                  "a non-negative integer", 0, INT32_MAX, &k))
    return NULL;
  return dl_arena_printf(L->cc->arena, "%s.%lld", base, (long long)k);
}

static bool name_used(const StmtNaming *n, const char *name) {
  for (int i = 0; i < n->nused; i++)
    if (strcmp(n->used[i], name) == 0) return true;
  return false;
}

/* The instance path of a def call (see the top of this file); NULL after an
 * error in an `as` index. */
static const char *instance_name(Lower *L, const AstBlock *def, const AstExpr *call,
                                 const char *assigned) {
  const char *base = assigned;
  if (call->u.call.instance) {
    base = instance_path(L, call->u.call.instance);
    if (!base) return NULL;
  } else if (!base) {
    StmtNaming *n = L->naming;
    const char *stem =
        n && n->var ? dl_arena_printf(L->cc->arena, "%s.%s", n->var, def->name) : def->name;
    base = stem;
    for (int k = 2; n && name_used(n, base); k++)
      base = dl_arena_printf(L->cc->arena, "%s_%d", stem, k);
    if (n) {
      DL_ARENA_GROW(L->cc->arena, n->used, n->nused, n->cap);
      n->used[n->nused++] = base;
    }
  }
  return full_name(L, base);
}

/* ---- def calls ---- */

static void pattern_text_expr(Lower *L, const AstExpr *e, char **out) {
  switch (e->kind) {
  case AST_NAME: *out = dl_arena_printf(L->cc->arena, "%s%s", *out, e->u.name); return;
  case AST_NUMBER: *out = dl_arena_printf(L->cc->arena, "%s%s", *out, e->u.number.text); return;
  case AST_ELLIPSIS: *out = dl_arena_printf(L->cc->arena, "%s...", *out); return;
  case AST_NEG:
    *out = dl_arena_printf(L->cc->arena, "%s-", *out);
    pattern_text_expr(L, e->u.operand, out);
    return;
  case AST_BINARY:
    pattern_text_expr(L, e->u.binary.lhs, out);
    *out = dl_arena_printf(L->cc->arena, "%s %c ", *out, e->u.binary.op);
    pattern_text_expr(L, e->u.binary.rhs, out);
    return;
  case AST_STRING:
  case AST_BOOL:
  case AST_LIST:
  case AST_RANGE:
  case AST_CALL:
  case AST_INDEX:
  case AST_SLICE: *out = dl_arena_printf(L->cc->arena, "%s?", *out); return;
  }
}

/* "[N, I]", plus " (I = 3)" for the sizes already bound. */
static const char *pattern_text(Lower *L, const AstExprList *pat) {
  char *text = "[";
  const char *bound = "";
  for (int i = 0; i < pat->n; i++) {
    const AstExpr *d = pat->items[i];
    if (i) text = dl_arena_printf(L->cc->arena, "%s, ", text);
    pattern_text_expr(L, d, &text);
    const Sym *s = d->kind == AST_NAME ? scope_find_local(L->cur, d->u.name) : NULL;
    if (s && s->value.kind == VAL_NUMBER)
      bound = dl_arena_printf(L->cc->arena, "%s%s%s = %g", bound, bound[0] ? ", " : "", s->name,
                              s->value.number);
  }
  return dl_arena_printf(L->cc->arena, "%s]%s%s%s", text, bound[0] ? " (" : "", bound,
                         bound[0] ? ")" : "");
}

/* Match an argument against its parameter's shape pattern, binding the
 * pattern's new size names in the def's scope.  Errors point at `at` (the
 * argument) with a note at the parameter. */
static Value match_pattern(Lower *L, const AstBlock *def, const AstParam *p, Value v, DlLoc at) {
  DlNodeId x = value_tensor(L, v, at);
  if (x == DL_NONE) return val_error();
  const DlShape *s = &dl_node(L->g, x)->shape;
  const AstExprList *pat = p->pattern;
  int nellipsis = count_ellipses(pat);
  if (nellipsis > 1) {
    dl_error(L->cc, p->loc, "a shape pattern can hold '...' only once");
    return val_error();
  }
  const char *expected = pattern_text(L, pat);
  int nfixed = pat->n - nellipsis;
  bool ok = nellipsis ? s->rank >= nfixed : s->rank == nfixed;
  int axis = 0;
  for (int i = 0; ok && i < pat->n; i++) {
    const AstExpr *d = pat->items[i];
    if (d->kind == AST_ELLIPSIS) {
      axis += s->rank - nfixed;
      continue;
    }
    int64_t dim = s->d[axis++];
    if (d->kind == AST_NAME && strcmp(d->u.name, "N") == 0) {
      ok = dim == DL_DIM_BATCH;
      continue;
    }
    if (d->kind == AST_NAME && !scope_find_local(L->cur, d->u.name)) {
      /* A new size name: it takes this dimension (the batch dimension N is
       * not a number, so it only matches N). */
      ok = dim != DL_DIM_BATCH;
      if (ok) scope_add(L, L->cur, d->u.name, SYM_VAR, val_number((double)dim), d->loc);
      continue;
    }
    int64_t want;
    if (!expect_static_int(L, d, "a dimension of a shape pattern", "a positive integer", 1, MAX_DIM,
                           &want))
      return val_error();
    ok = dim == want;
  }
  if (ok) return val_tensor(x);
  dl_error(L->cc, at, "argument '%s' of '%s' has shape %s, which does not match %s", p->name,
           def->name, shape_text(L, s), expected);
  dl_note(L->cc, p->loc, "'%s' is declared here", p->name);
  return val_error();
}

/* The statements of a def's body; the value of its final `return`. */
static Value run_body(Lower *L, const AstBlock *def) {
  Value result = {.kind = VAL_NOTHING, .node = DL_NONE, .origin = def->name};
  for (int i = 0; i < def->stmts.n; i++) {
    const AstStmt *s = def->stmts.items[i];
    if (s->kind != AST_STMT_RETURN) {
      lower_stmt(L, s);
      continue;
    }
    if (i != def->stmts.n - 1) {
      dl_error(L->cc, s->loc, "'return' must be the last statement of a def");
      return val_error();
    }
    StmtNaming naming = {0};
    StmtNaming *saved = L->naming;
    L->naming = &naming;
    int n = s->values->n;
    Value *items = dl_arena_alloc(L->cc->arena, sizeof(Value) * (size_t)n);
    bool ok = true;
    for (int k = 0; k < n; k++) {
      items[k] = single_value(L, lower_value(L, s->values->items[k]), s->values->items[k]->loc);
      ok &= items[k].kind != VAL_ERROR;
    }
    L->naming = saved;
    if (n == 1) return items[0];
    result = ok ? (Value){.kind = VAL_TUPLE,
                          .node = DL_NONE,
                          .n = n,
                          .items = items,
                          .origin = def->name}
                : val_error();
  }
  return result;
}

Value call_def(Lower *L, const AstBlock *def, const AstExpr *call, const char *assigned) {
  for (const CallFrame *f = L->frames; f; f = f->outer) {
    if (f->def != def) continue;
    dl_error(L->cc, call->loc,
             "recursive call to '%s': defs are expanded inline, so a def cannot call itself",
             def->name);
    dl_note(L->cc, def->name_loc, "'%s' is defined here", def->name);
    return val_error();
  }
  int np = def->params.n;
  if (np > MAX_DEF_PARAMS) return val_error(); /* reported by collect_defs */
  const char *names[MAX_DEF_PARAMS];
  const AstExpr *args[MAX_DEF_PARAMS];
  int nrequired = 0;
  for (int i = 0; i < np; i++) {
    names[i] = def->params.items[i].name;
    if (!def->params.items[i].default_value) nrequired = i + 1;
  }
  if (!bind_args(L, call, def->name, nrequired, np, names, args)) return val_error();
  const char *instance = instance_name(L, def, call, assigned);
  if (!instance) return val_error();
  Value vals[MAX_DEF_PARAMS];
  for (int i = 0; i < np; i++)
    vals[i] = args[i] ? single_value(L, lower_value(L, args[i]), args[i]->loc) : val_error();

  /* The body runs in its own scope, under the call's instance path. */
  Scope scope = {0};
  Scope *saved_cur = L->cur;
  const char *saved_prefix = L->prefix;
  StmtNaming *saved_naming = L->naming;
  CallFrame frame = {def, call->loc, L->frames};
  L->cur = &scope;
  L->prefix = instance;
  L->frames = &frame;
  L->naming = NULL;
  int errors_before = L->cc->nerrors, call_site_errors = 0;
  bool bound_all = true;
  for (int i = 0; i < np; i++) {
    const AstParam *p = &def->params.items[i];
    Value v = vals[i];
    if (!args[i]) {
      StmtNaming naming = {0};
      L->naming = &naming;
      v = single_value(L, lower_value(L, p->default_value), p->default_value->loc);
      L->naming = NULL;
    }
    if (p->pattern && v.kind != VAL_ERROR) {
      int before = L->cc->nerrors;
      v = match_pattern(L, def, p, v, args[i] ? args[i]->loc : call->loc);
      if (args[i]) call_site_errors += L->cc->nerrors - before;
    }
    const Sym *old = scope_find_local(&scope, p->name);
    if (old) {
      dl_error(L->cc, p->loc, "'%s' is already a size in an earlier shape pattern", p->name);
      dl_note(L->cc, old->loc, "'%s' is bound here", p->name);
      bound_all = false;
      continue;
    }
    scope_add(L, &scope, p->name, SYM_VAR, v, p->loc);
    bound_all &= v.kind != VAL_ERROR;
  }
  /* With an argument missing its value (already reported), the body would
   * only repeat the error: its sizes are unbound. */
  Value result = bound_all ? run_body(L, def) : val_error();
  if (L->cc->nerrors - errors_before > call_site_errors)
    dl_note(L->cc, call->loc, "in call to '%s' here", def->name);
  L->cur = saved_cur;
  L->prefix = saved_prefix;
  L->frames = frame.outer;
  L->naming = saved_naming;
  return result;
}

/* ---- statements ---- */

static void lower_for(Lower *L, const AstStmt *s) {
  const AstExpr *r = s->value;
  if (!r) return; /* a syntax error, already reported */
  if (r->kind != AST_RANGE) {
    dl_error(L->cc, r->loc, "a loop runs over a range of integers, like 0..T");
    return;
  }
  int64_t lo, hi;
  bool ok = expect_static_int(L, r->u.range.lo, "the start of a loop range", "an integer", -MAX_DIM,
                              MAX_DIM, &lo);
  ok &= expect_static_int(L, r->u.range.hi, "the end of a loop range", "an integer", -MAX_DIM,
                          MAX_DIM, &hi);
  if (!ok) return;
  if (hi < lo) {
    dl_error(L->cc, r->loc, "the loop range %lld..%lld runs backwards", (long long)lo,
             (long long)hi);
    return;
  }
  const Sym *old = scope_find(L, s->name);
  if (old) {
    redefinition(L, s->name, s->name_loc, old->loc);
    return;
  }
  if (L->unrolled + (hi - lo) > MAX_UNROLL) {
    dl_error(L->cc, r->loc, "loops unroll to more than %d iterations in all", MAX_UNROLL);
    return;
  }
  L->unrolled += hi - lo;
  for (int64_t t = lo; t < hi; t++) {
    Scope body = {.parent = L->cur};
    L->cur = &body;
    scope_add(L, &body, s->name, SYM_LOOP, val_number((double)t), s->name_loc);
    int before = L->cc->nerrors;
    for (int i = 0; i < s->body->n; i++)
      lower_stmt(L, s->body->items[i]);
    L->cur = body.parent;
    if (L->cc->nerrors > before) break; /* the next iteration would repeat the same errors */
  }
}

static void lower_stmt(Lower *L, const AstStmt *s) {
  DlGraph *g = L->g;
  const char *where = L->frames ? "a def" : "a loop";
  switch (s->kind) {
  case AST_STMT_INPUT:
  case AST_STMT_TARGET: {
    bool target = s->kind == AST_STMT_TARGET;
    DlShape shape;
    DlNodeId node = DL_NONE;
    if (L->frames || in_loop(L)) {
      dl_error(L->cc, s->loc, "'%s' declarations belong in a model, not in %s",
               target ? "target" : "input", where);
    } else if (lower_dims(L, s->shape, s->loc, true, "", NULL, &shape)) {
      node = dl_input(g, s->name_loc, s->name, shape, target ? DL_ROLE_TARGET : DL_ROLE_INPUT);
    }
    declare_name(L, s->name, target ? SYM_TARGET : SYM_INPUT, val_tensor(node), s->name_loc);
    break;
  }
  case AST_STMT_PARAM: {
    DlShape shape;
    DlInit init;
    DlNodeId node = DL_NONE;
    bool shape_ok = lower_dims(L, s->shape, s->loc, false,
                               "parameter shapes cannot use the batch dimension N", NULL, &shape);
    if (shape_ok && lower_init(L, s, &shape, &init))
      node = declare_param(L, full_name(L, s->name), s->name_loc, shape, init);
    declare_name(L, s->name, SYM_PARAM, val_tensor(node), s->name_loc);
    break;
  }
  case AST_STMT_ASSIGN:
    assign_var(L, s->name, single_value(L, assigned_value(L, s->value, s->name), s->name_loc),
               s->name_loc);
    break;
  case AST_STMT_MULTI: {
    const AstNameList *names = s->names;
    Value v = assigned_value(L, s->value, names->names[0]);
    bool many = v.kind == VAL_TUPLE || v.kind == VAL_LIST;
    if (v.kind != VAL_ERROR && (!many || v.n != names->n)) {
      if (v.kind == VAL_LIST)
        dl_error(L->cc, s->loc, "the list has %d values, but %d names are assigned", v.n, names->n);
      else if (v.kind == VAL_TUPLE)
        dl_error(L->cc, s->loc, "'%s' returns %d values, but %d names are assigned", v.origin, v.n,
                 names->n);
      else if (v.kind == VAL_NOTHING)
        dl_error(L->cc, s->loc, "'%s' returns no value", v.origin);
      else
        dl_error(L->cc, s->loc,
                 "%d names are assigned, but the value is not a list or a call returning %d",
                 names->n, names->n);
      v = val_error();
    }
    for (int i = 0; i < names->n; i++)
      assign_var(L, names->names[i], v.kind != VAL_ERROR ? v.items[i] : val_error(),
                 names->locs[i]);
    break;
  }
  case AST_STMT_OUTPUT:
    dl_error(L->cc, s->loc, "'output' belongs at the top level of a model, not in %s", where);
    break;
  case AST_STMT_FOR: lower_for(L, s); break;
  case AST_STMT_RETURN:
    if (L->frames)
      dl_error(L->cc, s->loc, "'return' must be the last statement of a def, outside any loop");
    else
      dl_error(L->cc, s->loc, "'return' can only end a def");
    break;
  }
}

void lower_model(Lower *L, const AstBlock *m) {
  DlGraph *g = L->g;
  const AstStmt *output_stmt = NULL;
  const char *last_var = NULL; /* the last variable other than loss, for the default output */
  for (int i = 0; i < m->stmts.n; i++) {
    const AstStmt *s = m->stmts.items[i];
    if (s->kind == AST_STMT_OUTPUT) {
      if (output_stmt) {
        dl_error(L->cc, s->loc, "the model's output is already given");
        dl_note(L->cc, output_stmt->loc, "previous 'output' is here");
      } else {
        output_stmt = s;
      }
      continue;
    }
    const char *name = s->kind == AST_STMT_ASSIGN  ? s->name
                       : s->kind == AST_STMT_MULTI ? s->names->names[s->names->n - 1]
                                                   : NULL;
    bool fresh = name && !scope_find_local(&L->scope, name);
    lower_stmt(L, s);
    if (fresh && strcmp(name, "loss") != 0) {
      const Sym *sym = scope_find_local(&L->scope, name);
      if (sym && sym->value.kind != VAL_FUNC) last_var = name;
    }
  }

  g->output = DL_NONE;
  if (output_stmt) {
    const Sym *sym = scope_find(L, output_stmt->name);
    if (sym) {
      g->output = value_tensor(L, sym->value, output_stmt->name_loc);
    } else {
      AstExpr name = {.kind = AST_NAME, .loc = output_stmt->name_loc};
      name.u.name = output_stmt->name;
      lower_value(L, &name); /* reports it, with a suggestion */
    }
  } else {
    const Sym *out = scope_find(L, "out");
    if (!out && last_var) out = scope_find(L, last_var);
    if (out) g->output = value_tensor(L, out->value, out->loc);
  }

  g->loss = DL_NONE;
  const Sym *loss = scope_find(L, "loss");
  if (loss) {
    DlNodeId node = value_tensor(L, loss->value, loss->loc);
    if (node != DL_NONE) {
      const DlShape *shape = &dl_node(g, node)->shape;
      if (shape->rank != 0)
        dl_error(L->cc, loss->loc,
                 "'loss' must be a scalar, but its shape is %s (reduce it with mean or sum)",
                 shape_text(L, shape));
      else
        g->loss = node;
    }
  }
}

/* ---- defs ---- */

static void add_defs(Lower *L, const DlAstFile *file) {
  for (int i = 0; i < file->nblocks; i++) {
    const AstBlock *d = file->blocks[i];
    if (d->kind != AST_BLOCK_DEF) continue;
    if (find_builtin(d->name)) {
      dl_error(L->cc, d->name_loc, "'%s' is a builtin function; a def cannot take its name",
               d->name);
      continue;
    }
    const AstBlock *old = find_def(L, d->name);
    if (old) {
      dl_error(L->cc, d->name_loc, "redefinition of def '%s'", d->name);
      dl_note(L->cc, old->name_loc, "previous definition is here");
      continue;
    }
    bool ok = true, seen_default = false;
    if (d->params.n > MAX_DEF_PARAMS) {
      dl_error(L->cc, d->name_loc, "'%s' has %d parameters; at most %d are supported", d->name,
               d->params.n, MAX_DEF_PARAMS);
      ok = false;
    }
    for (int j = 0; j < d->params.n; j++) {
      const AstParam *p = &d->params.items[j];
      for (int k = 0; k < j; k++) {
        if (strcmp(d->params.items[k].name, p->name) != 0) continue;
        dl_error(L->cc, p->loc, "duplicate parameter '%s' in def '%s'", p->name, d->name);
        ok = false;
      }
      if (p->default_value) {
        seen_default = true;
      } else if (seen_default) {
        dl_error(L->cc, p->loc,
                 "parameter '%s' needs a default value, since a parameter before it has one",
                 p->name);
        ok = false;
      }
    }
    if (!ok) continue;
    DL_ARENA_GROW(L->cc->arena, L->defs, L->ndefs, L->def_cap);
    L->defs[L->ndefs++] = d;
  }
}

void collect_defs(Lower *L) {
  add_defs(L, L->ast);
  for (int i = 0; i < L->ast->nloaded; i++)
    add_defs(L, L->ast->loaded[i]);
}
