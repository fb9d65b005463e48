/*
 * data_test.c: packing, mixing and splitting of src/data on pre-tokenized files (no tokenizer
 * needed), and the batches built from packed rows.
 *
 * Expected values are written out by hand from the definitions in dataset.h / sources.c:
 * best-fit decreasing puts every example whole into rows of seq_len and loses none; a packed row
 * restarts positions at each document, gives each document its own seg id and no target across a
 * boundary; weights give round(N * w / sum w) examples per source; --val-split holds out
 * ceil(f * n) of each source; the same seed gives the same result; a .json file holding an
 * array of rows reads as the same rows in JSONL, errors naming the item's line. Finally a packed
 * micro-batch through model_forward / model_backward (random tiny model) gives the same loss and
 * LoRA gradients as its examples one by one, within 1e-5 relative (fp32 sums in another order).
 */
#include "data/dataset.h"
#include "model/init.h"
#include "model/model.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void write_file(const char *name, int n, int lo, int hi, int base, char *path) {
    snprintf(path, 256, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    unsigned s = (unsigned)base * 7919u + 1;
    for (int i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        int len = lo + (int)((s >> 8) % (unsigned)(hi - lo + 1));
        fprintf(f, "{\"input_ids\": [");
        /* ids of a file with base >= 50 are in [51, 90], else in [1, 40] */
        int off = base >= 50 ? 51 : 1;
        for (int t = 0; t < len; t++)
            fprintf(f, t ? ", %d" : "%d", (base + i * 3 + t) % 40 + off);
        fprintf(f, "], \"labels\": [");
        for (int t = 0; t < len; t++)
            fprintf(f, t ? ", %d" : "%d", t < 2 ? -100 : (base + i * 3 + t) % 40 + off);
        fprintf(f, "]}\n");
    }
    fclose(f);
}

static void test_pack(void) {
    char a[256];
    write_file("a.jsonl", 40, 3, 30, 0, a);
    const char *src[1] = {a};
    data_options o = {0};
    o.sources = src, o.n_sources = 1, o.vocab = 97, o.seq_len = 32, o.seed = 1;
    dataset plain, packed;
    char h1[17], h2[17];
    ft_error err;
    CHECK(data_load(&o, &plain, NULL, h1, &err) == FT_OK, "load: %s", err.what);
    o.pack = 1;
    CHECK(data_load(&o, &packed, NULL, h2, &err) == FT_OK, "load packed: %s", err.what);
    CHECK(!strcmp(h1, h2), "same files, same hash");
    CHECK(packed.n < plain.n, "%d rows for %d examples", packed.n, plain.n);
    CHECK(packed.n_docs == plain.n, "docs %d", packed.n_docs);
    CHECK(packed.tokens == plain.tokens, "tokens %ld vs %ld", packed.tokens, plain.tokens);
    CHECK(packed.trained == plain.trained, "trained %ld vs %ld", packed.trained, plain.trained);
    /* every example appears whole in exactly one row */
    int *seen = calloc((size_t)plain.n, sizeof(int)), ok = 1,
        lower = (int)((plain.tokens + 31) / 32);
    for (int r = 0; r < packed.n; r++) {
        const example *e = &packed.ex[r];
        int o2 = 0, sum = 0;
        for (int d = 0; d < e->n_docs; d++)
            sum += e->docs[d];
        ok &= sum == e->n && e->n <= 32;
        for (int d = 0; d < e->n_docs; d++) {
            int found = 0;
            for (int i = 0; i < plain.n && !found; i++)
                if (!seen[i] && plain.ex[i].n == e->docs[d] &&
                    !memcmp(plain.ex[i].ids, e->ids + o2, sizeof(int32_t) * e->docs[d]) &&
                    !memcmp(plain.ex[i].labels, e->labels + o2, sizeof(int32_t) * e->docs[d]))
                    seen[i] = 1, found = 1;
            ok &= found;
            o2 += e->docs[d];
        }
    }
    for (int i = 0; i < plain.n; i++)
        ok &= seen[i];
    CHECK(ok, "packed rows hold every example once, intact");
    CHECK(packed.n <= lower + lower / 4 + 1, "BFD rows %d, lower bound %d", packed.n, lower);
    free(seen);

    /* a packed micro-batch: positions restart, seg ids per document, no target across */
    batch b;
    REQUIRE(batch_alloc(&b, 2, 32, &err) == FT_OK, "alloc");
    int idx[2] = {packed.n - 1, packed.n - 2}; /* BFD's last rows hold the short examples */
    CHECK(packed.ex[idx[0]].n_docs > 1, "last row has %d documents", packed.ex[idx[0]].n_docs);
    batch_fill(&b, &packed, idx, 2);
    CHECK(b.seg != NULL, "seg set for packed rows");
    int bad = 0;
    for (int i = 0; i < 2; i++) {
        const example *e = &packed.ex[idx[i]];
        int t = 0;
        for (int d = 0; d < e->n_docs; d++)
            for (int k = 0; k < e->docs[d]; k++, t++) {
                int o3 = i * b.T + t;
                bad += b.pos[o3] != k || b.seg[o3] != d;
                int want = k + 1 < e->docs[d] ? e->labels[t + 1] : -100;
                bad += b.targets[o3] != want;
            }
    }
    CHECK(!bad, "%d wrong positions / seg ids / targets", bad);
    int one = 0;
    batch_fill(&b, &plain, &one, 1);
    CHECK(b.seg == NULL, "no seg for unpacked rows");
    batch_free(&b);
    dataset_free(&plain);
    dataset_free(&packed);
}

