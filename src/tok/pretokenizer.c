/*
 * pretokenizer.c: tokenizer.json "pre_tokenizer" components.
 *
 * A pre-tokenizer splits each piece into smaller pieces (the model then encodes each on its
 * own) and may rewrite their text. Splitting follows `tokenizers`' two-step scheme: a pattern
 * (a regex, a literal string, or a character predicate where every matching character is its
 * own match) turns the piece into alternating spans marked match / no match, `invert` flips the
 * marks, and a behavior decides what becomes a piece:
 *   Removed: the non-matches;  Isolated: every span;  Contiguous: runs of spans with the same
 *   mark merged;  MergedWithPrevious: a match joins the span before it (unless that one was
 *   itself a match);  MergedWithNext: the same towards the following span.
 * Empty pieces are dropped. ByteLevel optionally prepends a space, splits with GPT-2's regex and
 * maps every byte to its GPT-2 character; Metaspace replaces spaces with U+2581 (or its
 * replacement), prepends one per its prepend_scheme and splits before each replacement;
 * Digits, Punctuation, Whitespace and WhitespaceSplit use the character classes of
 * tok_internal.h.
 */
#include "tok/tok_internal.h"

#include <stdio.h>

enum { P_BYTELEVEL, P_SPLIT, P_METASPACE, P_DIGITS, P_PUNCT, P_WHITESPACE, P_WSSPLIT, P_SEQ };
enum { B_REMOVED, B_ISOLATED, B_CONTIGUOUS, B_MERGED_PREV, B_MERGED_NEXT };
enum { PS_ALWAYS, PS_FIRST, PS_NEVER };

struct tok_pretok {
    int type;
    int behavior, invert;
    tok_regex re;          /* Split; ByteLevel with use_regex */
    int add_prefix_space;  /* ByteLevel */
    int use_regex;
    uint32_t repl;         /* Metaspace replacement character */
    char repl_s[8];
    int repl_n;
    int prepend_scheme, split;
    int individual;        /* Digits */
    tok_pretok **kids;
    int nkids;
};

/* GPT-2's pre-tokenization regex, as `tokenizers`' ByteLevel uses it. */
static const char *GPT2_RE =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

void pretok_free(tok_pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->nkids; i++) pretok_free(p->kids[i]);
    free(p->kids);
    regex_free(&p->re);
    free(p);
}

ft_status tok_load_pattern(const cJSON *j, const char *file, const char *path, tok_regex *re,
                           ft_error *err);

static ft_status get_bool(const cJSON *j, const char *key, int def, int *out, const char *file,
                          const char *path, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return FT_OK;
    }
    if (!cJSON_IsBool(v)) {
        char where[512];
        tok_fmt(where, sizeof where, "%s: %s.%s", file, path, key);
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected true or false");
    }
    *out = cJSON_IsTrue(v);
    return FT_OK;
}

static ft_status get_behavior(const cJSON *j, int def, int *out, const char *file,
                              const char *path, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "behavior");
    *out = def;
    if (!v) return FT_OK;
    static const char *names[] = {"Removed", "Isolated", "Contiguous", "MergedWithPrevious",
                                  "MergedWithNext"};
    for (int i = 0; i < 5; i++)
        if (cJSON_IsString(v) && !strcmp(v->valuestring, names[i])) {
            *out = i;
            return FT_OK;
        }
    char where[512];
    tok_fmt(where, sizeof where, "%s: %s.behavior", file, path);
    return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                        "expected one of Removed, Isolated, Contiguous, MergedWithPrevious, "
                        "MergedWithNext");
}

