/* gemm_bf16_test.c: the bf16 products of gemm_bf16.h against gemm_bf16_ref (each output summed
 * in double), on every kernel there is to run:
 *  - the fallback (widen to fp32, OpenBLAS sgemm), always;
 *  - the AVX512_BF16 kernel natively (cpu_set_level(CPU_AVX512BF16)) when the CPU has it, and with
 * no scratch (the dispatcher then falls back to the reference);
 *  - the same kernel source (ops/gemm_bf16_dp.h) built here against SIMDe's emulation of the
 *    AVX-512 intrinsics, so that it is tested on CPUs without AVX-512 too; skipped, with a
 *    message, when the SIMDe headers are missing (Debian: libsimde-dev);
 *  - the AMX kernel natively (cpu_set_level(CPU_AMX)) where the CPU has AMX and Linux grants it,
 *    and its source (ops/gemm_bf16_amx.h) against a C model of the tile instructions below
 *    (with SIMDe for the AVX2 packing it shares), on every CPU.
 * Shapes: M, N, K odd and around the kernel's blocks (tile 8 x 32, K blocks of 256, M blocks of
 * 64, N blocks of 2048), K = 1 and K = 1000, both op(B), strides past the widths, beta 0 (C
 * holding NaN, which must be ignored), 1 and 0.5, and products big enough to run threaded.
 *
 * And bf16_round_rows against the definition of round to nearest even (whichever of the two
 * bf16 around x is nearer, in double; a tie to the even one; inf beyond the largest finite
 * value plus half its step; NaN stays a NaN of the same sign), on every upper half of an fp32
 * with the lower halves that decide a rounding (0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, random),
 * over rows whose lengths leave every tail of the 16-wide AVX2 loop. The whole test runs a second
 * time with FTUNE_ISA=portable (the scalar conversions; the fallback product).
 *
 * Tolerance: every product of two bf16 is exact in fp32, so the kernels differ from the
 * reference only by the roundings of their fp32 sums. A sum whose every partial result is
 * rounded at most n times is within n * 2^-24 * (sum |a||b| + |beta C|) of the exact one; the
 * kernel sums each K block of at most 256 values one by one (at most 256 roundings: two per
 * VDPBF16PS), adds the blocks into C (one rounding each) and applies beta (one), so n is
 * min(K, 256) + ceil(K / 256) + 2. OpenBLAS blocks K by at most that much too. A missing,
 * doubled or misplaced product moves an output by about |a||b| ~ sum/K, far more.
 */
#include "base/cpu.h"
#include "ops/gemm_bf16.h"
#include "test.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

static float as_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#if defined(__has_include) && !defined(__CPPCHECK__) /* cppcheck 2.10 cannot evaluate it */
#if __has_include(<simde/x86/avx512.h>)
#define SIMDE_ENABLE_NATIVE_ALIASES
/* the emulated 512-bit vectors pass by value between this file's own static functions only, so
 * the ABI note clang gives for every one of them says nothing here */
#pragma GCC diagnostic ignored "-Wpsabi"
#include <simde/x86/avx512.h>

#include "ops/gemm_bf16_dp.h" /* after the intrinsics it is written in */
#define HAVE_SIMDE 1

/* A plain-C model of the AMX tile instructions gemm_bf16_amx.h uses, after Intel SDM vol. 2's
 * descriptions of TILELOADD, TILESTORED, TILEZERO and TDPBF16PS, for the one configuration the
 * kernel loads (eight tiles of 16 rows x 64 bytes): per thread, like the hardware's tile state.
 * TDPBF16PS adds to each fp32 of C, pair by pair along A's row and B's column, the product of
 * the lower bf16 halves and then that of the upper ones, each addition rounded to fp32. */
static _Thread_local unsigned char emu_tile[8][16][64];
static void emu_loadd(int t, const void *base, long stride) {
    for (int r = 0; r < 16; r++)
        memcpy(emu_tile[t][r], (const char *)base + r * stride, 64);
}
static void emu_stored(int t, void *base, long stride) {
    for (int r = 0; r < 16; r++)
        memcpy((char *)base + r * stride, emu_tile[t][r], 64);
}
static float emu_half(int t, int r, int word, int hi) {
    uint16_t h;
    memcpy(&h, &emu_tile[t][r][4 * word + 2 * hi], 2);
    return as_float((uint32_t)h << 16);
}
static void emu_dpbf16ps(int c, int a, int b) {
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            float acc;
            memcpy(&acc, &emu_tile[c][m][4 * n], 4);
            for (int k = 0; k < 16; k++) {
                acc += emu_half(a, m, k, 0) * emu_half(b, k, n, 0);
                acc += emu_half(a, m, k, 1) * emu_half(b, k, n, 1);
            }
            memcpy(&emu_tile[c][m][4 * n], &acc, 4);
        }
}
static int emu_configured; /* loads of a tile configuration, to see the kernel makes them */
#define _tile_loadconfig(cfg)                                                                      \
    ((void)(cfg), __atomic_add_fetch(&emu_configured, 1, __ATOMIC_RELAXED))
