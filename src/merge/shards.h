/*
 * shards.h: a model's tensors laid out in files as transformers' save_pretrained lays them out
 * (transformers 5.23 over huggingface_hub's split_state_dict_into_shards_factory):
 *
 * - the tensors in the order save_pretrained hands them over for a model that from_pretrained
 *   loaded: sorted by transformers' dot_natural_key (shards.c), so "lm_head.weight" comes first
 *   and "model.layers.10" after "model.layers.9";
 * - walked in that order into shards of at most max_shard_size bytes (decimal units: "5GB" is
 *   5 * 10^9): a tensor that would tip the open shard over closes it first, and a tensor larger
 *   than the limit goes alone into a shard of its own, placed before the open one;
 * - one shard: model.safetensors and no index. Several: model-00001-of-0000N.safetensors ... and
 *   model.safetensors.index.json = json.dumps({"metadata": {"total_parameters": P,
 *   "total_size": S}, "weight_map": {name: file}}, indent=2, sort_keys=True) + "\n", S being the
 *   sum of the tensors' bytes and P of their element counts.
 */
#ifndef FT_MERGE_SHARDS_H
#define FT_MERGE_SHARDS_H

#include "base/half.h"
#include "ftune.h"
#include "io/safetensors.h"

#include <stdint.h>

typedef struct shard_tensor {
    const char *name;
    st_dtype dtype; /* as written */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t nbytes;
    int src;   /* the caller's index (the input tensor) */
    int shard; /* set by shard_split: 0-based shard index */
} shard_tensor;

/* strcmp-style comparison of two tensor names in that order. */
int shard_name_cmp(const char *a, const char *b);
/* Sort t into that order. */
void shard_sort(shard_tensor *t, int n);
/* "5GB", "500MB", "1.5GB", "100KB", "2TB" (huggingface_hub's parse_size_to_int) or a plain number
 * of bytes. Errors name option --max-shard-size. */
ft_status shard_parse_size(const char *text, uint64_t *out, ft_error *err);
/* Assign t[i].shard (t in that order); returns the number of shards. */
int shard_split(shard_tensor *t, int n, uint64_t max_bytes);
/* The file name of shard i of count: "model.safetensors" when count is 1. */
void shard_file_name(char *buf, size_t size, int i, int count);
/* The index JSON text (malloc'd), for count > 1. */
char *shard_index_json(const shard_tensor *t, int n, int count);

/* Whether d is a float dtype a merge reads and writes (F32, BF16, F16). */
static inline int shard_is_float(st_dtype d) { return d == ST_F32 || d == ST_BF16 || d == ST_F16; }
/* x rounded to dtype d and back (round to nearest even, base/half.h). */
static inline float shard_round_to(st_dtype d, float x) {
    if (d == ST_BF16) return bf16_to_f32(f32_to_bf16(x));
    if (d == ST_F16) return f16_to_f32(f32_to_f16(x));
    return x;
}
/* x into element i of buf, a tensor of dtype d. */
static inline void shard_store(st_dtype d, void *buf, size_t i, float x) {
    if (d == ST_BF16)
        ((uint16_t *)buf)[i] = f32_to_bf16(x);
    else if (d == ST_F16)
        ((uint16_t *)buf)[i] = f32_to_f16(x);
    else
        ((float *)buf)[i] = x;
}
/* The bytes of t unchanged into w, 4 MB at a time, each piece's source pages given back after
 * (so RSS does not grow with the tensor). */
ft_status shard_copy_tensor(const st_tensor *t, st_writer *w, ft_error *err);
/* Shard s of plan's n tensors opened at path: each of its tensors declared in plan order and
 * the file begun, into *out (NULL when out of memory), for the caller to fill and then finish
 * or free (st_writer_free removes the temporary file). */
ft_status shard_writer_open(const shard_tensor *plan, int n, int s, const char *path,
                            st_writer **out, ft_error *err);

#endif
