/*
 * gguf_vocab.c: the tokenizer of a GGUF file, built from its metadata as the tokenizer.json and
 * tokenizer_config.json that transformers' GGUF loader builds (transformers 5.23,
 * integrations/gguf/gguf_tokenizer_mapping.py), so tok_load runs the same pipeline over it.
 *
 * tokenizer.ggml.model "llama" (SentencePiece vocabularies): transformers' LlamaTokenizer over
 *   vocab {token: index} (a repeated token keeps its last index) and merges recovered from the
 *   scores by generate_merges: for each token (in first-seen order, with its last score), every
 *   split into two pieces both in the vocabulary (split at characters, sorted by the pieces'
 *   ids), then all of them stably sorted by (score, len(left), len(right)) descending. Model BPE
 *   with byte_fallback and fuse_unk, no unk token; pre-tokenizer Metaspace ("first", no split);
 *   decoder Replace(U+2581 -> " "), ByteFallback, Fuse, Strip(1 leading space). For
 *   general.architecture phi3 (transformers' phi3_tokenizer): no pre-tokenizer but the normalizer
 *   Sequence[Prepend(U+2581), Replace(" " -> U+2581)].
 * tokenizer.ggml.model "gpt2" (byte-level BPE): transformers' GPT2Tokenizer over the tokens
 *   (respelled in the GPT-2 byte alphabet where they are not already) and tokenizer.ggml.merges
 *   (or merges recovered by generate_merges by index); pre-tokenizer ByteLevel, or, when
 *   tokenizer.ggml.pre names a known split (llama3 / llama-bpe / ..., qwen2 / ...), that regex
 *   (isolated) followed by ByteLevel without its own regex; decoder ByteLevel.
 * Added tokens: the tokens of type 3 (control) as special tokens (for gpt2 only those spelled in
 *   the byte alphabet), of type 4 (user defined) as plain added tokens, and the bos / eos / unk /
 *   pad tokens named by tokenizer.ggml.*_token_id as special tokens; none normalized.
 * Post-processor: BOS when tokenizer.ggml.add_bos_token (default true for "llama", false
 *   otherwise), EOS when tokenizer.ggml.add_eos_token.
 * tokenizer_config: bos_token, eos_token, unk_token, pad_token (strings), chat_template
 *   (tokenizer.chat_template), add_bos_token, add_eos_token.
 */
#include "tok/tok_internal.h"

#include "io/gguf.h"

#include <stdio.h>

/* ---- a string -> last index map, as a Python dict built from enumerate() ------------------ */
typedef struct vmap {
    int32_t *slot;
    size_t mask;
    char **str;
    size_t *len;
} vmap;

static int vmap_build(vmap *m, char **str, size_t *len, size_t n) {
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return -1;
    for (size_t i = 0; i < cap; i++)
        m->slot[i] = -1;
    m->mask = cap - 1, m->str = str, m->len = len;
    for (size_t id = 0; id < n; id++) {
        size_t h = tok_hash(str[id], len[id]) & m->mask;
        while (m->slot[h] >= 0) {
            int32_t o = m->slot[h];
            if (len[o] == len[id] && !memcmp(str[o], str[id], len[id])) break;
            h = (h + 1) & m->mask;
        }
        m->slot[h] = (int32_t)id; /* the last index of a string wins */
    }
    return 0;
}

static int32_t vmap_get(const vmap *m, const char *s, size_t n) {
    size_t h = tok_hash(s, n) & m->mask;
    for (; m->slot[h] >= 0; h = (h + 1) & m->mask) {
        int32_t o = m->slot[h];
        if (m->len[o] == n && !memcmp(m->str[o], s, n)) return o;
    }
    return -1;
}

/* ---- generate_merges ---------------------------------------------------------------------- */
typedef struct cand {
    int32_t tok;     /* the token split */
    uint32_t cut;    /* byte offset of the split */
    int32_t il, ir;  /* vocab ids of the pieces */
    double score;    /* the token's score (or its index when sorting by index) */
    uint32_t ll, lr; /* lengths in characters */
    size_t seq;      /* order of appearance, for stable sorts */
} cand;

