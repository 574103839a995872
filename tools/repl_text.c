/* repl_text.c - the REPL's scanner and its source builder with a location
 * map (see repl.h). */
#include "repl.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- scanning ---- */

static void push_tok(ReplTokens *t, int *cap, ReplTok tok) {
  if (t->n >= *cap) {
    *cap = *cap ? *cap * 2 : 32;
    ReplTok *items = realloc(t->items, sizeof(ReplTok) * (size_t)*cap);
    if (!items) abort(); /* the driver's policy for out-of-memory in small tables */
    t->items = items;
  }
  t->items[t->n++] = tok;
}

void repl_scan(const char *text, size_t len, ReplTokens *out) {
  memset(out, 0, sizeof *out);
  int cap = 0, depth = 0;
  size_t i = 0;
  while (i < len) {
    char c = text[i];
    size_t start = i;
    ReplTokKind kind = RT_PUNCT;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
      i++;
      continue;
    }
    if (c == '#') {
      while (i < len && text[i] != '\n')
        i++;
      continue;
    }
    if (c == '\n') {
      kind = RT_NEWLINE;
      i++;
    } else if (isalpha((unsigned char)c) || c == '_') {
      kind = RT_IDENT;
      while (i < len && (isalnum((unsigned char)text[i]) || text[i] == '_'))
        i++;
    } else if (isdigit((unsigned char)c) ||
               (c == '.' && i + 1 < len && isdigit((unsigned char)text[i + 1]))) {
      kind = RT_NUMBER;
      while (i < len &&
             (isalnum((unsigned char)text[i]) || text[i] == '_' ||
              (text[i] == '.' && !(i + 1 < len && text[i + 1] == '.')) ||
              ((text[i] == '+' || text[i] == '-') && (text[i - 1] == 'e' || text[i - 1] == 'E'))))
        i++;
    } else if (c == '"') {
      kind = RT_STRING;
      i++;
      while (i < len && text[i] != '"' && text[i] != '\n')
        i += text[i] == '\\' && i + 1 < len && text[i + 1] != '\n' ? 2 : 1;
      if (i < len && text[i] == '"') i++;
    } else if (c == '.' && i + 1 < len && text[i + 1] == '.') {
      i += 2;
    } else {
      i++;
    }
    if (c == ')' || c == ']' || c == '}') depth--;
    push_tok(out, &cap, (ReplTok){kind, start, (int)(i - start), depth});
    if (c == '(' || c == '[' || c == '{') depth++;
  }
  push_tok(out, &cap, (ReplTok){RT_END, len, 0, depth});
  out->n--; /* the END token is not counted */
  out->depth = depth;
}

void repl_tokens_free(ReplTokens *t) {
  free(t->items);
  memset(t, 0, sizeof *t);
}

bool repl_tok_is(const char *text, const ReplTok *t, const char *word) {
  size_t n = strlen(word);
  return t->kind != RT_END && (size_t)t->len == n && memcmp(text + t->offset, word, n) == 0;
}

/* ---- pieces of text with their origin ---- */

DlLoc repl_text_loc(const ReplText *t, size_t offset) {
  DlLoc loc = t->origin;
  for (size_t i = 0; i < offset && i < t->len; i++) {
    if (t->text[i] == '\n') {
      loc.line++;
      loc.col = 1;
    } else {
      loc.col++;
    }
  }
  return loc;
}

ReplText repl_text_slice(const ReplText *t, size_t from, size_t to) {
  if (to > t->len) to = t->len;
  while (from < to && (t->text[from] == ' ' || t->text[from] == '\t'))
    from++;
  while (to > from &&
         (t->text[to - 1] == ' ' || t->text[to - 1] == '\t' || t->text[to - 1] == '\r'))
    to--;
  return (ReplText){t->text + from, to - from, repl_text_loc(t, from)};
}

/* ---- synthesised source ---- */

