/*
 * bpe.c: the BPE model of tokenizer.json ("model": {"type": "BPE", ...}).
 *
 * Loading builds the vocabulary (a string->id hash and an id->string table), a direct table from
 * single code points to ids, and the merge table: (left id, right id) -> (rank, merged id),
 * where rank is the merge's index in "merges" (for a pair listed twice the later index wins, as
 * in `tokenizers`, whose map is filled in order) and the merged token is left + right with the
 * continuing_subword_prefix cut from the right part. Merges come as "a b" strings or ["a", "b"]
 * pairs.
 *
 * Encoding one word (the text of one pre-tokenized piece):
 *   1. with ignore_merges, a word that is itself in the vocabulary is that one token;
 *   2. each character becomes a symbol: its id (with the prefix on all but the first character
 *      and the suffix on the last, when set); a character missing from the vocabulary becomes
 *      its UTF-8 bytes as <0xXX> tokens when byte_fallback is on and all of them exist, else the
 *      unk token (consecutive ones fused into one with fuse_unk), else it is dropped;
 *   3. merges are applied lowest rank first, leftmost first among equal ranks, with a binary
 *      heap of candidate pairs over a linked list of symbols (stale heap entries are detected by
 *      looking the pair up again), so a long word (Llama 2 has no pre-tokenizer: a whole line
 *      is one word) costs O(n log n).
 * Results for words up to 256 bytes are kept in a per-thread cache (a hash table from the word
 * to its ids, emptied when full), which is what makes repeated words cheap, as in `tokenizers`.
 */
#include "tok/tok_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

typedef struct merge_ent {
    uint64_t key; /* (left << 32 | right) + 1; 0 = empty */
    uint32_t rank;
    int32_t id;
} merge_ent;

struct tok_bpe {
    size_t V;
    char **str;
    uint32_t *slen;
    tok_strmap map;
    int32_t *cp_id; /* code point < 0x10000 -> id of that one-character token, or -1 */
    merge_ent *merges;
    size_t mmask;
    int32_t unk;
    int fuse_unk, byte_fallback, ignore_merges;
    char *prefix, *suffix;
    size_t plen, sflen;
    int32_t byte_id[256];
    uint64_t serial;
};

static atomic_ullong bpe_serial_next = 1;

void bpe_free(tok_bpe *m) {
    if (!m) return;
    for (size_t i = 0; i < m->V; i++) free(m->str[i]);
    free(m->str);
    free(m->slen);
    strmap_free(&m->map);
    free(m->cp_id);
    free(m->merges);
    free(m->prefix);
    free(m->suffix);
    free(m);
}

static inline size_t merge_slot(uint64_t key, size_t mask) {
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 20) & mask;
}

static inline const merge_ent *merge_get(const tok_bpe *m, int32_t a, int32_t b) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t h = merge_slot(key, m->mmask);
    for (;;) {
        const merge_ent *e = &m->merges[h];
        if (e->key == key) return e;
        if (!e->key) return NULL;
        h = (h + 1) & m->mmask;
    }
}

int32_t bpe_token_to_id(const tok_bpe *m, const char *s, size_t n) {
    return strmap_get(&m->map, s, n);
}
const char *bpe_id_to_token(const tok_bpe *m, int32_t id) {
    return (id >= 0 && (size_t)id < m->V) ? m->str[id] : NULL;
}
size_t bpe_vocab_size(const tok_bpe *m) { return m->V; }

static ft_status opt_string(const cJSON *model, const char *key, const char *file, char **out,
                            ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return FT_OK;
    if (!cJSON_IsString(v)) {
        char where[512];
        tok_fmt(where, sizeof where, "%s: model.%s", file, key);
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a string or null");
    }
    if (!v->valuestring[0]) return FT_OK; /* "" behaves as no prefix/suffix */
    *out = strdup(v->valuestring);
    return *out ? FT_OK : ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
}

