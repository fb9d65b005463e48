/*
 * gguf_export.c: `ftune export --gguf` and `--gguf-lora` (gguf_export.h).
 *
 * What llama.cpp's convert_hf_to_gguf.py (llama-cpp-python 0.3.36's vendored copy: conversion/
 * base.py, llama.py, qwen.py) writes for the architectures supported here, facts only:
 *   - metadata: general.architecture ("llama" for Llama and Mistral, "qwen2", "qwen3"),
 *     general.type "model", general.name (ftune: the folder's name; the converter guesses a name
 *     from the folder and config), then {arch}.block_count, context_length, embedding_length,
 *     feed_forward_length, attention.head_count, attention.head_count_kv, rope.freq_base,
 *     attention.layer_norm_rms_epsilon, attention.key_length / value_length (when config.json
 *     has head_dim), general.file_type, for "llama" also vocab_size and rope.dimension_count,
 *     general.quantization_version 2, and the tokenizer (gguf_tok.c). The converter's
 *     general.size_label is not written. RoPE scaling: see read_rope and llama3_rope_freqs.
 *   - tensor names: token_embd, output (absent with tied embeddings), output_norm, and per
 *     block blk.N.attn_norm, attn_q/k/v/output (weights and biases), attn_q_norm / attn_k_norm,
 *     ffn_norm, ffn_gate/up/down.
 *   - "llama": the rows of q_proj and k_proj (and their biases) permuted from Hugging Face's
 *     half-split RoPE order to ggml's adjacent pairs (LlamaModel.permute): within each head of
 *     D rows, row h*D + 2i + j comes from row h*D + j*D/2 + i (k_proj with the kv heads).
 *     Qwen2/Qwen3 use ggml's NEOX rope and are written as they are.
 *   - "phi3" (conversion/phi.py, Phi3MiniModel): its own key set (write_arch_kv),
 *     qkv_proj and gate_up_proj kept fused as attn_qkv and ffn_up, not permuted (NEOX rope);
 *     default RoPE and a GPT2Tokenizer only (read_phi3, phi3_tokenizer).
 *   - types: 1-D tensors F32; matrices F32, F16, BF16 or Q8_0 (a row that is not whole Q8_0
 *     blocks: F16) as --outtype f32/f16/bf16/q8_0 gives them. q4_0 and q4_k_m (which the
 *     converter does not write) take llama_model_quantize's per-tensor types for ftypes
 *     MOSTLY_Q4_0 / MOSTLY_Q4_K_M (ggml_qplan in ops/ggml_quantize.h) and its quantizers, so
 *     they equal what it makes of ftune's f32 export.
 * The file_type numbers are llama.cpp's LLAMA_FTYPE: f32 0, f16 1, q4_0 2, q8_0 7, q4_k_m 15,
 * bf16 32.
 *
 * With an adapter each changed weight is W + (B @ A) * scaling in fp32 (merge_delta_rows, the
 * code of `ftune merge`), rounded to the checkpoint's dtype: the merged folder `ftune merge`
 * writes, then converted. The LoRA file (--gguf-lora) is what convert_lora_to_gguf.py writes:
 * general.type "adapter", adapter.type "lora", adapter.lora.alpha, and per module
 * <gguf name>.lora_a (A, ne [in, r]) and .lora_b (B, ne [r, out]) in F32. llama.cpp scales every
 * module by alpha / r (r from the tensor); ftune folds each module's own scaling (rsLoRA,
 * rank_pattern, alpha_pattern) into B, B' = B * scaling / (alpha / r), and permutes B's rows as
 * the base's Q/K rows are permuted.
 *
 * Streaming: each tensor is read, merged, permuted and quantized a chunk of rows at a time
 * (whole heads when permuting) and written at once; the file goes through a temporary file
 * (gguf_write.h) renamed at the end.
 */
#include "merge/gguf_export.h"
#include "base/half.h"
#include "io/gguf.h"
#include "io/gguf_write.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "merge/adapter.h"
#include "merge/gguf_tok.h"
#include "model/config.h"
#include "ops/ggml_quantize.h"
#include "ops/ggml_quants.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHUNK ((size_t)1 << 20) /* values per chunk: 4 MB of fp32 */
#define PEFT_PREFIX "base_model.model."

typedef struct arch_desc {
    const char *model_type, *gguf;
    int permute_qk; /* llama's RoPE layout */
    int llama_keys; /* vocab_size, rope.dimension_count, add_space_prefix */
    int phi3;       /* Phi3MiniModel's keys (conversion/phi.py); folders only */
} arch_desc;

static const arch_desc archs[] = {
    {"llama", "llama", 1, 1, 0}, {"mistral", "llama", 1, 1, 0}, {"qwen2", "qwen2", 0, 0, 0},
    {"qwen3", "qwen3", 0, 0, 0}, {"phi3", "phi3", 0, 0, 1},
};

typedef struct quant_desc {
    const char *name;
    uint32_t matrix_type; /* ggml type of the matrices */
    uint32_t file_type;   /* LLAMA_FTYPE */
} quant_desc;

static const quant_desc quants[] = {
    {"f32", GGML_TYPE_F32, 0},      {"f16", GGML_TYPE_F16, 1}, {"bf16", GGML_TYPE_BF16, 32},
    {"q8_0", GGML_TYPE_Q8_0, 7},    {"q8", GGML_TYPE_Q8_0, 7}, {"q4_0", GGML_TYPE_Q4_0, 2},
    {"q4_k_m", GGML_TYPE_Q4_K, 15},
};

typedef struct hparams {
    long n_layer, n_ctx, n_embd, n_ff, n_head, n_head_kv, head_dim, vocab;
    int has_head_dim, tied;
    double rope_theta, rms_eps;
    int llama_rope; /* the architecture takes llama3 RoPE (rope_freqs) */
    int rope_kind;  /* ROPE_DEFAULT, ROPE_LINEAR or ROPE_LLAMA3 */
    double rope_factor, rope_low, rope_high, rope_orig_ctx;
    long orig_ctx, sliding_window, rope_dims; /* phi3 */
} hparams;

