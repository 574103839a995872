/* test_simplify.c - the simplification pass (passes/simplify.c) and the
 * liveness-based memory plan (passes/plan.c).
 *
 * Simplification: each rule fires where it should and declines where it
 * must not, and a graph computes the same values (reference interpreter)
 * before and after.  Memory: in every entry, no two buffers that are live at
 * the same time overlap in the arena, persistent tensors keep their own
 * memory, and buffers do get shared.
 */
#include "../../frontend/frontend.h"
#include "../../passes/passes.h"
#include "check.h"

#include <math.h>
#include <stdlib.h>

#define N DL_DIM_BATCH
#define L DL_NOLOC

static DlShape shp(int rank, int64_t d0, int64_t d1) {
  return dl_shape_make(rank, (int64_t[]){d0, d1});
}

/* Interpret the output at batch 3 with deterministic leaf values. */
static double *eval_output(DlGraph *g, int64_t n) {
  DlInterp it;
  dl_interp_init(&it, g, n);
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    const DlNode *nd = &g->nodes[id];
    if (nd->op != DL_OP_INPUT && nd->op != DL_OP_PARAM && nd->op != DL_OP_HYPER) continue;
    int64_t count = dl_shape_numel(&nd->shape, n);
    double *v = malloc(sizeof(double) * (size_t)(count ? count : 1));
    for (int64_t i = 0; i < count; i++)
      v[i] = sin(1.0 + (double)id * 7.0 + (double)i * 0.37);
    it.values[id] = v;
    it.owned[id] = true;
  }
  dl_interp_run(&it, NULL, 0);
  int64_t count = dl_shape_numel(&g->nodes[g->output].shape, n);
  double *out = malloc(sizeof(double) * (size_t)count);
  for (int64_t i = 0; i < count; i++)
    out[i] = it.values[g->output][i];
  dl_interp_free(&it);
  return out;
}

static void test_rules(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "rules");
  DlNodeId x = dl_input(g, L, "x", shp(2, N, 4), DL_ROLE_INPUT);
  DlNodeId v = dl_param(g, L, "v", shp(1, 4, 0), (DlInit){.kind = DL_INIT_ZERO});
  DlNodeId one = dl_const_scalar(g, L, 1), zero = dl_const_scalar(g, L, 0);
  DlNodeId x1 = dl_binary(g, DL_OP_MUL, L, x, one);                       /* -> x */
  DlNodeId x0 = dl_binary(g, DL_OP_ADD, L, dl_const_scalar(g, L, 0), x1); /* -> x */
  DlNodeId xd = dl_binary(g, DL_OP_DIV, L, x0, one);                      /* -> x */
  DlNodeId nn = dl_unary(g, DL_OP_NEG, L, dl_unary(g, DL_OP_NEG, L, xd)); /* -> x */
  DlNodeId xz = dl_binary(g, DL_OP_MUL, L, nn, zero);                     /* kept: x may be inf */
  /* v (shape [4]) * ones [N, 4]-broadcast: the identity would lose the
   * broadcast, so it stays. */
  DlNodeId vb = dl_binary(g, DL_OP_MUL, L, v, dl_const_fill(g, L, shp(2, 3, 4), 1));
  DlNodeId e1 = dl_unary(g, DL_OP_EXP, L, x), e2 = dl_unary(g, DL_OP_EXP, L, x); /* merged */
  DlNodeId s0 = dl_reduce(g, DL_OP_SUM, L, e1, 1u, true);                        /* axis 0 ... */
  DlNodeId s1 = dl_reduce(g, DL_OP_SUM, L, e2, 2u, true); /* ... and axis 1: distinct */
  DlNodeId c = dl_binary(g, DL_OP_MUL, L, dl_const_scalar(g, L, 3), dl_const_scalar(g, L, 4));
  DlNodeId r = dl_reshape(g, L, dl_reshape(g, L, x, shp(2, N, 4)), shp(2, N, 4)); /* -> x */
  DlNodeId r2 = dl_reshape(g, L, dl_reshape(g, L, vb, shp(2, 4, 3)), shp(2, 2, 6));
  DlNodeId sum = dl_binary(g, DL_OP_ADD, L, xz, dl_binary(g, DL_OP_MUL, L, s0, s1));
  sum = dl_binary(g, DL_OP_ADD, L, sum, dl_binary(g, DL_OP_MUL, L, c, r));
  g->output = dl_binary(g, DL_OP_ADD, L, sum, dl_reduce(g, DL_OP_SUM, L, r2, 0, false));
  CHECK(!dl_failed(cc));
  double *before = eval_output(g, 3);

  DlSimplifyStats st;
  CHECK(dl_simplify(g, &st));
  double *after = eval_output(g, 3);
  for (int i = 0; i < 12; i++)
    CHECK(fabs(before[i] - after[i]) <= 1e-6 * (1 + fabs(before[i])));
  free(before);
  free(after);

  const DlNode *nxz = &g->nodes[xz];
  CHECK(nxz->op == DL_OP_MUL && nxz->in[0] == x); /* x*1, 0+x, x/1, -(-x) all gone */
  CHECK(g->nodes[vb].in[0] == v);                 /* the broadcasting v * 1 stays */
  const DlNode *ns1 = &g->nodes[s1];
  CHECK(ns1->in[0] == e1); /* exp(x) computed once */
  CHECK(g->nodes[s0].in[0] == e1 && s0 != s1);
  CHECK(g->nodes[c].op == DL_OP_CONST && g->nodes[c].attr.konst.value == 12);
  /* reshape(reshape(x)) to x's own shape is x: the mul reads x. */
  DlNodeId crd = DL_NONE;
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == DL_OP_MUL && g->nodes[id].in[0] == c) crd = id;
  CHECK(crd != DL_NONE && g->nodes[crd].in[1] == x);
  /* reshape(reshape(vb)) reads vb directly. */
  CHECK(g->nodes[r2].op == DL_OP_RESHAPE && g->nodes[r2].in[0] == vb);
  CHECK(st.merged >= 2 && st.folded >= 1 && st.identities >= 5);
  dl_compiler_free(cc);
}

