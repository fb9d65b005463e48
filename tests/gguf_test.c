/*
 * gguf_test.c: the GGUF reader (src/io/gguf.c) and the GGUF dequantization
 * (src/ops/ggml_quants.c).
 *
 * Files are built byte by byte here (a tiny writer that follows ggml's docs/gguf.md), written to
 * a temporary folder and opened with gguf_open:
 *   - a valid file with every metadata value type, a string array and a bool array, and one
 *     tensor of each type ftune dequantizes: every getter returns the written value, the type
 *     conversions allowed (u32 from u8, i32 from a negative i64 that fits) work and the others
 *     fail, tensors are found by name with the right shape, type, offset and data pointer;
 *   - dequantized values against values worked out by hand from the layouts (Q4_0 nibble order,
 *     Q8_0, the Q4_K 6-bit scale/min packing of sub-blocks 0-7, the Q6_K bit placement, F16
 *     subnormals, BF16): exact equality, since each is one or two fp32 roundings of small
 *     integers times powers of two (the peer test compares random blocks with gguf-py);
 *   - every prefix of the valid file, and a list of corruptions (bad magic, versions 1 and 4,
 *     big-endian, unknown value / tensor type, nested array, bool 2, repeated key or tensor,
 *     string length past the end, absurd counts, 5 dims, row not whole blocks, offset past the
 *     end, misaligned or overlapping data, bad alignment): each is FT_ERR_INPUT, and the message
 *     names the file and the key or tensor (run under ASan by make asan);
 *   - ../shared/models/stories260K/stories260K.gguf when it is there: 48 F32 tensors, llama.
 */
#include "gguf_bytes.h"
#include "io/gguf.h"
#include "ops/ggml_quants.h"
#include "test.h"

#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void tinfo(buf *b, const char *name, int nd, const uint64_t *ne, uint32_t type,
                  uint64_t off) {
    str(b, name);
    u32(b, (uint32_t)nd);
    for (int i = 0; i < nd; i++)
        u64(b, ne[i]);
    u32(b, type);
    u64(b, off);
}

/* header + kv bytes + tensor info bytes + padding to `align` + data */
static buf assemble(uint32_t version, uint64_t nkv, const buf *kv, uint64_t nt, const buf *ti,
                    size_t align, const buf *data) {
    buf f = {0};
    put(&f, "GGUF", 4);
    u32(&f, version);
    u64(&f, nt);
    u64(&f, nkv);
    if (kv->n) put(&f, kv->p, kv->n);
    if (ti->n) put(&f, ti->p, ti->n);
    while (f.n % align)
        u8(&f, 0);
    if (data && data->n) put(&f, data->p, data->n);
    return f;
}

static char dir[256];
static const char *write_tmp(const char *name, const buf *f) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp) abort();
    if (f->n) fwrite(f->p, 1, f->n, fp);
    fclose(fp);
    return path;
}

/* ---- the valid file ------------------------------------------------------------------------ */

enum { NKV = 16, NT = 7 };

/* The tensors' data: F32 [3], F16 [4], BF16 [2], Q8_0 [32], Q4_0 [32 x 2], Q4_K [256],
 * Q6_K [256], each at a multiple of 32. */
