/* gguf_quant_kernels_test.c: the qtensor formats of GGUF's Q4_0, Q4_K and Q6_K blocks (read from
 * files as stored, never quantized by ftune), on every kernel set this CPU runs (portable, avx2,
 * avx512; the others reported as skipped).
 *
 * The reference is ggml_dequant_row (ops/ggml_quants.c), which tests/peers/test_gguf.py checks
 * bit for bit against gguf-py's dequantize. Blocks are random bytes (every nibble, 6-bit scale
 * and min, high-bit pair and signed sub-block scale occurs) with f16 scales of a few sizes.
 * Shapes: odd row counts, rows of 1, 3 and 19 blocks.
 *  - qtensor_dequant_rows over row ranges equals ggml_dequant_row of the same rows bit for bit
 *    (each value is the same conversions and fp32 products, in the same order, on every ISA);
 *  - qtensor_dot_row, and qmatmul_forward with N = 1, 3 (fused dot products) and 37 (dequantized
 *    panels and a GEMM), beta 0 and 1 with a bias, equal "dequantize with ggml_dequant_row, then
 *    sum the products in double" within 1e-5 of sum |w_i x_i| of that output: the kernels sum in
 *    fp32 in another order (and Q4_K's fused form multiplies the scale and the min separately),
 *    which moves a result by a few fp32 roundings of partial sums, O(1e-7) of that sum; a wrong
 *    nibble, scale or block is off by O(1e-2) or more.
 *  - qmatvec (four rows per kernel call) gives qtensor_dot_row's values bit for bit;
 *  - qtensor_quantize refuses the three formats (stored only); qtensor_bytes counts the blocks.
 */
#include "base/cpu.h"
#include "base/half.h"
#include "ops/ggml_quants.h"
#include "ops/qtensor.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

static uint32_t rng = 777;
static uint32_t urand(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}
static float frand(void) { return (float)urand() / 8388608.0f - 1.0f; } /* [-1, 1) */

static const struct {
    qformat f;
    uint32_t type;
    int bv;
    size_t bb;
} fmts[] = {{QF_Q4_0, GGML_TYPE_Q4_0, 32, 18},
            {QF_Q4_K, GGML_TYPE_Q4_K, 256, 144},
            {QF_Q6_K, GGML_TYPE_Q6_K, 256, 210}};

