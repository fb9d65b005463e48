/*
 * safetensors.c: reading and writing .safetensors files (see safetensors.h for the format).
 *
 * Reading maps each file read-only and validates the whole header before any tensor is handed
 * out: the 8-byte header length must fit in the file, the header must be a JSON object (parsed
 * with io/json.h so syntax errors carry line and column), every entry must have a known dtype, a
 * shape of at most ST_MAX_DIMS non-negative integers, and data_offsets [begin, end] inside the
 * data buffer with end - begin == product(shape) * dtype size (computed with overflow checks);
 * non-empty tensors may not overlap and names may not repeat. Tensors are kept in header order
 * for st_at and in a name-sorted index for st_find (binary search), so lookups stay fast for
 * models with thousands of tensors. A model folder is either model.safetensors or the shards
 * named by model.safetensors.index.json; each shard is mapped once and the tensors of all shards
 * form one set.
 *
 * Writing lays the tensors out contiguously, ordered like the Python library orders them (larger
 * dtypes first, then by name, so every tensor stays aligned to its element size), writes the
 * header JSON padded with spaces to a multiple of 8 bytes, and goes through io/atomic.h. Since
 * every size is known from the shapes, the header can be written before any data: a streamed
 * write (st_writer_begin / _put / _finish) then writes each tensor where it lies, in whatever
 * order its producer makes them, so a converter never holds more than the piece at hand.
 *
 * The fp16 / bf16 conversions are base/half.h's (round to nearest even; the NaN rule is stated
 * there).
 * Data is assumed little-endian, like the host (x86-64, aarch64).
 */
#include "io/safetensors.h"
#include "io/spans.h"

#include "io/atomic.h"
#include "io/json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u * 1000u * 1000u) /* the Python library's own limit is 100 MB */
#define ST_HINT_CORRUPT "the file may be truncated or not a safetensors file"

static const char *const dtype_names[ST_DTYPE_COUNT] = {"F32", "F16", "BF16", "F64", "I64",
                                                        "I32", "I16", "I8",   "U8",  "BOOL"};
static const size_t dtype_sizes[ST_DTYPE_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};

const char *st_dtype_name(st_dtype t) {
    return (unsigned)t < ST_DTYPE_COUNT ? dtype_names[t] : "?";
}
size_t st_dtype_size(st_dtype t) { return (unsigned)t < ST_DTYPE_COUNT ? dtype_sizes[t] : 0; }

/* ---------------------------------------------------------------- the set */

typedef struct st_file {
    char *path;
    void *map;
    size_t size;
    const uint8_t *data; /* start of the data buffer */
    size_t data_size;
    int fd; /* fd + 1 for st_pread (0: not opened yet) */
} st_file;

struct st_set {
    char *label; /* the file or folder it was opened from */
    int nfiles;
    st_file **files;
    int n, cap;
    st_tensor *t;
    int *sorted; /* tensor indices sorted by name */
    int nmeta;
    char **meta_key, **meta_val;
};

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void st_close(st_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++)
        free((char *)s->t[i].name);
    free(s->t);
    free(s->sorted);
    for (int i = 0; i < s->nfiles; i++) {
        st_file *f = s->files[i];
        if (f->map && f->size) munmap(f->map, f->size);
        if (f->fd) close(f->fd - 1);
        free(f->path);
        free(f);
    }
    free(s->files);
    for (int i = 0; i < s->nmeta; i++) {
        free(s->meta_key[i]);
        free(s->meta_val[i]);
    }
    free(s->meta_key);
    free(s->meta_val);
    free(s->label);
    free(s);
}

static ft_status oom(ft_error *err, const char *where) {
    return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
}

/* where = "FILE: tensor \"NAME\"" */
static void tensor_where(char *buf, size_t n, const char *file, const char *name) {
    snprintf(buf, n, "%s: tensor \"%s\"", file, name);
}

