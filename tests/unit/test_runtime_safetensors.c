/* test_runtime_safetensors.c - checkpoints: round trips, the file layout,
 * atomic writes, and rejection of truncated, garbage and malformed files. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "check.h"
#include "dlrt.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- files ---- */

static void make_temp_dir(char *dir, size_t size) {
  check_temp_dir(dir, size, "dlrt_st");
}

static void remove_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
      remove_tree(path);
    else
      unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

/* Number of entries in dir other than . and ..; the first other name goes to
 * `name`. */
static int count_entries(const char *dir, char *name, size_t size) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int count = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (count++ == 0 && name) snprintf(name, size, "%s", e->d_name);
  }
  closedir(d);
  return count;
}

static unsigned char *read_bytes(const char *path, long *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)*len + 1);
  if (buf && fread(buf, 1, (size_t)*len, f) != (size_t)*len) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

static void write_bytes(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len) {
    perror(path);
    exit(2);
  }
  fclose(f);
}

/* A safetensors file from a header text (written as given, unpadded) and
 * `data_bytes` bytes of data. */
static void write_raw(const char *path, const char *header, size_t data_bytes) {
  size_t hlen = strlen(header);
  unsigned char *buf = calloc(1, 8 + hlen + data_bytes + 1);
  for (int k = 0; k < 8; k++)
    buf[k] = (unsigned char)((uint64_t)hlen >> (8 * k));
  memcpy(buf + 8, header, hlen);
  write_bytes(path, buf, 8 + hlen + data_bytes);
  free(buf);
}

/* ---- tests ---- */

static int test_round_trip(const char *dir) {
  int check_failures = 0;
  char path[4200];
  snprintf(path, sizeof path, "%s/ck.safetensors", dir);
  float w[6] = {1.0f, -2.5f, 3.0e-8f, INFINITY, -0.0f, 123456.789f};
  float b[3] = {0.1f, 0.2f, 0.3f};
  float s[1] = {42.0f};
  DlrtStTensor tensors[4] = {
      {.name = "h1.W", .rank = 2, .dims = {2, 3}, .data = w, .numel = 6},
      {.name = "h1.b", .rank = 1, .dims = {3}, .data = b, .numel = 3},
      {.name = "q\"\\\x01\xc3\xa9", .rank = 0, .data = s, .numel = 1},
      {.name = "empty", .rank = 2, .dims = {0, 4}, .data = NULL, .numel = 0},
  };
  DlrtError err = {{0}};
  CHECK(dlrt_safetensors_write(path, tensors, 4, &err) == 0);
  char only[256] = "";
  CHECK(count_entries(dir, only, sizeof only) == 1); /* no temporary file left */
  CHECK(strcmp(only, "ck.safetensors") == 0);

  DlrtStFile file;
  CHECK(dlrt_safetensors_read(path, &file, &err) == 0);
  CHECK(file.ntensors == 4);
  for (int i = 0; i < 4 && i < file.ntensors; i++) {
    const DlrtStTensor *got = &file.tensors[i], *want = &tensors[i];
    CHECK(strcmp(got->name, want->name) == 0);
    CHECK(got->rank == want->rank);
    CHECK(got->numel == want->numel);
    CHECK(memcmp(got->dims, want->dims, sizeof(int64_t) * (size_t)want->rank) == 0);
    if (want->numel > 0)
      CHECK(memcmp(got->data, want->data, sizeof(float) * (size_t)want->numel) == 0);
  }
  dlrt_safetensors_free(&file);
  CHECK(file.ntensors == 0 && file.tensors == NULL);

  /* The layout: little-endian length, header padded to 8, raw data. */
  long len = 0;
  unsigned char *bytes = read_bytes(path, &len);
  CHECK(bytes != NULL);
  if (bytes) {
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--)
      hlen = hlen << 8 | bytes[k];
    CHECK(hlen % 8 == 0);
    CHECK((long)(8 + hlen + 4 * 10) == len);
    const char *want = "{\"h1.W\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                       "\"h1.b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]},";
    CHECK(memcmp(bytes + 8, want, strlen(want)) == 0);
    bytes[8 + hlen - 1] = '\0';
    CHECK(strstr((char *)bytes + 8, "\"__metadata__\":{\"format\":\"dlcc\"}") != NULL);
    float first;
    memcpy(&first, bytes + 8 + hlen, 4);
    CHECK(first == 1.0f);
    CHECK(bytes[8 + hlen + 4] == 0x00 && bytes[8 + hlen + 7] == 0xc0); /* -2.5f, LE */
    free(bytes);
  }

  /* Overwriting replaces the file and again leaves nothing behind. */
  w[0] = 99.0f;
  CHECK(dlrt_safetensors_write(path, tensors, 1, &err) == 0);
  CHECK(count_entries(dir, NULL, 0) == 1);
  CHECK(dlrt_safetensors_read(path, &file, &err) == 0);
  CHECK(file.ntensors == 1 && file.tensors[0].data[0] == 99.0f);
  dlrt_safetensors_free(&file);

  /* An empty checkpoint is valid. */
  CHECK(dlrt_safetensors_write(path, NULL, 0, &err) == 0);
  CHECK(dlrt_safetensors_read(path, &file, &err) == 0);
  CHECK(file.ntensors == 0);
  dlrt_safetensors_free(&file);
  return check_failures;
}

