/* test_runtime_train.c - the training loop, evaluation, prediction and the
 * accuracy rule, on a hand-written "compiled" program: linear regression
 * out = w*x + b with an MSE loss, whose entry points are the C functions
 * below (train_step does one step of SGD on w and b in mem). */
#include "check.h"
#include "dlrt.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define N DLRT_DIM_BATCH
#define MAX_BATCH 8

/* The arena.  Besides the model's tensors it has a call counter, a step at
 * which train_step reports a NaN loss, and a log of every step: its n
 * followed by the x values it saw (log[0] is the write position). */
enum {
  OFF_X = 0,
  OFF_Y = OFF_X + MAX_BATCH,
  OFF_OUT = OFF_Y + MAX_BATCH,
  OFF_W = OFF_OUT + MAX_BATCH,
  OFF_B,
  OFF_LR,
  OFF_LOSS,
  OFF_NAN_AT,
  OFF_CALLS,
  OFF_LOG,
  LOG_CAP = 2048,
  MEM_FLOATS = OFF_LOG + LOG_CAP,
};

static void forward(float *mem, int64_t n, DlrtPool *pool) {
  (void)pool;
  const float *x = mem + OFF_X, *y = mem + OFF_Y;
  float *out = mem + OFF_OUT;
  float w = mem[OFF_W], b = mem[OFF_B], sum = 0;
  for (int64_t i = 0; i < n; i++) {
    out[i] = w * x[i] + b;
    sum += (out[i] - y[i]) * (out[i] - y[i]);
  }
  mem[OFF_LOSS] = sum / (float)n;
}

static void train_step(float *mem, int64_t n, DlrtPool *pool) {
  forward(mem, n, pool);
  float *log = mem + OFF_LOG;
  if (log[0] + 1 + (float)n + 1 < LOG_CAP) {
    int pos = 1 + (int)log[0];
    log[pos++] = (float)n;
    for (int64_t i = 0; i < n; i++)
      log[pos++] = mem[OFF_X + i];
    log[0] = (float)(pos - 1);
  }
  mem[OFF_CALLS] += 1;
  const float *x = mem + OFF_X, *y = mem + OFF_Y, *out = mem + OFF_OUT;
  float grad_w = 0, grad_b = 0;
  for (int64_t i = 0; i < n; i++) {
    grad_w += 2 * (out[i] - y[i]) * x[i] / (float)n;
    grad_b += 2 * (out[i] - y[i]) / (float)n;
  }
  mem[OFF_W] -= mem[OFF_LR] * grad_w;
  mem[OFF_B] -= mem[OFF_LR] * grad_b;
  if (mem[OFF_CALLS] == mem[OFF_NAN_AT]) mem[OFF_LOSS] = NAN;
}

typedef struct Model {
  DlrtTensor tensors[10];
  DlrtProgram prog;
} Model;

static void make_model(Model *m) {
  DlrtTensor t[10] = {
      {.name = "x", .role = DLRT_ROLE_INPUT, .rank = 2, .dims = {N, 1}, .offset = OFF_X},
      {.name = "y", .role = DLRT_ROLE_TARGET, .rank = 2, .dims = {N, 1}, .offset = OFF_Y},
      {.name = "out", .role = DLRT_ROLE_OUTPUT, .rank = 2, .dims = {N, 1}, .offset = OFF_OUT},
      {.name = "w",
       .role = DLRT_ROLE_PARAM,
       .rank = 1,
       .dims = {1},
       .offset = OFF_W,
       .init = DLRT_INIT_UNIFORM,
       .a = -1,
       .b = 1},
      {.name = "b",
       .role = DLRT_ROLE_PARAM,
       .rank = 1,
       .dims = {1},
       .offset = OFF_B,
       .init = DLRT_INIT_ZERO},
      {.name = "lr", .role = DLRT_ROLE_HYPER, .rank = 0, .offset = OFF_LR, .a = 0.1},
      {.name = "loss", .role = DLRT_ROLE_LOSS, .rank = 0, .offset = OFF_LOSS},
      {.name = "nan_at", .role = DLRT_ROLE_HYPER, .rank = 0, .offset = OFF_NAN_AT, .a = 0},
      {.name = "calls", .role = DLRT_ROLE_CONST, .rank = 1, .dims = {1}, .offset = OFF_CALLS},
      {.name = "log", .role = DLRT_ROLE_CONST, .rank = 1, .dims = {LOG_CAP}, .offset = OFF_LOG},
  };
  memcpy(m->tensors, t, sizeof t);
  m->prog = (DlrtProgram){.abi_version = DLRT_ABI_VERSION,
                          .ntensors = 10,
                          .model = "linreg",
                          .mem_floats = MEM_FLOATS,
                          .max_batch = MAX_BATCH,
                          .tensors = m->tensors,
                          .forward = forward,
                          .grad = NULL,
                          .train_step = train_step};
}

