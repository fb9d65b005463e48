/*
 * jinja_eval.c: runs a parsed template. Statements write into an output buffer; expressions
 * evaluate to values (jinja_value.c) with Jinja's semantics under transformers' sandboxed
 * environment.
 *
 * Scoping follows Jinja: the template has one top-level frame; each iteration of a for loop and
 * each macro call gets a fresh frame whose assignments vanish when it ends ({% set %} inside a
 * loop does not leak out, and is not seen by the next iteration); if-blocks do not open a frame;
 * namespace() objects are shared by reference, which is how templates carry state out of loops.
 * Undefined names and missing attributes/items give Undefined values that print as "" and are
 * false; using them further (attribute of undefined, arithmetic, calling) is an error, as with
 * Jinja's default Undefined. {% generation %} records the byte span its output occupies in the
 * top-level output (where transformers' AssistantTracker records it). Errors longjmp out with
 * "NAME:LINE:COL" of the node that failed.
 */
#include "tok/jinja_impl.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct jframe {
    jframe *parent;
    jdict vars;
};

enum { FN_RANGE = 1, FN_NAMESPACE, FN_DICT, FN_RAISE, FN_STRFTIME, FN_CALLER };

void jfail(jctx *c, const jnode *n, const char *fmt, ...) {
    char what[900], where[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (n) snprintf(where, sizeof where, "%s:%d:%d", c->name, n->line, n->col);
    else snprintf(where, sizeof where, "%s", c->name);
    ft_error_set(c->err, FT_ERR_INPUT, where, NULL, "%s", what);
    longjmp(c->fail, 1);
}

static jframe *frame_new(jctx *c, jframe *parent) {
    jframe *f = ja_alloc(c->a, sizeof(jframe));
    f->parent = parent;
    return f;
}
static jv *frame_lookup(jframe *f, const char *name) {
    for (; f; f = f->parent) {
        jv *v = jd_gets(&f->vars, name);
        if (v) return v;
    }
    return NULL;
}
static void frame_set(jctx *c, jframe *f, const char *name, jv v) {
    jv *p = jd_gets(&f->vars, name);
    if (p) *p = v;
    else jd_set(c->a, &f->vars, jv_cstr(c->a, name), v);
}

void jcheck_defined(jctx *c, const jnode *at, jv v) {
    if (v.k == JV_UNDEF) jfail(c, at, "%s", v.u.undef ? v.u.undef : "value is undefined");
}

static const char *type_repr(jv v) {
    /* jinja2.utils.object_type_repr */
    switch (v.k) {
    case JV_NONE: return "None";
    case JV_DICT: return "dict object";
    case JV_LIST: return v.tuple ? "tuple object" : "list object";
    case JV_STR: return "str object";
    case JV_INT: return "int object";
    case JV_FLOAT: return "float object";
    case JV_BOOL: return "bool object";
    case JV_NS: return "jinja2.utils.Namespace object";
    case JV_LOOP: return "jinja2.runtime.LoopContext object";
    default: return "object";
    }
}

static jv undef_attr(jctx *c, jv obj, const char *name) {
    jbuf b = {.a = c->a};
    if (obj.k == JV_NONE) jb_printf(&b, "'None' has no attribute '%s'", name);
    else jb_printf(&b, "'%s' has no attribute '%s'", type_repr(obj), name);
    return jv_undef(b.p);
}

static jv loop_attr(jctx *c, jv obj, const char *name) {
    jloop *l = obj.u.loop;
    if (!strcmp(name, "index")) return jv_int(l->index0 + 1);
    if (!strcmp(name, "index0")) return jv_int(l->index0);
    if (!strcmp(name, "revindex")) return jv_int(l->length - l->index0);
    if (!strcmp(name, "revindex0")) return jv_int(l->length - l->index0 - 1);
    if (!strcmp(name, "first")) return jv_bool(l->index0 == 0);
    if (!strcmp(name, "last")) return jv_bool(l->index0 == l->length - 1);
    if (!strcmp(name, "length")) return jv_int(l->length);
    if (!strcmp(name, "previtem")) return l->index0 > 0 ? l->prev : jv_undef("there is no previous item");
    if (!strcmp(name, "nextitem")) return l->index0 < l->length - 1 ? l->next : jv_undef("there is no next item");
    if (!strcmp(name, "depth")) return jv_int(l->depth0 + 1);
    if (!strcmp(name, "depth0")) return jv_int(l->depth0);
    if (!strcmp(name, "cycle")) {
        jmethod *m = ja_alloc(c->a, sizeof(jmethod));
        m->self = obj;
        m->name = "cycle";
        jv v = {.k = JV_METHOD};
        v.u.m = m;
        return v;
    }
    return undef_attr(c, obj, name);
}

static jv method_value(jctx *c, jv obj, const char *name) {
    jmethod *m = ja_alloc(c->a, sizeof(jmethod));
    m->self = obj;
    m->name = name;
    jv v = {.k = JV_METHOD};
    v.u.m = m;
    return v;
}

jv jgetattr(jctx *c, const jnode *at, jv obj, const char *name) {
    jcheck_defined(c, at, obj);
    if (obj.k == JV_LOOP) return loop_attr(c, obj, name);
    if (obj.k == JV_NS) {
        jv *v = jd_gets(obj.u.d, name);
        return v ? *v : undef_attr(c, obj, name);
    }
    if (jmethod_exists(obj, name)) return method_value(c, obj, name);
    if (obj.k == JV_DICT) {
        jv *v = jd_gets(obj.u.d, name);
        if (v) return *v;
    }
    return undef_attr(c, obj, name);
}

static long long norm_index(long long i, long long n) { return i < 0 ? i + n : i; }

jv jgetitem(jctx *c, const jnode *at, jv obj, jv key) {
    jcheck_defined(c, at, obj);
    if (obj.k == JV_DICT || obj.k == JV_NS) {
        jv *v = jd_get(obj.u.d, key);
        if (v) return *v;
    } else if ((obj.k == JV_LIST || obj.k == JV_STR) && (key.k == JV_INT || key.k == JV_BOOL)) {
        long long i = key.k == JV_INT ? key.u.i : key.u.b;
        if (obj.k == JV_LIST) {
            long long k = norm_index(i, obj.u.l->n);
            if (k >= 0 && k < obj.u.l->n) return obj.u.l->v[k];
        } else {
            long long n = (long long)utf8_count(obj.u.s->s, obj.u.s->len);
            long long k = norm_index(i, n);
            if (k >= 0 && k < n) {
                size_t b = utf8_offset(obj.u.s->s, obj.u.s->len, k), e = utf8_offset(obj.u.s->s, obj.u.s->len, k + 1);
                return jv_str(c->a, obj.u.s->s + b, e - b);
            }
        }
        jbuf b = {.a = c->a};
        jb_printf(&b, "%s has no element %lld", type_repr(obj), i);
        return jv_undef(b.p);
    } else if (obj.k == JV_LOOP && key.k == JV_STR) {
        return loop_attr(c, obj, key.u.s->s);
    }
    if (key.k == JV_STR) {
        if (obj.k != JV_NS && jmethod_exists(obj, key.u.s->s)) return method_value(c, obj, key.u.s->s);
        return undef_attr(c, obj, key.u.s->s);
    }
    jbuf b = {.a = c->a};
    jb_printf(&b, "%s has no element ", type_repr(obj));
    jv_write_repr(&b, key);
    return jv_undef(b.p);
}

/* Python slice semantics over n items: fills the selected indices */
static long long *slice_indices(jctx *c, const jnode *at, long long n, jv vs, jv ve, jv vt, long long *count) {
    long long step = 1;
    if (vt.k != JV_NONE && vt.k != JV_UNDEF) {
        if (vt.k != JV_INT) jfail(c, at, "slice indices must be integers or None");
        step = vt.u.i;
        if (!step) jfail(c, at, "slice step cannot be zero");
    }
    long long lo, hi;
    for (int w = 0; w < 2; w++) {
        jv v = w ? ve : vs;
        long long *dst = w ? &hi : &lo;
        if (v.k == JV_NONE || v.k == JV_UNDEF) {
            *dst = step > 0 ? (w ? n : 0) : (w ? -1 : n - 1);
            continue;
        }
        if (v.k != JV_INT && v.k != JV_BOOL) jfail(c, at, "slice indices must be integers or None");
        long long x = v.k == JV_INT ? v.u.i : v.u.b;
        if (x < 0) {
            x += n;
            if (x < 0) x = step > 0 ? 0 : -1;
        } else if (x >= n) x = step > 0 ? n : n - 1;
        *dst = x;
    }
    long long cnt = 0;
    if (step > 0 && hi > lo) cnt = (hi - lo + step - 1) / step;
    if (step < 0 && lo > hi) cnt = (lo - hi + (-step) - 1) / (-step);
    long long *idx = ja_alloc(c->a, sizeof(long long) * (size_t)(cnt + 1));
    for (long long i = 0; i < cnt; i++) idx[i] = lo + i * step;
    *count = cnt;
    return idx;
}

static jv do_slice(jctx *c, const jnode *at, jv obj, jv s, jv e, jv t) {
    jcheck_defined(c, at, obj);
    long long cnt;
    if (obj.k == JV_LIST) {
        long long *idx = slice_indices(c, at, obj.u.l->n, s, e, t, &cnt);
        jv r = jv_list(c->a, (int)cnt);
        r.tuple = obj.tuple;
        for (long long i = 0; i < cnt; i++) jl_push(c->a, r.u.l, obj.u.l->v[idx[i]]);
        return r;
    }
    if (obj.k == JV_STR) {
        const char *p = obj.u.s->s;
        size_t n = obj.u.s->len;
        long long nc = (long long)utf8_count(p, n);
        long long *idx = slice_indices(c, at, nc, s, e, t, &cnt);
        if (nc == (long long)n) { /* ASCII */
            char *o = ja_alloc(c->a, (size_t)cnt + 1);
            for (long long i = 0; i < cnt; i++) o[i] = p[idx[i]];
            return jv_str(c->a, o, (size_t)cnt);
        }
        size_t *off = ja_alloc(c->a, sizeof(size_t) * (size_t)(nc + 1));
        long long k = 0;
        for (size_t i = 0; i < n; i++)
            if (((unsigned char)p[i] & 0xC0) != 0x80) off[k++] = i;
        off[nc] = n;
        jbuf b = {.a = c->a};
        for (long long i = 0; i < cnt; i++) jb_put(&b, p + off[idx[i]], off[idx[i] + 1] - off[idx[i]]);
        return jv_str(c->a, b.p ? b.p : "", b.n);
    }
    jfail(c, at, "'%s' object is not subscriptable", jv_typename(obj));
}

jv *jiter_items(jctx *c, const jnode *at, jv v, int *n) {
    switch (v.k) {
    case JV_UNDEF: *n = 0; return NULL;
    case JV_LIST: *n = v.u.l->n; return v.u.l->v;
    case JV_DICT: case JV_NS: *n = v.u.d->n; return v.u.d->k;
    case JV_STR: {
        const char *p = v.u.s->s;
        size_t len = v.u.s->len;
        int cnt = (int)utf8_count(p, len);
        jv *items = ja_alloc(c->a, sizeof(jv) * (size_t)(cnt + 1));
        size_t i = 0;
        for (int k = 0; k < cnt; k++) {
            size_t s = i++;
            while (i < len && ((unsigned char)p[i] & 0xC0) == 0x80) i++;
            items[k] = jv_str(c->a, p + s, i - s);
        }
        *n = cnt;
        return items;
    }
    default: jfail(c, at, "'%s' object is not iterable", jv_typename(v));
    }
}

static jv arith(jctx *c, const jnode *at, int op, jv x, jv y) {
    jcheck_defined(c, at, x);
    jcheck_defined(c, at, y);
    static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    if (op == OP_ADD && x.k == JV_STR && y.k == JV_STR) {
        size_t n = x.u.s->len + y.u.s->len;
        jstr *st = ja_alloc(c->a, sizeof(jstr) + n + 1);
        st->len = n;
        memcpy(st->s, x.u.s->s, x.u.s->len);
        memcpy(st->s + x.u.s->len, y.u.s->s, y.u.s->len);
        jv r = {.k = JV_STR};
        r.u.s = st;
        return r;
    }
    if (op == OP_ADD && x.k == JV_LIST && y.k == JV_LIST && x.tuple == y.tuple) {
        jv r = jv_list(c->a, x.u.l->n + y.u.l->n);
        r.tuple = x.tuple;
        for (int i = 0; i < x.u.l->n; i++) jl_push(c->a, r.u.l, x.u.l->v[i]);
        for (int i = 0; i < y.u.l->n; i++) jl_push(c->a, r.u.l, y.u.l->v[i]);
        return r;
    }
    if (op == OP_MUL && ((x.k == JV_STR || x.k == JV_LIST) && (y.k == JV_INT || y.k == JV_BOOL))) {
        long long times = y.k == JV_INT ? y.u.i : y.u.b;
        size_t unit = x.k == JV_STR ? x.u.s->len : (size_t)x.u.l->n * sizeof(jv);
        if (times > 0 && unit && (unsigned long long)times > (256ull << 20) / unit)
            jfail(c, at, "result of * would be larger than 256 MiB");
        if (x.k == JV_STR) {
            jbuf b = {.a = c->a};
            for (long long i = 0; i < times; i++) jb_put(&b, x.u.s->s, x.u.s->len);
            return jv_str(c->a, b.p ? b.p : "", b.n);
        }
        jv r = jv_list(c->a, 4);
        for (long long i = 0; i < times; i++)
            for (int k = 0; k < x.u.l->n; k++) jl_push(c->a, r.u.l, x.u.l->v[k]);
        return r;
    }
    if (op == OP_MUL && (y.k == JV_STR || y.k == JV_LIST) && (x.k == JV_INT || x.k == JV_BOOL))
        return arith(c, at, op, y, x);
    if (!jv_is_number(x) || !jv_is_number(y)) {
        if (op == OP_ADD && x.k == JV_STR)
            jfail(c, at, "can only concatenate str (not \"%s\") to str", jv_typename(y));
        jfail(c, at, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op], jv_typename(x),
              jv_typename(y));
    }
    int ints = x.k != JV_FLOAT && y.k != JV_FLOAT;
    long long a = x.k == JV_INT ? x.u.i : x.k == JV_BOOL ? x.u.b : 0;
    long long b = y.k == JV_INT ? y.u.i : y.k == JV_BOOL ? y.u.b : 0;
    double fa = jv_num(x), fb = jv_num(y);
    long long r;
    switch (op) {
    case OP_ADD:
        if (!ints) return jv_float(fa + fb);
        if (__builtin_add_overflow(a, b, &r)) jfail(c, at, "integer overflow in +");
        return jv_int(r);
    case OP_SUB:
        if (!ints) return jv_float(fa - fb);
        if (__builtin_sub_overflow(a, b, &r)) jfail(c, at, "integer overflow in -");
        return jv_int(r);
    case OP_MUL:
        if (!ints) return jv_float(fa * fb);
        if (__builtin_mul_overflow(a, b, &r)) jfail(c, at, "integer overflow in *");
        return jv_int(r);
    case OP_DIV:
        if (fb == 0) jfail(c, at, "division by zero");
        return jv_float(fa / fb);
    case OP_FLOORDIV:
        if (fb == 0) jfail(c, at, "integer division or modulo by zero");
        if (ints) {
            if (a == LLONG_MIN && b == -1) jfail(c, at, "integer overflow in //");
            long long q = a / b;
            if ((a % b) && ((a < 0) != (b < 0))) q--;
            return jv_int(q);
        }
        return jv_float(floor(fa / fb));
    case OP_MOD:
        if (fb == 0) jfail(c, at, "integer division or modulo by zero");
        if (ints) {
            if (b == -1) return jv_int(0);
            long long m = a % b;
            if (m && ((m < 0) != (b < 0))) m += b;
            return jv_int(m);
        } else {
            double m = fmod(fa, fb);
            if (m != 0 && ((m < 0) != (fb < 0))) m += fb;
            return jv_float(m);
        }
    case OP_POW:
        if (ints && b >= 0) {
            long long acc = 1, base = a;
            long long e = b;
            while (e) { /* square and multiply, failing on overflow (Python would go to big ints) */
                if (e & 1)
                    if (__builtin_mul_overflow(acc, base, &acc)) jfail(c, at, "integer overflow in **");
                e >>= 1;
                if (e && __builtin_mul_overflow(base, base, &base)) jfail(c, at, "integer overflow in **");
            }
            return jv_int(acc);
        }
        return jv_float(pow(fa, fb));
    }
    return jv_none();
}

