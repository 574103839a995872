/* test_threads.c - the runtime's thread pool, and compiled code that gives
 * the same bits on any number of threads.
 *
 * dlrt_parallel_for: every index of [0, count) is visited exactly once, for
 * counts below, at and above the number of ranges; without a pool, with a
 * pool of one thread, and from inside a task (which runs inline).
 *
 * Training steps of models whose kernels are large enough to be split
 * (matrix products by columns and by rows, at sizes that are no multiple of
 * any tile; an elementwise update; convolutions by samples; filter
 * gradients by chunks of samples; pooling and its gradients by planes; bias
 * gradients summed by the kernels that compute the gradient they sum) run
 * from the same starting memory on 1, 2, 3 and 5 threads: the whole arena
 * afterwards must be identical bit for bit, and close to the reference
 * interpreter.
 * So must the same steps of the module compiled by LLVM on one thread and
 * cut into three parts compiled on three (codegen/cg_parallel.c).
 */
#include "../../codegen/codegen.h"
#include "check.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#define N DL_DIM_BATCH
#define L DL_NOLOC

/* ---- dlrt_parallel_for ---- */

typedef struct Visits {
  _Atomic int *count; /* per index */
  DlrtPool *pool;     /* for the nested call */
  _Atomic int nested;
} Visits;

static void visit(void *arg, int64_t begin, int64_t end) {
  Visits *v = arg;
  for (int64_t i = begin; i < end; i++)
    atomic_fetch_add(&v->count[i], 1);
}

/* A task that calls parallel_for again: it must run inline, not deadlock. */
static void visit_nested(void *arg, int64_t begin, int64_t end) {
  Visits *v = arg;
  for (int64_t i = begin; i < end; i++) {
    dlrt_parallel_for(v->pool, 3, 2, visit, v);
    atomic_fetch_add(&v->nested, 1);
  }
}

static void check_visits(DlrtPool *pool, int64_t count, int per_thread) {
  Visits v = {.count = calloc((size_t)count + 1, sizeof(_Atomic int)), .pool = pool};
  dlrt_parallel_for(pool, count, per_thread, visit, &v);
  int wrong = 0;
  for (int64_t i = 0; i < count; i++)
    wrong += atomic_load(&v.count[i]) != 1;
  if (wrong)
    fprintf(stderr, "%d threads, count %lld, %d per thread: %d indices not visited once\n",
            dlrt_pool_threads(pool), (long long)count, per_thread, wrong);
  CHECK(wrong == 0);
  free((void *)v.count);
}

static void test_parallel_for(void) {
  DlrtError err = {{0}};
  CHECK(dlrt_default_threads() >= 1);
  static const int64_t counts[] = {0, 1, 2, 3, 7, 8, 9, 100, 4099};
  DlrtPool *pools[3] = {NULL, dlrt_pool_new(1, &err), dlrt_pool_new(3, &err)};
  CHECK(pools[1] && pools[2]);
  CHECK(dlrt_pool_threads(pools[0]) == 1 && dlrt_pool_threads(pools[2]) == 3);
  for (int p = 0; p < 3; p++)
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
      for (int per = 0; per <= 4; per += 2)
        check_visits(pools[p], counts[c], per);
  /* Many jobs in a row: no range of one job runs in the next. */
  for (int rep = 0; rep < 200; rep++)
    check_visits(pools[2], 5 + rep % 7, 1 + rep % 3);
  Visits v = {.count = calloc(8, sizeof(_Atomic int)), .pool = pools[2]};
  dlrt_parallel_for(pools[2], 6, 1, visit_nested, &v);
  CHECK(atomic_load(&v.nested) == 6);
  for (int i = 0; i < 3; i++)
    CHECK(atomic_load(&v.count[i]) == 6); /* each nested job ran whole */
  free((void *)v.count);
  for (int p = 0; p < 3; p++)
    dlrt_pool_free(pools[p]);
}

/* ---- the same bits on any number of threads ---- */

static DlShape shape2(int64_t r, int64_t c) {
  return dl_shape_make(2, (int64_t[]){r, c});
}

/* Run three training steps of g (planned for n rows) from the same start on
 * 1, 2, 3 and 5 threads: the arenas must be identical.  Then one step on
 * two threads against the interpreter: w's update and the loss.  `expect`
 * are strings the generated IR must contain (the kernels are split). */
