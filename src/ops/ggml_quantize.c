/*
 * ggml_quantize.c: see ggml_quantize.h. The algorithms are those of llama.cpp 0.3.36
 * (vendor/llama.cpp/ggml/src/ggml-quants.c: nearest_int, make_qx_quants, make_qkx2_quants,
 * quantize_row_{q4_K,q6_K,q8_0,q4_0,q5_0}_ref; src/llama-quant.cpp: tensor_allows_quantization,
 * llama_tensor_get_type_impl, tensor_type_fallback), written anew here. Each float expression
 * keeps the reference's operations and their order: byte identity depends on it.
 */
#include "ops/ggml_quantize.h"

#include "base/half.h"
#include "ops/ggml_quants.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ggml's build of this code has no FMA contraction (libggml-base has no vfmadd in these
 * functions); the Makefile builds C in ISO mode (-std=c11), where GCC does not contract. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__) && defined(__FP_FAST_FMAF) && !defined(__STRICT_ANSI__)
#error "ggml_quantize.c must be built without FMA contraction (-std=c11 or -ffp-contract=off)"
#endif

#define QK 256

static void store16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static float f16_round(uint16_t h) { return f16_to_f32(h); }

/* Round to the nearest integer, ties to even, by adding 1.5 * 2^23 and reading the mantissa:
 * ggml's nearest_int (valid for |x| < 2^22; outside, the same garbage as ggml). */
