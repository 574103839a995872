/* cg_testing.h - a test hook of the code generator (not for the driver).
 *
 * The NVPTX kernels cannot run where there is no GPU, but their logic (the
 * grid-stride loop, recovering multi-indices by div/mod, the per-element
 * matmul, reduction and softmax loops, exp/log/pow built from exp2/log2) is
 * target independent.  This JIT-compiles exactly those kernels for the host
 * instead of the CPU loop nests, each running as a single thread of a single
 * block, with the usual entries and DlrtProgram table, so tests can compare
 * them with the reference interpreter.
 */
#ifndef DL_CG_TESTING_H
#define DL_CG_TESTING_H

#include "codegen.h"

DlJit *cg_jit_compile_grid_kernels(DlCompiler *cc, const DlProgram *prog,
                                   const DlCodegenOptions *opts, const DlrtProgram **program);

#endif