static void test_mix_split(void) {
    char a[256], b2[256], sa[300], sb[300];
    write_file("m1.jsonl", 30, 3, 8, 5, a);
    write_file("m2.jsonl", 10, 3, 8, 50, b2);
    snprintf(sa, sizeof sa, "%s:3", a);
    snprintf(sb, sizeof sb, "%s:1", b2);
    const char *src[2] = {sa, sb};
    data_options o = {0};
    o.sources = src, o.n_sources = 2, o.vocab = 97, o.seq_len = 64, o.seed = 3;
    o.max_examples = 100;
    dataset ds, val, ds2, val2;
    char h[17];
    ft_error err;
    CHECK(data_load(&o, &ds, &val, h, &err) == FT_OK, "mix: %s", err.what);
    CHECK(ds.n == 100, "100 examples, got %d", ds.n);
    /* round(100 * 1/4) = 25 from the second source (its ids are above 50) */
    int nb = 0;
    for (int i = 0; i < ds.n; i++)
        nb += ds.ex[i].ids[0] > 50;
    CHECK(nb == 25, "25 from the weight-1 source, got %d", nb);
    CHECK(val.n == 0, "no validation asked");
    dataset_free(&ds);
    dataset_free(&val);

    o.max_examples = 0;
    src[0] = a, src[1] = b2;
    o.val_split = 0.1;
    CHECK(data_load(&o, &ds, &val, h, &err) == FT_OK, "split: %s", err.what);
    CHECK(val.n == 3 + 1, "ceil(0.1*30) + ceil(0.1*10) held out, got %d", val.n);
    CHECK(ds.n == 36, "36 left, got %d", ds.n);
    CHECK(data_load(&o, &ds2, &val2, h, &err) == FT_OK, "again");
    int same = ds.n == ds2.n && val.n == val2.n;
    for (int i = 0; same && i < val.n; i++)
        same =
            val.ex[i].n == val2.ex[i].n && !memcmp(val.ex[i].ids, val2.ex[i].ids, 4 * val.ex[i].n);
    CHECK(same, "same seed, same split");
    dataset_free(&ds), dataset_free(&val), dataset_free(&ds2), dataset_free(&val2);
}

