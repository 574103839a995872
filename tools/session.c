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
  if (g->loss != DL_NONE && has_params && !o->forward_only) {
    DlOptimizer opt;
    if (!session_optimizer(s, o, &opt)) return false;
    if (!dl_autodiff(g) || !dl_append_optimizer(g, &opt)) {
      driver_report(s);
      return false;
    }
  }
  if (!o->no_simplify && !dl_simplify(g, &s->simplified)) {
    driver_report(s);
    return false;
  }
  DlPlanOptions po = {.no_fuse = o->no_fuse};
  s->prog = dl_plan_with(g, max_batch, &po);
  if (!s->prog || dl_failed(s->cc)) {
    driver_report(s);
    return false;
  }
  return true;
}

bool session_jit(Session *s, const DriverOptions *o) {
  /* --threads also bounds the threads LLVM compiles on. */
  DlCodegenOptions co = {.target = DL_TARGET_CPU,
                         .opt_level = o->opt_level,
                         .prefix = o->prefix,
                         .compile_threads = o->threads > 0 ? (int)o->threads : 0};
  s->jit = dl_jit_compile(s->cc, s->prog, &co, &s->rt);
  if (!s->jit || dl_failed(s->cc)) {
    driver_report(s);
    return false;
  }
  return true;
}

bool session_set_threads(DlrtContext *ctx, const DriverOptions *o) {
  DlrtError err = {{0}};
  if (dlrt_set_threads(ctx, o->threads > 0 ? (int)o->threads : 0, &err) != 0) {
    driver_error("%s", err.msg);
    return false;
  }
  return true;
}

void session_free(Session *s) {
  if (s->jit) dl_jit_free(s->jit);
  dl_compiler_free(s->cc);
  memset(s, 0, sizeof(*s));
}

uint64_t session_seed(const Session *s, const DriverOptions *o) {
  if (o->seed >= 0) return (uint64_t)o->seed;
  return s->train.present ? s->train.seed : 0;
}

bool session_optimizer(Session *s, const DriverOptions *o, DlOptimizer *out) {
  const DlTrainSpec *t = &s->train;
  DlOptimKind kind = t->optimizer == DL_OPT_ADAM    ? DL_OPTIM_ADAM
                     : t->optimizer == DL_OPT_ADAMW ? DL_OPTIM_ADAMW
                                                    : DL_OPTIM_SGD;
  bool renamed = false;
  if (o->optimizer) {
    if (!strcmp(o->optimizer, "sgd"))
      kind = DL_OPTIM_SGD;
    else if (!strcmp(o->optimizer, "adam"))
      kind = DL_OPTIM_ADAM;
    else if (!strcmp(o->optimizer, "adamw"))
      kind = DL_OPTIM_ADAMW;
    else {
      driver_error("unknown --optimizer '%s' (supported: sgd, adam, adamw)", o->optimizer);
      return false;
    }
    renamed = kind != (DlOptimKind)t->optimizer;
  }
  /* Another optimizer than the block's starts from that one's defaults. */
  DlOptimizer opt = dl_optimizer_default(kind, kind == DL_OPTIM_SGD ? 0.01 : 0.001);
  if (kind == DL_OPTIM_ADAMW) opt.weight_decay = 0.01;
  if (!renamed) {
    opt.lr = t->lr;
    opt.momentum = t->momentum;
    opt.nesterov = t->nesterov;
    opt.beta1 = t->beta1;
    opt.beta2 = t->beta2;
    opt.eps = t->eps;
    opt.weight_decay = t->weight_decay;
  }
  opt.clip_norm = t->clip;
  if (o->lr > 0) opt.lr = o->lr;
  if (o->momentum >= 0) {
    if (kind != DL_OPTIM_SGD || o->momentum >= 1) {
      driver_error("--momentum needs --optimizer sgd and a value below 1");
      return false;
    }
    opt.momentum = o->momentum;
  }
  if (o->weight_decay >= 0) opt.weight_decay = o->weight_decay;
  if (o->clip > 0) opt.clip_norm = o->clip;
  *out = opt;
  return true;
}

int64_t session_batch(const Session *s, const DriverOptions *o) {
  if (o->batch > 0) return o->batch;
  if (s->train.present && s->train.batch > 0) return s->train.batch;
  return 32;
}

/* ---- data ---- */

/* Directories that may hold a named data set: $DLCC_DATA/<name>, then the
 * cache that tools/setup.sh fills, then a system directory (Debian's
 * dataset packages install to /usr/share/datasets). */
static int dataset_dirs(const char *name, char dirs[3][4096]) {
  int n = 0;
  const char *env = getenv("DLCC_DATA");
  if (env && *env) snprintf(dirs[n++], 4096, "%s/%s", env, name);
  const char *cache = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  if (cache && *cache)
    snprintf(dirs[n++], 4096, "%s/dlcc/%s", cache, name);
  else if (home && *home)
    snprintf(dirs[n++], 4096, "%s/.cache/dlcc/%s", home, name);
  snprintf(dirs[n++], 4096, "/usr/share/datasets/%s", name);
  return n;
}