static void build_data(buf *d, uint64_t *off) {
    int k = 0;
#define ALIGN()                                                                                    \
    do {                                                                                           \
        while (d->n % 32)                                                                          \
            u8(d, 0xEE);                                                                           \
        off[k++] = d->n;                                                                           \
    } while (0)
    ALIGN(); /* F32: 1.5, -2, 1e-3 */
    float f[3] = {1.5f, -2.0f, 1e-3f};
    put(d, f, sizeof f);
    ALIGN(); /* F16: 1.0, -0.5, smallest subnormal 2^-24, 65504 */
    u16(d, 0x3C00), u16(d, 0xB800), u16(d, 0x0001), u16(d, 0x7BFF);
    ALIGN(); /* BF16: 1.0, -3.0 */
    u16(d, 0x3F80), u16(d, 0xC040);
    ALIGN(); /* Q8_0: d = 0.5, q = j - 16 */
    u16(d, 0x3800);
    for (int j = 0; j < 32; j++)
        u8(d, (uint8_t)(int8_t)(j - 16));
    ALIGN(); /* Q4_0, 2 blocks: d = 1 and d = -2; qs[j] = j | (15 - j) << 4 */
    for (int blk = 0; blk < 2; blk++) {
        u16(d, blk ? 0xC000 : 0x3C00);
        for (int j = 0; j < 16; j++)
            u8(d, (uint8_t)(j | (15 - j) << 4));
    }
    ALIGN(); /* Q4_K: d = 1, dmin = 0.5; scales for sub-blocks s = s + 1 + (s >= 4 ? 32 : 0),
                mins m = 2s + (s >= 4 ? 16 : 0) (so the high bits are used); qs[l] = l % 16 |
                (15 - l % 16) << 4 */
    u16(d, 0x3C00), u16(d, 0x3800);
    int sc[8], mn[8];
    for (int s = 0; s < 8; s++)
        sc[s] = s + 1 + (s >= 4 ? 32 : 0), mn[s] = 2 * s + (s >= 4 ? 16 : 0);
    uint8_t packed[12];
    for (int s = 0; s < 4; s++) {
        packed[s] = (uint8_t)((sc[s] & 63) | (sc[s + 4] >> 4) << 6);
        packed[s + 4] = (uint8_t)((mn[s] & 63) | (mn[s + 4] >> 4) << 6);
        packed[s + 8] = (uint8_t)((sc[s + 4] & 15) | (mn[s + 4] & 15) << 4);
    }
    put(d, packed, 12);
    for (int l = 0; l < 128; l++)
        u8(d, (uint8_t)(l % 16 | (15 - l % 16) << 4));
    ALIGN(); /* Q6_K: ql[i] = i % 16 | (i % 7) << 4, qh[i] = i * 37 % 256, scales[s] = s - 8,
                d = 0.25 */
    for (int i = 0; i < 128; i++)
        u8(d, (uint8_t)(i % 16 | (i % 7) << 4));
    for (int i = 0; i < 64; i++)
        u8(d, (uint8_t)(i * 37 % 256));
    for (int s = 0; s < 16; s++)
        u8(d, (uint8_t)(int8_t)(s - 8));
    u16(d, 0x3400);
#undef ALIGN
}

static buf valid_file(void) {
    buf kv = {0}, ti = {0}, data = {0};
    key(&kv, "general.architecture", GGUF_STR), str(&kv, "llama");
    key(&kv, "a.u8", GGUF_U8), u8(&kv, 200);
    key(&kv, "a.i8", GGUF_I8), u8(&kv, (uint8_t)-5);
    key(&kv, "a.u16", GGUF_U16), u16(&kv, 60000);
    key(&kv, "a.i16", GGUF_I16), u16(&kv, (uint16_t)-300);
    key(&kv, "a.u32", GGUF_U32), u32(&kv, 4000000000u);
    key(&kv, "a.i32", GGUF_I32), u32(&kv, (uint32_t)-70000);
    float f01 = 0.1f;
    key(&kv, "a.f32", GGUF_F32), put(&kv, &f01, 4);
    key(&kv, "a.bool", GGUF_BOOL), u8(&kv, 1);
    key(&kv, "a.u64", GGUF_U64), u64(&kv, 1ull << 40);
    key(&kv, "a.i64", GGUF_I64), u64(&kv, (uint64_t)-12345);
    double dd = 2.5;
    key(&kv, "a.f64", GGUF_F64), put(&kv, &dd, 8);
    key(&kv, "tokenizer.ggml.tokens", GGUF_ARR), u32(&kv, GGUF_STR), u64(&kv, 3);
    str(&kv, "<unk>"), str(&kv, ""), str(&kv, "h\xc3\xa9llo");
    key(&kv, "a.bools", GGUF_ARR), u32(&kv, GGUF_BOOL), u64(&kv, 3);
    u8(&kv, 1), u8(&kv, 0), u8(&kv, 1);
    key(&kv, "a.i32s", GGUF_ARR), u32(&kv, GGUF_I32), u64(&kv, 2);
    u32(&kv, 7), u32(&kv, (uint32_t)-8);
    key(&kv, "a.empty", GGUF_ARR), u32(&kv, GGUF_F32), u64(&kv, 0);
    uint64_t off[NT];
    build_data(&data, off);
    uint64_t ne_f32[] = {3}, ne_f16[] = {4}, ne_bf16[] = {2, 1}, ne_q8[] = {32}, ne_q4[] = {32, 2},
             ne_k[] = {256};
    tinfo(&ti, "t.f32", 1, ne_f32, GGML_TYPE_F32, off[0]);
    tinfo(&ti, "t.f16", 1, ne_f16, GGML_TYPE_F16, off[1]);
    tinfo(&ti, "t.bf16", 2, ne_bf16, GGML_TYPE_BF16, off[2]);
    tinfo(&ti, "t.q8_0", 1, ne_q8, GGML_TYPE_Q8_0, off[3]);
    tinfo(&ti, "t.q4_0", 2, ne_q4, GGML_TYPE_Q4_0, off[4]);
    tinfo(&ti, "t.q4_k", 1, ne_k, GGML_TYPE_Q4_K, off[5]);
    tinfo(&ti, "t.q6_k", 1, ne_k, GGML_TYPE_Q6_K, off[6]);
    buf f = assemble(3, NKV, &kv, NT, &ti, 32, &data);
    free(kv.p), free(ti.p), free(data.p);
    return f;
}

