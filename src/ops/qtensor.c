/*
 * qtensor.c: frozen weight matrices in F32 / BF16 / F16 / Q8_0 / NF4 / FP4 / Q4_0 / Q4_K / Q6_K
 * (see qtensor.h for the layouts), their quantization, and the matmuls that dequantize them on
 * the fly.
 *
 * A format is a row of `traits`: sizes plus the portable kernels (dequantize rows, fused dot of
 * one row). Those portable kernels are the reference; qtensor_avx2.c and qtensor_avx512.c hold
 * faster versions of the same kernels; the set that runs is the best one the ISA level
 * (base/cpu.h: the CPU, capped by FTUNE_ISA) allows.
 *
 * Matmuls: F32 is one GEMM over the stored matrix. Other formats go a panel of rows at a time:
 * the panel (about PANEL_BYTES of fp32) is dequantized into a buffer, by all threads, and one
 * GEMM multiplies it; the whole fp32 matrix never exists. With very few input rows (N small) a
 * GEMM does not pay for the dequantization pass, so each output is one fused dot product.
 *
 * Under QC_BF16 (qtensor.h) every format goes the panel way, with no fused dots: the input is
 * rounded to bf16 a chunk of rows at a time, each panel is dequantized and rounded to bf16 (a
 * BF16 tensor's own rows are the panel), and gemm_bf16 multiplies them.
 */
#include "ops/gemm_bf16.h"
#include "ops/ggml_quantize.h"
#include "ops/ggml_quants.h"
#include "ops/ops.h"
#include "ops/qtensor_kernels.h"
#include "ops/quant.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- portable kernels (the reference) ---------------------------------------------------- */

static void dequant_f32(const qtensor *t, int r0, int nrows, float *out) {
    memcpy(out, (const float *)t->data + (size_t)r0 * t->cols, (size_t)nrows * t->cols * 4);
}

static float dot_f32(const qtensor *t, int r, const float *x) {
    const float *w = (const float *)t->data + (size_t)r * t->cols;
    float s = 0;
    for (int i = 0; i < t->cols; i++)
        s += w[i] * x[i];
    return s;
}

static void dequant_bf16(const qtensor *t, int r0, int nrows, float *out) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r0 * t->cols;
    size_t n = (size_t)nrows * t->cols;
    for (size_t i = 0; i < n; i++)
        out[i] = bf16_to_f32(h[i]);
}

static float dot_bf16(const qtensor *t, int r, const float *x) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r * t->cols;
    float s = 0;
    for (int i = 0; i < t->cols; i++)
        s += bf16_to_f32(h[i]) * x[i];
    return s;
}

static void dequant_f16(const qtensor *t, int r0, int nrows, float *out) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r0 * t->cols;
    size_t n = (size_t)nrows * t->cols;
    for (size_t i = 0; i < n; i++)
        out[i] = f16_to_f32(h[i]);
}

static float dot_f16(const qtensor *t, int r, const float *x) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r * t->cols;
    float s = 0;
    for (int i = 0; i < t->cols; i++)
        s += f16_to_f32(h[i]) * x[i];
    return s;
}

static void dequant_q8_0(const qtensor *t, int r0, int nrows, float *out) {
    size_t nb = (size_t)nrows * (t->cols / Q8_0_VALUES);
    const uint8_t *blk =
        (const uint8_t *)t->data + (size_t)r0 * (t->cols / Q8_0_VALUES) * Q8_0_BYTES;
    for (size_t b = 0; b < nb; b++, blk += Q8_0_BYTES, out += Q8_0_VALUES) {
        uint16_t dh;
        memcpy(&dh, blk, 2);
        float d = f16_to_f32(dh);
        const int8_t *q = (const int8_t *)(blk + 2);
        for (int j = 0; j < Q8_0_VALUES; j++)
            out[j] = d * (float)q[j];
    }
}

static float dot_q8_0(const qtensor *t, int r, const float *x) {
    int nb = t->cols / Q8_0_VALUES;
    const uint8_t *blk = (const uint8_t *)t->data + (size_t)r * nb * Q8_0_BYTES;
    float s = 0;
    for (int b = 0; b < nb; b++, blk += Q8_0_BYTES, x += Q8_0_VALUES) {
        uint16_t dh;
        memcpy(&dh, blk, 2);
        const int8_t *q = (const int8_t *)(blk + 2);
        float bs = 0;
        for (int j = 0; j < Q8_0_VALUES; j++)
            bs += (float)q[j] * x[j];
        s += f16_to_f32(dh) * bs;
    }
    return s;
}

