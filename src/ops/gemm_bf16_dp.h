/*
 * gemm_bf16_dp.h: the AVX512_BF16 product of gemm_bf16.h, kept in a header so that one source is
 * built twice: natively in gemm_bf16_avx512.c, and against SIMDe's emulation of the same
 * intrinsics in tests/gemm_bf16_test.c, which runs it on CPUs without AVX-512. Whoever includes it
 * provides the intrinsics first (<immintrin.h>, or <simde/x86/avx512.h> with
 * SIMDE_ENABLE_NATIVE_ALIASES); everything here is static.
 *
 * VDPBF16PS (_mm512_dpbf16_ps, Intel SDM) treats each 32-bit lane of its two sources as a pair
 * of bf16 and adds both products of the pairs to the fp32 lane of the accumulator, rounding to
 * nearest even after each of the two additions; denormal inputs read as zero and denormal results
 * are flushed (MXCSR is not consulted). So both operands are packed with two consecutive k in one
 * 32-bit word, the lower k in the lower half:
 *   A  per strip of DP_MR rows, per pair p: the DP_MR words (A[m][2p], A[m][2p+1]); the kernel
 *      broadcasts one word to all 16 lanes;
 *   B  per strip of DP_NR columns, per pair p: the DP_NR words (B(2p, j), B(2p+1, j)): two
 *      vectors.
 * A tile of DP_MR x DP_NR outputs is 2 * DP_MR = 16 accumulators, plus 2 B vectors and the
 * broadcast: 19 of the 32 zmm registers. An odd K and partial strips are padded with zeros,
 * which add nothing, so the inner loop has no edge cases.
 *
 * Blocking: K in blocks of DP_KC values (the first block applies beta, the later ones add into
 * C) and N in blocks of DP_NC columns; op(B)'s block is packed once (DP_KC/2 x DP_NC words,
 * 1 MB) and shared by the threads, which split the block's outputs in items of DP_MC rows x
 * DP_NW columns; each thread packs the rows of A its items need (DP_MC x DP_KC/2 words, 32 KB,
 * L2) and runs the tiles column strip by column strip, so a strip of packed B (16 KB) stays in
 * L1 while the A block passes by. Packing B is vectorized (AVX2 halves: 8 x 8 word transposes
 * for transB, two-row interleaves otherwise), since each call packs all of op(B) once per K
 * block while a qtensor panel multiplies only a few hundred rows of A; A's strips are 8 x 8
 * transposes too, packed once per item's rows. Speed on real AVX512_BF16 hardware is not
 * measured yet.
 */
#ifndef FT_OPS_GEMM_BF16_DP_H
#define FT_OPS_GEMM_BF16_DP_H

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { DP_MR = 8, DP_NR = 32, DP_KC = 256, DP_NC = 2048, DP_MC = 64, DP_NW = 256 };

static inline int dp_min(int a, int b) { return a < b ? a : b; }

static inline uint32_t dp_pair(uint16_t lo, uint16_t hi) {
    return (uint32_t)lo | (uint32_t)hi << 16;
}

/* The same 64 bytes as a vector of bf16 pairs (memcpy: SIMDe's __m512bh is no vector cast). */
static inline __m512bh dp_bh(__m512i v) {
    __m512bh r;
    memcpy(&r, &v, sizeof r);
    return r;
}

/* 8 rows of 8 words each (r[i] = row i) to 8 columns: c[p] = (r[0][p], .., r[7][p]). */
static inline void dp_transpose8(__m256i r[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);     /* words 0 1 | 4 5 of rows i, i+1 */
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]); /* words 2 3 | 6 7 */
    }
    for (int h = 0; h < 8; h += 4) {                      /* rows h .. h+3: word w in lane w / 4 */
        u[h] = _mm256_unpacklo_epi64(t[h], t[h + 2]);     /* words 0 | 4 */
        u[h + 1] = _mm256_unpackhi_epi64(t[h], t[h + 2]); /* words 1 | 5 */
        u[h + 2] = _mm256_unpacklo_epi64(t[h + 1], t[h + 3]); /* words 2 | 6 */
        u[h + 3] = _mm256_unpackhi_epi64(t[h + 1], t[h + 3]); /* words 3 | 7 */
    }
    for (int w = 0; w < 4; w++) {
        r[w] = _mm256_permute2x128_si256(u[w], u[w + 4], 0x20);
        r[w + 4] = _mm256_permute2x128_si256(u[w], u[w + 4], 0x31);
    }
}