static int round_magic(float x) {
    float t = x + 12582912.f;
    int32_t b;
    memcpy(&b, &t, 4);
    return (b & 0x007fffff) - 0x00400000;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- Q6_K ------------------------------------------------------------------------------- */

/* 16 values -> signed levels in [-32, 31] (stored + 32 in q) and their scale: make_qx_quants
 * with nmax 32 and weights x^2 (rmse_type 1), trying 1/iscale then 18 nearby scales. */
static float qx_scale16(const float *x, int8_t *q) {
    const int nmax = 32, n = 16;
    float amax = 0, vmax = 0;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
            vmax = x[i];
        }
    }
    if (amax < 1e-15f) {
        memset(q, 0, (size_t)n);
        return 0.f;
    }
    float is = (float)-nmax / vmax;
    float slx = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(round_magic(is * x[i]), -nmax, nmax - 1);
        q[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        slx += w * x[i] * (float)l;
        sl2 += w * (float)l * (float)l;
    }
    float scale = sl2 ? slx / sl2 : 0.0f;
    float best = scale * slx;
    for (int step = -9; step <= 9; step++) {
        if (step == 0) continue;
        is = -((float)nmax + 0.1f * (float)step) / vmax;
        slx = sl2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(round_magic(is * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            slx += w * x[i] * (float)l;
            sl2 += w * (float)l * (float)l;
        }
        if (sl2 > 0 && slx * slx > best * sl2) {
            for (int i = 0; i < n; i++)
                q[i] = (int8_t)(nmax + clampi(round_magic(is * x[i]), -nmax, nmax - 1));
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    return scale;
}

static void q6_k_block(const float *x, uint8_t *out) {
    uint8_t *ql = out, *qh = out + 128;
    int8_t *sc = (int8_t *)(out + 192);
    int8_t L[QK];
    float scales[16];
    float max_scale = 0, max_abs = 0;
    for (int b = 0; b < 16; b++) {
        scales[b] = qx_scale16(x + 16 * b, L + 16 * b);
        float a = fabsf(scales[b]);
        if (a > max_abs) {
            max_abs = a;
            max_scale = scales[b];
        }
    }
    if (max_abs < 1e-15f) {
        memset(out, 0, 210);
        return;
    }
    float is = -128.f / max_scale;
    uint16_t dh = f32_to_f16(1 / is);
    store16(out + 208, dh);
    for (int b = 0; b < 16; b++) {
        int v = round_magic(is * scales[b]);
        sc[b] = (int8_t)(v < 127 ? v : 127);
    }
    for (int b = 0; b < 16; b++) {
        float d = f16_round(dh) * (float)sc[b];
        if (!d) continue; /* keeps the levels of qx_scale16 */
        for (int i = 0; i < 16; i++)
            L[16 * b + i] = (int8_t)(clampi(round_magic(x[16 * b + i] / d), -32, 31) + 32);
    }
    /* 128 values at a time: low nibbles of values l and l+64 share ql[l], of l+32 and l+96
     * ql[l+32]; the 2 high bits of l, l+32, l+64, l+96 fill qh[l] from the bottom. */
    for (int h = 0; h < QK; h += 128) {
        const int8_t *Lh = L + h;
        for (int l = 0; l < 32; l++) {
            uint8_t a = (uint8_t)Lh[l], b = (uint8_t)Lh[l + 32], c = (uint8_t)Lh[l + 64],
                    e = (uint8_t)Lh[l + 96];
            ql[l] = (uint8_t)((a & 15) | (c & 15) << 4);
            ql[l + 32] = (uint8_t)((b & 15) | (e & 15) << 4);
            qh[l] = (uint8_t)((a >> 4) | (b >> 4) << 2 | (c >> 4) << 4 | (e >> 4) << 6);
        }
        ql += 64;
        qh += 32;
    }
}

void ggml_quantize_q6_k(const float *src, void *dst, size_t n) {
    uint8_t *o = dst;
    long nb = (long)(n / QK);
    /* blocks are independent: any thread count writes the same bytes */
#pragma omp parallel for schedule(static) if (nb >= 64)
    for (long b = 0; b < nb; b++)
        q6_k_block(src + (size_t)b * QK, o + (size_t)b * 210);
}

/* ---- Q4_K ------------------------------------------------------------------------------- */

/* 32 values with weights w -> levels in [0, 15] and (scale, -min) minimizing the weighted
 * squared error: make_qkx2_quants(n 32, nmax 15, rmin -1, rdelta 0.1, nstep 20, no MAD). */
static float qkx2_scale32(const float *x, const float *w, uint8_t *q, float *neg_min) {
    const int n = 32, nmax = 15, nstep = 20;
    const float rmin = -1.f, rdelta = 0.1f;
    uint8_t aux[32];
    float lo = x[0], hi = x[0], sw = w[0], sx = sw * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
        sw += w[i];
        sx += w[i] * x[i];
    }
    if (lo > 0) lo = 0;
    if (hi == lo) {
        memset(q, 0, (size_t)n);
        *neg_min = -lo;
        return 0.f;
    }
    float is = (float)nmax / (hi - lo);
    float scale = 1 / is;
    float best = 0;
    for (int i = 0; i < n; i++) {
        q[i] = (uint8_t)clampi(round_magic(is * (x[i] - lo)), 0, nmax);
        float diff = scale * (float)q[i] + lo - x[i];
        diff = diff * diff;
        best += w[i] * diff;
    }
    for (int step = 0; step <= nstep; step++) {
        is = (rmin + rdelta * (float)step + (float)nmax) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(round_magic(is * (x[i] - lo)), 0, nmax);
            aux[i] = (uint8_t)l;
            sl += w[i] * (float)l;
            sl2 += w[i] * (float)l * (float)l;
            sxl += w[i] * (float)l * x[i];
        }
        float D = sw * sl2 - sl * sl;
        if (D > 0) {
            float s = (sw * sxl - sx * sl) / D;
            float m = (sl2 * sx - sl * sxl) / D;
            if (m > 0) {
                m = 0;
                s = sxl / sl2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                float diff = s * (float)aux[i] + m - x[i];
                diff = diff * diff;
                err += w[i] * diff;
            }
            if (err < best) {
                memcpy(q, aux, (size_t)n);
                best = err;
                scale = s;
                lo = m;
            }
        }
    }
    *neg_min = -lo;
    return scale;
}