/* 4-bit: the flattened matrix is in blocks of t->blocksize values that may cross rows, so rows
 * r0.. are the flat range [r0*cols, (r0+nrows)*cols), walked block segment by block segment. */
static void dequant_4bit(const qtensor *t, const float *code, int r0, int nrows, float *out) {
    const uint8_t *p = t->data;
    size_t bs = (size_t)t->blocksize, lo = (size_t)r0 * t->cols, hi = lo + (size_t)nrows * t->cols;
    for (size_t i = lo; i < hi;) {
        size_t b = i / bs, end = (b + 1) * bs < hi ? (b + 1) * bs : hi;
        float a = qt_block_absmax(t, b);
        for (; i < end; i++)
            out[i - lo] = code[qt_nibble(p, i)] * a;
    }
}

static float dot_4bit(const qtensor *t, const float *code, int r, const float *x) {
    const uint8_t *p = t->data;
    size_t bs = (size_t)t->blocksize, lo = (size_t)r * t->cols, hi = lo + (size_t)t->cols;
    float s = 0;
    for (size_t i = lo; i < hi;) {
        size_t b = i / bs, end = (b + 1) * bs < hi ? (b + 1) * bs : hi;
        float bsum = 0; /* the block's absmax multiplies once, after the sum */
        for (; i < end; i++)
            bsum += code[qt_nibble(p, i)] * x[i - lo];
        s += qt_block_absmax(t, b) * bsum;
    }
    return s;
}

static void dequant_nf4(const qtensor *t, int r0, int nrows, float *out) {
    dequant_4bit(t, qt_dequant_code(QF_NF4), r0, nrows, out);
}
static void dequant_fp4(const qtensor *t, int r0, int nrows, float *out) {
    dequant_4bit(t, qt_dequant_code(QF_FP4), r0, nrows, out);
}
static float dot_nf4(const qtensor *t, int r, const float *x) {
    return dot_4bit(t, qt_dequant_code(QF_NF4), r, x);
}
static float dot_fp4(const qtensor *t, int r, const float *x) {
    return dot_4bit(t, qt_dequant_code(QF_FP4), r, x);
}

/* GGUF Q4_0, Q4_K, Q6_K: rows of whole blocks; the values are ggml_dequant_row's (the
 * reference that gguf-py's dequantize agrees with bit for bit). The dot product dequantizes a
 * block at a time and sums its products before adding the block's sum to the row's. */
static void dequant_gguf(const qtensor *t, int r0, int nrows, float *out) {
    ggml_dequant_row(qt_ggml_type(t->fmt), qt_row(t, r0), out, (size_t)nrows * t->cols);
}

static float dot_gguf(const qtensor *t, int r, const float *x) {
    uint32_t type = qt_ggml_type(t->fmt);
    const ggml_type_traits *tt = ggml_type_info(type);
    const uint8_t *blk = qt_row(t, r);
    int bv = tt->block_values;
    float v[GGML_QK_K], s = 0;
    for (int i = 0; i < t->cols; i += bv, blk += tt->block_bytes) {
        ggml_dequant_row(type, blk, v, (size_t)bv);
        float bs = 0;
        for (int j = 0; j < bv; j++)
            bs += v[j] * x[i + j];
        s += bs;
    }
    return s;
}

/* ---- the traits table and kernel sets ---------------------------------------------------- */

static const qformat_traits traits[QF_COUNT] = {
    [QF_F32] = {"f32", 1, 4, dequant_f32, dot_f32, 0},
    [QF_BF16] = {"bf16", 1, 2, dequant_bf16, dot_bf16, 0},
    [QF_F16] = {"f16", 1, 2, dequant_f16, dot_f16, 0},
    [QF_Q8_0] = {"q8_0", Q8_0_VALUES, Q8_0_BYTES, dequant_q8_0, dot_q8_0, 0},
    [QF_NF4] = {"nf4", 64, 32, dequant_nf4, dot_nf4, 0},
    [QF_FP4] = {"fp4", 64, 32, dequant_fp4, dot_fp4, 0},
    [QF_Q4_0] = {"q4_0", Q4_0_VALUES, Q4_0_BYTES, dequant_gguf, dot_gguf, 1},
    [QF_Q4_K] = {"q4_k", GGML_QK_K, Q4_K_BYTES, dequant_gguf, dot_gguf, 1},
    [QF_Q6_K] = {"q6_k", GGML_QK_K, Q6_K_BYTES, dequant_gguf, dot_gguf, 1},
};

