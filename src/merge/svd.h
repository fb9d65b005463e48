/*
 * svd.h: the low-rank refactoring of PEFT's *_svd combination types
 * (LoraModel._svd_generalized_task_arithmetic_weighted_adapter, after kohya-ss's
 * svd_merge_lora.py):
 *   U, S, Vh = torch.linalg.svd(delta)            delta (out, in), fp32
 *   B = U[:, :rank] @ diag(S[:rank])              (out, rank)
 *   A = Vh[:rank, :]                              (rank, in)
 *   with clamp q: hi = torch.quantile(cat(B.flatten(), A.flatten()), q), both clamped to
 *   [-hi, hi].
 * The SVD is LAPACK's sgesdd (OpenBLAS ships LAPACK), called as PyTorch calls it on the CPU: the
 * matrix in column-major order, jobz 'S' (torch.linalg.svd with full_matrices=False; PEFT's
 * default full_matrices=True computes the same leading vectors and more that it then drops).
 * Singular vectors are unique only up to sign (and rotation within repeated singular values), so
 * B and A are compared through B @ A. With a clamp that comparison holds only where both SVDs
 * chose the same signs: the quantile is taken over signed values, so flipping a pair of singular
 * vectors moves it. Measured against PyTorch 2.15 (MKL): the same signs for out >= in, other
 * signs on some vectors for out < in (MKL's wide-matrix path differs from reference LAPACK's).
 */
#ifndef FT_MERGE_SVD_H
#define FT_MERGE_SVD_H

#include "ftune.h"

/* A (rank, in) and B (out, rank) from delta (out, in); rank <= min(out, in); clamp < 0: none.
 * where names the module for errors (LAPACK failing to converge, out of memory). */
ft_status svd_lowrank(const float *delta, int out, int in, int rank, double clamp, float *A,
                      float *B, const char *where, ft_error *err);

/* The same without the clamp, for delta = Bc (out, R) @ Ac (R, in) given as its factors (the
 * plain `svd` method, whose delta is a weighted sum of LoRA products): the leading singular
 * triplets from thin QRs of the factors and an R x R SVD, never the (out, in) matrix. Equal to
 * svd_lowrank on Bc @ Ac within the SVD's rounding (and up to the vectors' signs). */
ft_status svd_lowrank_factored(const float *Bc, const float *Ac, int out, int in, int R, int rank,
                               float *A, float *B, const char *where, ft_error *err);

/* torch.quantile(x, q) (linear interpolation) of n values: x is reordered. */
float svd_quantile(float *x, size_t n, double q);

#endif
