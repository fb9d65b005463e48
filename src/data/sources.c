/*
 * sources.c: data_load (dataset.h): every --data source read, split, mixed by weight, packed.
 *
 * A source is a file or a folder (its *.jsonl and *.txt files, sorted by name), optionally with
 * ":WEIGHT". Validation examples come from --val-data, or else a seeded ceil(fraction * n) of
 * each source is held out before mixing, so a repeated training example never shows up in
 * validation. Mixing: without weights the sources are concatenated (then --max-examples keeps
 * the first N); with weights (all sources must have one) the training set has
 * N = --max-examples (or the total count) examples, round(N * w / sum w) from each source, taken
 * from a seeded permutation of the source and cycling through it again when a source has fewer
 * (upsampling). The result is one fixed list of examples, so epochs, shuffling and the resume
 * position work on it as on a single file.
 *
 * Packing is best-fit decreasing, as TRL's pack_dataset(strategy="bfd"): examples by length,
 * longest first, each into the open row with the least room that still fits it, else a new row.
 */
#include "data/data_internal.h"
#include "base/rand.h"
#include "io/json.h"
#include "base/hash.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void permutation(int *p, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) p[i] = i;
    uint64_t s = rand_mix64(seed);
    for (int i = n - 1; i > 0; i--) {
        s = rand_mix64(s);
        int j = (int)(s % (uint64_t)(i + 1));
        int t = p[i];
        p[i] = p[j], p[j] = t;
    }
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int data_file_name(const char *n) {
    size_t l = strlen(n);
    return (l > 6 && !strcmp(n + l - 6, ".jsonl")) || (l > 4 && !strcmp(n + l - 4, ".txt"));
}

/* Read a file or every data file of a folder. */
static ft_status read_path(data_ctx *c, const char *path, exvec *out, ft_error *err) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return ft_error_set(err, FT_ERR_INPUT, path, "check the path given to --data",
                            "cannot read: %s", strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return data_read_file(c, path, out, err);
    DIR *d = opendir(path);
    if (!d) return ft_error_set(err, FT_ERR_INPUT, path, NULL, "cannot open the folder: %s", strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !data_file_name(e->d_name)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            names = realloc(names, sizeof(char *) * cap);
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof(char *), cmp_str);
    ft_status st = n ? FT_OK
                     : ft_error_set(err, FT_ERR_INPUT, path, "put .jsonl or .txt files in it",
                                    "the folder has no .jsonl or .txt files");
    for (int i = 0; i < n; i++) {
        char full[4200];
        snprintf(full, sizeof full, "%s/%s", path, names[i]);
        if (!st) st = data_read_file(c, full, out, err);
        free(names[i]);
    }
    free(names);
    return st;
}

/* "PATH:WEIGHT" -> path (malloc'ed) and weight; *has = 0 when there is no weight. */
static ft_status parse_source(const char *spec, char **path, double *w, int *has, ft_error *err) {
    const char *colon = strrchr(spec, ':');
    *has = 0, *w = 1;
    if (colon && colon[1]) {
        char *end;
        double v = strtod(colon + 1, &end);
        struct stat sb;
        if (!*end && stat(spec, &sb) != 0) {
            if (!(v > 0) || !isfinite(v))
                return ft_error_set(err, FT_ERR_INPUT, "option --data", "weights are positive numbers",
                                    "\"%s\": the weight %s is not a positive number", spec, colon + 1);
            *has = 1, *w = v;
            *path = strndup(spec, (size_t)(colon - spec));
            return FT_OK;
        }
    }
    *path = strdup(spec);
    return FT_OK;
}

static example example_copy(const example *e) {
    example c = *e;
    c.ids = malloc(sizeof(int32_t) * e->n);
    c.labels = malloc(sizeof(int32_t) * e->n);
    memcpy(c.ids, e->ids, sizeof(int32_t) * e->n);
    memcpy(c.labels, e->labels, sizeof(int32_t) * e->n);
    c.docs = NULL, c.n_docs = 0;
    return c;
}

