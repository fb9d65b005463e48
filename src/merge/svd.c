/*
 * svd.c: truncated SVD through LAPACK's sgesdd, and torch.quantile (see svd.h).
 *
 * The factored form (svd_lowrank_factored) never builds the (out, in) delta: with
 * delta = Bc Ac, Bc = Qb Rb and Ac^T = Qa Ra (thin QR), delta = Qb (Rb Ra^T) Qa^T, so the SVD of
 * the small R x R middle matrix gives delta's: O((out + in) R^2) work instead of
 * O(out in min(out, in)).
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

extern void sgeqrf_(const int *m, const int *n, float *a, const int *lda, float *tau, float *work,
                    const int *lwork, int *info);
extern void sorgqr_(const int *m, const int *n, const int *k, float *a, const int *lda,
                    const float *tau, float *work, const int *lwork, int *info);
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

/* The thin SVD of a (m, n), column-major, destroyed: s (k), u (m, k, ld m), vt (k, n, ld k),
 * k = min(m, n); LAPACK's sgesdd with jobz 'S'. */
static ft_status gesdd_thin(float *a, int m, int n, float *s, float *u, float *vt,
                            const char *where, ft_error *err) {
    int k = m < n ? m : n, lwork = -1, info = 0;
    float wq = 0;
    int *iwork = malloc((size_t)8 * k * sizeof(int));
    if (!iwork) return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
    sgesdd_("S", &m, &n, a, &m, s, u, &m, vt, &k, &wq, &lwork, iwork, &info, 1);
    lwork = info == 0 ? (int)wq + 1 : 0;
    float *work = lwork > 0 ? malloc((size_t)lwork * sizeof(float)) : NULL;
    ft_status st = FT_OK;
    if (!work)
        st = ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory (SVD workspace)");
    else
        sgesdd_("S", &m, &n, a, &m, s, u, &m, vt, &k, work, &lwork, iwork, &info, 1);
    if (!st && info != 0)
        st = ft_error_set(err, FT_ERR_RUNTIME, where, "the merged delta may hold NaN or inf",
                          "the SVD (LAPACK sgesdd) failed: info %d", info);
    free(work);
    free(iwork);
    return st;
}

/* torch.quantile over B's and A's values, and both clamped to [-hi, hi] (torch.clamp). */
static ft_status clamp_factors(float *B, size_t nb, float *A, size_t na, double clamp,
                               const char *where, ft_error *err) {
    float *dist = malloc((nb + na) * sizeof(float));
    if (!dist) return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
    memcpy(dist, B, nb * sizeof(float));
    memcpy(dist + nb, A, na * sizeof(float));
    float hi = svd_quantile(dist, nb + na, clamp), lo = -hi;
    free(dist);
    for (size_t i = 0; i < nb; i++)
        B[i] = fminf(fmaxf(B[i], lo), hi);
    for (size_t i = 0; i < na; i++)
        A[i] = fminf(fmaxf(A[i], lo), hi);
    return FT_OK;
}

ft_status svd_lowrank(const float *delta, int out, int in, int rank, double clamp, float *A,
                      float *B, const char *where, ft_error *err) {
    int m = out, n = in, k = out < in ? out : in;
    if (rank > k)
        return ft_error_set(err, FT_ERR_INPUT, where, "use a smaller --svd-rank",
                            "rank %d exceeds the matrix's %d x %d", rank, out, in);
    /* column-major copy (a (m, n) with lda = m), as PyTorch hands LAPACK its matrix */
    float *a = malloc((size_t)m * n * sizeof(float)), *s = malloc((size_t)k * sizeof(float));
    float *u = malloc((size_t)m * k * sizeof(float)), *vt = malloc((size_t)k * n * sizeof(float));
    ft_status st = FT_OK;
    if (!a || !s || !u || !vt) st = ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
    for (int i = 0; !st && i < m; i++)
        for (int j = 0; j < n; j++)
            a[i + (size_t)j * m] = delta[(size_t)i * n + j];
    if (!st) st = gesdd_thin(a, m, n, s, u, vt, where, err);
    if (!st) {
        /* B = U[:, :rank] diag(S[:rank]) (U @ diag(S): one product per element), A = Vh[:rank] */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < rank; j++)
                B[(size_t)i * rank + j] = u[i + (size_t)j * m] * s[j];
        for (int j = 0; j < rank; j++)
            for (int l = 0; l < n; l++)
                A[(size_t)j * n + l] = vt[j + (size_t)l * k];
        if (clamp >= 0)
            st = clamp_factors(B, (size_t)m * rank, A, (size_t)rank * n, clamp, where, err);
    }
    free(a);
    free(s);
    free(u);
    free(vt);
    return st;
}