void synth_init(ReplSynth *s, const char *name, DlLoc fallback) {
  memset(s, 0, sizeof *s);
  s->name = name;
  s->line = 1;
  s->col = 1;
  s->fallback = fallback;
}

void synth_free(ReplSynth *s) {
  free(s->text.s);
  free(s->pieces);
  memset(s, 0, sizeof *s);
}

/* Append one line's worth (no newline inside) as a piece. */
static void synth_piece(ReplSynth *s, const char *p, size_t n, DlLoc origin) {
  ReplPiece *last = s->npieces > 0 ? &s->pieces[s->npieces - 1] : NULL;
  if (n > 0 && !origin.file && last && !last->origin.file && last->line == s->line &&
      !last->newline) {
    /* The REPL's own text, continued: one piece (a literal of a million
     * numbers would otherwise make two million). */
    last->len += (int)n;
    strbuf_put(&s->text, p, n);
    s->col += (int)n;
  } else if (n > 0) {
    if (s->npieces >= s->cap_pieces) {
      s->cap_pieces = s->cap_pieces ? s->cap_pieces * 2 : 64;
      ReplPiece *pieces = realloc(s->pieces, sizeof(ReplPiece) * (size_t)s->cap_pieces);
      if (!pieces) abort();
      s->pieces = pieces;
    }
    s->pieces[s->npieces++] = (ReplPiece){s->line, s->col, (int)n, false, origin};
    strbuf_put(&s->text, p, n);
    s->col += (int)n;
  }
}

static void synth_text(ReplSynth *s, const char *p, size_t n, DlLoc origin) {
  size_t at = 0;
  while (at < n) {
    const char *nl = memchr(p + at, '\n', n - at);
    size_t seg = nl ? (size_t)(nl - (p + at)) : n - at;
    synth_piece(s, p + at, seg, origin);
    at += seg;
    if (nl) {
      /* The newline belongs to the piece before it: "unexpected end of
       * line" points just after the text on that line. */
      ReplPiece *last = s->npieces > 0 ? &s->pieces[s->npieces - 1] : NULL;
      if (last && last->line == s->line) {
        last->len++;
        last->newline = true;
      }
      strbuf_put(&s->text, "\n", 1);
      s->line++;
      s->col = 1;
      at++;
      if (origin.file) {
        origin.line++;
        origin.col = 1;
      }
    }
  }
}

void synth_add(ReplSynth *s, const ReplText *t) {
  synth_text(s, t->text, t->len, t->origin);
}

void synth_write(ReplSynth *s, const char *text, size_t len) {
  synth_text(s, text, len, (DlLoc){0});
}

void synth_printf(ReplSynth *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *text = NULL;
  int n = vasprintf(&text, fmt, ap);
  va_end(ap);
  if (n < 0) abort();
  synth_text(s, text, (size_t)n, (DlLoc){0});
  free(text);
}

DlLoc synth_map(const ReplSynth *s, DlLoc loc) {
  if (!loc.file || strcmp(loc.file, s->name) != 0) return loc;
  const ReplPiece *best = NULL;
  for (int i = 0; i < s->npieces; i++) {
    const ReplPiece *p = &s->pieces[i];
    if (p->line == loc.line && p->col <= loc.col) best = p;
  }
  /* The end of the file comes after the last text the user wrote: point
   * just after it. */
  bool at_end = false;
  if (!best && s->npieces > 0 && loc.line >= s->line - 1) {
    for (int i = s->npieces - 1; i >= 0 && !best; i--)
      if (s->pieces[i].origin.file) best = &s->pieces[i];
    at_end = true;
  }
  if (!best || !best->origin.file) return s->fallback;
  int text_len = best->len - (best->newline ? 1 : 0);
  int into = at_end ? text_len : loc.col - best->col;
  if (into > best->len) into = best->len;
  return (DlLoc){best->origin.file, best->origin.line, best->origin.col + into};
}
