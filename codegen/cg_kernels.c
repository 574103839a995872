/* cg_kernels.c - one LLVM function per kernel node: the per-op code generators.
 *
 * Every kernel has the signature
 *     void k(float *noalias out, const float *noalias in0[, in1], i64 n)
 * where n is the runtime batch size (the value of every N dimension).
 *
 * CPU kernels are loop nests over plain buffers, written so that LLVM's O3
 * pipeline can vectorise them: the innermost loop runs over the contiguous
 * last dimension, broadcast operands get stride 0, and adjacent dimensions
 * that are contiguous for every operand are merged into one loop (so that an
 * elementwise op over [N, 4] is one loop of 4n iterations, not n loops of 4).
 *
 * NVPTX kernels compute output elements independently: each thread takes
 * elements i = ctaid.x*ntid.x + tid.x, i += nctaid.x*ntid.x, recovers the
 * multi-index by div/mod, and computes that element directly (matmul: a loop
 * over k; reductions: a loop over the reduced elements; softmax: the row's
 * max and sum recomputed).  Correctness first; tiling comes later.  The same
 * kernels can be built for the CPU (Cg.grid_kernels, see cg_testing.h), one
 * thread of one block, so that their logic is tested without a GPU.
 */
#include "cg_internal.h"

#include <math.h>
#include <string.h>

#define CG_MAX_OPS (1 + DL_MAX_INPUTS) /* output + inputs */

/* ---- symbolic sizes ------------------------------------------------------ */

static CgSym sym_const(int64_t c) {
  return (CgSym){c, 0};
}
static CgSym sym_dim(int64_t d) {
  return d == DL_DIM_BATCH ? (CgSym){1, 1} : (CgSym){d, 0};
}
static CgSym sym_mul(CgSym a, CgSym b) {
  return (CgSym){a.c * b.c, a.k + b.k};
}
static bool sym_eq(CgSym a, CgSym b) {
  return a.c == b.c && (a.c == 0 || a.k == b.k);
}
static bool sym_is_one(CgSym a) {
  return a.c == 1 && a.k == 0;
}

/* Row-major strides of a shape. */
static void contiguous_strides(const DlShape *s, CgSym *st) {
  CgSym acc = sym_const(1);
  for (int i = s->rank - 1; i >= 0; i--) {
    st[i] = acc;
    acc = sym_mul(acc, sym_dim(s->d[i]));
  }
}

static CgSym shape_numel(const DlShape *s) {
  CgSym acc = sym_const(1);
  for (int i = 0; i < s->rank; i++)
    acc = sym_mul(acc, sym_dim(s->d[i]));
  return acc;
}

/* Strides with which an operand of dims in_d (strides in_st, rank rin) is read
 * when broadcast to dims out_d (rank rout), numpy style: right-aligned; an
 * operand dim of 1, or a missing one on the left, against an output dim other
 * than 1 is broadcast (stride 0); N against N is not.  False if the dims are
 * not compatible. */
static bool broadcast_strides(const int64_t *in_d, const CgSym *in_st, int rin,
                              const int64_t *out_d, int rout, CgSym *st) {
  if (rin > rout) return false;
  int lead = rout - rin;
  for (int j = 0; j < rout; j++) {
    int i = j - lead;
    if (i < 0) {
      st[j] = sym_const(0);
    } else if (in_d[i] == out_d[j]) {
      st[j] = in_st[i];
    } else if (in_d[i] == 1) {
      st[j] = sym_const(0);
    } else {
      return false;
    }
  }
  return true;
}

/* ---- per-function state ---------------------------------------------------- */

typedef struct CgFn {
  Cg *cg;
  const DlNode *node;
  DlNodeId id;
  LLVMValueRef fn;
  LLVMBasicBlockRef entry_bb;
  LLVMValueRef n;   /* i64 batch size */
  LLVMValueRef out; /* float* */
  LLVMValueRef in[DL_MAX_INPUTS];
  const DlShape *in_shape[DL_MAX_INPUTS];
  int nin;
} CgFn;

static LLVMValueRef i64c(Cg *cg, int64_t v) {
  return LLVMConstInt(cg->t_i64, (unsigned long long)v, true);
}
static LLVMValueRef f32c(Cg *cg, double v) {
  return LLVMConstReal(cg->t_f32, v);
}

static bool is_const_int(LLVMValueRef v, int64_t c) {
  return LLVMIsAConstantInt(v) && LLVMConstIntGetSExtValue(v) == c;
}

/* Index arithmetic (never negative, never overflowing: nsw). */
static LLVMValueRef idx_add(CgFn *f, LLVMValueRef a, LLVMValueRef b) {
  if (is_const_int(a, 0)) return b;
  if (is_const_int(b, 0)) return a;
  return LLVMBuildNSWAdd(f->cg->b, a, b, "");
}
static LLVMValueRef idx_mul(CgFn *f, LLVMValueRef a, LLVMValueRef b) {
  if (is_const_int(a, 0) || is_const_int(b, 0)) return i64c(f->cg, 0);
  if (is_const_int(a, 1)) return b;
  if (is_const_int(b, 1)) return a;
  return LLVMBuildNSWMul(f->cg->b, a, b, "");
}

static LLVMValueRef sym_value(CgFn *f, CgSym s) {
  if (s.c == 0 || s.k == 0) return i64c(f->cg, s.c);
  LLVMValueRef v = s.c == 1 ? NULL : i64c(f->cg, s.c);
  for (int i = 0; i < s.k; i++)
    v = v ? idx_mul(f, v, f->n) : f->n;
  return v;
}

static LLVMValueRef elem_ptr(CgFn *f, LLVMValueRef base, LLVMValueRef off) {
  return LLVMBuildInBoundsGEP2(f->cg->b, f->cg->t_f32, base, &off, 1, "");
}
static LLVMValueRef load_f32(CgFn *f, LLVMValueRef base, LLVMValueRef off) {
  LLVMValueRef v = LLVMBuildLoad2(f->cg->b, f->cg->t_f32, elem_ptr(f, base, off), "");
  LLVMSetAlignment(v, 4);
  return v;
}
static void store_f32(CgFn *f, LLVMValueRef val, LLVMValueRef base, LLVMValueRef off) {
  LLVMValueRef st = LLVMBuildStore(f->cg->b, val, elem_ptr(f, base, off));
  LLVMSetAlignment(st, 4);
}

