/*
 * cmd_detokenize.c: `ftune detokenize`, token ids back to text with a model's tokenizer.json.
 *
 * The ids come from --ids "1 2 3" or stdin (separated by spaces, commas or newlines; brackets
 * are ignored, so a JSON array works too) and the text is printed as is, with no newline added. Batch mode
 * (--jsonl F: one JSON array of ids per line) prints each decoded text as a JSON string on its
 * own line, so that texts holding newlines stay one per line.
 */
#include "cli/args.h"
#include "cli/commands.h"
#include "io/json.h"
#include "tok/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *cli_read_stream(FILE *f, size_t *len);

/* Parse integers separated by anything in " \t\r\n,[]". */
static ft_status parse_ids(const char *s, const char *where, int32_t **out, size_t *n,
                           ft_error *err) {
    size_t cap = 64, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
    while (*s) {
        if (strchr(" \t\r\n,[]", *s)) {
            s++;
            continue;
        }
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return ft_error_set(err, FT_ERR_INPUT, where, "give token ids as non-negative integers",
                                "expected a token id, got \"%.20s\"", s);
        }
        if (k == cap) {
            int32_t *q = realloc(v, (cap *= 2) * sizeof *v);
            if (!q) {
                free(v);
                return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
            }
            v = q;
        }
        v[k++] = (int32_t)x;
        s = end;
    }
    *out = v;
    *n = k;
    return FT_OK;
}

static void put_json_string(const char *s, size_t n, FILE *f) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputs("\"\n", f);
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL, *tokfile = NULL, *ids_s = NULL, *jsonl = NULL;
    int skip = 0;
    const opt_spec specs[] = {
        {"model", OPT_STR, &model, "DIR", "model folder holding tokenizer.json"},
        {"tokenizer", OPT_STR, &tokfile, "FILE", "a tokenizer.json (instead of --model)"},
        {"ids", OPT_STR, &ids_s, "\"1 2 3\"", "the ids (default: read stdin)"},
        {"jsonl", OPT_STR, &jsonl, "F", "batch: one JSON array of ids per line, one JSON string out each"},
        {"skip-special", OPT_FLAG, &skip, NULL, "leave out special tokens (BOS, EOS, ...)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const cmd_info info = {"detokenize", "ftune detokenize --model DIR [--ids \"1 2 3\"] [options]",
                           "Decode token ids to text with the model's tokenizer.json, as Hugging "
                           "Face tokenizers does.",
                           "  ftune detokenize --model DIR --ids \"9906 1917\"\n"
                           "  ftune tokenize --model DIR --text \"round trip\" | ftune detokenize --model DIR\n"
                           "  ftune detokenize --model DIR --jsonl ids.jsonl --skip-special"};
    ft_error err = {0};
    int st = args_parse(argc, argv, &info, specs, &err);
    if (st < 0) return 0;
    if (!st && !model && !tokfile)
        st = ft_error_set(&err, FT_ERR_INPUT, "detokenize",
                          "give --model DIR or --tokenizer FILE", "no tokenizer given");
    if (st) {
        ft_error_print(&err, stderr);
        return st;
    }
    tokenizer *tok = NULL;
    char *buf = NULL;
    size_t len = 0;
    if ((st = tok_load(tokfile ? tokfile : model, &tok, &err))) goto fail;
    if (jsonl) {
        if ((st = file_read_all(jsonl, &buf, &len, &err))) goto fail;
        char *line = buf;
        long lineno = 0;
        while (line < buf + len) {
            char *nl = memchr(line, '\n', (size_t)(buf + len - line));
            if (nl) *nl = 0;
            lineno++;
            if (*line) {
                char where[600];
                snprintf(where, sizeof where, "%s:%ld", jsonl, lineno);
                int32_t *ids;
                size_t n;
                char *text;
                size_t tl;
                if ((st = parse_ids(line, where, &ids, &n, &err))) goto fail;
                st = tok_decode(tok, ids, n, skip, &text, &tl, &err);
                free(ids);
                if (st) goto fail;
                put_json_string(text, tl, stdout);
                free(text);
            }
            if (!nl) break;
            line = nl + 1;
        }
        free(buf);
        tok_free(tok);
        return 0;
    }
    if (!ids_s) {
        buf = cli_read_stream(stdin, &len);
        if (!buf) {
            st = ft_error_set(&err, FT_ERR_RUNTIME, "stdin", NULL, "could not read the input");
            goto fail;
        }
    }
    int32_t *ids;
    size_t n;
    if ((st = parse_ids(ids_s ? ids_s : buf, ids_s ? "option --ids" : "stdin", &ids, &n, &err)))
        goto fail;
    char *text;
    size_t tl;
    st = tok_decode(tok, ids, n, skip, &text, &tl, &err);
    free(ids);
    if (st) goto fail;
    fwrite(text, 1, tl, stdout); /* exactly the text: no newline added */
    free(text);
    free(buf);
    tok_free(tok);
    return 0;
fail:
    ft_error_print(&err, stderr);
    free(buf);
    tok_free(tok);
    return st;
}
