/*
 * safetensors.h: reading and writing the safetensors format.
 *
 * Format (huggingface/safetensors): 8-byte little-endian header length n, then n bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data buffer; offsets are relative to the buffer.
 *
 * Reading mmaps the file and validates the whole header before anything is used: every dtype
 * known, shape x dtype size == end - begin, offsets inside the file, no overlap. A model folder
 * is either model.safetensors or a sharded set listed by model.safetensors.index.json.
 */
#ifndef FT_IO_SAFETENSORS_H
#define FT_IO_SAFETENSORS_H

#include "base/half.h" /* f32_to_bf16 and friends, for readers and writers of F16 / BF16 */
#include "ftune.h"

typedef enum st_dtype {
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_F64,
    ST_I64,
    ST_I32,
    ST_I16,
    ST_I8,
    ST_U8,
    ST_BOOL,
    ST_DTYPE_COUNT
} st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* into the mapping */
    size_t nbytes;
    const char *file; /* the file it came from, for messages */
} st_tensor;

typedef struct st_set st_set; /* one file, or all the shards of a model */

const char *st_dtype_name(st_dtype t);
size_t st_dtype_size(st_dtype t);

/* Open one .safetensors file. */
ft_status st_open(const char *path, st_set **out, ft_error *err);
/* Open a model folder: DIR/model.safetensors, or DIR/model.safetensors.index.json and its shards.
 */
ft_status st_open_dir(const char *dir, st_set **out, ft_error *err);
void st_close(st_set *s);

int st_count(const st_set *s);
const st_tensor *st_at(const st_set *s, int i);
const st_tensor *st_find(const st_set *s, const char *name); /* NULL if absent */
/* Value of a __metadata__ key, or NULL. */
const char *st_metadata(const st_set *s, const char *key);

/* Copy tensor `name` into dst as fp32, converting from F32, F16 or BF16. It must exist and have
 * exactly the given shape; otherwise an FT_ERR_INPUT error names the file, the tensor, the
 * expected and the found shape or dtype. */
ft_status st_read_f32(const st_set *s, const char *name, int ndim, const int64_t *shape, float *dst,
                      ft_error *err);
/* Values first .. first+n-1 of t (flattened) as fp32, from F32, F16 or BF16 (1 for another
 * dtype, dst untouched), then those pages given back (st_release_pages): a tensor converted a
 * slice at a time is never wholly resident. */
int st_read_range_f32(const st_tensor *t, size_t first, size_t n, float *dst);

/* Tensor `name`, which must exist and have exactly the given shape (else the error of
 * st_read_f32). Its data stays in the mapping: *out lives as long as the set. */
ft_status st_find_shaped(const st_set *s, const char *name, int ndim, const int64_t *shape,
                         const st_tensor **out, ft_error *err);
/* The tensor's bytes are not needed for now: drop their pages from memory (madvise
 * MADV_DONTNEED on the read-only mapping), so a loader that converts one tensor at a time never
 * holds the whole checkpoint. Touching the data again reads it back from the file. */
void st_release_pages(const st_tensor *t);
/* A new read-only descriptor on the file t lies in (the caller closes it) and, in *offset,
 * the file offset of t's first byte; -1 when the file cannot be opened. For reading a few rows
 * of a large table with pread(): served by the page cache without mapping pages into the
 * process (a fault on the mapping maps the whole large folio around the row, up to 2 MB). */
int st_open_tensor_file(const st_set *s, const st_tensor *t, long long *offset);
/* Bytes [p, p + n) of a mapped file of the set read into dst with pread(), not through the
 * mapping: only those bytes are read (no fault brings in the pages around them) and none is
 * mapped into the process (--shard-base: a rank reads its slice of each layer). -1: p is not
 * inside one of the set's files, or the read failed. */
int st_pread(const st_set *s, const void *p, size_t n, void *dst);

/* Writer: collect tensors (the data is referenced, not copied, until st_writer_save), then
 * write them atomically (io/atomic.h), with __metadata__ {"format": "pt"} plus any added. */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
/* data NULL: the bytes come later, through st_writer_put. */
ft_status st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim,
                        const int64_t *shape, const void *data, ft_error *err);
void st_writer_meta(st_writer *w, const char *key, const char *value);
ft_status st_writer_save(st_writer *w, const char *path, ft_error *err);
/* Streaming, for output larger than memory: add every tensor first (data NULL), then
 * st_writer_begin writes the header into PATH's temp file; st_writer_put appends n bytes to
 * tensor `name` (each tensor's bytes in order, tensors in any order); st_writer_finish checks
 * that every tensor got all its bytes and renames the file into place. The file is the same,
 * byte for byte, as st_writer_save's. A writer freed between begin and finish removes its
 * temp file. */
ft_status st_writer_begin(st_writer *w, const char *path, ft_error *err);
ft_status st_writer_put(st_writer *w, const char *name, const void *data, size_t n, ft_error *err);
ft_status st_writer_finish(st_writer *w, ft_error *err);
void st_writer_free(st_writer *w);

#endif