enum { ROPE_DEFAULT, ROPE_LINEAR, ROPE_LLAMA3 };

typedef struct ex_item {
    const st_tensor *t;    /* from a model folder, or */
    const gguf_tensor *gt; /* from a GGUF file (g) */
    const gguf_file *g;
    int ndim;
    int src_permuted;        /* a GGUF source: Q/K rows already in ggml's order */
    char name[128];          /* GGUF name */
    uint32_t type;           /* output ggml type */
    int permute_heads;       /* 0, or the heads whose rows are permuted */
    const adapter_module *m; /* merged into it, or NULL */
    int64_t rows, cols;
} ex_item;

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A number of the rope dict, else (top != NULL) of config.json, else def; required: absent is
 * an error naming the field. */
static ft_status rope_num(const cJSON *rp, const char *rname, const cJSON *top, const char *k,
                          int required, double def, double *out, const char *path, ft_error *err) {
    const cJSON *v = rp ? cJSON_GetObjectItemCaseSensitive(rp, k) : NULL;
    if (!cJSON_IsNumber(v) && top) v = cJSON_GetObjectItemCaseSensitive(top, k);
    char where[4500];
    if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
        *out = v->valuedouble;
        return FT_OK;
    }
    if (v && !cJSON_IsNull(v)) {
        snprintf(where, sizeof where, "%s: field \"%s.%s\"", path, rname, k);
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a finite number");
    }
    if (required) {
        snprintf(where, sizeof where, "%s: field \"%s.%s\"", path, rname, k);
        return ft_error_set(err, FT_ERR_INPUT, where, "see the model's original config.json",
                            "this RoPE type needs the field");
    }
    *out = def;
    return FT_OK;
}

/* The rope dict as ftune's model takes it: a non-empty rope_scaling over rope_parameters (NULL
 * when neither is an object), and its name for messages. */
static const cJSON *rope_dict(const cJSON *cfg, const char **name) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(cfg, "rope_parameters");
    *name = "rope_parameters";
    if (cJSON_IsObject(rs) && rs->child) {
        *name = "rope_scaling";
        return rs;
    }
    return cJSON_IsObject(rp) ? rp : NULL;
}

/* The RoPE as ftune's model reads it (model/config.c: a non-empty rope_scaling over
 * rope_parameters, "type" where "rope_type" is absent; original_max_position_embeddings from
 * the top level, the dict, then max_position_embeddings). Exported: default, linear (every
 * architecture: rope.scaling.type/factor, conversion/base.py) and llama3 (llama and mistral,
 * whose converter class LlamaModel writes the rope_freqs tensor); anything else exit 2. */
static ft_status read_rope(const cJSON *cfg, const char *path, hparams *h, ft_error *err) {
    const char *rname;
    const cJSON *rp = rope_dict(cfg, &rname);
    const char *rt = rp ? jstr(rp, "rope_type") : NULL, *tkey = "rope_type";
    if (!rt && rp && (rt = jstr(rp, "type"))) tkey = "type";
    ft_status st = rope_num(rp, rname, cfg, "rope_theta", 0, 10000.0, &h->rope_theta, path, err);
    if (st) return st;
    h->rope_kind = ROPE_DEFAULT;
    if (!rt || !strcmp(rt, "default")) return FT_OK;
    char where[4500];
    snprintf(where, sizeof where, "%s: field \"%s.%s\"", path, rname, tkey);
    if (!strcmp(rt, "linear"))
        h->rope_kind = ROPE_LINEAR;
    else if (!strcmp(rt, "llama3") && h->llama_rope)
        h->rope_kind = ROPE_LLAMA3;
    else
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "the default, linear and (llama, mistral) llama3 RoPE are exported",
                            "RoPE type \"%s\" is not exported", rt);
    if ((st = rope_num(rp, rname, NULL, "factor", 1, 1.0, &h->rope_factor, path, err))) return st;
    if (!(h->rope_factor >= 1.0))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "factor must be >= 1, found %g",
                            h->rope_factor);
    if (h->rope_kind == ROPE_LINEAR) return FT_OK;
    if ((st = rope_num(rp, rname, NULL, "low_freq_factor", 1, 1.0, &h->rope_low, path, err)) ||
        (st = rope_num(rp, rname, NULL, "high_freq_factor", 1, 4.0, &h->rope_high, path, err)))
        return st;
    const cJSON *top = cJSON_GetObjectItemCaseSensitive(cfg, "original_max_position_embeddings");
    if (cJSON_IsNumber(top))
        h->rope_orig_ctx = top->valuedouble;
    else if ((st = rope_num(rp, rname, NULL, "original_max_position_embeddings", 0,
                            (double)h->n_ctx, &h->rope_orig_ctx, path, err)))
        return st;
    if (!(h->rope_low > 0) || !(h->rope_high > h->rope_low) || !(h->rope_orig_ctx > 0))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "llama3 RoPE needs 0 < low_freq_factor < high_freq_factor and "
                            "original_max_position_embeddings > 0 (found %g, %g, %g)",
                            h->rope_low, h->rope_high, h->rope_orig_ctx);
    return FT_OK;
}

/* llama3 RoPE as llama.cpp takes it: the tensor rope_freqs.weight of head_dim / 2 factors that
 * divide each default frequency (LlamaModel.generate_extra_tensors in conversion/llama.py).
 * The converter computes in torch float32 with Python numbers cast to float32; a scalar
 * divided by a tensor is torch's reciprocal times the scalar. */
static void llama3_rope_freqs(const hparams *h, float *out) {
    int dim = (int)h->head_dim;
    rope_inv_freq_default(out, dim, h->rope_theta);
    const float two_pi = (float)(2.0 * M_PI), oldf = (float)h->rope_orig_ctx;
    const float low_wl = (float)(h->rope_orig_ctx / h->rope_low);
    const float high_wl = (float)(h->rope_orig_ctx / h->rope_high);
    const float lo = (float)h->rope_low, span = (float)(h->rope_high - h->rope_low);
    const float f = (float)h->rope_factor;
    for (int i = 0; i < dim / 2; i++) {
        float wl = (1.0f / out[i]) * two_pi;
        if (wl < high_wl)
            out[i] = 1.0f;
        else if (wl > low_wl)
            out[i] = f;
        else {
            float smooth = ((1.0f / wl) * oldf - lo) / span;
            out[i] = 1.0f / ((1.0f - smooth) / f + smooth);
        }
    }
}

