/* test_codegen_layers.c - the code generator against the reference interpreter:
 * matmul, layout ops, indexing, convolution, pooling and dropout.  See codegen_harness.h. */
#include "codegen_harness.h"

static void test_matmul(void) {
  struct {
    const char *what;
    DlShape a, b;
    bool ta, tb;
  } cases[] = {
      {"7x5 @ 5x3", SHAPE(7, 5), SHAPE(5, 3), false, false},
      {"(5x7)^T @ 5x3", SHAPE(5, 7), SHAPE(5, 3), true, false},
      {"7x5 @ (3x5)^T", SHAPE(7, 5), SHAPE(3, 5), false, true},
      {"(5x7)^T @ (3x5)^T", SHAPE(5, 7), SHAPE(3, 5), true, true},
      {"x @ W", SHAPE(N, 5), SHAPE(5, 3), false, false},
      {"x @ W wide", SHAPE(N, 33), SHAPE(33, 19), false, false},
      {"x^T @ dy (contract over N)", SHAPE(N, 5), SHAPE(N, 3), true, false},
      {"dy @ W^T", SHAPE(N, 3), SHAPE(5, 3), false, true},
      {"x^T @ W^T", SHAPE(5, N), SHAPE(3, 5), true, true},
      {"W @ x^T", SHAPE(4, 6), SHAPE(N, 6), false, true},
      {"batched, broadcast b", SHAPE(2, N, 4, 5), SHAPE(5, 3), false, false},
      {"batched, broadcast both", SHAPE(3, 1, 4, 5), SHAPE(2, 5, 6), false, false},
      {"batched, transposed", SHAPE(2, 5, 4), SHAPE(2, 6, 5), true, true},
      {"1x1", SHAPE(1, 1), SHAPE(1, 1), false, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[96];
    snprintf(what, sizeof what, "matmul %s", cases[i].what);
    Case c = case_new(what);
    DlNodeId a = dl_input(c.g, L, "a", cases[i].a, DL_ROLE_INPUT);
    DlNodeId b = dl_input(c.g, L, "b", cases[i].b, DL_ROLE_INPUT);
    c.g->output = dl_matmul(c.g, L, a, b, cases[i].ta, cases[i].tb);
    case_run(&c);
  }
}

static void test_permute(void) {
  struct {
    DlShape s;
    int perm[4];
  } cases[] = {
      {SHAPE(N, 3, 5), {0, 2, 1}},       {SHAPE(N, 3, 5), {2, 0, 1}},
      {SHAPE(4, N, 3), {1, 2, 0}},       {SHAPE(2, 3, 4), {2, 1, 0}},
      {SHAPE(N, 2, 3, 5), {0, 2, 3, 1}}, {SHAPE(N, 2, 3, 5), {3, 1, 0, 2}},
      {SHAPE(2, 1, 3, 5), {1, 3, 2, 0}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[96], sbuf[64];
    snprintf(what, sizeof what, "permute %s by [%d %d %d %d]",
             dl_shape_str(&cases[i].s, sbuf, sizeof sbuf), cases[i].perm[0], cases[i].perm[1],
             cases[i].perm[2], cases[i].perm[3]);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", cases[i].s, DL_ROLE_INPUT);
    c.g->output = dl_permute(c.g, L, x, cases[i].perm);
    case_run(&c);
  }
}

static void test_slice_pad(void) {
  struct {
    const char *what;
    DlShape s;
    int64_t start[3], stop[3];
  } slices[] = {
      {"columns at an offset", SHAPE(N, 13), {0, 3}, {N, 11}},
      {"one column", SHAPE(N, 13), {0, 12}, {N, 13}},
      {"middle of rank 3", SHAPE(4, N, 9), {1, 0, 2}, {3, N, 7}},
      {"static", SHAPE(5, 6, 7), {1, 2, 3}, {4, 6, 4}},
  };
  for (size_t i = 0; i < sizeof slices / sizeof slices[0]; i++) {
    char what[96];
    snprintf(what, sizeof what, "slice %s", slices[i].what);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", slices[i].s, DL_ROLE_INPUT);
    c.g->output = dl_slice(c.g, L, x, slices[i].start, slices[i].stop);
    case_run(&c);
  }
  struct {
    const char *what;
    DlShape s;
    int64_t before[4], after[4];
  } pads[] = {
      {"columns", SHAPE(N, 5), {0, 2}, {0, 3}},
      {"image borders", SHAPE(N, 2, 5, 5), {0, 0, 1, 2}, {0, 0, 2, 1}},
      {"leading axis", SHAPE(3, N, 4), {2, 0, 0}, {1, 0, 1}},
      {"nothing", SHAPE(N, 3), {0, 0}, {0, 0}},
  };
  for (size_t i = 0; i < sizeof pads / sizeof pads[0]; i++) {
    char what[96];
    snprintf(what, sizeof what, "pad %s", pads[i].what);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", pads[i].s, DL_ROLE_INPUT);
    c.g->output = dl_pad(c.g, L, x, pads[i].before, pads[i].after);
    case_run(&c);
  }
}

static void test_concat(void) {
  struct {
    DlShape a, b;
    int axis;
  } cases[] = {
      {SHAPE(N, 3, 5), SHAPE(N, 4, 5), 1},       {SHAPE(N, 3, 5), SHAPE(N, 3, 2), 2},
      {SHAPE(2, N, 3), SHAPE(3, N, 3), 0},       {SHAPE(N, 1), SHAPE(N, 13), 1},
      {SHAPE(2, 3, 4, 5), SHAPE(2, 3, 1, 5), 2},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[96], sa[48], sb[48];
    snprintf(what, sizeof what, "concat %s and %s on axis %d",
             dl_shape_str(&cases[i].a, sa, sizeof sa), dl_shape_str(&cases[i].b, sb, sizeof sb),
             cases[i].axis);
    Case c = case_new(what);
    DlNodeId a = dl_input(c.g, L, "a", cases[i].a, DL_ROLE_INPUT);
    DlNodeId b = dl_input(c.g, L, "b", cases[i].b, DL_ROLE_INPUT);
    c.g->output = dl_concat(c.g, L, a, b, cases[i].axis);
    case_run(&c);
  }
}

static void test_indexing(void) {
  struct {
    const char *what;
    DlShape table, idx;
  } gathers[] = {
      {"embedding rows", SHAPE(7, 5), SHAPE(N, 3)},
      {"scalars", SHAPE(7), SHAPE(N, 13)},
      {"rank-3 table", SHAPE(6, 2, 3), SHAPE(N)},
  };
  for (size_t i = 0; i < sizeof gathers / sizeof gathers[0]; i++) {
    char what[96];
    /* Repeated indices, and some outside [0, V - 1] that clamp. */
    snprintf(what, sizeof what, "gather %s, repeated and clamped indices", gathers[i].what);
    Case c = case_new(what);
    DlNodeId t = dl_input(c.g, L, "table", gathers[i].table, DL_ROLE_INPUT);
    DlNodeId idx = dl_input(c.g, L, "idx", gathers[i].idx, DL_ROLE_INPUT);
    case_ints(&c, idx, -2, (double)gathers[i].table.d[0] + 1);
    c.g->output = dl_gather(c.g, L, t, idx);
    case_run(&c);

    snprintf(what, sizeof what, "scatter_add %s, repeated and clamped indices", gathers[i].what);
    c = case_new(what);
    DlShape src_shape = gathers[i].idx;
    for (int d = 1; d < gathers[i].table.rank; d++)
      src_shape.d[src_shape.rank++] = gathers[i].table.d[d];
    DlNodeId src = dl_input(c.g, L, "src", src_shape, DL_ROLE_INPUT);
    idx = dl_input(c.g, L, "idx", gathers[i].idx, DL_ROLE_INPUT);
    case_ints(&c, idx, -2, (double)gathers[i].table.d[0] + 1);
    c.g->output = dl_scatter_add(c.g, L, src, idx, gathers[i].table);
    case_run(&c);
  }
  Case c = case_new("gather, fractional indices truncate");
  DlNodeId t = dl_input(c.g, L, "table", SHAPE(5, 3), DL_ROLE_INPUT);
  DlNodeId idx = dl_input(c.g, L, "idx", SHAPE(N, 4), DL_ROLE_INPUT);
  case_range(&c, idx, -1.0, 6.0);
  c.g->output = dl_gather(c.g, L, t, idx);
  case_run(&c);
  DlShape label_shapes[] = {SHAPE(N), SHAPE(N, 3)};
  for (int i = 0; i < 2; i++) {
    c = case_new(i ? "one_hot of [N, 3]" : "one_hot of [N], labels out of range");
    DlNodeId labels = dl_input(c.g, L, "labels", label_shapes[i], DL_ROLE_INPUT);
    case_ints(&c, labels, -1, 5);
    c.g->output = dl_one_hot(c.g, L, labels, 5);
    case_run(&c);
  }
}

typedef struct ConvCase {
  const char *what;
  DlShape x, w;
  int sh, sw, ph, pw;
} ConvCase;

static void test_conv(void) {
  const ConvCase conv_cases[] = {
      {"3x3, stride 1, no padding", SHAPE(N, 2, 7, 6), SHAPE(3, 2, 3, 3), 1, 1, 0, 0},
      {"3x3, stride 1, padding 1", SHAPE(N, 2, 5, 5), SHAPE(4, 2, 3, 3), 1, 1, 1, 1},
      {"5x5, stride 2, padding 2", SHAPE(N, 1, 9, 8), SHAPE(2, 1, 5, 5), 2, 2, 2, 2},
      {"3x2, strides 2 and 1, padding 0 and 2", SHAPE(N, 3, 8, 5), SHAPE(2, 3, 3, 2), 2, 1, 0, 2},
      {"1x1, stride 3", SHAPE(N, 4, 7, 7), SHAPE(5, 4, 1, 1), 3, 3, 0, 0},
      {"padding wider than the kernel", SHAPE(2, 1, 3, 4), SHAPE(1, 1, 2, 2), 1, 2, 3, 2},
      {"LeNet's first layer", SHAPE(N, 1, 28, 28), SHAPE(6, 1, 5, 5), 1, 1, 0, 0},
      /* 8 filters or more: the input gradient goes through the GEMM too */
      {"16 filters", SHAPE(N, 3, 9, 7), SHAPE(16, 3, 3, 3), 1, 2, 1, 0},
      /* an im2col matrix over 1 MiB: the direct loops */
      {"im2col over 1 MiB", SHAPE(2, 16, 28, 28), SHAPE(9, 16, 5, 5), 1, 1, 2, 2},
  };
  for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++) {
    const ConvCase *cc = &conv_cases[i];
    char what[128];
    snprintf(what, sizeof what, "conv2d %s", cc->what);
    Case c = case_new(what);
    c.long_sums = true; /* up to 400 products per element, with cancellation */
    DlNodeId x = dl_input(c.g, L, "x", cc->x, DL_ROLE_INPUT);
    DlNodeId w = dl_input(c.g, L, "w", cc->w, DL_ROLE_INPUT);
    DlNodeId y = dl_conv2d(c.g, L, x, w, cc->sh, cc->sw, cc->ph, cc->pw);
    c.g->output = y;
    DlShape ys = c.g->nodes[y].shape;
    case_run(&c);

    snprintf(what, sizeof what, "conv2d_grad_input %s", cc->what);
    c = case_new(what);
    c.long_sums = true;
    DlNodeId dy = dl_input(c.g, L, "dy", ys, DL_ROLE_INPUT);
    w = dl_input(c.g, L, "w", cc->w, DL_ROLE_INPUT);
    c.g->output = dl_conv2d_grad_input(c.g, L, dy, w, cc->x, cc->sh, cc->sw, cc->ph, cc->pw);
    case_run(&c);

    snprintf(what, sizeof what, "conv2d_grad_filter %s", cc->what);
    c = case_new(what);
    c.long_sums = true; /* LeNet's: 64 x 24 x 24 products per element */
    x = dl_input(c.g, L, "x", cc->x, DL_ROLE_INPUT);
    dy = dl_input(c.g, L, "dy", ys, DL_ROLE_INPUT);
    c.g->output = dl_conv2d_grad_filter(c.g, L, x, dy, cc->w, cc->sh, cc->sw, cc->ph, cc->pw);
    case_run(&c);
  }
}

typedef struct PoolCase {
  const char *what;
  DlShape x;
  int kh, kw, sh, sw;
} PoolCase;

static void test_pool(void) {
  const PoolCase pool_cases[] = {
      {"2x2 stride 2 (non-overlapping)", SHAPE(N, 3, 8, 6), 2, 2, 2, 2},
      {"2x2 stride 2, odd sizes (floor)", SHAPE(N, 2, 7, 5), 2, 2, 2, 2},
      {"3x3 stride 1 (overlapping)", SHAPE(N, 2, 6, 7), 3, 3, 1, 1},
      {"3x2 strides 2 and 1", SHAPE(N, 9, 5), 3, 2, 2, 1},
      {"rank 2, whole input", SHAPE(4, 5), 4, 5, 1, 1},
  };
  static const DlOp ops[] = {DL_OP_MAXPOOL2D, DL_OP_AVGPOOL2D};
  for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++)
    for (int k = 0; k < 2; k++)
      for (int ints = 0; ints < 2; ints++) {
        const PoolCase *pc = &pool_cases[i];
        if (ints && ops[k] == DL_OP_AVGPOOL2D) continue;
        char what[128];
        snprintf(what, sizeof what, "%s %s%s", dl_op_info[ops[k]].name, pc->what,
                 ints ? ", ties" : "");
        Case c = case_new(what);
        DlNodeId x = dl_input(c.g, L, "x", pc->x, DL_ROLE_INPUT);
        if (ints) case_ints(&c, x, -2, 2);
        DlNodeId y = dl_pool2d(c.g, ops[k], L, x, pc->kh, pc->kw, pc->sh, pc->sw);
        c.g->output = y;
        DlShape ys = c.g->nodes[y].shape;
        case_run(&c);

        snprintf(what, sizeof what, "%s_grad %s%s", dl_op_info[ops[k]].name, pc->what,
                 ints ? ", ties" : "");
        c = case_new(what);
        DlNodeId dy = dl_input(c.g, L, "dy", ys, DL_ROLE_INPUT);
        if (ops[k] == DL_OP_MAXPOOL2D) {
          x = dl_input(c.g, L, "x", pc->x, DL_ROLE_INPUT);
          if (ints) case_ints(&c, x, -2, 2);
          c.g->output = dl_maxpool2d_grad(c.g, L, x, dy, pc->kh, pc->kw, pc->sh, pc->sw);
        } else {
          c.g->output = dl_avgpool2d_grad(c.g, L, dy, pc->x, pc->kh, pc->kw, pc->sh, pc->sw);
        }
        case_run(&c);
      }
}

