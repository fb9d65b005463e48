/*
 * ftune.h: the one public header of libftune.
 *
 * ftune fine-tunes open LLMs (LoRA, and QLoRA over quantized frozen weights) on the CPU. A
 * caller loads a Hugging Face model folder, trains a PEFT-compatible adapter and writes it out.
 * Every function that can fail returns an ft_status and fills an ft_error saying what was wrong,
 * where (file, line, tensor or field) and a hint. The library never prints, never exits and
 * installs no signal handlers: ft_train reports progress through a callback the caller gives,
 * and stops between steps when a flag the caller owns is set (the ftune program prints the
 * progress lines and sets the flag from its SIGINT / SIGTERM handlers, src/cli/cmd_train.c).
 *
 * The status values double as process exit codes for the ftune program:
 *   0 done, 1 failure at run time, 2 bad input or usage, 130 / 143 interrupted.
 */
#ifndef FTUNE_H
#define FTUNE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ft_status {
    FT_OK = 0,
    FT_ERR_RUNTIME = 1,      /* I/O failure, out of memory, numeric blow-up (divergence) */
    FT_ERR_INPUT = 2,        /* bad input file, bad option, unsupported model */
    FT_ERR_INTERRUPTED = 130, /* SIGINT */
    FT_ERR_TERMINATED = 143, /* SIGTERM */
} ft_status;

typedef struct ft_error {
    ft_status status;
    char where[512]; /* "model/config.json: field hidden_size", "data.jsonl:12", ... */
    char what[1024]; /* what was wrong and what was expected */
    char hint[512];  /* what the user can do about it; may be empty */
} ft_error;

