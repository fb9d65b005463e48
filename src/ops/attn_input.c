/*
 * attn_input.c: from the fused q|k|v projection output to attention's inputs, and back, in one
 * pass per token.
 *
 * Forward, per token: split the row of qkv into q (H heads of D), k and v (Hkv heads each);
 * RMSNorm each q and k head with q_norm / k_norm (Qwen3's qk-norm, when given), keeping the
 * pre-norm values and each head's rstd for backward; rotate q and k (RoPE) with one set of
 * cos/sin for both. Backward, per token: rotate dq and dk back into the row of dqkv, run the
 * qk-norm backward there in place, and copy dv beside them.
 * The separate ops (a copy per row, rmsnorm_forward over N*H rows of D, rope_forward on q and on
 * k, and their backwards into zeroed buffers, then a copy into dqkv) read and write each of these
 * buffers once per op; here the token's row is read once from memory and finished while it is in
 * cache. The arithmetic is row_ops.h's, the same as those ops' (the tests compare the two).
 */
#include "ops/ops.h"
#include "ops/row_ops.h"

#include <string.h>

/* The nh heads of D of one token at x, rotated into y (y may be x) over frequencies
 * [0, rot_dim/2) with the cos/sin of position p (sign -1: the inverse rotation); the dimensions
 * past rot_dim are left as they are in y. */
static void rotate_heads(float *y, const float *x, int nh, int D, int rot_dim, float p,
                         const float *inv_freq, float attn_scale, float sign) {
    int half = rot_dim / 2;
    float cs[ROPE_CHUNK], sn[ROPE_CHUNK];
    for (int i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
        int m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
        rope_angles(cs, sn, p, inv_freq + i0, m, attn_scale, sign);
        for (int h = 0; h < nh; h++) {
            float *y1 = y + (size_t)h * D + i0;
            const float *x1 = x + (size_t)h * D + i0;
            rope_rotate(y1, y1 + half, x1, x1 + half, cs, sn, m);
        }
    }
}

void attn_input_forward(float *q, float *k, float *v, float *qpre, float *kpre, float *qn_rstd,
                        float *kn_rstd, const float *qkv, int ld, const float *q_norm,
                        const float *k_norm, float eps, const int *pos, const float *inv_freq,
                        int N, int H, int Hkv, int D, int rot_dim, float attn_scale) {
    const size_t HD = (size_t)H * D, KD = (size_t)Hkv * D;
    const int norm = q_norm != NULL;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *src = qkv + (size_t)n * ld;
        float *qn = q + n * HD, *kn = k + n * KD;
        float p = (float)pos[n];
        if (norm) {
            memcpy(qpre + n * HD, src, HD * sizeof(float));
            memcpy(kpre + n * KD, src + HD, KD * sizeof(float));
            for (int h = 0; h < H; h++)
                qn_rstd[(size_t)n * H + h] =
                    rmsnorm_row(qn + (size_t)h * D, src + (size_t)h * D, q_norm, D, eps);
            for (int h = 0; h < Hkv; h++)
                kn_rstd[(size_t)n * Hkv + h] =
                    rmsnorm_row(kn + (size_t)h * D, src + HD + (size_t)h * D, k_norm, D, eps);
            rotate_heads(qn, qn, H, D, rot_dim, p, inv_freq, attn_scale, 1.0f);
            rotate_heads(kn, kn, Hkv, D, rot_dim, p, inv_freq, attn_scale, 1.0f);
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
            rotate_heads(qn, src, H, D, rot_dim, p, inv_freq, attn_scale, 1.0f);
            rotate_heads(kn, src + HD, Hkv, D, rot_dim, p, inv_freq, attn_scale, 1.0f);
        }
        memcpy(v + n * KD, src + HD + KD, KD * sizeof(float));
    }
}

void attn_input_backward(float *dqkv, int ld, const float *dq, const float *dk, const float *dv,
                         const float *qpre, const float *kpre, const float *qn_rstd,
                         const float *kn_rstd, const float *q_norm, const float *k_norm,
                         const int *pos, const float *inv_freq, int N, int H, int Hkv, int D,
                         int rot_dim, float attn_scale) {
    const size_t HD = (size_t)H * D, KD = (size_t)Hkv * D;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *dst = dqkv + (size_t)n * ld, *dkd = dst + HD;
        const float *dqn = dq + n * HD, *dkn = dk + n * KD;
        float p = (float)pos[n];
        if (rot_dim < D) {
            for (int h = 0; h < H; h++)
                memcpy(dst + (size_t)h * D + rot_dim, dqn + (size_t)h * D + rot_dim,
                       (size_t)(D - rot_dim) * sizeof(float));
            for (int h = 0; h < Hkv; h++)
                memcpy(dkd + (size_t)h * D + rot_dim, dkn + (size_t)h * D + rot_dim,
                       (size_t)(D - rot_dim) * sizeof(float));
        }
        /* the transpose of the rotation: by -angle */
        rotate_heads(dst, dqn, H, D, rot_dim, p, inv_freq, attn_scale, -1.0f);
        rotate_heads(dkd, dkn, Hkv, D, rot_dim, p, inv_freq, attn_scale, -1.0f);
        if (q_norm) {
            for (int h = 0; h < H; h++) {
                float *g = dst + (size_t)h * D;
                rmsnorm_row_backward(g, g, qpre + n * HD + (size_t)h * D, q_norm,
                                     qn_rstd[(size_t)n * H + h], D, 0);
            }
            for (int h = 0; h < Hkv; h++) {
                float *g = dkd + (size_t)h * D;
                rmsnorm_row_backward(g, g, kpre + n * KD + (size_t)h * D, k_norm,
                                     kn_rstd[(size_t)n * Hkv + h], D, 0);
            }
        }
        memcpy(dkd + KD, dv + n * KD, KD * sizeof(float));
    }
}
