/*
 * jinja_lex.c: Jinja source to tokens, with the whitespace rules of the environment transformers
 * builds (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False).
 *
 * It follows jinja2/lexer.py: "\r\n" and "\r" become "\n" and one trailing newline is dropped;
 * text before a tag loses its trailing whitespace when the tag opens with "-"; otherwise, for
 * {% %} and {# #} tags not opened with "+", the spaces and tabs between the start of the line and
 * the tag are removed (lstrip_blocks); "-%}" / "-}}" / "-#}" eat all following whitespace and a
 * plain "%}" or "#}" eats one following newline (trim_blocks). Inside tags, "}}" and "%}" only end
 * the tag when brackets are balanced. {% raw %} ... {% endraw %} yields its text untouched.
 * Every token carries its line and column (1-based) for error messages.
 */
#include "tok/jinja_impl.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct lexer {
    const char *s;
    size_t n, pos;
    const char *name;
    jarena *a;
    jtok *toks;
    jtok **out; /* the caller's pointer, kept equal to toks (so an out-of-memory jump frees it) */
    int nt, cap;
    ft_error *err;
    size_t lc_pos; /* line/column cursor: positions only move forward, so counting is linear */
    int lc_line, lc_col;
} lexer;

static void lex_linecol(lexer *L, size_t pos, int *line, int *col) {
    if (pos < L->lc_pos || !L->lc_line) {
        L->lc_pos = 0;
        L->lc_line = 1;
        L->lc_col = 1;
    }
    for (size_t i = L->lc_pos; i < pos; i++) {
        if (L->s[i] == '\n') L->lc_line++, L->lc_col = 1;
        else if (((unsigned char)L->s[i] & 0xC0) != 0x80) L->lc_col++;
    }
    L->lc_pos = pos;
    *line = L->lc_line;
    *col = L->lc_col;
}

static ft_status lex_fail(lexer *L, size_t pos, const char *what) {
    int line, col;
    lex_linecol(L, pos, &line, &col);
    char where[512];
    snprintf(where, sizeof where, "%s:%d:%d", L->name, line, col);
    return ft_error_set(L->err, FT_ERR_INPUT, where, "fix the template's syntax",
                        "template syntax error: %s", what);
}

static jtok *emit(lexer *L, jtok_kind k, size_t pos) {
    if (L->nt == L->cap) {
        L->cap = L->cap ? L->cap * 2 : 256;
        jtok *t = realloc(L->toks, sizeof(jtok) * (size_t)L->cap);
        if (!t) ja_oom(L->a); /* (L->toks is still *L->out: the owner frees it) */
        L->toks = *L->out = t;
    }
    jtok *t = &L->toks[L->nt++];
    memset(t, 0, sizeof *t);
    t->k = k;
    lex_linecol(L, pos, &t->line, &t->col);
    return t;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static void emit_data(lexer *L, size_t start, size_t end) {
    if (end <= start) return;
    jtok *t = emit(L, T_DATA, start);
    t->s = ja_strndup(L->a, L->s + start, end - start);
    t->len = end - start;
}

/* Apply the strip rules to the text [start, end) that precedes a tag; returns the new end. */
static size_t strip_before(lexer *L, size_t start, size_t end, char sign, int is_var,
                           int line_starting) {
    if (sign == '-') {
        while (end > start && is_ws(L->s[end - 1])) end--;
        return end;
    }
    if (sign == '+' || is_var) return end;
    size_t lpos = end;
    while (lpos > start && L->s[lpos - 1] != '\n') lpos--;
    if (lpos > start || line_starting) {
        int all_ws = 1;
        for (size_t i = lpos; i < end; i++)
            if (!is_ws(L->s[i])) all_ws = 0;
        if (all_ws && end > lpos) return lpos;
    }
    return end;
}

/* decode a Jinja string literal body (Python unicode-escape rules) */
static char *unescape(lexer *L, const char *s, size_t n, size_t *outn) {
    char *o = ja_alloc(L->a, n * 4 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            o[k++] = s[i];
            continue;
        }
        char e = s[++i];
        unsigned long cp = 0;
        int hex = 0;
        switch (e) {
        case 'n': o[k++] = '\n'; break;
        case 't': o[k++] = '\t'; break;
        case 'r': o[k++] = '\r'; break;
        case '\\': o[k++] = '\\'; break;
        case '\'': o[k++] = '\''; break;
        case '"': o[k++] = '"'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'v': o[k++] = '\v'; break;
        case '\n': break; /* line continuation */
        case 'x': hex = 2; break;
        case 'u': hex = 4; break;
        case 'U': hex = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                int d = 0;
                while (d < 3 && i < n && s[i] >= '0' && s[i] <= '7') cp = cp * 8 + (unsigned long)(s[i++] - '0'), d++;
                i--;
                hex = -1;
            } else {
                o[k++] = '\\';
                o[k++] = e;
            }
        }
        if (hex > 0) {
            int d = 0;
            while (d < hex && i + 1 < n && isxdigit((unsigned char)s[i + 1])) {
                char h = s[++i];
                cp = cp * 16 + (unsigned long)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
                d++;
            }
        }
        if (hex) { /* encode cp as UTF-8 */
            if (cp < 0x80) o[k++] = (char)cp;
            else if (cp < 0x800) { o[k++] = (char)(0xC0 | (cp >> 6)); o[k++] = (char)(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) { o[k++] = (char)(0xE0 | (cp >> 12)); o[k++] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[k++] = (char)(0x80 | (cp & 0x3F)); }
            else { o[k++] = (char)(0xF0 | (cp >> 18)); o[k++] = (char)(0x80 | ((cp >> 12) & 0x3F)); o[k++] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[k++] = (char)(0x80 | (cp & 0x3F)); }
        }
    }
    o[k] = 0;
    *outn = k;
    return o;
}

