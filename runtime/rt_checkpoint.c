/* rt_checkpoint.c - checkpoints of a context: parameters, optimiser state,
 * early stopping's best parameters and the training position, in one
 * safetensors file. */
#include "rt_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BEST_PREFIX "best/"
#define STATE_PREFIX "optim/"

bool dlrt_is_training_tensor(const char *name) {
  return name && (strncmp(name, STATE_PREFIX, strlen(STATE_PREFIX)) == 0 ||
                  strncmp(name, BEST_PREFIX, strlen(BEST_PREFIX)) == 0);
}

int64_t dlrt_param_floats(const DlrtProgram *prog) {
  int64_t total = 0;
  for (int i = 0; i < prog->ntensors; i++)
    if (prog->tensors[i].role == DLRT_ROLE_PARAM) total += dlrt_numel(&prog->tensors[i], 1);
  return total;
}

static DlrtStTensor st_tensor(const DlrtTensor *t, char *name, float *data) {
  DlrtStTensor s = {.name = name, .rank = t->rank, .numel = dlrt_numel(t, 1), .data = data};
  memcpy(s.dims, t->dims, sizeof s.dims);
  return s;
}

/* The training position as metadata strings (in `text`, 6 entries). */
enum { NMETA = 6, META_LEN = 40 };
static const char *const meta_keys[NMETA] = {"seed",      "epoch",      "step",
                                             "best_loss", "best_epoch", "bad_epochs"};

static void position_to_meta(const DlrtTrainState *ts, char text[NMETA][META_LEN],
                             DlrtStMeta *meta) {
  snprintf(text[0], META_LEN, "%" PRIu64, ts->seed);
  snprintf(text[1], META_LEN, "%" PRId64, ts->epoch);
  snprintf(text[2], META_LEN, "%" PRId64, ts->step);
  /* %.17g round-trips a double exactly; strtod reads "inf" back. */
  snprintf(text[3], META_LEN, "%.17g", ts->best_loss);
  snprintf(text[4], META_LEN, "%" PRId64, ts->best_epoch);
  snprintf(text[5], META_LEN, "%" PRId64, ts->bad_epochs);
  for (int k = 0; k < NMETA; k++)
    meta[k] = (DlrtStMeta){(char *)meta_keys[k], text[k]};
}

static int meta_to_position(const DlrtStFile *f, const char *path, DlrtTrainState *ts,
                            DlrtError *err) {
  double values[NMETA];
  for (int k = 0; k < NMETA; k++) {
    const char *v = dlrt_safetensors_meta(f, meta_keys[k]);
    if (!v)
      return dlrt_fail(err,
                       "%s: checkpoint has no training position ('%s' is missing from its "
                       "metadata); it can be loaded but not resumed",
                       path, meta_keys[k]);
    char *end;
    errno = 0;
    values[k] = k == 0 ? (double)strtoull(v, &end, 10) : strtod(v, &end);
    if (errno || *end || end == v || (k != 3 && values[k] < 0))
      return dlrt_fail(err, "%s: metadata '%s' is not a valid number: '%s'", path, meta_keys[k], v);
  }
  /* The seed is read as an integer: a double would round large seeds. */
  ts->seed = strtoull(dlrt_safetensors_meta(f, "seed"), NULL, 10);
  ts->epoch = (int64_t)values[1];
  ts->step = (int64_t)values[2];
  ts->best_loss = values[3];
  ts->best_epoch = (int64_t)values[4];
  ts->bad_epochs = (int64_t)values[5];
  return 0;
}

int dlrt_save(DlrtContext *ctx, const char *path, DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  const DlrtProgram *prog = ctx->prog;
  int cap = 2 * prog->ntensors + 1;
  DlrtStTensor *list = calloc((size_t)cap, sizeof *list);
  char **names = calloc((size_t)cap, sizeof *names);
  if (!list || !names) {
    free(list);
    free(names);
    return dlrt_fail(err, "out of memory saving a checkpoint");
  }
  int count = 0, nnames = 0, rc = 0;
  /* Parameters, then optimiser state, then the best parameters. */
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < prog->ntensors; i++) {
      const DlrtTensor *t = &prog->tensors[i];
      if (t->role == (pass == 0 ? DLRT_ROLE_PARAM : DLRT_ROLE_STATE))
        list[count++] = st_tensor(t, (char *)t->name, dlrt_data(ctx, i));
    }
  int64_t at = 0;
  for (int i = 0; ctx->best && rc == 0 && i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if (t->role != DLRT_ROLE_PARAM) continue;
    char *name = malloc(strlen(BEST_PREFIX) + strlen(t->name) + 1);
    if (!name) {
      rc = dlrt_fail(err, "out of memory saving a checkpoint");
      break;
    }
    strcpy(name, BEST_PREFIX);
    strcat(name, t->name);
    names[nnames++] = name;
    list[count++] = st_tensor(t, name, ctx->best + at);
    at += dlrt_numel(t, 1);
  }
  char text[NMETA][META_LEN];
  DlrtStMeta meta[NMETA];
  position_to_meta(&ctx->train, text, meta);
  if (rc == 0) rc = dlrt_safetensors_write_meta(path, list, count, meta, NMETA, err);
  for (int i = 0; i < nnames; i++)
    free(names[i]);
  free(names);
  free(list);
  return rc;
}

static bool same_shape(const DlrtStTensor *s, const DlrtTensor *t) {
  if (s->rank != t->rank) return false;
  for (int d = 0; d < t->rank; d++)
    if (s->dims[d] != t->dims[d]) return false;
  return true;
}

static const DlrtStTensor *file_tensor(const DlrtStFile *f, const char *prefix, const char *name) {
  size_t np = strlen(prefix);
  for (int k = 0; k < f->ntensors; k++) {
    const char *n = f->tensors[k].name;
    if (strncmp(n, prefix, np) == 0 && strcmp(n + np, name) == 0) return &f->tensors[k];
  }
  return NULL;
}