/* Best-fit decreasing into rows of S tokens; in is emptied. */
static ft_status pack(exvec *in, int S, exvec *out, ft_error *err) {
    int n = in->n;
    if (S < 1 || S > (1 << 24)) S = 1 << 24;
    int *order = malloc(sizeof(int) * (n ? n : 1)), *bin = malloc(sizeof(int) * (n ? n : 1));
    /* counting sort by length, longest first, stable */
    int *cnt = calloc((size_t)S + 2, sizeof(int));
    for (int i = 0; i < n; i++) cnt[S - in->v[i].n]++;
    for (int r = 1; r <= S + 1; r++) cnt[r] += cnt[r - 1];
    for (int i = n - 1; i >= 0; i--) order[--cnt[S - in->v[i].n]] = i;
    free(cnt);
    /* open rows by room left: a stack of rows per room, and a bitmap of non-empty rooms */
    int nw = (S + 64) / 64;
    uint64_t *nonempty = calloc((size_t)nw, sizeof(uint64_t));
    int **stack = calloc((size_t)S + 1, sizeof(int *));
    int *sn = calloc((size_t)S + 1, sizeof(int)), *scap = calloc((size_t)S + 1, sizeof(int));
    int nbins = 0;
    int *room = malloc(sizeof(int) * (n ? n : 1));
    for (int k = 0; k < n; k++) {
        int L = in->v[order[k]].n, r = -1;
        for (int w = L / 64; w < nw && r < 0; w++) {
            uint64_t bits = nonempty[w];
            if (w == L / 64) bits &= ~0ull << (L % 64);
            if (bits) r = w * 64 + __builtin_ctzll(bits);
        }
        int b;
        if (r >= 0 && r <= S) {
            b = stack[r][--sn[r]];
            if (!sn[r]) nonempty[r / 64] &= ~(1ull << (r % 64));
        } else {
            b = nbins++, room[b] = S;
        }
        bin[order[k]] = b;
        room[b] -= L;
        int nr = room[b];
        if (nr > 0) {
            if (sn[nr] == scap[nr]) {
                scap[nr] = scap[nr] ? 2 * scap[nr] : 4;
                stack[nr] = realloc(stack[nr], sizeof(int) * scap[nr]);
            }
            stack[nr][sn[nr]++] = b;
            nonempty[nr / 64] |= 1ull << (nr % 64);
        }
    }
    for (int r = 0; r <= S; r++) free(stack[r]);
    free(stack), free(sn), free(scap), free(nonempty), free(room);
    /* rows: documents in the order they were placed */
    example *rows = calloc((size_t)(nbins ? nbins : 1), sizeof(example));
    for (int b = 0; b < nbins; b++) {
        rows[b].ids = malloc(sizeof(int32_t) * S);
        rows[b].labels = malloc(sizeof(int32_t) * S);
        rows[b].docs = malloc(sizeof(int) * S);
    }
    ft_status st = FT_OK;
    for (int k = 0; k < n; k++) {
        example *e = &in->v[order[k]], *r = &rows[bin[order[k]]];
        memcpy(r->ids + r->n, e->ids, sizeof(int32_t) * e->n);
        memcpy(r->labels + r->n, e->labels, sizeof(int32_t) * e->n);
        r->n += e->n;
        r->docs[r->n_docs++] = e->n;
    }
    for (int b = 0; b < nbins; b++)
        if (!st) st = exvec_push(out, rows[b], err);
        else free(rows[b].ids), free(rows[b].labels), free(rows[b].docs);
    free(rows), free(order), free(bin);
    exvec_free(in);
    return st;
}

static void to_dataset(exvec *v, dataset *ds) {
    ds->ex = v->v, ds->n = v->n;
    ds->tokens = 0, ds->max_len = 0, ds->trained = 0;
    for (int i = 0; i < v->n; i++) {
        ds->tokens += v->v[i].n;
        if (v->v[i].n > ds->max_len) ds->max_len = v->v[i].n;
        ds->trained += example_counted(&v->v[i]);
    }
    memset(v, 0, sizeof *v);
}

