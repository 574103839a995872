/* cg_internal.h - shared state of the code generator (private to codegen/).
 *
 *   cg_kernels.c  one LLVM function per kernel of the plan (CPU loops or
 *                 NVPTX grid-stride kernels): fused elementwise, reduction
 *                 and matmul kernels, and the per-op generators
 *   cg_module.c   target machines, the module with its entry functions and
 *                 DlrtProgram table, the O3 pipeline, IR/asm/object/PTX/header
 *   cg_parallel.c the module cut into parts compiled on several threads
 *   cg_jit.c      the ORC LLJIT
 */
#ifndef DL_CG_INTERNAL_H
#define DL_CG_INTERNAL_H

#include "codegen.h"

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

/* A size known symbolically: c * n^k, where n is the runtime batch size.
 * Every dimension is a constant or N, so every product of dimensions (a
 * stride, an element count) has this form; comparing two of them exactly is
 * what lets loops be merged at compile time even when they depend on n. */
typedef struct CgSym {
  int64_t c;
  int k;
} CgSym;

/* The code generator for one module. */
typedef struct Cg {
  DlCompiler *cc;
  const DlProgram *prog;
  const DlGraph *g;
  DlTargetKind target;
  bool grid_kernels;  /* GPU-style kernels: always on NVPTX; on the CPU for tests */
  const char *prefix; /* sanitised symbol prefix */
  const char *cpu;    /* CPU: host CPU name and features, set on every function */
  const char *features;
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTypeRef t_f32, t_i64, t_i32, t_ptr, t_void;
  LLVMValueRef *kernel; /* per kernel of the program: its function, or NULL */
  const bool *plain;    /* per kernel: its loops are neither unrolled nor vectorised */
} Cg;

/* The buffers passed to kernel k after its output (the root's buffer), in
 * parameter order: its side reduction's buffer, if it has one (written, the
 * others are read), then the distinct buffers of its operands, less the
 * output's own (an ASSIGN's kernel reads its parameter through the output
 * pointer) and the uniform constants folded into the code.  Returns their
 * number. */
int cg_kernel_buffers(const DlProgram *p, int k, DlNodeId bufs[DL_KERNEL_MAX_OPERANDS]);
/* Kernel k's work by the measure of the plain-loop rule (cg_module.c). */
int64_t cg_kernel_work(const DlProgram *p, int k);
/* What kernel k's function depends on, as a string (arena memory): kernels
 * with equal signatures share one function. */
const char *cg_kernel_signature(const DlProgram *p, int k, DlTargetKind target, DlArena *arena);
/* For a kernel that is a lone slice of a buffer with strides independent of
 * the batch size, on the CPU: the element offset of the window's start,
 * which the caller adds to the input's pointer (so that slices differing in
 * their start only are one function).  Else -1: the kernel adds it. */
int64_t cg_slice_shift(const DlProgram *p, int k, DlTargetKind target);
/* Emit kernel k into cg->mod and record it in cg->kernel[k].  Returns false
 * (diagnostic recorded) on failure. */
bool cg_emit_kernel(Cg *cg, int k);

/* ---- cg_gemm.c ---- */

/* Emit a call of the packed GEMM (cg_gemm.c) at the builder's position:
 * c[m, p] = op(a) @ op(b) with op(a) [m, k] (a stored [k, m] when ta) and
 * op(b) [k, p] (b stored [p, k] when tb), all row-major and contiguous; m, k
 * and p are i64 values (they may depend on the batch size).  pool: the
 * runtime's thread pool (a pointer, possibly null at run time) to split the
 * product over, or NULL to emit no parallel path. */
/* Products of fewer multiply-adds run on the calling thread. */
#define CG_GEMM_PARALLEL_MACS (1 << 20)
/* may_dot: with no pool, the product may be small enough for the GEMM's
 * dot-product path (at most 12 rows and 64 columns; see cg_gemm.c), which
 * is then tested for at run time (its code is emitted only then). */
void cg_gemm_call(Cg *cg, bool ta, bool tb, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b,
                  LLVMValueRef m, LLVMValueRef k, LLVMValueRef p, LLVMValueRef pool, bool may_dot);

