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
 * Quantized frozen weights (nf4, fp4, q8, bf16) give the gradients of the fp32 model whose
 * weights are their dequantized values.
 */
#include "data/dataset.h"
#include "model/init.h"
#include "model/model.h"
#include "test.h"

#include <math.h>
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
    REQUIRE(mkdtemp(dir), "mkdtemp %s", dir);
    ft_error err;
    REQUIRE(model_init_random(arch, "tiny", 97, 7, dir, &err) == FT_OK, "%s: init: %s", arch,
            err.what);
    model m;
    if (model_load(dir, &m, &err) != FT_OK) {
        CHECK(0, "%s: load: %s %s", arch, err.where, err.what);
        return;
    }
    unsigned mask;
    CHECK(lora_parse_targets(&m.cfg, "all-linear", &mask, &err) == FT_OK, "targets");
    REQUIRE(lora_create(&m.cfg, 4, 8, dropout, 0, mask, NULL, &m.lora, &err) == FT_OK, "create");
    for (size_t i = 0; i < m.lora->n_params; i++)
        m.lora->params[i] = (float)(0.4 * (urand() - 0.5));

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
    REQUIRE(batch_alloc(&b, 2, 11, &err) == FT_OK, "batch_alloc: %s", err.what);
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
            size_t i =
                s < 3 ? mod->offA + (size_t)(urand() * nA) : mod->offB + (size_t)(urand() * nB);
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
    CHECK(worst <= 0.02 * maxg + 1e-3,
          "%s dropout %g ckpt %d: worst |fd - analytic| = %g (fd %g, analytic %g), max grad %g",
          arch, dropout, ckpt, worst, worst_i >= 0 ? num[worst_i] : 0,
          worst_i >= 0 ? g[ids[worst_i]] : 0, maxg);
    CHECK(maxg > 1e-3, "%s: gradients are not trivially zero (max %g)", arch, maxg);

    if (dropout == 0) {
        /* padding invariance: row 1 alone (T = 7) vs inside the padded batch (T = 11) */
        double both = L0;
        int one = 0, two = 1;
        batch_fill(&b, &ds, &one, 1);
        double l1 = model_forward(&m, a, &b, 0, 0, NULL, NULL);
        batch_fill(&b, &ds, &two, 1);
        double l2 = model_forward(&m, a, &b, 0, 0, NULL, NULL);
        CHECK(fabs(l1 + l2 - both) <= 1e-4 * fabs(both),
              "%s: padding changes the loss: %.9g + %.9g vs %.9g", arch, l1, l2, both);
    }
    free(g);
    acts_free(a);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&m);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
}

/* With and without checkpointing, the gradients are bit-identical: recomputation runs the same
 * arithmetic on the same inputs. */

/* What the plan counts for an allocation of B x T tokens: the activations (acts_plan_bytes) and
 * the matmul scratch at their end, with the loss's per-row state (model_matmul_scratch_bytes) */
static size_t planned(const model *m, int B, int T, int ck) {
    return acts_plan_bytes(&m->cfg, 4, m->lora->n, B, T, ck, m->quant.compute == QC_BF16) +
           ((model_matmul_scratch_bytes(&m->cfg, &m->quant, B * T) + 63) & ~(size_t)63);
}

