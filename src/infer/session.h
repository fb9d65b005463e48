/*
 * session.h: what ftune generate and ftune chat hold: the model with its frozen weights in the
 * format asked for, the adapters and their weights, the tokenizer, the chat template, the
 * folder's generation defaults and the KV cache.
 *
 * The chat template's end of turn is found by rendering a probe conversation (a user turn and
 * an assistant answer) and reading what the template writes right after the answer: when that
 * starts with a special token (<|im_end|>, <|eot_id|>, </s>, <end_of_turn>) generation stops at
 * it as at an end-of-sequence id; otherwise the text itself is a stop string.
 */
#ifndef FT_INFER_SESSION_H
#define FT_INFER_SESSION_H

#include "infer/generate.h"
#include "tok/chat_template.h"

#define INFER_MAX_ADAPTERS 32

typedef struct infer_session_options {
    const char *model_dir;
    const char *const *adapters; /* "DIR" or "DIR:WEIGHT" (weight 1 when absent) */
    int n_adapters;
    model_load_options load;          /* how the frozen weights are stored (--quant, ...) */
    const char *chat_template;        /* a .jinja file instead of the model's */
    const char *const *template_args; /* "KEY=VALUE" template variables */
    int n_template_args;
    int need_tokenizer; /* tokenizer.json must exist */
    int need_template;  /* so must a chat template */
    int threads;        /* 0: all cores */
} infer_session_options;

typedef struct infer_session {
    model m;
    lora_set *ls[INFER_MAX_ADAPTERS];
    infer_adapter ad[INFER_MAX_ADAPTERS];
    int n_ad;
    tokenizer *tok;     /* NULL when the folder has no tokenizer.json and none is needed */
    chat_template *tpl; /* NULL unless need_template */
    cJSON *targs;       /* template variables (NULL: none) */
    gen_defaults gd;
    int32_t eot;       /* the template's end-of-turn id, or -1 */
    char eot_text[64]; /* or its end-of-turn text (a stop string), or "" */
    infer_model im;
    int started;
} infer_session;

/* Load everything but the cache. Errors name the file, tensor or option. */
ft_status infer_session_open(const infer_session_options *o, infer_session *s, ft_error *err);
/* Allocate the KV cache for ctx positions and the scratch. */
ft_status infer_session_start(infer_session *s, int ctx, kv_format kvf, ft_error *err);
void infer_session_close(infer_session *s);

/* The ids of messages rendered through the chat template with the generation prompt and
 * encoded without special tokens added (transformers' apply_chat_template(tokenize=True,
 * add_generation_prompt=True)). */
ft_status infer_session_render(const infer_session *s, const cJSON *messages, int32_t **ids,
                               size_t *n, ft_error *err);
/* The ids of plain text, with the special tokens the tokenizer adds (BOS ...), as
 * tokenizer(text) in transformers. where names the text's source in errors (invalid UTF-8). */
ft_status infer_session_encode(const infer_session *s, const char *text, size_t len,
                               const char *where, int32_t **ids, size_t *n, ft_error *err);

#endif