static void test_valid(void) {
    buf f = valid_file();
    const char *path = write_tmp("valid.gguf", &f);
    gguf_file *g = NULL;
    ft_error err = {0};
    ft_status st = gguf_open(path, &g, &err);
    CHECK(st == FT_OK, "open: %s: %s", err.where, err.what);
    if (st) {
        free(f.p);
        return;
    }
    CHECK(gguf_version(g) == 3 && gguf_alignment(g) == 32, "version/alignment");
    CHECK(gguf_kv_count(g) == NKV && gguf_tensor_count(g) == NT, "counts %d %d", gguf_kv_count(g),
          gguf_tensor_count(g));
    CHECK(!strcmp(gguf_kv_at(g, 0)->key, "general.architecture"), "file order");
    gguf_str s;
    CHECK(!gguf_get_str(g, "general.architecture", &s, &err) && s.n == 5 &&
              !memcmp(s.p, "llama", 5),
          "architecture");
    uint32_t u;
    int32_t i;
    uint64_t u6;
    float fv;
    int bv;
    CHECK(!gguf_get_u32(g, "a.u8", &u, &err) && u == 200, "u32 from u8");
    CHECK(!gguf_get_u32(g, "a.u16", &u, &err) && u == 60000, "u32 from u16");
    CHECK(!gguf_get_u32(g, "a.u32", &u, &err) && u == 4000000000u, "u32");
    CHECK(gguf_get_i32(g, "a.u32", &i, &err) == FT_ERR_INPUT && strstr(err.what, "does not fit"),
          "i32 from a u32 above INT32_MAX: %s", err.what);
    CHECK(!gguf_get_i32(g, "a.i8", &i, &err) && i == -5, "i32 from i8");
    CHECK(!gguf_get_i32(g, "a.i16", &i, &err) && i == -300, "i32 from i16");
    CHECK(!gguf_get_i32(g, "a.i32", &i, &err) && i == -70000, "i32");
    CHECK(!gguf_get_i32(g, "a.i64", &i, &err) && i == -12345, "i32 from a small i64");
    CHECK(gguf_get_u32(g, "a.i8", &u, &err) == FT_ERR_INPUT, "u32 from a negative");
    CHECK(gguf_get_u32(g, "a.u64", &u, &err) == FT_ERR_INPUT, "u32 from 2^40");
    CHECK(!gguf_get_u64(g, "a.u64", &u6, &err) && u6 == 1ull << 40, "u64");
    CHECK(!gguf_get_f32(g, "a.f32", &fv, &err) && fv == 0.1f, "f32");
    CHECK(!gguf_get_f32(g, "a.f64", &fv, &err) && fv == 2.5f, "f32 from f64");
    CHECK(gguf_get_f32(g, "a.u8", &fv, &err) == FT_ERR_INPUT && strstr(err.what, "found a u8"),
          "f32 from an int: %s", err.what);
    CHECK(!gguf_get_bool(g, "a.bool", &bv, &err) && bv == 1, "bool");
    CHECK(gguf_get_str(g, "a.u8", &s, &err) == FT_ERR_INPUT && strstr(err.where, "a.u8") &&
              strstr(err.where, "valid.gguf"),
          "string from u8: %s: %s", err.where, err.what);
    CHECK(gguf_get_u32(g, "no.such.key", &u, &err) == FT_ERR_INPUT &&
              strstr(err.where, "no.such.key") && strstr(err.what, "not found"),
          "missing key: %s", err.what);
    CHECK(gguf_get_u32(g, "a.i32s", &u, &err) == FT_ERR_INPUT && strstr(err.what, "array"),
          "scalar from array: %s", err.what);
    const gguf_kv *a;
    CHECK(!gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STR, &a, &err) && a->count == 3 &&
              a->strs[0].n == 5 && a->strs[1].n == 0 && a->strs[2].n == 6 &&
              !memcmp(a->strs[2].p, "h\xc3\xa9llo", 6),
          "string array");
    CHECK(!gguf_get_arr(g, "a.i32s", GGUF_U32, &a, &err) && gguf_arr_int(a, 0) == 7 &&
              gguf_arr_int(a, 1) == -8,
          "int array (any integer type)");
    CHECK(!gguf_get_arr(g, "a.bools", GGUF_BOOL, &a, &err) && gguf_arr_int(a, 0) == 1 &&
              gguf_arr_int(a, 1) == 0 && gguf_arr_int(a, 2) == 1,
          "bool array");
    CHECK(gguf_get_arr(g, "a.i32s", GGUF_STR, &a, &err) == FT_ERR_INPUT &&
              strstr(err.what, "array of i32"),
          "array type: %s", err.what);
    CHECK(!gguf_get_arr(g, "a.empty", GGUF_F32, &a, &err) && a->count == 0, "empty array");

    /* tensors */
    const gguf_tensor *t = gguf_find_tensor(g, "t.q4_0");
    CHECK(t && t->type == GGML_TYPE_Q4_0 && t->ndim == 2 && t->ne[0] == 32 && t->ne[1] == 2 &&
              t->ne[2] == 1 && t->nelem == 64 && t->nbytes == 36,
          "q4_0 info");
    CHECK(!gguf_find_tensor(g, "t.q4") && !gguf_find_tensor(g, ""), "absent tensor");
    for (int k = 0; k < NT; k++) {
        const gguf_tensor *tk = gguf_tensor_at(g, k);
        CHECK(gguf_find_tensor(g, tk->name) == tk, "find %s", tk->name);
        CHECK(tk->offset % 32 == 0, "aligned %s", tk->name);
    }
    float v[256];
    t = gguf_find_tensor(g, "t.f32");
    CHECK(!gguf_read_f32(g, t, 0, 3, v, &err) && v[0] == 1.5f && v[1] == -2 && v[2] == 1e-3f,
          "f32 values");
    t = gguf_find_tensor(g, "t.f16");
    CHECK(!gguf_read_f32(g, t, 0, 4, v, &err) && v[0] == 1 && v[1] == -0.5f && v[2] == 0x1p-24f &&
              v[3] == 65504,
          "f16 values");
    t = gguf_find_tensor(g, "t.bf16");
    CHECK(!gguf_read_f32(g, t, 0, 2, v, &err) && v[0] == 1 && v[1] == -3, "bf16 values");
    t = gguf_find_tensor(g, "t.q8_0");
    int ok = !gguf_read_f32(g, t, 0, 32, v, &err);
    for (int j = 0; j < 32; j++)
        ok = ok && v[j] == 0.5f * (float)(j - 16);
    CHECK(ok, "q8_0 values");
    t = gguf_find_tensor(g, "t.q4_0");
    ok = !gguf_read_f32(g, t, 0, 64, v, &err);
    for (int j = 0; j < 16; j++) /* low nibbles first, then high nibbles */
        ok = ok && v[j] == (float)(j - 8) && v[16 + j] == (float)(15 - j - 8) &&
             v[32 + j] == -2.0f * (float)(j - 8) && v[48 + j] == -2.0f * (float)(15 - j - 8);
    CHECK(ok, "q4_0 values");
    CHECK(!gguf_read_f32(g, t, 32, 32, v, &err) && v[0] == 16 && v[16] == -14,
          "q4_0 second row alone");
    CHECK(gguf_read_f32(g, t, 16, 32, v, &err) == FT_ERR_INPUT && strstr(err.what, "whole"),
          "q4_0 range not whole blocks: %s", err.what);
    t = gguf_find_tensor(g, "t.q4_k");
    ok = !gguf_read_f32(g, t, 0, 256, v, &err);
    for (int sb = 0; sb < 8; sb++) { /* sub-block sb: group sb / 2, low (even) or high nibbles */
        float d = (float)(sb + 1 + (sb >= 4 ? 32 : 0)),
              m = 0.5f * (float)(2 * sb + (sb >= 4 ? 16 : 0));
        for (int l = 0; l < 32; l++) {
            int byte = l % 16 | (15 - l % 16) << 4, q = sb % 2 ? byte >> 4 : byte & 15;
            ok = ok && v[32 * sb + l] == d * (float)q - m;
        }
    }
    CHECK(ok, "q4_k values (6-bit scales and mins of all 8 sub-blocks)");
    t = gguf_find_tensor(g, "t.q6_k");
    ok = !gguf_read_f32(g, t, 0, 256, v, &err);
    for (int e = 0; e < 256; e++) {
        /* value e: half h = e / 128, quarter k = (e % 128) / 32, l = e % 32 */
        int h = e / 128, k = e % 128 / 32, l = e % 32;
        int qli = 64 * h + l + 32 * (k & 1), qhi = 32 * h + l;
        int ql = qli % 16 | (qli % 7) << 4, qh = qhi * 37 % 256;
        int q = ((k < 2 ? ql & 15 : ql >> 4) | ((qh >> (2 * k)) & 3) << 4) - 32;
        float want = 0.25f * (float)(e / 16 - 8) * (float)q;
        ok = ok && v[e] == want;
    }
    CHECK(ok, "q6_k values");
    gguf_close(g);
    free(f.p);
}

