/*
 * json.c: JSON input over cJSON, with messages a person can act on.
 *
 * cJSON reports a parse failure as a pointer into the text; we turn it into line and column.
 * Field getters check presence and type and say which field of which file was wrong.
 */
#include "io/json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

ft_status file_read_all(const char *path, char **out, size_t *len, ft_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return ft_error_set(err, FT_ERR_INPUT, path, "check the path", "cannot open: %s",
                            strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return ft_error_set(err, FT_ERR_INPUT, path, NULL, "read error");
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return FT_OK;
}

ft_status json_parse(const char *text, size_t len, const char *where, cJSON **out,
                     ft_error *err) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j) {
        const char *p = cJSON_GetErrorPtr();
        if (!p || p < text || p > text + len) p = end ? end : text;
        int line = 1, col = 1;
        for (const char *c = text; c < p && c < text + len; c++) {
            if (*c == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        char w[600];
        snprintf(w, sizeof w, "%s:%d:%d", where, line, col);
        return ft_error_set(err, FT_ERR_INPUT, w, "the file must be valid JSON",
                            "JSON syntax error near line %d, column %d", line, col);
    }
    *out = j;
    return FT_OK;
}

ft_status json_load_file(const char *path, cJSON **out, ft_error *err) {
    char *text;
    size_t n;
    ft_status st = file_read_all(path, &text, &n, err);
    if (st) return st;
    st = json_parse(text, n, path, out, err);
    free(text);
    return st;
}

const char *json_type_name(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsArray(v)) return "array";
    if (cJSON_IsObject(v)) return "object";
    return "invalid";
}

static ft_status field_missing(const char *key, const char *where, const char *type,
                               ft_error *err) {
    char w[600];
    snprintf(w, sizeof w, "%s: field \"%s\"", where, key);
    char hint[300];
    snprintf(hint, sizeof hint, "add \"%.200s\" (%s) to the file", key, type);
    return ft_error_set(err, FT_ERR_INPUT, w, hint, "required field is missing (expected %s)",
                        type);
}

static ft_status field_wrong(const cJSON *v, const char *key, const char *where,
                             const char *type, ft_error *err) {
    char w[600];
    snprintf(w, sizeof w, "%s: field \"%s\"", where, key);
    char hint[300];
    snprintf(hint, sizeof hint, "\"%.200s\" must be %s", key, type);
    return ft_error_set(err, FT_ERR_INPUT, w, hint, "expected %s, found %s", type,
                        json_type_name(v));
}

ft_status json_get_int(const cJSON *obj, const char *key, int required, long def, long *out,
                       const char *where, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return field_missing(key, where, "an integer", err);
        *out = def;
        return FT_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > 9.0e15)
        return field_wrong(v, key, where, "an integer", err);
    *out = (long)v->valuedouble;
    return FT_OK;
}

ft_status json_get_double(const cJSON *obj, const char *key, int required, double def,
                          double *out, const char *where, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return field_missing(key, where, "a number", err);
        *out = def;
        return FT_OK;
    }
    if (!cJSON_IsNumber(v)) return field_wrong(v, key, where, "a number", err);
    *out = v->valuedouble;
    return FT_OK;
}

ft_status json_get_bool(const cJSON *obj, const char *key, int required, int def, int *out,
                        const char *where, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return field_missing(key, where, "true or false", err);
        *out = def;
        return FT_OK;
    }
    if (!cJSON_IsBool(v)) return field_wrong(v, key, where, "true or false", err);
    *out = cJSON_IsTrue(v);
    return FT_OK;
}

ft_status json_get_string(const cJSON *obj, const char *key, int required, const char *def,
                          const char **out, const char *where, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return field_missing(key, where, "a string", err);
        *out = def;
        return FT_OK;
    }
    if (!cJSON_IsString(v)) return field_wrong(v, key, where, "a string", err);
    *out = v->valuestring;
    return FT_OK;
}
