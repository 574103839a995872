/* support.c - arena, source registry and diagnostics. */
#include "support.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

typedef struct DlArenaChunk {
  struct DlArenaChunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} DlArenaChunk;

struct DlArena {
  DlArenaChunk *head;
};

enum { DL_ARENA_CHUNK = 64 * 1024 };

DlArena *dl_arena_new(void) {
  return calloc(1, sizeof(DlArena));
}

void dl_arena_free(DlArena *a) {
  if (!a) return;
  DlArenaChunk *c = a->head;
  while (c) {
    DlArenaChunk *next = c->next;
    free(c);
    c = next;
  }
  free(a);
}

void *dl_arena_alloc(DlArena *a, size_t size) {
  size = (size + 15) & ~(size_t)15;
  if (size == 0) size = 16;
  DlArenaChunk *c = a->head;
  if (!c || c->cap - c->used < size) {
    size_t cap = size > DL_ARENA_CHUNK ? size : DL_ARENA_CHUNK;
    c = malloc(sizeof(DlArenaChunk) + cap);
    if (!c) abort(); /* out of memory: nothing sensible to report */
    c->cap = cap;
    c->used = 0;
    c->next = a->head;
    a->head = c;
  }
  void *p = c->data + c->used;
  c->used += size;
  memset(p, 0, size);
  return p;
}

char *dl_arena_strndup(DlArena *a, const char *s, size_t n) {
  char *p = dl_arena_alloc(a, n + 1);
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

char *dl_arena_strdup(DlArena *a, const char *s) {
  return dl_arena_strndup(a, s, strlen(s));
}

char *dl_arena_vprintf(DlArena *a, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  char *p = dl_arena_alloc(a, (size_t)n + 1);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  return p;
}

char *dl_arena_printf(DlArena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *p = dl_arena_vprintf(a, fmt, ap);
  va_end(ap);
  return p;
}

/* ---- compiler context ---- */

DlCompiler *dl_compiler_new(void) {
  DlCompiler *cc = calloc(1, sizeof(DlCompiler));
  if (!cc) return NULL;
  cc->arena = dl_arena_new();
  cc->max_errors = 20;
  return cc;
}

void dl_compiler_free(DlCompiler *cc) {
  if (!cc) return;
  dl_arena_free(cc->arena);
  free(cc);
}

const DlSource *dl_source_add(DlCompiler *cc, const char *path, const char *text, size_t len) {
  DL_ARENA_GROW(cc->arena, cc->sources, cc->nsources, cc->source_cap);
  DlSource *s = &cc->sources[cc->nsources++];
  s->path = dl_arena_strdup(cc->arena, path);
  s->text = dl_arena_strndup(cc->arena, text, len);
  s->len = len;
  return s;
}

const DlSource *dl_source_find(const DlCompiler *cc, const char *path) {
  if (!path) return NULL;
  /* Newest first: the REPL re-registers "<stdin>" for every line. */
  for (int i = cc->nsources - 1; i >= 0; i--)
    if (strcmp(cc->sources[i].path, path) == 0) return &cc->sources[i];
  return NULL;
}

const DlSource *dl_source_load(DlCompiler *cc, const char *path, DlLoc from) {
  const DlSource *known = dl_source_find(cc, path);
  if (known) return known;
  FILE *f = fopen(path, "rb");
  if (!f) {
    dl_error(cc, from, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        dl_error(cc, from, "out of memory reading '%s'", path);
        return NULL;
      }
      buf = nb;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    dl_error(cc, from, "cannot read '%s'", path);
    return NULL;
  }
  const DlSource *s = dl_source_add(cc, path, buf ? buf : "", len);
  free(buf);
  return s;
}

/* ---- diagnostics ---- */

void dl_diag_v(DlCompiler *cc, DlSeverity sev, DlLoc loc, const char *fmt, va_list ap) {
  if (sev == DL_SEV_ERROR) {
    cc->nerrors++;
    if (cc->nerrors > (cc->max_errors ? cc->max_errors : 20)) return;
  } else if (cc->nerrors > (cc->max_errors ? cc->max_errors : 20)) {
    return; /* notes of suppressed errors */
  }
  DL_ARENA_GROW(cc->arena, cc->diags, cc->ndiags, cc->diag_cap);
  DlDiag *d = &cc->diags[cc->ndiags++];
  d->sev = sev;
  d->loc = loc;
  if (loc.file) d->loc.file = dl_arena_strdup(cc->arena, loc.file);
  d->msg = dl_arena_vprintf(cc->arena, fmt, ap);
}

void dl_error(DlCompiler *cc, DlLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  dl_diag_v(cc, DL_SEV_ERROR, loc, fmt, ap);
  va_end(ap);
}

void dl_warning(DlCompiler *cc, DlLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  dl_diag_v(cc, DL_SEV_WARNING, loc, fmt, ap);
  va_end(ap);
}

void dl_note(DlCompiler *cc, DlLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  dl_diag_v(cc, DL_SEV_NOTE, loc, fmt, ap);
  va_end(ap);
}

static void render_source_line(const DlCompiler *cc, FILE *out, DlLoc loc, bool color) {
  const DlSource *src = dl_source_find(cc, loc.file);
  if (!src || loc.line <= 0) return;
  const char *p = src->text, *end = src->text + src->len;
  for (int line = 1; line < loc.line && p < end; p++)
    if (*p == '\n') line++;
  if (p >= end && loc.line > 1) return;
  const char *eol = memchr(p, '\n', (size_t)(end - p));
  if (!eol) eol = end;
  int len = (int)(eol - p);
  if (len > 0 && p[len - 1] == '\r') len--;
  fprintf(out, "%.*s\n", len, p);
  /* The caret line repeats tabs so it lines up under the source. */
  for (int i = 0; i < loc.col - 1 && i < len; i++)
    fputc(p[i] == '\t' ? '\t' : ' ', out);
  fprintf(out, "%s^%s\n", color ? "\033[1;32m" : "", color ? "\033[0m" : "");
}

void dl_diag_render(DlCompiler *cc, FILE *out, bool color) {
  static const char *const sev_names[] = {"error", "warning", "note"};
  static const char *const sev_colors[] = {"\033[1;31m", "\033[1;35m", "\033[1;36m"};
  for (int i = 0; i < cc->ndiags; i++) {
    const DlDiag *d = &cc->diags[i];
    if (color) fputs("\033[1m", out);
    if (d->loc.file && d->loc.line > 0)
      fprintf(out, "%s:%d:%d: ", d->loc.file, d->loc.line, d->loc.col);
    else if (d->loc.file)
      fprintf(out, "%s: ", d->loc.file);
    else
      fputs("dlcc: ", out);
    if (color)
      fprintf(out, "%s%s:\033[0m\033[1m %s\033[0m\n", sev_colors[d->sev], sev_names[d->sev],
              d->msg);
    else
      fprintf(out, "%s: %s\n", sev_names[d->sev], d->msg);
    render_source_line(cc, out, d->loc, color);
  }
  int max = cc->max_errors ? cc->max_errors : 20;
  if (cc->nerrors > max)
    fprintf(out, "dlcc: too many errors (%d), stopped after %d\n", cc->nerrors, max);
  cc->ndiags = 0;
}

void dl_diag_clear(DlCompiler *cc) {
  cc->ndiags = 0;
  cc->nerrors = 0;
}
