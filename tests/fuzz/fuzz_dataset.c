/*
 * fuzz_dataset.c: libFuzzer harness for pre-tokenized JSONL (src/data/dataset.c).
 *
 * The input is written as data.jsonl and read by the trainer's loader, data_load (seq_len 64,
 * vocab 1000, no model folder: pre-tokenized lines load, text formats must fail cleanly).
 * An accepted dataset must keep what the trainer builds on: every example 1..64 tokens, ids in
 * [0, 1000), labels in [0, 1000) or -100, the counters consistent; then the examples go
 * through batch_fill, as the trainer would use them. A broken promise aborts (libFuzzer: crash).
 */
#include "data/dataset.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { SEQ = 64, VOCAB = 1000 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("data.jsonl", data, size);
    dataset ds;
    ft_error err;
    char hash[17];
    const char *src[1] = {path};
    data_options o = {0};
    o.sources = src, o.n_sources = 1, o.vocab = VOCAB, o.seq_len = SEQ;
    if (data_load(&o, &ds, NULL, hash, &err)) {
        if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) abort();
        return 0;
    }
    long tokens = 0;
    int max_len = 0;
    for (int i = 0; i < ds.n; i++) {
        const example *e = &ds.ex[i];
        if (e->n < 0 || e->n > SEQ || !e->ids) abort();
        for (int t = 0; t < e->n; t++) {
            if (e->ids[t] < 0 || e->ids[t] >= VOCAB) abort();
            if (e->labels && e->labels[t] != -100 && (e->labels[t] < 0 || e->labels[t] >= VOCAB))
                abort();
        }
        if (example_counted(e) > e->n) abort();
        tokens += e->n;
        if (e->n > max_len) max_len = e->n;
    }
    if (tokens != ds.tokens || max_len != ds.max_len || ds.n_truncated > ds.n + ds.n_dropped_masked) abort();
    if (ds.n > 0 && max_len > 0) {
        batch b;
        if (batch_alloc(&b, 4, max_len, &err) == FT_OK) {
            int idx[4];
            for (int s = 0; s < ds.n; s += 4) {
                int nb = ds.n - s < 4 ? ds.n - s : 4;
                for (int k = 0; k < nb; k++) idx[k] = s + k;
                batch_fill(&b, &ds, idx, nb);
            }
            batch_free(&b);
        }
    }
    dataset_free(&ds);
    return 0;
}
