/*
 * gen_args.h: the options ftune generate and ftune chat share (model, adapters, weight storage,
 * chat template, sampling, limits), as one opt_spec list, and their resolution against the
 * model folder's generation defaults.
 */
#ifndef FT_CLI_GEN_ARGS_H
#define FT_CLI_GEN_ARGS_H

#include "cli/args.h"
#include "infer/session.h"

#include <signal.h>

typedef struct gen_cli {
    const char *model, *system, *chat_template, *kv_cache, *quant, *quant_lm_head;
    args_list adapters, template_args, stops;
    int double_quant, greedy, sample, quiet, ignore_eos;
    long quant_blocksize, threads, ctx;
    /* numbers given as text: whether they were given decides over generation_config.json */
    const char *max_new_tokens, *temperature, *top_k, *top_p, *min_p, *repetition_penalty, *seed;
} gen_cli;

/* The shared options into specs (room for max, one left for the end); returns their number. */
int gen_cli_specs(gen_cli *g, opt_spec *specs, int max);
/* The session options of g (need_template: a chat template is needed). */
void gen_cli_session(const gen_cli *g, int need_template, infer_session_options *o);
/* Sampling and the token limit: g over the folder's defaults d. Giving --temperature (> 0),
 * --top-k, --top-p or --min-p, or --sample, samples; --greedy or --temperature 0 does not;
 * else do_sample of the folder decides. max_new: --max-new-tokens, else the folder's
 * max_new_tokens, else 256. */
ft_status gen_cli_sampling(const gen_cli *g, const gen_defaults *d, sampler_params *sp,
                           int *max_new, ft_error *err);
/* The model's context (max_position_embeddings), or --ctx when given and smaller; with
 * cap > 0 also at most cap when --ctx is not given. */
int gen_cli_context(const gen_cli *g, const infer_session *s, int cap);
/* Peak resident memory of the process in MB. */
double gen_peak_rss_mb(void);
/* The stop flag that Ctrl-C sets (gen_on_sigint) and the generation loop reads between tokens;
 * gen_print_text streams decoded text to stdout as it comes. */
extern volatile sig_atomic_t gen_stop_flag;
void gen_on_sigint(int sig);
void gen_print_text(void *user, const char *s, size_t n);

#endif
