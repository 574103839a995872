/* rt_text.c - raw text as rows for character-level models: each row is a
 * window of characters and the character that follows it. */
#include "rt_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dlrt_text_symbol(unsigned char c) {
  if (c == '\n') return 0;
  if (c == '\t') c = ' ';
  if (c >= ' ' && c <= '~') return c - ' ' + 1;
  return -1;
}

/* The file as symbols, dropping bytes outside the vocabulary. */
static int read_symbols(const char *path, unsigned char **out, int64_t *count, DlrtError *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return dlrt_fail(err, "cannot open text file '%s': %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  unsigned char *syms = malloc(cap);
  int rc = syms ? 0 : dlrt_fail(err, "out of memory reading '%s'", path);
  int c;
  while (rc == 0 && (c = getc(f)) != EOF) {
    int s = dlrt_text_symbol((unsigned char)c);
    if (s < 0) continue;
    if (n == cap) {
      unsigned char *grown = realloc(syms, cap * 2);
      if (!grown) {
        rc = dlrt_fail(err, "out of memory reading '%s'", path);
        break;
      }
      syms = grown;
      cap *= 2;
    }
    syms[n++] = (unsigned char)s;
  }
  if (rc == 0 && ferror(f)) rc = dlrt_fail(err, "cannot read '%s': %s", path, strerror(errno));
  fclose(f);
  if (rc != 0) {
    free(syms);
    return rc;
  }
  *out = syms;
  *count = (int64_t)n;
  return 0;
}

int dlrt_text_load(const DlrtTextSpec *spec, DlrtDataset *out, DlrtError *err) {
  if (!out) return dlrt_fail(err, "no dataset given");
  memset(out, 0, sizeof *out);
  if (!spec || !spec->path || !spec->input || !spec->target)
    return dlrt_fail(err, "incomplete text data specification");
  int64_t k = spec->context, V = DLRT_TEXT_VOCAB;
  if (k < 1) return dlrt_fail(err, "the text context must be at least 1 character");
  bool x_onehot = spec->input_width == k * V, y_onehot = spec->target_width == V;
  if (!x_onehot && spec->input_width != k)
    return dlrt_fail(err,
                     "input '%s' takes %lld values per row; text with a context of %lld "
                     "characters gives %lld (one-hot, %lld symbols each) or %lld (indices)",
                     spec->input, (long long)spec->input_width, (long long)k, (long long)(k * V),
                     (long long)V, (long long)k);
  if (!y_onehot && spec->target_width != 1)
    return dlrt_fail(err,
                     "target '%s' takes %lld values per row; the next character is %lld "
                     "values (one-hot) or 1 (its index)",
                     spec->target, (long long)spec->target_width, (long long)V);
  unsigned char *syms = NULL;
  int64_t nsyms = 0;
  if (read_symbols(spec->path, &syms, &nsyms, err) != 0) return -1;
  int64_t rows = nsyms - k;
  if (spec->limit > 0 && rows > spec->limit) rows = spec->limit;
  if (rows < 1) {
    free(syms);
    return dlrt_fail(err, "text file '%s' is too short for a context of %lld characters",
                     spec->path, (long long)k);
  }
  int64_t xw = spec->input_width, yw = spec->target_width;
  float *x = calloc((size_t)(rows * xw), sizeof(float));
  float *y = calloc((size_t)(rows * yw), sizeof(float));
  if (!x || !y) {
    free(x);
    free(y);
    free(syms);
    return dlrt_fail(err, "out of memory for %lld rows of text", (long long)rows);
  }
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < k; j++) {
      int s = syms[r + j];
      if (x_onehot)
        x[r * xw + j * V + s] = 1.0f;
      else
        x[r * xw + j] = (float)s;
    }
    int next = syms[r + k];
    if (y_onehot)
      y[r * yw + next] = 1.0f;
    else
      y[r] = (float)next;
  }
  free(syms);
  snprintf(out->fields[0].name, sizeof out->fields[0].name, "%s", spec->input);
  snprintf(out->fields[1].name, sizeof out->fields[1].name, "%s", spec->target);
  out->fields[0].width = xw;
  out->fields[0].data = x;
  out->fields[1].width = yw;
  out->fields[1].data = y;
  out->nfields = 2;
  out->nrows = rows;
  return 0;
}

/* The symbol a target row names (one-hot or index). */
static int row_symbol(const DlrtField *f, int64_t r) {
  if (f->width == 1) return (int)f->data[r];
  int64_t best = dlrt_argmax(f->data + r * f->width, f->width);
  return best < 0 ? 0 : (int)best;
}

double dlrt_unigram_loss(const DlrtDataset *train, const DlrtDataset *eval, const char *target) {
  const DlrtField *ft = dlrt_dataset_field(train, target), *fe = dlrt_dataset_field(eval, target);
  if (!ft || !fe) return NAN;
  double counts[DLRT_TEXT_VOCAB];
  for (int s = 0; s < DLRT_TEXT_VOCAB; s++)
    counts[s] = 1.0;
  for (int64_t r = 0; r < train->nrows; r++)
    counts[row_symbol(ft, r) % DLRT_TEXT_VOCAB] += 1.0;
  double total = (double)train->nrows + DLRT_TEXT_VOCAB, loss = 0;
  for (int64_t r = 0; r < eval->nrows; r++)
    loss -= log(counts[row_symbol(fe, r) % DLRT_TEXT_VOCAB] / total);
  return eval->nrows > 0 ? loss / (double)eval->nrows : NAN;
}
