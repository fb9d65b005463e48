/*
 * cmd_chat_template.c: "ftune chat-template", which renders a conversation through a model's chat
 * template exactly as transformers' apply_chat_template(..., tokenize=False) would, and prints
 * the text unchanged (no newline added). With --spans it prints a JSON object with the text and
 * the byte spans of the {% generation %} blocks (what TRL's assistant_only_loss trains on).
 *
 * The conversation file is a JSON array of messages, or an object {"messages": [...],
 * "tools": [...]}, or any chat row of a training file: ShareGPT's {"conversations": [...]} and
 * roles such as human/gpt are mapped, and tools given as a JSON string parsed, as training does
 * (src/data/rows.h), so what is shown is what is trained on. A JSONL file of such conversations (a
 * training file of messages rows) has every line rendered: each rendering is preceded by a line
 * "==> FILE:LINE <==" and followed by a newline (the header line makes the boundaries plain; the
 * renderings themselves are byte-exact between them), and with --spans each line gives one JSON
 * object with "line" added. Reading only the first line, as it once did, showed one conversation of
 * a file silently; every line is what one checks a data file with. --template-arg KEY=VALUE passes
 * extra template variables; VALUE is parsed as JSON when it parses (true, 3, "x", {...}) and is a
 * plain string otherwise. Bad input exits 2 with a message naming the file and the position
 * (template line:column, message index, and the line of a JSONL file).
 */
#include "cli/args.h"
#include "data/rows.h"
#include "io/json.h"
#include "tok/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct render_opts {
    const chat_template *t;
    const cJSON *extra;
    int add_gen, spans;
    int line; /* JSONL line, 0 for a single conversation */
} render_opts;

/* Render one conversation value and print it; errors about messages name where. */
static ft_status render_one(const render_opts *o, const cJSON *conv, const char *where,
                            ft_error *err) {
    const cJSON *messages, *tools;
    cJSON *owned = NULL;
    ft_status st = data_is_chat_row(conv)
                       ? data_chat_row(conv, where, &owned, &messages, &tools, err)
                       : chat_conversation_parts(conv, where, &messages, &tools, err);
    if (st) return st;
    chat_render out = {0};
    st = chat_template_render(o->t, messages, tools, o->add_gen, o->extra, &out, err);
    cJSON_Delete(owned);
    if (st) {
        /* conversation errors name a message: say which file (and line) it is in */
        if (!strncmp(err->where, "message", 7) || !strncmp(err->where, "tools", 5)) {
            char w[sizeof err->where];
            memcpy(w, err->where, sizeof w);
            snprintf(err->where, sizeof err->where, "%.300s: %.200s", where, w);
        }
        return st;
    }
    if (o->spans) {
        cJSON *j = cJSON_CreateObject();
        if (o->line) cJSON_AddNumberToObject(j, "line", o->line);
        cJSON_AddItemToObject(j, "text", cJSON_CreateString(out.text));
        cJSON *sp = cJSON_AddArrayToObject(j, "spans");
        for (int i = 0; i < out.n_spans; i++) {
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)out.spans[i].begin));
            cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)out.spans[i].end));
            cJSON_AddItemToArray(sp, pair);
        }
        char *s = cJSON_PrintUnformatted(j);
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
        cJSON_Delete(j);
    } else {
        if (o->line) printf("==> %s <==\n", where);
        if (out.len && fwrite(out.text, 1, out.len, stdout) != out.len)
            st = ft_error_set(err, FT_ERR_RUNTIME, "stdout", NULL, "write failed");
        if (o->line) fputc('\n', stdout);
    }
    chat_render_free(&out);
    return st;
}

/* 1 if text holds more than one JSON value (a JSONL file). */
static int several_values(const char *text, size_t len) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    cJSON_Delete(j);
    if (!j || !end) return 0;
    while (end < text + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
        end++;
    return end < text + len;
}

