/*
 * formats.c: one data file to tokenized examples with loss masks, as TRL's SFTTrainer prepares
 * them (trl 1.16, trainer/sft_trainer.py _prepare_dataset; facts, not code).
 *
 * The format of a JSONL file is decided by the keys of its first line, and every later line
 * must have them too:
 *   input_ids (+ labels)       pre-tokenized; labels default to input_ids
 *   messages (+ tools)         rendered by the chat template; ids = encode(render, no special
 *                              tokens); loss on the assistant's tokens: the template's
 *                              {% generation %} spans when it has them (TRL's
 *                              assistant_only_loss), else found by masks.c; no EOS added
 *   conversations (+ system, tools)  ShareGPT: from/value turns with their roles mapped
 *                              (map_roles: human -> user, gpt -> assistant, observation -> tool,
 *                              function_call -> an assistant turn with tool_calls), then as
 *                              messages
 *   prompt + completion        strings: completion + eos_token unless it ends with it; ids =
 *                              encode(prompt + completion) with special tokens; the completion
 *                              starts where encode(prompt) and those ids part (TRL's
 *                              common_prefix_length); loss on the completion only.
 *                              Lists of messages: the prompt rendered with the generation
 *                              prompt, prompt + completion without, no EOS added.
 *   instruction + output (+ input)  Alpaca: turned into prompt/completion with the Stanford
 *                              Alpaca prompt (docs/data.md), then as above
 *   text                       text + eos_token unless it ends with it, encoded with special
 *                              tokens; loss on everything
 * A file whose first character is '[' is one JSON array of such rows (read_json_array).
 * A .txt file is text: one document, or documents separated by blank lines (txt_paragraphs).
 * train_on_inputs drops every mask. Then examples longer than seq_len keep their first seq_len
 * tokens (or are dropped with drop_long) and examples with no label left are dropped (TRL drops
 * examples left fully masked by truncation); both are counted.
 */
#include "base/hash.h"
#include "data/data_internal.h"
#include "data/rows.h"
#include "io/json.h"

#include <stdlib.h>
#include <string.h>

ft_status exvec_push(exvec *v, example e, ft_error *err) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 256;
        example *ne = realloc(v->v, sizeof(example) * cap);
        if (!ne) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
        v->v = ne, v->cap = cap;
    }
    v->v[v->n++] = e;
    return FT_OK;
}

void exvec_free(exvec *v) {
    for (int i = 0; i < v->n; i++) {
        free(v->v[i].ids);
        free(v->v[i].labels);
        free(v->v[i].docs);
    }
    free(v->v);
    memset(v, 0, sizeof *v);
}

/* ---- tokenizer and template, loaded when a file first needs them ---- */

static ft_status need_tokenizer(data_ctx *c, const char *where, ft_error *err) {
    if (c->tok) return FT_OK;
    if (!c->o->model_dir)
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "text, prompt/completion and chat data need a model folder with "
                            "tokenizer.json; pre-tokenized lines (input_ids) do not",
                            "no tokenizer to encode this example with");
    ft_status st = tok_load(c->o->model_dir, &c->tok, err);
    if (st) {
        char w[sizeof err->where];
        snprintf(w, sizeof w, "%s", err->where);
        snprintf(err->where, sizeof err->where, "%.200s (needed by %.280s)", w, where);
        return st;
    }
    /* eos_token from tokenizer_config.json (a string or {"content": ...}) */
    cJSON *j = NULL;
    ft_error ignore;
    if (tok_config_load(c->o->model_dir, &j, &ignore) == FT_OK) { /* folder or GGUF file */
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "eos_token");
        if (cJSON_IsObject(e)) e = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (cJSON_IsString(e)) c->eos = strdup(e->valuestring);
        cJSON_Delete(j);
    }
    return FT_OK;
}

static ft_status need_template(data_ctx *c, const char *where, ft_error *err) {
    if (c->tpl) return FT_OK;
    ft_status st = chat_template_load(c->o->model_dir, c->o->chat_template, &c->tpl, err);
    if (st) {
        char w[sizeof err->where];
        snprintf(w, sizeof w, "%s", err->where);
        snprintf(err->where, sizeof err->where, "%.200s (needed by %.280s)", w, where);
        if (!err->hint[0])
            snprintf(err->hint, sizeof err->hint,
                     "messages need the model's chat template; give one with --chat-template "
                     "FILE.jinja");
    }
    return st;
}

static ft_status encode(data_ctx *c, const char *s, size_t n, int special, int32_t **ids,
                        size_t *len, const char *where, const char *field, ft_error *err) {
    ft_status st = tok_encode(c->tok, s, n, special, ids, len, err);
    if (st) {
        char what[sizeof err->what];
        snprintf(what, sizeof what, "%s", err->what);
        return ft_error_set(err, st, where, "the text must be valid UTF-8", "field \"%s\": %s",
                            field, what);
    }
    return FT_OK;
}

