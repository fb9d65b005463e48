/*
 * gemm_peak.c: how fast can this machine multiply fp32 matrices? The yardstick of the training
 * benchmark (bench/bench_train.py divides a step's achieved GFLOP/s by the best figure here).
 *
 *     build/bench/gemm_peak [--backend openblas|dnnl|bf16] [--threads 1,2] [--seconds S] [--json
 * FILE]
 *
 * It times row-major sgemm at 2048^3 and at the shapes one LoRA training step runs (B x T = 2048
 * tokens through the SmolLM-135M and Qwen3-0.6B projections: forward inp . W^T as "NT", input
 * gradient dout . W as "NN", and the thin LoRA A product), with 1 and 2 threads. Each figure is the
 * best of three rounds, each round repeating the call for at least S seconds (default 0.3): on a
 * machine shared with other work the best round is the one closest to what the hardware can do.
 *
 * OpenBLAS picks its kernels when the library loads, from the CPU or from OPENBLAS_CORETYPE, so
 * one process measures one kernel family: bench/gemm_peaks.py runs this program once per core type
 * that the CPU can execute, and once with --backend dnnl (oneDNN's dnnl_sgemm, when libdnnl-dev was
 * present at build time; HAVE_DNNL). The program prints the kernel that ran
 * (openblas_get_corename(), openblas_get_config()) and, last, "GEMM peak: X GFLOP/s".
 *
 * --backend bf16 times ftune's own gemm_bf16 (src/ops/gemm_bf16.h, what `--dtype bf16` runs) on
 * the same shapes with bf16 operands: the AVX512_BF16 kernel where the CPU has it, else the
 * fallback that widens to fp32 for OpenBLAS's sgemm (so slower than sgemm: bf16 saves memory
 * there, not time). gemm_peaks.py does not run it, so it never becomes the fp32 yardstick.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/gemm_bf16.h"

#include <cblas.h>
#undef I
#include <omp.h>
#ifdef HAVE_DNNL
#include <dnnl.h>
#endif

/* OpenBLAS extensions, declared here because not every cblas.h declares them. */
char *openblas_get_corename(void);
char *openblas_get_config(void);
void openblas_set_num_threads(int);

typedef struct {
    const char *name; /* what the product is in a training step */
    int M, N, K;      /* C (M, N) = op(A) (M, K) . op(B) (K, N) */
    int transB;       /* 1: B is stored (N, K), the nn.Linear weight layout */
} shape;

/* M = 2048 tokens (B x T = 4 x 512 or 1 x 2048). Weight sizes from the models' config.json. */
static const shape SHAPES[] = {
    {"square 2048^3", 2048, 2048, 2048, 0},    {"smollm gate/up fwd", 2048, 1536, 576, 1},
    {"smollm down fwd", 2048, 576, 1536, 1},   {"smollm gate/up dX", 2048, 576, 1536, 0},
    {"smollm q/o fwd", 2048, 576, 576, 1},     {"smollm k/v fwd", 2048, 192, 576, 1},
    {"smollm lm head 8k", 2048, 8192, 576, 1}, {"qwen3 gate/up fwd", 2048, 3072, 1024, 1},
    {"qwen3 down fwd", 2048, 1024, 3072, 1},   {"qwen3 q fwd", 2048, 2048, 1024, 1},
    {"lora A r16 fwd", 2048, 16, 576, 1},
};
#define NSHAPES (int)(sizeof SHAPES / sizeof SHAPES[0])

static int use_dnnl, use_bf16;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void set_threads(int n) {
    if (use_bf16) /* its own kernel and conversions run on OpenMP, the fallback's sgemm not */
        omp_set_num_threads(n), openblas_set_num_threads(n);
    else if (use_dnnl)
        omp_set_num_threads(n);
    else
        openblas_set_num_threads(n);
}

/* The bf16 operands (bf16 mode): A and B rounded once per shape. */
static uint16_t *A16, *B16;
static void *ws; /* gemm_bf16's scratch (gemm_bf16_scratch_bytes), allocated with A16 */
static size_t wsb;

static int sgemm(const shape *s, const float *A, const float *B, float *C) {
    int ldb = s->transB ? s->K : s->N;
    if (use_bf16) {
        gemm_bf16(s->transB, s->M, s->N, s->K, A16, s->K, B16, ldb, 0.0f, C, s->N, ws, wsb);
        return 0;
    }
#ifdef HAVE_DNNL
    if (use_dnnl)
        return dnnl_sgemm('N', s->transB ? 'T' : 'N', s->M, s->N, s->K, 1.0f, A, s->K, B, ldb, 0.0f,
                          C, s->N) == dnnl_success
                   ? 0
                   : -1;
#endif
    cblas_sgemm(CblasRowMajor, CblasNoTrans, s->transB ? CblasTrans : CblasNoTrans, s->M, s->N,
                s->K, 1.0f, A, s->K, B, ldb, 0.0f, C, s->N);
    return 0;
}

