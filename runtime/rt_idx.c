/* rt_idx.c - IDX files, the format of MNIST and Fashion-MNIST, plain or
 * gzip-compressed (zlib reads both).  Kept in its own file so that programs
 * that link libdlrt.a without loading IDX data do not need zlib. */
#include "rt_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct IdxFile {
  int rank;
  int64_t dims[DLRT_MAX_RANK];
  unsigned char *bytes; /* prod(dims) */
  int64_t count;        /* items read (dims[0], or fewer with a limit) */
} IdxFile;

static int read_bytes(gzFile f, const char *path, void *dst, size_t n, const char *what,
                      DlrtError *err) {
  size_t got = 0;
  while (got < n) {
    unsigned chunk = n - got > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
    int r = gzread(f, (char *)dst + got, chunk);
    if (r < 0) {
      int code;
      const char *msg = gzerror(f, &code);
      return dlrt_fail(err, "cannot read IDX file '%s': %s", path,
                       code == Z_ERRNO ? strerror(errno) : msg);
    }
    if (r == 0)
      return dlrt_fail(err, "IDX file '%s' is truncated: it ends in the %s (%zu of %zu bytes)",
                       path, what, got, n);
    got += (size_t)r;
  }
  return 0;
}

/* Read an unsigned-byte IDX file of `want_rank` dimensions (its first
 * `limit` items when limit > 0). */
static int idx_read(const char *path, int want_rank, int64_t limit, IdxFile *out, DlrtError *err) {
  memset(out, 0, sizeof *out);
  gzFile f = gzopen(path, "rb");
  if (!f)
    return dlrt_fail(err, "cannot open IDX file '%s': %s", path,
                     errno ? strerror(errno) : "out of memory");
  unsigned char magic[4];
  int rc = read_bytes(f, path, magic, 4, "magic number", err);
  if (rc == 0 && (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08))
    rc = dlrt_fail(err,
                   "'%s' is not an unsigned-byte IDX file: its magic number is 0x%02x%02x%02x%02x, "
                   "expected 0x000008%02x",
                   path, magic[0], magic[1], magic[2], magic[3], (unsigned)want_rank);
  if (rc == 0 && magic[3] != want_rank)
    rc = dlrt_fail(err,
                   "IDX file '%s' has %d dimension%s (magic number 0x%08x), expected %d "
                   "(0x%08x): is it the %s file?",
                   path, magic[3], magic[3] == 1 ? "" : "s", 0x800u + magic[3], want_rank,
                   0x800u + (unsigned)want_rank, want_rank == 1 ? "labels" : "images");
  int64_t total = 1;
  for (int d = 0; rc == 0 && d < want_rank; d++) {
    unsigned char b[4];
    rc = read_bytes(f, path, b, 4, "header", err);
    if (rc != 0) break;
    out->dims[d] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
    if (out->dims[d] < 1 && !(d == 0 && out->dims[d] == 0))
      rc = dlrt_fail(err, "IDX file '%s' has an empty dimension %d", path, d);
    else if (d > 0 && total > (INT64_C(1) << 40) / out->dims[d])
      rc = dlrt_fail(err, "IDX file '%s' is too large", path);
    else if (d > 0)
      total *= out->dims[d];
  }
  if (rc == 0) {
    out->rank = want_rank;
    out->count = limit > 0 && limit < out->dims[0] ? limit : out->dims[0];
    if (out->count < 1) rc = dlrt_fail(err, "IDX file '%s' has no items", path);
  }
  if (rc == 0) {
    size_t n = (size_t)(out->count * total);
    out->bytes = malloc(n ? n : 1);
    if (!out->bytes)
      rc = dlrt_fail(err, "out of memory reading IDX file '%s'", path);
    else
      rc = read_bytes(f, path, out->bytes, n, "data", err);
  }
  gzclose(f);
  if (rc != 0) {
    free(out->bytes);
    out->bytes = NULL;
  }
  return rc;
}

int dlrt_idx_load(const DlrtIdxSpec *spec, DlrtDataset *out, DlrtError *err) {
  if (!out) return dlrt_fail(err, "no dataset given");
  memset(out, 0, sizeof *out);
  if (!spec || !spec->images || !spec->labels || !spec->input || !spec->target)
    return dlrt_fail(err, "incomplete IDX data specification");
  if (strlen(spec->input) >= sizeof out->fields[0].name ||
      strlen(spec->target) >= sizeof out->fields[0].name)
    return dlrt_fail(err, "field name is too long");
  /* Images of any rank >= 2: try 3 dimensions (MNIST) first. */
  IdxFile images, labels;
  if (idx_read(spec->images, 3, spec->limit, &images, err) != 0) return -1;
  int64_t width = images.dims[1] * images.dims[2];
  if (spec->input_width != width) {
    free(images.bytes);
    return dlrt_fail(err,
                     "the images in '%s' are %lldx%lld (%lld values), but input '%s' takes %lld "
                     "values per row",
                     spec->images, (long long)images.dims[1], (long long)images.dims[2],
                     (long long)width, spec->input, (long long)spec->input_width);
  }
  if (idx_read(spec->labels, 1, spec->limit, &labels, err) != 0) {
    free(images.bytes);
    return -1;
  }
  int rc = 0;
  if (labels.dims[0] != images.dims[0])
    rc = dlrt_fail(err, "'%s' has %lld labels but '%s' has %lld images", spec->labels,
                   (long long)labels.dims[0], spec->images, (long long)images.dims[0]);
  int64_t n = images.count;
  float *pixels = rc == 0 ? malloc(sizeof(float) * (size_t)(n * width)) : NULL;
  float *label_values = rc == 0 ? malloc(sizeof(float) * (size_t)n) : NULL;
  if (rc == 0 && (!pixels || !label_values))
    rc = dlrt_fail(err, "out of memory for %lld images", (long long)n);
  if (rc == 0) {
    for (int64_t k = 0; k < n * width; k++)
      pixels[k] = (float)images.bytes[k] / 255.0f;
    for (int64_t k = 0; k < n; k++)
      label_values[k] = (float)labels.bytes[k];
    DlrtField *x = &out->fields[0], *y = &out->fields[1];
    snprintf(x->name, sizeof x->name, "%s", spec->input);
    snprintf(y->name, sizeof y->name, "%s", spec->target);
    x->width = width;
    x->data = pixels;
    x->image_height = images.dims[1];
    x->image_width = images.dims[2];
    pixels = NULL;
    out->nfields = 2;
    out->nrows = n;
    rc = dlrt_labels_to_field(label_values, n, spec->classes, spec->labels, y, err);
    if (rc != 0) dlrt_dataset_free(out);
  }
  free(pixels);
  free(label_values);
  free(images.bytes);
  free(labels.bytes);
  return rc;
}