/* A JSON number that is a non-negative integer exactly representable (< 2^53). */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d >= 9007199254740992.0) return 0;
    *out = (uint64_t)d;
    return 1;
}

static void shape_text(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static ft_status add_meta(st_set *s, const char *k, const char *v, ft_error *err) {
    for (int i = 0; i < s->nmeta; i++)
        if (!strcmp(s->meta_key[i], k)) return FT_OK; /* first file wins */
    char **nk = realloc(s->meta_key, sizeof *nk * (size_t)(s->nmeta + 1));
    if (!nk) return oom(err, s->label);
    s->meta_key = nk;
    char **nv = realloc(s->meta_val, sizeof *nv * (size_t)(s->nmeta + 1));
    if (!nv) return oom(err, s->label);
    s->meta_val = nv;
    s->meta_key[s->nmeta] = dup_str(k);
    s->meta_val[s->nmeta] = dup_str(v);
    if (!s->meta_key[s->nmeta] || !s->meta_val[s->nmeta]) {
        free(s->meta_key[s->nmeta]);
        free(s->meta_val[s->nmeta]);
        return oom(err, s->label);
    }
    s->nmeta++;
    return FT_OK;
}

/* Parse and validate one entry of the header; append it to s. */
static ft_status parse_entry(st_set *s, st_file *f, const cJSON *e, io_span *sp, ft_error *err) {
    char where[1024];
    tensor_where(where, sizeof where, f->path, e->string);
    if (!cJSON_IsObject(e))
        return ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                            "expected an object {dtype, shape, data_offsets}, found %s",
                            json_type_name(e));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                            "field \"dtype\": expected a string, found %s", json_type_name(dt));
    int dtype = -1;
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (!strcmp(dt->valuestring, dtype_names[i])) dtype = i;
    if (dtype < 0)
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "ftune reads F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL; convert the "
                            "checkpoint to one of them (e.g. with torch)",
                            "unsupported dtype \"%s\"", dt->valuestring);
    if (!cJSON_IsArray(sh))
        return ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                            "field \"shape\": expected a list of integers, found %s",
                            json_type_name(sh));
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > ST_MAX_DIMS)
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "shape has %d dimensions; at most %d are supported", ndim, ST_MAX_DIMS);
    st_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = (st_dtype)dtype;
    t.ndim = ndim;
    t.file = f->path;
    /* number of bytes = product(shape) * size, with overflow checks */
    uint64_t bytes = dtype_sizes[dtype];
    int overflow = 0, d = 0;
    for (const cJSON *x = sh->child; x; x = x->next, d++) {
        uint64_t v;
        if (!json_uint(x, &v))
            return ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                                "shape[%d]: expected a non-negative integer, found %s%s", d,
                                json_type_name(x),
                                cJSON_IsNumber(x) ? " (not a non-negative integer)" : "");
        t.shape[d] = (int64_t)v;
        if (!overflow && v && bytes > UINT64_MAX / v) overflow = 1;
        bytes = overflow ? 0 : bytes * v;
    }
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                            "field \"data_offsets\": expected [begin, end], found %s%s",
                            json_type_name(off), cJSON_IsArray(off) ? " of another length" : "");
    uint64_t b, en;
    if (!json_uint(off->child, &b) || !json_uint(off->child->next, &en))
        return ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                            "field \"data_offsets\": expected two non-negative integers");
    if (b > en)
        return ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                            "data_offsets [%" PRIu64 ", %" PRIu64 "]: begin is after end", b, en);
    if (en > f->data_size)
        return ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                            "data_offsets [%" PRIu64 ", %" PRIu64
                            "] end beyond the data buffer (%zu bytes after the header)",
                            b, en, f->data_size);
    char shp[256];
    shape_text(shp, sizeof shp, ndim, t.shape);
    if (overflow || bytes != en - b) {
        char need[32];
        if (overflow)
            snprintf(need, sizeof need, "more than 2^64");
        else
            snprintf(need, sizeof need, "%" PRIu64, bytes);
        return ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                            "shape %s x %s (%zu bytes each) needs %s bytes, but data_offsets "
                            "[%" PRIu64 ", %" PRIu64 "] hold %" PRIu64,
                            shp, dtype_names[dtype], dtype_sizes[dtype], need, b, en, en - b);
    }
    t.data = f->data + b;
    t.nbytes = (size_t)bytes;
    t.name = dup_str(e->string);
    if (!t.name) return oom(err, f->path);
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 64;
        st_tensor *nt = realloc(s->t, sizeof *nt * (size_t)nc);
        if (!nt) {
            free((char *)t.name);
            return oom(err, f->path);
        }
        s->t = nt;
        s->cap = nc;
    }
    sp->begin = b;
    sp->end = en;
    sp->idx = s->n;
    s->t[s->n++] = t;
    return FT_OK;
}

