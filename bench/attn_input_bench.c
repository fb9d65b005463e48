/*
 * attn_input_bench.c: nanoseconds per token of the attention-input pass (src/ops/attn_input.c)
 * against the separate ops it replaced in model.c (a copy loop over the rows of qkv,
 * rmsnorm_forward per head for qk-norm, rope_forward on q and on k; backward rope_backward twice,
 * memset + rmsnorm_backward per head, a copy loop into dqkv), on the issue-7 shapes with
 * B x T = 4 x 512 tokens.
 *
 * One thread by default (OMP_NUM_THREADS overrides): on this shared 2-core machine a
 * single-threaded best-of-reps timing is the number that repeats; a whole-step timing is not.
 * Each figure is the best of `reps` (argv[1], default 20) runs after one warm-up; "warm" runs on
 * the same buffers each time (partly in L3), "cold" on the next of SETS sets of buffers, which
 * come from memory as a step's 30 layers' activations do: the cold column is the step's case.
 * "table" is rope_table for 512 positions, per token of the batch: paid once a step.
 *
 * Build and run (from the repository root, after `make`):
 *   gcc -O2 -fopenmp -Iinclude -Isrc bench/attn_input_bench.c build/libftune.a -lopenblas -lm \
 *       -o build/attn_input_bench && build/attn_input_bench 20
 */
#include "ops/ops.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct shape {
    const char *name;
    int N, H, Hkv, D, rot, qk_norm;
} shape;

typedef struct bufs {
    const shape *s;
    int ld;
    float *qkv, *q, *k, *v, *qpre, *kpre, *qr, *kr, *qw, *kw;
    float *dq, *dk, *dv, *dq2, *dk2, *dqkv, *inv_freq, *rc, *rs;
    int *pos;
} bufs;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *filled(size_t n) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((double)rand() / RAND_MAX - 0.5);
    return x;
}

/* model.c's forward before attn_input_forward */
static void old_forward(bufs *b) {
    const shape *s = b->s;
    const int N = s->N, H = s->H, Hkv = s->Hkv, D = s->D, HD = H * D, KD = Hkv * D;
    float *qdst = s->qk_norm ? b->qpre : b->q, *kdst = s->qk_norm ? b->kpre : b->k;
    for (int n = 0; n < N; n++) {
        const float *row = b->qkv + (size_t)n * b->ld;
        memcpy(qdst + (size_t)n * HD, row, HD * sizeof(float));
        memcpy(kdst + (size_t)n * KD, row + HD, KD * sizeof(float));
        memcpy(b->v + (size_t)n * KD, row + HD + KD, KD * sizeof(float));
    }
    if (s->qk_norm) {
        rmsnorm_forward(b->q, b->qr, b->qpre, b->qw, N * H, D, 1e-6f);
        rmsnorm_forward(b->k, b->kr, b->kpre, b->kw, N * Hkv, D, 1e-6f);
    }
    rope_forward(b->q, b->pos, b->inv_freq, N, H, D, s->rot, 1.0f);
    rope_forward(b->k, b->pos, b->inv_freq, N, Hkv, D, s->rot, 1.0f);
}

static void new_forward(bufs *b) {
    const shape *s = b->s;
    attn_input_forward(b->q, b->k, b->v, b->qr, b->kr, b->qkv, b->ld, s->qk_norm ? b->qw : NULL,
                       s->qk_norm ? b->kw : NULL, 1e-6f, b->pos, b->rc, b->rs, s->N, s->H, s->Hkv,
                       s->D, s->rot);
}

/* model.c's backward before attn_input_backward (rope_backward works in place on dq, dk: the
 * values drift over the repetitions, which changes nothing in the time) */
static void old_backward(bufs *b) {
    const shape *s = b->s;
    const int N = s->N, H = s->H, Hkv = s->Hkv, D = s->D, HD = H * D, KD = Hkv * D;
    rope_backward(b->dq, b->pos, b->inv_freq, N, H, D, s->rot, 1.0f);
    rope_backward(b->dk, b->pos, b->inv_freq, N, Hkv, D, s->rot, 1.0f);
    float *dq = b->dq, *dk = b->dk;
    if (s->qk_norm) {
        memset(b->dq2, 0, (size_t)N * HD * sizeof(float));
        memset(b->dk2, 0, (size_t)N * KD * sizeof(float));
        rmsnorm_backward(b->dq2, NULL, b->dq, b->qpre, b->qw, b->qr, N * H, D);
        rmsnorm_backward(b->dk2, NULL, b->dk, b->kpre, b->kw, b->kr, N * Hkv, D);
        dq = b->dq2, dk = b->dk2;
    }
    for (int n = 0; n < N; n++) {
        float *row = b->dqkv + (size_t)n * b->ld;
        memcpy(row, dq + (size_t)n * HD, HD * sizeof(float));
        memcpy(row + HD, dk + (size_t)n * KD, KD * sizeof(float));
        memcpy(row + HD + KD, b->dv + (size_t)n * KD, KD * sizeof(float));
    }
}

