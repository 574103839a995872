/* nnl_eval.c - measure a trained example model, compiled ahead of time.
 *
 *   dlcc compile model.nnl -o model.o          # also writes model.h
 *   cc -I runtime -I . -DMODEL_PREFIX=model nnl_eval.c model.o libdlrt.a -lm
 *   ./a.out --load CKPT --input CSV --metric M [--min X] [--max X]
 *
 * The CSV holds the model's inputs, then its first target, in declaration
 * order (what lang/examples/tools/nnl_data.c writes).  The program loads the
 * checkpoint, predicts every row with the compiled forward entry point, and
 * prints the metric, and with --min/--max fails (exit 1) when the value is
 * outside, with --beat-baseline when a trivial predictor does as well.
 * Metrics:
 *
 *   mse        mean squared error of the output against the target; the
 *              baselines predict the last value of the first input
 *              (persistence) and the mean target
 *   bits       fraction of output values on the right side of 0.5 (targets
 *              0/1); also "rows", the fraction of rows entirely right
 *   classes    the output's last axis holds scores for each class and the
 *              target holds class indices (one per row of scores): the
 *              fraction whose largest score is the target's class; also
 *              "rows", the fraction of samples entirely right
 *   argmax     one-hot targets: the fraction of rows whose largest output is
 *              the target's 1
 *
 * The baseline of bits, classes and argmax predicts the most common target
 * value (per position).
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MODEL_PREFIX
#error "compile with -DMODEL_PREFIX=<symbol prefix of the compiled model>"
#endif

#define EVAL_STR2(x) #x
#define EVAL_STR(x) EVAL_STR2(x)
#define EVAL_CAT2(a, b) a##b
#define EVAL_CAT(a, b) EVAL_CAT2(a, b)
#define EVAL_FN(suffix) EVAL_CAT(MODEL_PREFIX, suffix)

#include EVAL_STR(MODEL_PREFIX.h)

static int fail(const char *what, const DlrtError *err) {
  fprintf(stderr, "nnl_eval: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
  return 1;
}

static int64_t argmax(const float *v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;
  return best;
}

enum { MAX_CLASSES = 1024 };

static int64_t argmax_count(const int64_t *count, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; i++)
    if (count[i] > count[best]) best = i;
  return best;
}

/* The most common value of column k (values are small integers). */
static int64_t majority(const float *target, int64_t tw, int64_t k, int64_t rows) {
  int64_t count[MAX_CLASSES] = {0};
  for (int64_t r = 0; r < rows; r++) {
    int64_t v = (int64_t)target[r * tw + k];
    if (v >= 0 && v < MAX_CLASSES) count[v]++;
  }
  return argmax_count(count, MAX_CLASSES);
}

/* The metric named `metric` of predictions against targets, and the same
 * metric for trivial predictors.  *higher: whether larger values are better. */
static int measure(const char *metric, const float *pred, int64_t pw, const float *target,
                   int64_t tw, const DlrtField *first_input, int64_t rows, double *value,
                   double *baseline, bool *higher) {
  double n = (double)(rows * tw);
  *higher = true;
  if (!strcmp(metric, "mse")) {
    if (pw != tw) return fail("mse needs an output as wide as the target", NULL);
    double err = 0, last = 0, mean = 0, spread = 0;
    for (int64_t i = 0; i < rows * tw; i++)
      mean += target[i];
    mean /= n;
    for (int64_t r = 0; r < rows; r++) {
      double prev = first_input->data[(r + 1) * first_input->width - 1];
      for (int64_t k = 0; k < tw; k++) {
        double t = target[r * tw + k];
        err += (pred[r * pw + k] - t) * (pred[r * pw + k] - t);
        last += (prev - t) * (prev - t);
        spread += (mean - t) * (mean - t);
      }
    }
    *value = err / n;
    *higher = false;
    /* The better of "the last input value again" and "the mean target". */
    *baseline = fmin(last / n, spread / n);
    printf("mse %.6g\nbaseline-last %.6g\nbaseline-mean %.6g\n", *value, last / n, spread / n);
    return 0;
  }
  if (!strcmp(metric, "bits") || !strcmp(metric, "classes")) {
    bool bits = metric[0] == 'b';
    if (bits ? pw != tw : (tw == 0 || pw % tw != 0))
      return fail("the output's width does not fit the target's", NULL);
    int64_t classes = bits ? 1 : pw / tw, right = 0, rows_right = 0, trivial = 0;
    for (int64_t k = 0; k < tw; k++) {
      int64_t common = majority(target, tw, k, rows);
      for (int64_t r = 0; r < rows; r++)
        trivial += (int64_t)target[r * tw + k] == common;
    }
    for (int64_t r = 0; r < rows; r++) {
      int64_t here = 0;
      for (int64_t k = 0; k < tw; k++) {
        int64_t guess =
            bits ? pred[r * pw + k] > 0.5f : argmax(pred + r * pw + k * classes, classes);
        here += guess == (int64_t)target[r * tw + k];
      }
      right += here;
      rows_right += here == tw;
    }
    *value = (double)right / n;
    /* The most common target value at each position. */
    *baseline = (double)trivial / n;
    printf("%s %.6g\nrows %.6g\nbaseline-majority %.6g\n", metric, *value,
           (double)rows_right / (double)rows, *baseline);
    return 0;
  }
  if (!strcmp(metric, "argmax")) {
    if (pw != tw) return fail("argmax needs an output as wide as the target", NULL);
    int64_t right = 0, count[MAX_CLASSES] = {0};
    for (int64_t r = 0; r < rows; r++) {
      int64_t want = argmax(target + r * tw, tw);
      right += argmax(pred + r * pw, pw) == want;
      if (want < MAX_CLASSES) count[want]++;
    }
    *value = (double)right / (double)rows;
    *baseline = (double)count[argmax_count(count, MAX_CLASSES)] / (double)rows;
    printf("argmax %.6g\nbaseline-majority %.6g\n", *value, *baseline);
    return 0;
  }
  return fail("unknown metric (mse, bits, classes or argmax)", NULL);
}

