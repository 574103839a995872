/* rt_train.c - feeding a dataset through a compiled program: the training
 * loop, evaluation, prediction and the accuracy metric. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "rt_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- accuracy ----------------------------------------------------------- */

bool dlrt_all_binary(const float *values, int64_t count) {
  for (int64_t k = 0; k < count; k++)
    if (values[k] != 0.0f && values[k] != 1.0f) return false;
  return true;
}

/* Index of the largest value, the first on ties; NaNs never win, and a row
 * of NaNs has no argmax (-1). */
static int64_t argmax(const float *values, int64_t width) {
  int64_t best = -1;
  for (int64_t k = 0; k < width; k++)
    if (!isnan(values[k]) && (best < 0 || values[k] > values[best])) best = k;
  return best;
}

bool dlrt_row_correct(const float *pred, const float *target, int64_t width) {
  if (width == 1) return (pred[0] > 0.5f) == (target[0] > 0.5f);
  int64_t predicted = argmax(pred, width);
  return predicted >= 0 && predicted == argmax(target, width);
}

double dlrt_accuracy(const float *pred, const float *target, int64_t rows, int64_t width) {
  if (!pred || !target || rows < 1 || width < 1 || !dlrt_all_binary(target, rows * width))
    return NAN;
  int64_t correct = 0;
  for (int64_t r = 0; r < rows; r++)
    correct += dlrt_row_correct(pred + r * width, target + r * width, width);
  return (double)correct / (double)rows;
}

/* ---- feeding rows ------------------------------------------------------- */

/* One input or target: where its rows come from and go to. */
typedef struct RowCopy {
  float *dst;
  const float *src;
  int64_t width; /* floats per row */
} RowCopy;

typedef struct Feed {
  RowCopy *copies;
  int ncopies;
  /* Rows per call: max_batch, or 1 when an input or target has no batch
   * dimension (each call then takes the whole tensor as one row). */
  int64_t rows_per_call;
  const char *unbatched; /* name of a tensor without a batch dimension */
  /* Accuracy: the OUTPUT's rows against the first TARGET's, when the widths
   * agree and every target value is 0 or 1. */
  bool accuracy_applies;
  const float *output;
  const float *target_rows;
  int64_t target_width;
} Feed;

static const char *model_name(const DlrtProgram *prog) {
  return prog->model ? prog->model : "(unnamed)";
}

/* Position of the batch dimension, or -1 when there is none. */
static int batch_position(const DlrtTensor *t) {
  for (int d = 0; d < t->rank; d++)
    if (t->dims[d] == DLRT_DIM_BATCH) return d;
  return -1;
}

/* Rows are copied whole, so a batch dimension must be the outermost one. */
static int check_row_layout(const DlrtTensor *t, const char *role, Feed *feed, DlrtError *err) {
  int position = batch_position(t);
  if (position > 0)
    return dlrt_fail(err,
                     "%s '%s' has its batch dimension at position %d; the runtime feeds "
                     "whole rows, so it must come first",
                     role, t->name, position);
  if (position < 0) {
    feed->rows_per_call = 1;
    if (!feed->unbatched) feed->unbatched = t->name;
  }
  return 0;
}

static int feed_prepare(DlrtContext *ctx, const DlrtDataset *ds, bool with_targets, Feed *feed,
                        DlrtError *err) {
  const DlrtProgram *prog = ctx->prog;
  memset(feed, 0, sizeof *feed);
  feed->rows_per_call = prog->max_batch;
  if (dlrt_dataset_check(prog, ds, with_targets, err) != 0) return -1;
  feed->copies = calloc((size_t)(prog->ntensors ? prog->ntensors : 1), sizeof *feed->copies);
  if (!feed->copies) return dlrt_fail(err, "out of memory");
  int target_i = -1;
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    bool is_target = t->role == DLRT_ROLE_TARGET && with_targets;
    if (t->role != DLRT_ROLE_INPUT && !is_target) continue;
    if (check_row_layout(t, is_target ? "target" : "input", feed, err) != 0) return -1;
    const DlrtField *field = dlrt_dataset_field(ds, t->name);
    feed->copies[feed->ncopies++] =
        (RowCopy){.dst = dlrt_data(ctx, i), .src = field->data, .width = field->width};
    if (is_target && target_i < 0) target_i = i;
  }
  /* An output without a batch dimension lines up with the rows only when
   * every call takes a single row. */
  int output_i = dlrt_find_role(prog, DLRT_ROLE_OUTPUT);
  if (output_i >= 0 && target_i >= 0) {
    const DlrtTensor *output = &prog->tensors[output_i];
    int position = batch_position(output);
    const DlrtField *field = dlrt_dataset_field(ds, prog->tensors[target_i].name);
    feed->output = dlrt_data(ctx, output_i);
    feed->target_rows = field->data;
    feed->target_width = field->width;
    feed->accuracy_applies = (position == 0 || (position < 0 && feed->rows_per_call == 1)) &&
                             dlrt_numel(output, 1) == field->width &&
                             dlrt_all_binary(field->data, ds->nrows * field->width);
  }
  return 0;
}

