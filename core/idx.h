/* d2fab core: IDX files (MNIST and Fashion-MNIST in their original format)
 * and the data-set folders built by scripts/fetch-data:
 *   DIR/mnist/{train,t10k}-images-idx3-ubyte, {train,t10k}-labels-idx1-ubyte
 *   DIR/fashion/ (the same names, each with .gz: the official files from
 *                Debian's dataset-fashion-mnist)
 * The reader checks the magic number, the dimensions and the file length and
 * names the file, what was expected and what was found. */
#ifndef D2_IDX_H
#define D2_IDX_H

#include <stdint.h>
#include "err.h"

typedef struct d2_dataset {
    int count;        /* number of images */
    int rows, cols;   /* 28 x 28 for MNIST */
    uint8_t *images;  /* count * rows * cols, row-major, 0..255 */
    uint8_t *labels;  /* count, 0..9 */
} d2_dataset;

/* Reads an idx3-ubyte image file (magic 0x00000803; rows and cols 1..4096;
 * at most 512 MiB). *px is malloc'ed (count*rows*cols bytes), caller frees.
 * A gzip-compressed file (as MNIST and Fashion-MNIST are distributed) is
 * inflated through zlib first; corrupt or truncated gzip data fails with
 * D2_EINPUT naming the file and what zlib found. A wrong magic number or a
 * length other than 16 + count*rows*cols fails with D2_EINPUT naming the
 * file, what was expected and what was found. */
int idx_read_images(const char *path, uint8_t **px, int *count, int *rows, int *cols, d2_err *e);
/* Reads an idx1-ubyte label file (magic 0x00000801); every label must be 0..9.
 * *labels is malloc'ed (count bytes), caller frees. Fails like
 * idx_read_images. */
int idx_read_labels(const char *path, uint8_t **labels, int *count, d2_err *e);

/* Loads DIR/NAME/{train|t10k}-*: name is "mnist" or "fashion"; test != 0
 * selects the test split. FILE.gz is read instead of FILE when it exists. Image and label counts must agree. A missing file
 * fails with D2_EINPUT telling to run scripts/fetch-data. Release with
 * dataset_free (which accepts NULL and zeroes *ds). */
int dataset_load(const char *dir, const char *name, int test, d2_dataset *ds, d2_err *e);
void dataset_free(d2_dataset *ds);


/* The lab's own data, beside the shipped sets (the "input" section of a
 * training config: "dataset": "folder" or "idx"). Paths are as given after
 * resolving against the config file's folder; unused ones are empty. */
#define D2_DATA_PATH 1024
typedef struct d2_data_paths {
    char train[D2_DATA_PATH];        /* folder: the training folder; idx: its image file */
    char train_labels[D2_DATA_PATH]; /* idx: the training label file */
    char test[D2_DATA_PATH];         /* folder: the test folder; idx: its image file */
    char test_labels[D2_DATA_PATH];  /* idx: the test label file */
} d2_data_paths;

/* The one way every stage (train, eval, tolerance, mask, run) loads a data
 * set: name "mnist" or "fashion" loads dataset_load(dir, name, ...); "folder"
 * reads p->train or p->test with dataset_read_folder; "idx" reads the image
 * and label pair with dataset_read_idx (dir unused for both). test != 0
 * selects the test split. Fails with D2_EINPUT naming the file at fault;
 * release with dataset_free. */
int dataset_open(const char *dir, const char *name, const d2_data_paths *p, int test,
                 d2_dataset *ds, d2_err *e);
/* Reads FOLDER/0 .. FOLDER/9, each holding PNG images (*.png, any bit depth,
 * colour read as luminance) of that class, in name order within each class.
 * Every image must have the size of the first; names starting with '.' are
 * skipped, any other file that is not a .png is refused. A missing class
 * folder, an unreadable or differently sized PNG, or no image at all fails
 * with D2_EINPUT naming the folder or file. Pixels are stored as 0..255. */
int dataset_read_folder(const char *folder, d2_dataset *ds, d2_err *e);
/* Reads an IDX image file and its label file with the checks of
 * dataset_load: equal counts, labels 0..9, at least one image. */
int dataset_read_idx(const char *images, const char *labels, d2_dataset *ds, d2_err *e);

/* Writes images/labels as IDX files atomically (used by tests). Labels over
 * 9 or sizes outside the reader's limits fail with D2_EUSAGE; I/O errors with D2_EIO. */
int idx_write_images(const char *path, const uint8_t *px, int count, int rows, int cols, d2_err *e);
int idx_write_labels(const char *path, const uint8_t *labels, int count, d2_err *e);

/* Default data folder: $D2FAB_DATA if set, else "data". */
const char *dataset_default_dir(void);

#endif
