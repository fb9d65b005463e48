/*
 * tokenizer.c: loading tokenizer.json, added tokens, the encode pipeline, post-processors and
 * decoding (the API of tokenizer.h).
 *
 * Encoding follows `tokenizers`' Tokenizer::encode for one sequence:
 *   1. the input is split on the added tokens whose "normalized" is false, matched in the raw
 *      text (leftmost, then longest, non-overlapping, as its Aho-Corasick matcher does);
 *   2. every other piece is normalized on its own, then split on the added tokens whose
 *      "normalized" is true (their content normalized the same way);
 *   3. the remaining pieces go through the pre-tokenizer and each resulting word through the BPE
 *      model; added-token pieces are their ids;
 *   4. with add_special_tokens, the post-processor's prefix and suffix ids are added.
 * Added-token options: single_word keeps a match only if the characters next to it are not word
 * characters (\w); lstrip / rstrip make the match swallow the whitespace to its left / right.
 *
 * Decoding maps ids to token strings (added tokens first, then the model's vocabulary, unknown
 * ids skipped, special tokens dropped on request) and runs the decoder chain.
 */
#include "tok/tok_internal.h"

#include "io/gguf.h"
#include "io/json.h"

#include <stdio.h>
#include <sys/stat.h>

typedef struct added_tok {
    char *content;
    size_t len;
    char *shown; /* what id_to_token gives: the normalized content for "normalized" tokens */
    int32_t id;
    uint8_t special, lstrip, rstrip, single_word, normalized;
} added_tok;

/* A set of added tokens to match: a byte trie. */
typedef struct trie_node {
    int32_t child[256]; /* index of the child node or 0 */
    int32_t tok;        /* index in t->added of the token ending here, or -1 */
} trie_node;
typedef struct trie {
    trie_node *nodes;
    size_t n, cap;
    uint8_t first[256]; /* bytes that can start a match */
} trie;

struct tokenizer {
    char file[512];
    tok_bpe *model;
    added_tok *added;
    size_t nadded;
    trie raw, norm;
    int has_norm_added;
    tok_norm *normalizer;
    tok_pretok *pretok;
    tok_decoder *decoder;
    int32_t *prefix, *suffix;
    size_t nprefix, nsuffix;
    size_t vocab_size;
    /* id -> added token index (or -1) for ids < vocab_size */
    int32_t *added_of_id;
    char **added_str; /* for the content->id map */
    uint32_t *added_len;
    tok_strmap added_map;
};

/* ---- tries ------------------------------------------------------------------------------- */
static int trie_new_node(trie *tr) {
    if (tr->n == tr->cap) {
        size_t c = tr->cap ? tr->cap * 2 : 16;
        trie_node *q = realloc(tr->nodes, c * sizeof *q);
        if (!q) return -1;
        tr->nodes = q;
        tr->cap = c;
    }
    memset(&tr->nodes[tr->n], 0, sizeof(trie_node));
    tr->nodes[tr->n].tok = -1;
    return (int)tr->n++;
}

static int trie_add(trie *tr, const char *s, size_t n, int32_t tok) {
    if (!tr->n && trie_new_node(tr) < 0) return -1;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!tr->nodes[at].child[c]) {
            int k = trie_new_node(tr);
            if (k < 0) return -1;
            tr->nodes[at].child[c] = k;
        }
        at = (size_t)tr->nodes[at].child[c];
    }
    if (tr->nodes[at].tok < 0) tr->nodes[at].tok = tok;
    tr->first[(unsigned char)s[0]] = 1;
    return 0;
}

/* Longest token of the trie starting at s[0..n): its index, and *mlen its length; -1 if none. */
static int32_t trie_longest(const trie *tr, const char *s, size_t n, size_t *mlen) {
    int32_t best = -1;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t k = tr->nodes[at].child[(unsigned char)s[i]];
        if (!k) break;
        at = (size_t)k;
        if (tr->nodes[at].tok >= 0) best = tr->nodes[at].tok, *mlen = i + 1;
    }
    return best;
}

/* Split s[0..n) on the tokens of tr (see the top comment), appending pieces to out; the text
 * of s must already be in the arena at offset base. */
