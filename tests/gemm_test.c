/*
 * gemm_test.c: ops/gemm.c's gemm, which splits a large product over ftune's OpenMP threads (rows
 * or columns of C, each block an ordinary single-threaded OpenBLAS call):
 *   - against a double-sum reference, every combination of transposes, with beta 0 (NaN in C:
 *     never read) and 1, row strides wider than the rows and guard values past them, on shapes
 *     split by rows, by columns, with uneven last blocks, and too small to split;
 *   - the same bits with one thread and with two, including the shapes where a block would be
 *     small enough for OpenBLAS's "small matrix" kernels (M 4, N 64, K 6144: its sums differ).
 */
#include "ops/ops.h"
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static uint64_t rng = 0x853c49e6748fea9bull;
static float rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

#define GUARD 777.0f

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    (void)n;
}

static void check(int tA, int tB, int M, int N, int K, float beta) {
    int lda = (tA ? M : K) + 2, ldb = (tB ? K : N) + 1, ldc = N + 3;
    size_t na = (size_t)(tA ? K : M) * lda, nb = (size_t)(tB ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = malloc(na * 4), *B = malloc(nb * 4), *C0 = malloc(nc * 4), *C1 = malloc(nc * 4),
          *C2 = malloc(nc * 4);
    for (size_t i = 0; i < na; i++) A[i] = rnd();
    for (size_t i = 0; i < nb; i++) B[i] = rnd();
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++)
            C0[(size_t)i * ldc + j] = j >= N ? GUARD : beta == 0.0f ? NAN : rnd();
    memcpy(C1, C0, nc * 4), memcpy(C2, C0, nc * 4);
    set_threads(1);
    gemm(tA, tB, M, N, K, 0.75f, A, lda, B, ldb, beta, C1, ldc);
    set_threads(2);
    gemm(tA, tB, M, N, K, 0.75f, A, lda, B, ldb, beta, C2, ldc);
    int bad = 0, guard = 0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)(tA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                           (tB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                s += p, mag += fabs(p);
            }
            double c0 = C0[(size_t)i * ldc + j], want = 0.75 * s + (beta == 0.0f ? 0 : beta * c0);
            mag = 0.75 * mag + (beta == 0.0f ? 0 : fabs(c0));
            if (!(fabs(C2[(size_t)i * ldc + j] - want) <= 1e-5 * mag + 1e-30)) bad++;
        }
        for (int j = N; j < ldc; j++) guard += C2[(size_t)i * ldc + j] != GUARD;
    }
    CHECK(bad == 0 && guard == 0, "tA %d tB %d %dx%dx%d beta %g: %d values off, %d guards changed",
          tA, tB, M, N, K, beta, bad, guard);
    CHECK(!memcmp(C1, C2, nc * 4),
          "tA %d tB %d %dx%dx%d beta %g: 1 and 2 threads give other bits", tA, tB, M, N, K, beta);
    free(A), free(B), free(C0), free(C1), free(C2);
}

int main(void) {
    static const int shapes[][3] = {
        {300, 40, 900},  /* split by rows (B's K x N is the smaller) */
        {45, 700, 800},  /* split by columns */
        {261, 97, 500},  /* uneven last blocks */
        {4, 64, 6144},   /* blocks would be OpenBLAS "small matrix" size: no split */
        {4, 64, 40000},  /* split into blocks just past it */
        {20, 30, 40},    /* too small to split */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            for (int b = 0; b < 2; b++)
                check(t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], (float)b);
    set_threads(2);
    return test_summary("gemm");
}
