/*
 * run_config.c: a run folder's options and files (see run_config.h). Every option is read and
 * written through the options table (options.c); only "resolved" (what the options became:
 * the LoRA layout, the storage of the frozen weights, the data counts) is written here by hand.
 */
#include "train/run_config.h"
#include "base/hash.h"
#include "io/atomic.h"
#include "io/json.h"
#include "train/checkpoint.h"
#include "train/options.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Keep p to free with r (a full list leaks it rather than fail: 64 is far more than used). */
static void *own(run_opts *r, void *p) {
    if (p && r->n_owned < (int)(sizeof r->owned / sizeof r->owned[0])) r->owned[r->n_owned++] = p;
    return p;
}

/* path made absolute against the working folder (not resolved: the user's names stay) */
static const char *absolute(run_opts *r, const char *path) {
    if (!path || path[0] == '/') return path;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) return path;
    while (path[0] == '.' && path[1] == '/')
        path += 2;
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *s = malloc(n);
    if (!s) return path;
    snprintf(s, n, "%s/%s", cwd, path);
    return own(r, s);
}

static const char **list_copy(run_opts *r, const char *const *v, int n) {
    const char **c = own(r, calloc((size_t)n + 1, sizeof(char *)));
    if (c)
        for (int i = 0; i < n; i++)
            c[i] = v[i];
    return c;
}

static cJSON *value_json(const opt_row *row, const ft_train_options *o) {
    void *p = opt_ptr(row, o);
    switch (row->type) {
    case OT_STR: {
        const char *s = *(const char **)p;
        return s ? cJSON_CreateString(s) : cJSON_CreateNull();
    }
    case OT_INT:
        return cJSON_CreateNumber(*(int *)p);
    case OT_LONG:
        return cJSON_CreateNumber((double)*(long *)p);
    case OT_DOUBLE:
        return cJSON_CreateNumber(*(double *)p);
    case OT_BOOL:
        return cJSON_CreateBool(*(int *)p);
    case OT_U64: { /* as text: a double cannot hold every 64-bit seed */
        char t[32];
        snprintf(t, sizeof t, "%llu", (unsigned long long)*(uint64_t *)p);
        return cJSON_CreateString(t);
    }
    case OT_LIST: {
        cJSON *a = cJSON_CreateArray();
        const char *const *v = *(const char *const **)p;
        int n = *(int *)((char *)o + row->n_off);
        for (int i = 0; i < n; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
        return a;
    }
    }
    return cJSON_CreateNull();
}

/* Set the row's value in o from JSON v (absent or null: no value for strings, unchanged else). */
static ft_status value_from_json(run_opts *r, const opt_row *row, ft_train_options *o,
                                 const cJSON *v, const char *path, ft_error *err) {
    char where[4400];
    snprintf(where, sizeof where, "%s: field \"%s\"", path, opt_json_key(row));
    void *p = opt_ptr(row, o);
    if (!v || cJSON_IsNull(v)) {
        if (row->type == OT_STR) *(const char **)p = NULL;
        return FT_OK;
    }
    switch (row->type) {
    case OT_STR:
        if (!cJSON_IsString(v)) break;
        *(const char **)p = v->valuestring;
        return FT_OK;
    case OT_BOOL:
        if (!cJSON_IsBool(v)) break;
        *(int *)p = cJSON_IsTrue(v);
        return FT_OK;
    case OT_U64:
        if (cJSON_IsString(v)) return opt_set_text(row, o, v->valuestring, where, err);
        if (!cJSON_IsNumber(v) || v->valuedouble < 0) break;
        *(uint64_t *)p = (uint64_t)v->valuedouble;
        return FT_OK;
    case OT_INT:
    case OT_LONG:
    case OT_DOUBLE: {
        if (!cJSON_IsNumber(v)) break;
        double d = v->valuedouble;
        if (row->type != OT_DOUBLE && d != floor(d))
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an integer, got %g", d);
        /* a value the first format let through (--threads -1) in an option that does not decide
         * the numbers is brought into range rather than make the run impossible to resume */
        if (!(row->flags & (OF_HASH | OF_HASH_IF_SET)))
            d = d < row->lo ? row->lo : d > row->hi ? row->hi : d;
        ft_status st = opt_check_range(row, d, where, err);
        if (st) return st;
        if (row->type == OT_INT)
            *(int *)p = (int)d;
        else if (row->type == OT_LONG)
            *(long *)p = (long)d;
        else
            *(double *)p = d;
        return FT_OK;
    }
    case OT_LIST: {
        if (!cJSON_IsArray(v)) break;
        int n = cJSON_GetArraySize(v), k = 0;
        const char **a = own(r, calloc((size_t)n + 1, sizeof(char *)));
        if (!a) return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            if (!cJSON_IsString(e))
                return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a list of strings");
            a[k++] = e->valuestring;
        }
        *(const char ***)p = a;
        *(int *)((char *)o + row->n_off) = k;
        return FT_OK;
    }
    }
    return ft_error_set(err, FT_ERR_INPUT, where, NULL, "has the wrong type (%s)",
                        json_type_name(v));
}