static void split_added(const tokenizer *t, const trie *tr, const char *s, size_t n, size_t base,
                        int at_start, tok_pieces *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t done = 0; /* end of the previous match */
    for (size_t i = 0; tr->n && i < n;) {
        if (!tr->first[u[i]]) {
            i++;
            continue;
        }
        size_t mlen = 0;
        int32_t k = trie_longest(tr, s + i, n - i, &mlen);
        if (k < 0) {
            i++;
            continue;
        }
        const added_tok *a = &t->added[k];
        size_t start = i, stop = i + mlen;
        if (a->single_word) {
            int ok = 1;
            if (start > 0) {
                size_t p = utf8_prev_start(u, start), adv;
                if (uc_is_word(utf8_next(u + p, start - p, &adv))) ok = 0;
            }
            if (stop < n) {
                size_t adv;
                if (uc_is_word(utf8_next(u + stop, n - stop, &adv))) ok = 0;
            }
            if (!ok) {
                /* the matcher moves on past this match without retrying inside it */
                i = stop;
                continue;
            }
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t p = utf8_prev_start(u, ns), adv;
                if (!uc_is_whitespace(utf8_next(u + p, ns - p, &adv))) break;
                ns = p;
            }
            start = ns > done ? ns : done;
        }
        if (a->rstrip) {
            while (stop < n) {
                size_t adv;
                if (!uc_is_whitespace(utf8_next(u + stop, n - stop, &adv))) break;
                stop += adv;
            }
        }
        if (done < start) pieces_add(out, base + done, start - done, -1, at_start && done == 0);
        pieces_add(out, base + start, stop - start, a->id, at_start && start == 0);
        done = i = stop;
    }
    if (done < n || n == 0) pieces_add(out, base + done, n - done, -1, at_start && done == 0);
}

/* ---- loading ----------------------------------------------------------------------------- */
void tok_free(tokenizer *t) {
    if (!t) return;
    bpe_free(t->model);
    for (size_t i = 0; i < t->nadded; i++) {
        if (t->added[i].shown != t->added[i].content) free(t->added[i].shown);
        free(t->added[i].content);
    }
    free(t->added);
    free(t->raw.nodes);
    free(t->norm.nodes);
    norm_free(t->normalizer);
    pretok_free(t->pretok);
    decoder_free(t->decoder);
    free(t->prefix);
    free(t->suffix);
    free(t->added_of_id);
    free(t->added_str);
    free(t->added_len);
    strmap_free(&t->added_map);
    free(t);
}

static ft_status ids_append(int32_t **v, size_t *n, const int32_t *src, size_t k, int front) {
    int32_t *q = malloc((*n + k + 1) * sizeof *q);
    if (!q) return FT_ERR_RUNTIME;
    if (front) {
        if (k) memcpy(q, src, k * sizeof *q);
        if (*n) memcpy(q + k, *v, *n * sizeof *q);
    } else {
        if (*n) memcpy(q, *v, *n * sizeof *q);
        if (k) memcpy(q + *n, src, k * sizeof *q);
    }
    free(*v);
    *v = q;
    *n += k;
    return FT_OK;
}

