/* cmd_lrfind.c - `dlcc lr-find`: the learning-rate range test.  Train from
 * the initial weights while the rate grows exponentially from tiny to huge,
 * one step per batch over one pass of the data, record the loss, and
 * suggest the rate where it falls fastest (before it diverges). */
#include "plot.h"
#include "training.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char lr_find_help[] =
    "usage: dlcc lr-find FILE.nnl [options]\n"
    "\n"
    "Learning-rate range test: train for one pass over the data (at least 100\n"
    "steps) with the rate growing exponentially from --start to --end, record\n"
    "the loss of each step (smoothed), stop when it diverges (4 times its\n"
    "minimum), and suggest the rate where the smoothed loss falls fastest.\n"
    "The optimizer, batch and seed are the train block's (or the flags').\n"
    "\n"
    "options:\n"
    "  --start X       the first rate (default 1e-7)\n"
    "  --end X         the last rate (default 10)\n"
    "  --plot FILE.svg draw the loss against the rate (log scale)\n"
    "  --model NAME, --batch B, --seed S, --optimizer NAME, --limit N, -O0 .. -O3\n";

typedef struct Finder {
  double *lr, *loss, *smooth;
  int n, cap;
  double avg, best;
  bool diverged;
} Finder;

static int on_batch(void *user, const DlrtBatchStats *b) {
  Finder *f = user;
  if (f->n == f->cap) {
    f->cap = f->cap ? 2 * f->cap : 256;
    f->lr = realloc(f->lr, sizeof(double) * (size_t)f->cap);
    f->loss = realloc(f->loss, sizeof(double) * (size_t)f->cap);
    f->smooth = realloc(f->smooth, sizeof(double) * (size_t)f->cap);
  }
  /* An exponential moving average with bias correction, as fastai's. */
  const double beta = 0.98;
  f->avg = beta * f->avg + (1 - beta) * b->batch_loss;
  double smooth = f->avg / (1 - pow(beta, f->n + 1));
  f->lr[f->n] = b->lr;
  f->loss[f->n] = b->batch_loss;
  f->smooth[f->n] = smooth;
  f->n++;
  if (smooth < f->best) f->best = smooth;
  if (f->n > 10 && (smooth > 4 * f->best || !isfinite(smooth))) {
    f->diverged = true;
    return 1;
  }
  return 0;
}

int cmd_lr_find(int argc, char **argv) {
  DriverOptions o;
  int rc = parse_command_args(&o, argc, argv,
                              "--model --batch --seed --optimizer --limit --start --end --plot "
                              "--quiet -q -O0 -O1 -O2 -O3",
                              lr_find_help);
  if (rc) return rc == 2 ? 0 : 1;
  double start = o.lr_start > 0 ? o.lr_start : 1e-7, end = o.lr_end > 0 ? o.lr_end : 10;
  if (!(end > start)) {
    driver_error("--end (%g) must be larger than --start (%g)", end, start);
    return 1;
  }
  Prepared p = {0};
  Finder f = {.best = INFINITY};
  int status = 1;
  if (!prepare_training(&p, &o)) goto done;
  DlrtTrainOptions to = p.to;
  int64_t batches = (p.data.train.nrows + to.batch - 1) / to.batch;
  to.epochs = batches >= 100 ? 1 : (100 + batches - 1) / batches;
  to.validation = NULL;
  to.patience = 0;
  to.schedule = (DlrtSchedule){.kind = DLRT_SCHEDULE_EXPONENTIAL, .lr = start, .end_lr = end};
  to.on_batch = on_batch;
  DlrtError err = {{0}};
  /* A NaN loss ends the test like a divergence. */
  if (dlrt_train(p.ctx, &p.data.train, &to, NULL, &f, &err) != 0) f.diverged = true;
  /* The steepest descent of the smoothed loss against log(lr), before the
   * lowest loss (past it the loss only oscillates, and a drop there says
   * nothing about a good rate) and after the first few noisy steps. */
  int last = f.n - 1;
  while (last > 0 && f.diverged && f.smooth[last] > 1.5 * f.best)
    last--;
  int steep = -1, lowest = 0;
  double slope = 0;
  for (int i = 0; i < f.n; i++)
    if (f.smooth[i] < f.smooth[lowest]) lowest = i;
  for (int i = 5; i < last && i <= lowest; i++) {
    double d = (f.smooth[i + 1] - f.smooth[i - 1]) / (log(f.lr[i + 1]) - log(f.lr[i - 1]));
    if (d < slope) {
      slope = d;
      steep = i;
    }
  }
  printf("lr-find %s: %d steps from lr %g to %g, %s\n", p.s.graph->name, f.n, start,
         f.n ? f.lr[f.n - 1] : start, f.diverged ? "stopped when the loss diverged" : "completed");
  if (f.n == 0) {
    driver_error("no training steps ran");
    goto done;
  }
  printf("lowest smoothed loss %.6f at lr %g\n", f.smooth[lowest], f.lr[lowest]);
  if (steep < 0) {
    printf("the loss never fell: try a larger --end or check the model\n");
  } else {
    printf("steepest descent at lr %g\n", f.lr[steep]);
    printf("suggested lr %g\n", f.lr[steep]);
  }
  if (o.plot) {
    PlotCurve curves[2] = {{"loss", f.lr, f.loss, f.n, 5, false},
                           {"smoothed", f.lr, f.smooth, f.n, 0, false}};
    PlotPanel panel = {"Loss against learning rate",
                       "learning rate (log scale)",
                       "loss",
                       curves,
                       2,
                       true,
                       false,
                       false};
    char title[256], mark[64], perr[512];
    snprintf(title, sizeof title, "%s: learning-rate range test", p.s.graph->name);
    snprintf(mark, sizeof mark, "suggested %g", steep >= 0 ? f.lr[steep] : NAN);
    if (!plot_svg(o.plot, title, &panel, 1, steep >= 0 ? f.lr[steep] : NAN, mark, perr,
                  sizeof perr)) {
      driver_error("%s", perr);
      goto done;
    }
    printf("wrote %s\n", o.plot);
  }
  status = 0;
done:
  free(f.lr);
  free(f.loss);
  free(f.smooth);
  prepared_free(&p);
  return status;
}