/* The runtime switches dropout on for train_step and grad, with a fresh seed
 * per step that depends only on the context's seed and the step count, and
 * off for forward. */
static void test_dropout_runtime(void) {
  Case c = case_new("dropout in the runtime");
  DlGraph *g = c.g;
  DlNodeId x = dl_input(g, L, "x", SHAPE(N, 40), DL_ROLE_INPUT);
  DlNodeId w = dl_param(g, L, "w", SHAPE(40), (DlInit){.kind = DL_INIT_CONST, .a = 1.0});
  g->output = dl_dropout(g, L, dl_binary(g, DL_OP_MUL, L, x, w), 0.5);
  g->loss = dl_reduce(g, DL_OP_SUM, L, g->output, 0, false);
  DlProgram *prog = dl_autodiff(g) ? dl_plan(g, 4) : NULL;
  const DlrtProgram *rp = NULL;
  DlJit *jit = prog ? dl_jit_compile(c.cc, prog, NULL, &rp) : NULL;
  CHECK(jit != NULL, "dropout in the runtime: JIT failed");
  if (!jit) {
    report_diags(&c);
    dl_compiler_free(c.cc);
    return;
  }
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(rp, 11, &err), *again = dlrt_context_new(rp, 11, &err);
  int xi = dlrt_find(rp, "x", DLRT_ROLE_INPUT), oi = dlrt_find_role(rp, DLRT_ROLE_OUTPUT);
  int mode = dlrt_find(rp, DL_HYPER_TRAIN_MODE, DLRT_ROLE_HYPER);
  int seed = dlrt_find(rp, DL_HYPER_TRAIN_SEED, DLRT_ROLE_HYPER);
  CHECK(ctx && again && xi >= 0 && oi >= 0 && mode >= 0 && seed >= 0, "dropout tensors");
  if (ctx && again && xi >= 0 && oi >= 0 && mode >= 0 && seed >= 0) {
    for (int i = 0; i < 160; i++)
      dlrt_data(ctx, xi)[i] = dlrt_data(again, xi)[i] = 1.0f + (float)i;
    CHECK(dlrt_run_forward(ctx, 4, &err) == 0 && dlrt_data(ctx, mode)[0] == 0, "forward");
    bool identity = true;
    for (int i = 0; i < 160; i++)
      identity &= dlrt_data(ctx, oi)[i] == 1.0f + (float)i;
    CHECK(identity, "forward is not the identity");
    float seeds[2];
    for (int step = 0; step < 2; step++) {
      CHECK(dlrt_run_grad(ctx, 4, &err) == 0 && dlrt_data(ctx, mode)[0] == 1, "grad");
      seeds[step] = dlrt_data(ctx, seed)[0];
      int dropped = 0;
      bool scaled = true;
      for (int i = 0; i < 160; i++) {
        float y = dlrt_data(ctx, oi)[i];
        dropped += y == 0;
        scaled &= y == 0 || y == 2.0f * (1.0f + (float)i);
      }
      CHECK(scaled && dropped > 50 && dropped < 110, "step %d: %d of 160 dropped", step, dropped);
    }
    CHECK(seeds[0] != seeds[1] && seeds[0] == floorf(seeds[0]) && seeds[0] < 16777216.0f,
          "seeds %g, %g", (double)seeds[0], (double)seeds[1]);
    CHECK(ctx->steps == 2, "steps %llu", (unsigned long long)ctx->steps);
    CHECK(dlrt_run_train_step(again, 4, &err) == 0 && dlrt_data(again, seed)[0] == seeds[0],
          "the same context seed does not give the same first step");
    CHECK(dlrt_run_forward(ctx, 4, &err) == 0 && dlrt_data(ctx, mode)[0] == 0, "back to inference");
  }
  dlrt_context_free(ctx);
  dlrt_context_free(again);
  dl_jit_free(jit);
  dl_compiler_free(c.cc);
}

