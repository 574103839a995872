/* test_codegen.c - the code generator against the reference interpreter.
 *
 * Each case builds a small graph with the IR constructors, plans it, JIT-
 * compiles it, fills inputs and parameters with random values, runs an entry
 * point, and compares every element of the output (and loss, gradients and
 * updated parameters where they exist) with dl_interp in double precision.
 * The DlrtProgram table the JIT returns is checked against the plan on the
 * way.  Also: the textual outputs (LLVM IR is vectorised, PTX passes ptxas
 * when it is installed), ELF objects, the C header, and error paths.
 */
#include "../../codegen/cg_testing.h"
#include "../../codegen/codegen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N DL_DIM_BATCH
#define SHAPE(...)                                                                                 \
  dl_shape_make((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
#define L DL_NOLOC

static int failures;
static int checks;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    checks++;                                                                                      \
    if (!(cond)) {                                                                                 \
      failures++;                                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);                     \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
    }                                                                                              \
  } while (0)

/* ---- deterministic random numbers ---- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double rnd(double lo, double hi) {
  uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return lo + (hi - lo) * ((double)(z >> 11) / 9007199254740992.0);
}

/* ---- a test case: a graph, value ranges for its leaves ---- */

#define MAX_RANGES 16

typedef struct Case {
  const char *what;
  void (*tweak)(DlProgram *prog); /* changes the plan before code generation */
  bool grid;                      /* running the GPU's kernels */
  bool long_sums;                 /* outputs sum thousands of products (see close_enough) */
  DlCompiler *cc;
  DlGraph *g;
  double lo, hi; /* default range of input and parameter values */
  int nranges;
  struct {
    DlNodeId id;
    double lo, hi;
    bool ints; /* whole numbers in [lo, hi]: indices, labels, ties */
  } range[MAX_RANGES];
} Case;

static Case case_new(const char *what) {
  Case c = {.what = what, .lo = -2.0, .hi = 2.0};
  c.cc = dl_compiler_new();
  c.g = dl_graph_new(c.cc, "t");
  return c;
}

static void case_range(Case *c, DlNodeId id, double lo, double hi) {
  c->range[c->nranges].id = id;
  c->range[c->nranges].lo = lo;
  c->range[c->nranges].hi = hi;
  c->nranges++;
}

static void case_ints(Case *c, DlNodeId id, double lo, double hi) {
  case_range(c, id, lo, hi);
  c->range[c->nranges - 1].ints = true;
}

static void leaf_range(const Case *c, DlNodeId id, double *lo, double *hi, bool *ints) {
  *lo = c->lo;
  *hi = c->hi;
  *ints = false;
  for (int i = 0; i < c->nranges; i++)
    if (c->range[i].id == id) {
      *lo = c->range[i].lo;
      *hi = c->range[i].hi;
      *ints = c->range[i].ints;
    }
}

static void report_diags(Case *c) {
  if (c->cc->ndiags) dl_diag_render(c->cc, stderr, false);
}

static int64_t tensor_numel(const DlrtTensor *t, int64_t n) {
  int64_t k = 1;
  for (int i = 0; i < t->rank; i++)
    k *= t->dims[i] == DLRT_DIM_BATCH ? n : t->dims[i];
  return k;
}

/* Within 2e-5 of want, relatively, or of `scale` where a long float sum
 * with cancellation makes an element's error relative to the tensor's
 * largest magnitude rather than to itself. */
static bool close_enough(double got, double want, double scale) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want;
  return fabs(got - want) <= 2e-5 + 2e-5 * fmax(fabs(want), scale);
}

/* ---- the program table against the plan ---- */

static DlNodeId find_node(const DlGraph *g, DlOp op, const char *name) {
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == op && g->nodes[id].name && !strcmp(g->nodes[id].name, name)) return id;
  return DL_NONE;
}

static void check_dims(const char *what, const DlrtTensor *t, const DlShape *s) {
  bool same = t->rank == s->rank;
  for (int i = 0; same && i < s->rank; i++)
    same = t->dims[i] == s->d[i];
  for (int i = s->rank; same && i < DLRT_MAX_RANK; i++)
    same = t->dims[i] == 0;
  CHECK(same, "%s: tensor '%s' has the wrong dims", what, t->name);
}

static void check_table(Case *c, const DlProgram *prog, const DlrtProgram *rp) {
  const DlGraph *g = c->g;
  CHECK(rp->abi_version == DLRT_ABI_VERSION, "%s", c->what);
  CHECK(!strcmp(rp->model, g->name), "%s: model '%s'", c->what, rp->model);
  CHECK(rp->mem_floats == prog->mem_floats, "%s: mem_floats %lld vs %lld", c->what,
        (long long)rp->mem_floats, (long long)prog->mem_floats);
  CHECK(rp->max_batch == prog->max_batch, "%s", c->what);
  CHECK(rp->forward != NULL, "%s", c->what);
  CHECK((rp->grad != NULL) == prog->entry[DL_ENTRY_GRAD].present, "%s", c->what);
  CHECK((rp->train_step != NULL) == prog->entry[DL_ENTRY_TRAIN].present, "%s", c->what);

  int expect = 0;
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    const DlNode *nd = &g->nodes[id];
    if (prog->offset[id] < 0) continue;
    expect += nd->op == DL_OP_PARAM || nd->op == DL_OP_INPUT || nd->op == DL_OP_HYPER ||
              (nd->op == DL_OP_CONST && prog->live[id]);
    expect += nd->op == DL_OP_PARAM && g->grad && id < g->ngrad && g->grad[id] != DL_NONE &&
              prog->offset[g->grad[id]] >= 0;
  }
  expect += g->output != DL_NONE && prog->offset[g->output] >= 0;
  expect += g->loss != DL_NONE && prog->offset[g->loss] >= 0;
  CHECK(rp->ntensors == expect, "%s: %d tensors, expected %d", c->what, rp->ntensors, expect);

  for (int i = 0; i < rp->ntensors; i++) {
    const DlrtTensor *t = &rp->tensors[i];
    DlNodeId id = DL_NONE;
    switch ((DlrtRole)t->role) {
    case DLRT_ROLE_PARAM:
    case DLRT_ROLE_STATE: id = find_node(g, DL_OP_PARAM, t->name); break;
    case DLRT_ROLE_INPUT:
    case DLRT_ROLE_TARGET:
      id = find_node(g, DL_OP_INPUT, t->name);
      if (id != DL_NONE)
        CHECK((t->role == DLRT_ROLE_TARGET) == (g->nodes[id].attr.input.role == DL_ROLE_TARGET),
              "%s: role of %s", c->what, t->name);
      break;
    case DLRT_ROLE_HYPER:
      id = find_node(g, DL_OP_HYPER, t->name);
      if (id != DL_NONE) CHECK(t->a == g->nodes[id].attr.hyper.value, "%s: hyper default", c->what);
      break;
    case DLRT_ROLE_OUTPUT: id = g->output; break;
    case DLRT_ROLE_LOSS:
      id = g->loss;
      CHECK(!strcmp(t->name, "loss"), "%s: loss is named '%s'", c->what, t->name);
      break;
    case DLRT_ROLE_CONST: {
      int k = -1;
      CHECK(sscanf(t->name, "const.%d", &k) == 1 && k >= 0 && k < g->nnodes &&
                g->nodes[k].op == DL_OP_CONST,
            "%s: const tensor named '%s'", c->what, t->name);
      id = k >= 0 && k < g->nnodes ? k : DL_NONE;
      break;
    }
    case DLRT_ROLE_GRAD: {
      DlNodeId p = find_node(g, DL_OP_PARAM, t->name);
      id = p != DL_NONE && g->grad && p < g->ngrad ? g->grad[p] : DL_NONE;
      if (p != DL_NONE) check_dims(c->what, t, &g->nodes[p].shape);
      break;
    }
    }
    CHECK(id != DL_NONE, "%s: tensor '%s' (role %d) matches no node", c->what, t->name, t->role);
    if (id == DL_NONE) continue;
    CHECK(t->offset == prog->offset[id], "%s: offset of '%s' is %lld, plan says %lld", c->what,
          t->name, (long long)t->offset, (long long)prog->offset[id]);
    if (t->role != DLRT_ROLE_GRAD) check_dims(c->what, t, &g->nodes[id].shape);
    if (t->role == DLRT_ROLE_PARAM) {
      const DlInit *init = &g->nodes[id].attr.param;
      CHECK(t->init == (int)init->kind && t->a == init->a && t->b == init->b, "%s: init of %s",
            c->what, t->name);
      if (init->kind == DL_INIT_DATA)
        CHECK(t->data && !memcmp(t->data, init->data,
                                 sizeof(float) * (size_t)dl_shape_numel(&g->nodes[id].shape, 1)),
              "%s: init data of %s", c->what, t->name);
    }
  }
}

