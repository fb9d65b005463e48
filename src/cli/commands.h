/*
 * commands.h: the list of ftune subcommands, as X(name, function, one-line summary).
 * Each command lives in src/cli/cmd_<name>.c and takes the arguments after its name.
 */
#define FT_COMMANDS(X)                                                                             \
    X("train", cmd_train, "fine-tune a LoRA adapter on a model folder and data files")             \
    X("eval", cmd_eval, "loss / perplexity of a model (plus adapter) on a JSONL file")             \
    X("init", cmd_init, "write a randomly initialised Hugging Face model folder")                  \
    X("tokenize", cmd_tokenize, "text to token ids with a model's tokenizer.json")                 \
    X("detokenize", cmd_detokenize, "token ids back to text")                                      \
    X("chat-template", cmd_chat_template, "render a conversation through a chat template")         \
    X("inspect", cmd_inspect, "list the tensors of a safetensors file or model folder")            \
    X("plan", cmd_plan, "predicted peak memory of a training run, by part")                        \
    X("quantize", cmd_quantize, "store a model's linear layers in bitsandbytes 4-bit (NF4/FP4)")   \
    X("generate", cmd_generate, "complete a prompt (with adapters), streaming the text")           \
    X("chat", cmd_chat, "talk with a model (with adapters) through its chat template")             \
    X("merge", cmd_merge, "fold a LoRA adapter into its base model (a new model folder)")          \
    X("merge-adapters", cmd_merge_adapters,                                                        \
      "combine LoRA adapters: linear, cat, svd, TIES, DARE, magnitude pruning")                    \
    X("merge-models", cmd_merge_models,                                                            \
      "combine fine-tuned models as mergekit: linear, task arithmetic, TIES, DARE, slerp") \
    X("export", cmd_export, "write a model (with an adapter merged) or an adapter as GGUF")

#define X(name, fn, summary) int fn(int argc, char **argv);
FT_COMMANDS(X)
#undef X

/* The progress line of the merge commands (cmd_merge.c), a merge_progress_fn. */
void cmd_merge_progress(double done, double total, const char *what, void *user);
