/*
 * trainer.c: the LoRA training loop and evaluation (ft_train, ft_eval).
 *
 * One optimizer step = grad_accum micro-batches of batch_size examples (the last step of an epoch
 * takes what is left, as transformers' Trainer does). Before the step's first forward pass the
 * counted tokens of all its micro-batches are summed, so every micro-batch's gradient is scaled by
 * 1 / (counted tokens of the whole step): the loss is the same whatever the padding, the split into
 * micro-batches or the accumulation (transformers' num_items_in_batch). Then: global-norm
 * clipping, the schedule's learning rate, AdamW, a metrics line, a progress line.
 *
 * The data comes from data_load (src/data/, docs/data.md): every --data source in its format,
 * with loss masks, mixed, split and packed into one fixed list of examples (rows when packed),
 * so the resume position (epoch, global example index) counts those. With validation data the
 * evaluation loss is computed every --eval-every steps and at the end, as metrics lines with
 * "eval_loss".
 */
#include "ftune.h"
#include "base/rand.h"
#include "data/dataset.h"
#include "io/json.h"
#include "io/atomic.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/plan.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

void openblas_set_num_threads(int);

void ft_train_defaults(ft_train_options *o) {
    memset(o, 0, sizeof *o);
    o->lora_r = 8, o->lora_alpha = 8, o->lora_dropout = 0, o->lora_targets = "q_proj,v_proj";
    o->epochs = 3, o->batch_size = 8, o->grad_accum = 1, o->seq_len = 2048;
    o->lr = 5e-5, o->weight_decay = 0, o->max_grad_norm = 1.0;
    o->adam_beta1 = 0.9, o->adam_beta2 = 0.999, o->adam_eps = 1e-8;
    o->schedule = "linear", o->seed = 42, o->shuffle = 1, o->keep_checkpoints = 3;
    /* quant NULL (not given): fp32 storage, or bf16 under --dtype bf16 (model_quant_resolve) */
    o->quant_blocksize = 64;
}

static int dtype_is_bf16(const char *dtype) { return dtype && !strcmp(dtype, "bf16"); }

/* Defaults that depend on other options: --dtype bf16 keeps checkpointed layer inputs in bf16
 * too (activations in BF16) unless --grad-checkpoint-dtype says otherwise. */
static void resolve_defaults(ft_train_options *o) {
    if (dtype_is_bf16(o->dtype) && o->grad_checkpoint && !o->grad_checkpoint_dtype)
        o->grad_checkpoint_dtype = "bf16";
}

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

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

static void set_threads(int n) {
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

/* The order of examples in an epoch: file order, or a seeded Fisher-Yates shuffle. */
static void epoch_order(int *order, int n, int shuffle, uint64_t seed, long epoch) {
    for (int i = 0; i < n; i++) order[i] = i;
    if (!shuffle) return;
    uint64_t s = rand_mix64(seed ^ rand_mix64((uint64_t)epoch + 1));
    for (int i = n - 1; i > 0; i--) {
        s = rand_mix64(s);
        int j = (int)(s % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j], order[j] = t;
    }
}

static int dir_nonempty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n > 0;
}

static ft_status check_options(const ft_train_options *o, ft_error *err) {
#define BAD(opt, ...) return ft_error_set(err, FT_ERR_INPUT, "option --" opt, NULL, __VA_ARGS__)
    if (!o->model_dir) BAD("model", "is required (a Hugging Face model folder)");
    if (!o->data_path && !o->n_data_sources) BAD("data", "is required (a data file or folder)");
    if (!o->out_dir && !o->dump_data) BAD("out", "is required (the run folder to write)");
    if (o->val_data && o->val_split > 0) BAD("val-split", "cannot go with --val-data");
    if (!(o->val_split >= 0 && o->val_split < 1)) BAD("val-split", "must be in [0, 1)");
    if (o->eval_every < 0) BAD("eval-every", "must not be negative");
    if (o->max_examples < 0) BAD("max-examples", "must not be negative");
    if (o->batch_size < 1) BAD("batch-size", "must be at least 1");
    if (o->grad_accum < 1) BAD("grad-accum", "must be at least 1");
    if (o->seq_len < 2) BAD("seq-len", "must be at least 2");
    if (o->steps < 0) BAD("steps", "must not be negative");
    if (o->steps == 0 && !(o->epochs > 0)) BAD("epochs", "must be positive (or give --steps)");
    if (!(o->lr >= 0)) BAD("lr", "must not be negative");
    if (!schedule_known(o->schedule))
        return ft_error_set(err, FT_ERR_INPUT, "option --schedule",
                            "use constant, constant_with_warmup, linear or cosine",
                            "unknown schedule \"%s\"", o->schedule);
    if (o->warmup_steps < 0) BAD("warmup-steps", "must not be negative");
    if (ckpt_dtype_parse(o->grad_checkpoint_dtype) < 0)
        return ft_error_set(err, FT_ERR_INPUT, "option --grad-checkpoint-dtype", "use fp32 or bf16",
                            "unknown dtype \"%s\"", o->grad_checkpoint_dtype);
    if (o->dtype && strcmp(o->dtype, "fp32") && strcmp(o->dtype, "bf16"))
        return ft_error_set(err, FT_ERR_INPUT, "option --dtype", "use fp32 or bf16",
                            "unknown compute type \"%s\"", o->dtype);
#undef BAD
    return FT_OK;
}

/* Print the resolved run before starting. */
static const char *data_label(const ft_train_options *o) {
    static char buf[1024];
    if (!o->n_data_sources) return o->data_path;
    buf[0] = 0;
    for (int i = 0; i < o->n_data_sources; i++) {
        size_t u = strlen(buf);
        snprintf(buf + u, sizeof buf - u, "%s%s", i ? ", " : "", o->data_sources[i]);
    }
    return buf;
}

