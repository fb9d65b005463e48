/*
 * infer_test.c: generation's parts against references.
 *
 * - kv_attention (queries continuing a cached prefix, with and without a sliding window) against
 *   attention_forward_ref over the whole sequence: 1e-5 (fp32 sums in another order); the bf16
 *   and q8 caches within 2e-2 and 6e-2 (their rounding of k and v: 2^-8 and 1/254 of each head's
 *   largest value, on values of order 1).
 * - the logits processors on hand-made scores, with the results transformers' definitions give
 *   (ties at top-k kept, top-p keeping the smallest set above p, min-p relative to the best);
 *   seeded draws follow the distribution (10,000 draws within 0.02) and repeat for a seed.
 * - infer_forward on a random model: one prompt run whole, in chunks of 5 and one token at a time
 *   gives the same last logits (1e-5), and the same as model_forward (the training forward) at
 *   that position (1e-4).
 * - the streamed text: a random model over a byte-level tokenizer of single bytes, sampled, emits
 *   many split characters; every piece on_text receives is whole UTF-8, and the pieces joined are
 *   the decoding of all the generated ids.
 */
#include "base/half.h"
#include "infer/generate.h"
#include "infer/sampling.h"
#include "model/init.h"
#include "ops/ops.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 99;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* ---- attention over the cache ----------------------------------------------------------- */

static void check_kv_attention(kv_format f, int window, double tol) {
    const int T = 37, H = 4, Hkv = 2, D = 16, p0 = 20;
    size_t nq = (size_t)T * H * D, nk = (size_t)T * Hkv * D;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *ref = malloc(nq * 4);
    float *out = malloc(nq * 4), *lse = malloc((size_t)H * T * 4);
    for (size_t i = 0; i < nq; i++)
        q[i] = frand();
    for (size_t i = 0; i < nk; i++)
        k[i] = frand(), v[i] = frand();
    const float scale = 0.25f;
    attention_forward_ref(ref, lse, q, k, v, NULL, NULL, 1, T, H, Hkv, D, window, scale);
    kv_cache c;
    ft_error err;
    REQUIRE(kv_cache_alloc(&c, f, 2, Hkv, D, T, &err) == FT_OK, "alloc");
    kv_cache_store(&c, 1, 0, p0, k, v); /* the prefix, then the rest */
    kv_cache_store(&c, 1, p0, T - p0, k + (size_t)p0 * Hkv * D, v + (size_t)p0 * Hkv * D);
    float *scratch = malloc(sizeof(float) * kv_attention_scratch_floats(&c) * 4);
    kv_attention(&c, 1, out, q + (size_t)p0 * H * D, T - p0, p0, H, window, scale, scratch, 4);
    double worst = 0;
    for (size_t i = 0; i < (size_t)(T - p0) * H * D; i++) {
        double d = fabs(out[i] - ref[(size_t)p0 * H * D + i]);
        worst = d > worst ? d : worst;
    }
    CHECK(worst <= tol, "kv %s window %d: max diff %.3g (tol %g)", kv_format_name(f), window, worst,
          tol);
    /* a stored row reads back within the format's rounding */
    float row[16];
    kv_cache_read(&c, 0, 1, 30, 1, row);
    double rd = 0;
    for (int e = 0; e < D; e++)
        rd = fmax(rd, fabs(row[e] - k[((size_t)30 * Hkv + 1) * D + e]));
    CHECK(rd <= (f == KV_F32    ? 0
                 : f == KV_BF16 ? 4e-3
                                : 4e-3),
          "kv %s read back: %.3g", kv_format_name(f), rd);
    kv_cache_free(&c);
    free(q), free(k), free(v), free(ref), free(out), free(lse), free(scratch);
}

/* ---- the processors ------------------------------------------------------------------------ */

