/*
 * atomic.c: write-to-temp, fsync, rename. See atomic.h.
 */
#include "io/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ft_status atomic_open(atomic_file *af, const char *path, ft_error *err) {
    memset(af, 0, sizeof *af);
    if (strlen(path) >= sizeof af->path)
        return ft_error_set(err, FT_ERR_INPUT, path, NULL, "path too long");
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp-%d", path, (int)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f)
        return ft_error_set(err, FT_ERR_RUNTIME, af->tmp,
                            "check that the output folder exists and is writable",
                            "cannot create file: %s", strerror(errno));
    return FT_OK;
}

void atomic_write(atomic_file *af, const void *data, size_t n) {
    if (af->failed || n == 0) return;
    if (fwrite(data, 1, n, af->f) != n) af->failed = errno ? errno : EIO;
}

void atomic_printf(atomic_file *af, const char *fmt, ...) {
    if (af->failed) return;
    va_list ap;
    va_start(ap, fmt);
    if (vfprintf(af->f, fmt, ap) < 0) af->failed = errno ? errno : EIO;
    va_end(ap);
}

static void sync_parent_dir(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

ft_status atomic_close(atomic_file *af, ft_error *err) {
    if (!af->f) return ft_error_set(err, FT_ERR_RUNTIME, af->path, NULL, "file not open");
    int e = af->failed;
    if (!e && fflush(af->f) != 0) e = errno;
    if (!e && fsync(fileno(af->f)) != 0) e = errno;
    if (fclose(af->f) != 0 && !e) e = errno;
    af->f = NULL;
    if (!e && rename(af->tmp, af->path) != 0) e = errno;
    if (e) {
        unlink(af->tmp);
        return ft_error_set(err, FT_ERR_RUNTIME, af->path,
                            e == ENOSPC ? "free some disk space and run again (the previous "
                                          "version of the file is intact)"
                                        : "the previous version of the file is intact",
                            "writing failed: %s", strerror(e));
    }
    sync_parent_dir(af->path);
    return FT_OK;
}

void atomic_abort(atomic_file *af) {
    if (af->f) fclose(af->f);
    af->f = NULL;
    unlink(af->tmp);
}

ft_status atomic_write_file(const char *path, const void *data, size_t n, ft_error *err) {
    atomic_file af;
    ft_status st = atomic_open(&af, path, err);
    if (st) return st;
    atomic_write(&af, data, n);
    return atomic_close(&af, err);
}

ft_status make_dirs(const char *path, ft_error *err) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    size_t n = strlen(buf);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return ft_error_set(err, FT_ERR_RUNTIME, buf,
                                    "check permissions of the output location",
                                    "cannot create folder: %s", strerror(errno));
            buf[i] = c;
        }
    }
    return FT_OK;
}
