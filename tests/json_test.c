/* json_test.c: the JSON wrapper reports syntax errors with line and column, and typed getters
 * name the field and the type they expected. */
#include "io/json.h"
#include "test.h"

#include <string.h>

int main(void) {
    ft_error err;
    cJSON *j = NULL;
    const char *bad = "{\n  \"a\": 1,\n  \"b\": [1, 2,, 3]\n}";
    int st = json_parse(bad, strlen(bad), "x.json", &j, &err);
    CHECK(st == FT_ERR_INPUT, "status %d", st);
    CHECK(strstr(err.where, "x.json:3:") != NULL, "where = %s", err.where);

    const char *good = "{\"n\": 5, \"f\": 1.5, \"s\": \"hi\", \"b\": true, \"z\": null}";
    st = json_parse(good, strlen(good), "g.json", &j, &err);
    CHECK(st == FT_OK, "parse good");
    long n;
    double f;
    const char *s;
    int b;
    CHECK(json_get_int(j, "n", 1, 0, &n, "g.json", &err) == FT_OK && n == 5, "int");
    CHECK(json_get_int(j, "f", 1, 0, &n, "g.json", &err) == FT_ERR_INPUT, "1.5 is not an int");
    CHECK(strstr(err.where, "\"f\"") && strstr(err.what, "integer"), "%s %s", err.where, err.what);
    CHECK(json_get_double(j, "f", 1, 0, &f, "g.json", &err) == FT_OK && f == 1.5, "double");
    CHECK(json_get_string(j, "s", 1, NULL, &s, "g.json", &err) == FT_OK && !strcmp(s, "hi"), "str");
    CHECK(json_get_bool(j, "b", 1, 0, &b, "g.json", &err) == FT_OK && b == 1, "bool");
    CHECK(json_get_int(j, "z", 0, 7, &n, "g.json", &err) == FT_OK && n == 7, "null -> default");
    CHECK(json_get_int(j, "missing", 1, 0, &n, "g.json", &err) == FT_ERR_INPUT, "missing");
    CHECK(strstr(err.what, "missing") != NULL, "%s", err.what);
    cJSON_Delete(j);
    return test_summary("json");
}
