/*
 * model.c: loading a Llama-family model and running its training step by hand.
 *
 * Weights: norms and biases are converted to fp32 into one allocation; each linear layer's
 * weight becomes a qtensor in the format the load options ask for, converted and quantized one
 * tensor at a time while the checkpoint's pages it came from are released (or, from a
 * bitsandbytes checkpoint, borrowed as stored); the embedding stays in the file when its dtype
 * allows, its rows read with pread() as tokens look them up; a bf16 / f16 / q8 copy is made a
 * panel of rows at a time; the LM head is a qtensor of its own format. Which linear layers exist,
 * where each writes in its block's fused output buffer, and which biases it has come from the
 * architecture row in config.c, so the forward and backward below have no per-architecture branches
 * beyond "if this layer exists".
 *
 * Activations: for training, each layer keeps what its backward needs (acts, sized once for
 * maxB x maxT tokens). Eval keeps only one layer's worth. The LM head and cross-entropy run in
 * chunks of tokens (ops/xent.c), and the gradient of the final hidden states is produced in the
 * same pass as the loss, so logits for all tokens never exist at once.
 */
#include "model/model.h"
#include "base/cpu.h"
#include "io/json.h"
#include "model/bnb.h"
#include "ops/ops.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- weights -------------------------------------------------------------------------- */

static const lin_kind attn_kinds[] = {LIN_Q, LIN_K, LIN_V, LIN_QKV};
static const lin_kind mlp_in_kinds[] = {LIN_GATE, LIN_UP, LIN_GATE_UP};

