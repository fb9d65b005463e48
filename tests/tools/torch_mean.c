/*
 * torch_mean: a driver for tests/peers/test_quantize_bnb.py. Reads raw float32 values from FILE
 * and prints, for each thread count T given, the bits (8 hex digits) of quant4_torch_mean over
 * them: the offset ftune's double quantization takes, to be compared with torch.mean's bits.
 *
 *   torch_mean FILE T [T ...]
 */
#include "ops/quant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: torch_mean FILE T [T ...]\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    size_t n = (size_t)bytes / sizeof(float);
    float *x = malloc(n ? n * sizeof(float) : 1);
    if (!x || fread(x, sizeof(float), n, f) != n) {
        fprintf(stderr, "%s: cannot read %zu floats\n", argv[1], n);
        return 2;
    }
    fclose(f);
    for (int a = 2; a < argc; a++) {
        float m = quant4_torch_mean(x, n, atoi(argv[a]));
        uint32_t u;
        memcpy(&u, &m, sizeof u);
        printf("%08x%c", (unsigned)u, a + 1 < argc ? ' ' : '\n');
    }
    free(x);
    return 0;
}