static void feed_free(Feed *feed) {
  free(feed->copies);
  feed->copies = NULL;
}

/* Row index of batch row r: through the permutation when there is one. */
static int64_t source_row(const int64_t *perm, int64_t start, int64_t r) {
  return perm ? perm[start + r] : start + r;
}

static void feed_rows(const Feed *feed, const int64_t *perm, int64_t start, int64_t n) {
  for (int c = 0; c < feed->ncopies; c++) {
    const RowCopy *copy = &feed->copies[c];
    size_t row_bytes = (size_t)copy->width * sizeof(float);
    if (!perm) {
      memcpy(copy->dst, copy->src + start * copy->width, row_bytes * (size_t)n);
      continue;
    }
    for (int64_t r = 0; r < n; r++)
      memcpy(copy->dst + r * copy->width, copy->src + source_row(perm, start, r) * copy->width,
             row_bytes);
  }
}

/* Rows of the batch the output got right (0 when accuracy does not apply). */
static int64_t count_correct(const Feed *feed, const int64_t *perm, int64_t start, int64_t n) {
  if (!feed->accuracy_applies) return 0;
  int64_t correct = 0, width = feed->target_width;
  for (int64_t r = 0; r < n; r++)
    correct += dlrt_row_correct(feed->output + r * width,
                                feed->target_rows + source_row(perm, start, r) * width, width);
  return correct;
}

static double seconds_since(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) + 1e-9 * (double)(now.tv_nsec - start->tv_nsec);
}

/* The scalar LOSS tensor, or -1 with a message. */
static int find_scalar_loss(const DlrtProgram *prog, DlrtError *err) {
  int loss_i = dlrt_find_role(prog, DLRT_ROLE_LOSS);
  if (loss_i < 0) return dlrt_fail(err, "model '%s' has no loss", model_name(prog));
  const DlrtTensor *loss = &prog->tensors[loss_i];
  if (batch_position(loss) >= 0 || dlrt_numel(loss, 1) != 1)
    return dlrt_fail(err, "loss '%s' of model '%s' is not a scalar", loss->name, model_name(prog));
  return loss_i;
}

/* ---- training ------------------------------------------------------------ */

/* Epoch `epoch`'s order of rows: a Fisher-Yates shuffle whose draws are
 * counters of the stream `epoch`, so each epoch's order depends on the seed
 * and the epoch number alone. */
static void shuffle_rows(int64_t *perm, int64_t nrows, uint64_t seed, int64_t epoch) {
  for (int64_t i = nrows - 1; i > 0; i--) {
    int64_t j = (int64_t)(dlrt_uniform01(seed, (uint64_t)epoch, (uint64_t)i) * (double)(i + 1));
    if (j > i) j = i;
    int64_t tmp = perm[i];
    perm[i] = perm[j];
    perm[j] = tmp;
  }
}

static int check_train_setup(DlrtContext *ctx, const DlrtDataset *ds, const DlrtTrainOptions *opts,
                             DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  if (!ds) return dlrt_fail(err, "no dataset given");
  if (!opts) return dlrt_fail(err, "no training options given");
  const DlrtProgram *prog = ctx->prog;
  if (find_scalar_loss(prog, err) < 0) return -1;
  if (!prog->train_step)
    return dlrt_fail(err, "model '%s' has no train_step entry point", model_name(prog));
  if (dlrt_find_role(prog, DLRT_ROLE_TARGET) < 0)
    return dlrt_fail(err, "model '%s' has no target to train against", model_name(prog));
  if (opts->batch < 1)
    return dlrt_fail(err, "batch size must be at least 1, got %lld", (long long)opts->batch);
  if (opts->batch > prog->max_batch)
    return dlrt_fail(err,
                     "batch size %lld is larger than the largest batch model '%s' was "
                     "compiled for (%lld)",
                     (long long)opts->batch, model_name(prog), (long long)prog->max_batch);
  if (opts->epochs < 0)
    return dlrt_fail(err, "the number of epochs must not be negative, got %lld",
                     (long long)opts->epochs);
  return 0;
}