/* Shape and place of each linear layer for this config, or out = 0 if absent. */
static void lin_layout(const model_config *c, lin_kind k, int *in, int *out, int *col, int *bias) {
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

/* Bytes a qtensor of this format and shape holds (as qtensor_bytes counts them). */
static size_t qbytes(qformat f, size_t rows, size_t cols, int blocksize, int double_quant) {
    size_t n = rows * cols;
    switch (f) {
    case QF_F32:
        return n * 4;
    case QF_BF16:
    case QF_F16:
        return n * 2;
    case QF_Q8_0:
        return rows * (cols / 32) * 34;
    case QF_NF4:
    case QF_FP4: {
        size_t nb = (n + (size_t)blocksize - 1) / (size_t)blocksize;
        return (n + 1) / 2 + (double_quant ? nb + (nb + 255) / 256 * 4 : nb * 4);
    }
    default:
        return 0;
    }
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
    const char *ds = opt && opt->dtype ? opt->dtype : "fp32";
    if (strcmp(ds, "fp32") && strcmp(ds, "bf16"))
        return ft_error_set(err, FT_ERR_INPUT, "option --dtype", "use fp32 or bf16",
                            "unknown compute type \"%s\"", ds);
    q->compute = strcmp(ds, "bf16") ? QC_F32 : QC_BF16;
    /* bf16 compute rounds the weights to bf16 anyway: keep them so, unless told otherwise */
    const char *qs = opt && opt->quant ? opt->quant : q->compute == QC_BF16 ? "bf16" : "none";
    int lin = qformat_parse(qs);
    if (lin < 0 || lin == QF_F16)
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
        if (lin != QF_F32 && lin != ck)
            return ft_error_set(
                err, FT_ERR_INPUT, "option --quant",
                "leave --quant out: the checkpoint's own 4-bit weights are used",
                "%s holds bitsandbytes %s weights (config.json quantization_config), "
                "which cannot be trained as %s",
                dir, fmt_name(ck), qs);
        q->linear = ck, q->double_quant = ck_dq, q->from_checkpoint = 1, q->blocksize = 64;
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
 * with pread (embed_row) and its pages released. */
static int embed_released(const model_quant *q) { return q->embed_borrowed && !q->head_is_embed; }

void model_quant_describe(const model_quant *q, char *buf, size_t n) {
    char lin[96];
    if (is_4bit(q->linear))
        snprintf(lin, sizeof lin, "%s%s, blocksize %d%s", fmt_name(q->linear),
                 q->double_quant ? " double-quant" : "", q->blocksize,
                 q->from_checkpoint ? " (bitsandbytes checkpoint)" : "");
    else
        snprintf(lin, sizeof lin, "%s", fmt_name(q->linear));
    /* a borrowed embedding that is not also the LM head has its rows read from the file
     * (embed_row), not mapped */
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
static size_t fp32_floats(const model_config *c) {
    size_t n = c->C;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out, col, bias;
        lin_layout(c, k, &in, &out, &col, &bias);
        n += (size_t)c->L * (bias ? (size_t)out : 0);
    }
    return n + (size_t)c->L * (2 * (size_t)c->C + (c->arch->qk_norm ? 2 * (size_t)c->D : 0));
}

/* An embedding left in the file and not shared with the LM head is read a row at a time
 * with pread() (model_forward says why), so none of it is resident. */

size_t model_weight_bytes(const model_config *c, const model_quant *q) {
    size_t n = fp32_floats(c) * sizeof(float);
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out, col, bias;
        lin_layout(c, k, &in, &out, &col, &bias);
        if (out) n += (size_t)c->L * qbytes(q->linear, out, in, q->blocksize, q->double_quant);
    }
    n += qbytes(q->lm_head, c->V, c->C, 1, 0);
    return n + (embed_released(q) ? 0 : q->head_is_embed ? 0 : qbytes(q->embed, c->V, c->C, 1, 0));
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
    size_t rb = qbytes(f, 1, (size_t)cols, 1, 0);
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

ft_status model_load(const char *dir, model *m, ft_error *err) {
    return model_load_with(dir, NULL, m, err);
}

ft_status model_load_with(const char *dir, const model_load_options *opt, model *m, ft_error *err) {
    memset(m, 0, sizeof *m);
    ft_status st = cpu_check_env(err); /* FTUNE_ISA set to no level: say so before any work */
    if (st) return st;
    st = model_config_load(dir, &m->cfg, err);
    if (st) return st;
    model_config *c = &m->cfg;
    model_quant *q = &m->quant;
    if ((st = model_quant_resolve(dir, c, opt, q, err))) goto done;
    m->QKV = (c->H + 2 * c->Hkv) * c->D;
    m->blocks = calloc((size_t)c->L, sizeof *m->blocks);
    m->n_weights = fp32_floats(c);
    m->weights = malloc(m->n_weights * sizeof(float));
    if (!m->blocks || !m->weights) {
        st = ft_error_set(err, FT_ERR_RUNTIME, dir, NULL, "out of memory");
        goto done;
    }
    if ((st = st_open_dir(dir, &m->src, err))) goto done;
    float *cur = m->weights;
    char name[256];
    /* one fp32 vector (a norm or a bias) into the fp32 allocation */
#define VEC(dstp, n)                                                                               \
    do {                                                                                           \
        int64_t sh_[1] = {(n)};                                                                    \
        const st_tensor *t_;                                                                       \
        if ((st = st_find_shaped(m->src, name, 1, sh_, &t_, err))) goto done;                      \
        if ((st = st_read_f32(m->src, name, 1, sh_, cur, err))) goto done;                         \
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
            lin_layout(c, k, &in, &out, &col, &bias);
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
            } else if ((st = load_tensor(m->src, name, out, in, q->linear, 0, q, &lw->W, err))) {
                goto done;
            }
        }
    }
#undef VEC
    if ((st = load_tensor(m->src, "model.embed_tokens.weight", c->V, c->C, q->embed,
                          q->embed_borrowed, q, &m->wte, err)))
        goto done;
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
    }
    for (int l = 0; l < c->L; l++)
        for (int k = 0; k < LIN_COUNT; k++)
            m->blocks[l].lin[k].W.compute = q->compute;
    m->lm_head.compute = q->compute;
    /* what is resident once training runs: as model_weight_bytes counts it */
    size_t wb = m->n_weights * sizeof(float) + qtensor_bytes(&m->lm_head);
    for (int l = 0; l < c->L; l++)
        for (int k = 0; k < LIN_COUNT; k++)
            if (m->blocks[l].lin[k].out) wb += qtensor_bytes(&m->blocks[l].lin[k].W);
    if (m->lm_head.data != m->wte.data && !m->wte_fd) wb += qtensor_bytes(&m->wte);
    m->weight_bytes = wb;
done:
    if (st) model_free(m);
    return st;
}

