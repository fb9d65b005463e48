/*
 * jinja_builtins.c: the filters, tests and methods chat templates call, with the behaviour of
 * Jinja 3.1 (jinja2/filters.py, jinja2/tests.py) and of Python's str, dict and list methods as
 * the sandbox exposes them. tojson is transformers' override: json.dumps with
 * ensure_ascii=False, indent=None, separators=None, sort_keys=False (positional in that order).
 * Methods that would modify a list or dict (append, update, pop, ...) are refused, as
 * ImmutableSandboxedEnvironment refuses them. Case mapping uses utf8proc's simple mappings.
 */
#include "tok/jinja_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- argument helpers ---- */
typedef struct fargs {
    int n, nkw;
    jv *v, *kw;
    const char **names;
} fargs;
static int arg_get(const fargs *a, int pos, const char *name, jv *out) {
    if (pos >= 0 && pos < a->n) {
        *out = a->v[pos];
        return 1;
    }
    for (int i = 0; i < a->nkw; i++)
        if (!strcmp(a->names[i], name)) {
            *out = a->kw[i];
            return 1;
        }
    return 0;
}
static jv arg_or(const fargs *a, int pos, const char *name, jv def) {
    jv v;
    return arg_get(a, pos, name, &v) ? v : def;
}

/* ---- Unicode helpers ---- */
static uint32_t dec(const char *s, size_t n, size_t *p) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + *p, (utf8proc_ssize_t)(n - *p), &cp);
    if (k <= 0) {
        (*p)++;
        return 0xFFFD;
    }
    *p += (size_t)k;
    return (uint32_t)cp;
}
static void enc(jbuf *b, uint32_t cp) {
    utf8proc_uint8_t tmp[4];
    utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)cp, tmp);
    jb_put(b, (const char *)tmp, (size_t)k);
}
static int py_isspace(uint32_t c) {
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}
static int is_alnum_cp(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}
static int is_alpha_cp(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static jv mkstr(jctx *c, jbuf *b) { return jv_str(c->a, b->p ? b->p : "", b->n); }
static jstr *S(jctx *c, jv v) { return jv_to_str(c->a, v); }

enum { CASE_UPPER, CASE_LOWER, CASE_CAP, CASE_TITLE_JINJA, CASE_TITLE_PY };
static jv case_map(jctx *c, jv v, int mode) {
    jstr *s = S(c, v);
    jbuf b = {.a = c->a};
    size_t p = 0;
    int first = 1, prev_cased = 0;
    while (p < s->len) {
        uint32_t cp = dec(s->s, s->len, &p);
        uint32_t o = cp;
        switch (mode) {
        case CASE_UPPER: o = (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp); break;
        case CASE_LOWER: o = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp); break;
        case CASE_CAP:
            o = first ? (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp) : (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
            break;
        case CASE_TITLE_JINJA: { /* word starts after runs of "-", whitespace, "(", "{", "[", "<" */
            int sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || py_isspace(cp);
            if (sep) { o = cp; prev_cased = 0; first = 0; enc(&b, o); continue; }
            o = !prev_cased ? (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp) : (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
            prev_cased = 1;
            break;
        }
        case CASE_TITLE_PY: {
            int alpha = is_alpha_cp(cp);
            o = alpha ? (prev_cased ? (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp) : (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp)) : cp;
            prev_cased = alpha;
            break;
        }
        }
        first = 0;
        enc(&b, o);
    }
    return mkstr(c, &b);
}

static int utf8_set_has(const jstr *set, uint32_t cp) {
    size_t p = 0;
    while (p < set->len)
        if (dec(set->s, set->len, &p) == cp) return 1;
    return 0;
}

/* strip: which 1 = left, 2 = right, 3 = both; chars not a string = whitespace */
static jv do_strip(jctx *c, jv v, int which, jv chars) {
    jstr *s = S(c, v);
    size_t lo = 0, hi = s->len;
    int use_chars = chars.k == JV_STR;
    if (which & 1)
        while (lo < hi) {
            size_t p = lo;
            uint32_t cp = dec(s->s, s->len, &p);
            if (!(use_chars ? utf8_set_has(chars.u.s, cp) : py_isspace(cp))) break;
            lo = p;
        }
    if (which & 2)
        while (hi > lo) {
            size_t st = hi - 1;
            while (st > lo && ((unsigned char)s->s[st] & 0xC0) == 0x80) st--;
            size_t p = st;
            uint32_t cp = dec(s->s, s->len, &p);
            if (!(use_chars ? utf8_set_has(chars.u.s, cp) : py_isspace(cp))) break;
            hi = st;
        }
    return jv_str(c->a, s->s + lo, hi - lo);
}

/* str.split / str.rsplit (rsplit only matters with maxsplit) */
static jv do_split(jctx *c, const jnode *at, jv v, jv sep, long long maxsplit, int from_right) {
    jstr *s = S(c, v);
    jv out = jv_list(c->a, 8);
    if (sep.k == JV_NONE || sep.k == JV_UNDEF) { /* runs of whitespace, no empty strings */
        jv parts = jv_list(c->a, 8);
        size_t p = 0;
        while (p < s->len) {
            size_t q = p;
            uint32_t cp = dec(s->s, s->len, &q);
            if (py_isspace(cp)) { p = q; continue; }
            size_t start = p;
            while (p < s->len) {
                q = p;
                cp = dec(s->s, s->len, &q);
                if (py_isspace(cp)) break;
                p = q;
            }
            jl_push(c->a, parts.u.l, jv_str(c->a, s->s + start, p - start));
        }
        if (maxsplit < 0 || maxsplit >= parts.u.l->n - 1) return parts;
        /* with maxsplit, the remainder keeps its inner whitespace: rebuild from offsets */
        jv r = jv_list(c->a, 8);
        if (!from_right) {
            size_t pos = 0;
            for (long long k = 0; k < maxsplit; k++) {
                jv w = parts.u.l->v[k];
                const char *f = memmem(s->s + pos, s->len - pos, w.u.s->s, w.u.s->len);
                pos = (size_t)(f - s->s) + w.u.s->len;
                jl_push(c->a, r.u.l, w);
            }
            jv rest = do_strip(c, jv_str(c->a, s->s + pos, s->len - pos), 1, jv_none());
            jl_push(c->a, r.u.l, rest);
            return r;
        }
        jfail(c, at, "rsplit() with maxsplit and no separator is not supported");
    }
    if (sep.k != JV_STR) jfail(c, at, "must be str or None, not %s", jv_typename(sep));
    jstr *d = sep.u.s;
    if (!d->len) jfail(c, at, "empty separator");
    if (!from_right || maxsplit < 0) {
        size_t p = 0;
        long long k = 0;
        for (;;) {
            const char *f = (maxsplit < 0 || k < maxsplit) ? memmem(s->s + p, s->len - p, d->s, d->len) : NULL;
            if (!f) {
                jl_push(c->a, out.u.l, jv_str(c->a, s->s + p, s->len - p));
                break;
            }
            jl_push(c->a, out.u.l, jv_str(c->a, s->s + p, (size_t)(f - s->s) - p));
            p = (size_t)(f - s->s) + d->len;
            k++;
        }
        return out;
    }
    /* rsplit with maxsplit: split from the right then reverse */
    jv rev = jv_list(c->a, 8);
    size_t end = s->len;
    long long k = 0;
    while (k < maxsplit) {
        long long found = -1;
        for (long long i = (long long)end - (long long)d->len; i >= 0; i--)
            if (!memcmp(s->s + i, d->s, d->len)) { found = i; break; }
        if (found < 0) break;
        jl_push(c->a, rev.u.l, jv_str(c->a, s->s + found + d->len, end - (size_t)found - d->len));
        end = (size_t)found;
        k++;
    }
    jl_push(c->a, rev.u.l, jv_str(c->a, s->s, end));
    for (int i = rev.u.l->n - 1; i >= 0; i--) jl_push(c->a, out.u.l, rev.u.l->v[i]);
    return out;
}

static jv do_replace(jctx *c, jv v, jv old, jv new_, long long count) {
    jstr *s = S(c, v), *o = S(c, old), *n = S(c, new_);
    jbuf b = {.a = c->a};
    size_t p = 0;
    long long k = 0;
    if (!o->len) { /* Python inserts new between every character */
        size_t q = 0;
        while (q <= s->len && (count < 0 || k < count)) {
            jb_put(&b, n->s, n->len);
            k++;
            if (q == s->len) { q++; break; }
            size_t st = q;
            dec(s->s, s->len, &q);
            jb_put(&b, s->s + st, q - st);
        }
        if (q <= s->len) jb_put(&b, s->s + q, s->len - q);
        return mkstr(c, &b);
    }
    for (;;) {
        const char *f = (count < 0 || k < count) ? memmem(s->s + p, s->len - p, o->s, o->len) : NULL;
        if (!f) break;
        jb_put(&b, s->s + p, (size_t)(f - s->s) - p);
        jb_put(&b, n->s, n->len);
        p = (size_t)(f - s->s) + o->len;
        k++;
    }
    jb_put(&b, s->s + p, s->len - p);
    return mkstr(c, &b);
}

static long long py_len(jctx *c, const jnode *at, jv v) {
    switch (v.k) {
    case JV_UNDEF: return 0;
    case JV_STR: return (long long)utf8_count(v.u.s->s, v.u.s->len);
    case JV_LIST: return v.u.l->n;
    case JV_DICT: case JV_NS: return v.u.d->n;
    default: jfail(c, at, "object of type '%s' has no len()", jv_typename(v));
    }
}

static jv as_list(jctx *c, const jnode *at, jv v) {
    int n;
    jv *items = jiter_items(c, at, v, &n);
    jv l = jv_list(c->a, n);
    for (int i = 0; i < n; i++) jl_push(c->a, l.u.l, items[i]);
    return l;
}

/* environment.getitem-style lookup of a dotted attribute path ("a.b", "0") */
static jv attr_path(jctx *c, const jnode *at, jv item, jv attr) {
    if (attr.k == JV_INT) return jgetitem(c, at, item, attr);
    jstr *s = S(c, attr);
    const char *p = s->s;
    jv v = item;
    while (1) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char *part = ja_strndup(c->a, p, n);
        char *end;
        long long idx = strtoll(part, &end, 10);
        if (n && !*end) v = jgetitem(c, at, v, jv_int(idx));
        else v = jgetitem(c, at, v, jv_cstr(c->a, part));
        if (!dot) break;
        p = dot + 1;
    }
    return v;
}

static jv call_filter(jctx *c, const jnode *at, const char *name, jv v, fargs *a);

/* select / reject / selectattr / rejectattr */
static jv select_like(jctx *c, const jnode *at, jv seq, fargs *a, int with_attr, int keep) {
    int n;
    jv *items = jiter_items(c, at, seq, &n);
    int off = with_attr ? 1 : 0;
    jv attr = jv_none();
    if (with_attr && !arg_get(a, 0, "attribute", &attr)) jfail(c, at, "missing the attribute argument");
    const char *test = NULL;
    if (a->n > off) {
        if (a->v[off].k != JV_STR) jfail(c, at, "the test name must be a string");
        test = a->v[off].u.s->s;
        if (!jtest_exists(test)) jfail(c, at, "no test named '%s'", test);
    }
    jv out = jv_list(c->a, n);
    for (int i = 0; i < n; i++) {
        jv x = with_attr ? attr_path(c, at, items[i], attr) : items[i];
        int r = test ? jtest(c, at, test, x, a->n - off - 1, a->v + off + 1) : jv_truthy(x);
        if (r == keep) jl_push(c->a, out.u.l, items[i]);
    }
    return out;
}

static int cmp_for_sort(jctx *c, const jnode *at, jv x, jv y, int case_sensitive) {
    if (!case_sensitive && x.k == JV_STR && y.k == JV_STR) {
        x = case_map(c, x, CASE_LOWER);
        y = case_map(c, y, CASE_LOWER);
    }
    int r = jv_compare(x, y);
    if (r == -2)
        jfail(c, at, "'<' not supported between instances of '%s' and '%s'", jv_typename(x), jv_typename(y));
    return r;
}

static void stable_sort(jctx *c, const jnode *at, jv *keys, jv *vals, int n, int case_sensitive, int reverse) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0; j--) {
            int r = cmp_for_sort(c, at, keys[j - 1], keys[j], case_sensitive);
            if (reverse ? r >= 0 : r <= 0) break;
            jv t = keys[j]; keys[j] = keys[j - 1]; keys[j - 1] = t;
            t = vals[j]; vals[j] = vals[j - 1]; vals[j - 1] = t;
        }
}