/* The path of file `base` (or base.gz) of data set `name`, or NULL after an
 * error at `loc` that says where it looked. */
static const char *dataset_file(Session *s, DlLoc loc, const char *name, const char *label,
                                const char *base) {
  char dirs[3][4096];
  int n = dataset_dirs(name, dirs);
  for (int i = 0; i < n; i++)
    for (int gz = 0; gz < 2; gz++) {
      char *path = dl_arena_printf(s->cc->arena, "%s/%s%s", dirs[i], base, gz ? ".gz" : "");
      if (access(path, R_OK) == 0) return path;
    }
  dl_error(s->cc, loc, "%s is not installed: no %s[.gz] in %s%s%s%s%s (tools/setup.sh installs it)",
           label, base, dirs[0], n > 1 ? ", " : "", n > 1 ? dirs[1] : "", n > 2 ? ", " : "",
           n > 2 ? dirs[2] : "");
  return NULL;
}

/* Rows of one data source (not a fraction). */
static bool load_source(Session *s, const DlDataSpec *d, int64_t limit, DlrtDataset *ds) {
  memset(ds, 0, sizeof(*ds));
  DlrtError err = {{0}};
  int rc = 0;
  if (d->limit > 0 && (limit <= 0 || d->limit < limit)) limit = d->limit;
  switch (d->kind) {
  case DL_DATA_NONE:
  case DL_DATA_FRACTION: return false;
  case DL_DATA_CSV: {
    DlrtCsvColumns cols[DL_MAX_DATA_FIELDS];
    for (int i = 0; i < d->nfields; i++)
      cols[i] = (DlrtCsvColumns){d->fields[i].name, d->fields[i].first, d->fields[i].count};
    rc = dlrt_csv_load(d->path, d->header, cols, d->nfields, ds, &err);
    /* one_hot(k) columns become a column per class of the target. */
    for (int i = 0; rc == 0 && i < d->nfields; i++) {
      if (!d->fields[i].one_hot) continue;
      DlrtField *f = (DlrtField *)dlrt_dataset_field(ds, d->fields[i].name);
      const DlNode *nd = NULL;
      for (int k = 0; k < s->graph->nnodes && !nd; k++)
        if (s->graph->nodes[k].op == DL_OP_INPUT && !strcmp(s->graph->nodes[k].name, f->name))
          nd = &s->graph->nodes[k];
      int64_t classes = nd ? dl_shape_numel(&nd->shape, 1) : 1;
      float *labels = f->data;
      f->data = NULL;
      rc = dlrt_labels_to_field(labels, ds->nrows, classes, d->path, f, &err);
      free(labels);
    }
    break;
  }
  case DL_DATA_TENSORS:
    for (int i = 0; rc == 0 && i < d->nfields; i++) {
      const DlDataField *f = &d->fields[i];
      rc = dlrt_dataset_add(ds, f->name, f->values, f->nrows, f->width, &err);
      if (rc != 0) {
        dl_error(s->cc, f->loc, "%s", err.msg);
        dlrt_dataset_free(ds);
        driver_report(s);
        return false;
      }
    }
    break;
  case DL_DATA_IDX:
  case DL_DATA_MNIST:
  case DL_DATA_FASHION_MNIST: {
    DlrtIdxSpec spec = {.images = d->path,
                        .labels = d->labels,
                        .input = d->input,
                        .target = d->target,
                        .input_width = d->input_width,
                        .classes = d->target_width,
                        .limit = limit};
    if (d->kind != DL_DATA_IDX) {
      bool fashion = d->kind == DL_DATA_FASHION_MNIST;
      const char *name = fashion ? "fashion-mnist" : "mnist";
      const char *label = fashion ? "Fashion-MNIST" : "MNIST";
      const char *prefix = d->test_split ? "t10k" : "train";
      spec.images = dataset_file(s, d->loc, name, label,
                                 dl_arena_printf(s->cc->arena, "%s-images-idx3-ubyte", prefix));
      spec.labels =
          spec.images ? dataset_file(s, d->loc, name, label,
                                     dl_arena_printf(s->cc->arena, "%s-labels-idx1-ubyte", prefix))
                      : NULL;
      if (!spec.labels) {
        driver_report(s);
        return false;
      }
    }
    rc = dlrt_idx_load(&spec, ds, &err);
    limit = 0;
    break;
  }
  case DL_DATA_TEXT: {
    DlrtTextSpec spec = {.path = d->path,
                         .input = d->input,
                         .target = d->target,
                         .context = d->context,
                         .input_width = d->input_width,
                         .target_width = d->target_width,
                         .limit = limit};
    rc = dlrt_text_load(&spec, ds, &err);
    limit = 0;
    break;
  }
  }
  if (rc == 0 && limit > 0 && limit < ds->nrows) {
    DlrtDataset head;
    rc = dlrt_dataset_rows(ds, NULL, 0, limit, &head, &err);
    dlrt_dataset_free(ds);
    *ds = head;
  }
  if (rc == 0 && ds->nrows == 0) rc = -1, snprintf(err.msg, sizeof err.msg, "the data has no rows");
  if (rc == 0 && s->rt) rc = dlrt_dataset_check(s->rt, ds, true, &err);
  if (rc != 0) {
    dl_error(s->cc, d->loc, "%s", err.msg);
    dlrt_dataset_free(ds);
    driver_report(s);
    return false;
  }
  return true;
}