/* a + b (+ eos unless the field TRL checks, b if check_b else a, ends with it), malloc'ed */
static char *concat(const char *a, const char *b, const char *eos, int check_b, size_t *n) {
    size_t la = strlen(a), lb = strlen(b), le = eos ? strlen(eos) : 0;
    char *s = malloc(la + lb + le + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    size_t m = la + lb;
    const char *tail = check_b ? b : a;
    size_t lt = check_b ? lb : la;
    if (le && !(lt >= le && !memcmp(tail + lt - le, eos, le))) memcpy(s + m, eos, le), m += le;
    s[m] = 0;
    *n = m;
    return s;
}

static size_t lcp_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i;
}

/* The last step of every format: range check, truncation or dropping, then keep. */
static ft_status finish(data_ctx *c, int32_t *ids, int32_t *labels, size_t n, const char *where,
                        exvec *out, ft_error *err) {
    const data_options *o = c->o;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= o->vocab) {
            int32_t bad = ids[i];
            free(ids);
            free(labels);
            size_t tv = c->tok ? tok_vocab_size(c->tok) : 0;
            char hint[600];
            snprintf(hint, sizeof hint,
                     "the tokenizer (%zu tokens) and the model (config.json vocab_size %d) must "
                     "come from the same model folder; for a folder made by ftune init (vocabulary "
                     "512 unless told), make it again with --tokenizer DIR (or --vocab %zu)",
                     tv, o->vocab, tv);
            return ft_error_set(err, FT_ERR_INPUT, where, hint,
                                "token id %d is outside the model's vocabulary [0, %d)", bad,
                                o->vocab);
        }
    if (o->train_on_inputs) memcpy(labels, ids, sizeof(int32_t) * n);
    int dropped = 0;
    if (n == 0) {
        dropped = 1, c->n_dropped_masked++;
    } else if (o->seq_len > 0 && (int)n > o->seq_len) {
        if (o->drop_long)
            dropped = 1, c->n_dropped_long++;
        else
            n = (size_t)o->seq_len, c->n_truncated++;
    }
    if (!dropped) {
        size_t k = 0;
        while (k < n && labels[k] == -100)
            k++;
        if (k == n) dropped = 1, c->n_dropped_masked++;
    }
    if (dropped) {
        if (!c->first_dropped[0]) snprintf(c->first_dropped, sizeof c->first_dropped, "%s", where);
        free(ids);
        free(labels);
        return FT_OK;
    }
    example e = {ids, labels, (int)n, NULL, 0};
    ft_status st = exvec_push(out, e, err);
    if (st) free(ids), free(labels);
    return st;
}

static ft_status do_text(data_ctx *c, const char *text, const char *where, exvec *out,
                         ft_error *err) {
    size_t n, len;
    char *s = concat(text, "", c->eos, 0, &len);
    int32_t *ids;
    if (!s) return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
    ft_status st = encode(c, s, len, 1, &ids, &n, where, "text", err);
    free(s);
    if (st) return st;
    int32_t *labels = malloc(sizeof(int32_t) * (n ? n : 1));
    memcpy(labels, ids, sizeof(int32_t) * n);
    return finish(c, ids, labels, n, where, out, err);
}

