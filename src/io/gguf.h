/*
 * gguf.h: reading GGUF files (versions 2 and 3), the single-file model format of ggml and
 * llama.cpp.
 *
 * Format (ggml's docs/gguf.md; all little-endian, fields packed without alignment):
 *   header     "GGUF" (4 bytes), u32 version, u64 tensor_count, u64 metadata_kv_count
 *   metadata   kv_count times: string key, u32 value type, value
 *   tensors    tensor_count times: string name, u32 n_dims, u64 dims[n_dims] (ne[0] first: the
 *              length of a row), u32 ggml type, u64 offset (relative to the data section)
 *   padding    to a multiple of the alignment (metadata `general.alignment`, u32, default 32)
 *   data       each tensor at its offset, itself a multiple of the alignment
 * A string is u64 length + that many bytes (UTF-8, no terminating NUL). A value is one of u8 i8
 * u16 i16 u32 i32 f32 bool(1 byte) string, u64 i64 f64, or an array: u32 element type, u64
 * count, the elements.
 *
 * gguf_open maps the file read-only and checks everything before returning: every length and
 * count against the bytes left, every value type and tensor type known, bools 0 or 1, no
 * arrays of arrays, no repeated key or tensor name, at most 4 dims, row length a multiple of the
 * type's block, each tensor's bytes inside the data section, aligned, and not overlapping
 * another's. Any violation is an FT_ERR_INPUT naming the file and the key or tensor. Strings and
 * tensor data stay in the mapping; nothing is copied but the keys and names.
 */
#ifndef FT_IO_GGUF_H
#define FT_IO_GGUF_H

#include "ftune.h"

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types, as stored. */
typedef enum gguf_vtype {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STR = 8,
    GGUF_ARR = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
    GGUF_VTYPE_COUNT
} gguf_vtype;

/* A string in the mapping: n bytes at p, not NUL-terminated. */
typedef struct gguf_str {
    const char *p;
    size_t n;
} gguf_str;

typedef struct gguf_kv {
    const char *key;      /* NUL-terminated copy */
    gguf_vtype type;      /* GGUF_ARR for arrays */
    gguf_vtype elem;      /* arrays: the element type; otherwise == type */
    uint64_t count;       /* arrays: number of elements; otherwise 1 */
    const void *data;     /* fixed-size values: the first one (unaligned: use the getters) */
    const gguf_str *strs; /* GGUF_STR values and string arrays: count strings */
} gguf_kv;

typedef struct gguf_tensor {
    const char *name; /* NUL-terminated copy */
    uint32_t type;    /* ggml type id (ops/ggml_quants.h) */
    int ndim;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] varies fastest (the row); unused dims are 1 */
    uint64_t nelem;
    uint64_t offset;  /* in the data section */
    const void *data; /* into the mapping */
    size_t nbytes;
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* 1 when path is a regular file named *.gguf (any case) or starting with the magic "GGUF": what
 * --model and tok_load take for a GGUF file (gguf_open then says what is wrong with a bad one). */
int gguf_is_file(const char *path);
ft_status gguf_open(const char *path, gguf_file **out, ft_error *err);
void gguf_close(gguf_file *g);

const char *gguf_path(const gguf_file *g);
uint32_t gguf_version(const gguf_file *g);
size_t gguf_alignment(const gguf_file *g);
const char *gguf_vtype_name(gguf_vtype t); /* "u32", "string", ... */

/* Metadata, in file order, and by key (NULL when absent). */
int gguf_kv_count(const gguf_file *g);
const gguf_kv *gguf_kv_at(const gguf_file *g, int i);
const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key);

/* Typed getters. The key must exist with a compatible type, else FT_ERR_INPUT naming the file and
 * the key and saying what was found. Integer getters accept any integer type whose value fits
 * (u32 from a u8, a non-negative i64, ...); f32 accepts f32 and f64; bool only bool; string
 * returns the bytes in the mapping. Test gguf_find_kv first for optional keys. */
ft_status gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out, ft_error *err);
ft_status gguf_get_i32(const gguf_file *g, const char *key, int32_t *out, ft_error *err);
ft_status gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out, ft_error *err);
ft_status gguf_get_f32(const gguf_file *g, const char *key, float *out, ft_error *err);
ft_status gguf_get_bool(const gguf_file *g, const char *key, int *out, ft_error *err);
ft_status gguf_get_str(const gguf_file *g, const char *key, gguf_str *out, ft_error *err);
/* An array whose elements have type elem (GGUF_STR, GGUF_F32, ...; for integer elements any
 * integer type is accepted and gguf_arr_int reads them). */
ft_status gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype elem, const gguf_kv **out,
                       ft_error *err);

/* Element i of a fixed-size array (or the value of a scalar, i = 0): any integer type as int64
 * (u64 above INT64_MAX saturates), f32 / f64 as double, bool as 0 / 1; 0 for strings and for i
 * past the end. */
int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i);
double gguf_arr_float(const gguf_kv *kv, uint64_t i);
int gguf_vtype_is_int(gguf_vtype t);

/* Tensors, in file order, and by name (binary search; NULL when absent). */
int gguf_tensor_count(const gguf_file *g);
const gguf_tensor *gguf_tensor_at(const gguf_file *g, int i);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);

/* Values first .. first+n-1 (flattened, storage order) of t as fp32. first and n must be whole
 * blocks of t's type (a row always is). FT_ERR_INPUT naming the tensor when its type is one ftune
 * does not dequantize, or the range is not whole blocks inside the tensor. */
ft_status gguf_read_f32(const gguf_file *g, const gguf_tensor *t, uint64_t first, uint64_t n,
                        float *dst, ft_error *err);

#endif
