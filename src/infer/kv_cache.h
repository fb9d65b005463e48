/*
 * kv_cache.h: the keys and values of every layer for the positions a generation has seen, and
 * attention of new queries over them.
 *
 * Layout: per layer, maxT rows (positions), each row the Hkv heads of D values of a key (and,
 * apart, of a value), as attention_forward lays out k and v with B = 1. Formats:
 *   KV_F32   4 bytes a value (the reference: the same numbers the training forward uses).
 *   KV_BF16  2 bytes a value, rounded to nearest even (base/half.h).
 *   KV_Q8    per (position, head): an fp32 scale d = max|x| / 127 and D int8 codes
 *            q = round(x / d) (GGUF's Q8_0 rule over a whole head instead of 32 values):
 *            D + 4 bytes a head, about a quarter of fp32.
 * Attention reads a row in its format and widens it to fp32 (one head of D values at a time);
 * nothing of the cache is ever converted whole.
 */
#ifndef FT_INFER_KV_CACHE_H
#define FT_INFER_KV_CACHE_H

#include "ftune.h"

#include <stddef.h>
#include <stdint.h>

typedef enum kv_format { KV_F32, KV_BF16, KV_Q8 } kv_format;

typedef struct kv_cache {
    kv_format fmt;
    int L, Hkv, D, maxT;
    int len;           /* positions 0 .. len-1 hold keys and values */
    size_t head_bytes; /* bytes of one head of one position */
    size_t row_bytes;  /* Hkv * head_bytes */
    uint8_t *k, *v;    /* (L, maxT, row_bytes) each */
} kv_cache;

/* "fp32" (or "f32"), "bf16", "q8" -> the format, or -1. */
int kv_format_parse(const char *name);
const char *kv_format_name(kv_format f);
/* Bytes the cache of this shape takes (keys and values, all layers). */
size_t kv_cache_bytes(kv_format f, int L, int Hkv, int D, int maxT);

ft_status kv_cache_alloc(kv_cache *c, kv_format f, int L, int Hkv, int D, int maxT, ft_error *err);
void kv_cache_free(kv_cache *c);

/* Store k and v (n, Hkv, D) of layer l at positions t0 .. t0+n-1 (< maxT). */
void kv_cache_store(kv_cache *c, int l, int t0, int n, const float *k, const float *v);
/* Keys (maxT, Hkv, D) of layer l as fp32 when the cache is KV_F32 (else NULL); values alike. */
const float *kv_cache_k_f32(const kv_cache *c, int l);
const float *kv_cache_v_f32(const kv_cache *c, int l);
/* Head g of position t of layer l (keys: which 0, values: 1) widened to fp32 (D values). */
void kv_cache_read(const kv_cache *c, int which, int l, int t, int g, float *out);

/* Scratch floats kv_attention needs for one thread (the scores of one query over maxT keys and
 * two widened rows). */
size_t kv_attention_scratch_floats(const kv_cache *c);
/* out (n, H, D) = attention of the queries q (n, H, D) at positions p0 .. p0+n-1 over the
 * cached keys and values of layer l: query i sees the keys j with j <= p0 + i and, when
 * window > 0, p0 + i - j < window (transformers' causal and sliding-window masks). Query head h
 * reads kv head h / (H / Hkv). scratch holds nthreads * kv_attention_scratch_floats floats,
 * for up to nthreads OpenMP threads. */
void kv_attention(const kv_cache *c, int l, float *out, const float *q, int n, int p0, int H,
                  int window, float scale, float *scratch, int nthreads);

#endif