static ft_status do_prompt_completion(data_ctx *c, const char *prompt, const char *completion,
                                      const char *where, exvec *out, ft_error *err) {
    size_t np, n, len;
    int32_t *pids, *ids;
    ft_status st = encode(c, prompt, strlen(prompt), 1, &pids, &np, where, "prompt", err);
    if (st) return st;
    char *s = concat(prompt, completion, c->eos, 1, &len);
    st = encode(c, s, len, 1, &ids, &n, where, "completion", err);
    free(s);
    if (st) {
        free(pids);
        return st;
    }
    size_t plen = lcp_ids(pids, np, ids, n);
    free(pids);
    int32_t *labels = malloc(sizeof(int32_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        labels[i] = i < plen ? -100 : ids[i];
    return finish(c, ids, labels, n, where, out, err);
}

static ft_status render_error(ft_error *err, const char *where, const char *field) {
    char what[sizeof err->what], w[sizeof err->where];
    snprintf(what, sizeof what, "%s", err->what);
    snprintf(w, sizeof w, "%s", err->where);
    ft_status st = err->status ? err->status : FT_ERR_INPUT;
    char msg[sizeof err->what + sizeof err->where + 64];
    snprintf(msg, sizeof msg, "the chat template refused it: %s%s%s", what, w[0] ? " (at " : "",
             w[0] ? w : "");
    if (w[0]) strcat(msg, ")");
    char hint[sizeof err->hint];
    snprintf(hint, sizeof hint, "%s",
             err->hint[0] ? err->hint
                          : "check the roles and their order against what the template expects");
    return ft_error_set(err, st, where, hint, "field \"%s\": %s", field, msg);
}

/* template variables: --template-arg values, then the line's chat_template_kwargs */
static cJSON *line_extra(data_ctx *c, const cJSON *line) {
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(line, "chat_template_kwargs");
    if (!cJSON_IsObject(kw)) return NULL;
    cJSON *e = c->extra ? cJSON_Duplicate(c->extra, 1) : cJSON_CreateObject();
    for (const cJSON *i = kw->child; i; i = i->next) {
        cJSON_DeleteItemFromObjectCaseSensitive(e, i->string);
        cJSON_AddItemToObject(e, i->string, cJSON_Duplicate(i, 1));
    }
    return e;
}

static ft_status check_messages(const cJSON *msgs, const char *field, const char *where,
                                ft_error *err) {
    if (!cJSON_IsArray(msgs))
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "write messages as [{\"role\": \"user\", \"content\": \"...\"}, ...]",
                            "field \"%s\": expected a list of messages, found %s", field,
                            json_type_name(msgs));
    int i = 0;
    for (const cJSON *m = msgs->child; m; m = m->next, i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role))
            return ft_error_set(
                err, FT_ERR_INPUT, where,
                "each message is {\"role\": \"user\"|\"assistant\"|..., \"content\": ...}",
                "field \"%s[%d]\": %s", field, i,
                cJSON_IsObject(m) ? "field \"role\" is missing or not a string"
                                  : "expected a message object");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        /* No content is refused: templates would render the missing value as "" or "None"
         * and train on that silently. Only a turn that calls tools may leave it out. */
        if ((!content || cJSON_IsNull(content)) &&
            !cJSON_GetObjectItemCaseSensitive(m, "tool_calls"))
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "give every message a \"content\" (\"\" for an empty turn; only "
                                "a turn with \"tool_calls\" may leave it out)",
                                "field \"%s[%d].content\" is %s", field, i,
                                content ? "null" : "missing");
        if (content && !cJSON_IsString(content) && !cJSON_IsArray(content) &&
            !cJSON_IsNull(content))
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "content is a string (or a list of parts)",
                                "field \"%s[%d].content\": expected a string, found %s", field, i,
                                json_type_name(content));
    }
    if (i == 0)
        return ft_error_set(err, FT_ERR_INPUT, where, "give at least one message",
                            "field \"%s\" is an empty list", field);
    return FT_OK;
}

static ft_status do_chat(data_ctx *c, const cJSON *line, const cJSON *msgs, const char *field,
                         const char *where, exvec *out, ft_error *err) {
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(line, "tools");
    ft_status st = check_messages(msgs, field, where, err);
    if (st) return st;
    cJSON *tparsed = NULL;
    if (cJSON_IsString(tools))
        tools = tparsed = cJSON_Parse(tools->valuestring); /* TRL: json.loads */
    if (tools && cJSON_IsNull(tools)) tools = NULL;
    if (tools && !cJSON_IsArray(tools)) {
        cJSON_Delete(tparsed);
        return ft_error_set(err, FT_ERR_INPUT, where, "tools is a list of JSON schemas",
                            "field \"tools\": expected a list, found %s", json_type_name(tools));
    }
    cJSON *lx = line_extra(c, line);
    const cJSON *extra = lx ? lx : c->extra;
    chat_render r = {0};
    st = chat_template_render(c->tpl, msgs, tools, 0, extra, &r, err);
    if (st) {
        cJSON_Delete(lx);
        cJSON_Delete(tparsed);
        return render_error(err, where, field);
    }
    int32_t *ids = NULL, *labels = NULL;
    size_t n = 0;
    st = encode(c, r.text, r.len, 0, &ids, &n, where, field, err);
    if (!st) labels = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!st && c->o->train_on_inputs) {
        memcpy(labels, ids, sizeof(int32_t) * n);
    } else if (!st) {
        chat_span *sp = r.spans;
        int nsp = r.n_spans, own = 0;
        if (nsp == 0) {
            st = assistant_spans(c->tpl, c->tok, msgs, tools, extra, r.text, r.len, &sp, &nsp, err);
            if (st) st = render_error(err, where, field);
            own = 1;
        }
        if (!st) {
            size_t *off = malloc(sizeof(size_t) * (n + 1));
            token_offsets(c->tok, r.text, r.len, ids, n, off);
            for (size_t i = 0; i < n; i++) {
                int in = 0;
                for (int s = 0; s < nsp && !in; s++)
                    in = off[i] < sp[s].end && (off[i + 1] > sp[s].begin ||
                                                (off[i + 1] == off[i] && off[i] == sp[s].begin));
                labels[i] = in ? ids[i] : -100;
            }
            free(off);
            if (nsp == 0) c->n_no_assistant++;
        }
        if (own) free(sp);
    }
    chat_render_free(&r);
    cJSON_Delete(lx);
    cJSON_Delete(tparsed);
    if (st) {
        free(ids);
        free(labels);
        return st;
    }
    return finish(c, ids, labels, n, where, out, err);
}

