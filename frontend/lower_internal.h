/* lower_internal.h - what the three parts of lowering share.
 *
 *   lower.c        symbols and scopes, "did you mean", the builtin table and
 *                  argument binding, literal tensors, the train block, and
 *                  the entry point dl_lower
 *   lower_expr.c   expressions: values, compile-time numbers, builtin calls,
 *                  indexing and slicing
 *   lower_stmt.c   statements: declarations, assignments, def expansion,
 *                  loop unrolling, parameter naming and sharing, the model
 *
 * Lowering evaluates the program at compile time: every expression yields a
 * Value, which is a tensor (an IR node) or a compile-time number, boolean,
 * string, function or tuple.  Sizes, axes, loop bounds and indices are
 * numbers; defs are expanded inline and loops unrolled, so the IR is a plain
 * dataflow graph.  Errors never stop lowering: a failed value is VAL_ERROR,
 * which every consumer passes on without a second message.
 */
#ifndef NNL_LOWER_INTERNAL_H
#define NNL_LOWER_INTERNAL_H

#include "ast.h"

/* Largest dimension and element count we accept in a declared shape or a
 * literal: far beyond any model that fits in memory, small enough that
 * products of dimensions cannot overflow. */
#define MAX_DIM ((int64_t)1 << 31)
#define MAX_ELEMENTS ((int64_t)1 << 40)

/* ---- builtins ---- */

typedef enum BuiltinKind {
  BI_UNARY,   /* elementwise op */
  BI_LINEAR,  /* identity */
  BI_BINARY,  /* elementwise binary op: pow, maximum */
  BI_COMPARE, /* greater, equal: 1 or 0 */
  BI_SOFTMAX, /* softmax family, last axis */
  BI_REDUCE,  /* sum / mean / max, optional axis and keepdim */
  BI_MSE,
  BI_BCE,
  BI_CROSS_ENTROPY,
  BI_NLL,
  BI_RESHAPE,
  BI_TRANSPOSE,
  BI_PERMUTE,
  BI_CONCAT,
  BI_STACK,
  BI_PAD,
  BI_CONV2D,
  BI_POOL2D,
  BI_GATHER, /* gather and embedding */
  BI_ONE_HOT,
  BI_DROPOUT,
  BI_CAUSAL_MASK,
  BI_SINUSOIDS,
  BI_FILL, /* zeros, ones */
  BI_SIZE,
  BI_INIT,  /* parameter initialisers: not usable in expressions */
  BI_TRAIN, /* train-block functions: not usable in expressions */
} BuiltinKind;

enum { MAX_BUILTIN_PARAMS = 4, NO_OP = -1 };

typedef struct Builtin {
  const char *name;
  BuiltinKind kind;
  int op; /* the DlOp it lowers to, where there is one; else NO_OP */
  int nrequired, nparams;
  const char *params[MAX_BUILTIN_PARAMS];
} Builtin;

const Builtin *find_builtin(const char *name);
/* Every builtin usable in expressions, for suggestions. */
const Builtin *builtin_at(int i);
int builtin_count(void);

/* ---- values ---- */

typedef enum ValKind {
  VAL_ERROR,   /* its error has been reported */
  VAL_NOTHING, /* the result of a def without `return` */
  VAL_TENSOR,
  VAL_NUMBER,
  VAL_BOOL,
  VAL_STRING,
  VAL_FUNC,  /* a builtin or a def, e.g. the `act = relu` argument */
  VAL_TUPLE, /* the values of `return a, b` */
  VAL_LIST,  /* [a, b, ...] of values that are not all numbers; [] */
} ValKind;

typedef struct Value {
  ValKind kind;
  DlNodeId node; /* VAL_TENSOR */
  double number; /* VAL_NUMBER */
  bool boolean;
  const char *string;
  const Builtin *builtin; /* VAL_FUNC: one of builtin and def */
  const AstBlock *def;
  int n; /* VAL_TUPLE, VAL_LIST */
  const struct Value *items;
  const char *origin; /* VAL_TUPLE, VAL_NOTHING: the def that returned it */
} Value;

static inline Value val_error(void) {
  return (Value){.kind = VAL_ERROR, .node = DL_NONE};
}
static inline Value val_tensor(DlNodeId node) {
  return node == DL_NONE ? val_error() : (Value){.kind = VAL_TENSOR, .node = node};
}
static inline Value val_number(double v) {
  return (Value){.kind = VAL_NUMBER, .node = DL_NONE, .number = v};
}

/* ---- symbols ---- */

typedef enum SymKind { SYM_INPUT, SYM_TARGET, SYM_PARAM, SYM_VAR, SYM_LOOP } SymKind;

typedef struct Sym {
  const char *name;
  SymKind kind;
  DlNodeId node; /* the tensor's node: DL_NONE for other values and after an error */
  Value value;
  DlLoc loc;
} Sym;

