/*
 * optim.c: AdamW, clipping and schedules, written to give the same numbers as PyTorch and
 * transformers (see optim.h). The order of operations follows torch.optim.AdamW's
 * single-tensor implementation so that fp32 rounding matches closely:
 *   p *= 1 - lr*wd;  m += (1-b1)(g - m);  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 */
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int adamw_init(adamw *o, size_t n, double beta1, double beta2, double eps, double weight_decay) {
    memset(o, 0, sizeof *o);
    o->m = calloc(n ? n : 1, sizeof(float));
    o->v = calloc(n ? n : 1, sizeof(float));
    o->n = n, o->beta1 = beta1, o->beta2 = beta2, o->eps = eps, o->weight_decay = weight_decay;
    return o->m && o->v ? 0 : -1;
}

void adamw_free(adamw *o) {
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

void adamw_step(adamw *o, float *p, const float *g, double lr) {
    o->t++;
    const float decay = (float)(1.0 - lr * o->weight_decay);
    const float b1 = (float)(1.0 - o->beta1), b2 = (float)o->beta2, nb2 = (float)(1.0 - o->beta2);
    const double bc1 = 1.0 - pow(o->beta1, (double)o->t), bc2 = 1.0 - pow(o->beta2, (double)o->t);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2), eps = (float)o->eps;
    float *m = o->m, *v = o->v;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < o->n; i++) {
        if (o->weight_decay != 0) p[i] *= decay;
        m[i] += b1 * (g[i] - m[i]);
        v[i] = v[i] * b2 + nb2 * (g[i] * g[i]);
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] -= step_size * (m[i] / denom);
    }
}

double clip_grad_norm(float *g, size_t n, double max_norm) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    double norm = sqrt(s);
    if (max_norm > 0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            float c = (float)coef;
            for (size_t i = 0; i < n; i++) g[i] *= c;
        }
    }
    return norm;
}

int schedule_known(const char *s) {
    return !strcmp(s, "constant") || !strcmp(s, "constant_with_warmup") || !strcmp(s, "linear") ||
           !strcmp(s, "cosine");
}

/* transformers.optimization: get_constant_schedule(_with_warmup), get_linear_schedule_with_warmup,
 * get_cosine_schedule_with_warmup (num_cycles 0.5). */
double schedule_factor(const char *s, long step, long warmup, long total) {
    if (!strcmp(s, "constant")) return 1.0;
    if (step < warmup) return (double)step / (double)(warmup > 1 ? warmup : 1);
    if (!strcmp(s, "constant_with_warmup")) return 1.0;
    long rest = total - warmup;
    if (rest < 1) rest = 1;
    if (!strcmp(s, "linear")) {
        double f = (double)(total - step) / (double)rest;
        return f > 0 ? f : 0;
    }
    double progress = (double)(step - warmup) / (double)rest;
    double f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
    return f > 0 ? f : 0;
}