/* What the epoch callback saw. */
typedef struct Epochs {
  int count;
  int stop_after; /* return nonzero after this many epochs (0: never) */
  bool in_order;  /* stats.epoch was 1, 2, 3, ... */
  bool seconds_ok;
  double loss[512];
  double accuracy[512];
} Epochs;

static int record_epoch(void *user, const DlrtEpochStats *stats) {
  Epochs *e = user;
  if (stats->epoch != e->count + 1) e->in_order = false;
  if (!(stats->seconds >= 0.0 && stats->seconds < 60.0)) e->seconds_ok = false;
  if (e->count < 512) {
    e->loss[e->count] = stats->loss;
    e->accuracy[e->count] = stats->accuracy;
  }
  e->count++;
  return e->stop_after && e->count >= e->stop_after;
}

static void init_epochs(Epochs *e, int stop_after) {
  memset(e, 0, sizeof *e);
  e->in_order = e->seconds_ok = true;
  e->stop_after = stop_after;
}

/* A dataset of x and y = slope*x + intercept. */
static void make_line(DlrtDataset *ds, int rows, float slope, float intercept) {
  float x[64], y[64];
  for (int k = 0; k < rows; k++) {
    x[k] = -1.0f + 2.0f * (float)k / (float)(rows - 1);
    y[k] = slope * x[k] + intercept;
  }
  memset(ds, 0, sizeof *ds);
  dlrt_dataset_add(ds, "x", x, rows, 1, NULL);
  dlrt_dataset_add(ds, "y", y, rows, 1, NULL);
}

static int test_converges(void) {
  int check_failures = 0;
  Model m;
  make_model(&m);
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&m.prog, 3, &err);
  CHECK(ctx != NULL);
  if (!ctx) return check_failures;
  DlrtDataset ds;
  make_line(&ds, 20, 2.0f, 1.0f);
  DlrtTrainOptions opts = {.epochs = 300, .batch = 8, .seed = 11, .shuffle = true};
  Epochs e;
  init_epochs(&e, 0);
  int rc = dlrt_train(ctx, &ds, &opts, record_epoch, &e, &err);
  CHECK(rc == 0);
  if (rc != 0) fprintf(stderr, "train: %s\n", err.msg);
  CHECK(e.count == 300);
  CHECK(e.in_order && e.seconds_ok);
  CHECK(e.loss[0] > 0.1);
  CHECK(e.loss[299] < 1e-3 * e.loss[0]);
  CHECK(e.loss[299] < 1e-6);
  CHECK(e.loss[50] < e.loss[0] && e.loss[150] < e.loss[50]);
  CHECK(isnan(e.accuracy[0])); /* targets are not 0/1 */
  float w = 0, b = 0;
  CHECK(dlrt_get(ctx, "w", &w, 1, &err) == 0 && dlrt_get(ctx, "b", &b, 1, &err) == 0);
  CHECK(fabsf(w - 2.0f) < 1e-3f);
  CHECK(fabsf(b - 1.0f) < 1e-3f);
  double loss = -1, accuracy = 0;
  CHECK(dlrt_evaluate(ctx, &ds, &loss, &accuracy, &err) == 0);
  CHECK(loss >= 0 && loss < 1e-6);
  CHECK(isnan(accuracy));
  /* No callback is fine too. */
  opts.epochs = 2;
  CHECK(dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == 0);
  dlrt_dataset_free(&ds);
  dlrt_context_free(ctx);
  return check_failures;
}

