/* dlrt.h - the dlcc runtime: what compiled models run on.
 *
 * It depends on libc and libm only (no LLVM): an object file made by
 * `dlcc compile` links against this library alone (plus zlib if the program
 * reads IDX files with dlrt_idx_load, which lives in its own object).
 *
 * A compiled model is described by a DlrtProgram: the size of its memory
 * (one float arena), every named tensor in it (parameters, inputs, outputs,
 * constants, hyperparameters, gradients) with its offset, and its entry
 * points.  The compiler emits this table as data next to the code, both in
 * the JIT and in object files; the runtime only reads it.
 *
 * Errors: functions return 0 on success and -1 on failure, with a message in
 * the DlrtError the caller passed (which may be NULL).  Nothing is printed.
 */
#ifndef DLRT_H
#define DLRT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DLRT_ABI_VERSION 2
#define DLRT_MAX_RANK 6
#define DLRT_DIM_BATCH ((int64_t)-1)

typedef struct DlrtError {
  char msg[512];
} DlrtError;

typedef enum DlrtRole {
  DLRT_ROLE_PARAM = 0,  /* trainable parameter, saved in checkpoints */
  DLRT_ROLE_INPUT = 1,  /* model input, filled per batch */
  DLRT_ROLE_TARGET = 2, /* training target, filled per batch */
  DLRT_ROLE_OUTPUT = 3, /* the model's prediction */
  DLRT_ROLE_LOSS = 4,   /* scalar loss (mean over the batch or as written) */
  DLRT_ROLE_CONST = 5,  /* literal, filled once at context creation */
  DLRT_ROLE_HYPER = 6,  /* runtime scalar (learning rate ...) */
  DLRT_ROLE_GRAD = 7,   /* gradient of the parameter of the same name */
  DLRT_ROLE_STATE = 8,  /* optimiser state ("optim/m/W"): zero at first, saved in checkpoints */
} DlrtRole;

typedef enum DlrtInit {
  DLRT_INIT_ZERO = 0,
  DLRT_INIT_CONST = 1,   /* a */
  DLRT_INIT_UNIFORM = 2, /* U(a, b) */
  DLRT_INIT_NORMAL = 3,  /* N(a, b^2) */
  DLRT_INIT_DATA = 4,    /* data[] */
} DlrtInit;

/* One named tensor of a compiled program.  The layout is an ABI: the
 * compiler emits arrays of this struct (codegen/codegen.c must match). */
typedef struct DlrtTensor {
  const char *name;
  int32_t role; /* DlrtRole */
  int32_t rank;
  int64_t dims[DLRT_MAX_RANK]; /* DLRT_DIM_BATCH for the batch dimension */
  int64_t offset;              /* in floats from the start of mem */
  int32_t init;                /* DlrtInit, for PARAM, CONST and HYPER */
  int32_t pad_;
  double a, b;       /* init arguments; HYPER: a is the default value */
  const float *data; /* DLRT_INIT_DATA: static element count floats */
} DlrtTensor;

/* The runtime's thread pool (runtime/rt_threads.c), which compiled code
 * splits its large kernels over; opaque. */
typedef struct DlrtPool DlrtPool;

/* An entry point: runs on the context's memory for a batch of n rows.  pool
 * may be NULL: everything runs on the calling thread.  Results are the same
 * bit for bit whatever the pool's size. */
typedef void (*DlrtEntryFn)(float *mem, int64_t n, DlrtPool *pool);

typedef struct DlrtProgram {
  int32_t abi_version; /* DLRT_ABI_VERSION */
  int32_t ntensors;
  const char *model;  /* model name */
  int64_t mem_floats; /* size of the arena */
  int64_t max_batch;  /* largest n the entry points accept */
  const DlrtTensor *tensors;
  DlrtEntryFn forward;    /* never NULL */
  DlrtEntryFn grad;       /* NULL when the model has no loss or no params */
  DlrtEntryFn train_step; /* NULL likewise */
} DlrtProgram;

/* ---- contexts ---- */

