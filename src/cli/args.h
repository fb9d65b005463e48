/*
 * args.h: declarative option parsing for ftune's subcommands.
 *
 * Each subcommand lists its options in a table of opt_spec; args_parse fills the variables,
 * accepts "--name value" and "--name=value", and prints a --help page generated from the same
 * table, so the help never drifts from what is parsed. Unknown options are usage errors (exit 2)
 * with a suggestion of the closest known name.
 *
 * train, eval and plan take their options from the options table (src/train/options.h):
 * args_specs_from_table makes one opt_spec per row of the command, parsed with the row's type and
 * range (no silent narrowing: --batch-size 4294967297 is refused) and shown in --help under the
 * row's group.
 */
#ifndef FT_CLI_ARGS_H
#define FT_CLI_ARGS_H

#include "ftune.h"
#include "train/options.h"

/* OPT_ROW: dst is an opt_bind (an option of the options table) */
typedef enum { OPT_STR, OPT_INT, OPT_FLOAT, OPT_FLAG, OPT_LIST, OPT_ROW } opt_kind;

#define ARGS_LIST_MAX 32
typedef struct args_list {
    int n;
    const char *v[ARGS_LIST_MAX];
} args_list;

typedef struct opt_spec {
    const char *name; /* without the leading "--" */
    opt_kind kind;
    void *dst;           /* const char **, long *, double *, int *, or args_list * */
    const char *metavar; /* shown in help, e.g. "DIR"; NULL for flags */
    const char *help;    /* one line; the default is printed after it */
} opt_spec;

/* An option of the options table: its row, the options it is parsed into, the list that
 * collects a repeatable one (--data, --template-arg; or a one-value row a command lets repeat,
 * as eval's --adapter, whose first value the row gets), and whether it was given. --help shows
 * it under its row's group. */
typedef struct opt_bind {
    const opt_row *row;
    ft_train_options *o;
    args_list *list;
    int seen;
} opt_bind;

typedef struct cmd_info {
    const char *name;     /* "train" */
    const char *usage;    /* "ftune train --model DIR --data FILE --out RUN [options]" */
    const char *summary;  /* a paragraph shown at the top of --help */
    const char *examples; /* example command lines shown at the end of --help (may be NULL) */
} cmd_info;

/* The options of a command from the options table, into specs[] (room for max, one left for the
 * end) and binds[] (as many): rows whose flags have cmd (OF_TRAIN, OF_EVAL, OF_PLAN), parsed
 * into *o; the list rows (--data, --template-arg) into lists[0] and lists[1]. Returns the
 * number of specs. */
int args_specs_from_table(unsigned cmd, ft_train_options *o, args_list lists[2], opt_bind *binds,
                          opt_spec *specs, int max);
/* After args_parse: the lists into *o, and the run_config.json keys of the table options given
 * (for ft_train_options.resume_changes) into keys[] (returns how many). */
int args_table_finish(const opt_spec *specs, const char **keys, int max_keys);
/* The spec named name in specs (NULL if none). */
opt_spec *args_find(opt_spec *specs, const char *name);

/* Returns FT_OK, FT_ERR_INPUT (err filled) or -1 when --help was printed (caller exits 0). */
int args_parse(int argc, char **argv, const cmd_info *cmd, const opt_spec *specs, ft_error *err);
void args_print_help(const cmd_info *cmd, const opt_spec *specs, FILE *f);

#endif