static jv do_tojson(jctx *c, const jnode *at, jv v, fargs *a) {
    jv ea = arg_or(a, 0, "ensure_ascii", jv_bool(0));
    jv ind = arg_or(a, 1, "indent", jv_none());
    jv sep = arg_or(a, 2, "separators", jv_none());
    jv sk = arg_or(a, 3, "sort_keys", jv_bool(0));
    int indent = -1;
    if (ind.k == JV_INT) indent = (int)(ind.u.i < 0 ? 0 : ind.u.i);
    else if (ind.k != JV_NONE) jfail(c, at, "tojson: indent must be an integer or none");
    const char *isep = NULL, *ksep = NULL;
    if (sep.k == JV_LIST && sep.u.l->n == 2) {
        isep = S(c, sep.u.l->v[0])->s;
        ksep = S(c, sep.u.l->v[1])->s;
    } else if (sep.k != JV_NONE) jfail(c, at, "tojson: separators must be a pair of strings");
    jbuf b = {.a = c->a};
    const char *why = NULL;
    if (jv_write_json(&b, v, jv_truthy(ea), indent, isep, ksep, jv_truthy(sk), &why))
        jfail(c, at, "tojson: %s", why);
    return mkstr(c, &b);
}

static jv do_round(jctx *c, const jnode *at, jv v, fargs *a) {
    jv pr = arg_or(a, 0, "precision", jv_int(0));
    jv method = arg_or(a, 1, "method", jv_cstr(c->a, "common"));
    jcheck_defined(c, at, v);
    if (!jv_is_number(v)) jfail(c, at, "round: expected a number, got %s", jv_typename(v));
    long long p = pr.k == JV_INT ? pr.u.i : 0;
    const char *m = S(c, method)->s;
    if (strcmp(m, "common") && strcmp(m, "ceil") && strcmp(m, "floor"))
        jfail(c, at, "method must be common, ceil or floor");
    if (!strcmp(m, "common")) {
        if (v.k != JV_FLOAT) return v.k == JV_BOOL ? jv_int(v.u.b) : v; /* round(int, n) is the int */
        char tmp[512];
        if (p >= 0 && p < 300) {
            snprintf(tmp, sizeof tmp, "%.*f", (int)p, v.u.f); /* correctly rounded, half to even */
            return jv_float(strtod(tmp, NULL));
        }
        return v;
    }
    double f = jv_num(v), sc = pow(10.0, (double)p);
    return jv_float((m[0] == 'c' ? ceil(f * sc) : floor(f * sc)) / sc);
}

