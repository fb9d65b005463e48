/*
 * load.c: loading a Llama-family model folder, and the storage policy of its frozen weights
 * (model.h: model_load, model_quant_resolve, model_weight_bytes).
 *
 * Weights: norms and biases are converted to fp32 into one allocation; each linear layer's
 * weight becomes a qtensor in the format the load options ask for, converted and quantized one
 * tensor at a time while the checkpoint's pages it came from are released (or, from a
 * bitsandbytes checkpoint, borrowed as stored); the embedding stays in the file when its dtype
 * allows, its rows read with pread() as tokens look them up (block.c); a bf16 / f16 / q8 copy is
 * made a panel of rows at a time; the LM head is a qtensor of its own format. Which linear layers
 * exist, where each writes in its block's fused output buffer, and which biases it has come from
 * the architecture row in config.c (model_lin_layout), so the block math in block.c has no
 * per-architecture branches beyond "if this layer exists".
 */
#include "base/cpu.h"
#include "io/json.h"
#include "model/bnb.h"
#include "model/gguf_model.h"
#include "model/model_internal.h"
#include "ops/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- weights -------------------------------------------------------------------------- */

void model_lin_layout(const model_config *c, lin_kind k, int *in, int *out, int *col, int *bias) {
    int HD = c->H * c->D, KD = c->Hkv * c->D;
    int fq = c->arch->fused_qkv, fg = c->arch->fused_gate_up;
    *in = c->C, *out = 0, *col = 0, *bias = 0;
    switch (k) {
    case LIN_Q:
        if (!fq) *out = HD, *col = 0, *bias = c->attn_bias;
        break;
    case LIN_K:
        if (!fq) *out = KD, *col = HD, *bias = c->attn_bias;
        break;
    case LIN_V:
        if (!fq) *out = KD, *col = HD + KD, *bias = c->attn_bias;
        break;
    case LIN_QKV:
        if (fq) *out = HD + 2 * KD, *bias = c->attn_bias;
        break;
    case LIN_O:
        *in = HD, *out = c->C, *bias = c->o_bias;
        break;
    case LIN_GATE:
        if (!fg) *out = c->I, *col = 0, *bias = c->mlp_bias;
        break;
    case LIN_UP:
        if (!fg) *out = c->I, *col = c->I, *bias = c->mlp_bias;
        break;
    case LIN_GATE_UP:
        if (fg) *out = 2 * c->I, *bias = c->mlp_bias;
        break;
    case LIN_DOWN:
        *in = c->I, *out = c->C, *bias = c->mlp_bias;
        break;
    default:
        break;
    }
}

/* ---- storage of the frozen weights ----------------------------------------------------- */

static int is_4bit(qformat f) { return f == QF_NF4 || f == QF_FP4; }

static int format_of_dtype(st_dtype t) {
    return t == ST_F32 ? QF_F32 : t == ST_BF16 ? QF_BF16 : t == ST_F16 ? QF_F16 : -1;
}

/* The bitsandbytes settings of a folder that transformers saved quantized: *fmt -1 when the
 * config has no quantization_config. Other quantization methods are refused. */
static ft_status checkpoint_quant(const char *dir, int *fmt, int *double_quant, ft_error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    *fmt = -1, *double_quant = 0;
    cJSON *j;
    ft_status st = json_load_file(path, &j, err);
    if (st) return st;
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
    if (cJSON_IsObject(qc)) {
        const cJSON *meth = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
        const cJSON *in4 = cJSON_GetObjectItemCaseSensitive(qc, "load_in_4bit");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(qc, "bnb_4bit_quant_type");
        const char *m = cJSON_IsString(meth) ? meth->valuestring : "";
        if (strcmp(m, "bitsandbytes") || !cJSON_IsTrue(in4)) {
            st = ft_error_set(err, FT_ERR_INPUT, path,
                              "give the full-precision model; ftune quantizes it as it loads "
                              "(--quant nf4, fp4, q8 or bf16)",
                              "field \"quantization_config\": only bitsandbytes 4-bit "
                              "(load_in_4bit) checkpoints can be read, not quant_method \"%s\"%s",
                              m,
                              cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(qc, "load_in_8bit"))
                                  ? " with load_in_8bit"
                                  : "");
        } else {
            /* transformers' BitsAndBytesConfig default type is fp4 */
            const char *tn = cJSON_IsString(type) ? type->valuestring : "fp4";
            *fmt = !strcmp(tn, "nf4") ? QF_NF4 : !strcmp(tn, "fp4") ? QF_FP4 : -2;
            *double_quant =
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(qc, "bnb_4bit_use_double_quant"));
            if (*fmt == -2)
                st = ft_error_set(err, FT_ERR_INPUT, path, "bitsandbytes writes nf4 or fp4",
                                  "field \"quantization_config.bnb_4bit_quant_type\": unknown "
                                  "type \"%s\"",
                                  tn);
        }
    }
    cJSON_Delete(j);
    return st;
}

