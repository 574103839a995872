/* import.c - `import "path"`: finding, loading and parsing imported files.
 *
 * An import names a file relative to the importing file's directory, or to
 * one of the compiler's import directories (dl_frontend_add_import_dir), in
 * that order; an absolute path is used as it is.  Every file is parsed once,
 * however many files import it (files are compared by their canonical path),
 * and an import that leads back to a file still being loaded is a cycle.
 * Imported files contribute their defs; lower.c looks them up through the
 * main file's `loaded` list.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ast.h"

void dl_frontend_add_import_dir(DlCompiler *cc, const char *dir) {
  if (!dir || !dir[0]) return;
  DL_ARENA_GROW(cc->arena, cc->import_dirs, cc->nimport_dirs, cc->import_dir_cap);
  cc->import_dirs[cc->nimport_dirs++] = dl_arena_strdup(cc->arena, dir);
}

/* The files being loaded, innermost first: an import of one of them is a
 * cycle. */
typedef struct ImportFrame {
  const DlAstFile *file;
  const struct ImportFrame *outer;
} ImportFrame;

static const char *canonical(DlCompiler *cc, const char *path) {
  char buf[PATH_MAX];
  if (realpath(path, buf)) return dl_arena_strdup(cc->arena, buf);
  return path;
}

static const char *join_dir(DlCompiler *cc, const char *dir, size_t dirlen, const char *path) {
  if (dirlen == 0) return path;
  return dl_arena_printf(cc->arena, "%.*s/%s", (int)dirlen, dir, path);
}

/* The file an import names, or NULL (and an error at the import) if there is
 * none. */
static const char *resolve(DlCompiler *cc, const DlAstFile *from, const AstImport *imp) {
  if (imp->path[0] == '/') {
    if (access(imp->path, R_OK) == 0) return imp->path;
    dl_error(cc, imp->loc, "cannot open imported file '%s': %s", imp->path, strerror(errno));
    return NULL;
  }
  const char *slash = strrchr(from->path, '/');
  size_t dirlen = slash ? (size_t)(slash - from->path) : 0;
  const char *candidate = join_dir(cc, from->path, dirlen, imp->path);
  if (access(candidate, R_OK) == 0) return candidate;
  const char *searched =
      dirlen ? dl_arena_printf(cc->arena, "'%.*s'", (int)dirlen, from->path) : "'.'";
  for (int i = 0; i < cc->nimport_dirs; i++) {
    const char *dir = cc->import_dirs[i];
    candidate = join_dir(cc, dir, strlen(dir), imp->path);
    if (access(candidate, R_OK) == 0) return candidate;
    searched = dl_arena_printf(cc->arena, "%s, '%s'", searched, dir);
  }
  dl_error(cc, imp->loc, "cannot find imported file '%s' (searched %s)", imp->path, searched);
  return NULL;
}

static const DlAstFile *find_loaded(const DlAstFile *root, const char *real) {
  if (strcmp(root->real_path, real) == 0) return root;
  for (int i = 0; i < root->nloaded; i++)
    if (strcmp(root->loaded[i]->real_path, real) == 0) return root->loaded[i];
  return NULL;
}

/* "a.nnl imports b.nnl, which imports a.nnl" for an import of `real`, a
 * file on the stack. */
static const char *cycle_text(DlCompiler *cc, const ImportFrame *stack, const char *real) {
  const ImportFrame *start = stack;
  while (strcmp(start->file->real_path, real) != 0)
    start = start->outer;
  /* The chain runs from `start` (outermost of the cycle) inward to stack. */
  const char *text = dl_arena_printf(cc->arena, "'%s'", start->file->path);
  for (const ImportFrame *f = stack; f != start; f = f->outer)
    text = dl_arena_printf(cc->arena, "'%s', which imports %s", f->file->path, text);
  return dl_arena_printf(cc->arena, "'%s' imports %s", start->file->path, text);
}

static void load_imports(DlCompiler *cc, DlAstFile *root, DlAstFile *file,
                         const ImportFrame *outer) {
  ImportFrame frame = {file, outer};
  for (int i = 0; i < file->nimports; i++) {
    const AstImport *imp = &file->imports[i];
    const char *path = resolve(cc, file, imp);
    if (!path) continue;
    const char *real = canonical(cc, path);
    bool on_stack = false;
    for (const ImportFrame *f = &frame; f; f = f->outer)
      on_stack |= strcmp(f->file->real_path, real) == 0;
    if (on_stack) {
      dl_error(cc, imp->loc, "import cycle: %s", cycle_text(cc, &frame, real));
      continue;
    }
    if (find_loaded(root, real)) continue;
    const DlSource *src = dl_source_load(cc, path, imp->loc);
    if (!src) continue;
    DlAstFile *ast = nnl_parse_source(cc, src);
    ast->real_path = real;
    DL_ARENA_GROW(cc->arena, root->loaded, root->nloaded, root->loaded_cap);
    root->loaded[root->nloaded++] = ast;
    load_imports(cc, root, ast, &frame);
  }
}

void nnl_load_imports(DlCompiler *cc, DlAstFile *root, DlAstFile *file) {
  if (!root->real_path) root->real_path = canonical(cc, root->path);
  load_imports(cc, root, file, NULL);
}
