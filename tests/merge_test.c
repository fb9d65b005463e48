/*
 * merge_test.c: the merge stage's pieces against hand-worked cases.
 *
 * - shards: transformers' dot_natural_key order (layer numbers as numbers, lm_head first);
 *   huggingface_hub's split (a tensor over the limit alone and numbered
 *   before the open shard); parse_size_to_int's units; the index JSON text as json.dumps
 *   (indent=2, sort_keys=True) writes it.
 * - task arithmetic: magnitude pruning keeps int(density * n) values (ties at the threshold by
 *   index), DARE's rescale, TIES' sign election (total and frequency) and disjoint mean on values
 *   worked by hand.
 * - SVD: a random 37 x 23 matrix of rank 5 comes back from rank 5 factors within 1e-5 relative;
 *   the factored SVD (QR of the factors, small SVD) truncates as the full one does, within 1e-5
 *   of the product, for tall, wide and R > out shapes;
 *   the quantile equals torch.quantile's linear interpolation on small cases.
 */
#include "merge/shards.h"
#include "merge/svd.h"
#include "merge/task_arith.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_order(void) {
    /* transformers' dot_natural_key order: digits as numbers and first, trailing digits of a
     * text part as a number, a prefix first */
    const char *names[] = {"lm_head.weight",
                           "model.embed_tokens.weight",
                           "model.layers.2.input_layernorm.weight",
                           "model.layers.2.mlp.down_proj.weight",
                           "model.layers.2.self_attn.k_proj.weight",
                           "model.layers.2.self_attn.q_proj.bias",
                           "model.layers.2.self_attn.q_proj.weight",
                           "model.layers.10.mlp.up_proj.weight",
                           "model.norm.weight",
                           "x.0",
                           "x.a",
                           "x.shard_2",
                           "x.shard_11",
                           "x.shard_11.y",
                           "y"};
    int n = (int)(sizeof names / sizeof *names);
    for (int i = 0; i + 1 < n; i++)
        CHECK(shard_name_cmp(names[i], names[i + 1]) < 0 &&
                  shard_name_cmp(names[i + 1], names[i]) > 0,
              "%s before %s", names[i], names[i + 1]);
    CHECK(shard_name_cmp("a.b", "a.b") == 0, "equal");
    CHECK(shard_name_cmp("a.007", "a.7") == 0, "numbers by value");
    shard_tensor t[15];
    for (int i = 0; i < n; i++)
        t[i] = (shard_tensor){.name = names[(i * 7) % n]};
    shard_sort(t, n);
    for (int i = 0; i < n; i++)
        CHECK(!strcmp(t[i].name, names[i]), "sorted %d: %s", i, t[i].name);
}

static void test_split(void) {
    /* sizes 40 30 50 200 10 20 with max 100: [40 30] closes at 50; 200 alone (shard 1) while
     * [50] is open; [50 10 20] is shard 2 */
    uint64_t sz[] = {40, 30, 50, 200, 10, 20};
    int want[] = {0, 0, 2, 1, 2, 2};
    shard_tensor t[6];
    for (int i = 0; i < 6; i++)
        t[i] = (shard_tensor){.name = "x", .nbytes = sz[i]};
    int n = shard_split(t, 6, 100);
    CHECK(n == 3, "3 shards, got %d", n);
    for (int i = 0; i < 6; i++)
        CHECK(t[i].shard == want[i], "tensor %d in shard %d", i, t[i].shard);
    /* exactly full: 50 + 50 fits in 100 */
    shard_tensor u[3] = {{.nbytes = 50}, {.nbytes = 50}, {.nbytes = 1}};
    CHECK(shard_split(u, 3, 100) == 2 && u[1].shard == 0 && u[2].shard == 1, "50+50 fit");
    char name[64];
    shard_file_name(name, sizeof name, 0, 1);
    CHECK(!strcmp(name, "model.safetensors"), "%s", name);
    shard_file_name(name, sizeof name, 1, 12);
    CHECK(!strcmp(name, "model-00002-of-00012.safetensors"), "%s", name);
}

static void test_parse_size(void) {
    struct {
        const char *s;
        uint64_t v;
    } ok[] = {{"5GB", 5000000000ull},    {"500MB", 500000000ull},   {"1.5gb", 1500000000ull},
              {"100KB", 100000ull},      {"2TB", 2000000000000ull}, {"12345", 12345},
              {" 50GB ", 50000000000ull}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        uint64_t v = 0;
        ft_error err = {0};
        CHECK(shard_parse_size(ok[i].s, &v, &err) == FT_OK && v == ok[i].v, "%s -> %llu", ok[i].s,
              (unsigned long long)v);
    }
    const char *bad[] = {"", "GB", "5XB", "-1GB", "0", "abcMB", "5 G B"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t v = 0;
        ft_error err = {0};
        CHECK(shard_parse_size(bad[i], &v, &err) == FT_ERR_INPUT &&
                  strstr(err.where, "--max-shard-size"),
              "\"%s\" refused", bad[i]);
    }
}

