/*
 * gguf_tok.h: a Hugging Face model folder's tokenizer as GGUF metadata (tokenizer.ggml.*,
 * tokenizer.chat_template), the keys llama.cpp's convert_hf_to_gguf.py writes, so llama.cpp
 * tokenizes as `tokenizers` does. gguf_tok.c says which tokenizers are supported and how each
 * key is derived.
 */
#ifndef FT_MERGE_GGUF_TOK_H
#define FT_MERGE_GGUF_TOK_H

#include "ftune.h"
#include "io/gguf_write.h"

#include <cjson/cJSON.h>

/* Which of the converter's vocabulary paths the architecture takes. */
typedef enum {
    GGUF_TOK_GPT2,  /* byte-level BPE only (Qwen2, Qwen3; Phi-3 folders with a GPT2Tokenizer) */
    GGUF_TOK_LLAMA, /* LlamaModel: also SentencePiece-style tokenizer.json (LlamaHfVocab), and
                       the "llama" extra keys (add_space_prefix) */
    GGUF_TOK_PHI3   /* Phi3MiniModel's SentencePiece path, from tokenizer.json (the converter
                       reads tokenizer.model): SentencePiece-style tokenizer.json only */
} gguf_tok_flavor;

/* Add the tokenizer keys of model_dir (tokenizer.json, tokenizer_config.json, chat template
 * files; cfg is its config.json) to w. vocab_size: the model's embedding rows (the token list is
 * padded to it). */
ft_status gguf_tok_write(gguf_writer *w, const char *model_dir, const cJSON *cfg, int vocab_size,
                         gguf_tok_flavor flavor, ft_error *err);

#endif