static ft_status load_post(tokenizer *t, const cJSON *j, const char *path, ft_error *err) {
    static const char *supported =
        "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence";
    const char *file = t->file;
    char where[512];
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type)) return tok_bad_component(file, path, type, supported, err);
    const char *ty = type->valuestring;
    if (!strcmp(ty, "ByteLevel")) return FT_OK; /* changes offsets only */
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "processors");
        if (!cJSON_IsArray(arr)) {
            tok_fmt(where, sizeof where, "%s: %s.processors", file, path);
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an array");
        }
        for (int i = 0; i < cJSON_GetArraySize(arr); i++) {
            char sub[400];
            tok_fmt(sub, sizeof sub, "%s.processors[%d]", path, i);
            ft_status st = load_post(t, cJSON_GetArrayItem(arr, i), sub, err);
            if (st) return st;
        }
        return FT_OK;
    }
    if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) {
        int32_t ids[2];
        const char *keys[2] = {"cls", "sep"};
        for (int k = 0; k < 2; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
            if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 ||
                !cJSON_IsNumber(cJSON_GetArrayItem(v, 1))) {
                tok_fmt(where, sizeof where, "%s: %s.%s", file, path, keys[k]);
                return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected [\"token\", id]");
            }
            ids[k] = cJSON_GetArrayItem(v, 1)->valueint;
        }
        if (ids_append(&t->prefix, &t->nprefix, &ids[0], 1, 1) ||
            ids_append(&t->suffix, &t->nsuffix, &ids[1], 1, 0))
            return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
        return FT_OK;
    }
    if (strcmp(ty, "TemplateProcessing"))
        return tok_bad_component(file, path, type, supported, err);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
    tok_fmt(where, sizeof where, "%s: %s.single", file, path);
    if (!cJSON_IsArray(single))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an array of pieces");
    int32_t *pre = NULL, *suf = NULL;
    size_t npre = 0, nsuf = 0;
    int seen_a = 0, i = 0;
    ft_status st = FT_OK;
    for (const cJSON *it = single->child; it && !st; it = it->next, i++) {
        tok_fmt(where, sizeof where, "%s: %s.single[%d]", file, path, i);
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        if (sq) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(sq, "id");
            if (seen_a || !cJSON_IsString(id) || strcmp(id->valuestring, "A"))
                st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                  "a single-sequence template must hold sequence \"A\" once");
            seen_a = 1;
            continue;
        }
        const cJSON *name = sp ? cJSON_GetObjectItemCaseSensitive(sp, "id") : NULL;
        if (!cJSON_IsString(name)) {
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                              "expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}");
            break;
        }
        const cJSON *def =
            specials ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring) : NULL;
        const cJSON *ids = def ? cJSON_GetObjectItemCaseSensitive(def, "ids") : NULL;
        if (!cJSON_IsArray(ids)) {
            tok_fmt(where, sizeof where, "%s: %s.special_tokens", file, path);
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                              "the special token \"%s\" used in \"single\" is not defined here",
                              name->valuestring);
            break;
        }
        for (const cJSON *x = ids->child; x; x = x->next) {
            int32_t v = (int32_t)x->valueint;
            if (ids_append(seen_a ? &suf : &pre, seen_a ? &nsuf : &npre, &v, 1, 0))
                st = ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
        }
    }
    if (!st && !seen_a) {
        tok_fmt(where, sizeof where, "%s: %s.single", file, path);
        st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "the template has no sequence \"A\"");
    }
    if (!st && (ids_append(&t->prefix, &t->nprefix, pre, npre, 1) ||
                ids_append(&t->suffix, &t->nsuffix, suf, nsuf, 0)))
        st = ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    free(pre);
    free(suf);
    return st;
}

static ft_status load_added(tokenizer *t, const cJSON *arr, ft_error *err) {
    char where[512];
    if (!arr || cJSON_IsNull(arr)) return FT_OK;
    if (!cJSON_IsArray(arr)) {
        tok_fmt(where, sizeof where, "%s: added_tokens", t->file);
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an array");
    }
    size_t n = (size_t)cJSON_GetArraySize(arr);
    t->added = calloc(n + 1, sizeof *t->added);
    if (!t->added) return ft_error_set(err, FT_ERR_RUNTIME, t->file, NULL, "out of memory");
    size_t vcount = 0;
    for (size_t id = 0; id < bpe_vocab_size(t->model); id++)
        vcount += bpe_id_to_token(t->model, (int32_t)id) != NULL;
    int32_t max_added = -1;
    int i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        tok_fmt(where, sizeof where, "%s: added_tokens[%d]", t->file, i);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsString(c) || !cJSON_IsNumber(id) || id->valuedouble < 0)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "expected {\"id\": N, \"content\": \"...\", ...}");
        if (!c->valuestring[0]) continue; /* `tokenizers` ignores empty added tokens */
        added_tok *a = &t->added[t->nadded];
        a->content = strdup(c->valuestring);
        if (!a->content) return ft_error_set(err, FT_ERR_RUNTIME, t->file, NULL, "out of memory");
        a->len = strlen(a->content);
        /* `tokenizers` re-adds the list when it loads a file, ignoring the ids written in it:
         * a token already added or in the model's vocabulary keeps that id, a new one gets the
         * next id after the model's vocabulary (counted, not the largest id) and the added
         * tokens so far. Real files agree with this; a file whose ids have gaps does not. */
        int32_t prev = -1;
        for (size_t q = 0; q < t->nadded; q++)
            if (t->added[q].len == a->len && !memcmp(t->added[q].content, a->content, a->len))
                prev = t->added[q].id;
        int32_t mid = prev >= 0 ? prev : bpe_token_to_id(t->model, a->content, a->len);
        if (mid < 0)
            mid = max_added < 0                                  ? (int32_t)vcount
                  : ((size_t)max_added >= vcount || vcount == 0) ? max_added + 1
                                                                 : (int32_t)vcount;
        a->id = mid;
        if (mid > max_added) max_added = mid;
        int v;
        const char *flags[5] = {"special", "lstrip", "rstrip", "single_word", "normalized"};
        uint8_t *dst[5] = {&a->special, &a->lstrip, &a->rstrip, &a->single_word, &a->normalized};
        for (int k = 0; k < 5; k++) {
            ft_status st = json_get_bool(e, flags[k], 0, k == 4 ? !a->special : 0, &v, where, err);
            if (st) {
                free(a->content); /* not counted in nadded yet, so tok_free would miss it */
                a->content = NULL;
                return st;
            }
            *dst[k] = (uint8_t)v;
        }
        t->nadded++;
    }
    return FT_OK;
}

