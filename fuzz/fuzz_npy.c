/* Fuzz target: the .npy reader (npy_read, npy_read_map) and, on what it
 * accepts, a write/read round trip that must give back the same array. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/npy.h"
#include "export/export.h"
#include "fuzz/fuzzlib.h"

static size_t item(npy_dtype t) { return t == NPY_C64 ? 8 : 4; }

int fuzz_npy(const uint8_t *data, size_t size)
{
    const char *path = fz_write("in.npy", data, size);
    npy_array a;
    d2_err e = {0};
    int rc = npy_read(path, &a, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "npy_read");
        if (a.data || a.ndim) fz_bug("npy_read failed but left data in the array");
    } else {
        if (!a.data || a.ndim < 1 || a.ndim > 3 || (a.dtype != NPY_F32 && a.dtype != NPY_C64))
            fz_bug("npy_read accepted an array outside its contract (ndim %d)", a.ndim);
        size_t bytes = npy_count(&a) * item(a.dtype);
        for (int i = 0; i < a.ndim; i++)
            if (a.shape[i] == 0) fz_bug("npy_read accepted an empty dimension");
        /* float16 doubles in size when converted to float32 */
        if (bytes > (a.converted_from ? 2 : 1) * size)
            fz_bug("npy_read returned %zu bytes of data from a %zu-byte file", bytes, size);
        /* What we read, we must write back identically. */
        const char *out = fz_path("out.npy");
        d2_err we = {0};
        if (npy_write(out, a.dtype, a.ndim, a.shape, a.data, &we))
            fz_bug("npy_write refused an array npy_read accepted: %s", we.msg);
        npy_array b;
        if (npy_read(out, &b, &we)) fz_bug("npy_read refused what npy_write wrote: %s", we.msg);
        if (b.dtype != a.dtype || b.ndim != a.ndim || memcmp(b.shape, a.shape, sizeof a.shape) ||
            !fz_same(a.data, b.data, bytes))
            fz_bug("npy write/read round trip changed the array");
        npy_free(&b);
    }
    int accepted = rc == 0;
    npy_free(&a);

    float *map = NULL;
    int rows = -1, cols = -1;
    memset(&e, 0, sizeof e);
    rc = npy_read_map(path, &map, &rows, &cols, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "npy_read_map");
        if (map) fz_bug("npy_read_map failed but returned a map");
    } else {
        if (!map || rows < 1 || cols < 1) fz_bug("npy_read_map returned %d x %d", rows, cols);
        for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++)
            if (!isfinite(map[i])) fz_bug("npy_read_map returned a non-finite value at %zu", i);
    }
    free(map);

    /* The export stage's phase-map reader (square, finite, n <= D2_MAX_N). */
    int n = 0;
    memset(&e, 0, sizeof e);
    rc = exp_read_phase(path, 0, 0, 0, &map, &n, NULL, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "exp_read_phase");
        if (map) fz_bug("exp_read_phase failed but returned a map");
    } else if (!map || n < 1 || n > D2_MAX_N) {
        fz_bug("exp_read_phase returned n = %d", n);
    }
    free(map);
    return accepted;
}

FUZZ_ENTRY(fuzz_npy)