static ft_status read_hparams(const cJSON *cfg, const char *path, int llama_rope, hparams *h,
                              ft_error *err) {
    ft_status st;
    memset(h, 0, sizeof *h);
    h->llama_rope = llama_rope;
    if ((st = json_get_int(cfg, "num_hidden_layers", 1, 0, &h->n_layer, path, err)) ||
        (st = json_get_int(cfg, "max_position_embeddings", 1, 0, &h->n_ctx, path, err)) ||
        (st = json_get_int(cfg, "hidden_size", 1, 0, &h->n_embd, path, err)) ||
        (st = json_get_int(cfg, "intermediate_size", 1, 0, &h->n_ff, path, err)) ||
        (st = json_get_int(cfg, "num_attention_heads", 1, 0, &h->n_head, path, err)) ||
        (st = json_get_int(cfg, "num_key_value_heads", 0, h->n_head, &h->n_head_kv, path, err)) ||
        (st = json_get_int(cfg, "vocab_size", 1, 0, &h->vocab, path, err)) ||
        (st = json_get_double(cfg, "rms_norm_eps", 1, 0, &h->rms_eps, path, err)) ||
        (st = json_get_bool(cfg, "tie_word_embeddings", 0, 0, &h->tied, path, err)))
        return st;
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(cfg, "head_dim");
    h->has_head_dim = cJSON_IsNumber(hd);
    h->head_dim = h->has_head_dim ? (long)hd->valuedouble : h->n_embd / (h->n_head ? h->n_head : 1);
    if (h->n_head <= 0 || h->n_head_kv <= 0 || h->head_dim <= 0 || h->head_dim % 2 ||
        h->n_layer <= 0 || h->vocab <= 0)
        return ft_error_set(err, FT_ERR_INPUT, path, NULL,
                            "num_attention_heads, num_key_value_heads, head_dim, "
                            "num_hidden_layers and vocab_size must be positive (head_dim even)");
    return read_rope(cfg, path, h, err);
}

/* Phi3MiniModel.set_gguf_parameters (conversion/phi.py): original_max_position_embeddings
 * (required) and partial_rotary_factor from the rope dict, else config.json; the rope
 * dimension count int(factor * hidden_size) / heads; sliding_window, 0 when null. Only the
 * default RoPE: longrope's factor tensors and the other types are not exported. */
static ft_status read_phi3(const cJSON *cfg, const char *path, hparams *h, ft_error *err) {
    const char *rname;
    const cJSON *rp = rope_dict(cfg, &rname);
    char where[4500];
    if (h->rope_kind != ROPE_DEFAULT ||
        (rp && (cJSON_GetObjectItemCaseSensitive(rp, "long_factor") ||
                cJSON_GetObjectItemCaseSensitive(rp, "short_factor")))) {
        snprintf(where, sizeof where, "%s: field \"%s\"", path, rname);
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "only phi3 models with the default RoPE are exported",
                            "phi3 RoPE scaling (longrope, linear, ...) is not exported");
    }
    double orig, pct;
    ft_status st;
    if ((st = rope_num(rp, rname, cfg, "original_max_position_embeddings", 1, 0, &orig, path,
                       err)) ||
        (st = rope_num(rp, rname, cfg, "partial_rotary_factor", 0, 1.0, &pct, path, err)))
        return st;
    h->orig_ctx = (long)orig;
    h->rope_dims = (long)(pct * (double)h->n_embd) / h->n_head;
    if (!(orig > 0) || h->rope_dims <= 0 || h->rope_dims > h->head_dim || h->rope_dims % 2) {
        snprintf(where, sizeof where, "%s: field \"%s.partial_rotary_factor\"", path, rname);
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "expected original_max_position_embeddings > 0 and an even rope "
                            "dimension count within head_dim (found %g, %ld)",
                            orig, h->rope_dims);
    }
    return json_get_int(cfg, "sliding_window", 0, 0, &h->sliding_window, path, err);
}

/* Phi3MiniModel.set_vocab takes the GPT-2 BPE path (gguf_tok.c) when tokenizer_config.json's
 * tokenizer_class is GPT2Tokenizer (Phi-4); otherwise it reads tokenizer.model with
 * SentencePiece, whose vocabulary ftune takes from the SentencePiece-style tokenizer.json beside
 * it (gguf_tok.c, GGUF_TOK_PHI3: *flavor). */
static ft_status phi3_tokenizer(const char *dir, gguf_tok_flavor *flavor, ft_error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    cJSON *tc = NULL;
    struct stat sb;
    const char *cls = NULL;
    if (stat(path, &sb) == 0) {
        ft_status st = json_load_file(path, &tc, err);
        if (st) return st;
        cls = jstr(tc, "tokenizer_class");
    }
    *flavor = cls && !strcmp(cls, "GPT2Tokenizer") ? GGUF_TOK_GPT2 : GGUF_TOK_PHI3;
    cJSON_Delete(tc);
    return FT_OK;
}

