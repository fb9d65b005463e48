/*
 * masks.c: which tokens of a rendered conversation are the assistant's, for the loss mask.
 *
 * Two pieces. token_offsets finds where each token of an encoded text lies in the text's bytes
 * (what `tokenizers` calls offsets and transformers uses through char_to_token to turn the
 * {% generation %} character spans into assistant_masks): every token's string is turned back
 * into the bytes it stands for (added tokens as themselves; byte-level BPE through the GPT-2
 * byte-to-unicode table; SentencePiece pieces with U+2581 for a space and <0xNN> byte
 * fallback, the prepended space matching nothing) and laid along the text. If a vocabulary
 * defeats that, the offsets come from decoding growing prefixes instead.
 *
 * assistant_spans serves templates without {% generation %} markers (Llama 3, Qwen3 and most
 * real ones). For each assistant message k it renders the conversation up to k - 1 with the
 * generation prompt (A) and up to k without (B): the assistant's output is what B adds after
 * their common prefix, S = B[lcp(A, B):], up to the end of the message's content as it appears
 * in S and the one special token right after it (the end-of-turn token: <|eot_id|>, <|im_end|>,
 * </s>, ...); what follows (a newline, or the next header that templates like Llama 3's print
 * unasked) is not the assistant's. Empty content ("" or whitespace) ends the turn after the
 * first special token of S: only the end-of-turn token is trained, as TRL trains a marked
 * template's empty turn. When the content is not a string (a list of parts, tool calls), S ends
 * before its trailing whitespace instead. When R (the whole conversation rendered) begins like
 * B, the turn is at the same place in R. A template that renders earlier turns differently
 * (Qwen3 drops the reasoning of turns before the last user message) does not; then the turn is
 * looked for after the text before it (the longest suffix of the conversation up to k - 1,
 * rendered without the generation prompt, found in R after the previous turn): it ends at the
 * first place where R ends like S for at least the content's last bytes and the end-of-turn
 * token, and starts where that likeness does, less leading whitespace (the header's newline):
 * the turn's content and its end-of-turn token as R has them.
 */
#include "data/data_internal.h"

#include <stdlib.h>
#include <string.h>

