/*
 * rand.h: the counter-based random numbers every part of ftune draws from.
 *
 * splitmix64's finalizer (Steele, Lea, Flood, "Fast splittable pseudorandom number generators",
 * OOPSLA 2014) maps a 64-bit counter to a well-mixed 64-bit value, so the n-th number of a stream
 * is mix(seed ^ mix(n)): the same numbers for the same (seed, index) whatever the thread count or
 * the order of the draws. LoRA init, model init, shuffling, data mixing and dropout all use it.
 */
#ifndef FT_BASE_RAND_H
#define FT_BASE_RAND_H

#include <stdint.h>

static inline uint64_t rand_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A uniform double in [0, 1) with 53 random bits: number i of the stream seed. */
static inline double rand_uniform01(uint64_t seed, uint64_t i) {
    return (double)(rand_mix64(seed ^ rand_mix64(i)) >> 11) * (1.0 / 9007199254740992.0);
}

#endif
