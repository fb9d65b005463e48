/*
 * model.h: a decoder-only transformer (Llama family) with frozen fp32 weights and optional LoRA,
 * and its training step written by hand, forward and backward, per operation (src/ops/).
 *
 * Frozen weights are qtensors (ops/qtensor.h): the linear layers in the format --quant asks for
 * (fp32 by default; NF4/FP4 as bitsandbytes, Q8_0 as GGUF, bf16), quantized one tensor at a time
 * as they are read, or borrowed as they are from a bitsandbytes 4-bit checkpoint; the embedding
 * left in the checkpoint in its own dtype and read a row at a time (pread: none of it resident,
 * rather than a converted copy); the LM head in its own format. Norm weights and biases stay fp32.
 *
 * Three structs, in the manner of llama2.c: model (config + frozen weights + LoRA), acts (every
 * activation the backward pass needs, sized once for B x T tokens), and batch (the ids, targets
 * and positions of one micro-batch; data/batch.h). Nothing is allocated during a step.
 * Implemented in load.c (loading, storage of the frozen weights), acts.c (the activation block
 * and its sizes) and block.c (the block's forward and backward, the step).
 *
 * One block, with x the residual stream (N = B*T rows of C):
 *   h = rmsnorm(x); q,k,v = h Wq^T, h Wk^T, h Wv^T (+ LoRA, + biases); [q,k = rmsnorm per head];
 *   q,k = rope(q,k); a = attention(q,k,v); x = x + a Wo^T;
 *   h = rmsnorm(x); x = x + (silu(h Wg^T) * h Wu^T) Wd^T
 * then rmsnorm and the LM head, with cross-entropy over chunks of tokens.
 */
#ifndef FT_MODEL_MODEL_H
#define FT_MODEL_MODEL_H

#include "data/batch.h"
#include "ftune.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/lora.h"
#include "ops/qtensor.h"

typedef struct lin_weights {
    qtensor W;      /* (out, in); out == 0 when the architecture has no such layer */
    const float *b; /* (out) or NULL */
    int in, out;
    int col; /* first column this layer writes in its block's fused output buffer */
} lin_weights;

typedef struct block_weights {
    const float *ln1, *ln2;       /* (C) */
    const float *q_norm, *k_norm; /* (D), Qwen3 only */
    lin_weights lin[LIN_COUNT];
} block_weights;

/* How the frozen weights are stored (ftune train / eval / plan: --quant and friends). */
typedef struct model_load_options {
    const char *quant;   /* linear layers: "nf4", "fp4", "q8", "bf16", or NULL / "none" (fp32) */
    int double_quant;    /* NF4/FP4: quantize the absmax values too (bnb_4bit_use_double_quant) */
    int blocksize;       /* NF4/FP4 block size (0: 64, bitsandbytes' default) */
    const char *lm_head; /* "q8", "bf16", "none" (fp32), or NULL: the checkpoint's own dtype when
                            the linear layers are quantized, fp32 otherwise */
    const char *dtype;   /* compute type of the frozen-weight matmuls (linear layers and LM
                            head): "fp32" (NULL) or "bf16" (qtensor.h, QC_BF16). bf16 without
                            quant / lm_head stores those weights as bf16 too. */
    int shard;           /* --shard-base: keep this rank's slice of each layer and of the LM head
                            (shard.c); only under mpirun with several ranks */
} model_load_options;

/* The options resolved against a model folder: formats of every kind of frozen weight. */
typedef struct model_quant {
    qformat linear;     /* the linear layers */
    qformat lm_head;    /* the LM head */
    qformat embed;      /* the embedding as looked up (its source dtype when borrowed) */
    int embed_borrowed; /* the embedding stays in the mapped file */
    int head_borrowed;  /* so does the LM head (its format is the checkpoint's dtype) */
    int head_is_embed;  /* tied and borrowed: the LM head is the embedding's pages */
    int double_quant, blocksize;
    int from_checkpoint; /* the linear layers come quantized by bitsandbytes in the folder */
    qcompute compute;    /* QC_BF16 under dtype "bf16": set on the linear layers and LM head */
    unsigned linear_mix; /* GGUF kept as stored, types mixed: bit f set for each qformat f the
                            linear layers have (linear is then the one needing most scratch) */
    size_t linear_bytes; /* nonzero: the linear layers' bytes (mixed types), else from linear */
} model_quant;

/* Resolve opt (NULL: fp32) for the model in DIR (config.json, and the safetensors header for
 * the dtypes, when there are weight files). Errors name the option and what it accepts. */
