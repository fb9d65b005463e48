/*
 * gguf.c: the GGUF reader (format in gguf.h).
 *
 * Source of the format: ggml's docs/gguf.md (the specification; versions 2 and 3 widened the
 * counts and lengths of version 1 to 64 bits and added u64 / i64 / f64 values; version 3 adds
 * nothing for little-endian files) and the checks of gguf-py 0.19.0's GGUFReader (alignment a
 * non-zero power of two held in a u32). Facts only; the code is ftune's own.
 *
 * The file is mapped read-only and walked once with a cursor that checks every read against the
 * bytes left, so no length or count from the file is trusted before it is known to fit: a count
 * of n values needs at least n times the smallest encoding of one, which bounds every allocation
 * by the file size. Metadata values stay in the mapping (fixed-size ones are read with memcpy,
 * since nothing in a GGUF file is aligned before the data section); string values get a table
 * of (pointer, length) so a tokenizer's 150k tokens are found in O(1). Keys and tensor names
 * are copied NUL-terminated (and may therefore not contain NUL bytes); both get a name-sorted
 * index for binary search, which also finds repeats.
 *
 * After the tensor infos the data section starts at the next multiple of the alignment. Each
 * tensor's offset must be a multiple of the alignment and its bytes (elements / block values x
 * block bytes, from ops/ggml_quants.h) must lie inside the data section without overlapping
 * another tensor's. ggml itself demands more (tensors packed in order); ftune accepts any such
 * layout. Big-endian files (GGUF v3 allows them) are refused with a message that says so.
 */
#include "io/gguf.h"
#include "io/spans.h"

#include "ops/ggml_quants.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_HINT_CORRUPT "the file may be truncated or not a GGUF file"
/* Counts above these are refused whatever the file size: the largest real models have a few
 * thousand tensors and a hundred keys; vocabularies (string arrays) a few hundred thousand. */
#define GGUF_MAX_ENTRIES (1u << 20)
#define GGUF_MAX_ARRAY (1u << 28)

struct gguf_file {
    char *path;
    void *map;
    size_t size;
    uint32_t version;
    size_t alignment;
    int nkv;
    gguf_kv *kv;
    int *kv_sorted;
    int nt;
    gguf_tensor *t;
    int *t_sorted;
    const uint8_t *data; /* the data section */
    size_t data_size;
};

static const char *const vtype_names[GGUF_VTYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
/* Bytes of one value of each fixed-size type (0: string, array). */
static const size_t vtype_size[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_vtype_name(gguf_vtype t) {
    return (unsigned)t < GGUF_VTYPE_COUNT ? vtype_names[t] : "?";
}

int gguf_vtype_is_int(gguf_vtype t) {
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 ||
           t == GGUF_I32 || t == GGUF_U64 || t == GGUF_I64;
}

/* ---------------------------------------------------------------- cursor */

typedef struct cursor {
    const uint8_t *base;
    size_t pos, size;
    const char *path;
    char where[1024]; /* what is being read, for messages: "FILE: key \"K\"" */
    ft_error *err;
} cursor;

static size_t left(const cursor *c) { return c->size - c->pos; }

static ft_status truncated(cursor *c, const char *what, uint64_t need) {
    return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                        "%s needs %" PRIu64 " bytes at offset %zu, but only %zu are left (the "
                        "file is %zu bytes)",
                        what, need, c->pos, left(c), c->size);
}

static ft_status rd(cursor *c, void *dst, size_t n, const char *what) {
    if (n > left(c)) return truncated(c, what, n);
    memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return FT_OK;
}

static ft_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    uint8_t b[4] = {0};
    ft_status st = rd(c, b, 4, what);
    if (!st)
        *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return st;
}

static ft_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    uint8_t b[8] = {0};
    ft_status st = rd(c, b, 8, what);
    if (st) return st;
    *v = 0;
    for (int i = 7; i >= 0; i--)
        *v = *v << 8 | b[i];
    return FT_OK;
}

/* A GGUF string: u64 length, then the bytes (left in the mapping). */
static ft_status rd_str(cursor *c, gguf_str *s, const char *what) {
    uint64_t n;
    ft_status st = rd_u64(c, &n, what);
    if (st) return st;
    if (n > left(c)) {
        c->pos -= 8; /* report the offset of the length */
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                            "%s: length %" PRIu64 " at offset %zu is more than the %zu bytes left "
                            "in the file",
                            what, n, c->pos, left(c) - 8);
    }
    s->p = (const char *)c->base + c->pos;
    s->n = (size_t)n;
    c->pos += (size_t)n;
    return FT_OK;
}

