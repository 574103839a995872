/* lower_expr.c - expressions to values: tensors (IR nodes) and compile-time
 * numbers, booleans, strings, functions and tuples.
 *
 * Arithmetic on compile-time numbers is folded here (`4 * H`, `D / heads`,
 * `1 / sqrt(dk)`), so sizes, axes, loop bounds and indices can be computed;
 * a number meets a tensor as a scalar constant.  Builtin calls lower to IR
 * constructors; the library losses and layout helpers (cross_entropy, nll,
 * stack, transpose...) are built from primitive ops here, so autodiff and
 * codegen never see them.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "lower_internal.h"

/* ---- compile-time numbers ---- */

/* The function a call's name denotes: a function-valued variable (`act`),
 * else a def, else a builtin.  *sym gets the variable of that name, if any. */
static void resolve_callee(const Lower *L, const char *name, const Sym **sym, const AstBlock **def,
                           const Builtin **builtin) {
  *sym = scope_find(L, name);
  *def = NULL;
  *builtin = NULL;
  if (*sym && (*sym)->value.kind == VAL_FUNC) {
    *def = (*sym)->value.def;
    *builtin = (*sym)->value.builtin;
    return;
  }
  *def = find_def(L, name);
  if (!*def) *builtin = find_builtin(name);
}

static bool foldable_builtin(const Builtin *b) {
  return b && (b->kind == BI_UNARY || b->kind == BI_LINEAR || b->kind == BI_BINARY ||
               b->kind == BI_COMPARE || b->kind == BI_SIZE);
}

bool is_static(const Lower *L, const AstExpr *e) {
  if (!e) return false;
  switch (e->kind) {
  case AST_NUMBER: return true;
  case AST_NAME: {
    const Sym *s = scope_find(L, e->u.name);
    return s && s->value.kind == VAL_NUMBER;
  }
  case AST_NEG: return is_static(L, e->u.operand);
  case AST_BINARY:
    return e->u.binary.op != '@' && is_static(L, e->u.binary.lhs) && is_static(L, e->u.binary.rhs);
  case AST_CALL: {
    if (e->u.call.callee->kind != AST_NAME) return false;
    const Sym *sym;
    const AstBlock *def;
    const Builtin *b;
    resolve_callee(L, e->u.call.callee->u.name, &sym, &def, &b);
    if (!foldable_builtin(b)) return false;
    if (b->kind == BI_SIZE) return true; /* a tensor's size is always known */
    for (int i = 0; i < e->u.call.args.n; i++)
      if (!is_static(L, e->u.call.args.items[i].value)) return false;
    return true;
  }
  case AST_STRING:
  case AST_BOOL:
  case AST_LIST:
  case AST_RANGE:
  case AST_INDEX:
  case AST_SLICE:
  case AST_ELLIPSIS: return false;
  }
  return false;
}

static Value fold_result(Lower *L, DlLoc loc, const char *what, double v) {
  if (!isfinite(v)) {
    dl_error(L->cc, loc, "%s of compile-time numbers is not finite", what);
    return val_error();
  }
  return val_number(v);
}

static Value fold_binary(Lower *L, DlLoc loc, char op, double a, double b) {
  switch (op) {
  case '+': return fold_result(L, loc, "the sum", a + b);
  case '-': return fold_result(L, loc, "the difference", a - b);
  case '*': return fold_result(L, loc, "the product", a * b);
  case '/':
    if (b == 0) {
      dl_error(L->cc, loc, "division by zero in a compile-time expression");
      return val_error();
    }
    return fold_result(L, loc, "the quotient", a / b);
  case '^': return fold_result(L, loc, "the power", pow(a, b));
  default: break;
  }
  return val_error();
}

/* An elementwise builtin applied to a compile-time number.  (An if chain,
 * not a switch: only these few ops have a meaning here.) */
static Value fold_unary(Lower *L, DlLoc loc, DlOp op, double x) {
  double y = x;
  if (op == DL_OP_NEG)
    y = -x;
  else if (op == DL_OP_EXP)
    y = exp(x);
  else if (op == DL_OP_LOG)
    y = log(x);
  else if (op == DL_OP_SQRT)
    y = sqrt(x);
  else if (op == DL_OP_TANH)
    y = tanh(x);
  else if (op == DL_OP_SIGMOID)
    y = 1.0 / (1.0 + exp(-x));
  else if (op == DL_OP_RELU)
    y = x > 0 ? x : 0;
  else if (op == DL_OP_STEP)
    y = x > 0 ? 1 : 0;
  else if (op == DL_OP_ABS)
    y = fabs(x);
  return fold_result(L, loc, dl_arena_printf(L->cc->arena, "'%s'", dl_op_info[op].name), y);
}

static Value fold_binary_op(Lower *L, DlLoc loc, DlOp op, double x, double y) {
  if (op == DL_OP_POW) return fold_binary(L, loc, '^', x, y);
  if (op == DL_OP_MAXIMUM) return val_number(fmax(x, y));
  if (op == DL_OP_GT) return val_number(x > y);
  return val_number(x == y); /* DL_OP_EQ */
}

bool expect_static_number(Lower *L, const AstExpr *e, const char *what, double *out) {
  if (!is_static(L, e)) {
    dl_error(L->cc, e->loc, "%s must be a number known at compile time", what);
    return false;
  }
  Value v = lower_value(L, e);
  if (v.kind != VAL_NUMBER) return false;
  *out = v.number;
  return true;
}

bool expect_static_int(Lower *L, const AstExpr *e, const char *what, const char *range, int64_t min,
                       int64_t max, int64_t *out) {
  if (!is_static(L, e)) {
    const Sym *s = e->kind == AST_NAME ? scope_find(L, e->u.name) : NULL;
    if (s && s->value.kind == VAL_TENSOR)
      dl_error(L->cc, e->loc, "%s must be %s known at compile time, but '%s' is a tensor", what,
               range, e->u.name);
    else
      dl_error(L->cc, e->loc, "%s must be %s known at compile time", what, range);
    return false;
  }
  Value v = lower_value(L, e);
  if (v.kind != VAL_NUMBER) return false;
  if (v.number != floor(v.number) || v.number < (double)min || v.number > (double)max) {
    dl_error(L->cc, e->loc, "%s must be %s, got %g", what, range, v.number);
    return false;
  }
  *out = (int64_t)v.number;
  return true;
}

