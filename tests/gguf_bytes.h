/*
 * gguf_bytes.h: a byte writer for the GGUF files that tests/gguf_test.c and
 * tests/gguf_model_test.c build by hand (little-endian scalars, GGUF strings as u64 length +
 * bytes, a metadata key as its string + value type). Test code only: a failed allocation aborts.
 */
#ifndef FT_TESTS_GGUF_BYTES_H
#define FT_TESTS_GGUF_BYTES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static inline void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static inline void u8(buf *b, uint8_t v) { put(b, &v, 1); }
static inline void u16(buf *b, uint16_t v) { put(b, &v, 2); }
static inline void u32(buf *b, uint32_t v) { put(b, &v, 4); }
static inline void u64(buf *b, uint64_t v) { put(b, &v, 8); }
static inline void f32(buf *b, float v) { put(b, &v, 4); }
static inline void str(buf *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}
static inline void key(buf *b, const char *k, uint32_t type) {
    str(b, k);
    u32(b, type);
}

#endif