static int test_write_errors(const char *dir) {
  int check_failures = 0;
  char path[4200];
  float w[2] = {1, 2};
  DlrtError err = {{0}};
  DlrtStTensor t = {.name = "W", .rank = 1, .dims = {2}, .data = w, .numel = 2};

  snprintf(path, sizeof path, "%s/no/such/dir/ck.safetensors", dir);
  CHECK(dlrt_safetensors_write(path, &t, 1, &err) == -1);
  CHECK_MSG(err, "cannot create temporary file");
  CHECK_MSG(err, "No such file or directory");

  /* The rename check_failures (the target is a non-empty directory): the temporary
   * file must not be left behind. */
  char sub[4200], inner[4300];
  snprintf(sub, sizeof sub, "%s/sub", dir);
  mkdir(sub, 0755);
  snprintf(inner, sizeof inner, "%s/keep", sub);
  write_bytes(inner, "x", 1);
  CHECK(dlrt_safetensors_write(sub, &t, 1, &err) == -1);
  CHECK_MSG(err, "cannot rename");
  CHECK(count_entries(dir, NULL, 0) == 1);
  remove_tree(sub);

  snprintf(path, sizeof path, "%s/bad.safetensors", dir);
  DlrtStTensor twice[2] = {t, t};
  CHECK(dlrt_safetensors_write(path, twice, 2, &err) == -1);
  CHECK_MSG(err, "tensor 'W' is given twice");
  DlrtStTensor wrong = t;
  wrong.numel = 3;
  CHECK(dlrt_safetensors_write(path, &wrong, 1, &err) == -1);
  CHECK_MSG(err, "tensor 'W' has 3 elements but shape [2]");
  wrong = t;
  wrong.name = "__metadata__";
  CHECK(dlrt_safetensors_write(path, &wrong, 1, &err) == -1);
  CHECK_MSG(err, "reserved");
  wrong = t;
  wrong.name = "bad\xff";
  CHECK(dlrt_safetensors_write(path, &wrong, 1, &err) == -1);
  CHECK_MSG(err, "not valid utf-8");
  CHECK(count_entries(dir, NULL, 0) == 0);
  return check_failures;
}

/* Every proper prefix of a valid file is rejected, and any single corrupted
 * byte is either rejected or read without harm (the sanitizers watch). */
