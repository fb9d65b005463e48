/*
 * cpu_test.c: the ISA level of base/cpu.h and every op's kernel choice.
 *  - The probed features and level against the kernel's own view of the CPU, /proc/cpuinfo's
 *    flags line (which also drops flags the OS does not enable): each feature bit, and the level
 *    computed from the flags, must agree. Skipped with a message where /proc/cpuinfo is missing.
 *  - At every level the CPU runs (cpu_set_level), each dispatching op chooses the kernel of that
 *    level and no better: qtensor (avx512 / avx2 / portable), gemm_bf16 (amx at amx, avx512 at
 *    avx512bf16), attention, swiglu, xent (avx2 / portable); a level above the CPU's is refused.
 *  - FTUNE_ISA, in child processes of this program (the level is read once): "portable" gives
 *    level portable, every op reports its portable kernel, and the outputs of swiglu, the LM-head
 *    loss and attention through the dispatching entry points are bit-identical to the portable
 *    *_ref functions' (so the portable code really ran, whatever the names say); "avx2" caps at
 *    avx2; "AVX2" (case) too; "sse9" caps nothing and cpu_check_env reports it, naming the value.
 */
#include "base/cpu.h"
#include "ops/gemm_bf16.h"
#include "ops/ops.h"
#include "ops/qtensor.h"
#include "test.h"

#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* 1 / 0 for each flag of /proc/cpuinfo's first "flags" line; -1 when there is none. */
static int cpuinfo_flags(const char *const *names, int n, int *has) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return -1;
    static char line[16384];
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f))
        if (!strncmp(line, "flags", 5)) {
            char *nl = strchr(line, '\n');
            if (nl) strcpy(nl, " "); /* so the last flag ends with a space too */
            for (int i = 0; i < n; i++) {
                char pat[64];
                snprintf(pat, sizeof pat, " %s ", names[i]);
                has[i] = strstr(line, pat) != NULL;
            }
            found = 1;
        }
    fclose(f);
    return found;
}

static void check_probe(void) {
    const char *names[] = {"avx2",     "fma",      "f16c",        "avx512f",  "avx512bw",
                           "avx512vl", "avx512dq", "avx512_bf16", "amx_tile", "amx_bf16"};
    int has[10];
    if (cpuinfo_flags(names, 10, has) < 0) {
        printf("probe: skipped (no /proc/cpuinfo flags)\n");
        return;
    }
    const cpu_features *f = cpu_probe();
    /* /proc/cpuinfo lists AVX / AVX-512 only when the OS saves their registers */
    int mine[10] = {f->avx2 && f->os_ymm,
                    f->fma,
                    f->f16c,
                    f->avx512f && f->os_zmm,
                    f->avx512bw && f->os_zmm,
                    f->avx512vl && f->os_zmm,
                    f->avx512dq && f->os_zmm,
                    f->avx512bf16 && f->os_zmm,
                    f->amx_tile && f->os_amx,
                    f->amx_bf16 && f->os_amx};
    for (int i = 0; i < 10; i++)
        CHECK(mine[i] == has[i], "%s: CPUID says %d, /proc/cpuinfo %d", names[i], mine[i], has[i]);
    cpu_isa want = CPU_PORTABLE;
    if (has[0] && has[1] && has[2]) {
        want = CPU_AVX2;
        if (has[3] && has[4] && has[5] && has[6]) want = has[7] ? CPU_AVX512BF16 : CPU_AVX512;
        /* AMX also needs Linux's grant of the tile data to this process, which /proc/cpuinfo
         * cannot say: on a CPU with both flags the grant is what decides */
        if (want == CPU_AVX512BF16 && has[8] && has[9] && f->amx_granted) want = CPU_AMX;
        if (has[8] && has[9] && !f->amx_granted)
            printf("probe: AMX present but not granted by the kernel (arch_prctl)\n");
    }
    CHECK(cpu_native_level() == want, "level %s, /proc/cpuinfo says %s",
          cpu_isa_name(cpu_native_level()), cpu_isa_name(want));
    printf("probe: %s (/proc/cpuinfo agrees)\n", cpu_isa_name(cpu_native_level()));
}

