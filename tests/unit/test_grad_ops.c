/* test_grad_ops.c - gradient checks of the ops of layout, indexing,
 * convolution, pooling and dropout, built with the IR constructors (the
 * language's syntax for them lives in the frontend; tests/gradcheck drives
 * `dlcc gradcheck` on .nnl files).
 *
 * Each case builds y = op(params, inputs) and the loss
 *     L = sum(r * y) + 0.05 * sum(y * y)
 * with r a random input of y's shape, so that every element of y gets its own
 * nonzero adjoint.  Then, as `dlcc gradcheck` does (tools/cmd_gradcheck.c):
 * dl_autodiff's gradient of every parameter, evaluated by the reference
 * interpreter in double precision, against central finite differences of
 * the interpreted loss; and the JIT's float gradient (the `grad` entry, with
 * the CPU's loop nests and with the GPU's kernels) against the exact one.
 */
#include "check.h"
#include "../../codegen/cg_testing.h"
#include "../../codegen/codegen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N DL_DIM_BATCH
#define SHAPE(...)                                                                                 \
  dl_shape_make((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
#define L DL_NOLOC

enum { BATCH = 3, MAX_BATCH = 8, MAX_LEAVES = 8 };

static const double FD_TOL = 1e-6;  /* finite differences vs exact, double precision */
static const double JIT_TOL = 1e-4; /* float kernels vs exact */

static uint64_t rng = 0x243F6A8885A308D3ull;
static double rnd(double lo, double hi) {
  uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return lo + (hi - lo) * ((double)(z >> 11) / 9007199254740992.0);
}

typedef struct GradCase {
  const char *what;
  DlCompiler *cc;
  DlGraph *g;
  int nints; /* leaves holding whole numbers (indices) in [lo, hi] */
  struct {
    DlNodeId id;
    int lo, hi;
  } ints[MAX_LEAVES];
} GradCase;

static GradCase gc_new(const char *what) {
  GradCase c = {.what = what};
  c.cc = dl_compiler_new();
  c.g = dl_graph_new(c.cc, "t");
  return c;
}

static DlNodeId param(GradCase *c, const char *name, DlShape s) {
  return dl_param(c->g, L, name, s, (DlInit){.kind = DL_INIT_ZERO});
}

static DlNodeId index_input(GradCase *c, const char *name, DlShape s, int lo, int hi) {
  DlNodeId id = dl_input(c->g, L, name, s, DL_ROLE_INPUT);
  c->ints[c->nints].id = id;
  c->ints[c->nints].lo = lo;
  c->ints[c->nints].hi = hi;
  c->nints++;
  return id;
}

static void report(GradCase *c) {
  if (c->cc->ndiags) dl_diag_render(c->cc, stderr, false);
}

/* Worst |ref - got| relative to the largest |ref| (as `dlcc gradcheck`). */
static double rel_err(const double *ref, const double *got, int64_t n) {
  double worst = 0, scale = 1e-6;
  for (int64_t i = 0; i < n; i++)
    scale = fmax(scale, fabs(ref[i]));
  for (int64_t i = 0; i < n; i++) {
    double e = fabs(ref[i] - got[i]);
    if (isnan(e)) return INFINITY;
    worst = fmax(worst, e);
  }
  return worst / scale;
}

static void fill_leaf(const GradCase *c, DlNodeId id, double *v, int64_t count) {
  const DlNode *nd = &c->g->nodes[id];
  for (int64_t e = 0; e < count; e++) {
    /* float values, so the JIT sees exactly what the interpreter does */
    v[e] = (float)rnd(-2, 2);
    if (nd->op == DL_OP_HYPER) v[e] = (float)nd->attr.hyper.value;
    for (int k = 0; k < c->nints; k++)
      if (c->ints[k].id == id) v[e] = floor(rnd(c->ints[k].lo, c->ints[k].hi + 1));
  }
}

/* The JIT's gradients (grid: the GPU's kernels) against the exact ones. */
static void check_jit(GradCase *c, double **leaf, DlInterp *it, bool grid) {
  DlGraph *g = c->g;
  DlProgram *prog = dl_plan(g, MAX_BATCH);
  CHECK(prog != NULL);
  if (!prog) return report(c);
  const DlrtProgram *rp = NULL;
  DlCodegenOptions opts = {.target = DL_TARGET_CPU, .opt_level = 2};
  DlJit *jit = grid ? cg_jit_compile_grid_kernels(c->cc, prog, &opts, &rp)
                    : dl_jit_compile(c->cc, prog, &opts, &rp);
  CHECK(jit && rp && rp->grad);
  if (!jit || !rp || !rp->grad) {
    dl_jit_free(jit);
    return report(c);
  }
  float *mem = calloc((size_t)rp->mem_floats, sizeof(float));
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (leaf[id] && prog->offset[id] >= 0)
      for (int64_t e = 0; e < dl_shape_numel(&g->nodes[id].shape, BATCH); e++)
        mem[prog->offset[id] + e] = (float)leaf[id][e];
  for (int i = 0; i < rp->ntensors; i++) {
    const DlrtTensor *t = &rp->tensors[i];
    if (t->role == DLRT_ROLE_CONST)
      for (int64_t e = 0; e < dlrt_numel(t, BATCH); e++)
        mem[t->offset + e] = t->data ? t->data[e] : (float)t->a;
  }
  rp->grad(mem, BATCH, NULL);
  for (DlNodeId p = 0; p < g->ngrad; p++) {
    if (g->nodes[p].op != DL_OP_PARAM || g->grad[p] == DL_NONE) continue;
    int gi = dlrt_find(rp, g->nodes[p].name, DLRT_ROLE_GRAD);
    CHECK(gi >= 0);
    if (gi < 0) continue;
    int64_t count = dl_shape_numel(&g->nodes[p].shape, 1);
    double *got = malloc(sizeof(double) * (size_t)count);
    for (int64_t e = 0; e < count; e++)
      got[e] = mem[rp->tensors[gi].offset + e];
    double err = rel_err(it->values[g->grad[p]], got, count);
    if (!(err <= JIT_TOL)) {
      fprintf(stderr, "%s: %s gradient of %s: relative error %.3g\n", c->what,
              grid ? "GPU-kernel" : "JIT", g->nodes[p].name, err);
      check_failures++;
    }
    free(got);
  }
  free(mem);
  dl_jit_free(jit);
}

/* Add the loss to y, differentiate, and check every parameter's gradient. */
static void gc_run(GradCase *c, DlNodeId y) {
  DlGraph *g = c->g;
  if (y == DL_NONE || dl_failed(c->cc)) {
    fprintf(stderr, "%s: graph construction failed\n", c->what);
    check_failures++;
    report(c);
    dl_compiler_free(c->cc);
    return;
  }
  DlNodeId r = dl_input(g, L, "r", g->nodes[y].shape, DL_ROLE_TARGET);
  DlNodeId lin = dl_reduce(g, DL_OP_SUM, L, dl_binary(g, DL_OP_MUL, L, r, y), 0, false);
  DlNodeId sq = dl_reduce(g, DL_OP_SUM, L, dl_binary(g, DL_OP_MUL, L, y, y), 0, false);
  g->output = y;
  g->loss =
      dl_binary(g, DL_OP_ADD, L, lin, dl_binary(g, DL_OP_MUL, L, dl_const_scalar(g, L, 0.05), sq));
  DlNodeId loss = g->loss;
  bool ok = dl_autodiff(g);
  CHECK(ok);
  if (!ok) {
    report(c);
    dl_compiler_free(c->cc);
    return;
  }
  DlInterp it;
  dl_interp_init(&it, g, BATCH);
  double **leaf = calloc((size_t)g->nnodes, sizeof(double *));
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    DlOp op = g->nodes[id].op;
    if (op != DL_OP_INPUT && op != DL_OP_PARAM && op != DL_OP_HYPER) continue;
    int64_t count = dl_shape_numel(&g->nodes[id].shape, BATCH);
    leaf[id] = malloc(sizeof(double) * (size_t)count);
    fill_leaf(c, id, leaf[id], count);
    it.values[id] = leaf[id];
  }
  dl_interp_run(&it, NULL, 0);
  /* The finite differences re-evaluate the forward graph: the nodes up to
   * the loss. */
  DlNodeId *forward = malloc(sizeof(DlNodeId) * (size_t)(loss + 1));
  for (DlNodeId id = 0; id <= loss; id++)
    forward[id] = id;
  int nparams = 0;
  for (DlNodeId p = 0; p < g->ngrad; p++) {
    if (g->nodes[p].op != DL_OP_PARAM) continue;
    nparams++;
    if (g->grad[p] == DL_NONE) {
      fprintf(stderr, "%s: parameter %s has no gradient\n", c->what, g->nodes[p].name);
      check_failures++;
      continue;
    }
    int64_t count = dl_shape_numel(&g->nodes[p].shape, 1);
    const double *exact = it.values[g->grad[p]];
    double *num = malloc(sizeof(double) * (size_t)count);
    for (int64_t e = 0; e < count; e++) {
      double saved = leaf[p][e], h = 1e-5 * fmax(1.0, fabs(saved));
      leaf[p][e] = saved + h;
      dl_interp_run(&it, forward, loss + 1);
      double up = it.values[loss][0];
      leaf[p][e] = saved - h;
      dl_interp_run(&it, forward, loss + 1);
      double down = it.values[loss][0];
      leaf[p][e] = saved;
      num[e] = (up - down) / (2 * h);
    }
    double err = rel_err(exact, num, count);
    if (!(err <= FD_TOL)) {
      fprintf(stderr, "%s: gradient of %s vs finite differences: relative error %.3g\n", c->what,
              g->nodes[p].name, err);
      check_failures++;
    }
    free(num);
  }
  CHECK(nparams > 0);
  dl_interp_run(&it, forward, loss + 1); /* restore the unperturbed forward values */
  free(forward);
  check_jit(c, leaf, &it, false);
  check_jit(c, leaf, &it, true);
  dl_interp_free(&it);
  for (DlNodeId id = 0; id < g->nnodes; id++)
    free(leaf[id]);
  free(leaf);
  dl_compiler_free(c->cc);
}

/* ---- the cases ---- */

static void test_elementwise_and_reduce(void) {
  GradCase c = gc_new("maximum, broadcast");
  DlNodeId a = param(&c, "a", SHAPE(3, 4)), b = param(&c, "b", SHAPE(4));
  gc_run(&c, dl_binary(c.g, DL_OP_MAXIMUM, L, a, b));

  c = gc_new("maximum with a batch input");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 5), DL_ROLE_INPUT);
  a = param(&c, "a", SHAPE(5));
  gc_run(&c, dl_binary(c.g, DL_OP_MAXIMUM, L, x, a));

  c = gc_new("max over axis 1");
  a = param(&c, "a", SHAPE(3, 5, 2));
  gc_run(&c, dl_reduce(c.g, DL_OP_MAX, L, a, 2, false));

  c = gc_new("max over all axes");
  a = param(&c, "a", SHAPE(2, 3));
  gc_run(&c, dl_reduce(c.g, DL_OP_MAX, L, a, 0, true));

  c = gc_new("max over the batch and axis 2 of x * a");
  x = dl_input(c.g, L, "x", SHAPE(N, 2, 3), DL_ROLE_INPUT);
  a = param(&c, "a", SHAPE(2, 3));
  gc_run(&c, dl_reduce(c.g, DL_OP_MAX, L, dl_binary(c.g, DL_OP_MUL, L, x, a), 5, false));

  /* gt, eq and one_hot carry no gradient: d(a * gt(a, b))/da = gt(a, b). */
  c = gc_new("a * gt(a, x) + a * eq(a, a)");
  a = param(&c, "a", SHAPE(4, 3));
  b = dl_input(c.g, L, "x", SHAPE(N, 4, 3), DL_ROLE_INPUT);
  DlNodeId y = dl_binary(c.g, DL_OP_MUL, L, a, dl_compare(c.g, DL_OP_GT, L, a, b));
  y = dl_binary(c.g, DL_OP_ADD, L, y,
                dl_binary(c.g, DL_OP_MUL, L, a, dl_compare(c.g, DL_OP_EQ, L, a, a)));
  gc_run(&c, y);

  c = gc_new("one_hot(labels) * a");
  DlNodeId labels = index_input(&c, "labels", SHAPE(N, 2), -1, 4);
  a = param(&c, "a", SHAPE(4));
  gc_run(&c, dl_binary(c.g, DL_OP_MUL, L, dl_one_hot(c.g, L, labels, 4), a));
}

