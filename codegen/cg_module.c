/* cg_module.c - the module around the kernels: target machines, entry
 * functions, the DlrtProgram table, the O3 pipeline, and the textual and
 * object outputs (LLVM IR, assembly, ELF object, PTX, C header).
 */
#include "cg_internal.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The table below is emitted as LLVM constants of these exact layouts. */
_Static_assert(sizeof(DlrtTensor) == 104, "DlrtTensor layout changed: update tensor_type()");
_Static_assert(offsetof(DlrtTensor, data) == 96, "DlrtTensor layout changed");
_Static_assert(sizeof(DlrtProgram) == 64, "DlrtProgram layout changed: update program_type()");
_Static_assert(offsetof(DlrtProgram, train_step) == 56, "DlrtProgram layout changed");

/* ---- options ------------------------------------------------------------------ */

const char *cg_prefix(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts) {
  const char *raw = opts && opts->prefix && opts->prefix[0] ? opts->prefix : prog->g->name;
  if (!raw || !raw[0]) raw = "model";
  size_t len = strlen(raw);
  char *s = dl_arena_alloc(cc->arena, len + 2);
  size_t j = 0;
  if (isdigit((unsigned char)raw[0])) s[j++] = '_';
  for (size_t i = 0; i < len; i++)
    s[j++] = isalnum((unsigned char)raw[i]) ? raw[i] : '_';
  s[j] = '\0';
  return s;
}

bool cg_options(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts,
                DlTargetKind target, CgOptions *out) {
  *out = (CgOptions){.target = target, .opt_level = 3, .gpu_arch = "sm_80"};
  if (opts) {
    out->opt_level = opts->opt_level;
    out->compile_threads = opts->compile_threads;
    if (opts->gpu_arch && opts->gpu_arch[0]) out->gpu_arch = opts->gpu_arch;
  }
  out->prefix = cg_prefix(cc, prog, opts);
  if (out->compile_threads < 0) {
    dl_error(cc, DL_NOLOC, "compile threads must be 0 (one per core) or more, not %d",
             out->compile_threads);
    return false;
  }
  if (out->opt_level < 0 || out->opt_level > 3) {
    dl_error(cc, DL_NOLOC, "optimisation level must be 0 to 3, not %d", out->opt_level);
    return false;
  }
  if (target == DL_TARGET_NVPTX) {
    const char *a = out->gpu_arch;
    bool ok = strncmp(a, "sm_", 3) == 0 && isdigit((unsigned char)a[3]);
    for (const char *p = a + 3; ok && *p; p++)
      ok = isdigit((unsigned char)*p) || (p[1] == '\0' && *p == 'a');
    if (!ok) {
      dl_error(cc, DL_NOLOC, "GPU architecture '%s' is not of the form sm_NN (e.g. sm_80)", a);
      return false;
    }
  }
  return true;
}

/* ---- target machines ----------------------------------------------------------- */

static char *take_llvm_message(DlCompiler *cc, char *msg) {
  char *copy = dl_arena_strdup(cc->arena, msg ? msg : "(no message)");
  if (msg) LLVMDisposeMessage(msg);
  return copy;
}

void cg_report_llvm_error(DlCompiler *cc, LLVMErrorRef err, const char *what) {
  char *msg = LLVMGetErrorMessage(err);
  dl_error(cc, DL_NOLOC, "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
}

static LLVMCodeGenOptLevel codegen_level(int opt_level) {
  return opt_level >= 3   ? LLVMCodeGenLevelAggressive
         : opt_level == 2 ? LLVMCodeGenLevelDefault
         : opt_level == 1 ? LLVMCodeGenLevelLess
                          : LLVMCodeGenLevelNone;
}

bool cg_target_machine(DlCompiler *cc, const CgOptions *o, CgTarget *t) {
  *t = (CgTarget){NULL, NULL, NULL, NULL};
  if (o->target == DL_TARGET_CPU) {
    if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter()) {
      dl_error(cc, DL_NOLOC, "LLVM has no code generator for the host CPU");
      return false;
    }
    t->triple = take_llvm_message(cc, LLVMGetDefaultTargetTriple());
    t->cpu = take_llvm_message(cc, LLVMGetHostCPUName());
    t->features = take_llvm_message(cc, LLVMGetHostCPUFeatures());
  } else {
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTarget();
    LLVMInitializeNVPTXTargetMC();
    LLVMInitializeNVPTXAsmPrinter();
    t->triple = "nvptx64-nvidia-cuda";
    t->cpu = o->gpu_arch;
    /* LLVM picks the lowest PTX ISA version the architecture needs (7.0 for
     * sm_80, 7.8 for sm_90), which every ptxas that knows the arch accepts. */
    t->features = "";
  }
  LLVMTargetRef target;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(t->triple, &target, &msg)) {
    dl_error(cc, DL_NOLOC, "no LLVM target for %s: %s", t->triple, take_llvm_message(cc, msg));
    return false;
  }
  t->tm = LLVMCreateTargetMachine(target, t->triple, t->cpu, t->features,
                                  codegen_level(o->opt_level), LLVMRelocPIC, LLVMCodeModelDefault);
  if (!t->tm) {
    dl_error(cc, DL_NOLOC, "cannot create an LLVM target machine for %s (%s)", t->triple, t->cpu);
    return false;
  }
  return true;
}

