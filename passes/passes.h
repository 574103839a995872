/* passes.h - graph transformations between the frontend and code generation.
 *
 *   dl_autodiff      reverse-mode gradients of the loss, as more IR
 *   dl_append_optimizer  the optimizer update, as more IR (ASSIGN nodes):
 *                    SGD (momentum, Nesterov), Adam, AdamW, weight decay,
 *                    gradient clipping by global norm (passes/optim.c)
 *   dl_simplify      constant folding, algebraic identities, common
 *                    subexpressions (before planning)
 *   dl_plan          entry points (forward / grad / train_step), dead-code
 *                    elimination per entry, fusion of nodes into kernels
 *                    (passes/fuse.c), schedule and memory offsets
 *
 * Each pass records diagnostics in g->cc and returns false on failure.
 */
#ifndef DL_PASSES_H
#define DL_PASSES_H

#include "../ir/ir.h"

/* Append the gradient of g->loss with respect to every PARAM node (and every
 * node on a path from a parameter to the loss).  Fills g->grad. */
bool dl_autodiff(DlGraph *g);

/* The optimizer appended to the training step.  Its state (SGD's velocity,
 * Adam's moments) are PARAM leaves with role DL_PARAM_STATE, zero at the
 * start, named "optim/velocity/W", "optim/m/W", "optim/v/W" for parameter W.
 * The learning rate is the HYPER "lr" (the runtime's schedules write it each
 * step) and Adam's step count t, for the bias corrections, the HYPER
 * "train.step" (1 for the first step).  Everything else is a constant of the
 * compiled code. */
typedef enum DlOptimKind { DL_OPTIM_SGD, DL_OPTIM_ADAM, DL_OPTIM_ADAMW } DlOptimKind;

typedef struct DlOptimizer {
  DlOptimKind kind;
  double lr;           /* default value of the "lr" hyper */
  double momentum;     /* SGD: 0 for plain SGD */
  bool nesterov;       /* SGD with momentum: Nesterov's look-ahead form */
  double beta1, beta2; /* Adam, AdamW: moment decay rates */
  double eps;          /* Adam, AdamW: added to sqrt(v) */
  double weight_decay; /* SGD, Adam: L2 (added to the gradient); AdamW: decoupled */
  double clip_norm;    /* > 0: scale all gradients so their global norm is at most this */
} DlOptimizer;

/* Defaults: SGD without momentum, Adam's betas 0.9 and 0.999, eps 1e-8. */
DlOptimizer dl_optimizer_default(DlOptimKind kind, double lr);

/* Append the update of every parameter that has a gradient. */
bool dl_append_optimizer(DlGraph *g, const DlOptimizer *opt);

/* Plain SGD: `param <- param - lr * grad`, with lr a HYPER node named "lr"
 * (default value lr). */
bool dl_append_sgd(DlGraph *g, double lr);

/* Simplify the whole graph in place: constant folding, algebraic identities
 * (x + 0, x * 1, -(-x), reshape of reshape, ...) and common-subexpression
 * elimination; g->output, g->loss and g->grad follow.  Nodes left without
 * users are dropped by dl_plan's dead-code elimination.  stats may be NULL. */
typedef struct DlSimplifyStats {
  int folded;     /* ops on constants turned into constants */
  int identities; /* nodes replaced by an input through an algebraic identity */
  int merged;     /* nodes replaced by an equal earlier node */
  int rewired;    /* step(x) made step(relu(x)): relu's gradient reads its output, so x
                     need not be kept for the backward pass */
} DlSimplifyStats;
bool dl_simplify(DlGraph *g, DlSimplifyStats *stats);

/* The compiled entry points.  Each is a function (float *mem, int64_t n,
 * DlrtPool *pool) (runtime/dlrt.h). */
typedef enum DlEntryKind {
  DL_ENTRY_FORWARD, /* output and loss (loss only when targets are given) */
  DL_ENTRY_GRAD,    /* forward + gradients of all params, no update */
  DL_ENTRY_TRAIN,   /* forward + backward + optimizer update */
  DL_ENTRY_COUNT
} DlEntryKind;

extern const char *const dl_entry_names[DL_ENTRY_COUNT]; /* "forward", "grad", "train_step" */

/* A kernel: the nodes one generated function computes (passes/fuse.c groups
 * them).  Only the root's value is stored (and the side reduction's, if
 * any); the other nodes are computed in registers where the root needs them
 * and get no buffer. */
