/*
 * gguf_tok.c: the tokenizer keys of an exported GGUF file (gguf_tok.h).
 *
 * The facts are those of llama.cpp's convert_hf_to_gguf.py and gguf-py's SpecialVocab as
 * vendored in llama-cpp-python 0.3.36 (conversion/base.py get_vocab_base, _set_vocab_gpt2,
 * gguf-py/gguf/vocab.py); the code is ftune's own. Supported: byte-level BPE tokenizer.json
 * (tokenizer.ggml.model "gpt2") whose pre-tokenizer llama.cpp knows by one of these names:
 *   "qwen2"      Split on Qwen2's regex (single digits) + ByteLevel without regex (Qwen2/2.5/3)
 *   "llama-bpe"  Split on Llama 3's regex (digits in threes) + ByteLevel without regex, with
 *                the BPE model's ignore_merges ("smaug-bpe" without it: llama.cpp's two names
 *                for that regex differ in ignore_merges alone)
 *   "smollm"     Digits(individual) + ByteLevel with GPT-2's regex (SmolLM, SmolLM2)
 *   "gpt-2"      ByteLevel with GPT-2's regex alone
 * The converter names the pre-tokenizer from a hash of the ids the tokenizer gives for a check
 * text; ftune reads the pre-tokenizer's own description instead, which identifies these four
 * exactly. SentencePiece-style tokenizer.json (BPE with byte_fallback and a Sequence decoder:
 * Llama 2, Mistral, TinyLlama) on a llama-architecture model is written as the converter's
 * LlamaModel does when only tokenizer.json is present (gguf-py's LlamaHfVocab):
 * tokenizer.ggml.model "llama", pre "default", scores, BYTE / CONTROL / USER_DEFINED types
 * (build_sp_lists), no merges; the special ids and flags as below.
 *
 *   tokens      the vocabulary by id, padded to the model's vocab_size with "[PAD<id>]"
 *   token_type  1 normal; added tokens 3 (control) when special or when they look special
 *               ("<|...|>", "<pad>", "<mask>", ...), else 4 (user-defined, U+2581 -> space);
 *               5 for the padding
 *   merges      "a b"; the pair form of newer tokenizer.json with a space inside a part written
 *               as U+0120, as SpecialVocab does
 *   special ids tokenizer_config.json's bos/eos/unk/sep/pad/mask_token looked up among the added
 *               tokens, then config.json's *_token_id for the ones still unset; the
 *               post-processor sets add_bos/add_eos (ByteLevel: both false; TemplateProcessing:
 *               its first/last special token, a last one other than eos becoming eos with the
 *               old eos as eot), tokenizer_config's add_*_token the ones it left unset
 *   chat        tokenizer_config.json's chat_template, else chat_template.jinja, else
 *               chat_template.json
 * Not done (the converter does): re-normalizing added tokens marked normalized=false through
 * the tokenizer (an identity for the byte-level tokenizers above), RobertaProcessing.
 */
#include "merge/gguf_tok.h"
#include "io/json.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* The Split regexes of the named pre-tokenizers (as they appear in tokenizer.json). */
#define RE_QWEN2                                                                                   \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"                                                               \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int is_type(const cJSON *o, const char *type) {
    const char *t = jstr(o, "type");
    return t && !strcmp(t, type);
}

static int byte_level(const cJSON *o, int use_regex) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "use_regex");
    return is_type(o, "ByteLevel") && (r ? cJSON_IsTrue(r) : 1) == use_regex;
}

/* llama.cpp's name of the pre-tokenizer, or NULL. Llama 3's regex is "llama-bpe" with the BPE
 * model's ignore_merges (llama.cpp sets ignore_merges for that name) and "smaug-bpe" (the same
 * regex, merges always applied) without it. */