/* ---- the table of named tensors ------------------------------------------------- */

DlrtInit dl_runtime_init(DlInitKind k) {
  switch (k) {
  case DL_INIT_ZERO: return DLRT_INIT_ZERO;
  case DL_INIT_CONST: return DLRT_INIT_CONST;
  case DL_INIT_UNIFORM: return DLRT_INIT_UNIFORM;
  case DL_INIT_NORMAL: return DLRT_INIT_NORMAL;
  case DL_INIT_DATA: return DLRT_INIT_DATA;
  }
  return DLRT_INIT_ZERO;
}

static void push_tensor(DlCompiler *cc, CgTensor **v, int *n, int *cap, CgTensor t) {
  DL_ARENA_GROW(cc->arena, *v, *n, *cap);
  (*v)[(*n)++] = t;
}

int cg_tensors(DlCompiler *cc, const DlProgram *prog, CgTensor **out) {
  const DlGraph *g = prog->g;
  CgTensor *v = NULL;
  int n = 0, cap = 0;
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    const DlNode *nd = dl_node(g, id);
    if (prog->offset[id] < 0) continue;
    CgTensor t = {.node = id, .shape = nd->shape, .offset = prog->offset[id], .name = nd->name};
    switch (nd->op) {
    case DL_OP_PARAM:
      t.role = nd->param_role == DL_PARAM_STATE ? DLRT_ROLE_STATE : DLRT_ROLE_PARAM;
      t.init = dl_runtime_init(nd->attr.param.kind);
      t.a = nd->attr.param.a;
      t.b = nd->attr.param.b;
      if (t.init == DLRT_INIT_DATA) t.data = nd->attr.param.data;
      break;
    case DL_OP_INPUT:
      t.role = nd->attr.input.role == DL_ROLE_TARGET ? DLRT_ROLE_TARGET : DLRT_ROLE_INPUT;
      break;
    case DL_OP_CONST:
      if (!prog->live[id]) continue;
      t.role = DLRT_ROLE_CONST;
      t.name = dl_arena_printf(cc->arena, "const.%d", (int)id);
      t.init = nd->attr.konst.data ? DLRT_INIT_DATA : DLRT_INIT_CONST;
      t.a = nd->attr.konst.value;
      t.data = nd->attr.konst.data;
      break;
    case DL_OP_HYPER:
      t.role = DLRT_ROLE_HYPER;
      t.init = DLRT_INIT_CONST;
      t.a = nd->attr.hyper.value;
      break;
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
    case DL_OP_MATMUL:
    case DL_OP_SUM:
    case DL_OP_MEAN:
    case DL_OP_EXPAND:
    case DL_OP_RESHAPE:
    case DL_OP_SOFTMAX:
    case DL_OP_LOG_SOFTMAX:
    case DL_OP_MAXIMUM:
    case DL_OP_GT:
    case DL_OP_EQ:
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
    case DL_OP_DROPOUT:
    case DL_OP_ASSIGN: continue; /* intermediates are not named tensors */
    }
    if (!t.name) t.name = dl_arena_printf(cc->arena, "%s.%d", dl_op_info[nd->op].name, (int)id);
    push_tensor(cc, &v, &n, &cap, t);
  }
  if (g->output != DL_NONE && prog->offset[g->output] >= 0) {
    const DlNode *nd = dl_node(g, g->output);
    push_tensor(cc, &v, &n, &cap,
                (CgTensor){.node = g->output,
                           .name = nd->name ? nd->name : "out",
                           .role = DLRT_ROLE_OUTPUT,
                           .shape = nd->shape,
                           .offset = prog->offset[g->output]});
  }
  if (g->loss != DL_NONE && prog->offset[g->loss] >= 0) {
    push_tensor(cc, &v, &n, &cap,
                (CgTensor){.node = g->loss,
                           .name = "loss",
                           .role = DLRT_ROLE_LOSS,
                           .shape = dl_node(g, g->loss)->shape,
                           .offset = prog->offset[g->loss]});
  }
  for (DlNodeId id = 0; g->grad && id < g->ngrad && id < g->nnodes; id++) {
    const DlNode *nd = dl_node(g, id);
    DlNodeId gr = g->grad[id];
    if (nd->op != DL_OP_PARAM || gr == DL_NONE || prog->offset[gr] < 0) continue;
    push_tensor(cc, &v, &n, &cap,
                (CgTensor){.node = gr,
                           .name = nd->name ? nd->name : "param",
                           .role = DLRT_ROLE_GRAD,
                           .shape = nd->shape,
                           .offset = prog->offset[gr]});
  }
  *out = v;
  return n;
}