/* A count of items that take at least `min_bytes` each must fit in what is left. */
static ft_status check_count(cursor *c, uint64_t count, size_t min_bytes, uint64_t max,
                             const char *what) {
    size_t fit = left(c) / min_bytes;
    if (count > fit)
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                            "%" PRIu64 " %s cannot be right: the %zu bytes left in the file can "
                            "hold at most %zu",
                            count, what, left(c), fit);
    if (count > max)
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                            "%" PRIu64 " %s cannot be right: ftune's limit is %" PRIu64, count,
                            what, max);
    return FT_OK;
}

/* Up to 200 bytes of s for a message, control bytes as '?'. */
static void printable(char *buf, size_t bn, const char *p, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n && i < 200 && k + 4 < bn; i++)
        buf[k++] = (unsigned char)p[i] < 0x20 || p[i] == 0x7f ? '?' : p[i];
    if (n > 200 && k + 4 < bn) buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
    buf[k] = 0;
}

static char *dup_str(const char *p, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = 0;
    }
    return d;
}

static ft_status oom(ft_error *err, const char *where) {
    return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
}

/* ---------------------------------------------------------------- metadata */

/* count values of fixed-size type t at the cursor (bools must be 0 or 1). */
static ft_status rd_fixed(cursor *c, gguf_kv *kv, gguf_vtype t, uint64_t count) {
    ft_status st = check_count(c, count, vtype_size[t], GGUF_MAX_ARRAY, "values");
    if (st) return st;
    kv->data = c->base + c->pos;
    size_t n = (size_t)count * vtype_size[t];
    if (t == GGUF_BOOL)
        for (size_t i = 0; i < n; i++)
            if (c->base[c->pos + i] > 1)
                return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                                    "bool value %s%zu is %u; a GGUF bool is 0 or 1",
                                    count > 1 ? "#" : "", count > 1 ? i : (size_t)0,
                                    c->base[c->pos + i]);
    c->pos += n;
    return FT_OK;
}

static ft_status rd_strings(cursor *c, gguf_kv *kv, uint64_t count) {
    ft_status st = check_count(c, count, 8, GGUF_MAX_ARRAY, "strings");
    if (st) return st;
    gguf_str *s = malloc(sizeof *s * (size_t)(count ? count : 1));
    if (!s) return oom(c->err, c->where);
    kv->strs = s;
    char what[64];
    for (uint64_t i = 0; i < count && !st; i++) {
        if (count > 1) snprintf(what, sizeof what, "string #%" PRIu64, i);
        st = rd_str(c, &s[i], count > 1 ? what : "the string");
    }
    return st;
}

static ft_status rd_kv(cursor *c, gguf_kv *kv, int i) {
    snprintf(c->where, sizeof c->where, "%s: metadata entry #%d", c->path, i);
    gguf_str key;
    ft_status st = rd_str(c, &key, "the key");
    if (st) return st;
    char pk[256];
    printable(pk, sizeof pk, key.p, key.n);
    snprintf(c->where, sizeof c->where, "%s: key \"%s\"", c->path, pk);
    if (memchr(key.p, 0, key.n))
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                            "the key contains a NUL byte; keys are ASCII names like "
                            "general.architecture");
    kv->key = dup_str(key.p, key.n);
    if (!kv->key) return oom(c->err, c->where);
    uint32_t t;
    if ((st = rd_u32(c, &t, "the value type"))) return st;
    if (t >= GGUF_VTYPE_COUNT)
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                            "unknown value type %" PRIu32 " (GGUF value types are 0-12)", t);
    kv->type = kv->elem = (gguf_vtype)t;
    kv->count = 1;
    if (t == GGUF_ARR) {
        uint32_t e;
        uint64_t n;
        if ((st = rd_u32(c, &e, "the array's element type"))) return st;
        if (e == GGUF_ARR)
            return ft_error_set(c->err, FT_ERR_INPUT, c->where,
                                "no model metadata ftune uses is nested; re-export the file "
                                "without this key",
                                "arrays of arrays are not supported");
        if (e >= GGUF_VTYPE_COUNT)
            return ft_error_set(
                c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                "unknown array element type %" PRIu32 " (GGUF value types are 0-12)", e);
        if ((st = rd_u64(c, &n, "the array's length"))) return st;
        kv->elem = (gguf_vtype)e;
        kv->count = n;
    }
    if (kv->elem == GGUF_STR) return rd_strings(c, kv, kv->count);
    return rd_fixed(c, kv, kv->elem, kv->count);
}