static void print_settings(const ft_train_options *o, const model *m, const lora_set *ls,
                           const dataset *ds, const dataset *val, long total, size_t act_bytes) {
    const model_config *c = &m->cfg;
    char quant_text[256];
    model_quant_describe(&m->quant, quant_text, sizeof quant_text);
    fprintf(stderr,
            "ftune train\n"
            "  model      %s (%s: %d layers, hidden %d, heads %d/%d, head_dim %d, vocab %d)\n"
            "  data       %s (%d examples, %ld tokens, %ld trained on, %d truncated to %d)\n"
            "  lora       r %d, alpha %g%s, dropout %g, scale %g, %d modules, %zu parameters%s%s\n"
            "  steps      %ld (batch %d x accum %d, %s lr %g, warmup %ld, weight decay %g, clip %g)\n"
            "  weights    %s\n"
            "  memory     weights %.1f MB, activations %.1f MB, LoRA+Adam %.1f MB; threads %d\n"
            "  out        %s\n",
            o->model_dir, c->arch->hf_class, c->L, c->C, c->H, c->Hkv, c->D, c->V, data_label(o),
            ds->n_docs, ds->tokens, ds->trained, ds->n_truncated, o->seq_len, ls->R, ls->alpha,
            ls->rslora ? " (rsLoRA)" : "", ls->dropout, ls->scale, ls->n, ls->n_params,
            o->adapter_dir ? ", from " : "", o->adapter_dir ? o->adapter_dir : "", total,
            o->batch_size, o->grad_accum, o->schedule, o->lr, o->warmup_steps, o->weight_decay,
            o->max_grad_norm, quant_text, m->weight_bytes / 1048576.0, act_bytes / 1048576.0,
            ls->n_params * 16.0 / 1048576.0, o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN),
            o->out_dir);
    if (ds->packed)
        fprintf(stderr, "  packing    %d rows of %d tokens: %.1f%% of the row tokens are examples\n",
                ds->n, o->seq_len, 100.0 * ds->tokens / ((double)ds->n * o->seq_len));
    if (val && val->n)
        fprintf(stderr, "  validation %d %s, %ld tokens, %ld trained on; eval loss %s%ld%s at the end\n",
                val->n, val->packed ? "rows" : "examples", val->tokens, val->trained,
                o->eval_every ? "every " : "", o->eval_every ? o->eval_every : 0,
                o->eval_every ? " steps and" : "");
    if (ds->n_dropped_long)
        fprintf(stderr, "warning: %d examples longer than --seq-len %d were dropped (--drop-long), the "
                "first at %s\n", ds->n_dropped_long, o->seq_len, ds->first_dropped);
    if (ds->n_dropped_masked)
        fprintf(stderr, "warning: %d examples had no token left to train on and were dropped (first "
                "dropped: %s)\n", ds->n_dropped_masked, ds->first_dropped);
    if (ds->n_no_assistant)
        fprintf(stderr, "warning: %d conversations had no assistant turn to train on\n",
                ds->n_no_assistant);
}

/* The settings that decide a run's numbers, one "key=value" line each: a resumed run must have
 * the same ones (threads, progress and saving options may change). The lines added since the
 * first runs (grad_checkpoint_dtype, dtype) are written only when not at their default, so the
 * hash of an older run stays what its checkpoints hold; `all` writes them always, so that two
 * texts compared line by line have the same keys in the same order. */
static void settings_text(const ft_train_options *o, int all, char *buf, size_t n) {
    char targs[1024] = "";
    for (int i = 0; i < o->n_template_args; i++) {
        size_t u = strlen(targs);
        snprintf(targs + u, sizeof targs - u, "%s%s", i ? " " : "", o->template_args[i]);
    }
    snprintf(buf, n,
             "model=%s\ndata=%s\nadapter=%s\nlora_r=%d\nlora_alpha=%.17g\nlora_dropout=%.17g\n"
             "lora_targets=%s\nrslora=%d\nsteps=%ld\nepochs=%.17g\nbatch_size=%d\ngrad_accum=%d\n"
             "seq_len=%d\nlr=%.17g\nschedule=%s\nwarmup_steps=%ld\nweight_decay=%.17g\n"
             "max_grad_norm=%.17g\nadam_beta1=%.17g\nadam_beta2=%.17g\nadam_eps=%.17g\n"
             "seed=%llu\nshuffle=%d\nval_data=%s\nval_split=%.17g\npack=%d\ndrop_long=%d\n"
             "train_on_inputs=%d\ntxt_paragraphs=%d\nmax_examples=%ld\nchat_template=%s\n"
             "template_args=%s\nquant=%s\ndouble_quant=%d\nquant_blocksize=%d\n"
             "quant_lm_head=%s\n",
             o->model_dir ? o->model_dir : "", data_label(o) ? data_label(o) : "",
             o->adapter_dir ? o->adapter_dir : "", o->lora_r, o->lora_alpha, o->lora_dropout,
             o->lora_targets ? o->lora_targets : "", o->rslora, o->steps, o->epochs, o->batch_size,
             o->grad_accum, o->seq_len, o->lr, o->schedule ? o->schedule : "", o->warmup_steps,
             o->weight_decay, o->max_grad_norm, o->adam_beta1, o->adam_beta2, o->adam_eps,
             (unsigned long long)o->seed, o->shuffle, o->val_data ? o->val_data : "", o->val_split,
             o->pack, o->drop_long, o->train_on_inputs, o->txt_paragraphs, o->max_examples,
             o->chat_template ? o->chat_template : "", targs, o->quant ? o->quant : "none",
             o->double_quant, o->quant_blocksize ? o->quant_blocksize : 64,
             o->quant_lm_head ? o->quant_lm_head : "default");
    /* bf16 checkpoints change the numbers (fp32 ones do not): named only then, so the runs
     * written before the option keep their settings */
    int ckbf = ckpt_dtype_parse(o->grad_checkpoint_dtype) == CKPT_BF16;
    size_t u = strlen(buf);
    if (all || ckbf) snprintf(buf + u, n - u, "grad_checkpoint_dtype=%s\n", ckbf ? "bf16" : "fp32");
    u = strlen(buf);
    if (all) snprintf(buf + u, n - u, "dtype=%s\n", o->dtype ? o->dtype : "fp32");
    else if (dtype_is_bf16(o->dtype)) snprintf(buf + u, n - u, "dtype=bf16\n");
}

