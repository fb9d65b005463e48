/*
 * gguf_write.c: the GGUF writer (gguf_write.h).
 *
 * Metadata is serialized as it is added into one growing buffer (key, value type, value, as the
 * file stores them), so a key costs its bytes and nothing else; the tensor infos are kept as a
 * table and their offsets assigned when added (each tensor's size rounded up to the alignment,
 * as GGUFWriter pads them). begin writes the buffer, the infos and the padding; put streams the
 * data and inserts the padding between tensors; finish checks the byte counts and commits the
 * temporary file. Source of the layout: ggml's docs/gguf.md and gguf-py 0.19.0's GGUFWriter.
 */
#include "io/gguf_write.h"
#include "io/atomic.h"
#include "ops/ggml_quants.h"

#include <stdlib.h>
#include <string.h>

typedef struct gw_tensor {
    char *name;
    uint32_t type;
    int ndim;
    int64_t ne[GGUF_MAX_DIMS];
    uint64_t offset, nbytes;
} gw_tensor;

struct gguf_writer {
    uint8_t *kv; /* serialized metadata */
    size_t kv_len, kv_cap;
    uint64_t nkv;
    char **keys;
    size_t nkeys_cap;
    int oom;
    uint32_t alignment;
    gw_tensor *t;
    int nt, cap;
    uint64_t data_size; /* sum of the padded tensor sizes */
    atomic_file af;
    int begun;
    int cur;          /* tensor being written */
    uint64_t written; /* bytes of the current tensor */
};

gguf_writer *gguf_writer_new(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->begun && w->af.f) atomic_abort(&w->af);
    for (uint64_t i = 0; i < w->nkv; i++)
        free(w->keys[i]);
    for (int i = 0; i < w->nt; i++)
        free(w->t[i].name);
    free(w->keys);
    free(w->kv);
    free(w->t);
    free(w);
}

static void put_bytes(gguf_writer *w, const void *p, size_t n) {
    if (w->oom) return;
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n)
            cap *= 2;
        uint8_t *k = realloc(w->kv, cap);
        if (!k) {
            w->oom = 1;
            return;
        }
        w->kv = k, w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
}

static void put_u32(gguf_writer *w, uint32_t v) { put_bytes(w, &v, 4); }
static void put_u64(gguf_writer *w, uint64_t v) { put_bytes(w, &v, 8); }
static void put_str(gguf_writer *w, const char *s, size_t n) {
    put_u64(w, n);
    put_bytes(w, s, n);
}

/* The key and its value type; remembers the key for the repeat check at begin. */
static void put_key(gguf_writer *w, const char *key, gguf_vtype type) {
    if (w->oom) return;
    if (w->nkv == w->nkeys_cap) {
        size_t cap = w->nkeys_cap ? 2 * w->nkeys_cap : 64;
        char **k = realloc(w->keys, cap * sizeof *k);
        if (!k) {
            w->oom = 1;
            return;
        }
        w->keys = k, w->nkeys_cap = cap;
    }
    w->keys[w->nkv] = strdup(key);
    if (!w->keys[w->nkv]) {
        w->oom = 1;
        return;
    }
    w->nkv++;
    put_str(w, key, strlen(key));
    put_u32(w, (uint32_t)type);
}

void gguf_writer_kv_u32(gguf_writer *w, const char *key, uint32_t v) {
    if (!strcmp(key, "general.alignment")) w->alignment = v;
    put_key(w, key, GGUF_U32);
    put_u32(w, v);
}

void gguf_writer_kv_i32(gguf_writer *w, const char *key, int32_t v) {
    put_key(w, key, GGUF_I32);
    put_bytes(w, &v, 4);
}

void gguf_writer_kv_f32(gguf_writer *w, const char *key, float v) {
    put_key(w, key, GGUF_F32);
    put_bytes(w, &v, 4);
}

void gguf_writer_kv_bool(gguf_writer *w, const char *key, int v) {
    uint8_t b = v ? 1 : 0;
    put_key(w, key, GGUF_BOOL);
    put_bytes(w, &b, 1);
}

