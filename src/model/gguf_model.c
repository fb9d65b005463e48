/*
 * gguf_model.c: `--model FILE.gguf`, a GGUF file read into ftune's model structs.
 *
 * Config, from the metadata (llama.cpp's gguf-py constants.py Keys.LLM / Keys.Attention, as
 * transformers' integrations/ggml.py maps them to config.json fields), with ARCH the value of
 * general.architecture (llama, qwen2, qwen3, phi3):
 *   ARCH.embedding_length -> hidden_size        ARCH.feed_forward_length -> intermediate_size
 *   ARCH.block_count -> num_hidden_layers       ARCH.attention.head_count -> num_attention_heads
 *   ARCH.attention.head_count_kv -> num_key_value_heads (default: head_count)
 *   ARCH.attention.key_length -> head_dim (default hidden / heads)
 *   ARCH.context_length -> max_position_embeddings
 *   ARCH.attention.layer_norm_rms_epsilon -> rms_norm_eps
 *   ARCH.rope.freq_base -> rope_theta (default 10000), ARCH.rope.dimension_count must be head_dim,
 *   ARCH.rope.scaling.type none / linear (ARCH.rope.scaling.factor); the rope_freqs tensor
 *   (Llama 3.1-style per-frequency factors: each frequency divided by its factor, as llama.cpp)
 *   vocab_size: the rows of token_embd.weight (= the length of tokenizer.ggml.tokens when present);
 *   tie_word_embeddings: output.weight absent; biases: present when their tensors are.
 *
 * Tensors (gguf-py tensor_mapping.py): token_embd, output_norm, output, and per layer N
 * blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down,
 * attn_q_norm, attn_k_norm}.weight and attn_{q,k,v,output}.bias. Phi-3 (convert_hf_to_gguf.py's
 * Phi3MiniModel, gguf-py MODEL_TENSORS[PHI3]) keeps Hugging Face's fused layers: blk.N.attn_qkv
 * is qkv_proj and blk.N.ffn_up is gate_up_proj (gate rows, then up rows), in HF row order (phi3 is
 * a NeoX-rope architecture in llama.cpp: no permutation). GGUF lists dims ne0 first, so a
 * matrix HF stores as [out, in] is [in, out] in the file with the same bytes: rows are rows.
 *
 * RoPE rows. GGUF's llama architecture rotates adjacent pairs (x[2i], x[2i+1]) of each head;
 * ftune's block rotates Hugging Face's (x[i], x[i + D/2]). llama.cpp's HF converter
 * (convert_hf_to_gguf.py, LlamaModel.permute) reorders the rows of q_proj (n_head heads) and
 * k_proj (n_head_kv heads) as w.reshape(n_head, 2, D/2, in).swapaxes(1, 2): file row h*D + 2i + s
 * is HF row h*D + s*D/2 + i. Files from llama2.c (convert-llama2c-to-ggml) are in that layout
 * natively. So the llama loader puts file row h*D + 2i + s back at h*D + s*D/2 + i for Q and K
 * (weights and biases), as transformers' GGUF loader (reverse_permute) does; qwen2/qwen3 files
 * use the NeoX rotation (HF's own) and are read as they are.
 *
 * Storage. Every matrix stays in its stored type where qtensor has it (F32, F16, BF16, Q8_0,
 * Q4_0, Q4_K, Q6_K: GGUF's blocks are qtensor's byte for byte), rows copied in (permuted) order;
 * a file that mixes types (llama.cpp's Q4_K_M: Q4_K and Q6_K, with Q8_0 or Q5_0 where a row is
 * not whole 256-value blocks) keeps each linear layer in its own. Other types (Q5_0, Q4_1, ...)
 * are dequantized to fp32 at load. Decode then reads each weight once per token in its stored
 * format (qtensor's fused dequantize-dot kernels), prefill through dequantized panels. --quant
 * converts every linear layer to one format instead (dequantized, then quantized). The
 * embedding keeps its type too, a row dequantized per lookup (model_embed_row); a tied LM head
 * is the embedding's own tensor. Training refuses Q4_0 / Q4_K / Q6_K weights kept as stored
 * (trainer.c; --quant converts them). Everything is copied out of the mapping, which is closed
 * after loading.
 */
#include "model/gguf_model.h"

