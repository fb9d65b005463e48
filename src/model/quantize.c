/*
 * quantize.c: a Hugging Face model folder -> the same model with its linear layers in
 * bitsandbytes 4-bit form, laid out as transformers saves a model loaded with
 * BitsAndBytesConfig(load_in_4bit=True): for each "model.layers.L.<...>_proj.weight",
 *   NAME            U8  [ceil(n/2), 1]   packed codes (ops/quant4.c)
 *   NAME.absmax     F32 [blocks]
 *   NAME.quant_map  F32 [16]             the code values
 *   NAME.quant_state.bitsandbytes__<nf4|fp4>  U8 [..]  JSON: quant_type, blocksize, dtype, shape
 * and config.json gains the "quantization_config" transformers writes. Other tensors (embeddings,
 * norms, lm_head) are copied unchanged. Double quantization of absmax is not done yet.
 */
#include "model/quantize.h"
#include "io/atomic.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <stdlib.h>
#include <string.h>

static int is_linear_weight(const char *name) {
    size_t n = strlen(name);
    return !strncmp(name, "model.layers.", 13) && n > 12 && !strcmp(name + n - 12, "_proj.weight");
}

static const char *torch_dtype(st_dtype t) {
    return t == ST_BF16 ? "bfloat16" : t == ST_F16 ? "float16" : "float32";
}

ft_status model_quantize_bnb4(const char *in_dir, const char *out_dir, quant4_type type,
                              int blocksize, ft_error *err) {
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
    void **bufs = calloc((size_t)nt * 4, sizeof *bufs);
    char (*names)[320] = calloc((size_t)nt * 3, sizeof *names);
    st_writer *w = st_writer_new();
    const float *code = quant4_code(type);
    int64_t sixteen = 16;
    for (int i = 0; i < nt && !st; i++) {
        const st_tensor *t = st_at(in, i);
        if (!is_linear_weight(t->name) || t->ndim != 2 ||
            !(t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16)) {
            st = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
            continue;
        }
        size_t n = (size_t)t->shape[0] * (size_t)t->shape[1];
        float *x = malloc(n * sizeof(float));
        uint8_t *packed = malloc(quant4_packed_bytes(n));
        float *absmax = malloc(quant4_blocks(n, blocksize) * sizeof(float));
        char *state = malloc(256);
        bufs[4 * i] = x, bufs[4 * i + 1] = packed, bufs[4 * i + 2] = absmax, bufs[4 * i + 3] = state;
        if (!x || !packed || !absmax || !state) {
            st = ft_error_set(err, FT_ERR_RUNTIME, t->name, NULL, "out of memory");
            break;
        }
        if ((st = st_read_f32(in, t->name, 2, t->shape, x, err))) break;
        quant4_quantize(type, x, n, blocksize, packed, absmax);
        /* the JSON bitsandbytes packs into the quant_state tensor (Python's json.dumps format) */
        int sl = snprintf(state, 256,
                          "{\"quant_type\": \"%s\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": "
                          "[%lld, %lld]}",
                          quant4_name(type), blocksize, torch_dtype(t->dtype),
                          (long long)t->shape[0], (long long)t->shape[1]);
        int64_t shp[2] = {(int64_t)quant4_packed_bytes(n), 1}, sha = (int64_t)quant4_blocks(n, blocksize),
                shs = sl;
        snprintf(names[3 * i], 320, "%s.absmax", t->name);
        snprintf(names[3 * i + 1], 320, "%s.quant_map", t->name);
        snprintf(names[3 * i + 2], 320, "%s.quant_state.bitsandbytes__%s", t->name, quant4_name(type));
        st = st_writer_add(w, t->name, ST_U8, 2, shp, packed, err);
        if (!st) st = st_writer_add(w, names[3 * i], ST_F32, 1, &sha, absmax, err);
        if (!st) st = st_writer_add(w, names[3 * i + 1], ST_F32, 1, &sixteen, code, err);
        if (!st) st = st_writer_add(w, names[3 * i + 2], ST_U8, 1, &shs, state, err);
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
        cJSON_AddBoolToObject(q, "bnb_4bit_use_double_quant", 0);
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
    for (int i = 0; i < 4 * nt; i++) free(bufs[i]);
    free(bufs);
    free(names);
    st_close(in);
    cJSON_Delete(cfg);
    return st;
}