/* Fingerprint of the settings plus the model's config.json and weight file sizes. */
static void settings_hash(const ft_train_options *o, char out[17]) {
    char text[8192];
    settings_text(o, 0, text, sizeof text);
    uint64_t h = hash_bytes(text, strlen(text), HASH_START);
    char path[4200], *cfg = NULL;
    size_t n = 0;
    ft_error ignore;
    snprintf(path, sizeof path, "%s/config.json", o->model_dir);
    if (file_read_all(path, &cfg, &n, &ignore) == FT_OK) h = hash_bytes(cfg, n, h);
    free(cfg);
    DIR *d = opendir(o->model_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 12 || strcmp(e->d_name + l - 12, ".safetensors")) continue;
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", o->model_dir, e->d_name);
        if (stat(path, &sb) == 0) h = hash_bytes(&sb.st_size, sizeof sb.st_size, h);
    }
    if (d) closedir(d);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static ft_status write_run_config(const ft_train_options *o, const model *m, long total_steps,
                                  const dataset *ds, const char *shash, const char *dhash,
                                  ft_error *err) {
    const lora_set *ls = m->lora;
    const model_quant *q = &m->quant;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "ftune_version", ft_version());
    cJSON *op = cJSON_AddObjectToObject(j, "options");
    cJSON_AddStringToObject(op, "model", o->model_dir);
    cJSON_AddStringToObject(op, "data", data_label(o));
    cJSON *srcs = cJSON_AddArrayToObject(op, "data_sources");
    if (!o->n_data_sources) cJSON_AddItemToArray(srcs, cJSON_CreateString(o->data_path));
    for (int i = 0; i < o->n_data_sources; i++)
        cJSON_AddItemToArray(srcs, cJSON_CreateString(o->data_sources[i]));
    if (o->val_data) cJSON_AddStringToObject(op, "val_data", o->val_data);
    cJSON_AddNumberToObject(op, "val_split", o->val_split);
    cJSON_AddNumberToObject(op, "eval_every", (double)o->eval_every);
    if (o->chat_template) cJSON_AddStringToObject(op, "chat_template", o->chat_template);
    cJSON *targs = cJSON_AddArrayToObject(op, "template_args");
    for (int i = 0; i < o->n_template_args; i++)
        cJSON_AddItemToArray(targs, cJSON_CreateString(o->template_args[i]));
    cJSON_AddBoolToObject(op, "pack", o->pack);
    cJSON_AddBoolToObject(op, "drop_long", o->drop_long);
    cJSON_AddBoolToObject(op, "train_on_inputs", o->train_on_inputs);
    cJSON_AddBoolToObject(op, "txt_paragraphs", o->txt_paragraphs);
    cJSON_AddNumberToObject(op, "max_examples", (double)o->max_examples);
    if (o->adapter_dir) cJSON_AddStringToObject(op, "adapter", o->adapter_dir);
    else cJSON_AddNullToObject(op, "adapter");
    cJSON_AddNumberToObject(op, "lora_r", o->lora_r);
    cJSON_AddNumberToObject(op, "lora_alpha", o->lora_alpha);
    cJSON_AddNumberToObject(op, "lora_dropout", o->lora_dropout);
    cJSON_AddStringToObject(op, "lora_targets", o->lora_targets);
    cJSON_AddBoolToObject(op, "rslora", o->rslora);
    cJSON_AddNumberToObject(op, "steps", (double)o->steps);
    cJSON_AddNumberToObject(op, "epochs", o->epochs);
    cJSON_AddNumberToObject(op, "batch_size", o->batch_size);
    cJSON_AddNumberToObject(op, "grad_accum", o->grad_accum);
    cJSON_AddNumberToObject(op, "seq_len", o->seq_len);
    cJSON_AddNumberToObject(op, "lr", o->lr);
    cJSON_AddStringToObject(op, "schedule", o->schedule);
    cJSON_AddNumberToObject(op, "warmup_steps", (double)o->warmup_steps);
    cJSON_AddNumberToObject(op, "weight_decay", o->weight_decay);
    cJSON_AddNumberToObject(op, "max_grad_norm", o->max_grad_norm);
    cJSON_AddNumberToObject(op, "adam_beta1", o->adam_beta1);
    cJSON_AddNumberToObject(op, "adam_beta2", o->adam_beta2);
    cJSON_AddNumberToObject(op, "adam_eps", o->adam_eps);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cJSON_AddStringToObject(op, "seed", seed);
    cJSON_AddBoolToObject(op, "shuffle", o->shuffle);
    cJSON_AddNumberToObject(op, "save_every", (double)o->save_every);
    cJSON_AddNumberToObject(op, "keep_checkpoints", o->keep_checkpoints);
    cJSON_AddNumberToObject(op, "threads", o->threads);
    if (o->quant) cJSON_AddStringToObject(op, "quant", o->quant);
    else cJSON_AddNullToObject(op, "quant"); /* not given: as --dtype decides */
    cJSON_AddBoolToObject(op, "double_quant", o->double_quant);
    cJSON_AddNumberToObject(op, "quant_blocksize", o->quant_blocksize ? o->quant_blocksize : 64);
    if (o->quant_lm_head) cJSON_AddStringToObject(op, "quant_lm_head", o->quant_lm_head);
    else cJSON_AddNullToObject(op, "quant_lm_head");
    cJSON_AddStringToObject(op, "grad_checkpoint_dtype",
                            o->grad_checkpoint_dtype ? o->grad_checkpoint_dtype : "fp32");
    cJSON_AddStringToObject(op, "dtype", o->dtype ? o->dtype : "fp32");
    cJSON *r = cJSON_AddObjectToObject(j, "resolved");
    cJSON *t = cJSON_AddArrayToObject(r, "lora_targets");
    for (int k = 0; k < LIN_COUNT; k++)
        if (ls->targets & (1u << k)) cJSON_AddItemToArray(t, cJSON_CreateString(lin_names[k]));
    cJSON_AddNumberToObject(r, "lora_r", ls->R);
    cJSON_AddNumberToObject(r, "lora_alpha", ls->alpha);
    cJSON_AddNumberToObject(r, "lora_scale", ls->scale);
    cJSON_AddNumberToObject(r, "lora_parameters", (double)ls->n_params);
    cJSON_AddNumberToObject(r, "total_steps", (double)total_steps);
    /* the compute dtype of the frozen-weight matmuls (LoRA and AdamW are float32 always) */
    cJSON_AddStringToObject(r, "dtype", q->compute == QC_BF16 ? "bfloat16" : "float32");
    /* how the frozen weights were stored: formats as qtensor names them */
    cJSON *wq = cJSON_AddObjectToObject(r, "frozen_weights");
    cJSON_AddStringToObject(wq, "linear", qformat_info(q->linear)->name);
    cJSON_AddBoolToObject(wq, "double_quant", q->double_quant);
    if (q->linear == QF_NF4 || q->linear == QF_FP4)
        cJSON_AddNumberToObject(wq, "blocksize", q->blocksize);
    cJSON_AddStringToObject(wq, "source", q->from_checkpoint ? "bitsandbytes checkpoint"
                                          : q->linear == QF_F32 ? "converted" : "quantized at load");
    cJSON_AddStringToObject(wq, "lm_head", qformat_info(q->lm_head)->name);
    cJSON_AddStringToObject(wq, "embedding", qformat_info(q->embed)->name);
    cJSON_AddNumberToObject(wq, "bytes", (double)m->weight_bytes);
    cJSON_AddNumberToObject(r, "examples", ds->n_docs);
    if (ds->packed) cJSON_AddNumberToObject(r, "packed_rows", ds->n);
    cJSON_AddNumberToObject(r, "tokens", (double)ds->tokens);
    cJSON_AddNumberToObject(r, "trained_tokens", (double)ds->trained);
    cJSON_AddNumberToObject(r, "truncated_examples", ds->n_truncated);
    cJSON_AddNumberToObject(r, "dropped_long_examples", ds->n_dropped_long);
    cJSON_AddNumberToObject(r, "dropped_masked_examples", ds->n_dropped_masked);
    cJSON_AddStringToObject(j, "settings_hash", shash);
    cJSON_AddStringToObject(j, "data_hash", dhash);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char path[4200];
    snprintf(path, sizeof path, "%s/run_config.json", o->out_dir);
    ft_status st = atomic_write_file(path, text, strlen(text), err);
    free(text);
    return st;
}