ft_status bpe_load(const cJSON *model, const char *file, tok_bpe **out, ft_error *err) {
    char where[512];
    *out = NULL;
    tok_bpe *m = calloc(1, sizeof *m);
    if (!m) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    m->serial = atomic_fetch_add(&bpe_serial_next, 1);
    ft_status st = FT_OK;
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0.0)) {
        tok_fmt(where, sizeof where, "%s: model.dropout", file);
        st = ft_error_set(err, FT_ERR_INPUT, where,
                          "set it to null: BPE dropout is random and is only for training",
                          "BPE dropout is not supported");
        goto fail;
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) {
        tok_fmt(where, sizeof where, "%s: model.vocab", file);
        st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an object {token: id}");
        goto fail;
    }
    long maxid = -1, count = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, count++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 2e9) {
            tok_fmt(where, sizeof where, "%s: model.vocab[\"%.100s\"]", file, e->string);
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a non-negative integer id");
            goto fail;
        }
        if (e->valueint > maxid) maxid = e->valueint;
    }
    /* ids index a dense table: a vocabulary's ids are 0..V-1 (a few gaps are tolerated), so an id
     * far beyond the number of entries is a damaged file, not a reason to allocate gigabytes */
    if (maxid >= count + 65536) {
        tok_fmt(where, sizeof where, "%s: model.vocab", file);
        st = ft_error_set(err, FT_ERR_INPUT, where,
                          "the ids of a vocabulary run from 0 to its size - 1",
                          "id %ld is far beyond the %ld entries of the vocabulary", maxid, count);
        goto fail;
    }
    m->V = (size_t)(maxid + 1);
    m->str = calloc(m->V + 1, sizeof *m->str);
    m->slen = calloc(m->V + 1, sizeof *m->slen);
    m->cp_id = malloc(0x10000 * sizeof *m->cp_id);
    if (!m->str || !m->slen || !m->cp_id) goto oom;
    for (size_t i = 0; i < 0x10000; i++) m->cp_id[i] = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int id = e->valueint;
        if (m->str[id]) {
            tok_fmt(where, sizeof where, "%s: model.vocab[\"%.100s\"]", file, e->string);
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "id %d is used twice", id);
            goto fail;
        }
        m->str[id] = strdup(e->string);
        if (!m->str[id]) goto oom;
        m->slen[id] = (uint32_t)strlen(e->string);
    }
    if (strmap_build(&m->map, (const char *const *)m->str, m->slen, m->V)) goto oom;

    if ((st = opt_string(model, "continuing_subword_prefix", file, &m->prefix, err))) goto fail;
    if ((st = opt_string(model, "end_of_word_suffix", file, &m->suffix, err))) goto fail;
    m->plen = m->prefix ? strlen(m->prefix) : 0;
    m->sflen = m->suffix ? strlen(m->suffix) : 0;
    for (size_t id = 0; id < m->V; id++) {
        if (!m->str[id] || !m->slen[id]) continue;
        size_t adv;
        uint32_t cp = utf8_next((const unsigned char *)m->str[id], m->slen[id], &adv);
        if (adv == m->slen[id] && cp < 0x10000 && m->cp_id[cp] < 0) {
            int32_t again = strmap_get(&m->map, m->str[id], m->slen[id]);
            m->cp_id[cp] = again;
        }
    }
    for (int b = 0; b < 256; b++) {
        char nm[8];
        snprintf(nm, sizeof nm, "<0x%02X>", b);
        m->byte_id[b] = strmap_get(&m->map, nm, 6);
    }

    int v;
    const char *w = "model";
    if ((st = json_get_bool(model, "fuse_unk", 0, 0, &v, w, err))) goto fail;
    m->fuse_unk = v;
    if ((st = json_get_bool(model, "byte_fallback", 0, 0, &v, w, err))) goto fail;
    m->byte_fallback = v;
    if ((st = json_get_bool(model, "ignore_merges", 0, 0, &v, w, err))) goto fail;
    m->ignore_merges = v;
    m->unk = -1;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (unk && !cJSON_IsNull(unk)) {
        tok_fmt(where, sizeof where, "%s: model.unk_token", file);
        if (!cJSON_IsString(unk)) {
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a string or null");
            goto fail;
        }
        m->unk = strmap_get(&m->map, unk->valuestring, strlen(unk->valuestring));
        if (m->unk < 0) {
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                              "the unk token \"%s\" is not in model.vocab", unk->valuestring);
            goto fail;
        }
    }

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (merges && !cJSON_IsArray(merges)) {
        tok_fmt(where, sizeof where, "%s: model.merges", file);
        st = ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an array");
        goto fail;
    }
    int nm = merges ? cJSON_GetArraySize(merges) : 0;
    size_t cap = 16;
    while (cap < (size_t)nm * 2 + 2) cap *= 2;
    m->merges = calloc(cap, sizeof *m->merges);
    if (!m->merges) goto oom;
    m->mmask = cap - 1;
    tok_arena tmp = {0};
    int i = 0;
    for (const cJSON *e = merges ? merges->child : NULL; e; e = e->next, i++) {
        const char *a, *b;
        size_t al, bl;
        tok_fmt(where, sizeof where, "%s: model.merges[%d]", file, i);
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                free(tmp.p);
                st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                  "expected \"left right\" with exactly one space, got \"%.100s\"",
                                  s);
                goto fail;
            }
            a = s, al = (size_t)(sp - s), b = sp + 1, bl = strlen(sp + 1);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) {
            a = e->child->valuestring, al = strlen(a);
            b = e->child->next->valuestring, bl = strlen(b);
        } else {
            free(tmp.p);
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                              "expected a string \"left right\" or a pair [\"left\", \"right\"]");
            goto fail;
        }
        int32_t ia = strmap_get(&m->map, a, al), ib = strmap_get(&m->map, b, bl);
        size_t cut = m->plen <= bl ? m->plen : bl;
        tmp.len = 0;
        arena_push(&tmp, a, al);
        arena_push(&tmp, b + cut, bl - cut);
        if (tmp.oom) {
            free(tmp.p);
            goto oom;
        }
        int32_t inew = strmap_get(&m->map, tmp.p ? tmp.p : "", tmp.len);
        if (ia < 0 || ib < 0 || inew < 0) {
            const char *miss = ia < 0 ? a : ib < 0 ? b : "(merged)";
            int ml = ia < 0 ? (int)al : ib < 0 ? (int)bl : 8;
            if (ia >= 0 && ib >= 0) miss = tmp.p, ml = (int)tmp.len;
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                              "the token \"%.*s\" of this merge is not in model.vocab",
                              ml > 100 ? 100 : ml, miss);
            free(tmp.p);
            goto fail;
        }
        uint64_t key = (((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib) + 1;
        size_t h = merge_slot(key, m->mmask);
        while (m->merges[h].key && m->merges[h].key != key) h = (h + 1) & m->mmask;
        m->merges[h] = (merge_ent){key, (uint32_t)i, inew};
    }
    free(tmp.p);
    *out = m;
    return FT_OK;
oom:
    st = ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory while loading the vocabulary");
fail:
    bpe_free(m);
    return st;
}

