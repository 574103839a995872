/* session.c - the compile pipeline as the commands use it, and data loading. */
#include "driver.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool driver_want_color(void) {
  const char *term = getenv("TERM");
  return isatty(2) && !getenv("NO_COLOR") && term && strcmp(term, "dumb") != 0;
}

void driver_report(Session *s) {
  if (s->before_report) s->before_report(s);
  if (s->cc) dl_diag_render(s->cc, stderr, s->color);
}

void driver_add_import_dirs(DlCompiler *cc) {
  /* $DLCC_PATH (colon-separated) first, so a user can override the library. */
  const char *env = getenv("DLCC_PATH");
  while (env && *env) {
    const char *colon = strchr(env, ':');
    size_t len = colon ? (size_t)(colon - env) : strlen(env);
    if (len) dl_frontend_add_import_dir(cc, dl_arena_strndup(cc->arena, env, len));
    env = colon ? colon + 1 : NULL;
  }
  dl_frontend_add_import_dir(cc, DLCC_SOURCE_DIR "/lang");
}

bool session_parse(Session *s, const DriverOptions *o) {
  s->color = driver_want_color();
  if (!s->cc) {
    s->cc = dl_compiler_new();
    driver_add_import_dirs(s->cc);
  }
  if (!o->file) {
    driver_error("no input file (see --help)");
    return false;
  }
  s->ast = dl_parse_file(s->cc, o->file);
  if (!s->ast || dl_failed(s->cc)) {
    driver_report(s);
    return false;
  }
  return true;
}

bool session_lower(Session *s, const DriverOptions *o) {
  if (!session_parse(s, o)) return false;
  s->graph = dl_lower(s->cc, s->ast, o->model, &s->train);
  if (!s->graph || dl_failed(s->cc)) {
    driver_report(s);
    return false;
  }
  return true;
}

bool session_plan(Session *s, const DriverOptions *o, int64_t max_batch) {
  DlGraph *g = s->graph;
  bool has_params = false;
  for (int i = 0; i < g->nnodes; i++)
    has_params |= g->nodes[i].op == DL_OP_PARAM;
  if (g->loss != DL_NONE && has_params) {
    double lr = o->lr > 0 ? o->lr : s->train.present ? s->train.lr : 0.01;
    if (!dl_autodiff(g) || !dl_append_sgd(g, lr)) {
      driver_report(s);
      return false;
    }
  }
  if (!o->no_simplify && !dl_simplify(g, &s->simplified)) {
    driver_report(s);
    return false;
  }
  s->prog = dl_plan(g, max_batch);
  if (!s->prog || dl_failed(s->cc)) {
    driver_report(s);
    return false;
  }
  return true;
}

bool session_jit(Session *s, const DriverOptions *o) {
  DlCodegenOptions co = {.target = DL_TARGET_CPU, .opt_level = o->opt_level, .prefix = o->prefix};
  s->jit = dl_jit_compile(s->cc, s->prog, &co, &s->rt);
  if (!s->jit || dl_failed(s->cc)) {
    driver_report(s);
    return false;
  }
  return true;
}

void session_free(Session *s) {
  if (s->jit) dl_jit_free(s->jit);
  dl_compiler_free(s->cc);
  memset(s, 0, sizeof(*s));
}

int64_t session_batch(const Session *s, const DriverOptions *o) {
  if (o->batch > 0) return o->batch;
  if (s->train.present && s->train.batch > 0) return s->train.batch;
  return 32;
}

