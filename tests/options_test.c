/*
 * options_test.c: the options table (src/train/options.c) and run_config.json (run_config.c).
 *
 * The settings text of a run is compared with the text the first format produced for the same
 * options (written out here by hand from trainer.c at 5cbdbcc), so a change of row order, key or
 * number format, which would make every existing run's settings hash invalid, fails here; an old
 * run_config.json (the one that format wrote) must load with every value. Defaults are compared
 * with the values ftune.h documents, and the parser's range checks with the cases of issues 14
 * and 15 (--batch-size 4294967297, --lr nan, --threads -1).
 */
#include "test.h"
#include "train/options.h"
#include "train/run_config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* settings_text(o, 0) of trainer.c at 5cbdbcc for the defaults with model "m" and data "d.jsonl" */
static const char *legacy_defaults =
    "model=m\ndata=d.jsonl\nadapter=\nlora_r=8\nlora_alpha=8\nlora_dropout=0\n"
    "lora_targets=q_proj,v_proj\nrslora=0\nsteps=0\nepochs=3\nbatch_size=8\ngrad_accum=1\n"
    "seq_len=2048\nlr=5.0000000000000002e-05\nschedule=linear\nwarmup_steps=0\nweight_decay=0\n"
    "max_grad_norm=1\nadam_beta1=0.90000000000000002\nadam_beta2=0.999\nadam_eps=1e-08\n"
    "seed=42\nshuffle=1\nval_data=\nval_split=0\npack=0\ndrop_long=0\ntrain_on_inputs=0\n"
    "txt_paragraphs=0\nmax_examples=0\nchat_template=\ntemplate_args=\nquant=none\n"
    "double_quant=0\nquant_blocksize=64\nquant_lm_head=default\n";

static void test_defaults_and_legacy_text(void) {
    ft_train_options o;
    ft_train_defaults(&o);
    CHECK(o.lora_r == 8 && o.lora_alpha == 8 && o.lora_dropout == 0, "LoRA defaults");
    CHECK(!strcmp(o.lora_targets, "q_proj,v_proj"), "targets default");
    CHECK(o.epochs == 3 && o.batch_size == 8 && o.grad_accum == 1 && o.seq_len == 2048, "sizes");
    CHECK(o.lr == 5e-5 && !strcmp(o.schedule, "linear") && o.max_grad_norm == 1.0, "optimizer");
    CHECK(o.adam_beta1 == 0.9 && o.adam_beta2 == 0.999 && o.adam_eps == 1e-8, "AdamW");
    CHECK(o.seed == 42 && o.shuffle == 1 && o.keep_checkpoints == 3, "seed, shuffle, keep");
    CHECK(o.quant_blocksize == FT_QUANT_BLOCKSIZE_DEFAULT && o.quant == NULL, "quant defaults");
    const char *data[1] = {"d.jsonl"};
    o.model_dir = "m", o.data_sources = data, o.n_data_sources = 1;
    char text[8192];
    opt_settings_text(&o, 0, text, sizeof text);
    CHECK(!strcmp(text, legacy_defaults), "settings text is the first format's:\n%s", text);
    /* the options added later appear only when set, so old hashes stay */
    o.dtype = "fp32", o.grad_checkpoint_dtype = "fp32";
    opt_settings_text(&o, 0, text, sizeof text);
    CHECK(!strcmp(text, legacy_defaults), "fp32 dtype / checkpoints leave the text as it was");
    o.dtype = "bf16", o.grad_checkpoint_dtype = "bf16";
    opt_settings_text(&o, 0, text, sizeof text);
    size_t n = strlen(legacy_defaults);
    CHECK(!strncmp(text, legacy_defaults, n) &&
              !strcmp(text + n, "grad_checkpoint_dtype=bf16\ndtype=bf16\n"),
          "bf16 adds its lines at the end: %s", text + n);
    /* options that do not decide the numbers are not in it */
    o.threads = 7, o.save_every = 3, o.eval_every = 2, o.keep_checkpoints = 9;
    char text2[8192];
    opt_settings_text(&o, 0, text2, sizeof text2);
    CHECK(!strcmp(text, text2), "threads / save / eval / keep are not hashed");
}

