/*
 * cmd_init.c: `ftune init`: write a randomly initialised Hugging Face model folder, so that a
 * fine-tune can be tried (and tested) with no download.
 */
#include "cli/args.h"
#include "ftune.h"
#include "model/init.h"

#include <stdio.h>

int cmd_init(int argc, char **argv) {
    const char *arch = "llama", *size = "tiny", *out = NULL;
    long vocab = 512, seed = 0;
    const opt_spec specs[] = {
        {"arch", OPT_STR, &arch, "NAME", "llama, mistral, qwen2, qwen3 or phi3"},
        {"size", OPT_STR, &size, "NAME", "tiny (64 wide, 2 layers), small (256, 4) or smollm-135m"},
        {"vocab", OPT_INT, &vocab, "V", "vocabulary size"},
        {"seed", OPT_INT, &seed, "S", "seed of the random weights"},
        {"out", OPT_STR, &out, "DIR", "folder to write (config.json, model.safetensors)"},
        {0},
    };
    const cmd_info info = {"init", "ftune init --arch NAME --size NAME --out DIR [--vocab V]",
                           "Write a randomly initialised model folder in Hugging Face's format.",
        NULL};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && !out) rc = ft_error_set(&err, FT_ERR_INPUT, "option --out", NULL, "is required");
    if (!rc) rc = model_init_random(arch, size, (int)vocab, (uint64_t)seed, out, &err);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    printf("wrote %s/config.json and %s/model.safetensors (%s, %s, vocab %ld)\n", out, out, arch,
           size, vocab);
    return 0;
}
