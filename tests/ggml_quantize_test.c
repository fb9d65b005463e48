/*
 * ggml_quantize_test.c: round trips of src/ops/ggml_quantize.c through ggml_dequant_row
 * (Q5_0, which ftune does not dequantize elsewhere, through a decoder written here from the
 * layout in ggml_quantize.h), and the per-tensor type rule on a model's names.
 *
 * Byte identity with llama.cpp is tests/peers/test_ggml_quantize.py's job; here, the error
 * bounds each type must meet whatever its search picks:
 *   Q8_0  every value within 0.51 steps (step d = amax/127) of the input, plus 127 times the
 *         fp16 rounding of d (large where d is an fp16 subnormal);
 *   Q4_0 / Q5_0  within one step (d = amax/8 or /16: the level opposite the largest value is
 *         clamped at 15 / 31, one step short) plus fp16 rounding;
 *   Q6_K / Q4_K  the root mean square error on randn rows below 2.5% / 12% of the rows' RMS
 *         (6-bit and 4-bit uniform steps over about 6 sigma give 1.5% / 9%);
 *   F16   exact for values f16 holds;
 * and all-zero blocks give zero bytes (Q6_K) or zeros back (all types), integer multiples of a
 * power of two that fit 8 bits come back exactly from Q8_0, and the ggml_quantize entry point
 * writes what the per-type functions write and refuses sizes that are not whole blocks; many
 * blocks at once (split over threads) give the bytes of one block at a time.
 */
#include "base/half.h"
#include "ops/ggml_quantize.h"
#include "ops/ggml_quants.h"
#include "test.h"

#include <math.h>
#include <string.h>

static unsigned long long rng = 0x9E3779B97F4A7C15ull;
static double unif(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(rng >> 11) + 0.5) / (double)(1ull << 53);
}
static float randn(void) {
    return (float)(sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif()));
}

enum { N = 4096 };

static void dequant_q5_0(const uint8_t *b, float *y, size_t n) {
    for (size_t k = 0; k < n / 32; k++, b += 22, y += 32) {
        float d = f16_to_f32((uint16_t)(b[0] | b[1] << 8));
        uint32_t qh =
            (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
        for (int j = 0; j < 16; j++) {
            int lo = (b[6 + j] & 15) | (int)((qh >> j) & 1) << 4;
            int hi = (b[6 + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = d * (float)(lo - 16);
            y[j + 16] = d * (float)(hi - 16);
        }
    }
}

static void fill(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++)
        x[i] = randn() * scale;
    memset(x + 64, 0, 32 * sizeof *x); /* one zero Q8_0/Q4_0 block */
}

static void roundtrip(uint32_t type, const float *x, size_t n, float *y) {
    static uint8_t buf[N * 4];
    size_t bytes = ggml_quantize(type, x, buf, n);
    const ggml_type_traits *t = ggml_type_info(type);
    CHECK(bytes == n / (size_t)t->block_values * t->block_bytes, "%s: %zu bytes", t->name, bytes);
    if (type == GGML_TYPE_Q5_0)
        dequant_q5_0(buf, y, n);
    else
        CHECK(ggml_dequant_row(type, buf, y, n) == 0, "%s: dequant", t->name);
}

/* Whether every value is within k steps of its block of bs values (step = amax / levels, amax
 * the block's largest |x|), plus what the fp16 rounding of the step moves. */
static int within_steps(const float *x, const float *y, size_t n, int bs, float levels, float k) {
    for (size_t b = 0; b < n / (size_t)bs; b++) {
        float amax = 0;
        for (int i = 0; i < bs; i++)
            amax = fmaxf(amax, fabsf(x[b * bs + i]));
        float step = amax / levels, step16 = f16_to_f32(f32_to_f16(step));
        /* levels are chosen with the fp32 step and scaled back with its fp16 rounding: each
         * level (at most `levels` steps from 0) moves by the difference */
        float tol = k * step + levels * fabsf(step - step16) * 1.01f + amax * 1e-6f;
        for (int i = 0; i < bs; i++)
            if (fabsf(x[b * bs + i] - y[b * bs + i]) > tol) return 0;
    }
    return 1;
}

static double rel_rms(const float *x, const float *y, size_t n) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e += (double)(x[i] - y[i]) * (x[i] - y[i]);
        s += (double)x[i] * x[i];
    }
    return sqrt(e / s);
}