static void test_layout(void) {
  GradCase c = gc_new("permute rank 3");
  DlNodeId a = param(&c, "a", SHAPE(2, 3, 4));
  gc_run(&c, dl_permute(c.g, L, a, (int[]){2, 0, 1}));

  c = gc_new("permute rank 4 of a batch");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 2, 1, 3), DL_ROLE_INPUT);
  a = param(&c, "a", SHAPE(2, 1, 3));
  gc_run(&c, dl_permute(c.g, L, dl_binary(c.g, DL_OP_MUL, L, x, a), (int[]){3, 1, 0, 2}));

  c = gc_new("slice at an offset");
  a = param(&c, "a", SHAPE(4, 5));
  gc_run(&c, dl_slice(c.g, L, a, (int64_t[]){1, 2}, (int64_t[]){3, 5}));

  c = gc_new("slice of a batch");
  x = dl_input(c.g, L, "x", SHAPE(N, 6), DL_ROLE_INPUT);
  a = param(&c, "a", SHAPE(6));
  gc_run(&c, dl_slice(c.g, L, dl_binary(c.g, DL_OP_ADD, L, x, a), (int64_t[]){0, 1},
                      (int64_t[]){N, 4}));

  c = gc_new("pad");
  a = param(&c, "a", SHAPE(2, 3));
  gc_run(&c, dl_pad(c.g, L, a, (int64_t[]){1, 0}, (int64_t[]){2, 2}));

  for (int axis = 0; axis < 2; axis++) {
    c = gc_new(axis ? "concat on axis 1" : "concat on axis 0");
    a = param(&c, "a", axis ? SHAPE(2, 3) : SHAPE(1, 3));
    DlNodeId b = param(&c, "b", SHAPE(2, axis ? 2 : 3));
    gc_run(&c, dl_concat(c.g, L, a, b, axis));
  }

  c = gc_new("concat of a batch with itself");
  x = dl_input(c.g, L, "x", SHAPE(N, 2), DL_ROLE_INPUT);
  a = param(&c, "a", SHAPE(2));
  DlNodeId xa = dl_binary(c.g, DL_OP_MUL, L, x, a);
  gc_run(&c, dl_concat(c.g, L, xa, dl_unary(c.g, DL_OP_TANH, L, xa), 1));
}

