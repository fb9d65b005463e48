/*
 * generate.h: the generation loop: a prompt in, tokens out one at a time, the text streamed to
 * the caller as it is decoded.
 *
 * The prompt continues whatever the KV cache already holds when their ids agree (a chat's
 * history): only the tokens after the common prefix are run. Then, until a stop: the logits of
 * the last position, transformers' processors (sampling.h), the next token, one decode step.
 * Stops: an end-of-sequence id (several allowed; not printed), max_new_tokens, the end of the
 * context, a stop string (the text up to it is printed, the string is not), or the caller's
 * stop flag (checked between tokens: Ctrl-C ends an answer, not the session).
 *
 * Text: the ids generated so far are decoded with the tokenizer (skip_special_tokens), and a
 * piece is handed to on_text only when it ends in a whole UTF-8 character: as TGI's streaming
 * decode, the newest piece is the decoding of the last emitted tokens plus the new ones, less
 * the decoding of the last emitted tokens alone, held back while it ends in U+FFFD (a character
 * whose bytes are split over tokens). Text that could be the start of a stop string is held
 * until it cannot. The library never prints: on_text is the caller's.
 */
#ifndef FT_INFER_GENERATE_H
#define FT_INFER_GENERATE_H

#include "infer/forward.h"
#include "infer/sampling.h"
#include "tok/tokenizer.h"

#include <signal.h>

typedef struct gen_options {
    int max_new_tokens;
    sampler_params sp;
    const int32_t *eos; /* ids that end the generation (not printed) */
    int n_eos;
    const char *const *stops; /* stop strings (not printed) */
    int n_stops;
    const tokenizer *tok; /* NULL: no text (ids only) */
    void (*on_text)(void *user, const char *s, size_t n);
    /* each step's raw logits and the distribution the token was taken from (V each) */
    void (*on_step)(void *user, int step, const float *logits, const float *probs, int32_t id);
    void *user;
    volatile sig_atomic_t *stop; /* non-zero: end after the current token */
} gen_options;

typedef enum gen_stop {
    GEN_EOS,
    GEN_LENGTH,
    GEN_CONTEXT,
    GEN_STOP_STRING,
    GEN_INTERRUPTED
} gen_stop;
const char *
gen_stop_name(gen_stop s); /* "eos", "length", "context", "stop_string", "interrupted" */

typedef struct gen_result {
    int32_t *ids; /* the generated ids, the end-of-sequence id not included (malloc'ed) */
    int n;
    char *text; /* what on_text received, whole (NUL-terminated, malloc'ed; "" without tok) */
    size_t len;
    gen_stop stop;
    int prompt_tokens, reused_tokens; /* prompt length, and how many came from the cache */
    double prefill_s, decode_s;       /* seconds: the prompt's forward, the decode steps */
} gen_result;

/* Generate after prompt (n ids) on im. FT_ERR_INPUT when the prompt does not fit the context
 * (naming it) or holds an id outside the vocabulary. */
ft_status generate_run(infer_model *im, const int32_t *prompt, int n, const gen_options *o,
                       gen_result *r, ft_error *err);
void gen_result_free(gen_result *r);

#endif
