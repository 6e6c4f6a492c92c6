/* Input arrays: NumPy .npy files (format 1.0, 2.0 and 3.0; little-endian float32, or float64
 * converted to float32; C or Fortran order, returned in C order) and raw float32 files whose
 * shape the command line gives. */
#ifndef CLATTN_TOOLS_MAPS_NPY_H
#define CLATTN_TOOLS_MAPS_NPY_H

#include <stddef.h>

#define CLATTN_MAPS_ARRAY_MAX_DIMS 8

/* Largest array read: 2^31 elements (8 GiB of float32). */
#define CLATTN_MAPS_ARRAY_MAX_ELEMENTS ((size_t)1 << 31)

typedef struct clattn_maps_array {
  float* data; /* count elements, C order; malloc'ed */
  size_t shape[CLATTN_MAPS_ARRAY_MAX_DIMS];
  size_t ndim; /* 0 for a scalar */
  size_t count;
} clattn_maps_array;

/* Parses a whole .npy file held in memory. Returns 0, or -1 with a message in err for: a
 * missing magic string, an unknown format version, a header longer than the bytes, a header
 * that is not the dictionary NumPy writes ('descr', 'fortran_order', 'shape'), a dtype other
 * than '<f4' or '<f8' (named in the message), more than 8 dimensions, a shape
 * whose element count overflows or exceeds the limit, or data bytes that do not match the
 * shape exactly. */
int clattn_maps_npy_parse(const void* bytes, size_t size, clattn_maps_array* out, char* err,
                          size_t err_size);

/* Reads path: a .npy file when it starts with NumPy's magic string, else raw float32 (host
 * byte order) of raw_shape (raw_ndim dimensions), whose size must be exactly that many
 * elements; raw_shape NULL refuses raw files. Files of more than 8 GiB are refused before
 * being read. Returns 0, or -1 with a message naming path. */
int clattn_maps_array_read(const char* path, const size_t* raw_shape, size_t raw_ndim,
                           clattn_maps_array* out, char* err, size_t err_size);

/* Frees the data; NULL or an empty array is a no-op. */
void clattn_maps_array_free(clattn_maps_array* a);

/* "[2, 3, 4]" into buf. */
const char* clattn_maps_shape_string(const size_t* shape, size_t ndim, char* buf, size_t size);

/* Whether a's shape is `expected` once leading dimensions of 1 are dropped from both
 * ([1, 4, 8] matches [4, 8]). */
int clattn_maps_array_has_shape(const clattn_maps_array* a, const size_t* expected, size_t ndim);

#endif