static void test_indexing(void) {
  GradCase c = gc_new("gather, repeated and clamped indices");
  DlNodeId table = param(&c, "table", SHAPE(6, 4));
  DlNodeId idx = index_input(&c, "idx", SHAPE(N, 3), -1, 7);
  gc_run(&c, dl_gather(c.g, L, table, idx));

  c = gc_new("gather of scalars");
  table = param(&c, "table", SHAPE(5));
  idx = index_input(&c, "idx", SHAPE(N, 4), 0, 4);
  gc_run(&c, dl_gather(c.g, L, table, idx));

  c = gc_new("scatter_add");
  DlNodeId src = param(&c, "src", SHAPE(5, 3));
  idx = index_input(&c, "idx", SHAPE(5), 0, 3);
  gc_run(&c, dl_scatter_add(c.g, L, src, idx, SHAPE(4, 3)));
}

static void test_conv(void) {
  GradCase c = gc_new("conv2d, strides 2 and 1, padding 1 and 0");
  DlNodeId x = param(&c, "x", SHAPE(2, 2, 5, 6)), w = param(&c, "w", SHAPE(3, 2, 3, 3));
  gc_run(&c, dl_conv2d(c.g, L, x, w, 2, 1, 1, 0));

  c = gc_new("conv2d of a batch, padding 1");
  x = dl_input(c.g, L, "x", SHAPE(N, 1, 6, 5), DL_ROLE_INPUT);
  w = param(&c, "w", SHAPE(2, 1, 2, 3));
  gc_run(&c, dl_conv2d(c.g, L, x, w, 1, 1, 1, 1));

  c = gc_new("conv2d, stride 3 leaves rows unused");
  x = param(&c, "x", SHAPE(1, 2, 7, 8));
  w = param(&c, "w", SHAPE(2, 2, 2, 2));
  gc_run(&c, dl_conv2d(c.g, L, x, w, 3, 3, 0, 1));

  /* The gradient ops are ops too, with gradients of their own. */
  c = gc_new("conv2d_grad_input");
  DlNodeId dy = param(&c, "dy", SHAPE(2, 3, 3, 4));
  w = param(&c, "w", SHAPE(3, 2, 3, 3));
  gc_run(&c, dl_conv2d_grad_input(c.g, L, dy, w, SHAPE(2, 2, 5, 6), 2, 1, 1, 0));

  c = gc_new("conv2d_grad_filter");
  x = param(&c, "x", SHAPE(2, 2, 5, 6));
  dy = param(&c, "dy", SHAPE(2, 3, 3, 4));
  gc_run(&c, dl_conv2d_grad_filter(c.g, L, x, dy, SHAPE(3, 2, 3, 3), 2, 1, 1, 0));
}

