/* cmd_train.c - `dlcc train`, `dlcc run` and `dlcc compile`. */
#include "driver.h"
#include "plot.h"
#include "training.h"

#include <math.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

/* ---- train ---- */

static const char train_help[] =
    "usage: dlcc train FILE.nnl [options]\n"
    "\n"
    "Compile the model's training step with the JIT and train it on the data of\n"
    "its train block, printing loss (and accuracy for 0/1 or class targets) per\n"
    "epoch, with the validation loss when there is validation data.  On a\n"
    "terminal a progress bar shows the batch, loss, samples/s and time left.\n"
    "Flags override the train block's settings (see lang/REFERENCE.md, section 5).\n"
    "\n"
    "options:\n"
    "  --model NAME        the model to train (default: the first train block's)\n"
    "  --epochs N          epochs to train (with --resume: the total, counting the\n"
    "                      checkpoint's)\n"
    "  --lr X              learning rate (default: train block, else 0.01 for sgd, 0.001\n"
    "                      for adam); a list X,Y,Z runs one training per rate from the\n"
    "                      same initial weights, reports each run's final validation\n"
    "                      loss, and --plot draws all their curves\n"
    "  --batch B           minibatch rows (default: train block, else 32)\n"
    "  --seed S            seed for initialisation, shuffling, splits, augmentation and\n"
    "                      dropout (default: train block, else 0)\n"
    "  --optimizer NAME    sgd, adam or adamw (its defaults unless the block names it)\n"
    "  --momentum X        sgd momentum\n"
    "  --weight-decay X    L2 weight decay (adamw: decoupled weight decay)\n"
    "  --clip X            clip the gradients' global norm to X\n"
    "  --schedule NAME     constant, step or cosine (the block's arguments if it names\n"
    "                      the same; step defaults to every = 1, gamma = 0.1)\n"
    "  --warmup E          linear learning-rate warm-up over E epochs\n"
    "  --validation F      hold out the fraction F of the data for validation\n"
    "  --patience K        early stopping: stop after K epochs without a lower\n"
    "                      validation loss, and restore the best epoch's parameters\n"
    "  --shift K           augment images: random shifts of up to K pixels\n"
    "  --noise S           augment inputs: Gaussian noise of standard deviation S\n"
    "  --limit N           train on the first N rows of the data only\n"
    "  --load CKPT         start from the parameters of a checkpoint\n"
    "  --resume CKPT       continue the run a checkpoint saved: parameters, optimiser\n"
    "                      state, epoch, step and seed (bit for bit as if never stopped)\n"
    "  --stop-after E      end this invocation after epoch E, as if interrupted (the\n"
    "                      schedule still spans --epochs); continue with --resume\n"
    "  --save CKPT         write parameters, optimiser state and the training position\n"
    "                      (safetensors, atomically) after every epoch and at the end\n"
    "  --plot FILE.svg     draw training and validation loss and accuracy per epoch\n"
    "  --log FILE          append one JSON object per epoch (epoch, loss, accuracy,\n"
    "                      val_loss, val_accuracy, lr when scheduled, seconds)\n"
    "  --progress, --no-progress   force the progress bar on or off\n"
    "  --verbose, -v       print every epoch (default: about ten lines)\n"
    "  --quiet, -q         print only the final result\n"
    "  --threads T         threads to compile and run on (default: one per core)\n"
    "  -O0 .. -O3          LLVM optimisation level (default -O3)\n";

/* Per-epoch values of one run, for plots. */
typedef struct History {
  int n, cap;
  double *epoch, *loss, *acc, *val_loss, *val_acc;
  double best_epoch; /* NAN: no early stopping */
  bool has_acc, has_val;
} History;

static void history_add(History *h, const DlrtEpochStats *st) {
  if (h->n == h->cap) {
    h->cap = h->cap ? 2 * h->cap : 64;
    double **cols[] = {&h->epoch, &h->loss, &h->acc, &h->val_loss, &h->val_acc};
    for (int i = 0; i < 5; i++)
      *cols[i] = realloc(*cols[i], sizeof(double) * (size_t)h->cap);
  }
  h->epoch[h->n] = (double)st->epoch;
  h->loss[h->n] = st->loss;
  h->acc[h->n] = st->accuracy;
  h->val_loss[h->n] = st->val_loss;
  h->val_acc[h->n] = st->val_accuracy;
  h->has_acc |= !isnan(st->accuracy) || !isnan(st->val_accuracy);
  h->has_val |= !isnan(st->val_loss);
  h->n++;
}