/* A float scalar that lives across loop iterations (an accumulator).  It is
 * an alloca in the entry block, which SROA turns into SSA values at -O1 and
 * above. */
static LLVMValueRef scalar_slot(CgFn *f, const char *name) {
  LLVMBuilderRef tmp = LLVMCreateBuilderInContext(f->cg->ctx);
  LLVMValueRef first = LLVMGetFirstInstruction(f->entry_bb);
  if (first)
    LLVMPositionBuilderBefore(tmp, first);
  else
    LLVMPositionBuilderAtEnd(tmp, f->entry_bb);
  LLVMValueRef slot = LLVMBuildAlloca(tmp, f->cg->t_f32, name);
  LLVMDisposeBuilder(tmp);
  return slot;
}
static LLVMValueRef slot_get(CgFn *f, LLVMValueRef slot) {
  return LLVMBuildLoad2(f->cg->b, f->cg->t_f32, slot, "");
}
static void slot_set(CgFn *f, LLVMValueRef slot, LLVMValueRef v) {
  LLVMBuildStore(f->cg->b, v, slot);
}

/* ---- loops ----------------------------------------------------------------- */

/* for (iv = start; iv < end; iv += step): a header with the phi and the test,
 * the body where the builder is left, and the exit. */
typedef struct CgLoop {
  LLVMBasicBlockRef header, exit;
  LLVMValueRef iv;
} CgLoop;

static LLVMValueRef loop_begin(CgFn *f, CgLoop *l, LLVMValueRef start, LLVMValueRef end,
                               const char *name) {
  Cg *cg = f->cg;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
  l->header = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "done");
  LLVMBuildBr(cg->b, l->header);
  LLVMPositionBuilderAtEnd(cg->b, l->header);
  l->iv = LLVMBuildPhi(cg->b, cg->t_i64, name);
  LLVMAddIncoming(l->iv, &start, &pre, 1);
  LLVMValueRef more = LLVMBuildICmp(cg->b, LLVMIntSLT, l->iv, end, "");
  LLVMBuildCondBr(cg->b, more, body, l->exit);
  LLVMPositionBuilderAtEnd(cg->b, body);
  return l->iv;
}

static void loop_end(CgFn *f, CgLoop *l, LLVMValueRef step) {
  Cg *cg = f->cg;
  LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->iv, step, "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
  LLVMAddIncoming(l->iv, &next, &latch, 1);
  LLVMBuildBr(cg->b, l->header);
  LLVMPositionBuilderAtEnd(cg->b, l->exit);
}

/* ---- intrinsics and math ---------------------------------------------------- */

/* Call an LLVM intrinsic; `overload` is the overloaded type (f32) or NULL. */
static LLVMValueRef intrinsic(CgFn *f, const char *name, LLVMTypeRef overload, LLVMValueRef *args,
                              unsigned nargs) {
  Cg *cg = f->cg;
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  if (id == 0) {
    dl_error(cg->cc, f->node->loc, "internal error: LLVM has no intrinsic %s", name);
    return LLVMGetUndef(overload ? overload : cg->t_f32);
  }
  size_t nover = overload ? 1 : 0;
  LLVMValueRef decl = LLVMGetIntrinsicDeclaration(cg->mod, id, &overload, nover);
  LLVMTypeRef fty = LLVMIntrinsicGetType(cg->ctx, id, &overload, nover);
  return LLVMBuildCall2(cg->b, fty, decl, args, nargs, "");
}

static LLVMValueRef f32_intr1(CgFn *f, const char *name, LLVMValueRef x) {
  return intrinsic(f, name, f->cg->t_f32, &x, 1);
}
static LLVMValueRef f32_intr2(CgFn *f, const char *name, LLVMValueRef x, LLVMValueRef y) {
  LLVMValueRef args[2] = {x, y};
  return intrinsic(f, name, f->cg->t_f32, args, 2);
}

/* GPU-style kernels (one element per grid-stride iteration) are emitted for
 * NVPTX, and for the CPU when cg->grid_kernels asks for them so that their
 * index arithmetic can be tested against the interpreter on any machine. */
static bool on_gpu(const CgFn *f) {
  return f->cg->grid_kernels;
}
static bool is_nvptx(const CgFn *f) {
  return f->cg->target == DL_TARGET_NVPTX;
}

/* 2^x and log2(x) the way the GPU computes them: the hardware's approximate
 * instructions on NVPTX (LLVM 19 exposes them only as nvvm intrinsics; its
 * llvm.exp2.f32 would need a libcall the target does not have), LLVM's
 * generic intrinsics when GPU-style kernels run on the CPU. */
static LLVMValueRef m_exp2(CgFn *f, LLVMValueRef x) {
  return is_nvptx(f) ? intrinsic(f, "llvm.nvvm.ex2.approx.f", NULL, &x, 1)
                     : intrinsic(f, "llvm.exp2", f->cg->t_f32, &x, 1);
}
static LLVMValueRef m_log2(CgFn *f, LLVMValueRef x) {
  return is_nvptx(f) ? intrinsic(f, "llvm.nvvm.lg2.approx.f", NULL, &x, 1)
                     : intrinsic(f, "llvm.log2", f->cg->t_f32, &x, 1);
}

static LLVMValueRef f_mul(CgFn *f, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFMul(f->cg->b, a, b, "");
}
static LLVMValueRef f_add(CgFn *f, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFAdd(f->cg->b, a, b, "");
}
static LLVMValueRef f_sub(CgFn *f, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFSub(f->cg->b, a, b, "");
}
static LLVMValueRef f_div(CgFn *f, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFDiv(f->cg->b, a, b, "");
}
static LLVMValueRef fcmp(CgFn *f, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(f->cg->b, p, a, b, "");
}
static LLVMValueRef select_(CgFn *f, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(f->cg->b, c, a, b, "");
}

/* NVPTX has no libm (libdevice is not available): exp and log are built from
 * exp2 and log2. */
static LLVMValueRef m_exp(CgFn *f, LLVMValueRef x) {
  if (!on_gpu(f)) return f32_intr1(f, "llvm.exp", x);
  return m_exp2(f, f_mul(f, x, f32c(f->cg, 1.4426950408889634))); /* log2(e) */
}

