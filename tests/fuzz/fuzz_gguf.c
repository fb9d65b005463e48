/*
 * fuzz_gguf.c: libFuzzer harness for the GGUF reader (src/io/gguf.c) and the GGUF
 * dequantization (src/ops/ggml_quants.c).
 *
 * The input is a whole .gguf file, written to a scratch file and opened with gguf_open. When it
 * is refused, the status must be FT_ERR_INPUT or FT_ERR_RUNTIME. When it is accepted, the
 * reader's promises are checked: every metadata value is read through the getters (each typed
 * getter on each key either succeeds or fails cleanly; every element of every array and every
 * byte of every string is touched), every tensor has at most GGUF_MAX_DIMS dims, an element
 * count equal to the product of its dims and a byte size that fits the file, is found by name,
 * and has every byte of its data read; tensors of a type ftune dequantizes are dequantized
 * whole, and a range that is not whole blocks must be refused. Then the file is read as a model
 * (`--model FILE.gguf`, model/gguf_model.c): its config (every size positive, Hkv divides H,
 * rot_dim even and within the head, inv_freq finite and >= 0, windows >= 0, as fuzz_config), and
 * the whole model with the default options (every block's norms and linear layers present). A
 * broken promise aborts, which libFuzzer reports as a crash; reading outside the mapping faults.
 */
#include "fuzz_common.h"
#include "io/gguf.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "ops/ggml_quants.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch(const void *p, size_t n) {
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += ((const volatile uint8_t *)p)[i];
    (void)sum;
}

static void check_kv(const gguf_file *g, const gguf_kv *kv) {
    ft_error err;
    if (gguf_find_kv(g, kv->key) != kv) abort();
    if ((unsigned)kv->type >= GGUF_VTYPE_COUNT || (unsigned)kv->elem >= GGUF_VTYPE_COUNT ||
        kv->elem == GGUF_ARR)
        abort();
    if (kv->type != GGUF_ARR && kv->count != 1) abort();
    for (uint64_t i = 0; i < kv->count; i++) {
        if (kv->elem == GGUF_STR)
            touch(kv->strs[i].p, kv->strs[i].n);
        else if (kv->elem == GGUF_F32 || kv->elem == GGUF_F64)
            (void)gguf_arr_float(kv, i);
        else if (gguf_arr_int(kv, i) < 0 && kv->elem == GGUF_BOOL)
            abort();
    }
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f;
    int b;
    gguf_str s;
    const gguf_kv *a;
    ft_status st[] = {
        gguf_get_u32(g, kv->key, &u32, &err),         gguf_get_i32(g, kv->key, &i32, &err),
        gguf_get_u64(g, kv->key, &u64, &err),         gguf_get_f32(g, kv->key, &f, &err),
        gguf_get_bool(g, kv->key, &b, &err),          gguf_get_str(g, kv->key, &s, &err),
        gguf_get_arr(g, kv->key, GGUF_STR, &a, &err), gguf_get_arr(g, kv->key, GGUF_I32, &a, &err),
    };
    for (size_t i = 0; i < sizeof st / sizeof *st; i++)
        if (st[i] != FT_OK && st[i] != FT_ERR_INPUT) abort();
    if (kv->type == GGUF_STR && (st[5] != FT_OK || s.p != kv->strs[0].p)) abort();
    if (kv->type == GGUF_BOOL && (st[4] != FT_OK || (b != 0 && b != 1))) abort();
}

static void check_tensor(const gguf_file *g, const gguf_tensor *t, size_t size) {
    ft_error err;
    if (t->ndim < 0 || t->ndim > GGUF_MAX_DIMS) abort();
    uint64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] < 0 || (d >= t->ndim && t->ne[d] != 1)) abort();
        if (__builtin_mul_overflow(n, (uint64_t)t->ne[d], &n)) abort();
    }
    const ggml_type_traits *tt = ggml_type_info(t->type);
    if (!tt || n != t->nelem || t->ne[0] % tt->block_values) abort();
    if (t->nelem / (uint64_t)tt->block_values * tt->block_bytes != t->nbytes || t->nbytes > size)
        abort();
    if (t->offset % gguf_alignment(g)) abort();
    if (gguf_find_tensor(g, t->name) != t) abort();
    touch(t->data, t->nbytes);
    float *v = malloc(t->nelem ? t->nelem * sizeof(float) : 1);
    if (!v) abort();
    ft_status st = gguf_read_f32(g, t, 0, t->nelem, v, &err);
    if ((st == FT_OK) != (tt->dequant_row != NULL)) abort();
    if (tt->block_values > 1 && t->nelem &&
        gguf_read_f32(g, t, 1, (uint64_t)tt->block_values, v, &err) == FT_OK)
        abort(); /* not at a block boundary */
    if (gguf_read_f32(g, t, 0, t->nelem + (uint64_t)tt->block_values, v, &err) == FT_OK)
        abort(); /* past the end */
    free(v);
}

/* The file as a model: refused cleanly, or a config and weights the model code can use. */
static void check_model(const char *path) {
    ft_error err;
    model_config cfg;
    if (gguf_config_load(path, &cfg, &err)) {
        if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) abort();
        return;
    }
    if (!cfg.arch || cfg.C < 1 || cfg.I < 1 || cfg.L < 1 || cfg.H < 1 || cfg.Hkv < 1 || cfg.D < 1 ||
        cfg.V < 1 || cfg.H % cfg.Hkv || cfg.rot_dim < 2 || cfg.rot_dim % 2 || cfg.rot_dim > cfg.D ||
        !cfg.window || !cfg.inv_freq || !(cfg.eps > 0))
        abort();
    for (int i = 0; i < cfg.rot_dim / 2; i++)
        if (!isfinite(cfg.inv_freq[i]) || !(cfg.inv_freq[i] >= 0)) abort();
    for (int l = 0; l < cfg.L; l++)
        if (cfg.window[l] < 0) abort();
    model_config_free(&cfg);
    model m;
    if (gguf_model_load(path, NULL, &m, &err)) {
        if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) abort();
        return;
    }
    if (!m.blocks || !m.weights || !m.norm_f || !m.wte.data || !m.lm_head.data) abort();
    for (int l = 0; l < m.cfg.L; l++) {
        const block_weights *b = &m.blocks[l];
        if (!b->ln1 || !b->ln2) abort();
        for (int k = 0; k < LIN_COUNT; k++)
            if (b->lin[k].out && (!b->lin[k].W.data || b->lin[k].W.rows != b->lin[k].out ||
                                  b->lin[k].W.cols != b->lin[k].in))
                abort();
    }
    model_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("model.gguf", data, size);
    gguf_file *g = NULL;
    ft_error err;
    if (gguf_open(path, &g, &err)) {
        if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) abort();
        if (g) abort();
        return 0;
    }
    size_t a = gguf_alignment(g);
    if (!a || (a & (a - 1)) || (gguf_version(g) != 2 && gguf_version(g) != 3)) abort();
    for (int i = 0; i < gguf_kv_count(g); i++)
        check_kv(g, gguf_kv_at(g, i));
    for (int i = 0; i < gguf_tensor_count(g); i++)
        check_tensor(g, gguf_tensor_at(g, i), size);
    if (gguf_kv_at(g, gguf_kv_count(g)) || gguf_tensor_at(g, -1)) abort();
    gguf_close(g);
    check_model(path);
    return 0;
}