/* ShareGPT's roles and the roles of chat messages, as Axolotl's chat_template reader (human,
 * user -> user; gpt, assistant -> assistant; system; tool) and LLaMA-Factory's ShareGPT reader
 * (human, gpt, system, observation = a tool's result, function_call = the assistant calling a
 * tool, its value the JSON {"name", "arguments"} of the call) map them. */
static const struct {
    const char *from, *role;
} ROLE_MAP[] = {{"human", "user"},       {"user", "user"},
                {"gpt", "assistant"},    {"assistant", "assistant"},
                {"system", "system"},    {"tool", "tool"},
                {"observation", "tool"}, {"function_call", "assistant"}};
#define KNOWN_ROLES "human, user, gpt, assistant, system, tool, observation, function_call"

static const char *mapped_role(const char *from) {
    for (size_t i = 0; i < sizeof ROLE_MAP / sizeof ROLE_MAP[0]; i++)
        if (!strcmp(ROLE_MAP[i].from, from)) return ROLE_MAP[i].role;
    return NULL;
}

/* The tool_calls of a function_call turn: its value is a JSON object {"name", "arguments"}
 * (or a list of them), as a string or as JSON. NULL if it is not. */
static cJSON *function_calls(const cJSON *value) {
    cJSON *v = cJSON_IsString(value) ? cJSON_Parse(value->valuestring) : cJSON_Duplicate(value, 1);
    cJSON *calls = cJSON_CreateArray();
    int ok = cJSON_IsObject(v) || (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0);
    const cJSON *one = cJSON_IsObject(v) ? v : v ? v->child : NULL;
    for (; ok && one; one = cJSON_IsObject(v) ? NULL : one->next) {
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(one, "name"))) ok = 0;
        cJSON *call = cJSON_CreateObject();
        cJSON_AddStringToObject(call, "type", "function");
        cJSON_AddItemToObject(call, "function", cJSON_Duplicate(one, 1));
        cJSON_AddItemToArray(calls, call);
    }
    cJSON_Delete(v);
    if (!ok) cJSON_Delete(calls);
    return ok ? calls : NULL;
}

/* msgs with ShareGPT's keys (from/value, when sharegpt) and roles mapped to chat messages
 * (role/content, ROLE_MAP), and `system` (ShareGPT's system column) in front unless the
 * conversation starts with a system turn. *out is NULL when msgs needs no change. Unknown roles
 * are refused in ShareGPT rows; in messages rows they are left to the chat template. */