ft_status pretok_load(const cJSON *j, const char *file, const char *path, tok_pretok **out,
                      ft_error *err) {
    *out = NULL;
    static const char *supported = "ByteLevel, Split, Metaspace, Digits, Punctuation, "
                                   "Whitespace, WhitespaceSplit, Sequence";
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type)) return tok_bad_component(file, path, type, supported, err);
    const char *t = type->valuestring;
    tok_pretok *p = calloc(1, sizeof *p);
    if (!p) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    ft_status st = FT_OK;
    char where[512];
    if (!strcmp(t, "ByteLevel")) {
        p->type = P_BYTELEVEL;
        tok_bytelevel_init();
        st = get_bool(j, "add_prefix_space", 1, &p->add_prefix_space, file, path, err);
        if (!st) st = get_bool(j, "use_regex", 1, &p->use_regex, file, path, err);
        tok_fmt(where, sizeof where, "%s: %s", file, path);
        if (!st && p->use_regex) st = regex_compile(&p->re, GPT2_RE, 0, where, err);
    } else if (!strcmp(t, "Split")) {
        p->type = P_SPLIT;
        st = tok_load_pattern(j, file, path, &p->re, err);
        if (!st) st = get_behavior(j, B_REMOVED, &p->behavior, file, path, err);
        if (!st) st = get_bool(j, "invert", 0, &p->invert, file, path, err);
    } else if (!strcmp(t, "Metaspace")) {
        p->type = P_METASPACE;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "replacement");
        tok_fmt(where, sizeof where, "%s: %s.replacement", file, path);
        if (!cJSON_IsString(r) || !r->valuestring[0]) {
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a one-character string");
        } else {
            size_t n = strlen(r->valuestring), adv;
            p->repl = utf8_next((const unsigned char *)r->valuestring, n, &adv);
            if (adv != n)
                st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                  "expected a single character, got \"%s\"", r->valuestring);
            p->repl_n = utf8_put(p->repl, p->repl_s);
        }
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
        if (!st && cJSON_IsString(ps)) {
            if (!strcmp(ps->valuestring, "always")) p->prepend_scheme = PS_ALWAYS;
            else if (!strcmp(ps->valuestring, "first")) p->prepend_scheme = PS_FIRST;
            else if (!strcmp(ps->valuestring, "never")) p->prepend_scheme = PS_NEVER;
            else {
                tok_fmt(where, sizeof where, "%s: %s.prepend_scheme", file, path);
                st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                  "expected \"always\", \"first\" or \"never\"");
            }
        } else if (!st) {
            /* older files: add_prefix_space true/false means always/never */
            int aps;
            st = get_bool(j, "add_prefix_space", 1, &aps, file, path, err);
            p->prepend_scheme = aps ? PS_ALWAYS : PS_NEVER;
        }
        if (!st) st = get_bool(j, "split", 1, &p->split, file, path, err);
    } else if (!strcmp(t, "Digits")) {
        p->type = P_DIGITS;
        st = get_bool(j, "individual_digits", 0, &p->individual, file, path, err);
    } else if (!strcmp(t, "Punctuation")) {
        p->type = P_PUNCT;
        st = get_behavior(j, B_ISOLATED, &p->behavior, file, path, err);
    } else if (!strcmp(t, "Whitespace")) {
        p->type = P_WHITESPACE;
    } else if (!strcmp(t, "WhitespaceSplit")) {
        p->type = P_WSSPLIT;
    } else if (!strcmp(t, "Sequence")) {
        p->type = P_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        if (!cJSON_IsArray(arr)) {
            tok_fmt(where, sizeof where, "%s: %s.pretokenizers", file, path);
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an array");
        } else {
            int n = cJSON_GetArraySize(arr);
            p->kids = calloc((size_t)n + 1, sizeof *p->kids);
            for (int i = 0; i < n && !st; i++) {
                char sub[400];
                tok_fmt(sub, sizeof sub, "%s.pretokenizers[%d]", path, i);
                st = pretok_load(cJSON_GetArrayItem(arr, i), file, sub, &p->kids[i], err);
                if (!st) p->nkids = i + 1;
            }
        }
    } else {
        st = tok_bad_component(file, path, type, supported, err);
    }
    if (st) {
        pretok_free(p);
        return st;
    }
    *out = p;
    return FT_OK;
}

/* ---- splitting --------------------------------------------------------------------------- */
typedef struct span {
    size_t a, b;
    int m;
} span;
typedef struct spans {
    span *v;
    size_t n, cap;
    int oom;
} spans;

static void sp_add(spans *s, size_t a, size_t b, int m) {
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 64;
        span *q = realloc(s->v, c * sizeof *q);
        if (!q) {
            s->oom = 1;
            return;
        }
        s->v = q;
        s->cap = c;
    }
    s->v[s->n++] = (span){a, b, m};
}

/* Spans of a regex over s[0..n). Returns -1 on a matching failure. */
static int spans_regex(const tok_regex *re, const char *s, size_t n, spans *sp) {
    size_t prev = 0, ms, me, at = 0;
    int r;
    while ((r = regex_find(re, s, n, at, &ms, &me)) == 1) {
        if (ms > prev) sp_add(sp, prev, ms, 0);
        sp_add(sp, ms, me, 1);
        prev = at = me;
    }
    if (r < 0) return -1;
    if (prev < n) sp_add(sp, prev, n, 0);
    return 0;
}

/* Spans of a character predicate: every matching character is one match. */
static void spans_pred(int (*pred)(uint32_t, const tok_pretok *), const tok_pretok *p,
                       const char *s, size_t n, spans *sp) {
    size_t i = 0, last = 0;
    while (i < n) {
        size_t adv;
        uint32_t cp = utf8_next((const unsigned char *)s + i, n - i, &adv);
        if (pred(cp, p)) {
            if (last < i) sp_add(sp, last, i, 0);
            sp_add(sp, i, i + adv, 1);
            last = i + adv;
        }
        i += adv;
    }
    if (last < n) sp_add(sp, last, n, 0);
}

