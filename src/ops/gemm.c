/*
 * gemm.c: linear layers as BLAS calls (OpenBLAS through the CBLAS interface).
 *
 * The model's weights are stored as PyTorch stores nn.Linear weights, W (out, in), so the
 * forward pass is inp . W^T. Everything here is row-major; ld* give row strides so a layer can
 * read or write a column slice of a wider buffer (Phi-3's fused qkv).
 */
#include "ops/ops.h"

#include <cblas.h>
/* cblas.h pulls in complex.h, whose macro I would clash with our shape letter I. */
#undef I

void gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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
