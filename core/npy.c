#include "npy.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c reads and writes little-endian data in place; port it for this host"
#endif

#define NPY_MAX_BYTES (1ULL << 30)   /* data size limit, 1 GiB */
#define NPY_MAX_HEADER 10000         /* as numpy's default max_header_size */
#define NPY_MAX_DIM (1ULL << 40)     /* larger dimensions are refused while parsing */

static size_t item_size(npy_dtype t) { return t == NPY_C64 ? 8 : 4; }
static const char *dtype_descr(npy_dtype t) { return t == NPY_C64 ? "<c8" : "<f4"; }

/* The encodings a file may have: float32 and complex64 are read as they
 * are; the other float widths and byte orders NumPy writes are converted to
 * them on reading (each component is a float of `width` bytes). */
typedef struct npy_enc {
    const char *descr, *name;
    npy_dtype to;
    int width;  /* bytes per float component: 2, 4 or 8 */
    int big;    /* big-endian */
} npy_enc;

static const npy_enc encodings[] = {
    {"<f4", "float32", NPY_F32, 4, 0},           {"<c8", "complex64", NPY_C64, 4, 0},
    {"<f8", "float64", NPY_F32, 8, 0},           {"<f2", "float16", NPY_F32, 2, 0},
    {">f4", "big-endian float32", NPY_F32, 4, 1}, {">f8", "big-endian float64", NPY_F32, 8, 1},
    {">f2", "big-endian float16", NPY_F32, 2, 1}, {"<c16", "complex128", NPY_C64, 8, 0},
    {">c8", "big-endian complex64", NPY_C64, 4, 1}, {">c16", "big-endian complex128", NPY_C64, 8, 1},
};

static const npy_enc *find_enc(const char *descr)
{
    for (size_t i = 0; i < sizeof encodings / sizeof encodings[0]; i++)
        if (strcmp(descr, encodings[i].descr) == 0) return &encodings[i];
    return NULL;
}

/* Bytes of one element in the file. */
static size_t enc_size(const npy_enc *x) { return (size_t)x->width * (x->to == NPY_C64 ? 2 : 1); }

size_t npy_count(const npy_array *a)
{
    size_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

void npy_free(npy_array *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* Formats a shape as numpy prints it: (3, 4) or (5,). */
static void shape_str(char *buf, size_t cap, int ndim, const size_t *shape)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%zu", i ? ", " : "", shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, ndim == 1 ? ",)" : ")");
}

/* Bytes of data for a shape, or 0 if it overflows or exceeds the limit. */
static unsigned long long data_bytes(npy_dtype t, int ndim, const size_t *shape)
{
    unsigned long long n = item_size(t);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > NPY_MAX_BYTES / shape[i]) return 0;
        n *= shape[i];
    }
    return n;
}

/* ---- header dictionary parser: a bounded recursive-descent reader for the
 * tiny subset of Python literal syntax that .npy headers use. It never reads
 * past end and accepts exactly the keys descr, fortran_order and shape. */
typedef struct {
    const char *start, *p, *end;
    const char *path;
    d2_err *e;
} hp;

static void hp_ws(hp *h)
{
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
        h->p++;
}

static int hp_expect(hp *h, char c, const char *what)
{
    hp_ws(h);
    if (h->p >= h->end || *h->p != c)
        return d2_fail(h->e, D2_EINPUT, "%s: malformed .npy header: expected '%c' %s at header byte %ld",
                       h->path, c, what, (long)(h->p - h->start));
    h->p++;
    return 0;
}

/* Quoted string (single or double quotes, no escapes) into out. */
static int hp_string(hp *h, char *out, size_t cap)
{
    hp_ws(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
        return d2_fail(h->e, D2_EINPUT, "%s: malformed .npy header: expected a quoted string",
                       h->path);
    char q = *h->p++;
    size_t n = 0;
    while (h->p < h->end && *h->p != q) {
        if (*h->p == '\\' || n + 1 >= cap)
            return d2_fail(h->e, D2_EINPUT,
                           "%s: malformed .npy header: unexpected string in the header", h->path);
        out[n++] = *h->p++;
    }
    if (h->p >= h->end)
        return d2_fail(h->e, D2_EINPUT, "%s: malformed .npy header: unterminated string",
                       h->path);
    h->p++;
    out[n] = 0;
    return 0;
}

static int hp_word(hp *h, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(h->end - h->p) >= n && memcmp(h->p, w, n) == 0) {
        h->p += n;
        return 1;
    }
    return 0;
}