static const qkernels kernels_portable = {"portable", CPU_PORTABLE, {0}, {0}, {0}};

const qformat_traits *qformat_info(qformat f) { return (unsigned)f < QF_COUNT ? &traits[f] : NULL; }

int qformat_parse(const char *name) {
    if (!name) return -1;
    if (!strcasecmp(name, "q8")) return QF_Q8_0;
    if (!strcasecmp(name, "none")) return QF_F32;
    for (int f = 0; f < QF_COUNT; f++)
        if (!strcasecmp(name, traits[f].name)) return f;
    return -1;
}

/* The kernel sets, best first; the first one the ISA level (base/cpu.h) runs is used. */
static const qkernels *const sets[] = {&qtensor_kernels_avx512, &qtensor_kernels_avx2,
                                       &kernels_portable};
enum { NSETS = sizeof sets / sizeof sets[0] };

static float code_nf4[16], code_fp4[16];
static pthread_once_t codes_once = PTHREAD_ONCE_INIT;

static void init_codes(void) {
    memcpy(code_nf4, quant4_code(QUANT_NF4), sizeof code_nf4);
    memcpy(code_fp4, quant4_code(QUANT_FP4), sizeof code_fp4);
    code_fp4[8] = -0.0f;
}

static const qkernels *kernels(void) {
    cpu_isa l = cpu_level();
    for (int i = 0; i < NSETS - 1; i++)
        if (sets[i]->level <= l) return sets[i];
    return &kernels_portable;
}

const char *qtensor_isa(void) { return kernels()->isa; }

const float *qt_dequant_code(qformat f) {
    pthread_once(&codes_once, init_codes);
    return f == QF_NF4 ? code_nf4 : code_fp4;
}

static qdequant_fn dequant_kernel(qformat f) {
    qdequant_fn k = kernels()->dequant[f];
    return k ? k : traits[f].dequant_ref;
}

static qdot_fn dot_kernel(qformat f) {
    qdot_fn k = kernels()->dot[f];
    return k ? k : traits[f].dot_ref;
}

void qtensor_dequant_rows(const qtensor *t, int r0, int nrows, float *out) {
    if (nrows > 0) dequant_kernel(t->fmt)(t, r0, nrows, out);
}

float qtensor_dot_row(const qtensor *t, int r, const float *x) {
    return dot_kernel(t->fmt)(t, r, x);
}

/* ---- sizes, quantization ----------------------------------------------------------------- */

static int is_4bit(qformat f) { return f == QF_NF4 || f == QF_FP4; }

static size_t data_bytes(qformat f, size_t rows, size_t cols) {
    size_t n = rows * cols;
    switch (f) {
    case QF_F32:
        return n * 4;
    case QF_BF16:
    case QF_F16:
        return n * 2;
    case QF_Q8_0:
        return rows * (cols / Q8_0_VALUES) * Q8_0_BYTES;
    case QF_NF4:
    case QF_FP4:
        return quant4_packed_bytes(n);
    case QF_Q4_0:
    case QF_Q4_K:
    case QF_Q6_K:
        return rows * (cols / (size_t)traits[f].block_values) * traits[f].block_bytes;
    default:
        return 0;
    }
}

/* The absmax state of a 4-bit tensor: fp32 per block, or a code per block plus fp32 per nested
 * block (the 256-value nested code is bitsandbytes' shared table, not counted). */
static size_t absmax_bytes(const qtensor *t) {
    if (!is_4bit(t->fmt)) return 0;
    size_t nb = quant4_blocks((size_t)t->rows * t->cols, t->blocksize);
    if (t->absmax) return nb * 4;
    if (t->absmax_q)
        return nb + quant4_blocks(nb, t->nested_blocksize > 0 ? t->nested_blocksize : 256) * 4;
    return 0;
}

