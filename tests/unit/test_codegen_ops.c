/* test_codegen_ops.c - the code generator against the reference interpreter:
 * elementwise ops with broadcasting, reductions, expand and reshape, softmax.  See
 * codegen_harness.h. */
#include "codegen_harness.h"

/* op(x) for x of `shape` drawn from each of the ranges. */
static void run_on_ranges(DlNodeId (*make)(DlGraph *, DlOp, DlLoc, DlNodeId), DlOp op,
                          DlShape shape, const double (*ranges)[2], size_t nranges) {
  for (size_t r = 0; r < nranges; r++) {
    char what[96];
    snprintf(what, sizeof what, "%s on [%g, %g]", dl_op_info[op].name, ranges[r][0], ranges[r][1]);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", shape, DL_ROLE_INPUT);
    case_range(&c, x, ranges[r][0], ranges[r][1]);
    c.g->output = make(c.g, op, L, x);
    case_run(&c);
  }
}

static void test_unary(void) {
  static const DlOp ops[] = {DL_OP_NEG,     DL_OP_EXP,  DL_OP_LOG,  DL_OP_SQRT, DL_OP_TANH,
                             DL_OP_SIGMOID, DL_OP_RELU, DL_OP_STEP, DL_OP_ABS,  DL_OP_SIGN};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "unary %s", dl_op_info[ops[i]].name);
    Case c = case_new(what);
    DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 37), DL_ROLE_INPUT);
    if (ops[i] == DL_OP_LOG || ops[i] == DL_OP_SQRT)
      case_range(&c, x, 0.01, 5.0);
    else
      case_range(&c, x, -6.0, 6.0);
    c.g->output = dl_unary(c.g, ops[i], L, x);
    case_run(&c);
  }
  /* Saturating functions at large |x|: +-1, 0 and 1, never NaN; tanh near 0. */
  static const double ranges[][2] = {{-100, 100}, {-1e4, 1e4}, {-0.2, 0.2}, {-1e-3, 1e-3}};
  run_on_ranges(dl_unary, DL_OP_TANH, SHAPE(N, 16), ranges, 4);
  run_on_ranges(dl_unary, DL_OP_SIGMOID, SHAPE(N, 16), ranges, 4);
  /* exp down to underflow, up to (not past) float overflow. */
  Case c = case_new("exp on [-120, 85]");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 16), DL_ROLE_INPUT);
  case_range(&c, x, -120.0, 85.0);
  c.g->output = dl_unary(c.g, DL_OP_EXP, L, x);
  case_run(&c);
}

static void test_binary(void) {
  static const DlOp ops[] = {DL_OP_ADD, DL_OP_SUB, DL_OP_MUL, DL_OP_DIV, DL_OP_POW};
  struct {
    const char *what;
    DlShape a, b;
  } shapes[] = {
      {"same", SHAPE(N, 37), SHAPE(N, 37)},
      {"row vector", SHAPE(N, 37), SHAPE(37)},
      {"row vector on the left", SHAPE(1, 37), SHAPE(N, 37)},
      {"column vector", SHAPE(N, 37), SHAPE(N, 1)},
      {"scalar", SHAPE(N, 37), dl_shape_scalar()},
      {"scalar on the left", dl_shape_scalar(), SHAPE(N, 5, 3)},
      {"outer", SHAPE(N, 1), SHAPE(1, 9)},
      {"rank 3", SHAPE(5, 1, 7), SHAPE(3, 1)},
      {"rank 4 middle", SHAPE(2, N, 1, 3), SHAPE(N, 4, 1)},
      {"static", SHAPE(3, 4), SHAPE(3, 4)},
  };
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
      char what[96];
      snprintf(what, sizeof what, "binary %s, %s", dl_op_info[ops[i]].name, shapes[s].what);
      Case c = case_new(what);
      DlNodeId a = dl_input(c.g, L, "a", shapes[s].a, DL_ROLE_INPUT);
      DlNodeId b = dl_input(c.g, L, "b", shapes[s].b, DL_ROLE_INPUT);
      if (ops[i] == DL_OP_POW) {
        case_range(&c, a, 0.1, 3.0);
        case_range(&c, b, -2.0, 2.0);
      }
      if (ops[i] == DL_OP_DIV) case_range(&c, b, 0.5, 3.0);
      c.g->output = dl_binary(c.g, ops[i], L, a, b);
      case_run(&c);
    }
  /* pow of a negative base: integer powers keep C's sign rules. */
  Case c = case_new("pow, negative base, integer exponents");
  DlNodeId a = dl_input(c.g, L, "a", SHAPE(N, 8), DL_ROLE_INPUT);
  float ex[8] = {0, 1, 2, 3, -1, -2, 4, 5};
  DlNodeId b = dl_const_data(c.g, L, SHAPE(8), ex);
  case_range(&c, a, -3.0, -0.5);
  c.g->output = dl_binary(c.g, DL_OP_POW, L, a, b);
  case_run(&c);
}