/* The steps of the log: n[s] and the x values, as counts and rows. */
typedef struct Steps {
  int count;
  int n[256];
  float x[256][MAX_BATCH];
} Steps;

static void read_log(DlrtContext *ctx, Steps *s) {
  float log[LOG_CAP];
  memset(s, 0, sizeof *s);
  dlrt_get(ctx, "log", log, LOG_CAP, NULL);
  int end = 1 + (int)log[0];
  for (int pos = 1; pos < end && s->count < 256;) {
    int n = (int)log[pos++];
    s->n[s->count] = n;
    for (int i = 0; i < n; i++)
      s->x[s->count][i] = log[pos++];
    s->count++;
  }
}

/* Train a fresh context on rows x = 0..9 and return its log. */
static int train_rows(uint64_t shuffle_seed, bool shuffle, int epochs, float lr, Steps *s,
                      float *w_after) {
  int check_failures = 0;
  Model m;
  make_model(&m);
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx != NULL);
  if (!ctx) return check_failures;
  float x[10], y[10];
  for (int k = 0; k < 10; k++) {
    x[k] = (float)k;
    y[k] = 0.1f * (float)k;
  }
  DlrtDataset ds = {0};
  CHECK(dlrt_dataset_add(&ds, "x", x, 10, 1, &err) == 0);
  CHECK(dlrt_dataset_add(&ds, "y", y, 10, 1, &err) == 0);
  CHECK(dlrt_set_hyper(ctx, "lr", lr, &err) == 0);
  DlrtTrainOptions opts = {.epochs = epochs, .batch = 4, .seed = shuffle_seed, .shuffle = shuffle};
  CHECK(dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == 0);
  read_log(ctx, s);
  CHECK(dlrt_get(ctx, "w", w_after, 1, &err) == 0);
  dlrt_dataset_free(&ds);
  dlrt_context_free(ctx);
  return check_failures;
}

static int test_batches_and_shuffle(void) {
  int check_failures = 0;
  Steps s, again, other;
  float w = 0, w_again = 0, w_other = 0;

  /* In order: batches of 4, 4 and a last one of 2 rows, every epoch. */
  check_failures += train_rows(0, false, 2, 0.0f, &s, &w);
  CHECK(s.count == 6);
  for (int step = 0; step < s.count; step++) {
    CHECK(s.n[step] == (step % 3 == 2 ? 2 : 4));
    for (int i = 0; i < s.n[step]; i++)
      CHECK(s.x[step][i] == (float)(4 * (step % 3) + i));
  }

  /* Shuffled: each epoch is a permutation of the rows, epochs differ. */
  check_failures += train_rows(5, true, 3, 0.0f, &s, &w);
  CHECK(s.count == 9);
  bool identity_everywhere = true, epochs_equal = true;
  for (int epoch = 0; epoch < 3; epoch++) {
    int seen[10] = {0};
    for (int step = 3 * epoch; step < 3 * epoch + 3; step++) {
      CHECK(s.n[step] == (step % 3 == 2 ? 2 : 4));
      for (int i = 0; i < s.n[step]; i++) {
        int row = (int)s.x[step][i];
        if (row >= 0 && row < 10) seen[row]++;
        if (row != 4 * (step % 3) + i) identity_everywhere = false;
        if (epoch > 0 && s.x[step][i] != s.x[step - 3][i]) epochs_equal = false;
      }
    }
    for (int row = 0; row < 10; row++)
      CHECK(seen[row] == 1);
  }
  CHECK(!identity_everywhere);
  CHECK(!epochs_equal);

  /* Same seed, same order and same result; another seed, another order. */
  check_failures += train_rows(5, true, 3, 0.001f, &s, &w);
  check_failures += train_rows(5, true, 3, 0.001f, &again, &w_again);
  check_failures += train_rows(6, true, 3, 0.001f, &other, &w_other);
  CHECK(memcmp(&s, &again, sizeof s) == 0);
  CHECK(w == w_again);
  CHECK(memcmp(&s, &other, sizeof s) != 0);
  CHECK(w != w_other);
  return check_failures;
}