static int hp_shape(hp *h, int *ndim, size_t *shape)
{
    if (hp_expect(h, '(', "to open the shape")) return h->e ? h->e->code : D2_EINPUT;
    int n = 0;
    for (;;) {
        hp_ws(h);
        if (h->p < h->end && *h->p == ')') {
            h->p++;
            break;
        }
        if (h->p >= h->end || *h->p < '0' || *h->p > '9')
            return d2_fail(h->e, D2_EINPUT,
                           "%s: malformed .npy header: shape must be a tuple of integers",
                           h->path);
        unsigned long long v = 0;
        while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
            v = v * 10 + (unsigned long long)(*h->p++ - '0');
            /* Far beyond the size limit, and no overflow in v * 10. */
            if (v > NPY_MAX_DIM)
                return d2_fail(h->e, D2_EINPUT,
                               "%s: shape dimension over %llu; the data limit is %llu bytes "
                               "(1 GiB)", h->path, NPY_MAX_DIM, NPY_MAX_BYTES);
        }
        hp_ws(h);
        if (h->p < h->end && *h->p == 'L') h->p++; /* Python 2 long suffix */
        if (n >= 3) {
            /* Count the rest for the message, without storing. */
            n++;
        } else {
            shape[n++] = (size_t)v;
        }
        hp_ws(h);
        if (h->p < h->end && *h->p == ',') {
            h->p++;
            continue;
        }
        if (hp_expect(h, ')', "to close the shape")) return h->e ? h->e->code : D2_EINPUT;
        break;
    }
    *ndim = n;
    return 0;
}

static const char *descr_name(const char *d)
{
    static const struct { const char *d, *name; } known[] = {
        {"|u1", "uint8"},              {"|i1", "int8"},      {"<i4", "int32"},
        {"<i8", "int64"},              {"<u2", "uint16"},    {"|b1", "bool"},
        {"|O", "Python objects"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(d, known[i].d) == 0) return known[i].name;
    return NULL;
}

static int parse_header(const char *path, const char *text, size_t len, npy_array *a,
                        const npy_enc **enc, d2_err *e)
{
    hp h = {text, text, text + len, path, e};
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
    char descr[64] = "";
    if (hp_expect(&h, '{', "at the start of the header")) return D2_EINPUT;
    for (;;) {
        hp_ws(&h);
        if (h.p < h.end && *h.p == '}') {
            h.p++;
            break;
        }
        char key[32];
        if (hp_string(&h, key, sizeof key)) return D2_EINPUT;
        if (hp_expect(&h, ':', "after a key")) return D2_EINPUT;
        hp_ws(&h);
        if (strcmp(key, "descr") == 0 && !have_descr) {
            hp_ws(&h);
            if (h.p < h.end && *h.p == '[')
                return d2_fail(e, D2_EINPUT,
                               "%s: structured dtype; expected '<f4' (float32) or '<c8' "
                               "(complex64)", path);
            if (hp_string(&h, descr, sizeof descr)) return D2_EINPUT;
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !have_fortran) {
            if (hp_word(&h, "True")) fortran = 1;
            else if (hp_word(&h, "False")) fortran = 0;
            else
                return d2_fail(e, D2_EINPUT,
                               "%s: malformed .npy header: fortran_order must be True or False",
                               path);
            have_fortran = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if (hp_shape(&h, &a->ndim, a->shape)) return D2_EINPUT;
            have_shape = 1;
        } else {
            return d2_fail(e, D2_EINPUT, "%s: malformed .npy header: %s key '%s'", path,
                           strcmp(key, "descr") && strcmp(key, "fortran_order") &&
                                   strcmp(key, "shape") ? "unexpected" : "repeated",
                           key);
        }
        hp_ws(&h);
        if (h.p < h.end && *h.p == ',') {
            h.p++;
            continue;
        }
        if (hp_expect(&h, '}', "to close the header")) return D2_EINPUT;
        break;
    }
    hp_ws(&h);
    if (h.p != h.end)
        return d2_fail(e, D2_EINPUT, "%s: malformed .npy header: text after the dictionary",
                       path);
    if (!have_descr || !have_fortran || !have_shape)
        return d2_fail(e, D2_EINPUT, "%s: malformed .npy header: missing '%s'", path,
                       !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    if (!(*enc = find_enc(descr))) {
        const char *name = descr_name(descr);
        return d2_fail(e, D2_EINPUT,
                       "%s: dtype '%s'%s%s%s; expected floating point: float32 ('<f4') or "
                       "complex64 ('<c8'), or float16/float64/complex128, which are converted "
                       "(save with arr.astype(np.float32))",
                       path, descr, name ? " (" : "", name ? name : "", name ? ")" : "");
    }
    a->dtype = (*enc)->to;
    if (fortran)
        return d2_fail(e, D2_EINPUT,
                       "%s: fortran_order is True; expected C order (save with "
                       "np.ascontiguousarray)", path);
    if (a->ndim < 1 || a->ndim > 3)
        return d2_fail(e, D2_EINPUT, "%s: array has %d dimensions; expected 1 to 3", path,
                       a->ndim);
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] == 0) {
            char s[96];
            shape_str(s, sizeof s, a->ndim, a->shape);
            return d2_fail(e, D2_EINPUT, "%s: shape %s has an empty dimension", path, s);
        }
    if (!data_bytes(a->dtype, a->ndim, a->shape) ||
        data_bytes(a->dtype, a->ndim, a->shape) / item_size(a->dtype) * enc_size(*enc) >
            NPY_MAX_BYTES) {
        char s[96];
        double need = (double)(item_size(a->dtype) > enc_size(*enc) ? item_size(a->dtype)
                                                                     : enc_size(*enc));
        for (int i = 0; i < a->ndim; i++) need *= (double)a->shape[i];
        shape_str(s, sizeof s, a->ndim, a->shape);
        return d2_fail(e, D2_EINPUT,
                       "%s: shape %s of %s needs %.4g GB of memory, which exceeds the limit of "
                       "%llu bytes (1 GiB)",
                       path, s, dtype_descr(a->dtype), need / 1e9, NPY_MAX_BYTES);
    }
    return 0;
}

