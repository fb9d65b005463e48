/*
 * spans.h: byte ranges of the tensors of a file, and the check that no two share bytes (the
 * safetensors and GGUF readers both refuse overlapping tensor data); giving a mapped range's
 * pages back.
 */
#ifndef FT_IO_SPANS_H
#define FT_IO_SPANS_H

#include <stddef.h>
#include <stdint.h>

typedef struct io_span {
    uint64_t begin, end; /* [begin, end) */
    int idx;             /* the caller's tensor index */
} io_span;

/* Sorts sp (n) by begin and returns the position in sp of the first non-empty span that starts
 * before the end of the non-empty span sorted before it (at *prev), or -1 when none overlap. */
int io_spans_overlap(io_span *sp, int n, int *prev);

/* The n bytes at p (in a read-only file mapping) are not needed for now: drop the whole pages
 * they span from this process's memory (madvise MADV_DONTNEED); the file stays mapped, and a
 * later read faults them in again from the page cache. */
void io_release_pages(const void *p, size_t n);

#endif