void gguf_writer_kv_strn(gguf_writer *w, const char *key, const char *v, size_t n) {
    put_key(w, key, GGUF_STR);
    put_str(w, v, n);
}

void gguf_writer_kv_str(gguf_writer *w, const char *key, const char *v) {
    gguf_writer_kv_strn(w, key, v, strlen(v));
}

static void put_arr_head(gguf_writer *w, const char *key, gguf_vtype elem, size_t n) {
    put_key(w, key, GGUF_ARR);
    put_u32(w, (uint32_t)elem);
    put_u64(w, n);
}

void gguf_writer_kv_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n) {
    put_arr_head(w, key, GGUF_STR, n);
    for (size_t i = 0; i < n; i++)
        put_str(w, v[i], strlen(v[i]));
}

void gguf_writer_kv_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n) {
    put_arr_head(w, key, GGUF_I32, n);
    put_bytes(w, v, n * 4);
}

void gguf_writer_kv_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n) {
    put_arr_head(w, key, GGUF_F32, n);
    put_bytes(w, v, n * 4);
}

void gguf_writer_kv_copy(gguf_writer *w, const gguf_kv *kv) {
    /* bytes of one fixed-size value of each type (gguf.h's order); 0: string */
    static const size_t size[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    int arr = kv->type == GGUF_ARR;
    if (arr)
        put_arr_head(w, kv->key, kv->elem, kv->count);
    else
        put_key(w, kv->key, kv->type);
    if (kv->elem == GGUF_STR)
        for (uint64_t i = 0; i < kv->count; i++)
            put_str(w, kv->strs[i].p, kv->strs[i].n);
    else /* stored little-endian in the mapping, as written */
        put_bytes(w, kv->data, kv->count * size[kv->elem]);
}

static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

ft_status gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type, int ndim,
                                 const int64_t *ne, ft_error *err) {
    const ggml_type_traits *tr = ggml_type_info(type);
    if (!tr || !tr->block_bytes)
        return ft_error_set(err, FT_ERR_INPUT, name, NULL, "unknown ggml type %u", type);
    if (ndim < 1 || ndim > GGUF_MAX_DIMS || ne[0] <= 0 || ne[0] % tr->block_values)
        return ft_error_set(err, FT_ERR_INPUT, name, NULL,
                            "a row of %lld values is not a whole number of %s blocks (%d values)",
                            (long long)ne[0], tr->name, tr->block_values);
    for (int i = 0; i < w->nt; i++)
        if (!strcmp(w->t[i].name, name))
            return ft_error_set(err, FT_ERR_INPUT, name, NULL, "tensor name written twice");
    if (w->nt == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        gw_tensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return ft_error_set(err, FT_ERR_RUNTIME, name, NULL, "out of memory");
        w->t = t, w->cap = cap;
    }
    gw_tensor *t = &w->t[w->nt];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return ft_error_set(err, FT_ERR_RUNTIME, name, NULL, "out of memory");
    t->type = type, t->ndim = ndim;
    uint64_t nelem = 1;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) {
        t->ne[i] = i < ndim ? ne[i] : 1;
        nelem *= (uint64_t)t->ne[i];
    }
    t->nbytes = nelem / (uint64_t)tr->block_values * tr->block_bytes;
    t->offset = w->data_size;
    w->data_size += pad_to(t->nbytes, w->alignment);
    w->nt++;
    return FT_OK;
}

uint64_t gguf_writer_tensor_bytes(const gguf_writer *w, int i) { return w->t[i].nbytes; }

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