#define _tile_release() ((void)0)
#define _tile_zero(t) memset(emu_tile[t], 0, sizeof emu_tile[t])
#define _tile_loadd(t, base, stride) emu_loadd(t, base, stride)
#define _tile_stored(t, base, stride) emu_stored(t, base, stride)
#define _tile_dpbf16ps(c, a, b) emu_dpbf16ps(c, a, b)
#include "ops/gemm_bf16_amx.h"
#endif
#endif

static uint32_t rng = 777;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

/* n bf16 values of varying magnitude (2^-6 .. 1, so no product or partial sum is denormal,
 * which VDPBF16PS would flush and the reference would not). */
static void fill_bf16(uint16_t *x, size_t n) {
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        float v = frand();
        f[i] = v * (i % 7 == 0 ? 1.0f : i % 7 == 1 ? 0.02f : 0.3f);
        if (fabsf(f[i]) < 0x1p-6f) f[i] = f[i] < 0 ? -0x1p-6f : 0x1p-6f;
    }
    bf16_round_rows(x, n, f, n, 1, (int)n);
    free(f);
}

/* The value of a bf16, with inf read as 2^128, the next step after the largest finite value. */
static double bf16_value(uint16_t h) {
    if ((h & 0x7fff) == 0x7f80) return h & 0x8000 ? -0x1p128 : 0x1p128;
    return as_float((uint32_t)h << 16);
}

/* Round to nearest even by its definition. */
static uint16_t round_definition(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1); /* toward zero; one step out */
    if (isnan(f)) return 0xffff;      /* any NaN of the sign: checked separately */
    if ((u & 0xffff) == 0) return lo; /* exact, inf included */
    double dl = fabs((double)f - bf16_value(lo)), dh = fabs(bf16_value(hi) - (double)f);
    return dl < dh ? lo : dh < dl ? hi : (lo & 1) ? hi : lo;
}

static void check_rounding(void) {
    const uint16_t lows[] = {0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234, 0xc001};
    enum { NL = sizeof lows / sizeof lows[0], NV = 65536 * NL };
    float *x = malloc(NV * sizeof(float));
    uint16_t *r = malloc(NV * sizeof(uint16_t));
    for (uint32_t h = 0; h < 65536; h++)
        for (int l = 0; l < NL; l++)
            x[h * NL + l] = as_float(h << 16 | lows[l]);
    /* rows of 37, 16, 15 and 1 values, then all the rest in one (tails 5, 0, 15, 1 and more) */
    int done = 0, lens[] = {37, 16, 15, 1};
    for (int i = 0; i < 4; i++)
        bf16_round_rows(r + done, 0, x + done, 0, 1, lens[i]), done += lens[i];
    bf16_round_rows(r + done, 0, x + done, 0, 1, NV - done);
    int bad = 0;
    for (int i = 0; i < NV; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        int ok = isnan(x[i])
                     ? (r[i] & 0x7f80) == 0x7f80 && (r[i] & 0x7f) && (r[i] >> 15) == (u >> 31)
                     : r[i] == round_definition(x[i]);
        if (!ok && bad++ < 5)
            fprintf(stderr, "bf16_round_rows(%08x) = %04x, want %04x\n", u, r[i],
                    round_definition(x[i]));
    }
    CHECK(bad == 0, "bf16_round_rows: %d of %d values rounded wrong", bad, (int)NV);
    /* strided rows: 3 rows of 21 values in rows of 24 and 30 */
    float src[3 * 24];
    uint16_t dst[3 * 30];
    for (int i = 0; i < 3 * 24; i++)
        src[i] = frand();
    for (int i = 0; i < 3 * 30; i++)
        dst[i] = 0xabcd;
    bf16_round_rows(dst, 30, src, 24, 3, 21);
    int sbad = 0;
    for (int rr = 0; rr < 3; rr++)
        for (int c = 0; c < 30; c++)
            sbad += dst[rr * 30 + c] != (c < 21 ? round_definition(src[rr * 24 + c]) : 0xabcd);
    CHECK(sbad == 0, "bf16_round_rows with strides: %d values wrong", sbad);
    free(x), free(r);
}

/* Whether /proc/cpuinfo's flags (the kernel's reading of CPUID and XCR0) list AVX512_BF16 and
 * the subsets the kernel's file is built for; -1 when there is no /proc/cpuinfo. */
