/*
 * chat_template.c: finds a model's chat template and renders conversations through it the way
 * transformers' apply_chat_template(..., tokenize=False) does (see chat_template.h).
 *
 * Loading: an explicit .jinja file, else DIR/chat_template.jinja, else DIR/tokenizer_config.json's
 * "chat_template" (a string, or a list of {name, template} of which "default" is used, and
 * "tool_use" when tools are given, as transformers' get_chat_template picks). The named special
 * tokens (bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token; strings or
 * {"content": ...}) become template variables; special_tokens_map.json overrides them only when
 * tokenizer_config.json has no added_tokens_decoder, as transformers' legacy path does.
 *
 * Rendering prepares the variables as transformers 5.23 does: keys whose value is null are
 * dropped from each message; a message with reasoning (reasoning_content, thinking or
 * reasoning) gets "thinking" first and "reasoning_content" set (_alias_reasoning_fields);
 * tools and documents are none when absent; extra variables override special tokens.
 * Messages must be objects with a string "role" (ftune checks this; transformers does not).
 */
#include "tok/chat_template.h"

#include "io/gguf.h"
#include "tok/tokenizer.h"

#include "io/json.h"
#include "tok/jinja.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct chat_template {
    jinja_template *main;
    jinja_template *tool_use; /* NULL unless the config had a "tool_use" template */
    cJSON *special;           /* object: special token name -> string */
};

static const char *const special_names[] = {"bos_token", "eos_token", "unk_token",  "sep_token",
                                            "pad_token", "cls_token", "mask_token", NULL};

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static void take_special(cJSON *dst, const cJSON *src) {
    for (int i = 0; special_names[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(src, special_names[i]);
        const char *s = NULL;
        if (cJSON_IsString(v))
            s = v->valuestring;
        else if (cJSON_IsObject(v)) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
            if (cJSON_IsString(c)) s = c->valuestring;
        }
        if (!s) continue;
        cJSON_DeleteItemFromObjectCaseSensitive(dst, special_names[i]);
        cJSON_AddStringToObject(dst, special_names[i], s);
    }
}

static ft_status parse_tpl(const char *src, const char *name, jinja_template **out, ft_error *err) {
    return jinja_parse(src, strlen(src), name, out, err);
}

ft_status chat_template_load(const char *model_dir, const char *template_path, chat_template **out,
                             ft_error *err) {
    chat_template *t = calloc(1, sizeof *t);
    if (!t) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    t->special = cJSON_CreateObject();
    ft_status st = FT_OK;
    cJSON *cfg = NULL, *stm = NULL;
    char *src = NULL;
    char path[4096], name[4200];
    int gguf = model_dir && gguf_is_file(model_dir);
    if (gguf) { /* the special tokens and template in a GGUF file's metadata */
        st = tok_config_load(model_dir, &cfg, err);
        if (st) goto fail;
        take_special(t->special, cfg);
    } else if (model_dir) {
        snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
        if (file_exists(path)) {
            st = json_load_file(path, &cfg, err);
            if (st) goto fail;
            take_special(t->special, cfg);
            snprintf(path, sizeof path, "%s/special_tokens_map.json", model_dir);
            if (!cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder") &&
                file_exists(path)) {
                st = json_load_file(path, &stm, err);
                if (st) goto fail;
                take_special(t->special, stm);
            }
        }
    }
    if (template_path) {
        st = file_read_all(template_path, &src, NULL, err);
        if (st) goto fail;
        st = parse_tpl(src, template_path, &t->main, err);
        goto done;
    }
    if (!model_dir) {
        st = ft_error_set(err, FT_ERR_INPUT, "chat template",
                          "pass --model DIR or --chat-template FILE",
                          "no model folder and no template file given");
        goto fail;
    }
    snprintf(path, sizeof path, "%s/chat_template.jinja", model_dir);
    if (!gguf && file_exists(path)) {
        st = file_read_all(path, &src, NULL, err);
        if (st) goto fail;
        st = parse_tpl(src, path, &t->main, err);
        goto done;
    }
    if (gguf)
        snprintf(path, sizeof path, "%s: key tokenizer.chat_template", model_dir);
    else
        snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    const cJSON *ct = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "chat_template") : NULL;
    if (cJSON_IsString(ct)) {
        snprintf(name, sizeof name, "%s[chat_template]", path);
        st = parse_tpl(ct->valuestring, name, &t->main, err);
        goto done;
    }
    if (cJSON_IsArray(ct)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, ct) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tp = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (!cJSON_IsString(nm) || !cJSON_IsString(tp)) {
                st = ft_error_set(err, FT_ERR_INPUT, path, NULL,
                                  "field chat_template: each entry must be {\"name\": string, "
                                  "\"template\": string}");
                goto fail;
            }
            jinja_template **slot = !strcmp(nm->valuestring, "default")    ? &t->main
                                    : !strcmp(nm->valuestring, "tool_use") ? &t->tool_use
                                                                           : NULL;
            if (!slot) continue;
            snprintf(name, sizeof name, "%s[chat_template:%s]", path, nm->valuestring);
            st = parse_tpl(tp->valuestring, name, slot, err);
            if (st) goto fail;
        }
        if (!t->main) {
            st =
                ft_error_set(err, FT_ERR_INPUT, path, "pass --chat-template FILE",
                             "field chat_template: the list of templates has no \"default\" entry");
            goto fail;
        }
        goto done;
    }
    st = ft_error_set(err, FT_ERR_INPUT, model_dir, "pass a template with --chat-template FILE",
                      gguf ? "no chat template: the GGUF file has no tokenizer.chat_template key"
                           : "no chat template: neither chat_template.jinja nor a "
                             "\"chat_template\" field in tokenizer_config.json");
    goto fail;