ft_status gguf_writer_begin(gguf_writer *w, const char *path, ft_error *err) {
    if (w->oom) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    if (!w->alignment || (w->alignment & (w->alignment - 1)))
        return ft_error_set(err, FT_ERR_INPUT, "general.alignment", NULL,
                            "%u is not a power of two", w->alignment);
    /* offsets were assigned with the alignment known when each tensor was added */
    char **sorted = malloc((w->nkv ? w->nkv : 1) * sizeof *sorted);
    if (!sorted) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    memcpy(sorted, w->keys, w->nkv * sizeof *sorted);
    qsort(sorted, w->nkv, sizeof *sorted, cmp_str);
    for (uint64_t i = 1; i < w->nkv; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) {
            ft_status st = ft_error_set(err, FT_ERR_INPUT, sorted[i], NULL,
                                        "metadata key written twice (a bug in the exporter)");
            free(sorted);
            return st;
        }
    free(sorted);
    ft_status st = atomic_open(&w->af, path, err);
    if (st) return st;
    w->begun = 1;
    uint32_t magic_version[2] = {0x46554747u /* "GGUF" */, 3};
    atomic_write(&w->af, magic_version, 8);
    uint64_t counts[2] = {(uint64_t)w->nt, w->nkv};
    atomic_write(&w->af, counts, 16);
    atomic_write(&w->af, w->kv, w->kv_len);
    uint64_t pos = 24 + w->kv_len;
    for (int i = 0; i < w->nt; i++) {
        const gw_tensor *t = &w->t[i];
        uint64_t n = strlen(t->name);
        uint32_t nd = (uint32_t)t->ndim;
        atomic_write(&w->af, &n, 8);
        atomic_write(&w->af, t->name, n);
        atomic_write(&w->af, &nd, 4);
        for (int d = 0; d < t->ndim; d++) {
            uint64_t v = (uint64_t)t->ne[d];
            atomic_write(&w->af, &v, 8);
        }
        atomic_write(&w->af, &t->type, 4);
        atomic_write(&w->af, &t->offset, 8);
        pos += 8 + n + 4 + 8 * (uint64_t)t->ndim + 4 + 8;
    }
    static const uint8_t zeros[256];
    uint64_t pad = pad_to(pos, w->alignment) - pos;
    while (pad) {
        size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        atomic_write(&w->af, zeros, k);
        pad -= k;
    }
    w->cur = 0, w->written = 0;
    return FT_OK;
}

/* Close the current tensor with its padding when it is complete, and any empty ones after. */
static void advance(gguf_writer *w) {
    static const uint8_t zeros[256];
    while (w->cur < w->nt && w->written == w->t[w->cur].nbytes) {
        uint64_t pad = pad_to(w->t[w->cur].nbytes, w->alignment) - w->t[w->cur].nbytes;
        while (pad) {
            size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
            atomic_write(&w->af, zeros, k);
            pad -= k;
        }
        w->cur++, w->written = 0;
    }
}

ft_status gguf_writer_put(gguf_writer *w, const void *data, size_t n, ft_error *err) {
    if (!w->begun || w->cur >= w->nt || w->written + n > w->t[w->cur].nbytes)
        return ft_error_set(err, FT_ERR_RUNTIME, w->af.path, NULL,
                            "tensor data past the end of tensor %s (a bug in the writer's caller)",
                            w->cur < w->nt ? w->t[w->cur].name : "(none)");
    atomic_write(&w->af, data, n);
    w->written += n;
    advance(w);
    if (w->af.failed)
        return ft_error_set(err, FT_ERR_RUNTIME, w->af.tmp, "check the free disk space",
                            "write failed: %s", strerror(w->af.failed));
    return FT_OK;
}

ft_status gguf_writer_finish(gguf_writer *w, ft_error *err) {
    if (!w->begun) return ft_error_set(err, FT_ERR_RUNTIME, "gguf", NULL, "file not begun");
    advance(w);
    if (w->cur < w->nt)
        return ft_error_set(err, FT_ERR_RUNTIME, w->af.path, NULL,
                            "tensor %s got %llu of its %llu bytes (a bug in the exporter)",
                            w->t[w->cur].name, (unsigned long long)w->written,
                            (unsigned long long)w->t[w->cur].nbytes);
    w->begun = 0;
    return atomic_close(&w->af, err);
}