static int test_nan_and_stop(void) {
  int check_failures = 0;
  Model m;
  make_model(&m);
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx != NULL);
  if (!ctx) return check_failures;
  DlrtDataset ds;
  make_line(&ds, 10, 2.0f, 1.0f);
  DlrtTrainOptions opts = {.epochs = 5, .batch = 4, .seed = 1, .shuffle = true};
  Epochs e;

  /* Call 5 is the second step (of three) of epoch 2. */
  CHECK(dlrt_set_hyper(ctx, "nan_at", 5.0f, &err) == 0);
  init_epochs(&e, 0);
  CHECK(dlrt_train(ctx, &ds, &opts, record_epoch, &e, &err) == -1);
  CHECK(strcmp(err.msg, "loss became nan at epoch 2, step 2") == 0);
  if (strcmp(err.msg, "loss became nan at epoch 2, step 2") != 0)
    fprintf(stderr, "message: %s\n", err.msg);
  CHECK(e.count == 1);
  CHECK(dlrt_set_hyper(ctx, "nan_at", 0.0f, &err) == 0);

  /* The callback stops training early without an error. */
  init_epochs(&e, 3);
  CHECK(dlrt_train(ctx, &ds, &opts, record_epoch, &e, &err) == 0);
  CHECK(e.count == 3);

  /* A learning rate far too large: the loss overflows. */
  CHECK(dlrt_set_hyper(ctx, "lr", 10.0f, &err) == 0);
  opts.epochs = 100;
  CHECK(dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "loss became inf at epoch ");
  dlrt_dataset_free(&ds);
  dlrt_context_free(ctx);
  return check_failures;
}

static int test_errors(void) {
  int check_failures = 0;
  Model m;
  make_model(&m);
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx != NULL);
  if (!ctx) return check_failures;
  DlrtDataset ds;
  make_line(&ds, 10, 2.0f, 1.0f);
  DlrtTrainOptions opts = {.epochs = 1, .batch = 0};
  CHECK(dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "batch size must be at least 1, got 0");
  opts.batch = 9;
  CHECK(dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "batch size 9 is larger than the largest batch model 'linreg' was compiled for "
                 "(8)");
  opts.batch = 4;
  opts.epochs = -1;
  CHECK(dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "epochs must not be negative");
  opts.epochs = 1;

  DlrtDataset no_y = {0};
  CHECK(dlrt_dataset_add(&no_y, "x", ds.fields[0].data, 10, 1, &err) == 0);
  CHECK(dlrt_train(ctx, &no_y, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "the data has no field for target 'y'");
  dlrt_dataset_free(&no_y);
  dlrt_context_free(ctx);

  /* Programs missing what training needs. */
  make_model(&m);
  m.prog.train_step = NULL;
  ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx && dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "model 'linreg' has no train_step entry point");
  dlrt_context_free(ctx);

  make_model(&m);
  m.tensors[6].role = DLRT_ROLE_CONST;
  ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx && dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "model 'linreg' has no loss");
  dlrt_context_free(ctx);

  make_model(&m);
  m.tensors[1].role = DLRT_ROLE_INPUT;
  ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx && dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "model 'linreg' has no target to train against");
  dlrt_context_free(ctx);

  make_model(&m);
  m.tensors[6].rank = 1;
  m.tensors[6].dims[0] = N; /* a per-row loss is not what the loop reads */
  m.tensors[6].offset = OFF_LOG;
  ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx && dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "loss 'loss' of model 'linreg' is not a scalar");
  dlrt_context_free(ctx);

  make_model(&m);
  m.tensors[0].dims[0] = 1;
  m.tensors[0].dims[1] = N;
  ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx && dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "input 'x' has its batch dimension at position 1");
  dlrt_context_free(ctx);

  /* Without batch dimensions every call takes one row. */
  make_model(&m);
  for (int i = 0; i < 3; i++) {
    m.tensors[i].rank = 1;
    m.tensors[i].dims[0] = 1;
  }
  ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx && dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == -1);
  CHECK_MSG(err, "'x' has no batch dimension, so the batch size must be 1, not 4");
  if (ctx) {
    opts.batch = 1;
    CHECK(dlrt_set_hyper(ctx, "lr", 0.0f, &err) == 0);
    CHECK(dlrt_train(ctx, &ds, &opts, NULL, NULL, &err) == 0);
    Steps s;
    read_log(ctx, &s);
    CHECK(s.count == 10 && s.n[9] == 1);
    double unbatched_loss = 0, batched_loss = 0;
    CHECK(dlrt_evaluate(ctx, &ds, &unbatched_loss, NULL, &err) == 0);
    CHECK(ctx->mem[OFF_CALLS] == 10); /* evaluate does not train */
    float w = 0;
    CHECK(dlrt_get(ctx, "w", &w, 1, &err) == 0);
    Model batched;
    make_model(&batched);
    DlrtContext *other = dlrt_context_new(&batched.prog, 1, &err);
    CHECK(other && dlrt_set(other, "w", &w, 1, &err) == 0);
    CHECK(other && dlrt_evaluate(other, &ds, &batched_loss, NULL, &err) == 0);
    CHECK(fabs(unbatched_loss - batched_loss) < 1e-5 * (1 + batched_loss));
    dlrt_context_free(other);
  }
  dlrt_context_free(ctx);
  dlrt_dataset_free(&ds);
  return check_failures;
}

