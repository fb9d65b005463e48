/*
 * merge.h: the merge stage. Folding an adapter into its base model (`ftune merge`, fold.c) and
 * combining adapters into one (`ftune merge-adapters`, combine.c), each exactly as PEFT does it;
 * docs/merge.md gives the formulas.
 */
#ifndef FT_MERGE_MERGE_H
#define FT_MERGE_MERGE_H

#include "ftune.h"
#include "io/json.h"

#include <stddef.h>

/* transformers 5.23's default max_shard_size for save_pretrained. */
#define MERGE_DEFAULT_MAX_SHARD_SIZE "50GB"

/* Progress of a long write: done of total units (bytes, or modules), and what is at hand. */
typedef void (*merge_progress_fn)(double done, double total, const char *what, void *user);

typedef struct merge_fold_options {
    const char *model_dir;      /* Hugging Face model folder (F32, BF16 or F16 safetensors) */
    const char *adapter_dir;    /* PEFT LoRA adapter folder */
    const char *out_dir;        /* the merged model folder (never model_dir, never inside it) */
    const char *out_dtype;      /* NULL: every tensor keeps its dtype; "fp32", "bf16", "f16" */
    const char *max_shard_size; /* NULL: transformers' default (shards.h) */
    int safe_merge;             /* PEFT's safe_merge=True: delta rounded to W's dtype first, and
                                   a non-finite merged weight is an error */
    int overwrite;
    merge_progress_fn progress;
    void *user;
} merge_fold_options;

typedef struct merge_fold_result {
    int merged;  /* weights the adapter changed */
    int tensors; /* tensors written */
    int shards;
    unsigned long long bytes;
} merge_fold_result;

/* W + scaling * B @ A for every module of the adapter, written as save_pretrained writes the
 * merged model (merge_and_unload() then save_pretrained()), with config.json,
 * generation_config.json and the tokenizer files; through a temporary folder (outdir.h). */
ft_status merge_fold(const merge_fold_options *o, merge_fold_result *res, ft_error *err);

/* Shared with merge-models (models.c): whether config.json's model_type is a GPT-2-style model
 * with Conv1D layers. */
int merge_conv1d_model(const cJSON *cfg);

/* The combination types of PEFT's add_weighted_adapter. */
typedef enum merge_method {
    MM_LINEAR,
    MM_CAT,
    MM_SVD,
    MM_TIES,
    MM_TIES_SVD,
    MM_DARE_LINEAR,
    MM_DARE_TIES,
    MM_DARE_LINEAR_SVD,
    MM_DARE_TIES_SVD,
    MM_MAGNITUDE_PRUNE,
    MM_MAGNITUDE_PRUNE_SVD,
    MM_COUNT
} merge_method;
extern const char *const merge_method_names[MM_COUNT];

#define MERGE_MAX_ADAPTERS 32

typedef struct merge_adapters_options {
    int n;
    const char *adapter_dirs[MERGE_MAX_ADAPTERS];
    double weights[MERGE_MAX_ADAPTERS];
    merge_method method;
    double density;     /* < 0: not given (required by the pruning methods) */
    int majority_total; /* majority_sign_method: 1 total (PEFT's default), 0 frequency */
    int svd_rank;       /* 0: the largest input rank */
    double svd_clamp;   /* < 0: no clamping */
    uint64_t seed;      /* DARE's masks */
    const char *out_dir;
    const char *dump_masks; /* NULL, or a safetensors file that receives DARE's masks */
    int allow_different_bases;
    int overwrite;
    merge_progress_fn progress;
    void *user;
} merge_adapters_options;

typedef struct merge_adapters_result {
    int modules;
    int rank;
} merge_adapters_result;

ft_status merge_adapters(const merge_adapters_options *o, merge_adapters_result *res,
                         ft_error *err);

/* `ftune merge-models`: mergekit 0.1.5's methods on whole models (models.c). */
typedef enum models_method {
    MK_LINEAR,
    MK_TASK_ARITHMETIC,
    MK_TIES,
    MK_DARE_LINEAR,
    MK_DARE_TIES,
    MK_SLERP,
    MK_COUNT
} models_method;
extern const char *const models_method_names[MK_COUNT];

typedef struct merge_models_options {
    const char *base_dir; /* --base: the task vectors' origin (NULL allowed for linear) */
    int n;
    const char *model_dirs[MERGE_MAX_ADAPTERS]; /* a model folder, or an adapter of --base */
    double weights[MERGE_MAX_ADAPTERS];
    models_method method;
    double density; /* mergekit's default 1 (nothing dropped) */
    double lambda;  /* default 1 */
    double t;       /* slerp: 0 gives the base, 1 the model */
    int normalize;  /* -1: the method's default */
    int rescale;    /* -1: the method's default */
    uint64_t seed;  /* DARE's masks */
    const char *out_dir;
    const char *out_dtype;      /* NULL: each tensor keeps the base's dtype */
    const char *max_shard_size; /* NULL: transformers' default */
    const char *dump_masks;     /* DARE's masks (U8, 1 = kept), "TENSOR.K", for the tests */
    int overwrite;
    merge_progress_fn progress;
    void *user;
} merge_models_options;

typedef struct merge_models_result {
    int tensors, merged, shards;
    unsigned long long bytes;
} merge_models_result;

ft_status merge_models(const merge_models_options *o, merge_models_result *res, ft_error *err);

#endif