/* Every non-blank line of a JSONL file, rendered in order. */
static ft_status render_lines(render_opts *o, const char *path, const char *text, size_t len,
                              ft_error *err) {
    const char *p = text, *end = text + len;
    ft_status st = FT_OK;
    int lineno = 0;
    while (p < end && !st) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end, *s = p;
        lineno++;
        p = nl ? nl + 1 : end;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        if (s == le) continue;
        char where[600];
        snprintf(where, sizeof where, "%.500s:%d", path, lineno);
        const char *jend = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(s, (size_t)(le - s), &jend, 0);
        while (j && jend < le && (*jend == ' ' || *jend == '\t' || *jend == '\r'))
            jend++;
        if (!j || jend != le) {
            cJSON_Delete(j);
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "a JSONL file has one conversation per line",
                                "line is not one JSON value");
        }
        o->line = lineno;
        st = render_one(o, j, where, err);
        cJSON_Delete(j);
    }
    return st;
}

int cmd_chat_template(int argc, char **argv) {
    const char *model = NULL, *chat = NULL, *tpl = NULL;
    int add_gen = 0, spans = 0;
    args_list targs = {0};
    const opt_spec specs[] = {
        {"model", OPT_STR, &model, "DIR",
         "model folder (tokenizer_config.json, chat_template.jinja)"},
        {"chat", OPT_STR, &chat, "FILE",
         "conversation: array of messages or {\"messages\", \"tools\"}; a JSONL file of them "
         "renders every line"},
        {"chat-template", OPT_STR, &tpl, "FILE", "use this Jinja template instead of the model's"},
        {"add-generation-prompt", OPT_FLAG, &add_gen, NULL,
         "end with the header of an assistant turn"},
        {"template-arg", OPT_LIST, &targs, "KEY=VALUE",
         "extra template variable (VALUE as JSON if it parses); repeatable"},
        {"spans", OPT_FLAG, &spans, NULL,
         "print {\"text\", \"spans\"} with the {% generation %} byte spans (one line per "
         "conversation)"},
        {NULL, 0, NULL, NULL, NULL}};
    const cmd_info info = {
        "chat-template", "ftune chat-template --model DIR --chat FILE [options]",
        "Render a conversation through the model's chat template, byte for byte as "
        "transformers' apply_chat_template(tokenize=False) does.\n"
        "A JSONL file has every line rendered, each after a line \"==> FILE:LINE <==\".",
        "  ftune chat-template --model SmolLM2-135M-Instruct --chat conv.json "
        "--add-generation-prompt\n"
        "  ftune chat-template --model Qwen3-0.6B --chat train.jsonl --template-arg "
        "enable_thinking=false\n"
        "  ftune chat-template --model DIR --chat-template mine.jinja --chat conv.json --spans"};
    ft_error err = {0};
    int r = args_parse(argc, argv, &info, specs, &err);
    if (r == -1) return 0;
    if (r) {
        ft_error_print(&err, stderr);
        return r;
    }
    if (!chat || (!model && !tpl)) {
        ft_error_set(&err, FT_ERR_INPUT, "chat-template", "run 'ftune chat-template --help'",
                     "--chat and one of --model or --chat-template are required");
        ft_error_print(&err, stderr);
        return 2;
    }
    cJSON *conv = NULL, *extra = NULL;
    chat_template *t = NULL;
    char *text = NULL;
    size_t len = 0;
    ft_status st = chat_template_args(targs.v, targs.n, &extra, &err);
    if (!st) st = file_read_all(chat, &text, &len, &err);
    int jsonl = !st && several_values(text, len);
    if (!st && !jsonl) st = json_parse(text, len, chat, &conv, &err);
    if (!st) st = chat_template_load(model, tpl, &t, &err);
    render_opts o = {t, extra, add_gen, spans, 0};
    if (!st)
        st = jsonl ? render_lines(&o, chat, text, len, &err) : render_one(&o, conv, chat, &err);
    if (st) ft_error_print(&err, stderr);
    free(text);
    chat_template_free(t);
    cJSON_Delete(conv);
    cJSON_Delete(extra);
    return st ? (int)st : 0;
}
