/*
 * decoder.c: tokenizer.json "decoder" components, turning token strings back into text.
 *
 * A decoder maps a list of token strings to a list of strings; a Sequence chains them and the
 * result is the concatenation. Semantics as observed in `tokenizers` 0.23 (and its source):
 *   ByteLevel   each token whose characters are all GPT-2 byte characters becomes those bytes,
 *               any other token its own UTF-8; the whole is then read as UTF-8 with every
 *               invalid sequence (maximal subpart, as Rust's from_utf8_lossy) becoming U+FFFD;
 *   Metaspace   the replacement character becomes a space, except in the first token where it
 *               is dropped (unless prepend_scheme is "never");
 *   ByteFallback runs of <0xXX> tokens become their bytes if those are valid UTF-8, else one
 *               U+FFFD per byte;
 *   Fuse        joins everything into one string;
 *   Strip       removes up to `start` leading and `stop` trailing `content` characters of each
 *               token (where `tokenizers` panics on overlapping cuts, ftune gives "");
 *   Replace     replaces every match of a string or regex in each token.
 */
#include "tok/tok_internal.h"

#include <stdio.h>

enum { D_BYTELEVEL, D_METASPACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_REPLACE, D_SEQ };

struct tok_decoder {
    int type;
    uint32_t ch; /* Metaspace replacement / Strip content */
    int never;   /* Metaspace prepend_scheme == never */
    long start, stop;
    tok_regex re;
    char *content;
    size_t clen;
    tok_decoder **kids;
    int nkids;
};

ft_status tok_load_pattern(const cJSON *j, const char *file, const char *path, tok_regex *re,
                           ft_error *err);

void decoder_free(tok_decoder *d) {
    if (!d) return;
    for (int i = 0; i < d->nkids; i++) decoder_free(d->kids[i]);
    free(d->kids);
    regex_free(&d->re);
    free(d->content);
    free(d);
}

static ft_status one_char(const cJSON *j, const char *key, const char *file, const char *path,
                          uint32_t *out, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    char where[512];
    tok_fmt(where, sizeof where, "%s: %s.%s", file, path, key);
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a one-character string");
    size_t n = strlen(v->valuestring), adv;
    *out = utf8_next((const unsigned char *)v->valuestring, n, &adv);
    if (adv != n)
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a single character");
    return FT_OK;
}

ft_status decoder_load(const cJSON *j, const char *file, const char *path, tok_decoder **out,
                       ft_error *err) {
    *out = NULL;
    static const char *supported =
        "ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence";
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type)) return tok_bad_component(file, path, type, supported, err);
    const char *t = type->valuestring;
    tok_decoder *d = calloc(1, sizeof *d);
    if (!d) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    ft_status st = FT_OK;
    char where[512];
    if (!strcmp(t, "ByteLevel")) {
        d->type = D_BYTELEVEL;
        tok_bytelevel_init();
    } else if (!strcmp(t, "Metaspace")) {
        d->type = D_METASPACE;
        st = one_char(j, "replacement", file, path, &d->ch, err);
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
        if (cJSON_IsString(ps)) d->never = !strcmp(ps->valuestring, "never");
        else if (aps) d->never = !cJSON_IsTrue(aps);
    } else if (!strcmp(t, "ByteFallback")) {
        d->type = D_BYTEFALLBACK;
    } else if (!strcmp(t, "Fuse")) {
        d->type = D_FUSE;
    } else if (!strcmp(t, "Strip")) {
        d->type = D_STRIP;
        st = one_char(j, "content", file, path, &d->ch, err);
        if (!st) st = json_get_int(j, "start", 0, 0, &d->start, path, err);
        if (!st) st = json_get_int(j, "stop", 0, 0, &d->stop, path, err);
    } else if (!strcmp(t, "Replace")) {
        d->type = D_REPLACE;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
        if (!cJSON_IsString(c)) {
            tok_fmt(where, sizeof where, "%s: %s.content", file, path);
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a string");
        } else {
            d->content = strdup(c->valuestring);
            d->clen = strlen(c->valuestring);
            st = tok_load_pattern(j, file, path, &d->re, err);
        }
    } else if (!strcmp(t, "Sequence")) {
        d->type = D_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "decoders");
        if (!cJSON_IsArray(arr)) {
            tok_fmt(where, sizeof where, "%s: %s.decoders", file, path);
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an array");
        } else {
            int n = cJSON_GetArraySize(arr);
            d->kids = calloc((size_t)n + 1, sizeof *d->kids);
            for (int i = 0; i < n && !st; i++) {
                char sub[400];
                tok_fmt(sub, sizeof sub, "%s.decoders[%d]", path, i);
                st = decoder_load(cJSON_GetArrayItem(arr, i), file, sub, &d->kids[i], err);
                if (!st) d->nkids = i + 1;
            }
        }
    } else {
        st = tok_bad_component(file, path, type, supported, err);
    }
    if (st) {
        decoder_free(d);
        return st;
    }
    *out = d;
    return FT_OK;
}

