/* parser.y - the .nnl grammar: a pure bison parser with locations.
 *
 * Statements end at newlines or ';'.  Model and train blocks share one
 * statement grammar (lower.c decides what each block may contain), and a
 * call is any postfix expression applied to positional and `name = value`
 * arguments, so new builtins and settings need no grammar change.
 *
 * Error recovery: a bad statement becomes `stmt: error`; the parser skips to
 * the end of the line (or the closing '}') and goes on, so one run reports
 * the errors of several statements.  A bad block header skips to the next
 * '}'.
 */

%code top {
/* Generated from frontend/parser.y by bison; edit that file instead. */
#include <stdlib.h>
#include <string.h>
}

%code requires {
#include "ast.h"
}

%define api.pure full
%define api.prefix {nnl_}
%define api.token.prefix {TOK_}
%define parse.error custom
%define parse.lac full
%locations
%parse-param {void *scanner} {NnlParseState *st}
%lex-param {void *scanner}

%union {
  NnlToken tok;
  AstExpr *expr;
  AstExprList *list;
  AstArgList *args;
  AstArg arg;
  AstStmt *stmt;
  AstStmtList *stmts;
  AstNameList *names;
  AstParamList *params;
  AstParam param;
}

%code {
int nnl_lex(NNL_STYPE *val, NNL_LTYPE *loc, void *scanner);
static void nnl_error(NNL_LTYPE *loc, void *scanner, NnlParseState *st, const char *msg);
static void add_block(NnlParseState *st, AstBlockKind kind, NNL_LTYPE kw, NnlToken name,
                      NNL_LTYPE name_loc, AstStmtList *stmts);
static AstStmt *decl_stmt(NnlParseState *st, AstStmtKind kind, NNL_LTYPE kw, NnlToken name,
                          NNL_LTYPE name_loc, AstExprList *shape, AstExpr *init);
static void add_def(NnlParseState *st, NNL_LTYPE kw, NnlToken name, NNL_LTYPE name_loc,
                    AstParamList *params, AstStmtList *body);
static AstExpr *call_expr(NnlParseState *st, AstExpr *callee, AstArgList *args, AstExpr *instance);
static AstExpr *index_expr(NnlParseState *st, DlLoc loc, AstExpr *base, AstExprList *items);
static AstExpr *slice_expr(NnlParseState *st, DlLoc loc, AstExpr *lo, AstExpr *hi);
static AstExpr *slice_step(NnlParseState *st, NNL_LTYPE colon, DlLoc loc, AstExpr *lo,
                           AstExpr *hi);

#define LOC(l) ((DlLoc){st->file, (l).first_line, (l).first_column})
#define CC (st->cc)
}

%token <tok> MODEL "'model'" TRAIN "'train'" INPUT "'input'" TARGET "'target'"
%token <tok> PARAM "'param'" OUTPUT "'output'" TRUE "'true'" FALSE "'false'"
%token <tok> DEF "'def'" IMPORT "'import'" FOR "'for'" IN "'in'" RETURN "'return'" AS "'as'"
%token <tok> IDENT "identifier" NUMBER "number" STRING "string" NEWLINE "end of line"
%token <tok> LBRACE "'{'" RBRACE "'}'" LPAREN "'('" RPAREN "')'"
%token <tok> LBRACKET "'['" RBRACKET "']'" COMMA "','" COLON "':'" SEMI "';'"
%token <tok> ASSIGN "'='" PLUS "'+'" MINUS "'-'" STAR "'*'" SLASH "'/'" AT "'@'"
%token <tok> CARET "'^'" DOTDOT "'..'" ELLIPSIS "'...'"

%nterm <stmts> body stmts
%nterm <stmt> stmt
%nterm <list> shape expr_list indices
%nterm <expr> expr postfix primary index opt_as instance
%nterm <names> names
%nterm <params> def_params def_param_list
%nterm <param> def_param
%nterm <args> args
%nterm <arg> arg

/* Lowest to highest.  Unary minus binds looser than '^': -x^2 is -(x^2). */
%nonassoc DOTDOT
%left PLUS MINUS
%left STAR SLASH AT
%precedence UMINUS
%right CARET
/* `f(x) as layer[i]`: the bracket belongs to the instance name. */
%precedence AS_NAME
%precedence LBRACKET

%%

file
  : %empty
  | file block
  | file term
  ;