static int pred_numeric(uint32_t cp, const tok_pretok *p) {
    (void)p;
    return uc_is_numeric(cp);
}
static int pred_punct(uint32_t cp, const tok_pretok *p) {
    (void)p;
    return uc_is_punctuation(cp);
}
static int pred_space(uint32_t cp, const tok_pretok *p) {
    (void)p;
    return uc_is_whitespace(cp);
}
static int pred_repl(uint32_t cp, const tok_pretok *p) { return cp == p->repl; }

/* Turn spans of the piece at arena offset base into pieces per behavior. */
static void spans_emit(spans *sp, int behavior, int invert, size_t base, int at_start,
                       tok_pieces *out) {
    if (invert)
        for (size_t i = 0; i < sp->n; i++) sp->v[i].m = !sp->v[i].m;
    /* merge in place into sp->v[0..k) */
    size_t k = 0;
    int prev = 0;
    switch (behavior) {
    case B_REMOVED:
        for (size_t i = 0; i < sp->n; i++)
            if (!sp->v[i].m) sp->v[k++] = sp->v[i];
        break;
    case B_ISOLATED: k = sp->n; break;
    case B_CONTIGUOUS:
        for (size_t i = 0; i < sp->n; i++) {
            if (k && sp->v[i].m == prev) sp->v[k - 1].b = sp->v[i].b;
            else sp->v[k++] = sp->v[i];
            prev = sp->v[i].m;
        }
        break;
    case B_MERGED_PREV:
        for (size_t i = 0; i < sp->n; i++) {
            if (sp->v[i].m && !prev && k) sp->v[k - 1].b = sp->v[i].b;
            else sp->v[k++] = sp->v[i];
            prev = sp->v[i].m;
        }
        break;
    case B_MERGED_NEXT: {
        /* walk backwards; a match not preceded (in this walk) by a match joins the span after */
        size_t w = sp->n;
        for (size_t i = sp->n; i-- > 0;) {
            if (sp->v[i].m && !prev && w < sp->n) sp->v[w].a = sp->v[i].a;
            else sp->v[--w] = sp->v[i];
            prev = sp->v[i].m;
        }
        memmove(sp->v, sp->v + w, (sp->n - w) * sizeof *sp->v);
        k = sp->n - w;
        break;
    }
    }
    for (size_t i = 0; i < k; i++)
        if (sp->v[i].b > sp->v[i].a)
            pieces_add(out, base + sp->v[i].a, sp->v[i].b - sp->v[i].a, -1,
                       at_start && sp->v[i].a == 0);
}

/* Append s[0..n) mapped byte by byte to GPT-2 characters. */
static size_t bytelevel_map(tok_arena *a, size_t off, size_t n) {
    char *w = arena_reserve(a, 2 * n);
    if (!w) return 0;
    const unsigned char *s = (const unsigned char *)a->p + off;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = tok_byte_char[s[i]];
        if (c < 0x80) {
            w[k++] = (char)c;
        } else {
            w[k++] = (char)(0xC0 | (c >> 6));
            w[k++] = (char)(0x80 | (c & 0x3F));
        }
    }
    size_t at = a->len;
    a->len += k;
    (void)at;
    return k;
}

