/*
 * loop.h: one optimizer step of LoRA training (train_step) and the evaluation loss, the pieces
 * of the training loop that the data-parallel and preference-training work call.
 *
 * One optimizer step = grad_accum micro-batches of batch_size examples (the last step of an epoch
 * takes what is left, as transformers' Trainer does). Before the step's first forward pass the
 * counted tokens of all its micro-batches are summed, so every micro-batch's gradient is scaled by
 * 1 / (counted tokens of the whole step): the loss is the same whatever the padding, the split into
 * micro-batches or the accumulation (transformers' num_items_in_batch). Then: global-norm
 * clipping, the schedule's learning rate, AdamW.
 *
 * With N ranks (src/dist/, docs/distributed.md) grad_accum is the step's micro-batches over all
 * ranks: rank r runs the contiguous share [n*r/N, n*(r+1)/N) of the step's n micro-batches, with
 * the dropout seeds of their global indices; then the LoRA gradients are summed over the ranks in
 * rank order and the micro-batch losses gathered, so every rank clips and steps AdamW on the same
 * numbers. Every rank reads all the data, so the step's counted tokens are known to each before
 * the first forward pass, as in one process.
 */
#ifndef FT_TRAIN_LOOP_H
#define FT_TRAIN_LOOP_H

#include "data/dataset.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/optim.h"

typedef struct train_loop {
    model *m;
    acts *a;
    batch *b;
    adamw *opt;
    const dataset *ds;
    int *order; /* this epoch's order of examples (ds->n) */
    int batch_size, grad_accum, shuffle;
    uint64_t seed;
    double lr, max_grad_norm;
    const char *schedule;
    long warmup_steps, total_steps;
    long micro_per_epoch; /* micro-batches in an epoch */
    int rank, nranks;     /* this process's rank of nranks (1: one process) */
    double *mb_loss;      /* nranks > 1: the step's micro-batch losses (grad_accum, capped at
                             micro_per_epoch) */
    size_t *seg;          /* nranks > 1: layer l's LoRA gradients are grads[seg[l], seg[l+1])
                             (L + 1 entries), reduced while backward goes on below it; NULL:
                             one reduction after the step's backward passes */
} train_loop;

/* The layer segments of the LoRA gradients when the modules lie layer after layer in them (as
 * lora_create lays them out); NULL when they do not (or out of memory). */
size_t *train_grad_segments(const lora_set *ls, int L);

typedef struct step_result {
    double loss, lr, grad_norm;
    long tokens, counted; /* tokens of the step, and those with a loss */
    double seconds;
    /* several ranks: seconds blocked waiting for the gradient sum, the sum's span from its
     * first layer's start to its end (mostly behind backward), and seconds waiting for
     * --shard-base all-gathers */
    double comm_wait_s, comm_s, gather_wait_s, gathered_bytes;
    const char *diverged; /* NULL, or "loss is nan", "gradient norm is inf", ...: the step's
                             AdamW update was not made */
} step_result;

/* The order of examples in an epoch: file order, or a seeded Fisher-Yates shuffle. */
void epoch_order(int *order, int n, int shuffle, uint64_t seed, long epoch);
/* Optimizer step ts->step + 1: advances ts (step, epoch, data position) and l->order. */
void train_step(train_loop *l, train_state *ts, step_result *res);
/* The fractional epoch of the data position in ts. */
double train_epoch(const train_loop *l, const train_state *ts);
/* Mean token loss over every example of val, in micro-batches of B rows of b. */
double eval_loss(const model *m, acts *a, batch *b, int B, const dataset *val, long *count);

#endif
