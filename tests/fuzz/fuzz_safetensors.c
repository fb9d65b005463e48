/*
 * fuzz_safetensors.c: libFuzzer harness for the safetensors reader (src/io/safetensors.c).
 *
 * The input is a whole .safetensors file (8-byte header length, JSON header, data buffer). It is
 * written to a scratch file and opened with st_open. When the file is accepted, every tensor is
 * checked against the reader's own promises (at most ST_MAX_DIMS dims, nbytes = product(shape) x
 * dtype size, nbytes within the file, st_find finds it by name) and read with st_read_f32 with its
 * own shape (F32/F16/BF16 succeed, other dtypes must fail cleanly) and once with a wrong shape
 * (must fail cleanly); every byte of its data is read so that a tensor pointing outside the
 * mapping faults here. A broken promise aborts, which libFuzzer reports as a crash.
 */
#include "fuzz_common.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("model.safetensors", data, size);
    st_set *s = NULL;
    ft_error err;
    if (st_open(path, &s, &err)) {
        if (err.status != FT_ERR_INPUT && err.status != FT_ERR_RUNTIME) abort();
        return 0;
    }
    (void)st_metadata(s, "format");
    for (int i = 0; i < st_count(s); i++) {
        const st_tensor *t = st_at(s, i);
        if (!t || t->ndim < 0 || t->ndim > ST_MAX_DIMS) abort();
        size_t esz = st_dtype_size(t->dtype), n = 1;
        if (!esz) abort();
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) abort();
            if (__builtin_mul_overflow(n, (size_t)t->shape[d], &n)) abort();
        }
        size_t nb;
        if (__builtin_mul_overflow(n, esz, &nb) || nb != t->nbytes || nb > size) abort();
        if (st_find(s, t->name) != t) abort();
        unsigned sum = 0;
        for (size_t b = 0; b < t->nbytes; b++) sum += ((const volatile uint8_t *)t->data)[b];
        (void)sum;
        float *dst = malloc(n ? n * sizeof(float) : 1);
        if (!dst) abort();
        ft_status st = st_read_f32(s, t->name, t->ndim, t->shape, dst, &err);
        int floaty = t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16;
        if ((st == FT_OK) != floaty) abort();
        int64_t wrong[ST_MAX_DIMS + 1];
        for (int d = 0; d < t->ndim; d++) wrong[d] = t->shape[d];
        wrong[t->ndim] = 1; /* one more dim than the tensor has: must be refused */
        if (st_read_f32(s, t->name, t->ndim + 1, wrong, dst, &err) == FT_OK) abort();
        free(dst);
    }
    st_close(s);
    return 0;
}
