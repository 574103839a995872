/* ast.h - the syntax tree of a .nnl file (private to the frontend).
 *
 * The parser builds it; lower.c turns one model of it into IR.  Every node
 * lives in the DlCompiler's arena.  The tree is deliberately generic: a call
 * is any expression applied to positional and `name = value` arguments, and
 * statements in model and train blocks share one grammar, so new builtins,
 * settings and statement forms need no new syntax.
 */
#ifndef NNL_AST_H
#define NNL_AST_H

#include "frontend.h"

typedef enum AstExprKind {
  AST_NUMBER,   /* 1, .5, 1e-3 */
  AST_NAME,     /* x */
  AST_STRING,   /* "xor.csv" */
  AST_BOOL,     /* true, false */
  AST_LIST,     /* [a, b, ...]: a literal tensor (or a shape) */
  AST_NEG,      /* -a */
  AST_BINARY,   /* a op b, op one of + - * / @ ^ */
  AST_RANGE,    /* a..b */
  AST_CALL,     /* f(args), f(args) as inst */
  AST_INDEX,    /* x[i, a:b, :, ...] */
  AST_SLICE,    /* a:b inside an index (either bound may be missing) */
  AST_ELLIPSIS, /* ... in a shape pattern or an index */
} AstExprKind;

typedef struct AstExpr AstExpr;

typedef struct AstExprList {
  AstExpr **items;
  int n, cap;
} AstExprList;

/* One call argument: positional when name == NULL. */
typedef struct AstArg {
  const char *name;
  DlLoc name_loc;
  AstExpr *value;
} AstArg;

typedef struct AstArgList {
  AstArg *items;
  int n, cap;
} AstArgList;

struct AstExpr {
  AstExprKind kind;
  /* For operators the operator token, for calls the callee, else the first
   * token: where a diagnostic about this expression points. */
  DlLoc loc;
  union {
    struct {
      double value;
      const char *text; /* as written, for printing */
    } number;
    const char *name;
    const char *string;
    bool boolean;
    AstExprList list;
    AstExpr *operand; /* AST_NEG */
    struct {
      char op; /* '+', '-', '*', '/', '@', '^' */
      AstExpr *lhs, *rhs;
    } binary;
    struct {
      AstExpr *lo, *hi;
    } range;
    struct {
      AstExpr *callee;
      AstArgList args;
      /* `f(x) as block[l]`: the instance the call's parameters are named
       * after (an AST_NAME, or AST_INDEX of names and indices); NULL when
       * the call site names it. */
      AstExpr *instance;
    } call;
    struct {
      AstExpr *base;
      AstExprList items; /* expressions, AST_SLICE and AST_ELLIPSIS */
    } index;
    struct {
      AstExpr *lo, *hi; /* NULL when omitted */
    } slice;
  } u;
};

typedef enum AstStmtKind {
  AST_STMT_INPUT,  /* input NAME : [dims] */
  AST_STMT_TARGET, /* target NAME : [dims] */
  AST_STMT_PARAM,  /* param NAME : [dims] (= init)? */
  AST_STMT_ASSIGN, /* NAME = expr (value NULL after a syntax error) */
  AST_STMT_OUTPUT, /* output NAME */
  AST_STMT_MULTI,  /* NAME, NAME, ... = expr (names holds them all) */
  AST_STMT_FOR,    /* for NAME in lo..hi { body } (value is the range) */
  AST_STMT_RETURN, /* return expr, expr, ... (values) */
} AstStmtKind;

typedef struct AstStmtList AstStmtList;

/* Names of a multiple assignment. */
typedef struct AstNameList {
  const char **names;
  DlLoc *locs;
  int n, cap;
} AstNameList;

typedef struct AstStmt {
  AstStmtKind kind;
  DlLoc loc; /* the statement's first token */
  const char *name;
  DlLoc name_loc;
  AstExprList *shape;  /* input/target/param: the dimensions */
  AstExpr *value;      /* param initialiser (may be NULL), assigned value, loop range */
  AstNameList *names;  /* AST_STMT_MULTI */
  AstStmtList *body;   /* AST_STMT_FOR */
  AstExprList *values; /* AST_STMT_RETURN */
} AstStmt;

