/*
 * jinja_value.c: the dynamic values of the Jinja interpreter and the Python behaviour they
 * must reproduce byte for byte: str() and repr() (None, True, 1.0, ['a', "it's"], {'k': 1}),
 * float repr (shortest round-trip digits, "1e+20", "1.5e-05"), equality and ordering with
 * bool == int == float, truthiness, and json.dumps as transformers' tojson calls it
 * (ensure_ascii=False by default, ", " and ": " separators, indent). Also the arena that
 * holds values during a render and a growable output buffer.
 */
#include "tok/jinja_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */
struct ja_block {
    ja_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
};

void *ja_alloc(jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    ja_block *b = a->head;
    if (!b || b->used + n > b->cap) {
        size_t cap = n > 60000 ? n : 60000;
        b = malloc(sizeof(ja_block) + cap);
        if (!b) ja_oom(a);
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = b->mem + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

void ja_oom(jarena *a) { longjmp(*a->oom, JA_OOM); }

char *ja_strndup(jarena *a, const char *s, size_t n) {
    char *p = ja_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void ja_free_all(jarena *a) {
    ja_block *b = a->head;
    while (b) {
        ja_block *nx = b->next;
        free(b);
        b = nx;
    }
    a->head = NULL;
}

/* ---- buffer ---- */
void jb_put(jbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p;
        if (b->a) {
            p = ja_alloc(b->a, cap);
            if (b->n) memcpy(p, b->p, b->n);
        } else {
            p = realloc(b->p, cap);
            if (!p) { /* no arena to report to: the buffer keeps what fit, and stops growing */
                if (b->cap > b->n) b->p[b->n] = 0;
                return;
            }
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void jb_puts(jbuf *b, const char *s) { jb_put(b, s, strlen(s)); }
void jb_putc(jbuf *b, char c) { jb_put(b, &c, 1); }
void jb_printf(jbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        jb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = b->a ? ja_alloc(b->a, (size_t)n + 1) : malloc((size_t)n + 1);
    if (!big) return;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    jb_put(b, big, (size_t)n);
    if (!b->a) free(big); /* (arena memory goes with the arena) */
}

/* ---- constructors ---- */
jv jv_undef(const char *msg) { jv v = {.k = JV_UNDEF}; v.u.undef = msg; return v; }
jv jv_none(void) { jv v = {.k = JV_NONE}; return v; }
jv jv_bool(int b) { jv v = {.k = JV_BOOL}; v.u.b = !!b; return v; }
jv jv_int(long long i) { jv v = {.k = JV_INT}; v.u.i = i; return v; }
jv jv_float(double f) { jv v = {.k = JV_FLOAT}; v.u.f = f; return v; }
jv jv_str(jarena *a, const char *s, size_t n) {
    jstr *st = ja_alloc(a, sizeof(jstr) + n + 1);
    st->len = n;
    if (n) memcpy(st->s, s, n);
    st->s[n] = 0;
    jv v = {.k = JV_STR};
    v.u.s = st;
    return v;
}
jv jv_cstr(jarena *a, const char *s) { return jv_str(a, s, strlen(s)); }
jv jv_list(jarena *a, int cap) {
    jlist *l = ja_alloc(a, sizeof(jlist));
    if (cap < 4) cap = 4;
    l->v = ja_alloc(a, sizeof(jv) * (size_t)cap);
    l->cap = cap;
    jv v = {.k = JV_LIST};
    v.u.l = l;
    return v;
}
jv jv_dict(jarena *a, int cap) {
    jdict *d = ja_alloc(a, sizeof(jdict));
    if (cap < 4) cap = 4;
    d->k = ja_alloc(a, sizeof(jv) * (size_t)cap);
    d->v = ja_alloc(a, sizeof(jv) * (size_t)cap);
    d->cap = cap;
    jv v = {.k = JV_DICT};
    v.u.d = d;
    return v;
}
void jl_push(jarena *a, jlist *l, jv v) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        jv *nv = ja_alloc(a, sizeof(jv) * (size_t)cap);
        if (l->n) memcpy(nv, l->v, sizeof(jv) * (size_t)l->n);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}
jv *jd_get(const jdict *d, jv k) {
    for (int i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], k)) return &d->v[i];
    return NULL;
}
jv *jd_gets(const jdict *d, const char *key) {
    size_t n = strlen(key);
    for (int i = 0; i < d->n; i++)
        if (d->k[i].k == JV_STR && d->k[i].u.s->len == n && !memcmp(d->k[i].u.s->s, key, n))
            return &d->v[i];
    return NULL;
}
void jd_set(jarena *a, jdict *d, jv k, jv v) {
    jv *p = jd_get(d, k);
    if (p) {
        *p = v;
        return;
    }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        jv *nk = ja_alloc(a, sizeof(jv) * (size_t)cap), *nv = ja_alloc(a, sizeof(jv) * (size_t)cap);
        if (d->n) {
            memcpy(nk, d->k, sizeof(jv) * (size_t)d->n);
            memcpy(nv, d->v, sizeof(jv) * (size_t)d->n);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
}

jv jv_from_json(jarena *a, const cJSON *j) {
    if (!j || cJSON_IsNull(j)) return jv_none();
    if (cJSON_IsBool(j)) return jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        /* cJSON keeps no int/float distinction: integral values within 2^53 become ints */
        if (d == floor(d) && fabs(d) < 9007199254740992.0) return jv_int((long long)d);
        return jv_float(d);
    }
    if (cJSON_IsString(j)) return jv_cstr(a, j->valuestring);
    if (cJSON_IsArray(j)) {
        jv l = jv_list(a, cJSON_GetArraySize(j));
        for (const cJSON *e = j->child; e; e = e->next) jl_push(a, l.u.l, jv_from_json(a, e));
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv d = jv_dict(a, cJSON_GetArraySize(j));
        for (const cJSON *e = j->child; e; e = e->next)
            jd_set(a, d.u.d, jv_cstr(a, e->string ? e->string : ""), jv_from_json(a, e));
        return d;
    }
    return jv_none();
}

/* ---- predicates ---- */
int jv_is_number(jv v) { return v.k == JV_INT || v.k == JV_FLOAT || v.k == JV_BOOL; }
double jv_num(jv v) {
    return v.k == JV_FLOAT ? v.u.f : v.k == JV_INT ? (double)v.u.i : v.k == JV_BOOL ? v.u.b : 0;
}

int jv_truthy(jv v) {
    switch (v.k) {
    case JV_UNDEF: case JV_NONE: return 0;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.u.s->len != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

int jv_equal(jv x, jv y) {
    if (jv_is_number(x) && jv_is_number(y)) {
        if (x.k != JV_FLOAT && y.k != JV_FLOAT) {
            long long a = x.k == JV_INT ? x.u.i : x.u.b, b = y.k == JV_INT ? y.u.i : y.u.b;
            return a == b;
        }
        return jv_num(x) == jv_num(y);
    }
    if (x.k != y.k) return 0;
    switch (x.k) {
    case JV_UNDEF: case JV_NONE: return 1;
    case JV_STR: return x.u.s->len == y.u.s->len && !memcmp(x.u.s->s, y.u.s->s, x.u.s->len);
    case JV_LIST:
        if (x.tuple != y.tuple || x.u.l->n != y.u.l->n) return 0;
        for (int i = 0; i < x.u.l->n; i++)
            if (!jv_equal(x.u.l->v[i], y.u.l->v[i])) return 0;
        return 1;
    case JV_DICT:
        if (x.u.d->n != y.u.d->n) return 0;
        for (int i = 0; i < x.u.d->n; i++) {
            jv *o = jd_get(y.u.d, x.u.d->k[i]);
            if (!o || !jv_equal(x.u.d->v[i], *o)) return 0;
        }
        return 1;
    case JV_NS: return x.u.d == y.u.d;
    case JV_FUNC: return x.u.fn == y.u.fn;
    case JV_MACRO: return x.u.macro == y.u.macro;
    default: return 0;
    }
}

int jv_compare(jv x, jv y) {
    if (jv_is_number(x) && jv_is_number(y)) {
        double a = jv_num(x), b = jv_num(y);
        if (x.k != JV_FLOAT && y.k != JV_FLOAT) {
            long long p = x.k == JV_INT ? x.u.i : x.u.b, q = y.k == JV_INT ? y.u.i : y.u.b;
            return p < q ? -1 : p > q;
        }
        return a < b ? -1 : a > b;
    }
    if (x.k == JV_STR && y.k == JV_STR) {
        size_t n = x.u.s->len < y.u.s->len ? x.u.s->len : y.u.s->len;
        int c = memcmp(x.u.s->s, y.u.s->s, n);
        if (c) return c < 0 ? -1 : 1;
        return x.u.s->len < y.u.s->len ? -1 : x.u.s->len > y.u.s->len;
    }
    if (x.k == JV_LIST && y.k == JV_LIST && x.tuple == y.tuple) {
        int n = x.u.l->n < y.u.l->n ? x.u.l->n : y.u.l->n;
        for (int i = 0; i < n; i++) {
            if (jv_equal(x.u.l->v[i], y.u.l->v[i])) continue;
            return jv_compare(x.u.l->v[i], y.u.l->v[i]);
        }
        return x.u.l->n < y.u.l->n ? -1 : x.u.l->n > y.u.l->n;
    }
    return -2;
}

const char *jv_typename(jv v) {
    switch (v.k) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_FUNC: return "function";
    case JV_METHOD: return "builtin_function_or_method";
    case JV_MACRO: return "Macro";
    case JV_LOOP: return "LoopContext";
    }
    return "object";
}

/* ---- UTF-8 ---- */
size_t utf8_count(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}
size_t utf8_offset(const char *s, size_t n, long long i) {
    size_t p = 0;
    long long k = 0;
    while (p < n) {
        if (((unsigned char)s[p] & 0xC0) != 0x80) {
            if (k == i) return p;
            k++;
        }
        p++;
    }
    return n;
}
/* decode one code point at s[*p] (advancing *p); invalid bytes decode as themselves */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *p) {
    uint32_t c = s[(*p)++];
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (!extra) return c;
    c &= 0x3F >> extra;
    for (int k = 0; k < extra && *p < n && (s[*p] & 0xC0) == 0x80; k++) c = (c << 6) | (s[(*p)++] & 0x3F);
    return c;
}

/* ---- printing ---- */
void jv_write_float(jbuf *b, double f) {
    if (isnan(f)) { jb_puts(b, "nan"); return; }
    if (isinf(f)) { jb_puts(b, f < 0 ? "-inf" : "inf"); return; }
    if (f == 0) { jb_puts(b, signbit(f) ? "-0.0" : "0.0"); return; }
    char tmp[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    /* tmp = [-]d.ddde[+-]xx: split into digits and decimal exponent */
    char digits[32];
    int nd = 0, neg = 0;
    const char *p = tmp;
    if (*p == '-') neg = 1, p++;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    if (neg) jb_putc(b, '-');
    if (exp10 >= -5 && exp10 < 16) { /* Python repr: fixed notation for 1e-5 <= |f| < 1e16 */
        if (exp10 < -4) goto sci;
        if (exp10 >= 0) {
            for (int i = 0; i <= exp10; i++) jb_putc(b, i < nd ? digits[i] : '0');
            jb_putc(b, '.');
            if (nd > exp10 + 1) jb_put(b, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
            else jb_putc(b, '0');
        } else {
            jb_puts(b, "0.");
            for (int i = 0; i < -exp10 - 1; i++) jb_putc(b, '0');
            jb_put(b, digits, (size_t)nd);
        }
        return;
    }
sci:
    jb_putc(b, digits[0]);
    if (nd > 1) {
        jb_putc(b, '.');
        jb_put(b, digits + 1, (size_t)(nd - 1));
    }
    jb_printf(b, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
}

static void write_str_repr(jbuf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jb_putc(b, q);
    size_t p = 0;
    while (p < n) {
        size_t start = p;
        uint32_t c = utf8_next((const unsigned char *)s, n, &p);
        if (c == (uint32_t)q || c == '\\') { jb_putc(b, '\\'); jb_putc(b, (char)c); }
        else if (c == '\n') jb_puts(b, "\\n");
        else if (c == '\r') jb_puts(b, "\\r");
        else if (c == '\t') jb_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0xa0) || c == 0xad) jb_printf(b, "\\x%02x", c);
        else jb_put(b, s + start, p - start);
    }
    jb_putc(b, q);
}

static void write_py(jbuf *b, jv v, int repr) {
    switch (v.k) {
    case JV_UNDEF: break;
    case JV_NONE: jb_puts(b, "None"); break;
    case JV_BOOL: jb_puts(b, v.u.b ? "True" : "False"); break;
    case JV_INT: jb_printf(b, "%lld", v.u.i); break;
    case JV_FLOAT: jv_write_float(b, v.u.f); break;
    case JV_STR:
        if (repr) write_str_repr(b, v.u.s->s, v.u.s->len);
        else jb_put(b, v.u.s->s, v.u.s->len);
        break;
    case JV_LIST:
        jb_putc(b, v.tuple ? '(' : '[');
        for (int i = 0; i < v.u.l->n; i++) {
            if (i) jb_puts(b, ", ");
            write_py(b, v.u.l->v[i], 1);
        }
        if (v.tuple && v.u.l->n == 1) jb_putc(b, ',');
        jb_putc(b, v.tuple ? ')' : ']');
        break;
    case JV_DICT:
        jb_putc(b, '{');
        for (int i = 0; i < v.u.d->n; i++) {
            if (i) jb_puts(b, ", ");
            write_py(b, v.u.d->k[i], 1);
            jb_puts(b, ": ");
            write_py(b, v.u.d->v[i], 1);
        }
        jb_putc(b, '}');
        break;
    case JV_NS:
        jb_puts(b, "<Namespace {");
        for (int i = 0; i < v.u.d->n; i++) {
            if (i) jb_puts(b, ", ");
            write_py(b, v.u.d->k[i], 1);
            jb_puts(b, ": ");
            write_py(b, v.u.d->v[i], 1);
        }
        jb_puts(b, "}>");
        break;
    case JV_MACRO: jb_printf(b, "<Macro '%s'>", v.u.macro->name); break;
    default: jb_printf(b, "<%s object>", jv_typename(v)); break;
    }
}
void jv_write_str(jbuf *b, jv v) { write_py(b, v, 0); }
void jv_write_repr(jbuf *b, jv v) { write_py(b, v, 1); }

jstr *jv_to_str(jarena *a, jv v) {
    if (v.k == JV_STR) return v.u.s;
    jbuf b = {.a = a};
    jv_write_str(&b, v);
    return jv_str(a, b.p ? b.p : "", b.n).u.s;
}

/* ---- JSON (Python's json.dumps) ---- */
static void json_str(jbuf *b, const char *s, size_t n, int ensure_ascii) {
    jb_putc(b, '"');
    size_t p = 0;
    while (p < n) {
        size_t start = p;
        uint32_t c = utf8_next((const unsigned char *)s, n, &p);
        switch (c) {
        case '"': jb_puts(b, "\\\""); break;
        case '\\': jb_puts(b, "\\\\"); break;
        case '\n': jb_puts(b, "\\n"); break;
        case '\r': jb_puts(b, "\\r"); break;
        case '\t': jb_puts(b, "\\t"); break;
        case '\b': jb_puts(b, "\\b"); break;
        case '\f': jb_puts(b, "\\f"); break;
        default:
            if (c < 0x20) jb_printf(b, "\\u%04x", c);
            else if (ensure_ascii && c > 0x7e) {
                if (c >= 0x10000) {
                    uint32_t v = c - 0x10000;
                    jb_printf(b, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
                } else jb_printf(b, "\\u%04x", c);
            } else jb_put(b, s + start, p - start);
        }
    }
    jb_putc(b, '"');
}

static void json_nl(jbuf *b, int indent, int level) {
    jb_putc(b, '\n');
    for (int i = 0; i < indent * level; i++) jb_putc(b, ' ');
}

static int json_val(jbuf *b, jv v, int ea, int indent, const char *isep, const char *ksep, int sk,
                    int level, const char **why) {
    switch (v.k) {
    case JV_NONE: jb_puts(b, "null"); return 0;
    case JV_BOOL: jb_puts(b, v.u.b ? "true" : "false"); return 0;
    case JV_INT: jb_printf(b, "%lld", v.u.i); return 0;
    case JV_FLOAT:
        if (isnan(v.u.f)) jb_puts(b, "NaN");
        else if (isinf(v.u.f)) jb_puts(b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else jv_write_float(b, v.u.f);
        return 0;
    case JV_STR: json_str(b, v.u.s->s, v.u.s->len, ea); return 0;
    case JV_LIST:
        if (!v.u.l->n) { jb_puts(b, "[]"); return 0; }
        jb_putc(b, '[');
        for (int i = 0; i < v.u.l->n; i++) {
            if (i) jb_puts(b, isep);
            if (indent >= 0) json_nl(b, indent, level + 1);
            if (json_val(b, v.u.l->v[i], ea, indent, isep, ksep, sk, level + 1, why)) return -1;
        }
        if (indent >= 0) json_nl(b, indent, level);
        jb_putc(b, ']');
        return 0;
    case JV_DICT: {
        jdict *d = v.u.d;
        if (!d->n) { jb_puts(b, "{}"); return 0; }
        int *order = b->a ? ja_alloc(b->a, sizeof(int) * (size_t)d->n)
                          : malloc(sizeof(int) * (size_t)d->n);
        if (!order) {
            *why = "out of memory";
            return -1;
        }
        for (int i = 0; i < d->n; i++) order[i] = i;
        if (sk) /* insertion sort by key (str keys; Python would refuse mixed types) */
            for (int i = 1; i < d->n; i++)
                for (int j = i; j > 0 && jv_compare(d->k[order[j - 1]], d->k[order[j]]) > 0; j--) {
                    int t = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = t;
                }
        jb_putc(b, '{');
        for (int ii = 0; ii < d->n; ii++) {
            int i = order[ii];
            if (ii) jb_puts(b, isep);
            if (indent >= 0) json_nl(b, indent, level + 1);
            jv k = d->k[i];
            if (k.k == JV_STR) json_str(b, k.u.s->s, k.u.s->len, ea);
            else if (k.k == JV_INT || k.k == JV_FLOAT || k.k == JV_BOOL || k.k == JV_NONE) {
                jb_putc(b, '"');
                json_val(b, k, ea, -1, isep, ksep, sk, 0, why);
                jb_putc(b, '"');
            } else {
                if (!b->a) free(order);
                *why = "keys must be str, int, float, bool or None";
                return -1;
            }
            jb_puts(b, ksep);
            if (json_val(b, d->v[i], ea, indent, isep, ksep, sk, level + 1, why)) {
                if (!b->a) free(order);
                return -1;
            }
        }
        if (!b->a) free(order);
        if (indent >= 0) json_nl(b, indent, level);
        jb_putc(b, '}');
        return 0;
    }
    case JV_UNDEF: *why = "Object of type Undefined is not JSON serializable"; return -1;
    case JV_NS: *why = "Object of type Namespace is not JSON serializable"; return -1;
    default: *why = "this value is not JSON serializable"; return -1;
    }
}

int jv_write_json(jbuf *b, jv v, int ensure_ascii, int indent, const char *item_sep,
                  const char *key_sep, int sort_keys, const char **why) {
    if (!item_sep) item_sep = indent >= 0 ? "," : ", ";
    if (!key_sep) key_sep = ": ";
    return json_val(b, v, ensure_ascii, indent, item_sep, key_sep, sort_keys, 0, why);
}