static void test_roundtrips(void) {
    static float x[N], y[N];
    const float scales[] = {0.02f, 1.0f, 300.0f, 1e-3f};
    for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
        fill(x, N, scales[s]);
        roundtrip(GGML_TYPE_Q8_0, x, N, y);
        CHECK(within_steps(x, y, N, 32, 127, 0.51f), "Q8_0 at scale %g", scales[s]);
        roundtrip(GGML_TYPE_Q4_0, x, N, y);
        CHECK(within_steps(x, y, N, 32, 8, 1.0f), "Q4_0 at scale %g", scales[s]);
        roundtrip(GGML_TYPE_Q5_0, x, N, y);
        CHECK(within_steps(x, y, N, 32, 16, 1.0f), "Q5_0 at scale %g", scales[s]);
        for (int i = 64; i < 96; i++)
            CHECK(y[i] == 0, "Q5_0 zero block [%d] = %g", i, y[i]);
        memset(x + 512, 0, 256 * sizeof *x); /* one zero K block */
        roundtrip(GGML_TYPE_Q6_K, x, N, y);
        double e6 = rel_rms(x, y, N);
        CHECK(e6 < 0.025, "Q6_K rel rms %g at scale %g", e6, scales[s]);
        for (int i = 512; i < 768; i++)
            CHECK(y[i] == 0, "Q6_K zero block [%d] = %g", i, y[i]);
        roundtrip(GGML_TYPE_Q4_K, x, N, y);
        double e4 = rel_rms(x, y, N);
        CHECK(e4 < 0.12, "Q4_K rel rms %g at scale %g", e4, scales[s]);
        for (int i = 512; i < 768; i++)
            CHECK(y[i] == 0, "Q4_K zero block [%d] = %g", i, y[i]);
    }
    /* Q6_K of a zero block: all 210 bytes zero */
    uint8_t b[210];
    memset(b, 0xAA, sizeof b);
    memset(x, 0, 256 * sizeof *x);
    ggml_quantize_q6_k(x, b, 256);
    int zero = 1;
    for (int i = 0; i < 210; i++)
        zero &= b[i] == 0;
    CHECK(zero, "Q6_K zero block bytes");
    /* Q8_0: multiples of 2^-7 up to 127 * 2^-7 are exact (d = 2^-7 in fp16) */
    for (int i = 0; i < 32; i++)
        x[i] = (float)((i * 37) % 255 - 127) / 128.0f;
    x[3] = 127.0f / 128.0f;
    roundtrip(GGML_TYPE_Q8_0, x, 32, y);
    for (int i = 0; i < 32; i++)
        CHECK(y[i] == x[i], "Q8_0 exact [%d]: %g vs %g", i, y[i], x[i]);
    /* F16: halves round trip exactly */
    for (int i = 0; i < 64; i++)
        x[i] = f16_to_f32((uint16_t)((i * 977 + 3) % 0x7c00)); /* no inf / NaN */
    roundtrip(GGML_TYPE_F16, x, 64, y);
    for (int i = 0; i < 64; i++)
        CHECK(y[i] == x[i], "F16 exact [%d]", i);
}

static void test_entry_point(void) {
    static float x[512];
    static uint8_t a[512 * 4], c[512 * 4];
    for (int i = 0; i < 512; i++)
        x[i] = randn();
    ggml_quantize_q4_k(x, a, 512);
    CHECK(ggml_quantize(GGML_TYPE_Q4_K, x, c, 512) == 288 && !memcmp(a, c, 288), "Q4_K entry");
    ggml_quantize_q6_k(x, a, 512);
    CHECK(ggml_quantize(GGML_TYPE_Q6_K, x, c, 512) == 420 && !memcmp(a, c, 420), "Q6_K entry");
    /* 128 blocks at once (split over the OpenMP threads) equal the blocks one at a time */
    enum { NB = 128 };
    static float big[NB * 256];
    static uint8_t all[NB * 210], one[210];
    for (int i = 0; i < NB * 256; i++)
        big[i] = randn();
    int same4 = 1, same6 = 1;
    ggml_quantize_q4_k(big, all, NB * 256);
    for (int b = 0; b < NB; b++) {
        ggml_quantize_q4_k(big + b * 256, one, 256);
        same4 &= !memcmp(one, all + b * 144, 144);
    }
    ggml_quantize_q6_k(big, all, NB * 256);
    for (int b = 0; b < NB; b++) {
        ggml_quantize_q6_k(big + b * 256, one, 256);
        same6 &= !memcmp(one, all + b * 210, 210);
    }
    CHECK(same4 && same6, "threaded blocks differ: Q4_K %d, Q6_K %d", same4, same6);
    memset(c, 0x55, sizeof c);
    CHECK(ggml_quantize(GGML_TYPE_Q4_K, x, c, 288) == 0 && c[0] == 0x55, "288 is not Q4_K");
    CHECK(ggml_quantize(GGML_TYPE_Q8_0, x, c, 40) == 0, "40 is not Q8_0");
    CHECK(ggml_quantize(GGML_TYPE_Q2_K, x, c, 256) == 0, "Q2_K is not written");
    CHECK(ggml_quantize(GGML_TYPE_F32, x, c, 3) == 12 && !memcmp(c, x, 12), "F32 copies");
}

