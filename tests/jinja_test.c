/*
 * jinja_test.c: unit tests of ftune's Jinja interpreter (src/tok/jinja*.c).
 *
 * Every expected string below was produced by jinja2 3.1.6 configured exactly as transformers
 * 5.23 configures it (transformers.utils.chat_template_utils._compile_jinja_template:
 * ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, loopcontrols, the generation
 * extension, and its tojson / raise_exception / strftime_now / namespace), rendering each
 * template with the variables in VARS_JSON. The runtime-error messages are jinja2's str(exception);
 * the syntax-error lines are jinja2's TemplateSyntaxError.lineno. The generation spans are the
 * indices render_jinja_template(..., return_assistant_tokens_mask=True) returned (ASCII text, so
 * characters and bytes coincide). Comparison is exact: output bytes must be identical.
 */
#include "tok/jinja.h"

#include "test.h"

#include <stdlib.h>
#include <string.h>

static const char *const VARS_JSON = "{\"d\": {\"a\": 1, \"b\": \"two\", \"items\": \"shadow\"}, \"l\": [3, 1, 2], \"s\": \"Hello World\", \"msgs\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U1\"}, {\"role\": \"assistant\", \"content\": \"A1\"}, {\"role\": \"user\", \"content\": \"U2\"}], \"nested\": {\"k\": [1, {\"x\": \"\303\251\"}], \"t\": true, \"n\": null, \"f\": 2.5}, \"words\": [\"b\", \"A\", \"c\", \"a\"], \"nums\": [1, 2, 3, 4, 5, 6], \"e\": \"\", \"z\": 0}";
static const struct { const char *tpl, *want; } CASES[] = {
    {"  {% if true %}\n  x\n  {% endif %}\nY",
     "  x\nY"},
    {"{%- if true -%}  a  {%- endif -%}  b",
     "ab"},
    {"a  {{- ' b ' -}}  \n c",
     "a b c"},
    {"a {# comment #}\n b\n  {# c2 #}\nc",
     "a  b\nc"},
    {"x {%+ if true %}y{% endif %}\n  {%+ if true %}z{% endif %}",
     "x y  z"},
    {"{% raw %}{{ not evaluated }}{% endraw %}|{%- raw -%}  {% x %}  {%- endraw %}|",
     "{{ not evaluated }}|{% x %}|"},
    {"line\n",
     "line"},
    {"line\n\n",
     "line\n"},
    {"{% for i in l %}\n  {{ i }}\n{% endfor %}\n",
     "  3\n  1\n  2\n"},
    {"{% for i in l -%}\n  {{ i }}\n{%- endfor %}",
     "312"},
    {"a\r\nb\rc",
     "a\nb\nc"},
    {"{{ 'a\\n\\tb' }}|{{ \"x\\u00e9\\x41\" }}|{{ 'it' \"s\" }}",
     "a\n\tb|x\303\251A|its"},
    {"{{ 1 }} {{ 1.5 }} {{ 1e3 }} {{ 10/4 }} {{ 4/2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 8 }} {{ 2 ** -1 }}",
     "1 1.5 1000.0 2.5 2.0 3 -4 2 256 0.5"},
    {"{{ 'ab' * 3 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'a' ~ 1 ~ none ~ true }} {{ 0.1 + 0.2 }} {{ 1 / 3 }} {{ 1e20 }} {{ 1.5e-7 }} {{ -0.0 }}",
     "ababab 7 9 a1NoneTrue 0.30000000000000004 0.3333333333333333 1e+20 1.5e-07 -0.0"},
    {"{{ [1, 'a', none, true, 2.0] }} {{ {'a': 1, 'b': [none]} }} {{ (1,) }} {{ (1, 'x') }} {{ [\"it's\", 'say \"hi\"', 'back\\\\slash', 'nl\\n'] }}",
     "[1, 'a', None, True, 2.0] {'a': 1, 'b': [None]} (1,) (1, 'x') [\"it's\", 'say \"hi\"', 'back\\\\slash', 'nl\\n']"},
    {"{{ 1 < 2 < 3 }} {{ 3 < 2 < 4 }} {{ 'a' in 'cat' }} {{ 2 not in [1, 3] }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'b' > 'a' }} {{ [1, 2] < [1, 3] }}",
     "True False True True True True True True"},
    {"{{ none or 'x' }} {{ 0 and 'y' }} {{ not [] }} {{ 'yes' if l else 'no' }} [{{ 'y' if e }}] {{ - 3 }} {{ -l[0] }} {{ not true or true }}",
     "x 0 True yes [] -3 -3 True"},
    {"{{ d.a }} {{ d['b'] }} {{ d['items'] }} {{ d.items() | list }} {{ d.get('zz', 5) }} {{ d.get('a') }} {{ d.keys() | list }} {{ d.values() | list }}",
     "1 two shadow [('a', 1), ('b', 'two'), ('items', 'shadow')] 5 1 ['a', 'b', 'items'] [1, 'two', 'shadow']"},
    {"{{ l[-1] }} [{{ l[10] }}] [{{ d.missing }}] {{ nested.k[1].x }} {{ nested['k'][0] }} [{{ nested.n.anything }}] {{ msgs[0].role }} {{ l.0 }}",
     "2 [] [] \303\251 1 [] system 3"},
    {"{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ l[-2:] }} {{ 'h\303\251llo'[1] }} {{ 'abcdef'[::2] }} {{ l[:] }} {{ 'h\303\251llo'[-3:] }} {{ l[5:] }} {{ 'abc'[-10:2] }}",
     "el olleh [1, 2] \303\251 ace [3, 1, 2] llo [] ab"},
    {"[{{ '  x y \\n'|trim }}] [{{ 'xxhixx'|trim('x') }}] {{ s|length }} {{ 'h\303\251llo'|length }} {{ d|length }} {{ s|count }} {{ s|lower }} {{ s|upper }} {{ 'hELLO wORLD'|capitalize }} {{ 'hello-world foo(bar)'|title }}",
     "[x y] [hi] 11 5 3 11 hello world HELLO WORLD Hello world Hello-World Foo(Bar)"},
    {"{{ nested|tojson }} {{ '\303\251\"\\n\\u0001'|tojson }} {{ d|tojson(indent=2) }} {{ [1, [2, {}], []]|tojson(indent=1) }} {{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ '\303\251'|tojson(true) }} {{ l|tojson(separators=[',', ':']) }}",
     "{\"k\": [1, {\"x\": \"\303\251\"}], \"t\": true, \"n\": null, \"f\": 2.5} \"\303\251\\\"\\n\\u0001\" {\n  \"a\": 1,\n  \"b\": \"two\",\n  \"items\": \"shadow\"\n} [\n 1,\n [\n  2,\n  {}\n ],\n []\n] {\"a\": 2, \"b\": 1} \"\\u00e9\" [3,1,2]"},
    {"[{{ undefined_thing|default('dflt') }}] [{{ e|default('dflt') }}] [{{ e|default('dflt', true) }}] [{{ none|d('n') }}] [{{ z|default(7, boolean=true) }}]",
     "[dflt] [] [dflt] [None] [7]"},
    {"{{ l|join(', ') }} {{ words|join }} {{ msgs|join('/', attribute='role') }} {{ 'aXbXc'|replace('X', '-') }} {{ 'aaaa'|replace('a', 'b', 2) }} {{ d|items|list }}",
     "3, 1, 2 bAca system/user/assistant/user a-b-c bbaa [('a', 1), ('b', 'two'), ('items', 'shadow')]"},
    {"{{ l|first }} {{ l|last }} {{ 'abc'|first }} {{ 'abc'|list }} {{ d|list }} {{ 5|string }} {{ [1]|string }} {{ '42'|int + 1 }} {{ '3.7'|int }} {{ 'x'|int }} {{ '2.5'|float }} {{ 3|float }}",
     "3 2 a ['a', 'b', 'c'] ['a', 'b', 'items'] 5 [1] 43 3 0 2.5 3.0"},
    {"{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ msgs|rejectattr('role', 'eq', 'user')|list|length }} {{ nums|select('odd')|list }} {{ nums|reject('even')|list }} {{ nums|select('divisibleby', 3)|list }} {{ words|map('upper')|list }}",
     "['U1', 'U2'] 2 [1, 3, 5] [1, 3, 5] [3, 6] ['B', 'A', 'C', 'A']"},
    {"{{ words|unique|list }} {{ words|sort }} {{ words|sort(case_sensitive=true) }} {{ words|sort(reverse=true) }} {{ msgs|sort(attribute='content')|map(attribute='content')|join(',') }} {{ d|dictsort }} {{ {'b': 2, 'a': 1}|dictsort(by='value') }}",
     "['b', 'A', 'c'] ['A', 'a', 'b', 'c'] ['A', 'a', 'b', 'c'] ['c', 'b', 'A', 'a'] A1,S,U1,U2 [('a', 1), ('b', 'two'), ('items', 'shadow')] [('a', 1), ('b', 2)]"},
    {"{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}|{{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.1|round(0, 'ceil') }} {{ 3|round }}",
     "a\n    b\n\n    c|  a\n  b|a\n  \n  b|3 2.57 2.0 4.0 3.0 3"},
    {"{{ 'one two  three'|wordcount }} {{ l|reverse|list }} {{ 'abc'|reverse }} {{ nums|sum }} {{ l|min }} {{ l|max }} {{ words|max }} {{ '<a href=\"x\">'|e }} {{ 'x'|safe }}",
     "3 [2, 1, 3] cba 21 1 3 c &lt;a href=&#34;x&#34;&gt; x"},
    {"{{ x is defined }} {{ d is defined }} {{ x is undefined }} {{ nested.n is none }} {{ s is string }} {{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 1 is integer }} {{ true is integer }} {{ 1.5 is float }} {{ true is boolean }}",
     "False True True True True True True True True False True True"},
    {"{{ d is mapping }} {{ l is mapping }} {{ s is iterable }} {{ 1 is iterable }} {{ x is iterable }} {{ l is sequence }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'a' is equalto 'a' }} {{ 2 is eq(3) }} {{ 2 is in [1, 2] }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'x' is not none }}",
     "True False True False True True True False True True True True True False True True True True"},
    {"{% for m in msgs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }};{% endfor %}",
     "10TrueFalse443;21FalseFalse432;32FalseFalse421;43FalseTrue410;"},
    {"{% for m in msgs %}[{{ loop.previtem.role if loop.previtem is defined }}|{{ loop.nextitem['role'] if not loop.last }}]{% endfor %} {% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %} {% for k in d %}{{ k }}{% endfor %}",
     "[|user][system|assistant][user|user][assistant|] a=1,b=two,items=shadow, abitems"},
    {"{% for n in nums if n is odd %}{{ n }}/{{ loop.length }} {% endfor %}{% for x in [] %}no{% else %}empty{% endfor %} {% for c in 'h\303\251y' %}{{ c }}.{% endfor %}",
     "1/3 3/3 5/3 empty h.\303\251.y."},
    {"{% for n in nums %}{% if n == 2 %}{% continue %}{% endif %}{% if n > 4 %}{% break %}{% endif %}{{ n }}{% endfor %} {% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %} {% for x in l %}{{ loop.cycle('o', 'e') }}{% endfor %}",
     "134 1x11y21 2x12y22  oeo"},
    {"{% for (a, b) in [(1, 2), (3, 4)] %}{{ a + b }} {% endfor %}{% for a, b in [[1, 2]] %}{{ a }}{{ b }}{% endfor %}{% for x in undefined_list %}never{% endfor %}",
     "3 7 12"},
    {"{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i * 10 %}{{ x }} {% endfor %}{{ x }}",
     "110 120 1"},
    {"{% set ns = namespace(found=false, n=0) %}{% for m in msgs %}{% if m.role == 'user' %}{% set ns.found = true %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}",
     "True 2"},
    {"{% if true %}{% set y = 'set in if' %}{% endif %}{{ y }} {% set a, b = 1, 2 %}{{ a }}{{ b }} {% set blk %}  block {{ 1 + 1 }}  {% endset %}[{{ blk }}] {% set t | upper %}up{% endset %}{{ t }}",
     "set in if 12 [  block 2  ] UP"},
    {"{% for i in [1, 2] %}{% if i == 2 %}[{{ y }}]{% endif %}{% set y = i %}{% endfor %}",
     "[]"},
    {"{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', '\?') }} {{ greet(punct='.', name='Cy') }}",
     "Hi Ann! Hi Bob\? Hi Cy."},
    {"{% macro outer() %}[{{ caller() }}]{% endmacro %}{% call outer() %}inside {{ s }}{% endcall %} {% filter upper %}shout {{ 'this' }}{% endfilter %}",
     "[inside Hello World] SHOUT THIS"},
    {"{% macro render(t) %}{% if t is mapping %}{% for k, v in t.items() %}{{ k }}:{{ render(v) }};{% endfor %}{% else %}{{ t }}{% endif %}{% endmacro %}{{ render({'a': {'b': 1}, 'c': 2}) }}",
     "a:b:1;;c:2;"},
    {"{{ s.startswith('Hell') }} {{ s.endswith(('x', 'ld')) }} [{{ '  pad  '.strip() }}] [{{ 'xxhixx'.lstrip('x') }}] [{{ 'xxhixx'.rstrip('x') }}] {{ 'a,b,,c'.split(',') }} {{ ' a  b c '.split() }} {{ 'a b c d'.split(' ', 2) }} {{ 'a b c d'.rsplit(' ', 1) }}",
     "True True [pad] [hixx] [xxhi] ['a', 'b', '', 'c'] ['a', 'b', 'c'] ['a', 'b', 'c d'] ['a b c', 'd']"},
    {"{{ s.upper() }} {{ s.lower() }} {{ \"they're bill's\".title() }} {{ 'hello'.capitalize() }} {{ s.replace('l', 'L') }} {{ '{} and {name}'.format(1, name='x') }} {{ 'banana'.count('an') }} {{ 'h\303\251llo'.find('l') }} {{ '-'.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ '12'.isdigit() }} {{ 'thinking</think>answer'.split('</think>')[-1] }}",
     "HELLO WORLD hello world They'Re Bill'S Hello HeLLo WorLd 1 and x 2 2 a-b ['a', 'b', 'c'] True answer"},
};
static const struct { const char *tpl, *msg; } RUNTIME_ERRORS[] = {
    {"{{ x.y }}", "'x' is undefined"},
    {"{{ d.a.b.c }}", "'int object' has no attribute 'b'"},
    {"{{ raise_exception('custom failure') }}", "custom failure"},
    {"{{ 'a' + 1 }}", "can only concatenate str (not \"int\") to str"},
    {"{{ l.append(4) }}", "access to attribute 'append' of 'list' object is unsafe."},
    {"{{ 1 < 'a' }}", "'<' not supported between instances of 'int' and 'str'"},
};
static const struct { const char *tpl; int line; } SYNTAX_ERRORS[] = {
    {"{% if true %}no end", 1}, /* jinja2: Unexpected end of template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'. */
    {"{{ (1 + }}", 1}, /* jinja2: unexpected '}', expected ')' */
    {"{% for x in l %}{% endif %}", 1}, /* jinja2: Encountered unknown tag 'endif'. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'. */
    {"{{ l | nosuch }}", 1}, /* jinja2: No filter named 'nosuch'. */
    {"{% unknowntag %}", 1}, /* jinja2: Encountered unknown tag 'unknowntag'. */
    {"abc\n  {{ 'unterminated }}", 2}, /* jinja2: unexpected char "'" at 9 */
    {"{# never closed", 1}, /* jinja2: Missing end of comment tag */
};
static const char *const GEN_TPL = "{% for m in messages %}{% if m.role == 'assistant' %}<a>{% generation %}{{ m.content }}!{% endgeneration %}</a>{% else %}<{{ m.role }}>{{ m.content }}{% endif %}\n{% endfor %}{% macro g() %}{% generation %}M{% endgeneration %}{% endmacro %}{{ g() }}";
static const char *const GEN_WANT = "<system>S<user>U1<a>A1!</a><user>U2<a>A2!</a>M";
static const size_t GEN_SPANS[][2] = {{20, 23}, {38, 41}, {45, 46}};
static const int GEN_N = 3;
static const char *const GEN_MSGS = "[{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U1\"}, {\"role\": \"assistant\", \"content\": \"A1\"}, {\"role\": \"user\", \"content\": \"U2\"}, {\"role\": \"assistant\", \"content\": \"A2\"}]";

