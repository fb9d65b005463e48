/*
 * cmd_plan.c: `ftune plan`: the predicted peak memory of a training run, by part, computed from
 * the model's config.json and the options before anything is allocated.
 */
#include "cli/args.h"
#include "ftune.h"
#include "model/config.h"
#include "model/model.h"
#include "train/plan.h"

#include <stdio.h>
#include <string.h>

int cmd_plan(int argc, char **argv) {
    const char *model = NULL, *targets = "q_proj,v_proj";
    long B = 8, T = 2048, R = 8, qbs = 64;
    int ckpt = 0, dq = 0;
    const char *quant = NULL, *qhead = NULL, *ckdt = NULL, *dtype = "fp32";
    const opt_spec specs[] = {
        {"model", OPT_STR, &model, "DIR", "Hugging Face model folder (only config.json is read)"},
        {"batch-size", OPT_INT, &B, "B", "examples per micro-batch"},
        {"seq-len", OPT_INT, &T, "T", "longest example in tokens"},
        {"lora-r", OPT_INT, &R, "R", "LoRA rank"},
        {"lora-targets", OPT_STR, &targets, "LIST", "comma list of q_proj,k_proj,... or all-linear"},
        {"grad-checkpoint", OPT_FLAG, &ckpt, NULL, "recompute each layer in backward"},
        {"grad-checkpoint-dtype", OPT_STR, &ckdt, "T", "kept layer inputs: fp32 or bf16 (implies --grad-checkpoint)"},
        {"dtype", OPT_STR, &dtype, "T", "compute type: fp32 or bf16 (weights kept as bf16 unless --quant says otherwise; --grad-checkpoint then keeps bf16 layer inputs)"},
        {"quant", OPT_STR, &quant, "FMT", "frozen linear weights: nf4, fp4, q8, bf16 or none (fp32; default: bf16 under --dtype bf16)"},
        {"double-quant", OPT_FLAG, &dq, NULL, "nf4/fp4: quantize the absmax values too"},
        {"quant-blocksize", OPT_INT, &qbs, "N", "nf4/fp4 block size"},
        {"quant-lm-head", OPT_STR, &qhead, "FMT", "LM head: q8, bf16 or none (default: the checkpoint's dtype with --quant, else fp32)"},
        {0},
    };
    const cmd_info info = {"plan", "ftune plan --model DIR [--batch-size B --seq-len T --lora-r R ...]",
                           "Predicted peak memory of `ftune train` with these options, by part.",
        NULL};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && !model) rc = ft_error_set(&err, FT_ERR_INPUT, "option --model", NULL, "is required");
    if (!rc && (B < 1 || T < 2 || R < 1))
        rc = ft_error_set(&err, FT_ERR_INPUT, "ftune plan", NULL,
                          "--batch-size, --seq-len and --lora-r must be positive");
    /* as ftune train: --dtype bf16 with --grad-checkpoint keeps the layer inputs in bf16 */
    if (!ckdt) ckdt = ckpt && !strcmp(dtype, "bf16") ? "bf16" : "fp32";
    int level = ckpt_dtype_parse(ckdt);
    if (!rc && level < 0)
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --grad-checkpoint-dtype", "use fp32 or bf16",
                          "unknown dtype \"%s\"", ckdt);
    if (level == CKPT_BF16) ckpt = CKPT_BF16;
    model_config cfg;
    int have_cfg = 0;
    if (!rc) rc = model_config_load(model, &cfg, &err), have_cfg = !rc;
    model_load_options lo = {.quant = quant, .double_quant = dq, .blocksize = (int)qbs,
                             .lm_head = qhead, .dtype = dtype};
    model_quant q;
    memory_plan p;
    if (!rc) rc = model_quant_resolve(model, &cfg, &lo, &q, &err);
    if (!rc) rc = memory_plan_make(&cfg, &q, (int)B, (int)T, (int)R, targets, ckpt, &p, &err);
    if (have_cfg) model_config_free(&cfg);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    const double MB = 1048576.0;
    printf("memory plan (B %ld, T %ld, LoRA r %ld on %d modules, %zu parameters%s)\n", B, T, R,
           p.lora_modules, p.lora_params,
           ckpt == CKPT_BF16 ? ", gradient checkpointing in bf16" : ckpt ? ", gradient checkpointing" : "");
    char how[256];
    model_quant_describe(&q, how, sizeof how);
    printf("  %-28s %10.1f MB   (%s)\n", "frozen weights", p.weights / MB, how);
    printf("  %-28s %10.1f MB\n", "LoRA values + gradients", p.lora / MB);
    printf("  %-28s %10.1f MB\n", "AdamW state", p.optimizer / MB);
    printf("  %-28s %10.1f MB\n", "activations + workspace", p.activations / MB);
    if (p.panel > 0)
        printf("  %-28s %10.1f MB\n",
               q.compute == QC_BF16 ? "bf16 input chunk + panel" : "dequantization panel",
               p.panel / MB);
    printf("  %-28s %10.1f MB\n", "batch buffers", p.batch / MB);
    printf("  %-28s %10.1f MB\n", "program and libraries", p.baseline / MB);
    printf("  %-28s %10.1f MB\n", "total (predicted peak)", p.total / MB);
    double avail = memory_available();
    if (avail > 0)
        printf("  %-28s %10.1f MB%s\n", "available now", avail / MB,
               p.total > avail ? "  (does not fit: try --quant nf4, --grad-checkpoint, a smaller "
                                 "--batch-size or --seq-len)" : "");
    printf("{\"total_bytes\": %.0f, \"weights\": %.0f, \"lora\": %.0f, \"optimizer\": %.0f, "
           "\"activations\": %.0f, \"panel\": %.0f, \"batch\": %.0f, \"baseline\": %.0f}\n",
           p.total, p.weights, p.lora, p.optimizer, p.activations, p.panel, p.batch, p.baseline);
    return 0;
}
