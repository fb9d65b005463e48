/*
 * checkpoint.c: writing, finding and loading training checkpoints (see checkpoint.h).
 */
#include "train/checkpoint.h"
#include "io/atomic.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}
static void remove_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* Remove a checkpoint folder without ever leaving a partial "checkpoint-N" behind: rename it to a
 * temporary name first (atomic), then delete; an interrupted delete leaves only a *.tmp-* folder,
 * which checkpoint_latest clears. */
static void remove_checkpoint(const char *path) {
    char gone[4400];
    snprintf(gone, sizeof gone, "%s.tmp-del-%d", path, (int)getpid());
    if (rename(path, gone) == 0) remove_tree(gone);
}

/* Parse "checkpoint-N" (exactly); returns N or -1. */
static long ckpt_step(const char *name) {
    if (strncmp(name, "checkpoint-", 11)) return -1;
    char *end;
    long s = strtol(name + 11, &end, 10);
    return (*end || end == name + 11 || s < 0) ? -1 : s;
}

static ft_status write_state(const char *dir, const train_state *ts, ft_error *err) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "global_step", (double)ts->step);
    cJSON_AddNumberToObject(j, "epoch", (double)ts->epoch);
    cJSON_AddNumberToObject(j, "micro_batches_in_epoch", (double)ts->mb_in_epoch);
    cJSON_AddNumberToObject(j, "example_index", (double)ts->example_index);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)ts->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddStringToObject(
        j, "rng",
        "counter-based: shuffles from (seed, epoch), dropout from (seed, step, micro-batch)");
    cJSON_AddStringToObject(j, "settings_hash", ts->settings_hash);
    cJSON_AddStringToObject(j, "data_hash", ts->data_hash);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char path[4400];
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    ft_status st = atomic_write_file(path, text, strlen(text), err);
    free(text);
    return st;
}

ft_status checkpoint_save(const char *run_dir, const lora_set *ls, const model_config *cfg,
                          const char *base_model, const adamw *opt, const train_state *ts, int keep,
                          ft_error *err) {
    char final[4200], tmp[4300];
    snprintf(final, sizeof final, "%s/checkpoint-%ld", run_dir, ts->step);
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", final, (int)getpid());
    remove_tree(tmp);
    ft_status st = make_dirs(tmp, err);
    if (!st) st = lora_save_peft(ls, cfg, tmp, base_model, err);
    if (!st) {
        st_writer *w = st_writer_new();
        int64_t n = (int64_t)opt->n;
        char t[32];
        snprintf(t, sizeof t, "%ld", opt->t);
        st_writer_meta(w, "adam_step", t);
        st = st_writer_add(w, "exp_avg", ST_F32, 1, &n, opt->m, err);
        if (!st) st = st_writer_add(w, "exp_avg_sq", ST_F32, 1, &n, opt->v, err);
        char path[4400];
        snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
        if (!st) st = st_writer_save(w, path, err);
        st_writer_free(w);
    }
    if (!st) st = write_state(tmp, ts, err);
    if (!st) {
        remove_checkpoint(final); /* a stale one from an earlier run that reached this step */
        if (rename(tmp, final) != 0)
            st = ft_error_set(err, FT_ERR_RUNTIME, final, NULL,
                              "cannot rename the checkpoint into place: %s", strerror(errno));
    }
    if (st) {
        remove_tree(tmp);
        snprintf(err->hint, sizeof err->hint,
                 "the checkpoint of step %ld was not saved; earlier checkpoints are intact. %s"
                 "Continue with: ftune train --resume %.300s",
                 ts->step, strstr(err->what, "No space") ? "Free some disk space first. " : "",
                 run_dir);
        return st;
    }
    /* keep the newest `keep` checkpoints */
    if (keep > 0) {
        DIR *d = opendir(run_dir);
        long steps[4096];
        int n = 0;
        struct dirent *e;
        while (d && (e = readdir(d)) && n < 4096) {
            long s = ckpt_step(e->d_name);
            if (s >= 0) steps[n++] = s;
        }
        if (d) closedir(d);
        for (int i = 0; i < n; i++) {
            int newer = 0;
            for (int j = 0; j < n; j++)
                newer += steps[j] > steps[i];
            if (newer >= keep) {
                char old[4200];
                snprintf(old, sizeof old, "%s/checkpoint-%ld", run_dir, steps[i]);
                remove_checkpoint(old);
            }
        }
    }
    return FT_OK;
}

