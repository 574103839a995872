/* test_codegen_programs.c - the code generator against the reference
 * interpreter: whole training programs (forward, gradients, updates); fused
 * kernels at odd sizes with broadcasting, where fusion declines, fused
 * against unfused programs bit for bit; the textual outputs (LLVM IR is
 * vectorised, PTX passes ptxas when it is installed), ELF objects, the C
 * header, and error paths.  See codegen_harness.h. */
#include "codegen_harness.h"

#include <sys/stat.h>

/* A small CNN and sequence model using every new op in the forward graph,
 * so that the backward graph has every gradient op too; grad and train_step
 * against the interpreter, with both kinds of kernels. */
static Case build_new_ops(void) {
  Case c = case_new("new ops");
  DlGraph *g = c.g;
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 1, 9, 8), DL_ROLE_INPUT);
  DlNodeId tok = dl_input(g, L, "tok", SHAPE(N, 3), DL_ROLE_INPUT);
  DlNodeId lab = dl_input(g, L, "lab", SHAPE(N), DL_ROLE_TARGET);
  case_ints(&c, tok, 0, 4);
  case_ints(&c, lab, 0, 3);
  DlInit uni = {.kind = DL_INIT_UNIFORM, .a = -1, .b = 1};
  DlNodeId w1 = dl_param(g, L, "conv.w", SHAPE(3, 1, 3, 3), uni);
  DlNodeId emb = dl_param(g, L, "emb", SHAPE(5, 4), uni);
  DlNodeId W = dl_param(g, L, "W", SHAPE(25, 4), uni);
  DlNodeId h = dl_conv2d(g, L, x, w1, 2, 1, 1, 1);               /* [N, 3, 5, 8] */
  DlNodeId p1 = dl_pool2d(g, DL_OP_MAXPOOL2D, L, h, 2, 2, 1, 2); /* [N, 3, 4, 4] */
  DlNodeId p2 = dl_pool2d(g, DL_OP_AVGPOOL2D, L, h, 2, 3, 1, 2); /* [N, 3, 4, 3] */
  DlNodeId cat = dl_concat(g, L, p1, p2, 3);                     /* [N, 3, 4, 7] */
  int perm[4] = {0, 2, 3, 1};
  DlNodeId pm = dl_permute(g, L, cat, perm); /* [N, 4, 7, 3] */
  int64_t st[4] = {0, 1, 2, 0}, sp[4] = {N, 3, 7, 1};
  DlNodeId sl = dl_slice(g, L, pm, st, sp); /* [N, 2, 5, 1] */
  int64_t before[4] = {0, 0, 0, 0}, after[4] = {0, 3, 0, 0};
  DlNodeId pd = dl_pad(g, L, sl, before, after); /* [N, 5, 5, 1] */
  DlNodeId flat = dl_reshape(g, L, pd, SHAPE(N, 25));
  flat = dl_dropout(g, L, dl_binary(g, DL_OP_MAXIMUM, L, flat, dl_const_scalar(g, L, 0.1)), 0.25);
  DlNodeId z = dl_matmul(g, L, flat, W, false, false); /* [N, 4] */
  DlNodeId e = dl_gather(g, L, emb, tok);              /* [N, 3, 4] */
  z = dl_binary(g, DL_OP_ADD, L, z, dl_reduce(g, DL_OP_MAX, L, e, 2, false));
  g->output = dl_softmax(g, DL_OP_SOFTMAX, L, z);
  DlNodeId oh = dl_one_hot(g, L, lab, 4);
  DlNodeId ce = dl_binary(g, DL_OP_MUL, L, oh, dl_softmax(g, DL_OP_LOG_SOFTMAX, L, z));
  g->loss =
      dl_unary(g, DL_OP_NEG, L,
               dl_reduce(g, DL_OP_MEAN, L, dl_reduce(g, DL_OP_SUM, L, ce, 2, false), 0, false));
  bool ok = !dl_failed(c.cc) && dl_autodiff(g) && dl_append_sgd(g, 0.1);
  CHECK(ok, "new ops: autodiff failed");
  if (!ok) report_diags(&c);
  bool seen[DL_OP_COUNT] = {false};
  for (DlNodeId id = 0; id < g->nnodes; id++)
    seen[g->nodes[id].op] = true;
  static const DlOp want[] = {DL_OP_CONV2D_GRAD_FILTER,
                              DL_OP_MAXPOOL2D_GRAD,
                              DL_OP_AVGPOOL2D_GRAD,
                              DL_OP_SCATTER_ADD,
                              DL_OP_GT,
                              DL_OP_EQ,
                              DL_OP_DROPOUT};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    CHECK(seen[want[i]], "new ops: the gradient graph has no %s", dl_op_info[want[i]].name);
  DlNodeId mode = find_hyper(g, DL_HYPER_TRAIN_MODE), seed = find_hyper(g, DL_HYPER_TRAIN_SEED);
  if (mode != DL_NONE && seed != DL_NONE) {
    g->nodes[mode].attr.hyper.value = 1;
    g->nodes[seed].attr.hyper.value = 99;
  }
  return c;
}