static void check_ckpt_identical(void) {
    char dir[] = "/tmp/ftune_ckpt_test_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp %s", dir);
    ft_error err;
    REQUIRE(model_init_random("llama", "tiny", 97, 3, dir, &err) == FT_OK, "init: %s", err.what);
    model m;
    if (model_load(dir, &m, &err) != FT_OK) {
        CHECK(0, "load: %s", err.what);
        return;
    }
    unsigned mask;
    REQUIRE(lora_parse_targets(&m.cfg, "all-linear", &mask, &err) == FT_OK, "targets: %s",
            err.what);
    REQUIRE(lora_create(&m.cfg, 4, 8, 0.2, 0, mask, NULL, &m.lora, &err) == FT_OK,
            "lora_create: %s", err.what);
    for (size_t i = 0; i < m.lora->n_params; i++)
        m.lora->params[i] = (float)(0.4 * (urand() - 0.5));
    dataset ds = {0};
    ds.n = 1;
    ds.ex = calloc(1, sizeof(example));
    ds.ex[0].n = 9;
    ds.ex[0].ids = malloc(9 * sizeof(int32_t));
    ds.ex[0].labels = malloc(9 * sizeof(int32_t));
    for (int t = 0; t < 9; t++)
        ds.ex[0].ids[t] = ds.ex[0].labels[t] = (int32_t)(urand() * 97);
    batch b;
    REQUIRE(batch_alloc(&b, 1, 9, &err) == FT_OK, "batch_alloc: %s", err.what);
    int idx = 0;
    batch_fill(&b, &ds, &idx, 1);
    float *g[2];
    double loss[2];
    for (int ck = 0; ck < 2; ck++) {
        acts *a;
        REQUIRE(acts_alloc_ckpt(&m, 1, 9, 0, ck, &a, &err) == FT_OK, "acts: %s", err.what);
        memset(m.lora->grads, 0, m.lora->n_params * sizeof(float));
        loss[ck] = model_forward(&m, a, &b, 1, 5, NULL, NULL);
        model_backward(&m, a, &b, 1.0f, 5);
        g[ck] = malloc(m.lora->n_params * sizeof(float));
        memcpy(g[ck], m.lora->grads, m.lora->n_params * sizeof(float));
        if (ck)
            CHECK(acts_bytes(a) < planned(&m, 1, 9, 0), "checkpointing saves memory: %zu bytes",
                  acts_bytes(a));
        CHECK(acts_bytes(a) == planned(&m, 1, 9, ck), "plan = allocation");
        acts_free(a);
    }
    CHECK(loss[0] == loss[1], "loss %.17g vs %.17g", loss[0], loss[1]);
    CHECK(!memcmp(g[0], g[1], m.lora->n_params * sizeof(float)),
          "gradients differ with checkpointing");
    free(g[0]);
    free(g[1]);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&m);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
}

/* bf16 layer checkpoints: the forward goes on from each layer's input rounded to bf16, so the
 * loss and LoRA gradients are those of a slightly rounded model. Recompute consistency: they are
 * bit-identical to that rounded model run without checkpointing (every activation kept, the
 * inputs rounded in place: acts_round_inputs), so backward's recompute starts from exactly what
 * the forward used. (Finite differences cannot check this: rounding makes the loss a step
 * function at the scale of a 3e-3 step.) And they are within 1e-2 (relative) of the fp32 path:
 * bf16 keeps 8 bits, 2^-9 of relative rounding per value, which moved the loss by ~1e-5 and the
 * gradients by ~6e-3 of the largest here. The activations take what the plan says, and for a
 * deep model less than fp32 checkpoints by (L+1) N C x 2 bytes less one fp32 working slot. */