static void test_index_json(void) {
    shard_tensor t[3] = {
        {.name = "model.norm.weight", .ndim = 1, .shape = {4}, .nbytes = 16, .shard = 1},
        {.name = "lm_head.weight", .ndim = 2, .shape = {3, 4}, .nbytes = 24, .shard = 1},
        {.name = "model.embed_tokens.weight", .ndim = 2, .shape = {3, 4}, .nbytes = 48, .shard = 0},
    };
    char *s = shard_index_json(t, 3, 2);
    const char *want = "{\n"
                       "  \"metadata\": {\n"
                       "    \"total_parameters\": 28,\n"
                       "    \"total_size\": 88\n"
                       "  },\n"
                       "  \"weight_map\": {\n"
                       "    \"lm_head.weight\": \"model-00002-of-00002.safetensors\",\n"
                       "    \"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\",\n"
                       "    \"model.norm.weight\": \"model-00002-of-00002.safetensors\"\n"
                       "  }\n"
                       "}\n";
    CHECK(s && !strcmp(s, want), "index JSON:\n%s", s ? s : "(null)");
    free(s);
}

static void test_prune(void) {
    float scratch[8];
    float t[8] = {0.5f, -3.0f, 2.0f, -2.0f, 0.1f, 2.0f, -0.0f, 4.0f};
    /* int(0.5 * 8) = 4 kept: 4, -3, then two of the three |2|: the first two by index */
    ta_prune_magnitude(t, 8, 0.5, scratch);
    float want[8] = {0.0f, -3.0f, 2.0f, -2.0f, 0.0f, 0.0f, -0.0f, 4.0f};
    for (int i = 0; i < 8; i++)
        CHECK(t[i] == want[i], "pruned[%d] = %g", i, t[i]);
    CHECK(signbit(t[6]) && !signbit(t[0]), "dropped values keep their sign (t * 0)");
    float u[3] = {1, 2, 3};
    ta_prune_magnitude(u, 3, 1.0, scratch);
    CHECK(u[0] == 1 && u[1] == 2 && u[2] == 3, "density 1 keeps all");
    ta_prune_magnitude(u, 3, 0.2, scratch); /* int(0.6) = 0 */
    CHECK(u[0] == 0 && u[1] == 0 && u[2] == 0, "density 0.2 of 3 keeps none");
    float r[4] = {1.0f, -2.0f, 3.0f, 0.7f};
    uint8_t m[4] = {1, 0, 1, 1};
    ta_prune_random(r, 4, 0.3, m);
    CHECK(r[0] == 1.0f / 0.3f && r[1] == 0 && r[2] == 3.0f / 0.3f && r[3] == 0.7f / 0.3f,
          "DARE: t * m / fp32(density)");
}

static void test_combine(void) {
    /* three tasks, four positions */
    float a[4] = {1.0f, -2.0f, 0.5f, 0.0f}, b[4] = {2.0f, 1.0f, -0.25f, 0.0f},
          c[4] = {-4.0f, 1.0f, -0.5f, 1.0f};
    const float *t[3] = {a, b, c};
    float w[3] = {0.5f, 2.0f, 1.0f}, out[4];
    ta_combine(out, t, w, 3, 4, 0, 1);
    CHECK(out[0] == 0.5f + 4.0f - 4.0f && out[1] == -1.0f + 2.0f + 1.0f &&
              out[2] == 0.25f - 0.5f - 0.5f && out[3] == 1.0f,
          "weighted sum: %g %g %g %g", out[0], out[1], out[2], out[3]);
    /* TIES, total: position 0 sum -1 -> elected -, only c: -4 / 1; position 1 sum 0 -> +: b, c
     * agree: (2 + 1) / 2; position 2 sum -0.25 -> -: b, c: (-0.5 - 0.5) / 2; position 3: c */
    ta_combine(out, t, w, 3, 4, 1, 1);
    CHECK(out[0] == -4.0f && out[1] == 1.5f && out[2] == -0.5f && out[3] == 1.0f,
          "ties total: %g %g %g %g", out[0], out[1], out[2], out[3]);
    /* frequency: position 0 has two + (a, b): (0.5 + 4) / 2 */
    ta_combine(out, t, w, 3, 4, 1, 0);
    CHECK(out[0] == 2.25f && out[1] == 1.5f && out[2] == -0.5f && out[3] == 1.0f,
          "ties frequency: %g %g %g %g", out[0], out[1], out[2], out[3]);
}