/* Options of the run in run_dir, from its run_config.json (strings point into *keep). */
/* A JSON list of strings as a malloc'ed array pointing into the JSON. */
static const char **string_list(const cJSON *a, int *n) {
    *n = 0;
    if (!cJSON_IsArray(a)) return NULL;
    const char **v = calloc((size_t)cJSON_GetArraySize(a) + 1, sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, a) if (cJSON_IsString(e)) v[(*n)++] = e->valuestring;
    return v;
}

static ft_status load_run_options(const char *run_dir, ft_train_options *o, cJSON **keep,
                                  const char ***lists, ft_error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/run_config.json", run_dir);
    cJSON *j;
    ft_status st = json_load_file(path, &j, err);
    if (st) {
        snprintf(err->hint, sizeof err->hint, "--resume takes a run folder written by ftune train");
        return st;
    }
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "options");
    if (!cJSON_IsObject(op)) {
        cJSON_Delete(j);
        return ft_error_set(err, FT_ERR_INPUT, path, NULL, "field \"options\" is missing");
    }
    long r, steps, bs, ga, sl, wu, se, kc;
    int rs, sh;
    double v;
    const char *seed;
    ft_train_defaults(o);
#define G(call) if (!st) st = call
    G(json_get_string(op, "model", 1, NULL, &o->model_dir, path, err));
    G(json_get_string(op, "data", 1, NULL, &o->data_path, path, err));
    G(json_get_string(op, "adapter", 0, NULL, &o->adapter_dir, path, err));
    G(json_get_int(op, "lora_r", 1, 0, &r, path, err));
    G(json_get_double(op, "lora_alpha", 1, 0, &o->lora_alpha, path, err));
    G(json_get_double(op, "lora_dropout", 1, 0, &o->lora_dropout, path, err));
    G(json_get_string(op, "lora_targets", 1, NULL, &o->lora_targets, path, err));
    G(json_get_bool(op, "rslora", 1, 0, &rs, path, err));
    G(json_get_int(op, "steps", 1, 0, &steps, path, err));
    G(json_get_double(op, "epochs", 1, 0, &o->epochs, path, err));
    G(json_get_int(op, "batch_size", 1, 0, &bs, path, err));
    G(json_get_int(op, "grad_accum", 1, 0, &ga, path, err));
    G(json_get_int(op, "seq_len", 1, 0, &sl, path, err));
    G(json_get_double(op, "lr", 1, 0, &o->lr, path, err));
    G(json_get_string(op, "schedule", 1, NULL, &o->schedule, path, err));
    G(json_get_int(op, "warmup_steps", 1, 0, &wu, path, err));
    G(json_get_double(op, "weight_decay", 1, 0, &o->weight_decay, path, err));
    G(json_get_double(op, "max_grad_norm", 1, 0, &o->max_grad_norm, path, err));
    G(json_get_double(op, "adam_beta1", 1, 0, &o->adam_beta1, path, err));
    G(json_get_double(op, "adam_beta2", 1, 0, &o->adam_beta2, path, err));
    G(json_get_double(op, "adam_eps", 1, 0, &o->adam_eps, path, err));
    G(json_get_string(op, "seed", 1, NULL, &seed, path, err));
    G(json_get_bool(op, "shuffle", 1, 0, &sh, path, err));
    G(json_get_int(op, "save_every", 0, 0, &se, path, err));
    G(json_get_int(op, "keep_checkpoints", 0, 3, &kc, path, err));
    G(json_get_double(op, "threads", 0, 0, &v, path, err));
    long ee = 0, mx = 0, qbs = 64;
    int pk = 0, dl = 0, toi = 0, tp = 0, dq = 0;
    G(json_get_string(op, "quant", 0, NULL, &o->quant, path, err));
    G(json_get_bool(op, "double_quant", 0, 0, &dq, path, err));
    G(json_get_int(op, "quant_blocksize", 0, 64, &qbs, path, err));
    G(json_get_string(op, "quant_lm_head", 0, NULL, &o->quant_lm_head, path, err));
    G(json_get_string(op, "grad_checkpoint_dtype", 0, "fp32", &o->grad_checkpoint_dtype, path, err));
    G(json_get_string(op, "dtype", 0, "fp32", &o->dtype, path, err));
    G(json_get_string(op, "val_data", 0, NULL, &o->val_data, path, err));
    G(json_get_double(op, "val_split", 0, 0, &o->val_split, path, err));
    G(json_get_int(op, "eval_every", 0, 0, &ee, path, err));
    G(json_get_string(op, "chat_template", 0, NULL, &o->chat_template, path, err));
    G(json_get_bool(op, "pack", 0, 0, &pk, path, err));
    G(json_get_bool(op, "drop_long", 0, 0, &dl, path, err));
    G(json_get_bool(op, "train_on_inputs", 0, 0, &toi, path, err));
    G(json_get_bool(op, "txt_paragraphs", 0, 0, &tp, path, err));
    G(json_get_int(op, "max_examples", 0, 0, &mx, path, err));
#undef G
    o->eval_every = ee, o->max_examples = mx, o->pack = pk, o->drop_long = dl;
    o->train_on_inputs = toi, o->txt_paragraphs = tp;
    o->double_quant = dq, o->quant_blocksize = (int)qbs;
    if (!st) {
        lists[0] = string_list(cJSON_GetObjectItemCaseSensitive(op, "data_sources"), &o->n_data_sources);
        lists[1] = string_list(cJSON_GetObjectItemCaseSensitive(op, "template_args"), &o->n_template_args);
        o->data_sources = lists[0], o->template_args = lists[1];
    }
    if (st) {
        cJSON_Delete(j);
        return st;
    }
    o->lora_r = (int)r, o->rslora = rs, o->steps = steps, o->batch_size = (int)bs;
    o->grad_accum = (int)ga, o->seq_len = (int)sl, o->warmup_steps = wu, o->shuffle = sh;
    o->seed = strtoull(seed, NULL, 10), o->save_every = se, o->keep_checkpoints = (int)kc;
    o->out_dir = run_dir;
    *keep = j;
    return FT_OK;
}