/* ---- bad input ----------------------------------------------------------------------------- */

/* Opening must fail with FT_ERR_INPUT, and the message (where + what) must contain each of the
 * given words. */
static void expect_bad(const char *label, const buf *f, const char *w1, const char *w2) {
    const char *path = write_tmp("bad.gguf", f);
    gguf_file *g = NULL;
    ft_error err = {0};
    ft_status st = gguf_open(path, &g, &err);
    char msg[4096];
    snprintf(msg, sizeof msg, "%s: %s (hint: %s)", err.where, err.what, err.hint);
    CHECK(st == FT_ERR_INPUT && !g, "%s: status %d (%s)", label, st, msg);
    CHECK(strstr(err.where, "bad.gguf") != NULL, "%s: the file is not named: %s", label, msg);
    CHECK(!w1 || strstr(msg, w1), "%s: \"%s\" missing from: %s", label, w1, msg);
    CHECK(!w2 || strstr(msg, w2), "%s: \"%s\" missing from: %s", label, w2, msg);
    gguf_close(g);
}

static void patch_u32(buf *f, size_t at, uint32_t v) { memcpy(f->p + at, &v, 4); }
static void patch_u64(buf *f, size_t at, uint64_t v) { memcpy(f->p + at, &v, 8); }

/* A file of one key (given bytes) and no tensors. */
static buf one_kv(const buf *kv) {
    buf ti = {0};
    return assemble(3, 1, kv, 0, &ti, 32, NULL);
}

