/*
 * hash.h: FNV-1a 64 over bytes, for the fingerprints of settings and data that tell a resumed
 * run it is continuing the same work (train/, data/). Not for security.
 */
#ifndef FT_BASE_HASH_H
#define FT_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_START 0xcbf29ce484222325ull /* FNV-1a 64's offset basis */

/* Continue the hash h over n bytes. */
uint64_t hash_bytes(const void *data, size_t n, uint64_t h);
/* The hash of n bytes from start, as 16 lowercase hex digits and a NUL. */
void hash_hex(const void *data, size_t n, uint64_t start, char out[17]);

#endif
