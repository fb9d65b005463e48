/*
 * eval.c: ft_eval, the mean token loss of a model (with an optional adapter) on a data file, and
 * the dumps of logits and adapter gradients that the peer tests compare with PyTorch; with
 * --stride, the sliding-window perplexity of a plain text file (infer/perplexity.c); and
 * --compare-adapter, the base model and each adapter scored on the same data, the model and the
 * data loaded once.
 */
#include "base/cpu.h"
#include "data/dataset.h"
#include "ftune.h"
#include "infer/perplexity.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "tok/tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* The logits of one batch holding every example, padded positions zeroed. */
static ft_status write_logits(const char *path, float *logits, const batch *b, int V,
                              ft_error *err) {
    for (int i = 0; i < b->B; i++)
        for (int t = b->len[i]; t < b->T; t++)
            memset(logits + ((size_t)i * b->T + t) * V, 0, sizeof(float) * V);
    st_writer *w = st_writer_new();
    int64_t sh[3] = {b->B, b->T, V};
    ft_status st = st_writer_add(w, "logits", ST_F32, 3, sh, logits, err);
    if (!st) st = st_writer_save(w, path, err);
    st_writer_free(w);
    return st;
}

/* The adapter's gradients under PEFT's tensor names, and the loss. */
static ft_status write_grads(const char *path, const lora_set *ls, double loss, ft_error *err) {
    st_writer *w = st_writer_new();
    char(*names)[300] = malloc(sizeof *names * 2 * ls->n);
    ft_status st = names ? FT_OK : ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    for (int i = 0; i < ls->n && !st; i++) {
        const lora_module *mod = &ls->mods[i];
        int64_t shA[2] = {ls->R, mod->in}, shB[2] = {mod->out, ls->R};
        lora_tensor_name(names[2 * i], 300, mod, 0);
        lora_tensor_name(names[2 * i + 1], 300, mod, 1);
        st = st_writer_add(w, names[2 * i], ST_F32, 2, shA, ls->grads + mod->offA, err);
        if (!st)
            st = st_writer_add(w, names[2 * i + 1], ST_F32, 2, shB, ls->grads + mod->offB, err);
    }
    float lossf = (float)loss;
    int64_t one = 1;
    if (!st) st = st_writer_add(w, "loss", ST_F32, 1, &one, &lossf, err);
    if (!st) st = st_writer_save(w, path, err);
    st_writer_free(w);
    free(names);
    return st;
}

/* --stride: the text of data_path tokenized whole (with the tokenizer's special tokens). */
static ft_status stride_tokens(const ft_eval_options *o, int32_t **ids, size_t *n, ft_error *err) {
    if (o->dump_logits || o->dump_grads || o->pack)
        return ft_error_set(err, FT_ERR_INPUT, "option --stride", "run them without --stride",
                            "--dump-logits, --dump-grads and --pack do not apply to a sliding "
                            "window");
    tokenizer *tok = NULL;
    char *text = NULL;
    size_t len = 0;
    ft_status st = tok_load(o->model_dir, &tok, err);
    if (!st) st = file_read_all(o->data_path, &text, &len, err);
    if (!st && (st = tok_encode(tok, text, len, 1, ids, n, err)) && !strcmp(err->where, "text"))
        snprintf(err->where, sizeof err->where, "%s", o->data_path);
    free(text);
    tok_free(tok);
    return st;
}

/* One configuration (m->lora set or not) over the loaded examples: the mean loss, and the
 * dumps when asked. */
static ft_status eval_examples(const ft_eval_options *o, model *m, const dataset *ds,
                               ft_eval_result *res, ft_error *err) {
    batch b = {0};
    acts *a = NULL;
    float *logits = NULL;
    int *idx = NULL;
    ft_status st = FT_OK;
    int B = o->batch_size > 0 ? o->batch_size : 8;
    if (o->dump_logits || B > ds->n) B = ds->n; /* one batch holds everything when dumping */
    int T = ds->max_len, train = o->dump_grads != NULL;
    if ((st = batch_alloc(&b, B, T, err))) goto done;
    if ((st = acts_alloc(m, B, T, 0, &a, err))) goto done; /* sized for m->lora's rank */
    if (o->dump_logits && !(logits = calloc((size_t)B * T * m->cfg.V, sizeof(float)))) {
        st = ft_error_set(err, FT_ERR_RUNTIME, o->dump_logits, "use less data for the dump",
                          "cannot allocate the logits");
        goto done;
    }
    if (!(idx = malloc(sizeof(int) * ds->n))) {
        st = ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
        goto done;
    }
    long counted = 0;
    for (int i = 0; i < ds->n; i++)
        idx[i] = i, counted += example_counted(&ds->ex[i]);
    if (m->lora) memset(m->lora->grads, 0, m->lora->n_params * sizeof(float));
    double loss_sum = 0;
    for (int first = 0; first < ds->n; first += B) {
        int nb = ds->n - first < B ? ds->n - first : B;
        batch_fill(&b, ds, idx + first, nb);
        loss_sum += model_forward(m, a, &b, train, 0, logits, NULL);
        if (train) model_backward(m, a, &b, counted ? 1.0f / counted : 0.0f, 0);
    }
    res->loss = counted ? loss_sum / counted : 0;
    res->tokens = counted;
    if (logits) st = write_logits(o->dump_logits, logits, &b, m->cfg.V, err);
    if (!st && o->dump_grads) st = write_grads(o->dump_grads, m->lora, res->loss, err);
done:
    free(idx);
    free(logits);
    acts_free(a);
    batch_free(&b);
    return st;
}

