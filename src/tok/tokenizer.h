/*
 * tokenizer.h: text to token ids and back, with a model's own Hugging Face tokenizer.json.
 *
 * tok_load reads tokenizer.json (BPE models: byte-level like GPT-2/Llama 3/Qwen, or
 * SentencePiece-style with byte fallback like Llama 2/Mistral) with its added tokens,
 * normalizer, pre-tokenizer, post-processor and decoder, and refuses at load time, with an
 * FT_ERR_INPUT naming the file and the JSON path of the component, anything it does not
 * implement exactly. tok_encode then gives the same ids as the `tokenizers` package's
 * Tokenizer.encode(text, add_special_tokens).ids, and tok_decode the same text as
 * Tokenizer.decode(ids, skip_special_tokens).
 *
 * Text is UTF-8. Input that is not valid UTF-8 is rejected with FT_ERR_INPUT naming the byte
 * offset of the first invalid sequence (what Python's strict UTF-8 decoding does before any text
 * could reach `tokenizers`). A loaded tokenizer is read-only: any number of threads may call
 * tok_encode / tok_decode on it at once (per-thread caches are kept internally).
 */
#ifndef FT_TOK_TOKENIZER_H
#define FT_TOK_TOKENIZER_H

#include "ftune.h"

#include <cjson/cJSON.h>

typedef struct tokenizer tokenizer;

/* path: a tokenizer.json file, a folder that contains one, or a GGUF file (the vocabulary in its
 * metadata, built as transformers' GGUF loader builds it: gguf_vocab.c). */
ft_status tok_load(const char *path, tokenizer **out, ft_error *err);
void tok_free(tokenizer *t);
/* The tokenizer_config.json of a model: DIR/tokenizer_config.json, or for a GGUF file the
 * equivalent built from its metadata (bos/eos/unk/pad tokens, add_bos_token, add_eos_token,
 * chat_template). FT_ERR_INPUT when there is none. */
ft_status tok_config_load(const char *model, cJSON **out, ft_error *err);

/* Encode len bytes of text. add_special_tokens: let the post-processor add BOS/EOS etc.
 * *ids is malloc'ed (caller frees), *n its length. */
ft_status tok_encode(const tokenizer *t, const char *text, size_t len, int add_special_tokens,
                     int32_t **ids, size_t *n, ft_error *err);
/* Decode ids to text; ids the tokenizer does not know are skipped (as `tokenizers` does).
 * *text is malloc'ed and NUL-terminated, *len its length without the NUL. */
ft_status tok_decode(const tokenizer *t, const int32_t *ids, size_t n, int skip_special_tokens,
                     char **text, size_t *len, ft_error *err);

/* Id of a token string (added tokens first, then the model's vocabulary); -1 if unknown. */
int32_t tok_token_to_id(const tokenizer *t, const char *token);
/* Token string of an id, or NULL if unknown. Valid as long as t. */
const char *tok_id_to_token(const tokenizer *t, int32_t id);
/* One more than the largest id (model vocabulary and added tokens). */
size_t tok_vocab_size(const tokenizer *t);
/* 1 if id is an added token marked "special" (BOS, EOS, <|im_end|>, ...). */
int tok_is_special(const tokenizer *t, int32_t id);

/* The ids the post-processor puts before and after a single sequence when
 * add_special_tokens is set (e.g. Llama 3: prefix = {128000}, suffix = {}). The arrays are
 * owned by t; counts may be 0. */
void tok_special_affixes(const tokenizer *t, const int32_t **prefix, size_t *n_prefix,
                         const int32_t **suffix, size_t *n_suffix);

#endif
