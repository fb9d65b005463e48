/*
 * plan.c: how much memory a run will take, by part (see plan.h).
 *
 * Parts: frozen weights in their storage formats (model_weight_bytes: per-format bytes per
 * value with the absmax / double-quantization state; an embedding left in the mapped file in
 * its own dtype is read a row at a time and not resident); the buffer a quantized matmul
 * dequantizes a panel of rows into (qtensor.c's PANEL_BYTES), or under --dtype bf16 the bf16
 * copies of an input chunk and a weight panel; LoRA parameters and their gradients; AdamW's two moments; activations saved for
 * backward and the scratch of one step (with gradient checkpointing:
 * the layer inputs, in fp32 or bf16, one layer's worth, and its MLP a chunk of rows at a time:
 * model.c's acts_sizes); the batch buffers; and a baseline for the program, its libraries and the BLAS
 * buffers, measured at about 10 MB on Debian 12 / OpenBLAS 0.3.21 (peak RSS of a tiny eval).
 */
#include "train/plan.h"
#include "model/lora.h"
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASELINE_BYTES (12.0 * 1048576.0)

/* qtensor.c dequantizes panels of about 1.5 MB of fp32 for non-fp32 weights */
#define PANEL_BYTES (1536.0 * 1024.0)

/* Under --dtype bf16 (QC_BF16) qtensor.c rounds a chunk of the input rows to bf16 (about
 * XCHUNK_BYTES, at least XCHUNK_MIN_ROWS rows, at most N) and a panel of the weight to bf16
 * (half of PANEL_BYTES; none for bf16 weights, which are read in place), dequantized first into
 * an fp32 panel for formats other than f32. Its constants, repeated here: */
#define XCHUNK_BYTES (4.0 * 1048576.0)
#define XCHUNK_MIN_ROWS 256

static double bf16_chunk_bytes(double width, double N) {
    double rows = floor(XCHUNK_BYTES / 2 / width);
    if (rows < XCHUNK_MIN_ROWS) rows = XCHUNK_MIN_ROWS;
    if (rows > N) rows = N;
    return rows * width * 2;
}

static double bf16_panel_bytes(qformat f) {
    return f == QF_BF16 ? 0 : f == QF_F32 ? PANEL_BYTES / 2 : PANEL_BYTES * 1.5;
}

/* The largest scratch one bf16 matmul holds: its input chunk and its panels. The widths are
 * the inputs of the forward products and the output gradients of the backward ones; the LM
 * head sees a chunk of the loss's rows (model.c: 16M logits, at most 512 rows). */
static double bf16_scratch(const model_config *c, const model_quant *q, double N) {
    double qkv = (double)(c->H + 2 * c->Hkv) * c->D, w = c->C;
    double widths[] = {c->C, (double)c->H * c->D, c->I, c->arch->fused_qkv ? qkv : c->C,
                       c->arch->fused_gate_up ? 2.0 * c->I : c->I};
    for (size_t i = 0; i < sizeof widths / sizeof *widths; i++) w = fmax(w, widths[i]);
    double lin = bf16_chunk_bytes(w, N) + bf16_panel_bytes(q->linear);
    double head_rows = fmin(fmax(floor(16.0 * 1048576.0 / c->V), 1), 512);
    head_rows = fmin(head_rows, N);
    double head = fmax(bf16_chunk_bytes(c->C, head_rows), bf16_chunk_bytes(c->V, head_rows)) +
                  bf16_panel_bytes(q->lm_head);
    return fmax(lin, head);
}

double memory_plan_panel(const model_config *cfg, const model_quant *q, int B, int T) {
    if (q->compute == QC_BF16) return bf16_scratch(cfg, q, (double)B * T);
    return q->linear != QF_F32 || q->lm_head != QF_F32 ? PANEL_BYTES : 0;
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
    p->activations = (double)acts_plan_bytes(cfg, R, p->lora_modules, B, T, grad_checkpoint);
    p->batch = 4.0 * B * T * sizeof(int32_t);
    p->baseline = BASELINE_BYTES;
    p->total = p->weights + p->lora + p->optimizer + p->activations + p->panel + p->batch +
               p->baseline;
    return FT_OK;
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