static const char *pre_name(const cJSON *pre, int ignore_merges) {
    if (byte_level(pre, 1)) return "gpt-2";
    if (!is_type(pre, "Sequence")) return NULL;
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (cJSON_GetArraySize(l) != 2) return NULL;
    const cJSON *a = cJSON_GetArrayItem(l, 0), *b = cJSON_GetArrayItem(l, 1);
    if (is_type(a, "Digits") &&
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "individual_digits")) && byte_level(b, 1))
        return "smollm";
    if (!is_type(a, "Split") || !byte_level(b, 0)) return NULL;
    const char *re = jstr(cJSON_GetObjectItemCaseSensitive(a, "pattern"), "Regex");
    const char *beh = jstr(a, "behavior");
    if (!re || !beh || strcmp(beh, "Isolated") ||
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "invert")))
        return NULL;
    if (!strcmp(re, RE_QWEN2)) return "qwen2";
    if (!strcmp(re, RE_LLAMA3)) return ignore_merges ? "llama-bpe" : "smaug-bpe";
    return NULL;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* convert_hf_to_gguf's does_token_look_special. */
static int looks_special(const char *t) {
    if (!strcmp(t, "<pad>") || !strcmp(t, "<mask>") || !strcmp(t, "<2mass>") ||
        !strcmp(t, "[@BOS@]"))
        return 1;
    if (!strncmp(t, "<|", 2) && ends_with(t, "|>")) return 1;
    if (!strncmp(t, "<\xef\xbd\x9c", 4) && ends_with(t, "\xef\xbd\x9c>")) return 1; /* <｜ ｜> */
    return !strncmp(t, "<unused", 7) && ends_with(t, ">");
}

/* s with every U+2581 replaced by a space (malloc'ed). */
static char *spaces_for_2581(const char *s) {
    char *o = malloc(strlen(s) + 1), *p = o;
    if (!o) return NULL;
    while (*s)
        if (!strncmp(s, "\xe2\x96\x81", 3))
            *p++ = ' ', s += 3;
        else
            *p++ = *s++;
    *p = 0;
    return o;
}

/* A merge pair [a, b] as "a b", spaces inside a part as U+0120 (malloc'ed). */
static char *merge_pair(const char *a, const char *b) {
    size_t n = 2 * (strlen(a) + strlen(b)) + 2;
    char *o = malloc(n), *p = o;
    if (!o) return NULL;
    for (int k = 0; k < 2; k++) {
        for (const char *s = k ? b : a; *s; s++)
            if (*s == ' ')
                *p++ = (char)0xc4, *p++ = (char)0xa0;
            else
                *p++ = *s;
        if (!k) *p++ = ' ';
    }
    *p = 0;
    return o;
}

/* The special token types SpecialVocab handles that the GGUF writer has keys for. */
enum { SP_BOS, SP_EOS, SP_UNK, SP_SEP, SP_PAD, SP_MASK, SP_EOT, SP_COUNT };
static const char *const sp_names[SP_COUNT] = {"bos", "eos", "unk", "sep", "pad", "mask", "eot"};
static const char *const sp_keys[SP_COUNT] = {
    "tokenizer.ggml.bos_token_id",     "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id", "tokenizer.ggml.mask_token_id",
    "tokenizer.ggml.eot_token_id"};

typedef struct specials {
    long id[SP_COUNT]; /* -1: unset */
    int order[SP_COUNT], n;
    int add[3]; /* add_bos, add_eos, add_sep: -1 unset */
    int add_order[3], nadd;
} specials;

static void set_id(specials *s, int typ, long id, int vocab) {
    if (id < 0 || id >= vocab || s->id[typ] >= 0) return;
    s->id[typ] = id;
    s->order[s->n++] = typ;
}

static void set_add(specials *s, int typ, int v, int force) {
    if (s->add[typ] < 0) s->add_order[s->nadd++] = typ;
    if (s->add[typ] < 0 || force) s->add[typ] = v;
}