#include "io/gguf.h"
#include "io/spans.h"
#include "model/model_internal.h"
#include "ops/ggml_quants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUPPORTED_GGUF "ftune reads GGUF architectures llama, qwen2, qwen3 and phi3"

int gguf_model_is(const char *path) { return gguf_is_file(path); }

/* ---- config --------------------------------------------------------------------------- */

static const char *kname(char *buf, size_t n, const char *arch, const char *suffix) {
    snprintf(buf, n, "%s.%s", arch, suffix);
    return buf;
}

static ft_status missing_key(const gguf_file *g, const char *key, ft_error *err) {
    char w[4400];
    snprintf(w, sizeof w, "%s: key \"%s\"", gguf_path(g), key);
    return ft_error_set(err, FT_ERR_INPUT, w,
                        "the file's metadata is incomplete; convert the model again with "
                        "llama.cpp's convert_hf_to_gguf.py",
                        "required key is missing");
}

/* A positive size key ARCH.suffix up to max; def >= 0 when optional. */
static ft_status size_key(const gguf_file *g, const char *arch, const char *suffix, long def,
                          long max, int *out, ft_error *err) {
    char k[256], w[4400];
    kname(k, sizeof k, arch, suffix);
    if (!gguf_find_kv(g, k)) {
        if (def < 0) return missing_key(g, k, err);
        *out = (int)def;
        return FT_OK;
    }
    uint64_t v;
    ft_status st = gguf_get_u64(g, k, &v, err);
    if (st) return st;
    if (v < 1 || v > (uint64_t)max) {
        snprintf(w, sizeof w, "%s: key \"%s\"", gguf_path(g), k);
        return ft_error_set(err, FT_ERR_INPUT, w, NULL,
                            "expected a positive integer up to %ld, found %llu", max,
                            (unsigned long long)v);
    }
    *out = (int)v;
    return FT_OK;
}

