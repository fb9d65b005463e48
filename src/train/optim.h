/*
 * optim.h: AdamW (torch.optim.AdamW's arithmetic), global-norm clipping
 * (torch.nn.utils.clip_grad_norm_), and learning-rate schedules (transformers' get_scheduler).
 */
#ifndef FT_TRAIN_OPTIM_H
#define FT_TRAIN_OPTIM_H

#include <stddef.h>

typedef struct adamw {
    float *m, *v;
    size_t n;
    double beta1, beta2, eps, weight_decay;
    long t; /* steps taken */
} adamw;

int adamw_init(adamw *o, size_t n, double beta1, double beta2, double eps, double weight_decay);
void adamw_free(adamw *o);
/* One step at learning rate lr: decoupled weight decay, then the Adam update. */
void adamw_step(adamw *o, float *params, const float *grads, double lr);

/* L2 norm of all gradients; if max_norm > 0, scales them by min(1, max_norm / (norm + 1e-6)).
 * Returns the norm before clipping. */
double clip_grad_norm(float *grads, size_t n, double max_norm);

/* Is name a schedule we know? */
int schedule_known(const char *name);
/* Multiplier of the base learning rate at optimizer step `step` (0-based) of `total`. */
double schedule_factor(const char *name, long step, long warmup, long total);

#endif
