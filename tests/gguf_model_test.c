/*
 * gguf_model_test.c: GGUF files as models (src/model/gguf_model.c) and their vocabularies
 * (src/tok/gguf_vocab.c).
 *
 * Tiny files are built byte by byte (as gguf_test.c does) and loaded with model_load_with and
 * tok_load:
 *   - the config from the metadata (sizes, head_dim from attention.key_length, eps, rope theta ->
 *     inv_freq, tied output when output.weight is absent, biases when their tensors are there);
 *   - the RoPE rows: in a llama file, Q row r of the model is file row h*D + 2i + s for
 *     r = h*D + s*D/2 + i (llama.cpp's permute undone), for Q and K (Hkv heads) and their biases;
 *     a qwen2 file is read as it is. Rows hold their own file index, so the check is exact;
 *   - storage: F32, Q8_0 and Q4_0 layers kept in that format (rows copied byte for byte);
 *   - phi3: attn_qkv and ffn_up onto the fused qkv_proj / gate_up_proj as stored, the rotated
 *     dims of rope.dimension_count, attention.sliding_window on every layer; longrope factor
 *     tensors refused;
 *   - a SentencePiece ("llama") vocabulary with scores: the merges recovered from the scores give
 *     the expected ids (worked out by hand from generate_merges' order), BOS added;
 *   - bad input: unknown architecture, a missing key, a tensor of the wrong shape, no tokenizer:
 *     FT_ERR_INPUT naming the file and the key or tensor, with a hint;
 *   - ../shared/models/stories260K/stories260K.gguf when present: config, and "Once upon a time"
 *     encodes to transformers' ids (tests/peers/test_gguf_model.py compares whole corpora).
 */
#include "gguf_bytes.h"
#include "io/gguf.h"
#include "model/model.h"
#include "ops/ggml_quants.h"
#include "test.h"
#include "tok/tokenizer.h"

#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a model file ------------------------------------------------------------------------- */

enum { C = 32, H = 4, HKV = 2, D = 8, I = 32, V = 9 };

typedef struct spec {
    const char *arch;
    uint32_t lin_type; /* GGML_TYPE_F32, Q8_0 or Q4_0 for the linear layers */
    const char *drop;  /* a metadata key left out */
    int bad_shape;     /* attn_q one row too many */
    int tokenizer;     /* write the vocabulary */
    int untied;        /* write output.weight */
    int qkv_bias;      /* write attn_q/k/v biases */
    int longrope;      /* phi3: write rope_factors_long/short.weight */
} spec;

typedef struct tensors {
    buf ti, data;
    int n;
} tensors;

static void tensor_begin(tensors *t, const char *name, int nd, uint64_t ne0, uint64_t ne1,
                         uint32_t type) {
    while (t->data.n % 32)
        u8(&t->data, 0);
    str(&t->ti, name);
    u32(&t->ti, (uint32_t)nd);
    u64(&t->ti, ne0);
    if (nd == 2) u64(&t->ti, ne1);
    u32(&t->ti, type);
    u64(&t->ti, t->data.n);
    t->n++;
}

/* A vector of n: element j = base + j / 64. */
static void vec(tensors *t, const char *name, int n, float base) {
    tensor_begin(t, name, 1, (uint64_t)n, 1, GGML_TYPE_F32);
    for (int j = 0; j < n; j++)
        f32(&t->data, base + (float)j / 64.0f);
}

/* A matrix of rows x cols whose row r holds the value r / 16 (exactly representable in every
 * type written: Q8_0 with d = 1/16 and q = r; Q4_0 with d = 1/16 and nibble r + 8 for r < 8). */
static void mat(tensors *t, const char *name, int rows, int cols, uint32_t type) {
    tensor_begin(t, name, 2, (uint64_t)cols, (uint64_t)rows, type);
    for (int r = 0; r < rows; r++) {
        if (type == GGML_TYPE_F32) {
            for (int c = 0; c < cols; c++)
                f32(&t->data, (float)r / 16.0f);
        } else if (type == GGML_TYPE_Q8_0) {
            for (int b = 0; b < cols / 32; b++) {
                u16(&t->data, 0x2C00); /* f16 1/16 */
                for (int j = 0; j < 32; j++)
                    u8(&t->data, (uint8_t)(int8_t)r);
            }
        } else { /* Q4_0: rows < 8 only (the test uses it for small matrices) */
            for (int b = 0; b < cols / 32; b++) {
                u16(&t->data, 0x2C00);
                for (int j = 0; j < 16; j++)
                    u8(&t->data, (uint8_t)(((r % 8) + 8) | ((r % 8) + 8) << 4));
            }
        }
    }
}

