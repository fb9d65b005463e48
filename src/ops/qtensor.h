/*
 * qtensor.h: frozen weight matrices in one of several storage formats, and the matmuls through
 * them that dequantize on the fly (a panel of rows at a time, never the whole matrix).
 *
 * One traits table (qtensor.c) has a row per format: name, values per block, bytes per block,
 * dequantize, fused dot product. The SIMD versions (qtensor_avx2.c, qtensor_avx512.c) run at
 * the ISA level of base/cpu.h (what the CPU has, capped by FTUNE_ISA=portable|avx2|avx512; tests
 * switch it with cpu_set_level to run every path the machine has). The portable C in qtensor.c is
 * the reference.
 *
 * Layouts (all row-major over the (rows, cols) = (out, in) matrix, flattened):
 *   F32, BF16, F16  rows*cols values.
 *   Q8_0            GGUF's block_q8_0 (ggml-common.h): per 32 consecutive values of a row,
 *                   { f16 d; int8 q[32] } = 34 bytes; value = d * q. cols % 32 == 0.
 *                   Quantization as ggml's quantize_row_q8_0_ref: d = max|x| / 127,
 *                   q = round(x / d) (0 when d == 0).
 *   NF4, FP4        bitsandbytes 4-bit (ops/quant.h): the flattened matrix in blocks of
 *                   `blocksize` values (blocks may cross rows), two codes per byte, high nibble
 *                   first; value = code[q] * absmax[block].
 *                   absmax is either fp32 per block, or double-quantized as bitsandbytes does
 *                   (compress_statistics=True): absmax[b] = nested_code[absmax_q[b]] *
 *                   nested_absmax[b / nested_blocksize] + offset.
 *   Q4_0, Q4_K, Q6_K GGUF's block_q4_0 (32 values, 18 bytes), block_q4_K and block_q6_K (256
 *                   values, 144 and 210 bytes), byte for byte as in the file (ops/ggml_quants.h
 *                   has the layouts); each row is cols / block_values whole blocks. Read as
 *                   stored only: ftune does not quantize to them (qtensor_quantize refuses), and
 *                   a value is exactly what ggml_dequant_row gives it.
 */
#ifndef FT_OPS_QTENSOR_H
#define FT_OPS_QTENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum qformat {
    QF_F32,
    QF_BF16,
    QF_F16,
    QF_Q8_0,
    QF_NF4,
    QF_FP4,
    QF_Q4_0,
    QF_Q4_K,
    QF_Q6_K,
    QF_COUNT
} qformat;

/* The compute type of the matmuls through a tensor (`ftune train --dtype`).
 *   QC_F32   the input and the dequantized weights in fp32 (the default, and the reference).
 *   QC_BF16  the input (X forward, dY in backward) and the dequantized weights are rounded to
 *            bf16 (nearest even) and multiplied with fp32 accumulation (gemm_bf16.h); the
 *            output stays fp32. This is what PyTorch's bf16 autocast does to an nn.Linear, and
 *            bitsandbytes with bnb_4bit_compute_dtype=bfloat16 to a 4-bit one, except that their
 *            outputs are rounded to bf16 too. */
typedef enum qcompute { QC_F32, QC_BF16 } qcompute;

typedef struct qtensor {
    qformat fmt;
    int rows, cols;
    int blocksize;              /* NF4/FP4: bitsandbytes block size; GGUF types: values per
                                   block (Q8_0, Q4_0: 32; Q4_K, Q6_K: 256); others 1 */
    const void *data;           /* values, blocks or packed codes as above */
    const float *absmax;        /* NF4/FP4 without double quantization: one per block */
    const uint8_t *absmax_q;    /* NF4/FP4 double-quantized: one 8-bit code per block */
    const float *nested_absmax; /* one per nested_blocksize blocks */
    const float *nested_code;   /* the 256 code values (bitsandbytes' dynamic map) */
    int nested_blocksize;       /* 256 in bitsandbytes */
    float offset;               /* added back after the nested dequantization */
    void *owned;                /* one allocation qtensor_free releases (NULL: borrowed) */
    qcompute compute;           /* how qmatmul_* multiply through it (zero: QC_F32) */
} qtensor;

/* Kernel signatures: rows r0 .. r0+nrows-1 to fp32 (out: nrows * cols); dot of row r with x. */
typedef void (*qdequant_fn)(const qtensor *t, int r0, int nrows, float *out);
typedef float (*qdot_fn)(const qtensor *t, int r, const float *x);