/* Map one file and add its tensors to s. */
static ft_status load_file(st_set *s, const char *path, ft_error *err) {
    st_file *f = calloc(1, sizeof *f);
    if (!f) return oom(err, path);
    f->path = dup_str(path);
    st_file **nf = realloc(s->files, sizeof *nf * (size_t)(s->nfiles + 1));
    if (!f->path || !nf) {
        free(f->path);
        free(f);
        if (nf) s->files = nf;
        return oom(err, path);
    }
    s->files = nf;
    s->files[s->nfiles++] = f; /* owned by s from here on: st_close frees it */

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_set(err, FT_ERR_INPUT, path, "check the path", "cannot open: %s",
                            strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return ft_error_set(err, FT_ERR_INPUT, path, NULL, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return ft_error_set(err, FT_ERR_INPUT, path, "give a .safetensors file",
                            "not a regular file");
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        return ft_error_set(err, FT_ERR_INPUT, path, ST_HINT_CORRUPT,
                            "file is %zu bytes; a safetensors file starts with an 8-byte header "
                            "length",
                            f->size);
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "cannot map the file: %s",
                            strerror(e));
    }
    const uint8_t *p = f->map;
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--)
        hn = hn << 8 | p[i];
    if (hn > ST_MAX_HEADER || hn > f->size - 8)
        return ft_error_set(err, FT_ERR_INPUT, path, ST_HINT_CORRUPT,
                            "header length %" PRIu64 " is larger than %s (%zu bytes)", hn,
                            hn > ST_MAX_HEADER ? "the 100 MB limit" : "the rest of the file",
                            hn > ST_MAX_HEADER ? (size_t)ST_MAX_HEADER : f->size - 8);
    f->data = p + 8 + hn;
    f->data_size = f->size - 8 - (size_t)hn;
    /* The header is JSON followed only by padding spaces. */
    const char *h = (const char *)p + 8;
    size_t hl = (size_t)hn;
    while (hl && (h[hl - 1] == ' ' || h[hl - 1] == '\n' || h[hl - 1] == '\t' || h[hl - 1] == '\r'))
        hl--;
    if (hl == 0 || h[0] != '{' || h[hl - 1] != '}')
        return ft_error_set(err, FT_ERR_INPUT, path, ST_HINT_CORRUPT,
                            "the %" PRIu64 "-byte header is not a JSON object", hn);
    cJSON *j = NULL;
    char where[1024];
    snprintf(where, sizeof where, "%s (header)", path);
    ft_status st = json_parse(h, hl, where, &j, err);
    if (st) {
        if (err) snprintf(err->hint, sizeof err->hint, "%s", ST_HINT_CORRUPT);
        return st;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return ft_error_set(err, FT_ERR_INPUT, path, ST_HINT_CORRUPT,
                            "the header is not a JSON object");
    }
    int count = cJSON_GetArraySize(j);
    io_span *spans = malloc(sizeof *spans * (size_t)(count + 1));
    if (!spans) {
        cJSON_Delete(j);
        return oom(err, path);
    }
    int ns = 0;
    for (const cJSON *e2 = j->child; e2 && !st; e2 = e2->next) {
        if (!strcmp(e2->string, "__metadata__")) {
            if (cJSON_IsNull(e2)) continue;
            snprintf(where, sizeof where, "%s: __metadata__", path);
            if (!cJSON_IsObject(e2)) {
                st = ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                                  "expected an object of strings, found %s", json_type_name(e2));
                break;
            }
            for (const cJSON *m = e2->child; m && !st; m = m->next) {
                if (!cJSON_IsString(m))
                    st = ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                                      "key \"%s\": expected a string value, found %s", m->string,
                                      json_type_name(m));
                else
                    st = add_meta(s, m->string, m->valuestring, err);
            }
            continue;
        }
        st = parse_entry(s, f, e2, &spans[ns], err);
        if (!st) ns++;
    }
    cJSON_Delete(j);
    if (!st) {
        /* Non-empty tensors must not share bytes. */
        int p, i = io_spans_overlap(spans, ns, &p);
        if (i >= 0) {
            const st_tensor *a = &s->t[spans[i].idx], *b = &s->t[spans[p].idx];
            tensor_where(where, sizeof where, path, a->name);
            st = ft_error_set(err, FT_ERR_INPUT, where, ST_HINT_CORRUPT,
                              "data_offsets [%" PRIu64 ", %" PRIu64
                              "] overlap tensor \"%s\" (which ends at %" PRIu64 ")",
                              spans[i].begin, spans[i].end, b->name, spans[p].end);
        }
    }
    free(spans);
    return st;
}