static LLVMValueRef m_log(CgFn *f, LLVMValueRef x) {
  if (!on_gpu(f)) return f32_intr1(f, "llvm.log", x);
  return f_mul(f, m_log2(f, x), f32c(f->cg, 0.6931471805599453)); /* ln(2) */
}

/* pow on NVPTX: exp2(y * log2|x|), with the sign rules of C's pow for a
 * negative base (an odd integer power keeps the sign, a non-integer power is
 * NaN) and pow(x, 0) = 1. */
static LLVMValueRef m_pow(CgFn *f, LLVMValueRef x, LLVMValueRef y) {
  if (!on_gpu(f)) return f32_intr2(f, "llvm.pow", x, y);
  Cg *cg = f->cg;
  LLVMValueRef mag = m_exp2(f, f_mul(f, y, m_log2(f, f32_intr1(f, "llvm.fabs", x))));
  LLVMValueRef y_int = fcmp(f, LLVMRealOEQ, f32_intr1(f, "llvm.floor", y), y);
  LLVMValueRef half = f_mul(f, y, f32c(cg, 0.5));
  LLVMValueRef y_odd =
      LLVMBuildAnd(cg->b, y_int, fcmp(f, LLVMRealUNE, f32_intr1(f, "llvm.floor", half), half), "");
  LLVMValueRef neg_res =
      select_(f, y_int, select_(f, y_odd, LLVMBuildFNeg(cg->b, mag, ""), mag), f32c(cg, NAN));
  LLVMValueRef r = select_(f, fcmp(f, LLVMRealOLT, x, f32c(cg, 0.0)), neg_res, mag);
  return select_(f, fcmp(f, LLVMRealOEQ, y, f32c(cg, 0.0)), f32c(cg, 1.0), r);
}

/* tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|): e underflows to 0
 * for large |x|, giving +-1 and never inf/inf.  Near 0, 1 - e cancels, so a
 * Taylor polynomial (error < 2e-9 relative for |x| < 0.125) takes over. */
static LLVMValueRef m_tanh(CgFn *f, LLVMValueRef x) {
  Cg *cg = f->cg;
  LLVMValueRef ax = f32_intr1(f, "llvm.fabs", x);
  LLVMValueRef e = m_exp(f, f_mul(f, ax, f32c(cg, -2.0)));
  LLVMValueRef big = f_div(f, f_sub(f, f32c(cg, 1.0), e), f_add(f, f32c(cg, 1.0), e));
  big = f32_intr2(f, "llvm.copysign", big, x);
  LLVMValueRef x2 = f_mul(f, x, x);
  LLVMValueRef p = f32c(cg, -17.0 / 315.0);
  p = f_add(f, f_mul(f, p, x2), f32c(cg, 2.0 / 15.0));
  p = f_add(f, f_mul(f, p, x2), f32c(cg, -1.0 / 3.0));
  p = f_add(f, f_mul(f, p, x2), f32c(cg, 1.0));
  LLVMValueRef small = f_mul(f, p, x);
  return select_(f, fcmp(f, LLVMRealOLT, ax, f32c(cg, 0.125)), small, big);
}

/* ---- elementwise values ---------------------------------------------------- */

/* The value of one output element of an elementwise ("map") kernel from the
 * corresponding input elements x[].  scale: EXPAND with mean divides by it.
 * Returns NULL for ops that are not elementwise. */
static LLVMValueRef map_value(CgFn *f, DlOp op, LLVMValueRef *x, LLVMValueRef scale) {
  Cg *cg = f->cg;
  LLVMValueRef zero = f32c(cg, 0.0), one = f32c(cg, 1.0);
  switch (op) {
  case DL_OP_NEG: return LLVMBuildFNeg(cg->b, x[0], "");
  case DL_OP_EXP: return m_exp(f, x[0]);
  case DL_OP_LOG: return m_log(f, x[0]);
  case DL_OP_SQRT: return f32_intr1(f, "llvm.sqrt", x[0]);
  case DL_OP_TANH: return m_tanh(f, x[0]);
  case DL_OP_SIGMOID:
    /* exp(-x) overflows to inf for very negative x: 1/inf = 0, not NaN. */
    return f_div(f, one, f_add(f, one, m_exp(f, LLVMBuildFNeg(cg->b, x[0], ""))));
  case DL_OP_RELU: return select_(f, fcmp(f, LLVMRealOGT, x[0], zero), x[0], zero);
  case DL_OP_STEP: return select_(f, fcmp(f, LLVMRealOGT, x[0], zero), one, zero);
  case DL_OP_ABS: return f32_intr1(f, "llvm.fabs", x[0]);
  case DL_OP_SIGN:
    return select_(f, fcmp(f, LLVMRealOGT, x[0], zero), one,
                   select_(f, fcmp(f, LLVMRealOLT, x[0], zero), f32c(cg, -1.0), zero));
  case DL_OP_ADD: return f_add(f, x[0], x[1]);
  case DL_OP_SUB: return f_sub(f, x[0], x[1]);
  case DL_OP_MUL: return f_mul(f, x[0], x[1]);
  case DL_OP_DIV: return f_div(f, x[0], x[1]);
  case DL_OP_POW: return m_pow(f, x[0], x[1]);
  case DL_OP_EXPAND: return scale ? f_div(f, x[0], scale) : x[0];
  case DL_OP_RESHAPE:
  case DL_OP_ASSIGN: return x[0];
  case DL_OP_INPUT:
  case DL_OP_PARAM:
  case DL_OP_CONST:
  case DL_OP_HYPER:
  case DL_OP_MATMUL:
  case DL_OP_SUM:
  case DL_OP_MEAN:
  case DL_OP_SOFTMAX:
  case DL_OP_LOG_SOFTMAX: break;
  }
  return NULL;
}

/* ---- iteration spaces ------------------------------------------------------- */

/* A rectangular iteration space (outermost dimension first) and, per operand,
 * the stride each dimension advances that operand's offset by. */
typedef struct CgNest {
  int rank, nops;
  CgSym dim[DL_MAX_RANK];
  CgSym stride[CG_MAX_OPS][DL_MAX_RANK];
} CgNest;