/* Where a training run stands: what a checkpoint stores besides tensors so
 * that a run can be resumed bit for bit.  Every random draw of the training
 * loop (shuffling, augmentation, dropout) is a function of the seed and these
 * counters, so they are the random generator's whole position. */
typedef struct DlrtTrainState {
  uint64_t seed;      /* shuffling, augmentation, dropout */
  int64_t epoch;      /* epochs completed */
  int64_t step;       /* optimizer steps taken (Adam's t of the next step is step + 1) */
  double best_loss;   /* early stopping: best validation loss so far (INFINITY: none yet) */
  int64_t best_epoch; /* the epoch that reached it (0: none) */
  int64_t bad_epochs; /* epochs since then without improvement */
} DlrtTrainState;

typedef struct DlrtContext {
  const DlrtProgram *prog;
  float *mem; /* prog->mem_floats floats, 64-byte aligned */
  uint64_t seed;
  DlrtTrainState train;
  /* Early stopping: the parameters of train.best_epoch, one after another in
   * table order (NULL until there is a best epoch). */
  float *best;
  uint64_t steps; /* training/gradient steps run: dropout's seed counter (dlrt_train keeps
                     it equal to train.step, so a resumed run draws the same masks) */
  int threads;    /* threads the entries run on; 0: one per core */
  DlrtPool *pool; /* made at the first run with threads > 1, else NULL */
} DlrtContext;

/* Allocate memory, fill constants and hyperparameter defaults, initialise the
 * parameters from `seed` (same seed, same weights). */
DlrtContext *dlrt_context_new(const DlrtProgram *prog, uint64_t seed, DlrtError *err);
void dlrt_context_free(DlrtContext *ctx);
/* Re-initialise the parameters from a seed, zero the optimiser state and
 * reset the training position (a fresh run).  Each parameter draws from its
 * own stream (seed, parameter name), so adding a parameter does not change
 * the others' initial values. */
void dlrt_init_params(DlrtContext *ctx, uint64_t seed);
/* Set a hyperparameter if the program has one of that name (the training
 * loop's "lr", "train.step", "train.mode", "train.seed"). */
void dlrt_set_hyper_if_present(DlrtContext *ctx, const char *name, float value);

/* Run the context's entries on `threads` threads (0: one per core, 1: the
 * calling thread only).  The pool is made now; fails only if no thread can
 * be started. */
int dlrt_set_threads(DlrtContext *ctx, int threads, DlrtError *err);

/* Index of the first tensor with this name and role (role < 0: any role), or
 * -1. */
int dlrt_find(const DlrtProgram *prog, const char *name, int role);
/* First tensor of a role, or -1. */
int dlrt_find_role(const DlrtProgram *prog, int role);
/* Elements of tensor i at batch size n. */
int64_t dlrt_numel(const DlrtTensor *t, int64_t n);
static inline float *dlrt_data(DlrtContext *ctx, int i) {
  return ctx->mem + ctx->prog->tensors[i].offset;
}

/* Copy a parameter (or any tensor) in or out by name; count must equal its
 * element count at batch size 1 (parameters have no batch dimension). */
int dlrt_set(DlrtContext *ctx, const char *name, const float *src, int64_t count, DlrtError *err);
int dlrt_get(DlrtContext *ctx, const char *name, float *dst, int64_t count, DlrtError *err);
int dlrt_set_hyper(DlrtContext *ctx, const char *name, float value, DlrtError *err);

/* Run an entry point on the first n rows already placed in the inputs.
 * Each sets the hyperparameters of dropout first (dlrt_set_training): forward
 * runs in inference mode, train_step and grad in training mode. */
int dlrt_run_forward(DlrtContext *ctx, int64_t n, DlrtError *err);
int dlrt_run_train_step(DlrtContext *ctx, int64_t n, DlrtError *err);
int dlrt_run_grad(DlrtContext *ctx, int64_t n, DlrtError *err);
/* Dropout's hyperparameters, where the model has them: "train.mode" = 0
 * (inference: dropout is the identity) or 1, and for training a fresh
 * "train.seed", hash(seed, steps) in 24 bits (exact as a float), with
 * ctx->steps counted up, so that every step draws a new reproducible mask.
 * Callers that run entries directly call this first. */
