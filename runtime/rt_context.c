/* rt_context.c - contexts: the arena a compiled program runs on, the table
 * of named tensors in it, parameter initialisation, and running entries. */
#include "rt_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dlrt_fail(DlrtError *err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return -1;
}

const char *dlrt_format_dims(char *buf, size_t size, const int64_t *dims, int rank) {
  size_t used = 0;
  if (size == 0) return buf;
  buf[0] = '\0';
  int written = snprintf(buf, size, "[");
  for (int d = 0; d < rank && written >= 0; d++) {
    used += (size_t)written;
    if (used >= size) break;
    const char *sep = d ? ", " : "";
    if (dims[d] == DLRT_DIM_BATCH)
      written = snprintf(buf + used, size - used, "%sN", sep);
    else
      written = snprintf(buf + used, size - used, "%s%lld", sep, (long long)dims[d]);
  }
  if (written >= 0) used += (size_t)written;
  if (used < size) snprintf(buf + used, size - used, "]");
  return buf;
}

static const char *model_name(const DlrtProgram *prog) {
  return prog->model ? prog->model : "(unnamed)";
}

static const char *role_name(int32_t role) {
  switch ((DlrtRole)role) {
  case DLRT_ROLE_PARAM: return "parameter";
  case DLRT_ROLE_INPUT: return "input";
  case DLRT_ROLE_TARGET: return "target";
  case DLRT_ROLE_OUTPUT: return "output";
  case DLRT_ROLE_LOSS: return "loss";
  case DLRT_ROLE_CONST: return "constant";
  case DLRT_ROLE_HYPER: return "hyperparameter";
  case DLRT_ROLE_GRAD: return "gradient";
  case DLRT_ROLE_STATE: return "optimiser state";
  }
  return "tensor";
}

int64_t dlrt_numel(const DlrtTensor *t, int64_t n) {
  int64_t count = 1;
  for (int d = 0; d < t->rank; d++)
    count *= t->dims[d] == DLRT_DIM_BATCH ? n : t->dims[d];
  return count;
}

int64_t dlrt_checked_numel(const DlrtTensor *t, int64_t n) {
  if (t->rank < 0 || t->rank > DLRT_MAX_RANK || n < 0) return -1;
  int64_t count = 1;
  for (int d = 0; d < t->rank; d++) {
    int64_t extent = t->dims[d] == DLRT_DIM_BATCH ? n : t->dims[d];
    if (extent < 0) return -1;
    if (extent != 0 && count > INT64_MAX / extent) return -1;
    count *= extent;
  }
  return count;
}

static int count_batch_dims(const DlrtTensor *t) {
  int count = 0;
  for (int d = 0; d < t->rank; d++)
    count += t->dims[d] == DLRT_DIM_BATCH;
  return count;
}

/* Which inits a tensor of this role may carry. */
static bool init_allowed(int32_t role, int32_t init) {
  switch ((DlrtInit)init) {
  case DLRT_INIT_ZERO:
  case DLRT_INIT_CONST:
  case DLRT_INIT_DATA: return true;
  case DLRT_INIT_UNIFORM:
  case DLRT_INIT_NORMAL: return role == DLRT_ROLE_PARAM;
  }
  return false;
}

/* Everything the runtime later relies on without checking again: a table
 * that passes cannot make it read or write outside the arena. */