/* Drop dimensions of extent 1 and merge adjacent dimensions that every
 * operand walks contiguously (outer stride == inner stride * inner extent,
 * including both strides 0), so that loops are as few and as long as
 * possible. */
static void nest_simplify(CgNest *nest) {
  CgNest s = *nest;
  s.rank = 0;
  for (int d = 0; d < nest->rank; d++) {
    if (sym_is_one(nest->dim[d])) continue;
    bool merge = s.rank > 0;
    for (int op = 0; merge && op < nest->nops; op++)
      merge = sym_eq(s.stride[op][s.rank - 1], sym_mul(nest->stride[op][d], nest->dim[d]));
    int to = merge ? s.rank - 1 : s.rank++;
    s.dim[to] = merge ? sym_mul(s.dim[to], nest->dim[d]) : nest->dim[d];
    for (int op = 0; op < nest->nops; op++)
      s.stride[op][to] = nest->stride[op][d];
  }
  *nest = s;
}

/* Emits the body of a kernel at one point of the iteration space, given the
 * offset of every operand there. */
typedef void (*CgBody)(CgFn *f, LLVMValueRef *off, void *user);

static void nest_level(CgFn *f, const CgNest *nest, int d, LLVMValueRef *base, CgBody body,
                       void *user) {
  if (d == nest->rank) {
    body(f, base, user);
    return;
  }
  CgLoop l;
  LLVMValueRef i = loop_begin(f, &l, i64c(f->cg, 0), sym_value(f, nest->dim[d]), "i");
  LLVMValueRef off[CG_MAX_OPS];
  for (int op = 0; op < nest->nops; op++)
    off[op] = idx_add(f, base[op], idx_mul(f, i, sym_value(f, nest->stride[op][d])));
  nest_level(f, nest, d + 1, off, body, user);
  loop_end(f, &l, i64c(f->cg, 1));
}

/* CPU: nested loops over the whole space, innermost dimension innermost. */
static void emit_loops(CgFn *f, const CgNest *nest_in, CgBody body, void *user) {
  CgNest nest = *nest_in;
  nest_simplify(&nest);
  LLVMValueRef off[CG_MAX_OPS];
  for (int op = 0; op < nest.nops; op++)
    off[op] = i64c(f->cg, 0);
  nest_level(f, &nest, 0, off, body, user);
}

/* A PTX special register (thread and block index and count).  GPU-style
 * kernels on the CPU run as one thread of one block. */
static LLVMValueRef sreg(CgFn *f, const char *name, int on_cpu) {
  if (!is_nvptx(f)) return i64c(f->cg, on_cpu);
  LLVMValueRef v = intrinsic(f, name, NULL, NULL, 0);
  return LLVMBuildZExt(f->cg->b, v, f->cg->t_i64, "");
}

/* NVPTX: a grid-stride loop over the points of the space; each point's
 * multi-index is recovered by div/mod, innermost dimension fastest. */
static void emit_grid(CgFn *f, const CgNest *nest_in, CgBody body, void *user) {
  Cg *cg = f->cg;
  CgNest nest = *nest_in;
  nest_simplify(&nest);
  CgSym total = sym_const(1);
  for (int d = 0; d < nest.rank; d++)
    total = sym_mul(total, nest.dim[d]);
  LLVMValueRef ntid = sreg(f, "llvm.nvvm.read.ptx.sreg.ntid.x", 1);
  LLVMValueRef gid = LLVMBuildNUWAdd(
      cg->b, LLVMBuildNUWMul(cg->b, sreg(f, "llvm.nvvm.read.ptx.sreg.ctaid.x", 0), ntid, ""),
      sreg(f, "llvm.nvvm.read.ptx.sreg.tid.x", 0), "");
  LLVMValueRef step =
      LLVMBuildNUWMul(cg->b, sreg(f, "llvm.nvvm.read.ptx.sreg.nctaid.x", 1), ntid, "");
  CgLoop l;
  LLVMValueRef idx = loop_begin(f, &l, gid, sym_value(f, total), "idx");
  LLVMValueRef off[CG_MAX_OPS];
  for (int op = 0; op < nest.nops; op++)
    off[op] = i64c(cg, 0);
  LLVMValueRef rest = idx;
  for (int d = nest.rank - 1; d >= 0; d--) {
    LLVMValueRef i = rest;
    if (d > 0) {
      LLVMValueRef extent = sym_value(f, nest.dim[d]);
      i = LLVMBuildURem(cg->b, rest, extent, "");
      rest = LLVMBuildUDiv(cg->b, rest, extent, "");
    }
    for (int op = 0; op < nest.nops; op++)
      off[op] = idx_add(f, off[op], idx_mul(f, i, sym_value(f, nest.stride[op][d])));
  }
  body(f, off, user);
  loop_end(f, &l, step);
}

static void emit_space(CgFn *f, const CgNest *nest, CgBody body, void *user) {
  if (on_gpu(f))
    emit_grid(f, nest, body, user);
  else
    emit_loops(f, nest, body, user);
}

static bool internal(CgFn *f, const char *what) {
  dl_error(f->cg->cc, f->node->loc, "internal error: cannot generate code for %s node %%%d: %s",
           dl_op_info[f->node->op].name, (int)f->id, what);
  return false;
}

/* ---- elementwise kernels: unary, binary, expand, assign, reshape copy ---- */

typedef struct MapCtx {
  DlOp op;
  int nin;
  LLVMValueRef scale;
} MapCtx;

static void map_body(CgFn *f, LLVMValueRef *off, void *user) {
  MapCtx *m = user;
  LLVMValueRef x[DL_MAX_INPUTS] = {NULL};
  for (int i = 0; i < m->nin; i++)
    x[i] = load_f32(f, f->in[i], off[1 + i]);
  LLVMValueRef y = map_value(f, m->op, x, m->scale);
  if (y)
    store_f32(f, y, f->out, off[0]);
  else
    internal(f, "not an elementwise op");
}