size_t qtensor_size_for(qformat f, size_t rows, size_t cols, int blocksize, int double_quant) {
    size_t n = rows * cols, am = 0;
    if (is_4bit(f)) {
        size_t nb = quant4_blocks(n, blocksize);
        am = double_quant ? nb + quant4_blocks(nb, QUANT8_BLOCK) * 4 : nb * 4;
    }
    return data_bytes(f, rows, cols) + am;
}

size_t qtensor_bytes(const qtensor *t) {
    return data_bytes(t->fmt, (size_t)t->rows, (size_t)t->cols) + absmax_bytes(t);
}

void qtensor_free(qtensor *t) {
    if (!t) return;
    free(t->owned);
    memset(t, 0, sizeof *t);
}

static int valid_4bit_blocksize(int bs) { return bs >= 32 && bs <= 4096 && (bs & (bs - 1)) == 0; }

int qtensor_quantize(qtensor *t, qformat f, const float *x, int rows, int cols, int blocksize,
                     int double_quant) {
    memset(t, 0, sizeof *t);
    if ((unsigned)f >= QF_COUNT || rows <= 0 || cols <= 0 || traits[f].stored_only) return -1;
    if (f == QF_Q8_0 && cols % Q8_0_VALUES) return -1;
    if (is_4bit(f)) {
        if (!blocksize) blocksize = FT_QUANT_BLOCKSIZE_DEFAULT;
        if (!valid_4bit_blocksize(blocksize)) return -1;
    } else {
        blocksize = f == QF_Q8_0 ? Q8_0_VALUES : 1;
        double_quant = 0;
    }
    size_t n = (size_t)rows * cols, db = data_bytes(f, rows, cols);
    size_t nb = is_4bit(f) ? quant4_blocks(n, blocksize) : 0, nnb = quant4_blocks(nb, 256);
    /* one allocation: data, then (4-bit) fp32 absmax, or the nested absmax and the codes */
    size_t off_state = (db + 15) & ~(size_t)15;
    size_t total = off_state + (double_quant ? nnb * 4 + nb : nb * 4);
    uint8_t *mem = malloc(total ? total : 1);
    if (!mem) return -1;
    t->fmt = f, t->rows = rows, t->cols = cols, t->blocksize = blocksize;
    t->data = mem, t->owned = mem;
    switch (f) {
    case QF_F32:
        memcpy(mem, x, n * 4);
        break;
    case QF_BF16:
    case QF_F16: {
        uint16_t *h = (uint16_t *)mem;
        for (size_t i = 0; i < n; i++)
            h[i] = f == QF_BF16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
        break;
    }
    case QF_Q8_0:
        /* GGUF Q8_0 as llama.cpp writes it: one quantizer for train and export */
        ggml_quantize_row(GGML_TYPE_Q8_0, x, mem, n);
        break;
    case QF_NF4:
    case QF_FP4: {
        quant4_type qt = f == QF_NF4 ? QUANT_NF4 : QUANT_FP4;
        if (!double_quant) {
            float *absmax = (float *)(mem + off_state);
            quant4_quantize(qt, x, n, blocksize, mem, absmax);
            t->absmax = absmax;
            break;
        }
        float *absmax = malloc(nb * 4); /* only while quantizing */
        if (!absmax) {
            qtensor_free(t);
            return -1;
        }
        quant4_quantize(qt, x, n, blocksize, mem, absmax);
        float *nested = (float *)(mem + off_state);
        uint8_t *codes = mem + off_state + nnb * 4;
        quant4_double_quant(absmax, nb, codes, nested, &t->offset);
        free(absmax);
        t->absmax_q = codes, t->nested_absmax = nested;
        t->nested_code = quant8_dynamic_code(), t->nested_blocksize = 256;
        break;
    }
    default:
        break;
    }
    return 0;
}

/* ---- matmuls ----------------------------------------------------------------------------- */

/* fp32 bytes of one dequantized panel: big enough that the GEMM runs near full speed, small
 * enough to stay in L2/L3 while the GEMM reads it. */
enum { PANEL_BYTES = 1536 * 1024 };
/* Below this many input rows the fused dot products beat dequantize + GEMM. */
enum { DOT_MAX_N = 4 };

static int panel_rows(const qtensor *W) {
    int p = (int)(PANEL_BYTES / 4 / (size_t)W->cols);
    if (p < 1) p = 1;
    return p < W->rows ? p : W->rows;
}

