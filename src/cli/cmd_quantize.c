/*
 * cmd_quantize.c: `ftune quantize`: write a model folder whose linear layers are stored in
 * bitsandbytes' 4-bit format (NF4 or FP4), loadable by transformers + bitsandbytes, with the
 * input's tokenizer files and generation_config.json beside them.
 *
 * Only the bitsandbytes formats: train's --quant q8 and bf16 have no form transformers loads,
 * so they stay load-time options of train/eval. --blocksize, the old spelling of
 * --quant-blocksize, is still read (scripts and tests use it) but no longer shown in --help:
 * one documented name per option, as train and eval spell it.
 */
#include "cli/args.h"
#include "ftune.h"
#include "model/quantize.h"
#include "ops/quant.h"

#include <stdio.h>
#include <string.h>

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *quant = "nf4";
    long blocksize = FT_QUANT_BLOCKSIZE_DEFAULT;
    int double_quant = 0, overwrite = 0;
    const opt_spec specs[] = {
        {"model", OPT_STR, &model, "DIR", "Hugging Face model folder (F32, BF16 or F16)"},
        {"out", OPT_STR, &out, "DIR", "folder for the quantized model (never the --model folder)"},
        {"quant", OPT_STR, &quant, "TYPE", "nf4 or fp4 (bitsandbytes' 4-bit formats)"},
        {"quant-blocksize", OPT_INT, &blocksize, "N",
         "values per absmax block (bitsandbytes: 64), as train's --quant-blocksize"},
        {"double-quant", OPT_FLAG, &double_quant, NULL,
         "quantize the absmax values too (bnb_4bit_use_double_quant=True)"},
        {"overwrite", OPT_FLAG, &overwrite, NULL, "write into a non-empty --out folder"},
        {0},
    };
    const cmd_info info = {
        "quantize",
        "ftune quantize --model DIR --out DIR [--quant nf4|fp4] [--quant-blocksize N] "
        "[--double-quant]",
        "Quantize the linear layers to 4 bits as bitsandbytes does, in the layout\n"
        "transformers saves (BitsAndBytesConfig(load_in_4bit=True[, "
        "bnb_4bit_use_double_quant=True])),\n"
        "and copy the tokenizer files and generation_config.json: the folder loads in "
        "transformers\n"
        "and trains in ftune as it is. Only bitsandbytes' nf4 and fp4 are written: q8 and bf16\n"
        "have no form transformers loads (use train's --quant q8|bf16 at load time instead).",
        "  ftune quantize --model SmolLM2-135M-Instruct --out SmolLM2-135M-nf4\n"
        "  ftune quantize --model Qwen3-0.6B --out Qwen3-0.6B-nf4-dq --double-quant\n"
        "  ftune train --model SmolLM2-135M-nf4 --data chat.jsonl --out run   # QLoRA on it"};
    /* the hidden old spelling, renamed before parsing */
    char renamed[ARGS_LIST_MAX][64];
    int nr = 0;
    for (int i = 0; i < argc && nr < ARGS_LIST_MAX; i++)
        if (!strcmp(argv[i], "--blocksize")) {
            argv[i] = "--quant-blocksize";
        } else if (!strncmp(argv[i], "--blocksize=", 12)) {
            snprintf(renamed[nr], sizeof renamed[nr], "--quant-blocksize=%.40s", argv[i] + 12);
            argv[i] = renamed[nr++];
        }
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && (!model || !out))
        rc = ft_error_set(&err, FT_ERR_INPUT, "ftune quantize", NULL,
                          "--model and --out are required");
    if (!rc && strcmp(quant, "nf4") && strcmp(quant, "fp4"))
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --quant",
                          "use nf4 or fp4 (q8 and bf16 have no transformers form: give them to "
                          "train's --quant)",
                          "unknown quantization \"%s\"", quant);
    if (!rc)
        rc = model_quantize_bnb4(model, out, strcmp(quant, "nf4") ? QUANT_FP4 : QUANT_NF4,
                                 (int)blocksize, double_quant, overwrite, &err);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    printf("wrote %s (%s, block size %ld%s)\n", out, quant, blocksize,
           double_quant ? ", double quantization" : "");
    return 0;
}
