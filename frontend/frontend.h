/* frontend.h - .nnl source to IR.
 *
 *   dl_parse_file / dl_parse_string   reentrant flex scanner + pure bison
 *                                     parser with locations -> AST
 *   dl_lower                          name resolution, initialisers, library
 *                                     losses -> DlGraph (and the train block)
 *
 * The AST is private to the frontend: later stages see only the IR and the
 * DlTrainSpec below.
 */
#ifndef DL_FRONTEND_H
#define DL_FRONTEND_H

#include "../ir/ir.h"

typedef struct DlAstFile DlAstFile;

/* Parse a file (registered with dl_source_load so diagnostics can quote it),
 * and every file it imports, each once.  Returns NULL if the file cannot be
 * read; otherwise an AST, possibly partial: check dl_failed(cc). */
DlAstFile *dl_parse_file(DlCompiler *cc, const char *path);
DlAstFile *dl_parse_string(DlCompiler *cc, const char *name, const char *text);

/* Add a directory that `import "path"` searches (after the importing file's
 * own directory, in the order added).  The driver adds $DLCC_PATH's entries,
 * then <source tree>/lang, so `import "std/nn.nnl"` finds the standard
 * library.  The string is copied. */
void dl_frontend_add_import_dir(DlCompiler *cc, const char *dir);

/* `dlcc emit tokens`: one token per line, "line:col KIND 'text'". */
bool dl_dump_tokens(DlCompiler *cc, const char *path, FILE *out);
/* `dlcc emit ast`: an indented S-expression-like tree. */
void dl_ast_print(const DlAstFile *ast, FILE *out);

/* ---- the train block ---- */

typedef enum DlDataKind {
  DL_DATA_NONE,
  DL_DATA_CSV,           /* csv("file.csv", x = 0..4, y = one_hot(4)) */
  DL_DATA_TENSORS,       /* tensors(x = [[...]], y = [[...]]) */
  DL_DATA_IDX,           /* idx("images", "labels"): IDX files, plain or gzip */
  DL_DATA_MNIST,         /* mnist(split = "train"): the driver finds the files */
  DL_DATA_FASHION_MNIST, /* fashion_mnist(split = "test") */
  DL_DATA_TEXT,          /* text("file.txt", context = 3) */
  DL_DATA_FRACTION,      /* validation/test only: a fraction held out of `data` */
} DlDataKind;

#define DL_MAX_DATA_FIELDS 8

typedef struct DlDataField {
  const char *name; /* model input or target it feeds */
  DlLoc loc;
  /* CSV: columns first .. first+count-1; one_hot: a class-index column
   * expanded to the target's width */
  int first, count;
  bool one_hot;
  /* TENSORS: a literal with nrows rows of width floats (row-major) */
  int64_t nrows, width;
  const float *values;
} DlDataField;

typedef struct DlDataSpec {
  DlDataKind kind;
  const char *path;   /* CSV, TEXT, IDX images: resolved relative to the .nnl file's directory */
  const char *labels; /* IDX: the labels file */
  bool header;        /* CSV: first line is a header (csv(..., header = true)) */
  int nfields;
  DlDataField fields[DL_MAX_DATA_FIELDS];
  /* IDX, MNIST, FASHION_MNIST, TEXT feed the model's only input and target */
  const char *input, *target;
  int64_t input_width, target_width;
  bool test_split; /* MNIST, FASHION_MNIST: split = "test" */
  int64_t context; /* TEXT: characters of context */
  int64_t limit;   /* the first `limit` rows only (0: all) */
  double fraction; /* FRACTION */
  DlLoc loc;
} DlDataSpec;

typedef enum DlOptimizerKind { DL_OPT_SGD, DL_OPT_ADAM, DL_OPT_ADAMW } DlOptimizerKind;
typedef enum DlScheduleKind {
  DL_SCHEDULE_CONSTANT,
  DL_SCHEDULE_STEP,
  DL_SCHEDULE_COSINE
} DlScheduleKind;

typedef struct DlTrainSpec {
  bool present;
  const char *model;
  DlDataSpec data;
  DlDataSpec validation; /* kind NONE, FRACTION or a data source */
  DlDataSpec test;       /* likewise */
  /* optimizer = sgd(lr, momentum, nesterov, weight_decay)
   *           | adam(lr, beta1, beta2, eps, weight_decay) | adamw(...) */
  DlOptimizerKind optimizer;
  double lr; /* default 0.01 for sgd, 0.001 for adam and adamw */
  double momentum;
  bool nesterov;
  double beta1, beta2, eps;
  double weight_decay; /* adamw's default 0.01, else 0 */
  double clip;         /* clip = X: gradient norm limit (0: none) */
  /* schedule = constant | step(every, gamma, warmup) | cosine(min_lr, warmup) */
  DlScheduleKind schedule;
  int64_t step_every;
  double gamma, min_lr, warmup;
  /* patience = K (early stopping), restore_best = true */
  int64_t patience;
  bool restore_best;
  /* augment = shift(k) | noise(std) | [shift(k), noise(std)] */
  int64_t augment_shift;
  double augment_noise;
  bool normalize; /* standardise inputs with the training rows' statistics */
  int64_t epochs; /* default 1 */
  int64_t batch;  /* default 32 (clamped to the data's row count by the driver) */
  uint64_t seed;  /* default 0 */
  DlLoc loc;
  DlLoc optimizer_loc, schedule_loc, augment_loc, patience_loc;
} DlTrainSpec;

/* Name of the model to use when the user names none: the model of the first
 * train block, else the only/first model.  NULL if the file has no model. */
const char *dl_default_model(const DlAstFile *ast);

/* Lower model `name` (NULL: dl_default_model) to IR.  If `train` is not NULL
 * it receives the model's train block (present == false if it has none).
 * Returns NULL on error (diagnostics recorded). */
DlGraph *dl_lower(DlCompiler *cc, const DlAstFile *ast, const char *name, DlTrainSpec *train);

#endif
