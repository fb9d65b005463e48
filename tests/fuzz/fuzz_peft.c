/*
 * fuzz_peft.c: libFuzzer harness for PEFT adapter folders (lora_load_peft in src/model/lora.c:
 * adapter_config.json, then adapter_model.safetensors checked against the model).
 *
 * Once per process, LLVMFuzzerInitialize writes a tiny random Llama (model_init_random: llama,
 * tiny, vocab 64) and a valid adapter for it (r 4, q_proj and v_proj, saved by lora_save_peft)
 * into the scratch folder. Each input then replaces one file of that adapter folder:
 *   - input starting with '{' or white space (or shorter than 8 bytes): adapter_config.json, with
 *     the valid adapter_model.safetensors beside it;
 *   - anything else: adapter_model.safetensors, with the valid adapter_config.json beside it.
 * An accepted adapter must fit the model: modules on existing layers and kinds, A (R, in) and
 * B (out, R) with in/out from config.json, offsets inside params; a broken promise aborts.
 */
#include "fuzz_common.h"
#include "model/config.h"
#include "model/init.h"
#include "model/lora.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static model_config cfg_;
static char model_dir_[600], adapter_dir_[600];
static char *good_config_, *good_weights_;
static size_t good_config_len_, good_weights_len_;

__attribute__((noreturn)) static void die(const ft_error *err) {
    ft_error_print(err, stderr);
    abort(); /* set-up failed: not a finding */
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) abort();
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void free_all(void) {
    model_config_free(&cfg_);
    free(good_config_);
    free(good_weights_);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ft_error err;
    snprintf(model_dir_, sizeof model_dir_, "%s/model", fz_dir());
    snprintf(adapter_dir_, sizeof adapter_dir_, "%s/adapter", fz_dir());
    if (model_init_random("llama", "tiny", 64, 1, model_dir_, &err)) die(&err);
    if (model_config_load(model_dir_, &cfg_, &err)) die(&err);
    unsigned mask;
    lora_set *ls = NULL;
    if (lora_parse_targets(&cfg_, "q_proj,v_proj", &mask, &err) ||
        lora_create(&cfg_, 4, 8, 0, 0, mask, NULL, &ls, &err))
        die(&err);
    lora_init(ls, 7);
    if (lora_save_peft(ls, &cfg_, adapter_dir_, "fuzz", &err)) die(&err);
    lora_free(ls);
    char p[700];
    snprintf(p, sizeof p, "%s/adapter_config.json", adapter_dir_);
    good_config_ = slurp(p, &good_config_len_);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", adapter_dir_);
    good_weights_ = slurp(p, &good_weights_len_);
    /* The model files are not needed any more; the scratch cleanup only removes plain files
     * directly under fz_dir(), so take the folders apart here. */
    const char *mf[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", model_dir_, mf[i]);
        unlink(p);
    }
    rmdir(model_dir_);
    atexit(free_all);
    return 0;
}

static void put(const char *name, const void *data, size_t size) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", adapter_dir_, name);
    FILE *f = fopen(p, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) abort();
}

static void remove_adapter_dir(void) {
    char p[700];
    const char *af[] = {"adapter_config.json", "adapter_model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", adapter_dir_, af[i]);
        unlink(p);
    }
    rmdir(adapter_dir_);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int registered;
    if (!registered) registered = 1, atexit(remove_adapter_dir);
    int is_json = size < 8 || data[0] == '{' || data[0] == ' ' || data[0] == '\n' ||
                  data[0] == '\t' || data[0] == '\r';
    if (is_json) {
        put("adapter_config.json", data, size);
        put("adapter_model.safetensors", good_weights_, good_weights_len_);
    } else {
        put("adapter_config.json", good_config_, good_config_len_);
        put("adapter_model.safetensors", data, size);
    }
    lora_set *ls = NULL;
    ft_error err;
    if (lora_load_peft(&cfg_, adapter_dir_, &ls, &err)) {
        if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) abort();
        return 0;
    }
    if (!ls || ls->R < 1 || ls->n < 1 || !ls->params || !ls->mods) abort();
    for (int i = 0; i < ls->n; i++) {
        const lora_module *m = &ls->mods[i];
        if (m->layer < 0 || m->layer >= cfg_.L || m->kind < 0 || m->kind >= LIN_COUNT) abort();
        if (lora_get(ls, m->layer, m->kind) != m) abort();
        if (m->in < 1 || m->out < 1 || m->in > cfg_.C + cfg_.I || m->out > 2 * cfg_.I + cfg_.C)
            abort();
        if (m->offA + (size_t)ls->R * m->in > ls->n_params ||
            m->offB + (size_t)m->out * ls->R > ls->n_params)
            abort();
    }
    lora_free(ls);
    return 0;
}