void model_free(model *m) {
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

/* ---- activations ---------------------------------------------------------------------- */

struct acts {
    int maxB, maxT, maxN, chunk, L;
    int C;        /* the width of the residual stream */
    int round16;  /* acts_round_inputs */
    int mlp_rows; /* the MLP runs in chunks of this many rows (maxN without checkpointing) */
    int ckpt; /* gradient checkpointing: only each layer's input is kept; layers are recomputed */
    size_t bytes;
    /* saved per layer (train; one slot when ckpt) */
    float *x; /* (L+1, N, C) residual stream: input of each layer, then the final one */
    float *ln1, *rstd1, *qkv, *qn_rstd, *kn_rstd, *q, *k, *v, *att, *lse;
    float *xmid, *ln2, *rstd2, *gu, *act;
    float *xa; /* (n_lora, N, R) */
    float *hf, *rstdf, *dhf;
    float *rope_cos,
        *rope_sin; /* (maxT, rot_dim/2) each: RoPE's cos/sin by position (rope_table) */
    /* scratch */
    float *dres, *dln, *dqkv, *dq, *dk, *dv, *datt, *dgu, *dact, *dxa, *xd, *xent, *xtmp;
    uint16_t *x16;   /* CKPT_BF16: (L+1, N, C) the kept layer inputs; x is then two working slots */
    void *mm;        /* the frozen-weight matmuls' scratch (model_matmul_scratch_bytes), after */
    size_t mm_bytes; /* the float parts in the same block */
    void *attn;      /* attention's workspace (attention_workspace_bytes), after mm */
    size_t attn_bytes;
    int failed; /* a matmul found its scratch too small (a bug): losses come back NaN */
};

#define ACTS_PARTS 36

/* The size in floats of each part of acts, in the order acts_alloc lays them out. The same
 * numbers serve the memory plan (ftune plan) and the allocation. */
static int acts_sizes(const model_config *c, int QKV, size_t R, size_t nl, size_t N, size_t T,
                      int chunk, int ckpt, size_t M, size_t sizes[ACTS_PARTS]) {
    size_t L = ckpt ? 1 : (size_t)c->L, C = c->C, HD = (size_t)c->H * c->D,
           KD = (size_t)c->Hkv * c->D, I = c->I;
    /* M: rows of an MLP chunk; xd holds an attention layer's input or a chunk's down input */
    size_t xd = N * (C > HD ? C : HD);
    if (xd < M * I) xd = M * I;
    int qn = c->arch->qk_norm;
    size_t v[ACTS_PARTS] = {
        /* x: every layer's input (bf16 checkpoints: one working slot, the inputs in x16) */
        (ckpt == CKPT_BF16 ? 1 : (size_t)c->L + 1) * N * C,
        /* qkv: kept per layer only with qk-norm, whose backward reads the pre-norm q and k there
         * (attn_input_backward); otherwise backward needs only q, k, v and one slot serves */
        L * N * C, L * N, (qn ? L : 1) * N * QKV, /* ln1 rstd1 qkv */
        qn ? L * N * c->H : 0, qn ? L * N * c->Hkv : 0, L * N * HD, L * N * KD,
        L * N * KD,                                            /* q k v */
        L * N * HD, L * N * c->H,                              /* att lse */
        L * N * C, L * N * C, L * N,                           /* xmid ln2 rstd2 */
        L * M * 2 * I, L * M * I,                              /* gu act */
        nl * N * R,                                            /* xa */
        N * C, N, N * C,                                       /* hf rstdf dhf */
        N * C, N * C, N * QKV, N * HD, N * KD, N * KD, N * HD, /* dres..datt */
        M * 2 * I, M * I, N * R, xd,                           /* dgu dact dxa xd */
        (size_t)chunk * c->V,                                  /* xent */
        ckpt ? N * C : 0, /* xtmp: a recomputed layer's output */
        ckpt == CKPT_BF16 ? (((size_t)c->L + 1) * N * C + 1) / 2 : 0, /* x16, 2 per float */
        T * (size_t)(c->rot_dim / 2), T * (size_t)(c->rot_dim / 2),   /* rope_cos rope_sin */
    };
    memcpy(sizes, v, sizeof v);
    return ACTS_PARTS;
}

/* With checkpointing the MLP (row-independent) runs in chunks of rows, so its buffers (gate|up,
 * SwiGLU and their gradients: 9 I floats a row, 820 MB at Llama-3-8B's shape and 2,048 tokens)
 * hold a chunk, not the batch. MLP_ROWS by measurement: at SmolLM-135M's shape, B 4 T 512,
 * a step is as fast as unchunked (see the commit). */
#define MLP_ROWS 256

static size_t mlp_rows_for(int ckpt, int rows, size_t N) {
    size_t M = !ckpt ? N : rows > 0 ? (size_t)rows : MLP_ROWS;
    if (ckpt && !rows) {
        const char *e = getenv("FTUNE_MLP_ROWS"); /* for benchmarks; the plan assumes MLP_ROWS */
        if (e && atoi(e) > 0) M = (size_t)atoi(e);
    }
    return M < N ? M : N;
}

static int xent_chunk_for(const model_config *c, int chunk, size_t N) {
    if (chunk <= 0) {
        chunk = (int)((16u << 20) / (size_t)c->V);
        if (chunk < 1) chunk = 1;
        if (chunk > 512) chunk = 512;
    }
    if ((size_t)chunk > N) chunk = (int)N;
    return chunk;
}

size_t model_matmul_scratch_bytes(const model_config *c, const model_quant *q, int N) {
    size_t most = 0;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out, col, bias;
        lin_layout(c, k, &in, &out, &col, &bias);
        if (!out) continue;
        qtensor w = {.fmt = q->linear, .rows = out, .cols = in, .compute = q->compute};
        size_t b = qmatmul_scratch_bytes(&w, N);
        if (b > most) most = b;
    }
    /* the LM head multiplies a chunk of the loss's rows at a time (lmhead_xent_q) */
    qtensor h = {.fmt = q->lm_head, .rows = c->V, .cols = c->C, .compute = q->compute};
    size_t b = qmatmul_scratch_bytes(&h, xent_chunk_for(c, 0, (size_t)N));
    return b > most ? b : most;
}

