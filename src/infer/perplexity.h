/*
 * perplexity.h: perplexity of a long token sequence with a sliding window, as the transformers
 * guide "Perplexity of fixed-length models" computes it.
 *
 * Windows start at 0, stride, 2 stride, ... and hold up to max_len tokens; each window's targets
 * are its last trg_len tokens (trg_len = its end minus the previous window's end), the rest is
 * context only. The window's loss is the mean cross-entropy over the targets the model predicts
 * (labels shifted by one, so a window's first token is never predicted), and the windows are
 * summed weighted by trg_len - 1, as the guide does (num_valid_tokens - batch_size): where
 * windows overlap the weight is one less than the tokens the mean ran over, a quirk of the
 * guide kept so the numbers are the guide's. Perplexity = exp(nll_sum / n_tokens).
 */
#ifndef FT_INFER_PERPLEXITY_H
#define FT_INFER_PERPLEXITY_H

#include "model/model.h"

/* The guide's nll_sum / n_tokens (into *avg_nll) and n_tokens, over ids (n tokens) with the
 * training forward (model_forward; m->lora applies). Needs n >= 2, max_len >= 2,
 * 1 <= stride <= max_len. */
ft_status perplexity_sliding(model *m, const int32_t *ids, size_t n, int max_len, int stride,
                             double *avg_nll, long *n_tokens, ft_error *err);

#endif
