/* cg_kernels.c - one LLVM function per kernel node: the per-op code generators.
 *
 * Every kernel has the signature
 *     void k(float *noalias out[, float *noalias side], const float *noalias in0, ...,
 *            i64 n[, DlrtPool *pool])
 * where n is the runtime batch size (the value of every N dimension) and
 * side the buffer of the kernel's side reduction (DlKernel.side), when it
 * has one.
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
 * max and sum recomputed; the gradients of convolution and pooling: a loop
 * over the outputs that read the element).  No kernel needs atomics or a
 * barrier: where the CPU scatters (scatter_add, the gradients of pooling and
 * convolution), the GPU kernel gathers instead.  Correctness first; tiling
 * comes later.  The same kernels can be built for the CPU (Cg.grid_kernels,
 * see cg_testing.h), one thread of one block, so that their logic is tested
 * without a GPU.
 */
#include "cg_internal.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

/* Operands of an iteration space: the output and the inputs, or (emit_points)
 * the output and one index per axis. */
#define CG_MAX_OPS                                                                                 \
  (4 + DL_KERNEL_MAX_OPERANDS > 1 + DL_MAX_RANK ? 4 + DL_KERNEL_MAX_OPERANDS : 1 + DL_MAX_RANK)

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
  int k;                /* the kernel's index in the program */
  const DlKernel *kern; /* the kernel */
  const DlNode *node;   /* its root (the node of an op kernel) */
  DlNodeId id;          /* the root's id */
  LLVMValueRef fn;
  LLVMBasicBlockRef entry_bb;
  LLVMValueRef n;    /* i64 batch size */
  LLVMValueRef pool; /* CPU: the runtime's thread pool (may be null), else NULL */
  LLVMValueRef out;  /* float*: the root's buffer */
  LLVMValueRef side; /* float*: the side reduction's buffer, or NULL */
  /* Op kernels: the root's inputs, in input order. */
  LLVMValueRef in[DL_MAX_INPUTS];
  const DlShape *in_shape[DL_MAX_INPUTS];
  int nin;
  /* Every kernel: its operands (dl_kernel_operands) and where each is read
   * from: a buffer, or (op_ptr NULL) a uniform constant folded into the code. */
  int nops;
  DlNodeId op_node[DL_KERNEL_MAX_OPERANDS];
  LLVMValueRef op_ptr[DL_KERNEL_MAX_OPERANDS];
  LLVMValueRef op_const[DL_KERNEL_MAX_OPERANDS];
  bool op_ew[DL_KERNEL_MAX_OPERANDS];   /* read elementwise by a node of the kernel */
  int op_param[DL_KERNEL_MAX_OPERANDS]; /* its buffer's parameter (0: out), or -1 */
  bool plain; /* small: loops are neither unrolled nor vectorised (see kernel_begin) */
  int nbufs;  /* buffer parameters: out, side and the inputs */
  LLVMValueRef buf[1 + DL_KERNEL_MAX_OPERANDS];
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

/* A scalar that lives across loop iterations (an accumulator).  It is an
 * alloca in the entry block, which SROA turns into SSA values at -O1 and
 * above. */
static LLVMValueRef typed_slot(CgFn *f, LLVMTypeRef type, const char *name) {
  LLVMBuilderRef tmp = LLVMCreateBuilderInContext(f->cg->ctx);
  LLVMValueRef first = LLVMGetFirstInstruction(f->entry_bb);
  if (first)
    LLVMPositionBuilderBefore(tmp, first);
  else
    LLVMPositionBuilderAtEnd(tmp, f->entry_bb);
  LLVMValueRef slot = LLVMBuildAlloca(tmp, type, name);
  LLVMDisposeBuilder(tmp);
  return slot;
}
static LLVMValueRef scalar_slot(CgFn *f, const char *name) {
  return typed_slot(f, f->cg->t_f32, name);
}
static LLVMValueRef slot_get(CgFn *f, LLVMValueRef slot) {
  return LLVMBuildLoad2(f->cg->b, LLVMGetAllocatedType(slot), slot, "");
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
  LLVMValueRef br = LLVMBuildBr(cg->b, l->header);
  LLVMPositionBuilderAtEnd(cg->b, l->exit);
  if (f->plain) cg_plain_loop(cg, br);
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
static LLVMValueRef icmp(CgFn *f, LLVMIntPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(f->cg->b, p, a, b, "");
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

static LLVMValueRef select_(CgFn *f, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(f->cg->b, c, a, b, "");
}

/* exp on the CPU, as straight-line arithmetic that vectorises (llvm.exp
 * becomes one libm call per lane, and a softmax kernel of 16-lane calls is
 * slow and 2,000 instructions long): Cody-Waite reduction x = n ln2 + r with
 * |r| <= ln2/2, Cephes' degree-6 polynomial for e^r (about 1 ulp), and 2^n
 * built in the exponent bits, as two factors so that n from -150 to 128
 * gives denormals, zero and infinity where expf does.  NaN stays NaN. */
static LLVMValueRef cpu_exp(CgFn *f, LLVMValueRef x) {
  Cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  LLVMValueRef lo = f32c(cg, -104.0), hi = f32c(cg, 89.0);
  LLVMValueRef xc = select_(f, fcmp(f, LLVMRealOLT, x, lo), lo, x);
  xc = select_(f, fcmp(f, LLVMRealOGT, xc, hi), hi, xc);
  LLVMValueRef fx = f32_intr1(f, "llvm.floor",
                              f_add(f, f_mul(f, xc, f32c(cg, 1.44269504088896341)), f32c(cg, 0.5)));
  LLVMValueRef r = f_sub(f, xc, f_mul(f, fx, f32c(cg, 0.693359375)));
  r = f_sub(f, r, f_mul(f, fx, f32c(cg, -2.12194440e-4)));
  static const double P[6] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3,
                              4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1};
  LLVMValueRef y = f32c(cg, P[0]);
  for (int i = 1; i < 6; i++)
    y = f_add(f, f_mul(f, y, r), f32c(cg, P[i]));
  y = f_add(f, f_add(f, f_mul(f, f_mul(f, y, r), r), r), f32c(cg, 1.0));
  LLVMValueRef n = LLVMBuildFPToSI(b, fx, cg->t_i32, "");
  LLVMValueRef n1 = LLVMBuildAShr(b, n, LLVMConstInt(cg->t_i32, 1, false), "");
  LLVMValueRef n2 = LLVMBuildSub(b, n, n1, "");
  LLVMValueRef scale[2];
  LLVMValueRef ns[2] = {n1, n2};
  for (int i = 0; i < 2; i++)
    scale[i] = LLVMBuildBitCast(
        b,
        LLVMBuildShl(b, LLVMBuildAdd(b, ns[i], LLVMConstInt(cg->t_i32, 127, false), ""),
                     LLVMConstInt(cg->t_i32, 23, false), ""),
        cg->t_f32, "");
  LLVMValueRef v = f_mul(f, f_mul(f, y, scale[0]), scale[1]);
  return select_(f, fcmp(f, LLVMRealUNO, x, x), x, v);
}

/* NVPTX has no libm (libdevice is not available): exp and log are built from
 * exp2 and log2. */
static LLVMValueRef m_exp(CgFn *f, LLVMValueRef x) {
  if (!on_gpu(f)) return cpu_exp(f, x);
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
  case DL_OP_MAXIMUM: return select_(f, fcmp(f, LLVMRealOGT, x[0], x[1]), x[0], x[1]);
  case DL_OP_GT: return select_(f, fcmp(f, LLVMRealOGT, x[0], x[1]), one, zero);
  case DL_OP_EQ: return select_(f, fcmp(f, LLVMRealOEQ, x[0], x[1]), one, zero);
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
  case DL_OP_LOG_SOFTMAX:
  case DL_OP_MAX:
  case DL_OP_PERMUTE:
  case DL_OP_SLICE:
  case DL_OP_PAD:
  case DL_OP_CONCAT:
  case DL_OP_GATHER:
  case DL_OP_SCATTER_ADD:
  case DL_OP_ONE_HOT:
  case DL_OP_CONV2D:
  case DL_OP_CONV2D_GRAD_INPUT:
  case DL_OP_CONV2D_GRAD_FILTER:
  case DL_OP_MAXPOOL2D:
  case DL_OP_AVGPOOL2D:
  case DL_OP_MAXPOOL2D_GRAD:
  case DL_OP_AVGPOOL2D_GRAD:
  case DL_OP_DROPOUT: break;
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

/* The loop of dimension d and those inside it; the outermost loop runs over
 * [range[0], range[1]) when range is given, else over the whole dimension. */
static void nest_level(CgFn *f, const CgNest *nest, int d, LLVMValueRef *base, CgBody body,
                       void *user, LLVMValueRef *range) {
  if (d == nest->rank) {
    body(f, base, user);
    return;
  }
  CgLoop l;
  LLVMValueRef i = range && d == 0
                       ? loop_begin(f, &l, range[0], range[1], "i")
                       : loop_begin(f, &l, i64c(f->cg, 0), sym_value(f, nest->dim[d]), "i");
  LLVMValueRef off[CG_MAX_OPS];
  for (int op = 0; op < nest->nops; op++)
    off[op] = idx_add(f, base[op], idx_mul(f, i, sym_value(f, nest->stride[op][d])));
  nest_level(f, nest, d + 1, off, body, user, range);
  loop_end(f, &l, i64c(f->cg, 1));
}

/* CPU: nested loops over the whole space, innermost dimension innermost. */
static void emit_loops(CgFn *f, const CgNest *nest_in, CgBody body, void *user) {
  CgNest nest = *nest_in;
  nest_simplify(&nest);
  LLVMValueRef off[CG_MAX_OPS];
  for (int op = 0; op < nest.nops; op++)
    off[op] = i64c(f->cg, 0);
  nest_level(f, &nest, 0, off, body, user, NULL);
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
  unsigned op = (unsigned)f->node->op;
  dl_error(f->cg->cc, f->node->loc, "internal error: cannot generate code for %s node %%%d: %s",
           op < (unsigned)DL_OP_COUNT ? dl_op_info[op].name : "?", (int)f->id, what);
  return false;
}

/* ---- fused kernels: the values of a kernel's nodes at one point ----------
 *
 * Map, reduce and matmul kernels evaluate their elementwise nodes at each
 * point of one iteration space (the root's shape, a reduction's input shape,
 * or the matmul's shape): an operand is loaded at its offset there
 * (broadcast operands have stride 0), a node of the kernel is computed from
 * its inputs' values, each value once per point. */

/* Kernels never hold more than this many nodes (fusion stops there). */
#define CG_MAX_FUSED DL_KERNEL_MAX_NODES

typedef struct Fused {
  /* Nest operand of each kernel operand's elementwise reads (0: not read). */
  int op_nest[DL_KERNEL_MAX_OPERANDS];
  LLVMValueRef scale[CG_MAX_FUSED]; /* per node of the kernel: EXPAND mean's divisor, else NULL */
  /* Per point: */
  LLVMValueRef *off;                           /* nest operand offsets */
  LLVMValueRef memo[CG_MAX_FUSED];             /* per node of the kernel */
  LLVMValueRef op_val[DL_KERNEL_MAX_OPERANDS]; /* per operand */
} Fused;

static int node_index(const DlKernel *kern, DlNodeId id) {
  for (int i = 0; i < kern->nnodes; i++)
    if (kern->nodes[i] == id) return i;
  return -1;
}

static int operand_index(const CgFn *f, DlNodeId id) {
  for (int i = 0; i < f->nops; i++)
    if (f->op_node[i] == id) return i;
  return -1;
}

/* The value of node id at the current point (fu->off). */
static LLVMValueRef fused_value(CgFn *f, Fused *fu, DlNodeId id) {
  int at = node_index(f->kern, id);
  if (at < 0) {
    int j = operand_index(f, id);
    if (j < 0) {
      internal(f, "a fused node reads a value that is neither computed nor an operand");
      return f32c(f->cg, 0.0);
    }
    if (!fu->op_val[j])
      fu->op_val[j] =
          f->op_ptr[j] ? load_f32(f, f->op_ptr[j], fu->off[fu->op_nest[j]]) : f->op_const[j];
    return fu->op_val[j];
  }
  if (fu->memo[at]) return fu->memo[at];
  const DlNode *nd = dl_node(f->cg->g, id);
  LLVMValueRef x[DL_MAX_INPUTS] = {NULL};
  int first = nd->op == DL_OP_ASSIGN ? 1 : 0;
  for (int i = first; i < nd->nin; i++)
    x[i - first] = fused_value(f, fu, nd->in[i]);
  LLVMValueRef v = map_value(f, nd->op, x, fu->scale[at]);
  if (!v) {
    internal(f, "not an elementwise op");
    v = f32c(f->cg, 0.0);
  }
  return fu->memo[at] = v;
}

static void fused_point(Fused *fu, LLVMValueRef *off) {
  fu->off = off;
  memset(fu->memo, 0, sizeof fu->memo);
  memset(fu->op_val, 0, sizeof fu->op_val);
}

/* Divisors of the kernel's EXPAND-mean nodes, computed once before the loops. */
static void fused_scales(CgFn *f, Fused *fu) {
  for (int i = 0; i < f->kern->nnodes; i++) {
    const DlNode *nd = dl_node(f->cg->g, f->kern->nodes[i]);
    fu->scale[i] = NULL;
    if (nd->op != DL_OP_EXPAND || !nd->attr.expand.mean) continue;
    const DlShape *from = &dl_node(f->cg->g, nd->in[0])->shape;
    LLVMValueRef factor = LLVMBuildSDiv(f->cg->b, sym_value(f, shape_numel(&nd->shape)),
                                        sym_value(f, shape_numel(from)), "");
    fu->scale[i] = LLVMBuildSIToFP(f->cg->b, factor, f->cg->t_f32, "");
  }
}

/* The operands read elementwise become nest operands from `first` on, each
 * with its broadcast strides over `space`.  False if one does not broadcast. */
static bool fused_operands(CgFn *f, Fused *fu, const DlShape *space, CgNest *nest, int first) {
  nest->nops = first;
  for (int j = 0; j < f->nops; j++) {
    fu->op_nest[j] = 0;
    if (!f->op_ptr[j] || !f->op_ew[j]) continue;
    const DlShape *s = &dl_node(f->cg->g, f->op_node[j])->shape;
    CgSym st[DL_MAX_RANK];
    contiguous_strides(s, st);
    if (!broadcast_strides(s->d, st, s->rank, space->d, space->rank, nest->stride[nest->nops]))
      return internal(f, "an operand does not broadcast to the kernel's shape");
    fu->op_nest[j] = nest->nops++;
  }
  return true;
}

/* The value a map kernel stores: its root's, or an ASSIGN's value. */
static LLVMValueRef fused_root_value(CgFn *f, Fused *fu) {
  const DlNode *root = f->node;
  return root->op == DL_OP_ASSIGN ? fused_value(f, fu, root->in[1]) : fused_value(f, fu, f->id);
}

/* ---- map kernels: elementwise chains, assign, and matmul epilogues ---------- */

typedef struct MapCtx {
  Fused fu;
  DlNodeId anchor; /* MATMUL epilogue: the matmul, whose value is already in out */
  /* The side reduction: each value the kernel stores is added into it,
   * through the nest operand side_op (CPU) or the slot side_acc (GPU, one
   * thread per column); side_op -1 and side_acc NULL: none here. */
  int side_op;
  LLVMValueRef side_acc;
} MapCtx;

static MapCtx map_ctx(DlNodeId anchor) {
  return (MapCtx){.anchor = anchor, .side_op = -1};
}

/* Add v, the root's value at a point, into the side reduction: in the order
 * the points come, which is the order a reduction kernel would add them in
 * (acc + v, from 0, over the leading axes in order). */
static void side_add(CgFn *f, MapCtx *m, LLVMValueRef v, LLVMValueRef *off) {
  if (m->side_acc) {
    slot_set(f, m->side_acc, f_add(f, slot_get(f, m->side_acc), v));
  } else if (m->side_op >= 0) {
    LLVMValueRef at = off[m->side_op];
    store_f32(f, f_add(f, load_f32(f, f->side, at), v), f->side, at);
  }
}

static void map_body(CgFn *f, LLVMValueRef *off, void *user) {
  MapCtx *m = user;
  fused_point(&m->fu, off);
  if (m->anchor != DL_NONE)
    m->fu.memo[node_index(f->kern, m->anchor)] = load_f32(f, f->out, off[0]);
  LLVMValueRef v = fused_root_value(f, &m->fu);
  if (f->id != m->anchor) store_f32(f, v, f->out, off[0]); /* (a matmul's own value is there) */
  side_add(f, m, v, off);
}

/* The nest of a map over the root's shape: out and the operands. */
static bool map_nest(CgFn *f, MapCtx *m, CgNest *nest) {
  const DlShape *s = &f->node->shape;
  nest->rank = s->rank;
  for (int d = 0; d < s->rank; d++)
    nest->dim[d] = sym_dim(s->d[d]);
  contiguous_strides(s, nest->stride[0]);
  return fused_operands(f, &m->fu, s, nest, 1);
}

/* ---- side reductions ------------------------------------------------------------
 *
 * A map or matmul kernel with a side reduction (DlKernel.side, see
 * passes/fuse.c) sums, or averages, its root over the root's leading axes
 * while it stores the root.  On the CPU the side buffer is zeroed, each
 * stored value is added into it at its column as the loops run over the
 * leading axes in order, on one thread (a matmul's epilogue runs on the
 * calling thread after the GEMM, whatever threads shared the product; a map
 * large enough to be shared between threads sums its stored root
 * afterwards instead), so the additions come in the order of the reduction
 * kernel they replace: the same bits, for any number of threads.  GPU-style
 * kernels run one thread per column of the side buffer, each looping over
 * the leading axes: the column's sum is that thread's running sum, with no
 * atomics and no barrier (fewer threads than one per element, correctness
 * first like every kernel here). */

/* How many leading axes of the root the side reduction reduces. */
static int side_axes(const CgFn *f) {
  uint32_t axes = dl_node(f->cg->g, f->kern->side)->attr.reduce.axes;
  int n = 0;
  for (; axes & 1u; axes >>= 1)
    n++;
  return n ? n : f->node->shape.rank; /* 0: every axis */
}

/* A MEAN's divisor (the reduced elements, as float), or NULL for a SUM. */
static LLVMValueRef side_count(CgFn *f) {
  if (dl_node(f->cg->g, f->kern->side)->op != DL_OP_MEAN) return NULL;
  CgSym count = sym_const(1);
  for (int d = 0; d < side_axes(f); d++)
    count = sym_mul(count, sym_dim(f->node->shape.d[d]));
  return LLVMBuildSIToFP(f->cg->b, sym_value(f, count), f->cg->t_f32, "");
}

/* The side buffer as an operand of a nest over the root's shape: stride 0
 * along the reduced leading axes, row-major over the others. */
static void side_operand(CgFn *f, MapCtx *m, CgNest *nest) {
  const DlShape *s = &f->node->shape;
  int nred = side_axes(f);
  CgSym acc = sym_const(1);
  m->side_op = nest->nops++;
  for (int d = s->rank - 1; d >= 0; d--) {
    nest->stride[m->side_op][d] = d < nred ? sym_const(0) : acc;
    if (d >= nred) acc = sym_mul(acc, sym_dim(s->d[d]));
  }
}

static void side_zero_body(CgFn *f, LLVMValueRef *off, void *user) {
  (void)user;
  store_f32(f, f32c(f->cg, 0.0), f->side, off[0]);
}

static void side_divide_body(CgFn *f, LLVMValueRef *off, void *user) {
  LLVMValueRef count = *(LLVMValueRef *)user;
  store_f32(f, f_div(f, load_f32(f, f->side, off[0]), count), f->side, off[0]);
}

/* CPU: zero the side buffer, run the loops of nest (whose body adds into
 * it; nest has its side operand), then divide for a MEAN. */
static void side_loops(CgFn *f, const CgNest *nest, CgBody body, void *user) {
  CgSym numel = shape_numel(&dl_node(f->cg->g, f->kern->side)->shape);
  CgNest flat = {.rank = 1, .nops = 1, .dim = {numel}, .stride = {{sym_const(1)}}};
  emit_loops(f, &flat, side_zero_body, NULL);
  emit_loops(f, nest, body, user);
  LLVMValueRef count = side_count(f);
  if (count) emit_loops(f, &flat, side_divide_body, &count);
}

/* GPU: one thread per column. */
typedef struct ColumnCtx {
  CgNest rows; /* the reduced leading axes, with every nest operand's strides */
  CgBody body;
  void *user;
  MapCtx *m;
  LLVMValueRef count;
} ColumnCtx;

static void column_body(CgFn *f, LLVMValueRef *off, void *user) {
  ColumnCtx *c = user;
  slot_set(f, c->m->side_acc, f32c(f->cg, 0.0));
  nest_level(f, &c->rows, 0, off, c->body, c->user, NULL);
  LLVMValueRef v = slot_get(f, c->m->side_acc);
  if (c->count) v = f_div(f, v, c->count);
  store_f32(f, v, f->side, off[c->m->side_op]);
}

/* The points of nest (over the root's shape), each given to body, and the
 * side reduction of the values body stores, m being body's MapCtx (or the
 * one its epilogue uses). */
static void emit_with_side(CgFn *f, CgNest *nest, CgBody body, void *user, MapCtx *m) {
  if (!f->side) {
    emit_space(f, nest, body, user);
    return;
  }
  side_operand(f, m, nest);
  if (!on_gpu(f)) {
    side_loops(f, nest, body, user);
    return;
  }
  int nred = side_axes(f);
  ColumnCtx c = {.rows = {.rank = nred, .nops = nest->nops},
                 .body = body,
                 .user = user,
                 .m = m,
                 .count = side_count(f)};
  CgNest kept = {.rank = nest->rank - nred, .nops = nest->nops};
  for (int d = 0; d < nest->rank; d++) {
    CgNest *to = d < nred ? &c.rows : &kept;
    int at = d < nred ? d : d - nred;
    to->dim[at] = nest->dim[d];
    for (int op = 0; op < nest->nops; op++)
      to->stride[op][at] = nest->stride[op][d];
  }
  m->side_acc = scalar_slot(f, "side");
  emit_grid(f, &kept, column_body, &c);
}

/* A shared map's side reduction, from its stored root (on this thread). */
static void side_from_out_body(CgFn *f, LLVMValueRef *off, void *user) {
  side_add(f, user, load_f32(f, f->out, off[0]), off);
}

static void side_after_parallel_map(CgFn *f) {
  MapCtx m = map_ctx(DL_NONE);
  const DlShape *s = &f->node->shape;
  CgNest nest = {.rank = s->rank, .nops = 1};
  for (int d = 0; d < s->rank; d++)
    nest.dim[d] = sym_dim(s->d[d]);
  contiguous_strides(s, nest.stride[0]);
  side_operand(f, &m, &nest);
  side_loops(f, &nest, side_from_out_body, &m);
}

/* ---- elementwise kernels on several threads ------------------------------------
 *
 * A map kernel that can have CG_MAP_PARALLEL_ELEMS elements or more (at the
 * largest batch; smaller ones gain nothing from a second thread, see
 * cg_gemm.c) is three functions: the loops, as a function of a range of
 * the outermost loop ("_part", with noalias buffers like every kernel); a
 * trampoline taking its buffers from an argument block, which
 * dlrt_parallel_for calls with each thread's range; and the kernel, which
 * hands the pool the whole range when the pool exists and the kernel is at
 * least that large at this batch size, and otherwise calls the part on the
 * whole range itself.  Each element is computed the same way on any thread. */
#define CG_MAP_PARALLEL_ELEMS (1 << 16)
/* Ranges are cheap to start, and a thread that loses its core in the
 * middle holds up only a small one. */
#define CG_MAP_RANGES_PER_THREAD 4

static int64_t sym_at(CgSym s, int64_t n) {
  int64_t v = s.c;
  for (int i = 0; i < s.k; i++)
    v *= n;
  return v;
}

/* A function like f's kernel with two more i64 parameters (begin, end) after
 * n, no pool, and the same buffers: *part is f redirected to it.  With
 * `scratch`, a last parameter: a pointer to memory of the calling kernel
 * that every range may use (range[2]). */
static void begin_part(CgFn *f, CgFn *part, LLVMValueRef *range, bool scratch) {
  Cg *cg = f->cg;
  LLVMTypeRef params[DL_KERNEL_MAX_OPERANDS + 4];
  for (int i = 0; i < f->nbufs; i++)
    params[i] = cg->t_ptr;
  for (int i = 0; i < 3; i++)
    params[f->nbufs + i] = cg->t_i64;
  params[f->nbufs + 3] = cg->t_ptr;
  const char *name = dl_arena_printf(cg->cc->arena, "%s_part", LLVMGetValueName(f->fn));
  LLVMValueRef fn = LLVMAddFunction(
      cg->mod, name,
      LLVMFunctionType(cg->t_void, params, (unsigned)f->nbufs + 3 + (scratch ? 1 : 0), 0));
  /* The kernel's attributes (noalias buffers, target CPU, internal). */
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  unsigned nattr = LLVMGetAttributeCountAtIndex(f->fn, LLVMAttributeFunctionIndex);
  LLVMAttributeRef attrs[32];
  if (nattr <= 32) {
    LLVMGetAttributesAtIndex(f->fn, LLVMAttributeFunctionIndex, attrs);
    for (unsigned i = 0; i < nattr; i++)
      LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, attrs[i]);
  }
  /* Called from the kernel and from the trampoline: one copy of the loops. */
  add_attr(cg, fn, LLVMAttributeFunctionIndex, "noinline");
  for (unsigned i = 1; i <= (unsigned)f->nbufs; i++) {
    unsigned na = LLVMGetAttributeCountAtIndex(f->fn, i);
    if (na > 32) continue;
    LLVMGetAttributesAtIndex(f->fn, i, attrs);
    for (unsigned a = 0; a < na; a++)
      LLVMAddAttributeAtIndex(fn, i, attrs[a]);
  }
  *part = *f;
  part->fn = fn;
  for (int i = 0; i < f->nbufs; i++)
    part->buf[i] = LLVMGetParam(fn, (unsigned)i);
  part->out = part->buf[0];
  part->side = f->side ? part->buf[1] : NULL;
  part->n = LLVMGetParam(fn, (unsigned)f->nbufs);
  part->pool = NULL;
  range[0] = LLVMGetParam(fn, (unsigned)f->nbufs + 1);
  range[1] = LLVMGetParam(fn, (unsigned)f->nbufs + 2);
  if (scratch) range[2] = LLVMGetParam(fn, (unsigned)f->nbufs + 3);
  for (int j = 0; j < f->nops; j++)
    if (f->op_param[j] >= 0) part->op_ptr[j] = part->buf[f->op_param[j]];
  for (int i = 0; i < f->nin; i++) {
    int j = operand_index(f, f->node->in[i]);
    if (j >= 0 && part->op_ptr[j]) part->in[i] = part->op_ptr[j];
  }
  part->entry_bb = LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry");
  LLVMPositionBuilderAtEnd(cg->b, part->entry_bb);
}

/* void <part>_task(ptr args, i64 begin, i64 end): args holds the buffers,
 * n and, when the part takes one, the scratch pointer. */
static LLVMValueRef part_trampoline(CgFn *f, LLVMValueRef part, LLVMTypeRef args_ty) {
  bool scratch = LLVMCountParams(part) > (unsigned)f->nbufs + 3;
  Cg *cg = f->cg;
  LLVMTypeRef params[3] = {cg->t_ptr, cg->t_i64, cg->t_i64};
  const char *name = dl_arena_printf(cg->cc->arena, "%s_task", LLVMGetValueName(part));
  LLVMValueRef fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->t_void, params, 3, false));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  add_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
  LLVMBuilderRef b = LLVMCreateBuilderInContext(cg->ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
  LLVMValueRef call[DL_KERNEL_MAX_OPERANDS + 4];
  for (int i = 0; i <= f->nbufs; i++)
    call[i] =
        LLVMBuildLoad2(b, LLVMStructGetTypeAtIndex(args_ty, (unsigned)i),
                       LLVMBuildStructGEP2(b, args_ty, LLVMGetParam(fn, 0), (unsigned)i, ""), "");
  call[f->nbufs + 1] = LLVMGetParam(fn, 1);
  call[f->nbufs + 2] = LLVMGetParam(fn, 2);
  if (scratch)
    call[f->nbufs + 3] = LLVMBuildLoad2(
        b, cg->t_ptr,
        LLVMBuildStructGEP2(b, args_ty, LLVMGetParam(fn, 0), (unsigned)f->nbufs + 1, ""), "");
  LLVMBuildCall2(b, LLVMGlobalGetValueType(part), part, call,
                 (unsigned)f->nbufs + 3 + (scratch ? 1 : 0), "");
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
  return fn;
}