/* ---------------------------------------------------------------- tensors */

static ft_status rd_tensor_info(cursor *c, gguf_tensor *t, int i) {
    snprintf(c->where, sizeof c->where, "%s: tensor info #%d", c->path, i);
    gguf_str name;
    ft_status st = rd_str(c, &name, "the tensor name");
    if (st) return st;
    char pn[256];
    printable(pn, sizeof pn, name.p, name.n);
    snprintf(c->where, sizeof c->where, "%s: tensor \"%s\"", c->path, pn);
    if (memchr(name.p, 0, name.n))
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                            "the name contains a NUL byte");
    t->name = dup_str(name.p, name.n);
    if (!t->name) return oom(c->err, c->where);
    uint32_t nd;
    if ((st = rd_u32(c, &nd, "the number of dimensions"))) return st;
    if (nd > GGUF_MAX_DIMS)
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                            "%" PRIu32 " dimensions; GGUF tensors have at most %d", nd,
                            GGUF_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t nelem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t v = 1;
        if (d < t->ndim && (st = rd_u64(c, &v, "a dimension"))) return st;
        if (v > INT64_MAX || (v && nelem > (uint64_t)INT64_MAX / v))
            return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                                "dimension %d is %" PRIu64 "; the element count overflows", d, v);
        t->ne[d] = (int64_t)v;
        nelem *= v;
    }
    t->nelem = nelem;
    if ((st = rd_u32(c, &t->type, "the tensor type"))) return st;
    const ggml_type_traits *tt = ggml_type_info(t->type);
    if (!tt) {
        char types[128], hint[256];
        snprintf(hint, sizeof hint,
                 "the file may come from a newer llama.cpp than ftune knows; ftune dequantizes %s",
                 ggml_dequant_types(types, sizeof types));
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, hint, "unknown tensor type %" PRIu32,
                            t->type);
    }
    if (t->ne[0] % tt->block_values)
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                            "a row of %" PRId64 " values is not a whole number of %s blocks of %d",
                            t->ne[0], tt->name, tt->block_values);
    uint64_t nb = nelem / (uint64_t)tt->block_values;
    if (nb > SIZE_MAX / tt->block_bytes)
        return ft_error_set(c->err, FT_ERR_INPUT, c->where, GGUF_HINT_CORRUPT,
                            "%" PRIu64 " elements of %s do not fit in memory", nelem, tt->name);
    t->nbytes = (size_t)nb * tt->block_bytes;
    return rd_u64(c, &t->offset, "the data offset");
}

/* ---------------------------------------------------------------- indexes */

/* qsort_r (glibc, _GNU_SOURCE) comparators: indexes into the file's keys / tensors by name */
static int kv_cmp(const void *a, const void *b, void *g) {
    const gguf_kv *kv = ((const gguf_file *)g)->kv;
    return strcmp(kv[*(const int *)a].key, kv[*(const int *)b].key);
}
static int t_cmp(const void *a, const void *b, void *g) {
    const gguf_tensor *t = ((const gguf_file *)g)->t;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

static ft_status build_index(gguf_file *g, ft_error *err) {
    char where[1200];
    g->kv_sorted = malloc(sizeof(int) * (size_t)(g->nkv + 1));
    g->t_sorted = malloc(sizeof(int) * (size_t)(g->nt + 1));
    if (!g->kv_sorted || !g->t_sorted) return oom(err, g->path);
    for (int i = 0; i < g->nkv; i++)
        g->kv_sorted[i] = i;
    for (int i = 0; i < g->nt; i++)
        g->t_sorted[i] = i;
    qsort_r(g->kv_sorted, (size_t)g->nkv, sizeof(int), kv_cmp, g);
    qsort_r(g->t_sorted, (size_t)g->nt, sizeof(int), t_cmp, g);
    for (int i = 1; i < g->nkv; i++) {
        const char *k = g->kv[g->kv_sorted[i]].key;
        if (!strcmp(k, g->kv[g->kv_sorted[i - 1]].key)) {
            snprintf(where, sizeof where, "%s: key \"%.200s\"", g->path, k);
            return ft_error_set(err, FT_ERR_INPUT, where, "each key may appear once in a GGUF file",
                                "the key appears twice in the metadata");
        }
    }
    for (int i = 1; i < g->nt; i++) {
        const char *n = g->t[g->t_sorted[i]].name;
        if (!strcmp(n, g->t[g->t_sorted[i - 1]].name)) {
            snprintf(where, sizeof where, "%s: tensor \"%.200s\"", g->path, n);
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "each tensor name may appear once in a GGUF file",
                                "the name appears twice in the tensor infos");
        }
    }
    return FT_OK;
}