block
  : MODEL IDENT body { add_block(st, AST_BLOCK_MODEL, @1, $2, @2, $3); yyerrok; }
  | TRAIN IDENT body { add_block(st, AST_BLOCK_TRAIN, @1, $2, @2, $3); yyerrok; }
  | DEF IDENT LPAREN def_params RPAREN body { add_def(st, @1, $2, @2, $4, $6); yyerrok; }
  | IMPORT STRING {
      ast_file_add_import(CC, st->ast, (AstImport){$2.text, LOC(@2)});
      yyerrok;
    }
  /* A broken import line: skip to its end. */
  | IMPORT error term { yyerrok; }
  /* A broken block header: skip to the end of the block. */
  | error RBRACE { yyerrok; }
  ;

body
  : LBRACE opt_terms RBRACE { $$ = dl_arena_alloc(CC->arena, sizeof(AstStmtList)); }
  | LBRACE opt_terms stmts opt_terms RBRACE { $$ = $3; }
  ;

stmts
  : stmt {
      $$ = dl_arena_alloc(CC->arena, sizeof(AstStmtList));
      if ($1)
        ast_stmts_push(CC, $$, $1);
    }
  | stmts terms stmt {
      $$ = $1;
      if ($3)
        ast_stmts_push(CC, $$, $3);
    }
  ;

/* A statement terminator also ends error recovery, so the next statement's
 * errors are reported even if they come within three tokens. */
term
  : NEWLINE { yyerrok; }
  | SEMI { yyerrok; }
  ;

terms
  : term
  | terms term
  ;

opt_terms
  : %empty
  | terms
  ;

def_params
  : %empty { $$ = dl_arena_alloc(CC->arena, sizeof(AstParamList)); }
  | def_param_list opt_comma { $$ = $1; }
  ;

def_param_list
  : def_param {
      $$ = dl_arena_alloc(CC->arena, sizeof(AstParamList));
      ast_params_push(CC, $$, $1);
    }
  | def_param_list COMMA def_param { $$ = $1; ast_params_push(CC, $$, $3); }
  ;

def_param
  : IDENT { $$ = (AstParam){$1.text, LOC(@1), NULL, NULL}; }
  | IDENT COLON shape { $$ = (AstParam){$1.text, LOC(@1), $3, NULL}; }
  | IDENT ASSIGN expr { $$ = (AstParam){$1.text, LOC(@1), NULL, $3}; }
  | IDENT COLON shape ASSIGN expr { $$ = (AstParam){$1.text, LOC(@1), $3, $5}; }
  ;

names
  : IDENT {
      $$ = dl_arena_alloc(CC->arena, sizeof(AstNameList));
      ast_names_push(CC, $$, $1.text, LOC(@1));
    }
  | names COMMA IDENT { $$ = $1; ast_names_push(CC, $$, $3.text, LOC(@3)); }
  ;

stmt
  : INPUT IDENT COLON shape { $$ = decl_stmt(st, AST_STMT_INPUT, @1, $2, @2, $4, NULL); }
  | TARGET IDENT COLON shape { $$ = decl_stmt(st, AST_STMT_TARGET, @1, $2, @2, $4, NULL); }
  | PARAM IDENT COLON shape { $$ = decl_stmt(st, AST_STMT_PARAM, @1, $2, @2, $4, NULL); }
  | PARAM IDENT COLON shape ASSIGN expr {
      $$ = decl_stmt(st, AST_STMT_PARAM, @1, $2, @2, $4, $6);
    }
  | OUTPUT IDENT { $$ = decl_stmt(st, AST_STMT_OUTPUT, @1, $2, @2, NULL, NULL); }
  | IDENT ASSIGN expr { $$ = decl_stmt(st, AST_STMT_ASSIGN, @1, $1, @1, NULL, $3); }
  /* Keep the name defined (without a value) so its uses do not add errors. */
  | IDENT ASSIGN error { $$ = decl_stmt(st, AST_STMT_ASSIGN, @1, $1, @1, NULL, NULL); }
  | IDENT COMMA names ASSIGN expr {
      $$ = decl_stmt(st, AST_STMT_MULTI, @1, $1, @1, NULL, $5);
      $$->names = dl_arena_alloc(CC->arena, sizeof(AstNameList));
      ast_names_push(CC, $$->names, $1.text, LOC(@1));
      for (int i = 0; i < $3->n; i++)
        ast_names_push(CC, $$->names, $3->names[i], $3->locs[i]);
    }
  | FOR IDENT IN expr body {
      $$ = decl_stmt(st, AST_STMT_FOR, @1, $2, @2, NULL, $4);
      $$->body = $5;
    }
  | RETURN expr_list {
      $$ = ast_stmt_new(CC, AST_STMT_RETURN, LOC(@1), "return", LOC(@1));
      $$->values = $2;
    }
  | error { $$ = NULL; }
  ;

