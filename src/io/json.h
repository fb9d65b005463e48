/*
 * json.h: reading JSON files (over cJSON) with errors that name the file, line and column,
 * and typed field getters whose errors name the field and the expected type.
 */
#ifndef FT_IO_JSON_H
#define FT_IO_JSON_H

#include "ftune.h"
#include <cjson/cJSON.h>

/* Read a whole file into a NUL-terminated buffer (caller frees). */
ft_status file_read_all(const char *path, char **out, size_t *len, ft_error *err);

/* Parse text as JSON; on a syntax error the message gives where:LINE:COL. */
ft_status json_parse(const char *text, size_t len, const char *where, cJSON **out, ft_error *err);
/* Read and parse a JSON file; the caller frees *out with cJSON_Delete. */
ft_status json_load_file(const char *path, cJSON **out, ft_error *err);

/* Typed getters for object fields. If the field is absent (or JSON null): required ones are an
 * FT_ERR_INPUT error naming `where` and the key, optional ones leave *out = def. A field of the
 * wrong type is always an error. */
ft_status json_get_int(const cJSON *obj, const char *key, int required, long def, long *out,
                       const char *where, ft_error *err);
ft_status json_get_double(const cJSON *obj, const char *key, int required, double def,
                          double *out, const char *where, ft_error *err);
ft_status json_get_bool(const cJSON *obj, const char *key, int required, int def, int *out,
                        const char *where, ft_error *err);
/* *out points into obj (not copied); def may be NULL. */
ft_status json_get_string(const cJSON *obj, const char *key, int required, const char *def,
                          const char **out, const char *where, ft_error *err);

/* Name of a JSON value's type, for messages: "string", "number", "object", ... */
const char *json_type_name(const cJSON *v);

#endif
