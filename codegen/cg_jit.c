/* cg_jit.c - in-process compilation with ORC LLJIT.
 *
 * The module is built exactly as for an object file (host CPU, O3), then
 * optimised and compiled to object files on several threads (cg_parallel.c),
 * which are handed to an LLJIT whose main JITDylib also sees the symbols of
 * the process (expf, logf, powf ... that LLVM's math intrinsics lower to) and
 * the runtime's dlrt_parallel_for (which an object file gets from
 * libdlrt.a).  The JIT only links; looking up the "<prefix>_program" table
 * finishes that, and from then on the program is ordinary data and function
 * pointers, as it would be after linking.
 */
#include "cg_internal.h"
#include "cg_testing.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include <stdlib.h>

struct DlJit {
  LLVMOrcLLJITRef lljit;
  int threads; /* LLVM compiled the module on this many threads */
};

static bool jit_failed(DlCompiler *cc, LLVMErrorRef err, const char *what) {
  if (!err) return false;
  cg_report_llvm_error(cc, err, what);
  return true;
}

static void dispose_objects(LLVMMemoryBufferRef *objects, int from, int to) {
  for (int i = from; i < to; i++)
    LLVMDisposeMemoryBuffer(objects[i]);
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

  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = cg_build_module(cc, prog, &o, &t, ctx);
  LLVMDisposeTargetMachine(t.tm);
  LLVMMemoryBufferRef objects[CG_PARALLEL_MAX_OBJECTS] = {NULL};
  int threads_used = 0;
  int nobjects =
      mod ? cg_compile_parallel(cc, mod, &o, o.compile_threads, objects, &threads_used) : 0;
  if (mod) LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  if (nobjects == 0) return NULL;

  LLVMOrcJITTargetMachineBuilderRef jtmb = NULL;
  if (jit_failed(cc, LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb),
                 "cannot set up the JIT for the host")) {
    dispose_objects(objects, 0, nobjects);
    return NULL;
  }
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb);
  LLVMOrcLLJITRef lljit = NULL;
  if (jit_failed(cc, LLVMOrcCreateLLJIT(&lljit, builder), "cannot create the JIT")) {
    dispose_objects(objects, 0, nobjects);
    return NULL;
  }
  LLVMOrcJITDylibRef main_dylib = LLVMOrcLLJITGetMainJITDylib(lljit);
  LLVMOrcDefinitionGeneratorRef process_syms = NULL;
  if (jit_failed(cc,
                 LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
                     &process_syms, LLVMOrcLLJITGetGlobalPrefix(lljit), NULL, NULL),
                 "cannot make the process's symbols visible to the JIT")) {
    dispose_objects(objects, 0, nobjects);
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
    dispose_objects(objects, 0, nobjects);
    LLVMOrcDisposeLLJIT(lljit);
    return NULL;
  }
  /* Ownership of each object passes to the JIT even when adding fails. */
  for (int i = 0; i < nobjects; i++) {
    if (jit_failed(cc, LLVMOrcLLJITAddObjectFile(lljit, main_dylib, objects[i]),
                   "the JIT rejected the compiled code")) {
      dispose_objects(objects, i + 1, nobjects);
      LLVMOrcDisposeLLJIT(lljit);
      return NULL;
    }
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
  jit->threads = threads_used;
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

int dl_jit_threads(const DlJit *jit) {
  return jit ? jit->threads : 0;
}

void dl_jit_free(DlJit *jit) {
  if (!jit) return;
  /* Disposal can only fail if pending materialisations fail; there are none
   * after the lookup, and there is nowhere to report to. */
  LLVMErrorRef err = LLVMOrcDisposeLLJIT(jit->lljit);
  if (err) LLVMConsumeError(err);
  free(jit);
}
