/*
 * xent_avx2.c: the per-row part of xent.c's cross-entropy with AVX2+FMA: the row max, then
 * exp(x - max) over a row's logits with a vectorised Cephes-style expf (range reduction by ln 2,
 * degree-6 polynomial, exponent built in the integer unit, about 1 ulp; arguments are <= 0 and
 * clamped at -87, where the true value is below 1e-37 of the largest term), the sum of the
 * exponentials in double (xent_stats_avx2), and for the gradient exp(x - max) times the scale
 * (xent_grad_avx2). The GEMMs, the loop over rows and the combination of a row's pieces stay in
 * xent.c, which picks these kernels when the CPU has AVX2.
 */
#include "ops/ops.h"

#include "ops/vexp_avx2.h"
#include <immintrin.h>
#include <math.h>

/* The row statistics of x[0 .. w): its max (*m) and the sum of exp(x - max) in double (*s). */
void xent_stats_avx2(const float *x, int w, float *m, double *s) {
    int j = 0;
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= w; j += 8)
        m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + j));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (; j < w; j++)
        mx = x[j] > mx ? x[j] : mx;
    __m256 mv = _mm256_set1_ps(mx);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    double tail = 0.0;
    for (j = 0; j + 8 <= w; j += 8) {
        __m256 e = vexp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    for (; j < w; j++)
        tail += expf(x[j] - mx);
    double sv[4];
    _mm256_storeu_pd(sv, _mm256_add_pd(s0, s1));
    *m = mx;
    *s = sv[0] + sv[1] + sv[2] + sv[3] + tail;
}

/* x[0 .. w) becomes exp(x - mx) * k: the softmax times the gradient's scale. */
void xent_grad_avx2(float *x, int w, float mx, float k) {
    __m256 mv = _mm256_set1_ps(mx), kv = _mm256_set1_ps(k);
    int j = 0;
    for (; j + 8 <= w; j += 8)
        _mm256_storeu_ps(x + j,
                         _mm256_mul_ps(vexp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv)), kv));
    for (; j < w; j++) {
        float e = expf(x[j] - mx);
        x[j] = e * k;
    }
}
