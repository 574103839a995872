/* training.h - what `dlcc train`, `dlcc eval` and `dlcc lr-find` share:
 * a compiled model with its data, a context, and the training loop's
 * options from the train block and the flags (tools/cmd_train.c). */
#ifndef DLCC_TRAINING_H
#define DLCC_TRAINING_H

#include "driver.h"

typedef struct Prepared {
  Session s;
  DataSplits data;
  DlrtContext *ctx;
  DlrtTrainOptions to;
  DlOptimizer opt;
  uint64_t seed;
} Prepared;

/* Lower, load the data, plan for its batch, JIT, make a context (from
 * --load or --resume), and fill in the training options.  false after
 * printing diagnostics. */
bool prepare_training(Prepared *p, const DriverOptions *o);
void prepared_free(Prepared *p);

#endif
