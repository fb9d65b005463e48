/*
 * matvec.c: decode's matrix-vector product alone, old way against new in the same process, so
 * that a shared machine's noise falls on both alike. Per format (f32, q8_0, q4_0, q4_k, q6_k)
 * and weight shape of the bench models (SmolLM-135M: 1536 x 576 and 576 x 1536; Qwen3-0.6B:
 * 3072 x 1024 and 1024 x 3072), enough copies of the matrix to pass ~128 MB of weights (far
 * past the caches, as a model's layers are), each pass going through all copies:
 *   rows  one qtensor_dot_row per weight row, rows split across the threads (decode before
 *         qmatvec: forward.c's loop of one-row kernel calls);
 *   qmatvec  four rows per kernel call, the next four rows prefetched, where the ISA has such
 *         a kernel (Q8_0, Q4_0, Q4_K); one row per call otherwise, so those ratios read ~1.
 * The two alternate for ROUNDS rounds; each reports its best round as weight GB/s (GB = 1e9
 * bytes of weights as stored per second), and the ratio qmatvec / rows.
 * Usage: matvec [THREADS] (default 1). Output: a line per case, then one JSON line.
 */
#include "ops/ggml_quantize.h"
#include "ops/ggml_quants.h"
#include "ops/qtensor.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ROUNDS = 5 };
#define TOTAL_BYTES (128.0 * 1e6)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void rows_way(float *out, const float *x, const qtensor *W) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < W->rows; o++)
        out[o] = qtensor_dot_row(W, o, x);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    omp_set_num_threads(threads < 1 ? 1 : threads);
    const struct {
        const char *name;
        qformat f;
        uint32_t type;
    } fmts[] = {{"f32", QF_F32, 0 /* GGML_TYPE_F32 */},
                {"q8_0", QF_Q8_0, GGML_TYPE_Q8_0},
                {"q4_0", QF_Q4_0, GGML_TYPE_Q4_0},
                {"q4_k", QF_Q4_K, GGML_TYPE_Q4_K},
                {"q6_k", QF_Q6_K, GGML_TYPE_Q6_K}};
    const int shapes[][2] = {{1536, 576}, {576, 1536}, {3072, 1024}, {1024, 3072}};
    printf("{\"threads\": %d, \"isa\": \"%s\", \"cases\": [", threads, qtensor_isa());
    fprintf(stderr, "%-5s %11s %10s %12s %7s\n", "fmt", "shape", "rows GB/s", "qmatvec GB/s",
            "ratio");
    int first = 1;
    for (size_t fi = 0; fi < sizeof fmts / sizeof fmts[0]; fi++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int R = shapes[si][0], C = shapes[si][1];
            const qformat_traits *tr = qformat_info(fmts[fi].f);
            if (C % tr->block_values) continue; /* 576 is no whole number of K-quant blocks */
            size_t n = (size_t)R * C;
            float *src = malloc(n * 4), *x = malloc((size_t)C * 4), *y = malloc((size_t)R * 4);
            srand(7);
            for (size_t i = 0; i < n; i++)
                src[i] = (float)rand() / RAND_MAX - 0.5f;
            for (int i = 0; i < C; i++)
                x[i] = (float)rand() / RAND_MAX - 0.5f;
            size_t bytes = n / (size_t)tr->block_values * tr->block_bytes;
            int copies = (int)(TOTAL_BYTES / (double)bytes) + 1;
            qtensor *W = calloc((size_t)copies, sizeof *W);
            char *mem = malloc(bytes * (size_t)copies);
            for (int c = 0; c < copies; c++) {
                char *d = mem + bytes * (size_t)c;
                if (fmts[fi].f == QF_F32)
                    memcpy(d, src, bytes);
                else
                    ggml_quantize(fmts[fi].type, src, d, n);
                W[c] = (qtensor){.fmt = fmts[fi].f,
                                 .rows = R,
                                 .cols = C,
                                 .blocksize = tr->block_values,
                                 .data = d};
            }
            double best[2] = {1e30, 1e30};
            for (int round = 0; round < ROUNDS; round++)
                for (int way = 0; way < 2; way++) {
                    double t0 = now();
                    for (int c = 0; c < copies; c++)
                        if (way == 0)
                            rows_way(y, x, &W[c]);
                        else
                            qmatvec(y, x, &W[c], NULL, 0);
                    double t = now() - t0;
                    if (t < best[way]) best[way] = t;
                }
            double tot = (double)bytes * copies, g0 = tot / best[0] / 1e9, g1 = tot / best[1] / 1e9;
            fprintf(stderr, "%-5s %5dx%-5d %10.2f %12.2f %7.2f\n", fmts[fi].name, R, C, g0, g1,
                    g1 / g0);
            printf("%s{\"fmt\": \"%s\", \"rows\": %d, \"cols\": %d, \"rows_gbs\": %.3f, "
                   "\"qmatvec_gbs\": %.3f}",
                   first ? "" : ", ", fmts[fi].name, R, C, g0, g1);
            first = 0;
            free(src), free(x), free(y), free(W), free(mem);
        }
    printf("]}\n");
    return 0;
}
