/* cmd_gradcheck.c - `dlcc gradcheck`: analytic gradients (reference
 * interpreter, double precision) against central finite differences, and the
 * JIT's float gradients against both. */
#include "driver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char gradcheck_help[] =
    "usage: dlcc gradcheck FILE.nnl [options]\n"
    "\n"
    "For every parameter, compare the gradient that autodiff derives (evaluated\n"
    "by the reference interpreter in double precision) with central finite\n"
    "differences of the loss, and the JIT-compiled float gradient with both.\n"
    "Inputs are the first rows of the train block's data, or seeded random\n"
    "values when the model has no data.  Prints the worst relative error per\n"
    "parameter and fails (exit 1) above the tolerance.\n"
    "\n"
    "options:\n"
    "  --model NAME  the model to check\n"
    "  --seed S      seed for parameters and random inputs (default: train block, else 0)\n"
    "  --batch B     rows to use (default: min(4, rows of data))\n"
    "  --tol X       relative tolerance (default 1e-4)\n";

/* Worst |a - b| relative to the larger magnitude of the reference. */
static double rel_err(const double *ref, const double *got, int64_t n) {
  double worst = 0, scale = 1e-6;
  for (int64_t i = 0; i < n; i++)
    scale = fmax(scale, fabs(ref[i]));
  for (int64_t i = 0; i < n; i++) {
    double e = fabs(ref[i] - got[i]);
    if (isnan(e)) return INFINITY;
    worst = fmax(worst, e);
  }
  return worst / scale;
}