static char dir[256];

static const char *write_model(const char *name, const spec *s) {
    buf kv = {0};
    int nkv = 0;
    char k[128];
#define KEY_U32(suffix, v)                                                                         \
    do {                                                                                           \
        snprintf(k, sizeof k, "%s.%s", s->arch, suffix);                                           \
        if (!s->drop || strcmp(s->drop, k)) key(&kv, k, GGUF_U32), u32(&kv, (v)), nkv++;           \
    } while (0)
    key(&kv, "general.architecture", GGUF_STR), str(&kv, s->arch), nkv++;
    KEY_U32("context_length", 128);
    KEY_U32("embedding_length", C);
    KEY_U32("block_count", 1);
    KEY_U32("feed_forward_length", I);
    KEY_U32("attention.head_count", H);
    KEY_U32("attention.head_count_kv", HKV);
    KEY_U32("attention.key_length", D);
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", s->arch);
    key(&kv, k, GGUF_F32), f32(&kv, 1e-5f), nkv++;
    snprintf(k, sizeof k, "%s.rope.freq_base", s->arch);
    key(&kv, k, GGUF_F32), f32(&kv, 500.0f), nkv++;
    int phi3 = !strcmp(s->arch, "phi3");
    if (phi3) { /* half of each head rotated, a window of 16 (Phi3MiniModel's keys) */
        KEY_U32("rope.dimension_count", D / 2);
        KEY_U32("attention.sliding_window", 16);
    }
#undef KEY_U32
    if (s->tokenizer) {
        /* SentencePiece-style: generate_merges over these scores gives, best first,
         * (▁ a) -4, (a b) -5, (▁a b) and (▁ ab) -6 (longer left piece first) */
        static const char *toks[V] = {"<unk>",
                                      "<s>",
                                      "</s>",
                                      "\xe2\x96\x81",
                                      "a",
                                      "b",
                                      "\xe2\x96\x81"
                                      "a",
                                      "ab",
                                      "\xe2\x96\x81"
                                      "ab"};
        static const float scores[V] = {0, 0, 0, -1, -2, -3, -4, -5, -6};
        static const int32_t types[V] = {2, 3, 3, 1, 1, 1, 1, 1, 1};
        key(&kv, "tokenizer.ggml.model", GGUF_STR), str(&kv, "llama"), nkv++;
        key(&kv, "tokenizer.ggml.tokens", GGUF_ARR), u32(&kv, GGUF_STR), u64(&kv, V), nkv++;
        for (int i = 0; i < V; i++)
            str(&kv, toks[i]);
        key(&kv, "tokenizer.ggml.scores", GGUF_ARR), u32(&kv, GGUF_F32), u64(&kv, V), nkv++;
        for (int i = 0; i < V; i++)
            f32(&kv, scores[i]);
        key(&kv, "tokenizer.ggml.token_type", GGUF_ARR), u32(&kv, GGUF_I32), u64(&kv, V), nkv++;
        for (int i = 0; i < V; i++)
            u32(&kv, (uint32_t)types[i]);
        key(&kv, "tokenizer.ggml.bos_token_id", GGUF_U32), u32(&kv, 1), nkv++;
        key(&kv, "tokenizer.ggml.eos_token_id", GGUF_U32), u32(&kv, 2), nkv++;
        key(&kv, "tokenizer.chat_template", GGUF_STR), str(&kv, "{{ messages }}"), nkv++;
    }
    tensors t = {0};
    mat(&t, "token_embd.weight", V, C, GGML_TYPE_F32);
    vec(&t, "output_norm.weight", C, 1.0f);
    if (s->untied) mat(&t, "output.weight", V, C, GGML_TYPE_F32);
    vec(&t, "blk.0.attn_norm.weight", C, 1.0f);
    vec(&t, "blk.0.ffn_norm.weight", C, 1.0f);
    if (s->longrope) {
        vec(&t, "rope_factors_long.weight", D / 4, 1.0f);
        vec(&t, "rope_factors_short.weight", D / 4, 1.0f);
    }
    if (phi3) { /* fused as Hugging Face's qkv_proj and gate_up_proj */
        mat(&t, "blk.0.attn_qkv.weight", (H + 2 * HKV) * D, C, s->lin_type);
    } else {
        mat(&t, "blk.0.attn_q.weight", H * D + (s->bad_shape ? 1 : 0), C, s->lin_type);
        mat(&t, "blk.0.attn_k.weight", HKV * D, C, s->lin_type);
        mat(&t, "blk.0.attn_v.weight", HKV * D, C, s->lin_type);
    }
    if (s->qkv_bias) {
        vec(&t, "blk.0.attn_q.bias", H * D, 0.0f);
        vec(&t, "blk.0.attn_k.bias", HKV * D, 0.0f);
        vec(&t, "blk.0.attn_v.bias", HKV * D, 0.0f);
    }
    mat(&t, "blk.0.attn_output.weight", C, H * D, s->lin_type);
    if (phi3) {
        mat(&t, "blk.0.ffn_up.weight", 2 * I, C, s->lin_type);
    } else {
        mat(&t, "blk.0.ffn_gate.weight", I, C, s->lin_type);
        mat(&t, "blk.0.ffn_up.weight", I, C, s->lin_type);
    }
    mat(&t, "blk.0.ffn_down.weight", C, I, s->lin_type);
    buf f = {0};
    put(&f, "GGUF", 4);
    u32(&f, 3);
    u64(&f, (uint64_t)t.n);
    u64(&f, (uint64_t)nkv);
    put(&f, kv.p, kv.n);
    put(&f, t.ti.p, t.ti.n);
    while (f.n % 32)
        u8(&f, 0);
    put(&f, t.data.p, t.data.n);
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp) abort();
    fwrite(f.p, 1, f.n, fp);
    fclose(fp);
    free(kv.p), free(t.ti.p), free(t.data.p), free(f.p);
    return path;
}