/* A file of tensors (given infos) over `data` with alignment from general.alignment if a > 0. */
static buf with_tensors(uint64_t nt, const buf *ti, const buf *data, uint32_t a) {
    buf kv = {0};
    if (a) key(&kv, "general.alignment", GGUF_U32), u32(&kv, a);
    buf f = assemble(3, a ? 1 : 0, &kv, nt, ti, a ? a : 32, data);
    free(kv.p);
    return f;
}

static void test_bad(void) {
    buf good = valid_file();
    /* every prefix fails cleanly (the data of the last tensor is what the shortest ones lack) */
    int prefixes_ok = 1;
    for (size_t n = 0; n < good.n; n++) {
        buf cut = {good.p, n, n};
        const char *path = write_tmp("cut.gguf", &cut);
        gguf_file *g = NULL;
        ft_error err = {0};
        ft_status st = gguf_open(path, &g, &err);
        if (st != FT_ERR_INPUT || g || !strstr(err.where, "cut.gguf")) {
            fprintf(stderr, "prefix of %zu bytes: status %d: %s: %s\n", n, st, err.where, err.what);
            prefixes_ok = 0;
        }
        gguf_close(g);
    }
    CHECK(prefixes_ok, "every prefix of the %zu-byte valid file is refused", good.n);

    buf f = valid_file();
    memcpy(f.p, "GGML", 4);
    expect_bad("bad magic", &f, "not a GGUF file", NULL);
    free(f.p);
    f = valid_file();
    patch_u32(&f, 4, 1);
    expect_bad("version 1", &f, "version 1", "versions 2 and 3");
    patch_u32(&f, 4, 4);
    expect_bad("version 4", &f, "version 4", NULL);
    patch_u32(&f, 4, 0x03000000);
    expect_bad("big-endian", &f, "big-endian", NULL);
    patch_u32(&f, 4, 3);
    patch_u64(&f, 8, 1ull << 40);
    expect_bad("absurd tensor count", &f, "1099511627776 tensors", "header");
    patch_u64(&f, 8, NT);
    patch_u64(&f, 16, 100000);
    expect_bad("too many keys for the file", &f, "100000 metadata entries", NULL);
    free(f.p);

    buf kv = {0}, ti = {0}, data = {0};
    key(&kv, "x.type", 13), u32(&kv, 0);
    f = one_kv(&kv);
    expect_bad("unknown value type", &f, "x.type", "unknown value type 13");
    free(f.p), kv.n = 0;
    key(&kv, "x.nested", GGUF_ARR), u32(&kv, GGUF_ARR), u64(&kv, 1);
    u32(&kv, GGUF_U8), u64(&kv, 1), u8(&kv, 1);
    f = one_kv(&kv);
    expect_bad("nested array", &f, "x.nested", "arrays of arrays");
    free(f.p), kv.n = 0;
    key(&kv, "x.arr", GGUF_ARR), u32(&kv, 99), u64(&kv, 0);
    f = one_kv(&kv);
    expect_bad("unknown element type", &f, "x.arr", "element type 99");
    free(f.p), kv.n = 0;
    key(&kv, "x.bool", GGUF_BOOL), u8(&kv, 2);
    f = one_kv(&kv);
    expect_bad("bool 2", &f, "x.bool", "0 or 1");
    free(f.p), kv.n = 0;
    key(&kv, "x.str", GGUF_STR), u64(&kv, 1000), put(&kv, "abc", 3);
    f = one_kv(&kv);
    expect_bad("string length past the end", &f, "x.str", "length 1000");
    free(f.p), kv.n = 0;
    key(&kv, "x.strs", GGUF_ARR), u32(&kv, GGUF_STR), u64(&kv, 1ull << 50);
    f = one_kv(&kv);
    expect_bad("absurd array length", &f, "x.strs", "strings cannot be right");
    free(f.p), kv.n = 0;
    key(&kv, "x.u32s", GGUF_ARR), u32(&kv, GGUF_U32), u64(&kv, 3), u32(&kv, 1), u32(&kv, 2);
    f = one_kv(&kv);
    expect_bad("array past the end", &f, "x.u32s", "3 values");
    free(f.p), kv.n = 0;
    str(&kv, "x.\x01key"), u32(&kv, 99);
    f = one_kv(&kv);
    expect_bad("control byte in a key shown as ?", &f, "x.?key", NULL);
    free(f.p), kv.n = 0;
    u64(&kv, 3), put(&kv, "a\0b", 3), u32(&kv, GGUF_U8), u8(&kv, 0);
    f = one_kv(&kv);
    expect_bad("NUL in a key", &f, "NUL", NULL);
    free(f.p), kv.n = 0;
    key(&kv, "x.dup", GGUF_U8), u8(&kv, 1);
    key(&kv, "x.dup", GGUF_U8), u8(&kv, 2);
    f = assemble(3, 2, &kv, 0, &ti, 32, NULL);
    expect_bad("repeated key", &f, "x.dup", "appears twice");
    free(f.p), kv.n = 0;
    key(&kv, "general.alignment", GGUF_U32), u32(&kv, 48);
    f = one_kv(&kv);
    expect_bad("alignment 48", &f, "general.alignment", "power of two");
    free(f.p), kv.n = 0;
    key(&kv, "general.alignment", GGUF_U64), u64(&kv, 64);
    f = one_kv(&kv);
    expect_bad("alignment as u64", &f, "general.alignment", "expected a u32");
    free(f.p), kv.n = 0;

    /* tensors */
    uint64_t ne[5] = {32, 2, 1, 1, 1};
    for (int i = 0; i < 64 * 4; i++)
        u8(&data, (uint8_t)i);
    tinfo(&ti, "w.unknown", 2, ne, 5, 0);
    f = with_tensors(1, &ti, &data, 0);
    expect_bad("tensor type 5 (removed Q4_3)", &f, "w.unknown", "unknown tensor type 5");
    free(f.p), ti.n = 0;
    tinfo(&ti, "w.big", 2, ne, 1000, 0);
    f = with_tensors(1, &ti, &data, 0);
    expect_bad("tensor type 1000", &f, "w.big", "unknown tensor type 1000");
    free(f.p), ti.n = 0;
    tinfo(&ti, "w.5d", 5, ne, GGML_TYPE_F32, 0);
    f = with_tensors(1, &ti, &data, 0);
    expect_bad("5 dims", &f, "w.5d", "at most 4");
    free(f.p), ti.n = 0;
    uint64_t ne48[] = {48, 1};
    tinfo(&ti, "w.rows", 2, ne48, GGML_TYPE_Q8_0, 0);
    f = with_tensors(1, &ti, &data, 0);
    expect_bad("row not whole blocks", &f, "w.rows", "not a whole number of Q8_0 blocks");
    free(f.p), ti.n = 0;
    uint64_t huge[] = {1ull << 40, 1ull << 40};
    tinfo(&ti, "w.huge", 2, huge, GGML_TYPE_F32, 0);
    f = with_tensors(1, &ti, &data, 0);
    expect_bad("element count overflow", &f, "w.huge", "overflows");
    free(f.p), ti.n = 0;
    tinfo(&ti, "w.past", 2, ne, GGML_TYPE_F32, 64);
    f = with_tensors(1, &ti, &data, 0);
    expect_bad("offset past the end", &f, "w.past", "end past the end of the file");
    free(f.p), ti.n = 0;
    tinfo(&ti, "w.far", 2, ne, GGML_TYPE_F32, 1ull << 62);
    f = with_tensors(1, &ti, &data, 0);
    expect_bad("offset far past the end", &f, "w.far", "end past the end");
    free(f.p), ti.n = 0;
    tinfo(&ti, "w.odd", 1, ne, GGML_TYPE_F32, 4);
    f = with_tensors(1, &ti, &data, 0);
    expect_bad("misaligned offset", &f, "w.odd", "not a multiple of the alignment 32");
    free(f.p), ti.n = 0;
    tinfo(&ti, "w.a", 2, ne, GGML_TYPE_F32, 0);
    tinfo(&ti, "w.b", 1, ne, GGML_TYPE_F32, 128);
    f = with_tensors(2, &ti, &data, 0);
    expect_bad("overlapping tensors", &f, "w.b", "overlap tensor \"w.a\"");
    free(f.p), ti.n = 0;
    tinfo(&ti, "w.a", 1, ne, GGML_TYPE_F32, 0);
    tinfo(&ti, "w.a", 1, ne, GGML_TYPE_F32, 128);
    f = with_tensors(2, &ti, &data, 0);
    expect_bad("repeated tensor name", &f, "w.a", "appears twice");
    free(f.p), ti.n = 0;
    tinfo(&ti, "w.a", 1, ne, GGML_TYPE_F32, 0);
    f = with_tensors(3, &ti, &data, 0);
    expect_bad("more tensors in the header than infos", &f, "tensor info #1", NULL);
    free(f.p), ti.n = 0;
    tinfo(&ti, "w.a", 2, ne, GGML_TYPE_F32, 64);
    f = with_tensors(1, &ti, &data, 64); /* the data section starts at 64: 256 - 64 bytes left */
    expect_bad("alignment 64 moves the data", &f, "w.a", "end past the end");
    free(f.p), ti.n = 0;

    /* a type the reader knows but ftune does not dequantize: opens, read fails naming it */
    uint64_t ne256[] = {256};
    buf qdata = {0};
    for (int i = 0; i < 8 * 18; i++)
        u8(&qdata, 0);
    tinfo(&ti, "w.iq4_nl", 1, ne256, GGML_TYPE_IQ4_NL, 0);
    f = with_tensors(1, &ti, &qdata, 0);
    const char *path = write_tmp("iq4nl.gguf", &f);
    gguf_file *g = NULL;
    ft_error err = {0};
    CHECK(!gguf_open(path, &g, &err), "IQ4_NL file opens: %s", err.what);
    if (g) {
        float v[256];
        const gguf_tensor *t = gguf_find_tensor(g, "w.iq4_nl");
        CHECK(t && t->nbytes == 8 * 18, "IQ4_NL size");
        ft_status st = t ? gguf_read_f32(g, t, 0, 256, v, &err) : FT_OK;
        CHECK(st == FT_ERR_INPUT && strstr(err.where, "w.iq4_nl") && strstr(err.what, "IQ4_NL") &&
                  strstr(err.what, "Q5_K"),
              "IQ4_NL read refused: %s: %s", err.where, err.what);
        gguf_close(g);
    }
    free(f.p), ti.n = 0;
    free(qdata.p);

    /* zero tensors, file ends right after the metadata (no padding): valid */
    key(&kv, "general.architecture", GGUF_STR), str(&kv, "llama");
    buf h = {0};
    put(&h, "GGUF", 4), u32(&h, 2), u64(&h, 0), u64(&h, 1), put(&h, kv.p, kv.n);
    path = write_tmp("v2.gguf", &h);
    g = NULL;
    CHECK(!gguf_open(path, &g, &err) && gguf_version(g) == 2 && gguf_tensor_count(g) == 0,
          "v2 file without tensors or padding: %s", err.what);
    gguf_close(g);
    free(h.p);
    free(kv.p), free(ti.p), free(data.p), free(good.p);

    /* not a file at all */
    g = NULL;
    CHECK(gguf_open(dir, &g, &err) == FT_ERR_INPUT && strstr(err.what, "not a regular file"),
          "a folder: %s", err.what);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/missing.gguf", dir);
    CHECK(gguf_open(missing, &g, &err) == FT_ERR_INPUT && strstr(err.where, "missing.gguf"),
          "a missing file: %s", err.what);
}

