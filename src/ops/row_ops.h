/* row_ops.h: one row of RMSNorm (forward, backward) and of the rotary embedding, as inline
 * helpers. rmsnorm.c and rope.c are loops of them over rows, and attn_input.c chains them on a
 * token's q|k|v row while it is in cache; sharing the row code keeps the fused pass and the
 * composition of the separate ops the same arithmetic in the same order (the tests compare). */
#ifndef FT_OPS_ROW_OPS_H
#define FT_OPS_ROW_OPS_H

#include <math.h>

/* o (C) = (x * rstd) * w; returns rstd = 1 / sqrt(mean(x^2) + eps). */
static inline float rmsnorm_row(float *o, const float *x, const float *w, int C, float eps) {
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++)
        ss += x[c] * x[c];
    float r = 1.0f / sqrtf(ss / (float)C + eps);
#pragma omp simd
    for (int c = 0; c < C; c++)
        o[c] = (x[c] * r) * w[c];
    return r;
}

/* dx (C) += (add) or = (!add) the gradient wrt x of rmsnorm_row given g = d/d(out) and its rstd r:
 * r * g * w - r^3 * x * sum(g * w * x) / C. With add 0, dx may be g itself (in place: the sum
 * is taken before any dx is written, and each dx[c] reads only g[c]), but not overlap it
 * otherwise. */
static inline void rmsnorm_row_backward(float *dx, const float *g, const float *x, const float *w,
                                        float r, int C, int add) {
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int c = 0; c < C; c++)
        dot += g[c] * w[c] * x[c];
    float k = r * r * r * dot / (float)C;
    if (add) {
#pragma omp simd
        for (int c = 0; c < C; c++)
            dx[c] += r * g[c] * w[c] - k * x[c];
    } else {
        /* simd is safe with dx == g: each dx[c] depends on g[c] alone (not on a partial overlap) */
#pragma omp simd
        for (int c = 0; c < C; c++)
            dx[c] = r * g[c] * w[c] - k * x[c];
    }
}

/* cos and sin of the m angles p * inv_freq[i] (a float32 product, as transformers computes
 * it), times attn_scale; sin also times sign (-1: the inverse rotation, for backward). */
static inline void rope_angles(float *cs, float *sn, float p, const float *inv_freq, int m,
                               float attn_scale, float sign) {
    for (int i = 0; i < m; i++) {
        float a = p * inv_freq[i];
        cs[i] = cosf(a) * attn_scale;
        sn[i] = sign * (sinf(a) * attn_scale);
    }
}

/* The pairs (x1[i], x2[i]), i < m, rotated into (y1[i], y2[i]); y may be x (in place). */
static inline void rope_rotate(float *y1, float *y2, const float *x1, const float *x2,
                               const float *cs, const float *sn, int m) {
#pragma omp simd
    for (int i = 0; i < m; i++) {
        float a1 = x1[i], a2 = x2[i];
        y1[i] = a1 * cs[i] - a2 * sn[i];
        y2[i] = a2 * cs[i] + a1 * sn[i];
    }
}

/* The inverse of rope_rotate with the same cs, sn (the rotation by -angle): the same values
 * as rope_rotate with -sn, since x - (-y) == x + y exactly. y may be x. */
static inline void rope_rotate_inv(float *y1, float *y2, const float *x1, const float *x2,
                                   const float *cs, const float *sn, int m) {
#pragma omp simd
    for (int i = 0; i < m; i++) {
        float a1 = x1[i], a2 = x2[i];
        y1[i] = a1 * cs[i] + a2 * sn[i];
        y2[i] = a2 * cs[i] - a1 * sn[i];
    }
}

/* frequencies whose cos/sin are computed at once, on the stack */
#define ROPE_CHUNK 64

#endif