static int cmp_local(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->il != y->il) return x->il < y->il ? -1 : 1;
    if (x->ir != y->ir) return x->ir < y->ir ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int g_reverse; /* qsort has no context argument; set around the one call */
static int cmp_global(const void *a, const void *b) {
    const cand *x = a, *y = b;
    int c = x->score < y->score ? -1 : x->score > y->score ? 1 : 0;
    if (!c) c = x->ll < y->ll ? -1 : x->ll > y->ll;
    if (!c) c = x->lr < y->lr ? -1 : x->lr > y->lr;
    if (g_reverse) c = -c;
    return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

static uint32_t n_chars(const char *s, size_t n) {
    uint32_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Append generate_merges(vocab, scores) to the JSON array merges; scores NULL: by index. */
static int gen_merges(char **str, size_t *len, size_t n, const vmap *vm, const float *scores,
                      cJSON *merges) {
    cand *all = NULL;
    size_t na = 0, cap = 0;
    int rc = -1;
    /* dict(zip(tokens, scores)) iterates first occurrences with the last score */
    for (size_t t = 0; t < n; t++) {
        int32_t last = vmap_get(vm, str[t], len[t]);
        /* the first occurrence of str[t] is the smallest index with that string; tokens repeat
         * rarely, so find it only when the map says the string has another index */
        if (last != (int32_t)t) {
            size_t u = 0;
            while (u < t && !(len[u] == len[t] && !memcmp(str[u], str[t], len[t])))
                u++;
            if (u < t) continue;
        }
        double sc = scores ? (double)scores[last] : (double)last;
        size_t start = na;
        const char *s = str[t];
        for (size_t cut = 1; cut < len[t]; cut++) {
            if (((unsigned char)s[cut] & 0xC0) == 0x80) continue; /* split at characters */
            int32_t il = vmap_get(vm, s, cut), ir = vmap_get(vm, s + cut, len[t] - cut);
            if (il < 0 || ir < 0) continue;
            if (na == cap) {
                cap = cap ? cap * 2 : 1024;
                cand *q = realloc(all, cap * sizeof *q);
                if (!q) goto done;
                all = q;
            }
            all[na] = (cand){(int32_t)t,
                             (uint32_t)cut,
                             il,
                             ir,
                             sc,
                             n_chars(s, cut),
                             n_chars(s + cut, len[t] - cut),
                             na};
            na++;
        }
        if (na > start) qsort(all + start, na - start, sizeof *all, cmp_local);
    }
    for (size_t i = 0; i < na; i++)
        all[i].seq = i;
    g_reverse = scores != NULL;
    if (na) qsort(all, na, sizeof *all, cmp_global);
    tok_arena a = {0};
    for (size_t i = 0; i < na; i++) {
        const char *s = str[all[i].tok];
        a.len = 0;
        arena_push(&a, s, all[i].cut);
        arena_push(&a, "", 1);
        size_t r = a.len;
        arena_push(&a, s + all[i].cut, len[all[i].tok] - all[i].cut);
        arena_push(&a, "", 1);
        if (a.oom) {
            free(a.p);
            goto done;
        }
        const char *pair[2] = {a.p, a.p + r};
        cJSON *p = cJSON_CreateStringArray(pair, 2);
        if (!p) {
            free(a.p);
            goto done;
        }
        cJSON_AddItemToArray(merges, p);
    }
    free(a.p);
    rc = 0;
done:
    free(all);
    return rc;
}

/* ---- the documents ------------------------------------------------------------------------ */

/* Is general.architecture arch? */
static int is_arch(const gguf_file *g, const char *arch) {
    gguf_str a = {0};
    return gguf_find_kv(g, "general.architecture") &&
           !gguf_get_str(g, "general.architecture", &a, NULL) && a.n == strlen(arch) &&
           !memcmp(a.p, arch, a.n);
}

/* The regexes of transformers' GGUF_PRE_TOKENIZER_SPLITS, by tokenizer.ggml.pre. */
static const char LLAMA3_SPLIT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_SPLIT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const struct {
    const char *pre, *split;
    int bl_regex; /* ByteLevel keeps its own regex after the split */
} pre_splits[] = {
    {"llama3", LLAMA3_SPLIT, 0},
    {"llama-v3", LLAMA3_SPLIT, 0},
    {"llama-bpe", LLAMA3_SPLIT, 0},
    {"falcon3", LLAMA3_SPLIT, 0},
    {"falcon-h1", LLAMA3_SPLIT, 0},
    {"pixtral", LLAMA3_SPLIT, 0},
    {"midm-2.0", LLAMA3_SPLIT, 0},
    {"lfm2", LLAMA3_SPLIT, 0},
    {"jina-v5-nano", LLAMA3_SPLIT, 0},
    {"dbrx", LLAMA3_SPLIT, 0},
    {"smaug-bpe", LLAMA3_SPLIT, 0},
    {"qwen2", QWEN2_SPLIT, 0},
    {"deepseek-r1-qwen", QWEN2_SPLIT, 0},
    {"kormo", QWEN2_SPLIT, 0},
    {"f2llmv2", QWEN2_SPLIT, 0},
    {"megrez", QWEN2_SPLIT, 0},
    /* Not in transformers' table, whose GGUF loader gives SmolLM plain ByteLevel: SmolLM's own
     * tokenizer.json isolates every digit (Digits, individual) before ByteLevel with its regex,
     * and so does llama.cpp's "smollm" pre-type ("\\p{N}", then GPT-2's regex; llama-vocab.cpp). */
    {"smollm", "\\p{N}", 1},
};

typedef struct vocab_src {
    const gguf_file *g;
    int byte_level; /* gpt2 */
    size_t n;       /* tokens */
    char **str;     /* the tokens (NUL-terminated copies; respelled for gpt2) */
    size_t *len;
    const gguf_kv *types; /* tokenizer.ggml.token_type or NULL */
} vocab_src;

static void vocab_free(vocab_src *v) {
    for (size_t i = 0; v->str && i < v->n; i++)
        free(v->str[i]);
    free(v->str);
    free(v->len);
}

static ft_status key_error(const gguf_file *g, const char *key, const char *hint, const char *what,
                           ft_error *err) {
    char w[4400];
    snprintf(w, sizeof w, "%s: key \"%s\"", gguf_path(g), key);
    return ft_error_set(err, FT_ERR_INPUT, w, hint, "%s", what);
}

/* Every char of s (UTF-8) is a GPT-2 byte character. */
static int in_alphabet(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t adv;
        uint32_t cp = utf8_next((const unsigned char *)s + i, n - i, &adv);
        if (tok_char_byte(cp) < 0) return 0;
        i += adv;
    }
    return 1;
}

static ft_status read_vocab(const gguf_file *g, vocab_src *v, ft_error *err) {
    const gguf_kv *toks;
    ft_status st;
    if (!gguf_find_kv(g, "tokenizer.ggml.model"))
        return key_error(g, "tokenizer.ggml.model",
                         "this file carries no tokenizer; give one with --tokenizer "
                         "tokenizer.json, or tokenize the data first (input_ids)",
                         "required key is missing", err);
    gguf_str model;
    if ((st = gguf_get_str(g, "tokenizer.ggml.model", &model, err))) return st;
    int llama = model.n == 5 && !memcmp(model.p, "llama", 5);
    v->byte_level = model.n == 4 && !memcmp(model.p, "gpt2", 4);
    if (!llama && !v->byte_level) {
        char what[256];
        snprintf(what, sizeof what, "unsupported tokenizer model \"%.*s\"",
                 (int)(model.n < 64 ? model.n : 64), model.p);
        return key_error(g, "tokenizer.ggml.model",
                         "ftune reads \"llama\" (SentencePiece) and \"gpt2\" (byte-level BPE) "
                         "vocabularies",
                         what, err);
    }
    if (!gguf_find_kv(g, "tokenizer.ggml.tokens"))
        return key_error(g, "tokenizer.ggml.tokens", "the file's vocabulary is incomplete",
                         "required key is missing", err);
    if ((st = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STR, &toks, err))) return st;
    if (toks->count < 1 || toks->count > (1u << 28))
        return key_error(g, "tokenizer.ggml.tokens", NULL, "expected 1 to 2^28 tokens", err);
    v->g = g;
    v->n = (size_t)toks->count;
    v->str = calloc(v->n, sizeof *v->str);
    v->len = calloc(v->n, sizeof *v->len);
    if (!v->str || !v->len)
        return ft_error_set(err, FT_ERR_RUNTIME, gguf_path(g), NULL, "out of memory");
    if (v->byte_level) tok_bytelevel_init();
    for (size_t i = 0; i < v->n; i++) {
        const gguf_str *s = &toks->strs[i];
        if (utf8_invalid_at((const unsigned char *)s->p, s->n) != (size_t)-1 ||
            memchr(s->p, 0, s->n)) {
            char what[128];
            snprintf(what, sizeof what, "token %zu is not valid UTF-8 text", i);
            return key_error(g, "tokenizer.ggml.tokens", "the file may be damaged", what, err);
        }
        if (v->byte_level && !in_alphabet(s->p, s->n)) {
            char *o = malloc(s->n * 2 + 1);
            if (!o) return ft_error_set(err, FT_ERR_RUNTIME, gguf_path(g), NULL, "out of memory");
            size_t k = 0;
            for (size_t b = 0; b < s->n; b++)
                k += (size_t)utf8_put(tok_byte_char[(unsigned char)s->p[b]], o + k);
            o[k] = 0;
            v->str[i] = o, v->len[i] = k;
        } else {
            v->str[i] = malloc(s->n + 1);
            if (!v->str[i])
                return ft_error_set(err, FT_ERR_RUNTIME, gguf_path(g), NULL, "out of memory");
            memcpy(v->str[i], s->p, s->n);
            v->str[i][s->n] = 0;
            v->len[i] = s->n;
        }
    }
    const gguf_kv *tt = gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (tt && (tt->type != GGUF_ARR || !gguf_vtype_is_int(tt->elem) || tt->count != v->n))
        return key_error(g, "tokenizer.ggml.token_type", "the file may be damaged",
                         "expected an integer array as long as tokenizer.ggml.tokens", err);
    v->types = tt;
    return FT_OK;
}

