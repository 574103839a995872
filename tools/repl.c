/* repl.c - `dlcc repl`: an interactive prompt for the .nnl language.
 *
 * Every expression typed is compiled through the whole pipeline (frontend,
 * IR, planner, LLVM JIT) and run at once.  The session keeps what the user
 * defined:
 *
 *   - tensors (`a = [[1, 2], [3, 4]]`, `b = a @ a`): the value, computed when
 *     the line was typed, like a variable in Python;
 *   - parameters (`param W : [2, 2] = xavier`): the declaration as typed and
 *     the current values (initialised from the seed, changed by training);
 *   - models, train blocks, and any other top-level block (`def`, `import`)
 *     as source text.
 *
 * For each line the REPL synthesises a small .nnl file: the top-level
 * definitions, then a model `__repl` that declares the session's values the
 * line uses (tensors as literal constants, parameters by their declaration)
 * followed by `__value = <the line>`, and compiles it with the ordinary
 * pipeline.  Parameter values are copied into the compiled program by name
 * (and back after training).  A model typed or loaded in the session sees
 * the session's tensors and parameters the same way, unless it declares the
 * name itself.  Locations in the synthesised text map back to the line typed
 * (repl.h), so errors read exactly like the compiler's, and a failed line
 * changes nothing.
 *
 * Line editing, history and completion come from libedit (BSD licence) when
 * standard input is a terminal; otherwise lines are read plainly and no
 * prompt is printed, so `dlcc repl < session.nnl` runs a script.
 */
#include "repl.h"

#include <editline/readline.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char repl_usage[] =
    "usage: dlcc repl [FILE.nnl] [options]\n"
    "\n"
    "An interactive prompt for the .nnl language.  Type an expression to compile\n"
    "it with the JIT and print its value and shape; name tensors (a = [[1, 2]]),\n"
    "declare parameters (param W : [2, 2] = xavier), define models and train\n"
    "blocks (continued over lines until their braces close), and use them in\n"
    "later lines.  Commands start with ':' (:help lists them): gradients, the IR,\n"
    "LLVM IR, assembly and PTX of any expression, timing, training with progress,\n"
    "one training step explained by hand, checkpoints.\n"
    "\n"
    "With a terminal: line editing, history (kept in ~/.dlcc_history, or the file\n"
    "named by DLCC_HISTORY; an empty DLCC_HISTORY keeps none) and tab completion.\n"
    "Without one (dlcc repl < script.nnl) the lines are run without prompts.\n"
    "Ctrl-C stops a training run at the end of the current epoch, or discards the\n"
    "line being typed; Ctrl-D or :quit leaves.\n"
    "\n"
    "options:\n"
    "  FILE.nnl     load a file's models and train blocks first (as :load)\n"
    "  --seed S     seed for initialising parameters (default 0)\n";

static const char repl_commands[] =
    "Type a statement or an expression of the .nnl language; a block continues\n"
    "until its braces close.\n"
    "  EXPR                        evaluate it (JIT) and print its value and shape\n"
    "  NAME = EXPR                 name a tensor (it keeps the value it has now)\n"
    "  param NAME : [dims] = init  a trainable parameter\n"
    "  model NAME { ... }          a model; it may use the tensors and parameters above\n"
    "  train NAME { ... }          its training settings\n"
    "commands:\n"
    "  :grad EXPR wrt NAME         gradient of EXPR (its sum, if not a scalar) with\n"
    "                              respect to the tensor or parameter NAME\n"
    "  :ir EXPR|MODEL              the tensor IR\n"
    "  :ir-grad EXPR|MODEL         with the backward pass (of EXPR's sum, with respect\n"
    "                              to its parameters; for a model, and the update)\n"
    "  :llvm EXPR|MODEL            LLVM IR, optimised\n"
    "  :asm EXPR|MODEL             host assembly\n"
    "  :ptx EXPR|MODEL             PTX for NVIDIA GPUs\n"
    "  :time EXPR                  compile time and run time, separately\n"
    "  :load FILE.nnl              load the models and train blocks of a file\n"
    "  :train MODEL [options]      train with the train block's settings; options\n"
    "                              --epochs N --lr X --batch B --seed S -v -q\n"
    "  :explain MODEL [options]    one training step worked by hand (--batch B --lr X)\n"
    "  :params [MODEL]             parameter values: the session's, or a model's\n"
    "  :list                       what the session holds\n"
    "  :save FILE [MODEL]          parameters to a safetensors checkpoint\n"
    "  :restore FILE [MODEL]       parameters from one\n"
    "  :reset                      forget everything\n"
    "  :help                       this text\n"
    "  :quit                       leave (also Ctrl-D)\n"
    "Ctrl-C stops training at the end of the current epoch, or discards the line.\n";

/* ---- the session ---- */

typedef enum ValueKind { VALUE_TENSOR, VALUE_PARAM } ValueKind;

typedef struct Value {
  char *name;
  ValueKind kind;
  int rank;
  int64_t dims[DL_MAX_RANK];
  int64_t numel;
  float *data;
  char *decl;   /* VALUE_PARAM: its declaration as typed */
  DlLoc origin; /* where it was defined (of decl, for a parameter) */
} Value;

typedef enum BlockKind { BLOCK_MODEL, BLOCK_TRAIN, BLOCK_OTHER } BlockKind;

typedef struct Block {
  BlockKind kind;
  char *name; /* model and train: the model's name; other: "def NAME", "import PATH" */
  char *text;
  DlLoc origin;
  DlrtStFile state; /* a model's own parameters, once trained or restored */
} Block;

typedef struct BlockList {
  Block *items;
  int n, cap;
} BlockList;

typedef struct LoadedFile {
  char *path;
  char *text;
  size_t len;
} LoadedFile;

typedef struct Repl {
  const char *input_name; /* "<stdin>": what diagnostics call typed lines */
  char *transcript;       /* every line read, for quoting them in diagnostics */
  size_t tlen, tcap;
  int nlines;
  LoadedFile *files;
  int nfiles, cap_files;
  Value *values;
  int nvalues, cap_values;
  BlockList blocks;
  uint64_t seed;
  bool interactive;
  bool color;
  bool quit;
  char *history; /* NULL: none */
} Repl;

/* SIGINT sets this; training checks it after each epoch, the prompt discards
 * the line being typed. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

static void catch_sigint(struct sigaction *old) {
  struct sigaction sa = {0};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, old);
}

/* Completion runs inside libedit, which has no user pointer. */
static Repl *completion_repl;

static void *xrealloc(void *p, size_t size) {
  void *q = realloc(p, size ? size : 1);
  if (!q) {
    fputs("dlcc: error: out of memory\n", stderr);
    abort();
  }
  return q;
}