static const st_set *cmp_set; /* only used during the qsort below (single-threaded open) */
static int name_cmp(const void *a, const void *b) {
    return strcmp(cmp_set->t[*(const int *)a].name, cmp_set->t[*(const int *)b].name);
}

/* Build the sorted index; repeated names are an error. */
static ft_status finish(st_set *s, ft_error *err) {
    s->sorted = malloc(sizeof *s->sorted * (size_t)(s->n ? s->n : 1));
    if (!s->sorted) return oom(err, s->label);
    for (int i = 0; i < s->n; i++)
        s->sorted[i] = i;
    cmp_set = s;
    qsort(s->sorted, (size_t)s->n, sizeof *s->sorted, name_cmp);
    cmp_set = NULL;
    for (int i = 1; i < s->n; i++) {
        const st_tensor *a = &s->t[s->sorted[i - 1]], *b = &s->t[s->sorted[i]];
        if (!strcmp(a->name, b->name)) {
            char where[1024];
            tensor_where(where, sizeof where, b->file, b->name);
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "each tensor name may appear once in a model",
                                "the name appears twice (also in %s)", a->file);
        }
    }
    return FT_OK;
}

static st_set *set_new(const char *label) {
    st_set *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->label = dup_str(label);
    if (!s->label) {
        free(s);
        return NULL;
    }
    return s;
}

