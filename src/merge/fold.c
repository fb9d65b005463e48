/*
 * fold.c: `ftune merge`: a LoRA adapter folded into its base model, as PEFT's merge_and_unload()
 * followed by transformers' save_pretrained() writes it.
 *
 * PEFT 0.21 (tuners/lora/layer.py, Linear.merge and get_delta_weight) computes, per module,
 *   delta = (B @ A) * scaling          in fp32 (the adapter is fp32: PEFT upcasts bf16/f16 adapter
 *                                      weights when it loads them, autocast_adapter_dtype=True)
 *   W    += delta                      in place, in W's dtype: the sum in fp32, rounded once to
 *                                      W's dtype (a bf16 tensor += an fp32 one)
 * and with safe_merge=True, W + delta.to(W.dtype) (delta rounded to W's dtype, then the sum
 * rounded again) and an error if the result is not finite. W's dtype is the one the model was
 * loaded in: the checkpoint's, or --out-dtype's (from_pretrained(dtype=...) converts W first,
 * so W is rounded to that dtype before the delta is added). scaling is a Python float, and a
 * tensor times a Python float multiplies by it rounded to fp32.
 * fan_in_fan_out: PEFT sets it to False on nn.Linear modules and to True on transformers' Conv1D
 * (GPT-2's layers store W as (in, out)), whatever the config says; so does this file, deciding
 * Conv1D from config.json's model_type, and a Conv1D weight gets the delta transposed.
 *
 * A bitsandbytes 4-bit folder merges with an out dtype: W is what bitsandbytes' dequantize_4bit
 * gives (fp32 code x absmax, then the quant_state's dtype), plus the fp32 delta, which is the
 * sum PEFT's Linear4bit.merge forms before it re-quantizes it; the quantization's own tensors
 * are dropped and the folder is a plain float model. Without an out dtype the sum is re-quantized
 * as PEFT's merge re-quantizes it (requant_compute) and the folder stays 4-bit.
 *
 * Streaming: the output layout is known from the input shapes (shards.h), so each shard's
 * header is written first and each tensor is then read, merged and written a chunk of rows at a
 * time (CHUNK values), the source pages given back after each chunk: peak memory is the adapter
 * plus three chunks, whatever the size of the model.
 */
#include "io/atomic.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "merge/adapter.h"
#include "merge/merge.h"
#include "merge/outdir.h"
#include "merge/shards.h"
#include "model/bnb.h"
#include "model/config.h"
#include "model/init.h"
#include "model/quantize.h"
#include "ops/ops.h"
#include "ops/qtensor.h"
#include "ops/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Values per chunk: 4 MB of fp32. */
#define CHUNK ((size_t)1 << 20)
#define PEFT_PREFIX "base_model.model."

typedef struct fold_item {
    const st_tensor *t;
    const adapter_module *m; /* NULL: written unchanged (or converted to the out dtype) */
    int transposed;          /* Conv1D: W is (in, out) and receives delta^T */
    st_dtype od;             /* output dtype */
    int bnb;                 /* a bitsandbytes 4-bit weight: dequantized (rows, cols) */
    int rows, cols;
    st_dtype bnb_dtype; /* its quant_state dtype: bnb dequantizes to it */
    int skip;           /* a part of a 4-bit weight (absmax, quant_map, ...): not written */
    /* re-quantized 4-bit merge: the weight (part 0) or one of its parts (1 absmax,
     * 2 quant_map, 3 nested_absmax, 4 nested_quant_map, 5 quant_state) of a merged 4-bit
     * weight, regenerated; owner: the weight's item */
    int requant, part, owner;
} fold_item;

/* One merged 4-bit weight re-quantized as PEFT's Linear4bit.merge does it:
 * Params4bit(dequantize_4bit(W) + delta) with W's quant_type, blocksize and double quantization
 * (bitsandbytes' quantize_4bit, ops/quant4.c, bit for bit), kept for its parts' turn. */
