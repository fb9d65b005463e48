/*
 * run_config.h: a run folder's options and files: run_config.json written and read through the
 * options table (options.h), the settings hash, what --resume may change, metrics.jsonl
 * truncation on resume, --overwrite's clearing, and the checks before the first write.
 *
 * run_config.json holds "options" (every saved option; paths absolute since this format, the
 * earlier runs' relative ones are read as they are), "as_given" (the path options as typed),
 * "started_with" (the first values of the hashed options a resume may change: the settings hash
 * is made of them, so a run's hash stays the one its checkpoints hold however often it is
 * extended), "resolved" and the two hashes. A file without "started_with" is from before resumes
 * could change options: its "options" are its first values.
 */
#ifndef FT_TRAIN_RUN_CONFIG_H
#define FT_TRAIN_RUN_CONFIG_H

#include "data/dataset.h"
#include "ftune.h"
#include "model/model.h"

#include <cjson/cJSON.h>

typedef struct run_opts {
    ft_train_options o;      /* the effective options */
    ft_train_options hashed; /* the options the settings hash is made of */
    ft_train_options stored; /* a resumed run's options before this resume's changes */
    cJSON *as_given;         /* {"model": ..., "data": [...], ...} as the user typed them */
    cJSON *json;             /* the run_config.json read by run_opts_load (strings point in) */
    void *owned[64];         /* strings and lists the options point to */
    int n_owned;
} run_opts;

/* A new run: the given options with their paths made absolute (data_path as a one-source list). */
ft_status run_opts_init(run_opts *r, const ft_train_options *given, ft_error *err);
/* A resumed run: the options of run_dir/run_config.json. */
ft_status run_opts_load(run_opts *r, const char *run_dir, ft_error *err);
/* Apply the options given with --resume (given->resume_changes names them): equal values are
 * kept, those a resume may change are changed (described in note, "" when none), any other
 * difference is refused naming them. */
ft_status run_opts_resume_changes(run_opts *r, const ft_train_options *given, char *note, size_t n,
                                  ft_error *err);
void run_opts_free(run_opts *r);

/* Fingerprint of the hashed options plus the model's config.json and weight file sizes. */
void run_settings_hash(const ft_train_options *hashed, char out[17]);

ft_status run_config_write(const run_opts *r, const model *m, long total_steps, const dataset *ds,
                           const char *shash, const char *dhash, ft_error *err);

/* Is the folder there with something in it? */
int run_dir_nonempty(const char *path);
/* --overwrite: remove what ftune train writes in a run folder (checkpoint-* folders,
 * metrics.jsonl, adapter_model.safetensors, adapter_config.json, run_config.json) and only that. */
ft_status run_dir_clear(const char *dir, ft_error *err);
/* Refuse to start when the run folder cannot be written or the disk is nearly full. */
ft_status run_dir_preflight(const char *dir, size_t ckpt_bytes, ft_error *err);
/* Keep the metrics lines of steps <= step (the rest belong to work that is being redone). */
ft_status metrics_truncate(const char *path, long step, ft_error *err);

#endif