static void test_new_ops_training(void) {
  /* grad compares the loss and every gradient; train_step the output, the
   * loss and every updated parameter (forward's kernels are among them). */
  static const struct {
    DlEntryKind entry;
    Kernels kernels;
  } runs[] = {{DL_ENTRY_GRAD, CPU_LOOPS}, {DL_ENTRY_GRAD, GPU_GRID}, {DL_ENTRY_TRAIN, CPU_LOOPS}};
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
    Case c = build_new_ops();
    char what[64];
    snprintf(what, sizeof what, "new ops %s%s", dl_entry_names[runs[i].entry],
             runs[i].kernels == GPU_GRID ? " (GPU kernels)" : "");
    c.what = what;
    case_run_entry(&c, runs[i].entry, runs[i].kernels == GPU_GRID ? 1 : 3, runs[i].kernels);
    dl_compiler_free(c.cc);
  }
}

/* A two-layer classifier with every kind of op in its forward and backward
 * graphs: grad and train_step (ASSIGN) against the interpreter. */
static Case build_mlp(void) {
  Case c = case_new("mlp");
  DlGraph *g = c.g;
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 3), DL_ROLE_INPUT);
  DlNodeId y = dl_input(g, L, "y", SHAPE(N, 2), DL_ROLE_TARGET);
  case_range(&c, y, 0.0, 1.0);
  float w1[12];
  for (int i = 0; i < 12; i++)
    w1[i] = (float)rnd(-1, 1);
  DlNodeId W1 = dl_param(g, L, "h.W", SHAPE(3, 4), (DlInit){.kind = DL_INIT_DATA, .data = w1});
  DlNodeId b1 = dl_param(g, L, "h.b", SHAPE(4), (DlInit){.kind = DL_INIT_CONST, .a = 0.1});
  DlNodeId W2 =
      dl_param(g, L, "W2", SHAPE(4, 2), (DlInit){.kind = DL_INIT_UNIFORM, .a = -1, .b = 1});
  DlNodeId b2 = dl_param(g, L, "b2", SHAPE(2), (DlInit){.kind = DL_INIT_ZERO});
  DlNodeId h =
      dl_unary(g, DL_OP_TANH, L, dl_binary(g, DL_OP_ADD, L, dl_matmul(g, L, x, W1, 0, 0), b1));
  h = dl_binary(g, DL_OP_MUL, L, h, dl_unary(g, DL_OP_SIGMOID, L, h));
  DlNodeId z = dl_binary(g, DL_OP_ADD, L, dl_matmul(g, L, h, W2, 0, 0), b2);
  g->output = dl_softmax(g, DL_OP_SOFTMAX, L, z);
  dl_node_set_name(g, g->output, "probs");
  DlNodeId ce = dl_binary(g, DL_OP_MUL, L, y, dl_softmax(g, DL_OP_LOG_SOFTMAX, L, z));
  DlNodeId sq = dl_binary(g, DL_OP_POW, L, dl_binary(g, DL_OP_SUB, L, g->output, y),
                          dl_const_scalar(g, L, 2.0));
  DlNodeId l1 =
      dl_unary(g, DL_OP_NEG, L,
               dl_reduce(g, DL_OP_MEAN, L, dl_reduce(g, DL_OP_SUM, L, ce, 2, false), 0, false));
  DlNodeId l2 = dl_reduce(g, DL_OP_MEAN, L, sq, 0, false);
  g->loss = dl_binary(g, DL_OP_ADD, L, l1, l2);
  bool ok = !dl_failed(c.cc) && dl_autodiff(g) && dl_append_sgd(g, 0.25);
  CHECK(ok, "mlp: autodiff failed");
  return c;
}

static void test_training(void) {
  static const DlEntryKind entries[] = {DL_ENTRY_FORWARD, DL_ENTRY_GRAD, DL_ENTRY_TRAIN};
  for (int k = 0; k < 3; k++)
    for (size_t e = 0; e < 3; e++) {
      Case c = build_mlp();
      char what[64];
      snprintf(what, sizeof what, "mlp %s%s", dl_entry_names[entries[e]],
               k == 2 ? " (GPU kernels)" : "");
      c.what = what;
      case_run_entry(&c, entries[e], k == 1 ? 0 : 3, k == 2 ? GPU_GRID : CPU_LOOPS);
      dl_compiler_free(c.cc);
    }
}

/* ---- textual and object outputs ---- */

static bool contains(const char *text, const char *needle) {
  return text && strstr(text, needle);
}