/* What each op must run at level l. */
static void check_ops_at(cpu_isa l) {
    const char *qt = l >= CPU_AVX512 ? "avx512" : l >= CPU_AVX2 ? "avx2" : "portable";
    const char *bf = l >= CPU_AMX ? "amx" : l >= CPU_AVX512BF16 ? "avx512" : "fallback";
    const char *v2 = l >= CPU_AVX2 ? "avx2" : "portable";
    const char *name = cpu_isa_name(l);
    CHECK(cpu_level() == l, "level %s, asked for %s", cpu_isa_name(cpu_level()), name);
    CHECK(!strcmp(qtensor_isa(), qt), "%s: qtensor runs %s, want %s", name, qtensor_isa(), qt);
    CHECK(!strcmp(gemm_bf16_isa(), bf), "%s: gemm_bf16 runs %s, want %s", name, gemm_bf16_isa(),
          bf);
    CHECK(!strcmp(swiglu_isa(), v2), "%s: swiglu runs %s", name, swiglu_isa());
    CHECK(!strcmp(xent_isa(), v2), "%s: xent runs %s", name, xent_isa());
    CHECK(!strcmp(attention_isa(9, 3, 64), l >= CPU_AVX512 ? "avx512" : v2),
          "%s: attention runs %s", name, attention_isa(9, 3, 64));
    CHECK(attention_bf16_active(9, 3, 64) == (l >= CPU_AMX), "%s: bf16 attention active %d", name,
          attention_bf16_active(9, 3, 64));
    /* a shape the tiled kernel does not take runs the portable code at any level */
    CHECK(!strcmp(attention_isa(4, 2, 10), "portable"), "%s: attention D=10 runs %s", name,
          attention_isa(4, 2, 10));
}

static void check_levels(void) {
    cpu_isa native = cpu_native_level(), keep = cpu_level();
    for (int l = 0; l < CPU_NLEVELS; l++) {
        int ok = cpu_set_level((cpu_isa)l);
        CHECK(ok == (l <= (int)native), "cpu_set_level(%s) gave %d on a %s CPU",
              cpu_isa_name((cpu_isa)l), ok, cpu_isa_name(native));
        if (ok) check_ops_at((cpu_isa)l);
    }
    CHECK(cpu_set_level(CPU_NLEVELS) == 0, "an unknown level accepted");
    cpu_set_level(keep);
    for (int l = 0; l < CPU_NLEVELS; l++)
        CHECK(cpu_isa_parse(cpu_isa_name((cpu_isa)l)) == l, "name of level %d", l);
    CHECK(cpu_isa_parse("AVX512") == CPU_AVX512, "names are case-insensitive");
    CHECK(cpu_isa_parse("sse9") == -1 && cpu_isa_parse("") == -1 && cpu_isa_parse(NULL) == -1,
          "unknown names");
}

static uint64_t rng = 99;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 4.0 - 2.0);
}

