/* dlcc.c - main: dispatch to commands, help, option parsing. */
#include "driver.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: dlcc <command> [options] FILE.nnl\n"
    "\n"
    "dlcc compiles neural networks written in the .nnl language with LLVM.\n"
    "\n"
    "commands:\n"
    "  train      train a model (JIT) and report loss and accuracy per epoch\n"
    "  run        run a model forward and print its output\n"
    "  compile    write an object file and a C header for a model\n"
    "  emit       print a stage of the compiler: tokens ast ir ir-grad ir-opt dot llvm asm ptx\n"
    "  gradcheck  check every parameter's gradient against finite differences\n"
    "  eval       loss, accuracy and confusion matrix of a checkpoint on the test data\n"
    "  lr-find    learning-rate range test: sweep the rate up over one pass, suggest one\n"
    "  bench      time the compiled training step (and inference) on random data\n"
    "  explain    work one training step through by hand: forward, chain rule, update\n"
    "  repl       an interactive prompt: evaluate expressions, train, inspect\n"
    "\n"
    "  dlcc <command> --help   options of a command\n"
    "  dlcc --version          version\n";

void driver_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("dlcc: error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

void options_init(DriverOptions *o) {
  memset(o, 0, sizeof(*o));
  o->epochs = -1;
  o->lr = -1;
  o->batch = -1;
  o->seed = -1;
  o->tol = 1e-4;
  o->opt_level = 3;
  o->momentum = o->weight_decay = o->clip = o->warmup = o->validation = o->noise = -1;
  o->lr_start = o->lr_end = -1;
  o->patience = o->limit = o->shift = o->stop_after = -1;
  o->progress = -1;
  o->steps = -1;
  o->threads = -1;
}

static bool allowed_opt(const char *allowed, const char *name) {
  size_t n = strlen(name);
  for (const char *p = strstr(allowed, name); p; p = strstr(p + 1, name))
    if ((p == allowed || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) return true;
  return false;
}

static bool parse_int(const char *opt, const char *v, int64_t min, int64_t *out) {
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || *end || end == v || x < min) {
    driver_error("invalid value '%s' for %s: expected an integer >= %lld", v, opt, (long long)min);
    return false;
  }
  *out = x;
  return true;
}

static bool parse_double(const char *opt, const char *v, double *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || *end || end == v || !isfinite(x) || x <= 0) {
    driver_error("invalid value '%s' for %s: expected a positive number", v, opt);
    return false;
  }
  *out = x;
  return true;
}

static bool parse_nonnegative(const char *opt, const char *v, double *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || *end || end == v || !isfinite(x) || x < 0) {
    driver_error("invalid value '%s' for %s: expected a number >= 0", v, opt);
    return false;
  }
  *out = x;
  return true;
}

/* Where the value of a numeric training option goes, or NULL. */
static int64_t *int_option(DriverOptions *o, const char *a) {
  if (!strcmp(a, "--patience")) return &o->patience;
  if (!strcmp(a, "--limit")) return &o->limit;
  if (!strcmp(a, "--shift")) return &o->shift;
  if (!strcmp(a, "--stop-after")) return &o->stop_after;
  return NULL;
}
static double *nonnegative_option(DriverOptions *o, const char *a) {
  if (!strcmp(a, "--momentum")) return &o->momentum;
  if (!strcmp(a, "--weight-decay")) return &o->weight_decay;
  if (!strcmp(a, "--warmup")) return &o->warmup;
  if (!strcmp(a, "--noise")) return &o->noise;
  return NULL;
}
static double *positive_option(DriverOptions *o, const char *a) {
  if (!strcmp(a, "--clip")) return &o->clip;
  if (!strcmp(a, "--validation")) return &o->validation;
  if (!strcmp(a, "--start")) return &o->lr_start;
  if (!strcmp(a, "--end")) return &o->lr_end;
  return NULL;
}