/* ---- the module ---------------------------------------------------------------- */

static LLVMValueRef i64c(Cg *cg, int64_t v) {
  return LLVMConstInt(cg->t_i64, (unsigned long long)v, true);
}
static LLVMValueRef i32c(Cg *cg, int32_t v) {
  return LLVMConstInt(cg->t_i32, (unsigned long long)(int64_t)v, true);
}

static LLVMValueRef private_constant(Cg *cg, LLVMValueRef init, const char *name, unsigned align) {
  LLVMValueRef gv = LLVMAddGlobal(cg->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(gv, init);
  LLVMSetGlobalConstant(gv, true);
  LLVMSetLinkage(gv, LLVMPrivateLinkage);
  LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
  if (align) LLVMSetAlignment(gv, align);
  return gv;
}

static LLVMValueRef const_cstring(Cg *cg, const char *s) {
  return private_constant(cg, LLVMConstStringInContext2(cg->ctx, s, strlen(s), false), ".str", 1);
}

static LLVMValueRef const_floats(Cg *cg, const float *data, int64_t count) {
  LLVMValueRef *elems = dl_arena_alloc(cg->cc->arena, sizeof(LLVMValueRef) * (size_t)count);
  for (int64_t i = 0; i < count; i++)
    elems[i] = LLVMConstReal(cg->t_f32, data[i]);
  return private_constant(cg, LLVMConstArray2(cg->t_f32, elems, (uint64_t)count), ".data", 16);
}

/* struct DlrtTensor and struct DlrtProgram of runtime/dlrt.h. */
static LLVMTypeRef tensor_type(Cg *cg) {
  LLVMTypeRef t = LLVMStructCreateNamed(cg->ctx, "DlrtTensor");
  LLVMTypeRef f[] = {cg->t_ptr,
                     cg->t_i32,
                     cg->t_i32,
                     LLVMArrayType2(cg->t_i64, DLRT_MAX_RANK),
                     cg->t_i64,
                     cg->t_i32,
                     cg->t_i32,
                     LLVMDoubleTypeInContext(cg->ctx),
                     LLVMDoubleTypeInContext(cg->ctx),
                     cg->t_ptr};
  LLVMStructSetBody(t, f, sizeof f / sizeof f[0], false);
  return t;
}

static LLVMTypeRef program_type(Cg *cg) {
  LLVMTypeRef t = LLVMStructCreateNamed(cg->ctx, "DlrtProgram");
  LLVMTypeRef f[] = {cg->t_i32, cg->t_i32, cg->t_ptr, cg->t_i64, cg->t_i64,
                     cg->t_ptr, cg->t_ptr, cg->t_ptr, cg->t_ptr};
  LLVMStructSetBody(t, f, sizeof f / sizeof f[0], false);
  return t;
}

/* The emitted structs must have the C layout on this target (they are read
 * by C code compiled for the same host). */
static bool check_layout(Cg *cg, LLVMTargetMachineRef tm, LLVMTypeRef tensor_ty,
                         LLVMTypeRef program_ty) {
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
  bool ok = LLVMABISizeOfType(td, tensor_ty) == sizeof(DlrtTensor) &&
            LLVMOffsetOfElement(td, tensor_ty, 3) == offsetof(DlrtTensor, dims) &&
            LLVMOffsetOfElement(td, tensor_ty, 4) == offsetof(DlrtTensor, offset) &&
            LLVMOffsetOfElement(td, tensor_ty, 7) == offsetof(DlrtTensor, a) &&
            LLVMOffsetOfElement(td, tensor_ty, 9) == offsetof(DlrtTensor, data) &&
            LLVMABISizeOfType(td, program_ty) == sizeof(DlrtProgram) &&
            LLVMOffsetOfElement(td, program_ty, 3) == offsetof(DlrtProgram, mem_floats) &&
            LLVMOffsetOfElement(td, program_ty, 5) == offsetof(DlrtProgram, tensors) &&
            LLVMOffsetOfElement(td, program_ty, 8) == offsetof(DlrtProgram, train_step);
  LLVMDisposeTargetData(td);
  if (!ok)
    dl_error(cg->cc, DL_NOLOC,
             "internal error: the LLVM layout of DlrtTensor/DlrtProgram differs from C's");
  return ok;
}

static void set_cpu_attrs(Cg *cg, LLVMValueRef fn) {
  const char *kv[2][2] = {{"target-cpu", cg->cpu}, {"target-features", cg->features}};
  for (int i = 0; i < 2; i++)
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(cg->ctx, kv[i][0], (unsigned)strlen(kv[i][0]),
                                                      kv[i][1], (unsigned)strlen(kv[i][1])));
  unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(cg->ctx, nounwind, 0));
}

