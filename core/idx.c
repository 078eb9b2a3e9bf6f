#include "idx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "fileio.h"

/* Largest IDX file read: the MNIST training images are 47 MB. */
#define IDX_MAX_BYTES (512u << 20)
#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static const char *magic_name(uint32_t m)
{
    switch (m) {
    case IDX_MAGIC_IMAGES: return " (an idx3-ubyte image file)";
    case IDX_MAGIC_LABELS: return " (an idx1-ubyte label file)";
    default: return "";
    }
}

/* Inflates the gzip file gz (n bytes, read from path) into *out (*outn
 * bytes, at most IDX_MAX_BYTES). A corrupt or truncated stream fails with
 * D2_EINPUT naming path and zlib's finding. */
static int gunzip(const char *path, const unsigned char *gz, size_t n, unsigned char **out,
                  size_t *outn, d2_err *e)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return d2_fail(e, D2_EIO, "%s: cannot start zlib", path);
    /* The trailer's size (mod 4 GiB) as the first guess of the output size. */
    size_t cap = n >= 18 ? (size_t)gz[n - 4] | (size_t)gz[n - 3] << 8 | (size_t)gz[n - 2] << 16 |
                               (size_t)gz[n - 1] << 24
                         : 0;
    if (cap < 4096) cap = 4096;
    if (cap > IDX_MAX_BYTES) cap = IDX_MAX_BYTES;
    unsigned char *b = d2_malloc(cap + 1, path, e);
    int rc = D2_EIO, zr = Z_OK;
    if (!b) goto done;
    z.next_in = (unsigned char *)gz;
    z.avail_in = (uInt)n;
    while (zr != Z_STREAM_END) {
        if (z.total_out == cap) {
            if (cap >= IDX_MAX_BYTES) {
                rc = d2_fail(e, D2_EINPUT, "%s: decompresses to more than %u bytes; too large for "
                             "an IDX file", path, IDX_MAX_BYTES);
                goto done;
            }
            size_t ncap = cap * 2 > IDX_MAX_BYTES ? IDX_MAX_BYTES : cap * 2;
            unsigned char *nb = realloc(b, ncap + 1);
            if (!nb) {
                rc = d2_fail(e, D2_EIO, "out of memory (%zu bytes for %s)", ncap, path);
                goto done;
            }
            b = nb;
            cap = ncap;
        }
        z.next_out = b + z.total_out;
        z.avail_out = (uInt)(cap - z.total_out);
        zr = inflate(&z, Z_NO_FLUSH);
        if (zr == Z_BUF_ERROR && z.avail_in == 0) {
            rc = d2_fail(e, D2_EINPUT, "%s: gzip data ends early after %lu decompressed bytes: "
                         "truncated (fetch it again: scripts/fetch-data)", path, z.total_out);
            goto done;
        }
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
            rc = d2_fail(e, D2_EINPUT, "%s: corrupt gzip data (zlib: %s) after %lu decompressed "
                         "bytes", path, z.msg ? z.msg : zError(zr), z.total_out);
            goto done;
        }
    }
    *out = b;
    *outn = z.total_out;
    b = NULL;
    rc = 0;
done:
    free(b);
    inflateEnd(&z);
    return rc;
}

/* Reads path (a plain IDX file, or one gzip-compressed) and checks its magic
 * number; *buf holds the whole (decompressed) file. */
static int read_idx(const char *path, uint32_t want, size_t hdr, unsigned char **buf, size_t *n,
                    d2_err *e)
{
    char *b;
    int rc = d2_read_file(path, IDX_MAX_BYTES, &b, n, e);
    if (rc) return rc;
    unsigned char *u = (unsigned char *)b;
    if (*n >= 2 && u[0] == 0x1f && u[1] == 0x8b) {
        unsigned char *raw = NULL;
        rc = gunzip(path, u, *n, &raw, n, e);
        free(b);
        if (rc) return rc;
        u = raw;
        b = (char *)raw;
    }
    uint32_t m = *n >= 4 ? be32(u) : 0;
    if (*n >= 4 && m != want) {
        free(b);
        return d2_fail(e, D2_EINPUT, "%s: magic number 0x%08x%s; expected 0x%08x%s", path,
                       (unsigned)m, magic_name(m), (unsigned)want, magic_name(want));
    }
    if (*n < hdr) {
        free(b);
        return d2_fail(e, D2_EINPUT, "%s: file is %zu bytes, shorter than the %zu-byte IDX header",
                       path, *n, hdr);
    }
    *buf = u;
    return 0;
}

