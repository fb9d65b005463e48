/*
 * shard.c: --shard-base, the frozen weights cut across the ranks of a data-parallel run
 * (model.h: model_shard_*; docs/distributed.md, "Sharded base weights").
 *
 * A unit is one layer's linear weights (every piece of its qtensors: the values or packed codes,
 * absmax, the double-quantization state), or the LM head. Its pieces are laid end to end, each
 * at a 64-byte boundary, into the unit's packed form; rank j keeps the bytes
 * [dist_slice_begin(P, j), dist_slice_begin(P, j + 1)) of it (whole 64-byte units; when N does
 * not divide their number the slices differ by one unit). No rank computes on its slice, so
 * where the cuts fall (inside a quantization block, between a block's codes and its absmax)
 * does not matter: only the gathered whole is used. Before a unit runs, the ranks'
 * slices are all-gathered into one of two buffers and the unit's qtensors pointed into it: the
 * bytes are those the unsharded model holds, so every matmul gives the same bits. While one
 * buffer is used the next unit is gathered into the other (MPI_Iallgatherv, driven by
 * dist_progress between the layer's matmuls).
 *
 * Every rank must ask for the same units in the same order (the gathers are collectives): the
 * forward asks for layers 0 .. L-1 then the head, the backward for L-1 .. 0, and a rank with no
 * micro-batch left in a step walks the same sequence without computing (model_shard_walk).
 * What is prefetched after each unit follows from that sequence alone, so it is the same on
 * every rank.
 */
#include "dist/dist.h"
#include "io/safetensors.h"
#include "model/model_internal.h"
#include "ops/ops.h"
#include "ops/quant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { P_DATA, P_ABSMAX, P_ABSMAX_Q, P_NESTED_ABSMAX, P_NESTED_CODE, P_COUNT };
#define NONE ((size_t)-1)

typedef struct shard_unit {
    qtensor *t[LIN_COUNT]; /* the unit's tensors (the head: one) */
    int nt;
    size_t off[LIN_COUNT][P_COUNT]; /* each piece's offset in the packed form (NONE: absent) */
    size_t bytes;                   /* the packed form, a multiple of DIST_UNIT */
    uint8_t *mine;                  /* this rank's slice of it */
} shard_unit;

struct model_shard {
    int n; /* units: L layers and the head's K chunks */
    int K, R;
    shard_unit *u;
    qtensor *head; /* the head's chunks of R rows, each a unit (data: in a gather buffer) */
    uint8_t *buf[2];
    size_t buf_bytes;
    int held[2];   /* the unit in each buffer (-1: none) */
    int handle[2]; /* its all-gather in flight (-1: complete) */
    size_t resident;
    size_t read; /* bytes of the checkpoint this rank read while loading (FTUNE_DEBUG_READ) */
    double wait_s, gathered;
    long gathers;
};

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* The bytes of each piece of t as stored (0: absent). */
static void piece_sizes(const qtensor *t, size_t len[P_COUNT]) {
    size_t n = (size_t)t->rows * (size_t)t->cols;
    memset(len, 0, sizeof(size_t) * P_COUNT);
    switch (t->fmt) {
    case QF_F32:
        len[P_DATA] = n * 4;
        break;
    case QF_BF16:
    case QF_F16:
        len[P_DATA] = n * 2;
        break;
    case QF_Q8_0:
        len[P_DATA] = (size_t)t->rows * ((size_t)t->cols / 32) * 34;
        break;
    case QF_NF4:
    case QF_FP4: {
        len[P_DATA] = quant4_packed_bytes(n);
        size_t nb = quant4_blocks(n, t->blocksize);
        if (t->absmax) len[P_ABSMAX] = nb * 4;
        if (t->absmax_q) {
            len[P_ABSMAX_Q] = nb;
            len[P_NESTED_ABSMAX] =
                quant4_blocks(nb, t->nested_blocksize > 0 ? t->nested_blocksize : QUANT8_BLOCK) * 4;
        }
        if (t->nested_code) len[P_NESTED_CODE] = 256 * 4;
        break;
    }
    default:
        break;
    }
}

static const void *piece_ptr(const qtensor *t, int p) {
    switch (p) {
    case P_DATA:
        return t->data;
    case P_ABSMAX:
        return t->absmax;
    case P_ABSMAX_Q:
        return t->absmax_q;
    case P_NESTED_ABSMAX:
        return t->nested_absmax;
    default:
        return t->nested_code;
    }
}