/* A list of strings: offsets into an arena. */
typedef struct slist {
    tok_arena a;
    size_t *off, *len;
    size_t n, cap;
    int oom;
} slist;

static void sl_add(slist *l, const char *s, size_t n) {
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 64;
        size_t *o = realloc(l->off, c * sizeof *o);
        if (o) l->off = o;
        size_t *q = realloc(l->len, c * sizeof *q);
        if (q) l->len = q;
        if (!o || !q) {
            l->oom = 1;
            return;
        }
        l->cap = c;
    }
    l->off[l->n] = arena_push(&l->a, s, n);
    l->len[l->n++] = n;
    if (l->a.oom) l->oom = 1;
}
/* start a new string and return its index; append to it with arena_push on l->a */
static size_t sl_open(slist *l) {
    sl_add(l, "", 0);
    return l->n - 1;
}
static void sl_close(slist *l, size_t i) { l->len[i] = l->a.len - l->off[i]; }
static void sl_free(slist *l) {
    free(l->a.p);
    free(l->off);
    free(l->len);
}
#define SL(l, i) ((l)->a.p + (l)->off[i])

/* Rust's String::from_utf8_lossy: copy valid UTF-8, one U+FFFD per maximal invalid subpart. */
static void utf8_lossy(const unsigned char *s, size_t n, tok_arena *o) {
    static const char FFFD[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            arena_push(o, s + i, 1);
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            arena_push(o, FFFD, 3);
            i++;
            continue;
        }
        size_t j = 1;
        while (j <= need && i + j < n) {
            unsigned b = s[i + j];
            if (j == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) break;
            j++;
        }
        if (j == need + 1) arena_push(o, s + i, j);
        else arena_push(o, FFFD, 3);
        i += j;
    }
}

static int is_byte_token(const char *s, size_t n, unsigned *b) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return 0;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *b = v;
    return 1;
}