static int contains(jctx *c, const jnode *at, jv item, jv seq) {
    if (seq.k == JV_UNDEF) return 0;
    if (seq.k == JV_STR) {
        if (item.k != JV_STR)
            jfail(c, at, "'in <string>' requires string as left operand, not %s", jv_typename(item));
        if (!item.u.s->len) return 1;
        return memmem(seq.u.s->s, seq.u.s->len, item.u.s->s, item.u.s->len) != NULL;
    }
    if (seq.k == JV_LIST) {
        for (int i = 0; i < seq.u.l->n; i++)
            if (jv_equal(seq.u.l->v[i], item)) return 1;
        return 0;
    }
    if (seq.k == JV_DICT || seq.k == JV_NS) return jd_get(seq.u.d, item) != NULL;
    jfail(c, at, "argument of type '%s' is not iterable", jv_typename(seq));
}

static int compare_op(jctx *c, const jnode *at, int op, jv x, jv y) {
    switch (op) {
    case OP_EQ: return jv_equal(x, y);
    case OP_NE: return !jv_equal(x, y);
    case OP_IN: return contains(c, at, x, y);
    case OP_NOTIN: return !contains(c, at, x, y);
    default: break;
    }
    jcheck_defined(c, at, x);
    jcheck_defined(c, at, y);
    int r = jv_compare(x, y);
    static const char *const sym[] = {"", "", "", "", "", "", "", "", "==", "!=", "<", "<=", ">", ">="};
    if (r == -2)
        jfail(c, at, "'%s' not supported between instances of '%s' and '%s'", sym[op], jv_typename(x),
              jv_typename(y));
    switch (op) {
    case OP_LT: return r < 0;
    case OP_LE: return r <= 0;
    case OP_GT: return r > 0;
    case OP_GE: return r >= 0;
    }
    return 0;
}