ft_status model_quant_resolve(const char *dir, const model_config *cfg,
                              const model_load_options *opt, model_quant *q, ft_error *err);
/* The first stored-only format (qtensor.h: GGUF Q4_0, Q4_K, Q6_K) the linear layers or the LM
 * head are kept in, or -1: training refuses those (their backward is not supported yet). */
int model_quant_stored_only(const model_quant *q);
/* "nf4, double quant, blocksize 64; lm_head bf16; embedding bf16 (mapped)" for messages. */
void model_quant_describe(const model_quant *q, char *buf, size_t n);

typedef struct model {
    model_config cfg;
    model_quant quant;
    qtensor wte;         /* (V, C) */
    qtensor lm_head;     /* (V, C): a copy of wte (borrowed data) when tied and borrowed */
    const float *norm_f; /* (C) */
    block_weights *blocks;
    float *weights; /* one allocation holding the fp32 norms, biases and fp32 linear weights */
    size_t n_weights;
    size_t weight_bytes;  /* frozen weights resident while training (model_weight_bytes) */
    st_set *src;          /* the mapped checkpoint borrowed tensors point into */
    int wte_fd;           /* fd + 1 of the embedding's file, whose rows are read with pread()
                             (0: none; rows come from wte) */
    long long wte_offset; /* at this offset (see model_forward) */
    lora_set *lora;       /* NULL: no adapter */
    int QKV;              /* (H + 2 Hkv) D: width of the fused q|k|v buffer */
    /* --shard-base: this rank's slices (NULL: whole weights) */
    struct model_shard *shard;
    int head_rows; /* the LM head's rows per chunk of the loss (model_head_chunk_rows) */
    /* when set, model_backward calls it once layer l's LoRA gradients are complete (train_step:
     * the reduction of a data-parallel run starts there, overlapped with the layers below) */
    void (*grads_ready)(void *ctx, int layer);
    void *grads_ctx;
} model;

/* ---- --shard-base (shard.c; docs/distributed.md) ----------------------------------------
 * Units are the L layers' linear weights (0 .. L-1) and the LM head's chunks of rows (L ..
 * L + model_head_chunks - 1; model_shard_head_use). Loading calls begin,
 * unit for each unit once loaded (the rank keeps its slice, the rest is freed), and end (the two
 * gather buffers). model_shard_use(l, next) makes unit l's weights whole (waiting for its
 * all-gather, started now if it was not prefetched) and starts gathering `next` (-1: none) into
 * the other buffer; every rank must make the same calls in the same order. All are no-ops when
 * m->shard is NULL. */
typedef struct model_shard model_shard;
ft_status model_shard_begin(model *m, ft_error *err);
ft_status model_shard_unit(model *m, int l, ft_error *err);
/* The LM head once loaded: this rank's slice of each chunk, then the head freed. */
ft_status model_shard_head(model *m, ft_error *err);
ft_status model_shard_end(model *m, ft_error *err);
void model_shard_use(const model *m, int l, int next);
/* The head's chunk k whole (as model_shard_use(L + k)), gathering chunk `next` next (-1: the
 * layer after the head: L - 1 when train, else 0); returns its rows as a qtensor. */
const struct qtensor *model_shard_head_use(const model *m, int k, int next, int train);
/* The sequence of one micro-batch's forward (and backward when train) without computing: a rank
 * with no micro-batch left in a step takes part in the others' gathers. */
void model_shard_walk(model *m, int train);
/* Wait for gathers in flight (before the program leaves MPI). */
void model_shard_drain(model *m);
void model_shard_free(model *m);
/* This rank's resident bytes of linear weights and LM head: its slices and the two buffers. */
size_t model_shard_resident(const model *m);
/* Bytes of the checkpoint read while loading under --shard-base: the loader counts what it reads
 * whole (norms, tensors converted or quantized, a bitsandbytes weight's small parts), shard.c
 * its slices; FTUNE_DEBUG_READ=1 makes each rank print its count to stderr once loaded. */
void model_shard_count_read(model *m, size_t bytes);
void model_shard_report_read(const model *m);
/* Seconds waited for gathers, bytes gathered, and gathers started, so far. */
void model_shard_stats(const model *m, double *wait_s, double *gathered_bytes, long *gathers);
/* The fp32 norms and biases (model->weights) in bytes. */
size_t model_fp32_bytes(const model_config *c);
/* The packed bytes of unit l (L .. L + model_head_chunks - 1: the LM head's chunks) for this
 * config and storage: the plan's numbers. */
