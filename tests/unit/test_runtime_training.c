/* test_runtime_training.c - learning-rate schedules, dataset splits and
 * labels, normalisation, IDX files, and checkpoints that carry optimiser
 * state and the training position. */
#include "../../runtime/dlrt.h"
#include "check.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

static bool near(double a, double b) {
  return fabs(a - b) <= 1e-9 * fmax(1.0, fabs(b));
}

/* For values that went through a float. */
static bool nearf(double a, double b) {
  return fabs(a - b) <= 1e-6 * fmax(1.0, fabs(b));
}

static int test_schedules(void) {
  int check_failures = 0;
  DlrtSchedule c = {.kind = DLRT_SCHEDULE_CONSTANT, .lr = 0.1};
  CHECK(near(dlrt_schedule_lr(&c, 0, 10, 100), 0.1) &&
        near(dlrt_schedule_lr(&c, 99, 10, 100), 0.1));
  /* Warm-up over 2 epochs of 10 steps: (step + 1) / 20 of the rate. */
  c.warmup = 2;
  CHECK(near(dlrt_schedule_lr(&c, 0, 10, 100), 0.1 / 20));
  CHECK(near(dlrt_schedule_lr(&c, 9, 10, 100), 0.1 / 2));
  CHECK(near(dlrt_schedule_lr(&c, 19, 10, 100), 0.1));
  CHECK(near(dlrt_schedule_lr(&c, 20, 10, 100), 0.1));
  /* Step: times gamma every 3 epochs. */
  DlrtSchedule s = {.kind = DLRT_SCHEDULE_STEP, .lr = 1, .every = 3, .gamma = 0.5};
  CHECK(near(dlrt_schedule_lr(&s, 29, 10, 100), 1));
  CHECK(near(dlrt_schedule_lr(&s, 30, 10, 100), 0.5));
  CHECK(near(dlrt_schedule_lr(&s, 65, 10, 100), 0.25));
  /* Cosine: from lr at the first step to min_lr at the last. */
  DlrtSchedule k = {.kind = DLRT_SCHEDULE_COSINE, .lr = 1, .min_lr = 0.1};
  CHECK(near(dlrt_schedule_lr(&k, 0, 10, 101), 1));
  CHECK(near(dlrt_schedule_lr(&k, 50, 10, 101), 0.55));
  CHECK(near(dlrt_schedule_lr(&k, 100, 10, 101), 0.1));
  /* Exponential: geometric from lr to end_lr. */
  DlrtSchedule e = {.kind = DLRT_SCHEDULE_EXPONENTIAL, .lr = 1e-6, .end_lr = 1};
  CHECK(near(dlrt_schedule_lr(&e, 0, 10, 7), 1e-6));
  CHECK(near(dlrt_schedule_lr(&e, 3, 10, 7), 1e-3));
  CHECK(near(dlrt_schedule_lr(&e, 6, 10, 7), 1));
  return check_failures;
}