ft_status st_open(const char *path, st_set **out, ft_error *err) {
    *out = NULL;
    st_set *s = set_new(path);
    if (!s) return oom(err, path);
    ft_status st = load_file(s, path, err);
    if (!st) st = finish(s, err);
    if (st) {
        st_close(s);
        return st;
    }
    *out = s;
    return FT_OK;
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

ft_status st_open_dir(const char *dir, st_set **out, ft_error *err) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (file_exists(path)) return st_open(path, out, err);
    char ipath[4096];
    snprintf(ipath, sizeof ipath, "%s/model.safetensors.index.json", dir);
    if (!file_exists(ipath))
        return ft_error_set(err, FT_ERR_INPUT, dir,
                            "give a Hugging Face model folder (save_pretrained writes these "
                            "files; .bin / .pt checkpoints must be converted to safetensors)",
                            "found neither model.safetensors nor model.safetensors.index.json");
    cJSON *j = NULL;
    ft_status st = json_load_file(ipath, &j, err);
    if (st) return st;
    char where[4200];
    snprintf(where, sizeof where, "%s: field \"weight_map\"", ipath);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    if (!cJSON_IsObject(wm)) {
        st = ft_error_set(err, FT_ERR_INPUT, where, "the index maps tensor names to shard files",
                          "expected an object, found %s", json_type_name(wm));
        cJSON_Delete(j);
        return st;
    }
    st_set *s = set_new(dir);
    if (!s) {
        cJSON_Delete(j);
        return oom(err, dir);
    }
    /* Open each distinct shard once, in order of first mention. */
    const char **shards = NULL;
    int nsh = 0;
    for (const cJSON *e = wm->child; e && !st; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/')) {
            snprintf(where, sizeof where, "%s: weight_map \"%s\"", ipath, e->string);
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                              "expected a shard file name in the same folder, found %s",
                              cJSON_IsString(e) ? "a path" : json_type_name(e));
            break;
        }
        int seen = 0;
        for (int i = 0; i < nsh && !seen; i++)
            seen = !strcmp(shards[i], e->valuestring);
        if (seen) continue;
        const char **ns = realloc(shards, sizeof *ns * (size_t)(nsh + 1));
        if (!ns) {
            st = oom(err, ipath);
            break;
        }
        shards = ns;
        shards[nsh++] = e->valuestring;
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        if (!file_exists(path)) {
            snprintf(where, sizeof where, "%s: weight_map \"%s\"", ipath, e->string);
            st = ft_error_set(err, FT_ERR_INPUT, where,
                              "the checkpoint is incomplete: download or copy every shard",
                              "shard file %s is missing", path);
            break;
        }
        st = load_file(s, path, err);
    }
    free(shards);
    if (!st) st = finish(s, err);
    /* Every name in the index must be in the shard the index names. */
    for (const cJSON *e = wm->child; e && !st; e = e->next) {
        const st_tensor *t = st_find(s, e->string);
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        if (!t || strcmp(t->file, path)) {
            snprintf(where, sizeof where, "%s: tensor \"%s\"", path, e->string);
            st = ft_error_set(err, FT_ERR_INPUT, where,
                              "the index and the shards disagree; the checkpoint may be "
                              "incomplete or from different saves",
                              "model.safetensors.index.json puts this tensor in %s, but %s",
                              e->valuestring, t ? "it is in another shard" : "it is not there");
        }
    }
    cJSON_Delete(j);
    if (st) {
        st_close(s);
        return st;
    }
    *out = s;
    return FT_OK;
}

int st_count(const st_set *s) { return s->n; }

const st_tensor *st_at(const st_set *s, int i) { return i >= 0 && i < s->n ? &s->t[i] : NULL; }

const st_tensor *st_find(const st_set *s, const char *name) {
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const st_tensor *t = &s->t[s->sorted[mid]];
        int c = strcmp(name, t->name);
        if (!c) return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *st_metadata(const st_set *s, const char *key) {
    for (int i = 0; i < s->nmeta; i++)
        if (!strcmp(s->meta_key[i], key)) return s->meta_val[i];
    return NULL;
}

ft_status st_find_shaped(const st_set *s, const char *name, int ndim, const int64_t *shape,
                         const st_tensor **out, ft_error *err) {
    const st_tensor *t = st_find(s, name);
    char where[1024], a[256], b[256];
    *out = NULL;
    if (!t) {
        tensor_where(where, sizeof where, s->label, name);
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "the checkpoint does not match the architecture in config.json; "
                            "'ftune inspect --model PATH' lists the tensors it has",
                            "tensor not found");
    }
    tensor_where(where, sizeof where, t->file, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        shape_text(a, sizeof a, ndim, shape);
        shape_text(b, sizeof b, t->ndim, t->shape);
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "the file does not belong to this model: its shapes must follow the "
                            "model's config.json (and an adapter's, its adapter_config.json r)",
                            "expected shape %s, found %s", a, b);
    }
    *out = t;
    return FT_OK;
}