/* ---- checks ------------------------------------------------------------------------------- */

/* The file row that model row r of a llama Q/K matrix (heads of D rows) comes from. */
static int file_row(int r) {
    int h = r / D, j = r % D, s = j / (D / 2), i = j % (D / 2);
    return h * D + 2 * i + s;
}

static void check_rows(const qtensor *w, int permuted, const char *what) {
    float row[C];
    int bad = 0;
    for (int r = 0; r < w->rows; r++) {
        qtensor_dequant_rows(w, r, 1, row);
        float want = (float)(permuted ? file_row(r) : r) / 16.0f;
        bad += row[0] != want || row[w->cols - 1] != want;
    }
    CHECK(!bad, "%s: %d rows not where expected", what, bad);
}

static void test_llama(uint32_t type, qformat want_fmt, const char *name) {
    spec s = {"llama", type, NULL, 0, 1, 0, 0, 0};
    const char *path = write_model(name, &s);
    model m;
    ft_error err = {0};
    ft_status st = model_load_with(path, NULL, &m, &err);
    REQUIRE(st == FT_OK, "%s: %s: %s (%s)", name, err.where, err.what, err.hint);
    const model_config *c = &m.cfg;
    CHECK(c->C == C && c->H == H && c->Hkv == HKV && c->D == D && c->I == I && c->L == 1 &&
              c->V == V,
          "%s: sizes C %d H %d Hkv %d D %d I %d L %d V %d", name, c->C, c->H, c->Hkv, c->D, c->I,
          c->L, c->V);
    CHECK(c->tie_embeddings && !c->attn_bias && c->max_pos == 128, "%s: tie/bias/max_pos", name);
    CHECK_NEAR(c->eps, 1e-5f, 0, "eps");
    CHECK_NEAR(c->inv_freq[1], 1.0f / powf(500.0f, 2.0f / D), 1e-7, "inv_freq[1] (theta 500)");
    CHECK(c->bos_token_id == 1 && c->eos_token_id == 2, "%s: bos/eos", name);
    const block_weights *b = &m.blocks[0];
    CHECK(b->lin[LIN_Q].W.fmt == want_fmt && b->lin[LIN_DOWN].W.fmt == want_fmt,
          "%s: stored as %s, expected %s", name, qformat_info(b->lin[LIN_Q].W.fmt)->name,
          qformat_info(want_fmt)->name);
    if (type != GGML_TYPE_Q4_0) { /* the Q4_0 matrices hold rows mod 8 */
        check_rows(&b->lin[LIN_Q].W, 1, "q (llama: un-permuted)");
        check_rows(&b->lin[LIN_K].W, 1, "k (llama: un-permuted, Hkv heads)");
        check_rows(&b->lin[LIN_V].W, 0, "v (as stored)");
        check_rows(&b->lin[LIN_UP].W, 0, "up (as stored)");
    }
    CHECK(m.lm_head.data == m.wte.data, "%s: tied LM head shares the embedding", name);
    model_free(&m);
}

