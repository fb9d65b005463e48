/*
 * gguf_write.h: writing GGUF files (version 3, little-endian), streamed.
 *
 * The layout is the one gguf.h describes for the reader: header, metadata, tensor infos,
 * padding to the alignment, then the data section with every tensor at an aligned offset.
 * Everything before the data is known once the metadata and the tensor shapes are: add the keys
 * and the tensor infos (gguf_writer_kv_*, gguf_writer_add_tensor), call gguf_writer_begin, which
 * writes the header part to a temporary file (io/atomic.h), then give each tensor's bytes in the
 * order the tensors were added, in as many pieces as convenient (gguf_writer_put), and
 * gguf_writer_finish renames the file into place after checking every tensor got exactly its
 * bytes. The writer never holds tensor data: memory is the metadata (a tokenizer's strings) and
 * the tensor table.
 *
 * What a valid file looks like is taken from gguf-py 0.19.0's GGUFWriter (facts only): keys in
 * the order added, general.alignment honoured when set (u32, a power of two), offsets relative to
 * the data section and padded with zero bytes, tensor dims ne[0] first (the row length).
 */
#ifndef FT_IO_GGUF_WRITE_H
#define FT_IO_GGUF_WRITE_H

#include "ftune.h"
#include "io/gguf.h"

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
/* Frees the writer; a file begun and not finished is removed (nothing partial is left). */
void gguf_writer_free(gguf_writer *w);

/* Metadata, written in the order added. Keys must be unique (checked at begin). */
void gguf_writer_kv_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_writer_kv_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_writer_kv_f32(gguf_writer *w, const char *key, float v);
void gguf_writer_kv_bool(gguf_writer *w, const char *key, int v);
void gguf_writer_kv_str(gguf_writer *w, const char *key, const char *v);
void gguf_writer_kv_strn(gguf_writer *w, const char *key, const char *v, size_t n);
/* Arrays: n strings (each NUL-terminated), n i32, n f32. */
void gguf_writer_kv_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n);
void gguf_writer_kv_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n);
void gguf_writer_kv_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n);

/* A key read from another file (io/gguf.h), copied with its type and value(s). */
void gguf_writer_kv_copy(gguf_writer *w, const gguf_kv *kv);

/* A tensor of ggml type `type` (ops/ggml_quants.h) with ndim dims, ne[0] the row length.
 * FT_ERR_INPUT when the name repeats, the type is unknown or ne[0] is not a whole number of
 * blocks. */
ft_status gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type, int ndim,
                                 const int64_t *ne, ft_error *err);
/* Bytes of tensor i as laid out in the file. */
uint64_t gguf_writer_tensor_bytes(const gguf_writer *w, int i);

/* Write header, metadata and tensor infos to path's temporary file. */
ft_status gguf_writer_begin(gguf_writer *w, const char *path, ft_error *err);
/* The next n bytes of the tensors, in order (a piece may not cross into the next tensor). */
ft_status gguf_writer_put(gguf_writer *w, const void *data, size_t n, ft_error *err);
/* Check that every tensor was written whole, then flush, fsync and rename into place. */
ft_status gguf_writer_finish(gguf_writer *w, ft_error *err);

#endif