/* In the kernel f: part(bufs..., n, 0, count[, scratch]) on the pool's
 * threads when there is a pool (and, with `size` given, when it is at least
 * CG_MAP_PARALLEL_ELEMS), else on this one. */
static void part_dispatch(CgFn *f, LLVMValueRef part, LLVMValueRef count, LLVMValueRef size,
                          int per_thread, LLVMValueRef scratch) {
  Cg *cg = f->cg;
  LLVMTypeRef fields[DL_KERNEL_MAX_OPERANDS + 2];
  for (int i = 0; i < f->nbufs; i++)
    fields[i] = cg->t_ptr;
  fields[f->nbufs] = cg->t_i64;
  fields[f->nbufs + 1] = cg->t_ptr;
  LLVMTypeRef args_ty =
      LLVMStructTypeInContext(cg->ctx, fields, (unsigned)f->nbufs + 1 + (scratch ? 1 : 0), false);
  LLVMValueRef share = LLVMBuildIsNotNull(cg->b, f->pool, "");
  if (size)
    share = LLVMBuildAnd(cg->b, share, icmp(f, LLVMIntSGE, size, i64c(cg, CG_MAP_PARALLEL_ELEMS)),
                         "share");
  LLVMBasicBlockRef pool_bb = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "pool");
  LLVMBasicBlockRef here_bb = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "here");
  LLVMBasicBlockRef done_bb = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "done");
  LLVMBuildCondBr(cg->b, share, pool_bb, here_bb);
  LLVMPositionBuilderAtEnd(cg->b, pool_bb);
  LLVMValueRef args = cg_entry_alloca(cg, args_ty, "part_args");
  for (int i = 0; i <= f->nbufs; i++)
    LLVMBuildStore(cg->b, i < f->nbufs ? f->buf[i] : f->n,
                   LLVMBuildStructGEP2(cg->b, args_ty, args, (unsigned)i, ""));
  if (scratch)
    LLVMBuildStore(cg->b, scratch,
                   LLVMBuildStructGEP2(cg->b, args_ty, args, (unsigned)f->nbufs + 1, ""));
  LLVMValueRef pf = cg_parallel_for(cg);
  LLVMValueRef pargs[5] = {f->pool, count, LLVMConstInt(cg->t_i32, (unsigned)per_thread, 0),
                           part_trampoline(f, part, args_ty), args};
  LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(pf), pf, pargs, 5, "");
  LLVMBuildBr(cg->b, done_bb);
  LLVMPositionBuilderAtEnd(cg->b, here_bb);
  LLVMValueRef call[DL_KERNEL_MAX_OPERANDS + 4];
  for (int i = 0; i < f->nbufs; i++)
    call[i] = f->buf[i];
  call[f->nbufs] = f->n;
  call[f->nbufs + 1] = i64c(cg, 0);
  call[f->nbufs + 2] = count;
  call[f->nbufs + 3] = scratch;
  LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(part), part, call,
                 (unsigned)f->nbufs + 3 + (scratch ? 1 : 0), "");
  LLVMBuildBr(cg->b, done_bb);
  LLVMPositionBuilderAtEnd(cg->b, done_bb);
}

static bool emit_map_parallel(CgFn *f, MapCtx *m) {
  Cg *cg = f->cg;
  CgFn part;
  LLVMValueRef range[2];
  begin_part(f, &part, range, false);
  fused_scales(&part, &m->fu);
  CgNest nest;
  if (!map_nest(&part, m, &nest)) return false;
  nest_simplify(&nest);
  LLVMValueRef off[CG_MAX_OPS];
  for (int op = 0; op < nest.nops; op++)
    off[op] = i64c(cg, 0);
  nest_level(&part, &nest, 0, off, map_body, m, range);
  LLVMBuildRetVoid(cg->b);

  LLVMPositionBuilderAtEnd(cg->b, f->entry_bb);
  part_dispatch(f, part.fn, sym_value(f, nest.dim[0]), sym_value(f, shape_numel(&f->node->shape)),
                CG_MAP_RANGES_PER_THREAD, NULL);
  if (f->side) side_after_parallel_map(f);
  return true;
}