/* ---- running a case ---- */

/* Compare a tensor of the compiled program with the interpreter's node. */
static void compare(Case *c, const char *label, int64_t n, const float *got, const double *want,
                    int64_t count, int opt) {
  int bad = 0;
  double scale = 0;
  for (int64_t e = 0; c->long_sums && e < count; e++)
    if (isfinite(want[e])) scale = fmax(scale, 4 * fabs(want[e]));
  for (int64_t e = 0; e < count; e++) {
    if (!close_enough(got[e], want[e], scale)) {
      if (bad++ < 5)
        fprintf(stderr, "%s -O%d%s n=%lld %s[%lld]: got %.9g, want %.9g\n", c->what, opt,
                c->grid ? " (GPU kernels)" : "", (long long)n, label, (long long)e, (double)got[e],
                want[e]);
    }
  }
  CHECK(bad == 0, "%s -O%d%s n=%lld: %d of %lld elements of %s differ", c->what, opt,
        c->grid ? " (GPU kernels)" : "", (long long)n, bad, (long long)count, label);
}

static void run_at(Case *c, const DlProgram *prog, const DlrtProgram *rp, DlEntryKind entry,
                   int64_t n, int opt) {
  const DlGraph *g = c->g;
  size_t bytes = ((size_t)rp->mem_floats * sizeof(float) + 63) & ~(size_t)63;
  float *mem = aligned_alloc(64, bytes);
  /* NaN everywhere a kernel might read without writing first. */
  for (int64_t i = 0; i < rp->mem_floats; i++)
    mem[i] = NAN;
  DlInterp it;
  dl_interp_init(&it, g, n);
  double **supplied = calloc((size_t)g->nnodes, sizeof(double *));
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    const DlNode *nd = &g->nodes[id];
    if (nd->op != DL_OP_INPUT && nd->op != DL_OP_PARAM && nd->op != DL_OP_HYPER) continue;
    int64_t count = dl_shape_numel(&nd->shape, n);
    double *v = malloc(sizeof(double) * (size_t)(count ? count : 1));
    double lo, hi;
    bool ints;
    leaf_range(c, id, &lo, &hi, &ints);
    for (int64_t e = 0; e < count; e++) {
      /* Both sides see the same float values. */
      float x = nd->op == DL_OP_HYPER ? (float)nd->attr.hyper.value
                : ints                ? (float)floor(rnd(lo, hi + 1))
                                      : (float)rnd(lo, hi);
      v[e] = x;
      if (prog->offset[id] >= 0) mem[prog->offset[id] + e] = x;
    }
    supplied[id] = v;
    it.values[id] = v;
  }
  /* Constants, from the table, as the runtime does. */
  for (int i = 0; i < rp->ntensors; i++) {
    const DlrtTensor *t = &rp->tensors[i];
    if (t->role != DLRT_ROLE_CONST) continue;
    for (int64_t e = 0; e < tensor_numel(t, n); e++)
      mem[t->offset + e] = t->data ? t->data[e] : (float)t->a;
  }
  DlrtEntryFn fn = entry == DL_ENTRY_FORWARD ? rp->forward
                   : entry == DL_ENTRY_GRAD  ? rp->grad
                                             : rp->train_step;
  CHECK(fn != NULL, "%s: entry %s missing", c->what, dl_entry_names[entry]);
  if (fn) {
    fn(mem, n);
    dl_interp_run(&it, NULL, 0);
    for (int i = 0; i < rp->ntensors; i++) {
      const DlrtTensor *t = &rp->tensors[i];
      DlNodeId id = DL_NONE;
      bool want = false;
      switch ((DlrtRole)t->role) {
      case DLRT_ROLE_OUTPUT:
        want = entry != DL_ENTRY_GRAD;
        id = g->output;
        break;
      case DLRT_ROLE_LOSS:
        want = true;
        id = g->loss;
        break;
      case DLRT_ROLE_GRAD:
        want = entry == DL_ENTRY_GRAD;
        id = g->grad[find_node(g, DL_OP_PARAM, t->name)];
        break;
      case DLRT_ROLE_PARAM:
      case DLRT_ROLE_STATE:
        want = entry == DL_ENTRY_TRAIN;
        id = find_node(g, DL_OP_PARAM, t->name);
        break;
      case DLRT_ROLE_INPUT:
      case DLRT_ROLE_TARGET:
      case DLRT_ROLE_CONST:
      case DLRT_ROLE_HYPER: break;
      }
      if (want && id != DL_NONE)
        compare(c, t->name, n, mem + t->offset, it.values[id], tensor_numel(t, n), opt);
    }
  }
  dl_interp_free(&it);
  for (DlNodeId id = 0; id < g->nnodes; id++)
    free(supplied[id]);
  free(supplied);
  free(mem);
}

static const int64_t batch_sizes[] = {1, 13, 64};

/* How kernels are generated: the CPU's loop nests, or the GPU's
 * one-element-per-iteration kernels run on the CPU (cg_testing.h). */
typedef enum Kernels { CPU_LOOPS, GPU_GRID } Kernels;

static void case_run_entry(Case *c, DlEntryKind entry, int opt, Kernels kernels) {
  if (dl_failed(c->cc)) {
    report_diags(c);
    CHECK(false, "%s: graph construction failed", c->what);
    return;
  }
  DlProgram *prog = dl_plan(c->g, 64);
  CHECK(prog != NULL, "%s: plan failed", c->what);
  if (!prog) {
    report_diags(c);
    return;
  }
  if (c->tweak) c->tweak(prog);
  c->grid = kernels == GPU_GRID;
  const DlrtProgram *rp = NULL;
  DlCodegenOptions opts = {.target = DL_TARGET_CPU, .opt_level = opt};
  DlJit *jit = kernels == GPU_GRID ? cg_jit_compile_grid_kernels(c->cc, prog, &opts, &rp)
                                   : dl_jit_compile(c->cc, prog, &opts, &rp);
  CHECK(jit && rp, "%s -O%d: JIT failed", c->what, opt);
  if (!jit) {
    report_diags(c);
    return;
  }
  check_table(c, prog, rp);
  for (size_t i = 0; i < sizeof batch_sizes / sizeof batch_sizes[0]; i++)
    run_at(c, prog, rp, entry, batch_sizes[i], opt);
  dl_jit_free(jit);
}

/* Forward at -O3, at -O0 so that the unoptimised code is right too, and
 * with the GPU's kernels. */
static void case_run(Case *c) {
  case_run_entry(c, DL_ENTRY_FORWARD, 3, CPU_LOOPS);
  case_run_entry(c, DL_ENTRY_FORWARD, 0, CPU_LOOPS);
  case_run_entry(c, DL_ENTRY_FORWARD, 1, GPU_GRID);
  dl_compiler_free(c->cc);
}

/* ---- the cases ---- */

static void test_unary(void) {
  static const DlOp ops[] = {DL_OP_NEG,     DL_OP_EXP,  DL_OP_LOG,  DL_OP_SQRT, DL_OP_TANH,
                             DL_OP_SIGMOID, DL_OP_RELU, DL_OP_STEP, DL_OP_ABS,  DL_OP_SIGN};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "unary %s", dl_op_info[ops[i]].name);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 37), DL_ROLE_INPUT);
    if (ops[i] == DL_OP_LOG || ops[i] == DL_OP_SQRT)
      case_range(&c, x, 0.01, 5.0);
    else
      case_range(&c, x, -6.0, 6.0);
    c.g->output = dl_unary(c.g, ops[i], L, x);
    case_run(&c);
  }
  /* Saturating functions at large |x|: +-1, 0 and 1, never NaN; tanh near 0. */
  static const DlOp sat[] = {DL_OP_TANH, DL_OP_SIGMOID};
  static const double ranges[][2] = {{-100, 100}, {-1e4, 1e4}, {-0.2, 0.2}, {-1e-3, 1e-3}};
  for (size_t i = 0; i < sizeof sat / sizeof sat[0]; i++)
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
      char what[64];
      snprintf(what, sizeof what, "%s on [%g, %g]", dl_op_info[sat[i]].name, ranges[r][0],
               ranges[r][1]);
      Case c = case_new(what);
      DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 16), DL_ROLE_INPUT);
      case_range(&c, x, ranges[r][0], ranges[r][1]);
      c.g->output = dl_unary(c.g, sat[i], L, x);
      case_run(&c);
    }
  /* exp down to underflow, up to (not past) float overflow. */
  Case c = case_new("exp on [-120, 85]");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 16), DL_ROLE_INPUT);
  case_range(&c, x, -120.0, 85.0);
  c.g->output = dl_unary(c.g, DL_OP_EXP, L, x);
  case_run(&c);
}

