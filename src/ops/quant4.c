/*
 * quant4.c: NF4 / FP4 quantization as bitsandbytes does it (see quant.h for the rules).
 */
#include "base/cpu.h"
#include "ops/quant.h"
#include "ops/quant4_block.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
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
    int order[16];    /* indices of code in ascending value (stable for equal values) */
    float bounds[15]; /* midpoints between consecutive sorted values, in fp32 */
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
    while (i < 15 && bounds[i] < x)
        i++;
    return i;
}

/* The block kernels, best first (quant4_block.h); the scalar loop below is the reference. */
typedef float (*q4_block_fn)(const float *, int, const float *, const int *, uint8_t *);
static const struct {
    const char *name;
    cpu_isa level;
    q4_block_fn run; /* NULL: the scalar loop */
} table[] = {
    {"avx2", CPU_AVX2, quant4_block_avx2},
    {"portable", CPU_PORTABLE, NULL},
};

const char *quant4_isa(void) { return table[CPU_PICK(table)].name; }

void quant4_quantize(quant4_type t, const float *x, size_t n, int blocksize, uint8_t *packed,
                     float *absmax) {
    tables_init();
    const q4table *q = &tables[t];
    size_t nb = quant4_blocks(n, blocksize), full = n - n % (size_t)blocksize;
    q4_block_fn kernel = blocksize % 8 ? NULL : table[CPU_PICK(table)].run;
    memset(packed, 0, quant4_packed_bytes(n));
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * (size_t)blocksize,
               hi = lo + (size_t)blocksize < n ? lo + (size_t)blocksize : n;
        if (kernel && lo < full) { /* a full block */
            absmax[b] = kernel(x + lo, blocksize, q->bounds, q->order, packed + lo / 2);
            continue;
        }
        float am = 0;
        for (size_t i = lo; i < hi; i++)
            am = fmaxf(am, fabsf(x[i]));
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
            if (i % 2 == 0)
                packed[i / 2] |= (uint8_t)(c << 4);
            else
                packed[i / 2] |= (uint8_t)c;
        }
    }
    if (n % 2) { /* bitsandbytes pads an odd count with one 0.0, which quantizes like any value */
        packed[n / 2] |= (uint8_t)q->order[bucket(q->bounds, 0.0f)];
    }
}

void quant4_dequantize(quant4_type t, const uint8_t *packed, const float *absmax, size_t n,
                       int blocksize, float *out) {
    tables_init();
    /* bitsandbytes' CPU dequantization kernel (dDequantizeFP4) gives FP4 code 8 (sign bit, zero
     * magnitude) as -0.0, while get_4bit_type, its quant_map, has +0.0 there */
    float code[16];
    memcpy(code, tables[t].code, sizeof code);
    if (t == QUANT_FP4) code[8] = -0.0f;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        int c = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 15;
        out[i] = code[c] * absmax[i / (size_t)blocksize];
    }
}

/* ---- double quantization ---------------------------------------------------------------
 * bitsandbytes 0.50.2 on the CPU (functional.quantize_4bit(compress_statistics=True)):
 *   offset = absmax.mean()        torch's fp32 mean: its cascade sum (below), then / (float)n
 *   codes, nested_absmax = quantize_blockwise(absmax - offset, blocksize=256)
 * and quantize_blockwise is the C++ kernel of libbitsandbytes_cpu.so (csrc/cpu_ops.cpp,
 * quantize_cpu_impl): per block, am = max |d|; am == 0 gives code 0 for the whole block;
 * otherwise v = clamp(d * (1/am), -1, 1) goes through a 65536-entry table: index
 * (uint16)fma((v + 1) * 0.5, 65535, 0.5) (the shipped binary fuses that multiply-add: vfmadd),
 * and entry i holds the number of code midpoints 0.5*(c[k]+c[k+1]) below -1 + (2*i)/65535.
 * So the code is the nearest one to v rounded to a 1/32767.5 grid, not always the nearest to v. */