done:
    if (st) goto fail;
    free(src);
    cJSON_Delete(cfg);
    cJSON_Delete(stm);
    *out = t;
    return FT_OK;
fail:
    free(src);
    cJSON_Delete(cfg);
    cJSON_Delete(stm);
    chat_template_free(t);
    return st;
}

/* transformers' _alias_reasoning_fields: {"thinking": r, **message, "reasoning_content": r} */
static cJSON *alias_reasoning(const cJSON *m) {
    static const char *const fields[] = {"reasoning_content", "thinking", "reasoning"};
    const cJSON *r = NULL;
    for (int i = 0; i < 3 && !r; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, fields[i]);
        if (v && !cJSON_IsNull(v)) r = v;
    }
    if (!r) return cJSON_Duplicate(m, 1);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "thinking", cJSON_Duplicate(r, 1));
    for (const cJSON *e = m->child; e; e = e->next) {
        if (!strcmp(e->string, "thinking"))
            cJSON_ReplaceItemInObjectCaseSensitive(o, "thinking", cJSON_Duplicate(e, 1));
        else if (!strcmp(e->string, "reasoning_content"))
            cJSON_AddItemToObject(o, "reasoning_content", cJSON_Duplicate(r, 1));
        else
            cJSON_AddItemToObject(o, e->string, cJSON_Duplicate(e, 1));
    }
    if (!cJSON_GetObjectItemCaseSensitive(o, "reasoning_content"))
        cJSON_AddItemToObject(o, "reasoning_content", cJSON_Duplicate(r, 1));
    return o;
}

ft_status chat_template_render(const chat_template *t, const cJSON *messages, const cJSON *tools,
                               int add_generation_prompt, const cJSON *extra, chat_render *out,
                               ft_error *err) {
    memset(out, 0, sizeof *out);
    if (!cJSON_IsArray(messages))
        return ft_error_set(err, FT_ERR_INPUT, "messages",
                            "give a JSON array of {\"role\", \"content\"} objects",
                            "expected an array of messages, got %s", json_type_name(messages));
    if (!cJSON_GetArraySize(messages))
        return ft_error_set(err, FT_ERR_INPUT, "messages", NULL, "the conversation is empty");
    if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools))
        return ft_error_set(err, FT_ERR_INPUT, "tools", NULL,
                            "expected an array of tool definitions, got %s", json_type_name(tools));
    if (extra && !cJSON_IsObject(extra))
        return ft_error_set(err, FT_ERR_INPUT, "template variables", NULL, "expected an object");
    cJSON *vars = cJSON_Duplicate(t->special, 1);
    cJSON *msgs = cJSON_CreateArray();
    int i = 0;
    for (const cJSON *m = messages->child; m; m = m->next, i++) {
        char where[64];
        snprintf(where, sizeof where, "message %d", i);
        if (!cJSON_IsObject(m)) {
            cJSON_Delete(vars);
            cJSON_Delete(msgs);
            return ft_error_set(err, FT_ERR_INPUT, where, NULL, "expected an object, got %s",
                                json_type_name(m));
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) {
            cJSON_Delete(vars);
            cJSON_Delete(msgs);
            return ft_error_set(
                err, FT_ERR_INPUT, where,
                "every message needs \"role\": \"system\", \"user\", \"assistant\" or \"tool\"",
                role ? "field \"role\": expected a string, got %s" : "missing field \"role\"%s",
                role ? json_type_name(role) : "");
        }
        cJSON *clean = cJSON_CreateObject();
        for (const cJSON *e = m->child; e; e = e->next)
            if (!cJSON_IsNull(e)) cJSON_AddItemToObject(clean, e->string, cJSON_Duplicate(e, 1));
        cJSON_AddItemToArray(msgs, alias_reasoning(clean));
        cJSON_Delete(clean);
    }
    int has_tools = tools && !cJSON_IsNull(tools);
    cJSON_AddItemToObject(vars, "messages", msgs);
    cJSON_AddItemToObject(vars, "tools",
                          has_tools ? cJSON_Duplicate(tools, 1) : cJSON_CreateNull());
    cJSON_AddItemToObject(vars, "documents", cJSON_CreateNull());
    cJSON_AddItemToObject(vars, "add_generation_prompt", cJSON_CreateBool(add_generation_prompt));
    if (extra)
        for (const cJSON *e = extra->child; e; e = e->next) {
            cJSON_DeleteItemFromObjectCaseSensitive(vars, e->string);
            cJSON_AddItemToObject(vars, e->string, cJSON_Duplicate(e, 1));
        }
    const jinja_template *jt = has_tools && t->tool_use ? t->tool_use : t->main;
    jinja_span *spans = NULL;
    int ns = 0;
    ft_status st = jinja_render(jt, vars, &out->text, &out->len, &spans, &ns, err);
    cJSON_Delete(vars);
    if (st) return st;
    if (ns) {
        out->spans = malloc(sizeof(chat_span) * (size_t)ns);
        if (!out->spans) {
            free(spans);
            free(out->text);
            out->text = NULL;
            return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL,
                                "out of memory after rendering the chat template");
        }
        for (int k = 0; k < ns; k++) {
            out->spans[k].begin = spans[k].begin;
            out->spans[k].end = spans[k].end;
        }
        out->n_spans = ns;
    }
    free(spans);
    return FT_OK;
}