static ft_status cfg_from(const gguf_file *g, model_config *cfg, ft_error *err) {
    char k[256], w[4400];
    const char *path = gguf_path(g);
    gguf_str as;
    if (!gguf_find_kv(g, "general.architecture"))
        return missing_key(g, "general.architecture", err);
    ft_status st = gguf_get_str(g, "general.architecture", &as, err);
    if (st) return st;
    char arch[64];
    snprintf(arch, sizeof arch, "%.*s", (int)(as.n < 63 ? as.n : 63), as.p);
    const arch_info *ai = strlen(arch) == as.n ? arch_find(arch) : NULL;
    if (ai && !strcmp(ai->model_type, "mistral")) ai = NULL; /* GGUF writes Mistral as llama */
    if (!ai || (ai->fused_qkv && strcmp(ai->model_type, "phi3"))) {
        snprintf(w, sizeof w, "%s: key \"general.architecture\"", path);
        return ft_error_set(err, FT_ERR_INPUT, w, SUPPORTED_GGUF, "unsupported architecture \"%s\"",
                            arch);
    }
    cfg->arch = ai;
    if ((st = size_key(g, arch, "embedding_length", -1, 1L << 20, &cfg->C, err)) ||
        (st = size_key(g, arch, "block_count", -1, 1L << 14, &cfg->L, err)) ||
        (st = size_key(g, arch, "feed_forward_length", -1, 1L << 22, &cfg->I, err)) ||
        (st = size_key(g, arch, "attention.head_count", -1, 1L << 14, &cfg->H, err)) ||
        (st = size_key(g, arch, "attention.head_count_kv", cfg->H, cfg->H, &cfg->Hkv, err)) ||
        (st = size_key(g, arch, "context_length", 2048, 1L << 30, &cfg->max_pos, err)))
        return st;
    if (cfg->H % cfg->Hkv) {
        snprintf(w, sizeof w, "%s: key \"%s\"", path,
                 kname(k, sizeof k, arch, "attention.head_count_kv"));
        return ft_error_set(
            err, FT_ERR_INPUT, w, "each key/value head serves a whole group of query heads",
            "head_count (%d) is not a multiple of head_count_kv (%d)", cfg->H, cfg->Hkv);
    }
    if (cfg->C % cfg->H && !gguf_find_kv(g, kname(k, sizeof k, arch, "attention.key_length"))) {
        snprintf(w, sizeof w, "%s: key \"%s\"", path,
                 kname(k, sizeof k, arch, "attention.head_count"));
        return ft_error_set(err, FT_ERR_INPUT, w, "the file needs ARCH.attention.key_length",
                            "embedding_length (%d) is not a multiple of head_count (%d)", cfg->C,
                            cfg->H);
    }
    if ((st = size_key(g, arch, "attention.key_length", cfg->C / cfg->H, 1L << 14, &cfg->D, err)))
        return st;
    int vd;
    if ((st = size_key(g, arch, "attention.value_length", cfg->D, 1L << 14, &vd, err))) return st;
    if (vd != cfg->D) {
        snprintf(w, sizeof w, "%s: key \"%s\"", path,
                 kname(k, sizeof k, arch, "attention.value_length"));
        return ft_error_set(err, FT_ERR_INPUT, w, NULL,
                            "value heads of %d dims differ from key heads (%d): not supported", vd,
                            cfg->D);
    }
    /* epsilon */
    kname(k, sizeof k, arch, "attention.layer_norm_rms_epsilon");
    if (!gguf_find_kv(g, k)) return missing_key(g, k, err);
    float eps;
    if ((st = gguf_get_f32(g, k, &eps, err))) return st;
    if (!(eps > 0 && eps < 1)) {
        snprintf(w, sizeof w, "%s: key \"%s\"", path, k);
        return ft_error_set(err, FT_ERR_INPUT, w, NULL,
                            "expected a small positive number, found %g", eps);
    }
    cfg->eps = eps;
    /* vocabulary and tied output from the tensors */
    const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te) {
        snprintf(w, sizeof w, "%s: tensor \"token_embd.weight\"", path);
        return ft_error_set(err, FT_ERR_INPUT, w, "the file may be truncated or not a model",
                            "the embedding tensor is missing");
    }
    if (te->ndim != 2 || te->ne[0] != cfg->C || te->ne[1] < 1 || te->ne[1] > (1L << 28)) {
        snprintf(w, sizeof w, "%s: tensor \"token_embd.weight\"", path);
        return ft_error_set(err, FT_ERR_INPUT, w,
                            "the file's metadata and tensors disagree; it may be damaged",
                            "expected [%d, vocab] (ne0 first), found %d dims [%lld, %lld]", cfg->C,
                            te->ndim, (long long)te->ne[0], (long long)te->ne[1]);
    }
    cfg->V = (int)te->ne[1];
    cfg->tie_embeddings = gguf_find_tensor(g, "output.weight") == NULL;
    cfg->attn_bias = gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL || ai->qkv_bias;
    cfg->o_bias = gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
    cfg->mlp_bias = gguf_find_tensor(g, "blk.0.ffn_gate.bias") != NULL;
    snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", "");
    cfg->bos_token_id = cfg->eos_token_id = -1;
    if (gguf_find_kv(g, "tokenizer.ggml.bos_token_id"))
        cfg->bos_token_id = gguf_arr_int(gguf_find_kv(g, "tokenizer.ggml.bos_token_id"), 0);
    if (gguf_find_kv(g, "tokenizer.ggml.eos_token_id"))
        cfg->eos_token_id = gguf_arr_int(gguf_find_kv(g, "tokenizer.ggml.eos_token_id"), 0);
    /* sliding windows: full attention everywhere, except Phi-3, whose converter writes
     * config.json's sliding_window as phi3.attention.sliding_window (0 for none) and whose
     * every layer uses it (as the HF path, config.c load_windows) */
    cfg->window = calloc((size_t)cfg->L, sizeof(int));
    int phi3 = !strcmp(ai->model_type, "phi3");
    kname(k, sizeof k, arch, "attention.sliding_window");
    if (phi3 && cfg->window && gguf_find_kv(g, k)) {
        uint64_t sw;
        if ((st = gguf_get_u64(g, k, &sw, err))) return st;
        if (sw > 0x7fffffffULL) {
            snprintf(w, sizeof w, "%s: key \"%s\"", path, k);
            return ft_error_set(err, FT_ERR_INPUT, w, NULL,
                                "expected a window of at most 2^31-1 tokens, found %llu",
                                (unsigned long long)sw);
        }
        for (int l = 0; l < cfg->L; l++)
            cfg->window[l] = (int)sw;
    }
    /* RoPE: Phi-3 may rotate the first rope.dimension_count dims of each head (its
     * partial_rotary_factor; the converter writes int(factor * hidden) / heads) */
    int rd;
    if ((st = size_key(g, arch, "rope.dimension_count", cfg->D, 1L << 14, &rd, err))) return st;
    if (phi3 && (rd > cfg->D || rd < 2 || rd % 2)) {
        snprintf(w, sizeof w, "%s: key \"%s\"", path,
                 kname(k, sizeof k, arch, "rope.dimension_count"));
        return ft_error_set(err, FT_ERR_INPUT, w, NULL,
                            "expected an even number of rotated dims from 2 to head_dim (%d), "
                            "found %d",
                            cfg->D, rd);
    }
    if (rd != cfg->D && !phi3) {
        snprintf(w, sizeof w, "%s: key \"%s\"", path,
                 kname(k, sizeof k, arch, "rope.dimension_count"));
        return ft_error_set(err, FT_ERR_INPUT, w, "ftune rotates whole heads for this architecture",
                            "partial rotation (%d of %d dims) is not supported", rd, cfg->D);
    }
    float theta = 10000.0f, factor = 1.0f;
    kname(k, sizeof k, arch, "rope.freq_base");
    if (gguf_find_kv(g, k) && (st = gguf_get_f32(g, k, &theta, err))) return st;
    if (!(theta > 0)) {
        snprintf(w, sizeof w, "%s: key \"%s\"", path, k);
        return ft_error_set(err, FT_ERR_INPUT, w, NULL, "expected a positive number, found %g",
                            theta);
    }
    kname(k, sizeof k, arch, "rope.scaling.type");
    if (gguf_find_kv(g, k)) {
        gguf_str t;
        if ((st = gguf_get_str(g, k, &t, err))) return st;
        int is_none = t.n == 4 && !memcmp(t.p, "none", 4);
        int is_linear = t.n == 6 && !memcmp(t.p, "linear", 6);
        if (!is_none && !is_linear) {
            snprintf(w, sizeof w, "%s: key \"%s\"", path, k);
            return ft_error_set(
                err, FT_ERR_INPUT, w, "ftune reads GGUF rope scaling \"none\" and \"linear\"",
                "unsupported rope scaling \"%.*s\"", (int)(t.n < 64 ? t.n : 64), t.p);
        }
        kname(k, sizeof k, arch, "rope.scaling.factor");
        if (is_linear && gguf_find_kv(g, k) && (st = gguf_get_f32(g, k, &factor, err))) return st;
        if (!(factor >= 1.0f)) {
            snprintf(w, sizeof w, "%s: key \"%s\"", path, k);
            return ft_error_set(err, FT_ERR_INPUT, w, NULL, "expected a number >= 1, found %g",
                                factor);
        }
    }
    /* Llama 3.1-style scaling: the converter writes one factor per frequency (rope_freqs), and
     * llama.cpp divides each frequency by its factor */
    const gguf_tensor *ff = gguf_find_tensor(g, "rope_freqs.weight");
    if (ff && ff->nelem != (uint64_t)(rd / 2)) {
        snprintf(w, sizeof w, "%s: tensor \"rope_freqs.weight\"", path);
        return ft_error_set(err, FT_ERR_INPUT, w, "one factor per rotary frequency",
                            "expected %d values, found %llu", rd / 2,
                            (unsigned long long)ff->nelem);
    }
    /* Phi-3's longrope (the 128k models): the converter writes the long and short factors as
     * tensors; ftune's HF path supports Phi-3's default rope only, and so does this one */
    if (gguf_find_tensor(g, "rope_factors_long.weight")) {
        snprintf(w, sizeof w, "%s: tensor \"rope_factors_long.weight\"", path);
        return ft_error_set(err, FT_ERR_INPUT, w,
                            "this is Phi-3's longrope scaling (a 128k-context model); use a 4k one",
                            "long/short rope factors are not supported yet");
    }
    cfg->rot_dim = rd;
    cfg->attn_scaling = 1.0f;
    cfg->inv_freq = malloc(sizeof(float) * (size_t)(rd / 2));
    if (!cfg->window || !cfg->inv_freq)
        return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    rope_inv_freq_default(cfg->inv_freq, rd, theta);
    for (int i = 0; i < rd / 2; i++)
        cfg->inv_freq[i] /= factor;
    if (ff) {
        float *f = malloc(sizeof(float) * (size_t)(rd / 2));
        if (!f) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
        ft_status st = gguf_read_f32(g, ff, 0, (uint64_t)(rd / 2), f, err);
        for (int i = 0; !st && i < rd / 2; i++) {
            if (!(f[i] > 0.0f && f[i] < 1e30f)) {
                snprintf(w, sizeof w, "%s: tensor \"rope_freqs.weight\"", path);
                st = ft_error_set(err, FT_ERR_INPUT, w, NULL,
                                  "factor %d is %g; expected a positive number", i, f[i]);
            } else
                cfg->inv_freq[i] /= f[i];
        }
        free(f);
        if (st) return st;
    }
    return FT_OK;
}