ft_status run_opts_init(run_opts *r, const ft_train_options *given, ft_error *err) {
    memset(r, 0, sizeof *r);
    r->o = *given;
    ft_train_options *o = &r->o;
    if (!o->n_data_sources && o->data_path) {
        o->data_sources = list_copy(r, &given->data_path, 1);
        o->n_data_sources = o->data_sources ? 1 : 0;
    }
    if (!o->quant_blocksize) o->quant_blocksize = FT_QUANT_BLOCKSIZE_DEFAULT; /* 0: the default */
    r->as_given = cJSON_CreateObject();
    for (int i = 0; i < opt_n_rows; i++) {
        const opt_row *row = &opt_rows[i];
        if (!(row->flags & OF_PATH)) continue;
        cJSON_AddItemToObject(r->as_given, opt_json_key(row), value_json(row, o));
        if (row->type == OT_STR) {
            /* a path that does not exist stays as given, so that the error which follows names
             * what the user typed (and a Hub id like ORG/NAME is still recognised as one) */
            const char **p = opt_ptr(row, o);
            if (*p && access(*p, F_OK) == 0) *p = absolute(r, *p);
        } else if (row->type == OT_LIST) {
            int n = *(int *)((char *)o + row->n_off);
            const char **v = list_copy(r, *(const char *const **)opt_ptr(row, o), n);
            if (!v) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
            for (int k = 0; k < n; k++)
                v[k] = absolute(r, v[k]);
            *(const char ***)opt_ptr(row, o) = v;
        }
    }
    o->data_path = o->n_data_sources ? o->data_sources[0] : NULL;
    o->out_dir = absolute(r, o->out_dir);
    r->hashed = *o;
    return FT_OK;
}

ft_status run_opts_load(run_opts *r, const char *run_dir, ft_error *err) {
    memset(r, 0, sizeof *r);
    char path[4200];
    snprintf(path, sizeof path, "%s/run_config.json", run_dir);
    ft_status st = json_load_file(path, &r->json, err);
    if (st) {
        snprintf(err->hint, sizeof err->hint, "--resume takes a run folder written by ftune train");
        return st;
    }
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(r->json, "options");
    if (!cJSON_IsObject(op))
        return ft_error_set(err, FT_ERR_INPUT, path, NULL, "field \"options\" is missing");
    ft_train_options *o = &r->o;
    ft_train_defaults(o);
    for (int i = 0; i < opt_n_rows && !st; i++) {
        const opt_row *row = &opt_rows[i];
        if (!(row->flags & OF_SAVE)) continue;
        st = value_from_json(r, row, o, cJSON_GetObjectItemCaseSensitive(op, opt_json_key(row)),
                             path, err);
    }
    if (st) return st;
    if (!o->model_dir)
        return ft_error_set(err, FT_ERR_INPUT, path, NULL, "field \"model\" is missing");
    if (!o->n_data_sources)
        return ft_error_set(err, FT_ERR_INPUT, path, NULL, "field \"data_sources\" is missing");
    o->data_path = o->data_sources[0];
    o->out_dir = run_dir;
    r->hashed = r->stored = *o;
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(r->json, "started_with");
    for (int i = 0; i < opt_n_rows && !st && cJSON_IsObject(sw); i++) {
        const opt_row *row = &opt_rows[i];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(sw, opt_json_key(row));
        if (v) st = value_from_json(r, row, &r->hashed, v, path, err);
    }
    const cJSON *ag = cJSON_GetObjectItemCaseSensitive(r->json, "as_given");
    r->as_given = cJSON_IsObject(ag) ? cJSON_Duplicate(ag, 1) : NULL;
    return st;
}

/* The value text of row in o, paths compared absolute. */
static void compare_text(run_opts *r, const opt_row *row, const ft_train_options *o, char *buf,
                         size_t n) {
    ft_train_options t = *o;
    if (row->flags & OF_PATH) {
        if (row->type == OT_STR) {
            const char **p = opt_ptr(row, &t);
            *p = absolute(r, *p);
        } else if (row->type == OT_LIST) {
            int k = *(int *)((char *)&t + row->n_off);
            const char **v = list_copy(r, *(const char *const **)opt_ptr(row, &t), k);
            for (int i = 0; v && i < k; i++)
                v[i] = absolute(r, v[i]);
            *(const char ***)opt_ptr(row, &t) = v;
        }
    }
    opt_value_text(row, &t, buf, n);
}