static void check_bf16_checkpoints(void) {
    char dir[] = "/tmp/ftune_ckpt16_test_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp %s", dir);
    ft_error err;
    REQUIRE(model_init_random("llama", "tiny", 97, 3, dir, &err) == FT_OK, "init: %s", err.what);
    model m;
    if (model_load(dir, &m, &err) != FT_OK) {
        CHECK(0, "load: %s", err.what);
        return;
    }
    unsigned mask;
    REQUIRE(lora_parse_targets(&m.cfg, "all-linear", &mask, &err) == FT_OK, "targets: %s",
            err.what);
    REQUIRE(lora_create(&m.cfg, 4, 8, 0.2, 0, mask, NULL, &m.lora, &err) == FT_OK,
            "lora_create: %s", err.what);
    for (size_t i = 0; i < m.lora->n_params; i++)
        m.lora->params[i] = (float)(0.4 * (urand() - 0.5));
    dataset ds = {0};
    ds.n = 2;
    ds.ex = calloc(2, sizeof(example));
    for (int e = 0; e < 2; e++) {
        ds.ex[e].n = 13 - 4 * e;
        ds.ex[e].ids = malloc(13 * sizeof(int32_t));
        ds.ex[e].labels = malloc(13 * sizeof(int32_t));
        for (int t = 0; t < 13; t++)
            ds.ex[e].ids[t] = ds.ex[e].labels[t] = (int32_t)(urand() * 97);
    }
    batch b;
    REQUIRE(batch_alloc(&b, 2, 13, &err) == FT_OK, "batch_alloc: %s", err.what);
    int idx[2] = {0, 1};
    batch_fill(&b, &ds, idx, 2);
    /* fp32 without checkpoints; bf16 checkpoints twice; the rounded model without them */
    const int modes[4] = {CKPT_NONE, CKPT_BF16, CKPT_BF16, CKPT_NONE};
    float *g[4];
    double loss[4];
    for (int r = 0; r < 4; r++) {
        acts *a;
        CHECK(acts_alloc_ckpt(&m, 2, 13, 0, modes[r], &a, &err) == FT_OK, "acts");
        if (r == 3) acts_round_inputs(a);
        memset(m.lora->grads, 0, m.lora->n_params * sizeof(float));
        loss[r] = model_forward(&m, a, &b, 1, 5, NULL, NULL);
        model_backward(&m, a, &b, 1.0f, 5);
        g[r] = malloc(m.lora->n_params * sizeof(float));
        memcpy(g[r], m.lora->grads, m.lora->n_params * sizeof(float));
        CHECK(acts_bytes(a) == planned(&m, 2, 13, modes[r]), "plan = allocation");
        acts_free(a);
    }
    size_t n = m.lora->n_params * sizeof(float);
    CHECK(loss[1] == loss[2] && !memcmp(g[1], g[2], n), "bf16 checkpoints: two runs differ");
    CHECK(loss[1] == loss[3] && !memcmp(g[1], g[3], n),
          "bf16 checkpoints differ from the rounded model without checkpoints: loss %.17g vs %.17g",
          loss[1], loss[3]);
    double maxg = 0, worst = 0;
    for (size_t i = 0; i < m.lora->n_params; i++) {
        maxg = fmax(maxg, fabs(g[0][i]));
        worst = fmax(worst, fabs(g[1][i] - g[0][i]));
    }
    CHECK(loss[1] != loss[0], "bf16 checkpoints round something (loss %.17g)", loss[1]);
    CHECK(fabs(loss[1] - loss[0]) <= 1e-2 * fabs(loss[0]), "loss %.9g vs fp32 %.9g", loss[1],
          loss[0]);
    CHECK(maxg > 1e-3 && worst <= 1e-2 * maxg, "bf16 checkpoints: LoRA grads differ by %g (max %g)",
          worst, maxg);
    printf("bf16 checkpoints: loss %.7g vs fp32 %.7g; grads differ by %.3g of the largest\n",
           loss[1], loss[0], worst / maxg);
    model_config deep = m.cfg;
    deep.L = 32;
    size_t f32 = acts_plan_bytes(&deep, 4, m.lora->n, 2, 13, CKPT_FP32, 0),
           b16 = acts_plan_bytes(&deep, 4, m.lora->n, 2, 13, CKPT_BF16, 0),
           NC = (size_t)2 * 13 * deep.C, saved = 33 * NC * 2 - NC * 4;
    CHECK(f32 - b16 + 128 >= saved && f32 - b16 <= saved + 128,
          "32 layers: bf16 checkpoints save %zu bytes, expected %zu", f32 - b16, saved);
    for (int r = 0; r < 4; r++)
        free(g[r]);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&m);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
}

/* With checkpointing the MLP runs in chunks of rows: the loss and LoRA gradients match the
 * unchunked, uncheckpointed step within 1e-6 of the largest gradient (a GEMM over fewer rows may
 * block its sums differently; in practice they are equal), with LoRA dropout on (the chunk's
 * mask is the batch's rows r0..: lora.c numbers them from row0) and N = 26 not a multiple of
 * the chunks (5, 7 rows); bf16 checkpoints chunked equal bf16 checkpoints unchunked alike. */
