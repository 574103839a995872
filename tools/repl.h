/* repl.h - the REPL's handling of text (repl_text.c), shared with repl.c.
 *
 * The REPL needs no frontend changes: it keeps what the user defined as
 * source text, and for every line synthesises a small .nnl file (the
 * definitions it uses, then the line) that the ordinary pipeline compiles.
 * Two things make that work:
 *
 *   - a small scanner that knows as much of the language as the REPL needs
 *     before the compiler sees the text: brackets (does the input continue on
 *     the next line?), statement boundaries, and the names a line uses;
 *   - a source builder that records, for every piece of the synthesised text,
 *     where it came from (a line the user typed, a line of a loaded file), so
 *     diagnostics and IR locations can be mapped back and point into what the
 *     user wrote.
 */
#ifndef DLCC_REPL_H
#define DLCC_REPL_H

#include "driver.h"

/* ---- scanning ---- */

typedef enum ReplTokKind {
  RT_END,
  RT_IDENT, /* names and keywords */
  RT_NUMBER,
  RT_STRING,
  RT_PUNCT, /* one character, or ".." */
  RT_NEWLINE,
} ReplTokKind;

typedef struct ReplTok {
  ReplTokKind kind;
  size_t offset; /* in the scanned text */
  int len;
  int depth; /* brackets ( [ { open before the token */
} ReplTok;

typedef struct ReplTokens {
  ReplTok *items; /* ends with an RT_END token */
  int n;
  int depth; /* brackets still open at the end (negative: too many closed) */
} ReplTokens;

/* Comments are skipped; a string runs to its closing quote or the end of
 * the line. */
void repl_scan(const char *text, size_t len, ReplTokens *out);
void repl_tokens_free(ReplTokens *t);
bool repl_tok_is(const char *text, const ReplTok *t, const char *word);

/* ---- where text came from ---- */

/* A piece of text and the location of its first byte. */
typedef struct ReplText {
  const char *text;
  size_t len;
  DlLoc origin;
} ReplText;

/* The location of byte `offset` of a piece. */
DlLoc repl_text_loc(const ReplText *t, size_t offset);
/* A sub-piece [from, to) with its origin; leading and trailing blanks
 * (spaces and tabs, not newlines) trimmed. */
ReplText repl_text_slice(const ReplText *t, size_t from, size_t to);

/* ---- synthesised source ---- */

typedef struct ReplPiece {
  int line, col; /* where the piece starts in the synthesised text */
  int len;       /* bytes, with the newline that ends the line if there is one */
  bool newline;  /* the piece ends its line */
  DlLoc origin;  /* origin.file == NULL: text the REPL wrote */
} ReplPiece;

typedef struct ReplSynth {
  const char *name; /* the name it is parsed under */
  StrBuf text;
  int line, col; /* where the next byte goes */
  ReplPiece *pieces;
  int npieces, cap_pieces;
  DlLoc fallback; /* where locations in the REPL's own text point */
} ReplSynth;

void synth_init(ReplSynth *s, const char *name, DlLoc fallback);
void synth_free(ReplSynth *s);
/* Append user text, remembering its origin line by line. */
void synth_add(ReplSynth *s, const ReplText *t);
/* Append text the REPL writes itself. */
void synth_write(ReplSynth *s, const char *text, size_t len);
void synth_printf(ReplSynth *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Map a location in the synthesised text to its origin; others unchanged. */
DlLoc synth_map(const ReplSynth *s, DlLoc loc);

#endif