static void check_same_bits(DlCompiler *cc, DlGraph *g, int64_t n, DlNodeId w,
                            const char *const *expect) {
  CHECK(dl_autodiff(g) && dl_append_sgd(g, 0.05) && dl_simplify(g, NULL));
  DlProgram *prog = dl_plan(g, n);
  const DlrtProgram *rp = NULL;
  DlJit *jit = prog ? dl_jit_compile(cc, prog, NULL, &rp) : NULL;
  CHECK(jit != NULL);
  if (!jit) {
    dl_diag_render(cc, stderr, false);
    return;
  }
  char *ir = dl_emit_llvm_ir(cc, prog, NULL);
  for (int i = 0; expect[i]; i++)
    if (!ir || !strstr(ir, expect[i])) {
      fprintf(stderr, "%s: the IR lacks '%s'\n", g->name, expect[i]);
      check_failures++;
    }

  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(rp, 7, &err);
  CHECK(ctx != NULL);
  if (!ctx) return;
  size_t bytes = sizeof(float) * (size_t)rp->mem_floats;
  for (int t = 0; t < rp->ntensors; t++) {
    const DlrtTensor *tt = &rp->tensors[t];
    if (tt->role != DLRT_ROLE_INPUT && tt->role != DLRT_ROLE_TARGET) continue;
    float *d = dlrt_data(ctx, t);
    for (int64_t i = 0; i < dlrt_numel(tt, n); i++)
      d[i] = (float)dlrt_normal(3, (uint64_t)t, (uint64_t)i);
  }
  float *start = malloc(bytes), *want = malloc(bytes);
  memcpy(start, ctx->mem, bytes);
  static const int threads[] = {1, 2, 3, 5};
  for (size_t i = 0; i < sizeof threads / sizeof threads[0]; i++) {
    CHECK(dlrt_set_threads(ctx, threads[i], &err) == 0);
    CHECK(dlrt_pool_threads(ctx->pool) == threads[i]);
    memcpy(ctx->mem, start, bytes);
    for (int step = 0; step < 3; step++)
      CHECK(dlrt_run_train_step(ctx, n, &err) == 0);
    if (i == 0) {
      memcpy(want, ctx->mem, bytes);
      continue;
    }
    int64_t differ = 0;
    for (int64_t e = 0; e < rp->mem_floats; e++)
      differ += memcmp(&want[e], &ctx->mem[e], sizeof(float)) != 0;
    if (differ)
      fprintf(stderr, "%s, %d threads: %lld of %lld floats differ from one thread's\n", g->name,
              threads[i], (long long)differ, (long long)rp->mem_floats);
    CHECK(differ == 0);
  }

  /* LLVM on one thread and on three (the module cut into three parts
   * compiled at once): the same code, so the same bits. */
  for (int compile_threads = 1; compile_threads <= 3; compile_threads += 2) {
    DlCodegenOptions co = {.opt_level = 3, .compile_threads = compile_threads};
    const DlrtProgram *rp_cut = NULL;
    DlJit *cut = dl_jit_compile(cc, prog, &co, &rp_cut);
    CHECK(cut != NULL && dl_jit_threads(cut) == compile_threads);
    DlrtContext *cut_ctx = cut ? dlrt_context_new(rp_cut, 7, &err) : NULL;
    CHECK(cut == NULL || cut_ctx != NULL);
    if (!cut_ctx) {
      dl_jit_free(cut);
      continue;
    }
    CHECK(rp_cut->mem_floats == rp->mem_floats);
    memcpy(cut_ctx->mem, start, bytes);
    for (int step = 0; step < 3; step++)
      CHECK(dlrt_run_train_step(cut_ctx, n, &err) == 0);
    int64_t differ = 0;
    for (int64_t e = 0; e < rp->mem_floats; e++)
      differ += memcmp(&want[e], &cut_ctx->mem[e], sizeof(float)) != 0;
    if (differ)
      fprintf(stderr, "%s, compiled on %d threads: %lld of %lld floats differ\n", g->name,
              compile_threads, (long long)differ, (long long)rp->mem_floats);
    CHECK(differ == 0);
    dlrt_context_free(cut_ctx);
    dl_jit_free(cut);
  }

  /* One step against the interpreter, so the bits compared are right. */
  memcpy(ctx->mem, start, bytes);
  CHECK(dlrt_set_threads(ctx, 2, &err) == 0);
  CHECK(dlrt_run_train_step(ctx, n, &err) == 0);
  DlInterp it;
  dl_interp_init(&it, g, n);
  double **leaf = calloc((size_t)g->nnodes, sizeof(double *));
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    const DlNode *nd = &g->nodes[id];
    if (nd->op != DL_OP_INPUT && nd->op != DL_OP_PARAM && nd->op != DL_OP_HYPER) continue;
    int64_t count = dl_shape_numel(&nd->shape, n);
    leaf[id] = malloc(sizeof(double) * (size_t)count);
    for (int64_t e = 0; e < count; e++)
      leaf[id][e] = start[prog->offset[id] + e];
    it.values[id] = leaf[id];
  }
  dl_interp_run(&it, NULL, 0);
  int bad = 0;
  int64_t count = dl_shape_numel(&g->nodes[w].shape, 1);
  for (int64_t e = 0; e < count; e++)
    bad += fabs(ctx->mem[prog->offset[w] + e] - leaf[w][e]) > 1e-5 + 1e-4 * fabs(leaf[w][e]);
  CHECK(bad == 0);
  CHECK(fabs(ctx->mem[prog->offset[g->loss]] - it.values[g->loss][0]) <
        1e-4 * fabs(it.values[g->loss][0]));
  dl_interp_free(&it);
  for (DlNodeId id = 0; id < g->nnodes; id++)
    free(leaf[id]);
  free(leaf);
  free(start);
  free(want);
  dlrt_context_free(ctx);
  dl_jit_free(jit);
}