typedef struct requant {
    int owner; /* item index, -1: none */
    quant4_type type;
    int blocksize, dq;
    size_t n, nb, nn;
    uint8_t *packed, *codes;
    float *absmax, *nested, offset;
    char state[512];
    int state_len;
} requant;

static const char *torch_dtype_name(st_dtype d) {
    return d == ST_BF16 ? "bfloat16" : d == ST_F16 ? "float16" : "float32";
}

static ft_status parse_dtype(const char *s, st_dtype *out, ft_error *err) {
    if (!strcmp(s, "fp32") || !strcmp(s, "f32") || !strcmp(s, "float32"))
        *out = ST_F32;
    else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16"))
        *out = ST_BF16;
    else if (!strcmp(s, "f16") || !strcmp(s, "fp16") || !strcmp(s, "float16"))
        *out = ST_F16;
    else
        return ft_error_set(err, FT_ERR_INPUT, "option --out-dtype", "use fp32, bf16 or f16",
                            "unknown dtype \"%s\"", s);
    return FT_OK;
}

/* t converted to dtype od, a chunk at a time. */
static ft_status convert_tensor(const st_tensor *t, st_dtype od, float *x, void *obuf, st_writer *w,
                                ft_error *err) {
    size_t n = t->nbytes / st_dtype_size(t->dtype);
    for (size_t first = 0; first < n; first += CHUNK) {
        size_t k = n - first < CHUNK ? n - first : CHUNK;
        if (st_read_range_f32(t, first, k, x))
            return ft_error_set(err, FT_ERR_INPUT, t->name, NULL, "not F32, F16 or BF16");
        for (size_t i = 0; i < k; i++)
            shard_store(od, obuf, i, shard_round_to(od, x[i]));
        ft_status st = st_writer_put(w, t->name, obuf, k * st_dtype_size(od), err);
        if (st) return st;
    }
    return FT_OK;
}

/* Rows [r0, r0 + n) of W as fp32: from the tensor, or dequantized from its 4-bit form as
 * bitsandbytes' dequantize_4bit gives them (code * absmax in fp32, then its quant_state dtype). */
static ft_status read_rows(const fold_item *it, const qtensor *q, size_t r0, size_t n, float *w,
                           ft_error *err) {
    size_t cols = (size_t)(it->bnb ? it->cols : it->t->shape[1]);
    if (!it->bnb) {
        if (st_read_range_f32(it->t, r0 * cols, n * cols, w))
            return ft_error_set(err, FT_ERR_INPUT, it->t->name, NULL, "not F32, F16 or BF16");
        return FT_OK;
    }
    qtensor_dequant_rows(q, (int)r0, (int)n, w);
    const st_dtype dt = it->bnb_dtype;
    if (dt != ST_F32) /* elementwise: the thread count changes no bits */
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n * cols; i++)
            w[i] = shard_round_to(dt, w[i]);
    return FT_OK;
}

/* A 4-bit weight that the adapter does not touch: dequantized, in the out dtype. */
static ft_status convert_bnb(const fold_item *it, const qtensor *q, float *w, void *obuf,
                             st_writer *wr, ft_error *err) {
    size_t cols = (size_t)it->cols, rc = CHUNK / cols ? CHUNK / cols : 1;
    for (size_t r0 = 0; r0 < (size_t)it->rows; r0 += rc) {
        size_t n = (size_t)it->rows - r0 < rc ? (size_t)it->rows - r0 : rc;
        ft_status st = read_rows(it, q, r0, n, w, err);
        for (size_t i = 0; !st && i < n * cols; i++)
            shard_store(it->od, obuf, i, w[i]);
        if (!st) st = st_writer_put(wr, it->t->name, obuf, n * cols * st_dtype_size(it->od), err);
        if (st) return st;
    }
    return FT_OK;
}

