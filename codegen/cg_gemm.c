/* cg_gemm.c - the CPU matrix product: a cache-blocked GEMM with a
 * register-blocked micro-kernel, generated as LLVM IR.
 *
 *     C[m, p] = op(A) @ op(B),  op(A) [m, k], op(B) [k, p], C row-major
 *
 * The structure is the one of BLIS and OpenBLAS (Goto's algorithm):
 *
 *   for jc in p by NC:                       B block (KC x NC) in L2/L3
 *     for pc in k by KC:
 *       pack B[pc.., jc..] into panels of NR columns, k-major (large only)
 *       for ic in m by MC:                   A block (MC x KC) in L2
 *         pack A[ic.., pc..] into panels of MR rows, k-major (large only)
 *         for jr in nc by NR:                one B panel stays in L1
 *           for ir in mc by MR:
 *             micro-kernel: rows x nv accumulator vectors in registers,
 *             one rank-1 update per k (nv masked vector loads of B, one
 *             broadcast of A per row, rows * nv fused multiply-adds)
 *             store (first k block) or add (later ones) into C, masked
 *
 * Two ways to feed the micro-kernel, chosen at run time:
 *
 * - Small products (m k p <= GEMM_DIRECT_MACS, 2^27 = 512^3) read A and B
 *   where they are: the broadcast of A[i, kk] is a scalar load at any
 *   strides, and B's rows are read as vectors when its columns are
 *   contiguous (b_j = 1; B transposed is still packed).  Packing cost as
 *   much as the product itself at 64 x 64 x 64 (0.67 of OpenBLAS packed,
 *   1.3 direct) and most of the time of the benchmark models' skinny
 *   products (bench/RESULTS.md).
 * - Large ones pack both operands, so the panels stay in L1/L2 and their
 *   loads are contiguous whatever the strides: read in place, A's rows and
 *   B's panel rows 4 KiB apart fall into the same cache sets (1024^3 ran at
 *   0.6 of OpenBLAS direct, 0.9 packed).
 *
 * A panel whose rows are the source's columns (B transposed, or A in its
 * usual layout when it is packed) is transposed in registers 8 x 8 at a
 * time (pack_t_function): element by element, that packing took most of
 * the time of LeNet-5's filter gradients (6 x 784 x 25 with B transposed:
 * 32 GFLOP/s, 90 after).  A product with both operands contiguous along k,
 * at most 12 rows and 64 columns, that is never split between threads, is
 * dot products instead, in a function of its own that only callers with
 * such a product emit and test for (call_gemm, dot_body: 6 x 784 x 25b at
 * 148 to 158 GFLOP/s, 1.4 times OpenBLAS; its sums run in another order,
 * hence the condition on threads).
 *
 * Remainders cost neither zero padding nor a scalar loop: B's vectors and
 * C's stores are masked to the columns that exist, and a row of the tile
 * past m reads the last row that exists (its result is never stored).  The
 * tile shape is picked per tile, at run time: the full MR x nv, half height
 * (MR/2 rows) when at most MR/2 rows are left, one vector wide when at most
 * VL columns are left.  So a product of 6 rows (LeNet-5's convolutions) or
 * 10 columns (an output layer) does not run a 12 x 32 tile two thirds idle.
 * Every element of C is the same chain of multiply-adds in the same order
 * of k (one chain per k block of KC) whatever the tile shape, the packing
 * or the thread that computes it: results are bit-identical for any thread
 * count even when a thread's part of C is fed differently than the whole.
 *
 * The vector width is the host's (LLVMGetHostCPUFeatures, as for every
 * function of the module): 16 floats with AVX-512 (32 vector registers: a
 * 12 x 32 tile, 24 accumulators), 8 with AVX/AVX2 (16 registers: 6 x 16, 12
 * accumulators, the classic Haswell kernel), 4 otherwise.  The multiply-add
 * is llvm.fmuladd: fused where the CPU has FMA, never a libcall where it
 * has not.
 *
 * One function serves every transposition case and size (JIT time is per
 * function: three micro-kernels, one per tile shape, in it), taking m, k,
 * p and the strides at run time, so a size that depends on the batch
 * dimension needs no recompilation; kernels call it once per matrix of the
 * batch.  The packing buffers are on the stack (at most (MC + NC) * KC
 * floats, about 0.6 MiB), so calls are reentrant: the thread pool runs
 * several at once.
 */
#include "cg_internal.h"

#include <llvm-c/DebugInfo.h>

#include <string.h>

/* Blocking for one vector width. */
typedef struct GemmGeom {
  int lanes;  /* floats per vector register */
  int mr, nv; /* micro-tile: mr rows x nv vectors of columns */
  int nr;     /* nv * lanes */
  int kc, mc, nc;
} GemmGeom;

static GemmGeom gemm_geom(const Cg *cg) {
  const char *feat = cg->features ? cg->features : "";
  GemmGeom g;
  if (strstr(feat, "+avx512f"))
    g = (GemmGeom){.lanes = 16, .mr = 12, .nv = 2, .kc = 256, .mc = 144, .nc = 512};
  else if (strstr(feat, "+avx"))
    g = (GemmGeom){.lanes = 8, .mr = 6, .nv = 2, .kc = 256, .mc = 120, .nc = 512};
  else
    g = (GemmGeom){.lanes = 4, .mr = 6, .nv = 2, .kc = 256, .mc = 120, .nc = 512};
  g.nr = g.nv * g.lanes;
  return g;
}

/* The function being built. */
typedef struct Gemm {
  Cg *cg;
  LLVMBuilderRef b;
  LLVMValueRef fn;
  GemmGeom geo;
  LLVMTypeRef t_vec;
  LLVMValueRef c, a, bm;   /* C, A, B */
  LLVMValueRef m, k, p;    /* i64 sizes */
  LLVMValueRef ldc;        /* C's row stride */
  LLVMValueRef a_i, a_k;   /* A's element strides along i and k */
  LLVMValueRef b_k, b_j;   /* B's along k and j */
  LLVMValueRef accumulate; /* i1: C += A B instead of C = A B */
  LLVMValueRef ap, bp;     /* packed A block, packed B block */
  bool plain_loops;        /* loops closed now are neither unrolled nor vectorised */
} Gemm;

static LLVMValueRef ci(Gemm *g, int64_t v) {
  return LLVMConstInt(g->cg->t_i64, (unsigned long long)v, true);
}
static LLVMValueRef add(Gemm *g, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildNSWAdd(g->b, x, y, "");
}
static LLVMValueRef sub(Gemm *g, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildNSWSub(g->b, x, y, "");
}
static LLVMValueRef mul(Gemm *g, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildNSWMul(g->b, x, y, "");
}
static LLVMValueRef min64(Gemm *g, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, x, y, ""), x, y, "");
}
static LLVMValueRef gep(Gemm *g, LLVMValueRef base, LLVMValueRef off) {
  return LLVMBuildInBoundsGEP2(g->b, g->cg->t_f32, base, &off, 1, "");
}
static LLVMValueRef load(Gemm *g, LLVMTypeRef t, LLVMValueRef ptr, unsigned align) {
  LLVMValueRef v = LLVMBuildLoad2(g->b, t, ptr, "");
  LLVMSetAlignment(v, align);
  return v;
}
static void store(Gemm *g, LLVMValueRef v, LLVMValueRef ptr, unsigned align) {
  LLVMSetAlignment(LLVMBuildStore(g->b, v, ptr), align);
}

/* Products of at most this many multiply-adds read A and B in place. */
#define GEMM_DIRECT_MACS (1 << 27)

/* for (iv = start; iv < end; iv += step), with up to GEMM_MAX_CARRY values
 * carried around the loop as phis (the micro-kernel's accumulators). */
#define GEMM_MAX_CARRY 64

