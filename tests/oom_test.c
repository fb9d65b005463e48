/*
 * oom_test.c: out of memory is an error, never a crash or an abort(): fault injection in the
 * manner of SQLite's malloc tests.
 *
 * This program defines malloc, calloc, realloc (over glibc's __libc_*) so that the k-th
 * allocation made by this executable's code (ftune is linked in statically; cJSON's and the
 * other shared libraries' own allocations are left alone) fails. For k = 0, 1, 2, ... until an
 * attempt runs with no failure, it parses and renders a chat-style Jinja template (loops,
 * filters, tojson with sorted keys, a namespace, generation spans, strings longer than jb_printf's
 * stack buffer) and checks that each attempt either succeeds with the right text or fails with
 * FT_ERR_RUNTIME and a message saying "out of memory"; ASan (make asan, where this counting is
 * off) and LeakSanitizer then also see that the failure paths free what they took.
 */
#include "test.h"
#include "tok/jinja.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define INJECTING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INJECTING 0
#endif
#endif
#ifndef INJECTING
#define INJECTING 1
#endif

static atomic_long countdown = -1; /* < 0: no failure; else the allocations left before one */
static atomic_long failed;         /* failures injected */

#if INJECTING
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void __libc_free(void *);
extern char __executable_start, etext;

/* 1 when this allocation, called from caller, must fail. */
static int fail_now(void *caller) {
    if ((char *)caller < &__executable_start || (char *)caller >= &etext) return 0;
    if (atomic_load(&countdown) < 0) return 0;
    if (atomic_fetch_sub(&countdown, 1) != 0) return 0;
    atomic_fetch_add(&failed, 1);
    atomic_store(&countdown, -1); /* one failure per attempt */
    return 1;
}

void *malloc(size_t n) { return fail_now(__builtin_return_address(0)) ? NULL : __libc_malloc(n); }
void *calloc(size_t n, size_t s) {
    return fail_now(__builtin_return_address(0)) ? NULL : __libc_calloc(n, s);
}
void *realloc(void *p, size_t n) {
    return fail_now(__builtin_return_address(0)) ? NULL : __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }
#endif

static const char *TPL =
    "{% for m in messages %}<|{{ m.role }}|>{% if m.role == 'assistant' %}{% generation %}"
    "{{ m.content | trim }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n"
    "{% endfor %}{{ meta | tojson(sort_keys=true) }}|{{ long }}|{{ long | upper | replace('X', "
    "'ab') }}"
    "{% set ns = namespace(n=0) %}{% for i in range(40) %}{% set ns.n = ns.n + i %}{% endfor %}"
    "{{ ns.n }}{% for i in range(80) %}{{ long }}{{ i }}{% endfor %}"
    "{% for i in range(60) %}{{ i }}{{ i + 1 }}{{ i * 2 }}{{ i - 3 }}{% endfor %}";

static char *render(const cJSON *vars, ft_status *st, ft_error *err) {
    jinja_template *t = NULL;
    *st = jinja_parse(TPL, strlen(TPL), "oom", &t, err);
    if (*st) return NULL;
    char *out = NULL;
    size_t len = 0;
    jinja_span *spans = NULL;
    int ns = 0;
    *st = jinja_render(t, vars, &out, &len, &spans, &ns, err);
    jinja_free(t);
    free(spans);
    return *st ? NULL : out;
}

int main(void) {
    char longs[1500];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = 0;
    cJSON *vars = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(vars, "messages");
    const char *roles[] = {"system", "user", "assistant", "user", "assistant"};
    for (int i = 0; i < 5; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", roles[i]);
        cJSON_AddStringToObject(m, "content", i % 2 ? " hello there " : " fine, thanks ");
        cJSON_AddItemToArray(msgs, m);
    }
    cJSON *meta = cJSON_AddObjectToObject(vars, "meta");
    cJSON_AddNumberToObject(meta, "z", 1), cJSON_AddStringToObject(meta, "a", "b");
    cJSON_AddStringToObject(vars, "long", longs);

    ft_status st;
    ft_error err = {0};
    char *want = render(vars, &st, &err);
    CHECK(want && st == FT_OK, "the template renders: %s", err.what);
    if (!want) return test_summary("oom");
    if (!INJECTING) {
        printf("oom: failures not injected (AddressSanitizer owns malloc)\n");
    } else {
        int attempts = 0, errors = 0;
        for (long k = 0; k < 100000; k++) {
            atomic_store(&failed, 0);
            atomic_store(&countdown, k);
            memset(&err, 0, sizeof err);
            char *got = render(vars, &st, &err);
            atomic_store(&countdown, -1);
            attempts++;
            if (atomic_load(&failed) == 0) { /* no allocation left to fail: done */
                CHECK(got && !strcmp(got, want), "k %ld: the run without a failure differs", k);
                free(got);
                break;
            }
            if (got) { /* the failed allocation was one the code can do without */
                CHECK(!strcmp(got, want), "k %ld: rendered, but wrong", k);
                free(got);
                continue;
            }
            errors++;
            CHECK(st == FT_ERR_RUNTIME && strstr(err.what, "out of memory"),
                  "k %ld: status %d, \"%s\"", k, st, err.what);
        }
        CHECK(errors >= 10, "only %d of %d attempts failed", errors, attempts);
        printf("oom: %d attempts, each with one allocation failing; %d reported out of memory, "
               "the rest rendered the same text\n",
               attempts, errors);
    }
    free(want);
    cJSON_Delete(vars);
    return test_summary("oom");
}