void merge_delta_rows(const adapter_module *m, int transposed, size_t r0, size_t n, size_t cols,
                      float *d, int scale) {
    if (!transposed) /* rows r0.. of B @ A: B[r0:r0+n] (n, r) @ A (r, in) */
        gemm(0, 0, (int)n, (int)cols, m->r, 1.0f, m->B + r0 * (size_t)m->r, m->r, m->A, m->in, 0.0f,
             d, (int)cols);
    else /* rows r0.. of (B @ A)^T = A[:, r0:r0+n]^T (n, r) @ B^T (r, out) */
        gemm(1, 1, (int)n, (int)cols, m->r, 1.0f, m->A + r0, m->in, m->B, m->r, 0.0f, d, (int)cols);
    if (!scale) return;
    const float s = (float)m->scaling; /* tensor * Python float: the float rounded to fp32 */
    for (size_t i = 0; i < n * cols; i++)
        d[i] *= s;
}

/* W + delta for one weight, rows [r0, r0 + n) at a time: w holds W's rows as fp32, d the delta's
 * (B @ A), both CHUNK values. */
static ft_status merge_tensor(const fold_item *it, const qtensor *q, int safe, float *w, float *d,
                              void *obuf, st_writer *wr, const char *adapter_file, ft_error *err) {
    const st_tensor *t = it->t;
    const adapter_module *m = it->m;
    size_t rows = (size_t)it->rows, cols = (size_t)it->cols;
    size_t rc = CHUNK / cols ? CHUNK / cols : 1;
    const float s = (float)m->scaling; /* tensor * Python float: the float rounded to fp32 */
    st_dtype od = it->od;
    for (size_t r0 = 0; r0 < rows; r0 += rc) {
        size_t n = rows - r0 < rc ? rows - r0 : rc;
        ft_status st = read_rows(it, q, r0, n, w, err);
        if (st) return st;
        merge_delta_rows(m, it->transposed, r0, n, cols, d, 0);
        size_t k = n * cols;
        int bad = 0;
        /* W in the dtype the model was loaded in: the out dtype, or for a 4-bit weight the
         * dequantized values (PEFT adds the delta to those, in fp32) */
        st_dtype wd = it->bnb ? ST_F32 : od;
        for (size_t i = 0; i < k; i++) {
            float delta = d[i] * s;
            float v = shard_round_to(wd, w[i]) + (safe ? shard_round_to(wd, delta) : delta);
            shard_store(od, obuf, i, v);
            if (safe && !isfinite(shard_round_to(od, v))) bad = 1;
        }
        if (bad)
            return ft_error_set(err, FT_ERR_INPUT, adapter_file,
                                "the adapter seems to be broken (PEFT's safe_merge refuses it too)",
                                "merging module %s gives a non-finite weight in %s", m->path,
                                t->name);
        st = st_writer_put(wr, t->name, obuf, k * st_dtype_size(od), err);
        if (st) return st;
    }
    return FT_OK;
}

/* GPT-2-style models, whose linear layers are transformers' Conv1D (W stored as (in, out)). */
int merge_conv1d_model(const cJSON *cfg) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    static const char *const types[] = {"gpt2", "openai-gpt", "imagegpt"};
    for (int i = 0; cJSON_IsString(mt) && i < 3; i++)
        if (!strcmp(mt->valuestring, types[i])) return 1;
    return 0;
}