/* void <prefix>_entry_<name>(float *mem, i64 n, DlrtPool *pool): the kernels
 * of the entry in order, each on the buffers at its planned offsets. */
static LLVMValueRef emit_entry(Cg *cg, DlEntryKind k) {
  const DlProgram *prog = cg->prog;
  LLVMTypeRef params[3] = {cg->t_ptr, cg->t_i64, cg->t_ptr};
  LLVMTypeRef fty = LLVMFunctionType(cg->t_void, params, 3, false);
  const char *name = dl_arena_printf(cg->cc->arena, "%s_entry_%s", cg->prefix, dl_entry_names[k]);
  LLVMValueRef fn = LLVMAddFunction(cg->mod, name, fty);
  set_cpu_attrs(cg, fn);
  /* A straight line of calls, run once per step: there is nothing for O3
   * to gain, and the LSTM's three entries (2,209 calls) took a quarter of its
   * JIT time when optimised.  optnone (which needs noinline) also gives
   * them LLVM's fast instruction selector. */
  static const char *const plain[] = {"optnone", "noinline"};
  for (int i = 0; i < 2; i++)
    LLVMAddAttributeAtIndex(
        fn, LLVMAttributeFunctionIndex,
        LLVMCreateEnumAttribute(cg->ctx,
                                LLVMGetEnumAttributeKindForName(plain[i], strlen(plain[i])), 0));
  LLVMValueRef mem = LLVMGetParam(fn, 0), n = LLVMGetParam(fn, 1), pool = LLVMGetParam(fn, 2);
  LLVMSetValueName2(mem, "mem", 3);
  LLVMSetValueName2(n, "n", 1);
  LLVMSetValueName2(pool, "pool", 4);
  LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
  const DlEntry *e = &prog->entry[k];
  for (int i = 0; i < e->nkernels; i++) {
    int kk = e->kernels[i];
    const DlKernel *kern = &prog->kernels[kk];
    DlNodeId bufs[1 + DL_KERNEL_MAX_OPERANDS];
    int nbufs = 1 + cg_kernel_buffers(prog, kk, bufs + 1);
    bufs[0] = dl_buffer_of(prog, kern->root);
    int64_t shift = cg_slice_shift(prog, kk, cg->target);
    LLVMValueRef call_args[DL_KERNEL_MAX_OPERANDS + 3];
    for (int j = 0; j < nbufs; j++) {
      int64_t off = prog->offset[bufs[j]];
      if (off < 0) {
        dl_error(cg->cc, dl_node(cg->g, kern->root)->loc,
                 "internal error: node %%%d has no buffer but kernel k%d uses it", (int)bufs[j],
                 kk);
        LLVMBuildRetVoid(cg->b);
        return NULL;
      }
      LLVMValueRef idx = i64c(cg, off + (j == 1 && shift > 0 ? shift : 0));
      call_args[j] = LLVMBuildInBoundsGEP2(cg->b, cg->t_f32, mem, &idx, 1, "");
    }
    call_args[nbufs] = n;
    call_args[nbufs + 1] = pool;
    LLVMBuildCall2(cg->b, LLVMGlobalGetValueType(cg->kernel[kk]), cg->kernel[kk], call_args,
                   (unsigned)(nbufs + 2), "");
  }
  LLVMBuildRetVoid(cg->b);
  return fn;
}

static LLVMValueRef emit_tensor(Cg *cg, LLVMTypeRef tensor_ty, const CgTensor *t) {
  LLVMValueRef dims[DLRT_MAX_RANK];
  for (int i = 0; i < DLRT_MAX_RANK; i++)
    dims[i] = i64c(cg, i < t->shape.rank ? t->shape.d[i] : 0);
  LLVMValueRef data = LLVMConstPointerNull(cg->t_ptr);
  if (t->data) data = const_floats(cg, t->data, dl_shape_numel(&t->shape, 1));
  LLVMTypeRef f64 = LLVMDoubleTypeInContext(cg->ctx);
  LLVMValueRef f[] = {const_cstring(cg, t->name),
                      i32c(cg, t->role),
                      i32c(cg, t->shape.rank),
                      LLVMConstArray2(cg->t_i64, dims, DLRT_MAX_RANK),
                      i64c(cg, t->offset),
                      i32c(cg, t->init),
                      i32c(cg, 0),
                      LLVMConstReal(f64, t->a),
                      LLVMConstReal(f64, t->b),
                      data};
  return LLVMConstNamedStruct(tensor_ty, f, sizeof f / sizeof f[0]);
}

