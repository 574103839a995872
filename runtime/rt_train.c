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
int64_t dlrt_argmax(const float *values, int64_t width) {
  int64_t best = -1;
  for (int64_t k = 0; k < width; k++)
    if (!isnan(values[k]) && (best < 0 || values[k] > values[best])) best = k;
  return best;
}

bool dlrt_row_correct(const float *pred, const float *target, int64_t width) {
  if (width == 1) return (pred[0] > 0.5f) == (target[0] > 0.5f);
  int64_t predicted = dlrt_argmax(pred, width);
  return predicted >= 0 && predicted == dlrt_argmax(target, width);
}

double dlrt_accuracy(const float *pred, const float *target, int64_t rows, int64_t width) {
  if (!pred || !target || rows < 1 || width < 1 || !dlrt_all_binary(target, rows * width))
    return NAN;
  int64_t correct = 0;
  for (int64_t r = 0; r < rows; r++)
    correct += dlrt_row_correct(pred + r * width, target + r * width, width);
  return (double)correct / (double)rows;
}

/* Whether every value is a whole number in [0, classes). */
static bool all_class_indices(const float *values, int64_t count, int64_t classes) {
  for (int64_t k = 0; k < count; k++)
    if (!(values[k] >= 0.0f && values[k] < (float)classes) || values[k] != floorf(values[k]))
      return false;
  return true;
}

/* ---- feeding rows ------------------------------------------------------- */

/* One input or target: where its rows come from and go to. */
typedef struct RowCopy {
  float *dst;
  const float *src;
  int64_t width; /* floats per row */
  bool augment;  /* the augmented image input */
} RowCopy;

typedef enum AccuracyRule { ACC_NONE, ACC_SAME_WIDTH, ACC_CLASS_INDEX } AccuracyRule;

