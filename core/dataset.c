/* The lab's own data sets: a folder of labelled PNGs or an IDX pair, checked
 * as the shipped MNIST and Fashion-MNIST files are (counts, labels, sizes, no
 * empty set), and dataset_open, the one entry every stage loads through. */
#include "idx.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fileio.h"
#include "image.h"

/* Largest folder data set: 2^27 pixels in all keeps it under the IDX limit. */
#define FOLDER_MAX_PIXELS (512u << 20)

int dataset_read_idx(const char *images, const char *labels, d2_dataset *ds, d2_err *e)
{
    int n_lab = 0, rc;
    memset(ds, 0, sizeof *ds);
    if ((rc = idx_read_images(images, &ds->images, &ds->count, &ds->rows, &ds->cols, e)))
        return rc;
    if (ds->count == 0) {
        dataset_free(ds);
        return d2_fail(e, D2_EINPUT, "%s: holds no images (an empty data set); expected at least "
                       "one labelled image", images);
    }
    if ((rc = idx_read_labels(labels, &ds->labels, &n_lab, e))) {
        dataset_free(ds);
        return rc;
    }
    if (n_lab != ds->count) {
        rc = d2_fail(e, D2_EINPUT, "%s holds %d images but %s holds %d labels; expected equal "
                     "counts", images, ds->count, labels, n_lab);
        dataset_free(ds);
        return rc;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **v, int n)
{
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* The .png names in one class folder, sorted; other names (not dot-files)
 * are refused so that a stray JPEG is not silently left out. */
static int list_pngs(const char *dir, char ***out, int *count, d2_err *e)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return d2_fail(e, D2_EINPUT, "%s: missing class folder; a \"folder\" data set needs "
                       "sub-folders 0 to 9, each holding that class's PNG images", dir);
    char **v = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        size_t len = strlen(nm);
        if (nm[0] == '.') continue;
        if (len < 5 || strcasecmp(nm + len - 4, ".png") != 0) {
            rc = d2_fail(e, D2_EINPUT, "%s/%s: not a .png file; a class folder may hold only "
                         "PNG images", dir, nm);
            goto fail;
        }
        if (n == cap) {
            int nc = cap ? 2 * cap : 64;
            char **nv = realloc(v, sizeof *v * (size_t)nc);
            if (!nv) goto oom;
            v = nv;
            cap = nc;
        }
        if (!(v[n] = strdup(nm))) goto oom;
        n++;
    }
    closedir(d);
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    *count = n;
    return 0;
oom:
    rc = d2_fail(e, D2_EIO, "%s: out of memory listing the folder", dir);
fail:
    closedir(d);
    free_names(v, n);
    return rc;
}

/* Appends one image (grey 0..1) and its label to ds, growing the buffers. */
static int append_image(d2_dataset *ds, int *cap, const float *px, int label, const char *path,
                        d2_err *e)
{
    size_t np = (size_t)ds->rows * (size_t)ds->cols;
    if (ds->count == *cap) {
        int nc = *cap ? 2 * *cap : 256;
        if ((double)nc * (double)np > FOLDER_MAX_PIXELS) nc = (int)(FOLDER_MAX_PIXELS / np);
        if (nc <= ds->count)
            return d2_fail(e, D2_EINPUT, "%s: the data set would exceed %u pixels in all; use "
                           "fewer or smaller images", path, (unsigned)FOLDER_MAX_PIXELS);
        uint8_t *ni = realloc(ds->images, (size_t)nc * np);
        if (!ni) return d2_fail(e, D2_EIO, "%s: out of memory for %d images", path, nc);
        ds->images = ni;
        uint8_t *nl = realloc(ds->labels, (size_t)nc);
        if (!nl) return d2_fail(e, D2_EIO, "%s: out of memory for %d labels", path, nc);
        ds->labels = nl;
        *cap = nc;
    }
    uint8_t *dst = ds->images + (size_t)ds->count * np;
    for (size_t k = 0; k < np; k++) {
        float v = px[k] < 0 ? 0 : px[k] > 1 ? 1 : px[k];
        dst[k] = (uint8_t)lrintf(v * 255.0f);
    }
    ds->labels[ds->count++] = (uint8_t)label;
    return 0;
}