/* true, false, or a variable holding one (a def argument). */
static bool expect_static_bool(Lower *L, const AstExpr *e, const char *what, bool *out) {
  if (e->kind == AST_NAME) {
    const Sym *s = scope_find(L, e->u.name);
    if (s && s->value.kind == VAL_BOOL) {
      *out = s->value.boolean;
      return true;
    }
  }
  return expect_bool(L, e, what, out);
}

/* ---- values as tensors ---- */

DlNodeId value_tensor(Lower *L, Value v, DlLoc loc) {
  switch (v.kind) {
  case VAL_ERROR: return DL_NONE;
  case VAL_TENSOR: return v.node;
  case VAL_NUMBER:
    if (!fits_float(L, loc, v.number)) return DL_NONE;
    return dl_const_scalar(L->g, loc, v.number);
  case VAL_NOTHING:
    dl_error(L->cc, loc, "'%s' returns no value", v.origin ? v.origin : "this call");
    return DL_NONE;
  case VAL_BOOL: dl_error(L->cc, loc, "'%s' is not a tensor", v.boolean ? "true" : "false"); break;
  case VAL_STRING: dl_error(L->cc, loc, "a string is not a tensor"); break;
  case VAL_FUNC: {
    const char *name = v.def ? v.def->name : v.builtin->name;
    dl_error(L->cc, loc, "'%s' is a function; call it as %s(...)", name, name);
    break;
  }
  case VAL_TUPLE:
    dl_error(L->cc, loc, "'%s' returns %d values; assign them to %d names (a, b = ...)", v.origin,
             v.n, v.n);
    break;
  case VAL_LIST:
    dl_error(L->cc, loc,
             "a list is not a tensor (stack(list, axis = k) or concat(list, axis = k) makes one)");
    break;
  }
  return DL_NONE;
}

DlNodeId lower_expr(Lower *L, const AstExpr *e) {
  if (!e) return DL_NONE;
  return value_tensor(L, lower_value(L, e), e->loc);
}

static const DlShape *shape_of(const Lower *L, DlNodeId id) {
  return &dl_node(L->g, id)->shape;
}

/* axis (negative counts from the end) as an index into rank axes. */
static bool normalize_axis(Lower *L, const AstExpr *e, int64_t axis, int rank, int *out) {
  int64_t k = axis < 0 ? axis + rank : axis;
  if (k < 0 || k >= rank) {
    dl_error(L->cc, e->loc, "axis %lld is out of range for a tensor of rank %d", (long long)axis,
             rank);
    return false;
  }
  *out = (int)k;
  return true;
}

/* ---- shapes written in the source ---- */

/* Dimensions of a shape: positive compile-time integers, or N (the batch
 * dimension) when allowed, or -1 (inferred, reshape only) when infer is not
 * NULL: *infer gets its axis (or -1). */
bool lower_dims(Lower *L, const AstExprList *dims, DlLoc loc, bool allow_batch,
                const char *no_batch, int *infer, DlShape *shape) {
  *shape = dl_shape_scalar();
  if (infer) *infer = -1;
  if (dims->n > DL_MAX_RANK) {
    dl_error(L->cc, dims->n ? dims->items[0]->loc : loc,
             "shape has %d dimensions; at most %d are supported", dims->n, DL_MAX_RANK);
    return false;
  }
  bool ok = true, batch_seen = false;
  int64_t numel = 1;
  for (int i = 0; i < dims->n; i++) {
    const AstExpr *d = dims->items[i];
    if (d->kind == AST_NAME && strcmp(d->u.name, "N") == 0) {
      if (!allow_batch) {
        dl_error(L->cc, d->loc, "%s", no_batch);
        ok = false;
      } else if (batch_seen) {
        dl_error(L->cc, d->loc, "the batch dimension N can appear only once in a shape");
        ok = false;
      }
      batch_seen = true;
      shape->d[i] = DL_DIM_BATCH;
      continue;
    }
    if (d->kind == AST_NAME && !scope_find(L, d->u.name)) {
      dl_error(L->cc, d->loc,
               "unknown dimension '%s' (a dimension is a positive integer, N, or a size known at "
               "compile time)",
               d->u.name);
      ok = false;
      continue;
    }
    double v;
    if (infer && const_number(d, &v) && v == -1) {
      if (*infer >= 0) {
        dl_error(L->cc, d->loc, "only one dimension can be -1 (inferred)");
        ok = false;
      }
      *infer = i;
      shape->d[i] = 1;
      continue;
    }
    int64_t n;
    if (!expect_static_int(L, d, "a shape dimension", "a positive integer or N", 1, MAX_DIM, &n)) {
      ok = false;
      continue;
    }
    shape->d[i] = n;
    numel *= n;
    if (numel > MAX_ELEMENTS) {
      dl_error(L->cc, d->loc, "shape is too large");
      return false;
    }
  }
  shape->rank = dims->n;
  return ok;
}

/* A list of compile-time integers: `[0, 2, 1]`, or one integer standing for
 * `count` copies of itself (a stride of 2 is [2, 2]) when `count` > 0. */
static bool int_list(Lower *L, const AstExpr *e, const char *what, int64_t min, int count,
                     int64_t *out, int *n) {
  const char *range = min > 0 ? "a positive integer" : "a non-negative integer";
  if (e->kind != AST_LIST) {
    if (count <= 0) {
      dl_error(L->cc, e->loc, "%s must be a list like [0, 2, 1]", what);
      return false;
    }
    int64_t v;
    if (!expect_static_int(L, e, what, range, min, INT32_MAX, &v)) return false;
    for (int i = 0; i < count; i++)
      out[i] = v;
    *n = count;
    return true;
  }
  if (e->u.list.n > DL_MAX_RANK || (count > 0 && e->u.list.n != count)) {
    dl_error(L->cc, e->loc, "%s must have %d elements, got %d", what,
             count > 0 ? count : DL_MAX_RANK, e->u.list.n);
    return false;
  }
  bool ok = true;
  for (int i = 0; i < e->u.list.n; i++)
    ok &= expect_static_int(L, e->u.list.items[i], what, range, min, INT32_MAX, &out[i]);
  *n = e->u.list.n;
  return ok;
}

/* ---- builtin calls ---- */

static bool same_shape_args(Lower *L, const AstExpr *call, const char *fname, DlNodeId a,
                            DlNodeId b) {
  if (a == DL_NONE || b == DL_NONE) return false;
  const DlShape *sa = shape_of(L, a), *sb = shape_of(L, b);
  if (dl_shape_eq(sa, sb)) return true;
  dl_error(L->cc, call->loc, "'%s' needs two tensors of the same shape, got %s and %s", fname,
           shape_text(L, sa), shape_text(L, sb));
  return false;
}

