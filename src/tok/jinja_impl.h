/*
 * jinja_impl.h: the shared internals of the Jinja interpreter (see jinja.h): the arena, the
 * value type, tokens, syntax-tree nodes and the functions the lexer, parser, evaluator and
 * built-ins call in one another. Not for use outside src/tok/jinja_*.c.
 *
 * Values (jv) are small structs passed by value; strings, lists and dicts they point to live in
 * an arena. Strings are byte strings of UTF-8; operations that Python defines on characters
 * (len, slicing, indexing) count code points.
 */
#ifndef FT_TOK_JINJA_IMPL_H
#define FT_TOK_JINJA_IMPL_H

#include "tok/jinja.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

/* ---- arena ---- */
typedef struct ja_block ja_block;
/* An arena's owner (jinja_parse, jinja_render) points oom at a jmp_buf it has set: when memory
 * runs out, ja_alloc (and ja_oom) longjmp there with JA_OOM, and the owner returns
 * FT_ERR_RUNTIME. */
enum { JA_OOM = 2 };
typedef struct jarena {
    ja_block *head;
    jmp_buf *oom;
} jarena;
void *ja_alloc(jarena *a, size_t n); /* zeroed; never NULL (longjmps to a->oom when out of memory) */
_Noreturn void ja_oom(jarena *a);
char *ja_strndup(jarena *a, const char *s, size_t n);
void ja_free_all(jarena *a);

/* ---- growable byte buffer (malloc'd) ---- */
typedef struct jbuf {
    char *p;
    size_t n, cap;
    jarena *a; /* when set, the buffer grows inside this arena (freed with it) */
} jbuf;
void jb_put(jbuf *b, const char *s, size_t n);
void jb_puts(jbuf *b, const char *s);
void jb_putc(jbuf *b, char c);
void jb_printf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- values ---- */
typedef enum {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT,
    JV_NS,     /* namespace(): a mutable dict with attribute access */
    JV_FUNC,   /* global function (range, namespace, raise_exception, ...) */
    JV_METHOD, /* bound method of a string, dict, list or loop */
    JV_MACRO,
    JV_LOOP,
} jv_kind;

typedef struct jstr {
    size_t len;
    char s[]; /* NUL-terminated */
} jstr;
typedef struct jv jv;
typedef struct jlist jlist;
typedef struct jdict jdict;
struct jv {
    unsigned char k;
    unsigned char tuple; /* JV_LIST printed as (a, b) */
    union {
        int b;
        long long i;
        double f;
        jstr *s;
        jlist *l;
        jdict *d;
        const char *undef; /* JV_UNDEF: the message an error about it gives (or NULL) */
        int fn;
        struct jmethod *m;
        struct jnode *macro;
        struct jloop *loop;
    } u;
};
struct jlist {
    int n, cap;
    jv *v;
};
struct jdict {
    int n, cap;
    jv *k, *v;
};
typedef struct jmethod {
    jv self;
    const char *name;
} jmethod;
typedef struct jloop {
    long long index0, length;
    jv prev, next; /* JV_UNDEF at the edges */
    int depth0;
} jloop;

/* ---- tokens ---- */
typedef enum {
    T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STRING, T_INT,
    T_FLOAT, T_OP, T_EOF
} jtok_kind;
typedef struct jtok {
    jtok_kind k;
    int line, col;
    const char *s; /* T_DATA, T_STRING (decoded), T_NAME, T_OP: arena copy */
    size_t len;
    long long i;
    double f;
} jtok;

/* ---- syntax tree ---- */
typedef enum {
    /* statements */
    N_DATA, N_OUTPUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_BREAK, N_CONTINUE,
    N_GENERATION, N_FILTERBLOCK,
    /* expressions */
    E_CONST, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NEG, E_POS, E_NOT,
    E_BIN, E_AND, E_OR, E_CMP, E_COND, E_LIST, E_TUPLE, E_DICT, E_CONCAT,
} jnode_kind;

typedef struct jnode jnode;
typedef struct jnodes {
    int n;
    jnode **v;
} jnodes;
struct jnode {
    jnode_kind k;
    int line, col;
    const char *name;  /* E_NAME, E_ATTR, E_FILTER, E_TEST, N_MACRO, N_SET target attr */
    int op;            /* E_BIN operator / E_TEST negated */
    jv val;            /* E_CONST, N_DATA */
    jnode *a, *b, *c;  /* operands; N_IF cond; N_FOR target(a) iter(b) filter(c) */
    jnodes args;       /* call/filter/test positional args; list items; E_CMP operands */
    jnodes kwargs;     /* keyword argument values (names in kwnames) */
    const char **kwnames;
    int *ops;          /* E_CMP operators */
    jnodes body, orelse; /* statement bodies; N_IF elif chain lives in orelse */
    jnodes params;     /* N_MACRO parameter names as E_NAME; defaults in kwargs-like list */
    jnodes defaults;   /* N_MACRO: default for param i or NULL */
};

