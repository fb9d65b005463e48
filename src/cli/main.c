/*
 * main.c: the ftune program. Dispatches "ftune <command> [options]" to src/cli/cmd_*.c;
 * each command parses its own options (args.h) and returns an exit status:
 * 0 done, 1 failure at run time, 2 bad input or usage, 130/143 interrupted.
 */
#include "cli/commands.h"
#include "dist/dist.h"
#include "ftune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One thread pool: OpenMP's runs ftune's loops and kernels, and the BLAS products too (gemm()
 * splits them over its threads, OpenBLAS single-threaded: ops/gemm.c). Its idle threads spin
 * for a while after each parallel region before they sleep (libgomp's default), which the many
 * short regions of a step need: measured on the SmolLM-135M bench shape (2 cores, Intel AMX
 * Xeon), passive waiting (OMP_WAIT_POLICY=passive, each region waking sleeping threads) made
 * --dtype bf16 steps 19% slower (480 against 593 tok/s), bench/README.md. OpenBLAS's own pool
 * is never used; OPENBLAS_NUM_THREADS=1 keeps it from being started. The variable is read when
 * the library loads, before main, so when the user has not chosen we set it and re-execute
 * ourselves once (the variable being set is what stops a second time). */
static void set_wait_policy(char **argv) {
    if (getenv("OPENBLAS_NUM_THREADS")) return;
    if (setenv("OPENBLAS_NUM_THREADS", "1", 1) == 0) execv("/proc/self/exe", argv);
    /* exec failed: OpenBLAS starts its pool, which stays idle */
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
#define X(name, fn, summary) {name, fn, summary},
    FT_COMMANDS(X)
#undef X
};

static void usage(FILE *f) {
    fprintf(f,
            "ftune %s: LoRA fine-tuning of open LLMs on the CPU\n\n"
            "usage: ftune <command> [options]    (ftune <command> --help or ftune help <command>\n"
            "                                     for its options)\n\n"
            "commands:\n",
            ft_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    set_wait_policy(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "help") && argc >= 3) { /* ftune help CMD = ftune CMD --help */
        char help[] = "--help";
        char *args[] = {help, NULL};
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
            if (!strcmp(argv[2], commands[i].name)) return commands[i].fn(1, args);
        fprintf(stderr,
                "ftune: error: unknown command \"%s\"\n  hint: run 'ftune --help' for the "
                "list\n",
                argv[2]);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("ftune %s (MPI: %s)\n", ft_version(), dist_describe());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr,
            "ftune: error: unknown command \"%s\"\n  hint: run 'ftune --help' for the list\n",
            argv[1]);
    return 2;
}
