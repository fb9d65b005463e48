/* qtensor_test.c: frozen-weight formats and the dequantizing matmuls, on every kernel set this
 * CPU runs (portable, avx2, avx512; the others are reported as skipped).
 *
 * For every format (F32, BF16, F16, Q8_0, NF4/FP4 at block sizes 64/128/256 with and without
 * double quantization) on shapes that are not multiples of the block or panel sizes:
 *  - the portable dequantization equals the independent definition (quant4_dequantize with the
 *    stored or double-dequantized absmax; for F16/BF16/Q8_0 the error bound of the format);
 *  - every ISA's qtensor_dequant_rows equals the portable one bit for bit, over ranges that start
 *    and end inside blocks (each value is one conversion and at most one multiply, so there is
 *    no rounding freedom, FMA or not);
 *  - qtensor_dot_row, qmatmul_forward (beta 0/1, bias, ld strides past the width, N 1/3/37) and
 *    qmatmul_backward_input equal "dequantize the whole matrix, multiply in double" within 1e-5
 *    of the largest |value| of the output (fp32 sums of at most a few hundred terms, in another
 *    order, differ by far less; a wrong block, row or scale is off by O(1)).
 *  - qmatvec (decode's four-rows-per-call product) equals qtensor_dot_row bit for bit.
 *  - under QC_BF16 (--dtype bf16), qmatmul_forward and qmatmul_backward_input, on every gemm_bf16
 *    kernel this CPU runs, equal gemm_bf16_ref over (bf16(input), bf16(dequantized W)) within
 *    1e-6 of the largest |value| of the output: both sum the same exact products in fp32, in
 *    another order (the reference in double), so they differ by a few fp32 roundings of the
 *    partial sums; skipping either rounding moves the result by about 2^-9 relative, which the
 *    test also requires of the QC_BF16 result against the QC_F32 one (> 1e-4).
 * Bad input: Q8_0 with cols % 32 != 0 and a 4-bit block size bitsandbytes lacks return -1.
 *
 * Also a tool for tests/peers/test_q8_0.py:
 *   qtensor_test --quantize FMT IN.f32 ROWS COLS OUT.bin   (raw fp32 in, the data bytes out)
 *   qtensor_test --q8-0 IN.f32 ROWS COLS OUT.bin            (= --quantize q8_0 ...)
 */
#include "base/cpu.h"
#include "ops/gemm_bf16.h"
#include "ops/qtensor.h"
#include "ops/quant.h"
#include "test.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static uint32_t rng = 12345;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

/* Weights with rows of very different scales (so blocks' absmax differ), and one zero row. */
static void fill_weights(float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        float scale = r == 3 ? 0.0f : 0.02f * (1 + r % 7);
        for (int c = 0; c < cols; c++)
            x[(size_t)r * cols + c] = scale * frand();
    }
}

/* The largest |a - b| over n values, in units of the largest |b| (1 when all b are 0). */
static double rel_err(const float *a, size_t lda, const double *b, int rows, int cols) {
    double m = 0, e = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double x = b[(size_t)r * cols + c];
            m = fabs(x) > m ? fabs(x) : m;
            double d = fabs(a[(size_t)r * lda + c] - x);
            e = d > e ? d : e;
        }
    return e / (m > 0 ? m : 1);
}

/* The largest |a - b| in units of the largest |b| (1 when all b are 0), fp32 both. */
static double rel_err_f(const float *a, size_t lda, const float *b, size_t ldb, int rows,
                        int cols) {
    double m = 0, e = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double x = b[(size_t)r * ldb + c];
            m = fabs(x) > m ? fabs(x) : m;
            double d = fabs(a[(size_t)r * lda + c] - x);
            e = d > e ? d : e;
        }
    return e / (m > 0 ? m : 1);
}

/* qmatmul_forward / qmatmul_backward_input with their scratch (qmatmul_scratch_bytes) allocated
 * here, as the model carves it from its activations; a matmul that reports its scratch too
 * small fails the test. */
