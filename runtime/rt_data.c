/* rt_data.c - datasets: tables of rows with one field per model input or
 * target, loaded from CSV files of numbers or added from memory. */
#include "rt_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- datasets --------------------------------------------------------------- */

const DlrtField *dlrt_dataset_field(const DlrtDataset *ds, const char *name) {
  if (!ds || !name) return NULL;
  for (int f = 0; f < ds->nfields; f++)
    if (strcmp(ds->fields[f].name, name) == 0) return &ds->fields[f];
  return NULL;
}

void dlrt_dataset_free(DlrtDataset *ds) {
  if (!ds) return;
  for (int f = 0; f < ds->nfields; f++)
    free(ds->fields[f].data);
  memset(ds, 0, sizeof *ds);
}

/* Check that a new field called `name` may be added. */
static int check_new_field(const DlrtDataset *ds, const char *name, DlrtError *err) {
  if (!name || !name[0]) return dlrt_fail(err, "a data field needs a name");
  if (strlen(name) >= sizeof ds->fields[0].name)
    return dlrt_fail(err, "field name '%s' is too long (at most %zu bytes)", name,
                     sizeof ds->fields[0].name - 1);
  if (dlrt_dataset_field(ds, name))
    return dlrt_fail(err, "the data already has a field named '%s'", name);
  if (ds->nfields >= DLRT_MAX_FIELDS)
    return dlrt_fail(err,
                     "cannot add field '%s': the data already has %d fields, the most "
                     "allowed",
                     name, DLRT_MAX_FIELDS);
  return 0;
}

int dlrt_dataset_add(DlrtDataset *ds, const char *name, const float *data, int64_t nrows,
                     int64_t width, DlrtError *err) {
  if (!ds) return dlrt_fail(err, "no dataset given");
  if (check_new_field(ds, name, err) != 0) return -1;
  if (width < 1)
    return dlrt_fail(err, "field '%s' needs at least one value per row, got %lld", name,
                     (long long)width);
  if (nrows < 1) return dlrt_fail(err, "field '%s' has no rows", name);
  if (ds->nfields > 0 && nrows != ds->nrows)
    return dlrt_fail(err, "field '%s' has %lld rows, the data has %lld", name, (long long)nrows,
                     (long long)ds->nrows);
  if (nrows > INT64_MAX / width || (uint64_t)(nrows * width) > SIZE_MAX / sizeof(float))
    return dlrt_fail(err, "field '%s' is too large (%lld rows of %lld values)", name,
                     (long long)nrows, (long long)width);
  if (!data) return dlrt_fail(err, "field '%s' has no data", name);
  size_t bytes = (size_t)(nrows * width) * sizeof(float);
  float *copy = malloc(bytes);
  if (!copy) return dlrt_fail(err, "out of memory copying field '%s'", name);
  memcpy(copy, data, bytes);
  DlrtField *f = &ds->fields[ds->nfields++];
  memset(f, 0, sizeof *f);
  snprintf(f->name, sizeof f->name, "%s", name);
  f->width = width;
  f->data = copy;
  ds->nrows = nrows;
  return 0;
}

int dlrt_dataset_check(const DlrtProgram *prog, const DlrtDataset *ds, bool with_targets,
                       DlrtError *err) {
  if (!prog) return dlrt_fail(err, "no program given");
  if (!ds) return dlrt_fail(err, "no dataset given");
  for (int i = 0; i < prog->ntensors; i++) {
    const DlrtTensor *t = &prog->tensors[i];
    const char *role;
    if (t->role == DLRT_ROLE_INPUT)
      role = "input";
    else if (t->role == DLRT_ROLE_TARGET && with_targets)
      role = "target";
    else
      continue;
    const DlrtField *f = dlrt_dataset_field(ds, t->name);
    if (!f) return dlrt_fail(err, "the data has no field for %s '%s'", role, t->name);
    int64_t width = dlrt_numel(t, 1);
    if (f->width != width)
      return dlrt_fail(err, "%s '%s' expects %lld values per row, the data has %lld", role, t->name,
                       (long long)width, (long long)f->width);
  }
  if (ds->nrows < 1) return dlrt_fail(err, "the data has no rows");
  return 0;
}

/* ---- subsets, splits, normalisation, labels --------------------------------- */

