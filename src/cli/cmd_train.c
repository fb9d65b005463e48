/*
 * cmd_train.c: `ftune train`, the options table (src/train/options.c) parsed over ft_train
 * (src/train/trainer.c). Option names and defaults follow PEFT's LoraConfig and transformers'
 * TrainingArguments.
 *
 * The library prints nothing and handles no signals; this file does both. SIGINT and SIGTERM set
 * the stop flag ft_train checks between steps, so an interrupted run finishes its step, saves a
 * checkpoint and exits 130 / 143 with the command that continues it; a second signal stops at
 * once (SA_RESETHAND). Progress lines come from the progress callback.
 *
 * Under mpirun every rank runs this command (src/dist/, docs/distributed.md); the library reports
 * progress on rank 0 only and makes every rank return the same error (the first failing rank's,
 * named), so only rank 0 prints it.
 */
#include "cli/args.h"
#include "dist/dist.h"
#include "ftune.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static void print_progress(const ft_train_progress *p, void *user) {
    const ft_train_options *o = user;
    switch (p->event) {
    case FT_EVENT_STEP:
        if (o->quiet) return;
        fprintf(stderr,
                "step %ld/%ld  loss %.4f  lr %.3g  grad_norm %.3g  %.0f tok/s  elapsed %.0fs  "
                "ETA %dm%02ds  mem %.0f MB\n",
                p->step, p->total_steps, p->loss, p->lr, p->grad_norm, p->tokens_per_s,
                p->elapsed_s, (int)(p->eta_s / 60), (int)p->eta_s % 60, p->rss_mb);
        return;
    case FT_EVENT_EVAL:
        if (o->quiet) return;
        fprintf(stderr, "step %ld/%ld  eval_loss %.4f  (%ld tokens)\n", p->step, p->total_steps,
                p->eval_loss, p->eval_tokens);
        return;
    case FT_EVENT_INFO:
        if (o->quiet) return;
        fprintf(stderr, "%s\n", p->text);
        return;
    case FT_EVENT_NOTICE:
        fprintf(stderr, "%s\n", p->text);
        return;
    }
}

static const char *const examples =
    "  # LoRA on a chat JSONL, 3 epochs, adapter and checkpoints in RUN/\n"
    "  ftune train --model SmolLM2-135M-Instruct --data chat.jsonl --out RUN\n"
    "  # QLoRA: 4-bit frozen weights, all linear layers, 200 steps, checkpoint every 50\n"
    "  ftune train --model DIR --data train.jsonl --val-split 0.05 --eval-every 50 --out RUN \\\n"
    "      --quant nf4 --lora-targets all-linear --lora-r 16 --lora-alpha 32 --lr 2e-4 \\\n"
    "      --steps 200 --save-every 50\n"
    "  # continue an interrupted run; or extend a finished one to 400 steps\n"
    "  ftune train --resume RUN\n"
    "  ftune train --resume RUN --steps 400";

int cmd_train(int argc, char **argv) {
    ft_train_options o;
    ft_train_defaults(&o);
    args_list lists[2] = {{0}, {0}};
    opt_spec specs[96];
    opt_bind binds[96];
    args_specs_from_table(OF_TRAIN, &o, lists, binds, specs, 96);
    const cmd_info info = {
        "train", "ftune train --model DIR --data PATH[:W] [--data ...] --out RUN [options]",
        "Fine-tune a LoRA adapter. Writes RUN/adapter_model.safetensors and "
        "RUN/adapter_config.json\n(PEFT's layout: PeftModel.from_pretrained(model, RUN) loads it), "
        "RUN/run_config.json and\nRUN/metrics.jsonl (one line per step).",
        examples};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    if ((rc = dist_init(NULL, NULL, &err))) { /* after parsing: --help needs no MPI */
        ft_error_print(&err, stderr);
        return rc;
    }
    const char *changes[96];
    o.n_resume_changes = args_table_finish(specs, changes, 96);
    o.resume_changes = changes;
    o.progress = print_progress, o.progress_user = &o;
    stop_signal = 0;
    o.stop = &stop_signal;
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second signal stops at once */
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    ft_status st = ft_train(&o, &err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (dist_rank() != 0) {
        /* rank 0 prints the error, which names the rank it came from */
    } else if (st == FT_ERR_INTERRUPTED || st == FT_ERR_TERMINATED) {
        /* not an error: the run stopped where it can go on from */
        fprintf(stderr, "ftune: stopped: %s\n  %s\n", err.what, err.hint);
    } else if (st) {
        ft_error_print(&err, stderr);
    }
    /* after the message: MPI_Finalize waits for every rank, so none exits (and makes mpirun end
     * the job) before rank 0 has printed */
    fflush(stderr);
    dist_finalize();
    return st;
}
