/* test_runtime_context.c - contexts: table validation, constants,
 * hyperparameters, parameter initialisation, find/set/get, running entries. */
#include "check.h"
#include "dlrt.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define N DLRT_DIM_BATCH

/* An entry that records its batch size in the "seen" tensor (offset 40). */
static void record_n(float *mem, int64_t n, DlrtPool *pool) {
  (void)pool;
  mem[40] = (float)n;
}

static const float kConstData[4] = {1.5f, -2.0f, 3.25f, 4.0f};
static const float kParamData[3] = {7.0f, 8.0f, 9.0f};

/* x:[N,2] @0, W:[2,3] uniform @16, b:[3] const 0.5 @22, V:[64] normal @100,
 * c:[4] data @25, k:[2] const 3 @29, lr hyper 0.25 @31, D:[3] data @32,
 * Z:[5] zero @35, seen @40. */
static DlrtTensor tensor(const char *name, int role, int rank, int64_t d0, int64_t d1,
                         int64_t offset, int init, double a, double b, const float *data) {
  DlrtTensor t = {.name = name,
                  .role = role,
                  .rank = rank,
                  .offset = offset,
                  .init = init,
                  .a = a,
                  .b = b,
                  .data = data};
  t.dims[0] = d0;
  t.dims[1] = d1;
  return t;
}

typedef struct TestModel {
  DlrtTensor tensors[16];
  DlrtProgram prog;
} TestModel;

static void make_model(TestModel *m) {
  int i = 0;
  m->tensors[i++] = tensor("x", DLRT_ROLE_INPUT, 2, N, 2, 0, 0, 0, 0, NULL);
  m->tensors[i++] = tensor("W", DLRT_ROLE_PARAM, 2, 2, 3, 16, DLRT_INIT_UNIFORM, -0.5, 0.5, NULL);
  m->tensors[i++] = tensor("b", DLRT_ROLE_PARAM, 1, 3, 0, 22, DLRT_INIT_CONST, 0.5, 0, NULL);
  m->tensors[i++] = tensor("V", DLRT_ROLE_PARAM, 1, 64, 0, 100, DLRT_INIT_NORMAL, 1.0, 2.0, NULL);
  m->tensors[i++] = tensor("c", DLRT_ROLE_CONST, 1, 4, 0, 25, DLRT_INIT_DATA, 0, 0, kConstData);
  m->tensors[i++] = tensor("k", DLRT_ROLE_CONST, 1, 2, 0, 29, DLRT_INIT_CONST, 3.0, 0, NULL);
  m->tensors[i++] = tensor("lr", DLRT_ROLE_HYPER, 0, 0, 0, 31, DLRT_INIT_CONST, 0.25, 0, NULL);
  m->tensors[i++] = tensor("D", DLRT_ROLE_PARAM, 1, 3, 0, 32, DLRT_INIT_DATA, 0, 0, kParamData);
  m->tensors[i++] = tensor("Z", DLRT_ROLE_PARAM, 1, 5, 0, 35, DLRT_INIT_ZERO, 0, 0, NULL);
  m->tensors[i++] = tensor("seen", DLRT_ROLE_CONST, 1, 1, 0, 40, DLRT_INIT_ZERO, 0, 0, NULL);
  m->tensors[i++] = tensor("out", DLRT_ROLE_OUTPUT, 2, N, 1, 8, 0, 0, 0, NULL);
  m->prog = (DlrtProgram){.abi_version = DLRT_ABI_VERSION,
                          .ntensors = i,
                          .model = "test",
                          .mem_floats = 164,
                          .max_batch = 4,
                          .tensors = m->tensors,
                          .forward = record_n,
                          .grad = NULL,
                          .train_step = record_n};
}

