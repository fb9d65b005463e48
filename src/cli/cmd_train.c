/*
 * cmd_train.c: `ftune train`, option parsing over ft_train (src/train/trainer.c).
 * Option names and defaults follow PEFT's LoraConfig and transformers' TrainingArguments.
 */
#include "cli/args.h"
#include "ftune.h"

int cmd_train(int argc, char **argv) {
    ft_train_options o;
    ft_train_defaults(&o);
    long r = o.lora_r, bs = o.batch_size, ga = o.grad_accum, sl = o.seq_len, threads = 0,
         seed = (long)o.seed;
    int no_shuffle = 0;
    long keep = 3, qbs = 64;
    args_list data = {0}, targs = {0};
    const opt_spec specs[] = {
        {"model", OPT_STR, &o.model_dir, "DIR", "Hugging Face model folder (config.json, *.safetensors)"},
        {"data", OPT_LIST, &data, "PATH[:W]", "training data: a file or folder (text, prompt/completion, messages, Alpaca, input_ids JSONL or .txt; docs/data.md); repeat to mix, :W = share of examples"},
        {"out", OPT_STR, &o.out_dir, "RUN", "run folder for the adapter, run_config.json, metrics.jsonl"},
        {"adapter", OPT_STR, &o.adapter_dir, "DIR", "start from this PEFT adapter (its r/alpha/targets win)"},
        {"lora-r", OPT_INT, &r, "R", "LoRA rank"},
        {"lora-alpha", OPT_FLOAT, &o.lora_alpha, "A", "LoRA alpha (scale = alpha / r)"},
        {"lora-dropout", OPT_FLOAT, &o.lora_dropout, "P", "dropout on the LoRA input"},
        {"lora-targets", OPT_STR, &o.lora_targets, "LIST", "comma list of q_proj,k_proj,... or all-linear"},
        {"rslora", OPT_FLAG, &o.rslora, NULL, "rank-stabilised LoRA (scale = alpha / sqrt(r))"},
        {"steps", OPT_INT, &o.steps, "N", "optimizer steps (overrides --epochs when > 0)"},
        {"epochs", OPT_FLOAT, &o.epochs, "E", "passes over the data"},
        {"batch-size", OPT_INT, &bs, "B", "examples per micro-batch"},
        {"grad-accum", OPT_INT, &ga, "K", "micro-batches per optimizer step"},
        {"seq-len", OPT_INT, &sl, "T", "longest example in tokens (longer ones keep their start)"},
        {"lr", OPT_FLOAT, &o.lr, "LR", "peak learning rate"},
        {"schedule", OPT_STR, &o.schedule, "NAME", "constant, constant_with_warmup, linear or cosine"},
        {"warmup-steps", OPT_INT, &o.warmup_steps, "N", "linear warmup steps"},
        {"weight-decay", OPT_FLOAT, &o.weight_decay, "WD", "AdamW weight decay"},
        {"max-grad-norm", OPT_FLOAT, &o.max_grad_norm, "X", "clip the global gradient norm (0: off)"},
        {"adam-beta1", OPT_FLOAT, &o.adam_beta1, "B1", "AdamW beta1"},
        {"adam-beta2", OPT_FLOAT, &o.adam_beta2, "B2", "AdamW beta2"},
        {"adam-eps", OPT_FLOAT, &o.adam_eps, "EPS", "AdamW epsilon"},
        {"seed", OPT_INT, &seed, "S", "seed for LoRA init, shuffling and dropout"},
        {"threads", OPT_INT, &threads, "N", "threads (0: all cores)"},
        {"no-shuffle", OPT_FLAG, &no_shuffle, NULL, "keep the file's order of examples"},
        {"overwrite", OPT_FLAG, &o.overwrite, NULL, "write into a non-empty run folder"},
        {"quiet", OPT_FLAG, &o.quiet, NULL, "no progress lines"},
        {"grad-checkpoint", OPT_FLAG, &o.grad_checkpoint, NULL, "keep layer inputs only, recompute layers in backward (same numbers, less memory)"},
        {"grad-checkpoint-dtype", OPT_STR, &o.grad_checkpoint_dtype, "T", "kept layer inputs: fp32, or bf16 (half the memory; the forward goes on from the rounded values; implies --grad-checkpoint)"},
        {"save-every", OPT_INT, &o.save_every, "N", "write RUN/checkpoint-STEP every N steps (0: only at the end)"},
        {"keep-checkpoints", OPT_INT, &keep, "K", "keep the newest K checkpoints (0: all)"},
        {"resume", OPT_STR, &o.resume, "RUN", "continue RUN from its newest checkpoint, with its settings"},
        {"val-data", OPT_STR, &o.val_data, "PATH", "validation data (same formats as --data)"},
        {"val-split", OPT_FLOAT, &o.val_split, "F", "hold out this fraction of each --data source for validation"},
        {"eval-every", OPT_INT, &o.eval_every, "N", "evaluation loss every N steps into metrics.jsonl (0: only at the end)"},
        {"max-examples", OPT_INT, &o.max_examples, "N", "train on at most N examples (0: all)"},
        {"pack", OPT_FLAG, &o.pack, NULL, "pack several examples into each row of --seq-len tokens"},
        {"drop-long", OPT_FLAG, &o.drop_long, NULL, "drop examples longer than --seq-len instead of truncating them"},
        {"train-on-inputs", OPT_FLAG, &o.train_on_inputs, NULL, "train on every token (no prompt / non-assistant masking)"},
        {"txt-paragraphs", OPT_FLAG, &o.txt_paragraphs, NULL, ".txt files hold documents separated by blank lines (else one per file)"},
        {"chat-template", OPT_STR, &o.chat_template, "FILE", "a .jinja chat template instead of the model's"},
        {"template-arg", OPT_LIST, &targs, "K=V", "extra chat template variable (V as JSON, else text), e.g. enable_thinking=false"},
        {"dump-data", OPT_STR, &o.dump_data, "FILE", "write the prepared examples (input_ids, labels) as JSONL and exit"},
        {"dtype", OPT_STR, &o.dtype, "T", "compute type: fp32, or bf16 (the frozen-weight matmuls round their inputs and weights to bf16 and sum in fp32; LoRA weights and AdamW state stay fp32; the weights are kept as bf16 unless --quant says otherwise; --grad-checkpoint then keeps bf16 layer inputs)"},
        {"quant", OPT_STR, &o.quant, "FMT", "store the frozen linear weights as nf4 or fp4 (QLoRA, as bitsandbytes), q8 (GGUF Q8_0), bf16, or none (fp32; default: bf16 under --dtype bf16)"},
        {"double-quant", OPT_FLAG, &o.double_quant, NULL, "nf4/fp4: quantize the absmax values too (bitsandbytes' bnb_4bit_use_double_quant)"},
        {"quant-blocksize", OPT_INT, &qbs, "N", "nf4/fp4 values per absmax block"},
        {"quant-lm-head", OPT_STR, &o.quant_lm_head, "FMT", "LM head: q8, bf16 or none (fp32); default: the checkpoint's own dtype with --quant (bitsandbytes keeps lm_head unquantized too), fp32 without"},
        {0},
    };
    const cmd_info info = {"train", "ftune train --model DIR --data PATH[:W] [--data ...] --out RUN [options]",
                           "Fine-tune a LoRA adapter. Writes RUN/adapter_model.safetensors and "
                           "RUN/adapter_config.json\n(PEFT's layout: PeftModel.from_pretrained(model, RUN) "
                           "loads it), RUN/run_config.json and\nRUN/metrics.jsonl (one line per step).",
        NULL};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    o.lora_r = (int)r, o.batch_size = (int)bs, o.grad_accum = (int)ga, o.seq_len = (int)sl;
    o.threads = (int)threads, o.seed = (uint64_t)seed, o.shuffle = !no_shuffle;
    o.keep_checkpoints = (int)keep, o.quant_blocksize = (int)qbs;
    o.data_sources = data.v, o.n_data_sources = data.n;
    o.template_args = targs.v, o.n_template_args = targs.n;
    ft_status st = ft_train(&o, &err);
    if (st) ft_error_print(&err, stderr);
    return st;
}
