/*
 * cmd_eval.c: `ftune eval`: mean token loss and perplexity of a model (with an optional
 * adapter) on a data file; can dump the logits and the adapter's gradients for comparison
 * with PyTorch; with --compare-adapter, the base model and each adapter side by side. The model,
 * data and memory options are the training options' rows (options.c).
 */
#include "cli/args.h"
#include "ftune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* s as a JSON string (quotes, backslashes and control characters escaped) */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_result(const ft_eval_result *r) {
    printf("\"loss\": %.8g, \"tokens\": %ld, \"perplexity\": %.8g", r->loss, r->tokens,
           exp(r->loss));
}

/* --compare-adapter: the base row, then one row per adapter with its differences from the base
 * (a table, or with --json one line: {"base": {...}, "adapters": [{"adapter": RUN, ...}]}) */
static void print_compare(const ft_eval_result *res, const char *const *names, int n, int json) {
    if (json) {
        printf("{\"base\": {");
        json_result(&res[0]);
        printf("}, \"adapters\": [");
        for (int i = 0; i < n; i++) {
            const ft_eval_result *r = &res[i + 1];
            printf("%s{\"adapter\": ", i ? ", " : "");
            json_str(stdout, names[i]);
            printf(", ");
            json_result(r);
            printf(", \"loss_diff\": %.8g, \"perplexity_diff\": %.8g}", r->loss - res[0].loss,
                   exp(r->loss) - exp(res[0].loss));
        }
        printf("]}\n");
        return;
    }
    int w = 5;
    for (int i = 0; i < n; i++)
        if ((int)strlen(names[i]) > w) w = (int)strlen(names[i]);
    printf("%-*s  %12s  %12s  %8s  %12s  %12s\n", w, "model", "loss", "perplexity", "tokens",
           "loss diff", "ppl diff");
    printf("%-*s  %12.6f  %12.4f  %8ld\n", w, "base", res[0].loss, exp(res[0].loss), res[0].tokens);
    for (int i = 0; i < n; i++) {
        const ft_eval_result *r = &res[i + 1];
        printf("%-*s  %12.6f  %12.4f  %8ld  %+12.6f  %+12.4f\n", w, names[i], r->loss, exp(r->loss),
               r->tokens, r->loss - res[0].loss, exp(r->loss) - exp(res[0].loss));
    }
}

static const char *const examples =
    "  # perplexity of the base model, then with the adapter a run wrote\n"
    "  ftune eval --model DIR --data test.jsonl\n"
    "  ftune eval --model DIR --adapter RUN --data test.jsonl\n"
    "  # perplexity of a long text, windows of 1024 tokens moved by 512 (transformers' guide)\n"
    "  ftune eval --model DIR --data wiki.txt --seq-len 1024 --stride 512\n"
    "  # base model and two adapters side by side on the same data (a table; --json for one line)\n"
    "  ftune eval --model DIR --adapter run1 --adapter run2 --data test.jsonl --compare-adapter\n"
    "  # a Qwen3 chat set without thinking blocks, 4-bit weights as in training\n"
    "  ftune eval --model DIR --adapter RUN --data chat.jsonl --template-arg enable_thinking=false "
    "--quant nf4";