static bool emit_map(CgFn *f) {
  MapCtx m = map_ctx(DL_NONE);
  if (!on_gpu(f) && f->pool &&
      sym_at(shape_numel(&f->node->shape), f->cg->prog->max_batch) >= CG_MAP_PARALLEL_ELEMS)
    return emit_map_parallel(f, &m);
  fused_scales(f, &m.fu);
  CgNest nest;
  if (!map_nest(f, &m, &nest)) return false;
  emit_with_side(f, &nest, map_body, &m, &m);
  return true;
}

/* ---- matmul ------------------------------------------------------------------ */

typedef struct MatmulCtx {
  CgSym m, k, p;            /* out [.., M, P] = a [.., M, K] @ b [.., K, P] */
  CgSym a_i, a_k, b_k, b_j; /* element strides of a and b along i, k, j */
  bool ta, tb;
  LLVMValueRef a, b; /* the operands' pointers */
  MapCtx epi;        /* GPU: the epilogue, evaluated per element */
  bool batch_sum;    /* the kernel is a sum over the batch of the product */
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
  LLVMValueRef aik = load_f32(f, c->a, idx_add(f, arow, idx_mul(f, kk, sym_value(f, c->a_k))));
  LLVMValueRef brow = idx_add(f, off[2], idx_mul(f, kk, sym_value(f, c->b_k)));
  LLVMValueRef j = loop_begin(f, &lj, i64c(cg, 0), p, "j");
  LLVMValueRef o = idx_add(f, orow, j);
  LLVMValueRef bkj = load_f32(f, c->b, idx_add(f, brow, idx_mul(f, j, sym_value(f, c->b_j))));
  /* b's element first: with a[i,k] as the first operand, the SLP vectoriser
   * of LLVM 19 mixes up the operand order of a fully unrolled row and builds
   * shuffles instead of a broadcast. */
  LLVMValueRef args[3] = {bkj, aik, load_f32(f, f->out, o)};
  store_f32(f, intrinsic(f, "llvm.fmuladd", cg->t_f32, args, 3), f->out, o);
  loop_end(f, &lj, i64c(cg, 1));
  loop_end(f, &lk, i64c(cg, 1));
  loop_end(f, &li, i64c(cg, 1));
}

/* CPU, one matrix of the batch: the packed GEMM of cg_gemm.c, which may
 * share the product between threads when it can be large enough at the
 * largest batch. */
static void matmul_gemm_body(CgFn *f, LLVMValueRef *off, void *user) {
  MatmulCtx *c = user;
  int64_t n = f->cg->prog->max_batch;
  int64_t macs = sym_at(c->m, n) * sym_at(c->k, n) * sym_at(c->p, n);
  /* Rows and columns few enough for the dot-product path (cg_gemm.c), at
   * the planned batch size. */
  bool few = sym_at(c->m, n) <= 12 && sym_at(c->p, n) <= 64;
  cg_gemm_call(f->cg, c->ta, c->tb, elem_ptr(f, f->out, off[0]), elem_ptr(f, c->a, off[1]),
               elem_ptr(f, c->b, off[2]), sym_value(f, c->m), sym_value(f, c->k),
               sym_value(f, c->p), macs >= CG_GEMM_PARALLEL_MACS ? f->pool : NULL, few);
}

/* NVPTX, one output element: its offsets in a and b are the starts of row i
 * and column j; a dot product over k, then the epilogue. */
static void matmul_gpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  MatmulCtx *c = user;
  Cg *cg = f->cg;
  LLVMValueRef acc = scalar_slot(f, "acc");
  slot_set(f, acc, f32c(cg, 0.0));
  CgLoop lk;
  LLVMValueRef kk = loop_begin(f, &lk, i64c(cg, 0), sym_value(f, c->k), "k");
  LLVMValueRef a = load_f32(f, c->a, idx_add(f, off[1], idx_mul(f, kk, sym_value(f, c->a_k))));
  LLVMValueRef b = load_f32(f, c->b, idx_add(f, off[2], idx_mul(f, kk, sym_value(f, c->b_k))));
  LLVMValueRef args[3] = {a, b, slot_get(f, acc)};
  slot_set(f, acc, intrinsic(f, "llvm.fmuladd", cg->t_f32, args, 3));
  loop_end(f, &lk, i64c(cg, 1));
  if (c->batch_sum) {
    store_f32(f, slot_get(f, acc), f->out, off[0]);
    return;
  }
  Fused *fu = &c->epi.fu;
  fused_point(fu, off);
  fu->memo[node_index(f->kern, c->epi.anchor)] = slot_get(f, acc);
  LLVMValueRef v = fused_root_value(f, fu);
  store_f32(f, v, f->out, off[0]);
  side_add(f, &c->epi, v, off);
}

/* The pointer of operand node id (matmul operands are always in memory). */
static LLVMValueRef operand_ptr(CgFn *f, DlNodeId id) {
  int j = operand_index(f, id);
  if (j < 0 || !f->op_ptr[j]) {
    internal(f, "an operand of the matmul has no buffer");
    return LLVMGetUndef(f->cg->t_ptr);
  }
  return f->op_ptr[j];
}

static bool emit_matmul(CgFn *f) {
  const DlKernel *kern = f->kern;
  DlNodeId mm = DL_NONE;
  for (int i = 0; i < kern->nnodes; i++)
    if (dl_node(f->cg->g, kern->nodes[i])->op == DL_OP_MATMUL) mm = kern->nodes[i];
  if (mm == DL_NONE) return internal(f, "a matmul kernel without its matmul");
  const DlNode *nd = dl_node(f->cg->g, mm);
  const DlShape *sa = &dl_node(f->cg->g, nd->in[0])->shape;
  const DlShape *sb = &dl_node(f->cg->g, nd->in[1])->shape, *so = &nd->shape;
  bool ta = nd->attr.matmul.ta, tb = nd->attr.matmul.tb;
  if (sa->rank < 2 || sb->rank < 2 || so->rank < 2)
    return internal(f, "matmul operands and result must have rank 2 or more");
  /* The weight gradient of a batched product: sum over the batch of a^T b
   * is one product whose k runs over the batch too (fuse.c checks that a
   * and b are laid out so that this k is a single stride). */
  bool batch_sum = f->node->op == DL_OP_SUM;
  if (!batch_sum && !dl_shape_eq(so, &f->node->shape))
    return internal(f, "a matmul's epilogue must keep the matmul's shape");
  int ra = sa->rank, rb = sb->rank, ro = so->rank;
  int64_t m = so->d[ro - 2], p = so->d[ro - 1];
  int64_t am = ta ? sa->d[ra - 1] : sa->d[ra - 2], k = ta ? sa->d[ra - 2] : sa->d[ra - 1];
  int64_t bk = tb ? sb->d[rb - 1] : sb->d[rb - 2], bp = tb ? sb->d[rb - 2] : sb->d[rb - 1];
  if (am != m || bk != k || bp != p) return internal(f, "matmul shapes do not agree");
  MatmulCtx c = {.m = sym_dim(m),
                 .k = sym_dim(k),
                 .p = sym_dim(p),
                 .ta = ta,
                 .tb = tb,
                 .batch_sum = batch_sum};
  if (batch_sum) {
    if (!ta || tb || ra != ro || rb != ro) return internal(f, "a batch sum of the wrong product");
    for (int d = 0; d < ro - 2; d++)
      c.k = sym_mul(c.k, sym_dim(so->d[d]));
    ro = ra = rb = 2;
  }
  c.a = operand_ptr(f, nd->in[0]);
  c.b = operand_ptr(f, nd->in[1]);
  /* a is stored [M, K], or [K, M] when transposed; b [K, P] or [P, K]. */
  c.a_i = ta ? sym_const(1) : c.k;
  c.a_k = ta ? c.m : sym_const(1);
  c.b_k = tb ? sym_const(1) : c.p;
  c.b_j = tb ? c.k : sym_const(1);
  c.epi = map_ctx(mm);
  fused_scales(f, &c.epi.fu);

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
    /* Small products (at most 4096 multiply-adds over the whole batch at
     * the planned batch size): the loop nest, which LLVM unrolls and
     * vectorises (whole, when the size is static); the packing of the GEMM
     * would cost more than it saves, and a model whose products are all
     * small (XOR, the worked examples) then needs no GEMM function, which
     * is most of its JIT time.  Everything else: the GEMM.  Then the
     * epilogue, in place. */
    int64_t nmax = f->cg->prog->max_batch;
    int64_t macs = sym_at(c.m, nmax) * sym_at(c.k, nmax) * sym_at(c.p, nmax);
    for (int d = 0; d < nest.rank; d++)
      macs *= sym_at(nest.dim[d], nmax);
    bool tiny = macs <= 4096;
    /* [B.., M, K] @ [K, P] with b the same matrix for the whole batch and a
     * and out contiguous: one product of B M rows (a big GEMM, not B small
     * ones). */
    CgNest merged = nest;
    nest_simplify(&merged);
    if (!tiny && !ta && merged.rank == 1 && sym_eq(merged.stride[2][0], sym_const(0)) &&
        sym_eq(merged.stride[0][0], sym_mul(c.m, c.p)) &&
        sym_eq(merged.stride[1][0], sym_mul(c.m, c.k))) {
      c.m = sym_mul(c.m, merged.dim[0]);
      c.a_i = c.k;
      nest.rank = 0;
    }
    emit_loops(f, &nest, tiny ? matmul_cpu_body : matmul_gemm_body, &c);
    /* The epilogue and the side reduction: one pass over C, on this thread. */
    if (kern->nnodes > 1 && !batch_sum) {
      CgNest epi;
      if (!map_nest(f, &c.epi, &epi)) return false;
      emit_with_side(f, &epi, map_body, &c.epi, &c.epi);
    }
    return true;
  }
  /* One point per output element: rows advance a, columns advance b; the
   * epilogue's operands follow. */
  nest.rank = ro;
  nest.dim[ro - 2] = c.m;
  nest.dim[ro - 1] = c.p;
  nest.stride[0][ro - 2] = c.p;
  nest.stride[0][ro - 1] = sym_const(1);
  nest.stride[1][ro - 2] = c.a_i;
  nest.stride[1][ro - 1] = sym_const(0);
  nest.stride[2][ro - 2] = sym_const(0);
  nest.stride[2][ro - 1] = c.b_j;
  if (!fused_operands(f, &c.epi.fu, so, &nest, 3)) return false;
  emit_with_side(f, &nest, matmul_gpu_body, &c, &c.epi);
  return true;
}

/* ---- reductions ------------------------------------------------------------- */

typedef struct ReduceCtx {
  bool max;             /* MAX: start from -inf, keep the larger; else sum */
  LLVMValueRef count_f; /* MEAN: number of reduced elements, as float; else NULL */
  Fused fu;             /* the input's value at a point of the input's shape */
  /* NVPTX: the reduced axes of the input, and each nest operand's strides
   * along them */
  int nred;
  CgSym red_dim[DL_MAX_RANK];
  CgSym red_stride[CG_MAX_OPS][DL_MAX_RANK];
  int nops;
} ReduceCtx;

static void zero_body(CgFn *f, LLVMValueRef *off, void *user) {
  (void)user;
  store_f32(f, f32c(f->cg, 0.0), f->out, off[0]);
}

/* acc + x, or for MAX the larger (x only when greater: NaN never wins, as in
 * the interpreter). */
static LLVMValueRef reduce_step(CgFn *f, const ReduceCtx *r, LLVMValueRef acc, LLVMValueRef x) {
  return r->max ? select_(f, fcmp(f, LLVMRealOGT, x, acc), x, acc) : f_add(f, acc, x);
}

static LLVMValueRef reduce_start(CgFn *f, const ReduceCtx *r) {
  return f32c(f->cg, r->max ? -INFINITY : 0.0);
}

static void reduce_init_body(CgFn *f, LLVMValueRef *off, void *user) {
  store_f32(f, reduce_start(f, user), f->out, off[0]);
}

/* The reduction's input at a point: computed by the kernel or loaded. */
static LLVMValueRef reduce_input(CgFn *f, ReduceCtx *r, LLVMValueRef *off) {
  fused_point(&r->fu, off);
  return fused_value(f, &r->fu, f->node->in[0]);
}

/* CPU: out[point's output] op= input.  A sum may be reassociated: where the
 * reduced axis is the innermost one, LLVM then keeps partial sums in vector
 * lanes instead of waiting for each addition in turn (the interpreter adds
 * in order; the two agree to float rounding, and the code's own order is
 * fixed, so runs and thread counts agree bit for bit). */
static void accumulate_body(CgFn *f, LLVMValueRef *off, void *user) {
  ReduceCtx *r = user;
  LLVMValueRef x = reduce_input(f, r, off);
  LLVMValueRef v = reduce_step(f, r, load_f32(f, f->out, off[0]), x);
  if (!r->max) LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc);
  store_f32(f, v, f->out, off[0]);
}

static void divide_body(CgFn *f, LLVMValueRef *off, void *user) {
  ReduceCtx *r = user;
  store_f32(f, f_div(f, load_f32(f, f->out, off[0]), r->count_f), f->out, off[0]);
}

/* NVPTX, one output element: loop over the reduced elements, recovering each
 * one's offset (for every operand) by div/mod over the reduced axes. */
static void reduce_gpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  ReduceCtx *r = user;
  Cg *cg = f->cg;
  CgSym count = sym_const(1);
  for (int i = 0; i < r->nred; i++)
    count = sym_mul(count, r->red_dim[i]);
  LLVMValueRef acc = scalar_slot(f, "acc");
  slot_set(f, acc, reduce_start(f, r));
  CgLoop l;
  LLVMValueRef e = loop_begin(f, &l, i64c(cg, 0), sym_value(f, count), "e");
  LLVMValueRef at[CG_MAX_OPS];
  for (int j = 0; j < r->nops; j++)
    at[j] = off[j];
  LLVMValueRef rest = e;
  for (int i = r->nred - 1; i >= 0; i--) {
    LLVMValueRef ix = rest;
    if (i > 0) {
      LLVMValueRef extent = sym_value(f, r->red_dim[i]);
      ix = LLVMBuildURem(cg->b, rest, extent, "");
      rest = LLVMBuildUDiv(cg->b, rest, extent, "");
    }
    for (int j = 1; j < r->nops; j++)
      at[j] = idx_add(f, at[j], idx_mul(f, ix, sym_value(f, r->red_stride[j][i])));
  }
  slot_set(f, acc, reduce_step(f, r, slot_get(f, acc), reduce_input(f, r, at)));
  loop_end(f, &l, i64c(cg, 1));
  LLVMValueRef v = slot_get(f, acc);
  if (r->count_f) v = f_div(f, v, r->count_f);
  store_f32(f, v, f->out, off[0]);
}

static bool emit_reduce(CgFn *f) {
  const DlNode *nd = f->node;
  const DlShape *si = &dl_node(f->cg->g, nd->in[0])->shape;
  int r = si->rank;
  uint32_t all = r >= 32 ? UINT32_MAX : (uint32_t)((1u << r) - 1u);
  uint32_t axes = nd->attr.reduce.axes & all;
  if (nd->attr.reduce.axes == 0) axes = all; /* the constructor's convention: 0 means every axis */
  /* The output walks the kept axes row-major; reduced axes do not move it. */
  CgSym acc = sym_const(1), count = sym_const(1);
  CgNest nest = {.rank = r};
  for (int i = r - 1; i >= 0; i--) {
    nest.dim[i] = sym_dim(si->d[i]);
    if (axes & (1u << i)) {
      nest.stride[0][i] = sym_const(0);
      count = sym_mul(count, sym_dim(si->d[i]));
    } else {
      nest.stride[0][i] = acc;
      acc = sym_mul(acc, sym_dim(si->d[i]));
    }
  }
  if (!sym_eq(acc, shape_numel(&nd->shape)))
    return internal(f, "reduction result has the wrong number of elements");
  ReduceCtx rc = {.max = nd->op == DL_OP_MAX, .count_f = NULL};
  if (nd->op == DL_OP_MEAN)
    rc.count_f = LLVMBuildSIToFP(f->cg->b, sym_value(f, count), f->cg->t_f32, "");
  fused_scales(f, &rc.fu);
  if (!fused_operands(f, &rc.fu, si, &nest, 1)) return false;

  if (!on_gpu(f)) {
    CgNest flat = {.rank = 1, .nops = 1, .dim = {acc}, .stride = {{sym_const(1)}}};
    emit_loops(f, &flat, reduce_init_body, &rc);
    emit_loops(f, &nest, accumulate_body, &rc);
    if (rc.count_f) emit_loops(f, &flat, divide_body, &rc);
    return true;
  }
  /* The grid walks the kept axes; the reduced ones are each thread's loop. */
  CgNest kept = {.rank = 0, .nops = nest.nops};
  rc.nops = nest.nops;
  for (int i = 0; i < r; i++) {
    if (axes & (1u << i)) {
      rc.red_dim[rc.nred] = nest.dim[i];
      for (int j = 0; j < nest.nops; j++)
        rc.red_stride[j][rc.nred] = nest.stride[j][i];
      rc.nred++;
    } else {
      kept.dim[kept.rank] = nest.dim[i];
      for (int j = 0; j < nest.nops; j++)
        kept.stride[j][kept.rank] = nest.stride[j][i];
      kept.rank++;
    }
  }
  emit_grid(f, &kept, reduce_gpu_body, &rc);
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
  /* maxnum, which ignores a NaN operand as the interpreter's "greater
   * only" does, and which LLVM vectorises as a reduction. */
  slot_set(f, mx, f32_intr2(f, "llvm.maxnum", slot_get(f, mx), x));
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
  /* Reassociable, so that it vectorises (partial sums per lane). */
  LLVMValueRef v = f_add(f, slot_get(f, sum), e);
  LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc);
  slot_set(f, sum, v);
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

