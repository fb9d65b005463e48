/*
 * options.c: the table of training options (see options.h) and what reads it generically:
 * defaults, text values with range checks, and the settings text behind the settings hash.
 *
 * The hashed rows (OF_HASH) are in the order of the settings text of the first runs, and their
 * text forms are those runs' (%d, %ld, %.17g, %llu; "" for no value, "none" for --quant and
 * "default" for --quant-lm-head): the hash of an existing run is stored in its checkpoints, and a
 * resume recomputes it from run_config.json. Rows added later hash only when set
 * (OF_HASH_IF_SET). tests/options_test.c holds the text of a run of the first format.
 */
#include "train/options.h"
#include "model/lora.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const opt_group_names[OG_COUNT] = {
    "model", "data", "LoRA", "optimisation", "memory and quantization", "checkpoints", "output"};

#define OFF(f) offsetof(ft_train_options, f)
#define T_ OF_TRAIN
#define TE (OF_TRAIN | OF_EVAL)
#define TP (OF_TRAIN | OF_PLAN)
#define TEP (OF_TRAIN | OF_EVAL | OF_PLAN)
#define H OF_HASH
#define S OF_SAVE
#define R OF_RESUME
#define P OF_PATH
#define IMAX ((double)INT_MAX)
#define LMAX 9.2e18 /* below LONG_MAX, exactly representable as a double */
/* the row's fields in order: key, cli, type, off, n_off, def, lo, hi, flags, group, metavar, help,
 * hash_none, sep */
#define STR(key, cli, f, def, fl, g, mv, help)                                                     \
    { key, cli, OT_STR, OFF(f), 0, def, 0, 0, fl, g, mv, help, "", NULL, NULL }
#define INT(key, cli, f, def, lo, hi, fl, g, mv, help)                                             \
    { key, cli, OT_INT, OFF(f), 0, def, lo, hi, fl, g, mv, help, "", NULL, NULL }
#define LONG(key, cli, f, def, lo, hi, fl, g, mv, help)                                            \
    { key, cli, OT_LONG, OFF(f), 0, def, lo, hi, fl, g, mv, help, "", NULL, NULL }
#define DBL(key, cli, f, def, lo, hi, fl, g, mv, help)                                             \
    { key, cli, OT_DOUBLE, OFF(f), 0, def, lo, hi, (fl) | OF_FINITE, g, mv, help, "", NULL, NULL }
#define BOOL(key, cli, f, def, fl, g, help)                                                        \
    { key, cli, OT_BOOL, OFF(f), 0, def, 0, 1, fl, g, NULL, help, "", NULL, NULL }
#define LIST(key, cli, f, nf, fl, g, mv, help, sep, json)                                          \
    { key, cli, OT_LIST, OFF(f), OFF(nf), NULL, 0, 0, fl, g, mv, help, "", sep, json }
#define STR_(x) #x
#define XSTR(x) STR_(x)