static Case build_every_op(void) {
  Case c = case_new("every op");
  DlGraph *g = c.g;
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 8), DL_ROLE_INPUT);
  DlNodeId W = dl_param(g, L, "W", SHAPE(8, 8), (DlInit){.kind = DL_INIT_UNIFORM, .a = -1, .b = 1});
  DlNodeId v = dl_matmul(g, L, x, W, false, false);
  /* every transposition: v @ (x^T @ v)^T */
  v = dl_binary(g, DL_OP_ADD, L,
                dl_matmul(g, L, v, dl_matmul(g, L, x, v, true, false), false, true), v);
  static const DlOp unary[] = {DL_OP_NEG,     DL_OP_EXP,  DL_OP_LOG,  DL_OP_SQRT, DL_OP_TANH,
                               DL_OP_SIGMOID, DL_OP_RELU, DL_OP_STEP, DL_OP_ABS,  DL_OP_SIGN};
  for (size_t i = 0; i < sizeof unary / sizeof unary[0]; i++)
    v = dl_binary(g, DL_OP_ADD, L, v, dl_unary(g, unary[i], L, v));
  static const DlOp binary[] = {DL_OP_SUB, DL_OP_MUL, DL_OP_DIV, DL_OP_POW};
  for (size_t i = 0; i < sizeof binary / sizeof binary[0]; i++)
    v = dl_binary(g, binary[i], L, v, x);
  DlNodeId s = dl_reduce(g, DL_OP_SUM, L, v, 2, true);
  v = dl_binary(g, DL_OP_SUB, L, v, dl_expand(g, L, s, SHAPE(N, 8), true));
  v = dl_softmax(g, DL_OP_LOG_SOFTMAX, L, dl_softmax(g, DL_OP_SOFTMAX, L, v));
  v = dl_reshape(g, L, v, SHAPE(N, 2, 4));
  g->output = v;
  g->loss = dl_reduce(g, DL_OP_MEAN, L, v, 0, false);
  bool ok = !dl_failed(c.cc) && dl_autodiff(g) && dl_append_sgd(g, 0.1);
  CHECK(ok, "every op: autodiff failed");
  return c;
}

/* The scratch directory, made if need be (CTest may run this test before
 * any lit test has made it). */
static const char *tmp_dir(void) {
  const char *t = getenv("DLCC_TEST_TMP");
  if (!t || !t[0]) t = getenv("TMPDIR");
  if (!t || !t[0]) return "/tmp";
  mkdir(t, 0777); /* EEXIST is fine; any other failure shows in the check that writes */
  return t;
}

static const char *find_ptxas(void) {
  const char *env = getenv("PTXAS");
  if (env && access(env, X_OK) == 0) return env;
  if (access("/usr/local/cuda/bin/ptxas", X_OK) == 0) return "/usr/local/cuda/bin/ptxas";
  if (system("command -v ptxas >/dev/null 2>&1") == 0) return "ptxas";
  return NULL;
}

/* Emit PTX for arch at -O<opt> and, where ptxas is installed, assemble it. */
static void check_ptx(Case *c, DlProgram *prog, const char *arch, int opt, const char *ptxas) {
  DlCodegenOptions o = {.target = DL_TARGET_NVPTX, .opt_level = opt, .gpu_arch = arch};
  char *ptx = dl_emit_ptx(c->cc, prog, &o);
  CHECK(ptx != NULL, "%s: no PTX for %s -O%d", c->what, arch, opt);
  if (!ptx) {
    report_diags(c);
    return;
  }
  char target[32];
  snprintf(target, sizeof target, ".target %s", arch);
  CHECK(contains(ptx, target), "%s: PTX lacks '%s'", c->what, target);
  CHECK(contains(ptx, ".visible .entry t_k") && !contains(ptx, "entry_forward"),
        "%s: PTX has kernels and no host entries", c->what);
  if (!ptxas) return;
  char ptx_path[512], cmd[2048];
  snprintf(ptx_path, sizeof ptx_path, "%s/test_codegen_%d_%s_O%d.ptx", tmp_dir(), (int)getpid(),
           arch, opt);
  FILE *pf = fopen(ptx_path, "w");
  CHECK(pf != NULL, "cannot write %s", ptx_path);
  if (!pf) return;
  fputs(ptx, pf);
  fclose(pf);
  snprintf(cmd, sizeof cmd, "%s -arch=%s %s -o %s.cubin", ptxas, arch, ptx_path, ptx_path);
  CHECK(system(cmd) == 0, "%s: ptxas rejected the PTX for %s -O%d: %s", c->what, arch, opt, cmd);
  remove(ptx_path);
  snprintf(cmd, sizeof cmd, "%s.cubin", ptx_path);
  remove(cmd);
}

