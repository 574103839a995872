/* cmd_emit.c - `dlcc emit`: print what any stage of the compiler produced. */
#include "driver.h"

#include <string.h>

static const char emit_help[] =
    "usage: dlcc emit KIND FILE.nnl [options]\n"
    "\n"
    "Print the output of one compiler stage, so a problem can be cornered where\n"
    "it first appears.  KIND is one of:\n"
    "  tokens    the scanner's tokens, one per line\n"
    "  ast       the parse tree\n"
    "  ir        the tensor IR of the model (forward graph)\n"
    "  ir-grad   the IR after autodiff and the SGD update (what train_step computes)\n"
    "  ir-opt    the same after simplification: constant folding, algebraic\n"
    "            identities, common subexpressions (what is compiled), then the\n"
    "            kernels fusion made (each with its nodes) and each entry point's\n"
    "            sequence of kernels\n"
    "  dot       the graph for Graphviz (dot -Tsvg), each fused kernel a cluster;\n"
    "            --stage ir|grad|opt (default opt) picks the graph\n"
    "  llvm      LLVM IR for the host CPU (optimised; -O0 for the unoptimised IR)\n"
    "  asm       host assembly\n"
    "  ptx       PTX for NVIDIA GPUs (--arch sm_80 by default)\n"
    "\n"
    "options:\n"
    "  -o OUT        write to OUT instead of standard output\n"
    "  --model NAME  the model to emit\n"
    "  --arch SM     GPU architecture for ptx: sm_80, sm_86, sm_89 or sm_90\n"
    "  --batch B     largest batch the code is planned for\n"
    "  --lr X        default learning rate of the update\n"
    "  --stage S     dot: ir (the model as written), grad (after autodiff and the\n"
    "                update) or opt (simplified and fused, the default)\n"
    "  --no-fuse     plan one kernel per node (ir-opt, dot, llvm, asm, ptx)\n"
    "  -O0 .. -O3    LLVM optimisation level (default -O3)\n";

static const char *const kinds[] = {"tokens", "ast", "ir",     "ir-grad", "llvm",
                                    "asm",    "ptx", "ir-opt", "dot"};

int cmd_emit(int argc, char **argv) {
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    fputs(emit_help, stdout);
    return 0;
  }
  if (argc < 2 || argv[1][0] == '-') {
    driver_error(
        "'dlcc emit' needs a KIND: tokens, ast, ir, ir-grad, ir-opt, dot, llvm, asm or ptx");
    return 1;
  }
  const char *kind = argv[1];
  int k = -1;
  for (int i = 0; i < (int)(sizeof kinds / sizeof kinds[0]); i++)
    if (!strcmp(kind, kinds[i])) k = i;
  if (k < 0) {
    driver_error("unknown kind '%s' for 'dlcc emit': expected tokens, ast, ir, ir-grad, ir-opt, "
                 "dot, llvm, asm or ptx",
                 kind);
    return 1;
  }
  /* Drop the kind so the common parser sees "emit FILE [options]". */
  argv[1] = argv[0];
  DriverOptions o;
  int rc =
      parse_command_args(&o, argc - 1, argv + 1,
                         "-o --model --arch --batch --lr --optimizer --momentum --weight-decay "
                         "--clip --stage --no-fuse -O0 -O1 -O2 -O3",
                         emit_help);
  if (rc) return rc == 2 ? 0 : 1;

  FILE *out = stdout;
  if (o.output && !(out = fopen(o.output, "w"))) {
    driver_error("cannot write '%s'", o.output);
    return 1;
  }
  Session s = {0};
  int status = 1;
  const char *text = NULL;
  DlCodegenOptions co = {.opt_level = o.opt_level, .gpu_arch = o.arch, .prefix = o.prefix};
  switch (k) {
  case 0: /* tokens */
    s.cc = dl_compiler_new();
    if (!dl_dump_tokens(s.cc, o.file, out) || dl_failed(s.cc)) {
      driver_report(&s);
      goto done;
    }
    break;
  case 1: /* ast */
    if (!session_parse(&s, &o)) goto done;
    dl_ast_print(s.ast, out);
    break;
  case 2: /* ir */
    if (!session_lower(&s, &o)) goto done;
    dl_graph_print(s.graph, NULL, out);
    break;
  case 8: /* dot */
    if (!session_lower(&s, &o)) goto done;
    if (o.stage && !strcmp(o.stage, "ir")) {
      dl_graph_print_dot(s.graph, NULL, out);
      break;
    }
    /* grad: what autodiff and the update left, one node per kernel */
    if (o.stage && !strcmp(o.stage, "grad")) o.no_simplify = o.no_fuse = true;
    if (!session_plan(&s, &o, session_batch(&s, &o))) goto done;
    dl_graph_print_dot(s.graph, s.prog, out);
    break;
  default: /* stages after planning */
    o.no_simplify = k == 3;
    if (!session_lower(&s, &o) || !session_plan(&s, &o, session_batch(&s, &o))) goto done;
    if (k == 3) {
      dl_graph_print(s.graph, s.prog->live, out);
      break;
    }
    if (k == 7) {
      dl_program_print(s.prog, out);
      break;
    }
    co.target = k == 6 ? DL_TARGET_NVPTX : DL_TARGET_CPU;
    text = k == 4   ? dl_emit_llvm_ir(s.cc, s.prog, &co)
           : k == 5 ? dl_emit_asm(s.cc, s.prog, &co)
                    : dl_emit_ptx(s.cc, s.prog, &co);
    if (!text) {
      driver_report(&s);
      goto done;
    }
    fputs(text, out);
    break;
  }
  status = 0;
done:
  if (out != stdout && fclose(out) != 0 && status == 0) {
    driver_error("cannot write '%s'", o.output);
    status = 1;
  }
  session_free(&s);
  return status;
}