static int validate_program(const DlrtProgram *prog, DlrtError *err) {
  if (!prog) return dlrt_fail(err, "no program given");
  const char *model = model_name(prog);
  if (prog->abi_version != DLRT_ABI_VERSION)
    return dlrt_fail(err, "model '%s' was compiled for runtime abi %d, this runtime has abi %d",
                     model, prog->abi_version, DLRT_ABI_VERSION);
  if (prog->ntensors < 0 || (prog->ntensors > 0 && !prog->tensors))
    return dlrt_fail(err, "model '%s' has an invalid tensor table (%d tensors)", model,
                     prog->ntensors);
  if (prog->mem_floats < 0)
    return dlrt_fail(err, "model '%s' has a negative arena size %lld", model,
                     (long long)prog->mem_floats);
  if (prog->max_batch < 1)
    return dlrt_fail(err, "model '%s' has max_batch %lld; it must be at least 1", model,
                     (long long)prog->max_batch);
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if (!t->name) return dlrt_fail(err, "tensor %d of model '%s' has no name", i, model);
    if (t->role < DLRT_ROLE_PARAM || t->role > DLRT_ROLE_STATE)
      return dlrt_fail(err, "tensor '%s' has unknown role %d", t->name, t->role);
    const char *role = role_name(t->role);
    if (t->rank < 0 || t->rank > DLRT_MAX_RANK)
      return dlrt_fail(err, "%s '%s' has rank %d; the runtime supports 0 to %d", role, t->name,
                       t->rank, DLRT_MAX_RANK);
    int64_t size = dlrt_checked_numel(t, prog->max_batch);
    if (size < 0) {
      char shape[128];
      return dlrt_fail(err, "%s '%s' has an invalid shape %s", role, t->name,
                       dlrt_format_dims(shape, sizeof shape, t->dims, t->rank));
    }
    int batch_dims = count_batch_dims(t);
    bool may_batch = t->role == DLRT_ROLE_INPUT || t->role == DLRT_ROLE_TARGET ||
                     t->role == DLRT_ROLE_OUTPUT || t->role == DLRT_ROLE_LOSS;
    if (batch_dims > 0 && !may_batch)
      return dlrt_fail(err,
                       "%s '%s' has a batch dimension; only inputs, targets, outputs and "
                       "the loss may have one",
                       role, t->name);
    if (batch_dims > 1)
      return dlrt_fail(err, "%s '%s' has %d batch dimensions; at most one is allowed", role,
                       t->name, batch_dims);
    if (t->offset < 0 || t->offset > prog->mem_floats - size)
      return dlrt_fail(err,
                       "%s '%s' (%lld floats at offset %lld) does not fit in the arena of "
                       "%lld floats",
                       role, t->name, (long long)size, (long long)t->offset,
                       (long long)prog->mem_floats);
    if (t->role == DLRT_ROLE_HYPER && size != 1) {
      char shape[128];
      return dlrt_fail(err, "hyperparameter '%s' must be a scalar, its shape is %s", t->name,
                       dlrt_format_dims(shape, sizeof shape, t->dims, t->rank));
    }
    if (t->role == DLRT_ROLE_PARAM || t->role == DLRT_ROLE_CONST) {
      if (!init_allowed(t->role, t->init))
        return dlrt_fail(err, "%s '%s' has unsupported init %d", role, t->name, t->init);
      if (t->init == DLRT_INIT_DATA && size > 0 && !t->data)
        return dlrt_fail(err, "%s '%s' is initialised from data but has none", role, t->name);
    }
    if (t->role == DLRT_ROLE_STATE && t->init != DLRT_INIT_ZERO)
      return dlrt_fail(err, "%s '%s' must start at zero, its init is %d", role, t->name, t->init);
  }
  return 0;
}

DlrtContext *dlrt_context_new(const DlrtProgram *prog, uint64_t seed, DlrtError *err) {
  if (validate_program(prog, err) != 0) return NULL;
  /* aligned_alloc wants a size that is a multiple of the alignment, and a
   * zero-size arena is still a valid pointer to hand to the entries. */
  const size_t align = 64;
  if ((uint64_t)prog->mem_floats > (SIZE_MAX - align) / sizeof(float)) {
    dlrt_fail(err, "model '%s' needs an arena of %lld floats, more than can be addressed",
              model_name(prog), (long long)prog->mem_floats);
    return NULL;
  }
  size_t bytes = (size_t)prog->mem_floats * sizeof(float);
  bytes = bytes == 0 ? align : (bytes + align - 1) / align * align;
  DlrtContext *ctx = calloc(1, sizeof *ctx);
  float *mem = aligned_alloc(align, bytes);
  if (!ctx || !mem) {
    free(ctx);
    free(mem);
    dlrt_fail(err, "out of memory: cannot allocate %zu bytes for model '%s'", bytes,
              model_name(prog));
    return NULL;
  }
  memset(mem, 0, bytes);
  ctx->prog = prog;
  ctx->mem = mem;
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    float *dst = mem + t->offset;
    int64_t count = dlrt_numel(t, 1);
    if (t->role == DLRT_ROLE_HYPER) {
      dst[0] = (float)t->a;
    } else if (t->role == DLRT_ROLE_CONST) {
      if (t->init == DLRT_INIT_DATA) {
        if (count > 0) memcpy(dst, t->data, (size_t)count * sizeof(float));
      } else {
        float value = t->init == DLRT_INIT_CONST ? (float)t->a : 0.0f;
        for (int64_t k = 0; k < count; k++)
          dst[k] = value;
      }
    }
  }
  dlrt_init_params(ctx, seed);
  return ctx;
}