static void test_binary(void) {
  static const DlOp ops[] = {DL_OP_ADD, DL_OP_SUB, DL_OP_MUL, DL_OP_DIV, DL_OP_POW};
  struct {
    const char *what;
    DlShape a, b;
  } shapes[] = {
      {"same", SHAPE(N, 37), SHAPE(N, 37)},
      {"row vector", SHAPE(N, 37), SHAPE(37)},
      {"row vector on the left", SHAPE(1, 37), SHAPE(N, 37)},
      {"column vector", SHAPE(N, 37), SHAPE(N, 1)},
      {"scalar", SHAPE(N, 37), dl_shape_scalar()},
      {"scalar on the left", dl_shape_scalar(), SHAPE(N, 5, 3)},
      {"outer", SHAPE(N, 1), SHAPE(1, 9)},
      {"rank 3", SHAPE(5, 1, 7), SHAPE(3, 1)},
      {"rank 4 middle", SHAPE(2, N, 1, 3), SHAPE(N, 4, 1)},
      {"static", SHAPE(3, 4), SHAPE(3, 4)},
  };
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
      char what[96];
      snprintf(what, sizeof what, "binary %s, %s", dl_op_info[ops[i]].name, shapes[s].what);
      Case c = case_new(what);
      DlNodeId a = dl_input(c.g, L, "a", shapes[s].a, DL_ROLE_INPUT);
      DlNodeId b = dl_input(c.g, L, "b", shapes[s].b, DL_ROLE_INPUT);
      if (ops[i] == DL_OP_POW) {
        case_range(&c, a, 0.1, 3.0);
        case_range(&c, b, -2.0, 2.0);
      }
      if (ops[i] == DL_OP_DIV) case_range(&c, b, 0.5, 3.0);
      c.g->output = dl_binary(c.g, ops[i], L, a, b);
      case_run(&c);
    }
  /* pow of a negative base: integer powers keep C's sign rules. */
  Case c = case_new("pow, negative base, integer exponents");
  DlNodeId a = dl_input(c.g, L, "a", SHAPE(N, 8), DL_ROLE_INPUT);
  float ex[8] = {0, 1, 2, 3, -1, -2, 4, 5};
  DlNodeId b = dl_const_data(c.g, L, SHAPE(8), ex);
  case_range(&c, a, -3.0, -0.5);
  c.g->output = dl_binary(c.g, DL_OP_POW, L, a, b);
  case_run(&c);
}

static void test_matmul(void) {
  struct {
    const char *what;
    DlShape a, b;
    bool ta, tb;
  } cases[] = {
      {"7x5 @ 5x3", SHAPE(7, 5), SHAPE(5, 3), false, false},
      {"(5x7)^T @ 5x3", SHAPE(5, 7), SHAPE(5, 3), true, false},
      {"7x5 @ (3x5)^T", SHAPE(7, 5), SHAPE(3, 5), false, true},
      {"(5x7)^T @ (3x5)^T", SHAPE(5, 7), SHAPE(3, 5), true, true},
      {"x @ W", SHAPE(N, 5), SHAPE(5, 3), false, false},
      {"x @ W wide", SHAPE(N, 33), SHAPE(33, 19), false, false},
      {"x^T @ dy (contract over N)", SHAPE(N, 5), SHAPE(N, 3), true, false},
      {"dy @ W^T", SHAPE(N, 3), SHAPE(5, 3), false, true},
      {"x^T @ W^T", SHAPE(5, N), SHAPE(3, 5), true, true},
      {"W @ x^T", SHAPE(4, 6), SHAPE(N, 6), false, true},
      {"batched, broadcast b", SHAPE(2, N, 4, 5), SHAPE(5, 3), false, false},
      {"batched, broadcast both", SHAPE(3, 1, 4, 5), SHAPE(2, 5, 6), false, false},
      {"batched, transposed", SHAPE(2, 5, 4), SHAPE(2, 6, 5), true, true},
      {"1x1", SHAPE(1, 1), SHAPE(1, 1), false, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[96];
    snprintf(what, sizeof what, "matmul %s", cases[i].what);
    Case c = case_new(what);
    DlNodeId a = dl_input(c.g, L, "a", cases[i].a, DL_ROLE_INPUT);
    DlNodeId b = dl_input(c.g, L, "b", cases[i].b, DL_ROLE_INPUT);
    c.g->output = dl_matmul(c.g, L, a, b, cases[i].ta, cases[i].tb);
    case_run(&c);
  }
}

static void test_reduce(void) {
  static const DlOp ops[] = {DL_OP_SUM, DL_OP_MEAN};
  for (size_t i = 0; i < 2; i++)
    for (uint32_t axes = 1; axes < 8; axes++)
      for (int keep = 0; keep < 2; keep++) {
        char what[96];
        snprintf(what, sizeof what, "%s axes 0x%x%s of [N, 4, 6]", dl_op_info[ops[i]].name, axes,
                 keep ? " keepdim" : "");
        Case c = case_new(what);
        DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 4, 6), DL_ROLE_INPUT);
        c.g->output = dl_reduce(c.g, ops[i], L, x, axes, keep);
        case_run(&c);
      }
  Case c = case_new("mean of a vector");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(9), DL_ROLE_INPUT);
  c.g->output = dl_reduce(c.g, DL_OP_MEAN, L, x, 0, false);
  case_run(&c);
  c = case_new("sum over the batch of [N, 1]");
  x = dl_input(c.g, L, "x", SHAPE(N, 1), DL_ROLE_INPUT);
  c.g->output = dl_reduce(c.g, DL_OP_SUM, L, x, 1, false);
  case_run(&c);
}

/* The plan makes every RESHAPE a view; a planner may instead give it its own
 * buffer and schedule it, and then its kernel copies. */
static void reshape_as_copy(DlProgram *prog) {
  const DlGraph *g = prog->g;
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    if (g->nodes[id].op != DL_OP_RESHAPE) continue;
    prog->offset[id] = prog->mem_floats;
    prog->mem_floats += (prog->size[id] = dl_shape_numel(&g->nodes[id].shape, prog->max_batch));
    DlEntry *e = &prog->entry[DL_ENTRY_FORWARD];
    DlNodeId *nodes = dl_arena_alloc(g->cc->arena, sizeof(DlNodeId) * (size_t)(e->nnodes + 1));
    int k = 0;
    for (int i = 0; i < e->nnodes; i++) {
      if (e->nodes[i] > id && k == i) nodes[k++] = id;
      nodes[k++] = e->nodes[i];
    }
    e->nodes = nodes;
    e->nnodes = k;
  }
}

static void test_expand_reshape(void) {
  struct {
    const char *what;
    DlShape from, to;
  } cases[] = {
      {"row to batch", SHAPE(4), SHAPE(N, 4)},       {"column to batch", SHAPE(N, 1), SHAPE(N, 5)},
      {"scalar", dl_shape_scalar(), SHAPE(3, 4)},    {"scalar to batch", SHAPE(1), SHAPE(N, 2)},
      {"middle", SHAPE(3, 1, 2), SHAPE(2, 3, 4, 2)},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int mean = 0; mean < 2; mean++) {
      char what[96];
      snprintf(what, sizeof what, "expand %s%s", cases[i].what, mean ? " (mean)" : "");
      Case c = case_new(what);
      DlNodeId x = dl_input(c.g, L, "x", cases[i].from, DL_ROLE_INPUT);
      c.g->output = dl_expand(c.g, L, x, cases[i].to, mean);
      case_run(&c);
    }
  for (int copy = 0; copy < 2; copy++) {
    Case c = case_new(copy ? "reshape copy then exp" : "reshape view then exp");
    if (copy) c.tweak = reshape_as_copy;
    DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 6), DL_ROLE_INPUT);
    DlNodeId r = dl_reshape(c.g, L, x, SHAPE(N, 2, 3));
    DlNodeId w = dl_input(c.g, L, "w", SHAPE(2, 1), DL_ROLE_INPUT);
    c.g->output = dl_binary(c.g, DL_OP_MUL, L, dl_unary(c.g, DL_OP_EXP, L, r), w);
    case_run(&c);
  }
}

