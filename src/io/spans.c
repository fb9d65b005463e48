/*
 * spans.c: the overlap check and the page release of spans.h.
 */
#include "io/spans.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int span_cmp(const void *a, const void *b) {
    const io_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

int io_spans_overlap(io_span *sp, int n, int *prev) {
    qsort(sp, (size_t)n, sizeof *sp, span_cmp);
    int last = -1;
    for (int i = 0; i < n; i++) {
        if (sp[i].begin == sp[i].end) continue;
        if (last >= 0 && sp[i].begin < sp[last].end) {
            *prev = last;
            return i;
        }
        last = i;
    }
    return -1;
}

void io_release_pages(const void *p, size_t n) {
    if (!p || !n) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p & ~(page - 1);
    uintptr_t hi = ((uintptr_t)p + n + page - 1) & ~(page - 1);
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
}
