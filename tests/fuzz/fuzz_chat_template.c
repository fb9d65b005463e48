/*
 * fuzz_chat_template.c: libFuzzer harness for chat templates (src/tok/chat_template.c and the
 * Jinja interpreter under it: jinja_lex.c, jinja_parse.c, jinja_eval.c, jinja_builtins.c).
 *
 * The input is a template file (.jinja source), loaded with chat_template_load(model_dir,
 * template_path) where model_dir holds a fixed tokenizer_config.json (bos/eos as strings, unk and
 * pad as {"content": ...} objects, as real files mix them). When it parses, it renders two fixed
 * conversations: system/user/assistant/user with a generation prompt, and one with a tool call,
 * a tool list and an extra variable (enable_thinking). Promises checked: the output is
 * NUL-terminated at its reported length and every {% generation %} span lies inside it, in order.
 * Errors (raise_exception, unknown filters, type errors) are fine; crashes, leaks, hangs are not.
 */
#include "fuzz_common.h"
#include "tok/chat_template.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char tok_config_[] =
    "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
    " \"unk_token\": {\"content\": \"<unk>\", \"lstrip\": false},"
    " \"pad_token\": {\"content\": \"<pad>\"}, \"model_max_length\": 2048}";
static const char conv1_[] =
    "[{\"role\": \"system\", \"content\": \"You are helpful.\"},"
    " {\"role\": \"user\", \"content\": \"Hi <b>there</b> & \\u00e9\\n\"},"
    " {\"role\": \"assistant\", \"content\": \"Hello!\"},"
    " {\"role\": \"user\", \"content\": \"2 + 2?\"}]";
static const char conv2_[] =
    "[{\"role\": \"user\", \"content\": \"Weather in Paris?\"},"
    " {\"role\": \"assistant\", \"content\": \"\", \"reasoning_content\": \"use the tool\","
    "  \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"weather\","
    "  \"arguments\": {\"city\": \"Paris\"}}}]},"
    " {\"role\": \"tool\", \"content\": \"{\\\"temp\\\": 21}\", \"name\": \"weather\"},"
    " {\"role\": \"assistant\", \"content\": \"21 C.\"}]";
static const char tools_[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"weather\", \"description\": \"Weather\","
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}},"
    " \"required\": [\"city\"]}}}]";
static const char extra_[] = "{\"enable_thinking\": false}";

static char model_dir_[600];
static cJSON *conv1, *conv2, *tools, *extra;

static void free_all(void) {
    cJSON_Delete(conv1);
    cJSON_Delete(conv2);
    cJSON_Delete(tools);
    cJSON_Delete(extra);
    char p[700];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", model_dir_);
    unlink(p);
    rmdir(model_dir_);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(model_dir_, sizeof model_dir_, "%s/model", fz_dir());
    if (mkdir(model_dir_, 0700)) abort();
    char p[700];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", model_dir_);
    FILE *f = fopen(p, "wb");
    if (!f || fputs(tok_config_, f) < 0 || fclose(f)) abort();
    conv1 = cJSON_Parse(conv1_);
    conv2 = cJSON_Parse(conv2_);
    tools = cJSON_Parse(tools_);
    extra = cJSON_Parse(extra_);
    if (!conv1 || !conv2 || !tools || !extra) abort();
    atexit(free_all);
    return 0;
}

static void render(const chat_template *t, const cJSON *msgs, const cJSON *tl, int gen,
                   const cJSON *ex) {
    chat_render r = {0};
    ft_error err;
    if (chat_template_render(t, msgs, tl, gen, ex, &r, &err) == FT_OK) {
        if (!r.text || r.text[r.len] || r.n_spans < 0 || (r.n_spans && !r.spans)) abort();
        size_t prev = 0;
        for (int i = 0; i < r.n_spans; i++) {
            if (r.spans[i].begin < prev || r.spans[i].end < r.spans[i].begin ||
                r.spans[i].end > r.len)
                abort();
            prev = r.spans[i].end;
        }
    } else if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) {
        abort();
    }
    chat_render_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[700];
    snprintf(path, sizeof path, "%s", fz_write("template.jinja", data, size));
    chat_template *t = NULL;
    ft_error err;
    if (chat_template_load(model_dir_, path, &t, &err)) {
        if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) abort();
        return 0;
    }
    render(t, conv1, NULL, 1, NULL);
    render(t, conv2, tools, 0, extra);
    chat_template_free(t);
    return 0;
}
