/* check.h - the assertion macros the C unit tests share.  A failed check
 * prints where and what, and the test's main returns nonzero at the end. */
#ifndef DLCC_TEST_CHECK_H
#define DLCC_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures __attribute__((unused));

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                     \
      check_failures++;                                                                            \
    }                                                                                              \
  } while (0)

/* The error message (a struct with a msg member) contains `want`. */
#define CHECK_MSG(err, want)                                                                       \
  do {                                                                                             \
    if (!strstr((err).msg, (want))) {                                                              \
      fprintf(stderr, "%s:%d: message '%s' does not contain '%s'\n", __FILE__, __LINE__,           \
              (err).msg, (want));                                                                  \
      check_failures++;                                                                            \
    }                                                                                              \
  } while (0)

/* A fresh scratch directory under $TMPDIR (or /tmp): prefix, an underscore
 * and six characters mkdtemp picks (the X's of its template).  A test
 * cannot go on without one, so failure ends the test. */
static inline void check_temp_dir(char *dir, size_t size, const char *prefix) {
  const char *base = getenv("TMPDIR");
  snprintf(dir, size, "%s/%s_XXXXXX", base && base[0] ? base : "/tmp", prefix);
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    exit(2);
  }
}

#endif