/* The GGUF name of a Hugging Face tensor: 1, or 0 for a tensor not written, -1 unknown. */
static int gguf_name(const char *hf, char *out, size_t n) {
    static const char *const top[][2] = {{"model.embed_tokens.weight", "token_embd.weight"},
                                         {"lm_head.weight", "output.weight"},
                                         {"model.norm.weight", "output_norm.weight"}};
    for (int i = 0; i < 3; i++)
        if (!strcmp(hf, top[i][0])) return snprintf(out, n, "%s", top[i][1]), 1;
    static const char *const blk[][2] = {
        {"input_layernorm", "attn_norm"},
        {"post_attention_layernorm", "ffn_norm"},
        {"self_attn.q_proj", "attn_q"},
        {"self_attn.k_proj", "attn_k"},
        {"self_attn.v_proj", "attn_v"},
        {"self_attn.o_proj", "attn_output"},
        {"self_attn.q_norm", "attn_q_norm"},
        {"self_attn.k_norm", "attn_k_norm"},
        {"mlp.gate_proj", "ffn_gate"},
        {"mlp.up_proj", "ffn_up"},
        {"mlp.down_proj", "ffn_down"},
        /* phi3's fused projections, kept fused (gate rows then up rows, as llama.cpp reads) */
        {"self_attn.qkv_proj", "attn_qkv"},
        {"mlp.gate_up_proj", "ffn_up"},
    };
    int layer, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &layer, &used) != 1 || !used) return -1;
    const char *rest = hf + used;
    if (strstr(rest, "rotary_emb.inv_freq")) return 0;
    for (size_t i = 0; i < sizeof blk / sizeof blk[0]; i++) {
        size_t k = strlen(blk[i][0]);
        if (!strncmp(rest, blk[i][0], k) && rest[k] == '.' &&
            (!strcmp(rest + k + 1, "weight") || !strcmp(rest + k + 1, "bias")))
            return snprintf(out, n, "blk.%d.%s.%s", layer, blk[i][1], rest + k + 1), 1;
    }
    return -1;
}

/* The type of a tensor in the file (module comment); q4_0 and q4_k_m are then decided by
 * apply_quant_plan. */
static void pick_type(const quant_desc *q, ex_item *it) {
    uint32_t t = it->ndim == 1 ? GGML_TYPE_F32 : q->matrix_type;
    if (it->cols % ggml_type_info(t)->block_values) t = GGML_TYPE_F16;
    it->type = t;
}

static void permute_rows(const float *src, float *dst, size_t n, size_t cols, size_t D);

/* Rows [r0, r0 + n) of it, merged when it has a module, as fp32 into w (d: scratch). */
static ft_status read_rows(const ex_item *it, size_t r0, size_t n, size_t D, float *w, float *d,
                           float *p, ft_error *err) {
    size_t cols = (size_t)it->cols;
    if (it->gt) {
        ft_status st = gguf_read_f32(it->g, it->gt, r0 * cols, n * cols, w, err);
        if (st) return st;
    } else if (st_read_range_f32(it->t, r0 * cols, n * cols, w))
        return ft_error_set(err, FT_ERR_INPUT, it->t->name, "export an F32, BF16 or F16 model",
                            "not F32, F16 or BF16");
    if (!it->m) return FT_OK;
    merge_delta_rows(it->m, 0, r0, n, cols, d, 1);
    if (it->src_permuted && it->permute_heads) { /* the delta into the file's row order */
        permute_rows(d, p, n, cols, D);
        memcpy(d, p, n * cols * sizeof *d);
    }
    st_dtype dt = it->gt ? ST_F32 : it->t->dtype;
    for (size_t i = 0; i < n * cols; i++) {
        float v = w[i] + d[i];
        w[i] = dt == ST_BF16  ? bf16_to_f32(f32_to_bf16(v))
               : dt == ST_F16 ? f16_to_f32(f32_to_f16(v))
                              : v;
    }
    return FT_OK;
}

/* rows (n of cols values, whole heads of D rows) from HF's half-split order to ggml's pairs */
static void permute_rows(const float *src, float *dst, size_t n, size_t cols, size_t D) {
    for (size_t h = 0; h < n / D; h++)
        for (size_t i = 0; i < D / 2; i++)
            for (size_t j = 0; j < 2; j++)
                memcpy(dst + (h * D + 2 * i + j) * cols, src + (h * D + j * (D / 2) + i) * cols,
                       cols * sizeof(float));
}

static ft_status write_tensor(gguf_writer *gw, const ex_item *it, size_t D, float *w, float *d,
                              float *p, void *obuf, ft_error *err) {
    size_t rows = (size_t)it->rows, cols = (size_t)it->cols;
    const ggml_type_traits *tr = ggml_type_info(it->type);
    size_t row_bytes = cols / (size_t)tr->block_values * tr->block_bytes;
    size_t rc = CHUNK / cols ? CHUNK / cols : 1;
    if (it->permute_heads) rc = rc / D ? rc / D * D : D;
    for (size_t r0 = 0; r0 < rows; r0 += rc) {
        size_t n = rows - r0 < rc ? rows - r0 : rc;
        ft_status st = read_rows(it, r0, n, D, w, d, p, err);
        if (st) return st;
        const float *src = w;
        if (it->permute_heads && !it->src_permuted) {
            permute_rows(w, p, n, cols, D);
            src = p;
        }
        /* rows are quantized independently: any thread count writes the same bytes */
#pragma omp parallel for schedule(static) if (n > 1 && tr->block_values > 1)
        for (size_t r = 0; r < n; r++)
            ggml_quantize_row(it->type, src + r * cols, (uint8_t *)obuf + r * row_bytes, cols);
        if ((st = gguf_writer_put(gw, obuf, n * row_bytes, err))) return st;
        if (!it->t) continue;
        /* give the chunk's source pages back, so RSS does not grow with the tensor */
        st_tensor piece = *it->t;
        size_t esz = st_dtype_size(it->t->dtype);
        piece.data = (const uint8_t *)it->t->data + r0 * cols * esz;
        piece.nbytes = n * cols * esz;
        st_release_pages(&piece);
    }
    return FT_OK;
}

/* A 1-D tensor to be permuted (a q/k bias): one row of rows values treated as rows x 1. */
static ex_item as_column(const ex_item *it) {
    ex_item c = *it;
    c.rows = it->cols, c.cols = 1;
    return c;
}

static ft_status check_out(const char *out, int overwrite, ft_error *err) {
    struct stat sb;
    if (stat(out, &sb) == 0) {
        if (S_ISDIR(sb.st_mode))
            return ft_error_set(err, FT_ERR_INPUT, out, "give a file name ending in .gguf",
                                "the output is a folder");
        if (!overwrite)
            return ft_error_set(err, FT_ERR_INPUT, out, "pass --overwrite to replace it",
                                "the output file exists");
    }
    return FT_OK;
}

