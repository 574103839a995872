/* cmd_train.c - `dlcc train`, `dlcc run` and `dlcc compile`. */
#include "driver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- train ---- */

static const char train_help[] =
    "usage: dlcc train FILE.nnl [options]\n"
    "\n"
    "Compile the model's training step with the JIT and train it on the data of\n"
    "its train block, printing loss (and accuracy for 0/1 targets) per epoch.\n"
    "\n"
    "options:\n"
    "  --model NAME     the model to train (default: the first train block's)\n"
    "  --epochs N       number of passes over the data (default: train block)\n"
    "  --lr X           learning rate (default: train block, else 0.01)\n"
    "  --batch B        minibatch rows (default: train block, else 32)\n"
    "  --seed S         seed for initialisation and shuffling (default: train block, else 0)\n"
    "  --load CKPT      start from the parameters in a safetensors checkpoint\n"
    "  --save CKPT      write the trained parameters (safetensors, written atomically)\n"
    "  --log FILE       append one JSON object per epoch (epoch, loss, accuracy, seconds)\n"
    "  --verbose, -v    print every epoch (default: about ten lines)\n"
    "  --quiet, -q      print only the final result\n"
    "  -O0 .. -O3       LLVM optimisation level (default -O3)\n";

typedef struct TrainReport {
  const DriverOptions *o;
  int64_t epochs;
  FILE *log;
  DlrtEpochStats last;
} TrainReport;

static int on_epoch(void *user, const DlrtEpochStats *st) {
  TrainReport *r = user;
  r->last = *st;
  if (r->log) {
    fprintf(r->log, "{\"epoch\": %lld, \"loss\": %.9g", (long long)st->epoch, st->loss);
    if (!isnan(st->accuracy)) fprintf(r->log, ", \"accuracy\": %.6g", st->accuracy);
    fprintf(r->log, ", \"seconds\": %.6f}\n", st->seconds);
  }
  int64_t every = r->epochs > 20 ? r->epochs / 10 : 1;
  bool show = r->o->verbose || st->epoch == 1 || st->epoch == r->epochs || st->epoch % every == 0;
  if (show && !r->o->quiet) {
    printf("epoch %*lld/%lld  loss %.6f", r->epochs >= 1000 ? 5 : 3, (long long)st->epoch,
           (long long)r->epochs, st->loss);
    if (!isnan(st->accuracy)) printf("  accuracy %6.2f%%", 100.0 * st->accuracy);
    printf("  %.3fs\n", st->seconds);
    fflush(stdout);
  }
  return 0;
}

static uint64_t session_seed(const Session *s, const DriverOptions *o) {
  if (o->seed >= 0) return (uint64_t)o->seed;
  return s->train.present ? s->train.seed : 0;
}

int cmd_train(int argc, char **argv) {
  DriverOptions o;
  int rc =
      parse_command_args(&o, argc, argv,
                         "--model --epochs --lr --batch --seed --load --save --log --verbose -v "
                         "--quiet -q -O0 -O1 -O2 -O3",
                         train_help);
  if (rc) return rc == 2 ? 0 : 1;
  Session s = {0};
  DlrtDataset ds = {0};
  DlrtContext *ctx = NULL;
  FILE *log = NULL;
  int status = 1;
  if (!session_lower(&s, &o)) goto done;
  if (!s.train.present) {
    driver_error("model '%s' has no train block (add 'train %s { ... }' to %s)", s.graph->name,
                 s.graph->name, o.file);
    goto done;
  }
  if (s.graph->loss == DL_NONE) {
    dl_error(s.cc, s.train.loc, "model '%s' has no 'loss' to train on", s.graph->name);
    driver_report(&s);
    goto done;
  }
  if (!session_load_train_data(&s, &ds)) goto done;
  int64_t batch = session_batch(&s, &o);
  if (batch > ds.nrows) batch = ds.nrows;
  if (!session_plan(&s, &o, batch) || !session_jit(&s, &o)) goto done;
  DlrtError err = {{0}};
  if (dlrt_dataset_check(s.rt, &ds, true, &err) != 0) {
    dl_error(s.cc, s.train.data.loc, "%s", err.msg);
    driver_report(&s);
    goto done;
  }
  if (!s.rt->train_step) {
    driver_error("model '%s' has no trainable parameters", s.graph->name);
    goto done;
  }
  uint64_t seed = session_seed(&s, &o);
  ctx = dlrt_context_new(s.rt, seed, &err);
  if (!ctx) {
    driver_error("%s", err.msg);
    goto done;
  }
  if (o.load && dlrt_load(ctx, o.load, &err) != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  if (o.lr > 0 && dlrt_set_hyper(ctx, "lr", (float)o.lr, &err) != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  if (o.log && !(log = fopen(o.log, "a"))) {
    driver_error("cannot open log file '%s'", o.log);
    goto done;
  }
  DlrtTrainOptions to = {
      .epochs = o.epochs > 0 ? o.epochs : s.train.epochs,
      .batch = batch,
      .seed = seed,
      .shuffle = true,
  };
  TrainReport rep = {.o = &o, .epochs = to.epochs, .log = log};
  if (!o.quiet)
    printf("training %s: %lld rows, batch %lld, %lld epochs, lr %g\n", s.graph->name,
           (long long)ds.nrows, (long long)batch, (long long)to.epochs,
           o.lr > 0 ? o.lr : s.train.lr);
  if (dlrt_train(ctx, &ds, &to, on_epoch, &rep, &err) != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  double loss = 0, acc = NAN;
  if (dlrt_evaluate(ctx, &ds, &loss, &acc, &err) != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  printf("final loss %.6f", loss);
  if (!isnan(acc)) printf("  accuracy %.2f%%", 100.0 * acc);
  printf("  (on the training data)\n");
  if (o.save) {
    if (dlrt_save(ctx, o.save, &err) != 0) {
      driver_error("%s", err.msg);
      goto done;
    }
    if (!o.quiet) printf("saved %s\n", o.save);
  }
  status = 0;
done:
  if (log) fclose(log);
  dlrt_context_free(ctx);
  dlrt_dataset_free(&ds);
  session_free(&s);
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
    "  -O0 .. -O3     LLVM optimisation level\n";

static void print_named(const char *name, const float *data, int rank, const int64_t *dims) {
  printf("%s = ", name);
  print_tensor(stdout, data, rank, dims);
}

int cmd_run(int argc, char **argv) {
  DriverOptions o;
  int rc = parse_command_args(&o, argc, argv,
                              "--model --load --input --seed --batch -O0 -O1 -O2 -O3", run_help);
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
  if (!session_plan(&s, &o, batch) || !session_jit(&s, &o)) goto done;
  DlrtError err = {{0}};
  ctx = dlrt_context_new(s.rt, session_seed(&s, &o), &err);
  if (!ctx) {
    driver_error("%s", err.msg);
    goto done;
  }
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