static void test_keeps_leaves_and_updates(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "leaves");
  DlInit init = {.kind = DL_INIT_UNIFORM, .a = -1, .b = 1};
  DlNodeId p = dl_param(g, L, "p", shp(1, 4, 0), init);
  DlNodeId q = dl_param(g, L, "q", shp(1, 4, 0), init);
  DlNodeId x = dl_input(g, L, "x", shp(1, 4, 0), DL_ROLE_INPUT);
  DlNodeId y = dl_input(g, L, "y", shp(1, 4, 0), DL_ROLE_INPUT);
  g->output = dl_binary(g, DL_OP_ADD, L, dl_binary(g, DL_OP_MUL, L, p, x),
                        dl_binary(g, DL_OP_MUL, L, q, y));
  DlNodeId a1 = dl_assign(g, L, p, x), a2 = dl_assign(g, L, p, x);
  CHECK(dl_simplify(g, NULL));
  /* Equal-looking parameters, inputs and updates are distinct values. */
  const DlNode *out = &g->nodes[g->output];
  CHECK(g->nodes[out->in[0]].in[0] == p && g->nodes[out->in[1]].in[0] == q);
  CHECK(g->nodes[out->in[1]].in[1] == y);
  CHECK(g->nodes[a1].op == DL_OP_ASSIGN && g->nodes[a2].op == DL_OP_ASSIGN);
  dl_compiler_free(cc);
}

/* ---- memory plan ---- */

static const char mlp_src[] = "model mlp {\n"
                              "  input  x : [N, 12]\n"
                              "  target y : [N, 3]\n"
                              "  param W1 : [12, 16] = uniform(-1, 1)\n"
                              "  param b1 : [16] = 0\n"
                              "  param W2 : [16, 8] = uniform(-1, 1)\n"
                              "  param b2 : [8] = 0\n"
                              "  param W3 : [8, 3] = uniform(-1, 1)\n"
                              "  h1 = tanh(x @ W1 + b1)\n"
                              "  h2 = relu(h1 @ W2 + b2)\n"
                              "  out = h2 @ W3\n"
                              "  loss = cross_entropy(out, y)\n"
                              "}\n";

static bool ranges_overlap(int64_t a, int64_t asz, int64_t b, int64_t bsz) {
  return a < b + bsz && b < a + asz;
}

