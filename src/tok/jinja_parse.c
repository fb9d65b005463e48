/*
 * jinja_parse.c: tokens to a syntax tree, by recursive descent with the grammar and operator
 * precedence of jinja2/parser.py: conditional "a if c else b" < or < and < not < comparisons
 * (==, !=, <, <=, >, >=, in, not in, chained) < + - < ~ < * / // % < ** < unary - + < primary with
 * postfix .attr, [index or slice], (call), then filters "|f(args)" and tests "is [not] t args".
 * Statements: if/elif/else, for (tuple targets, "if" filter, else), set (plain, tuple, namespace
 * attribute, block form with filters), macro, call, filter, break/continue and the generation
 * block of transformers' AssistantTracker extension. Syntax errors give NAME:LINE:COL.
 */
#include "tok/jinja_impl.h"

#include <stdio.h>
#include <string.h>

typedef struct parser {
    jtok *t;
    int n, i;
    const char *name;
    jarena *a;
    ft_error *err;
    int depth; /* nesting of blocks and expressions, bounded so the C stack cannot overflow */
    jmp_buf fail;
} parser;

static _Noreturn void pfail(parser *P, const jtok *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void pfail(parser *P, const jtok *at, const char *fmt, ...) {
    char what[900], where[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(where, sizeof where, "%s:%d:%d", P->name, at->line, at->col);
    ft_error_set(P->err, FT_ERR_INPUT, where, "fix the template's syntax", "template syntax error: %s",
                 what);
    longjmp(P->fail, 1);
}

static jtok *cur(parser *P) { return &P->t[P->i]; }
static jtok *next(parser *P) {
    jtok *t = &P->t[P->i];
    if (P->i < P->n - 1) P->i++;
    return t;
}
static int is_op(const jtok *t, const char *op) { return t->k == T_OP && !strcmp(t->s, op); }
static int is_name(const jtok *t, const char *nm) { return t->k == T_NAME && !strcmp(t->s, nm); }

static const char *tok_desc(const jtok *t, char *buf, size_t n) {
    switch (t->k) {
    case T_EOF: return "end of template";
    case T_VAR_END: return "end of print statement '}}'";
    case T_BLOCK_END: return "end of statement block '%}'";
    case T_VAR_BEGIN: return "'{{'";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_DATA: return "template text";
    case T_STRING: return "string literal";
    case T_INT: case T_FLOAT: return "number";
    default: snprintf(buf, n, "'%s'", t->s); return buf;
    }
}

static void expect_op(parser *P, const char *op) {
    if (!is_op(cur(P), op)) {
        char b[64];
        pfail(P, cur(P), "expected '%s', got %s", op, tok_desc(cur(P), b, sizeof b));
    }
    next(P);
}
static const char *expect_name(parser *P) {
    if (cur(P)->k != T_NAME) {
        char b[64];
        pfail(P, cur(P), "expected a name, got %s", tok_desc(cur(P), b, sizeof b));
    }
    return next(P)->s;
}
static void expect_kind(parser *P, jtok_kind k) {
    if (cur(P)->k != k) {
        char b[64];
        jtok want = {.k = k};
        char b2[64];
        pfail(P, cur(P), "expected %s, got %s", tok_desc(&want, b2, sizeof b2),
              tok_desc(cur(P), b, sizeof b));
    }
    next(P);
}

static jnode *mk(parser *P, jnode_kind k, const jtok *at) {
    jnode *n = ja_alloc(P->a, sizeof(jnode));
    n->k = k;
    n->line = at->line;
    n->col = at->col;
    return n;
}

typedef struct nvec {
    int n, cap;
    jnode **v;
} nvec;
static void nv_push(parser *P, nvec *v, jnode *x) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        jnode **nv = ja_alloc(P->a, sizeof(jnode *) * (size_t)cap);
        if (v->n) memcpy(nv, v->v, sizeof(jnode *) * (size_t)v->n);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}
static jnodes nv_done(nvec *v) { jnodes r = {v->n, v->v}; return r; }

static jnode *parse_expression(parser *P, int with_condexpr);
static jnode *parse_unary(parser *P, int with_filter);
static jnode *parse_or(parser *P);

/* call arguments after '(' (consumed here) */
static void parse_call_args(parser *P, jnode *n) {
    expect_op(P, "(");
    nvec args = {0}, kw = {0};
    const char **names = NULL;
    int namecap = 0;
    while (!is_op(cur(P), ")")) {
        if (args.n || kw.n) expect_op(P, ",");
        if (is_op(cur(P), ")")) break;
        if (is_op(cur(P), "*") || is_op(cur(P), "**"))
            pfail(P, cur(P), "*args and **kwargs in calls are not supported by ftune's Jinja");
        if (cur(P)->k == T_NAME && P->i + 1 < P->n && is_op(&P->t[P->i + 1], "=")) {
            const char *nm = next(P)->s;
            next(P);
            if (kw.n == namecap) {
                namecap = namecap ? namecap * 2 : 4;
                const char **nn = ja_alloc(P->a, sizeof(char *) * (size_t)namecap);
                if (kw.n) memcpy(nn, names, sizeof(char *) * (size_t)kw.n);
                names = nn;
            }
            names[kw.n] = nm;
            nv_push(P, &kw, parse_expression(P, 1));
        } else {
            if (kw.n) pfail(P, cur(P), "a positional argument follows keyword arguments");
            nv_push(P, &args, parse_expression(P, 1));
        }
    }
    next(P);
    n->args = nv_done(&args);
    n->kwargs = nv_done(&kw);
    n->kwnames = names;
}

static jnode *parse_tuple(parser *P, int with_condexpr, int explicit_parens) {
    jtok *start = cur(P);
    nvec items = {0};
    int is_tuple = 0;
    for (;;) {
        if (items.n) {
            if (!is_op(cur(P), ",")) break;
            next(P);
            is_tuple = 1;
        }
        jtok *c = cur(P);
        if (c->k == T_VAR_END || c->k == T_BLOCK_END || c->k == T_EOF || is_op(c, ")") ||
            (c->k == T_NAME && (!strcmp(c->s, "in") || !strcmp(c->s, "recursive")) && items.n))
            break;
        if (explicit_parens && is_op(c, ")")) break;
        nv_push(P, &items, parse_expression(P, with_condexpr));
    }
    if (!is_tuple) {
        if (items.n) return items.v[0];
        if (!explicit_parens) {
            char b[64];
            pfail(P, cur(P), "expected an expression, got %s", tok_desc(cur(P), b, sizeof b));
        }
    }
    jnode *n = mk(P, E_TUPLE, start);
    n->args = nv_done(&items);
    return n;
}

static jnode *parse_primary(parser *P) {
    jtok *t = cur(P);
    jnode *n;
    switch (t->k) {
    case T_NAME:
        next(P);
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True") || !strcmp(t->s, "false") ||
            !strcmp(t->s, "False")) {
            n = mk(P, E_CONST, t);
            n->val = jv_bool(t->s[0] == 't' || t->s[0] == 'T');
        } else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            n = mk(P, E_CONST, t);
            n->val = jv_none();
        } else {
            n = mk(P, E_NAME, t);
            n->name = t->s;
        }
        return n;
    case T_STRING: {
        /* adjacent string literals concatenate */
        jbuf b = {.a = P->a};
        while (cur(P)->k == T_STRING) {
            jtok *s = next(P);
            jb_put(&b, s->s, s->len);
        }
        n = mk(P, E_CONST, t);
        n->val = jv_str(P->a, b.p ? b.p : "", b.n);
        return n;
    }
    case T_INT:
        next(P);
        n = mk(P, E_CONST, t);
        n->val = jv_int(t->i);
        return n;
    case T_FLOAT:
        next(P);
        n = mk(P, E_CONST, t);
        n->val = jv_float(t->f);
        return n;
    case T_OP:
        if (is_op(t, "(")) {
            next(P);
            n = parse_tuple(P, 1, 1);
            expect_op(P, ")");
            return n;
        }
        if (is_op(t, "[")) {
            next(P);
            nvec items = {0};
            while (!is_op(cur(P), "]")) {
                if (items.n) expect_op(P, ",");
                if (is_op(cur(P), "]")) break;
                nv_push(P, &items, parse_expression(P, 1));
            }
            next(P);
            n = mk(P, E_LIST, t);
            n->args = nv_done(&items);
            return n;
        }
        if (is_op(t, "{")) {
            next(P);
            nvec items = {0};
            while (!is_op(cur(P), "}")) {
                if (items.n) expect_op(P, ",");
                if (is_op(cur(P), "}")) break;
                nv_push(P, &items, parse_expression(P, 1));
                expect_op(P, ":");
                nv_push(P, &items, parse_expression(P, 1));
            }
            next(P);
            n = mk(P, E_DICT, t);
            n->args = nv_done(&items);
            return n;
        }
        /* fallthrough */
    default: {
        char b[64];
        pfail(P, t, "unexpected %s", tok_desc(t, b, sizeof b));
    }
    }
}