/* Place every tensor in the data section: aligned, inside it, not overlapping. */
static ft_status place_tensors(gguf_file *g, ft_error *err) {
    char where[1200];
    io_span *sp = malloc(sizeof *sp * (size_t)(g->nt + 1));
    if (!sp) return oom(err, g->path);
    int ns = 0;
    ft_status st = FT_OK;
    for (int i = 0; i < g->nt && !st; i++) {
        gguf_tensor *t = &g->t[i];
        snprintf(where, sizeof where, "%s: tensor \"%.200s\"", g->path, t->name);
        if (t->offset % g->alignment)
            st = ft_error_set(err, FT_ERR_INPUT, where, GGUF_HINT_CORRUPT,
                              "data offset %" PRIu64 " is not a multiple of the alignment %zu",
                              t->offset, g->alignment);
        else if (t->offset > g->data_size || t->nbytes > g->data_size - t->offset)
            st = ft_error_set(err, FT_ERR_INPUT, where, GGUF_HINT_CORRUPT,
                              "its %zu bytes at data offset %" PRIu64
                              " end past the end of the file (the data section has %zu bytes)",
                              t->nbytes, t->offset, g->data_size);
        else {
            t->data = g->data + t->offset;
            if (t->nbytes) sp[ns++] = (io_span){t->offset, t->offset + t->nbytes, i};
        }
    }
    int i, p;
    if (!st && (i = io_spans_overlap(sp, ns, &p)) >= 0) {
        const gguf_tensor *a = &g->t[sp[i].idx], *b = &g->t[sp[p].idx];
        snprintf(where, sizeof where, "%s: tensor \"%.200s\"", g->path, a->name);
        st = ft_error_set(err, FT_ERR_INPUT, where, GGUF_HINT_CORRUPT,
                          "its bytes [%" PRIu64 ", %" PRIu64 ") overlap tensor \"%.200s\" [%" PRIu64
                          ", %" PRIu64 ")",
                          sp[i].begin, sp[i].end, b->name, sp[p].begin, sp[p].end);
    }
    free(sp);
    return st;
}

/* ---------------------------------------------------------------- open / close */

void gguf_close(gguf_file *g) {
    if (!g) return;
    for (int i = 0; i < g->nkv; i++) {
        free((char *)g->kv[i].key);
        free((gguf_str *)g->kv[i].strs);
    }
    free(g->kv);
    free(g->kv_sorted);
    for (int i = 0; i < g->nt; i++)
        free((char *)g->t[i].name);
    free(g->t);
    free(g->t_sorted);
    if (g->map) munmap(g->map, g->size);
    free(g->path);
    free(g);
}

static ft_status map_file(gguf_file *g, const char *path, ft_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_set(err, FT_ERR_INPUT, path, "check the path", "cannot open: %s",
                            strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ft_error_set(err, FT_ERR_INPUT, path, "give the path of a .gguf file",
                            "not a regular file");
    }
    g->size = (size_t)sb.st_size;
    if (g->size < 24) {
        close(fd);
        return ft_error_set(err, FT_ERR_INPUT, path, GGUF_HINT_CORRUPT,
                            "file is %zu bytes; a GGUF header alone is 24", g->size);
    }
    void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "cannot map the file: %s",
                            strerror(e));
    g->map = m;
    return FT_OK;
}