/* tokenizer_config's "X_token": a string or {"content": ...}. */
static const char *tc_token(const cJSON *tc, const char *typ) {
    char key[32];
    snprintf(key, sizeof key, "%s_token", typ);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(tc, key);
    if (cJSON_IsString(e)) return e->valuestring;
    if (cJSON_IsObject(e)) return jstr(e, "content");
    return NULL;
}

static void set_tc_token(cJSON *tc, const char *typ, const char *content) {
    char key[32];
    snprintf(key, sizeof key, "%s_token", typ);
    cJSON_DeleteItemFromObjectCaseSensitive(tc, key);
    cJSON_AddStringToObject(tc, key, content);
}

static const char *special_id(const cJSON *item) {
    return jstr(cJSON_GetObjectItemCaseSensitive(item, "SpecialToken"), "id");
}

static const char *sequence_id(const cJSON *item) {
    return jstr(cJSON_GetObjectItemCaseSensitive(item, "Sequence"), "id");
}

static int is_str(const char *a, const char *b) { return a && b && !strcmp(a, b); }

/* SpecialVocab's reading of TemplateProcessing's pair template (gguf-py vocab.py): without the
 * single template's first / last special token at its ends, "A [x] [y] B" sets add_sep, true
 * when x (with no trailing special token in single) or y is the sep or eos token; a sep then
 * defaults to eos. */
static void pair_separator(const cJSON *pair, const char *first, const char *last, cJSON *tc,
                           specials *s) {
    int n = cJSON_GetArraySize(pair);
    int a = first && is_str(special_id(cJSON_GetArrayItem(pair, 0)), first) ? 1 : 0;
    int b = last && n && is_str(special_id(cJSON_GetArrayItem(pair, n - 1)), last) ? n - 1 : n;
    if (b - a < 3 || !is_str(sequence_id(cJSON_GetArrayItem(pair, a)), "A") ||
        !is_str(sequence_id(cJSON_GetArrayItem(pair, b - 1)), "B"))
        return;
    const char *sep = tc_token(tc, "sep"), *eos = tc_token(tc, "eos");
    const char *x = special_id(cJSON_GetArrayItem(pair, a + 1));
    int add = (is_str(x, sep) || is_str(x, eos)) && !last;
    if (b - a - 2 == 2) {
        const char *y = special_id(cJSON_GetArrayItem(pair, a + 2));
        if (is_str(y, sep) || is_str(y, eos)) add = 1;
    }
    set_add(s, 2, add, 1);
    if (add && !sep && eos) {
        char *e = strdup(eos);
        if (e) set_tc_token(tc, "sep", e);
        free(e);
    }
}

/* The post-processor's add_bos / add_eos (and the eos / eot it implies). */
static void post_processor(const cJSON *pp, cJSON *tc, specials *s, int *want_eot) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pp, "processors");
    int n = list ? cJSON_GetArraySize(list) : 1;
    for (int i = 0; i < n; i++) {
        const cJSON *p = list ? cJSON_GetArrayItem(list, i) : pp;
        if (is_type(p, "ByteLevel")) {
            if (s->add[SP_BOS] < 0) set_add(s, SP_BOS, 0, 0);
            if (s->add[SP_EOS - 0] < 0) set_add(s, SP_EOS, 0, 0);
            continue;
        }
        if (!is_type(p, "TemplateProcessing")) continue;
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
        int k = cJSON_GetArraySize(single);
        if (k <= 1 || !tc) continue;
        const char *first = jstr(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id");
        const char *last = jstr(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, k - 1), "SpecialToken"),
            "id");
        if (first) {
            const char *bos = tc_token(tc, "bos");
            if (!bos) set_tc_token(tc, "bos", first), bos = tc_token(tc, "bos");
            set_add(s, SP_BOS, !strcmp(first, bos), 1);
        }
        if (last) {
            const char *eos = tc_token(tc, "eos");
            if (!eos || strcmp(last, eos)) {
                if (eos) {
                    set_tc_token(tc, "eot", eos);
                    *want_eot = 1;
                }
                set_tc_token(tc, "eos", last);
            }
            set_add(s, SP_EOS, 1, 1);
        }
        pair_separator(cJSON_GetObjectItemCaseSensitive(p, "pair"), first, last, tc, s);
    }
}