/* evaluate call arguments */
typedef struct cargs {
    int n, nkw;
    jv *v, *kw;
    const char **names;
} cargs;
static cargs eval_args(jctx *c, const jnode *n) {
    cargs a = {n->args.n, n->kwargs.n, NULL, NULL, n->kwnames};
    a.v = ja_alloc(c->a, sizeof(jv) * (size_t)(a.n + 1));
    a.kw = ja_alloc(c->a, sizeof(jv) * (size_t)(a.nkw + 1));
    for (int i = 0; i < a.n; i++) a.v[i] = jeval(c, n->args.v[i]);
    for (int i = 0; i < a.nkw; i++) a.kw[i] = jeval(c, n->kwargs.v[i]);
    return a;
}

static void exec_body(jctx *c, jframe *f, jbuf *out, const jnodes *body, int *ctl);
static jframe *cur_frame(jctx *c);


typedef struct macro_call {
    const jnode *caller_body;
    jframe *caller_frame;
} macro_call;

static jv call_macro(jctx *c, const jnode *at, const jnode *m, int nargs, jv *args, int nkw,
                     const char **kwnames, jv *kwvals, const jnode *caller_body, jframe *caller_frame);

jv jcall_value(jctx *c, const jnode *at, jv fn, int nargs, jv *args, int nkw,
               const char **kwnames, jv *kwvals) {
    switch (fn.k) {
    case JV_UNDEF: jfail(c, at, "%s", fn.u.undef ? fn.u.undef : "undefined value is not callable");
    case JV_METHOD: return jmethod_call(c, at, fn.u.m, nargs, args, nkw, kwnames, kwvals);
    case JV_MACRO: return call_macro(c, at, fn.u.macro, nargs, args, nkw, kwnames, kwvals, NULL, NULL);
    case JV_FUNC:
        switch (fn.u.fn) {
        case FN_RANGE: {
            long long a0 = 0, a1 = 0, st = 1;
            for (int i = 0; i < nargs; i++)
                if (args[i].k != JV_INT) jfail(c, at, "range() arguments must be integers");
            if (nargs == 1) a1 = args[0].u.i;
            else if (nargs >= 2) {
                a0 = args[0].u.i;
                a1 = args[1].u.i;
                if (nargs >= 3) st = args[2].u.i;
            } else jfail(c, at, "range expected at least 1 argument, got 0");
            if (!st) jfail(c, at, "range() arg 3 must not be zero");
            jv r = jv_list(c->a, 8);
            for (long long i = a0; st > 0 ? i < a1 : i > a1; i += st) {
                if (r.u.l->n >= 100000) jfail(c, at, "range too big (more than 100000 items)");
                jl_push(c->a, r.u.l, jv_int(i));
            }
            return r;
        }
        case FN_NAMESPACE:
        case FN_DICT: {
            jv d = jv_dict(c->a, 4);
            for (int i = 0; i < nargs; i++) {
                if (args[i].k != JV_DICT && args[i].k != JV_NS)
                    jfail(c, at, "%s() takes a mapping as its positional argument",
                          fn.u.fn == FN_DICT ? "dict" : "namespace");
                for (int k = 0; k < args[i].u.d->n; k++) jd_set(c->a, d.u.d, args[i].u.d->k[k], args[i].u.d->v[k]);
            }
            for (int i = 0; i < nkw; i++) {
                if (fn.u.fn == FN_NAMESPACE && kwnames[i][0] == '_')
                    jfail(c, at,
                          "Chat templates cannot store underscore-prefixed attributes on a namespace, "
                          "but got '%s'",
                          kwnames[i]);
                jd_set(c->a, d.u.d, jv_cstr(c->a, kwnames[i]), kwvals[i]);
            }
            if (fn.u.fn == FN_NAMESPACE) d.k = JV_NS;
            return d;
        }
        case FN_RAISE: {
            jstr *m = nargs ? jv_to_str(c->a, args[0]) : jv_to_str(c->a, jv_cstr(c->a, ""));
            jfail(c, at, "raise_exception: %s", m->s);
        }
        case FN_STRFTIME: {
            if (nargs < 1 || args[0].k != JV_STR) jfail(c, at, "strftime_now() takes a format string");
            time_t now = time(NULL);
            struct tm tmv;
            localtime_r(&now, &tmv);
            char buf[512];
            size_t k = strftime(buf, sizeof buf, args[0].u.s->s, &tmv);
            return jv_str(c->a, buf, k);
        }
        case FN_CALLER: {
            /* caller() inside a macro invoked by {% call %}: render the call block's body */
            jv *cb = frame_lookup(cur_frame(c), " caller_body");
            jv *cf = frame_lookup(cur_frame(c), " caller_frame");
            if (!cb || !cf) jfail(c, at, "caller() used outside a {%% call %%} block");
            const jnode *body = cb->u.macro;
            jframe *f = frame_new(c, (jframe *)cf->u.m);
            const jnode *callnode = body;
            for (int i = 0; i < callnode->params.n; i++) {
                jv v = i < nargs ? args[i] : callnode->defaults.v[i] ? jeval(c, callnode->defaults.v[i]) : jv_undef(NULL);
                frame_set(c, f, callnode->params.v[i]->name, v);
            }
            jbuf b = {.a = c->a};
            int ctl = 0;
            exec_body(c, f, &b, &callnode->body, &ctl);
            return jv_str(c->a, b.p ? b.p : "", b.n);
        }
        }
        break;
    default: break;
    }
    jfail(c, at, "'%s' object is not callable", jv_typename(fn));
}