ft_status gguf_config_load(const char *path, model_config *cfg, ft_error *err) {
    memset(cfg, 0, sizeof *cfg);
    gguf_file *g;
    ft_status st = gguf_open(path, &g, err);
    if (st) return st;
    st = cfg_from(g, cfg, err);
    gguf_close(g);
    if (st) model_config_free(cfg);
    return st;
}

/* ---- tensors -------------------------------------------------------------------------- */

/* The GGUF name of linear layer k of layer l ("blk.3.attn_q"). */
static void gguf_lin_name(char *buf, size_t n, int l, lin_kind k, const char *suffix) {
    static const char *const names[LIN_COUNT] = {
        "attn_q", "attn_k",   "attn_v",   "attn_output", "ffn_gate",
        "ffn_up", "ffn_down", "attn_qkv", "ffn_up"}; /* Phi-3: fused qkv; gate|up as ffn_up */
    snprintf(buf, n, "blk.%d.%s.%s", l, names[k], suffix);
}

/* The qtensor format a GGUF type is kept in, or -1 (dequantized to fp32). */
static int kept_format(uint32_t type) {
    switch (type) {
    case GGML_TYPE_F32:
        return QF_F32;
    case GGML_TYPE_F16:
        return QF_F16;
    case GGML_TYPE_BF16:
        return QF_BF16;
    case GGML_TYPE_Q8_0:
        return QF_Q8_0;
    case GGML_TYPE_Q4_0:
        return QF_Q4_0;
    case GGML_TYPE_Q4_K:
        return QF_Q4_K;
    case GGML_TYPE_Q6_K:
        return QF_Q6_K;
    default:
        return -1;
    }
}

