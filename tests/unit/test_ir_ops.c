/* test_ir_ops.c - the shape rules, error messages and printed form of the
 * layout, indexing, convolution, pooling and dropout ops, and a few values of
 * the reference interpreter worked out by hand. */
#include "check.h"
#include "../../ir/ir.h"
#include "../../passes/passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N DL_DIM_BATCH
#define SHAPE(...)                                                                                 \
  dl_shape_make((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

static const DlLoc at = {"m.nnl", 3, 9};

static bool shape_is(const DlGraph *g, DlNodeId id, const char *want) {
  char buf[128];
  if (id == DL_NONE) return false;
  dl_shape_str(&g->nodes[id].shape, buf, sizeof buf);
  if (strcmp(buf, want) == 0) return true;
  fprintf(stderr, "shape %s, want %s\n", buf, want);
  return false;
}

/* The constructor failed with exactly one error at `at` that contains want. */
static bool fails_with(DlCompiler *cc, DlNodeId id, const char *want) {
  bool ok = id == DL_NONE && cc->ndiags == 1 && cc->diags[0].loc.line == at.line &&
            cc->diags[0].loc.col == at.col && strstr(cc->diags[0].msg, want);
  if (!ok)
    fprintf(stderr, "expected one error containing \"%s\", got %d: %s\n", want, cc->ndiags,
            cc->ndiags ? cc->diags[0].msg : "(none)");
  dl_diag_clear(cc);
  return ok;
}

static void test_shapes(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "m");
  DlNodeId x = dl_input(g, at, "x", SHAPE(N, 3, 8, 6), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, at, "w", SHAPE(4, 3, 3, 3), (DlInit){.kind = DL_INIT_ZERO});
  CHECK(shape_is(g, dl_permute(g, at, x, (int[]){0, 2, 3, 1}), "[N, 8, 6, 3]"));
  CHECK(shape_is(g, dl_slice(g, at, x, (int64_t[]){0, 1, 2, 0}, (int64_t[]){N, 3, 7, 6}),
                 "[N, 2, 5, 6]"));
  CHECK(shape_is(g, dl_pad(g, at, x, (int64_t[]){0, 0, 1, 2}, (int64_t[]){0, 1, 1, 0}),
                 "[N, 4, 10, 8]"));
  CHECK(shape_is(g, dl_concat(g, at, x, x, 1), "[N, 6, 8, 6]"));
  DlNodeId table = dl_param(g, at, "emb", SHAPE(10, 4), (DlInit){.kind = DL_INIT_ZERO});
  DlNodeId tok = dl_input(g, at, "tok", SHAPE(N, 7), DL_ROLE_INPUT);
  DlNodeId e = dl_gather(g, at, table, tok);
  CHECK(shape_is(g, e, "[N, 7, 4]"));
  CHECK(shape_is(g, dl_scatter_add(g, at, e, tok, SHAPE(10, 4)), "[10, 4]"));
  CHECK(shape_is(g, dl_one_hot(g, at, tok, 5), "[N, 7, 5]"));
  CHECK(shape_is(g, dl_compare(g, DL_OP_GT, at, x, dl_const_scalar(g, at, 0)), "[N, 3, 8, 6]"));
  DlNodeId y = dl_conv2d(g, at, x, w, 2, 1, 1, 0);
  CHECK(shape_is(g, y, "[N, 4, 4, 4]"));
  CHECK(shape_is(g, dl_conv2d_grad_input(g, at, y, w, SHAPE(N, 3, 8, 6), 2, 1, 1, 0),
                 "[N, 3, 8, 6]"));
  CHECK(shape_is(g, dl_conv2d_grad_filter(g, at, x, y, SHAPE(4, 3, 3, 3), 2, 1, 1, 0),
                 "[4, 3, 3, 3]"));
  DlNodeId p = dl_pool2d(g, DL_OP_MAXPOOL2D, at, x, 3, 2, 2, 2);
  CHECK(shape_is(g, p, "[N, 3, 3, 3]"));
  CHECK(shape_is(g, dl_maxpool2d_grad(g, at, x, p, 3, 2, 2, 2), "[N, 3, 8, 6]"));
  CHECK(shape_is(g, dl_avgpool2d_grad(g, at, p, SHAPE(N, 3, 8, 6), 3, 2, 2, 2), "[N, 3, 8, 6]"));
  CHECK(shape_is(g, dl_reduce(g, DL_OP_MAX, at, x, 6, true), "[N, 1, 1, 6]"));
  /* Dropout creates the hyper leaves once. */
  DlNodeId d1 = dl_dropout(g, at, x, 0.5), d2 = dl_dropout(g, at, y, 0.1);
  CHECK(shape_is(g, d1, "[N, 3, 8, 6]") && shape_is(g, d2, "[N, 4, 4, 4]"));
  int hypers = 0;
  for (DlNodeId id = 0; id < g->nnodes; id++)
    hypers += g->nodes[id].op == DL_OP_HYPER;
  CHECK(hypers == 2);
  CHECK(g->nodes[d1].in[1] == g->nodes[d2].in[1] && g->nodes[d1].in[2] == g->nodes[d2].in[2]);
  CHECK(!strcmp(g->nodes[g->nodes[d1].in[1]].name, "train.mode"));
  CHECK(!strcmp(g->nodes[g->nodes[d1].in[2]].name, "train.seed"));
  CHECK(g->nodes[d1].attr.dropout.stream == (uint64_t)d1 &&
        g->nodes[d2].attr.dropout.stream == (uint64_t)d2);
  CHECK(!dl_failed(cc));
  CHECK(dl_graph_verify(g));
  dl_compiler_free(cc);
}

static void test_errors(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "m");
  DlNodeId x = dl_input(g, at, "x", SHAPE(N, 3, 8, 6), DL_ROLE_INPUT);
  DlNodeId v = dl_input(g, at, "v", SHAPE(N, 5), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, at, "w", SHAPE(4, 2, 3, 3), (DlInit){.kind = DL_INIT_ZERO});
  CHECK(fails_with(cc, dl_permute(g, at, v, (int[]){1, 1}),
                   "shape mismatch in 'permute': [1, 1] is not a permutation of the 2 axes of "
                   "[N, 5]"));
  CHECK(fails_with(cc, dl_slice(g, at, v, (int64_t[]){1, 0}, (int64_t[]){N, 5}),
                   "shape mismatch in 'slice': axis 0 of [N, 5] is the batch dimension N"));
  CHECK(fails_with(cc, dl_slice(g, at, v, (int64_t[]){0, 3}, (int64_t[]){N, 6}),
                   "shape mismatch in 'slice': 3:6 is not a non-empty range within axis 1 of "
                   "[N, 5]"));
  CHECK(fails_with(cc, dl_slice(g, at, v, (int64_t[]){0, 2}, (int64_t[]){N, 2}),
                   "2:2 is not a non-empty range"));
  CHECK(fails_with(cc, dl_pad(g, at, v, (int64_t[]){1, 0}, (int64_t[]){0, 0}),
                   "axis 0 of [N, 5] is the batch dimension N, which cannot be padded"));
  CHECK(
      fails_with(cc, dl_pad(g, at, v, (int64_t[]){0, -1}, (int64_t[]){0, 0}), "negative padding"));
  CHECK(fails_with(cc, dl_concat(g, at, x, v, 1),
                   "shape mismatch in 'concat': [N, 3, 8, 6] and "
                   "[N, 5] along axis 1"));
  CHECK(fails_with(cc, dl_concat(g, at, v, v, 0), "the batch dimension N"));
  DlNodeId v4 = dl_input(g, at, "v4", SHAPE(N, 4), DL_ROLE_INPUT);
  CHECK(fails_with(cc,
                   dl_concat(g, at, x, dl_input(g, at, "z", SHAPE(N, 3, 7, 5), DL_ROLE_INPUT), 1),
                   "differ in axis 2 (concatenating along axis 1)"));
  CHECK(fails_with(cc, dl_gather(g, at, v, v4), "shape mismatch in 'gather': the table [N, 5]"));
  DlNodeId t = dl_param(g, at, "t", SHAPE(10, 4), (DlInit){.kind = DL_INIT_ZERO});
  CHECK(fails_with(cc, dl_scatter_add(g, at, v, v4, SHAPE(10, 4)),
                   "shape mismatch in 'scatter_add': values [N, 5] do not match indices [N, 4] "
                   "into [10, 4] (expected [N, 4, 4])"));
  CHECK(fails_with(cc, dl_one_hot(g, at, v, 0), "shape mismatch in 'one_hot': labels [N, 5]"));
  CHECK(fails_with(cc, dl_compare(g, DL_OP_GT, at, v, v4),
                   "shape mismatch in 'gt': [N, 5] vs [N, 4]"));
  CHECK(fails_with(cc, dl_compare(g, DL_OP_ADD, at, v, v), "is not a comparison"));
  CHECK(fails_with(cc, dl_conv2d(g, at, x, w, 1, 1, 0, 0),
                   "shape mismatch in 'conv2d': input [N, 3, 8, 6] has 3 channels, filter "
                   "[4, 2, 3, 3] expects 2"));
  CHECK(fails_with(cc, dl_conv2d(g, at, v, w, 1, 1, 0, 0),
                   "shape mismatch in 'conv2d': input [N, 5] and filter [4, 2, 3, 3] must be"));
  DlNodeId big = dl_param(g, at, "big", SHAPE(1, 3, 9, 3), (DlInit){.kind = DL_INIT_ZERO});
  CHECK(fails_with(cc, dl_conv2d(g, at, x, big, 1, 1, 0, 0),
                   "filter [1, 3, 9, 3] is larger than input [N, 3, 8, 6] with padding 0, 0"));
  CHECK(fails_with(cc, dl_conv2d(g, at, x, big, 0, 1, 0, 0), "strides of at least 1"));
  CHECK(fails_with(cc, dl_pool2d(g, DL_OP_MAXPOOL2D, at, x, 9, 2, 1, 1),
                   "shape mismatch in 'maxpool2d': window 9 x 2 is larger than [N, 3, 8, 6]"));
  CHECK(fails_with(cc, dl_pool2d(g, DL_OP_AVGPOOL2D, at, x, 2, 2, 0, 1),
                   "'avgpool2d' needs windows and strides of at least 1"));
  CHECK(fails_with(cc,
                   dl_pool2d(g, DL_OP_AVGPOOL2D, at,
                             dl_input(g, at, "n", SHAPE(3, N), DL_ROLE_INPUT), 2, 2, 1, 1),
                   "needs two last axes of fixed size"));
  CHECK(fails_with(cc, dl_maxpool2d_grad(g, at, x, v, 2, 2, 2, 2),
                   "shape mismatch in 'maxpool2d_grad': gradient [N, 5], expected [N, 3, 4, 3]"));
  CHECK(fails_with(cc, dl_dropout(g, at, v, 1.0), "'dropout' needs a probability in [0, 1)"));
  CHECK(fails_with(cc, dl_dropout(g, at, v, -0.1), "got -0.1"));
  /* DL_NONE in, DL_NONE out, no second message. */
  CHECK(dl_conv2d(g, at, DL_NONE, w, 1, 1, 0, 0) == DL_NONE && cc->ndiags == 0);
  CHECK(dl_gather(g, at, t, DL_NONE) == DL_NONE && dl_dropout(g, at, DL_NONE, 0.5) == DL_NONE);
  CHECK(cc->ndiags == 0);
  dl_compiler_free(cc);
}

