/*
 * cmd_quantize.c: `ftune quantize`: write a model folder whose linear layers are stored in
 * bitsandbytes' 4-bit format (NF4 or FP4), loadable by transformers + bitsandbytes.
 */
#include "cli/args.h"
#include "ftune.h"
#include "model/quantize.h"

#include <stdio.h>
#include <string.h>

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *quant = "nf4";
    long blocksize = 64;
    int double_quant = 0;
    const opt_spec specs[] = {
        {"model", OPT_STR, &model, "DIR", "Hugging Face model folder (F32, BF16 or F16)"},
        {"out", OPT_STR, &out, "DIR", "folder for the quantized model"},
        {"quant", OPT_STR, &quant, "TYPE", "nf4 or fp4"},
        {"quant-blocksize", OPT_INT, &blocksize, "N", "values per absmax block (bitsandbytes: 64), as train's --quant-blocksize"},
        {"blocksize", OPT_INT, &blocksize, "N", "the same as --quant-blocksize"},
        {"double-quant", OPT_FLAG, &double_quant, NULL,
         "quantize the absmax values too (bnb_4bit_use_double_quant=True)"},
        {0},
    };
    const cmd_info info = {"quantize", "ftune quantize --model DIR --out DIR [--quant nf4|fp4] [--quant-blocksize N] [--double-quant]",
                           "Quantize the linear layers to 4 bits as bitsandbytes does, in the layout\n"
                           "transformers saves (BitsAndBytesConfig(load_in_4bit=True[, bnb_4bit_use_double_quant=True])).",
        NULL};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && (!model || !out))
        rc = ft_error_set(&err, FT_ERR_INPUT, "ftune quantize", NULL, "--model and --out are required");
    if (!rc && strcmp(quant, "nf4") && strcmp(quant, "fp4"))
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --quant", "use nf4 or fp4",
                          "unknown quantization \"%s\"", quant);
    if (!rc)
        rc = model_quantize_bnb4(model, out, strcmp(quant, "nf4") ? QUANT_FP4 : QUANT_NF4,
                                 (int)blocksize, double_quant, &err);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    printf("wrote %s (%s, block size %ld%s)\n", out, quant, blocksize,
           double_quant ? ", double quantization" : "");
    return 0;
}