typedef struct tok_lists {
    char **tokens; /* vocab entries (malloc'ed) */
    int32_t *types;
    char **merges;
    size_t nmerges;
    int n;
} tok_lists;

static void lists_free(tok_lists *l) {
    for (int i = 0; l->tokens && i < l->n; i++)
        free(l->tokens[i]);
    for (size_t i = 0; l->merges && i < l->nmerges; i++)
        free(l->merges[i]);
    free(l->tokens);
    free(l->types);
    free(l->merges);
}

/* An entry of tokenizer.json's added_tokens: its id (below vocab) and content. */
static ft_status added_entry(const cJSON *a, int vocab, const char *file, int *id, const char **c,
                             ft_error *err) {
    const cJSON *idj = cJSON_GetObjectItemCaseSensitive(a, "id");
    *c = jstr(a, "content");
    if (!cJSON_IsNumber(idj) || !*c || idj->valuedouble < 0 || idj->valuedouble >= vocab) {
        char where[4300];
        snprintf(where, sizeof where, "%s: field \"added_tokens\"", file);
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "the tokenizer does not belong to this model (config.json "
                            "vocab_size)",
                            "an added token without content or with an id not below %d", vocab);
    }
    *id = (int)idj->valuedouble;
    return FT_OK;
}

static ft_status build_lists(const cJSON *tj, int vocab, const char *file, tok_lists *l,
                             ft_error *err) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    l->n = vocab;
    l->tokens = calloc((size_t)vocab, sizeof *l->tokens);
    l->types = calloc((size_t)vocab, sizeof *l->types);
    if (!l->tokens || !l->types)
        return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    char where[4300];
    for (const cJSON *e = v ? v->child : NULL; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= vocab) {
            snprintf(where, sizeof where, "%s: field \"model.vocab\"", file);
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "the tokenizer does not belong to this model (config.json "
                                "vocab_size)",
                                "token \"%.40s\" has id %g, not below the model's vocab_size %d",
                                e->string, e->valuedouble, vocab);
        }
        int id = (int)e->valuedouble;
        free(l->tokens[id]);
        l->tokens[id] = strdup(e->string);
        l->types[id] = TT_NORMAL;
    }
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const char *c;
        int id;
        ft_status st = added_entry(a, vocab, file, &id, &c, err);
        if (st) return st;
        free(l->tokens[id]);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special")) || looks_special(c)) {
            l->tokens[id] = strdup(c);
            l->types[id] = TT_CONTROL;
        } else {
            l->tokens[id] = spaces_for_2581(c);
            l->types[id] = TT_USER;
        }
    }
    for (int i = 0; i < vocab; i++)
        if (!l->types[i]) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            free(l->tokens[i]);
            l->tokens[i] = strdup(pad);
            l->types[i] = TT_UNUSED;
        }
    for (int i = 0; i < vocab; i++)
        if (!l->tokens[i]) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(model, "merges");
    int nm = cJSON_GetArraySize(m);
    l->merges = calloc((size_t)(nm ? nm : 1), sizeof *l->merges);
    if (!l->merges) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    for (const cJSON *e = m ? m->child : NULL; e; e = e->next) {
        char *s = NULL;
        if (cJSON_IsString(e))
            s = strdup(e->valuestring);
        else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                 cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                 cJSON_IsString(cJSON_GetArrayItem(e, 1)))
            s = merge_pair(cJSON_GetArrayItem(e, 0)->valuestring,
                           cJSON_GetArrayItem(e, 1)->valuestring);
        else {
            snprintf(where, sizeof where, "%s: field \"model.merges\"", file);
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "entry %zu is neither \"a b\" nor [\"a\", \"b\"]", l->nmerges);
        }
        if (!s) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
        l->merges[l->nmerges++] = s;
    }
    return FT_OK;
}

