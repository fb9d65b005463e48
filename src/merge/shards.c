/*
 * shards.c: save_pretrained's shard layout (see shards.h).
 *
 * The order: a model loaded with from_pretrained (as one is for merge_and_unload) saves its state
 * dict through revert_weight_conversion (transformers/core_model_loading.py), which sorts the
 * names by dot_natural_key: dot-separated parts compared one by one, a part of digits as a
 * number and before any other part, other parts as text with a run of trailing digits compared
 * as a number ("shard_2" before "shard_11"), a name that is a prefix of another first.
 */
#include "merge/shards.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int all_digits(const char *p, size_t n) {
    if (!n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)p[i])) return 0;
    return 1;
}

/* Two runs of decimal digits as numbers (any length). */
static int cmp_number(const char *a, size_t na, const char *b, size_t nb) {
    while (na > 1 && *a == '0')
        a++, na--;
    while (nb > 1 && *b == '0')
        b++, nb--;
    if (na != nb) return na < nb ? -1 : 1;
    return memcmp(a, b, na);
}

/* One part: Python's (1, text) or (1, text, int(trailing digits)). */
static int cmp_text_part(const char *a, size_t na, const char *b, size_t nb) {
    size_t ta = na, tb = nb;
    while (ta && isdigit((unsigned char)a[ta - 1]))
        ta--;
    while (tb && isdigit((unsigned char)b[tb - 1]))
        tb--;
    size_t m = ta < tb ? ta : tb;
    int c = memcmp(a, b, m);
    if (c) return c < 0 ? -1 : 1;
    if (ta != tb) return ta < tb ? -1 : 1;
    int da = ta < na, db = tb < nb; /* has a number after the text */
    if (da != db) return da ? 1 : -1;
    return da ? cmp_number(a + ta, na - ta, b + tb, nb - tb) : 0;
}

int shard_name_cmp(const char *a, const char *b) {
    for (;;) {
        size_t na = strcspn(a, "."), nb = strcspn(b, ".");
        int ga = all_digits(a, na), gb = all_digits(b, nb), c;
        if (ga != gb)
            c = ga ? -1 : 1;
        else
            c = ga ? cmp_number(a, na, b, nb) : cmp_text_part(a, na, b, nb);
        if (c) return c < 0 ? -1 : 1;
        a += na, b += nb;
        if (!*a || !*b) return *a ? 1 : *b ? -1 : 0;
        a++, b++;
    }
}

static int cmp_tensor(const void *x, const void *y) {
    return shard_name_cmp(((const shard_tensor *)x)->name, ((const shard_tensor *)y)->name);
}

void shard_sort(shard_tensor *t, int n) { qsort(t, (size_t)n, sizeof *t, cmp_tensor); }

ft_status shard_parse_size(const char *text, uint64_t *out, ft_error *err) {
    const char *where = "option --max-shard-size";
    const char *hint = "a size such as 5GB, 500MB or 100KB (decimal units, as transformers'), "
                       "or a number of bytes";
    char buf[64];
    size_t n = strlen(text);
    while (n && isspace((unsigned char)text[n - 1]))
        n--;
    while (n && isspace((unsigned char)*text))
        text++, n--;
    if (!n || n >= sizeof buf)
        return ft_error_set(err, FT_ERR_INPUT, where, hint, "cannot read \"%s\"", text);
    memcpy(buf, text, n);
    buf[n] = 0;
    char *end;
    if (all_digits(buf, n)) {
        errno = 0;
        unsigned long long v = strtoull(buf, &end, 10);
        if (errno || !v)
            return ft_error_set(err, FT_ERR_INPUT, where, hint, "cannot read \"%s\"", buf);
        *out = v;
        return FT_OK;
    }
    static const struct {
        const char *unit;
        double mult;
    } units[] = {{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}};
    if (n < 3) return ft_error_set(err, FT_ERR_INPUT, where, hint, "cannot read \"%s\"", buf);
    double mult = 0;
    for (int i = 0; i < 4; i++)
        if (toupper((unsigned char)buf[n - 2]) == units[i].unit[0] &&
            toupper((unsigned char)buf[n - 1]) == units[i].unit[1])
            mult = units[i].mult;
    buf[n - 2] = 0;
    errno = 0;
    double v = strtod(buf, &end);
    while (*end && isspace((unsigned char)*end))
        end++;
    if (!mult || errno || end == buf || *end || !(v > 0) || v * mult >= 1.8e19)
        return ft_error_set(err, FT_ERR_INPUT, where, hint, "cannot read \"%s\"", text);
    *out = (uint64_t)(v * mult); /* Python's int(value * multiplier) truncates too */
    return *out ? FT_OK
                : ft_error_set(err, FT_ERR_INPUT, where, hint, "\"%s\" is less than a byte", text);
}