/* Pages are dropped whole: the range is widened to page boundaries. That may drop a page shared
 * with a neighbouring tensor, which only costs reading it again from the file if it is used. */
void st_release_pages(const st_tensor *t) {
    if (t) io_release_pages(t->data, t->nbytes);
}

int st_open_tensor_file(const st_set *s, const st_tensor *t, long long *offset) {
    for (int i = 0; i < s->nfiles; i++) {
        const st_file *f = s->files[i];
        const uint8_t *p = t->data, *base = f->map;
        if (p < base || p + t->nbytes > base + f->size) continue;
        *offset = (long long)(p - base);
        return open(f->path, O_RDONLY | O_CLOEXEC);
    }
    return -1;
}

int st_pread(const st_set *s, const void *p, size_t n, void *dst) {
    const uint8_t *q = p;
    for (int i = 0; i < s->nfiles; i++) {
        st_file *f = s->files[i];
        const uint8_t *base = f->map;
        if (!base || q < base || q + n > base + f->size) continue;
        if (!f->fd) {
            int fd = open(f->path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) return -1;
            f->fd = fd + 1;
        }
        size_t done = 0;
        while (done < n) {
            ssize_t r = pread(f->fd - 1, (uint8_t *)dst + done, n - done, (off_t)(q - base + done));
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                return -1;
            }
            done += (size_t)r;
        }
        return 0;
    }
    return -1;
}

ft_status st_read_f32(const st_set *s, const char *name, int ndim, const int64_t *shape, float *dst,
                      ft_error *err) {
    const st_tensor *t;
    ft_status st = st_find_shaped(s, name, ndim, shape, &t, err);
    if (st) return st;
    char where[1024];
    tensor_where(where, sizeof where, t->file, name);
    size_t n = t->nbytes / dtype_sizes[t->dtype];
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, p, n * 4);
        break;
    case ST_F16:
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = t->dtype == ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        break;
    default:
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "floating-point weights must be F32, F16 or BF16",
                            "expected dtype F32, F16 or BF16, found %s", dtype_names[t->dtype]);
    }
    return FT_OK;
}

int st_read_range_f32(const st_tensor *t, size_t first, size_t n, float *dst) {
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) return 1;
    size_t es = dtype_sizes[t->dtype];
    const uint8_t *p = (const uint8_t *)t->data + first * es;
    if (t->dtype == ST_F32)
        memcpy(dst, p, n * 4);
    else
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = t->dtype == ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
    /* the whole pages inside this range: a page shared with the next slice stays */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1),
              hi = ((uintptr_t)p + n * es) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
    return 0;
}

/* ---------------------------------------------------------------- writer */

typedef struct wentry {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* NULL: streamed with st_writer_put */
    size_t nbytes;
    uint64_t offset;  /* in the file, once st_writer_begin has laid the tensors out */
    uint64_t written; /* bytes st_writer_put has written so far */
} wentry;

struct st_writer {
    int n, cap;
    wentry *e;
    int nmeta;
    char **mk, **mv;
    int begun;      /* the header is written and af is open */
    atomic_file af; /* the temp file of a streamed write */
    uint64_t pos;   /* af's file position */
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w) {
    if (!w) return;
    if (w->begun) atomic_abort(&w->af); /* begun and never finished: no half file stays */
    for (int i = 0; i < w->n; i++)
        free(w->e[i].name);
    free(w->e);
    for (int i = 0; i < w->nmeta; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->mk);
    free(w->mv);
    free(w);
}