static ft_status map_roles(const cJSON *msgs, const char *field, int sharegpt, const cJSON *system,
                           const char *where, cJSON **out, ft_error *err) {
    *out = NULL;
    if (!cJSON_IsArray(msgs)) return FT_OK; /* check_messages says what is wrong */
    int change = sharegpt || cJSON_IsString(system);
    for (const cJSON *m = msgs->child; m && !change; m = m->next) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "role");
        const char *to = cJSON_IsString(r) ? mapped_role(r->valuestring) : NULL;
        change = to && strcmp(to, r->valuestring);
    }
    if (!change) return FT_OK;
    cJSON *a = cJSON_CreateArray();
    int i = 0;
    for (const cJSON *m = msgs->child; m; m = m->next, i++) {
        const char *rk = sharegpt && !cJSON_GetObjectItemCaseSensitive(m, "role") ? "from" : "role";
        const char *ck =
            sharegpt && !cJSON_GetObjectItemCaseSensitive(m, "content") ? "value" : "content";
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, rk);
        if (!cJSON_IsObject(m) || !cJSON_IsString(r)) {
            cJSON_Delete(a);
            return ft_error_set(
                err, FT_ERR_INPUT, where,
                sharegpt
                    ? "each turn is {\"from\": \"human\"|\"gpt\"|..., \"value\": \"...\"}"
                    : "each message is {\"role\": \"user\"|\"assistant\"|..., \"content\": ...}",
                "field \"%s[%d]\": %s", field, i,
                !cJSON_IsObject(m) ? "expected a message object"
                : sharegpt         ? "field \"from\" is missing or not a string"
                                   : "field \"role\" is missing or not a string");
        }
        const char *to = mapped_role(r->valuestring);
        if (!to && sharegpt) {
            cJSON_Delete(a);
            return ft_error_set(err, FT_ERR_INPUT, where, "ShareGPT roles are " KNOWN_ROLES,
                                "field \"%s[%d].%s\": unknown role \"%.60s\"", field, i, rk,
                                r->valuestring);
        }
        cJSON *n = cJSON_CreateObject();
        cJSON_AddStringToObject(n, "role", to ? to : r->valuestring);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, ck);
        if (sharegpt && (!content || cJSON_IsNull(content))) {
            cJSON_Delete(n);
            cJSON_Delete(a);
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "each turn is {\"from\": ..., \"value\": \"...\"} (\"\" for an "
                                "empty turn)",
                                "field \"%s[%d].%s\" is %s", field, i, ck,
                                content ? "null" : "missing");
        }
        if (!strcmp(r->valuestring, "function_call") &&
            !cJSON_GetObjectItemCaseSensitive(m, "tool_calls")) {
            cJSON *calls = content ? function_calls(content) : NULL;
            if (!calls) {
                cJSON_Delete(n);
                cJSON_Delete(a);
                return ft_error_set(
                    err, FT_ERR_INPUT, where,
                    "a function_call turn holds the call as JSON: {\"name\": \"f\", "
                    "\"arguments\": {...}}",
                    "field \"%s[%d].%s\": not a function call", field, i, ck);
            }
            cJSON_AddStringToObject(n, "content", ""); /* templates such as Qwen3's read it */
            cJSON_AddItemToObject(n, "tool_calls", calls);
        } else if (content) {
            cJSON_AddItemToObject(n, "content", cJSON_Duplicate(content, 1));
        }
        for (const cJSON *k = m->child; k; k = k->next) /* other keys as they are */
            if (strcmp(k->string, rk) && strcmp(k->string, ck) && strcmp(k->string, "role") &&
                strcmp(k->string, "content") && !cJSON_GetObjectItemCaseSensitive(n, k->string))
                cJSON_AddItemToObject(n, k->string, cJSON_Duplicate(k, 1));
        cJSON_AddItemToArray(a, n);
    }
    const cJSON *r0 = a->child ? cJSON_GetObjectItemCaseSensitive(a->child, "role") : NULL;
    if (cJSON_IsString(system) && !(r0 && !strcmp(r0->valuestring, "system"))) {
        cJSON *sm = cJSON_CreateObject();
        cJSON_AddStringToObject(sm, "role", "system");
        cJSON_AddStringToObject(sm, "content", system->valuestring);
        cJSON_InsertItemInArray(a, 0, sm);
    }
    *out = a;
    return FT_OK;
}

int data_is_chat_row(const cJSON *row) {
    return cJSON_IsObject(row) && (cJSON_GetObjectItemCaseSensitive(row, "messages") ||
                                   cJSON_GetObjectItemCaseSensitive(row, "conversations"));
}

ft_status data_chat_row(const cJSON *row, const char *where, cJSON **owned, const cJSON **messages,
                        const cJSON **tools, ft_error *err) {
    *owned = NULL, *messages = NULL, *tools = NULL;
    int sharegpt = !cJSON_GetObjectItemCaseSensitive(row, "messages");
    const char *field = sharegpt ? "conversations" : "messages";
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(row, field);
    cJSON *mapped = NULL;
    ft_status st = map_roles(msgs, field, sharegpt,
                             sharegpt ? cJSON_GetObjectItemCaseSensitive(row, "system") : NULL,
                             where, &mapped, err);
    if (!st) st = check_messages(mapped ? mapped : msgs, field, where, err);
    if (st) {
        cJSON_Delete(mapped);
        return st;
    }
    cJSON *own = cJSON_CreateObject();
    if (mapped) cJSON_AddItemToObject(own, "messages", mapped);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(row, "tools");
    if (cJSON_IsString(t)) {
        cJSON *parsed = cJSON_Parse(t->valuestring);
        if (parsed) cJSON_AddItemToObject(own, "tools", parsed);
        t = parsed;
    }
    if (t && cJSON_IsNull(t)) t = NULL;
    if (t && !cJSON_IsArray(t)) {
        cJSON_Delete(own);
        return ft_error_set(err, FT_ERR_INPUT, where, "tools is a list of JSON schemas",
                            "field \"tools\": expected a list, found %s", json_type_name(t));
    }
    *owned = own;
    *messages = mapped ? mapped : msgs;
    *tools = t;
    return FT_OK;
}

/* A chat row: `field` is "messages" or ShareGPT's "conversations" (+ "system"), with "tools"
 * and "chat_template_kwargs" beside it. */
