/* driver.h - the dlcc command-line driver, shared between its commands.
 *
 * The driver is the one place that prints diagnostics and chooses exit codes:
 * 0 on success, 1 on any error (with a message), never a crash.
 */
#ifndef DLCC_DRIVER_H
#define DLCC_DRIVER_H

#include "../codegen/codegen.h"
#include "../frontend/frontend.h"
#include "../passes/passes.h"
#include "../runtime/dlrt.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Options common to the commands; each command parses the ones it takes. */
typedef struct DriverOptions {
  const char *file;
  const char *model;
  const char *output; /* -o */
  const char *header; /* --header */
  const char *save;   /* --save CKPT */
  const char *load;   /* --load CKPT */
  const char *log;    /* --log FILE.jsonl */
  const char *input;  /* --input CSV */
  const char *arch;   /* --arch sm_80 */
  const char *prefix; /* --prefix NAME */
  int64_t epochs;     /* -1: from the train block */
  double lr;          /* < 0: from the train block */
  int64_t batch;      /* -1: from the train block */
  int64_t seed;       /* -1: from the train block */
  double tol;         /* gradcheck */
  int opt_level;
  bool quiet;
  bool verbose;
  /* training (cmd_train.c, cmd_eval.c, cmd_lrfind.c); numbers < 0: not given */
  const char *resume;    /* --resume CKPT */
  const char *plot;      /* --plot FILE.svg */
  const char *lr_list;   /* --lr A,B,C: a sweep (lr holds A) */
  const char *optimizer; /* --optimizer sgd|adam|adamw */
  const char *schedule;  /* --schedule constant|step|cosine */
  const char *split;     /* --split train|validation|test */
  double momentum, weight_decay, clip, warmup, validation, noise;
  double lr_start, lr_end; /* lr-find */
  int64_t patience, limit, shift, stop_after;
  int progress;      /* --progress 1, --no-progress 0, else -1: when stdout is a terminal */
  bool stats;        /* compile --stats */
  bool infer;        /* bench --infer */
  bool no_simplify;  /* plan the graph as autodiff left it (emit ir-grad) */
  bool forward_only; /* no autodiff or optimizer: only the forward entry (run) */
  int64_t steps;     /* bench --steps, -1: default */
  int64_t threads;   /* --threads (train, run, bench), -1: one per core */
  const char *stage; /* emit dot --stage ir|grad|opt */
  bool no_fuse;      /* --no-fuse: one kernel per node */
} DriverOptions;

/* Everything compiled from one source file for one model. */
typedef struct Session {
  DlCompiler *cc;
  DlAstFile *ast;
  DlGraph *graph;
  DlTrainSpec train;
  DlProgram *prog;
  DlJit *jit;
  const DlrtProgram *rt; /* the JIT's program table */
  DlSimplifyStats simplified;
  bool color;
  /* Called by driver_report before it renders the diagnostics: the REPL maps
   * locations in the source it synthesised back to the lines typed. */
  void (*before_report)(struct Session *s);
  void *user;
} Session;

/* Pipeline stages; each returns false after printing diagnostics. */
bool session_parse(Session *s, const DriverOptions *o);
bool session_lower(Session *s, const DriverOptions *o);
/* autodiff + SGD (when the model has a loss and parameters) + plan */
bool session_plan(Session *s, const DriverOptions *o, int64_t max_batch);
bool session_jit(Session *s, const DriverOptions *o);
void session_free(Session *s);

/* The directories `import` searches: $DLCC_PATH's entries, then the source
 * tree's lang/ (for `import "std/nn.nnl"`). */
void driver_add_import_dirs(DlCompiler *cc);
/* Print recorded diagnostics to stderr (with colour on a terminal). */
void driver_report(Session *s);
/* Whether diagnostics on stderr get colours (a terminal, NO_COLOR unset). */
bool driver_want_color(void);
/* "dlcc: error: ..." for errors without a source location. */
void driver_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The training data of the train block (CSV or inline tensors). Errors are
 * reported at the data setting's location. */
bool session_load_train_data(Session *s, DlrtDataset *ds);
/* All the data of the train block: `data` less what `validation` and
 * `test` hold out (or those from their own sources), normalised with the
 * training rows' statistics when the block asks for it. */
typedef struct DataSplits {
  DlrtDataset train, validation, test;
  bool has_validation, has_test;
} DataSplits;
bool session_load_splits(Session *s, const DriverOptions *o, DataSplits *out);
void data_splits_free(DataSplits *d);
/* The optimizer of the train block with the command line's changes. */
bool session_optimizer(Session *s, const DriverOptions *o, DlOptimizer *out);
/* The seed of the train block or --seed. */
uint64_t session_seed(const Session *s, const DriverOptions *o);
/* Rows of a CSV whose columns are the model's inputs then (optionally) its
 * targets, in declaration order. */