/* Lay out the unit's pieces; returns the packed size (a multiple of DIST_UNIT). */
static size_t layout(qtensor *const *t, int nt, size_t off[][P_COUNT]) {
    size_t at = 0;
    for (int i = 0; i < nt; i++) {
        size_t len[P_COUNT];
        piece_sizes(t[i], len);
        for (int p = 0; p < P_COUNT; p++) {
            off[i][p] = len[p] ? at : NONE;
            at = align64(at + len[p]);
        }
    }
    return at ? at : DIST_UNIT;
}

/* The unit's tensors: layer l's linear weights, or the head's chunk l - L. */
static int unit_tensors(model *m, int l, qtensor **t) {
    if (l >= m->cfg.L) {
        t[0] = &m->shard->head[l - m->cfg.L];
        return 1;
    }
    int nt = 0;
    for (int k = 0; k < LIN_COUNT; k++)
        if (m->blocks[l].lin[k].out) t[nt++] = &m->blocks[l].lin[k].W;
    return nt;
}

/* Pages of the mapped checkpoint a borrowed piece came from go back to the page cache. */
static void release_mapped(const void *p, size_t len) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p & ~(page - 1), hi = ((uintptr_t)p + len + page - 1) & ~(page - 1);
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

ft_status model_shard_begin(model *m, ft_error *err) {
    model_shard *s = calloc(1, sizeof *s);
    if (s) {
        s->R = model_head_chunk_rows(&m->cfg, &m->quant);
        s->K = model_head_chunks(&m->cfg, &m->quant);
        s->n = m->cfg.L + s->K;
        s->u = calloc((size_t)s->n, sizeof *s->u);
        s->head = calloc((size_t)s->K, sizeof *s->head);
    }
    if (!s || !s->u || !s->head) {
        if (s) free(s->u), free(s->head);
        free(s);
        return ft_error_set(err, FT_ERR_RUNTIME, "--shard-base", NULL, "out of memory");
    }
    s->held[0] = s->held[1] = -1, s->handle[0] = s->handle[1] = -1;
    m->shard = s;
    return FT_OK;
}

/* This rank's slice of unit l into u->mine; with release, the unit's tensors are freed (owned)
 * or their pages returned (borrowed) as each is copied. */
static ft_status take_slice(model *m, int l, int release, ft_error *err) {
    model_shard *s = m->shard;
    shard_unit *u = &s->u[l];
    u->nt = unit_tensors(m, l, u->t);
    u->bytes = layout(u->t, u->nt, u->off);
    size_t a = dist_slice_begin(u->bytes, dist_rank()),
           b = dist_slice_begin(u->bytes, dist_rank() + 1);
    u->mine = malloc(b > a ? b - a : 1);
    if (!u->mine)
        return ft_error_set(err, FT_ERR_RUNTIME, l == m->cfg.L ? "lm_head" : "--shard-base", NULL,
                            "out of memory for this rank's %.1f MB of layer %d",
                            (b - a) / 1048576.0, l);
    /* copy the part of each piece that falls into [a, b) */
    for (int i = 0; i < u->nt; i++) {
        qtensor *t = u->t[i];
        size_t len[P_COUNT];
        piece_sizes(t, len);
        for (int p = 0; p < P_COUNT; p++) {
            if (u->off[i][p] == NONE) continue;
            size_t p0 = u->off[i][p], p1 = p0 + len[p];
            size_t c0 = p0 > a ? p0 : a, c1 = p1 < b ? p1 : b;
            /* a piece borrowed from the checkpoint's mapping (a bitsandbytes checkpoint's codes
             * and absmax, weights stored as the file holds them): only the slice is read, with
             * pread; one in memory (converted or quantized while loading: st_pread finds it in
             * no file) is copied */
            const uint8_t *src = (const uint8_t *)piece_ptr(t, p) + (c0 - p0);
            if (c1 > c0) {
                if (m->src && !st_pread(m->src, src, c1 - c0, u->mine + (c0 - a)))
                    s->read += c1 - c0;
                else
                    memcpy(u->mine + (c0 - a), src, c1 - c0);
            }
            /* borrowed bytes (the checkpoint's mapping) go back; owned ones are freed below, and
             * the static nested code is left alone */
            if (release && !t->owned && p != P_NESTED_CODE) release_mapped(piece_ptr(t, p), len[p]);
        }
        free(t->owned);
        t->owned = NULL;
        t->data = NULL, t->absmax = NULL, t->absmax_q = NULL, t->nested_absmax = NULL,
        t->nested_code = NULL;
    }
    if (u->bytes > s->buf_bytes) s->buf_bytes = u->bytes;
    s->resident += b - a;
    return FT_OK;
}