static ft_status do_messages(data_ctx *c, const cJSON *line, const char *field, const char *where,
                             exvec *out, ft_error *err) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(line, field);
    int sharegpt = !strcmp(field, "conversations");
    cJSON *mapped = NULL;
    ft_status st = map_roles(msgs, field, sharegpt,
                             sharegpt ? cJSON_GetObjectItemCaseSensitive(line, "system") : NULL,
                             where, &mapped, err);
    if (st) return st;
    if (mapped) msgs = mapped;
    st = do_chat(c, line, msgs, field, where, out, err);
    cJSON_Delete(mapped);
    return st;
}

/* prompt and completion as lists of messages */
static ft_status do_conv_prompt_completion(data_ctx *c, const cJSON *line, const char *where,
                                           exvec *out, ft_error *err) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(line, "prompt");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(line, "completion");
    ft_status st = check_messages(p, "prompt", where, err);
    if (!st) st = check_messages(q, "completion", where, err);
    if (st) return st;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(line, "tools");
    if (tools && !cJSON_IsArray(tools)) tools = NULL;
    cJSON *lx = line_extra(c, line);
    const cJSON *extra = lx ? lx : c->extra;
    cJSON *all = cJSON_CreateArray();
    for (cJSON *m = p->child; m; m = m->next)
        cJSON_AddItemReferenceToArray(all, m);
    for (cJSON *m = q->child; m; m = m->next)
        cJSON_AddItemReferenceToArray(all, m);
    chat_render rp = {0}, ra = {0};
    st = chat_template_render(c->tpl, p, tools, 1, extra, &rp, err);
    if (st) st = render_error(err, where, "prompt");
    if (!st && (st = chat_template_render(c->tpl, all, tools, 0, extra, &ra, err)))
        st = render_error(err, where, "completion");
    cJSON_Delete(all);
    cJSON_Delete(lx);
    int32_t *pids = NULL, *ids = NULL, *labels = NULL;
    size_t np = 0, n = 0;
    if (!st) st = encode(c, rp.text, rp.len, 0, &pids, &np, where, "prompt", err);
    if (!st) st = encode(c, ra.text, ra.len, 0, &ids, &n, where, "completion", err);
    chat_render_free(&rp);
    chat_render_free(&ra);
    if (st) {
        free(pids);
        free(ids);
        return st;
    }
    size_t plen = lcp_ids(pids, np, ids, n);
    free(pids);
    labels = malloc(sizeof(int32_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        labels[i] = i < plen ? -100 : ids[i];
    return finish(c, ids, labels, n, where, out, err);
}

/* Stanford Alpaca's prompt (github.com/tatsu-lab/stanford_alpaca, train.py PROMPT_DICT) */
static const char ALPACA_INPUT[] =
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n%s\n\n### Input:\n%s\n\n### Response:\n";
static const char ALPACA_NO_INPUT[] =
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n%s\n\n### Response:\n";

typedef enum { F_IDS, F_MESSAGES, F_SHAREGPT, F_PC, F_CONV_PC, F_ALPACA, F_TEXT } fmt;

static ft_status detect(const cJSON *j, fmt *f, const char *where, ft_error *err) {
#define HAS(k) (cJSON_GetObjectItemCaseSensitive(j, k) != NULL)
    if (HAS("input_ids"))
        *f = F_IDS;
    else if (HAS("messages"))
        *f = F_MESSAGES;
    else if (HAS("conversations"))
        *f = F_SHAREGPT;
    else if (HAS("prompt") && HAS("completion"))
        *f = cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "prompt")) ? F_CONV_PC : F_PC;
    else if (HAS("instruction") && HAS("output"))
        *f = F_ALPACA;
    else if (HAS("text"))
        *f = F_TEXT;
    else {
        char keys[300] = "";
        for (const cJSON *i = j->child; i && strlen(keys) < 200; i = i->next) {
            strcat(keys, keys[0] ? ", " : "");
            strncat(keys, i->string, 60);
        }
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "each line needs \"text\", \"prompt\"+\"completion\", \"messages\", "
                            "\"conversations\" (ShareGPT), \"instruction\"+\"output\" or "
                            "\"input_ids\" (docs/data.md)",
                            "cannot tell the format from the keys {%s}", keys[0] ? keys : "none");
    }
    return FT_OK;
#undef HAS
}

static ft_status get_str(const cJSON *j, const char *key, int required, const char **out,
                         const char *where, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v || (cJSON_IsNull(v) && !required)) {
        *out = NULL;
        if (!required) return FT_OK;
        return ft_error_set(err, FT_ERR_INPUT, where, "every line of a file has the same fields",
                            "field \"%s\" is missing", key);
    }
    if (!cJSON_IsString(v))
        return ft_error_set(err, FT_ERR_INPUT, where, "write it as a JSON string",
                            "field \"%s\": expected a string, found %s", key, json_type_name(v));
    *out = v->valuestring;
    return FT_OK;
}