/* The post-processor's ids are taken as written (as `tokenizers` does): each must be a token of
 * the vocabulary or an added token, or encode would give ids no model row has. */
static ft_status check_affixes(const tokenizer *t, ft_error *err) {
    for (int s = 0; s < 2; s++) {
        const int32_t *ids = s ? t->suffix : t->prefix;
        size_t n = s ? t->nsuffix : t->nprefix;
        for (size_t i = 0; i < n; i++)
            if (!tok_id_to_token(t, ids[i])) {
                char where[512];
                tok_fmt(where, sizeof where, "%s: post_processor", t->file);
                return ft_error_set(err, FT_ERR_INPUT, where,
                                    "each special token id of the template must be a token of "
                                    "model.vocab or of added_tokens (with that id)",
                                    "the template adds id %d, which is no token here (%zu ids)",
                                    (int)ids[i], t->vocab_size);
            }
    }
    return FT_OK;
}

static ft_status build_added(tokenizer *t, ft_error *err) {
    size_t V = bpe_vocab_size(t->model);
    for (size_t i = 0; i < t->nadded; i++)
        if ((size_t)t->added[i].id + 1 > V) V = (size_t)t->added[i].id + 1;
    t->vocab_size = V;
    t->added_of_id = malloc((V + 1) * sizeof *t->added_of_id);
    t->added_str = calloc(t->nadded + 1, sizeof *t->added_str);
    t->added_len = calloc(t->nadded + 1, sizeof *t->added_len);
    if (!t->added_of_id || !t->added_str || !t->added_len) goto oom;
    for (size_t i = 0; i < V; i++)
        t->added_of_id[i] = -1;
    for (size_t i = 0; i < t->nadded; i++) {
        added_tok *a = &t->added[i];
        a->shown = a->content;
        t->added_of_id[a->id] = (int32_t)i;
        t->added_str[i] = a->content;
        t->added_len[i] = (uint32_t)a->len;
        if (!a->normalized) {
            if (trie_add(&t->raw, a->content, a->len, (int32_t)i)) goto oom;
        } else {
            tok_arena nb = {0};
            if (t->normalizer) {
                if (norm_apply(t->normalizer, a->content, a->len, &nb)) {
                    free(nb.p);
                    goto oom;
                }
            } else {
                arena_push(&nb, a->content, a->len);
            }
            if (nb.len && trie_add(&t->norm, nb.p, nb.len, (int32_t)i)) {
                free(nb.p);
                goto oom;
            }
            /* `tokenizers` stores such a token normalized: id_to_token and decode show that */
            arena_push(&nb, "", 1);
            if (nb.oom) goto oom;
            a->shown = nb.p;
            t->has_norm_added = 1;
        }
    }
    if (strmap_build(&t->added_map, (const char *const *)t->added_str, t->added_len, t->nadded))
        goto oom;
    return FT_OK;
oom:
    return ft_error_set(err, FT_ERR_RUNTIME, t->file, NULL, "out of memory");
}