static Value lower_reduce(Lower *L, const Builtin *b, const AstExpr *call,
                          const AstExpr *const *args) {
  DlNodeId x = lower_expr(L, args[0]);
  bool keepdim = false;
  bool ok = true;
  if (args[2]) ok &= expect_static_bool(L, args[2], "'keepdim'", &keepdim);
  uint32_t axes = 0;
  if (args[1]) {
    if (b->op == DL_OP_MAX && !is_static(L, args[1]) && args[1]->kind != AST_BOOL) {
      dl_error(L->cc, args[1]->loc,
               "'max' reduces one tensor along an axis; the elementwise maximum of two "
               "tensors is maximum(a, b)");
      return val_error();
    }
    int64_t axis;
    if (!expect_static_int(L, args[1], "'axis'", "an integer", INT32_MIN, INT32_MAX, &axis))
      return val_error();
    if (x == DL_NONE) return val_error();
    int k;
    if (!normalize_axis(L, args[1], axis, shape_of(L, x)->rank, &k)) return val_error();
    axes = 1u << k;
  }
  if (!ok || x == DL_NONE) return val_error();
  return val_tensor(dl_reduce(L->g, (DlOp)b->op, call->loc, x, axes, keepdim));
}

/* Targets of cross_entropy and nll: the same shape as the scores (one-hot or
 * probabilities), or that shape without its last axis (class indices, made
 * one-hot here). */
static DlNodeId class_targets(Lower *L, const AstExpr *call, const char *fname, DlNodeId z,
                              DlNodeId y) {
  if (z == DL_NONE || y == DL_NONE) return DL_NONE;
  const DlShape *sz = shape_of(L, z), *sy = shape_of(L, y);
  if (sz->rank == 0) {
    dl_error(L->cc, call->loc, "'%s' needs scores with at least one axis", fname);
    return DL_NONE;
  }
  if (dl_shape_eq(sz, sy)) return y;
  DlShape lead = *sz;
  lead.rank--;
  if (dl_shape_eq(&lead, sy)) return dl_one_hot(L->g, call->loc, y, sz->d[sz->rank - 1]);
  dl_error(L->cc, call->loc,
           "'%s' needs targets of shape %s (one-hot or probabilities) or %s (class indices), "
           "got %s",
           fname, shape_text(L, sz), shape_text(L, &lead), shape_text(L, sy));
  return DL_NONE;
}

/* -mean over rows of sum(target * logp, last axis). */
static DlNodeId mean_neg_dot(Lower *L, DlLoc loc, DlNodeId target, DlNodeId logp) {
  DlGraph *g = L->g;
  if (target == DL_NONE || logp == DL_NONE) return DL_NONE;
  int rank = shape_of(L, logp)->rank;
  DlNodeId s = dl_reduce(g, DL_OP_SUM, loc, dl_binary(g, DL_OP_MUL, loc, target, logp),
                         1u << (rank - 1), false);
  if (rank > 1) s = dl_reduce(g, DL_OP_MEAN, loc, s, 0, false);
  return dl_unary(g, DL_OP_NEG, loc, s);
}

static Value lower_reshape(Lower *L, const AstExpr *call, const AstExpr *const *args) {
  DlNodeId x = lower_expr(L, args[0]);
  if (args[1]->kind != AST_LIST) {
    dl_error(L->cc, args[1]->loc, "the shape of 'reshape' must be a list like [N, 16]");
    return val_error();
  }
  DlShape shape;
  int infer;
  if (!lower_dims(L, &args[1]->u.list, args[1]->loc, true, "", &infer, &shape) || x == DL_NONE)
    return val_error();
  const DlShape *sx = shape_of(L, x);
  if (infer >= 0) {
    int64_t known = dl_shape_numel(&shape, 1), total = dl_shape_numel(sx, 1);
    if (total % known != 0) {
      dl_error(L->cc, call->loc, "cannot reshape %s to %s: its %lld elements do not divide evenly",
               shape_text(L, sx), shape_text(L, &shape), (long long)total);
      return val_error();
    }
    shape.d[infer] = total / known;
  }
  return val_tensor(dl_reshape(L->g, call->loc, x, shape));
}

static DlNodeId transpose_last(Lower *L, DlLoc loc, DlNodeId x) {
  if (x == DL_NONE) return DL_NONE;
  const DlShape *s = shape_of(L, x);
  if (s->rank < 2) {
    dl_error(L->cc, loc, "'transpose' needs at least 2 axes, got %s", shape_text(L, s));
    return DL_NONE;
  }
  int perm[DL_MAX_RANK];
  for (int i = 0; i < s->rank; i++)
    perm[i] = i;
  perm[s->rank - 2] = s->rank - 1;
  perm[s->rank - 1] = s->rank - 2;
  return dl_permute(L->g, loc, x, perm);
}

static Value lower_permute(Lower *L, const AstExpr *call, const AstExpr *const *args) {
  DlNodeId x = lower_expr(L, args[0]);
  int64_t axes[DL_MAX_RANK];
  int n;
  if (!int_list(L, args[1], "the axes of 'permute'", INT32_MIN, 0, axes, &n) || x == DL_NONE)
    return val_error();
  const DlShape *s = shape_of(L, x);
  bool seen[DL_MAX_RANK] = {false};
  bool ok = n == s->rank;
  int perm[DL_MAX_RANK];
  for (int i = 0; i < n && ok; i++) {
    int64_t k = axes[i] < 0 ? axes[i] + s->rank : axes[i];
    ok = k >= 0 && k < s->rank && !seen[k];
    if (ok) seen[k] = true, perm[i] = (int)k;
  }
  if (!ok) {
    dl_error(L->cc, args[1]->loc, "'permute' needs an order of all %d axes of %s, each once",
             s->rank, shape_text(L, s));
    return val_error();
  }
  return val_tensor(dl_permute(L->g, call->loc, x, perm));
}

/* Concatenate tensors along an axis, two at a time. */
static DlNodeId concat_all(Lower *L, DlLoc loc, const DlNodeId *parts, int n, const AstExpr *axis_e,
                           int64_t axis) {
  for (int i = 0; i < n; i++)
    if (parts[i] == DL_NONE) return DL_NONE;
  int k = 0;
  if (!normalize_axis(L, axis_e, axis, shape_of(L, parts[0])->rank, &k)) return DL_NONE;
  DlNodeId acc = parts[0];
  for (int i = 1; i < n; i++)
    acc = dl_concat(L->g, loc, acc, parts[i], k);
  return acc;
}