/* GPT-2's bytes_to_unicode, inverted: code point -> byte, -1 for code points it does not use. */
static int byte_of_cp(unsigned cp) {
    static int table[324];
    static int ready;
    if (!ready) {
        for (int i = 0; i < 324; i++)
            table[i] = -1;
        int n = 0;
        for (int b = 0; b < 256; b++) {
            int printable =
                (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            if (printable)
                table[b] = b;
            else
                table[256 + n++] = b;
        }
        ready = 1;
    }
    return cp < 324 ? table[cp] : -1;
}

static size_t utf8_next(const unsigned char *s, size_t n, size_t i, unsigned *cp) {
    unsigned c = s[i];
    int k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (i + k > n) k = 1;
    unsigned v = k == 1 ? c : c & (0x3F >> (k - 1));
    for (int j = 1; j < k; j++)
        v = (v << 6) | (s[i + j] & 0x3F);
    *cp = v;
    return i + k;
}

/* The bytes token string s stands for under byte-level BPE; 0 if it is not such a string. */
static size_t bytelevel_bytes(const char *s, char *out, size_t cap) {
    size_t n = strlen(s), i = 0, o = 0;
    while (i < n) {
        unsigned cp;
        i = utf8_next((const unsigned char *)s, n, i, &cp);
        int b = byte_of_cp(cp);
        if (b < 0 || o >= cap) return 0;
        out[o++] = (char)b;
    }
    return o;
}

/* The bytes of a SentencePiece-style piece: U+2581 -> ' ', <0xNN> -> byte. */
static size_t metaspace_bytes(const char *s, char *out, size_t cap) {
    size_t n = strlen(s), o = 0;
    if (n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') {
        out[0] = (char)strtol(s + 3, NULL, 16);
        return 1;
    }
    for (size_t i = 0; i < n && o < cap;) {
        if (i + 2 < n && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 &&
            (unsigned char)s[i + 2] == 0x81) {
            out[o++] = ' ', i += 3;
        } else {
            out[o++] = s[i++];
        }
    }
    return o;
}

static int match_at(const char *text, size_t len, size_t p, const char *b, size_t n) {
    return n > 0 && p + n <= len && !memcmp(text + p, b, n);
}

void token_offsets(const tokenizer *t, const char *text, size_t len, const int32_t *ids, size_t n,
                   size_t *off) {
    char buf[1024];
    size_t p = 0, i;
    for (i = 0; i < n; i++) {
        off[i] = p;
        const char *s = tok_id_to_token(t, ids[i]);
        if (!s) break;
        size_t k = strlen(s), m;
        if (match_at(text, len, p, s, k)) {
            p += k;
        } else if ((m = bytelevel_bytes(s, buf, sizeof buf)) && match_at(text, len, p, buf, m)) {
            p += m;
        } else if ((m = metaspace_bytes(s, buf, sizeof buf)) && match_at(text, len, p, buf, m)) {
            p += m;
        } else if (m > 1 && buf[0] == ' ' && match_at(text, len, p, buf + 1, m - 1)) {
            off[i] = p; /* the prepended space is in no byte of the text */
            p += m - 1;
        } else if (m == 1 && buf[0] == ' ' && (p == 0 || text[p - 1] != ' ')) {
            /* a lone prepended space: zero width */
        } else {
            break;
        }
    }
    if (i == n) {
        off[n] = len;
        return;
    }
    /* fallback: offsets from the length of the decoded prefix */
    for (i = 0; i <= n; i++) {
        char *d = NULL;
        size_t dl = 0;
        ft_error e;
        if (tok_decode(t, ids, i, 0, &d, &dl, &e)) dl = i ? off[i - 1] : 0;
        off[i] = dl < len ? dl : len;
        if (i && off[i] < off[i - 1]) off[i] = off[i - 1];
        free(d);
    }
    off[n] = len;
}

static size_t lcp(const char *a, size_t na, const char *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i;
}

static int is_ws(char ch) { return ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r'; }

/* messages[0..k) as a new array of references (no copies). */
static cJSON *prefix_of(const cJSON *messages, int k) {
    cJSON *a = cJSON_CreateArray();
    int i = 0;
    for (cJSON *m = messages->child; m && i < k; m = m->next, i++)
        cJSON_AddItemReferenceToArray(a, m);
    return a;
}

/* The end of the special token that starts at S[at], or at if none does. */
static size_t after_special(const tokenizer *t, const char *S, size_t nS, size_t at) {
    int32_t *ids = NULL;
    size_t m = 0, end = at;
    ft_error e;
    size_t rest = nS - at < 256 ? nS - at : 256;
    if (rest && tok_encode(t, S + at, rest, 0, &ids, &m, &e) == FT_OK && m &&
        tok_is_special(t, ids[0])) {
        const char *ts = tok_id_to_token(t, ids[0]);
        size_t l = ts ? strlen(ts) : 0;
        if (l && at + l <= nS && !memcmp(S + at, ts, l)) end = at + l;
    }
    free(ids);
    return end;
}

/* End of the assistant's turn in S (nS bytes): after the content's last bytes and the special
 * token that directly follows them; 0 if the content is not found. *core is where the part of
 * the turn that any rendering of it keeps begins (the content's last bytes). Empty content (or
 * only whitespace) is found at the start of S: the turn is then the text up to and including
 * the first special token of S (the end-of-turn token), as a {% generation %} block around the
 * content and the end-of-turn token would mark it, and *core is that token. */
static size_t turn_end(const tokenizer *t, const cJSON *msg, const char *S, size_t nS,
                       size_t *core) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, "content");
    *core = 0;
    if (!cJSON_IsString(c)) return 0;
    const char *cs = c->valuestring;
    size_t n = strlen(cs);
    while (n && is_ws(cs[n - 1]))
        n--;
    if (!n && cJSON_GetObjectItemCaseSensitive(msg, "tool_calls")) return 0; /* the calls follow */
    if (!n) {
        int32_t *ids = NULL;
        size_t m = 0, end = 0;
        ft_error e;
        if (nS && tok_encode(t, S, nS, 0, &ids, &m, &e) == FT_OK) {
            size_t *off = malloc(sizeof(size_t) * (m + 1));
            if (off) {
                token_offsets(t, S, nS, ids, m, off);
                for (size_t i = 0; i < m && !end; i++)
                    if (tok_is_special(t, ids[i])) *core = off[i], end = off[i + 1];
                free(off);
            }
        }
        free(ids);
        return end;
    }
    size_t k = n < 64 ? n : 64;
    const char *tail = cs + n - k, *hit = NULL, *p = S;
    while ((p = memmem(p, nS - (size_t)(p - S), tail, k)))
        hit = p, p++;
    if (!hit) return 0;
    *core = (size_t)(hit - S) + (k > 16 ? k - 16 : 0); /* the last 16 bytes at most */
    return after_special(t, S, nS, (size_t)(hit - S) + k);
}