typedef struct GLoop {
  LLVMBasicBlockRef header, exit;
  LLVMValueRef iv;
  int ncarry;
  LLVMValueRef carry[GEMM_MAX_CARRY]; /* the phis: the values in the body */
} GLoop;

static LLVMValueRef loop_open(Gemm *g, GLoop *l, LLVMValueRef start, LLVMValueRef end,
                              const LLVMValueRef *init, int ncarry) {
  Cg *cg = g->cg;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
  l->header = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "gloop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "gbody");
  l->exit = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "gdone");
  LLVMBuildBr(g->b, l->header);
  LLVMPositionBuilderAtEnd(g->b, l->header);
  l->iv = LLVMBuildPhi(g->b, cg->t_i64, "");
  LLVMAddIncoming(l->iv, &start, &pre, 1);
  l->ncarry = ncarry;
  for (int i = 0; i < ncarry; i++) {
    l->carry[i] = LLVMBuildPhi(g->b, LLVMTypeOf(init[i]), "");
    LLVMValueRef v = init[i];
    LLVMAddIncoming(l->carry[i], &v, &pre, 1);
  }
  LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, l->iv, end, ""), body, l->exit);
  LLVMPositionBuilderAtEnd(g->b, body);
  return l->iv;
}

/* Close the loop; next[] are the carried values at the end of the body.
 * After the loop the builder is in the exit block, where l->carry[] hold
 * the final values. */
static void loop_close(Gemm *g, GLoop *l, LLVMValueRef step, const LLVMValueRef *next) {
  LLVMValueRef iv_next = add(g, l->iv, step);
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
  LLVMAddIncoming(l->iv, &iv_next, &latch, 1);
  for (int i = 0; i < l->ncarry; i++) {
    LLVMValueRef v = next[i];
    LLVMAddIncoming(l->carry[i], &v, &latch, 1);
  }
  LLVMValueRef br = LLVMBuildBr(g->b, l->header);
  LLVMPositionBuilderAtEnd(g->b, l->exit);
  if (g->plain_loops) cg_plain_loop(g->cg, br);
}

static LLVMValueRef loop_simple(Gemm *g, GLoop *l, LLVMValueRef start, LLVMValueRef end) {
  return loop_open(g, l, start, end, NULL, 0);
}

/* if (cond) { then } else { otherwise }: returns the two blocks and the join;
 * the builder is left in `then`. */
typedef struct GIf {
  LLVMBasicBlockRef then, otherwise, join;
} GIf;

static void if_open(Gemm *g, GIf *f, LLVMValueRef cond) {
  Cg *cg = g->cg;
  f->then = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "gthen");
  f->otherwise = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "gelse");
  f->join = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "gjoin");
  LLVMBuildCondBr(g->b, cond, f->then, f->otherwise);
  LLVMPositionBuilderAtEnd(g->b, f->then);
}
static void if_else(Gemm *g, GIf *f) {
  LLVMBuildBr(g->b, f->join);
  LLVMPositionBuilderAtEnd(g->b, f->otherwise);
}
static void if_close(Gemm *g, GIf *f) {
  LLVMBuildBr(g->b, f->join);
  LLVMPositionBuilderAtEnd(g->b, f->join);
}

static LLVMValueRef pick(Gemm *g, LLVMValueRef cond, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildSelect(g->b, cond, x, y, "");
}

/* ---- vector memory access ------------------------------------------------ */

static LLVMValueRef call_intrinsic(Gemm *g, const char *name, LLVMTypeRef *overload, int noverload,
                                   LLVMValueRef *args, unsigned nargs) {
  Cg *cg = g->cg;
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMValueRef decl = LLVMGetIntrinsicDeclaration(cg->mod, id, overload, (size_t)noverload);
  return LLVMBuildCall2(g->b, LLVMIntrinsicGetType(cg->ctx, id, overload, (size_t)noverload), decl,
                        args, nargs, "");
}

/* A vector of C's row or of B's: lanes outside the mask are neither read
 * (they may lie past the end of the matrix) nor written. */
static LLVMValueRef masked_load(Gemm *g, LLVMValueRef ptr, LLVMValueRef mask) {
  LLVMTypeRef ov[2] = {g->t_vec, g->cg->t_ptr};
  LLVMValueRef args[4] = {ptr, LLVMConstInt(g->cg->t_i32, 4, false), mask, LLVMConstNull(g->t_vec)};
  return call_intrinsic(g, "llvm.masked.load", ov, 2, args, 4);
}
static void masked_store(Gemm *g, LLVMValueRef val, LLVMValueRef ptr, LLVMValueRef mask) {
  LLVMTypeRef ov[2] = {g->t_vec, g->cg->t_ptr};
  LLVMValueRef args[4] = {val, ptr, LLVMConstInt(g->cg->t_i32, 4, false), mask};
  call_intrinsic(g, "llvm.masked.store", ov, 2, args, 4);
}

static void set_fn_attrs(Cg *cg, LLVMValueRef fn, unsigned noalias_params);

/* void <prefix>_gemm_pack_t(float *dst, float *src, i64 valid, i64 kc,
 * i64 w, i64 s_r, i64 s_k): a panel whose rows are columns of the source,
 * dst[kk * w + r] = src[r * s_r + kk * s_k] for r < valid, kk < kc.
 * Element by element (a strided store each) this took most of the time of
 * products with a transposed B and few rows (LeNet-5's filter gradients:
 * 6 x 784 x 25 ran at 0.29 of OpenBLAS).  So, when the source is
 * contiguous along k, VL rows x VL values of k are loaded as VL vectors
 * (rows past `valid` re-read the last one) and transposed in registers:
 * log2 VL rounds, each swapping the off-diagonal b x b blocks of pairs of
 * rows b apart with two-source shuffles.  The last kc mod VL values of k,
 * or all of them when k is strided, are gathered a vector at a time.
 * Stores are masked to the rows that exist. */