/* ---- per-thread word cache --------------------------------------------------------------- */
#define CACHE_SLOTS (1u << 16)
#define CACHE_MAX_ENTRIES (CACHE_SLOTS / 2)
#define CACHE_MAX_WORD 256

typedef struct cache_ent {
    uint64_t h; /* 0 = empty */
    uint32_t off, wlen, nids;
} cache_ent;

typedef struct word_cache {
    uint64_t serial;
    cache_ent *slot;
    size_t used;
    tok_arena pool; /* word bytes followed by their ids */
} word_cache;

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static void cache_free(void *p) {
    word_cache *c = p;
    free(c->slot);
    free(c->pool.p);
    free(c);
}
static void cache_key_init(void) { pthread_key_create(&cache_key, cache_free); }

static word_cache *cache_get(const tok_bpe *m) {
    pthread_once(&cache_once, cache_key_init);
    word_cache *c = pthread_getspecific(cache_key);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return NULL;
        c->slot = calloc(CACHE_SLOTS, sizeof *c->slot);
        if (!c->slot) {
            free(c);
            return NULL;
        }
        pthread_setspecific(cache_key, c);
    }
    if (c->serial != m->serial || c->used >= CACHE_MAX_ENTRIES || c->pool.len > (64u << 20)) {
        if (c->used) memset(c->slot, 0, CACHE_SLOTS * sizeof *c->slot);
        c->used = 0;
        c->pool.len = 0;
        c->serial = m->serial;
    }
    return c;
}

