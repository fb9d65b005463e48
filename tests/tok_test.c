/*
 * tok_test.c: unit tests of the tokenizer's pieces on tiny hand-made tokenizer.json files.
 *
 * Each case writes a small tokenizer.json, encodes or decodes a short text and checks the
 * result. The expected ids were worked out by hand from the semantics of `tokenizers` (lowest
 * merge rank first, leftmost among equals; byte fallback to <0xXX>; unk fused; added tokens
 * matched leftmost-longest before normalization; lstrip/rstrip/single_word) and then confirmed
 * once with the `tokenizers` package 0.23.3 (Tokenizer.from_str(json).encode(text,
 * add_special_tokens=...).ids on the same JSON), which gave the same ids for every case.
 * The big comparisons against `tokenizers` live in tests/peers/test_tokenizer.py.
 */
#include "test.h"
#include "tok/tokenizer.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char path_[256];

static tokenizer *load_json(const char *json) {
    snprintf(path_, sizeof path_, "/tmp/ftune-tok-test-%d.json", (int)getpid());
    FILE *f = fopen(path_, "w");
    if (!f) return NULL;
    fputs(json, f);
    fclose(f);
    tokenizer *t = NULL;
    ft_error err = {0};
    if (tok_load(path_, &t, &err)) ft_error_print(&err, stderr);
    remove(path_);
    return t;
}