static void test_outputs(void) {
  Case c = build_every_op();
  DlProgram *prog = dl_plan(c.g, 32);
  CHECK(prog != NULL, "every op: plan failed");
  if (!prog) {
    report_diags(&c);
    dl_compiler_free(c.cc);
    return;
  }
  /* The whole training program, at every level, on the CPU. */
  for (int opt = 0; opt <= 3; opt++) {
    DlCodegenOptions o = {.target = DL_TARGET_CPU, .opt_level = opt, .prefix = "every op"};
    char *ir = dl_emit_llvm_ir(c.cc, prog, &o);
    CHECK(contains(ir, "define void @every_op_entry_train_step(ptr"), "-O%d IR lacks the entry",
          opt);
    CHECK(contains(ir, "@every_op_program = ") && contains(ir, "constant %DlrtProgram {"),
          "-O%d IR lacks the table", opt);
    if (opt == 0)
      CHECK(contains(ir, "define internal void @every_op_k") && contains(ir, "ptr noalias"),
            "-O0 IR lacks noalias kernels");
  }
  char *text = dl_emit_asm(c.cc, prog, NULL);
  CHECK(contains(text, "every_op_entry_forward:") || contains(text, "t_entry_forward:"),
        "asm lacks the entry label");

  /* Elementwise and matmul loops become 8-wide vectors on an AVX2 host. */
  Case v = case_new("vectorise");
  DlNodeId a = dl_input(v.g, L, "a", SHAPE(N, 64), DL_ROLE_INPUT);
  DlNodeId b = dl_input(v.g, L, "b", SHAPE(64), DL_ROLE_INPUT);
  DlNodeId W = dl_param(v.g, L, "W", SHAPE(64, 64), (DlInit){.kind = DL_INIT_ZERO});
  v.g->output = dl_matmul(v.g, L, dl_binary(v.g, DL_OP_ADD, L, a, b), W, false, false);
  DlProgram *vp = dl_plan(v.g, 16);
  char *vir = vp ? dl_emit_llvm_ir(v.cc, vp, NULL) : NULL;
  CHECK(vir != NULL, "vectorise: no IR");
#if defined(__x86_64__)
  __builtin_cpu_init();
  /* 8 lanes with AVX2; LLVM may prefer 16 where AVX-512 is fast. */
  if (__builtin_cpu_supports("avx2"))
    CHECK(contains(vir, "<8 x float>") || contains(vir, "<16 x float>"),
          "O3 IR on an AVX2 host has no <8 x float>");
#endif
  dl_compiler_free(v.cc);

  /* ELF object and C header. */
  char path[512];
  snprintf(path, sizeof path, "%s/test_codegen_%d.o", tmp_dir(), (int)getpid());
  CHECK(dl_emit_object(c.cc, prog, NULL, path), "cannot write %s", path);
  FILE *f = fopen(path, "rb");
  unsigned char magic[4] = {0};
  if (f) {
    CHECK(fread(magic, 1, 4, f) == 4, "short object file");
    fclose(f);
  }
  CHECK(!memcmp(magic, "\177ELF", 4), "object file is not ELF");
  remove(path);
  char *h = dl_emit_c_header(c.cc, prog, NULL);
  CHECK(contains(h, "#include \"dlrt.h\""), "header");
  CHECK(contains(h, "extern const DlrtProgram t_program;"), "header declares the table");
  CHECK(contains(h, "void t_entry_train_step(float *mem, int64_t n, DlrtPool *pool);"),
        "header entries");
  CHECK(contains(h, "static inline DlrtContext *t_create(uint64_t seed, DlrtError *err)"),
        "header helpers");
  CHECK(contains(h, "static inline int t_forward(DlrtContext *ctx, int64_t n, DlrtError *err)"),
        "header forward helper");
  CHECK(contains(h, " *   W: param [8, 8]") && contains(h, " *   x: input [N, 8]"),
        "header documents the tensors");
  CHECK(contains(h, "#ifndef DLCC_T_H"), "header include guard");

  /* PTX for every op, checked by ptxas where it is installed; the
   * unoptimised PTX must assemble too. */
  const char *ptxas = find_ptxas();
  check_ptx(&c, prog, "sm_80", 3, ptxas);
  check_ptx(&c, prog, "sm_90", 3, ptxas);
  check_ptx(&c, prog, "sm_80", 0, ptxas);
  if (!ptxas) fprintf(stderr, "note: ptxas not found; PTX was generated but not assembled\n");
  CHECK(!dl_failed(c.cc), "outputs recorded errors");
  report_diags(&c);
  dl_compiler_free(c.cc);
}

/* PTX of every new op and its gradient, through ptxas where installed. */
static void test_new_ops_ptx(void) {
  Case c = build_new_ops();
  DlProgram *prog = dl_plan(c.g, 32);
  CHECK(prog != NULL, "new ops: plan failed");
  if (prog) {
    const char *ptxas = find_ptxas();
    check_ptx(&c, prog, "sm_80", 3, ptxas);
    check_ptx(&c, prog, "sm_90", 3, ptxas);
    check_ptx(&c, prog, "sm_80", 0, ptxas);
  }
  CHECK(!dl_failed(c.cc), "new ops PTX recorded errors");
  report_diags(&c);
  dl_compiler_free(c.cc);
}