/* ---- shared helpers of the layout, indexing, convolution and pooling kernels */

static LLVMValueRef idx_sub(CgFn *f, LLVMValueRef a, LLVMValueRef b) {
  if (is_const_int(b, 0)) return a;
  return LLVMBuildNSWSub(f->cg->b, a, b, "");
}
static LLVMValueRef idx_max(CgFn *f, LLVMValueRef a, LLVMValueRef b) {
  return select_(f, icmp(f, LLVMIntSGT, a, b), a, b);
}
static LLVMValueRef idx_min(CgFn *f, LLVMValueRef a, LLVMValueRef b) {
  return select_(f, icmp(f, LLVMIntSLT, a, b), a, b);
}
/* a / b rounded toward zero (b > 0). */
static LLVMValueRef idx_div(CgFn *f, LLVMValueRef a, int64_t b) {
  return b == 1 ? a : LLVMBuildSDiv(f->cg->b, a, i64c(f->cg, b), "");
}

/* out[off] += v */
static void add_to(CgFn *f, LLVMValueRef v, LLVMValueRef off) {
  store_f32(f, f_add(f, load_f32(f, f->out, off), v), f->out, off);
}

/* acc = a * b + acc, in a float slot */
static void slot_fma(CgFn *f, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef args[3] = {a, b, slot_get(f, acc)};
  slot_set(f, acc, intrinsic(f, "llvm.fmuladd", f->cg->t_f32, args, 3));
}

/* CPU: out = 0 everywhere, before kernels that accumulate into it. */
static void zero_output(CgFn *f) {
  CgNest flat = {
      .rank = 1, .nops = 1, .dim = {shape_numel(&f->node->shape)}, .stride = {{sym_const(1)}}};
  emit_loops(f, &flat, zero_body, NULL);
}

/* sum of idx[i] * stride[i]: the offset of a multi-index of constants */
static LLVMValueRef offset_value(CgFn *f, const int64_t *idx, const CgSym *stride, int rank) {
  LLVMValueRef off = i64c(f->cg, 0);
  for (int i = 0; i < rank; i++)
    if (idx[i]) off = idx_add(f, off, idx_mul(f, i64c(f->cg, idx[i]), sym_value(f, stride[i])));
  return off;
}

/* Every element of `s`: off[0] is its row-major offset, off[1 + k] its index
 * along axis k (index operands advance by 1 along their own axis only, so
 * their loops are never merged; an axis of extent 1 keeps index 0). */
static void emit_points(CgFn *f, const DlShape *s, CgBody body, void *user) {
  CgNest nest = {.rank = s->rank, .nops = 1 + s->rank};
  for (int d = 0; d < s->rank; d++) {
    nest.dim[d] = sym_dim(s->d[d]);
    for (int k = 0; k < s->rank; k++)
      nest.stride[1 + k][d] = sym_const(k == d ? 1 : 0);
  }
  contiguous_strides(s, nest.stride[0]);
  emit_space(f, &nest, body, user);
}

/* The table row an index value selects, as the interpreter's table_row:
 * clamped to [0, rows - 1] (NaN gives 0), truncated toward zero. */
static LLVMValueRef table_row(CgFn *f, LLVMValueRef v, int64_t rows) {
  Cg *cg = f->cg;
  LLVMValueRef hi = f32c(cg, (double)(rows - 1));
  v = select_(f, fcmp(f, LLVMRealOGT, v, f32c(cg, 0.0)), v, f32c(cg, 0.0));
  v = select_(f, fcmp(f, LLVMRealOLT, v, hi), v, hi);
  return LLVMBuildFPToSI(cg->b, v, cg->t_i64, "");
}

/* ---- layout: permute, slice, pad, concat ------------------------------------ */

/* out[off[0] + out_base] = in[src][off[1] + in_base] */
typedef struct CopyCtx {
  int src;
  LLVMValueRef out_base, in_base;
} CopyCtx;

static void copy_body(CgFn *f, LLVMValueRef *off, void *user) {
  CopyCtx *c = user;
  LLVMValueRef v = load_f32(f, f->in[c->src], idx_add(f, off[1], c->in_base));
  store_f32(f, v, f->out, idx_add(f, off[0], c->out_base));
}

/* A strided copy: the iteration space is `dims` (rank r); the output and the
 * input advance by their strides. */
static void emit_copy(CgFn *f, const DlShape *dims, const CgSym *out_st, const CgSym *in_st,
                      CopyCtx *c) {
  CgNest nest = {.rank = dims->rank, .nops = 2};
  for (int d = 0; d < dims->rank; d++) {
    nest.dim[d] = sym_dim(dims->d[d]);
    nest.stride[0][d] = out_st[d];
    nest.stride[1][d] = in_st[d];
  }
  emit_space(f, &nest, copy_body, c);
}

typedef struct PadCtx {
  const DlShape *in;
  const int64_t *before;
  CgSym in_st[DL_MAX_RANK];
} PadCtx;

/* GPU, one output element: the input element it comes from, or zero.  The
 * index is clamped so that the load stays in bounds either way. */
static void pad_gpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  PadCtx *p = user;
  Cg *cg = f->cg;
  LLVMValueRef inside = LLVMConstInt(LLVMInt1TypeInContext(cg->ctx), 1, false);
  LLVMValueRef in_off = i64c(cg, 0);
  for (int k = 0; k < p->in->rank; k++) {
    LLVMValueRef i = idx_sub(f, off[1 + k], i64c(cg, p->before[k]));
    LLVMValueRef extent = sym_value(f, sym_dim(p->in->d[k]));
    if (p->before[k] || p->in->d[k] != f->node->shape.d[k]) {
      inside = LLVMBuildAnd(cg->b, inside, icmp(f, LLVMIntSGE, i, i64c(cg, 0)), "");
      inside = LLVMBuildAnd(cg->b, inside, icmp(f, LLVMIntSLT, i, extent), "");
      i = idx_min(f, idx_max(f, i, i64c(cg, 0)), idx_sub(f, extent, i64c(cg, 1)));
    }
    in_off = idx_add(f, in_off, idx_mul(f, i, sym_value(f, p->in_st[k])));
  }
  LLVMValueRef v = select_(f, inside, load_f32(f, f->in[0], in_off), f32c(cg, 0.0));
  store_f32(f, v, f->out, off[0]);
}

static bool emit_layout(CgFn *f) {
  const DlNode *nd = f->node;
  const DlShape *so = &nd->shape, *sa = f->in_shape[0];
  int r = so->rank;
  if (sa->rank != r) return internal(f, "input and output ranks differ");
  CgSym out_st[DL_MAX_RANK], a_st[DL_MAX_RANK], st[DL_MAX_RANK];
  contiguous_strides(so, out_st);
  contiguous_strides(sa, a_st);
  CopyCtx c = {.src = 0, .out_base = i64c(f->cg, 0), .in_base = i64c(f->cg, 0)};
  if (nd->op == DL_OP_PERMUTE) {
    for (int d = 0; d < r; d++)
      st[d] = a_st[nd->attr.permute.perm[d]];
    emit_copy(f, so, out_st, st, &c);
    return true;
  }
  if (nd->op == DL_OP_SLICE) {
    /* The window's start: here, or added to the input's pointer by the
     * caller (cg_slice_shift). */
    if (cg_slice_shift(f->cg->prog, f->k, f->cg->target) < 0)
      c.in_base = offset_value(f, nd->attr.slice.start, a_st, r);
    emit_copy(f, so, out_st, a_st, &c);
    return true;
  }
  if (nd->op == DL_OP_PAD) {
    if (on_gpu(f)) {
      PadCtx p = {.in = sa, .before = nd->attr.pad.before};
      memcpy(p.in_st, a_st, sizeof a_st);
      emit_points(f, so, pad_gpu_body, &p);
      return true;
    }
    /* CPU: zeros, then the input into the interior (both loops vectorise). */
    zero_output(f);
    c.out_base = offset_value(f, nd->attr.pad.before, out_st, r);
    emit_copy(f, sa, out_st, a_st, &c);
    return true;
  }
  if (nd->op == DL_OP_CONCAT) {
    /* Two copies into disjoint parts of the output (on the GPU, two
     * grid-stride loops with no dependence between them). */
    const DlShape *sb = f->in_shape[1];
    int axis = nd->attr.concat.axis;
    if (sb->rank != r || axis < 0 || axis >= r) return internal(f, "bad concat operands");
    emit_copy(f, sa, out_st, a_st, &c);
    CgSym b_st[DL_MAX_RANK];
    contiguous_strides(sb, b_st);
    int64_t at[DL_MAX_RANK] = {0};
    at[axis] = sa->d[axis];
    CopyCtx cb = {.src = 1, .out_base = offset_value(f, at, out_st, r), .in_base = c.in_base};
    emit_copy(f, sb, out_st, b_st, &cb);
    return true;
  }
  return internal(f, "not a layout op");
}

/* ---- indexing: gather, scatter_add, one_hot ---------------------------------- */

typedef struct IndexCtx {
  int64_t rows;    /* V, the table's first axis */
  CgSym width;     /* D, elements per table row */
  CgSym positions; /* P, elements of the index tensor */
} IndexCtx;

/* off: out [p, d], table [d], idx [p] */
static void gather_body(CgFn *f, LLVMValueRef *off, void *user) {
  IndexCtx *x = user;
  LLVMValueRef row = table_row(f, load_f32(f, f->in[1], off[2]), x->rows);
  LLVMValueRef src = idx_add(f, idx_mul(f, row, sym_value(f, x->width)), off[1]);
  store_f32(f, load_f32(f, f->in[0], src), f->out, off[0]);
}

/* CPU, one source element: off: src [p, d], idx [p], d */
static void scatter_cpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  IndexCtx *x = user;
  LLVMValueRef row = table_row(f, load_f32(f, f->in[1], off[1]), x->rows);
  add_to(f, load_f32(f, f->in[0], off[0]),
         idx_add(f, idx_mul(f, row, sym_value(f, x->width)), off[2]));
}

/* GPU, one table element: off: out [r, d], d, r.  The sum over every index
 * position in order, adding zero where the index selects another row (no
 * atomics, and the interpreter's order of additions). */
static void scatter_gpu_body(CgFn *f, LLVMValueRef *off, void *user) {
  IndexCtx *x = user;
  Cg *cg = f->cg;
  LLVMValueRef acc = scalar_slot(f, "acc");
  slot_set(f, acc, f32c(cg, 0.0));
  CgLoop l;
  LLVMValueRef p = loop_begin(f, &l, i64c(cg, 0), sym_value(f, x->positions), "p");
  LLVMValueRef row = table_row(f, load_f32(f, f->in[1], p), x->rows);
  LLVMValueRef v = load_f32(f, f->in[0], idx_add(f, idx_mul(f, p, sym_value(f, x->width)), off[1]));
  v = select_(f, icmp(f, LLVMIntEQ, row, off[2]), v, f32c(cg, 0.0));
  slot_set(f, acc, f_add(f, slot_get(f, acc), v));
  loop_end(f, &l, i64c(cg, 1));
  store_f32(f, slot_get(f, acc), f->out, off[0]);
}

/* off: out [p, c], labels [p], c */
static void one_hot_body(CgFn *f, LLVMValueRef *off, void *user) {
  (void)user;
  Cg *cg = f->cg;
  LLVMValueRef label = load_f32(f, f->in[0], off[1]);
  LLVMValueRef c = LLVMBuildSIToFP(cg->b, off[2], cg->t_f32, "");
  store_f32(f, select_(f, fcmp(f, LLVMRealOEQ, label, c), f32c(cg, 1.0), f32c(cg, 0.0)), f->out,
            off[0]);
}

static bool emit_index(CgFn *f) {
  const DlNode *nd = f->node;
  CgSym one = sym_const(1), zero = sym_const(0);
  if (nd->op == DL_OP_ONE_HOT) {
    CgSym classes = sym_dim(nd->shape.d[nd->shape.rank - 1]);
    CgNest nest = {.rank = 2,
                   .nops = 3,
                   .dim = {shape_numel(f->in_shape[0]), classes},
                   .stride = {{classes, one}, {one, zero}, {zero, one}}};
    emit_space(f, &nest, one_hot_body, NULL);
    return true;
  }
  const DlShape *table = nd->op == DL_OP_GATHER ? f->in_shape[0] : &nd->shape;
  if (table->rank < 1 || table->d[0] < 1) return internal(f, "the table has no rows");
  IndexCtx x = {
      .rows = table->d[0], .width = sym_const(1), .positions = shape_numel(f->in_shape[1])};
  for (int d = 1; d < table->rank; d++)
    x.width = sym_mul(x.width, sym_dim(table->d[d]));
  if (nd->op == DL_OP_GATHER) {
    CgNest nest = {.rank = 2,
                   .nops = 3,
                   .dim = {x.positions, x.width},
                   .stride = {{x.width, one}, {zero, one}, {one, zero}}};
    emit_space(f, &nest, gather_body, &x);
  } else if (!on_gpu(f)) {
    zero_output(f);
    CgNest nest = {.rank = 2,
                   .nops = 3,
                   .dim = {x.positions, x.width},
                   .stride = {{x.width, one}, {one, zero}, {zero, one}}};
    emit_loops(f, &nest, scatter_cpu_body, &x);
  } else {
    CgNest nest = {.rank = 2,
                   .nops = 3,
                   .dim = {sym_const(x.rows), x.width},
                   .stride = {{x.width, one}, {zero, one}, {one, zero}}};
    emit_grid(f, &nest, scatter_gpu_body, &x);
  }
  return true;
}

/* ---- conv2d and its gradients (NCHW) ------------------------------------------ */

typedef struct ConvCtx {
  DlOp op;
  CgSym batch;
  int64_t C, H, W, O, KH, KW, OH, OW;
  int sh, sw, ph, pw;
} ConvCtx;

static LLVMValueRef nchw(CgFn *f, LLVMValueRef a, int64_t B, LLVMValueRef b, int64_t C,
                         LLVMValueRef c, int64_t D, LLVMValueRef d) {
  Cg *cg = f->cg;
  LLVMValueRef off = idx_add(f, idx_mul(f, a, i64c(cg, B)), b);
  off = idx_add(f, idx_mul(f, off, i64c(cg, C)), c);
  return idx_add(f, idx_mul(f, off, i64c(cg, D)), d);
}
static LLVMValueRef x_off(CgFn *f, const ConvCtx *c, LLVMValueRef s, LLVMValueRef ch,
                          LLVMValueRef h, LLVMValueRef w) {
  return nchw(f, s, c->C, ch, c->H, h, c->W, w);
}
static LLVMValueRef w_off(CgFn *f, const ConvCtx *c, LLVMValueRef o, LLVMValueRef ch,
                          LLVMValueRef ki, LLVMValueRef kj) {
  return nchw(f, o, c->C, ch, c->KH, ki, c->KW, kj);
}
static LLVMValueRef y_off(CgFn *f, const ConvCtx *c, LLVMValueRef s, LLVMValueRef o, LLVMValueRef i,
                          LLVMValueRef j) {
  return nchw(f, s, c->O, o, c->OH, i, c->OW, j);
}

/* The output positions i whose window puts tap k on the input (0 <= i*s + k
 * - p < H): [lo, hi), possibly empty. */
