/* test_frontend.c - unit tests of the frontend: parse strings with
 * dl_parse_string, lower them, and check the IR graph (ops, shapes, names,
 * output and loss), the train spec, and where errors are reported. */
#include "check.h"
#include "../../frontend/frontend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Parse and lower `text`; NULL (and diagnostics left in cc) on error. */
static DlGraph *lower_text(DlCompiler *cc, const char *text, const char *model, DlTrainSpec *t) {
  DlAstFile *ast = dl_parse_string(cc, "test.nnl", text);
  if (!ast || dl_failed(cc)) return NULL;
  return dl_lower(cc, ast, model, t);
}

static DlNodeId find_named(const DlGraph *g, const char *name) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i].name && !strcmp(g->nodes[i].name, name)) return i;
  return DL_NONE;
}

static bool shape_is(const DlNode *n, int rank, int64_t d0, int64_t d1) {
  if (n->shape.rank != rank) return false;
  if (rank > 0 && n->shape.d[0] != d0) return false;
  if (rank > 1 && n->shape.d[1] != d1) return false;
  return true;
}

/* Does some diagnostic of this severity sit at line:col with msg in its text? */
static bool has_diag(const DlCompiler *cc, DlSeverity sev, int line, int col, const char *msg) {
  for (int i = 0; i < cc->ndiags; i++) {
    const DlDiag *d = &cc->diags[i];
    if (d->sev == sev && d->loc.line == line && d->loc.col == col && strstr(d->msg, msg))
      return true;
  }
  return false;
}

static int count_errors(const DlCompiler *cc) {
  int n = 0;
  for (int i = 0; i < cc->ndiags; i++)
    n += cc->diags[i].sev == DL_SEV_ERROR;
  return n;
}

static const char xor_src[] = "# xor\n"
                              "model xor {\n"
                              "  input  x : [N, 2]\n"
                              "  target y : [N, 1]\n"
                              "  param W1 : [2, 4] = uniform(-1, 1)\n"
                              "  param b1 : [4]\n"
                              "  param W2 : [4, 1] = xavier\n"
                              "  param b2 : [1]    = 0.5\n"
                              "  h    = tanh(x @ W1 + b1)\n"
                              "  out  = sigmoid(h @ W2 + b2)\n"
                              "  loss = mse(out, y)\n"
                              "}\n"
                              "train xor {\n"
                              "  data      = csv(\"xor.csv\", x = 0..2, y = 2, header = true)\n"
                              "  optimizer = sgd(lr = 0.5)\n"
                              "  epochs    = 2000; batch = 4\n"
                              "  seed      = 1\n"
                              "}\n";

static void test_xor(void) {
  DlCompiler *cc = dl_compiler_new();
  DlTrainSpec t;
  DlGraph *g = lower_text(cc, xor_src, NULL, &t);
  CHECK(g != NULL);
  if (!g) {
    dl_diag_render(cc, stdout, false);
    dl_compiler_free(cc);
    return;
  }
  CHECK(!strcmp(g->name, "xor"));
  const DlNode *x = dl_node(g, 0);
  CHECK(x->op == DL_OP_INPUT && !strcmp(x->name, "x") && x->attr.input.role == DL_ROLE_INPUT);
  CHECK(shape_is(x, 2, DL_DIM_BATCH, 2));
  CHECK(x->loc.line == 3 && x->loc.col == 10);
  const DlNode *y = dl_node(g, 1);
  CHECK(y->op == DL_OP_INPUT && y->attr.input.role == DL_ROLE_TARGET);

  DlNodeId w1 = find_named(g, "W1");
  CHECK(w1 != DL_NONE && dl_node(g, w1)->op == DL_OP_PARAM);
  CHECK(dl_node(g, w1)->attr.param.kind == DL_INIT_UNIFORM);
  CHECK(dl_node(g, w1)->attr.param.a == -1 && dl_node(g, w1)->attr.param.b == 1);
  DlNodeId b1 = find_named(g, "b1");
  CHECK(b1 != DL_NONE && dl_node(g, b1)->attr.param.kind == DL_INIT_ZERO);
  DlNodeId w2 = find_named(g, "W2");
  double limit = sqrt(6.0 / (4 + 1));
  CHECK(w2 != DL_NONE && dl_node(g, w2)->attr.param.kind == DL_INIT_UNIFORM);
  CHECK(fabs(dl_node(g, w2)->attr.param.b - limit) < 1e-12);
  DlNodeId b2 = find_named(g, "b2");
  CHECK(b2 != DL_NONE && dl_node(g, b2)->attr.param.kind == DL_INIT_CONST);
  CHECK(dl_node(g, b2)->attr.param.a == 0.5);

  /* h = tanh(x @ W1 + b1) */
  DlNodeId h = find_named(g, "h");
  CHECK(h != DL_NONE);
  const DlNode *hn = dl_node(g, h);
  CHECK(hn->op == DL_OP_TANH && shape_is(hn, 2, DL_DIM_BATCH, 4));
  const DlNode *add = dl_node(g, hn->in[0]);
  CHECK(add->op == DL_OP_ADD && add->in[1] == b1);
  CHECK(add->loc.line == 9 && add->loc.col == 22); /* at the '+' */
  const DlNode *mm = dl_node(g, add->in[0]);
  CHECK(mm->op == DL_OP_MATMUL && mm->in[0] == 0 && mm->in[1] == w1);
  CHECK(!mm->attr.matmul.ta && !mm->attr.matmul.tb);

  DlNodeId out = find_named(g, "out");
  CHECK(out != DL_NONE && g->output == out && dl_node(g, out)->op == DL_OP_SIGMOID);
  DlNodeId loss = find_named(g, "loss");
  CHECK(loss != DL_NONE && g->loss == loss);
  CHECK(dl_node(g, loss)->op == DL_OP_MEAN && dl_node(g, loss)->shape.rank == 0);
  CHECK(dl_graph_verify(g));

  CHECK(t.present && !strcmp(t.model, "xor"));
  CHECK(t.optimizer == DL_OPT_SGD && t.lr == 0.5);
  CHECK(t.epochs == 2000 && t.batch == 4 && t.seed == 1);
  CHECK(t.data.kind == DL_DATA_CSV && !strcmp(t.data.path, "xor.csv") && t.data.header);
  CHECK(t.data.loc.line == 14);
  CHECK(t.data.nfields == 2);
  CHECK(!strcmp(t.data.fields[0].name, "x") && t.data.fields[0].first == 0 &&
        t.data.fields[0].count == 2);
  CHECK(!strcmp(t.data.fields[1].name, "y") && t.data.fields[1].first == 2 &&
        t.data.fields[1].count == 1);
  dl_compiler_free(cc);
}

