/*
 * loop.c: one optimizer step and the evaluation loss (see loop.h).
 */
#include "train/loop.h"
#include "base/rand.h"
#include "dist/dist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void epoch_order(int *order, int n, int shuffle, uint64_t seed, long epoch) {
    for (int i = 0; i < n; i++)
        order[i] = i;
    if (!shuffle) return;
    uint64_t s = rand_mix64(seed ^ rand_mix64((uint64_t)epoch + 1));
    for (int i = n - 1; i > 0; i--) {
        s = rand_mix64(s);
        int j = (int)(s % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j], order[j] = t;
    }
}

double train_epoch(const train_loop *l, const train_state *ts) {
    return ts->epoch + (double)ts->mb_in_epoch / l->micro_per_epoch;
}

size_t *train_grad_segments(const lora_set *ls, int L) {
    size_t *seg = calloc((size_t)L + 1, sizeof *seg);
    if (!seg) return NULL;
    size_t at = 0, R = (size_t)ls->R;
    for (int layer = 0; layer < L; layer++) {
        size_t lo = (size_t)-1, hi = 0, size = 0;
        for (int i = 0; i < ls->n; i++) {
            const lora_module *md = &ls->mods[i];
            if (md->layer != layer) continue;
            size_t ea = md->offA + R * (size_t)md->in, eb = md->offB + (size_t)md->out * R;
            if (md->offA < lo) lo = md->offA;
            if (md->offB < lo) lo = md->offB;
            if (ea > hi) hi = ea;
            if (eb > hi) hi = eb;
            size += ea - md->offA + eb - md->offB;
        }
        seg[layer] = at;
        if (!size) continue;
        if (lo != at || hi - lo != size) { /* not laid out layer after layer */
            free(seg);
            return NULL;
        }
        at = hi;
    }
    seg[L] = at;
    if (at != ls->n_params) {
        free(seg);
        return NULL;
    }
    return seg;
}

/* called by model_backward in the rank's last micro-batch: layer l's gradients are final */
static void layer_grads_ready(void *ctx, int layer) {
    train_loop *l = ctx;
    float *g = l->m->lora->grads;
    dist_sum_f32_start(g + l->seg[layer], l->seg[layer + 1] - l->seg[layer]);
}