ft_status st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim,
                        const int64_t *shape, const void *data, ft_error *err) {
    char where[1024];
    snprintf(where, sizeof where, "tensor \"%s\"", name);
    if ((unsigned)dtype >= ST_DTYPE_COUNT || ndim < 0 || ndim > ST_MAX_DIMS || !name[0] ||
        !strcmp(name, "__metadata__"))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "cannot write: bad dtype, name or number of dimensions (%d)", ndim);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->e[i].name, name))
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "added twice");
    uint64_t bytes = dtype_sizes[dtype];
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] && bytes > UINT64_MAX / (uint64_t)shape[i]))
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "bad shape");
        bytes *= (uint64_t)shape[i];
    }
    if (w->n == w->cap) {
        int nc = w->cap ? w->cap * 2 : 32;
        wentry *ne = realloc(w->e, sizeof *ne * (size_t)nc);
        if (!ne) return oom(err, where);
        w->e = ne;
        w->cap = nc;
    }
    wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->name = dup_str(name);
    if (!e->name) return oom(err, where);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        e->shape[i] = shape[i];
    e->data = data;
    e->nbytes = (size_t)bytes;
    w->n++;
    return FT_OK;
}

void st_writer_meta(st_writer *w, const char *key, const char *value) {
    for (int i = 0; i < w->nmeta; i++)
        if (!strcmp(w->mk[i], key)) {
            char *v = dup_str(value);
            if (v) {
                free(w->mv[i]);
                w->mv[i] = v;
            }
            return;
        }
    char **nk = realloc(w->mk, sizeof *nk * (size_t)(w->nmeta + 1));
    if (!nk) return;
    w->mk = nk;
    char **nv = realloc(w->mv, sizeof *nv * (size_t)(w->nmeta + 1));
    if (!nv) return;
    w->mv = nv;
    w->mk[w->nmeta] = dup_str(key);
    w->mv[w->nmeta] = dup_str(value);
    if (!w->mk[w->nmeta] || !w->mv[w->nmeta]) {
        free(w->mk[w->nmeta]);
        free(w->mv[w->nmeta]);
        return;
    }
    w->nmeta++;
}

/* A growable text buffer for the header. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int failed;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* A JSON string literal. */
static void sb_json(sbuf *b, const char *s) {
    sb_str(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char tmp[8];
        if (*c == '"' || *c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*c;
            sb_put(b, tmp, 2);
        } else if (*c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", *c);
            sb_str(b, tmp);
        } else {
            sb_put(b, (const char *)c, 1);
        }
    }
    sb_str(b, "\"");
}

static int went_cmp(const void *a, const void *b) {
    const wentry *x = a, *y = b;
    size_t sx = dtype_sizes[x->dtype], sy = dtype_sizes[y->dtype];
    if (sx != sy) return sx > sy ? -1 : 1; /* larger elements first keeps every tensor aligned */
    return strcmp(x->name, y->name);
}

/* Lay the tensors out (the Python library's order), write the header into PATH's temp file and
 * note where each tensor's bytes go. */