typedef struct Feed {
  RowCopy *copies;
  int ncopies;
  /* Rows per call: max_batch, or 1 when an input or target has no batch
   * dimension (each call then takes the whole tensor as one row). */
  int64_t rows_per_call;
  const char *unbatched; /* name of a tensor without a batch dimension */
  /* Accuracy: the OUTPUT's rows against the first TARGET's, when the widths
   * agree and every target value is 0 or 1 (ACC_SAME_WIDTH), or the target
   * is one column of class indices for a wider output (ACC_CLASS_INDEX). */
  AccuracyRule accuracy;
  const float *output;
  int64_t output_width;
  const float *target_rows;
  int64_t target_width;
  /* Augmentation (training only). */
  const DlrtAugment *augment;
  int64_t image_h, image_w;
  float *scratch; /* one row */
  uint64_t seed;
  int64_t epoch;
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

/* The image size of the augmented input: the options', else the dataset
 * field's, else the tensor's last two axes. */
static int augment_prepare(const DlrtTensor *t, const DlrtField *field, const DlrtAugment *aug,
                           Feed *feed, DlrtError *err) {
  int64_t h = aug->height, w = aug->width;
  if (h <= 0 || w <= 0) {
    h = field->image_height;
    w = field->image_width;
  }
  if ((h <= 0 || w <= 0) && t->rank >= 3 && t->dims[t->rank - 1] > 0 && t->dims[t->rank - 2] > 0) {
    h = t->dims[t->rank - 2];
    w = t->dims[t->rank - 1];
  }
  if (aug->shift == 0 && (h <= 0 || w <= 0)) h = w = 1; /* noise needs no image */
  if (h <= 0 || w <= 0)
    return dlrt_fail(err,
                     "cannot augment input '%s': its rows are not images (declare it "
                     "[N, height, width] or give the image size)",
                     t->name);
  if (field->width % (h * w) != 0)
    return dlrt_fail(err, "cannot augment input '%s': %lld values per row are not %lldx%lld images",
                     t->name, (long long)field->width, (long long)h, (long long)w);
  if (aug->shift < 0 || aug->shift >= h || aug->shift >= w || !(aug->noise >= 0))
    return dlrt_fail(err, "invalid augmentation of '%s': shift %lld, noise %g", t->name,
                     (long long)aug->shift, aug->noise);
  feed->image_h = h;
  feed->image_w = w;
  feed->scratch = malloc(sizeof(float) * (size_t)field->width);
  if (!feed->scratch) return dlrt_fail(err, "out of memory");
  return 0;
}

static int feed_prepare(DlrtContext *ctx, const DlrtDataset *ds, bool with_targets,
                        const DlrtAugment *augment, Feed *feed, DlrtError *err) {
  const DlrtProgram *prog = ctx->prog;
  memset(feed, 0, sizeof *feed);
  feed->rows_per_call = prog->max_batch;
  if (dlrt_dataset_check(prog, ds, with_targets, err) != 0) return -1;
  feed->copies = calloc((size_t)(prog->ntensors ? prog->ntensors : 1), sizeof *feed->copies);
  if (!feed->copies) return dlrt_fail(err, "out of memory");
  bool augmented = false;
  int target_i = -1;
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    bool is_target = t->role == DLRT_ROLE_TARGET && with_targets;
    if (t->role != DLRT_ROLE_INPUT && !is_target) continue;
    if (check_row_layout(t, is_target ? "target" : "input", feed, err) != 0) return -1;
    const DlrtField *field = dlrt_dataset_field(ds, t->name);
    RowCopy copy = {.dst = dlrt_data(ctx, i), .src = field->data, .width = field->width};
    if (augment && augment->field && t->role == DLRT_ROLE_INPUT &&
        strcmp(augment->field, t->name) == 0 && (augment->shift > 0 || augment->noise > 0)) {
      if (augment_prepare(t, field, augment, feed, err) != 0) return -1;
      copy.augment = true;
      feed->augment = augment;
      augmented = true;
    }
    feed->copies[feed->ncopies++] = copy;
    if (is_target && target_i < 0) target_i = i;
  }
  if (augment && augment->field && (augment->shift > 0 || augment->noise > 0) && !augmented)
    return dlrt_fail(err, "cannot augment '%s': it is not an input of model '%s'", augment->field,
                     model_name(prog));
  /* An output without a batch dimension lines up with the rows only when
   * every call takes a single row. */
  int output_i = dlrt_find_role(prog, DLRT_ROLE_OUTPUT);
  if (output_i >= 0 && target_i >= 0) {
    const DlrtTensor *output = &prog->tensors[output_i];
    int position = batch_position(output);
    const DlrtField *field = dlrt_dataset_field(ds, prog->tensors[target_i].name);
    feed->output = dlrt_data(ctx, output_i);
    feed->output_width = dlrt_numel(output, 1);
    feed->target_rows = field->data;
    feed->target_width = field->width;
    bool rows_line_up = position == 0 || (position < 0 && feed->rows_per_call == 1);
    int64_t count = ds->nrows * field->width;
    if (rows_line_up && feed->output_width == field->width && dlrt_all_binary(field->data, count))
      feed->accuracy = ACC_SAME_WIDTH;
    else if (rows_line_up && field->width == 1 && feed->output_width > 1 &&
             all_class_indices(field->data, count, feed->output_width))
      feed->accuracy = ACC_CLASS_INDEX;
  }
  return 0;
}

static void feed_free(Feed *feed) {
  free(feed->copies);
  free(feed->scratch);
  feed->copies = NULL;
  feed->scratch = NULL;
}

/* Row index of batch row r: through the permutation when there is one. */
static int64_t source_row(const int64_t *perm, int64_t start, int64_t r) {
  return perm ? perm[start + r] : start + r;
}

/* Random streams of the runtime's draws (besides shuffling, which uses the
 * epoch number itself): distinct constants mixed with the epoch. */
enum { STREAM_SHIFT = 0x5348, STREAM_NOISE = 0x4e4f };

static uint64_t epoch_stream(uint64_t kind, int64_t epoch) {
  return dlrt_hash64(kind << 32 ^ (uint64_t)epoch);
}

/* Shift each channel of the image row by (dy, dx), zero-filling, then add
 * noise; draws depend on the seed, the epoch and the source row. */