shape
  : LBRACKET RBRACKET { $$ = dl_arena_alloc(CC->arena, sizeof(AstExprList)); }
  | LBRACKET expr_list opt_comma RBRACKET { $$ = $2; }
  ;

expr_list
  : expr {
      $$ = dl_arena_alloc(CC->arena, sizeof(AstExprList));
      ast_list_push(CC, $$, $1);
    }
  | expr_list COMMA expr { $$ = $1; ast_list_push(CC, $$, $3); }
  ;

opt_comma
  : %empty
  | COMMA
  ;

expr
  : expr DOTDOT expr {
      /* A range is reported as a whole: point at its start. */
      $$ = ast_expr_new(CC, AST_RANGE, LOC(@1));
      $$->u.range.lo = $1;
      $$->u.range.hi = $3;
    }
  | expr PLUS expr { $$ = ast_binary(CC, LOC(@2), '+', $1, $3); }
  | expr MINUS expr { $$ = ast_binary(CC, LOC(@2), '-', $1, $3); }
  | expr STAR expr { $$ = ast_binary(CC, LOC(@2), '*', $1, $3); }
  | expr SLASH expr { $$ = ast_binary(CC, LOC(@2), '/', $1, $3); }
  | expr AT expr { $$ = ast_binary(CC, LOC(@2), '@', $1, $3); }
  | expr CARET expr { $$ = ast_binary(CC, LOC(@2), '^', $1, $3); }
  | MINUS expr %prec UMINUS {
      $$ = ast_expr_new(CC, AST_NEG, LOC(@1));
      $$->u.operand = $2;
    }
  | postfix
  ;

postfix
  : primary
  | postfix LPAREN RPAREN opt_as { $$ = call_expr(st, $1, NULL, $4); }
  | postfix LPAREN args opt_comma RPAREN opt_as { $$ = call_expr(st, $1, $3, $6); }
  | postfix LBRACKET indices opt_comma RBRACKET { $$ = index_expr(st, LOC(@2), $1, $3); }
  ;

opt_as
  : %empty { $$ = NULL; }
  | AS instance %prec AS_NAME { $$ = $2; }
  ;

/* An instance name: `cell`, `layer[l]`, `block[i][j]`. */
instance
  : IDENT { $$ = ast_name(CC, LOC(@1), $1.text); }
  | instance LBRACKET expr RBRACKET {
      AstExprList items = {0};
      ast_list_push(CC, &items, $3);
      $$ = index_expr(st, LOC(@2), $1, &items);
    }
  ;

indices
  : index {
      $$ = dl_arena_alloc(CC->arena, sizeof(AstExprList));
      ast_list_push(CC, $$, $1);
    }
  | indices COMMA index { $$ = $1; ast_list_push(CC, $$, $3); }
  ;

/* One index: a position, a slice lo:hi (either end may be left out), or
 * `...` (a primary, so shape patterns can use it too). */
index
  : expr
  | COLON { $$ = slice_expr(st, LOC(@1), NULL, NULL); }
  | COLON expr { $$ = slice_expr(st, LOC(@1), NULL, $2); }
  | expr COLON { $$ = slice_expr(st, $1->loc, $1, NULL); }
  | expr COLON expr { $$ = slice_expr(st, $1->loc, $1, $3); }
  /* Steps are not part of the language: say so rather than "unexpected". */
  | expr COLON expr COLON expr { $$ = slice_step(st, @4, $1->loc, $1, $3); }
  | expr COLON COLON expr { $$ = slice_step(st, @3, $1->loc, $1, NULL); }
  | COLON COLON expr { $$ = slice_step(st, @2, LOC(@1), NULL, NULL); }
  ;

args
  : arg {
      $$ = dl_arena_alloc(CC->arena, sizeof(AstArgList));
      ast_args_push(CC, $$, $1);
    }
  | args COMMA arg { $$ = $1; ast_args_push(CC, $$, $3); }
  ;

arg
  : expr { $$ = (AstArg){NULL, LOC(@1), $1}; }
  | IDENT ASSIGN expr { $$ = (AstArg){$1.text, LOC(@1), $3}; }
  ;

