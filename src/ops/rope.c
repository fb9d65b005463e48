/*
 * rope.c: rotary position embedding, Hugging Face convention (transformers 5.23,
 * models/llama/modeling_llama.py: LlamaRotaryEmbedding.forward and apply_rotary_pos_emb;
 * models/phi3 for partial rotary).
 *
 * The angle is computed as transformers does: float32 position times float32 inv_freq, a float32
 * product, then cos and sin in float32, each multiplied by attention_scaling. Within each head the
 * first rot_dim values are rotated as pairs (x1, x2) = (x[i], x[i + rot_dim/2]):
 *   y1 = x1*cos - x2*sin,  y2 = x2*cos + x1*sin        (q*cos + rotate_half(q)*sin)
 * and x[rot_dim..D) pass through (Phi-3's partial_rotary_factor).
 * The map is a (scaled) rotation, so backward applies the transpose: the rotation by -angle,
 * times the same attn_scale. Tokens are split across OpenMP threads; each computes one cos/sin per
 * frequency and applies it to all H heads (row_ops.h's row code, which attn_input.c shares).
 */
#include "ops/ops.h"
#include "ops/row_ops.h"

#include <math.h>

static void rope_apply(float *x, const int *pos, const float *inv_freq, int N, int H, int D,
                       int rot_dim, float attn_scale, float sign) {
    int half = rot_dim / 2;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float cs[ROPE_CHUNK], sn[ROPE_CHUNK];
        float *xn = x + (size_t)n * H * D;
        for (int i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
            int m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
            rope_angles(cs, sn, (float)pos[n], inv_freq + i0, m, attn_scale, sign);
            for (int h = 0; h < H; h++) {
                float *x1 = xn + (size_t)h * D + i0, *x2 = x1 + half;
                rope_rotate(x1, x2, x1, x2, cs, sn, m);
            }
        }
    }
}

void rope_forward(float *x, const int *pos, const float *inv_freq, int N, int H, int D, int rot_dim,
                  float attn_scale) {
    rope_apply(x, pos, inv_freq, N, H, D, rot_dim, attn_scale, 1.0f);
}

void rope_backward(float *dx, const int *pos, const float *inv_freq, int N, int H, int D,
                   int rot_dim, float attn_scale) {
    rope_apply(dx, pos, inv_freq, N, H, D, rot_dim, attn_scale, -1.0f);
}

/* attn_input.c rotates with these, looked up by position, rather than computing cos/sin for
 * every token of every layer */
void rope_table(float *cs, float *sn, int P, const float *inv_freq, int rot_dim,
                float attn_scale) {
    const int half = rot_dim / 2;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < P; p++)
        rope_angles(cs + (size_t)p * half, sn + (size_t)p * half, (float)p, inv_freq, half,
                    attn_scale, 1.0f);
}