int cmd_gradcheck(int argc, char **argv) {
  DriverOptions o;
  int rc = parse_command_args(&o, argc, argv, "--model --seed --batch --tol", gradcheck_help);
  if (rc) return rc == 2 ? 0 : 1;
  Session s = {0};
  DlrtDataset ds = {0};
  DlrtContext *ctx = NULL;
  DlInterp it = {0};
  double **leaf = NULL;
  int nleaf = 0;
  int status = 1;
  if (!session_lower(&s, &o)) goto done;
  DlGraph *g = s.graph;
  if (g->loss == DL_NONE) {
    driver_error("model '%s' has no loss to differentiate", g->name);
    goto done;
  }
  bool have_data = s.train.present && s.train.data.kind != DL_DATA_NONE;
  if (have_data && !session_load_train_data(&s, &ds)) goto done;
  int64_t n = o.batch > 0 ? o.batch : 4;
  if (have_data && n > ds.nrows) n = ds.nrows;
  int nfwd = g->nnodes;
  if (!session_plan(&s, &o, n) || !session_jit(&s, &o)) goto done;
  if (!s.rt->grad) {
    driver_error("model '%s' has no parameters that affect its loss", g->name);
    goto done;
  }
  DlrtError err = {{0}};
  uint64_t seed = o.seed >= 0 ? (uint64_t)o.seed : s.train.present ? s.train.seed : 0;
  ctx = dlrt_context_new(s.rt, seed, &err);
  if (!ctx) {
    driver_error("%s", err.msg);
    goto done;
  }

  /* Inputs: data rows, or seeded random values (targets uniform in (0, 1)). */
  session_fill_inputs(&s, ctx, have_data ? &ds : NULL, seed, n);

  /* The JIT first: it sets dropout's training mode and seed, which the
   * interpreter then reads with the other leaves. */
  if (dlrt_run_grad(ctx, n, &err) != 0) {
    driver_error("%s", err.msg);
    goto done;
  }
  /* The interpreter reads the same leaves, widened to double. */
  dl_interp_init(&it, g, n);
  nleaf = g->nnodes;
  leaf = calloc((size_t)nleaf, sizeof(double *));
  for (DlNodeId id = 0; id < g->nnodes; id++) {
    const DlNode *nd = &g->nodes[id];
    if (nd->op != DL_OP_INPUT && nd->op != DL_OP_PARAM && nd->op != DL_OP_HYPER) continue;
    int64_t total = dl_shape_numel(&nd->shape, n);
    leaf[id] = malloc(sizeof(double) * (size_t)(total ? total : 1));
    const float *src = ctx->mem + s.prog->offset[id];
    for (int64_t i = 0; i < total; i++)
      leaf[id][i] = src[i];
    it.values[id] = leaf[id];
  }
  /* Everything but the updates (ASSIGN writes parameters). */
  DlNodeId *eval = malloc(sizeof(DlNodeId) * (size_t)g->nnodes);
  int neval = 0;
  for (DlNodeId id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op != DL_OP_ASSIGN) eval[neval++] = id;
  dl_interp_run(&it, eval, neval);
  double loss_ref = it.values[g->loss][0];

  int li = dlrt_find_role(s.rt, DLRT_ROLE_LOSS);
  double loss_jit = dlrt_data(ctx, li)[0];
  double loss_err = fabs(loss_jit - loss_ref) / fmax(1e-6, fabs(loss_ref));

  printf("gradcheck %s: batch %lld, seed %llu, tolerance %g\n", g->name, (long long)n,
         (unsigned long long)seed, o.tol);
  printf("  loss: interpreter %.9g, jit %.9g, relative error %.2e\n", loss_ref, loss_jit, loss_err);
  printf("  %-16s %-14s %12s %14s %14s\n", "parameter", "shape", "max |grad|", "vs numeric",
         "jit vs exact");
  bool ok = loss_err <= o.tol;
  /* The forward prefix of the graph: everything up to the loss. */
  int nforward = g->loss + 1;
  for (DlNodeId p = 0; p < nfwd; p++) {
    const DlNode *nd = &g->nodes[p];
    if (nd->op != DL_OP_PARAM) continue;
    char sbuf[64];
    dl_shape_str(&nd->shape, sbuf, sizeof sbuf);
    int64_t total = dl_shape_numel(&nd->shape, 1);
    if (g->grad[p] == DL_NONE) {
      printf("  %-16s %-14s   (does not affect the loss)\n", nd->name, sbuf);
      continue;
    }
    const double *exact = it.values[g->grad[p]];
    /* Central differences on at most 64 evenly spaced elements. */
    int64_t nsample = total < 64 ? total : 64;
    double *num = malloc(sizeof(double) * (size_t)nsample);
    double *ex = malloc(sizeof(double) * (size_t)nsample);
    for (int64_t k = 0; k < nsample; k++) {
      int64_t i = k * total / nsample;
      double saved = leaf[p][i], h = 1e-5 * fmax(1.0, fabs(saved));
      leaf[p][i] = saved + h;
      dl_interp_run(&it, eval, nforward);
      double up = it.values[g->loss][0];
      leaf[p][i] = saved - h;
      dl_interp_run(&it, eval, nforward);
      double down = it.values[g->loss][0];
      leaf[p][i] = saved;
      num[k] = (up - down) / (2 * h);
      ex[k] = exact[i];
    }
    double e_num = rel_err(ex, num, nsample);
    /* JIT float gradient against the exact one, all elements. */
    int gi = dlrt_find(s.rt, nd->name, DLRT_ROLE_GRAD);
    double e_jit = INFINITY, gmax = 0;
    if (gi >= 0) {
      const float *jg = dlrt_data(ctx, gi);
      double *jd = malloc(sizeof(double) * (size_t)total);
      for (int64_t i = 0; i < total; i++) {
        jd[i] = jg[i];
        gmax = fmax(gmax, fabs(exact[i]));
      }
      e_jit = rel_err(exact, jd, total);
      free(jd);
    }
    bool pok = e_num <= o.tol && e_jit <= o.tol;
    ok &= pok;
    printf("  %-16s %-14s %12.4g %14.2e %14.2e  %s\n", nd->name, sbuf, gmax, e_num, e_jit,
           pok ? "ok" : "FAILED");
    free(num);
    free(ex);
    /* The finite differences re-evaluated the forward nodes; restore. */
    dl_interp_run(&it, eval, nforward);
  }
  free(eval);
  if (ok) {
    printf("gradcheck passed\n");
    status = 0;
  } else {
    printf("gradcheck FAILED: an error is above the tolerance %g\n", o.tol);
  }
done:
  if (it.values) {
    /* Leaves belong to us, not to the interpreter. */
    dl_interp_free(&it);
  }
  if (leaf) {
    for (int i = 0; i < nleaf; i++)
      free(leaf[i]);
    free(leaf);
  }
  dlrt_context_free(ctx);
  dlrt_dataset_free(&ds);
  session_free(&s);
  return status;
}
