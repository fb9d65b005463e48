/*
 * atomic.h: every file ftune writes goes through here. Data is written to "PATH.tmp-PID",
 * flushed (fsync), then renamed over PATH, and the directory is synced, so a reader (or a
 * resumed run) sees either the old file or the complete new one, never half of one.
 */
#ifndef FT_IO_ATOMIC_H
#define FT_IO_ATOMIC_H

#include "ftune.h"

typedef struct atomic_file {
    FILE *f;
    char path[4096];
    char tmp[4200];
    int failed; /* a write failed; atomic_close will report it and remove the temp file */
} atomic_file;

ft_status atomic_open(atomic_file *af, const char *path, ft_error *err);
/* Write n bytes; failures are remembered and reported by atomic_close. */
void atomic_write(atomic_file *af, const void *data, size_t n);
void atomic_printf(atomic_file *af, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Flush, fsync and rename into place; on any failure the temp file is removed and the old
 * file (if any) is left untouched. */
ft_status atomic_close(atomic_file *af, ft_error *err);
/* Drop the temp file without touching PATH. */
void atomic_abort(atomic_file *af);

/* Write a whole buffer atomically. */
ft_status atomic_write_file(const char *path, const void *data, size_t n, ft_error *err);

/* mkdir -p */
ft_status make_dirs(const char *path, ft_error *err);

#endif