static float *rand_buf(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

/* The dispatching entry points give exactly what the portable *_ref functions give. */
static void check_runs_portable(void) {
    int N = 37, I = 75;
    float *g = rand_buf((size_t)N * I), *u = rand_buf((size_t)N * I), *d = rand_buf((size_t)N * I);
    float *o1 = malloc(sizeof(float) * N * I), *o2 = malloc(sizeof(float) * N * I);
    float *g1 = malloc(sizeof(float) * N * I), *g2 = malloc(sizeof(float) * N * I);
    float *u1 = malloc(sizeof(float) * N * I), *u2 = malloc(sizeof(float) * N * I);
    swiglu_forward(o1, g, u, N, I, I);
    swiglu_forward_ref(o2, g, u, N, I, I);
    CHECK(!memcmp(o1, o2, sizeof(float) * N * I), "swiglu_forward is not the portable one");
    swiglu_backward(g1, u1, d, g, u, N, I, I);
    swiglu_backward_ref(g2, u2, d, g, u, N, I, I);
    CHECK(!memcmp(g1, g2, sizeof(float) * N * I) && !memcmp(u1, u2, sizeof(float) * N * I),
          "swiglu_backward is not the portable one");

    int C = 24, V = 301, Nt = 9, tg[9] = {1, 5, -100, 300, 7, 0, 42, 42, 9};
    float *h = rand_buf((size_t)Nt * C), *W = rand_buf((size_t)V * C);
    float *dh1 = calloc((size_t)Nt * C, sizeof(float)),
          *dh2 = calloc((size_t)Nt * C, sizeof(float));
    float *sc = malloc(sizeof(float) * 4 * V);
    double l1 = lmhead_xent(dh1, h, W, tg, Nt, C, V, 0.5f, sc, 4);
    double l2 = lmhead_xent_ref(dh2, h, W, tg, Nt, C, V, 0.5f, sc, 4);
    CHECK(l1 == l2 && !memcmp(dh1, dh2, sizeof(float) * Nt * C),
          "lmhead_xent is not the portable one (%.17g vs %.17g)", l1, l2);

    int B = 2, T = 40, H = 4, Hkv = 2, D = 16;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D, nl = (size_t)B * H * T;
    float *q = rand_buf(nq), *k = rand_buf(nk), *v = rand_buf(nk), *dout = rand_buf(nq);
    float *out1 = malloc(4 * nq), *out2 = malloc(4 * nq), *lse1 = malloc(4 * nl),
          *lse2 = malloc(4 * nl);
    float *dq1 = malloc(4 * nq), *dq2 = malloc(4 * nq), *dk1 = malloc(4 * nk),
          *dk2 = malloc(4 * nk), *dv1 = malloc(4 * nk), *dv2 = malloc(4 * nk);
    size_t wsb = attention_workspace_bytes(B, T, H, Hkv, D, 0);
    CHECK(wsb == 0, "the portable attention asks for %zu bytes of workspace", wsb);
    char ws[64];
    attention_forward(out1, lse1, q, k, v, NULL, NULL, B, T, H, Hkv, D, 0, 0.25f, 0, ws, sizeof ws);
    attention_forward_ref(out2, lse2, q, k, v, NULL, NULL, B, T, H, Hkv, D, 0, 0.25f);
    CHECK(!memcmp(out1, out2, 4 * nq) && !memcmp(lse1, lse2, 4 * nl),
          "attention_forward is not the portable one");
    attention_backward(dq1, dk1, dv1, dout, q, k, v, out2, lse2, NULL, NULL, B, T, H, Hkv, D, 0,
                       0.25f, 0, ws, sizeof ws);
    attention_backward_ref(dq2, dk2, dv2, dout, q, k, v, out2, lse2, NULL, NULL, B, T, H, Hkv, D, 0,
                           0.25f);
    CHECK(!memcmp(dq1, dq2, 4 * nq) && !memcmp(dk1, dk2, 4 * nk) && !memcmp(dv1, dv2, 4 * nk),
          "attention_backward is not the portable one");
    free(g), free(u), free(d), free(o1), free(o2), free(g1), free(g2), free(u1), free(u2);
    free(h), free(W), free(dh1), free(dh2), free(sc);
    free(q), free(k), free(v), free(dout), free(out1), free(out2), free(lse1), free(lse2);
    free(dq1), free(dq2), free(dk1), free(dk2), free(dv1), free(dv2);
}

/* This program again with FTUNE_ISA=value, in "child" mode; its exit status. */
static int run_child(char **argv, const char *value) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("FTUNE_ISA", value, 1);
        char *args[] = {argv[0], "child", NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status = -1;
    if (pid <= 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* In the child: what FTUNE_ISA says must hold. */
static int child(void) {
    const char *cap = getenv("FTUNE_ISA");
    cpu_isa native = cpu_native_level();
    ft_error err = {0};
    int bad = cpu_isa_parse(cap) < 0;
    ft_status st = cpu_check_env(&err);
    if (bad) {
        CHECK(st == FT_ERR_INPUT && strstr(err.what, cap) && !strcmp(err.where, "FTUNE_ISA"),
              "FTUNE_ISA=%s: status %d, message \"%s\"", cap, st, err.what);
        CHECK(cpu_level() == native, "an invalid FTUNE_ISA capped the level to %s",
              cpu_isa_name(cpu_level()));
    } else {
        cpu_isa want = (cpu_isa)cpu_isa_parse(cap);
        if (want > native) want = native;
        CHECK(st == FT_OK, "FTUNE_ISA=%s reported: %s", cap, err.what);
        check_ops_at(want);
        if (want == CPU_PORTABLE) check_runs_portable();
    }
    return test_summary(cap);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "child")) return child();
    check_probe();
    check_levels();
    if (!getenv("FTUNE_ISA")) {
        const char *values[] = {"portable", "avx2", "AVX2", "sse9"};
        for (int i = 0; i < 4; i++)
            CHECK(run_child(argv, values[i]) == 0, "the run with FTUNE_ISA=%s failed", values[i]);
    } else {
        printf("FTUNE_ISA=%s: its own checks only\n", getenv("FTUNE_ISA"));
    }
    return test_summary("cpu");
}