struct AstStmtList {
  AstStmt **items;
  int n, cap;
};

/* One parameter of a def: `x`, `x : [N, I]`, `act = relu`. */
typedef struct AstParam {
  const char *name;
  DlLoc loc;
  AstExprList *pattern;   /* shape pattern, NULL when not annotated */
  AstExpr *default_value; /* NULL when required */
} AstParam;

typedef struct AstParamList {
  AstParam *items;
  int n, cap;
} AstParamList;

typedef enum AstBlockKind { AST_BLOCK_MODEL, AST_BLOCK_TRAIN, AST_BLOCK_DEF } AstBlockKind;

typedef struct AstBlock {
  AstBlockKind kind;
  DlLoc loc; /* the `model` / `train` / `def` keyword */
  const char *name;
  DlLoc name_loc;
  AstParamList params; /* def only */
  AstStmtList stmts;
} AstBlock;

/* `import "path"` */
typedef struct AstImport {
  const char *path; /* as written */
  DlLoc loc;        /* the string */
} AstImport;

struct DlAstFile {
  const char *path;
  const char *real_path; /* canonical path (realpath), to load each file once */
  AstBlock **blocks;
  int nblocks, cap;
  AstImport *imports;
  int nimports, import_cap;
  /* The main file only: every file loaded through imports (each once), so
   * their defs are visible to the main file's models. */
  struct DlAstFile **loaded;
  int nloaded, loaded_cap;
};

/* ---- parser state, shared by the scanner and the parser ---- */

typedef struct NnlParseState {
  DlCompiler *cc;
  const char *file; /* DlLoc.file of every token */
  DlAstFile *ast;
  int line, col; /* where the next token starts */
  int nesting;   /* open ( and [: newlines inside them do not end statements */
  /* The most recent token, for "unexpected identifier 'foo'" messages. */
  const char *last_text;
  /* Line of the last lexical error: a syntax error on the same line is
   * almost always its echo (x $ 2 is "x 2" to the parser), so it is not
   * reported. */
  int lex_error_line;
} NnlParseState;

/* Semantic value of every token. */
typedef struct NnlToken {
  const char *text;
  double number; /* NUMBER only */
} NnlToken;

/* The scanner (lexer.l): opened on a copy of text, closed with
 * nnl_scanner_close. */
void *nnl_scanner_open(NnlParseState *st, const char *text, size_t len);
void nnl_scanner_close(void *scanner);
/* The parser (parser.y): fills st->ast; returns false on a syntax error. */
bool nnl_parse_tokens(NnlParseState *st, void *scanner);

/* ---- construction (ast.c) ---- */

AstExpr *ast_expr_new(DlCompiler *cc, AstExprKind kind, DlLoc loc);
AstExpr *ast_number(DlCompiler *cc, DlLoc loc, double value, const char *text);
AstExpr *ast_name(DlCompiler *cc, DlLoc loc, const char *name);
AstExpr *ast_binary(DlCompiler *cc, DlLoc loc, char op, AstExpr *lhs, AstExpr *rhs);
void ast_list_push(DlCompiler *cc, AstExprList *list, AstExpr *e);
void ast_args_push(DlCompiler *cc, AstArgList *args, AstArg arg);
AstStmt *ast_stmt_new(DlCompiler *cc, AstStmtKind kind, DlLoc loc, const char *name,
                      DlLoc name_loc);
void ast_stmts_push(DlCompiler *cc, AstStmtList *list, AstStmt *s);
void ast_file_add_block(DlCompiler *cc, DlAstFile *file, AstBlock *b);
void ast_names_push(DlCompiler *cc, AstNameList *list, const char *name, DlLoc loc);
void ast_params_push(DlCompiler *cc, AstParamList *list, AstParam p);
void ast_file_add_import(DlCompiler *cc, DlAstFile *file, AstImport imp);

/* Resolve and parse the imports of `file` (recursively), recording each
 * loaded file in root->loaded; errors point at the import lines. */
void nnl_load_imports(DlCompiler *cc, DlAstFile *root, DlAstFile *file);
/* Parse one registered source (no imports). */
DlAstFile *nnl_parse_source(DlCompiler *cc, const DlSource *src);

#endif
