/*
 * cpu.h: what the CPU can run, probed once, as one ISA level that every kernel table asks.
 *
 * The levels are ordered; each includes the ones below it:
 *   CPU_PORTABLE    plain C (the reference of every op)
 *   CPU_AVX2        AVX2 + FMA + F16C, and the OS saving ymm registers
 *   CPU_AVX512      + AVX-512 F, BW, VL, DQ, and the OS saving zmm and opmask registers
 *   CPU_AVX512BF16  + AVX512_BF16 (VDPBF16PS: Intel Cooper Lake, Sapphire Rapids; AMD Zen 4)
 *   CPU_AMX         + AMX-TILE and AMX-BF16 (tile matrix multiply: Intel Sapphire Rapids on),
 *                   the OS saving tile state and granting it to this process
 * cpu_level() is the best level the CPU has, capped by the environment variable FTUNE_ISA
 * (portable, avx2, avx512, avx512bf16 or amx; a cap above what the CPU has changes nothing). A
 * value that is none of those caps nothing and is reported by cpu_check_env(), which model loading
 * calls, so a typo never silently runs other kernels than asked for.
 *
 * An op's dispatcher keeps a table of kernel sets, best first, each with the level it needs, and
 * runs the first whose level is <= cpu_level(). The table is the op's; the level is
 * this file's, so FTUNE_ISA=portable runs every op's portable kernels.
 */
#ifndef FT_BASE_CPU_H
#define FT_BASE_CPU_H

#include "ftune.h"

#include <stddef.h>

typedef enum cpu_isa {
    CPU_PORTABLE,
    CPU_AVX2,
    CPU_AVX512,
    CPU_AVX512BF16,
    CPU_AMX,
    CPU_NLEVELS
} cpu_isa;

/* The raw CPUID / XGETBV bits behind the levels (all 0 off x86-64). */
typedef struct cpu_features {
    int avx2, fma, f16c, os_ymm;               /* leaf 1 / 7, XCR0 bits 1-2 */
    int avx512f, avx512bw, avx512vl, avx512dq; /* leaf 7 subleaf 0 EBX */
    int os_zmm;                                /* XCR0 bits 5-7 */
    int avx512bf16;                            /* leaf 7 subleaf 1 EAX bit 5 */
    int amx_tile, amx_bf16;                    /* leaf 7 subleaf 0 EDX bits 24, 22 */
    int os_amx;                                /* XCR0 bits 17-18 */
    int amx_granted;                           /* Linux gave this process the tile data */
} cpu_features;

const cpu_features *cpu_probe(void);
/* The best level the CPU itself has (FTUNE_ISA ignored). */
cpu_isa cpu_native_level(void);
/* The level the kernels run at: the native one, capped by FTUNE_ISA and by cpu_set_level. */
cpu_isa cpu_level(void);

/* "portable", "avx2", "avx512", "avx512bf16", "amx" */
const char *cpu_isa_name(cpu_isa l);
/* The level of a name (case-insensitive), or -1. */
int cpu_isa_parse(const char *name);

/* FT_OK when FTUNE_ISA is unset or names a level; FT_ERR_INPUT with a message otherwise. */
ft_status cpu_check_env(ft_error *err);

/* For tests and benchmarks: run at level l from now on (FTUNE_ISA no longer applies). Returns 1,
 * or 0 (nothing changes) when the CPU lacks l. Not thread-safe against running kernels. */
int cpu_set_level(cpu_isa l);

/* n threads for ftune's OpenMP loops (n <= 0: every online CPU), which also run the BLAS
 * products (OpenBLAS itself single-threaded: ops/gemm.c); train, eval and generate call it. */
void cpu_set_threads(int n);

/* The row of an op's kernel table to run: the first whose `level` field is <= cpu_level(), else
 * the last (the table lists its kernels best first and ends with the portable one). */
int cpu_pick(const void *table, size_t row_size, size_t level_offset, int n);
#define CPU_PICK(table)                                                                            \
    cpu_pick((table), sizeof(table)[0], offsetof(__typeof__((table)[0]), level),                   \
             (int)(sizeof(table) / sizeof(table)[0]))

#endif