static void test_errors(void) {
  Case c = case_new("errors");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 2), DL_ROLE_INPUT);
  c.g->output = dl_unary(c.g, DL_OP_EXP, L, x);
  DlProgram *prog = dl_plan(c.g, 4);
  DlCodegenOptions bad_level = {.opt_level = 7};
  CHECK(dl_emit_llvm_ir(c.cc, prog, &bad_level) == NULL && dl_failed(c.cc), "-O7 accepted");
  dl_diag_clear(c.cc);
  DlCodegenOptions bad_arch = {.target = DL_TARGET_NVPTX, .opt_level = 3, .gpu_arch = "volta"};
  CHECK(dl_emit_ptx(c.cc, prog, &bad_arch) == NULL && dl_failed(c.cc), "arch 'volta' accepted");
  dl_diag_clear(c.cc);
  CHECK(!dl_emit_object(c.cc, prog, NULL, "/nonexistent-dir/sub/x.o") && dl_failed(c.cc),
        "writing into a missing directory succeeded");
  CHECK(c.cc->ndiags > 0 && strstr(c.cc->diags[0].msg, "/nonexistent-dir/sub/x.o"),
        "the object error names the path");
  dl_diag_clear(c.cc);
  /* A prefix that is not an identifier is made one. */
  DlCodegenOptions odd = {.opt_level = 0, .prefix = "9 lives-model"};
  char *ir = dl_emit_llvm_ir(c.cc, prog, &odd);
  CHECK(contains(ir, "@_9_lives_model_program"), "prefix not sanitised");
  dl_compiler_free(c.cc);
}

/* ---- fusion ------------------------------------------------------------------
 *
 * Graphs built so that fusion groups their nodes, at sizes that are no
 * multiple of any vector width, with every kind of broadcast operand; each
 * is checked first to have fused as intended (so the case tests a fused
 * kernel), then against the interpreter like every case.  Then whole
 * training programs, fused and unfused, must give the same bits. */

static const DlKernel *kernel_with(const DlProgram *p, DlNodeId id) {
  return p->kernel_of[id] >= 0 ? &p->kernels[p->kernel_of[id]] : NULL;
}

/* Plan c's graph and check that node id is computed by a kernel of `kind`
 * with at least min_nodes nodes. */
static void check_fused(Case *c, DlNodeId id, DlKernelKind kind, int min_nodes) {
  DlProgram *p = dl_plan(c->g, 64);
  const DlKernel *k = p ? kernel_with(p, id) : NULL;
  CHECK(k && k->kind == kind && k->nnodes >= min_nodes,
        "%s: node %%%d is not in a %s kernel of %d nodes or more", c->what, (int)id,
        dl_kernel_kind_names[kind], min_nodes);
}

/* Plan c's graph and check that node id is the side reduction of a kernel. */
static void check_side(Case *c, DlNodeId id) {
  DlProgram *p = dl_plan(c->g, 64);
  const DlKernel *k = p ? kernel_with(p, id) : NULL;
  CHECK(k && k->side == id && k->root != id && p->offset[id] >= 0,
        "%s: node %%%d is not a kernel's side reduction", c->what, (int)id);
}

/* Side reductions: a map or matmul kernel that also stores the sum or mean
 * of its root over the leading axes, at odd sizes, through every path of the
 * code generator (a matmul's epilogue after the packed GEMM or the small
 * loop nest, a lone matmul, a batched product, a map, a map large enough to
 * be split between threads, the GPU's one thread per column).  The root is
 * also read by a product, so it is stored either way; the side value is the
 * output and the loss reads the root. */