/* Each adapter module against the weight it changes. */
static ft_status bind_modules(const adapter *a, const st_set *in, const cJSON *cfg,
                              fold_item *items, int nitems, ft_error *err) {
    char file[4200], where[4600];
    snprintf(file, sizeof file, "%s/adapter_model.safetensors", a->dir);
    int conv1d = merge_conv1d_model(cfg);
    /* a module the model lacks says more about a wrong pairing than a shape does: first */
    for (int i = 0; i < a->n; i++) {
        const adapter_module *m = &a->mods[i];
        char wname[1100];
        snprintf(wname, sizeof wname, "%s.weight", m->path);
        snprintf(where, sizeof where, "%s: tensor \"%s.lora_A.weight\"", file, m->name);
        if (!st_find(in, wname))
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "the adapter belongs to another model (base_model_name_or_path: "
                                "see its adapter_config.json)",
                                "targets module %s, but the model has no tensor %s", m->path,
                                wname);
    }
    for (int i = 0; i < a->n; i++) {
        const adapter_module *m = &a->mods[i];
        char wname[1100];
        snprintf(wname, sizeof wname, "%s.weight", m->path);
        const st_tensor *t = st_find(in, wname);
        fold_item *it = NULL;
        for (int j = 0; j < nitems && !it; j++)
            if (items[j].t == t) it = &items[j];
        snprintf(where, sizeof where, "%s: tensor \"%s.lora_A.weight\"", file, m->name);
        int64_t want0 = conv1d ? m->in : m->out, want1 = conv1d ? m->out : m->in;
        if (!it->bnb && (t->ndim != 2 || !shard_is_float(t->dtype)))
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "targets %s, which is not a 2-D F32, BF16 or F16 weight", wname);
        if (it->rows != want0 || it->cols != want1) {
            int a_side = conv1d ? it->rows != want0 : it->cols != want1;
            snprintf(where, sizeof where, "%s: tensor \"%s.lora_%c.weight\": field \"shape\"", file,
                     m->name, a_side ? 'A' : 'B');
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "the adapter belongs to another model of other dimensions",
                                "the adapter's delta is [%d, %d] (out, in) but the model's %s is "
                                "[%lld, %lld]%s",
                                m->out, m->in, wname, (long long)it->rows, (long long)it->cols,
                                conv1d ? " (Conv1D: in, out)" : "");
        }
        it->m = m;
        it->transposed = conv1d;
    }
    return FT_OK;
}

/* config.json, with its dtype field set to od when the output dtype changed. */
static ft_status write_config(const char *model_dir, const outdir *od, const cJSON *cfg,
                              int have_out_dtype, st_dtype out_dtype, ft_error *err) {
    char src[4200], dst[4400];
    snprintf(src, sizeof src, "%s/config.json", model_dir);
    outdir_path(od, "config.json", dst, sizeof dst);
    char *text = NULL;
    size_t len = 0;
    ft_status st;
    const char *want = torch_dtype_name(out_dtype);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(cfg, "dtype");
    const cJSON *tdt = cJSON_GetObjectItemCaseSensitive(cfg, "torch_dtype");
    int same = (!dt || (cJSON_IsString(dt) && !strcmp(dt->valuestring, want))) &&
               (!tdt || (cJSON_IsString(tdt) && !strcmp(tdt->valuestring, want))) && (dt || tdt) &&
               !cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
    if (!have_out_dtype || same) {
        st = file_read_all(src, &text, &len, err);
        if (!st) st = atomic_write_file(dst, text, len, err);
        free(text);
        return st;
    }
    /* as transformers 5 writes it: "dtype" (and an older "torch_dtype" kept in step) */
    cJSON *c = cJSON_Duplicate(cfg, 1);
    if (!c) return ft_error_set(err, FT_ERR_RUNTIME, src, NULL, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "quantization_config"); /* dequantized */
    if (tdt) cJSON_ReplaceItemInObjectCaseSensitive(c, "torch_dtype", cJSON_CreateString(want));
    if (dt || !tdt) {
        if (dt)
            cJSON_ReplaceItemInObjectCaseSensitive(c, "dtype", cJSON_CreateString(want));
        else
            cJSON_AddStringToObject(c, "dtype", want);
    }
    text = cJSON_Print(c);
    cJSON_Delete(c);
    if (!text) return ft_error_set(err, FT_ERR_RUNTIME, src, NULL, "out of memory");
    st = atomic_write_file(dst, text, strlen(text), err);
    free(text);
    return st;
}

static void requant_free(requant *r) {
    free(r->packed);
    free(r->codes);
    free(r->absmax);
    free(r->nested);
    memset(r, 0, sizeof *r);
    r->owner = -1;
}