static int test_epoch_stats_and_evaluate(void) {
  int check_failures = 0;
  Model m;
  make_model(&m);
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx != NULL);
  if (!ctx) return check_failures;
  /* out = x: rows 0, 1, 3, 4, 6 are right, 2 and 5 are wrong. */
  const float x7[7] = {0.9f, 0.2f, 0.7f, 0.4f, 0.6f, 0.1f, 0.8f};
  const float y7[7] = {1, 0, 0, 0, 1, 1, 1};
  float x[21], y[21];
  for (int k = 0; k < 21; k++) {
    x[k] = x7[k % 7];
    y[k] = y7[k % 7];
  }
  double want_loss = 0;
  for (int k = 0; k < 7; k++)
    want_loss += ((double)x7[k] - y7[k]) * ((double)x7[k] - y7[k]) / 7;
  const float one = 1, zero = 0;
  CHECK(dlrt_set(ctx, "w", &one, 1, &err) == 0 && dlrt_set(ctx, "b", &zero, 1, &err) == 0);
  CHECK(dlrt_set_hyper(ctx, "lr", 0.0f, &err) == 0);

  /* Batches of 3, 3 and 1: accuracy counts rows (5/7), where an average of
   * per-batch fractions would give (2/3 + 2/3 + 1) / 3. */
  DlrtDataset ds = {0};
  CHECK(dlrt_dataset_add(&ds, "x", x, 7, 1, &err) == 0);
  CHECK(dlrt_dataset_add(&ds, "y", y, 7, 1, &err) == 0);
  DlrtTrainOptions opts = {.epochs = 1, .batch = 3};
  Epochs e;
  init_epochs(&e, 0);
  CHECK(dlrt_train(ctx, &ds, &opts, record_epoch, &e, &err) == 0);
  CHECK(e.count == 1);
  CHECK(fabs(e.loss[0] - want_loss) < 1e-6);
  CHECK(fabs(e.accuracy[0] - 5.0 / 7.0) < 1e-12);
  double loss = 0, accuracy = 0;
  CHECK(dlrt_evaluate(ctx, &ds, &loss, &accuracy, &err) == 0);
  CHECK(fabs(loss - want_loss) < 1e-6);
  CHECK(fabs(accuracy - 5.0 / 7.0) < 1e-12);
  dlrt_dataset_free(&ds);

  /* 21 rows: evaluation runs batches of 8, 8 and 5. */
  CHECK(dlrt_dataset_add(&ds, "x", x, 21, 1, &err) == 0);
  CHECK(dlrt_dataset_add(&ds, "y", y, 21, 1, &err) == 0);
  CHECK(dlrt_evaluate(ctx, &ds, &loss, &accuracy, &err) == 0);
  CHECK(fabs(loss - want_loss) < 1e-6);
  CHECK(fabs(accuracy - 5.0 / 7.0) < 1e-12);
  init_epochs(&e, 0);
  opts.shuffle = true;
  opts.batch = 5;
  CHECK(dlrt_train(ctx, &ds, &opts, record_epoch, &e, &err) == 0);
  CHECK(fabs(e.accuracy[0] - 5.0 / 7.0) < 1e-12);
  CHECK(fabs(e.loss[0] - want_loss) < 1e-6);
  dlrt_dataset_free(&ds);
  dlrt_context_free(ctx);
  return check_failures;
}