/* The frames in use, innermost last (names resolve from the innermost). */
static jframe *cur_frame(jctx *c) { return c->fr[c->nfr - 1]; }
static void push_frame(jctx *c, const jnode *at, jframe *f) {
    if (c->nfr >= JCTX_MAX_FRAMES) jfail(c, at, "template nesting too deep");
    c->fr[c->nfr++] = f;
}
static void pop_frame(jctx *c) { c->nfr--; }

static jv call_macro(jctx *c, const jnode *at, const jnode *m, int nargs, jv *args, int nkw,
                     const char **kwnames, jv *kwvals, const jnode *caller_body, jframe *caller_frame) {
    if (++c->depth > 200) jfail(c, at, "maximum recursion depth exceeded in macro '%s'", m->name);
    jframe *f = frame_new(c, c->globals);
    if (nargs > m->params.n)
        jfail(c, at, "macro '%s' takes not more than %d argument(s)", m->name, m->params.n);
    for (int i = 0; i < m->params.n; i++) {
        const char *pn = m->params.v[i]->name;
        jv v;
        int have = 0;
        if (i < nargs) v = args[i], have = 1;
        for (int k = 0; k < nkw; k++)
            if (!strcmp(kwnames[k], pn)) {
                if (have) jfail(c, at, "macro '%s' got multiple values for argument '%s'", m->name, pn);
                v = kwvals[k];
                have = 1;
            }
        if (!have) {
            if (m->defaults.v[i]) {
                push_frame(c, at, f);
                v = jeval(c, m->defaults.v[i]);
                pop_frame(c);
            } else {
                jbuf b = {.a = c->a};
                jb_printf(&b, "parameter '%s' was not provided", pn);
                v = jv_undef(b.p);
            }
        }
        frame_set(c, f, pn, v);
    }
    for (int k = 0; k < nkw; k++) {
        int known = 0;
        for (int i = 0; i < m->params.n; i++)
            if (!strcmp(kwnames[k], m->params.v[i]->name)) known = 1;
        if (!known) jfail(c, at, "macro '%s' takes no keyword argument '%s'", m->name, kwnames[k]);
    }
    if (caller_body) {
        jv cb = {.k = JV_MACRO};
        cb.u.macro = (jnode *)caller_body;
        frame_set(c, f, " caller_body", cb);
        jv cf = {.k = JV_METHOD};
        cf.u.m = (jmethod *)caller_frame;
        frame_set(c, f, " caller_frame", cf);
        jv fnv = {.k = JV_FUNC};
        fnv.u.fn = FN_CALLER;
        frame_set(c, f, "caller", fnv);
    }
    jbuf b = {.a = c->a};
    int ctl = 0;
    exec_body(c, f, &b, &m->body, &ctl);
    c->depth--;
    return jv_str(c->a, b.p ? b.p : "", b.n);
}