size_t acts_plan_bytes(const model_config *c, int lora_r, int lora_modules, int maxB, int maxT,
                       int ckpt) {
    size_t sizes[ACTS_PARTS], total = 0, N = (size_t)maxB * maxT;
    int n =
        acts_sizes(c, (c->H + 2 * c->Hkv) * c->D, (size_t)lora_r, (size_t)lora_modules, N,
                   (size_t)maxT, xent_chunk_for(c, 0, N), ckpt, mlp_rows_for(ckpt, 0, N), sizes);
    for (int i = 0; i < n; i++)
        total += (sizes[i] + 15) & ~(size_t)15;
    /* and attention's workspace, which acts_alloc puts in the same block (the matmul scratch
     * there too is model_matmul_scratch_bytes, which the plan counts on its own) */
    return total * sizeof(float) +
           ((attention_workspace_bytes(maxB, maxT, c->H, c->Hkv, c->D) + 63) & ~(size_t)63);
}

static float *take(float **cur, size_t n) {
    float *p = *cur;
    *cur += (n + 15) & ~(size_t)15; /* keep 64-byte alignment */
    return p;
}

ft_status acts_alloc(const model *m, int maxB, int maxT, int xent_chunk, acts **out,
                     ft_error *err) {
    return acts_alloc_ckpt(m, maxB, maxT, xent_chunk, 0, out, err);
}

ft_status acts_alloc_ckpt(const model *m, int maxB, int maxT, int xent_chunk, int ckpt, acts **out,
                          ft_error *err) {
    return acts_alloc_rows(m, maxB, maxT, xent_chunk, ckpt, 0, out, err);
}

ft_status acts_alloc_rows(const model *m, int maxB, int maxT, int xent_chunk, int ckpt,
                          int mlp_rows, acts **out, ft_error *err) {
    const model_config *c = &m->cfg;
    acts *a = calloc(1, sizeof *a);
    if (!a) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    size_t N = (size_t)maxB * maxT;
    size_t R = m->lora ? (size_t)m->lora->R : 0, nl = m->lora ? (size_t)m->lora->n : 0;
    xent_chunk = xent_chunk_for(c, xent_chunk, N);
    size_t sizes[ACTS_PARTS];
    size_t M = mlp_rows_for(ckpt, mlp_rows, N);
    int np = acts_sizes(c, m->QKV, R, nl, N, (size_t)maxT, xent_chunk, ckpt, M, sizes);
    size_t total = 0;
    for (int i = 0; i < np; i++)
        total += (sizes[i] + 15) & ~(size_t)15;
    /* the matmul scratch and attention's workspace after the float parts, so that nothing
     * allocates during a step */
    size_t mmb = (model_matmul_scratch_bytes(c, &m->quant, (int)N) + 63) & ~(size_t)63;
    size_t awb = (attention_workspace_bytes(maxB, maxT, c->H, c->Hkv, c->D) + 63) & ~(size_t)63;
    float *buf = aligned_alloc(64, total * sizeof(float) + mmb + awb);
    if (!buf) {
        free(a);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL,
                            "use --grad-checkpoint, or a smaller --batch-size or --seq-len",
                            "cannot allocate %.2f GB for activations",
                            (total * 4.0 + (double)(mmb + awb)) / 1e9);
    }
    memset(buf, 0, total * sizeof(float));
    a->mm = mmb ? (char *)buf + total * sizeof(float) : NULL, a->mm_bytes = mmb;
    a->attn = awb ? (char *)buf + total * sizeof(float) + mmb : NULL, a->attn_bytes = awb;
    float *cur = buf;
    int i = 0;
    float **parts[ACTS_PARTS] = {
        &a->x,    &a->ln1, &a->rstd1,    &a->qkv,     &a->qn_rstd, &a->kn_rstd, &a->q,    &a->k,
        &a->v,    &a->att, &a->lse,      &a->xmid,    &a->ln2,     &a->rstd2,   &a->gu,   &a->act,
        &a->xa,   &a->hf,  &a->rstdf,    &a->dhf,     &a->dres,    &a->dln,     &a->dqkv, &a->dq,
        &a->dk,   &a->dv,  &a->datt,     &a->dgu,     &a->dact,    &a->dxa,     &a->xd,   &a->xent,
        &a->xtmp, NULL,    &a->rope_cos, &a->rope_sin};
    float *x16 = NULL;
    for (i = 0; i < np; i++)
        *(parts[i] ? parts[i] : &x16) = take(&cur, sizes[i]);
    a->x16 = ckpt == CKPT_BF16 ? (uint16_t *)x16 : NULL;
    a->maxB = maxB, a->maxT = maxT, a->maxN = (int)N, a->chunk = xent_chunk, a->L = c->L;
    a->ckpt = ckpt, a->C = c->C, a->mlp_rows = (int)M;
    a->bytes = total * sizeof(float) + mmb + awb;
    *out = a;
    return FT_OK;
}