static void test_processors(void) {
    sampler_params p;
    sampler_defaults(&p);
    CHECK(p.top_k == 50 && p.top_p == 1.0 && p.min_p < 0 && !p.do_sample, "defaults");
    static char seen[4096]; /* >= sampling_scratch_bytes(4) */
    CHECK(sampling_scratch_bytes(4) <= sizeof seen, "scratch");
    /* repetition penalty: each distinct id once, negative scores multiplied */
    float s[4] = {2, -2, 1, 0.5f};
    int32_t hist[3] = {0, 1, 0};
    p.repetition_penalty = 2;
    sampling_process(&p, s, 4, hist, 3, seen);
    CHECK(s[0] == 1 && s[1] == -4 && s[2] == 1 && s[3] == 0.5f, "repetition %g %g %g %g", s[0],
          s[1], s[2], s[3]);
    CHECK(sampling_pick(&p, s, 4, NULL, 0) == 0, "greedy takes the first of equal maxima");
    /* top-k keeps ties with the k-th score */
    sampler_defaults(&p);
    p.do_sample = 1, p.top_k = 2;
    float t[4] = {1, 3, 2, 3};
    sampling_process(&p, t, 4, NULL, 0, seen);
    CHECK(t[0] == -INFINITY && t[1] == 3 && t[2] == -INFINITY && t[3] == 3, "top-k");
    /* top-k against a sort, on random scores with many ties */
    {
        enum { NV = 300 };
        static char big[NV * 16];
        float r[NV], q[NV], srt[NV];
        int ks[] = {1, 5, 50, NV - 1}, ok = 1;
        CHECK(sampling_scratch_bytes(NV) <= sizeof big, "scratch");
        for (int ki = 0; ki < 4; ki++) {
            for (int i = 0; i < NV; i++)
                r[i] = q[i] = (float)(int)(frand() * 20), srt[i] = r[i];
            for (int i = 0; i < NV; i++) /* descending insertion sort */
                for (int j = i; j > 0 && srt[j] > srt[j - 1]; j--) {
                    float t0 = srt[j];
                    srt[j] = srt[j - 1], srt[j - 1] = t0;
                }
            p.top_k = ks[ki], p.top_p = 1.0, p.min_p = -1, p.temperature = 1;
            sampling_process(&p, q, NV, NULL, 0, big);
            for (int i = 0; i < NV; i++)
                ok &= (r[i] < srt[ks[ki] - 1]) == (q[i] == -INFINITY);
        }
        CHECK(ok, "top-k keeps exactly the scores >= the k-th largest");
        p.top_k = 2;
    }
    /* top-p 0.6 over (0.5, 0.3, 0.2): ascending cumulative 0.2 0.5 1.0, removed where <= 0.4 */
    p.top_k = 0, p.top_p = 0.6;
    float u[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    sampling_process(&p, u, 3, NULL, 0, seen);
    CHECK(u[0] != -INFINITY && u[1] != -INFINITY && u[2] == -INFINITY, "top-p");
    /* top-p 0 keeps the best only */
    p.top_p = 0.0;
    float w[3] = {logf(0.3f), logf(0.5f), logf(0.2f)};
    sampling_process(&p, w, 3, NULL, 0, seen);
    CHECK(w[0] == -INFINITY && w[1] != -INFINITY && w[2] == -INFINITY, "top-p 0");
    /* min-p 0.5 of the best 0.5: removes what is below 0.25 */
    p.top_p = 1.0, p.min_p = 0.5;
    float x[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    sampling_process(&p, x, 3, NULL, 0, seen);
    CHECK(x[0] != -INFINITY && x[1] != -INFINITY && x[2] == -INFINITY, "min-p");
    /* temperature divides */
    sampler_defaults(&p);
    p.do_sample = 1, p.top_k = 0, p.temperature = 0.5;
    float y[2] = {1, -3};
    sampling_process(&p, y, 2, NULL, 0, seen);
    CHECK(y[0] == 2 && y[1] == -6, "temperature");
    /* draws follow the distribution, and repeat for the same seed */
    float z[3] = {logf(0.1f), logf(0.2f), logf(0.7f)}, probs[3];
    int count[3] = {0, 0, 0}, same = 1;
    p.temperature = 1, p.seed = 42;
    for (int i = 0; i < 10000; i++) {
        int a = sampling_pick(&p, z, 3, probs, (uint64_t)i);
        count[a]++;
        same &= a == sampling_pick(&p, z, 3, probs, (uint64_t)i);
    }
    CHECK(same, "the same seed and step draw the same token");
    CHECK(fabs(count[0] / 1e4 - 0.1) < 0.02 && fabs(count[2] / 1e4 - 0.7) < 0.02,
          "draw frequencies %d %d %d", count[0], count[1], count[2]);
}

/* ---- the forward over the cache ----------------------------------------------------------- */

static void rm_dir(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
}

static void test_forward(const char *arch) {
    char dir[] = "/tmp/ftune_infer_test_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp");
    ft_error err;
    REQUIRE(model_init_random(arch, "tiny", 97, 5, dir, &err) == FT_OK, "init: %s", err.what);
    model m;
    REQUIRE(model_load(dir, &m, &err) == FT_OK, "load: %s", err.what);
    const int T = 23, V = m.cfg.V;
    int32_t ids[23];
    for (int i = 0; i < T; i++)
        ids[i] = (int32_t)(3 + (i * 37) % 90);
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V);
    float *l3 = malloc(sizeof(float) * V), *ev = malloc(sizeof(float) * (size_t)T * V);
    infer_model a, b, c;
    REQUIRE(infer_init(&a, &m, NULL, 0, 64, KV_F32, 0, &err) == FT_OK, "init a");
    REQUIRE(infer_init(&b, &m, NULL, 0, 64, KV_F32, 5, &err) == FT_OK, "init b");
    REQUIRE(infer_init(&c, &m, NULL, 0, 64, KV_F32, 0, &err) == FT_OK, "init c");
    CHECK(infer_forward(&a, ids, T, l1, 0, &err) == FT_OK, "whole");
    CHECK(infer_forward(&b, ids, T, l2, 0, &err) == FT_OK, "chunks");
    for (int i = 0; i < T; i++)
        CHECK(infer_forward(&c, ids + i, 1, l3, 0, &err) == FT_OK, "one token");
    /* the training forward's logits at the last position */
    batch bt = {0};
    int32_t tg[23];
    int pos[23], len = T;
    for (int i = 0; i < T; i++)
        tg[i] = -100, pos[i] = i;
    bt.B = 1, bt.T = T, bt.ids = ids, bt.targets = tg, bt.pos = pos, bt.len = &len;
    acts *ac = NULL;
    REQUIRE(acts_alloc(&m, 1, T, 0, &ac, &err) == FT_OK, "acts");
    model_forward(&m, ac, &bt, 0, 0, ev, NULL);
    double d12 = 0, d13 = 0, dev = 0;
    for (int i = 0; i < V; i++) {
        d12 = fmax(d12, fabs(l1[i] - l2[i]));
        d13 = fmax(d13, fabs(l1[i] - l3[i]));
        dev = fmax(dev, fabs(l1[i] - ev[(size_t)(T - 1) * V + i]));
    }
    CHECK(d12 <= 1e-5 && d13 <= 1e-5, "%s: whole / chunked / one at a time: %.3g %.3g", arch, d12,
          d13);
    CHECK(dev <= 1e-4, "%s: against model_forward: %.3g", arch, dev);
    /* a cache that is full says so */
    CHECK(infer_forward(&a, ids, T, l1, 0, &err) == FT_OK, "fits");
    CHECK(infer_forward(&a, ids, T, l1, 0, &err) == FT_ERR_INPUT, "full cache refused");
    acts_free(ac);
    infer_free(&a), infer_free(&b), infer_free(&c);
    free(l1), free(l2), free(l3), free(ev);
    model_free(&m);
    rm_dir(dir);
}

