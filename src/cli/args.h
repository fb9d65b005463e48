/*
 * args.h: declarative option parsing for ftune's subcommands.
 *
 * Each subcommand lists its options in a table of opt_spec; args_parse fills the variables,
 * accepts "--name value" and "--name=value", and prints a --help page generated from the same
 * table, so the help never drifts from what is parsed. Unknown options are usage errors (exit 2)
 * with a suggestion of the closest known name.
 */
#ifndef FT_CLI_ARGS_H
#define FT_CLI_ARGS_H

#include "ftune.h"

typedef enum { OPT_STR, OPT_INT, OPT_FLOAT, OPT_FLAG, OPT_LIST } opt_kind;

#define ARGS_LIST_MAX 32
typedef struct args_list {
    int n;
    const char *v[ARGS_LIST_MAX];
} args_list;

typedef struct opt_spec {
    const char *name;    /* without the leading "--" */
    opt_kind kind;
    void *dst;           /* const char **, long *, double *, int *, or args_list * */
    const char *metavar; /* shown in help, e.g. "DIR"; NULL for flags */
    const char *help;    /* one line; the default is printed after it */
} opt_spec;

typedef struct cmd_info {
    const char *name;    /* "train" */
    const char *usage;   /* "ftune train --model DIR --data FILE --out RUN [options]" */
    const char *summary; /* a paragraph shown at the top of --help */
    const char *examples; /* example command lines shown at the end of --help (may be NULL) */
} cmd_info;

/* Returns FT_OK, FT_ERR_INPUT (err filled) or -1 when --help was printed (caller exits 0). */
int args_parse(int argc, char **argv, const cmd_info *cmd, const opt_spec *specs, ft_error *err);
void args_print_help(const cmd_info *cmd, const opt_spec *specs, FILE *f);

#endif
