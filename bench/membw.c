/*
 * membw.c: the memory bandwidth this machine gives a few threads, STREAM-like (McCalpin's
 * STREAM kernels, written fresh): over arrays far larger than the caches (3 x 256 MB of fp32),
 *   read   s += a[i]            bytes: 4 n       (what decode does: weights read once)
 *   copy   c[i] = a[i]          bytes: 8 n
 *   triad  a[i] = b[i] + q c[i] bytes: 12 n
 * each the best of REPS timed passes, the arrays split statically across the OpenMP threads.
 * Written first (so pages are touched by the threads that use them). Output: one JSON line
 * {"threads", "bytes_per_array", "read_gbs", "copy_gbs", "triad_gbs"} (GB = 1e9 bytes).
 * Usage: membw [THREADS] (default 2). bench/bench_generate.py runs it.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { REPS = 6 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1) threads = 1;
    omp_set_num_threads(threads);
    const long n = 64L << 20; /* 64 Mi floats = 256 MB per array */
    float *a = aligned_alloc(64, n * 4), *b = aligned_alloc(64, n * 4),
          *c = aligned_alloc(64, n * 4);
    if (!a || !b || !c) {
        fprintf(stderr, "membw: out of memory\n");
        return 1;
    }
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++)
        a[i] = 1.0f, b[i] = 2.0f, c[i] = 0.5f;
    double best[3] = {1e30, 1e30, 1e30}, sink = 0;
    for (int r = 0; r < REPS; r++) {
        double t0 = now();
        float s = 0; /* simd: lanes of partial sums (a serial sum would time the add latency) */
#pragma omp parallel for simd schedule(static) reduction(+ : s)
        for (long i = 0; i < n; i++)
            s += a[i];
        double t1 = now();
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++)
            c[i] = a[i];
        double t2 = now();
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++)
            a[i] = b[i] + 0.5f * c[i];
        double t3 = now();
        sink += s;
        double t[3] = {t1 - t0, t2 - t1, t3 - t2};
        for (int k = 0; k < 3; k++)
            best[k] = t[k] < best[k] ? t[k] : best[k];
    }
    double bytes = (double)n * 4;
    printf("{\"threads\": %d, \"bytes_per_array\": %.0f, \"read_gbs\": %.2f, \"copy_gbs\": %.2f, "
           "\"triad_gbs\": %.2f, \"check\": %g}\n",
           threads, bytes, bytes / best[0] / 1e9, 2 * bytes / best[1] / 1e9,
           3 * bytes / best[2] / 1e9, sink > 0 ? 1.0 : 0.0);
    free(a), free(b), free(c);
    return 0;
}