/* concat(a, b, c, axis = 1): any number of tensors, then the axis by name. */
static Value lower_concat(Lower *L, const AstExpr *call) {
  const AstArgList *args = &call->u.call.args;
  const AstExpr *axis_e = NULL;
  DlNodeId *parts = NULL;
  int n = 0, cap = 0;
  bool ok = true;
  for (int i = 0; i < args->n; i++) {
    const AstArg *a = &args->items[i];
    if (!a->name) {
      /* A list argument stands for its elements: concat(outputs, axis = 1). */
      Value v = lower_value(L, a->value);
      bool many = v.kind == VAL_LIST || v.kind == VAL_TUPLE;
      for (int k = 0; k < (many ? v.n : 1); k++) {
        DL_ARENA_GROW(L->cc->arena, parts, n, cap);
        parts[n++] = value_tensor(L, many ? v.items[k] : v, a->value->loc);
      }
    } else if (strcmp(a->name, "axis") == 0 && !axis_e) {
      axis_e = a->value;
    } else {
      dl_error(L->cc, a->name_loc,
               strcmp(a->name, "axis") == 0 ? "argument 'axis' of 'concat' is given twice"
                                            : "'concat' takes tensors and 'axis = k', not '%s'",
               a->name);
      ok = false;
    }
  }
  if (n == 0) {
    dl_error(L->cc, call->loc, "'concat' needs at least one tensor");
    return val_error();
  }
  int64_t axis = 0;
  if (axis_e && !expect_static_int(L, axis_e, "'axis'", "an integer", INT32_MIN, INT32_MAX, &axis))
    ok = false;
  if (!ok) return val_error();
  return val_tensor(concat_all(L, call->loc, parts, n, axis_e ? axis_e : call, axis));
}

/* stack([a, b, c], axis = 1): a new axis of size 3. */
static Value lower_stack(Lower *L, const AstExpr *call, const AstExpr *const *args) {
  int64_t axis = 0;
  if (args[1] &&
      !expect_static_int(L, args[1], "'axis'", "an integer", INT32_MIN, INT32_MAX, &axis))
    return val_error();
  Value v = lower_value(L, args[0]);
  if (v.kind == VAL_ERROR) return v;
  if (v.kind != VAL_LIST && v.kind != VAL_TUPLE) {
    dl_error(L->cc, args[0]->loc, "'stack' needs a list of tensors, like stack([a, b], axis = 1)");
    return val_error();
  }
  int n = v.n;
  DlNodeId *parts = dl_arena_alloc(L->cc->arena, sizeof(DlNodeId) * (size_t)(n + 1));
  for (int i = 0; i < n; i++)
    parts[i] = value_tensor(L, v.items[i], args[0]->loc);
  if (n == 0) {
    dl_error(L->cc, args[0]->loc, "'stack' needs at least one tensor");
    return val_error();
  }
  for (int i = 0; i < n; i++)
    if (parts[i] == DL_NONE) return val_error();
  /* Each part gets a size-1 axis at `axis`, then they are concatenated. */
  const DlShape *s0 = shape_of(L, parts[0]);
  int k;
  const AstExpr *where = args[1] ? args[1] : call;
  if (!normalize_axis(L, where, axis, s0->rank + 1, &k)) return val_error();
  if (s0->rank + 1 > DL_MAX_RANK) {
    dl_error(L->cc, call->loc, "'stack' would make more than %d axes", DL_MAX_RANK);
    return val_error();
  }
  for (int i = 0; i < n; i++) {
    const DlShape *s = shape_of(L, parts[i]);
    if (!dl_shape_eq(s, s0)) {
      dl_error(L->cc, call->loc, "'stack' needs tensors of one shape, got %s and %s",
               shape_text(L, s0), shape_text(L, s));
      return val_error();
    }
    DlShape t = {.rank = s->rank + 1};
    for (int j = 0, src = 0; j < t.rank; j++)
      t.d[j] = j == k ? 1 : s->d[src++];
    parts[i] = dl_reshape(L->g, call->loc, parts[i], t);
  }
  return val_tensor(concat_all(L, call->loc, parts, n, where, k));
}

/* pad(x, [[before, after], ...]): one pair per trailing axis. */
static Value lower_pad(Lower *L, const AstExpr *call, const AstExpr *const *args) {
  DlNodeId x = lower_expr(L, args[0]);
  const AstExpr *w = args[1];
  if (w->kind != AST_LIST || w->u.list.n == 0) {
    dl_error(L->cc, w->loc, "the widths of 'pad' must be a list of [before, after] pairs");
    return val_error();
  }
  int npairs = w->u.list.n;
  if (npairs > DL_MAX_RANK) {
    dl_error(L->cc, w->loc, "'pad' got %d width pairs; at most %d are supported", npairs,
             DL_MAX_RANK);
    return val_error();
  }
  int64_t before[DL_MAX_RANK] = {0}, after[DL_MAX_RANK] = {0};
  bool ok = true;
  for (int i = 0; i < npairs; i++) {
    const AstExpr *pair = w->u.list.items[i];
    int64_t v[DL_MAX_RANK];
    int n;
    if (!int_list(L, pair, "a 'pad' width", 0, 0, v, &n)) {
      ok = false;
    } else if (n != 2) {
      dl_error(L->cc, pair->loc, "each 'pad' width is a pair [before, after]");
      ok = false;
    } else {
      before[i] = v[0];
      after[i] = v[1];
    }
  }
  if (!ok || x == DL_NONE) return val_error();
  const DlShape *s = shape_of(L, x);
  if (npairs > s->rank) {
    dl_error(L->cc, w->loc, "'pad' got %d width pairs for a tensor of rank %d", npairs, s->rank);
    return val_error();
  }
  int64_t b[DL_MAX_RANK] = {0}, a[DL_MAX_RANK] = {0};
  for (int i = 0; i < npairs; i++) {
    b[s->rank - npairs + i] = before[i];
    a[s->rank - npairs + i] = after[i];
  }
  return val_tensor(dl_pad(L->g, call->loc, x, b, a));
}

/* A window, stride or padding of a 2-d op: one integer or [h, w]. */
static bool pair_arg(Lower *L, const AstExpr *e, const char *what, int64_t min, int64_t def,
                     int out[2]) {
  int64_t v[2] = {def, def};
  int n;
  if (e && !int_list(L, e, what, min, 2, v, &n)) return false;
  out[0] = (int)v[0];
  out[1] = (int)v[1];
  return true;
}

