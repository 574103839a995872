/* test_ir.c - unit tests of the IR core: arena, diagnostics, shapes, the
 * constructors' shape rules, the reference interpreter, autodiff and the
 * planner. */
#include "check.h"
#include "../../ir/ir.h"
#include "../../passes/passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static DlShape shp(int rank, ...) {
  va_list ap;
  va_start(ap, rank);
  DlShape s = {0};
  s.rank = rank;
  for (int i = 0; i < rank; i++)
    s.d[i] = va_arg(ap, int64_t);
  va_end(ap);
  return s;
}

static void test_arena(void) {
  DlArena *a = dl_arena_new();
  char *big = dl_arena_alloc(a, 200000); /* larger than a chunk */
  CHECK(big[0] == 0 && big[199999] == 0);
  int *small = dl_arena_alloc(a, 3 * sizeof(int));
  CHECK(((uintptr_t)small & 15) == 0);
  CHECK(!strcmp(dl_arena_printf(a, "%s-%d", "x", 42), "x-42"));
  dl_arena_free(a);
}

static void test_diagnostics(void) {
  DlCompiler *cc = dl_compiler_new();
  dl_source_add(cc, "m.nnl", "model m {\n  h = x @ W\n}\n", 24);
  dl_error(cc, (DlLoc){"m.nnl", 2, 7}, "unknown name '%s'", "x");
  CHECK(dl_failed(cc));
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  dl_diag_render(cc, f, false);
  fclose(f);
  CHECK(strstr(buf, "m.nnl:2:7: error: unknown name 'x'\n  h = x @ W\n      ^\n") != NULL);
  free(buf);
  dl_compiler_free(cc);
}

static void test_shapes(void) {
  DlShape a = shp(2, DL_DIM_BATCH, (int64_t)4), b = shp(1, (int64_t)4), out;
  CHECK(dl_shape_broadcast(&a, &b, &out) && dl_shape_eq(&out, &a));
  DlShape c = shp(2, (int64_t)3, (int64_t)1);
  CHECK(dl_shape_broadcast(&c, &b, &out) && out.rank == 2 && out.d[0] == 3 && out.d[1] == 4);
  DlShape d = shp(1, (int64_t)3);
  CHECK(!dl_shape_broadcast(&a, &d, &out));
  CHECK(dl_shape_numel(&a, 5) == 20);
  char buf[64];
  CHECK(!strcmp(dl_shape_str(&a, buf, sizeof buf), "[N, 4]"));
  CHECK(!strcmp(dl_shape_str(&(DlShape){0}, buf, sizeof buf), "[]"));
}

static void test_shape_errors(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "m");
  DlNodeId x = dl_input(g, DL_NOLOC, "x", shp(2, DL_DIM_BATCH, (int64_t)2), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, DL_NOLOC, "W", shp(2, (int64_t)3, (int64_t)4), (DlInit){0});
  DlLoc at = {"m.nnl", 3, 9};
  CHECK(dl_matmul(g, at, x, w, false, false) == DL_NONE);
  CHECK(cc->ndiags == 1 && cc->diags[0].loc.col == 9);
  CHECK(strstr(cc->diags[0].msg, "'matmul': [N, 2] @ [3, 4]") != NULL);
  /* A failed input propagates without a second message. */
  CHECK(dl_unary(g, DL_OP_TANH, at, DL_NONE) == DL_NONE);
  CHECK(cc->ndiags == 1);
  DlNodeId b = dl_param(g, DL_NOLOC, "b", shp(1, (int64_t)3), (DlInit){0});
  CHECK(dl_binary(g, DL_OP_ADD, at, x, b) == DL_NONE);
  CHECK(strstr(cc->diags[1].msg, "shape mismatch in 'add': [N, 2] vs [3]") != NULL);
  dl_compiler_free(cc);
}

/* [[1,2,3],[4,5,6]] @ [[10,11],[20,21],[30,31]] in the interpreter. */
static void test_interp_matmul(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "m");
  float a[] = {1, 2, 3, 4, 5, 6}, b[] = {10, 11, 20, 21, 30, 31};
  DlNodeId na = dl_const_data(g, DL_NOLOC, shp(2, (int64_t)2, (int64_t)3), a);
  DlNodeId nb = dl_const_data(g, DL_NOLOC, shp(2, (int64_t)3, (int64_t)2), b);
  DlNodeId c = dl_matmul(g, DL_NOLOC, na, nb, false, false);
  /* The same product through the transposed forms. */
  DlNodeId c2 = dl_matmul(g, DL_NOLOC, nb, na, true, true); /* (a b)^T */
  DlInterp it;
  dl_interp_init(&it, g, 1);
  dl_interp_run(&it, NULL, 0);
  const double *r = it.values[c];
  CHECK(r[0] == 140 && r[1] == 146 && r[2] == 320 && r[3] == 335);
  const double *r2 = it.values[c2];
  CHECK(r2[0] == 140 && r2[1] == 320 && r2[2] == 146 && r2[3] == 335);
  dl_interp_free(&it);
  dl_compiler_free(cc);
}

