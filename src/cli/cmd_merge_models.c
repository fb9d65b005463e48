/*
 * cmd_merge_models.c: `ftune merge-models`: whole models combined with mergekit 0.1.5's linear,
 * task_arithmetic, ties, dare_linear, dare_ties and slerp (src/merge/models.c; formulas in
 * docs/merge.md). --model DIR[:WEIGHT] is repeated; a LoRA adapter of --base may stand in for a
 * model (the model it makes when merged into --base).
 */
#include "base/cpu.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "ftune.h"
#include "merge/merge.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* "DIR[:WEIGHT]": the weight after the last ':'. A suffix that is not a number is an error
 * unless the whole argument names an existing folder (a path with ':' in it). */
static ft_status split_model(const char *arg, char *dir, size_t n, double *w, ft_error *err) {
    const char *colon = strrchr(arg, ':');
    struct stat s;
    *w = 1.0;
    snprintf(dir, n, "%s", arg);
    if (!colon || stat(arg, &s) == 0) return FT_OK;
    char *end;
    errno = 0;
    double v = strtod(colon + 1, &end);
    if (!colon[1] || errno || *end || !isfinite(v))
        return ft_error_set(err, FT_ERR_INPUT, "option --model",
                            "write DIR:WEIGHT with a number, e.g. run-a:0.5",
                            "\"%s\": weight \"%s\" is not a number", arg, colon + 1);
    *w = v;
    snprintf(dir, n, "%.*s", (int)(colon - arg), arg);
    if (!dir[0])
        return ft_error_set(err, FT_ERR_INPUT, "option --model", NULL, "\"%s\" names no folder",
                            arg);
    return FT_OK;
}

static ft_status parse_number(const char *s, const char *where, double dflt, double *out,
                              ft_error *err) {
    *out = dflt;
    if (!s) return FT_OK;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a number, got \"%s\"", s);
    *out = v;
    return FT_OK;
}

static ft_status parse_bool(const char *s, const char *where, int *out, ft_error *err) {
    *out = -1;
    if (!s) return FT_OK;
    if (!strcmp(s, "true") || !strcmp(s, "1"))
        *out = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "0"))
        *out = 0;
    else
        return ft_error_set(err, FT_ERR_INPUT, where, "true or false",
                            "expected true or false, got \"%s\"", s);
    return FT_OK;
}