int dlrt_dataset_rows(const DlrtDataset *ds, const int64_t *order, int64_t first, int64_t count,
                      DlrtDataset *out, DlrtError *err) {
  if (!out) return dlrt_fail(err, "no dataset given");
  memset(out, 0, sizeof *out);
  if (!ds || first < 0 || count < 1 || first > ds->nrows - count)
    return dlrt_fail(err, "rows %lld..%lld are not in the data", (long long)first,
                     (long long)(first + count));
  out->nrows = count;
  out->nfields = ds->nfields;
  for (int f = 0; f < ds->nfields; f++) {
    const DlrtField *src = &ds->fields[f];
    DlrtField *dst = &out->fields[f];
    *dst = *src;
    dst->data = malloc(sizeof(float) * (size_t)(count * src->width));
    if (!dst->data) {
      out->nfields = f;
      dlrt_dataset_free(out);
      return dlrt_fail(err, "out of memory copying %lld rows", (long long)count);
    }
    for (int64_t r = 0; r < count; r++) {
      int64_t from = order ? order[first + r] : first + r;
      memcpy(dst->data + r * src->width, src->data + from * src->width,
             sizeof(float) * (size_t)src->width);
    }
  }
  return 0;
}

int dlrt_dataset_split(const DlrtDataset *ds, double fraction, uint64_t seed, DlrtDataset *kept,
                       DlrtDataset *held, DlrtError *err) {
  if (kept) memset(kept, 0, sizeof *kept);
  if (held) memset(held, 0, sizeof *held);
  if (!ds || !kept || !held) return dlrt_fail(err, "no dataset given");
  if (!(fraction > 0 && fraction < 1))
    return dlrt_fail(err, "a held-out fraction must be between 0 and 1, got %g", fraction);
  int64_t nheld = (int64_t)llround(fraction * (double)ds->nrows);
  if (nheld < 1) nheld = 1;
  if (nheld >= ds->nrows)
    return dlrt_fail(err, "cannot hold out %g of %lld rows and keep some to train on", fraction,
                     (long long)ds->nrows);
  int64_t *perm = malloc(sizeof *perm * (size_t)ds->nrows);
  if (!perm) return dlrt_fail(err, "out of memory");
  for (int64_t r = 0; r < ds->nrows; r++)
    perm[r] = r;
  /* A Fisher-Yates shuffle on a stream of its own (epochs use 1, 2, ...). */
  const uint64_t split_stream = UINT64_C(0x73706c6974);
  for (int64_t i = ds->nrows - 1; i > 0; i--) {
    int64_t j = (int64_t)(dlrt_uniform01(seed, split_stream, (uint64_t)i) * (double)(i + 1));
    if (j > i) j = i;
    int64_t tmp = perm[i];
    perm[i] = perm[j];
    perm[j] = tmp;
  }
  int64_t nkept = ds->nrows - nheld;
  int rc = dlrt_dataset_rows(ds, perm, 0, nkept, kept, err);
  if (rc == 0) rc = dlrt_dataset_rows(ds, perm, nkept, nheld, held, err);
  if (rc != 0) {
    dlrt_dataset_free(kept);
    dlrt_dataset_free(held);
  }
  free(perm);
  return rc;
}

void dlrt_field_stats(const DlrtField *f, int64_t nrows, float *mean, float *std) {
  for (int64_t c = 0; c < f->width; c++) {
    double sum = 0, sq = 0;
    for (int64_t r = 0; r < nrows; r++)
      sum += f->data[r * f->width + c];
    double m = nrows > 0 ? sum / (double)nrows : 0;
    for (int64_t r = 0; r < nrows; r++) {
      double d = f->data[r * f->width + c] - m;
      sq += d * d;
    }
    double sd = nrows > 0 ? sqrt(sq / (double)nrows) : 1;
    mean[c] = (float)m;
    std[c] = sd < 1e-6 ? 1.0f : (float)sd;
  }
}

void dlrt_field_normalize(DlrtField *f, int64_t nrows, const float *mean, const float *std) {
  for (int64_t r = 0; r < nrows; r++)
    for (int64_t c = 0; c < f->width; c++)
      f->data[r * f->width + c] = (f->data[r * f->width + c] - mean[c]) / std[c];
}

int dlrt_labels_to_field(const float *labels, int64_t nrows, int64_t classes, const char *what,
                         DlrtField *out, DlrtError *err) {
  if (classes < 1) return dlrt_fail(err, "%s: need at least one class", what);
  for (int64_t r = 0; r < nrows; r++) {
    float v = labels[r];
    if (!(v >= 0) || v != floorf(v))
      return dlrt_fail(err, "%s: label %g of row %lld is not a class index (a whole number >= 0)",
                       what, (double)v, (long long)r + 1);
    if (classes > 1 && v >= (float)classes)
      return dlrt_fail(err,
                       "%s: label %g of row %lld is out of range: the target has %lld classes "
                       "(0 to %lld)",
                       what, (double)v, (long long)r + 1, (long long)classes,
                       (long long)classes - 1);
  }
  if (nrows > INT64_MAX / classes || (uint64_t)(nrows * classes) > SIZE_MAX / sizeof(float))
    return dlrt_fail(err, "%s: too many labels", what);
  float *data = calloc((size_t)(nrows * classes), sizeof(float));
  if (!data) return dlrt_fail(err, "%s: out of memory for %lld labels", what, (long long)nrows);
  for (int64_t r = 0; r < nrows; r++) {
    if (classes == 1)
      data[r] = labels[r];
    else
      data[r * classes + (int64_t)labels[r]] = 1.0f;
  }
  free(out->data);
  out->data = data;
  out->width = classes;
  return 0;
}

