/*
 * cmd_inspect.c: `ftune inspect`, a look inside a model without loading it.
 *
 *   ftune inspect --model PATH             one line per tensor: name, dtype, shape (tab-separated)
 *   ftune inspect --model DIR --config     the model_config resolved from DIR/config.json, as JSON
 *   ftune inspect --model PATH --tensor N  tensor N's values as a JSON array of floats (read
 *                                          through st_read_f32, printed with 9 significant digits
 *                                          so every fp32 value round-trips exactly)
 *   ftune inspect --model PATH --bnb N     bitsandbytes 4-bit weight N as model/bnb.c reads it:
 *                                          {"format", "rows", "cols", "blocksize", "double_quant",
 *                                          "nested_blocksize", "offset", "values": dequantized}
 *
 *   ftune inspect --gguf FILE              a GGUF file as JSON: {"file", "version", "alignment",
 *                                          "metadata": {key: value; arrays longer than 8 as
 *                                          {"array": TYPE, "count": N, "head": [first 8]}},
 *                                          "tensors": [{"name", "type", "shape" (GGUF order,
 *                                          ne[0] first), "offset", "nbytes"}]}
 *   ftune inspect --gguf FILE --key K      metadata key K's whole value as JSON
 *   ftune inspect --gguf FILE --tensor N   {"name", "type", "shape", "values": dequantized fp32
 *                                          in storage order}
 *
 * PATH is a .safetensors file or a model folder (model.safetensors or a sharded index). Floats
 * that JSON cannot hold are printed as NaN / Infinity / -Infinity, which Python's json accepts.
 */
#include "cli/args.h"
#include "cli/commands.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/bnb.h"
#include "model/config.h"
#include "ops/ggml_quants.h"
#include "ops/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void print_float(float v) {
    if (isnan(v))
        fputs("NaN", stdout);
    else if (isinf(v))
        fputs(v > 0 ? "Infinity" : "-Infinity", stdout);
    else if (v == 0 && signbit(v))
        fputs("-0.0", stdout); /* "-0" would read back as the integer 0 */
    else
        printf("%.9g", (double)v);
}

static void print_json_string(const char *s) {
    putchar('"');
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            printf("\\%c", *c);
        else if (*c < 0x20)
            printf("\\u%04x", *c);
        else
            putchar(*c);
    }
    putchar('"');
}

/* A bitsandbytes weight through bnb_load_weight, dequantized from the qtensor's fields by the
 * rule in ops/qtensor.h (independently of the qtensor kernels, so a test of the reader does not
 * depend on them). */
static ft_status print_bnb(const st_set *s, const char *name, ft_error *err) {
    int rows, cols;
    qtensor q;
    ft_status st = bnb_weight_shape(s, name, &rows, &cols, err);
    if (!st) st = bnb_load_weight(s, name, rows, cols, &q, err);
    if (st) return st;
    size_t n = (size_t)rows * (size_t)cols, nb = quant4_blocks(n, q.blocksize);
    float *absmax = malloc(nb * sizeof(float)), *v = malloc(n * sizeof(float));
    if (!absmax || !v) {
        free(absmax), free(v), free(q.owned);
        return ft_error_set(err, FT_ERR_RUNTIME, name, NULL, "out of memory");
    }
    for (size_t b = 0; b < nb; b++)
        absmax[b] = q.absmax_q ? q.nested_code[q.absmax_q[b]] *
                                         q.nested_absmax[b / (size_t)q.nested_blocksize] +
                                     q.offset
                               : q.absmax[b];
    quant4_type t = q.fmt == QF_NF4 ? QUANT_NF4 : QUANT_FP4;
    quant4_dequantize(t, q.data, absmax, n, q.blocksize, v);
    printf("{\"format\": \"%s\", \"rows\": %d, \"cols\": %d, \"blocksize\": %d, "
           "\"double_quant\": %s, \"nested_blocksize\": %d, \"offset\": ",
           quant4_name(t), rows, cols, q.blocksize, q.absmax_q ? "true" : "false",
           q.nested_blocksize);
    print_float(q.offset);
    fputs(", \"values\": [", stdout);
    for (size_t i = 0; i < n; i++) {
        if (i) fputs(", ", stdout);
        print_float(v[i]);
    }
    puts("]}");
    free(absmax), free(v), free(q.owned);
    return FT_OK;
}

