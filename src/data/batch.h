/*
 * batch.h: one micro-batch of token ids, what the data stage (dataset.c: batch_alloc,
 * batch_fill) hands the model (model.h: model_forward, model_backward). Its own header so that
 * src/data depends on this struct only, not on the model.
 */
#ifndef FT_DATA_BATCH_H
#define FT_DATA_BATCH_H

#include <stdint.h>

typedef struct batch {
    int B, T;     /* rows and padded length of this micro-batch */
    int32_t *ids; /* (B,T), 0 at padding */
    int32_t
        *targets; /* (B,T): the token each position predicts (labels shifted left), -100 = none */
    int *pos;     /* (B,T) positions (restarting at 0 in each packed document) */
    int *len;     /* (B) real length of each row */
    int *seg;     /* (B,T) document id of each token in packed rows, or NULL (no packing):
                     a token attends only to earlier tokens of its own document */
} batch;

#endif
