/*
 * cmd_export.c: `ftune export`: a model (with an adapter merged in) as a GGUF file llama.cpp
 * runs, or an adapter as a GGUF LoRA adapter llama.cpp applies (src/merge/gguf_export.c).
 */
#include "cli/args.h"
#include "cli/commands.h"
#include "ftune.h"
#include "merge/gguf_export.h"

#include <stdio.h>

int cmd_export(int argc, char **argv) {
    gguf_export_options o = {0};
    const char *gguf = NULL, *gguf_lora = NULL;
    int quiet = 0;
    const opt_spec specs[] = {
        {"gguf", OPT_STR, &gguf, "OUT.gguf", "write the model (with --adapter merged in) as GGUF"},
        {"gguf-lora", OPT_STR, &gguf_lora, "OUT.gguf",
         "write --adapter as a GGUF LoRA adapter for llama.cpp's --lora"},
        {"model", OPT_STR, &o.model, "DIR|FILE",
         "Hugging Face model folder (llama, mistral, qwen2, qwen3; F32, BF16 or F16) with its "
         "tokenizer.json, or a GGUF model file (re-typed, the adapter merged)"},
        {"adapter", OPT_STR, &o.adapter, "RUN", "PEFT LoRA adapter folder (ftune train's RUN)"},
        {"quant", OPT_STR, &o.quant, "TYPE",
         "f32 (default), f16, bf16, q8_0 (or q8), q4_0 or q4_k_m (llama.cpp's mixtures)"},
        {"overwrite", OPT_FLAG, &o.overwrite, NULL, "replace an existing output file"},
        {"quiet", OPT_FLAG, &quiet, NULL, "no progress line"},
        {0},
    };
    const cmd_info info = {
        "export",
        "ftune export --gguf OUT.gguf --model DIR|FILE [--adapter RUN] [--quant TYPE]\n"
        "       ftune export --gguf-lora OUT.gguf --model DIR|FILE --adapter RUN",
        "Write a GGUF file for llama.cpp: the model's weights (the adapter merged in as\n"
        "ftune merge merges it), its architecture metadata, tokenizer and chat template,\n"
        "with Q/K rows in llama.cpp's RoPE order; tensors as convert_hf_to_gguf.py writes them\n"
        "(f32, f16, bf16, q8_0) or as llama_model_quantize's Q4_0 / Q4_K_M mixtures (q4_0,\n"
        "q4_k_m). Or, with\n"
        "--gguf-lora, the adapter alone as convert_lora_to_gguf.py writes it, each module's\n"
        "scaling (rsLoRA, rank and alpha patterns) folded into B. Tensors are streamed a few\n"
        "MB at a time; the file appears only once complete.",
        "  ftune export --gguf smol.gguf --model SmolLM2-135M-Instruct --adapter run --quant q8_0\n"
        "  ftune export --gguf-lora run.gguf --model SmolLM2-135M-Instruct --adapter run"};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && (!gguf == !gguf_lora))
        rc = ft_error_set(&err, FT_ERR_INPUT, "ftune export", "see ftune export --help",
                          "give one of --gguf and --gguf-lora");
    if (!rc && !o.model)
        rc = ft_error_set(&err, FT_ERR_INPUT, "ftune export", "see ftune export --help",
                          "--model is required");
    if (!rc && gguf_lora && !o.adapter)
        rc = ft_error_set(&err, FT_ERR_INPUT, "ftune export", "see ftune export --help",
                          "--gguf-lora needs --adapter");
    o.out = gguf ? gguf : gguf_lora;
    o.lora = gguf_lora != NULL;
    if (!quiet) o.progress = cmd_merge_progress;
    gguf_export_result res;
    if (!rc) rc = gguf_export(&o, &res, &err);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    if (o.lora)
        printf("wrote %s: %d LoRA modules (%d tensors)\n", o.out, res.merged, res.tensors);
    else
        printf("wrote %s: %d tensors (%d merged with the adapter), %.1f MB\n", o.out, res.tensors,
               res.merged, res.bytes / 1e6);
    return 0;
}
