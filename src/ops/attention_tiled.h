/*
 * attention_tiled.h: the blocked flash attention (attention_tiled_body.h), built for AVX2+FMA
 * (attention_tiled_avx2.c) and AVX-512 (attention_tiled_avx512.c): rows of attention.c's kernel
 * table, run at those ISA levels and up where the shape allows. Both give the same bits.
 */
#ifndef FT_OPS_ATTENTION_TILED_H
#define FT_OPS_ATTENTION_TILED_H

#include <stddef.h>

/* Same contract as attention_forward/backward in ops.h (dq, dk, dv overwritten); callable only
 * where attention_avx2_usable(H, Hkv, D) (and, for _avx512, cpu_native_level() >= CPU_AVX512). They
 * work in ws (wsb bytes, attention_tiled_ws_bytes) and allocate nothing. Return 0, or -1 (nothing
 * written) when ws is too small: the dispatcher then runs the portable code. */
int attention_forward_tiled_avx2(float *out, float *lse, const float *q, const float *k,
                                 const float *v, const int *seg, const int *len, int B, int T,
                                 int H, int Hkv, int D, int window, float scale, void *ws,
                                 size_t wsb);
int attention_backward_tiled_avx2(float *dq, float *dk, float *dv, const float *dout,
                                  const float *q, const float *k, const float *v, const float *out,
                                  const float *lse, const int *seg, const int *len, int B, int T,
                                  int H, int Hkv, int D, int window, float scale, void *ws,
                                  size_t wsb);
/* Bytes of workspace that forward and backward need for any B <= maxB, T <= maxT, with the
 * current number of OpenMP threads (and attention_tiled_parts). */
size_t attention_tiled_ws_bytes_avx2(int maxB, int maxT, int H, int Hkv, int D);

/* The same at AVX-512 (one workspace size serves both) */
int attention_forward_tiled_avx512(float *out, float *lse, const float *q, const float *k,
                                   const float *v, const int *seg, const int *len, int B, int T,
                                   int H, int Hkv, int D, int window, float scale, void *ws,
                                   size_t wsb);
int attention_backward_tiled_avx512(float *dq, float *dk, float *dv, const float *dout,
                                    const float *q, const float *k, const float *v,
                                    const float *out, const float *lse, const int *seg,
                                    const int *len, int B, int T, int H, int Hkv, int D, int window,
                                    float scale, void *ws, size_t wsb);
size_t attention_tiled_ws_bytes_avx512(int maxB, int maxT, int H, int Hkv, int D);

/* The attention of --dtype bf16 (attention_tiled_body.h, TL_BF16; built with the AVX-512 file):
 * the same contract and blocks, the products by gemm_bf16 on bf16 roundings of Q, K, V, dO and
 * of P and dS, fp32 sums and softmax. Callable where the CPU has AVX-512 (attention.c runs it at
 * ISA level amx, where gemm_bf16 uses the tiles). */
int attention_forward_bf16(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                           int window, float scale, void *ws, size_t wsb);
int attention_backward_bf16(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *out, const float *lse,
                            const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                            int window, float scale, void *ws, size_t wsb);
size_t attention_bf16_ws_bytes(int maxB, int maxT, int H, int Hkv, int D);

/* The backward splits each (batch row, kv head) into this many runs of query blocks, each with
 * its own dK/dV accumulator, summed at the end; 0 (default) picks the fewest that keep the
 * threads evenly busy. Tests force 2 and 3 to cover the sum. */
extern int attention_tiled_parts;

#endif