static bool emit_map(CgFn *f) {
  const DlNode *nd = f->node;
  CgNest nest = {.rank = nd->shape.rank, .nops = 1 + f->nin};
  for (int d = 0; d < nd->shape.rank; d++)
    nest.dim[d] = sym_dim(nd->shape.d[d]);
  contiguous_strides(&nd->shape, nest.stride[0]);
  if (nd->op == DL_OP_RESHAPE) {
    /* Same elements in the same order: a flat copy. */
    nest.rank = 1;
    nest.dim[0] = shape_numel(&nd->shape);
    nest.stride[0][0] = nest.stride[1][0] = sym_const(1);
  } else {
    for (int i = 0; i < f->nin; i++) {
      CgSym in_st[DL_MAX_RANK];
      contiguous_strides(f->in_shape[i], in_st);
      if (!broadcast_strides(f->in_shape[i]->d, in_st, f->in_shape[i]->rank, nd->shape.d,
                             nd->shape.rank, nest.stride[1 + i]))
        return internal(f, "input shape does not broadcast to the output shape");
    }
  }
  MapCtx m = {.op = nd->op, .nin = f->nin, .scale = NULL};
  if (nd->op == DL_OP_EXPAND && nd->attr.expand.mean) {
    LLVMValueRef factor = LLVMBuildSDiv(f->cg->b, sym_value(f, shape_numel(&nd->shape)),
                                        sym_value(f, shape_numel(f->in_shape[0])), "");
    m.scale = LLVMBuildSIToFP(f->cg->b, factor, f->cg->t_f32, "");
  }
  emit_space(f, &nest, map_body, &m);
  return true;
}

/* ---- matmul ------------------------------------------------------------------ */

typedef struct MatmulCtx {
  CgSym m, k, p;            /* out [.., M, P] = a [.., M, K] @ b [.., K, P] */
  CgSym a_i, a_k, b_k, b_j; /* element strides of a and b along i, k, j */
  bool ta, tb;
} MatmulCtx;

/* CPU, one matrix of the batch: i-k-j, so that the innermost loop streams a
 * row of b into a row of out (contiguous unless b is transposed). */
static void matmul_cpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  MatmulCtx *c = user;
  Cg *cg = f->cg;
  LLVMValueRef m = sym_value(f, c->m), k = sym_value(f, c->k), p = sym_value(f, c->p);
  CgLoop li, lz, lk, lj;
  LLVMValueRef i = loop_begin(f, &li, i64c(cg, 0), m, "i");
  LLVMValueRef orow = idx_add(f, off[0], idx_mul(f, i, p));
  LLVMValueRef arow = idx_add(f, off[1], idx_mul(f, i, sym_value(f, c->a_i)));
  LLVMValueRef jz = loop_begin(f, &lz, i64c(cg, 0), p, "j");
  store_f32(f, f32c(cg, 0.0), f->out, idx_add(f, orow, jz));
  loop_end(f, &lz, i64c(cg, 1));
  LLVMValueRef kk = loop_begin(f, &lk, i64c(cg, 0), k, "k");
  LLVMValueRef aik = load_f32(f, f->in[0], idx_add(f, arow, idx_mul(f, kk, sym_value(f, c->a_k))));
  LLVMValueRef brow = idx_add(f, off[2], idx_mul(f, kk, sym_value(f, c->b_k)));
  LLVMValueRef j = loop_begin(f, &lj, i64c(cg, 0), p, "j");
  LLVMValueRef o = idx_add(f, orow, j);
  LLVMValueRef bkj = load_f32(f, f->in[1], idx_add(f, brow, idx_mul(f, j, sym_value(f, c->b_j))));
  /* b's element first: with a[i,k] as the first operand, the SLP vectoriser
   * of LLVM 19 mixes up the operand order of a fully unrolled row and builds
   * shuffles instead of a broadcast. */
  LLVMValueRef args[3] = {bkj, aik, load_f32(f, f->out, o)};
  store_f32(f, intrinsic(f, "llvm.fmuladd", cg->t_f32, args, 3), f->out, o);
  loop_end(f, &lj, i64c(cg, 1));
  loop_end(f, &lk, i64c(cg, 1));
  loop_end(f, &li, i64c(cg, 1));
}

/* CPU, one matrix of the batch: the packed GEMM of cg_gemm.c. */
static void matmul_gemm_body(CgFn *f, LLVMValueRef *off, void *user) {
  MatmulCtx *c = user;
  cg_gemm_call(f->cg, c->ta, c->tb, elem_ptr(f, f->out, off[0]), elem_ptr(f, f->in[0], off[1]),
               elem_ptr(f, f->in[1], off[2]), sym_value(f, c->m), sym_value(f, c->k),
               sym_value(f, c->p));
}

/* NVPTX, one output element: its offsets in a and b are the starts of row i
 * and column j; a dot product over k. */
static void matmul_gpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  MatmulCtx *c = user;
  Cg *cg = f->cg;
  LLVMValueRef acc = scalar_slot(f, "acc");
  slot_set(f, acc, f32c(cg, 0.0));
  CgLoop lk;
  LLVMValueRef kk = loop_begin(f, &lk, i64c(cg, 0), sym_value(f, c->k), "k");
  LLVMValueRef a = load_f32(f, f->in[0], idx_add(f, off[1], idx_mul(f, kk, sym_value(f, c->a_k))));
  LLVMValueRef b = load_f32(f, f->in[1], idx_add(f, off[2], idx_mul(f, kk, sym_value(f, c->b_k))));
  LLVMValueRef args[3] = {a, b, slot_get(f, acc)};
  slot_set(f, acc, intrinsic(f, "llvm.fmuladd", cg->t_f32, args, 3));
  loop_end(f, &lk, i64c(cg, 1));
  store_f32(f, slot_get(f, acc), f->out, off[0]);
}

