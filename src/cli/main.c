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

/* Two thread pools share the cores: OpenMP's (ftune's own loops and kernels) and OpenBLAS's (its
 * GEMMs, between those loops). Each pool's idle threads wait busily by default and take the cores
 * from the other's working ones: libgomp's spin after each parallel region (measured on the
 * SmolLM-135M bench shape, 2 cores: passive waiting trains about 35% faster), and OpenBLAS's
 * pthreads call sched_yield in a loop for 2^28 cycles before sleeping (OPENBLAS_THREAD_TIMEOUT,
 * 4..30, the exponent; measured on Zen 4: 4 made fp32 steps 10% and --dtype bf16 steps 21%
 * faster, bench/README.md). Both variables are read when the libraries load, before main, so
 * when the user has not chosen we set them and re-execute ourselves once (the variables being
 * set is what stops a second time). */
static void set_wait_policy(char **argv) {
    int changed = 0;
    if (!getenv("OMP_WAIT_POLICY")) changed |= setenv("OMP_WAIT_POLICY", "passive", 1) == 0;
    if (!getenv("OPENBLAS_THREAD_TIMEOUT"))
        changed |= setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1) == 0;
    if (changed) execv("/proc/self/exe", argv);
    /* exec failed: go on with busy-waiting threads, slower but correct */
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