static int test_validation(void) {
  int check_failures = 0;
  TestModel m;
  DlrtError err = {{0}};

  make_model(&m);
  m.prog.abi_version = 1; /* before entry points took the thread pool */
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "model 'test' was compiled for runtime abi 1, this runtime has abi 2");

  make_model(&m);
  m.tensors[1].offset = 160; /* W needs 6 floats, 4 are left */
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "parameter 'W' (6 floats at offset 160) does not fit in the arena of 164 floats");

  make_model(&m);
  m.tensors[0].offset = 0;
  m.prog.max_batch = 100; /* x at 100 rows needs 200 floats */
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "input 'x' (200 floats at offset 0) does not fit");

  make_model(&m);
  m.tensors[1].dims[0] = N;
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "parameter 'W' has a batch dimension");

  make_model(&m);
  m.tensors[0].dims[1] = N;
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "input 'x' has 2 batch dimensions");

  make_model(&m);
  m.tensors[1].rank = 7;
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "parameter 'W' has rank 7");

  make_model(&m);
  m.tensors[1].dims[1] = -3;
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "parameter 'W' has an invalid shape [2, -3]");

  make_model(&m);
  m.tensors[7].data = NULL;
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "parameter 'D' is initialised from data but has none");

  make_model(&m);
  m.tensors[5].init = DLRT_INIT_UNIFORM;
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "constant 'k' has unsupported init 2");

  make_model(&m);
  m.tensors[2].role = 42;
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "tensor 'b' has unknown role 42");

  make_model(&m);
  m.prog.max_batch = 0;
  CHECK(dlrt_context_new(&m.prog, 1, &err) == NULL);
  CHECK_MSG(err, "max_batch 0");

  CHECK(dlrt_context_new(NULL, 1, &err) == NULL);
  CHECK_MSG(err, "no program");
  /* A NULL error pointer is allowed. */
  CHECK(dlrt_context_new(NULL, 1, NULL) == NULL);
  return check_failures;
}

static int test_fill_and_init(void) {
  int check_failures = 0;
  TestModel m;
  make_model(&m);
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&m.prog, 1234, &err);
  CHECK(ctx != NULL);
  if (!ctx) {
    fprintf(stderr, "context: %s\n", err.msg);
    return check_failures;
  }
  CHECK(((uintptr_t)ctx->mem & 63) == 0);
  CHECK(ctx->seed == 1234);
  const float *mem = ctx->mem;
  for (int k = 0; k < 4; k++)
    CHECK(mem[25 + k] == kConstData[k]);
  CHECK(mem[29] == 3.0f && mem[30] == 3.0f);
  CHECK(mem[31] == 0.25f);
  for (int k = 0; k < 3; k++) {
    CHECK(mem[22 + k] == 0.5f);
    CHECK(mem[32 + k] == kParamData[k]);
  }
  for (int k = 0; k < 5; k++)
    CHECK(mem[35 + k] == 0.0f);
  for (int k = 0; k < 6; k++)
    CHECK(mem[16 + k] >= -0.5f && mem[16 + k] < 0.5f);
  /* Not all equal: the draws really are random. */
  CHECK(mem[16] != mem[17] || mem[17] != mem[18]);
  double sum = 0, sum_sq = 0;
  for (int k = 0; k < 64; k++) {
    sum += mem[100 + k];
    sum_sq += (double)mem[100 + k] * mem[100 + k];
  }
  double mean = sum / 64, sd = sqrt(sum_sq / 64 - mean * mean);
  CHECK(fabs(mean - 1.0) < 0.8); /* N(1, 2^2): 64 draws, mean's sd is 0.25 */
  CHECK(sd > 1.3 && sd < 2.7);
  /* Memory no tensor covers starts zeroed. */
  for (int k = 41; k < 100; k++)
    CHECK(mem[k] == 0.0f);

  /* Same seed, same weights; another seed, other weights. */
  DlrtContext *same = dlrt_context_new(&m.prog, 1234, &err);
  DlrtContext *other = dlrt_context_new(&m.prog, 4321, &err);
  CHECK(same && other);
  if (same && other) {
    CHECK(memcmp(same->mem, ctx->mem, sizeof(float) * 164) == 0);
    CHECK(memcmp(other->mem + 16, ctx->mem + 16, sizeof(float) * 6) != 0);
    CHECK(memcmp(other->mem + 100, ctx->mem + 100, sizeof(float) * 64) != 0);
    /* Re-initialising from a seed gives that seed's weights. */
    dlrt_init_params(other, 1234);
    CHECK(other->seed == 1234);
    CHECK(memcmp(other->mem, ctx->mem, sizeof(float) * 164) == 0);
  }
  dlrt_context_free(same);
  dlrt_context_free(other);

  /* A parameter's values depend on its name, not on the other parameters:
   * a model with W alone (elsewhere in memory) draws the same W. */
  DlrtTensor only_w[1] = {m.tensors[1]};
  only_w[0].offset = 3;
  DlrtProgram small = m.prog;
  small.tensors = only_w;
  small.ntensors = 1;
  small.mem_floats = 9;
  DlrtContext *alone = dlrt_context_new(&small, 1234, &err);
  CHECK(alone != NULL);
  if (alone) {
    CHECK(memcmp(alone->mem + 3, ctx->mem + 16, sizeof(float) * 6) == 0);
    dlrt_context_free(alone);
  }
  dlrt_context_free(ctx);
  dlrt_context_free(NULL);
  return check_failures;
}