/* The token named by tokenizer.ggml.KEY (an id), or NULL when absent or out of range. */
static const char *special_token(const vocab_src *v, const char *key) {
    char k[128];
    snprintf(k, sizeof k, "tokenizer.ggml.%s", key);
    const gguf_kv *kv = gguf_find_kv(v->g, k);
    if (!kv || !gguf_vtype_is_int(kv->type)) return NULL;
    int64_t id = gguf_arr_int(kv, 0);
    return id >= 0 && (uint64_t)id < v->n ? v->str[id] : NULL;
}

static int flag(const gguf_file *g, const char *key, int def) {
    const gguf_kv *kv = gguf_find_kv(g, key);
    return kv && kv->type == GGUF_BOOL ? (int)gguf_arr_int(kv, 0) : def;
}

static cJSON *added(cJSON *arr, int32_t id, const char *content, int special) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "content", content);
    cJSON_AddBoolToObject(o, "single_word", 0);
    cJSON_AddBoolToObject(o, "lstrip", 0);
    cJSON_AddBoolToObject(o, "rstrip", 0);
    cJSON_AddBoolToObject(o, "normalized", 0);
    cJSON_AddBoolToObject(o, "special", special);
    cJSON_AddItemToArray(arr, o);
    return o;
}

static cJSON *build(const vocab_src *v, const vmap *vm, const float *scores, ft_error *err,
                    ft_status *st) {
    const gguf_file *g = v->g;
    cJSON *root = cJSON_CreateObject();
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON *add = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    *st = FT_OK;
    if (!root || !model || !vocab || !merges || !add) goto oom;
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddBoolToObject(model, "fuse_unk", !v->byte_level);
    cJSON_AddBoolToObject(model, "byte_fallback", !v->byte_level);
    for (size_t i = 0; i < v->n; i++)
        if (vmap_get(vm, v->str[i], v->len[i]) == (int32_t)i)
            cJSON_AddItemToObject(vocab, v->str[i], cJSON_CreateNumber((double)i));
    /* merges */
    const gguf_kv *mk = gguf_find_kv(g, "tokenizer.ggml.merges");
    if (v->byte_level && mk) {
        const gguf_kv *m;
        if ((*st = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_STR, &m, err))) goto fail;
        for (uint64_t i = 0; i < m->count; i++) {
            const gguf_str *s = &m->strs[i];
            const char *sp = memchr(s->p, ' ', s->n);
            if (!sp || memchr(sp + 1, ' ', s->n - (size_t)(sp + 1 - s->p))) {
                char what[160];
                snprintf(what, sizeof what, "merge %llu is not \"left right\"",
                         (unsigned long long)i);
                *st = key_error(g, "tokenizer.ggml.merges", "the file may be damaged", what, err);
                goto fail;
            }
            char *l = strndup(s->p, (size_t)(sp - s->p));
            char *r = strndup(sp + 1, s->n - (size_t)(sp + 1 - s->p));
            const char *pair[2] = {l, r};
            cJSON *p = l && r ? cJSON_CreateStringArray(pair, 2) : NULL;
            free(l);
            free(r);
            if (!p) goto oom;
            cJSON_AddItemToArray(merges, p);
        }
    } else if (gen_merges(v->str, v->len, v->n, vm, v->byte_level ? NULL : scores, merges)) {
        goto oom;
    }
    /* added tokens: control, user defined, then the named special tokens */
    const char *names[4] = {"bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"};
    char *is_added = calloc(v->n, 1);
    if (!is_added) goto oom;
    for (size_t i = 0; v->types && i < v->n; i++) {
        int64_t ty = gguf_arr_int(v->types, i);
        if (ty == 3 && (!v->byte_level || in_alphabet(v->str[i], v->len[i])))
            added(add, vmap_get(vm, v->str[i], v->len[i]), v->str[i], 1), is_added[i] = 1;
    }
    for (size_t i = 0; v->types && i < v->n; i++)
        if (gguf_arr_int(v->types, i) == 4 && !is_added[i])
            added(add, vmap_get(vm, v->str[i], v->len[i]), v->str[i], 0), is_added[i] = 1;
    for (int k = 0; k < 4; k++) {
        const char *s = special_token(v, names[k]);
        if (!s) continue;
        int32_t id = vmap_get(vm, s, strlen(s));
        int dup = 0;
        for (size_t i = 0; i < v->n && !dup; i++)
            dup = is_added[i] && !strcmp(v->str[i], s);
        if (!dup) added(add, id, s, 1), is_added[id] = 1;
    }
    free(is_added);
    /* pre-tokenizer and decoder */
    if (v->byte_level) {
        const char *split = NULL;
        int bl_regex = 0;
        gguf_str pre = {0};
        if (gguf_find_kv(g, "tokenizer.ggml.pre") &&
            !gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL))
            for (size_t i = 0; i < sizeof pre_splits / sizeof pre_splits[0]; i++)
                if (strlen(pre_splits[i].pre) == pre.n && !memcmp(pre_splits[i].pre, pre.p, pre.n))
                    split = pre_splits[i].split, bl_regex = pre_splits[i].bl_regex;
        cJSON *bl = cJSON_CreateObject();
        cJSON_AddStringToObject(bl, "type", "ByteLevel");
        cJSON_AddBoolToObject(bl, "add_prefix_space", 0);
        cJSON_AddBoolToObject(bl, "trim_offsets", 1);
        cJSON_AddBoolToObject(bl, "use_regex", split == NULL || bl_regex);
        if (split) {
            cJSON *seq = cJSON_CreateObject(), *arr = cJSON_CreateArray();
            cJSON *sp = cJSON_CreateObject(), *pat = cJSON_CreateObject();
            cJSON_AddStringToObject(seq, "type", "Sequence");
            cJSON_AddItemToObject(seq, "pretokenizers", arr);
            cJSON_AddStringToObject(sp, "type", "Split");
            cJSON_AddStringToObject(pat, "Regex", split);
            cJSON_AddItemToObject(sp, "pattern", pat);
            cJSON_AddStringToObject(sp, "behavior", "Isolated");
            cJSON_AddBoolToObject(sp, "invert", 0);
            cJSON_AddItemToArray(arr, sp);
            cJSON_AddItemToArray(arr, bl);
            cJSON_AddItemToObject(root, "pre_tokenizer", seq);
        } else {
            cJSON_AddItemToObject(root, "pre_tokenizer", bl);
        }
        cJSON *dec = cJSON_CreateObject();
        cJSON_AddStringToObject(dec, "type", "ByteLevel");
        cJSON_AddBoolToObject(dec, "add_prefix_space", 1);
        cJSON_AddBoolToObject(dec, "trim_offsets", 1);
        cJSON_AddBoolToObject(dec, "use_regex", 1);
        cJSON_AddItemToObject(root, "decoder", dec);
    } else if (is_arch(g, "phi3")) {
        /* transformers' phi3_tokenizer: the prefix space from a normalizer (Prepend U+2581, then
         * every space -> U+2581), no pre-tokenizer; it differs from Metaspace on text that starts
         * with a space */
        cJSON *seq = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        cJSON *pre = cJSON_CreateObject(), *rp = cJSON_CreateObject(), *pat = cJSON_CreateObject();
        cJSON_AddStringToObject(seq, "type", "Sequence");
        cJSON_AddItemToObject(seq, "normalizers", arr);
        cJSON_AddStringToObject(pre, "type", "Prepend");
        cJSON_AddStringToObject(pre, "prepend", "\xe2\x96\x81");
        cJSON_AddItemToArray(arr, pre);
        cJSON_AddStringToObject(rp, "type", "Replace");
        cJSON_AddStringToObject(pat, "String", " ");
        cJSON_AddItemToObject(rp, "pattern", pat);
        cJSON_AddStringToObject(rp, "content", "\xe2\x96\x81");
        cJSON_AddItemToArray(arr, rp);
        cJSON_AddItemToObject(root, "normalizer", seq);
    } else {
        cJSON *ms = cJSON_CreateObject();
        cJSON_AddStringToObject(ms, "type", "Metaspace");
        cJSON_AddStringToObject(ms, "replacement", "\xe2\x96\x81");
        cJSON_AddStringToObject(ms, "prepend_scheme", "first");
        cJSON_AddBoolToObject(ms, "split", 0);
        cJSON_AddItemToObject(root, "pre_tokenizer", ms);
    }
    if (!v->byte_level) {
        cJSON *dec = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        cJSON_AddStringToObject(dec, "type", "Sequence");
        cJSON_AddItemToObject(dec, "decoders", arr);
        cJSON *d1 = cJSON_CreateObject(), *pat = cJSON_CreateObject();
        cJSON_AddStringToObject(d1, "type", "Replace");
        cJSON_AddStringToObject(pat, "String", "\xe2\x96\x81");
        cJSON_AddItemToObject(d1, "pattern", pat);
        cJSON_AddStringToObject(d1, "content", " ");
        cJSON_AddItemToArray(arr, d1);
        cJSON *d2 = cJSON_CreateObject();
        cJSON_AddStringToObject(d2, "type", "ByteFallback");
        cJSON_AddItemToArray(arr, d2);
        cJSON *d3 = cJSON_CreateObject();
        cJSON_AddStringToObject(d3, "type", "Fuse");
        cJSON_AddItemToArray(arr, d3);
        cJSON *d4 = cJSON_CreateObject();
        cJSON_AddStringToObject(d4, "type", "Strip");
        cJSON_AddStringToObject(d4, "content", " ");
        cJSON_AddNumberToObject(d4, "start", 1);
        cJSON_AddNumberToObject(d4, "stop", 0);
        cJSON_AddItemToArray(arr, d4);
        cJSON_AddItemToObject(root, "decoder", dec);
    }
    /* post-processor: BOS / EOS as add_bos_token / add_eos_token say */
    const char *bos = special_token(v, "bos_token_id"), *eos = special_token(v, "eos_token_id");
    int add_bos = flag(g, "tokenizer.ggml.add_bos_token", !v->byte_level) && bos;
    int add_eos = flag(g, "tokenizer.ggml.add_eos_token", 0) && eos;
    cJSON *pp = cJSON_CreateObject(), *single = cJSON_CreateArray(), *sp = cJSON_CreateObject();
    cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
    cJSON_AddItemToObject(pp, "single", single);
    cJSON_AddItemToObject(pp, "special_tokens", sp);
    for (int part = 0; part < 3; part++) {
        const char *tok = part == 0   ? (add_bos ? bos : NULL)
                          : part == 2 ? (add_eos ? eos : NULL)
                                      : "A";
        if (!tok) continue;
        cJSON *e = cJSON_CreateObject(), *in = cJSON_CreateObject();
        cJSON_AddStringToObject(in, "id", tok);
        cJSON_AddNumberToObject(in, "type_id", 0);
        cJSON_AddItemToObject(e, part == 1 ? "Sequence" : "SpecialToken", in);
        cJSON_AddItemToArray(single, e);
        if (part != 1 && !cJSON_GetObjectItemCaseSensitive(sp, tok)) {
            cJSON *d = cJSON_CreateObject();
            int ids[1] = {vmap_get(vm, tok, strlen(tok))};
            cJSON_AddStringToObject(d, "id", tok);
            cJSON_AddItemToObject(d, "ids", cJSON_CreateIntArray(ids, 1));
            const char *ts[1] = {tok};
            cJSON_AddItemToObject(d, "tokens", cJSON_CreateStringArray(ts, 1));
            cJSON_AddItemToObject(sp, tok, d);
        }
    }
    cJSON_AddItemToObject(root, "post_processor", pp);
    return root;
