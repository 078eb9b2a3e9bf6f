/* Fuzz target: the IDX readers (MNIST image and label files). Every input is
 * read both as an image file and as a label file; what is accepted must
 * write back and read again unchanged. */
#include <stdlib.h>

#include "core/idx.h"
#include "fuzz/fuzzlib.h"

int fuzz_idx(const uint8_t *data, size_t size)
{
    const char *path = fz_write("in-idx", data, size);
    d2_err e = {0};
    uint8_t *px = (uint8_t *)1, *lab = (uint8_t *)1;
    int count = -1, rows = -1, cols = -1, accepted = 0;
    int rc = idx_read_images(path, &px, &count, &rows, &cols, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "idx_read_images");
        if (px) fz_bug("idx_read_images failed but returned pixels");
    } else {
        accepted = 1;
        size_t n = (size_t)count * (size_t)rows * (size_t)cols;
        if (count < 0 || rows < 1 || cols < 1 || 16 + n != size)
            fz_bug("idx_read_images returned %d images of %d x %d from %zu bytes", count, rows,
                   cols, size);
        if (!fz_same(px, data + 16, n)) fz_bug("idx_read_images returned other pixels");
        const char *out = fz_path("out-idx");
        uint8_t *px2 = NULL;
        int c2, r2, k2;
        if (idx_write_images(out, px, count, rows, cols, &e) ||
            idx_read_images(out, &px2, &c2, &r2, &k2, &e))
            fz_bug("IDX image round trip failed: %s", e.msg);
        if (c2 != count || r2 != rows || k2 != cols || !fz_same(px, px2, n))
            fz_bug("IDX image round trip changed the images");
        free(px2);
    }
    free(px);

    e = (d2_err){0};
    count = -1;
    rc = idx_read_labels(path, &lab, &count, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "idx_read_labels");
        if (lab) fz_bug("idx_read_labels failed but returned labels");
    } else {
        accepted = 1;
        if (count < 0 || 8 + (size_t)count != size)
            fz_bug("idx_read_labels returned %d labels from %zu bytes", count, size);
        for (int i = 0; i < count; i++)
            if (lab[i] > 9) fz_bug("idx_read_labels returned label %u", (unsigned)lab[i]);
        const char *out = fz_path("out-idx");
        uint8_t *lab2 = NULL;
        int c2;
        if (idx_write_labels(out, lab, count, &e) || idx_read_labels(out, &lab2, &c2, &e))
            fz_bug("IDX label round trip failed: %s", e.msg);
        if (c2 != count || !fz_same(lab, lab2, (size_t)count))
            fz_bug("IDX label round trip changed the labels");
        free(lab2);
    }
    free(lab);
    return accepted;
}

FUZZ_ENTRY(fuzz_idx)