static void test_defaults_and_tensors(void) {
  DlCompiler *cc = dl_compiler_new();
  DlTrainSpec t;
  DlGraph *g = lower_text(cc,
                          "model m { input x : [N, 2]; target y : [N, 1]\n"
                          "  param w : [2, 1] = he\n"
                          "  p = x @ w; q = relu(p)\n"
                          "  loss = mean((q - y)^2)\n"
                          "}\n"
                          "train m { data = tensors(x = [[0, 0], [0, 1], [1, 0]],\n"
                          "                         y = [[0], [1], [1]]) }\n",
                          NULL, &t);
  CHECK(g != NULL);
  if (g) {
    /* No `out` and no `output`: the last variable other than loss. */
    CHECK(g->output == find_named(g, "q"));
    DlNodeId w = find_named(g, "w");
    CHECK(dl_node(g, w)->attr.param.kind == DL_INIT_NORMAL);
    CHECK(fabs(dl_node(g, w)->attr.param.b - 1.0) < 1e-12); /* sqrt(2 / fan_in 2) */
    CHECK(t.present && t.lr == 0.01 && t.epochs == 1 && t.batch == 32 && t.seed == 0);
    CHECK(t.data.kind == DL_DATA_TENSORS && t.data.nfields == 2);
    const DlDataField *fx = &t.data.fields[0];
    CHECK(fx->nrows == 3 && fx->width == 2 && fx->values[3] == 1.0f && fx->values[4] == 1.0f);
    CHECK(t.data.fields[1].nrows == 3 && t.data.fields[1].width == 1);
  }
  dl_compiler_free(cc);
}

static void test_no_inputs_and_output(void) {
  DlCompiler *cc = dl_compiler_new();
  DlTrainSpec t;
  DlGraph *g = lower_text(cc,
                          "model a { input x : [N, 3]; output h; h = softmax(x); "
                          "z = -x^2 }\n"
                          "model matmul { out = [[1,2,3],[4,5,6]] @ [[10,11],[20,21],[30,31]] }\n",
                          "matmul", &t);
  CHECK(g != NULL);
  if (g) {
    CHECK(!t.present);
    CHECK(g->loss == DL_NONE);
    const DlNode *o = dl_node(g, g->output);
    CHECK(o->op == DL_OP_MATMUL && shape_is(o, 2, 2, 2));
    const DlNode *a = dl_node(g, o->in[0]);
    CHECK(a->op == DL_OP_CONST && shape_is(a, 2, 2, 3) && a->attr.konst.data[5] == 6.0f);
  }
  dl_compiler_free(cc);

  cc = dl_compiler_new();
  g = lower_text(cc,
                 "model a { input x : [N, 3]; output h; h = softmax(x); "
                 "z = -x^2 }\n",
                 NULL, NULL);
  CHECK(g != NULL);
  if (g) {
    CHECK(g->output == find_named(g, "h"));
    /* -x^2 is -(x^2) */
    const DlNode *z = dl_node(g, find_named(g, "z"));
    CHECK(z->op == DL_OP_NEG && dl_node(g, z->in[0])->op == DL_OP_POW);
  }
  dl_compiler_free(cc);
}