/* The format tensor `name` is kept in as stored: its own, or fp32 for the types ftune
 * dequantizes at load (and for a missing tensor, which loading then reports). */
static qformat stored_format(const gguf_file *g, const char *name) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    int f = t ? kept_format(t->type) : -1;
    return f >= 0 ? (qformat)f : QF_F32;
}

/* Find name with shape ne = {n0, n1} (n1 = 1 for a vector). */
static ft_status find_shaped(const gguf_file *g, const char *name, int ndim, int64_t n0, int64_t n1,
                             const gguf_tensor **out, ft_error *err) {
    char w[4400];
    const gguf_tensor *t = gguf_find_tensor(g, name);
    snprintf(w, sizeof w, "%s: tensor \"%s\"", gguf_path(g), name);
    if (!t)
        return ft_error_set(err, FT_ERR_INPUT, w,
                            "the file's metadata promises this tensor; it may be truncated or "
                            "made for another architecture",
                            "tensor is missing");
    if (t->ndim != ndim || t->ne[0] != n0 || (ndim == 2 && t->ne[1] != n1)) {
        char got[128];
        if (t->ndim == 1)
            snprintf(got, sizeof got, "[%lld]", (long long)t->ne[0]);
        else
            snprintf(got, sizeof got, "[%lld, %lld%s]", (long long)t->ne[0], (long long)t->ne[1],
                     t->ndim > 2 ? ", ..." : "");
        if (ndim == 1)
            return ft_error_set(err, FT_ERR_INPUT, w,
                                "the file's metadata and tensors disagree; it may be damaged",
                                "expected shape [%lld], found %s", (long long)n0, got);
        return ft_error_set(err, FT_ERR_INPUT, w,
                            "the file's metadata and tensors disagree; it may be damaged",
                            "expected shape [%lld, %lld] ([in, out], ne0 first), found %s",
                            (long long)n0, (long long)n1, got);
    }
    *out = t;
    return FT_OK;
}