static ft_status do_line(data_ctx *c, const cJSON *j, fmt f, const char *where, exvec *out,
                         ft_error *err) {
    const char *a, *b, *d;
    ft_status st;
    switch (f) {
    case F_IDS: {
        example e = {0};
        int nl;
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "input_ids");
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
        if (!ids)
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "every line of a file has the same fields",
                                "field \"input_ids\" is missing");
        if ((st = read_int_array(ids, "input_ids", c->o->vocab, 0, &e.ids, &e.n, where, err)))
            return st;
        if (labels && !cJSON_IsNull(labels)) {
            st = read_int_array(labels, "labels", c->o->vocab, 1, &e.labels, &nl, where, err);
            if (!st && nl != e.n)
                st = ft_error_set(
                    err, FT_ERR_INPUT, where,
                    "labels needs one entry per input id (-100 where nothing is trained)",
                    "field \"labels\" has %d items but \"input_ids\" has %d", nl, e.n);
            if (st) {
                free(e.ids);
                free(e.labels);
                return st;
            }
        } else {
            e.labels = malloc(sizeof(int32_t) * (e.n ? e.n : 1));
            memcpy(e.labels, e.ids, sizeof(int32_t) * e.n);
        }
        return finish(c, e.ids, e.labels, (size_t)e.n, where, out, err);
    }
    case F_MESSAGES:
        return do_messages(c, j, "messages", where, out, err);
    case F_SHAREGPT:
        return do_messages(c, j, "conversations", where, out, err);
    case F_CONV_PC:
        return do_conv_prompt_completion(c, j, where, out, err);
    case F_PC:
        if ((st = get_str(j, "prompt", 1, &a, where, err))) return st;
        if ((st = get_str(j, "completion", 1, &b, where, err))) return st;
        return do_prompt_completion(c, a, b, where, out, err);
    case F_ALPACA: {
        if ((st = get_str(j, "instruction", 1, &a, where, err))) return st;
        if ((st = get_str(j, "input", 0, &d, where, err))) return st;
        if ((st = get_str(j, "output", 1, &b, where, err))) return st;
        size_t n = strlen(a) + (d ? strlen(d) : 0) + sizeof ALPACA_INPUT;
        char *p = malloc(n);
        if (d && d[0])
            snprintf(p, n, ALPACA_INPUT, a, d);
        else
            snprintf(p, n, ALPACA_NO_INPUT, a);
        st = do_prompt_completion(c, p, b, where, out, err);
        free(p);
        return st;
    }
    case F_TEXT:
        if ((st = get_str(j, "text", 1, &a, where, err))) return st;
        return do_text(c, a, where, out, err);
    }
    return FT_OK;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static ft_status read_txt(data_ctx *c, const char *path, char *text, size_t len, exvec *out,
                          ft_error *err) {
    ft_status st = need_tokenizer(c, path, err);
    if (st) return st;
    int before = out->n;
    if (!c->o->txt_paragraphs) {
        st = do_text(c, text, path, out, err);
    } else {
        /* documents are runs of lines separated by lines that are empty or only whitespace */
        char *p = text, *end = text + len, *doc = NULL, *doc_end = NULL;
        int lineno = 0, doc_line = 0;
        while (!st && p <= end) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            char *le = nl ? nl : end;
            lineno++;
            int blank = 1;
            for (char *s = p; s < le; s++)
                if (!(*s == ' ' || *s == '\t' || *s == '\r')) blank = 0;
            if (!blank && !doc) doc = p, doc_line = lineno;
            if (!blank) doc_end = le;
            if ((blank || !nl) && doc) {
                char save = *doc_end;
                *doc_end = 0;
                char where[4200];
                snprintf(where, sizeof where, "%s:%d", path, doc_line);
                st = do_text(c, doc, where, out, err);
                *doc_end = save;
                doc = NULL;
            }
            if (!nl) break;
            p = nl + 1;
        }
    }
    if (!st && out->n == before && !c->first_dropped[0])
        st = ft_error_set(err, FT_ERR_INPUT, path, "give a text file with some text in it",
                          "the file has no text");
    return st;
}