static void test_qwen2(void) {
    spec s = {"qwen2", GGML_TYPE_F32, NULL, 0, 0, 1, 1, 0};
    const char *path = write_model("qwen2.gguf", &s);
    model m;
    ft_error err = {0};
    REQUIRE(model_load_with(path, NULL, &m, &err) == FT_OK, "qwen2: %s: %s", err.where, err.what);
    CHECK(!m.cfg.tie_embeddings && m.cfg.attn_bias, "qwen2: untied, q/k/v biases");
    check_rows(&m.blocks[0].lin[LIN_Q].W, 0, "qwen2 q (NeoX rotation: not permuted)");
    CHECK(m.blocks[0].lin[LIN_Q].b != NULL, "qwen2: q bias");
    model_free(&m);
}

/* phi3: attn_qkv and ffn_up (gate|up) onto the fused layers, rows as stored; half-head rope;
 * the sliding window on every layer */
static void test_phi3(uint32_t type, qformat want_fmt, const char *name) {
    spec s = {"phi3", type, NULL, 0, 0, 1, 0, 0};
    const char *path = write_model(name, &s);
    model m;
    ft_error err = {0};
    REQUIRE(model_load_with(path, NULL, &m, &err) == FT_OK, "%s: %s: %s", name, err.where,
            err.what);
    const model_config *c = &m.cfg;
    CHECK(c->arch->fused_qkv && c->arch->fused_gate_up, "%s: fused architecture", name);
    CHECK(c->rot_dim == D / 2 && c->window[0] == 16, "%s: rot_dim %d window %d", name, c->rot_dim,
          c->window[0]);
    CHECK_NEAR(c->inv_freq[1], 1.0f / powf(500.0f, 2.0f / (D / 2)), 1e-7,
               "phi3 inv_freq[1] over the rotated dims");
    const block_weights *b = &m.blocks[0];
    CHECK(b->lin[LIN_QKV].W.rows == (H + 2 * HKV) * D && b->lin[LIN_GATE_UP].W.rows == 2 * I &&
              !b->lin[LIN_Q].out && !b->lin[LIN_UP].out,
          "%s: fused shapes", name);
    CHECK(b->lin[LIN_QKV].W.fmt == want_fmt, "%s: stored as %s", name,
          qformat_info(b->lin[LIN_QKV].W.fmt)->name);
    check_rows(&b->lin[LIN_QKV].W, 0, "phi3 qkv (NeoX rope: as stored)");
    check_rows(&b->lin[LIN_GATE_UP].W, 0, "phi3 gate_up (gate rows, then up rows)");
    model_free(&m);
}

static void test_vocab(void) {
    spec s = {"llama", GGML_TYPE_F32, NULL, 0, 1, 0, 0, 0};
    const char *path = write_model("vocab.gguf", &s);
    tokenizer *t = NULL;
    ft_error err = {0};
    REQUIRE(tok_load(path, &t, &err) == FT_OK, "tok_load: %s: %s", err.where, err.what);
    struct {
        const char *text;
        int32_t ids[6];
        size_t n;
    } cases[] = {
        {"ab", {1, 8}, 2},       /* ▁a, then ▁a+b -> ▁ab */
        {"ba", {1, 3, 5, 4}, 4}, /* no merge applies */
        {"a ab", {1, 6, 8}, 3},  /* spaces become ▁ */
        {"<s>ab", {1, 1, 7}, 3}, /* <s> is special: split out; "ab" after it gets no ▁ */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        REQUIRE(tok_encode(t, cases[i].text, strlen(cases[i].text), 1, &ids, &n, &err) == FT_OK,
                "encode: %s", err.what);
        int same = n == cases[i].n && !memcmp(ids, cases[i].ids, n * sizeof *ids);
        CHECK(same, "\"%s\": %zu ids, first %d %d %d", cases[i].text, n, n > 0 ? ids[0] : -1,
              n > 1 ? ids[1] : -1, n > 2 ? ids[2] : -1);
        char *text = NULL;
        size_t len = 0;
        if (same && !strchr(cases[i].text, '<')) {
            REQUIRE(tok_decode(t, ids, n, 1, &text, &len, &err) == FT_OK, "decode");
            CHECK(!strcmp(text, cases[i].text), "decode \"%s\" gave \"%s\"", cases[i].text, text);
            free(text);
        }
        free(ids);
    }
    tok_free(t);
    cJSON *cfg = NULL;
    REQUIRE(tok_config_load(path, &cfg, &err) == FT_OK, "tok_config_load: %s", err.what);
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(cfg, "eos_token");
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    CHECK(cJSON_IsString(eos) && !strcmp(eos->valuestring, "</s>"), "eos_token");
    CHECK(cJSON_IsString(tpl) && !strcmp(tpl->valuestring, "{{ messages }}"), "chat_template");
    cJSON_Delete(cfg);
}

