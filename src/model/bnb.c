/*
 * bnb.c: one 4-bit linear weight of a bitsandbytes checkpoint (the layout bnb.h describes) ->
 * a qtensor that points into the safetensors mapping.
 *
 * Everything the quant_state JSON says is checked against the tensors beside it before a byte
 * is used: quant_type against the tensor name's suffix and the quant_map values (which must be
 * bitsandbytes' own NF4/FP4 codes: ftune dequantizes with its table, not the file's), shape
 * against the model's (rows, cols), blocksize against the number of absmax entries, and, when
 * double-quantized, the nested block size, dtype and offset against nested_absmax and
 * nested_quant_map. F32 parts are borrowed when the mapping leaves them 4-byte aligned
 * (safetensors packs tensors back to back, so a U8 tensor of odd length before them shifts
 * them); otherwise they are copied into one owned block.
 */
#include "model/bnb.h"
#include "io/json.h"
#include "ops/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BNB_HINT                                                                                   \
    "re-save the model with transformers (BitsAndBytesConfig(load_in_4bit=True)) "                 \
    "or run 'ftune quantize' on the full-precision model"

static const char *const state_suffix[2] = {"nf4", "fp4"};

int bnb_has_weight(const st_set *s, const char *name) {
    char key[512];
    for (int t = 0; t < 2; t++) {
        snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__%s", name, state_suffix[t]);
        if (st_find(s, key)) return 1;
    }
    return 0;
}

static const char *file_of(const st_set *s, const char *name) {
    const st_tensor *t = st_find(s, name);
    return t && t->file ? t->file : "checkpoint";
}

/* NAME+suffix, which must exist with this dtype, rank 1 of `len` values (or [len0, len1]). */
static ft_status part(const st_set *s, const char *name, const char *suffix, st_dtype dtype,
                      int ndim, int64_t d0, int64_t d1, const st_tensor **out, ft_error *err) {
    char key[512], where[1024];
    snprintf(key, sizeof key, "%s%s", name, suffix);
    const st_tensor *t = st_find(s, key);
    snprintf(where, sizeof where, "%s: tensor \"%s\"", t ? t->file : file_of(s, name), key);
    if (!t)
        return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT,
                            "missing: a bitsandbytes 4-bit weight needs it beside \"%s\"", name);
    if (t->dtype != dtype)
        return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT, "dtype %s, expected %s",
                            st_dtype_name(t->dtype), st_dtype_name(dtype));
    int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char found[128] = "[";
        for (int i = 0; i < t->ndim; i++)
            snprintf(found + strlen(found), sizeof found - strlen(found), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        strncat(found, "]", sizeof found - strlen(found) - 1);
        if (ndim == 1)
            return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT,
                                "shape %s, expected [%lld] (from the quant_state)", found,
                                (long long)d0);
        return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT,
                            "shape %s, expected [%lld, %lld] (from the quant_state)", found,
                            (long long)d0, (long long)d1);
    }
    *out = t;
    return FT_OK;
}

static int valid_blocksize(long b) { return b >= 32 && b <= 4096 && !(b & (b - 1)); }

/* The parsed quant_state of one weight. */
typedef struct bnb_state {
    quant4_type type;
    long blocksize, rows, cols;
    int nested;
    long nested_blocksize;
    double offset;
} bnb_state;

