/*
 * plan.h: the memory plan of a training run, computed from config.json and the options before
 * anything large is allocated. The numbers are the ones the allocations use (model_weight_bytes
 * for the frozen weights in their storage formats, acts_plan_bytes, the LoRA layout), plus the
 * process's own baseline.
 */
#ifndef FT_TRAIN_PLAN_H
#define FT_TRAIN_PLAN_H

#include "ftune.h"
#include "model/config.h"
#include "model/model.h"

typedef struct memory_plan {
    double weights, lora, optimizer, activations, panel, batch, baseline, total; /* bytes */
    size_t lora_params;
    int lora_modules;
} memory_plan;

/* targets as for --lora-targets; T is the longest sequence (--seq-len); q: how the frozen
 * weights are stored (model_quant_resolve). */
ft_status memory_plan_make(const model_config *cfg, const model_quant *q, int B, int T, int R,
                           const char *targets, int grad_checkpoint, memory_plan *p, ft_error *err);
/* The scratch of one frozen-weight matmul: the buffer a quantized matmul dequantizes a panel
 * of rows into (0 when all is fp32), or under bf16 compute the bf16 copies of a chunk of the
 * input rows and of a weight panel (B x T rows at most). */
double memory_plan_panel(const model_config *cfg, const model_quant *q, int B, int T);
/* The frozen weights one rank holds under --shard-base with N ranks: the fp32 norms and biases,
 * its slice of every layer's packed linear weights and of the LM head (the largest slice: N need
 * not divide), the two gather buffers (each the largest unit), and an embedding copy if one is
 * resident (a borrowed one is read from the file). */
double memory_plan_shard_weights(const model_config *cfg, const model_quant *q, int N);
/* memory_plan_make for one of N ranks: with shard, weights as above. */
void memory_plan_ranks(memory_plan *p, const model_config *cfg, const model_quant *q, int N,
                       int shard);
/* MemAvailable from /proc/meminfo in bytes, or 0 if unknown; the environment variable
 * FTUNE_MEMORY_MB, when set, replaces it (a budget, e.g. on a shared machine). */
double memory_available(void);

#endif