static void augment_row(const Feed *feed, float *row, int64_t width, int64_t src_row) {
  const DlrtAugment *aug = feed->augment;
  int64_t h = feed->image_h, w = feed->image_w, plane = h * w;
  if (aug->shift > 0) {
    uint64_t stream = epoch_stream(STREAM_SHIFT, feed->epoch);
    int64_t span = 2 * aug->shift + 1;
    int64_t dy = (int64_t)(dlrt_uniform01(feed->seed, stream, 2 * (uint64_t)src_row) * span);
    int64_t dx = (int64_t)(dlrt_uniform01(feed->seed, stream, 2 * (uint64_t)src_row + 1) * span);
    dy = (dy < span ? dy : span - 1) - aug->shift;
    dx = (dx < span ? dx : span - 1) - aug->shift;
    memcpy(feed->scratch, row, sizeof(float) * (size_t)width);
    for (int64_t c = 0; c < width / plane; c++)
      for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
          int64_t sy = y - dy, sx = x - dx;
          row[c * plane + y * w + x] = sy >= 0 && sy < h && sx >= 0 && sx < w
                                           ? feed->scratch[c * plane + sy * w + sx]
                                           : 0.0f;
        }
  }
  if (aug->noise > 0) {
    uint64_t stream = epoch_stream(STREAM_NOISE, feed->epoch);
    for (int64_t k = 0; k < width; k++)
      row[k] += (float)(aug->noise *
                        dlrt_normal(feed->seed, stream, (uint64_t)src_row * (uint64_t)width + k));
  }
}

static void feed_rows(const Feed *feed, const int64_t *perm, int64_t start, int64_t n) {
  for (int c = 0; c < feed->ncopies; c++) {
    const RowCopy *copy = &feed->copies[c];
    size_t row_bytes = (size_t)copy->width * sizeof(float);
    if (!perm) {
      memcpy(copy->dst, copy->src + start * copy->width, row_bytes * (size_t)n);
    } else {
      for (int64_t r = 0; r < n; r++)
        memcpy(copy->dst + r * copy->width, copy->src + source_row(perm, start, r) * copy->width,
               row_bytes);
    }
    if (copy->augment)
      for (int64_t r = 0; r < n; r++)
        augment_row(feed, copy->dst + r * copy->width, copy->width, source_row(perm, start, r));
  }
}

/* Rows of the batch the output got right (0 when accuracy does not apply). */
static int64_t count_correct(const Feed *feed, const int64_t *perm, int64_t start, int64_t n) {
  int64_t correct = 0, tw = feed->target_width, ow = feed->output_width;
  for (int64_t r = 0; r < n; r++) {
    const float *target = feed->target_rows + source_row(perm, start, r) * tw;
    switch (feed->accuracy) {
    case ACC_NONE: return 0;
    case ACC_SAME_WIDTH: correct += dlrt_row_correct(feed->output + r * tw, target, tw); break;
    case ACC_CLASS_INDEX:
      correct += dlrt_argmax(feed->output + r * ow, ow) == (int64_t)target[0];
      break;
    }
  }
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

/* ---- schedules ------------------------------------------------------------ */

double dlrt_schedule_lr(const DlrtSchedule *s, int64_t step, int64_t steps_per_epoch,
                        int64_t total_steps) {
  if (steps_per_epoch < 1) steps_per_epoch = 1;
  if (total_steps < 1) total_steps = 1;
  int64_t warmup = (int64_t)llround(s->warmup * (double)steps_per_epoch);
  if (warmup > 0 && step < warmup) return s->lr * (double)(step + 1) / (double)warmup;
  switch ((DlrtScheduleKind)s->kind) {
  case DLRT_SCHEDULE_CONSTANT: return s->lr;
  case DLRT_SCHEDULE_STEP: {
    int64_t every = s->every > 0 ? s->every : 1;
    return s->lr * pow(s->gamma, (double)(step / steps_per_epoch / every));
  }
  case DLRT_SCHEDULE_COSINE: {
    int64_t span = total_steps - warmup;
    double p = span > 1 ? (double)(step - warmup) / (double)(span - 1) : 1.0;
    if (p > 1) p = 1;
    return s->min_lr + (s->lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * p));
  }
  case DLRT_SCHEDULE_EXPONENTIAL: {
    double p = total_steps > 1 ? (double)step / (double)(total_steps - 1) : 0.0;
    return s->lr * pow(s->end_lr / s->lr, p);
  }
  }
  return s->lr;
}

/* ---- training ------------------------------------------------------------ */