void acts_free(acts *a) {
    if (!a) return;
    free(a->x); /* the first slice is the start of the one allocation */
    free(a);
}

size_t acts_bytes(const acts *a) { return a->bytes; }

/* ---- one linear layer (frozen W, optional bias, optional LoRA) ----------------------- */

static uint64_t drop_seed_for(uint64_t seed, int layer, int kind) {
    return seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(layer * LIN_COUNT + kind + 1));
}

static size_t lora_index(const lora_set *ls, const lora_module *mod) {
    return (size_t)(mod - ls->mods);
}

/* out (N, ldo) [col ...] = x W^T + b + LoRA; beta 1 adds to what out holds. */
static void lin_forward(const model *m, acts *a, int l, lin_kind k, float *out, int ldo,
                        const float *x, int N, float beta, uint64_t seed, int r0) {
    const lin_weights *lw = &m->blocks[l].lin[k];
    if (qmatmul_forward(out + lw->col, ldo, x, lw->in, &lw->W, lw->b, N, beta, a->mm, a->mm_bytes))
        a->failed = 1;
    const lora_module *mod = m->lora ? lora_get(m->lora, l, k) : NULL;
    if (mod) {
        size_t R = m->lora->R;
        float *xa = a->xa + (lora_index(m->lora, mod) * (size_t)a->maxN + (size_t)r0) * R;
        lora_forward(m->lora, mod, out + lw->col, ldo, x, xa, a->xd, N, drop_seed_for(seed, l, k),
                     (size_t)r0);
    }
}

/* dx (N, in) += d/dx; LoRA grads accumulate. */
static void lin_backward(model *m, acts *a, int l, lin_kind k, float *dx, const float *dout,
                         int ldo, const float *x, int N, uint64_t seed, int r0) {
    const lin_weights *lw = &m->blocks[l].lin[k];
    if (dx &&
        qmatmul_backward_input(dx, lw->in, dout + lw->col, ldo, &lw->W, N, a->mm, a->mm_bytes))
        a->failed = 1;
    const lora_module *mod = m->lora ? lora_get(m->lora, l, k) : NULL;
    if (mod) {
        size_t R = m->lora->R;
        const float *xa = a->xa + (lora_index(m->lora, mod) * (size_t)a->maxN + (size_t)r0) * R;
        lora_backward(m->lora, mod, dx, dout + lw->col, ldo, x, xa, a->dxa, a->xd, N,
                      drop_seed_for(seed, l, k), (size_t)r0);
    }
}

/* ---- one block, forward and backward --------------------------------------------------- */

#define ZERO_CHUNK ((size_t)1 << 16) /* floats zeroed by one thread at a time: 256 KB */

/* Pointers to the saved activations of one layer slot. */
typedef struct slot {
    float *ln1, *rstd1, *qkv, *qn_rstd, *kn_rstd, *q, *k, *v, *att, *lse;
    float *xmid, *ln2, *rstd2, *gu, *act;
} slot;

static slot slot_at(const model *m, const acts *a, size_t li) {
    const model_config *c = &m->cfg;
    const size_t sN = (size_t)a->maxN, C = c->C, HD = (size_t)c->H * c->D,
                 KD = (size_t)c->Hkv * c->D, I = c->I, QKV = m->QKV;
    slot s = {
        a->ln1 + li * sN * C,
        a->rstd1 + li * sN,
        a->qkv + (c->arch->qk_norm ? li : 0) * sN * QKV,
        a->qn_rstd + li * sN * c->H,
        a->kn_rstd + li * sN * c->Hkv,
        a->q + li * sN * HD,
        a->k + li * sN * KD,
        a->v + li * sN * KD,
        a->att + li * sN * HD,
        a->lse + li * sN * c->H,
        a->xmid + li * sN * C,
        a->ln2 + li * sN * C,
        a->rstd2 + li * sN,
        a->gu + li * sN * 2 * I,
        a->act + li * sN * I,
    };
    return s;
}

/* Rows r0 .. r0+nr-1 of the MLP's first half: gu = ln2 [Wg|Wu]^T (+ LoRA), act = silu(g) * u,
 * into the chunk's buffers (the whole batch's without checkpointing, where one chunk is all). */