static jv apply_filter_chain(jctx *c, const jnode *f, jv v) {
    if (f->a) v = apply_filter_chain(c, f->a, v);
    cargs a = eval_args(c, f);
    return jfilter(c, f, f->name, v, a.n, a.v, a.nkw, a.names, a.kw);
}

jv jeval(jctx *c, jnode *n) {
    switch (n->k) {
    case E_CONST: return n->val;
    case E_NAME: {
        jv *v = frame_lookup(cur_frame(c), n->name);
        if (v) return *v;
        jbuf b = {.a = c->a};
        jb_printf(&b, "'%s' is undefined", n->name);
        return jv_undef(b.p);
    }
    case E_ATTR: return jgetattr(c, n, jeval(c, n->a), n->name);
    case E_ITEM: {
        jv obj = jeval(c, n->a);
        return jgetitem(c, n, obj, jeval(c, n->b));
    }
    case E_SLICE: {
        jv obj = jeval(c, n->a);
        jv s = n->b ? jeval(c, n->b) : jv_none(), e = n->c ? jeval(c, n->c) : jv_none();
        jv t = n->args.v[0] ? jeval(c, n->args.v[0]) : jv_none();
        return do_slice(c, n, obj, s, e, t);
    }
    case E_CALL: {
        jv fn = jeval(c, n->a);
        cargs a = eval_args(c, n);
        return jcall_value(c, n, fn, a.n, a.v, a.nkw, a.names, a.kw);
    }
    case E_FILTER: {
        jv v = jeval(c, n->a);
        cargs a = eval_args(c, n);
        return jfilter(c, n, n->name, v, a.n, a.v, a.nkw, a.names, a.kw);
    }
    case E_TEST: {
        jv v = jeval(c, n->a);
        cargs a = eval_args(c, n);
        return jv_bool(jtest(c, n, n->name, v, a.n, a.v));
    }
    case E_NEG: case E_POS: {
        jv v = jeval(c, n->a);
        jcheck_defined(c, n, v);
        if (!jv_is_number(v)) jfail(c, n, "bad operand type for unary %c: '%s'", n->k == E_NEG ? '-' : '+', jv_typename(v));
        if (n->k == E_POS) return v.k == JV_BOOL ? jv_int(v.u.b) : v;
        if (v.k == JV_FLOAT) return jv_float(-v.u.f);
        return jv_int(-(v.k == JV_INT ? v.u.i : v.u.b));
    }
    case E_NOT: return jv_bool(!jv_truthy(jeval(c, n->a)));
    case E_AND: {
        jv l = jeval(c, n->a);
        return jv_truthy(l) ? jeval(c, n->b) : l;
    }
    case E_OR: {
        jv l = jeval(c, n->a);
        return jv_truthy(l) ? l : jeval(c, n->b);
    }
    case E_BIN: {
        jv l = jeval(c, n->a);
        jv r = jeval(c, n->b);
        return arith(c, n, n->op, l, r);
    }
    case E_CMP: {
        jv l = jeval(c, n->args.v[0]);
        for (int i = 0; i < n->op; i++) {
            jv r = jeval(c, n->args.v[i + 1]);
            if (!compare_op(c, n, n->ops[i], l, r)) return jv_bool(0);
            l = r;
        }
        return jv_bool(1);
    }
    case E_COND:
        if (jv_truthy(jeval(c, n->a))) return jeval(c, n->b);
        if (n->c) return jeval(c, n->c);
        return jv_undef("the inline if-expression on false has no else section");
    case E_LIST: case E_TUPLE: {
        jv l = jv_list(c->a, n->args.n);
        l.tuple = n->k == E_TUPLE;
        for (int i = 0; i < n->args.n; i++) jl_push(c->a, l.u.l, jeval(c, n->args.v[i]));
        return l;
    }
    case E_DICT: {
        jv d = jv_dict(c->a, n->args.n / 2);
        for (int i = 0; i + 1 < n->args.n; i += 2) {
            jv k = jeval(c, n->args.v[i]);
            jd_set(c->a, d.u.d, k, jeval(c, n->args.v[i + 1]));
        }
        return d;
    }
    case E_CONCAT: {
        jbuf b = {.a = c->a};
        for (int i = 0; i < n->args.n; i++) jv_write_str(&b, jeval(c, n->args.v[i]));
        return jv_str(c->a, b.p ? b.p : "", b.n);
    }
    default: jfail(c, n, "internal error: statement used as an expression");
    }
}

