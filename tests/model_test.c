/*
 * model_test.c: the whole training step checked against finite differences, per architecture.
 *
 * For a tiny random model of each architecture (written by model_init_random) with LoRA on every
 * linear layer, A and B both random (so no gradient is trivially zero), the analytic gradient of
 * the summed token loss with respect to sampled LoRA parameters must match a central finite
 * difference of the forward loss. Forward runs in fp32: the loss sum (~80) carries rounding of
 * ~5e-6, which a step of h = 3e-3 turns into ~1e-3 of noise in the difference; the curvature
 * error at that step stays below 1% (at h = 1e-2 Qwen3's per-head q/k RMSNorm made it ~10%).
 * So the tolerance is 2% of the largest sampled gradient plus 1e-3 absolute.
 * Also: padding a row to a longer batch leaves the loss and gradients unchanged, and LoRA dropout
 * uses the same mask in forward and backward (finite differences agree with dropout on).
 */
#include "data/dataset.h"
#include "model/init.h"
#include "model/model.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 12345;
static double urand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static double loss_of(model *m, acts *a, batch *b, float dropseed) {
    return model_forward(m, a, b, 1, (uint64_t)dropseed, NULL, NULL);
}

static void check_arch(const char *arch, double dropout, int ckpt) {
    char dir[] = "/tmp/ftune_model_test_XXXXXX";
    if (!mkdtemp(dir)) return;
    ft_error err;
    CHECK(model_init_random(arch, "tiny", 97, 7, dir, &err) == FT_OK, "%s: init: %s", arch, err.what);
    model m;
    if (model_load(dir, &m, &err) != FT_OK) {
        CHECK(0, "%s: load: %s %s", arch, err.where, err.what);
        return;
    }
    unsigned mask;
    CHECK(lora_parse_targets(&m.cfg, "all-linear", &mask, &err) == FT_OK, "targets");
    CHECK(lora_create(&m.cfg, 4, 8, dropout, 0, mask, NULL, &m.lora, &err) == FT_OK, "create");
    for (size_t i = 0; i < m.lora->n_params; i++) m.lora->params[i] = (float)(0.4 * (urand() - 0.5));

    /* two rows of unequal length, ids and labels random, some labels -100 */
    dataset ds = {0};
    ds.n = 2;
    ds.ex = calloc(2, sizeof(example));
    int lens[2] = {11, 7};
    for (int e = 0; e < 2; e++) {
        ds.ex[e].n = lens[e];
        ds.ex[e].ids = malloc(sizeof(int32_t) * lens[e]);
        ds.ex[e].labels = malloc(sizeof(int32_t) * lens[e]);
        for (int t = 0; t < lens[e]; t++) {
            ds.ex[e].ids[t] = (int32_t)(urand() * 97);
            ds.ex[e].labels[t] = t == 3 ? -100 : ds.ex[e].ids[t];
        }
    }
    batch b;
    batch_alloc(&b, 2, 11, &err);
    acts *a;
    CHECK(acts_alloc_ckpt(&m, 2, 11, 5, ckpt, &a, &err) == FT_OK, "acts");
    int idx[2] = {0, 1};
    batch_fill(&b, &ds, idx, 2);
    uint64_t seed = 99;
    memset(m.lora->grads, 0, m.lora->n_params * sizeof(float));
    double L0 = model_forward(&m, a, &b, 1, seed, NULL, NULL);
    model_backward(&m, a, &b, 1.0f, seed);
    float *g = malloc(m.lora->n_params * sizeof(float));
    memcpy(g, m.lora->grads, m.lora->n_params * sizeof(float));
    /* sample parameters from every module, A and B */
    double maxg = 0, worst = 0;
    int worst_i = -1;
    double num[400];
    int ids[400], ns = 0;
    for (int md = 0; md < m.lora->n; md++)
        for (int s = 0; s < 6; s++) {
            const lora_module *mod = &m.lora->mods[md];
            size_t nA = (size_t)m.lora->R * mod->in, nB = (size_t)mod->out * m.lora->R;
            size_t i = s < 3 ? mod->offA + (size_t)(urand() * nA) : mod->offB + (size_t)(urand() * nB);
            float keep = m.lora->params[i];
            const float h = 3e-3f;
            m.lora->params[i] = keep + h;
            double lp = loss_of(&m, a, &b, (float)seed);
            m.lora->params[i] = keep - h;
            double lm = loss_of(&m, a, &b, (float)seed);
            m.lora->params[i] = keep;
            num[ns] = (lp - lm) / (2 * h);
            ids[ns++] = (int)i;
            if (fabs(g[i]) > maxg) maxg = fabs(g[i]);
        }
    for (int s = 0; s < ns; s++) {
        double d = fabs(num[s] - g[ids[s]]);
        if (d > worst) worst = d, worst_i = s;
    }
    CHECK(worst <= 0.02 * maxg + 1e-3, "%s dropout %g ckpt %d: worst |fd - analytic| = %g (fd %g, analytic %g), max grad %g",
          arch, dropout, ckpt, worst, worst_i >= 0 ? num[worst_i] : 0, worst_i >= 0 ? g[ids[worst_i]] : 0, maxg);
    CHECK(maxg > 1e-3, "%s: gradients are not trivially zero (max %g)", arch, maxg);

    if (dropout == 0) {
        /* padding invariance: row 1 alone (T = 7) vs inside the padded batch (T = 11) */
        double both = L0;
        int one = 0, two = 1;
        batch_fill(&b, &ds, &one, 1);
        double l1 = model_forward(&m, a, &b, 0, 0, NULL, NULL);
        batch_fill(&b, &ds, &two, 1);
        double l2 = model_forward(&m, a, &b, 0, 0, NULL, NULL);
        CHECK(fabs(l1 + l2 - both) <= 1e-4 * fabs(both), "%s: padding changes the loss: %.9g + %.9g vs %.9g",
              arch, l1, l2, both);
    }
    free(g);
    acts_free(a);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&m);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
}

