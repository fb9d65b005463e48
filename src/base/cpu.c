/*
 * cpu.c: the CPU probe (CPUID and XGETBV, once) and the one ISA level every kernel table asks
 * (cpu.h).
 *
 * Bits read (Intel SDM vol. 2A, CPUID; AMD APM vol. 3 agrees): leaf 1 ECX 12 FMA, 27 OSXSAVE,
 * 29 F16C; leaf 7 subleaf 0 EBX 5 AVX2, 16 AVX512F, 17 AVX512DQ, 30 AVX512BW, 31 AVX512VL;
 * leaf 7 subleaf 1 EAX 5 AVX512_BF16 (only when leaf 7 subleaf 0 EAX, the last subleaf, >= 1);
 * leaf 7 subleaf 0 EDX 22 AMX-BF16, 24 AMX-TILE;
 * XCR0 (XGETBV 0) bits 1-2 SSE/AVX state, 5-7 opmask and zmm state, 17-18 tile config and tile
 * data. A feature counts only when the OS saves its registers (XCR0), as the CPUID bits alone do
 * not say so; AMX also only when Linux grants this process the tile data state, which it does on
 * request (arch_prctl ARCH_REQ_XCOMP_PERM 0x1023 for XFEATURE_XTILEDATA 18, Linux 5.16 on;
 * the kernel's Documentation/arch/x86/xstate.rst), made here once.
 * __builtin_cpu_supports is not used: clang 14 knows neither "f16c" nor "avx512bf16".
 */
#include "base/cpu.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static cpu_features feat;
static cpu_isa native, capped;
static int env_bad; /* FTUNE_ISA set to something that is no level */
static pthread_once_t once = PTHREAD_ONCE_INIT;

static const char *const names[CPU_NLEVELS] = {"portable", "avx2", "avx512", "avx512bf16", "amx"};

static void probe(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned a, b, c, d, max = __get_cpuid_max(0, NULL);
    if (max >= 1 && __get_cpuid(1, &a, &b, &c, &d)) {
        feat.fma = c >> 12 & 1;
        feat.f16c = c >> 29 & 1;
        if (c >> 27 & 1) { /* OSXSAVE: XGETBV may be executed */
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            feat.os_ymm = (lo & 0x6) == 0x6;
            feat.os_zmm = feat.os_ymm && (lo & 0xe0) == 0xe0;
            feat.os_amx = (lo & 0x60000) == 0x60000;
        }
    }
    if (max >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned last_sub = a;
        feat.avx2 = b >> 5 & 1;
        feat.avx512f = b >> 16 & 1;
        feat.avx512dq = b >> 17 & 1;
        feat.avx512bw = b >> 30 & 1;
        feat.avx512vl = b >> 31 & 1;
        feat.amx_bf16 = d >> 22 & 1;
        feat.amx_tile = d >> 24 & 1;
        if (last_sub >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            feat.avx512bf16 = a >> 5 & 1;
        }
    }
    if (feat.amx_tile && feat.amx_bf16 && feat.os_amx)
        feat.amx_granted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#endif
}

static cpu_isa level_of(const cpu_features *f) {
    if (!(f->avx2 && f->fma && f->f16c && f->os_ymm)) return CPU_PORTABLE;
    if (!(f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->os_zmm)) return CPU_AVX2;
    if (!f->avx512bf16) return CPU_AVX512;
    return f->amx_tile && f->amx_bf16 && f->os_amx && f->amx_granted ? CPU_AMX : CPU_AVX512BF16;
}

static void init(void) {
    probe();
    native = capped = level_of(&feat);
    const char *cap = getenv("FTUNE_ISA");
    if (cap && *cap) {
        int l = cpu_isa_parse(cap);
        if (l < 0)
            env_bad = 1;
        else if ((cpu_isa)l < capped)
            capped = (cpu_isa)l;
    }
}

const cpu_features *cpu_probe(void) {
    pthread_once(&once, init);
    return &feat;
}

cpu_isa cpu_native_level(void) {
    pthread_once(&once, init);
    return native;
}

cpu_isa cpu_level(void) {
    pthread_once(&once, init);
    return capped;
}

const char *cpu_isa_name(cpu_isa l) { return (unsigned)l < CPU_NLEVELS ? names[l] : "?"; }

int cpu_isa_parse(const char *name) {
    for (int l = 0; name && l < CPU_NLEVELS; l++)
        if (!strcasecmp(name, names[l])) return l;
    return -1;
}

ft_status cpu_check_env(ft_error *err) {
    pthread_once(&once, init);
    if (!env_bad) return FT_OK;
    return ft_error_set(err, FT_ERR_INPUT, "FTUNE_ISA", "unset it to use the best this CPU has",
                        "FTUNE_ISA=%s is not an instruction set level: expected portable, avx2, "
                        "avx512, avx512bf16 or amx (this CPU: %s)",
                        getenv("FTUNE_ISA"), names[native]);
}

int cpu_set_level(cpu_isa l) {
    pthread_once(&once, init);
    if ((unsigned)l >= CPU_NLEVELS || l > native) return 0;
    capped = l;
    return 1;
}

void cpu_set_threads(int n) {
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    omp_set_num_threads(n); /* OpenBLAS runs single-threaded under them: ops/gemm.c */
}

int cpu_pick(const void *table, size_t row_size, size_t level_offset, int n) {
    cpu_isa l = cpu_level();
    for (int i = 0; i < n - 1; i++) {
        cpu_isa need;
        memcpy(&need, (const char *)table + (size_t)i * row_size + level_offset, sizeof need);
        if (need <= l) return i;
    }
    return n - 1;
}