static void check_mlp_chunks(void) {
    char dir[] = "/tmp/ftune_mlpchunk_test_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp %s", dir);
    ft_error err;
    REQUIRE(model_init_random("qwen2", "tiny", 97, 4, dir, &err) == FT_OK, "init: %s", err.what);
    model m;
    if (model_load(dir, &m, &err) != FT_OK) {
        CHECK(0, "load: %s", err.what);
        return;
    }
    unsigned mask;
    REQUIRE(lora_parse_targets(&m.cfg, "all-linear", &mask, &err) == FT_OK, "targets: %s",
            err.what);
    REQUIRE(lora_create(&m.cfg, 4, 8, 0.2, 0, mask, NULL, &m.lora, &err) == FT_OK,
            "lora_create: %s", err.what);
    for (size_t i = 0; i < m.lora->n_params; i++)
        m.lora->params[i] = (float)(0.4 * (urand() - 0.5));
    dataset ds = {0};
    ds.n = 2;
    ds.ex = calloc(2, sizeof(example));
    for (int e = 0; e < 2; e++) {
        ds.ex[e].n = 13 - 5 * e;
        ds.ex[e].ids = malloc(13 * sizeof(int32_t));
        ds.ex[e].labels = malloc(13 * sizeof(int32_t));
        for (int t = 0; t < 13; t++)
            ds.ex[e].ids[t] = ds.ex[e].labels[t] = (int32_t)(urand() * 97);
    }
    batch b;
    REQUIRE(batch_alloc(&b, 2, 13, &err) == FT_OK, "batch_alloc: %s", err.what);
    int idx[2] = {0, 1};
    batch_fill(&b, &ds, idx, 2);
    /* {ckpt, rows}: the references (unchunked) first */
    const int runs[5][2] = {
        {CKPT_NONE, 0}, {CKPT_FP32, 5}, {CKPT_FP32, 7}, {CKPT_BF16, 26}, {CKPT_BF16, 5}};
    float *g[5];
    double loss[5];
    size_t n = m.lora->n_params;
    for (int r = 0; r < 5; r++) {
        acts *a;
        CHECK(acts_alloc_rows(&m, 2, 13, 0, runs[r][0], runs[r][1], &a, &err) == FT_OK, "acts");
        memset(m.lora->grads, 0, n * sizeof(float));
        loss[r] = model_forward(&m, a, &b, 1, 9, NULL, NULL);
        model_backward(&m, a, &b, 1.0f, 9);
        g[r] = malloc(n * sizeof(float));
        memcpy(g[r], m.lora->grads, n * sizeof(float));
        if (r == 1)
            CHECK(acts_bytes(a) < planned(&m, 2, 13, CKPT_FP32),
                  "chunks take less than the default (all 26 rows here)");
        acts_free(a);
    }
    for (int r = 1; r < 5; r++) {
        int ref = r < 3 ? 0 : 3;
        double maxg = 0, worst = 0;
        for (size_t i = 0; i < n; i++) {
            maxg = fmax(maxg, fabs(g[ref][i]));
            worst = fmax(worst, fabs(g[r][i] - g[ref][i]));
        }
        CHECK(fabs(loss[r] - loss[ref]) <= 1e-6 * fabs(loss[ref]), "rows %d: loss %.17g vs %.17g",
              runs[r][1], loss[r], loss[ref]);
        CHECK(maxg > 1e-3 && worst <= 1e-6 * maxg,
              "ckpt %d rows %d: LoRA grads differ by %g (max %g)", runs[r][0], runs[r][1], worst,
              maxg);
    }
    for (int r = 0; r < 5; r++)
        free(g[r]);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&m);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
}

/* A model loaded with quantized linear weights computes exactly what the fp32 model computes
 * when its weights are the dequantized values: forward and LoRA gradients within fp32 rounding
 * of a different summation order (1e-5 of the largest gradient; in practice they are equal, as
 * a panel holds the whole tiny matrix and one GEMM runs over the same numbers). Also: the
 * resident weight bytes the loader reports are the planner's (model_weight_bytes). */
