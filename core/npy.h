/* d2fab core: NumPy .npy files, the interchange format for phase and height
 * maps. Supported: format versions 1.0-3.0, little-endian float32 ('<f4') and
 * complex64 ('<c8'), C order, 1 to 3 dimensions. Anything else (big-endian,
 * float64, Fortran order, object arrays, truncated data) is rejected with a
 * message naming the file, what was expected and what was found. */
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
} npy_array;

/* Reads path into *a (a->data malloc'ed; release with npy_free). Arrays larger
 * than 1 GiB are refused. */
int npy_read(const char *path, npy_array *a, d2_err *e);

/* Writes an array atomically. shape has ndim entries. */
int npy_write(const char *path, npy_dtype dtype, int ndim, const size_t *shape,
              const void *data, d2_err *e);

/* Number of elements (product of the shape). */
size_t npy_count(const npy_array *a);

/* Frees a->data and zeroes *a. npy_free(NULL) is a no-op. */
void npy_free(npy_array *a);

/* Reads a float32 2-D map of any size, checking every value is finite.
 * On success *out is malloc'ed (rows*cols floats), caller frees. */
int npy_read_map(const char *path, float **out, int *rows, int *cols, d2_err *e);

#endif
