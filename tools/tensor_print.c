/* tensor_print.c - printing tensors the way numpy does: nested brackets,
 * abbreviated with "..." when large, on one line when short (the REPL), or
 * one row per line (`dlcc run`). */
#include "driver.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const TensorFormat tensor_format_run = {
    .precision = 6, .threshold = 0, .edge = 3, .long_axis = 8, .width = 0};
/* numpy's defaults: summarise above 1000 elements, three at each end, 75
 * columns. */
const TensorFormat tensor_format_repl = {
    .precision = 6, .threshold = 1000, .edge = 3, .long_axis = 6, .width = 75};

void strbuf_put(StrBuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) {
      fputs("dlcc: error: out of memory\n", stderr);
      abort();
    }
    b->s = ns;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void sb_puts(StrBuf *b, const char *s) {
  strbuf_put(b, s, strlen(s));
}

static void sb_spaces(StrBuf *b, int n) {
  for (int i = 0; i < n; i++)
    strbuf_put(b, " ", 1);
}

/* The printer renders into a string so it can measure the one-line form
 * before choosing it. */
typedef struct Printer {
  const TensorValues *v;
  const TensorFormat *f;
  bool summarise;
  bool one_line;
  int indent;     /* column of the opening bracket */
  size_t line_at; /* offset in the buffer where the current line starts */
  StrBuf out;
} Printer;

static double value_at(const TensorValues *v, int64_t i) {
  return v->f64 ? v->f64[i] : (double)v->f32[i];
}

static void put_number(Printer *p, double x) {
  char num[64];
  /* Print -0 as 0: the sign of a zero means nothing to a reader here. */
  snprintf(num, sizeof num, "%.*g", p->f->precision, x == 0 ? 0.0 : x);
  /* The first line starts at the indent column; later ones have it in the
   * buffer. */
  size_t col = p->out.len - p->line_at + (p->line_at == 0 ? (size_t)p->indent : 0);
  /* Wrap a long row like numpy: continue under the first element. */
  if (!p->one_line && p->f->width > 0 && col + strlen(num) + 2 > (size_t)p->f->width &&
      p->out.len > 0 && p->out.s[p->out.len - 1] == ' ') {
    p->out.len--; /* the space after the comma */
    sb_puts(&p->out, "\n");
    p->line_at = p->out.len;
    int depth = p->v->rank;
    sb_spaces(&p->out, p->indent + depth);
  }
  sb_puts(&p->out, num);
}

static void put_axis(Printer *p, int axis, int64_t at) {
  const TensorValues *v = p->v;
  if (axis == v->rank) {
    put_number(p, value_at(v, at));
    return;
  }
  int64_t n = v->dims[axis], inner = 1;
  for (int i = axis + 1; i < v->rank; i++)
    inner *= v->dims[i];
  sb_puts(&p->out, "[");
  bool abbrev = p->summarise && n > p->f->long_axis;
  /* `dlcc run` (width 0) keeps its compact form: "..." inline, rows indented
   * by one space at every depth. */
  bool numpy = p->f->width > 0;
  for (int64_t i = 0; i < n; i++) {
    if (abbrev && i == p->f->edge) {
      if (numpy && axis != v->rank - 1) {
        sb_puts(&p->out, ",\n");
        p->line_at = p->out.len;
        sb_spaces(&p->out, p->indent + axis + 1);
        sb_puts(&p->out, "...");
      } else {
        sb_puts(&p->out, ", ...");
      }
      i = n - p->f->edge;
    }
    if (i) {
      if (axis == v->rank - 1 || p->one_line) {
        sb_puts(&p->out, ", ");
      } else {
        sb_puts(&p->out, ",\n");
        /* numpy separates 2-d blocks of a 3-d tensor by a blank line. */
        for (int k = axis + 2; k < v->rank && numpy; k++)
          sb_puts(&p->out, "\n");
        p->line_at = p->out.len;
        sb_spaces(&p->out, numpy ? p->indent + axis + 1 : 1);
      }
    }
    put_axis(p, axis + 1, at + i * inner);
  }
  sb_puts(&p->out, "]");
}

static void render(Printer *p) {
  p->out.len = 0;
  p->line_at = 0;
  if (p->out.s) p->out.s[0] = '\0';
  put_axis(p, 0, 0);
}

char *tensor_to_string(const TensorValues *v, const TensorFormat *f, int indent) {
  int64_t numel = 1;
  for (int i = 0; i < v->rank; i++)
    numel *= v->dims[i];
  Printer p = {.v = v, .f = f, .summarise = numel > f->threshold, .indent = indent};
  if (numel == 0) {
    sb_puts(&p.out, "[]");
    return p.out.s;
  }
  if (f->width > 0) {
    /* One line when it fits. */
    p.one_line = true;
    render(&p);
    if (p.out.s && (int)p.out.len + indent <= f->width) return p.out.s;
    p.one_line = false;
  }
  render(&p);
  if (!p.out.s) sb_puts(&p.out, "");
  return p.out.s;
}

void print_tensor_values(FILE *out, const TensorValues *v, const TensorFormat *f, int indent) {
  char *s = tensor_to_string(v, f, indent);
  if (s) fputs(s, out);
  free(s);
}

void print_tensor(FILE *out, const float *data, int rank, const int64_t *dims) {
  TensorValues v = {.f32 = data, .rank = rank, .dims = dims};
  print_tensor_values(out, &v, &tensor_format_run, 0);
  fputc('\n', out);
}

char *dims_str(char *buf, size_t size, int rank, const int64_t *dims) {
  size_t used = 0;
  buf[0] = '\0';
  used += (size_t)snprintf(buf, size, "[");
  for (int i = 0; i < rank && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)dims[i]);
  if (used < size) snprintf(buf + used, size - used, "]");
  return buf;
}