/* With --resume and explicit options, every setting that decides the numbers must match. */
static ft_status compare_settings(const ft_train_options *given, const ft_train_options *stored,
                                  ft_error *err) {
    char a[8192], b[8192], diff[900] = "";
    settings_text(given, 1, a, sizeof a);
    settings_text(stored, 1, b, sizeof b);
    char *sa = a, *sb = b;
    int n = 0;
    while (*sa && *sb) {
        char *ea = strchr(sa, '\n'), *eb = strchr(sb, '\n');
        *ea = 0, *eb = 0;
        if (strcmp(sa, sb)) {
            size_t used = strlen(diff);
            if (used < sizeof diff - 1)
                snprintf(diff + used, sizeof diff - used, "%s%.200s (now %.200s)", n ? "; " : "",
                         sb, strchr(sa, '=') + 1);
            n++;
        }
        sa = ea + 1, sb = eb + 1;
    }
    if (!n) return FT_OK;
    return ft_error_set(err, FT_ERR_INPUT, "option --resume",
                        "resume with the run's own settings (give only --resume RUN), or start a "
                        "new run to change them",
                        "the settings differ from the run's, so it could not continue exactly: %s",
                        diff);
}

/* Keep the metrics lines of steps <= step (the rest belong to work that is being redone). */
static ft_status truncate_metrics(const char *path, long step, ft_error *err) {
    char *text;
    size_t n;
    if (file_read_all(path, &text, &n, err) != FT_OK) return FT_OK; /* none yet */
    size_t keep = 0;
    for (char *p = text; p < text + n;) {
        char *nl = memchr(p, '\n', (size_t)(text + n - p));
        if (!nl) break;
        const char *s = strstr(p, "\"step\": ");
        long ls = s && s < nl ? atol(s + 8) : 0;
        if (ls > step) break;
        keep = (size_t)(nl + 1 - text);
        p = nl + 1;
    }
    ft_status st = atomic_write_file(path, text, keep, err);
    free(text);
    return st;
}

/* Refuse to start when the run folder cannot be written or the disk is nearly full. */
static ft_status preflight_out(const char *dir, size_t ckpt_bytes, ft_error *err) {
    ft_status st = make_dirs(dir, err);
    if (st) return st;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.ftune-write-test", dir);
    if ((st = atomic_write_file(probe, "ok\n", 3, err))) {
        snprintf(err->hint, sizeof err->hint, "the run folder must be writable; choose another --out");
        return st;
    }
    unlink(probe);
    struct statvfs vs;
    if (statvfs(dir, &vs) == 0) {
        double avail = (double)vs.f_bavail * vs.f_frsize, need = 2.0 * ckpt_bytes + 65536;
        if (avail < need)
            return ft_error_set(err, FT_ERR_RUNTIME, dir, "free some disk space or choose another --out",
                                "only %.1f MB free; checkpoints need about %.1f MB", avail / 1048576.0,
                                need / 1048576.0);
    }
    return FT_OK;
}

/* data_options from the training options; one[] holds data_path when there is no list. */
static void data_opts(const ft_train_options *o, int vocab, const char **one, data_options *d) {
    memset(d, 0, sizeof *d);
    one[0] = o->data_path;
    d->sources = o->n_data_sources ? o->data_sources : one;
    d->n_sources = o->n_data_sources ? o->n_data_sources : 1;
    d->val_data = o->val_data, d->val_split = o->val_split;
    d->model_dir = o->model_dir, d->chat_template = o->chat_template;
    d->template_args = o->template_args, d->n_template_args = o->n_template_args;
    d->vocab = vocab, d->seq_len = o->seq_len, d->drop_long = o->drop_long;
    d->train_on_inputs = o->train_on_inputs, d->pack = o->pack;
    d->txt_paragraphs = o->txt_paragraphs, d->max_examples = o->max_examples, d->seed = o->seed;
}

/* --dump-data: prepare the data with the model folder's tokenizer and config, write, stop. */
static ft_status dump_data(const ft_train_options *o, ft_error *err) {
    model_config cfg;
    ft_status st = model_config_load(o->model_dir, &cfg, err);
    if (st) return st;
    data_options d;
    const char *one[1];
    data_opts(o, cfg.V, one, &d);
    model_config_free(&cfg);
    dataset ds;
    char hash[17];
    if ((st = data_load(&d, &ds, NULL, hash, err))) return st;
    st = data_write_jsonl(&ds, o->dump_data, err);
    if (!st && !o->quiet)
        fprintf(stderr, "wrote %d %s (%ld tokens, %ld trained on, %d truncated, %d dropped) to %s\n",
                ds.n, ds.packed ? "packed rows" : "examples", ds.tokens, ds.trained,
                ds.n_truncated, ds.n_dropped_long + ds.n_dropped_masked, o->dump_data);
    dataset_free(&ds);
    return st;
}

/* Mean token loss over every example of val, in micro-batches of b's rows. */
static double eval_loss(const model *m, acts *a, batch *b, int B, const dataset *val, long *count) {
    double sum = 0;
    long n = 0;
    int idx[1024];
    for (int first = 0; first < val->n; first += B) {
        int nb = val->n - first < B ? val->n - first : B;
        for (int i = 0; i < nb; i++) idx[i] = first + i;
        batch_fill(b, val, idx, nb);
        long c = 0;
        sum += model_forward(m, a, b, 0, 0, NULL, &c);
        n += c;
    }
    *count = n;
    return n ? sum / n : 0.0;
}

/* Bytes the run needs (frozen weights, dequantization panel, LoRA values + gradients + AdamW
 * moments, activations) with storage q and checkpointing ckpt. */
static double run_bytes(const model_config *cfg, const model_quant *q, const lora_set *ls, int B,
                        int T, int ckpt) {
    return (double)model_weight_bytes(cfg, q) + memory_plan_panel(cfg, q, B, T) +
           4.0 * ls->n_params * sizeof(float) +
           (double)acts_plan_bytes(cfg, ls->R, ls->n, B, T, ckpt);
}

/* Refuse a run that cannot fit in the memory available, naming the options that would make it
 * fit; switch gradient checkpointing on (*ckpt) when that alone is enough. */