static void q_fwd(float *out, int ldo, const float *inp, int ldi, const qtensor *W,
                  const float *bias, int N, float beta) {
    size_t n = qmatmul_scratch_bytes(W, N);
    void *ws = n ? malloc(n) : NULL;
    int rc = qmatmul_forward(out, ldo, inp, ldi, W, bias, N, beta, ws, n);
    CHECK(rc == 0, "qmatmul_forward: scratch of %zu bytes too small", n);
    free(ws);
}

static void q_bwd(float *dinp, int ldi, const float *dout, int ldo, const qtensor *W, int N) {
    size_t n = qmatmul_scratch_bytes(W, N);
    void *ws = n ? malloc(n) : NULL;
    int rc = qmatmul_backward_input(dinp, ldi, dout, ldo, W, N, ws, n);
    CHECK(rc == 0, "qmatmul_backward_input: scratch of %zu bytes too small", n);
    free(ws);
}

/* QC_BF16 matmuls through t (full: its portable dequantization) against gemm_bf16_ref over the
 * rounded operands, for N input rows, on the current qtensor and gemm_bf16 kernels. */
static void check_bf16_matmuls(qtensor *t, const float *full, int N, int variant0,
                               const char *what) {
    int rows = t->rows, cols = t->cols, ldi = cols + 3, ldo = rows + 5;
    size_t nin = (size_t)N * ldi, nout = (size_t)N * ldo;
    uint16_t *wr = malloc((size_t)rows * cols * sizeof(uint16_t));
    uint16_t *xr = malloc(nin * sizeof(uint16_t)), *dr = malloc(nout * sizeof(uint16_t));
    float *inp = malloc(nin * sizeof(float)), *out = malloc(nout * sizeof(float));
    float *want = malloc((nin > nout ? nin : nout) * sizeof(float));
    float *f32 = malloc((nin > nout ? nin : nout) * sizeof(float));
    float *bias = malloc((size_t)rows * sizeof(float));
    bf16_round_rows(wr, (size_t)cols, full, (size_t)cols, rows, cols);
    for (int variant = variant0; variant < 3; variant++) { /* beta 0; beta 1; beta 1 + bias */
        float beta = variant == 0 ? 0.0f : 1.0f;
        int use_bias = variant == 2;
        for (size_t i = 0; i < nin; i++)
            inp[i] = frand();
        for (size_t i = 0; i < nout; i++)
            out[i] = frand();
        for (int r = 0; r < rows; r++)
            bias[r] = frand();

        /* forward: want = beta*out + bf16(inp) . bf16(W)^T, + bias in fp32 */
        bf16_round_rows(xr, (size_t)ldi, inp, (size_t)ldi, N, cols);
        memcpy(want, out, nout * sizeof(float));
        memcpy(f32, out, nout * sizeof(float));
        gemm_bf16_ref(1, N, rows, cols, xr, ldi, wr, cols, beta, want, ldo);
        if (use_bias)
            for (int n = 0; n < N; n++)
                for (int r = 0; r < rows; r++)
                    want[(size_t)n * ldo + r] += bias[r];
        if (beta == 0) /* beta 0 must ignore what out held, NaN included */
            for (int n = 0; n < N; n++)
                out[(size_t)n * ldo] = NAN;
        float pad = out[rows];
        t->compute = QC_BF16;
        q_fwd(out, ldo, inp, ldi, t, use_bias ? bias : NULL, N, beta);
        double e = rel_err_f(out, ldo, want, ldo, N, rows);
        CHECK(e <= 1e-6, "%s bf16 (%s) forward N %d beta %g bias %d: relative error %.3g", what,
              gemm_bf16_isa(), N, beta, use_bias, e);
        CHECK(out[rows] == pad, "%s bf16: forward wrote past the width", what);
        t->compute = QC_F32;
        q_fwd(f32, ldo, inp, ldi, t, use_bias ? bias : NULL, N, beta);
        e = rel_err_f(f32, ldo, want, ldo, N, rows);
        CHECK(e > 1e-4, "%s bf16 forward N %d: the fp32 product is as close (%.3g)", what, N, e);

        /* backward: want = inp + bf16(dout) . bf16(W), dout = out read with stride ldo */
        bf16_round_rows(dr, (size_t)ldo, out, (size_t)ldo, N, rows);
        memcpy(want, inp, nin * sizeof(float));
        memcpy(f32, inp, nin * sizeof(float));
        gemm_bf16_ref(0, N, cols, rows, dr, ldo, wr, cols, 1.0f, want, ldi);
        pad = inp[cols];
        t->compute = QC_BF16;
        q_bwd(inp, ldi, out, ldo, t, N);
        e = rel_err_f(inp, ldi, want, ldi, N, cols);
        CHECK(e <= 1e-6, "%s bf16 (%s) backward N %d: relative error %.3g", what, gemm_bf16_isa(),
              N, e);
        CHECK(inp[cols] == pad, "%s bf16: backward wrote past the width", what);
        t->compute = QC_F32;
        q_bwd(f32, ldi, out, ldo, t, N);
        e = rel_err_f(f32, ldi, want, ldi, N, cols);
        CHECK(e > 1e-4, "%s bf16 backward N %d: the fp32 product is as close (%.3g)", what, N, e);
    }
    free(wr), free(xr), free(dr), free(inp), free(out), free(want), free(f32), free(bias);
}