/* With and without checkpointing, the gradients are bit-identical: recomputation runs the same
 * arithmetic on the same inputs. */
static void check_ckpt_identical(void) {
    char dir[] = "/tmp/ftune_ckpt_test_XXXXXX";
    if (!mkdtemp(dir)) return;
    ft_error err;
    model_init_random("llama", "tiny", 97, 3, dir, &err);
    model m;
    if (model_load(dir, &m, &err) != FT_OK) {
        CHECK(0, "load: %s", err.what);
        return;
    }
    unsigned mask;
    lora_parse_targets(&m.cfg, "all-linear", &mask, &err);
    lora_create(&m.cfg, 4, 8, 0.2, 0, mask, NULL, &m.lora, &err);
    for (size_t i = 0; i < m.lora->n_params; i++) m.lora->params[i] = (float)(0.4 * (urand() - 0.5));
    dataset ds = {0};
    ds.n = 1;
    ds.ex = calloc(1, sizeof(example));
    ds.ex[0].n = 9;
    ds.ex[0].ids = malloc(9 * sizeof(int32_t));
    ds.ex[0].labels = malloc(9 * sizeof(int32_t));
    for (int t = 0; t < 9; t++) ds.ex[0].ids[t] = ds.ex[0].labels[t] = (int32_t)(urand() * 97);
    batch b;
    batch_alloc(&b, 1, 9, &err);
    int idx = 0;
    batch_fill(&b, &ds, &idx, 1);
    float *g[2];
    double loss[2];
    for (int ck = 0; ck < 2; ck++) {
        acts *a;
        acts_alloc_ckpt(&m, 1, 9, 0, ck, &a, &err);
        memset(m.lora->grads, 0, m.lora->n_params * sizeof(float));
        loss[ck] = model_forward(&m, a, &b, 1, 5, NULL, NULL);
        model_backward(&m, a, &b, 1.0f, 5);
        g[ck] = malloc(m.lora->n_params * sizeof(float));
        memcpy(g[ck], m.lora->grads, m.lora->n_params * sizeof(float));
        if (ck) CHECK(acts_bytes(a) < acts_plan_bytes(&m.cfg, 4, m.lora->n, 1, 9, 0),
                      "checkpointing saves memory: %zu bytes", acts_bytes(a));
        CHECK(acts_bytes(a) == acts_plan_bytes(&m.cfg, 4, m.lora->n, 1, 9, ck), "plan = allocation");
        acts_free(a);
    }
    CHECK(loss[0] == loss[1], "loss %.17g vs %.17g", loss[0], loss[1]);
    CHECK(!memcmp(g[0], g[1], m.lora->n_params * sizeof(float)), "gradients differ with checkpointing");
    free(g[0]);
    free(g[1]);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&m);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
}

int main(void) {
    const char *archs[] = {"llama", "mistral", "qwen2", "qwen3", "phi3"};
    for (int i = 0; i < 5; i++) check_arch(archs[i], 0.0, 0);
    check_arch("llama", 0.3, 0);
    check_arch("qwen3", 0.0, 1); /* gradient checkpointing: recomputed layers, same gradients */
    check_arch("phi3", 0.3, 1);
    check_ckpt_identical();
    return test_summary("model");
}
