/*
 * gguf_write_test.c: the GGUF writer (io/gguf_write.h) read back by ftune's GGUF reader
 * (io/gguf.h), and the Q8_0 / Q4_0 quantizers (ops/ggml_quantize.h) on blocks whose results
 * follow from llama.cpp's reference formulas by hand. (Byte identity with llama.cpp itself on
 * whole models: tests/peers/test_export_gguf.py.)
 */
#include "base/half.h"
#include "io/gguf.h"
#include "io/gguf_write.h"
#include "ops/ggml_quantize.h"
#include "ops/ggml_quants.h"
#include "test.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static void test_round_trip(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/a.gguf", dir);
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w != NULL, "writer");
    gguf_writer_kv_str(w, "general.architecture", "llama");
    gguf_writer_kv_u32(w, "llama.block_count", 7);
    gguf_writer_kv_i32(w, "x.i32", -5);
    gguf_writer_kv_f32(w, "x.f32", 1.5f);
    gguf_writer_kv_bool(w, "x.bool", 1);
    const char *toks[3] = {"a",
                           "\xc4\xa0"
                           "b",
                           ""};
    gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
    int32_t ty[3] = {1, 3, 5};
    gguf_writer_kv_arr_i32(w, "tokenizer.ggml.token_type", ty, 3);
    float sc[2] = {-1.0f, 0.25f};
    gguf_writer_kv_arr_f32(w, "tokenizer.ggml.scores", sc, 2);
    ft_error err = {0};
    int64_t ne1[1] = {5}, ne2[2] = {64, 2};
    CHECK(!gguf_writer_add_tensor(w, "norm", GGML_TYPE_F32, 1, ne1, &err), "add");
    CHECK(!gguf_writer_add_tensor(w, "q8", GGML_TYPE_Q8_0, 2, ne2, &err), "add");
    CHECK(!gguf_writer_add_tensor(w, "q4", GGML_TYPE_Q4_0, 2, ne2, &err), "add");
    int64_t bad[2] = {33, 1};
    CHECK(gguf_writer_add_tensor(w, "odd", GGML_TYPE_Q8_0, 2, bad, &err) == FT_ERR_INPUT,
          "a row of 33 is not whole Q8_0 blocks");
    CHECK(gguf_writer_add_tensor(w, "q8", GGML_TYPE_F32, 1, ne1, &err) == FT_ERR_INPUT,
          "repeated name");
    REQUIRE(!gguf_writer_begin(w, path, &err), "begin: %s", err.what);
    float norm[5] = {1, 2, 3, 4, 5}, x[128];
    for (int i = 0; i < 128; i++)
        x[i] = sinf(0.37f * (float)i) * (1.0f + (float)(i % 7));
    uint8_t q8[4 * 34], q4[4 * 18];
    CHECK(ggml_quantize_row(GGML_TYPE_Q8_0, x, q8, 128) == 0, "q8");
    CHECK(ggml_quantize_row(GGML_TYPE_Q4_0, x, q4, 128) == 0, "q4");
    CHECK(!gguf_writer_put(w, norm, 8, &err) && !gguf_writer_put(w, norm + 2, 12, &err),
          "a tensor in two pieces");
    CHECK(!gguf_writer_put(w, q8, sizeof q8, &err), "q8 data");
    CHECK(!gguf_writer_put(w, q4, sizeof q4, &err), "q4 data");
    CHECK(gguf_writer_put(w, q4, 1, &err) != FT_OK, "past the last tensor");
    REQUIRE(!gguf_writer_finish(w, &err), "finish: %s", err.what);
    gguf_writer_free(w);

    gguf_file *g = NULL;
    REQUIRE(!gguf_open(path, &g, &err), "the reader takes the file: %s: %s", err.where, err.what);
    CHECK(gguf_version(g) == 3 && gguf_alignment(g) == 32 && gguf_kv_count(g) == 8, "header");
    uint32_t u;
    int32_t i32;
    float f;
    int b;
    gguf_str s;
    CHECK(!gguf_get_u32(g, "llama.block_count", &u, &err) && u == 7, "u32");
    CHECK(!gguf_get_i32(g, "x.i32", &i32, &err) && i32 == -5, "i32");
    CHECK(!gguf_get_f32(g, "x.f32", &f, &err) && f == 1.5f, "f32");
    CHECK(!gguf_get_bool(g, "x.bool", &b, &err) && b == 1, "bool");
    CHECK(!gguf_get_str(g, "general.architecture", &s, &err) && s.n == 5 &&
              !memcmp(s.p, "llama", 5),
          "string");
    const gguf_kv *kv = NULL;
    CHECK(!gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STR, &kv, &err) && kv->count == 3 &&
              kv->strs[1].n == 3 &&
              !memcmp(kv->strs[1].p,
                      "\xc4\xa0"
                      "b",
                      3) &&
              kv->strs[2].n == 0,
          "string array");
    CHECK(!gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_I32, &kv, &err) &&
              gguf_arr_int(kv, 2) == 5,
          "i32 array");
    CHECK(!gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_F32, &kv, &err) &&
              gguf_arr_float(kv, 0) == -1.0,
          "f32 array");
    REQUIRE(gguf_tensor_count(g) == 3, "tensors");
    const gguf_tensor *t = gguf_find_tensor(g, "norm");
    float back[128];
    CHECK(t && t->ndim == 1 && t->ne[0] == 5 && !gguf_read_f32(g, t, 0, 5, back, &err) &&
              !memcmp(back, norm, sizeof norm),
          "F32 tensor");
    t = gguf_find_tensor(g, "q8");
    CHECK(t && t->ndim == 2 && t->ne[0] == 64 && t->ne[1] == 2 && t->offset % 32 == 0 &&
              t->nbytes == sizeof q8 && !memcmp(t->data, q8, sizeof q8),
          "Q8_0 tensor at an aligned offset");
    /* dequantized within half a step of the block scale */
    if (t && !gguf_read_f32(g, t, 0, 128, back, &err))
        for (int k = 0; k < 128; k++) {
            float amax = 0;
            for (int j = k / 32 * 32; j < k / 32 * 32 + 32; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            CHECK_NEAR(back[k], x[k], 0.5 * amax / 127 * 1.01, "Q8_0 value");
        }
    t = gguf_find_tensor(g, "q4");
    CHECK(t && t->nbytes == sizeof q4 && !memcmp(t->data, q4, sizeof q4), "Q4_0 tensor");
    gguf_close(g);
}

