/*
 * chat_template.h: rendering a conversation through a model's chat template, byte for byte as
 * transformers' apply_chat_template(..., tokenize=False) does.
 *
 * The template is Jinja source (from a .jinja file, chat_template.jinja or tokenizer_config.json)
 * run by ftune's own interpreter (src/tok/jinja*.c), set up like transformers' environment:
 * trim_blocks, lstrip_blocks, loop controls, the {% generation %} tag, raise_exception,
 * strftime_now and tojson without ASCII escaping. Text produced inside {% generation %} ...
 * {% endgeneration %} is reported as byte spans (what transformers' assistant masks mark).
 */
#ifndef FT_TOK_CHAT_TEMPLATE_H
#define FT_TOK_CHAT_TEMPLATE_H

#include "ftune.h"
#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct chat_template chat_template;
typedef struct chat_span { size_t begin, end; } chat_span; /* byte offsets in text of output produced inside {% generation %}...{% endgeneration %} */
typedef struct chat_render { char *text; size_t len; chat_span *spans; int n_spans; } chat_render;
/* Template from template_path if not NULL (a .jinja file), else model_dir/chat_template.jinja, else
   model_dir/tokenizer_config.json's "chat_template" (a string, or a list of {name, template}: take "default");
   special tokens (bos_token, eos_token, unk_token, pad_token, ... which may be strings or {"content": ...} objects)
   from model_dir/tokenizer_config.json (and special_tokens_map.json if present) become template variables. */
ft_status chat_template_load(const char *model_dir, const char *template_path, chat_template **out, ft_error *err);
/* messages: a JSON array of message objects; tools: array or NULL; extra: a JSON object of additional template variables (e.g. enable_thinking) or NULL. */
ft_status chat_template_render(const chat_template *t, const cJSON *messages, const cJSON *tools, int add_generation_prompt, const cJSON *extra, chat_render *out, ft_error *err);
void chat_render_free(chat_render *r);
void chat_template_free(chat_template *t);

/* --template-arg KEY=VALUE strings -> a JSON object of extra template variables (VALUE parsed
 * as JSON when it parses: true, 3, "x", {...}; otherwise taken as a string). *extra is NULL when
 * n is 0. Errors name the option. */
ft_status chat_template_args(const char *const *args, int n, cJSON **extra, ft_error *err);
/* A conversation file: a JSON array of messages, or {"messages": [...], "tools": [...]}, and
 * nothing after it (a JSONL file is refused, not read to its first line).
 * *root owns the JSON (cJSON_Delete it); messages and tools point into it (tools may be NULL). */
ft_status chat_conversation_load(const char *path, cJSON **root, const cJSON **messages,
                                 const cJSON **tools, ft_error *err);
/* The messages and tools of one conversation value (as above); errors name where. */
ft_status chat_conversation_parts(const cJSON *conv, const char *where, const cJSON **messages,
                                  const cJSON **tools, ft_error *err);

#endif