static void mlp_in_forward(model *m, acts *a, int l, const slot *s, int r0, int nr, uint64_t seed) {
    const block_weights *bw = &m->blocks[l];
    const int C = m->cfg.C, I = m->cfg.I;
    for (size_t i = 0; i < sizeof mlp_in_kinds / sizeof mlp_in_kinds[0]; i++)
        if (bw->lin[mlp_in_kinds[i]].out)
            lin_forward(m, a, l, mlp_in_kinds[i], s->gu, 2 * I, s->ln2 + (size_t)r0 * C, nr, 0,
                        seed, r0);
    swiglu_forward(s->act, s->gu, s->gu + I, nr, I, 2 * I);
}

/* Layer l: xnext = block(x), keeping what backward needs in slot s. x and xnext may be the
 * same buffer (eval keeps one). mlp 0 stops after the attention half and the second norm
 * (backward's recompute: layer_backward recomputes the MLP a chunk at a time). */
static void layer_forward(model *m, acts *a, const batch *b, int l, const slot *s, const float *x,
                          float *xnext, uint64_t seed, int mlp) {
    const model_config *c = &m->cfg;
    const block_weights *bw = &m->blocks[l];
    const int N = b->B * b->T, C = c->C, H = c->H, Hkv = c->Hkv, D = c->D;
    const int QKV = m->QKV;
    const float scale = 1.0f / sqrtf((float)D);
    rmsnorm_forward(s->ln1, s->rstd1, x, bw->ln1, N, C, c->eps);
    for (size_t i = 0; i < sizeof attn_kinds / sizeof attn_kinds[0]; i++)
        if (bw->lin[attn_kinds[i]].out)
            lin_forward(m, a, l, attn_kinds[i], s->qkv, QKV, s->ln1, N, 0, seed, 0);
    /* split q|k|v, qk-norm (Qwen3), RoPE: one pass over each token's row (ops/attn_input.c) */
    const int qn = c->arch->qk_norm;
    attn_input_forward(s->q, s->k, s->v, s->qn_rstd, s->kn_rstd, s->qkv, QKV,
                       qn ? bw->q_norm : NULL, qn ? bw->k_norm : NULL, c->eps, b->pos, a->rope_cos,
                       a->rope_sin, N, H, Hkv, D, c->rot_dim);
    attention_forward(s->att, s->lse, s->q, s->k, s->v, b->seg, b->len, b->B, b->T, H, Hkv, D,
                      c->window[l], scale, a->attn, a->attn_bytes);
    memcpy(s->xmid, x, (size_t)N * C * sizeof(float));
    lin_forward(m, a, l, LIN_O, s->xmid, C, s->att, N, 1, seed, 0);
    rmsnorm_forward(s->ln2, s->rstd2, s->xmid, bw->ln2, N, C, c->eps);
    if (!mlp) return;
    for (int r0 = 0; r0 < N; r0 += a->mlp_rows) {
        int nr = N - r0 < a->mlp_rows ? N - r0 : a->mlp_rows;
        mlp_in_forward(m, a, l, s, r0, nr, seed);
        memcpy(xnext + (size_t)r0 * C, s->xmid + (size_t)r0 * C, (size_t)nr * C * sizeof(float));
        lin_forward(m, a, l, LIN_DOWN, xnext + (size_t)r0 * C, C, s->act, nr, 1, seed, r0);
    }
}

/* p[0, n) = 0, split across the threads when large: the gradient buffers the accumulating GEMMs
 * add into are cleared each layer (26 MB a layer at SmolLM-135M B4 T512), out of cache, where one
 * core's stores reach half the memory bandwidth two do (measured: 4.7 MB in 0.40-0.57 ms on one
 * thread, 0.25-0.29 ms on two). */
static void zero_floats(float *p, size_t n) {
    const long chunks = (long)((n + ZERO_CHUNK - 1) / ZERO_CHUNK);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (long i = 0; i < chunks; i++) {
        size_t c0 = (size_t)i * ZERO_CHUNK, m = n - c0 < ZERO_CHUNK ? n - c0 : ZERO_CHUNK;
        memset(p + c0, 0, m * sizeof(float));
    }
}

/* Backward of layer l: on entry a->dres holds d(loss)/d(layer output); on return it holds
 * d(loss)/d(layer input) (when need_dx), and LoRA gradients have accumulated. */