static int render(const char *tpl, const cJSON *vars, char **out, ft_error *err) {
    jinja_template *t = NULL;
    size_t len;
    int st = jinja_parse(tpl, strlen(tpl), "t", &t, err);
    if (st) return st;
    st = jinja_render(t, vars, out, &len, NULL, NULL, err);
    jinja_free(t);
    return st;
}

int main(void) {
    cJSON *vars = cJSON_Parse(VARS_JSON);
    CHECK(vars != NULL, "VARS_JSON parses");
    int ncases = (int)(sizeof CASES / sizeof CASES[0]);
    for (int i = 0; i < ncases; i++) {
        ft_error err = {0};
        char *out = NULL;
        int st = render(CASES[i].tpl, vars, &out, &err);
        CHECK(st == 0, "case %d (%s): error %s: %s", i, CASES[i].tpl, err.where, err.what);
        if (!st) {
            CHECK(!strcmp(out, CASES[i].want), "case %d: template\n  %s\nrendered\n  [%s]\nwant\n  [%s]", i,
                  CASES[i].tpl, out, CASES[i].want);
            free(out);
        }
    }
    for (size_t i = 0; i < sizeof RUNTIME_ERRORS / sizeof RUNTIME_ERRORS[0]; i++) {
        ft_error err = {0};
        char *out = NULL;
        int st = render(RUNTIME_ERRORS[i].tpl, vars, &out, &err);
        CHECK(st == FT_ERR_INPUT, "runtime error case %zu (%s) should fail with status 2, got %d", i,
              RUNTIME_ERRORS[i].tpl, st);
        CHECK(strstr(err.what, RUNTIME_ERRORS[i].msg) != NULL, "message [%s] lacks jinja2's [%s]", err.what,
              RUNTIME_ERRORS[i].msg);
        CHECK(!strncmp(err.where, "t:1:", 4), "where [%s] should be t:1:COL", err.where);
        if (!st) free(out);
    }
    for (size_t i = 0; i < sizeof SYNTAX_ERRORS / sizeof SYNTAX_ERRORS[0]; i++) {
        ft_error err = {0};
        jinja_template *t = NULL;
        int st = jinja_parse(SYNTAX_ERRORS[i].tpl, strlen(SYNTAX_ERRORS[i].tpl), "t", &t, &err);
        char want[32];
        snprintf(want, sizeof want, "t:%d:", SYNTAX_ERRORS[i].line);
        CHECK(st == FT_ERR_INPUT, "syntax error case %zu (%s) should fail with status 2", i, SYNTAX_ERRORS[i].tpl);
        CHECK(!strncmp(err.where, want, strlen(want)), "where [%s] should start with %s (jinja2's line)", err.where,
              want);
        jinja_free(t);
    }
    /* columns: the position ftune reports is where the offending token starts */
    {
        ft_error err = {0};
        jinja_template *t = NULL;
        jinja_parse("ab\n  {{ x | nosuch }}", 21, "t", &t, &err);
        CHECK(!strcmp(err.where, "t:2:10"), "unknown filter at line 2 column 10, got %s", err.where);
        char *out = NULL;
        int st = render("{% if true %}\n\t{{ u.v }}{% endif %}", vars, &out, &err);
        CHECK(st == FT_ERR_INPUT && !strcmp(err.where, "t:2:6"), "undefined attribute at 2:6, got %s", err.where);
    }
    /* {% generation %} spans, including one inside a macro (transformers records the length of
     * the top-level output rendered so far as its start) */
    {
        cJSON *gv = cJSON_CreateObject();
        cJSON_AddItemToObject(gv, "messages", cJSON_Parse(GEN_MSGS));
        jinja_template *t = NULL;
        ft_error err = {0};
        CHECK(jinja_parse(GEN_TPL, strlen(GEN_TPL), "gen", &t, &err) == 0, "generation template parses: %s", err.what);
        char *out = NULL;
        size_t len = 0;
        jinja_span *spans = NULL;
        int ns = 0;
        CHECK(jinja_render(t, gv, &out, &len, &spans, &ns, &err) == 0, "generation renders: %s", err.what);
        CHECK(out && !strcmp(out, GEN_WANT), "generation text [%s]", out ? out : "");
        CHECK(ns == GEN_N, "%d spans, want %d", ns, GEN_N);
        for (int i = 0; i < ns && i < GEN_N; i++)
            CHECK(spans[i].begin == GEN_SPANS[i][0] && spans[i].end == GEN_SPANS[i][1], "span %d = [%zu, %zu), want [%zu, %zu)",
                  i, spans[i].begin, spans[i].end, GEN_SPANS[i][0], GEN_SPANS[i][1]);
        free(out);
        free(spans);
        jinja_free(t);
        cJSON_Delete(gv);
    }
    /* hostile input: very deep nesting and huge results fail with status 2 instead of
     * exhausting the stack or memory */
    {
        static const char *const pre[] = {"{{ ", "{% if true %}", "{{ ", "{{ "};
        static const char *const unit[] = {"(", "{% if true %}", "not ", "- "};
        for (int k = 0; k < 4; k++) {
            size_t n = 100000;
            char *src = malloc(n * 14 + 64);
            size_t p = 0;
            p += (size_t)sprintf(src + p, "%s", pre[k]);
            for (size_t i = 0; i < n; i++) p += (size_t)sprintf(src + p, "%s", unit[k]);
            src[p++] = '1';
            src[p] = 0;
            ft_error err = {0};
            jinja_template *t = NULL;
            CHECK(jinja_parse(src, p, "deep", &t, &err) == FT_ERR_INPUT, "deep nesting %d must be refused", k);
            jinja_free(t);
            free(src);
        }
        char *out = NULL;
        ft_error err = {0};
        CHECK(render("{{ 'ab' * 10000000000 }}", vars, &out, &err) == FT_ERR_INPUT, "huge repetition refused");
        CHECK(render("{{ 2 ** 64 }}", vars, &out, &err) == FT_ERR_INPUT, "integer overflow refused");
        CHECK(render("{{ range(1000000)|length }}", vars, &out, &err) == FT_ERR_INPUT, "huge range refused");
    }
    /* fuzz: random edits of the templates above must parse and render or fail cleanly (run under
     * ASan/UBSan by `make asan`); a fixed seed keeps failures reproducible */
    {
        static const char alphabet[] = "{}%#-+()[]'\"|.:,=~ \n\tabcxyz019_";
        unsigned long long seed = 12345;
        int clean = 0, total = 3000;
        for (int it = 0; it < total; it++) {
            const char *base = CASES[it % ncases].tpl;
            size_t n = strlen(base);
            char *src = malloc(n + 8);
            memcpy(src, base, n + 1);
            int edits = 1 + (int)((seed >> 33) % 4);
            for (int e = 0; e < edits && n; e++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                size_t pos = (size_t)((seed >> 33) % n);
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                unsigned r = (unsigned)(seed >> 40);
                if (r % 5 == 0) n = pos, src[n] = 0; /* truncate */
                else src[pos] = alphabet[r % (sizeof alphabet - 1)];
            }
            ft_error err = {0};
            jinja_template *t = NULL;
            if (!jinja_parse(src, n, "fuzz", &t, &err)) {
                char *out = NULL;
                size_t len;
                if (!jinja_render(t, vars, &out, &len, NULL, NULL, &err)) {
                    CHECK(strlen(out) <= len, "rendered length is consistent");
                    free(out);
                    clean++;
                } else CHECK(err.status == FT_ERR_INPUT && err.where[0], "a failed render says where");
                jinja_free(t);
            } else CHECK(err.status == FT_ERR_INPUT && !strncmp(err.where, "fuzz:", 5), "a parse error says where");
            free(src);
        }
        CHECK(clean > total / 20, "some fuzzed templates still render (%d of %d)", clean, total);
    }
    cJSON_Delete(vars);
    return test_summary("jinja");
}
