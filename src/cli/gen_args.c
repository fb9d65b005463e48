/*
 * gen_args.c: options shared by ftune generate and ftune chat (gen_args.h).
 */
#include "cli/gen_args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MAX_NEW_DEFAULT 256

int gen_cli_specs(gen_cli *g, opt_spec *specs, int max) {
    const opt_spec all[] = {
        {"model", OPT_STR, &g->model, "DIR",
         "Hugging Face model folder (config.json, *.safetensors)"},
        {"adapter", OPT_LIST, &g->adapters, "RUN[:W]",
         "a PEFT LoRA adapter (or a run folder), applied unmerged; repeat for several, each "
         "output scaled by W (default 1)"},
        {"max-new-tokens", OPT_STR, &g->max_new_tokens, "N",
         "most tokens to generate (default: generation_config.json's max_new_tokens, else 256)"},
        {"greedy", OPT_FLAG, &g->greedy, NULL, "greedy decoding (as --temperature 0)"},
        {"sample", OPT_FLAG, &g->sample, NULL,
         "sample even if generation_config.json says do_sample false"},
        {"temperature", OPT_STR, &g->temperature, "T",
         "divide the logits by T before sampling (0: greedy)"},
        {"top-k", OPT_STR, &g->top_k, "K", "keep the K most likely tokens (0: all; default 50)"},
        {"top-p", OPT_STR, &g->top_p, "P", "keep the most likely tokens up to probability P"},
        {"min-p", OPT_STR, &g->min_p, "P",
         "drop tokens less likely than P times the most likely one"},
        {"repetition-penalty", OPT_STR, &g->repetition_penalty, "X",
         "divide the logits of tokens already in the text by X (multiply when negative)"},
        {"seed", OPT_STR, &g->seed, "S", "seed of the draws (same seed, same text; default 0)"},
        {"ignore-eos", OPT_FLAG, &g->ignore_eos, NULL,
         "go on past end-of-sequence ids (the chat template's end of turn still stops)"},
        {"stop", OPT_LIST, &g->stops, "TEXT", "stop before this text (not printed); repeatable"},
        {"system", OPT_STR, &g->system, "TEXT", "a system message before the user's"},
        {"chat-template", OPT_STR, &g->chat_template, "FILE",
         "a .jinja chat template instead of the model's"},
        {"template-arg", OPT_LIST, &g->template_args, "K=V",
         "extra chat template variable (V as JSON, else text), e.g. enable_thinking=false"},
        {"ctx", OPT_INT, &g->ctx, "N",
         "context in tokens: the KV cache's positions (0: max_position_embeddings)"},
        {"kv-cache", OPT_STR, &g->kv_cache, "FMT",
         "KV cache values: fp32, bf16 (half the memory) or q8 (a quarter)"},
        {"quant", OPT_STR, &g->quant, "FMT",
         "store the frozen linear weights as nf4, fp4, q8, bf16 or none (fp32)"},
        {"double-quant", OPT_FLAG, &g->double_quant, NULL,
         "nf4/fp4: quantize the absmax values too"},
        {"quant-blocksize", OPT_INT, &g->quant_blocksize, "N", "nf4/fp4 values per absmax block"},
        {"quant-lm-head", OPT_STR, &g->quant_lm_head, "FMT", "LM head: q8, bf16 or none (fp32)"},
        {"threads", OPT_INT, &g->threads, "N", "threads (0: all cores)"},
        {"quiet", OPT_FLAG, &g->quiet, NULL, "no statistics on stderr"},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0] && n < max - 1; i++)
        specs[n++] = all[i];
    specs[n] = (opt_spec){0};
    if (!g->kv_cache) g->kv_cache = "fp32";
    if (!g->quant_blocksize) g->quant_blocksize = 64;
    return n;
}

void gen_cli_session(const gen_cli *g, int need_template, infer_session_options *o) {
    memset(o, 0, sizeof *o);
    o->model_dir = g->model;
    o->adapters = g->adapters.v, o->n_adapters = g->adapters.n;
    o->load.quant = g->quant, o->load.double_quant = g->double_quant;
    o->load.blocksize = (int)g->quant_blocksize, o->load.lm_head = g->quant_lm_head;
    o->chat_template = g->chat_template;
    o->template_args = g->template_args.v, o->n_template_args = g->template_args.n;
    o->need_template = need_template;
    o->threads = (int)g->threads;
}

