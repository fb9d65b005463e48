/*
 * task_arith.h: the elementwise merges of PEFT's peft/utils/merge_utils.py, on N task tensors of
 * n values each (tensors[k] is task k's), with their fp32 weights.
 *
 * Each is what the PEFT function computes, in its order of fp32 operations, so that the results
 * are bit-identical (a sum over the tasks is a running sum from +0 in task order, as PyTorch's
 * .sum(dim=0) adds fewer than 16 rows):
 *   task_arithmetic      sum_k w_k t_k                                   (Ilharco et al. 2023)
 *   magnitude_prune      sum_k w_k prune_magnitude(t_k)
 *   ties                 disjoint_merge(w_k prune_magnitude(t_k), elected signs) (Yadav et al.)
 *   dare_linear          sum_k w_k (t_k * m_k / density)                  (Yu et al. 2024)
 *   dare_ties            disjoint_merge(w_k (t_k * m_k / density), elected signs)
 * where prune_magnitude keeps the int(density * n) values of largest magnitude, m_k is a
 * Bernoulli(density) mask (drawn by the caller), the elected sign of a position is the sign of
 * sum_k t_k ("total") or of sum_k sign(t_k) ("frequency") over the pruned, unweighted tensors
 * (+ when that is >= 0), and disjoint_merge averages the weighted values whose sign equals the
 * elected one: sum_k [sign(t_k) = s] w_k t_k / max(1, count).
 */
#ifndef FT_MERGE_TASK_ARITH_H
#define FT_MERGE_TASK_ARITH_H

#include <stddef.h>
#include <stdint.h>

typedef enum ta_kind {
    TA_LINEAR,
    TA_MAGNITUDE_PRUNE,
    TA_TIES,
    TA_DARE_LINEAR,
    TA_DARE_TIES
} ta_kind;

/* PEFT's prune(..., "magnitude") in place: density >= 1 keeps everything; else the k =
 * int(density * n) values of largest |t| are kept and the rest set to t * 0 (a kept value ties
 * with dropped ones only at equal magnitude: the lower index is kept). scratch holds n floats. */
void ta_prune_magnitude(float *t, size_t n, double density, float *scratch);
/* PEFT's prune(..., "random", rescale=True) in place with the mask given (1 keep, 0 drop):
 * t * m / fp32(density); density >= 1 leaves t unchanged. */
void ta_prune_random(float *t, size_t n, double density, const uint8_t *mask);

/* The k-th largest (0-based) of a[0..n), n > k; a is reordered (quickselect). */
float ta_kth_largest(float *a, size_t n, size_t k);

/* out (n) = the merge of tensors[0..N) (already pruned for the pruning kinds: this only
 * combines) with weights w: sum_k w_k t_k, or the TIES disjoint merge when ties is set
 * (majority_total: 1 "total", 0 "frequency"). */
void ta_combine(float *out, const float *const *tensors, const float *w, int N, size_t n, int ties,
                int majority_total);

#endif