static ft_status parse_header(gguf_file *g, cursor *c, uint64_t *nt, uint64_t *nkv) {
    snprintf(c->where, sizeof c->where, "%s: header", g->path);
    const uint8_t *p = c->base;
    if (memcmp(p, "GGUF", 4))
        return ft_error_set(c->err, FT_ERR_INPUT, g->path,
                            "give a .gguf file (llama.cpp's convert_hf_to_gguf.py writes them)",
                            "not a GGUF file: it starts with bytes %02x %02x %02x %02x, not "
                            "\"GGUF\"",
                            p[0], p[1], p[2], p[3]);
    c->pos = 4;
    ft_status st = rd_u32(c, &g->version, "the version");
    if (st) return st;
    uint32_t v = g->version, swapped = __builtin_bswap32(v);
    if (v != 2 && v != 3) {
        if (swapped == 2 || swapped == 3)
            return ft_error_set(
                c->err, FT_ERR_INPUT, c->where, "convert the model again without --bigendian",
                "a big-endian GGUF file (version %" PRIu32 "); ftune reads little-endian files",
                swapped);
        return ft_error_set(c->err, FT_ERR_INPUT, c->where,
                            v == 1 ? "GGUF version 1 (2023) used 32-bit counts; convert the model "
                                     "again with a current llama.cpp"
                                   : GGUF_HINT_CORRUPT,
                            "GGUF version %" PRIu32 "; ftune reads versions 2 and 3", v);
    }
    if ((st = rd_u64(c, nt, "the tensor count"))) return st;
    if ((st = rd_u64(c, nkv, "the metadata count"))) return st;
    /* smallest tensor info: name length 8, n_dims 4, type 4, offset 8; smallest entry: key
     * length 8, type 4, a 1-byte value */
    if ((st = check_count(c, *nkv, 13, GGUF_MAX_ENTRIES, "metadata entries"))) return st;
    return check_count(c, *nt, 24, GGUF_MAX_ENTRIES, "tensors");
}

static ft_status parse(gguf_file *g, ft_error *err) {
    cursor c = {.base = g->map, .size = g->size, .path = g->path, .err = err};
    uint64_t nt, nkv;
    ft_status st = parse_header(g, &c, &nt, &nkv);
    if (st) return st;
    g->kv = calloc((size_t)nkv + 1, sizeof *g->kv);
    g->t = calloc((size_t)nt + 1, sizeof *g->t);
    if (!g->kv || !g->t) return oom(err, g->path);
    for (uint64_t i = 0; i < nkv && !st; i++) {
        g->nkv = (int)i + 1; /* the entry is freed with the file even when it fails half-read */
        st = rd_kv(&c, &g->kv[i], (int)i);
    }
    for (uint64_t i = 0; i < nt && !st; i++) {
        g->nt = (int)i + 1;
        st = rd_tensor_info(&c, &g->t[i], (int)i);
    }
    if (st) return st;
    if ((st = build_index(g, err))) return st;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *a = gguf_find_kv(g, "general.alignment");
    if (a) {
        char where[1200];
        snprintf(where, sizeof where, "%s: key \"general.alignment\"", g->path);
        uint32_t v = 0;
        if (a->type != GGUF_U32)
            return ft_error_set(err, FT_ERR_INPUT, where, GGUF_HINT_CORRUPT,
                                "expected a u32, found %s", gguf_vtype_name(a->type));
        memcpy(&v, a->data, 4);
        if (v == 0 || (v & (v - 1)))
            return ft_error_set(err, FT_ERR_INPUT, where, GGUF_HINT_CORRUPT,
                                "alignment %" PRIu32 " is not a power of two", v);
        g->alignment = v;
    }
    size_t start = c.pos + (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data = (const uint8_t *)g->map + (start < g->size ? start : g->size);
    g->data_size = start < g->size ? g->size - start : 0;
    return place_tensors(g, err);
}

int gguf_is_file(const char *path) {
    struct stat sb;
    if (!path || stat(path, &sb) || !S_ISREG(sb.st_mode)) return 0;
    size_t n = strlen(path);
    if (n >= 5 && !strcasecmp(path + n - 5, ".gguf")) return 1;
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    int ok = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
    if (f) fclose(f);
    return ok;
}

ft_status gguf_open(const char *path, gguf_file **out, ft_error *err) {
    *out = NULL;
    gguf_file *g = calloc(1, sizeof *g);
    if (!g) return oom(err, path);
    g->path = dup_str(path, strlen(path));
    ft_status st = g->path ? map_file(g, path, err) : oom(err, path);
    if (!st) st = parse(g, err);
    if (st) {
        gguf_close(g);
        return st;
    }
    *out = g;
    return FT_OK;
}

/* ---------------------------------------------------------------- lookups */

const char *gguf_path(const gguf_file *g) { return g->path; }
uint32_t gguf_version(const gguf_file *g) { return g->version; }
size_t gguf_alignment(const gguf_file *g) { return g->alignment; }
int gguf_kv_count(const gguf_file *g) { return g->nkv; }
int gguf_tensor_count(const gguf_file *g) { return g->nt; }

const gguf_kv *gguf_kv_at(const gguf_file *g, int i) {
    return i >= 0 && i < g->nkv ? &g->kv[i] : NULL;
}
const gguf_tensor *gguf_tensor_at(const gguf_file *g, int i) {
    return i >= 0 && i < g->nt ? &g->t[i] : NULL;
}

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key) {
    int lo = 0, hi = g->nkv - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(key, g->kv[g->kv_sorted[mid]].key);
        if (!c) return &g->kv[g->kv_sorted[mid]];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    int lo = 0, hi = g->nt - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(name, g->t[g->t_sorted[mid]].name);
        if (!c) return &g->t[g->t_sorted[mid]];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i) {
    if (!vtype_size[kv->elem] || i >= kv->count) return 0; /* strings; out of range */
    const uint8_t *p = (const uint8_t *)kv->data + i * vtype_size[kv->elem];
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
    } v;
    memcpy(&v, p, vtype_size[kv->elem]);
    switch (kv->elem) {
    case GGUF_U8:
    case GGUF_BOOL:
        return v.u8;
    case GGUF_I8:
        return v.i8;
    case GGUF_U16:
        return v.u16;
    case GGUF_I16:
        return v.i16;
    case GGUF_U32:
        return v.u32;
    case GGUF_I32:
        return v.i32;
    case GGUF_U64:
        return v.u64 > INT64_MAX ? INT64_MAX : (int64_t)v.u64;
    case GGUF_I64:
        return v.i64;
    default:
        return 0;
    }
}