static Value lower_conv2d(Lower *L, const AstExpr *call, const AstExpr *const *args) {
  DlNodeId x = lower_expr(L, args[0]);
  DlNodeId w = lower_expr(L, args[1]);
  int stride[2], pad[2];
  if (!pair_arg(L, args[2], "the stride of 'conv2d'", 1, 1, stride) ||
      !pair_arg(L, args[3], "the padding of 'conv2d'", 0, 0, pad))
    return val_error();
  return val_tensor(dl_conv2d(L->g, call->loc, x, w, stride[0], stride[1], pad[0], pad[1]));
}

static Value lower_pool2d(Lower *L, const Builtin *b, const AstExpr *call,
                          const AstExpr *const *args) {
  DlNodeId x = lower_expr(L, args[0]);
  int size[2], stride[2];
  if (!pair_arg(L, args[1], dl_arena_printf(L->cc->arena, "the window of '%s'", b->name), 1, 1,
                size))
    return val_error();
  if (!args[2]) {
    stride[0] = size[0];
    stride[1] = size[1];
  } else if (!pair_arg(L, args[2], dl_arena_printf(L->cc->arena, "the stride of '%s'", b->name), 1,
                       1, stride)) {
    return val_error();
  }
  return val_tensor(
      dl_pool2d(L->g, (DlOp)b->op, call->loc, x, size[0], size[1], stride[0], stride[1]));
}

/* causal_mask(T): [T, T], 0 on and below the diagonal, -1e9 above, so that
 * softmax(scores + mask) gives position i no weight on positions after i. */
static Value lower_causal_mask(Lower *L, const AstExpr *call, const AstExpr *const *args) {
  int64_t t;
  if (!expect_static_int(L, args[0], "the size of 'causal_mask'", "a positive integer", 1, 4096,
                         &t))
    return val_error();
  float *data = dl_arena_alloc(L->cc->arena, sizeof(float) * (size_t)(t * t));
  for (int64_t i = 0; i < t; i++)
    for (int64_t j = 0; j < t; j++)
      data[i * t + j] = j <= i ? 0.0f : -1e9f;
  DlShape s = {.rank = 2, .d = {t, t}};
  return val_tensor(dl_const_data(L->g, call->loc, s, data));
}

/* sinusoids(T, D): the positional encoding of "Attention is all you need",
 * [T, D] with PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(same). */
static Value lower_sinusoids(Lower *L, const AstExpr *call, const AstExpr *const *args) {
  int64_t t, d;
  if (!expect_static_int(L, args[0], "the length of 'sinusoids'", "a positive integer", 1, 65536,
                         &t) ||
      !expect_static_int(L, args[1], "the dimension of 'sinusoids'", "a positive integer", 1, 65536,
                         &d))
    return val_error();
  if (t * d > (int64_t)1 << 26) {
    dl_error(L->cc, call->loc, "'sinusoids' table is too large");
    return val_error();
  }
  float *data = dl_arena_alloc(L->cc->arena, sizeof(float) * (size_t)(t * d));
  for (int64_t p = 0; p < t; p++)
    for (int64_t i = 0; i < d; i++) {
      double freq = pow(10000.0, -(double)(i - i % 2) / (double)d);
      data[p * d + i] = (float)(i % 2 == 0 ? sin((double)p * freq) : cos((double)p * freq));
    }
  DlShape s = {.rank = 2, .d = {t, d}};
  return val_tensor(dl_const_data(L->g, call->loc, s, data));
}

/* zeros([N, H]), ones([2, 3]): a constant (broadcast to the batch when the
 * shape has N). */
static Value lower_fill(Lower *L, const Builtin *b, const AstExpr *call,
                        const AstExpr *const *args) {
  if (args[0]->kind != AST_LIST) {
    dl_error(L->cc, args[0]->loc, "the shape of '%s' must be a list like [N, 16]", b->name);
    return val_error();
  }
  DlShape shape;
  if (!lower_dims(L, &args[0]->u.list, args[0]->loc, true, "", NULL, &shape)) return val_error();
  double v = b->op;
  if (dl_shape_batch_dims(&shape) == 0) return val_tensor(dl_const_fill(L->g, call->loc, shape, v));
  return val_tensor(dl_expand(L->g, call->loc, dl_const_scalar(L->g, call->loc, v), shape, false));
}

/* size(x, axis): a dimension of a tensor variable, as a compile-time number. */
static Value lower_size(Lower *L, const AstExpr *call, const AstExpr *const *args) {
  const Sym *s = args[0]->kind == AST_NAME ? scope_find(L, args[0]->u.name) : NULL;
  if (!s || s->value.kind != VAL_TENSOR) {
    if (s && s->value.kind == VAL_ERROR) return val_error();
    dl_error(L->cc, args[0]->loc, "'size' needs the name of a tensor");
    return val_error();
  }
  int64_t axis;
  if (!expect_static_int(L, args[1], "'axis'", "an integer", INT32_MIN, INT32_MAX, &axis))
    return val_error();
  const DlShape *shape = shape_of(L, s->node);
  int k;
  if (!normalize_axis(L, args[1], axis, shape->rank, &k)) return val_error();
  if (shape->d[k] == DL_DIM_BATCH) {
    dl_error(L->cc, args[1]->loc,
             "axis %d of '%s' is the batch dimension N, whose size is known only at run time", k,
             s->name);
    return val_error();
  }
  return val_number((double)shape->d[k]);
}