static void q4_k_block(const float *x, uint8_t *out) {
    uint8_t *packed = out + 4, *qs = out + 16;
    uint8_t L[QK];
    float w[32], scales[8], mins[8];
    float max_scale = 0, max_min = 0;
    for (int s = 0; s < 8; s++) {
        const float *xs = x + 32 * s;
        float sum2 = 0;
        for (int i = 0; i < 32; i++)
            sum2 += xs[i] * xs[i];
        float av = sqrtf(sum2 / 32);
        for (int i = 0; i < 32; i++)
            w[i] = av + fabsf(xs[i]);
        scales[s] = qkx2_scale32(xs, w, L + 32 * s, &mins[s]);
        if (scales[s] > max_scale) max_scale = scales[s];
        if (mins[s] > max_min) max_min = mins[s];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int s = 0; s < 8; s++) {
        ls[s] = (uint8_t)round_magic(inv_scale * scales[s]);
        lm[s] = (uint8_t)round_magic(inv_min * mins[s]);
        if (ls[s] > 63) ls[s] = 63;
        if (lm[s] > 63) lm[s] = 63;
    }
    /* 12 bytes: sub-blocks 0-3 keep scale and min in the low 6 bits of bytes s and s+4;
     * sub-blocks 4-7 put their low 4 bits in byte s+4 (scale low, min high nibble) and their top
     * 2 bits in the top bits of bytes s-4 (scale) and s (min). */
    for (int s = 0; s < 4; s++) {
        packed[s] = (uint8_t)(ls[s] | (ls[s + 4] >> 4) << 6);
        packed[s + 4] = (uint8_t)(lm[s] | (lm[s + 4] >> 4) << 6);
        packed[s + 8] = (uint8_t)((ls[s + 4] & 15) | (lm[s + 4] & 15) << 4);
    }
    uint16_t dh = f32_to_f16(max_scale / 63.f), mh = f32_to_f16(max_min / 63.f);
    store16(out, dh);
    store16(out + 2, mh);
    for (int s = 0; s < 8; s++) {
        /* the 6-bit values are the ones just packed */
        float d = f16_round(dh) * (float)ls[s];
        if (!d) continue; /* keeps the levels of qkx2_scale32 */
        float dm = f16_round(mh) * (float)lm[s];
        for (int i = 0; i < 32; i++)
            L[32 * s + i] = (uint8_t)clampi(round_magic((x[32 * s + i] + dm) / d), 0, 15);
    }
    /* 64 values per 32 bytes: value l in the low nibble, value l+32 in the high one. */
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++)
            qs[32 * g + l] = (uint8_t)(L[64 * g + l] | L[64 * g + l + 32] << 4);
}

void ggml_quantize_q4_k(const float *src, void *dst, size_t n) {
    uint8_t *o = dst;
    long nb = (long)(n / QK);
    /* blocks are independent: any thread count writes the same bytes */
#pragma omp parallel for schedule(static) if (nb >= 64)
    for (long b = 0; b < nb; b++)
        q4_k_block(src + (size_t)b * QK, o + (size_t)b * 144);
}

/* ---- 32-value types --------------------------------------------------------------------- */

/* roundf (half away from zero) of a v with |v| < 2^31 without a libm call, branch-free: the
 * integer part, then one step away from zero when the rest (exact) is at least a half. */
static inline int32_t round_half_away(float v) {
    int32_t i = (int32_t)v;
    float f = v - (float)i;
    return i + (f >= 0.5f) - (f <= -0.5f);
}