ft_status tok_load(const char *path, tokenizer **out, ft_error *err) {
    *out = NULL;
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    struct stat sb;
    int gguf = gguf_is_file(path);
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        snprintf(t->file, sizeof t->file, "%s/tokenizer.json", path);
    else
        snprintf(t->file, sizeof t->file, "%s", path);
    const char *file = t->file;
    cJSON *root = NULL;
    /* a GGUF file: the tokenizer.json its metadata describes (gguf_vocab.c) */
    ft_status st = gguf ? gguf_tokenizer_json(file, &root, err) : json_load_file(file, &root, err);
    if (st) goto fail;
    char where[512];
    if (!cJSON_IsObject(root)) {
        st = ft_error_set(err, FT_ERR_INPUT, file, NULL, "expected a JSON object");
        goto fail;
    }
    /* "truncation" and "padding" are ignored, as transformers does: it resets them on every
     * call to what the caller asks for, and ftune's trainer cuts and pads on its own. */
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        tok_fmt(where, sizeof where, "%s: model", file);
        st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an object");
        goto fail;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (mt ? !(cJSON_IsString(mt) && !strcmp(mt->valuestring, "BPE"))
           : !cJSON_GetObjectItemCaseSensitive(model, "merges")) {
        st = tok_bad_component(file, "model", mt, "BPE", err);
        goto fail;
    }
    if ((st = bpe_load(model, file, &t->model, err))) goto fail;
    const cJSON *c;
    if ((c = cJSON_GetObjectItemCaseSensitive(root, "normalizer")) && !cJSON_IsNull(c))
        if ((st = norm_load(c, file, "normalizer", &t->normalizer, err))) goto fail;
    if ((c = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer")) && !cJSON_IsNull(c))
        if ((st = pretok_load(c, file, "pre_tokenizer", &t->pretok, err))) goto fail;
    if ((c = cJSON_GetObjectItemCaseSensitive(root, "post_processor")) && !cJSON_IsNull(c))
        if ((st = load_post(t, c, "post_processor", err))) goto fail;
    if ((c = cJSON_GetObjectItemCaseSensitive(root, "decoder")) && !cJSON_IsNull(c))
        if ((st = decoder_load(c, file, "decoder", &t->decoder, err))) goto fail;
    if ((st = load_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), err)))
        goto fail;
    if ((st = build_added(t, err))) goto fail;
    if ((st = check_affixes(t, err))) goto fail;
    cJSON_Delete(root);
    *out = t;
    return FT_OK;
fail:
    cJSON_Delete(root);
    tok_free(t);
    return st;
}

/* ---- encode / decode --------------------------------------------------------------------- */
ft_status tok_encode(const tokenizer *t, const char *text, size_t len, int add_special_tokens,
                     int32_t **ids_out, size_t *n_out, ft_error *err) {
    *ids_out = NULL;
    *n_out = 0;
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad != (size_t)-1)
        return ft_error_set(err, FT_ERR_INPUT, "text", "convert the text to UTF-8 first",
                            "invalid UTF-8 at byte offset %zu (byte 0x%02X)", bad,
                            (unsigned)(unsigned char)text[bad]);
    tok_arena a = {0};
    tok_pieces p1 = {0}, p2 = {0}, p3 = {0};
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    arena_push(&a, text, len);
    split_added(t, &t->raw, text, len, 0, 1, &p1);
    if (p1.oom || a.oom) goto oom;
    for (size_t i = 0; i < p1.n; i++) {
        tok_piece q = p1.v[i];
        if (q.added >= 0) {
            pieces_add(&p2, q.off, q.len, q.added, q.at_start);
            continue;
        }
        size_t off = q.off, plen = q.len;
        if (t->normalizer) {
            off = a.len;
            if (norm_apply(t->normalizer, a.p + q.off, q.len, &a)) goto oom;
            plen = a.len - off;
        }
        if (t->has_norm_added)
            split_added(t, &t->norm, a.p + off, plen, off, q.at_start, &p2);
        else
            pieces_add(&p2, off, plen, -1, q.at_start);
    }
    if (p2.oom) goto oom;
    const tok_pieces *fin = &p2;
    if (t->pretok) {
        if (pretok_apply(t->pretok, &a, &p2, &p3)) {
            rc = -2;
            goto oom;
        }
        fin = &p3;
    }
    if (add_special_tokens && t->nprefix) {
        for (size_t i = 0; i < t->nprefix; i++) {
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                int32_t *q = realloc(ids, cap * sizeof *q);
                if (!q) goto oom;
                ids = q;
            }
            ids[n++] = t->prefix[i];
        }
    }
    for (size_t i = 0; i < fin->n; i++) {
        const tok_piece *q = &fin->v[i];
        if (q->added >= 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                int32_t *r = realloc(ids, cap * sizeof *r);
                if (!r) goto oom;
                ids = r;
            }
            ids[n++] = q->added;
        } else if (bpe_encode_word(t->model, a.p + q->off, q->len, &ids, &n, &cap)) {
            goto oom;
        }
    }
    if (add_special_tokens)
        for (size_t i = 0; i < t->nsuffix; i++) {
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                int32_t *r = realloc(ids, cap * sizeof *r);
                if (!r) goto oom;
                ids = r;
            }
            ids[n++] = t->suffix[i];
        }
    free(a.p);
    free(p1.v);
    free(p2.v);
    free(p3.v);
    if (!ids) ids = malloc(sizeof *ids);
    *ids_out = ids;
    *n_out = n;
    return FT_OK;