/* Symbols in definition order, plus an open-addressing index into them.
 * A model or a def call has a root scope (parent NULL: a def sees only its
 * own parameters and locals); each iteration of a loop has a scope whose
 * parent is the enclosing one. */
typedef struct Scope {
  Sym *syms;
  int nsyms, cap;
  int *index; /* 1 + position in syms, 0 = empty slot */
  int index_cap;
  struct Scope *parent;
} Scope;

/* The def calls being expanded, innermost first. */
typedef struct CallFrame {
  const AstBlock *def;
  DlLoc call_loc;
  const struct CallFrame *outer;
} CallFrame;

/* Instance names taken by the calls of one statement that are not directly
 * assigned, so the second `dense` in a statement gets `_2`. */
typedef struct StmtNaming {
  const char *var; /* the variable the statement assigns (NULL for return) */
  const char **used;
  int nused, cap;
} StmtNaming;

/* Parameters by full name ("h1.W"): a second declaration with the same name
 * (the same instance called again, e.g. in every iteration of a loop) is the
 * same parameter. */
typedef struct ParamEntry {
  const char *name;
  DlNodeId node;
  DlLoc loc; /* the call that created it (its declaration outside defs) */
} ParamEntry;

typedef struct Lower {
  DlCompiler *cc;
  DlGraph *g;
  const DlAstFile *ast;
  const AstBlock *model;
  Scope scope;        /* the model's scope */
  Scope *cur;         /* the innermost scope (&scope outside defs and loops) */
  const char *prefix; /* instance path of the def call being expanded; "" in the model */
  const CallFrame *frames;
  int depth;
  StmtNaming *naming;
  const AstBlock **defs; /* every def of the file and its imports */
  int ndefs, def_cap;
  ParamEntry *params;
  int nparams, param_cap;
  int64_t unrolled; /* loop iterations so far */
} Lower;

/* ---- lower.c ---- */

Sym *scope_find(const Lower *L, const char *name);
Sym *scope_find_local(const Scope *sc, const char *name);
void scope_add(Lower *L, Scope *sc, const char *name, SymKind kind, Value v, DlLoc loc);
const char *sym_kind_word(SymKind k);
const AstBlock *find_def(const Lower *L, const char *name);

typedef struct Suggest {
  const char *name;
  const char *best;
  int best_dist;
} Suggest;
Suggest suggest_begin(const char *name);
void suggest_consider(Suggest *s, const char *candidate);
void suggest_note(Lower *L, const Suggest *s, DlLoc loc);
/* Consider every name visible from the current scope. */
void suggest_visible(const Lower *L, Suggest *s);

bool bind_args(Lower *L, const AstExpr *call, const char *fname, int nrequired, int nparams,
               const char *const *params, const AstExpr **out);
bool const_number(const AstExpr *e, double *v);
bool expect_int(Lower *L, const AstExpr *e, const char *what, const char *range, int64_t min,
                int64_t max, int64_t *out);
bool expect_bool(Lower *L, const AstExpr *e, const char *what, bool *out);
bool fits_float(Lower *L, DlLoc loc, double v);
const char *shape_text(Lower *L, const DlShape *s);
bool literal_tensor(Lower *L, const AstExpr *e, DlShape *shape, float **data);

/* ---- lower_expr.c ---- */

Value lower_value(Lower *L, const AstExpr *e);
/* A call; `assigned` is the variable it is directly assigned to (names the
 * instance of a def call), or NULL. */
Value lower_call(Lower *L, const AstExpr *call, const char *assigned);
/* The tensor an expression denotes (numbers become constants). */
DlNodeId lower_expr(Lower *L, const AstExpr *e);
DlNodeId value_tensor(Lower *L, Value v, DlLoc loc);
/* Is e a compile-time number?  Evaluating it then builds no IR. */
bool is_static(const Lower *L, const AstExpr *e);
/* A compile-time integer in [min, max]: reports "WHAT must be RANGE". */
bool expect_static_int(Lower *L, const AstExpr *e, const char *what, const char *range, int64_t min,
                       int64_t max, int64_t *out);
bool expect_static_number(Lower *L, const AstExpr *e, const char *what, double *out);
/* The dimensions of a shape written in the source: positive compile-time
 * integers, or N (the batch dimension) when allow_batch (else the error
 * no_batch), or one -1 (inferred) when infer is not NULL: *infer gets its
 * axis, or -1. */
bool lower_dims(Lower *L, const AstExprList *dims, DlLoc loc, bool allow_batch,
                const char *no_batch, int *infer, DlShape *shape);

/* How many `...` a shape pattern or an index holds. */
int count_ellipses(const AstExprList *items);

/* ---- lower_stmt.c ---- */

Value call_def(Lower *L, const AstBlock *def, const AstExpr *call, const char *assigned);
void lower_model(Lower *L, const AstBlock *m);
/* Defs of the file and its imports: collected and checked. */
void collect_defs(Lower *L);

#endif
