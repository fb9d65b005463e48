/*
 * perplexity.c: the sliding-window perplexity of the transformers guide (perplexity.h), each
 * window one row through the training forward (model_forward: the loss over chunks of the LM
 * head, so no window's logits are ever held whole).
 */
#include "infer/perplexity.h"

#include <stdlib.h>
#include <string.h>

ft_status perplexity_sliding(model *m, const int32_t *ids, size_t n, int max_len, int stride,
                             double *avg_nll, long *n_tokens, ft_error *err) {
    if (n < 2)
        return ft_error_set(err, FT_ERR_INPUT, "option --stride", "give a longer text",
                            "the text has %zu token(s); perplexity needs at least 2", n);
    if (max_len < 2 || stride < 1 || stride > max_len)
        return ft_error_set(err, FT_ERR_INPUT, "option --stride",
                            "the stride is at most the window (--seq-len or the model's context)",
                            "stride %d with a window of %d tokens", stride, max_len);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.V)
            return ft_error_set(
                err, FT_ERR_INPUT, "text", "the tokenizer and the model do not match",
                "token id %d is outside the vocabulary (%d ids)", (int)ids[i], m->cfg.V);
    int T = (size_t)max_len < n ? max_len : (int)n;
    acts *a = NULL;
    ft_status st = acts_alloc(m, 1, T, 0, &a, err);
    if (st) return st;
    int32_t *bid = malloc(sizeof(int32_t) * (size_t)T), *tg = malloc(sizeof(int32_t) * (size_t)T);
    int *pos = malloc(sizeof(int) * (size_t)T);
    if (!bid || !tg || !pos) {
        st = ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
        goto done;
    }
    double nll_sum = 0;
    long tokens = 0;
    size_t prev_end = 0;
    for (size_t begin = 0; begin < n; begin += (size_t)stride) {
        size_t end = begin + (size_t)max_len < n ? begin + (size_t)max_len : n;
        int len = (int)(end - begin), trg = (int)(end - prev_end);
        /* labels: the last trg tokens of the window; position t predicts label t + 1 */
        for (int t = 0; t < len; t++) {
            bid[t] = ids[begin + t], pos[t] = t;
            tg[t] = t + 1 < len && t + 1 >= len - trg ? ids[begin + t + 1] : -100;
        }
        batch b = {.B = 1, .T = len, .ids = bid, .targets = tg, .pos = pos, .len = &len};
        long count = 0;
        double loss = model_forward(m, a, &b, 0, 0, NULL, &count);
        if (count > 0) {
            /* the guide: mean loss times (valid labels - batch size) */
            nll_sum += loss / (double)count * (double)(trg - 1);
            tokens += trg - 1;
        }
        prev_end = end;
        if (end == n) break;
    }
    if (!(nll_sum == nll_sum))
        st = ft_error_set(err, FT_ERR_RUNTIME, "perplexity", "please report this",
                          "the loss is not a number");
    *avg_nll = tokens ? nll_sum / (double)tokens : 0;
    *n_tokens = tokens;
done:
    free(bid), free(tg), free(pos);
    acts_free(a);
    return st;
}
