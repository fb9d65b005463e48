/*
 * cmd_merge_adapters.c: `ftune merge-adapters`: combine LoRA adapters into one PEFT adapter with
 * the combination types of PEFT's add_weighted_adapter (src/merge/combine.c; formulas in
 * docs/merge.md). --adapter DIR[:WEIGHT] is repeated; the weight defaults to 1 and may be
 * negative (a negated task is subtracted: forgetting by task arithmetic).
 */
#include "cli/args.h"
#include "cli/commands.h"
#include "ftune.h"
#include "merge/merge.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "DIR[:WEIGHT]": the weight after the last ':' when it reads as a number. */
static ft_status split_adapter(const char *arg, char *dir, size_t n, double *w, ft_error *err) {
    const char *colon = strrchr(arg, ':');
    *w = 1.0;
    if (colon && colon[1]) {
        char *end;
        errno = 0;
        double v = strtod(colon + 1, &end);
        if (!errno && !*end) {
            *w = v;
            snprintf(dir, n, "%.*s", (int)(colon - arg), arg);
            return dir[0] ? FT_OK
                          : ft_error_set(err, FT_ERR_INPUT, "option --adapter", NULL,
                                         "\"%s\" names no folder", arg);
        }
    }
    snprintf(dir, n, "%s", arg);
    return FT_OK;
}

/* An optional number: NAN when not given. */
static ft_status parse_number(const char *s, const char *where, double *out, ft_error *err) {
    *out = NAN;
    if (!s) return FT_OK;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || isnan(v))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected a number, got \"%s\"", s);
    *out = v;
    return FT_OK;
}

int cmd_merge_adapters(int argc, char **argv) {
    merge_adapters_options o = {.majority_total = 1, .density = NAN, .svd_clamp = NAN};
    args_list adapters = {0};
    const char *method = NULL, *majority = "total";
    const char *density_s = NULL, *clamp_s = NULL;
    long svd_rank = 0, seed = 0;
    int quiet = 0;
    const opt_spec specs[] = {
        {"adapter", OPT_LIST, &adapters, "DIR[:W]",
         "a PEFT LoRA adapter and its weight (default 1; negative subtracts); repeat"},
        {"method", OPT_STR, &method, "M",
         "linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, dare_linear_svd, "
         "dare_ties_svd, magnitude_prune or magnitude_prune_svd (PEFT's combination_type)"},
        {"out", OPT_STR, &o.out_dir, "RUN", "folder for the combined adapter (new, or empty)"},
        {"density", OPT_STR, &density_s, "D",
         "fraction of each task's values kept (ties, dare_*, magnitude_prune*); required by them"},
        {"majority-sign-method", OPT_STR, &majority, "M",
         "total or frequency: TIES' sign election by the sign of the sum, or of the count of "
         "signs"},
        {"svd-rank", OPT_INT, &svd_rank, "R",
         "rank of the *svd results (0: the largest input rank)"},
        {"svd-clamp", OPT_STR, &clamp_s, "Q",
         "clamp the *svd factors to the Q-quantile of their values (default: no clamping)"},
        {"seed", OPT_INT, &seed, "S",
         "seed of DARE's random masks (the same seed, the same result)"},
        {"dump-masks", OPT_STR, &o.dump_masks, "FILE",
         "write DARE's masks to a safetensors file (U8, 1 = kept), for comparisons"},
        {"allow-different-bases", OPT_FLAG, &o.allow_different_bases, NULL,
         "combine adapters whose base_model_name_or_path differ"},
        {"overwrite", OPT_FLAG, &o.overwrite, NULL,
         "replace the adapter files of a non-empty --out"},
        {"quiet", OPT_FLAG, &quiet, NULL, "no progress line"},
        {0},
    };
    const cmd_info info = {
        "merge-adapters",
        "ftune merge-adapters --adapter A[:W] --adapter B[:W] ... --method M --out RUN "
        "[--density D] [--svd-rank R]",
        "Combine LoRA adapters of one base model into a single PEFT adapter, as PEFT's\n"
        "add_weighted_adapter does: linear and cat (weighted sums of the A and B factors, or the\n"
        "factors side by side), svd (the weighted sum of the deltas B @ A, refactored to rank R),\n"
        "TIES (trim to the largest values, elect a sign, average those that agree), DARE (drop\n"
        "values at random and rescale) and magnitude pruning, each also on the full deltas with\n"
        "an SVD after (*_svd). docs/merge.md has the formulas.",
        "  ftune merge-adapters --adapter math-run --adapter code-run --method cat --out both\n"
        "  ftune merge-adapters --adapter a:0.7 --adapter b:0.3 --method ties --density 0.5 "
        "--out ab\n"
        "  ftune merge-adapters --adapter base-chat --adapter toxic:-0.5 --method linear --out "
        "less-toxic"};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && (!adapters.n || !method || !o.out_dir))
        rc = ft_error_set(&err, FT_ERR_INPUT, "ftune merge-adapters",
                          "see ftune merge-adapters --help",
                          "--adapter, --method and --out are required");
    if (!rc) {
        o.method = MM_COUNT;
        for (int m = 0; m < MM_COUNT; m++)
            if (!strcmp(method, merge_method_names[m])) o.method = (merge_method)m;
        if (o.method == MM_COUNT)
            rc = ft_error_set(&err, FT_ERR_INPUT, "option --method",
                              "linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, "
                              "dare_linear_svd, dare_ties_svd, magnitude_prune, "
                              "magnitude_prune_svd",
                              "unknown method \"%s\"", method);
    }
    if (!rc && strcmp(majority, "total") && strcmp(majority, "frequency"))
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --majority-sign-method", "total or frequency",
                          "unknown method \"%s\"", majority);
    if (!rc && adapters.n > MERGE_MAX_ADAPTERS)
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --adapter", NULL, "at most %d adapters",
                          MERGE_MAX_ADAPTERS);
    char dirs[MERGE_MAX_ADAPTERS][4096];
    for (int k = 0; !rc && k < adapters.n; k++) {
        rc = split_adapter(adapters.v[k], dirs[k], sizeof dirs[k], &o.weights[k], &err);
        o.adapter_dirs[k] = dirs[k];
    }
    if (!rc) rc = parse_number(density_s, "option --density", &o.density, &err);
    if (!rc) rc = parse_number(clamp_s, "option --svd-clamp", &o.svd_clamp, &err);
    o.n = adapters.n;
    o.svd_rank = (int)svd_rank;
    o.seed = (uint64_t)seed, o.majority_total = !strcmp(majority, "total");
    if (!quiet) o.progress = cmd_merge_progress;
    merge_adapters_result res;
    if (!rc) rc = merge_adapters(&o, &res, &err);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    printf("wrote %s: %d modules, rank %d (%s of %d adapter%s)\n", o.out_dir, res.modules, res.rank,
           o.n == 1 ? "linear" : method, o.n, o.n == 1 ? "" : "s");
    return 0;
}
