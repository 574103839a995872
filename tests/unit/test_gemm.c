/* test_gemm.c - the packed GEMM (codegen/cg_gemm.c) against the reference
 * interpreter at sizes chosen to hit every edge of its blocking: 1 x 1 x 1,
 * odd sizes smaller than one micro-tile, 255 and 257 (one under and over a
 * multiple of every tile size), k larger than the k block (several k blocks
 * and a remainder), m larger than the m block, p larger than the n block,
 * and k or p given by the batch size at run time, in all four transposition
 * cases; the tile shapes (full, half height, one vector wide) at their
 * edges, and products read in place (small) and through packed panels
 * (large).  Each product is one matmul node; its rows are the batch dimension
 * N where the case says so, so m is a run-time value too.
 *
 * Tolerance: float accumulation in any order is within k * eps of the exact
 * result relative to sum |a_ik b_kj|, which the check uses as its scale.
 */
#include "../../codegen/codegen.h"
#include "check.h"

#include <math.h>
#include <stdlib.h>

#define N DL_DIM_BATCH

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

typedef enum Batch { STATIC, M_IS_N, K_IS_N, P_IS_N } Batch;

typedef struct GemmCase {
  int64_t m, k, p;
  Batch batch;
} GemmCase;

static DlShape shape2(int64_t r, int64_t c) {
  return dl_shape_make(2, (int64_t[]){r, c});
}

/* op(a) [m, k], op(b) [k, p]; the dimension named by `batch` is N. */
static void run_case(const GemmCase *gc, bool ta, bool tb) {
  DlCompiler *cc = dl_compiler_new();
  DlGraph *g = dl_graph_new(cc, "gemm");
  int64_t m = gc->batch == M_IS_N ? N : gc->m, k = gc->batch == K_IS_N ? N : gc->k,
          p = gc->batch == P_IS_N ? N : gc->p;
  int64_t n = gc->batch == M_IS_N ? gc->m : gc->batch == K_IS_N ? gc->k : gc->p;
  DlNodeId a = dl_input(g, DL_NOLOC, "a", ta ? shape2(k, m) : shape2(m, k), DL_ROLE_INPUT);
  DlNodeId b = dl_input(g, DL_NOLOC, "b", tb ? shape2(p, k) : shape2(k, p), DL_ROLE_INPUT);
  g->output = dl_matmul(g, DL_NOLOC, a, b, ta, tb);
  DlProgram *prog = dl_plan(g, gc->batch == STATIC ? 1 : n);
  const DlrtProgram *rp = NULL;
  DlJit *jit = prog ? dl_jit_compile(cc, prog, NULL, &rp) : NULL;
  CHECK(jit != NULL);
  if (!jit) {
    dl_diag_render(cc, stderr, false);
    dl_compiler_free(cc);
    return;
  }
  float *mem = aligned_alloc(64, (size_t)((rp->mem_floats * 4 + 63) & ~63));
  for (int64_t i = 0; i < rp->mem_floats; i++)
    mem[i] = NAN; /* any element the GEMM fails to write shows */
  DlInterp it;
  dl_interp_init(&it, g, n);
  double *abs_val[2];
  DlNodeId leaves[2] = {a, b};
  for (int l = 0; l < 2; l++) {
    int64_t count = dl_shape_numel(&g->nodes[leaves[l]].shape, n);
    double *v = malloc(sizeof(double) * (size_t)count);
    abs_val[l] = malloc(sizeof(double) * (size_t)count);
    for (int64_t i = 0; i < count; i++) {
      float x = rnd();
      v[i] = x;
      abs_val[l][i] = fabs(x);
      mem[prog->offset[leaves[l]] + i] = x;
    }
    it.values[leaves[l]] = v;
  }
  rp->forward(mem, n, NULL);
  DlNodeId eval[1] = {g->output};
  dl_interp_run(&it, eval, 1);
  /* The scale: the same product of absolute values. */
  double *va = it.values[a], *vb = it.values[b];
  it.values[a] = abs_val[0];
  it.values[b] = abs_val[1];
  DlInterp scale;
  dl_interp_init(&scale, g, n);
  scale.values[a] = abs_val[0];
  scale.values[b] = abs_val[1];
  dl_interp_run(&scale, eval, 1);
  it.values[a] = va;
  it.values[b] = vb;
  int64_t mm = gc->m, kk = gc->k, pp = gc->p;
  const float *got = mem + prog->offset[g->output];
  int bad = 0;
  for (int64_t i = 0; i < mm * pp; i++) {
    double want = it.values[g->output][i];
    double tol = 4.0 * (double)kk * 1.2e-7 * scale.values[g->output][i] + 1e-30;
    if (!(fabs((double)got[i] - want) <= tol)) {
      if (bad++ < 3)
        fprintf(stderr, "gemm %lldx%lldx%lld%s%s: C[%lld, %lld] = %.9g, want %.9g\n", (long long)mm,
                (long long)kk, (long long)pp, ta ? " ta" : "", tb ? " tb" : "", (long long)(i / pp),
                (long long)(i % pp), (double)got[i], want);
    }
  }
  CHECK(bad == 0);
  for (int l = 0; l < 2; l++)
    free(abs_val[l]);
  free(va);
  free(vb);
  it.values[a] = it.values[b] = NULL;
  scale.values[a] = scale.values[b] = NULL;
  dl_interp_free(&scale);
  dl_interp_free(&it);
  free(mem);
  dl_jit_free(jit);
  dl_compiler_free(cc);
}

int main(void) {
  static const GemmCase cases[] = {
      {1, 1, 1, STATIC},
      {1, 1, 1, M_IS_N},
      {17, 33, 9, M_IS_N},
      {17, 33, 9, STATIC},
      {2, 3, 70, M_IS_N},
      {255, 255, 255, M_IS_N},
      {257, 257, 257, M_IS_N},
      {19, 1100, 13, M_IS_N}, /* several k blocks and a remainder */
      {300, 20, 40, M_IS_N},  /* more rows than one m block */
      {5, 7, 600, STATIC},    /* more columns than one n block */
      {37, 600, 41, K_IS_N},  /* x^T @ dy: k is the batch */
      {20, 30, 600, P_IS_N},  /* W @ x^T: p is the batch */
      {64, 1, 64, M_IS_N},    /* k = 1 */
      /* The tile shapes at their edges: one vector of columns (p <= 16, and
       * a last panel of 1 or 16 columns), half height (6 rows or fewer, and
       * the last 1 or 6 rows after full tiles), full height with clamped
       * rows (7 and 11 rows). */
      {64, 128, 10, M_IS_N},
      {13, 40, 16, M_IS_N},
      {18, 9, 33, M_IS_N},
      {6, 25, 784, STATIC},
      {16, 150, 64, M_IS_N},
      {7, 70, 48, M_IS_N},
      {11, 300, 17, M_IS_N},
      /* Over GEMM_DIRECT_MACS (2^27): packed panels, a last panel of 10
       * columns and a last tile of 6 rows. */
      {126, 1100, 970, M_IS_N},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int t = 0; t < 4; t++)
      run_case(&cases[i], t & 1, t & 2);
  if (check_failures) fprintf(stderr, "test_gemm: %d checks failed\n", check_failures);
  return check_failures != 0;
}