/* packed rows vs the same examples one by one through the model */
static void test_packed_model(void) {
    char mdir[128], a[256];
    snprintf(mdir, sizeof mdir, "%s/model", dir);
    ft_error err;
    REQUIRE(model_init_random("llama", "tiny", 97, 5, mdir, &err) == FT_OK, "init: %s", err.what);
    write_file("p.jsonl", 9, 3, 14, 11, a);
    const char *src[1] = {a};
    data_options o = {0};
    o.sources = src, o.n_sources = 1, o.vocab = 97, o.seq_len = 40, o.seed = 1;
    dataset plain, packed;
    char h[17];
    CHECK(data_load(&o, &plain, NULL, h, &err) == FT_OK, "load");
    o.pack = 1;
    CHECK(data_load(&o, &packed, NULL, h, &err) == FT_OK, "load packed");
    model m;
    CHECK(model_load(mdir, &m, &err) == FT_OK, "model: %s", err.what);
    unsigned mask;
    REQUIRE(lora_parse_targets(&m.cfg, "all-linear", &mask, &err) == FT_OK, "targets: %s",
            err.what);
    REQUIRE(lora_create(&m.cfg, 4, 8, 0, 0, mask, NULL, &m.lora, &err) == FT_OK, "lora_create: %s",
            err.what);
    lora_init(m.lora, 3);
    /* make B non-zero so every LoRA gradient is */
    for (size_t i = 0; i < m.lora->n_params; i++)
        m.lora->params[i] += 0.01f * (float)((int)((i * 37) % 11) - 5);
    size_t P = m.lora->n_params;
    float *g1 = calloc(P, sizeof(float)), *g2 = calloc(P, sizeof(float));
    acts *ac;
    batch b;
    REQUIRE(batch_alloc(&b, packed.n, 40, &err) == FT_OK, "batch_alloc: %s", err.what);
    REQUIRE(acts_alloc(&m, packed.n, 40, 0, &ac, &err) == FT_OK, "acts: %s", err.what);
    long counted = 0;
    for (int i = 0; i < plain.n; i++)
        counted += example_counted(&plain.ex[i]);
    double l1 = 0, l2 = 0;
    memset(m.lora->grads, 0, P * sizeof(float));
    for (int i = 0; i < plain.n; i++) {
        batch_fill(&b, &plain, &i, 1);
        l1 += model_forward(&m, ac, &b, 1, 0, NULL, NULL);
        model_backward(&m, ac, &b, 1.0f / counted, 0);
    }
    memcpy(g1, m.lora->grads, P * sizeof(float));
    memset(m.lora->grads, 0, P * sizeof(float));
    int *idx = malloc(sizeof(int) * packed.n);
    for (int i = 0; i < packed.n; i++)
        idx[i] = i;
    batch_fill(&b, &packed, idx, packed.n);
    l2 = model_forward(&m, ac, &b, 1, 0, NULL, NULL);
    model_backward(&m, ac, &b, 1.0f / counted, 0);
    memcpy(g2, m.lora->grads, P * sizeof(float));
    CHECK(packed.n < plain.n, "rows %d < examples %d", packed.n, plain.n);
    CHECK_NEAR(l2 / counted, l1 / counted, 1e-5 * l1 / counted, "packed loss");
    double gmax = 0, dmax = 0;
    for (size_t i = 0; i < P; i++) {
        if (fabs(g1[i]) > gmax) gmax = fabs(g1[i]);
        if (fabs(g1[i] - g2[i]) > dmax) dmax = fabs(g1[i] - g2[i]);
    }
    CHECK(gmax > 0 && dmax <= 1e-5 * gmax, "grads max diff %g, max %g", dmax, gmax);
    free(idx), free(g1), free(g2);
    acts_free(ac);
    batch_free(&b);
    model_free(&m);
    dataset_free(&plain);
    dataset_free(&packed);
}

