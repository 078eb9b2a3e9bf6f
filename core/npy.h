/* d2fab core: NumPy .npy files, the interchange format for phase and height
 * maps. Supported: format versions 1.0-3.0, float32 ('<f4') and complex64
 * ('<c8'), C order, 1 to 3 dimensions. float16, float64 and complex128 in
 * either byte order (NumPy's float64 default among them) are converted to
 * float32 / complex64 on reading, and the array says so (converted_from).
 * Anything else (integers, Fortran order, object arrays, truncated data) is
 * rejected with a message naming the file, what was expected and what was
 * found. */
#ifndef D2_NPY_H
#define D2_NPY_H

#include <stddef.h>
#include "err.h"

typedef enum { NPY_F32 = 0, NPY_C64 = 1 } npy_dtype;

typedef struct npy_array {
    npy_dtype dtype;
    int ndim;         /* 1..3 */
    size_t shape[3];  /* shape[0] is the slowest axis (rows = y for maps) */
    void *data;       /* float or float complex pairs, C order; malloc'ed */
    const char *converted_from; /* NULL, or the file's dtype ("float64", ...) when
                                   it was converted to float32 / complex64 */
} npy_array;

/* Reads path into *a (a->data malloc'ed; release with npy_free). Arrays larger
 * than 1 GiB, headers over 10000 bytes, empty dimensions and a file length
 * other than header + data fail with D2_EINPUT naming the file, what was
 * expected and what was found (D2_EIO for read errors); *a is zeroed then. */
int npy_read(const char *path, npy_array *a, d2_err *e);

/* Writes an array atomically as a version 1.0 file whose header is padded to
 * 64 bytes, as numpy does. shape has ndim (1..3) entries, none zero; data is
 * read in host (little-endian) order. Fails with D2_EUSAGE for a shape it
 * cannot write (or over 1 GiB) and D2_EIO for I/O errors. */
int npy_write(const char *path, npy_dtype dtype, int ndim, const size_t *shape,
              const void *data, d2_err *e);

/* Number of elements (product of the shape). */
size_t npy_count(const npy_array *a);

/* Frees a->data and zeroes *a. npy_free(NULL) is a no-op. */
void npy_free(npy_array *a);

/* Reads a float32 2-D map of any size, checking every value is finite.
 * On success *out is malloc'ed (rows*cols floats, row-major), caller frees.
 * Another dtype or rank, or a NaN/infinity, fails with D2_EINPUT naming the
 * file (and the [row, col] of the first bad value); *out is NULL then. */
int npy_read_map(const char *path, float **out, int *rows, int *cols, d2_err *e);

#endif
