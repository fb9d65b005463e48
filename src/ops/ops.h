/*
 * ops.h: the operations of a transformer training step, forward and backward, in fp32.
 *
 * Conventions (as in llm.c):
 *  - All tensors are fp32, row-major and contiguous unless a leading dimension (ld*) is given.
 *  - Shapes use the model's letters: N tokens (= B*T), C hidden, H query heads, Hkv key/value
 *    heads, D head dim, I intermediate (MLP) size, V vocabulary.
 *  - *_backward functions ACCUMULATE (+=) into every gradient they are given, input gradients and
 *    parameter gradients alike, unless the comment says "overwrites". A NULL parameter gradient
 *    means the parameter is frozen and its gradient is not computed.
 *  - Each op has one portable C implementation here (the reference); SIMD versions, where they
 *    exist, are selected at start-up and tested against it.
 */
#ifndef FT_OPS_H
#define FT_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- gemm.c: linear layers over BLAS --------------------------------------------------- */
/* out (N,O) = beta*out + inp (N,I) . W(O,I)^T [+ bias (O)]; ldo/ldi are row strides (0 = O / I) */
void matmul_forward(float *out, int ldo, const float *inp, int ldi, const float *W,
                    const float *bias, int N, int I, int O, float beta);
/* dinp (N,I) += dout (N,O) . W (O,I) */
void matmul_backward_input(float *dinp, int ldi, const float *dout, int ldo, const float *W, int N,
                           int I, int O);
/* dW (O,I) += dout^T (O,N) . inp (N,I);  dbias (O) += sum over rows of dout (either may be NULL) */
void matmul_backward_weight(float *dW, float *dbias, const float *dout, int ldo, const float *inp,
                            int ldi, int N, int I, int O);
/* C (M,N) = alpha * op(A) . op(B) + beta * C, row-major; the general form the above use. */
void gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);

/* ---- rmsnorm.c ---------------------------------------------------------------------------
 * out = inp * rstd * w, rstd = 1 / sqrt(mean(inp^2) + eps), per row of C values.
 * inp, out (N,C); w (C); rstd (N) is saved for backward. */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                     float eps);
/* dinp (N,C) +=; dw (C) += (NULL if frozen) */
void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                      const float *rstd, int N, int C);

/* ---- rope.c ------------------------------------------------------------------------------
 * Rotary position embedding, Hugging Face convention: within each head the first rot_dim
 * values are rotated as pairs (x[i], x[i + rot_dim/2]), i < rot_dim/2, by angle
 * pos * inv_freq[i]; values past rot_dim pass through. cos and sin are multiplied by
 * attn_scale (transformers' attention_scaling, 1 for most rope types).
 * x (N, H, D) in place; pos (N) is each token's position; inv_freq (rot_dim/2). */
void rope_forward(float *x, const int *pos, const float *inv_freq, int N, int H, int D, int rot_dim,
                  float attn_scale);
/* dx (N,H,D) in place: the gradient with respect to the input of rope_forward */
void rope_backward(float *dx, const int *pos, const float *inv_freq, int N, int H, int D,
                   int rot_dim, float attn_scale);
/* cs, sn (P, rot_dim/2): rope_forward's cos and sin (times attn_scale) for positions 0..P-1,
 * which attn_input_forward/backward look up by position */
void rope_table(float *cs, float *sn, int P, const float *inv_freq, int rot_dim, float attn_scale);

/* ---- attn_input.c ------------------------------------------------------------------------
 * The split of the fused projection output into attention's inputs, with qk-norm and RoPE, in
 * one pass per token: the same as copying the parts of each row of qkv (N, ld) into q (N,H,D),
 * k and v (N,Hkv,D), then (q_norm != NULL, Qwen3) rmsnorm_forward over the N*H heads of q with
 * q_norm (D) into q and rstd into qn_rstd (N,H), and the same for k with k_norm and kn_rstd
 * (N,Hkv), then rope_forward on q and on k, with the
 * cos/sin of position pos[n] taken from rope_cos, rope_sin (P, rot_dim/2), which rope_table
 * fills for positions 0 .. P-1 (every pos[n] < P): the same values rope_forward computes.
 * Row n of qkv: q (H*D) | k (Hkv*D) | v (Hkv*D) at qkv + n*ld. Without q_norm, k_norm must be
 * NULL too and qn_rstd, kn_rstd are not touched (may be NULL). */