/* a folder source: its .jsonl files in name order, other files ignored */
static void test_folder(void) {
    char sub[128], p1[256], p2[256], junk[256];
    snprintf(sub, sizeof sub, "%s/folder", dir);
    mkdir(sub, 0755);
    write_file("folder/b.jsonl", 4, 3, 5, 1, p2);
    write_file("folder/a.jsonl", 3, 3, 5, 60, p1);
    snprintf(junk, sizeof junk, "%s/notes.md", sub);
    FILE *f = fopen(junk, "w");
    fputs("not data\n", f);
    fclose(f);
    const char *src[1] = {sub};
    data_options o = {0};
    o.sources = src, o.n_sources = 1, o.vocab = 97, o.seq_len = 64;
    dataset ds;
    char h[17];
    ft_error err;
    CHECK(data_load(&o, &ds, NULL, h, &err) == FT_OK, "folder: %s", err.what);
    CHECK(ds.n == 7, "7 examples, got %d", ds.n);
    CHECK(ds.n == 7 && ds.ex[0].ids[0] > 50 && ds.ex[3].ids[0] <= 50, "a.jsonl before b.jsonl");
    dataset_free(&ds);
}

/* issue 15.2: a file holding one JSON array of rows (Alpaca's own .json files) reads as the same
 * rows in JSONL, and an error in an item names the line it starts on and its index. */
static void test_json_array(void) {
    char a[256], b[256], bad[256];
    write_file("rows.jsonl", 6, 3, 9, 2, a);
    snprintf(b, sizeof b, "%s/rows.json", dir);
    FILE *in = fopen(a, "r"), *out = fopen(b, "w");
    char line[4096];
    fputs("  [\n", out);
    for (int i = 0; fgets(line, sizeof line, in); i++)
        fprintf(out, "%s  %.*s", i ? ",\n" : "", (int)strcspn(line, "\n"), line);
    fputs("\n]\n", out);
    fclose(in), fclose(out);
    data_options o = {0};
    o.n_sources = 1, o.vocab = 97, o.seq_len = 64;
    dataset d1, d2;
    char h[17];
    ft_error err;
    const char *s1[1] = {a}, *s2[1] = {b};
    o.sources = s1;
    CHECK(data_load(&o, &d1, NULL, h, &err) == FT_OK, "jsonl: %s", err.what);
    o.sources = s2;
    CHECK(data_load(&o, &d2, NULL, h, &err) == FT_OK, "json array: %s", err.what);
    int same = d1.n == d2.n && d1.n == 6;
    for (int i = 0; same && i < d1.n; i++)
        same = d1.ex[i].n == d2.ex[i].n &&
               !memcmp(d1.ex[i].ids, d2.ex[i].ids, sizeof(int32_t) * d1.ex[i].n) &&
               !memcmp(d1.ex[i].labels, d2.ex[i].labels, sizeof(int32_t) * d1.ex[i].n);
    CHECK(same, "the JSON array gives the JSONL file's examples (%d vs %d)", d2.n, d1.n);
    dataset_free(&d1);
    dataset_free(&d2);
    /* item 2 (on line 4) has an id outside the vocabulary */
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    out = fopen(bad, "w");
    fputs("[{\"input_ids\": [1, 2]},\n {\"input_ids\": [3]},\n\n {\"input_ids\": [4, 500]}]", out);
    fclose(out);
    const char *s3[1] = {bad};
    o.sources = s3;
    CHECK(data_load(&o, &d1, NULL, h, &err) == FT_ERR_INPUT, "bad item refused");
    char want[300];
    snprintf(want, sizeof want, "%s:4 (item 2)", bad);
    CHECK(strstr(err.where, want) != NULL, "error names the item's line and index: %s", err.where);
    out = fopen(bad, "w");
    fputs("[{\"input_ids\": [1, 2]} {\"input_ids\": [3]}]", out);
    fclose(out);
    CHECK(data_load(&o, &d1, NULL, h, &err) == FT_ERR_INPUT && strstr(err.what, "','"),
          "a missing comma is named: %s", err.what);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ftune-data-test-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    test_pack();
    test_mix_split();
    test_folder();
    test_json_array();
    test_packed_model();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary("data");
}