static ft_status check_memory(const ft_train_options *o, const model_config *cfg,
                              const model_quant *q, const lora_set *ls, int B, int T, int *ckpt,
                              ft_error *err) {
    double avail = memory_available();
    if (avail <= 0) return FT_OK;
    double room = 0.95 * avail, MB = 1048576.0;
    int level = ckpt_dtype_parse(o->grad_checkpoint_dtype); /* the kind to switch on */
    double need = run_bytes(cfg, q, ls, B, T, *ckpt), need_ck = run_bytes(cfg, q, ls, B, T, level);
    if (need <= room) return FT_OK;
    if (need_ck <= room) {
        *ckpt = level;
        if (!o->quiet)
            fprintf(stderr, "memory: the run would need %.0f MB of the %.0f MB available; using "
                            "gradient checkpointing (%.0f MB)\n", need / MB, avail / MB, need_ck / MB);
        return FT_OK;
    }
    /* what 4-bit weights would need, when they are not 4-bit already */
    model_quant q4 = *q;
    int try4 = q->linear != QF_NF4 && q->linear != QF_FP4;
    double need4 = 0, need4_ck = 0;
    if (try4) {
        q4.linear = QF_NF4, q4.blocksize = 64, q4.double_quant = 0;
        if (q4.lm_head == QF_F32 && !q4.head_borrowed) q4.lm_head = QF_BF16;
        need4 = run_bytes(cfg, &q4, ls, B, T, 0);
        need4_ck = run_bytes(cfg, &q4, ls, B, T, level);
    }
    char hint[300];
    if (try4 && need4 <= room)
        snprintf(hint, sizeof hint, "add --quant nf4 (QLoRA: %.0f MB)", need4 / MB);
    else if (try4 && need4_ck <= room)
        snprintf(hint, sizeof hint, "add --quant nf4 --grad-checkpoint (%.0f MB)", need4_ck / MB);
    else
        snprintf(hint, sizeof hint, "%suse a smaller --batch-size or --seq-len (ftune plan shows "
                 "the parts)", try4 ? "add --quant nf4 --grad-checkpoint and " : "");
    return ft_error_set(err, FT_ERR_RUNTIME, o->model_dir, hint,
                        "the run needs %.0f MB (%.0f MB with gradient checkpointing) but %.0f MB "
                        "are available", need / MB, need_ck / MB, avail / MB);
}