void ggml_quantize_q8_0(const float *src, void *dst, size_t n) {
    uint8_t *o = dst;
    for (size_t b = 0; b < n / 32; b++, o += 34) {
        const float *x = src + b * 32;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) { /* fmaxf(amax, |x|): a NaN is passed over either way */
            float a = fabsf(x[i]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127;
        float id = d ? 1.0f / d : 0.0f;
        store16(o, f32_to_f16(d));
        if (amax <= 3.4e38f && id <= 3.4e38f) /* finite: |x * id| about 127 at most */
            for (int i = 0; i < 32; i++)
                o[2 + i] = (uint8_t)(int8_t)round_half_away(x[i] * id);
        else /* an infinite value (d = inf, id = 0: x * id may be NaN), or a d so small (a
              * subnormal) that 1 / d is infinite: roundf's results, whatever they are */
            for (int i = 0; i < 32; i++)
                o[2 + i] = (uint8_t)(int8_t)roundf(x[i] * id);
    }
}

/* Q4_0 (bits 4, offset 8) and Q5_0 (bits 5, offset 16): d = (the value of largest magnitude) /
 * -offset; level = min(2^bits - 1, (int8)(x / d + offset + 0.5)). */
static void q_0_block(const float *x, int offset, uint8_t *levels, uint16_t *dh) {
    float amax = 0.0f, vmax = 0.0f;
    for (int i = 0; i < 32; i++) {
        if (amax < fabsf(x[i])) {
            amax = fabsf(x[i]);
            vmax = x[i];
        }
    }
    float d = vmax / (float)-offset;
    float id = d ? 1.0f / d : 0.0f;
    *dh = f32_to_f16(d);
    int top = 2 * offset - 1;
    for (int i = 0; i < 32; i++) {
        int v = (int8_t)(x[i] * id + ((float)offset + 0.5f));
        levels[i] = (uint8_t)(v < top ? v : top);
    }
}

void ggml_quantize_q4_0(const float *src, void *dst, size_t n) {
    uint8_t *o = dst, lv[32];
    uint16_t dh;
    for (size_t b = 0; b < n / 32; b++, o += 18) {
        q_0_block(src + b * 32, 8, lv, &dh);
        store16(o, dh);
        for (int j = 0; j < 16; j++)
            o[2 + j] = (uint8_t)(lv[j] | lv[j + 16] << 4);
    }
}

void ggml_quantize_q5_0(const float *src, void *dst, size_t n) {
    uint8_t *o = dst, lv[32];
    uint16_t dh;
    for (size_t b = 0; b < n / 32; b++, o += 22) {
        q_0_block(src + b * 32, 16, lv, &dh);
        store16(o, dh);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            o[6 + j] = (uint8_t)((lv[j] & 15) | (lv[j + 16] & 15) << 4);
            qh |= (uint32_t)(lv[j] >> 4 & 1) << j | (uint32_t)(lv[j + 16] >> 4 & 1) << (j + 16);
        }
        for (int k = 0; k < 4; k++)
            o[2 + k] = (uint8_t)(qh >> (8 * k));
    }
}

void ggml_quantize_f16(const float *src, void *dst, size_t n) {
    uint8_t *o = dst;
    for (size_t i = 0; i < n; i++)
        store16(o + 2 * i, f32_to_f16(src[i]));
}

size_t ggml_quantize(uint32_t type, const float *src, void *dst, size_t n) {
    const ggml_type_traits *t = ggml_type_info(type);
    if (!t || n % (size_t)t->block_values) return 0;
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(dst, src, n * 4);
        break;
    case GGML_TYPE_F16:
        ggml_quantize_f16(src, dst, n);
        break;
    case GGML_TYPE_BF16:
        for (size_t i = 0; i < n; i++)
            store16((uint8_t *)dst + 2 * i, f32_to_bf16(src[i]));
        break;
    case GGML_TYPE_Q8_0:
        ggml_quantize_q8_0(src, dst, n);
        break;
    case GGML_TYPE_Q4_0:
        ggml_quantize_q4_0(src, dst, n);
        break;
    case GGML_TYPE_Q5_0:
        ggml_quantize_q5_0(src, dst, n);
        break;
    case GGML_TYPE_Q4_K:
        ggml_quantize_q4_k(src, dst, n);
        break;
    case GGML_TYPE_Q6_K:
        ggml_quantize_q6_k(src, dst, n);
        break;
    default:
        return 0;
    }
    return n / (size_t)t->block_values * t->block_bytes;
}

/* ---- ftypes and the per-tensor rule ----------------------------------------------------- */