/* Q (m, k) in a and R (k, n) of a (m, n) column-major, k = min(m, n): sgeqrf + sorgqr. */
static ft_status qr_thin(float *a, int m, int n, float *R, const char *where, ft_error *err) {
    int k = m < n ? m : n, lwork = -1, info = 0;
    float wq = 0, wq2 = 0;
    float *tau = malloc((size_t)(k ? k : 1) * sizeof(float));
    if (!tau) return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
    sgeqrf_(&m, &n, a, &m, tau, &wq, &lwork, &info);
    sorgqr_(&m, &k, &k, a, &m, tau, &wq2, &lwork, &info);
    lwork = (int)(wq > wq2 ? wq : wq2) + 1;
    float *work = malloc((size_t)lwork * sizeof(float));
    ft_status st = FT_OK;
    if (!work) st = ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
    if (!st) sgeqrf_(&m, &n, a, &m, tau, work, &lwork, &info);
    if (!st && info)
        st = ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "QR (sgeqrf) failed: info %d", info);
    if (!st) {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < k; i++)
                R[i + (size_t)j * k] = i <= j ? a[i + (size_t)j * m] : 0.0f;
        sorgqr_(&m, &k, &k, a, &m, tau, work, &lwork, &info);
        if (info)
            st =
                ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "QR (sorgqr) failed: info %d", info);
    }
    free(work);
    free(tau);
    return st;
}

ft_status svd_lowrank_factored(const float *Bc, const float *Ac, int out, int in, int R, int rank,
                               float *A, float *B, const char *where, ft_error *err) {
    if (rank > (out < in ? out : in))
        return ft_error_set(err, FT_ERR_INPUT, where, "use a smaller --svd-rank",
                            "rank %d exceeds the matrix's %d x %d", rank, out, in);
    int kb = out < R ? out : R, ka = in < R ? in : R, km = kb < ka ? kb : ka;
    float *qb = malloc((size_t)out * R * sizeof(float)),
          *qa = malloc((size_t)in * R * sizeof(float));
    float *rb = malloc((size_t)kb * R * sizeof(float)),
          *ra = malloc((size_t)ka * R * sizeof(float));
    float *mm = malloc((size_t)kb * ka * sizeof(float)), *s = malloc((size_t)km * sizeof(float));
    float *um = malloc((size_t)kb * km * sizeof(float)),
          *vm = malloc((size_t)km * ka * sizeof(float));
    ft_status st = FT_OK;
    if (!qb || !qa || !rb || !ra || !mm || !s || !um || !vm)
        st = ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
    if (!st) {
        /* Bc (out, R) row-major -> column-major; Ac (R, in) row-major is Ac^T column-major */
        for (int i = 0; i < out; i++)
            for (int j = 0; j < R; j++)
                qb[i + (size_t)j * out] = Bc[(size_t)i * R + j];
        memcpy(qa, Ac, (size_t)in * R * sizeof(float));
        st = qr_thin(qb, out, R, rb, where, err);
    }
    if (!st) st = qr_thin(qa, in, R, ra, where, err);
    if (!st) {
        /* delta = Qb (Rb Ra^T) Qa^T: the SVD of the small middle matrix */
        for (int p = 0; p < kb; p++)
            for (int q = 0; q < ka; q++) {
                double acc = 0;
                for (int j = 0; j < R; j++)
                    acc += (double)rb[p + (size_t)j * kb] * ra[q + (size_t)j * ka];
                mm[p + (size_t)q * kb] = (float)acc;
            }
        st = gesdd_thin(mm, kb, ka, s, um, vm, where, err);
    }
    if (!st) {
        /* B = Qb Um diag(S), A = Vm^T Qa^T; components past km have singular value 0 */
        memset(B, 0, (size_t)out * rank * sizeof(float));
        memset(A, 0, (size_t)rank * in * sizeof(float));
        int kk = rank < km ? rank : km;
        for (int i = 0; i < out; i++)
            for (int j = 0; j < kk; j++) {
                double acc = 0;
                for (int p = 0; p < kb; p++)
                    acc += (double)qb[i + (size_t)p * out] * um[p + (size_t)j * kb];
                B[(size_t)i * rank + j] = (float)acc * s[j];
            }
        for (int j = 0; j < kk; j++)
            for (int l = 0; l < in; l++) {
                double acc = 0;
                for (int q = 0; q < ka; q++)
                    acc += (double)vm[j + (size_t)q * km] * qa[l + (size_t)q * in];
                A[(size_t)j * in + l] = (float)acc;
            }
    }
    free(qb);
    free(qa);
    free(rb);
    free(ra);
    free(mm);
    free(s);
    free(um);
    free(vm);
    return st;
}