/* Re-quantize weight item `owner` (which has a module) into r, a chunk of whole blocks at a time:
 * rows of dequantize_4bit(W) (fp32 code x absmax, in the quant_state's dtype) plus the fp32
 * delta, as PEFT forms w_data, then quantize_4bit in fp32 (w_data is fp32: so the new
 * quant_state's dtype is "float32"). */
static ft_status requant_compute(const st_set *in, const fold_item *items, int owner, requant *r,
                                 float *d, ft_error *err) {
    if (r->owner == owner) return FT_OK;
    requant_free(r);
    const fold_item *it = &items[owner];
    const adapter_module *m = it->m;
    qtensor q = {0};
    ft_status st = bnb_load_weight(in, it->t->name, it->rows, it->cols, &q, err);
    if (st) return st;
    r->type = q.fmt == QF_FP4 ? QUANT_FP4 : QUANT_NF4;
    r->blocksize = q.blocksize;
    r->dq = q.absmax_q != NULL;
    size_t rows = (size_t)it->rows, cols = (size_t)it->cols, bs = (size_t)r->blocksize;
    r->n = rows * cols;
    r->nb = quant4_blocks(r->n, r->blocksize);
    r->nn = quant4_blocks(r->nb, QUANT8_BLOCK);
    /* rows per chunk: a multiple of the block size, so each chunk is whole blocks */
    size_t rc = (CHUNK / cols) / bs * bs;
    if (!rc) rc = bs;
    float *w = malloc(rc * cols * sizeof *w), *dd = rc * cols > CHUNK ? malloc(rc * cols * 4) : d;
    r->packed = malloc(quant4_packed_bytes(r->n));
    r->absmax = malloc(r->nb * sizeof(float));
    r->codes = malloc(r->nb);
    r->nested = malloc((r->nn ? r->nn : 1) * sizeof(float));
    if (!w || !dd || !r->packed || !r->absmax || !r->codes || !r->nested)
        st = ft_error_set(err, FT_ERR_RUNTIME, it->t->name, NULL, "out of memory");
    const float s = (float)m->scaling;
    for (size_t r0 = 0; !st && r0 < rows; r0 += rc) {
        size_t nr = rows - r0 < rc ? rows - r0 : rc, k = nr * cols, first = r0 * cols;
        st = read_rows(it, &q, r0, nr, w, err);
        if (st) break;
        merge_delta_rows(m, it->transposed, r0, nr, cols, dd, 0);
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < k; i++)
            w[i] = w[i] + dd[i] * s;
        quant4_quantize(r->type, w, k, r->blocksize, r->packed + first / 2, r->absmax + first / bs);
    }
    if (!st && r->dq) quant4_double_quant(r->absmax, r->nb, r->codes, r->nested, &r->offset);
    if (!st)
        r->state_len = bnb4_state_json(r->state, sizeof r->state, r->type, r->blocksize, "float32",
                                       (int64_t)rows, (int64_t)cols, r->dq, r->offset);
    free(w);
    if (dd != d) free(dd);
    qtensor_free(&q);
    st_release_pages(it->t);
    if (st)
        requant_free(r);
    else
        r->owner = owner;
    return st;
}

/* The bytes of part it->part of a re-quantized weight. */
static ft_status requant_put(const fold_item *it, const requant *r, st_writer *wr, ft_error *err) {
    const void *data;
    size_t n;
    switch (it->part) {
    case 0:
        data = r->packed, n = quant4_packed_bytes(r->n);
        break;
    case 1:
        data = r->dq ? (const void *)r->codes : (const void *)r->absmax;
        n = r->dq ? r->nb : r->nb * sizeof(float);
        break;
    case 2:
        data = quant4_code(r->type), n = 16 * sizeof(float);
        break;
    case 3:
        data = r->nested, n = r->nn * sizeof(float);
        break;
    case 4:
        data = quant8_dynamic_code(), n = 256 * sizeof(float);
        break;
    default:
        data = r->state, n = (size_t)r->state_len;
        break;
    }
    if (n != it->t->nbytes && it->part != 5)
        return ft_error_set(err, FT_ERR_INPUT, it->t->name, NULL,
                            "the 4-bit tensor has %zu bytes where its quant_state implies %zu",
                            (size_t)it->t->nbytes, n);
    return st_writer_put(wr, it->t->name, data, n, err);
}