/* Dequantize rows r0 .. r0+nrows-1 with all threads, each taking whole rows. */
static void dequant_panel(const qtensor *W, qdequant_fn k, int r0, int nrows, float *buf) {
    int chunk = 8;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < nrows; r += chunk) {
        int m = nrows - r < chunk ? nrows - r : chunk;
        k(W, r0 + r, m, buf + (size_t)r * W->cols);
    }
}

/* ---- fused dot products: the matrix-vector product of decode ------------------------------ */

/* out (N, ldo) = beta*out + inp (N, ldi) . W^T [+ bias] by fused dot products, four weight rows
 * per kernel call (they share the loads of each input row), groups of four split statically
 * across the threads; a group stays in cache while it meets the N input rows. */
static void matvec_rows(float *out, int ldo, const float *inp, int ldi, const qtensor *W,
                        const float *bias, int N, float beta) {
    const qkernels *ks = kernels();
    qdot_fn dot = dot_kernel(W->fmt);
    qdot4_fn dot4 = ks->dot4[W->fmt];
    const int O = W->rows, G = (O + 3) / 4;
#pragma omp parallel for schedule(static)
    for (int g = 0; g < G; g++) {
        const int o = 4 * g, m = O - o < 4 ? O - o : 4;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * ldi;
            float v[4];
            if (m == 4 && dot4)
                dot4(W, o, x, v);
            else
                for (int j = 0; j < m; j++)
                    v[j] = dot(W, o + j, x);
            float *y = out + (size_t)n * ldo + o;
            for (int j = 0; j < m; j++)
                y[j] = (beta == 0 ? 0 : beta * y[j]) + v[j] + (bias ? bias[o + j] : 0);
        }
    }
}

void qmatvec(float *out, const float *x, const qtensor *W, const float *bias, float beta) {
    matvec_rows(out, W->rows, x, W->cols, W, bias, 1, beta);
}

/* ---- QC_BF16: the same panels, rounded to bf16 and multiplied by gemm_bf16 ---------------- */

/* Input rows rounded per chunk: about XCHUNK_BYTES of bf16 but at least XCHUNK_MIN_ROWS, since
 * every chunk dequantizes all of W again and a wide layer (14336 columns: 146 rows in 4 MB)
 * would spend a tenth of its time there. */
enum { XCHUNK_BYTES = 4 << 20, XCHUNK_MIN_ROWS = 256 };

static int chunk_rows(int width, int N) {
    int c = (int)(XCHUNK_BYTES / 2 / (size_t)width);
    if (c < XCHUNK_MIN_ROWS) c = XCHUNK_MIN_ROWS;
    return c < N ? c : N;
}

/* Scratch of one QC_BF16 matmul, carved from the caller's: a chunk of input rows and a panel
 * of W in bf16, the fp32 panel the dequantization writes (neither panel for BF16, which is read
 * in place; no fp32 one for F32, which is rounded straight from its data), and the rest for
 * gemm_bf16. Each part starts on a 64-byte boundary. */
typedef struct bf16_scratch {
    int xrows, prows;
    uint16_t *x, *panel;
    float *panel32;
    void *gemm;
    size_t gemm_bytes;
} bf16_scratch;

static size_t up64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Bytes of each part of the scratch (0: the part is not needed), each rounded up to 64. */
static void bf16_scratch_sizes(const qtensor *W, int xrows, int xwidth, int prows, size_t *x,
                               size_t *panel, size_t *panel32) {
    size_t I = (size_t)W->cols;
    int own_panel = W->fmt != QF_BF16, own32 = own_panel && W->fmt != QF_F32;
    *x = up64((size_t)xrows * xwidth * sizeof(uint16_t));
    *panel = own_panel ? up64((size_t)prows * I * sizeof(uint16_t)) : 0;
    *panel32 = own32 ? up64((size_t)prows * I * sizeof(float)) : 0;
}

/* The bf16 product's scratch for xrows input rows and prows weight rows. */
static size_t bf16_gemm_bytes(const qtensor *W, int backward, int xrows, int prows) {
    return backward ? gemm_bf16_scratch_bytes(xrows, W->cols, prows)
                    : gemm_bf16_scratch_bytes(xrows, prows, W->cols);
}