static void test_losses_and_reductions(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = lower_text(cc,
                          "model m { input z : [N, 3]; target y : [N, 3]\n"
                          "  s = sum(z, axis = -1, keepdim = true)\n"
                          "  c = cross_entropy(z, y)\n"
                          "  b = bce(sigmoid(z), y)\n"
                          "  loss = c + b\n"
                          "}\n",
                          NULL, NULL);
  CHECK(g != NULL);
  if (g) {
    const DlNode *s = dl_node(g, find_named(g, "s"));
    CHECK(s->op == DL_OP_SUM && s->attr.reduce.axes == 2u && s->attr.reduce.keepdim);
    CHECK(shape_is(s, 2, DL_DIM_BATCH, 1));
    CHECK(dl_node(g, find_named(g, "c"))->shape.rank == 0);
    CHECK(dl_node(g, find_named(g, "b"))->shape.rank == 0);
    CHECK(g->loss == find_named(g, "loss"));
    CHECK(dl_graph_verify(g));
  }
  dl_compiler_free(cc);
}

static void test_errors(void) {
  /* Syntax errors: two bad statements, two messages, each at its token. */
  DlCompiler *cc = dl_compiler_new();
  DlAstFile *ast = dl_parse_string(cc, "bad.nnl",
                                   "model m {\n"
                                   "  h = x @ @ W\n"
                                   "  ok = 1\n"
                                   "  g = (x + )\n"
                                   "}\n");
  CHECK(ast != NULL && dl_failed(cc));
  CHECK(count_errors(cc) == 2);
  CHECK(has_diag(cc, DL_SEV_ERROR, 2, 11, "unexpected '@', expected expression"));
  CHECK(has_diag(cc, DL_SEV_ERROR, 4, 12, "unexpected ')'"));
  dl_compiler_free(cc);

  /* Lexical error. */
  cc = dl_compiler_new();
  ast = dl_parse_string(cc, "lex.nnl", "model m {\n  h = 1 ? 2\n}\n");
  CHECK(has_diag(cc, DL_SEV_ERROR, 2, 9, "stray character '?'"));
  CHECK(count_errors(cc) == 1);
  dl_compiler_free(cc);

  /* Name resolution errors, with notes. */
  cc = dl_compiler_new();
  DlGraph *g = lower_text(cc,
                          "model m {\n"
                          "  input x : [N, 2]\n"
                          "  param W1 : [2, 4]\n"
                          "  h = x @ W3\n"
                          "  h = sigmod(x)\n"
                          "  loss = sum(x, axis = 1)\n"
                          "}\n",
                          NULL, NULL);
  CHECK(g == NULL);
  CHECK(has_diag(cc, DL_SEV_ERROR, 4, 11, "unknown name 'W3'"));
  CHECK(has_diag(cc, DL_SEV_NOTE, 4, 11, "did you mean 'W1'?"));
  CHECK(has_diag(cc, DL_SEV_ERROR, 5, 7, "unknown function 'sigmod'"));
  CHECK(has_diag(cc, DL_SEV_ERROR, 5, 3, "redefinition of 'h'"));
  CHECK(has_diag(cc, DL_SEV_NOTE, 4, 3, "previous definition is here"));
  CHECK(has_diag(cc, DL_SEV_ERROR, 6, 3, "'loss' must be a scalar, but its shape is [N]"));
  dl_compiler_free(cc);

  /* Shape errors from the IR constructors land at the operator. */
  cc = dl_compiler_new();
  g = lower_text(cc, "model m {\n  input x : [N, 4]\n  param b : [3]\n  h = x + b\n}\n", NULL,
                 NULL);
  CHECK(g == NULL);
  CHECK(has_diag(cc, DL_SEV_ERROR, 4, 9, "shape mismatch in 'add'"));
  dl_compiler_free(cc);

  /* Train block errors. */
  cc = dl_compiler_new();
  g = lower_text(cc,
                 "model m { input x : [N, 2]; target y : [N, 1]; param w : [2, 1]\n"
                 "  loss = mse(x @ w, y) }\n"
                 "train m {\n"
                 "  data = tensors(x = [[1, 2, 3]], y = [[1]])\n"
                 "  epochs = 0\n"
                 "}\n"
                 "train q { }\n",
                 NULL, NULL);
  CHECK(g == NULL);
  CHECK(has_diag(cc, DL_SEV_ERROR, 4, 22, "'x' has 3 values per row"));
  CHECK(has_diag(cc, DL_SEV_ERROR, 5, 12, "'epochs' must be a positive integer"));
  CHECK(has_diag(cc, DL_SEV_ERROR, 7, 7, "unknown model 'q'"));
  dl_compiler_free(cc);
}