/* ---- csv -------------------------------------------------------------------- */

/* The whole file as a NUL-terminated string. */
static int read_whole_file(const char *path, char **text, size_t *len, DlrtError *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return dlrt_fail(err, "cannot open data file '%s': %s", path, strerror(errno));
  size_t cap = 1 << 16, used = 0;
  char *buf = malloc(cap);
  int rc = buf ? 0 : dlrt_fail(err, "out of memory reading data file '%s'", path);
  while (rc == 0) {
    if (used + 1 >= cap) {
      char *grown = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
      if (!grown) {
        rc = dlrt_fail(err, "out of memory reading data file '%s'", path);
        break;
      }
      buf = grown;
      cap *= 2;
    }
    size_t n = fread(buf + used, 1, cap - used - 1, f);
    used += n;
    if (n == 0) {
      if (ferror(f)) rc = dlrt_fail(err, "cannot read data file '%s': %s", path, strerror(errno));
      break;
    }
  }
  fclose(f);
  if (rc != 0) {
    free(buf);
    return -1;
  }
  buf[used] = '\0';
  *text = buf;
  *len = used;
  return 0;
}

static bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

typedef struct CsvSpan {
  size_t begin, end; /* byte offsets of a cell in the line, spaces trimmed */
} CsvSpan;

/* Parse one trimmed cell as a finite float. */
static int parse_cell(const char *path, int64_t line_no, const char *line, CsvSpan cell, float *out,
                      DlrtError *err) {
  long long col = (long long)cell.begin + 1;
  size_t len = cell.end - cell.begin;
  const char *text = line + cell.begin;
  if (len == 0) return dlrt_fail(err, "%s:%lld:%lld: missing value", path, (long long)line_no, col);
  char tmp[128];
  if (len >= sizeof tmp)
    return dlrt_fail(err, "%s:%lld:%lld: not a number: '%.40s...'", path, (long long)line_no, col,
                     text);
  memcpy(tmp, text, len);
  tmp[len] = '\0';
  char *end;
  errno = 0;
  float value = strtof(tmp, &end);
  if (end != tmp + len || strlen(tmp) != len)
    return dlrt_fail(err, "%s:%lld:%lld: not a number: '%s'", path, (long long)line_no, col, tmp);
  if (errno == ERANGE && isinf(value))
    return dlrt_fail(err, "%s:%lld:%lld: number out of range: '%s'", path, (long long)line_no, col,
                     tmp);
  if (!isfinite(value))
    return dlrt_fail(err, "%s:%lld:%lld: not a finite number: '%s'", path, (long long)line_no, col,
                     tmp);
  *out = value;
  return 0;
}

static int check_selection(const DlrtCsvColumns *cols, int ncols, DlrtError *err) {
  if (!cols || ncols < 1 || ncols > DLRT_MAX_FIELDS)
    return dlrt_fail(err, "a csv selection needs 1 to %d fields, got %d", DLRT_MAX_FIELDS,
                     cols ? ncols : 0);
  DlrtDataset names = {0}; /* only to reuse the name checks */
  for (int c = 0; c < ncols; c++) {
    if (check_new_field(&names, cols[c].name, err) != 0) return -1;
    if (cols[c].first < 0 || cols[c].count < 1 || cols[c].first > INT32_MAX - cols[c].count)
      return dlrt_fail(err, "field '%s' has an invalid column range (first %d, count %d)",
                       cols[c].name, cols[c].first, cols[c].count);
    snprintf(names.fields[names.nfields++].name, sizeof names.fields[0].name, "%s", cols[c].name);
  }
  return 0;
}

/* Split a line at commas into spans (trimmed); returns the number of cells
 * or -1 when out of memory. */