static int bf16_scratch_carve(bf16_scratch *s, const qtensor *W, int xrows, int xwidth, int prows,
                              void *ws, size_t wsb) {
    size_t xb, pb, p32b;
    bf16_scratch_sizes(W, xrows, xwidth, prows, &xb, &pb, &p32b);
    uint8_t *p = (uint8_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    size_t pad = ws ? (size_t)(p - (uint8_t *)ws) : 0, need = pad + xb + pb + p32b;
    if (!ws || wsb < need) return -1;
    s->xrows = xrows, s->prows = prows;
    s->x = (uint16_t *)p;
    s->panel = pb ? (uint16_t *)(p + xb) : NULL;
    s->panel32 = p32b ? (float *)(void *)(p + xb + pb) : NULL;
    s->gemm = p + xb + pb + p32b, s->gemm_bytes = wsb - need;
    return 0;
}

/* Full-size scratch, or when the caller's is short one input row and one W row at a time
 * (gemm_bf16 then runs whatever kernel its share allows). -1: not even that fits. */
static int bf16_scratch_init(bf16_scratch *s, const qtensor *W, int xwidth, int N, void *ws,
                             size_t wsb) {
    if (!bf16_scratch_carve(s, W, chunk_rows(xwidth, N), xwidth, panel_rows(W), ws, wsb)) return 0;
    return bf16_scratch_carve(s, W, 1, xwidth, 1, ws, wsb);
}

/* Rows r0 .. r0+m-1 of W in bf16, row stride cols. */
static const uint16_t *bf16_panel(const qtensor *W, qdequant_fn k, int r0, int m, bf16_scratch *s) {
    size_t I = (size_t)W->cols;
    if (W->fmt == QF_BF16) return (const uint16_t *)W->data + (size_t)r0 * I;
    const float *src = (const float *)W->data + (size_t)r0 * I;
    if (W->fmt != QF_F32) {
        dequant_panel(W, k, r0, m, s->panel32);
        src = s->panel32;
    }
    bf16_round_rows(s->panel, I, src, I, m, W->cols);
    return s->panel;
}

/* out (N, O) = beta*out + bf16(inp) . bf16(W)^T, then + bias in fp32. */
static int qmatmul_forward_bf16(float *out, int ldo, const float *inp, int ldi, const qtensor *W,
                                const float *bias, int N, float beta, void *ws, size_t wsb) {
    int O = W->rows, I = W->cols;
    bf16_scratch s;
    if (bf16_scratch_init(&s, W, I, N, ws, wsb)) return -1;
    qdequant_fn k = dequant_kernel(W->fmt);
    for (int n0 = 0; n0 < N; n0 += s.xrows) {
        int n = N - n0 < s.xrows ? N - n0 : s.xrows;
        bf16_round_rows(s.x, (size_t)I, inp + (size_t)n0 * ldi, (size_t)ldi, n, I);
        for (int r0 = 0; r0 < O; r0 += s.prows) {
            int m = O - r0 < s.prows ? O - r0 : s.prows;
            const uint16_t *w = bf16_panel(W, k, r0, m, &s);
            gemm_bf16(1, n, m, I, s.x, I, w, I, beta, out + (size_t)n0 * ldo + r0, ldo, s.gemm,
                      s.gemm_bytes);
        }
    }
    if (bias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++)
                out[(size_t)n * ldo + o] += bias[o];
    return 0;
}

/* dinp (N, I) += bf16(dout) . bf16(W): a chunk of dout rows (all O columns) rounded once, each
 * panel multiplying its columns r0 .. r0+m-1 of it. */
static int qmatmul_backward_input_bf16(float *dinp, int ldi, const float *dout, int ldo,
                                       const qtensor *W, int N, void *ws, size_t wsb) {
    int O = W->rows, I = W->cols;
    bf16_scratch s;
    if (bf16_scratch_init(&s, W, O, N, ws, wsb)) return -1;
    qdequant_fn k = dequant_kernel(W->fmt);
    for (int n0 = 0; n0 < N; n0 += s.xrows) {
        int n = N - n0 < s.xrows ? N - n0 : s.xrows;
        bf16_round_rows(s.x, (size_t)O, dout + (size_t)n0 * ldo, (size_t)ldo, n, O);
        for (int r0 = 0; r0 < O; r0 += s.prows) {
            int m = O - r0 < s.prows ? O - r0 : s.prows;
            const uint16_t *w = bf16_panel(W, k, r0, m, &s);
            gemm_bf16(0, n, I, m, s.x + r0, O, w, I, 1.0f, dinp + (size_t)n0 * ldi, ldi, s.gemm,
                      s.gemm_bytes);
        }
    }
    return 0;
}

/* ---- the matmuls ------------------------------------------------------------------------- */

size_t qmatmul_scratch_bytes(const qtensor *W, int N) {
    int O = W->rows, I = W->cols, P = panel_rows(W);
    if (N <= 0) return 0;
    if (W->compute != QC_BF16) /* the fp32 panel (forward with few rows needs none) */
        return W->fmt == QF_F32 ? 0 : (size_t)P * I * sizeof(float);
    size_t most = 0, x, panel, panel32;
    for (int backward = 0; backward < 2; backward++) {
        int width = backward ? O : I, xr = chunk_rows(width, N);
        bf16_scratch_sizes(W, xr, width, P, &x, &panel, &panel32);
        size_t b = 64 + x + panel + panel32 + bf16_gemm_bytes(W, backward, xr, P);
        if (b > most) most = b;
    }
    return most;
}

/* Weight rows per fp32 panel: the usual, or what the caller's scratch holds. */
static int fit_panel(const qtensor *W, size_t wsb) {
    size_t fit = wsb / ((size_t)W->cols * sizeof(float));
    int P = panel_rows(W);
    return fit < (size_t)P ? (int)fit : P;
}

int qmatmul_forward(float *out, int ldo, const float *inp, int ldi, const qtensor *W,
                    const float *bias, int N, float beta, void *ws, size_t wsb) {
    int O = W->rows, I = W->cols;
    if (W->compute == QC_BF16)
        return N > 0 ? qmatmul_forward_bf16(out, ldo ? ldo : O, inp, ldi ? ldi : I, W, bias, N,
                                            beta, ws, wsb)
                     : 0;
    if (W->fmt == QF_F32) {
        matmul_forward(out, ldo, inp, ldi, W->data, bias, N, I, O, beta);
        return 0;
    }
    if (!ldo) ldo = O;
    if (!ldi) ldi = I;
    if (N <= 0) return 0;
    int P = ws ? fit_panel(W, wsb) : 0;
    if (N < DOT_MAX_N || P == 0) { /* few rows, or no room for a panel: fused dots need none */
        matvec_rows(out, ldo, inp, ldi, W, bias, N, beta);
        return 0;
    }
    float *panel = ws;
    qdequant_fn k = dequant_kernel(W->fmt);
    for (int r0 = 0; r0 < O; r0 += P) {
        int m = O - r0 < P ? O - r0 : P;
        dequant_panel(W, k, r0, m, panel);
        gemm(0, 1, N, m, I, 1.0f, inp, ldi, panel, I, beta, out + r0, ldo);
    }
    if (bias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++)
                out[(size_t)n * ldo + o] += bias[o];
    return 0;
}

int qmatmul_backward_input(float *dinp, int ldi, const float *dout, int ldo, const qtensor *W,
                           int N, void *ws, size_t wsb) {
    int O = W->rows, I = W->cols;
    if (W->compute == QC_BF16)
        return N > 0 ? qmatmul_backward_input_bf16(dinp, ldi ? ldi : I, dout, ldo ? ldo : O, W, N,
                                                   ws, wsb)
                     : 0;
    if (W->fmt == QF_F32) {
        matmul_backward_input(dinp, ldi, dout, ldo, W->data, N, I, O);
        return 0;
    }
    if (!ldo) ldo = O;
    if (!ldi) ldi = I;
    if (N <= 0) return 0;
    int P = ws ? fit_panel(W, wsb) : 0;
    if (P == 0) return -1; /* not even one row of W fits the scratch */
    float *panel = ws;
    qdequant_fn k = dequant_kernel(W->fmt);
    for (int r0 = 0; r0 < O; r0 += P) {
        int m = O - r0 < P ? O - r0 : P;
        dequant_panel(W, k, r0, m, panel);
        gemm(0, 0, N, I, m, 1.0f, dout + r0, ldo, panel, I, 1.0f, dinp, ldi);
    }
    return 0;
}
