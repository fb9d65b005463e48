/*
 * quantize.c: a Hugging Face model folder -> the same model with its linear layers in
 * bitsandbytes 4-bit form, laid out as transformers saves a model loaded with
 * BitsAndBytesConfig(load_in_4bit=True): for each "model.layers.L.<...>_proj.weight",
 *   NAME            U8  [ceil(n/2), 1]   packed codes (ops/quant4.c)
 *   NAME.absmax     F32 [blocks]
 *   NAME.quant_map  F32 [16]             the code values
 *   NAME.quant_state.bitsandbytes__<nf4|fp4>  U8 [..]  JSON: quant_type, blocksize, dtype, shape
 * With double quantization (bnb_4bit_use_double_quant=True) NAME.absmax is U8 [blocks] codes
 * instead, and these join (ops/quant4.c, quant4_double_quant):
 *   NAME.nested_absmax     F32 [ceil(blocks/256)]
 *   NAME.nested_quant_map  F32 [256]         bitsandbytes' dynamic map
 *   and the JSON gains nested_blocksize (256), nested_dtype ("float32") and nested_offset.
 * config.json gains the "quantization_config" transformers writes. Other tensors (embeddings,
 * norms, lm_head) are copied unchanged.
 */
#include "model/quantize.h"
#include "io/atomic.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PARTS = 7 }; /* buffers per quantized weight: x, packed, absmax, codes, nested, state, names */

static int is_linear_weight(const char *name) {
    size_t n = strlen(name);
    return !strncmp(name, "model.layers.", 13) && n > 12 && !strcmp(name + n - 12, "_proj.weight");
}

static const char *torch_dtype(st_dtype t) {
    return t == ST_BF16 ? "bfloat16" : t == ST_F16 ? "float16" : "float32";
}

/* A float as Python's repr writes it (json.dumps of the float that .item() gives): the fewest
 * digits that read back to the same double, ".0" when that looks like an integer. */
static void python_float(char *buf, size_t size, float f) {
    double d = f;
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, size, "%.*g", p, d);
        if (strtod(buf, NULL) == d) break;
    }
    if (!strpbrk(buf, ".en")) strncat(buf, ".0", size - strlen(buf) - 1);
}