static void test_reduce(void) {
  static const DlOp ops[] = {DL_OP_SUM, DL_OP_MEAN};
  for (size_t i = 0; i < 2; i++)
    for (uint32_t axes = 1; axes < 8; axes++)
      for (int keep = 0; keep < 2; keep++) {
        char what[96];
        snprintf(what, sizeof what, "%s axes 0x%x%s of [N, 4, 6]", dl_op_info[ops[i]].name, axes,
                 keep ? " keepdim" : "");
        Case c = case_new(what);
        DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 4, 6), DL_ROLE_INPUT);
        c.g->output = dl_reduce(c.g, ops[i], L, x, axes, keep);
        case_run(&c);
      }
  Case c = case_new("mean of a vector");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(9), DL_ROLE_INPUT);
  c.g->output = dl_reduce(c.g, DL_OP_MEAN, L, x, 0, false);
  case_run(&c);
  c = case_new("sum over the batch of [N, 1]");
  x = dl_input(c.g, L, "x", SHAPE(N, 1), DL_ROLE_INPUT);
  c.g->output = dl_reduce(c.g, DL_OP_SUM, L, x, 1, false);
  case_run(&c);
}

static void test_expand_reshape(void) {
  struct {
    const char *what;
    DlShape from, to;
  } cases[] = {
      {"row to batch", SHAPE(4), SHAPE(N, 4)},       {"column to batch", SHAPE(N, 1), SHAPE(N, 5)},
      {"scalar", dl_shape_scalar(), SHAPE(3, 4)},    {"scalar to batch", SHAPE(1), SHAPE(N, 2)},
      {"middle", SHAPE(3, 1, 2), SHAPE(2, 3, 4, 2)},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int mean = 0; mean < 2; mean++) {
      char what[96];
      snprintf(what, sizeof what, "expand %s%s", cases[i].what, mean ? " (mean)" : "");
      Case c = case_new(what);
      DlNodeId x = dl_input(c.g, L, "x", cases[i].from, DL_ROLE_INPUT);
      c.g->output = dl_expand(c.g, L, x, cases[i].to, mean);
      case_run(&c);
    }
  {
    Case c = case_new("reshape view then exp");
    DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 6), DL_ROLE_INPUT);
    DlNodeId r = dl_reshape(c.g, L, x, SHAPE(N, 2, 3));
    DlNodeId w = dl_input(c.g, L, "w", SHAPE(2, 1), DL_ROLE_INPUT);
    c.g->output = dl_binary(c.g, DL_OP_MUL, L, dl_unary(c.g, DL_OP_EXP, L, r), w);
    case_run(&c);
  }
}

static void test_softmax(void) {
  static const DlOp ops[] = {DL_OP_SOFTMAX, DL_OP_LOG_SOFTMAX};
  static const double ranges[][2] = {{-3, 3}, {-50, 50}, {900, 1100}, {-1100, -900}};
  for (size_t i = 0; i < 2; i++)
    run_on_ranges(dl_softmax, ops[i], SHAPE(N, 10), ranges, 4);
  for (size_t i = 0; i < 2; i++) {
    Case c = case_new(i ? "log_softmax rank 3" : "softmax rank 3");
    DlNodeId x = dl_input(c.g, L, "x", SHAPE(2, N, 7), DL_ROLE_INPUT);
    c.g->output = dl_softmax(c.g, ops[i], L, x);
    case_run(&c);
    c = case_new(i ? "log_softmax of one element" : "softmax of one element");
    x = dl_input(c.g, L, "x", SHAPE(N, 1), DL_ROLE_INPUT);
    c.g->output = dl_softmax(c.g, ops[i], L, x);
    case_run(&c);
  }
}

/* ---- the ops of layout, indexing, convolution, pooling and dropout ---- */

static void test_compare_maximum(void) {
  static const DlOp ops[] = {DL_OP_MAXIMUM, DL_OP_GT, DL_OP_EQ};
  for (size_t i = 0; i < 3; i++)
    for (int ints = 0; ints < 2; ints++) {
      char what[96];
      snprintf(what, sizeof what, "%s, broadcast%s", dl_op_info[ops[i]].name,
               ints ? ", whole numbers (ties)" : "");
      Case c = case_new(what);
      DlNodeId a = dl_input(c.g, L, "a", SHAPE(N, 13), DL_ROLE_INPUT);
      DlNodeId b = dl_input(c.g, L, "b", SHAPE(13), DL_ROLE_INPUT);
      if (ints) {
        case_ints(&c, a, -2, 2);
        case_ints(&c, b, -2, 2);
      }
      c.g->output = ops[i] == DL_OP_MAXIMUM ? dl_binary(c.g, ops[i], L, a, b)
                                            : dl_compare(c.g, ops[i], L, a, b);
      case_run(&c);
    }
}

static void test_reduce_max(void) {
  for (uint32_t axes = 1; axes < 8; axes++)
    for (int keep = 0; keep < 2; keep++) {
      char what[96];
      snprintf(what, sizeof what, "max axes 0x%x%s of [N, 5, 3] with ties", axes,
               keep ? " keepdim" : "");
      Case c = case_new(what);
      DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 5, 3), DL_ROLE_INPUT);
      case_ints(&c, x, -3, 3);
      c.g->output = dl_reduce(c.g, DL_OP_MAX, L, x, axes, keep);
      case_run(&c);
    }
  Case c = case_new("max of very negative values");
  DlNodeId x = dl_input(c.g, L, "x", SHAPE(N, 7), DL_ROLE_INPUT);
  case_range(&c, x, -1e30, -1e29);
  c.g->output = dl_reduce(c.g, DL_OP_MAX, L, x, 2, false);
  case_run(&c);
}

int main(void) {
  test_unary();
  test_binary();
  test_reduce();
  test_expand_reshape();
  test_softmax();
  test_compare_maximum();
  test_reduce_max();
  return harness_finish("test_codegen_ops");
}