static int test_find_set_get(void) {
  int check_failures = 0;
  TestModel m;
  make_model(&m);
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx != NULL);
  if (!ctx) return check_failures;
  CHECK(dlrt_find(&m.prog, "W", -1) == 1);
  CHECK(dlrt_find(&m.prog, "W", DLRT_ROLE_PARAM) == 1);
  CHECK(dlrt_find(&m.prog, "W", DLRT_ROLE_INPUT) == -1);
  CHECK(dlrt_find(&m.prog, "W9", -1) == -1);
  CHECK(dlrt_find_role(&m.prog, DLRT_ROLE_HYPER) == 6);
  CHECK(dlrt_find_role(&m.prog, DLRT_ROLE_LOSS) == -1);
  CHECK(dlrt_numel(&m.tensors[0], 1) == 2);
  CHECK(dlrt_numel(&m.tensors[0], 3) == 6);
  CHECK(dlrt_numel(&m.tensors[1], 3) == 6);
  CHECK(dlrt_numel(&m.tensors[6], 3) == 1);
  CHECK(dlrt_data(ctx, 1) == ctx->mem + 16);

  float w[6] = {1, 2, 3, 4, 5, 6}, back[6] = {0};
  CHECK(dlrt_set(ctx, "W", w, 6, &err) == 0);
  CHECK(dlrt_get(ctx, "W", back, 6, &err) == 0);
  CHECK(memcmp(w, back, sizeof w) == 0);
  CHECK(ctx->mem[16] == 1.0f && ctx->mem[21] == 6.0f);
  CHECK(dlrt_set(ctx, "W", w, 5, &err) == -1);
  CHECK_MSG(err, "tensor 'W' has 6 elements, got 5");
  CHECK(dlrt_get(ctx, "W", back, 7, &err) == -1);
  CHECK_MSG(err, "tensor 'W' has 6 elements, got 7");
  CHECK(dlrt_set(ctx, "W9", w, 6, &err) == -1);
  CHECK_MSG(err, "no tensor named 'W9'");
  CHECK(dlrt_get(ctx, "W9", back, 6, &err) == -1);
  CHECK_MSG(err, "no tensor named 'W9'");
  /* Inputs are addressed one row at a time. */
  CHECK(dlrt_set(ctx, "x", w, 2, &err) == 0);

  CHECK(dlrt_set_hyper(ctx, "lr", 0.125f, &err) == 0);
  CHECK(ctx->mem[31] == 0.125f);
  CHECK(dlrt_set_hyper(ctx, "W", 1.0f, &err) == -1);
  CHECK_MSG(err, "'W' is a parameter, not a hyperparameter");
  CHECK(dlrt_set_hyper(ctx, "momentum", 1.0f, &err) == -1);
  CHECK_MSG(err, "no hyperparameter named 'momentum'");
  dlrt_context_free(ctx);
  return check_failures;
}

static int test_run(void) {
  int check_failures = 0;
  TestModel m;
  make_model(&m);
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx != NULL);
  if (!ctx) return check_failures;
  CHECK(dlrt_run_forward(ctx, 3, &err) == 0);
  CHECK(ctx->mem[40] == 3.0f);
  CHECK(dlrt_run_train_step(ctx, 4, &err) == 0);
  CHECK(ctx->mem[40] == 4.0f);
  CHECK(dlrt_run_forward(ctx, 0, &err) == -1);
  CHECK_MSG(err, "batch size 0 is out of range: model 'test' takes 1 to 4 rows");
  CHECK(dlrt_run_forward(ctx, 5, &err) == -1);
  CHECK_MSG(err, "batch size 5 is out of range");
  CHECK(ctx->mem[40] == 4.0f); /* a refused call does not run */
  CHECK(dlrt_run_grad(ctx, 1, &err) == -1);
  CHECK_MSG(err, "model 'test' has no grad entry point");
  dlrt_context_free(ctx);
  return check_failures;
}

int main(void) {
  int check_failures = test_validation() + test_fill_and_init() + test_find_set_get() + test_run();
  if (check_failures) {
    fprintf(stderr, "test_runtime_context: %d check(s) failed\n", check_failures);
    return 1;
  }
  printf("test_runtime_context: ok\n");
  return 0;
}
