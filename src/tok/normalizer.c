/*
 * normalizer.c: tokenizer.json "normalizer" components.
 *
 * A normalizer rewrites the text of one piece (the text between added tokens) before it is
 * pre-tokenized: NFC/NFD/NFKC/NFKD (utf8proc), Lowercase (Rust's char::to_lowercase: the
 * Unicode lowercase mapping, where U+0130 becomes "i" + U+0307), Prepend (only to non-empty
 * text), Replace (a literal string or a regex, every match), Strip (White_Space at the left
 * and/or right) and Sequence. Each is a small tree node; norm_apply appends the normalized
 * text to an arena. The Unicode forms skip the characters of unicode_hf.h, which `tokenizers`'
 * older tables do not know.
 */
#include "tok/tok_internal.h"
#include "tok/unicode_hf.h"

#include <stdio.h>
#include <utf8proc.h>

enum { N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_PREPEND, N_REPLACE, N_STRIP, N_SEQ };

struct tok_norm {
    int type;
    char *str;  /* Prepend: the text; Replace: the content */
    size_t slen;
    tok_regex re; /* Replace */
    int left, right;
    tok_norm **kids;
    int nkids;
};

void norm_free(tok_norm *nm) {
    if (!nm) return;
    for (int i = 0; i < nm->nkids; i++) norm_free(nm->kids[i]);
    free(nm->kids);
    free(nm->str);
    regex_free(&nm->re);
    free(nm);
}

static ft_status need_string(const cJSON *j, const char *key, const char *file, const char *path,
                             const char **out, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsString(v)) {
        char where[512];
        tok_fmt(where, sizeof where, "%s: %s.%s", file, path, key);
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a string, got %s",
                            v ? "another type" : "nothing");
    }
    *out = v->valuestring;
    return FT_OK;
}

/* pattern: {"String": s} or {"Regex": r}; shared with the pre-tokenizers and decoders. */
ft_status tok_load_pattern(const cJSON *j, const char *file, const char *path, tok_regex *re,
                           ft_error *err);
ft_status tok_load_pattern(const cJSON *j, const char *file, const char *path, tok_regex *re,
                           ft_error *err) {
    char where[512];
    tok_fmt(where, sizeof where, "%s: %s.pattern", file, path);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "pattern");
    const cJSON *s = p ? cJSON_GetObjectItemCaseSensitive(p, "String") : NULL;
    const cJSON *r = p ? cJSON_GetObjectItemCaseSensitive(p, "Regex") : NULL;
    if (cJSON_IsString(s)) {
        if (!s->valuestring[0])
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "the pattern string is empty");
        return regex_compile(re, s->valuestring, 1, where, err);
    }
    if (cJSON_IsString(r)) return regex_compile(re, r->valuestring, 0, where, err);
    return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                        "expected {\"String\": ...} or {\"Regex\": ...}");
}

ft_status norm_load(const cJSON *j, const char *file, const char *path, tok_norm **out,
                    ft_error *err) {
    *out = NULL;
    static const char *supported =
        "NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, Sequence";
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type)) return tok_bad_component(file, path, type, supported, err);
    const char *t = type->valuestring;
    tok_norm *nm = calloc(1, sizeof *nm);
    if (!nm) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    ft_status st = FT_OK;
    const char *s;
    if (!strcmp(t, "NFC")) nm->type = N_NFC;
    else if (!strcmp(t, "NFD")) nm->type = N_NFD;
    else if (!strcmp(t, "NFKC")) nm->type = N_NFKC;
    else if (!strcmp(t, "NFKD")) nm->type = N_NFKD;
    else if (!strcmp(t, "Lowercase")) nm->type = N_LOWER;
    else if (!strcmp(t, "Prepend")) {
        nm->type = N_PREPEND;
        if (!(st = need_string(j, "prepend", file, path, &s, err))) {
            nm->str = strdup(s);
            nm->slen = strlen(s);
        }
    } else if (!strcmp(t, "Replace")) {
        nm->type = N_REPLACE;
        if (!(st = need_string(j, "content", file, path, &s, err))) {
            nm->str = strdup(s);
            nm->slen = strlen(s);
            st = tok_load_pattern(j, file, path, &nm->re, err);
        }
    } else if (!strcmp(t, "Strip")) {
        nm->type = N_STRIP;
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "strip_left");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "strip_right");
        nm->left = l ? cJSON_IsTrue(l) : 1;
        nm->right = r ? cJSON_IsTrue(r) : 1;
    } else if (!strcmp(t, "Sequence")) {
        nm->type = N_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "normalizers");
        if (!cJSON_IsArray(arr)) {
            char where[512];
            tok_fmt(where, sizeof where, "%s: %s.normalizers", file, path);
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an array");
        } else {
            int n = cJSON_GetArraySize(arr);
            nm->kids = calloc((size_t)n + 1, sizeof *nm->kids);
            for (int i = 0; i < n && !st; i++) {
                char sub[400];
                tok_fmt(sub, sizeof sub, "%s.normalizers[%d]", path, i);
                st = norm_load(cJSON_GetArrayItem(arr, i), file, sub, &nm->kids[i], err);
                if (!st) nm->nkids = i + 1;
            }
        }
    } else {
        st = tok_bad_component(file, path, type, supported, err);
    }
    if (st) {
        norm_free(nm);
        return st;
    }
    *out = nm;
    return FT_OK;
}

