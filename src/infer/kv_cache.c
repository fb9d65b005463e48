/*
 * kv_cache.c: the KV cache of a generation and attention over it (kv_cache.h).
 *
 * Attention of one query row (position P, head h) over the keys lo .. P, with lo = 0, or
 * P - window + 1 under a sliding window: scores s_j = scale q.k_j, then the softmax in two
 * passes (the maximum, then exp(s_j - max) and their sum) and out = sum_j p_j v_j / sum. This is
 * the decode path (one query row per head) and the path of a prompt that continues a cached
 * prefix (chat); a prompt that starts an empty fp32 cache goes through attention_forward, the
 * training kernel, instead (forward.c). Work items are (query row, head) pairs, spread over the
 * OpenMP threads, each with its own slice of the caller's scratch.
 */
#include "infer/kv_cache.h"
#include "base/half.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

int kv_format_parse(const char *name) {
    if (!name || !strcmp(name, "fp32") || !strcmp(name, "f32")) return KV_F32;
    if (!strcmp(name, "bf16")) return KV_BF16;
    if (!strcmp(name, "q8")) return KV_Q8;
    return -1;
}

const char *kv_format_name(kv_format f) {
    return f == KV_BF16 ? "bf16" : f == KV_Q8 ? "q8" : "fp32";
}

static size_t head_bytes_of(kv_format f, int D) {
    return f == KV_F32 ? (size_t)D * 4 : f == KV_BF16 ? (size_t)D * 2 : (size_t)D + 4;
}

size_t kv_cache_bytes(kv_format f, int L, int Hkv, int D, int maxT) {
    return 2 * (size_t)L * (size_t)maxT * (size_t)Hkv * head_bytes_of(f, D);
}

ft_status kv_cache_alloc(kv_cache *c, kv_format f, int L, int Hkv, int D, int maxT, ft_error *err) {
    memset(c, 0, sizeof *c);
    c->fmt = f, c->L = L, c->Hkv = Hkv, c->D = D, c->maxT = maxT;
    c->head_bytes = head_bytes_of(f, D);
    c->row_bytes = (size_t)Hkv * c->head_bytes;
    size_t half = (size_t)L * (size_t)maxT * c->row_bytes;
    c->k = malloc(half ? half : 1);
    c->v = malloc(half ? half : 1);
    if (!c->k || !c->v) {
        kv_cache_free(c);
        return ft_error_set(
            err, FT_ERR_RUNTIME, "KV cache", "use --kv-cache q8 or bf16, or a smaller --ctx",
            "cannot allocate %.1f MB for %d positions", 2.0 * half / 1048576.0, maxT);
    }
    return FT_OK;
}

