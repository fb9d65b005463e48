/*
 * trainer.c: ft_train, a LoRA training run from its options to the saved adapter, in phases:
 * the options (new, or a resumed run's with the changes a resume may make), the inputs (config,
 * data, adapter layout, memory plan), the allocations, the start or resume (checkpoint, metrics,
 * run_config.json), the steps (train_step in loop.c; metrics, evaluation, checkpoints, the
 * caller's stop flag), and the end (the adapter, or why the run stopped).
 *
 * The library prints nothing: the resolved run, warnings and every step go to the caller's
 * progress callback (ft_train_options.progress); the ftune program prints them
 * (src/cli/cmd_train.c). The data comes from data_load (src/data/, docs/data.md): every --data
 * source in its format, with loss masks, mixed, split and packed into one fixed list of examples
 * (rows when packed), so the resume position (epoch, global example index) counts those. With
 * validation data the evaluation loss is computed every --eval-every steps and at the end, as
 * metrics lines with "eval_loss".
 *
 * Under mpirun (src/dist/, docs/distributed.md) every rank runs these phases on the same options
 * and data, checked against rank 0's after the inputs are read; the steps split each optimizer
 * step's micro-batches across the ranks (loop.c), and rank 0 alone writes the run folder and
 * talks to the caller. Wherever one rank may fail or stop alone (a bad input, a full disk on rank
 * 0, a signal reaching the ranks between different steps) the ranks agree (dist_agree, dist_max)
 * before going on, so all stop together with the first failing rank's error.
 */