static void history_free(History *h) {
  free(h->epoch);
  free(h->loss);
  free(h->acc);
  free(h->val_loss);
  free(h->val_acc);
  memset(h, 0, sizeof *h);
}

typedef struct TrainReport {
  const DriverOptions *o;
  DlrtContext *ctx;
  int64_t epochs; /* the last epoch of the run */
  int64_t until;  /* the last epoch of this invocation (--stop-after) */
  int64_t rows;   /* training rows per epoch */
  FILE *log;
  bool progress, quiet;
  bool log_lr;      /* the rate changes during the run (a schedule or warm-up) */
  double last_draw; /* seconds into the epoch of the last progress line */
  int64_t first_epoch;
  DlrtEpochStats last;
  History history;
  int save_failed;
} TrainReport;

static void format_duration(char *buf, size_t n, double seconds) {
  long s = seconds < 0 ? 0 : (long)(seconds + 0.5);
  if (s >= 3600)
    snprintf(buf, n, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    snprintf(buf, n, "%ld:%02ld", s / 60, s % 60);
}

/* One line, redrawn in place: epoch, bar, batch, loss, samples/s, ETA. */
static int on_batch(void *user, const DlrtBatchStats *b) {
  TrainReport *r = user;
  if (!r->progress || (b->seconds - r->last_draw < 0.1 && b->batch != b->batches)) return 0;
  r->last_draw = b->seconds;
  enum { BAR = 24 };
  char bar[BAR + 1];
  int filled = (int)(BAR * b->batch / b->batches);
  for (int i = 0; i < BAR; i++)
    bar[i] = i < filled ? '=' : i == filled ? '>' : ' ';
  bar[BAR] = 0;
  double rate = b->seconds > 0 ? (double)b->rows / b->seconds : 0;
  /* The rest of this epoch and the epochs after it, at this epoch's rate. */
  double left_rows = (double)(r->rows - b->rows) + (double)(r->until - b->epoch) * (double)r->rows;
  char eta[32];
  format_duration(eta, sizeof eta, rate > 0 ? left_rows / rate : 0);
  printf("\r\033[Kepoch %lld/%lld [%s] %lld/%lld  loss %.4f  %.0f samples/s  ETA %s",
         (long long)b->epoch, (long long)r->epochs, bar, (long long)b->batch, (long long)b->batches,
         b->loss, rate, eta);
  fflush(stdout);
  return 0;
}

static int on_epoch(void *user, const DlrtEpochStats *st) {
  TrainReport *r = user;
  r->last = *st;
  history_add(&r->history, st);
  if (r->log) {
    fprintf(r->log, "{\"epoch\": %lld, \"loss\": %.9g", (long long)st->epoch, st->loss);
    if (!isnan(st->accuracy)) fprintf(r->log, ", \"accuracy\": %.6g", st->accuracy);
    if (!isnan(st->val_loss)) fprintf(r->log, ", \"val_loss\": %.9g", st->val_loss);
    if (!isnan(st->val_accuracy)) fprintf(r->log, ", \"val_accuracy\": %.6g", st->val_accuracy);
    if (r->log_lr && !isnan(st->lr)) fprintf(r->log, ", \"lr\": %.6g", st->lr);
    fprintf(r->log, ", \"seconds\": %.6f}\n", st->seconds);
    fflush(r->log);
  }
  if (r->o->save) {
    DlrtError err = {{0}};
    if (dlrt_save(r->ctx, r->o->save, &err) != 0) {
      driver_error("%s", err.msg);
      r->save_failed = 1;
      return 1;
    }
  }
  int64_t span = r->until - r->first_epoch + 1;
  int64_t every = span > 20 ? span / 10 : 1;
  bool show = r->o->verbose || st->epoch == r->first_epoch || st->epoch == r->until || st->stop ||
              (st->epoch - r->first_epoch + 1) % every == 0;
  if (r->progress) printf("\r\033[K");
  if (show && !r->quiet) {
    printf("epoch %*lld/%lld  loss %.6f", r->epochs >= 1000 ? 5 : 3, (long long)st->epoch,
           (long long)r->epochs, st->loss);
    if (!isnan(st->accuracy)) printf("  accuracy %6.2f%%", 100.0 * st->accuracy);
    if (!isnan(st->val_loss)) printf("  val_loss %.6f", st->val_loss);
    if (!isnan(st->val_accuracy)) printf("  val_accuracy %6.2f%%", 100.0 * st->val_accuracy);
    printf("  %.3fs\n", st->seconds);
  }
  if (st->stop && !r->quiet) {
    const DlrtTrainState *ts = &r->ctx->train;
    printf("early stopping after epoch %lld: no lower validation loss for %lld epochs; best "
           "epoch %lld (val_loss %.6f)\n",
           (long long)st->epoch, (long long)ts->bad_epochs, (long long)ts->best_epoch,
           ts->best_loss);
  }
  fflush(stdout);
  return 0;
}

static bool want_progress(const DriverOptions *o) {
  if (o->progress >= 0) return o->progress == 1;
  const char *term = getenv("TERM");
  return isatty(1) && !o->quiet && term && strcmp(term, "dumb") != 0;
}

/* The schedule of the train block and the flags, at base rate lr. */
static bool make_schedule(const Session *s, const DriverOptions *o, double lr, DlrtSchedule *out) {
  const DlTrainSpec *t = &s->train;
  DlScheduleKind kind = t->schedule;
  bool renamed = false;
  if (o->schedule) {
    DlScheduleKind k;
    if (!strcmp(o->schedule, "constant"))
      k = DL_SCHEDULE_CONSTANT;
    else if (!strcmp(o->schedule, "step"))
      k = DL_SCHEDULE_STEP;
    else if (!strcmp(o->schedule, "cosine"))
      k = DL_SCHEDULE_COSINE;
    else {
      driver_error("unknown --schedule '%s' (supported: constant, step, cosine)", o->schedule);
      return false;
    }
    renamed = k != kind;
    kind = k;
  }
  DlrtSchedule sc = {.lr = lr, .every = 1, .gamma = 0.1};
  sc.kind = kind == DL_SCHEDULE_STEP     ? DLRT_SCHEDULE_STEP
            : kind == DL_SCHEDULE_COSINE ? DLRT_SCHEDULE_COSINE
                                         : DLRT_SCHEDULE_CONSTANT;
  if (!renamed) {
    sc.every = t->step_every > 0 ? t->step_every : 1;
    sc.gamma = t->gamma;
    sc.min_lr = t->min_lr;
    sc.warmup = t->warmup;
  }
  if (o->warmup >= 0) sc.warmup = o->warmup;
  *out = sc;
  return true;
}

static bool check_split(Session *s, const DlrtDataset *ds, DlLoc loc) {
  DlrtError err = {{0}};
  if (dlrt_dataset_check(s->rt, ds, true, &err) == 0) return true;
  dl_error(s->cc, loc, "%s", err.msg);
  driver_report(s);
  return false;
}

static void print_result(const char *what, double loss, double acc, const char *note) {
  printf("%s loss %.6f", what, loss);
  if (!isnan(acc)) printf("  accuracy %.2f%%", 100.0 * acc);
  printf("%s\n", note);
}

void prepared_free(Prepared *p) {
  dlrt_context_free(p->ctx);
  data_splits_free(&p->data);
  session_free(&p->s);
}

/* Lower, load the data, plan for its batch, JIT, make a context (from
 * --load or --resume), and fill in the training options. */
bool prepare_training(Prepared *p, const DriverOptions *o) {
  Session *s = &p->s;
  if (!session_lower(s, o)) return false;
  if (!s->train.present) {
    driver_error("model '%s' has no train block (add 'train %s { ... }' to %s)", s->graph->name,
                 s->graph->name, o->file);
    return false;
  }
  if (s->graph->loss == DL_NONE) {
    dl_error(s->cc, s->train.loc, "model '%s' has no 'loss' to train on", s->graph->name);
    driver_report(s);
    return false;
  }
  if (o->load && o->resume) {
    driver_error("--load and --resume exclude each other (--resume loads the parameters too)");
    return false;
  }
  if (!session_load_splits(s, o, &p->data)) return false;
  int64_t batch = session_batch(s, o);
  if (batch > p->data.train.nrows) batch = p->data.train.nrows;
  if (!session_optimizer(s, o, &p->opt)) return false;
  if (!session_plan(s, o, batch) || !session_jit(s, o)) return false;
  if (!check_split(s, &p->data.train, s->train.data.loc)) return false;
  if (p->data.has_validation && !check_split(s, &p->data.validation, s->train.validation.loc))
    return false;
  if (p->data.has_test && !check_split(s, &p->data.test, s->train.test.loc)) return false;
  if (!s->rt->train_step) {
    driver_error("model '%s' has no trainable parameters", s->graph->name);
    return false;
  }
  DlrtError err = {{0}};
  p->seed = session_seed(s, o);
  p->ctx = dlrt_context_new(s->rt, p->seed, &err);
  if (!p->ctx) {
    driver_error("%s", err.msg);
    return false;
  }
  if (!session_set_threads(p->ctx, o)) return false;
  if (o->load && dlrt_load(p->ctx, o->load, &err) != 0) {
    driver_error("%s", err.msg);
    return false;
  }
  if (o->resume) {
    if (dlrt_resume(p->ctx, o->resume, &err) != 0) {
      driver_error("%s", err.msg);
      return false;
    }
    p->seed = p->ctx->train.seed;
  }
  const DlTrainSpec *t = &s->train;
  DlrtTrainOptions *to = &p->to;
  memset(to, 0, sizeof *to);
  to->epochs = o->epochs > 0 ? o->epochs : t->epochs;
  to->batch = batch;
  to->seed = p->seed;
  to->shuffle = true;
  to->validation = p->data.has_validation ? &p->data.validation : NULL;
  to->patience = o->patience > 0 ? o->patience : t->patience;
  to->restore_best = o->patience > 0 || t->restore_best;
  if (to->patience > 0 && !to->validation) {
    driver_error("early stopping needs validation data (--validation F or a 'validation' "
                 "setting)");
    return false;
  }
  if (!make_schedule(s, o, p->opt.lr, &to->schedule)) return false;
  int64_t shift = o->shift > 0 ? o->shift : t->augment_shift;
  double noise = o->noise >= 0 ? o->noise : t->augment_noise;
  if (shift > 0 || noise > 0) {
    const DlNode *input = NULL;
    for (int i = 0; i < s->graph->nnodes && !input; i++)
      if (s->graph->nodes[i].op == DL_OP_INPUT &&
          s->graph->nodes[i].attr.input.role == DL_ROLE_INPUT)
        input = &s->graph->nodes[i];
    to->augment =
        (DlrtAugment){.field = input ? input->name : NULL, .shift = shift, .noise = noise};
  }
  return true;
}

static const char *optimizer_name(const DlOptimizer *opt) {
  switch (opt->kind) {
  case DL_OPTIM_SGD:
    return opt->momentum > 0 ? (opt->nesterov ? "sgd+nesterov" : "sgd+momentum") : "sgd";
  case DL_OPTIM_ADAM: return "adam";
  case DL_OPTIM_ADAMW: return "adamw";
  }
  return "?";
}

static bool write_curves(const DriverOptions *o, const char *model, const History *h) {
  PlotCurve loss[2], acc[2];
  int nloss = 0, nacc = 0;
  loss[nloss++] = (PlotCurve){"training", h->epoch, h->loss, h->n, 0, false};
  if (h->has_val) loss[nloss++] = (PlotCurve){"validation", h->epoch, h->val_loss, h->n, 1, true};
  acc[nacc++] = (PlotCurve){"training", h->epoch, h->acc, h->n, 0, false};
  if (h->has_val) acc[nacc++] = (PlotCurve){"validation", h->epoch, h->val_acc, h->n, 1, true};
  PlotPanel panels[2] = {
      {"Loss", "epoch", "loss", loss, nloss, false, true, false},
      {"Accuracy", "epoch", "accuracy", acc, nacc, false, true, true},
  };
  char title[256], mark[64], err[512];
  snprintf(title, sizeof title, "%s: training curves", model);
  snprintf(mark, sizeof mark, "early stop: best epoch %g", h->best_epoch);
  if (!plot_svg(o->plot, title, panels, h->has_acc ? 2 : 1, h->best_epoch, mark, err, sizeof err)) {
    driver_error("%s", err);
    return false;
  }
  if (!o->quiet) printf("wrote %s\n", o->plot);
  return true;
}

/* --lr A,B,C: one run per rate from the same initial parameters. */
static int lr_sweep(Prepared *p, const DriverOptions *o) {
  if (o->save || o->resume) {
    driver_error("--save and --resume take a single learning rate, not a list");
    return 1;
  }
  int nrates = 1;
  for (const char *c = o->lr_list; *c; c++)
    nrates += *c == ',';
  double *rates = malloc(sizeof(double) * (size_t)nrates);
  History *runs = calloc((size_t)nrates, sizeof(History));
  const char *c = o->lr_list;
  for (int i = 0; i < nrates; i++) {
    rates[i] = strtod(c, (char **)&c);
    c += *c == ',';
  }
  int status = 0;
  DlrtError err = {{0}};
  printf("learning-rate sweep of %s: %d rates, %lld epochs each, %s\n", p->s.graph->name, nrates,
         (long long)p->to.epochs, optimizer_name(&p->opt));
  for (int i = 0; i < nrates && status == 0; i++) {
    /* A fresh start: the same initial weights, zero optimiser state. */
    dlrt_init_params(p->ctx, p->seed);
    if (o->load && dlrt_load(p->ctx, o->load, &err) != 0) {
      driver_error("%s", err.msg);
      status = 1;
      break;
    }
    DlrtTrainOptions to = p->to;
    to.schedule.lr = rates[i];
    TrainReport rep = {.o = o,
                       .ctx = p->ctx,
                       .epochs = to.epochs,
                       .until = to.epochs,
                       .rows = p->data.train.nrows,
                       .first_epoch = 1,
                       .quiet = true};
    rep.history.best_epoch = NAN;
    int rc = dlrt_train(p->ctx, &p->data.train, &to, on_epoch, &rep, &err);
    runs[i] = rep.history;
    if (rc != 0) {
      printf("lr %-10g diverged: %s\n", rates[i], err.msg);
      continue;
    }
    double loss = rep.last.loss, acc = rep.last.accuracy, vloss = NAN, vacc = NAN;
    if (p->data.has_validation) {
      vloss = rep.last.val_loss;
      vacc = rep.last.val_accuracy;
    }
    printf("lr %-10g final loss %.6f", rates[i], loss);
    if (!isnan(acc)) printf("  accuracy %6.2f%%", 100 * acc);
    if (!isnan(vloss)) printf("  val_loss %.6f", vloss);
    if (!isnan(vacc)) printf("  val_accuracy %6.2f%%", 100 * vacc);
    printf("\n");
  }
  if (status == 0 && o->plot) {
    PlotCurve *loss = calloc((size_t)(2 * nrates), sizeof(PlotCurve));
    PlotCurve *acc = calloc((size_t)(2 * nrates), sizeof(PlotCurve));
    char(*labels)[48] = calloc((size_t)(2 * nrates), sizeof *labels);
    int n = 0;
    bool any_acc = false;
    for (int i = 0; i < nrates; i++) {
      const History *h = &runs[i];
      any_acc |= h->has_acc;
      snprintf(labels[2 * i], 48, "lr %g train", rates[i]);
      snprintf(labels[2 * i + 1], 48, "lr %g val", rates[i]);
      loss[n] = (PlotCurve){labels[2 * i], h->epoch, h->loss, h->n, i, false};
      acc[n++] = (PlotCurve){labels[2 * i], h->epoch, h->acc, h->n, i, false};
      if (h->has_val) {
        loss[n] = (PlotCurve){labels[2 * i + 1], h->epoch, h->val_loss, h->n, i, true};
        acc[n++] = (PlotCurve){labels[2 * i + 1], h->epoch, h->val_acc, h->n, i, true};
      }
    }
    PlotPanel panels[2] = {{"Loss", "epoch", "loss", loss, n, false, true, false},
                           {"Accuracy", "epoch", "accuracy", acc, n, false, true, true}};
    char title[256], perr[512];
    snprintf(title, sizeof title, "%s: learning-rate sweep", p->s.graph->name);
    if (!plot_svg(o->plot, title, panels, any_acc ? 2 : 1, NAN, "", perr, sizeof perr)) {
      driver_error("%s", perr);
      status = 1;
    } else if (!o->quiet) {
      printf("wrote %s\n", o->plot);
    }
    free(loss);
    free(acc);
    free(labels);
  }
  for (int i = 0; i < nrates; i++)
    history_free(&runs[i]);
  free(runs);
  free(rates);
  return status;
}

int cmd_train(int argc, char **argv) {
  DriverOptions o;
  int rc = parse_command_args(
      &o, argc, argv,
      "--model --epochs --lr --batch --seed --load --save --log --verbose -v --quiet -q -O0 -O1 "
      "-O2 -O3 --resume --plot --optimizer --momentum --weight-decay --clip --schedule --warmup "
      "--validation --patience --shift --noise --limit --progress --no-progress --stop-after "
      "--threads",
      train_help);
  if (rc) return rc == 2 ? 0 : 1;
  Prepared p = {0};
  FILE *log = NULL;
  int status = 1;
  TrainReport rep = {0};
  if (!prepare_training(&p, &o)) goto done;
  if (o.lr_list) {
    status = lr_sweep(&p, &o);
    goto done;
  }
  Session *s = &p.s;
  DlrtContext *ctx = p.ctx;
  DlrtError err = {{0}};
  if (o.log && !(log = fopen(o.log, "a"))) {
    driver_error("cannot open log file '%s'", o.log);
    goto done;
  }
  /* --epochs counts the whole run, so a resumed run trains what is left;
   * --stop-after ends this invocation early, the schedule unchanged. */
  int64_t total = p.to.epochs, done_epochs = ctx->train.epoch;
  int64_t until = o.stop_after > 0 && o.stop_after < total ? o.stop_after : total;
  p.to.epochs = until > done_epochs ? until - done_epochs : 0;
  p.to.schedule_epochs = total;
  rep = (TrainReport){.o = &o,
                      .ctx = ctx,
                      .epochs = total,
                      .until = until,
                      .rows = p.data.train.nrows,
                      .log = log,
                      .progress = want_progress(&o),
                      .quiet = o.quiet,
                      .first_epoch = done_epochs + 1};
  rep.history.best_epoch = NAN;
  rep.log_lr = p.to.schedule.kind != DLRT_SCHEDULE_CONSTANT || p.to.schedule.warmup > 0;
  if (rep.progress) p.to.on_batch = on_batch;
  if (!o.quiet) {
    printf("training %s: %lld rows, batch %lld, %lld epochs, lr %g", s->graph->name,
           (long long)p.data.train.nrows, (long long)p.to.batch, (long long)total, p.opt.lr);
    if (p.opt.kind != DL_OPTIM_SGD || p.opt.momentum > 0) printf(", %s", optimizer_name(&p.opt));
    if (p.data.has_validation) printf(", %lld validation rows", (long long)p.data.validation.nrows);
    printf("\n");
    if (o.resume)
      printf("resuming from %s after epoch %lld (step %lld)\n", o.resume, (long long)done_epochs,
             (long long)ctx->train.step);
  }
  /* Text: the loss of predicting the training characters' frequencies. */
  const DlDataSpec *spec = &s->train.data;
  if (spec->kind == DL_DATA_TEXT && !o.quiet) {
    bool val = p.data.has_validation;
    printf("unigram baseline loss %.6f (on the %s data)\n",
           dlrt_unigram_loss(&p.data.train, val ? &p.data.validation : &p.data.train, spec->target),
           val ? "validation" : "training");
  }
  if (dlrt_train(ctx, &p.data.train, &p.to, on_epoch, &rep, &err) != 0) {
    if (rep.progress) printf("\n");
    driver_error("%s", err.msg);
    goto done;
  }
  if (rep.save_failed) goto done;
  if (p.to.patience > 0 && ctx->train.best_epoch > 0) {
    rep.history.best_epoch = (double)ctx->train.best_epoch;
    if (!o.quiet)
      printf("restored the parameters of epoch %lld (val_loss %.6f)\n",
             (long long)ctx->train.best_epoch, ctx->train.best_loss);
  }
  double loss = 0, acc = NAN;
  if (dlrt_evaluate(ctx, &p.data.train, &loss, &acc, &err) != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  print_result("final", loss, acc, "  (on the training data)");
  if (p.data.has_validation) {
    if (dlrt_evaluate(ctx, &p.data.validation, &loss, &acc, &err) != 0) {
      driver_error("%s", err.msg);
      goto done;
    }
    print_result("validation", loss, acc, "");
  }
  if (p.data.has_test) {
    if (dlrt_evaluate(ctx, &p.data.test, &loss, &acc, &err) != 0) {
      driver_error("%s", err.msg);
      goto done;
    }
    print_result("test", loss, acc, "");
  }
  if (o.save) {
    if (dlrt_save(ctx, o.save, &err) != 0) {
      driver_error("%s", err.msg);
      goto done;
    }
    if (!o.quiet) printf("saved %s\n", o.save);
  }
  if (o.plot && !write_curves(&o, s->graph->name, &rep.history)) goto done;
  status = 0;
done:
  history_free(&rep.history);
  if (log) fclose(log);
  prepared_free(&p);
  return status;
}

/* ---- run ---- */

static const char run_help[] =
    "usage: dlcc run FILE.nnl [options]\n"
    "\n"
    "Run the model forward and print its output.  Inputs come from --input, else\n"
    "from the train block's data; a model without inputs simply runs.  When the\n"
    "data has targets and the model a loss, the loss is printed too.\n"
    "\n"
    "options:\n"
    "  --model NAME   the model to run\n"
    "  --load CKPT    parameters from a safetensors checkpoint (else initialised)\n"
    "  --input CSV    rows of input values (then optional target values), no header\n"
    "  --seed S       seed for initialising parameters (without --load)\n"
    "  --batch B      rows per forward call (default: train block, else 32)\n"
    "  --threads T    threads to compile and run on (default: one per core)\n"
    "  -O0 .. -O3     LLVM optimisation level\n";

static void print_named(const char *name, const float *data, int rank, const int64_t *dims) {
  printf("%s = ", name);
  print_tensor(stdout, data, rank, dims);
}

int cmd_run(int argc, char **argv) {
  DriverOptions o;
  int rc = parse_command_args(
      &o, argc, argv, "--model --load --input --seed --batch --threads -O0 -O1 -O2 -O3", run_help);
  if (rc) return rc == 2 ? 0 : 1;
  Session s = {0};
  DlrtDataset ds = {0};
  DlrtContext *ctx = NULL;
  float *pred = NULL;
  int status = 1;
  if (!session_lower(&s, &o)) goto done;
  DlGraph *g = s.graph;
  if (g->output == DL_NONE) {
    driver_error("model '%s' has no output to print", g->name);
    goto done;
  }
  bool has_inputs = false;
  for (int i = 0; i < g->nnodes; i++)
    has_inputs |= g->nodes[i].op == DL_OP_INPUT && g->nodes[i].attr.input.role == DL_ROLE_INPUT;
  bool has_targets = false;
  if (has_inputs) {
    if (o.input) {
      if (!session_load_input_csv(&s, o.input, &ds, &has_targets)) goto done;
    } else {
      if (!session_load_train_data(&s, &ds)) goto done;
      has_targets = true;
    }
  }
  int64_t batch = session_batch(&s, &o);
  if (has_inputs && batch > ds.nrows) batch = ds.nrows;
  /* Running needs the forward entry alone: skip compiling the backward pass. */
  o.forward_only = true;
  if (!session_plan(&s, &o, batch) || !session_jit(&s, &o)) goto done;
  DlrtError err = {{0}};
  ctx = dlrt_context_new(s.rt, session_seed(&s, &o), &err);
  if (!ctx) {
    driver_error("%s", err.msg);
    goto done;
  }
  if (!session_set_threads(ctx, &o)) goto done;
  if (o.load && dlrt_load(ctx, o.load, &err) != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  int oi = dlrt_find_role(s.rt, DLRT_ROLE_OUTPUT);
  const DlrtTensor *ot = &s.rt->tensors[oi];
  int64_t dims[DLRT_MAX_RANK];
  if (!has_inputs) {
    if (dlrt_run_forward(ctx, 1, &err) != 0) {
      driver_error("%s", err.msg);
      goto done;
    }
    for (int i = 0; i < ot->rank; i++)
      dims[i] = ot->dims[i] == DLRT_DIM_BATCH ? 1 : ot->dims[i];
    print_named(ot->name, dlrt_data(ctx, oi), ot->rank, dims);
    int li = dlrt_find_role(s.rt, DLRT_ROLE_LOSS);
    bool needs_targets = dlrt_find_role(s.rt, DLRT_ROLE_TARGET) >= 0;
    if (li >= 0 && !needs_targets) printf("loss = %.6g\n", (double)dlrt_data(ctx, li)[0]);
  } else {
    if (dlrt_dataset_check(s.rt, &ds, false, &err) != 0) {
      driver_error("%s", err.msg);
      goto done;
    }
    int64_t width = dlrt_numel(ot, 1);
    pred = malloc(sizeof(float) * (size_t)(ds.nrows * width + 1));
    if (dlrt_predict(ctx, &ds, pred, &err) != 0) {
      driver_error("%s", err.msg);
      goto done;
    }
    for (int i = 0; i < ot->rank; i++)
      dims[i] = ot->dims[i] == DLRT_DIM_BATCH ? ds.nrows : ot->dims[i];
    print_named(ot->name, pred, ot->rank, dims);
    if (has_targets && dlrt_find_role(s.rt, DLRT_ROLE_LOSS) >= 0) {
      double loss, acc;
      if (dlrt_evaluate(ctx, &ds, &loss, &acc, &err) != 0) {
        driver_error("%s", err.msg);
        goto done;
      }
      printf("loss = %.6g\n", loss);
      if (!isnan(acc)) printf("accuracy = %.2f%%\n", 100.0 * acc);
    }
  }
  status = 0;
done:
  free(pred);
  dlrt_context_free(ctx);
  dlrt_dataset_free(&ds);
  session_free(&s);
  return status;
}

/* ---- compile ---- */

static const char compile_help[] =
    "usage: dlcc compile FILE.nnl -o OUT.o [--header OUT.h] [options]\n"
    "\n"
    "Write an ELF object file with the model's kernels and entry points\n"
    "(forward, grad, train_step) and its tensor table, plus a C header that\n"
    "declares them.  Link the object with the runtime library (libdlrt.a) and -lm.\n"
    "\n"
    "options:\n"
    "  -o OUT.o        the object file (required unless --stats)\n"
    "  --header OUT.h  the header (default: OUT with .h instead of .o)\n"
    "  --model NAME    the model to compile\n"
    "  --prefix NAME   symbol prefix (default: the model's name)\n"
    "  --batch B       largest batch the entry points accept (default: train block, else 32)\n"
    "  --lr X          default learning rate of train_step\n"
    "  --stats         print the plan: kernels and FLOPs per entry point, the\n"
    "                  arena's bytes against the sum of all buffers\n"
    "  -O0 .. -O3      LLVM optimisation level\n";

int cmd_compile(int argc, char **argv) {
  DriverOptions o;
  int rc = parse_command_args(&o, argc, argv,
                              "-o --header --model --prefix --batch --lr --stats -O0 -O1 -O2 -O3",
                              compile_help);
  if (rc) return rc == 2 ? 0 : 1;
  if (!o.output && !o.stats) {
    driver_error("'dlcc compile' needs -o OUT.o (or --stats)");
    return 1;
  }
  Session s = {0};
  int status = 1;
  char *header_path = NULL;
  if (!session_lower(&s, &o) || !session_plan(&s, &o, session_batch(&s, &o))) goto done;
  if (o.stats) print_plan_stats(stdout, &s);
  if (!o.output) {
    status = 0;
    goto done;
  }
  DlCodegenOptions co = {.target = DL_TARGET_CPU, .opt_level = o.opt_level, .prefix = o.prefix};
  if (!dl_emit_object(s.cc, s.prog, &co, o.output)) {
    driver_report(&s);
    goto done;
  }
  char *header = dl_emit_c_header(s.cc, s.prog, &co);
  if (!header) {
    driver_report(&s);
    goto done;
  }
  if (o.header) {
    header_path = strdup(o.header);
  } else {
    size_t n = strlen(o.output);
    header_path = malloc(n + 3);
    memcpy(header_path, o.output, n + 1);
    if (n > 2 && !strcmp(header_path + n - 2, ".o"))
      header_path[n - 1] = 'h';
    else
      strcat(header_path, ".h");
  }
  FILE *f = fopen(header_path, "w");
  if (!f || fputs(header, f) < 0 || fclose(f) != 0) {
    driver_error("cannot write header '%s'", header_path);
    goto done;
  }
  status = 0;
done:
  free(header_path);
  session_free(&s);
  return status;
}
