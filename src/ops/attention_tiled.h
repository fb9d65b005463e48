/*
 * attention_tiled.h: the blocked AVX2+FMA attention (attention_tiled_avx2.c), which
 * attention_forward/backward (attention.c) run where attention_avx2_usable() holds, and the
 * switch that picks another version for comparison (FTUNE_ATTN, read once).
 */
#ifndef FT_OPS_ATTENTION_TILED_H
#define FT_OPS_ATTENTION_TILED_H

/* Same contract as attention_forward/backward in ops.h (dq, dk, dv overwritten); callable only
 * where attention_avx2_usable(H, Hkv, D). */
void attention_forward_tiled(float *out, float *lse, const float *q, const float *k, const float *v,
                             const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                             int window, float scale);
void attention_backward_tiled(float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse,
                              const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                              int window, float scale);

/* The backward splits each (batch row, kv head) into this many runs of query blocks, each with
 * its own dK/dV accumulator, summed at the end; 0 (default) picks the fewest that keep the
 * threads evenly busy. Tests force 2 and 3 to cover the sum. */
extern int attention_tiled_parts;

/* Which version attention_forward/backward run, from the environment variable FTUNE_ATTN:
 * "ref" (portable), "avx2" (the first AVX2 version, attention_avx2.c), anything else or unset:
 * the tiled one. Versions the CPU or shape cannot run fall back to the portable code. */
enum { ATT_IMPL_TILED = 0, ATT_IMPL_AVX2 = 1, ATT_IMPL_REF = 2 };
int attention_impl(void);

#endif