ft_status ft_train(const ft_train_options *given, ft_error *err) {
    ft_train_options eff = *given;
    const ft_train_options *o = &eff;
    cJSON *stored = NULL;
    const char **lists[2] = {NULL, NULL};
    ft_status st;
    if (given->dump_data && !given->resume) {
        if ((st = check_options(o, err))) return st;
        return dump_data(o, err);
    }
    if (given->resume) {
        if ((st = load_run_options(given->resume, &eff, &stored, lists, err))) return st;
        if (given->model_dir || given->data_path || given->n_data_sources) {
            ft_train_options cmp = *given;
            resolve_defaults(&cmp);
            st = compare_settings(&cmp, &eff, err);
        } else if (given->dtype) {
            /* `--resume RUN --dtype T` alone: the dtype must still be the run's, not be ignored */
            ft_train_options cmp = eff;
            cmp.dtype = given->dtype;
            st = compare_settings(&cmp, &eff, err);
        }
        if (st) {
            cJSON_Delete(stored);
            free(lists[0]), free(lists[1]);
            return st;
        }
        eff.threads = given->threads, eff.quiet = given->quiet, eff.overwrite = 1;
        eff.grad_checkpoint = given->grad_checkpoint; /* same numbers either way */
        if (given->save_every) eff.save_every = given->save_every;
    }
    resolve_defaults(&eff);
    if ((st = check_options(o, err))) {
        cJSON_Delete(stored);
        free(lists[0]), free(lists[1]);
        return st;
    }
    if (!given->resume && dir_nonempty(o->out_dir) && !o->overwrite) {
        return ft_error_set(err, FT_ERR_INPUT, o->out_dir,
                            "choose a new --out folder, continue it with --resume, or pass "
                            "--overwrite to replace its files",
                            "the output folder exists and is not empty");
    }
    set_threads(o->threads);
    /* The config, the data and the adapter first: with them the memory plan is known before
     * the weights are loaded, so a run that cannot fit is refused before it takes the memory. */
    model m = {0};
    model_config cfg;
    int have_cfg = 0;
    model_load_options lopt = {.quant = o->quant, .double_quant = o->double_quant,
                               .blocksize = o->quant_blocksize, .lm_head = o->quant_lm_head,
                               .dtype = o->dtype};
    model_quant q;
    lora_set *ls = NULL;
    dataset ds = {0}, val = {0};
    batch b = {0};
    acts *a = NULL;
    adamw opt = {0};
    int *order = NULL;
    FILE *metrics = NULL;
    char shash[17], dhash[17];
    data_options dopt;
    const char *one[1];
    if ((st = model_config_load(o->model_dir, &cfg, err))) goto done;
    have_cfg = 1;
    if ((st = model_quant_resolve(o->model_dir, &cfg, &lopt, &q, err))) goto done;
    data_opts(o, cfg.V, one, &dopt);
    if ((st = data_load(&dopt, &ds, &val, dhash, err))) goto done;
    settings_hash(o, shash);
    if (o->adapter_dir) {
        if ((st = lora_load_peft(&cfg, o->adapter_dir, &ls, err))) goto done;
    } else {
        unsigned mask;
        if ((st = lora_parse_targets(&cfg, o->lora_targets, &mask, err))) goto done;
        if ((st = lora_create(&cfg, o->lora_r, o->lora_alpha, o->lora_dropout, o->rslora, mask,
                              NULL, &ls, err)))
            goto done;
        lora_init(ls, o->seed);
    }
    int B = o->batch_size < ds.n ? o->batch_size : ds.n;
    int T = ds.max_len > val.max_len ? ds.max_len : val.max_len;
    int Bv = o->batch_size < 1024 ? o->batch_size : 1024;
    if (val.n && Bv > B) B = Bv;
    /* Memory plan: switch gradient checkpointing on when only it makes the run fit, refuse
     * (saying what would fit) when nothing does. */
    /* bf16 checkpoints imply checkpointing */
    int ckpt = ckpt_dtype_parse(o->grad_checkpoint_dtype) == CKPT_BF16 ? CKPT_BF16
               : o->grad_checkpoint                                   ? CKPT_FP32
                                                                      : CKPT_NONE;
    if ((st = check_memory(o, &cfg, &q, ls, B, T, &ckpt, err))) goto done;
    if ((st = model_load_with(o->model_dir, &lopt, &m, err))) goto done;
    m.lora = ls, ls = NULL;
    if ((st = batch_alloc(&b, B, T, err))) goto done;
    if ((st = acts_alloc_ckpt(&m, B, T, 0, ckpt, &a, err))) goto done;
    if (adamw_init(&opt, m.lora->n_params, o->adam_beta1, o->adam_beta2, o->adam_eps,
                   o->weight_decay)) {
        st = ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
        goto done;
    }
    long micro_per_epoch = (ds.n + o->batch_size - 1) / o->batch_size;
    long steps_per_epoch = (micro_per_epoch + o->grad_accum - 1) / o->grad_accum;
    long total = o->steps > 0 ? o->steps : (long)ceil(o->epochs * steps_per_epoch);
    if (total < 1) total = 1;
    if ((st = preflight_out(o->out_dir, m.lora->n_params * 12 + 65536, err))) goto done;

    train_state ts = {0};
    ts.seed = o->seed;
    memcpy(ts.settings_hash, shash, 17);
    memcpy(ts.data_hash, dhash, 17);
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", o->out_dir);
    if (given->resume) {
        long last = checkpoint_latest(o->out_dir);
        if (last >= 0) {
            if ((st = checkpoint_load(o->out_dir, last, m.lora, &opt, &ts, err))) goto done;
            if (strcmp(ts.data_hash, dhash)) {
                st = ft_error_set(err, FT_ERR_INPUT, o->data_path,
                                  "restore the data the run started with, or start a new run",
                                  "the data changed since the run started (checkpoint-%ld), so it "
                                  "could not continue exactly", last);
                goto done;
            }
            if (strcmp(ts.settings_hash, shash)) {
                st = ft_error_set(err, FT_ERR_INPUT, o->model_dir,
                                  "restore the model the run started with, or start a new run",
                                  "the model or the settings changed since the run started "
                                  "(checkpoint-%ld), so it could not continue exactly", last);
                goto done;
            }
            if (!o->quiet)
                fprintf(stderr, "resuming %s from checkpoint-%ld (epoch %ld, example %ld)\n",
                        o->out_dir, last, ts.epoch, ts.example_index);
        } else if (!o->quiet) {
            fprintf(stderr, "no checkpoint in %s yet: starting from step 0\n", o->out_dir);
        }
        if ((st = truncate_metrics(path, ts.step, err))) goto done;
    }
    if ((st = write_run_config(o, &m, total, &ds, shash, dhash, err))) goto done;
    metrics = fopen(path, given->resume ? "a" : "w");
    if (!metrics) {
        st = ft_error_set(err, FT_ERR_RUNTIME, path, "check that the run folder is writable",
                          "cannot create: %s", strerror(errno));
        goto done;
    }
    if (!o->quiet) print_settings(o, &m, m.lora, &ds, &val, total, acts_bytes(a));

    order = malloc(sizeof(int) * ds.n);
    epoch_order(order, ds.n, o->shuffle, o->seed, ts.epoch);
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second signal stops at once */
    stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    double t0 = now_s();
    long saved_step = ts.step, first_step = ts.step;
    for (long step = ts.step; step < total; step++) {
        if (ts.mb_in_epoch >= micro_per_epoch) {
            ts.epoch++, ts.mb_in_epoch = 0;
            epoch_order(order, ds.n, o->shuffle, o->seed, ts.epoch);
        }
        /* this step's micro-batches: up to grad_accum, not past the end of the epoch */
        long n_mb = micro_per_epoch - ts.mb_in_epoch;
        if (n_mb > o->grad_accum) n_mb = o->grad_accum;
        long counted = 0, tokens = 0;
        for (long k = 0; k < n_mb; k++) {
            long first = (ts.mb_in_epoch + k) * o->batch_size;
            for (long i = first; i < first + o->batch_size && i < ds.n; i++) {
                counted += example_counted(&ds.ex[order[i]]);
                tokens += ds.ex[order[i]].n;
            }
        }
        double tstart = now_s();
        memset(m.lora->grads, 0, m.lora->n_params * sizeof(float));
        double loss_sum = 0;
        float gscale = counted > 0 ? 1.0f / (float)counted : 0.0f;
        for (long k = 0; k < n_mb; k++) {
            long first = (ts.mb_in_epoch + k) * o->batch_size;
            int nb = (int)(ds.n - first < o->batch_size ? ds.n - first : o->batch_size);
            batch_fill(&b, &ds, order + first, nb);
            uint64_t dseed = rand_mix64(o->seed ^ rand_mix64(((uint64_t)step << 20) + (uint64_t)k));
            loss_sum += model_forward(&m, a, &b, 1, dseed, NULL, NULL);
            model_backward(&m, a, &b, gscale, dseed);
        }
        ts.mb_in_epoch += n_mb;
        ts.step = step + 1;
        ts.example_index = ts.epoch * ds.n + (ts.mb_in_epoch * o->batch_size < ds.n ? ts.mb_in_epoch * o->batch_size : ds.n);
        double loss = counted > 0 ? loss_sum / counted : 0.0;
        double gnorm = clip_grad_norm(m.lora->grads, m.lora->n_params, o->max_grad_norm);
        double lr = o->lr * schedule_factor(o->schedule, step, o->warmup_steps, total);
        adamw_step(&opt, m.lora->params, m.lora->grads, lr);
        double te = now_s(), elapsed = te - t0, tps = tokens / (te - tstart);
        fprintf(metrics,
                "{\"step\": %ld, \"epoch\": %.4f, \"loss\": %.17g, \"lr\": %.17g, \"grad_norm\": %.17g, "
                "\"tokens\": %ld, \"tokens_per_s\": %.2f, \"elapsed_s\": %.3f}\n",
                step + 1, ts.epoch + (double)ts.mb_in_epoch / micro_per_epoch, loss, lr, gnorm,
                tokens, tps, elapsed);
        fflush(metrics);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            st = ft_error_set(err, FT_ERR_RUNTIME, "training",
                              "lower --lr, or check the data and the model's weights",
                              "the loss became %g at step %ld (gradient norm %g)", loss, step + 1, gnorm);
            break;
        }
        if (!o->quiet) {
            double eta = elapsed / (step + 1 - first_step) * (total - step - 1);
            fprintf(stderr,
                    "step %ld/%ld  loss %.4f  lr %.3g  grad_norm %.3g  %.0f tok/s  elapsed %.0fs  "
                    "ETA %dm%02ds  mem %.0f MB\n",
                    step + 1, total, loss, lr, gnorm, tps, elapsed, (int)(eta / 60),
                    (int)eta % 60, rss_mb());
        }
        int last_step = step + 1 == total;
        if (val.n && ((o->eval_every > 0 && ts.step % o->eval_every == 0) || last_step)) {
            long vc;
            double vl = eval_loss(&m, a, &b, Bv, &val, &vc);
            fprintf(metrics, "{\"step\": %ld, \"epoch\": %.4f, \"eval_loss\": %.17g, \"eval_tokens\": %ld}\n",
                    step + 1, ts.epoch + (double)ts.mb_in_epoch / micro_per_epoch, vl, vc);
            fflush(metrics);
            if (!o->quiet) fprintf(stderr, "step %ld/%ld  eval_loss %.4f  (%ld tokens)\n", step + 1, total, vl, vc);
        }
        if ((o->save_every > 0 && ts.step % o->save_every == 0) || last_step || stop_signal) {
            if ((st = checkpoint_save(o->out_dir, m.lora, &m.cfg, o->model_dir, &opt, &ts,
                                      o->keep_checkpoints, err)))
                break;
            saved_step = ts.step;
        }
        if (stop_signal) break;
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (!st) st = lora_save_peft(m.lora, &m.cfg, o->out_dir, o->model_dir, err);
    if (!st && !o->quiet)
        fprintf(stderr, "saved the adapter to %s (adapter_model.safetensors, adapter_config.json)\n",
                o->out_dir);
    if (!st && stop_signal) {
        char hint[600];
        snprintf(hint, sizeof hint, "continue with: ftune train --resume %s", o->out_dir);
        st = ft_error_set(err, stop_signal == SIGINT ? FT_ERR_INTERRUPTED : FT_ERR_TERMINATED,
                          o->out_dir, hint, "interrupted by signal %d; saved checkpoint-%ld",
                          (int)stop_signal, saved_step);
    }
done:
    if (metrics) fclose(metrics);
    free(order);
    adamw_free(&opt);
    acts_free(a);
    batch_free(&b);
    dataset_free(&ds);
    dataset_free(&val);
    model_free(&m);
    if (ls) lora_free(ls);
    if (have_cfg) model_config_free(&cfg);
    cJSON_Delete(stored);
    free(lists[0]), free(lists[1]);
    return st;
}