static void test_print(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "m");
  DlNodeId x = dl_input(g, at, "x", SHAPE(N, 1, 6, 6), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, at, "w", SHAPE(2, 1, 3, 3), (DlInit){.kind = DL_INIT_ZERO});
  DlNodeId y = dl_conv2d(g, at, x, w, 1, 2, 1, 0);
  y = dl_pool2d(g, DL_OP_MAXPOOL2D, at, y, 2, 2, 2, 1);
  y = dl_pad(g, at, y, (int64_t[]){0, 0, 1, 0}, (int64_t[]){0, 1, 0, 2});
  y = dl_permute(g, at, y, (int[]){0, 3, 1, 2});
  y = dl_slice(g, at, y, (int64_t[]){0, 1, 0, 0}, (int64_t[]){N, 3, 3, 4});
  y = dl_concat(g, at, y, y, 2);
  y = dl_dropout(g, at, y, 0.25);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  dl_graph_print(g, NULL, f);
  fclose(f);
  static const char *const want[] = {
      "%2 = conv2d %0, %1 {stride=[1, 2], pad=[1, 0]} : f32[N, 2, 6, 2]",
      "%3 = maxpool2d %2 {window=[2, 2], stride=[2, 1]} : f32[N, 2, 3, 1]",
      "%4 = pad %3 {before=[0, 0, 1, 0], after=[0, 1, 0, 2]} : f32[N, 3, 4, 3]",
      "%5 = permute %4 {perm=[0, 3, 1, 2]} : f32[N, 3, 3, 4]",
      "%6 = slice %5 {start=[0, 1, 0, 0]} : f32[N, 2, 3, 4]",
      "%7 = concat %6, %6 {axis=2} : f32[N, 2, 6, 4]",
      "%8 = hyper train.mode = 0 : f32[]",
      "%9 = hyper train.seed = 0 : f32[]",
      "%10 = dropout %7, %8, %9 {p=0.25, stream=10} : f32[N, 2, 6, 4]",
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!strstr(buf, want[i])) {
      fprintf(stderr, "printed graph lacks \"%s\":\n%s", want[i], buf);
      check_failures++;
    }
  free(buf);
  dl_compiler_free(cc);
}