/* Best GFLOP/s of three rounds of at least `seconds` each; negative on a backend error. */
static double time_shape(const shape *s, double seconds) {
    size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
    float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *C = malloc(nc * sizeof *C);
    if (!A || !B || !C) {
        fprintf(stderr, "gemm_peak: out of memory for %s\n", s->name);
        exit(1);
    }
    /* Small values that stay normal: denormals would make any kernel slow. */
    for (size_t i = 0; i < na; i++)
        A[i] = (float)((i * 7 % 13) - 6) * 0.01f;
    for (size_t i = 0; i < nb; i++)
        B[i] = (float)((i * 5 % 11) - 5) * 0.01f;
    if (use_bf16) {
        A16 = malloc(na * sizeof *A16), B16 = malloc(nb * sizeof *B16);
        wsb = gemm_bf16_scratch_bytes(s->M, s->N, s->K);
        ws = malloc(wsb ? wsb : 1);
        if (!A16 || !B16 || !ws) {
            fprintf(stderr, "gemm_peak: out of memory for %s\n", s->name);
            exit(1);
        }
        bf16_round_rows(A16, na, A, na, 1, (int)na);
        bf16_round_rows(B16, nb, B, nb, 1, (int)nb);
    }
    double best = 0, flops = 2.0 * s->M * s->N * s->K;
    if (sgemm(s, A, B, C)) best = -1; /* warm-up: thread start, page faults, packing buffers */
    for (int round = 0; round < 3 && best >= 0; round++) {
        int reps = 0;
        double t0 = now(), t;
        do {
            sgemm(s, A, B, C);
            reps++;
        } while ((t = now() - t0) < seconds);
        double g = flops * reps / t / 1e9;
        if (g > best) best = g;
    }
    free(A);
    free(B);
    free(C);
    free(A16), free(B16), free(ws);
    A16 = B16 = NULL, ws = NULL;
    return best;
}

int main(int argc, char **argv) {
    const char *json = NULL, *threads_arg = "1,2";
    double seconds = 0.3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            const char *b = argv[++i];
            if (!strcmp(b, "bf16")) {
                use_bf16 = 1;
            } else if (!strcmp(b, "dnnl")) {
#ifdef HAVE_DNNL
                use_dnnl = 1;
#else
                fprintf(stderr, "gemm_peak: built without oneDNN (install libdnnl-dev and "
                                "rebuild with make bench-gemm)\n");
                return 2;
#endif
            } else if (strcmp(b, "openblas")) {
                fprintf(stderr, "gemm_peak: unknown backend '%s' (openblas, dnnl or bf16)\n", b);
                return 2;
            }
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads_arg = argv[++i];
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: %s [--backend openblas|dnnl|bf16] [--threads 1,2] [--seconds S] "
                    "[--json FILE]\n",
                    argv[0]);
            return 2;
        }
    }
    int threads[8], nthreads = 0;
    for (const char *p = threads_arg; *p && nthreads < 8;) {
        threads[nthreads++] = atoi(p);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }

    char backend[160];
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    if (use_bf16) {
        snprintf(backend, sizeof backend, "ftune gemm_bf16 %s (OpenBLAS core %s)", gemm_bf16_isa(),
                 openblas_get_corename());
    } else if (use_dnnl) {
#ifdef HAVE_DNNL
        const dnnl_version_t *v = dnnl_version();
        snprintf(backend, sizeof backend, "oneDNN %d.%d.%d dnnl_sgemm (cpu runtime %u)", v->major,
                 v->minor, v->patch, v->cpu_runtime);
#endif
    } else {
        snprintf(backend, sizeof backend, "OpenBLAS core %s (OPENBLAS_CORETYPE=%s)",
                 openblas_get_corename(), coretype ? coretype : "unset");
    }
    printf("backend: %s\n", backend);
    if (!use_dnnl) printf("config:  %s\n", openblas_get_config());

    double res[8][NSHAPES], peak = 0;
    int peak_t = 0, peak_s = 0;
    printf("%-20s %16s", "GFLOP/s", "M x N x K");
    for (int t = 0; t < nthreads; t++)
        printf("  %6d thr", threads[t]);
    printf("\n");
    for (int s = 0; s < NSHAPES; s++) {
        char dims[48];
        snprintf(dims, sizeof dims, "%dx%dx%d", SHAPES[s].M, SHAPES[s].N, SHAPES[s].K);
        printf("%-20s %16s", SHAPES[s].name, dims);
        fflush(stdout);
        for (int t = 0; t < nthreads; t++) {
            set_threads(threads[t]);
            res[t][s] = time_shape(&SHAPES[s], seconds);
            if (res[t][s] < 0) {
                fprintf(stderr, "\ngemm_peak: the %s sgemm failed on %s\n", backend,
                        SHAPES[s].name);
                return 1;
            }
            printf("  %10.1f", res[t][s]);
            fflush(stdout);
            if (res[t][s] > peak) peak = res[t][s], peak_t = threads[t], peak_s = s;
        }
        printf("\n");
    }
    printf("%sGEMM peak: %.1f GFLOP/s (%s, %s, %d threads)\n", use_bf16 ? "bf16 " : "", peak,
           backend, SHAPES[peak_s].name, peak_t);

    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f,
                "{\"backend\": \"%s\", \"kind\": \"%s\", \"corename\": \"%s\", "
                "\"coretype_env\": %s%s%s, \"config\": \"%s\", \"peak_gflops\": %.2f, "
                "\"peak_threads\": %d, \"peak_shape\": \"%s\", \"results\": [",
                backend,
                use_bf16   ? "bf16"
                : use_dnnl ? "dnnl"
                           : "openblas",
                use_dnnl ? "" : openblas_get_corename(), coretype ? "\"" : "",
                coretype ? coretype : "null", coretype ? "\"" : "",
                use_dnnl ? "" : openblas_get_config(), peak, peak_t, SHAPES[peak_s].name);
        for (int s = 0; s < NSHAPES; s++)
            for (int t = 0; t < nthreads; t++)
                fprintf(f,
                        "%s{\"shape\": \"%s\", \"M\": %d, \"N\": %d, \"K\": %d, \"transB\": %d, "
                        "\"threads\": %d, \"gflops\": %.2f}",
                        s || t ? ", " : "", SHAPES[s].name, SHAPES[s].M, SHAPES[s].N, SHAPES[s].K,
                        SHAPES[s].transB, threads[t], res[t][s]);
        fprintf(f, "]}\n");
        fclose(f);
    }
    return 0;
}