/* ---- streamed text ------------------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: byte b as the character the byte-level vocabulary spells it with. */
static int byte_char(int b, char *out) {
    int cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) return out[0] = (char)cp, 1;
    out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static int valid_utf8(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 0 : c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC2 ? 1 : 9;
        if (k == 9 || i + k >= n + (k ? 0 : 1)) return 0;
        for (size_t j = 1; j <= k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80) return 0;
        i += k + 1;
    }
    return 1;
}

typedef struct pieces {
    char buf[1 << 16];
    size_t len;
    int bad, n;
} pieces;

static void on_text(void *user, const char *s, size_t n) {
    pieces *p = user;
    p->bad |= !valid_utf8(s, n);
    p->n++;
    if (p->len + n < sizeof p->buf) memcpy(p->buf + p->len, s, n), p->len += n;
}

static void test_stream(void) {
    char dir[] = "/tmp/ftune_infer_stream_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f, "tokenizer.json");
    fputs("{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[],"
          "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":"
          "false,\"trim_offsets\":true,\"use_regex\":true},\"post_processor\":null,\"decoder\":"
          "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":"
          "true},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
          "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":false,"
          "\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":{",
          f);
    for (int b = 0; b < 256; b++) {
        char ch[3] = {0};
        int n = byte_char(b, ch);
        const char *esc = b == '"' ? "\\\"" : b == '\\' ? "\\\\" : NULL;
        if (esc)
            fprintf(f, "%s\"%s\":%d", b ? "," : "", esc, b);
        else
            fprintf(f, "%s\"%.*s\":%d", b ? "," : "", n, ch, b);
    }
    fputs("},\"merges\":[]}}", f);
    fclose(f);
    ft_error err;
    tokenizer *tok = NULL;
    REQUIRE(tok_load(path, &tok, &err) == FT_OK, "tokenizer: %s %s", err.where, err.what);
    REQUIRE(model_init_random("llama", "tiny", 256, 9, dir, &err) == FT_OK, "init: %s", err.what);
    model m;
    REQUIRE(model_load(dir, &m, &err) == FT_OK, "load: %s", err.what);
    infer_model im;
    REQUIRE(infer_init(&im, &m, NULL, 0, 400, KV_F32, 0, &err) == FT_OK, "infer init");
    int32_t prompt[3] = {'H', 'i', ' '};
    pieces *pc = calloc(1, sizeof *pc);
    gen_options o = {0};
    sampler_defaults(&o.sp);
    o.sp.do_sample = 1, o.sp.top_k = 0, o.sp.temperature = 2.0, o.sp.seed = 7;
    o.max_new_tokens = 300, o.tok = tok, o.on_text = on_text, o.user = pc;
    gen_result r;
    REQUIRE(generate_run(&im, prompt, 3, &o, &r, &err) == FT_OK, "generate: %s", err.what);
    int high = 0;
    for (int i = 0; i < r.n; i++)
        high += r.ids[i] >= 0x80;
    CHECK(r.n == 300 && high > 50, "%d tokens, %d non-ASCII bytes", r.n, high);
    CHECK(!pc->bad, "every piece is whole UTF-8 (%d pieces)", pc->n);
    CHECK(pc->n > 1, "streamed in pieces");
    char *all = NULL;
    size_t len = 0;
    REQUIRE(tok_decode(tok, r.ids, (size_t)r.n, 1, &all, &len, &err) == FT_OK, "decode");
    CHECK(len == pc->len && !memcmp(all, pc->buf, len), "pieces joined = the decoding (%zu, %zu)",
          len, pc->len);
    CHECK(r.len == pc->len && !memcmp(r.text, pc->buf, r.len), "result text = what was sent");
    free(all);
    gen_result_free(&r);
    free(pc);
    infer_free(&im);
    model_free(&m);
    tok_free(tok);
    rm_dir(dir);
}

int main(void) {
    check_kv_attention(KV_F32, 0, 1e-5);
    check_kv_attention(KV_F32, 6, 1e-5);
    check_kv_attention(KV_BF16, 0, 2e-2);
    check_kv_attention(KV_Q8, 6, 6e-2);
    test_processors();
    test_forward("llama");
    test_forward("qwen3");
    test_forward("mistral");
    test_forward("phi3");
    test_stream();
    return test_summary("infer_test");
}