/* Dense layers: the forward product is split by columns, the first weight
 * gradient by rows (no size a multiple of a tile), and W1's update is an
 * elementwise kernel large enough to be split. */
static void test_dense_same_bits(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "dense");
  DlInit uni = {.kind = DL_INIT_UNIFORM, .a = -0.05, .b = 0.05};
  DlNodeId x = dl_input(g, L, "x", shape2(N, 901), DL_ROLE_INPUT);
  DlNodeId y = dl_input(g, L, "y", shape2(N, 7), DL_ROLE_TARGET);
  DlNodeId w1 = dl_param(g, L, "W1", shape2(901, 301), uni);
  DlNodeId b1 = dl_param(g, L, "b1", dl_shape_make(1, (int64_t[]){301}), uni);
  DlNodeId w2 = dl_param(g, L, "W2", shape2(301, 7), uni);
  DlNodeId h = dl_unary(g, DL_OP_RELU, L,
                        dl_binary(g, DL_OP_ADD, L, dl_matmul(g, L, x, w1, false, false), b1));
  g->output = dl_matmul(g, L, h, w2, false, false);
  DlNodeId diff = dl_binary(g, DL_OP_SUB, L, g->output, y);
  g->loss = dl_reduce(g, DL_OP_MEAN, L, dl_binary(g, DL_OP_MUL, L, diff, diff), 0, false);
  static const char *const expect[] = {"call void @dlrt_parallel_for(", "dense_gemm_task",
                                       "mul_sub_assign_part_task", NULL};
  check_same_bits(cc, g, 127, w1, expect);
  dl_compiler_free(cc);
}

/* Bias gradients computed as side reductions (passes/fuse.c): db0, the
 * column sum of dz0 = (dh @ W1^T) * step(z0), is added up in the epilogue of
 * a product split between threads; db1, the column sum of the loss's
 * gradient dh, after an elementwise kernel split between threads.  Either
 * way on one thread, in a fixed order. */
static void test_side_sums_same_bits(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "side");
  DlInit uni = {.kind = DL_INIT_UNIFORM, .a = -0.1, .b = 0.1};
  DlNodeId x = dl_input(g, L, "x", shape2(N, 37), DL_ROLE_INPUT);
  DlNodeId y = dl_input(g, L, "y", shape2(N, 2100), DL_ROLE_TARGET);
  DlNodeId w0 = dl_param(g, L, "W0", shape2(37, 67), uni);
  DlNodeId b0 = dl_param(g, L, "b0", dl_shape_make(1, (int64_t[]){67}), uni);
  DlNodeId w1 = dl_param(g, L, "W1", shape2(67, 2100), uni);
  DlNodeId b1 = dl_param(g, L, "b1", dl_shape_make(1, (int64_t[]){2100}), uni);
  DlNodeId z0 = dl_unary(g, DL_OP_RELU, L,
                         dl_binary(g, DL_OP_ADD, L, dl_matmul(g, L, x, w0, false, false), b0));
  g->output = dl_binary(g, DL_OP_ADD, L, dl_matmul(g, L, z0, w1, false, false), b1);
  DlNodeId diff = dl_binary(g, DL_OP_SUB, L, g->output, y);
  g->loss = dl_reduce(g, DL_OP_MEAN, L, dl_binary(g, DL_OP_MUL, L, diff, diff), 0, false);
  static const char *const expect[] = {"call void @dlrt_parallel_for(", "side_gemm_task",
                                       "_part_task", "ptr noalias nocapture %side", NULL};
  check_same_bits(cc, g, 127, b0, expect);
  dl_compiler_free(cc);
}

/* Convolutions: the forward convolutions and the input gradient give
 * samples to threads; the filter gradients give chunks of samples, whose
 * sums are added in chunk order (the batch, 131, is no multiple of the
 * chunks, 8, nor of any thread count). */