oom:
    *st = ft_error_set(err, FT_ERR_RUNTIME, gguf_path(g), NULL, "out of memory");
fail:
    cJSON_Delete(root);
    return NULL;
}

ft_status gguf_tokenizer_json(const char *path, cJSON **out, ft_error *err) {
    *out = NULL;
    gguf_file *g;
    ft_status st = gguf_open(path, &g, err);
    if (st) return st;
    vocab_src v = {0};
    vmap vm = {0};
    float *scores = NULL;
    if ((st = read_vocab(g, &v, err))) goto done;
    if (vmap_build(&vm, v.str, v.len, v.n)) {
        st = ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
        goto done;
    }
    if (!v.byte_level) {
        const gguf_kv *sk = gguf_find_kv(g, "tokenizer.ggml.scores");
        if (!sk) {
            st = key_error(g, "tokenizer.ggml.scores",
                           "a SentencePiece vocabulary needs its scores to recover the merges",
                           "required key is missing", err);
            goto done;
        }
        const gguf_kv *s;
        if ((st = gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_F32, &s, err))) goto done;
        if (s->count != v.n) {
            st = key_error(g, "tokenizer.ggml.scores", "the file may be damaged",
                           "expected as many scores as tokens", err);
            goto done;
        }
        scores = malloc(sizeof(float) * v.n);
        if (!scores) {
            st = ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < v.n; i++)
            scores[i] = (float)gguf_arr_float(s, i);
    }
    *out = build(&v, &vm, scores, err, &st);
