/*
 * checkpoint.h: training checkpoints laid out as transformers' Trainer lays them out.
 *
 * RUN/checkpoint-STEP/ holds adapter_model.safetensors + adapter_config.json (PEFT layout),
 * optimizer.safetensors (AdamW's exp_avg and exp_avg_sq, flat, in the adapter's parameter order)
 * and trainer_state.json (step, data position, seed, hashes of settings and data). A checkpoint is
 * written into RUN/checkpoint-STEP.tmp-PID/ and renamed into place when its last file is
 * complete, so a folder named checkpoint-STEP is always whole; leftovers of an interrupted save
 * are removed on resume.
 */
#ifndef FT_TRAIN_CHECKPOINT_H
#define FT_TRAIN_CHECKPOINT_H

#include "base/hash.h"
#include "ftune.h"
#include "model/lora.h"
#include "train/optim.h"

typedef struct train_state {
    long step;          /* optimizer steps done */
    long epoch;         /* current epoch (0-based) */
    long mb_in_epoch;   /* micro-batches of this epoch already consumed */
    long example_index; /* global index of the next example: epoch * examples + consumed */
    uint64_t seed;
    char settings_hash[17], data_hash[17];
} train_state;

ft_status checkpoint_save(const char *run_dir, const lora_set *ls, const model_config *cfg,
                          const char *base_model, const adamw *opt, const train_state *ts, int keep,
                          ft_error *err);
/* The step of the newest complete checkpoint in run_dir, or -1; removes *.tmp-* leftovers. */
long checkpoint_latest(const char *run_dir);
/* Remove every checkpoint-* folder of run_dir (complete or not), for --overwrite. */
ft_status checkpoint_remove_all(const char *run_dir, ft_error *err);
/* Load checkpoint-STEP: the adapter replaces *ls's values (same layout), the optimizer state and
 * the train state are filled. */
ft_status checkpoint_load(const char *run_dir, long step, lora_set *ls, adamw *opt, train_state *ts,
                          ft_error *err);

#endif
