/*
 * outdir.h: an output folder written whole or not at all.
 *
 * Everything goes into a temporary sibling folder, OUT.tmp-PID (same file system, so a rename
 * moves it). outdir_commit renames it to OUT when OUT does not exist or is empty: the folder
 * appears complete in one step. With --overwrite into a folder that has files, each new file is
 * renamed over its old version (each file whole), files of an earlier save that this one does
 * not write and that would mislead a loader (other model shards, a stale index, a stale
 * adapter) are removed, and other files are left alone, as save_pretrained leaves them.
 * outdir_abort removes the temporary folder and what is in it, so a failure (a full disk, bad
 * input found late, an interrupted write) leaves nothing behind.
 */
#ifndef FT_MERGE_OUTDIR_H
#define FT_MERGE_OUTDIR_H

#include "ftune.h"

typedef struct outdir {
    char final[4096];
    char tmp[4200];
    int active; /* tmp exists and is ours */
} outdir;

/* Check out (model_out_check against each of the n input folders ins, given with option
 * opts[i] ("--model", "--adapter"): never one of them nor inside one; an existing non-empty
 * folder only with overwrite) and create the temporary folder. */
ft_status outdir_begin(outdir *o, const char *out, const char *const *ins, const char *const *opts,
                       int n, int overwrite, ft_error *err);
/* The path of name inside the temporary folder. */
void outdir_path(const outdir *o, const char *name, char *buf, size_t size);
ft_status outdir_commit(outdir *o, ft_error *err);
void outdir_abort(outdir *o);

#endif