oom:
    free(a.p);
    free(p1.v);
    free(p2.v);
    free(p3.v);
    free(ids);
    if (rc == -2)
        return ft_error_set(err, FT_ERR_RUNTIME, t->file, "report this with the text",
                            "a pre-tokenizer regex failed on this text (or out of memory)");
    return ft_error_set(err, FT_ERR_RUNTIME, t->file, NULL, "out of memory while encoding");
}

const char *tok_id_to_token(const tokenizer *t, int32_t id) {
    if (id < 0 || (size_t)id >= t->vocab_size) return NULL;
    int32_t k = t->added_of_id[id];
    if (k >= 0) return t->added[k].shown;
    return bpe_id_to_token(t->model, id);
}

int32_t tok_token_to_id(const tokenizer *t, const char *token) {
    size_t n = strlen(token);
    int32_t k = strmap_get(&t->added_map, token, n);
    if (k >= 0) return t->added[k].id;
    return bpe_token_to_id(t->model, token, n);
}

size_t tok_vocab_size(const tokenizer *t) { return t->vocab_size; }

int tok_is_special(const tokenizer *t, int32_t id) {
    if (id < 0 || (size_t)id >= t->vocab_size) return 0;
    int32_t k = t->added_of_id[id];
    return k >= 0 && t->added[k].special;
}

void tok_special_affixes(const tokenizer *t, const int32_t **prefix, size_t *n_prefix,
                         const int32_t **suffix, size_t *n_suffix) {
    *prefix = t->prefix;
    *n_prefix = t->nprefix;
    *suffix = t->suffix;
    *n_suffix = t->nsuffix;
}

ft_status tok_decode(const tokenizer *t, const int32_t *ids, size_t n, int skip_special_tokens,
                     char **text, size_t *len, ft_error *err) {
    *text = NULL;
    *len = 0;
    const char **tok = malloc((n + 1) * sizeof *tok);
    size_t *tl = malloc((n + 1) * sizeof *tl);
    tok_arena out = {0};
    if (!tok || !tl) goto oom;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = tok_id_to_token(t, ids[i]);
        if (!s || (skip_special_tokens && tok_is_special(t, ids[i]))) continue;
        tok[k] = s;
        tl[k++] = strlen(s);
    }
    if (decoder_apply(t->decoder, tok, tl, k, &out)) goto oom;
    arena_push(&out, "", 1);
    if (out.oom) goto oom;
    free(tok);
    free(tl);
    *text = out.p;
    *len = out.len - 1;
    return FT_OK;
oom:
    free(tok);
    free(tl);
    free(out.p);
    return ft_error_set(err, FT_ERR_RUNTIME, t->file, NULL, "out of memory while decoding");
}

ft_status tok_config_load(const char *model, cJSON **out, ft_error *err) {
    *out = NULL;
    if (gguf_is_file(model)) return gguf_tokenizer_config(model, out, err);
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model);
    return json_load_file(path, out, err);
}