static void test_rows(void) {
    for (int i = 0; i < opt_n_rows; i++) {
        const opt_row *a = &opt_rows[i];
        CHECK(a->help && a->help[0], "row %s has help", a->key);
        CHECK(!(a->flags & OF_RESUME) || (a->flags & (OF_SAVE | OF_TRAIN)), "row %s", a->key);
        for (int j = i + 1; j < opt_n_rows; j++) {
            const opt_row *b = &opt_rows[j];
            CHECK(strcmp(a->key, b->key), "key %s twice", a->key);
            CHECK(!a->cli || !b->cli || strcmp(a->cli, b->cli), "CLI name %s twice", a->cli);
        }
    }
    CHECK(opt_find_cli("quant-blocksize") && opt_find("quant_blocksize"), "lookups");
    /* what a resume may change: issue 15's list, and nothing that decides the layout */
    static const char *const may[] = {"steps",      "epochs",       "lr",
                                      "schedule",   "warmup_steps", "threads",
                                      "save_every", "eval_every",   "keep_checkpoints"};
    for (size_t i = 0; i < sizeof may / sizeof may[0]; i++)
        CHECK(opt_find(may[i]) && (opt_find(may[i])->flags & OF_RESUME), "%s may change", may[i]);
    static const char *const fixed[] = {"model", "data",  "lora_r",  "batch_size", "seed",
                                        "quant", "dtype", "seq_len", "grad_accum", "adapter"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        CHECK(opt_find(fixed[i]) && !(opt_find(fixed[i])->flags & OF_RESUME), "%s is fixed",
              fixed[i]);
}

static void test_parse_ranges(void) {
    ft_train_options o;
    ft_train_defaults(&o);
    ft_error err;
    const opt_row *bs = opt_find("batch_size"), *lr = opt_find("lr"), *th = opt_find("threads");
    CHECK(opt_set_text(bs, &o, "4294967297", NULL, &err) == FT_ERR_INPUT && o.batch_size == 8,
          "batch size past int refused, value kept");
    CHECK(strstr(err.what, "2147483647") != NULL, "says the range: %s", err.what);
    CHECK(opt_set_text(bs, &o, "99999999999999999999", NULL, &err) == FT_ERR_INPUT, "past long");
    CHECK(opt_set_text(bs, &o, "0", NULL, &err) == FT_ERR_INPUT, "batch size 0");
    CHECK(opt_set_text(bs, &o, "4x", NULL, &err) == FT_ERR_INPUT, "not a number");
    CHECK(opt_set_text(bs, &o, "16", NULL, &err) == FT_OK && o.batch_size == 16, "16 taken");
    CHECK(opt_set_text(lr, &o, "nan", NULL, &err) == FT_ERR_INPUT, "lr nan");
    CHECK(strstr(err.what, "finite") != NULL, "nan: says finite: %s", err.what);
    CHECK(opt_set_text(lr, &o, "inf", NULL, &err) == FT_ERR_INPUT, "lr inf");
    CHECK(opt_set_text(lr, &o, "-1e-4", NULL, &err) == FT_ERR_INPUT, "lr negative");
    CHECK(opt_set_text(lr, &o, "0", NULL, &err) == FT_OK && o.lr == 0, "lr 0 is allowed");
    CHECK(opt_set_text(th, &o, "-1", NULL, &err) == FT_ERR_INPUT, "threads -1");
    const opt_row *seed = opt_find("seed");
    CHECK(opt_set_text(seed, &o, "18446744073709551615", NULL, &err) == FT_OK &&
              o.seed == 18446744073709551615ull,
          "a 64-bit seed");
    CHECK(opt_set_text(seed, &o, "-3", NULL, &err) == FT_ERR_INPUT, "negative seed");
}

/* the run_config.json of a run of the first format (trimmed: the options are what is read) */
static const char *legacy_run_config =
    "{\"ftune_version\": \"0.1.0\", \"options\": {\"model\": \"model\", \"data\": \"data.jsonl\","
    " \"data_sources\": [\"data.jsonl\"], \"val_split\": 0, \"eval_every\": 0, \"template_args\": "
    "[],"
    " \"pack\": false, \"drop_long\": false, \"train_on_inputs\": false, \"txt_paragraphs\": false,"
    " \"max_examples\": 0, \"adapter\": null, \"lora_r\": 8, \"lora_alpha\": 8, \"lora_dropout\": "
    "0.1,"
    " \"lora_targets\": \"all-linear\", \"rslora\": false, \"steps\": 16, \"epochs\": 3,"
    " \"batch_size\": 2, \"grad_accum\": 3, \"seq_len\": 2048, \"lr\": 0.01, \"schedule\": "
    "\"cosine\","
    " \"warmup_steps\": 2, \"weight_decay\": 0, \"max_grad_norm\": 1, \"adam_beta1\": 0.9,"
    " \"adam_beta2\": 0.999, \"adam_eps\": 1e-08, \"seed\": \"42\", \"shuffle\": true,"
    " \"save_every\": 1, \"keep_checkpoints\": 0, \"threads\": 2, \"quant\": null,"
    " \"double_quant\": false, \"quant_blocksize\": 64, \"quant_lm_head\": null,"
    " \"grad_checkpoint_dtype\": \"fp32\", \"dtype\": \"fp32\"},"
    " \"settings_hash\": \"9681aa21f3a7e343\", \"data_hash\": \"52246ee17d73ef11\"}";

static void test_legacy_run_config(void) {
    char dir[] = "/tmp/ftune-options-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temporary folder");
    char path[256];
    snprintf(path, sizeof path, "%s/run_config.json", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "write %s", path);
    if (!f) return;
    fputs(legacy_run_config, f);
    fclose(f);
    run_opts r;
    ft_error err = {0};
    CHECK(run_opts_load(&r, dir, &err) == FT_OK, "old run_config loads: %s", err.what);
    const ft_train_options *o = &r.o;
    CHECK(!strcmp(o->model_dir, "model") && o->n_data_sources == 1 &&
              !strcmp(o->data_sources[0], "data.jsonl"),
          "paths as stored (relative in the first format)");
    CHECK(o->steps == 16 && o->batch_size == 2 && o->grad_accum == 3 && o->lr == 0.01, "numbers");
    CHECK(!strcmp(o->schedule, "cosine") && o->warmup_steps == 2 && o->lora_dropout == 0.1, "more");
    CHECK(o->seed == 42 && o->shuffle == 1 && o->threads == 2 && o->keep_checkpoints == 0,
          "seed..");
    CHECK(o->quant == NULL && o->quant_lm_head == NULL && !strcmp(o->dtype, "fp32"), "no value");
    /* the text of the hash of that run (its checkpoints hold the hash of this text) */
    char text[8192];
    opt_settings_text(&r.hashed, 0, text, sizeof text);
    CHECK(strstr(text, "model=model\ndata=data.jsonl\nadapter=\nlora_r=8\nlora_alpha=8\n"
                       "lora_dropout=0.10000000000000001\nlora_targets=all-linear\n") == text,
          "hash text of the old run: %s", text);
    CHECK(strstr(text, "quant=none\ndouble_quant=0\nquant_blocksize=64\nquant_lm_head=default\n") &&
              !strstr(text, "dtype"),
          "its last lines");
    /* a resume may change --steps and --lr, but not --batch-size */
    ft_train_options g;
    ft_train_defaults(&g);
    g.steps = 32, g.lr = 0.005, g.batch_size = 4;
    const char *changes[] = {"steps", "lr"};
    g.resume_changes = changes, g.n_resume_changes = 2;
    char note[512];
    CHECK(run_opts_resume_changes(&r, &g, note, sizeof note, &err) == FT_OK, "%s", err.what);
    CHECK(r.o.steps == 32 && r.o.lr == 0.005 && r.hashed.steps == 16 && r.hashed.lr == 0.01,
          "changed in the options, not in what the hash is made of");
    CHECK(strstr(note, "--steps 16 -> 32") && strstr(note, "--lr 0.01"), "note: %s", note);
    const char *bad[] = {"batch_size", "steps"};
    g.resume_changes = bad;
    CHECK(run_opts_resume_changes(&r, &g, note, sizeof note, &err) == FT_ERR_INPUT,
          "batch refused");
    CHECK(strstr(err.what, "batch_size=2 (now 4)") != NULL, "names it: %s", err.what);
    run_opts_free(&r);
    /* --threads -1 went through the first format's parser: the run still resumes (threads 0) */
    f = fopen(path, "w");
    CHECK(f != NULL, "rewrite %s", path);
    if (f) {
        char *t = strdup(legacy_run_config), *p = strstr(t, "\"threads\": 2");
        memcpy(p, "\"threads\":-1", 12);
        fputs(t, f);
        fclose(f);
        free(t);
        CHECK(run_opts_load(&r, dir, &err) == FT_OK && r.o.threads == 0, "threads -1 read as 0");
        run_opts_free(&r);
    }
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_defaults_and_legacy_text();
    test_rows();
    test_parse_ranges();
    test_legacy_run_config();
    return test_summary("options");
}
