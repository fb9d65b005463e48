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