static void check_quantized_equals_dequantized(const char *fmt, int double_quant) {
    char dir[] = "/tmp/ftune_qmodel_test_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp %s", dir);
    ft_error err;
    REQUIRE(model_init_random("llama", "tiny", 97, 11, dir, &err) == FT_OK, "init: %s", err.what);
    model mq, mf;
    model_load_options lo = {.quant = fmt, .double_quant = double_quant, .blocksize = 64};
    if (model_load_with(dir, &lo, &mq, &err) != FT_OK || model_load(dir, &mf, &err) != FT_OK) {
        CHECK(0, "%s: load: %s %s", fmt, err.where, err.what);
        return;
    }
    CHECK(mq.weight_bytes == model_weight_bytes(&mq.cfg, &mq.quant),
          "%s: resident weights %zu bytes, plan %zu", fmt, mq.weight_bytes,
          model_weight_bytes(&mq.cfg, &mq.quant));
    CHECK(mq.weight_bytes < mf.weight_bytes, "%s: %zu bytes vs fp32 %zu", fmt, mq.weight_bytes,
          mf.weight_bytes);
    int changed = 0;
    for (int l = 0; l < mf.cfg.L; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            lin_weights *q = &mq.blocks[l].lin[k], *f = &mf.blocks[l].lin[k];
            if (!f->out) continue;
            CHECK(q->W.fmt == (qformat)qformat_parse(fmt) && f->W.fmt == QF_F32, "formats");
            float *w = f->W.owned; /* the fp32 copy model_load made: ours to overwrite */
            size_t n = (size_t)f->out * f->in;
            float *d = malloc(n * sizeof(float));
            qtensor_dequant_rows(&q->W, 0, f->out, d);
            for (size_t i = 0; i < n; i++)
                changed += d[i] != w[i];
            memcpy(w, d, n * sizeof(float));
            free(d);
        }
    CHECK(changed > 0, "%s: quantization changes weights", fmt);
    unsigned mask;
    REQUIRE(lora_parse_targets(&mf.cfg, "all-linear", &mask, &err) == FT_OK, "targets: %s",
            err.what);
    REQUIRE(lora_create(&mf.cfg, 4, 8, 0, 0, mask, NULL, &mf.lora, &err) == FT_OK,
            "lora_create: %s", err.what);
    REQUIRE(lora_create(&mq.cfg, 4, 8, 0, 0, mask, NULL, &mq.lora, &err) == FT_OK,
            "lora_create: %s", err.what);
    for (size_t i = 0; i < mf.lora->n_params; i++)
        mf.lora->params[i] = mq.lora->params[i] = (float)(0.4 * (urand() - 0.5));
    dataset ds = {0};
    ds.n = 2;
    ds.ex = calloc(2, sizeof(example));
    for (int e = 0; e < 2; e++) {
        ds.ex[e].n = 10 - 3 * e;
        ds.ex[e].ids = malloc(sizeof(int32_t) * 10);
        ds.ex[e].labels = malloc(sizeof(int32_t) * 10);
        for (int t = 0; t < 10; t++)
            ds.ex[e].ids[t] = ds.ex[e].labels[t] = (int32_t)(urand() * 97);
    }
    batch b;
    REQUIRE(batch_alloc(&b, 2, 10, &err) == FT_OK, "batch_alloc: %s", err.what);
    int idx[2] = {0, 1};
    batch_fill(&b, &ds, idx, 2);
    model *ms[2] = {&mf, &mq};
    double loss[2];
    for (int i = 0; i < 2; i++) {
        acts *a;
        REQUIRE(acts_alloc(ms[i], 2, 10, 0, &a, &err) == FT_OK, "acts: %s", err.what);
        memset(ms[i]->lora->grads, 0, ms[i]->lora->n_params * sizeof(float));
        loss[i] = model_forward(ms[i], a, &b, 1, 0, NULL, NULL);
        model_backward(ms[i], a, &b, 1.0f, 0);
        acts_free(a);
    }
    double maxg = 0, worst = 0;
    for (size_t i = 0; i < mf.lora->n_params; i++) {
        maxg = fmax(maxg, fabs(mf.lora->grads[i]));
        worst = fmax(worst, fabs(mf.lora->grads[i] - mq.lora->grads[i]));
    }
    CHECK(fabs(loss[0] - loss[1]) <= 1e-6 * fabs(loss[0]), "%s: loss %.9g vs dequantized %.9g", fmt,
          loss[1], loss[0]);
    CHECK(maxg > 1e-3 && worst <= 1e-5 * maxg, "%s dq %d: LoRA grads differ by %g (max %g)", fmt,
          double_quant, worst, maxg);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&mq);
    model_free(&mf);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
}

/* One training step (forward, backward) of the tiny Llama with LoRA on every linear layer, from
 * the given load options; returns the loss, fills grads (n_params floats, malloc'ed). */
static double one_step(const char *dir, const model_load_options *lo, float **grads,
                       size_t *n_params, qcompute *compute) {
    ft_error err;
    model m;
    *grads = NULL;
    *n_params = 0;
    if (model_load_with(dir, lo, &m, &err) != FT_OK) {
        CHECK(0, "load: %s %s", err.where, err.what);
        return NAN;
    }
    *compute = m.blocks[0].lin[0].W.compute;
    unsigned mask;
    if (lora_parse_targets(&m.cfg, "all-linear", &mask, &err) != FT_OK ||
        lora_create(&m.cfg, 4, 8, 0, 0, mask, NULL, &m.lora, &err) != FT_OK) {
        CHECK(0, "lora: %s", err.what);
        model_free(&m);
        return NAN;
    }
    uint64_t keep = rng;
    rng = 777; /* the same LoRA values and data in every call */
    for (size_t i = 0; i < m.lora->n_params; i++)
        m.lora->params[i] = (float)(0.4 * (urand() - 0.5));
    dataset ds = {0};
    ds.n = 2;
    ds.ex = calloc(2, sizeof(example));
    for (int e = 0; e < 2; e++) {
        ds.ex[e].n = 12 - 4 * e;
        ds.ex[e].ids = malloc(sizeof(int32_t) * 12);
        ds.ex[e].labels = malloc(sizeof(int32_t) * 12);
        for (int t = 0; t < 12; t++)
            ds.ex[e].ids[t] = ds.ex[e].labels[t] = (int32_t)(urand() * 97);
    }
    rng = keep;
    batch b;
    acts *a;
    if (batch_alloc(&b, 2, 12, &err) != FT_OK || acts_alloc(&m, 2, 12, 0, &a, &err) != FT_OK) {
        CHECK(0, "batch / acts: %s", err.what);
        return NAN; /* the test fails; what it allocated stays (a leak only on this path) */
    }
    int idx[2] = {0, 1};
    batch_fill(&b, &ds, idx, 2);
    memset(m.lora->grads, 0, m.lora->n_params * sizeof(float));
    double loss = model_forward(&m, a, &b, 1, 0, NULL, NULL);
    model_backward(&m, a, &b, 1.0f, 0);
    *n_params = m.lora->n_params;
    *grads = malloc(*n_params * sizeof(float));
    memcpy(*grads, m.lora->grads, *n_params * sizeof(float));
    acts_free(a);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&m);
    return loss;
}

