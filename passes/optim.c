/* optim.c - the optimizer update as IR appended to the training step.
 *
 * Writing the update as ordinary nodes means it is planned, fused and
 * compiled like the rest of the step, on every target, and the reference
 * interpreter checks it too.  Optimiser state lives in PARAM leaves with the
 * role DL_PARAM_STATE; ASSIGN writes the new state and parameters, and the
 * planner runs every ASSIGN after every other kernel, so each update reads
 * the values of this step, never ones already overwritten.
 *
 * With g the gradient of parameter p (in the order PyTorch applies them):
 *
 *   clipping      g <- g * clip / max(norm, clip),  norm = sqrt(sum of all g^2)
 *   L2 decay      g <- g + wd * p                   (SGD, Adam)
 *   SGD           p <- p - lr * g
 *   momentum      v <- mu v + g;  p <- p - lr * v   (Nesterov: p - lr (g + mu v))
 *   Adam          m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *                 p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *   AdamW         the same, with p <- p - lr wd p folded into the update
 *                 (decoupled weight decay) instead of L2 decay
 */
#include "passes.h"

#include <math.h>
#include <string.h>

DlOptimizer dl_optimizer_default(DlOptimKind kind, double lr) {
  DlOptimizer o;
  memset(&o, 0, sizeof o);
  o.kind = kind;
  o.lr = lr;
  o.beta1 = 0.9;
  o.beta2 = 0.999;
  o.eps = 1e-8;
  return o;
}

typedef struct Optim {
  DlGraph *g;
  const DlOptimizer *opt;
  DlNodeId lr;     /* the "lr" hyper */
  DlNodeId scale;  /* gradient clipping factor, DL_NONE without clipping */
  DlNodeId step_m; /* Adam: lr / (1 - b1^t) */
  DlNodeId corr_v; /* Adam: sqrt(1 - b2^t) */
} Optim;

static DlNodeId k(DlGraph *g, DlLoc loc, double v) {
  return dl_const_scalar(g, loc, v);
}
static DlNodeId mul(DlGraph *g, DlLoc loc, DlNodeId a, DlNodeId b) {
  return dl_binary(g, DL_OP_MUL, loc, a, b);
}
static DlNodeId add(DlGraph *g, DlLoc loc, DlNodeId a, DlNodeId b) {
  return dl_binary(g, DL_OP_ADD, loc, a, b);
}
static DlNodeId sub(DlGraph *g, DlLoc loc, DlNodeId a, DlNodeId b) {
  return dl_binary(g, DL_OP_SUB, loc, a, b);
}
static DlNodeId divide(DlGraph *g, DlLoc loc, DlNodeId a, DlNodeId b) {
  return dl_binary(g, DL_OP_DIV, loc, a, b);
}

/* A zero-initialised optimiser-state leaf shaped like parameter p. */
static DlNodeId state_leaf(DlGraph *g, DlNodeId p, const char *what) {
  const DlNode *nd = dl_node(g, p);
  DlInit init = {.kind = DL_INIT_ZERO};
  const char *name = dl_arena_printf(g->cc->arena, "optim/%s/%s", what, nd->name);
  DlNodeId id = dl_param(g, nd->loc, name, nd->shape, init);
  if (id != DL_NONE) g->nodes[id].param_role = DL_PARAM_STATE;
  return id;
}

/* clip / max(norm, clip), with max(a, b) = (a + b + |a - b|) / 2: the IR has
 * no max, and this form is exact enough for a factor that is 1 whenever the
 * norm is below the threshold. */
static DlNodeId clip_scale(DlGraph *g, DlLoc loc, double clip) {
  DlNodeId total = DL_NONE;
  for (DlNodeId p = 0; p < g->ngrad; p++) {
    if (g->nodes[p].op != DL_OP_PARAM || g->grad[p] == DL_NONE) continue;
    DlNodeId gp = g->grad[p];
    DlNodeId sq = dl_reduce(g, DL_OP_SUM, loc, mul(g, loc, gp, gp), 0, false);
    total = total == DL_NONE ? sq : add(g, loc, total, sq);
  }
  if (total == DL_NONE) return DL_NONE;
  DlNodeId norm = dl_unary(g, DL_OP_SQRT, loc, total);
  dl_node_set_name(g, norm, "grad_norm");
  DlNodeId c = k(g, loc, clip);
  DlNodeId diff = dl_unary(g, DL_OP_ABS, loc, sub(g, loc, norm, c));
  DlNodeId larger = mul(g, loc, k(g, loc, 0.5), add(g, loc, add(g, loc, norm, c), diff));
  return divide(g, loc, c, larger);
}