typedef struct qformat_traits {
    const char *name;        /* "f32", "bf16", "f16", "q8_0", "nf4", "fp4", "q4_0", ... */
    int block_values;        /* default values per block */
    size_t block_bytes;      /* bytes of `data` per block (NF4/FP4: block_values / 2) */
    qdequant_fn dequant_ref; /* the portable reference kernels (the SIMD ones are tested */
    qdot_fn dot_ref;         /* against these; qtensor_dequant_rows/dot_row use the fastest) */
    int stored_only;         /* read from a GGUF file only; qtensor_quantize cannot make it */
} qformat_traits;

const qformat_traits *qformat_info(qformat f);
/* "nf4" -> QF_NF4 ...; also accepts "q8" for Q8_0 and "none" for F32. -1 when unknown. */
int qformat_parse(const char *name);

/* Bytes this tensor holds in memory (data + absmax state). */
size_t qtensor_bytes(const qtensor *t);
/* The bytes qtensor_bytes will count for a tensor of this format and shape, before it exists
 * (4-bit: blocksize, and double_quant with bitsandbytes' nested blocks of 256). */
size_t qtensor_size_for(qformat f, size_t rows, size_t cols, int blocksize, int double_quant);
void qtensor_free(qtensor *t);

/* Quantize rows*cols fp32 values into a new tensor of format f (allocates; owned); not for
 * the stored_only formats.
 * blocksize: NF4/FP4 block size (0 = 64); double_quant: NF4/FP4 only. Returns 0 on success,
 * -1 when out of memory or the shape does not suit the format (Q8_0 needs cols % 32 == 0). */
int qtensor_quantize(qtensor *t, qformat f, const float *x, int rows, int cols, int blocksize,
                     int double_quant);

/* out (nrows * cols) = rows r0 .. r0+nrows-1 dequantized to fp32. */
void qtensor_dequant_rows(const qtensor *t, int r0, int nrows, float *out);
/* dot product of row r with x (cols values), dequantizing on the fly. */
float qtensor_dot_row(const qtensor *t, int r, const float *x);

/* out (rows) = beta*out + W x [+ bias (rows)] for one fp32 vector x (cols), whatever W->compute
 * says: the fused dot kernels (qtensor_dot_row's values, bit for bit), four weight rows per call
 * sharing the loads of x where the ISA has such a kernel (Q8_0, Q4_0, Q4_K), groups of four rows
 * split statically across the threads. Decode's matrix-vector product: each weight is read
 * once, in its stored format. */
void qmatvec(float *out, const float *x, const qtensor *W, const float *bias, float beta);

/* out (N, rows) = beta*out + inp (N, cols) . W^T [+ bias (rows)]; ldo/ldi row strides
 * (0 = rows / cols). For F32 this is one GEMM; for others, panels of rows are dequantized into
 * the caller's scratch (ws, wsb bytes; qmatmul_scratch_bytes(W, N) is enough, less makes smaller
 * panels or fused dot products) and multiplied. W->compute QC_BF16: as the comment on qcompute
 * says (the bias is added in fp32). Nothing is allocated. Returns 0, or -1 (out untouched) when
 * the scratch does not hold even one row of each buffer (QC_BF16 only). */
int qmatmul_forward(float *out, int ldo, const float *inp, int ldi, const qtensor *W,
                    const float *bias, int N, float beta, void *ws, size_t wsb);
/* dinp (N, cols) += dout (N, rows) . W  (QC_BF16: dout and W rounded to bf16); the scratch as
 * above. Returns 0, or -1 (dinp untouched) when the scratch does not hold one row of W. */
int qmatmul_backward_input(float *dinp, int ldi, const float *dout, int ldo, const qtensor *W,
                           int N, void *ws, size_t wsb);

/* The most scratch memory qmatmul_forward or qmatmul_backward_input through W holds with N input
 * rows: the dequantized panel, and under QC_BF16 the bf16 copies of an input chunk and a panel
 * and gemm_bf16's own (gemm_bf16_scratch_bytes). Needs only W's fmt, rows, cols and compute (the
 * memory plan asks before any weight is loaded). */
size_t qmatmul_scratch_bytes(const qtensor *W, int N);

/* Which kernel set runs at the current ISA level (base/cpu.h): "avx512", "avx2" or "portable".
 * Tests switch it with cpu_set_level. */
const char *qtensor_isa(void);

#endif