bool session_load_train_data(Session *s, DlrtDataset *ds) {
  memset(ds, 0, sizeof(*ds));
  const DlDataSpec *d = &s->train.data;
  DlrtError err = {{0}};
  if (!s->train.present || d->kind == DL_DATA_NONE) {
    dl_error(s->cc, s->train.present ? s->train.loc : DL_NOLOC,
             "no training data: the train block for model '%s' has no 'data' setting",
             s->graph->name);
    driver_report(s);
    return false;
  }
  if (d->kind == DL_DATA_CSV) {
    DlrtCsvColumns cols[DL_MAX_DATA_FIELDS];
    for (int i = 0; i < d->nfields; i++)
      cols[i] = (DlrtCsvColumns){d->fields[i].name, d->fields[i].first, d->fields[i].count};
    if (dlrt_csv_load(d->path, d->header, cols, d->nfields, ds, &err) != 0) {
      dl_error(s->cc, d->loc, "%s", err.msg);
      driver_report(s);
      return false;
    }
  } else {
    for (int i = 0; i < d->nfields; i++) {
      const DlDataField *f = &d->fields[i];
      if (dlrt_dataset_add(ds, f->name, f->values, f->nrows, f->width, &err) != 0) {
        dl_error(s->cc, f->loc, "%s", err.msg);
        dlrt_dataset_free(ds);
        driver_report(s);
        return false;
      }
    }
  }
  if (ds->nrows == 0) {
    dl_error(s->cc, d->loc, "the training data has no rows");
    dlrt_dataset_free(ds);
    driver_report(s);
    return false;
  }
  if (s->rt && dlrt_dataset_check(s->rt, ds, true, &err) != 0) {
    dl_error(s->cc, d->loc, "%s", err.msg);
    dlrt_dataset_free(ds);
    driver_report(s);
    return false;
  }
  return true;
}

bool session_load_input_csv(Session *s, const char *path, DlrtDataset *ds, bool *has_targets) {
  memset(ds, 0, sizeof(*ds));
  const DlGraph *g = s->graph;
  DlrtCsvColumns cols[DL_MAX_DATA_FIELDS];
  int ncols = 0, col = 0, ninputs = 0;
  /* Inputs first, then targets, each in declaration order. */
  for (int role = DL_ROLE_INPUT; role <= DL_ROLE_TARGET; role++)
    for (int i = 0; i < g->nnodes && ncols < DL_MAX_DATA_FIELDS; i++) {
      const DlNode *nd = &g->nodes[i];
      if (nd->op != DL_OP_INPUT || (int)nd->attr.input.role != role) continue;
      int w = (int)dl_shape_numel(&nd->shape, 1);
      cols[ncols++] = (DlrtCsvColumns){nd->name, col, w};
      col += w;
      if (role == DL_ROLE_INPUT) ninputs++;
    }
  DlrtError err = {{0}};
  /* Try inputs and targets; if the file is narrower, inputs alone. */
  if (dlrt_csv_load(path, false, cols, ncols, ds, &err) == 0) {
    *has_targets = ncols > ninputs;
    return true;
  }
  DlrtError err2 = {{0}};
  if (ncols > ninputs && dlrt_csv_load(path, false, cols, ninputs, ds, &err2) == 0) {
    *has_targets = false;
    return true;
  }
  driver_error("%s", err.msg);
  return false;
}

void session_fill_inputs(Session *s, DlrtContext *ctx, const DlrtDataset *ds, uint64_t seed,
                         int64_t n) {
  for (int t = 0; t < s->rt->ntensors; t++) {
    const DlrtTensor *tt = &s->rt->tensors[t];
    if (tt->role != DLRT_ROLE_INPUT && tt->role != DLRT_ROLE_TARGET) continue;
    float *dst = dlrt_data(ctx, t);
    int64_t total = dlrt_numel(tt, n);
    const DlrtField *f = ds ? dlrt_dataset_field(ds, tt->name) : NULL;
    for (int64_t i = 0; i < total; i++)
      dst[i] = f ? f->data[i]
               : tt->role == DLRT_ROLE_TARGET
                   ? (float)dlrt_uniform01(seed, 1000 + (uint64_t)t, (uint64_t)i)
                   : (float)dlrt_normal(seed, 1000 + (uint64_t)t, (uint64_t)i);
  }
}