static void test_softmax(void) {
  static const DlOp ops[] = {DL_OP_SOFTMAX, DL_OP_LOG_SOFTMAX};
  static const double ranges[][2] = {{-3, 3}, {-50, 50}, {900, 1100}, {-1100, -900}};
  for (size_t i = 0; i < 2; i++)
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
      char what[96];
      snprintf(what, sizeof what, "%s on [%g, %g]", dl_op_info[ops[i]].name, ranges[r][0],
               ranges[r][1]);
      Case c = case_new(what);
      DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 10), DL_ROLE_INPUT);
      case_range(&c, x, ranges[r][0], ranges[r][1]);
      c.g->output = dl_softmax(c.g, ops[i], L, x);
      case_run(&c);
    }
  for (size_t i = 0; i < 2; i++) {
    Case c = case_new(i ? "log_softmax rank 3" : "softmax rank 3");
    DlNodeId x = dl_input(c.g, L, "x", SHAPE(2, N, 7), DL_ROLE_INPUT);
    c.g->output = dl_softmax(c.g, ops[i], L, x);
    case_run(&c);
    c = case_new(i ? "log_softmax of one element" : "softmax of one element");
    x = dl_input(c.g, L, "x", SHAPE(N, 1), DL_ROLE_INPUT);
    c.g->output = dl_softmax(c.g, ops[i], L, x);
    case_run(&c);
  }
}

/* ---- the ops of layout, indexing, convolution, pooling and dropout ---- */

static void test_compare_maximum(void) {
  static const DlOp ops[] = {DL_OP_MAXIMUM, DL_OP_GT, DL_OP_EQ};
  for (size_t i = 0; i < 3; i++)
    for (int ints = 0; ints < 2; ints++) {
      char what[96];
      snprintf(what, sizeof what, "%s, broadcast%s", dl_op_info[ops[i]].name,
               ints ? ", whole numbers (ties)" : "");
      Case c = case_new(what);
      DlNodeId a = dl_input(c.g, L, "a", SHAPE(N, 13), DL_ROLE_INPUT);
      DlNodeId b = dl_input(c.g, L, "b", SHAPE(13), DL_ROLE_INPUT);
      if (ints) {
        case_ints(&c, a, -2, 2);
        case_ints(&c, b, -2, 2);
      }
      c.g->output = ops[i] == DL_OP_MAXIMUM ? dl_binary(c.g, ops[i], L, a, b)
                                            : dl_compare(c.g, ops[i], L, a, b);
      case_run(&c);
    }
}

static void test_reduce_max(void) {
  for (uint32_t axes = 1; axes < 8; axes++)
    for (int keep = 0; keep < 2; keep++) {
      char what[96];
      snprintf(what, sizeof what, "max axes 0x%x%s of [N, 5, 3] with ties", axes,
               keep ? " keepdim" : "");
      Case c = case_new(what);
      DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 5, 3), DL_ROLE_INPUT);
      case_ints(&c, x, -3, 3);
      c.g->output = dl_reduce(c.g, DL_OP_MAX, L, x, axes, keep);
      case_run(&c);
    }
  Case c = case_new("max of very negative values");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 7), DL_ROLE_INPUT);
  case_range(&c, x, -1e30, -1e29);
  c.g->output = dl_reduce(c.g, DL_OP_MAX, L, x, 2, false);
  case_run(&c);
}

static void test_permute(void) {
  struct {
    DlShape s;
    int perm[4];
  } cases[] = {
      {SHAPE(N, 3, 5), {0, 2, 1}},       {SHAPE(N, 3, 5), {2, 0, 1}},
      {SHAPE(4, N, 3), {1, 2, 0}},       {SHAPE(2, 3, 4), {2, 1, 0}},
      {SHAPE(N, 2, 3, 5), {0, 2, 3, 1}}, {SHAPE(N, 2, 3, 5), {3, 1, 0, 2}},
      {SHAPE(2, 1, 3, 5), {1, 3, 2, 0}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[96], sbuf[64];
    snprintf(what, sizeof what, "permute %s by [%d %d %d %d]",
             dl_shape_str(&cases[i].s, sbuf, sizeof sbuf), cases[i].perm[0], cases[i].perm[1],
             cases[i].perm[2], cases[i].perm[3]);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", cases[i].s, DL_ROLE_INPUT);
    c.g->output = dl_permute(c.g, L, x, cases[i].perm);
    case_run(&c);
  }
}

static void test_slice_pad(void) {
  struct {
    const char *what;
    DlShape s;
    int64_t start[3], stop[3];
  } slices[] = {
      {"columns at an offset", SHAPE(N, 13), {0, 3}, {N, 11}},
      {"one column", SHAPE(N, 13), {0, 12}, {N, 13}},
      {"middle of rank 3", SHAPE(4, N, 9), {1, 0, 2}, {3, N, 7}},
      {"static", SHAPE(5, 6, 7), {1, 2, 3}, {4, 6, 4}},
  };
  for (size_t i = 0; i < sizeof slices / sizeof slices[0]; i++) {
    char what[96];
    snprintf(what, sizeof what, "slice %s", slices[i].what);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", slices[i].s, DL_ROLE_INPUT);
    c.g->output = dl_slice(c.g, L, x, slices[i].start, slices[i].stop);
    case_run(&c);
  }
  struct {
    const char *what;
    DlShape s;
    int64_t before[4], after[4];
  } pads[] = {
      {"columns", SHAPE(N, 5), {0, 2}, {0, 3}},
      {"image borders", SHAPE(N, 2, 5, 5), {0, 0, 1, 2}, {0, 0, 2, 1}},
      {"leading axis", SHAPE(3, N, 4), {2, 0, 0}, {1, 0, 1}},
      {"nothing", SHAPE(N, 3), {0, 0}, {0, 0}},
  };
  for (size_t i = 0; i < sizeof pads / sizeof pads[0]; i++) {
    char what[96];
    snprintf(what, sizeof what, "pad %s", pads[i].what);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", pads[i].s, DL_ROLE_INPUT);
    c.g->output = dl_pad(c.g, L, x, pads[i].before, pads[i].after);
    case_run(&c);
  }
}

static void test_concat(void) {
  struct {
    DlShape a, b;
    int axis;
  } cases[] = {
      {SHAPE(N, 3, 5), SHAPE(N, 4, 5), 1},       {SHAPE(N, 3, 5), SHAPE(N, 3, 2), 2},
      {SHAPE(2, N, 3), SHAPE(3, N, 3), 0},       {SHAPE(N, 1), SHAPE(N, 13), 1},
      {SHAPE(2, 3, 4, 5), SHAPE(2, 3, 1, 5), 2},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[96], sa[48], sb[48];
    snprintf(what, sizeof what, "concat %s and %s on axis %d",
             dl_shape_str(&cases[i].a, sa, sizeof sa), dl_shape_str(&cases[i].b, sb, sizeof sb),
             cases[i].axis);
    Case c = case_new(what);
    DlNodeId a = dl_input(c.g, L, "a", cases[i].a, DL_ROLE_INPUT);
    DlNodeId b = dl_input(c.g, L, "b", cases[i].b, DL_ROLE_INPUT);
    c.g->output = dl_concat(c.g, L, a, b, cases[i].axis);
    case_run(&c);
  }
}

static void test_indexing(void) {
  struct {
    const char *what;
    DlShape table, idx;
  } gathers[] = {
      {"embedding rows", SHAPE(7, 5), SHAPE(N, 3)},
      {"scalars", SHAPE(7), SHAPE(N, 13)},
      {"rank-3 table", SHAPE(6, 2, 3), SHAPE(N)},
  };
  for (size_t i = 0; i < sizeof gathers / sizeof gathers[0]; i++) {
    char what[96];
    /* Repeated indices, and some outside [0, V - 1] that clamp. */
    snprintf(what, sizeof what, "gather %s, repeated and clamped indices", gathers[i].what);
    Case c = case_new(what);
    DlNodeId t = dl_input(c.g, L, "table", gathers[i].table, DL_ROLE_INPUT);
    DlNodeId idx = dl_input(c.g, L, "idx", gathers[i].idx, DL_ROLE_INPUT);
    case_ints(&c, idx, -2, (double)gathers[i].table.d[0] + 1);
    c.g->output = dl_gather(c.g, L, t, idx);
    case_run(&c);

    snprintf(what, sizeof what, "scatter_add %s, repeated and clamped indices", gathers[i].what);
    c = case_new(what);
    DlShape src_shape = gathers[i].idx;
    for (int d = 1; d < gathers[i].table.rank; d++)
      src_shape.d[src_shape.rank++] = gathers[i].table.d[d];
    DlNodeId src = dl_input(c.g, L, "src", src_shape, DL_ROLE_INPUT);
    idx = dl_input(c.g, L, "idx", gathers[i].idx, DL_ROLE_INPUT);
    case_ints(&c, idx, -2, (double)gathers[i].table.d[0] + 1);
    c.g->output = dl_scatter_add(c.g, L, src, idx, gathers[i].table);
    case_run(&c);
  }
  Case c = case_new("gather, fractional indices truncate");
  DlNodeId t = dl_input(c.g, L, "table", SHAPE(5, 3), DL_ROLE_INPUT);
  DlNodeId idx = dl_input(c.g, L, "idx", SHAPE(N, 4), DL_ROLE_INPUT);
  case_range(&c, idx, -1.0, 6.0);
  c.g->output = dl_gather(c.g, L, t, idx);
  case_run(&c);
  DlShape label_shapes[] = {SHAPE(N), SHAPE(N, 3)};
  for (int i = 0; i < 2; i++) {
    c = case_new(i ? "one_hot of [N, 3]" : "one_hot of [N], labels out of range");
    DlNodeId labels = dl_input(c.g, L, "labels", label_shapes[i], DL_ROLE_INPUT);
    case_ints(&c, labels, -1, 5);
    c.g->output = dl_one_hot(c.g, L, labels, 5);
    case_run(&c);
  }
}

typedef struct ConvCase {
  const char *what;
  DlShape x, w;
  int sh, sw, ph, pw;
} ConvCase;

static void test_conv(void) {
  const ConvCase conv_cases[] = {
      {"3x3, stride 1, no padding", SHAPE(N, 2, 7, 6), SHAPE(3, 2, 3, 3), 1, 1, 0, 0},
      {"3x3, stride 1, padding 1", SHAPE(N, 2, 5, 5), SHAPE(4, 2, 3, 3), 1, 1, 1, 1},
      {"5x5, stride 2, padding 2", SHAPE(N, 1, 9, 8), SHAPE(2, 1, 5, 5), 2, 2, 2, 2},
      {"3x2, strides 2 and 1, padding 0 and 2", SHAPE(N, 3, 8, 5), SHAPE(2, 3, 3, 2), 2, 1, 0, 2},
      {"1x1, stride 3", SHAPE(N, 4, 7, 7), SHAPE(5, 4, 1, 1), 3, 3, 0, 0},
      {"padding wider than the kernel", SHAPE(2, 1, 3, 4), SHAPE(1, 1, 2, 2), 1, 2, 3, 2},
      {"LeNet's first layer", SHAPE(N, 1, 28, 28), SHAPE(6, 1, 5, 5), 1, 1, 0, 0},
  };
  for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++) {
    const ConvCase *cc = &conv_cases[i];
    char what[128];
    snprintf(what, sizeof what, "conv2d %s", cc->what);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", cc->x, DL_ROLE_INPUT);
    DlNodeId w = dl_input(c.g, L, "w", cc->w, DL_ROLE_INPUT);
    DlNodeId y = dl_conv2d(c.g, L, x, w, cc->sh, cc->sw, cc->ph, cc->pw);
    c.g->output = y;
    DlShape ys = c.g->nodes[y].shape;
    case_run(&c);

    snprintf(what, sizeof what, "conv2d_grad_input %s", cc->what);
    c = case_new(what);
    DlNodeId dy = dl_input(c.g, L, "dy", ys, DL_ROLE_INPUT);
    w = dl_input(c.g, L, "w", cc->w, DL_ROLE_INPUT);
    c.g->output = dl_conv2d_grad_input(c.g, L, dy, w, cc->x, cc->sh, cc->sw, cc->ph, cc->pw);
    case_run(&c);

    snprintf(what, sizeof what, "conv2d_grad_filter %s", cc->what);
    c = case_new(what);
    c.long_sums = true; /* LeNet's: 64 x 24 x 24 products per element */
    x = dl_input(c.g, L, "x", cc->x, DL_ROLE_INPUT);
    dy = dl_input(c.g, L, "dy", ys, DL_ROLE_INPUT);
    c.g->output = dl_conv2d_grad_filter(c.g, L, x, dy, cc->w, cc->sh, cc->sw, cc->ph, cc->pw);
    case_run(&c);
  }
}