static const struct {
    int ftype;
    const char *name;
    uint32_t type; /* the ftype's default tensor type */
} ftypes[] = {{GGML_FTYPE_Q4_0, "Q4_0", GGML_TYPE_Q4_0},
              {GGML_FTYPE_Q8_0, "Q8_0", GGML_TYPE_Q8_0},
              {GGML_FTYPE_Q4_K_M, "Q4_K_M", GGML_TYPE_Q4_K},
              {GGML_FTYPE_Q6_K, "Q6_K", GGML_TYPE_Q6_K}};
#define N_FTYPES (sizeof ftypes / sizeof ftypes[0])

int ggml_ftype_parse(const char *name) {
    for (size_t i = 0; i < N_FTYPES; i++)
        if (!strcasecmp(name, ftypes[i].name)) return ftypes[i].ftype;
    return -1;
}

const char *ggml_ftype_name(int ftype) {
    for (size_t i = 0; i < N_FTYPES; i++)
        if (ftypes[i].ftype == ftype) return ftypes[i].name;
    return NULL;
}

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* The kinds llama-quant.cpp's tensor_get_category tells apart (in its order of tests). */
enum kind { K_OUTPUT, K_TOKEN_EMBD, K_ATTN_V, K_FFN_DOWN, K_OTHER };
static enum kind kind_of(const char *name) {
    if (!strcmp(name, "output.weight")) return K_OUTPUT;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight"))
        return K_TOKEN_EMBD;
    if (has(name, "attn_qkv.weight") || has(name, "attn_kv_b.weight") || has(name, "attn_v.weight"))
        return K_ATTN_V;
    if (has(name, "attn_k.weight") || has(name, "attn_q.weight") ||
        has(name, "attn_output.weight") || has(name, "ffn_up") || has(name, "ffn_gate"))
        return K_OTHER;
    /* counted among the tensors llama.cpp quantizes: a bias is not one (its i_ffn_down counter
     * moves only for quantized tensors) */
    if (has(name, "ffn_down") && has(name, ".weight")) return K_FFN_DOWN;
    return K_OTHER;
}

/* llama.cpp's tensor order (llama_model_loader's weight_name_comparer): by the layer number of
 * "blk.N." (-1 for others), then by name. */
static int layer_of(const char *name) {
    int l = -1;
    if (sscanf(name, "blk.%d.", &l) != 1) l = -1;
    return l;
}
int ggml_quant_order_cmp(const char *a, const char *b) {
    int la = layer_of(a), lb = layer_of(b);
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(a, b);
}
static int before(const char *a, const char *b) { return ggml_quant_order_cmp(a, b) < 0; }

/* How many tensors of kind k come before `name` in llama.cpp's order. */
static int rank_of(const ggml_qplan *p, const char *name, enum kind k) {
    int r = 0;
    for (size_t i = 0; i < p->n_names; i++)
        if (kind_of(p->names[i]) == k && before(p->names[i], name)) r++;
    return r;
}

static int use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

int ggml_qplan_init(ggml_qplan *p, int ftype, const char *arch, int n_layer, int n_head,
                    int n_head_kv, const char *const *names, size_t n_names) {
    memset(p, 0, sizeof *p);
    if (!ggml_ftype_name(ftype)) return -1;
    p->ftype = ftype;
    p->n_layer = n_layer;
    p->names = names;
    p->n_names = n_names;
    p->tied = 1;
    for (size_t i = 0; i < n_names; i++) {
        enum kind k = kind_of(names[i]);
        if (k == K_ATTN_V) p->n_attn_v++;
        if (k == K_OUTPUT) p->tied = 0;
    }
    /* llama.cpp's model size LLM_TYPE_70B (src/models/llama.cpp, qwen2.cpp): 80 layers */
    p->is_70b = n_layer == 80 && arch &&
                ((!strcmp(arch, "llama") && n_head != n_head_kv) || !strcmp(arch, "qwen2"));
    return 0;
}

/* tensor_allows_quantization, for the names of the architectures ftune reads and the generic
 * exclusions. */
