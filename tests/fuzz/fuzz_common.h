/*
 * fuzz_common.h: what every libFuzzer harness of ftune shares.
 *
 * ftune's parsers read files by path, so a harness writes each input to a file in a private
 * temporary folder (one per process, under $TMPDIR, else /dev/shm, else /tmp; removed at exit)
 * and calls the parser on that path. fz_write replaces the file in place each run, so a
 * million runs leave nothing behind. Header-only: each harness is one .c file plus this.
 */
#ifndef FT_FUZZ_COMMON_H
#define FT_FUZZ_COMMON_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fz_dir_[512];

static inline void fz_cleanup_(void) {
    if (!fz_dir_[0]) return;
    DIR *d = opendir(fz_dir_);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", fz_dir_, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(fz_dir_);
}

/* The process's scratch folder, created on first use. */
static inline const char *fz_dir(void) {
    if (fz_dir_[0]) return fz_dir_;
    const char *base = getenv("TMPDIR");
    struct stat sb;
    if (!base || !*base) base = stat("/dev/shm", &sb) == 0 && access("/dev/shm", W_OK) == 0
                                    ? "/dev/shm" : "/tmp";
    snprintf(fz_dir_, sizeof fz_dir_, "%s/ftune-fuzz-XXXXXX", base);
    if (!mkdtemp(fz_dir_)) {
        perror("ftune fuzz: mkdtemp");
        abort(); /* not a finding: the harness cannot run at all */
    }
    atexit(fz_cleanup_);
    return fz_dir_;
}

/* Write data to fz_dir()/name; returns the path (a static buffer per call site is not needed:
 * the caller copies it if it must keep two). */
static inline const char *fz_write(const char *name, const uint8_t *data, size_t size) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", fz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror("ftune fuzz: write");
        abort();
    }
    return path;
}

#endif
