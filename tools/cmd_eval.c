/* cmd_eval.c - `dlcc eval`: a checkpoint's loss, accuracy and confusion
 * matrix on the test data (or another split) of the train block. */
#include "training.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char eval_help[] =
    "usage: dlcc eval FILE.nnl --load CKPT [options]\n"
    "\n"
    "Evaluate trained parameters on the train block's test data: print the loss,\n"
    "the accuracy and, for classifiers, the confusion matrix (rows: true class,\n"
    "columns: predicted class).  The splits are made as `dlcc train` makes them\n"
    "(same seed, same rows, same normalisation).\n"
    "\n"
    "options:\n"
    "  --load CKPT     the parameters (required)\n"
    "  --split NAME    test (default), validation or train\n"
    "  --model NAME    the model\n"
    "  --seed S        the seed the splits were made with (default: train block)\n"
    "  --validation F  the validation fraction training used, if given as a flag\n"
    "  --limit N       the --limit training used\n"
    "  --batch B       rows per forward call\n"
    "  -O0 .. -O3      LLVM optimisation level\n";

/* Class of a row of width w: argmax, or for one column a 0/1 threshold
 * (binary) or the value itself (a class index). */
static int64_t row_class(const float *v, int64_t w, bool index) {
  if (w > 1) return dlrt_argmax(v, w);
  return index ? (int64_t)v[0] : v[0] > 0.5f;
}

static void print_confusion(const DlrtDataset *ds, const float *pred, int64_t ow,
                            const char *target) {
  const DlrtField *t = dlrt_dataset_field(ds, target);
  if (!t) return;
  bool index = t->width == 1 && ow > 1;
  int64_t k = ow > 1 ? ow : 2;
  if (!(t->width == ow || index) || k > 100) return;
  int64_t *m = calloc((size_t)(k * k), sizeof(int64_t));
  for (int64_t r = 0; r < ds->nrows; r++) {
    int64_t truth = row_class(t->data + r * t->width, t->width, index);
    int64_t guess = row_class(pred + r * ow, ow, false);
    if (truth >= 0 && truth < k && guess >= 0 && guess < k) m[truth * k + guess]++;
  }
  int width = 5;
  for (int64_t i = 0; i < k * k; i++) {
    int digits = snprintf(NULL, 0, "%lld", (long long)m[i]);
    if (digits + 1 > width) width = digits + 1;
  }
  printf("confusion matrix (rows: true class, columns: predicted class):\n%*s", 6, "");
  for (int64_t j = 0; j < k; j++)
    printf("%*lld", width, (long long)j);
  printf("\n");
  for (int64_t i = 0; i < k; i++) {
    printf("%5lld ", (long long)i);
    for (int64_t j = 0; j < k; j++)
      printf("%*lld", width, (long long)m[i * k + j]);
    printf("\n");
  }
  free(m);
}

int cmd_eval(int argc, char **argv) {
  DriverOptions o;
  int rc = parse_command_args(&o, argc, argv,
                              "--model --load --split --seed --validation --limit --batch -O0 -O1 "
                              "-O2 -O3",
                              eval_help);
  if (rc) return rc == 2 ? 0 : 1;
  if (!o.load) {
    driver_error("'dlcc eval' needs --load CKPT (the parameters to evaluate)");
    return 1;
  }
  const char *split = o.split ? o.split : "test";
  if (strcmp(split, "test") && strcmp(split, "validation") && strcmp(split, "train")) {
    driver_error("unknown --split '%s' (supported: test, validation, train)", split);
    return 1;
  }
  Prepared p = {0};
  float *pred = NULL;
  int status = 1;
  if (!prepare_training(&p, &o)) goto done;
  const DlrtDataset *ds = !strcmp(split, "train") ? &p.data.train
                          : !strcmp(split, "test")
                              ? (p.data.has_test ? &p.data.test : NULL)
                              : (p.data.has_validation ? &p.data.validation : NULL);
  if (!ds) {
    driver_error("model '%s' has no %s data: add a '%s' setting to its train block (e.g. %s = "
                 "0.1)",
                 p.s.graph->name, split, split, split);
    goto done;
  }
  DlrtError err = {{0}};
  double loss, acc;
  if (dlrt_evaluate(p.ctx, ds, &loss, &acc, &err) != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  printf("%s: %lld rows of the %s data, parameters from %s\n", p.s.graph->name,
         (long long)ds->nrows, split, o.load);
  printf("loss %.6f\n", loss);
  if (!isnan(acc))
    printf("accuracy %.2f%% (%lld of %lld)\n", 100 * acc,
           (long long)llround(acc * (double)ds->nrows), (long long)ds->nrows);
  int oi = dlrt_find_role(p.s.rt, DLRT_ROLE_OUTPUT), ti = dlrt_find_role(p.s.rt, DLRT_ROLE_TARGET);
  if (oi >= 0 && ti >= 0 && !isnan(acc)) {
    int64_t ow = dlrt_numel(&p.s.rt->tensors[oi], 1);
    pred = malloc(sizeof(float) * (size_t)(ds->nrows * ow));
    if (dlrt_predict(p.ctx, ds, pred, &err) != 0) {
      driver_error("%s", err.msg);
      goto done;
    }
    print_confusion(ds, pred, ow, p.s.rt->tensors[ti].name);
  }
  status = 0;
done:
  free(pred);
  prepared_free(&p);
  return status;
}
