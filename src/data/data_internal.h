/*
 * data_internal.h: what the files of src/data share: the reading context (tokenizer, chat
 * template, counts), a growable list of examples, and the helpers of formats.c and masks.c.
 */
#ifndef FT_DATA_INTERNAL_H
#define FT_DATA_INTERNAL_H

#include "data/dataset.h"
#include "tok/chat_template.h"
#include "tok/tokenizer.h"

#include <cjson/cJSON.h>

typedef struct exvec {
    example *v;
    int n, cap;
} exvec;

typedef struct data_ctx {
    const data_options *o;
    tokenizer *tok;      /* loaded on first need */
    chat_template *tpl;  /* loaded on first need */
    char *eos;           /* tokenizer_config.json eos_token (NULL: none) */
    int tok_loaded;
    cJSON *extra;        /* --template-arg values as a JSON object, or NULL */
    uint64_t hash;       /* over the bytes of every file read */
    /* counts, summed over everything read */
    int n_truncated, n_dropped_long, n_dropped_masked, n_no_assistant;
    char first_dropped[320];
} data_ctx;

ft_status exvec_push(exvec *v, example e, ft_error *err);
void exvec_free(exvec *v);

/* Read one file (JSONL of any supported format, or .txt) and append its examples to out. */
ft_status data_read_file(data_ctx *c, const char *path, exvec *out, ft_error *err);

/* JSON list of integers in [0, vocab) (or -100 when is_labels); errors name where and field. */
ft_status read_int_array(const cJSON *arr, const char *field, int vocab, int is_labels,
                         int32_t **out, int *n, const char *where, ft_error *err);

/* Byte offset of each token of ids in text: off[i] .. off[i + 1] is token i (off has n + 1
 * entries). Exact for byte-level BPE and SentencePiece-style vocabularies. */
void token_offsets(const tokenizer *t, const char *text, size_t len, const int32_t *ids, size_t n,
                   size_t *off);

/* The byte spans of R (the whole conversation rendered) that are assistant output, found
 * without {% generation %} markers by rendering the conversation prefix by prefix (masks.c,
 * docs/data.md). *spans is malloc'ed. */
ft_status assistant_spans(const chat_template *tpl, const tokenizer *tok, const cJSON *messages,
                          const cJSON *tools, const cJSON *extra, const char *R, size_t len,
                          chat_span **spans, int *n_spans, ft_error *err);

#endif