/* The rule of llama-quant.cpp on an 8-layer llama with an output.weight: use_more_bits(i, 8)
 * holds for i = 0 (i < 1), 7 (i >= 7) and 3, 6 ((i - 1) % 3 == 2). */
static void test_rule(void) {
    static char names[80][48];
    const char *ptr[80];
    int n = 0;
    const char *per[] = {"attn_norm.weight", "attn_q.weight",      "attn_k.weight",
                         "attn_v.weight",    "attn_output.weight", "ffn_gate.weight",
                         "ffn_up.weight",    "ffn_down.weight"};
    snprintf(names[n++], 48, "token_embd.weight");
    snprintf(names[n++], 48, "output.weight");
    snprintf(names[n++], 48, "output_norm.weight");
    for (int l = 0; l < 8; l++)
        for (int k = 0; k < 8; k++)
            snprintf(names[n++], 48, "blk.%d.%s", l, per[k]);
    for (int i = 0; i < n; i++)
        ptr[i] = names[i];
    ggml_qplan p;
    REQUIRE(ggml_qplan_init(&p, GGML_FTYPE_Q4_K_M, "llama", 8, 4, 2, ptr, (size_t)n) == 0, "init");
    const int64_t mat[2] = {256, 512}, vec[1] = {256}, col[2] = {256, 1};
    const int more[8] = {1, 0, 0, 1, 0, 0, 1, 1};
    char nm[48];
    for (int l = 0; l < 8; l++) {
        uint32_t want = more[l] ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K;
        snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l);
        CHECK(ggml_qplan_type(&p, nm, 2, mat) == want, "%s", nm);
        snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", l);
        CHECK(ggml_qplan_type(&p, nm, 2, mat) == want, "%s", nm);
        snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l);
        CHECK(ggml_qplan_type(&p, nm, 2, mat) == GGML_TYPE_Q4_K, "%s", nm);
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        CHECK(ggml_qplan_type(&p, nm, 1, vec) == GGML_TYPE_F32, "%s", nm);
    }
    CHECK(ggml_qplan_type(&p, "output.weight", 2, mat) == GGML_TYPE_Q6_K, "output");
    CHECK(ggml_qplan_type(&p, "token_embd.weight", 2, mat) == GGML_TYPE_Q4_K, "untied embd");
    CHECK(ggml_qplan_type(&p, "blk.0.attn_q.weight", 2, col) == GGML_TYPE_F32, "[256, 1] is 1-D");
    CHECK(ggml_qplan_type(&p, "blk.0.attn_q.bias", 2, mat) == GGML_TYPE_F32, "not a weight");
    const int64_t r288[2] = {288, 4}, r272[2] = {272, 4};
    CHECK(ggml_qplan_type(&p, "blk.1.attn_q.weight", 2, r288) == GGML_TYPE_Q5_0, "Q4_K -> Q5_0");
    CHECK(ggml_qplan_type(&p, "blk.0.attn_v.weight", 2, r288) == GGML_TYPE_Q8_0, "Q6_K -> Q8_0");
    CHECK(ggml_qplan_type(&p, "blk.0.attn_v.weight", 2, r272) == GGML_TYPE_F16, "-> F16");
    CHECK(ggml_qplan_type(&p, "output.weight", 2, r288) == GGML_TYPE_Q8_0, "output 288");
    /* tied: token_embd takes output's Q6_K; Q4_0's output is Q6_K too, Q8_0's stays Q8_0 */
    REQUIRE(ggml_qplan_init(&p, GGML_FTYPE_Q4_0, "llama", 8, 4, 2, ptr + 2, (size_t)n - 2) == 0,
            "init tied");
    CHECK(p.tied, "tied");
    CHECK(ggml_qplan_type(&p, "token_embd.weight", 2, mat) == GGML_TYPE_Q6_K, "Q4_0 tied embd");
    CHECK(ggml_qplan_type(&p, "blk.0.attn_v.weight", 2, mat) == GGML_TYPE_Q4_0, "Q4_0 attn_v");
    REQUIRE(ggml_qplan_init(&p, GGML_FTYPE_Q8_0, "llama", 8, 4, 2, ptr, (size_t)n) == 0, "init");
    CHECK(ggml_qplan_type(&p, "output.weight", 2, mat) == GGML_TYPE_Q8_0, "Q8_0 output");
    CHECK(ggml_qplan_type(&p, "blk.0.ffn_down.weight", 2, r272) == GGML_TYPE_F16, "Q8_0 272");
    CHECK(ggml_qplan_init(&p, 3, "llama", 8, 4, 2, ptr, (size_t)n) == -1, "unknown ftype");
    CHECK(ggml_quant_order_cmp("output.weight", "blk.0.attn_v.weight") < 0, "non-blk first");
    CHECK(ggml_quant_order_cmp("blk.10.attn_k.weight", "blk.9.ffn_up.weight") > 0, "by layer");
    CHECK(ggml_quant_order_cmp("blk.2.attn_v.weight", "blk.2.attn_k.weight") > 0, "then name");
    CHECK(ggml_quant_order_cmp("output.weight", "output_norm.weight") < 0, "strcmp");
    CHECK(ggml_ftype_parse("Q4_K_M") == 15 && ggml_ftype_parse("q6_k") == 18 &&
              ggml_ftype_parse("q5_k_m") == -1,
          "ftype names");
}