void attn_input_forward(float *q, float *k, float *v, float *qn_rstd, float *kn_rstd,
                        const float *qkv, int ld, const float *q_norm, const float *k_norm,
                        float eps, const int *pos, const float *rope_cos, const float *rope_sin,
                        int N, int H, int Hkv, int D, int rot_dim);
/* dqkv (N, ld; the q|k|v columns of each row): OVERWRITTEN with the gradient wrt qkv of
 * attn_input_forward, given dq, dk, dv (not modified): rope_backward of dq and dk, then (q_norm)
 * rmsnorm_backward of each head, whose inputs are read from the forward's qkv (N, ld; may be
 * NULL without q_norm) and rstd from qn_rstd, kn_rstd. */
void attn_input_backward(float *dqkv, const float *dq, const float *dk, const float *dv,
                         const float *qkv, int ld, const float *qn_rstd, const float *kn_rstd,
                         const float *q_norm, const float *k_norm, const int *pos,
                         const float *rope_cos, const float *rope_sin, int N, int H, int Hkv, int D,
                         int rot_dim);

/* ---- attention.c -------------------------------------------------------------------------
 * Causal grouped-query attention, flash style: tiles of keys with an online softmax, never a
 * T x T matrix; backward recomputes the probabilities from lse.
 * q (B,T,H,D), k and v (B,T,Hkv,D), out (B,T,H,D); query head h uses kv head h / (H/Hkv).
 * lse (B,H,T): log-sum-exp of each query's scaled scores, saved for backward.
 * Query i may attend key j iff j <= i, and (window > 0) i - j < window (transformers'
 * sliding_window), and (seg != NULL) seg[b*T+i] == seg[b*T+j] (packed documents).
 * len (B) may be NULL; otherwise positions t >= len[b] are padding: they attend to nothing,
 * are attended by nothing, and get out = 0 and zero gradients, and cost no work.
 * scale multiplies q.k (usually 1/sqrt(D)).
 * bf16 nonzero (--dtype bf16): where attention_bf16_active, the products run in bf16 (Q, K, V,
 * dO, P and dS rounded to bf16, sums and softmax in fp32: attention_tiled.h), as PyTorch's bf16
 * autocast runs them; elsewhere it changes nothing.
 * ws (wsb bytes): the workspace of the fast kernel, attention_workspace_bytes for the largest
 * B and T the caller will pass (and the same bf16); with less (or NULL) the portable code runs,
 * which needs none. Nothing is allocated. */
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                       int window, float scale, int bf16, void *ws, size_t wsb);
/* dq, dk, dv: OVERWRITTEN (not accumulated). */
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *out, const float *lse,
                        const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                        int window, float scale, int bf16, void *ws, size_t wsb);
/* Bytes of workspace attention_forward / backward use for any B <= maxB, T <= maxT with the
 * kernel the ISA level picks (and bf16) and the current number of OpenMP threads (0: the
 * portable code). */
size_t attention_workspace_bytes(int maxB, int maxT, int H, int Hkv, int D, int bf16);
/* 1 where attention with bf16 set runs the bf16 products: ISA level amx (gemm_bf16 on tiles)
 * and a shape the tiled kernels take. */
int attention_bf16_active(int H, int Hkv, int D);

/* ---- swiglu.c ----------------------------------------------------------------------------
 * out (N,I) = silu(gate) * up, silu(x) = x / (1 + exp(-x)). Row n of gate is gate + n*ld_in
 * and of up is up + n*ld_in (ld_in = I for separate buffers, 2I for Phi-3's fused gate_up). */
void swiglu_forward(float *out, const float *gate, const float *up, int N, int I, int ld_in);
/* dgate, dup (same layout as gate/up): OVERWRITTEN. */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, int N, int I, int ld_in);

/* ---- xent.c ------------------------------------------------------------------------------
 * LM head + cross-entropy over N tokens, in chunks of `chunk` tokens so that only chunk x V
 * logits exist at once (scratch holds chunk*V floats).
 * h (N,C) final hidden states; W (V,C) the frozen head; targets (N): the token each position
 * must predict, or -100 (or any negative) to skip it.
 * Returns sum over counted tokens of -log softmax(h W^T)[target] (in double).
 * If dh != NULL: dh (N,C) += grad_scale * d(sum)/dh. */
double lmhead_xent(float *dh, const float *h, const float *W, const int *targets, int N, int C,
                   int V, float grad_scale, float *scratch, int chunk);
