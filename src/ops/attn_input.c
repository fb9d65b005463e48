/*
 * attn_input.c: from the fused q|k|v projection output to attention's inputs, and back, in one
 * pass per token.
 *
 * Forward, per token: split the row of qkv into q (H heads of D), k and v (Hkv heads each);
 * RMSNorm each q and k head with q_norm / k_norm (Qwen3's qk-norm, when given), keeping each
 * head's rstd for backward (the pre-norm values backward needs are qkv itself, which the caller
 * keeps: no copy of them is made); rotate q and k (RoPE) with the cos/sin of
 * the token's position from a table (rope_table) that the model fills once a step: every layer,
 * forward and backward, rotates by the same angles, and cosf/sinf of each frequency were most of
 * the separate rope pass's time. Backward, per token: rotate dq and dk back into the row of dqkv,
 * run the qk-norm backward there in place, and copy dv beside them. The separate ops (a copy per
 * row, rmsnorm_forward over N*H rows of D, rope_forward on q and on k, and their backwards into
 * zeroed buffers, then a copy into dqkv) read and write each of these buffers once per op; here the
 * token's row is read once from memory and finished while it is in cache. The arithmetic is
 * row_ops.h's, the same as those ops' (the tests compare the two).
 */
#include "ops/ops.h"
#include "ops/row_ops.h"

#include <string.h>

/* The nh heads of D of one token at x, rotated into y (y may be x) over the first rot_dim
 * dimensions with the position's cos/sin (inv 1: the inverse rotation); the dimensions past
 * rot_dim are left as they are in y. */
static void rotate_heads(float *y, const float *x, int nh, int D, int rot_dim, const float *cs,
                         const float *sn, int inv) {
    const int half = rot_dim / 2;
    for (int h = 0; h < nh; h++) {
        float *y1 = y + (size_t)h * D;
        const float *x1 = x + (size_t)h * D;
        if (inv)
            rope_rotate_inv(y1, y1 + half, x1, x1 + half, cs, sn, half);
        else
            rope_rotate(y1, y1 + half, x1, x1 + half, cs, sn, half);
    }
}

void attn_input_forward(float *q, float *k, float *v, float *qn_rstd, float *kn_rstd,
                        const float *qkv, int ld, const float *q_norm, const float *k_norm,
                        float eps, const int *pos, const float *rope_cos, const float *rope_sin,
                        int N, int H, int Hkv, int D, int rot_dim) {
    const size_t HD = (size_t)H * D, KD = (size_t)Hkv * D;
    const int norm = q_norm != NULL;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *src = qkv + (size_t)n * ld;
        float *qn = q + n * HD, *kn = k + n * KD;
        const size_t half = (size_t)(rot_dim / 2);
        const float *cs = rope_cos + pos[n] * half, *sn = rope_sin + pos[n] * half;
        if (norm) {
            for (int h = 0; h < H; h++)
                qn_rstd[(size_t)n * H + h] =
                    rmsnorm_row(qn + (size_t)h * D, src + (size_t)h * D, q_norm, D, eps);
            for (int h = 0; h < Hkv; h++)
                kn_rstd[(size_t)n * Hkv + h] =
                    rmsnorm_row(kn + (size_t)h * D, src + HD + (size_t)h * D, k_norm, D, eps);
            rotate_heads(qn, qn, H, D, rot_dim, cs, sn, 0);
            rotate_heads(kn, kn, Hkv, D, rot_dim, cs, sn, 0);
        } else {
            /* rotated straight from qkv; only the dimensions past rot_dim are copied */
            if (rot_dim < D) {
                for (int h = 0; h < H; h++)
                    memcpy(qn + (size_t)h * D + rot_dim, src + (size_t)h * D + rot_dim,
                           (size_t)(D - rot_dim) * sizeof(float));
                for (int h = 0; h < Hkv; h++)
                    memcpy(kn + (size_t)h * D + rot_dim, src + HD + (size_t)h * D + rot_dim,
                           (size_t)(D - rot_dim) * sizeof(float));
            }
            rotate_heads(qn, src, H, D, rot_dim, cs, sn, 0);
            rotate_heads(kn, src + HD, Hkv, D, rot_dim, cs, sn, 0);
        }
        memcpy(v + n * KD, src + HD + KD, KD * sizeof(float));
    }
}

void attn_input_backward(float *dqkv, const float *dq, const float *dk, const float *dv,
                         const float *qkv, int ld, const float *qn_rstd, const float *kn_rstd,
                         const float *q_norm, const float *k_norm, const int *pos,
                         const float *rope_cos, const float *rope_sin, int N, int H, int Hkv, int D,
                         int rot_dim) {
    const size_t HD = (size_t)H * D, KD = (size_t)Hkv * D;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *dst = dqkv + (size_t)n * ld, *dkd = dst + HD;
        const float *dqn = dq + n * HD, *dkn = dk + n * KD;
        const size_t half = (size_t)(rot_dim / 2);
        const float *cs = rope_cos + pos[n] * half, *sn = rope_sin + pos[n] * half;
        if (rot_dim < D) {
            for (int h = 0; h < H; h++)
                memcpy(dst + (size_t)h * D + rot_dim, dqn + (size_t)h * D + rot_dim,
                       (size_t)(D - rot_dim) * sizeof(float));
            for (int h = 0; h < Hkv; h++)
                memcpy(dkd + (size_t)h * D + rot_dim, dkn + (size_t)h * D + rot_dim,
                       (size_t)(D - rot_dim) * sizeof(float));
        }
        /* the transpose of the rotation: by -angle */
        rotate_heads(dst, dqn, H, D, rot_dim, cs, sn, 1);
        rotate_heads(dkd, dkn, Hkv, D, rot_dim, cs, sn, 1);
        if (q_norm) {
            const float *qpre = qkv + (size_t)n * ld, *kpre = qpre + HD;
            for (int h = 0; h < H; h++) {
                float *g = dst + (size_t)h * D;
                rmsnorm_row_backward(g, g, qpre + (size_t)h * D, q_norm, qn_rstd[(size_t)n * H + h],
                                     D, 0);
            }
            for (int h = 0; h < Hkv; h++) {
                float *g = dkd + (size_t)h * D;
                rmsnorm_row_backward(g, g, kpre + (size_t)h * D, k_norm,
                                     kn_rstd[(size_t)n * Hkv + h], D, 0);
            }
        }
        memcpy(dkd + KD, dv + n * KD, KD * sizeof(float));
    }
}