static void test_dropout(void) {
  static const double probs[] = {0.0, 0.3, 0.75};
  for (int train = 0; train < 2; train++)
    for (size_t i = 0; i < sizeof probs / sizeof probs[0]; i++) {
      char what[96];
      snprintf(what, sizeof what, "dropout p=%g, %s", probs[i], train ? "training" : "inference");
      Case c = case_new(what);
      DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 37), DL_ROLE_INPUT);
      DlNodeId y = dl_dropout(c.g, L, x, probs[i]);
      /* Two dropouts share the hyper leaves, with different streams. */
      c.g->output = dl_binary(c.g, DL_OP_ADD, L, y, dl_dropout(c.g, L, x, probs[i]));
      DlNodeId mode = find_hyper(c.g, DL_HYPER_TRAIN_MODE);
      DlNodeId seed = find_hyper(c.g, DL_HYPER_TRAIN_SEED);
      int nhyper = 0;
      for (DlNodeId id = 0; id < c.g->nnodes; id++)
        nhyper += c.g->nodes[id].op == DL_OP_HYPER;
      CHECK(mode != DL_NONE && seed != DL_NONE && nhyper == 2, "%s: hyper leaves", what);
      if (mode == DL_NONE || seed == DL_NONE) continue;
      c.g->nodes[mode].attr.hyper.value = train;
      c.g->nodes[seed].attr.hyper.value = 4242;
      case_run(&c);
    }
  /* The mask is the runtime's uniform numbers: same seed, stream, counter. */
  int kept = 0, same = 0, total = 4000;
  for (int i = 0; i < total; i++) {
    bool k = dl_dropout_keep(77, 5, (uint64_t)i, 0.3);
    kept += k;
    same += k == (dlrt_uniform01(77, 5, (uint64_t)i) >= 0.3);
  }
  CHECK(same == total, "dropout mask differs from dlrt_uniform01 in %d of %d", total - same, total);
  CHECK(kept > 0.65 * total && kept < 0.75 * total, "dropout kept %d of %d at p = 0.3", kept,
        total);
  CHECK(dl_hash64(12345) == dlrt_hash64(12345), "dl_hash64 differs from dlrt_hash64");
  test_dropout_runtime();
  CHECK(dl_dropout_seed(-3) == 0 && dl_dropout_seed(NAN) == 0 && dl_dropout_seed(17.9) == 17 &&
            dl_dropout_seed(1e20) == 4294967296ull,
        "dl_dropout_seed clamps and truncates");
}

int main(void) {
  test_matmul();
  test_permute();
  test_slice_pad();
  test_concat();
  test_indexing();
  test_conv();
  test_pool();
  test_dropout();
  return harness_finish("test_codegen_layers");
}
