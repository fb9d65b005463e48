/*
 * spans.h: byte ranges of the tensors of a file, and the check that no two share bytes (the
 * safetensors and GGUF readers both refuse overlapping tensor data).
 */
#ifndef FT_IO_SPANS_H
#define FT_IO_SPANS_H

#include <stdint.h>

typedef struct io_span {
    uint64_t begin, end; /* [begin, end) */
    int idx;             /* the caller's tensor index */
} io_span;

/* Sorts sp (n) by begin and returns the position in sp of the first non-empty span that starts
 * before the end of the non-empty span sorted before it (at *prev), or -1 when none overlap. */
int io_spans_overlap(io_span *sp, int n, int *prev);

#endif