/* Interpreter values worked out by hand. */
static void test_interp(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "m");
  /* x = [[1 2 3] [4 5 6] [7 8 9]] as [1, 1, 3, 3]; w = [[1 0] [0 -1]] */
  float xv[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, wv[4] = {1, 0, 0, -1};
  DlNodeId x = dl_const_data(g, at, SHAPE(1, 1, 3, 3), xv);
  DlNodeId w = dl_const_data(g, at, SHAPE(1, 1, 2, 2), wv);
  DlNodeId conv = dl_conv2d(g, at, x, w, 1, 1, 0, 0);   /* x[i][j] - x[i+1][j+1] = -4 */
  DlNodeId padded = dl_conv2d(g, at, x, w, 2, 2, 1, 1); /* corners of the padded input */
  DlNodeId mp = dl_pool2d(g, DL_OP_MAXPOOL2D, at, x, 2, 2, 1, 1);
  DlNodeId ap = dl_pool2d(g, DL_OP_AVGPOOL2D, at, x, 2, 3, 1, 1);
  float tv[6] = {10, 11, 20, 21, 30, 31}, iv[4] = {2, -1, 1.7f, 9};
  DlNodeId table = dl_const_data(g, at, SHAPE(3, 2), tv);
  DlNodeId idx = dl_const_data(g, at, SHAPE(4), iv);
  DlNodeId gath = dl_gather(g, at, table, idx);
  DlNodeId oh = dl_one_hot(g, at, idx, 3);
  DlNodeId mx = dl_reduce(g, DL_OP_MAX, at, x, 8, false); /* the last axis */
  DlInterp it;
  dl_interp_init(&it, g, 1);
  dl_interp_run(&it, NULL, 0);
  for (int i = 0; i < 4; i++)
    CHECK(it.values[conv][i] == -4);
  /* stride 2, padding 1: the tap at (0, 0) reads padding except at the
   * last window: out = [[-x00, -x02], [-x20, x11 - x22]] */
  const double want_padded[4] = {-1, -3, -7, -4};
  for (int i = 0; i < 4; i++)
    CHECK(it.values[padded][i] == want_padded[i]);
  const double want_mp[4] = {5, 6, 8, 9}, want_ap[2] = {3.5, 6.5};
  for (int i = 0; i < 4; i++)
    CHECK(it.values[mp][i] == want_mp[i]);
  for (int i = 0; i < 2; i++)
    CHECK(it.values[ap][i] == want_ap[i]);
  /* rows 2, 0 (clamped), 1 (truncated), 2 (clamped) */
  const double want_g[8] = {30, 31, 10, 11, 20, 21, 30, 31};
  for (int i = 0; i < 8; i++)
    CHECK(it.values[gath][i] == want_g[i]);
  /* one_hot compares exactly: 1.7 and 9 are no class */
  const double want_oh[12] = {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < 12; i++)
    CHECK(it.values[oh][i] == want_oh[i]);
  const double want_mx[3] = {3, 6, 9};
  for (int i = 0; i < 3; i++)
    CHECK(it.values[mx][i] == want_mx[i]);
  dl_interp_free(&it);
  dl_compiler_free(cc);
}