static void test_svd(void) {
    enum { M = 37, N = 23, K = 5 };
    static float U[M * K], V[K * N], D[M * N], A[K * N], B[M * K];
    srand(3);
    for (int i = 0; i < M * K; i++)
        U[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < K * N; i++)
        V[i] = (float)rand() / RAND_MAX - 0.5f;
    double norm = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)U[i * K + k] * V[k * N + j];
            D[i * N + j] = (float)s;
            norm = fmax(norm, fabs(s));
        }
    ft_error err = {0};
    REQUIRE(svd_lowrank(D, M, N, K, -1, A, B, "test", &err) == FT_OK, "svd: %s", err.what);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)B[i * K + k] * A[k * N + j];
            worst = fmax(worst, fabs(s - D[i * N + j]));
        }
    CHECK(worst <= 1e-5 * norm, "rank-%d reconstruction off by %g (max %g)", K, worst, norm);
    /* rows of A are orthonormal (Vh) */
    for (int p = 0; p < K; p++)
        for (int q = 0; q < K; q++) {
            double s = 0;
            for (int j = 0; j < N; j++)
                s += (double)A[p * N + j] * A[q * N + j];
            CHECK(fabs(s - (p == q)) < 1e-5, "Vh rows %d.%d: %g", p, q, s);
        }
    CHECK(svd_lowrank(D, M, N, 24, -1, A, B, "test", &err) == FT_ERR_INPUT, "rank > min(m, n)");
    /* clamped: each value of the unclamped factors limited to +-(their 0.9 quantile) */
    REQUIRE(svd_lowrank(D, M, N, K, -1, A, B, "test", &err) == FT_OK, "svd");
    static float vals[M * K + K * N], A2[K * N], B2[M * K];
    memcpy(vals, B, sizeof B);
    memcpy(vals + M * K, A, sizeof A);
    float hi = svd_quantile(vals, M * K + K * N, 0.9);
    REQUIRE(svd_lowrank(D, M, N, K, 0.9, A2, B2, "test", &err) == FT_OK, "svd clamp");
    int same = 1;
    for (int i = 0; i < M * K; i++)
        same &= B2[i] == fminf(fmaxf(B[i], -hi), hi);
    for (int i = 0; i < K * N; i++)
        same &= A2[i] == fminf(fmaxf(A[i], -hi), hi);
    CHECK(same && hi > 0, "clamped to +-%g", hi);
}

/* The factored SVD against the full one on the product, wide and tall, rank below R. */
static void test_svd_factored(void) {
    static const int shapes[3][3] = {{37, 23, 5}, {13, 29, 6}, {8, 40, 12}}; /* out, in, R */
    for (int c = 0; c < 3; c++) {
        int out = shapes[c][0], in = shapes[c][1], R = shapes[c][2];
        int rank = (R < out ? R : out) - 1;
        float *Bc = malloc(sizeof(float) * out * R), *Ac = malloc(sizeof(float) * R * in);
        float *D = malloc(sizeof(float) * out * in);
        float *A1 = malloc(sizeof(float) * rank * in), *B1 = malloc(sizeof(float) * out * rank);
        float *A2 = malloc(sizeof(float) * rank * in), *B2 = malloc(sizeof(float) * out * rank);
        srand(7 + c);
        for (int i = 0; i < out * R; i++)
            Bc[i] = (float)rand() / RAND_MAX - 0.5f;
        for (int i = 0; i < R * in; i++)
            Ac[i] = (float)rand() / RAND_MAX - 0.5f;
        for (int i = 0; i < out; i++)
            for (int j = 0; j < in; j++) {
                double acc = 0;
                for (int k = 0; k < R; k++)
                    acc += (double)Bc[i * R + k] * Ac[k * in + j];
                D[i * in + j] = (float)acc;
            }
        ft_error err = {0};
        int ok = svd_lowrank(D, out, in, rank, -1, A1, B1, "t", &err) == FT_OK &&
                 svd_lowrank_factored(Bc, Ac, out, in, R, rank, A2, B2, "t", &err) == FT_OK;
        CHECK(ok, "%dx%d R %d: %s", out, in, R, err.what);
        double worst = 0, big = 0;
        for (int i = 0; ok && i < out; i++)
            for (int j = 0; j < in; j++) {
                double p1 = 0, p2 = 0;
                for (int k = 0; k < rank; k++) {
                    p1 += (double)B1[i * rank + k] * A1[k * in + j];
                    p2 += (double)B2[i * rank + k] * A2[k * in + j];
                }
                worst = fmax(worst, fabs(p1 - p2));
                big = fmax(big, fabs(p1));
            }
        CHECK(ok && worst <= 1e-5 * big, "%dx%d R %d rank %d: products differ by %g (max %g)", out,
              in, R, rank, worst, big);
        free(Bc), free(Ac), free(D), free(A1), free(B1), free(A2), free(B2);
    }
}

static void test_quantile(void) {
    /* torch.quantile(torch.tensor([3., 1., 4., 1., 5.]), q): sorted 1 1 3 4 5 */
    float x[5] = {3, 1, 4, 1, 5};
    CHECK(svd_quantile(x, 5, 0.5) == 3.0f, "median");
    CHECK(svd_quantile(x, 5, 0.0) == 1.0f && svd_quantile(x, 5, 1.0) == 5.0f, "ends");
    CHECK(fabsf(svd_quantile(x, 5, 0.6) - 3.4f) < 1e-6f, "0.6: rank 2.4 -> 3 + 0.4 (4 - 3)");
    CHECK(fabsf(svd_quantile(x, 5, 0.9) - 4.6f) < 1e-6f, "0.9: rank 3.6 -> 4 + 0.6 (5 - 4)");
}

int main(void) {
    test_order();
    test_split();
    test_parse_size();
    test_index_json();
    test_prune();
    test_combine();
    test_svd();
    test_svd_factored();
    test_quantile();
    return test_summary("merge_test");
}