static const char *ops3[] = {NULL};
static const char *ops2[] = {"//", "**", "==", "!=", "<=", ">=", NULL};
static const char ops1[] = "+-/*%~[](){}<>=.:|,;";

/* Lex the inside of a {{ }} or {% %} tag starting at L->pos; is_block selects the end marker.
 * Returns 0 at the end marker (consumed, L->pos after it), or an error. */
static ft_status lex_tag(lexer *L, int is_block, size_t tag_pos, int *line_starting) {
    char stack[256];
    int depth = 0;
    (void)ops3;
    for (;;) {
        size_t p = L->pos;
        if (p >= L->n) return lex_fail(L, tag_pos, is_block ? "missing '%}' at the end of this tag" : "missing '}}' at the end of this expression");
        const char *s = L->s + p;
        size_t left = L->n - p;
        if (depth == 0) {
            if (is_block) {
                if (left >= 3 && !strncmp(s, "+%}", 3)) { L->pos = p + 3; emit(L, T_BLOCK_END, p); *line_starting = 0; return FT_OK; }
                if (left >= 3 && !strncmp(s, "-%}", 3)) {
                    size_t q = p + 3;
                    while (q < L->n && is_ws(L->s[q])) q++;
                    *line_starting = q > p + 3 && L->s[q - 1] == '\n';
                    L->pos = q;
                    emit(L, T_BLOCK_END, p);
                    return FT_OK;
                }
                if (left >= 2 && !strncmp(s, "%}", 2)) {
                    size_t q = p + 2;
                    *line_starting = 0;
                    if (q < L->n && L->s[q] == '\n') q++, *line_starting = 1; /* trim_blocks */
                    L->pos = q;
                    emit(L, T_BLOCK_END, p);
                    return FT_OK;
                }
            } else {
                if (left >= 3 && !strncmp(s, "-}}", 3)) {
                    size_t q = p + 3;
                    while (q < L->n && is_ws(L->s[q])) q++;
                    *line_starting = q > p + 3 && L->s[q - 1] == '\n';
                    L->pos = q;
                    emit(L, T_VAR_END, p);
                    return FT_OK;
                }
                if (left >= 2 && !strncmp(s, "}}", 2)) {
                    L->pos = p + 2;
                    *line_starting = 0;
                    emit(L, T_VAR_END, p);
                    return FT_OK;
                }
            }
        }
        char ch = *s;
        if (is_ws(ch)) { L->pos++; continue; }
        if (isdigit((unsigned char)ch)) {
            size_t q = p;
            while (q < L->n && (isdigit((unsigned char)L->s[q]) || L->s[q] == '_')) q++;
            int is_float = 0;
            if (q + 1 < L->n && L->s[q] == '.' && isdigit((unsigned char)L->s[q + 1])) {
                is_float = 1;
                q++;
                while (q < L->n && (isdigit((unsigned char)L->s[q]) || L->s[q] == '_')) q++;
            }
            if (q < L->n && (L->s[q] == 'e' || L->s[q] == 'E')) {
                size_t r = q + 1;
                if (r < L->n && (L->s[r] == '+' || L->s[r] == '-')) r++;
                if (r < L->n && isdigit((unsigned char)L->s[r])) {
                    is_float = 1;
                    q = r;
                    while (q < L->n && isdigit((unsigned char)L->s[q])) q++;
                }
            }
            char num[128];
            size_t k = 0;
            for (size_t i = p; i < q && k < sizeof num - 1; i++)
                if (L->s[i] != '_') num[k++] = L->s[i];
            num[k] = 0;
            jtok *t = emit(L, is_float ? T_FLOAT : T_INT, p);
            if (is_float) t->f = strtod(num, NULL);
            else t->i = strtoll(num, NULL, 10);
            L->pos = q;
            continue;
        }
        if (isalpha((unsigned char)ch) || ch == '_') {
            size_t q = p;
            while (q < L->n && (isalnum((unsigned char)L->s[q]) || L->s[q] == '_')) q++;
            jtok *t = emit(L, T_NAME, p);
            t->s = ja_strndup(L->a, s, q - p);
            t->len = q - p;
            L->pos = q;
            continue;
        }
        if (ch == '\'' || ch == '"') {
            size_t q = p + 1;
            while (q < L->n && L->s[q] != ch) {
                if (L->s[q] == '\\') q++;
                q++;
            }
            if (q >= L->n) return lex_fail(L, p, "unterminated string literal");
            jtok *t = emit(L, T_STRING, p);
            t->s = unescape(L, s + 1, q - p - 1, &t->len);
            L->pos = q + 1;
            continue;
        }
        int oplen = 0;
        for (int i = 0; ops2[i]; i++)
            if (left >= 2 && !strncmp(s, ops2[i], 2)) oplen = 2;
        if (!oplen && strchr(ops1, ch) && ch) oplen = 1;
        if (!oplen) {
            char what[64];
            snprintf(what, sizeof what, "unexpected character '%c'", ch);
            return lex_fail(L, p, what);
        }
        if (oplen == 1) {
            if (ch == '(' || ch == '[' || ch == '{') {
                if (depth >= (int)sizeof stack) return lex_fail(L, p, "brackets nested too deeply");
                stack[depth++] = ch == '(' ? ')' : ch == '[' ? ']' : '}';
            } else if (ch == ')' || ch == ']' || ch == '}') {
                char what[64];
                if (!depth) {
                    snprintf(what, sizeof what, "unexpected '%c'", ch);
                    return lex_fail(L, p, what);
                }
                if (stack[depth - 1] != ch) {
                    snprintf(what, sizeof what, "unexpected '%c', expected '%c'", ch, stack[depth - 1]);
                    return lex_fail(L, p, what);
                }
                depth--;
            }
        }
        jtok *t = emit(L, T_OP, p);
        t->s = ja_strndup(L->a, s, (size_t)oplen);
        t->len = (size_t)oplen;
        L->pos = p + (size_t)oplen;
    }
}

