/*
 * ftune.h: the one public header of libftune.
 *
 * ftune fine-tunes open LLMs (LoRA) on the CPU. A caller loads a Hugging Face model folder,
 * trains a PEFT-compatible adapter and writes it out. Every function that can fail returns an
 * ft_status and fills an ft_error saying what was wrong, where (file, line, tensor or field)
 * and a hint; the library itself never prints to stderr and never exits.
 *
 * The status values double as process exit codes for the ftune program:
 *   0 done, 1 failure at run time, 2 bad input or usage, 130 / 143 interrupted.
 */
#ifndef FTUNE_H
#define FTUNE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ft_status {
    FT_OK = 0,
    FT_ERR_RUNTIME = 1,      /* I/O failure, out of memory, numeric blow-up */
    FT_ERR_INPUT = 2,        /* bad input file, bad option, unsupported model */
    FT_ERR_INTERRUPTED = 130, /* SIGINT */
    FT_ERR_TERMINATED = 143, /* SIGTERM */
} ft_status;

typedef struct ft_error {
    ft_status status;
    char where[512]; /* "model/config.json: field hidden_size", "data.jsonl:12", ... */
    char what[1024]; /* what was wrong and what was expected */
    char hint[512];  /* what the user can do about it; may be empty */
} ft_error;

/* Fill err (if not NULL) and return st. where and hint may be NULL. */
ft_status ft_error_set(ft_error *err, ft_status st, const char *where, const char *hint,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Write "ftune: error: WHERE: WHAT\n  hint: HINT\n" to f. */
void ft_error_print(const ft_error *err, FILE *f);

/* Library version string, e.g. "0.1.0". */
const char *ft_version(void);

#ifdef __cplusplus
}
#endif
#endif /* FTUNE_H */