int dlrt_train(DlrtContext *ctx, const DlrtDataset *ds, const DlrtTrainOptions *opts,
               DlrtEpochFn on_epoch, void *user, DlrtError *err) {
  if (check_train_setup(ctx, ds, opts, err) != 0) return -1;
  const DlrtProgram *prog = ctx->prog;
  const float *loss_value = dlrt_data(ctx, find_scalar_loss(prog, err));
  Feed feed;
  if (feed_prepare(ctx, ds, true, &feed, err) != 0) {
    feed_free(&feed);
    return -1;
  }
  if (feed.unbatched && opts->batch > 1) {
    feed_free(&feed);
    return dlrt_fail(err, "'%s' has no batch dimension, so the batch size must be 1, not %lld",
                     feed.unbatched, (long long)opts->batch);
  }
  int64_t nrows = ds->nrows;
  int64_t *perm = malloc(sizeof *perm * (size_t)nrows);
  if (!perm) {
    feed_free(&feed);
    return dlrt_fail(err, "out of memory for %lld rows", (long long)nrows);
  }
  int rc = 0;
  for (int64_t epoch = 1; rc == 0 && epoch <= opts->epochs; epoch++) {
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    /* Without shuffling, rows are read in place (no permutation). */
    const int64_t *order = NULL;
    if (opts->shuffle) {
      for (int64_t r = 0; r < nrows; r++)
        perm[r] = r;
      shuffle_rows(perm, nrows, opts->seed, epoch);
      order = perm;
    }
    double loss_sum = 0.0;
    int64_t correct = 0, step = 0;
    for (int64_t start = 0; start < nrows; start += opts->batch) {
      int64_t n = nrows - start < opts->batch ? nrows - start : opts->batch;
      step++;
      feed_rows(&feed, order, start, n);
      dlrt_set_training(ctx, 1);
      prog->train_step(ctx->mem, n);
      float loss = *loss_value;
      if (!isfinite(loss)) {
        rc = dlrt_fail(err, "loss became %s at epoch %lld, step %lld", isnan(loss) ? "nan" : "inf",
                       (long long)epoch, (long long)step);
        break;
      }
      loss_sum += (double)loss * (double)n;
      /* The output still holds this step's forward prediction: the update
       * changes parameters, not the activations computed from them. */
      correct += count_correct(&feed, order, start, n);
    }
    if (rc != 0) break;
    DlrtEpochStats stats = {
        .epoch = epoch,
        .loss = loss_sum / (double)nrows,
        .accuracy = feed.accuracy_applies ? (double)correct / (double)nrows : NAN,
        .seconds = seconds_since(&started),
    };
    if (on_epoch && on_epoch(user, &stats) != 0) break;
  }
  free(perm);
  feed_free(&feed);
  return rc;
}

/* ---- evaluation and prediction -------------------------------------------- */

int dlrt_evaluate(DlrtContext *ctx, const DlrtDataset *ds, double *loss, double *accuracy,
                  DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  if (!ds) return dlrt_fail(err, "no dataset given");
  const DlrtProgram *prog = ctx->prog;
  if (!prog->forward)
    return dlrt_fail(err, "model '%s' has no forward entry point", model_name(prog));
  bool with_targets = dlrt_find_role(prog, DLRT_ROLE_TARGET) >= 0;
  /* The forward entry computes the loss only when the model has targets. */
  const float *loss_value = NULL;
  if (with_targets && dlrt_find_role(prog, DLRT_ROLE_LOSS) >= 0) {
    int loss_i = find_scalar_loss(prog, err);
    if (loss_i < 0) return -1;
    loss_value = dlrt_data(ctx, loss_i);
  }
  Feed feed;
  if (feed_prepare(ctx, ds, with_targets, &feed, err) != 0) {
    feed_free(&feed);
    return -1;
  }
  double loss_sum = 0.0;
  int64_t correct = 0;
  for (int64_t start = 0; start < ds->nrows; start += feed.rows_per_call) {
    int64_t n = ds->nrows - start < feed.rows_per_call ? ds->nrows - start : feed.rows_per_call;
    feed_rows(&feed, NULL, start, n);
    dlrt_set_training(ctx, 0);
    prog->forward(ctx->mem, n);
    if (loss_value) loss_sum += (double)*loss_value * (double)n;
    correct += count_correct(&feed, NULL, start, n);
  }
  if (loss) *loss = loss_value ? loss_sum / (double)ds->nrows : NAN;
  if (accuracy) *accuracy = feed.accuracy_applies ? (double)correct / (double)ds->nrows : NAN;
  feed_free(&feed);
  return 0;
}

int dlrt_predict(DlrtContext *ctx, const DlrtDataset *ds, float *out, DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  if (!ds) return dlrt_fail(err, "no dataset given");
  if (!out) return dlrt_fail(err, "no output buffer given");
  const DlrtProgram *prog = ctx->prog;
  if (!prog->forward)
    return dlrt_fail(err, "model '%s' has no forward entry point", model_name(prog));
  int output_i = dlrt_find_role(prog, DLRT_ROLE_OUTPUT);
  if (output_i < 0) return dlrt_fail(err, "model '%s' has no output", model_name(prog));
  Feed feed;
  if (feed_prepare(ctx, ds, false, &feed, err) != 0) {
    feed_free(&feed);
    return -1;
  }
  if (check_row_layout(&prog->tensors[output_i], "output", &feed, err) != 0) {
    feed_free(&feed);
    return -1;
  }
  const float *output = dlrt_data(ctx, output_i);
  int64_t width = dlrt_numel(&prog->tensors[output_i], 1);
  for (int64_t start = 0; start < ds->nrows; start += feed.rows_per_call) {
    int64_t n = ds->nrows - start < feed.rows_per_call ? ds->nrows - start : feed.rows_per_call;
    feed_rows(&feed, NULL, start, n);
    dlrt_set_training(ctx, 0);
    prog->forward(ctx->mem, n);
    memcpy(out + start * width, output, (size_t)(n * width) * sizeof(float));
  }
  feed_free(&feed);
  return 0;
}
