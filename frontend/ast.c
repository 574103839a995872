/* ast.c - building, printing and querying the syntax tree. */
#include <string.h>

#include "ast.h"

AstExpr *ast_expr_new(DlCompiler *cc, AstExprKind kind, DlLoc loc) {
  AstExpr *e = dl_arena_alloc(cc->arena, sizeof *e);
  e->kind = kind;
  e->loc = loc;
  return e;
}

AstExpr *ast_number(DlCompiler *cc, DlLoc loc, double value, const char *text) {
  AstExpr *e = ast_expr_new(cc, AST_NUMBER, loc);
  e->u.number.value = value;
  e->u.number.text = text;
  return e;
}

AstExpr *ast_name(DlCompiler *cc, DlLoc loc, const char *name) {
  AstExpr *e = ast_expr_new(cc, AST_NAME, loc);
  e->u.name = name;
  return e;
}

AstExpr *ast_binary(DlCompiler *cc, DlLoc loc, char op, AstExpr *lhs, AstExpr *rhs) {
  AstExpr *e = ast_expr_new(cc, AST_BINARY, loc);
  e->u.binary.op = op;
  e->u.binary.lhs = lhs;
  e->u.binary.rhs = rhs;
  return e;
}

void ast_list_push(DlCompiler *cc, AstExprList *list, AstExpr *e) {
  DL_ARENA_GROW(cc->arena, list->items, list->n, list->cap);
  list->items[list->n++] = e;
}

void ast_args_push(DlCompiler *cc, AstArgList *args, AstArg arg) {
  DL_ARENA_GROW(cc->arena, args->items, args->n, args->cap);
  args->items[args->n++] = arg;
}

AstStmt *ast_stmt_new(DlCompiler *cc, AstStmtKind kind, DlLoc loc, const char *name,
                      DlLoc name_loc) {
  AstStmt *s = dl_arena_alloc(cc->arena, sizeof *s);
  s->kind = kind;
  s->loc = loc;
  s->name = name;
  s->name_loc = name_loc;
  return s;
}

void ast_stmts_push(DlCompiler *cc, AstStmtList *list, AstStmt *s) {
  DL_ARENA_GROW(cc->arena, list->items, list->n, list->cap);
  list->items[list->n++] = s;
}

void ast_file_add_block(DlCompiler *cc, DlAstFile *file, AstBlock *b) {
  DL_ARENA_GROW(cc->arena, file->blocks, file->nblocks, file->cap);
  file->blocks[file->nblocks++] = b;
}

void ast_names_push(DlCompiler *cc, AstNameList *list, const char *name, DlLoc loc) {
  if (list->n >= list->cap) {
    int cap = list->cap;
    DL_ARENA_GROW(cc->arena, list->names, list->n, cap);
    DL_ARENA_GROW(cc->arena, list->locs, list->n, list->cap);
  }
  list->names[list->n] = name;
  list->locs[list->n++] = loc;
}

void ast_params_push(DlCompiler *cc, AstParamList *list, AstParam p) {
  DL_ARENA_GROW(cc->arena, list->items, list->n, list->cap);
  list->items[list->n++] = p;
}

void ast_file_add_import(DlCompiler *cc, DlAstFile *file, AstImport imp) {
  DL_ARENA_GROW(cc->arena, file->imports, file->nimports, file->import_cap);
  file->imports[file->nimports++] = imp;
}

const char *dl_default_model(const DlAstFile *ast) {
  if (!ast) return NULL;
  for (int i = 0; i < ast->nblocks; i++)
    if (ast->blocks[i]->kind == AST_BLOCK_TRAIN) return ast->blocks[i]->name;
  for (int i = 0; i < ast->nblocks; i++)
    if (ast->blocks[i]->kind == AST_BLOCK_MODEL) return ast->blocks[i]->name;
  return NULL;
}

/* ---- printing ---- */

static void print_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const char *p = s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", out); break;
    case '\\': fputs("\\\\", out); break;
    case '\n': fputs("\\n", out); break;
    case '\t': fputs("\\t", out); break;
    default: fputc(*p, out); break;
    }
  }
  fputc('"', out);
}

