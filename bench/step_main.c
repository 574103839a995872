/* step_main.c - run a model's training step many times, for profilers.
 *
 * bench/profile.sh builds it against an object file made by `dlcc compile`
 * (MODEL_PREFIX is the symbol prefix, the model's name):
 *
 *   cc -O2 -I runtime -I OUT -DMODEL_PREFIX=mlp bench/step_main.c mlp.o libdlrt.a -lm
 *   ./a.out STEPS BATCH THREADS
 *
 * Inputs and targets are seeded random values (N(0, 1) and U(0, 1)), as in
 * `dlcc bench`; the parameters are updated each step as in training.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define STEP_STR2(x) #x
#define STEP_STR(x) STEP_STR2(x)
#include STEP_STR(MODEL_PREFIX.h)
#define STEP_CAT2(a, b) a##b
#define STEP_CAT(a, b) STEP_CAT2(a, b)

int main(int argc, char **argv) {
  long steps = argc > 1 ? atol(argv[1]) : 1000;
  int64_t batch = argc > 2 ? atoll(argv[2]) : STEP_CAT(MODEL_PREFIX, _program).max_batch;
  int threads = argc > 3 ? atoi(argv[3]) : 1;
  DlrtError err = {{0}};
  DlrtContext *ctx = dlrt_context_new(&STEP_CAT(MODEL_PREFIX, _program), 1, &err);
  if (!ctx || dlrt_set_threads(ctx, threads, &err) != 0) {
    fprintf(stderr, "step_main: %s\n", err.msg);
    return 1;
  }
  const DlrtProgram *prog = ctx->prog;
  for (int t = 0; t < prog->ntensors; t++) {
    const DlrtTensor *tt = &prog->tensors[t];
    if (tt->role != DLRT_ROLE_INPUT && tt->role != DLRT_ROLE_TARGET) continue;
    float *d = dlrt_data(ctx, t);
    for (int64_t i = 0; i < dlrt_numel(tt, batch); i++)
      d[i] = tt->role == DLRT_ROLE_INPUT ? (float)dlrt_normal(1, (uint64_t)t, (uint64_t)i)
                                         : (float)dlrt_uniform01(1, (uint64_t)t, (uint64_t)i);
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long s = 0; s < steps; s++)
    if (dlrt_run_train_step(ctx, batch, &err) != 0) {
      fprintf(stderr, "step_main: %s\n", err.msg);
      return 1;
    }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
  printf("%ld steps of %lld rows on %d threads: %.4f ms per step\n", steps, (long long)batch,
         threads, ms / (double)steps);
  dlrt_context_free(ctx);
  return 0;
}
