/*
 * args.c: the option parser behind every ftune subcommand (see args.h).
 */
#include "cli/args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (int i = 0; i <= la; i++)
        d[i][0] = i;
    for (int j = 0; j <= lb; j++)
        d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[la][lb];
}

static void default_text(const opt_spec *s, char *buf, size_t n) {
    buf[0] = 0;
    if (s->kind == OPT_ROW) {
        const opt_bind *b = s->dst;
        const opt_row *r = b->row;
        char v[200];
        if (r->type == OT_BOOL || r->type == OT_LIST) return;
        if (r->type == OT_STR && !*(const char **)opt_ptr(r, b->o)) return;
        if (r->type == OT_DOUBLE)
            snprintf(v, sizeof v, "%g", *(double *)opt_ptr(r, b->o));
        else
            opt_value_text(r, b->o, v, sizeof v);
        snprintf(buf, n, " (default: %s)", v);
        return;
    }
    switch (s->kind) {
    case OPT_STR:
        if (*(const char **)s->dst) snprintf(buf, n, " (default: %s)", *(const char **)s->dst);
        break;
    case OPT_INT:
        snprintf(buf, n, " (default: %ld)", *(long *)s->dst);
        break;
    case OPT_FLOAT:
        snprintf(buf, n, " (default: %g)", *(double *)s->dst);
        break;
    default:
        break;
    }
}

static void print_spec(const opt_spec *s, FILE *f) {
    char left[96], def[256];
    if (s->metavar)
        snprintf(left, sizeof left, "--%s %s", s->name, s->metavar);
    else
        snprintf(left, sizeof left, "--%s", s->name);
    default_text(s, def, sizeof def);
    fprintf(f, "  %-28s %s%s\n", left, s->help, def);
}

static int spec_group(const opt_spec *s) {
    return s->kind == OPT_ROW ? (int)((const opt_bind *)s->dst)->row->group : -1;
}

/* The options without a group first (a command's own), then the table's by group. */
void args_print_help(const cmd_info *cmd, const opt_spec *specs, FILE *f) {
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", cmd->usage, cmd->summary);
    for (const opt_spec *s = specs; s->name; s++)
        if (spec_group(s) < 0) print_spec(s, f);
    fprintf(f, "  %-28s %s\n", "--help", "show this help and exit");
    for (int g = 0; g < OG_COUNT; g++) {
        int any = 0;
        for (const opt_spec *s = specs; s->name; s++) {
            if (spec_group(s) != g) continue;
            if (!any++) fprintf(f, "\n%s:\n", opt_group_names[g]);
            print_spec(s, f);
        }
    }
    if (cmd->examples) fprintf(f, "\nexamples:\n%s\n", cmd->examples);
}

int args_specs_from_table(unsigned cmd, ft_train_options *o, args_list lists[2], opt_bind *binds,
                          opt_spec *specs, int max) {
    int n = 0, nl = 0;
    for (int i = 0; i < opt_n_rows && n < max - 1; i++) {
        const opt_row *r = &opt_rows[i];
        if (!(r->flags & cmd) || !r->cli) continue;
        binds[n] = (opt_bind){.row = r, .o = o};
        if (r->type == OT_LIST) {
            if (nl >= 2) continue; /* two lists: --data, --template-arg */
            binds[n].list = &lists[nl++];
        }
        specs[n] =
            (opt_spec){r->cli, OPT_ROW, &binds[n], r->type == OT_BOOL ? NULL : r->metavar, r->help};
        n++;
    }
    specs[n] = (opt_spec){0};
    return n;
}

int args_table_finish(const opt_spec *specs, const char **keys, int max_keys) {
    int nk = 0;
    for (const opt_spec *s = specs; s->name; s++) {
        if (s->kind != OPT_ROW) continue;
        const opt_bind *b = s->dst;
        if (!b->seen) continue;
        if (b->list && b->row->type == OT_LIST) {
            *(const char *const **)opt_ptr(b->row, b->o) = b->list->v;
            *(int *)((char *)b->o + b->row->n_off) = b->list->n;
        } else if (b->list) /* a one-value row a command collects (eval's --adapter): the first */
            *(const char **)opt_ptr(b->row, b->o) = b->list->v[0];
        if (nk < max_keys) keys[nk++] = b->row->key;
    }
    return nk;
}