static void test_pool(void) {
  GradCase c = gc_new("maxpool2d 2x2 stride 2");
  DlNodeId x = param(&c, "x", SHAPE(2, 2, 5, 5));
  gc_run(&c, dl_pool2d(c.g, DL_OP_MAXPOOL2D, L, x, 2, 2, 2, 2));

  c = gc_new("maxpool2d 3x3 stride 1 (overlapping)");
  x = param(&c, "x", SHAPE(1, 5, 6));
  gc_run(&c, dl_pool2d(c.g, DL_OP_MAXPOOL2D, L, x, 3, 3, 1, 1));

  c = gc_new("avgpool2d 3x2 strides 2 and 1");
  x = param(&c, "x", SHAPE(2, 5, 7));
  gc_run(&c, dl_pool2d(c.g, DL_OP_AVGPOOL2D, L, x, 3, 2, 2, 1));

  c = gc_new("avgpool2d of a batch");
  DlNodeId in = dl_input(c.g, L, "in", SHAPE(N, 4, 4), DL_ROLE_INPUT);
  x = param(&c, "x", SHAPE(4, 4));
  gc_run(&c, dl_pool2d(c.g, DL_OP_AVGPOOL2D, L, dl_binary(c.g, DL_OP_MUL, L, in, x), 2, 2, 2, 2));

  c = gc_new("avgpool2d_grad");
  DlNodeId dy = param(&c, "dy", SHAPE(2, 2, 6));
  gc_run(&c, dl_avgpool2d_grad(c.g, L, dy, SHAPE(2, 5, 7), 3, 2, 2, 1));

  c = gc_new("maxpool2d_grad with respect to x (zero)");
  x = param(&c, "x", SHAPE(1, 4, 4));
  DlNodeId dyi = dl_input(c.g, L, "dyi", SHAPE(1, 2, 2), DL_ROLE_INPUT);
  DlNodeId y = dl_maxpool2d_grad(c.g, L, x, dyi, 2, 2, 2, 2);
  /* + x so that the loss depends on x smoothly as well */
  gc_run(&c, dl_binary(c.g, DL_OP_ADD, L, y, x));
}