static int cpuinfo_has_avx512_bf16(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return -1;
    char line[8192];
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f))
        if (!strncmp(line, "flags", 5)) {
            const char *need[] = {" avx512f ", " avx512dq ", " avx512bw ", " avx512vl ",
                                  " avx512_bf16 "};
            char *nl = strchr(line, '\n');
            if (nl) strcpy(nl, " "); /* so the last flag ends with a space too */
            found = 1;
            for (int i = 0; i < 5; i++)
                if (!strstr(line, need[i])) found = 0;
        }
    fclose(f);
    return found;
}

typedef void (*gemm_bf16_kernel)(int, int, int, int, const uint16_t *, int, const uint16_t *, int,
                                 float, float *, int);

#ifdef HAVE_SIMDE
static int emulated_failed;
static void gemm_emulated(int transB, int M, int N, int K, const uint16_t *A, int lda,
                          const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    size_t n = dp_scratch_bytes(M, N, K);
    void *ws = malloc(n);
    if (dp_gemm(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, ws, n)) emulated_failed++;
    free(ws);
}

static void gemm_amx_emulated(int transB, int M, int N, int K, const uint16_t *A, int lda,
                              const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    size_t n = amx_scratch_bytes(M, N, K);
    void *ws = malloc(n);
    if (amx_gemm(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, ws, n)) emulated_failed++;
    free(ws);
}
#endif

/* gemm_bf16 with the scratch it asks for (gemm_bf16_scratch_bytes), as qtensor.c gives it. */
static void gemm_dispatch(int transB, int M, int N, int K, const uint16_t *A, int lda,
                          const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    size_t n = gemm_bf16_scratch_bytes(M, N, K);
    void *ws = n ? malloc(n) : NULL;
    gemm_bf16(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, ws, n);
    free(ws);
}

/* gemm_bf16 given no scratch: no kernel but the reference can run, and the product is still
 * right. */
static void gemm_bf16_noscratch(int transB, int M, int N, int K, const uint16_t *A, int lda,
                                const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    gemm_bf16(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, NULL, 0);
}

/* One product on `run` against the reference; the largest error in units of the bound. */
static double check_shape(gemm_bf16_kernel run, const char *name, int transB, int M, int N, int K,
                          float beta) {
    int lda = K + 3, ldb = (transB ? K : N) + 5, ldc = N + 2;
    size_t na = (size_t)M * lda, nb = (size_t)(transB ? N : K) * ldb, nc = (size_t)M * ldc;
    uint16_t *A = malloc(na * 2), *B = malloc(nb * 2), *Aabs = malloc(na * 2),
             *Babs = malloc(nb * 2);
    float *C = malloc(nc * 4), *want = malloc(nc * 4), *sum_abs = malloc(nc * 4);
    fill_bf16(A, na);
    fill_bf16(B, nb);
    for (size_t i = 0; i < na; i++)
        Aabs[i] = A[i] & 0x7fff;
    for (size_t i = 0; i < nb; i++)
        Babs[i] = B[i] & 0x7fff;
    for (size_t i = 0; i < nc; i++)
        C[i] = frand();
    memcpy(want, C, nc * 4);
    gemm_bf16_ref(transB, M, N, K, A, lda, B, ldb, beta, want, ldc);
    gemm_bf16_ref(transB, M, N, K, Aabs, lda, Babs, ldb, 0.0f, sum_abs, ldc);
    double rounds = (K < 256 ? K : 256) + (K + 255) / 256 + 2;
    double worst = 0;
    for (int m = 0; m < M; m++) {
        if (beta != 0)
            for (int n = 0; n < N; n++)
                sum_abs[(size_t)m * ldc + n] += fabsf(beta * C[(size_t)m * ldc + n]);
        else
            C[(size_t)m * ldc] = NAN; /* beta 0 ignores C, NaN included */
    }
    for (int m = 0; m < M; m++) /* the padding past N, to see that nothing writes there */
        C[(size_t)m * ldc + N] = -123.0f, C[(size_t)m * ldc + N + 1] = -456.0f;
    run(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
    int pad_bad = 0;
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            size_t i = (size_t)m * ldc + n;
            double bound = rounds * 0x1p-24 * sum_abs[i];
            double e = fabs((double)C[i] - want[i]) / (bound > 0 ? bound : 1e-30);
            if (!(e <= worst)) worst = e; /* NaN too */
        }
        pad_bad += C[(size_t)m * ldc + N] != -123.0f || C[(size_t)m * ldc + N + 1] != -456.0f;
    }
    CHECK(worst <= 1, "%s transB %d M %d N %d K %d beta %g: error %.3g x the bound", name, transB,
          M, N, K, beta, worst);
    CHECK(pad_bad == 0, "%s transB %d M %d N %d K %d: wrote past N in %d rows", name, transB, M, N,
          K, pad_bad);
    free(A), free(B), free(Aabs), free(Babs), free(C), free(want), free(sum_abs);
    return worst;
}