/* check_bf16_matmuls on every gemm_bf16 kernel this CPU runs: the fallback at the current ISA
 * level (no higher than avx512), the AVX512_BF16 one at level avx512bf16 where the CPU has it
 * (the qtensor kernels of that level with it: their dequantization is bit-identical). */
static void check_bf16_all_kernels(qtensor *t, const float *full, const int *Ns, int nN,
                                   int variant0, const char *what) {
    cpu_isa keep = cpu_level();
    for (int k = 0; k < 2; k++) {
        cpu_isa l = k == 0 ? (keep < CPU_AVX512 ? keep : CPU_AVX512) : CPU_AVX512BF16;
        if (k == 1 && keep < CPU_AVX512) continue;
        if (!cpu_set_level(l)) continue;
        for (int i = 0; i < nN; i++)
            check_bf16_matmuls(t, full, Ns[i], variant0, what);
    }
    cpu_set_level(keep);
}

/* Independent check of the portable dequantization `full` against the format's definition. */
static void check_reference(const qtensor *t, const float *x, const float *full, const char *what) {
    size_t n = (size_t)t->rows * t->cols;
    if (t->fmt == QF_NF4 || t->fmt == QF_FP4) {
        size_t nb = quant4_blocks(n, t->blocksize);
        float *absmax = malloc(nb * sizeof(float)), *y = malloc(n * sizeof(float));
        if (t->absmax)
            memcpy(absmax, t->absmax, nb * sizeof(float));
        else
            quant4_double_dequant(t->absmax_q, t->nested_absmax, t->offset, nb, absmax);
        quant4_dequantize(t->fmt == QF_NF4 ? QUANT_NF4 : QUANT_FP4, t->data, absmax, n,
                          t->blocksize, y);
        CHECK(!memcmp(y, full, n * sizeof(float)), "%s: dequant_ref != quant4_dequantize", what);
        free(absmax), free(y);
        return;
    }
    /* F32 exact; BF16 / F16: round to nearest keeps the error within half an ulp, 2^-8 / 2^-11
     * relative (half subnormals: 2^-25 absolute); Q8_0: half a step d = amax/127, plus d's own f16
     * rounding times 127 */
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = 0;
        if (t->fmt == QF_BF16) tol = fabs(x[i]) * 0x1p-8;
        if (t->fmt == QF_F16) tol = fmax(fabs(x[i]) * 0x1p-11, 0x1p-25); /* subnormals */
        if (t->fmt == QF_Q8_0) {
            size_t b0 = i / 32 * 32;
            double amax = 0;
            for (size_t j = b0; j < b0 + 32; j++)
                amax = fmax(amax, fabs(x[j]));
            tol = amax / 127 * 0.5 + amax * 0x1p-11 + 1e-12;
        }
        if (fabs(full[i] - x[i]) > tol) bad++;
    }
    CHECK(bad == 0, "%s: %d values outside the format's error bound", what, bad);
}