/* lr / (1 - b1^t) and sqrt(1 - b2^t), shared by every parameter. */
static void adam_corrections(Optim *o, DlLoc loc) {
  DlGraph *g = o->g;
  DlNodeId t = dl_hyper(g, loc, "train.step", 1.0);
  DlNodeId one = k(g, loc, 1.0);
  DlNodeId c1 = sub(g, loc, one, dl_binary(g, DL_OP_POW, loc, k(g, loc, o->opt->beta1), t));
  DlNodeId c2 = sub(g, loc, one, dl_binary(g, DL_OP_POW, loc, k(g, loc, o->opt->beta2), t));
  o->step_m = divide(g, loc, o->lr, c1);
  o->corr_v = dl_unary(g, DL_OP_SQRT, loc, c2);
}

/* The new value of parameter p from its (clipped, decayed) gradient gp. */
static DlNodeId sgd_update(Optim *o, DlNodeId p, DlNodeId gp, DlLoc loc) {
  DlGraph *g = o->g;
  const DlOptimizer *opt = o->opt;
  DlNodeId dir = gp;
  if (opt->momentum > 0) {
    DlNodeId v = state_leaf(g, p, "velocity");
    DlNodeId mu = k(g, loc, opt->momentum);
    DlNodeId v_new = add(g, loc, mul(g, loc, mu, v), gp);
    dl_assign(g, loc, v, v_new);
    dir = opt->nesterov ? add(g, loc, gp, mul(g, loc, mu, v_new)) : v_new;
  }
  return sub(g, loc, p, mul(g, loc, o->lr, dir));
}

static DlNodeId adam_update(Optim *o, DlNodeId p, DlNodeId gp, DlLoc loc) {
  DlGraph *g = o->g;
  const DlOptimizer *opt = o->opt;
  DlNodeId m = state_leaf(g, p, "m");
  DlNodeId v = state_leaf(g, p, "v");
  DlNodeId m_new = add(g, loc, mul(g, loc, k(g, loc, opt->beta1), m),
                       mul(g, loc, k(g, loc, 1.0 - opt->beta1), gp));
  DlNodeId v_new = add(g, loc, mul(g, loc, k(g, loc, opt->beta2), v),
                       mul(g, loc, k(g, loc, 1.0 - opt->beta2), mul(g, loc, gp, gp)));
  dl_assign(g, loc, m, m_new);
  dl_assign(g, loc, v, v_new);
  DlNodeId denom = add(g, loc, divide(g, loc, dl_unary(g, DL_OP_SQRT, loc, v_new), o->corr_v),
                       k(g, loc, opt->eps));
  DlNodeId base = p;
  if (opt->kind == DL_OPTIM_ADAMW && opt->weight_decay > 0)
    base = sub(g, loc, p, mul(g, loc, mul(g, loc, o->lr, k(g, loc, opt->weight_decay)), p));
  return sub(g, loc, base, mul(g, loc, o->step_m, divide(g, loc, m_new, denom)));
}

bool dl_append_optimizer(DlGraph *g, const DlOptimizer *opt) {
  if (!g->grad) return false;
  Optim o = {.g = g, .opt = opt, .lr = DL_NONE, .scale = DL_NONE};
  /* Parameters are the PARAM nodes that existed when autodiff ran. */
  int nparams = g->ngrad;
  for (DlNodeId p = 0; p < nparams; p++) {
    if (g->nodes[p].op != DL_OP_PARAM || g->grad[p] == DL_NONE) continue;
    DlLoc loc = g->nodes[p].loc;
    if (o.lr == DL_NONE) {
      /* Everything shared is built once, at the first parameter. */
      o.lr = dl_hyper(g, loc, "lr", opt->lr);
      if (opt->clip_norm > 0) o.scale = clip_scale(g, loc, opt->clip_norm);
      if (opt->kind != DL_OPTIM_SGD) adam_corrections(&o, loc);
    }
    DlNodeId gp = g->grad[p];
    if (o.scale != DL_NONE) gp = mul(g, loc, gp, o.scale);
    if (opt->weight_decay > 0 && opt->kind != DL_OPTIM_ADAMW)
      gp = add(g, loc, gp, mul(g, loc, k(g, loc, opt->weight_decay), p));
    DlNodeId upd = DL_NONE;
    switch (opt->kind) {
    case DL_OPTIM_SGD: upd = sgd_update(&o, p, gp, loc); break;
    case DL_OPTIM_ADAM:
    case DL_OPTIM_ADAMW: upd = adam_update(&o, p, gp, loc); break;
    }
    dl_assign(g, loc, p, upd);
  }
  return !dl_failed(g->cc);
}

bool dl_append_sgd(DlGraph *g, double lr) {
  DlOptimizer opt = dl_optimizer_default(DL_OPTIM_SGD, lr);
  return dl_append_optimizer(g, &opt);
}
