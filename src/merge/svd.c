/*
 * svd.c: truncated SVD through LAPACK's sgesdd, and torch.quantile (see svd.h).
 *
 * OpenBLAS exports LAPACK's Fortran symbols; Debian ships no lapacke.h with it, so sgesdd_ is
 * declared here with gfortran's calling convention (every argument by reference, the length of
 * each character argument appended as a size_t).
 */
#include "merge/svd.h"
#include "merge/task_arith.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

extern void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda,
                    float *s, float *u, const int *ldu, float *vt, const int *ldvt, float *work,
                    const int *lwork, int *iwork, int *info, size_t jobz_len);

float svd_quantile(float *x, size_t n, double q) {
    /* torch: q as a tensor of x's dtype, ranks = q * (n - 1) in fp32, the values at floor and
     * ceil of the rank, and lerp (start + w (end - start) for w < 0.5, else
     * end - (end - start) (1 - w)). */
    float qf = (float)q;
    float rank = qf * (float)(n - 1);
    size_t below = (size_t)rank, above = (size_t)ceilf(rank);
    if (above > n - 1) above = n - 1;
    float w = rank - (float)below;
    float lo = ta_kth_largest(x, n, n - 1 - below);
    float hi = ta_kth_largest(x, n, n - 1 - above);
    double r = fabsf(w) < 0.5f ? (double)lo + (double)w * ((double)hi - lo)
                               : (double)hi - ((double)hi - lo) * (1.0 - (double)w);
    return (float)r;
}

ft_status svd_lowrank(const float *delta, int out, int in, int rank, double clamp, float *A,
                      float *B, const char *where, ft_error *err) {
    int m = out, n = in, k = out < in ? out : in;
    if (rank > k)
        return ft_error_set(err, FT_ERR_INPUT, where, "use a smaller --svd-rank",
                            "rank %d exceeds the matrix's %d x %d", rank, out, in);
    /* column-major copy (a (m, n) with lda = m), as PyTorch hands LAPACK its matrix */
    size_t mn = (size_t)m * n;
    float *a = malloc(mn * sizeof(float)), *s = malloc((size_t)k * sizeof(float));
    float *u = malloc((size_t)m * k * sizeof(float)), *vt = malloc((size_t)k * n * sizeof(float));
    int *iwork = malloc((size_t)8 * k * sizeof(int));
    float *work = NULL, *dist = NULL;
    ft_status st = FT_OK;
    if (!a || !s || !u || !vt || !iwork) {
        st = ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
        goto done;
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            a[i + (size_t)j * m] = delta[(size_t)i * n + j];
    int lwork = -1, info = 0;
    float wq = 0;
    sgesdd_("S", &m, &n, a, &m, s, u, &m, vt, &k, &wq, &lwork, iwork, &info, 1);
    lwork = info == 0 ? (int)wq + 1 : 0;
    work = lwork > 0 ? malloc((size_t)lwork * sizeof(float)) : NULL;
    if (!work) {
        st = ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory (SVD workspace)");
        goto done;
    }
    sgesdd_("S", &m, &n, a, &m, s, u, &m, vt, &k, work, &lwork, iwork, &info, 1);
    if (info != 0) {
        st = ft_error_set(err, FT_ERR_RUNTIME, where, "the merged delta may hold NaN or inf",
                          "the SVD (LAPACK sgesdd) failed: info %d", info);
        goto done;
    }
    /* B = U[:, :rank] diag(S[:rank]) (U @ diag(S): one product per element), A = Vh[:rank] */
    for (int i = 0; i < m; i++)
        for (int j = 0; j < rank; j++)
            B[(size_t)i * rank + j] = u[i + (size_t)j * m] * s[j];
    for (int j = 0; j < rank; j++)
        for (int l = 0; l < n; l++)
            A[(size_t)j * n + l] = vt[j + (size_t)l * k];
    if (clamp >= 0) {
        size_t nb = (size_t)m * rank, na = (size_t)rank * n;
        dist = malloc((nb + na) * sizeof(float));
        if (!dist) {
            st = ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
            goto done;
        }
        memcpy(dist, B, nb * sizeof(float));
        memcpy(dist + nb, A, na * sizeof(float));
        float hi = svd_quantile(dist, nb + na, clamp), lo = -hi;
        /* torch.clamp(x, lo, hi) = min(max(x, lo), hi) */
        for (size_t i = 0; i < nb; i++)
            B[i] = fminf(fmaxf(B[i], lo), hi);
        for (size_t i = 0; i < na; i++)
            A[i] = fminf(fmaxf(A[i], lo), hi);
    }
done:
    free(a);
    free(s);
    free(u);
    free(vt);
    free(iwork);
    free(work);
    free(dist);
    return st;
}