/* Everything about one quantized matrix under the current ISA. */
static void check_tensor(qformat f, int rows, int cols, int bs, int dq) {
    char what[128];
    snprintf(what, sizeof what, "%s %s %dx%d bs %d%s", qtensor_isa(), qformat_info(f)->name, rows,
             cols, bs, dq ? " dq" : "");
    size_t n = (size_t)rows * cols;
    float *x = malloc(n * sizeof(float)), *full = malloc(n * sizeof(float));
    float *part = malloc(n * sizeof(float));
    fill_weights(x, rows, cols);
    qtensor t;
    int rc = qtensor_quantize(&t, f, x, rows, cols, bs, dq);
    CHECK(rc == 0, "%s: qtensor_quantize failed", what);
    if (rc) {
        free(x), free(full), free(part);
        return;
    }
    CHECK(qtensor_bytes(&t) > 0, "%s: no bytes", what);
    qformat_info(f)->dequant_ref(&t, 0, rows, full);
    check_reference(&t, x, full, what);

    /* dequant_rows: bit-identical to the reference, for ranges starting and ending anywhere */
    int ranges[][2] = {{0, rows}, {1, rows - 4}, {rows - 1, 1}, {rows / 3, rows / 2}, {5, 0}};
    for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++) {
        int r0 = ranges[k][0], m = ranges[k][1];
        part[0] = -7.0f; /* an empty range writes nothing */
        qtensor_dequant_rows(&t, r0, m, part);
        if (m == 0)
            CHECK(part[0] == -7.0f, "%s: an empty range wrote", what);
        else
            CHECK(!memcmp(part, full + (size_t)r0 * cols, (size_t)m * cols * sizeof(float)),
                  "%s: dequant_rows(%d, %d) differs from the portable reference", what, r0, m);
    }

    /* dot_row against the dequantized row, in double */
    float *xin = malloc((size_t)cols * sizeof(float));
    for (int c = 0; c < cols; c++)
        xin[c] = frand();
    double *want = malloc((size_t)rows * sizeof(double));
    float *got = malloc((size_t)rows * sizeof(float));
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += (double)full[(size_t)r * cols + c] * xin[c];
        want[r] = s;
        got[r] = qtensor_dot_row(&t, r, xin);
    }
    double e = rel_err(got, 1, want, rows, 1);
    CHECK(e <= 1e-5, "%s: dot_row relative error %.3g", what, e);
    test_qmatvec_exact(&t, xin, what);
    free(xin), free(want), free(got);

    /* qmatmul_forward / backward_input with strides past the width */
    int Ns[] = {1, 3, 37}, big = rows > 1000; /* big: only what crosses panels, N 37 */
    for (int ni = big ? 2 : 0; ni < 3; ni++)
        for (int variant = 0; variant < 3; variant += big ? 2 : 1) {
            int N = Ns[ni], ldi = cols + 3, ldo = rows + 5;
            float beta = variant == 0 ? 0.0f : 1.0f;
            int use_bias = variant == 2;
            float *inp = malloc((size_t)N * ldi * sizeof(float));
            float *out = malloc((size_t)N * ldo * sizeof(float));
            float *bias = malloc((size_t)rows * sizeof(float));
            double *ref = malloc((size_t)N * (rows > cols ? rows : cols) * sizeof(double));
            for (size_t i = 0; i < (size_t)N * ldi; i++)
                inp[i] = frand();
            for (size_t i = 0; i < (size_t)N * ldo; i++)
                out[i] = frand();
            for (int r = 0; r < rows; r++)
                bias[r] = frand();
            for (int nn = 0; nn < N; nn++)
                for (int r = 0; r < rows; r++) {
                    double s = beta * out[(size_t)nn * ldo + r] + (use_bias ? bias[r] : 0);
                    for (int c = 0; c < cols; c++)
                        s += (double)inp[(size_t)nn * ldi + c] * full[(size_t)r * cols + c];
                    ref[(size_t)nn * rows + r] = s;
                }
            if (beta == 0) /* beta 0 must ignore what out held, NaN included */
                for (int nn = 0; nn < N; nn++)
                    out[(size_t)nn * ldo] = NAN;
            float pad = out[rows]; /* the first value past the width of row 0 */
            q_fwd(out, ldo, inp, ldi, &t, use_bias ? bias : NULL, N, beta);
            e = rel_err(out, ldo, ref, N, rows);
            CHECK(e <= 1e-5, "%s: forward N %d beta %g bias %d: relative error %.3g", what, N, beta,
                  use_bias, e);
            CHECK(out[rows] == pad, "%s: forward wrote past the width", what);

            /* backward: dinp (N, cols) += dout (N, rows) . W, dout read with stride ldo */
            for (int nn = 0; nn < N; nn++)
                for (int c = 0; c < cols; c++) {
                    double s = inp[(size_t)nn * ldi + c];
                    for (int r = 0; r < rows; r++)
                        s += (double)out[(size_t)nn * ldo + r] * full[(size_t)r * cols + c];
                    ref[(size_t)nn * cols + c] = s;
                }
            pad = inp[cols];
            q_bwd(inp, ldi, out, ldo, &t, N);
            e = rel_err(inp, ldi, ref, N, cols);
            CHECK(e <= 1e-5, "%s: backward N %d: relative error %.3g", what, N, e);
            CHECK(inp[cols] == pad, "%s: backward wrote past the width", what);
            free(inp), free(out), free(bias), free(ref);
        }
    int bf16_Ns[] = {1, 2, 3, 37};
    if (big)
        check_bf16_all_kernels(&t, full, bf16_Ns + 3, 1, 0, what);
    else
        check_bf16_all_kernels(&t, full, bf16_Ns, 4, 0, what);
    qtensor_free(&t);
    CHECK(t.data == NULL && t.owned == NULL, "%s: qtensor_free left pointers", what);
    free(x), free(full), free(part);
}

