/*
 * jinja.h: ftune's interpreter for the part of Jinja that chat templates use.
 *
 * The pipeline is lexer (jinja_lex.c: source -> tokens, with Jinja's whitespace rules as
 * transformers configures them: trim_blocks, lstrip_blocks, "-" and "+" markers, a single
 * trailing newline dropped), parser (jinja_parse.c: tokens -> syntax tree), evaluator
 * (jinja_eval.c: statements and expressions with Jinja's scoping), and the built-in filters,
 * tests and methods (jinja_builtins.c) over a small dynamic value type (jinja_value.c) that
 * follows Python's rules for printing, comparing and JSON output. Values live in an arena that
 * is freed after each render; the tree lives in the template's own arena.
 *
 * Errors name "NAME:LINE:COL" (the template's file name) and say what was wrong, as Jinja does
 * (syntax errors, undefined attributes of undefined values, raise_exception's message).
 */
#ifndef FT_TOK_JINJA_H
#define FT_TOK_JINJA_H

#include "ftune.h"
#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct jinja_template jinja_template;
typedef struct jinja_span {
    size_t begin, end; /* byte offsets of {% generation %} output in the rendered text */
} jinja_span;

/* Parse template source; name is used in error messages ("chat_template.jinja"). */
ft_status jinja_parse(const char *src, size_t len, const char *name, jinja_template **out,
                      ft_error *err);
void jinja_free(jinja_template *t);

/* Render with the variables of the JSON object vars (numbers that are integral become ints).
 * *out is malloc'd and NUL-terminated; *spans (may be NULL) receives the generation spans. */
ft_status jinja_render(const jinja_template *t, const cJSON *vars, char **out, size_t *len,
                       jinja_span **spans, int *n_spans, ft_error *err);

#endif