opt_spec *args_find(opt_spec *specs, const char *name) {
    for (opt_spec *s = specs; s->name; s++)
        if (!strcmp(s->name, name)) return s;
    return NULL;
}

static int set_value(const opt_spec *s, const char *val, ft_error *err) {
    char where[128];
    snprintf(where, sizeof where, "option --%s", s->name);
    char *end;
    switch (s->kind) {
    case OPT_ROW: {
        opt_bind *b = s->dst;
        b->seen = 1;
        if (b->list) {
            if (b->list->n >= ARGS_LIST_MAX)
                return ft_error_set(err, FT_ERR_INPUT, where, NULL, "given more than %d times",
                                    ARGS_LIST_MAX);
            b->list->v[b->list->n++] = val;
            return FT_OK;
        }
        if (b->row->type == OT_BOOL) {
            *(int *)opt_ptr(b->row, b->o) = !(b->row->flags & OF_NEGATE);
            return FT_OK;
        }
        return opt_set_text(b->row, b->o, val, where, err);
    }
    case OPT_STR:
        *(const char **)s->dst = val;
        return FT_OK;
    case OPT_INT:
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || end == val || *end)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an integer, got \"%s\"",
                                val);
        *(long *)s->dst = v;
        return FT_OK;
    case OPT_FLOAT:
        errno = 0;
        double d = strtod(val, &end);
        if (errno || end == val || *end)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a number, got \"%s\"",
                                val);
        *(double *)s->dst = d;
        return FT_OK;
    case OPT_LIST: {
        args_list *l = s->dst;
        if (l->n >= ARGS_LIST_MAX)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "given more than %d times",
                                ARGS_LIST_MAX);
        l->v[l->n++] = val;
        return FT_OK;
    }
    case OPT_FLAG:
        *(int *)s->dst = 1;
        return FT_OK;
    }
    return FT_OK;
}

int args_parse(int argc, char **argv, const cmd_info *cmd, const opt_spec *specs, ft_error *err) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            args_print_help(cmd, specs, stdout);
            return -1;
        }
        if (strncmp(a, "--", 2) != 0) {
            char hint[256];
            snprintf(hint, sizeof hint, "run 'ftune %s --help' for the options", cmd->name);
            return ft_error_set(err, FT_ERR_INPUT, cmd->name, hint,
                                "unexpected argument \"%s\" (options start with --)", a);
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_spec *s = specs;
        for (; s->name; s++)
            if (strlen(s->name) == nlen && !strncmp(s->name, name, nlen)) break;
        if (!s->name) {
            char nm[64], hint[256] = "";
            snprintf(nm, sizeof nm, "%.*s", (int)(nlen < 63 ? nlen : 63), name);
            const opt_spec *best = NULL;
            int bd = 4;
            for (const opt_spec *t = specs; t->name; t++) {
                int d = edit_distance(nm, t->name);
                if (d < bd) bd = d, best = t;
            }
            if (best)
                snprintf(hint, sizeof hint, "did you mean --%s? ('ftune %s --help' lists all)",
                         best->name, cmd->name);
            else
                snprintf(hint, sizeof hint, "run 'ftune %s --help' for the options", cmd->name);
            return ft_error_set(err, FT_ERR_INPUT, cmd->name, hint, "unknown option --%s", nm);
        }
        const char *val = NULL;
        opt_bind *rb = s->kind == OPT_ROW ? s->dst : NULL;
        int is_row_flag = rb && rb->row->type == OT_BOOL;
        if (s->kind == OPT_FLAG || is_row_flag) {
            if (eq) {
                val = eq + 1;
                if (!strcmp(val, "false") || !strcmp(val, "0")) {
                    if (is_row_flag) {
                        *(int *)opt_ptr(rb->row, rb->o) = !!(rb->row->flags & OF_NEGATE);
                        rb->seen = 1;
                    } else {
                        *(int *)s->dst = 0;
                    }
                    continue;
                }
            }
        } else if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc)
                return ft_error_set(err, FT_ERR_INPUT, cmd->name, NULL,
                                    "option --%s needs a value (%s)", s->name,
                                    s->metavar ? s->metavar : "VALUE");
            val = argv[++i];
        }
        int st = set_value(s, val, err);
        if (st) return st;
    }
    return FT_OK;
}