static LLVMValueRef pack_t_function(Cg *cg) {
  const char *name = dl_arena_printf(cg->cc->arena, "%s_gemm_pack_t", cg->prefix);
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
  if (fn) return fn;
  LLVMTypeRef params[7] = {cg->t_ptr, cg->t_ptr, cg->t_i64, cg->t_i64,
                           cg->t_i64, cg->t_i64, cg->t_i64};
  fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->t_void, params, 7, false));
  set_fn_attrs(cg, fn, 2);
  Gemm gg = {.cg = cg, .fn = fn, .geo = gemm_geom(cg)};
  Gemm *g = &gg;
  /* Eight lanes at most: this function added about 12 ms to the GEMM's
   * JIT time with 8 x 8 transposes, 14 ms with 16 x 16 ones, and both
   * packed about as fast. */
  int lanes = g->geo.lanes < 8 ? g->geo.lanes : 8;
  g->t_vec = LLVMVectorType(cg->t_f32, (unsigned)lanes);
  g->plain_loops = true;
  g->b = LLVMCreateBuilderInContext(cg->ctx);
  LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
  LLVMValueRef dst = LLVMGetParam(fn, 0), src = LLVMGetParam(fn, 1), valid = LLVMGetParam(fn, 2);
  LLVMValueRef kc = LLVMGetParam(fn, 3), w = LLVMGetParam(fn, 4), s_r = LLVMGetParam(fn, 5);
  LLVMValueRef s_k = LLVMGetParam(fn, 6);

  LLVMTypeRef t_i32v = LLVMVectorType(cg->t_i32, (unsigned)lanes);
  LLVMTypeRef t_lanes = LLVMVectorType(cg->t_i64, (unsigned)lanes);
  LLVMTypeRef t_ptrs = LLVMVectorType(cg->t_ptr, (unsigned)lanes);
  LLVMValueRef iota[16];
  for (int j = 0; j < lanes; j++)
    iota[j] = ci(g, j);
  LLVMValueRef lane_index = LLVMConstVector(iota, (unsigned)lanes);
  LLVMValueRef vectors = LLVMBuildSDiv(g->b, add(g, valid, ci(g, lanes - 1)), ci(g, lanes), "");
  LLVMValueRef last = sub(g, valid, ci(g, 1));
  LLVMValueRef unit_k = LLVMBuildICmp(g->b, LLVMIntEQ, s_k, ci(g, 1), "");
  LLVMValueRef kfull =
      pick(g, unit_k, LLVMBuildAnd(g->b, kc, ci(g, -(int64_t)lanes), ""), ci(g, 0));

  GLoop lv, lk, lt;
  LLVMValueRef v = loop_simple(g, &lv, ci(g, 0), vectors);
  LLVMValueRef r0 = mul(g, v, ci(g, lanes));
  LLVMValueRef r0_vec = LLVMBuildInsertElement(g->b, LLVMGetPoison(t_lanes), r0, ci(g, 0), "");
  r0_vec = LLVMBuildShuffleVector(g->b, r0_vec, LLVMGetPoison(t_lanes), LLVMConstNull(t_i32v), "");
  LLVMValueRef rows = LLVMBuildAdd(g->b, r0_vec, lane_index, "");
  LLVMValueRef valid_vec =
      LLVMBuildInsertElement(g->b, LLVMGetPoison(t_lanes), valid, ci(g, 0), "");
  valid_vec =
      LLVMBuildShuffleVector(g->b, valid_vec, LLVMGetPoison(t_lanes), LLVMConstNull(t_i32v), "");
  LLVMValueRef mask = LLVMBuildICmp(g->b, LLVMIntSLT, rows, valid_vec, "");
  LLVMValueRef dcol = gep(g, dst, r0);

  /* Whole blocks of VL values of k, transposed in registers. */
  LLVMValueRef kb = loop_simple(g, &lk, ci(g, 0), kfull);
  LLVMValueRef x[16];
  for (int j = 0; j < lanes; j++) {
    LLVMValueRef row = min64(g, add(g, r0, ci(g, j)), last);
    x[j] = load(g, g->t_vec, gep(g, src, add(g, mul(g, row, s_r), kb)), 4);
  }
  for (int b = 1; b < lanes; b *= 2) {
    LLVMValueRef m1[16], m2[16];
    for (int j = 0; j < lanes; j++) {
      m1[j] = LLVMConstInt(cg->t_i32, (unsigned)((j & b) == 0 ? j : lanes + j - b), false);
      m2[j] = LLVMConstInt(cg->t_i32, (unsigned)((j & b) == 0 ? j + b : lanes + j), false);
    }
    LLVMValueRef k1 = LLVMConstVector(m1, (unsigned)lanes);
    LLVMValueRef k2 = LLVMConstVector(m2, (unsigned)lanes);
    for (int i = 0; i < lanes; i++) {
      if (i & b) continue;
      LLVMValueRef upper = LLVMBuildShuffleVector(g->b, x[i], x[i + b], k1, "");
      x[i + b] = LLVMBuildShuffleVector(g->b, x[i], x[i + b], k2, "");
      x[i] = upper;
    }
  }
  for (int t = 0; t < lanes; t++)
    masked_store(g, x[t], gep(g, dcol, mul(g, add(g, kb, ci(g, t)), w)), mask);
  loop_close(g, &lk, ci(g, lanes), NULL);

  /* The rest of k, gathered: lane j reads row r0 + j, s_r apart. */
  LLVMValueRef offs = LLVMBuildMul(
      g->b, rows,
      LLVMBuildShuffleVector(
          g->b, LLVMBuildInsertElement(g->b, LLVMGetPoison(t_lanes), s_r, ci(g, 0), ""),
          LLVMGetPoison(t_lanes), LLVMConstNull(t_i32v), ""),
      "");
  LLVMValueRef kk = loop_simple(g, &lt, kfull, kc);
  LLVMValueRef ptrs = LLVMBuildGEP2(g->b, cg->t_f32, gep(g, src, mul(g, kk, s_k)), &offs, 1, "");
  LLVMTypeRef ov[2] = {g->t_vec, t_ptrs};
  LLVMValueRef gargs[4] = {ptrs, LLVMConstInt(cg->t_i32, 4, false), mask, LLVMConstNull(g->t_vec)};
  LLVMValueRef vals = call_intrinsic(g, "llvm.masked.gather", ov, 2, gargs, 4);
  masked_store(g, vals, gep(g, dcol, mul(g, kk, w)), mask);
  loop_close(g, &lt, ci(g, 1), NULL);
  loop_close(g, &lv, ci(g, 1), NULL);
  LLVMBuildRetVoid(g->b);
  LLVMDisposeBuilder(g->b);
  return fn;
}

/* ---- packing ---------------------------------------------------------------
 *
 * A panel holds `width` (MR or NR) rows of the panel's index r (i for A, j
 * for B) for kc values of k, k-major: dst[kk * width + r].  The source
 * element (r, kk) is at src + r * s_r + kk * s_k.  Rows past `valid` are
 * left as they are: the micro-kernel never reads them (B's columns are
 * masked, A's rows clamped).  The loop order reads the source contiguously:
 * r innermost when it is the unit-stride index, kk innermost otherwise. */
static void pack_panel(Gemm *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef valid,
                       LLVMValueRef kc, int width, LLVMValueRef s_r, LLVMValueRef s_k,
                       bool r_contiguous) {
  LLVMValueRef w = ci(g, width);
  GLoop lo, li;
  if (r_contiguous) {
    LLVMValueRef kk = loop_simple(g, &lo, ci(g, 0), kc);
    LLVMValueRef srow = gep(g, src, mul(g, kk, s_k)), drow = gep(g, dst, mul(g, kk, w));
    LLVMValueRef r = loop_simple(g, &li, ci(g, 0), valid);
    store(g, load(g, g->cg->t_f32, gep(g, srow, mul(g, r, s_r)), 4), gep(g, drow, r), 4);
    g->plain_loops = false;
    loop_close(g, &li, ci(g, 1), NULL);
    g->plain_loops = true;
    loop_close(g, &lo, ci(g, 1), NULL);
    return;
  }
  /* Rows of the panel are columns of the source: transposed (see
   * pack_t_function), in a function of its own that A's and B's packing
   * share (its code is most of the GEMM's JIT time otherwise). */
  (void)li;
  LLVMValueRef pt = pack_t_function(g->cg);
  LLVMValueRef args[7] = {dst, src, valid, kc, w, s_r, s_k};
  LLVMBuildCall2(g->b, LLVMGlobalGetValueType(pt), pt, args, 7, "");
}

/* Pack `rows` rows (i of A or j of B) starting at src into consecutive
 * panels of `width` rows each. */
static void pack_block(Gemm *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef rows,
                       LLVMValueRef kc, int width, LLVMValueRef s_r, LLVMValueRef s_k,
                       bool r_contiguous) {
  GLoop l;
  LLVMValueRef r0 = loop_simple(g, &l, ci(g, 0), rows);
  LLVMValueRef valid = min64(g, ci(g, width), sub(g, rows, r0));
  pack_panel(g, gep(g, dst, mul(g, r0, kc)), gep(g, src, mul(g, r0, s_r)), valid, kc, width, s_r,
             s_k, r_contiguous);
  loop_close(g, &l, ci(g, width), NULL);
}

/* The same, choosing the loop order at run time: contiguous along r when
 * s_r is 1 (the row-major source's rows are the panel's rows), else along
 * k.  Both orders are generated so one function serves every transposition. */