/* Rows m0 .. m0+mc-1, values k0 .. k0+kc-1 of A into strips of DP_MR rows (kp words each row),
 * rows past mc zero. Whole strips go 8 x 8 words at a time through dp_transpose8 (DP_MR is 8);
 * the loops after it do the rest of each row and the partial strip. */
static void dp_pack_a(uint32_t *dst, const uint16_t *A, int lda, int m0, int mc, int k0, int kc) {
    int kp = (kc + 1) / 2, pv = kc / 2 / 8 * 8;
    for (int s = 0; s < mc; s += DP_MR) {
        uint32_t *strip = dst + (size_t)s * kp; /* strip s / DP_MR of DP_MR * kp words */
        int whole = s + DP_MR <= mc;
        for (int p = 0; whole && p < pv; p += 8) {
            __m256i r[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_si256(
                    (const __m256i *)(A + (size_t)(m0 + s + i) * lda + k0 + 2 * p));
            dp_transpose8(r);
            for (int i = 0; i < 8; i++)
                _mm256_storeu_si256((__m256i *)(strip + (size_t)(p + i) * DP_MR), r[i]);
        }
        for (int m = 0; m < DP_MR; m++) {
            uint32_t *d = strip + m;
            if (s + m >= mc) {
                for (int p = 0; p < kp; p++)
                    d[(size_t)p * DP_MR] = 0;
                continue;
            }
            const uint16_t *a = A + (size_t)(m0 + s + m) * lda + k0;
            for (int p = whole ? pv : 0; p < kc / 2; p++)
                d[(size_t)p * DP_MR] = dp_pair(a[2 * p], a[2 * p + 1]);
            if (kc & 1) d[(size_t)(kp - 1) * DP_MR] = dp_pair(a[kc - 1], 0);
        }
    }
}

/* One strip of op(B): columns j0 .. j0+nr-1 (nr <= DP_NR; the rest zero), values k0 .. k0+kc-1.
 * op(B)(k, j) is B[j][k] when transB (rows of B are columns here), else B[k][j]. Vector code
 * where whole 8 x 8 (transB) or 2 x 16 blocks fit inside the matrix; the loops after it do the
 * edges (and are the definition). */
static void dp_pack_b(uint32_t *d, int transB, const uint16_t *B, int ldb, int j0, int nr, int k0,
                      int kc) {
    int kp = (kc + 1) / 2;
    if (transB) {
        /* a word of row j is the pair at k0 + 2p: 8 rows x 8 words transposed at a time */
        int jv = nr / 8 * 8, pv = kc / 2 / 8 * 8;
        for (int j = 0; j < jv; j += 8)
            for (int p = 0; p < pv; p += 8) {
                __m256i r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = _mm256_loadu_si256(
                        (const __m256i *)(B + (size_t)(j0 + j + i) * ldb + k0 + 2 * p));
                dp_transpose8(r);
                for (int i = 0; i < 8; i++)
                    _mm256_storeu_si256((__m256i *)(d + (size_t)(p + i) * DP_NR + j), r[i]);
            }
        for (int j = 0; j < DP_NR; j++) {
            uint32_t *col = d + j;
            if (j >= nr) {
                for (int p = 0; p < kp; p++)
                    col[(size_t)p * DP_NR] = 0;
                continue;
            }
            const uint16_t *b = B + (size_t)(j0 + j) * ldb + k0;
            for (int p = j < jv ? pv : 0; p < kc / 2; p++)
                col[(size_t)p * DP_NR] = dp_pair(b[2 * p], b[2 * p + 1]);
            if (kc & 1) col[(size_t)(kp - 1) * DP_NR] = dp_pair(b[kc - 1], 0);
        }
        return;
    }
    /* rows 2p and 2p+1 interleaved, 16 columns at a time (unpack works within 128-bit lanes:
     * lo holds columns 0-3 | 8-11, hi 4-7 | 12-15) */
    int jv = nr / 16 * 16;
    for (int p = 0; p < kp; p++) {
        const uint16_t *b0 = B + (size_t)(k0 + 2 * p) * ldb + j0;
        const uint16_t *b1 = 2 * p + 1 < kc ? b0 + ldb : NULL;
        uint32_t *row = d + (size_t)p * DP_NR;
        for (int j = 0; j < jv; j += 16) {
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(b0 + j));
            __m256i x1 =
                b1 ? _mm256_loadu_si256((const __m256i *)(b1 + j)) : _mm256_setzero_si256();
            __m256i lo = _mm256_unpacklo_epi16(x0, x1), hi = _mm256_unpackhi_epi16(x0, x1);
            _mm256_storeu_si256((__m256i *)(row + j), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256((__m256i *)(row + j + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
        for (int j = jv; j < nr; j++)
            row[j] = dp_pair(b0[j], b1 ? b1[j] : 0);
        for (int j = nr; j < DP_NR; j++)
            row[j] = 0;
    }
}

/* C tile (mr x nr of it; C row stride ldc) from kp pairs of a packed A strip and B strip.
 * first: the K block that applies beta (beta 0: C is not read); later blocks add into C. */
static void dp_tile(int kp, const uint32_t *ap, const uint32_t *bp, float *C, int ldc, int mr,
                    int nr, float beta, int first) {
    __m512 acc[DP_MR][2];
#pragma GCC unroll 8
    for (int m = 0; m < DP_MR; m++)
        acc[m][0] = acc[m][1] = _mm512_setzero_ps();
    for (int p = 0; p < kp; p++) {
        __m512bh b0 = dp_bh(_mm512_loadu_si512(bp + (size_t)p * DP_NR));
        __m512bh b1 = dp_bh(_mm512_loadu_si512(bp + (size_t)p * DP_NR + 16));
#pragma GCC unroll 8
        for (int m = 0; m < DP_MR; m++) {
            __m512bh a = dp_bh(_mm512_set1_epi32((int)ap[(size_t)p * DP_MR + m]));
            acc[m][0] = _mm512_dpbf16_ps(acc[m][0], a, b0);
            acc[m][1] = _mm512_dpbf16_ps(acc[m][1], a, b1);
        }
    }
    if (nr == DP_NR) {
        __m512 vb = _mm512_set1_ps(beta);
        for (int m = 0; m < mr; m++) {
            float *c = C + (size_t)m * ldc;
            __m512 v0 = acc[m][0], v1 = acc[m][1];
            if (!first) {
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(c));
                v1 = _mm512_add_ps(v1, _mm512_loadu_ps(c + 16));
            } else if (beta != 0) {
                v0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(c), v0);
                v1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(c + 16), v1);
            }
            _mm512_storeu_ps(c, v0);
            _mm512_storeu_ps(c + 16, v1);
        }
        return;
    }
    /* a partial strip: C may end before the tile does, so no full-width loads or stores */
    float t[DP_NR];
    for (int m = 0; m < mr; m++) {
        float *c = C + (size_t)m * ldc;
        _mm512_storeu_ps(t, acc[m][0]);
        _mm512_storeu_ps(t + 16, acc[m][1]);
        for (int j = 0; j < nr; j++)
            c[j] = !first ? c[j] + t[j] : beta == 0 ? t[j] : beta * c[j] + t[j];
    }
}

/* Below this many multiply-adds one thread does it all (a parallel region costs microseconds). */
#define DP_PARALLEL_MACS 2e6

/* The packing buffers' sizes in 32-bit words: op(B)'s block, and each thread's A block. */
static int dp_sizes(int M, int N, int K, size_t *bwords, size_t *awords) {
    int kp_max = (dp_min(K, DP_KC) + 1) / 2;
    int nc_max = (dp_min(N, DP_NC) + DP_NR - 1) / DP_NR * DP_NR;
    int mc_max = (dp_min(M, DP_MC) + DP_MR - 1) / DP_MR * DP_MR;
    /* whole 64-byte lines per buffer, so threads' A blocks share no cache line */
    *bwords = ((size_t)kp_max * nc_max + 15) / 16 * 16;
    *awords = ((size_t)kp_max * mc_max + 15) / 16 * 16;
    return (double)M * N * K < DP_PARALLEL_MACS ? 1 : omp_get_max_threads();
}

/* Bytes of scratch dp_gemm needs for this product (the packing buffers, 64-byte aligned inside
 * it). */
static inline size_t dp_scratch_bytes(int M, int N, int K) {
    size_t bwords, awords;
    int threads = dp_sizes(M, N, K, &bwords, &awords);
    return (bwords + awords * (size_t)threads) * sizeof(uint32_t) + 64;
}

/* C (M, N) = beta * C + A (M, K) . op(B) with the contract of gemm_bf16 (M, N, K > 0), the
 * packing buffers in ws. Returns -1, C untouched, when ws is smaller than dp_scratch_bytes. */
static int dp_gemm(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                   int ldb, float beta, float *C, int ldc, void *ws, size_t wsb) {
    size_t bwords, awords;
    int threads = dp_sizes(M, N, K, &bwords, &awords);
    if (!ws || wsb < dp_scratch_bytes(M, N, K)) return -1;
    uint32_t *bpack = (uint32_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    uint32_t *apack = bpack + bwords;
#pragma omp parallel num_threads(threads)
    {
        uint32_t *ap = apack + awords * omp_get_thread_num();
        for (int j0 = 0; j0 < N; j0 += DP_NC) {
            int nc = dp_min(N - j0, DP_NC), nstrips = (nc + DP_NR - 1) / DP_NR;
            int nwb = (nc + DP_NW - 1) / DP_NW, items = (M + DP_MC - 1) / DP_MC * nwb;
            for (int k0 = 0; k0 < K; k0 += DP_KC) {
                int kc = dp_min(K - k0, DP_KC), kp = (kc + 1) / 2;
#pragma omp for schedule(static)
                for (int t = 0; t < nstrips; t++)
                    dp_pack_b(bpack + (size_t)t * kp * DP_NR, transB, B, ldb, j0 + t * DP_NR,
                              dp_min(DP_NR, nc - t * DP_NR), k0, kc);
                /* (the barrier at the end of the loop above: B is packed before any tile runs) */
                int packed = -1; /* the M block this thread's A buffer holds */
#pragma omp for schedule(static)
                for (int it = 0; it < items; it++) {
                    int mb = it / nwb, m0 = mb * DP_MC, mc = dp_min(M - m0, DP_MC);
                    int w0 = it % nwb * DP_NW, wc = dp_min(nc - w0, DP_NW);
                    if (mb != packed) dp_pack_a(ap, A, lda, m0, mc, k0, kc), packed = mb;
                    for (int jr = 0; jr < wc; jr += DP_NR)
                        for (int ir = 0; ir < mc; ir += DP_MR)
                            dp_tile(kp, ap + (size_t)ir * kp,
                                    bpack + (size_t)(w0 + jr) / DP_NR * kp * DP_NR,
                                    C + (size_t)(m0 + ir) * ldc + j0 + w0 + jr, ldc,
                                    dp_min(DP_MR, mc - ir), dp_min(DP_NR, wc - jr), beta, k0 == 0);
                }
                /* (and the one here: no thread repacks B while another still reads it) */
            }
        }
    }
    return 0;
}

#endif