/* Where in R (from `from`) the text before an assistant turn ends: the end of the first
 * occurrence of the longest suffix of P (the conversation before the turn, rendered without
 * the generation prompt) in R[from..]. P ends with the previous message, whose own text makes
 * its suffix unique; `from` when no byte of it is found. */
static size_t after_prefix(const chat_render *P, const char *R, size_t len, size_t from) {
    size_t lo = 0, hi = P->len < len - from ? P->len : len - from, pos = from;
    while (lo < hi) { /* a suffix that occurs makes every shorter one occur: binary search */
        size_t L = (lo + hi + 1) / 2;
        const char *h = memmem(R + from, len - from, P->text + P->len - L, L);
        if (h)
            lo = L, pos = (size_t)(h - R) + L;
        else
            hi = L - 1;
    }
    return pos;
}

/* The turn as R renders it, when R does not begin like B (Qwen3 drops the reasoning of turns
 * before the last user message): the first place after lo where R ends like S for at least the
 * core of the turn (its content's last bytes and end-of-turn token), back to lo at most, less
 * leading whitespace; failing that, the longest stretch of R after cursor that ends like S.
 * (Not the first verbatim copy of S: an empty turn's S can recur in a later turn.) */
static int turn_in_r(const char *R, size_t len, size_t lo, size_t cursor, const char *S, size_t nS,
                     size_t core, chat_span *out) {
    size_t need = nS - core, best = 0, best_end = 0;
    for (size_t q = lo + 1; q <= len && !best; q++) {
        size_t l = 0;
        while (l < nS && l < q - lo && R[q - 1 - l] == S[nS - 1 - l])
            l++;
        if (l >= need && l > 0) best = l, best_end = q;
    }
    int found = best > 0;
    for (size_t q = cursor + 1; q <= len && !found && best < nS; q++) {
        if (R[q - 1] != S[nS - 1]) continue;
        size_t l = 0;
        while (l < nS && l < q - cursor && R[q - 1 - l] == S[nS - 1 - l])
            l++;
        if (l > best) best = l, best_end = q;
    }
    if (!best) return 0;
    size_t b = best_end - best;
    while (b < best_end && is_ws(R[b]))
        b++;
    *out = (chat_span){b, best_end};
    return b < best_end;
}

ft_status assistant_spans(const chat_template *tpl, const tokenizer *tok, const cJSON *messages,
                          const cJSON *tools, const cJSON *extra, const char *R, size_t len,
                          chat_span **spans, int *n_spans, ft_error *err) {
    int n = cJSON_GetArraySize(messages), ns = 0;
    chat_span *sp = malloc(sizeof *sp * (n ? n : 1));
    if (!sp) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    size_t cursor = 0;
    ft_status st = FT_OK;
    int k = 0;
    for (const cJSON *m = messages->child; m && !st; m = m->next, k++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role) || strcmp(role->valuestring, "assistant")) continue;
        cJSON *pa = prefix_of(messages, k), *pb = prefix_of(messages, k + 1);
        chat_render A = {0}, B = {0}, P = {0};
        st = chat_template_render(tpl, pa, tools, 1, extra, &A, err);
        if (!st) st = chat_template_render(tpl, pb, tools, 0, extra, &B, err);
        if (!st) {
            size_t s0 = lcp(A.text, A.len, B.text, B.len), s1 = B.len, core = 0;
            size_t te = turn_end(tok, m, B.text + s0, B.len - s0, &core);
            if (te) s1 = s0 + te;
            while (s1 > s0 && is_ws(B.text[s1 - 1]))
                s1--;
            const char *S = B.text + s0;
            size_t nS = s1 - s0;
            if (core > nS) core = 0;
            /* Most templates render a conversation's prefix as the start of the whole
             * rendering: then the turn lies in R exactly where it lies in B. Else it is looked
             * for after the text before it (P's end in R). */
            if (nS && s1 <= len && s0 >= cursor && !memcmp(R, B.text, s1)) {
                sp[ns++] = (chat_span){s0, s1};
                cursor = s1;
            } else if (nS) {
                size_t lo = cursor;
                if (k > 0 && !(st = chat_template_render(tpl, pa, tools, 0, extra, &P, err)))
                    lo = after_prefix(&P, R, len, cursor);
                if (!st && turn_in_r(R, len, lo, cursor, S, nS, core, &sp[ns]))
                    cursor = sp[ns++].end;
            }
        }
        cJSON_Delete(pa);
        cJSON_Delete(pb);
        chat_render_free(&A);
        chat_render_free(&B);
        chat_render_free(&P);
    }
    if (st) {
        free(sp);
        return st;
    }
    *spans = sp;
    *n_spans = ns;
    return FT_OK;
}
