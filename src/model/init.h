/* init.h: write a random-weight Hugging Face model folder (see init.c), and what the commands
 * that write model folders share: the check of the output folder and the tokenizer files. */
#ifndef FT_MODEL_INIT_H
#define FT_MODEL_INIT_H
#include "ftune.h"
/* arch: llama, mistral, qwen2, qwen3, phi3; size: tiny, small, smollm-135m. Writes into out_dir
 * whatever it holds (the library primitive tests use); bos 1, eos 2. */
ft_status model_init_random(const char *arch, const char *size, int vocab, uint64_t seed,
                            const char *out_dir, ft_error *err);

typedef struct model_init_options {
    const char *arch, *size, *out;
    const char *tokenizer; /* a folder with tokenizer.json (or the file), or NULL */
    long vocab;            /* 0: the tokenizer's size (added tokens included), else 512 */
    uint64_t seed;
    int overwrite; /* write into a non-empty out folder */
} model_init_options;
/* `ftune init`: out checked (model_out_check); with a tokenizer, the vocabulary sized from it,
 * bos/eos/pad_token_id from its tokenizer_config.json (or special_tokens_map.json), and its
 * files copied. */
ft_status model_init(const model_init_options *o, ft_error *err);

/* An output model folder: refused when it is the input folder in (the same path once made
 * absolute and free of symlinks, or the same inode), whatever overwrite says; when it exists and
 * is not empty, unless overwrite. in may be NULL. */
ft_status model_out_check(const char *out, const char *in, int overwrite, ft_error *err);
/* Copy the tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
 * added_tokens.json, tokenizer.model, vocab.json, merges.txt, chat_template.jinja/.json) and,
 * with generation_config, generation_config.json, those that exist, from one folder to another.
 * *copied (may be NULL) counts them. */
ft_status model_copy_tokenizer_files(const char *from, const char *to, int generation_config,
                                     int *copied, ft_error *err);
#endif