static void apply_one(const tok_decoder *d, const slist *in, slist *out) {
    switch (d->type) {
    case D_BYTELEVEL: {
        tok_arena bytes = {0};
        for (size_t t = 0; t < in->n; t++) {
            const unsigned char *s = (const unsigned char *)SL(in, t);
            size_t n = in->len[t], i = 0, start = bytes.len;
            int all = 1;
            while (i < n) {
                size_t adv;
                int b = tok_char_byte(utf8_next(s + i, n - i, &adv));
                if (b < 0) {
                    all = 0;
                    break;
                }
                unsigned char c = (unsigned char)b;
                arena_push(&bytes, &c, 1);
                i += adv;
            }
            if (!all) {
                bytes.len = start;
                arena_push(&bytes, s, n);
            }
        }
        size_t k = sl_open(out);
        utf8_lossy((const unsigned char *)bytes.p, bytes.len, &out->a);
        sl_close(out, k);
        if (bytes.oom) out->oom = 1;
        free(bytes.p);
        return;
    }
    case D_METASPACE:
        for (size_t t = 0; t < in->n; t++) {
            const unsigned char *s = (const unsigned char *)SL(in, t);
            size_t n = in->len[t], i = 0;
            size_t k = sl_open(out);
            while (i < n) {
                size_t adv;
                uint32_t cp = utf8_next(s + i, n - i, &adv);
                if (cp == d->ch) {
                    if (!(t == 0 && !d->never)) arena_push(&out->a, " ", 1);
                } else {
                    arena_push(&out->a, s + i, adv);
                }
                i += adv;
            }
            sl_close(out, k);
        }
        return;
    case D_BYTEFALLBACK: {
        tok_arena pend = {0};
        for (size_t t = 0; t <= in->n; t++) {
            unsigned b;
            if (t < in->n && is_byte_token(SL(in, t), in->len[t], &b)) {
                unsigned char c = (unsigned char)b;
                arena_push(&pend, &c, 1);
                continue;
            }
            if (pend.len) {
                size_t k = sl_open(out);
                if (utf8_invalid_at((const unsigned char *)pend.p, pend.len) == (size_t)-1)
                    arena_push(&out->a, pend.p, pend.len);
                else
                    for (size_t i = 0; i < pend.len; i++) arena_push(&out->a, "\xEF\xBF\xBD", 3);
                sl_close(out, k);
                pend.len = 0;
            }
            if (t < in->n) sl_add(out, SL(in, t), in->len[t]);
        }
        free(pend.p);
        return;
    }
    case D_FUSE: {
        size_t k = sl_open(out);
        for (size_t t = 0; t < in->n; t++) arena_push(&out->a, SL(in, t), in->len[t]);
        sl_close(out, k);
        return;
    }
    case D_STRIP: {
        char cb[4];
        size_t cl = (size_t)utf8_put(d->ch, cb);
        for (size_t t = 0; t < in->n; t++) {
            const unsigned char *s = (const unsigned char *)SL(in, t);
            size_t n = in->len[t], a = 0, b = n;
            for (long i = 0; i < d->start && a + cl <= n && !memcmp(s + a, cb, cl); i++) a += cl;
            for (long i = 0; i < d->stop && b >= cl && !memcmp(s + b - cl, cb, cl); i++) b -= cl;
            sl_add(out, (const char *)s + a, b > a ? b - a : 0);
        }
        return;
    }
    case D_REPLACE:
        for (size_t t = 0; t < in->n; t++) {
            const char *s = SL(in, t);
            size_t n = in->len[t], at = 0, ms, me;
            size_t k = sl_open(out);
            s = in->a.p + in->off[t];
            while (regex_find(&d->re, s, n, at, &ms, &me) == 1) {
                arena_push(&out->a, s + at, ms - at);
                arena_push(&out->a, d->content, d->clen);
                at = me;
            }
            arena_push(&out->a, s + at, n - at);
            sl_close(out, k);
        }
        return;
    }
}

static int apply(const tok_decoder *d, const slist *in, slist *out) {
    if (d->type != D_SEQ) {
        apply_one(d, in, out);
        return out->oom || out->a.oom ? -1 : 0;
    }
    slist x = {0}, y = {0};
    const slist *cur = in;
    int rc = 0;
    for (int i = 0; i < d->nkids && !rc; i++) {
        slist *dst = (i == d->nkids - 1) ? out : (cur == &x ? &y : &x);
        if (dst != out) {
            dst->n = 0;
            dst->a.len = 0;
        }
        rc = apply(d->kids[i], cur, dst);
        cur = dst;
    }
    if (d->nkids == 0)
        for (size_t t = 0; t < in->n; t++) sl_add(out, SL(in, t), in->len[t]);
    sl_free(&x);
    sl_free(&y);
    return rc || out->oom ? -1 : 0;
}

int decoder_apply(const tok_decoder *d, const char *const *tok, const size_t *tlen, size_t n,
                  tok_arena *out) {
    slist in = {0}, res = {0};
    for (size_t i = 0; i < n; i++) sl_add(&in, tok[i], tlen[i]);
    int rc = in.oom ? -1 : 0;
    if (!rc) {
        if (d) {
            rc = apply(d, &in, &res);
        } else {
            /* no decoder: `tokenizers` joins the tokens with spaces */
            size_t k = sl_open(&res);
            for (size_t i = 0; i < in.n; i++) {
                if (i) arena_push(&res.a, " ", 1);
                arena_push(&res.a, SL(&in, i), in.len[i]);
            }
            sl_close(&res, k);
        }
    }
    for (size_t i = 0; !rc && i < res.n; i++) arena_push(out, SL(&res, i), res.len[i]);
    if (out->oom || res.oom) rc = -1;
    sl_free(&in);
    sl_free(&res);
    return rc;
}