/* Check that the file has every tensor of `role` (with `prefix` before the
 * name for best copies), shaped as the program says. */
static int check_present(const DlrtProgram *prog, const DlrtStFile *f, const char *path, int role,
                         const char *prefix, const char *what, DlrtError *err) {
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if (t->role != role) continue;
    const DlrtStTensor *s = file_tensor(f, prefix, t->name);
    char want[128], have[128];
    if (!s)
      return dlrt_fail(err, "%s: checkpoint has no %s '%s%s'%s", path, what, prefix, t->name,
                       role == DLRT_ROLE_STATE
                           ? " (was it saved with another optimizer? --load takes the "
                             "parameters alone)"
                           : "");
    if (!same_shape(s, t))
      return dlrt_fail(err, "%s: tensor '%s' has shape %s in the checkpoint, the model expects %s",
                       path, s->name, dlrt_format_dims(have, sizeof have, s->dims, s->rank),
                       dlrt_format_dims(want, sizeof want, t->dims, t->rank));
  }
  return 0;
}

static void copy_role(DlrtContext *ctx, const DlrtStFile *f, int role) {
  const DlrtProgram *prog = ctx->prog;
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if (t->role != role) continue;
    const DlrtStTensor *s = file_tensor(f, "", t->name);
    if (s->numel > 0) memcpy(dlrt_data(ctx, i), s->data, (size_t)s->numel * sizeof(float));
  }
}

static const char *model_name(const DlrtProgram *prog) {
  return prog->model ? prog->model : "(unnamed)";
}

int dlrt_load(DlrtContext *ctx, const char *path, DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  DlrtStFile file;
  if (dlrt_safetensors_read(path, &file, err) != 0) return -1;
  const DlrtProgram *prog = ctx->prog;
  /* Check everything before copying anything, so that a bad checkpoint
   * leaves the parameters as they were. */
  int rc = check_present(prog, &file, path, DLRT_ROLE_PARAM, "", "tensor", err);
  for (int k = 0; rc == 0 && k < file.ntensors; k++) {
    const char *name = file.tensors[k].name;
    if (!dlrt_is_training_tensor(name) && dlrt_find(prog, name, DLRT_ROLE_PARAM) < 0)
      rc = dlrt_fail(err, "%s: tensor '%s' in the checkpoint is not a parameter of model '%s'",
                     path, name, model_name(prog));
  }
  if (rc == 0) copy_role(ctx, &file, DLRT_ROLE_PARAM);
  dlrt_safetensors_free(&file);
  return rc;
}

int dlrt_resume(DlrtContext *ctx, const char *path, DlrtError *err) {
  if (!ctx) return dlrt_fail(err, "no context given");
  DlrtStFile file;
  if (dlrt_safetensors_read(path, &file, err) != 0) return -1;
  const DlrtProgram *prog = ctx->prog;
  DlrtTrainState position;
  bool has_best = false;
  for (int k = 0; k < file.ntensors; k++)
    has_best |= strncmp(file.tensors[k].name, BEST_PREFIX, strlen(BEST_PREFIX)) == 0;
  int rc = check_present(prog, &file, path, DLRT_ROLE_PARAM, "", "tensor", err);
  if (rc == 0) rc = check_present(prog, &file, path, DLRT_ROLE_STATE, "", "optimiser state", err);
  if (rc == 0 && has_best)
    rc = check_present(prog, &file, path, DLRT_ROLE_PARAM, BEST_PREFIX, "tensor", err);
  for (int k = 0; rc == 0 && k < file.ntensors; k++) {
    const char *name = file.tensors[k].name;
    bool known = dlrt_find(prog, name, DLRT_ROLE_PARAM) >= 0 ||
                 dlrt_find(prog, name, DLRT_ROLE_STATE) >= 0 ||
                 (strncmp(name, BEST_PREFIX, strlen(BEST_PREFIX)) == 0 &&
                  dlrt_find(prog, name + strlen(BEST_PREFIX), DLRT_ROLE_PARAM) >= 0);
    if (!known)
      rc = dlrt_fail(err,
                     "%s: tensor '%s' in the checkpoint is not a parameter or optimiser state "
                     "of model '%s'%s",
                     path, name, model_name(prog),
                     strncmp(name, STATE_PREFIX, strlen(STATE_PREFIX)) == 0
                         ? " (it was saved with another optimizer)"
                         : "");
  }
  if (rc == 0) rc = meta_to_position(&file, path, &position, err);
  float *best = NULL;
  if (rc == 0 && has_best) {
    int64_t total = dlrt_param_floats(prog);
    best = malloc(sizeof(float) * (size_t)(total ? total : 1));
    if (!best) rc = dlrt_fail(err, "out of memory loading '%s'", path);
    int64_t at = 0;
    for (int i = 0; best && i < prog->ntensors; i++) {
      const DlrtTensor *t = &prog->tensors[i];
      if (t->role != DLRT_ROLE_PARAM) continue;
      const DlrtStTensor *s = file_tensor(&file, BEST_PREFIX, t->name);
      if (s->numel > 0) memcpy(best + at, s->data, (size_t)s->numel * sizeof(float));
      at += s->numel;
    }
  }
  if (rc == 0) {
    copy_role(ctx, &file, DLRT_ROLE_PARAM);
    copy_role(ctx, &file, DLRT_ROLE_STATE);
    ctx->train = position;
    ctx->seed = position.seed; /* dropout's seed */
    ctx->steps = (uint64_t)position.step;
    free(ctx->best);
    ctx->best = best;
  }
  dlrt_safetensors_free(&file);
  return rc;
}