ft_status data_load(const data_options *o, dataset *train, dataset *val, char hash[17],
                    ft_error *err) {
    memset(train, 0, sizeof *train);
    if (val) memset(val, 0, sizeof *val);
    data_ctx c = {0};
    c.o = o;
    c.hash = HASH_START;
    ft_status st = FT_OK;
    st = chat_template_args(o->template_args, o->n_template_args, &c.extra, err);
    if (st) return st;
    int ns = o->n_sources;
    exvec *src = calloc((size_t)(ns ? ns : 1), sizeof(exvec));
    double *w = calloc((size_t)(ns ? ns : 1), sizeof(double));
    exvec vv = {0}, all = {0};
    int n_weighted = 0;
    if (ns == 0)
        st = ft_error_set(err, FT_ERR_INPUT, "option --data", "give a data file or folder", "is required");
    for (int i = 0; i < ns && !st; i++) {
        char *path = NULL;
        int has;
        st = parse_source(o->sources[i], &path, &w[i], &has, err);
        if (st) break;
        n_weighted += has;
        st = read_path(&c, path, &src[i], err);
        free(path);
    }
    if (!st && n_weighted && n_weighted != ns)
        st = ft_error_set(err, FT_ERR_INPUT, "option --data",
                          "give every --data source a weight (PATH:WEIGHT), or none",
                          "%d of %d sources have a weight", n_weighted, ns);
    if (!st && o->val_data) {
        st = read_path(&c, o->val_data, &vv, err);
    } else if (!st && o->val_split > 0) {
        if (!(o->val_split < 1))
            st = ft_error_set(err, FT_ERR_INPUT, "option --val-split", "e.g. 0.05", "must be below 1");
        for (int i = 0; i < ns && !st; i++) {
            int n = src[i].n, k = (int)ceil(o->val_split * n);
            if (k >= n) k = n - 1;
            if (k <= 0) continue;
            int *p = malloc(sizeof(int) * n);
            char *is_val = calloc((size_t)n, 1);
            permutation(p, n, o->seed ^ 0x5eedfa11ull ^ (uint64_t)i);
            for (int j = 0; j < k; j++) is_val[p[j]] = 1;
            exvec keep = {0};
            for (int j = 0; j < n && !st; j++)
                st = exvec_push(is_val[j] ? &vv : &keep, src[i].v[j], err);
            free(src[i].v);
            src[i] = keep;
            free(p), free(is_val);
        }
    }
    if (!st && n_weighted) {
        double W = 0;
        long total = 0;
        for (int i = 0; i < ns; i++) W += w[i], total += src[i].n;
        long N = o->max_examples > 0 ? o->max_examples : total;
        for (int i = 0; i < ns && !st; i++) {
            long ci = lround((double)N * w[i] / W);
            if (ci > 0 && src[i].n == 0)
                st = ft_error_set(err, FT_ERR_INPUT, o->sources[i], NULL,
                                  "the source has no examples left to sample from");
            if (st || ci <= 0) continue;
            int *p = malloc(sizeof(int) * src[i].n);
            permutation(p, src[i].n, o->seed ^ rand_mix64(0x6d69780000ull + (uint64_t)i));
            for (long j = 0; j < ci && !st; j++)
                st = exvec_push(&all, example_copy(&src[i].v[p[j % src[i].n]]), err);
            free(p);
        }
    } else if (!st) {
        for (int i = 0; i < ns && !st; i++) {
            for (int j = 0; j < src[i].n && !st; j++) {
                if (o->max_examples > 0 && all.n >= o->max_examples) {
                    free(src[i].v[j].ids), free(src[i].v[j].labels);
                    continue;
                }
                st = exvec_push(&all, src[i].v[j], err);
            }
            free(src[i].v);
            memset(&src[i], 0, sizeof src[i]);
        }
    }
    if (!st && all.n == 0) {
        char hint[400];
        snprintf(hint, sizeof hint, "%s%s", c.first_dropped[0] ? "the first dropped one is at " : "check the data",
                 c.first_dropped);
        st = ft_error_set(err, FT_ERR_INPUT, "option --data", hint,
                          "no examples left to train on (%d longer than --seq-len %d dropped, %d "
                          "with nothing to train on)",
                          c.n_dropped_long, o->seq_len, c.n_dropped_masked);
    }
    int n_docs = all.n;
    if (!st && o->pack) {
        exvec rows = {0};
        st = pack(&all, o->seq_len, &rows, err);
        all = rows;
        if (!st && vv.n) {
            exvec vrows = {0};
            st = pack(&vv, o->seq_len, &vrows, err);
            vv = vrows;
        }
    }
    if (!st) {
        to_dataset(&all, train);
        train->n_docs = n_docs;
        train->n_truncated = c.n_truncated;
        train->n_dropped_long = c.n_dropped_long;
        train->n_dropped_masked = c.n_dropped_masked;
        train->n_no_assistant = c.n_no_assistant;
        train->packed = o->pack;
        snprintf(train->first_dropped, sizeof train->first_dropped, "%s", c.first_dropped);
        if (val) {
            to_dataset(&vv, val);
            val->packed = o->pack;
        }
        hash_hex(&c.hash, sizeof c.hash, HASH_START, hash);
    }
    for (int i = 0; i < ns; i++) exvec_free(&src[i]);
    free(src), free(w);
    exvec_free(&all);
    exvec_free(&vv);
    cJSON_Delete(c.extra);
    tok_free(c.tok);
    chat_template_free(c.tpl);
    free(c.eos);
    if (st) {
        dataset_free(train);
        if (val) dataset_free(val);
    }
    return st;
}

static void put_ints(FILE *f, const int32_t *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, i ? ", %d" : "%d", v[i]);
    fputc(']', f);
}

ft_status data_write_jsonl(const dataset *ds, const char *path, ft_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "cannot create: %s", strerror(errno));
    for (int i = 0; i < ds->n; i++) {
        const example *e = &ds->ex[i];
        fputs("{\"input_ids\": ", f);
        put_ints(f, e->ids, e->n);
        fputs(", \"labels\": ", f);
        put_ints(f, e->labels, e->n);
        if (e->docs) {
            fputs(", \"docs\": [", f);
            for (int d = 0; d < e->n_docs; d++) fprintf(f, d ? ", %d" : "%d", e->docs[d]);
            fputc(']', f);
        }
        fputs("}\n", f);
    }
    if (fclose(f) != 0) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "write failed");
    return FT_OK;
}