static Value call_builtin(Lower *L, const Builtin *b, const AstExpr *call) {
  if (b->kind == BI_INIT) {
    dl_error(L->cc, call->loc, "'%s' can only be used as a parameter initialiser", b->name);
    return val_error();
  }
  if (b->kind == BI_TRAIN) {
    dl_error(L->cc, call->loc, "'%s' can only be used in a train block", b->name);
    return val_error();
  }
  if (b->kind == BI_CONCAT) return lower_concat(L, call);
  const AstExpr *args[MAX_BUILTIN_PARAMS];
  if (!bind_args(L, call, b->name, b->nrequired, b->nparams, b->params, args)) return val_error();

  DlGraph *g = L->g;
  DlLoc loc = call->loc;
  switch (b->kind) {
  case BI_UNARY:
    if (is_static(L, args[0])) {
      Value v = lower_value(L, args[0]);
      return v.kind == VAL_NUMBER ? fold_unary(L, loc, (DlOp)b->op, v.number) : v;
    }
    return val_tensor(dl_unary(g, (DlOp)b->op, loc, lower_expr(L, args[0])));
  case BI_LINEAR: return lower_value(L, args[0]);
  case BI_BINARY:
  case BI_COMPARE: {
    if (is_static(L, args[0]) && is_static(L, args[1])) {
      Value x = lower_value(L, args[0]), y = lower_value(L, args[1]);
      if (x.kind != VAL_NUMBER || y.kind != VAL_NUMBER) return val_error();
      return fold_binary_op(L, loc, (DlOp)b->op, x.number, y.number);
    }
    DlNodeId x = lower_expr(L, args[0]);
    DlNodeId y = lower_expr(L, args[1]);
    if (b->kind == BI_COMPARE) return val_tensor(dl_compare(g, (DlOp)b->op, loc, x, y));
    return val_tensor(dl_binary(g, (DlOp)b->op, loc, x, y));
  }
  case BI_SOFTMAX: return val_tensor(dl_softmax(g, (DlOp)b->op, loc, lower_expr(L, args[0])));
  case BI_REDUCE: return lower_reduce(L, b, call, args);
  case BI_MSE: {
    /* mean((a - b)^2), the square as a product so no pow gradient is needed */
    DlNodeId a = lower_expr(L, args[0]);
    DlNodeId t = lower_expr(L, args[1]);
    if (!same_shape_args(L, call, b->name, a, t)) return val_error();
    DlNodeId d = dl_binary(g, DL_OP_SUB, loc, a, t);
    DlNodeId sq = dl_binary(g, DL_OP_MUL, loc, d, d);
    return val_tensor(dl_reduce(g, DL_OP_MEAN, loc, sq, 0, false));
  }
  case BI_BCE: {
    /* -mean(y * log(p) + (1 - y) * log(1 - p)) */
    DlNodeId p = lower_expr(L, args[0]);
    DlNodeId y = lower_expr(L, args[1]);
    if (!same_shape_args(L, call, b->name, p, y)) return val_error();
    DlNodeId one = dl_const_scalar(g, loc, 1.0);
    DlNodeId pos = dl_binary(g, DL_OP_MUL, loc, y, dl_unary(g, DL_OP_LOG, loc, p));
    DlNodeId one_minus_y = dl_binary(g, DL_OP_SUB, loc, one, y);
    DlNodeId one_minus_p = dl_binary(g, DL_OP_SUB, loc, one, p);
    DlNodeId neg =
        dl_binary(g, DL_OP_MUL, loc, one_minus_y, dl_unary(g, DL_OP_LOG, loc, one_minus_p));
    DlNodeId m = dl_reduce(g, DL_OP_MEAN, loc, dl_binary(g, DL_OP_ADD, loc, pos, neg), 0, false);
    return val_tensor(dl_unary(g, DL_OP_NEG, loc, m));
  }
  case BI_CROSS_ENTROPY: {
    /* mean over rows of -sum(y * log_softmax(z), last axis) */
    DlNodeId z = lower_expr(L, args[0]);
    DlNodeId y = class_targets(L, call, b->name, z, lower_expr(L, args[1]));
    if (y == DL_NONE) return val_error();
    return val_tensor(mean_neg_dot(L, loc, y, dl_softmax(g, DL_OP_LOG_SOFTMAX, loc, z)));
  }
  case BI_NLL: {
    DlNodeId logp = lower_expr(L, args[0]);
    DlNodeId y = class_targets(L, call, b->name, logp, lower_expr(L, args[1]));
    if (y == DL_NONE) return val_error();
    return val_tensor(mean_neg_dot(L, loc, y, logp));
  }
  case BI_RESHAPE: return lower_reshape(L, call, args);
  case BI_TRANSPOSE: return val_tensor(transpose_last(L, loc, lower_expr(L, args[0])));
  case BI_PERMUTE: return lower_permute(L, call, args);
  case BI_STACK: return lower_stack(L, call, args);
  case BI_PAD: return lower_pad(L, call, args);
  case BI_CONV2D: return lower_conv2d(L, call, args);
  case BI_POOL2D: return lower_pool2d(L, b, call, args);
  case BI_GATHER: {
    DlNodeId table = lower_expr(L, args[0]);
    DlNodeId idx = lower_expr(L, args[1]);
    return val_tensor(dl_gather(g, loc, table, idx));
  }
  case BI_ONE_HOT: {
    DlNodeId labels = lower_expr(L, args[0]);
    int64_t classes;
    if (!expect_static_int(L, args[1], "the number of classes", "a positive integer", 1, MAX_DIM,
                           &classes))
      return val_error();
    return val_tensor(dl_one_hot(g, loc, labels, classes));
  }
  case BI_DROPOUT: {
    DlNodeId x = lower_expr(L, args[0]);
    double p;
    if (!expect_static_number(L, args[1], "the dropout probability", &p)) return val_error();
    if (!(p >= 0 && p < 1)) {
      dl_error(L->cc, args[1]->loc, "the dropout probability must be in [0, 1), got %g", p);
      return val_error();
    }
    return val_tensor(dl_dropout(g, loc, x, p));
  }
  case BI_CAUSAL_MASK: return lower_causal_mask(L, call, args);
  case BI_SINUSOIDS: return lower_sinusoids(L, call, args);
  case BI_FILL: return lower_fill(L, b, call, args);
  case BI_SIZE: return lower_size(L, call, args);
  case BI_CONCAT:
  case BI_INIT:
  case BI_TRAIN: break; /* handled above */
  }
  return val_error();
}

Value lower_call(Lower *L, const AstExpr *call, const char *assigned) {
  const AstExpr *callee = call->u.call.callee;
  if (callee->kind != AST_NAME) {
    dl_error(L->cc, callee->loc, "only a function name can be called");
    return val_error();
  }
  const char *fname = callee->u.name;
  const Sym *sym;
  const AstBlock *def;
  const Builtin *b;
  resolve_callee(L, fname, &sym, &def, &b);
  if (def) return call_def(L, def, call, assigned);
  if (b) {
    bool via_variable = sym && sym->value.kind == VAL_FUNC;
    if (call->u.call.instance && !via_variable && b->kind != BI_INIT && b->kind != BI_TRAIN) {
      dl_error(L->cc, call->u.call.instance->loc,
               "'%s' creates no parameters; 'as' names the instance of a def call", b->name);
      return val_error();
    }
    return call_builtin(L, b, call);
  }
  if (sym) {
    if (sym->value.kind == VAL_ERROR) return val_error();
    dl_error(L->cc, callee->loc, "'%s' is %s %s, not a function", fname,
             sym->kind == SYM_INPUT ? "an" : "a", sym_kind_word(sym->kind));
    return val_error();
  }
  dl_error(L->cc, callee->loc, "unknown function '%s'", fname);
  Suggest s = suggest_begin(fname);
  for (int i = 0; i < builtin_count(); i++)
    if (builtin_at(i)->kind != BI_INIT && builtin_at(i)->kind != BI_TRAIN)
      suggest_consider(&s, builtin_at(i)->name);
  for (int i = 0; i < L->ndefs; i++)
    suggest_consider(&s, L->defs[i]->name);
  suggest_note(L, &s, callee->loc);
  return val_error();
}