/* const DlrtProgram <prefix>_program = {...}. */
static bool emit_program_table(Cg *cg, LLVMTargetMachineRef tm, LLVMValueRef *entries) {
  LLVMTypeRef tensor_ty = tensor_type(cg), program_ty = program_type(cg);
  if (!check_layout(cg, tm, tensor_ty, program_ty)) return false;
  CgTensor *ts;
  int nt = cg_tensors(cg->cc, cg->prog, &ts);
  LLVMValueRef tensors = LLVMConstPointerNull(cg->t_ptr);
  if (nt > 0) {
    LLVMValueRef *elems = dl_arena_alloc(cg->cc->arena, sizeof(LLVMValueRef) * (size_t)nt);
    for (int i = 0; i < nt; i++)
      elems[i] = emit_tensor(cg, tensor_ty, &ts[i]);
    const char *name = dl_arena_printf(cg->cc->arena, "%s_tensors", cg->prefix);
    tensors = private_constant(cg, LLVMConstArray2(tensor_ty, elems, (uint64_t)nt), name, 8);
  }
  const char *model = cg->g->name && cg->g->name[0] ? cg->g->name : cg->prefix;
  LLVMValueRef f[] = {
      i32c(cg, DLRT_ABI_VERSION),
      i32c(cg, nt),
      const_cstring(cg, model),
      i64c(cg, cg->prog->mem_floats),
      i64c(cg, cg->prog->max_batch),
      tensors,
      entries[DL_ENTRY_FORWARD],
      entries[DL_ENTRY_GRAD] ? entries[DL_ENTRY_GRAD] : LLVMConstPointerNull(cg->t_ptr),
      entries[DL_ENTRY_TRAIN] ? entries[DL_ENTRY_TRAIN] : LLVMConstPointerNull(cg->t_ptr),
  };
  const char *name = dl_arena_printf(cg->cc->arena, "%s_program", cg->prefix);
  LLVMValueRef gv = LLVMAddGlobal(cg->mod, program_ty, name);
  LLVMSetInitializer(gv, LLVMConstNamedStruct(program_ty, f, sizeof f / sizeof f[0]));
  LLVMSetGlobalConstant(gv, true);
  LLVMSetAlignment(gv, 8);
  return true;
}

/* forward always exists (DlrtProgram.forward is never NULL), even with no
 * kernels; grad and train_step only where the plan has them. */
static bool entry_emitted(const DlProgram *prog, DlEntryKind k) {
  return k == DL_ENTRY_FORWARD || prog->entry[k].present;
}

static bool verify_module(DlCompiler *cc, LLVMModuleRef mod) {
  char *msg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
    dl_error(cc, DL_NOLOC, "internal error: the generated LLVM module is invalid: %s",
             take_llvm_message(cc, msg));
    return false;
  }
  if (msg) LLVMDisposeMessage(msg);
  return true;
}

char *cg_optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, int level) {
  if (level == 0) return NULL;
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, level >= 2);
  LLVMPassBuilderOptionsSetSLPVectorization(po, level >= 2);
  LLVMPassBuilderOptionsSetLoopInterleaving(po, level >= 2);
  LLVMPassBuilderOptionsSetLoopUnrolling(po, true);
  char pipeline[32];
  snprintf(pipeline, sizeof pipeline, "default<O%d>", level);
  LLVMErrorRef err = LLVMRunPasses(mod, pipeline, tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (!err) return NULL;
  char *msg = LLVMGetErrorMessage(err);
  char *copy = strdup(msg);
  LLVMDisposeErrorMessage(msg);
  return copy;
}

/* The most work (cg_kernel_work, summed over a function's calls) for which
 * a kernel's loops stay plain. */
#define CG_PLAIN_WORK 4096

/* same[k]: the first kernel whose function kernel k can call (itself when
 * no earlier kernel has its signature).  Hashed, then compared. */
static int *same_kernels(DlCompiler *cc, const DlProgram *prog, DlTargetKind target) {
  int nk = prog->nkernels;
  int *same = malloc(sizeof(int) * (size_t)(nk + 1));
  const char **sig = malloc(sizeof(char *) * (size_t)(nk + 1));
  size_t cap = 16;
  while (cap < 2 * (size_t)nk)
    cap <<= 1;
  int *table = malloc(sizeof(int) * cap);
  for (size_t i = 0; i < cap; i++)
    table[i] = -1;
  for (int k = 0; k < nk; k++) {
    sig[k] = cg_kernel_signature(prog, k, target, cc->arena);
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *c = sig[k]; *c; c++)
      h = (h ^ (unsigned char)*c) * 1099511628211ull;
    size_t at = (size_t)h & (cap - 1);
    while (table[at] >= 0 && strcmp(sig[table[at]], sig[k]) != 0)
      at = (at + 1) & (cap - 1);
    if (table[at] < 0) table[at] = k;
    same[k] = table[at];
  }
  free(table);
  free(sig);
  return same;
}

