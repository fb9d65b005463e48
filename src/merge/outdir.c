/*
 * outdir.c: temporary folder, then rename (see outdir.h).
 */
#include "merge/outdir.h"
#include "io/atomic.h"
#include "model/init.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Files a merge writes whose stale versions from an earlier save in the same folder would be
 * read with the new ones: model shards and index, an adapter. */
static const char *const STALE[] = {
    "model.safetensors",         "model-*-of-*.safetensors", "model.safetensors.index.json",
    "adapter_model.safetensors", "adapter_model.bin",        "pytorch_model*.bin"};

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[4500];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static int inside(const char *path, const char *dir) {
    char *a = realpath(path, NULL), *b = realpath(dir, NULL);
    int r = 0;
    if (a && b) {
        size_t n = strlen(b);
        r = !strncmp(a, b, n) && (a[n] == '/' || a[n] == 0 || !strcmp(b, "/"));
    }
    free(a);
    free(b);
    return r;
}

ft_status outdir_begin(outdir *o, const char *out, const char *const *ins, const char *const *opts,
                       int n, int overwrite, ft_error *err) {
    memset(o, 0, sizeof *o);
    size_t len = strlen(out);
    while (len > 1 && out[len - 1] == '/')
        len--;
    if (!len || len >= sizeof o->final)
        return ft_error_set(err, FT_ERR_INPUT, "option --out", NULL, "empty or too long a path");
    snprintf(o->final, sizeof o->final, "%.*s", (int)len, out);
    for (int i = 0; i < n; i++) {
        ft_status st = model_out_check(o->final, ins[i], overwrite, err);
        if (st && !strcmp(err->where, "option --out") && strcmp(opts[i], "--model"))
            snprintf(err->what, sizeof err->what, "\"%.400s\" is the %s folder \"%.400s\"",
                     o->final, opts[i], ins[i]);
        if (st) return st;
    }
    if (n == 0) {
        ft_status st = model_out_check(o->final, NULL, overwrite, err);
        if (st) return st;
    }
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp-%d", o->final, (int)getpid());
    remove_tree(o->tmp); /* a leftover of an earlier process with our pid */
    ft_status st = make_dirs(o->tmp, err);
    if (st) return st;
    o->active = 1;
    for (int i = 0; i < n; i++)
        if (inside(o->tmp, ins[i])) {
            outdir_abort(o);
            return ft_error_set(err, FT_ERR_INPUT, "option --out",
                                "choose a folder outside the inputs; they are never changed",
                                "\"%s\" is inside the %s folder \"%s\"", o->final, opts[i], ins[i]);
        }
    return FT_OK;
}

void outdir_path(const outdir *o, const char *name, char *buf, size_t size) {
    snprintf(buf, size, "%s/%s", o->tmp, name);
}

static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

ft_status outdir_commit(outdir *o, ft_error *err) {
    if (!o->active) return ft_error_set(err, FT_ERR_RUNTIME, o->final, NULL, "not begun");
    /* a missing or empty OUT is replaced in one rename */
    if (rename(o->tmp, o->final) == 0) {
        o->active = 0;
        char parent[4200];
        snprintf(parent, sizeof parent, "%s/..", o->final);
        sync_dir(parent);
        return FT_OK;
    }
    if (errno != ENOTEMPTY && errno != EEXIST) {
        int e = errno;
        outdir_abort(o);
        return ft_error_set(err, FT_ERR_RUNTIME, o->final, NULL, "cannot rename %s into place: %s",
                            o->tmp, strerror(e));
    }
    /* --overwrite into a folder with files: stale weight files first, then each new file */
    DIR *d = opendir(o->final);
    for (struct dirent *e; d && (e = readdir(d));) {
        char mine[4500];
        struct stat sb;
        snprintf(mine, sizeof mine, "%s/%s", o->tmp, e->d_name);
        if (stat(mine, &sb) == 0) continue; /* replaced below */
        for (size_t i = 0; i < sizeof STALE / sizeof STALE[0]; i++)
            if (!fnmatch(STALE[i], e->d_name, 0)) {
                char old[4500];
                snprintf(old, sizeof old, "%s/%s", o->final, e->d_name);
                unlink(old);
                break;
            }
    }
    if (d) closedir(d);
    d = opendir(o->tmp);
    ft_status st = FT_OK;
    for (struct dirent *e; d && (e = readdir(d)) && !st;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char from[4500], to[4500];
        snprintf(from, sizeof from, "%s/%s", o->tmp, e->d_name);
        snprintf(to, sizeof to, "%s/%s", o->final, e->d_name);
        if (rename(from, to) != 0)
            st = ft_error_set(err, FT_ERR_RUNTIME, to, NULL, "cannot move into place: %s",
                              strerror(errno));
    }
    if (d) closedir(d);
    sync_dir(o->final);
    outdir_abort(o);
    return st;
}

void outdir_abort(outdir *o) {
    if (!o->active) return;
    remove_tree(o->tmp);
    o->active = 0;
}