/* ---- operators ---- */

/* `transpose(b)` right under `@` becomes a flag of the matmul, not a copy. */
static const AstExpr *unwrap_transpose(const Lower *L, const AstExpr *e, bool *flag) {
  *flag = false;
  if (e->kind != AST_CALL || e->u.call.callee->kind != AST_NAME || e->u.call.instance ||
      e->u.call.args.n != 1 || strcmp(e->u.call.callee->u.name, "transpose") != 0)
    return e;
  const AstArg *a = &e->u.call.args.items[0];
  if (a->name && strcmp(a->name, "x") != 0) return e;
  const Sym *sym = scope_find(L, "transpose");
  if (sym && sym->value.kind == VAL_FUNC) return e;
  *flag = true;
  return a->value;
}

/* list + list: the elements of both, in order. */
static Value list_concat(Lower *L, const AstExpr *e, Value a, Value b) {
  if (b.kind == VAL_ERROR) return b;
  if (b.kind != VAL_LIST) {
    dl_error(L->cc, e->loc, "a list can only be added to a list, like outputs + [y]");
    return val_error();
  }
  Value *items = dl_arena_alloc(L->cc->arena, sizeof(Value) * (size_t)(a.n + b.n + 1));
  for (int i = 0; i < a.n; i++)
    items[i] = a.items[i];
  for (int i = 0; i < b.n; i++)
    items[a.n + i] = b.items[i];
  return (Value){.kind = VAL_LIST, .node = DL_NONE, .n = a.n + b.n, .items = items};
}

static Value lower_binary(Lower *L, const AstExpr *e) {
  const AstExpr *lhs = e->u.binary.lhs, *rhs = e->u.binary.rhs;
  DlGraph *g = L->g;
  char op = e->u.binary.op;
  if (op == '@') {
    bool ta, tb;
    const AstExpr *l = unwrap_transpose(L, lhs, &ta);
    const AstExpr *r = unwrap_transpose(L, rhs, &tb);
    DlNodeId a = lower_expr(L, l);
    DlNodeId b = lower_expr(L, r);
    return val_tensor(dl_matmul(g, e->loc, a, b, ta, tb));
  }
  if (is_static(L, lhs) && is_static(L, rhs)) {
    Value a = lower_value(L, lhs), b = lower_value(L, rhs);
    if (a.kind != VAL_NUMBER || b.kind != VAL_NUMBER) return val_error();
    return fold_binary(L, e->loc, op, a.number, b.number);
  }
  /* Operands are lowered in source order, numbers included, so the IR
   * reads like the source. */
  Value av = lower_value(L, lhs);
  if (op == '+' && av.kind == VAL_LIST) return list_concat(L, e, av, lower_value(L, rhs));
  DlNodeId a = value_tensor(L, av, lhs->loc);
  DlNodeId b = lower_expr(L, rhs);
  switch (op) {
  case '+': return val_tensor(dl_binary(g, DL_OP_ADD, e->loc, a, b));
  case '-': return val_tensor(dl_binary(g, DL_OP_SUB, e->loc, a, b));
  case '*': return val_tensor(dl_binary(g, DL_OP_MUL, e->loc, a, b));
  case '/': return val_tensor(dl_binary(g, DL_OP_DIV, e->loc, a, b));
  case '^': return val_tensor(dl_binary(g, DL_OP_POW, e->loc, a, b));
  default: break;
  }
  dl_error(L->cc, e->loc, "internal error: unknown operator '%c'", op);
  return val_error();
}

static Value lower_name(Lower *L, const AstExpr *e) {
  const char *name = e->u.name;
  const Sym *sym = scope_find(L, name);
  if (sym) return sym->value;
  const AstBlock *def = find_def(L, name);
  if (def) return (Value){.kind = VAL_FUNC, .node = DL_NONE, .def = def};
  const Builtin *b = find_builtin(name);
  if (b) {
    if (b->kind == BI_INIT) {
      dl_error(L->cc, e->loc, "'%s' can only be used as a parameter initialiser", name);
      return val_error();
    }
    if (b->kind == BI_TRAIN) {
      dl_error(L->cc, e->loc, "'%s' can only be used in a train block", name);
      return val_error();
    }
    return (Value){.kind = VAL_FUNC, .node = DL_NONE, .builtin = b};
  }
  dl_error(L->cc, e->loc, "unknown name '%s'", name);
  Suggest s = suggest_begin(name);
  suggest_visible(L, &s);
  suggest_note(L, &s, e->loc);
  return val_error();
}

/* ---- indexing ---- */

/* x[i, a:b, :, ...]: compile-time positions and half-open slices; a
 * position removes its axis.  Negative values count from the end. */
int count_ellipses(const AstExprList *items) {
  int n = 0;
  for (int i = 0; i < items->n; i++)
    n += items->items[i]->kind == AST_ELLIPSIS;
  return n;
}

static Value list_index(Lower *L, const AstExpr *e, Value list) {
  const AstExprList *items = &e->u.index.items;
  int64_t k;
  if (items->n != 1 || items->items[0]->kind == AST_SLICE ||
      items->items[0]->kind == AST_ELLIPSIS) {
    dl_error(L->cc, e->loc, "a list takes one index, like outputs[0]");
    return val_error();
  }
  if (!expect_static_int(L, items->items[0], "an index", "an integer", INT32_MIN, INT32_MAX, &k))
    return val_error();
  int64_t p = k < 0 ? k + list.n : k;
  if (p < 0 || p >= list.n) {
    dl_error(L->cc, items->items[0]->loc, "index %lld is out of range for a list of %d",
             (long long)k, list.n);
    return val_error();
  }
  return list.items[p];
}

