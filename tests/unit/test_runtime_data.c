/* test_runtime_data.c - CSV loading and datasets: parsing (header, spaces,
 * blank lines, CRLF), error messages with file:line:col, and the checks that
 * match a dataset against a program's inputs and targets. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "check.h"
#include "dlrt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N DLRT_DIM_BATCH

typedef struct TempDir {
  char path[4096];
} TempDir;

static void temp_dir(TempDir *d) {
  check_temp_dir(d->path, sizeof d->path, "dlrt_csv");
}

/* Write `text` to dir/name; the full path goes to `path`. */
static void write_file(const TempDir *d, const char *name, const char *text, char *path,
                       size_t size) {
  snprintf(path, size, "%s/%s", d->path, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(text, 1, strlen(text), f) != strlen(text)) {
    perror(path);
    exit(2);
  }
  fclose(f);
}

static const DlrtCsvColumns kXY[2] = {{"x", 0, 2}, {"y", 2, 1}};

/* Load `text` as a CSV with columns x = 0..1, y = 2; returns load's result
 * and leaves the message in err. */
static int load_text(const TempDir *d, const char *text, bool header, DlrtDataset *ds,
                     DlrtError *err, char *path, size_t size) {
  write_file(d, "data.csv", text, path, size);
  return dlrt_csv_load(path, header, kXY, 2, ds, err);
}

static int test_parse(const TempDir *d) {
  int check_failures = 0;
  char path[4200];
  DlrtDataset ds;
  DlrtError err = {{0}};
  const char *text = "\xef\xbb\xbf x1, x2 ,y\r\n1,2,3\r\n\r\n 4 , 5.5,\t-6e-1 \r\n   \n"
                     "7,+8,.9\n\n";
  CHECK(load_text(d, text, true, &ds, &err, path, sizeof path) == 0);
  CHECK(ds.nrows == 3);
  CHECK(ds.nfields == 2);
  const DlrtField *x = dlrt_dataset_field(&ds, "x"), *y = dlrt_dataset_field(&ds, "y");
  CHECK(x && y);
  if (x && y) {
    CHECK(x->width == 2 && y->width == 1);
    const float want_x[6] = {1, 2, 4, 5.5f, 7, 8}, want_y[3] = {3, -0.6f, 0.9f};
    CHECK(memcmp(x->data, want_x, sizeof want_x) == 0);
    CHECK(memcmp(y->data, want_y, sizeof want_y) == 0);
  }
  CHECK(dlrt_dataset_field(&ds, "z") == NULL);
  dlrt_dataset_free(&ds);
  CHECK(ds.nfields == 0 && ds.nrows == 0);

  /* Without a header the first line is data; no final newline; columns the
   * selection does not use may hold anything. */
  const DlrtCsvColumns skip_label[2] = {{"x", 1, 2}, {"y", 3, 1}};
  write_file(d, "labels.csv", "cat,1,2,0\ndog,3,4,1", path, sizeof path);
  CHECK(dlrt_csv_load(path, false, skip_label, 2, &ds, &err) == 0);
  CHECK(ds.nrows == 2);
  if (ds.nfields == 2) {
    CHECK(ds.fields[0].data[2] == 3.0f && ds.fields[1].data[1] == 1.0f);
  }
  dlrt_dataset_free(&ds);
  return check_failures;
}

static int test_errors(const TempDir *d) {
  int check_failures = 0;
  char path[4200], want[4400];
  DlrtDataset ds;
  DlrtError err = {{0}};

  CHECK(load_text(d, "1,2,3\n4,5,6\n7,abc,9\n", false, &ds, &err, path, sizeof path) == -1);
  snprintf(want, sizeof want, "%s:3:3: not a number: 'abc'", path);
  CHECK_MSG(err, want);
  CHECK(ds.nfields == 0 && ds.nrows == 0); /* nothing is left allocated */

  CHECK(load_text(d, "a,b,c\n1,2,3\n\n4,5,6\n7,  8x ,9\n", true, &ds, &err, path, sizeof path) ==
        -1);
  snprintf(want, sizeof want, "%s:5:5: not a number: '8x'", path);
  CHECK_MSG(err, want);

  CHECK(load_text(d, "1,2,3\n4,5\n", false, &ds, &err, path, sizeof path) == -1);
  snprintf(want, sizeof want, "%s:2: expected 3 columns, found 2", path);
  CHECK_MSG(err, want);

  CHECK(load_text(d, "1,2,3\n4,5,6,7\n", false, &ds, &err, path, sizeof path) == -1);
  CHECK_MSG(err, ":2: expected 3 columns, found 4");

  CHECK(load_text(d, "1,2\n", false, &ds, &err, path, sizeof path) == -1);
  snprintf(want, sizeof want,
           "%s:1: field 'y' takes column 2 (counting from 0), but the rows have 2 columns", path);
  CHECK_MSG(err, want);

  CHECK(load_text(d, "1,,3\n", false, &ds, &err, path, sizeof path) == -1);
  CHECK_MSG(err, ":1:3: missing value");
  CHECK(load_text(d, "1,2,nan\n", false, &ds, &err, path, sizeof path) == -1);
  CHECK_MSG(err, ":1:5: not a finite number: 'nan'");
  CHECK(load_text(d, "1,2,1e999\n", false, &ds, &err, path, sizeof path) == -1);
  CHECK_MSG(err, ":1:5: number out of range: '1e999'");
  CHECK(load_text(d, "1,2,\"3\"\n", false, &ds, &err, path, sizeof path) == -1);
  CHECK_MSG(err, ":1:5: not a number: '\"3\"'");

  CHECK(load_text(d, "", false, &ds, &err, path, sizeof path) == -1);
  snprintf(want, sizeof want, "%s: no data rows", path);
  CHECK_MSG(err, want);
  CHECK(load_text(d, "x1,x2,y\n\n", true, &ds, &err, path, sizeof path) == -1);
  CHECK_MSG(err, "no data rows");

  snprintf(path, sizeof path, "%s/missing.csv", d->path);
  CHECK(dlrt_csv_load(path, false, kXY, 2, &ds, &err) == -1);
  snprintf(want, sizeof want, "cannot open data file '%s': No such file or directory", path);
  CHECK_MSG(err, want);

  /* Bad selections. */
  const DlrtCsvColumns twice[2] = {{"x", 0, 1}, {"x", 1, 1}};
  CHECK(dlrt_csv_load(path, false, twice, 2, &ds, &err) == -1);
  CHECK_MSG(err, "the data already has a field named 'x'");
  const DlrtCsvColumns empty[1] = {{"x", 0, 0}};
  CHECK(dlrt_csv_load(path, false, empty, 1, &ds, &err) == -1);
  CHECK_MSG(err, "field 'x' has an invalid column range (first 0, count 0)");
  CHECK(dlrt_csv_load(path, false, kXY, 0, &ds, &err) == -1);
  CHECK_MSG(err, "a csv selection needs 1 to 8 fields, got 0");
  return check_failures;
}