typedef struct PoolCase {
  const char *what;
  DlShape x;
  int kh, kw, sh, sw;
} PoolCase;

static void test_pool(void) {
  const PoolCase pool_cases[] = {
      {"2x2 stride 2 (non-overlapping)", SHAPE(N, 3, 8, 6), 2, 2, 2, 2},
      {"2x2 stride 2, odd sizes (floor)", SHAPE(N, 2, 7, 5), 2, 2, 2, 2},
      {"3x3 stride 1 (overlapping)", SHAPE(N, 2, 6, 7), 3, 3, 1, 1},
      {"3x2 strides 2 and 1", SHAPE(N, 9, 5), 3, 2, 2, 1},
      {"rank 2, whole input", SHAPE(4, 5), 4, 5, 1, 1},
  };
  static const DlOp ops[] = {DL_OP_MAXPOOL2D, DL_OP_AVGPOOL2D};
  for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++)
    for (int k = 0; k < 2; k++)
      for (int ints = 0; ints < 2; ints++) {
        const PoolCase *pc = &pool_cases[i];
        if (ints && ops[k] == DL_OP_AVGPOOL2D) continue;
        char what[128];
        snprintf(what, sizeof what, "%s %s%s", dl_op_info[ops[k]].name, pc->what,
                 ints ? ", ties" : "");
        Case c = case_new(what);
        DlNodeId x = dl_input(c.g, L, "x", pc->x, DL_ROLE_INPUT);
        if (ints) case_ints(&c, x, -2, 2);
        DlNodeId y = dl_pool2d(c.g, ops[k], L, x, pc->kh, pc->kw, pc->sh, pc->sw);
        c.g->output = y;
        DlShape ys = c.g->nodes[y].shape;
        case_run(&c);

        snprintf(what, sizeof what, "%s_grad %s%s", dl_op_info[ops[k]].name, pc->what,
                 ints ? ", ties" : "");
        c = case_new(what);
        DlNodeId dy = dl_input(c.g, L, "dy", ys, DL_ROLE_INPUT);
        if (ops[k] == DL_OP_MAXPOOL2D) {
          x = dl_input(c.g, L, "x", pc->x, DL_ROLE_INPUT);
          if (ints) case_ints(&c, x, -2, 2);
          c.g->output = dl_maxpool2d_grad(c.g, L, x, dy, pc->kh, pc->kw, pc->sh, pc->sw);
        } else {
          c.g->output = dl_avgpool2d_grad(c.g, L, dy, pc->x, pc->kh, pc->kw, pc->sh, pc->sw);
        }
        case_run(&c);
      }
}

static DlNodeId find_hyper(const DlGraph *g, const char *name) {
  return find_node(g, DL_OP_HYPER, name);
}

/* The runtime switches dropout on for train_step and grad, with a fresh seed
 * per step that depends only on the context's seed and the step count, and
 * off for forward. */