int cmd_merge_models(int argc, char **argv) {
    merge_models_options o = {0};
    args_list models = {0};
    const char *method = NULL, *density_s = NULL, *lambda_s = NULL, *t_s = NULL;
    const char *normalize_s = NULL, *rescale_s = NULL;
    long seed = 0;
    int quiet = 0;
    const opt_spec specs[] = {
        {"base", OPT_STR, &o.base_dir, "DIR",
         "the model the others were fine-tuned from (task vectors are model - base; for linear "
         "only the layout and the adapters' model)"},
        {"model", OPT_LIST, &models, "DIR[:W]",
         "a fine-tuned model folder, or a LoRA adapter of --base, and its weight (default 1); "
         "repeat"},
        {"method", OPT_STR, &method, "M",
         "linear, task_arithmetic, ties, dare_linear, dare_ties or slerp (mergekit's names)"},
        {"out", OPT_STR, &o.out_dir, "DIR", "folder for the merged model (new, or empty)"},
        {"density", OPT_STR, &density_s, "D",
         "fraction of each task vector kept by ties and dare_* (default 1: all)"},
        {"lambda", OPT_STR, &lambda_s, "L", "scale of the merged task vector (default 1)"},
        {"t", OPT_STR, &t_s, "T", "slerp: 0 gives --base, 1 the --model (default 0.5)"},
        {"normalize", OPT_STR, &normalize_s, "true|false",
         "divide by the sum of the weights (default: true for linear and ties, else false)"},
        {"rescale", OPT_STR, &rescale_s, "true|false",
         "rescale a sparsified task vector to its L1 norm (default: true for dare_*, else "
         "false)"},
        {"seed", OPT_INT, &seed, "S", "seed of DARE's random masks"},
        {"out-dtype", OPT_STR, &o.out_dtype, "TYPE",
         "fp32, bf16 or f16 (default: each tensor keeps the base's dtype)"},
        {"max-shard-size", OPT_STR, &o.max_shard_size, "SIZE",
         "largest safetensors shard, as save_pretrained's max_shard_size "
         "(default " MERGE_DEFAULT_MAX_SHARD_SIZE ")"},
        {"dump-masks", OPT_STR, &o.dump_masks, "FILE",
         "write DARE's masks to a safetensors file (U8, 1 = kept; held in memory), for "
         "comparisons"},
        {"overwrite", OPT_FLAG, &o.overwrite, NULL,
         "replace the model files of a non-empty --out folder"},
        {"quiet", OPT_FLAG, &quiet, NULL, "no progress line"},
        {0},
    };
    const cmd_info info = {
        "merge-models",
        "ftune merge-models --base DIR --model DIR[:W] ... --method M --out DIR [--density D] "
        "[--lambda L] [--t T]",
        "Combine fine-tunes of one base model into one model, tensor by tensor, with mergekit's\n"
        "methods: linear (weighted average), task_arithmetic (base + the weighted sum of the\n"
        "task vectors model - base), ties (trim each task vector to its largest values, elect a\n"
        "sign, average those that agree), dare_linear / dare_ties (drop values at random and\n"
        "rescale), slerp (spherical interpolation of --base and one --model). A LoRA adapter of\n"
        "--base stands for the model it makes. Tensors are streamed; the folder is written as\n"
        "ftune merge writes one. docs/merge.md has the formulas.",
        "  ftune merge-models --base Qwen3-0.6B --model math:1 --model code:1 --method ties "
        "--density 0.5 --out mixed\n"
        "  ftune merge-models --base smol --model run-a --model run-b --method task_arithmetic "
        "--out ab\n"
        "  ftune merge-models --base smol --model chat-tuned --method slerp --t 0.3 --out s"};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && (!models.n || !method || !o.out_dir))
        rc = ft_error_set(&err, FT_ERR_INPUT, "ftune merge-models", "see ftune merge-models --help",
                          "--model, --method and --out are required");
    if (!rc) {
        o.method = MK_COUNT;
        for (int m = 0; m < MK_COUNT; m++)
            if (!strcmp(method, models_method_names[m])) o.method = (models_method)m;
        if (o.method == MK_COUNT)
            rc = ft_error_set(&err, FT_ERR_INPUT, "option --method",
                              "linear, task_arithmetic, ties, dare_linear, dare_ties or slerp",
                              "unknown method \"%s\"", method);
    }
    if (!rc && models.n > MERGE_MAX_ADAPTERS)
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --model", NULL, "at most %d models",
                          MERGE_MAX_ADAPTERS);
    static char dirs[MERGE_MAX_ADAPTERS][4096];
    for (int k = 0; !rc && k < models.n; k++) {
        rc = split_model(models.v[k], dirs[k], sizeof dirs[k], &o.weights[k], &err);
        o.model_dirs[k] = dirs[k];
    }
    if (!rc) rc = parse_number(density_s, "option --density", 1.0, &o.density, &err);
    if (!rc) rc = parse_number(lambda_s, "option --lambda", 1.0, &o.lambda, &err);
    if (!rc) rc = parse_number(t_s, "option --t", 0.5, &o.t, &err);
    if (!rc) rc = parse_bool(normalize_s, "option --normalize", &o.normalize, &err);
    if (!rc) rc = parse_bool(rescale_s, "option --rescale", &o.rescale, &err);
    o.n = models.n;
    o.seed = (uint64_t)seed;
    if (!quiet) o.progress = cmd_merge_progress;
    merge_models_result res;
    cpu_set_threads(1); /* I/O-bound, as ftune merge (cmd_merge.c) */
    if (!rc) rc = merge_models(&o, &res, &err);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    printf("wrote %s: %d tensors (%d merged, %s of %d model%s) in %d shard%s, %.1f MB\n", o.out_dir,
           res.tensors, res.merged, method, o.n, o.n == 1 ? "" : "s", res.shards,
           res.shards == 1 ? "" : "s", res.bytes / 1e6);
    return 0;
}