static void test_side_reductions(void) {
  struct {
    const char *what;
    DlShape a, w; /* w: a product's right operand, or no rank for a map */
    bool ta;
    DlOp act, red;
    uint32_t axes;
    bool keep;
  } cases[] = {
      {"relu(x @ W + b), column sum", SHAPE(N, 37), SHAPE(37, 19), false, DL_OP_RELU, DL_OP_SUM, 1,
       true},
      {"tanh(x^T @ W + b), column mean", SHAPE(37, N), SHAPE(37, 19), true, DL_OP_TANH, DL_OP_MEAN,
       1, false},
      {"small x @ W + b, column sum", SHAPE(N, 5), SHAPE(5, 3), false, DL_OP_INPUT, DL_OP_SUM, 1,
       false},
      {"x @ W alone, column sum", SHAPE(N, 37), SHAPE(37, 19), false, DL_OP_INPUT, DL_OP_SUM, 1,
       false},
      {"batched relu(x @ W + b), sum over two axes", SHAPE(3, N, 5), SHAPE(5, 19), false,
       DL_OP_RELU, DL_OP_SUM, 3, false},
      {"batched relu(x @ W + b), sum over one axis", SHAPE(3, N, 5), SHAPE(5, 19), false,
       DL_OP_RELU, DL_OP_SUM, 1, true},
      {"map exp(x) * b, column sum", SHAPE(N, 37), {0}, false, DL_OP_EXP, DL_OP_SUM, 1, false},
      {"map exp(x) * b, mean of all", SHAPE(N, 37), {0}, false, DL_OP_EXP, DL_OP_MEAN, 0, false},
      {"map exp(x) * b split between threads, column sum",
       SHAPE(N, 4099),
       {0},
       false,
       DL_OP_EXP,
       DL_OP_SUM,
       1,
       true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[128];
    snprintf(what, sizeof what, "side reduction: %s", cases[i].what);
    Case c = case_new(what);
    DlGraph *g = c.g;
    DlNodeId x = dl_input(g, L, "x", cases[i].a, DL_ROLE_INPUT);
    int rank = cases[i].a.rank;
    int64_t cols = cases[i].w.rank ? cases[i].w.d[1] : cases[i].a.d[rank - 1];
    DlNodeId bias = dl_input(g, L, "bias", SHAPE(cols), DL_ROLE_INPUT);
    DlNodeId r;
    if (cases[i].w.rank) {
      DlNodeId w = dl_input(g, L, "w", cases[i].w, DL_ROLE_INPUT);
      r = dl_matmul(g, L, x, w, cases[i].ta, false);
      if (i != 3) r = dl_binary(g, DL_OP_ADD, L, r, bias);
      if (cases[i].act != DL_OP_INPUT) /* (none) */
        r = dl_unary(g, cases[i].act, L, r);
    } else {
      r = dl_binary(g, DL_OP_MUL, L, dl_unary(g, cases[i].act, L, x), bias);
      case_range(&c, x, -1.0, 1.0);
    }
    DlShape rs = g->nodes[r].shape;
    DlNodeId v = dl_input(g, L, "v", SHAPE(rs.d[rs.rank - 1], 2), DL_ROLE_INPUT);
    g->output = dl_reduce(g, cases[i].red, L, r, cases[i].axes, cases[i].keep);
    g->loss = dl_reduce(g, DL_OP_SUM, L, dl_matmul(g, L, r, v, false, false), 0, false);
    check_side(&c, g->output);
    c.long_sums = rs.d[rs.rank - 1] > 1000;
    case_run(&c);
  }
}

static void test_fused_chains(void) {
  /* A chain over [N, 37] reading a row vector, a column, a scalar input, a
   * constant, and a mean-expand of a reduction. */
  Case c = case_new("fused map with broadcasts");
  DlGraph *g = c.g;
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 37), DL_ROLE_INPUT);
  DlNodeId b = dl_input(g, L, "b", SHAPE(37), DL_ROLE_INPUT);
  DlNodeId col = dl_input(g, L, "col", SHAPE(N, 1), DL_ROLE_INPUT);
  DlNodeId s = dl_input(g, L, "s", dl_shape_scalar(), DL_ROLE_INPUT);
  case_range(&c, s, 0.5, 2.0);
  DlNodeId t =
      dl_unary(g, DL_OP_TANH, L, dl_binary(g, DL_OP_ADD, L, dl_binary(g, DL_OP_MUL, L, x, b), col));
  DlNodeId u = dl_binary(g, DL_OP_DIV, L, dl_unary(g, DL_OP_EXP, L, dl_unary(g, DL_OP_NEG, L, x)),
                         dl_binary(g, DL_OP_ADD, L, s, dl_const_scalar(g, L, 2.0)));
  DlNodeId e = dl_expand(g, L, dl_reduce(g, DL_OP_SUM, L, x, 2, true), SHAPE(N, 37), true);
  g->output = dl_binary(g, DL_OP_ADD, L, dl_binary(g, DL_OP_SUB, L, t, u), e);
  check_fused(&c, g->output, DL_KERNEL_MAP, 9);
  case_run(&c);

  /* Reductions of a chain, over every choice of axes. */
  static const DlOp reds[] = {DL_OP_SUM, DL_OP_MEAN, DL_OP_MAX};
  for (size_t r = 0; r < 3; r++)
    for (uint32_t axes = 1; axes < 8; axes++) {
      char what[96];
      snprintf(what, sizeof what, "fused %s axes 0x%x of a chain", dl_op_info[reds[r]].name, axes);
      c = case_new(what);
      g = c.g;
      x = dl_input(g, L, "x", SHAPE(N, 5, 7), DL_ROLE_INPUT);
      DlNodeId y = dl_input(g, L, "y", SHAPE(5, 1), DL_ROLE_INPUT);
      DlNodeId v = dl_binary(g, DL_OP_SUB, L, dl_binary(g, DL_OP_MUL, L, x, y),
                             dl_unary(g, DL_OP_ABS, L, x));
      g->output = dl_reduce(g, reds[r], L, v, axes, axes & 1);
      check_fused(&c, g->output, DL_KERNEL_REDUCE, 4);
      case_run(&c);
    }

  /* Matrix products with an epilogue: bias, activation, a second operand
   * of the product's shape; every transposition; a batched product. */
  struct {
    const char *what;
    DlShape a, b;
    bool ta, tb;
    DlOp act;
  } mm[] = {
      {"relu(x @ W + b)", SHAPE(N, 37), SHAPE(37, 19), false, false, DL_OP_RELU},
      {"sigmoid(x^T @ W + b)", SHAPE(37, N), SHAPE(37, 19), true, false, DL_OP_SIGMOID},
      {"tanh(x @ W^T + b)", SHAPE(N, 37), SHAPE(19, 37), false, true, DL_OP_TANH},
      {"relu(x^T @ W^T + b)", SHAPE(37, N), SHAPE(19, 37), true, true, DL_OP_RELU},
      {"batched tanh(x @ W + b)", SHAPE(3, N, 5), SHAPE(5, 19), false, false, DL_OP_TANH},
  };
  for (size_t i = 0; i < sizeof mm / sizeof mm[0]; i++) {
    char what[96];
    snprintf(what, sizeof what, "fused matmul %s", mm[i].what);
    c = case_new(what);
    g = c.g;
    DlNodeId a = dl_input(g, L, "a", mm[i].a, DL_ROLE_INPUT);
    DlNodeId w = dl_input(g, L, "w", mm[i].b, DL_ROLE_INPUT);
    DlNodeId bias = dl_input(g, L, "bias", SHAPE(19), DL_ROLE_INPUT);
    DlNodeId z = dl_binary(g, DL_OP_ADD, L, dl_matmul(g, L, a, w, mm[i].ta, mm[i].tb), bias);
    g->output = dl_unary(g, mm[i].act, L, z);
    check_fused(&c, g->output, DL_KERNEL_MATMUL, 3);
    case_run(&c);
  }

  /* The weight gradient of a batched product, sum over the batch of a^T b:
   * one GEMM whose k runs over the batch (and where the layout does not
   * allow it, b transposed, a batched product whose kernel sums it over the
   * batch as a side reduction). */
  for (int keep = 0; keep < 2; keep++)
    for (int tb = 0; tb < 2; tb++) {
      char what[96];
      snprintf(what, sizeof what, "sum over the batch of a^T b%s%s", tb ? "^T" : "",
               keep ? ", keepdim" : "");
      c = case_new(what);
      g = c.g;
      DlNodeId a = dl_input(g, L, "a", SHAPE(3, N, 5), DL_ROLE_INPUT);
      DlNodeId bb = dl_input(g, L, "b", tb ? SHAPE(3, 7, N) : SHAPE(3, N, 7), DL_ROLE_INPUT);
      g->output = dl_reduce(g, DL_OP_SUM, L, dl_matmul(g, L, a, bb, true, tb), 1, keep);
      check_fused(&c, g->output, DL_KERNEL_MATMUL, 1);
      if (tb) check_side(&c, g->output);
      c.long_sums = true;
      case_run(&c);
    }

  /* Declining: h feeds a matmul (which reads memory) and a map, so it is
   * stored by a kernel of its own; the broadcast exp(b) is computed once, not
   * per row; the rest fuses around them. */
  c = case_new("fusion declines");
  g = c.g;
  x = dl_input(g, L, "x", SHAPE(N, 8), DL_ROLE_INPUT);
  b = dl_input(g, L, "b", SHAPE(8), DL_ROLE_INPUT);
  DlNodeId w = dl_input(g, L, "w", SHAPE(8, 8), DL_ROLE_INPUT);
  DlNodeId h = dl_unary(g, DL_OP_EXP, L, x);
  DlNodeId eb = dl_unary(g, DL_OP_EXP, L, b);
  g->output = dl_binary(g, DL_OP_ADD, L, dl_binary(g, DL_OP_MUL, L, h, eb),
                        dl_matmul(g, L, h, w, false, false));
  DlProgram *p = dl_plan(g, 64);
  CHECK(p && kernel_with(p, h)->root == h && kernel_with(p, eb)->root == eb &&
            kernel_with(p, g->output)->kind == DL_KERNEL_MATMUL &&
            kernel_with(p, g->output)->nnodes == 3 && p->offset[h] >= 0,
        "fusion declines: wrong kernels");
  case_run(&c);
}