static void test_dropout_runtime(void) {
  Case c = case_new("dropout in the runtime");
  DlGraph *g = c.g;
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 40), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, L, "w", SHAPE(40), (DlInit){.kind = DL_INIT_CONST, .a = 1.0});
  g->output = dl_dropout(g, L, dl_binary(g, DL_OP_MUL, L, x, w), 0.5);
  g->loss = dl_reduce(g, DL_OP_SUM, L, g->output, 0, false);
  DlProgram *prog = dl_autodiff(g) ? dl_plan(g, 4) : NULL;
  const DlrtProgram *rp = NULL;
  DlJit *jit = prog ? dl_jit_compile(c.cc, prog, NULL, &rp) : NULL;
  CHECK(jit != NULL, "dropout in the runtime: JIT failed");
  if (!jit) {
    report_diags(&c);
    dl_compiler_free(c.cc);
    return;
  }
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(rp, 11, &err), *again = dlrt_context_new(rp, 11, &err);
  int xi = dlrt_find(rp, "x", DLRT_ROLE_INPUT), oi = dlrt_find_role(rp, DLRT_ROLE_OUTPUT);
  int mode = dlrt_find(rp, DL_HYPER_TRAIN_MODE, DLRT_ROLE_HYPER);
  int seed = dlrt_find(rp, DL_HYPER_TRAIN_SEED, DLRT_ROLE_HYPER);
  CHECK(ctx && again && xi >= 0 && oi >= 0 && mode >= 0 && seed >= 0, "dropout tensors");
  if (ctx && again && xi >= 0 && oi >= 0 && mode >= 0 && seed >= 0) {
    for (int i = 0; i < 160; i++)
      dlrt_data(ctx, xi)[i] = dlrt_data(again, xi)[i] = 1.0f + (float)i;
    CHECK(dlrt_run_forward(ctx, 4, &err) == 0 && dlrt_data(ctx, mode)[0] == 0, "forward");
    bool identity = true;
    for (int i = 0; i < 160; i++)
      identity &= dlrt_data(ctx, oi)[i] == 1.0f + (float)i;
    CHECK(identity, "forward is not the identity");
    float seeds[2];
    for (int step = 0; step < 2; step++) {
      CHECK(dlrt_run_grad(ctx, 4, &err) == 0 && dlrt_data(ctx, mode)[0] == 1, "grad");
      seeds[step] = dlrt_data(ctx, seed)[0];
      int dropped = 0;
      bool scaled = true;
      for (int i = 0; i < 160; i++) {
        float y = dlrt_data(ctx, oi)[i];
        dropped += y == 0;
        scaled &= y == 0 || y == 2.0f * (1.0f + (float)i);
      }
      CHECK(scaled && dropped > 50 && dropped < 110, "step %d: %d of 160 dropped", step, dropped);
    }
    CHECK(seeds[0] != seeds[1] && seeds[0] == floorf(seeds[0]) && seeds[0] < 16777216.0f,
          "seeds %g, %g", (double)seeds[0], (double)seeds[1]);
    CHECK(ctx->steps == 2, "steps %llu", (unsigned long long)ctx->steps);
    CHECK(dlrt_run_train_step(again, 4, &err) == 0 && dlrt_data(again, seed)[0] == seeds[0],
          "the same context seed does not give the same first step");
    CHECK(dlrt_run_forward(ctx, 4, &err) == 0 && dlrt_data(ctx, mode)[0] == 0, "back to inference");
  }
  dlrt_context_free(ctx);
  dlrt_context_free(again);
  dl_jit_free(jit);
  dl_compiler_free(c.cc);
}

static void test_dropout(void) {
  static const double probs[] = {0.0, 0.3, 0.75};
  for (int train = 0; train < 2; train++)
    for (size_t i = 0; i < sizeof probs / sizeof probs[0]; i++) {
      char what[96];
      snprintf(what, sizeof what, "dropout p=%g, %s", probs[i], train ? "training" : "inference");
      Case c = case_new(what);
      DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 37), DL_ROLE_INPUT);
      DlNodeId y = dl_dropout(c.g, L, x, probs[i]);
      /* Two dropouts share the hyper leaves, with different streams. */
      c.g->output = dl_binary(c.g, DL_OP_ADD, L, y, dl_dropout(c.g, L, x, probs[i]));
      DlNodeId mode = find_hyper(c.g, DL_HYPER_TRAIN_MODE);
      DlNodeId seed = find_hyper(c.g, DL_HYPER_TRAIN_SEED);
      int nhyper = 0;
      for (DlNodeId id = 0; id < c.g->nnodes; id++)
        nhyper += c.g->nodes[id].op == DL_OP_HYPER;
      CHECK(mode != DL_NONE && seed != DL_NONE && nhyper == 2, "%s: hyper leaves", what);
      if (mode == DL_NONE || seed == DL_NONE) continue;
      c.g->nodes[mode].attr.hyper.value = train;
      c.g->nodes[seed].attr.hyper.value = 4242;
      case_run(&c);
    }
  /* The mask is the runtime's uniform numbers: same seed, stream, counter. */
  int kept = 0, same = 0, total = 4000;
  for (int i = 0; i < total; i++) {
    bool k = dl_dropout_keep(77, 5, (uint64_t)i, 0.3);
    kept += k;
    same += k == (dlrt_uniform01(77, 5, (uint64_t)i) >= 0.3);
  }
  CHECK(same == total, "dropout mask differs from dlrt_uniform01 in %d of %d", total - same, total);
  CHECK(kept > 0.65 * total && kept < 0.75 * total, "dropout kept %d of %d at p = 0.3", kept,
        total);
  CHECK(dl_hash64(12345) == dlrt_hash64(12345), "dl_hash64 differs from dlrt_hash64");
  test_dropout_runtime();
  CHECK(dl_dropout_seed(-3) == 0 && dl_dropout_seed(NAN) == 0 && dl_dropout_seed(17.9) == 17 &&
            dl_dropout_seed(1e20) == 4294967296ull,
        "dl_dropout_seed clamps and truncates");
}

/* A small CNN and sequence model using every new op in the forward graph,
 * so that the backward graph has every gradient op too; grad and train_step
 * against the interpreter, with both kinds of kernels. */
static Case build_new_ops(void) {
  Case c = case_new("new ops");
  DlGraph *g = c.g;
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 1, 9, 8), DL_ROLE_INPUT);
  DlNodeId tok = dl_input(g, L, "tok", SHAPE(N, 3), DL_ROLE_INPUT);
  DlNodeId lab = dl_input(g, L, "lab", SHAPE(N), DL_ROLE_TARGET);
  case_ints(&c, tok, 0, 4);
  case_ints(&c, lab, 0, 3);
  DlInit uni = {.kind = DL_INIT_UNIFORM, .a = -1, .b = 1};
  DlNodeId w1 = dl_param(g, L, "conv.w", SHAPE(3, 1, 3, 3), uni);
  DlNodeId emb = dl_param(g, L, "emb", SHAPE(5, 4), uni);
  DlNodeId W = dl_param(g, L, "W", SHAPE(25, 4), uni);
  DlNodeId h = dl_conv2d(g, L, x, w1, 2, 1, 1, 1);               /* [N, 3, 5, 8] */
  DlNodeId p1 = dl_pool2d(g, DL_OP_MAXPOOL2D, L, h, 2, 2, 1, 2); /* [N, 3, 4, 4] */
  DlNodeId p2 = dl_pool2d(g, DL_OP_AVGPOOL2D, L, h, 2, 3, 1, 2); /* [N, 3, 4, 3] */
  DlNodeId cat = dl_concat(g, L, p1, p2, 3);                     /* [N, 3, 4, 7] */
  int perm[4] = {0, 2, 3, 1};
  DlNodeId pm = dl_permute(g, L, cat, perm); /* [N, 4, 7, 3] */
  int64_t st[4] = {0, 1, 2, 0}, sp[4] = {N, 3, 7, 1};
  DlNodeId sl = dl_slice(g, L, pm, st, sp); /* [N, 2, 5, 1] */
  int64_t before[4] = {0, 0, 0, 0}, after[4] = {0, 3, 0, 0};
  DlNodeId pd = dl_pad(g, L, sl, before, after); /* [N, 5, 5, 1] */
  DlNodeId flat = dl_reshape(g, L, pd, SHAPE(N, 25));
  flat = dl_dropout(g, L, dl_binary(g, DL_OP_MAXIMUM, L, flat, dl_const_scalar(g, L, 0.1)), 0.25);
  DlNodeId z = dl_matmul(g, L, flat, W, false, false); /* [N, 4] */
  DlNodeId e = dl_gather(g, L, emb, tok);              /* [N, 3, 4] */
  z = dl_binary(g, DL_OP_ADD, L, z, dl_reduce(g, DL_OP_MAX, L, e, 2, false));
  g->output = dl_softmax(g, DL_OP_SOFTMAX, L, z);
  DlNodeId oh = dl_one_hot(g, L, lab, 4);
  DlNodeId ce = dl_binary(g, DL_OP_MUL, L, oh, dl_softmax(g, DL_OP_LOG_SOFTMAX, L, z));
  g->loss =
      dl_unary(g, DL_OP_NEG, L,
               dl_reduce(g, DL_OP_MEAN, L, dl_reduce(g, DL_OP_SUM, L, ce, 2, false), 0, false));
  bool ok = !dl_failed(c.cc) && dl_autodiff(g) && dl_append_sgd(g, 0.1);
  CHECK(ok, "new ops: autodiff failed");
  if (!ok) report_diags(&c);
  bool seen[DL_OP_COUNT] = {false};
  for (DlNodeId id = 0; id < g->nnodes; id++)
    seen[g->nodes[id].op] = true;
  static const DlOp want[] = {DL_OP_CONV2D_GRAD_FILTER,
                              DL_OP_MAXPOOL2D_GRAD,
                              DL_OP_AVGPOOL2D_GRAD,
                              DL_OP_SCATTER_ADD,
                              DL_OP_GT,
                              DL_OP_EQ,
                              DL_OP_DROPOUT};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    CHECK(seen[want[i]], "new ops: the gradient graph has no %s", dl_op_info[want[i]].name);
  DlNodeId mode = find_hyper(g, DL_HYPER_TRAIN_MODE), seed = find_hyper(g, DL_HYPER_TRAIN_SEED);
  if (mode != DL_NONE && seed != DL_NONE) {
    g->nodes[mode].attr.hyper.value = 1;
    g->nodes[seed].attr.hyper.value = 99;
  }
  return c;
}

