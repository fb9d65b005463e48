/*
 * fuzz_tokenizer.c: libFuzzer harness for tokenizer.json (src/tok/tokenizer.c and the pipeline
 * parts it loads: normalizers, pre-tokenizers, BPE model, post-processor, decoder).
 *
 * The input is written as tokenizer.json and loaded with tok_load. When it loads, a fixed short
 * text (ASCII, accents, CJK, emoji, white-space runs, special-token look-alikes) is encoded with
 * and without special tokens and decoded back with and without skipping them, and every id from
 * 0 to a little past the vocabulary is decoded (unknown ids must be skipped, not read). Promises
 * checked: encoded ids are known to the tokenizer (below tok_vocab_size, with a token string),
 * the special prefix/suffix ids are known too, decode gives a NUL-terminated string of the
 * length it reports. A broken promise aborts (libFuzzer: crash).
 */
#include "fuzz_common.h"
#include "tok/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char text_[] = "Hello, world! It's 2024: caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
                            "\xf0\x9f\x98\x80  \t\n\n  x=1;<s></s><|endoftext|>\xc2\xa0" "end";

static void check_ids(const tokenizer *t, const int32_t *ids, size_t n) {
    size_t V = tok_vocab_size(t);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= V || !tok_id_to_token(t, ids[i])) abort();
}

static void decode(const tokenizer *t, const int32_t *ids, size_t n, int skip) {
    char *s = NULL;
    size_t len = 0;
    ft_error err;
    if (tok_decode(t, ids, n, skip, &s, &len, &err) == FT_OK) {
        if (!s || strlen(s) > len) abort(); /* NUL inside is allowed (a decoded \0 byte) */
        if (s[len]) abort();
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("tokenizer.json", data, size);
    tokenizer *t = NULL;
    ft_error err;
    if (tok_load(path, &t, &err)) {
        if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) abort();
        return 0;
    }
    const int32_t *pre, *suf;
    size_t npre, nsuf;
    tok_special_affixes(t, &pre, &npre, &suf, &nsuf);
    check_ids(t, pre, npre);
    check_ids(t, suf, nsuf);
    for (int add = 0; add < 2; add++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (tok_encode(t, text_, sizeof text_ - 1, add, &ids, &n, &err) == FT_OK) {
            check_ids(t, ids, n);
            decode(t, ids, n, 0);
            decode(t, ids, n, 1);
        }
        free(ids);
    }
    /* every id, known or not, through decode and the lookups */
    size_t V = tok_vocab_size(t), n = V + 3 < 4096 ? V + 3 : 4096;
    int32_t *all = malloc(n * sizeof *all);
    if (!all) abort();
    for (size_t i = 0; i < n; i++) all[i] = i < V ? (int32_t)i : (int32_t)(i - V) - 1; /* then -1, -2, -3 */
    if (n > V) all[n - 1] = (int32_t)V;
    for (size_t i = 0; i < n; i++) {
        const char *tokstr = tok_id_to_token(t, all[i]);
        (void)tok_is_special(t, all[i]);
        if (tokstr && tok_token_to_id(t, tokstr) < 0) abort();
    }
    decode(t, all, n, 0);
    decode(t, all, n, 1);
    free(all);
    tok_free(t);
    return 0;
}