/* The model and the data loaded once, then n_cfg configurations scored on them: the base model
 * when with_base (res[0]), then each of adapters[] in turn (the next res). */
static ft_status eval_configs(const ft_eval_options *o, const char *const *adapters, int n_ad,
                              int with_base, ft_eval_result *res, ft_error *err) {
    if (!o->model_dir || !o->data_path)
        return ft_error_set(err, FT_ERR_INPUT, "ftune eval", NULL,
                            "--model and --data are required");
    if (o->dump_grads && !n_ad)
        return ft_error_set(err, FT_ERR_INPUT, "option --dump-grads", NULL,
                            "needs --adapter (the gradients are those of the adapter's tensors)");
    if (o->pack && o->seq_len < 2)
        return ft_error_set(err, FT_ERR_INPUT, "option --pack", NULL,
                            "needs --seq-len (the row length)");
    cpu_set_threads(o->threads);
    model m;
    model_load_options lopt = {.quant = o->quant,
                               .double_quant = o->double_quant,
                               .blocksize = o->quant_blocksize,
                               .lm_head = o->quant_lm_head,
                               .dtype = o->dtype};
    ft_status st = model_load_with(o->model_dir, &lopt, &m, err);
    if (st) return st;
    dataset ds = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (o->stride > 0) {
        st = stride_tokens(o, &ids, &n_ids, err);
    } else {
        data_options dopt = {0};
        const char *one[1] = {o->data_path};
        dopt.sources = one, dopt.n_sources = 1, dopt.model_dir = o->model_dir;
        dopt.chat_template = o->chat_template, dopt.vocab = m.cfg.V, dopt.seq_len = o->seq_len;
        dopt.pack = o->pack, dopt.seed = 42;
        dopt.template_args = o->template_args, dopt.n_template_args = o->n_template_args;
        char dhash[17];
        st = data_load(&dopt, &ds, NULL, dhash, err);
    }
    int max_len = o->seq_len > 0 ? o->seq_len : m.cfg.max_pos;
    for (int c = with_base ? -1 : 0; c < n_ad && !st; c++) {
        if (m.lora) lora_free(m.lora);
        m.lora = NULL;
        if (c >= 0 && (st = lora_load_peft(&m.cfg, adapters[c], &m.lora, err))) break;
        ft_eval_result *r = &res[c + with_base];
        if (o->stride > 0)
            st = perplexity_sliding(&m, ids, n_ids, max_len, o->stride, &r->loss, &r->tokens, err);
        else
            st = eval_examples(o, &m, &ds, r, err);
    }
    free(ids);
    dataset_free(&ds);
    model_free(&m);
    return st;
}

ft_status ft_eval(const ft_eval_options *o, ft_eval_result *res, ft_error *err) {
    return eval_configs(o, &o->adapter_dir, o->adapter_dir ? 1 : 0, !o->adapter_dir, res, err);
}

ft_status ft_eval_compare(const ft_eval_options *o, const char *const *adapters, int n,
                          ft_eval_result *res, ft_error *err) {
    if (o->dump_logits || o->dump_grads)
        return ft_error_set(err, FT_ERR_INPUT, "option --compare-adapter",
                            "dump one model at a time, without --compare-adapter",
                            "--dump-logits and --dump-grads do not apply to a comparison");
    if (n < 1)
        return ft_error_set(err, FT_ERR_INPUT, "option --compare-adapter",
                            "add --adapter RUN (repeat it for several)",
                            "there is no adapter to compare with the base model");
    return eval_configs(o, adapters, n, 1, res, err);
}
