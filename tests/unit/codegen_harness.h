/* codegen_harness.h - what the code generator's tests share (test_codegen_*.c).
 *
 * Each case builds a small graph with the IR constructors, plans it, JIT-
 * compiles it, fills inputs and parameters with random values, runs an entry
 * point, and compares every element of the output (and loss, gradients and
 * updated parameters where they exist) with dl_interp in double precision.
 * The DlrtProgram table the JIT returns is checked against the plan on the
 * way.  The cases are split over three executables so that CTest runs them
 * in parallel: test_codegen_ops (elementwise ops, reductions, softmax),
 * test_codegen_layers (matmul, layout, indexing, convolution, pooling,
 * dropout) and test_codegen_programs (whole training programs, fusion, the
 * textual and object outputs, errors).
 */
#ifndef DLCC_CODEGEN_HARNESS_H
#define DLCC_CODEGEN_HARNESS_H

#include "../../codegen/cg_testing.h"
#include "../../codegen/codegen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Helpers each executable may or may not use. */
#define HARNESS static __attribute__((unused))

#define N DL_DIM_BATCH
#define SHAPE(...)                                                                                 \
  dl_shape_make((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
#define L DL_NOLOC

HARNESS int failures;
HARNESS int checks;

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

HARNESS uint64_t rng = 0x9E3779B97F4A7C15ull;
HARNESS double rnd(double lo, double hi) {
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
  bool grid;      /* running the GPU's kernels */
  bool long_sums; /* outputs sum thousands of products (see close_enough) */
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

HARNESS Case case_new(const char *what) {
  Case c = {.what = what, .lo = -2.0, .hi = 2.0};
  c.cc = dl_compiler_new();
  c.g = dl_graph_new(c.cc, "t");
  return c;
}

HARNESS void case_range(Case *c, DlNodeId id, double lo, double hi) {
  c->range[c->nranges].id = id;
  c->range[c->nranges].lo = lo;
  c->range[c->nranges].hi = hi;
  c->nranges++;
}

HARNESS void case_ints(Case *c, DlNodeId id, double lo, double hi) {
  case_range(c, id, lo, hi);
  c->range[c->nranges - 1].ints = true;
}

HARNESS void leaf_range(const Case *c, DlNodeId id, double *lo, double *hi, bool *ints) {
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

HARNESS void report_diags(Case *c) {
  if (c->cc->ndiags) dl_diag_render(c->cc, stderr, false);
}

HARNESS int64_t tensor_numel(const DlrtTensor *t, int64_t n) {
  int64_t k = 1;
  for (int i = 0; i < t->rank; i++)
    k *= t->dims[i] == DLRT_DIM_BATCH ? n : t->dims[i];
  return k;
}

/* Within 2e-5 of want, relatively, or of `scale` where a long float sum
 * with cancellation makes an element's error relative to the tensor's
 * largest magnitude rather than to itself. */
HARNESS bool close_enough(double got, double want, double scale) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want;
  return fabs(got - want) <= 2e-5 + 2e-5 * fmax(fabs(want), scale);
}

/* ---- the program table against the plan ---- */

HARNESS DlNodeId find_node(const DlGraph *g, DlOp op, const char *name) {
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == op && g->nodes[id].name && !strcmp(g->nodes[id].name, name)) return id;
  return DL_NONE;
}

HARNESS void check_dims(const char *what, const DlrtTensor *t, const DlShape *s) {
  bool same = t->rank == s->rank;
  for (int i = 0; same && i < s->rank; i++)
    same = t->dims[i] == s->d[i];
  for (int i = s->rank; same && i < DLRT_MAX_RANK; i++)
    same = t->dims[i] == 0;
  CHECK(same, "%s: tensor '%s' has the wrong dims", what, t->name);
}

HARNESS void check_table(Case *c, const DlProgram *prog, const DlrtProgram *rp) {
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
HARNESS void compare(Case *c, const char *label, int64_t n, const float *got, const double *want,
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

HARNESS void run_at(Case *c, const DlProgram *prog, const DlrtProgram *rp, DlEntryKind entry,
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
    fn(mem, n, NULL);
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

HARNESS const int64_t batch_sizes[] = {1, 13, 64};

/* How kernels are generated: the CPU's loop nests, or the GPU's
 * one-element-per-iteration kernels run on the CPU (cg_testing.h). */
typedef enum Kernels { CPU_LOOPS, GPU_GRID } Kernels;

HARNESS void case_run_entry(Case *c, DlEntryKind entry, int opt, Kernels kernels) {
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
HARNESS void case_run(Case *c) {
  case_run_entry(c, DL_ENTRY_FORWARD, 3, CPU_LOOPS);
  case_run_entry(c, DL_ENTRY_FORWARD, 0, CPU_LOOPS);
  case_run_entry(c, DL_ENTRY_FORWARD, 1, GPU_GRID);
  dl_compiler_free(c->cc);
}

HARNESS DlNodeId find_hyper(const DlGraph *g, const char *name) {
  return find_node(g, DL_OP_HYPER, name);
}

/* The summary line and exit status of an executable. */
HARNESS int harness_finish(const char *name) {
  if (failures) {
    fprintf(stderr, "%s: %d of %d checks failed\n", name, failures, checks);
    return 1;
  }
  printf("%s: all %d checks passed\n", name, checks);
  return 0;
}

#endif
