/*
 * cmd_init.c: `ftune init`: write a randomly initialised Hugging Face model folder, so that a
 * fine-tune can be tried (and tested) with no download. With --tokenizer the folder takes a
 * real tokenizer: the vocabulary is sized from it and its special tokens and files come along,
 * so the folder trains on chat data as a downloaded model of that family would (with random
 * weights).
 */
#include "cli/args.h"
#include "ftune.h"
#include "model/init.h"

#include <stdio.h>

int cmd_init(int argc, char **argv) {
    model_init_options o = {.arch = "llama", .size = "tiny"};
    long vocab = 0, seed = 0;
    int overwrite = 0;
    const opt_spec specs[] = {
        {"arch", OPT_STR, &o.arch, "NAME", "llama, mistral, qwen2, qwen3 or phi3"},
        {"size", OPT_STR, &o.size, "NAME",
         "tiny (64 wide, 2 layers), small (256, 4) or smollm-135m"},
        {"tokenizer", OPT_STR, &o.tokenizer, "DIR",
         "take this folder's tokenizer (tokenizer.json, tokenizer_config.json, ...): copied, "
         "and the vocabulary and bos/eos/pad ids come from it"},
        {"vocab", OPT_INT, &vocab, "V",
         "vocabulary size; 0: the tokenizer's (added tokens included), or 512 without "
         "--tokenizer"},
        {"seed", OPT_INT, &seed, "S", "seed of the random weights"},
        {"out", OPT_STR, &o.out, "DIR", "folder to write (config.json, model.safetensors)"},
        {"overwrite", OPT_FLAG, &overwrite, NULL, "write into a non-empty --out folder"},
        {0},
    };
    const cmd_info info = {
        "init", "ftune init --out DIR [--arch NAME] [--size NAME] [--tokenizer DIR | --vocab V]",
        "Write a randomly initialised model folder in Hugging Face's format.",
        "  ftune init --out tiny                        # tiny Llama, vocabulary 512 (byte-level "
        "ids)\n"
        "  ftune init --arch qwen3 --size small --tokenizer Qwen3-0.6B --out qwen3-small\n"
        "                                               # Qwen3's tokenizer and chat template\n"
        "  ftune init --size smollm-135m --tokenizer SmolLM2-135M-Instruct --out smol-random"};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && !o.out) rc = ft_error_set(&err, FT_ERR_INPUT, "option --out", NULL, "is required");
    if (!rc && vocab < 0)
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --vocab", NULL, "must be positive");
    o.vocab = vocab, o.seed = (uint64_t)seed, o.overwrite = overwrite;
    if (!rc) rc = model_init(&o, &err);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    printf("wrote %s/config.json and %s/model.safetensors (%s, %s%s%s)\n", o.out, o.out, o.arch,
           o.size, o.tokenizer ? ", tokenizer from " : "", o.tokenizer ? o.tokenizer : "");
    return 0;
}