double gguf_arr_float(const gguf_kv *kv, uint64_t i) {
    if (!vtype_size[kv->elem] || i >= kv->count) return 0;
    const uint8_t *p = (const uint8_t *)kv->data + i * vtype_size[kv->elem];
    if (kv->elem == GGUF_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (kv->elem == GGUF_F64) {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    return (double)gguf_arr_int(kv, i);
}

/* The key, which must exist and be a scalar. */
static ft_status get_scalar(const gguf_file *g, const char *key, const char *want,
                            const gguf_kv **out, char *where, size_t wn, ft_error *err) {
    snprintf(where, wn, "%s: key \"%s\"", g->path, key);
    const gguf_kv *kv = gguf_find_kv(g, key);
    *out = kv;
    if (!kv)
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "'ftune inspect --gguf FILE' lists the metadata the file has",
                            "key not found (expected a %s)", want);
    if (kv->type == GGUF_ARR)
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "expected a %s, found an array of %" PRIu64 " %s values", want,
                            kv->count, gguf_vtype_name(kv->elem));
    return FT_OK;
}

/* An integer value of any integer type, which must lie in [lo, hi]: *neg and the magnitude. */
static ft_status get_int(const gguf_file *g, const char *key, const char *want, int64_t lo,
                         uint64_t hi, int *neg, uint64_t *mag, ft_error *err) {
    const gguf_kv *kv;
    char where[1200];
    ft_status st = get_scalar(g, key, want, &kv, where, sizeof where, err);
    if (st) return st;
    if (!gguf_vtype_is_int(kv->type))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a %s, found a %s", want,
                            gguf_vtype_name(kv->type));
    if (kv->type == GGUF_U64) {
        memcpy(mag, kv->data, 8);
        *neg = 0;
    } else {
        int64_t s = gguf_arr_int(kv, 0);
        *neg = s < 0;
        *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    }
    if (*neg ? *mag > (uint64_t)0 - (uint64_t)lo : *mag > hi)
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "%s value %s%" PRIu64 " does not fit a %s", gguf_vtype_name(kv->type),
                            *neg ? "-" : "", *mag, want);
    return FT_OK;
}