/* A model with every kind of fused kernel and an optimizer, planned fused
 * and unfused: one training step from the same start gives the same bits. */
static Case build_fusion_model(const DlOptimizer *opt) {
  Case c = case_new("fusion model");
  DlGraph *g = c.g;
  DlInit uni = {.kind = DL_INIT_UNIFORM, .a = -0.5, .b = 0.5};
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 13), DL_ROLE_INPUT);
  DlNodeId y = dl_input(g, L, "y", SHAPE(N, 3), DL_ROLE_TARGET);
  case_range(&c, y, 0.0, 1.0);
  DlNodeId W1 = dl_param(g, L, "W1", SHAPE(13, 21), uni);
  DlNodeId b1 = dl_param(g, L, "b1", SHAPE(21), uni);
  DlNodeId W2 = dl_param(g, L, "W2", SHAPE(21, 3), uni);
  DlNodeId h = dl_unary(g, DL_OP_RELU, L,
                        dl_binary(g, DL_OP_ADD, L, dl_matmul(g, L, x, W1, false, false), b1));
  h = dl_binary(g, DL_OP_MUL, L, h, dl_unary(g, DL_OP_SIGMOID, L, h));
  g->output = dl_matmul(g, L, h, W2, false, false);
  DlNodeId ce = dl_binary(g, DL_OP_MUL, L, y, dl_softmax(g, DL_OP_LOG_SOFTMAX, L, g->output));
  g->loss =
      dl_unary(g, DL_OP_NEG, L,
               dl_reduce(g, DL_OP_MEAN, L, dl_reduce(g, DL_OP_SUM, L, ce, 2, false), 0, false));
  bool ok =
      !dl_failed(c.cc) && dl_autodiff(g) && dl_append_optimizer(g, opt) && dl_simplify(g, NULL);
  CHECK(ok, "fusion model: autodiff failed");
  return c;
}