void dlrt_context_free(DlrtContext *ctx) {
  if (!ctx) return;
  dlrt_pool_free(ctx->pool);
  free(ctx->best);
  free(ctx->mem);
  free(ctx);
}

int dlrt_set_threads(DlrtContext *ctx, int threads, DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  if (threads < 0)
    return dlrt_fail(err, "the number of threads must be 0 or more, not %d", threads);
  dlrt_pool_free(ctx->pool);
  ctx->pool = NULL;
  ctx->threads = threads;
  int want = threads > 0 ? threads : dlrt_default_threads();
  if (want > 1 && !(ctx->pool = dlrt_pool_new(want, err))) return -1;
  return 0;
}

void dlrt_call_entry(DlrtContext *ctx, DlrtEntryFn entry, int64_t n) {
  /* The pool of the default size is made at the first run, so contexts that
   * never run start no threads.  Without a pool (a machine that cannot
   * start a thread) everything runs on this thread: slower, never wrong. */
  if (!ctx->pool && ctx->threads != 1) {
    int want = ctx->threads > 0 ? ctx->threads : dlrt_default_threads();
    if (want > 1) ctx->pool = dlrt_pool_new(want, NULL);
    if (!ctx->pool) ctx->threads = 1;
  }
  entry(ctx->mem, n, ctx->pool);
}

void dlrt_init_params(DlrtContext *ctx, uint64_t seed) {
  if (!ctx) return;
  ctx->seed = seed;
  ctx->train = (DlrtTrainState){.seed = seed, .best_loss = INFINITY};
  ctx->steps = 0;
  free(ctx->best);
  ctx->best = NULL;
  const DlrtProgram *prog = ctx->prog;
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if (t->role == DLRT_ROLE_STATE) {
      memset(ctx->mem + t->offset, 0, (size_t)dlrt_numel(t, 1) * sizeof(float));
      continue;
    }
    if (t->role != DLRT_ROLE_PARAM) continue;
    float *dst = ctx->mem + t->offset;
    int64_t count = dlrt_numel(t, 1);
    uint64_t stream = dlrt_name_stream(t->name);
    switch ((DlrtInit)t->init) {
    case DLRT_INIT_ZERO:
      for (int64_t k = 0; k < count; k++)
        dst[k] = 0.0f;
      break;
    case DLRT_INIT_CONST:
      for (int64_t k = 0; k < count; k++)
        dst[k] = (float)t->a;
      break;
    case DLRT_INIT_UNIFORM:
      for (int64_t k = 0; k < count; k++)
        dst[k] = (float)(t->a + (t->b - t->a) * dlrt_uniform01(seed, stream, (uint64_t)k));
      break;
    case DLRT_INIT_NORMAL:
      for (int64_t k = 0; k < count; k++)
        dst[k] = (float)(t->a + t->b * dlrt_normal(seed, stream, (uint64_t)k));
      break;
    case DLRT_INIT_DATA:
      if (count > 0) memcpy(dst, t->data, (size_t)count * sizeof(float));
      break;
    }
  }
}

int dlrt_find(const DlrtProgram *prog, const char *name, int role) {
  if (!prog || !name) return -1;
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if ((role < 0 || t->role == role) && t->name && strcmp(t->name, name) == 0) return i;
  }
  return -1;
}

int dlrt_find_role(const DlrtProgram *prog, int role) {
  if (!prog) return -1;
  for (int i = 0; i < prog->ntensors; i++)
    if (prog->tensors[i].role == role) return i;
  return -1;
}