int cmd_eval(int argc, char **argv) {
    ft_train_options t;
    ft_train_defaults(&t);
    t.seq_len = 0; /* eval: no limit unless given */
    ft_eval_options o = {0};
    args_list lists[2] = {{0}, {0}};
    opt_spec specs[64];
    opt_bind binds[64];
    int n = args_specs_from_table(OF_EVAL, &t, lists, binds, specs, 60);
    specs[n++] = (opt_spec){"dump-logits", OPT_STR, &o.dump_logits, "FILE",
                            "write logits [examples, T, V] as safetensors"};
    specs[n++] = (opt_spec){"dump-grads", OPT_STR, &o.dump_grads, "FILE",
                            "write the adapter's gradients of the mean loss"};
    int compare = 0, json = 0;
    specs[n++] = (opt_spec){"compare-adapter", OPT_FLAG, &compare, NULL,
                            "score the base model and each --adapter on the same data, side by "
                            "side"};
    specs[n++] = (opt_spec){"json", OPT_FLAG, &json, NULL,
                            "with --compare-adapter: one JSON line with every result, not a table"};
    specs[n] = (opt_spec){0};
    /* --adapter: repeatable (with --compare-adapter): the table's row, its values collected */
    args_list adapters = {0};
    opt_spec *ad = args_find(specs, "adapter");
    ((opt_bind *)ad->dst)->list = &adapters;
    ad->metavar = "RUN";
    ad->help = "a PEFT LoRA adapter folder (or a run folder); repeat with --compare-adapter";
    args_find(specs, "data")->help =
        "data file or folder in any format of ftune train (docs/data.md)";
    args_find(specs, "data")->metavar = "PATH";
    /* eval's --seq-len may be 0 (no limit): the row with that range */
    opt_spec *sl = args_find(specs, "seq-len");
    opt_bind *slb = sl->dst;
    opt_row seq_row = *slb->row;
    seq_row.lo = 0;
    slb->row = &seq_row;
    sl->help = "truncate examples to T tokens (0: no limit)";
    args_find(specs, "batch-size")->help = "examples per batch";
    const cmd_info info = {
        "eval", "ftune eval --model DIR [--adapter DIR] --data FILE.jsonl [options]",
        "Mean token loss (labels unshifted as in transformers, -100 not counted)\n"
        "and perplexity, printed as one JSON line; with --compare-adapter, the base model\n"
        "and each adapter side by side on the same data.",
        examples};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc) {
        args_table_finish(specs, NULL, 0);
        if (t.n_data_sources > 1)
            rc = ft_error_set(&err, FT_ERR_INPUT, "option --data", "run ftune eval once per file",
                              "given %d times; eval takes one data file or folder",
                              t.n_data_sources);
        if (!rc && adapters.n > 1 && !compare)
            rc = ft_error_set(&err, FT_ERR_INPUT, "option --adapter",
                              "add --compare-adapter to score each one beside the base model",
                              "given %d times; eval applies one adapter", adapters.n);
        if (!rc && compare && !adapters.n)
            rc = ft_error_set(&err, FT_ERR_INPUT, "option --compare-adapter",
                              "add --adapter RUN (repeat it for several)",
                              "there is no adapter to compare with the base model");
        if (t.seq_len == 1)
            rc = ft_error_set(&err, FT_ERR_INPUT, "option --seq-len", NULL,
                              "must be 0 (no limit) or at least 2");
    }
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    o.model_dir = t.model_dir, o.adapter_dir = adapters.n ? adapters.v[0] : NULL;
    o.data_path = t.n_data_sources ? t.data_sources[0] : NULL;
    o.batch_size = t.batch_size, o.seq_len = t.seq_len, o.threads = t.threads, o.pack = t.pack;
    o.chat_template = t.chat_template;
    o.template_args = t.template_args, o.n_template_args = t.n_template_args;
    o.quant = t.quant, o.double_quant = t.double_quant, o.quant_blocksize = t.quant_blocksize;
    o.quant_lm_head = t.quant_lm_head, o.dtype = t.dtype;
    o.stride = t.stride;
    if (compare) {
        ft_eval_result res[ARGS_LIST_MAX + 1];
        ft_status st = ft_eval_compare(&o, adapters.v, adapters.n, res, &err);
        if (st) {
            ft_error_print(&err, stderr);
            return st;
        }
        print_compare(res, adapters.v, adapters.n, json);
        return 0;
    }
    ft_eval_result res;
    ft_status st = ft_eval(&o, &res, &err);
    if (st) {
        ft_error_print(&err, stderr);
        return st;
    }
    printf("{\"loss\": %.8g, \"tokens\": %ld, \"perplexity\": %.8g}\n", res.loss, res.tokens,
           exp(res.loss));
    return 0;
}
