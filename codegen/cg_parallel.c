/* cg_parallel.c - optimising and generating code for one module on several
 * threads, for the JIT.
 *
 * LLVM's O3 pipeline and instruction selection take almost all of a model's
 * JIT time (the MLP's training step: about 80 ms each, measured with the
 * module built in 2 ms), and both work one function at a time: the kernels
 * are noinline loop nests over whole tensors, so no function's code depends
 * on another's body.  The module is therefore cut into parts of about equal
 * size, each part is optimised and compiled to an object file on its own
 * thread (an LLVMContext and a target machine per thread: LLVM allows
 * concurrency across contexts, never within one), and the JIT links the
 * objects.
 *
 *   units      a function together with the local (internal or private)
 *              functions that only it calls or passes as a pointer (a
 *              kernel's parallel-for trampoline), unless that user is an
 *              optnone entry (its kernels would all become one unit) or the
 *              function carries CG_O2_ATTR and its user does not; every
 *              unit's root gets external linkage so that other parts can
 *              call it
 *   parts      units dealt largest first to the part with the least work so
 *              far (basic blocks before optimisation measure the work)
 *   cutting    the module is copied through bitcode into a context per
 *              part; in each copy, the functions of other parts become
 *              declarations, the global variables that are not local are
 *              defined in part 0 only, and local ones nothing uses are
 *              deleted
 *   O2 module  the units whose root carries CG_O2_ATTR (the GEMM's
 *              functions) go to one more module, compiled at O2 on part 0's
 *              thread after part 0, whatever the number of threads: they
 *              ran as fast as at O3 on seven sgemm shapes of bench/run.sh
 *              and compiled 5 to 20 ms faster (O3's loop unswitching
 *              copies their loops)
 *
 * The units and their linkage do not depend on the number of parts, and
 * LLVM neither inlines nor reassociates across them: the arithmetic of every
 * function is the same whichever part compiles it, so results are
 * bit-identical for any number of threads (tests/unit/test_threads.c trains
 * with LLVM on one thread and on three).  The machine code itself may differ
 * in how arguments are passed between functions of one part (LLVM's
 * inter-procedural passes see the functions of the same module only).
 */
#include "cg_internal.h"

#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A function's work for LLVM, in units of about half a millisecond: one per
 * basic block, plus one.  Fitted (least squares) to the 141 functions of the
 * four benchmark models, each compiled alone: 0.5 ms per block (mean error
 * 3 ms; instruction counts predicted worse; the GEMM, 131 blocks, 66 to 77
 * ms) and 3.4 ms per function, which is mostly the cost of a module of its
 * own: with that fixed cost the MLP's two parts took 50 and 117 ms of CPU,
 * without it 70 and 78.  An optnone function (an entry: a line of calls)
 * skips the optimiser and gets the fast instruction selector: about 0.01
 * ms per instruction (the LSTM's training entry, 3,700 instructions, 38
 * ms). */
#define CG_FUNCTION_WORK 1
#define CG_OPTNONE_INSTRUCTIONS_PER_WORK 50
/* Below this much work (about 30 ms) a module is compiled on the calling
 * thread: a REPL expression compiles in a few milliseconds, about what
 * copying the module and a second target machine would cost. */
#define CG_PARALLEL_MIN_WORK 60

typedef struct FnInfo {
  LLVMValueRef fn;
  int parent; /* the unit's union-find link; itself at a root */
  int64_t size;
  int part;   /* the thread that compiles it */
  bool light; /* its unit goes to the O2 module (CG_O2_ATTR on the root) */
} FnInfo;

typedef struct Split {
  FnInfo *fns;
  int nfns;
  int regular_units; /* units outside the O2 module */
} Split;

static int fn_index(const Split *s, LLVMValueRef fn) {
  for (int i = 0; i < s->nfns; i++)
    if (s->fns[i].fn == fn) return i;
  return -1;
}

static int unit_root(Split *s, int i) {
  while (s->fns[i].parent != i)
    i = s->fns[i].parent = s->fns[s->fns[i].parent].parent;
  return i;
}

static bool local_linkage(LLVMValueRef gv) {
  LLVMLinkage l = LLVMGetLinkage(gv);
  return l == LLVMInternalLinkage || l == LLVMPrivateLinkage;
}

/* The defined function that uses fn (in an instruction), or -1 when several
 * functions or any constant (a global's initialiser) use it. */