/* Write shard s: its header, then each of its tensors merged, converted or copied. */
static ft_status write_shard(const outdir *od, const st_set *in, const shard_tensor *plan,
                             int nplan, int s, int count, const fold_item *items,
                             const merge_fold_options *o, float *w, float *d, void *obuf,
                             const char *adapter_file, unsigned long long *done,
                             unsigned long long total, requant *rq, ft_error *err) {
    char name[64], path[4400];
    shard_file_name(name, sizeof name, s, count);
    outdir_path(od, name, path, sizeof path);
    st_writer *wr;
    ft_status st = shard_writer_open(plan, nplan, s, path, &wr, err);
    for (int i = 0; i < nplan && !st; i++) {
        if (plan[i].shard != s) continue;
        const fold_item *it = &items[plan[i].src];
        if (o->progress) o->progress((double)*done, (double)total, it->t->name, o->user);
        if (it->requant) {
            st = requant_compute(in, items, it->owner, rq, d, err);
            if (!st) st = requant_put(it, rq, wr, err);
            *done += plan[i].nbytes;
            continue;
        }
        qtensor q = {0};
        if (it->bnb) st = bnb_load_weight(in, it->t->name, it->rows, it->cols, &q, err);
        if (st) break;
        if (it->m)
            st = merge_tensor(it, &q, o->safe_merge, w, d, obuf, wr, adapter_file, err);
        else if (it->bnb)
            st = convert_bnb(it, &q, w, obuf, wr, err);
        else if (it->od != it->t->dtype)
            st = convert_tensor(it->t, it->od, w, obuf, wr, err);
        else
            st = shard_copy_tensor(it->t, wr, err);
        if (it->bnb) {
            qtensor_free(&q);
            st_release_pages(it->t);
        }
        *done += plan[i].nbytes;
    }
    if (!st) st = st_writer_finish(wr, err);
    st_writer_free(wr); /* after a failure: removes the temp file */
    return st;
}

/* In a bitsandbytes 4-bit checkpoint: a packed weight becomes a dequantized (rows, cols) tensor
 * of the out dtype, and its parts (absmax, quant_map, nested_*, quant_state) are not written. */
static ft_status bnb_item(const st_set *in, fold_item *it, st_dtype out_dtype, ft_error *err) {
    static const char *const parts[] = {".absmax", ".quant_map", ".nested_absmax",
                                        ".nested_quant_map", ".quant_state.bitsandbytes__"};
    const char *name = it->t->name;
    for (int k = 0; k < 5; k++) {
        const char *at = strstr(name, parts[k]);
        if (!at || (k < 4 && at[strlen(parts[k])])) continue;
        char owner[1024];
        snprintf(owner, sizeof owner, "%.*s", (int)(at - name), name);
        if (bnb_has_weight(in, owner)) {
            it->skip = 1;
            return FT_OK;
        }
    }
    if (!bnb_has_weight(in, name)) return FT_OK;
    it->bnb = 1;
    it->od = out_dtype;
    ft_status st = bnb_weight_shape(in, name, &it->rows, &it->cols, err);
    /* the dtype bitsandbytes dequantizes to: the quant_state's "dtype" */
    char key[1100];
    const st_tensor *qs = NULL;
    for (int t = 0; t < 2 && !qs; t++) {
        snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__%s", name, t ? "fp4" : "nf4");
        qs = st_find(in, key);
    }
    cJSON *j = NULL;
    if (!st) st = json_parse((const char *)qs->data, qs->nbytes, key, &j, err);
    const char *dt = NULL;
    if (!st) st = json_get_string(j, "dtype", 1, NULL, &dt, key, err);
    if (!st)
        it->bnb_dtype = !strcmp(dt, "bfloat16")  ? ST_BF16
                        : !strcmp(dt, "float16") ? ST_F16
                                                 : ST_F32;
    cJSON_Delete(j);
    return st;
}

