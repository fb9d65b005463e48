/*
 * sampling.c: transformers' logits processors, the choice of the next token, and the
 * generation defaults of a model folder (sampling.h has the definitions and their order).
 *
 * top-p sorts only the scores still finite: the removed ones (-inf) sort first with probability
 * 0, so their cumulative sum is 0 <= 1 - top_p and they stay removed, as in transformers' full
 * sort. Cumulative sums run in double, as PyTorch's CPU cumsum accumulates float32 in double.
 */
#include "infer/sampling.h"
#include "base/rand.h"
#include "io/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void sampler_defaults(sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->do_sample = 0, p->temperature = 1.0, p->top_k = 50, p->top_p = 1.0, p->min_p = -1.0;
    p->repetition_penalty = 1.0, p->seed = 0;
}

/* ---- the processors ---------------------------------------------------------------------- */

static void repetition_penalty(float *s, int V, const int32_t *hist, size_t n, float pen,
                               uint8_t *seen) {
    memset(seen, 0, (size_t)V);
    for (size_t i = 0; i < n; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= V || seen[t]) continue;
        seen[t] = 1;
        s[t] = s[t] < 0 ? s[t] * pen : s[t] / pen;
    }
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

typedef struct scored {
    float s;
    int i;
} scored;

static int cmp_scored_asc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return x->i - y->i;
}

/* The k-th largest score (k <= V), by a copy sorted in descending order of the finite ones. */
static void top_k(float *s, int V, int k) {
    if (k >= V) return;
    float *c = malloc(sizeof(float) * (size_t)V);
    if (!c) return;
    int m = 0;
    for (int i = 0; i < V; i++)
        if (s[i] != -INFINITY) c[m++] = s[i];
    if (m > k) {
        qsort(c, (size_t)m, sizeof(float), cmp_desc);
        float thr = c[k - 1];
        for (int i = 0; i < V; i++)
            if (s[i] < thr) s[i] = -INFINITY;
    }
    free(c);
}

static void top_p(float *s, int V, double p) {
    scored *a = malloc(sizeof(scored) * (size_t)V);
    if (!a) return;
    int m = 0;
    for (int i = 0; i < V; i++)
        if (s[i] != -INFINITY) a[m].s = s[i], a[m].i = i, m++;
    if (m > 1) {
        qsort(a, (size_t)m, sizeof(scored), cmp_scored_asc);
        float mx = a[m - 1].s;
        double sum = 0;
        for (int j = 0; j < m; j++)
            sum += expf(a[j].s - mx);
        double cum = 0;
        float thr = (float)(1.0 - p);
        for (int j = 0; j < m - 1; j++) { /* the last (largest) always stays */
            cum += (float)(expf(a[j].s - mx) / sum);
            if ((float)cum <= thr) s[a[j].i] = -INFINITY;
        }
    }
    free(a);
}

void sampling_softmax(const float *scores, int V, float *probs) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        mx = scores[i] > mx ? scores[i] : mx;
    double sum = 0;
    for (int i = 0; i < V; i++) {
        probs[i] = scores[i] == -INFINITY ? 0.0f : expf(scores[i] - mx);
        sum += probs[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < V; i++)
        probs[i] *= inv;
}

static void min_p(float *s, int V, double mp) {
    float mx = -INFINITY;
    int arg = 0;
    for (int i = 0; i < V; i++)
        if (s[i] > mx) mx = s[i], arg = i;
    double sum = 0;
    for (int i = 0; i < V; i++)
        sum += s[i] == -INFINITY ? 0.0 : expf(s[i] - mx);
    /* p_i < min_p * p_max  <=>  exp(s_i - mx) / sum < min_p / sum (p_max = 1 / sum) */
    float pmax = (float)(1.0 / sum), thr = (float)mp * pmax;
    for (int i = 0; i < V; i++)
        if (i != arg && s[i] != -INFINITY && (float)(expf(s[i] - mx) / sum) < thr) s[i] = -INFINITY;
}

void sampling_process(const sampler_params *p, float *scores, int V, const int32_t *hist, size_t n,
                      uint8_t *seen) {
    if (p->repetition_penalty != 1.0)
        repetition_penalty(scores, V, hist, n, (float)p->repetition_penalty, seen);
    if (!p->do_sample) return;
    if (p->temperature != 1.0) {
        float t = (float)p->temperature;
        for (int i = 0; i < V; i++)
            scores[i] /= t;
    }
    if (p->top_k > 0) top_k(scores, V, p->top_k);
    if (p->top_p < 1.0) top_p(scores, V, p->top_p);
    if (p->min_p >= 0) min_p(scores, V, p->min_p);
}