static void out_range(CgFn *f, LLVMValueRef k, int p, int s, int64_t H, int64_t OH,
                      LLVMValueRef *lo, LLVMValueRef *hi) {
  Cg *cg = f->cg;
  LLVMValueRef under = idx_max(f, idx_sub(f, i64c(cg, p), k), i64c(cg, 0));
  *lo = idx_div(f, idx_add(f, under, i64c(cg, s - 1)), s);
  *hi = idx_min(f, i64c(cg, OH), idx_div(f, idx_sub(f, i64c(cg, H - 1 + p + s), k), s));
}

/* The input coordinate of output position i and tap k: i*s + k - p. */
static LLVMValueRef in_coord(CgFn *f, LLVMValueRef i, int s, LLVMValueRef k, int p) {
  return idx_sub(f, idx_add(f, idx_mul(f, i, i64c(f->cg, s)), k), i64c(f->cg, p));
}

/* CPU: one loop nest for all three ops, over (sample, filter, channel, tap)
 * and then the output positions that tap reaches, so the innermost loop runs
 * along a row with no bounds tests (contiguous when the stride is 1):
 *   conv2d:       y[s,o,i,j]    += x[s,c,h,w] * w[o,c,ki,kj]
 *   grad_input:   dx[s,c,h,w]   += dy[s,o,i,j] * w[o,c,ki,kj]
 *   grad_filter:  dw[o,c,ki,kj] += sum over i, j of x[s,c,h,w] * dy[s,o,i,j] */
static void conv_cpu(CgFn *f, const ConvCtx *c) {
  Cg *cg = f->cg;
  zero_output(f);
  CgLoop ls, lo, lc, lki, lkj, li, lj;
  LLVMValueRef s = loop_begin(f, &ls, i64c(cg, 0), sym_value(f, c->batch), "s");
  LLVMValueRef o = loop_begin(f, &lo, i64c(cg, 0), i64c(cg, c->O), "o");
  LLVMValueRef ch = loop_begin(f, &lc, i64c(cg, 0), i64c(cg, c->C), "c");
  LLVMValueRef ki = loop_begin(f, &lki, i64c(cg, 0), i64c(cg, c->KH), "ki");
  LLVMValueRef ilo, ihi, jlo, jhi;
  out_range(f, ki, c->ph, c->sh, c->H, c->OH, &ilo, &ihi);
  LLVMValueRef kj = loop_begin(f, &lkj, i64c(cg, 0), i64c(cg, c->KW), "kj");
  out_range(f, kj, c->pw, c->sw, c->W, c->OW, &jlo, &jhi);
  LLVMValueRef wo = w_off(f, c, o, ch, ki, kj);
  LLVMValueRef wv = c->op == DL_OP_CONV2D_GRAD_FILTER ? NULL : load_f32(f, f->in[1], wo);
  LLVMValueRef acc = NULL;
  if (!wv) {
    acc = scalar_slot(f, "acc");
    slot_set(f, acc, f32c(cg, 0.0));
  }
  LLVMValueRef i = loop_begin(f, &li, ilo, ihi, "i");
  LLVMValueRef h = in_coord(f, i, c->sh, ki, c->ph);
  LLVMValueRef j = loop_begin(f, &lj, jlo, jhi, "j");
  LLVMValueRef w = in_coord(f, j, c->sw, kj, c->pw);
  LLVMValueRef xo = x_off(f, c, s, ch, h, w), yo = y_off(f, c, s, o, i, j);
  if (c->op == DL_OP_CONV2D) {
    LLVMValueRef args[3] = {load_f32(f, f->in[0], xo), wv, load_f32(f, f->out, yo)};
    store_f32(f, intrinsic(f, "llvm.fmuladd", cg->t_f32, args, 3), f->out, yo);
  } else if (c->op == DL_OP_CONV2D_GRAD_INPUT) {
    LLVMValueRef args[3] = {load_f32(f, f->in[0], yo), wv, load_f32(f, f->out, xo)};
    store_f32(f, intrinsic(f, "llvm.fmuladd", cg->t_f32, args, 3), f->out, xo);
  } else {
    /* A sum over a row: allowed to be reassociated so that it vectorises
     * (partial sums per lane; the interpreter sums in order, and the two
     * agree to float rounding). */
    LLVMValueRef args[3] = {load_f32(f, f->in[0], xo), load_f32(f, f->in[1], yo), slot_get(f, acc)};
    LLVMValueRef v = intrinsic(f, "llvm.fmuladd", cg->t_f32, args, 3);
    LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc | LLVMFastMathAllowContract);
    slot_set(f, acc, v);
  }
  loop_end(f, &lj, i64c(cg, 1));
  loop_end(f, &li, i64c(cg, 1));
  if (acc) add_to(f, slot_get(f, acc), wo);
  loop_end(f, &lkj, i64c(cg, 1));
  loop_end(f, &lki, i64c(cg, 1));
  loop_end(f, &lc, i64c(cg, 1));
  loop_end(f, &lo, i64c(cg, 1));
  loop_end(f, &ls, i64c(cg, 1));
}

/* GPU conv2d, one output element y[s,o,i,j] (off[1..4]): the taps that land
 * on the input, [max(0, p - i*s), min(K, H + p - i*s)) per axis. */
static void conv_gpu_forward(CgFn *f, LLVMValueRef *off, void *user) {
  ConvCtx *c = user;
  Cg *cg = f->cg;
  LLVMValueRef s = off[1], o = off[2], i = off[3], j = off[4];
  LLVMValueRef acc = scalar_slot(f, "acc");
  slot_set(f, acc, f32c(cg, 0.0));
  LLVMValueRef hb = in_coord(f, i, c->sh, i64c(cg, 0), c->ph);
  LLVMValueRef wb = in_coord(f, j, c->sw, i64c(cg, 0), c->pw);
  LLVMValueRef kilo = idx_max(f, i64c(cg, 0), idx_sub(f, i64c(cg, 0), hb));
  LLVMValueRef kihi = idx_min(f, i64c(cg, c->KH), idx_sub(f, i64c(cg, c->H), hb));
  LLVMValueRef kjlo = idx_max(f, i64c(cg, 0), idx_sub(f, i64c(cg, 0), wb));
  LLVMValueRef kjhi = idx_min(f, i64c(cg, c->KW), idx_sub(f, i64c(cg, c->W), wb));
  CgLoop lc, lki, lkj;
  LLVMValueRef ch = loop_begin(f, &lc, i64c(cg, 0), i64c(cg, c->C), "c");
  LLVMValueRef ki = loop_begin(f, &lki, kilo, kihi, "ki");
  LLVMValueRef kj = loop_begin(f, &lkj, kjlo, kjhi, "kj");
  LLVMValueRef xo = x_off(f, c, s, ch, idx_add(f, hb, ki), idx_add(f, wb, kj));
  slot_fma(f, acc, load_f32(f, f->in[0], xo), load_f32(f, f->in[1], w_off(f, c, o, ch, ki, kj)));
  loop_end(f, &lkj, i64c(cg, 1));
  loop_end(f, &lki, i64c(cg, 1));
  loop_end(f, &lc, i64c(cg, 1));
  store_f32(f, slot_get(f, acc), f->out, off[0]);
}

/* GPU grad_input, one element dx[s,c,h,w]: the taps ki with t = h + p - ki in
 * [0, (OH-1)*s] reach an output row i = t / s when s divides t; a tap that
 * does not contributes zero (its loads stay in bounds). */
static void conv_gpu_grad_input(CgFn *f, LLVMValueRef *off, void *user) {
  ConvCtx *c = user;
  Cg *cg = f->cg;
  LLVMValueRef s = off[1], ch = off[2], h = off[3], w = off[4];
  LLVMValueRef acc = scalar_slot(f, "acc");
  slot_set(f, acc, f32c(cg, 0.0));
  LLVMValueRef hp = idx_add(f, h, i64c(cg, c->ph)), wp = idx_add(f, w, i64c(cg, c->pw));
  LLVMValueRef kilo = idx_max(f, i64c(cg, 0), idx_sub(f, hp, i64c(cg, (c->OH - 1) * c->sh)));
  LLVMValueRef kihi = idx_min(f, i64c(cg, c->KH), idx_add(f, hp, i64c(cg, 1)));
  LLVMValueRef kjlo = idx_max(f, i64c(cg, 0), idx_sub(f, wp, i64c(cg, (c->OW - 1) * c->sw)));
  LLVMValueRef kjhi = idx_min(f, i64c(cg, c->KW), idx_add(f, wp, i64c(cg, 1)));
  CgLoop lo, lki, lkj;
  LLVMValueRef o = loop_begin(f, &lo, i64c(cg, 0), i64c(cg, c->O), "o");
  LLVMValueRef ki = loop_begin(f, &lki, kilo, kihi, "ki");
  LLVMValueRef t = idx_sub(f, hp, ki);
  LLVMValueRef i = idx_div(f, t, c->sh);
  LLVMValueRef on_row = icmp(f, LLVMIntEQ, idx_mul(f, i, i64c(cg, c->sh)), t);
  LLVMValueRef kj = loop_begin(f, &lkj, kjlo, kjhi, "kj");
  LLVMValueRef u = idx_sub(f, wp, kj);
  LLVMValueRef j = idx_div(f, u, c->sw);
  LLVMValueRef hit =
      LLVMBuildAnd(cg->b, on_row, icmp(f, LLVMIntEQ, idx_mul(f, j, i64c(cg, c->sw)), u), "");
  LLVMValueRef prod = f_mul(f, load_f32(f, f->in[0], y_off(f, c, s, o, i, j)),
                            load_f32(f, f->in[1], w_off(f, c, o, ch, ki, kj)));
  slot_set(f, acc, f_add(f, slot_get(f, acc), select_(f, hit, prod, f32c(cg, 0.0))));
  loop_end(f, &lkj, i64c(cg, 1));
  loop_end(f, &lki, i64c(cg, 1));
  loop_end(f, &lo, i64c(cg, 1));
  store_f32(f, slot_get(f, acc), f->out, off[0]);
}

/* GPU grad_filter, one element dw[o,c,ki,kj]: over the samples and the output
 * positions where that tap lands on the input. */
static void conv_gpu_grad_filter(CgFn *f, LLVMValueRef *off, void *user) {
  ConvCtx *c = user;
  Cg *cg = f->cg;
  LLVMValueRef o = off[1], ch = off[2], ki = off[3], kj = off[4];
  LLVMValueRef acc = scalar_slot(f, "acc");
  slot_set(f, acc, f32c(cg, 0.0));
  LLVMValueRef ilo, ihi, jlo, jhi;
  out_range(f, ki, c->ph, c->sh, c->H, c->OH, &ilo, &ihi);
  out_range(f, kj, c->pw, c->sw, c->W, c->OW, &jlo, &jhi);
  CgLoop ls, li, lj;
  LLVMValueRef s = loop_begin(f, &ls, i64c(cg, 0), sym_value(f, c->batch), "s");
  LLVMValueRef i = loop_begin(f, &li, ilo, ihi, "i");
  LLVMValueRef h = in_coord(f, i, c->sh, ki, c->ph);
  LLVMValueRef j = loop_begin(f, &lj, jlo, jhi, "j");
  LLVMValueRef w = in_coord(f, j, c->sw, kj, c->pw);
  slot_fma(f, acc, load_f32(f, f->in[0], x_off(f, c, s, ch, h, w)),
           load_f32(f, f->in[1], y_off(f, c, s, o, i, j)));
  loop_end(f, &lj, i64c(cg, 1));
  loop_end(f, &li, i64c(cg, 1));
  loop_end(f, &ls, i64c(cg, 1));
  store_f32(f, slot_get(f, acc), f->out, off[0]);
}

/* ---- convolution through the GEMM (CPU) ------------------------------------------
 *
 * Per sample, the taps of every output position become the columns of a
 * matrix (im2col): cols[(c, ki, kj), (i, j)] = x[c, i sh + ki - ph, j sw +
 * kj - pw], zero where the tap falls in the padding.  Then
 *   conv2d       y_s  [O, OH OW]   = w [O, C KH KW] @ cols
 *   grad_input   dcols [C KH KW, OH OW] = w^T @ dy_s, and col2im adds each
 *                column back onto the input positions its taps read
 *   grad_filter  dw [O, C KH KW]  += dy_s @ cols^T, sample after sample
 * so nearly all the work is the packed GEMM.  cols lives on the stack of the
 * thread working on the sample (CG_CONV_COLS_MAX floats at most; larger
 * convolutions keep the direct loops).  The forward convolution and the
 * input gradient give each sample to one thread; the filter gradient gives
 * chunks of samples whose boundaries depend on the batch size alone, and
 * adds the chunks' sums in order (conv_cpu_gemm), so every thread count
 * gives the same bits. */
#define CG_CONV_COLS_MAX (1 << 18)
/* Convolutions of fewer multiply-adds run on the calling thread. */
#define CG_CONV_PARALLEL_MACS (1 << 20)

static int64_t conv_rows(const ConvCtx *c) {
  return c->C * c->KH * c->KW;
}

static LLVMValueRef conv_cols_buffer(CgFn *f, const ConvCtx *c) {
  Cg *cg = f->cg;
  LLVMValueRef buf = cg_entry_alloca(
      cg, LLVMArrayType2(cg->t_f32, (uint64_t)(conv_rows(c) * c->OH * c->OW)), "cols");
  LLVMSetAlignment(buf, 64);
  return buf;
}

static void fill_range(CgFn *f, LLVMValueRef base, LLVMValueRef lo, LLVMValueRef hi,
                       LLVMValueRef v) {
  CgLoop l;
  LLVMValueRef j = loop_begin(f, &l, lo, hi, "z");
  store_f32(f, v, base, j);
  loop_end(f, &l, i64c(f->cg, 1));
}

/* One tap (c, ki, kj) of the filter: row r of cols, and the output
 * positions [ilo, ihi) x [jlo, jhi) where it lands on the input. */
typedef struct ConvTap {
  LLVMValueRef ch, ki, kj, r;
  LLVMValueRef ilo, ihi, jlo, jhi;
} ConvTap;

typedef void (*ConvTapBody)(CgFn *f, const ConvCtx *c, const ConvTap *t, LLVMValueRef cols,
                            LLVMValueRef x);

/* The loops over every tap of the filter around body. */
static void for_each_tap(CgFn *f, const ConvCtx *c, ConvTapBody body, LLVMValueRef cols,
                         LLVMValueRef x) {
  Cg *cg = f->cg;
  CgLoop lc, lki, lkj;
  ConvTap t;
  t.ch = loop_begin(f, &lc, i64c(cg, 0), i64c(cg, c->C), "c");
  t.ki = loop_begin(f, &lki, i64c(cg, 0), i64c(cg, c->KH), "ki");
  out_range(f, t.ki, c->ph, c->sh, c->H, c->OH, &t.ilo, &t.ihi);
  t.kj = loop_begin(f, &lkj, i64c(cg, 0), i64c(cg, c->KW), "kj");
  out_range(f, t.kj, c->pw, c->sw, c->W, c->OW, &t.jlo, &t.jhi);
  t.r = idx_add(f, idx_mul(f, idx_add(f, idx_mul(f, t.ch, i64c(cg, c->KH)), t.ki), i64c(cg, c->KW)),
                t.kj);
  body(f, c, &t, cols, x);
  loop_end(f, &lkj, i64c(cg, 1));
  loop_end(f, &lki, i64c(cg, 1));
  loop_end(f, &lc, i64c(cg, 1));
}

/* Row i of tap t in cols, and the input row its positions read. */
static void tap_rows(CgFn *f, const ConvCtx *c, const ConvTap *t, LLVMValueRef i, LLVMValueRef cols,
                     LLVMValueRef x, LLVMValueRef *row, LLVMValueRef *xrow) {
  Cg *cg = f->cg;
  *row = elem_ptr(f, cols,
                  idx_mul(f, idx_add(f, idx_mul(f, t->r, i64c(cg, c->OH)), i), i64c(cg, c->OW)));
  LLVMValueRef h = in_coord(f, i, c->sh, t->ki, c->ph);
  *xrow =
      elem_ptr(f, x, idx_mul(f, idx_add(f, idx_mul(f, t->ch, i64c(cg, c->H)), h), i64c(cg, c->W)));
}