static void expect_error(const spec *s, const char *name, const char *needle, int tok) {
    const char *path = write_model(name, s);
    ft_error err = {0};
    ft_status st;
    if (tok) {
        tokenizer *t = NULL;
        st = tok_load(path, &t, &err);
        if (!st) tok_free(t);
    } else {
        model m;
        st = model_load_with(path, NULL, &m, &err);
        if (!st) model_free(&m);
    }
    CHECK(st == FT_ERR_INPUT, "%s: status %d", name, st);
    CHECK(strstr(err.where, path) && strstr(err.where, needle), "%s: where \"%s\" lacks %s", name,
          err.where, needle);
    CHECK(err.hint[0], "%s: no hint (%s)", name, err.what);
}

static void test_errors(void) {
    spec arch = {"gptx", GGML_TYPE_F32, NULL, 0, 1, 0, 0, 0};
    expect_error(&arch, "arch.gguf", "general.architecture", 0);
    spec miss = {"llama", GGML_TYPE_F32, "llama.attention.head_count", 0, 1, 0, 0, 0};
    expect_error(&miss, "miss.gguf", "llama.attention.head_count", 0);
    spec shape = {"llama", GGML_TYPE_F32, NULL, 1, 1, 0, 0, 0};
    expect_error(&shape, "shape.gguf", "blk.0.attn_q.weight", 0);
    spec notok = {"llama", GGML_TYPE_F32, NULL, 0, 0, 0, 0, 0};
    expect_error(&notok, "notok.gguf", "tokenizer.ggml.model", 1);
    spec longrope = {"phi3", GGML_TYPE_F32, NULL, 0, 1, 1, 0, 1};
    expect_error(&longrope, "longrope.gguf", "rope_factors_long.weight", 0);
}

static void test_stories(void) {
    const char *path = "../shared/models/stories260K/stories260K.gguf";
    if (access(path, R_OK)) {
        fprintf(stderr, "gguf_model_test: %s absent, skipped\n", path);
        return;
    }
    model m;
    ft_error err = {0};
    REQUIRE(model_load_with(path, NULL, &m, &err) == FT_OK, "stories: %s: %s", err.where, err.what);
    CHECK(m.cfg.C == 64 && m.cfg.L == 5 && m.cfg.H == 8 && m.cfg.Hkv == 4 && m.cfg.V == 512 &&
              m.cfg.I == 172 && !m.cfg.tie_embeddings,
          "stories260K config");
    model_free(&m);
    tokenizer *t = NULL;
    REQUIRE(tok_load(path, &t, &err) == FT_OK, "stories tokenizer: %s", err.what);
    int32_t *ids = NULL, want[] = {1, 403, 407, 261, 378};
    size_t n = 0;
    REQUIRE(tok_encode(t, "Once upon a time", 16, 1, &ids, &n, &err) == FT_OK, "encode");
    CHECK(n == 5 && !memcmp(ids, want, sizeof want), "\"Once upon a time\": %zu ids", n);
    free(ids);
    tok_free(t);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ftune_gguf_model_test.%d", (int)getpid());
    mkdir(dir, 0700);
    test_llama(GGML_TYPE_F32, QF_F32, "llama_f32.gguf");
    test_llama(GGML_TYPE_Q8_0, QF_Q8_0, "llama_q8.gguf");
    test_llama(GGML_TYPE_Q4_0, QF_Q4_0, "llama_q4.gguf");
    test_qwen2();
    test_phi3(GGML_TYPE_F32, QF_F32, "phi3_f32.gguf");
    test_phi3(GGML_TYPE_Q8_0, QF_Q8_0, "phi3_q8.gguf");
    test_vocab();
    test_errors();
    test_stories();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary("gguf_model_test");
}