/* bitsandbytes.functional.create_dynamic_map() (signed, 7 exponent bits), sorted, as float32
 * bit patterns. */
static const uint32_t dynamic_bits[256] = {
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000};

static float dynamic_code[256], dynamic_mid[255];
static int dynamic_ready;

static void dynamic_init(void) {
    if (dynamic_ready) return;
    memcpy(dynamic_code, dynamic_bits, sizeof dynamic_code);
    for (int i = 0; i < 255; i++)
        dynamic_mid[i] = 0.5f * (dynamic_code[i] + dynamic_code[i + 1]);
    dynamic_ready = 1;
}

const float *quant8_dynamic_code(void) {
    dynamic_init();
    return dynamic_code;
}

/* The code index bitsandbytes' table gives a scaled value v in [-1, 1]. */
static uint8_t dynamic_quantize(float v) {
    v = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
    int idx = (int)fmaf((v + 1.0f) * 0.5f, 65535.0f, 0.5f); /* truncation, as the cast does */
    float grid = -1.0f + (2.0f * (float)idx) / 65535.0f;
    int lo = 0, hi = 255; /* count the midpoints below grid: first k with mid[k] >= grid */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (dynamic_mid[mid] < grid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (uint8_t)lo;
}

/* ---- torch's fp32 sum on the CPU (aten/src/ATen/native/cpu/SumKernel.cpp, cascade_sum) ----
 * A contiguous 1-D float sum is done in vectors of W = 8 lanes: the n / W whole vectors go through
 * row_sum (four interleaved accumulators, each a 4-level cascade whose level width is 2^max(4,
 * ceil(log2 size) / 4)), then the n % W tail is added to 0 in order, then the W lanes one by one.
 * Fewer than W values: the same row_sum over scalars. Above 32768 values with T > 1 threads, torch
 * splits the range into min(T, ceil(n / 32768)) equal chunks, sums each as above into a T-slot
 * buffer and sums the buffer with the same kernel. Every float add is in the same order as torch's,
 * so the result is the same bits given the same T.
 *
 * W is 8 whatever the CPU: torch 2.15's x86-64 wheel reports its capability as AVX512 on an
 * AVX-512 CPU (Zen 4 here), yet its fp32 sums come out in the 8-lane order, bit for bit, for every
 * length tried from 1 to 9,000,000 and 1 to 3 threads, with and without ATEN_CPU_CAPABILITY=avx2;
 * a 16-lane order is 1-2 ulp off from 96 values on (issue 13, tests/peers/test_quantize_bnb.py
 * test_torch_mean_order). What torch does, not what its capability name suggests. */
enum { SUM_ROWS = 4, SUM_LEVELS = 4, SUM_W = 8, TORCH_GRAIN = 32768 };

static int ceil_log2(int64_t x) { /* torch's utils::CeilLog2 */
    if (x <= 2) return 1;
    return 64 - __builtin_clzll((unsigned long long)(x - 1));
}

/* out[k*V + l] = cascade sum over i < size of base[(i*SUM_ROWS + k)*V + l] (multi_row_sum). */
static void multi_row_sum(const float *base, int64_t size, int V, float *out) {
    int lp = ceil_log2(size) / SUM_LEVELS;
    if (lp < 4) lp = 4;
    const int64_t step = (int64_t)1 << lp, mask = step - 1;
    const int E = SUM_ROWS * V;
    float acc[SUM_LEVELS][SUM_ROWS * SUM_W] = {{0}};
    int64_t i = 0;
    while (i + step <= size) {
        for (int64_t j = 0; j < step; j++, i++)
            for (int e = 0; e < E; e++)
                acc[0][e] += base[i * E + e];
        for (int j = 1; j < SUM_LEVELS; j++) {
            for (int e = 0; e < E; e++)
                acc[j][e] += acc[j - 1][e], acc[j - 1][e] = 0;
            if (i & (mask << (j * lp))) break;
        }
    }
    for (; i < size; i++)
        for (int e = 0; e < E; e++)
            acc[0][e] += base[i * E + e];
    for (int j = 1; j < SUM_LEVELS; j++)
        for (int e = 0; e < E; e++)
            acc[0][e] += acc[j][e];
    memcpy(out, acc[0], (size_t)E * sizeof(float));
}

/* out[l] = sum over i < size of base[i*V + l] (row_sum with four interleaved rows). */
static void row_sum(const float *base, int64_t size, int V, float *out) {
    float part[SUM_ROWS * SUM_W];
    int64_t size_ilp = size / SUM_ROWS;
    multi_row_sum(base, size_ilp, V, part);
    for (int64_t i = size_ilp * SUM_ROWS; i < size; i++)
        for (int l = 0; l < V; l++)
            part[l] += base[i * V + l];
    for (int k = 1; k < SUM_ROWS; k++)
        for (int l = 0; l < V; l++)
            part[l] += part[k * V + l];
    memcpy(out, part, (size_t)V * sizeof(float));
}

static float sum_serial(const float *x, int64_t n) {
    const int W = SUM_W;
    float r;
    if (n < W) {
        row_sum(x, n, 1, &r);
        return 0.0f + r;
    }
    float lanes[SUM_W];
    int64_t nv = n / W;
    row_sum(x, nv, W, lanes);
    r = 0.0f;
    for (int64_t k = nv * W; k < n; k++)
        r += x[k];
    for (int l = 0; l < W; l++)
        r += lanes[l];
    return 0.0f + r;
}

float quant4_torch_sum(const float *x, size_t n, int T) {
    if (n < TORCH_GRAIN || T <= 1) return sum_serial(x, (int64_t)n);
    int64_t N = (int64_t)n, nt = (N + TORCH_GRAIN - 1) / TORCH_GRAIN;
    if (nt > T) nt = T;
    int64_t chunk = (N + nt - 1) / nt;
    float *buf = calloc((size_t)T, sizeof(float));
    if (!buf) return sum_serial(x, N); /* out of memory: still a sum, perhaps not torch's bits */
    for (int64_t t = 0; t < nt; t++) {
        int64_t b = t * chunk, e = b + chunk < N ? b + chunk : N;
        if (b < N) buf[t] += sum_serial(x + b, e - b);
    }
    float s = sum_serial(buf, T);
    free(buf);
    return s;
}

float quant4_torch_mean(const float *x, size_t n, int T) {
    return n ? quant4_torch_sum(x, n, T) / (float)n : 0.0f;
}

void quant4_double_quant(const float *absmax, size_t n, uint8_t *codes, float *nested_absmax,
                         float *offset) {
    dynamic_init();
    /* torch's intra-op threads: OpenMP's count, as torch's default is the physical core count
     * (on a machine with SMT set OMP_NUM_THREADS to match torch) */
    float off = quant4_torch_mean(absmax, n, omp_get_max_threads());
    *offset = off;
    size_t nb = quant4_blocks(n, QUANT8_BLOCK);
    /* blocks are independent (each value's code depends on its block alone) */
#pragma omp parallel for schedule(static) if (nb > 16)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * QUANT8_BLOCK, hi = lo + QUANT8_BLOCK < n ? lo + QUANT8_BLOCK : n;
        float am = 0;
        for (size_t i = lo; i < hi; i++)
            am = fmaxf(am, fabsf(absmax[i] - off));
        nested_absmax[b] = am;
        if (am == 0.0f) {
            memset(codes + lo, 0, hi - lo);
            continue;
        }
        float inv = 1.0f / am;
        for (size_t i = lo; i < hi; i++)
            codes[i] = dynamic_quantize((absmax[i] - off) * inv);
    }
}

void quant4_double_dequant(const uint8_t *codes, const float *nested_absmax, float offset, size_t n,
                           float *absmax) {
    dynamic_init();
    for (size_t i = 0; i < n; i++)
        absmax[i] = dynamic_code[codes[i]] * nested_absmax[i / QUANT8_BLOCK] + offset;
}