bool session_load_train_data(Session *s, DlrtDataset *ds) {
  memset(ds, 0, sizeof(*ds));
  const DlDataSpec *d = &s->train.data;
  if (!s->train.present || d->kind == DL_DATA_NONE) {
    dl_error(s->cc, s->train.present ? s->train.loc : DL_NOLOC,
             "no training data: the train block for model '%s' has no 'data' setting",
             s->graph->name);
    driver_report(s);
    return false;
  }
  return load_source(s, d, 0, ds);
}

void data_splits_free(DataSplits *d) {
  dlrt_dataset_free(&d->train);
  dlrt_dataset_free(&d->validation);
  dlrt_dataset_free(&d->test);
  memset(d, 0, sizeof *d);
}

/* Hold `fraction` of *rows out into *held (rows keeps the rest). */
static bool hold_out(Session *s, DlLoc loc, DlrtDataset *rows, double fraction, uint64_t seed,
                     DlrtDataset *held) {
  DlrtDataset kept;
  DlrtError err = {{0}};
  if (dlrt_dataset_split(rows, fraction, seed, &kept, held, &err) != 0) {
    dl_error(s->cc, loc, "%s", err.msg);
    driver_report(s);
    return false;
  }
  dlrt_dataset_free(rows);
  *rows = kept;
  return true;
}

static void normalize_inputs(Session *s, DataSplits *d) {
  const DlGraph *g = s->graph;
  for (int i = 0; i < g->nnodes; i++) {
    const DlNode *nd = &g->nodes[i];
    if (nd->op != DL_OP_INPUT || nd->attr.input.role != DL_ROLE_INPUT) continue;
    DlrtField *f = (DlrtField *)dlrt_dataset_field(&d->train, nd->name);
    if (!f) continue;
    float *mean = malloc(sizeof(float) * (size_t)f->width);
    float *std = malloc(sizeof(float) * (size_t)f->width);
    dlrt_field_stats(f, d->train.nrows, mean, std);
    DlrtDataset *all[3] = {&d->train, &d->validation, &d->test};
    for (int k = 0; k < 3; k++) {
      DlrtField *other = (DlrtField *)dlrt_dataset_field(all[k], nd->name);
      if (other) dlrt_field_normalize(other, all[k]->nrows, mean, std);
    }
    free(mean);
    free(std);
  }
}

bool session_load_splits(Session *s, const DriverOptions *o, DataSplits *out) {
  memset(out, 0, sizeof *out);
  const DlTrainSpec *t = &s->train;
  if (!session_load_train_data(s, &out->train)) return false;
  if (o->limit > 0 && o->limit < out->train.nrows) {
    DlrtDataset head;
    DlrtError err = {{0}};
    if (dlrt_dataset_rows(&out->train, NULL, 0, o->limit, &head, &err) != 0) {
      driver_error("%s", err.msg);
      data_splits_free(out);
      return false;
    }
    dlrt_dataset_free(&out->train);
    out->train = head;
  }
  uint64_t seed = session_seed(s, o);
  bool ok = true;
  /* The test rows are held out first, so a validation fraction never
   * depends on whether there is a test split. */
  if (t->test.kind == DL_DATA_FRACTION)
    ok = hold_out(s, t->test.loc, &out->train, t->test.fraction, seed ^ 0x7465u, &out->test);
  else if (t->test.kind != DL_DATA_NONE)
    ok = load_source(s, &t->test, 0, &out->test);
  out->has_test = ok && t->test.kind != DL_DATA_NONE;
  double fraction = o->validation > 0                        ? o->validation
                    : t->validation.kind == DL_DATA_FRACTION ? t->validation.fraction
                                                             : 0;
  if (ok && fraction > 0) {
    ok = hold_out(s, o->validation > 0 ? t->loc : t->validation.loc, &out->train, fraction, seed,
                  &out->validation);
    out->has_validation = ok;
  } else if (ok && t->validation.kind != DL_DATA_NONE) {
    ok = load_source(s, &t->validation, 0, &out->validation);
    out->has_validation = ok;
  }
  if (ok && t->normalize) normalize_inputs(s, out);
  if (!ok) data_splits_free(out);
  return ok;
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
