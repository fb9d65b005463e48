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
 * norms, lm_head) are copied unchanged, and so are the tokenizer files and generation_config.json
 * (model_copy_tokenizer_files), as save_pretrained of the model and its tokenizer would write
 * them. The output folder is never the input folder, and a non-empty one is
 * refused unless overwrite (model_out_check).
 *
 * The output is streamed (io/safetensors.h, st_writer_begin): every output size follows from the
 * input shapes, except the quant_state JSON's length with double quantization, whose
 * nested_offset (the mean of the absmax values) is printed with as many digits as it needs; for
 * that, a first pass reads each weight once to compute its offset. The header then goes first,
 * and each tensor is read, quantized and written a chunk of QCHUNK values at a time (a chunk is
 * a whole number of blocks, so its codes and absmax are those of the whole tensor), with the
 * source pages given back after each chunk (st_read_range_f32, st_release_pages). Peak memory is
 * a chunk plus one weight's absmax, not the model: an 8B model no longer needs its size in RAM.
 */
#include "model/quantize.h"
#include "io/atomic.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/init.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values per quantization chunk: a multiple of every block size (32 .. 4096) and even, so a
 * chunk's packed bytes never share a byte with the next chunk's. 4 MB of fp32. */
#define QCHUNK ((size_t)1 << 20)
/* Bytes per chunk of a tensor copied unchanged. */
#define COPY_CHUNK ((size_t)4 << 20)

/* What the header needs to know about one quantized weight. */
typedef struct qweight {
    int quantized;
    size_t n, nb, nn; /* values, absmax blocks, nested blocks */
    float offset;     /* double quantization: the absmax mean */
    char state[512];  /* the quant_state JSON */
    int state_len;
    char names[5][320]; /* absmax, quant_map, quant_state, nested_absmax, nested_quant_map */
} qweight;
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

int bnb4_state_json(char *buf, size_t size, quant4_type type, int blocksize, const char *dtype,
                    int64_t rows, int64_t cols, int double_quant, float offset) {
    /* the JSON bitsandbytes packs into the quant_state tensor (Python's json.dumps format, keys
     * in QuantState.as_dict order) */
    int sl = snprintf(buf, size,
                      "{\"quant_type\": \"%s\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": "
                      "[%lld, %lld]",
                      quant4_name(type), blocksize, dtype, (long long)rows, (long long)cols);
    if (double_quant) {
        char off[40];
        python_float(off, sizeof off, offset);
        sl += snprintf(buf + sl, size - (size_t)sl,
                       ", \"nested_blocksize\": %d, \"nested_dtype\": \"float32\", "
                       "\"nested_offset\": %s",
                       QUANT8_BLOCK, off);
    }
    sl += snprintf(buf + sl, size - (size_t)sl, "}");
    return sl;
}

/* Quantize t a chunk at a time into absmax (all its blocks); with w, write each chunk's packed
 * codes to it. x holds QCHUNK floats, packed QCHUNK / 2 bytes. */
static ft_status quantize_chunks(const st_tensor *t, quant4_type type, int blocksize, float *x,
                                 uint8_t *packed, float *absmax, st_writer *w, ft_error *err) {
    size_t n = (size_t)t->shape[0] * (size_t)t->shape[1];
    for (size_t first = 0; first < n; first += QCHUNK) {
        size_t m = n - first < QCHUNK ? n - first : QCHUNK;
        if (st_read_range_f32(t, first, m, x))
            return ft_error_set(err, FT_ERR_INPUT, t->name, NULL, "not F32, F16 or BF16");
        quant4_quantize(type, x, m, blocksize, packed, absmax + first / (size_t)blocksize);
        if (w) {
            ft_status st = st_writer_put(w, t->name, packed, quant4_packed_bytes(m), err);
            if (st) return st;
        }
    }
    return FT_OK;
}

