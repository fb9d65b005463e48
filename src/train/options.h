/*
 * options.h: the one table of training options (ft_train_options), shared by train, eval and plan.
 *
 * Each row says everything ftune knows about one option: its key in run_config.json and in the
 * settings text that the settings hash is made of, its command-line name, its C type and offset
 * in ft_train_options, its default, its range, which commands take it, its help group and line,
 * and whether it decides the run's numbers (hashed), may change on --resume, is saved in
 * run_config.json, or is a path (stored absolute). ft_train_defaults, the CLI parser and --help
 * (src/cli/args.c), run_config.json (src/train/run_config.c) and the --resume rules all read the
 * table, so adding an option is one row here plus the code that uses the value.
 *
 * The settings text of the rows marked OF_HASH, in table order, is what the settings hash of a
 * run is made of; its format is frozen (the hashes of existing runs are stored in their
 * checkpoints): new hashed options must use OF_HASH_IF_SET, which leaves runs that do not use
 * them with the hash they had.
 */
#ifndef FT_TRAIN_OPTIONS_H
#define FT_TRAIN_OPTIONS_H

#include "ftune.h"
#include "ops/quant.h" /* FT_QUANT_BLOCKSIZE_DEFAULT */

#include <stddef.h>


typedef enum { OT_STR, OT_INT, OT_LONG, OT_U64, OT_DOUBLE, OT_BOOL, OT_LIST } opt_type;

/* help groups, in the order --help prints them */
typedef enum {
    OG_MODEL,
    OG_DATA,
    OG_LORA,
    OG_OPTIM,
    OG_MEMORY,
    OG_CKPT,
    OG_OUTPUT,
    OG_COUNT
} opt_group;
extern const char *const opt_group_names[OG_COUNT];

enum {
    OF_TRAIN = 1u << 0,       /* an option of ftune train */
    OF_EVAL = 1u << 1,        /* ... of ftune eval */
    OF_PLAN = 1u << 2,        /* ... of ftune plan */
    OF_HASH = 1u << 3,        /* decides the numbers: in the settings text and hash */
    OF_HASH_IF_SET = 1u << 4, /* hashed only when not at its "no value" text (newer options) */
    OF_SAVE = 1u << 5,        /* written to and read from run_config.json "options" */
    OF_RESUME = 1u << 6,      /* may change on --resume */
    OF_PATH = 1u << 7,        /* a file or folder: run_config.json stores it absolute */
    OF_NEGATE = 1u << 8,      /* OT_BOOL set to 0 by its CLI flag (--no-shuffle) */
    OF_FINITE = 1u << 9,      /* OT_DOUBLE: NaN and infinities refused */
};

typedef struct opt_row {
    const char *key; /* run_config.json / settings text key: "lora_r" */
    const char *cli; /* command-line name without "--" (NULL: library only) */
    opt_type type;
    size_t off;      /* offset of the value in ft_train_options */
    size_t n_off;    /* OT_LIST: offset of the int count */
    const char *def; /* default as text (NULL: no value) */
    double lo, hi;   /* numbers: inclusive range */
    unsigned flags;
    opt_group group;
    const char *metavar; /* in --help; NULL for flags */
    const char *help;
    /* settings text of no value: "" for all but the legacy spellings of two early options
     * ("none", "default"), kept so that old hashes stay valid */
    const char *hash_none;
    const char *sep;  /* OT_LIST: separator in the settings text */
    const char *json; /* key in run_config.json when not key (NULL: key) */
} opt_row;

extern const opt_row opt_rows[];
extern const int opt_n_rows;

const opt_row *opt_find(const char *key);
const opt_row *opt_find_cli(const char *cli);
/* The row's key in run_config.json. */
const char *opt_json_key(const opt_row *r);
/* Pointer to the row's value inside o. */
void *opt_ptr(const opt_row *r, const ft_train_options *o);

/* The value as text, as the settings text writes it (%.17g for numbers, lists joined by the
 * row's separator, no value as hash_none). */
void opt_value_text(const opt_row *r, const ft_train_options *o, char *buf, size_t n);
/* Set the value from text (numbers parsed and range-checked); for OT_STR the text is kept, not
 * copied. where names the option in errors. */
ft_status opt_set_text(const opt_row *r, ft_train_options *o, const char *text, const char *where,
                       ft_error *err);
/* "--lora-r must be in [1, 65536]"-style check of one number against the row's range. */
ft_status opt_check_range(const opt_row *r, double v, const char *where, ft_error *err);

/* The settings text: "key=value\n" per hashed row. all = 1 writes the OF_HASH_IF_SET rows
 * always, so that two texts compared line by line have the same keys in the same order. */
void opt_settings_text(const ft_train_options *o, int all, char *buf, size_t n);

#endif