static void check_all_formats(void) {
    const int bss[] = {64, 128, 256};
    for (int f = 0; f < QF_COUNT; f++) {
        if (qformat_info(f)->stored_only) continue; /* GGUF-only: gguf_quant_kernels_test.c */
        int four = f == QF_NF4 || f == QF_FP4;
        int colss[] = {96, f == QF_Q8_0 ? 224 : 200, f == QF_Q8_0 ? 32 : 75};
        for (int ci = 0; ci < 3; ci++)
            for (int bi = 0; bi < (four ? 3 : 1); bi++)
                for (int dq = 0; dq <= four; dq++) {
                    check_tensor(f, 77, colss[ci], four ? bss[bi] : 0, dq);
                }
        /* more rows than one panel (1.5 MB of fp32 = 1966 rows of 200), a partial last one */
        check_tensor(f, 2100, f == QF_Q8_0 ? 192 : 200, four ? 128 : 0, 0);
    }
}

/* QC_BF16 over more input rows than one rounded chunk (qtensor.c rounds at least 256 rows, 4 MB
 * of bf16, at a time: 256 rows of a width of 8192) and over several panels of W (1.5 MB of fp32:
 * 48 rows of 8192, 6144 of 64): the forward through a wide W (61 x 8192), the backward through a
 * tall one (8192 x 64), 260 input rows, beta 1 with bias. One format per source of panels:
 * F32 rounded from its data, BF16 read in place, NF4 dequantized first (the others share that). */
static void check_bf16_chunks(void) {
    const int shapes[][2] = {{61, 8192}, {8192, 64}}, Ns[] = {260};
    const qformat fmts[] = {QF_F32, QF_BF16, QF_NF4};
    for (int si = 0; si < 2; si++)
        for (int fi = 0; fi < 3; fi++) {
            int rows = shapes[si][0], cols = shapes[si][1];
            qformat f = fmts[fi];
            float *x = malloc((size_t)rows * cols * sizeof(float));
            float *full = malloc((size_t)rows * cols * sizeof(float));
            fill_weights(x, rows, cols);
            qtensor t;
            if (qtensor_quantize(&t, f, x, rows, cols, 64, f == QF_NF4)) {
                CHECK(0, "%s: qtensor_quantize failed", qformat_info(f)->name);
            } else {
                char what[96];
                snprintf(what, sizeof what, "%s %s %dx%d", qtensor_isa(), qformat_info(f)->name,
                         rows, cols);
                qformat_info(f)->dequant_ref(&t, 0, rows, full);
                check_bf16_all_kernels(&t, full, Ns, 1, 2, what);
                qtensor_free(&t);
            }
            free(x), free(full);
        }
}