static void folder_name(const char *dir, char *out, size_t n) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    size_t k = strlen(buf);
    while (k > 1 && buf[k - 1] == '/')
        buf[--k] = 0;
    snprintf(out, n, "%s", basename(buf));
}

static void write_arch_kv(gguf_writer *gw, const arch_desc *a, const hparams *h, const char *name,
                          const char *type, uint32_t file_type) {
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, a->gguf), k)
    gguf_writer_kv_str(gw, "general.architecture", a->gguf);
    gguf_writer_kv_str(gw, "general.type", type);
    gguf_writer_kv_str(gw, "general.name", name);
    if (!strcmp(type, "adapter")) return;
    if (a->phi3) { /* Phi3MiniModel.set_gguf_parameters, in its order */
        gguf_writer_kv_u32(gw, KEY("context_length"), (uint32_t)h->n_ctx);
        gguf_writer_kv_u32(gw, KEY("rope.scaling.original_context_length"), (uint32_t)h->orig_ctx);
        gguf_writer_kv_u32(gw, KEY("embedding_length"), (uint32_t)h->n_embd);
        gguf_writer_kv_u32(gw, KEY("feed_forward_length"), (uint32_t)h->n_ff);
        gguf_writer_kv_u32(gw, KEY("block_count"), (uint32_t)h->n_layer);
        gguf_writer_kv_u32(gw, KEY("attention.head_count"), (uint32_t)h->n_head);
        gguf_writer_kv_u32(gw, KEY("attention.head_count_kv"), (uint32_t)h->n_head_kv);
        gguf_writer_kv_f32(gw, KEY("attention.layer_norm_rms_epsilon"), (float)h->rms_eps);
        gguf_writer_kv_u32(gw, KEY("rope.dimension_count"), (uint32_t)h->rope_dims);
        gguf_writer_kv_f32(gw, KEY("rope.freq_base"), (float)h->rope_theta);
        gguf_writer_kv_u32(gw, "general.file_type", file_type);
        gguf_writer_kv_u32(gw, KEY("attention.sliding_window"), (uint32_t)h->sliding_window);
        gguf_writer_kv_u32(gw, "general.quantization_version", 2);
        return;
    }
    gguf_writer_kv_u32(gw, KEY("block_count"), (uint32_t)h->n_layer);
    gguf_writer_kv_u32(gw, KEY("context_length"), (uint32_t)h->n_ctx);
    gguf_writer_kv_u32(gw, KEY("embedding_length"), (uint32_t)h->n_embd);
    gguf_writer_kv_u32(gw, KEY("feed_forward_length"), (uint32_t)h->n_ff);
    gguf_writer_kv_u32(gw, KEY("attention.head_count"), (uint32_t)h->n_head);
    gguf_writer_kv_u32(gw, KEY("attention.head_count_kv"), (uint32_t)h->n_head_kv);
    if (h->rope_kind == ROPE_LINEAR) { /* conversion/base.py */
        gguf_writer_kv_str(gw, KEY("rope.scaling.type"), "linear");
        gguf_writer_kv_f32(gw, KEY("rope.scaling.factor"), (float)h->rope_factor);
    }
    gguf_writer_kv_f32(gw, KEY("rope.freq_base"), (float)h->rope_theta);
    gguf_writer_kv_f32(gw, KEY("attention.layer_norm_rms_epsilon"), (float)h->rms_eps);
    if (h->has_head_dim) {
        gguf_writer_kv_u32(gw, KEY("attention.key_length"), (uint32_t)h->head_dim);
        gguf_writer_kv_u32(gw, KEY("attention.value_length"), (uint32_t)h->head_dim);
    }
    gguf_writer_kv_u32(gw, "general.file_type", file_type);
    if (a->llama_keys) {
        gguf_writer_kv_u32(gw, KEY("vocab_size"), (uint32_t)h->vocab);
        gguf_writer_kv_u32(gw, KEY("rope.dimension_count"), (uint32_t)h->head_dim);
    }
    gguf_writer_kv_u32(gw, "general.quantization_version", 2);
#undef KEY
}

/* The heads whose rows a tensor's permutation runs over (0: not permuted). */
static int permute_heads(const arch_desc *a, const hparams *h, const char *gname) {
    if (!a->permute_qk) return 0;
    if (strstr(gname, ".attn_q.")) return (int)h->n_head;
    if (strstr(gname, ".attn_k.")) return (int)h->n_head_kv;
    return 0;
}

/* Each adapter module against the weight it changes: present, 2-D float, shape (out, in). */
static ft_status bind_adapter(const adapter *ad, ex_item *items, int n, ft_error *err) {
    char where[4600];
    for (int i = 0; i < ad->n; i++) {
        const adapter_module *m = &ad->mods[i];
        char wname[1100];
        snprintf(wname, sizeof wname, "%s.weight", m->path);
        snprintf(where, sizeof where, "%s/adapter_model.safetensors: tensor \"%s.lora_A.weight\"",
                 ad->dir, m->name);
        ex_item *it = NULL;
        char gname[128];
        if (gguf_name(wname, gname, sizeof gname) == 1)
            for (int j = 0; j < n && !it; j++)
                if (!strcmp(items[j].name, gname)) it = &items[j];
        if (!it)
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "the adapter belongs to another model (base_model_name_or_path: "
                                "see its adapter_config.json)",
                                "targets module %s, but the model has no tensor %s", m->path,
                                wname);
        if (it->ndim != 2 || it->rows != m->out || it->cols != m->in)
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "the adapter belongs to another model of other dimensions",
                                "the adapter's delta is [%d, %d] (out, in) but the model's %s is "
                                "[%lld, %lld]",
                                m->out, m->in, wname, (long long)it->rows, (long long)it->cols);
        it->m = m;
    }
    return FT_OK;
}