static bool emit_matmul(CgFn *f) {
  const DlNode *nd = f->node;
  const DlShape *sa = f->in_shape[0], *sb = f->in_shape[1], *so = &nd->shape;
  bool ta = nd->attr.matmul.ta, tb = nd->attr.matmul.tb;
  if (sa->rank < 2 || sb->rank < 2 || so->rank < 2)
    return internal(f, "matmul operands and result must have rank 2 or more");
  int ra = sa->rank, rb = sb->rank, ro = so->rank;
  int64_t m = so->d[ro - 2], p = so->d[ro - 1];
  int64_t am = ta ? sa->d[ra - 1] : sa->d[ra - 2], k = ta ? sa->d[ra - 2] : sa->d[ra - 1];
  int64_t bk = tb ? sb->d[rb - 1] : sb->d[rb - 2], bp = tb ? sb->d[rb - 2] : sb->d[rb - 1];
  if (am != m || bk != k || bp != p) return internal(f, "matmul shapes do not agree");
  MatmulCtx c = {.m = sym_dim(m), .k = sym_dim(k), .p = sym_dim(p), .ta = ta, .tb = tb};
  /* a is stored [M, K], or [K, M] when transposed; b [K, P] or [P, K]. */
  c.a_i = ta ? sym_const(1) : c.k;
  c.a_k = ta ? c.m : sym_const(1);
  c.b_k = tb ? sym_const(1) : c.p;
  c.b_j = tb ? c.k : sym_const(1);

  CgSym st_o[DL_MAX_RANK], st_a[DL_MAX_RANK], st_b[DL_MAX_RANK];
  contiguous_strides(so, st_o);
  contiguous_strides(sa, st_a);
  contiguous_strides(sb, st_b);
  CgNest nest = {.rank = ro - 2, .nops = 3};
  for (int d = 0; d < ro - 2; d++) {
    nest.dim[d] = sym_dim(so->d[d]);
    nest.stride[0][d] = st_o[d];
  }
  if (!broadcast_strides(sa->d, st_a, ra - 2, so->d, ro - 2, nest.stride[1]) ||
      !broadcast_strides(sb->d, st_b, rb - 2, so->d, ro - 2, nest.stride[2]))
    return internal(f, "matmul batch dimensions do not broadcast");
  if (!on_gpu(f)) {
    /* Small products of static size: the loop nest, which LLVM unrolls and
     * vectorises whole; the packing of the GEMM would cost more than it
     * saves.  Everything else: the GEMM. */
    bool tiny = c.m.k == 0 && c.k.k == 0 && c.p.k == 0 && m * k * p <= 4096;
    emit_loops(f, &nest, tiny ? matmul_cpu_body : matmul_gemm_body, &c);
    return true;
  }
  /* One point per output element: rows advance a, columns advance b. */
  nest.rank = ro;
  nest.dim[ro - 2] = c.m;
  nest.dim[ro - 1] = c.p;
  nest.stride[0][ro - 2] = c.p;
  nest.stride[0][ro - 1] = sym_const(1);
  nest.stride[1][ro - 2] = c.a_i;
  nest.stride[1][ro - 1] = sym_const(0);
  nest.stride[2][ro - 2] = sym_const(0);
  nest.stride[2][ro - 1] = c.b_j;
  emit_grid(f, &nest, matmul_gpu_body, &c);
  return true;
}

/* ---- reductions ------------------------------------------------------------- */

typedef struct ReduceCtx {
  LLVMValueRef count_f; /* MEAN: number of reduced elements, as float; else NULL */
  /* NVPTX: the reduced axes of the input */
  int nred;
  CgSym red_dim[DL_MAX_RANK], red_stride[DL_MAX_RANK];
} ReduceCtx;

static void zero_body(CgFn *f, LLVMValueRef *off, void *user) {
  (void)user;
  store_f32(f, f32c(f->cg, 0.0), f->out, off[0]);
}

static void accumulate_body(CgFn *f, LLVMValueRef *off, void *user) {
  (void)user;
  LLVMValueRef sum = f_add(f, load_f32(f, f->out, off[0]), load_f32(f, f->in[0], off[1]));
  store_f32(f, sum, f->out, off[0]);
}

static void divide_body(CgFn *f, LLVMValueRef *off, void *user) {
  ReduceCtx *r = user;
  store_f32(f, f_div(f, load_f32(f, f->out, off[0]), r->count_f), f->out, off[0]);
}

/* NVPTX, one output element: loop over the reduced elements, recovering each
 * one's offset within the input by div/mod over the reduced axes. */
static void reduce_gpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  ReduceCtx *r = user;
  Cg *cg = f->cg;
  CgSym count = sym_const(1);
  for (int i = 0; i < r->nred; i++)
    count = sym_mul(count, r->red_dim[i]);
  LLVMValueRef acc = scalar_slot(f, "acc");
  slot_set(f, acc, f32c(cg, 0.0));
  CgLoop l;
  LLVMValueRef e = loop_begin(f, &l, i64c(cg, 0), sym_value(f, count), "e");
  LLVMValueRef in_off = off[1], rest = e;
  for (int i = r->nred - 1; i >= 0; i--) {
    LLVMValueRef ix = rest;
    if (i > 0) {
      LLVMValueRef extent = sym_value(f, r->red_dim[i]);
      ix = LLVMBuildURem(cg->b, rest, extent, "");
      rest = LLVMBuildUDiv(cg->b, rest, extent, "");
    }
    in_off = idx_add(f, in_off, idx_mul(f, ix, sym_value(f, r->red_stride[i])));
  }
  slot_set(f, acc, f_add(f, slot_get(f, acc), load_f32(f, f->in[0], in_off)));
  loop_end(f, &l, i64c(cg, 1));
  LLVMValueRef v = slot_get(f, acc);
  if (r->count_f) v = f_div(f, v, r->count_f);
  store_f32(f, v, f->out, off[0]);
}