static void pack_block_any(Gemm *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef rows,
                           LLVMValueRef kc, int width, LLVMValueRef s_r, LLVMValueRef s_k) {
  GIf unit;
  if_open(g, &unit, LLVMBuildICmp(g->b, LLVMIntEQ, s_r, ci(g, 1), ""));
  pack_block(g, dst, src, rows, kc, width, ci(g, 1), s_k, true);
  if_else(g, &unit);
  pack_block(g, dst, src, rows, kc, width, s_r, s_k, false);
  if_close(g, &unit);
}

/* ---- the micro-kernel ------------------------------------------------------ */

/* A micro-tile's shape: rows x vectors of columns.  The full tile is MR x
 * nv; a half-height one (MR/2 rows) serves the last rows of a product with
 * few rows, a one-vector one the last columns of a product with few
 * columns: fewer idle accumulators (a 12 x 32 tile computing 6 rows or 10
 * columns wastes half or two thirds of its multiply-adds). */
typedef struct Tile {
  int rows, nv;
} Tile;

static LLVMValueRef splat(Gemm *g, LLVMValueRef x) {
  LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetPoison(g->t_vec), x,
                                          LLVMConstInt(g->cg->t_i32, 0, false), "");
  LLVMValueRef mask = LLVMConstNull(LLVMVectorType(g->cg->t_i32, (unsigned)g->geo.lanes));
  return LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(g->t_vec), mask, "");
}

static LLVMValueRef fmuladd(Gemm *g, LLVMValueRef x, LLVMValueRef y, LLVMValueRef acc) {
  LLVMValueRef args[3] = {x, y, acc};
  return call_intrinsic(g, "llvm.fmuladd", &g->t_vec, 1, args, 3);
}

/* Where the micro-kernel reads its operands: A's row r at arow[r], its k
 * values a_k apart (a packed panel: rows 1 apart, k MR apart; or A itself);
 * B's row kk at bpanel + kk * b_k, its columns contiguous (a packed panel:
 * b_k = NR; or B itself when its rows are contiguous), nv vectors under
 * masks[] (the columns that exist). */
typedef struct Operands {
  LLVMValueRef arow[GEMM_MAX_CARRY], a_k;
  LLVMValueRef bpanel, b_k, masks[8];
} Operands;

/* acc[r * nv + v] = sum over kk < kc of A(r, kk) * B(kk, v * VL ..), one
 * rank-1 update per kk, in the order of kk: every element of C is the same
 * chain of multiply-adds whatever the tile shape, the packing or the thread
 * that computes it. */
static void micro_kernel(Gemm *g, Tile t, const Operands *o, LLVMValueRef kc, LLVMValueRef *acc) {
  const GemmGeom *geo = &g->geo;
  int nacc = t.rows * t.nv;
  LLVMValueRef init[GEMM_MAX_CARRY];
  for (int i = 0; i < nacc; i++)
    init[i] = LLVMConstNull(g->t_vec);
  GLoop l;
  LLVMValueRef kk = loop_open(g, &l, ci(g, 0), kc, init, nacc);
  LLVMValueRef aoff = mul(g, kk, o->a_k);
  LLVMValueRef brow = gep(g, o->bpanel, mul(g, kk, o->b_k));
  LLVMValueRef bv[8];
  for (int v = 0; v < t.nv; v++)
    bv[v] = masked_load(g, gep(g, brow, ci(g, (int64_t)v * geo->lanes)), o->masks[v]);
  LLVMValueRef next[GEMM_MAX_CARRY] = {0};
  for (int r = 0; r < t.rows; r++) {
    LLVMValueRef av = splat(g, load(g, g->cg->t_f32, gep(g, o->arow[r], aoff), 4));
    for (int v = 0; v < t.nv; v++)
      next[r * t.nv + v] = fmuladd(g, av, bv[v], l.carry[r * t.nv + v]);
  }
  /* Not unrolled either: with three tile shapes, unrolling cost 5 ms of JIT
   * time per GEMM function and gained nothing measurable (the loop's own
   * cost is two instructions next to 12 to 24 multiply-adds). */
  loop_close(g, &l, ci(g, 1), next);
  for (int i = 0; i < nacc; i++)
    acc[i] = l.carry[i];
}

/* Write the tile's mr x nr corner: C = acc on the first k block (fresh),
 * C += acc on later ones or when the call accumulates.  Columns past nr are
 * masked off; rows at or past mr are skipped (rows below `surely` always
 * exist for this tile shape).  Branches on the rows compiled faster than
 * masks for them. */
static void store_tile(Gemm *g, Tile t, LLVMValueRef ctile, LLVMValueRef mr, int surely,
                       LLVMValueRef fresh, const LLVMValueRef *masks, const LLVMValueRef *acc) {
  for (int r = 0; r < t.rows; r++) {
    GIf exists = {0};
    if (r >= surely) if_open(g, &exists, LLVMBuildICmp(g->b, LLVMIntSLT, ci(g, r), mr, ""));
    LLVMValueRef crow = gep(g, ctile, mul(g, ci(g, r), g->ldc));
    for (int v = 0; v < t.nv; v++) {
      LLVMValueRef ptr = gep(g, crow, ci(g, (int64_t)v * g->geo.lanes));
      LLVMValueRef val = acc[r * t.nv + v];
      LLVMValueRef sum = LLVMBuildFAdd(g->b, masked_load(g, ptr, masks[v]), val, "");
      masked_store(g, LLVMBuildSelect(g->b, fresh, val, sum, ""), ptr, masks[v]);
    }
    if (r >= surely) {
      if_else(g, &exists);
      if_close(g, &exists);
    }
  }
}

/* One tile: its operands' rows (A's clamped to the last that exists: a row
 * past mr reads a row that does exist, and its result is never stored),
 * then the micro-kernel and the store. */
static void tile_product(Gemm *g, Tile t, int surely, Operands *o, LLVMValueRef abase,
                         LLVMValueRef a_r, LLVMValueRef mr, LLVMValueRef kc, LLVMValueRef ctile,
                         LLVMValueRef fresh) {
  LLVMValueRef last = sub(g, mr, ci(g, 1));
  for (int r = 0; r < t.rows; r++) {
    LLVMValueRef row = r < surely ? ci(g, r) : min64(g, ci(g, r), last);
    o->arow[r] = gep(g, abase, mul(g, row, a_r));
  }
  LLVMValueRef acc[GEMM_MAX_CARRY];
  micro_kernel(g, t, o, kc, acc);
  store_tile(g, t, ctile, mr, surely, fresh, o->masks, acc);
}

/* ---- the function ------------------------------------------------------------ */

static LLVMValueRef stack_buffer(Gemm *g, int64_t floats, const char *name) {
  LLVMValueRef buf = LLVMBuildArrayAlloca(g->b, g->cg->t_f32, ci(g, floats), name);
  LLVMSetAlignment(buf, 64);
  return buf;
}

/* A product whose A and B are both contiguous along k, with few rows and
 * columns (LeNet-5's filter gradients, dy_s @ cols^T: 6 x 784 x 25), is
 * dot products: each element of C is a vector sum over k (lane by lane,
 * then the lanes added), DOT_ROWS rows x DOT_COLS columns of C at a time so
 * that each load serves several multiply-adds.  Packing B for the tiles
 * cost more than the product there (6 x 784 x 25 ran at 0.85 of OpenBLAS).
 * The sum is in another order than the tiles' (lanes, then a tree), so it
 * is only taken where the caller knows the product is never split between
 * threads and may be that small (call_gemm): the bits then do not depend
 * on the thread count, and a model with no such product has no dot
 * function to compile (it costs about 12 ms of JIT time). */
#define DOT_COLS 4
#define DOT_MAX_ROWS 12
#define DOT_MAX_COLS 64

static LLVMValueRef reduce_add(Gemm *g, LLVMValueRef v) {
  LLVMValueRef args[2] = {LLVMConstReal(g->cg->t_f32, 0.0), v};
  LLVMValueRef sum = call_intrinsic(g, "llvm.vector.reduce.fadd", &g->t_vec, 1, args, 2);
  LLVMSetFastMathFlags(sum, LLVMFastMathAllowReassoc); /* a fixed tree, not lane by lane */
  return sum;
}