static jv do_indent(jctx *c, const jnode *at, jv v, fargs *a) {
    jv w = arg_or(a, 0, "width", jv_int(4));
    jv first = arg_or(a, 1, "first", jv_bool(0)), blank = arg_or(a, 2, "blank", jv_bool(0));
    jbuf ind = {.a = c->a};
    if (w.k == JV_STR) jb_put(&ind, w.u.s->s, w.u.s->len);
    else if (w.k == JV_INT) for (long long i = 0; i < w.u.i; i++) jb_putc(&ind, ' ');
    else jfail(c, at, "indent: width must be an integer or a string");
    jstr *s = S(c, v);
    /* Jinja appends "\n" then uses splitlines(): split on \n, \r\n, \r */
    jv lines = jv_list(c->a, 8);
    size_t p = 0, n = s->len;
    while (p < n) {
        size_t q = p;
        while (q < n && s->s[q] != '\n' && s->s[q] != '\r') q++;
        jl_push(c->a, lines.u.l, jv_str(c->a, s->s + p, q - p));
        if (q < n && s->s[q] == '\r' && q + 1 < n && s->s[q + 1] == '\n') q++;
        p = q + 1;
    }
    if (!n || s->s[n - 1] == '\n' || s->s[n - 1] == '\r') jl_push(c->a, lines.u.l, jv_cstr(c->a, ""));
    jbuf b = {.a = c->a};
    if (jv_truthy(first)) jb_put(&b, ind.p ? ind.p : "", ind.n);
    for (int i = 0; i < lines.u.l->n; i++) {
        jstr *ln = lines.u.l->v[i].u.s;
        if (i) {
            jb_putc(&b, '\n');
            if (jv_truthy(blank) || ln->len) jb_put(&b, ind.p ? ind.p : "", ind.n);
        }
        jb_put(&b, ln->s, ln->len);
    }
    return mkstr(c, &b);
}

static const char *const filter_names[] = {
    "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
    "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min",
    "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort",
    "string", "sum", "title", "tojson", "trim", "unique", "upper", "wordcount", NULL};

int jfilter_exists(const char *name) {
    for (int i = 0; filter_names[i]; i++)
        if (!strcmp(filter_names[i], name)) return 1;
    return 0;
}