static void test_fused_training(void) {
  DlOptimizer opts[3] = {dl_optimizer_default(DL_OPTIM_SGD, 0.1),
                         dl_optimizer_default(DL_OPTIM_SGD, 0.1),
                         dl_optimizer_default(DL_OPTIM_ADAM, 0.01)};
  opts[1].momentum = 0.9;
  static const char *names[3] = {"sgd", "momentum", "adam"};
  for (int o = 0; o < 3; o++) {
    /* Against the interpreter, fused. */
    Case c = build_fusion_model(&opts[o]);
    char what[64];
    snprintf(what, sizeof what, "fusion model %s train_step", names[o]);
    c.what = what;
    case_run_entry(&c, DL_ENTRY_TRAIN, 3, CPU_LOOPS);
    /* Every update is fused: a kernel that ends in its ASSIGN, or for a
     * state whose new value other updates read, the kernel of that value
     * writing the state in place (and the ASSIGN has no kernel). */
    DlProgram *fused = dl_plan(c.g, 64);
    int assigns = 0, fused_assigns = 0;
    for (DlNodeId a = 0; fused && a < c.g->nnodes; a++) {
      const DlNode *nd = &c.g->nodes[a];
      if (nd->op != DL_OP_ASSIGN) continue;
      assigns++;
      const DlKernel *k = kernel_with(fused, a);
      DlNodeId x = nd->in[1];
      fused_assigns += k ? k->nnodes > 1
                         : dl_buffer_of(fused, x) == nd->in[0] && kernel_with(fused, x) &&
                               kernel_with(fused, x)->root == x;
    }
    CHECK(assigns > 0 && fused_assigns == assigns, "%s: %d of %d updates fused", what,
          fused_assigns, assigns);

    /* Fused and unfused: the same bits (the same float operations in the
     * same order, in registers or through memory). */
    DlProgram *plain = dl_plan_with(c.g, 64, &(DlPlanOptions){.no_fuse = true});
    const DlrtProgram *rp[2] = {NULL, NULL};
    DlJit *jit[2] = {dl_jit_compile(c.cc, fused, NULL, &rp[0]),
                     dl_jit_compile(c.cc, plain, NULL, &rp[1])};
    CHECK(jit[0] && jit[1] && plain->nkernels > fused->nkernels, "%s: no two plans", what);
    if (!jit[0] || !jit[1]) {
      report_diags(&c);
    } else {
      DlrtError err = {{0}};
      DlrtContext *ctx[2];
      for (int i = 0; i < 2; i++) {
        ctx[i] = dlrt_context_new(rp[i], 5, &err);
        dlrt_set_threads(ctx[i], 1, &err);
        for (int t = 0; t < rp[i]->ntensors; t++) {
          const DlrtTensor *tt = &rp[i]->tensors[t];
          if (tt->role != DLRT_ROLE_INPUT && tt->role != DLRT_ROLE_TARGET) continue;
          for (int64_t e = 0; e < tensor_numel(tt, 17); e++)
            dlrt_data(ctx[i], t)[e] = (float)dlrt_uniform01(9, (uint64_t)tt->role, (uint64_t)e);
        }
        for (int step = 0; step < 2; step++)
          CHECK(dlrt_run_train_step(ctx[i], 17, &err) == 0, "%s", err.msg);
      }
      int differ = 0;
      for (int t = 0; t < rp[0]->ntensors; t++) {
        const DlrtTensor *tt = &rp[0]->tensors[t];
        int u = dlrt_find(rp[1], tt->name, tt->role);
        CHECK(u >= 0, "%s: unfused plan lacks '%s'", what, tt->name);
        if (u < 0 || tt->role == DLRT_ROLE_GRAD) continue; /* train_step leaves them stale */
        differ += memcmp(dlrt_data(ctx[0], t), dlrt_data(ctx[1], u),
                         sizeof(float) * (size_t)tensor_numel(tt, 17)) != 0;
      }
      CHECK(differ == 0, "%s: %d tensors differ between the fused and unfused programs", what,
            differ);
      for (int i = 0; i < 2; i++)
        dlrt_context_free(ctx[i]);
    }
    for (int i = 0; i < 2; i++)
      dl_jit_free(jit[i]);
    dl_compiler_free(c.cc);
  }
}

int main(void) {
  test_training();
  test_fused_chains();
  test_side_reductions();
  test_fused_training();
  test_new_ops_training();
  test_outputs();
  test_new_ops_ptx();
  test_errors();
  return harness_finish("test_codegen_programs");
}