primary
  : NUMBER { $$ = ast_number(CC, LOC(@1), $1.number, $1.text); }
  | IDENT { $$ = ast_name(CC, LOC(@1), $1.text); }
  | STRING {
      $$ = ast_expr_new(CC, AST_STRING, LOC(@1));
      $$->u.string = $1.text;
    }
  | TRUE {
      $$ = ast_expr_new(CC, AST_BOOL, LOC(@1));
      $$->u.boolean = true;
    }
  | FALSE {
      $$ = ast_expr_new(CC, AST_BOOL, LOC(@1));
      $$->u.boolean = false;
    }
  | LBRACKET RBRACKET { $$ = ast_expr_new(CC, AST_LIST, LOC(@1)); }
  | LBRACKET expr_list opt_comma RBRACKET {
      $$ = ast_expr_new(CC, AST_LIST, LOC(@1));
      $$->u.list = *$2;
    }
  | LPAREN expr RPAREN { $$ = $2; }
  | ELLIPSIS { $$ = ast_expr_new(CC, AST_ELLIPSIS, LOC(@1)); }
  ;

%%

static void nnl_error(NNL_LTYPE *loc, void *scanner, NnlParseState *st, const char *msg) {
  (void)scanner;
  /* Bison's only own message: its stack outgrew YYMAXDEPTH. */
  if (strstr(msg, "memory exhausted"))
    msg = "nesting is too deep for the parser";
  dl_error(st->cc, LOC(*loc), "%s", msg);
}

static void add_block(NnlParseState *st, AstBlockKind kind, NNL_LTYPE kw, NnlToken name,
                      NNL_LTYPE name_loc, AstStmtList *stmts) {
  AstBlock *b = dl_arena_alloc(st->cc->arena, sizeof *b);
  b->kind = kind;
  b->loc = LOC(kw);
  b->name = name.text;
  b->name_loc = LOC(name_loc);
  b->stmts = *stmts;
  ast_file_add_block(st->cc, st->ast, b);
}

static void add_def(NnlParseState *st, NNL_LTYPE kw, NnlToken name, NNL_LTYPE name_loc,
                    AstParamList *params, AstStmtList *body) {
  add_block(st, AST_BLOCK_DEF, kw, name, name_loc, body);
  st->ast->blocks[st->ast->nblocks - 1]->params = *params;
}

static AstExpr *call_expr(NnlParseState *st, AstExpr *callee, AstArgList *args, AstExpr *instance) {
  AstExpr *e = ast_expr_new(st->cc, AST_CALL, callee->loc);
  e->u.call.callee = callee;
  if (args)
    e->u.call.args = *args;
  e->u.call.instance = instance;
  return e;
}

static AstExpr *index_expr(NnlParseState *st, DlLoc loc, AstExpr *base, AstExprList *items) {
  AstExpr *e = ast_expr_new(st->cc, AST_INDEX, loc);
  e->u.index.base = base;
  e->u.index.items = *items;
  return e;
}

static AstExpr *slice_expr(NnlParseState *st, DlLoc loc, AstExpr *lo, AstExpr *hi) {
  AstExpr *e = ast_expr_new(st->cc, AST_SLICE, loc);
  e->u.slice.lo = lo;
  e->u.slice.hi = hi;
  return e;
}

static AstExpr *slice_step(NnlParseState *st, NNL_LTYPE colon, DlLoc loc, AstExpr *lo,
                           AstExpr *hi) {
  dl_error(st->cc, LOC(colon), "slices have no step: write lo:hi");
  return slice_expr(st, loc, lo, hi);
}

static AstStmt *decl_stmt(NnlParseState *st, AstStmtKind kind, NNL_LTYPE kw, NnlToken name,
                          NNL_LTYPE name_loc, AstExprList *shape, AstExpr *value) {
  AstStmt *s = ast_stmt_new(st->cc, kind, LOC(kw), name.text, LOC(name_loc));
  s->shape = shape;
  s->value = value;
  return s;
}

/* ---- syntax error messages: "unexpected X, expected A, B or C" ---- */

enum { MAX_EXPECTED = 8 };

/* Groups of tokens named as one thing when all or some of them are
 * expected: listing every token that can start an expression helps nobody. */
static bool starts_expression(yysymbol_kind_t k) {
  switch (k) {
  case YYSYMBOL_NUMBER:
  case YYSYMBOL_IDENT:
  case YYSYMBOL_STRING:
  case YYSYMBOL_TRUE:
  case YYSYMBOL_FALSE:
  case YYSYMBOL_LBRACKET:
  case YYSYMBOL_LPAREN:
  case YYSYMBOL_MINUS:
  case YYSYMBOL_ELLIPSIS:
    return true;
  default:
    return false;
  }
}

static bool starts_statement(yysymbol_kind_t k) {
  return k == YYSYMBOL_INPUT || k == YYSYMBOL_TARGET || k == YYSYMBOL_PARAM ||
         k == YYSYMBOL_OUTPUT || k == YYSYMBOL_IDENT || k == YYSYMBOL_FOR || k == YYSYMBOL_RETURN;
}

