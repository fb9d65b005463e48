/*
 * gguf_quantize: a driver for tests/peers/test_ggml_quantize.py. Reads an F32 GGUF model, picks
 * each tensor's type with ggml_qplan (the llama_model_quantize rule of FTYPE) and quantizes it
 * with ggml_quantize; writes OUTDIR/tensors.bin (the quantized tensors back to back) and
 * OUTDIR/index.tsv, a line per tensor in the order llama_model_quantize writes them
 * (ggml_quant_order_cmp): name, ggml type id, byte offset in
 * tensors.bin, byte count (0 for a type ggml_quantize does not write, named on stderr).
 *
 *   gguf_quantize MODEL.gguf q4_k_m|q8_0|q4_0|q6_k OUTDIR
 */
#include "io/atomic.h"
#include "io/gguf.h"
#include "ops/ggml_quantize.h"
#include "ops/ggml_quants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(ft_error *err) {
    ft_error_print(err, stderr);
    return 2;
}

static int get_int(const gguf_file *g, const char *arch, const char *suffix, int *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv || !gguf_vtype_is_int(kv->elem)) return -1;
    *out = (int)gguf_arr_int(kv, 0);
    return 0;
}

static int by_llama_order(const void *a, const void *b) {
    return ggml_quant_order_cmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: gguf_quantize MODEL.gguf q4_k_m|q8_0|q4_0|q6_k OUTDIR\n");
        return 2;
    }
    int ftype = ggml_ftype_parse(argv[2]);
    if (ftype < 0) {
        fprintf(stderr, "gguf_quantize: unknown ftype '%s' (q4_k_m, q8_0, q4_0, q6_k)\n", argv[2]);
        return 2;
    }
    ft_error err = {0};
    gguf_file *g = NULL;
    if (gguf_open(argv[1], &g, &err)) return fail(&err);
    gguf_str a;
    if (gguf_get_str(g, "general.architecture", &a, &err)) return fail(&err);
    char arch[64];
    snprintf(arch, sizeof arch, "%.*s", (int)(a.n < 63 ? a.n : 63), a.p);
    int n_layer = 0, n_head = 0, n_head_kv = 0;
    if (get_int(g, arch, "block_count", &n_layer)) {
        fprintf(stderr, "%s: no integer %s.block_count\n", argv[1], arch);
        return 2;
    }
    get_int(g, arch, "attention.head_count", &n_head);
    n_head_kv = n_head;
    get_int(g, arch, "attention.head_count_kv", &n_head_kv);

    int nt = gguf_tensor_count(g);
    const char **names = calloc((size_t)nt + 1, sizeof *names);
    if (!names) return 1;
    for (int i = 0; i < nt; i++)
        names[i] = gguf_tensor_at(g, i)->name;
    ggml_qplan plan;
    ggml_qplan_init(&plan, ftype, arch, n_layer, n_head, n_head_kv, names, (size_t)nt);

    char path[4096];
    atomic_file data, index;
    snprintf(path, sizeof path, "%s/tensors.bin", argv[3]);
    if (atomic_open(&data, path, &err)) return fail(&err);
    snprintf(path, sizeof path, "%s/index.tsv", argv[3]);
    if (atomic_open(&index, path, &err)) return fail(&err);
    /* in llama_model_quantize's order (the order of its output file) */
    const char **order = calloc((size_t)nt + 1, sizeof *order);
    if (!order) return 1;
    memcpy(order, names, (size_t)nt * sizeof *order);
    qsort(order, (size_t)nt, sizeof *order, by_llama_order);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_find_tensor(g, order[i]);
        if (t->type != GGML_TYPE_F32) {
            fprintf(stderr, "%s: tensor %s is %s, expected F32 (hint: export with --dtype f32)\n",
                    argv[1], t->name, ggml_type_info(t->type)->name);
            return 2;
        }
        uint32_t type = ggml_qplan_type(&plan, t->name, t->ndim, t->ne);
        const ggml_type_traits *tr = ggml_type_info(type);
        size_t bytes = t->nelem / (size_t)tr->block_values * tr->block_bytes;
        void *out = malloc(bytes ? bytes : 1);
        float *src = malloc(t->nelem ? t->nelem * 4 : 4);
        if (!out || !src) return 1;
        memcpy(src, t->data, t->nelem * 4);
        if (ggml_quantize(type, src, out, t->nelem) != bytes) {
            /* a type the rule picks but ftune does not write (Q5_K of a 70B model's attn_v):
             * listed with no bytes, so the type can still be compared */
            fprintf(stderr, "%s: tensor %s: type %s is not written by ggml_quantize\n", argv[1],
                    t->name, tr->name);
            bytes = 0;
        }
        atomic_write(&data, out, bytes);
        atomic_printf(&index, "%s\t%u\t%llu\t%zu\n", t->name, (unsigned)type,
                      (unsigned long long)off, bytes);
        off += bytes;
        free(out);
        free(src);
    }
    if (atomic_close(&data, &err) || atomic_close(&index, &err)) return fail(&err);
    free(order);
    free(names);
    gguf_close(g);
    return 0;
}