static ft_status read_state(const st_set *s, const char *name, bnb_state *q, ft_error *err) {
    char key[512], where[1024];
    const st_tensor *t = NULL;
    int found = 0;
    for (int i = 0; i < 2; i++) {
        snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__%s", name, state_suffix[i]);
        const st_tensor *c = st_find(s, key);
        if (c) t = c, q->type = i == 0 ? QUANT_NF4 : QUANT_FP4, found++;
    }
    if (!found) {
        snprintf(where, sizeof where, "%s: tensor \"%s.quant_state.bitsandbytes__nf4\"",
                 file_of(s, name), name);
        return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT,
                            "missing (nor __fp4): \"%s\" is not a bitsandbytes 4-bit weight", name);
    }
    snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__%s", name, quant4_name(q->type));
    snprintf(where, sizeof where, "%s: tensor \"%s\"", t->file, key);
    if (found > 1)
        return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT,
                            "both an __nf4 and an __fp4 quant_state are present");
    if (t->dtype != ST_U8 || t->ndim != 1)
        return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT,
                            "expected a 1-D U8 tensor holding JSON, found %s of rank %d",
                            st_dtype_name(t->dtype), t->ndim);
    cJSON *j = NULL;
    ft_status st = json_parse((const char *)t->data, t->nbytes, where, &j, err);
    if (st) return st;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT, "the JSON is not an object");
    }
    const char *qt = NULL, *dtype = NULL, *ndtype = NULL;
    char field[1100];
    st = json_get_string(j, "quant_type", 1, NULL, &qt, where, err);
    if (!st && strcmp(qt, quant4_name(q->type))) {
        snprintf(field, sizeof field, "%s: field quant_type", where);
        st = ft_error_set(err, FT_ERR_INPUT, field, "ftune reads nf4 and fp4 (the tensor's suffix)",
                          "\"%s\", expected \"%s\"", qt, quant4_name(q->type));
    }
    if (!st) st = json_get_int(j, "blocksize", 1, 0, &q->blocksize, where, err);
    if (!st && !valid_blocksize(q->blocksize)) {
        snprintf(field, sizeof field, "%s: field blocksize", where);
        st = ft_error_set(err, FT_ERR_INPUT, field, BNB_HINT,
                          "%ld, expected a power of two from 32 to 4096", q->blocksize);
    }
    if (!st) st = json_get_string(j, "dtype", 1, NULL, &dtype, where, err);
    if (!st && strcmp(dtype, "float32") && strcmp(dtype, "bfloat16") && strcmp(dtype, "float16")) {
        snprintf(field, sizeof field, "%s: field dtype", where);
        st = ft_error_set(err, FT_ERR_INPUT, field, BNB_HINT,
                          "\"%s\", expected float32, bfloat16 or float16", dtype);
    }
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    if (!st) {
        const cJSON *a = cJSON_IsArray(shape) ? shape->child : NULL, *b = a ? a->next : NULL;
        int ok = a && b && !b->next && cJSON_IsNumber(a) && cJSON_IsNumber(b) &&
                 a->valuedouble >= 1 && b->valuedouble >= 1 && a->valuedouble < 1e9 &&
                 b->valuedouble < 1e9 && a->valuedouble == floor(a->valuedouble) &&
                 b->valuedouble == floor(b->valuedouble);
        if (!ok) {
            snprintf(field, sizeof field, "%s: field shape", where);
            st = ft_error_set(err, FT_ERR_INPUT, field, BNB_HINT,
                              "expected [rows, cols] of positive integers");
        } else {
            q->rows = (long)a->valuedouble, q->cols = (long)b->valuedouble;
        }
    }
    q->nested = cJSON_GetObjectItemCaseSensitive(j, "nested_offset") != NULL ||
                cJSON_GetObjectItemCaseSensitive(j, "nested_blocksize") != NULL;
    if (!st && q->nested) {
        st = json_get_int(j, "nested_blocksize", 1, 0, &q->nested_blocksize, where, err);
        if (!st && !valid_blocksize(q->nested_blocksize)) {
            snprintf(field, sizeof field, "%s: field nested_blocksize", where);
            st = ft_error_set(err, FT_ERR_INPUT, field, BNB_HINT,
                              "%ld, expected a power of two from 32 to 4096 (bitsandbytes: 256)",
                              q->nested_blocksize);
        }
        if (!st) st = json_get_double(j, "nested_offset", 1, 0, &q->offset, where, err);
        if (!st && !isfinite(q->offset)) {
            snprintf(field, sizeof field, "%s: field nested_offset", where);
            st = ft_error_set(err, FT_ERR_INPUT, field, BNB_HINT, "not a finite number");
        }
        if (!st) st = json_get_string(j, "nested_dtype", 0, "float32", &ndtype, where, err);
        if (!st && strcmp(ndtype, "float32")) {
            snprintf(field, sizeof field, "%s: field nested_dtype", where);
            st = ft_error_set(err, FT_ERR_INPUT, field, BNB_HINT, "\"%s\", expected float32",
                              ndtype);
        }
    }
    cJSON_Delete(j);
    return st;
}

ft_status bnb_weight_shape(const st_set *s, const char *name, int *rows, int *cols, ft_error *err) {
    bnb_state q = {0};
    ft_status st = read_state(s, name, &q, err);
    if (!st) *rows = (int)q.rows, *cols = (int)q.cols;
    return st;
}