void train_step(train_loop *l, train_state *ts, step_result *res) {
    const dataset *ds = l->ds;
    long step = ts->step;
    if (ts->mb_in_epoch >= l->micro_per_epoch) {
        ts->epoch++, ts->mb_in_epoch = 0;
        epoch_order(l->order, ds->n, l->shuffle, l->seed, ts->epoch);
    }
    /* this step's micro-batches: up to grad_accum, not past the end of the epoch */
    long n_mb = l->micro_per_epoch - ts->mb_in_epoch;
    if (n_mb > l->grad_accum) n_mb = l->grad_accum;
    long counted = 0, tokens = 0;
    for (long k = 0; k < n_mb; k++) {
        long first = (ts->mb_in_epoch + k) * l->batch_size;
        for (long i = first; i < first + l->batch_size && i < ds->n; i++) {
            counted += example_counted(&ds->ex[l->order[i]]);
            tokens += ds->ex[l->order[i]].n;
        }
    }
    double tstart = now_s(), gw0 = 0, gw1 = 0, gb0 = 0, gb;
    long gn;
    model_shard_stats(l->m, &gw0, &gb0, &gn);
    res->comm_wait_s = res->comm_s = 0;
    lora_set *ls = l->m->lora;
    memset(ls->grads, 0, ls->n_params * sizeof(float));
    double loss_sum = 0;
    float gscale = counted > 0 ? 1.0f / (float)counted : 0.0f;
    /* this rank's share of the micro-batches (all of them in one process) */
    long N = l->nranks > 1 ? l->nranks : 1, r = N > 1 ? l->rank : 0;
    long k0 = n_mb * r / N, k1 = n_mb * (r + 1) / N;
    if (N > 1) memset(l->mb_loss, 0, sizeof(double) * (size_t)n_mb);
    for (long k = k0; k < k1; k++) {
        long first = (ts->mb_in_epoch + k) * l->batch_size;
        int nb = (int)(ds->n - first < l->batch_size ? ds->n - first : l->batch_size);
        batch_fill(l->b, ds, l->order + first, nb);
        uint64_t dseed = rand_mix64(l->seed ^ rand_mix64(((uint64_t)step << 20) + (uint64_t)k));
        double v = model_forward(l->m, l->a, l->b, 1, dseed, NULL, NULL);
        if (N > 1)
            l->mb_loss[k] = v;
        else
            loss_sum += v;
        /* the rank's last micro-batch: each layer's gradient sum starts as soon as its backward
         * is done, and moves while backward goes on below it */
        int overlap = N > 1 && l->seg && k == k1 - 1;
        if (overlap) l->m->grads_ready = layer_grads_ready, l->m->grads_ctx = l;
        model_backward(l->m, l->a, l->b, gscale, dseed);
        l->m->grads_ready = NULL;
    }
    /* a rank without a micro-batch in this step starts the same sums, in the same order */
    if (N > 1 && l->seg && k1 == k0)
        for (int layer = l->m->cfg.L - 1; layer >= 0; layer--)
            layer_grads_ready(l, layer);
    /* --shard-base: every rank takes part in every all-gather, so one with fewer micro-batches
     * than the most any rank has walks the remaining forward and backward passes without
     * computing (shard.c) */
    if (l->m->shard)
        for (long k = k1 - k0; k < (n_mb + N - 1) / N; k++)
            model_shard_walk(l->m, 1);
    if (N > 1) {
        /* the gradients summed in rank order; each loss comes from the one rank that ran its
         * micro-batch (the others add 0), then they are added in micro-batch order as above */
        if (l->seg)
            dist_sum_f32_finish(&res->comm_wait_s, &res->comm_s);
        else {
            double t0 = now_s();
            dist_sum_f32(ls->grads, ls->n_params);
            res->comm_wait_s = res->comm_s = now_s() - t0;
        }
        dist_sum_f64(l->mb_loss, (size_t)n_mb);
        for (long k = 0; k < n_mb; k++)
            loss_sum += l->mb_loss[k];
    }
    ts->mb_in_epoch += n_mb;
    ts->step = step + 1;
    long consumed = ts->mb_in_epoch * l->batch_size;
    ts->example_index = ts->epoch * ds->n + (consumed < ds->n ? consumed : ds->n);
    res->loss = counted > 0 ? loss_sum / counted : 0.0;
    res->grad_norm = clip_grad_norm(ls->grads, ls->n_params, l->max_grad_norm);
    res->lr = l->lr * schedule_factor(l->schedule, step, l->warmup_steps, l->total_steps);
    res->diverged = isnan(res->loss)            ? "loss is nan"
                    : !isfinite(res->loss)      ? "loss is infinite"
                    : isnan(res->grad_norm)     ? "gradient norm is nan"
                    : !isfinite(res->grad_norm) ? "gradient norm is infinite"
                                                : NULL;
    if (!res->diverged) adamw_step(l->opt, ls->params, ls->grads, res->lr);
    res->tokens = tokens, res->counted = counted;
    res->seconds = now_s() - tstart;
    model_shard_stats(l->m, &gw1, &gb, &gn);
    res->gather_wait_s = gw1 - gw0, res->gathered_bytes = gb - gb0;
}

double eval_loss(const model *m, acts *a, batch *b, int B, const dataset *val, long *count) {
    double sum = 0;
    long n = 0;
    int idx[1024];
    for (int first = 0; first < val->n; first += B) {
        int nb = val->n - first < B ? val->n - first : B;
        for (int i = 0; i < nb; i++)
            idx[i] = first + i;
        batch_fill(b, val, idx, nb);
        long c = 0;
        sum += model_forward(m, a, b, 0, 0, NULL, &c);
        n += c;
    }
    *count = n;
    return n ? sum / n : 0.0;
}