static int test_split_and_labels(void) {
  int check_failures = 0;
  DlrtError err = {{0}};
  float x[10], y[10];
  for (int i = 0; i < 10; i++) {
    x[i] = (float)i;
    y[i] = (float)(i % 3);
  }
  DlrtDataset ds = {0}, kept, held, kept2, held2;
  CHECK(dlrt_dataset_add(&ds, "x", x, 10, 1, &err) == 0);
  CHECK(dlrt_dataset_add(&ds, "y", y, 10, 1, &err) == 0);
  CHECK(dlrt_dataset_split(&ds, 0.3, 7, &kept, &held, &err) == 0);
  CHECK(kept.nrows == 7 && held.nrows == 3);
  /* Every row lands in exactly one part, with its label. */
  int seen[10] = {0};
  for (int r = 0; r < 7; r++) {
    int i = (int)kept.fields[0].data[r];
    seen[i]++;
    CHECK(kept.fields[1].data[r] == (float)(i % 3));
  }
  for (int r = 0; r < 3; r++)
    seen[(int)held.fields[0].data[r]]++;
  for (int i = 0; i < 10; i++)
    CHECK(seen[i] == 1);
  /* The same seed gives the same split. */
  CHECK(dlrt_dataset_split(&ds, 0.3, 7, &kept2, &held2, &err) == 0);
  CHECK(!memcmp(held.fields[0].data, held2.fields[0].data, 3 * sizeof(float)));
  dlrt_dataset_free(&kept2);
  dlrt_dataset_free(&held2);
  CHECK(dlrt_dataset_split(&ds, 1.0, 7, &kept2, &held2, &err) != 0);
  CHECK_MSG(err, "a held-out fraction must be between 0 and 1");
  dlrt_dataset_free(&kept);
  dlrt_dataset_free(&held);

  /* One-hot labels; out of range, negative and fractional ones. */
  DlrtField f = {0};
  CHECK(dlrt_labels_to_field(y, 4, 3, "labels", &f, &err) == 0);
  const float want[12] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0};
  CHECK(f.width == 3 && !memcmp(f.data, want, sizeof want));
  const float bad[2] = {1, 3};
  CHECK(dlrt_labels_to_field(bad, 2, 3, "labels", &f, &err) != 0);
  CHECK_MSG(err, "labels: label 3 of row 2 is out of range: the target has 3 classes (0 to 2)");
  const float neg[1] = {-1};
  CHECK(dlrt_labels_to_field(neg, 1, 1, "labels", &f, &err) != 0);
  CHECK_MSG(err, "is not a class index");
  free(f.data);

  /* Standardisation with statistics of other rows; a constant column. */
  float m[2], sd[2];
  float v[6] = {1, 5, 3, 5, 5, 5};
  DlrtField g = {.width = 2, .data = v};
  dlrt_field_stats(&g, 3, m, sd);
  CHECK(nearf(m[0], 3) && nearf(m[1], 5) && nearf(sd[0], sqrt(8.0 / 3)) && sd[1] == 1);
  dlrt_field_normalize(&g, 3, m, sd);
  CHECK(nearf(v[0], -2 / sqrt(8.0 / 3)) && v[1] == 0 && v[2] == 0);
  dlrt_dataset_free(&ds);
  return check_failures;
}

static void write_file(const char *path, const unsigned char *bytes, size_t n, bool gz) {
  if (gz) {
    gzFile f = gzopen(path, "wb");
    gzwrite(f, bytes, (unsigned)n);
    gzclose(f);
    return;
  }
  FILE *f = fopen(path, "wb");
  fwrite(bytes, 1, n, f);
  fclose(f);
}

static int test_idx(const char *dir) {
  int check_failures = 0;
  char images[512], labels[512];
  snprintf(images, sizeof images, "%s/img", dir);
  snprintf(labels, sizeof labels, "%s/lbl", dir);
  const unsigned char img[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 255, 51, 102};
  const unsigned char lbl[] = {0, 0, 8, 1, 0, 0, 0, 2, 9, 0};
  DlrtError err = {{0}};
  for (int gz = 0; gz < 2; gz++) {
    write_file(images, img, sizeof img, gz);
    write_file(labels, lbl, sizeof lbl, gz);
    DlrtIdxSpec spec = {images, labels, "x", "y", 2, 10, 0};
    DlrtDataset ds;
    CHECK(dlrt_idx_load(&spec, &ds, &err) == 0);
    CHECK(ds.nrows == 2 && ds.fields[0].width == 2 && ds.fields[1].width == 10);
    CHECK(ds.fields[0].data[1] == 1.0f && nearf(ds.fields[0].data[2], 0.2));
    CHECK(ds.fields[0].image_height == 1 && ds.fields[0].image_width == 2);
    CHECK(ds.fields[1].data[9] == 1 && ds.fields[1].data[10] == 1);
    dlrt_dataset_free(&ds);
    /* The first item only; class indices instead of one-hot. */
    spec.limit = 1;
    spec.classes = 1;
    CHECK(dlrt_idx_load(&spec, &ds, &err) == 0);
    CHECK(ds.nrows == 1 && ds.fields[1].width == 1 && ds.fields[1].data[0] == 9);
    dlrt_dataset_free(&ds);
  }
  DlrtIdxSpec spec = {images, labels, "x", "y", 2, 5, 0};
  DlrtDataset ds;
  CHECK(dlrt_idx_load(&spec, &ds, &err) != 0);
  CHECK_MSG(err, "label 9 of row 1 is out of range: the target has 5 classes");
  spec.classes = 10;
  spec.input_width = 3;
  CHECK(dlrt_idx_load(&spec, &ds, &err) != 0);
  CHECK_MSG(err, "are 1x2 (2 values), but input 'x' takes 3 values per row");
  write_file(images, img, sizeof img - 1, false);
  spec.input_width = 2;
  CHECK(dlrt_idx_load(&spec, &ds, &err) != 0);
  CHECK_MSG(err, "is truncated: it ends in the data (3 of 4 bytes)");
  unlink(images);
  unlink(labels);
  return check_failures;
}