LLVMModuleRef cg_build_module(DlCompiler *cc, const DlProgram *prog, const CgOptions *o,
                              const CgTarget *t, LLVMContextRef ctx) {
  const DlGraph *g = prog->g;
  Cg cg = {
      .cc = cc,
      .prog = prog,
      .g = g,
      .target = o->target,
      .grid_kernels = o->target == DL_TARGET_NVPTX || o->grid_kernels,
      .prefix = o->prefix,
      .cpu = t->cpu,
      .features = t->features,
      .ctx = ctx,
  };
  cg.mod = LLVMModuleCreateWithNameInContext(o->prefix, ctx);
  LLVMSetTarget(cg.mod, t->triple);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(t->tm);
  LLVMSetModuleDataLayout(cg.mod, td);
  LLVMDisposeTargetData(td);
  cg.b = LLVMCreateBuilderInContext(ctx);
  cg.t_f32 = LLVMFloatTypeInContext(ctx);
  cg.t_i64 = LLVMInt64TypeInContext(ctx);
  cg.t_i32 = LLVMInt32TypeInContext(ctx);
  cg.t_ptr = LLVMPointerTypeInContext(ctx, 0);
  cg.t_void = LLVMVoidTypeInContext(ctx);
  cg.kernel = dl_arena_alloc(cc->arena, sizeof(LLVMValueRef) * (size_t)(prog->nkernels + 1));
  int *same = same_kernels(cc, prog, o->target);
  /* A function whose calls together do little work (a few thousand
   * elements, less where it computes exp or tanh) runs in microseconds
   * either way, while vectorised and unrolled loops cost milliseconds of
   * JIT time each: its loops stay plain (the MLP's loss and bias kernels;
   * not an LSTM step's gates, one function called 32 times). */
  int64_t *work = calloc((size_t)prog->nkernels + 1, sizeof(int64_t));
  bool *plain = dl_arena_alloc(cc->arena, sizeof(bool) * (size_t)(prog->nkernels + 1));
  for (int k = 0; k < prog->nkernels; k++)
    work[same[k]] += cg_kernel_work(prog, k);
  for (int k = 0; k < prog->nkernels; k++)
    plain[k] = work[same[k]] <= CG_PLAIN_WORK;
  free(work);
  cg.plain = plain;

  bool ok = true;
  for (int k = 0; ok && k < DL_ENTRY_COUNT; k++) {
    if (!entry_emitted(prog, (DlEntryKind)k)) continue;
    const DlEntry *e = &prog->entry[k];
    for (int i = 0; ok && i < e->nkernels; i++) {
      int kk = e->kernels[i];
      if (kk < 0 || kk >= prog->nkernels) {
        dl_error(cc, DL_NOLOC, "internal error: entry %s lists kernel %d of %d", dl_entry_names[k],
                 kk, prog->nkernels);
        ok = false;
      } else if (!cg.kernel[kk]) {
        if (!cg.kernel[same[kk]]) ok = cg_emit_kernel(&cg, same[kk]);
        cg.kernel[kk] = cg.kernel[same[kk]];
      }
    }
  }
  if (ok && o->target == DL_TARGET_CPU) {
    /* Kernels are called from up to three entries: inlining them would
     * compile each up to three times (JIT time) for no measurable gain, as
     * every kernel is a loop nest over whole tensors. */
    unsigned noinline = LLVMGetEnumAttributeKindForName("noinline", 8);
    for (int k = 0; k < prog->nkernels; k++)
      if (cg.kernel[k] && same[k] == k)
        LLVMAddAttributeAtIndex(cg.kernel[k], LLVMAttributeFunctionIndex,
                                LLVMCreateEnumAttribute(ctx, noinline, 0));
    LLVMValueRef entries[DL_ENTRY_COUNT] = {NULL};
    for (int k = 0; ok && k < DL_ENTRY_COUNT; k++) {
      if (entry_emitted(prog, (DlEntryKind)k)) {
        entries[k] = emit_entry(&cg, (DlEntryKind)k);
        ok = entries[k] != NULL;
      }
    }
    ok = ok && emit_program_table(&cg, t->tm, entries);
  }
  free(same);
  LLVMDisposeBuilder(cg.b);
  ok = ok && verify_module(cc, cg.mod);
  if (!ok) {
    LLVMDisposeModule(cg.mod);
    return NULL;
  }
  return cg.mod;
}

/* ---- public outputs ------------------------------------------------------------ */

/* Build the optimised module for a target in a fresh context and hand it to
 * `use`, which turns it into the requested output. */
typedef bool (*CgUse)(DlCompiler *cc, LLVMModuleRef mod, const CgTarget *t, void *user);