/* Row r of the model's matrix is row src_row(r) of the file's: the RoPE un-permutation for
 * Q/K of llama files (heads of D rows), the identity otherwise (D = 0). */
static int src_row(int r, int D) {
    if (!D) return r;
    int h = r / D, j = r % D, s = j / (D / 2), i = j % (D / 2);
    return h * D + 2 * i + s;
}

/* A vector (norm or bias) of n floats into dst, rows permuted as src_row(., D). */
static ft_status read_vec(const gguf_file *g, const char *name, int n, int D, float *dst,
                          ft_error *err) {
    const gguf_tensor *t;
    ft_status st = find_shaped(g, name, 1, n, 1, &t, err);
    if (st) return st;
    float *tmp = malloc(sizeof(float) * (size_t)n);
    if (!tmp) return ft_error_set(err, FT_ERR_RUNTIME, name, NULL, "out of memory");
    st = gguf_read_f32(g, t, 0, (uint64_t)n, tmp, err);
    for (int r = 0; !st && r < n; r++)
        dst[r] = tmp[src_row(r, D)];
    free(tmp);
    return st;
}

enum { RELEASE_BYTES = 8 << 20 };

/* Matrix name, [cols, rows] in the file, into out as format f: rows copied as stored when the
 * file's type is f, else dequantized to fp32 (and quantized to f when f is not fp32). */
static ft_status read_mat(const gguf_file *g, const char *name, int rows, int cols, int D,
                          qformat f, const model_quant *q, qtensor *out, ft_error *err) {
    const gguf_tensor *t;
    ft_status st = find_shaped(g, name, 2, cols, rows, &t, err);
    if (st) return st;
    memset(out, 0, sizeof *out);
    const ggml_type_traits *tt = ggml_type_info(t->type);
    if (kept_format(t->type) == (int)f) {
        size_t rb = (size_t)cols / (size_t)tt->block_values * tt->block_bytes;
        uint8_t *mem = malloc(rb * (size_t)rows);
        if (!mem) return ft_error_set(err, FT_ERR_RUNTIME, name, NULL, "out of memory");
        /* the source pages given back as they are copied (every RELEASE_BYTES of rows read in
         * order), so that the peak is one copy of the weights, not one plus the largest tensor */
        const uint8_t *src = t->data;
        size_t done = 0;
        for (int r = 0; r < rows; r++) {
            memcpy(mem + (size_t)r * rb, src + (size_t)src_row(r, D) * rb, rb);
            if (!D && (size_t)(r + 1) * rb - done >= RELEASE_BYTES)
                io_release_pages(src + done, (size_t)(r + 1) * rb - done), done = (r + 1) * rb;
        }
        io_release_pages(t->data, t->nbytes);
        out->fmt = f, out->rows = rows, out->cols = cols, out->data = mem, out->owned = mem;
        out->blocksize = qformat_info(f)->block_values;
        return FT_OK;
    }
    size_t n = (size_t)rows * cols;
    float *x = malloc(n * sizeof(float));
    if (!x) return ft_error_set(err, FT_ERR_RUNTIME, name, NULL, "out of memory");
    size_t done = 0, rb = t->nbytes / (size_t)rows; /* the file's bytes per row */
    for (int r = 0; r < rows && !st; r++) {
        st = gguf_read_f32(g, t, (uint64_t)src_row(r, D) * cols, (uint64_t)cols,
                           x + (size_t)r * cols, err);
        if (!D && (size_t)(r + 1) * rb - done >= RELEASE_BYTES)
            io_release_pages((const uint8_t *)t->data + done, (size_t)(r + 1) * rb - done),
                done = (r + 1) * rb;
    }
    io_release_pages(t->data, t->nbytes);
    if (st) {
        free(x);
        return st;
    }
    if (f == QF_F32) {
        out->fmt = QF_F32, out->rows = rows, out->cols = cols, out->blocksize = 1;
        out->data = x, out->owned = x;
        return FT_OK;
    }
    int four = f == QF_NF4 || f == QF_FP4;
    int bad = qtensor_quantize(out, f, x, rows, cols, q->blocksize, four && q->double_quant);
    free(x);
    if (bad)
        return ft_error_set(err, FT_ERR_RUNTIME, name, NULL,
                            "cannot store the tensor [%d, %d] as %s (out of memory or shape)", rows,
                            cols, qformat_info(f)->name);
    return FT_OK;
}