static char *xstrndup(const char *s, size_t n) {
  char *d = xrealloc(NULL, n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

#define GROW(ptr, count, cap)                                                                      \
  do {                                                                                             \
    if ((count) >= (cap)) {                                                                        \
      (cap) = (cap) ? (cap)*2 : 16;                                                                \
      (ptr) = xrealloc((ptr), sizeof(*(ptr)) * (size_t)(cap));                                     \
    }                                                                                              \
  } while (0)

static Value *find_value(Repl *R, const char *name, size_t len) {
  for (int i = 0; i < R->nvalues; i++)
    if (strlen(R->values[i].name) == len && !memcmp(R->values[i].name, name, len))
      return &R->values[i];
  return NULL;
}

static void value_free(Value *v) {
  free(v->name);
  free(v->data);
  free(v->decl);
}

static Block *find_block(BlockList *bl, BlockKind kind, const char *name) {
  for (int i = 0; i < bl->n; i++)
    if (bl->items[i].kind == kind && !strcmp(bl->items[i].name, name)) return &bl->items[i];
  return NULL;
}

static void block_free(Block *b) {
  free(b->name);
  free(b->text);
  dlrt_safetensors_free(&b->state);
}

static void add_transcript_line(Repl *R, const char *line) {
  size_t n = strlen(line);
  if (R->tlen + n + 2 > R->tcap) {
    R->tcap = (R->tlen + n + 2) * 2;
    R->transcript = xrealloc(R->transcript, R->tcap);
  }
  memcpy(R->transcript + R->tlen, line, n);
  R->tlen += n;
  R->transcript[R->tlen++] = '\n';
  R->transcript[R->tlen] = '\0';
  R->nlines++;
}

/* A compiler context that can quote every line the session has seen. */
static DlCompiler *repl_compiler(Repl *R) {
  DlCompiler *cc = dl_compiler_new();
  driver_add_import_dirs(cc); /* import "std/nn.nnl" works here as in files */
  dl_source_add(cc, R->input_name, R->transcript ? R->transcript : "", R->tlen);
  for (int i = 0; i < R->nfiles; i++)
    dl_source_add(cc, R->files[i].path, R->files[i].text, R->files[i].len);
  return cc;
}

/* An error of the REPL's own, at a place the user wrote. */
static void repl_error(Repl *R, DlLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void repl_error(Repl *R, DlLoc loc, const char *fmt, ...) {
  DlCompiler *cc = repl_compiler(R);
  va_list ap;
  va_start(ap, fmt);
  dl_diag_v(cc, DL_SEV_ERROR, loc, fmt, ap);
  va_end(ap);
  fflush(stdout);
  dl_diag_render(cc, stderr, R->color);
  dl_compiler_free(cc);
}

static bool reserved_name(const char *name) {
  return name[0] == '_' && name[1] == '_';
}

/* ---- names a piece of text uses ---- */

typedef struct NameSet {
  const char **names;
  int *lens;
  int n, cap;
} NameSet;

static bool nameset_has(const NameSet *s, const char *name) {
  size_t len = strlen(name);
  for (int i = 0; i < s->n; i++)
    if ((size_t)s->lens[i] == len && !memcmp(s->names[i], name, len)) return true;
  return false;
}

static void nameset_add(NameSet *s, const char *name, int len) {
  int cap = s->cap;
  GROW(s->names, s->n, s->cap);
  if (cap != s->cap) s->lens = xrealloc(s->lens, sizeof(int) * (size_t)s->cap);
  s->names[s->n] = name;
  s->lens[s->n++] = len;
}

static void nameset_free(NameSet *s) {
  free(s->names);
  free(s->lens);
  memset(s, 0, sizeof *s);
}

/* Every identifier in the text. */
static void names_used(const ReplText *t, NameSet *out) {
  ReplTokens toks;
  repl_scan(t->text, t->len, &toks);
  for (int i = 0; i < toks.n; i++)
    if (toks.items[i].kind == RT_IDENT)
      nameset_add(out, t->text + toks.items[i].offset, toks.items[i].len);
  repl_tokens_free(&toks);
}

/* The names a model block declares or assigns: after '{', a newline or ';'
 * directly inside the block, `input X`, `target X`, `param X` or `X =`. */
static void names_defined_in_block(const ReplText *t, NameSet *out) {
  ReplTokens toks;
  repl_scan(t->text, t->len, &toks);
  const char *s = t->text;
  for (int i = 1; i + 1 < toks.n; i++) {
    const ReplTok *prev = &toks.items[i - 1], *tok = &toks.items[i], *next = &toks.items[i + 1];
    bool start = tok->depth == 1 && (prev->kind == RT_NEWLINE || repl_tok_is(s, prev, ";") ||
                                     repl_tok_is(s, prev, "{"));
    if (!start || tok->kind != RT_IDENT) continue;
    if ((repl_tok_is(s, tok, "input") || repl_tok_is(s, tok, "target") ||
         repl_tok_is(s, tok, "param")) &&
        next->kind == RT_IDENT)
      nameset_add(out, s + next->offset, next->len);
    else if (repl_tok_is(s, next, "="))
      nameset_add(out, s + tok->offset, tok->len);
  }
  repl_tokens_free(&toks);
}

/* ---- compiling synthesised source ---- */

/* One compilation: a Session on synthesised source that maps its
 * locations back. */
typedef struct Unit {
  Repl *R;
  Session s;
  ReplSynth syn;
  char *name;          /* the synthesised file's name */
  const char **params; /* session values declared as parameters here */
  int nparams, cap_params;
  Block *model;   /* a model unit: its block */
  double t_lower; /* seconds, for :time */
  bool quiet;     /* compile errors are not reported */
} Unit;

static void unit_report_hook(Session *s) {
  Unit *u = s->user;
  for (int i = 0; i < s->cc->ndiags; i++)
    s->cc->diags[i].loc = synth_map(&u->syn, s->cc->diags[i].loc);
  fflush(stdout);
}

/* dir: a file whose directory relative paths in the text (csv(...),
 * import) are resolved against, or NULL for the current directory. */
static void unit_begin(Unit *u, Repl *R, DlLoc fallback, const char *dir_of) {
  memset(u, 0, sizeof *u);
  u->R = R;
  const char *slash = dir_of ? strrchr(dir_of, '/') : NULL;
  if (slash) {
    int n = (int)(slash - dir_of);
    u->name = xrealloc(NULL, (size_t)n + 16);
    snprintf(u->name, (size_t)n + 16, "%.*s/<repl>", n, dir_of);
  } else {
    u->name = xstrndup("<repl>", 6);
  }
  synth_init(&u->syn, u->name, fallback);
  u->s.cc = repl_compiler(R);
  u->s.color = R->color;
  u->s.before_report = unit_report_hook;
  u->s.user = u;
}

static void unit_free(Unit *u) {
  session_free(&u->s);
  synth_free(&u->syn);
  free(u->params);
  free(u->name);
  memset(u, 0, sizeof *u);
}

static void unit_add_other_blocks(Unit *u, const BlockList *bl) {
  for (int i = 0; i < bl->n; i++)
    if (bl->items[i].kind == BLOCK_OTHER) {
      ReplText t = {bl->items[i].text, strlen(bl->items[i].text), bl->items[i].origin};
      synth_add(&u->syn, &t);
      synth_printf(&u->syn, "\n");
    }
}

/* Nine significant digits: a float read back from them is the same float. */
static void print_literal(ReplSynth *syn, const Value *v, int axis, int64_t *at) {
  if (axis == v->rank) {
    char num[32];
    int n = snprintf(num, sizeof num, "%.9g", (double)v->data[(*at)++]);
    synth_write(syn, num, (size_t)n);
    return;
  }
  synth_write(syn, "[", 1);
  for (int64_t i = 0; i < v->dims[axis]; i++) {
    if (i) synth_write(syn, ", ", 2);
    print_literal(syn, v, axis + 1, at);
  }
  synth_write(syn, "]", 1);
}

static bool all_finite(const Value *v) {
  for (int64_t i = 0; i < v->numel; i++)
    if (!isfinite(v->data[i])) return false;
  return true;
}

/* Declare the session values that `uses` names (except those in `except`):
 * parameters by their declaration, tensors as literal constants, and
 * `as_param` (or a tensor holding inf or nan, which no literal can) as a
 * parameter whose values are copied in. */
static bool unit_declare_values(Unit *u, const NameSet *uses, const NameSet *except,
                                const char *as_param, bool in_model, DlLoc where) {
  Repl *R = u->R;
  for (int i = 0; i < R->nvalues; i++) {
    const Value *v = &R->values[i];
    if (!nameset_has(uses, v->name) || (except && nameset_has(except, v->name))) continue;
    bool force = as_param && v->kind == VALUE_TENSOR && !strcmp(as_param, v->name);
    if (v->kind == VALUE_PARAM && !force) {
      ReplText decl = {v->decl, strlen(v->decl), v->origin};
      synth_add(&u->syn, &decl);
      synth_printf(&u->syn, "\n");
    } else if (force || !all_finite(v)) {
      if (!force && in_model) {
        repl_error(R, where, "tensor '%s' holds inf or nan values; a model cannot use it", v->name);
        return false;
      }
      char dims[160];
      synth_printf(&u->syn, "param %s : %s = 0\n", v->name,
                   dims_str(dims, sizeof dims, v->rank, v->dims));
    } else {
      synth_printf(&u->syn, "%s = ", v->name);
      int64_t at = 0;
      print_literal(&u->syn, v, 0, &at);
      synth_printf(&u->syn, "\n");
      continue;
    }
    GROW(u->params, u->nparams, u->cap_params);
    u->params[u->nparams++] = v->name;
  }
  return true;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Parse and lower the synthesised text; node locations are mapped back to
 * the origin so later stages (and explain) point at what the user wrote. */
static bool unit_lower(Unit *u, const char *model) {
  double t0 = now_seconds();
  Session *s = &u->s;
  s->ast = dl_parse_string(s->cc, u->name, u->syn.text.s ? u->syn.text.s : "");
  if (s->ast && !dl_failed(s->cc)) s->graph = dl_lower(s->cc, s->ast, model, &s->train);
  if (!s->graph || dl_failed(s->cc)) {
    if (!u->quiet) driver_report(s);
    return false;
  }
  DlGraph *g = s->graph;
  for (int i = 0; i < g->nnodes; i++)
    g->nodes[i].loc = synth_map(&u->syn, g->nodes[i].loc);
  DlTrainSpec *t = &s->train;
  t->loc = synth_map(&u->syn, t->loc);
  t->optimizer_loc = synth_map(&u->syn, t->optimizer_loc);
  t->data.loc = synth_map(&u->syn, t->data.loc);
  for (int i = 0; i < t->data.nfields; i++)
    t->data.fields[i].loc = synth_map(&u->syn, t->data.fields[i].loc);
  u->t_lower = now_seconds() - t0;
  return true;
}

/* Copy the session's values (and a model's own trained parameters) into a
 * context. */
static int unit_set_params(void *user, DlrtContext *ctx, DlrtError *err) {
  Unit *u = user;
  for (int i = 0; i < u->nparams; i++) {
    const Value *v = find_value(u->R, u->params[i], strlen(u->params[i]));
    if (v && dlrt_set(ctx, v->name, v->data, v->numel, err) != 0) return -1;
  }
  if (!u->model) return 0;
  const DlrtStFile *st = &u->model->state;
  for (int i = 0; i < st->ntensors; i++) {
    int t = dlrt_find(ctx->prog, st->tensors[i].name, DLRT_ROLE_PARAM);
    if (t >= 0 && dlrt_numel(&ctx->prog->tensors[t], 1) == st->tensors[i].numel &&
        dlrt_set(ctx, st->tensors[i].name, st->tensors[i].data, st->tensors[i].numel, err) != 0)
      return -1;
  }
  return 0;
}

/* After training: session parameters get their new values, the model keeps
 * its own. */
static void unit_take_params(Unit *u, Block *model, DlrtContext *ctx) {
  const DlrtProgram *p = ctx->prog;
  int nown = 0;
  for (int t = 0; t < p->ntensors; t++) {
    const DlrtTensor *tt = &p->tensors[t];
    if (tt->role != DLRT_ROLE_PARAM) continue;
    bool session = false;
    for (int i = 0; i < u->nparams; i++)
      session |= !strcmp(u->params[i], tt->name);
    Value *v = session ? find_value(u->R, tt->name, strlen(tt->name)) : NULL;
    if (v && v->numel == dlrt_numel(tt, 1))
      memcpy(v->data, dlrt_data(ctx, t), sizeof(float) * (size_t)v->numel);
    else if (!session)
      nown++;
  }
  dlrt_safetensors_free(&model->state);
  model->state.tensors = xrealloc(NULL, sizeof(DlrtStTensor) * (size_t)(nown + 1));
  for (int t = 0; t < p->ntensors; t++) {
    const DlrtTensor *tt = &p->tensors[t];
    bool session = false;
    for (int i = 0; i < u->nparams; i++)
      session |= !strcmp(u->params[i], tt->name);
    if (tt->role != DLRT_ROLE_PARAM || session) continue;
    DlrtStTensor *st = &model->state.tensors[model->state.ntensors++];
    memset(st, 0, sizeof *st);
    st->name = xstrndup(tt->name, strlen(tt->name));
    st->rank = tt->rank;
    memcpy(st->dims, tt->dims, sizeof st->dims);
    st->numel = dlrt_numel(tt, 1);
    st->data = xrealloc(NULL, sizeof(float) * (size_t)(st->numel + 1));
    memcpy(st->data, dlrt_data(ctx, t), sizeof(float) * (size_t)st->numel);
  }
}

/* ---- expressions ---- */

typedef enum ExprMode {
  EXPR_VALUE, /* run forward, print the value */
  EXPR_STORE, /* run forward, keep the value */
  EXPR_GRAD,  /* the gradient of the sum with respect to a name */
  EXPR_IR,
  EXPR_IR_GRAD,
  EXPR_LLVM,
  EXPR_ASM,
  EXPR_PTX,
  EXPR_TIME,
} ExprMode;

/* The model `__repl` whose output is the expression, or for `NAME = EXPR`
 * (`assign`) the statement itself when EXPR does not use NAME: then
 * parameters that a call creates inside it are named after NAME, as in a
 * model. */
static bool unit_for_expr(Unit *u, Repl *R, const ReplText *expr, const char *as_param,
                          const ReplText *assign, const char *assign_name) {
  unit_begin(u, R, expr->origin, NULL);
  unit_add_other_blocks(u, &R->blocks);
  synth_printf(&u->syn, "model __repl {\n");
  NameSet uses = {0};
  names_used(expr, &uses);
  bool ok = unit_declare_values(u, &uses, NULL, as_param, false, expr->origin);
  bool direct = assign && !nameset_has(&uses, assign_name);
  nameset_free(&uses);
  if (!ok) return false;
  if (direct) {
    synth_add(&u->syn, assign);
  } else {
    synth_printf(&u->syn, "__value = ");
    synth_add(&u->syn, expr);
  }
  /* `output` because a session tensor called `out` would otherwise be the
   * model's output. */
  synth_printf(&u->syn, "\noutput %s\n}\n", direct ? assign_name : "__value");
  return unit_lower(u, "__repl");
}

static void print_value(const float *data, int rank, const int64_t *dims) {
  TensorValues v = {.f32 = data, .rank = rank, .dims = dims};
  char *text = tensor_to_string(&v, &tensor_format_repl, 0);
  char shape[160];
  printf("%s  : f32%s\n", text ? text : "", dims_str(shape, sizeof shape, rank, dims));
  free(text);
}

/* Make the gradient of the expression's sum the graph's loss. */
static bool add_sum_loss(Unit *u) {
  DlGraph *g = u->s.graph;
  DlNodeId out = g->output;
  const DlNode *nd = &g->nodes[out];
  g->loss = nd->shape.rank == 0 ? out : dl_reduce(g, DL_OP_SUM, nd->loc, out, 0, false);
  if (g->loss == DL_NONE || !dl_autodiff(g)) {
    driver_report(&u->s);
    return false;
  }
  return true;
}

static void print_text(const char *text) {
  fputs(text, stdout);
  size_t n = strlen(text);
  if (n && text[n - 1] != '\n') fputc('\n', stdout);
}

static bool emit_code(Unit *u, ExprMode mode) {
  DlCodegenOptions co = {.target = mode == EXPR_PTX ? DL_TARGET_NVPTX : DL_TARGET_CPU,
                         .opt_level = 3};
  const char *text = mode == EXPR_LLVM  ? dl_emit_llvm_ir(u->s.cc, u->s.prog, &co)
                     : mode == EXPR_ASM ? dl_emit_asm(u->s.cc, u->s.prog, &co)
                                        : dl_emit_ptx(u->s.cc, u->s.prog, &co);
  if (!text) {
    driver_report(&u->s);
    return false;
  }
  print_text(text);
  return true;
}

static Value *store_value(Repl *R, const char *name, ValueKind kind, int rank, const int64_t *dims,
                          const float *data, const char *decl, DlLoc origin) {
  Value *v = find_value(R, name, strlen(name));
  if (v) {
    value_free(v);
  } else {
    GROW(R->values, R->nvalues, R->cap_values);
    v = &R->values[R->nvalues++];
  }
  memset(v, 0, sizeof *v);
  v->name = xstrndup(name, strlen(name));
  v->kind = kind;
  v->rank = rank;
  v->numel = 1;
  for (int i = 0; i < rank; i++) {
    v->dims[i] = dims[i];
    v->numel *= dims[i];
  }
  v->data = xrealloc(NULL, sizeof(float) * (size_t)(v->numel + 1));
  memcpy(v->data, data, sizeof(float) * (size_t)v->numel);
  v->decl = decl ? xstrndup(decl, strlen(decl)) : NULL;
  v->origin = origin;
  return v;
}

static bool check_loss_shape(Repl *R, const char *name, int rank, DlLoc loc);

/* Evaluate an expression in one of the modes.  `name`: the tensor to store
 * (EXPR_STORE, `stmt` is the whole `NAME = EXPR`) or the one to
 * differentiate by (EXPR_GRAD, EXPR_IR_GRAD). */
static bool eval_expr(Repl *R, const ReplText *expr, ExprMode mode, const char *name,
                      DlLoc name_loc, const ReplText *stmt) {
  Unit u;
  bool ok = false;
  DlrtContext *ctx = NULL;
  bool grad = mode == EXPR_GRAD || (mode == EXPR_IR_GRAD && name);
  double t0 = now_seconds();
  bool store = mode == EXPR_STORE;
  if (!unit_for_expr(&u, R, expr, grad ? name : NULL, store ? stmt : NULL, store ? name : NULL))
    goto done;
  DlGraph *g = u.s.graph;
  DlNodeId wrt = DL_NONE;
  if (grad) {
    for (DlNodeId id = 0; id < g->nnodes; id++)
      if (g->nodes[id].op == DL_OP_PARAM && !strcmp(g->nodes[id].name, name)) wrt = id;
  }
  if (mode == EXPR_IR_GRAD && !name) {
    bool any = false;
    for (DlNodeId id = 0; id < g->nnodes; id++)
      any |= g->nodes[id].op == DL_OP_PARAM;
    if (!any) {
      repl_error(R, expr->origin,
                 "this expression uses no parameters, so it has no gradient to show (declare one "
                 "with 'param', or name a tensor: :ir-grad EXPR wrt NAME)");
      goto done;
    }
  }
  const DlNode *out = &g->nodes[g->output];
  bool summed = out->shape.rank > 0;
  if ((grad || mode == EXPR_IR_GRAD) && !add_sum_loss(&u)) goto done;
  double t1 = now_seconds();
  u.s.prog = dl_plan(g, 1);
  if (!u.s.prog || dl_failed(u.s.cc)) {
    driver_report(&u.s);
    goto done;
  }
  double t2 = now_seconds();
  switch (mode) {
  case EXPR_IR:
    dl_graph_print(g, NULL, stdout);
    ok = true;
    goto done;
  case EXPR_IR_GRAD:
    dl_graph_print(g, u.s.prog->live, stdout);
    ok = true;
    goto done;
  case EXPR_LLVM:
  case EXPR_ASM:
  case EXPR_PTX: ok = emit_code(&u, mode); goto done;
  case EXPR_VALUE:
  case EXPR_STORE:
  case EXPR_GRAD:
  case EXPR_TIME: break;
  }
  DriverOptions o;
  options_init(&o);
  if (!session_jit(&u.s, &o)) goto done;
  double t3 = now_seconds();
  DlrtError err = {{0}};
  ctx = dlrt_context_new(u.s.rt, R->seed, &err);
  bool has_grad = grad && wrt != DL_NONE && g->grad && g->grad[wrt] != DL_NONE;
  if (!ctx || unit_set_params(&u, ctx, &err) != 0 ||
      (has_grad ? dlrt_run_grad(ctx, 1, &err) : dlrt_run_forward(ctx, 1, &err)) != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  int oi = dlrt_find_role(u.s.rt, DLRT_ROLE_OUTPUT);
  const DlrtTensor *ot = &u.s.rt->tensors[oi];
  if (mode == EXPR_STORE) {
    if (!check_loss_shape(R, name, ot->rank, name_loc)) goto done;
    store_value(R, name, VALUE_TENSOR, ot->rank, ot->dims, dlrt_data(ctx, oi), NULL, name_loc);
  } else if (mode == EXPR_GRAD) {
    const Value *v = find_value(R, name, strlen(name));
    int gi = dlrt_find(u.s.rt, name, DLRT_ROLE_GRAD);
    char shape[160];
    if (summed)
      printf("(the expression is f32%s, not a scalar: this is the gradient of its sum)\n",
             dims_str(shape, sizeof shape, ot->rank, ot->dims));
    if (gi < 0 || !has_grad) {
      printf("(the expression does not depend on '%s': the gradient is zero)\n", name);
      float *zero = calloc((size_t)v->numel + 1, sizeof(float));
      printf("d/d%s = ", name);
      print_value(zero, v->rank, v->dims);
      free(zero);
    } else {
      printf("d/d%s = ", name);
      print_value(dlrt_data(ctx, gi), v->rank, v->dims);
    }
  } else {
    print_value(dlrt_data(ctx, oi), ot->rank, ot->dims);
  }
  if (mode == EXPR_TIME) {
    /* Run until a tenth of a second has passed, for a stable mean. */
    int64_t runs = 0;
    double r0 = now_seconds(), r1 = r0;
    while (r1 - r0 < 0.1 && runs < 10000000) {
      for (int k = 0; k < 100; k++)
        dlrt_run_forward(ctx, 1, NULL);
      runs += 100;
      r1 = now_seconds();
    }
    double per = (r1 - r0) / (double)runs;
    /* Writing the source includes printing the session's tensors used as
     * literals: it grows with their size. */
    printf("compile %.1f ms (source %.1f ms, parse and lower %.1f ms, plan %.1f ms, LLVM and JIT "
           "%.1f ms)\n",
           1e3 * (t3 - t0), 1e3 * (t1 - t0 - u.t_lower), 1e3 * u.t_lower, 1e3 * (t2 - t1),
           1e3 * (t3 - t2));
    printf("run %.3g %s per call (mean of %lld calls)\n",
           per < 1e-6   ? 1e9 * per
           : per < 1e-3 ? 1e6 * per
                        : 1e3 * per,
           per < 1e-6   ? "ns"
           : per < 1e-3 ? "us"
                        : "ms",
           (long long)runs);
  }
  ok = true;
done:
  dlrt_context_free(ctx);
  unit_free(&u);
  return ok;
}

/* ---- statements ---- */

static bool check_new_name(Repl *R, const char *name, DlLoc loc) {
  if (reserved_name(name)) {
    repl_error(R, loc, "names starting with '__' are reserved for the REPL");
    return false;
  }
  return true;
}

/* `loss` is the loss wherever a model sees it, so it must be a scalar. */
static bool check_loss_shape(Repl *R, const char *name, int rank, DlLoc loc) {
  if (strcmp(name, "loss") != 0 || rank == 0) return true;
  repl_error(R, loc,
             "'loss' must be a scalar (in a model it is the loss); give this tensor another name");
  return false;
}

static void define_tensor(Repl *R, const ReplText *st, const ReplTokens *toks) {
  const ReplTok *name_tok = &toks->items[0];
  char *name = xstrndup(st->text + name_tok->offset, (size_t)name_tok->len);
  DlLoc loc = repl_text_loc(st, name_tok->offset);
  const ReplTok *eq = &toks->items[1];
  ReplText expr = repl_text_slice(st, eq->offset + 1, st->len);
  /* The value is stored only if everything succeeded: a failed line
   * changes nothing. */
  if (check_new_name(R, name, loc)) eval_expr(R, &expr, EXPR_STORE, name, loc, st);
  free(name);
}

static void define_param(Repl *R, const ReplText *st, const ReplTokens *toks) {
  if (toks->n < 2 || toks->items[1].kind != RT_IDENT) {
    /* Let the compiler report the syntax error. */
    Unit u;
    unit_begin(&u, R, st->origin, NULL);
    synth_printf(&u.syn, "model __repl {\n");
    synth_add(&u.syn, st);
    synth_printf(&u.syn, "\n}\n");
    unit_lower(&u, "__repl");
    unit_free(&u);
    return;
  }
  char *name = xstrndup(st->text + toks->items[1].offset, (size_t)toks->items[1].len);
  DlLoc loc = repl_text_loc(st, toks->items[1].offset);
  Unit u;
  ParamTable pt = {0};
  DlrtContext *ctx = NULL;
  if (!check_new_name(R, name, loc)) goto done;
  unit_begin(&u, R, st->origin, NULL);
  unit_add_other_blocks(&u, &R->blocks);
  synth_printf(&u.syn, "model __repl {\n");
  synth_add(&u.syn, st);
  synth_printf(&u.syn, "\n}\n");
  if (!unit_lower(&u, "__repl")) goto free_unit;
  DlGraph *g = u.s.graph;
  DlNodeId id = DL_NONE;
  for (DlNodeId i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op == DL_OP_PARAM && !strcmp(g->nodes[i].name, name)) id = i;
  if (id == DL_NONE) goto free_unit;
  if (!check_loss_shape(R, name, g->nodes[id].shape.rank, loc)) goto free_unit;
  DlrtError err = {{0}};
  if (!param_table_init(&pt, g, g->nnodes, 1) ||
      !(ctx = dlrt_context_new(&pt.prog, R->seed, &err))) {
    driver_error("%s", err.msg);
    goto free_unit;
  }
  int t = dlrt_find(&pt.prog, name, DLRT_ROLE_PARAM);
  const DlrtTensor *tt = &pt.prog.tensors[t];
  char *decl = xstrndup(st->text, st->len);
  store_value(R, name, VALUE_PARAM, tt->rank, tt->dims, dlrt_data(ctx, t), decl, st->origin);
  free(decl);
free_unit:
  dlrt_context_free(ctx);
  param_table_free(&pt);
  unit_free(&u);
done:
  free(name);
}

/* ---- blocks ---- */

static char *block_name(const char *text, const ReplTokens *toks, BlockKind *kind) {
  const ReplTok *kw = &toks->items[0], *name = &toks->items[1];
  *kind = repl_tok_is(text, kw, "model")   ? BLOCK_MODEL
          : repl_tok_is(text, kw, "train") ? BLOCK_TRAIN
                                           : BLOCK_OTHER;
  if (*kind != BLOCK_OTHER)
    return name->kind == RT_IDENT ? xstrndup(text + name->offset, (size_t)name->len)
                                  : xstrndup("", 0);
  /* def NAME / import "path": the keyword and what follows it. */
  size_t n = (size_t)kw->len + 1 + (size_t)(name->kind != RT_END ? name->len : 0);
  char *key = xrealloc(NULL, n + 1);
  snprintf(key, n + 1, "%.*s %.*s", kw->len, text + kw->offset,
           name->kind != RT_END ? name->len : 0, text + name->offset);
  return key;
}

/* Model `name` with the session's values it uses declared in its body, and
 * its train block. */
static bool unit_for_model_train(Unit *u, Repl *R, BlockList *bl, const char *name, DlLoc where,
                                 bool with_train, bool quiet) {
  Block *m = find_block(bl, BLOCK_MODEL, name);
  Block *t = with_train ? find_block(bl, BLOCK_TRAIN, name) : NULL;
  unit_begin(u, R, m ? m->origin : where, t ? t->origin.file : m ? m->origin.file : NULL);
  u->model = m;
  unit_add_other_blocks(u, bl);
  if (m) {
    ReplText text = {m->text, strlen(m->text), m->origin};
    ReplTokens toks;
    repl_scan(text.text, text.len, &toks);
    int open = 0;
    while (open < toks.n && !repl_tok_is(text.text, &toks.items[open], "{"))
      open++;
    size_t body = open < toks.n ? toks.items[open].offset + 1 : text.len;
    repl_tokens_free(&toks);
    ReplText head = {text.text, body, text.origin};
    ReplText rest = {text.text + body, text.len - body, repl_text_loc(&text, body)};
    synth_add(&u->syn, &head);
    synth_printf(&u->syn, "\n");
    NameSet uses = {0}, defined = {0};
    names_used(&rest, &uses);
    names_defined_in_block(&text, &defined);
    bool ok = unit_declare_values(u, &uses, &defined, NULL, true, m->origin);
    nameset_free(&uses);
    nameset_free(&defined);
    if (!ok) return false;
    synth_add(&u->syn, &rest);
    synth_printf(&u->syn, "\n");
  }
  if (t) {
    ReplText text = {t->text, strlen(t->text), t->origin};
    synth_add(&u->syn, &text);
    synth_printf(&u->syn, "\n");
  }
  u->quiet = quiet;
  return unit_lower(u, name);
}

static bool unit_for_model(Unit *u, Repl *R, BlockList *bl, const char *name, DlLoc where) {
  return unit_for_model_train(u, R, bl, name, where, true, false);
}

/* Whether the model compiles with its train block (nothing reported). */
static bool train_block_fits(Repl *R, BlockList *bl, const char *name) {
  Unit u;
  bool ok = unit_for_model_train(&u, R, bl, name, DL_NOLOC, true, true);
  unit_free(&u);
  return ok;
}

static bool validate_block(Repl *R, BlockList *bl, const Block *b) {
  Unit u;
  bool ok;
  if (b->kind == BLOCK_OTHER) {
    unit_begin(&u, R, b->origin, b->origin.file);
    unit_add_other_blocks(&u, bl);
    synth_printf(&u.syn, "model __repl {\n}\n");
    ok = unit_lower(&u, "__repl");
  } else if (b->kind == BLOCK_TRAIN && !find_block(bl, BLOCK_MODEL, b->name)) {
    ReplTokens toks;
    repl_scan(b->text, strlen(b->text), &toks);
    ReplText text = {b->text, strlen(b->text), b->origin};
    DlLoc at = toks.n > 1 ? repl_text_loc(&text, toks.items[1].offset) : b->origin;
    repl_tokens_free(&toks);
    repl_error(R, at, "unknown model '%s' in train block (define the model first)", b->name);
    return false;
  } else if (b->kind == BLOCK_TRAIN) {
    ok = unit_for_model(&u, R, bl, b->name, b->origin);
  } else {
    /* A model is checked alone: a train block that no longer fits it is
     * kept (and reported) so the user can redefine it next. */
    ok = unit_for_model_train(&u, R, bl, b->name, b->origin, false, false);
    if (ok && find_block(bl, BLOCK_TRAIN, b->name) && !train_block_fits(R, bl, b->name)) {
      fflush(stdout);
      fprintf(stderr,
              "dlcc: warning: the train block of '%s' does not fit the new model; redefine it "
              "(:train %s shows why)\n",
              b->name, b->name);
    }
  }
  unit_free(&u);
  return ok;
}

/* Add blocks (replacing those with the same kind and name) if every one of
 * them compiles; otherwise change nothing. */
static bool define_blocks(Repl *R, Block *news, int nnew) {
  /* Two blocks of one file with the same name: the language's error. */
  for (int j = 1; j < nnew; j++)
    for (int i = 0; i < j; i++)
      if (news[i].kind == news[j].kind && !strcmp(news[i].name, news[j].name)) {
        DlCompiler *cc = repl_compiler(R);
        if (news[j].kind == BLOCK_MODEL)
          dl_error(cc, news[j].origin, "redefinition of model '%s'", news[j].name);
        else if (news[j].kind == BLOCK_TRAIN)
          dl_error(cc, news[j].origin, "model '%s' already has a train block", news[j].name);
        else
          dl_error(cc, news[j].origin, "redefinition of '%s'", news[j].name);
        dl_note(cc, news[i].origin, "previous definition is here");
        dl_diag_render(cc, stderr, R->color);
        dl_compiler_free(cc);
        for (int k = 0; k < nnew; k++)
          block_free(&news[k]);
        return false;
      }
  BlockList cand = {0};
  cand.cap = R->blocks.n + nnew + 1;
  cand.items = xrealloc(NULL, sizeof(Block) * (size_t)cand.cap);
  if (R->blocks.n > 0) memcpy(cand.items, R->blocks.items, sizeof(Block) * (size_t)R->blocks.n);
  cand.n = R->blocks.n;
  for (int i = 0; i < nnew; i++) {
    Block *old = find_block(&cand, news[i].kind, news[i].name);
    if (old)
      *old = news[i];
    else
      cand.items[cand.n++] = news[i];
  }
  bool ok = true;
  for (int i = 0; i < nnew && ok; i++)
    ok = validate_block(R, &cand, &news[i]);
  if (!ok) {
    for (int i = 0; i < nnew; i++)
      block_free(&news[i]);
    free(cand.items);
    return false;
  }
  /* Free what was replaced: blocks of the old list no longer in the new. */
  for (int i = 0; i < R->blocks.n; i++) {
    bool kept = false;
    for (int j = 0; j < cand.n && !kept; j++)
      kept = cand.items[j].text == R->blocks.items[i].text;
    if (!kept) block_free(&R->blocks.items[i]);
  }
  free(R->blocks.items);
  R->blocks = cand;
  return true;
}

static void define_block(Repl *R, const ReplText *st, const ReplTokens *toks) {
  Block b = {.text = xstrndup(st->text, st->len), .origin = st->origin};
  b.name = block_name(st->text, toks, &b.kind);
  define_blocks(R, &b, 1);
}

/* ---- :load ---- */

static void load_file(Repl *R, const char *path, DlLoc where) {
  DlCompiler *cc = repl_compiler(R);
  const DlSource *src = dl_source_load(cc, path, where);
  if (!src) {
    fflush(stdout);
    dl_diag_render(cc, stderr, R->color);
    dl_compiler_free(cc);
    return;
  }
  /* Syntax errors first, reported against the file itself. */
  DlAstFile *ast = dl_parse_file(cc, path);
  if (!ast || dl_failed(cc)) {
    fflush(stdout);
    dl_diag_render(cc, stderr, R->color);
    dl_compiler_free(cc);
    return;
  }
  GROW(R->files, R->nfiles, R->cap_files);
  LoadedFile *f = &R->files[R->nfiles++];
  f->path = xstrndup(path, strlen(path));
  f->text = xstrndup(src->text, src->len);
  f->len = src->len;
  dl_compiler_free(cc);

  ReplText file = {f->text, f->len, {f->path, 1, 1}};
  ReplTokens toks;
  repl_scan(file.text, file.len, &toks);
  /* Top-level blocks: from a keyword at depth 0 to the newline after its
   * braces close.  Others (def, import) first, then models, then train
   * blocks, so each validates against what it needs. */
  Block *blocks = xrealloc(NULL, sizeof(Block) * (size_t)(toks.n + 1));
  int nblocks = 0;
  for (int pass = 0; pass < 3; pass++) {
    int i = 0;
    while (i < toks.n) {
      const ReplTok *kw = &toks.items[i];
      if (kw->kind == RT_NEWLINE || repl_tok_is(file.text, kw, ";")) {
        i++;
        continue;
      }
      int j = i + 1;
      while (j < toks.n &&
             !(toks.items[j].depth == 0 &&
               (toks.items[j].kind == RT_NEWLINE || repl_tok_is(file.text, &toks.items[j], ";"))))
        j++;
      size_t end = j < toks.n ? toks.items[j].offset : file.len;
      ReplText st = repl_text_slice(&file, kw->offset, end);
      ReplTokens bt;
      repl_scan(st.text, st.len, &bt);
      BlockKind kind;
      char *name = block_name(st.text, &bt, &kind);
      repl_tokens_free(&bt);
      int want = kind == BLOCK_OTHER ? 0 : kind == BLOCK_MODEL ? 1 : 2;
      if (want == pass)
        blocks[nblocks++] = (Block){kind, name, xstrndup(st.text, st.len), st.origin, {0}};
      else
        free(name);
      i = j;
    }
  }
  repl_tokens_free(&toks);
  int nmodels = 0, ntrain = 0;
  for (int i = 0; i < nblocks; i++) {
    nmodels += blocks[i].kind == BLOCK_MODEL;
    ntrain += blocks[i].kind == BLOCK_TRAIN;
  }
  char **names = xrealloc(NULL, sizeof(char *) * (size_t)(nblocks + 1));
  for (int i = 0; i < nblocks; i++)
    names[i] =
        blocks[i].kind == BLOCK_MODEL ? xstrndup(blocks[i].name, strlen(blocks[i].name)) : NULL;
  if (define_blocks(R, blocks, nblocks)) {
    printf("loaded %s: ", path);
    if (nmodels == 0) printf("no models");
    for (int i = 0, k = 0; i < nblocks; i++)
      if (names[i]) printf("%smodel %s", k++ ? ", " : "", names[i]);
    if (ntrain) printf(" (%d with a train block)", ntrain);
    printf("\n");
  }
  for (int i = 0; i < nblocks; i++)
    free(names[i]);
  free(names);
  free(blocks);
}

/* ---- :train, :explain, :save, :restore ---- */

typedef struct TrainProgress {
  int64_t epochs;
  bool verbose, quiet;
  bool stopped;
} TrainProgress;

static int on_train_epoch(void *user, const DlrtEpochStats *st) {
  TrainProgress *p = user;
  int64_t every = p->epochs > 20 ? p->epochs / 10 : 1;
  bool show = p->verbose || st->epoch == 1 || st->epoch == p->epochs || st->epoch % every == 0 ||
              interrupted;
  if (show && !p->quiet) {
    printf("epoch %*lld/%lld  loss %.6f", p->epochs >= 1000 ? 5 : 3, (long long)st->epoch,
           (long long)p->epochs, st->loss);
    if (!isnan(st->accuracy)) printf("  accuracy %6.2f%%", 100.0 * st->accuracy);
    printf("  %.3fs\n", st->seconds);
    fflush(stdout);
  }
  if (interrupted) {
    p->stopped = true;
    printf("interrupted: training stopped after epoch %lld\n", (long long)st->epoch);
    return 1;
  }
  return 0;
}

/* The words after a command, split at blanks (no quoting). */
typedef struct Args {
  char **argv;
  int argc;
} Args;

static Args split_args(const char *cmd, const char *rest) {
  Args a = {0};
  char *copy = xstrndup(rest, strlen(rest));
  a.argv = xrealloc(NULL, sizeof(char *) * (strlen(rest) + 3));
  a.argv[a.argc++] = xstrndup(cmd, strlen(cmd));
  for (char *save = NULL, *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
    a.argv[a.argc++] = xstrndup(w, strlen(w));
  a.argv[a.argc] = NULL;
  free(copy);
  return a;
}

static void args_free(Args *a) {
  for (int i = 0; i < a->argc; i++)
    free(a->argv[i]);
  free(a->argv);
}

/* MODEL [options]: the options a command allows, in DriverOptions. */
static bool parse_model_args(Repl *R, Args *a, const char *allowed, DriverOptions *o,
                             const char **model) {
  options_init(o);
  *model = NULL;
  for (int i = 1; i < a->argc; i++) {
    int used = parse_common_option(o, a->argc, a->argv, i, allowed);
    if (used < 0) return false;
    if (used > 0) {
      i += used - 1;
      continue;
    }
    if (a->argv[i][0] == '-') {
      driver_error("unknown option '%s' for :%s (options: %s)", a->argv[i], a->argv[0], allowed);
      return false;
    }
    if (*model) {
      driver_error(":%s takes one model, got '%s' and '%s'", a->argv[0], *model, a->argv[i]);
      return false;
    }
    *model = a->argv[i];
  }
  if (!*model) {
    driver_error(":%s needs a model name", a->argv[0]);
    return false;
  }
  if (!find_block(&R->blocks, BLOCK_MODEL, *model)) {
    driver_error("no model named '%s' (define one, or :load a file)", *model);
    return false;
  }
  return true;
}

/* A model's parameters start from --seed, else its train block's seed, else
 * the session's. */
static uint64_t model_seed(const Unit *u, const DriverOptions *o) {
  if (o && o->seed >= 0) return (uint64_t)o->seed;
  return u->s.train.present ? u->s.train.seed : u->R->seed;
}

static void cmd_train_model(Repl *R, Args *a, DlLoc where) {
  DriverOptions o;
  const char *model;
  if (!parse_model_args(R, a, "--epochs --lr --batch --seed --verbose -v --quiet -q", &o, &model))
    return;
  Unit u;
  DlrtDataset ds = {0};
  DlrtContext *ctx = NULL;
  if (!unit_for_model(&u, R, &R->blocks, model, where)) goto done;
  Session *s = &u.s;
  if (!s->train.present) {
    driver_error("model '%s' has no train block (type 'train %s { ... }')", model, model);
    goto done;
  }
  if (s->graph->loss == DL_NONE) {
    driver_error("model '%s' has no 'loss' to train on", model);
    goto done;
  }
  if (!session_load_train_data(s, &ds)) goto done;
  int64_t batch = session_batch(s, &o);
  if (batch > ds.nrows) batch = ds.nrows;
  if (!session_plan(s, &o, batch) || !session_jit(s, &o)) goto done;
  DlrtError err = {{0}};
  if (!s->rt->train_step) {
    driver_error("model '%s' has no trainable parameters", model);
    goto done;
  }
  uint64_t seed = model_seed(&u, &o);
  ctx = dlrt_context_new(s->rt, seed, &err);
  if (!ctx || dlrt_dataset_check(s->rt, &ds, true, &err) != 0 ||
      unit_set_params(&u, ctx, &err) != 0 ||
      (o.lr > 0 && dlrt_set_hyper(ctx, "lr", (float)o.lr, &err) != 0)) {
    driver_error("%s", err.msg);
    goto done;
  }
  DlrtTrainOptions to = {.epochs = o.epochs > 0 ? o.epochs : s->train.epochs,
                         .batch = batch,
                         .seed = seed,
                         .shuffle = true};
  TrainProgress p = {.epochs = to.epochs, .verbose = o.verbose, .quiet = o.quiet};
  if (!o.quiet)
    printf("training %s: %lld rows, batch %lld, %lld epochs, lr %g%s\n", model, (long long)ds.nrows,
           (long long)batch, (long long)to.epochs, o.lr > 0 ? o.lr : s->train.lr,
           u.model->state.ntensors ? " (continuing from its current parameters)" : "");
  fflush(stdout);
  interrupted = 0;
  struct sigaction old_sigint;
  catch_sigint(&old_sigint);
  int rc = dlrt_train(ctx, &ds, &to, on_train_epoch, &p, &err);
  if (!R->interactive) sigaction(SIGINT, &old_sigint, NULL);
  interrupted = 0;
  /* Whatever was trained is kept, even after an error in a later epoch. */
  unit_take_params(&u, u.model, ctx);
  if (rc != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  /* The model as it is now, on all the data (the epoch losses above are
   * means over a changing model). */
  double loss = 0, acc = NAN;
  if (dlrt_evaluate(ctx, &ds, &loss, &acc, &err) == 0) {
    char accuracy[64] = "";
    if (!isnan(acc)) snprintf(accuracy, sizeof accuracy, ", accuracy %.2f%%", 100.0 * acc);
    printf("%s now: loss %.6f%s on the training data\n", model, loss, accuracy);
  } else {
    driver_error("%s", err.msg);
  }
done:
  dlrt_context_free(ctx);
  dlrt_dataset_free(&ds);
  unit_free(&u);
}

static void cmd_explain_model(Repl *R, Args *a, DlLoc where) {
  DriverOptions o;
  const char *model;
  if (!parse_model_args(R, a, "--batch --lr --seed", &o, &model)) return;
  Unit u;
  if (unit_for_model(&u, R, &R->blocks, model, where)) {
    ExplainParams ep = {.seed = model_seed(&u, &o), .set_params = unit_set_params, .user = &u};
    explain_step(&u.s, &o, &ep, stdout);
  }
  unit_free(&u);
}

/* A context holding model's parameters (initialised from the seed, then the
 * session's and the model's current values), without compiling code. */
static DlrtContext *model_params(Repl *R, Unit *u, const char *model, DlLoc where, ParamTable *pt) {
  bool train = train_block_fits(R, &R->blocks, model);
  if (!unit_for_model_train(u, R, &R->blocks, model, where, train, false)) return NULL;
  DlrtError err = {{0}};
  DlrtContext *ctx = NULL;
  if (!param_table_init(pt, u->s.graph, u->s.graph->nnodes, 1) ||
      !(ctx = dlrt_context_new(&pt->prog, model_seed(u, NULL), &err)) ||
      unit_set_params(u, ctx, &err) != 0) {
    driver_error("%s", err.msg);
    dlrt_context_free(ctx);
    return NULL;
  }
  return ctx;
}

static void cmd_save_restore(Repl *R, Args *a, bool save, DlLoc where) {
  if (a->argc < 2 || a->argc > 3) {
    driver_error("usage: :%s FILE [MODEL]", a->argv[0]);
    return;
  }
  const char *path = a->argv[1];
  DlrtError err = {{0}};
  if (a->argc == 3) {
    const char *model = a->argv[2];
    if (!find_block(&R->blocks, BLOCK_MODEL, model)) {
      driver_error("no model named '%s'", model);
      return;
    }
    Unit u;
    ParamTable pt = {0};
    DlrtContext *ctx = model_params(R, &u, model, where, &pt);
    if (ctx) {
      if (save ? dlrt_save(ctx, path, &err) != 0 : dlrt_load(ctx, path, &err) != 0) {
        driver_error("%s", err.msg);
      } else {
        if (!save) unit_take_params(&u, u.model, ctx);
        int n = 0;
        for (int t = 0; t < pt.prog.ntensors; t++)
          n += pt.prog.tensors[t].role == DLRT_ROLE_PARAM;
        printf("%s %d parameter%s of model %s %s %s\n", save ? "saved" : "restored", n,
               n == 1 ? "" : "s", model, save ? "to" : "from", path);
      }
    }
    dlrt_context_free(ctx);
    param_table_free(&pt);
    unit_free(&u);
    return;
  }
  if (save) {
    int n = 0;
    DlrtStTensor *ts = xrealloc(NULL, sizeof(DlrtStTensor) * (size_t)(R->nvalues + 1));
    for (int i = 0; i < R->nvalues; i++) {
      const Value *v = &R->values[i];
      if (v->kind != VALUE_PARAM) continue;
      ts[n] = (DlrtStTensor){.name = v->name, .rank = v->rank, .data = v->data, .numel = v->numel};
      memcpy(ts[n].dims, v->dims, sizeof v->dims);
      n++;
    }
    if (n == 0)
      driver_error("the session has no parameters to save (':save FILE MODEL' saves a model's)");
    else if (dlrt_safetensors_write(path, ts, n, &err) != 0)
      driver_error("%s", err.msg);
    else
      printf("saved %d parameter%s to %s\n", n, n == 1 ? "" : "s", path);
    free(ts);
    return;
  }
  DlrtStFile f;
  if (dlrt_safetensors_read(path, &f, &err) != 0) {
    driver_error("%s", err.msg);
    return;
  }
  /* All or nothing: every tensor must be a parameter of the session with
   * the same shape. */
  bool ok = true;
  for (int i = 0; i < f.ntensors && ok; i++) {
    const DlrtStTensor *t = &f.tensors[i];
    const Value *v = find_value(R, t->name, strlen(t->name));
    char want[160], got[160];
    if (!v || v->kind != VALUE_PARAM) {
      driver_error("%s holds '%s', which is not a parameter of the session (declare it, or restore "
                   "a model's checkpoint with ':restore FILE MODEL')",
                   path, t->name);
      ok = false;
    } else if (v->rank != t->rank || memcmp(v->dims, t->dims, sizeof(int64_t) * (size_t)t->rank)) {
      driver_error("'%s' in %s has shape %s, but the parameter is %s", t->name, path,
                   dims_str(got, sizeof got, t->rank, t->dims),
                   dims_str(want, sizeof want, v->rank, v->dims));
      ok = false;
    }
  }
  if (ok) {
    for (int i = 0; i < f.ntensors; i++) {
      Value *v = find_value(R, f.tensors[i].name, strlen(f.tensors[i].name));
      memcpy(v->data, f.tensors[i].data, sizeof(float) * (size_t)v->numel);
    }
    printf("restored %d parameter%s from %s\n", f.ntensors, f.ntensors == 1 ? "" : "s", path);
  }
  dlrt_safetensors_free(&f);
}

static void print_named_value(const char *name, const float *data, int rank, const int64_t *dims) {
  printf("%s = ", name);
  TensorValues v = {.f32 = data, .rank = rank, .dims = dims};
  char *text = tensor_to_string(&v, &tensor_format_repl, (int)strlen(name) + 3);
  char shape[160];
  printf("%s  : f32%s\n", text ? text : "", dims_str(shape, sizeof shape, rank, dims));
  free(text);
}

static void cmd_params(Repl *R, Args *a, DlLoc where) {
  if (a->argc == 1) {
    int n = 0;
    for (int i = 0; i < R->nvalues; i++)
      if (R->values[i].kind == VALUE_PARAM) {
        const Value *v = &R->values[i];
        print_named_value(v->name, v->data, v->rank, v->dims);
        n++;
      }
    if (!n) printf("(the session has no parameters)\n");
    return;
  }
  if (a->argc != 2) {
    driver_error("usage: :params [MODEL]");
    return;
  }
  if (!find_block(&R->blocks, BLOCK_MODEL, a->argv[1])) {
    driver_error("no model named '%s'", a->argv[1]);
    return;
  }
  Unit u;
  ParamTable pt = {0};
  DlrtContext *ctx = model_params(R, &u, a->argv[1], where, &pt);
  if (ctx) {
    for (int t = 0; t < pt.prog.ntensors; t++) {
      const DlrtTensor *tt = &pt.prog.tensors[t];
      if (tt->role == DLRT_ROLE_PARAM)
        print_named_value(tt->name, dlrt_data(ctx, t), tt->rank, tt->dims);
    }
    if (!u.model->state.ntensors)
      printf("(initial values: model %s has not been trained)\n", a->argv[1]);
  }
  dlrt_context_free(ctx);
  param_table_free(&pt);
  unit_free(&u);
}

static void cmd_list(Repl *R) {
  char shape[160];
  int n = 0;
  for (int i = 0; i < R->nvalues; i++, n++) {
    const Value *v = &R->values[i];
    printf("%-10s %-12s f32%s\n", v->kind == VALUE_PARAM ? "param" : "tensor", v->name,
           dims_str(shape, sizeof shape, v->rank, v->dims));
  }
  for (int i = 0; i < R->blocks.n; i++, n++) {
    const Block *b = &R->blocks.items[i];
    if (b->kind == BLOCK_OTHER)
      printf("%s\n", b->name);
    else
      printf("%-10s %s%s\n", b->kind == BLOCK_MODEL ? "model" : "train", b->name,
             b->kind == BLOCK_MODEL && b->state.ntensors ? "  (trained)" : "");
  }
  if (!n) printf("(the session is empty)\n");
}

static void reset_session(Repl *R) {
  for (int i = 0; i < R->nvalues; i++)
    value_free(&R->values[i]);
  R->nvalues = 0;
  for (int i = 0; i < R->blocks.n; i++)
    block_free(&R->blocks.items[i]);
  R->blocks.n = 0;
}

/* ---- commands ---- */

/* ":grad EXPR wrt NAME": the last `wrt` at depth 0 followed by one name. */
static bool split_wrt(const ReplText *arg, ReplText *expr, char **name, DlLoc *name_loc) {
  ReplTokens toks;
  repl_scan(arg->text, arg->len, &toks);
  bool ok = false;
  for (int i = toks.n - 2; i >= 1 && !ok; i--) {
    const ReplTok *w = &toks.items[i], *n = &toks.items[i + 1];
    if (w->depth == 0 && repl_tok_is(arg->text, w, "wrt") && n->kind == RT_IDENT &&
        i + 2 == toks.n) {
      *expr = repl_text_slice(arg, 0, w->offset);
      *name = xstrndup(arg->text + n->offset, (size_t)n->len);
      *name_loc = repl_text_loc(arg, n->offset);
      ok = true;
    }
  }
  repl_tokens_free(&toks);
  return ok;
}

typedef struct Command {
  const char *name;
  ExprMode mode; /* for the commands that take an expression */
  bool takes_expr;
} Command;

static const Command commands[] = {
    {"help", EXPR_VALUE, false},    {"quit", EXPR_VALUE, false},    {"q", EXPR_VALUE, false},
    {"grad", EXPR_GRAD, true},      {"ir", EXPR_IR, true},          {"ir-grad", EXPR_IR_GRAD, true},
    {"llvm", EXPR_LLVM, true},      {"asm", EXPR_ASM, true},        {"ptx", EXPR_PTX, true},
    {"time", EXPR_TIME, true},      {"load", EXPR_VALUE, false},    {"train", EXPR_VALUE, false},
    {"explain", EXPR_VALUE, false}, {"params", EXPR_VALUE, false},  {"list", EXPR_VALUE, false},
    {"save", EXPR_VALUE, false},    {"restore", EXPR_VALUE, false}, {"reset", EXPR_VALUE, false},
};

/* ":ir MODEL" and friends on a whole model, as `dlcc emit` prints it. */
static void model_stage(Repl *R, const char *model, ExprMode mode, DlLoc where) {
  Unit u;
  bool train = train_block_fits(R, &R->blocks, model);
  if (!unit_for_model_train(&u, R, &R->blocks, model, where, train, false)) goto done;
  if (mode == EXPR_IR) {
    dl_graph_print(u.s.graph, NULL, stdout);
    goto done;
  }
  DriverOptions o;
  options_init(&o);
  o.no_simplify = mode == EXPR_IR_GRAD; /* as `dlcc emit ir-grad` */
  if (!session_plan(&u.s, &o, session_batch(&u.s, &o))) goto done;
  if (mode == EXPR_IR_GRAD)
    dl_graph_print(u.s.graph, u.s.prog->live, stdout);
  else
    emit_code(&u, mode);
done:
  unit_free(&u);
}

static void run_command(Repl *R, const ReplText *line) {
  /* ":name rest" */
  size_t i = 1;
  while (i < line->len && line->text[i] != ' ' && line->text[i] != '\t')
    i++;
  char *name = xstrndup(line->text + 1, i - 1);
  ReplText arg = repl_text_slice(line, i, line->len);
  char *rest = xstrndup(arg.text, arg.len);
  const Command *c = NULL;
  for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
    if (!strcmp(commands[k].name, name)) c = &commands[k];
  if (!c) {
    repl_error(R, line->origin, "unknown command ':%s' (:help lists the commands)", name);
    goto done;
  }
  if (c->takes_expr && arg.len == 0) {
    driver_error(":%s needs an expression%s", name,
                 c->mode == EXPR_GRAD ? ": :grad EXPR wrt NAME" : "");
    goto done;
  }
  if (c->mode == EXPR_GRAD || c->mode == EXPR_IR_GRAD) {
    ReplText expr;
    char *wrt = NULL;
    DlLoc wrt_loc;
    if (split_wrt(&arg, &expr, &wrt, &wrt_loc)) {
      if (!find_value(R, wrt, strlen(wrt)))
        repl_error(R, wrt_loc,
                   "unknown name '%s': the gradient is taken with respect to a tensor or "
                   "parameter of the session",
                   wrt);
      else
        eval_expr(R, &expr, c->mode, wrt, wrt_loc, NULL);
      free(wrt);
      goto done;
    }
    if (c->mode == EXPR_GRAD) {
      driver_error(":grad needs the name to differentiate by: :grad EXPR wrt NAME");
      goto done;
    }
  }
  if (c->takes_expr) {
    bool is_model = find_block(&R->blocks, BLOCK_MODEL, rest) && !find_value(R, rest, strlen(rest));
    if (is_model && c->mode != EXPR_TIME && c->mode != EXPR_GRAD)
      model_stage(R, rest, c->mode, line->origin);
    else
      eval_expr(R, &arg, c->mode, NULL, arg.origin, NULL);
    goto done;
  }
  Args a = split_args(name, rest);
  if (!strcmp(name, "help")) {
    fputs(repl_commands, stdout);
  } else if (!strcmp(name, "quit") || !strcmp(name, "q")) {
    R->quit = true;
  } else if (!strcmp(name, "load")) {
    if (a.argc != 2)
      driver_error("usage: :load FILE.nnl");
    else
      load_file(R, a.argv[1], arg.origin);
  } else if (!strcmp(name, "train")) {
    cmd_train_model(R, &a, arg.origin);
  } else if (!strcmp(name, "explain")) {
    cmd_explain_model(R, &a, arg.origin);
  } else if (!strcmp(name, "params")) {
    cmd_params(R, &a, arg.origin);
  } else if (!strcmp(name, "list")) {
    cmd_list(R);
  } else if (!strcmp(name, "save") || !strcmp(name, "restore")) {
    cmd_save_restore(R, &a, !strcmp(name, "save"), arg.origin);
  } else if (!strcmp(name, "reset")) {
    reset_session(R);
    printf("the session is empty\n");
  }
  args_free(&a);
done:
  free(name);
  free(rest);
}

/* The innermost bracket left open at the end of the text. */
static const ReplTok *unclosed_bracket(const ReplText *st, const ReplTokens *toks) {
  const ReplTok *open = NULL;
  for (int i = 0; i < toks->n; i++) {
    const ReplTok *t = &toks->items[i];
    const char c = st->text[t->offset];
    if (t->kind == RT_PUNCT && (c == '(' || c == '[' || c == '{') &&
        toks->items[i + 1].depth == toks->depth)
      open = t;
  }
  return open;
}

/* One statement: a block, a parameter, a named tensor or an expression. */
static void run_statement(Repl *R, const ReplText *st) {
  ReplTokens toks;
  repl_scan(st->text, st->len, &toks);
  const char *s = st->text;
  const ReplTok *first = &toks.items[0], *second = &toks.items[1 < toks.n ? 1 : toks.n];
  const ReplTok *open = toks.depth > 0 ? unclosed_bracket(st, &toks) : NULL;
  if (toks.n == 0) {
    /* a comment */
  } else if (open && !repl_tok_is(s, first, "model") && !repl_tok_is(s, first, "train")) {
    /* Only at the end of the input: the compiler would complain about the
     * REPL's own text that follows the line. */
    repl_error(R, repl_text_loc(st, open->offset),
               "unexpected end of input: this '%c' is not closed", s[open->offset]);
  } else if (repl_tok_is(s, first, "model") || repl_tok_is(s, first, "train") ||
             repl_tok_is(s, first, "def") || repl_tok_is(s, first, "import")) {
    define_block(R, st, &toks);
  } else if (repl_tok_is(s, first, "param")) {
    define_param(R, st, &toks);
  } else if (repl_tok_is(s, first, "input") || repl_tok_is(s, first, "target") ||
             repl_tok_is(s, first, "output")) {
    repl_error(R, repl_text_loc(st, first->offset),
               "'%.*s' declares data fed to a model; it belongs inside a model block", first->len,
               s + first->offset);
  } else if (first->kind == RT_IDENT && repl_tok_is(s, second, "=")) {
    define_tensor(R, st, &toks);
  } else {
    eval_expr(R, st, EXPR_VALUE, NULL, st->origin, NULL);
  }
  repl_tokens_free(&toks);
}

/* A complete input (its brackets closed): a command, or statements
 * separated by newlines and ';' outside brackets. */
static void run_input(Repl *R, const ReplText *in) {
  ReplText line = repl_text_slice(in, 0, in->len);
  if (line.len > 0 && line.text[0] == ':') {
    size_t end = line.len;
    while (end > 0 && line.text[end - 1] == '\n')
      end--;
    ReplText cmd = repl_text_slice(&line, 0, end);
    run_command(R, &cmd);
    return;
  }
  ReplTokens toks;
  repl_scan(in->text, in->len, &toks);
  size_t start = 0;
  for (int i = 0; i <= toks.n; i++) {
    const ReplTok *t = &toks.items[i];
    bool end = t->kind == RT_END ||
               (t->depth == 0 && (t->kind == RT_NEWLINE || repl_tok_is(in->text, t, ";")));
    if (!end) continue;
    ReplText st = repl_text_slice(in, start, t->offset);
    if (st.len > 0) run_statement(R, &st);
    start = t->offset + (size_t)t->len;
    if (R->quit) break;
  }
  repl_tokens_free(&toks);
}

/* ---- line editing ---- */

static const char *const keywords[] = {"model",  "train", "input", "target", "param",
                                       "output", "true",  "false", "def",    "import",
                                       "for",    "in",    "return"};
/* For completion only: the frontend's table decides what exists. */
static const char *const builtins[] = {
    "sigmoid", "tanh",   "relu",    "step",        "exp", "log",     "sqrt", "abs", "neg",
    "linear",  "pow",    "softmax", "log_softmax", "sum", "mean",    "mse",  "bce", "cross_entropy",
    "uniform", "normal", "xavier",  "he",          "csv", "tensors", "sgd"};

typedef struct Candidates {
  char **items;
  int n, cap;
} Candidates;

static void cand_add(Candidates *c, const char *prefix, const char *word, const char *lead) {
  size_t n = strlen(prefix);
  if (strncmp(word, prefix, n) != 0) return;
  for (int i = 0; i < c->n; i++)
    if (!strcmp(c->items[i] + strlen(lead), word)) return;
  GROW(c->items, c->n, c->cap);
  size_t len = strlen(lead) + strlen(word);
  c->items[c->n] = xrealloc(NULL, len + 1);
  snprintf(c->items[c->n++], len + 1, "%s%s", lead, word);
}

static Candidates completion_candidates;

static char *next_candidate(const char *text, int state) {
  (void)text;
  static int at;
  if (state == 0) at = 0;
  if (at < completion_candidates.n) return strdup(completion_candidates.items[at++]);
  return NULL;
}

static char **complete(const char *text, int start, int end) {
  (void)end;
  Repl *R = completion_repl;
  Candidates *c = &completion_candidates;
  for (int i = 0; i < c->n; i++)
    free(c->items[i]);
  c->n = 0;
  const char *line = rl_line_buffer;
  int lead = 0;
  while (lead < start && (line[lead] == ' ' || line[lead] == '\t'))
    lead++;
  bool first_word = lead == start;
  if (first_word && text[0] == ':') {
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
      cand_add(c, text + 1, commands[k].name, ":");
  } else if (line[lead] == ':' &&
             (!strncmp(line + lead, ":load", 5) || !strncmp(line + lead, ":save", 5) ||
              !strncmp(line + lead, ":restore", 8))) {
    return rl_completion_matches(text, rl_filename_completion_function);
  } else {
    for (int i = 0; i < R->nvalues; i++)
      cand_add(c, text, R->values[i].name, "");
    for (int i = 0; i < R->blocks.n; i++)
      if (R->blocks.items[i].kind == BLOCK_MODEL) cand_add(c, text, R->blocks.items[i].name, "");
    for (size_t k = 0; k < sizeof keywords / sizeof keywords[0]; k++)
      cand_add(c, text, keywords[k], "");
    for (size_t k = 0; k < sizeof builtins / sizeof builtins[0]; k++)
      cand_add(c, text, builtins[k], "");
  }
  if (c->n == 0) return NULL;
  return rl_completion_matches(text, next_candidate);
}

static void history_path(Repl *R) {
  const char *env = getenv("DLCC_HISTORY");
  if (env) {
    R->history = *env ? xstrndup(env, strlen(env)) : NULL;
    return;
  }
  const char *home = getenv("HOME");
  if (!home || !*home) return;
  size_t n = strlen(home) + 32;
  R->history = xrealloc(NULL, n);
  snprintf(R->history, n, "%s/.dlcc_history", home);
}

static void setup_editing(Repl *R) {
  completion_repl = R;
  rl_readline_name = "dlcc";
  rl_attempted_completion_function = complete;
  /* ':' is part of a command word; '.', '/' and '-' of a file name (so
   * `a/b<Tab>` sees one word: `a / b<Tab>` completes `b`). */
  rl_basic_word_break_characters = " \t\n\"#()[]{},;=+*@^";
  history_path(R);
  stifle_history(1000);
  if (R->history) read_history(R->history);
}

static char *read_plain_line(void) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, stdin);
  if (n < 0) {
    free(line);
    return NULL;
  }
  if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
  if (n > 0 && line[n - 1] == '\r') line[--n] = '\0';
  return line;
}

/* ---- the loop ---- */

int cmd_repl(int argc, char **argv) {
  Repl R = {.input_name = "<stdin>"};
  const char *file = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(repl_usage, stdout);
      return 0;
    }
    DriverOptions o;
    options_init(&o);
    int used = parse_common_option(&o, argc, argv, i, "--seed");
    if (used < 0) return 1;
    if (used > 0) {
      R.seed = (uint64_t)o.seed;
      i += used - 1;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      driver_error("unknown option '%s' for 'dlcc repl' (see 'dlcc repl --help')", argv[i]);
      return 1;
    } else if (file) {
      driver_error("more than one file: '%s' and '%s'", file, argv[i]);
      return 1;
    } else {
      file = argv[i];
    }
  }
  R.interactive = isatty(0);
  R.color = driver_want_color();
  /* Results (stdout) and errors (stderr) interleave line by line. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (R.interactive) {
    /* Ctrl-C at the prompt discards the line; without a terminal it keeps
     * its usual meaning except while training (cmd_train_model). */
    catch_sigint(NULL);
    setup_editing(&R);
    printf("dlcc %s REPL: expressions, models and :commands (:help lists them; Ctrl-D leaves)\n",
           DLCC_VERSION);
  }
  if (file) load_file(&R, file, DL_NOLOC);

  char *pending = NULL;
  size_t plen = 0;
  DlLoc porigin = {0};
  while (!R.quit) {
    interrupted = 0;
    char *line;
    if (R.interactive) {
      line = readline(plen ? "...> " : "nnl> ");
      if (interrupted) {
        /* Ctrl-C: drop what was typed, start afresh. */
        free(line);
        plen = 0;
        printf("\n");
        continue;
      }
    } else {
      line = read_plain_line();
    }
    if (!line) break;
    add_transcript_line(&R, line);
    if (R.interactive && line[0]) {
      add_history(line);
      if (R.history) write_history(R.history);
    }
    size_t n = strlen(line);
    if (plen == 0) porigin = (DlLoc){R.input_name, R.nlines, 1};
    pending = xrealloc(pending, plen + n + 2);
    memcpy(pending + plen, line, n);
    plen += n;
    pending[plen++] = '\n';
    pending[plen] = '\0';
    free(line);
    /* A command is one line; anything else goes on while brackets are open. */
    const char *p = pending;
    while (*p == ' ' || *p == '\t')
      p++;
    ReplTokens toks;
    repl_scan(pending, plen, &toks);
    bool more = *p != ':' && toks.depth > 0;
    repl_tokens_free(&toks);
    if (more) continue;
    ReplText in = {pending, plen, porigin};
    run_input(&R, &in);
    plen = 0;
    fflush(stdout);
  }
  if (plen > 0) {
    /* End of input inside a block: let the compiler say what is missing. */
    ReplText in = {pending, plen, porigin};
    run_input(&R, &in);
  }
  if (R.interactive && !R.quit) printf("\n");
  free(pending);
  reset_session(&R);
  free(R.values);
  free(R.blocks.items);
  for (int i = 0; i < R.nfiles; i++) {
    free(R.files[i].path);
    free(R.files[i].text);
  }
  free(R.files);
  free(R.transcript);
  free(R.history);
  for (int i = 0; i < completion_candidates.n; i++)
    free(completion_candidates.items[i]);
  free(completion_candidates.items);
  return 0;
}