bool session_load_input_csv(Session *s, const char *path, DlrtDataset *ds, bool *has_targets);
/* Fill the context's inputs and targets for a batch of n rows: the first
 * rows of ds where it has the field (ds may be NULL), else seeded random
 * values, N(0, 1) for inputs and U(0, 1) for targets. */
void session_fill_inputs(Session *s, DlrtContext *ctx, const DlrtDataset *ds, uint64_t seed,
                         int64_t n);
/* The batch size the train block and flags ask for. */
int64_t session_batch(const Session *s, const DriverOptions *o);

/* ---- printing tensors (tensor_print.c) ---- */

/* A growable string, always NUL-terminated once written to; free(s). */
typedef struct StrBuf {
  char *s;
  size_t len, cap;
} StrBuf;
void strbuf_put(StrBuf *b, const char *s, size_t n);

/* Values of a tensor: floats (compiled code) or doubles (the interpreter). */
typedef struct TensorValues {
  const float *f32; /* one of f32 and f64 is set */
  const double *f64;
  int rank;
  const int64_t *dims; /* no batch markers: actual sizes */
} TensorValues;

typedef struct TensorFormat {
  int precision;     /* significant digits */
  int64_t threshold; /* abbreviate tensors with more elements than this */
  int64_t edge;      /* elements kept at each end of an abbreviated axis */
  int64_t long_axis; /* axes longer than this are abbreviated */
  int width;         /* > 0: one line when it fits, numpy layout, wrap rows at
                        this column; 0: one row per line, compact (dlcc run) */
} TensorFormat;

extern const TensorFormat tensor_format_run;  /* `dlcc run`: %.6g, rows on lines */
extern const TensorFormat tensor_format_repl; /* numpy's: one line when short */

/* The tensor as text (malloc'd, no newline at the end); `indent` is the
 * column where it starts, for continuation lines. */
char *tensor_to_string(const TensorValues *v, const TensorFormat *f, int indent);
void print_tensor_values(FILE *out, const TensorValues *v, const TensorFormat *f, int indent);
/* Print a tensor like numpy: [[1, 2], [3, 4]], abbreviated when large, and a
 * newline (the format of `dlcc run`). */
void print_tensor(FILE *out, const float *data, int rank, const int64_t *dims);
/* "[2, 3]" into buf; returns buf. */
char *dims_str(char *buf, size_t size, int rank, const int64_t *dims);

/* ---- explain (cmd_explain.c) ---- */

/* A program table with no code: the parameters and inputs of the first
 * nnodes nodes of a graph, so the runtime can initialise parameters (same
 * seed, same values as training), load checkpoints and check data without
 * compiling anything. */
typedef struct ParamTable {
  DlrtProgram prog;
  DlrtTensor *tensors;
  DlNodeId *node; /* per tensor: its graph node */
} ParamTable;
bool param_table_init(ParamTable *t, const DlGraph *g, int nnodes, int64_t max_batch);
void param_table_free(ParamTable *t);

typedef struct ExplainParams {
  uint64_t seed; /* initialises the parameters */
  /* Then, if set, called to overwrite them (the REPL's current values). */
  int (*set_params)(void *user, DlrtContext *ctx, DlrtError *err);
  void *user;
} ExplainParams;

/* Print one training step of the lowered model in s, worked by hand (o: the
 * --batch, --lr and --load options).  Plans s.  False after printing an
 * error. */
bool explain_step(Session *s, const DriverOptions *o, const ExplainParams *ep, FILE *out);

int cmd_train(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_compile(int argc, char **argv);
int cmd_emit(int argc, char **argv);
int cmd_gradcheck(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_lr_find(int argc, char **argv);
int cmd_explain(int argc, char **argv);
int cmd_repl(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* The plan's kernels, FLOPs and memory (compile --stats, bench). */
void print_plan_stats(FILE *out, const Session *s);
/* Give the context the threads --threads asks for (default: one per core);
 * false after printing an error. */
bool session_set_threads(DlrtContext *ctx, const DriverOptions *o);

/* Argument parsing shared by the commands: returns the number of argv
 * entries consumed (1 or 2) for a recognised option, 0 for an unrecognised
 * one, -1 on a malformed value (after printing a message). `allowed` is a
 * string of the option names the command accepts, e.g. "--epochs --lr". */
int parse_common_option(DriverOptions *o, int argc, char **argv, int i, const char *allowed);
void options_init(DriverOptions *o);
/* Parse a command's FILE and options (argv[0] is the command's name); prints
 * `help` for --help.  Returns 0 to go on, 1 on a usage error (message
 * printed), 2 when help was printed. */
int parse_command_args(DriverOptions *o, int argc, char **argv, const char *allowed,
                       const char *help);

#endif