typedef enum DlKernelKind {
  DL_KERNEL_OP,     /* one node with its op's own kernel (softmax, conv, layout ...) */
  DL_KERNEL_MAP,    /* elementwise nodes in one loop over the root's shape (the root may be
                       an ASSIGN, which stores into its parameter) */
  DL_KERNEL_REDUCE, /* a reduction (the root) of elementwise nodes, in one loop over the
                       reduction's input shape */
  DL_KERNEL_MATMUL, /* a matmul whose result goes through elementwise nodes of its
                       shape (computed per element, as the map) before the root is
                       stored */
} DlKernelKind;

extern const char *const dl_kernel_kind_names[]; /* "op", "map", "reduce", "matmul" */

/* Most distinct input nodes of a kernel (fusion stops growing a kernel there);
 * also the most buffers a kernel reads and writes besides its root's. */
#define DL_KERNEL_MAX_OPERANDS 12
/* Most nodes in one kernel. */
#define DL_KERNEL_MAX_NODES 64

typedef struct DlKernel {
  DlKernelKind kind;
  DlNodeId root;   /* the node whose value the kernel stores */
  DlNodeId *nodes; /* every node the kernel computes, in id order; the root is last but
                      for the side reduction, which follows it */
  int nnodes;
  DlNodeId side; /* a map or matmul kernel's side reduction, or DL_NONE: a SUM or MEAN of
                    the root over its leading axes (a bias gradient, the column sum),
                    computed in the same pass over the root's values and stored in its
                    own buffer, the kernel's second output */
} DlKernel;

typedef struct DlEntry {
  DlNodeId *nodes; /* nodes computed by the entry's kernels, in execution order */
  int nnodes;
  int *kernels; /* indices into DlProgram.kernels, in execution order */
  int nkernels;
  bool present; /* grad/train exist only when the model has a loss and params */
} DlEntry;

typedef struct DlProgram {
  DlGraph *g;
  int64_t max_batch; /* the batch dimension N is planned at this size */
  int64_t *offset;   /* per node: offset in floats into mem, or -1 (no buffer) */
  int64_t *size;     /* per node: floats reserved at max_batch */
  int64_t mem_floats;
  bool *live; /* per node: computed or read by some entry */
  DlKernel *kernels;
  int nkernels;
  int *kernel_of;   /* per node: the index of the kernel that computes it, or -1 */
  DlNodeId *buffer; /* per node: the node whose buffer holds its value (dl_buffer_of) */
  DlEntry entry[DL_ENTRY_COUNT];
} DlProgram;

typedef struct DlPlanOptions {
  bool no_fuse; /* one kernel per node (dlcc --no-fuse, and tests comparing the two) */
} DlPlanOptions;

/* Plan the graph for batches of up to max_batch rows, with fusion. */
DlProgram *dl_plan(DlGraph *g, int64_t max_batch);
DlProgram *dl_plan_with(DlGraph *g, int64_t max_batch, const DlPlanOptions *opts);

/* The node whose buffer holds node id's value: itself; for a RESHAPE view
 * or an ASSIGN the buffer of its first input; for an optimizer state's new
 * value that fusion computes in place, the state (see passes/fuse.c). */
DlNodeId dl_buffer_of(const DlProgram *p, DlNodeId id);

/* The nodes kernel k reads (inputs of its nodes computed by other kernels,
 * or leaves), each once, in order of first use; an ASSIGN root's parameter
 * is its output, not an operand, unless another node of the kernel reads it.
 * Returns their number (at most DL_KERNEL_MAX_OPERANDS). */
int dl_kernel_operands(const DlProgram *p, int k, DlNodeId ops[DL_KERNEL_MAX_OPERANDS]);

/* The graph after planning as `dlcc emit ir-opt` prints it: the live nodes
 * (dl_graph_print), then every kernel with its nodes and each entry's
 * sequence of kernels. */
void dl_program_print(const DlProgram *p, FILE *out);

/* Graphviz: the graph's nodes and edges; with a plan (p non-NULL, for g ==
 * p->g) only live nodes, each fused kernel (two nodes or more) a cluster.
 * Leaves are ellipses, ops boxes, stored values bold. */
void dl_graph_print_dot(const DlGraph *g, const DlProgram *p, FILE *out);

/* What a plan costs, for `dlcc compile --stats` and `dlcc bench`. */
typedef struct DlPlanStats {
  bool present[DL_ENTRY_COUNT];
  int kernels[DL_ENTRY_COUNT];  /* kernel calls per entry (views are free) */
  double flops[DL_ENTRY_COUNT]; /* floating-point operations per call at max_batch */
  int64_t arena_bytes;          /* the planned arena, shared buffers counted once */
  int64_t buffer_bytes;         /* the sum of every buffer, were none shared */
} DlPlanStats;
void dl_plan_stats(const DlProgram *p, DlPlanStats *stats);

#endif