static bool emit_reduce(CgFn *f) {
  const DlNode *nd = f->node;
  const DlShape *si = f->in_shape[0];
  int r = si->rank;
  uint32_t all = r >= 32 ? UINT32_MAX : (uint32_t)((1u << r) - 1u);
  uint32_t axes = nd->attr.reduce.axes & all;
  if (nd->attr.reduce.axes == 0) axes = all; /* the constructor's convention: 0 means every axis */
  CgSym st_in[DL_MAX_RANK], st_out[DL_MAX_RANK];
  contiguous_strides(si, st_in);
  /* The output walks the kept axes row-major; reduced axes do not move it. */
  CgSym acc = sym_const(1), count = sym_const(1);
  for (int i = r - 1; i >= 0; i--) {
    if (axes & (1u << i)) {
      st_out[i] = sym_const(0);
      count = sym_mul(count, sym_dim(si->d[i]));
    } else {
      st_out[i] = acc;
      acc = sym_mul(acc, sym_dim(si->d[i]));
    }
  }
  if (!sym_eq(acc, shape_numel(&nd->shape)))
    return internal(f, "reduction result has the wrong number of elements");
  ReduceCtx rc = {.count_f = NULL};
  if (nd->op == DL_OP_MEAN)
    rc.count_f = LLVMBuildSIToFP(f->cg->b, sym_value(f, count), f->cg->t_f32, "");

  if (!on_gpu(f)) {
    CgNest flat = {.rank = 1, .nops = 1, .dim = {acc}, .stride = {{sym_const(1)}}};
    emit_loops(f, &flat, zero_body, NULL);
    CgNest nest = {.rank = r, .nops = 2};
    for (int i = 0; i < r; i++) {
      nest.dim[i] = sym_dim(si->d[i]);
      nest.stride[0][i] = st_out[i];
      nest.stride[1][i] = st_in[i];
    }
    emit_loops(f, &nest, accumulate_body, NULL);
    if (rc.count_f) emit_loops(f, &flat, divide_body, &rc);
    return true;
  }
  CgNest nest = {.rank = 0, .nops = 2};
  for (int i = 0; i < r; i++) {
    if (axes & (1u << i)) {
      rc.red_dim[rc.nred] = sym_dim(si->d[i]);
      rc.red_stride[rc.nred++] = st_in[i];
    } else {
      nest.dim[nest.rank] = sym_dim(si->d[i]);
      nest.stride[0][nest.rank] = st_out[i];
      nest.stride[1][nest.rank++] = st_in[i];
    }
  }
  emit_grid(f, &nest, reduce_gpu_body, &rc);
  return true;
}

/* ---- softmax / log_softmax over the last axis ---------------------------- */

typedef struct SoftmaxCtx {
  bool log;
  CgSym len; /* length of the last axis */
} SoftmaxCtx;

/* Row max, for numerical stability: exp(x - max) <= 1 never overflows. */
static LLVMValueRef row_max(CgFn *f, LLVMValueRef base, LLVMValueRef len) {
  Cg *cg = f->cg;
  LLVMValueRef mx = scalar_slot(f, "max");
  slot_set(f, mx, f32c(cg, -INFINITY));
  CgLoop l;
  LLVMValueRef j = loop_begin(f, &l, i64c(cg, 0), len, "j");
  LLVMValueRef x = load_f32(f, f->in[0], idx_add(f, base, j));
  LLVMValueRef cur = slot_get(f, mx);
  slot_set(f, mx, select_(f, fcmp(f, LLVMRealOGT, x, cur), x, cur));
  loop_end(f, &l, i64c(cg, 1));
  return slot_get(f, mx);
}

/* Sum of exp(x - max) over the row; with `store`, also writes each term to
 * out (softmax then only has to divide). */
static LLVMValueRef row_expsum(CgFn *f, LLVMValueRef base, LLVMValueRef len, LLVMValueRef mx,
                               bool store) {
  Cg *cg = f->cg;
  LLVMValueRef sum = scalar_slot(f, "sum");
  slot_set(f, sum, f32c(cg, 0.0));
  CgLoop l;
  LLVMValueRef j = loop_begin(f, &l, i64c(cg, 0), len, "j");
  LLVMValueRef o = idx_add(f, base, j);
  LLVMValueRef e = m_exp(f, f_sub(f, load_f32(f, f->in[0], o), mx));
  if (store) store_f32(f, e, f->out, o);
  slot_set(f, sum, f_add(f, slot_get(f, sum), e));
  loop_end(f, &l, i64c(cg, 1));
  return slot_get(f, sum);
}

/* CPU, one row starting at off[0] (== off[1]). */
static void softmax_cpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  SoftmaxCtx *s = user;
  Cg *cg = f->cg;
  LLVMValueRef len = sym_value(f, s->len), base = off[0];
  LLVMValueRef mx = row_max(f, base, len);
  LLVMValueRef sum = row_expsum(f, base, len, mx, !s->log);
  LLVMValueRef lse = s->log ? m_log(f, sum) : NULL;
  CgLoop l;
  LLVMValueRef j = loop_begin(f, &l, i64c(cg, 0), len, "j");
  LLVMValueRef o = idx_add(f, base, j);
  LLVMValueRef y = s->log ? f_sub(f, f_sub(f, load_f32(f, f->in[0], o), mx), lse)
                          : f_div(f, load_f32(f, f->out, o), sum);
  store_f32(f, y, f->out, o);
  loop_end(f, &l, i64c(cg, 1));
}

/* NVPTX, one element: recompute its row's max and sum. */
static void softmax_gpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  SoftmaxCtx *s = user;
  Cg *cg = f->cg;
  LLVMValueRef len = sym_value(f, s->len), o = off[0];
  LLVMValueRef base = LLVMBuildNSWSub(cg->b, o, LLVMBuildURem(cg->b, o, len, ""), "");
  LLVMValueRef mx = row_max(f, base, len);
  LLVMValueRef sum = row_expsum(f, base, len, mx, false);
  LLVMValueRef xm = f_sub(f, load_f32(f, f->in[0], o), mx);
  LLVMValueRef y = s->log ? f_sub(f, xm, m_log(f, sum)) : f_div(f, m_exp(f, xm), sum);
  store_f32(f, y, f->out, o);
}

static bool emit_softmax(CgFn *f) {
  const DlNode *nd = f->node;
  const DlShape *s = &nd->shape;
  if (!dl_shape_eq(s, f->in_shape[0])) return internal(f, "softmax changes the shape");
  SoftmaxCtx c = {.log = nd->op == DL_OP_LOG_SOFTMAX,
                  .len = s->rank ? sym_dim(s->d[s->rank - 1]) : sym_const(1)};
  CgSym rows = sym_const(1);
  for (int d = 0; d + 1 < s->rank; d++)
    rows = sym_mul(rows, sym_dim(s->d[d]));
  if (!on_gpu(f)) {
    CgNest nest = {.rank = 1, .nops = 2, .dim = {rows}, .stride = {{c.len}, {c.len}}};
    emit_loops(f, &nest, softmax_cpu_body, &c);
  } else {
    CgNest nest = {
        .rank = 1, .nops = 2, .dim = {shape_numel(s)}, .stride = {{sym_const(1)}, {sym_const(1)}}};
    emit_grid(f, &nest, softmax_gpu_body, &c);
  }
  return true;
}

