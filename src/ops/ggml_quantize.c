/*
 * ggml_quantize.c: Q8_0, Q4_0 and the float types from fp32 (ggml_quantize.h). Source of the
 * algorithms: llama.cpp's ggml/src/ggml-quants.c (quantize_row_q8_0_ref, quantize_row_q4_0_ref)
 * as vendored in llama-cpp-python 0.3.36; facts only, the code is ftune's own.
 */
#include "ops/ggml_quantize.h"
#include "base/half.h"
#include "ops/ggml_quants.h"

#include <math.h>
#include <string.h>

static void quantize_q8_0(const float *x, size_t nb, uint8_t *out) {
    for (size_t b = 0; b < nb; b++, x += 32, out += 34) {
        float amax = 0;
        for (int j = 0; j < 32; j++) {
            float a = fabsf(x[j]);
            amax = amax > a ? amax : a; /* ggml's MAX(amax, fabsf(v)) */
        }
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        uint16_t dh = f32_to_f16(d);
        memcpy(out, &dh, 2);
        for (int j = 0; j < 32; j++)
            out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

static void quantize_q4_0(const float *x, size_t nb, uint8_t *out) {
    for (size_t b = 0; b < nb; b++, x += 32, out += 18) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
        uint16_t dh = f32_to_f16(d);
        memcpy(out, &dh, 2);
        for (int j = 0; j < 16; j++) {
            int q0 = (int8_t)(x[j] * id + 8.5f), q1 = (int8_t)(x[16 + j] * id + 8.5f);
            uint8_t lo = (uint8_t)(q0 < 15 ? q0 : 15), hi = (uint8_t)(q1 < 15 ? q1 : 15);
            out[2 + j] = (uint8_t)(lo | hi << 4);
        }
    }
}

int ggml_quantize_row(uint32_t type, const float *src, void *dst, size_t n) {
    uint16_t *h = dst;
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case GGML_TYPE_F16:
        for (size_t i = 0; i < n; i++)
            h[i] = f32_to_f16(src[i]);
        return 0;
    case GGML_TYPE_BF16:
        for (size_t i = 0; i < n; i++)
            h[i] = f32_to_bf16(src[i]);
        return 0;
    case GGML_TYPE_Q8_0:
        if (n % 32) return -1;
        quantize_q8_0(src, n / 32, dst);
        return 0;
    case GGML_TYPE_Q4_0:
        if (n % 32) return -1;
        quantize_q4_0(src, n / 32, dst);
        return 0;
    default:
        return -1;
    }
}