static int apply_one(const tok_pretok *p, tok_arena *a, const tok_piece *pc, tok_pieces *out,
                     spans *sp) {
    sp->n = 0;
    size_t off = pc->off, n = pc->len;
    switch (p->type) {
    case P_BYTELEVEL: {
        if (p->add_prefix_space && n && a->p[off] != ' ') {
            char *w = arena_reserve(a, n + 1);
            if (!w) return -1;
            w[0] = ' ';
            memcpy(w + 1, a->p + off, n); /* a->p re-read after the reserve */
            off = a->len;
            n++;
            a->len += n;
        }
        if (a->oom) return -1;
        if (p->use_regex) {
            if (spans_regex(&p->re, a->p + off, n, sp)) return -1;
        } else {
            sp_add(sp, 0, n, 0);
        }
        for (size_t i = 0; i < sp->n; i++) {
            size_t start = a->len;
            size_t k = bytelevel_map(a, off + sp->v[i].a, sp->v[i].b - sp->v[i].a);
            if (a->oom) return -1;
            if (k) pieces_add(out, start, k, -1, pc->at_start && sp->v[i].a == 0);
        }
        return 0;
    }
    case P_SPLIT:
        if (spans_regex(&p->re, a->p + off, n, sp)) return -1;
        break;
    case P_METASPACE: {
        size_t start = a->len;
        int pre = 0;
        if (n && !(n >= (size_t)p->repl_n && !memcmp(a->p + off, p->repl_s, (size_t)p->repl_n)) &&
            a->p[off] != ' ') {
            /* a leading space becomes the replacement, so it counts as "starts with" */
            pre = p->prepend_scheme == PS_ALWAYS || (p->prepend_scheme == PS_FIRST && pc->at_start);
        }
        char *w = arena_reserve(a, (n + 1) * (size_t)p->repl_n);
        if (!w) return -1;
        const char *src = a->p + off; /* stable until the next reserve */
        size_t k = 0;
        if (pre) memcpy(w, p->repl_s, (size_t)p->repl_n), k += (size_t)p->repl_n;
        for (size_t i = 0; i < n; i++) {
            if (src[i] == ' ') memcpy(w + k, p->repl_s, (size_t)p->repl_n), k += (size_t)p->repl_n;
            else w[k++] = src[i];
        }
        a->len += k;
        off = start;
        n = a->len - start;
        if (!p->split) {
            if (n) pieces_add(out, off, n, -1, pc->at_start);
            return out->oom ? -1 : 0;
        }
        spans_pred(pred_repl, p, a->p + off, n, sp);
        spans_emit(sp, B_MERGED_NEXT, 0, off, pc->at_start, out);
        return (sp->oom || out->oom) ? -1 : 0;
    }
    case P_DIGITS:
        spans_pred(pred_numeric, p, a->p + off, n, sp);
        spans_emit(sp, p->individual ? B_ISOLATED : B_CONTIGUOUS, 0, off, pc->at_start, out);
        return (sp->oom || out->oom) ? -1 : 0;
    case P_PUNCT:
        spans_pred(pred_punct, p, a->p + off, n, sp);
        spans_emit(sp, p->behavior, 0, off, pc->at_start, out);
        return (sp->oom || out->oom) ? -1 : 0;
    case P_WSSPLIT:
        spans_pred(pred_space, p, a->p + off, n, sp);
        spans_emit(sp, B_REMOVED, 0, off, pc->at_start, out);
        return (sp->oom || out->oom) ? -1 : 0;
    case P_WHITESPACE: {
        /* the regex \w+|[^\w\s]+ kept, everything else removed: runs of word characters and
         * runs of characters that are neither word nor space */
        const unsigned char *s = (const unsigned char *)a->p + off;
        size_t i = 0;
        while (i < n) {
            size_t adv;
            uint32_t cp = utf8_next(s + i, n - i, &adv);
            int cls = uc_is_word(cp) ? 1 : uc_is_whitespace(cp) ? 0 : 2;
            if (!cls) {
                i += adv;
                continue;
            }
            size_t j = i + adv;
            while (j < n) {
                uint32_t c2 = utf8_next(s + j, n - j, &adv);
                int k2 = uc_is_word(c2) ? 1 : uc_is_whitespace(c2) ? 0 : 2;
                if (k2 != cls) break;
                j += adv;
            }
            pieces_add(out, off + i, j - i, -1, pc->at_start && i == 0);
            i = j;
        }
        return out->oom ? -1 : 0;
    }
    default: return -1;
    }
    spans_emit(sp, p->behavior, p->invert, off, pc->at_start, out);
    return (sp->oom || out->oom) ? -1 : 0;
}

static int apply_list(const tok_pretok *p, tok_arena *a, const tok_pieces *in, tok_pieces *out,
                      spans *sp) {
    if (p->type == P_SEQ) {
        tok_pieces x = {0}, y = {0};
        const tok_pieces *cur = in;
        int rc = 0;
        for (int i = 0; i < p->nkids && !rc; i++) {
            tok_pieces *dst = (i == p->nkids - 1) ? out : (cur == &x ? &y : &x);
            if (dst != out) dst->n = 0;
            rc = apply_list(p->kids[i], a, cur, dst, sp);
            cur = dst;
        }
        if (!rc && p->nkids == 0)
            for (size_t i = 0; i < in->n; i++) {
                const tok_piece *q = &in->v[i];
                pieces_add(out, q->off, q->len, q->added, q->at_start);
            }
        free(x.v);
        free(y.v);
        return rc || out->oom ? -1 : 0;
    }
    for (size_t i = 0; i < in->n; i++) {
        const tok_piece *q = &in->v[i];
        if (q->added >= 0) {
            pieces_add(out, q->off, q->len, q->added, q->at_start);
            continue;
        }
        tok_piece copy = *q; /* in may alias nothing in out, but a->p can move */
        if (apply_one(p, a, &copy, out, sp)) return -1;
    }
    return out->oom ? -1 : 0;
}

int pretok_apply(const tok_pretok *p, tok_arena *a, const tok_pieces *in, tok_pieces *out) {
    spans sp = {0};
    int rc = apply_list(p, a, in, out, &sp);
    free(sp.v);
    return rc || sp.oom ? -1 : 0;
}