static const char *fmt_name(qformat f) { return qformat_info(f)->name; }

ft_status model_quant_resolve(const char *dir, const model_config *c, const model_load_options *opt,
                              model_quant *q, ft_error *err) {
    memset(q, 0, sizeof *q);
    if (gguf_model_is(dir)) return gguf_quant_resolve(dir, c, opt, q, err);
    const char *ds = opt && opt->dtype ? opt->dtype : "fp32";
    if (strcmp(ds, "fp32") && strcmp(ds, "bf16"))
        return ft_error_set(err, FT_ERR_INPUT, "option --dtype", "use fp32 or bf16",
                            "unknown compute type \"%s\"", ds);
    q->compute = strcmp(ds, "bf16") ? QC_F32 : QC_BF16;
    /* bf16 compute rounds the weights to bf16 anyway: keep them so, unless told otherwise */
    const char *qs = opt && opt->quant ? opt->quant : q->compute == QC_BF16 ? "bf16" : "none";
    int lin = qformat_parse(qs);
    if (lin < 0 || lin == QF_F16 || qformat_info(lin)->stored_only)
        return ft_error_set(err, FT_ERR_INPUT, "option --quant", "use nf4, fp4, q8, bf16 or none",
                            "unknown weight format \"%s\"", qs);
    q->linear = lin;
    q->double_quant = opt ? opt->double_quant : 0;
    q->blocksize = opt && opt->blocksize ? opt->blocksize : 64;
    if (q->double_quant && !is_4bit(lin))
        return ft_error_set(err, FT_ERR_INPUT, "option --double-quant", "add --quant nf4 (or fp4)",
                            "double quantization applies to nf4 and fp4 weights, not to %s", qs);
    if (is_4bit(lin) &&
        (q->blocksize < 32 || q->blocksize > 4096 || (q->blocksize & (q->blocksize - 1))))
        return ft_error_set(err, FT_ERR_INPUT, "option --quant-blocksize",
                            "bitsandbytes uses 32, 64 (its default), 128, ..., 4096",
                            "block size %d is not a power of two between 32 and 4096",
                            q->blocksize);
    int ck, ck_dq;
    ft_status st = checkpoint_quant(dir, &ck, &ck_dq, err);
    if (st) return st;
    if (ck >= 0) {
        /* the checkpoint's 4-bit weights are used as stored; only an explicit --quant other than
         * theirs (or none) conflicts (--dtype bf16's default, bf16 weights, yields to them) */
        if (opt && opt->quant && lin != QF_F32 && lin != ck)
            return ft_error_set(
                err, FT_ERR_INPUT, "option --quant",
                "leave --quant out: the checkpoint's own 4-bit weights are used",
                "%s holds bitsandbytes %s weights (config.json quantization_config), "
                "which cannot be trained as %s",
                dir, fmt_name(ck), qs);
        q->linear = ck, q->double_quant = ck_dq, q->from_checkpoint = 1,
        q->blocksize = FT_QUANT_BLOCKSIZE_DEFAULT;
    }
    if (q->linear == QF_Q8_0 && (c->C % 32 || (c->H * c->D) % 32 || c->I % 32))
        return ft_error_set(err, FT_ERR_INPUT, "option --quant",
                            "use nf4, fp4 or bf16 for this model",
                            "q8 needs every layer's input size to be a multiple of 32 (hidden %d, "
                            "attention %d, intermediate %d)",
                            c->C, c->H * c->D, c->I);
    /* the embedding's and the LM head's dtypes in the files, else config.json's torch_dtype */
    int se = -1, sh = -1;
    st_set *s = NULL;
    ft_error ignore;
    if (st_open_dir(dir, &s, &ignore) == FT_OK) {
        const st_tensor *te = st_find(s, "model.embed_tokens.weight");
        const st_tensor *th = c->tie_embeddings ? te : st_find(s, "lm_head.weight");
        se = te ? format_of_dtype(te->dtype) : -1;
        sh = th ? format_of_dtype(th->dtype) : -1;
        st_close(s);
    } else {
        se = sh = !strcmp(c->torch_dtype, "bfloat16")  ? QF_BF16
                  : !strcmp(c->torch_dtype, "float16") ? QF_F16
                                                       : QF_F32;
    }
    q->embed = se >= 0 ? se : QF_F32;
    q->embed_borrowed = se >= 0;
    const char *hs = opt ? opt->lm_head : NULL;
    if (!hs && q->compute == QC_BF16 && !(opt && opt->quant)) hs = "bf16";
    int head;
    if (!hs) {
        head = q->linear != QF_F32 && sh >= 0 ? sh : QF_F32;
    } else {
        head = qformat_parse(hs);
        if (!(head == QF_F32 || head == QF_BF16 || head == QF_Q8_0))
            return ft_error_set(err, FT_ERR_INPUT, "option --quant-lm-head", "use q8, bf16 or none",
                                "unknown or unsupported LM head format \"%s\"", hs);
    }
    if (head == QF_Q8_0 && c->C % 32)
        return ft_error_set(err, FT_ERR_INPUT, "option --quant-lm-head", "use bf16 or none",
                            "q8 needs hidden_size to be a multiple of 32 (it is %d)", c->C);
    q->lm_head = head;
    q->head_borrowed = head == sh;
    q->head_is_embed = q->head_borrowed && c->tie_embeddings;
    return FT_OK;
}