/* cols[r, i, :] = the input under tap r at output row i, zero in the padding. */
static void im2col_tap(CgFn *f, const ConvCtx *c, const ConvTap *t, LLVMValueRef cols,
                       LLVMValueRef x) {
  Cg *cg = f->cg;
  LLVMValueRef zero = f32c(cg, 0.0), ow = i64c(cg, c->OW);
  CgLoop li, lj;
  LLVMValueRef i = loop_begin(f, &li, i64c(cg, 0), i64c(cg, c->OH), "i");
  LLVMValueRef row, xrow;
  tap_rows(f, c, t, i, cols, x, &row, &xrow);
  LLVMValueRef inside =
      LLVMBuildAnd(cg->b, icmp(f, LLVMIntSGE, i, t->ilo), icmp(f, LLVMIntSLT, i, t->ihi), "");
  LLVMValueRef lo = select_(f, inside, t->jlo, ow), hi = select_(f, inside, t->jhi, ow);
  fill_range(f, row, i64c(cg, 0), lo, zero);
  LLVMValueRef j = loop_begin(f, &lj, lo, hi, "j");
  store_f32(f, load_f32(f, xrow, in_coord(f, j, c->sw, t->kj, c->pw)), row, j);
  loop_end(f, &lj, i64c(cg, 1));
  fill_range(f, row, hi, ow, zero);
  loop_end(f, &li, i64c(cg, 1));
}

/* dx[input under tap r] += cols[r, i, j] where the tap lands. */
static void col2im_tap(CgFn *f, const ConvCtx *c, const ConvTap *t, LLVMValueRef cols,
                       LLVMValueRef dx) {
  CgLoop li, lj;
  LLVMValueRef i = loop_begin(f, &li, t->ilo, t->ihi, "i");
  LLVMValueRef row, xrow;
  tap_rows(f, c, t, i, cols, dx, &row, &xrow);
  LLVMValueRef j = loop_begin(f, &lj, t->jlo, t->jhi, "j");
  LLVMValueRef at = in_coord(f, j, c->sw, t->kj, c->pw);
  store_f32(f, f_add(f, load_f32(f, xrow, at), load_f32(f, row, j)), xrow, at);
  loop_end(f, &lj, i64c(f->cg, 1));
  loop_end(f, &li, i64c(f->cg, 1));
}

/* cols = im2col(x), x the sample's [C, H, W]. */
static void im2col(CgFn *f, const ConvCtx *c, LLVMValueRef x, LLVMValueRef cols) {
  for_each_tap(f, c, im2col_tap, cols, x);
}

/* dx += col2im(cols), dx the sample's [C, H, W]. */
static void col2im(CgFn *f, const ConvCtx *c, LLVMValueRef cols, LLVMValueRef dx) {
  for_each_tap(f, c, col2im_tap, cols, dx);
}

static void conv_gemm(CgFn *f, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b, int64_t m, int64_t k,
                      int64_t p, int64_t ldc, int64_t a_i, int64_t a_k, int64_t b_k, int64_t b_j,
                      bool acc) {
  Cg *cg = f->cg;
  LLVMValueRef ops[CG_GEMM_NARGS] = {c,
                                     a,
                                     b,
                                     i64c(cg, m),
                                     i64c(cg, k),
                                     i64c(cg, p),
                                     i64c(cg, ldc),
                                     i64c(cg, a_i),
                                     i64c(cg, a_k),
                                     i64c(cg, b_k),
                                     i64c(cg, b_j),
                                     LLVMConstInt(LLVMInt1TypeInContext(cg->ctx), acc, false)};
  /* A sample's product is never split between threads; LeNet-5's filter
   * gradients (6 filters, both operands contiguous along k) are dot
   * products (cg_gemm.c). */
  cg_gemm_strided(cg, ops, a_k == 1 && b_k == 1 && m <= 12 && p <= 64);
}

/* Samples [s0, s1) of conv2d or its input gradient. */
static void conv_gemm_samples(CgFn *f, const ConvCtx *c, LLVMValueRef s0, LLVMValueRef s1) {
  Cg *cg = f->cg;
  int64_t rows = conv_rows(c), ohw = c->OH * c->OW, chw = c->C * c->H * c->W;
  LLVMValueRef cols = conv_cols_buffer(f, c);
  CgLoop ls;
  LLVMValueRef s = loop_begin(f, &ls, s0, s1, "s");
  LLVMValueRef xs =
      elem_ptr(f, c->op == DL_OP_CONV2D ? f->in[0] : f->out, idx_mul(f, s, i64c(cg, chw)));
  LLVMValueRef ys =
      elem_ptr(f, c->op == DL_OP_CONV2D ? f->out : f->in[0], idx_mul(f, s, i64c(cg, c->O * ohw)));
  if (c->op == DL_OP_CONV2D) {
    im2col(f, c, xs, cols);
    conv_gemm(f, ys, f->in[1], cols, c->O, rows, ohw, ohw, rows, 1, ohw, 1, false);
  } else {
    fill_range(f, xs, i64c(cg, 0), i64c(cg, chw), f32c(cg, 0.0));
    conv_gemm(f, cols, f->in[1], ys, rows, c->O, ohw, ohw, 1, rows, ohw, 1, false);
    col2im(f, c, cols, xs);
  }
  loop_end(f, &ls, i64c(cg, 1));
}

/* Measured on LeNet-5's shapes (bench/RESULTS.md): the GEMM path is as fast
 * as the direct loops forward and 2 to 3 times faster for the filter
 * gradient; for the input gradient its product has k = O, and with O = 6
 * (LeNet's first layer) packing and col2im cost more than the direct loops
 * (0.8 against 0.5 ms a step), while with O = 16 it is 2.5 times faster. */
static bool conv_through_gemm(const ConvCtx *c) {
  if (c->op == DL_OP_CONV2D_GRAD_INPUT && c->O < 8) return false;
  return conv_rows(c) * c->OH * c->OW <= CG_CONV_COLS_MAX;
}

/* The filter gradient's samples [s0, s1) added to dst in order. */
static void conv_filter_samples(CgFn *f, const ConvCtx *c, LLVMValueRef dst, LLVMValueRef s0,
                                LLVMValueRef s1, LLVMValueRef cols) {
  Cg *cg = f->cg;
  int64_t rows = conv_rows(c), ohw = c->OH * c->OW;
  CgLoop ls;
  LLVMValueRef s = loop_begin(f, &ls, s0, s1, "s");
  im2col(f, c, elem_ptr(f, f->in[0], idx_mul(f, s, i64c(cg, c->C * c->H * c->W))), cols);
  conv_gemm(f, dst, elem_ptr(f, f->in[1], idx_mul(f, s, i64c(cg, c->O * ohw))), cols, c->O, ohw,
            rows, rows, ohw, 1, 1, ohw, true);
  loop_end(f, &ls, i64c(cg, 1));
}

/* Chunks [k0, k1) of the filter gradient's `chunks` (see conv_cpu_gemm):
 * chunk 0's sum goes into dw itself, chunk k's into partial[k - 1]. */
static void conv_filter_chunks(CgFn *f, const ConvCtx *c, LLVMValueRef chunks, LLVMValueRef k0,
                               LLVMValueRef k1, LLVMValueRef partial) {
  Cg *cg = f->cg;
  int64_t size = c->O * conv_rows(c);
  LLVMValueRef cols = conv_cols_buffer(f, c), batch = sym_value(f, c->batch);
  CgLoop lk;
  LLVMValueRef k = loop_begin(f, &lk, k0, k1, "chunk");
  LLVMValueRef dst =
      select_(f, icmp(f, LLVMIntEQ, k, i64c(cg, 0)), f->out,
              elem_ptr(f, partial, idx_mul(f, idx_sub(f, k, i64c(cg, 1)), i64c(cg, size))));
  fill_range(f, dst, i64c(cg, 0), i64c(cg, size), f32c(cg, 0.0));
  LLVMValueRef s0 = LLVMBuildSDiv(cg->b, idx_mul(f, batch, k), chunks, "");
  LLVMValueRef s1 = LLVMBuildSDiv(cg->b, idx_mul(f, batch, idx_add(f, k, i64c(cg, 1))), chunks, "");
  conv_filter_samples(f, c, dst, s0, s1, cols);
  loop_end(f, &lk, i64c(cg, 1));
}

/* The filter gradient sums over the samples, so threads cannot each take
 * samples and add them to dw.  The samples are cut into chunks instead:
 * min(batch, CG_CONV_CHUNKS) of them, boundaries set by the batch size
 * alone.  Each chunk's sum (its samples in order) is made by one thread,
 * whichever, into its own buffer; then the calling thread adds the chunks'
 * sums in chunk order.  The order of every addition thus depends on the
 * batch size and not on the number of threads, and every thread count
 * gives the same bits.  The chunks' buffers are on the calling thread's
 * stack: at most CG_CONV_PARTIAL_MAX floats, fewer chunks for larger
 * filters (with one, the gradient stays on one thread).  Chunks, not one
 * range per thread: a sleeping worker wakes 45 us or more after the call
 * (see cg_gemm.c), and meanwhile the caller takes the first chunks.  Splitting
 * the rows of dw (the filters) between threads instead would keep a single
 * sum per element, but LeNet-5's 6 and 16 filters are one or two rows of
 * micro-tiles, and every thread would still im2col and pack the whole of
 * each sample's cols, most of the work at these shapes.  (LeNet-5's two
 * filter gradients were 45 % of its step on one thread, `perf record -g`
 * on bench/step_main.c.) */
#define CG_CONV_CHUNKS 8
#define CG_CONV_PARTIAL_MAX (1 << 16)

static void conv_cpu_gemm(CgFn *f, const ConvCtx *c) {
  Cg *cg = f->cg;
  LLVMValueRef batch = sym_value(f, c->batch);
  /* Samples are independent, so sharing them costs only the wake-up (no
   * operand is packed twice, unlike a split GEMM), and the small products of
   * a convolution run at a fraction of the GEMM's peak: a lower limit than
   * a plain matmul's. */
  int64_t macs = sym_at(c->batch, cg->prog->max_batch) * c->O * conv_rows(c) * c->OH * c->OW;
  bool shared = f->pool && macs >= CG_CONV_PARALLEL_MACS;
  if (c->op == DL_OP_CONV2D_GRAD_FILTER) {
    int64_t size = c->O * conv_rows(c), most = CG_CONV_CHUNKS;
    while (most > 1 && (most - 1) * size > CG_CONV_PARTIAL_MAX)
      most--;
    if (!shared || most < 2) {
      fill_range(f, f->out, i64c(cg, 0), i64c(cg, size), f32c(cg, 0.0));
      conv_filter_samples(f, c, f->out, i64c(cg, 0), batch, conv_cols_buffer(f, c));
      return;
    }
    LLVMValueRef partial =
        cg_entry_alloca(cg, LLVMArrayType2(cg->t_f32, (uint64_t)((most - 1) * size)), "partial");
    LLVMSetAlignment(partial, 64);
    LLVMValueRef chunks = idx_min(f, batch, i64c(cg, most));
    CgFn part;
    LLVMValueRef range[3];
    begin_part(f, &part, range, true);
    conv_filter_chunks(&part, c, idx_min(&part, sym_value(&part, c->batch), i64c(cg, most)),
                       range[0], range[1], range[2]);
    LLVMBuildRetVoid(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, f->entry_bb);
    /* (Chunk 0 clears dw, but there is no chunk when the batch is empty.) */
    fill_range(f, f->out, i64c(cg, 0), i64c(cg, size), f32c(cg, 0.0));
    part_dispatch(f, part.fn, chunks, NULL, CG_MAP_RANGES_PER_THREAD, partial);
    /* dw += partial[k - 1] for k = 1, 2, ... in order. */
    CgLoop lk, le;
    LLVMValueRef k = loop_begin(f, &lk, i64c(cg, 1), chunks, "chunk");
    LLVMValueRef from =
        elem_ptr(f, partial, idx_mul(f, idx_sub(f, k, i64c(cg, 1)), i64c(cg, size)));
    LLVMValueRef e = loop_begin(f, &le, i64c(cg, 0), i64c(cg, size), "e");
    add_to(f, load_f32(f, from, e), e);
    loop_end(f, &le, i64c(cg, 1));
    loop_end(f, &lk, i64c(cg, 1));
    return;
  }
  if (!shared) {
    conv_gemm_samples(f, c, i64c(cg, 0), batch);
    return;
  }
  /* Samples shared between threads: the samples loop in a function of a
   * range ("_part"), called through dlrt_parallel_for.  A range costs
   * nothing to start (cols is on the stack), so several per thread: the
   * caller takes more of them while a worker wakes (LeNet-5 at batch 64 on
   * two threads, 4 ranges a thread against 1: 0.05 to 0.09 ms a step less
   * in each of five alternating runs of `dlcc bench bench/lenet5.nnl --batch
   * 64 --threads 2`, on a shared machine). */
  CgFn part;
  LLVMValueRef range[2];
  begin_part(f, &part, range, false);
  conv_gemm_samples(&part, c, range[0], range[1]);
  LLVMBuildRetVoid(cg->b);
  LLVMPositionBuilderAtEnd(cg->b, f->entry_bb);
  part_dispatch(f, part.fn, batch, NULL, CG_MAP_RANGES_PER_THREAD, NULL);
}

static bool emit_conv(CgFn *f) {
  const DlNode *nd = f->node;
  const DlShape *in0 = f->in_shape[0], *in1 = f->in_shape[1];
  const DlShape *xs = nd->op == DL_OP_CONV2D_GRAD_INPUT ? &nd->shape : in0;
  const DlShape *ws = nd->op == DL_OP_CONV2D_GRAD_FILTER ? &nd->shape : in1;
  const DlShape *ys = nd->op == DL_OP_CONV2D              ? &nd->shape
                      : nd->op == DL_OP_CONV2D_GRAD_INPUT ? in0
                                                          : in1;
  if (xs->rank != 4 || ws->rank != 4 || ys->rank != 4 || xs->d[1] != ws->d[1] ||
      ys->d[1] != ws->d[0] || xs->d[0] != ys->d[0])
    return internal(f, "convolution shapes do not agree");
  ConvCtx c = {.op = nd->op,
               .batch = sym_dim(xs->d[0]),
               .C = xs->d[1],
               .H = xs->d[2],
               .W = xs->d[3],
               .O = ws->d[0],
               .KH = ws->d[2],
               .KW = ws->d[3],
               .OH = ys->d[2],
               .OW = ys->d[3],
               .sh = nd->attr.conv.sh,
               .sw = nd->attr.conv.sw,
               .ph = nd->attr.conv.ph,
               .pw = nd->attr.conv.pw};
  if (!on_gpu(f)) {
    if (conv_through_gemm(&c))
      conv_cpu_gemm(f, &c);
    else
      conv_cpu(f, &c);
    return true;
  }
  CgBody body = nd->op == DL_OP_CONV2D              ? conv_gpu_forward
                : nd->op == DL_OP_CONV2D_GRAD_INPUT ? conv_gpu_grad_input
                                                    : conv_gpu_grad_filter;
  emit_points(f, &nd->shape, body, &c);
  return true;
}

/* ---- pooling over the last two axes, and its gradients ------------------------ */

typedef struct PoolCtx {
  DlOp op;
  CgSym planes; /* the product of the leading axes */
  int64_t H, W, OH, OW;
  int kh, kw, sh, sw;
  LLVMValueRef inv_area; /* 1 / (kh * kw) */
} PoolCtx;

/* The first maximum of the window whose top-left element is at offset `at`
 * in x (in[0]): its value and offset, scanning row-major from -inf and
 * keeping an element only when it is greater. */
static void window_max(CgFn *f, const PoolCtx *p, LLVMValueRef at, LLVMValueRef *best,
                       LLVMValueRef *best_at) {
  Cg *cg = f->cg;
  LLVMValueRef bv = scalar_slot(f, "best"), bo = typed_slot(f, cg->t_i64, "best_at");
  slot_set(f, bv, f32c(cg, -INFINITY));
  slot_set(f, bo, at);
  CgLoop li, lj;
  LLVMValueRef ki = loop_begin(f, &li, i64c(cg, 0), i64c(cg, p->kh), "ki");
  LLVMValueRef row = idx_add(f, at, idx_mul(f, ki, i64c(cg, p->W)));
  LLVMValueRef kj = loop_begin(f, &lj, i64c(cg, 0), i64c(cg, p->kw), "kj");
  LLVMValueRef o = idx_add(f, row, kj);
  LLVMValueRef x = load_f32(f, f->in[0], o);
  LLVMValueRef greater = fcmp(f, LLVMRealOGT, x, slot_get(f, bv));
  slot_set(f, bo, select_(f, greater, o, slot_get(f, bo)));
  slot_set(f, bv, select_(f, greater, x, slot_get(f, bv)));
  loop_end(f, &lj, i64c(cg, 1));
  loop_end(f, &li, i64c(cg, 1));
  *best = slot_get(f, bv);
  *best_at = slot_get(f, bo);
}

