/*
 * dataset.h: training examples as token ids with labels, and micro-batches built from them.
 *
 * This is the minimal input of the core trainer: JSONL lines {"input_ids": [...], "labels": [...]}
 * (labels optional, -100 = not trained on). Labels are unshifted as in transformers: position t
 * is trained to predict labels[t + 1].
 */
#ifndef FT_DATA_DATASET_H
#define FT_DATA_DATASET_H

#include "ftune.h"
#include "model/model.h"

typedef struct example {
    int32_t *ids;
    int32_t *labels;
    int n;
} example;

typedef struct dataset {
    example *ex;
    int n;
    int n_truncated; /* examples cut to seq_len */
    long tokens;     /* after truncation */
    int max_len;     /* longest example after truncation */
} dataset;

/* Read FILE.jsonl; examples longer than seq_len (> 0) keep their first seq_len tokens. Every id
 * must be in [0, vocab). Errors name FILE:LINE and the field. */
ft_status dataset_load_ids(const char *path, int seq_len, int vocab, dataset *ds, ft_error *err);
void dataset_free(dataset *ds);

/* Tokens of example e that count in the loss (targets that are not -100). */
long example_counted(const example *e);

/* Space for micro-batches of up to maxB rows of maxT tokens. */
ft_status batch_alloc(batch *b, int maxB, int maxT, ft_error *err);
void batch_free(batch *b);
/* Fill b with examples idx[0..nb): right-padded to the longest, positions 0..len-1,
 * targets[t] = labels[t + 1] (and -100 at the last real position and at padding). */
void batch_fill(batch *b, const dataset *ds, const int *idx, int nb);

#endif