/* clang-format off */
const opt_row opt_rows[] = {
    /* the hashed rows, in the settings text's order */
    STR("model", "model", model_dir, NULL, TEP | H | S | P, OG_MODEL, "DIR",
        "Hugging Face model folder (config.json, *.safetensors)"),
    LIST("data", "data", data_sources, n_data_sources, TE | H | S | P, OG_DATA, "PATH[:W]",
         "training data: a file or folder (text, prompt/completion, messages, ShareGPT, Alpaca "
         "or input_ids rows as JSONL or a .json array, or .txt; docs/data.md); repeat to mix, "
         ":W = share of examples", ", ", "data_sources"),
    STR("adapter", "adapter", adapter_dir, NULL, TE | H | S | P, OG_LORA, "DIR",
        "start from this PEFT adapter (its r/alpha/targets win)"),
    INT("lora_r", "lora-r", lora_r, "8", 1, 65536, TP | H | S, OG_LORA, "R", "LoRA rank"),
    DBL("lora_alpha", "lora-alpha", lora_alpha, "8", -DBL_MAX, DBL_MAX, T_ | H | S, OG_LORA, "A",
        "LoRA alpha (scale = alpha / r)"),
    DBL("lora_dropout", "lora-dropout", lora_dropout, "0", 0, 1, T_ | H | S, OG_LORA, "P",
        "dropout on the LoRA input"),
    STR("lora_targets", "lora-targets", lora_targets, LORA_DEFAULT_TARGETS, TP | H | S, OG_LORA,
        "LIST", "comma list of q_proj,k_proj,... or all-linear (default: PEFT's, q_proj,v_proj; "
        "phi3 has none: give qkv_proj or all-linear)"),
    BOOL("rslora", "rslora", rslora, "0", T_ | H | S, OG_LORA,
         "rank-stabilised LoRA (scale = alpha / sqrt(r))"),
    LONG("steps", "steps", steps, "0", 0, LMAX, T_ | H | S | R, OG_OPTIM, "N",
         "optimizer steps (overrides --epochs when > 0)"),
    DBL("epochs", "epochs", epochs, "3", 0, 1e9, T_ | H | S | R, OG_OPTIM, "E", "passes over the data"),
    INT("batch_size", "batch-size", batch_size, "8", 1, IMAX, TEP | H | S, OG_OPTIM, "B",
        "examples per micro-batch"),
    INT("grad_accum", "grad-accum", grad_accum, "1", 1, IMAX, T_ | H | S, OG_OPTIM, "K",
        "micro-batches per optimizer step"),
    INT("seq_len", "seq-len", seq_len, "2048", 2, IMAX, TEP | H | S, OG_DATA, "T",
        "longest example in tokens (longer ones keep their start)"),
    DBL("lr", "lr", lr, "5e-05", 0, DBL_MAX, T_ | H | S | R, OG_OPTIM, "LR", "peak learning rate"),
    STR("schedule", "schedule", schedule, "linear", T_ | H | S | R, OG_OPTIM, "NAME",
        "constant, constant_with_warmup, linear or cosine"),
    LONG("warmup_steps", "warmup-steps", warmup_steps, "0", 0, LMAX, T_ | H | S | R, OG_OPTIM, "N",
         "linear warmup steps"),
    DBL("weight_decay", "weight-decay", weight_decay, "0", 0, DBL_MAX, T_ | H | S, OG_OPTIM, "WD",
        "AdamW weight decay"),
    DBL("max_grad_norm", "max-grad-norm", max_grad_norm, "1", 0, DBL_MAX, T_ | H | S, OG_OPTIM, "X",
        "clip the global gradient norm (0: off)"),
    DBL("adam_beta1", "adam-beta1", adam_beta1, "0.9", 0, 1, T_ | H | S, OG_OPTIM, "B1", "AdamW beta1"),
    DBL("adam_beta2", "adam-beta2", adam_beta2, "0.999", 0, 1, T_ | H | S, OG_OPTIM, "B2", "AdamW beta2"),
    DBL("adam_eps", "adam-eps", adam_eps, "1e-08", 0, DBL_MAX, T_ | H | S, OG_OPTIM, "EPS", "AdamW epsilon"),
    {"seed", "seed", OT_U64, OFF(seed), 0, "42", 0, 0, T_ | H | S, OG_OPTIM, "S",
     "seed for LoRA init, shuffling and dropout", "", NULL, NULL},
    BOOL("shuffle", "no-shuffle", shuffle, "1", T_ | H | S | OF_NEGATE, OG_DATA,
         "keep the file's order of examples"),
    STR("val_data", "val-data", val_data, NULL, T_ | H | S | P, OG_DATA, "PATH",
        "validation data (same formats as --data)"),
    DBL("val_split", "val-split", val_split, "0", 0, 1, T_ | H | S, OG_DATA, "F",
        "hold out this fraction of each --data source for validation"),
    BOOL("pack", "pack", pack, "0", TE | H | S, OG_DATA,
         "pack several examples into each row of --seq-len tokens"),
    BOOL("drop_long", "drop-long", drop_long, "0", T_ | H | S, OG_DATA,
         "drop examples longer than --seq-len instead of truncating them"),
    BOOL("train_on_inputs", "train-on-inputs", train_on_inputs, "0", T_ | H | S, OG_DATA,
         "train on every token (no prompt / non-assistant masking)"),
    BOOL("txt_paragraphs", "txt-paragraphs", txt_paragraphs, "0", T_ | H | S, OG_DATA,
         ".txt files hold documents separated by blank lines (else one per file)"),
    LONG("max_examples", "max-examples", max_examples, "0", 0, LMAX, T_ | H | S, OG_DATA, "N",
         "train on at most N examples (0: all)"),
    STR("chat_template", "chat-template", chat_template, NULL, TE | H | S | P, OG_DATA, "FILE",
        "a .jinja chat template instead of the model's"),
    LIST("template_args", "template-arg", template_args, n_template_args, TE | H | S, OG_DATA, "K=V",
         "extra chat template variable (V as JSON, else text), e.g. enable_thinking=false", " ", NULL),
    {"quant", "quant", OT_STR, OFF(quant), 0, NULL, 0, 0, TEP | H | S, OG_MEMORY, "FMT",
     "store the frozen linear weights as nf4 or fp4 (QLoRA, as bitsandbytes), q8 (GGUF Q8_0), "
     "bf16, or none (fp32; default: bf16 under --dtype bf16)", "none", NULL, NULL},
    BOOL("double_quant", "double-quant", double_quant, "0", TEP | H | S, OG_MEMORY,
         "nf4/fp4: quantize the absmax values too (bitsandbytes' bnb_4bit_use_double_quant)"),
    INT("quant_blocksize", "quant-blocksize", quant_blocksize, XSTR(FT_QUANT_BLOCKSIZE_DEFAULT), 16, 4096, TEP | H | S, OG_MEMORY,
        "N", "nf4/fp4 values per absmax block"),
    {"quant_lm_head", "quant-lm-head", OT_STR, OFF(quant_lm_head), 0, NULL, 0, 0, TEP | H | S,
     OG_MEMORY, "FMT", "LM head: q8, bf16 or none (fp32); default: the checkpoint's own dtype with "
     "--quant (bitsandbytes keeps lm_head unquantized too), fp32 without", "default", NULL, NULL},
    /* hashed only when set: options added after the first runs */
    {"grad_checkpoint_dtype", "grad-checkpoint-dtype", OT_STR, OFF(grad_checkpoint_dtype), 0, NULL,
     0, 0, TP | OF_HASH_IF_SET | S, OG_MEMORY, "T",
     "kept layer inputs: fp32, or bf16 (half the memory; the forward goes on from the rounded "
     "values; implies --grad-checkpoint; default: bf16 under --dtype bf16)", "fp32", NULL, NULL},
    {"dtype", "dtype", OT_STR, OFF(dtype), 0, "fp32", 0, 0, TEP | OF_HASH_IF_SET | S, OG_MEMORY, "T",
     "compute type: fp32, or bf16 (the frozen-weight matmuls round their inputs and weights to "
     "bf16 and sum in fp32; LoRA weights and AdamW state stay fp32; the weights are kept as bf16 "
     "unless --quant says otherwise; --grad-checkpoint then keeps bf16 layer inputs; on CPUs with "
     "AMX attention's products run in bf16 too)",
     "fp32", NULL, NULL},
    /* not hashed: the same numbers whatever their values */
    INT("stride", "stride", stride, "0", 0, IMAX, OF_EVAL, OG_DATA, "N",
        "perplexity of a plain text file with a sliding window of --seq-len tokens (0: the "
        "model's context) moved by N tokens, as the transformers perplexity guide (0: off)"),
    BOOL("grad_checkpoint", "grad-checkpoint", grad_checkpoint, "0", TP | R, OG_MEMORY,
         "keep layer inputs only, recompute layers in backward (same numbers, less memory)"),
    BOOL("shard_base", "shard-base", shard_base, "0", TP | R, OG_MEMORY,
         "under mpirun: each rank keeps 1/N of every layer's frozen weights and of the LM head, "
         "all-gathered before the layer runs (the next one prefetched); the same numbers"),
    DBL("dist_timeout", "dist-timeout", dist_timeout, "25", 0, 1e9, T_ | R, OG_MEMORY, "S",
        "under mpirun, from the first step: a rank that has not answered for 2 x S seconds "
        "(stopped, hung, network down) is named and every rank stops (0: wait forever)"),
    INT("ranks", "ranks", ranks, "1", 1, 1 << 20, OF_PLAN, OG_MEMORY, "N",
        "plan for N ranks (mpirun -np N): the per-rank peak, with --shard-base 1/N of the weights"),
    INT("threads", "threads", threads, "0", 0, 65536, TE | S | R, OG_MEMORY, "N", "threads (0: all cores)"),
    LONG("eval_every", "eval-every", eval_every, "0", 0, LMAX, T_ | S | R, OG_DATA, "N",
         "evaluation loss every N steps into metrics.jsonl (0: only at the end; needs --val-data or "
         "--val-split)"),
    LONG("save_every", "save-every", save_every, "0", 0, LMAX, T_ | S | R, OG_CKPT, "N",
         "write RUN/checkpoint-STEP every N steps (0: only at the end)"),
    INT("keep_checkpoints", "keep-checkpoints", keep_checkpoints, "3", 0, IMAX, T_ | S | R, OG_CKPT,
        "K", "keep the newest K checkpoints (0: all)"),
    STR("resume", "resume", resume, NULL, T_, OG_CKPT, "RUN",
        "continue RUN from its newest checkpoint with its settings; --steps/--epochs (to extend), "
        "--lr, --schedule, --warmup-steps, --threads, --save-every, --eval-every and "
        "--keep-checkpoints may change"),
    STR("out", "out", out_dir, NULL, T_, OG_OUTPUT, "RUN",
        "run folder for the adapter, run_config.json, metrics.jsonl"),
    BOOL("overwrite", "overwrite", overwrite, "0", T_, OG_OUTPUT,
         "start over in a run folder that holds a run: removes what ftune wrote there (checkpoints, "
         "metrics, adapter, run_config.json) and nothing else"),
    BOOL("quiet", "quiet", quiet, "0", T_ | R, OG_OUTPUT, "no progress lines"),
    STR("dump_data", "dump-data", dump_data, NULL, T_, OG_OUTPUT, "FILE",
        "write the prepared examples (input_ids, labels) as JSONL and exit"),
};
/* clang-format on */
const int opt_n_rows = (int)(sizeof opt_rows / sizeof opt_rows[0]);