/* binary operator codes */
enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW,
       OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

struct jinja_template {
    jarena arena;
    jnodes body;
    char name[256];
};

/* ---- lexer / parser ---- */
ft_status jlex(const char *src, size_t len, const char *name, jarena *a, jtok **toks, int *ntoks,
               ft_error *err);
ft_status jparse(jtok *toks, int ntoks, const char *name, jarena *a, jnodes *body, ft_error *err);

/* ---- render state ---- */
typedef struct jframe jframe;
typedef struct jctx {
    jarena *a;             /* render arena */
    const char *name;      /* template name for errors */
    jbuf *root;            /* the top-level output, for generation spans */
    jinja_span *spans;
    int n_spans, cap_spans;
    jmp_buf fail;
    ft_error *err;
    jframe *globals;
    int depth;
#define JCTX_MAX_FRAMES 512
    jframe *fr[JCTX_MAX_FRAMES];
    int nfr;
} jctx;

/* Fail the render with a message at node n (longjmp; never returns). */
_Noreturn void jfail(jctx *c, const jnode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* values: constructors and helpers (jinja_value.c) */
jv jv_undef(const char *msg);
jv jv_none(void);
jv jv_bool(int b);
jv jv_int(long long i);
jv jv_float(double f);
jv jv_str(jarena *a, const char *s, size_t n);
jv jv_cstr(jarena *a, const char *s);
jv jv_list(jarena *a, int cap);
jv jv_dict(jarena *a, int cap);
void jl_push(jarena *a, jlist *l, jv v);
void jd_set(jarena *a, jdict *d, jv k, jv v);
jv *jd_get(const jdict *d, jv k);
jv *jd_gets(const jdict *d, const char *key);
jv jv_from_json(jarena *a, const cJSON *j);
int jv_truthy(jv v);
int jv_equal(jv x, jv y);
/* -2 when not comparable, else -1 / 0 / 1 */
int jv_compare(jv x, jv y);
const char *jv_typename(jv v); /* Python's type name: str, int, dict, NoneType, ... */
void jv_write_str(jbuf *b, jv v);  /* Python str() */
void jv_write_repr(jbuf *b, jv v); /* Python repr() */
jstr *jv_to_str(jarena *a, jv v);
/* json.dumps(v, ensure_ascii, indent (<0 none), separators (NULL = default), sort_keys);
 * returns 0 or -1 with a message in *why for a value JSON cannot hold */
int jv_write_json(jbuf *b, jv v, int ensure_ascii, int indent, const char *item_sep,
                  const char *key_sep, int sort_keys, const char **why);
void jv_write_float(jbuf *b, double f); /* Python repr of a float */
size_t utf8_count(const char *s, size_t n);
/* byte offset of the code point index i (0 <= i <= count) */
size_t utf8_offset(const char *s, size_t n, long long i);
int jv_is_number(jv v); /* int, float or bool */
double jv_num(jv v);

/* evaluator entry points the built-ins need (jinja_eval.c) */
jv jeval(jctx *c, jnode *n);
jv jcall_value(jctx *c, const jnode *at, jv fn, int nargs, jv *args, int nkw,
               const char **kwnames, jv *kwvals);
jv jgetattr(jctx *c, const jnode *at, jv obj, const char *name);
jv jgetitem(jctx *c, const jnode *at, jv obj, jv key);
void jcheck_defined(jctx *c, const jnode *at, jv v);
/* the items iterating v yields (dict: keys; str: characters; undefined: none) */
jv *jiter_items(jctx *c, const jnode *at, jv v, int *n);

/* built-ins (jinja_builtins.c) */
jv jfilter(jctx *c, const jnode *at, const char *name, jv v, int nargs, jv *args, int nkw,
           const char **kwnames, jv *kwvals);
int jtest(jctx *c, const jnode *at, const char *name, jv v, int nargs, jv *args);
jv jmethod_call(jctx *c, const jnode *at, jmethod *m, int nargs, jv *args, int nkw,
                const char **kwnames, jv *kwvals);
int jfilter_exists(const char *name);
int jtest_exists(const char *name);
/* which names are methods of a value of this kind (so obj.name is a bound method) */
int jmethod_exists(jv obj, const char *name);

#endif