static int test_truncation_and_corruption(const char *dir) {
  int check_failures = 0;
  char path[4200], cut[4200];
  snprintf(path, sizeof path, "%s/good.safetensors", dir);
  snprintf(cut, sizeof cut, "%s/cut.safetensors", dir);
  float w[6] = {1, 2, 3, 4, 5, 6}, b[2] = {7, 8};
  DlrtStTensor tensors[2] = {
      {.name = "h1.W", .rank = 2, .dims = {2, 3}, .data = w, .numel = 6},
      {.name = "h1.b", .rank = 1, .dims = {2}, .data = b, .numel = 2},
  };
  DlrtError err = {{0}};
  CHECK(dlrt_safetensors_write(path, tensors, 2, &err) == 0);
  long len = 0;
  unsigned char *bytes = read_bytes(path, &len);
  CHECK(bytes != NULL);
  if (!bytes) return check_failures;
  int accepted_prefixes = 0, messages_without_path = 0;
  for (long n = 0; n < len; n++) {
    write_bytes(cut, bytes, (size_t)n);
    DlrtStFile file;
    err.msg[0] = '\0';
    if (dlrt_safetensors_read(cut, &file, &err) == 0) {
      accepted_prefixes++;
      dlrt_safetensors_free(&file);
    } else if (!strstr(err.msg, cut)) {
      messages_without_path++;
    }
  }
  CHECK(accepted_prefixes == 0);
  CHECK(messages_without_path == 0);
  write_bytes(cut, bytes, 5);
  DlrtStFile file;
  CHECK(dlrt_safetensors_read(cut, &file, &err) == -1);
  CHECK_MSG(err, "file is too short to be safetensors (5 bytes)");
  write_bytes(cut, bytes, (size_t)len - 1);
  CHECK(dlrt_safetensors_read(cut, &file, &err) == -1);
  CHECK_MSG(err, "the file is truncated");

  int accepted = 0;
  const unsigned char values[] = {0x00, 0xff, '"', '{', '}', ',', ':', '0', '9', ' ', '\\', 0x80};
  for (long pos = 0; pos < len; pos++) {
    for (size_t v = 0; v < sizeof values; v++) {
      unsigned char saved = bytes[pos];
      bytes[pos] = values[v];
      write_bytes(cut, bytes, (size_t)len);
      bytes[pos] = saved;
      if (dlrt_safetensors_read(cut, &file, &err) == 0) {
        accepted++;
        dlrt_safetensors_free(&file);
      }
    }
  }
  CHECK(accepted > 0); /* changes to tensor data are legitimately accepted */

  /* Garbage of every small size and some larger. */
  unsigned char garbage[4096];
  uint64_t state = 1;
  for (size_t k = 0; k < sizeof garbage; k++) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    garbage[k] = (unsigned char)(state >> 56);
  }
  int garbage_accepted = 0;
  for (size_t n = 0; n < sizeof garbage; n += n < 64 ? 1 : 97) {
    write_bytes(cut, garbage, n);
    if (dlrt_safetensors_read(cut, &file, &err) == 0) {
      garbage_accepted++;
      dlrt_safetensors_free(&file);
    }
  }
  CHECK(garbage_accepted == 0);
  free(bytes);
  unlink(path);
  unlink(cut);
  return check_failures;
}

typedef struct BadHeader {
  const char *header;
  size_t data_bytes;
  const char *message;
} BadHeader;