static ft_status num(const char *opt, const char *text, double lo, double hi, double *out,
                     ft_error *err) {
    char where[64], *end;
    snprintf(where, sizeof where, "option --%s", opt);
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a number, got \"%s\"", text);
    if (v < lo || v > hi)
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "must be in [%g, %g], got %g", lo, hi,
                            v);
    *out = v;
    return FT_OK;
}

ft_status gen_cli_sampling(const gen_cli *g, const gen_defaults *d, sampler_params *sp,
                           int *max_new, ft_error *err) {
    *sp = d->sp;
    double v;
    ft_status st = FT_OK;
    int asks_sampling = 0;
    if (g->temperature) {
        if ((st = num("temperature", g->temperature, 0, 1e6, &v, err))) return st;
        if (v == 0)
            sp->do_sample = 0;
        else
            sp->temperature = v, asks_sampling = 1;
    }
    if (g->top_k) {
        if ((st = num("top-k", g->top_k, 0, 1e9, &v, err))) return st;
        if (v != floor(v))
            return ft_error_set(err, FT_ERR_INPUT, "option --top-k", NULL, "must be an integer");
        sp->top_k = (int)v, asks_sampling = 1;
    }
    if (g->top_p) {
        if ((st = num("top-p", g->top_p, 0, 1, &v, err))) return st;
        sp->top_p = v, asks_sampling = 1;
    }
    if (g->min_p) {
        if ((st = num("min-p", g->min_p, 0, 1, &v, err))) return st;
        sp->min_p = v, asks_sampling = 1;
    }
    if (g->repetition_penalty) {
        if ((st = num("repetition-penalty", g->repetition_penalty, 1e-6, 1e6, &v, err))) return st;
        sp->repetition_penalty = v;
    }
    if (g->seed) {
        if ((st = num("seed", g->seed, 0, 1.8e19, &v, err))) return st;
        sp->seed = (uint64_t)strtoull(g->seed, NULL, 10);
    }
    for (int i = 0; i < g->stops.n; i++)
        if (!*g->stops.v[i])
            return ft_error_set(err, FT_ERR_INPUT, "option --stop", "give the text to stop at",
                                "an empty stop string would stop before anything");
    if (g->greedy && g->sample)
        return ft_error_set(err, FT_ERR_INPUT, "option --greedy", NULL,
                            "--greedy and --sample contradict each other");
    if (g->sample || asks_sampling) sp->do_sample = 1;
    if (g->greedy || (g->temperature && !strcmp(g->temperature, "0"))) sp->do_sample = 0;
    if (g->temperature && atof(g->temperature) == 0) sp->do_sample = 0;
    if (sp->do_sample && !(sp->temperature > 0))
        return ft_error_set(err, FT_ERR_INPUT, d->source, "pass --temperature T (> 0), or --greedy",
                            "temperature %g cannot sample", sp->temperature);
    *max_new = d->max_new_tokens > 0 ? d->max_new_tokens : MAX_NEW_DEFAULT;
    if (g->max_new_tokens) {
        if ((st = num("max-new-tokens", g->max_new_tokens, 0, 1 << 30, &v, err))) return st;
        *max_new = (int)v;
    }
    return FT_OK;
}

int gen_cli_context(const gen_cli *g, const infer_session *s, int cap) {
    int ctx = s->m.cfg.max_pos > 0 ? s->m.cfg.max_pos : 4096;
    if (g->ctx > 0 && g->ctx < ctx) return (int)g->ctx;
    if (g->ctx <= 0 && cap > 0 && ctx > cap) ctx = cap;
    return ctx;
}

double gen_peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

volatile sig_atomic_t gen_stop_flag;
void gen_on_sigint(int sig) { gen_stop_flag = sig; }

void gen_print_text(void *user, const char *s, size_t n) {
    (void)user;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}