static void dot_body(Gemm *g) {
  Cg *cg = g->cg;
  int lanes = g->geo.lanes, rows = lanes >= 16 ? 3 : 2, nacc = rows * DOT_COLS;
  LLVMValueRef last_i = sub(g, g->m, ci(g, 1)), last_j = sub(g, g->p, ci(g, 1));
  LLVMTypeRef t_lanes = LLVMVectorType(cg->t_i64, (unsigned)lanes);
  LLVMValueRef iota[16];
  for (int j = 0; j < lanes; j++)
    iota[j] = ci(g, j);
  LLVMValueRef lane = LLVMConstVector(iota, (unsigned)lanes);
  LLVMValueRef sums = LLVMBuildArrayAlloca(g->b, cg->t_f32, ci(g, nacc), "sums");
  GLoop li, lj, lk, lr, lt;
  LLVMValueRef i0 = loop_simple(g, &li, ci(g, 0), g->m);
  LLVMValueRef j0 = loop_simple(g, &lj, ci(g, 0), g->p);
  /* Rows and columns past the edge re-read the last one (never stored). */
  LLVMValueRef arow[4], bcol[DOT_COLS];
  for (int r = 0; r < rows; r++)
    arow[r] = gep(g, g->a, mul(g, min64(g, add(g, i0, ci(g, r)), last_i), g->a_i));
  for (int t = 0; t < DOT_COLS; t++)
    bcol[t] = gep(g, g->bm, mul(g, min64(g, add(g, j0, ci(g, t)), last_j), g->b_j));
  LLVMValueRef init[DOT_MAX_ROWS];
  for (int a = 0; a < nacc; a++)
    init[a] = LLVMConstNull(g->t_vec);
  /* k by whole vectors, the last one masked to the values that exist. */
  LLVMValueRef kk = loop_open(g, &lk, ci(g, 0), g->k, init, nacc);
  LLVMValueRef left =
      LLVMBuildInsertElement(g->b, LLVMGetPoison(t_lanes), sub(g, g->k, kk), ci(g, 0), "");
  left = LLVMBuildShuffleVector(g->b, left, LLVMGetPoison(t_lanes),
                                LLVMConstNull(LLVMVectorType(cg->t_i32, (unsigned)lanes)), "");
  LLVMValueRef mask = LLVMBuildICmp(g->b, LLVMIntSLT, lane, left, "");
  LLVMValueRef next[DOT_MAX_ROWS], av[4], bv[DOT_COLS];
  for (int r = 0; r < rows; r++)
    av[r] = masked_load(g, gep(g, arow[r], kk), mask);
  for (int t = 0; t < DOT_COLS; t++)
    bv[t] = masked_load(g, gep(g, bcol[t], kk), mask);
  for (int r = 0; r < rows; r++)
    for (int t = 0; t < DOT_COLS; t++)
      next[r * DOT_COLS + t] = fmuladd(g, av[r], bv[t], lk.carry[r * DOT_COLS + t]);
  loop_close(g, &lk, ci(g, lanes), next);
  for (int a = 0; a < nacc; a++)
    store(g, reduce_add(g, lk.carry[a]), gep(g, sums, ci(g, a)), 4);
  /* The block's elements that exist, into C. */
  LLVMValueRef r = loop_simple(g, &lr, ci(g, 0), min64(g, ci(g, rows), sub(g, g->m, i0)));
  LLVMValueRef t = loop_simple(g, &lt, ci(g, 0), min64(g, ci(g, DOT_COLS), sub(g, g->p, j0)));
  LLVMValueRef at = gep(g, g->c, add(g, mul(g, add(g, i0, r), g->ldc), add(g, j0, t)));
  LLVMValueRef sum = load(g, cg->t_f32, gep(g, sums, add(g, mul(g, r, ci(g, DOT_COLS)), t)), 4);
  LLVMValueRef old = LLVMBuildSelect(g->b, g->accumulate, load(g, cg->t_f32, at, 4),
                                     LLVMConstReal(cg->t_f32, 0.0), "");
  store(g, LLVMBuildFAdd(g->b, old, sum, ""), at, 4);
  loop_close(g, &lt, ci(g, 1), NULL);
  loop_close(g, &lr, ci(g, 1), NULL);
  loop_close(g, &lj, ci(g, DOT_COLS), NULL);
  loop_close(g, &li, ci(g, rows), NULL);
}

/* void <prefix>_gemm_dot(float *c, float *a, float *b, i64 m, i64 k, i64 p,
 * i64 ldc, i64 a_i, i64 b_j, i1 acc): dot_body, A's and B's k unit-strided. */
#define GEMM_DOT_NARGS 10
static LLVMValueRef dot_function(Cg *cg) {
  const char *name = dl_arena_printf(cg->cc->arena, "%s_gemm_dot", cg->prefix);
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
  if (fn) return fn;
  LLVMTypeRef params[GEMM_DOT_NARGS];
  for (int i = 0; i < GEMM_DOT_NARGS; i++)
    params[i] = i < 3 ? cg->t_ptr : i == 9 ? LLVMInt1TypeInContext(cg->ctx) : cg->t_i64;
  fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->t_void, params, GEMM_DOT_NARGS, false));
  set_fn_attrs(cg, fn, 3);
  Gemm d = {.cg = cg, .fn = fn, .geo = gemm_geom(cg), .plain_loops = true};
  d.t_vec = LLVMVectorType(cg->t_f32, (unsigned)d.geo.lanes);
  LLVMValueRef *slots[GEMM_DOT_NARGS] = {&d.c, &d.a,   &d.bm,  &d.m,   &d.k,
                                         &d.p, &d.ldc, &d.a_i, &d.b_j, &d.accumulate};
  for (unsigned i = 0; i < GEMM_DOT_NARGS; i++)
    *slots[i] = LLVMGetParam(fn, i);
  d.b = LLVMCreateBuilderInContext(cg->ctx);
  LLVMPositionBuilderAtEnd(d.b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
  dot_body(&d);
  LLVMBuildRetVoid(d.b);
  LLVMDisposeBuilder(d.b);
  return fn;
}