static int only_user(const Split *s, LLVMValueRef fn) {
  int user_fn = -1;
  for (LLVMUseRef u = LLVMGetFirstUse(fn); u; u = LLVMGetNextUse(u)) {
    LLVMValueRef user = LLVMGetUser(u);
    if (!LLVMIsAInstruction(user)) return -1;
    int i = fn_index(s, LLVMGetBasicBlockParent(LLVMGetInstructionParent(user)));
    if (i < 0 || (user_fn >= 0 && user_fn != i)) return -1;
    user_fn = i;
  }
  return user_fn;
}

static bool is_optnone(LLVMValueRef fn) {
  unsigned optnone = LLVMGetEnumAttributeKindForName("optnone", 7);
  return LLVMGetEnumAttributeAtIndex(fn, LLVMAttributeFunctionIndex, optnone) != NULL;
}

static int64_t function_work(LLVMValueRef fn) {
  bool plain = is_optnone(fn);
  int64_t blocks = 0, instructions = 0;
  for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb)) {
    blocks++;
    for (LLVMValueRef in = LLVMGetFirstInstruction(bb); plain && in;
         in = LLVMGetNextInstruction(in))
      instructions++;
  }
  return CG_FUNCTION_WORK + (plain ? instructions / CG_OPTNONE_INSTRUCTIONS_PER_WORK : blocks);
}

static bool has_o2_attr(LLVMValueRef fn) {
  return LLVMGetStringAttributeAtIndex(fn, LLVMAttributeFunctionIndex, CG_O2_ATTR,
                                       (unsigned)strlen(CG_O2_ATTR)) != NULL;
}

/* Units, their linkage, and each function's part (fns[i].part). */
static int64_t split_plan(Split *s, LLVMModuleRef mod, int parts) {
  s->nfns = 0;
  s->regular_units = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
    if (!LLVMIsDeclaration(f)) s->nfns++;
  s->fns = calloc((size_t)s->nfns + 1, sizeof *s->fns);
  if (!s->fns) return -1;
  int i = 0;
  int64_t total = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f)) continue;
    s->fns[i] = (FnInfo){.fn = f, .parent = i, .size = function_work(f)};
    total += s->fns[i].size;
    i++;
  }
  for (i = 0; i < s->nfns; i++) {
    int user = local_linkage(s->fns[i].fn) ? only_user(s, s->fns[i].fn) : -1;
    if (user < 0 || is_optnone(s->fns[user].fn) ||
        (has_o2_attr(s->fns[i].fn) && !has_o2_attr(s->fns[unit_root(s, user)].fn)))
      continue;
    if (unit_root(s, user) != i) s->fns[i].parent = unit_root(s, user);
  }
  int64_t *unit_size = calloc((size_t)s->nfns + 1, sizeof *unit_size);
  if (!unit_size) return -1;
  int64_t light = 0;
  for (i = 0; i < s->nfns; i++) {
    int r = unit_root(s, i);
    unit_size[r] += s->fns[i].size;
    if (r == i && local_linkage(s->fns[i].fn)) LLVMSetLinkage(s->fns[i].fn, LLVMExternalLinkage);
  }
  /* The O2 module (all light units) first, to part 0; then the largest
   * unit first, to the least loaded part (ties: the lower part, and equal
   * sizes in module order, so the cut is deterministic). */
  int64_t load[CG_PARALLEL_MAX_THREADS] = {0};
  for (i = 0; i < s->nfns; i++) {
    s->fns[i].light = s->fns[i].light || has_o2_attr(s->fns[i].fn);
    if (unit_root(s, i) == i && s->fns[i].light) {
      light += unit_size[i];
      unit_size[i] = 0;
      s->fns[i].part = 0;
    }
  }
  load[0] = light;
  s->regular_units = 0;
  for (i = 0; i < s->nfns; i++)
    s->regular_units += unit_size[i] > 0;
  for (;;) {
    int best = -1;
    for (i = 0; i < s->nfns; i++)
      if (unit_size[i] > 0 && (best < 0 || unit_size[i] > unit_size[best])) best = i;
    if (best < 0) break;
    int to = 0;
    for (int p = 1; p < parts; p++)
      if (load[p] < load[to]) to = p;
    load[to] += unit_size[best];
    s->fns[best].part = to;
    unit_size[best] = 0;
  }
  free(unit_size);
  for (i = 0; i < s->nfns; i++) {
    s->fns[i].part = s->fns[unit_root(s, i)].part;
    s->fns[i].light = s->fns[unit_root(s, i)].light;
  }
  return total;
}