typedef struct tok_id {
    const char *s;
    int id;
} tok_id;

static int tok_id_cmp(const void *a, const void *b) {
    return strcmp(((const tok_id *)a)->s, ((const tok_id *)b)->s);
}

/* Scores llama.cpp's SentencePiece tokenizer reproduces the BPE merges with: it merges the
 * adjacent pair whose concatenation is the token of highest score (leftmost on a tie), and
 * `tokenizers` the pair of lowest merge rank, so a token scores -(rank of the first merge that
 * makes it), and a token no merge makes scores below all of them. (The converter writes -1000
 * for every token, with which llama.cpp merges in text order and its ids differ from
 * tokenizers'.) */
static ft_status merge_scores(const cJSON *model, const tok_lists *l, float *scores,
                              const char *file, ft_error *err) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(model, "merges");
    int nm = cJSON_GetArraySize(m);
    tok_id *ix = malloc((size_t)l->n * sizeof *ix);
    char *buf = NULL;
    size_t cap = 0;
    if (!ix) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    for (int i = 0; i < l->n; i++)
        ix[i] = (tok_id){l->tokens[i], i}, scores[i] = -(float)nm - 1.0f;
    qsort(ix, (size_t)l->n, sizeof *ix, tok_id_cmp);
    int rank = 0;
    for (const cJSON *e = m ? m->child : NULL; e; e = e->next, rank++) {
        const char *a = NULL, *b = NULL, *sp = NULL;
        size_t na = 0;
        if (cJSON_IsString(e) && (sp = strchr(e->valuestring, ' ')))
            a = e->valuestring, na = (size_t)(sp - a), b = sp + 1;
        else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                 cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                 cJSON_IsString(cJSON_GetArrayItem(e, 1)))
            a = cJSON_GetArrayItem(e, 0)->valuestring, na = strlen(a),
            b = cJSON_GetArrayItem(e, 1)->valuestring;
        if (!a) {
            free(ix), free(buf);
            char where[4300];
            snprintf(where, sizeof where, "%s: field \"model.merges\"", file);
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "entry %d is neither \"a b\" nor [\"a\", \"b\"]", rank);
        }
        size_t n = na + strlen(b) + 1;
        if (n > cap) {
            char *nb = realloc(buf, n * 2);
            if (!nb) {
                free(ix), free(buf);
                return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
            }
            buf = nb, cap = n * 2;
        }
        memcpy(buf, a, na);
        strcpy(buf + na, b);
        tok_id key = {buf, 0};
        const tok_id *hit = bsearch(&key, ix, (size_t)l->n, sizeof *ix, tok_id_cmp);
        if (hit && scores[hit->id] < -(float)rank) scores[hit->id] = -(float)rank;
    }
    free(ix);
    free(buf);
    return FT_OK;
}

/* SentencePiece-style tokenizer.json (Llama 2, Mistral, TinyLlama): a BPE model with byte
 * fallback and a Sequence decoder, the test of gguf-py's LlamaHfVocab, which the converter's
 * LlamaModel uses when only tokenizer.json is present (no tokenizer.model). */
static int sp_style(const cJSON *tj) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    return is_type(model, "BPE") &&
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")) &&
           is_type(cJSON_GetObjectItemCaseSensitive(tj, "decoder"), "Sequence");
}

/* "<0xXX>": a byte token */
static int byte_token(const char *t) {
    return strlen(t) == 6 && !strncmp(t, "<0x", 3) && t[5] == '>' &&
           isxdigit((unsigned char)t[3]) && isxdigit((unsigned char)t[4]);
}

/* Is c one of transformers' special tokens (all_special_tokens: the named ones of
 * tokenizer_config.json and its additional_special_tokens)? */