/* does "{%" at p open a raw block? returns the position after its end, 0 if not */
static size_t raw_begin(lexer *L, size_t p, char *sign) {
    size_t q = p + 2;
    *sign = 0;
    if (q < L->n && (L->s[q] == '-' || L->s[q] == '+')) *sign = L->s[q++];
    while (q < L->n && is_ws(L->s[q])) q++;
    if (L->n - q < 3 || strncmp(L->s + q, "raw", 3)) return 0;
    q += 3;
    if (q < L->n && (isalnum((unsigned char)L->s[q]) || L->s[q] == '_')) return 0;
    while (q < L->n && is_ws(L->s[q])) q++;
    if (L->n - q >= 3 && !strncmp(L->s + q, "-%}", 3)) {
        q += 3;
        while (q < L->n && is_ws(L->s[q])) q++;
        return q;
    }
    if (L->n - q >= 2 && !strncmp(L->s + q, "%}", 2)) return q + 2;
    return 0;
}

ft_status jlex(const char *src, size_t len, const char *name, jarena *a, jtok **toks, int *ntoks,
               ft_error *err) {
    /* normalise newlines and drop one trailing newline (keep_trailing_newline=False) */
    char *s = ja_alloc(a, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else s[n++] = src[i];
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = 0;
    *toks = NULL;
    lexer L = {.s = s, .n = n, .name = name, .a = a, .out = toks, .err = err};
    int line_starting = 1;
    ft_status st = FT_OK;
    while (L.pos < L.n) {
        /* find the next tag opener */
        size_t p = L.pos, tag = SIZE_MAX;
        const char *f = s + p;
        while ((f = memchr(f, '{', (size_t)(s + n - f))) != NULL) {
            if (f + 1 < s + n && (f[1] == '{' || f[1] == '%' || f[1] == '#')) {
                tag = (size_t)(f - s);
                break;
            }
            f++;
        }
        if (tag == SIZE_MAX) {
            emit_data(&L, p, n);
            break;
        }
        char kind = s[tag + 1];
        char sign = 0;
        size_t after_open = tag + 2;
        if (after_open < n && (s[after_open] == '-' || s[after_open] == '+')) sign = s[after_open++];
        if (kind == '%') {
            char rsign;
            size_t body = raw_begin(&L, tag, &rsign);
            if (body) {
                emit_data(&L, p, strip_before(&L, p, tag, rsign, 0, line_starting));
                /* find {% endraw %} */
                size_t q = body, end_tag = SIZE_MAX, after = 0;
                char esign = 0;
                for (; q + 1 < n; q++) {
                    if (s[q] != '{' || s[q + 1] != '%') continue;
                    size_t r = q + 2;
                    char sg = 0;
                    if (r < n && (s[r] == '-' || s[r] == '+')) sg = s[r++];
                    while (r < n && is_ws(s[r])) r++;
                    if (n - r < 6 || strncmp(s + r, "endraw", 6)) continue;
                    r += 6;
                    while (r < n && is_ws(s[r])) r++;
                    if (n - r >= 3 && !strncmp(s + r, "+%}", 3)) after = r + 3;
                    else if (n - r >= 3 && !strncmp(s + r, "-%}", 3)) {
                        r += 3;
                        while (r < n && is_ws(s[r])) r++;
                        after = r;
                    } else if (n - r >= 2 && !strncmp(s + r, "%}", 2)) {
                        after = r + 2;
                        if (after < n && s[after] == '\n') after++;
                    } else continue;
                    end_tag = q;
                    esign = sg;
                    break;
                }
                if (end_tag == SIZE_MAX) { st = lex_fail(&L, tag, "missing end of raw directive"); goto out; }
                emit_data(&L, body, strip_before(&L, body, end_tag, esign, 0, 0));
                line_starting = s[after - 1] == '\n';
                L.pos = after;
                continue;
            }
        }
        emit_data(&L, p, strip_before(&L, p, tag, sign, kind == '{', line_starting));
        line_starting = 0;
        if (kind == '#') {
            size_t q = after_open, after = 0;
            for (; q + 1 < n; q++) {
                if (s[q] == '+' && q + 2 < n && s[q + 1] == '#' && s[q + 2] == '}') { after = q + 3; break; }
                if (s[q] == '-' && q + 2 < n && s[q + 1] == '#' && s[q + 2] == '}') {
                    after = q + 3;
                    while (after < n && is_ws(s[after])) after++;
                    break;
                }
                if (s[q] == '#' && s[q + 1] == '}') {
                    after = q + 2;
                    if (after < n && s[after] == '\n') after++;
                    break;
                }
            }
            if (!after) { st = lex_fail(&L, tag, "missing end of comment tag '#}'"); goto out; }
            line_starting = s[after - 1] == '\n';
            L.pos = after;
            continue;
        }
        emit(&L, kind == '{' ? T_VAR_BEGIN : T_BLOCK_BEGIN, tag);
        L.pos = after_open;
        st = lex_tag(&L, kind == '%', tag, &line_starting);
        if (st) goto out;
    }
    emit(&L, T_EOF, L.n);
out:
    if (st) {
        free(L.toks);
        *toks = NULL;
        return st;
    }
    *toks = L.toks;
    *ntoks = L.nt;
    return FT_OK;
}
