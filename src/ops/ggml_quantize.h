/*
 * ggml_quantize.h: fp32 -> GGUF block types as llama.cpp 0.3.36's llama_model_quantize writes
 * them without an importance matrix (byte for byte), and the per-tensor type rule of its ftypes
 * Q8_0, Q4_0, Q4_K_M and Q6_K.
 *
 * Quantizers (block layouts: ops/ggml_quants.h; Q5_0 and F16 are here because the rule falls
 * back to them for rows that are not a multiple of 256 or 32 values):
 *   Q4_K  per 256 values, 8 sub-blocks of 32: ggml's quantize_row_q4_K_ref (make_qkx2_quants
 *         with weights sqrt(mean x^2) + |x|, a 20-step search of scale and min; 6-bit scales and
 *         mins against fp16 d and dmin; the 4-bit values recomputed from the rounded scales).
 *   Q6_K  per 256 values, 16 sub-blocks of 16: quantize_row_q6_K_ref (make_qx_quants with
 *         weights x^2 and a 19-step search; 8-bit scales against an fp16 d).
 *   Q8_0, Q4_0, Q5_0  per 32 values: quantize_row_q8_0_ref / q4_0_ref / q5_0_ref.
 *   F16, BF16  round to nearest even (base/half.h); F32 copied.
 * Q4_K and Q6_K split their blocks over the OpenMP threads (blocks are independent: the bytes do
 * not depend on the thread count). Every operation is the fp32 operation of the reference, in its
 * order (no FMA contraction: the file is built without it and checks so), so the bytes equal
 * llama.cpp's on any x86-64. tests/peers/test_ggml_quantize.py compares them with
 * llama_model_quantize.
 */
#ifndef FT_OPS_GGML_QUANTIZE_H
#define FT_OPS_GGML_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

/* n values (a multiple of 256) from src to n / 256 blocks at dst (144 or 210 bytes each). */
void ggml_quantize_q4_k(const float *src, void *dst, size_t n);
void ggml_quantize_q6_k(const float *src, void *dst, size_t n);
/* n values (a multiple of 32) to n / 32 blocks (34, 18, 22 bytes each). */
void ggml_quantize_q8_0(const float *src, void *dst, size_t n);
void ggml_quantize_q4_0(const float *src, void *dst, size_t n);
void ggml_quantize_q5_0(const float *src, void *dst, size_t n);
/* n values to n little-endian f16. */
void ggml_quantize_f16(const float *src, void *dst, size_t n);

/* Quantize n values (rows of one tensor back to back, n a whole number of blocks of `type`) to
 * `type`: F32 (copied), F16, Q8_0, Q4_0, Q5_0, Q4_K or Q6_K. Returns the bytes written, or 0
 * when the type is not one of these or n is not a whole number of its blocks (dst untouched). */
size_t ggml_quantize(uint32_t type, const float *src, void *dst, size_t n);

/* llama.cpp's llama_ftype values of the ftypes ftune writes (also the GGUF key
 * general.file_type that llama_model_quantize stores). */
enum {
    GGML_FTYPE_Q4_0 = 2,    /* LLAMA_FTYPE_MOSTLY_Q4_0 */
    GGML_FTYPE_Q8_0 = 7,    /* LLAMA_FTYPE_MOSTLY_Q8_0 */
    GGML_FTYPE_Q4_K_M = 15, /* LLAMA_FTYPE_MOSTLY_Q4_K_M */
    GGML_FTYPE_Q6_K = 18    /* LLAMA_FTYPE_MOSTLY_Q6_K */
};

/* "q4_k_m", "q8_0", "q4_0", "q6_k" (any case) -> the ftype; -1 when unknown. */
int ggml_ftype_parse(const char *name);
const char *ggml_ftype_name(int ftype); /* "Q4_K_M" ...; NULL when unknown */

/* The per-tensor type rule of one model: what llama_model_quantize (llama-quant.cpp,
 * llama_tensor_get_type with default parameters: no imatrix, no overrides, output quantized)
 * picks for each tensor of an F32 GGUF.
 *   - kept as they are (F32): tensors with fewer than 2 dims (trailing dims of 1 not counted),
 *     names not ending in "weight", *_norm.weight, and a few named kinds llama.cpp never
 *     quantizes (ffn_gate_inp, position embeddings, ...);
 *   - output.weight, and token_embd.weight when the model has no output.weight (tied): Q6_K, or
 *     Q8_0 when the ftype is Q8_0 or the row is not a multiple of the ftype's block;
 *   - Q4_K_M: attn_v (also attn_qkv, attn_kv_b) of the layers where use_more_bits(i, n) holds
 *     (i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2; i counts those tensors in llama.cpp's order:
 *     by layer number, then name; n is their number) -> Q6_K, and ffn_down likewise with n the
 *     block count -> Q6_K; on a "70B" model (llama or qwen2 with 80 layers, llama grouped-query)
 *     the other attn_v -> Q5_K (which ggml_quantize does not write); the rest Q4_K;
 *   - Q4_0, Q8_0, Q6_K: everything else the ftype's own type;
 *   - then the shape fallback, when a row (ne[0]) is not a multiple of the type's block:
 *     Q4_K -> Q5_0, Q6_K -> Q8_0, and F16 when the row is not a multiple of 32 either.
 * The plan borrows `names` (all tensor names of the model) for as long as it is used. */
typedef struct ggml_qplan {
    int ftype;
    int n_layer;  /* block_count */
    int n_attn_v; /* tensors of the attn_v kind */
    int tied;     /* no output.weight among the names */
    int is_70b;
    const char *const *names;
    size_t n_names;
} ggml_qplan;

/* arch: general.architecture ("llama", "qwen2", "qwen3"); n_head / n_head_kv only tell a 70B
 * llama from a 65B one. Returns 0, or -1 when ftype is not one of the GGML_FTYPE_ values. */
int ggml_qplan_init(ggml_qplan *p, int ftype, const char *arch, int n_layer, int n_head,
                    int n_head_kv, const char *const *names, size_t n_names);
/* The type of tensor `name` with n_dims dims ne[0..n_dims-1] (ne[0] the row), stored as F32. */
uint32_t ggml_qplan_type(const ggml_qplan *p, const char *name, int n_dims, const int64_t *ne);

/* llama.cpp's tensor order (llama_model_loader's weight_name_comparer), in which
 * llama_model_quantize counts attn_v / ffn_down tensors and writes its output file's tensors:
 * by the layer number N of a "blk.N." prefix (names without one first), then by name (strcmp).
 * Returns <0, 0, >0 like strcmp. The output file's metadata is the input's in order, except that
 * general.quantization_version (u32 2) and general.file_type (u32 ftype) are removed and
 * appended last, in that order; each tensor's data is zero-padded to the alignment. */
int ggml_quant_order_cmp(const char *a, const char *b);

/* ggml_quantize as a status: 0, or -1 for a type not written here or n not whole blocks (the
 * export writer's and qtensor's Q8_0 entry point). */
int ggml_quantize_row(uint32_t type, const float *src, void *dst, size_t n);

#endif
