/*
 * fuzz_tok_text.c: libFuzzer harness for text through a tokenizer (tok_encode / tok_decode with
 * the four pipelines of the seed tokenizers: Llama 2 style Metaspace + byte fallback, Llama 3
 * and Qwen3 byte-level with their split regexes, SmolLM GPT-2 style).
 *
 * The tokenizers are the small seeds tests/corpus/tokenizer/seed-*.json (real files with the
 * vocabulary cut down, see tests/fuzz/make_seeds.py), loaded once from the repository root (the
 * make rules run from there; FTUNE_ROOT overrides). The first input byte picks the tokenizer and
 * whether special tokens are added; the rest is the text, any bytes: invalid UTF-8 must be refused
 * with FT_ERR_INPUT, valid text must encode to known ids, and decoding those ids must give back
 * a NUL-terminated string of the reported length. A broken promise aborts.
 */
#include "fuzz_common.h"
#include "tok/tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *names_[] = {"llama2", "llama3", "qwen3", "smollm-135m"};
enum { NTOK = 4 };
static tokenizer *toks_[NTOK];

static void free_all(void) {
    for (int i = 0; i < NTOK; i++) tok_free(toks_[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *root = getenv("FTUNE_ROOT");
    for (int i = 0; i < NTOK; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s%stests/corpus/tokenizer/seed-%s.json", root ? root : "",
                 root ? "/" : "", names_[i]);
        ft_error err;
        if (tok_load(p, &toks_[i], &err)) {
            ft_error_print(&err, stderr);
            fprintf(stderr, "fuzz_tok_text: run from the repository root or set FTUNE_ROOT\n");
            abort(); /* set-up failed: not a finding */
        }
    }
    atexit(free_all);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const tokenizer *t = toks_[data[0] % NTOK];
    int add = (data[0] >> 2) & 1, skip = (data[0] >> 3) & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t *ids = NULL;
    size_t n = 0;
    ft_error err;
    if (tok_encode(t, text, len, add, &ids, &n, &err)) {
        if (err.status != FT_ERR_INPUT) abort();
        free(ids);
        return 0;
    }
    size_t V = tok_vocab_size(t);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= V || !tok_id_to_token(t, ids[i])) abort();
    char *s = NULL;
    size_t slen = 0;
    if (tok_decode(t, ids, n, skip, &s, &slen, &err) == FT_OK && (!s || s[slen])) abort();
    free(s);
    free(ids);
    return 0;
}