static int test_predict(void) {
  int check_failures = 0;
  Model m;
  make_model(&m);
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx != NULL);
  if (!ctx) return check_failures;
  const float w = 3, b = -1;
  CHECK(dlrt_set(ctx, "w", &w, 1, &err) == 0 && dlrt_set(ctx, "b", &b, 1, &err) == 0);
  float x[11], out[11];
  for (int k = 0; k < 11; k++) {
    x[k] = 0.5f * (float)k;
    out[k] = -99;
  }
  DlrtDataset ds = {0};
  CHECK(dlrt_dataset_add(&ds, "x", x, 11, 1, &err) == 0);
  CHECK(dlrt_predict(ctx, &ds, out, &err) == 0);
  for (int k = 0; k < 11; k++)
    CHECK(out[k] == w * x[k] + b);
  /* Without targets there is no loss to report. */
  double loss = 0, accuracy = 0;
  CHECK(dlrt_evaluate(ctx, &ds, &loss, &accuracy, &err) == -1);
  CHECK_MSG(err, "the data has no field for target 'y'");
  dlrt_dataset_free(&ds);

  DlrtDataset wrong = {0};
  CHECK(dlrt_dataset_add(&wrong, "z", x, 11, 1, &err) == 0);
  CHECK(dlrt_predict(ctx, &wrong, out, &err) == -1);
  CHECK_MSG(err, "the data has no field for input 'x'");
  dlrt_dataset_free(&wrong);
  dlrt_context_free(ctx);

  make_model(&m);
  m.tensors[2].role = DLRT_ROLE_CONST;
  m.tensors[2].dims[0] = MAX_BATCH;
  ctx = dlrt_context_new(&m.prog, 1, &err);
  CHECK(ctx != NULL);
  CHECK(dlrt_dataset_add(&ds, "x", x, 11, 1, &err) == 0);
  CHECK(ctx && dlrt_predict(ctx, &ds, out, &err) == -1);
  CHECK_MSG(err, "model 'linreg' has no output");
  dlrt_dataset_free(&ds);
  dlrt_context_free(ctx);
  return check_failures;
}

static int test_accuracy_rule(void) {
  int check_failures = 0;
  const float pred1[4] = {0.9f, 0.4f, 0.6f, 0.5f}, target1[4] = {1, 0, 0, 1};
  CHECK(dlrt_accuracy(pred1, target1, 4, 1) == 0.5); /* 0.5 is not > 0.5 */
  const float pred3[9] = {0.1f, 0.7f, 0.2f, 0.5f, 0.5f, 0.0f, 0.3f, 0.3f, 0.4f};
  const float target3[9] = {0, 1, 0, 1, 0, 0, 1, 0, 0};
  CHECK(fabs(dlrt_accuracy(pred3, target3, 3, 3) - 2.0 / 3.0) < 1e-12); /* tie: first wins */
  const float soft[2] = {0.3f, 0.7f};
  CHECK(isnan(dlrt_accuracy(pred1, soft, 2, 1)));
  CHECK(isnan(dlrt_accuracy(pred1, target1, 0, 1)));
  const float nan_pred[2] = {NAN, NAN}, onehot[2] = {1, 0};
  CHECK(dlrt_accuracy(nan_pred, onehot, 1, 2) == 0.0);
  CHECK(dlrt_accuracy(nan_pred, onehot, 2, 1) == 0.5); /* NaN > 0.5 is false */
  return check_failures;
}

int main(void) {
  int check_failures = test_converges() + test_batches_and_shuffle() + test_nan_and_stop() +
                       test_errors() + test_epoch_stats_and_evaluate() + test_predict() +
                       test_accuracy_rule();
  if (check_failures) {
    fprintf(stderr, "test_runtime_train: %d check(s) failed\n", check_failures);
    return 1;
  }
  printf("test_runtime_train: ok\n");
  return 0;
}
