/*
 * dataset.h: training examples as token ids with labels, how they are read from the formats
 * people fine-tune on, packed, mixed and split, and the micro-batches built from them.
 *
 * An example is ids + labels (-100 = not trained on). Labels are unshifted as in transformers:
 * position t is trained to predict labels[t + 1]. A packed example (a row of --seq-len tokens)
 * holds several documents one after the other; docs[] gives their lengths, positions restart at
 * each document and no token attends across a boundary (batch.seg).
 *
 * data_load reads every --data source (a file or a folder, "PATH:WEIGHT" for a share of the
 * sampled examples), detects each file's format from the keys of its lines (docs/data.md):
 * text, prompt/completion, messages (+ tools) through the model's chat template, Alpaca
 * instruction/input/output, pre-tokenized input_ids/labels, and .txt files; builds the loss
 * masks as TRL's SFTTrainer does (src/data/formats.c, src/data/masks.c), truncates or drops
 * long examples, splits off validation examples, mixes the sources by weight and packs.
 */
#ifndef FT_DATA_DATASET_H
#define FT_DATA_DATASET_H

#include "data/batch.h"
#include "ftune.h"

typedef struct example {
    int32_t *ids;
    int32_t *labels;
    int n;
    int *docs;  /* lengths of the documents packed in this row; NULL: one document */
    int n_docs; /* 0 when docs is NULL */
} example;

typedef struct dataset {
    example *ex;
    int n;
    int n_truncated; /* examples cut to seq_len */
    long tokens;     /* after truncation */
    int max_len;     /* longest example after truncation */
    /* filled by data_load */
    long trained;            /* tokens counted in the loss */
    int n_docs;              /* examples before packing (== n without packing) */
    int n_dropped_long;      /* longer than seq_len with drop_long */
    int n_dropped_masked;    /* nothing left to train on (e.g. the prompt alone fills seq_len) */
    int n_no_assistant;      /* conversations without an assistant turn to train on */
    int packed;              /* rows are packed: efficiency = tokens / (n * seq_len) */
    char first_dropped[320]; /* FILE:LINE of the first dropped example, for the warning */
} dataset;

void dataset_free(dataset *ds);

typedef struct data_options {
    const char *const *sources; /* "PATH" or "PATH:WEIGHT"; PATH a file or a folder */
    int n_sources;
    const char *val_data;             /* validation file or folder (NULL: none) */
    double val_split;                 /* else this fraction of each source is held out (0: none) */
    const char *model_dir;            /* tokenizer.json, tokenizer_config.json, chat template */
    const char *chat_template;        /* a .jinja file instead of the model's template (NULL) */
    const char *const *template_args; /* "key=value" template variables (value JSON or text) */
    int n_template_args;
    int vocab, seq_len;
    int drop_long;       /* drop examples longer than seq_len instead of truncating them */
    int train_on_inputs; /* no loss mask: train on every token */
    int pack;            /* pack examples into rows of seq_len tokens */
    int txt_paragraphs;  /* .txt files: documents separated by blank lines (else one per file) */
    long max_examples;   /* > 0: use at most this many training examples */
    uint64_t seed;       /* mixing, validation split and packing order */
} data_options;

/* Everything above; *hash fingerprints the bytes of every file read (in order). val may be NULL
 * when no validation data is asked for; it is left empty (n = 0) when none is. */
ft_status data_load(const data_options *o, dataset *train, dataset *val, char hash[17],
                    ft_error *err);
/* Write ds as JSONL lines {"input_ids": [...], "labels": [...]} (and "docs" for packed rows). */
ft_status data_write_jsonl(const dataset *ds, const char *path, ft_error *err);

/* Tokens of example e that count in the loss (targets that are not -100, none across a
 * document boundary). */
long example_counted(const example *e);

/* Space for micro-batches of up to maxB rows of maxT tokens (and their document ids). */
ft_status batch_alloc(batch *b, int maxB, int maxT, ft_error *err);
void batch_free(batch *b);
/* Fill b with examples idx[0..nb): right-padded to the longest, positions 0..len-1 restarting
 * at each packed document, targets[t] = labels[t + 1] within a document (-100 at the last
 * position of each document and at padding). b->seg is NULL unless a row holds several
 * documents. */
void batch_fill(batch *b, const dataset *ds, const int *idx, int nb);

#endif