/* A program with one parameter and its optimiser state, run by hand. */
static int test_checkpoint_state(const char *dir) {
  int check_failures = 0;
  DlrtTensor tensors[3] = {
      {.name = "w",
       .role = DLRT_ROLE_PARAM,
       .rank = 1,
       .dims = {2},
       .offset = 0,
       .init = DLRT_INIT_CONST,
       .a = 1},
      {.name = "optim/m/w", .role = DLRT_ROLE_STATE, .rank = 1, .dims = {2}, .offset = 16},
      {.name = "lr",
       .role = DLRT_ROLE_HYPER,
       .rank = 0,
       .offset = 32,
       .init = DLRT_INIT_CONST,
       .a = 0.1},
  };
  DlrtProgram prog = {.abi_version = DLRT_ABI_VERSION,
                      .ntensors = 3,
                      .model = "m",
                      .mem_floats = 48,
                      .max_batch = 1,
                      .tensors = tensors};
  DlrtError err = {{0}};
  DlrtContext *a = dlrt_context_new(&prog, 5, &err), *b = dlrt_context_new(&prog, 6, &err);
  CHECK(a && b);
  if (!a || !b) return check_failures;
  float *am = dlrt_data(a, 1);
  am[0] = 0.25f;
  am[1] = -2;
  a->train.epoch = 3;
  a->train.step = 30;
  a->train.best_loss = 0.125;
  a->train.best_epoch = 2;
  a->train.bad_epochs = 1;
  a->train.seed = UINT64_C(18446744073709551557);
  a->best = malloc(2 * sizeof(float));
  a->best[0] = 7;
  a->best[1] = 8;
  char path[512];
  snprintf(path, sizeof path, "%s/ckpt", dir);
  CHECK(dlrt_save(a, path, &err) == 0);
  CHECK(dlrt_resume(b, path, &err) == 0);
  CHECK(b->train.epoch == 3 && b->train.step == 30 && b->train.best_loss == 0.125 &&
        b->train.best_epoch == 2 && b->train.bad_epochs == 1 &&
        b->train.seed == UINT64_C(18446744073709551557));
  CHECK(dlrt_data(b, 1)[0] == 0.25f && dlrt_data(b, 1)[1] == -2);
  CHECK(b->best && b->best[0] == 7 && b->best[1] == 8);
  DlrtStFile f;
  CHECK(dlrt_safetensors_read(path, &f, &err) == 0);
  CHECK(f.ntensors == 3 && !strcmp(dlrt_safetensors_meta(&f, "step"), "30") &&
        !strcmp(dlrt_safetensors_meta(&f, "format"), "dlcc") &&
        dlrt_safetensors_meta(&f, "x") == NULL);
  dlrt_safetensors_free(&f);
  /* A fresh start forgets the state. */
  dlrt_init_params(b, 6);
  CHECK(dlrt_data(b, 1)[0] == 0 && b->train.epoch == 0 && b->best == NULL &&
        isinf(b->train.best_loss));
  /* --load ignores the state; resume needs it. */
  CHECK(dlrt_load(b, path, &err) == 0 && dlrt_data(b, 1)[0] == 0);
  DlrtStTensor only = {.name = "w", .rank = 1, .dims = {2}, .numel = 2, .data = a->best};
  CHECK(dlrt_safetensors_write(path, &only, 1, &err) == 0);
  CHECK(dlrt_resume(b, path, &err) != 0);
  CHECK_MSG(err, "checkpoint has no optimiser state 'optim/m/w'");
  DlrtStMeta twice[2] = {{"k", "1"}, {"k", "2"}};
  CHECK(dlrt_safetensors_write_meta(path, &only, 1, twice, 2, &err) != 0);
  CHECK_MSG(err, "metadata key 'k' is given twice");
  unlink(path);
  dlrt_context_free(a);
  dlrt_context_free(b);
  return check_failures;
}

int main(void) {
  char dir[256];
  check_temp_dir(dir, sizeof dir, "dlcc_training");
  int check_failures =
      test_schedules() + test_split_and_labels() + test_idx(dir) + test_checkpoint_state(dir);
  rmdir(dir);
  if (check_failures) {
    fprintf(stderr, "test_runtime_training: %d check(s) failed\n", check_failures);
    return 1;
  }
  printf("test_runtime_training: ok\n");
  return 0;
}