static jv call_filter(jctx *c, const jnode *at, const char *f, jv v, fargs *a) {
    if (!strcmp(f, "trim")) return do_strip(c, v, 3, arg_or(a, 0, "chars", jv_none()));
    if (!strcmp(f, "length") || !strcmp(f, "count")) return jv_int(py_len(c, at, v));
    if (!strcmp(f, "lower")) return case_map(c, v, CASE_LOWER);
    if (!strcmp(f, "upper")) return case_map(c, v, CASE_UPPER);
    if (!strcmp(f, "capitalize")) return case_map(c, v, CASE_CAP);
    if (!strcmp(f, "title")) return case_map(c, v, CASE_TITLE_JINJA);
    if (!strcmp(f, "tojson")) return do_tojson(c, at, v, a);
    if (!strcmp(f, "safe")) return v;
    if (!strcmp(f, "string")) return v.k == JV_STR ? v : jv_str(c->a, S(c, v)->s, S(c, v)->len);
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        jv def = arg_or(a, 0, "default_value", jv_cstr(c->a, ""));
        jv boolean = arg_or(a, 1, "boolean", jv_bool(0));
        if (v.k == JV_UNDEF || (jv_truthy(boolean) && !jv_truthy(v))) return def;
        return v;
    }
    if (!strcmp(f, "join")) {
        jv d = arg_or(a, 0, "d", jv_cstr(c->a, ""));
        jv attr;
        int has_attr = arg_get(a, 1, "attribute", &attr);
        int n;
        jv *items = jiter_items(c, at, v, &n);
        jbuf b = {.a = c->a};
        jstr *sep = S(c, d);
        for (int i = 0; i < n; i++) {
            if (i) jb_put(&b, sep->s, sep->len);
            jv x = has_attr ? attr_path(c, at, items[i], attr) : items[i];
            jv_write_str(&b, x);
        }
        return mkstr(c, &b);
    }
    if (!strcmp(f, "replace")) {
        jv old, nw;
        if (!arg_get(a, 0, "old", &old) || !arg_get(a, 1, "new", &nw)) jfail(c, at, "replace needs old and new");
        jv cnt = arg_or(a, 2, "count", jv_none());
        return do_replace(c, v, old, nw, cnt.k == JV_INT ? cnt.u.i : -1);
    }
    if (!strcmp(f, "items")) {
        if (v.k == JV_UNDEF) return jv_list(c->a, 0);
        if (v.k != JV_DICT && v.k != JV_NS) jfail(c, at, "can only get item pairs from a mapping");
        jv out = jv_list(c->a, v.u.d->n);
        for (int i = 0; i < v.u.d->n; i++) {
            jv t = jv_list(c->a, 2);
            t.tuple = 1;
            jl_push(c->a, t.u.l, v.u.d->k[i]);
            jl_push(c->a, t.u.l, v.u.d->v[i]);
            jl_push(c->a, out.u.l, t);
        }
        return out;
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        int n;
        jv *items = jiter_items(c, at, v, &n);
        if (!n) return jv_undef(f[0] == 'f' ? "No first item, sequence was empty." : "No last item, sequence was empty.");
        return f[0] == 'f' ? items[0] : items[n - 1];
    }
    if (!strcmp(f, "list")) return as_list(c, at, v);
    if (!strcmp(f, "int")) {
        jv def = arg_or(a, 0, "default", jv_int(0));
        if (v.k == JV_INT) return v;
        if (v.k == JV_BOOL) return jv_int(v.u.b);
        if (v.k == JV_FLOAT) return isfinite(v.u.f) ? jv_int((long long)v.u.f) : def;
        if (v.k == JV_STR) {
            char *end;
            jstr *s = do_strip(c, v, 3, jv_none()).u.s;
            long long i = strtoll(s->s, &end, 10);
            if (s->len && !*end) return jv_int(i);
            double d = strtod(s->s, &end);
            if (s->len && !*end && isfinite(d)) return jv_int((long long)d);
        }
        return def;
    }
    if (!strcmp(f, "float")) {
        jv def = arg_or(a, 0, "default", jv_float(0));
        if (jv_is_number(v)) return jv_float(jv_num(v));
        if (v.k == JV_STR) {
            char *end;
            jstr *s = do_strip(c, v, 3, jv_none()).u.s;
            double d = strtod(s->s, &end);
            if (s->len && !*end) return jv_float(d);
        }
        return def;
    }
    if (!strcmp(f, "abs")) {
        jcheck_defined(c, at, v);
        if (v.k == JV_INT) return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        if (v.k == JV_BOOL) return jv_int(v.u.b);
        if (v.k == JV_FLOAT) return jv_float(fabs(v.u.f));
        jfail(c, at, "bad operand type for abs(): '%s'", jv_typename(v));
    }
    if (!strcmp(f, "round")) return do_round(c, at, v, a);
    if (!strcmp(f, "indent")) return do_indent(c, at, v, a);
    if (!strcmp(f, "select")) return select_like(c, at, v, a, 0, 1);
    if (!strcmp(f, "reject")) return select_like(c, at, v, a, 0, 0);
    if (!strcmp(f, "selectattr")) return select_like(c, at, v, a, 1, 1);
    if (!strcmp(f, "rejectattr")) return select_like(c, at, v, a, 1, 0);
    if (!strcmp(f, "map")) {
        int n;
        jv *items = jiter_items(c, at, v, &n);
        jv out = jv_list(c->a, n);
        jv attr;
        if (arg_get(a, -1, "attribute", &attr)) {
            jv def;
            int has_def = arg_get(a, -1, "default", &def);
            for (int i = 0; i < n; i++) {
                jv x = attr_path(c, at, items[i], attr);
                if (x.k == JV_UNDEF && has_def) x = def;
                jl_push(c->a, out.u.l, x);
            }
            return out;
        }
        if (a->n < 1 || a->v[0].k != JV_STR) jfail(c, at, "map needs a filter name or attribute=");
        const char *fname = a->v[0].u.s->s;
        if (!jfilter_exists(fname)) jfail(c, at, "no filter named '%s'", fname);
        fargs sub = {a->n - 1, a->nkw, a->v + 1, a->kw, a->names};
        for (int i = 0; i < n; i++) jl_push(c->a, out.u.l, call_filter(c, at, fname, items[i], &sub));
        return out;
    }
    if (!strcmp(f, "attr")) {
        jv nm;
        if (!arg_get(a, 0, "name", &nm)) jfail(c, at, "attr needs a name");
        return jgetattr(c, at, v, S(c, nm)->s);
    }
    if (!strcmp(f, "reverse")) {
        if (v.k == JV_STR) {
            int n;
            jv *items = jiter_items(c, at, v, &n);
            jbuf b = {.a = c->a};
            for (int i = n - 1; i >= 0; i--) jb_put(&b, items[i].u.s->s, items[i].u.s->len);
            return mkstr(c, &b);
        }
        int n;
        jv *items = jiter_items(c, at, v, &n);
        jv out = jv_list(c->a, n);
        for (int i = n - 1; i >= 0; i--) jl_push(c->a, out.u.l, items[i]);
        return out;
    }
    if (!strcmp(f, "sort") || !strcmp(f, "unique") || !strcmp(f, "min") || !strcmp(f, "max")) {
        int is_sort = f[0] == 's';
        jv rev = is_sort ? arg_or(a, 0, "reverse", jv_bool(0)) : jv_bool(0);
        jv cs = arg_or(a, is_sort ? 1 : 0, "case_sensitive", jv_bool(0));
        jv attr;
        int has_attr = arg_get(a, is_sort ? 2 : 1, "attribute", &attr);
        int n;
        jv *items = jiter_items(c, at, v, &n);
        jv *keys = ja_alloc(c->a, sizeof(jv) * (size_t)(n + 1)), *vals = ja_alloc(c->a, sizeof(jv) * (size_t)(n + 1));
        for (int i = 0; i < n; i++) {
            vals[i] = items[i];
            keys[i] = has_attr ? attr_path(c, at, items[i], attr) : items[i];
        }
        if (!strcmp(f, "unique")) {
            jv out = jv_list(c->a, n);
            jv seen = jv_list(c->a, n);
            for (int i = 0; i < n; i++) {
                jv k = keys[i];
                if (!jv_truthy(cs) && k.k == JV_STR) k = case_map(c, k, CASE_LOWER);
                int dup = 0;
                for (int j = 0; j < seen.u.l->n; j++)
                    if (jv_equal(seen.u.l->v[j], k)) dup = 1;
                if (!dup) {
                    jl_push(c->a, seen.u.l, k);
                    jl_push(c->a, out.u.l, vals[i]);
                }
            }
            return out;
        }
        if (!is_sort) {
            if (!n) return jv_undef(f[1] == 'i' ? "No aggregated item, sequence was empty." : "No aggregated item, sequence was empty.");
            int best = 0;
            for (int i = 1; i < n; i++) {
                int r = cmp_for_sort(c, at, keys[i], keys[best], jv_truthy(cs));
                if (f[1] == 'i' ? r < 0 : r > 0) best = i;
            }
            return vals[best];
        }
        stable_sort(c, at, keys, vals, n, jv_truthy(cs), jv_truthy(rev));
        jv out = jv_list(c->a, n);
        for (int i = 0; i < n; i++) jl_push(c->a, out.u.l, vals[i]);
        return out;
    }
    if (!strcmp(f, "dictsort")) {
        if (v.k != JV_DICT) jfail(c, at, "dictsort: expected a mapping");
        jv cs = arg_or(a, 0, "case_sensitive", jv_bool(0));
        jv by = arg_or(a, 1, "by", jv_cstr(c->a, "key"));
        jv rev = arg_or(a, 2, "reverse", jv_bool(0));
        int n = v.u.d->n, by_value = !strcmp(S(c, by)->s, "value");
        jv *keys = ja_alloc(c->a, sizeof(jv) * (size_t)(n + 1)), *vals = ja_alloc(c->a, sizeof(jv) * (size_t)(n + 1));
        for (int i = 0; i < n; i++) {
            jv t = jv_list(c->a, 2);
            t.tuple = 1;
            jl_push(c->a, t.u.l, v.u.d->k[i]);
            jl_push(c->a, t.u.l, v.u.d->v[i]);
            vals[i] = t;
            keys[i] = by_value ? v.u.d->v[i] : v.u.d->k[i];
        }
        stable_sort(c, at, keys, vals, n, jv_truthy(cs), jv_truthy(rev));
        jv out = jv_list(c->a, n);
        for (int i = 0; i < n; i++) jl_push(c->a, out.u.l, vals[i]);
        return out;
    }
    if (!strcmp(f, "sum")) {
        jv attr;
        int has_attr = arg_get(a, 0, "attribute", &attr);
        jv total = arg_or(a, 1, "start", jv_int(0));
        int n;
        jv *items = jiter_items(c, at, v, &n);
        for (int i = 0; i < n; i++) {
            jv x = has_attr ? attr_path(c, at, items[i], attr) : items[i];
            if (!jv_is_number(x) || !jv_is_number(total)) jfail(c, at, "sum: items must be numbers");
            total = (x.k == JV_FLOAT || total.k == JV_FLOAT) ? jv_float(jv_num(total) + jv_num(x))
                                                             : jv_int((long long)jv_num(total) + (long long)jv_num(x));
        }
        return total;
    }
    if (!strcmp(f, "wordcount")) {
        jstr *s = S(c, v);
        size_t p = 0;
        long long words = 0;
        int in = 0;
        while (p < s->len) {
            uint32_t cp = dec(s->s, s->len, &p);
            int w = is_alnum_cp(cp) || cp == '_';
            if (w && !in) words++;
            in = w;
        }
        return jv_int(words);
    }
    if (!strcmp(f, "e") || !strcmp(f, "escape")) {
        jstr *s = S(c, v);
        jbuf b = {.a = c->a};
        for (size_t i = 0; i < s->len; i++) {
            switch (s->s[i]) {
            case '&': jb_puts(&b, "&amp;"); break;
            case '<': jb_puts(&b, "&lt;"); break;
            case '>': jb_puts(&b, "&gt;"); break;
            case '"': jb_puts(&b, "&#34;"); break;
            case '\'': jb_puts(&b, "&#39;"); break;
            default: jb_putc(&b, s->s[i]);
            }
        }
        return mkstr(c, &b);
    }
    jfail(c, at, "no filter named '%s'", f);
}