/* ---- merging ----------------------------------------------------------------------------- */
typedef struct sym {
    int32_t id;
    int32_t prev, next;
} sym;
typedef struct cand {
    uint32_t rank;
    int32_t pos;
    int32_t id; /* the merged id, to detect stale entries */
} cand;

static inline int cand_less(const cand *x, const cand *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}
static void heap_push(cand *h, size_t *n, cand c) {
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}
static cand heap_pop(cand *h, size_t *n) {
    cand top = h[0], last = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= m) break;
        size_t c = (l + 1 < m && cand_less(&h[l + 1], &h[l])) ? l + 1 : l;
        if (!cand_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static int ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t id) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int32_t *q = realloc(*ids, c * sizeof *q);
        if (!q) return -1;
        *ids = q;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return 0;
}

/* Initial symbols of a word (step 2 of the top comment). Returns the count or -1. */
static long word_symbols(const tok_bpe *m, const char *w, size_t n, sym *s, tok_arena *tmp) {
    long k = 0;
    int32_t unk_pending = -1;
    size_t i = 0;
    const unsigned char *u = (const unsigned char *)w;
    while (i < n) {
        size_t adv;
        uint32_t cp = utf8_next(u + i, n - i, &adv);
        int first = i == 0, last = i + adv == n;
        int32_t id;
        if ((!m->prefix || first) && (!m->suffix || !last)) {
            id = cp < 0x10000 ? m->cp_id[cp] : strmap_get(&m->map, w + i, adv);
        } else {
            tmp->len = 0;
            if (m->prefix && !first) arena_push(tmp, m->prefix, m->plen);
            arena_push(tmp, w + i, adv);
            if (m->suffix && last) arena_push(tmp, m->suffix, m->sflen);
            if (tmp->oom) return -1;
            id = strmap_get(&m->map, tmp->p, tmp->len);
        }
        if (id >= 0) {
            if (unk_pending >= 0) s[k++].id = unk_pending, unk_pending = -1;
            s[k++].id = id;
        } else {
            int done = 0;
            if (m->byte_fallback) {
                /* the bytes of the symbol as it would have been looked up (prefix included) */
                const char *bs = w + i;
                size_t bn = adv;
                if ((m->prefix && !first) || (m->suffix && last)) bs = tmp->p, bn = tmp->len;
                int ok = 1;
                for (size_t j = 0; j < bn; j++)
                    if (m->byte_id[(unsigned char)bs[j]] < 0) ok = 0;
                if (ok) {
                    for (size_t j = 0; j < bn; j++) s[k++].id = m->byte_id[(unsigned char)bs[j]];
                    done = 1;
                }
            }
            if (!done && m->unk >= 0) {
                if (unk_pending >= 0 && !m->fuse_unk) s[k++].id = unk_pending;
                unk_pending = m->unk;
            }
        }
        i += adv;
    }
    if (unk_pending >= 0) s[k++].id = unk_pending;
    return k;
}