static int is_frozen(uint32_t cp) {
    size_t lo = 0, hi = HF_NORM_FROZEN_N;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (hf_norm_frozen[mid] < cp) lo = mid + 1;
        else hi = mid;
    }
    return lo < HF_NORM_FROZEN_N && hf_norm_frozen[lo] == cp;
}

static int apply_one(const tok_norm *nm, const char *s, size_t n, tok_arena *out) {
    switch (nm->type) {
    case N_NFC:
    case N_NFD:
    case N_NFKC:
    case N_NFKD: {
        if (nm->type == N_NFC) {
            /* Code points below U+0300 never change under NFC (lead bytes < 0xCC). */
            size_t i = 0;
            while (i < n && (unsigned char)s[i] < 0xCC) i++;
            if (i == n) {
                arena_push(out, s, n);
                return out->oom ? -1 : 0;
            }
        }
        if (n == 0) return 0;
        int opt = UTF8PROC_STABLE;
        opt |= (nm->type == N_NFC || nm->type == N_NFKC) ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
        if (nm->type == N_NFKC || nm->type == N_NFKD) opt |= UTF8PROC_COMPAT;
        /* normalize the runs between "frozen" characters, copy those as they are */
        size_t i = 0, seg = 0;
        while (i <= n) {
            size_t adv = 0;
            int frozen = 0;
            if (i < n) {
                uint32_t cp = utf8_next((const unsigned char *)s + i, n - i, &adv);
                frozen = cp >= 0x7FD && is_frozen(cp);
            }
            if (i == n || frozen) {
                if (i > seg) {
                    utf8proc_uint8_t *dst = NULL;
                    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s + seg,
                                                      (utf8proc_ssize_t)(i - seg), &dst,
                                                      (utf8proc_option_t)opt);
                    if (m < 0) return -1;
                    arena_push(out, dst, (size_t)m);
                    free(dst);
                }
                if (i == n) break;
                arena_push(out, s + i, adv);
                seg = i + adv;
            }
            i += adv;
        }
        return out->oom ? -1 : 0;
    }
    case N_LOWER: {
        size_t i = 0;
        while (i < n) {
            size_t adv;
            uint32_t cp = utf8_next((const unsigned char *)s + i, n - i, &adv);
            char b[8];
            int k;
            if (cp < 0x80) {
                b[0] = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
                k = 1;
            } else if (cp == 0x130) {
                k = utf8_put('i', b);
                k += utf8_put(0x307, b + k);
            } else {
                k = utf8_put((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), b);
            }
            arena_push(out, b, (size_t)k);
            i += adv;
        }
        return out->oom ? -1 : 0;
    }
    case N_PREPEND:
        if (n) arena_push(out, nm->str, nm->slen);
        arena_push(out, s, n);
        return out->oom ? -1 : 0;
    case N_REPLACE: {
        size_t at = 0, ms, me;
        int r;
        while ((r = regex_find(&nm->re, s, n, at, &ms, &me)) == 1) {
            arena_push(out, s + at, ms - at);
            arena_push(out, nm->str, nm->slen);
            at = me;
        }
        if (r < 0) return -1;
        arena_push(out, s + at, n - at);
        return out->oom ? -1 : 0;
    }
    case N_STRIP: {
        size_t a = 0, b = n;
        const unsigned char *u = (const unsigned char *)s;
        while (nm->left && a < b) {
            size_t adv;
            uint32_t cp = utf8_next(u + a, b - a, &adv);
            if (!uc_is_whitespace(cp)) break;
            a += adv;
        }
        while (nm->right && b > a) {
            size_t p = utf8_prev_start(u, b);
            size_t adv;
            if (p < a) p = a;
            uint32_t cp = utf8_next(u + p, b - p, &adv);
            if (!uc_is_whitespace(cp)) break;
            b = p;
        }
        arena_push(out, s + a, b - a);
        return out->oom ? -1 : 0;
    }
    case N_SEQ: {
        tok_arena x = {0}, y = {0};
        arena_push(&x, s, n);
        for (int i = 0; i < nm->nkids; i++) {
            y.len = 0;
            if (apply_one(nm->kids[i], x.p ? x.p : "", x.len, &y) || y.oom) {
                free(x.p);
                free(y.p);
                return -1;
            }
            tok_arena t = x;
            x = y;
            y = t;
        }
        arena_push(out, x.p ? x.p : "", x.len);
        free(x.p);
        free(y.p);
        return out->oom ? -1 : 0;
    }
    }
    return -1;
}

int norm_apply(const tok_norm *nm, const char *s, size_t n, tok_arena *out) {
    /* the input may live in `out` itself: copy it first if so */
    if (out->p && s >= out->p && s < out->p + out->cap) {
        char *c = malloc(n ? n : 1);
        if (!c) return -1;
        memcpy(c, s, n);
        int r = apply_one(nm, c, n, out);
        free(c);
        return r;
    }
    return apply_one(nm, s, n, out);
}
