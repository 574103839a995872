/* ir.h - the tensor IR: a typed SSA graph with static shapes.
 *
 * A graph is an array of nodes in topological order: a node's inputs always
 * have smaller ids.  Each node yields one tensor.  Shapes are static except
 * for the batch dimension, written N in the language and DL_DIM_BATCH here;
 * its value is chosen at run time (any n up to the planned maximum).
 *
 * Nodes are created only through the constructors below (one per op kind),
 * which apply the op's shape rule and record a diagnostic at the node's source
 * location when it fails.  A constructor that fails returns DL_NONE; every
 * constructor accepts DL_NONE inputs and returns DL_NONE without a second
 * message, so callers can build whole expressions and check once.
 */
#ifndef DL_IR_H
#define DL_IR_H

#include "support.h"

#define DL_MAX_RANK 6
#define DL_MAX_INPUTS 3
#define DL_DIM_BATCH ((int64_t)-1) /* the symbolic batch size N */
#define DL_NONE ((DlNodeId)-1)

typedef int32_t DlNodeId;

typedef enum DlOp {
#define DL_OP(id, name, nin, kind) DL_OP_##id,
#include "ops.def"
#undef DL_OP
} DlOp;

/* The number of ops, kept out of DlOp so that switches over DlOp list real
 * ops only. */
enum {
  DL_OP_COUNT = 0
#define DL_OP(id, name, nin, kind) +1
#include "ops.def"
#undef DL_OP
};

typedef enum DlOpKind {
  DL_KIND_LEAF,
  DL_KIND_UNARY,
  DL_KIND_BINARY,
  DL_KIND_MATMUL,
  DL_KIND_REDUCE,
  DL_KIND_EXPAND,
  DL_KIND_RESHAPE,
  DL_KIND_SOFTMAX,
  DL_KIND_ASSIGN,
  DL_KIND_LAYOUT,
  DL_KIND_INDEX,
  DL_KIND_CONV,
  DL_KIND_POOL,
  DL_KIND_RANDOM,
} DlOpKind;

typedef struct DlOpInfo {
  const char *name;
  int nin;
  DlOpKind kind;
} DlOpInfo;

extern const DlOpInfo dl_op_info[DL_OP_COUNT];

typedef enum DlDType { DL_F32 } DlDType;

typedef struct DlShape {
  int rank;
  int64_t d[DL_MAX_RANK]; /* d[i] > 0, or DL_DIM_BATCH */
} DlShape;

/* Role of an INPUT leaf. */
typedef enum DlInputRole { DL_ROLE_INPUT, DL_ROLE_TARGET } DlInputRole;

/* How a parameter is initialised (xavier/he are resolved to these by the
 * frontend, which knows the fan-in and fan-out). */
typedef enum DlInitKind {
  DL_INIT_ZERO,
  DL_INIT_CONST,   /* every element = a */
  DL_INIT_UNIFORM, /* U(a, b) */
  DL_INIT_NORMAL,  /* N(mean a, std b) */
  DL_INIT_DATA,    /* literal values in data (static element count floats) */
} DlInitKind;

/* What a PARAM leaf holds.  Optimiser state (momentum, Adam's moments) is a
 * persistent leaf like a parameter, updated with ASSIGN, but it has no
 * gradient and is saved with the optimiser state of a checkpoint, not with
 * the model's parameters (passes/optim.c creates it, zero-initialised). */
typedef enum DlParamRole { DL_PARAM_TRAINABLE, DL_PARAM_STATE } DlParamRole;

typedef struct DlInit {
  DlInitKind kind;
  double a, b;
  const float *data;
} DlInit;