int parse_common_option(DriverOptions *o, int argc, char **argv, int i, const char *allowed) {
  const char *a = argv[i];
  if (!allowed_opt(allowed, a)) return 0;
  /* Flags without a value. */
  if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
    o->quiet = true;
    return 1;
  }
  if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
    o->verbose = true;
    return 1;
  }
  if (!strcmp(a, "--stats")) {
    o->stats = true;
    return 1;
  }
  if (!strcmp(a, "--infer")) {
    o->infer = true;
    return 1;
  }
  if (!strcmp(a, "--no-fuse")) {
    o->no_fuse = true;
    return 1;
  }
  if (!strcmp(a, "--progress") || !strcmp(a, "--no-progress")) {
    o->progress = a[2] == 'p';
    return 1;
  }
  if (!strcmp(a, "-O0") || !strcmp(a, "-O1") || !strcmp(a, "-O2") || !strcmp(a, "-O3")) {
    o->opt_level = a[2] - '0';
    return 1;
  }
  if (i + 1 >= argc) {
    driver_error("option %s needs a value", a);
    return -1;
  }
  const char *v = argv[i + 1];
  int64_t x;
  double x_double;
  if (!strcmp(a, "--model"))
    o->model = v;
  else if (!strcmp(a, "-o"))
    o->output = v;
  else if (!strcmp(a, "--header"))
    o->header = v;
  else if (!strcmp(a, "--save"))
    o->save = v;
  else if (!strcmp(a, "--load"))
    o->load = v;
  else if (!strcmp(a, "--log"))
    o->log = v;
  else if (!strcmp(a, "--input"))
    o->input = v;
  else if (!strcmp(a, "--arch")) {
    if (strcmp(v, "sm_80") && strcmp(v, "sm_86") && strcmp(v, "sm_89") && strcmp(v, "sm_90")) {
      driver_error("unsupported --arch '%s': expected sm_80, sm_86, sm_89 or sm_90", v);
      return -1;
    }
    o->arch = v;
  } else if (!strcmp(a, "--prefix"))
    o->prefix = v;
  else if (!strcmp(a, "--stage")) {
    if (strcmp(v, "ir") && strcmp(v, "grad") && strcmp(v, "opt")) {
      driver_error("unknown --stage '%s': expected ir, grad or opt", v);
      return -1;
    }
    o->stage = v;
  } else if (!strcmp(a, "--epochs")) {
    if (!parse_int(a, v, 1, &x)) return -1;
    o->epochs = x;
  } else if (!strcmp(a, "--batch")) {
    if (!parse_int(a, v, 1, &x)) return -1;
    o->batch = x;
  } else if (!strcmp(a, "--steps")) {
    if (!parse_int(a, v, 1, &x)) return -1;
    o->steps = x;
  } else if (!strcmp(a, "--threads")) {
    if (!parse_int(a, v, 1, &x)) return -1;
    o->threads = x;
  } else if (!strcmp(a, "--seed")) {
    if (!parse_int(a, v, 0, &x)) return -1;
    o->seed = x;
  } else if (!strcmp(a, "--lr")) {
    /* A list (--lr 0.01,0.1) is a sweep; each rate must be valid. */
    char buf[64];
    for (const char *p = v; *p;) {
      size_t n = strcspn(p, ",");
      snprintf(buf, sizeof buf, "%.*s", (int)(n < sizeof buf ? n : sizeof buf - 1), p);
      double x;
      if (!parse_double(a, buf, &x)) return -1;
      if (p == v) o->lr = x;
      p += n;
      if (*p == ',') {
        o->lr_list = v;
        if (!*++p) {
          driver_error("invalid value '%s' for --lr: expected rates separated by commas", v);
          return -1;
        }
      }
    }
  } else if (!strcmp(a, "--tol")) {
    if (!parse_double(a, v, &o->tol)) return -1;
  } else if (!strcmp(a, "--resume"))
    o->resume = v;
  else if (!strcmp(a, "--plot"))
    o->plot = v;
  else if (!strcmp(a, "--optimizer"))
    o->optimizer = v;
  else if (!strcmp(a, "--schedule"))
    o->schedule = v;
  else if (!strcmp(a, "--split"))
    o->split = v;
  else if (int_option(o, a)) {
    if (!parse_int(a, v, 1, &x)) return -1;
    *int_option(o, a) = x;
  } else if (nonnegative_option(o, a)) {
    if (!parse_nonnegative(a, v, &x_double)) return -1;
    *nonnegative_option(o, a) = x_double;
  } else if (positive_option(o, a)) {
    if (!parse_double(a, v, &x_double)) return -1;
    if (!strcmp(a, "--validation") && x_double >= 1) {
      driver_error("invalid value '%s' for --validation: expected a fraction between 0 and 1", v);
      return -1;
    }
    *positive_option(o, a) = x_double;
  } else {
    return 0;
  }
  return 2;
}

/* Parse FILE and the options a command allows; prints help for --help.
 * Returns 0 to go on, 1 on a usage error, 2 when help was printed. */
int parse_command_args(DriverOptions *o, int argc, char **argv, const char *allowed,
                       const char *help) {
  options_init(o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(help, stdout);
      return 2;
    }
    int used = parse_common_option(o, argc, argv, i, allowed);
    if (used < 0) return 1;
    if (used > 0) {
      i += used - 1;
      continue;
    }
    if (a[0] == '-' && a[1]) {
      driver_error("unknown option '%s' for 'dlcc %s' (see 'dlcc %s --help')", a, argv[0], argv[0]);
      return 1;
    }
    if (o->file) {
      driver_error("more than one input file: '%s' and '%s'", o->file, a);
      return 1;
    }
    o->file = a;
  }
  if (!o->file) {
    driver_error("no input file (see 'dlcc %s --help')", argv[0]);
    return 1;
  }
  return 0;
}

static int dispatch(const char *cmd, int argc, char **argv) {
  if (!strcmp(cmd, "train")) return cmd_train(argc, argv);
  if (!strcmp(cmd, "run")) return cmd_run(argc, argv);
  if (!strcmp(cmd, "compile")) return cmd_compile(argc, argv);
  if (!strcmp(cmd, "emit")) return cmd_emit(argc, argv);
  if (!strcmp(cmd, "gradcheck")) return cmd_gradcheck(argc, argv);
  if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
  if (!strcmp(cmd, "lr-find")) return cmd_lr_find(argc, argv);
  if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
  if (!strcmp(cmd, "explain")) return cmd_explain(argc, argv);
  if (!strcmp(cmd, "repl")) return cmd_repl(argc, argv);
  driver_error("unknown command '%s' (see 'dlcc --help')", cmd);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_text, stderr);
    return 1;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "help") && argc > 2) {
    /* `dlcc help train` is `dlcc train --help`. */
    char *sub[] = {argv[2], "--help", NULL};
    return dispatch(argv[2], 2, sub);
  }
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    printf("dlcc %s (LLVM 19)\n", DLCC_VERSION);
    return 0;
  }
  return dispatch(cmd, argc - 1, argv + 1);
}