static void gemm_body(Gemm *g) {
  const GemmGeom *geo = &g->geo;
  Cg *cg = g->cg;
  g->ap = stack_buffer(g, (int64_t)geo->mc * geo->kc, "apack");
  g->bp = stack_buffer(g, (int64_t)geo->kc * geo->nc, "bpack");
  /* Only the contiguous packing copies are worth LLVM's unrolling and
   * vectorising; elsewhere those cost JIT time and gain nothing measurable. */
  g->plain_loops = true;

  /* Small products read A and B where they are (see the file comment). */
  LLVMValueRef macs = mul(g, mul(g, g->m, g->k), g->p);
  LLVMValueRef small = LLVMBuildICmp(g->b, LLVMIntSLE, macs, ci(g, GEMM_DIRECT_MACS), "");
  LLVMValueRef direct_a = small;
  LLVMValueRef direct_b =
      LLVMBuildAnd(g->b, small, LLVMBuildICmp(g->b, LLVMIntEQ, g->b_j, ci(g, 1), ""), "direct_b");
  LLVMValueRef a_r = pick(g, direct_a, g->a_i, ci(g, 1));
  LLVMValueRef a_k = pick(g, direct_a, g->a_k, ci(g, geo->mr));
  LLVMValueRef b_k = pick(g, direct_b, g->b_k, ci(g, geo->nr));

  GLoop ljc, lpc, lic, ljr, lir;
  LLVMValueRef jc = loop_simple(g, &ljc, ci(g, 0), g->p);
  LLVMValueRef nc = min64(g, ci(g, geo->nc), sub(g, g->p, jc));
  LLVMValueRef pc = loop_simple(g, &lpc, ci(g, 0), g->k);
  LLVMValueRef kc = min64(g, ci(g, geo->kc), sub(g, g->k, pc));
  LLVMValueRef fresh = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, pc, ci(g, 0), ""),
                                    LLVMBuildNot(g->b, g->accumulate, ""), "fresh");
  /* B[pc.., jc..] into NR-column panels. */
  LLVMValueRef bsrc = gep(g, g->bm, add(g, mul(g, pc, g->b_k), mul(g, jc, g->b_j)));
  GIf pack;
  if_open(g, &pack, LLVMBuildNot(g->b, direct_b, ""));
  pack_block_any(g, g->bp, bsrc, nc, kc, geo->nr, g->b_j, g->b_k);
  if_else(g, &pack);
  if_close(g, &pack);

  LLVMValueRef ic = loop_simple(g, &lic, ci(g, 0), g->m);
  LLVMValueRef mc = min64(g, ci(g, geo->mc), sub(g, g->m, ic));
  LLVMValueRef asrc = gep(g, g->a, add(g, mul(g, ic, g->a_i), mul(g, pc, g->a_k)));
  if_open(g, &pack, LLVMBuildNot(g->b, direct_a, ""));
  pack_block_any(g, g->ap, asrc, mc, kc, geo->mr, g->a_i, g->a_k);
  if_else(g, &pack);
  if_close(g, &pack);

  LLVMValueRef jr = loop_simple(g, &ljr, ci(g, 0), nc);
  LLVMValueRef nr = min64(g, ci(g, geo->nr), sub(g, nc, jr));
  Operands o = {.a_k = a_k, .b_k = b_k};
  o.bpanel = pick(g, direct_b, gep(g, bsrc, jr), gep(g, g->bp, mul(g, jr, kc)));
  /* The columns that exist: lane j of vector v is column v * VL + j. */
  LLVMTypeRef t_lanes = LLVMVectorType(cg->t_i32, (unsigned)geo->lanes);
  LLVMValueRef lane[16], nr_vec = LLVMBuildInsertElement(g->b, LLVMGetPoison(t_lanes),
                                                         LLVMBuildTrunc(g->b, nr, cg->t_i32, ""),
                                                         LLVMConstInt(cg->t_i32, 0, false), "");
  nr_vec = LLVMBuildShuffleVector(g->b, nr_vec, LLVMGetPoison(t_lanes), LLVMConstNull(t_lanes), "");
  for (int v = 0; v < geo->nv; v++) {
    for (int j = 0; j < geo->lanes; j++)
      lane[j] = LLVMConstInt(cg->t_i32, (unsigned long long)(v * geo->lanes + j), false);
    o.masks[v] =
        LLVMBuildICmp(g->b, LLVMIntSLT, LLVMConstVector(lane, (unsigned)geo->lanes), nr_vec, "");
  }
  LLVMValueRef ir = loop_simple(g, &lir, ci(g, 0), mc);
  LLVMValueRef mr = min64(g, ci(g, geo->mr), sub(g, mc, ir));
  LLVMValueRef abase =
      pick(g, direct_a, gep(g, asrc, mul(g, ir, g->a_i)), gep(g, g->ap, mul(g, ir, kc)));
  LLVMValueRef ctile = gep(g, g->c, add(g, mul(g, add(g, ic, ir), g->ldc), add(g, jc, jr)));
  /* The tile shape: half height for the last rows when at most MR/2 are
   * left, one vector for the last columns when at most VL are left. */
  int half = geo->mr / 2;
  GIf few_rows, few_cols;
  if_open(g, &few_rows, LLVMBuildICmp(g->b, LLVMIntSLE, mr, ci(g, half), ""));
  tile_product(g, (Tile){half, geo->nv}, 1, &o, abase, a_r, mr, kc, ctile, fresh);
  if_else(g, &few_rows);
  if_open(g, &few_cols, LLVMBuildICmp(g->b, LLVMIntSLE, nr, ci(g, geo->lanes), ""));
  tile_product(g, (Tile){geo->mr, 1}, half + 1, &o, abase, a_r, mr, kc, ctile, fresh);
  if_else(g, &few_cols);
  tile_product(g, (Tile){geo->mr, geo->nv}, half + 1, &o, abase, a_r, mr, kc, ctile, fresh);
  if_close(g, &few_cols);
  if_close(g, &few_rows);
  loop_close(g, &lir, ci(g, geo->mr), NULL);
  loop_close(g, &ljr, ci(g, geo->nr), NULL);
  loop_close(g, &lic, ci(g, geo->mc), NULL);
  loop_close(g, &lpc, ci(g, geo->kc), NULL);
  loop_close(g, &ljc, ci(g, geo->nc), NULL);

  /* k == 0: the product is all zeros (the loops above never store). */
  GLoop li, lj;
  GIf empty;
  if_open(g, &empty,
          LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntEQ, g->k, ci(g, 0), ""),
                       LLVMBuildNot(g->b, g->accumulate, ""), ""));
  LLVMValueRef i = loop_simple(g, &li, ci(g, 0), g->m);
  LLVMValueRef j = loop_simple(g, &lj, ci(g, 0), g->p);
  store(g, LLVMConstReal(cg->t_f32, 0.0), gep(g, g->c, add(g, mul(g, i, g->ldc), j)), 4);
  loop_close(g, &lj, ci(g, 1), NULL);
  loop_close(g, &li, ci(g, 1), NULL);
  if_else(g, &empty);
  if_close(g, &empty);
  LLVMBuildRetVoid(g->b);
}

static void set_fn_attrs(Cg *cg, LLVMValueRef fn, unsigned noalias_params) {
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  static const char *const fn_attrs[] = {"nounwind", "noinline"};
  for (int i = 0; i < 2; i++) {
    unsigned kind = LLVMGetEnumAttributeKindForName(fn_attrs[i], strlen(fn_attrs[i]));
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(cg->ctx, kind, 0));
  }
  for (unsigned i = 1; i <= noalias_params; i++) {
    static const char *const ptr_attrs[] = {"noalias", "nocapture"};
    for (int j = 0; j < 2; j++) {
      unsigned kind = LLVMGetEnumAttributeKindForName(ptr_attrs[j], strlen(ptr_attrs[j]));
      LLVMAddAttributeAtIndex(fn, i, LLVMCreateEnumAttribute(cg->ctx, kind, 0));
    }
  }
  const char *kv[3][2] = {
      {"target-cpu", cg->cpu}, {"target-features", cg->features}, {CG_O2_ATTR, ""}};
  for (int i = 0; i < 3; i++)
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(cg->ctx, kv[i][0], (unsigned)strlen(kv[i][0]),
                                                      kv[i][1], (unsigned)strlen(kv[i][1])));
}

/* The parameters of the GEMM function, in order. */
enum { GP_C, GP_A, GP_B, GP_M, GP_K, GP_P, GP_LDC, GP_AI, GP_AK, GP_BK, GP_BJ, GP_ACC, GP_COUNT };
_Static_assert(GP_COUNT == CG_GEMM_NARGS, "cg_gemm_strided's arguments");

/* void <prefix>_gemm(float *c, float *a, float *b, i64 m, i64 k, i64 p,
 *                    i64 ldc, i64 a_i, i64 a_k, i64 b_k, i64 b_j, i1 acc):
 * C[i, j] (+)= sum over k of A[i*a_i + k*a_k] B[k*b_k + j*b_j], C's rows
 * ldc apart.  Strides make the transposition cases one function (JIT time
 * is per function) and let a thread compute a block of C. */