ft_status run_opts_resume_changes(run_opts *r, const ft_train_options *given, char *note, size_t n,
                                  ft_error *err) {
    char refused[900] = "", a[4096], b[4096];
    int n_refused = 0;
    note[0] = 0;
    ft_train_options g = *given;
    if (!g.n_data_sources && g.data_path) g.data_sources = &given->data_path, g.n_data_sources = 1;
    for (int i = 0; i < given->n_resume_changes; i++) {
        const opt_row *row = opt_find(given->resume_changes[i]);
        if (!row || !(row->flags & (OF_SAVE | OF_RESUME))) continue; /* --out, --overwrite, ... */
        compare_text(r, row, &r->o, a, sizeof a);
        compare_text(r, row, &g, b, sizeof b);
        if (!strcmp(a, b)) continue;
        if (row->flags & OF_RESUME) {
            size_t u = strlen(note);
            if (row->type == OT_DOUBLE) /* shorter than the compared %.17g */
                snprintf(a, sizeof a, "%g", *(double *)opt_ptr(row, &r->o)),
                    snprintf(b, sizeof b, "%g", *(double *)opt_ptr(row, &g));
            if (row->flags & OF_SAVE)
                snprintf(note + u, n - u, "%s--%s %s -> %s", u ? ", " : "", row->cli, a, b);
            if (row->type == OT_LIST) continue; /* none may change */
            memcpy((char *)&r->o + row->off, (const char *)&g + row->off,
                   row->type == OT_STR      ? sizeof(char *)
                   : row->type == OT_DOUBLE ? sizeof(double)
                   : row->type == OT_LONG   ? sizeof(long)
                   : row->type == OT_U64    ? sizeof(uint64_t)
                                            : sizeof(int));
            continue;
        }
        size_t u = strlen(refused);
        snprintf(refused + u, sizeof refused - u, "%s%.200s=%.200s (now %.200s)",
                 n_refused ? "; " : "", row->key, a, b);
        n_refused++;
    }
    r->o.quiet = given->quiet;
    if (!n_refused) return FT_OK;
    return ft_error_set(err, FT_ERR_INPUT, "option --resume",
                        "a resume may change --steps/--epochs, --lr, --schedule, --warmup-steps, "
                        "--threads, --save-every, --eval-every and --keep-checkpoints; start a new "
                        "run to change the others",
                        "the settings differ from the run's, so it could not continue exactly: %s",
                        refused);
}