/* Fill err (if not NULL) and return st. where and hint may be NULL. */
ft_status ft_error_set(ft_error *err, ft_status st, const char *where, const char *hint,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Write "ftune: error: WHERE: WHAT\n  hint: HINT\n" to f. */
void ft_error_print(const ft_error *err, FILE *f);

/* ---- training ------------------------------------------------------------------------
 * What ft_train tells its caller while it runs (ft_train_options.progress). */
typedef enum ft_event {
    FT_EVENT_STEP,    /* an optimizer step finished: step, loss, lr, grad_norm, ... */
    FT_EVENT_EVAL,    /* an evaluation finished: step, eval_loss, eval_tokens */
    FT_EVENT_INFO,    /* lines for the user (text): the resolved run, resuming, saved files */
    FT_EVENT_NOTICE,  /* lines the user should see even when quiet (text): warnings, changed
                         settings on resume, a finished run */
} ft_event;

typedef struct ft_train_progress {
    ft_event event;
    long step, total_steps; /* steps done (1-based after the step), and the run's total */
    double epoch;           /* fractional epoch */
    double loss, lr, grad_norm;
    long tokens;            /* tokens of this step */
    double tokens_per_s, elapsed_s, eta_s;
    double rss_mb;          /* resident memory of the process */
    double eval_loss;       /* FT_EVENT_EVAL */
    long eval_tokens;
    const char *text;       /* FT_EVENT_INFO / FT_EVENT_NOTICE: one or more lines, no final newline */
} ft_train_progress;

typedef void (*ft_progress_fn)(const ft_train_progress *p, void *user);

/* The options. Each option field is a row of the options table (src/train/options.c), which
 * gives its default, range, command-line name and run_config.json key; data_path and the
 * callback, stop flag and resume_changes fields are the library caller's.
 * Defaults (ft_train_defaults) follow PEFT's LoraConfig and transformers' TrainingArguments:
 * r 8, alpha 8, dropout 0, targets q_proj,v_proj, lr 5e-5, linear schedule, 3 epochs, batch 8,
 * weight decay 0, max grad norm 1, seed 42. */
typedef struct ft_train_options {
    const char *model_dir;  /* Hugging Face model folder */
    const char *data_path;  /* training data (used when n_data_sources is 0) */
    const char *out_dir;    /* run folder: adapter, run_config.json, metrics.jsonl */
    const char *adapter_dir;/* start from this PEFT adapter (NULL: new, PEFT init) */
    int lora_r;
    double lora_alpha, lora_dropout;
    const char *lora_targets; /* "q_proj,v_proj", "all-linear", ... */
    int rslora;
    long steps;   /* > 0: optimizer steps (overrides epochs) */
    double epochs;
    int batch_size, grad_accum, seq_len;
    double lr, weight_decay, max_grad_norm, adam_beta1, adam_beta2, adam_eps;
    const char *schedule; /* constant, constant_with_warmup, linear, cosine */
    long warmup_steps;
    uint64_t seed;
    int threads;  /* 0: all cores */
    int shuffle;
    int overwrite;
    int quiet;    /* the caller's: no progress lines (the library ignores it) */
    int grad_checkpoint; /* recompute each layer in backward (also switched on when memory is short) */
    const char *grad_checkpoint_dtype; /* the kept layer inputs: "fp32" (NULL) or "bf16" (half
                                          the memory; implies grad_checkpoint) */
    long save_every;      /* checkpoint every N steps (0: only at the end) */
    int keep_checkpoints; /* keep the newest K checkpoint-STEP folders (0: all) */
    const char *resume;   /* continue the run in this folder from its newest checkpoint; the
                             run's own options apply, except those named in resume_changes */
    const char *const *resume_changes; /* run_config.json keys ("steps", "lr", ...) of the options
                                          given for the resume: the table says which may change
                                          (the others must equal the run's, or it is refused) */
    int n_resume_changes;
    ft_progress_fn progress; /* called after each step and evaluation, and with notes (NULL: none) */
    void *progress_user;
    volatile sig_atomic_t *stop; /* when *stop becomes non-zero (a signal number, or any other
                                    value) the run finishes its step, saves a checkpoint and
                                    returns FT_ERR_INTERRUPTED (SIGINT), FT_ERR_TERMINATED
                                    (SIGTERM) or FT_ERR_INTERRUPTED (other values) */
    /* data (docs/data.md) */
    const char *const *data_sources; /* each "PATH" or "PATH:WEIGHT" (file or folder) */
    int n_data_sources;
    const char *val_data;  /* validation data (NULL: none) */
    double val_split;      /* or hold out this fraction of the training data */
    long eval_every;       /* evaluation loss every N steps (0: only at the end) */
    const char *chat_template; /* .jinja file instead of the model's chat template */
    const char *const *template_args; /* "KEY=VALUE" chat template variables */
    int n_template_args;
    int pack;            /* pack examples into rows of seq_len tokens */
    int drop_long;       /* drop examples longer than seq_len (else keep their start) */
    int train_on_inputs; /* loss on every token, not only completions / assistant turns */
    int txt_paragraphs;  /* .txt files: documents separated by blank lines */
    long max_examples;   /* > 0: train on at most this many examples */
    const char *dump_data; /* write the prepared training examples as JSONL and stop */
    /* frozen weights (QLoRA): how the base model is stored while training */
    const char *quant;       /* linear layers: "nf4", "fp4", "q8", "bf16" or NULL/"none" (fp32) */
    int double_quant;        /* nf4/fp4: quantize the absmax values too (as bitsandbytes) */
    int quant_blocksize;     /* nf4/fp4 block size (0: 64) */
    const char *quant_lm_head; /* "q8", "bf16", "none", or NULL: the checkpoint's dtype when the
                                  linear layers are quantized, fp32 otherwise */
    const char *dtype; /* compute type of the frozen-weight matmuls: "fp32" (NULL) or "bf16"
                          (inputs and weights rounded to bf16, fp32 sums; LoRA and AdamW stay
                          fp32). bf16 stores the weights as bf16 unless --quant says otherwise. */
    int stride; /* eval: perplexity of a plain text file with a sliding window moved by this many
                   tokens (0: off) */
    /* several ranks (mpirun; docs/distributed.md) */
    int shard_base;      /* each rank keeps 1/N of the frozen weights, all-gathered per layer */
    double dist_timeout; /* seconds a rank waits in a collective before asking whether the
                            others are alive; one that has not answered as long after is named
                            and the job stopped (0: no limit) */
    int ranks;           /* plan: the number of ranks the plan is for */
} ft_train_options;

void ft_train_defaults(ft_train_options *o);
/* Run a LoRA fine-tune. A non-finite loss or gradient norm stops the run with FT_ERR_RUNTIME
 * (metrics.jsonl gets "loss": null and "diverged"; the checkpoints before it are kept, so the
 * run can be resumed with another --lr). */
ft_status ft_train(const ft_train_options *o, ft_error *err);

typedef struct ft_eval_options {
    const char *model_dir, *adapter_dir, *data_path;
    int batch_size, seq_len, threads;
    int pack;                  /* pack examples into rows of seq_len tokens */
    const char *chat_template; /* .jinja file instead of the model's chat template */
    const char *const *template_args; /* "KEY=VALUE" chat template variables */
    int n_template_args;
    const char *dump_logits; /* write "logits" [examples, T, V] here (NULL: no) */
    const char *dump_grads;  /* write LoRA gradients of the mean loss here (NULL: no) */
    const char *quant;       /* frozen weights as in ft_train_options */
    int double_quant, quant_blocksize;
    const char *quant_lm_head;
    const char *dtype;       /* compute type as in ft_train_options */
    int stride; /* > 0: data_path is plain text, tokenized whole (with the tokenizer's special
                   tokens), and scored in windows of seq_len tokens (0: max_position_embeddings)
                   moved by stride tokens, as the transformers perplexity guide does */
} ft_eval_options;
typedef struct ft_eval_result {
    double loss;   /* mean token loss */
    long tokens;   /* counted tokens */
} ft_eval_result;
ft_status ft_eval(const ft_eval_options *o, ft_eval_result *res, ft_error *err);
/* `ftune eval --compare-adapter`: the base model (res[0]) and the model with each of the n
 * adapters (res[1..n]) on the same data (o->adapter_dir unused; no dumps), the model, the data or
 * the --stride text loaded once. */
ft_status ft_eval_compare(const ft_eval_options *o, const char *const *adapters, int n,
                          ft_eval_result *res, ft_error *err);

/* Library version string, e.g. "0.1.0". */
const char *ft_version(void);

#ifdef __cplusplus
}
#endif
#endif /* FTUNE_H */