/* Epoch `epoch`'s order of rows: a Fisher-Yates shuffle whose draws are
 * counters of the stream `epoch`, so each epoch's order depends on the seed
 * and the epoch number alone. */
static void shuffle_rows(int64_t *perm, int64_t nrows, uint64_t seed, uint64_t stream) {
  for (int64_t i = nrows - 1; i > 0; i--) {
    int64_t j = (int64_t)(dlrt_uniform01(seed, stream, (uint64_t)i) * (double)(i + 1));
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
  if (opts->patience > 0 && !opts->validation)
    return dlrt_fail(err, "early stopping needs validation data");
  const DlrtSchedule *s = &opts->schedule;
  if (s->lr < 0 || (s->lr > 0 && s->kind == DLRT_SCHEDULE_EXPONENTIAL && !(s->end_lr > 0)) ||
      s->kind < DLRT_SCHEDULE_CONSTANT || s->kind > DLRT_SCHEDULE_EXPONENTIAL || s->warmup < 0)
    return dlrt_fail(err, "invalid learning-rate schedule");
  return 0;
}

/* Copy the parameters into ctx->best (allocated on first use). */
static int snapshot_best(DlrtContext *ctx, DlrtError *err) {
  const DlrtProgram *prog = ctx->prog;
  if (!ctx->best) {
    int64_t total = dlrt_param_floats(prog);
    ctx->best = malloc(sizeof(float) * (size_t)(total ? total : 1));
    if (!ctx->best) return dlrt_fail(err, "out of memory keeping the best parameters");
  }
  int64_t at = 0;
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if (t->role != DLRT_ROLE_PARAM) continue;
    int64_t count = dlrt_numel(t, 1);
    memcpy(ctx->best + at, dlrt_data(ctx, i), sizeof(float) * (size_t)count);
    at += count;
  }
  return 0;
}

static void restore_best(DlrtContext *ctx) {
  const DlrtProgram *prog = ctx->prog;
  int64_t at = 0;
  for (int i = 0; ctx->best && i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if (t->role != DLRT_ROLE_PARAM) continue;
    int64_t count = dlrt_numel(t, 1);
    memcpy(dlrt_data(ctx, i), ctx->best + at, sizeof(float) * (size_t)count);
    at += count;
  }
}

/* Early stopping's bookkeeping after an epoch with validation loss `loss`;
 * sets stats->best and stats->stop. */
static int track_best(DlrtContext *ctx, const DlrtTrainOptions *opts, DlrtEpochStats *stats,
                      DlrtError *err) {
  DlrtTrainState *ts = &ctx->train;
  if (isnan(stats->val_loss)) return 0;
  if (stats->val_loss < ts->best_loss) {
    ts->best_loss = stats->val_loss;
    ts->best_epoch = stats->epoch;
    ts->bad_epochs = 0;
    stats->best = true;
    if (opts->patience > 0 && opts->restore_best && snapshot_best(ctx, err) != 0) return -1;
  } else {
    ts->bad_epochs++;
  }
  stats->stop = opts->patience > 0 && ts->bad_epochs >= opts->patience;
  return 0;
}