/* DoRA has no GGUF adapter form; say so before adapter_load's general refusal. */
static ft_status refuse_dora(const char *dir, ft_error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    cJSON *c = NULL;
    if (json_load_file(path, &c, err)) return FT_OK; /* adapter_load reports it */
    int dora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "use_dora"));
    cJSON_Delete(c);
    if (!dora) return FT_OK;
    char where[4300];
    snprintf(where, sizeof where, "%s: field \"use_dora\"", path);
    return ft_error_set(err, FT_ERR_INPUT, where,
                        "export the merged model instead: ftune export --gguf OUT --model DIR "
                        "--adapter RUN (after ftune merge, since ftune does not merge DoRA yet)",
                        "a DoRA adapter has no GGUF adapter form (llama.cpp applies only "
                        "B @ A * alpha / r)");
}

static ft_status export_lora(const gguf_export_options *o, const arch_desc *a, const hparams *h,
                             ex_item *items, int n, const adapter *ad, gguf_export_result *res,
                             ft_error *err) {
    ft_status st = FT_OK;
    gguf_writer *gw = gguf_writer_new();
    float *buf = NULL, *p = NULL;
    if (!gw) return ft_error_set(err, FT_ERR_RUNTIME, o->out, NULL, "out of memory");
    /* one alpha for the file: lora_alpha; each module's own scaling is folded into B */
    double alpha = 0;
    cJSON *la = cJSON_GetObjectItemCaseSensitive(ad->config, "lora_alpha");
    alpha = cJSON_IsNumber(la) ? la->valuedouble : 8;
    char name[256];
    folder_name(o->adapter, name, sizeof name);
    write_arch_kv(gw, a, h, name, "adapter", 0);
    gguf_writer_kv_str(gw, "adapter.type", "lora");
    gguf_writer_kv_f32(gw, "adapter.lora.alpha", (float)alpha);
    size_t maxv = 0;
    for (int i = 0; i < n; i++) {
        const adapter_module *m = items[i].m;
        if (!m) continue;
        char tn[160];
        int64_t nea[2] = {m->in, m->r}, neb[2] = {m->r, m->out};
        snprintf(tn, sizeof tn, "%s.lora_a", items[i].name);
        if ((st = gguf_writer_add_tensor(gw, tn, GGML_TYPE_F32, 2, nea, err))) goto done;
        snprintf(tn, sizeof tn, "%s.lora_b", items[i].name);
        if ((st = gguf_writer_add_tensor(gw, tn, GGML_TYPE_F32, 2, neb, err))) goto done;
        size_t v = (size_t)m->out * (size_t)m->r;
        if (v > maxv) maxv = v;
        res->merged++;
    }
    buf = malloc((maxv ? maxv : 1) * sizeof *buf);
    p = malloc((maxv ? maxv : 1) * sizeof *p);
    if (!buf || !p) {
        st = ft_error_set(err, FT_ERR_RUNTIME, o->out, NULL, "out of memory");
        goto done;
    }
    if ((st = gguf_writer_begin(gw, o->out, err))) goto done;
    for (int i = 0; i < n && !st; i++) {
        const adapter_module *m = items[i].m;
        if (!m) continue;
        if (o->progress) o->progress(res->merged ? i : 0, n, items[i].name, o->user);
        st = gguf_writer_put(gw, m->A, (size_t)m->r * m->in * sizeof(float), err);
        if (st) break;
        /* llama.cpp applies alpha / r; the module wants m->scaling */
        float f = alpha != 0 ? (float)(m->scaling / (alpha / m->r)) : (float)m->scaling;
        size_t nb = (size_t)m->out * (size_t)m->r;
        for (size_t k = 0; k < nb; k++)
            buf[k] = m->B[k] * f;
        const float *src = buf;
        if (items[i].permute_heads) {
            permute_rows(buf, p, (size_t)m->out, (size_t)m->r, (size_t)h->head_dim);
            src = p;
        }
        st = gguf_writer_put(gw, src, nb * sizeof(float), err);
    }
    if (!st) st = gguf_writer_finish(gw, err);
    res->tensors = 2 * res->merged;
done:
    free(buf);
    free(p);
    gguf_writer_free(gw);
    return st;
}

/* A GGUF file's keys, general.file_type replaced by the new type. */
static void copy_kvs(gguf_writer *gw, const gguf_file *g, uint32_t file_type) {
    int ft = 0;
    for (int i = 0; i < gguf_kv_count(g); i++) {
        const gguf_kv *kv = gguf_kv_at(g, i);
        if (!strcmp(kv->key, "general.file_type")) {
            gguf_writer_kv_u32(gw, kv->key, file_type);
            ft = 1;
        } else
            gguf_writer_kv_copy(gw, kv);
    }
    if (!ft) gguf_writer_kv_u32(gw, "general.file_type", file_type);
}

/* A GGUF model's architecture, sizes and tensors (names kept, Q/K rows already permuted). */
static ft_status gguf_items(const gguf_file *g, const quant_desc *q, const arch_desc **a,
                            hparams *h, ex_item **items, int *n, ft_error *err) {
    gguf_str as;
    ft_status st = gguf_get_str(g, "general.architecture", &as, err);
    if (st) return st;
    *a = NULL;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strlen(archs[i].gguf) == as.n && !memcmp(archs[i].gguf, as.p, as.n)) *a = &archs[i];
    char key[128], where[4400];
    if (!*a) {
        snprintf(where, sizeof where, "%s: key \"general.architecture\"", gguf_path(g));
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "GGUF export supports llama, qwen2, qwen3 and phi3",
                            "architecture \"%.*s\" is not exported yet", (int)as.n, as.p);
    }
    memset(h, 0, sizeof *h);
    uint32_t u;
#define U32(k, dst, req)                                                                           \
    snprintf(key, sizeof key, "%s." k, (*a)->gguf);                                                \
    if (req || gguf_find_kv(g, key)) {                                                             \
        if ((st = gguf_get_u32(g, key, &u, err))) return st;                                       \
        dst = u;                                                                                   \
    }
    U32("attention.head_count", h->n_head, 1);
    h->n_head_kv = h->n_head;
    U32("attention.head_count_kv", h->n_head_kv, 0);
    U32("embedding_length", h->n_embd, 1);
    U32("block_count", h->n_layer, 1); /* q4_k_m's plan counts layers */
    h->head_dim = h->n_head ? h->n_embd / h->n_head : 0;
    U32("attention.key_length", h->head_dim, 0);
