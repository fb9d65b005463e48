/*
 * config.h: a Hugging Face config.json turned into the numbers and switches of one model, and
 * the table of architectures ftune supports.
 *
 * An architecture is a row of arch_table (config.c): its class name, which projections are fused,
 * which biases exist by default, whether q/k are RMS-normalised per head, and the tensor name of
 * each weight. The rest of the code reads these fields; it never compares architecture names.
 */
#ifndef FT_MODEL_CONFIG_H
#define FT_MODEL_CONFIG_H

#include "ftune.h"

typedef struct arch_info {
    const char *hf_class;   /* "LlamaForCausalLM" (the "architectures" entry of config.json) */
    const char *model_type; /* "llama" */
    int fused_qkv;          /* one qkv_proj [(H+2Hkv)D, C]: q rows, then k, then v (Phi-3) */
    int fused_gate_up;      /* one gate_up_proj [2I, C]: gate rows, then up rows (Phi-3) */
    int qkv_bias;           /* q/k/v biases always present (Qwen2) */
    int qk_norm;            /* RMSNorm over each head of q and of k, before RoPE (Qwen3) */
    int uses_attention_bias;/* config field attention_bias switches q,k,v,o biases (Llama, Qwen3) */
    int uses_mlp_bias;      /* config field mlp_bias switches gate,up,down biases (Llama) */
    int uses_sliding_window;/* config field sliding_window applies (Mistral, Phi-3; Qwen2/3
                               through use_sliding_window / layer_types) */
} arch_info;

/* The linear layers of a block, in PEFT's names. For fused architectures only the fused
 * names exist; LIN_QKV / LIN_GATE_UP are used instead of Q,K,V / GATE,UP. */
typedef enum lin_kind {
    LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_QKV, LIN_GATE_UP, LIN_COUNT
} lin_kind;
extern const char *const lin_names[LIN_COUNT]; /* "q_proj", ..., "qkv_proj", "gate_up_proj" */

typedef struct model_config {
    const arch_info *arch;
    int C;          /* hidden_size */
    int I;          /* intermediate_size */
    int L;          /* num_hidden_layers */
    int H;          /* num_attention_heads */
    int Hkv;        /* num_key_value_heads (defaults to H) */
    int D;          /* head_dim (defaults to C / H) */
    int V;          /* vocab_size */
    float eps;      /* rms_norm_eps */
    int tie_embeddings;    /* tie_word_embeddings (class default false for all five in
                              transformers 5.23; small Qwen/SmolLM files say true) */
    int attn_bias;  /* biases on q,k,v */
    int o_bias;     /* bias on o_proj */
    int mlp_bias;   /* biases on gate, up, down */
    int max_pos;    /* max_position_embeddings */
    int *window;    /* (L) sliding window per layer, 0 = full attention; with window W query
                       i sees keys j with i - W < j <= i (transformers' sliding_window_overlay) */
    /* RoPE, after rope_scaling / rope_parameters are applied: */
    int rot_dim;         /* rotated dims per head: D * partial_rotary_factor */
    float *inv_freq;     /* (rot_dim / 2) */
    float attn_scaling;  /* multiplies cos and sin (1 unless the rope type defines one) */
    char torch_dtype[16];/* as written in config.json ("float32", "bfloat16", ...), or "" */
    long bos_token_id, eos_token_id; /* the class default when absent (Llama 1/2...), -1 when
                                        null or no default; the first of a list */
} model_config;

/* Read DIR/config.json. Every error names config.json and the field. Unknown architectures,
 * unsupported rope types and activations other than silu are FT_ERR_INPUT with a hint. */
ft_status model_config_load(const char *dir, model_config *cfg, ft_error *err);
/* FT_OK when dir/config.json can be opened; else an error that says what dir is instead: a
 * GGUF file (which model_config_load reads, but this folder-only check refuses), a file, a Hub id ("org/name": download it first), a Hugging Face
 * cache folder (models--org--name: pass a snapshots/ folder), or a folder without config.json. */
ft_status model_dir_check(const char *dir, ft_error *err);
void model_config_free(model_config *cfg);
/* The architecture row of a model_type ("llama", "qwen2", ...), or NULL. */
const arch_info *arch_find(const char *model_type);
/* inv[i] = 1 / theta^(2i/dim) in fp32 as torch computes it (dim/2 values). */
void rope_inv_freq_default(float *inv, int dim, double theta);

/* Weight tensor names in the HF checkpoint: "model.layers.3.self_attn.q_proj.weight". */
void weight_name(char *buf, size_t n, int layer, lin_kind k, const char *suffix /* "weight"/"bias" */);

#endif
