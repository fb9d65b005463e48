/*
 * test.h: the tiny harness of ftune's C unit tests. Each tests/<module>_test.c is a program:
 * it runs its checks, prints failures with file and line, and ends with the line
 * "N passed, N failed" (exit status 1 if any failed, or if none ran).
 */
#ifndef FT_TEST_H
#define FT_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed_, test_failed_;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_failed_++;                                                                        \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* CHECK, then leave the (void) test function when it failed: for setup steps (a temporary folder,
 * a model, a batch) without which the checks after it would test nothing or crash. */
#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        int ok_ = (cond) ? 1 : 0;                                                                  \
        CHECK(ok_, __VA_ARGS__);                                                                   \
        if (!ok_) return;                                                                          \
    } while (0)

/* |a - b| <= tol */
#define CHECK_NEAR(a, b, tol, what)                                                                \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        CHECK(fabs(a_ - b_) <= (tol), "%s: %.9g vs %.9g (tol %g)", what, a_, b_, (double)(tol));   \
    } while (0)

/* The whole file at path (malloc'd, *n bytes), or NULL when it cannot be opened. */
static inline unsigned char *test_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)sz + 1);
    *n = p ? fread(p, 1, (size_t)sz, f) : 0;
    fclose(f);
    return p;
}

#ifdef FT_BASE_CPU_H
/* check() once at each kernel level the CPU runs (portable, avx2, avx512: base/cpu.h's
 * cpu_set_level), a line per level ("skipped" where the CPU lacks it). Include base/cpu.h
 * before test.h to have it. */
static inline void test_each_isa(void (*check)(void)) {
    const char *isas[] = {"portable", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        if (!cpu_set_level((cpu_isa)cpu_isa_parse(isas[i]))) {
            printf("isa %s: skipped (this CPU lacks it)\n", isas[i]);
            continue;
        }
        int failed = test_failed_;
        check();
        printf("isa %s: ran (%s)\n", isas[i], test_failed_ == failed ? "ok" : "FAILURES");
    }
}
#endif

#ifdef FT_OPS_QTENSOR_H
/* qmatvec (four rows per kernel call) against qtensor_dot_row (one) at the current ISA: the same
 * values bit for bit, with beta 0 (out's NaN ignored) and beta 1 with a bias; x has t->cols
 * values. Returns 1 when they agree. */
static inline int test_qmatvec_exact(const qtensor *t, const float *x, const char *what) {
    int R = t->rows, bad = 0;
    float *y = malloc((size_t)R * sizeof(float)), *bias = malloc((size_t)R * sizeof(float));
    if (!y || !bias) {
        free(y), free(bias);
        CHECK(0, "%s: out of memory", what);
        return 0;
    }
    for (int beta = 0; beta <= 1; beta++) {
        for (int r = 0; r < R; r++)
            y[r] = beta ? 0.25f * (float)(r % 7) : NAN, bias[r] = 0.125f * (float)(r % 5) - 0.25f;
        qmatvec(y, x, t, beta ? bias : NULL, (float)beta);
        for (int r = 0; r < R && !bad; r++) {
            float d = qtensor_dot_row(t, r, x);
            float want = beta ? 1.0f * (0.25f * (float)(r % 7)) + d + bias[r] : 0 + d + 0;
            if (memcmp(&want, &y[r], sizeof want)) {
                CHECK(0, "%s: qmatvec beta %d row %d: %.9g, dot_row gives %.9g", what, beta, r,
                      y[r], want);
                bad = 1;
            }
        }
    }
    free(y), free(bias);
    CHECK(!bad, "%s: qmatvec equals qtensor_dot_row bit for bit", what);
    return !bad;
}
#endif

/* The last line of every test program. A program that ran no check at all fails: a test that
 * skipped everything (a setup that failed early, a loop over nothing) must not read as a pass. */
static inline int test_summary(const char *name) {
    if (test_passed_ + test_failed_ == 0) {
        fprintf(stderr, "%s: no check ran\n", name);
        test_failed_ = 1;
    }
    printf("%s: %d passed, %d failed\n", name, test_passed_, test_failed_);
    return test_failed_ ? 1 : 0;
}

#endif