/* Loss of a small graph, for finite differences. */
static double eval_loss(DlGraph *g, DlNodeId loss, double **leaves, int64_t n) {
  DlInterp it;
  dl_interp_init(&it, g, n);
  for (int i = 0; i < g->nnodes; i++)
    if (leaves[i]) it.values[i] = leaves[i];
  DlNodeId *ids = malloc(sizeof(DlNodeId) * (size_t)(loss + 1));
  for (DlNodeId i = 0; i <= loss; i++)
    ids[i] = i;
  dl_interp_run(&it, ids, loss + 1);
  free(ids);
  double l = it.values[loss][0];
  dl_interp_free(&it);
  return l;
}

static void test_autodiff(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "m");
  DlNodeId x = dl_input(g, DL_NOLOC, "x", shp(2, DL_DIM_BATCH, (int64_t)3), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, DL_NOLOC, "W", shp(2, (int64_t)3, (int64_t)2), (DlInit){0});
  DlNodeId b = dl_param(g, DL_NOLOC, "b", shp(1, (int64_t)2), (DlInit){0});
  DlNodeId h =
      dl_unary(g, DL_OP_TANH, DL_NOLOC,
               dl_binary(g, DL_OP_ADD, DL_NOLOC, dl_matmul(g, DL_NOLOC, x, w, false, false), b));
  DlNodeId s = dl_softmax(g, DL_OP_LOG_SOFTMAX, DL_NOLOC, h);
  g->loss = dl_reduce(g, DL_OP_MEAN, DL_NOLOC, dl_binary(g, DL_OP_MUL, DL_NOLOC, s, h), 0, false);
  CHECK(!dl_failed(cc));
  CHECK(dl_autodiff(g));
  CHECK(g->grad[w] != DL_NONE && g->grad[b] != DL_NONE && g->grad[x] == DL_NONE);
  CHECK(dl_shape_eq(&g->nodes[g->grad[w]].shape, &g->nodes[w].shape));
  CHECK(dl_shape_eq(&g->nodes[g->grad[b]].shape, &g->nodes[b].shape));

  int64_t n = 4;
  double xv[12], wv[6], bv[2];
  for (int i = 0; i < 12; i++)
    xv[i] = sin(i + 1.0);
  for (int i = 0; i < 6; i++)
    wv[i] = cos(i * 0.7);
  bv[0] = 0.1;
  bv[1] = -0.2;
  double **leaves = calloc((size_t)g->nnodes, sizeof(double *));
  leaves[x] = xv;
  leaves[w] = wv;
  leaves[b] = bv;
  DlInterp it;
  dl_interp_init(&it, g, n);
  it.values[x] = xv;
  it.values[w] = wv;
  it.values[b] = bv;
  dl_interp_run(&it, NULL, 0);
  for (int i = 0; i < 6; i++) {
    double saved = wv[i], hstep = 1e-6;
    wv[i] = saved + hstep;
    double up = eval_loss(g, g->loss, leaves, n);
    wv[i] = saved - hstep;
    double down = eval_loss(g, g->loss, leaves, n);
    wv[i] = saved;
    double num = (up - down) / (2 * hstep);
    CHECK(fabs(num - it.values[g->grad[w]][i]) < 1e-7);
  }
  dl_interp_free(&it);

  /* The update and the plan: three entries, params keep their slots. */
  CHECK(dl_append_sgd(g, 0.1));
  DlProgram *p = dl_plan(g, 8);
  CHECK(p && p->entry[DL_ENTRY_FORWARD].present && p->entry[DL_ENTRY_TRAIN].present);
  CHECK(p->offset[w] >= 0 && p->offset[b] >= 0 && p->offset[w] % 16 == 0);
  int nassign = 0;
  const DlEntry *t = &p->entry[DL_ENTRY_TRAIN];
  for (int i = 0; i < t->nkernels; i++)
    if (g->nodes[p->kernels[t->kernels[i]].root].op == DL_OP_ASSIGN) {
      nassign++;
      CHECK(i >= t->nkernels - 2); /* updates come last */
    }
  CHECK(nassign == 2);
  /* The forward entry computes no gradients. */
  for (int i = 0; i < p->entry[DL_ENTRY_FORWARD].nnodes; i++)
    CHECK(p->entry[DL_ENTRY_FORWARD].nodes[i] <= g->loss);
  free(leaves);
  dl_compiler_free(cc);
}

int main(void) {
  test_arena();
  test_diagnostics();
  test_shapes();
  test_shape_errors();
  test_interp_matmul();
  test_autodiff();
  if (check_failures) {
    printf("%d checks failed\n", check_failures);
    return 1;
  }
  printf("test_ir: all checks passed\n");
  return 0;
}