/* The embedding is borrowed from the file and not shared with the LM head: its rows are read
 * with pread (model_embed_row) and its pages released. */
static int embed_released(const model_quant *q) { return q->embed_borrowed && !q->head_is_embed; }

int model_quant_stored_only(const model_quant *q) {
    for (int f = 0; f < QF_COUNT; f++)
        if (qformat_info(f)->stored_only &&
            (q->linear == (qformat)f || q->lm_head == (qformat)f || (q->linear_mix >> f & 1)))
            return f;
    return -1;
}

void model_quant_describe(const model_quant *q, char *buf, size_t n) {
    char lin[96];
    if (q->linear_mix) { /* "q4_k+q6_k" */
        size_t k = 0;
        lin[0] = 0;
        for (int f = 0; f < QF_COUNT && k < sizeof lin; f++)
            if (q->linear_mix >> f & 1)
                k += (size_t)snprintf(lin + k, sizeof lin - k, "%s%s", k ? "+" : "", fmt_name(f));
    } else if (is_4bit(q->linear))
        snprintf(lin, sizeof lin, "%s%s, blocksize %d%s", fmt_name(q->linear),
                 q->double_quant ? " double-quant" : "", q->blocksize,
                 q->from_checkpoint ? " (bitsandbytes checkpoint)" : "");
    else
        snprintf(lin, sizeof lin, "%s", fmt_name(q->linear));
    /* a borrowed embedding that is not also the LM head has its rows read from the file
     * (model_embed_row), not mapped */
    snprintf(buf, n, "linear %s; lm_head %s%s; embedding %s%s%s", lin, fmt_name(q->lm_head),
             q->head_is_embed   ? " (= embedding)"
             : q->head_borrowed ? " (mapped)"
                                : "",
             fmt_name(q->embed),
             !q->embed_borrowed  ? ""
             : embed_released(q) ? " (rows read from the file)"
                                 : " (mapped)",
             q->compute == QC_BF16 ? "; compute bf16" : "");
}

/* fp32 floats of the norms and biases (model->weights). */
size_t model_fp32_floats(const model_config *c) {
    size_t n = c->C;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out, col, bias;
        model_lin_layout(c, k, &in, &out, &col, &bias);
        n += (size_t)c->L * (bias ? (size_t)out : 0);
    }
    return n + (size_t)c->L * (2 * (size_t)c->C + (c->arch->qk_norm ? 2 * (size_t)c->D : 0));
}

/* An embedding left in the file and not shared with the LM head is read a row at a time
 * with pread() (model_forward says why), so none of it is resident. */

size_t model_weight_bytes(const model_config *c, const model_quant *q) {
    size_t n = model_fp32_floats(c) * sizeof(float) + q->linear_bytes;
    for (int k = 0; k < LIN_COUNT && !q->linear_bytes; k++) {
        int in, out, col, bias;
        model_lin_layout(c, k, &in, &out, &col, &bias);
        if (out)
            n += (size_t)c->L * qtensor_size_for(q->linear, out, in, q->blocksize, q->double_quant);
    }
    n += qtensor_size_for(q->lm_head, c->V, c->C, 1, 0);
    return n + (embed_released(q)  ? 0
                : q->head_is_embed ? 0
                                   : qtensor_size_for(q->embed, c->V, c->C, 1, 0));
}

