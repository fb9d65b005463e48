/*
 * cmd_eval.c: `ftune eval`: mean token loss and perplexity of a model (with an optional
 * adapter) on a JSONL file; can dump the logits and the adapter's gradients for comparison
 * with PyTorch.
 */
#include "cli/args.h"
#include "ftune.h"

#include <math.h>

int cmd_eval(int argc, char **argv) {
    ft_eval_options o = {0};
    long bs = 8, sl = 0, threads = 0, qbs = 64;
    const opt_spec specs[] = {
        {"model", OPT_STR, &o.model_dir, "DIR", "Hugging Face model folder"},
        {"adapter", OPT_STR, &o.adapter_dir, "DIR", "a PEFT LoRA adapter folder (or a run folder)"},
        {"data", OPT_STR, &o.data_path, "PATH", "data file or folder in any format of ftune train (docs/data.md)"},
        {"pack", OPT_FLAG, &o.pack, NULL, "pack examples into rows of --seq-len tokens"},
        {"chat-template", OPT_STR, &o.chat_template, "FILE", "a .jinja chat template instead of the model's"},
        {"batch-size", OPT_INT, &bs, "B", "examples per batch"},
        {"seq-len", OPT_INT, &sl, "T", "truncate examples to T tokens (0: no limit)"},
        {"threads", OPT_INT, &threads, "N", "threads (0: all cores)"},
        {"dump-logits", OPT_STR, &o.dump_logits, "FILE", "write logits [examples, T, V] as safetensors"},
        {"dump-grads", OPT_STR, &o.dump_grads, "FILE", "write the adapter's gradients of the mean loss"},
        {"dtype", OPT_STR, &o.dtype, "T", "compute type: fp32, or bf16 (the frozen-weight matmuls round their inputs and weights to bf16 and sum in fp32; the weights are kept as bf16 unless --quant says otherwise)"},
        {"quant", OPT_STR, &o.quant, "FMT", "store the frozen linear weights as nf4, fp4, q8, bf16 or none (fp32; default: bf16 under --dtype bf16)"},
        {"double-quant", OPT_FLAG, &o.double_quant, NULL, "nf4/fp4: quantize the absmax values too"},
        {"quant-blocksize", OPT_INT, &qbs, "N", "nf4/fp4 values per absmax block"},
        {"quant-lm-head", OPT_STR, &o.quant_lm_head, "FMT", "LM head: q8, bf16 or none (fp32); default: the checkpoint's own dtype with --quant, fp32 without"},
        {0},
    };
    const cmd_info info = {"eval", "ftune eval --model DIR [--adapter DIR] --data FILE.jsonl [options]",
                           "Mean token loss (labels unshifted as in transformers, -100 not counted)\n"
                           "and perplexity, printed as one JSON line.",
        NULL};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    o.batch_size = (int)bs, o.seq_len = (int)sl, o.threads = (int)threads, o.quant_blocksize = (int)qbs;
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