static Value lower_index(Lower *L, const AstExpr *e) {
  Value base = lower_value(L, e->u.index.base);
  if (base.kind == VAL_LIST || base.kind == VAL_TUPLE) return list_index(L, e, base);
  DlNodeId x = value_tensor(L, base, e->u.index.base->loc);
  const AstExprList *items = &e->u.index.items;
  int nellipsis = count_ellipses(items);
  if (nellipsis > 1) {
    dl_error(L->cc, e->loc, "an index can hold '...' only once");
    return val_error();
  }
  if (x == DL_NONE) return val_error();
  const DlShape *s = shape_of(L, x);
  int nexplicit = items->n - nellipsis;
  if (nexplicit > s->rank) {
    dl_error(L->cc, e->loc, "too many indices (%d) for a tensor of shape %s", nexplicit,
             shape_text(L, s));
    return val_error();
  }
  int64_t start[DL_MAX_RANK], stop[DL_MAX_RANK];
  bool drop[DL_MAX_RANK] = {false};
  for (int k = 0; k < s->rank; k++) {
    start[k] = 0;
    stop[k] = s->d[k];
  }
  bool ok = true, sliced = false;
  int axis = 0;
  for (int i = 0; i < items->n; i++) {
    const AstExpr *it = items->items[i];
    if (it->kind == AST_ELLIPSIS) {
      axis += s->rank - nexplicit;
      continue;
    }
    int k = axis++;
    int64_t d = s->d[k];
    if (d == DL_DIM_BATCH) {
      if (it->kind != AST_SLICE || it->u.slice.lo || it->u.slice.hi) {
        dl_error(L->cc, it->loc,
                 "axis %d is the batch dimension N: it can only be taken whole (':')", k);
        ok = false;
      }
      continue;
    }
    if (it->kind != AST_SLICE) {
      int64_t v;
      if (!is_static(L, it)) {
        dl_error(L->cc, it->loc,
                 "an index must be an integer known at compile time (gather(table, indices) "
                 "selects by a tensor)");
        ok = false;
        continue;
      }
      if (!expect_static_int(L, it, "an index", "an integer", INT64_MIN / 2, INT64_MAX / 2, &v)) {
        ok = false;
        continue;
      }
      int64_t p = v < 0 ? v + d : v;
      if (p < 0 || p >= d) {
        dl_error(L->cc, it->loc, "index %lld is out of range for axis %d of size %lld",
                 (long long)v, k, (long long)d);
        ok = false;
        continue;
      }
      start[k] = p;
      stop[k] = p + 1;
      drop[k] = true;
      sliced = true;
      continue;
    }
    int64_t lo = 0, hi = d;
    if (it->u.slice.lo && !expect_static_int(L, it->u.slice.lo, "a slice bound", "an integer",
                                             INT64_MIN / 2, INT64_MAX / 2, &lo)) {
      ok = false;
      continue;
    }
    if (it->u.slice.hi && !expect_static_int(L, it->u.slice.hi, "a slice bound", "an integer",
                                             INT64_MIN / 2, INT64_MAX / 2, &hi)) {
      ok = false;
      continue;
    }
    int64_t a = lo < 0 ? lo + d : lo, b = hi < 0 ? hi + d : hi;
    if (a < 0 || b > d || a >= b) {
      dl_error(L->cc, it->loc, "slice %lld:%lld %s for axis %d of size %lld", (long long)lo,
               (long long)hi, a >= b && a >= 0 && b <= d ? "is empty" : "is out of range", k,
               (long long)d);
      ok = false;
      continue;
    }
    start[k] = a;
    stop[k] = b;
    sliced |= a != 0 || b != d;
  }
  if (!ok) return val_error();
  for (int k = 0; k < s->rank; k++)
    if (s->d[k] == DL_DIM_BATCH) stop[k] = DL_DIM_BATCH;
  DlShape before = *s;
  DlNodeId r = sliced ? dl_slice(L->g, e->loc, x, start, stop) : x;
  DlShape out = {.rank = 0};
  bool dropped = false;
  for (int k = 0; k < before.rank; k++) {
    if (drop[k]) {
      dropped = true;
      continue;
    }
    out.d[out.rank++] = before.d[k] == DL_DIM_BATCH ? DL_DIM_BATCH : stop[k] - start[k];
  }
  if (dropped) r = dl_reshape(L->g, e->loc, r, out);
  return val_tensor(r);
}

/* ---- expressions ---- */

/* Is a bracketed list a literal tensor: compile-time numbers, possibly
 * nested? */
static bool numbers_only(const Lower *L, const AstExpr *e) {
  if (e->kind != AST_LIST) return is_static(L, e);
  for (int i = 0; i < e->u.list.n; i++)
    if (!numbers_only(L, e->u.list.items[i])) return false;
  return true;
}

Value lower_value(Lower *L, const AstExpr *e) {
  if (!e) return val_error();
  switch (e->kind) {
  case AST_NUMBER: return val_number(e->u.number.value);
  case AST_NAME: return lower_name(L, e);
  case AST_STRING: return (Value){.kind = VAL_STRING, .node = DL_NONE, .string = e->u.string};
  case AST_BOOL: return (Value){.kind = VAL_BOOL, .node = DL_NONE, .boolean = e->u.boolean};
  case AST_RANGE:
    dl_error(L->cc, e->loc, "a range (a..b) can only be a loop's range or select csv() columns");
    return val_error();
  case AST_SLICE:
    dl_error(L->cc, e->loc, "a slice (a:b) can only appear in an index, like x[:, 1:3]");
    return val_error();
  case AST_ELLIPSIS:
    dl_error(L->cc, e->loc, "'...' can only appear in an index or a def's shape pattern");
    return val_error();
  case AST_LIST: {
    if (e->u.list.n > 0 && numbers_only(L, e)) {
      DlShape shape;
      float *data;
      if (!literal_tensor(L, e, &shape, &data)) return val_error();
      return val_tensor(dl_const_data(L->g, e->loc, shape, data));
    }
    /* Anything else is a list of values: [], [h], [a, b]. */
    Value *items = dl_arena_alloc(L->cc->arena, sizeof(Value) * (size_t)(e->u.list.n + 1));
    for (int i = 0; i < e->u.list.n; i++)
      items[i] = lower_value(L, e->u.list.items[i]);
    return (Value){.kind = VAL_LIST, .node = DL_NONE, .n = e->u.list.n, .items = items};
  }
  case AST_NEG: {
    if (is_static(L, e->u.operand)) {
      Value v = lower_value(L, e->u.operand);
      return v.kind == VAL_NUMBER ? val_number(-v.number) : v;
    }
    return val_tensor(dl_unary(L->g, DL_OP_NEG, e->loc, lower_expr(L, e->u.operand)));
  }
  case AST_BINARY: return lower_binary(L, e);
  case AST_CALL: return lower_call(L, e, NULL);
  case AST_INDEX: return lower_index(L, e);
  }
  return val_error();
}