static LLVMValueRef gemm_function(Cg *cg) {
  const char *name = dl_arena_printf(cg->cc->arena, "%s_gemm", cg->prefix);
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
  if (fn) return fn;
  LLVMTypeRef params[GP_COUNT];
  for (int i = 0; i < GP_COUNT; i++)
    params[i] = i <= GP_B ? cg->t_ptr : i == GP_ACC ? LLVMInt1TypeInContext(cg->ctx) : cg->t_i64;
  fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->t_void, params, GP_COUNT, false));
  set_fn_attrs(cg, fn, 3);
  /* No library calls: LLVM would turn each packed row of B (NR floats) into
   * a call of memmove, 6 % of the MLP's step; the loop copies it inline. */
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(cg->ctx, "no-builtins", 11, "", 0));
  Gemm g = {.cg = cg, .fn = fn, .geo = gemm_geom(cg)};
  g.t_vec = LLVMVectorType(cg->t_f32, (unsigned)g.geo.lanes);
  static const char *const names[GP_COUNT] = {"c",   "a",   "b",   "m",   "k",   "p",
                                              "ldc", "a_i", "a_k", "b_k", "b_j", "acc"};
  LLVMValueRef *slots[GP_COUNT] = {&g.c,   &g.a,   &g.bm,  &g.m,   &g.k,   &g.p,
                                   &g.ldc, &g.a_i, &g.a_k, &g.b_k, &g.b_j, &g.accumulate};
  for (unsigned i = 0; i < GP_COUNT; i++) {
    *slots[i] = LLVMGetParam(fn, i);
    LLVMSetValueName2(*slots[i], names[i], strlen(names[i]));
  }
  /* The caller's builder position is restored afterwards. */
  g.b = LLVMCreateBuilderInContext(cg->ctx);
  LLVMPositionBuilderAtEnd(g.b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
  gemm_body(&g);
  LLVMDisposeBuilder(g.b);
  return fn;
}

/* ---- threads ------------------------------------------------------------------
 *
 * A product big enough to share is split into blocks of whole micro-tile
 * rows (MR) or columns (NR) and handed to the runtime's dlrt_parallel_for,
 * which gives each thread a contiguous range of blocks; the thread runs the
 * GEMM on its part of C.  Every element of C is computed by one thread with
 * the same k blocking, in the same order, whatever the number of threads:
 * the result is bit-identical.  Splitting the columns makes every thread
 * pack all of A, splitting the rows all of B, so the split is along the
 * dimension whose duplicate packing costs less.  Products below
 * CG_GEMM_PARALLEL_MACS multiply-adds (1 M, about 8 us of work) stay on the
 * calling thread.  The limit was 16.8 M while a worker slept as soon as it
 * ran out of work (waking one took 45 us or more on the benchmark's
 * virtual machine); now that it polls for 50 us first (rt_threads.c), the
 * kernels of a step find it awake, and on two threads 16.8 M -> 4 M -> 2 M
 * -> 1 M took the MLP at batch 64 from 0.29 to 0.21, 0.17 and 0.17 ms a
 * step and the LSTM from 3.1 to 3.1, 2.3 and 2.0 ms (bench/RESULTS.md). */

/* The task's argument block: the GEMM's parameters (ACC widened to i64),
 * then whether the blocks are rows. */
enum { GT_BY_ROWS = GP_COUNT, GT_COUNT };

static LLVMTypeRef task_args_type(Cg *cg) {
  LLVMTypeRef f[GT_COUNT];
  for (int i = 0; i < GT_COUNT; i++)
    f[i] = i <= GP_B ? cg->t_ptr : cg->t_i64;
  return LLVMStructTypeInContext(cg->ctx, f, GT_COUNT, false);
}

/* void <prefix>_gemm_task(ptr args, i64 begin, i64 end): the blocks
 * [begin, end) of the product described by args. */
static LLVMValueRef gemm_task_function(Cg *cg) {
  const char *name = dl_arena_printf(cg->cc->arena, "%s_gemm_task", cg->prefix);
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
  if (fn) return fn;
  LLVMValueRef gemm = gemm_function(cg);
  LLVMTypeRef params[3] = {cg->t_ptr, cg->t_i64, cg->t_i64};
  fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->t_void, params, 3, false));
  set_fn_attrs(cg, fn, 0);
  GemmGeom geo = gemm_geom(cg);
  Gemm g = {.cg = cg, .fn = fn, .geo = geo};
  g.b = LLVMCreateBuilderInContext(cg->ctx);
  LLVMPositionBuilderAtEnd(g.b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
  LLVMTypeRef st = task_args_type(cg);
  LLVMValueRef args = LLVMGetParam(fn, 0), begin = LLVMGetParam(fn, 1), end = LLVMGetParam(fn, 2);
  LLVMValueRef v[GT_COUNT];
  for (unsigned i = 0; i < GT_COUNT; i++)
    v[i] = load(&g, LLVMStructGetTypeAtIndex(st, i), LLVMBuildStructGEP2(g.b, st, args, i, ""), 8);
  LLVMValueRef call[GP_COUNT];
  memcpy(call, v, sizeof call);
  call[GP_ACC] = LLVMBuildICmp(g.b, LLVMIntNE, v[GP_ACC], ci(&g, 0), "");
  GIf rows;
  if_open(&g, &rows, LLVMBuildICmp(g.b, LLVMIntNE, v[GT_BY_ROWS], ci(&g, 0), ""));
  for (int by_rows = 1; by_rows >= 0; by_rows--) {
    /* [i0, i1) of m, or [j0, j1) of p */
    int unit = by_rows ? geo.mr : geo.nr;
    LLVMValueRef total = v[by_rows ? GP_M : GP_P];
    LLVMValueRef lo = mul(&g, begin, ci(&g, unit));
    LLVMValueRef hi = min64(&g, mul(&g, end, ci(&g, unit)), total);
    LLVMValueRef cs[GP_COUNT];
    memcpy(cs, call, sizeof cs);
    if (by_rows) {
      cs[GP_C] = gep(&g, v[GP_C], mul(&g, lo, v[GP_LDC]));
      cs[GP_A] = gep(&g, v[GP_A], mul(&g, lo, v[GP_AI]));
      cs[GP_M] = sub(&g, hi, lo);
    } else {
      cs[GP_C] = gep(&g, v[GP_C], lo);
      cs[GP_B] = gep(&g, v[GP_B], mul(&g, lo, v[GP_BJ]));
      cs[GP_P] = sub(&g, hi, lo);
    }
    LLVMBuildCall2(g.b, LLVMGlobalGetValueType(gemm), gemm, cs, GP_COUNT, "");
    if (by_rows) if_else(&g, &rows);
  }
  if_close(&g, &rows);
  LLVMBuildRetVoid(g.b);
  LLVMDisposeBuilder(g.b);
  return fn;
}

void cg_plain_loop(Cg *cg, LLVMValueRef latch_br) {
  /* !llvm.loop !{self, !{"llvm.loop.unroll.disable"},
   *              !{"llvm.loop.vectorize.enable", i1 false}} */
  LLVMContextRef ctx = cg->ctx;
  LLVMMetadataRef unroll = LLVMMDStringInContext2(ctx, "llvm.loop.unroll.disable", 24);
  LLVMMetadataRef vec[2] = {
      LLVMMDStringInContext2(ctx, "llvm.loop.vectorize.enable", 26),
      LLVMValueAsMetadata(LLVMConstInt(LLVMInt1TypeInContext(ctx), 0, false))};
  LLVMMetadataRef tmp = LLVMTemporaryMDNode(ctx, NULL, 0);
  LLVMMetadataRef ops[3] = {tmp, LLVMMDNodeInContext2(ctx, &unroll, 1),
                            LLVMMDNodeInContext2(ctx, vec, 2)};
  LLVMMetadataRef self = LLVMMDNodeInContext2(ctx, ops, 3);
  LLVMMetadataReplaceAllUsesWith(tmp, self);
  unsigned kind = LLVMGetMDKindIDInContext(ctx, "llvm.loop", 9);
  LLVMSetMetadata(latch_br, kind, LLVMMetadataAsValue(ctx, self));
}