void kv_cache_free(kv_cache *c) {
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

static uint8_t *row_at(uint8_t *base, const kv_cache *c, int l, int t) {
    return base + ((size_t)l * c->maxT + (size_t)t) * c->row_bytes;
}

/* One head of D values into its stored form. */
static void put_head(kv_format f, uint8_t *dst, const float *x, int D) {
    if (f == KV_F32) {
        memcpy(dst, x, (size_t)D * 4);
    } else if (f == KV_BF16) {
        uint16_t *h = (uint16_t *)(void *)dst;
        for (int i = 0; i < D; i++)
            h[i] = f32_to_bf16(x[i]);
    } else {
        float amax = 0.0f;
        for (int i = 0; i < D; i++)
            amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        memcpy(dst, &d, 4);
        int8_t *q = (int8_t *)(dst + 4);
        for (int i = 0; i < D; i++)
            q[i] = (int8_t)roundf(x[i] * id);
    }
}

static void get_head(kv_format f, const uint8_t *src, float *out, int D) {
    if (f == KV_F32) {
        memcpy(out, src, (size_t)D * 4);
    } else if (f == KV_BF16) {
        const uint16_t *h = (const uint16_t *)(const void *)src;
        for (int i = 0; i < D; i++)
            out[i] = bf16_to_f32(h[i]);
    } else {
        float d;
        memcpy(&d, src, 4);
        const int8_t *q = (const int8_t *)(src + 4);
        for (int i = 0; i < D; i++)
            out[i] = d * (float)q[i];
    }
}

void kv_cache_store(kv_cache *c, int l, int t0, int n, const float *k, const float *v) {
    const int Hkv = c->Hkv, D = c->D;
    for (int i = 0; i < n; i++)
        for (int g = 0; g < Hkv; g++) {
            size_t src = ((size_t)i * Hkv + g) * D, off = (size_t)g * c->head_bytes;
            put_head(c->fmt, row_at(c->k, c, l, t0 + i) + off, k + src, D);
            put_head(c->fmt, row_at(c->v, c, l, t0 + i) + off, v + src, D);
        }
}

const float *kv_cache_k_f32(const kv_cache *c, int l) {
    return c->fmt == KV_F32 ? (const float *)(void *)row_at(c->k, c, l, 0) : NULL;
}

const float *kv_cache_v_f32(const kv_cache *c, int l) {
    return c->fmt == KV_F32 ? (const float *)(void *)row_at(c->v, c, l, 0) : NULL;
}

void kv_cache_read(const kv_cache *c, int which, int l, int t, int g, float *out) {
    get_head(c->fmt, row_at(which ? c->v : c->k, c, l, t) + (size_t)g * c->head_bytes, out, c->D);
}

size_t kv_attention_scratch_floats(const kv_cache *c) {
    return (((size_t)c->maxT + 2 * (size_t)c->D) + 15) & ~(size_t)15;
}

/* Head g of position t of layer l: the stored fp32 values, or widened into buf. */
static const float *head_f32(const kv_cache *c, int which, int l, int t, int g, float *buf) {
    const uint8_t *p = row_at(which ? c->v : c->k, c, l, t) + (size_t)g * c->head_bytes;
    if (c->fmt == KV_F32) return (const float *)(const void *)p;
    get_head(c->fmt, p, buf, c->D);
    return buf;
}

void kv_attention(const kv_cache *c, int l, float *out, const float *q, int n, int p0, int H,
                  int window, float scale, float *scratch, int nthreads) {
    const int D = c->D, G = H / c->Hkv;
    const size_t per = kv_attention_scratch_floats(c);
    const long items = (long)n * H;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (long it = 0; it < items; it++) {
        int i = (int)(it / H), h = (int)(it % H), g = h / G, P = p0 + i;
        int lo = window > 0 && P - window + 1 > 0 ? P - window + 1 : 0;
        float *s = scratch + (size_t)omp_get_thread_num() * per, *kb = s + c->maxT, *vb = kb + D;
        const float *qi = q + ((size_t)i * H + h) * D;
        float *oi = out + ((size_t)i * H + h) * D;
        float mx = -INFINITY;
        for (int j = lo; j <= P; j++) {
            const float *kj = head_f32(c, 0, l, j, g, kb);
            float d = 0.0f;
            /* lanes of partial sums: a serial sum of D products waits on each add's latency
             * (a third of a SmolLM decode step at 600 positions) */
#pragma omp simd reduction(+ : d)
            for (int e = 0; e < D; e++)
                d += qi[e] * kj[e];
            s[j] = scale * d;
            mx = s[j] > mx ? s[j] : mx;
        }
        float sum = 0.0f;
        memset(oi, 0, (size_t)D * sizeof(float));
        for (int j = lo; j <= P; j++) {
            float p = expf(s[j] - mx);
            sum += p;
            const float *vj = head_f32(c, 1, l, j, g, vb);
            /* lanes over e: each oi[e] still sums over j in order (the same values), but -O2
             * left this loop scalar: 40% of a SmolLM Q8_0 decode step at 600 positions */
#pragma omp simd
            for (int e = 0; e < D; e++)
                oi[e] += p * vj[e];
        }
        float inv = 1.0f / sum;
#pragma omp simd
        for (int e = 0; e < D; e++)
            oi[e] *= inv;
    }
}
