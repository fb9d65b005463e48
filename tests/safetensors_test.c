/*
 * safetensors_test.c: the safetensors reader and writer.
 *
 * - Round trip: tensors written by st_writer_save (F32, F16, BF16, I64, odd shapes, a 0-size
 *   tensor, a scalar) read back byte-identical through st_open / st_find / st_read_f32; the
 *   header length is a multiple of 8 and the header is padded with spaces (the layout rule of the
 *   Python library), metadata keys come back.
 * - Corruptions, each made by editing a good file's bytes or writing a header by hand: every one
 *   must be FT_ERR_INPUT, and the message must name the file and (where there is one) the tensor.
 * - Sharded folders: index + two shards open as one set; a missing shard and a name missing from
 *   its shard are errors naming the file.
 * (The f16 / bf16 conversions are base/half.h's, tested in half_test.c.)
 */
#include "io/safetensors.h"
#include "test.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static void path_of(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

/* A file made of a hand-written header and `data_len` bytes of data. */
static void write_raw(const char *path, const char *header, size_t data_len) {
    size_t hn = strlen(header);
    unsigned char *buf = calloc(1, 8 + hn + data_len + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(buf + 8, header, hn);
    write_bytes(path, buf, 8 + hn + data_len);
    free(buf);
}

/* Open must fail with FT_ERR_INPUT and the message must mention each of the given words. */
static void expect_bad(const char *path, const char *w1, const char *w2, const char *label) {
    st_set *s = NULL;
    ft_error err;
    memset(&err, 0, sizeof err);
    int st = st_open(path, &s, &err);
    CHECK(st == FT_ERR_INPUT, "%s: status %d", label, st);
    CHECK(s == NULL, "%s: no set on failure", label);
    char all[2200];
    snprintf(all, sizeof all, "%s | %s | %s", err.where, err.what, err.hint);
    CHECK(strstr(all, path) != NULL, "%s: message names the file: %s", label, all);
    if (w1) CHECK(strstr(all, w1) != NULL, "%s: message mentions '%s': %s", label, w1, all);
    if (w2) CHECK(strstr(all, w2) != NULL, "%s: message mentions '%s': %s", label, w2, all);
    if (s) st_close(s);
}

static void test_round_trip(void) {
    char path[512];
    path_of(path, sizeof path, "rt.safetensors");
    float a[2 * 3 * 5];
    for (int i = 0; i < 30; i++)
        a[i] = (float)i * 0.37f - 4.1f;
    uint16_t h[7], bh[3 * 1 * 3];
    for (int i = 0; i < 7; i++)
        h[i] = f32_to_f16((float)i / 3.0f - 1.0f);
    for (int i = 0; i < 9; i++)
        bh[i] = f32_to_bf16((float)i * 1.7e-3f - 0.01f);
    int64_t ids[4] = {-1, 0, 1, (int64_t)1 << 40};
    float scalar = 2.5f;
    int64_t sa[3] = {2, 3, 5}, sh[1] = {7}, sb[3] = {3, 1, 3}, si[1] = {4}, sz[2] = {0, 4};
    ft_error err;
    st_writer *w = st_writer_new();
    CHECK(st_writer_add(w, "model.a", ST_F32, 3, sa, a, &err) == FT_OK, "add a");
    CHECK(st_writer_add(w, "h\"quoted\\name", ST_F16, 1, sh, h, &err) == FT_OK, "add h");
    CHECK(st_writer_add(w, "b", ST_BF16, 3, sb, bh, &err) == FT_OK, "add b");
    CHECK(st_writer_add(w, "ids", ST_I64, 1, si, ids, &err) == FT_OK, "add ids");
    CHECK(st_writer_add(w, "empty", ST_F32, 2, sz, NULL, &err) == FT_OK, "add empty");
    CHECK(st_writer_add(w, "scalar", ST_F32, 0, NULL, &scalar, &err) == FT_OK, "add scalar");
    CHECK(st_writer_add(w, "b", ST_F32, 1, sh, a, &err) == FT_ERR_INPUT, "duplicate name refused");
    st_writer_meta(w, "step", "12");
    int st = st_writer_save(w, path, &err);
    CHECK(st == FT_OK, "save: %s %s", err.where, err.what);
    st_writer_free(w);

    size_t n;
    unsigned char *raw = test_read_file(path, &n);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--)
        hn = hn << 8 | raw[i];
    CHECK(hn % 8 == 0, "header length %llu is a multiple of 8", (unsigned long long)hn);
    CHECK(raw[8] == '{', "header starts with {");
    size_t want = 30 * 4 + 7 * 2 + 9 * 2 + 4 * 8 + 0 + 4;
    CHECK(n == 8 + hn + want, "file size %zu = 8 + header + %zu data bytes", n, want);
    free(raw);

    st_set *s = NULL;
    st = st_open(path, &s, &err);
    CHECK(st == FT_OK, "open: %s %s", err.where, err.what);
    if (st) return;
    CHECK(st_count(s) == 6, "count %d", st_count(s));
    CHECK(st_metadata(s, "format") && !strcmp(st_metadata(s, "format"), "pt"), "format pt");
    CHECK(st_metadata(s, "step") && !strcmp(st_metadata(s, "step"), "12"), "added metadata");
    CHECK(st_metadata(s, "nope") == NULL, "absent metadata");
    const st_tensor *t = st_find(s, "model.a");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 3 && t->shape[2] == 5 && t->nbytes == 120 &&
              !memcmp(t->data, a, 120),
          "F32 tensor back byte-identical");
    CHECK(t && ((uintptr_t)t->data % 4) == 0, "F32 data aligned (header padded to 8)");
    float back[30];
    CHECK(st_read_f32(s, "model.a", 3, sa, back, &err) == FT_OK && !memcmp(back, a, 120),
          "st_read_f32 of F32");
    t = st_find(s, "h\"quoted\\name");
    CHECK(t && t->dtype == ST_F16 && !memcmp(t->data, h, 14), "F16 tensor with an escaped name");
    float hf[7];
    CHECK(st_read_f32(s, "h\"quoted\\name", 1, sh, hf, &err) == FT_OK, "read f16");
    for (int i = 0; i < 7; i++)
        CHECK(hf[i] == f16_to_f32(h[i]), "f16 value %d", i);
    float bf[9];
    CHECK(st_read_f32(s, "b", 3, sb, bf, &err) == FT_OK, "read bf16");
    for (int i = 0; i < 9; i++)
        CHECK(bf[i] == bf16_to_f32(bh[i]), "bf16 value %d", i);
    t = st_find(s, "ids");
    CHECK(t && t->dtype == ST_I64 && !memcmp(t->data, ids, 32), "I64 tensor");
    CHECK(st_read_f32(s, "ids", 1, si, back, &err) == FT_ERR_INPUT && strstr(err.what, "I64"),
          "I64 is not read as floats: %s", err.what);
    t = st_find(s, "empty");
    CHECK(t && t->nbytes == 0 && t->ndim == 2 && t->shape[0] == 0, "0-size tensor");
    CHECK(st_read_f32(s, "empty", 2, sz, back, &err) == FT_OK, "read 0-size");
    t = st_find(s, "scalar");
    CHECK(t && t->ndim == 0 && t->nbytes == 4, "scalar");
    /* shape mismatch and missing tensor */
    int64_t wrong[3] = {2, 5, 3};
    st = st_read_f32(s, "model.a", 3, wrong, back, &err);
    CHECK(st == FT_ERR_INPUT && strstr(err.where, path) && strstr(err.where, "model.a") &&
              strstr(err.what, "[2, 5, 3]") && strstr(err.what, "[2, 3, 5]"),
          "shape mismatch names file, tensor, both shapes: %s | %s", err.where, err.what);
    st = st_read_f32(s, "model.missing", 1, sh, back, &err);
    CHECK(st == FT_ERR_INPUT && strstr(err.where, path) && strstr(err.where, "model.missing"),
          "missing tensor: %s | %s", err.where, err.what);
    CHECK(st_find(s, "zzz") == NULL && st_find(s, "") == NULL, "find absent");
    st_close(s);
}

