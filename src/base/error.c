/*
 * error.c: filling and printing ft_error.
 *
 * Library code reports failures by filling an ft_error (what, where, hint) and returning its
 * status; only the command-line front end prints it. Messages are written for people: they name
 * the file and the line, tensor or field, say what was expected, and suggest a fix.
 */
#include "ftune.h"

#include <stdarg.h>
#include <string.h>

ft_status ft_error_set(ft_error *err, ft_status st, const char *where, const char *hint,
                       const char *fmt, ...) {
    if (!err) return st;
    err->status = st;
    snprintf(err->where, sizeof err->where, "%s", where ? where : "");
    snprintf(err->hint, sizeof err->hint, "%s", hint ? hint : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->what, sizeof err->what, fmt, ap);
    va_end(ap);
    return st;
}

void ft_error_print(const ft_error *err, FILE *f) {
    if (err->where[0])
        fprintf(f, "ftune: error: %s: %s\n", err->where, err->what);
    else
        fprintf(f, "ftune: error: %s\n", err->what);
    if (err->hint[0]) fprintf(f, "  hint: %s\n", err->hint);
}

const char *ft_version(void) { return "0.1.0"; }
