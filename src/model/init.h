/* init.h: write a random-weight Hugging Face model folder (see init.c). */
#ifndef FT_MODEL_INIT_H
#define FT_MODEL_INIT_H
#include "ftune.h"
/* arch: llama, mistral, qwen2, qwen3, phi3; size: tiny, small, smollm-135m. */
ft_status model_init_random(const char *arch, const char *size, int vocab, uint64_t seed,
                            const char *out_dir, ft_error *err);
#endif
