/*
 * st_stream_test.c: the streamed safetensors write (st_writer_begin / _put / _finish).
 *
 * - The same tensors written by st_writer_save and streamed (tensors in reverse order, each in
 *   uneven pieces, a 0-size tensor never put) give the same file, byte for byte: st_writer_save
 *   is the reference the quantizer's output is checked against in the peer tests.
 * - Misuse is an error, never a bad file: a put past a tensor's size, a put to an unknown name,
 *   a finish with a tensor short of bytes (no file at the path, no temp file left), and a writer
 *   freed between begin and finish (its temp file removed).
 */
#include "io/safetensors.h"
#include "test.h"

#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

/* Files in dir whose name starts with prefix. */
static int count_files(const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    if (d) closedir(d);
    return n;
}

enum { NT = 5 };
static const char *names[NT] = {"w.big", "a.bf16", "m.u8", "z.empty", "b.f32"};
static const st_dtype types[NT] = {ST_F32, ST_BF16, ST_U8, ST_F32, ST_F32};
static const int64_t shapes[NT][2] = {{37, 29}, {3, 1001}, {1, 4099}, {0, 5}, {7, 1}};

static size_t nbytes(int i) {
    return (size_t)(shapes[i][0] * shapes[i][1]) * st_dtype_size(types[i]);
}

static st_writer *declared(unsigned char **data, int with_data) {
    st_writer *w = st_writer_new();
    ft_error err = {0};
    for (int i = 0; i < NT; i++)
        CHECK(st_writer_add(w, names[i], types[i], 2, shapes[i], with_data ? data[i] : NULL,
                            &err) == FT_OK,
              "add %s", names[i]);
    st_writer_meta(w, "note", "streamed");
    return w;
}

static void test_same_bytes(unsigned char **data) {
    char ref[300], str[300];
    snprintf(ref, sizeof ref, "%s/saved.safetensors", dir);
    snprintf(str, sizeof str, "%s/streamed.safetensors", dir);
    ft_error err = {0};
    st_writer *w = declared(data, 1);
    CHECK(st_writer_save(w, ref, &err) == FT_OK, "save: %s", err.what);
    st_writer_free(w);

    w = declared(data, 0);
    CHECK(st_writer_begin(w, str, &err) == FT_OK, "begin: %s", err.what);
    for (int i = NT - 1; i >= 0; i--) { /* reverse order, pieces of 1, 2, 3, ... bytes */
        size_t n = nbytes(i), at = 0;
        for (size_t piece = 1; at < n; piece++) {
            size_t k = piece < n - at ? piece : n - at;
            CHECK(st_writer_put(w, names[i], data[i] + at, k, &err) == FT_OK, "put %s", names[i]);
            at += k;
        }
    }
    CHECK(st_writer_finish(w, &err) == FT_OK, "finish: %s", err.what);
    st_writer_free(w);

    size_t na = 0, nb = 0;
    unsigned char *a = test_read_file(ref, &na), *b = test_read_file(str, &nb);
    CHECK(a && b && na == nb && !memcmp(a, b, na),
          "streamed file equals the saved one (%zu, %zu bytes)", na, nb);
    free(a);
    free(b);
    CHECK(count_files("streamed.safetensors.tmp") == 0, "no temp file left");
}

static void test_misuse(unsigned char **data) {
    char path[300];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    ft_error err = {0};
    st_writer *w = declared(data, 0);
    CHECK(st_writer_put(w, names[0], data[0], 4, &err) != FT_OK, "put before begin refused");
    CHECK(st_writer_begin(w, path, &err) == FT_OK, "begin: %s", err.what);
    CHECK(st_writer_put(w, "nope", data[0], 4, &err) != FT_OK && strstr(err.what, "never added"),
          "unknown name refused: %s", err.what);
    CHECK(st_writer_put(w, names[4], data[4], nbytes(4) + 1, &err) != FT_OK &&
              strstr(err.where, names[4]),
          "a put past the tensor's size refused, naming it: %s", err.where);
    for (int i = 0; i < NT; i++)
        if (i != 1) CHECK(st_writer_put(w, names[i], data[i], nbytes(i), &err) == FT_OK, "put");
    CHECK(st_writer_put(w, names[1], data[1], 10, &err) == FT_OK, "a partial put");
    CHECK(st_writer_finish(w, &err) != FT_OK && strstr(err.where, names[1]) &&
              strstr(err.what, "only 10 of its"),
          "finish with a short tensor fails naming it: %s: %s", err.where, err.what);
    CHECK(access(path, F_OK) != 0, "no output file after a failed finish");
    CHECK(count_files("bad.safetensors") == 0, "no temp file after a failed finish");
    st_writer_free(w);

    w = declared(data, 0);
    CHECK(st_writer_begin(w, path, &err) == FT_OK, "begin: %s", err.what);
    CHECK(count_files("bad.safetensors.tmp") == 1, "the temp file exists while writing");
    st_writer_free(w);
    CHECK(count_files("bad.safetensors") == 0, "freed between begin and finish: temp file removed");

    w = declared(data, 0);
    CHECK(st_writer_save(w, path, &err) != FT_OK && access(path, F_OK) != 0,
          "save refuses tensors added without data");
    st_writer_free(w);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ftune-st-stream-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    unsigned char *data[NT];
    uint32_t s = 12345;
    for (int i = 0; i < NT; i++) {
        data[i] = malloc(nbytes(i) + 1);
        for (size_t k = 0; k < nbytes(i); k++) {
            s = s * 1664525u + 1013904223u;
            data[i][k] = (unsigned char)(s >> 24);
        }
    }
    test_same_bytes(data);
    test_misuse(data);
    for (int i = 0; i < NT; i++)
        free(data[i]);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary("st_stream");
}