static jnode *parse_subscript(parser *P, jnode *obj) {
    jtok *t = next(P); /* '.' or '[' */
    if (is_op(t, ".")) {
        jtok *a = cur(P);
        if (a->k == T_NAME) {
            next(P);
            jnode *n = mk(P, E_ATTR, t);
            n->a = obj;
            n->name = a->s;
            return n;
        }
        if (a->k == T_INT) {
            next(P);
            jnode *n = mk(P, E_ITEM, t);
            n->a = obj;
            n->b = mk(P, E_CONST, a);
            n->b->val = jv_int(a->i);
            return n;
        }
        pfail(P, a, "expected a name or number after '.'");
    }
    /* '[' index or slice */
    jnode *start = NULL, *stop = NULL, *step = NULL;
    int is_slice = 0;
    if (!is_op(cur(P), ":")) start = parse_expression(P, 1);
    if (is_op(cur(P), ":")) {
        is_slice = 1;
        next(P);
        if (!is_op(cur(P), "]") && !is_op(cur(P), ":")) stop = parse_expression(P, 1);
        if (is_op(cur(P), ":")) {
            next(P);
            if (!is_op(cur(P), "]")) step = parse_expression(P, 1);
        }
    }
    expect_op(P, "]");
    jnode *n = mk(P, is_slice ? E_SLICE : E_ITEM, t);
    n->a = obj;
    if (is_slice) {
        n->b = start;
        n->c = stop;
        n->args.n = 1;
        n->args.v = ja_alloc(P->a, sizeof(jnode *));
        n->args.v[0] = step;
    } else n->b = start;
    return n;
}