int main(int argc, char **argv) {
  const char *load = NULL, *input = NULL, *metric = NULL;
  double lo = -INFINITY, hi = INFINITY;
  bool beat = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--load") && i + 1 < argc)
      load = argv[++i];
    else if (!strcmp(argv[i], "--input") && i + 1 < argc)
      input = argv[++i];
    else if (!strcmp(argv[i], "--metric") && i + 1 < argc)
      metric = argv[++i];
    else if (!strcmp(argv[i], "--min") && i + 1 < argc)
      lo = strtod(argv[++i], NULL);
    else if (!strcmp(argv[i], "--max") && i + 1 < argc)
      hi = strtod(argv[++i], NULL);
    else if (!strcmp(argv[i], "--beat-baseline"))
      beat = true;
    else {
      fprintf(
          stderr,
          "usage: %s --load CKPT --input CSV --metric M [--min X] [--max X] [--beat-baseline]\n",
          argv[0]);
      return 2;
    }
  }
  if (!load || !input || !metric) return fail("--load, --input and --metric are required", NULL);

  DlrtError err = {{0}};
  DlrtContext *ctx = EVAL_FN(_create)(0, &err);
  if (!ctx) return fail("cannot create a context", &err);
  const DlrtProgram *prog = ctx->prog;
  int status = 1;
  DlrtDataset ds = {0};
  float *pred = NULL;
  if (dlrt_load(ctx, load, &err) != 0) {
    fail("cannot load the checkpoint", &err);
    goto done;
  }
  int out_i = dlrt_find_role(prog, DLRT_ROLE_OUTPUT);
  int target_i = dlrt_find_role(prog, DLRT_ROLE_TARGET);
  if (out_i < 0 || target_i < 0) {
    fail("the model needs an output and a target", NULL);
    goto done;
  }
  /* Columns: every input in table (declaration) order, then the target. */
  DlrtCsvColumns cols[DLRT_MAX_FIELDS];
  int ncols = 0, col = 0;
  for (int i = 0; i < prog->ntensors && ncols < DLRT_MAX_FIELDS - 1; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if (t->role != DLRT_ROLE_INPUT) continue;
    cols[ncols++] = (DlrtCsvColumns){t->name, col, (int)dlrt_numel(t, 1)};
    col += (int)dlrt_numel(t, 1);
  }
  const DlrtTensor *tt = &prog->tensors[target_i];
  cols[ncols++] = (DlrtCsvColumns){tt->name, col, (int)dlrt_numel(tt, 1)};
  if (dlrt_csv_load(input, false, cols, ncols, &ds, &err) != 0) {
    fail("bad input", &err);
    goto done;
  }
  int64_t pw = dlrt_numel(&prog->tensors[out_i], 1);
  pred = malloc(sizeof(float) * (size_t)(ds.nrows * pw + 1));
  if (!pred) {
    fail("out of memory", NULL);
    goto done;
  }
  if (dlrt_predict(ctx, &ds, pred, &err) != 0) {
    fail("forward failed", &err);
    goto done;
  }
  const DlrtField *target = dlrt_dataset_field(&ds, tt->name);
  double value, baseline;
  bool higher;
  if (measure(metric, pred, pw, target->data, target->width, &ds.fields[0], ds.nrows, &value,
              &baseline, &higher) != 0)
    goto done;
  if (!(value >= lo && value <= hi)) {
    fprintf(stderr, "nnl_eval: %s %.6g is outside [%g, %g]\n", metric, value, lo, hi);
    goto done;
  }
  if (beat && !(higher ? value > baseline : value < baseline)) {
    fprintf(stderr, "nnl_eval: %s %.6g does not beat the trivial predictor's %.6g\n", metric, value,
            baseline);
    goto done;
  }
  status = 0;
done:
  free(pred);
  dlrt_dataset_free(&ds);
  dlrt_context_free(ctx);
  return status;
}