ft_status merge_fold(const merge_fold_options *o, merge_fold_result *res, ft_error *err) {
    memset(res, 0, sizeof *res);
    st_dtype out_dtype = ST_F32;
    uint64_t max_shard = 0;
    ft_status st = FT_OK;
    if (o->out_dtype && (st = parse_dtype(o->out_dtype, &out_dtype, err))) return st;
    if ((st = shard_parse_size(o->max_shard_size ? o->max_shard_size : MERGE_DEFAULT_MAX_SHARD_SIZE,
                               &max_shard, err)))
        return st;
    if ((st = model_dir_check(o->model_dir, err))) return st;
    char path[4400];
    snprintf(path, sizeof path, "%s/config.json", o->model_dir);
    cJSON *cfg = NULL;
    if ((st = json_load_file(path, &cfg, err))) return st;
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
    if (qc) {
        const cJSON *qm = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
        int bnb4 = cJSON_IsString(qm) && !strcmp(qm->valuestring, "bitsandbytes") &&
                   cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(qc, "load_in_4bit"));
        const char *why =
            !bnb4 ? "the model is quantized (field \"quantization_config\") in a form ftune does "
                    "not merge into"
                  : "the model is bitsandbytes 4-bit (field \"quantization_config\"): writing "
                    "PEFT's re-quantized 4-bit merge is not supported yet";
        if (!bnb4) {
            cJSON_Delete(cfg);
            return ft_error_set(err, FT_ERR_INPUT, path,
                                bnb4 ? "pass --out-dtype fp32|bf16|f16 for the dequantized merged "
                                       "model, or merge into the full-precision model the 4-bit "
                                       "one was made from"
                                     : "merge into the full-precision model",
                                "%s", why);
        }
    }
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings");
    int tied = cJSON_IsTrue(tie);

    adapter *a = NULL;
    st_set *in = NULL;
    fold_item *items = NULL;
    shard_tensor *plan = NULL;
    float *w = NULL, *d = NULL;
    void *obuf = NULL;
    outdir od = {0};
    requant rq = {.owner = -1};
    char adapter_file[4200];
    snprintf(adapter_file, sizeof adapter_file, "%s/adapter_model.safetensors", o->adapter_dir);
    if ((st = adapter_load(o->adapter_dir, &a, err))) goto done;
    if ((st = st_open_dir(o->model_dir, &in, err))) goto done;
    int nt = st_count(in);
    items = calloc((size_t)(nt ? nt : 1), sizeof *items);
    plan = calloc((size_t)(nt ? nt : 1), sizeof *plan);
    w = malloc(CHUNK * sizeof(float));
    d = malloc(CHUNK * sizeof(float));
    obuf = malloc(CHUNK * sizeof(float));
    if (!items || !plan || !w || !d || !obuf) {
        st = ft_error_set(err, FT_ERR_RUNTIME, o->model_dir, NULL, "out of memory");
        goto done;
    }
    for (int i = 0; i < nt && !st; i++) {
        fold_item *it = &items[i];
        it->t = st_at(in, i);
        it->od = o->out_dtype && shard_is_float(it->t->dtype) ? out_dtype : it->t->dtype;
        if (it->t->ndim == 2) it->rows = (int)it->t->shape[0], it->cols = (int)it->t->shape[1];
        if (qc) st = bnb_item(in, it, out_dtype, err);
    }
    if (st) goto done;
    if ((st = bind_modules(a, in, cfg, items, nt, err))) goto done;
    /* a 4-bit folder without --out-dtype: PEFT's re-quantized merge. Weights the adapter
     * changes are re-quantized (they and their parts regenerated); the others are copied. */
    int requant_mode = qc && !o->out_dtype;
    for (int i = 0; requant_mode && i < nt; i++) {
        fold_item *it = &items[i];
        it->od = it->t->dtype;
        if (it->m && !it->bnb) {
            st = ft_error_set(err, FT_ERR_INPUT, path,
                              "pass --out-dtype fp32|bf16|f16 for a float merged model",
                              "field \"quantization_config\" says bitsandbytes 4-bit, but %s, "
                              "which the adapter changes, is not a 4-bit weight",
                              it->t->name);
            goto done;
        }
        if (it->bnb) {
            if (it->m)
                it->requant = 1, it->part = 0, it->owner = i;
            else
                it->bnb = 0;
            continue;
        }
        if (!it->skip) continue;
        it->skip = 0;
        static const char *const parts[] = {".absmax", ".quant_map", ".nested_absmax",
                                            ".nested_quant_map", ".quant_state.bitsandbytes__"};
        for (int k = 0; k < 5; k++) {
            const char *at = strstr(it->t->name, parts[k]);
            if (!at || (k < 4 && at[strlen(parts[k])])) continue;
            size_t len = (size_t)(at - it->t->name);
            for (int j = 0; j < nt; j++)
                if (items[j].m && items[j].bnb && strlen(items[j].t->name) == len &&
                    !strncmp(items[j].t->name, it->t->name, len))
                    it->requant = 1, it->part = k + 1, it->owner = j;
            break;
        }
    }

    /* the output tensors in save_pretrained's order (a tied lm_head is not saved), then the
     * shards */
    int np = 0;
    unsigned long long total = 0;
    for (int i = 0; i < nt; i++) {
        const st_tensor *t = items[i].t;
        if (items[i].skip || (tied && !strcmp(t->name, "lm_head.weight"))) continue;
        shard_tensor *p = &plan[np++];
        p->name = t->name, p->dtype = items[i].od, p->ndim = t->ndim, p->src = i;
        memcpy(p->shape, t->shape, sizeof p->shape);
        if (items[i].bnb && !requant_mode) p->shape[0] = items[i].rows, p->shape[1] = items[i].cols;
        if (items[i].requant && items[i].part == 5) { /* the new quant_state's JSON length */
            if ((st = requant_compute(in, items, items[i].owner, &rq, d, err))) goto done;
            p->shape[0] = rq.state_len;
        }
        p->nbytes = st_dtype_size(p->dtype);
        for (int k = 0; k < t->ndim; k++)
            p->nbytes *= (uint64_t)p->shape[k];
        total += p->nbytes;
        if (items[i].m) res->merged++;
    }
    shard_sort(plan, np);
    int count = shard_split(plan, np, max_shard);

    const char *ins[2] = {o->model_dir, o->adapter_dir}, *opts[2] = {"--model", "--adapter"};
    if ((st = outdir_begin(&od, o->out_dir, ins, opts, 2, o->overwrite, err))) goto done;
    unsigned long long done_bytes = 0;
    for (int s = 0; s < count && !st; s++)
        st = write_shard(&od, in, plan, np, s, count, items, o, w, d, obuf, adapter_file,
                         &done_bytes, total, &rq, err);
    if (!st && count > 1) {
        char *idx = shard_index_json(plan, np, count);
        outdir_path(&od, "model.safetensors.index.json", path, sizeof path);
        st = idx ? atomic_write_file(path, idx, strlen(idx), err)
                 : ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
        free(idx);
    }
    if (!st) st = write_config(o->model_dir, &od, cfg, o->out_dtype != NULL, out_dtype, err);
    if (!st) st = model_copy_tokenizer_files(o->model_dir, od.tmp, 1, NULL, err);
    if (!st) st = outdir_commit(&od, err);
    if (!st) {
        res->tensors = np, res->shards = count, res->bytes = total;
        if (o->progress) o->progress((double)total, (double)total, NULL, o->user);
    }
done:
    if (st) outdir_abort(&od);
    requant_free(&rq);
    free(w);
    free(d);
    free(obuf);
    free(items);
    free(plan);
    st_close(in);
    adapter_free(a);
    cJSON_Delete(cfg);
    return st;
}