static void test_conv_same_bits(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "conv");
  DlInit uni = {.kind = DL_INIT_UNIFORM, .a = -0.2, .b = 0.2};
  DlNodeId x = dl_input(g, L, "x", dl_shape_make(4, (int64_t[]){N, 3, 21, 19}), DL_ROLE_INPUT);
  DlNodeId w1 = dl_param(g, L, "C1", dl_shape_make(4, (int64_t[]){8, 3, 5, 5}), uni);
  DlNodeId w2 = dl_param(g, L, "C2", dl_shape_make(4, (int64_t[]){16, 8, 3, 3}), uni);
  DlNodeId h = dl_unary(g, DL_OP_TANH, L, dl_conv2d(g, L, x, w1, 1, 1, 2, 1));
  DlNodeId z = dl_conv2d(g, L, h, w2, 2, 1, 0, 1); /* [N, 16, 10, 19] */
  g->output = z;
  g->loss = dl_reduce(g, DL_OP_MEAN, L, dl_binary(g, DL_OP_MUL, L, z, z), 0, false);
  static const char *const expect[] = {"call void @dlrt_parallel_for(", "conv2d_part_task",
                                       "conv2d_grad_input_part_task",
                                       "conv2d_grad_filter_part_task", NULL};
  check_same_bits(cc, g, 131, w1, expect);
  dl_compiler_free(cc);
}

/* A filter gradient whose chunks' sums would not all fit on the stack: 72
 * filters of 16 x 3 x 3 make 7 chunks, not 8, and a batch of 9 samples
 * cuts them unevenly. */
static void test_filter_chunks_same_bits(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "chunks");
  DlInit uni = {.kind = DL_INIT_UNIFORM, .a = -0.1, .b = 0.1};
  DlNodeId x = dl_input(g, L, "x", dl_shape_make(4, (int64_t[]){N, 16, 20, 20}), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, L, "C", dl_shape_make(4, (int64_t[]){72, 16, 3, 3}), uni);
  DlNodeId z = dl_conv2d(g, L, x, w, 1, 1, 1, 1);
  g->output = z;
  g->loss = dl_reduce(g, DL_OP_MEAN, L, dl_binary(g, DL_OP_MUL, L, z, z), 0, false);
  static const char *const expect[] = {"conv2d_grad_filter_part_task", "[62208 x float]", NULL};
  check_same_bits(cc, g, 9, w, expect);
  dl_compiler_free(cc);
}

/* Pooling and its gradients give ranges of planes to threads: windows that
 * tile the input (max, 2 x 2), windows that overlap (max, 3 x 3 at stride 2,
 * whose gradient adds into dx, cleared range by range, and which leave the
 * last row of the input out) and an average (3 x 3 at stride 3, leaving the
 * last row and the last two columns out).  The convolution's filter
 * gradient gives chunks of samples to threads. */
static void test_pool_same_bits(void) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "pool");
  DlInit uni = {.kind = DL_INIT_UNIFORM, .a = -0.3, .b = 0.3};
  DlNodeId x = dl_input(g, L, "x", dl_shape_make(4, (int64_t[]){N, 3, 22, 20}), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, L, "C", dl_shape_make(4, (int64_t[]){8, 3, 3, 3}), uni);
  DlNodeId h = dl_unary(g, DL_OP_TANH, L, dl_conv2d(g, L, x, w, 1, 1, 1, 1)); /* [N, 8, 22, 20] */
  DlNodeId tiles = dl_pool2d(g, DL_OP_MAXPOOL2D, L, h, 2, 2, 2, 2);
  DlNodeId overlap = dl_pool2d(g, DL_OP_MAXPOOL2D, L, h, 3, 3, 2, 2);
  DlNodeId avg = dl_pool2d(g, DL_OP_AVGPOOL2D, L, h, 3, 3, 3, 3);
  DlNodeId sq[3] = {tiles, overlap, avg};
  g->loss = 0;
  for (int i = 0; i < 3; i++) {
    DlNodeId m = dl_reduce(g, DL_OP_MEAN, L, dl_binary(g, DL_OP_MUL, L, sq[i], sq[i]), 0, false);
    g->loss = i ? dl_binary(g, DL_OP_ADD, L, g->loss, m) : m;
  }
  g->output = avg;
  static const char *const expect[] = {"maxpool2d_part_task",          "maxpool2d_grad_part_task",
                                       "avgpool2d_part_task",          "avgpool2d_grad_part_task",
                                       "conv2d_grad_filter_part_task", NULL};
  check_same_bits(cc, g, 131, w, expect);
  dl_compiler_free(cc);
}

int main(void) {
  test_parallel_for();
  test_dense_same_bits();
  test_side_sums_same_bits();
  test_conv_same_bits();
  test_pool_same_bits();
  test_filter_chunks_same_bits();
  if (check_failures) {
    printf("test_threads: %d checks failed\n", check_failures);
    return 1;
  }
  printf("test_threads: all checks passed\n");
  return 0;
}