void dlrt_set_training(DlrtContext *ctx, int training);

/* ---- checkpoints (safetensors, F32, one tensor per parameter) ----
 * A checkpoint holds the parameters (by name), the optimiser state
 * ("optim/m/W", ...), early stopping's best parameters ("best/W") when there
 * are some, and in "__metadata__" the training position (ctx->train: seed,
 * epoch, step, best_loss, best_epoch, bad_epochs).
 * Saving writes to a temporary file in the same directory and renames it
 * into place, so a crash never leaves a half-written checkpoint. */
int dlrt_save(DlrtContext *ctx, const char *path, DlrtError *err);
/* Parameters only: every parameter must be present with its exact shape.
 * Optimiser state and best-parameter tensors are ignored; any other extra
 * tensor is an error (it means the checkpoint belongs to another model). */
int dlrt_load(DlrtContext *ctx, const char *path, DlrtError *err);
/* Everything, to continue a run: parameters, optimiser state (which must
 * match the program's: same optimizer), best parameters and the training
 * position.  Nothing changes unless all of it checks out. */
int dlrt_resume(DlrtContext *ctx, const char *path, DlrtError *err);
/* Whether a tensor name is a checkpoint's optimiser state or best copy
 * rather than a parameter ("optim/..." and "best/..."). */
bool dlrt_is_training_tensor(const char *name);

/* A minimal reader for tests and tools: list the F32 tensors of a
 * safetensors file.  Free with dlrt_safetensors_free. */
typedef struct DlrtStTensor {
  char *name;
  int rank;
  int64_t dims[DLRT_MAX_RANK];
  float *data;
  int64_t numel;
} DlrtStTensor;
typedef struct DlrtStMeta {
  char *key, *value;
} DlrtStMeta;
typedef struct DlrtStFile {
  int ntensors;
  DlrtStTensor *tensors;
  int nmeta; /* the "__metadata__" strings, in file order */
  DlrtStMeta *meta;
} DlrtStFile;
int dlrt_safetensors_read(const char *path, DlrtStFile *out, DlrtError *err);
void dlrt_safetensors_free(DlrtStFile *f);
/* Write tensors (names, shapes, data) atomically. */
int dlrt_safetensors_write(const char *path, const DlrtStTensor *tensors, int ntensors,
                           DlrtError *err);
/* The same with "__metadata__" strings besides "format": "dlcc" (keys must
 * not repeat or be "format"). */
int dlrt_safetensors_write_meta(const char *path, const DlrtStTensor *tensors, int ntensors,
                                const DlrtStMeta *meta, int nmeta, DlrtError *err);
/* The value of a metadata key, or NULL. */
const char *dlrt_safetensors_meta(const DlrtStFile *f, const char *key);

/* ---- data ---- */

#define DLRT_MAX_FIELDS 8

/* A dataset is a table of rows; each field (one per model input or target,
 * matched by name) holds `width` floats per row. */
typedef struct DlrtField {
  char name[64];
  int64_t width;
  float *data; /* nrows * width, owned by the dataset */
  /* Images (IDX files): each row is channels x height x width values, with
   * width * height dividing `width`; 0 when the rows are not images. */
  int64_t image_height, image_width;
} DlrtField;

typedef struct DlrtDataset {
  int64_t nrows;
  int nfields;
  DlrtField fields[DLRT_MAX_FIELDS];
} DlrtDataset;

/* A CSV column selection: field `name` takes columns first..first+count-1. */
typedef struct DlrtCsvColumns {
  const char *name;
  int first, count;
} DlrtCsvColumns;

/* Load a CSV of numbers.  header: skip the first line.  Errors name the file,
 * line and column of a bad value, and a row with too few columns. */
int dlrt_csv_load(const char *path, bool header, const DlrtCsvColumns *cols, int ncols,
                  DlrtDataset *out, DlrtError *err);
