/*
 * cmd_chat_template.c: "ftune chat-template", which renders a conversation through a model's chat
 * template exactly as transformers' apply_chat_template(..., tokenize=False) would, and prints
 * the text unchanged (no newline added). With --spans it prints a JSON object with the text and
 * the byte spans of the {% generation %} blocks (what TRL's assistant_only_loss trains on).
 *
 * The conversation file is a JSON array of messages, or an object {"messages": [...],
 * "tools": [...]}. --template-arg KEY=VALUE passes extra template variables; VALUE is parsed as
 * JSON when it parses (true, 3, "x", {...}) and is a plain string otherwise. Bad input exits 2
 * with a message naming the file and the position (template line:column, message index).
 */
#include "cli/args.h"
#include "io/json.h"
#include "tok/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_chat_template(int argc, char **argv) {
    const char *model = NULL, *chat = NULL, *tpl = NULL;
    int add_gen = 0, spans = 0;
    args_list targs = {0};
    const opt_spec specs[] = {
        {"model", OPT_STR, &model, "DIR", "model folder (tokenizer_config.json, chat_template.jinja)"},
        {"chat", OPT_STR, &chat, "FILE.json", "conversation: array of messages or {\"messages\", \"tools\"}"},
        {"chat-template", OPT_STR, &tpl, "FILE", "use this Jinja template instead of the model's"},
        {"add-generation-prompt", OPT_FLAG, &add_gen, NULL, "end with the header of an assistant turn"},
        {"template-arg", OPT_LIST, &targs, "KEY=VALUE", "extra template variable (VALUE as JSON if it parses); repeatable"},
        {"spans", OPT_FLAG, &spans, NULL, "print {\"text\", \"spans\"} with the {% generation %} byte spans"},
        {NULL, 0, NULL, NULL, NULL}};
    const cmd_info info = {"chat-template",
                           "ftune chat-template --model DIR --chat FILE.json [options]",
                           "Render a conversation through the model's chat template, byte for byte as "
                           "transformers' apply_chat_template(tokenize=False) does.",
        NULL};
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
    chat_render out = {0};
    const cJSON *messages = NULL, *tools = NULL;
    ft_status st = chat_template_args(targs.v, targs.n, &extra, &err);
    if (!st) st = chat_conversation_load(chat, &conv, &messages, &tools, &err);
    if (st) goto done;
    st = chat_template_load(model, tpl, &t, &err);
    if (st) goto done;
    st = chat_template_render(t, messages, tools, add_gen, extra, &out, &err);
    if (st) {
        /* conversation errors name a message: say which file it is in */
        if (!strncmp(err.where, "message", 7) || !strncmp(err.where, "tools", 5)) {
            char w[sizeof err.where];
            memcpy(w, err.where, sizeof w);
            size_t n = strlen(chat);
            if (n > 300) n = 300;
            memcpy(err.where, chat, n);
            err.where[n] = ':';
            err.where[n + 1] = ' ';
            snprintf(err.where + n + 2, sizeof err.where - n - 2, "%.200s", w);
        }
        goto done;
    }
    if (spans) {
        cJSON *o = cJSON_CreateObject();
        cJSON *txt = cJSON_CreateString(out.text);
        cJSON_AddItemToObject(o, "text", txt);
        cJSON *sp = cJSON_AddArrayToObject(o, "spans");
        for (int i = 0; i < out.n_spans; i++) {
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)out.spans[i].begin));
            cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)out.spans[i].end));
            cJSON_AddItemToArray(sp, pair);
        }
        char *s = cJSON_PrintUnformatted(o);
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
        cJSON_Delete(o);
    } else if (out.len && fwrite(out.text, 1, out.len, stdout) != out.len) {
        st = ft_error_set(&err, FT_ERR_RUNTIME, "stdout", NULL, "write failed");
    }
done:
    if (st) ft_error_print(&err, stderr);
    chat_render_free(&out);
    chat_template_free(t);
    cJSON_Delete(conv);
    cJSON_Delete(extra);
    return st ? (int)st : 0;
}
