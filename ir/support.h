/* support.h - the compiler context: arena memory, source files, diagnostics.
 *
 * Every stage of the compiler receives a DlCompiler and nothing global.
 * Compile-time memory comes from its arena and is freed in one go by
 * dl_compiler_free().  Library code never prints: it records diagnostics with
 * dl_error()/dl_note(), returns a failure value, and the driver (or the REPL)
 * decides how to show them with dl_diag_render().
 */
#ifndef DL_SUPPORT_H
#define DL_SUPPORT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- arena ------------------------------------------------------------- */

typedef struct DlArena DlArena;

DlArena *dl_arena_new(void);
void dl_arena_free(DlArena *a);
/* Zeroed, 16-byte aligned memory that lives until the arena is freed. */
void *dl_arena_alloc(DlArena *a, size_t size);
char *dl_arena_strdup(DlArena *a, const char *s);
char *dl_arena_strndup(DlArena *a, const char *s, size_t n);
char *dl_arena_printf(DlArena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *dl_arena_vprintf(DlArena *a, const char *fmt, va_list ap);

/* Growable array kept in the arena: old storage is simply abandoned. */
#define DL_ARENA_GROW(arena, ptr, count, cap)                                                      \
  do {                                                                                             \
    if ((count) >= (cap)) {                                                                        \
      int dl_newcap_ = (cap) ? (cap)*2 : 16;                                                       \
      void *dl_new_ = dl_arena_alloc((arena), sizeof(*(ptr)) * (size_t)dl_newcap_);                \
      if ((count) > 0) memcpy(dl_new_, (ptr), sizeof(*(ptr)) * (size_t)(count));                   \
      (ptr) = dl_new_;                                                                             \
      (cap) = dl_newcap_;                                                                          \
    }                                                                                              \
  } while (0)

/* ---- source locations -------------------------------------------------- */

/* A place in a source file. file is the path as the user named it (also the
 * key under which the file's text is registered); line and col start at 1.
 * line == 0 means "no location" (e.g. an error in a command-line flag). */
typedef struct DlLoc {
  const char *file;
  int line;
  int col;
} DlLoc;

#define DL_NOLOC ((DlLoc){NULL, 0, 0})

/* ---- diagnostics ------------------------------------------------------- */

typedef enum DlSeverity { DL_SEV_ERROR, DL_SEV_WARNING, DL_SEV_NOTE } DlSeverity;

typedef struct DlDiag {
  DlSeverity sev;
  DlLoc loc;
  const char *msg;
} DlDiag;

typedef struct DlSource {
  const char *path;
  const char *text; /* whole file, NUL-terminated */
  size_t len;
} DlSource;

/* The compiler context: a value passed to every stage. */
typedef struct DlCompiler {
  DlArena *arena;
  DlDiag *diags;
  int ndiags, diag_cap;
  int nerrors;
  int max_errors; /* stop recording after this many errors (0 = 20) */
  DlSource *sources;
  int nsources, source_cap;
  /* Directories `import "..."` searches after the importing file's own
   * (frontend: dl_frontend_add_import_dir). */
  const char **import_dirs;
  int nimport_dirs, import_dir_cap;
} DlCompiler;

DlCompiler *dl_compiler_new(void);
void dl_compiler_free(DlCompiler *cc);

/* Register a source text under a path so diagnostics can show its lines. The
 * text is copied into the arena. Returns the stored copy. */
const DlSource *dl_source_add(DlCompiler *cc, const char *path, const char *text, size_t len);
/* Read a file and register it. Returns NULL (and records an error at `from`)
 * if it cannot be read. */
const DlSource *dl_source_load(DlCompiler *cc, const char *path, DlLoc from);
const DlSource *dl_source_find(const DlCompiler *cc, const char *path);

void dl_error(DlCompiler *cc, DlLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dl_warning(DlCompiler *cc, DlLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dl_note(DlCompiler *cc, DlLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void dl_diag_v(DlCompiler *cc, DlSeverity sev, DlLoc loc, const char *fmt, va_list ap);

static inline bool dl_failed(const DlCompiler *cc) {
  return cc->nerrors > 0;
}

/* Print all diagnostics recorded so far, the way C compilers do:
 *   file:line:col: error: message
 *     source line
 *         ^
 * and forget them. `color` adds ANSI colours (for a terminal). */
void dl_diag_render(DlCompiler *cc, FILE *out, bool color);
/* Drop recorded diagnostics and reset the error count (the REPL does this
 * after each line). */
void dl_diag_clear(DlCompiler *cc);

#endif