/* Add a field by copying nrows*width floats (the first field sets nrows). */
int dlrt_dataset_add(DlrtDataset *ds, const char *name, const float *data, int64_t nrows,
                     int64_t width, DlrtError *err);
void dlrt_dataset_free(DlrtDataset *ds);
const DlrtField *dlrt_dataset_field(const DlrtDataset *ds, const char *name);
/* Check that the dataset has a field of the right width for every input (and
 * every target if with_targets) of the program. */
int dlrt_dataset_check(const DlrtProgram *prog, const DlrtDataset *ds, bool with_targets,
                       DlrtError *err);
/* Copy rows [first, first + count) of ds through `order` (NULL: in place)
 * into a new dataset. */
int dlrt_dataset_rows(const DlrtDataset *ds, const int64_t *order, int64_t first, int64_t count,
                      DlrtDataset *out, DlrtError *err);
/* Split off a held-out part: a seeded shuffle of the rows, then the last
 * round(fraction * nrows) rows (at least 1) go to `held`, the others to
 * `kept` in their shuffled order.  0 < fraction < 1 and both parts must be
 * non-empty.  ds is left unchanged. */
int dlrt_dataset_split(const DlrtDataset *ds, double fraction, uint64_t seed, DlrtDataset *kept,
                       DlrtDataset *held, DlrtError *err);
/* Per-column mean and standard deviation of a field (std < 1e-6 counts as 1,
 * so constant columns stay finite); mean and std hold field->width values. */
void dlrt_field_stats(const DlrtField *f, int64_t nrows, float *mean, float *std);
/* (x - mean) / std per column. */
void dlrt_field_normalize(DlrtField *f, int64_t nrows, const float *mean, const float *std);

/* Labels in a single column: one-hot to `classes` columns (classes > 1), or
 * kept as the class index (classes == 1, the value checked to be a whole
 * number).  Every label must be a whole number in [0, classes) (any
 * non-negative whole number when classes == 1); errors name `what` (a file)
 * and the row. */
int dlrt_labels_to_field(const float *labels, int64_t nrows, int64_t classes, const char *what,
                         DlrtField *out, DlrtError *err);

/* ---- IDX files (MNIST's format), plain or gzip (needs zlib: rt_idx.c) ----
 * Unsigned-byte IDX: magic 0x0000080D with D dimensions, big-endian sizes,
 * then the bytes.  An images file (D >= 2) gives one row per item of
 * prod(sizes[1..]) values scaled to [0, 1]; a labels file (D == 1) gives
 * class indices. */
typedef struct DlrtIdxSpec {
  const char *images, *labels; /* paths */
  const char *input, *target;  /* field names */
  int64_t input_width;         /* values per row the model's input takes */
  int64_t classes;             /* target width: > 1 one-hot, 1 class index */
  int64_t limit;               /* at most this many items (0: all) */
} DlrtIdxSpec;
int dlrt_idx_load(const DlrtIdxSpec *spec, DlrtDataset *out, DlrtError *err);

/* ---- text for character-level models (rt_text.c) ----
 * The vocabulary is fixed: '\n' is 0, the printable ASCII characters ' '
 * to '~' are 1 to 95 (DLRT_TEXT_VOCAB symbols); a tab counts as a space, a
 * CR is dropped, and any other byte is dropped.  Row i predicts character
 * i + context from the `context` characters before it. */
#define DLRT_TEXT_VOCAB 96
typedef struct DlrtTextSpec {
  const char *path;
  const char *input, *target;
  int64_t context;      /* characters of context per row */
  int64_t input_width;  /* context * DLRT_TEXT_VOCAB (one-hot) or context (indices) */
  int64_t target_width; /* DLRT_TEXT_VOCAB (one-hot) or 1 (index) */
  int64_t limit;        /* at most this many rows (0: all) */
} DlrtTextSpec;
int dlrt_text_load(const DlrtTextSpec *spec, DlrtDataset *out, DlrtError *err);
/* Symbol of a byte, or -1 when the byte is dropped. */
int dlrt_text_symbol(unsigned char c);
/* Cross-entropy (nats per character) of predicting each target character
 * of `eval` with the character frequencies of `train` (add-one smoothed):
 * the unigram baseline a character model has to beat.  Both datasets come
 * from dlrt_text_load with the same target field. */