static void test_new_ops_training(void) {
  /* grad compares the loss and every gradient; train_step the output, the
   * loss and every updated parameter (forward's kernels are among them). */
  static const struct {
    DlEntryKind entry;
    Kernels kernels;
  } runs[] = {{DL_ENTRY_GRAD, CPU_LOOPS}, {DL_ENTRY_GRAD, GPU_GRID}, {DL_ENTRY_TRAIN, CPU_LOOPS}};
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
    Case c = build_new_ops();
    char what[64];
    snprintf(what, sizeof what, "new ops %s%s", dl_entry_names[runs[i].entry],
             runs[i].kernels == GPU_GRID ? " (GPU kernels)" : "");
    c.what = what;
    case_run_entry(&c, runs[i].entry, runs[i].kernels == GPU_GRID ? 1 : 3, runs[i].kernels);
    dl_compiler_free(c.cc);
  }
}

/* A two-layer classifier with every kind of op in its forward and backward
 * graphs: grad and train_step (ASSIGN) against the interpreter. */
static Case build_mlp(void) {
  Case c = case_new("mlp");
  DlGraph *g = c.g;
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 3), DL_ROLE_INPUT);
  DlNodeId y = dl_input(g, L, "y", SHAPE(N, 2), DL_ROLE_TARGET);
  case_range(&c, y, 0.0, 1.0);
  float w1[12];
  for (int i = 0; i < 12; i++)
    w1[i] = (float)rnd(-1, 1);
  DlNodeId W1 = dl_param(g, L, "h.W", SHAPE(3, 4), (DlInit){.kind = DL_INIT_DATA, .data = w1});
  DlNodeId b1 = dl_param(g, L, "h.b", SHAPE(4), (DlInit){.kind = DL_INIT_CONST, .a = 0.1});
  DlNodeId W2 =
      dl_param(g, L, "W2", SHAPE(4, 2), (DlInit){.kind = DL_INIT_UNIFORM, .a = -1, .b = 1});
  DlNodeId b2 = dl_param(g, L, "b2", SHAPE(2), (DlInit){.kind = DL_INIT_ZERO});
  DlNodeId h =
      dl_unary(g, DL_OP_TANH, L, dl_binary(g, DL_OP_ADD, L, dl_matmul(g, L, x, W1, 0, 0), b1));
  h = dl_binary(g, DL_OP_MUL, L, h, dl_unary(g, DL_OP_SIGMOID, L, h));
  DlNodeId z = dl_binary(g, DL_OP_ADD, L, dl_matmul(g, L, h, W2, 0, 0), b2);
  g->output = dl_softmax(g, DL_OP_SOFTMAX, L, z);
  dl_node_set_name(g, g->output, "probs");
  DlNodeId ce = dl_binary(g, DL_OP_MUL, L, y, dl_softmax(g, DL_OP_LOG_SOFTMAX, L, z));
  DlNodeId sq = dl_binary(g, DL_OP_POW, L, dl_binary(g, DL_OP_SUB, L, g->output, y),
                          dl_const_scalar(g, L, 2.0));
  DlNodeId l1 =
      dl_unary(g, DL_OP_NEG, L,
               dl_reduce(g, DL_OP_MEAN, L, dl_reduce(g, DL_OP_SUM, L, ce, 2, false), 0, false));
  DlNodeId l2 = dl_reduce(g, DL_OP_MEAN, L, sq, 0, false);
  g->loss = dl_binary(g, DL_OP_ADD, L, l1, l2);
  bool ok = !dl_failed(c.cc) && dl_autodiff(g) && dl_append_sgd(g, 0.25);
  CHECK(ok, "mlp: autodiff failed");
  return c;
}

static void test_training(void) {
  static const DlEntryKind entries[] = {DL_ENTRY_FORWARD, DL_ENTRY_GRAD, DL_ENTRY_TRAIN};
  for (int k = 0; k < 3; k++)
    for (size_t e = 0; e < 3; e++) {
      Case c = build_mlp();
      char what[64];
      snprintf(what, sizeof what, "mlp %s%s", dl_entry_names[entries[e]],
               k == 2 ? " (GPU kernels)" : "");
      c.what = what;
      case_run_entry(&c, entries[e], k == 1 ? 0 : 3, k == 2 ? GPU_GRID : CPU_LOOPS);
      dl_compiler_free(c.cc);
    }
}

/* ---- textual and object outputs ---- */

static bool contains(const char *text, const char *needle) {
  return text && strstr(text, needle);
}

static Case build_every_op(void) {
  Case c = case_new("every op");
  DlGraph *g = c.g;
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 8), DL_ROLE_INPUT);
  DlNodeId W = dl_param(g, L, "W", SHAPE(8, 8), (DlInit){.kind = DL_INIT_UNIFORM, .a = -1, .b = 1});
  DlNodeId v = dl_matmul(g, L, x, W, false, false);
  /* every transposition: v @ (x^T @ v)^T */
  v = dl_binary(g, DL_OP_ADD, L,
                dl_matmul(g, L, v, dl_matmul(g, L, x, v, true, false), false, true), v);
  static const DlOp unary[] = {DL_OP_NEG,     DL_OP_EXP,  DL_OP_LOG,  DL_OP_SQRT, DL_OP_TANH,
                               DL_OP_SIGMOID, DL_OP_RELU, DL_OP_STEP, DL_OP_ABS,  DL_OP_SIGN};
  for (size_t i = 0; i < sizeof unary / sizeof unary[0]; i++)
    v = dl_binary(g, DL_OP_ADD, L, v, dl_unary(g, unary[i], L, v));
  static const DlOp binary[] = {DL_OP_SUB, DL_OP_MUL, DL_OP_DIV, DL_OP_POW};
  for (size_t i = 0; i < sizeof binary / sizeof binary[0]; i++)
    v = dl_binary(g, binary[i], L, v, x);
  DlNodeId s = dl_reduce(g, DL_OP_SUM, L, v, 2, true);
  v = dl_binary(g, DL_OP_SUB, L, v, dl_expand(g, L, s, SHAPE(N, 8), true));
  v = dl_softmax(g, DL_OP_LOG_SOFTMAX, L, dl_softmax(g, DL_OP_SOFTMAX, L, v));
  v = dl_reshape(g, L, v, SHAPE(N, 2, 4));
  g->output = v;
  g->loss = dl_reduce(g, DL_OP_MEAN, L, v, 0, false);
  bool ok = !dl_failed(c.cc) && dl_autodiff(g) && dl_append_sgd(g, 0.1);
  CHECK(ok, "every op: autodiff failed");
  return c;
}

static const char *tmp_dir(void) {
  const char *t = getenv("DLCC_TEST_TMP");
  if (!t || !t[0]) t = getenv("TMPDIR");
  return t && t[0] ? t : "/tmp";
}

static const char *find_ptxas(void) {
  const char *env = getenv("PTXAS");
  if (env && access(env, X_OK) == 0) return env;
  if (access("/usr/local/cuda/bin/ptxas", X_OK) == 0) return "/usr/local/cuda/bin/ptxas";
  if (system("command -v ptxas >/dev/null 2>&1") == 0) return "ptxas";
  return NULL;
}