int shard_split(shard_tensor *t, int n, uint64_t max_bytes) {
    int next = 0, open_from = -1;
    uint64_t open_size = 0;
    /* open shard members are marked -1 until it closes and gets its number */
    for (int i = 0; i < n; i++) {
        if (t[i].nbytes > max_bytes) { /* alone, numbered before the open shard */
            t[i].shard = next++;
            continue;
        }
        if (open_from >= 0 && open_size + t[i].nbytes > max_bytes) {
            for (int j = open_from; j < i; j++)
                if (t[j].shard == -1) t[j].shard = next;
            next++;
            open_from = -1;
            open_size = 0;
        }
        if (open_from < 0) open_from = i;
        t[i].shard = -1;
        open_size += t[i].nbytes;
    }
    if (open_from >= 0) {
        for (int j = open_from; j < n; j++)
            if (t[j].shard == -1) t[j].shard = next;
        next++;
    }
    return next;
}

void shard_file_name(char *buf, size_t size, int i, int count) {
    if (count <= 1)
        snprintf(buf, size, "model.safetensors");
    else
        snprintf(buf, size, "model-%05d-of-%05d.safetensors", i + 1, count);
}

static int cmp_name_ptr(const void *x, const void *y) {
    return strcmp((*(const shard_tensor *const *)x)->name, (*(const shard_tensor *const *)y)->name);
}

/* A JSON string as Python's json.dumps writes it (ensure_ascii: non-ASCII as \uXXXX escapes of
 * UTF-16 code units). */
static size_t json_str(char *dst, const char *s) {
    size_t k = 0;
    dst[k++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            dst[k++] = '\\', dst[k++] = (char)c, p++;
        } else if (c >= 0x20 && c < 0x7f) {
            dst[k++] = (char)c, p++;
        } else if (c < 0x80) {
            static const char *const esc[] = {
                [8] = "\\b", [9] = "\\t", [10] = "\\n", [12] = "\\f", [13] = "\\r"};
            if (c < 14 && esc[c])
                k += (size_t)sprintf(dst + k, "%s", esc[c]);
            else
                k += (size_t)sprintf(dst + k, "\\u%04x", c);
            p++;
        } else { /* UTF-8 -> code point -> \u escapes */
            int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            unsigned cp = c & (0x7fu >> len);
            for (int i = 1; i < len && p[i]; i++)
                cp = (cp << 6) | (p[i] & 0x3fu);
            p += len;
            if (cp >= 0x10000) {
                cp -= 0x10000;
                k += (size_t)sprintf(dst + k, "\\u%04x\\u%04x", 0xd800 + (cp >> 10),
                                     0xdc00 + (cp & 0x3ff));
            } else {
                k += (size_t)sprintf(dst + k, "\\u%04x", cp);
            }
        }
    }
    dst[k++] = '"';
    dst[k] = 0;
    return k;
}

char *shard_index_json(const shard_tensor *t, int n, int count) {
    uint64_t total_size = 0, total_params = 0;
    size_t cap = 256;
    for (int i = 0; i < n; i++) {
        total_size += t[i].nbytes;
        uint64_t e = 1;
        for (int d = 0; d < t[i].ndim; d++)
            e *= (uint64_t)t[i].shape[d];
        total_params += e;
        cap += 12 * strlen(t[i].name) + 80;
    }
    const shard_tensor **by_name = malloc(sizeof *by_name * (size_t)(n ? n : 1));
    char *s = malloc(cap);
    if (!by_name || !s) {
        free(by_name);
        free(s);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        by_name[i] = &t[i];
    qsort(by_name, (size_t)n, sizeof *by_name, cmp_name_ptr);
    size_t k = (size_t)sprintf(s,
                               "{\n  \"metadata\": {\n    \"total_parameters\": %llu,\n"
                               "    \"total_size\": %llu\n  },\n  \"weight_map\": {",
                               (unsigned long long)total_params, (unsigned long long)total_size);
    for (int i = 0; i < n; i++) {
        char file[64];
        shard_file_name(file, sizeof file, by_name[i]->shard, count);
        k += (size_t)sprintf(s + k, "%s\n    ", i ? "," : "");
        k += json_str(s + k, by_name[i]->name);
        k += (size_t)sprintf(s + k, ": \"%s\"", file);
    }
    sprintf(s + k, "%s}\n}\n", n ? "\n  " : "");
    free(by_name);
    return s;
}

ft_status shard_copy_tensor(const st_tensor *t, st_writer *w, ft_error *err) {
    const size_t step = (size_t)4 << 20;
    for (size_t at = 0; at < t->nbytes; at += step) {
        st_tensor piece = *t;
        piece.data = (const uint8_t *)t->data + at;
        piece.nbytes = t->nbytes - at < step ? t->nbytes - at : step;
        ft_status st = st_writer_put(w, t->name, piece.data, piece.nbytes, err);
        if (st) return st;
        st_release_pages(&piece);
    }
    return FT_OK;
}

ft_status shard_writer_open(const shard_tensor *plan, int n, int s, const char *path,
                            st_writer **out, ft_error *err) {
    st_writer *wr = *out = st_writer_new();
    if (!wr) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    ft_status st = FT_OK;
    for (int i = 0; i < n && !st; i++)
        if (plan[i].shard == s)
            st = st_writer_add(wr, plan[i].name, plan[i].dtype, plan[i].ndim, plan[i].shape, NULL,
                               err);
    return st ? st : st_writer_begin(wr, path, err);
}