long checkpoint_latest(const char *run_dir) {
    DIR *d = opendir(run_dir);
    if (!d) return -1;
    long best = -1;
    struct dirent *e;
    char leftovers[64][300];
    int nl = 0;
    while ((e = readdir(d))) {
        if (!strncmp(e->d_name, "checkpoint-", 11) && strstr(e->d_name, ".tmp-")) {
            if (nl < 64) snprintf(leftovers[nl++], 300, "%s", e->d_name);
            continue;
        }
        long s = ckpt_step(e->d_name);
        if (s > best) best = s;
    }
    closedir(d);
    for (int i = 0; i < nl; i++) {
        char p[8192];
        snprintf(p, sizeof p, "%s/%.299s", run_dir, leftovers[i]);
        remove_tree(p);
    }
    return best;
}

ft_status checkpoint_remove_all(const char *run_dir, ft_error *err) {
    DIR *d = opendir(run_dir);
    if (!d) return FT_OK;
    struct dirent *e;
    char(*names)[300] = NULL;
    int n = 0, cap = 0;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "checkpoint-", 11)) continue;
        if (n == cap) {
            void *p = realloc(names, sizeof *names * (size_t)(cap = cap ? 2 * cap : 64));
            if (!p) break;
            names = p;
        }
        snprintf(names[n++], 300, "%s", e->d_name);
    }
    closedir(d);
    ft_status st = FT_OK;
    for (int i = 0; i < n && !st; i++) {
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", run_dir, names[i]);
        if (ckpt_step(names[i]) >= 0)
            remove_checkpoint(p);
        else
            remove_tree(p);
        struct stat sb;
        if (lstat(p, &sb) == 0)
            st = ft_error_set(err, FT_ERR_RUNTIME, p, "check the folder's permissions",
                              "cannot remove (--overwrite): %s", strerror(errno));
    }
    free(names);
    return st;
}

ft_status checkpoint_load(const char *run_dir, long step, lora_set *ls, adamw *opt, train_state *ts,
                          ft_error *err) {
    char dir[4200], path[4400];
    snprintf(dir, sizeof dir, "%s/checkpoint-%ld", run_dir, step);
    /* adapter: same modules, same order, as the run's own */
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_set *s = NULL;
    ft_status st = st_open(path, &s, err);
    for (int i = 0; !st && i < ls->n; i++) {
        const lora_module *m = &ls->mods[i];
        char name[300];
        int64_t shA[2] = {ls->R, m->in}, shB[2] = {m->out, ls->R};
        lora_tensor_name(name, sizeof name, m, 0);
        st = st_read_f32(s, name, 2, shA, ls->params + m->offA, err);
        lora_tensor_name(name, sizeof name, m, 1);
        if (!st) st = st_read_f32(s, name, 2, shB, ls->params + m->offB, err);
    }
    st_close(s);
    s = NULL;
    if (st) return st;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    st = st_open(path, &s, err);
    int64_t n = (int64_t)opt->n;
    if (!st) st = st_read_f32(s, "exp_avg", 1, &n, opt->m, err);
    if (!st) st = st_read_f32(s, "exp_avg_sq", 1, &n, opt->v, err);
    if (!st) {
        const char *t = st_metadata(s, "adam_step");
        opt->t = t ? atol(t) : step;
    }
    st_close(s);
    if (st) return st;
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    cJSON *j;
    if ((st = json_load_file(path, &j, err))) return st;
    const char *seed = NULL, *sh = NULL, *dh = NULL;
    if (!(st = json_get_int(j, "global_step", 1, 0, &ts->step, path, err)) &&
        !(st = json_get_int(j, "epoch", 1, 0, &ts->epoch, path, err)) &&
        !(st = json_get_int(j, "micro_batches_in_epoch", 1, 0, &ts->mb_in_epoch, path, err)) &&
        !(st = json_get_int(j, "example_index", 1, 0, &ts->example_index, path, err)) &&
        !(st = json_get_string(j, "seed", 1, NULL, &seed, path, err)) &&
        !(st = json_get_string(j, "settings_hash", 1, NULL, &sh, path, err)) &&
        !(st = json_get_string(j, "data_hash", 1, NULL, &dh, path, err))) {
        ts->seed = strtoull(seed, NULL, 10);
        snprintf(ts->settings_hash, sizeof ts->settings_hash, "%s", sh);
        snprintf(ts->data_hash, sizeof ts->data_hash, "%s", dh);
    }
    cJSON_Delete(j);
    return st;
}
