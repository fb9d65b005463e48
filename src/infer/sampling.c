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
#include "io/gguf.h"
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

typedef struct scored {
    float s;
    int i;
} scored;

static int cmp_scored_asc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return x->i - y->i;
}

/* Keep the scores >= the k-th largest (torch.topk's last value): a min-heap of the k largest
 * seen so far, O(V log k), in heap (k floats). */
static void top_k(float *s, int V, int k, float *heap) {
    if (k >= V) return;
    int m = 0;
    for (int i = 0; i < V; i++) {
        float x = s[i];
        if (m < k) { /* push, sift up */
            int c = m++;
            while (c > 0 && heap[(c - 1) / 2] > x) {
                heap[c] = heap[(c - 1) / 2];
                c = (c - 1) / 2;
            }
            heap[c] = x;
        } else if (x > heap[0]) { /* replace the root, sift down */
            int c = 0;
            for (;;) {
                int l = 2 * c + 1, r = l + 1, sm = -1;
                float best = x;
                if (l < k && heap[l] < best) sm = l, best = heap[l];
                if (r < k && heap[r] < best) sm = r, best = heap[r];
                if (sm < 0) break;
                heap[c] = heap[sm];
                c = sm;
            }
            heap[c] = x;
        }
    }
    float thr = heap[0];
    for (int i = 0; i < V; i++)
        if (s[i] < thr) s[i] = -INFINITY;
}

static void top_p(float *s, int V, double p, scored *a) {
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

size_t sampling_scratch_bytes(int V) { return (size_t)V * (sizeof(scored) + 1) + 16; }

void sampling_process(const sampler_params *p, float *scores, int V, const int32_t *hist, size_t n,
                      void *scratch) {
    scored *sc = scratch; /* V entries, then V bytes for the repetition penalty's marks */
    uint8_t *seen = (uint8_t *)(sc + V);
    if (p->repetition_penalty != 1.0)
        repetition_penalty(scores, V, hist, n, (float)p->repetition_penalty, seen);
    if (!p->do_sample) return;
    if (p->temperature != 1.0) {
        float t = (float)p->temperature;
        for (int i = 0; i < V; i++)
            scores[i] /= t;
    }
    if (p->top_k > 0) top_k(scores, V, p->top_k, (float *)(void *)sc);
    if (p->top_p < 1.0) top_p(scores, V, p->top_p, sc);
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

/* A GGUF file: no generation settings, transformers' defaults (greedy), and the end of
 * generation from tokenizer.ggml.eos_token_id (llama.cpp's EOS, as transformers' GGUF loader
 * reads it). */
static ft_status gguf_defaults_load(const char *path, gen_defaults *g, ft_error *err) {
    gguf_file *f = NULL;
    ft_status st = gguf_open(path, &f, err);
    if (st) return st;
    uint32_t eos;
    snprintf(g->source, sizeof g->source, "GGUF metadata");
    if (gguf_find_kv(f, "tokenizer.ggml.eos_token_id") &&
        !(st = gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &eos, err)))
        g->eos[g->n_eos++] = (int32_t)eos;
    gguf_close(f);
    return st;
}

ft_status gen_defaults_load(const char *dir, gen_defaults *g, ft_error *err) {
    memset(g, 0, sizeof *g);
    sampler_defaults(&g->sp);
    if (gguf_is_file(dir)) return gguf_defaults_load(dir, g, err);
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
