/* aot_main.c - run a model compiled ahead of time by `dlcc compile`.
 *
 * Build it against the object file and header dlcc wrote, the runtime and
 * libm (MODEL_PREFIX is the symbol prefix, the model's name by default):
 *
 *   dlcc compile xor.nnl -o xor.o            # also writes xor.h
 *   cc -I runtime -I . -DMODEL_PREFIX=xor tests/driver/aot_main.c xor.o libdlrt.a -lm
 *
 * The header is MODEL_PREFIX.h unless -DMODEL_HEADER='"other.h"' names it.
 *
 *   ./a.out [--seed S] [--load CKPT] [--input CSV]
 *
 * creates a context (parameters initialised from the seed, default 0, or
 * loaded from a checkpoint), feeds the CSV's rows (the inputs' columns in
 * declaration order, no header) through the forward entry point, and prints
 * the output exactly as `dlcc run --input CSV` does ("name = [[...]]", %.6g),
 * so a test can compare the two.  A model without inputs runs once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MODEL_PREFIX
#error "compile with -DMODEL_PREFIX=<symbol prefix of the compiled model>"
#endif

#define AOT_STR2(x) #x
#define AOT_STR(x) AOT_STR2(x)
#define AOT_CAT2(a, b) a##b
#define AOT_CAT(a, b) AOT_CAT2(a, b)
#define AOT_FN(suffix) AOT_CAT(MODEL_PREFIX, suffix)

#ifdef MODEL_HEADER
#include MODEL_HEADER
#else
#include AOT_STR(MODEL_PREFIX.h)
#endif

/* The same layout as `dlcc run`: nested brackets, numpy-style abbreviation of
 * axes longer than 8. */
static void print_axis(const float *data, int rank, const int64_t *dims, int axis, int64_t at) {
  if (axis == rank) {
    printf("%.6g", (double)data[at]);
    return;
  }
  int64_t n = dims[axis], inner = 1;
  for (int i = axis + 1; i < rank; i++)
    inner *= dims[i];
  putchar('[');
  int abbrev = n > 8;
  for (int64_t i = 0; i < n; i++) {
    if (abbrev && i == 3) {
      fputs(", ...", stdout);
      i = n - 3;
    }
    if (i) fputs(axis == rank - 1 ? ", " : ",\n ", stdout);
    print_axis(data, rank, dims, axis + 1, at + i * inner);
  }
  putchar(']');
}

static void print_named(const char *name, const float *data, int rank, const int64_t *dims) {
  printf("%s = ", name);
  print_axis(data, rank, dims, 0, 0);
  putchar('\n');
}

static int fail(const char *what, const DlrtError *err) {
  fprintf(stderr, "aot_main: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
  return 1;
}

int main(int argc, char **argv) {
  unsigned long long seed = 0;
  const char *load = NULL, *input = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--seed") && i + 1 < argc)
      seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--load") && i + 1 < argc)
      load = argv[++i];
    else if (!strcmp(argv[i], "--input") && i + 1 < argc)
      input = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--seed S] [--load CKPT] [--input CSV]\n", argv[0]);
      return 2;
    }
  }

  DlrtError err = {{0}};
  DlrtContext *ctx = AOT_FN(_create)(seed, &err);
  if (!ctx) return fail("cannot create a context", &err);
  const DlrtProgram *prog = ctx->prog;
  int status = 1;
  DlrtDataset ds = {0};
  float *pred = NULL;
  if (load && dlrt_load(ctx, load, &err) != 0) {
    fail("cannot load the checkpoint", &err);
    goto done;
  }
  int out_i = dlrt_find_role(prog, DLRT_ROLE_OUTPUT);
  if (out_i < 0) {
    fail("the model has no output", NULL);
    goto done;
  }
  const DlrtTensor *ot = &prog->tensors[out_i];
  int64_t dims[DLRT_MAX_RANK];

  /* One CSV field per model input, in table (declaration) order. */
  DlrtCsvColumns cols[DLRT_MAX_FIELDS];
  int ncols = 0, col = 0;
  for (int i = 0; i < prog->ntensors && ncols < DLRT_MAX_FIELDS; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    if (t->role != DLRT_ROLE_INPUT) continue;
    int width = (int)dlrt_numel(t, 1);
    cols[ncols++] = (DlrtCsvColumns){t->name, col, width};
    col += width;
  }

  if (ncols == 0) {
    if (AOT_FN(_forward)(ctx, 1, &err) != 0) {
      fail("forward failed", &err);
      goto done;
    }
    for (int i = 0; i < ot->rank; i++)
      dims[i] = ot->dims[i] == DLRT_DIM_BATCH ? 1 : ot->dims[i];
    print_named(ot->name, AOT_FN(_output)(ctx), ot->rank, dims);
    status = 0;
    goto done;
  }
  if (!input) {
    fail("the model has inputs: give them with --input CSV", NULL);
    goto done;
  }
  if (dlrt_csv_load(input, false, cols, ncols, &ds, &err) != 0 ||
      dlrt_dataset_check(prog, &ds, false, &err) != 0) {
    fail("bad input", &err);
    goto done;
  }
  int64_t width = dlrt_numel(ot, 1);
  pred = malloc(sizeof(float) * (size_t)(ds.nrows * width + 1));
  if (!pred) {
    fail("out of memory", NULL);
    goto done;
  }
  if (dlrt_predict(ctx, &ds, pred, &err) != 0) {
    fail("forward failed", &err);
    goto done;
  }
  for (int i = 0; i < ot->rank; i++)
    dims[i] = ot->dims[i] == DLRT_DIM_BATCH ? ds.nrows : ot->dims[i];
  print_named(ot->name, pred, ot->rank, dims);
  status = 0;
done:
  free(pred);
  dlrt_dataset_free(&ds);
  dlrt_context_free(ctx);
  return status;
}