static int64_t split_line(const char *line, size_t len, CsvSpan **spans, int64_t *cap) {
  int64_t count = 0;
  size_t begin = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && line[i] != ',') continue;
    if (count == *cap) {
      int64_t grown_cap = *cap ? *cap * 2 : 16;
      CsvSpan *grown = realloc(*spans, sizeof *grown * (size_t)grown_cap);
      if (!grown) return -1;
      *spans = grown;
      *cap = grown_cap;
    }
    size_t b = begin, e = i;
    while (b < e && is_blank(line[b]))
      b++;
    while (e > b && is_blank(line[e - 1]))
      e--;
    (*spans)[count++] = (CsvSpan){b, e};
    begin = i + 1;
  }
  return count;
}

static int parse_csv_text(const char *path, char *text, size_t len, bool header,
                          const DlrtCsvColumns *cols, int ncols, DlrtDataset *out, DlrtError *err) {
  int64_t row_cap = 0, nrows = 0, expected_cells = -1, span_cap = 0;
  CsvSpan *spans = NULL;
  bool header_pending = header;
  size_t pos = 0;
  /* A UTF-8 byte order mark is not part of the first cell. */
  if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) pos = 3;
  int rc = 0;
  for (int64_t line_no = 1; rc == 0 && pos < len; line_no++) {
    char *line = text + pos;
    char *newline = memchr(line, '\n', len - pos);
    size_t line_len = newline ? (size_t)(newline - line) : len - pos;
    pos += line_len + (newline ? 1 : 0);
    if (line_len > 0 && line[line_len - 1] == '\r') line_len--;
    size_t k = 0;
    while (k < line_len && is_blank(line[k]))
      k++;
    if (k == line_len) continue;
    if (header_pending) {
      header_pending = false;
      continue;
    }
    int64_t ncells = split_line(line, line_len, &spans, &span_cap);
    if (ncells < 0) {
      rc = dlrt_fail(err, "out of memory reading data file '%s'", path);
      break;
    }
    if (expected_cells < 0) {
      expected_cells = ncells;
      for (int c = 0; c < ncols; c++) {
        if (cols[c].first + cols[c].count <= ncells) continue;
        int last = cols[c].first + cols[c].count - 1;
        if (cols[c].count == 1)
          rc = dlrt_fail(err,
                         "%s:%lld: field '%s' takes column %d (counting from 0), but the "
                         "rows have %lld columns",
                         path, (long long)line_no, cols[c].name, last, (long long)ncells);
        else
          rc = dlrt_fail(err,
                         "%s:%lld: field '%s' takes columns %d..%d (counting from 0), but "
                         "the rows have %lld columns",
                         path, (long long)line_no, cols[c].name, cols[c].first, last,
                         (long long)ncells);
        break;
      }
      if (rc != 0) break;
    } else if (ncells != expected_cells) {
      rc = dlrt_fail(err, "%s:%lld: expected %lld columns, found %lld", path, (long long)line_no,
                     (long long)expected_cells, (long long)ncells);
      break;
    }
    if (nrows == row_cap) {
      int64_t grown_cap = row_cap ? row_cap * 2 : 64;
      for (int c = 0; c < ncols; c++) {
        DlrtField *f = &out->fields[c];
        float *grown = realloc(f->data, sizeof(float) * (size_t)(grown_cap * f->width));
        if (!grown) {
          rc = dlrt_fail(err, "out of memory reading data file '%s'", path);
          break;
        }
        f->data = grown;
      }
      if (rc != 0) break;
      row_cap = grown_cap;
    }
    for (int c = 0; rc == 0 && c < ncols; c++) {
      DlrtField *f = &out->fields[c];
      for (int j = 0; rc == 0 && j < cols[c].count; j++)
        rc = parse_cell(path, line_no, line, spans[cols[c].first + j],
                        &f->data[nrows * f->width + j], err);
    }
    nrows++;
  }
  free(spans);
  if (rc == 0 && nrows == 0) rc = dlrt_fail(err, "%s: no data rows", path);
  out->nrows = nrows;
  return rc;
}

int dlrt_csv_load(const char *path, bool header, const DlrtCsvColumns *cols, int ncols,
                  DlrtDataset *out, DlrtError *err) {
  if (!out) return dlrt_fail(err, "no dataset given");
  memset(out, 0, sizeof *out);
  if (!path) return dlrt_fail(err, "no data file given");
  if (check_selection(cols, ncols, err) != 0) return -1;
  char *text = NULL;
  size_t len = 0;
  if (read_whole_file(path, &text, &len, err) != 0) return -1;
  out->nfields = ncols;
  for (int c = 0; c < ncols; c++) {
    snprintf(out->fields[c].name, sizeof out->fields[c].name, "%s", cols[c].name);
    out->fields[c].width = cols[c].count;
  }
  int rc = parse_csv_text(path, text, len, header, cols, ncols, out, err);
  free(text);
  if (rc != 0) dlrt_dataset_free(out);
  return rc;
}