static jnode *parse_postfix(parser *P, jnode *n) {
    for (;;) {
        if (is_op(cur(P), ".") || is_op(cur(P), "[")) n = parse_subscript(P, n);
        else if (is_op(cur(P), "(")) {
            jnode *c = mk(P, E_CALL, cur(P));
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else return n;
    }
}

static jnode *parse_filter(parser *P, jnode *n) {
    jtok *t = next(P); /* '|' */
    jnode *f = mk(P, E_FILTER, t);
    jtok *nt = cur(P);
    f->name = expect_name(P);
    while (is_op(cur(P), ".")) { /* dotted names are not used by chat templates */
        pfail(P, cur(P), "dotted filter names are not supported");
    }
    if (!jfilter_exists(f->name)) pfail(P, nt, "no filter named '%s'", f->name);
    f->a = n;
    if (is_op(cur(P), "(")) parse_call_args(P, f);
    return f;
}

static jnode *parse_test(parser *P, jnode *n) {
    jtok *t = next(P); /* 'is' */
    int negated = 0;
    if (is_name(cur(P), "not")) {
        next(P);
        negated = 1;
    }
    jtok *nt = cur(P);
    const char *name = expect_name(P);
    if (!jtest_exists(name)) pfail(P, nt, "no test named '%s'", name);
    jnode *x = mk(P, E_TEST, t);
    x->name = name;
    x->a = n;
    jtok *c = cur(P);
    if (is_op(c, "(")) parse_call_args(P, x);
    else if ((c->k == T_NAME || c->k == T_STRING || c->k == T_INT || c->k == T_FLOAT ||
              is_op(c, "[") || is_op(c, "{")) &&
             !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) pfail(P, c, "you cannot chain multiple tests with 'is'");
        jnode *arg = parse_postfix(P, parse_primary(P));
        x->args.n = 1;
        x->args.v = ja_alloc(P->a, sizeof(jnode *));
        x->args.v[0] = arg;
    }
    if (negated) {
        jnode *nn = mk(P, E_NOT, t);
        nn->a = x;
        return nn;
    }
    return x;
}