static bool with_module(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts,
                        DlTargetKind target, CgUse use, void *user) {
  CgOptions o;
  CgTarget t;
  if (!prog || !cg_options(cc, prog, opts, target, &o) || !cg_target_machine(cc, &o, &t))
    return false;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = cg_build_module(cc, prog, &o, &t, ctx);
  char *failed = mod ? cg_optimise(mod, t.tm, o.opt_level) : NULL;
  if (failed) dl_error(cc, DL_NOLOC, "internal error: LLVM optimisation failed: %s", failed);
  bool ok = mod && !failed && use(cc, mod, &t, user);
  free(failed);
  if (mod) LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(t.tm);
  return ok;
}

static bool use_print_ir(DlCompiler *cc, LLVMModuleRef mod, const CgTarget *t, void *user) {
  (void)t;
  *(char **)user = take_llvm_message(cc, LLVMPrintModuleToString(mod));
  return true;
}

static bool use_emit_asm(DlCompiler *cc, LLVMModuleRef mod, const CgTarget *t, void *user) {
  char *msg = NULL;
  LLVMMemoryBufferRef buf = NULL;
  if (LLVMTargetMachineEmitToMemoryBuffer(t->tm, mod, LLVMAssemblyFile, &msg, &buf)) {
    dl_error(cc, DL_NOLOC, "LLVM could not generate %s assembly: %s", t->triple,
             take_llvm_message(cc, msg));
    return false;
  }
  *(char **)user = dl_arena_strndup(cc->arena, LLVMGetBufferStart(buf), LLVMGetBufferSize(buf));
  LLVMDisposeMemoryBuffer(buf);
  return true;
}

static bool use_emit_object(DlCompiler *cc, LLVMModuleRef mod, const CgTarget *t, void *user) {
  const char *path = user;
  char *msg = NULL;
  char *path_copy = dl_arena_strdup(cc->arena, path);
  if (LLVMTargetMachineEmitToFile(t->tm, mod, path_copy, LLVMObjectFile, &msg)) {
    dl_error(cc, DL_NOLOC, "cannot write object file '%s': %s", path, take_llvm_message(cc, msg));
    return false;
  }
  return true;
}

static DlTargetKind requested_target(const DlCodegenOptions *opts) {
  return opts ? opts->target : DL_TARGET_CPU;
}

char *dl_emit_llvm_ir(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts) {
  char *text = NULL;
  return with_module(cc, prog, opts, requested_target(opts), use_print_ir, &text) ? text : NULL;
}

char *dl_emit_asm(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts) {
  char *text = NULL;
  return with_module(cc, prog, opts, requested_target(opts), use_emit_asm, &text) ? text : NULL;
}

char *dl_emit_ptx(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts) {
  char *text = NULL;
  return with_module(cc, prog, opts, DL_TARGET_NVPTX, use_emit_asm, &text) ? text : NULL;
}

bool dl_emit_object(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts,
                    const char *path) {
  if (requested_target(opts) != DL_TARGET_CPU) {
    dl_error(cc, DL_NOLOC, "object files are made for the host CPU only; use PTX for the GPU");
    return false;
  }
  return with_module(cc, prog, opts, DL_TARGET_CPU, use_emit_object, (void *)path);
}

/* ---- the C header ---------------------------------------------------------------- */

static const char *role_name(int role) {
  switch ((DlrtRole)role) {
  case DLRT_ROLE_PARAM: return "param";
  case DLRT_ROLE_INPUT: return "input";
  case DLRT_ROLE_TARGET: return "target";
  case DLRT_ROLE_OUTPUT: return "output";
  case DLRT_ROLE_LOSS: return "loss";
  case DLRT_ROLE_CONST: return "const";
  case DLRT_ROLE_HYPER: return "hyper";
  case DLRT_ROLE_GRAD: return "grad";
  case DLRT_ROLE_STATE: return "state";
  }
  return "?";
}

/* A name inside a C comment must not close it. */
static void put_comment_text(FILE *f, const char *s) {
  for (; *s; s++) {
    if (s[0] == '*' && s[1] == '/')
      fputs("* /", f), s++;
    else
      fputc(*s, f);
  }
}

