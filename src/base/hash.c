/*
 * hash.c: FNV-1a 64 (Fowler, Noll, Vo; prime 0x100000001b3), see hash.h.
 */
#include "base/hash.h"

#include <stdio.h>

uint64_t hash_bytes(const void *data, size_t n, uint64_t h) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

void hash_hex(const void *data, size_t n, uint64_t start, char out[17]) {
    snprintf(out, 17, "%016llx", (unsigned long long)hash_bytes(data, n, start));
}