/* Common-subexpression elimination merges equal ops and keeps apart those
 * whose attributes differ (dropouts differ by their streams). */
static void test_cse(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "m");
  DlNodeId x = dl_input(g, at, "x", SHAPE(N, 2, 6, 6), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, at, "w", SHAPE(2, 2, 3, 3), (DlInit){.kind = DL_INIT_ZERO});
  DlNodeId pair[7][2];
  for (int k = 0; k < 2; k++) {
    pair[0][k] = dl_slice(g, at, x, (int64_t[]){0, 0, 1, 0}, (int64_t[]){N, 2, 4, 6});
    pair[1][k] = dl_slice(g, at, x, (int64_t[]){0, 0, k, 0}, (int64_t[]){N, 2, 3 + k, 6});
    pair[2][k] = dl_conv2d(g, at, x, w, 1, 1, 1, 1);
    pair[3][k] = dl_conv2d(g, at, x, w, 1, 1, k, 1 - k);
    pair[4][k] = dl_pool2d(g, DL_OP_MAXPOOL2D, at, x, 2, 2, 2, 1 + k);
    pair[5][k] = dl_permute(g, at, x, k ? (int[]){0, 1, 3, 2} : (int[]){0, 1, 3, 2});
    pair[6][k] = dl_dropout(g, at, x, 0.5);
  }
  const bool merged[7] = {true, false, true, false, false, true, false};
  DlNodeId sum = DL_NONE;
  for (int i = 0; i < 7; i++)
    for (int k = 0; k < 2; k++) {
      DlNodeId r = dl_reduce(g, DL_OP_SUM, at, pair[i][k], 0, false);
      sum = sum == DL_NONE ? r : dl_binary(g, DL_OP_ADD, at, sum, r);
    }
  g->loss = sum;
  CHECK(dl_simplify(g, NULL));
  /* The sums' inputs show which nodes stand for which. */
  int at_sum = 0;
  DlNodeId seen[14];
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == DL_OP_SUM && at_sum < 14) seen[at_sum++] = g->nodes[id].in[0];
  CHECK(at_sum == 14);
  for (int i = 0; at_sum == 14 && i < 7; i++)
    if ((seen[2 * i] == seen[2 * i + 1]) != merged[i]) {
      fprintf(stderr, "pair %d: %s\n", i, merged[i] ? "not merged" : "merged");
      check_failures++;
    }
  dl_compiler_free(cc);
}

int main(void) {
  test_shapes();
  test_errors();
  test_print();
  test_interp();
  test_cse();
  if (check_failures) {
    fprintf(stderr, "test_ir_ops: %d checks failed\n", check_failures);
    return 1;
  }
  printf("test_ir_ops: all checks passed\n");
  return 0;
}