typedef struct DlNode {
  DlOp op;
  DlDType dtype;
  DlShape shape;
  int nin;
  DlNodeId in[DL_MAX_INPUTS];
  union {
    struct {
      DlInputRole role;
    } input;
    DlInit param;
    struct {
      double value;      /* used when data == NULL: every element = value */
      const float *data; /* static element count floats, row-major */
    } konst;
    struct {
      double value; /* default value of the hyperparameter */
    } hyper;
    struct {
      bool ta, tb; /* use a^T / b^T (last two axes) */
    } matmul;
    struct {
      uint32_t axes; /* bit i set: axis i is reduced */
      bool keepdim;
    } reduce;
    struct {
      bool mean; /* divide by the broadcast factor */
    } expand;
    struct {
      int perm[DL_MAX_RANK]; /* output axis i is input axis perm[i] */
    } permute;
    struct {
      int64_t start[DL_MAX_RANK]; /* per axis; the extent is the node's dimension */
    } slice;
    struct {
      int64_t before[DL_MAX_RANK]; /* zeros before, per axis; after = the rest */
    } pad;
    struct {
      int axis;
    } concat;
    struct {
      int sh, sw; /* strides along H and W */
      int ph, pw; /* zero padding on each side of H and W */
    } conv;
    struct {
      int kh, kw; /* window */
      int sh, sw; /* strides */
    } pool;
    struct {
      double p;        /* probability of dropping an element, in [0, 1) */
      uint64_t stream; /* random stream: the forward node's id, shared by its gradient */
    } dropout;
  } attr;
  const char *name; /* leaf name ("W1", "h1.W"), or the source variable it was assigned to */
  DlLoc loc;
  DlParamRole param_role; /* PARAM: DL_PARAM_TRAINABLE unless the optimiser made it */
} DlNode;

typedef struct DlGraph {
  DlCompiler *cc;
  const char *name; /* the model's name */
  DlNode *nodes;
  int nnodes, cap;
  DlNodeId output; /* the model's prediction, DL_NONE if it has none */
  DlNodeId loss;   /* scalar loss, DL_NONE if it has none */
  /* Filled by autodiff: grad[i] is the gradient of the loss with respect to
   * node i, or DL_NONE.  ngrad is the number of nodes when it ran. */
  DlNodeId *grad;
  int ngrad;
} DlGraph;

DlGraph *dl_graph_new(DlCompiler *cc, const char *name);
static inline DlNode *dl_node(const DlGraph *g, DlNodeId id) {
  return &g->nodes[id];
}

/* ---- shapes ---- */
DlShape dl_shape_make(int rank, const int64_t *dims);
DlShape dl_shape_scalar(void);
bool dl_shape_eq(const DlShape *a, const DlShape *b);
/* Number of elements, with the batch dimension taken as n. */
int64_t dl_shape_numel(const DlShape *s, int64_t n);
/* Number of batch dimensions in the shape (0 or more). */
int dl_shape_batch_dims(const DlShape *s);
/* "[N, 4]" into buf (always NUL-terminated); returns buf. */
char *dl_shape_str(const DlShape *s, char *buf, size_t size);
/* numpy broadcasting of two shapes; false if incompatible. */
bool dl_shape_broadcast(const DlShape *a, const DlShape *b, DlShape *out);

/* ---- constructors (each applies the op's shape rule) ---- */
DlNodeId dl_input(DlGraph *g, DlLoc loc, const char *name, DlShape shape, DlInputRole role);
DlNodeId dl_param(DlGraph *g, DlLoc loc, const char *name, DlShape shape, DlInit init);
DlNodeId dl_const_scalar(DlGraph *g, DlLoc loc, double value);
DlNodeId dl_const_fill(DlGraph *g, DlLoc loc, DlShape shape, double value);
/* data: dl_shape_numel(shape, 1) floats, copied into the arena. */
DlNodeId dl_const_data(DlGraph *g, DlLoc loc, DlShape shape, const float *data);
DlNodeId dl_hyper(DlGraph *g, DlLoc loc, const char *name, double default_value);
DlNodeId dl_unary(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a);
DlNodeId dl_binary(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a, DlNodeId b);
DlNodeId dl_matmul(DlGraph *g, DlLoc loc, DlNodeId a, DlNodeId b, bool ta, bool tb);
/* axes: bit mask over a's axes; 0 means all axes. */
DlNodeId dl_reduce(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a, uint32_t axes, bool keepdim);
/* Broadcast a to shape (numpy rules, a's shape must broadcast to it). */
DlNodeId dl_expand(DlGraph *g, DlLoc loc, DlNodeId a, DlShape shape, bool mean);
DlNodeId dl_reshape(DlGraph *g, DlLoc loc, DlNodeId a, DlShape shape);
DlNodeId dl_softmax(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a);
DlNodeId dl_assign(DlGraph *g, DlLoc loc, DlNodeId param, DlNodeId value);
/* Sum a (the gradient of a broadcast value) down to `shape`: the reverse of
 * broadcasting.  Returns a itself when the shapes already agree. */