#undef U32
    if (h->n_head <= 0 || h->n_head_kv <= 0 || h->head_dim <= 0 || h->head_dim % 2)
        return ft_error_set(err, FT_ERR_INPUT, gguf_path(g), NULL,
                            "head counts and head size must be positive (head size even)");
    h->tied = !gguf_find_tensor(g, "output.weight");
    int nt = gguf_tensor_count(g);
    *items = calloc((size_t)(nt ? nt : 1), sizeof **items);
    if (!*items) return ft_error_set(err, FT_ERR_RUNTIME, gguf_path(g), NULL, "out of memory");
    for (int i = 0; i < nt; i++) {
        ex_item *it = &(*items)[i];
        it->gt = gguf_tensor_at(g, i), it->g = g, it->src_permuted = 1;
        snprintf(it->name, sizeof it->name, "%s", it->gt->name);
        it->ndim = it->gt->ndim;
        if (it->ndim > 2) {
            snprintf(where, sizeof where, "%s: tensor \"%s\"", gguf_path(g), it->gt->name);
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "a %d-D tensor", it->ndim);
        }
        it->cols = it->gt->ne[0], it->rows = it->ndim == 2 ? it->gt->ne[1] : 1;
        it->permute_heads = permute_heads(*a, h, it->name);
        if (it->permute_heads &&
            (it->ndim == 2 ? it->rows : it->cols) != (int64_t)it->permute_heads * h->head_dim)
            return ft_error_set(err, FT_ERR_INPUT, it->name, "the file's keys do not fit it",
                                "expected %lld rows", (long long)it->permute_heads * h->head_dim);
        pick_type(q, it);
        (*n)++;
    }
    return FT_OK;
}

/* q4_0 and q4_k_m are what llama_model_quantize makes of the f32 export: its per-tensor types
 * (ops/ggml_quantize.h, ggml_qplan: output and tied embeddings Q6_K, Q4_K_M's attn_v / ffn_down
 * layers Q6_K, fallbacks for rows that are not whole blocks), so the tensors equal its output. */
static ft_status apply_quant_plan(const quant_desc *q, const arch_desc *a, const hparams *h,
                                  ex_item *items, int n, ft_error *err) {
    if (q->file_type != GGML_FTYPE_Q4_0 && q->file_type != GGML_FTYPE_Q4_K_M) return FT_OK;
    const char **names = malloc((size_t)(n ? n : 1) * sizeof *names);
    if (!names) return ft_error_set(err, FT_ERR_RUNTIME, "export", NULL, "out of memory");
    for (int i = 0; i < n; i++)
        names[i] = items[i].name;
    ggml_qplan plan;
    ft_status st = FT_OK;
    if (ggml_qplan_init(&plan, (int)q->file_type, a->gguf, (int)h->n_layer, (int)h->n_head,
                        (int)h->n_head_kv, names, (size_t)n))
        st = ft_error_set(err, FT_ERR_INPUT, "option --quant", NULL, "no plan for %s", q->name);
    for (int i = 0; i < n && !st; i++) {
        ex_item *it = &items[i];
        int64_t ne[2] = {it->cols, it->rows};
        it->type = ggml_qplan_type(&plan, it->name, it->ndim, ne);
        if (it->type == GGML_TYPE_Q5_K)
            st = ft_error_set(err, FT_ERR_INPUT, it->name, "export --quant q8_0 or q4_0",
                              "llama.cpp's Q4_K_M rule makes this tensor Q5_K on a 70B-shape "
                              "model, which ftune does not write yet");
    }
    free(names);
    return st;
}