#include "base/cpu.h"
#include "data/dataset.h"
#include "dist/dist.h"
#include "ftune.h"
#include "io/atomic.h"
#include "io/json.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/loop.h"
#include "train/optim.h"
#include "train/options.h"
#include "train/plan.h"
#include "train/run_config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Everything a training run holds, freed by run_free. */
typedef struct run {
    run_opts ro;
    const ft_train_options *o; /* &ro.o */
    const ft_train_options *given;
    model_config cfg;
    int have_cfg;
    model_quant q;
    lora_set *ls; /* until the model owns it */
    model m;
    dataset ds, val;
    batch b;
    acts *a;
    adamw opt;
    train_loop loop;
    train_state ts;
    FILE *metrics;
    char metrics_path[4200];
    char shash[17], dhash[17];
    int B, Bv, T, ckpt;
    long total, saved_step;
    int rank, nranks; /* dist_rank(), dist_size(): 0 of 1 in one process */
    long stop_sig;    /* nranks > 1: the stop signal the ranks agreed on after the last step */
} run;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double rss_mb(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

/* A line (or lines) of text for the caller. */
static void notify(const run *r, ft_event ev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void notify(const run *r, ft_event ev, const char *fmt, ...) {
    if (!r->given->progress || r->rank != 0) return;
    char text[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    ft_train_progress p = {.event = ev, .step = r->ts.step, .total_steps = r->total, .text = text};
    r->given->progress(&p, r->given->progress_user);
}

/* The signal that stops the run (0: none); several ranks go by the one they agreed on. */
static int stop_signal(const run *r) {
    if (r->nranks > 1) return (int)r->stop_sig;
    return r->given->stop ? (int)*r->given->stop : 0;
}
static int stop_requested(const run *r) { return stop_signal(r) != 0; }

static int dtype_is_bf16(const char *dtype) { return dtype && !strcmp(dtype, "bf16"); }

/* Defaults that depend on other options: --dtype bf16 keeps checkpointed layer inputs in bf16
 * too (activations in BF16) unless --grad-checkpoint-dtype says otherwise. */
static void resolve_defaults(ft_train_options *o) {
    if (!o->dtype) o->dtype = "fp32";
    if (!o->grad_checkpoint_dtype)
        o->grad_checkpoint_dtype = dtype_is_bf16(o->dtype) && o->grad_checkpoint ? "bf16" : "fp32";
}

static ft_status check_options(const ft_train_options *o, ft_error *err) {
#define BAD(opt, ...) return ft_error_set(err, FT_ERR_INPUT, "option --" opt, NULL, __VA_ARGS__)
    if (!o->model_dir) BAD("model", "is required (a Hugging Face model folder)");
    if (!o->data_path && !o->n_data_sources) BAD("data", "is required (a data file or folder)");
    if (!o->out_dir && !o->dump_data) BAD("out", "is required (the run folder to write)");
    if (o->val_data && o->val_split > 0) BAD("val-split", "cannot go with --val-data");
    /* every number against its row's range (the CLI checked them too; library callers may not) */
    for (int i = 0; i < opt_n_rows; i++) {
        const opt_row *r = &opt_rows[i];
        const void *p = opt_ptr(r, o);
        double v = r->type == OT_INT      ? *(const int *)p
                   : r->type == OT_LONG   ? (double)*(const long *)p
                   : r->type == OT_DOUBLE ? *(const double *)p
                                          : 0;
        char where[96];
        snprintf(where, sizeof where, "option --%s", r->cli ? r->cli : r->key);
        if (r->type == OT_INT || r->type == OT_LONG || r->type == OT_DOUBLE) {
            ft_status st = opt_check_range(r, v, where, err);
            if (st) return st;
        }
    }
    if (!(o->val_split < 1)) BAD("val-split", "must be below 1");
    if (o->eval_every > 0 && !o->val_data && !(o->val_split > 0))
        return ft_error_set(err, FT_ERR_INPUT, "option --eval-every",
                            "give validation data with --val-data FILE or --val-split F",
                            "there is no validation data to evaluate");
    if (o->steps == 0 && !(o->epochs > 0)) BAD("epochs", "must be positive (or give --steps)");
    if (!schedule_known(o->schedule))
        return ft_error_set(err, FT_ERR_INPUT, "option --schedule",
                            "use constant, constant_with_warmup, linear or cosine",
                            "unknown schedule \"%s\"", o->schedule);
    if (ckpt_dtype_parse(o->grad_checkpoint_dtype) < 0)
        return ft_error_set(err, FT_ERR_INPUT, "option --grad-checkpoint-dtype", "use fp32 or bf16",
                            "unknown dtype \"%s\"", o->grad_checkpoint_dtype);
    if (o->dtype && strcmp(o->dtype, "fp32") && strcmp(o->dtype, "bf16"))
        return ft_error_set(err, FT_ERR_INPUT, "option --dtype", "use fp32 or bf16",
                            "unknown compute type \"%s\"", o->dtype);
#undef BAD
    return FT_OK;
}

/* data_options from the training options */
static void data_opts(const ft_train_options *o, int vocab, data_options *d) {
    memset(d, 0, sizeof *d);
    d->sources = o->data_sources, d->n_sources = o->n_data_sources;
    d->val_data = o->val_data, d->val_split = o->val_split;
    d->model_dir = o->model_dir, d->chat_template = o->chat_template;
    d->template_args = o->template_args, d->n_template_args = o->n_template_args;
    d->vocab = vocab, d->seq_len = o->seq_len, d->drop_long = o->drop_long;
    d->train_on_inputs = o->train_on_inputs, d->pack = o->pack;
    d->txt_paragraphs = o->txt_paragraphs, d->max_examples = o->max_examples, d->seed = o->seed;
}

/* --dump-data: prepare the data with the model folder's tokenizer and config, write, stop. */
static ft_status dump_data(run *r, ft_error *err) {
    const ft_train_options *o = r->o;
    ft_status st = model_config_load(o->model_dir, &r->cfg, err);
    if (st) return st;
    r->have_cfg = 1;
    data_options d;
    data_opts(o, r->cfg.V, &d);
    if ((st = data_load(&d, &r->ds, NULL, r->dhash, err))) return st;
    st = data_write_jsonl(&r->ds, o->dump_data, err);
    if (!st)
        notify(r, FT_EVENT_INFO,
               "wrote %d %s (%ld tokens, %ld trained on, %d truncated, %d dropped) to %s", r->ds.n,
               r->ds.packed ? "packed rows" : "examples", r->ds.tokens, r->ds.trained,
               r->ds.n_truncated, r->ds.n_dropped_long + r->ds.n_dropped_masked, o->dump_data);
    return st;
}

/* Phase 1: the options. A new run takes the given ones (paths made absolute); a resumed run
 * takes its run_config.json's, with the changes a resume may make. */
static ft_status prepare_options(run *r, ft_error *err) {
    const ft_train_options *given = r->given;
    ft_status st;
    if (given->resume) {
        if ((st = run_opts_load(&r->ro, given->resume, err))) return st;
        char note[2048];
        if ((st = run_opts_resume_changes(&r->ro, given, note, sizeof note, err))) return st;
        if (note[0]) notify(r, FT_EVENT_NOTICE, "resume: changed %s", note);
        if (r->ro.o.steps > 0 && r->ro.o.epochs != r->ro.stored.epochs)
            notify(r, FT_EVENT_NOTICE,
                   "warning: --epochs has no effect: the run's length is "
                   "--steps %ld (give more --steps to extend it)",
                   r->ro.o.steps);
        r->ro.o.overwrite = 1, r->ro.o.dump_data = given->dump_data;
    } else if ((st = run_opts_init(&r->ro, given, err))) {
        return st;
    } else if (r->nranks > 1) {
        /* --grad-accum is per rank; the run (run_config.json, the settings hash, the steps)
         * counts a step's micro-batches over all ranks, so that a resume with another number of
         * ranks keeps the global batch, and one process with --grad-accum A x N is the same run */
        if (r->ro.o.grad_accum > INT_MAX / r->nranks)
            return ft_error_set(err, FT_ERR_INPUT, "option --grad-accum", NULL,
                                "%d x %d ranks is too large", r->ro.o.grad_accum, r->nranks);
        r->ro.o.grad_accum *= r->nranks;
        r->ro.hashed.grad_accum = r->ro.o.grad_accum;
    }
    r->o = &r->ro.o;
    /* the first format accepted --eval-every without validation data (nothing was evaluated):
     * such a run resumes as it ran */
    if (given->resume && !r->o->val_data && !(r->o->val_split > 0)) r->ro.o.eval_every = 0;
    resolve_defaults(&r->ro.o);
    resolve_defaults(&r->ro.hashed);
    if ((st = check_options(r->o, err))) return st;
    if (r->o->lr == 0)
        notify(r, FT_EVENT_NOTICE, "warning: --lr is 0: the adapter will not change");
    return FT_OK;
}

/* Phase 2: config, storage of the weights, data, settings hash, adapter layout; with them the
 * memory plan is known before the weights are loaded. */
static ft_status load_inputs(run *r, ft_error *err) {
    const ft_train_options *o = r->o;
    model_load_options lopt = {.quant = o->quant,
                               .double_quant = o->double_quant,
                               .blocksize = o->quant_blocksize,
                               .lm_head = o->quant_lm_head,
                               .dtype = o->dtype};
    ft_status st = model_config_load(o->model_dir, &r->cfg, err);
    if (st) return st;
    r->have_cfg = 1;
    if (r->cfg.max_pos > 0 && o->seq_len > r->cfg.max_pos)
        notify(
            r, FT_EVENT_NOTICE,
            "warning: --seq-len %d is beyond the model's max_position_embeddings (%d): positions "
            "past it were never trained",
            o->seq_len, r->cfg.max_pos);
    if ((st = model_quant_resolve(o->model_dir, &r->cfg, &lopt, &r->q, err))) return st;
    int so = model_quant_stored_only(&r->q);
    if (so >= 0) /* forward-only kernels: their backward through the base is untested */
        return ft_error_set(err, FT_ERR_INPUT, o->model_dir,
                            "add --quant none (an fp32 copy), q8, nf4 or bf16 to train over the "
                            "weights converted to that format",
                            "training over a Q4_0/Q4_K/Q6_K base is not supported yet (this file "
                            "keeps %s weights)",
                            qformat_info(so)->name);
    data_options dopt;
    data_opts(o, r->cfg.V, &dopt);
    if ((st = data_load(&dopt, &r->ds, &r->val, r->dhash, err))) return st;
    run_settings_hash(&r->ro.hashed, r->shash);
    if (o->adapter_dir) return lora_load_peft(&r->cfg, o->adapter_dir, &r->ls, err);
    unsigned mask;
    if ((st = lora_parse_targets(&r->cfg, o->lora_targets, &mask, err))) return st;
    if ((st = lora_create(&r->cfg, o->lora_r, o->lora_alpha, o->lora_dropout, o->rslora, mask, NULL,
                          &r->ls, err)))
        return st;
    lora_init(r->ls, o->seed);
    return FT_OK;
}

/* Bytes the run needs (frozen weights, dequantization panel, LoRA values + gradients + AdamW
 * moments, activations) with storage q and checkpointing ckpt. */
static double run_bytes(const model_config *cfg, const model_quant *q, const lora_set *ls, int B,
                        int T, int ckpt, int shard_ranks) {
    double w = shard_ranks > 1 ? memory_plan_shard_weights(cfg, q, shard_ranks)
                               : (double)model_weight_bytes(cfg, q);
    return w + memory_plan_panel(cfg, q, B, T) + 4.0 * ls->n_params * sizeof(float) +
           (double)acts_plan_bytes(cfg, ls->R, ls->n, B, T, ckpt, q->compute == QC_BF16);
}

/* Refuse a run that cannot fit in the memory available, naming the options that would make it
 * fit; switch gradient checkpointing on (r->ckpt) when that alone is enough. */
static ft_status check_memory(run *r, ft_error *err) {
    const ft_train_options *o = r->o;
    double avail = memory_available();
    if (avail <= 0) return FT_OK;
    avail /= dist_local_size(); /* ranks on this host share its memory, each holding the model */
    double room = 0.95 * avail, MB = 1048576.0;
    int level = ckpt_dtype_parse(o->grad_checkpoint_dtype); /* the kind to switch on */
    const model_config *cfg = &r->cfg;
    int B = r->B, T = r->T;
    int sr = o->shard_base ? r->nranks : 1;
    double need = run_bytes(cfg, &r->q, r->ls, B, T, r->ckpt, sr);
    double need_ck = run_bytes(cfg, &r->q, r->ls, B, T, level, sr);
    if (need <= room) return FT_OK;
    if (need_ck <= room) {
        r->ckpt = level;
        notify(r, FT_EVENT_INFO,
               "memory: the run would need %.0f MB of the %.0f MB available%s; using "
               "gradient checkpointing (%.0f MB)",
               need / MB, avail / MB, dist_local_size() > 1 ? " to each rank on this host" : "",
               need_ck / MB);
        return FT_OK;
    }
    /* what 4-bit weights would need, when they are not 4-bit already */
    model_quant q4 = r->q;
    int try4 = r->q.linear != QF_NF4 && r->q.linear != QF_FP4;
    double need4 = 0, need4_ck = 0;
    if (try4) {
        q4.linear = QF_NF4, q4.blocksize = FT_QUANT_BLOCKSIZE_DEFAULT, q4.double_quant = 0;
        if (q4.lm_head == QF_F32 && !q4.head_borrowed) q4.lm_head = QF_BF16;
        need4 = run_bytes(cfg, &q4, r->ls, B, T, 0, sr);
        need4_ck = run_bytes(cfg, &q4, r->ls, B, T, level, sr);
    }
    char hint[300];
    if (try4 && need4 <= room)
        snprintf(hint, sizeof hint, "add --quant nf4 (QLoRA: %.0f MB)", need4 / MB);
    else if (try4 && need4_ck <= room)
        snprintf(hint, sizeof hint, "add --quant nf4 --grad-checkpoint (%.0f MB)", need4_ck / MB);
    else
        snprintf(hint, sizeof hint,
                 "%suse a smaller --batch-size or --seq-len (ftune plan shows "
                 "the parts)",
                 try4 ? "add --quant nf4 --grad-checkpoint and " : "");
    return ft_error_set(err, FT_ERR_RUNTIME, o->model_dir, hint,
                        "the run needs %.0f MB (%.0f MB with gradient checkpointing) but %.0f MB "
                        "are available",
                        need / MB, need_ck / MB, avail / MB);
}

/* Phase 3: sizes, the memory check, then the weights, batch, activations and optimizer. */
static ft_status allocate(run *r, ft_error *err) {
    const ft_train_options *o = r->o;
    r->B = o->batch_size < r->ds.n ? o->batch_size : r->ds.n;
    r->T = r->ds.max_len > r->val.max_len ? r->ds.max_len : r->val.max_len;
    r->Bv = o->batch_size < 1024 ? o->batch_size : 1024;
    if (r->val.n && r->Bv > r->B) r->B = r->Bv;
    /* bf16 checkpoints imply checkpointing */
    r->ckpt = ckpt_dtype_parse(o->grad_checkpoint_dtype) == CKPT_BF16 ? CKPT_BF16
              : o->grad_checkpoint                                    ? CKPT_FP32
                                                                      : CKPT_NONE;
    ft_status st;
    if ((st = check_memory(r, err))) return st;
    model_load_options lopt = {.quant = o->quant,
                               .double_quant = o->double_quant,
                               .blocksize = o->quant_blocksize,
                               .lm_head = o->quant_lm_head,
                               .dtype = o->dtype,
                               .shard = o->shard_base && r->nranks > 1};
    if ((st = model_load_with(o->model_dir, &lopt, &r->m, err))) return st;
    if (lopt.shard && !r->m.shard)
        return ft_error_set(err, FT_ERR_INPUT, o->model_dir, "leave --shard-base out for it",
                            "--shard-base shards Hugging Face (safetensors) model folders; this "
                            "is a GGUF model");
    r->m.lora = r->ls, r->ls = NULL;
    if ((st = batch_alloc(&r->b, r->B, r->T, err))) return st;
    if ((st = acts_alloc_ckpt(&r->m, r->B, r->T, 0, r->ckpt, &r->a, err))) return st;
    if (adamw_init(&r->opt, r->m.lora->n_params, o->adam_beta1, o->adam_beta2, o->adam_eps,
                   o->weight_decay))
        return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    int *order = malloc(sizeof(int) * (size_t)r->ds.n);
    if (!order) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    train_loop *l = &r->loop;
    *l = (train_loop){.m = &r->m,
                      .a = r->a,
                      .b = &r->b,
                      .opt = &r->opt,
                      .ds = &r->ds,
                      .order = order,
                      .batch_size = o->batch_size,
                      .grad_accum = o->grad_accum,
                      .shuffle = o->shuffle,
                      .seed = o->seed,
                      .lr = o->lr,
                      .max_grad_norm = o->max_grad_norm,
                      .schedule = o->schedule,
                      .warmup_steps = o->warmup_steps};
    l->micro_per_epoch = (r->ds.n + o->batch_size - 1) / o->batch_size;
    long steps_per_epoch = (l->micro_per_epoch + o->grad_accum - 1) / o->grad_accum;
    r->total = o->steps > 0 ? o->steps : (long)ceil(o->epochs * steps_per_epoch);
    if (r->total < 1) r->total = 1;
    l->total_steps = r->total;
    l->rank = r->rank, l->nranks = r->nranks;
    if (r->nranks > 1) {
        long n = o->grad_accum < l->micro_per_epoch ? o->grad_accum : l->micro_per_epoch;
        if (!(l->mb_loss = calloc((size_t)n, sizeof(double))))
            return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
        size_t g = r->m.lora->n_params * sizeof(float), lb = (size_t)n * sizeof(double);
        if ((st = dist_reserve(g > lb ? g : lb, err))) return st;
        /* FTUNE_DIST_OVERLAP=0: one reduction after the backward passes (tests compare) */
        const char *ov = getenv("FTUNE_DIST_OVERLAP");
        if (!(ov && !strcmp(ov, "0")) && (l->seg = train_grad_segments(r->m.lora, r->m.cfg.L)) &&
            (st = dist_reserve_overlap(r->m.cfg.L, r->m.lora->n_params, err)))
            return st;
    }
    if (r->rank != 0) return FT_OK; /* rank 0 alone writes the run folder */
    return run_dir_preflight(o->out_dir, r->m.lora->n_params * 12 + 65536, err);
}

/* The resolved run, for the caller to show before the first step. */
static void describe_run(const run *r) {
    const ft_train_options *o = r->o;
    const model_config *c = &r->m.cfg;
    const lora_set *ls = r->m.lora;
    const dataset *ds = &r->ds, *val = &r->val;
    char quant_text[256], data[2048] = "", text[4096];
    model_quant_describe(&r->m.quant, quant_text, sizeof quant_text);
    for (int i = 0; i < o->n_data_sources; i++) {
        size_t u = strlen(data);
        snprintf(data + u, sizeof data - u, "%s%s", i ? ", " : "", o->data_sources[i]);
    }
    int n = snprintf(
        text, sizeof text,
        "ftune train\n"
        "  model      %s (%s: %d layers, hidden %d, heads %d/%d, head_dim %d, vocab %d)\n"
        "  data       %s (%d examples, %ld tokens, %ld trained on, %d truncated to %d)\n"
        "  lora       r %d, alpha %g%s, dropout %g, scale %g, %d modules, %zu parameters%s%s\n"
        "  steps      %ld (batch %d x accum %d, %s lr %g, warmup %ld, weight decay %g, clip %g)\n"
        "  weights    %s\n"
        "  memory     weights %.1f MB, activations %.1f MB, LoRA+Adam %.1f MB; threads %d\n"
        "  out        %s",
        o->model_dir, c->arch->hf_class, c->L, c->C, c->H, c->Hkv, c->D, c->V, data, ds->n_docs,
        ds->tokens, ds->trained, ds->n_truncated, o->seq_len, ls->R, ls->alpha,
        ls->rslora ? " (rsLoRA)" : "", ls->dropout, ls->scale, ls->n, ls->n_params,
        o->adapter_dir ? ", from " : "", o->adapter_dir ? o->adapter_dir : "", r->total,
        o->batch_size, o->grad_accum, o->schedule, o->lr, o->warmup_steps, o->weight_decay,
        o->max_grad_norm, quant_text, r->m.weight_bytes / 1048576.0, acts_bytes(r->a) / 1048576.0,
        ls->n_params * 16.0 / 1048576.0,
        o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN), o->out_dir);
    if (ds->packed && n < (int)sizeof text)
        n += snprintf(text + n, sizeof text - n,
                      "\n  packing    %d rows of %d tokens: %.1f%% of the row tokens are examples",
                      ds->n, o->seq_len, 100.0 * ds->tokens / ((double)ds->n * o->seq_len));
    if (r->nranks > 1 && n < (int)sizeof text) {
        int G = o->grad_accum, N = r->nranks;
        n += snprintf(text + n, sizeof text - n,
                      "\n  ranks      %d (mpirun): each runs %s%d of the %d micro-batches of %d "
                      "examples of a step",
                      N, G % N ? "up to " : "", (G + N - 1) / N, G, o->batch_size);
        if (G % N && n < (int)sizeof text)
            n += snprintf(text + n, sizeof text - n,
                          "; %d does not divide among %d ranks: the same numbers, some ranks wait",
                          G, N);
    }
    if (val->n && n < (int)sizeof text)
        snprintf(text + n, sizeof text - n,
                 "\n  validation %d %s, %ld tokens, %ld trained on; eval loss %s%ld%s at the end",
                 val->n, val->packed ? "rows" : "examples", val->tokens, val->trained,
                 o->eval_every ? "every " : "", o->eval_every ? o->eval_every : 0,
                 o->eval_every ? " steps and" : "");
    notify(r, FT_EVENT_INFO, "%s", text);
    if (ds->n_dropped_long)
        notify(r, FT_EVENT_NOTICE,
               "warning: %d examples longer than --seq-len %d were dropped "
               "(--drop-long), the first at %s",
               ds->n_dropped_long, o->seq_len, ds->first_dropped);
    if (ds->n_dropped_masked)
        notify(r, FT_EVENT_NOTICE,
               "warning: %d examples had no token left to train on and were "
               "dropped (first dropped: %s)",
               ds->n_dropped_masked, ds->first_dropped);
    if (ds->n_no_assistant)
        notify(r, FT_EVENT_NOTICE, "warning: %d conversations had no assistant turn to train on",
               ds->n_no_assistant);
}

/* How a resume that changed the length or the schedule goes on, in words. */
static void describe_schedule_change(const run *r, long old_total) {
    const ft_train_options *o = r->o, *h = &r->ro.stored;
    long s = r->ts.step;
    if (old_total == r->total && o->lr == h->lr && !strcmp(o->schedule, h->schedule) &&
        o->warmup_steps == h->warmup_steps)
        return;
    double was = h->lr * schedule_factor(h->schedule, s, h->warmup_steps, old_total);
    double now = o->lr * schedule_factor(o->schedule, s, o->warmup_steps, r->total);
    notify(
        r, FT_EVENT_NOTICE,
        "resume: the %s schedule is recomputed over %ld steps (from %ld), as transformers' Trainer "
        "does when max_steps changes: the learning rate of step %ld is %.6g (it would have been "
        "%.6g)",
        o->schedule, r->total, old_total, s + 1, now, was);
}

/* Phase 4: start the run, or load its newest checkpoint and check that it belongs to it; write
 * run_config.json and open metrics.jsonl. Sets *finished when a resumed run has no steps left. */
static ft_status start_or_resume(run *r, int *finished, ft_error *err) {
    const ft_train_options *o = r->o;
    ft_status st;
    r->ts = (train_state){.seed = o->seed};
    memcpy(r->ts.settings_hash, r->shash, 17);
    memcpy(r->ts.data_hash, r->dhash, 17);
    snprintf(r->metrics_path, sizeof r->metrics_path, "%s/metrics.jsonl", o->out_dir);
    /* --overwrite: the earlier run's files go only now, when the new run is known to start */
    if (!r->given->resume && o->overwrite && r->rank == 0 && (st = run_dir_clear(o->out_dir, err)))
        return st;
    if (r->given->resume) {
        long last = checkpoint_latest(o->out_dir);
        if (last >= 0) {
            if ((st = checkpoint_load(o->out_dir, last, r->m.lora, &r->opt, &r->ts, err)))
                return st;
            if (strcmp(r->ts.data_hash, r->dhash))
                return ft_error_set(
                    err, FT_ERR_INPUT, o->data_path,
                    "restore the data the run started with, or start a new run",
                    "the data changed since the run started (checkpoint-%ld), so it "
                    "could not continue exactly",
                    last);
            if (strcmp(r->ts.settings_hash, r->shash))
                return ft_error_set(err, FT_ERR_INPUT, o->model_dir,
                                    "restore the model the run started with, or start a new run",
                                    "the model or the settings changed since the run started "
                                    "(checkpoint-%ld), so it could not continue exactly",
                                    last);
            notify(r, FT_EVENT_INFO, "resuming %s from checkpoint-%ld (epoch %ld, example %ld)",
                   o->out_dir, last, r->ts.epoch, r->ts.example_index);
        } else {
            notify(r, FT_EVENT_INFO, "no checkpoint in %s yet: starting from step 0", o->out_dir);
        }
        const ft_train_options *h = &r->ro.stored;
        long spe = (r->loop.micro_per_epoch + h->grad_accum - 1) / h->grad_accum;
        long old_total = h->steps > 0 ? h->steps : (long)ceil(h->epochs * spe);
        if (old_total < 1) old_total = 1;
        if (r->ts.step >= r->total) {
            *finished = 1;
            notify(r, FT_EVENT_NOTICE,
                   "the run in %s is finished: it has done all %ld of its %ld steps; to train on, "
                   "resume with more --steps (or --epochs)",
                   o->out_dir, r->ts.step, r->total);
            return FT_OK;
        }
        describe_schedule_change(r, old_total);
        if (r->rank == 0 && (st = metrics_truncate(r->metrics_path, r->ts.step, err))) return st;
    }
    r->saved_step = r->ts.step;
    if (r->rank == 0 &&
        (st = run_config_write(&r->ro, &r->m, r->total, &r->ds, r->shash, r->dhash, err)))
        return st;
    if (r->rank == 0) r->metrics = fopen(r->metrics_path, r->given->resume ? "a" : "w");
    if (r->rank == 0 && !r->metrics)
        return ft_error_set(err, FT_ERR_RUNTIME, r->metrics_path,
                            "check that the run folder is writable", "cannot create: %s",
                            strerror(errno));
    describe_run(r);
    epoch_order(r->loop.order, r->ds.n, o->shuffle, o->seed, r->ts.epoch);
    return FT_OK;
}

static void report_step(const run *r, const step_result *s, double elapsed, long first_step) {
    if (!r->given->progress || r->rank != 0) return;
    long done = r->ts.step;
    ft_train_progress p = {.event = FT_EVENT_STEP,
                           .step = done,
                           .total_steps = r->total,
                           .epoch = train_epoch(&r->loop, &r->ts),
                           .loss = s->loss,
                           .lr = s->lr,
                           .grad_norm = s->grad_norm,
                           .tokens = s->tokens,
                           .tokens_per_s = s->tokens / s->seconds,
                           .elapsed_s = elapsed,
                           .eta_s = elapsed / (done - first_step) * (r->total - done),
                           .rss_mb = rss_mb()};
    r->given->progress(&p, r->given->progress_user);
}

/* A number for metrics.jsonl: JSON has no NaN or infinity, so those are null. */
static void json_num(char *buf, size_t n, double v) {
    if (isfinite(v))
        snprintf(buf, n, "%.17g", v);
    else
        snprintf(buf, n, "null");
}

static void write_step_metrics(run *r, const step_result *s, double elapsed) {
    char loss[40], gn[40], div[64] = "";
    json_num(loss, sizeof loss, s->loss);
    json_num(gn, sizeof gn, s->grad_norm);
    if (!r->metrics) return; /* a rank other than 0 */
    if (s->diverged) snprintf(div, sizeof div, ", \"diverged\": \"%s\"", s->diverged);
    fprintf(r->metrics,
            "{\"step\": %ld, \"epoch\": %.4f, \"loss\": %s, \"lr\": %.17g, \"grad_norm\": %s, "
            "\"tokens\": %ld, \"tokens_per_s\": %.2f, \"elapsed_s\": %.3f%s",
            r->ts.step, train_epoch(&r->loop, &r->ts), loss, s->lr, gn, s->tokens,
            s->tokens / s->seconds, elapsed, div);
    /* several ranks: the gradient sum's span and the part of it not hidden behind backward;
     * --shard-base: the time waited for all-gathers (rank 0's) */
    if (r->nranks > 1)
        fprintf(r->metrics, ", \"comm_s\": %.6f, \"comm_wait_s\": %.6f", s->comm_s, s->comm_wait_s);
    if (r->m.shard)
        fprintf(r->metrics, ", \"gather_wait_s\": %.6f, \"gathered_bytes\": %.0f", s->gather_wait_s,
                s->gathered_bytes);
    fprintf(r->metrics, "}\n");
    fflush(r->metrics);
}

static void evaluate(run *r) {
    /* the others go on to the next step's reduction and wait there; with --shard-base every
     * rank evaluates (each layer's weights are all-gathered), rank 0 alone writes */
    if (r->rank != 0 && !r->m.shard) return;
    long vc;
    double vl = eval_loss(&r->m, r->a, &r->b, r->Bv, &r->val, &vc);
    if (r->rank != 0) return;
    char v[40];
    json_num(v, sizeof v, vl);
    fprintf(r->metrics,
            "{\"step\": %ld, \"epoch\": %.4f, \"eval_loss\": %s, \"eval_tokens\": %ld}\n",
            r->ts.step, train_epoch(&r->loop, &r->ts), v, vc);
    fflush(r->metrics);
    if (!r->given->progress) return;
    ft_train_progress p = {.event = FT_EVENT_EVAL,
                           .step = r->ts.step,
                           .total_steps = r->total,
                           .epoch = train_epoch(&r->loop, &r->ts),
                           .eval_loss = vl,
                           .eval_tokens = vc};
    r->given->progress(&p, r->given->progress_user);
}

/* "ftune train --resume RUN [--threads N] [--lr LR]", for hints (a static buffer). */
static const char *resume_command(const run *r, double lr) {
    static char cmd[4400];
    int n = 0;
    if (r->nranks > 1) n = snprintf(cmd, sizeof cmd, "mpirun -np %d ", r->nranks);
    n += snprintf(cmd + n, sizeof cmd - n, "ftune train --resume %s", r->o->out_dir);
    if (r->o->threads > 0 && n < (int)sizeof cmd)
        n += snprintf(cmd + n, sizeof cmd - n, " --threads %d", r->o->threads);
    if (lr > 0 && n < (int)sizeof cmd) snprintf(cmd + n, sizeof cmd - n, " --lr %.3g", lr);
    return cmd;
}

/* Phase 5: the steps, until the total, a divergence, or the caller's stop flag. */
static ft_status run_steps(run *r, ft_error *err) {
    const ft_train_options *o = r->o;
    double t0 = now_s();
    long first_step = r->ts.step;
    ft_status st = FT_OK;
    while (r->ts.step < r->total) {
        step_result s;
        train_step(&r->loop, &r->ts, &s);
        double elapsed = now_s() - t0;
        write_step_metrics(r, &s, elapsed);
        if (s.diverged) {
            char hint[1024];
            snprintf(hint, sizeof hint,
                     "%s with a lower learning rate: %s; if it diverges again, check the data "
                     "and the model's weights",
                     r->saved_step > 0 ? "go on from the last good checkpoint" : "start again",
                     resume_command(r, o->lr / 10));
            return ft_error_set(err, FT_ERR_RUNTIME, o->out_dir, hint,
                                "training diverged at step %ld: the %s (the last checkpoint, "
                                "checkpoint-%ld, is from before it)",
                                r->ts.step, s.diverged, r->saved_step);
        }
        report_step(r, &s, elapsed, first_step);
        if (r->nranks > 1) /* a signal may reach the ranks between different steps */
            r->stop_sig = dist_max(r->given->stop ? *r->given->stop : 0, NULL);
        int last = r->ts.step == r->total, stop = stop_requested(r);
        if (r->val.n && ((o->eval_every > 0 && r->ts.step % o->eval_every == 0) || last))
            evaluate(r);
        int save = (o->save_every > 0 && r->ts.step % o->save_every == 0) || last || stop;
        if (r->nranks > 1) save = dist_max(r->rank == 0 && save, NULL) || stop; /* rank 0's */
        if (save) {
            if (r->rank == 0)
                st = checkpoint_save(o->out_dir, r->m.lora, &r->m.cfg, o->model_dir, &r->opt,
                                     &r->ts, o->keep_checkpoints, err);
            if ((st = dist_agree(st, err))) return st;
            r->saved_step = r->ts.step;
        }
        if (stop) break;
    }
    return st;
}

/* The model folder as the user gave it, for adapter_config.json's base_model_name_or_path. */
static const char *model_as_given(const run *r) {
    const cJSON *m =
        r->ro.as_given ? cJSON_GetObjectItemCaseSensitive(r->ro.as_given, "model") : NULL;
    return cJSON_IsString(m) ? m->valuestring : r->o->model_dir;
}

/* Phase 6: the adapter; or, when the caller stopped the run, where it can go on from. */
static ft_status finish(run *r, ft_error *err) {
    const ft_train_options *o = r->o;
    ft_status st = FT_OK;
    if (r->rank == 0) st = lora_save_peft(r->m.lora, &r->m.cfg, o->out_dir, model_as_given(r), err);
    if ((st = dist_agree(st, err))) return st;
    notify(r, FT_EVENT_INFO,
           "saved the adapter to %s (adapter_model.safetensors, adapter_config.json)", o->out_dir);
    if (!stop_requested(r)) return FT_OK;
    int sig = stop_signal(r);
    char hint[600];
    snprintf(hint, sizeof hint, "continue with: %s", resume_command(r, 0));
    return ft_error_set(err, sig == SIGTERM ? FT_ERR_TERMINATED : FT_ERR_INTERRUPTED, o->out_dir,
                        hint, "stopped by signal %d at step %ld; saved checkpoint-%ld", sig,
                        r->ts.step, r->saved_step);
}

static void run_free(run *r) {
    if (r->metrics) fclose(r->metrics);
    free(r->loop.order);
    free(r->loop.mb_loss);
    free(r->loop.seg);
    adamw_free(&r->opt);
    acts_free(r->a);
    batch_free(&r->b);
    dataset_free(&r->ds);
    dataset_free(&r->val);
    model_free(&r->m);
    if (r->ls) lora_free(r->ls);
    if (r->have_cfg) model_config_free(&r->cfg);
    run_opts_free(&r->ro);
}

/* Several ranks must run one training: the same ftune, effective options, model (in the settings
 * hash: config.json and weight sizes) and data (the data hash) as rank 0. Every rank compares
 * itself with rank 0 and dist_agree names the lowest rank that differs or failed before this
 * point; every rank then stops with its error (exit 2 for a difference). Called by every rank,
 * whatever st. */
static ft_status check_same_run(run *r, ft_status st, ft_error *err) {
    if (r->nranks == 1) return st;
    typedef struct {
        char version[32], shash[17], dhash[17], text[16384];
    } fingerprint;
    fingerprint fp[2] = {0}, *mine = &fp[0], *ref = &fp[1]; /* no allocation: all must reach the
                                                                 collectives below */
    snprintf(mine->version, sizeof mine->version, "%s", ft_version());
    memcpy(mine->shash, r->shash, 17), memcpy(mine->dhash, r->dhash, 17);
    if (r->o) opt_settings_text(r->o, 1, mine->text, sizeof mine->text);
    *ref = *mine;
    dist_bcast(ref, sizeof *ref);
    const char *hint = "start every rank with the same options and files (one command line after "
                       "mpirun; on several hosts the same paths)";
    if (!st && r->rank != 0) {
        if (strcmp(mine->version, ref->version)) {
            st = ft_error_set(err, FT_ERR_INPUT, "mpirun", "install the same ftune on every host",
                              "runs ftune %s, rank 0 runs ftune %s", mine->version, ref->version);
        } else if (strcmp(mine->text, ref->text)) {
            /* the first line (key=value) that differs */
            const char *a = mine->text, *b = ref->text;
            while (*a && *a == *b) {
                const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
                if (!ea || !eb || ea - a != eb - b || strncmp(a, b, (size_t)(ea - a))) break;
                a = ea + 1, b = eb + 1;
            }
            int la = (int)strcspn(a, "\n"), lb = (int)strcspn(b, "\n");
            st = ft_error_set(err, FT_ERR_INPUT, "options", hint,
                              "was started with other options than rank 0: %.*s (rank 0: %.*s)",
                              la > 300 ? 300 : la, a, lb > 300 ? 300 : lb, b);
        } else if (strcmp(mine->shash, ref->shash)) {
            st = ft_error_set(err, FT_ERR_INPUT, r->o->model_dir, hint,
                              "the model folder differs from rank 0's (config.json or the weight "
                              "files; settings hash %s, rank 0 %s)",
                              mine->shash, ref->shash);
        } else if (strcmp(mine->dhash, ref->dhash)) {
            st = ft_error_set(err, FT_ERR_INPUT, r->o->data_path, hint,
                              "the data differs from rank 0's (data hash %s, rank 0 %s)",
                              mine->dhash, ref->dhash);
        }
    }
    return dist_agree(st, err);
}

/* Several ranks start from the same step: on a resume each reads the newest checkpoint of the run
 * folder, which must be the same folder for all (shared storage on several hosts). */
static ft_status check_same_start(run *r, ft_status st, ft_error *err) {
    if (r->nranks == 1) return st;
    long ref = r->ts.step;
    dist_bcast(&ref, sizeof ref);
    if (!st && ref != r->ts.step)
        st = ft_error_set(err, FT_ERR_INPUT, r->o->out_dir,
                          "--resume needs the run folder at the same path on every host (shared "
                          "storage)",
                          "starts at step %ld but rank 0 at step %ld: the ranks see different "
                          "checkpoints",
                          r->ts.step, ref);
    return dist_agree(st, err);
}

ft_status ft_train(const ft_train_options *given, ft_error *err) {
    run *r = calloc(1, sizeof *r);
    if (!r) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    r->given = given;
    r->rank = dist_rank(), r->nranks = dist_size();
    int finished = 0;
    ft_status st = prepare_options(r, err);
    if (!st && r->o->dump_data) {
        if (r->rank == 0) st = dump_data(r, err); /* one writer under mpirun */
        goto done;
    }
    if (!st && r->rank == 0 && !given->resume && !r->o->overwrite &&
        run_dir_nonempty(r->o->out_dir))
        st = ft_error_set(err, FT_ERR_INPUT, r->o->out_dir,
                          "choose a new --out folder, continue it with --resume, or pass "
                          "--overwrite to replace the run in it",
                          "the output folder exists and is not empty");
    if (!st) cpu_set_threads(r->o->threads);
    if (!st) st = load_inputs(r, err);
    st = check_same_run(r, st, err);
    if (!st) st = allocate(r, err);
    if (!st) st = start_or_resume(r, &finished, err);
    st = check_same_start(r, st, err);
    /* the watchdog from the first step on: loading (minutes for a large model, at a different
     * pace on each host) makes no calls that would answer its questions */
    if (!st && r->nranks > 1) {
        dist_set_timeout(r->o->dist_timeout);
        dist_set_resume_hint(resume_command(r, 0));
    }
    if (!st && !finished) st = run_steps(r, err);
    if (!st && !finished) st = finish(r, err);
done:
    run_free(r);
    free(r);
    return st;
}