DlNodeId dl_reduce_to(DlGraph *g, DlLoc loc, DlNodeId a, DlShape shape);
/* The same with the mean instead of the sum: the adjoint of a mean-expand. */
DlNodeId dl_mean_to(DlGraph *g, DlLoc loc, DlNodeId a, DlShape shape);

/* ---- layout, indexing, convolution, pooling, dropout ----
 * A shape mismatch is reported as "shape mismatch in 'OP': ..." naming the
 * shapes, at loc. */
/* perm: a permutation of a's rank; output axis i is a's axis perm[i]. */
DlNodeId dl_permute(DlGraph *g, DlLoc loc, DlNodeId a, const int *perm);
/* Per axis [start, stop), stop exclusive.  A batch axis may only be taken
 * whole: start 0, stop DL_DIM_BATCH. */
DlNodeId dl_slice(DlGraph *g, DlLoc loc, DlNodeId a, const int64_t *start, const int64_t *stop);
/* Zeros before and after, per axis (never on a batch axis).  Gradient: a slice. */
DlNodeId dl_pad(DlGraph *g, DlLoc loc, DlNodeId a, const int64_t *before, const int64_t *after);
/* a then b along axis (not a batch axis); the other dimensions must agree. */
DlNodeId dl_concat(DlGraph *g, DlLoc loc, DlNodeId a, DlNodeId b, int axis);
/* table [V, D...], idx of any shape holding integer values as floats ->
 * idx.shape ++ table.shape[1:].  An index is clamped to [0, V-1], then
 * truncated toward zero.  Gradient: scatter_add into the table; none to idx. */
DlNodeId dl_gather(DlGraph *g, DlLoc loc, DlNodeId table, DlNodeId idx);
/* The adjoint of gather: out[k, ...] = sum of src[p, ...] over the positions
 * p of idx whose (clamped) index is k; src is idx.shape ++ table_shape[1:]. */
DlNodeId dl_scatter_add(DlGraph *g, DlLoc loc, DlNodeId src, DlNodeId idx, DlShape table_shape);
/* labels.shape ++ [classes]: 1.0 where the label equals the class, else 0
 * (a label that is no class gives a row of zeros).  No gradient. */
DlNodeId dl_one_hot(DlGraph *g, DlLoc loc, DlNodeId labels, int64_t classes);
/* DL_OP_GT, DL_OP_EQ: 1.0 / 0.0 with broadcasting.  No gradient. */
DlNodeId dl_compare(DlGraph *g, DlOp op, DlLoc loc, DlNodeId a, DlNodeId b);
/* x [N, C, H, W], w [O, C, KH, KW] -> [N, O, (H+2ph-KH)/sh+1, (W+2pw-KW)/sw+1],
 * zero padding. */
DlNodeId dl_conv2d(DlGraph *g, DlLoc loc, DlNodeId x, DlNodeId w, int stride_h, int stride_w,
                   int pad_h, int pad_w);
/* The gradients of conv2d: dx (shape x_shape) from dy and w; dw (shape
 * w_shape) from x and dy. */
DlNodeId dl_conv2d_grad_input(DlGraph *g, DlLoc loc, DlNodeId dy, DlNodeId w, DlShape x_shape,
                              int stride_h, int stride_w, int pad_h, int pad_w);
DlNodeId dl_conv2d_grad_filter(DlGraph *g, DlLoc loc, DlNodeId x, DlNodeId dy, DlShape w_shape,
                               int stride_h, int stride_w, int pad_h, int pad_w);