jv jfilter(jctx *c, const jnode *at, const char *name, jv v, int nargs, jv *args, int nkw,
           const char **kwnames, jv *kwvals) {
    fargs a = {nargs, nkw, args, kwvals, kwnames};
    return call_filter(c, at, name, v, &a);
}

/* ---- tests ---- */
static const char *const test_names[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false",
    "filter", "float", "ge", "greaterthan", "gt", "in", "integer", "iterable", "le", "lessthan",
    "lower", "lt", "mapping", "ne", "none", "number", "odd", "sameas", "sequence", "string", "test",
    "true", "undefined", "upper", "==", "!=", "<", "<=", ">", ">=", NULL};

int jtest_exists(const char *name) {
    for (int i = 0; test_names[i]; i++)
        if (!strcmp(test_names[i], name)) return 1;
    return 0;
}

int jtest(jctx *c, const jnode *at, const char *t, jv v, int nargs, jv *args) {
    jv a0 = nargs > 0 ? args[0] : jv_undef("missing test argument");
    if (!strcmp(t, "defined")) return v.k != JV_UNDEF;
    if (!strcmp(t, "undefined")) return v.k == JV_UNDEF;
    if (!strcmp(t, "none")) return v.k == JV_NONE;
    if (!strcmp(t, "string")) return v.k == JV_STR;
    if (!strcmp(t, "number")) return v.k == JV_INT || v.k == JV_FLOAT || v.k == JV_BOOL;
    if (!strcmp(t, "integer")) return v.k == JV_INT;
    if (!strcmp(t, "float")) return v.k == JV_FLOAT;
    if (!strcmp(t, "boolean")) return v.k == JV_BOOL;
    if (!strcmp(t, "true")) return v.k == JV_BOOL && v.u.b;
    if (!strcmp(t, "false")) return v.k == JV_BOOL && !v.u.b;
    if (!strcmp(t, "mapping")) return v.k == JV_DICT;
    if (!strcmp(t, "iterable")) return v.k == JV_STR || v.k == JV_LIST || v.k == JV_DICT || v.k == JV_UNDEF;
    if (!strcmp(t, "sequence")) return v.k == JV_STR || v.k == JV_LIST || v.k == JV_DICT;
    if (!strcmp(t, "callable")) return v.k == JV_FUNC || v.k == JV_METHOD || v.k == JV_MACRO;
    if (!strcmp(t, "escaped")) return 0;
    if (!strcmp(t, "filter")) return v.k == JV_STR && jfilter_exists(v.u.s->s);
    if (!strcmp(t, "test")) return v.k == JV_STR && jtest_exists(v.u.s->s);
    if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        jstr *s = S(c, v);
        jv m = case_map(c, v, t[0] == 'l' ? CASE_LOWER : CASE_UPPER);
        int cased = 0;
        size_t p = 0;
        while (p < s->len) {
            uint32_t cp = dec(s->s, s->len, &p);
            if (utf8proc_tolower((utf8proc_int32_t)cp) != utf8proc_toupper((utf8proc_int32_t)cp)) cased = 1;
        }
        return cased && jv_equal(m, v);
    }
    if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        jcheck_defined(c, at, v);
        if (v.k != JV_INT && v.k != JV_BOOL) jfail(c, at, "the %s test needs an integer", t);
        long long i = v.k == JV_INT ? v.u.i : v.u.b;
        return t[0] == 'o' ? (i % 2 != 0) : (i % 2 == 0);
    }
    if (!strcmp(t, "divisibleby")) {
        if (v.k != JV_INT || a0.k != JV_INT || !a0.u.i) jfail(c, at, "divisibleby needs integers");
        return v.u.i % a0.u.i == 0;
    }
    if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "==")) return jv_equal(v, a0);
    if (!strcmp(t, "ne") || !strcmp(t, "!=")) return !jv_equal(v, a0);
    if (!strcmp(t, "sameas")) {
        if (v.k == JV_NONE || v.k == JV_BOOL || v.k == JV_UNDEF) return v.k == a0.k && jv_equal(v, a0);
        return v.k == a0.k && jv_equal(v, a0) && (v.k == JV_LIST ? v.u.l == a0.u.l : v.k == JV_DICT ? v.u.d == a0.u.d : 1);
    }
    if (!strcmp(t, "in")) {
        if (a0.k == JV_STR) {
            if (v.k != JV_STR) jfail(c, at, "'in <string>' requires string as left operand");
            return memmem(a0.u.s->s, a0.u.s->len, v.u.s->s, v.u.s->len) != NULL;
        }
        int n;
        jv *items = jiter_items(c, at, a0, &n);
        for (int i = 0; i < n; i++)
            if (jv_equal(items[i], v)) return 1;
        return 0;
    }
    int op = 0;
    if (!strcmp(t, "lt") || !strcmp(t, "lessthan") || !strcmp(t, "<")) op = 1;
    else if (!strcmp(t, "le") || !strcmp(t, "<=")) op = 2;
    else if (!strcmp(t, "gt") || !strcmp(t, "greaterthan") || !strcmp(t, ">")) op = 3;
    else if (!strcmp(t, "ge") || !strcmp(t, ">=")) op = 4;
    if (op) {
        jcheck_defined(c, at, v);
        jcheck_defined(c, at, a0);
        int r = jv_compare(v, a0);
        if (r == -2) jfail(c, at, "cannot compare '%s' and '%s'", jv_typename(v), jv_typename(a0));
        return op == 1 ? r < 0 : op == 2 ? r <= 0 : op == 3 ? r > 0 : r >= 0;
    }
    jfail(c, at, "no test named '%s'", t);
}

