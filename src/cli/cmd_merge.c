/*
 * cmd_merge.c: `ftune merge`: fold a LoRA adapter into its base model and write the merged model
 * folder, as PEFT's merge_and_unload() + save_pretrained() write it (src/merge/fold.c).
 * Also the progress line of the merge commands (cmd_merge_progress): shown once a command has
 * run for a second, redrawn in place on a terminal, every 10 s otherwise.
 */
#include "base/cpu.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "ftune.h"
#include "merge/merge.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cmd_merge_progress(double done, double total, const char *what, void *user) {
    struct cmd_progress_state {
        double start, last;
        int shown;
    };
    static struct cmd_progress_state s;
    (void)user;
    double t = now_s();
    if (s.start == 0) s.start = s.last = t;
    int tty = isatty(2);
    if (!what) { /* finished */
        if (s.shown && tty) fputc('\n', stderr);
        return;
    }
    if (t - s.start < 1.0 || t - s.last < (tty ? 0.2 : 10.0)) return;
    s.last = t;
    s.shown = 1;
    double pct = total > 0 ? 100.0 * done / total : 0;
    fprintf(stderr, "%s%5.1f%%  %.0f s  %-60.60s%s", tty ? "\r" : "", pct, t - s.start, what,
            tty ? "" : "\n");
    fflush(stderr);
}

int cmd_merge(int argc, char **argv) {
    merge_fold_options o = {0};
    int quiet = 0;
    const opt_spec specs[] = {
        {"model", OPT_STR, &o.model_dir, "DIR",
         "Hugging Face model folder the adapter was trained on (F32, BF16 or F16; a "
         "bitsandbytes 4-bit one: re-quantized as PEFT does, or dequantized with --out-dtype)"},
        {"adapter", OPT_STR, &o.adapter_dir, "RUN", "PEFT LoRA adapter folder (ftune train's RUN)"},
        {"out", OPT_STR, &o.out_dir, "DIR",
         "folder for the merged model (new, or empty; never --model)"},
        {"out-dtype", OPT_STR, &o.out_dtype, "TYPE",
         "fp32, bf16 or f16 (default: each tensor keeps the checkpoint's dtype, as PEFT's merge "
         "keeps W's; a 4-bit model stays 4-bit)"},
        {"max-shard-size", OPT_STR, &o.max_shard_size, "SIZE",
         "largest safetensors shard, as save_pretrained's max_shard_size "
         "(default " MERGE_DEFAULT_MAX_SHARD_SIZE ")"},
        {"safe-merge", OPT_FLAG, &o.safe_merge, NULL,
         "as PEFT's safe_merge=True: the delta rounded to W's dtype before the sum, and a "
         "non-finite weight is an error"},
        {"overwrite", OPT_FLAG, &o.overwrite, NULL,
         "replace the model files of a non-empty --out folder"},
        {"quiet", OPT_FLAG, &quiet, NULL, "no progress line"},
        {0},
    };
    const cmd_info info = {
        "merge",
        "ftune merge --model DIR --adapter RUN --out DIR [--out-dtype fp32|bf16|f16] "
        "[--max-shard-size SIZE]",
        "Fold a LoRA adapter into its base model: W + scale * B @ A for every module the\n"
        "adapter changes (rsLoRA, rank_pattern and alpha_pattern respected), as PEFT's\n"
        "merge_and_unload() computes it, written as transformers' save_pretrained() writes a\n"
        "model: safetensors shards and model.safetensors.index.json, config.json,\n"
        "generation_config.json and the tokenizer files. The merged model loads in\n"
        "transformers (and ftune) without PEFT. Tensors are streamed a few MB at a time, so\n"
        "memory stays small whatever the model; the folder appears only once complete.",
        "  ftune merge --model SmolLM2-135M-Instruct --adapter run --out smol-merged\n"
        "  ftune merge --model Qwen3-0.6B --adapter run --out qwen3-merged --out-dtype bf16 "
        "--max-shard-size 500MB"};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && (!o.model_dir || !o.adapter_dir || !o.out_dir))
        rc = ft_error_set(&err, FT_ERR_INPUT, "ftune merge", "see ftune merge --help",
                          "--model, --adapter and --out are required");
    if (!quiet) o.progress = cmd_merge_progress;
    merge_fold_result res;
    /* every core: re-quantizing a 4-bit model is compute (the 8B-shape NF4 folder: 82 s on one
     * thread, 63 s on two); an fp32 merge is I/O and the same either way, now that OpenBLAS runs
     * single-threaded under ftune's threads (Qwen3-0.6B: 2.6-5.4 s on two, 3.1-5.2 s on one) */
    cpu_set_threads(0);
    if (!rc) rc = merge_fold(&o, &res, &err);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    printf("wrote %s: %d tensors (%d merged with the adapter) in %d shard%s, %.1f MB\n", o.out_dir,
           res.tensors, res.merged, res.shards, res.shards == 1 ? "" : "s", res.bytes / 1e6);
    return 0;
}
