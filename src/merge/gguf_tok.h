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

/* Add the tokenizer keys of model_dir (tokenizer.json, tokenizer_config.json, chat template
 * files; cfg is its config.json) to w. vocab_size: the model's embedding rows (the token list is
 * padded to it). llama_arch: the "llama" architecture's extra keys (add_space_prefix). */
ft_status gguf_tok_write(gguf_writer *w, const char *model_dir, const cJSON *cfg, int vocab_size,
                         int llama_arch, ft_error *err);

#endif