static int aligned4(const void *p) { return ((uintptr_t)p & 3) == 0; }

ft_status bnb_load_weight(const st_set *s, const char *name, int rows, int cols, qtensor *out,
                          ft_error *err) {
    memset(out, 0, sizeof *out);
    bnb_state q = {0};
    ft_status st = read_state(s, name, &q, err);
    if (st) return st;
    char where[1024];
    if (q.rows != rows || q.cols != cols) {
        snprintf(where, sizeof where, "%s: tensor \"%s.quant_state.bitsandbytes__%s\": field shape",
                 file_of(s, name), name, quant4_name(q.type));
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "the checkpoint does not match the architecture in config.json",
                            "[%ld, %ld], expected [%d, %d]", q.rows, q.cols, rows, cols);
    }
    size_t n = (size_t)rows * (size_t)cols, nb = quant4_blocks(n, (int)q.blocksize);
    const st_tensor *packed, *absmax, *qmap, *nabs = NULL, *nmap = NULL;
    if ((st = part(s, name, "", ST_U8, 2, (int64_t)quant4_packed_bytes(n), 1, &packed, err)))
        return st;
    /* a wrong blocksize shows as an absmax of the wrong length */
    if ((st = part(s, name, ".absmax", q.nested ? ST_U8 : ST_F32, 1, (int64_t)nb, 0, &absmax, err)))
        return st;
    if ((st = part(s, name, ".quant_map", ST_F32, 1, 16, 0, &qmap, err))) return st;
    size_t nn = 0;
    if (q.nested) {
        nn = quant4_blocks(nb, (int)q.nested_blocksize);
        if ((st = part(s, name, ".nested_absmax", ST_F32, 1, (int64_t)nn, 0, &nabs, err)) ||
            (st = part(s, name, ".nested_quant_map", ST_F32, 1, 256, 0, &nmap, err)))
            return st;
    }
    const float *code = quant4_code(q.type);
    if (memcmp(qmap->data, code, 16 * sizeof(float))) {
        snprintf(where, sizeof where, "%s: tensor \"%s.quant_map\"", qmap->file, qmap->name);
        return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT,
                            "the values are not bitsandbytes' %s code (a custom code is not "
                            "supported)",
                            quant4_name(q.type));
    }
    /* F32 parts that are not 4-byte aligned in the mapping are copied */
    const st_tensor *f32[3] = {q.nested ? NULL : absmax, nabs, nmap};
    size_t copy = 0;
    for (int i = 0; i < 3; i++)
        if (f32[i] && !aligned4(f32[i]->data)) copy += f32[i]->nbytes;
    float *own = NULL;
    if (copy && !(own = malloc(copy))) {
        snprintf(where, sizeof where, "%s: tensor \"%s\"", packed->file, name);
        return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
    }
    const float *ptr[3] = {0};
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        if (!f32[i]) continue;
        if (aligned4(f32[i]->data)) {
            ptr[i] = f32[i]->data;
        } else {
            memcpy(own + at, f32[i]->data, f32[i]->nbytes);
            ptr[i] = own + at;
            at += f32[i]->nbytes / sizeof(float);
        }
    }
    for (size_t i = 0; i < nn; i++)
        if (!isfinite(ptr[1][i]) || ptr[1][i] < 0) {
            snprintf(where, sizeof where, "%s: tensor \"%s\"", nabs->file, nabs->name);
            free(own);
            return ft_error_set(err, FT_ERR_INPUT, where, BNB_HINT,
                                "value %zu is %g, expected a finite non-negative block maximum", i,
                                (double)ptr[1][i]);
        }
    out->fmt = q.type == QUANT_NF4 ? QF_NF4 : QF_FP4;
    out->rows = rows, out->cols = cols;
    out->blocksize = (int)q.blocksize;
    out->data = packed->data;
    out->owned = own;
    if (q.nested) {
        out->absmax_q = absmax->data;
        out->nested_absmax = ptr[1];
        out->nested_code = ptr[2];
        out->nested_blocksize = (int)q.nested_blocksize;
        out->offset = (float)q.offset; /* the JSON holds the float32 offset exactly */
    } else {
        out->absmax = ptr[0];
    }
    return FT_OK;
}
