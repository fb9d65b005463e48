/*
 * tok_internal.h: what the files of src/tok/ share and nobody else sees.
 *
 * An encode call runs the stages of the `tokenizers` pipeline (added-token split, normalizer,
 * pre-tokenizer, model, post-processor) over a list of pieces. A piece is a byte range in a
 * per-call arena (tok_arena): stages that change text append the new text to the arena and
 * point the piece at it, so no stage frees anything and one encode call does a handful of
 * allocations. Offsets into the original text are not tracked (ftune needs ids only); the one
 * place where `tokenizers` looks at them, Metaspace's prepend_scheme "first", only asks
 * whether a piece starts at offset 0 of the input, which a flag per piece carries.
 *
 * Unicode character classes follow Rust's definitions, which `tokenizers` uses:
 * char::is_whitespace is the White_Space property, char::is_numeric the categories Nd/Nl/No,
 * the `regex` crate's \w is Alphabetic + Mark + Nd + Pc + Join_Control.
 */
#ifndef FT_TOK_INTERNAL_H
#define FT_TOK_INTERNAL_H

#include "tok/tokenizer.h"
#include "io/json.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ---- growable byte buffer ---------------------------------------------------------------- */
typedef struct tok_arena {
    char *p;
    size_t len, cap;
    int oom;
} tok_arena;

/* Make room for n more bytes; returns the write position or NULL (oom set). */
static inline char *arena_reserve(tok_arena *a, size_t n) {
    if (a->len + n > a->cap || !a->p) { /* never hand out NULL + 0: even n = 0 allocates */
        size_t c = a->cap ? a->cap : 256;
        while (c < a->len + n) c *= 2;
        char *q = realloc(a->p, c);
        if (!q) {
            a->oom = 1;
            return NULL;
        }
        a->p = q;
        a->cap = c;
    }
    return a->p + a->len;
}
static inline size_t arena_push(tok_arena *a, const void *s, size_t n) {
    size_t off = a->len;
    char *w = arena_reserve(a, n);
    if (w && n) {
        memcpy(w, s, n);
        a->len += n;
    }
    return off;
}

/* ---- pieces ------------------------------------------------------------------------------ */
typedef struct tok_piece {
    size_t off, len; /* bytes in the arena */
    int32_t added;   /* id of the added token this piece is, or -1 */
    uint8_t at_start; /* the piece begins at offset 0 of the original input */
} tok_piece;

typedef struct tok_pieces {
    tok_piece *v;
    size_t n, cap;
    int oom;
} tok_pieces;

static inline void pieces_add(tok_pieces *l, size_t off, size_t len, int32_t added,
                              int at_start) {
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 64;
        tok_piece *q = realloc(l->v, c * sizeof *q);
        if (!q) {
            l->oom = 1;
            return;
        }
        l->v = q;
        l->cap = c;
    }
    l->v[l->n++] = (tok_piece){off, len, added, (uint8_t)at_start};
}