static int test_malformed_headers(const char *dir) {
  int check_failures = 0;
  char path[4200];
  snprintf(path, sizeof path, "%s/h.safetensors", dir);
  const BadHeader cases[] = {
      {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
       "tensor 'a' has dtype F16; only F32 is supported"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
       "tensor 'a' of shape [3] needs 12 bytes, its data_offsets span 8"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
       "tensor 'a' data ends at byte 8 of a 4-byte data section: the file is truncated"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
       "end before they begin"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
       12, "tensor 'b' data starts at byte 8, expected 4"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
       4, "expected 4"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
       "4 bytes of data follow the last tensor"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
       8, "tensor 'a' appears twice"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"foo\":1}}", 4,
       "unexpected key 'foo' in tensor 'a'"},
      {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
       "key 'dtype' appears twice"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a' has no 'data_offsets'"},
      {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a' has no 'dtype'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
       "data_offsets needs exactly 2 numbers"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
       "data_offsets needs exactly 2 numbers"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
       "expected a non-negative integer"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
       "expected a non-negative integer"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, "leading zero"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4,
       "integer too large"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
       "more dimensions than the runtime supports"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", 4,
       "too large to address"},
      {"{\"a", 0, "unterminated string"},
      {"{\"a\\x\":1}", 0, "bad escape in string"},
      {"{\"\\ud800\":1}", 0, "unpaired surrogate"},
      {"{\"\\u0000\":1}", 0, "\\u0000 in a string"},
      {"{\"a\tb\":1}", 0, "control character in string"},
      {"{\"\xff\":1}", 0, "not valid utf-8"},
      {"{\"__metadata__\":{\"format\":1}}", 0, "expected '\"'"},
      {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice"},
      {"{\"a\":[]}", 0, "expected '{'"},
      {"{\"a\" {}}", 0, "expected ':'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", 4, "expected '\"'"},
      {"{} x", 0, "unexpected characters after the header object"},
      {"{", 0, "expected '\"', found the end"},
      {"hello world", 0, "not a safetensors file"},
      {"", 0, "not a safetensors file"},
  };
  DlrtError err = {{0}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    write_raw(path, cases[c].header, cases[c].data_bytes);
    DlrtStFile file;
    err.msg[0] = '\0';
    if (dlrt_safetensors_read(path, &file, &err) == 0) {
      fprintf(stderr, "case %zu accepted: %s\n", c, cases[c].header);
      check_failures++;
      dlrt_safetensors_free(&file);
    } else if (!strstr(err.msg, cases[c].message) || !strstr(err.msg, path)) {
      fprintf(stderr, "case %zu: message '%s' does not contain '%s' and the path\n", c, err.msg,
              cases[c].message);
      check_failures++;
    }
  }

  /* Header length beyond the file. */
  unsigned char huge[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'};
  write_bytes(path, huge, sizeof huge);
  DlrtStFile file;
  CHECK(dlrt_safetensors_read(path, &file, &err) == -1);
  CHECK_MSG(err, "header length 4294967295 does not fit in the file (16 bytes)");

  /* Escapes decode to UTF-8; other tools' metadata and spacing are fine. */
  write_raw(path,
            " { \"__metadata__\" : {\"k\":\"v\", \"x\":\"\\\"\"} , \"A\\u00e9\\ud83d\\ude00\\/\" : "
            "{ \"shape\" : [ ] , \"data_offsets\" : [ 0 , 4 ] , \"dtype\" : \"F32\" } }  ",
            4);
  CHECK(dlrt_safetensors_read(path, &file, &err) == 0);
  CHECK(file.ntensors == 1);
  if (file.ntensors == 1) {
    CHECK(strcmp(file.tensors[0].name, "A\xc3\xa9\xf0\x9f\x98\x80/") == 0);
    CHECK(file.tensors[0].rank == 0 && file.tensors[0].numel == 1);
  }
  dlrt_safetensors_free(&file);

  char missing[4200];
  snprintf(missing, sizeof missing, "%s/missing.safetensors", dir);
  CHECK(dlrt_safetensors_read(missing, &file, &err) == -1);
  CHECK_MSG(err, "cannot open safetensors file");
  CHECK_MSG(err, "No such file or directory");
  CHECK(dlrt_safetensors_read(dir, &file, &err) == -1);
  unlink(path);
  return check_failures;
}

/* ---- a context's checkpoints ---- */

#define N DLRT_DIM_BATCH

static void do_nothing(float *mem, int64_t n, DlrtPool *pool) {
  (void)pool;
  (void)mem;
  (void)n;
}

static DlrtProgram make_program(DlrtTensor *t, int count) {
  return (DlrtProgram){.abi_version = DLRT_ABI_VERSION,
                       .ntensors = count,
                       .model = "mlp",
                       .mem_floats = 64,
                       .max_batch = 4,
                       .tensors = t,
                       .forward = do_nothing};
}

static int test_save_load(const char *dir) {
  int check_failures = 0;
  char path[4200];
  snprintf(path, sizeof path, "%s/mlp.safetensors", dir);
  DlrtTensor tensors[5] = {
      {.name = "x", .role = DLRT_ROLE_INPUT, .rank = 2, .dims = {N, 2}, .offset = 0},
      {.name = "h1.W",
       .role = DLRT_ROLE_PARAM,
       .rank = 2,
       .dims = {2, 3},
       .offset = 8,
       .init = DLRT_INIT_UNIFORM,
       .a = -1,
       .b = 1},
      {.name = "h1.b",
       .role = DLRT_ROLE_PARAM,
       .rank = 1,
       .dims = {3},
       .offset = 14,
       .init = DLRT_INIT_NORMAL,
       .a = 0,
       .b = 1},
      {.name = "lr", .role = DLRT_ROLE_HYPER, .rank = 0, .offset = 17, .a = 0.1},
      {.name = "out.W",
       .role = DLRT_ROLE_PARAM,
       .rank = 2,
       .dims = {3, 1},
       .offset = 18,
       .init = DLRT_INIT_UNIFORM,
       .a = -1,
       .b = 1},
  };
  DlrtProgram prog = make_program(tensors, 5);
  DlrtError err = {{0}};
  DlrtContext *saved = dlrt_context_new(&prog, 1, &err);
  DlrtContext *loaded = dlrt_context_new(&prog, 2, &err);
  CHECK(saved && loaded);
  if (!saved || !loaded) return check_failures;
  CHECK(memcmp(saved->mem + 8, loaded->mem + 8, sizeof(float) * 13) != 0);
  CHECK(dlrt_save(saved, path, &err) == 0);
  CHECK(count_entries(dir, NULL, 0) == 1);

  DlrtStFile file;
  CHECK(dlrt_safetensors_read(path, &file, &err) == 0);
  CHECK(file.ntensors == 3); /* parameters only */
  if (file.ntensors == 3) {
    CHECK(strcmp(file.tensors[0].name, "h1.W") == 0 && file.tensors[0].rank == 2 &&
          file.tensors[0].dims[0] == 2 && file.tensors[0].dims[1] == 3);
    CHECK(strcmp(file.tensors[2].name, "out.W") == 0);
  }
  dlrt_safetensors_free(&file);

  CHECK(dlrt_load(loaded, path, &err) == 0);
  CHECK(memcmp(saved->mem + 8, loaded->mem + 8, sizeof(float) * 13) == 0);

  /* Another shape for h1.W: named with both shapes, nothing is loaded. */
  DlrtTensor other[5];
  memcpy(other, tensors, sizeof other);
  other[1].dims[0] = 3;
  other[1].dims[1] = 2;
  DlrtProgram other_prog = make_program(other, 5);
  DlrtContext *mismatch = dlrt_context_new(&other_prog, 3, &err);
  CHECK(mismatch != NULL);
  if (mismatch) {
    float before[13];
    memcpy(before, mismatch->mem + 8, sizeof before);
    CHECK(dlrt_load(mismatch, path, &err) == -1);
    CHECK_MSG(err, "tensor 'h1.W' has shape [2, 3] in the checkpoint, the model expects [3, 2]");
    CHECK_MSG(err, path);
    CHECK(memcmp(before, mismatch->mem + 8, sizeof before) == 0);
    dlrt_context_free(mismatch);
  }

  /* A model with a parameter the checkpoint lacks. */
  memcpy(other, tensors, sizeof other);
  other[3] =
      (DlrtTensor){.name = "extra", .role = DLRT_ROLE_PARAM, .rank = 1, .dims = {2}, .offset = 30};
  other_prog = make_program(other, 5);
  DlrtContext *more = dlrt_context_new(&other_prog, 3, &err);
  CHECK(more != NULL);
  if (more) {
    CHECK(dlrt_load(more, path, &err) == -1);
    CHECK_MSG(err, "checkpoint has no tensor 'extra'");
    dlrt_context_free(more);
  }

  /* A model with fewer parameters than the checkpoint. */
  other_prog = make_program(tensors, 4);
  DlrtContext *fewer = dlrt_context_new(&other_prog, 3, &err);
  CHECK(fewer != NULL);
  if (fewer) {
    CHECK(dlrt_load(fewer, path, &err) == -1);
    CHECK_MSG(err, "tensor 'out.W' in the checkpoint is not a parameter of model 'mlp'");
    dlrt_context_free(fewer);
  }

  /* A half-precision checkpoint names the dtype found. */
  write_raw(path, "{\"h1.W\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12);
  CHECK(dlrt_load(loaded, path, &err) == -1);
  CHECK_MSG(err, "tensor 'h1.W' has dtype F16");

  CHECK(dlrt_save(saved, "/nonexistent-dir-dlrt/x.safetensors", &err) == -1);
  CHECK_MSG(err, "cannot create temporary file '/nonexistent-dir-dlrt/x.safetensors.tmp.");
  dlrt_context_free(saved);
  dlrt_context_free(loaded);
  unlink(path);
  return check_failures;
}

int main(void) {
  char dir[4096];
  make_temp_dir(dir, sizeof dir);
  int check_failures = 0;
  check_failures += test_round_trip(dir);
  remove_tree(dir);
  make_temp_dir(dir, sizeof dir);
  check_failures += test_write_errors(dir);
  check_failures += test_truncation_and_corruption(dir);
  check_failures += test_malformed_headers(dir);
  check_failures += test_save_load(dir);
  remove_tree(dir);
  if (check_failures) {
    fprintf(stderr, "test_runtime_safetensors: %d check(s) failed\n", check_failures);
    return 1;
  }
  printf("test_runtime_safetensors: ok\n");
  return 0;
}