/* v's name (malloc'd), which v gives up so that its replacement can take
 * it; NULL when out of memory. */
static char *take_name(LLVMValueRef v) {
  size_t len;
  const char *raw = LLVMGetValueName2(v, &len);
  char *name = malloc(len + 1);
  if (!name) return NULL;
  memcpy(name, raw, len);
  name[len] = '\0';
  LLVMSetValueName2(v, "", 0);
  return name;
}

/* Replace the definition fn by a declaration with its type and attributes. */
static bool make_declaration(LLVMModuleRef mod, LLVMValueRef fn) {
  char *name = take_name(fn);
  if (!name) return false;
  LLVMValueRef decl = LLVMAddFunction(mod, name, LLVMGlobalGetValueType(fn));
  free(name);
  unsigned nparams = LLVMCountParams(fn);
  for (long idx = -1; idx <= (long)nparams; idx++) {
    LLVMAttributeIndex at =
        idx < 0 ? (LLVMAttributeIndex)LLVMAttributeFunctionIndex : (LLVMAttributeIndex)idx;
    unsigned n = LLVMGetAttributeCountAtIndex(fn, at);
    if (n == 0) continue;
    LLVMAttributeRef *attrs = malloc(sizeof *attrs * n);
    if (!attrs) return false; /* (fn stays defined; the caller gives up) */
    LLVMGetAttributesAtIndex(fn, at, attrs);
    for (unsigned a = 0; a < n; a++)
      LLVMAddAttributeAtIndex(decl, at, attrs[a]);
    free(attrs);
  }
  LLVMReplaceAllUsesWith(fn, decl);
  LLVMDeleteFunction(fn);
  return true;
}

/* Keep part p's functions in mod (a copy of the planned module, functions in
 * the same order) and declare the rest. */
static bool cut_part(const Split *s, LLVMModuleRef mod, int m, int parts) {
  LLVMValueRef *drop = malloc(sizeof *drop * ((size_t)s->nfns + 1));
  if (!drop) return false;
  int ndrop = 0, i = 0;
  bool ok = true;
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f)) continue;
    const FnInfo *fi = &s->fns[i++];
    if (fi->light ? m != parts : fi->part != m) drop[ndrop++] = f;
  }
  for (i = 0; ok && i < ndrop; i++)
    ok = make_declaration(mod, drop[i]);
  free(drop);
  if (!ok) return false;
  /* Global variables that are not local are defined in part 0 only (the
   * program table); elsewhere they become declarations (LLVM 19 has no
   * LLVMSetInitializer(gv, NULL): a new declaration replaces them). */
  if (m != 0) {
    LLVMValueRef gv = LLVMGetFirstGlobal(mod);
    while (gv) {
      LLVMValueRef next = LLVMGetNextGlobal(gv);
      if (!LLVMIsDeclaration(gv) && !local_linkage(gv)) {
        char *name = take_name(gv);
        if (!name) return false;
        LLVMValueRef decl = LLVMAddGlobal(mod, LLVMGlobalGetValueType(gv), name);
        free(name);
        LLVMSetGlobalConstant(decl, LLVMIsGlobalConstant(gv));
        LLVMReplaceAllUsesWith(gv, decl);
        LLVMDeleteGlobal(gv);
      }
      gv = next;
    }
  }
  /* Local constants nothing in this part uses any more (the tensor names
   * and data the table points at, in parts but 0): without this they would
   * stay in every object at -O0, which runs no pass that drops them. */
  for (bool dropped = true; dropped;) {
    dropped = false;
    LLVMValueRef gv = LLVMGetFirstGlobal(mod);
    while (gv) {
      LLVMValueRef next = LLVMGetNextGlobal(gv);
      if (local_linkage(gv) && !LLVMGetFirstUse(gv)) {
        LLVMDeleteGlobal(gv);
        dropped = true;
      }
      gv = next;
    }
  }
  return true;
}

typedef struct PartJob {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMTargetMachineRef tm;
  int opt_level;
  LLVMMemoryBufferRef object;
  char *error;          /* malloc'd, or NULL */
  struct PartJob *then; /* the next module for the same thread, or NULL */
} PartJob;