static void test_quantizers(void) {
    /* Q4_0: the largest magnitude is -8 at j = 3: d = -8 / -8 = 1, id = 1; nibble = (int)(x +
     * 8.5) capped at 15: x = 7.9 -> 15 (16.4 capped), -8 -> 0, 0.4 -> 8, 0.6 -> 9, -0.6 -> 7 */
    float x[32] = {0};
    x[0] = 7.9f, x[3] = -8.0f, x[5] = 0.4f, x[16] = 0.6f, x[17] = -0.6f;
    uint8_t q[18];
    CHECK(ggml_quantize_row(GGML_TYPE_Q4_0, x, q, 32) == 0, "q4_0");
    uint16_t d;
    memcpy(&d, q, 2);
    CHECK(f16_to_f32(d) == 1.0f, "Q4_0 d = max / -8");
    CHECK(q[2 + 0] == (15 | 9 << 4) && q[2 + 1] == (8 | 7 << 4) && q[2 + 3] == (0 | 8 << 4) &&
              q[2 + 5] == (8 | 8 << 4),
          "Q4_0 nibbles %02x %02x %02x %02x", q[2], q[3], q[5], q[7]);
    /* a tie in magnitude: the first one wins (amax < |v| is strict), so d = 2 / -8 < 0 */
    float y[32] = {0};
    y[1] = 2.0f, y[2] = -2.0f;
    ggml_quantize_row(GGML_TYPE_Q4_0, y, q, 32);
    memcpy(&d, q, 2);
    CHECK(f16_to_f32(d) == -0.25f && (q[2 + 1] & 15) == 0 && (q[2 + 2] & 15) == 15,
          "Q4_0 tie: first max, d = -0.25, 2 -> 0, -2 -> 15 (16.5 capped)");
    /* zeros: d = 0.0f / -8 = -0.0 (f16 0x8000, as llama.cpp stores it), id = 0, every nibble 8 */
    float z[32] = {0};
    ggml_quantize_row(GGML_TYPE_Q4_0, z, q, 32);
    CHECK(q[0] == 0 && q[1] == 0x80 && q[2] == 0x88 && q[17] == 0x88, "Q4_0 of zeros");
    /* Q8_0: amax 127 -> d = 1; roundf rounds half away from zero: 2.5 -> 3, -2.5 -> -3 */
    float v[32] = {0};
    v[0] = 127.0f, v[1] = 2.5f, v[2] = -2.5f, v[3] = -127.0f, v[4] = 0.49f;
    uint8_t q8[34];
    CHECK(ggml_quantize_row(GGML_TYPE_Q8_0, v, q8, 32) == 0, "q8_0");
    memcpy(&d, q8, 2);
    CHECK(f16_to_f32(d) == 1.0f && (int8_t)q8[2] == 127 && (int8_t)q8[3] == 3 &&
              (int8_t)q8[4] == -3 && (int8_t)q8[5] == -127 && q8[6] == 0,
          "Q8_0 block");
    CHECK(ggml_quantize_row(GGML_TYPE_Q8_0, v, q8, 31) == -1 &&
              ggml_quantize_row(GGML_TYPE_Q5_K, v, q8, 256) == -1,
          "not whole blocks / not a type quantized here");
}

static void test_unfinished_leaves_nothing(void) {
    char path[128], tmp[160];
    snprintf(path, sizeof path, "%s/b.gguf", dir);
    gguf_writer *w = gguf_writer_new();
    ft_error err = {0};
    int64_t ne[1] = {4};
    gguf_writer_kv_str(w, "general.architecture", "llama");
    gguf_writer_add_tensor(w, "t", GGML_TYPE_F32, 1, ne, &err);
    REQUIRE(!gguf_writer_begin(w, path, &err), "begin");
    float x[2] = {1, 2};
    gguf_writer_put(w, x, sizeof x, &err);
    CHECK(gguf_writer_finish(w, &err) != FT_OK, "a tensor short of its bytes is an error");
    gguf_writer_free(w);
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid());
    CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) != 0, "nothing left behind");
    w = gguf_writer_new();
    gguf_writer_kv_u32(w, "k", 1);
    gguf_writer_kv_u32(w, "k", 2);
    CHECK(gguf_writer_begin(w, path, &err) == FT_ERR_INPUT && access(path, F_OK) != 0,
          "a repeated key is refused before anything is written");
    gguf_writer_free(w);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ftune-gguf-write-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    test_round_trip();
    test_quantizers();
    test_unfinished_leaves_nothing();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) return 1;
    return test_summary("gguf_write_test");
}