int32_t sampling_pick(const sampler_params *p, const float *scores, int V, float *probs,
                      uint64_t step) {
    if (probs) sampling_softmax(scores, V, probs);
    if (!p->do_sample || !probs) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (scores[i] > scores[best]) best = i;
        return best;
    }
    double u = rand_uniform01(p->seed, step), cum = 0, total = 0;
    for (int i = 0; i < V; i++)
        total += probs[i];
    u *= total;
    int last = 0;
    for (int i = 0; i < V; i++) {
        if (probs[i] <= 0) continue;
        last = i;
        cum += probs[i];
        if (cum > u) return i;
    }
    return last;
}

/* ---- generation_config.json ------------------------------------------------------------- */

/* eos_token_id: a number or a list of numbers (null / absent: none). */
static ft_status read_eos(const cJSON *j, const char *where, gen_defaults *g, ft_error *err) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "eos_token_id");
    if (!e || cJSON_IsNull(e)) return FT_OK;
    g->n_eos = 0;
    if (cJSON_IsNumber(e)) {
        g->eos[g->n_eos++] = (int32_t)e->valuedouble;
        return FT_OK;
    }
    const cJSON *x;
    if (cJSON_IsArray(e)) {
        cJSON_ArrayForEach(x, e) {
            if (!cJSON_IsNumber(x)) break;
            if (g->n_eos < GEN_MAX_EOS) g->eos[g->n_eos++] = (int32_t)x->valuedouble;
        }
        if (!x) return FT_OK;
    }
    return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                        "field \"eos_token_id\" must be a token id or a list of them");
}

static ft_status read_fields(const cJSON *j, const char *where, gen_defaults *g, ft_error *err) {
    sampler_params *p = &g->sp;
    long top_k = p->top_k, max_new = g->max_new_tokens;
    ft_status st;
    if ((st = json_get_bool(j, "do_sample", 0, p->do_sample, &p->do_sample, where, err)) ||
        (st = json_get_double(j, "temperature", 0, p->temperature, &p->temperature, where, err)) ||
        (st = json_get_int(j, "top_k", 0, top_k, &top_k, where, err)) ||
        (st = json_get_double(j, "top_p", 0, p->top_p, &p->top_p, where, err)) ||
        (st = json_get_double(j, "min_p", 0, p->min_p, &p->min_p, where, err)) ||
        (st = json_get_double(j, "repetition_penalty", 0, p->repetition_penalty,
                              &p->repetition_penalty, where, err)) ||
        (st = json_get_int(j, "max_new_tokens", 0, max_new, &max_new, where, err)) ||
        (st = read_eos(j, where, g, err)))
        return st;
    p->top_k = (int)(top_k < 0 ? 0 : top_k > 1 << 30 ? 1 << 30 : top_k);
    g->max_new_tokens = (int)(max_new < 0 ? 0 : max_new > 1 << 30 ? 1 << 30 : max_new);
    return FT_OK;
}

ft_status gen_defaults_load(const char *dir, gen_defaults *g, ft_error *err) {
    memset(g, 0, sizeof *g);
    sampler_defaults(&g->sp);
    char path[4200];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    int have_gc = access(path, R_OK) == 0;
    cJSON *gc = NULL, *cfg = NULL;
    ft_status st = FT_OK;
    if (have_gc && (st = json_load_file(path, &gc, err))) return st;
    if (gc) {
        snprintf(g->source, sizeof g->source, "generation_config.json");
        st = read_fields(gc, path, g, err);
    }
    /* without generation_config.json transformers makes one from config.json's keys; with one
     * that names no eos_token_id, config.json's still ends generation here */
    if (!st && (!gc || !g->n_eos)) {
        char cpath[4200];
        snprintf(cpath, sizeof cpath, "%s/config.json", dir);
        if (!(st = json_load_file(cpath, &cfg, err))) {
            if (!gc) snprintf(g->source, sizeof g->source, "config.json");
            st = gc ? read_eos(cfg, cpath, g, err) : read_fields(cfg, cpath, g, err);
        }
    }
    cJSON_Delete(gc);
    cJSON_Delete(cfg);
    if (st) return st;
    if (!g->sp.do_sample) return FT_OK; /* the sampling fields only count when sampling */
    if (!(g->sp.temperature > 0) || !(g->sp.top_p >= 0 && g->sp.top_p <= 1) || g->sp.min_p > 1 ||
        !(g->sp.repetition_penalty > 0))
        return ft_error_set(err, FT_ERR_INPUT, g->source, "fix the file, or override it by option",
                            "out of range: temperature %g (> 0), top_p %g ([0, 1]), min_p %g "
                            "(<= 1), repetition_penalty %g (> 0)",
                            g->sp.temperature, g->sp.top_p, g->sp.min_p, g->sp.repetition_penalty);
    return FT_OK;
}
