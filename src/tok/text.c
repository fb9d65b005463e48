/*
 * text.c: the text utilities under the tokenizer: strict UTF-8 validation, the Unicode
 * character classes that `tokenizers` (Rust) uses, the ByteLevel byte<->character table, a
 * string->id hash table, and the regex layer.
 *
 * Regexes: tokenizer.json patterns are written for Oniguruma. They are translated to PCRE2 and
 * JIT-compiled. The translation keeps what both engines mean the same way (\p{..}, (?i:..),
 * (?!..), possessive and atomic forms, counted repeats) and rewrites the escapes whose meaning
 * differs: Oniguruma's Unicode \s is the White_Space property (PCRE2's UCP \s misses U+0085),
 * its \w is Letter/Mark/Nd/Pc, \h is a hex digit, and \uHHHH is a code point. Anything PCRE2
 * rejects is a load-time error naming the component.
 */
#include "tok/tok_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <utf8proc.h>

size_t utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) k = 1, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) k = 2, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) k = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        if (n - i <= k) return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += k + 1;
    }
    return (size_t)-1;
}

int uc_is_whitespace(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return 0;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int uc_is_numeric(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

int uc_is_word(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
               cp == '_';
    if (cp == 0x200C || cp == 0x200D) return 1;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC: return 1;
    default: return 0;
    }
}

int uc_is_punctuation(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) ||
               (cp >= 0x5B && cp <= 0x60) || (cp >= 0x7B && cp <= 0x7E);
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO: return 1;
    default: return 0;
    }
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order (the published table of the GPT-2 encoder). */
uint32_t tok_byte_char[256];
static int16_t char_byte_[324];

void tok_bytelevel_init(void) {
    if (tok_byte_char['!']) return;
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        tok_byte_char[b] = keep ? (uint32_t)b : next++;
    }
    for (int i = 0; i < 324; i++) char_byte_[i] = -1;
    for (int b = 0; b < 256; b++) char_byte_[tok_byte_char[b]] = (int16_t)b;
}

int tok_char_byte(uint32_t cp) { return cp < 324 ? char_byte_[cp] : -1; }

/* ---- hashing ----------------------------------------------------------------------------- */
uint64_t tok_hash(const void *p, size_t n) {
    /* FNV-1a over 8-byte words, then a final avalanche (splitmix64). */
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 1099511628211ULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 1099511628211ULL;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

ft_status strmap_build(tok_strmap *m, const char *const *str, const uint32_t *slen, size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return FT_ERR_RUNTIME;
    for (size_t i = 0; i < cap; i++) m->slot[i] = -1;
    m->mask = cap - 1;
    m->str = str;
    m->slen = slen;
    for (size_t id = 0; id < n; id++) {
        if (!str[id]) continue;
        size_t h = tok_hash(str[id], slen[id]) & m->mask;
        while (m->slot[h] >= 0) {
            int32_t o = m->slot[h];
            if (slen[o] == slen[id] && !memcmp(str[o], str[id], slen[id])) break;
            h = (h + 1) & m->mask;
        }
        if (m->slot[h] < 0) m->slot[h] = (int32_t)id; /* the first id of a string wins */
    }
    return FT_OK;
}

int32_t strmap_get(const tok_strmap *m, const char *s, size_t n) {
    if (!m->slot) return -1;
    size_t h = tok_hash(s, n) & m->mask;
    for (;;) {
        int32_t id = m->slot[h];
        if (id < 0) return -1;
        if (m->slen[id] == n && !memcmp(m->str[id], s, n)) return id;
        h = (h + 1) & m->mask;
    }
}

void strmap_free(tok_strmap *m) {
    free(m->slot);
    m->slot = NULL;
}

/* ---- regexes ----------------------------------------------------------------------------- */
#define WS_CLASS "\\t\\n\\x0b\\f\\r\\x20\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
#define WORD_CLASS "\\p{L}\\p{M}\\p{Nd}\\p{Pc}"

static int out_str(tok_arena *o, const char *s) {
    arena_push(o, s, strlen(s));
    return !o->oom;
}

/* Rewrite an Oniguruma pattern for PCRE2 (see the top of the file). */
static int regex_translate(const char *p, tok_arena *o) {
    int in_class = 0;
    size_t n = strlen(p);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[i + 1];
            i++;
            switch (e) {
            case 's': out_str(o, in_class ? WS_CLASS : "[" WS_CLASS "]"); continue;
            case 'S':
                out_str(o, in_class ? "\\S" : "[^" WS_CLASS "]");
                continue;
            case 'w': out_str(o, in_class ? WORD_CLASS : "[" WORD_CLASS "]"); continue;
            case 'W': out_str(o, in_class ? "\\W" : "[^" WORD_CLASS "]"); continue;
            case 'h': out_str(o, in_class ? "0-9a-fA-F" : "[0-9a-fA-F]"); continue;
            case 'H': out_str(o, in_class ? "\\x00-\\x2f\\x3a-\\x40\\x47-\\x60\\x67-\\x{10ffff}"
                                          : "[^0-9a-fA-F]");
                continue;
            case 'u':
                if (i + 4 < n) {
                    char buf[16];
                    snprintf(buf, sizeof buf, "\\x{%.4s}", p + i + 1);
                    out_str(o, buf);
                    i += 4;
                    continue;
                }
                break;
            default: break;
            }
            char two[3] = {'\\', e, 0};
            out_str(o, two);
            continue;
        }
        if (c == '[') {
            if (in_class) {
                /* POSIX bracket [:alpha:] or a nested class: pass through */
                in_class++;
            } else {
                in_class = 1;
                arena_push(o, "[", 1);
                /* a ']' right after '[' or '[^' is literal */
                if (i + 1 < n && p[i + 1] == '^') {
                    arena_push(o, "^", 1);
                    i++;
                }
                if (i + 1 < n && p[i + 1] == ']') {
                    out_str(o, "\\]");
                    i++;
                }
                continue;
            }
        } else if (c == ']' && in_class) {
            in_class--;
        }
        arena_push(o, &c, 1);
    }
    arena_push(o, "", 1);
    return o->oom ? -1 : 0;
}