LLVMValueRef cg_parallel_for(Cg *cg) {
  static const char name[] = "dlrt_parallel_for";
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
  if (fn) return fn;
  LLVMTypeRef params[5] = {cg->t_ptr, cg->t_i64, cg->t_i32, cg->t_ptr, cg->t_ptr};
  fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->t_void, params, 5, false));
  unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(cg->ctx, nounwind, 0));
  return fn;
}

LLVMValueRef cg_entry_alloca(Cg *cg, LLVMTypeRef type, const char *name) {
  LLVMBasicBlockRef entry =
      LLVMGetEntryBasicBlock(LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b)));
  LLVMBuilderRef tmp = LLVMCreateBuilderInContext(cg->ctx);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(tmp, first);
  else
    LLVMPositionBuilderAtEnd(tmp, entry);
  LLVMValueRef slot = LLVMBuildAlloca(tmp, type, name);
  LLVMDisposeBuilder(tmp);
  return slot;
}

/* Call the GEMM at the builder's position; when may_dot (a product never
 * split between threads, whose rows and columns can be few), first test at
 * run time whether dot_body serves it: both operands contiguous along k, at
 * most DOT_MAX_ROWS rows and DOT_MAX_COLS columns, k of 4 vectors or more. */
static void call_gemm(Cg *cg, LLVMValueRef args[GP_COUNT], bool may_dot) {
  LLVMValueRef gemm = gemm_function(cg);
  if (!may_dot) {
    LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(gemm), gemm, args, GP_COUNT, "");
    return;
  }
  Gemm g = {.cg = cg, .b = cg->b, .geo = gemm_geom(cg)};
  g.fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(cg->b));
  LLVMValueRef conds[5] = {
      LLVMBuildICmp(g.b, LLVMIntEQ, args[GP_AK], ci(&g, 1), ""),
      LLVMBuildICmp(g.b, LLVMIntEQ, args[GP_BK], ci(&g, 1), ""),
      LLVMBuildICmp(g.b, LLVMIntSLE, args[GP_M], ci(&g, DOT_MAX_ROWS), ""),
      LLVMBuildICmp(g.b, LLVMIntSLE, args[GP_P], ci(&g, DOT_MAX_COLS), ""),
      LLVMBuildICmp(g.b, LLVMIntSGE, args[GP_K], ci(&g, 4 * (int64_t)g.geo.lanes), ""),
  };
  LLVMValueRef use_dot = conds[0];
  for (int i = 1; i < 5; i++)
    use_dot = LLVMBuildAnd(g.b, use_dot, conds[i], "");
  GIf pick_dot;
  if_open(&g, &pick_dot, use_dot);
  LLVMValueRef dot = dot_function(cg);
  LLVMValueRef dargs[GEMM_DOT_NARGS] = {args[GP_C],  args[GP_A],  args[GP_B],   args[GP_M],
                                        args[GP_K],  args[GP_P],  args[GP_LDC], args[GP_AI],
                                        args[GP_BJ], args[GP_ACC]};
  LLVMBuildCall2(g.b, LLVMGlobalGetValueType(dot), dot, dargs, GEMM_DOT_NARGS, "");
  if_else(&g, &pick_dot);
  LLVMBuildCall2(g.b, LLVMGlobalGetValueType(gemm), gemm, args, GP_COUNT, "");
  if_close(&g, &pick_dot);
}

void cg_gemm_strided(Cg *cg, const LLVMValueRef ops[CG_GEMM_NARGS], bool may_dot) {
  LLVMValueRef args[GP_COUNT];
  for (int i = 0; i < GP_COUNT; i++)
    args[i] = ops[i];
  call_gemm(cg, args, may_dot);
}

void cg_gemm_call(Cg *cg, bool ta, bool tb, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b,
                  LLVMValueRef m, LLVMValueRef k, LLVMValueRef p, LLVMValueRef pool, bool may_dot) {
  LLVMBuilderRef bld = cg->b;
  Gemm g = {.cg = cg, .b = bld, .geo = gemm_geom(cg)};
  LLVMValueRef one = ci(&g, 1);
  LLVMValueRef args[GP_COUNT] = {
      [GP_C] = c,
      [GP_A] = a,
      [GP_B] = b,
      [GP_M] = m,
      [GP_K] = k,
      [GP_P] = p,
      [GP_LDC] = p,
      /* A is [m, k], or [k, m] when transposed; B [k, p] or [p, k]. */
      [GP_AI] = ta ? one : k,
      [GP_AK] = ta ? m : one,
      [GP_BK] = tb ? one : p,
      [GP_BJ] = tb ? k : one,
      [GP_ACC] = LLVMConstInt(LLVMInt1TypeInContext(cg->ctx), 0, false),
  };
  LLVMValueRef gemm = gemm_function(cg);
  if (!pool) {
    call_gemm(cg, args, may_dot && !ta && tb);
    return;
  }
  /* Rows when the duplicate packing of B (k x p) costs less than A's (m x
   * k), provided there are at least two blocks of rows. */
  LLVMValueRef mr = ci(&g, g.geo.mr), nr = ci(&g, g.geo.nr);
  LLVMValueRef row_blocks = LLVMBuildSDiv(bld, add(&g, m, sub(&g, mr, one)), mr, "");
  LLVMValueRef col_blocks = LLVMBuildSDiv(bld, add(&g, p, sub(&g, nr, one)), nr, "");
  LLVMValueRef by_rows = LLVMBuildOr(bld, LLVMBuildICmp(bld, LLVMIntSGT, m, p, ""),
                                     LLVMBuildICmp(bld, LLVMIntSLT, col_blocks, ci(&g, 2), ""), "");
  by_rows = LLVMBuildAnd(bld, by_rows, LLVMBuildICmp(bld, LLVMIntSGE, row_blocks, ci(&g, 2), ""),
                         "by_rows");
  LLVMValueRef blocks = LLVMBuildSelect(bld, by_rows, row_blocks, col_blocks, "");
  LLVMValueRef macs = mul(&g, mul(&g, m, k), p);
  LLVMValueRef share = LLVMBuildAnd(
      bld, LLVMBuildIsNotNull(bld, pool, ""),
      LLVMBuildAnd(bld, LLVMBuildICmp(bld, LLVMIntSGE, macs, ci(&g, CG_GEMM_PARALLEL_MACS), ""),
                   LLVMBuildICmp(bld, LLVMIntSGE, blocks, ci(&g, 2), ""), ""),
      "share");
  GIf split;
  g.fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(bld));
  if_open(&g, &split, share);
  LLVMTypeRef st = task_args_type(cg);
  LLVMValueRef block = cg_entry_alloca(cg, st, "gemm_args");
  for (unsigned i = 0; i < GT_COUNT; i++) {
    LLVMValueRef val = i == GT_BY_ROWS ? LLVMBuildZExt(bld, by_rows, cg->t_i64, "")
                       : i == GP_ACC   ? LLVMBuildZExt(bld, args[GP_ACC], cg->t_i64, "")
                                       : args[i];
    store(&g, val, LLVMBuildStructGEP2(bld, st, block, i, ""), 8);
  }
  LLVMValueRef pf = cg_parallel_for(cg);
  /* One range per thread: each range packs a whole operand again. */
  LLVMValueRef pargs[5] = {pool, blocks, LLVMConstInt(cg->t_i32, 1, false), gemm_task_function(cg),
                           block};
  LLVMBuildCall2(bld, LLVMGlobalGetValueType(pf), pf, pargs, 5, "");
  if_else(&g, &split);
  LLVMBuildCall2(bld, LLVMGlobalGetValueType(gemm), gemm, args, GP_COUNT, "");
  if_close(&g, &split);
}