/* ---- storage -------------------------------------------------------------------------- */

static ft_status resolve(const gguf_file *g, const model_config *c, const model_load_options *opt,
                         model_quant *q, ft_error *err) {
    memset(q, 0, sizeof *q);
    const char *ds = opt && opt->dtype ? opt->dtype : "fp32";
    if (strcmp(ds, "fp32") && strcmp(ds, "bf16"))
        return ft_error_set(err, FT_ERR_INPUT, "option --dtype", "use fp32 or bf16",
                            "unknown compute type \"%s\"", ds);
    q->compute = strcmp(ds, "bf16") ? QC_F32 : QC_BF16;
    q->blocksize = opt && opt->blocksize ? opt->blocksize : 64;
    q->double_quant = opt ? opt->double_quant : 0;
    /* the stored types of the linear layers, and their bytes kept so */
    unsigned mix = 0;
    size_t lin_bytes = 0;
    char name[256];
    for (int l = 0; l < c->L; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out, col, bias;
            model_lin_layout(c, k, &in, &out, &col, &bias);
            if (!out) continue;
            gguf_lin_name(name, sizeof name, l, k, "weight");
            qformat f = stored_format(g, name);
            mix |= 1u << f;
            lin_bytes += qtensor_size_for(f, (size_t)out, (size_t)in, 1, 0);
        }
    const char *qs = opt && opt->quant ? opt->quant : q->compute == QC_BF16 ? "bf16" : NULL;
    if (qs) {
        int lin = qformat_parse(qs);
        if (lin < 0 || lin == QF_F16 || qformat_info(lin)->stored_only)
            return ft_error_set(err, FT_ERR_INPUT, "option --quant",
                                "use nf4, fp4, q8, bf16 or none", "unknown weight format \"%s\"",
                                qs);
        q->linear = lin;
    } else if (!(mix & (mix - 1))) { /* one format holds them all */
        q->linear = QF_F32;
        while (mix >> q->linear > 1)
            q->linear++;
    } else { /* each kept as stored; the scratch of the largest kind (a dequantized panel) */
        q->linear_mix = mix, q->linear_bytes = lin_bytes;
        unsigned deq = mix & ~(1u << QF_F32 | 1u << QF_BF16);
        q->linear = deq ? QF_Q8_0 : q->compute == QC_BF16 ? QF_F32 : QF_BF16;
        for (int f = 0; deq && f < QF_COUNT; f++)
            if (deq >> f & 1) q->linear = f;
    }
    if (q->double_quant && q->linear != QF_NF4 && q->linear != QF_FP4)
        return ft_error_set(err, FT_ERR_INPUT, "option --double-quant", "add --quant nf4 (or fp4)",
                            "double quantization applies to nf4 and fp4 weights");
    if (q->linear == QF_Q8_0 && (c->C % 32 || (c->H * c->D) % 32 || c->I % 32))
        return ft_error_set(err, FT_ERR_INPUT, "option --quant",
                            "use nf4, fp4 or bf16 for this model",
                            "q8 needs every layer's input size to be a multiple of 32");
    q->embed = stored_format(g, "token_embd.weight"); /* a row dequantized per lookup */
    const char *hs = opt ? opt->lm_head : NULL;
    if (!hs && q->compute == QC_BF16 && !(opt && opt->quant)) hs = "bf16";
    if (hs) {
        int head = qformat_parse(hs);
        if (!(head == QF_F32 || head == QF_BF16 || head == QF_Q8_0))
            return ft_error_set(err, FT_ERR_INPUT, "option --quant-lm-head", "use q8, bf16 or none",
                                "unknown or unsupported LM head format \"%s\"", hs);
        q->lm_head = head;
    } else {
        q->lm_head = stored_format(g, c->tie_embeddings ? "token_embd.weight" : "output.weight");
        /* --quant converts the weights for training: a head kept only for decoding goes fp32 */
        if (qs && qformat_info(q->lm_head)->stored_only) q->lm_head = QF_F32;
    }
    if (q->lm_head == QF_Q8_0 && c->C % 32)
        return ft_error_set(err, FT_ERR_INPUT, "option --quant-lm-head", "use bf16 or none",
                            "q8 needs hidden_size to be a multiple of 32 (it is %d)", c->C);
    q->head_is_embed = c->tie_embeddings && q->lm_head == q->embed;
    return FT_OK;
}