static int named_special(const cJSON *tc, const char *c) {
    static const char *const named[] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
    for (size_t i = 0; tc && i < sizeof named / sizeof named[0]; i++) {
        const char *t = tc_token(tc, named[i]);
        if (t && !strcmp(t, c)) return 1;
    }
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(tc, "additional_special_tokens");
    for (const cJSON *e = extra ? extra->child : NULL; e; e = e->next) {
        const char *t = cJSON_IsString(e) ? e->valuestring : jstr(e, "content");
        if (t && !strcmp(t, c)) return 1;
    }
    return 0;
}

/* LlamaHfVocab's lists (gguf-py vocab.py): the model's vocabulary by id (an added token's content
 * where it takes an id of the model's range), BYTE for "<0xXX>", CONTROL for transformers'
 * special tokens, else NORMAL; then the added tokens past the model's range by id, CONTROL when
 * special, else USER_DEFINED, their text as written; scores from the merges (merge_scores, where
 * the converter writes -1000). The converter stops at
 * the tokenizer's size; ftune pads to config.json's vocab_size as the byte-level path does
 * (llama.cpp needs a token per embedding row). */
static ft_status build_sp_lists(const cJSON *tj, const cJSON *tc, int vocab, int phi3,
                                const char *file, tok_lists *l, float **scores, ft_error *err) {
    const cJSON *v =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tj, "model"), "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    l->n = vocab;
    l->tokens = calloc((size_t)vocab, sizeof *l->tokens);
    l->types = calloc((size_t)vocab, sizeof *l->types);
    *scores = malloc((size_t)vocab * sizeof **scores);
    if (!l->tokens || !l->types || !*scores)
        return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    char where[4300];
    int base = cJSON_GetArraySize(v);
    for (const cJSON *e = v ? v->child : NULL; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= vocab ||
            e->valuedouble >= base) {
            snprintf(where, sizeof where, "%s: field \"model.vocab\"", file);
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "the tokenizer does not belong to this model (config.json "
                                "vocab_size)",
                                "token \"%.40s\" has id %g, not below the vocabulary's size %d "
                                "and the model's vocab_size %d",
                                e->string, e->valuedouble, base, vocab);
        }
        int id = (int)e->valuedouble;
        free(l->tokens[id]);
        l->tokens[id] = strdup(e->string);
        l->types[id] = byte_token(e->string)          ? TT_BYTE
                       : named_special(tc, e->string) ? TT_CONTROL
                                                      : TT_NORMAL;
    }
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const char *c;
        int id;
        ft_status st = added_entry(a, vocab, file, &id, &c, err);
        if (st) return st;
        free(l->tokens[id]);
        l->tokens[id] = strdup(c);
        if (phi3) /* Phi3MiniModel.set_vocab: every added token by its "special" flag */
            l->types[id] =
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special")) ? TT_CONTROL : TT_USER;
        else if (id < base)
            l->types[id] = byte_token(c) ? TT_BYTE : named_special(tc, c) ? TT_CONTROL : TT_NORMAL;
        else
            l->types[id] = named_special(tc, c) ? TT_CONTROL : TT_USER;
    }
    for (int i = 0; i < vocab; i++) {
        if (!l->types[i]) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            free(l->tokens[i]);
            l->tokens[i] = strdup(pad);
            l->types[i] = TT_UNUSED;
        }
        if (!l->tokens[i]) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    }
    ft_status st =
        merge_scores(cJSON_GetObjectItemCaseSensitive(tj, "model"), l, *scores, file, err);
    if (st || !phi3) return st;
    /* Phi3MiniModel.set_vocab's scores for the added tokens (-1000) and the padding (-10000) */
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        (*scores)[(int)id->valuedouble] = -1000.0f; /* checked by added_entry above */
    }
    for (int i = 0; i < vocab; i++)
        if (l->types[i] == TT_UNUSED) (*scores)[i] = -10000.0f;
    return FT_OK;
}