static void layer_backward(model *m, acts *a, const batch *b, int l, const slot *s, const float *x,
                           uint64_t seed, int need_dx) {
    const model_config *c = &m->cfg;
    const block_weights *bw = &m->blocks[l];
    const int N = b->B * b->T, C = c->C, H = c->H, Hkv = c->Hkv, D = c->D, I = c->I;
    const int HD = H * D, QKV = m->QKV;
    const float scale = 1.0f / sqrtf((float)D);
    float *dres = a->dres;
    /* MLP: xnext = xmid + down(silu(gate) * up), a chunk of rows at a time (recomputing the
     * chunk's first half when checkpointing) */
    zero_floats(a->dln, (size_t)N * C);
    for (int r0 = 0; r0 < N; r0 += a->mlp_rows) {
        int nr = N - r0 < a->mlp_rows ? N - r0 : a->mlp_rows;
        if (a->ckpt) mlp_in_forward(m, a, l, s, r0, nr, seed);
        zero_floats(a->dact, (size_t)nr * I);
        lin_backward(m, a, l, LIN_DOWN, a->dact, dres + (size_t)r0 * C, C, s->act, nr, seed, r0);
        swiglu_backward(a->dgu, a->dgu + I, a->dact, s->gu, s->gu + I, nr, I, 2 * I);
        for (size_t i = 0; i < sizeof mlp_in_kinds / sizeof mlp_in_kinds[0]; i++)
            if (bw->lin[mlp_in_kinds[i]].out)
                lin_backward(m, a, l, mlp_in_kinds[i], a->dln + (size_t)r0 * C, a->dgu, 2 * I,
                             s->ln2 + (size_t)r0 * C, nr, seed, r0);
    }
    rmsnorm_backward(dres, NULL, a->dln, s->xmid, bw->ln2, s->rstd2, N, C);
    /* attention: xmid = x + o(attention(rope(q), rope(k), v)) */
    zero_floats(a->datt, (size_t)N * HD);
    lin_backward(m, a, l, LIN_O, a->datt, dres, C, s->att, N, seed, 0);
    attention_backward(a->dq, a->dk, a->dv, a->datt, s->q, s->k, s->v, s->att, s->lse, b->seg,
                       b->len, b->B, b->T, H, Hkv, D, c->window[l], scale, a->attn, a->attn_bytes);
    /* RoPE, qk-norm and the split backward, into dqkv in one pass per token */
    const int qn = c->arch->qk_norm;
    attn_input_backward(a->dqkv, a->dq, a->dk, a->dv, s->qkv, QKV, s->qn_rstd, s->kn_rstd,
                        qn ? bw->q_norm : NULL, qn ? bw->k_norm : NULL, b->pos, a->rope_cos,
                        a->rope_sin, N, H, Hkv, D, c->rot_dim);
    if (need_dx) zero_floats(a->dln, (size_t)N * C);
    for (size_t i = 0; i < sizeof attn_kinds / sizeof attn_kinds[0]; i++)
        if (bw->lin[attn_kinds[i]].out)
            lin_backward(m, a, l, attn_kinds[i], need_dx ? a->dln : NULL, a->dqkv, QKV, s->ln1, N,
                         seed, 0);
    if (need_dx) rmsnorm_backward(dres, NULL, a->dln, x, bw->ln1, s->rstd1, N, C);
}

/* ---- the model ----------------------------------------------------------------------- */

/* Where layer l's input lives during the forward: train keeps every layer's input (bf16
 * checkpoints: alternating between x and xtmp, which backward's recompute uses later, the
 * kept copy in x16); eval runs in place in slot 0. */
static float *layer_input(const acts *a, int l, int train) {
    if (train && a->ckpt == CKPT_BF16) return l & 1 ? a->xtmp : a->x;
    return a->x + (train ? (size_t)l : 0) * (size_t)a->maxN * a->C;
}

/* Elementwise loops over the residual stream (N*C values) are split across the threads from
 * this many values: below it a parallel region costs more than it saves. */
#define PAR_MIN (1L << 16)

/* Round x (N rows) to bf16 in place and keep it as layer l's input: the forward goes on from
 * the rounded values, which are what backward's recompute will start from. */
static void keep_bf16(acts *a, int l, float *x, int N) {
    const long n = (long)N * a->C;
    if (!a->x16) { /* acts_round_inputs: rounded in place, nothing kept apart */
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (long i = 0; i < n; i++)
            x[i] = bf16_to_f32(f32_to_bf16(x[i]));
        return;
    }
    uint16_t *dst = a->x16 + (size_t)l * a->maxN * a->C;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++) {
        dst[i] = f32_to_bf16(x[i]);
        x[i] = bf16_to_f32(dst[i]);
    }
}

void acts_round_inputs(acts *a) { a->round16 = 1; }

int ckpt_dtype_parse(const char *dtype) {
    if (!dtype || !strcmp(dtype, "fp32")) return CKPT_FP32;
    return !strcmp(dtype, "bf16") ? CKPT_BF16 : -1;
}

/* Layer l's input as the forward saw it, for backward: bf16 checkpoints are widened (exactly)
 * into slot 0. */
