/* ckpt_check - compare the tensors of a safetensors checkpoint with expected
 * values, for end-to-end tests.
 *
 *   ckpt_check FILE TOL NAME=v1,v2,... [NAME=...]
 *
 * Each named tensor must exist and have exactly the listed number of
 * elements (row-major); every element must be within TOL (absolute).
 * Exit 0 when all match, 1 otherwise (printing each mismatch). */
#include "dlrt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: ckpt_check FILE TOL NAME=v1,v2,... [...]\n");
    return 1;
  }
  DlrtStFile f;
  DlrtError err;
  if (dlrt_safetensors_read(argv[1], &f, &err) != 0) {
    fprintf(stderr, "ckpt_check: %s\n", err.msg);
    return 1;
  }
  double tol = atof(argv[2]);
  int bad = 0;
  for (int a = 3; a < argc; a++) {
    char *spec = strdup(argv[a]);
    char *eq = strchr(spec, '=');
    if (!eq) {
      fprintf(stderr, "ckpt_check: expected NAME=values, got '%s'\n", argv[a]);
      return 1;
    }
    *eq = 0;
    const DlrtStTensor *t = NULL;
    for (int i = 0; i < f.ntensors; i++)
      if (!strcmp(f.tensors[i].name, spec)) t = &f.tensors[i];
    if (!t) {
      printf("%s: missing from %s\n", spec, argv[1]);
      bad++;
      free(spec);
      continue;
    }
    int64_t k = 0;
    for (char *tok = strtok(eq + 1, ","); tok; tok = strtok(NULL, ","), k++) {
      double want = atof(tok);
      if (k >= t->numel) {
        printf("%s: has %lld elements, more were expected\n", spec, (long long)t->numel);
        bad++;
        break;
      }
      double got = t->data[k];
      bool ok = fabs(got - want) <= tol;
      printf("%s[%lld] = %.9g (expected %.9g) %s\n", spec, (long long)k, got, want,
             ok ? "ok" : "MISMATCH");
      bad += !ok;
    }
    if (k != t->numel) {
      printf("%s: has %lld elements, %lld were listed\n", spec, (long long)t->numel, (long long)k);
      bad++;
    }
    free(spec);
  }
  dlrt_safetensors_free(&f);
  return bad ? 1 : 0;
}