/* encode and compare with the expected ids (terminated by -1) */
static int enc_is(const tokenizer *t, const char *text, int special, const int *want) {
    int32_t *ids;
    size_t n;
    ft_error err = {0};
    if (tok_encode(t, text, strlen(text), special, &ids, &n, &err)) {
        ft_error_print(&err, stderr);
        return 0;
    }
    size_t k = 0;
    while (want[k] >= 0)
        k++;
    int ok = n == k;
    for (size_t i = 0; ok && i < n; i++)
        ok = ids[i] == want[i];
    if (!ok) {
        fprintf(stderr, "  \"%s\" gave:", text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fputc('\n', stderr);
    }
    free(ids);
    return ok;
}

static int dec_is(const tokenizer *t, const int32_t *ids, size_t n, int skip, const char *want) {
    char *s;
    size_t len;
    ft_error err = {0};
    if (tok_decode(t, ids, n, skip, &s, &len, &err)) return 0;
    int ok = len == strlen(want) && !memcmp(s, want, len);
    if (!ok) fprintf(stderr, "  decoded \"%s\", want \"%s\"\n", s, want);
    free(s);
    return ok;
}

/* vocabulary a=0 b=1 c=2 ab=3 bc=4 abc=5 aa=6, merges in rank order: "b c", "a b", "a bc",
 * "a a" */
static const char *MERGE_JSON =
    "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, "
    "\"bc\": 4, \"abc\": 5, \"aa\": 6}, \"merges\": [[\"b\", \"c\"], [\"a\", \"b\"], [\"a\", "
    "\"bc\"], [\"a\", \"a\"]]},"
    "\"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}}";

static void test_merge_order(void) {
    tokenizer *t = load_json(MERGE_JSON);
    CHECK(t != NULL, "load");
    if (!t) return;
    /* "abc": (b,c) has rank 0 < (a,b) rank 1, so bc first, then a+bc -> abc */
    CHECK(enc_is(t, "abc", 0, (int[]){5, -1}), "abc -> [abc]");
    /* "ab": only (a,b) */
    CHECK(enc_is(t, "ab", 0, (int[]){3, -1}), "ab");
    /* "aaa": equal ranks, leftmost first: aa + a */
    CHECK(enc_is(t, "aaa", 0, (int[]){6, 0, -1}), "aaa -> aa a");
    CHECK(enc_is(t, "aaaa", 0, (int[]){6, 6, -1}), "aaaa -> aa aa");
    /* "abab c": words split on whitespace; "abab" -> ab ab */
    CHECK(enc_is(t, "abab c", 0, (int[]){3, 3, 2, -1}), "abab c");
    /* characters not in the vocabulary and no unk: dropped, and then a+b merge */
    CHECK(enc_is(t, "axb", 0, (int[]){3, -1}), "unknown char dropped");
    CHECK(tok_token_to_id(t, "abc") == 5 && tok_token_to_id(t, "zz") == -1, "token_to_id");
    CHECK(tok_id_to_token(t, 4) && !strcmp(tok_id_to_token(t, 4), "bc"), "id_to_token");
    CHECK(tok_vocab_size(t) == 7, "vocab size");
    tok_free(t);
}

/* SentencePiece style: <unk>=0, bytes <0x00>..<0xFF> = 1..256 (only the ones listed), then
 * letters; byte_fallback on, unk fused. */
static void test_byte_fallback(void) {
    const char *json =
        "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true, "
        "\"fuse_unk\": true, \"vocab\": {\"<unk>\": 0, \"<0xC3>\": 1, \"<0xA9>\": 2, "
        "\"\\u2581\": 3, \"a\": 4, \"\\u2581a\": 5}, \"merges\": [\"\\u2581 a\"]},"
        "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "
        "\"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "
        "\"content\": \"\\u2581\"}]},"
        "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
        "{\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, "
        "{\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, "
        "\"stop\": 0}]}}";
    tokenizer *t = load_json(json);
    CHECK(t != NULL, "load");
    if (!t) return;
    /* "aé" -> "▁aé": ▁a, then é = C3 A9 by byte fallback */
    CHECK(enc_is(t, "a\xC3\xA9", 0, (int[]){5, 1, 2, -1}), "byte fallback");
    /* "xy": neither the chars nor all their bytes exist -> one fused <unk> */
    CHECK(enc_is(t, "a xy", 0, (int[]){5, 3, 0, -1}), "fused unk");
    CHECK(dec_is(t, (int32_t[]){5, 1, 2, 3, 4}, 5, 0, "a\xC3\xA9 a"), "decode with bytes");
    /* a lone C3 byte is not UTF-8: one U+FFFD */
    CHECK(dec_is(t, (int32_t[]){5, 1}, 2, 0, "a\xEF\xBF\xBD"), "decode invalid byte");
    tok_free(t);
}

/* Byte-level BPE with added tokens: <s> special, [T] lstrip+rstrip, "ok" single_word. The
 * vocabulary is printable ASCII, id = character - 0x21, then "Ġ" (the byte-level space) = 94;
 * added tokens 95, 96, 97. */
#define C(ch) ((ch)-0x21)
static void test_added_tokens(void) {
    char json[8192];
    /* vocabulary: the 256 byte characters are not all needed; use printable ASCII only */
    int k = snprintf(json, sizeof json, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
    for (int c = 0x21; c < 0x7F; c++) {
        if (c == '"' || c == '\\')
            k += snprintf(json + k, sizeof json - (size_t)k, "\"\\%c\": %d, ", c, C(c));
        else
            k += snprintf(json + k, sizeof json - (size_t)k, "\"%c\": %d, ", c, C(c));
    }
    k += snprintf(json + k, sizeof json - (size_t)k,
                  "\"\\u0120\": 94}, \"merges\": []},"
                  "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                  "\"use_regex\": true, \"trim_offsets\": false},"
                  "\"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                  "\"trim_offsets\": false, \"use_regex\": false},"
                  "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
                  "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": "
                  "{\"id\": \"A\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": "
                  "{\"<s>\": {\"id\": \"<s>\", \"ids\": [95], \"tokens\": [\"<s>\"]}}},"
                  "\"added_tokens\": ["
                  "{\"id\": 95, \"content\": \"<s>\", \"special\": true, \"lstrip\": false, "
                  "\"rstrip\": false, \"single_word\": false, \"normalized\": false},"
                  "{\"id\": 96, \"content\": \"[T]\", \"special\": false, \"lstrip\": true, "
                  "\"rstrip\": true, \"single_word\": false, \"normalized\": false},"
                  "{\"id\": 97, \"content\": \"ok\", \"special\": false, \"lstrip\": false, "
                  "\"rstrip\": false, \"single_word\": true, \"normalized\": false}]}");
    tokenizer *t = load_json(json);
    CHECK(t != NULL, "load");
    if (!t) return;
    /* "a<s>b": a, <s>, b; with special tokens the template puts <s> first */
    CHECK(enc_is(t, "a<s>b", 0, (int[]){C('a'), 95, C('b'), -1}), "special in the middle");
    CHECK(enc_is(t, "a<s>b", 1, (int[]){95, C('a'), 95, C('b'), -1}), "post-processor BOS");
    /* [T] swallows the spaces on both sides */
    CHECK(enc_is(t, "x  [T]  y", 0, (int[]){C('x'), 96, C('y'), -1}), "lstrip/rstrip");
    /* "ok" alone is the token; inside "book" it is not (single_word) */
    CHECK(enc_is(t, "ok", 0, (int[]){97, -1}), "single word alone");
    CHECK(enc_is(t, "a ok.", 0, (int[]){C('a'), 94, 97, C('.'), -1}), "single word, spaces");
    CHECK(enc_is(t, "book", 0, (int[]){C('b'), C('o'), C('o'), C('k'), -1}), "not in a word");
    CHECK(tok_is_special(t, 95) && !tok_is_special(t, 96), "special flags");
    CHECK(dec_is(t, (int32_t[]){95, C('a'), 94, C('b')}, 4, 1, "a b"), "decode skip special");
    CHECK(dec_is(t, (int32_t[]){95, C('a'), 94, C('b')}, 4, 0, "<s>a b"), "decode keep special");
    const int32_t *pre, *suf;
    size_t np, ns;
    tok_special_affixes(t, &pre, &np, &suf, &ns);
    CHECK(np == 1 && pre[0] == 95 && ns == 0, "affixes");
    /* invalid UTF-8 is an input error naming the offset */
    int32_t *ids;
    size_t n;
    ft_error err = {0};
    CHECK(tok_encode(t, "ab\xFF", 3, 0, &ids, &n, &err) == FT_ERR_INPUT &&
              strstr(err.what, "offset 2"),
          "invalid UTF-8: %s", err.what);
    tok_free(t);
}

/* Normalizers, seen through a model whose vocabulary has the characters we expect. */
static void test_normalizers(void) {
    const char *json =
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"f\": 0, \"i\": 1, \"x\": 2, \"\\u0307\": 3, "
        "\"_\": 4, \"e\": 5, \"\\u0301\": 6, \"\\u00e9\": 7}, \"merges\": []},"
        "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFKD\"}, "
        "{\"type\": \"Lowercase\"}, {\"type\": \"Strip\", \"strip_left\": true, "
        "\"strip_right\": true}, {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"\\\\s+\"}, "
        "\"content\": \"_\"}]}}";
    tokenizer *t = load_json(json);
    CHECK(t != NULL, "load");
    if (!t) return;
    /* U+FB01 (fi ligature) -> "fi" by NFKD; "I" with dot above U+0130 -> NFKD "I" U+0307 ->
     * lowercase "i" U+0307; spaces stripped at the ends, inner runs -> "_" */
    CHECK(enc_is(t, "  \xEF\xAC\x81 \xC4\xB0\t x ", 0, (int[]){0, 1, 4, 1, 3, 4, 2, -1}),
          "NFKD+Lowercase+Strip+Replace");
    /* é composed becomes e + U+0301 under NFKD */
    CHECK(enc_is(t, "\xC3\xA9", 0, (int[]){5, 6, -1}), "NFKD decomposes");
    tok_free(t);
    /* NFC composes e + U+0301 back into é */
    tokenizer *c = load_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"e\": 0, "
                             "\"\\u00e9\": 1}, \"merges\": []}, \"normalizer\": "
                             "{\"type\": \"NFC\"}}");
    CHECK(c != NULL, "load nfc");
    if (c) CHECK(enc_is(c, "e\xCC\x81", 0, (int[]){1, -1}), "NFC composes");
    tok_free(c);
}

static void test_errors(void) {
    ft_error err = {0};
    tokenizer *t = NULL;
    snprintf(path_, sizeof path_, "/tmp/ftune-tok-test-%d.json", (int)getpid());
    FILE *f = fopen(path_, "w");
    if (!f) return;
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
          "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, "
          "{\"type\": \"Precompiled\"}]}}",
          f);
    fclose(f);
    CHECK(tok_load(path_, &t, &err) == FT_ERR_INPUT && strstr(err.where, path_) &&
              strstr(err.where, "normalizer.normalizers[1].type") &&
              strstr(err.what, "Precompiled"),
          "unknown component: %s: %s", err.where, err.what);
    f = fopen(path_, "w");
    if (!f) return;
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", f);
    fclose(f);
    CHECK(tok_load(path_, &t, &err) == FT_ERR_INPUT && strstr(err.where, "model.merges[0]"),
          "merge out of vocabulary: %s", err.where);
    /* a template id that is no token (found by fuzz_tokenizer: "<s>" given id 1 in the template
     * while added_tokens renumbers it after the vocabulary) */
    f = fopen(path_, "w");
    if (!f) return;
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
          "\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true}], "
          "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
          "[{\"SpecialToken\": {\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], "
          "\"special_tokens\": {\"<s>\": {\"ids\": [5]}}}}",
          f);
    fclose(f);
    CHECK(tok_load(path_, &t, &err) == FT_ERR_INPUT && strstr(err.where, "post_processor") &&
              strstr(err.what, "id 5"),
          "template id out of the vocabulary: %s: %s", err.where, err.what);
    remove(path_);
}

int main(void) {
    test_merge_order();
    test_byte_fallback();
    test_added_tokens();
    test_normalizers();
    test_errors();
    return test_summary("tok");
}