static void assign(jctx *c, jframe *f, const jnode *target, jv v) {
    if (target->k == E_NAME) {
        frame_set(c, f, target->name, v);
        return;
    }
    if (target->k == E_ATTR) {
        jv ns = jeval(c, target->a);
        if (ns.k != JV_NS)
            jfail(c, target, "cannot assign attribute on non-namespace object ('%s')", target->a->name);
        if (target->name[0] == '_')
            jfail(c, target,
                  "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '%s'",
                  target->name);
        jd_set(c->a, ns.u.d, jv_cstr(c->a, target->name), v);
        return;
    }
    /* tuple unpacking */
    int n;
    jv *items = jiter_items(c, target, v, &n);
    if (n != target->args.n)
        jfail(c, target, n > target->args.n ? "too many values to unpack (expected %d)" : "not enough values to unpack (expected %d)", target->args.n);
    for (int i = 0; i < n; i++) assign(c, f, target->args.v[i], items[i]);
}

static void write_value(jbuf *out, jv v) { jv_write_str(out, v); }

/* ctl: 0 normal, 1 break, 2 continue */
static void exec_body(jctx *c, jframe *f, jbuf *out, const jnodes *body, int *ctl) {
    push_frame(c, NULL, f);
    for (int i = 0; i < body->n && !*ctl; i++) {
        jnode *n = body->v[i];
        switch (n->k) {
        case N_DATA: jb_put(out, n->val.u.s->s, n->val.u.s->len); break;
        case N_OUTPUT: write_value(out, jeval(c, n->a)); break;
        case N_IF:
            /* an elif chain is an N_IF as the only statement of orelse */
            if (jv_truthy(jeval(c, n->a))) exec_body(c, f, out, &n->body, ctl);
            else exec_body(c, f, out, &n->orelse, ctl);
            break;
        case N_FOR: {
            jv seq = jeval(c, n->b);
            int cnt;
            jv *items = jiter_items(c, n->b, seq, &cnt);
            if (seq.k == JV_DICT) { /* iterating a dict yields its keys; copy (it may change) */
                jv *cp = ja_alloc(c->a, sizeof(jv) * (size_t)(cnt + 1));
                memcpy(cp, items, sizeof(jv) * (size_t)cnt);
                items = cp;
            }
            if (n->c) { /* loop filter: evaluated with the target bound, before the loop */
                jv *kept = ja_alloc(c->a, sizeof(jv) * (size_t)(cnt + 1));
                int k = 0;
                for (int i = 0; i < cnt; i++) {
                    jframe *lf = frame_new(c, f);
                    assign(c, lf, n->a, items[i]);
                    push_frame(c, n, lf);
                    int keep = jv_truthy(jeval(c, n->c));
                    pop_frame(c);
                    if (keep) kept[k++] = items[i];
                }
                items = kept;
                cnt = k;
            }
            jv *outer_loop = frame_lookup(f, "loop");
            int depth0 = outer_loop && outer_loop->k == JV_LOOP ? outer_loop->u.loop->depth0 + 1 : 0;
            for (int i = 0; i < cnt; i++) {
                jframe *lf = frame_new(c, f);
                jloop *L = ja_alloc(c->a, sizeof(jloop));
                L->index0 = i;
                L->length = cnt;
                L->prev = i > 0 ? items[i - 1] : jv_undef(NULL);
                L->next = i + 1 < cnt ? items[i + 1] : jv_undef(NULL);
                L->depth0 = depth0;
                jv lv = {.k = JV_LOOP};
                lv.u.loop = L;
                frame_set(c, lf, "loop", lv);
                assign(c, lf, n->a, items[i]);
                int ictl = 0;
                exec_body(c, lf, out, &n->body, &ictl);
                if (ictl == 1) break;
            }
            if (!cnt && n->orelse.n) {
                exec_body(c, f, out, &n->orelse, ctl);
            }
            break;
        }
        case N_SET: assign(c, f, n->a, jeval(c, n->b)); break;
        case N_SETBLOCK: {
            jbuf b = {.a = c->a};
            int ictl = 0;
            exec_body(c, f, &b, &n->body, &ictl);
            jv v = jv_str(c->a, b.p ? b.p : "", b.n);
            if (n->b) v = apply_filter_chain(c, n->b, v);
            assign(c, f, n->a, v);
            break;
        }
        case N_MACRO: {
            jv m = {.k = JV_MACRO};
            m.u.macro = n;
            frame_set(c, f, n->name, m);
            break;
        }
        case N_CALLBLOCK: {
            const jnode *call = n->a;
            jv fn = jeval(c, call->a);
            if (fn.k != JV_MACRO) jfail(c, n, "{%% call %%} needs a macro, got '%s'", jv_typename(fn));
            cargs a = eval_args(c, call);
            write_value(out, call_macro(c, n, fn.u.macro, a.n, a.v, a.nkw, a.names, a.kw, n, f));
            break;
        }
        case N_FILTERBLOCK: {
            jbuf b = {.a = c->a};
            int ictl = 0;
            exec_body(c, f, &b, &n->body, &ictl);
            write_value(out, apply_filter_chain(c, n->b, jv_str(c->a, b.p ? b.p : "", b.n)));
            break;
        }
        case N_BREAK: *ctl = 1; break;
        case N_CONTINUE: *ctl = 2; break;
        case N_GENERATION: {
            /* transformers renders the body, then records (len(rendered so far), + len(body)) */
            jbuf b = {.a = c->a};
            exec_body(c, f, &b, &n->body, ctl);
            size_t start = c->root->n;
            if (c->n_spans == c->cap_spans) {
                int cap = c->cap_spans ? c->cap_spans * 2 : 8;
                jinja_span *s = ja_alloc(c->a, sizeof(jinja_span) * (size_t)cap);
                if (c->n_spans) memcpy(s, c->spans, sizeof(jinja_span) * (size_t)c->n_spans);
                c->spans = s;
                c->cap_spans = cap;
            }
            c->spans[c->n_spans].begin = start;
            c->spans[c->n_spans].end = start + b.n;
            c->n_spans++;
            jb_put(out, b.p ? b.p : "", b.n);
            break;
        }
        default: jfail(c, n, "internal error: expression used as a statement");
        }
    }
    pop_frame(c);
}