static float *temp_alloc(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void temp_free(float *p, size_t bytes) { munmap(p, bytes); }

/* Formats whose rows are stored apart (bf16, f16, q8_0: blocks never cross a row) are
 * converted a panel of rows at a time into the final allocation: converting a 128k-token LM
 * head to q8 whole would take 2 GB of fp32 at Llama-3-8B's shape, more than the run. */
#define LOAD_PANEL_BYTES (16u << 20)

static ft_status load_rows_panelled(const st_tensor *t, const char *name, int rows, int cols,
                                    qformat f, qtensor *out, ft_error *err) {
    size_t rb = qtensor_size_for(f, 1, (size_t)cols, 1, 0);
    int prow = (int)(LOAD_PANEL_BYTES / ((size_t)cols * sizeof(float)));
    if (prow < 1) prow = 1;
    if (prow > rows) prow = rows;
    uint8_t *mem = malloc((size_t)rows * rb);
    float *x = malloc((size_t)prow * cols * sizeof(float));
    int bad = !mem || !x;
    for (int r0 = 0; r0 < rows && !bad; r0 += prow) {
        int nr = rows - r0 < prow ? rows - r0 : prow;
        qtensor part;
        bad = st_read_range_f32(t, (size_t)r0 * cols, (size_t)nr * cols, x) ||
              qtensor_quantize(&part, f, x, nr, cols, 0, 0);
        if (bad) break;
        memcpy(mem + (size_t)r0 * rb, part.data, (size_t)nr * rb);
        qtensor_free(&part);
    }
    free(x);
    if (bad) {
        free(mem);
        return ft_error_set(err, FT_ERR_RUNTIME, name, NULL,
                            "cannot store the tensor [%d, %d] as %s (out of memory)", rows, cols,
                            fmt_name(f));
    }
    st_release_pages(t);
    memset(out, 0, sizeof *out);
    out->fmt = f, out->rows = rows, out->cols = cols, out->data = mem, out->owned = mem;
    out->blocksize = f == QF_Q8_0 ? 32 : 1;
    return FT_OK;
}

/* Tensor name (rows, cols) as format f: borrowed from the mapping when allowed and stored that
 * way (aligned for its element type), else converted to fp32 in a temporary buffer and quantized
 * (fp32: the buffer is kept), after which the source pages are released. */
static ft_status load_tensor(st_set *s, const char *name, int rows, int cols, qformat f, int borrow,
                             const model_quant *q, qtensor *out, ft_error *err) {
    const st_tensor *t;
    int64_t shape[2] = {rows, cols};
    ft_status st = st_find_shaped(s, name, 2, shape, &t, err);
    if (st) return st;
    int sf = format_of_dtype(t->dtype);
    size_t esz = sf == QF_F32 ? 4 : 2;
    memset(out, 0, sizeof *out);
    if (borrow && sf == (int)f && (uintptr_t)t->data % esz == 0) {
        out->fmt = f, out->rows = rows, out->cols = cols, out->blocksize = 1, out->data = t->data;
        return FT_OK;
    }
    size_t n = (size_t)rows * cols;
    if ((f == QF_BF16 || f == QF_F16 || f == QF_Q8_0) && sf >= 0)
        return load_rows_panelled(t, name, rows, cols, f, out, err);
    /* fp32 keeps the buffer (malloc: qtensor_free frees it); a buffer only needed while
     * quantizing is mapped and unmapped, so it goes back to the system at once rather than
     * leaving a hole in the heap between the quantized tensors */
    float *x = f == QF_F32 ? malloc(n * sizeof(float)) : temp_alloc(n * sizeof(float));
    if (!x)
        return ft_error_set(err, FT_ERR_RUNTIME, name, "--quant nf4 needs less memory",
                            "cannot allocate %.1f MB to convert this tensor", n * 4.0 / 1048576.0);
    if ((st = st_read_f32(s, name, 2, shape, x, err))) {
        if (f == QF_F32)
            free(x);
        else
            temp_free(x, n * sizeof(float));
        return st;
    }
    st_release_pages(t);
    if (f == QF_F32) {
        out->fmt = QF_F32, out->rows = rows, out->cols = cols, out->blocksize = 1;
        out->data = x, out->owned = x;
        return FT_OK;
    }
    int bad = qtensor_quantize(out, f, x, rows, cols, q->blocksize, is_4bit(f) && q->double_quant);
    temp_free(x, n * sizeof(float));
    if (bad)
        return ft_error_set(err, FT_ERR_RUNTIME, name, NULL,
                            "cannot store the tensor [%d, %d] as %s (out of memory)", rows, cols,
                            fmt_name(f));
    return FT_OK;
}

/* --shard-base: what bnb_load_weight read of NAME whole (its quant_state, code tables and nested
 * absmax, and F32 parts it copied because they were unaligned); the codes and 8-bit absmax are
 * read a slice at a time (shard.c). */
static void count_bnb_read(model *m, const char *name) {
    /* read whole: compared, checked, parsed; copied (then read whole) when unaligned */
    static const char *const whole[] = {".quant_map", ".nested_absmax",
                                        ".quant_state.bitsandbytes__nf4",
                                        ".quant_state.bitsandbytes__fp4"},
                             *const if_copied[] = {".absmax", ".nested_quant_map"};
    char full[512];
    for (size_t i = 0; i < 6; i++) {
        snprintf(full, sizeof full, "%s%s", name, i < 4 ? whole[i] : if_copied[i - 4]);
        const st_tensor *t = st_find(m->src, full);
        if (t && (i < 4 || (t->dtype == ST_F32 && ((uintptr_t)t->data & 3))))
            model_shard_count_read(m, t->nbytes);
    }
}

/* What is resident once training runs: as model_weight_bytes counts it. */
void model_count_resident(model *m) {
    const model_config *c = &m->cfg;
    m->head_rows = model_head_chunk_rows(c, &m->quant); /* and the loss's chunks of the head */
    if (m->shard) { /* the slices and gather buffers; a borrowed embedding is read from the file */
        m->weight_bytes = m->n_weights * sizeof(float) + model_shard_resident(m) +
                          (m->wte.owned ? qtensor_bytes(&m->wte) : 0);
        return;
    }
    size_t wb = m->n_weights * sizeof(float) + qtensor_bytes(&m->lm_head);
    for (int l = 0; l < c->L; l++)
        for (int k = 0; k < LIN_COUNT; k++)
            if (m->blocks[l].lin[k].out) wb += qtensor_bytes(&m->blocks[l].lin[k].W);
    if (m->lm_head.data != m->wte.data && !m->wte_fd) wb += qtensor_bytes(&m->wte);
    m->weight_bytes = wb;
}

ft_status model_load(const char *dir, model *m, ft_error *err) {
    return model_load_with(dir, NULL, m, err);
}

ft_status model_load_with(const char *dir, const model_load_options *opt, model *m, ft_error *err) {
    memset(m, 0, sizeof *m);
    ft_status st = cpu_check_env(err); /* FTUNE_ISA set to no level: say so before any work */
    if (st) return st;
    if (gguf_model_is(dir)) return gguf_model_load(dir, opt, m, err);
    st = model_config_load(dir, &m->cfg, err);
    if (st) return st;
    model_config *c = &m->cfg;
    model_quant *q = &m->quant;
    if ((st = model_quant_resolve(dir, c, opt, q, err))) goto done;
    m->QKV = (c->H + 2 * c->Hkv) * c->D;
    m->blocks = calloc((size_t)c->L, sizeof *m->blocks);
    m->n_weights = model_fp32_floats(c);
    m->weights = malloc(m->n_weights * sizeof(float));
    if (!m->blocks || !m->weights) {
        st = ft_error_set(err, FT_ERR_RUNTIME, dir, NULL, "out of memory");
        goto done;
    }
    if ((st = st_open_dir(dir, &m->src, err))) goto done;
    int shard = opt && opt->shard;
    if (shard && (st = model_shard_begin(m, err))) goto done;
    float *cur = m->weights;
    char name[256];
    /* one fp32 vector (a norm or a bias) into the fp32 allocation */
#define VEC(dstp, n)                                                                               \
    do {                                                                                           \
        int64_t sh_[1] = {(n)};                                                                    \
        const st_tensor *t_;                                                                       \
        if ((st = st_find_shaped(m->src, name, 1, sh_, &t_, err))) goto done;                      \
        if ((st = st_read_f32(m->src, name, 1, sh_, cur, err))) goto done;                         \
        model_shard_count_read(m, t_->nbytes);                                                     \
        st_release_pages(t_);                                                                      \
        *(dstp) = cur;                                                                             \
        cur += (n);                                                                                \
    } while (0)
    snprintf(name, sizeof name, "model.norm.weight");
    VEC(&m->norm_f, c->C);
    for (int l = 0; l < c->L; l++) {
        block_weights *bw = &m->blocks[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        VEC(&bw->ln1, c->C);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        VEC(&bw->ln2, c->C);
        if (c->arch->qk_norm) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
            VEC(&bw->q_norm, c->D);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
            VEC(&bw->k_norm, c->D);
        }
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out, col, bias;
            model_lin_layout(c, k, &in, &out, &col, &bias);
            lin_weights *lw = &bw->lin[k];
            lw->in = in, lw->out = out, lw->col = col;
            if (!out) continue;
            if (bias) {
                weight_name(name, sizeof name, l, k, "bias");
                VEC(&lw->b, out);
            }
            weight_name(name, sizeof name, l, k, "weight");
            if (q->from_checkpoint) {
                if ((st = bnb_load_weight(m->src, name, out, in, &lw->W, err))) goto done;
                q->blocksize = lw->W.blocksize;
                if (shard) count_bnb_read(m, name);
            } else if ((st =
                            load_tensor(m->src, name, out, in, q->linear, shard, q, &lw->W, err))) {
                goto done;
            } else if (shard && lw->W.owned) { /* converted or quantized: read whole */
                model_shard_count_read(m, st_find(m->src, name)->nbytes);
            }
        }
        /* --shard-base: this rank keeps its slice of the layer, the rest is freed now, so the
         * whole model is never resident */
        if (shard && (st = model_shard_unit(m, l, err))) goto done;
    }
#undef VEC
    if ((st = load_tensor(m->src, "model.embed_tokens.weight", c->V, c->C, q->embed,
                          q->embed_borrowed, q, &m->wte, err)))
        goto done;
    if (shard && m->wte.owned) /* a converted embedding is read whole; a borrowed one by rows */
        model_shard_count_read(m, st_find(m->src, "model.embed_tokens.weight")->nbytes);
    if (!m->wte.owned && embed_released(q)) {
        const st_tensor *t = st_find(m->src, "model.embed_tokens.weight");
        int fd = st_open_tensor_file(m->src, t, &m->wte_offset);
        /* fd -1: rows come from the mapping, as a copied embedding's do */
        m->wte_fd = fd + 1;
    }
    if (q->head_is_embed && m->wte.fmt == q->lm_head) {
        m->lm_head = m->wte;
        m->lm_head.owned = NULL; /* wte owns it, if anyone does */
    } else if ((st = load_tensor(m->src,
                                 c->tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight",
                                 c->V, c->C, q->lm_head, q->head_borrowed, q, &m->lm_head, err))) {
        goto done;
    } else if (shard && m->lm_head.owned) {
        model_shard_count_read(
            m, st_find(m->src, c->tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight")
                   ->nbytes);
    }
    if (shard) {
        /* the head's pages are sharded below: a tied embedding that shares them is read from
         * the file a row at a time instead (model_embed_row) */
        if (m->lm_head.data == m->wte.data && !m->wte_fd) {
            const st_tensor *t = st_find(m->src, "model.embed_tokens.weight");
            int fd = t ? st_open_tensor_file(m->src, t, &m->wte_offset) : -1;
            if (fd < 0) {
                st = ft_error_set(err, FT_ERR_INPUT, "model.embed_tokens.weight",
                                  "leave --shard-base out for this model",
                                  "--shard-base needs the tied embedding readable from its file");
                goto done;
            }
            m->wte_fd = fd + 1;
        }
        if ((st = model_shard_head(m, err)) || (st = model_shard_end(m, err))) goto done;
    }
    for (int l = 0; l < c->L; l++)
        for (int k = 0; k < LIN_COUNT; k++)
            m->blocks[l].lin[k].W.compute = q->compute;
    m->lm_head.compute = q->compute;
    model_count_resident(m);
    model_shard_report_read(m);
done:
    if (st) model_free(m);
    return st;
}

void model_free(model *m) {
    model_shard_free(m);
    if (m->blocks)
        for (int l = 0; l < m->cfg.L; l++)
            for (int k = 0; k < LIN_COUNT; k++)
                qtensor_free(&m->blocks[l].lin[k].W);
    qtensor_free(&m->lm_head);
    qtensor_free(&m->wte);
    if (m->wte_fd) close(m->wte_fd - 1);
    st_close(m->src);
    free(m->weights);
    free(m->blocks);
    if (m->lora) lora_free(m->lora);
    model_config_free(&m->cfg);
    memset(m, 0, sizeof *m);
}
