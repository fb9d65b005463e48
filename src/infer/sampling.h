/*
 * sampling.h: choosing the next token from the logits as transformers' generate() does, and
 * the generation defaults of a model folder as transformers reads them.
 *
 * Order (transformers 5.23, GenerationMixin._get_logits_processor): the repetition penalty
 * first (greedy or not), then, only when sampling, temperature, top-k, top-p and min-p, in that
 * order; greedy decoding takes the first index of the largest processed score, sampling draws
 * from softmax(processed scores). Each processor is transformers' own definition:
 *   repetition penalty  for every distinct id of the sequence so far (prompt included):
 *                       s < 0 ? s * penalty : s / penalty
 *   temperature         s / T
 *   top-k               k = min(top_k, V); remove s < (the k-th largest score)
 *   top-p               sort ascending, cumulative softmax; remove where cum <= 1 - top_p; the
 *                       largest always stays
 *   min-p               p = softmax(s); remove p < min_p * max(p); the largest stays
 * "remove" sets the score to -inf. transformers' defaults apply when neither the folder nor
 * the caller sets a value: do_sample false, temperature 1, top_k 50, top_p 1, no min_p,
 * repetition penalty 1.
 *
 * Draws: the u of step i is rand_uniform01(seed, i) (base/rand.h), the token the first index
 * whose cumulative probability exceeds u: the same seed gives the same tokens.
 */
#ifndef FT_INFER_SAMPLING_H
#define FT_INFER_SAMPLING_H

#include "ftune.h"

#include <stddef.h>
#include <stdint.h>

typedef struct sampler_params {
    int do_sample;
    double temperature;        /* > 0 */
    int top_k;                 /* 0: off */
    double top_p;              /* 1: off */
    double min_p;              /* < 0: off (transformers' None) */
    double repetition_penalty; /* 1: off */
    uint64_t seed;
} sampler_params;

#define GEN_MAX_EOS 16

/* What a model folder says about generation: generation_config.json when it exists (else the
 * same keys of config.json, as transformers' GenerationConfig.from_model_config), with
 * transformers' global defaults for what neither sets. */
typedef struct gen_defaults {
    sampler_params sp;
    int max_new_tokens;       /* 0: not set */
    int32_t eos[GEN_MAX_EOS]; /* eos_token_id: an id or a list (config.json's when
                                 generation_config.json has none) */
    int n_eos;
    char source[64]; /* "generation_config.json", "config.json" */
} gen_defaults;

void sampler_defaults(sampler_params *p);
ft_status gen_defaults_load(const char *model_dir, gen_defaults *g, ft_error *err);

/* Scratch bytes sampling_process needs for a vocabulary of V (allocated once, outside the
 * step loop). */
size_t sampling_scratch_bytes(int V);
/* The processors above applied to scores (V) in place, for the sequence hist (n ids: the prompt
 * and what was generated); scratch: sampling_scratch_bytes(V) bytes. top-k keeps a heap of the k
 * largest (O(V log k)); top-p sorts only the scores still finite. */
void sampling_process(const sampler_params *p, float *scores, int V, const int32_t *hist, size_t n,
                      void *scratch);
/* The next token from processed scores (V): greedy, or a draw with u = rand_uniform01(seed,
 * step). probs (V, may be NULL when greedy) receives softmax(scores), the distribution drawn
 * from. */
int32_t sampling_pick(const sampler_params *p, const float *scores, int V, float *probs,
                      uint64_t step);
/* probs (V) = softmax(scores) in fp32 (-inf scores give 0). */
void sampling_softmax(const float *scores, int V, float *probs);

#endif