/* IEEE 754 half precision to float (subnormals, infinities and NaN kept). */
static float half_to_float(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (exp == 0) v = ldexpf((float)man, -24);
    else if (exp == 31) v = man ? NAN : INFINITY;
    else v = ldexpf((float)(man | 0x400), exp - 25);
    return sign ? -v : v;
}

/* Converts n float components of encoding x from raw to float32 in out.
 * A finite float64 beyond float32's range cannot be represented: refused,
 * naming the element. */
static int convert(const char *path, const npy_enc *x, const unsigned char *raw, size_t n,
                   float *out, d2_err *e)
{
    for (size_t i = 0; i < n; i++) {
        const unsigned char *b = raw + i * (size_t)x->width;
        unsigned char le[8] = {0};
        for (int k = 0; k < x->width; k++) le[k] = x->big ? b[x->width - 1 - k] : b[k];
        if (x->width == 2) {
            uint16_t h;
            memcpy(&h, le, 2);
            out[i] = half_to_float(h);
        } else if (x->width == 4) {
            memcpy(&out[i], le, 4);
        } else {
            double d;
            memcpy(&d, le, 8);
            if (isfinite(d) && fabs(d) > FLT_MAX) {
                size_t elem = x->to == NPY_C64 ? i / 2 : i;
                return d2_fail(e, D2_EINPUT, "%s: element %zu is %g, beyond float32's range "
                               "(+-3.4e38): it cannot be converted", path, elem, d);
            }
            out[i] = (float)d;
        }
    }
    return 0;
}

int npy_read(const char *path, npy_array *a, d2_err *e)
{
    int rc = D2_EINPUT;
    char *hdr = NULL;
    unsigned char *raw = NULL;
    memset(a, 0, sizeof *a);
    FILE *f;
    if ((rc = d2_fopen_input(path, &f, e))) return rc;
    rc = D2_EINPUT;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        d2_fail(e, D2_EINPUT, "%s: not a regular file", path);
        goto fail;
    }
    unsigned char pre[12];
    size_t got = fread(pre, 1, 10, f);
    if (got < 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        d2_fail(e, D2_EINPUT, "%s: not a .npy file (no \\x93NUMPY magic at the start)", path);
        goto fail;
    }
    int major = pre[6], minor = pre[7];
    size_t hlen, pre_len;
    if (major == 1) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
        pre_len = 10;
    } else if (major == 2 || major == 3) {
        if (fread(pre + 10, 1, 2, f) != 2) {
            d2_fail(e, D2_EINPUT, "%s: truncated .npy header", path);
            goto fail;
        }
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 |
               (size_t)pre[11] << 24;
        pre_len = 12;
    } else {
        d2_fail(e, D2_EINPUT, "%s: .npy format version %d.%d; expected 1.0, 2.0 or 3.0", path,
                major, minor);
        goto fail;
    }
    if (minor != 0) {
        d2_fail(e, D2_EINPUT, "%s: .npy format version %d.%d; expected 1.0, 2.0 or 3.0", path,
                major, minor);
        goto fail;
    }
    if (hlen > NPY_MAX_HEADER) {
        d2_fail(e, D2_EINPUT, "%s: .npy header is %zu bytes; the limit is %d (header too long)",
                path, hlen, NPY_MAX_HEADER);
        goto fail;
    }
    hdr = d2_malloc(hlen + 1, "npy header", e);
    if (!hdr) {
        rc = D2_EIO;
        goto fail;
    }
    if (fread(hdr, 1, hlen, f) != hlen) {
        d2_fail(e, D2_EINPUT, "%s: truncated .npy header (%zu bytes announced)", path, hlen);
        goto fail;
    }
    hdr[hlen] = 0;
    if (memchr(hdr, 0, hlen)) {
        d2_fail(e, D2_EINPUT, "%s: malformed .npy header: contains a NUL byte", path);
        goto fail;
    }
    const npy_enc *enc = NULL;
    if (parse_header(path, hdr, hlen, a, &enc, e)) goto fail;
    size_t count = (size_t)(data_bytes(a->dtype, a->ndim, a->shape) / item_size(a->dtype));
    unsigned long long want = (unsigned long long)count * enc_size(enc);
    unsigned long long have = (unsigned long long)st.st_size - pre_len - hlen;
    if (have != want) {
        char s[96];
        shape_str(s, sizeof s, a->ndim, a->shape);
        d2_fail(e, D2_EINPUT, "%s: %s data for shape %s needs %llu bytes; found %llu (%s)", path,
                enc->descr, s, want, have,
                have < want ? "file truncated" : "extra bytes after the data");
        goto fail;
    }
    raw = d2_malloc((size_t)want, path, e);
    if (!raw) {
        rc = D2_EIO;
        goto fail;
    }
    if (fread(raw, 1, (size_t)want, f) != want) {
        d2_fail(e, D2_EIO, "%s: read failed: %s", path, ferror(f) ? strerror(errno) : "short read");
        rc = D2_EIO;
        goto fail;
    }
    if (enc->width == 4 && !enc->big) {
        a->data = raw;
        raw = NULL;
    } else {
        a->data = d2_malloc(count * item_size(a->dtype), path, e);
        if (!a->data) {
            rc = D2_EIO;
            goto fail;
        }
        if (convert(path, enc, raw, count * (enc->to == NPY_C64 ? 2 : 1), a->data, e)) goto fail;
        a->converted_from = enc->name;
    }
    free(raw);
    fclose(f);
    free(hdr);
    return 0;