const opt_row *opt_find(const char *key) {
    for (int i = 0; i < opt_n_rows; i++)
        if (!strcmp(opt_rows[i].key, key)) return &opt_rows[i];
    return NULL;
}

const opt_row *opt_find_cli(const char *cli) {
    for (int i = 0; i < opt_n_rows; i++)
        if (opt_rows[i].cli && !strcmp(opt_rows[i].cli, cli)) return &opt_rows[i];
    return NULL;
}

const char *opt_json_key(const opt_row *r) { return r->json ? r->json : r->key; }

void *opt_ptr(const opt_row *r, const ft_train_options *o) { return (char *)o + r->off; }

void ft_train_defaults(ft_train_options *o) {
    memset(o, 0, sizeof *o);
    ft_error ignore;
    for (int i = 0; i < opt_n_rows; i++)
        if (opt_rows[i].def) opt_set_text(&opt_rows[i], o, opt_rows[i].def, NULL, &ignore);
}

void opt_value_text(const opt_row *r, const ft_train_options *o, char *buf, size_t n) {
    void *p = opt_ptr(r, o);
    switch (r->type) {
    case OT_STR: {
        const char *s = *(const char **)p;
        snprintf(buf, n, "%s", s ? s : r->hash_none);
        break;
    }
    case OT_INT:
    case OT_BOOL:
        snprintf(buf, n, "%d", *(int *)p);
        break;
    case OT_LONG:
        snprintf(buf, n, "%ld", *(long *)p);
        break;
    case OT_U64:
        snprintf(buf, n, "%llu", (unsigned long long)*(uint64_t *)p);
        break;
    case OT_DOUBLE:
        snprintf(buf, n, "%.17g", *(double *)p);
        break;
    case OT_LIST: {
        const char *const *v = *(const char *const **)p;
        int k = *(int *)((char *)o + r->n_off);
        buf[0] = 0;
        for (int i = 0; i < k; i++) {
            size_t u = strlen(buf);
            snprintf(buf + u, n - u, "%s%s", i ? r->sep : "", v[i]);
        }
        break;
    }
    }
}