ft_status ft_eval(const ft_eval_options *o, ft_eval_result *res, ft_error *err) {
    if (!o->model_dir || !o->data_path)
        return ft_error_set(err, FT_ERR_INPUT, "ftune eval", NULL, "--model and --data are required");
    if (o->dump_grads && !o->adapter_dir)
        return ft_error_set(err, FT_ERR_INPUT, "option --dump-grads", NULL,
                            "needs --adapter (the gradients are those of the adapter's tensors)");
    set_threads(o->threads);
    model m;
    model_load_options lopt = {.quant = o->quant, .double_quant = o->double_quant,
                               .blocksize = o->quant_blocksize, .lm_head = o->quant_lm_head,
                               .dtype = o->dtype};
    ft_status st = model_load_with(o->model_dir, &lopt, &m, err);
    if (st) return st;
    dataset ds = {0};
    batch b = {0};
    acts *a = NULL;
    float *logits = NULL;
    int *idx = NULL;
    if (o->pack && o->seq_len < 2) {
        st = ft_error_set(err, FT_ERR_INPUT, "option --pack", NULL, "needs --seq-len (the row length)");
        goto done;
    }
    data_options dopt = {0};
    const char *one[1] = {o->data_path};
    dopt.sources = one, dopt.n_sources = 1, dopt.model_dir = o->model_dir;
    dopt.chat_template = o->chat_template, dopt.vocab = m.cfg.V, dopt.seq_len = o->seq_len;
    dopt.pack = o->pack, dopt.seed = 42;
    char dhash[17];
    if ((st = data_load(&dopt, &ds, NULL, dhash, err))) goto done;
    if (o->adapter_dir && (st = lora_load_peft(&m.cfg, o->adapter_dir, &m.lora, err))) goto done;
    int B = o->batch_size > 0 ? o->batch_size : 8;
    if (o->dump_logits || B > ds.n) B = ds.n; /* one batch holds everything when dumping logits */
    int T = ds.max_len;
    int train = o->dump_grads != NULL;
    if ((st = batch_alloc(&b, B, T, err))) goto done;
    if ((st = acts_alloc(&m, B, T, 0, &a, err))) goto done;
    if (o->dump_logits) {
        logits = calloc((size_t)B * T * m.cfg.V, sizeof(float));
        if (!logits) {
            st = ft_error_set(err, FT_ERR_RUNTIME, o->dump_logits, "use less data for the dump",
                              "cannot allocate the logits");
            goto done;
        }
    }
    idx = malloc(sizeof(int) * ds.n);
    long counted = 0;
    for (int i = 0; i < ds.n; i++) idx[i] = i, counted += example_counted(&ds.ex[i]);
    if (m.lora) memset(m.lora->grads, 0, m.lora->n_params * sizeof(float));
    double loss_sum = 0;
    for (int first = 0; first < ds.n; first += B) {
        int nb = ds.n - first < B ? ds.n - first : B;
        batch_fill(&b, &ds, idx + first, nb);
        loss_sum += model_forward(&m, a, &b, train, 0, logits, NULL);
        if (train) model_backward(&m, a, &b, counted ? 1.0f / counted : 0.0f, 0);
    }
    res->loss = counted ? loss_sum / counted : 0;
    res->tokens = counted;
    if (logits) {
        /* padded positions are zero in the dump */
        for (int i = 0; i < b.B; i++)
            for (int t = b.len[i]; t < b.T; t++)
                memset(logits + ((size_t)i * b.T + t) * m.cfg.V, 0, sizeof(float) * m.cfg.V);
        st_writer *w = st_writer_new();
        int64_t sh[3] = {b.B, b.T, m.cfg.V};
        st = st_writer_add(w, "logits", ST_F32, 3, sh, logits, err);
        if (!st) st = st_writer_save(w, o->dump_logits, err);
        st_writer_free(w);
        if (st) goto done;
    }
    if (o->dump_grads) {
        st_writer *w = st_writer_new();
        char (*names)[300] = malloc(sizeof *names * 2 * m.lora->n);
        for (int i = 0; i < m.lora->n && !st; i++) {
            const lora_module *mod = &m.lora->mods[i];
            int64_t shA[2] = {m.lora->R, mod->in}, shB[2] = {mod->out, m.lora->R};
            lora_tensor_name(names[2 * i], 300, mod, 0);
            lora_tensor_name(names[2 * i + 1], 300, mod, 1);
            st = st_writer_add(w, names[2 * i], ST_F32, 2, shA, m.lora->grads + mod->offA, err);
            if (!st) st = st_writer_add(w, names[2 * i + 1], ST_F32, 2, shB, m.lora->grads + mod->offB, err);
        }
        float lossf = (float)res->loss;
        int64_t one = 1;
        if (!st) st = st_writer_add(w, "loss", ST_F32, 1, &one, &lossf, err);
        if (!st) st = st_writer_save(w, o->dump_grads, err);
        st_writer_free(w);
        free(names);
    }
done:
    free(idx);
    free(logits);
    acts_free(a);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&m);
    return st;
}
