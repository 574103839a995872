/* plan_internal.h - what the planner's files share (private to passes/). */
#ifndef DL_PLAN_INTERNAL_H
#define DL_PLAN_INTERNAL_H

#include "passes.h"

/* Does node id get computed by a kernel?  Leaves and RESHAPE views do not. */
bool dl_node_computed(const DlNode *nd);

/* The graph's rule for buffers: a RESHAPE or an ASSIGN uses its first
 * input's buffer, every other node its own. */
DlNodeId dl_graph_buffer(const DlGraph *g, DlNodeId id);

/* Group the live computed nodes of p into p->kernels and fill p->kernel_of.
 * materialise[id]: node id must be stored (the runtime reads it, or an entry
 * ends there), so it is the root of its kernel.  With fuse false, every node
 * is a kernel of its own.  reach[e][id]: entry e computes node id.  Fills
 * p->buffer (with the in-place state updates fusion decides on). */
void dl_fuse(DlProgram *p, const bool *materialise, bool *const reach[DL_ENTRY_COUNT], bool fuse);

#endif