/* Emit PTX for arch at -O<opt> and, where ptxas is installed, assemble it. */
static void check_ptx(Case *c, DlProgram *prog, const char *arch, int opt, const char *ptxas) {
  DlCodegenOptions o = {.target = DL_TARGET_NVPTX, .opt_level = opt, .gpu_arch = arch};
  char *ptx = dl_emit_ptx(c->cc, prog, &o);
  CHECK(ptx != NULL, "%s: no PTX for %s -O%d", c->what, arch, opt);
  if (!ptx) {
    report_diags(c);
    return;
  }
  char target[32];
  snprintf(target, sizeof target, ".target %s", arch);
  CHECK(contains(ptx, target), "%s: PTX lacks '%s'", c->what, target);
  CHECK(contains(ptx, ".visible .entry t_k") && !contains(ptx, "entry_forward"),
        "%s: PTX has kernels and no host entries", c->what);
  if (!ptxas) return;
  char ptx_path[512], cmd[2048];
  snprintf(ptx_path, sizeof ptx_path, "%s/test_codegen_%d_%s_O%d.ptx", tmp_dir(), (int)getpid(),
           arch, opt);
  FILE *pf = fopen(ptx_path, "w");
  CHECK(pf != NULL, "cannot write %s", ptx_path);
  if (!pf) return;
  fputs(ptx, pf);
  fclose(pf);
  snprintf(cmd, sizeof cmd, "%s -arch=%s %s -o %s.cubin", ptxas, arch, ptx_path, ptx_path);
  CHECK(system(cmd) == 0, "%s: ptxas rejected the PTX for %s -O%d: %s", c->what, arch, opt, cmd);
  remove(ptx_path);
  snprintf(cmd, sizeof cmd, "%s.cubin", ptx_path);
  remove(cmd);
}

static void test_outputs(void) {
  Case c = build_every_op();
  DlProgram *prog = dl_plan(c.g, 32);
  CHECK(prog != NULL, "every op: plan failed");
  if (!prog) {
    report_diags(&c);
    dl_compiler_free(c.cc);
    return;
  }
  /* The whole training program, at every level, on the CPU. */
  for (int opt = 0; opt <= 3; opt++) {
    DlCodegenOptions o = {.target = DL_TARGET_CPU, .opt_level = opt, .prefix = "every op"};
    char *ir = dl_emit_llvm_ir(c.cc, prog, &o);
    CHECK(contains(ir, "define void @every_op_entry_train_step(ptr"), "-O%d IR lacks the entry",
          opt);
    CHECK(contains(ir, "@every_op_program = ") && contains(ir, "constant %DlrtProgram {"),
          "-O%d IR lacks the table", opt);
    if (opt == 0)
      CHECK(contains(ir, "define internal void @every_op_k") && contains(ir, "ptr noalias"),
            "-O0 IR lacks noalias kernels");
  }
  char *text = dl_emit_asm(c.cc, prog, NULL);
  CHECK(contains(text, "every_op_entry_forward:") || contains(text, "t_entry_forward:"),
        "asm lacks the entry label");

  /* Elementwise and matmul loops become 8-wide vectors on an AVX2 host. */
  Case v = case_new("vectorise");
  DlNodeId a = dl_input(v.g, L, "a", SHAPE(N, 64), DL_ROLE_INPUT);
  DlNodeId b = dl_input(v.g, L, "b", SHAPE(64), DL_ROLE_INPUT);
  DlNodeId W = dl_param(v.g, L, "W", SHAPE(64, 64), (DlInit){.kind = DL_INIT_ZERO});
  v.g->output = dl_matmul(v.g, L, dl_binary(v.g, DL_OP_ADD, L, a, b), W, false, false);
  DlProgram *vp = dl_plan(v.g, 16);
  char *vir = vp ? dl_emit_llvm_ir(v.cc, vp, NULL) : NULL;
  CHECK(vir != NULL, "vectorise: no IR");
#if defined(__x86_64__)
  __builtin_cpu_init();
  /* 8 lanes with AVX2; LLVM may prefer 16 where AVX-512 is fast. */
  if (__builtin_cpu_supports("avx2"))
    CHECK(contains(vir, "<8 x float>") || contains(vir, "<16 x float>"),
          "O3 IR on an AVX2 host has no <8 x float>");
#endif
  dl_compiler_free(v.cc);

  /* ELF object and C header. */
  char path[512];
  snprintf(path, sizeof path, "%s/test_codegen_%d.o", tmp_dir(), (int)getpid());
  CHECK(dl_emit_object(c.cc, prog, NULL, path), "cannot write %s", path);
  FILE *f = fopen(path, "rb");
  unsigned char magic[4] = {0};
  if (f) {
    CHECK(fread(magic, 1, 4, f) == 4, "short object file");
    fclose(f);
  }
  CHECK(!memcmp(magic, "\177ELF", 4), "object file is not ELF");
  remove(path);
  char *h = dl_emit_c_header(c.cc, prog, NULL);
  CHECK(contains(h, "#include \"dlrt.h\""), "header");
  CHECK(contains(h, "extern const DlrtProgram t_program;"), "header declares the table");
  CHECK(contains(h, "void t_entry_train_step(float *mem, int64_t n);"), "header entries");
  CHECK(contains(h, "static inline DlrtContext *t_create(uint64_t seed, DlrtError *err)"),
        "header helpers");
  CHECK(contains(h, "static inline int t_forward(DlrtContext *ctx, int64_t n, DlrtError *err)"),
        "header forward helper");
  CHECK(contains(h, " *   W: param [8, 8]") && contains(h, " *   x: input [N, 8]"),
        "header documents the tensors");
  CHECK(contains(h, "#ifndef DLCC_T_H"), "header include guard");

  /* PTX for every op, checked by ptxas where it is installed; the
   * unoptimised PTX must assemble too. */
  const char *ptxas = find_ptxas();
  check_ptx(&c, prog, "sm_80", 3, ptxas);
  check_ptx(&c, prog, "sm_90", 3, ptxas);
  check_ptx(&c, prog, "sm_80", 0, ptxas);
  if (!ptxas) fprintf(stderr, "note: ptxas not found; PTX was generated but not assembled\n");
  CHECK(!dl_failed(c.cc), "outputs recorded errors");
  report_diags(&c);
  dl_compiler_free(c.cc);
}

/* PTX of every new op and its gradient, through ptxas where installed. */
static void test_new_ops_ptx(void) {
  Case c = build_new_ops();
  DlProgram *prog = dl_plan(c.g, 32);
  CHECK(prog != NULL, "new ops: plan failed");
  if (prog) {
    const char *ptxas = find_ptxas();
    check_ptx(&c, prog, "sm_80", 3, ptxas);
    check_ptx(&c, prog, "sm_90", 3, ptxas);
    check_ptx(&c, prog, "sm_80", 0, ptxas);
  }
  CHECK(!dl_failed(c.cc), "new ops PTX recorded errors");
  report_diags(&c);
  dl_compiler_free(c.cc);
}

static void test_errors(void) {
  Case c = case_new("errors");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 2), DL_ROLE_INPUT);
  c.g->output = dl_unary(c.g, DL_OP_EXP, L, x);
  DlProgram *prog = dl_plan(c.g, 4);
  DlCodegenOptions bad_level = {.opt_level = 7};
  CHECK(dl_emit_llvm_ir(c.cc, prog, &bad_level) == NULL && dl_failed(c.cc), "-O7 accepted");
  dl_diag_clear(c.cc);
  DlCodegenOptions bad_arch = {.target = DL_TARGET_NVPTX, .opt_level = 3, .gpu_arch = "volta"};
  CHECK(dl_emit_ptx(c.cc, prog, &bad_arch) == NULL && dl_failed(c.cc), "arch 'volta' accepted");
  dl_diag_clear(c.cc);
  CHECK(!dl_emit_object(c.cc, prog, NULL, "/nonexistent-dir/sub/x.o") && dl_failed(c.cc),
        "writing into a missing directory succeeded");
  CHECK(c.cc->ndiags > 0 && strstr(c.cc->diags[0].msg, "/nonexistent-dir/sub/x.o"),
        "the object error names the path");
  dl_diag_clear(c.cc);
  /* A prefix that is not an identifier is made one. */
  DlCodegenOptions odd = {.opt_level = 0, .prefix = "9 lives-model"};
  char *ir = dl_emit_llvm_ir(c.cc, prog, &odd);
  CHECK(contains(ir, "@_9_lives_model_program"), "prefix not sanitised");
  dl_compiler_free(c.cc);
}

int main(void) {
  test_unary();
  test_binary();
  test_matmul();
  test_reduce();
  test_expand_reshape();
  test_softmax();
  test_compare_maximum();
  test_reduce_max();
  test_permute();
  test_slice_pad();
  test_concat();
  test_indexing();
  test_conv();
  test_pool();
  test_dropout();
  test_training();
  test_new_ops_training();
  test_outputs();
  test_new_ops_ptx();
  test_errors();
  if (failures) {
    fprintf(stderr, "test_codegen: %d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf("test_codegen: all %d checks passed\n", checks);
  return 0;
}