/* ---- UTF-8 and character classes ------------------------------------------------------- */
/* Decode one code point of valid UTF-8 at s (n bytes left); *adv gets its length. */
static inline uint32_t utf8_next(const unsigned char *s, size_t n, size_t *adv) {
    unsigned c = s[0];
    if (c < 0x80 || n < 2) {
        *adv = 1;
        return c;
    }
    if (c < 0xE0) {
        *adv = 2;
        return ((c & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (c < 0xF0 || n < 4) {
        *adv = 3;
        return ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *adv = 4;
    return ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}
/* Start of the code point that ends just before s + end. */
static inline size_t utf8_prev_start(const unsigned char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    return i;
}
static inline int utf8_put(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
/* Offset of the first byte that is not part of valid UTF-8 (strict: no overlongs, no
 * surrogates, nothing above U+10FFFF), or (size_t)-1 if all is valid. */
size_t utf8_invalid_at(const unsigned char *s, size_t n);

int uc_is_whitespace(uint32_t cp); /* Rust char::is_whitespace (White_Space) */
int uc_is_numeric(uint32_t cp);    /* Rust char::is_numeric (Nd, Nl, No) */
int uc_is_word(uint32_t cp);       /* regex crate \w */
int uc_is_punctuation(uint32_t cp); /* ASCII punctuation or a P* category */

/* ---- regexes (Oniguruma syntax in tokenizer.json, run with PCRE2 + JIT) ------------------ */
typedef struct tok_regex {
    pcre2_code *code;
} tok_regex;

/* Compile an Oniguruma pattern (as `tokenizers` writes them) or, with literal set, a plain
 * string. where names the component for the error message. */
ft_status regex_compile(tok_regex *re, const char *pattern, int literal, const char *where,
                        ft_error *err);
void regex_free(tok_regex *re);
/* Next match in s[0..n) at or after `from`; returns 1 and fills [*ms, *me), 0 if none,
 * -1 on a matching error (e.g. JIT stack exhausted). Empty matches are skipped. */
int regex_find(const tok_regex *re, const char *s, size_t n, size_t from, size_t *ms,
               size_t *me);

/* ---- string -> id hash ------------------------------------------------------------------- */
typedef struct tok_strmap {
    int32_t *slot; /* id or -1 */
    size_t mask;
    const char *const *str; /* id -> string (NUL-terminated), shared with the owner */
    const uint32_t *slen;
} tok_strmap;

uint64_t tok_hash(const void *s, size_t n);
ft_status strmap_build(tok_strmap *m, const char *const *str, const uint32_t *slen, size_t n);
int32_t strmap_get(const tok_strmap *m, const char *s, size_t n);
void strmap_free(tok_strmap *m);

/* ---- normalizers ------------------------------------------------------------------------- */
typedef struct tok_norm tok_norm;
ft_status norm_load(const cJSON *j, const char *file, const char *path, tok_norm **out,
                    ft_error *err);
/* Normalize s[0..n) into out (appended); returns 0 or -1 on out-of-memory. */
int norm_apply(const tok_norm *nm, const char *s, size_t n, tok_arena *out);
void norm_free(tok_norm *nm);

/* ---- pre-tokenizers ---------------------------------------------------------------------- */
typedef struct tok_pretok tok_pretok;
ft_status pretok_load(const cJSON *j, const char *file, const char *path, tok_pretok **out,
                      ft_error *err);
/* Split/transform the pieces in `in` (text in a) into `out`; added-token pieces pass through.
 * Returns 0, or -1 on out-of-memory / regex failure. */
int pretok_apply(const tok_pretok *p, tok_arena *a, const tok_pieces *in, tok_pieces *out);
void pretok_free(tok_pretok *p);

/* The GPT-2 byte <-> character table of ByteLevel (bytes 0..255 to code points). */
extern uint32_t tok_byte_char[256];
void tok_bytelevel_init(void);
int tok_char_byte(uint32_t cp); /* the byte of a ByteLevel character, or -1 */

/* ---- BPE model --------------------------------------------------------------------------- */
typedef struct tok_bpe tok_bpe;
ft_status bpe_load(const cJSON *model, const char *file, tok_bpe **out, ft_error *err);
void bpe_free(tok_bpe *m);
/* Append the ids of one pre-tokenized word to *ids (growing it). Returns 0 or -1 (oom). */
int bpe_encode_word(const tok_bpe *m, const char *w, size_t n, int32_t **ids, size_t *nids,
                    size_t *cap);
int32_t bpe_token_to_id(const tok_bpe *m, const char *s, size_t n);
const char *bpe_id_to_token(const tok_bpe *m, int32_t id);
size_t bpe_vocab_size(const tok_bpe *m); /* max id + 1 */

/* ---- decoders ---------------------------------------------------------------------------- */
typedef struct tok_decoder tok_decoder;
ft_status decoder_load(const cJSON *j, const char *file, const char *path, tok_decoder **out,
                       ft_error *err);
/* Run the decoder chain on n token strings and write the joined result into out. */
int decoder_apply(const tok_decoder *d, const char *const *tok, const size_t *tlen, size_t n,
                  tok_arena *out);
void decoder_free(tok_decoder *d);

/* ---- GGUF vocabularies (gguf_vocab.c) --------------------------------------------------- */
/* The tokenizer.json transformers builds from a GGUF file's tokenizer.ggml.* metadata; errors
 * name the file and the key. */
ft_status gguf_tokenizer_json(const char *path, cJSON **out, ft_error *err);
/* The tokenizer_config.json equivalent (tok_config_load). */
ft_status gguf_tokenizer_config(const char *path, cJSON **out, ft_error *err);

/* snprintf for the "file: json.path" of messages (truncates quietly; paths are short). */
void tok_fmt(char *buf, size_t n, const char *fmt, ...);

/* Component types are checked against these lists; an error names the JSON path. */
ft_status tok_bad_component(const char *file, const char *path, const cJSON *type,
                            const char *supported, ft_error *err);

#endif
