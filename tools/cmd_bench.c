/* cmd_bench.c - `dlcc bench`: time a model's compiled training step (and
 * inference) on random data, and `compile --stats`' report of the plan. */
#include "driver.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char bench_help[] =
    "usage: dlcc bench FILE.nnl [--batch B] [--steps N] [--threads T] [--infer] [options]\n"
    "\n"
    "Compile the model's training step once, fill its inputs and targets with\n"
    "random data of their shapes (seeded), run a few warm-up steps, then time N\n"
    "steps one by one and print the compile time (parse to JIT ready) and the\n"
    "median and fastest milliseconds per step.  The parameters are updated as in\n"
    "training.  With --infer, or for a model without a training step, the\n"
    "forward pass (inference of one batch) is timed the same way.\n"
    "\n"
    "options:\n"
    "  --batch B     rows per step (default: the train block's batch, else 32)\n"
    "  --steps N     timed steps (default 100; warm-up: N/10, at least 3)\n"
    "  --threads T   threads to compile and run on (default: one per core)\n"
    "  --no-fuse     one kernel per node (to measure what fusion gains)\n"
    "  --infer       also time inference (the forward entry point)\n"
    "  --stats       also print the plan (as 'dlcc compile --stats')\n"
    "  --model NAME  the model to time\n"
    "  --seed S      seed for the parameters and the random data (default 0)\n"
    "  --lr X        learning rate of the update (default: the train block's)\n"
    "  -O0 .. -O3    LLVM optimisation level (default -O3)\n";

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *pa, const void *pb) {
  double a = *(const double *)pa, b = *(const double *)pb;
  return a < b ? -1 : a > b;
}

typedef struct Timing {
  double median_ms, min_ms;
} Timing;

/* Decimals that show at least four significant digits of a time in ms (a
 * one-product model of a microsecond printed as 0.0013 was 8 % coarse). */
static int ms_decimals(double ms) {
  int d = 4;
  for (double v = ms; v > 0 && v < 0.1 && d < 9; v *= 10)
    d++;
  return d;
}

/* Run `fn` warmup + steps times; the median and fastest of the timed runs. */
static bool time_entry(DlrtContext *ctx, int (*fn)(DlrtContext *, int64_t, DlrtError *), int64_t n,
                       int64_t steps, Timing *out) {
  DlrtError err = {{0}};
  int64_t warmup = steps / 10 < 3 ? 3 : steps / 10;
  double *t = malloc(sizeof(double) * (size_t)steps);
  for (int64_t i = 0; i < warmup + steps; i++) {
    double t0 = now_ms();
    if (fn(ctx, n, &err) != 0) {
      driver_error("%s", err.msg);
      free(t);
      return false;
    }
    if (i >= warmup) t[i - warmup] = now_ms() - t0;
  }
  qsort(t, (size_t)steps, sizeof(double), cmp_double);
  out->median_ms = steps % 2 ? t[steps / 2] : 0.5 * (t[steps / 2 - 1] + t[steps / 2]);
  out->min_ms = t[0];
  free(t);
  return true;
}

void print_plan_stats(FILE *out, const Session *s) {
  DlPlanStats st;
  dl_plan_stats(s->prog, &st);
  fprintf(out, "plan %s: batch %lld\n", s->graph->name, (long long)s->prog->max_batch);
  fprintf(out, "  simplified: %d folded, %d identities, %d common subexpressions\n",
          s->simplified.folded, s->simplified.identities, s->simplified.merged);
  for (int e = 0; e < DL_ENTRY_COUNT; e++)
    if (st.present[e])
      fprintf(out, "  %-10s %4d kernels %14.0f FLOPs\n", dl_entry_names[e], st.kernels[e],
              st.flops[e]);
  fprintf(out, "  memory: arena %lld bytes, all buffers %lld bytes (%.1f%%)\n",
          (long long)st.arena_bytes, (long long)st.buffer_bytes,
          st.buffer_bytes ? 100.0 * (double)st.arena_bytes / (double)st.buffer_bytes : 100.0);
}

int cmd_bench(int argc, char **argv) {
  DriverOptions o;
  int rc = parse_command_args(&o, argc, argv,
                              "--model --batch --steps --threads --infer --stats --seed --lr "
                              "--no-fuse -O0 -O1 -O2 -O3",
                              bench_help);
  if (rc) return rc == 2 ? 0 : 1;
  Session s = {0};
  DlrtContext *ctx = NULL;
  int status = 1;
  double t0 = now_ms();
  if (!session_lower(&s, &o)) goto done;
  int64_t n = session_batch(&s, &o);
  if (!session_plan(&s, &o, n) || !session_jit(&s, &o)) goto done;
  double compile_ms = now_ms() - t0;

  uint64_t seed = o.seed >= 0 ? (uint64_t)o.seed : 0;
  DlrtError err = {{0}};
  ctx = dlrt_context_new(s.rt, seed, &err);
  if (!ctx) {
    driver_error("%s", err.msg);
    goto done;
  }
  if (!session_set_threads(ctx, &o)) goto done;
  session_fill_inputs(&s, ctx, NULL, seed, n);
  int64_t steps = o.steps > 0 ? o.steps : 100;
  DlPlanStats st;
  dl_plan_stats(s.prog, &st);
  printf("bench %s: batch %lld, %lld timed steps\n", s.graph->name, (long long)n, (long long)steps);
  printf("  threads: %d\n", dlrt_pool_threads(ctx->pool));
  printf("  compile: %.1f ms (parse to JIT ready; LLVM on %d thread%s)\n", compile_ms,
         dl_jit_threads(s.jit), dl_jit_threads(s.jit) == 1 ? "" : "s");
  Timing tm;
  bool have_train = s.rt->train_step != NULL;
  if (have_train) {
    if (!time_entry(ctx, dlrt_run_train_step, n, steps, &tm)) goto done;
    printf("  train step: median %.*f ms, min %.*f ms, %.2f GFLOP/s\n", ms_decimals(tm.median_ms),
           tm.median_ms, ms_decimals(tm.min_ms), tm.min_ms,
           st.flops[DL_ENTRY_TRAIN] / (tm.median_ms * 1e6));
  } else {
    printf("  train step: none (the model has no loss or no parameters)\n");
  }
  if (o.infer || !have_train) {
    if (!time_entry(ctx, dlrt_run_forward, n, steps, &tm)) goto done;
    printf("  inference: median %.*f ms, min %.*f ms per batch, %.2f GFLOP/s\n",
           ms_decimals(tm.median_ms), tm.median_ms, ms_decimals(tm.min_ms), tm.min_ms,
           st.flops[DL_ENTRY_FORWARD] / (tm.median_ms * 1e6));
  }
  if (o.stats) print_plan_stats(stdout, &s);
  status = 0;
done:
  dlrt_context_free(ctx);
  session_free(&s);
  return status;
}