void run_opts_free(run_opts *r) {
    for (int i = 0; i < r->n_owned; i++)
        free(r->owned[i]);
    cJSON_Delete(r->as_given);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

void run_settings_hash(const ft_train_options *o, char out[17]) {
    char text[16384];
    opt_settings_text(o, 0, text, sizeof text);
    uint64_t h = hash_bytes(text, strlen(text), HASH_START);
    char path[4200], *cfg = NULL;
    size_t n = 0;
    ft_error ignore;
    snprintf(path, sizeof path, "%s/config.json", o->model_dir);
    if (file_read_all(path, &cfg, &n, &ignore) == FT_OK) h = hash_bytes(cfg, n, h);
    free(cfg);
    DIR *d = opendir(o->model_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 12 || strcmp(e->d_name + l - 12, ".safetensors")) continue;
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", o->model_dir, e->d_name);
        if (stat(path, &sb) == 0) h = hash_bytes(&sb.st_size, sizeof sb.st_size, h);
    }
    if (d) closedir(d);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static void add_resolved(cJSON *j, const model *m, long total_steps, const dataset *ds) {
    const lora_set *ls = m->lora;
    const model_quant *q = &m->quant;
    cJSON *r = cJSON_AddObjectToObject(j, "resolved");
    cJSON *t = cJSON_AddArrayToObject(r, "lora_targets");
    for (int k = 0; k < LIN_COUNT; k++)
        if (ls->targets & (1u << k)) cJSON_AddItemToArray(t, cJSON_CreateString(lin_names[k]));
    cJSON_AddNumberToObject(r, "lora_r", ls->R);
    cJSON_AddNumberToObject(r, "lora_alpha", ls->alpha);
    cJSON_AddNumberToObject(r, "lora_scale", ls->scale);
    cJSON_AddNumberToObject(r, "lora_parameters", (double)ls->n_params);
    cJSON_AddNumberToObject(r, "total_steps", (double)total_steps);
    /* the compute dtype of the frozen-weight matmuls (LoRA and AdamW are float32 always) */
    cJSON_AddStringToObject(r, "dtype", q->compute == QC_BF16 ? "bfloat16" : "float32");
    /* how the frozen weights were stored: formats as qtensor names them */
    cJSON *wq = cJSON_AddObjectToObject(r, "frozen_weights");
    cJSON_AddStringToObject(wq, "linear", qformat_info(q->linear)->name);
    cJSON_AddBoolToObject(wq, "double_quant", q->double_quant);
    if (q->linear == QF_NF4 || q->linear == QF_FP4)
        cJSON_AddNumberToObject(wq, "blocksize", q->blocksize);
    cJSON_AddStringToObject(wq, "source",
                            q->from_checkpoint    ? "bitsandbytes checkpoint"
                            : q->linear == QF_F32 ? "converted"
                                                  : "quantized at load");
    cJSON_AddStringToObject(wq, "lm_head", qformat_info(q->lm_head)->name);
    cJSON_AddStringToObject(wq, "embedding", qformat_info(q->embed)->name);
    cJSON_AddNumberToObject(wq, "bytes", (double)m->weight_bytes);
    cJSON_AddNumberToObject(r, "examples", ds->n_docs);
    if (ds->packed) cJSON_AddNumberToObject(r, "packed_rows", ds->n);
    cJSON_AddNumberToObject(r, "tokens", (double)ds->tokens);
    cJSON_AddNumberToObject(r, "trained_tokens", (double)ds->trained);
    cJSON_AddNumberToObject(r, "truncated_examples", ds->n_truncated);
    cJSON_AddNumberToObject(r, "dropped_long_examples", ds->n_dropped_long);
    cJSON_AddNumberToObject(r, "dropped_masked_examples", ds->n_dropped_masked);
}

ft_status run_config_write(const run_opts *r, const model *m, long total_steps, const dataset *ds,
                           const char *shash, const char *dhash, ft_error *err) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "ftune_version", ft_version());
    cJSON *op = cJSON_AddObjectToObject(j, "options");
    cJSON *sw = cJSON_AddObjectToObject(j, "started_with");
    for (int i = 0; i < opt_n_rows; i++) {
        const opt_row *row = &opt_rows[i];
        if (!(row->flags & OF_SAVE)) continue;
        cJSON_AddItemToObject(op, opt_json_key(row), value_json(row, &r->o));
        if ((row->flags & OF_RESUME) && (row->flags & OF_HASH))
            cJSON_AddItemToObject(sw, opt_json_key(row), value_json(row, &r->hashed));
    }
    if (r->as_given) cJSON_AddItemToObject(j, "as_given", cJSON_Duplicate(r->as_given, 1));
    add_resolved(j, m, total_steps, ds);
    cJSON_AddStringToObject(j, "settings_hash", shash);
    cJSON_AddStringToObject(j, "data_hash", dhash);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char path[4200];
    snprintf(path, sizeof path, "%s/run_config.json", r->o.out_dir);
    ft_status st = atomic_write_file(path, text, strlen(text), err);
    free(text);
    return st;
}

int run_dir_nonempty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n > 0;
}

ft_status run_dir_clear(const char *dir, ft_error *err) {
    static const char *const files[] = {"metrics.jsonl", "adapter_model.safetensors",
                                        "adapter_config.json", "run_config.json",
                                        ".ftune-write-test"};
    char p[4400];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (unlink(p) != 0 && errno != ENOENT)
            return ft_error_set(err, FT_ERR_RUNTIME, p, "check the folder's permissions",
                                "cannot remove (--overwrite): %s", strerror(errno));
    }
    return checkpoint_remove_all(dir, err);
}

ft_status run_dir_preflight(const char *dir, size_t ckpt_bytes, ft_error *err) {
    ft_status st = make_dirs(dir, err);
    if (st) return st;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.ftune-write-test", dir);
    if ((st = atomic_write_file(probe, "ok\n", 3, err))) {
        snprintf(err->hint, sizeof err->hint,
                 "the run folder must be writable; choose another --out");
        return st;
    }
    unlink(probe);
    struct statvfs vs;
    if (statvfs(dir, &vs) == 0) {
        double avail = (double)vs.f_bavail * vs.f_frsize, need = 2.0 * ckpt_bytes + 65536;
        if (avail < need)
            return ft_error_set(err, FT_ERR_RUNTIME, dir,
                                "free some disk space or choose another --out",
                                "only %.1f MB free; checkpoints need about %.1f MB",
                                avail / 1048576.0, need / 1048576.0);
    }
    return FT_OK;
}

ft_status metrics_truncate(const char *path, long step, ft_error *err) {
    char *text;
    size_t n;
    if (file_read_all(path, &text, &n, err) != FT_OK) return FT_OK; /* none yet */
    size_t keep = 0;
    for (char *p = text; p < text + n;) {
        char *nl = memchr(p, '\n', (size_t)(text + n - p));
        if (!nl) break;
        const char *s = strstr(p, "\"step\": ");
        long ls = s && s < nl ? atol(s + 8) : 0;
        if (ls > step) break;
        keep = (size_t)(nl + 1 - text);
        p = nl + 1;
    }
    ft_status st = atomic_write_file(path, text, keep, err);
    free(text);
    return st;
}