char *dl_emit_c_header(DlCompiler *cc, const DlProgram *prog, const DlCodegenOptions *opts) {
  CgOptions o;
  if (!prog || !cg_options(cc, prog, opts, DL_TARGET_CPU, &o)) return NULL;
  const char *p = o.prefix;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) {
    dl_error(cc, DL_NOLOC, "out of memory writing the C header");
    return NULL;
  }
  CgTensor *ts;
  int nt = cg_tensors(cc, prog, &ts);
  char *upper = dl_arena_strdup(cc->arena, p);
  for (char *s = upper; *s; s++)
    *s = (char)toupper((unsigned char)*s);
  const char *guard = dl_arena_printf(cc->arena, "DLCC_%s_H", upper);

  fprintf(f, "/* %s.h - generated by dlcc from model \"", p);
  put_comment_text(f, prog->g->name ? prog->g->name : p);
  fprintf(f, "\"; do not edit.\n *\n");
  fprintf(f, " * Link with the object file dlcc compiled and the dlcc runtime (libdlrt.a, -lm "
             "-lpthread).\n");
  fprintf(f, " * Batches of up to %lld rows; N below is the batch size.\n *\n",
          (long long)prog->max_batch);
  fprintf(f, " * Tensors (name: role shape):\n");
  for (int i = 0; i < nt; i++) {
    char shape[128];
    fprintf(f, " *   ");
    put_comment_text(f, ts[i].name);
    fprintf(f, ": %s %s\n", role_name(ts[i].role), dl_shape_str(&ts[i].shape, shape, sizeof shape));
  }
  fprintf(f, " */\n#ifndef %s\n#define %s\n\n#include \"dlrt.h\"\n\n", guard, guard);
  fprintf(f, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
  fprintf(f, "/* The largest batch the entry points accept. */\n#define %s_MAX_BATCH %lld\n\n",
          upper, (long long)prog->max_batch);
  fprintf(f, "/* The compiled program: its memory size, named tensors and entry points. */\n");
  fprintf(f, "extern const DlrtProgram %s_program;\n\n", p);
  fprintf(f, "/* Raw entry points on the context's memory and thread pool (NULL: the calling\n"
             " * thread only); use the helpers below. */\n");
  for (int k = 0; k < DL_ENTRY_COUNT; k++)
    if (entry_emitted(prog, (DlEntryKind)k))
      fprintf(f, "void %s_entry_%s(float *mem, int64_t n, DlrtPool *pool);\n", p,
              dl_entry_names[k]);
  fprintf(f,
          "\n/* A context: memory with constants and hyperparameters filled in and the\n"
          " * parameters initialised from seed. Free with dlrt_context_free. */\n"
          "static inline DlrtContext *%s_create(uint64_t seed, DlrtError *err) {\n"
          "  return dlrt_context_new(&%s_program, seed, err);\n}\n\n",
          p, p);
  fprintf(f,
          "/* Copy a parameter in or out; count is its number of elements. */\n"
          "static inline int %s_set_param(DlrtContext *ctx, const char *name, const float *data,\n"
          "                               int64_t count, DlrtError *err) {\n"
          "  return dlrt_set(ctx, name, data, count, err);\n}\n"
          "static inline int %s_get_param(DlrtContext *ctx, const char *name, float *data,\n"
          "                               int64_t count, DlrtError *err) {\n"
          "  return dlrt_get(ctx, name, data, count, err);\n}\n\n",
          p, p);
  fprintf(f,
          "/* The buffer of a named tensor of a role (role < 0: any) in ctx's memory, or\n"
          " * NULL. Inputs hold max_batch rows; fill the first n before running. */\n"
          "static inline float *%s_tensor(DlrtContext *ctx, const char *name, int role) {\n"
          "  int i = dlrt_find(ctx->prog, name, role);\n"
          "  return i < 0 ? (float *)0 : dlrt_data(ctx, i);\n}\n"
          "static inline float *%s_input(DlrtContext *ctx, const char *name) {\n"
          "  return %s_tensor(ctx, name, DLRT_ROLE_INPUT);\n}\n"
          "static inline float *%s_output(DlrtContext *ctx) {\n"
          "  int i = dlrt_find_role(ctx->prog, DLRT_ROLE_OUTPUT);\n"
          "  return i < 0 ? (float *)0 : dlrt_data(ctx, i);\n}\n\n",
          p, p, p, p);
  fprintf(f,
          "/* Run the forward pass on the first n rows of the inputs. */\n"
          "static inline int %s_forward(DlrtContext *ctx, int64_t n, DlrtError *err) {\n"
          "  return dlrt_run_forward(ctx, n, err);\n}\n",
          p);
  if (prog->entry[DL_ENTRY_TRAIN].present)
    fprintf(f,
            "/* One optimisation step (forward, backward, update) on n rows. */\n"
            "static inline int %s_train_step(DlrtContext *ctx, int64_t n, DlrtError *err) {\n"
            "  return dlrt_run_train_step(ctx, n, err);\n}\n",
            p);
  if (prog->entry[DL_ENTRY_GRAD].present)
    fprintf(f,
            "/* Forward and gradients of every parameter, without an update. */\n"
            "static inline int %s_grad(DlrtContext *ctx, int64_t n, DlrtError *err) {\n"
            "  return dlrt_run_grad(ctx, n, err);\n}\n",
            p);
  fprintf(f, "\n#ifdef __cplusplus\n}\n#endif\n#endif /* %s */\n", guard);
  fclose(f);
  char *out = dl_arena_strndup(cc->arena, text, len);
  free(text);
  return out;
}