/* The added token with this content, or -1. */
static long added_id(const cJSON *tj, const char *content) {
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const char *c = jstr(a, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (c && !strcmp(c, content) && cJSON_IsNumber(id)) return (long)id->valuedouble;
    }
    return -1;
}

static ft_status read_text(const char *path, char **out, ft_error *err) {
    size_t len;
    return file_read_all(path, out, &len, err);
}

/* The chat template (malloc'ed), or NULL. */
static ft_status chat_template(const char *dir, const cJSON *tc, char **out, ft_error *err) {
    *out = NULL;
    if (!tc) return FT_OK;
    const char *t = jstr(tc, "chat_template");
    if (t)
        return (*out = strdup(t)) ? FT_OK
                                  : ft_error_set(err, FT_ERR_RUNTIME, dir, NULL, "out of memory");
    if (cJSON_GetObjectItemCaseSensitive(tc, "chat_template"))
        return FT_OK; /* a list: not written */
    char path[4200];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        return read_text(path, out, err);
    }
    snprintf(path, sizeof path, "%s/chat_template.json", dir);
    f = fopen(path, "rb");
    if (!f) return FT_OK;
    fclose(f);
    cJSON *j = NULL;
    ft_status st = json_load_file(path, &j, err);
    const char *s = st ? NULL : jstr(j, "chat_template");
    if (s && !(*out = strdup(s)))
        st = ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    cJSON_Delete(j);
    return st;
}