/* ---- methods ---- */
static const char *const str_methods[] = {
    "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "rsplit", "upper", "lower",
    "title", "capitalize", "replace", "find", "rfind", "count", "join", "splitlines", "isdigit",
    "isalpha", "isalnum", "isspace", "isupper", "islower", "removeprefix", "removesuffix", "format",
    NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", NULL};
static const char *const dict_unsafe[] = {"update", "pop", "popitem", "setdefault", "clear", NULL};
static const char *const list_methods[] = {"index", "count", NULL};
static const char *const list_unsafe[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear", NULL};

static int in_list(const char *const *l, const char *n) {
    for (int i = 0; l[i]; i++)
        if (!strcmp(l[i], n)) return 1;
    return 0;
}

int jmethod_exists(jv obj, const char *name) {
    switch (obj.k) {
    case JV_STR: return in_list(str_methods, name);
    case JV_DICT: return in_list(dict_methods, name) || in_list(dict_unsafe, name);
    case JV_LIST: return in_list(list_methods, name) || (!obj.tuple && in_list(list_unsafe, name));
    default: return 0;
    }
}

static int affix_match(jctx *c, const jnode *at, jstr *s, jv affix, int at_end) {
    if (affix.k == JV_LIST && affix.tuple) {
        for (int i = 0; i < affix.u.l->n; i++)
            if (affix_match(c, at, s, affix.u.l->v[i], at_end)) return 1;
        return 0;
    }
    if (affix.k != JV_STR)
        jfail(c, at, "%s first arg must be str or a tuple of str, not %s", at_end ? "endswith" : "startswith",
              jv_typename(affix));
    jstr *x = affix.u.s;
    if (x->len > s->len) return 0;
    return !memcmp(at_end ? s->s + s->len - x->len : s->s, x->s, x->len);
}

static jv str_format(jctx *c, const jnode *at, jstr *s, fargs *a) {
    jbuf b = {.a = c->a};
    int auto_idx = 0;
    for (size_t i = 0; i < s->len; i++) {
        char ch = s->s[i];
        if (ch == '{' && i + 1 < s->len && s->s[i + 1] == '{') { jb_putc(&b, '{'); i++; continue; }
        if (ch == '}' && i + 1 < s->len && s->s[i + 1] == '}') { jb_putc(&b, '}'); i++; continue; }
        if (ch != '{') { jb_putc(&b, ch); continue; }
        size_t j = i + 1;
        while (j < s->len && s->s[j] != '}') j++;
        if (j >= s->len) jfail(c, at, "format: single '{' encountered in format string");
        char *field = ja_strndup(c->a, s->s + i + 1, j - i - 1);
        if (strchr(field, ':') || strchr(field, '!')) jfail(c, at, "format: format specs are not supported");
        jv v;
        if (!*field) {
            if (auto_idx >= a->n) jfail(c, at, "format: not enough positional arguments");
            v = a->v[auto_idx++];
        } else if (field[0] >= '0' && field[0] <= '9') {
            int k = atoi(field);
            if (k >= a->n) jfail(c, at, "format: positional index %d out of range", k);
            v = a->v[k];
        } else if (!arg_get(a, -1, field, &v)) jfail(c, at, "format: missing keyword '%s'", field);
        jv_write_str(&b, v);
        i = j;
    }
    return mkstr(c, &b);
}

jv jmethod_call(jctx *c, const jnode *at, jmethod *m, int nargs, jv *args, int nkw,
                const char **kwnames, jv *kwvals) {
    fargs a = {nargs, nkw, args, kwvals, kwnames};
    jv self = m->self;
    const char *n = m->name;
    if (self.k == JV_LOOP) { /* loop.cycle */
        if (!nargs) jfail(c, at, "no items for cycling given");
        return args[self.u.loop->index0 % nargs];
    }
    if ((self.k == JV_DICT && in_list(dict_unsafe, n)) || (self.k == JV_LIST && in_list(list_unsafe, n)))
        jfail(c, at, "access to attribute '%s' of '%s' object is unsafe.", n, jv_typename(self));
    if (self.k == JV_DICT) {
        jdict *d = self.u.d;
        if (!strcmp(n, "get")) {
            if (nargs < 1) jfail(c, at, "get expected at least 1 argument, got 0");
            jv *v = jd_get(d, args[0]);
            return v ? *v : (nargs > 1 ? args[1] : jv_none());
        }
        jv out = jv_list(c->a, d->n);
        for (int i = 0; i < d->n; i++) {
            if (!strcmp(n, "keys")) jl_push(c->a, out.u.l, d->k[i]);
            else if (!strcmp(n, "values")) jl_push(c->a, out.u.l, d->v[i]);
            else {
                jv t = jv_list(c->a, 2);
                t.tuple = 1;
                jl_push(c->a, t.u.l, d->k[i]);
                jl_push(c->a, t.u.l, d->v[i]);
                jl_push(c->a, out.u.l, t);
            }
        }
        return out;
    }
    if (self.k == JV_LIST) {
        if (nargs < 1) jfail(c, at, "%s() takes exactly one argument", n);
        long long cnt = 0;
        for (int i = 0; i < self.u.l->n; i++)
            if (jv_equal(self.u.l->v[i], args[0])) {
                if (n[0] == 'i') return jv_int(i);
                cnt++;
            }
        if (n[0] == 'i') jfail(c, at, "value is not in list");
        return jv_int(cnt);
    }
    jstr *s = self.u.s;
    if (!strcmp(n, "startswith") || !strcmp(n, "endswith")) {
        if (nargs < 1) jfail(c, at, "%s() takes at least 1 argument", n);
        return jv_bool(affix_match(c, at, s, args[0], n[0] == 'e'));
    }
    if (!strcmp(n, "strip")) return do_strip(c, self, 3, arg_or(&a, 0, "chars", jv_none()));
    if (!strcmp(n, "lstrip")) return do_strip(c, self, 1, arg_or(&a, 0, "chars", jv_none()));
    if (!strcmp(n, "rstrip")) return do_strip(c, self, 2, arg_or(&a, 0, "chars", jv_none()));
    if (!strcmp(n, "split") || !strcmp(n, "rsplit")) {
        jv ms = arg_or(&a, 1, "maxsplit", jv_int(-1));
        return do_split(c, at, self, arg_or(&a, 0, "sep", jv_none()), ms.k == JV_INT ? ms.u.i : -1, n[0] == 'r');
    }
    if (!strcmp(n, "upper")) return case_map(c, self, CASE_UPPER);
    if (!strcmp(n, "lower")) return case_map(c, self, CASE_LOWER);
    if (!strcmp(n, "title")) return case_map(c, self, CASE_TITLE_PY);
    if (!strcmp(n, "capitalize")) return case_map(c, self, CASE_CAP);
    if (!strcmp(n, "replace")) {
        if (nargs < 2) jfail(c, at, "replace expected at least 2 arguments");
        jv cnt = arg_or(&a, 2, "count", jv_int(-1));
        return do_replace(c, self, args[0], args[1], cnt.k == JV_INT ? cnt.u.i : -1);
    }
    if (!strcmp(n, "find") || !strcmp(n, "rfind") || !strcmp(n, "count")) {
        if (nargs < 1 || args[0].k != JV_STR) jfail(c, at, "%s() needs a string argument", n);
        jstr *x = args[0].u.s;
        if (!strcmp(n, "count")) {
            if (!x->len) return jv_int((long long)utf8_count(s->s, s->len) + 1);
            long long k = 0;
            const char *p = s->s;
            while ((p = memmem(p, s->len - (size_t)(p - s->s), x->s, x->len)) != NULL) k++, p += x->len;
            return jv_int(k);
        }
        long long found = -1;
        if (n[0] == 'f') {
            const char *p = memmem(s->s, s->len, x->s, x->len);
            if (p) found = (long long)(p - s->s);
        } else
            for (long long i = (long long)s->len - (long long)x->len; i >= 0; i--)
                if (!memcmp(s->s + i, x->s, x->len)) { found = i; break; }
        return jv_int(found < 0 ? -1 : (long long)utf8_count(s->s, (size_t)found));
    }
    if (!strcmp(n, "join")) {
        if (nargs < 1) jfail(c, at, "join() takes exactly one argument");
        int cnt;
        jv *items = jiter_items(c, at, args[0], &cnt);
        jbuf b = {.a = c->a};
        for (int i = 0; i < cnt; i++) {
            if (items[i].k != JV_STR) jfail(c, at, "sequence item %d: expected str instance, %s found", i, jv_typename(items[i]));
            if (i) jb_put(&b, s->s, s->len);
            jb_put(&b, items[i].u.s->s, items[i].u.s->len);
        }
        return mkstr(c, &b);
    }
    if (!strcmp(n, "splitlines")) {
        jv out = jv_list(c->a, 8);
        size_t p = 0;
        while (p < s->len) {
            size_t q = p;
            while (q < s->len && s->s[q] != '\n' && s->s[q] != '\r') q++;
            jl_push(c->a, out.u.l, jv_str(c->a, s->s + p, q - p));
            if (q < s->len && s->s[q] == '\r' && q + 1 < s->len && s->s[q + 1] == '\n') q++;
            p = q + 1;
        }
        return out;
    }
    if (!strncmp(n, "is", 2)) {
        size_t p = 0;
        int any = 0, ok = 1, cased = 0;
        while (p < s->len) {
            uint32_t cp = dec(s->s, s->len, &p);
            any = 1;
            if (!strcmp(n, "isdigit")) ok &= utf8proc_category((utf8proc_int32_t)cp) == UTF8PROC_CATEGORY_ND;
            else if (!strcmp(n, "isalpha")) ok &= is_alpha_cp(cp);
            else if (!strcmp(n, "isalnum")) ok &= is_alnum_cp(cp);
            else if (!strcmp(n, "isspace")) ok &= py_isspace(cp);
            else {
                int lo = utf8proc_tolower((utf8proc_int32_t)cp) == (utf8proc_int32_t)cp;
                int up = utf8proc_toupper((utf8proc_int32_t)cp) == (utf8proc_int32_t)cp;
                if (lo != up) {
                    cased = 1;
                    ok &= !strcmp(n, "isupper") ? up : lo;
                }
            }
        }
        if (!strcmp(n, "isupper") || !strcmp(n, "islower")) return jv_bool(cased && ok);
        return jv_bool(any && ok);
    }
    if (!strcmp(n, "removeprefix") || !strcmp(n, "removesuffix")) {
        if (nargs < 1 || args[0].k != JV_STR) jfail(c, at, "%s() needs a string argument", n);
        jstr *x = args[0].u.s;
        if (affix_match(c, at, s, args[0], n[6] == 's'))
            return n[6] == 's' ? jv_str(c->a, s->s, s->len - x->len) : jv_str(c->a, s->s + x->len, s->len - x->len);
        return self;
    }
    if (!strcmp(n, "format")) return str_format(c, at, s, &a);
    jfail(c, at, "'%s' object has no attribute '%s'", jv_typename(self), n);
}
