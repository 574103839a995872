/* cg_jit.c - in-process compilation with ORC LLJIT.
 *
 * The module is built and optimised exactly as for an object file (host CPU,
 * O3), handed to an LLJIT whose main JITDylib also sees the symbols of the
 * process (expf, logf, powf ... that LLVM's math intrinsics lower to) and the
 * runtime's dlrt_parallel_for (which an object file gets from libdlrt.a), and
 * the "<prefix>_program" table is looked up: from then on the program is
 * ordinary data and function pointers, as it would be after linking.
 */
#include "cg_internal.h"
#include "cg_testing.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include <stdlib.h>

struct DlJit {
  LLVMOrcLLJITRef lljit;
};

static bool jit_failed(DlCompiler *cc, LLVMErrorRef err, const char *what) {
  if (!err) return false;
  cg_report_llvm_error(cc, err, what);
  return true;
}

static DlJit *jit_compile(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts,
                          bool grid_kernels, const DlrtProgram **program) {
  *program = NULL;
  if (opts && opts->target != DL_TARGET_CPU) {
    dl_error(cc, DL_NOLOC, "the JIT runs on the host CPU only");
    return NULL;
  }
  CgOptions o;
  CgTarget t;
  if (!prog || !cg_options(cc, prog, opts, DL_TARGET_CPU, &o)) return NULL;
  o.grid_kernels = grid_kernels;
  if (!cg_target_machine(cc, &o, &t)) return NULL;

  /* The module must live in the context the JIT will own. */
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMModuleRef mod = cg_build_module(cc, prog, &o, &t, LLVMOrcThreadSafeContextGetContext(tsc));
  LLVMDisposeTargetMachine(t.tm);
  if (!mod) {
    LLVMOrcDisposeThreadSafeContext(tsc);
    return NULL;
  }
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
  LLVMOrcDisposeThreadSafeContext(tsc); /* the module keeps its context alive */

  LLVMOrcJITTargetMachineBuilderRef jtmb = NULL;
  if (jit_failed(cc, LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb),
                 "cannot set up the JIT for the host")) {
    LLVMOrcDisposeThreadSafeModule(tsm);
    return NULL;
  }
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb);
  LLVMOrcLLJITRef lljit = NULL;
  if (jit_failed(cc, LLVMOrcCreateLLJIT(&lljit, builder), "cannot create the JIT")) {
    LLVMOrcDisposeThreadSafeModule(tsm);
    return NULL;
  }
  LLVMOrcJITDylibRef main_dylib = LLVMOrcLLJITGetMainJITDylib(lljit);
  LLVMOrcDefinitionGeneratorRef process_syms = NULL;
  if (jit_failed(cc,
                 LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
                     &process_syms, LLVMOrcLLJITGetGlobalPrefix(lljit), NULL, NULL),
                 "cannot make the process's symbols visible to the JIT")) {
    LLVMOrcDisposeThreadSafeModule(tsm);
    LLVMOrcDisposeLLJIT(lljit);
    return NULL;
  }
  LLVMOrcJITDylibAddGenerator(main_dylib, process_syms);
  /* The runtime's thread pool entry, by address: dlcc links the runtime
   * statically, and its symbols are not exported from the executable. */
  LLVMOrcCSymbolMapPair runtime_sym = {
      LLVMOrcLLJITMangleAndIntern(lljit, "dlrt_parallel_for"),
      {(LLVMOrcExecutorAddress)(uintptr_t)&dlrt_parallel_for,
       {LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable, 0}}};
  if (jit_failed(cc, LLVMOrcJITDylibDefine(main_dylib, LLVMOrcAbsoluteSymbols(&runtime_sym, 1)),
                 "cannot give the JIT the runtime's symbols")) {
    LLVMOrcDisposeThreadSafeModule(tsm);
    LLVMOrcDisposeLLJIT(lljit);
    return NULL;
  }
  /* Ownership of tsm passes to the JIT even when this fails. */
  if (jit_failed(cc, LLVMOrcLLJITAddLLVMIRModule(lljit, main_dylib, tsm),
                 "the JIT rejected the module")) {
    LLVMOrcDisposeLLJIT(lljit);
    return NULL;
  }
  const char *name = dl_arena_printf(cc->arena, "%s_program", o.prefix);
  LLVMOrcExecutorAddress addr = 0;
  if (jit_failed(cc, LLVMOrcLLJITLookup(lljit, &addr, name), "JIT compilation failed")) {
    LLVMOrcDisposeLLJIT(lljit);
    return NULL;
  }
  DlJit *jit = malloc(sizeof *jit);
  if (!jit) {
    dl_error(cc, DL_NOLOC, "out of memory");
    LLVMOrcDisposeLLJIT(lljit);
    return NULL;
  }
  jit->lljit = lljit;
  *program = (const DlrtProgram *)(uintptr_t)addr;
  return jit;
}

DlJit *dl_jit_compile(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts,
                      const DlrtProgram **program) {
  return jit_compile(cc, prog, opts, false, program);
}

DlJit *cg_jit_compile_grid_kernels(DlCompiler *cc, const DlProgram *prog,
                                   const DlCodegenOptions *opts, const DlrtProgram **program) {
  return jit_compile(cc, prog, opts, true, program);
}

void dl_jit_free(DlJit *jit) {
  if (!jit) return;
  /* Disposal can only fail if pending materialisations fail; there are none
   * after the lookup, and there is nowhere to report to. */
  LLVMErrorRef err = LLVMOrcDisposeLLJIT(jit->lljit);
  if (err) LLVMConsumeError(err);
  free(jit);
}