static int merge_word(const tok_bpe *m, sym *s, long k, cand *heap, int32_t **ids, size_t *nids,
                      size_t *cap) {
    for (long i = 0; i < k; i++) s[i].prev = (int32_t)i - 1, s[i].next = i + 1 < k ? (int32_t)i + 1 : -1;
    size_t hn = 0;
    for (long i = 0; i + 1 < k; i++) {
        const merge_ent *e = merge_get(m, s[i].id, s[i + 1].id);
        if (e) heap_push(heap, &hn, (cand){e->rank, (int32_t)i, e->id});
    }
    while (hn) {
        cand c = heap_pop(heap, &hn);
        sym *a = &s[c.pos];
        if (a->id < 0 || a->next < 0) continue;
        sym *b = &s[a->next];
        const merge_ent *e = merge_get(m, a->id, b->id);
        if (!e || e->id != c.id) continue; /* stale */
        a->id = c.id;
        int32_t bn = b->next;
        b->id = -1;
        a->next = bn;
        if (bn >= 0) s[bn].prev = c.pos;
        if (a->prev >= 0) {
            const merge_ent *pe = merge_get(m, s[a->prev].id, a->id);
            if (pe) heap_push(heap, &hn, (cand){pe->rank, a->prev, pe->id});
        }
        if (bn >= 0) {
            const merge_ent *ne = merge_get(m, a->id, s[bn].id);
            if (ne) heap_push(heap, &hn, (cand){ne->rank, c.pos, ne->id});
        }
    }
    for (long i = 0; i < k && i >= 0; i = s[i].next) {
        if (ids_push(ids, nids, cap, s[i].id)) return -1;
        if (s[i].next < 0) break;
    }
    return 0;
}

int bpe_encode_word(const tok_bpe *m, const char *w, size_t n, int32_t **ids, size_t *nids,
                    size_t *cap) {
    if (!n) return 0;
    if (m->ignore_merges) {
        int32_t id = strmap_get(&m->map, w, n);
        if (id >= 0) return ids_push(ids, nids, cap, id);
    }
    word_cache *c = n <= CACHE_MAX_WORD ? cache_get(m) : NULL;
    uint64_t h = 0;
    size_t slot = 0;
    if (c) {
        h = tok_hash(w, n) | 1;
        slot = h & (CACHE_SLOTS - 1);
        for (;;) {
            cache_ent *e = &c->slot[slot];
            if (!e->h) break;
            if (e->h == h && e->wlen == n && !memcmp(c->pool.p + e->off, w, n)) {
                const int32_t *src = (const int32_t *)(void *)(c->pool.p + e->off +
                                                               ((n + 3) & ~(size_t)3));
                for (uint32_t j = 0; j < e->nids; j++)
                    if (ids_push(ids, nids, cap, src[j])) return -1;
                return 0;
            }
            slot = (slot + 1) & (CACHE_SLOTS - 1);
        }
    }
    /* symbols: at most one per byte of each character with its prefix/suffix (byte
     * fallback); heap: the initial pairs plus two per merge */
    size_t ns = n * (1 + m->plen) + m->sflen + 1, nh = 3 * ns;
    sym stack_s[96];
    cand stack_h[288];
    sym *s = ns <= 96 ? stack_s : malloc(ns * sizeof *s);
    cand *heap = nh <= 288 ? stack_h : malloc(nh * sizeof *heap);
    tok_arena tmp = {0};
    int rc = -1;
    size_t before = *nids;
    if (!s || !heap) goto done;
    long k = word_symbols(m, w, n, s, &tmp);
    if (k < 0) goto done;
    rc = merge_word(m, s, k, heap, ids, nids, cap);
    if (!rc && c) {
        size_t nn = *nids - before;
        size_t wpad = (n + 3) & ~(size_t)3;
        size_t off = c->pool.len;
        char *dst = arena_reserve(&c->pool, wpad + nn * 4 + 4);
        if (dst) {
            if (n) memcpy(dst, w, n);
            if (nn) memcpy(dst + wpad, *ids + before, nn * 4);
            c->pool.len += wpad + nn * 4;
            c->pool.len = (c->pool.len + 3) & ~(size_t)3;
            c->slot[slot] = (cache_ent){h, (uint32_t)off, (uint32_t)n, (uint32_t)nn};
            c->used++;
        }
        c->pool.oom = 0;
    }
done:
    if (s != stack_s) free(s);
    if (heap != stack_h) free(heap);
    free(tmp.p);
    return rc;
}
