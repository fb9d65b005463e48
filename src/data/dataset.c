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

ft_status dataset_load_ids(const char *path, int seq_len, int vocab, dataset *ds, ft_error *err) {
    memset(ds, 0, sizeof *ds);
    char *text;
    size_t len;
    ft_status st = file_read_all(path, &text, &len, err);
    if (st) return st;
    int cap = 0, lineno = 0;
    char *p = text, *end = text + len;
    while (p < end && !st) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        lineno++;
        char *s = p;
        p = nl ? nl + 1 : end;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r')) s++;
        if (s == le) continue; /* blank line */
        char where[4200];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        const char *jend = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(s, (size_t)(le - s), &jend, 0);
        while (j && jend < le && (*jend == ' ' || *jend == '\t' || *jend == '\r')) jend++;
        if (!j || !cJSON_IsObject(j) || jend != le) {
            cJSON_Delete(j);
            st = ft_error_set(err, FT_ERR_INPUT, where,
                              "each line must be one JSON object such as {\"input_ids\": [1, 2, 3]}",
                              "line is not a JSON object");
            break;
        }
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "input_ids");
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
        example e = {0};
        if (!ids) {
            st = ft_error_set(err, FT_ERR_INPUT, where,
                              "text, prompt/completion and chat formats come with the data issue; "
                              "for now each line needs token ids",
                              "field \"input_ids\" is missing");
        } else {
            st = read_int_array(ids, "input_ids", vocab, 0, &e.ids, &e.n, where, err);
        }
        if (!st && e.n == 0)
            st = ft_error_set(err, FT_ERR_INPUT, where, "drop the line or give it token ids",
                              "field \"input_ids\" is empty");
        if (!st && labels && !cJSON_IsNull(labels)) {
            int nl2;
            st = read_int_array(labels, "labels", vocab, 1, &e.labels, &nl2, where, err);
            if (!st && nl2 != e.n)
                st = ft_error_set(err, FT_ERR_INPUT, where,
                                  "labels needs one entry per input id (-100 where nothing is trained)",
                                  "field \"labels\" has %d items but \"input_ids\" has %d", nl2, e.n);
        } else if (!st) {
            e.labels = malloc(sizeof(int32_t) * e.n);
            if (e.labels) memcpy(e.labels, e.ids, sizeof(int32_t) * e.n);
        }
        cJSON_Delete(j);
        if (st) {
            free(e.ids);
            free(e.labels);
            break;
        }
        if (seq_len > 0 && e.n > seq_len) {
            e.n = seq_len;
            ds->n_truncated++;
        }
        if (ds->n == cap) {
            cap = cap ? cap * 2 : 256;
            example *ne = realloc(ds->ex, sizeof(example) * cap);
            if (!ne) {
                st = ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
                free(e.ids);
                free(e.labels);
                break;
            }
            ds->ex = ne;
        }
        ds->ex[ds->n++] = e;
        ds->tokens += e.n;
        if (e.n > ds->max_len) ds->max_len = e.n;
    }
    free(text);
    if (!st && ds->n == 0)
        st = ft_error_set(err, FT_ERR_INPUT, path, "give a JSONL file with one example per line",
                          "the file has no examples");
    if (st) dataset_free(ds);
    return st;
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