static void put_f16(uint8_t *p, float v) {
    uint16_t h = f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* nb random blocks of format i; the f16 scales are positive and finite, of sizes that vary by
 * block (as rows of a real matrix do). */
static void fill_blocks(int i, uint8_t *p, size_t nb) {
    for (size_t b = 0; b < nb; b++, p += fmts[i].bb) {
        for (size_t k = 0; k < fmts[i].bb; k++)
            p[k] = (uint8_t)urand();
        float d = 1e-3f * (1 + (float)(b % 5)) * (1.5f + frand());
        if (fmts[i].f == QF_Q4_0) put_f16(p, d);
        if (fmts[i].f == QF_Q4_K) put_f16(p, d / 16), put_f16(p + 2, d / 8);
        if (fmts[i].f == QF_Q6_K) put_f16(p + 208, d / 32);
    }
}

static void check_shape(int i, int rows, int nblk) {
    const int cols = nblk * fmts[i].bv;
    const size_t row_bytes = (size_t)nblk * fmts[i].bb, n = (size_t)rows * cols;
    uint8_t *data = malloc(row_bytes * rows);
    float *ref = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    float *x = malloc(37 * (size_t)cols * sizeof(float));
    float *y = malloc(37 * (size_t)rows * sizeof(float)), *bias = malloc(rows * sizeof(float));
    REQUIRE(data && ref && got && x && y && bias, "out of memory");
    fill_blocks(i, data, (size_t)nblk * rows);
    REQUIRE(!ggml_dequant_row(fmts[i].type, data, ref, n), "reference dequantization");
    for (size_t k = 0; k < 37 * (size_t)cols; k++)
        x[k] = frand();
    for (int r = 0; r < rows; r++)
        bias[r] = frand();
    qtensor t = {
        .fmt = fmts[i].f, .rows = rows, .cols = cols, .blocksize = fmts[i].bv, .data = data};
    const char *name = qformat_info(fmts[i].f)->name;
    CHECK(qtensor_bytes(&t) == row_bytes * rows, "%s bytes %zu", name, qtensor_bytes(&t));

    /* dequantization: whole, and ranges of rows */
    qtensor_dequant_rows(&t, 0, rows, got);
    CHECK(!memcmp(got, ref, n * sizeof(float)), "%s %dx%d: dequantized rows differ", name, rows,
          cols);
    int r0 = rows / 3, m = rows - r0 - 1;
    memset(got, 0, n * sizeof(float));
    qtensor_dequant_rows(&t, r0, m, got);
    CHECK(!memcmp(got, ref + (size_t)r0 * cols, (size_t)m * cols * sizeof(float)),
          "%s %dx%d: rows %d..%d differ", name, rows, cols, r0, r0 + m - 1);

    /* dot products and matmuls against the double-precision dot of the reference values */
    int worst_ok = 1;
    for (int r = 0; r < rows; r++) {
        double s = 0, mag = 0;
        for (int c = 0; c < cols; c++) {
            s += (double)ref[(size_t)r * cols + c] * x[c];
            mag += fabs((double)ref[(size_t)r * cols + c] * x[c]);
        }
        float d = qtensor_dot_row(&t, r, x);
        if (!(fabs(d - s) <= 1e-5 * mag + 1e-30)) {
            if (worst_ok)
                CHECK(0, "%s %dx%d row %d: dot %.9g vs %.9g (sum |wx| %g)", name, rows, cols, r, d,
                      s, mag);
            worst_ok = 0;
        }
    }
    CHECK(worst_ok, "%s %dx%d: dot products", name, rows, cols);
    test_qmatvec_exact(&t, x, name);
    const int Ns[] = {1, 3, 37};
    size_t wsb = qmatmul_scratch_bytes(&t, 37);
    void *ws = malloc(wsb ? wsb : 1);
    REQUIRE(ws, "out of memory");
    for (int ni = 0; ni < 3; ni++)
        for (int beta = 0; beta <= 1; beta++) {
            int N = Ns[ni], bad = 0;
            for (size_t k = 0; k < (size_t)N * rows; k++)
                y[k] = 0.5f;
            CHECK(
                !qmatmul_forward(y, rows, x, cols, &t, beta ? bias : NULL, N, (float)beta, ws, wsb),
                "qmatmul_forward");
            for (int nn = 0; nn < N && !bad; nn++)
                for (int r = 0; r < rows; r++) {
                    double s = beta ? 0.5 + bias[r] : 0, mag = fabs(s);
                    for (int c = 0; c < cols; c++) {
                        double p = (double)ref[(size_t)r * cols + c] * x[(size_t)nn * cols + c];
                        s += p, mag += fabs(p);
                    }
                    double v = y[(size_t)nn * rows + r];
                    if (!(fabs(v - s) <= 1e-5 * mag + 1e-30)) {
                        CHECK(0, "%s %dx%d N %d beta %d: out[%d][%d] %.9g vs %.9g", name, rows,
                              cols, N, beta, nn, r, v, s);
                        bad = 1;
                        break;
                    }
                }
            CHECK(!bad, "%s qmatmul_forward N %d", name, N);
        }
    /* stored only: never quantized by ftune */
    qtensor q;
    CHECK(qtensor_quantize(&q, fmts[i].f, ref, rows, cols, 0, 0) == -1, "%s quantized", name);
    free(ws), free(data), free(ref), free(got), free(x), free(y), free(bias);
}

static void check_all(void) {
    const int nblks[] = {1, 3, 19};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            int nb = fmts[i].bv == 32 ? nblks[k] : nblks[k] > 3 ? 5 : nblks[k];
            check_shape(i, 37, nb);
        }
    /* more rows than one dequantized panel (1.5 MB of fp32: 1536 rows of 256), one block wide */
    check_shape(1, 1601, 1);
}

int main(void) {
    CHECK(qformat_parse("q4_k") == QF_Q4_K && qformat_info(QF_Q6_K)->stored_only, "format table");
    test_each_isa(check_all);
    return test_summary("gguf_quant_kernels");
}