static void print_expr(const AstExpr *e, FILE *out) {
  if (!e) {
    fputs("<error>", out);
    return;
  }
  switch (e->kind) {
  case AST_NUMBER: fputs(e->u.number.text, out); break;
  case AST_NAME: fputs(e->u.name, out); break;
  case AST_STRING: print_string(out, e->u.string); break;
  case AST_BOOL: fputs(e->u.boolean ? "true" : "false", out); break;
  case AST_LIST:
    fputc('[', out);
    for (int i = 0; i < e->u.list.n; i++) {
      if (i) fputc(' ', out);
      print_expr(e->u.list.items[i], out);
    }
    fputc(']', out);
    break;
  case AST_NEG:
    fputs("(- ", out);
    print_expr(e->u.operand, out);
    fputc(')', out);
    break;
  case AST_BINARY:
    fprintf(out, "(%c ", e->u.binary.op);
    print_expr(e->u.binary.lhs, out);
    fputc(' ', out);
    print_expr(e->u.binary.rhs, out);
    fputc(')', out);
    break;
  case AST_RANGE:
    fputs("(.. ", out);
    print_expr(e->u.range.lo, out);
    fputc(' ', out);
    print_expr(e->u.range.hi, out);
    fputc(')', out);
    break;
  case AST_CALL:
    fputs("(call ", out);
    print_expr(e->u.call.callee, out);
    for (int i = 0; i < e->u.call.args.n; i++) {
      const AstArg *a = &e->u.call.args.items[i];
      fputc(' ', out);
      if (a->name) fprintf(out, "%s=", a->name);
      print_expr(a->value, out);
    }
    if (e->u.call.instance) {
      fputs(" as ", out);
      print_expr(e->u.call.instance, out);
    }
    fputc(')', out);
    break;
  case AST_INDEX:
    fputs("(index ", out);
    print_expr(e->u.index.base, out);
    for (int i = 0; i < e->u.index.items.n; i++) {
      fputc(' ', out);
      print_expr(e->u.index.items.items[i], out);
    }
    fputc(')', out);
    break;
  case AST_SLICE:
    if (e->u.slice.lo) print_expr(e->u.slice.lo, out);
    fputc(':', out);
    if (e->u.slice.hi) print_expr(e->u.slice.hi, out);
    break;
  case AST_ELLIPSIS: fputs("...", out); break;
  }
}

static void print_shape(const AstExprList *shape, FILE *out) {
  fputc('[', out);
  for (int i = 0; shape && i < shape->n; i++) {
    if (i) fputc(' ', out);
    print_expr(shape->items[i], out);
  }
  fputc(']', out);
}

static void print_stmts(const AstStmtList *stmts, int depth, FILE *out);

static void print_exprs(const AstExprList *list, FILE *out) {
  for (int i = 0; list && i < list->n; i++) {
    fputc(' ', out);
    print_expr(list->items[i], out);
  }
}

static void print_stmt(const AstStmt *s, int depth, FILE *out) {
  switch (s->kind) {
  case AST_STMT_INPUT:
  case AST_STMT_TARGET:
  case AST_STMT_PARAM:
    fprintf(out, "(%s %s ",
            s->kind == AST_STMT_INPUT    ? "input"
            : s->kind == AST_STMT_TARGET ? "target"
                                         : "param",
            s->name);
    print_shape(s->shape, out);
    if (s->value) {
      fputc(' ', out);
      print_expr(s->value, out);
    }
    fputc(')', out);
    break;
  case AST_STMT_ASSIGN:
    fprintf(out, "(assign %s ", s->name);
    print_expr(s->value, out);
    fputc(')', out);
    break;
  case AST_STMT_OUTPUT: fprintf(out, "(output %s)", s->name); break;
  case AST_STMT_MULTI:
    fputs("(assign (", out);
    for (int i = 0; i < s->names->n; i++)
      fprintf(out, "%s%s", i ? " " : "", s->names->names[i]);
    fputs(") ", out);
    print_expr(s->value, out);
    fputc(')', out);
    break;
  case AST_STMT_FOR:
    fprintf(out, "(for %s ", s->name);
    print_expr(s->value, out);
    print_stmts(s->body, depth + 1, out);
    fputc(')', out);
    break;
  case AST_STMT_RETURN:
    fputs("(return", out);
    print_exprs(s->values, out);
    fputc(')', out);
    break;
  }
}

static void print_stmts(const AstStmtList *stmts, int depth, FILE *out) {
  for (int j = 0; stmts && j < stmts->n; j++) {
    fprintf(out, "\n%*s", 2 * depth, "");
    print_stmt(stmts->items[j], depth, out);
  }
}

static void print_def_header(const AstBlock *b, FILE *out) {
  fputs(" (", out);
  for (int i = 0; i < b->params.n; i++) {
    const AstParam *p = &b->params.items[i];
    if (i) fputc(' ', out);
    if (!p->pattern && !p->default_value) {
      fputs(p->name, out);
      continue;
    }
    fprintf(out, "(%s", p->name);
    if (p->pattern) {
      fputc(' ', out);
      print_shape(p->pattern, out);
    }
    if (p->default_value) {
      fputs(" = ", out);
      print_expr(p->default_value, out);
    }
    fputc(')', out);
  }
  fputc(')', out);
}

void dl_ast_print(const DlAstFile *ast, FILE *out) {
  if (!ast) return;
  for (int i = 0; i < ast->nimports; i++) {
    fputs("(import ", out);
    print_string(out, ast->imports[i].path);
    fputs(")\n", out);
  }
  for (int i = 0; i < ast->nblocks; i++) {
    const AstBlock *b = ast->blocks[i];
    const char *kind = b->kind == AST_BLOCK_MODEL   ? "model"
                       : b->kind == AST_BLOCK_TRAIN ? "train"
                                                    : "def";
    fprintf(out, "(%s %s", kind, b->name);
    if (b->kind == AST_BLOCK_DEF) print_def_header(b, out);
    print_stmts(&b->stmts, 1, out);
    fputs(")\n", out);
  }
}