/* ---- the real model beside the project ------------------------------------------------------ */

static void test_stories260k(void) {
    const char *path = "../shared/models/stories260K/stories260K.gguf";
    if (access(path, R_OK) != 0) {
        printf("gguf_test: skipped the stories260K check: %s is absent\n", path);
        return;
    }
    gguf_file *g = NULL;
    ft_error err = {0};
    CHECK(!gguf_open(path, &g, &err), "stories260K: %s: %s", err.where, err.what);
    if (!g) return;
    gguf_str s;
    uint32_t ctx;
    const gguf_kv *tok;
    CHECK(gguf_tensor_count(g) == 48, "48 tensors");
    CHECK(!gguf_get_str(g, "general.architecture", &s, &err) && s.n == 5 &&
              !memcmp(s.p, "llama", 5),
          "llama");
    CHECK(!gguf_get_u32(g, "llama.embedding_length", &ctx, &err) && ctx == 64, "C 64");
    CHECK(!gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STR, &tok, &err) && tok->count == 512,
          "512 tokens");
    const gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    CHECK(t && t->type == GGML_TYPE_F32 && t->ne[0] == 64 && t->ne[1] == 512, "token_embd");
    gguf_close(g);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ftune-gguf-test-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    CHECK(ggml_type_info(GGML_TYPE_Q4_K)->block_bytes == 144 &&
              ggml_type_info(GGML_TYPE_Q6_K)->block_bytes == 210 &&
              ggml_type_info(GGML_TYPE_Q4_0)->block_bytes == 18 &&
              ggml_type_info(GGML_TYPE_Q8_0)->block_bytes == 34 &&
              ggml_type_info(GGML_TYPE_Q4_1)->block_bytes == 20 &&
              ggml_type_info(GGML_TYPE_Q5_0)->block_bytes == 22 &&
              ggml_type_info(GGML_TYPE_Q5_1)->block_bytes == 24 &&
              ggml_type_info(GGML_TYPE_Q2_K)->block_bytes == 84 &&
              ggml_type_info(GGML_TYPE_Q3_K)->block_bytes == 110 &&
              ggml_type_info(GGML_TYPE_Q5_K)->block_bytes == 176 && !ggml_type_info(4) &&
              !ggml_type_info(GGML_TYPE_ID_LIMIT),
          "block sizes (ggml-common.h static_asserts)");
    float v[32];
    CHECK(ggml_dequant_row(GGML_TYPE_IQ4_NL, NULL, v, 32) == -1 &&
              ggml_dequant_row(GGML_TYPE_Q8_0, NULL, v, 16) == -1,
          "dequant_row refuses unknown types and partial blocks");
    test_valid();
    test_bad();
    test_stories260k();
    const char *names[] = {"valid.gguf", "bad.gguf", "cut.gguf", "iq4nl.gguf", "v2.gguf"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
    return test_summary("gguf_test");
}