/* The same with the head W (V, C) as a qtensor (ops/qtensor.h) in any format: each chunk's
 * logits come from qmatmul_forward and its dh from qmatmul_backward_input (for F32, exactly the
 * two GEMMs above), with ws (wsb bytes, qmatmul_scratch_bytes(W, chunk)) their scratch; NaN when
 * that is too small to run at all. lmhead_xent is this with an F32 qtensor over W (which needs
 * no scratch). */
struct qtensor;
double lmhead_xent_q(float *dh, const float *h, const struct qtensor *W, const int *targets, int N,
                     float grad_scale, float *scratch, int chunk, void *ws, size_t wsb);
/* The same over the head's rows in chunks of R (R >= V or a head whose rows are not stored one
 * after another: one chunk, lmhead_xent_q's bits): each row's max and sum of exponentials are
 * taken per chunk and combined (rescaled to the row's max, added in chunk order), and dh gets the
 * chunks' parts from the last chunk to the first. With get NULL, W holds every row; otherwise
 * get(ctx, k, next) returns chunk k whole (W gives the shape only) and `next` is the chunk asked
 * for after it (-1: none, the head is done): the chunks are asked for 0 .. K-1 and, with dh,
 * K-1 .. 0 again (the logits recomputed), and the bits are those of get NULL (--shard-base). */
typedef const struct qtensor *(*xent_chunk_fn)(void *ctx, int k, int next);
double lmhead_xent_rows(float *dh, const float *h, const struct qtensor *W, const int *targets,
                        int N, float grad_scale, float *scratch, int chunk, void *ws, size_t wsb,
                        int R, xent_chunk_fn get, void *ctx);
/* The bytes of per-row state lmhead_xent_q / _rows need (chunked: get given) for N tokens,
 * chunks of `chunk` tokens, V rows in chunks of R; taken from the end of ws when wsb leaves room
 * for it and the matmuls (the model sizes its scratch so: no allocation in a step), else
 * allocated. */
size_t lmhead_xent_state_bytes(int N, int chunk, int V, int R, int chunked);
/* logits (N, V) = h W^T, the head's chunks of R rows in order (get as above; after the last
 * chunk `next` is 0). Nonzero: the scratch ws is too small. */
int lmhead_logits(float *logits, const float *h, const struct qtensor *W, int N, int R,
                  xent_chunk_fn get, void *ctx, void *ws, size_t wsb);
/* Whether the head's rows can be taken in chunks (F32, BF16, F16, Q8_0: rows stored in turn). */
int xent_rows_splittable(const struct qtensor *W);

/* ---- kernel choice -----------------------------------------------------------------------
 * Every entry point above runs the best kernel of its op's table that the ISA level
 * (base/cpu.h: the CPU, capped by FTUNE_ISA) allows; the portable versions (*_ref, the
 * reference) and the AVX2+FMA ones can also be called directly, which is how the tests compare
 * them (where cpu_native_level() >= CPU_AVX2). The names of the kernels the entry points run now:
 * "avx2" or "portable" (attention: for that shape). */
const char *swiglu_isa(void);
const char *xent_isa(void);
const char *attention_isa(int H, int Hkv, int D);
void swiglu_forward_ref(float *out, const float *gate, const float *up, int N, int I, int ld_in);
void swiglu_backward_ref(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, int N, int I, int ld_in);
void swiglu_forward_avx2(float *out, const float *gate, const float *up, int N, int I, int ld_in);
void swiglu_backward_avx2(float *dgate, float *dup, const float *dout, const float *gate,
                          const float *up, int N, int I, int ld_in);
double lmhead_xent_ref(float *dh, const float *h, const float *W, const int *targets, int N, int C,
                       int V, float grad_scale, float *scratch, int chunk);
/* one row of logits x (V): returns logsumexp(x) - x[t]; with grad, x becomes
 * (softmax(x) - onehot(t)) * grad_scale (xent_avx2.c) */
double xent_row_avx2(float *x, int V, int t, float grad_scale, int grad);
/* its pieces: the max and sum of exp(x - max) of x[0 .. w), and x[0 .. w) = exp(x - mx) * k */
void xent_stats_avx2(const float *x, int w, float *m, double *s);
void xent_grad_avx2(float *x, int w, float mx, float k);

/* The tiled AVX2+FMA attention (attention_tiled.h) can run here: the CPU has AVX2 and FMA
 * (whatever FTUNE_ISA says), D % 16 == 0, D <= 256, H/Hkv <= 32. */
int attention_avx2_usable(int H, int Hkv, int D);
void attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                           int window, float scale);
void attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *out, const float *lse,
                            const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                            int window, float scale);
#endif