int idx_read_images(const char *path, uint8_t **px, int *count, int *rows, int *cols, d2_err *e)
{
    unsigned char *b = NULL;
    size_t n = 0;
    *px = NULL;
    int rc = read_idx(path, IDX_MAGIC_IMAGES, 16, &b, &n, e);
    if (rc) return rc;
    uint32_t c = be32(b + 4), r = be32(b + 8), k = be32(b + 12);
    if (r < 1 || r > 4096 || k < 1 || k > 4096) {
        free(b);
        return d2_fail(e, D2_EINPUT, "%s: image size %u x %u; expected 1..4096 on each side", path,
                       (unsigned)r, (unsigned)k);
    }
    unsigned long long want = 16ULL + (unsigned long long)c * r * k;
    if (n != want) {
        free(b);
        return d2_fail(e, D2_EINPUT, "%s: file is %zu bytes; expected %llu (16-byte header + %u "
                       "images of %u x %u)%s", path, n, want, (unsigned)c, (unsigned)r,
                       (unsigned)k, n < want ? ": truncated" : "");
    }
    if (c > 0x7fffffff) {
        free(b);
        return d2_fail(e, D2_EINPUT, "%s: %u images is too many", path, (unsigned)c);
    }
    /* Move the pixels to the start of the buffer rather than copy them. */
    memmove(b, b + 16, n - 16);
    *px = b;
    *count = (int)c;
    *rows = (int)r;
    *cols = (int)k;
    return 0;
}

int idx_read_labels(const char *path, uint8_t **labels, int *count, d2_err *e)
{
    unsigned char *b = NULL;
    size_t n = 0;
    *labels = NULL;
    int rc = read_idx(path, IDX_MAGIC_LABELS, 8, &b, &n, e);
    if (rc) return rc;
    uint32_t c = be32(b + 4);
    unsigned long long want = 8ULL + c;
    if (n != want) {
        free(b);
        return d2_fail(e, D2_EINPUT, "%s: file is %zu bytes; expected %llu (8-byte header + %u "
                       "labels)%s", path, n, want, (unsigned)c, n < want ? ": truncated" : "");
    }
    if (c > 0x7fffffff) {
        free(b);
        return d2_fail(e, D2_EINPUT, "%s: %u labels is too many", path, (unsigned)c);
    }
    for (uint32_t i = 0; i < c; i++)
        if (b[8 + i] > 9) {
            rc = d2_fail(e, D2_EINPUT, "%s: label %u is %u; expected 0..9", path, (unsigned)i,
                         (unsigned)b[8 + i]);
            free(b);
            return rc;
        }
    memmove(b, b + 8, c);
    *labels = b;
    *count = (int)c;
    return 0;
}

const char *dataset_default_dir(void)
{
    const char *d = getenv("D2FAB_DATA");
    return d && *d ? d : "data";
}