static const char *range_text(const opt_row *r, char *buf, size_t n) {
    if (r->hi >= DBL_MAX || r->hi >= LMAX)
        snprintf(buf, n, "at least %g", r->lo);
    else
        snprintf(buf, n, "in [%.15g, %.15g]", r->lo, r->hi);
    return buf;
}

ft_status opt_check_range(const opt_row *r, double v, const char *where, ft_error *err) {
    char rt[96];
    if ((r->flags & OF_FINITE) && !isfinite(v))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "must be a finite number, %s (got %g)",
                            range_text(r, rt, sizeof rt), v);
    if (r->type != OT_U64 && r->type != OT_BOOL && (v < r->lo || v > r->hi))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "must be %s (got %.17g)",
                            range_text(r, rt, sizeof rt), v);
    return FT_OK;
}

ft_status opt_set_text(const opt_row *r, ft_train_options *o, const char *text, const char *where,
                       ft_error *err) {
    char wbuf[128];
    if (!where) snprintf(wbuf, sizeof wbuf, "option --%s", r->cli ? r->cli : r->key), where = wbuf;
    void *p = opt_ptr(r, o);
    char *end;
    errno = 0;
    switch (r->type) {
    case OT_STR:
        *(const char **)p = text;
        return FT_OK;
    case OT_BOOL:
        *(int *)p = atoi(text) != 0;
        return FT_OK;
    case OT_INT:
    case OT_LONG: {
        long v = strtol(text, &end, 10);
        if (end == text || *end)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an integer, got \"%s\"",
                                text);
        if (errno == ERANGE)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "%s is out of range", text);
        ft_status st = opt_check_range(r, (double)v, where, err);
        if (st) return st;
        if (r->type == OT_INT)
            *(int *)p = (int)v;
        else
            *(long *)p = v;
        return FT_OK;
    }
    case OT_U64: {
        if (text[0] == '-')
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "must not be negative (got %s)",
                                text);
        unsigned long long v = strtoull(text, &end, 10);
        if (end == text || *end || errno == ERANGE)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "expected an integer in [0, 2^64), got \"%s\"", text);
        *(uint64_t *)p = (uint64_t)v;
        return FT_OK;
    }
    case OT_DOUBLE: {
        double v = strtod(text, &end);
        if (end == text || *end)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a number, got \"%s\"",
                                text);
        ft_status st = opt_check_range(r, v, where, err);
        if (st) return st;
        *(double *)p = v;
        return FT_OK;
    }
    case OT_LIST:
        break; /* lists are set by their owner (the CLI, run_config.c) */
    }
    return FT_OK;
}

void opt_settings_text(const ft_train_options *o, int all, char *buf, size_t n) {
    buf[0] = 0;
    char v[4096];
    for (int i = 0; i < opt_n_rows; i++) {
        const opt_row *r = &opt_rows[i];
        if (!(r->flags & (OF_HASH | OF_HASH_IF_SET))) continue;
        opt_value_text(r, o, v, sizeof v);
        if ((r->flags & OF_HASH_IF_SET) && !all && !strcmp(v, r->hash_none)) continue;
        size_t u = strlen(buf);
        snprintf(buf + u, n - u, "%s=%s\n", r->key, v);
    }
}