/* A call of the GEMM on this thread with explicit strides:
 *   C[i ldc + j] (+)= sum over k of A[i a_i + k a_k] B[k b_k + j b_j]
 * ops: c, a, b (float pointers), m, k, p, ldc, a_i, a_k, b_k, b_j (i64),
 * accumulate (i1: add to C instead of overwriting it).  may_dot: as for
 * cg_gemm_call (the product is never split between threads). */
#define CG_GEMM_NARGS 12
void cg_gemm_strided(Cg *cg, const LLVMValueRef ops[CG_GEMM_NARGS], bool may_dot);

/* The declaration of the runtime's dlrt_parallel_for(pool, count,
 * per_thread, fn, arg) in the module. */
LLVMValueRef cg_parallel_for(Cg *cg);
/* Mark the loop whose latch branch this is as neither unrolled nor
 * vectorised (LLVM's work on a loop costs JIT time). */
void cg_plain_loop(Cg *cg, LLVMValueRef latch_br);
/* An alloca in the entry block of the function the builder is in (so that a
 * loop does not grow the stack). */
LLVMValueRef cg_entry_alloca(Cg *cg, LLVMTypeRef type, const char *name);

/* ---- cg_module.c ---- */

/* DlCodegenOptions with defaults applied and checked. */
typedef struct CgOptions {
  DlTargetKind target;
  bool grid_kernels; /* CPU only: emit the GPU's kernels (see cg_testing.h) */
  int opt_level;
  int compile_threads; /* JIT: threads for LLVM (0: one per core) */
  const char *gpu_arch;
  const char *prefix;
} CgOptions;

/* A target machine and the strings it was made from (arena or static). */
typedef struct CgTarget {
  LLVMTargetMachineRef tm;
  const char *triple, *cpu, *features;
} CgTarget;

/* One entry of the DlrtProgram table (and of the C header's comment). */
typedef struct CgTensor {
  DlNodeId node;
  const char *name;
  DlrtRole role;
  DlShape shape;
  int64_t offset;
  DlrtInit init;
  double a, b;
  const float *data;
} CgTensor;

/* Symbol prefix from the options or the graph name, made a C identifier. */
const char *cg_prefix(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts);
/* opts may be NULL (CPU, O3, sm_80, the model's name). */
bool cg_options(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts,
                DlTargetKind target, CgOptions *out);
/* Initialise the LLVM target and create its machine (caller disposes tm). */
bool cg_target_machine(DlCompiler *cc, const CgOptions *o, CgTarget *t);
/* The named tensors of the program, in table order (arena memory). */
int cg_tensors(DlCompiler *cc, const DlProgram *prog, CgTensor **out);
/* The verified module for o->target in ctx, not yet optimised, or NULL
 * (diagnostic recorded). */
LLVMModuleRef cg_build_module(DlCompiler *cc, const DlProgram *prog, const CgOptions *o,
                              const CgTarget *t, LLVMContextRef ctx);
/* Run the O<level> pipeline on mod.  Returns NULL, or LLVM's error message
 * (malloc'd).  Touches nothing but mod and tm: threads may run it on modules
 * of different contexts at once. */
char *cg_optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, int level);

/* ---- cg_parallel.c ---- */

#define CG_PARALLEL_MAX_THREADS 8
#define CG_PARALLEL_MAX_OBJECTS (CG_PARALLEL_MAX_THREADS + 1)
/* A function attribute: the JIT compiles the function at O2 at most, in a
 * module of its own (the GEMM's functions: hand-vectorised loop nests, as
 * fast at O2 and 5 to 20 ms cheaper to compile; at O3, loop unswitching
 * copies their loops). */
#define CG_O2_ATTR "dlcc-o2"
/* Optimise mod (built in a context of its own for the JIT) and compile it
 * to object files: one part per thread (up to `threads`, 0: one per core),
 * compiled at once, and the CG_O2_ATTR functions in one more module.  mod is
 * cut down to part 0 in place and stays the caller's to dispose.  Returns
 * the number of objects in objects[] (the caller's to dispose) and sets
 * *threads_used, or returns 0 (diagnostic recorded). */
int cg_compile_parallel(DlCompiler *cc, LLVMModuleRef mod, const CgOptions *o, int threads,
                        LLVMMemoryBufferRef objects[CG_PARALLEL_MAX_OBJECTS], int *threads_used);
void cg_report_llvm_error(DlCompiler *cc, LLVMErrorRef err, const char *what);

#endif