int dlrt_train(DlrtContext *ctx, const DlrtDataset *ds, const DlrtTrainOptions *opts,
               DlrtEpochFn on_epoch, void *user, DlrtError *err) {
  if (check_train_setup(ctx, ds, opts, err) != 0) return -1;
  const DlrtProgram *prog = ctx->prog;
  const float *loss_value = dlrt_data(ctx, find_scalar_loss(prog, err));
  Feed feed;
  if (feed_prepare(ctx, ds, true, &opts->augment, &feed, err) != 0) {
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
  int64_t batches = (nrows + opts->batch - 1) / opts->batch;
  DlrtTrainState *ts = &ctx->train;
  int64_t last_epoch = ts->epoch + opts->epochs;
  /* Schedules span the whole run, the epochs before a resumption included. */
  int64_t total_steps = (opts->schedule_epochs > 0 ? opts->schedule_epochs : last_epoch) * batches;
  feed.seed = opts->seed;
  int rc = 0;
  bool stopped = false;
  ts->seed = opts->seed;
  for (int64_t epoch = ts->epoch + 1; rc == 0 && !stopped && epoch <= last_epoch; epoch++) {
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    feed.epoch = epoch;
    /* Without shuffling, rows are read in place (no permutation). */
    const int64_t *order = NULL;
    if (opts->shuffle) {
      for (int64_t r = 0; r < nrows; r++)
        perm[r] = r;
      shuffle_rows(perm, nrows, opts->seed, (uint64_t)epoch);
      order = perm;
    }
    double loss_sum = 0.0, lr = NAN;
    int64_t correct = 0, batch = 0;
    for (int64_t start = 0; start < nrows; start += opts->batch) {
      int64_t n = nrows - start < opts->batch ? nrows - start : opts->batch;
      batch++;
      if (opts->schedule.lr > 0) {
        lr = dlrt_schedule_lr(&opts->schedule, ts->step, batches, total_steps);
        dlrt_set_hyper_if_present(ctx, "lr", (float)lr);
      }
      dlrt_set_hyper_if_present(ctx, "train.step", (float)(ts->step + 1));
      /* Dropout's mode and seed: the seed counts the run's steps. */
      ctx->steps = (uint64_t)ts->step;
      feed_rows(&feed, order, start, n);
      dlrt_set_training(ctx, 1);
      dlrt_call_entry(ctx, prog->train_step, n);
      ts->step++;
      float loss = *loss_value;
      if (!isfinite(loss)) {
        rc = dlrt_fail(err, "loss became %s at epoch %lld, step %lld", isnan(loss) ? "nan" : "inf",
                       (long long)epoch, (long long)batch);
        break;
      }
      loss_sum += (double)loss * (double)n;
      /* The output still holds this step's forward prediction: the update
       * changes parameters, not the activations computed from them. */
      correct += count_correct(&feed, order, start, n);
      if (opts->on_batch) {
        DlrtBatchStats bs = {.epoch = epoch,
                             .batch = batch,
                             .batches = batches,
                             .rows = start + n,
                             .loss = loss_sum / (double)(start + n),
                             .batch_loss = loss,
                             .lr = lr,
                             .seconds = seconds_since(&started)};
        if (opts->on_batch(user, &bs) != 0) {
          stopped = true;
          break;
        }
      }
    }
    if (rc != 0 || stopped) break;
    ts->epoch = epoch;
    DlrtEpochStats stats = {
        .epoch = epoch,
        .loss = loss_sum / (double)nrows,
        .accuracy = feed.accuracy != ACC_NONE ? (double)correct / (double)nrows : NAN,
        .val_loss = NAN,
        .val_accuracy = NAN,
        .lr = lr,
    };
    if (opts->validation) {
      rc = dlrt_evaluate(ctx, opts->validation, &stats.val_loss, &stats.val_accuracy, err);
      if (rc == 0) rc = track_best(ctx, opts, &stats, err);
      if (rc != 0) break;
    }
    stats.seconds = seconds_since(&started);
    if (on_epoch && on_epoch(user, &stats) != 0) break;
    stopped = stats.stop;
  }
  if (rc == 0 && opts->patience > 0 && opts->restore_best) restore_best(ctx);
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
  if (feed_prepare(ctx, ds, with_targets, NULL, &feed, err) != 0) {
    feed_free(&feed);
    return -1;
  }
  double loss_sum = 0.0;
  int64_t correct = 0;
  for (int64_t start = 0; start < ds->nrows; start += feed.rows_per_call) {
    int64_t n = ds->nrows - start < feed.rows_per_call ? ds->nrows - start : feed.rows_per_call;
    feed_rows(&feed, NULL, start, n);
    dlrt_set_training(ctx, 0);
    dlrt_call_entry(ctx, prog->forward, n);
    if (loss_value) loss_sum += (double)*loss_value * (double)n;
    correct += count_correct(&feed, NULL, start, n);
  }
  if (loss) *loss = loss_value ? loss_sum / (double)ds->nrows : NAN;
  if (accuracy) *accuracy = feed.accuracy != ACC_NONE ? (double)correct / (double)ds->nrows : NAN;
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
  if (feed_prepare(ctx, ds, false, NULL, &feed, err) != 0) {
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
    dlrt_call_entry(ctx, prog->forward, n);
    memcpy(out + start * width, output, (size_t)(n * width) * sizeof(float));
  }
  feed_free(&feed);
  return 0;
}