ft_status model_shard_unit(model *m, int l, ft_error *err) { return take_slice(m, l, 1, err); }

ft_status model_shard_head(model *m, ft_error *err) {
    model_shard *s = m->shard;
    qtensor *h = &m->lm_head;
    size_t len[P_COUNT];
    piece_sizes(h, len);
    /* the chunks: rows [k R, k R + width) of the head, each a qtensor of its own over the
     * head's bytes (formats with whole rows in turn: model_head_chunk_rows) */
    size_t row = s->K > 1 ? len[P_DATA] / (size_t)h->rows : 0;
    for (int k = 0; k < s->K; k++) {
        qtensor *v = &s->head[k];
        *v = *h;
        v->owned = NULL;
        if (s->K > 1) {
            v->rows = h->rows - k * s->R < s->R ? h->rows - k * s->R : s->R;
            v->data = (const uint8_t *)h->data + (size_t)k * s->R * row;
        }
        ft_status st = take_slice(m, m->cfg.L + k, 0, err);
        if (st) return st;
    }
    /* then the whole head goes: freed, or its pages back to the page cache */
    if (!h->owned)
        for (int p = 0; p < P_NESTED_CODE; p++)
            if (len[p]) release_mapped(piece_ptr(h, p), len[p]);
    free(h->owned);
    h->owned = NULL;
    h->data = NULL, h->absmax = NULL, h->absmax_q = NULL, h->nested_absmax = NULL,
    h->nested_code = NULL;
    return FT_OK;
}

ft_status model_shard_end(model *m, ft_error *err) {
    model_shard *s = m->shard;
    for (int i = 0; i < 2; i++) {
        s->buf[i] = aligned_alloc(64, s->buf_bytes);
        if (!s->buf[i])
            return ft_error_set(err, FT_ERR_RUNTIME, "--shard-base", NULL,
                                "out of memory for the %.1f MB gather buffers",
                                2 * s->buf_bytes / 1048576.0);
        memset(s->buf[i], 0, s->buf_bytes); /* resident from the start, as the plan counts it */
    }
    s->resident += 2 * s->buf_bytes;
    return FT_OK;
}

size_t model_shard_resident(const model *m) { return m->shard ? m->shard->resident : 0; }

void model_shard_count_read(model *m, size_t bytes) {
    if (m->shard) m->shard->read += bytes;
}

void model_shard_report_read(const model *m) {
    const char *e = getenv("FTUNE_DEBUG_READ");
    if (m->shard && e && *e && strcmp(e, "0"))
        fprintf(stderr, "ftune: rank %d read %zu bytes of the checkpoint while loading\n",
                dist_rank(), m->shard->read);
}

void model_shard_free(model *m) {
    model_shard *s = m->shard;
    if (!s) return;
    model_shard_drain(m);
    for (int l = 0; l < s->n; l++) {
        free(s->u[l].mine);
        for (int i = 0; i < s->u[l].nt; i++) /* nothing of them is owned; qtensor_free clears */
            s->u[l].t[i]->data = NULL;
    }
    free(s->u);
    free(s->head);
    free(s->buf[0]);
    free(s->buf[1]);
    free(s);
    m->shard = NULL;
}

static void finish(model_shard *s, int b) {
    if (s->handle[b] >= 0) dist_gather_wait(s->handle[b], &s->wait_s);
    s->handle[b] = -1;
}

static void start(model_shard *s, int b, int l) {
    finish(s, b);
    s->held[b] = l;
    s->handle[b] = dist_gather_start(s->buf[b], s->u[l].bytes, s->u[l].mine);
    s->gathered += (double)s->u[l].bytes, s->gathers++;
}

void model_shard_drain(model *m) {
    if (!m->shard) return;
    finish(m->shard, 0);
    finish(m->shard, 1);
}