/* Many tensors: st_find must return each by name. */
static void test_many(void) {
    char path[512];
    path_of(path, sizeof path, "many.safetensors");
    enum { N = 3000 };
    static float vals[N];
    char names[N][40];
    st_writer *w = st_writer_new();
    ft_error err;
    int64_t one[1] = {1};
    for (int i = 0; i < N; i++) {
        vals[i] = (float)i;
        snprintf(names[i], sizeof names[i], "model.layers.%d.w", (i * 7919) % N);
        st_writer_add(w, names[i], ST_F32, 1, one, &vals[i], &err);
    }
    CHECK(st_writer_save(w, path, &err) == FT_OK, "save many");
    st_writer_free(w);
    st_set *s;
    CHECK(st_open(path, &s, &err) == FT_OK, "open many");
    int ok = 1;
    for (int i = 0; i < N; i++) {
        const st_tensor *t = st_find(s, names[i]);
        float v;
        if (!t) {
            ok = 0;
            break;
        }
        memcpy(&v, t->data, 4);
        if (v != (float)i) ok = 0;
    }
    CHECK(ok && st_count(s) == N, "all %d tensors found by name", N);
    st_close(s);
}

static void test_corruptions(void) {
    char good[512], p[512];
    path_of(good, sizeof good, "good.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t s23[2] = {2, 3};
    ft_error err;
    st_writer *w = st_writer_new();
    st_writer_add(w, "w", ST_F32, 2, s23, a, &err);
    st_writer_save(w, good, &err);
    st_writer_free(w);
    size_t n;
    unsigned char *raw = test_read_file(good, &n);

    /* truncated data: the last tensor's end is past the end of the file */
    path_of(p, sizeof p, "trunc.safetensors");
    write_bytes(p, raw, n - 5);
    expect_bad(p, "\"w\"", "truncated", "truncated data");
    /* truncated inside the header / tiny file */
    path_of(p, sizeof p, "tiny.safetensors");
    write_bytes(p, raw, 5);
    expect_bad(p, "8-byte", NULL, "5-byte file");
    path_of(p, sizeof p, "hdrtrunc.safetensors");
    write_bytes(p, raw, 20);
    expect_bad(p, "header length", NULL, "header length larger than the file");
    /* header length absurd */
    path_of(p, sizeof p, "hdrhuge.safetensors");
    unsigned char *c = malloc(n);
    memcpy(c, raw, n);
    c[6] = 0x7f;
    write_bytes(p, c, n);
    expect_bad(p, "header length", "100 MB", "header length over 100 MB");
    free(c);
    /* malformed header JSON: line/column in the message */
    path_of(p, sizeof p, "badjson.safetensors");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\",\n \"shape\": [2 3], \"data_offsets\": [0, 24]}}",
              24);
    expect_bad(p, ":2:", "JSON", "malformed JSON");
    path_of(p, sizeof p, "notjson.safetensors");
    write_raw(p, "hello world", 0);
    expect_bad(p, "JSON object", NULL, "header not an object");
    /* offsets out of range */
    path_of(p, sizeof p, "range.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]}}", 24);
    expect_bad(p, "\"w\"", "beyond", "offsets out of range");
    path_of(p, sizeof p, "neg.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[-8,16]}}", 24);
    expect_bad(p, "\"w\"", "data_offsets", "negative offset");
    path_of(p, sizeof p, "backw.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 24);
    expect_bad(p, "\"w\"", "after end", "begin > end");
    /* shape x dtype does not match the offsets */
    path_of(p, sizeof p, "size.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
    expect_bad(p, "\"w\"", "needs 12 bytes", "shape x dtype vs offsets");
    path_of(p, sizeof p, "ovf.safetensors");
    write_raw(p,
              "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,"
              "0]}}",
              0);
    expect_bad(p, "\"w\"", "2^64", "shape product overflows");
    path_of(p, sizeof p, "negshape.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2,3],\"data_offsets\":[0,24]}}", 24);
    expect_bad(p, "\"w\"", "shape[0]", "negative dimension");
    path_of(p, sizeof p, "fracshape.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5,4],\"data_offsets\":[0,24]}}", 24);
    expect_bad(p, "\"w\"", "shape[0]", "fractional dimension");
    path_of(p, sizeof p, "dims.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
              4);
    expect_bad(p, "\"w\"", "dimensions", "too many dimensions");
    /* overlapping tensors */
    path_of(p, sizeof p, "overlap.safetensors");
    write_raw(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
              24);
    expect_bad(p, "\"b\"", "overlap", "overlapping tensors");
    /* empty tensors at the same offset are fine */
    path_of(p, sizeof p, "empties.safetensors");
    write_raw(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"c\":{\"dtype\":\"BOOL\",\"shape\":[0,3],\"data_offsets\":[8,8]}}",
              8);
    st_set *s = NULL;
    CHECK(st_open(p, &s, &err) == FT_OK, "empty tensors inside another's range: %s", err.what);
    st_close(s);
    /* unknown dtype */
    path_of(p, sizeof p, "dtype.safetensors");
    write_raw(p, "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2);
    expect_bad(p, "\"w\"", "F8_E4M3", "unknown dtype");
    path_of(p, sizeof p, "nodtype.safetensors");
    write_raw(p, "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, "\"w\"", "dtype", "missing dtype");
    /* bad metadata */
    path_of(p, sizeof p, "meta.safetensors");
    write_raw(p, "{\"__metadata__\":{\"format\":1}}", 0);
    expect_bad(p, "__metadata__", "format", "metadata value not a string");
    /* repeated name */
    path_of(p, sizeof p, "dup.safetensors");
    write_raw(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              8);
    expect_bad(p, "\"a\"", "twice", "repeated name");
    /* missing file */
    path_of(p, sizeof p, "absent.safetensors");
    expect_bad(p, "cannot open", NULL, "missing file");
    free(raw);
}

static void write_tensor_file(const char *name, const char *tname, const float *v, int64_t n) {
    char p[512];
    path_of(p, sizeof p, name);
    ft_error err;
    st_writer *w = st_writer_new();
    st_writer_add(w, tname, ST_F32, 1, &n, v, &err);
    st_writer_save(w, p, &err);
    st_writer_free(w);
}

static void test_sharded(void) {
    char sub[512], p[512];
    snprintf(sub, sizeof sub, "%s/sharded", dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", sub);
    CHECK(system(cmd) == 0, "mkdir");
    float x[3] = {1, 2, 3}, y[2] = {4, 5};
    write_tensor_file("sharded/model-00001-of-00002.safetensors", "x", x, 3);
    write_tensor_file("sharded/model-00002-of-00002.safetensors", "y", y, 2);
    path_of(p, sizeof p, "sharded/model.safetensors.index.json");
    const char *idx = "{\"metadata\": {\"total_size\": 20}, \"weight_map\": {"
                      "\"x\": \"model-00001-of-00002.safetensors\","
                      "\"y\": \"model-00002-of-00002.safetensors\"}}";
    write_bytes(p, idx, strlen(idx));
    st_set *s = NULL;
    ft_error err;
    int st = st_open_dir(sub, &s, &err);
    CHECK(st == FT_OK, "open sharded: %s %s", err.where, err.what);
    if (!st) {
        CHECK(st_count(s) == 2, "two tensors");
        float b[3];
        int64_t s3 = 3, s2 = 2;
        CHECK(st_read_f32(s, "x", 1, &s3, b, &err) == FT_OK && b[2] == 3, "x from shard 1");
        CHECK(st_read_f32(s, "y", 1, &s2, b, &err) == FT_OK && b[1] == 5, "y from shard 2");
        const st_tensor *t = st_find(s, "y");
        CHECK(t && strstr(t->file, "00002"), "tensor knows its shard");
        st_close(s);
    }
    /* a name in the index that its shard lacks */
    const char *idx2 = "{\"weight_map\": {\"x\": \"model-00001-of-00002.safetensors\","
                       "\"z\": \"model-00002-of-00002.safetensors\"}}";
    write_bytes(p, idx2, strlen(idx2));
    st = st_open_dir(sub, &s, &err);
    CHECK(st == FT_ERR_INPUT && strstr(err.where, "\"z\"") && strstr(err.where, "00002"),
          "name missing from its shard: %s | %s", err.where, err.what);
    /* a missing shard */
    const char *idx3 = "{\"weight_map\": {\"x\": \"model-00001-of-00002.safetensors\","
                       "\"y\": \"model-00003-of-00003.safetensors\"}}";
    write_bytes(p, idx3, strlen(idx3));
    st = st_open_dir(sub, &s, &err);
    CHECK(st == FT_ERR_INPUT && strstr(err.what, "model-00003-of-00003.safetensors") &&
              strstr(err.where, "index.json"),
          "missing shard: %s | %s", err.where, err.what);
    /* malformed index */
    write_bytes(p, "{\"weight_map\": [", 16);
    st = st_open_dir(sub, &s, &err);
    CHECK(st == FT_ERR_INPUT && strstr(err.where, "index.json:1:"), "bad index JSON: %s",
          err.where);
    /* neither file */
    st = st_open_dir(dir, &s, &err);
    CHECK(st == FT_ERR_INPUT && strstr(err.where, dir) && strstr(err.what, "model.safetensors") &&
              err.hint[0],
          "empty folder: %s | %s", err.where, err.what);
    /* single-file folder */
    float z[1] = {7};
    write_tensor_file("model.safetensors", "z", z, 1);
    st = st_open_dir(dir, &s, &err);
    CHECK(st == FT_OK && st_find(s, "z"), "folder with model.safetensors");
    if (!st) st_close(s);
}

/* Random byte edits of a good file (header and data): opening must either succeed or fail with
 * FT_ERR_INPUT, never crash or read out of bounds (this runs under ASan in `make asan`). */
static void test_fuzz(void) {
    char good[512], p[512];
    path_of(good, sizeof good, "fz-good.safetensors");
    path_of(p, sizeof p, "fz.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {1, 2, 3};
    int64_t s23[2] = {2, 3}, s3[1] = {3};
    ft_error err;
    st_writer *w = st_writer_new();
    st_writer_add(w, "a.weight", ST_F32, 2, s23, a, &err);
    st_writer_add(w, "b", ST_BF16, 1, s3, h, &err);
    st_writer_save(w, good, &err);
    st_writer_free(w);
    size_t n;
    unsigned char *raw = test_read_file(good, &n), *c = malloc(n);
    const char pool[] = "{}[],:\"0123456789-.eE FBIU";
    uint32_t state = 99;
    int bad = 0, ok = 0;
    for (int it = 0; it < 1500; it++) {
        memcpy(c, raw, n);
        size_t len = n;
        int edits = 1 + it % 4;
        for (int e = 0; e < edits; e++) {
            state = state * 1664525u + 1013904223u;
            size_t pos = (state >> 8) % n;
            state = state * 1664525u + 1013904223u;
            if (it % 3 == 0)
                c[pos] = (unsigned char)pool[(state >> 8) % (sizeof pool - 1)];
            else
                c[pos] = (unsigned char)(state >> 24);
        }
        if (it % 10 == 0) len = (state >> 4) % n; /* and some truncations */
        write_bytes(p, c, len);
        st_set *s = NULL;
        int st = st_open(p, &s, &err);
        if (st == FT_OK) {
            ok++;
            float v[6];
            for (int i = 0; i < st_count(s); i++) {
                const st_tensor *t = st_at(s, i);
                if (t->nbytes <= sizeof v &&
                    (t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16))
                    st_read_f32(s, t->name, t->ndim, t->shape, v, &err);
            }
            st_close(s);
        } else if (st != FT_ERR_INPUT || !err.where[0] || !err.what[0]) {
            bad++;
        }
    }
    CHECK(bad == 0, "fuzz: %d openings failed without an input error (%d opened)", bad, ok);
    printf("fuzz: 1500 mutated files, %d opened, the rest refused with input errors\n", ok);
    free(c);
    free(raw);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ftune-st-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_many();
    test_corruptions();
    test_sharded();
    test_fuzz();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary("safetensors");
}
