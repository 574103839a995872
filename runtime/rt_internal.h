/* rt_internal.h - helpers shared by the runtime's source files; not part of
 * the ABI (user code includes dlrt.h only). */
#ifndef DLRT_INTERNAL_H
#define DLRT_INTERNAL_H

#include "dlrt.h"

/* Format a message into err (when not NULL); always returns -1 so that
 * callers can write `return dlrt_fail(err, ...)`. */
int dlrt_fail(DlrtError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The RNG stream of a named parameter: a hash of its name alone, so that a
 * parameter's initial values do not depend on which other parameters exist. */
uint64_t dlrt_name_stream(const char *name);

/* Element count of t at batch size n, or -1 when a dimension is negative
 * (other than the batch marker) or the product overflows int64. */
int64_t dlrt_checked_numel(const DlrtTensor *t, int64_t n);

/* Whether a row of `width` values counts as correct under the accuracy rule
 * of dlrt_accuracy (the caller has checked that targets are all 0 or 1). */
bool dlrt_row_correct(const float *pred, const float *target, int64_t width);
/* Whether every one of the count values is exactly 0 or 1. */
bool dlrt_all_binary(const float *values, int64_t count);

/* Run an entry on the context's memory and thread pool (made here at the
 * first run when the context wants more than one thread). */
void dlrt_call_entry(DlrtContext *ctx, DlrtEntryFn entry, int64_t n);

/* Floats of all parameters together (the size of DlrtContext.best). */
int64_t dlrt_param_floats(const DlrtProgram *prog);

/* "[2,4]" or "[N,3]" into buf (always NUL-terminated); returns buf. */
const char *dlrt_format_dims(char *buf, size_t size, const int64_t *dims, int rank);

#endif