ft_status gguf_quant_resolve(const char *path, const model_config *c, const model_load_options *opt,
                             model_quant *q, ft_error *err) {
    gguf_file *g;
    ft_status st = gguf_open(path, &g, err);
    if (st) return st;
    st = resolve(g, c, opt, q, err);
    gguf_close(g);
    return st;
}

static ft_status load(const gguf_file *g, const model_load_options *opt, model *m, ft_error *err) {
    model_config *c = &m->cfg;
    model_quant *q = &m->quant;
    ft_status st = resolve(g, c, opt, q, err);
    if (st) return st;
    const char *path = gguf_path(g);
    m->QKV = (c->H + 2 * c->Hkv) * c->D;
    m->blocks = calloc((size_t)c->L, sizeof *m->blocks);
    m->n_weights = model_fp32_floats(c);
    m->weights = malloc(m->n_weights * sizeof(float));
    if (!m->blocks || !m->weights)
        return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    /* llama files hold Q and K in adjacent-pair RoPE order (see the top of the file) */
    int permuted = !strcmp(c->arch->model_type, "llama");
    float *cur = m->weights;
    char name[256];
    if ((st = read_vec(g, "output_norm.weight", c->C, 0, cur, err))) return st;
    m->norm_f = cur, cur += c->C;
    for (int l = 0; l < c->L; l++) {
        block_weights *bw = &m->blocks[l];
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if ((st = read_vec(g, name, c->C, 0, cur, err))) return st;
        bw->ln1 = cur, cur += c->C;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        if ((st = read_vec(g, name, c->C, 0, cur, err))) return st;
        bw->ln2 = cur, cur += c->C;
        if (c->arch->qk_norm) {
            snprintf(name, sizeof name, "blk.%d.attn_q_norm.weight", l);
            if ((st = read_vec(g, name, c->D, 0, cur, err))) return st;
            bw->q_norm = cur, cur += c->D;
            snprintf(name, sizeof name, "blk.%d.attn_k_norm.weight", l);
            if ((st = read_vec(g, name, c->D, 0, cur, err))) return st;
            bw->k_norm = cur, cur += c->D;
        }
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out, col, bias;
            model_lin_layout(c, k, &in, &out, &col, &bias);
            lin_weights *lw = &bw->lin[k];
            lw->in = in, lw->out = out, lw->col = col;
            if (!out) continue;
            int D = permuted && (k == LIN_Q || k == LIN_K) ? c->D : 0;
            if (bias) {
                gguf_lin_name(name, sizeof name, l, k, "bias");
                if ((st = read_vec(g, name, out, D, cur, err))) return st;
                lw->b = cur, cur += out;
            }
            gguf_lin_name(name, sizeof name, l, k, "weight");
            qformat f = q->linear_mix ? stored_format(g, name) : q->linear;
            if ((st = read_mat(g, name, out, in, D, f, q, &lw->W, err))) return st;
            lw->W.compute = q->compute;
        }
    }
    if ((st = read_mat(g, "token_embd.weight", c->V, c->C, 0, q->embed, q, &m->wte, err)))
        return st;
    if (q->head_is_embed) {
        m->lm_head = m->wte;
        m->lm_head.owned = NULL;
    } else if ((st = read_mat(g, c->tie_embeddings ? "token_embd.weight" : "output.weight", c->V,
                              c->C, 0, q->lm_head, q, &m->lm_head, err))) {
        return st;
    }
    m->lm_head.compute = q->compute;
    model_count_resident(m);
    return FT_OK;
}

ft_status gguf_model_load(const char *path, const model_load_options *opt, model *m,
                          ft_error *err) {
    memset(m, 0, sizeof *m);
    gguf_file *g;
    ft_status st = gguf_open(path, &g, err);
    if (st) return st;
    st = cfg_from(g, &m->cfg, err);
    if (!st) st = load(g, opt, m, err);
    gguf_close(g);
    if (st) model_free(m);
    return st;
}