/* Q8_0 against its plain statement (fmaxf, roundf: llama.cpp's quantize_row_q8_0_ref), which
 * the quantizer's branch-free rounding must equal byte for byte: halves of both signs, values
 * just under and over them, a block of subnormals (1 / d infinite), infinities and NaN. */
static void q8_0_plain(const float *x, uint8_t *o) {
    float amax = 0.0f;
    for (int i = 0; i < 32; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 127, id = d ? 1.0f / d : 0.0f;
    uint16_t h = f32_to_f16(d);
    memcpy(o, &h, 2);
    for (int i = 0; i < 32; i++)
        o[2 + i] = (uint8_t)(int8_t)roundf(x[i] * id);
}

static void test_q8_0_rounding(void) {
    enum { NB = 7 };
    float x[NB * 32];
    uint64_t s = 1;
    for (int i = 0; i < 32; i++) {
        x[i] = (float)(i - 16) + 0.5f; /* halves: 127 / 16 scaling keeps some */
        x[32 + i] = i == 0 ? 127.0f : (float)(i - 16) * 0.5f; /* id 1: exact halves */
        x[64 + i] = nextafterf(x[32 + i], i & 1 ? 1e9f : -1e9f);
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[96 + i] = ((float)(s >> 40) / (1 << 24) - 0.5f) * 1e-3f;
        x[128 + i] = (float)(i + 1) * 1e-45f; /* subnormal: d is 0 or tiny */
        x[160 + i] = i == 3 ? INFINITY : (float)i;
        x[192 + i] = i == 5 ? NAN : (float)(i - 7);
    }
    uint8_t got[NB * 34], want[NB * 34];
    ggml_quantize_q8_0(x, got, NB * 32);
    for (int b = 0; b < NB; b++)
        q8_0_plain(x + b * 32, want + b * 34);
    for (int b = 0; b < NB; b++)
        CHECK(!memcmp(got + b * 34, want + b * 34, 34), "Q8_0 block %d differs from roundf's", b);
}

int main(void) {
    test_q8_0_rounding();
    test_roundtrips();
    test_entry_point();
    test_rule();
    return test_summary("ggml_quantize_test");
}