/* The tensor that dlrt_set/dlrt_get address, after checking the count. */
static int find_for_copy(DlrtContext *ctx, const char *name, const void *buffer, int64_t count,
                         DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  if (!name) return dlrt_fail(err, "no tensor name given");
  int i = dlrt_find(ctx->prog, name, -1);
  if (i < 0) return dlrt_fail(err, "no tensor named '%s'", name);
  int64_t numel = dlrt_numel(&ctx->prog->tensors[i], 1);
  if (count != numel)
    return dlrt_fail(err, "tensor '%s' has %lld elements, got %lld", name, (long long)numel,
                     (long long)count);
  if (count > 0 && !buffer) return dlrt_fail(err, "no buffer given for tensor '%s'", name);
  return i;
}

int dlrt_set(DlrtContext *ctx, const char *name, const float *src, int64_t count, DlrtError *err) {
  int i = find_for_copy(ctx, name, src, count, err);
  if (i < 0) return -1;
  if (count > 0) memcpy(dlrt_data(ctx, i), src, (size_t)count * sizeof(float));
  return 0;
}

int dlrt_get(DlrtContext *ctx, const char *name, float *dst, int64_t count, DlrtError *err) {
  int i = find_for_copy(ctx, name, dst, count, err);
  if (i < 0) return -1;
  if (count > 0) memcpy(dst, dlrt_data(ctx, i), (size_t)count * sizeof(float));
  return 0;
}

int dlrt_set_hyper(DlrtContext *ctx, const char *name, float value, DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  if (!name) return dlrt_fail(err, "no hyperparameter name given");
  int i = dlrt_find(ctx->prog, name, DLRT_ROLE_HYPER);
  if (i < 0) {
    int other = dlrt_find(ctx->prog, name, -1);
    if (other >= 0)
      return dlrt_fail(err, "'%s' is a %s, not a hyperparameter", name,
                       role_name(ctx->prog->tensors[other].role));
    return dlrt_fail(err, "no hyperparameter named '%s'", name);
  }
  dlrt_data(ctx, i)[0] = value;
  return 0;
}

void dlrt_set_hyper_if_present(DlrtContext *ctx, const char *name, float value) {
  int i = ctx ? dlrt_find(ctx->prog, name, DLRT_ROLE_HYPER) : -1;
  if (i >= 0) dlrt_data(ctx, i)[0] = value;
}

void dlrt_set_training(DlrtContext *ctx, int training) {
  if (!ctx) return;
  /* The names are those of DL_HYPER_TRAIN_MODE and DL_HYPER_TRAIN_SEED
   * (ir/ir.h); the runtime does not depend on the compiler. */
  int mode = dlrt_find(ctx->prog, "train.mode", DLRT_ROLE_HYPER);
  int seed = dlrt_find(ctx->prog, "train.seed", DLRT_ROLE_HYPER);
  if (mode >= 0) dlrt_data(ctx, mode)[0] = training ? 1.0f : 0.0f;
  if (training && seed >= 0)
    dlrt_data(ctx, seed)[0] = (float)(dlrt_hash64(dlrt_hash64(ctx->seed) ^ ctx->steps++) >> 40);
}

static int run_entry(DlrtContext *ctx, DlrtEntryFn entry, const char *entry_name, int training,
                     int64_t n, DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  const DlrtProgram *prog = ctx->prog;
  if (!entry)
    return dlrt_fail(err, "model '%s' has no %s entry point", model_name(prog), entry_name);
  if (n < 1 || n > prog->max_batch)
    return dlrt_fail(err, "batch size %lld is out of range: model '%s' takes 1 to %lld rows",
                     (long long)n, model_name(prog), (long long)prog->max_batch);
  dlrt_set_training(ctx, training);
  dlrt_call_entry(ctx, entry, n);
  return 0;
}

int dlrt_run_forward(DlrtContext *ctx, int64_t n, DlrtError *err) {
  return run_entry(ctx, ctx ? ctx->prog->forward : NULL, "forward", 0, n, err);
}

int dlrt_run_train_step(DlrtContext *ctx, int64_t n, DlrtError *err) {
  return run_entry(ctx, ctx ? ctx->prog->train_step : NULL, "train_step", 1, n, err);
}

int dlrt_run_grad(DlrtContext *ctx, int64_t n, DlrtError *err) {
  return run_entry(ctx, ctx ? ctx->prog->grad : NULL, "grad", 1, n, err);
}