static void print_config(const model_config *c) {
    const arch_info *a = c->arch;
    printf("{\n  \"arch\": {\"hf_class\": ");
    print_json_string(a->hf_class);
    printf(", \"model_type\": ");
    print_json_string(a->model_type);
    printf(", \"fused_qkv\": %d, \"fused_gate_up\": %d, \"qkv_bias\": %d, \"qk_norm\": %d, "
           "\"uses_attention_bias\": %d, \"uses_mlp_bias\": %d, \"uses_sliding_window\": %d},\n",
           a->fused_qkv, a->fused_gate_up, a->qkv_bias, a->qk_norm, a->uses_attention_bias,
           a->uses_mlp_bias, a->uses_sliding_window);
    printf("  \"C\": %d, \"I\": %d, \"L\": %d, \"H\": %d, \"Hkv\": %d, \"D\": %d, \"V\": %d,\n",
           c->C, c->I, c->L, c->H, c->Hkv, c->D, c->V);
    printf("  \"eps\": ");
    print_float(c->eps);
    printf(", \"tie_embeddings\": %d, \"attn_bias\": %d, \"o_bias\": %d, \"mlp_bias\": %d, "
           "\"max_pos\": %d,\n",
           c->tie_embeddings, c->attn_bias, c->o_bias, c->mlp_bias, c->max_pos);
    printf("  \"window\": [");
    for (int l = 0; l < c->L; l++)
        printf("%s%d", l ? ", " : "", c->window[l]);
    printf("],\n  \"rot_dim\": %d, \"attn_scaling\": ", c->rot_dim);
    print_float(c->attn_scaling);
    printf(",\n  \"inv_freq\": [");
    for (int i = 0; i < c->rot_dim / 2; i++) {
        if (i) fputs(", ", stdout);
        print_float(c->inv_freq[i]);
    }
    printf("],\n  \"torch_dtype\": ");
    print_json_string(c->torch_dtype);
    printf(", \"bos_token_id\": %ld, \"eos_token_id\": %ld\n}\n", c->bos_token_id, c->eos_token_id);
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int fail(const ft_error *err) {
    ft_error_print(err, stderr);
    return err->status ? (int)err->status : 1;
}

/* ---- GGUF (--gguf) ---------------------------------------------------------------------- */

static void print_json_bytes(const char *p, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* Element i of a metadata value (a scalar is element 0) as JSON. */
static void print_gguf_elem(const gguf_kv *kv, uint64_t i) {
    if (kv->elem == GGUF_STR)
        print_json_bytes(kv->strs[i].p, kv->strs[i].n);
    else if (kv->elem == GGUF_BOOL)
        fputs(gguf_arr_int(kv, i) ? "true" : "false", stdout);
    else if (kv->elem == GGUF_F32)
        print_float((float)gguf_arr_float(kv, i));
    else if (kv->elem == GGUF_F64) {
        double d = gguf_arr_float(kv, i);
        char t[40];
        snprintf(t, sizeof t, "%.17g", d);
        if (isfinite(d)) /* 2.0 as "2.0": a JSON reader keeps it a float */
            printf("%s%s", t, strpbrk(t, ".e") ? "" : ".0");
        else
            print_float((float)d);
    } else if (kv->elem == GGUF_U64) {
        uint64_t u;
        memcpy(&u, (const uint8_t *)kv->data + 8 * i, 8);
        printf("%llu", (unsigned long long)u);
    } else
        printf("%lld", (long long)gguf_arr_int(kv, i));
}

/* A value; arrays longer than `head` (0: no limit) as {"array", "count", "head"}. */
static void print_gguf_value(const gguf_kv *kv, uint64_t head) {
    if (kv->type != GGUF_ARR) {
        print_gguf_elem(kv, 0);
        return;
    }
    int brief = head && kv->count > head;
    if (brief)
        printf("{\"array\": \"%s\", \"count\": %llu, \"head\": ", gguf_vtype_name(kv->elem),
               (unsigned long long)kv->count);
    putchar('[');
    for (uint64_t i = 0; i < kv->count && (!brief || i < head); i++) {
        if (i) fputs(", ", stdout);
        print_gguf_elem(kv, i);
    }
    putchar(']');
    if (brief) putchar('}');
}

static void print_gguf_shape(const gguf_tensor *t) {
    putchar('[');
    for (int d = 0; d < t->ndim; d++)
        printf("%s%lld", d ? ", " : "", (long long)t->ne[d]);
    putchar(']');
}

static int inspect_gguf(const char *path, const char *key, const char *tensor) {
    ft_error err;
    memset(&err, 0, sizeof err);
    gguf_file *g = NULL;
    if (gguf_open(path, &g, &err)) return fail(&err);
    int rc = 0;
    if (key) {
        const gguf_kv *kv = gguf_find_kv(g, key);
        if (!kv) {
            char where[1200];
            snprintf(where, sizeof where, "%s: key \"%s\"", path, key);
            ft_error_set(&err, FT_ERR_INPUT, where,
                         "'ftune inspect --gguf FILE' lists the metadata the file has",
                         "key not found");
            rc = fail(&err);
        } else {
            print_gguf_value(kv, 0);
            putchar('\n');
        }
    } else if (tensor) {
        const gguf_tensor *t = gguf_find_tensor(g, tensor);
        float *v = t ? malloc(sizeof(float) * (t->nelem ? t->nelem : 1)) : NULL;
        if (!t) {
            char where[1200];
            snprintf(where, sizeof where, "%s: tensor \"%s\"", path, tensor);
            ft_error_set(&err, FT_ERR_INPUT, where,
                         "'ftune inspect --gguf FILE' lists the tensors the file has",
                         "tensor not found");
            rc = fail(&err);
        } else if (!v) {
            ft_error_set(&err, FT_ERR_RUNTIME, tensor, NULL, "out of memory");
            rc = fail(&err);
        } else if (gguf_read_f32(g, t, 0, t->nelem, v, &err)) {
            rc = fail(&err);
        } else {
            fputs("{\"name\": ", stdout);
            print_json_bytes(t->name, strlen(t->name));
            printf(", \"type\": \"%s\", \"shape\": ", ggml_type_info(t->type)->name);
            print_gguf_shape(t);
            fputs(", \"values\": [", stdout);
            for (uint64_t i = 0; i < t->nelem; i++) {
                if (i) fputs(", ", stdout);
                print_float(v[i]);
            }
            puts("]}");
        }
        free(v);
    } else {
        fputs("{\"file\": ", stdout);
        print_json_bytes(path, strlen(path));
        printf(", \"version\": %u, \"alignment\": %zu,\n \"metadata\": {",
               (unsigned)gguf_version(g), gguf_alignment(g));
        for (int i = 0; i < gguf_kv_count(g); i++) {
            const gguf_kv *kv = gguf_kv_at(g, i);
            fputs(i ? ",\n  " : "\n  ", stdout);
            print_json_bytes(kv->key, strlen(kv->key));
            fputs(": ", stdout);
            print_gguf_value(kv, 8);
        }
        fputs("},\n \"tensors\": [", stdout);
        for (int i = 0; i < gguf_tensor_count(g); i++) {
            const gguf_tensor *t = gguf_tensor_at(g, i);
            fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", stdout);
            print_json_bytes(t->name, strlen(t->name));
            printf(", \"type\": \"%s\", \"shape\": ", ggml_type_info(t->type)->name);
            print_gguf_shape(t);
            printf(", \"offset\": %llu, \"nbytes\": %zu}", (unsigned long long)t->offset,
                   t->nbytes);
        }
        puts("]}");
    }
    gguf_close(g);
    return rc;
}

int cmd_inspect(int argc, char **argv) {
    const char *model = NULL, *tensor = NULL, *bnb = NULL, *gguf = NULL, *key = NULL;
    int config = 0;
    const opt_spec specs[] = {
        {"model", OPT_STR, &model, "PATH", "a .safetensors file or a model folder"},
        {"config", OPT_FLAG, &config, NULL, "print the model config resolved from config.json"},
        {"tensor", OPT_STR, &tensor, "NAME", "print one tensor's values as a JSON array"},
        {"bnb", OPT_STR, &bnb, "NAME",
         "read a bitsandbytes 4-bit weight; print its format and values"},
        {"gguf", OPT_STR, &gguf, "FILE", "a GGUF file: metadata and tensors as JSON"},
        {"key", OPT_STR, &key, "KEY", "with --gguf: one metadata value in full"},
        {0},
    };
    const cmd_info info = {
        "inspect",
        "ftune inspect --model PATH [--config | --tensor NAME | --bnb NAME]\n"
        "       ftune inspect --gguf FILE [--key KEY | --tensor NAME]",
        "Without --config or --tensor, list the tensors of a safetensors file or model folder "
        "(name, dtype, shape), checking the whole header. --config prints the architecture and "
        "numbers ftune derives from config.json (head_dim, kv heads, biases, sliding windows, "
        "RoPE inverse frequencies) as JSON. --tensor prints a tensor's values as fp32. --bnb reads "
        "a bitsandbytes 4-bit weight (NAME without suffixes) and prints its format and "
        "dequantized values.",
        "  ftune inspect --model DIR\n"
        "  ftune inspect --model DIR --config\n"
        "  ftune inspect --model RUN/adapter_model.safetensors --tensor "
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"};
    ft_error err;
    memset(&err, 0, sizeof err);
    int r = args_parse(argc, argv, &info, specs, &err);
    if (r == -1) return 0;
    if (r) return fail(&err);
    if (gguf) {
        if (model || config || bnb || (key && tensor)) {
            ft_error_set(&err, FT_ERR_INPUT, "inspect", NULL,
                         "--gguf FILE takes at most one of --key, --tensor");
            return fail(&err);
        }
        return inspect_gguf(gguf, key, tensor);
    }
    if (!model) {
        ft_error_set(&err, FT_ERR_INPUT, "inspect", "e.g. ftune inspect --model models/smollm",
                     "--model PATH is required");
        return fail(&err);
    }
    if (!!config + !!tensor + !!bnb > 1) {
        ft_error_set(&err, FT_ERR_INPUT, "inspect", NULL, "give one of --config, --tensor, --bnb");
        return fail(&err);
    }
    if (config) {
        if (!is_dir(model)) {
            ft_error_set(&err, FT_ERR_INPUT, model, "--config reads DIR/config.json",
                         "--config needs a model folder");
            return fail(&err);
        }
        model_config c;
        if (model_config_load(model, &c, &err)) return fail(&err);
        print_config(&c);
        model_config_free(&c);
        return 0;
    }
    st_set *s = NULL;
    if ((is_dir(model) ? st_open_dir(model, &s, &err) : st_open(model, &s, &err)))
        return fail(&err);
    if (bnb) {
        int rc = print_bnb(s, bnb, &err);
        st_close(s);
        return rc ? fail(&err) : 0;
    }
    if (tensor) {
        const st_tensor *t = st_find(s, tensor);
        size_t n = 1;
        if (t)
            for (int i = 0; i < t->ndim; i++)
                n *= (size_t)t->shape[i];
        float *v = malloc(sizeof(float) * (n ? n : 1));
        if (!v) {
            st_close(s);
            ft_error_set(&err, FT_ERR_RUNTIME, tensor, NULL, "out of memory");
            return fail(&err);
        }
        /* a missing tensor is reported by st_read_f32 with the file and the name */
        if (st_read_f32(s, tensor, t ? t->ndim : 0, t ? t->shape : NULL, v, &err)) {
            free(v);
            st_close(s);
            return fail(&err);
        }
        putchar('[');
        for (size_t i = 0; i < n; i++) {
            if (i) fputs(", ", stdout);
            print_float(v[i]);
        }
        puts("]");
        free(v);
        st_close(s);
        return 0;
    }
    for (int i = 0; i < st_count(s); i++) {
        const st_tensor *t = st_at(s, i);
        printf("%s\t%s\t[", t->name, st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
        puts("]");
    }
    st_close(s);
    return 0;
}
