/* plan.c - entry points, dead-code elimination, schedule and memory layout.
 *
 * Each entry point computes what its roots need and nothing more (dead-code
 * elimination is reachability from the roots).  Kernels run in node-id order,
 * which is topological; optimizer updates (ASSIGN) run last so no kernel reads
 * a parameter after it changed.
 *
 * Memory: one float arena.  Today every buffer gets its own slot, 64-byte
 * aligned, sized for the largest batch; RESHAPE is a view of its input and
 * ASSIGN writes its parameter's slot.  (Liveness-based sharing is the memory
 * planner's next step.)
 */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

const char *const dl_entry_names[DL_ENTRY_COUNT] = {"forward", "grad", "train_step"};

static bool has_kernel(const DlNode *nd) {
  DlOpKind k = dl_op_info[nd->op].kind;
  return k != DL_KIND_LEAF && k != DL_KIND_RESHAPE;
}

static void mark(const DlGraph *g, bool *reach, DlNodeId root) {
  if (root == DL_NONE || reach[root]) return;
  /* Iterative: graphs of unrolled loops can be deep. */
  DlNodeId *stack = malloc(sizeof(DlNodeId) * (size_t)g->nnodes);
  int sp = 0;
  stack[sp++] = root;
  reach[root] = true;
  while (sp > 0) {
    const DlNode *nd = &g->nodes[stack[--sp]];
    for (int i = 0; i < nd->nin; i++)
      if (!reach[nd->in[i]]) {
        reach[nd->in[i]] = true;
        stack[sp++] = nd->in[i];
      }
  }
  free(stack);
}

static void build_entry(DlGraph *g, DlEntry *e, const bool *reach) {
  DlArena *arena = g->cc->arena;
  e->nodes = dl_arena_alloc(arena, sizeof(DlNodeId) * (size_t)(g->nnodes + 1));
  e->nnodes = 0;
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (reach[id] && has_kernel(&g->nodes[id]) && g->nodes[id].op != DL_OP_ASSIGN)
      e->nodes[e->nnodes++] = id;
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (reach[id] && g->nodes[id].op == DL_OP_ASSIGN) e->nodes[e->nnodes++] = id;
  e->present = true;
}

DlProgram *dl_plan(DlGraph *g, int64_t max_batch) {
  DlCompiler *cc = g->cc;
  if (!dl_graph_verify(g)) return NULL;
  if (max_batch < 1) max_batch = 1;
  DlProgram *p = dl_arena_alloc(cc->arena, sizeof(DlProgram));
  int nn = g->nnodes;
  p->g = g;
  p->max_batch = max_batch;
  p->offset = dl_arena_alloc(cc->arena, sizeof(int64_t) * (size_t)(nn + 1));
  p->size = dl_arena_alloc(cc->arena, sizeof(int64_t) * (size_t)(nn + 1));
  p->live = dl_arena_alloc(cc->arena, sizeof(bool) * (size_t)(nn + 1));

  bool *reach = calloc((size_t)nn + 1, sizeof(bool));
  bool has_params = false;
  for (DlNodeId id = 0; id < nn; id++)
    has_params |=
        g->nodes[id].op == DL_OP_PARAM && g->grad && id < g->ngrad && g->grad[id] != DL_NONE;

  /* forward: prediction and loss */
  mark(g, reach, g->output);
  mark(g, reach, g->loss);
  build_entry(g, &p->entry[DL_ENTRY_FORWARD], reach);
  for (int i = 0; i < nn; i++)
    p->live[i] |= reach[i];

  if (g->loss != DL_NONE && has_params) {
    /* grad: loss and every parameter gradient */
    memset(reach, 0, sizeof(bool) * (size_t)nn);
    mark(g, reach, g->loss);
    for (DlNodeId id = 0; id < g->ngrad; id++)
      if (g->nodes[id].op == DL_OP_PARAM) mark(g, reach, g->grad[id]);
    build_entry(g, &p->entry[DL_ENTRY_GRAD], reach);
    for (int i = 0; i < nn; i++)
      p->live[i] |= reach[i];

    /* train_step: prediction, loss and the updates */
    memset(reach, 0, sizeof(bool) * (size_t)nn);
    mark(g, reach, g->output);
    mark(g, reach, g->loss);
    for (DlNodeId id = 0; id < nn; id++)
      if (g->nodes[id].op == DL_OP_ASSIGN) mark(g, reach, id);
    build_entry(g, &p->entry[DL_ENTRY_TRAIN], reach);
    for (int i = 0; i < nn; i++)
      p->live[i] |= reach[i];
  }
  free(reach);

  /* Memory layout. */
  int64_t at = 0;
  for (DlNodeId id = 0; id < nn; id++) {
    const DlNode *nd = &g->nodes[id];
    p->offset[id] = -1;
    bool state = nd->op == DL_OP_PARAM || nd->op == DL_OP_INPUT || nd->op == DL_OP_HYPER;
    if (!p->live[id] && !state) continue;
    if (nd->op == DL_OP_RESHAPE || nd->op == DL_OP_ASSIGN) {
      p->offset[id] = p->offset[nd->in[0]];
      continue;
    }
    int64_t n = dl_shape_numel(&nd->shape, max_batch);
    p->size[id] = n;
    p->offset[id] = at;
    at += (n + 15) & ~(int64_t)15;
  }
  p->mem_floats = at > 0 ? at : 16;
  return p;
}