double dlrt_unigram_loss(const DlrtDataset *train, const DlrtDataset *eval, const char *target);

/* ---- training ---- */

/* Learning-rate schedules: the rate of each optimizer step, which the
 * training loop writes into the "lr" hyperparameter before the step. */
typedef enum DlrtScheduleKind {
  DLRT_SCHEDULE_CONSTANT = 0,
  DLRT_SCHEDULE_STEP = 1,        /* lr * gamma^floor(epoch / every) */
  DLRT_SCHEDULE_COSINE = 2,      /* from lr down to min_lr over the run, half a cosine */
  DLRT_SCHEDULE_EXPONENTIAL = 3, /* from lr up (or down) to end_lr over the run: lr-find */
} DlrtScheduleKind;

typedef struct DlrtSchedule {
  int32_t kind;  /* DlrtScheduleKind */
  double lr;     /* base rate; 0 leaves the "lr" hyperparameter alone */
  double warmup; /* epochs of linear warm-up to lr first (0: none) */
  int64_t every; /* STEP: epochs between decays */
  double gamma;  /* STEP: factor per decay */
  double min_lr; /* COSINE: the final rate */
  double end_lr; /* EXPONENTIAL: the final rate */
} DlrtSchedule;

/* The rate of optimizer step `step` (0-based) of a run of `total_steps`
 * steps, `steps_per_epoch` per epoch. */
double dlrt_schedule_lr(const DlrtSchedule *s, int64_t step, int64_t steps_per_epoch,
                        int64_t total_steps);

/* On-the-fly augmentation of one image input while rows are fed to
 * train_step (never when evaluating).  Draws depend only on the seed, the
 * epoch and the row, so runs and resumed runs see the same images. */
typedef struct DlrtAugment {
  const char *field;     /* the input to augment; NULL: no augmentation */
  int64_t shift;         /* shift each image by up to this many pixels each way (0: none) */
  double noise;          /* add Gaussian noise of this standard deviation (0: none) */
  int64_t height, width; /* the image size; 0: from the dataset field */
} DlrtAugment;

typedef struct DlrtBatchStats {
  int64_t epoch, batch, batches; /* 1-based epoch and batch, batches per epoch */
  int64_t rows;                  /* rows trained on so far this epoch */
  double loss;                   /* mean loss so far this epoch */
  double batch_loss;             /* this batch's loss */
  double lr;                     /* of this batch's step */
  double seconds;                /* since the epoch started */
} DlrtBatchStats;

/* Called after every batch; return nonzero to stop after this batch. */
typedef int (*DlrtBatchFn)(void *user, const DlrtBatchStats *stats);

typedef struct DlrtTrainOptions {
  int64_t epochs; /* epochs to run, after the ctx->train.epoch ones already done */
  int64_t batch;  /* <= prog->max_batch */
  uint64_t seed;  /* shuffling, augmentation, dropout */
  bool shuffle;
  /* Evaluated after every epoch (NULL: none). */
  const DlrtDataset *validation;
  DlrtSchedule schedule;
  /* Early stopping on the validation loss: stop after `patience` epochs
   * without a lower one (0: never); restore_best puts back the best epoch's
   * parameters at the end. */
  int64_t patience;
  bool restore_best;
  DlrtAugment augment;
  /* Called after every batch (progress bars); NULL: not. */
  DlrtBatchFn on_batch;
  /* The planned length of the whole run, over which schedules span (0: the
   * epochs done before plus `epochs`).  A run stopped early and resumed
   * later gives the same rates as one that never stopped. */
  int64_t schedule_epochs;
} DlrtTrainOptions;

