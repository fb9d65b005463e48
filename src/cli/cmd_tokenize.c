/*
 * cmd_tokenize.c: `ftune tokenize`, text to token ids with a model's tokenizer.json.
 *
 * One text (--text, --file or stdin) prints its ids on one line, separated by spaces, or as a
 * JSON array with --json. Batch mode (--jsonl FILE: one JSON string per line, or an object
 * with a "text" field) encodes every line, on --threads threads, and prints one line of ids per
 * input line in order; with --stats it prints only the totals and the encoding throughput
 * (bytes of text per second, timed around the encode calls alone), which bench/ uses.
 */
#include "cli/args.h"
#include "tok/chat_template.h"
#include "cli/commands.h"
#include "io/json.h"
#include "tok/tokenizer.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Parse a JSON string literal at s (after optional spaces) into a malloc'ed buffer; NULs and
 * all escapes kept (cJSON would stop at \u0000). Returns NULL if s is not a string literal. */
char *cli_json_string(const char *s, size_t *len);
char *cli_json_string(const char *s, size_t *len) {
    while (*s == ' ' || *s == '\t') s++;
    if (*s != '"') return NULL;
    s++;
    size_t cap = strlen(s) + 1, n = 0;
    char *o = malloc(cap);
    if (!o) return NULL;
    while (*s && *s != '"') {
        unsigned c = (unsigned char)*s++;
        if (c != '\\') {
            o[n++] = (char)c;
            continue;
        }
        char e = *s++;
        unsigned cp = 0;
        switch (e) {
        case 'n': o[n++] = '\n'; continue;
        case 't': o[n++] = '\t'; continue;
        case 'r': o[n++] = '\r'; continue;
        case 'b': o[n++] = '\b'; continue;
        case 'f': o[n++] = '\f'; continue;
        case '/': case '\\': case '"': o[n++] = e; continue;
        case 'u': {
            for (int i = 0; i < 4; i++) {
                char h = *s++;
                cp <<= 4;
                if (h >= '0' && h <= '9') cp |= (unsigned)(h - '0');
                else if (h >= 'a' && h <= 'f') cp |= (unsigned)(h - 'a' + 10);
                else if (h >= 'A' && h <= 'F') cp |= (unsigned)(h - 'A' + 10);
                else {
                    free(o);
                    return NULL;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDBFF && s[0] == '\\' && s[1] == 'u') {
                unsigned lo = (unsigned)strtoul((char[5]){s[2], s[3], s[4], s[5], 0}, NULL, 16);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    s += 6;
                }
            }
            if (cp < 0x80) o[n++] = (char)cp;
            else if (cp < 0x800) {
                o[n++] = (char)(0xC0 | (cp >> 6));
                o[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                o[n++] = (char)(0xE0 | (cp >> 12));
                o[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                o[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                o[n++] = (char)(0xF0 | (cp >> 18));
                o[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                o[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                o[n++] = (char)(0x80 | (cp & 0x3F));
            }
            continue;
        }
        default: free(o); return NULL;
        }
    }
    if (*s != '"') {
        free(o);
        return NULL;
    }
    *len = n;
    return o;
}

/* Read all of a stream. */
char *cli_read_stream(FILE *f, size_t *len);
char *cli_read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t k = fread(b + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
        if (cap - n - 1 == 0) {
            char *q = realloc(b, cap * 2);
            if (!q) {
                free(b);
                return NULL;
            }
            b = q;
            cap *= 2;
        }
    }
    if (b) b[n] = 0;
    *len = n;
    return b;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void print_ids(const int32_t *ids, size_t n, int json, FILE *f) {
    if (json) fputc('[', f);
    for (size_t i = 0; i < n; i++) fprintf(f, i ? (json ? ", %d" : " %d") : "%d", ids[i]);
    fputs(json ? "]\n" : "\n", f);
}

typedef struct doc {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n;
    ft_error err;
    int st;
} doc;

static int run_batch(const tokenizer *tok, const char *path, int add_special, long threads,
                     int stats, int json) {
    ft_error err = {0};
    char *all;
    size_t total;
    if (file_read_all(path, &all, &total, &err)) {
        ft_error_print(&err, stderr);
        return err.status;
    }
    size_t ndoc = 0, cap = 1024;
    doc *d = calloc(cap, sizeof *d);
    char *line = all;
    long lineno = 0;
    int rc = 0;
    while (d && line < all + total) {
        char *nl = memchr(line, '\n', (size_t)(all + total - line));
        if (nl) *nl = 0;
        lineno++;
        if (*line) {
            size_t len = 0;
            const char *lit = line;
            const char *tf = strstr(line, "\"text\"");
            if (*line == '{' && tf) lit = strchr(tf + 6, ':') + 1;
            char *txt = cli_json_string(lit, &len);
            if (!txt) {
                char where[600];
                snprintf(where, sizeof where, "%s:%ld", path, lineno);
                ft_error_set(&err, FT_ERR_INPUT, where, NULL,
                             "expected a JSON string (or an object with a \"text\" string)");
                ft_error_print(&err, stderr);
                rc = FT_ERR_INPUT;
                break;
            }
            if (ndoc == cap) {
                cap *= 2;
                doc *q = realloc(d, cap * sizeof *d);
                if (!q) break;
                d = q;
            }
            memset(&d[ndoc], 0, sizeof *d);
            d[ndoc].text = txt;
            d[ndoc++].len = len;
        }
        if (!nl) break;
        line = nl + 1;
    }
    free(all);
    if (!rc) {
        if (threads > 0) omp_set_num_threads((int)threads);
        double t0 = now_s();
#pragma omp parallel for schedule(dynamic, 16)
        for (long i = 0; i < (long)ndoc; i++)
            d[i].st = tok_encode(tok, d[i].text, d[i].len, add_special, &d[i].ids, &d[i].n,
                                 &d[i].err);
        double dt = now_s() - t0;
        size_t bytes = 0, ntok = 0;
        for (size_t i = 0; i < ndoc; i++) {
            bytes += d[i].len;
            ntok += d[i].n;
            if (d[i].st) {
                char where[512];
                snprintf(where, sizeof where, "%.180s: document %zu: %.280s", path, i + 1,
                         d[i].err.where);
                memcpy(d[i].err.where, where, sizeof where);
                ft_error_print(&d[i].err, stderr);
                rc = d[i].st;
                break;
            }
        }
        if (!rc && stats) {
            printf("{\"docs\": %zu, \"bytes\": %zu, \"tokens\": %zu, \"seconds\": %.6f, "
                   "\"mb_per_s\": %.3f, \"threads\": %d}\n",
                   ndoc, bytes, ntok, dt, dt > 0 ? (double)bytes / 1e6 / dt : 0.0,
                   omp_get_max_threads());
        } else if (!rc) {
            for (size_t i = 0; i < ndoc; i++) print_ids(d[i].ids, d[i].n, json, stdout);
        }
    }
    for (size_t i = 0; d && i < ndoc; i++) {
        free(d[i].text);
        free(d[i].ids);
    }
    free(d);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *tokfile = NULL, *text = NULL, *file = NULL, *jsonl = NULL;
    int json = 0, no_special = 0, stats = 0, add_gen = 0, print_text = 0;
    long threads = 0;
    const char *chat = NULL, *tpl = NULL;
    args_list targs = {0};
    const opt_spec specs[] = {
        {"model", OPT_STR, &model, "DIR", "model folder holding tokenizer.json"},
        {"tokenizer", OPT_STR, &tokfile, "FILE", "a tokenizer.json (instead of --model)"},
        {"text", OPT_STR, &text, "S", "the text to encode (default: read stdin)"},
        {"file", OPT_STR, &file, "F", "read the text from a file"},
        {"jsonl", OPT_STR, &jsonl, "F", "batch: one JSON string per line, one line of ids out each"},
        {"threads", OPT_INT, &threads, "N", "threads for --jsonl (0: all cores)"},
        {"stats", OPT_FLAG, &stats, NULL, "with --jsonl: print totals and MB/s only"},
        {"json", OPT_FLAG, &json, NULL, "print ids as a JSON array"},
        {"no-special", OPT_FLAG, &no_special, NULL, "do not add BOS/EOS (add_special_tokens=false)"},
        {"chat", OPT_STR, &chat, "FILE.json", "render this conversation through the chat template, then encode it"},
        {"chat-template", OPT_STR, &tpl, "FILE", "with --chat: use this Jinja template instead of the model's"},
        {"add-generation-prompt", OPT_FLAG, &add_gen, NULL, "with --chat: end with an assistant turn's header"},
        {"template-arg", OPT_LIST, &targs, "KEY=VALUE", "with --chat: extra template variable; repeatable"},
        {"print-text", OPT_FLAG, &print_text, NULL, "with --chat: print the rendered text instead of ids"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const cmd_info info = {"tokenize",
                           "ftune tokenize --model DIR [--text S | --file F | --jsonl F] [options]",
                           "Encode text with the model's tokenizer.json, exactly as Hugging Face "
                           "tokenizers does, and print the token ids.",
                           "  ftune tokenize --model DIR --text \"Hello world\"\n"
                           "  ftune tokenize --model DIR --jsonl texts.jsonl --no-special > ids.jsonl\n"
                           "  # a conversation through the chat template, as training sees it\n"
                           "  ftune tokenize --model DIR --chat conversation.json --add-generation-prompt"};
    ft_error err = {0};
    int st = args_parse(argc, argv, &info, specs, &err);
    if (st < 0) return 0;
    if (!st && !model && !tokfile)
        st = ft_error_set(&err, FT_ERR_INPUT, "tokenize", "give --model DIR or --tokenizer FILE",
                          "no tokenizer given");
    if (st) {
        ft_error_print(&err, stderr);
        return st;
    }
    tokenizer *tok = NULL;
    if ((st = tok_load(tokfile ? tokfile : model, &tok, &err))) {
        ft_error_print(&err, stderr);
        return st;
    }
    if (jsonl) {
        st = run_batch(tok, jsonl, !no_special, threads, stats, json);
        tok_free(tok);
        return st;
    }
    char *buf = NULL;
    size_t len = 0;
    if (chat) {
        /* as transformers' apply_chat_template(tokenize=True): the template places the special
         * tokens, so the rendered text is encoded without adding them again */
        cJSON *conv = NULL, *extra = NULL;
        const cJSON *messages, *tools;
        chat_template *t = NULL;
        chat_render r = {0};
        int bad = chat_template_args(targs.v, targs.n, &extra, &err) ||
                  chat_conversation_load(chat, &conv, &messages, &tools, &err) ||
                  chat_template_load(model, tpl, &t, &err) ||
                  chat_template_render(t, messages, tools, add_gen, extra, &r, &err);
        cJSON_Delete(conv);
        cJSON_Delete(extra);
        chat_template_free(t);
        if (bad) {
            chat_render_free(&r);
            goto fail;
        }
        if (print_text) {
            fwrite(r.text, 1, r.len, stdout);
            chat_render_free(&r);
            tok_free(tok);
            return 0;
        }
        buf = malloc(r.len + 1);
        memcpy(buf, r.text, r.len + 1);
        len = r.len;
        no_special = 1;
        chat_render_free(&r);
    } else if (text) {
        len = strlen(text);
    } else if (file) {
        if (file_read_all(file, &buf, &len, &err)) goto fail;
    } else {
        buf = cli_read_stream(stdin, &len);
        if (!buf) {
            ft_error_set(&err, FT_ERR_RUNTIME, "stdin", NULL, "could not read the input");
            goto fail;
        }
    }
    int32_t *ids;
    size_t n;
    if (tok_encode(tok, buf ? buf : text, len, !no_special, &ids, &n, &err)) goto fail;
    print_ids(ids, n, json, stdout);
    free(ids);
    free(buf);
    tok_free(tok);
    return 0;
fail:
    ft_error_print(&err, stderr);
    free(buf);
    tok_free(tok);
    return err.status;
}