static int quantizable(const char *name, int n_dims) {
    if (n_dims < 2) return 0;
    size_t len = strlen(name);
    if (len < 6 || strcmp(name + len - 6, "weight")) return 0;
    static const char *const never[] = {"_norm.weight",
                                        "ffn_gate_inp.weight",
                                        "ffn_gate_tid2eid.weight",
                                        "altup",
                                        "laurel",
                                        "per_layer_model_proj",
                                        "ssm_conv1d",
                                        "shortconv.conv.weight",
                                        "indexer.k_proj.weight",
                                        "indexer.q_proj.weight",
                                        "time_mix_first.weight",
                                        "time_mix_w0.weight",
                                        "time_mix_w1.weight",
                                        "time_mix_w2.weight",
                                        "time_mix_v0.weight",
                                        "time_mix_v1.weight",
                                        "time_mix_v2.weight",
                                        "time_mix_a0.weight",
                                        "time_mix_a1.weight",
                                        "time_mix_a2.weight",
                                        "time_mix_g1.weight",
                                        "time_mix_g2.weight",
                                        "time_mix_decay_w1.weight",
                                        "time_mix_decay_w2.weight",
                                        "time_mix_lerp_fused.weight",
                                        "attn_rel_b.weight",
                                        ".position_embd",
                                        "sam.pos_embd",
                                        "sam.neck.",
                                        "sam.net_",
                                        ".rel_pos",
                                        ".patch_embd",
                                        ".patch_merger",
                                        "a.rvq.codebook",
                                        "mm.a.code_embd"};
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (has(name, never[i])) return 0;
    if (!strcmp(name, "position_embd.weight") || !strcmp(name, "token_types.weight")) return 0;
    return 1;
}

/* tensor_type_fallback: a type whose block does not divide the row. */
static uint32_t fallback(uint32_t type, int64_t ncols) {
    const ggml_type_traits *t = ggml_type_info(type);
    if (ncols % t->block_values == 0) return type;
    uint32_t r = type;
    if (type == GGML_TYPE_Q4_K)
        r = GGML_TYPE_Q5_0;
    else if (type == GGML_TYPE_Q5_K)
        r = GGML_TYPE_Q5_1;
    else if (type == GGML_TYPE_Q6_K)
        r = GGML_TYPE_Q8_0;
    if (ncols % ggml_type_info(r)->block_values) r = GGML_TYPE_F16;
    return r;
}

uint32_t ggml_qplan_type(const ggml_qplan *p, const char *name, int n_dims, const int64_t *ne) {
    int nd = 0; /* ggml_n_dims: trailing dims of 1 do not count */
    for (int i = 0; i < n_dims; i++)
        if (ne[i] != 1) nd = i + 1;
    if (nd < 1) nd = 1;
    if (!quantizable(name, nd)) return GGML_TYPE_F32;
    uint32_t def = GGML_TYPE_Q4_0;
    for (size_t i = 0; i < N_FTYPES; i++)
        if (ftypes[i].ftype == p->ftype) def = ftypes[i].type;
    uint32_t t = def;
    enum kind k = kind_of(name);
    if (k == K_OUTPUT || (p->tied && k == K_TOKEN_EMBD)) {
        if (ne[0] % ggml_type_info(def)->block_values)
            t = GGML_TYPE_Q8_0;
        else if (def != GGML_TYPE_Q8_0)
            t = GGML_TYPE_Q6_K;
    } else if (p->ftype == GGML_FTYPE_Q4_K_M && k == K_ATTN_V) {
        if (use_more_bits(rank_of(p, name, K_ATTN_V), p->n_attn_v))
            t = GGML_TYPE_Q6_K;
        else if (p->is_70b)
            t = GGML_TYPE_Q5_K;
    } else if (p->ftype == GGML_FTYPE_Q4_K_M && k == K_FFN_DOWN) {
        if (use_more_bits(rank_of(p, name, K_FFN_DOWN), p->n_layer)) t = GGML_TYPE_Q6_K;
    }
    return fallback(t, ne[0]);
}

int ggml_quantize_row(uint32_t type, const float *src, void *dst, size_t n) {
    return ggml_quantize(type, src, dst, n) || !n ? 0 : -1;
}