ft_status gguf_export(const gguf_export_options *o, gguf_export_result *res, ft_error *err) {
    memset(res, 0, sizeof *res);
    const char *qn = o->quant ? o->quant : "f32";
    const quant_desc *q = NULL;
    for (size_t i = 0; i < sizeof quants / sizeof quants[0]; i++)
        if (!strcmp(qn, quants[i].name)) q = &quants[i];
    if (!q)
        return ft_error_set(err, FT_ERR_INPUT, "option --quant",
                            "use f32, f16, bf16, q8_0 (q8), q4_0 or q4_k_m", "unknown type \"%s\"",
                            qn);
    ft_status st;
    gguf_tok_flavor tokf = GGUF_TOK_GPT2;
    if ((st = check_out(o->out, o->overwrite, err))) return st;
    if (o->lora && o->adapter && (st = refuse_dora(o->adapter, err))) return st;
    char path[4400];
    cJSON *cfg = NULL;
    hparams h;
    const arch_desc *a = NULL;
    st_set *in = NULL;
    gguf_file *g = NULL;
    adapter *ad = NULL;
    ex_item *items = NULL;
    gguf_writer *gw = NULL;
    float *w = NULL, *d = NULL, *p = NULL;
    void *obuf = NULL;
    int n = 0;
    int from_gguf = gguf_is_file(o->model);
    if (o->adapter && (st = adapter_load(o->adapter, &ad, err))) goto done;
    if (from_gguf) {
        if ((st = gguf_open(o->model, &g, err)) || (st = gguf_items(g, q, &a, &h, &items, &n, err)))
            goto done;
        goto items_ready;
    }
    snprintf(path, sizeof path, "%s/config.json", o->model);
    if ((st = json_load_file(path, &cfg, err))) goto done;
    const char *mt = jstr(cfg, "model_type");
    for (size_t i = 0; mt && i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(mt, archs[i].model_type)) a = &archs[i];
    if (!a) {
        char where[4500];
        snprintf(where, sizeof where, "%s: field \"model_type\"", path);
        st = ft_error_set(err, FT_ERR_INPUT, where,
                          "GGUF export supports llama, mistral, qwen2, qwen3 and phi3",
                          "architecture \"%s\" is not exported yet", mt ? mt : "(none)");
        goto done;
    }
    if ((st = read_hparams(cfg, path, a->permute_qk, &h, err)) ||
        (a->phi3 && (st = read_phi3(cfg, path, &h, err))))
        goto done;
    tokf = a->llama_keys ? GGUF_TOK_LLAMA : GGUF_TOK_GPT2;
    if (a->phi3 && (st = phi3_tokenizer(o->model, &tokf, err))) goto done;
    if (cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config")) {
        st = ft_error_set(err, FT_ERR_INPUT, path,
                          "export the full-precision model (or ftune merge --out-dtype first)",
                          "the model is quantized (field \"quantization_config\")");
        goto done;
    }
    if ((st = st_open_dir(o->model, &in, err))) goto done;
    int nt = st_count(in);
    items = calloc((size_t)(nt ? nt : 1), sizeof *items);
    if (!items) {
        st = ft_error_set(err, FT_ERR_RUNTIME, o->model, NULL, "out of memory");
        goto done;
    }
    for (int i = 0; i < nt; i++) {
        ex_item *it = &items[n];
        it->t = st_at(in, i);
        int r = gguf_name(it->t->name, it->name, sizeof it->name);
        if (r < 0) {
            char where[4500];
            snprintf(where, sizeof where, "%s: tensor \"%s\"", it->t->file, it->t->name);
            st = ft_error_set(err, FT_ERR_INPUT, where,
                              "a model of another architecture, or a variant ftune does not "
                              "export yet",
                              "no GGUF name for this tensor in architecture %s", a->gguf);
            goto done;
        }
        if (r == 0 || (h.tied && !strcmp(it->name, "output.weight"))) continue;
        it->ndim = it->t->ndim;
        if (it->t->ndim == 1)
            it->rows = 1, it->cols = it->t->shape[0];
        else if (it->t->ndim == 2)
            it->rows = it->t->shape[0], it->cols = it->t->shape[1];
        else {
            st = ft_error_set(err, FT_ERR_INPUT, it->t->name, NULL, "a %d-D tensor", it->t->ndim);
            goto done;
        }
        it->permute_heads = permute_heads(a, &h, it->name);
        if (it->permute_heads &&
            (it->t->ndim == 2 ? it->rows : it->cols) != (int64_t)it->permute_heads * h.head_dim) {
            st = ft_error_set(
                err, FT_ERR_INPUT, it->t->name, "config.json does not fit the weights",
                "expected %lld rows (%d heads of %ld)", (long long)it->permute_heads * h.head_dim,
                it->permute_heads, h.head_dim);
            goto done;
        }
        pick_type(q, it);
        n++;
    }
items_ready:
    if (ad && (st = bind_adapter(ad, items, n, err))) goto done;
    if (!o->lora && (st = apply_quant_plan(q, a, &h, items, n, err))) goto done;
    if (o->lora) {
        if (!ad) {
            st = ft_error_set(err, FT_ERR_INPUT, "ftune export", "pass --adapter RUN",
                              "--gguf-lora needs an adapter");
            goto done;
        }
        st = export_lora(o, a, &h, items, n, ad, res, err);
        goto done;
    }

    gw = gguf_writer_new();
    w = malloc(CHUNK * sizeof *w);
    d = malloc(CHUNK * sizeof *d);
    p = malloc(CHUNK * sizeof *p);
    obuf = malloc(CHUNK * sizeof(float));
    if (!gw || !w || !d || !p || !obuf) {
        st = ft_error_set(err, FT_ERR_RUNTIME, o->model, NULL, "out of memory");
        goto done;
    }
    if (g)
        copy_kvs(gw, g, q->file_type);
    else {
        char name[256];
        folder_name(o->model, name, sizeof name);
        write_arch_kv(gw, a, &h, name, "model", q->file_type);
        if ((st = gguf_tok_write(gw, o->model, cfg, (int)h.vocab, tokf, err))) goto done;
    }
    unsigned long long total = 0;
    /* llama3 RoPE: rope_freqs.weight first, as the converter yields it before the weights */
    int extra = !g && h.rope_kind == ROPE_LLAMA3;
    if (extra) {
        int64_t ne[1] = {h.head_dim / 2};
        st = gguf_writer_add_tensor(gw, "rope_freqs.weight", GGML_TYPE_F32, 1, ne, err);
        if (!st) total += gguf_writer_tensor_bytes(gw, 0);
    }
    for (int i = 0; i < n && !st; i++) {
        ex_item *it = &items[i];
        int64_t ne[2] = {it->cols, it->rows};
        st = gguf_writer_add_tensor(gw, it->name, it->type, it->ndim, ne, err);
        if (!st) total += gguf_writer_tensor_bytes(gw, extra + i);
        if (it->m) res->merged++;
    }
    if (!st) st = gguf_writer_begin(gw, o->out, err);
    unsigned long long done_bytes = 0;
    if (!st && extra) {
        llama3_rope_freqs(&h, w); /* head_dim / 2 values: CHUNK is far larger */
        st = gguf_writer_put(gw, w, (size_t)(h.head_dim / 2) * sizeof *w, err);
        done_bytes += gguf_writer_tensor_bytes(gw, 0);
    }
    for (int i = 0; i < n && !st; i++) {
        ex_item *it = &items[i];
        if (o->progress) o->progress((double)done_bytes, (double)total, it->name, o->user);
        if (it->permute_heads && it->ndim == 1) {
            ex_item c = as_column(it);
            st = write_tensor(gw, &c, (size_t)h.head_dim, w, d, p, obuf, err);
        } else
            st = write_tensor(gw, it, (size_t)h.head_dim, w, d, p, obuf, err);
        done_bytes += gguf_writer_tensor_bytes(gw, extra + i);
    }
    if (!st) st = gguf_writer_finish(gw, err);
    if (!st) res->tensors = n + extra, res->bytes = total;
done:
    if (!st && o->progress) o->progress(1, 1, NULL, o->user);
    gguf_writer_free(gw);
    free(w);
    free(d);
    free(p);
    free(obuf);
    free(items);
    st_close(in);
    gguf_close(g);
    adapter_free(ad);
    cJSON_Delete(cfg);
    return st;
}
