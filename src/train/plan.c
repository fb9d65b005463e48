/*
 * plan.c: how much memory a run will take, by part (see plan.h).
 *
 * Parts: frozen weights in their storage formats (model_weight_bytes: per-format bytes per
 * value with the absmax / double-quantization state; an embedding left in the mapped file in
 * its own dtype is read a row at a time and not resident); the scratch of the largest
 * frozen-weight matmul (model_matmul_scratch_bytes: a dequantized panel, or under --dtype bf16
 * the bf16 copies of an input chunk and a weight panel and the bf16 GEMM's own); LoRA
 * parameters and their gradients; AdamW's two moments; activations saved for backward and the
 * scratch of one step (with gradient checkpointing: the layer inputs, in fp32 or bf16, one
 * layer's worth, and its MLP a chunk of rows at a time: model/acts.c's acts_sizes); the batch
 * buffers; and a baseline for the program, its libraries and the BLAS buffers, measured at about 10
 * MB on Debian 12 / OpenBLAS 0.3.21 (peak RSS of a tiny eval).
 */
#include "train/plan.h"
#include "model/lora.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASELINE_BYTES (12.0 * 1048576.0)
#define MPI_BASELINE_BYTES (13.5 * 1048576.0)

double memory_plan_panel(const model_config *cfg, const model_quant *q, int B, int T) {
    return (double)model_matmul_scratch_bytes(cfg, q, B * T);
}

ft_status memory_plan_make(const model_config *cfg, const model_quant *q, int B, int T, int R,
                           const char *targets, int grad_checkpoint, memory_plan *p,
                           ft_error *err) {
    memset(p, 0, sizeof *p);
    unsigned mask;
    ft_status st = lora_parse_targets(cfg, targets, &mask, err);
    if (st) return st;
    lora_set *ls = NULL;
    if ((st = lora_create(cfg, R, R, 0, 0, mask, NULL, &ls, err))) return st;
    p->lora_params = ls->n_params;
    p->lora_modules = ls->n;
    lora_free(ls);
    p->weights = (double)model_weight_bytes(cfg, q);
    p->panel = memory_plan_panel(cfg, q, B, T);
    p->lora = 2.0 * p->lora_params * sizeof(float);      /* values + gradients */
    p->optimizer = 2.0 * p->lora_params * sizeof(float); /* exp_avg, exp_avg_sq */
    p->activations = (double)acts_plan_bytes(cfg, R, p->lora_modules, B, T, grad_checkpoint,
                                             q->compute == QC_BF16);
    p->batch = 4.0 * B * T * sizeof(int32_t);
    p->baseline = BASELINE_BYTES;
    p->total =
        p->weights + p->lora + p->optimizer + p->activations + p->panel + p->batch + p->baseline;
    return FT_OK;
}

double memory_plan_shard_weights(const model_config *cfg, const model_quant *q, int N) {
    double w = (double)model_fp32_bytes(cfg), biggest = 0;
    for (int l = 0, n = cfg->L + model_head_chunks(cfg, q); l < n; l++) {
        size_t u = model_shard_unit_bytes(cfg, q, l), units = u / 64;
        w += (double)((units + (size_t)N - 1) / (size_t)N) * 64.0;
        if ((double)u > biggest) biggest = (double)u;
    }
    /* an embedding that is neither read from the file nor the head's pages stays whole */
    if (!q->embed_borrowed) w += (double)qtensor_size_for(q->embed, cfg->V, cfg->C, 1, 0);
    return w + 2.0 * biggest;
}

void memory_plan_ranks(memory_plan *p, const model_config *cfg, const model_quant *q, int N,
                       int shard) {
    if (N <= 1) return;
    /* Open MPI's libraries and TCP buffers in each rank: measured 13.6 MB of peak RSS (a 2-rank
     * run against one process, Open MPI 4.1.4 over TCP, Debian 12) */
    p->baseline += MPI_BASELINE_BYTES, p->total += MPI_BASELINE_BYTES;
    if (!shard) return;
    p->total -= p->weights;
    p->weights = memory_plan_shard_weights(cfg, q, N);
    p->total += p->weights;
}

double memory_available(void) {
    /* FTUNE_MEMORY_MB: a budget smaller than the machine's (a shared host; the tests) */
    const char *cap = getenv("FTUNE_MEMORY_MB");
    if (cap && atof(cap) > 0) return atof(cap) * 1048576.0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024.0;
}
