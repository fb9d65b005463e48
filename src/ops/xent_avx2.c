/*
 * xent_avx2.c: the per-row part of xent.c's cross-entropy with AVX2+FMA: the row max, then
 * exp(x - max) over the V logits with a vectorised Cephes-style expf (range reduction by ln 2,
 * degree-6 polynomial, exponent built in the integer unit, about 1 ulp; arguments are <= 0 and
 * clamped at -87, where the true value is below 1e-37 of the largest term), the sum of the
 * exponentials in double, and with grad the row turned into (softmax - onehot) * grad_scale.
 * The GEMMs and the loop over rows stay in xent.c, which picks this kernel when the CPU has AVX2.
 */
#include "ops/ops.h"

#include <immintrin.h>
#include "ops/vexp_avx2.h"
#include <math.h>


double xent_row_avx2(float *x, int V, int t, float grad_scale, int grad) {
    int j = 0;
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= V; j += 8)
        m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + j));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (; j < V; j++)
        mx = x[j] > mx ? x[j] : mx;
    float xt = x[t];
    __m256 mv = _mm256_set1_ps(mx);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    double tail = 0.0;
    for (j = 0; j + 8 <= V; j += 8) {
        __m256 e = vexp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv));
        if (grad) _mm256_storeu_ps(x + j, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    for (; j < V; j++) {
        float e = expf(x[j] - mx);
        if (grad) x[j] = e;
        tail += e;
    }
    double sv[4];
    _mm256_storeu_pd(sv, _mm256_add_pd(s0, s1));
    double sum = sv[0] + sv[1] + sv[2] + sv[3] + tail;
    if (grad) {
        __m256 k = _mm256_set1_ps((float)(grad_scale / sum));
        for (j = 0; j + 8 <= V; j += 8)
            _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), k));
        for (; j < V; j++)
            x[j] *= (float)(grad_scale / sum);
        x[t] -= grad_scale;
    }
    return log(sum) + (double)mx - (double)xt;
}