static DlNodeId buffer_of(const DlGraph *g, DlNodeId id) {
  while (g->nodes[id].op == DL_OP_RESHAPE || g->nodes[id].op == DL_OP_ASSIGN)
    id = g->nodes[id].in[0];
  return id;
}

static void test_memory_plan(void) {
  DlCompiler *cc = dl_compiler_new();
  DlTrainSpec train;
  DlAstFile *ast = dl_parse_string(cc, "mlp.nnl", mlp_src);
  DlGraph *g = ast ? dl_lower(cc, ast, NULL, &train) : NULL;
  CHECK(g && dl_autodiff(g) && dl_append_sgd(g, 0.1) && dl_simplify(g, NULL));
  DlProgram *p = g ? dl_plan(g, 32) : NULL;
  CHECK(p != NULL);
  if (!p) {
    dl_compiler_free(cc);
    return;
  }
  int nn = g->nnodes;
  /* Persistent: leaves, output, loss, gradients. */
  bool *persistent = calloc((size_t)nn, sizeof(bool));
  for (DlNodeId id = 0; id < nn; id++)
    persistent[id] = dl_op_info[g->nodes[id].op].kind == DL_KIND_LEAF && p->offset[id] >= 0;
  persistent[buffer_of(g, g->output)] = persistent[buffer_of(g, g->loss)] = true;
  for (DlNodeId id = 0; id < g->ngrad; id++)
    if (g->nodes[id].op == DL_OP_PARAM && g->grad[id] != DL_NONE)
      persistent[buffer_of(g, g->grad[id])] = true;
  /* Persistent buffers overlap nothing. */
  for (DlNodeId a = 0; a < nn; a++)
    for (DlNodeId b = 0; b < nn; b++)
      if (a != b && persistent[a] && p->offset[b] >= 0 && buffer_of(g, b) == b)
        CHECK(!ranges_overlap(p->offset[a], p->size[a], p->offset[b], p->size[b]));
  /* Per entry: a buffer is live from its kernel to its last reader; two
   * buffers live at once do not overlap. */
  int *first = malloc(sizeof(int) * (size_t)nn), *last = malloc(sizeof(int) * (size_t)nn);
  for (int e = 0; e < DL_ENTRY_COUNT; e++) {
    const DlEntry *en = &p->entry[e];
    CHECK(en->present);
    for (DlNodeId id = 0; id < nn; id++)
      first[id] = last[id] = -1;
    for (int pos = 0; pos < en->nnodes; pos++) {
      const DlNode *nd = &g->nodes[en->nodes[pos]];
      DlNodeId b = buffer_of(g, en->nodes[pos]);
      if (first[b] < 0) first[b] = pos;
      last[b] = pos;
      for (int i = 0; i < nd->nin; i++) {
        DlNodeId ib = buffer_of(g, nd->in[i]);
        if (first[ib] < 0) first[ib] = pos;
        last[ib] = pos;
      }
    }
    for (DlNodeId a = 0; a < nn; a++)
      for (DlNodeId b = a + 1; b < nn; b++)
        if (first[a] >= 0 && first[b] >= 0 && first[a] <= last[b] && first[b] <= last[a])
          CHECK(!ranges_overlap(p->offset[a], p->size[a], p->offset[b], p->size[b]));
  }
  DlPlanStats st;
  dl_plan_stats(p, &st);
  CHECK(st.arena_bytes < st.buffer_bytes); /* something is shared */
  CHECK(st.arena_bytes == p->mem_floats * 4);
  CHECK(st.kernels[DL_ENTRY_FORWARD] > 0 && st.kernels[DL_ENTRY_TRAIN] > st.kernels[DL_ENTRY_GRAD]);
  /* forward matmuls alone: 2 * 32 * (12*16 + 16*8 + 8*3) */
  CHECK(st.flops[DL_ENTRY_FORWARD] > 2.0 * 32 * (12 * 16 + 16 * 8 + 8 * 3));
  free(first);
  free(last);
  free(persistent);
  dl_compiler_free(cc);
}

int main(void) {
  test_rules();
  test_keeps_leaves_and_updates();
  test_memory_plan();
  if (check_failures) fprintf(stderr, "test_simplify: %d checks failed\n", check_failures);
  return check_failures != 0;
}