void dataset_free(d2_dataset *ds)
{
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* path (cap bytes) becomes path.gz when that file exists. */
static int prefer_gz(char *path, size_t cap, d2_err *e)
{
    char gz[4096];
    if (snprintf(gz, sizeof gz, "%s.gz", path) >= (int)sizeof gz || strlen(gz) >= cap)
        return d2_fail(e, D2_EINPUT, "%s.gz: path too long", path);
    if (access(gz, F_OK) == 0) memcpy(path, gz, strlen(gz) + 1);
    return 0;
}

int dataset_load(const char *dir, const char *name, int test, d2_dataset *ds, d2_err *e)
{
    char ip[4096], lp[4096], sub[64];
    memset(ds, 0, sizeof *ds);
    if (!name || (strcmp(name, "mnist") != 0 && strcmp(name, "fashion") != 0))
        return d2_fail(e, D2_EINPUT, "data set \"%s\": expected \"mnist\" or \"fashion\"",
                       name ? name : "");
    const char *split = test ? "t10k" : "train";
    snprintf(sub, sizeof sub, "%s/%s-images-idx3-ubyte", name, split);
    if (d2_path_join(ip, sizeof ip, dir, sub, e)) return D2_EINPUT;
    snprintf(sub, sizeof sub, "%s/%s-labels-idx1-ubyte", name, split);
    if (d2_path_join(lp, sizeof lp, dir, sub, e)) return D2_EINPUT;
    int n_img, n_lab, rc;
    /* The gzip-compressed files as distributed are read when present. */
    if ((rc = prefer_gz(ip, sizeof ip, e)) || (rc = prefer_gz(lp, sizeof lp, e))) return rc;
    if (access(ip, F_OK) != 0 || access(lp, F_OK) != 0)
        return d2_fail(e, D2_EINPUT, "%s: not found; run scripts/fetch-data %s to download it",
                       access(ip, F_OK) != 0 ? ip : lp, name);
    rc = idx_read_images(ip, &ds->images, &ds->count, &ds->rows, &ds->cols, e);
    if (rc) return rc;
    if (ds->count == 0) {
        dataset_free(ds);
        return d2_fail(e, D2_EINPUT, "%s: holds no images (an empty data set); expected the "
                       "%s %s images (scripts/fetch-data %s)", ip, name, test ? "test" : "training",
                       name);
    }
    n_img = ds->count;
    rc = idx_read_labels(lp, &ds->labels, &n_lab, e);
    if (rc) {
        dataset_free(ds);
        return rc;
    }
    if (n_img != n_lab) {
        dataset_free(ds);
        return d2_fail(e, D2_EINPUT, "%s holds %d images but %s holds %d labels; expected equal "
                       "counts", ip, n_img, lp, n_lab);
    }
    return 0;
}

static int write_idx(const char *path, const unsigned char *hdr, size_t hn, const uint8_t *data,
                     size_t dn, d2_err *e)
{
    d2_out *o = d2_out_open(path, e);
    if (!o) return e ? e->code : D2_EIO;
    FILE *f = d2_out_fp(o);
    fwrite(hdr, 1, hn, f);
    if (dn) fwrite(data, 1, dn, f); /* errors surface in commit through ferror */
    return d2_out_commit(o, e);
}

int idx_write_images(const char *path, const uint8_t *px, int count, int rows, int cols,
                     d2_err *e)
{
    if (count < 0 || rows < 1 || cols < 1 || rows > 4096 || cols > 4096)
        return d2_fail(e, D2_EUSAGE, "%s: cannot write %d images of %d x %d", path, count, rows,
                       cols);
    unsigned char h[16];
    put_be32(h, IDX_MAGIC_IMAGES);
    put_be32(h + 4, (uint32_t)count);
    put_be32(h + 8, (uint32_t)rows);
    put_be32(h + 12, (uint32_t)cols);
    return write_idx(path, h, 16, px, (size_t)count * (size_t)rows * (size_t)cols, e);
}

int idx_write_labels(const char *path, const uint8_t *labels, int count, d2_err *e)
{
    if (count < 0) return d2_fail(e, D2_EUSAGE, "%s: cannot write %d labels", path, count);
    for (int i = 0; i < count; i++)
        if (labels[i] > 9)
            return d2_fail(e, D2_EUSAGE, "%s: label %d is %u; expected 0..9", path, i,
                           (unsigned)labels[i]);
    unsigned char h[8];
    put_be32(h, IDX_MAGIC_LABELS);
    put_be32(h + 4, (uint32_t)count);
    return write_idx(path, h, 8, labels, (size_t)count, e);
}
