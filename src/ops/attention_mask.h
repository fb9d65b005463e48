/*
 * attention_mask.h: which keys a query may see, shared by the portable (attention.c) and the
 * tiled AVX2 (attention_tiled_avx2.c) attention kernels so that both apply one rule (ops.h):
 * causal, the sliding window, and packed documents (segment ids).
 */
#ifndef FT_OPS_ATTENTION_MASK_H
#define FT_OPS_ATTENTION_MASK_H

typedef struct {
    const int *seg; /* this batch row's segment ids, or NULL */
    int monotone;   /* seg non-decreasing over [0, L): segments are contiguous runs */
    int window;
} att_mask;

static inline int att_seg_monotone(const int *s, int L) {
    for (int t = 1; t < L; t++)
        if (s[t] < s[t - 1]) return 0;
    return 1;
}

/* The first key row i may see; keys [att_lo(i), i] are all it can see (with the per-pair seg
 * check when seg is not monotone). Non-decreasing in i. */
static inline int att_lo(const att_mask *m, int i) {
    int lo = m->window > 0 ? i - m->window + 1 : 0;
    if (lo < 0) lo = 0;
    if (m->seg && m->monotone) {
        int a = 0, z = i, si = m->seg[i];
        while (a < z) {
            int mid = a + (z - a) / 2;
            if (m->seg[mid] < si)
                a = mid + 1;
            else
                z = mid;
        }
        if (a > lo) lo = a;
    }
    return lo;
}

#ifdef __AVX2__
#include <immintrin.h>
/* The same rule for 8 keys at once (AVX2 kernels): lane k is all ones when key idx[k] may be
 * attended by a row whose range is lo <= idx < hi and, when sv (the 8 keys' segment ids) is
 * given, whose segment id is si. */
static inline __m256 attn_mask8(__m256i idx, int lo, int hi, const int *sv, int si) {
    __m256i m = _mm256_and_si256(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(lo - 1)),
                                 _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), idx));
    if (sv)
        m = _mm256_and_si256(
            m, _mm256_cmpeq_epi32(_mm256_loadu_si256((const __m256i *)sv), _mm256_set1_epi32(si)));
    return _mm256_castsi256_ps(m);
}
#endif

#endif