ft_status jinja_parse(const char *src, size_t len, const char *name, jinja_template **out,
                      ft_error *err) {
    jinja_template *t = calloc(1, sizeof *t);
    if (!t) return ft_error_set(err, FT_ERR_RUNTIME, name, NULL, "out of memory");
    snprintf(t->name, sizeof t->name, "%s", name ? name : "template");
    /* out of memory in the lexer or parser jumps back here; what setjmp's caller reads after
     * the jump (t, toks) is not changed after it */
    jtok **toks = calloc(1, sizeof *toks);
    jmp_buf oom;
    if (!toks) {
        free(t);
        return ft_error_set(err, FT_ERR_RUNTIME, name, NULL, "out of memory");
    }
    t->arena.oom = &oom;
    if (setjmp(oom)) {
        free(*toks);
        free(toks);
        jinja_free(t);
        return ft_error_set(err, FT_ERR_RUNTIME, name, NULL,
                            "out of memory while reading the template");
    }
    int nt = 0;
    ft_status st = jlex(src, len, t->name, &t->arena, toks, &nt, err);
    if (!st) st = jparse(*toks, nt, t->name, &t->arena, &t->body, err);
    free(*toks);
    free(toks);
    t->arena.oom = NULL; /* (the template's arena takes no more allocations) */
    if (st) {
        jinja_free(t);
        return st;
    }
    *out = t;
    return FT_OK;
}