/* Reads every PNG of class `label` from FOLDER/label into ds; the first
 * image of the set fixes the size, held in *first for the messages. */
static int read_class(const char *folder, int label, d2_dataset *ds, int *cap, char *first,
                      size_t first_cap, d2_err *e)
{
    char dir[4096], path[4096], sub[4];
    snprintf(sub, sizeof sub, "%d", label);
    if (d2_path_join(dir, sizeof dir, folder, sub, e)) return D2_EINPUT;
    char **names = NULL;
    int n = 0, rc = list_pngs(dir, &names, &n, e);
    if (rc) return rc;
    for (int i = 0; i < n && !rc; i++) {
        float *px = NULL;
        int w = 0, h = 0;
        if ((rc = d2_path_join(path, sizeof path, dir, names[i], e))) break;
        if ((rc = img_read_gray(path, &w, &h, &px, e))) break;
        if (ds->count == 0 && !first[0]) {
            if (w > 4096 || h > 4096)
                rc = d2_fail(e, D2_EINPUT, "%s: %d x %d pixels; expected at most 4096 on each "
                             "side", path, w, h);
            ds->rows = h;
            ds->cols = w;
            snprintf(first, first_cap, "%s", path);
        } else if (w != ds->cols || h != ds->rows) {
            rc = d2_fail(e, D2_EINPUT, "%s: %d x %d pixels; expected %d x %d like %s (every image "
                         "of a data set must have the same size)", path, w, h, ds->cols, ds->rows,
                         first);
        }
        if (!rc) rc = append_image(ds, cap, px, label, path, e);
        free(px);
    }
    free_names(names, n);
    return rc;
}

int dataset_read_folder(const char *folder, d2_dataset *ds, d2_err *e)
{
    memset(ds, 0, sizeof *ds);
    DIR *d = opendir(folder);
    if (!d)
        return d2_fail(e, D2_EINPUT, "%s: not a readable folder; a \"folder\" data set is a "
                       "folder with sub-folders 0 to 9 of labelled PNG images", folder);
    closedir(d);
    char first[4096] = "";
    int cap = 0, rc = 0;
    for (int c = 0; c < 10 && !rc; c++)
        rc = read_class(folder, c, ds, &cap, first, sizeof first, e);
    if (!rc && ds->count == 0)
        rc = d2_fail(e, D2_EINPUT, "%s: holds no images (an empty data set); expected PNG images "
                     "in its sub-folders 0 to 9", folder);
    if (rc) dataset_free(ds);
    return rc;
}

int dataset_open(const char *dir, const char *name, const d2_data_paths *p, int test,
                 d2_dataset *ds, d2_err *e)
{
    memset(ds, 0, sizeof *ds);
    if (name && (!strcmp(name, "folder") || !strcmp(name, "idx"))) {
        const char *img = test ? p->test : p->train;
        const char *lab = test ? p->test_labels : p->train_labels;
        const char *key = !strcmp(name, "folder") ? (test ? "test" : "train")
                                                   : (test ? "test_images" : "train_images");
        if (!img[0] || (!strcmp(name, "idx") && !lab[0]))
            return d2_fail(e, D2_EINPUT, "data set \"%s\": no %s path given (key \"input.%s\"%s)",
                           name, test ? "test" : "training", key,
                           strcmp(name, "idx") ? "" : test ? " and \"input.test_labels\""
                                                           : " and \"input.train_labels\"");
        return !strcmp(name, "folder") ? dataset_read_folder(img, ds, e)
                                       : dataset_read_idx(img, lab, ds, e);
    }
    return dataset_load(dir, name, test, ds, e);
}