ft_status st_writer_begin(st_writer *w, const char *path, ft_error *err) {
    if (w->begun) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "writer already begun");
    qsort(w->e, (size_t)w->n, sizeof *w->e, went_cmp);
    sbuf b = {0};
    sb_str(&b, "{\"__metadata__\":{\"format\":");
    const char *fmt = "pt";
    for (int i = 0; i < w->nmeta; i++)
        if (!strcmp(w->mk[i], "format")) fmt = w->mv[i];
    sb_json(&b, fmt);
    for (int i = 0; i < w->nmeta; i++) {
        if (!strcmp(w->mk[i], "format")) continue;
        sb_str(&b, ",");
        sb_json(&b, w->mk[i]);
        sb_str(&b, ":");
        sb_json(&b, w->mv[i]);
    }
    sb_str(&b, "}");
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        wentry *e = &w->e[i];
        char tmp[64];
        sb_str(&b, ",");
        sb_json(&b, e->name);
        sb_str(&b, ":{\"dtype\":\"");
        sb_str(&b, dtype_names[e->dtype]);
        sb_str(&b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            snprintf(tmp, sizeof tmp, "%s%" PRId64, d ? "," : "", e->shape[d]);
            sb_str(&b, tmp);
        }
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off,
                 off + e->nbytes);
        sb_str(&b, tmp);
        e->offset = off; /* relative to the data buffer until the header's length is known */
        e->written = 0;
        off += e->nbytes;
    }
    sb_str(&b, "}");
    while (!b.failed && b.n % 8)
        sb_str(&b, " "); /* pad like the Python library */
    if (b.failed) {
        free(b.p);
        return oom(err, path);
    }
    ft_status st = atomic_open(&w->af, path, err);
    if (st) {
        free(b.p);
        return st;
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)b.n >> (8 * i));
    atomic_write(&w->af, len, 8);
    atomic_write(&w->af, b.p, b.n);
    for (int i = 0; i < w->n; i++)
        w->e[i].offset += 8 + (uint64_t)b.n;
    w->pos = 8 + (uint64_t)b.n;
    free(b.p);
    w->begun = 1;
    return FT_OK;
}

ft_status st_writer_put(st_writer *w, const char *name, const void *data, size_t n, ft_error *err) {
    wentry *e = NULL;
    for (int i = 0; i < w->n && !e; i++)
        if (!strcmp(w->e[i].name, name)) e = &w->e[i];
    char where[1024];
    snprintf(where, sizeof where, "tensor \"%s\"", name);
    if (!w->begun || !e)
        return ft_error_set(err, FT_ERR_RUNTIME, where, NULL,
                            !w->begun ? "written before st_writer_begin" : "never added");
    if (n > e->nbytes - e->written)
        return ft_error_set(err, FT_ERR_RUNTIME, where, NULL,
                            "%zu bytes more than its %zu (%" PRIu64 " written)", n, e->nbytes,
                            e->written);
    if (!n) return FT_OK;
    uint64_t at = e->offset + e->written;
    if (at != w->pos && !w->af.failed) {
        /* tensors may come in any order: the file is written where each one lies */
        if (fseeko(w->af.f, (off_t)at, SEEK_SET) != 0) w->af.failed = errno ? errno : EIO;
    }
    atomic_write(&w->af, data, n);
    w->pos = at + n;
    e->written += n;
    return FT_OK;
}

ft_status st_writer_finish(st_writer *w, ft_error *err) {
    if (!w->begun)
        return ft_error_set(err, FT_ERR_RUNTIME, "safetensors writer", NULL,
                            "finished before st_writer_begin");
    for (int i = 0; i < w->n; i++)
        if (w->e[i].written != w->e[i].nbytes) {
            char where[4400]; /* the path (up to 4096) and the name */
            snprintf(where, sizeof where, "%s: tensor \"%.200s\"", w->af.path, w->e[i].name);
            atomic_abort(&w->af);
            w->begun = 0;
            return ft_error_set(err, FT_ERR_RUNTIME, where, NULL,
                                "only %" PRIu64 " of its %zu bytes were written", w->e[i].written,
                                w->e[i].nbytes);
        }
    w->begun = 0;
    return atomic_close(&w->af, err);
}

ft_status st_writer_save(st_writer *w, const char *path, ft_error *err) {
    for (int i = 0; i < w->n; i++)
        if (!w->e[i].data && w->e[i].nbytes)
            return ft_error_set(err, FT_ERR_RUNTIME, w->e[i].name, NULL,
                                "added without data: write it with st_writer_put");
    ft_status st = st_writer_begin(w, path, err);
    for (int i = 0; i < w->n && !st; i++)
        st = st_writer_put(w, w->e[i].name, w->e[i].data, w->e[i].nbytes, err);
    if (st && w->begun) {
        atomic_abort(&w->af);
        w->begun = 0;
    }
    return st ? st : st_writer_finish(w, err);
}
