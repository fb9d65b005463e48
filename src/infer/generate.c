/*
 * generate.c: the generation loop and its streamed, UTF-8-safe text (generate.h).
 *
 * Text state: `all` holds the last few prompt ids (so that the first piece is decoded in
 * context: a SentencePiece tokenizer drops the leading space of a sequence's first token, not of
 * a continuation) followed by the generated ids; [prefix, read) are the ids of the last piece
 * emitted. `out` is the text decoded so far and `emitted` how much of it on_text has received;
 * the rest is held while it could be the start of a stop string.
 */
#include "infer/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROMPT_CONTEXT 4 /* prompt ids decoded before the first generated one */

const char *gen_stop_name(gen_stop s) {
    static const char *const names[] = {"eos", "length", "context", "stop_string", "interrupted"};
    return names[s];
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct text_state {
    const gen_options *o;
    int32_t *all;
    int n_all, prefix, read;
    char *out;
    size_t len, cap, emitted;
    int oom, stopped;
} text_state;

static int grow(text_state *t, size_t need) {
    if (need + 1 <= t->cap) return 0;
    size_t cap = t->cap ? t->cap : 256;
    while (cap < need + 1)
        cap *= 2;
    char *p = realloc(t->out, cap);
    if (!p) return t->oom = 1;
    t->out = p, t->cap = cap;
    return 0;
}

/* Does s (n bytes) end inside a character: an incomplete UTF-8 sequence, or U+FFFD (what the
 * decoder makes of one)? */
static int ends_split(const char *s, size_t n) {
    if (n >= 3 && (unsigned char)s[n - 3] == 0xEF && (unsigned char)s[n - 2] == 0xBF &&
        (unsigned char)s[n - 1] == 0xBD)
        return 1;
    size_t i = n, k = 0;
    while (i > 0 && k < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--, k++;
    if (i == 0) return k > 0;
    unsigned char c = (unsigned char)s[i - 1];
    size_t want = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    return want > k;
}

static char *decode(const tokenizer *tok, const int32_t *ids, int n, size_t *len) {
    char *s = NULL;
    ft_error e;
    if (tok_decode(tok, ids, (size_t)n, 1, &s, len, &e) != FT_OK) {
        *len = 0;
        return NULL;
    }
    return s;
}

/* The longest suffix of out that is a proper prefix of a stop string. */
static size_t stop_hold(const text_state *t) {
    size_t best = 0;
    for (int i = 0; i < t->o->n_stops; i++) {
        const char *s = t->o->stops[i];
        size_t sl = strlen(s);
        if (!sl) continue;
        for (size_t k = sl - 1 < t->len ? sl - 1 : t->len; k > best; k--)
            if (!memcmp(t->out + t->len - k, s, k)) {
                best = k;
                break;
            }
    }
    return best;
}

/* Hand on_text what may go now: all when final, else all but what could start a stop string
 * (never cutting a character: the held part starts where a stop string does). A stop string
 * in the text ends it there. */
static void emit(text_state *t, int final) {
    /* no stop string starts before emitted: a possible start is always held */
    size_t from = t->emitted, cut = (size_t)-1;
    for (int i = 0; i < t->o->n_stops; i++) {
        const char *s = t->o->stops[i];
        size_t sl = strlen(s);
        if (!sl) continue;
        for (size_t at = from; at + sl <= t->len && at < cut; at++)
            if (!memcmp(t->out + at, s, sl)) {
                cut = at;
                break;
            }
    }
    if (cut != (size_t)-1) {
        t->len = cut < t->emitted ? t->emitted : cut;
        t->out[t->len] = 0;
        t->stopped = final = 1;
    }
    size_t upto = final ? t->len : t->len - stop_hold(t);
    if (upto > t->emitted && t->o->on_text)
        t->o->on_text(t->o->user, t->out + t->emitted, upto - t->emitted);
    if (upto > t->emitted) t->emitted = upto;
}

/* The text of ids [prefix, n_all) beyond that of [prefix, read): appended to out when it ends
 * in a whole character (or always, when final). */
static void advance(text_state *t, int final) {
    if (!t->o->tok) return;
    size_t la = 0, lb = 0;
    char *a = decode(t->o->tok, t->all + t->prefix, t->read - t->prefix, &la);
    char *b = decode(t->o->tok, t->all + t->prefix, t->n_all - t->prefix, &lb);
    if (b && lb > la && (final || !ends_split(b, lb)) && !grow(t, t->len + lb - la)) {
        memcpy(t->out + t->len, b + la, lb - la);
        t->len += lb - la;
        t->out[t->len] = 0;
        t->prefix = t->read, t->read = t->n_all;
    }
    free(a);
    free(b);
    emit(t, final);
}

static int is_eos(const gen_options *o, int32_t id) {
    for (int i = 0; i < o->n_eos; i++)
        if (o->eos[i] == id) return 1;
    return 0;
}

void gen_result_free(gen_result *r) {
    free(r->ids);
    free(r->text);
    memset(r, 0, sizeof *r);
}

ft_status generate_run(infer_model *im, const int32_t *prompt, int n, const gen_options *o,
                       gen_result *r, ft_error *err) {
    memset(r, 0, sizeof *r);
    const int V = im->m->cfg.V, maxT = im->kv.maxT, max_new = o->max_new_tokens;
    if (n <= 0)
        return ft_error_set(err, FT_ERR_INPUT, "prompt", "give a prompt of at least one token",
                            "the prompt is empty");
    if (n > maxT)
        return ft_error_set(err, FT_ERR_INPUT, "prompt",
                            "shorten the prompt, or raise --ctx (up to the model's "
                            "max_position_embeddings)",
                            "the prompt has %d tokens; the context holds %d", n, maxT);
    /* the cached positions that agree with the prompt are kept; at least the last prompt token
     * runs again, for its logits */
    int p = 0;
    while (p < im->kv.len && p < n && im->tokens[p] == prompt[p])
        p++;
    if (p >= n) p = n - 1;
    infer_truncate(im, p);
    r->prompt_tokens = n, r->reused_tokens = p;
    size_t cap_hist = (size_t)n + (size_t)(max_new > 0 ? max_new : 0);
    float *logits = malloc(sizeof(float) * (size_t)V * 3);
    void *seen = malloc(sampling_scratch_bytes(V));
    int32_t *hist = malloc(sizeof(int32_t) * cap_hist);
    text_state t = {.o = o};
    int tail = n < PROMPT_CONTEXT ? n : PROMPT_CONTEXT;
    t.all = malloc(sizeof(int32_t) * ((size_t)tail + (size_t)(max_new > 0 ? max_new : 0)));
    r->ids = malloc(sizeof(int32_t) * (size_t)(max_new > 0 ? max_new : 1));
    if (!logits || !seen || !hist || !t.all || !r->ids || grow(&t, 0)) {
        free(logits), free(seen), free(hist), free(t.all), free(t.out);
        gen_result_free(r);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    }
    float *scores = logits + V, *probs = logits + 2 * (size_t)V;
    memcpy(hist, prompt, sizeof(int32_t) * (size_t)n);
    memcpy(t.all, prompt + n - tail, sizeof(int32_t) * (size_t)tail);
    t.n_all = t.read = tail;
    size_t nh = (size_t)n;
    double t0 = now_s();
    ft_status st = infer_forward(im, prompt + p, n - p, logits, 0, err);
    double t1 = now_s();
    r->prefill_s = t1 - t0;
    r->stop = GEN_LENGTH;
    for (int step = 0; !st && max_new > 0; step++) {
        memcpy(scores, logits, sizeof(float) * (size_t)V);
        sampling_process(&o->sp, scores, V, hist, nh, seen);
        int32_t id = sampling_pick(&o->sp, scores, V, probs, (uint64_t)step);
        if (o->on_step) o->on_step(o->user, step, logits, probs, id);
        hist[nh++] = id;
        if (is_eos(o, id)) {
            r->stop = GEN_EOS;
            break;
        }
        r->ids[r->n++] = id;
        t.all[t.n_all++] = id;
        advance(&t, 0);
        if (t.stopped) {
            r->stop = GEN_STOP_STRING;
            break;
        }
        if (r->n >= max_new) break;
        if (o->stop && *o->stop) {
            r->stop = GEN_INTERRUPTED;
            break;
        }
        if (im->kv.len >= maxT) {
            r->stop = GEN_CONTEXT;
            break;
        }
        st = infer_forward(im, &id, 1, logits, 0, err);
    }
    if (!t.stopped) advance(&t, 1);
    if (t.stopped && r->stop != GEN_STOP_STRING) r->stop = GEN_STOP_STRING;
    r->decode_s = now_s() - t1;
    r->text = t.out, r->len = t.len;
    free(logits);
    free(seen);
    free(hist);
    free(t.all);
    if (!st && t.oom) st = ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    if (st) gen_result_free(r);
    return st;
}
