/*
 * cmd_plan.c: `ftune plan`: the predicted peak memory of a training run, by part, computed from
 * the model's config.json and the options before anything is allocated. The options are the
 * training options' rows (options.c), so plan and train read them alike.
 */
#include "cli/args.h"
#include "ftune.h"
#include "model/config.h"
#include "model/model.h"
#include "train/plan.h"

#include <stdio.h>
#include <string.h>

static const char *const examples =
    "  # will a run of 8 x 2048 tokens fit?\n"
    "  ftune plan --model DIR\n"
    "  # the same with QLoRA and gradient checkpointing\n"
    "  ftune plan --model DIR --quant nf4 --grad-checkpoint --lora-targets all-linear --lora-r 16\n"
    "  # bf16 compute and bf16 checkpoints, 4 x 4096\n"
    "  ftune plan --model DIR --dtype bf16 --grad-checkpoint --batch-size 4 --seq-len 4096\n"
    "  # each of 4 ranks of mpirun -np 4 ftune train --shard-base\n"
    "  ftune plan --model DIR --quant nf4 --ranks 4 --shard-base";

static void print_plan(const memory_plan *p, const model_quant *q, const ft_train_options *o,
                       int ckpt) {
    const double MB = 1048576.0;
    if (o->ranks > 1)
        printf("memory plan of each of %d ranks%s\n", o->ranks,
               o->shard_base ? " (--shard-base: 1/N of the frozen weights, two layers gathered)"
                             : " (each holds the whole model)");
    printf("memory plan (B %d, T %d, LoRA r %d on %d modules, %zu parameters%s)\n", o->batch_size,
           o->seq_len, o->lora_r, p->lora_modules, p->lora_params,
           ckpt == CKPT_BF16 ? ", gradient checkpointing in bf16"
           : ckpt            ? ", gradient checkpointing"
                             : "");
    char how[256];
    model_quant_describe(q, how, sizeof how);
    printf("  %-28s %10.1f MB   (%s)\n", "frozen weights", p->weights / MB, how);
    printf("  %-28s %10.1f MB\n", "LoRA values + gradients", p->lora / MB);
    printf("  %-28s %10.1f MB\n", "AdamW state", p->optimizer / MB);
    printf("  %-28s %10.1f MB\n", "activations + workspace", p->activations / MB);
    if (p->panel > 0)
        printf("  %-28s %10.1f MB\n",
               q->compute == QC_BF16 ? "bf16 input chunk + panel" : "dequantization panel",
               p->panel / MB);
    printf("  %-28s %10.1f MB\n", "batch buffers", p->batch / MB);
    printf("  %-28s %10.1f MB\n", "program and libraries", p->baseline / MB);
    printf("  %-28s %10.1f MB\n", "total (predicted peak)", p->total / MB);
    double avail = memory_available();
    if (avail > 0)
        printf("  %-28s %10.1f MB%s\n", "available now", avail / MB,
               p->total > avail ? "  (does not fit: try --quant nf4, --grad-checkpoint, a smaller "
                                  "--batch-size or --seq-len)"
                                : "");
    printf("{\"total_bytes\": %.0f, \"weights\": %.0f, \"lora\": %.0f, \"optimizer\": %.0f, "
           "\"activations\": %.0f, \"panel\": %.0f, \"batch\": %.0f, \"baseline\": %.0f}\n",
           p->total, p->weights, p->lora, p->optimizer, p->activations, p->panel, p->batch,
           p->baseline);
}

int cmd_plan(int argc, char **argv) {
    ft_train_options o;
    ft_train_defaults(&o);
    args_list lists[2] = {{0}, {0}};
    opt_spec specs[64];
    opt_bind binds[64];
    args_specs_from_table(OF_PLAN, &o, lists, binds, specs, 64);
    args_find(specs, "model")->help = "Hugging Face model folder (only config.json is read)";
    const cmd_info info = {
        "plan", "ftune plan --model DIR [--batch-size B --seq-len T --lora-r R ...]",
        "Predicted peak memory of `ftune train` with these options, by part.", examples};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && !o.model_dir)
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --model", NULL, "is required");
    /* as ftune train: --dtype bf16 with --grad-checkpoint keeps the layer inputs in bf16 */
    const char *ckdt = o.grad_checkpoint_dtype;
    if (!ckdt) ckdt = o.grad_checkpoint && !strcmp(o.dtype, "bf16") ? "bf16" : "fp32";
    int level = ckpt_dtype_parse(ckdt), ckpt = o.grad_checkpoint;
    if (!rc && level < 0)
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --grad-checkpoint-dtype", "use fp32 or bf16",
                          "unknown dtype \"%s\"", ckdt);
    if (level == CKPT_BF16) ckpt = CKPT_BF16;
    model_config cfg;
    int have_cfg = 0;
    if (!rc) rc = model_config_load(o.model_dir, &cfg, &err), have_cfg = !rc;
    model_load_options lo = {.quant = o.quant,
                             .double_quant = o.double_quant,
                             .blocksize = o.quant_blocksize,
                             .lm_head = o.quant_lm_head,
                             .dtype = o.dtype};
    model_quant q;
    memory_plan p;
    if (!rc) rc = model_quant_resolve(o.model_dir, &cfg, &lo, &q, &err);
    if (!rc)
        rc = memory_plan_make(&cfg, &q, o.batch_size, o.seq_len, o.lora_r, o.lora_targets, ckpt, &p,
                              &err);
    if (!rc) memory_plan_ranks(&p, &cfg, &q, o.ranks, o.shard_base);
    if (have_cfg) model_config_free(&cfg);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    print_plan(&p, &q, &o, ckpt);
    return 0;
}
