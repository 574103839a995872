/* codegen.h - LLVM code generation for a planned program (LLVM C API only).
 *
 * One LLVM function per kernel of the plan (a group of fused nodes, see
 * passes/fuse.c), with noalias float pointers for its output and input
 * buffers, the batch size n and (CPU) the runtime's thread pool; one entry
 * function per DlEntry, (float *mem, i64 n, DlrtPool *pool), that calls the
 * kernels on buffers at the planned offsets of `mem`; and, for the CPU, a
 * DlrtProgram table (see runtime/dlrt.h) named "<model>_program" describing
 * every named tensor.  Large matrix products (and large elementwise kernels)
 * are split over the pool's threads with dlrt_parallel_for.
 *
 * CPU code is optimised with the new pass manager at O3 for the host CPU and
 * either JIT-compiled in process (ORC LLJIT; the module cut into parts
 * compiled on several threads, cg_parallel.c) or written as an ELF object.
 * The same kernels are emitted for nvptx64-nvidia-cuda as PTX: one .entry per
 * kernel, each thread computing output elements in a grid-stride loop.
 */
#ifndef DL_CODEGEN_H
#define DL_CODEGEN_H

#include "../passes/passes.h"
#include "../runtime/dlrt.h"

typedef enum DlTargetKind { DL_TARGET_CPU, DL_TARGET_NVPTX } DlTargetKind;

typedef struct DlCodegenOptions {
  DlTargetKind target;
  const char *gpu_arch; /* "sm_80" (default) or "sm_90", NVPTX only */
  int opt_level;        /* 0..3, default 3 */
  const char *prefix;   /* symbol prefix, default: the model name */
  int compile_threads;  /* JIT: threads LLVM optimises and compiles on, 0: one per core */
} DlCodegenOptions;

/* Textual outputs, allocated in cc's arena.  NULL on failure (diagnostic
 * recorded). */
char *dl_emit_llvm_ir(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts);
char *dl_emit_asm(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts);
char *dl_emit_ptx(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts);
/* An ELF object for the host with the kernels, entries and "<prefix>_program". */
bool dl_emit_object(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts,
                    const char *path);
/* The C header that goes with the object file. */
char *dl_emit_c_header(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts);

/* The runtime's code for a parameter initialiser (the program table's
 * `init`). */
DlrtInit dl_runtime_init(DlInitKind k);

/* In-process JIT.  The returned DlrtProgram lives as long as the DlJit. */
typedef struct DlJit DlJit;
DlJit *dl_jit_compile(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts,
                      const DlrtProgram **program);
void dl_jit_free(DlJit *jit);
/* The number of threads LLVM compiled the module on (1 for a small module
 * or one compile thread). */
int dl_jit_threads(const DlJit *jit);

#endif