/* One row of a file (a JSONL line or an item of a JSON array): the first decides the format. */
static ft_status do_row(data_ctx *c, const cJSON *j, int *have_fmt, fmt *f, const char *where,
                        exvec *out, ft_error *err) {
    ft_status st = FT_OK;
    if (!*have_fmt) {
        st = detect(j, f, where, err);
        if (!st && *f != F_IDS) st = need_tokenizer(c, where, err);
        if (!st && (*f == F_MESSAGES || *f == F_SHAREGPT || *f == F_CONV_PC))
            st = need_template(c, where, err);
        *have_fmt = 1;
    }
    return st ? st : do_line(c, j, *f, where, out, err);
}

static int is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

/* A file holding one JSON array of rows (Alpaca's and LLaMA-Factory's .json files). Each item is
 * parsed on its own, so an error names the line where the item starts and its index. */
static ft_status read_json_array(data_ctx *c, const char *path, const char *text, size_t len,
                                 exvec *out, ft_error *err) {
    const char *p = text, *end = text + len;
    int line = 1, item = 0, have_fmt = 0;
    fmt f = F_TEXT;
    char where[4200];
#define SKIP_SPACE()                                                                               \
    while (p < end && is_space(*p)) {                                                              \
        if (*p == '\n') line++;                                                                    \
        p++;                                                                                       \
    }
    SKIP_SPACE();
    p++; /* the '[' the caller saw */
    ft_status st = FT_OK;
    for (;;) {
        SKIP_SPACE();
        snprintf(where, sizeof where, "%s:%d (item %d)", path, line, item);
        if (p < end && *p == ']' && item == 0) {
            p++;
            break;
        }
        const char *jend = NULL;
        cJSON *j = p < end ? cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &jend, 0) : NULL;
        if (!j || !cJSON_IsObject(j)) {
            cJSON_Delete(j);
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "a .json data file is one JSON array of objects such as "
                                "[{\"text\": \"...\"}, ...]",
                                j ? "the item is not a JSON object" : "the item is not valid JSON");
        }
        st = do_row(c, j, &have_fmt, &f, where, out, err);
        cJSON_Delete(j);
        if (st) return st;
        for (; p < jend; p++) /* count the item's own lines */
            if (*p == '\n') line++;
        item++;
        SKIP_SPACE();
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == ']') {
            p++;
            break;
        }
        snprintf(where, sizeof where, "%s:%d", path, line);
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "items of a JSON array are separated by commas",
                            "expected ',' or ']' after item %d", item - 1);
    }
    SKIP_SPACE();
#undef SKIP_SPACE
    if (p < end) {
        snprintf(where, sizeof where, "%s:%d", path, line);
        return ft_error_set(err, FT_ERR_INPUT, where, "give one JSON array, or JSONL lines",
                            "text after the end of the JSON array");
    }
    if (item == 0)
        return ft_error_set(err, FT_ERR_INPUT, path, "give at least one example",
                            "the JSON array is empty");
    return FT_OK;
}

ft_status data_read_file(data_ctx *c, const char *path, exvec *out, ft_error *err) {
    char *text;
    size_t len;
    ft_status st = file_read_all(path, &text, &len, err);
    if (st) return st;
    c->hash = hash_bytes(path, strlen(path), c->hash);
    c->hash = hash_bytes(text, len, c->hash);
    if (ends_with(path, ".txt")) {
        st = read_txt(c, path, text, len, out, err);
        free(text);
        return st;
    }
    size_t first = 0;
    while (first < len && is_space(text[first]))
        first++;
    if (first < len && text[first] == '[') {
        st = read_json_array(c, path, text, len, out, err);
        free(text);
        return st;
    }
    int lineno = 0, have_fmt = 0;
    fmt f = F_TEXT;
    char *p = text, *end = text + len;
    while (p < end && !st) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        lineno++;
        char *s = p;
        p = nl ? nl + 1 : end;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        if (s == le) continue; /* blank line */
        char where[4200];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        const char *jend = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(s, (size_t)(le - s), &jend, 0);
        while (j && jend < le && (*jend == ' ' || *jend == '\t' || *jend == '\r'))
            jend++;
        if (!j || !cJSON_IsObject(j) || jend != le) {
            cJSON_Delete(j);
            st = ft_error_set(
                err, FT_ERR_INPUT, where,
                "each line must be one JSON object such as {\"text\": \"...\"} (or the "
                "whole file one JSON array of them)",
                j ? "line is not one JSON object" : "line is not valid JSON");
            break;
        }
        st = do_row(c, j, &have_fmt, &f, where, out, err);
        cJSON_Delete(j);
    }
    free(text);
    if (!st && lineno == 0)
        st = ft_error_set(err, FT_ERR_INPUT, path, "give a JSONL file with one example per line",
                          "the file is empty");
    else if (!st && !have_fmt)
        st = ft_error_set(err, FT_ERR_INPUT, path, "give a JSONL file with one example per line",
                          "the file has no examples (only blank lines)");
    return st;
}