ft_status gguf_tok_write(gguf_writer *w, const char *model_dir, const cJSON *cfg, int vocab,
                         gguf_tok_flavor flavor, ft_error *err) {
    char file[4200], tcfile[4200];
    int llama_arch = flavor == GGUF_TOK_LLAMA;
    snprintf(file, sizeof file, "%s/tokenizer.json", model_dir);
    snprintf(tcfile, sizeof tcfile, "%s/tokenizer_config.json", model_dir);
    cJSON *tj = NULL, *tc = NULL;
    tok_lists l = {0};
    char *tmpl = NULL;
    float *scores = NULL;
    ft_status st = json_load_file(file, &tj, err);
    if (st) {
        char what[1024];
        snprintf(what, sizeof what, "%s", err->what);
        return ft_error_set(err, st, file,
                            "the GGUF file needs the model's tokenizer: put its tokenizer.json "
                            "beside config.json",
                            "cannot read the tokenizer (%s)", what);
    }
    FILE *f = fopen(tcfile, "rb");
    if (f) {
        fclose(f);
        if ((st = json_load_file(tcfile, &tc, err))) goto done;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(tj, "pre_tokenizer");
    const char *name =
        pre_name(pre, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges")));
    int sp = flavor != GGUF_TOK_GPT2 && sp_style(tj);
    if (sp) name = "default";
    if (flavor == GGUF_TOK_PHI3 && !sp) {
        char where[4300];
        snprintf(where, sizeof where, "%s: field \"model\"", file);
        st = ft_error_set(err, FT_ERR_INPUT, where,
                          "a Phi-3 folder is exported with tokenizer_class GPT2Tokenizer "
                          "(tokenizer_config.json) or a SentencePiece-style tokenizer.json (BPE "
                          "with byte_fallback); for others use convert_hf_to_gguf.py, which reads "
                          "tokenizer.model",
                          "not a SentencePiece-style BPE tokenizer");
        goto done;
    }
    if (!is_type(model, "BPE") || !name) {
        char where[4300];
        snprintf(where, sizeof where, "%s: field \"%s\"", file,
                 !is_type(model, "BPE") ? "model.type" : "pre_tokenizer");
        st = ft_error_set(err, FT_ERR_INPUT, where,
                          "supported: byte-level BPE with the pre-tokenizer of Qwen2/Qwen3 "
                          "(\"qwen2\"), Llama 3 (\"llama-bpe\"), SmolLM (\"smollm\") or GPT-2 "
                          "(\"gpt-2\"), and for Llama/Mistral models SentencePiece-style BPE "
                          "with byte_fallback; see docs/merge.md, Export to GGUF",
                          "a tokenizer ftune cannot describe to llama.cpp yet");
        goto done;
    }
    if ((st = sp ? build_sp_lists(tj, tc, vocab, flavor == GGUF_TOK_PHI3, file, &l, &scores, err)
                 : build_lists(tj, vocab, file, &l, err)))
        goto done;

    specials s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < SP_COUNT; i++)
        s.id[i] = -1;
    for (int i = 0; i < 3; i++)
        s.add[i] = -1;
    int want_eot = 0;
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(tj, "post_processor");
    if (pp && !cJSON_IsNull(pp)) post_processor(pp, tc, &s, &want_eot);
    if (tc) {
        for (int typ = 0; typ < SP_COUNT; typ++) {
            if (typ == SP_EOT && !want_eot) continue;
            char key[32];
            snprintf(key, sizeof key, "add_%s_token", sp_names[typ]);
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(tc, key);
            if (typ <= SP_EOS && cJSON_IsBool(a)) set_add(&s, typ, cJSON_IsTrue(a), 0);
            if (typ == SP_SEP && cJSON_IsBool(a)) set_add(&s, 2, cJSON_IsTrue(a), 0);
            const char *c = tc_token(tc, sp_names[typ]);
            if (c) set_id(&s, typ, added_id(tj, c), vocab);
        }
        if ((st = chat_template(model_dir, tc, &tmpl, err))) goto done;
    }
    for (int typ = 0; typ < SP_COUNT; typ++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token_id", sp_names[typ]);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
        if (cJSON_IsNumber(v) && v->valuedouble == (double)(long)v->valuedouble)
            set_id(&s, typ, (long)v->valuedouble, vocab);
    }

    if (llama_arch && tc) {
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(tc, "add_prefix_space");
        if (cJSON_IsBool(aps))
            gguf_writer_kv_bool(w, "tokenizer.ggml.add_space_prefix", cJSON_IsTrue(aps));
    }
    gguf_writer_kv_str(w, "tokenizer.ggml.model", sp ? "llama" : "gpt2");
    gguf_writer_kv_str(w, "tokenizer.ggml.pre", name);
    gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)l.tokens,
                           (size_t)vocab);
    if (scores) gguf_writer_kv_arr_f32(w, "tokenizer.ggml.scores", scores, (size_t)vocab);
    gguf_writer_kv_arr_i32(w, "tokenizer.ggml.token_type", l.types, (size_t)vocab);
    if (l.nmerges)
        gguf_writer_kv_arr_str(w, "tokenizer.ggml.merges", (const char *const *)l.merges,
                               l.nmerges);
    for (int i = 0; i < s.n; i++)
        gguf_writer_kv_u32(w, sp_keys[s.order[i]], (uint32_t)s.id[s.order[i]]);
    static const char *const add_keys[3] = {"tokenizer.ggml.add_bos_token",
                                            "tokenizer.ggml.add_eos_token",
                                            "tokenizer.ggml.add_sep_token"};
    for (int i = 0; i < s.nadd; i++)
        gguf_writer_kv_bool(w, add_keys[s.add_order[i]], s.add[s.add_order[i]]);
    /* convert_hf_to_gguf's LlamaModel: the small Granite models (vocab 49152) add no BOS */
    if (llama_arch && vocab == 49152 && s.add[SP_BOS] < 0)
        gguf_writer_kv_bool(w, "tokenizer.ggml.add_bos_token", 0);
    if (tmpl) gguf_writer_kv_str(w, "tokenizer.chat_template", tmpl);
done:
    free(tmpl);
    free(scores);
    lists_free(&l);
    cJSON_Delete(tj);
    cJSON_Delete(tc);
    return st;
}