ft_status gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out, ft_error *err) {
    uint64_t v;
    int neg;
    ft_status st = get_int(g, key, "u32", 0, UINT32_MAX, &neg, &v, err);
    if (!st) *out = (uint32_t)v;
    return st;
}

ft_status gguf_get_i32(const gguf_file *g, const char *key, int32_t *out, ft_error *err) {
    uint64_t v;
    int neg;
    ft_status st = get_int(g, key, "i32", INT32_MIN, INT32_MAX, &neg, &v, err);
    if (!st) *out = neg ? (int32_t)(0 - (int64_t)v) : (int32_t)v;
    return st;
}

ft_status gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out, ft_error *err) {
    int neg;
    return get_int(g, key, "u64", 0, UINT64_MAX, &neg, out, err);
}

ft_status gguf_get_f32(const gguf_file *g, const char *key, float *out, ft_error *err) {
    const gguf_kv *kv;
    char where[1200];
    ft_status st = get_scalar(g, key, "f32", &kv, where, sizeof where, err);
    if (st) return st;
    if (kv->type != GGUF_F32 && kv->type != GGUF_F64)
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a f32, found a %s",
                            gguf_vtype_name(kv->type));
    *out = (float)gguf_arr_float(kv, 0);
    return FT_OK;
}

ft_status gguf_get_bool(const gguf_file *g, const char *key, int *out, ft_error *err) {
    const gguf_kv *kv;
    char where[1200];
    ft_status st = get_scalar(g, key, "bool", &kv, where, sizeof where, err);
    if (st) return st;
    if (kv->type != GGUF_BOOL)
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a bool, found a %s",
                            gguf_vtype_name(kv->type));
    *out = (int)gguf_arr_int(kv, 0);
    return FT_OK;
}

ft_status gguf_get_str(const gguf_file *g, const char *key, gguf_str *out, ft_error *err) {
    const gguf_kv *kv;
    char where[1200];
    ft_status st = get_scalar(g, key, "string", &kv, where, sizeof where, err);
    if (st) return st;
    if (kv->type != GGUF_STR)
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a string, found a %s",
                            gguf_vtype_name(kv->type));
    *out = kv->strs[0];
    return FT_OK;
}

ft_status gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype elem, const gguf_kv **out,
                       ft_error *err) {
    char where[1200];
    snprintf(where, sizeof where, "%s: key \"%s\"", g->path, key);
    const gguf_kv *kv = gguf_find_kv(g, key);
    *out = NULL;
    if (!kv)
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "'ftune inspect --gguf FILE' lists the metadata the file has",
                            "key not found (expected an array of %s)", gguf_vtype_name(elem));
    int ok = kv->type == GGUF_ARR &&
             (kv->elem == elem || (gguf_vtype_is_int(elem) && gguf_vtype_is_int(kv->elem)));
    if (!ok) {
        if (kv->type == GGUF_ARR)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "expected an array of %s, found an array of %s",
                                gguf_vtype_name(elem), gguf_vtype_name(kv->elem));
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an array of %s, found a %s",
                            gguf_vtype_name(elem), gguf_vtype_name(kv->type));
    }
    *out = kv;
    return FT_OK;
}

/* ---------------------------------------------------------------- tensor values */

ft_status gguf_read_f32(const gguf_file *g, const gguf_tensor *t, uint64_t first, uint64_t n,
                        float *dst, ft_error *err) {
    char where[1200];
    snprintf(where, sizeof where, "%s: tensor \"%.200s\"", g->path, t->name);
    const ggml_type_traits *tt = ggml_type_info(t->type);
    char types[128];
    if (!tt->dequant_row)
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "re-quantize the model to one of these types (llama.cpp's "
                            "llama-quantize; Q4_K_M files use Q4_K and Q6_K)",
                            "tensor type %s: ftune dequantizes only %s", tt->name,
                            ggml_dequant_types(types, sizeof types));
    uint64_t bv = (uint64_t)tt->block_values;
    if (first % bv || n % bv || first > t->nelem || n > t->nelem - first)
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "values [%" PRIu64 ", %" PRIu64 ") are not whole %s blocks of %d "
                            "inside its %" PRIu64 " values",
                            first, first + n, tt->name, tt->block_values, t->nelem);
    const uint8_t *src = (const uint8_t *)t->data + first / bv * tt->block_bytes;
    ggml_dequant_row(t->type, src, dst, (size_t)n);
    return FT_OK;
}