fail:
    if (e && e->code) rc = e->code;
    free(hdr);
    free(raw);
    fclose(f);
    npy_free(a);
    return rc;
}

int npy_write(const char *path, npy_dtype dtype, int ndim, const size_t *shape, const void *data,
              d2_err *e)
{
    if (ndim < 1 || ndim > 3)
        return d2_fail(e, D2_EUSAGE, "%s: cannot write a %d-D array; 1 to 3 dimensions", path,
                       ndim);
    unsigned long long bytes = data_bytes(dtype, ndim, shape);
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0) bytes = 0;
    if (!bytes)
        return d2_fail(e, D2_EUSAGE, "%s: cannot write an empty array or one over 1 GiB", path);
    char s[96], dict[256];
    shape_str(s, sizeof s, ndim, shape);
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     dtype_descr(dtype), s);
    /* Pad with spaces so magic + version + length + dict + '\n' is a
     * multiple of 64, as numpy does, so the data is aligned for mmap. */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    char pre[10] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0, (char)(hlen & 0xff),
                    (char)(hlen >> 8)};
    d2_out *o = d2_out_open(path, e);
    if (!o) return e ? e->code : D2_EIO;
    FILE *f = d2_out_fp(o);
    fwrite(pre, 1, sizeof pre, f);
    fwrite(dict, 1, (size_t)n, f);
    for (size_t i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(data, 1, (size_t)bytes, f); /* errors surface in commit through ferror */
    return d2_out_commit(o, e);
}

int npy_read_map(const char *path, float **out, int *rows, int *cols, d2_err *e)
{
    npy_array a;
    *out = NULL;
    int rc = npy_read(path, &a, e);
    if (rc) return rc;
    if (a.dtype != NPY_F32 || a.ndim != 2) {
        char s[96];
        shape_str(s, sizeof s, a.ndim, a.shape);
        rc = d2_fail(e, D2_EINPUT, "%s: %s array of shape %s; expected a 2-D float32 map (<f4)",
                     path, dtype_descr(a.dtype), s);
        npy_free(&a);
        return rc;
    }
    if (a.shape[0] > 1000000 || a.shape[1] > 1000000) {
        rc = d2_fail(e, D2_EINPUT, "%s: map of %zu x %zu is too large", path, a.shape[0],
                     a.shape[1]);
        npy_free(&a);
        return rc;
    }
    const float *v = a.data;
    size_t n = npy_count(&a);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            rc = d2_fail(e, D2_EINPUT, "%s: value at [%zu, %zu] is %s; expected finite numbers",
                         path, i / a.shape[1], i % a.shape[1], isnan(v[i]) ? "NaN" : "infinite");
            npy_free(&a);
            return rc;
        }
    *rows = (int)a.shape[0];
    *cols = (int)a.shape[1];
    *out = a.data;
    return 0;
}
