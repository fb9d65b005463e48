/*
 * quant4.c: NF4 / FP4 quantization as bitsandbytes does it (see quant.h for the rules).
 */
#include "ops/quant.h"

#include <math.h>
#include <string.h>

/* bitsandbytes.functional.get_4bit_type("nf4"), as float32 bit patterns. */
static const uint32_t nf4_bits[16] = {
    0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000,
    0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000};
/* bitsandbytes.functional.get_4bit_type("fp4"): sign bit 3, then a 3-bit magnitude. */
static const uint32_t fp4_bits[16] = {
    0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000,
    0x00000000, 0xbbaaaaab, 0xbf2aaaab, 0xbf800000, 0xbeaaaaab, 0xbf000000, 0xbe2aaaab, 0xbe800000};

typedef struct q4table {
    float code[16];
    int order[16];   /* indices of code in ascending value (stable for equal values) */
    float bounds[15];/* midpoints between consecutive sorted values, in fp32 */
} q4table;

static q4table tables[2];
static int tables_ready;

static void tables_init(void) {
    if (tables_ready) return;
    for (int t = 0; t < 2; t++) {
        q4table *q = &tables[t];
        const uint32_t *bits = t == QUANT_NF4 ? nf4_bits : fp4_bits;
        for (int i = 0; i < 16; i++) {
            memcpy(&q->code[i], &bits[i], 4);
            q->order[i] = i;
        }
        for (int i = 1; i < 16; i++) /* stable insertion sort */
            for (int j = i; j > 0 && q->code[q->order[j - 1]] > q->code[q->order[j]]; j--) {
                int tmp = q->order[j];
                q->order[j] = q->order[j - 1], q->order[j - 1] = tmp;
            }
        for (int i = 0; i < 15; i++)
            q->bounds[i] = (q->code[q->order[i]] + q->code[q->order[i + 1]]) / 2.0f;
    }
    tables_ready = 1;
}

const float *quant4_code(quant4_type t) {
    tables_init();
    return tables[t].code;
}

const char *quant4_name(quant4_type t) { return t == QUANT_NF4 ? "nf4" : "fp4"; }

static inline int bucket(const float *bounds, float x) {
    int i = 0;
    while (i < 15 && bounds[i] < x) i++;
    return i;
}

void quant4_quantize(quant4_type t, const float *x, size_t n, int blocksize, uint8_t *packed,
                     float *absmax) {
    tables_init();
    const q4table *q = &tables[t];
    size_t nb = quant4_blocks(n, blocksize), full = n - n % (size_t)blocksize;
    memset(packed, 0, quant4_packed_bytes(n));
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * (size_t)blocksize, hi = lo + (size_t)blocksize < n ? lo + (size_t)blocksize : n;
        float am = 0;
        for (size_t i = lo; i < hi; i++) am = fmaxf(am, fabsf(x[i]));
        /* full blocks store the true absmax and scale by 1/max(absmax, 1e-38); the last, partial
         * block stores the clamped one and divides (bitsandbytes' two code paths) */
        float clamped = am < 1e-38f ? 1e-38f : am;
        int partial = lo >= full;
        absmax[b] = partial ? clamped : am;
        float inv = 1.0f / clamped;
        for (size_t i = lo; i < hi; i++) {
            float s = partial ? x[i] / clamped : x[i] * inv;
            s = s < -1.0f ? -1.0f : s > 1.0f ? 1.0f : s;
            int c = q->order[bucket(q->bounds, s)];
            /* blocks are even-sized, so two threads never share a byte (odd n: last byte alone) */
            if (i % 2 == 0) packed[i / 2] |= (uint8_t)(c << 4);
            else packed[i / 2] |= (uint8_t)c;
        }
    }
    if (n % 2) { /* bitsandbytes pads an odd count with one 0.0, which quantizes like any value */
        packed[n / 2] |= (uint8_t)q->order[bucket(q->bounds, 0.0f)];
    }
}

void quant4_dequantize(quant4_type t, const uint8_t *packed, const float *absmax, size_t n,
                       int blocksize, float *out) {
    tables_init();
    const float *code = tables[t].code;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        int c = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 15;
        out[i] = code[c] * absmax[i / (size_t)blocksize];
    }
}