void jinja_free(jinja_template *t) {
    if (!t) return;
    ja_free_all(&t->arena);
    free(t);
}

ft_status jinja_render(const jinja_template *t, const cJSON *vars, char **out, size_t *len,
                       jinja_span **spans, int *n_spans, ft_error *err) {
    /* the context is on the heap (it holds the frame stack) and volatile-free: everything that
     * setjmp must see after a longjmp lives behind this pointer */
    jctx *c = calloc(1, sizeof(jctx));
    if (!c) return ft_error_set(err, FT_ERR_RUNTIME, t->name, NULL, "out of memory");
    jarena *arena = calloc(1, sizeof(jarena));
    jbuf *root = calloc(1, sizeof(jbuf));
    if (!arena || !root) {
        free(arena), free(root), free(c);
        return ft_error_set(err, FT_ERR_RUNTIME, t->name, NULL, "out of memory");
    }
    arena->oom = &c->fail; /* out of memory in the arena fails the render like an error */
    c->a = arena;
    c->name = t->name;
    c->err = err;
    root->a = arena;
    c->root = root;
    switch (setjmp(c->fail)) {
    case 0:
        break;
    case JA_OOM:
        ja_free_all(arena);
        free(arena), free(root), free(c);
        return ft_error_set(err, FT_ERR_RUNTIME, t->name, NULL,
                            "out of memory while rendering the template");
    default: /* jfail filled err */
        ja_free_all(arena);
        free(arena), free(root), free(c);
        return FT_ERR_INPUT;
    }
    jframe *g = frame_new(c, NULL);
    c->globals = g;
    static const struct { const char *name; int fn; } fns[] = {
        {"range", FN_RANGE}, {"namespace", FN_NAMESPACE}, {"dict", FN_DICT},
        {"raise_exception", FN_RAISE}, {"strftime_now", FN_STRFTIME}};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        jv f = {.k = JV_FUNC};
        f.u.fn = fns[i].fn;
        frame_set(c, g, fns[i].name, f);
    }
    if (vars)
        for (const cJSON *e = vars->child; e; e = e->next)
            if (e->string) frame_set(c, g, e->string, jv_from_json(arena, e));
    int ctl = 0;
    exec_body(c, g, root, &t->body, &ctl);
    *out = malloc(root->n + 1);
    if (!*out) ja_oom(arena);
    if (root->n) memcpy(*out, root->p, root->n);
    (*out)[root->n] = 0;
    *len = root->n;
    if (spans) {
        *spans = NULL;
        *n_spans = c->n_spans;
        if (c->n_spans) {
            *spans = malloc(sizeof(jinja_span) * (size_t)c->n_spans);
            if (!*spans) {
                free(*out);
                *out = NULL;
                ja_oom(arena);
            }
            memcpy(*spans, c->spans, sizeof(jinja_span) * (size_t)c->n_spans);
        }
    }
    ja_free_all(arena);
    free(arena);
    free(root);
    free(c);
    return FT_OK;
}