void chat_render_free(chat_render *r) {
    if (!r) return;
    free(r->text);
    free(r->spans);
    memset(r, 0, sizeof *r);
}

void chat_template_free(chat_template *t) {
    if (!t) return;
    jinja_free(t->main);
    jinja_free(t->tool_use);
    cJSON_Delete(t->special);
    free(t);
}

ft_status chat_template_args(const char *const *args, int n, cJSON **extra, ft_error *err) {
    *extra = NULL;
    if (n <= 0) return FT_OK;
    cJSON *e = cJSON_CreateObject();
    for (int i = 0; i < n; i++) {
        const char *a = args[i], *eq = strchr(a, '=');
        if (!eq || eq == a) {
            cJSON_Delete(e);
            return ft_error_set(err, FT_ERR_INPUT, "option --template-arg",
                                "write KEY=VALUE, e.g. enable_thinking=false",
                                "expected KEY=VALUE, got \"%s\"", a);
        }
        char *key = strndup(a, (size_t)(eq - a));
        cJSON *v = cJSON_Parse(eq + 1);
        if (!v) v = cJSON_CreateString(eq + 1);
        cJSON_DeleteItemFromObjectCaseSensitive(e, key);
        cJSON_AddItemToObject(e, key, v);
        free(key);
    }
    *extra = e;
    return FT_OK;
}

ft_status chat_conversation_parts(const cJSON *conv, const char *where, const cJSON **messages,
                                  const cJSON **tools, ft_error *err) {
    const cJSON *m = conv, *t = NULL;
    *messages = NULL, *tools = NULL;
    if (cJSON_IsObject(conv)) {
        m = cJSON_GetObjectItemCaseSensitive(conv, "messages");
        t = cJSON_GetObjectItemCaseSensitive(conv, "tools");
        if (!cJSON_IsArray(m))
            return ft_error_set(
                err, FT_ERR_INPUT, where,
                "give {\"messages\": [...], \"tools\": [...]} or an array of messages",
                m ? "field \"messages\": expected an array, got %s"
                  : "missing field \"messages\"%s",
                m ? json_type_name(m) : "");
    } else if (!cJSON_IsArray(conv)) {
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "expected an array of messages or an object, got %s",
                            json_type_name(conv));
    }
    *messages = m, *tools = t;
    return FT_OK;
}

ft_status chat_conversation_load(const char *path, cJSON **root, const cJSON **messages,
                                 const cJSON **tools, ft_error *err) {
    *root = NULL, *messages = NULL, *tools = NULL;
    char *text;
    size_t len;
    ft_status st = file_read_all(path, &text, &len, err);
    if (st) return st;
    cJSON *conv;
    st = json_parse(text, len, path, &conv, err);
    if (!st) {
        /* a second value after the first (a JSONL file) would be ignored silently: refuse */
        const char *end = NULL;
        cJSON *again = cJSON_ParseWithLengthOpts(text, len, &end, 0);
        cJSON_Delete(again);
        while (end && end < text + len &&
               (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
            end++;
        if (end && end < text + len)
            st = ft_error_set(err, FT_ERR_INPUT, path,
                              "give one conversation per file; `ftune chat-template --chat "
                              "FILE.jsonl` renders every line of a JSONL file",
                              "the file holds more than one JSON value (JSONL?)");
    }
    free(text);
    if (!st) st = chat_conversation_parts(conv, path, messages, tools, err);
    if (st) {
        cJSON_Delete(conv);
        return st;
    }
    *root = conv;
    return FT_OK;
}