static void *compile_part(void *arg) {
  for (PartJob *j = arg; j; j = j->then) {
    j->error = cg_optimise(j->mod, j->tm, j->opt_level);
    char *msg = NULL;
    if (!j->error &&
        LLVMTargetMachineEmitToMemoryBuffer(j->tm, j->mod, LLVMObjectFile, &msg, &j->object)) {
      j->error = strdup(msg ? msg : "(no message)");
      j->object = NULL;
    }
    if (msg) LLVMDisposeMessage(msg);
  }
  return NULL;
}

int cg_compile_parallel(DlCompiler *cc, LLVMModuleRef mod, const CgOptions *o, int threads,
                        LLVMMemoryBufferRef objects[CG_PARALLEL_MAX_OBJECTS], int *threads_used) {
  if (threads <= 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    threads = cores > 0 ? (int)cores : 1;
  }
  if (threads > CG_PARALLEL_MAX_THREADS) threads = CG_PARALLEL_MAX_THREADS;
  Split s;
  int64_t total = split_plan(&s, mod, threads);
  int parts = total < CG_PARALLEL_MIN_WORK ? 1 : threads;
  if (parts > s.regular_units) parts = s.regular_units > 0 ? s.regular_units : 1;
  if (total >= 0 && parts < threads) { /* fewer parts than planned: deal again */
    free(s.fns);
    total = split_plan(&s, mod, parts);
  }
  if (total < 0) {
    free(s.fns);
    dl_error(cc, DL_NOLOC, "out of memory cutting the module for %d threads", threads);
    return 0;
  }
  /* Modules: one per part, and the O2 module (after them) when there are
   * light functions; it runs on part 0's thread, after part 0. */
  bool any_light = false;
  for (int i = 0; i < s.nfns; i++)
    any_light = any_light || s.fns[i].light;
  int nmods = parts + any_light;

  PartJob job[CG_PARALLEL_MAX_OBJECTS] = {{0}};
  bool ok = true;
  LLVMMemoryBufferRef bitcode = nmods > 1 ? LLVMWriteBitcodeToMemoryBuffer(mod) : NULL;
  for (int m = 0; m < nmods; m++) {
    bool light = m == parts;
    job[m].opt_level = light && o->opt_level > 2 ? 2 : o->opt_level;
    if (m == 0) {
      job[m].mod = mod;
    } else {
      job[m].ctx = LLVMContextCreate();
      if (LLVMParseBitcodeInContext2(job[m].ctx, bitcode, &job[m].mod)) {
        dl_error(cc, DL_NOLOC, "internal error: LLVM could not copy the module for part %d", m);
        ok = false;
        break;
      }
    }
    if (!cut_part(&s, job[m].mod, m, parts)) {
      dl_error(cc, DL_NOLOC, "out of memory cutting the module for %d threads", threads);
      ok = false;
      break;
    }
    CgTarget tp;
    if (!cg_target_machine(cc, o, &tp)) {
      ok = false;
      break;
    }
    job[m].tm = tp.tm;
  }
  if (bitcode) LLVMDisposeMemoryBuffer(bitcode);
  free(s.fns);
  if (ok && any_light) job[0].then = &job[parts];

  pthread_t tid[CG_PARALLEL_MAX_THREADS];
  bool started[CG_PARALLEL_MAX_THREADS] = {false};
  for (int p = 1; ok && p < parts; p++)
    started[p] = pthread_create(&tid[p], NULL, compile_part, &job[p]) == 0;
  if (ok) compile_part(&job[0]);
  for (int p = 1; ok && p < parts; p++) {
    if (started[p])
      pthread_join(tid[p], NULL);
    else
      compile_part(&job[p]); /* no thread to be had: here, after part 0 */
  }

  for (int m = 0; m < nmods; m++) {
    if (ok && job[m].error)
      dl_error(cc, DL_NOLOC, "internal error: LLVM could not compile the module: %s", job[m].error);
    ok = ok && !job[m].error && job[m].object;
    free(job[m].error);
    objects[m] = job[m].object;
    if (job[m].tm) LLVMDisposeTargetMachine(job[m].tm);
    if (m > 0 && job[m].mod) LLVMDisposeModule(job[m].mod);
    if (job[m].ctx) LLVMContextDispose(job[m].ctx);
  }
  if (!ok) {
    for (int m = 0; m < nmods; m++)
      if (objects[m]) LLVMDisposeMemoryBuffer(objects[m]);
    return 0;
  }
  *threads_used = parts;
  return nmods;
}