/* ---- kernel functions ---------------------------------------------------------- */

bool cg_node_has_kernel(const DlGraph *g, DlNodeId id) {
  return dl_op_info[dl_node(g, id)->op].kind != DL_KIND_LEAF;
}

int cg_kernel_args(const DlGraph *g, DlNodeId id, DlNodeId args[DL_MAX_INPUTS]) {
  const DlNode *nd = dl_node(g, id);
  if (nd->op == DL_OP_ASSIGN) {
    /* The output buffer is the parameter (input 0); only the value is read. */
    args[0] = nd->in[1];
    return 1;
  }
  for (int i = 0; i < nd->nin; i++)
    args[i] = nd->in[i];
  return nd->nin;
}

static void add_attr(Cg *cg, LLVMValueRef fn, unsigned idx, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(cg->ctx, kind, 0));
}

static void add_str_attr(Cg *cg, LLVMValueRef fn, const char *key, const char *value) {
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(cg->ctx, key, (unsigned)strlen(key), value,
                                                    (unsigned)strlen(value)));
}

/* Mark an NVPTX function as a kernel (.entry), the way LLVM 19 expects:
 * !nvvm.annotations = !{!{ptr @f, !"kernel", i32 1}}. */
static void mark_ptx_kernel(Cg *cg, LLVMValueRef fn) {
  LLVMMetadataRef md[3] = {
      LLVMValueAsMetadata(fn),
      LLVMMDStringInContext2(cg->ctx, "kernel", 6),
      LLVMValueAsMetadata(LLVMConstInt(cg->t_i32, 1, false)),
  };
  LLVMAddNamedMetadataOperand(cg->mod, "nvvm.annotations",
                              LLVMMetadataAsValue(cg->ctx, LLVMMDNodeInContext2(cg->ctx, md, 3)));
}

static void kernel_begin(Cg *cg, DlNodeId id, CgFn *f) {
  const DlNode *nd = dl_node(cg->g, id);
  DlNodeId args[DL_MAX_INPUTS];
  int nargs = cg_kernel_args(cg->g, id, args);
  LLVMTypeRef params[CG_MAX_OPS + 1];
  for (int i = 0; i < 1 + nargs; i++)
    params[i] = cg->t_ptr;
  params[1 + nargs] = cg->t_i64;
  LLVMTypeRef fty = LLVMFunctionType(cg->t_void, params, (unsigned)(2 + nargs), false);
  const char *name =
      dl_arena_printf(cg->cc->arena, "%s_k%d_%s", cg->prefix, (int)id, dl_op_info[nd->op].name);
  LLVMValueRef fn = LLVMAddFunction(cg->mod, name, fty);
  LLVMSetLinkage(fn, cg->target == DL_TARGET_CPU ? LLVMInternalLinkage : LLVMExternalLinkage);
  add_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
  for (unsigned i = 1; i <= (unsigned)(1 + nargs); i++) {
    add_attr(cg, fn, i, "noalias");
    add_attr(cg, fn, i, "nocapture");
    if (i > 1) add_attr(cg, fn, i, "readonly");
  }
  if (cg->target == DL_TARGET_CPU) {
    add_str_attr(cg, fn, "target-cpu", cg->cpu);
    add_str_attr(cg, fn, "target-features", cg->features);
  } else {
    mark_ptx_kernel(cg, fn);
  }
  *f = (CgFn){.cg = cg, .node = nd, .id = id, .fn = fn, .nin = nargs};
  f->out = LLVMGetParam(fn, 0);
  LLVMSetValueName2(f->out, "out", 3);
  for (int i = 0; i < nargs; i++) {
    f->in[i] = LLVMGetParam(fn, (unsigned)(1 + i));
    f->in_shape[i] = &dl_node(cg->g, args[i])->shape;
    char pname[16];
    snprintf(pname, sizeof pname, "in%d", i);
    LLVMSetValueName2(f->in[i], pname, strlen(pname));
  }
  f->n = LLVMGetParam(fn, (unsigned)(1 + nargs));
  LLVMSetValueName2(f->n, "n", 1);
  f->entry_bb = LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry");
  LLVMPositionBuilderAtEnd(cg->b, f->entry_bb);
  cg->kernel[id] = fn;
}

bool cg_emit_kernel(Cg *cg, DlNodeId id) {
  const DlNode *nd = dl_node(cg->g, id);
  int errors_before = cg->cc->nerrors;
  CgFn f;
  bool ok = true;
  switch (nd->op) {
  case DL_OP_INPUT:
  case DL_OP_PARAM:
  case DL_OP_CONST:
  case DL_OP_HYPER: return true; /* leaves live in memory; nothing to compute */
  case DL_OP_NEG:
  case DL_OP_EXP:
  case DL_OP_LOG:
  case DL_OP_SQRT:
  case DL_OP_TANH:
  case DL_OP_SIGMOID:
  case DL_OP_RELU:
  case DL_OP_STEP:
  case DL_OP_ABS:
  case DL_OP_SIGN:
  case DL_OP_ADD:
  case DL_OP_SUB:
  case DL_OP_MUL:
  case DL_OP_DIV:
  case DL_OP_POW:
  case DL_OP_EXPAND:
  case DL_OP_RESHAPE: /* a copy, used only where the plan did not make it a view */
  case DL_OP_ASSIGN:
    kernel_begin(cg, id, &f);
    ok = emit_map(&f);
    break;
  case DL_OP_MATMUL:
    kernel_begin(cg, id, &f);
    ok = emit_matmul(&f);
    break;
  case DL_OP_SUM:
  case DL_OP_MEAN:
    kernel_begin(cg, id, &f);
    ok = emit_reduce(&f);
    break;
  case DL_OP_SOFTMAX:
  case DL_OP_LOG_SOFTMAX:
    kernel_begin(cg, id, &f);
    ok = emit_softmax(&f);
    break;
  }
  /* Close the function even after an error so the module stays well formed
   * (it is discarded anyway). */
  LLVMBuildRetVoid(cg->b);
  return ok && cg->cc->nerrors == errors_before;
}