ft_status model_quantize_bnb4(const char *in_dir, const char *out_dir, quant4_type type,
                              int blocksize, int double_quant, ft_error *err) {
    if (blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1)))
        return ft_error_set(err, FT_ERR_INPUT, "option --blocksize",
                            "bitsandbytes uses 32, 64 (its default), 128, ..., 4096",
                            "block size %d is not a power of two between 32 and 4096", blocksize);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", in_dir);
    cJSON *cfg;
    ft_status st = json_load_file(path, &cfg, err);
    if (st) return st;
    if (cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config")) {
        cJSON_Delete(cfg);
        return ft_error_set(err, FT_ERR_INPUT, path, "quantize the full-precision model",
                            "the model is already quantized (field \"quantization_config\")");
    }
    st_set *in = NULL;
    if ((st = st_open_dir(in_dir, &in, err))) {
        cJSON_Delete(cfg);
        return st;
    }
    int nt = st_count(in);
    void **bufs = calloc((size_t)nt * PARTS, sizeof *bufs);
    st_writer *w = st_writer_new();
    if (!bufs || !w) st = ft_error_set(err, FT_ERR_RUNTIME, in_dir, NULL, "out of memory");
    const float *code = quant4_code(type), *code8 = quant8_dynamic_code();
    int64_t sixteen = 16, n256 = 256;
    for (int i = 0; i < nt && !st; i++) {
        const st_tensor *t = st_at(in, i);
        if (!is_linear_weight(t->name) || t->ndim != 2 ||
            !(t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16)) {
            st = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
            continue;
        }
        size_t n = (size_t)t->shape[0] * (size_t)t->shape[1], nb = quant4_blocks(n, blocksize),
               nn = quant4_blocks(nb, QUANT8_BLOCK);
        void **b = bufs + (size_t)PARTS * i;
        float *x = b[0] = malloc(n * sizeof(float));
        uint8_t *packed = b[1] = malloc(quant4_packed_bytes(n));
        float *absmax = b[2] = malloc(nb * sizeof(float));
        uint8_t *codes = b[3] = malloc(nb);
        float *nested = b[4] = malloc(nn * sizeof(float));
        char *state = b[5] = malloc(512);
        char(*names)[320] = b[6] = malloc(5 * sizeof *names);
        if (!x || !packed || !absmax || !codes || !nested || !state || !names) {
            st = ft_error_set(err, FT_ERR_RUNTIME, t->name, NULL, "out of memory");
            break;
        }
        if ((st = st_read_f32(in, t->name, 2, t->shape, x, err))) break;
        quant4_quantize(type, x, n, blocksize, packed, absmax);
        float offset = 0;
        if (double_quant) quant4_double_quant(absmax, nb, codes, nested, &offset);
        /* the JSON bitsandbytes packs into the quant_state tensor (Python's json.dumps format,
         * keys in QuantState.as_dict order) */
        int sl = snprintf(state, 512,
                          "{\"quant_type\": \"%s\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": "
                          "[%lld, %lld]",
                          quant4_name(type), blocksize, torch_dtype(t->dtype),
                          (long long)t->shape[0], (long long)t->shape[1]);
        if (double_quant) {
            char off[40];
            python_float(off, sizeof off, offset);
            sl += snprintf(state + sl, 512 - (size_t)sl,
                           ", \"nested_blocksize\": %d, \"nested_dtype\": \"float32\", "
                           "\"nested_offset\": %s",
                           QUANT8_BLOCK, off);
        }
        sl += snprintf(state + sl, 512 - (size_t)sl, "}");
        int64_t shp[2] = {(int64_t)quant4_packed_bytes(n), 1}, sha = (int64_t)nb,
                shn = (int64_t)nn, shs = sl;
        snprintf(names[0], 320, "%s.absmax", t->name);
        snprintf(names[1], 320, "%s.quant_map", t->name);
        snprintf(names[2], 320, "%s.quant_state.bitsandbytes__%s", t->name, quant4_name(type));
        snprintf(names[3], 320, "%s.nested_absmax", t->name);
        snprintf(names[4], 320, "%s.nested_quant_map", t->name);
        st = st_writer_add(w, t->name, ST_U8, 2, shp, packed, err);
        if (!st && double_quant) st = st_writer_add(w, names[0], ST_U8, 1, &sha, codes, err);
        if (!st && !double_quant) st = st_writer_add(w, names[0], ST_F32, 1, &sha, absmax, err);
        if (!st && double_quant) st = st_writer_add(w, names[3], ST_F32, 1, &shn, nested, err);
        if (!st && double_quant) st = st_writer_add(w, names[4], ST_F32, 1, &n256, code8, err);
        if (!st) st = st_writer_add(w, names[1], ST_F32, 1, &sixteen, code, err);
        if (!st) st = st_writer_add(w, names[2], ST_U8, 1, &shs, state, err);
        free(x); /* not referenced by the writer */
        b[0] = NULL;
    }
    if (!st) st = make_dirs(out_dir, err);
    if (!st) {
        snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
        st = st_writer_save(w, path, err);
    }
    if (!st) {
        cJSON *q = cJSON_CreateObject();
        cJSON_AddBoolToObject(q, "_load_in_4bit", 1);
        cJSON_AddBoolToObject(q, "_load_in_8bit", 0);
        cJSON_AddStringToObject(q, "bnb_4bit_compute_dtype", "float32");
        cJSON_AddStringToObject(q, "bnb_4bit_quant_storage", "uint8");
        cJSON_AddStringToObject(q, "bnb_4bit_quant_type", quant4_name(type));
        cJSON_AddBoolToObject(q, "bnb_4bit_use_double_quant", double_quant != 0);
        cJSON_AddBoolToObject(q, "llm_int8_enable_fp32_cpu_offload", 0);
        cJSON_AddBoolToObject(q, "llm_int8_has_fp16_weight", 0);
        cJSON_AddNullToObject(q, "llm_int8_skip_modules");
        cJSON_AddRawToObject(q, "llm_int8_threshold", "6.0"); /* a float for transformers */
        cJSON_AddBoolToObject(q, "load_in_4bit", 1);
        cJSON_AddBoolToObject(q, "load_in_8bit", 0);
        cJSON_AddStringToObject(q, "quant_method", "bitsandbytes");
        cJSON_AddItemToObject(cfg, "quantization_config", q);
        char *text = cJSON_Print(cfg);
        snprintf(path, sizeof path, "%s/config.json", out_dir);
        st = atomic_write_file(path, text, strlen(text), err);
        free(text);
    }
    st_writer_free(w);
    for (int i = 0; bufs && i < PARTS * nt; i++) free(bufs[i]);
    free(bufs);
    st_close(in);
    cJSON_Delete(cfg);
    return st;
}