/* --dtype bf16 (QC_BF16): the loss and LoRA gradients of one step stay within 1e-2 (of the loss;
 * of the largest gradient) of the fp32 step, the bound issue 7 sets for bf16; and they differ
 * from the step with the same bf16-stored weights multiplied in fp32 (--quant bf16
 * --quant-lm-head bf16), so the
 * activations were rounded too, not only the weights. */
static void check_bf16_compute(void) {
    char dir[] = "/tmp/ftune_bf16c_test_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp %s", dir);
    ft_error err;
    REQUIRE(model_init_random("llama", "tiny", 97, 13, dir, &err) == FT_OK, "init: %s", err.what);
    const model_load_options fp32 = {0}, stored = {.quant = "bf16", .lm_head = "bf16"},
                             bf16 = {.dtype = "bf16"};
    const model_load_options *los[3] = {&fp32, &stored, &bf16};
    float *g[3];
    size_t n[3];
    qcompute qc[3];
    double loss[3];
    for (int i = 0; i < 3; i++) {
        loss[i] = one_step(dir, los[i], &g[i], &n[i], &qc[i]);
        REQUIRE(g[i] && n[i] == n[0], "step %d failed", i);
    }
    CHECK(qc[0] == QC_F32 && qc[1] == QC_F32 && qc[2] == QC_BF16, "compute %d %d %d", qc[0], qc[1],
          qc[2]);
    double maxg = 0, worst = 0, vs_stored = 0;
    for (size_t i = 0; i < n[0]; i++) {
        maxg = fmax(maxg, fabs(g[0][i]));
        worst = fmax(worst, fabs(g[2][i] - g[0][i]));
        vs_stored = fmax(vs_stored, fabs(g[2][i] - g[1][i]));
    }
    printf("bf16 compute: loss %.7g vs fp32 %.7g; LoRA grads differ by %.3g of the largest "
           "(%.3g from bf16 weights in fp32)\n",
           loss[2], loss[0], worst / maxg, vs_stored / maxg);
    CHECK(fabs(loss[2] - loss[0]) <= 1e-2 * fabs(loss[0]), "bf16 loss %.9g vs fp32 %.9g", loss[2],
          loss[0]);
    CHECK(maxg > 1e-3 && worst <= 1e-2 * maxg, "bf16: LoRA grads differ by %g (max %g)", worst,
          maxg);
    CHECK(vs_stored > 1e-6 * maxg, "bf16 compute equals fp32 compute over bf16 weights (%g)",
          vs_stored);
    for (int i = 0; i < 3; i++)
        free(g[i]);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
}

int main(void) {
    const char *archs[] = {"llama", "mistral", "qwen2", "qwen3", "phi3"};
    for (int i = 0; i < 5; i++)
        check_arch(archs[i], 0.0, 0);
    check_arch("llama", 0.3, 0);
    check_arch("qwen3", 0.0, 1); /* gradient checkpointing: recomputed layers, same gradients */
    check_arch("phi3", 0.3, 1);
    check_ckpt_identical();
    check_bf16_checkpoints();
    check_mlp_chunks();
    check_quantized_equals_dequantized("nf4", 0);
    check_quantized_equals_dequantized("nf4", 1);
    check_quantized_equals_dequantized("fp4", 0);
    /* q8 needs input sizes divisible by 32, which the tiny shape's I = 176 is not;
     * tests/peers/test_qlora.py checks it against gguf */
    check_quantized_equals_dequantized("bf16", 0);
    check_bf16_compute();
    return test_summary("model");
}