ft_status regex_compile(tok_regex *re, const char *pattern, int literal, const char *where,
                        ft_error *err) {
    tok_arena o = {0};
    /* the pattern's UTF-8 is checked here (a damaged tokenizer.json can hold any bytes, and
     * PCRE2 reads past the end of a bad sequence it was told not to check); subjects are
     * checked once by the caller and matched with PCRE2_NO_UTF_CHECK */
    uint32_t opts = PCRE2_UTF;
    const char *pat;
    if (literal) {
        opts |= PCRE2_LITERAL;
        pat = pattern;
    } else {
        opts |= PCRE2_UCP | PCRE2_MULTILINE; /* Oniguruma's ^ and $ are line anchors */
        if (regex_translate(pattern, &o)) {
            free(o.p);
            return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
        }
        pat = o.p;
    }
    int ec;
    PCRE2_SIZE eo;
    re->code = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
    free(o.p);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "fix the pattern in tokenizer.json (Oniguruma syntax, as used by "
                            "the tokenizers library)",
                            "the regex \"%.200s\" does not compile: %s (near offset %zu)", pattern,
                            (const char *)msg, (size_t)eo);
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    return FT_OK;
}

void regex_free(tok_regex *re) {
    pcre2_code_free(re->code);
    re->code = NULL;
}

/* Per-thread match data and JIT stack, created on first use and freed at thread exit. */
#include <pthread.h>
typedef struct rx_tls {
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
} rx_tls;
static pthread_key_t rx_key;
static pthread_once_t rx_once = PTHREAD_ONCE_INIT;
static void rx_tls_free(void *p) {
    rx_tls *t = p;
    pcre2_match_data_free(t->md);
    pcre2_match_context_free(t->mc);
    pcre2_jit_stack_free(t->js);
    free(t);
}
static void rx_key_init(void) { pthread_key_create(&rx_key, rx_tls_free); }
static rx_tls *rx_get(void) {
    pthread_once(&rx_once, rx_key_init);
    rx_tls *t = pthread_getspecific(rx_key);
    if (t) return t;
    t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->md = pcre2_match_data_create(4, NULL);
    t->mc = pcre2_match_context_create(NULL);
    t->js = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!t->md || !t->mc || !t->js) {
        rx_tls_free(t);
        return NULL;
    }
    pcre2_jit_stack_assign(t->mc, NULL, t->js);
    pthread_setspecific(rx_key, t);
    return t;
}

int regex_find(const tok_regex *re, const char *s, size_t n, size_t from, size_t *ms,
               size_t *me) {
    rx_tls *t = rx_get();
    if (!t) return -1;
    while (from <= n) {
        int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, t->md, t->mc);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        if (ov[1] > ov[0]) {
            *ms = ov[0];
            *me = ov[1];
            return 1;
        }
        /* empty match: look again one character further on */
        if (ov[0] >= n) return 0;
        size_t adv;
        utf8_next((const unsigned char *)s + ov[0], n - ov[0], &adv);
        from = ov[0] + adv;
    }
    return 0;
}

void tok_fmt(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

ft_status tok_bad_component(const char *file, const char *path, const cJSON *type,
                            const char *supported, ft_error *err) {
    char where[512];
    tok_fmt(where, sizeof where, "%s: %s.type", file, path);
    if (!cJSON_IsString(type))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "expected a string naming the component type (one of %s)", supported);
    return ft_error_set(err, FT_ERR_INPUT, where,
                        "ftune implements only the components listed; it refuses the file "
                        "rather than tokenize differently from Hugging Face",
                        "unsupported component type \"%s\" (supported: %s)", type->valuestring,
                        supported);
}
