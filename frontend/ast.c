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
    fputc(')', out);
    break;
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

static void print_stmt(const AstStmt *s, FILE *out) {
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
  }
}

void dl_ast_print(const DlAstFile *ast, FILE *out) {
  if (!ast) return;
  for (int i = 0; i < ast->nblocks; i++) {
    const AstBlock *b = ast->blocks[i];
    fprintf(out, "(%s %s", b->kind == AST_BLOCK_MODEL ? "model" : "train", b->name);
    for (int j = 0; j < b->stmts.n; j++) {
      fputs("\n  ", out);
      print_stmt(b->stmts.items[j], out);
    }
    fputs(")\n", out);
  }
}
