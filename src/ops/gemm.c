/*
 * gemm.c: linear layers as BLAS calls (OpenBLAS through the CBLAS interface).
 *
 * The model's weights are stored as PyTorch stores nn.Linear weights, W (out, in), so the
 * forward pass is inp . W^T. Everything here is row-major; ld* give row strides so a layer can
 * read or write a column slice of a wider buffer (Phi-3's fused qkv).
 *
 * One thread runtime: OpenBLAS runs single-threaded (set on the first call) and gemm splits a large
 * product over ftune's OpenMP threads itself, one block of C's rows or columns each, so no
 * OpenBLAS thread pool waits beside OpenMP's for the cores (bench/README.md, issue 19). The
 * split takes the side that makes each thread re-pack the smaller operand: rows of C when B's
 * K x N is smaller than A's M x K, else columns, in blocks that are multiples of 32. Each block
 * is an ordinary sgemm on a sub-matrix, so every element of C is summed as a single-threaded
 * call sums it, whatever the thread count.
 */
#include "ops/ops.h"

#include <cblas.h>
#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif
/* cblas.h pulls in complex.h, whose macro I would clash with our shape letter I. */
#undef I

/* Multiply-adds each thread's block must have for a split: a parallel region costs
 * microseconds, and OpenBLAS runs products below about 10^6 multiply-adds through other
 * ("small matrix") kernels on some CPUs (SkylakeX), whose sums differ in their last bits, so a
 * smaller block would change the result with the thread count. */
#define GEMM_SPLIT_MIN 4.0e6

void openblas_set_num_threads(int);
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single(void) { openblas_set_num_threads(1); }

static void sgemm1(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    pthread_once(&blas_once, blas_single);
#ifdef _OPENMP
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    int by_rows = (double)K * N < (double)M * K;
    int len = by_rows ? M : N, blocks = (len + 31) / 32;
    if (nt > blocks) nt = blocks;
    if (nt > 1 && (double)M * N * K / nt >= GEMM_SPLIT_MIN) {
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), n = omp_get_num_threads();
            int a = (int)((long long)blocks * t / n) * 32, b = (int)((long long)blocks * (t + 1) / n) * 32;
            if (b > len) b = len;
            if (a < b) {
                if (by_rows)
                    sgemm1(transA, transB, b - a, N, K, alpha,
                           transA ? A + a : A + (size_t)a * lda, lda, B, ldb, beta,
                           C + (size_t)a * ldc, ldc);
                else
                    sgemm1(transA, transB, M, b - a, K, alpha, A, lda,
                           transB ? B + (size_t)a * ldb : B + a, ldb, beta, C + a, ldc);
            }
        }
        return;
    }
#endif
    sgemm1(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void matmul_forward(float *out, int ldo, const float *inp, int ldi, const float *W,
                    const float *bias, int N, int I, int O, float beta) {
    if (!ldo) ldo = O;
    if (!ldi) ldi = I;
    gemm(0, 1, N, O, I, 1.0f, inp, ldi, W, I, beta, out, ldo);
    if (bias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) out[(size_t)n * ldo + o] += bias[o];
}

void matmul_backward_input(float *dinp, int ldi, const float *dout, int ldo, const float *W,
                           int N, int I, int O) {
    if (!ldo) ldo = O;
    if (!ldi) ldi = I;
    gemm(0, 0, N, I, O, 1.0f, dout, ldo, W, I, 1.0f, dinp, ldi);
}

void matmul_backward_weight(float *dW, float *dbias, const float *dout, int ldo,
                            const float *inp, int ldi, int N, int I, int O) {
    if (!ldo) ldo = O;
    if (!ldi) ldi = I;
    if (dW) gemm(1, 0, O, I, N, 1.0f, dout, ldo, inp, ldi, 1.0f, dW, I);
    if (dbias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) dbias[o] += dout[(size_t)n * ldo + o];
}