static bool is_binary_operator(yysymbol_kind_t k) {
  return k == YYSYMBOL_PLUS || k == YYSYMBOL_MINUS || k == YYSYMBOL_STAR || k == YYSYMBOL_SLASH ||
         k == YYSYMBOL_AT || k == YYSYMBOL_CARET || k == YYSYMBOL_DOTDOT;
}

static const char *describe_found(NnlParseState *st, yysymbol_kind_t k) {
  switch (k) {
  case YYSYMBOL_IDENT: return dl_arena_printf(st->cc->arena, "identifier '%s'", st->last_text);
  case YYSYMBOL_NUMBER: return dl_arena_printf(st->cc->arena, "number '%s'", st->last_text);
  case YYSYMBOL_STRING: return dl_arena_printf(st->cc->arena, "string \"%s\"", st->last_text);
  default: return yysymbol_name(k);
  }
}

static int yyreport_syntax_error(const yypcontext_t *ctx, void *scanner, NnlParseState *st) {
  (void)scanner;
  yysymbol_kind_t found = yypcontext_token(ctx);
  DlLoc loc = LOC(*yypcontext_location(ctx));
  if (loc.line == st->lex_error_line)
    return 0;

  int total = yypcontext_expected_tokens(ctx, NULL, 0);
  yysymbol_kind_t all[YYNTOKENS];
  int nall = total > 0 ? yypcontext_expected_tokens(ctx, all, YYNTOKENS) : 0;
  if (nall < 0)
    nall = 0;

  bool want_expr = false, want_stmt = false;
  for (int i = 0; i < nall; i++) {
    if (all[i] == YYSYMBOL_NUMBER)
      want_expr = true;
    if (all[i] == YYSYMBOL_INPUT)
      want_stmt = true;
  }
  const char *names[MAX_EXPECTED];
  int n = 0;
  bool too_many = false, said_expr = false, said_stmt = false, said_op = false, said_eol = false;
  for (int i = 0; i < nall && !too_many; i++) {
    yysymbol_kind_t k = all[i];
    const char *name = NULL;
    if (want_stmt && starts_statement(k)) {
      name = said_stmt ? NULL : "statement";
      said_stmt = true;
    } else if (want_expr && starts_expression(k)) {
      name = said_expr ? NULL : "expression";
      said_expr = true;
    } else if (is_binary_operator(k)) {
      name = said_op ? NULL : "operator";
      said_op = true;
    } else if (k == YYSYMBOL_NEWLINE || k == YYSYMBOL_SEMI) {
      name = said_eol ? NULL : "end of line";
      said_eol = true;
    } else {
      name = yysymbol_name(k);
    }
    if (!name)
      continue;
    if (n == MAX_EXPECTED)
      too_many = true;
    else
      names[n++] = name;
  }

  const char *msg = dl_arena_printf(st->cc->arena, "unexpected %s", describe_found(st, found));
  if (n > 0 && n <= 5 && !too_many) {
    msg = dl_arena_printf(st->cc->arena, "%s, expected %s", msg, names[0]);
    for (int i = 1; i < n; i++)
      msg = dl_arena_printf(st->cc->arena, "%s%s%s", msg, i == n - 1 ? " or " : ", ", names[i]);
  }
  dl_error(st->cc, loc, "%s", msg);
  return 0;
}

/* ---- entry points ---- */

bool nnl_parse_tokens(NnlParseState *st, void *scanner) { return nnl_parse(scanner, st) == 0; }

DlAstFile *nnl_parse_source(DlCompiler *cc, const DlSource *src) {
  DlAstFile *ast = dl_arena_alloc(cc->arena, sizeof *ast);
  ast->path = src->path;
  NnlParseState st = {.cc = cc, .file = src->path, .ast = ast};
  void *scanner = nnl_scanner_open(&st, src->text, src->len);
  if (!scanner) {
    dl_error(cc, DL_NOLOC, "out of memory while starting the scanner");
    return ast;
  }
  nnl_parse_tokens(&st, scanner);
  nnl_scanner_close(scanner);
  return ast;
}

DlAstFile *dl_parse_file(DlCompiler *cc, const char *path) {
  const DlSource *src = dl_source_load(cc, path, DL_NOLOC);
  if (!src)
    return NULL;
  DlAstFile *ast = nnl_parse_source(cc, src);
  nnl_load_imports(cc, ast, ast);
  return ast;
}

DlAstFile *dl_parse_string(DlCompiler *cc, const char *name, const char *text) {
  const DlSource *src = dl_source_add(cc, name, text, strlen(text));
  DlAstFile *ast = nnl_parse_source(cc, src);
  nnl_load_imports(cc, ast, ast);
  return ast;
}