typedef struct DlrtEpochStats {
  int64_t epoch;   /* 1-based */
  double loss;     /* mean of the per-batch losses weighted by batch rows */
  double accuracy; /* fraction correct, or NAN when it does not apply */
  double seconds;
  double val_loss, val_accuracy; /* NAN without validation data */
  double lr;                     /* the rate of the epoch's last step */
  bool best;                     /* the lowest validation loss so far */
  bool stop;                     /* early stopping ends the run after this epoch */
} DlrtEpochStats;

/* Called after each epoch, when ctx->train already counts it (a checkpoint
 * saved here resumes after it); return nonzero to stop. */
typedef int (*DlrtEpochFn)(void *user, const DlrtEpochStats *stats);

/* Train epochs ctx->train.epoch + 1 to ctx->train.epoch + opts->epochs (a
 * schedule spans all of them, the ones before included).  Each step sets the
 * hyperparameters the program has: "lr" from the schedule, "train.step"
 * (1-based step count), "train.mode" = 1 and "train.seed" (dropout); the
 * forward passes of evaluation run with "train.mode" = 0.  Stops with an
 * error naming the epoch and step if the loss becomes NaN or infinite. */
int dlrt_train(DlrtContext *ctx, const DlrtDataset *ds, const DlrtTrainOptions *opts,
               DlrtEpochFn on_epoch, void *user, DlrtError *err);

/* Loss and accuracy over a whole dataset (forward only, in batches). */
int dlrt_evaluate(DlrtContext *ctx, const DlrtDataset *ds, double *loss, double *accuracy,
                  DlrtError *err);

/* Forward over all rows; writes nrows * (output width) floats to out. */
int dlrt_predict(DlrtContext *ctx, const DlrtDataset *ds, float *out, DlrtError *err);

/* Accuracy rule: targets with one column are binary (prediction > 0.5 vs
 * target > 0.5); several columns are one-hot (argmax equal).  Applies only
 * when every target value is 0 or 1; otherwise NAN.  (The training loop
 * also counts class-index targets: one column of whole numbers 0..K-1
 * against an output of K > 1 columns, correct when the argmax is the
 * index.) */
double dlrt_accuracy(const float *pred, const float *target, int64_t rows, int64_t width);
/* Index of the largest of width values (the first on ties, NaNs never win),
 * or -1 when all are NaN. */
int64_t dlrt_argmax(const float *values, int64_t width);

/* ---- threads (runtime/rt_threads.c) ----
 * A pool of worker threads that sleep on a condition variable between jobs
 * (they never spin: on a shared machine a spinning thread takes a core from
 * someone else).  The calling thread works too, so a pool of T threads
 * starts T - 1 workers. */
DlrtPool *dlrt_pool_new(int threads, DlrtError *err);
void dlrt_pool_free(DlrtPool *pool);
int dlrt_pool_threads(const DlrtPool *pool);
/* The number of cores this process may run on (at least 1). */
int dlrt_default_threads(void);

/* A part of a job: the indices [begin, end) of [0, count). */
typedef void (*DlrtTaskFn)(void *arg, int64_t begin, int64_t end);
/* Run fn over [0, count), split into at most per_thread contiguous ranges
 * per thread, each range taken by whichever thread is free first (the caller
 * included), and return when all are done (more ranges balance better when
 * cores are shared; fewer suit tasks with a fixed cost per range).  fn must compute each index the
 * same way whichever range it falls in; then the result does not depend on
 * the number of threads.  With pool NULL, a pool of one thread, count < 2,
 * or a call made while the pool is busy (from a task, or from a second
 * thread), fn(arg, 0, count) runs on the calling thread.  Compiled code
 * calls this. */
void dlrt_parallel_for(DlrtPool *pool, int64_t count, int32_t per_thread, DlrtTaskFn fn, void *arg);

/* ---- random numbers ----
 * Counter-based (a stateless hash of seed, stream and counter), so any value
 * can be recomputed without replaying a sequence. */
uint64_t dlrt_hash64(uint64_t x);
double dlrt_uniform01(uint64_t seed, uint64_t stream, uint64_t counter);
double dlrt_normal(uint64_t seed, uint64_t stream, uint64_t counter);

#ifdef __cplusplus
}
#endif
#endif
