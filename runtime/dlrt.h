/* dlrt.h - the dlcc runtime: what compiled models run on.
 *
 * It depends on libc and libm only (no LLVM): an object file made by
 * `dlcc compile` links against this library alone.
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

#define DLRT_ABI_VERSION 1
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

typedef void (*DlrtEntryFn)(float *mem, int64_t n);

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

typedef struct DlrtContext {
  const DlrtProgram *prog;
  float *mem; /* prog->mem_floats floats, 64-byte aligned */
  uint64_t seed;
  uint64_t steps; /* training/gradient steps run: dropout's seed counter */
} DlrtContext;

/* Allocate memory, fill constants and hyperparameter defaults, initialise the
 * parameters from `seed` (same seed, same weights). */
DlrtContext *dlrt_context_new(const DlrtProgram *prog, uint64_t seed, DlrtError *err);
void dlrt_context_free(DlrtContext *ctx);
/* Re-initialise the parameters from a seed.  Each parameter draws from its
 * own stream (seed, parameter name), so adding a parameter does not change
 * the others' initial values. */
void dlrt_init_params(DlrtContext *ctx, uint64_t seed);

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
 * Saving writes to a temporary file in the same directory and renames it
 * into place, so a crash never leaves a half-written checkpoint. */
int dlrt_save(DlrtContext *ctx, const char *path, DlrtError *err);
/* Every parameter must be present with its exact shape; extra tensors are an
 * error too (they mean the checkpoint belongs to another model). */
int dlrt_load(DlrtContext *ctx, const char *path, DlrtError *err);

/* A minimal reader for tests and tools: list the F32 tensors of a
 * safetensors file.  Free with dlrt_safetensors_free. */
typedef struct DlrtStTensor {
  char *name;
  int rank;
  int64_t dims[DLRT_MAX_RANK];
  float *data;
  int64_t numel;
} DlrtStTensor;
typedef struct DlrtStFile {
  int ntensors;
  DlrtStTensor *tensors;
} DlrtStFile;
int dlrt_safetensors_read(const char *path, DlrtStFile *out, DlrtError *err);
void dlrt_safetensors_free(DlrtStFile *f);
/* Write tensors (names, shapes, data) atomically. */
int dlrt_safetensors_write(const char *path, const DlrtStTensor *tensors, int ntensors,
                           DlrtError *err);

/* ---- data ---- */

#define DLRT_MAX_FIELDS 8

/* A dataset is a table of rows; each field (one per model input or target,
 * matched by name) holds `width` floats per row. */
typedef struct DlrtField {
  char name[64];
  int64_t width;
  float *data; /* nrows * width, owned by the dataset */
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

/* ---- training ---- */

typedef struct DlrtTrainOptions {
  int64_t epochs;
  int64_t batch; /* <= prog->max_batch */
  uint64_t seed; /* shuffling */
  bool shuffle;
} DlrtTrainOptions;

typedef struct DlrtEpochStats {
  int64_t epoch;   /* 1-based */
  double loss;     /* mean of the per-batch losses weighted by batch rows */
  double accuracy; /* fraction correct, or NAN when it does not apply */
  double seconds;
} DlrtEpochStats;

/* Called after each epoch; return nonzero to stop early. */
typedef int (*DlrtEpochFn)(void *user, const DlrtEpochStats *stats);

/* Train for opts->epochs epochs.  Stops with an error naming the epoch and
 * step if the loss becomes NaN or infinite. */
int dlrt_train(DlrtContext *ctx, const DlrtDataset *ds, const DlrtTrainOptions *opts,
               DlrtEpochFn on_epoch, void *user, DlrtError *err);

/* Loss and accuracy over a whole dataset (forward only, in batches). */
int dlrt_evaluate(DlrtContext *ctx, const DlrtDataset *ds, double *loss, double *accuracy,
                  DlrtError *err);

/* Forward over all rows; writes nrows * (output width) floats to out. */
int dlrt_predict(DlrtContext *ctx, const DlrtDataset *ds, float *out, DlrtError *err);

/* Accuracy rule: targets with one column are binary (prediction > 0.5 vs
 * target > 0.5); several columns are one-hot (argmax equal).  Applies only
 * when every target value is 0 or 1; otherwise NAN. */
double dlrt_accuracy(const float *pred, const float *target, int64_t rows, int64_t width);

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