static int test_dataset(void) {
  int check_failures = 0;
  DlrtDataset ds = {0};
  DlrtError err = {{0}};
  const float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[4] = {0, 1, 0, 1};
  CHECK(dlrt_dataset_add(&ds, "x", x, 4, 2, &err) == 0);
  CHECK(dlrt_dataset_add(&ds, "y", y, 3, 1, &err) == -1);
  CHECK_MSG(err, "field 'y' has 3 rows, the data has 4");
  CHECK(dlrt_dataset_add(&ds, "x", y, 4, 1, &err) == -1);
  CHECK_MSG(err, "the data already has a field named 'x'");
  CHECK(dlrt_dataset_add(&ds, "y", y, 4, 0, &err) == -1);
  CHECK_MSG(err, "field 'y' needs at least one value per row, got 0");
  CHECK(dlrt_dataset_add(&ds, "y", y, 4, 1, &err) == 0);
  CHECK(ds.nrows == 4 && ds.nfields == 2);
  const DlrtField *f = dlrt_dataset_field(&ds, "x");
  CHECK(f && f->data != x && f->data[7] == 8.0f); /* a copy */

  /* The program: input x:[N,2], target y:[N,1]. */
  const DlrtTensor tensors[2] = {
      {.name = "x", .role = DLRT_ROLE_INPUT, .rank = 2, .dims = {N, 2}},
      {.name = "y", .role = DLRT_ROLE_TARGET, .rank = 2, .dims = {N, 1}, .offset = 8},
  };
  DlrtProgram prog = {.abi_version = DLRT_ABI_VERSION,
                      .ntensors = 2,
                      .model = "m",
                      .mem_floats = 16,
                      .max_batch = 4,
                      .tensors = tensors};
  CHECK(dlrt_dataset_check(&prog, &ds, true, &err) == 0);

  DlrtDataset wide = {0};
  const float x3[12] = {0};
  CHECK(dlrt_dataset_add(&wide, "x", x3, 4, 3, &err) == 0);
  CHECK(dlrt_dataset_check(&prog, &wide, false, &err) == -1);
  CHECK_MSG(err, "input 'x' expects 2 values per row, the data has 3");
  dlrt_dataset_free(&wide);

  DlrtDataset inputs_only = {0};
  CHECK(dlrt_dataset_add(&inputs_only, "x", x, 4, 2, &err) == 0);
  CHECK(dlrt_dataset_check(&prog, &inputs_only, false, &err) == 0);
  CHECK(dlrt_dataset_check(&prog, &inputs_only, true, &err) == -1);
  CHECK_MSG(err, "the data has no field for target 'y'");
  dlrt_dataset_free(&inputs_only);

  DlrtDataset many = {0};
  char name[16];
  for (int k = 0; k < DLRT_MAX_FIELDS; k++) {
    snprintf(name, sizeof name, "f%d", k);
    CHECK(dlrt_dataset_add(&many, name, y, 4, 1, &err) == 0);
  }
  CHECK(dlrt_dataset_add(&many, "one_more", y, 4, 1, &err) == -1);
  CHECK_MSG(err, "the data already has 8 fields");
  dlrt_dataset_free(&many);

  char long_name[80];
  memset(long_name, 'a', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  CHECK(dlrt_dataset_add(&ds, long_name, y, 4, 1, &err) == -1);
  CHECK_MSG(err, "is too long (at most 63 bytes)");
  dlrt_dataset_free(&ds);
  dlrt_dataset_free(NULL);
  return check_failures;
}

static void remove_dir(const TempDir *d) {
  const char *names[] = {"data.csv", "labels.csv"};
  char path[4200];
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
    snprintf(path, sizeof path, "%s/%s", d->path, names[k]);
    unlink(path);
  }
  rmdir(d->path);
}

int main(void) {
  TempDir d;
  temp_dir(&d);
  int check_failures = test_parse(&d) + test_errors(&d) + test_dataset();
  remove_dir(&d);
  if (check_failures) {
    fprintf(stderr, "test_runtime_data: %d check(s) failed\n", check_failures);
    return 1;
  }
  printf("test_runtime_data: ok\n");
  return 0;
}
