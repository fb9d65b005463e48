/*
 * dataset.c: reading pre-tokenized JSONL and building padded micro-batches (see dataset.h).
 *
 * batch_alloc keeps the space for document ids behind b->pos: pos holds 2 * maxB * maxT ints
 * (positions, then document ids), and the size is stored in the int before b->len, so that
 * batch_fill can point b->seg there for packed rows and leave it NULL otherwise.
 */
#include "data/dataset.h"
#include "io/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ft_status read_int_array(const cJSON *arr, const char *field, int vocab, int is_labels,
                                int32_t **out, int *n, const char *where, ft_error *err) {
    char w[4200];
    snprintf(w, sizeof w, "%s: field \"%s\"", where, field);
    if (!cJSON_IsArray(arr))
        return ft_error_set(err, FT_ERR_INPUT, w, "write the ids as a JSON list, e.g. [1, 2, 3]",
                            "expected a list of integers, found %s", json_type_name(arr));
    int len = cJSON_GetArraySize(arr), i = 0;
    int32_t *v = malloc(sizeof(int32_t) * (len ? len : 1));
    if (!v) return ft_error_set(err, FT_ERR_RUNTIME, w, NULL, "out of memory");
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        double d = cJSON_IsNumber(e) ? e->valuedouble : -1e300;
        /* whole = an integer; tested before any cast (casting 1e300 to an integer is undefined) */
        int whole = cJSON_IsNumber(e) && d == floor(d) && fabs(d) < 9e15;
        int ok = whole && ((d >= 0 && d < vocab) || (is_labels && d == -100));
        if (!ok) {
            free(v);
            if (!whole && cJSON_IsNumber(e))
                return ft_error_set(err, FT_ERR_INPUT, w, "token ids are whole numbers",
                                    "item %d: expected an integer token id, found %g", i, d);
            if (!whole)
                return ft_error_set(err, FT_ERR_INPUT, w, "token ids are whole numbers",
                                    "item %d: expected an integer token id, found %s", i,
                                    json_type_name(e));
            return ft_error_set(err, FT_ERR_INPUT, w,
                                "the data must be tokenized with this model's tokenizer",
                                "item %d: token id %.0f is outside the vocabulary [0, %d)%s", i,
                                d, vocab, is_labels ? " (and is not -100)" : "");
        }
        v[i++] = (int32_t)d;
    }
    *out = v;
    *n = len;
    return FT_OK;
}

void dataset_free(dataset *ds) {
    for (int i = 0; i < ds->n; i++) {
        free(ds->ex[i].ids);
        free(ds->ex[i].labels);
        free(ds->ex[i].docs);
    }
    free(ds->ex);
    memset(ds, 0, sizeof *ds);
}

long example_counted(const example *e) {
    long c = 0;
    int d = 0, end = e->docs ? e->docs[0] : e->n;
    for (int t = 1; t < e->n; t++) {
        if (t == end) { /* first token of the next document: predicted by nobody */
            end += e->docs[++d];
            continue;
        }
        c += e->labels[t] != -100;
    }
    return c;
}

ft_status batch_alloc(batch *b, int maxB, int maxT, ft_error *err) {
    memset(b, 0, sizeof *b);
    size_t n = (size_t)maxB * maxT;
    b->ids = calloc(n, sizeof *b->ids);
    b->targets = calloc(n, sizeof *b->targets);
    b->pos = calloc(2 * n, sizeof *b->pos);
    int *lenblock = calloc((size_t)maxB + 1, sizeof(int));
    if (lenblock) lenblock[0] = (int)n, b->len = lenblock + 1;
    if (!b->ids || !b->targets || !b->pos || !b->len) {
        batch_free(b);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    }
    return FT_OK;
}

void batch_free(batch *b) {
    free(b->ids);
    free(b->targets);
    free(b->pos);
    if (b->len) free(b->len - 1);
    memset(b, 0, sizeof *b);
}

void batch_fill(batch *b, const dataset *ds, const int *idx, int nb) {
    int T = 1, packed = 0;
    for (int i = 0; i < nb; i++) {
        if (ds->ex[idx[i]].n > T) T = ds->ex[idx[i]].n;
        if (ds->ex[idx[i]].n_docs > 1) packed = 1;
    }
    b->B = nb, b->T = T;
    b->seg = packed ? b->pos + b->len[-1] : NULL;
    for (int i = 0; i < nb; i++) {
        const example *e = &ds->ex[idx[i]];
        b->len[i] = e->n;
        int d = 0, start = 0, end = e->docs ? e->docs[0] : e->n;
        for (int t = 0; t < T; t++) {
            size_t o = (size_t)i * T + t;
            if (t == end && t < e->n) start = end, end += e->docs[++d];
            b->ids[o] = t < e->n ? e->ids[t] : 0;
            b->pos[o] = t < e->n ? t - start : t;
            if (packed) b->seg[o] = t < e->n ? d : d + 1;
            b->targets[o] = t + 1 < end ? e->labels[t + 1] : -100;
        }
    }
}