/* Windows of at most this many taps are searched and stored in straight-line
 * code (LeNet-5's 2 x 2); larger ones in loops, or a global pooling of a
 * plane would unroll into thousands of instructions. */
#define CG_POOL_UNROLLED_TAPS 16

/* The window's first maximum as window_max finds it, as the index ki kw +
 * kj of its tap: straight-line code over the window (small), in 32-bit
 * indices. */
static LLVMValueRef window_first_max_tap(CgFn *f, const PoolCtx *p, LLVMValueRef at) {
  Cg *cg = f->cg;
  LLVMValueRef best = f32c(cg, -INFINITY), tap = LLVMConstInt(cg->t_i32, 0, 0);
  for (int ki = 0; ki < p->kh; ki++)
    for (int kj = 0; kj < p->kw; kj++) {
      LLVMValueRef x = load_f32(f, f->in[0], idx_add(f, at, i64c(cg, (int64_t)ki * p->W + kj)));
      LLVMValueRef greater = fcmp(f, LLVMRealOGT, x, best);
      tap = select_(f, greater, LLVMConstInt(cg->t_i32, (unsigned)(ki * p->kw + kj), 0), tap);
      best = select_(f, greater, x, best);
    }
  return tap;
}

/* One window: off[0] is the pooled element (y or dy), off[1] the window's
 * top-left element in x (or dx).  Forward pooling on CPU and GPU; the
 * gradients' CPU scatter. */
static void pool_window_body(CgFn *f, LLVMValueRef *off, void *user) {
  PoolCtx *p = user;
  Cg *cg = f->cg;
  if (p->op == DL_OP_MAXPOOL2D_GRAD && p->sh >= p->kh && p->sw >= p->kw) {
    /* Windows that do not overlap: each element of dx is in one window at
     * most, so every element of the window is stored (dy at the first
     * maximum, zero elsewhere) instead of adding to one scattered element;
     * the loop over windows has no dependence between iterations then. */
    LLVMValueRef dy = load_f32(f, f->in[1], off[0]), zero = f32c(cg, 0.0);
    if (p->kh * p->kw <= CG_POOL_UNROLLED_TAPS) {
      LLVMValueRef tap = window_first_max_tap(f, p, off[1]);
      for (int ki = 0; ki < p->kh; ki++)
        for (int kj = 0; kj < p->kw; kj++) {
          LLVMValueRef o = idx_add(f, off[1], i64c(cg, (int64_t)ki * p->W + kj));
          LLVMValueRef here =
              icmp(f, LLVMIntEQ, tap, LLVMConstInt(cg->t_i32, (unsigned)(ki * p->kw + kj), 0));
          store_f32(f, select_(f, here, dy, zero), f->out, o);
        }
      return;
    }
    /* A large window (a global pooling of a whole plane, say): the same
     * stores from loops, which keep the code small. */
    LLVMValueRef best, at;
    window_max(f, p, off[1], &best, &at);
    CgLoop li, lj;
    LLVMValueRef ki = loop_begin(f, &li, i64c(cg, 0), i64c(cg, p->kh), "ki");
    LLVMValueRef row = idx_add(f, off[1], idx_mul(f, ki, i64c(cg, p->W)));
    LLVMValueRef kj = loop_begin(f, &lj, i64c(cg, 0), i64c(cg, p->kw), "kj");
    LLVMValueRef o = idx_add(f, row, kj);
    store_f32(f, select_(f, icmp(f, LLVMIntEQ, o, at), dy, zero), f->out, o);
    loop_end(f, &lj, i64c(cg, 1));
    loop_end(f, &li, i64c(cg, 1));
    return;
  }
  if (p->op == DL_OP_MAXPOOL2D || p->op == DL_OP_MAXPOOL2D_GRAD) {
    LLVMValueRef best, at;
    window_max(f, p, off[1], &best, &at);
    if (p->op == DL_OP_MAXPOOL2D)
      store_f32(f, best, f->out, off[0]);
    else
      add_to(f, load_f32(f, f->in[1], off[0]), at);
    return;
  }
  LLVMValueRef acc = p->op == DL_OP_AVGPOOL2D ? scalar_slot(f, "sum") : NULL;
  LLVMValueRef share = NULL;
  if (acc)
    slot_set(f, acc, f32c(cg, 0.0));
  else
    share = f_mul(f, load_f32(f, f->in[0], off[0]), p->inv_area);
  CgLoop li, lj;
  LLVMValueRef ki = loop_begin(f, &li, i64c(cg, 0), i64c(cg, p->kh), "ki");
  LLVMValueRef row = idx_add(f, off[1], idx_mul(f, ki, i64c(cg, p->W)));
  LLVMValueRef kj = loop_begin(f, &lj, i64c(cg, 0), i64c(cg, p->kw), "kj");
  LLVMValueRef o = idx_add(f, row, kj);
  if (acc)
    slot_set(f, acc, f_add(f, slot_get(f, acc), load_f32(f, f->in[0], o)));
  else
    add_to(f, share, o);
  loop_end(f, &lj, i64c(cg, 1));
  loop_end(f, &li, i64c(cg, 1));
  if (acc) store_f32(f, f_mul(f, slot_get(f, acc), p->inv_area), f->out, off[0]);
}

/* GPU gradient, one element dx[plane, h, w] (off: dx, plane, h, w): the
 * windows that contain it are rows i with i*sh <= h < i*sh + kh, that is
 * [ceil((h - kh + 1) / sh), h / sh], and likewise for columns. */
static void pool_gpu_grad_body(CgFn *f, LLVMValueRef *off, void *user) {
  PoolCtx *p = user;
  Cg *cg = f->cg;
  LLVMValueRef plane = off[1], h = off[2], w = off[3];
  LLVMValueRef acc = scalar_slot(f, "acc");
  slot_set(f, acc, f32c(cg, 0.0));
  LLVMValueRef ilo = idx_div(
      f,
      idx_add(f, idx_max(f, idx_sub(f, h, i64c(cg, p->kh - 1)), i64c(cg, 0)), i64c(cg, p->sh - 1)),
      p->sh);
  LLVMValueRef ihi = idx_min(f, i64c(cg, p->OH), idx_add(f, idx_div(f, h, p->sh), i64c(cg, 1)));
  LLVMValueRef jlo = idx_div(
      f,
      idx_add(f, idx_max(f, idx_sub(f, w, i64c(cg, p->kw - 1)), i64c(cg, 0)), i64c(cg, p->sw - 1)),
      p->sw);
  LLVMValueRef jhi = idx_min(f, i64c(cg, p->OW), idx_add(f, idx_div(f, w, p->sw), i64c(cg, 1)));
  LLVMValueRef x_plane = idx_mul(f, plane, i64c(cg, p->H * p->W));
  LLVMValueRef y_plane = idx_mul(f, plane, i64c(cg, p->OH * p->OW));
  CgLoop li, lj;
  LLVMValueRef i = loop_begin(f, &li, ilo, ihi, "i");
  LLVMValueRef j = loop_begin(f, &lj, jlo, jhi, "j");
  LLVMValueRef yo = idx_add(f, y_plane, idx_add(f, idx_mul(f, i, i64c(cg, p->OW)), j));
  LLVMValueRef v;
  if (p->op == DL_OP_MAXPOOL2D_GRAD) {
    LLVMValueRef top_left =
        idx_add(f, x_plane,
                idx_add(f, idx_mul(f, i, i64c(cg, p->sh * p->W)), idx_mul(f, j, i64c(cg, p->sw))));
    LLVMValueRef best, at;
    window_max(f, p, top_left, &best, &at);
    v = select_(f, icmp(f, LLVMIntEQ, at, off[0]), load_f32(f, f->in[1], yo), f32c(cg, 0.0));
  } else {
    v = f_mul(f, load_f32(f, f->in[0], yo), p->inv_area);
  }
  slot_set(f, acc, f_add(f, slot_get(f, acc), v));
  loop_end(f, &lj, i64c(cg, 1));
  loop_end(f, &li, i64c(cg, 1));
  store_f32(f, slot_get(f, acc), f->out, off[0]);
}

/* CPU, pooling or its gradient on several threads: each takes ranges of
 * the planes (windows never cross a plane, so no two threads write the same
 * element of y or dx, and each element is computed as on one thread).  A
 * pooling is as cheap as a map per element of x it reads, and shares its
 * threshold, CG_MAP_PARALLEL_ELEMS of x's elements (LeNet-5's two max-pools
 * and their gradients have 301,056 and 102,400 at batch 64). */
static void pool_parallel(CgFn *f, PoolCtx *p, const CgNest *nest, bool clear,
                          LLVMValueRef x_size) {
  Cg *cg = f->cg;
  CgFn part;
  LLVMValueRef range[2];
  begin_part(f, &part, range, false);
  if (clear) {
    LLVMValueRef plane = i64c(cg, p->H * p->W);
    fill_range(&part, part.out, idx_mul(&part, range[0], plane), idx_mul(&part, range[1], plane),
               f32c(cg, 0.0));
  }
  LLVMValueRef off[2] = {i64c(cg, 0), i64c(cg, 0)};
  nest_level(&part, nest, 0, off, pool_window_body, p, range);
  LLVMBuildRetVoid(cg->b);
  LLVMPositionBuilderAtEnd(cg->b, f->entry_bb);
  part_dispatch(f, part.fn, sym_value(f, p->planes), x_size, CG_MAP_RANGES_PER_THREAD, NULL);
}

static bool emit_pool(CgFn *f) {
  const DlNode *nd = f->node;
  bool grad = nd->op == DL_OP_MAXPOOL2D_GRAD || nd->op == DL_OP_AVGPOOL2D_GRAD;
  const DlShape *xs = grad ? &nd->shape : f->in_shape[0];
  const DlShape *ys = !grad ? &nd->shape : f->in_shape[nd->op == DL_OP_MAXPOOL2D_GRAD ? 1 : 0];
  int r = xs->rank;
  if (r < 2 || ys->rank != r) return internal(f, "pooling shapes do not agree");
  PoolCtx p = {.op = nd->op,
               .planes = sym_const(1),
               .H = xs->d[r - 2],
               .W = xs->d[r - 1],
               .OH = ys->d[r - 2],
               .OW = ys->d[r - 1],
               .kh = nd->attr.pool.kh,
               .kw = nd->attr.pool.kw,
               .sh = nd->attr.pool.sh,
               .sw = nd->attr.pool.sw};
  for (int d = 0; d < r - 2; d++)
    p.planes = sym_mul(p.planes, sym_dim(xs->d[d]));
  /* 1/(kh kw) rounded to float: the interpreter divides in double, well
   * within the tests' tolerance. */
  p.inv_area = f32c(f->cg, 1.0 / (double)(p.kh * p.kw));
  if (grad && on_gpu(f)) {
    CgSym one = sym_const(1), zero = sym_const(0);
    CgNest nest = {.rank = 3,
                   .nops = 4,
                   .dim = {p.planes, sym_const(p.H), sym_const(p.W)},
                   .stride = {{sym_const(p.H * p.W), sym_const(p.W), one},
                              {one, zero, zero},
                              {zero, one, zero},
                              {zero, zero, one}}};
    emit_grid(f, &nest, pool_gpu_grad_body, &p);
    return true;
  }
  /* One point per window: the pooled element and the window's top-left. */
  CgNest nest = {.rank = 3,
                 .nops = 2,
                 .dim = {p.planes, sym_const(p.OH), sym_const(p.OW)},
                 .stride = {{sym_const(p.OH * p.OW), sym_const(p.OW), sym_const(1)},
                            {sym_const(p.H * p.W), sym_const(p.sh * p.W), sym_const(p.sw)}}};
  /* Windows that tile the input exactly write every element of dx. */
  bool tiles = nd->op == DL_OP_MAXPOOL2D_GRAD && p.sh == p.kh && p.sw == p.kw &&
               p.H == p.OH * p.kh && p.W == p.OW * p.kw;
  CgSym x_size = sym_mul(p.planes, sym_const(p.H * p.W));
  if (!on_gpu(f) && f->pool && sym_at(x_size, f->cg->prog->max_batch) >= CG_MAP_PARALLEL_ELEMS) {
    pool_parallel(f, &p, &nest, grad && !tiles, sym_value(f, x_size));
  } else if (grad) {
    if (!tiles) zero_output(f);
    emit_loops(f, &nest, pool_window_body, &p);
  } else {
    emit_space(f, &nest, pool_window_body, &p);
  }
  return true;
}

/* ---- dropout ---------------------------------------------------------------- */

/* splitmix64's finaliser, bit for bit as dl_hash64 / dlrt_hash64. */
static LLVMValueRef hash64(CgFn *f, LLVMValueRef x) {
  LLVMBuilderRef b = f->cg->b;
  LLVMTypeRef t = f->cg->t_i64;
  LLVMValueRef z = LLVMBuildAdd(b, x, LLVMConstInt(t, UINT64_C(0x9e3779b97f4a7c15), false), "");
  z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, LLVMConstInt(t, 30, false), ""), "");
  z = LLVMBuildMul(b, z, LLVMConstInt(t, UINT64_C(0xbf58476d1ce4e5b9), false), "");
  z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, LLVMConstInt(t, 27, false), ""), "");
  z = LLVMBuildMul(b, z, LLVMConstInt(t, UINT64_C(0x94d049bb133111eb), false), "");
  return LLVMBuildXor(b, z, LLVMBuildLShr(b, z, LLVMConstInt(t, 31, false), ""), "");
}

typedef struct DropoutCtx {
  LLVMValueRef train;  /* i1: train.mode != 0 */
  LLVMValueRef stream; /* i64: h(h(seed) ^ stream), the same for every element */
  uint64_t threshold;  /* keep iff the top 53 bits >= ceil(p 2^53), i.e. u >= p */
  LLVMValueRef scale;  /* 1 / (1 - p) */
} DropoutCtx;

/* off[0] == off[1] is the element's flat index: the counter. */
static void dropout_body(CgFn *f, LLVMValueRef *off, void *user) {
  DropoutCtx *d = user;
  Cg *cg = f->cg;
  LLVMValueRef x = load_f32(f, f->in[0], off[1]);
  LLVMValueRef bits = hash64(f, LLVMBuildXor(cg->b, d->stream, off[0], ""));
  bits = LLVMBuildLShr(cg->b, bits, LLVMConstInt(cg->t_i64, 11, false), "");
  LLVMValueRef keep =
      icmp(f, LLVMIntUGE, bits, LLVMConstInt(cg->t_i64, (unsigned long long)d->threshold, false));
  LLVMValueRef dropped = select_(f, keep, f_mul(f, x, d->scale), f32c(cg, 0.0));
  store_f32(f, select_(f, d->train, dropped, x), f->out, off[0]);
}

static bool emit_dropout(CgFn *f) {
  const DlNode *nd = f->node;
  Cg *cg = f->cg;
  double p = nd->attr.dropout.p;
  if (!(p >= 0 && p < 1)) return internal(f, "dropout probability outside [0, 1)");
  DropoutCtx d = {.threshold = (uint64_t)ceil(p * 0x1p53), .scale = f32c(cg, 1.0 / (1.0 - p))};
  LLVMValueRef mode = load_f32(f, f->in[1], i64c(cg, 0));
  d.train = fcmp(f, LLVMRealUNE, mode, f32c(cg, 0.0));
  /* The seed as dl_dropout_seed: clamped to [0, 2^32], truncated. */
  LLVMValueRef seed = load_f32(f, f->in[2], i64c(cg, 0));
  seed = select_(f, fcmp(f, LLVMRealOGT, seed, f32c(cg, 0.0)), seed, f32c(cg, 0.0));
  seed =
      select_(f, fcmp(f, LLVMRealOLT, seed, f32c(cg, 4294967296.0)), seed, f32c(cg, 4294967296.0));
  LLVMValueRef key = hash64(f, LLVMBuildFPToUI(cg->b, seed, cg->t_i64, ""));
  d.stream = hash64(
      f, LLVMBuildXor(cg->b, key, LLVMConstInt(cg->t_i64, nd->attr.dropout.stream, false), ""));
  CgSym one = sym_const(1);
  CgNest nest = {.rank = 1, .nops = 2, .dim = {shape_numel(&nd->shape)}, .stride = {{one}, {one}}};
  emit_space(f, &nest, dropout_body, &d);
  return true;
}

/* ---- kernel functions ---------------------------------------------------------- */

/* ---- kernel functions ---------------------------------------------------------- */

/* Is operand `id` of kernel k read by the kernel's matmul or by an op
 * kernel's root, which read buffers (not values at a point)? */
