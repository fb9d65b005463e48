/*
 * attn_bench.c: milliseconds and GFLOP/s of the attention forward and backward (src/ops/) on the
 * shapes of issue 7, for each kernel version this CPU runs, so that a change can be compared with
 * the version it replaces on the same machine in the same run.
 *
 * FLOPs are counted as the issue counts them: forward B*H*T*(T+1)/2*D*4 (Q.K^T and P.V over the
 * causal triangle), backward 2.5 times that. Each timing is the best of `reps` runs (argv[1],
 * default 5) after one warm-up, because the machine is shared and the best run is the one least
 * disturbed by others. GF/cs is GFLOP per second of CPU time summed over the threads (per
 * core): the kernels' speed when the machine is oversubscribed, as it often is; it hides idle
 * threads, so the wall-clock columns are the ones to quote. Threads: OMP_NUM_THREADS (default:
 * all cores). argv[2], if given, runs only the shapes whose name contains it.
 *
 * Build and run (from the repository root, after `make`):
 *   gcc -O2 -fopenmp -Iinclude -Isrc bench/attn_bench.c build/libftune.a -lopenblas -lm \
 *       -o build/attn_bench && OMP_WAIT_POLICY=passive build/attn_bench 5
 */
#include "ops/attention_tiled.h"
#include "ops/ops.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*fwd_fn)(float *, float *, const float *, const float *, const float *, const int *,
                      const int *, int, int, int, int, int, int, float, void *, size_t);
typedef int (*bwd_fn)(float *, float *, float *, const float *, const float *, const float *,
                      const float *, const float *, const float *, const int *, const int *, int,
                      int, int, int, int, int, float, void *, size_t);

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

/* 64-byte aligned, as the model's activation arena is */
static float *abuf(size_t n) { return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64); }

static float *rand_buf(size_t n, unsigned *s, float amp) {
    float *x = abuf(n);
    for (size_t i = 0; i < n; i++) {
        *s = *s * 1664525u + 1013904223u;
        x[i] = amp * ((float)(*s >> 8) / (float)(1u << 24) * 2.0f - 1.0f);
    }
    return x;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    struct {
        const char *name;
        int B, T, H, Hkv, D;
    } shapes[] = {{"SmolLM-135M B1 T2048", 1, 2048, 9, 3, 64},
                  {"SmolLM-135M B4 T512", 4, 512, 9, 3, 64},
                  {"Qwen3-0.6B  B1 T2048", 1, 2048, 16, 8, 128}};
    struct {
        const char *name;
        fwd_fn f;
        bwd_fn b;
    } vers[] = {{"tiled", attention_forward_tiled, attention_backward_tiled}};
    printf("threads %d, best of %d\n", omp_get_max_threads(), reps);
    printf("%-22s %-8s %9s %9s %9s %9s %9s %9s\n", "shape", "kernel", "fwd ms", "fwd GF/s",
           "bwd ms", "bwd GF/s", "fwd GF/cs", "bwd GF/cs");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        if (argc > 2 && !strstr(shapes[s].name, argv[2])) continue;
        int B = shapes[s].B, T = shapes[s].T, H = shapes[s].H, Hkv = shapes[s].Hkv, D = shapes[s].D;
        size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D;
        unsigned seed = 1234;
        float *q = rand_buf(nq, &seed, 2), *k = rand_buf(nk, &seed, 1), *v = rand_buf(nk, &seed, 1),
              *dout = rand_buf(nq, &seed, 1);
        float *out = abuf(nq), *lse = abuf((size_t)B * H * T), *dq = abuf(nq), *dk = abuf(nk),
              *dv = abuf(nk);
        double flops = (double)B * H * T * (T + 1) / 2.0 * D * 4, scale = 1.0 / sqrt(D);
        for (size_t vi = 0; vi < sizeof vers / sizeof vers[0]; vi++) {
            if (!attention_avx2_usable(H, Hkv, D)) continue;
            double bf = 1e30, bb = 1e30, cf = 1e30, cb = 1e30;
            size_t wsb = attention_tiled_ws_bytes(B, T, H, Hkv, D);
            void *ws = malloc(wsb);
            for (int r = 0; r <= reps; r++) {
                double t0 = now(), c0 = cpu();
                vers[vi].f(out, lse, q, k, v, NULL, NULL, B, T, H, Hkv, D, 0, (float)scale, ws,
                           wsb);
                double t1 = now(), c1 = cpu();
                vers[vi].b(dq, dk, dv, dout, q, k, v, out, lse, NULL, NULL, B, T, H, Hkv, D, 0,
                           (float)scale, ws, wsb);
                double t2 = now(), c2 = cpu();
                if (r > 0 && t1 - t0 < bf) bf = t1 - t0;
                if (r > 0 && t2 - t1 < bb) bb = t2 - t1;
                if (r > 0 && c1 - c0 < cf) cf = c1 - c0;
                if (r > 0 && c2 - c1 < cb) cb = c2 - c1;
            }
            printf("%-22s %-8s %9.2f %9.1f %9.2f %9.1f %9.1f %9.1f\n", shapes[s].name,
                   vers[vi].name, bf * 1e3, flops / bf * 1e-9, bb * 1e3, 2.5 * flops / bb * 1e-9,
                   flops / cf * 1e-9, 2.5 * flops / cb * 1e-9);
            fflush(stdout);
            free(ws);
        }
        free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    }
    return 0;
}