static jnode *parse_filter_expr(parser *P, jnode *n) {
    for (;;) {
        if (is_op(cur(P), "|")) n = parse_filter(P, n);
        else if (is_name(cur(P), "is")) n = parse_test(P, n);
        else if (is_op(cur(P), "(")) {
            jnode *c = mk(P, E_CALL, cur(P));
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else return n;
    }
}

static jnode *parse_unary(parser *P, int with_filter) {
    jtok *t = cur(P);
    jnode *n;
    if (++P->depth > 400) pfail(P, t, "expression nested too deeply");
    if (is_op(t, "-") || is_op(t, "+")) {
        next(P);
        n = mk(P, is_op(t, "-") ? E_NEG : E_POS, t);
        n->a = parse_unary(P, 0);
    } else n = parse_primary(P);
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static jnode *binop(parser *P, const jtok *t, int op, jnode *l, jnode *r) {
    jnode *n = mk(P, E_BIN, t);
    n->op = op;
    n->a = l;
    n->b = r;
    return n;
}

static jnode *parse_pow(parser *P) {
    jnode *l = parse_unary(P, 1);
    while (is_op(cur(P), "**")) {
        jtok *t = next(P);
        l = binop(P, t, OP_POW, l, parse_unary(P, 1));
    }
    return l;
}
static jnode *parse_math2(parser *P) {
    jnode *l = parse_pow(P);
    for (;;) {
        jtok *t = cur(P);
        int op = is_op(t, "*") ? OP_MUL : is_op(t, "/") ? OP_DIV : is_op(t, "//") ? OP_FLOORDIV
               : is_op(t, "%") ? OP_MOD : 0;
        if (!op) return l;
        next(P);
        l = binop(P, t, op, l, parse_pow(P));
    }
}
static jnode *parse_concat(parser *P) {
    jtok *t = cur(P);
    jnode *first = parse_math2(P);
    if (!is_op(cur(P), "~")) return first;
    nvec items = {0};
    nv_push(P, &items, first);
    while (is_op(cur(P), "~")) {
        next(P);
        nv_push(P, &items, parse_math2(P));
    }
    jnode *n = mk(P, E_CONCAT, t);
    n->args = nv_done(&items);
    return n;
}
static jnode *parse_math1(parser *P) {
    jnode *l = parse_concat(P);
    for (;;) {
        jtok *t = cur(P);
        int op = is_op(t, "+") ? OP_ADD : is_op(t, "-") ? OP_SUB : 0;
        if (!op) return l;
        next(P);
        l = binop(P, t, op, l, parse_concat(P));
    }
}
static jnode *parse_compare(parser *P) {
    jtok *t0 = cur(P);
    jnode *first = parse_math1(P);
    nvec operands = {0};
    int ops[64], nops = 0;
    for (;;) {
        jtok *t = cur(P);
        int op = is_op(t, "==") ? OP_EQ : is_op(t, "!=") ? OP_NE : is_op(t, "<") ? OP_LT
               : is_op(t, "<=") ? OP_LE : is_op(t, ">") ? OP_GT : is_op(t, ">=") ? OP_GE : 0;
        if (op) next(P);
        else if (is_name(t, "in")) { next(P); op = OP_IN; }
        else if (is_name(t, "not") && P->i + 1 < P->n && is_name(&P->t[P->i + 1], "in")) {
            next(P);
            next(P);
            op = OP_NOTIN;
        } else break;
        if (nops == 64) pfail(P, t, "comparison chain too long");
        if (!operands.n) nv_push(P, &operands, first);
        ops[nops++] = op;
        nv_push(P, &operands, parse_math1(P));
    }
    if (!nops) return first;
    jnode *n = mk(P, E_CMP, t0);
    n->args = nv_done(&operands);
    n->ops = ja_alloc(P->a, sizeof(int) * (size_t)nops);
    memcpy(n->ops, ops, sizeof(int) * (size_t)nops);
    n->op = nops;
    return n;
}
static jnode *parse_not(parser *P) {
    if (is_name(cur(P), "not")) {
        jtok *t = next(P);
        if (++P->depth > 400) pfail(P, t, "expression nested too deeply");
        jnode *n = mk(P, E_NOT, t);
        n->a = parse_not(P);
        P->depth--;
        return n;
    }
    return parse_compare(P);
}
static jnode *parse_and(parser *P) {
    jnode *l = parse_not(P);
    while (is_name(cur(P), "and")) {
        jtok *t = next(P);
        jnode *n = mk(P, E_AND, t);
        n->a = l;
        n->b = parse_not(P);
        l = n;
    }
    return l;
}
static jnode *parse_or(parser *P) {
    jnode *l = parse_and(P);
    while (is_name(cur(P), "or")) {
        jtok *t = next(P);
        jnode *n = mk(P, E_OR, t);
        n->a = l;
        n->b = parse_and(P);
        l = n;
    }
    return l;
}
static jnode *parse_condexpr(parser *P) {
    jnode *e = parse_or(P);
    while (is_name(cur(P), "if")) {
        jtok *t = next(P);
        jnode *n = mk(P, E_COND, t);
        n->b = e;              /* value when true */
        n->a = parse_or(P);    /* condition */
        if (is_name(cur(P), "else")) {
            next(P);
            if (++P->depth > 400) pfail(P, t, "expression nested too deeply");
            n->c = parse_condexpr(P);
            P->depth--;
        }
        e = n;
    }
    return e;
}
static jnode *parse_expression(parser *P, int with_condexpr) {
    return with_condexpr ? parse_condexpr(P) : parse_or(P);
}

/* assignment target: name, name.attr (namespace), or a tuple of names */
static jnode *parse_assign_target(parser *P, int with_namespace) {
    jtok *t = cur(P);
    nvec items = {0};
    int parens = 0;
    if (is_op(t, "(")) {
        parens = 1;
        next(P);
    }
    for (;;) {
        jtok *nt = cur(P);
        const char *name = expect_name(P);
        jnode *x;
        if (with_namespace && is_op(cur(P), ".")) {
            next(P);
            x = mk(P, E_ATTR, nt);
            x->a = mk(P, E_NAME, nt);
            x->a->name = name;
            x->name = expect_name(P);
        } else {
            x = mk(P, E_NAME, nt);
            x->name = name;
        }
        nv_push(P, &items, x);
        if (!is_op(cur(P), ",")) break;
        next(P);
        if (parens && is_op(cur(P), ")")) break;
    }
    if (parens) expect_op(P, ")");
    if (items.n == 1 && !parens) return items.v[0];
    jnode *n = mk(P, E_TUPLE, t);
    n->args = nv_done(&items);
    return n;
}

static jnodes parse_body(parser *P, const char *const *ends, const char *block, const jtok *opener);

static jnode *parse_statement_inner(parser *P);
static jnode *parse_statement(parser *P) {
    if (++P->depth > 400) pfail(P, cur(P), "blocks nested too deeply");
    jnode *n = parse_statement_inner(P);
    P->depth--;
    return n;
}

static jnode *parse_statement_inner(parser *P) {
    jtok *open = cur(P);
    next(P); /* {% */
    jtok *kw = cur(P);
    if (kw->k != T_NAME) pfail(P, kw, "expected a statement name after '{%%'");
    const char *k = next(P)->s;
    jnode *n;
    if (!strcmp(k, "if")) {
        n = mk(P, N_IF, kw);
        n->a = parse_tuple(P, 0, 0);
        expect_kind(P, T_BLOCK_END);
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        jnode *node = n;
        for (;;) {
            node->body = parse_body(P, ends, "if", kw);
            const char *which = next(P)->s; /* the end name */
            if (!strcmp(which, "elif")) {
                jnode *e = mk(P, N_IF, &P->t[P->i - 1]);
                e->a = parse_tuple(P, 0, 0);
                expect_kind(P, T_BLOCK_END);
                node->orelse.n = 1;
                node->orelse.v = ja_alloc(P->a, sizeof(jnode *));
                node->orelse.v[0] = e;
                node = e;
                continue;
            }
            if (!strcmp(which, "else")) {
                expect_kind(P, T_BLOCK_END);
                static const char *const ends2[] = {"endif", NULL};
                node->orelse = parse_body(P, ends2, "if", kw);
                next(P);
            }
            expect_kind(P, T_BLOCK_END);
            break;
        }
        return n;
    }
    if (!strcmp(k, "for")) {
        n = mk(P, N_FOR, kw);
        n->a = parse_assign_target(P, 0);
        if (!is_name(cur(P), "in")) pfail(P, cur(P), "expected 'in' in the for statement");
        next(P);
        n->b = parse_tuple(P, 0, 0);
        if (is_name(cur(P), "if")) {
            next(P);
            n->c = parse_expression(P, 1);
        }
        if (is_name(cur(P), "recursive")) pfail(P, cur(P), "recursive for loops are not supported");
        expect_kind(P, T_BLOCK_END);
        static const char *const ends[] = {"endfor", "else", NULL};
        n->body = parse_body(P, ends, "for", kw);
        const char *which = next(P)->s;
        if (!strcmp(which, "else")) {
            expect_kind(P, T_BLOCK_END);
            static const char *const ends2[] = {"endfor", NULL};
            n->orelse = parse_body(P, ends2, "for", kw);
            next(P);
        }
        expect_kind(P, T_BLOCK_END);
        return n;
    }
    if (!strcmp(k, "set")) {
        jnode *target = parse_assign_target(P, 1);
        if (is_op(cur(P), "=")) {
            next(P);
            n = mk(P, N_SET, kw);
            n->a = target;
            n->b = parse_tuple(P, 1, 0);
            expect_kind(P, T_BLOCK_END);
            return n;
        }
        n = mk(P, N_SETBLOCK, kw);
        n->a = target;
        /* optional filters: {% set x | trim %} */
        jnode *holder = NULL;
        while (is_op(cur(P), "|")) {
            holder = parse_filter(P, holder);
        }
        n->b = holder; /* chain of E_FILTER with innermost a == NULL */
        expect_kind(P, T_BLOCK_END);
        static const char *const ends[] = {"endset", NULL};
        n->body = parse_body(P, ends, "set", kw);
        next(P);
        expect_kind(P, T_BLOCK_END);
        return n;
    }
    if (!strcmp(k, "macro") || !strcmp(k, "call")) {
        int is_call = k[0] == 'c';
        n = mk(P, is_call ? N_CALLBLOCK : N_MACRO, kw);
        nvec params = {0}, defs = {0};
        if (is_call && is_op(cur(P), "(")) { /* caller parameters */
            next(P);
            while (!is_op(cur(P), ")")) {
                if (params.n) expect_op(P, ",");
                jtok *pt = cur(P);
                jnode *p = mk(P, E_NAME, pt);
                p->name = expect_name(P);
                nv_push(P, &params, p);
                if (is_op(cur(P), "=")) {
                    next(P);
                    nv_push(P, &defs, parse_expression(P, 1));
                } else nv_push(P, &defs, NULL);
            }
            next(P);
        }
        if (is_call) {
            n->a = parse_postfix(P, parse_primary(P)); /* the call expression */
            if (n->a->k != E_CALL) pfail(P, kw, "expected a macro call after 'call'");
        } else {
            n->name = expect_name(P);
            expect_op(P, "(");
            while (!is_op(cur(P), ")")) {
                if (params.n) expect_op(P, ",");
                jtok *pt = cur(P);
                jnode *p = mk(P, E_NAME, pt);
                p->name = expect_name(P);
                nv_push(P, &params, p);
                if (is_op(cur(P), "=")) {
                    next(P);
                    nv_push(P, &defs, parse_expression(P, 1));
                } else {
                    if (defs.n && defs.v[defs.n - 1])
                        pfail(P, pt, "parameter without a default follows parameters with defaults");
                    nv_push(P, &defs, NULL);
                }
            }
            next(P);
        }
        n->params = nv_done(&params);
        n->defaults = nv_done(&defs);
        expect_kind(P, T_BLOCK_END);
        static const char *const mends[] = {"endmacro", NULL}, *const cends[] = {"endcall", NULL};
        n->body = parse_body(P, is_call ? cends : mends, k, kw);
        next(P);
        if (!is_call && cur(P)->k == T_NAME) next(P); /* {% endmacro name %} */
        expect_kind(P, T_BLOCK_END);
        return n;
    }
    if (!strcmp(k, "filter")) {
        n = mk(P, N_FILTERBLOCK, kw);
        jnode *holder = NULL;
        /* first filter has no leading '|' */
        P->i--; /* reuse parse_filter by pretending the keyword was a pipe */
        holder = parse_filter(P, NULL);
        while (is_op(cur(P), "|")) holder = parse_filter(P, holder);
        n->b = holder;
        expect_kind(P, T_BLOCK_END);
        static const char *const ends[] = {"endfilter", NULL};
        n->body = parse_body(P, ends, "filter", kw);
        next(P);
        expect_kind(P, T_BLOCK_END);
        return n;
    }
    if (!strcmp(k, "break") || !strcmp(k, "continue")) {
        n = mk(P, k[0] == 'b' ? N_BREAK : N_CONTINUE, kw);
        expect_kind(P, T_BLOCK_END);
        return n;
    }
    if (!strcmp(k, "generation")) {
        n = mk(P, N_GENERATION, kw);
        expect_kind(P, T_BLOCK_END);
        static const char *const ends[] = {"endgeneration", NULL};
        n->body = parse_body(P, ends, "generation", kw);
        next(P);
        expect_kind(P, T_BLOCK_END);
        return n;
    }
    (void)open;
    pfail(P, kw, "encountered unknown tag '%s'", k);
}

/* Parse statements until a {% NAME %} with NAME in ends (left at NAME) or the end. */
static jnodes parse_body(parser *P, const char *const *ends, const char *block, const jtok *opener) {
    nvec body = {0};
    for (;;) {
        jtok *t = cur(P);
        if (t->k == T_EOF) {
            if (ends) {
                char want[256] = "";
                for (int i = 0; ends[i]; i++) {
                    size_t l = strlen(want);
                    snprintf(want + l, sizeof want - l, "%s'%s'", i ? " or " : "", ends[i]);
                }
                pfail(P, opener,
                      "unexpected end of template: this '%s' block was never closed "
                      "(looking for %s)",
                      block, want);
            }
            return nv_done(&body);
        }
        if (t->k == T_DATA) {
            next(P);
            jnode *n = mk(P, N_DATA, t);
            n->val = jv_str(P->a, t->s, t->len);
            nv_push(P, &body, n);
            continue;
        }
        if (t->k == T_VAR_BEGIN) {
            next(P);
            jnode *n = mk(P, N_OUTPUT, t);
            n->a = parse_tuple(P, 1, 0);
            expect_kind(P, T_VAR_END);
            nv_push(P, &body, n);
            continue;
        }
        if (t->k == T_BLOCK_BEGIN) {
            jtok *nm = &P->t[P->i + 1 < P->n ? P->i + 1 : P->i];
            if (nm->k == T_NAME) {
                if (ends)
                    for (int i = 0; ends[i]; i++)
                        if (!strcmp(nm->s, ends[i])) {
                            next(P); /* leave the parser at the name */
                            return nv_done(&body);
                        }
                static const char *const closers[] = {"endif", "endfor", "endset", "endmacro", "endcall",
                                                      "endfilter", "endgeneration", "elif", "else", NULL};
                for (int i = 0; closers[i]; i++)
                    if (!strcmp(nm->s, closers[i])) {
                        if (ends)
                            pfail(P, nm, "unexpected '%s' inside this '%s' block (opened at line %d)",
                                  nm->s, block, opener->line);
                        pfail(P, nm, "unexpected '%s': no block is open", nm->s);
                    }
            }
            nv_push(P, &body, parse_statement(P));
            continue;
        }
        char b[64];
        pfail(P, t, "unexpected %s", tok_desc(t, b, sizeof b));
    }
}

ft_status jparse(jtok *toks, int ntoks, const char *name, jarena *a, jnodes *body, ft_error *err) {
    parser P = {.t = toks, .n = ntoks, .name = name, .a = a, .err = err};
    if (setjmp(P.fail)) return FT_ERR_INPUT;
    *body = parse_body(&P, NULL, NULL, NULL);
    return FT_OK;
}