done:
    free(scores);
    free(vm.slot);
    vocab_free(&v);
    gguf_close(g);
    return st;
}

ft_status gguf_tokenizer_config(const char *path, cJSON **out, ft_error *err) {
    *out = NULL;
    gguf_file *g;
    ft_status st = gguf_open(path, &g, err);
    if (st) return st;
    vocab_src v = {0};
    if ((st = read_vocab(g, &v, err))) goto done;
    cJSON *c = cJSON_CreateObject();
    if (!c) {
        st = ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
        goto done;
    }
    const char *keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    const char *ids[4] = {"bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"};
    for (int k = 0; k < 4; k++) {
        const char *s = special_token(&v, ids[k]);
        if (s)
            cJSON_AddStringToObject(c, keys[k], s);
        else
            cJSON_AddNullToObject(c, keys[k]);
    }
    cJSON_AddBoolToObject(c, "add_bos_token",
                          flag(g, "tokenizer.ggml.add_bos_token", !v.byte_level));
    cJSON_AddBoolToObject(c, "add_eos_token", flag(g, "tokenizer.ggml.add_eos_token", 0));
    gguf_str tpl;
    if (gguf_find_kv(g, "tokenizer.chat_template") &&
        !gguf_get_str(g, "tokenizer.chat_template", &tpl, NULL)) {
        char *s = strndup(tpl.p, tpl.n);
        if (s) cJSON_AddStringToObject(c, "chat_template", s);
        free(s);
    }
    *out = c;
done:
    vocab_free(&v);
    gguf_close(g);
    return st;
}