static void new_backward(bufs *b) {
    const shape *s = b->s;
    attn_input_backward(b->dqkv, b->dq, b->dk, b->dv, b->qkv, b->ld, b->qr, b->kr,
                        s->qk_norm ? b->qw : NULL, s->qk_norm ? b->kw : NULL, b->pos, b->rc, b->rs,
                        s->N, s->H, s->Hkv, s->D, s->rot);
}

/* the cos/sin table for positions 0..511, filled once a step (model_forward) */
static void table(bufs *b) { rope_table(b->rc, b->rs, 512, b->inv_freq, b->s->rot, 1.0f); }

/* Sets of buffers the cold timings rotate through: each set is 33 MB (SmolLM) to 130 MB (Qwen3),
 * so by the time a set comes round again the other sets have pushed it out of the 32 MB L3, as
 * the 30 layers of a step do. */
#define SETS 4

/* best ns per token of fn over reps runs: warm, the same set every time (its buffers partly in
 * L3), or cold, the next set each time (from memory, as in a training step) */
static double best_ns(void (*fn)(bufs *), bufs *b, int reps, int cold) {
    fn(b);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        bufs *x = cold ? &b[(r + 1) % SETS] : b;
        double t0 = now();
        fn(x);
        double t = now() - t0;
        if (t < best) best = t;
    }
    return best * 1e9 / b->s->N;
}

static void alloc_set(bufs *b, const shape *s) {
    size_t N = s->N, HD = (size_t)s->H * s->D, KD = (size_t)s->Hkv * s->D;
    b->s = s, b->ld = (int)(HD + 2 * KD);
    b->qkv = filled(N * b->ld), b->q = filled(N * HD), b->k = filled(N * KD);
    b->v = filled(N * KD), b->qpre = filled(N * HD), b->kpre = filled(N * KD);
    b->qr = filled(N * s->H), b->kr = filled(N * s->Hkv), b->qw = filled(s->D);
    b->kw = filled(s->D), b->dq = filled(N * HD), b->dk = filled(N * KD), b->dv = filled(N * KD);
    b->dq2 = filled(N * HD), b->dk2 = filled(N * KD), b->dqkv = filled(N * b->ld);
    b->inv_freq = malloc(sizeof(float) * s->rot / 2), b->pos = malloc(sizeof(int) * N);
    for (int j = 0; j < s->rot / 2; j++)
        b->inv_freq[j] = 1.0f / powf(10000.0f, (float)(2 * j) / (float)s->rot);
    for (size_t n = 0; n < N; n++)
        b->pos[n] = (int)(n % 512);
    b->rc = malloc(sizeof(float) * 512 * s->rot / 2);
    b->rs = malloc(sizeof(float) * 512 * s->rot / 2);
    rope_table(b->rc, b->rs, 512, b->inv_freq, s->rot, 1.0f);
}

static void free_set(bufs *b) {
    float *all[] = {b->qkv, b->q,    b->k,        b->v,  b->qpre, b->kpre, b->qr,
                    b->kr,  b->qw,   b->kw,       b->dq, b->dk,   b->dv,   b->dq2,
                    b->dk2, b->dqkv, b->inv_freq, b->rc, b->rs};
    for (size_t j = 0; j < sizeof all / sizeof all[0]; j++)
        free(all[j]);
    free(b->pos);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
    const shape shapes[] = {
        {"SmolLM-135M 4x512 (9/3 heads of 64)", 2048, 9, 3, 64, 64, 0},
        {"Qwen3-0.6B 4x512 (16/8 heads of 128, qk-norm)", 2048, 16, 8, 128, 128, 1},
    };
    printf("threads %d, best of %d; ns per token\n", omp_get_max_threads(), reps);
    printf("%-48s %5s %9s %9s %6s %9s %9s %6s %7s\n", "shape", "", "fwd old", "fwd new", "x",
           "bwd old", "bwd new", "x", "table");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        bufs b[SETS];
        for (int j = 0; j < SETS; j++)
            alloc_set(&b[j], &shapes[i]);
        double tb = best_ns(table, b, reps, 0);
        for (int cold = 0; cold < 2; cold++) {
            double fo = best_ns(old_forward, b, reps, cold),
                   fn = best_ns(new_forward, b, reps, cold);
            double bo = best_ns(old_backward, b, reps, cold),
                   bn = best_ns(new_backward, b, reps, cold);
            printf("%-48s %5s %9.0f %9.0f %6.2f %9.0f %9.0f %6.2f %7.0f\n", shapes[i].name,
                   cold ? "cold" : "warm", fo, fn, fo / fn, bo, bn, bo / bn, tb);
        }
        for (int j = 0; j < SETS; j++)
            free_set(&b[j]);
    }
    return 0;
}