static void test_tokens(void) {
  /* dl_dump_tokens reads a file: write one to the working directory. */
  const char *path = "test_frontend_tokens.nnl";
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  fputs("model xor {\n  h = x @ W1 + .5\n}\n", f);
  fclose(f);
  DlCompiler *cc = dl_compiler_new();
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);
  CHECK(dl_dump_tokens(cc, path, out));
  fclose(out);
  CHECK(strstr(buf, "1:1 MODEL 'model'\n1:7 IDENT 'xor'\n1:11 LBRACE '{'\n1:12 NEWLINE '\\n'\n"));
  CHECK(strstr(buf, "2:9 AT '@'\n2:11 IDENT 'W1'\n2:14 PLUS '+'\n2:16 NUMBER '.5'\n"));
  CHECK(strstr(buf, "3:1 RBRACE '}'\n"));
  free(buf);
  remove(path);
  dl_compiler_free(cc);
}

static void test_ast_print(void) {
  DlCompiler *cc = dl_compiler_new();
  DlAstFile *ast = dl_parse_string(cc, "p.nnl",
                                   "model xor { input x : [N, 2]\n"
                                   "  h = tanh(x @ W1 + b1); out = -h ^ 2 }\n");
  CHECK(ast && !dl_failed(cc));
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);
  dl_ast_print(ast, out);
  fclose(out);
  CHECK(!strcmp(buf, "(model xor\n"
                     "  (input x [N 2])\n"
                     "  (assign h (call tanh (+ (@ x W1) b1)))\n"
                     "  (assign out (- (^ h 2))))\n"));
  free(buf);
  dl_compiler_free(cc);
}

/* Defs, loops and imports through the library API: the import directory
 * comes from dl_frontend_add_import_dir (the driver adds the same). */
static void test_defs_loops_imports(void) {
  const char *root = getenv("DLCC_ROOT");
  CHECK(root != NULL);
  if (!root) return;
  DlCompiler *cc = dl_compiler_new();
  dl_frontend_add_import_dir(cc, dl_arena_printf(cc->arena, "%s/lang", root));
  DlGraph *g = lower_text(cc,
                          "import \"std/nn.nnl\"\n"
                          "def twice(x, k = 2) { return k * x, x }\n"
                          "model m {\n"
                          "  input x : [N, 3, 2]\n"
                          "  h = zeros([N, 4])\n"
                          "  for t in 0..3 { h = rnn_cell(x[:, t, :], h) as cell }\n"
                          "  a, b = twice(h)\n"
                          "  out = dense(a, 1, act = sigmoid)\n"
                          "}\n",
                          NULL, NULL);
  if (!g) dl_diag_render(cc, stdout, false);
  CHECK(g != NULL);
  if (g) {
    int wx = 0, heads = 0;
    for (int i = 0; i < g->nnodes; i++) {
      const DlNode *nd = &g->nodes[i];
      if (nd->op != DL_OP_PARAM) continue;
      wx += !strcmp(nd->name, "cell.Wx");
      heads += !strcmp(nd->name, "out.W");
    }
    CHECK(wx == 1 && heads == 1); /* shared by the three steps */
    CHECK(g->output != DL_NONE && dl_node(g, g->output)->op == DL_OP_SIGMOID);
    CHECK(shape_is(dl_node(g, g->output), 2, DL_DIM_BATCH, 1));
    CHECK(dl_graph_verify(g));
  }
  dl_compiler_free(cc);

  /* Without the directory, the library is not found: an error at the import. */
  cc = dl_compiler_new();
  DlAstFile *ast = dl_parse_string(cc, "lib.nnl", "import \"std/nn.nnl\"\n");
  CHECK(ast != NULL && dl_failed(cc));
  CHECK(has_diag(cc, DL_SEV_ERROR, 1, 8, "cannot find imported file 'std/nn.nnl'"));
  dl_compiler_free(cc);
}

int main(void) {
  test_xor();
  test_defaults_and_tensors();
  test_no_inputs_and_output();
  test_losses_and_reductions();
  test_errors();
  test_tokens();
  test_ast_print();
  test_defs_loops_imports();
  if (check_failures) {
    printf("%d check(s) failed\n", check_failures);
    return 1;
  }
  printf("all frontend tests passed\n");
  return 0;
}
