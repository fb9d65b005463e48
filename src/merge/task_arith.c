/*
 * task_arith.c: PEFT's merge_utils (see task_arith.h for the formulas and their sources).
 *
 * The order of fp32 operations follows PyTorch's: a product of a task tensor and its weight is
 * rounded before it is summed (task_tensors * weights is a tensor of its own), sums over the
 * tasks run from +0 in task order, the DARE rescale divides by density rounded to fp32 (a tensor
 * divided by a Python float), and TIES divides the kept sum by the count of kept values.
 */
#include "merge/task_arith.h"

#include <math.h>
#include <string.h>

/* The k-th largest (0-based) of a[0..n) (reordered): quickselect with a three-way partition,
 * so runs of equal values (zeros of an untrained B) cost nothing. */
float ta_kth_largest(float *a, size_t n, size_t k) {
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        float p = a[lo + (hi - lo) / 2];
        size_t lt = lo, i = lo, gt = hi; /* [lo, lt) > p, [lt, gt) == p, [gt, hi) < p */
        while (i < gt) {
            float v = a[i];
            if (v > p) {
                a[i++] = a[lt];
                a[lt++] = v;
            } else if (v < p) {
                a[i] = a[--gt];
                a[gt] = v;
            } else {
                i++;
            }
        }
        if (k < lt)
            hi = lt;
        else if (k < gt)
            return p;
        else
            lo = gt;
    }
    return a[lo];
}

void ta_prune_magnitude(float *t, size_t n, double density, float *scratch) {
    if (density >= 1 || n == 0) return;
    size_t k = (size_t)(density * (double)n); /* Python's int(density * numel) */
    if (k == 0) {
        for (size_t i = 0; i < n; i++)
            t[i] *= 0.0f;
        return;
    }
    for (size_t i = 0; i < n; i++)
        scratch[i] = fabsf(t[i]);
    float tau = ta_kth_largest(scratch, n, k - 1);
    size_t above = 0;
    for (size_t i = 0; i < n; i++)
        above += fabsf(t[i]) > tau;
    size_t equal_kept = k - above; /* of the values at the threshold, the first ones */
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(t[i]);
        int keep = a > tau || (a == tau && equal_kept && equal_kept--);
        t[i] *= keep ? 1.0f : 0.0f;
    }
}

void ta_prune_random(float *t, size_t n, double density, const uint8_t *mask) {
    if (density >= 1) return;
    const float d = (float)density;
    for (size_t i = 0; i < n; i++) {
        float kept = t[i] * (mask[i] ? 1.0f : 0.0f);
        t[i] = kept / d;
    }
}

void ta_combine(float *out, const float *const *tensors, const float *w, int N, size_t n, int ties,
                int majority_total) {
    for (size_t i = 0; i < n; i++) {
        if (!ties) {
            float acc = 0.0f;
            for (int k = 0; k < N; k++) {
                float p = tensors[k][i] * w[k];
                acc += p;
            }
            out[i] = acc;
            continue;
        }
        float votes = 0.0f;
        for (int k = 0; k < N; k++) {
            float v = tensors[k][i];
            votes += majority_total ? v : (float)((v > 0) - (v < 0));
        }
        int elected = votes >= 0 ? 1 : -1;
        float acc = 0.0f, count = 0.0f;
        for (int k = 0; k < N; k++) {
            float v = tensors[k][i];
            int agree = ((v > 0) - (v < 0)) == elected;
            float p = v * w[k];
            p = p * (agree ? 1.0f : 0.0f);
            acc += p;
            count += (float)agree;
        }
        out[i] = acc / (count < 1.0f ? 1.0f : count);
    }
}