/* The bytes of t unchanged, a chunk at a time, each chunk's source pages given back after. */
static ft_status copy_chunks(const st_tensor *t, st_writer *w, ft_error *err) {
    for (size_t at = 0; at < t->nbytes; at += COPY_CHUNK) {
        size_t k = t->nbytes - at < COPY_CHUNK ? t->nbytes - at : COPY_CHUNK;
        st_tensor piece = *t;
        piece.data = (const uint8_t *)t->data + at;
        piece.nbytes = k;
        ft_status st = st_writer_put(w, t->name, piece.data, k, err);
        if (st) return st;
        st_release_pages(&piece);
    }
    return FT_OK;
}

static int quantizable(const st_tensor *t) {
    return is_linear_weight(t->name) && t->ndim == 2 &&
           (t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16);
}

ft_status model_quantize_bnb4(const char *in_dir, const char *out_dir, quant4_type type,
                              int blocksize, int double_quant, int overwrite, ft_error *err) {
    ft_status st0 = model_out_check(out_dir, in_dir, overwrite, err);
    if (st0) return st0;
    if (blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1)))
        return ft_error_set(err, FT_ERR_INPUT, "option --quant-blocksize",
                            "bitsandbytes uses 32, 64 (its default), 128, ..., 4096",
                            "block size %d is not a power of two between 32 and 4096", blocksize);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", in_dir);
    cJSON *cfg;
    ft_status st = model_dir_check(in_dir, err);
    if (st) return st;
    st = json_load_file(path, &cfg, err);
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
    size_t max_nb = 1;
    for (int i = 0; i < nt; i++) {
        const st_tensor *t = st_at(in, i);
        if (!quantizable(t)) continue;
        size_t nb = quant4_blocks((size_t)t->shape[0] * (size_t)t->shape[1], blocksize);
        if (nb > max_nb) max_nb = nb;
    }
    /* the working set: one chunk, and one weight's absmax, codes and nested absmax */
    qweight *q = calloc((size_t)nt > 0 ? (size_t)nt : 1, sizeof *q);
    float *x = malloc(QCHUNK * sizeof(float)), *absmax = malloc(max_nb * sizeof(float)),
          *nested = malloc(quant4_blocks(max_nb, QUANT8_BLOCK) * sizeof(float));
    uint8_t *packed = malloc(QCHUNK / 2), *codes = malloc(max_nb);
    st_writer *w = st_writer_new();
    if (!q || !x || !absmax || !nested || !packed || !codes || !w)
        st = ft_error_set(err, FT_ERR_RUNTIME, in_dir, NULL, "out of memory");
    const float *code = quant4_code(type), *code8 = quant8_dynamic_code();
    int64_t sixteen = 16, n256 = 256;

    /* Pass 1: declare every output tensor (double quantization reads each weight here for its
     * offset, whose printed length the header needs). */
    for (int i = 0; i < nt && !st; i++) {
        const st_tensor *t = st_at(in, i);
        qweight *g = &q[i];
        if (!quantizable(t)) {
            st = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, NULL, err);
            continue;
        }
        g->quantized = 1;
        g->n = (size_t)t->shape[0] * (size_t)t->shape[1];
        g->nb = quant4_blocks(g->n, blocksize);
        g->nn = quant4_blocks(g->nb, QUANT8_BLOCK);
        if (double_quant) {
            st = quantize_chunks(t, type, blocksize, x, packed, absmax, NULL, err);
            if (st) break;
            quant4_double_quant(absmax, g->nb, codes, nested, &g->offset);
        }
        int sl = bnb4_state_json(g->state, sizeof g->state, type, blocksize, torch_dtype(t->dtype),
                                 t->shape[0], t->shape[1], double_quant, g->offset);
        g->state_len = sl;
        int64_t shp[2] = {(int64_t)quant4_packed_bytes(g->n), 1}, sha = (int64_t)g->nb,
                shn = (int64_t)g->nn, shs = sl;
        snprintf(g->names[0], 320, "%s.absmax", t->name);
        snprintf(g->names[1], 320, "%s.quant_map", t->name);
        snprintf(g->names[2], 320, "%s.quant_state.bitsandbytes__%s", t->name, quant4_name(type));
        snprintf(g->names[3], 320, "%s.nested_absmax", t->name);
        snprintf(g->names[4], 320, "%s.nested_quant_map", t->name);
        st = st_writer_add(w, t->name, ST_U8, 2, shp, NULL, err);
        if (!st)
            st = st_writer_add(w, g->names[0], double_quant ? ST_U8 : ST_F32, 1, &sha, NULL, err);
        if (!st && double_quant) st = st_writer_add(w, g->names[3], ST_F32, 1, &shn, NULL, err);
        if (!st && double_quant) st = st_writer_add(w, g->names[4], ST_F32, 1, &n256, NULL, err);
        if (!st) st = st_writer_add(w, g->names[1], ST_F32, 1, &sixteen, NULL, err);
        if (!st) st = st_writer_add(w, g->names[2], ST_U8, 1, &shs, NULL, err);
    }

    /* Pass 2: the header, then each tensor where it lies. */
    if (!st) st = make_dirs(out_dir, err);
    if (!st) {
        snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
        st = st_writer_begin(w, path, err);
    }
    for (int i = 0; i < nt && !st; i++) {
        const st_tensor *t = st_at(in, i);
        const qweight *g = &q[i];
        if (!g->quantized) {
            st = copy_chunks(t, w, err);
            continue;
        }
        st = quantize_chunks(t, type, blocksize, x, packed, absmax, w, err);
        if (!st && double_quant) {
            float offset;
            quant4_double_quant(absmax, g->nb, codes, nested, &offset);
            if (memcmp(&offset, &g->offset, sizeof offset))
                st = ft_error_set(err, FT_ERR_RUNTIME, t->name,
                                  "the input file changed while being read?",
                                  "the double-quantization offset differs between two passes");
            if (!st) st = st_writer_put(w, g->names[0], codes, g->nb, err);
            if (!st) st = st_writer_put(w, g->names[3], nested, g->nn * sizeof(float), err);
            if (!st) st = st_writer_put(w, g->names[4], code8, 256 * sizeof(float), err);
        } else if (!st) {
            st = st_writer_put(w, g->names[0], absmax, g->nb * sizeof(float), err);
        }
        if (!st) st = st_writer_put(w, g->names[1], code, 16 * sizeof(float), err);
        if (!st) st = st_writer_put(w, g->names[2], g->state, (size_t)g->state_len, err);
    }
    if (!st) st = st_writer_finish(w, err);
    if (!st) {
        cJSON *qc = cJSON_CreateObject();
        cJSON_AddBoolToObject(qc, "_load_in_4bit", 1);
        cJSON_AddBoolToObject(qc, "_load_in_8bit", 0);
        cJSON_AddStringToObject(qc, "bnb_4bit_compute_dtype", "float32");
        cJSON_AddStringToObject(qc, "bnb_4bit_quant_storage", "uint8");
        cJSON_AddStringToObject(qc, "bnb_4bit_quant_type", quant4_name(type));
        cJSON_AddBoolToObject(qc, "bnb_4bit_use_double_quant", double_quant != 0);
        cJSON_AddBoolToObject(qc, "llm_int8_enable_fp32_cpu_offload", 0);
        cJSON_AddBoolToObject(qc, "llm_int8_has_fp16_weight", 0);
        cJSON_AddNullToObject(qc, "llm_int8_skip_modules");
        cJSON_AddRawToObject(qc, "llm_int8_threshold", "6.0"); /* a float for transformers */
        cJSON_AddBoolToObject(qc, "load_in_4bit", 1);
        cJSON_AddBoolToObject(qc, "load_in_8bit", 0);
        cJSON_AddStringToObject(qc, "quant_method", "bitsandbytes");
        cJSON_AddItemToObject(cfg, "quantization_config", qc);
        char *text = cJSON_Print(cfg);
        snprintf(path, sizeof path, "%s/config.json", out_dir);
        st = atomic_write_file(path, text, strlen(text), err);
        free(text);
    }
    /* what the tokenizer's save_pretrained writes, and generation_config.json, so the folder
     * trains and loads as the input does */
    if (!st) st = model_copy_tokenizer_files(in_dir, out_dir, 1, NULL, err);
    st_writer_free(w); /* after a failure: removes the temp file */
    free(q);
    free(x);
    free(absmax);
    free(nested);
    free(packed);
    free(codes);
    st_close(in);
    cJSON_Delete(cfg);
    return st;
}