static void test_dropout(void) {
  for (int train = 0; train < 2; train++) {
    GradCase c = gc_new(train ? "dropout p=0.4, training" : "dropout p=0.4, inference");
    DlNodeId x = param(&c, "x", SHAPE(3, 7));
    DlNodeId y = dl_dropout(c.g, L, dl_unary(c.g, DL_OP_TANH, L, x), 0.4);
    for (DlNodeId id = 0; id < c.g->nnodes; id++) {
      DlNode *nd = &c.g->nodes[id];
      if (nd->op == DL_OP_HYPER && !strcmp(nd->name, DL_HYPER_TRAIN_MODE))
        nd->attr.hyper.value = train;
      if (nd->op == DL_OP_HYPER && !strcmp(nd->name, DL_HYPER_TRAIN_SEED))
        nd->attr.hyper.value = 31;
    }
    gc_run(&c, y);
  }
}

/* Exact values where finite differences cannot look: ties share evenly. */
static void test_ties(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "ties");
  float av[4] = {1, 3, 3, 2}, bv[4] = {1, 0, 3, 5};
  DlNodeId a = dl_param(g, L, "a", SHAPE(4), (DlInit){.kind = DL_INIT_DATA, .data = av});
  DlNodeId b = dl_param(g, L, "b", SHAPE(4), (DlInit){.kind = DL_INIT_DATA, .data = bv});
  DlNodeId m = dl_reduce(g, DL_OP_MAX, L, a, 0, false);
  DlNodeId mx = dl_reduce(g, DL_OP_SUM, L, dl_binary(g, DL_OP_MAXIMUM, L, a, b), 0, false);
  g->loss = dl_binary(g, DL_OP_ADD, L, m, mx);
  CHECK(dl_autodiff(g));
  DlInterp it;
  dl_interp_init(&it, g, 1);
  dl_interp_run(&it, NULL, 0);
  /* max: 0.5 to each 3; maximum: a wins at 1, ties at 0 and 2 */
  const double want_a[4] = {0.5, 1.5, 1.0, 0.0}, want_b[4] = {0.5, 0.0, 0.5, 1.0};
  for (int i = 0; i < 4; i++) {
    CHECK(fabs(it.values[g->grad[a]][i] - want_a[i]) < 1e-12);
    CHECK(fabs(it.values[g->grad[b]][i] - want_b[i]) < 1e-12);
  }
  dl_interp_free(&it);
  dl_compiler_free(cc);
}

/* The one gradient that is not supported says so. */
static void test_unsupported(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "t");
  DlNodeId x = dl_input(g, L, "x", SHAPE(1, 4, 4), DL_ROLE_INPUT);
  DlNodeId dy = dl_param(g, L, "dy", SHAPE(1, 2, 2), (DlInit){.kind = DL_INIT_ZERO});
  DlNodeId y = dl_maxpool2d_grad(g, L, x, dy, 2, 2, 2, 2);
  g->loss = dl_reduce(g, DL_OP_SUM, L, y, 0, false);
  CHECK(!dl_autodiff(g));
  CHECK(cc->ndiags > 0 && strstr(cc->diags[0].msg, "'maxpool2d_grad'") &&
        strstr(cc->diags[0].msg, "not supported"));
  dl_compiler_free(cc);
}

int main(void) {
  test_elementwise_and_reduce();
  test_layout();
  test_indexing();
  test_conv();
  test_pool();
  test_dropout();
  test_ties();
  test_unsupported();
  if (check_failures) {
    fprintf(stderr, "test_grad_ops: %d checks failed\n", check_failures);
    return 1;
  }
  printf("test_grad_ops: all checks passed\n");
  return 0;
}