/* Every shape on one kernel; prints the largest error in units of the bound. */
static void check_kernel(gemm_bf16_kernel run, const char *name) {
    static const int shapes[][3] = {
        {1, 1, 1},     {1, 33, 1},    {3, 1, 7},      {8, 32, 16},    {9, 33, 17},
        {7, 31, 255},  {17, 65, 256}, {13, 45, 257},  {65, 97, 63},   {5, 100, 1000},
        {70, 40, 513}, {2, 2100, 9},  {1, 300, 600},  {130, 300, 61}, {129, 257, 200},
        {16, 16, 32},  {33, 64, 300}, {48, 2100, 40}, /* and the AMX kernel's tiles and blocks */
    };
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    int failed = test_failed_;
    double worst = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int transB = 0; transB < 2; transB++)
            for (int b = 0; b < 3; b++) {
                double e = check_shape(run, name, transB, shapes[s][0], shapes[s][1], shapes[s][2],
                                       betas[b]);
                worst = e > worst ? e : worst;
            }
    printf("%s: %s (largest error %.3g x the bound)\n", name,
           test_failed_ == failed ? "ok" : "FAILURES", worst);
}

int main(int argc, char **argv) {
    (void)argc;
    /* the choice made on first use: avx512 when the CPU has it, unless FTUNE_ISA caps it */
    const char *cap = getenv("FTUNE_ISA"), *first = gemm_bf16_isa();
    int capped = cpu_level() < CPU_AVX512BF16, amx_capped = cpu_level() < CPU_AMX;
    printf("FTUNE_ISA %s: %s\n", cap ? cap : "unset", first);
    check_rounding();

    cpu_isa keep = cpu_level();
    int has_amx = cpu_set_level(CPU_AMX);
    int has_avx512 = cpu_set_level(CPU_AVX512BF16), cpuinfo = cpuinfo_has_avx512_bf16();
    CHECK(cpuinfo < 0 || has_avx512 == cpuinfo, "CPUID says AVX512_BF16 %d, /proc/cpuinfo %d",
          has_avx512, cpuinfo);
    const char *want_first = has_amx && !amx_capped  ? "amx"
                             : has_avx512 && !capped ? "avx512"
                                                     : "fallback";
    CHECK(!strcmp(first, want_first), "first choice %s (AMX %d, AVX512_BF16 %d, FTUNE_ISA %s)",
          first, has_amx, has_avx512, cap ? cap : "unset");
    CHECK(cpu_set_level(keep < CPU_AVX512 ? keep : CPU_AVX512) == 1,
          "the fallback is always there");
    CHECK(!strcmp(gemm_bf16_isa(), "fallback"), "below avx512bf16: %s", gemm_bf16_isa());
    check_kernel(gemm_dispatch, "fallback");

    if (has_avx512) {
        cpu_set_level(CPU_AVX512BF16);
        CHECK(!strcmp(gemm_bf16_isa(), "avx512"), "level avx512bf16 gave %s", gemm_bf16_isa());
        check_kernel(gemm_dispatch, "avx512 (native)");
        /* too little scratch: the dispatcher goes down the table (here to the reference) */
        check_kernel(gemm_bf16_noscratch, "avx512 without scratch (the reference)");
        cpu_set_level(keep);
    } else {
        printf("avx512 (native): skipped (this CPU lacks AVX512_BF16)\n");
    }
    if (has_amx) {
        cpu_set_level(CPU_AMX);
        CHECK(!strcmp(gemm_bf16_isa(), "amx"), "level amx gave %s", gemm_bf16_isa());
        check_kernel(gemm_dispatch, "amx (native)");
        cpu_set_level(keep);
    } else {
        printf("amx (native): skipped (this CPU lacks AMX-BF16, or Linux did not grant it)\n");
    }

#ifdef HAVE_SIMDE
    check_kernel(gemm_emulated, "avx512 (SIMDe emulation)");
    check_kernel(gemm_amx_emulated, "amx (tile instructions modelled in C)");
    CHECK(emu_configured > 0, "the AMX kernel never loaded a tile configuration");
    CHECK(emulated_failed == 0, "the emulated kernel could not allocate %d times", emulated_failed);
#else
    printf("avx512 and amx (emulation): skipped (no simde headers; Debian: libsimde-dev)\n");
#endif

    /* again with the scalar conversions (this program with FTUNE_ISA=portable) */
    if (!cap) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            setenv("FTUNE_ISA", "portable", 1);
            execv("/proc/self/exe", argv);
            _exit(127);
        }
        int status = -1;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0,
              "the run with FTUNE_ISA=portable failed (status %d)", status);
    }
    return test_summary("gemm_bf16");
}