void model_shard_use(const model *mc, int l, int next) {
    model_shard *s = mc->shard;
    if (!s) return;
    int b = s->held[0] == l ? 0 : s->held[1] == l ? 1 : -1;
    if (b < 0) { /* not prefetched (the first unit of the run): gather it now */
        finish(s, 1);
        start(s, 0, l);
        finish(s, 0);
        b = 0;
    } else {
        finish(s, b);
    }
    shard_unit *u = &s->u[l];
    for (int i = 0; i < u->nt; i++) {
        qtensor *t = u->t[i];
        const size_t *o = u->off[i];
        uint8_t *base = s->buf[b];
        t->data = o[P_DATA] != NONE ? base + o[P_DATA] : NULL;
        t->absmax = o[P_ABSMAX] != NONE ? (const void *)(base + o[P_ABSMAX]) : NULL;
        t->absmax_q = o[P_ABSMAX_Q] != NONE ? base + o[P_ABSMAX_Q] : NULL;
        t->nested_absmax =
            o[P_NESTED_ABSMAX] != NONE ? (const void *)(base + o[P_NESTED_ABSMAX]) : NULL;
        t->nested_code = o[P_NESTED_CODE] != NONE ? (const void *)(base + o[P_NESTED_CODE]) : NULL;
    }
    if (next >= 0 && next != l && s->held[1 - b] != next) start(s, 1 - b, next);
}

const qtensor *model_shard_head_use(const model *m, int k, int next, int train) {
    const int L = m->cfg.L;
    model_shard_use(m, L + k, next >= 0 ? L + next : train ? L - 1 : 0);
    return m->shard ? &m->shard->head[k] : NULL;
}

void model_shard_walk(model *m, int train) {
    if (!m->shard) return;
    const int L = m->cfg.L, K = m->shard->K;
    for (int l = 0; l < L; l++)
        model_shard_use(m, l, l + 1);
    /* the loss's order (lmhead_xent_rows): chunks 0 .. K-1, and K-1 .. 0 again with a gradient */
    for (int k = 0; k < K; k++)
        model_shard_head_use(m, k, k + 1 < K ? k + 1 : train && K > 1 ? K - 2 : -1, train);
    if (!train) return;
    for (int k = K - 1; k >= 0; k--)
        model_shard_head_use(m, k, k > 0 ? k - 1 : -1, train);
    for (int l = L - 1; l >= 0; l--)
        model_shard_use(m, l, l > 0 ? l - 1 : 0);
}

void model_shard_stats(const model *m, double *wait_s, double *gathered_bytes, long *gathers) {
    const model_shard *s = m->shard;
    *wait_s = s ? s->wait_s : 0, *gathered_bytes = s ? s->gathered : 0,
    *gathers = s ? s->gathers : 0;
}

size_t model_fp32_bytes(const model_config *c) { return model_fp32_floats(c) * sizeof(float); }

size_t model_shard_unit_bytes(const model_config *c, const model_quant *q, int l) {
    /* the unit's tensors as the loader makes them, without data: piece_sizes reads only the
     * format, shape and which absmax state exists */
    qtensor tt[LIN_COUNT], *t[LIN_COUNT];
    int nt = 0;
    static const float present;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in = c->C, out = c->V, col, bias;
        qformat f = q->lm_head;
        if (l >= c->L) { /* the head's chunk l - L */
            int R = model_head_chunk_rows(c, q), r0 = (l - c->L) * R;
            out = c->V - r0 < R ? c->V - r0 : R;
        }
        if (l < c->L) {
            model_lin_layout(c, k, &in, &out, &col, &bias);
            f = q->linear;
        } else if (k > 0) {
            break; /* the head: one tensor */
        }
        if (!out) continue;
        qtensor *x = &tt[nt];
        memset(x, 0, sizeof *x);
        x->fmt = f, x->rows = out, x->cols = in, x->blocksize = q->blocksize;
        x->nested_blocksize = QUANT8_BLOCK;
        if (f == QF_NF4 || f == QF_FP4) {
            if (q->double_quant)
                x->absmax_q = (const uint8_t *)&present, x->nested_code = &present;
            else
                x->absmax = &present;
        }
        t[nt++] = x;
    }
    size_t off[LIN_COUNT][P_COUNT];
    return layout(t, nt, off);
}

int model_head_chunk_rows(const model_config *c, const model_quant *q) {
    qtensor h = {.fmt = q->lm_head, .rows = 1, .cols = c->C, .blocksize = 1};
    if (!xent_rows_splittable(&h)) return c->V;
    size_t len[P_COUNT];
    piece_sizes(&h, len); /* one row */
    size_t rows = model_shard_unit_bytes(c, q, 0) / len[P_DATA] / 64 * 64;
    if (rows < 64) rows = 64;
    return rows < (size_t)c->V ? (int)rows : c->V;
}

int model_head_chunks(const model_config *c, const model_quant *q) {
    int R = model_head_chunk_rows(c, q);
    return (c->V + R - 1) / R;
}
