/* print.c - the planned program as text (`dlcc emit ir-opt`) and as a
 * Graphviz graph (`dlcc emit dot`), both showing which nodes were fused into
 * which kernel. */
#include "plan_internal.h"

void dl_program_print(const DlProgram *p, FILE *out) {
  const DlGraph *g = p->g;
  dl_graph_print(g, p->live, out);
  fprintf(out, "kernels {\n");
  for (int k = 0; k < p->nkernels; k++) {
    const DlKernel *kern = &p->kernels[k];
    fprintf(out, "  k%d = %s(", k, dl_kernel_kind_names[kern->kind]);
    for (int i = 0; i < kern->nnodes; i++)
      fprintf(out, "%s%%%d %s", i ? ", " : "", kern->nodes[i],
              dl_op_info[g->nodes[kern->nodes[i]].op].name);
    fprintf(out, ") -> %%%d", kern->root);
    if (kern->side != DL_NONE) fprintf(out, ", %%%d", kern->side); /* its second output */
    DlNodeId buf = dl_buffer_of(p, kern->root);
    if (buf != kern->root && g->nodes[kern->root].op != DL_OP_ASSIGN)
      fprintf(out, " in %%%d", buf); /* a state updated in place */
    DlNodeId ops[DL_KERNEL_MAX_OPERANDS];
    int nops = dl_kernel_operands(p, k, ops);
    if (nops) fprintf(out, " reads");
    for (int i = 0; i < nops; i++)
      fprintf(out, " %%%d", ops[i]);
    fputc('\n', out);
  }
  for (int e = 0; e < DL_ENTRY_COUNT; e++) {
    const DlEntry *en = &p->entry[e];
    if (!en->present) continue;
    fprintf(out, "  %s:", dl_entry_names[e]);
    for (int i = 0; i < en->nkernels; i++)
      fprintf(out, " k%d", en->kernels[i]);
    fputc('\n', out);
  }
  fprintf(out, "}\n");
}

/* A string inside a DOT "..." label. */
static void dot_text(FILE *out, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', out);
    fputc(*s, out);
  }
}

static void dot_node(FILE *out, const DlGraph *g, const DlProgram *p, DlNodeId id,
                     const char *indent) {
  const DlNode *nd = &g->nodes[id];
  char shape[128];
  fprintf(out, "%sn%d [label=\"%%%d %s", indent, id, id, dl_op_info[nd->op].name);
  if (nd->name) {
    fputc(' ', out);
    dot_text(out, nd->name);
  }
  fprintf(out, "\\n");
  dot_text(out, dl_shape_str(&nd->shape, shape, sizeof shape));
  bool leaf = dl_op_info[nd->op].kind == DL_KIND_LEAF;
  /* Bold: a value with a buffer of its own (stored by its kernel). */
  bool stored = p && !leaf && p->offset[id] >= 0 && dl_buffer_of(p, id) == id;
  fprintf(out, "\", shape=%s%s];\n", leaf ? "ellipse" : "box", stored ? ", style=bold" : "");
}

void dl_graph_print_dot(const DlGraph *g, const DlProgram *p, FILE *out) {
  fprintf(out, "digraph \"");
  dot_text(out, g->name ? g->name : "model");
  fprintf(out, "\" {\n  node [fontname=\"Helvetica\", fontsize=10];\n");
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    if (p && !p->live[id]) continue;
    int k = p ? p->kernel_of[id] : -1;
    if (k >= 0 && p->kernels[k].nnodes > 1) continue; /* drawn in its kernel's cluster */
    dot_node(out, g, p, id, "  ");
  }
  for (int k = 0; p && k < p->nkernels; k++) {
    const DlKernel *kern = &p->kernels[k];
    if (kern->nnodes < 2) continue;
    /* A side reduction is in its kernel's cluster, bold as it is stored. */
    fprintf(out, "  subgraph cluster_k%d {\n    label=\"k%d %s", k, k,
            dl_kernel_kind_names[kern->kind]);
    if (kern->side != DL_NONE) fprintf(out, " + %s", dl_op_info[g->nodes[kern->side].op].name);
    fprintf(out, "\";\n    style=rounded;\n");
    for (int i = 0; i < kern->nnodes; i++)
      dot_node(out, g, p, kern->nodes[i], "    ");
    fprintf(out, "  }\n");
  }
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    const DlNode *nd = &g->nodes[id];
    if (p && !p->live[id]) continue;
    for (int i = 0; i < nd->nin; i++)
      fprintf(out, "  n%d -> n%d;\n", nd->in[i], id);
  }
  if (g->output != DL_NONE && (!p || p->live[g->output]))
    fprintf(out, "  output [shape=plaintext];\n  n%d -> output;\n", g->output);
  if (g->loss != DL_NONE && (!p || p->live[g->loss]))
    fprintf(out, "  loss [shape=plaintext];\n  n%d -> loss;\n", g->loss);
  fprintf(out, "}\n");
}