static bool operand_read_from_memory(const DlProgram *p, int k, DlNodeId id) {
  const DlKernel *kern = &p->kernels[k];
  for (int i = 0; i < kern->nnodes; i++) {
    const DlNode *nd = dl_node(p->g, kern->nodes[i]);
    bool whole = kern->kind == DL_KERNEL_OP || nd->op == DL_OP_MATMUL;
    for (int j = 0; whole && j < nd->nin; j++)
      if (nd->in[j] == id) return true;
  }
  return false;
}

/* A uniform constant read only elementwise is folded into the code. */
static bool operand_inlined(const DlProgram *p, int k, DlNodeId id) {
  const DlNode *nd = dl_node(p->g, id);
  return nd->op == DL_OP_CONST && !nd->attr.konst.data && !operand_read_from_memory(p, k, id);
}

int cg_kernel_buffers(const DlProgram *p, int k, DlNodeId bufs[DL_KERNEL_MAX_OPERANDS]) {
  DlNodeId ops[DL_KERNEL_MAX_OPERANDS];
  int nops = dl_kernel_operands(p, k, ops), nb = 0;
  DlNodeId out = dl_buffer_of(p, p->kernels[k].root);
  /* A side reduction's buffer first (fuse.c leaves room for it). */
  if (p->kernels[k].side != DL_NONE) bufs[nb++] = dl_buffer_of(p, p->kernels[k].side);
  for (int i = 0; i < nops && nb < DL_KERNEL_MAX_OPERANDS; i++) {
    if (operand_inlined(p, k, ops[i])) continue;
    DlNodeId b = dl_buffer_of(p, ops[i]);
    bool seen = b == out;
    for (int j = 0; j < nb && !seen; j++)
      seen = bufs[j] == b;
    if (!seen) bufs[nb++] = b;
  }
  return nb;
}

int64_t cg_slice_shift(const DlProgram *p, int k, DlTargetKind target) {
  const DlKernel *kern = &p->kernels[k];
  if (target != DL_TARGET_CPU || kern->kind != DL_KERNEL_OP || kern->nnodes != 1) return -1;
  const DlNode *nd = dl_node(p->g, kern->root);
  if (nd->op != DL_OP_SLICE || operand_inlined(p, k, nd->in[0])) return -1;
  const DlShape *sa = &dl_node(p->g, nd->in[0])->shape;
  CgSym st[DL_MAX_RANK];
  contiguous_strides(sa, st);
  int64_t shift = 0;
  for (int d = 0; d < sa->rank; d++) {
    if (nd->attr.slice.start[d] == 0) continue;
    if (st[d].k != 0) return -1; /* a stride that depends on the batch size */
    shift += nd->attr.slice.start[d] * st[d].c;
  }
  return shift;
}

/* ---- kernels that are the same function ------------------------------------------
 *
 * A kernel's function sees its buffers only as parameters, so two kernels
 * that compute the same ops on the same shapes, read their operands in the
 * same order with the same shapes (and the same constants folded in) and
 * share buffers the same way are one function called with other pointers:
 * the 32 steps of an unrolled LSTM, or the updates of parameters of one
 * shape, compile once.  The signature spells out exactly what the code
 * depends on; the node ids, names and buffer offsets are left out. */

static void sig_put(char **buf, size_t *len, size_t *cap, DlArena *arena, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void sig_put(char **buf, size_t *len, size_t *cap, DlArena *arena, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (*len + (size_t)n + 1 > *cap) {
    size_t cap2 = (*cap ? *cap * 2 : 256) + (size_t)n;
    char *b2 = dl_arena_alloc(arena, cap2);
    if (*buf) memcpy(b2, *buf, *len);
    *buf = b2;
    *cap = cap2;
  }
  memcpy(*buf + *len, tmp, (size_t)n + 1);
  *len += (size_t)n;
}

static void sig_shape(char **b, size_t *l, size_t *c, DlArena *a, const DlShape *s) {
  sig_put(b, l, c, a, "[");
  for (int i = 0; i < s->rank; i++)
    sig_put(b, l, c, a, "%lld,", (long long)s->d[i]);
  sig_put(b, l, c, a, "]");
}

const char *cg_kernel_signature(const DlProgram *p, int k, DlTargetKind target, DlArena *arena) {
  const DlGraph *g = p->g;
  const DlKernel *kern = &p->kernels[k];
  char *b = NULL;
  size_t l = 0, c = 0;
  DlNodeId ops[DL_KERNEL_MAX_OPERANDS], bufs[DL_KERNEL_MAX_OPERANDS];
  int nops = dl_kernel_operands(p, k, ops), nb = cg_kernel_buffers(p, k, bufs);
  DlNodeId out = dl_buffer_of(p, kern->root);
  sig_put(&b, &l, &c, arena, "%d:%d:%d;", (int)kern->kind, kern->nnodes, nb);
  for (int j = 0; j < nops; j++) {
    const DlNode *nd = dl_node(g, ops[j]);
    sig_put(&b, &l, &c, arena, "o");
    sig_shape(&b, &l, &c, arena, &nd->shape);
    if (operand_inlined(p, k, ops[j])) {
      sig_put(&b, &l, &c, arena, "=%a;", nd->attr.konst.value);
      continue;
    }
    DlNodeId buf = dl_buffer_of(p, ops[j]);
    int at = buf == out ? 0 : -1;
    for (int i = 0; i < nb && at < 0; i++)
      if (bufs[i] == buf) at = 1 + i;
    sig_put(&b, &l, &c, arena, "b%d;", at);
  }
  for (int i = 0; i < kern->nnodes; i++) {
    const DlNode *nd = dl_node(g, kern->nodes[i]);
    sig_put(&b, &l, &c, arena, "n%d", (int)nd->op);
    sig_shape(&b, &l, &c, arena, &nd->shape);
    /* The attributes: constructors zero the union first, so its bytes are
     * the attributes (kernels hold no leaves, whose attributes point).  A
     * slice whose window the caller finds (cg_slice_shift) leaves out its
     * start: the 32 x[:, t, :] of an unrolled LSTM are one function. */
    unsigned char attr[sizeof nd->attr];
    memcpy(attr, &nd->attr, sizeof attr);
    if (cg_slice_shift(p, k, target) >= 0)
      memset(attr +
                 ((const unsigned char *)nd->attr.slice.start - (const unsigned char *)&nd->attr),
             0, sizeof nd->attr.slice.start);
    for (size_t byte = 0; byte < sizeof nd->attr; byte++)
      sig_put(&b, &l, &c, arena, "%02x", attr[byte]);
    for (int j = 0; j < nd->nin; j++) {
      DlNodeId in = nd->in[j];
      int local = p->kernel_of[in] == k ? node_index(kern, in) : -1;
      int op = -1;
      for (int o = 0; o < nops && local < 0 && op < 0; o++)
        if (ops[o] == in) op = o;
      if (nd->op == DL_OP_ASSIGN && j == 0)
        sig_put(&b, &l, &c, arena, ",out");
      else if (local >= 0)
        sig_put(&b, &l, &c, arena, ",n%d", local);
      else
        sig_put(&b, &l, &c, arena, ",o%d", op);
    }
    sig_put(&b, &l, &c, arena, ";");
  }
  return b ? b : "";
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

/* A kernel's work for the plain-loop rule: its largest tensor's elements
 * (at the largest batch), eight times over for each exp, log, tanh, sigmoid
 * or pow it computes (each is tens of instructions per element). */
int64_t cg_kernel_work(const DlProgram *p, int k) {
  const DlKernel *kern = &p->kernels[k];
  int64_t most = 0, cost = 1;
  for (int i = 0; i < kern->nnodes; i++) {
    const DlNode *nd = dl_node(p->g, kern->nodes[i]);
    DlOp op = nd->op;
    cost += 8 * (op == DL_OP_EXP || op == DL_OP_LOG || op == DL_OP_TANH || op == DL_OP_SIGMOID ||
                 op == DL_OP_POW || op == DL_OP_SOFTMAX || op == DL_OP_LOG_SOFTMAX);
    for (int j = -1; j < nd->nin; j++) {
      const DlShape *s = j < 0 ? &nd->shape : &dl_node(p->g, nd->in[j])->shape;
      int64_t count = sym_at(shape_numel(s), p->max_batch);
      if (count > most) most = count;
    }
  }
  return most * cost;
}

/* "<prefix>_k<root>_<op>_<op>...": the root's id and the ops it computes (the
 * first few). */
static const char *kernel_name(Cg *cg, const DlKernel *kern) {
  char buf[160];
  int len = snprintf(buf, sizeof buf, "%s_k%d", cg->prefix, (int)kern->root);
  for (int i = 0; i < kern->nnodes && len < (int)sizeof buf - 24; i++)
    len += snprintf(buf + len, sizeof buf - (size_t)len, "_%s",
                    i == 4 && kern->nnodes > 5 ? "etc"
                                               : dl_op_info[cg->g->nodes[kern->nodes[i]].op].name);
  return dl_arena_strdup(cg->cc->arena, buf);
}

/* The function of kernel k: void (float *out, float *buf..., i64 n[, pool])
 * with the buffers of cg_kernel_buffers (a side reduction's first); the
 * CPU's kernels also take the runtime's thread pool. */
static void kernel_begin(Cg *cg, int k, CgFn *f) {
  const DlProgram *p = cg->prog;
  const DlKernel *kern = &p->kernels[k];
  DlNodeId bufs[DL_KERNEL_MAX_OPERANDS];
  int nb = cg_kernel_buffers(p, k, bufs);
  bool cpu = cg->target == DL_TARGET_CPU;
  LLVMTypeRef params[DL_KERNEL_MAX_OPERANDS + 3];
  for (int i = 0; i < 1 + nb; i++)
    params[i] = cg->t_ptr;
  params[1 + nb] = cg->t_i64;
  params[2 + nb] = cg->t_ptr;
  LLVMTypeRef fty = LLVMFunctionType(cg->t_void, params, (unsigned)(2 + nb + cpu), false);
  LLVMValueRef fn = LLVMAddFunction(cg->mod, kernel_name(cg, kern), fty);
  LLVMSetLinkage(fn, cpu ? LLVMInternalLinkage : LLVMExternalLinkage);
  add_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind");
  bool side = kern->side != DL_NONE;
  for (unsigned i = 1; i <= (unsigned)(1 + nb); i++) {
    add_attr(cg, fn, i, "noalias");
    add_attr(cg, fn, i, "nocapture");
    if (i > 1u + side) add_attr(cg, fn, i, "readonly");
  }
  if (cpu) {
    add_str_attr(cg, fn, "target-cpu", cg->cpu);
    add_str_attr(cg, fn, "target-features", cg->features);
  } else {
    mark_ptx_kernel(cg, fn);
  }
  *f = (CgFn){.cg = cg,
              .k = k,
              .kern = kern,
              .node = dl_node(cg->g, kern->root),
              .id = kern->root,
              .fn = fn};
  f->plain = cpu && !cg->grid_kernels && cg->plain && cg->plain[k];
  f->out = LLVMGetParam(fn, 0);
  LLVMSetValueName2(f->out, "out", 3);
  LLVMValueRef buf_ptr[DL_KERNEL_MAX_OPERANDS];
  for (int i = 0; i < nb; i++) {
    buf_ptr[i] = LLVMGetParam(fn, (unsigned)(1 + i));
    char pname[16];
    snprintf(pname, sizeof pname, side && i == 0 ? "side" : "in%d", i - side);
    LLVMSetValueName2(buf_ptr[i], pname, strlen(pname));
  }
  f->n = LLVMGetParam(fn, (unsigned)(1 + nb));
  LLVMSetValueName2(f->n, "n", 1);
  if (cpu) {
    f->pool = LLVMGetParam(fn, (unsigned)(2 + nb));
    LLVMSetValueName2(f->pool, "pool", 4);
  }
  f->entry_bb = LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry");
  LLVMPositionBuilderAtEnd(cg->b, f->entry_bb);
  /* Where each operand is read from. */
  DlNodeId out_buf = dl_buffer_of(p, kern->root);
  f->nbufs = 1 + nb;
  f->buf[0] = f->out;
  for (int i = 0; i < nb; i++)
    f->buf[1 + i] = buf_ptr[i];
  f->side = side ? buf_ptr[0] : NULL;
  f->nops = dl_kernel_operands(p, k, f->op_node);
  for (int j = 0; j < f->nops; j++) {
    DlNodeId id = f->op_node[j];
    f->op_ptr[j] = NULL;
    f->op_const[j] = NULL;
    f->op_param[j] = -1;
    if (operand_inlined(p, k, id)) {
      f->op_const[j] = f32c(cg, (float)dl_node(cg->g, id)->attr.konst.value);
      continue;
    }
    DlNodeId b = dl_buffer_of(p, id);
    f->op_param[j] = 0; /* an ASSIGN's kernel reading its own parameter */
    for (int i = 0; i < nb && b != out_buf; i++)
      if (bufs[i] == b) f->op_param[j] = 1 + i;
    f->op_ptr[j] = f->buf[f->op_param[j]];
  }
  for (int i = 0; i < kern->nnodes && kern->kind != DL_KERNEL_OP; i++) {
    const DlNode *nd = dl_node(cg->g, kern->nodes[i]);
    for (int j = nd->op == DL_OP_ASSIGN ? 1 : 0; nd->op != DL_OP_MATMUL && j < nd->nin; j++) {
      int at = operand_index(f, nd->in[j]);
      if (at >= 0) f->op_ew[at] = true;
    }
  }
  /* An op kernel's inputs, in order. */
  const DlNode *nd = f->node;
  f->nin = nd->nin;
  for (int i = 0; i < nd->nin; i++) {
    int j = operand_index(f, nd->in[i]);
    f->in[i] = j >= 0 && f->op_ptr[j] ? f->op_ptr[j] : LLVMGetUndef(cg->t_ptr);
    f->in_shape[i] = &dl_node(cg->g, nd->in[i])->shape;
  }
  cg->kernel[k] = fn;
}

static bool emit_op(CgFn *f) {
  const DlNode *nd = f->node;
  switch (nd->op) {
  case DL_OP_INPUT:
  case DL_OP_PARAM:
  case DL_OP_CONST:
  case DL_OP_HYPER: return internal(f, "a leaf has no kernel");
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
  case DL_OP_MAXIMUM:
  case DL_OP_GT:
  case DL_OP_EQ:
  case DL_OP_EXPAND:
  case DL_OP_ASSIGN:
  case DL_OP_MATMUL:
  case DL_OP_SUM:
  case DL_OP_MEAN:
  case DL_OP_MAX: return internal(f, "not an op kernel");
  case DL_OP_RESHAPE: return internal(f, "a reshape is a view of its input, never a kernel");
  case DL_OP_SOFTMAX:
  case DL_OP_LOG_SOFTMAX: return emit_softmax(f);
  case DL_OP_PERMUTE:
  case DL_OP_SLICE:
  case DL_OP_PAD:
  case DL_OP_CONCAT: return emit_layout(f);
  case DL_OP_GATHER:
  case DL_OP_SCATTER_ADD:
  case DL_OP_ONE_HOT: return emit_index(f);
  case DL_OP_CONV2D:
  case DL_OP_CONV2D_GRAD_INPUT:
  case DL_OP_CONV2D_GRAD_FILTER: return emit_conv(f);
  case DL_OP_MAXPOOL2D:
  case DL_OP_AVGPOOL2D:
  case DL_OP_MAXPOOL2D_GRAD:
  case DL_OP_AVGPOOL2D_GRAD: return emit_pool(f);
  case DL_OP_DROPOUT: return emit_dropout(f);
  }
  return internal(f, "unknown op");
}

bool cg_emit_kernel(Cg *cg, int k) {
  const DlKernel *kern = &cg->prog->kernels[k];
  int errors_before = cg->cc->nerrors;
  CgFn f;
  kernel_begin(cg, k, &f);
  bool ok = true;
  if (kern->nnodes > CG_MAX_FUSED) {
    ok = internal(&f, "too many nodes in one kernel");
  } else {
    switch (kern->kind) {
    case DL_KERNEL_OP: ok = emit_op(&f); break;
    case DL_KERNEL_MAP: ok = emit_map(&f); break;
    case DL_KERNEL_REDUCE: ok = emit_reduce(&f); break;
    case DL_KERNEL_MATMUL: ok = emit_matmul(&f); break;
    }
  }
  /* Close the function even after an error so the module stays well formed
   * (it is discarded anyway). */
  LLVMBuildRetVoid(cg->b);
  return ok && cg->cc->nerrors == errors_before;
}