size_t model_shard_unit_bytes(const model_config *c, const model_quant *q, int l);
/* The LM head's rows per chunk: as many as make about one layer's bytes (a multiple of 64), or
 * V (one chunk) for a head whose rows are not stored one after another (4-bit, GGUF K-quants).
 * The loss takes the head in these chunks with or without --shard-base (the same bits); with
 * it each chunk is a unit of its own, so the gather buffers are those of two layers. */
int model_head_chunk_rows(const model_config *c, const model_quant *q);
int model_head_chunks(const model_config *c, const model_quant *q);

/* Load DIR (config.json + safetensors) with fp32 weights. */
ft_status model_load(const char *dir, model *m, ft_error *err);
/* Load DIR with the weights stored as opt says (NULL: fp32). Linear weights are converted and
 * quantized one tensor at a time and their pages in the mapped file released, so the
 * full-precision model is never in memory. */
ft_status model_load_with(const char *dir, const model_load_options *opt, model *m, ft_error *err);
void model_free(model *m);
/* Bytes of frozen weights resident while training with this config and storage (what
 * m->weight_bytes comes to). An embedding left in the file is read a row at a time (pread)
 * and is not resident; a tied one that is also the LM head counts once. */
size_t model_weight_bytes(const model_config *c, const model_quant *q);

/* Gradient checkpointing (acts_alloc_ckpt's ckpt): none; each layer's input kept in fp32; or
 * kept rounded to bf16 (round to nearest even), the forward continuing from the rounded value so
 * that the recompute in backward sees exactly what the forward used: the gradients are exact
 * for that slightly rounded model, with half the memory for the kept inputs. */
enum { CKPT_NONE = 0, CKPT_FP32 = 1, CKPT_BF16 = 2 };
/* --grad-checkpoint-dtype: "fp32" (or NULL) -> CKPT_FP32, "bf16" -> CKPT_BF16, else -1. */
int ckpt_dtype_parse(const char *dtype);

/* Activations and scratch for up to maxN = B*T tokens. */
typedef struct acts acts;
ft_status acts_alloc(const model *m, int maxB, int maxT, int xent_chunk, acts **out, ft_error *err);
/* The same with gradient checkpointing when ckpt != CKPT_NONE: each layer's input is kept (fp32
 * or bf16) and the rest of the layer is recomputed during backward (memory of one layer
 * instead of L). */
ft_status acts_alloc_ckpt(const model *m, int maxB, int maxT, int xent_chunk, int ckpt, acts **out,
                          ft_error *err);
/* Round each layer's input to bf16 as CKPT_BF16 does, without checkpointing (every activation
 * kept): the reference the bf16 checkpoints are tested against (model_test.c). */
void acts_round_inputs(acts *a);
/* acts_alloc_ckpt with the checkpointed MLP run in chunks of mlp_rows rows (0: the default,
 * which the plan assumes; tests use small ones). */
ft_status acts_alloc_rows(const model *m, int maxB, int maxT, int xent_chunk, int ckpt,
                          int mlp_rows, acts **out, ft_error *err);
/* The most scratch one frozen-weight matmul of a step holds (qmatmul_scratch_bytes over the
 * linear layers with N rows and the LM head with the loss's chunk of rows, or all N rows for an
 * eval's logits), from the config and the resolved formats alone. acts_alloc carves it from the
 * activation block, so no matmul allocates. */
size_t model_matmul_scratch_bytes(const model_config *c, const model_quant *q, int N);

/* Bytes acts_alloc would take (for the memory plan); bf16: the model computes in bf16
 * (model_quant.compute QC_BF16), whose attention may need a larger workspace. */
size_t acts_plan_bytes(const model_config *c, int lora_r, int lora_modules, int maxB, int maxT,
                       int ckpt, int bf16);
void acts_free(acts *a);
size_t acts_bytes(const acts *a);

/* Forward; returns the summed token loss over counted targets (and their number in *count).
 * When logits != NULL, also writes the (B*T, V) logits of every position (for eval dumps).
 * train != 0 keeps what backward needs and applies LoRA dropout. */
double model_forward(const model *m, acts *a, const batch *b, int train, uint64_t drop_seed,
                     float *logits, long *count);
/* out (C) = row id of the embedding in fp32, read from the checkpoint with pread() when the
 * embedding stays in the file (model_forward says why), else from wte. raw: scratch for the row
 * as stored (at least 4 C bytes). Generation (src/infer/) looks tokens up with it too. */
void model_embed_row(const model *m, int id, float *out, void *raw);
/* Backward of the last model_forward(train=1): LoRA grads += grad_scale * d(loss sum). */
void model_backward(model *m, acts *a, const batch *b, float grad_scale, uint64_t drop_seed);

#endif