static const float *kept_input(acts *a, int l, int N) {
    if (a->ckpt != CKPT_BF16) return a->x + (size_t)l * a->maxN * a->C;
    const uint16_t *src = a->x16 + (size_t)l * a->maxN * a->C;
    const long n = (long)N * a->C;
    float *x = a->x;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++)
        x[i] = bf16_to_f32(src[i]);
    return x;
}

/* out (C) = embedding row id. A row of a mapped table read through the mapping would map the
 * page-cache folio around it (ext4 caches files in large folios, up to 2 MB, and a fault maps a
 * folio whole), so a step of 2,048 tokens maps all of Llama 3's 1 GB table; pread() copies
 * just the row from the page cache, into raw (the row's bytes as stored, at most 4 C). */
static void embed_row(const model *m, int id, float *out, void *raw) {
    const qtensor *w = &m->wte;
    size_t rb = qbytes(w->fmt, 1, (size_t)w->cols, 1, 0);
    if (m->wte_fd && pread(m->wte_fd - 1, raw, rb,
                           (off_t)(m->wte_offset + (long long)id * (long long)rb)) == (ssize_t)rb) {
        qtensor row = *w;
        row.rows = 1, row.data = raw, row.owned = NULL;
        qtensor_dequant_rows(&row, 0, 1, out);
        return;
    }
    qtensor_dequant_rows(w, id, 1, out);
}

double model_forward(const model *mc, acts *a, const batch *b, int train, uint64_t seed,
                     float *logits, long *count) {
    model *m = (model *)mc;
    const model_config *c = &m->cfg;
    const int N = b->B * b->T, C = c->C;
    /* rows in parallel (each pread is a system call), each read into its own row of ln1, which
     * layer 0's norm has yet to write */
    float *raw = slot_at(m, a, 0).ln1;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        embed_row(m, b->ids[n], a->x + (size_t)n * C, raw + (size_t)n * C);
    /* RoPE's cos/sin for this batch's positions (all < T <= maxT: dataset.c), for every layer
     * forward and backward */
    rope_table(a->rope_cos, a->rope_sin, b->T, c->inv_freq, c->rot_dim, c->attn_scaling);
    int keep16 = train && (a->ckpt == CKPT_BF16 || a->round16);
    if (keep16) keep_bf16(a, 0, a->x, N);
    for (int l = 0; l < c->L; l++) {
        float *x = layer_input(a, l, train), *xnext = layer_input(a, l + 1, train);
        slot s = slot_at(m, a, train && !a->ckpt ? (size_t)l : 0);
        layer_forward(m, a, b, l, &s, x, xnext, seed, 1);
        if (keep16) keep_bf16(a, l + 1, xnext, N);
    }
    float *xL = layer_input(a, c->L, train);
    rmsnorm_forward(a->hf, a->rstdf, xL, m->norm_f, N, C, c->eps);
    if (logits &&
        qmatmul_forward(logits, c->V, a->hf, C, &m->lm_head, NULL, N, 0, a->mm, a->mm_bytes))
        a->failed = 1;
    if (train) zero_floats(a->dhf, (size_t)N * C);
    double loss = lmhead_xent_q(train ? a->dhf : NULL, a->hf, &m->lm_head, b->targets, N, 1.0f,
                                a->xent, a->chunk, a->mm, a->mm_bytes);
    /* a matmul of this or an earlier step found its scratch too small: sized by the same
     * functions, so a bug; NaN makes the trainer stop with an error instead of going on wrong */
    if (a->failed) loss = NAN;
    if (count) {
        long cnt = 0;
        for (int n = 0; n < N; n++)
            cnt += b->targets[n] >= 0;
        *count = cnt;
    }
    return loss;
}

void model_backward(model *m, acts *a, const batch *b, float grad_scale, uint64_t seed) {
    const model_config *c = &m->cfg;
    const int N = b->B * b->T, C = c->C;
    const long n = (long)N * C;
    float *dhf = a->dhf, *dres = a->dres;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++) { /* one pass: scale the head's gradient, clear dres */
        dhf[i] *= grad_scale;
        dres[i] = 0.0f;
    }
    rmsnorm_backward(a->dres, NULL, a->dhf, kept_input(a, c->L, N), m->norm_f, a->rstdf, N, C);
    for (int l = c->L - 1; l >= 0; l--) {
        const float *x = kept_input(a, l, N);
        slot s = slot_at(m, a, a->ckpt ? 0 : (size_t)l);
        if (a->ckpt) layer_forward(m, a, b, l, &s, x, a->xtmp, seed, 0); /* recompute */
        /* the embedding is frozen: no gradient is needed below layer 0's input */
        layer_backward(m, a, b, l, &s, x, seed, l > 0);
    }
}