/* DL_OP_MAXPOOL2D / DL_OP_AVGPOOL2D over the last two axes, windows kh x kw
 * at strides sh, sw, no padding: out = (H - kh) / sh + 1 (floor). */
DlNodeId dl_pool2d(DlGraph *g, DlOp op, DlLoc loc, DlNodeId x, int kh, int kw, int sh, int sw);
/* The gradients of pooling: max routes each dy to the first maximum of its
 * window in x; avg spreads it evenly over the window (dx has shape x_shape). */
DlNodeId dl_maxpool2d_grad(DlGraph *g, DlLoc loc, DlNodeId x, DlNodeId dy, int kh, int kw, int sh,
                           int sw);
DlNodeId dl_avgpool2d_grad(DlGraph *g, DlLoc loc, DlNodeId dy, DlShape x_shape, int kh, int kw,
                           int sh, int sw);

/* Dropout reads two HYPER leaves, created once per graph: */
#define DL_HYPER_TRAIN_MODE "train.mode" /* 0: inference (identity), else training */
#define DL_HYPER_TRAIN_SEED "train.seed" /* integer seed, fresh for every step */
/* Inverted dropout: in training, element i is kept iff u(seed, stream, i) >= p
 * and then scaled by 1/(1-p), else 0; u is uniform in [0, 1) from the
 * counter-based hash of runtime/rt_random.c (see dl_dropout_keep), stream is
 * the node's id.  Gradient: the same mask applied to dy. */
DlNodeId dl_dropout(DlGraph *g, DlLoc loc, DlNodeId x, double p);
/* Dropout with a given stream (the gradient reuses its forward node's). */
DlNodeId dl_dropout_stream(DlGraph *g, DlLoc loc, DlNodeId x, double p, uint64_t stream);
/* The mask, shared by the interpreter and the tests (the code generator
 * computes the same in LLVM IR): is element `counter` kept?  seed is the
 * train.seed value, clamped to [0, 2^32] and truncated. */
uint64_t dl_hash64(uint64_t x);
uint64_t dl_dropout_seed(double seed_value);
bool dl_dropout_keep(uint64_t seed, uint64_t stream, uint64_t counter, double p);

/* Give a node a (source) name, e.g. the variable it was assigned to. */
void dl_node_set_name(DlGraph *g, DlNodeId id, const char *name);

/* ---- checking and printing ---- */
/* Structural verifier: topological order, input counts, shape rules hold.
 * Records an error (internal compiler error) and returns false on failure. */
bool dl_graph_verify(DlGraph *g);
/* Textual form used by `dlcc emit ir` and the FileCheck tests:
 *   graph xor {
 *     %0 = input x : f32[N, 2]
 *     %2 = param W1 : f32[2, 4] = uniform(-1, 1)
 *     %6 = matmul %0, %2 : f32[N, 4]
 *     %8 = tanh %7 : f32[N, 4]  # h
 *     ...
 *     output %12
 *     loss %15
 *   }
 * Nodes for which live[] is false are skipped (live may be NULL: print all).
 */
void dl_graph_print(const DlGraph *g, const bool *live, FILE *out);

/* ---- reference interpreter (ir/interp.c) ----
 * Evaluates nodes in double precision, slowly and obviously.  It is the
 * oracle for the code generators and the passes.  values[i] must hold, for
 * each INPUT, PARAM and HYPER node among the evaluated ones, a buffer of
 * dl_shape_numel(shape, n) doubles (HYPER: one double); the interpreter
 * allocates (malloc) the others, and dl_interp_free() frees those.  `eval`
 * lists the nodes to evaluate in order (NULL: all nodes in id order).  An
 * ASSIGN node writes into its parameter's buffer. */
typedef struct DlInterp {
  const DlGraph *g;
  int64_t n;       /* batch size */
  double **values; /* per node, NULL until evaluated */
  bool *owned;     /* values[i] was allocated by the interpreter */
} DlInterp;

void dl_interp_init(DlInterp *it, const DlGraph *g, int64_t n);
void dl_interp_run(DlInterp *it, const DlNodeId *eval, int neval);
void dl_interp_free(DlInterp *it);

#endif