static void check_bad_input(void) {
    float x[64 * 3] = {0};
    qtensor t;
    CHECK(qtensor_quantize(&t, QF_Q8_0, x, 2, 48, 0, 0) == -1, "Q8_0 with cols 48 accepted");
    CHECK(qtensor_quantize(&t, QF_Q8_0, x, 3, 33, 0, 0) == -1, "Q8_0 with cols 33 accepted");
    CHECK(qtensor_quantize(&t, QF_NF4, x, 3, 64, 48, 0) == -1, "NF4 block size 48 accepted");
    CHECK(qtensor_quantize(&t, QF_NF4, x, 3, 64, 8192, 0) == -1, "NF4 block size 8192 accepted");
    CHECK(qtensor_quantize(&t, QF_F16, x, 0, 64, 0, 0) == -1, "0 rows accepted");
    CHECK(qtensor_quantize(&t, QF_COUNT, x, 3, 64, 0, 0) == -1, "an unknown format accepted");
    CHECK(qformat_parse("NF4") == QF_NF4 && qformat_parse("q8") == QF_Q8_0 &&
              qformat_parse("none") == QF_F32 && qformat_parse("bf16") == QF_BF16 &&
              qformat_parse("int3") == -1 && qformat_parse(NULL) == -1,
          "qformat_parse");
    CHECK(cpu_isa_parse("sse9") == -1 && cpu_isa_parse(NULL) == -1, "an unknown ISA accepted");
}

static int read_file(const char *path, void *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n ? 0 : -1;
}

/* --quantize FMT IN ROWS COLS OUT: the data bytes of qtensor_quantize, for the peer tests. */
static int quantize_tool(const char *fmt, const char *in, int rows, int cols, const char *out) {
    int f = qformat_parse(fmt);
    if (f < 0 || f == QF_NF4 || f == QF_FP4 || rows <= 0 || cols <= 0) {
        fprintf(stderr,
                "qtensor_test --quantize: format %s (f32|bf16|f16|q8_0), rows %d, cols %d\n", fmt,
                rows, cols);
        return 2;
    }
    size_t n = (size_t)rows * cols;
    float *x = malloc(n * sizeof(float));
    if (!x || read_file(in, x, n * sizeof(float))) {
        fprintf(stderr, "qtensor_test: %s: cannot read %zu fp32 values\n", in, n);
        free(x);
        return 2;
    }
    qtensor t;
    if (qtensor_quantize(&t, f, x, rows, cols, 0, 0)) {
        fprintf(stderr, "qtensor_test: %s: cannot quantize a %dx%d matrix to %s\n", in, rows, cols,
                fmt);
        free(x);
        return 1;
    }
    size_t bytes = qtensor_bytes(&t);
    FILE *o = fopen(out, "wb");
    int ok = o && fwrite(t.data, 1, bytes, o) == bytes;
    if (o && fclose(o)) ok = 0;
    if (!ok) fprintf(stderr, "qtensor_test: %s: cannot write\n", out);
    qtensor_free(&t);
    free(x);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    /* libgomp's spinning workers starve OpenBLAS's threads between the QC_BF16 panels (10x
     * slower on 2 busy cores); it reads the policy when it loads, so set it and start again, as
     * src/cli/main.c does */
    if (!getenv("OMP_WAIT_POLICY") && !setenv("OMP_WAIT_POLICY", "passive", 1))
        execv("/proc/self/exe", argv);
    if (argc == 7 && !strcmp(argv[1], "--quantize"))
        return quantize_tool(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), argv[6]);
    if (argc == 6 && !strcmp(argv[1], "--q8-0"))
        return quantize_tool("q8_0", argv[2], atoi(argv[3]), atoi(argv[4]), argv[5]);

    /* FTUNE_ISA caps the choice made at start-up (read on first use) */
    setenv("FTUNE_ISA", "portable", 1);
    CHECK(!strcmp(qtensor_isa(), "portable"), "FTUNE_ISA=portable gave %s", qtensor_isa());
    check_bad_input();

    test_each_isa(check_all_formats);
    check_bf16_chunks();
    return test_summary("qtensor");
}
