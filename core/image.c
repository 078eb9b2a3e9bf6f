#include "image.h"

#include <errno.h>
#include <math.h>
#include <plplot.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"

/* Largest image accepted on read or write: 2^27 pixels (e.g. 11585 x 11585),
 * 512 MiB as floats. */
#define IMG_MAX_PIXELS (1LL << 27)

static int check_size(const char *path, long long w, long long h, d2_err *e)
{
    if (w < 1 || h < 1 || w > 0x7fffffff || h > 0x7fffffff || w * h > IMG_MAX_PIXELS)
        return d2_fail(e, D2_EINPUT, "%s: image size %lld x %lld is outside 1 .. %lld pixels",
                       path, w, h, IMG_MAX_PIXELS);
    return 0;
}

/* Refuses, before anything is allocated, an image whose header promises more
 * pixels than the file could hold: deflate expands at most 1032-fold, so W x H
 * samples of the header's bit depth and colour type need at least
 * rows x (row bytes + 1) / 1032 bytes of compressed data. A file below that is
 * truncated or a decompression bomb. ihdr points at IHDR's 13 data bytes. */
static int check_compressed_size(const char *path, const unsigned char *ihdr,
                                 unsigned long long file_bytes, d2_err *e)
{
    unsigned long long w = (unsigned long long)ihdr[0] << 24 | (unsigned long long)ihdr[1] << 16 |
                           (unsigned long long)ihdr[2] << 8 | ihdr[3];
    unsigned long long h = (unsigned long long)ihdr[4] << 24 | (unsigned long long)ihdr[5] << 16 |
                           (unsigned long long)ihdr[6] << 8 | ihdr[7];
    unsigned depth = ihdr[8], type = ihdr[9];
    unsigned chans = type == 2 ? 3 : type == 4 ? 2 : type == 6 ? 4 : 1;
    if (check_size(path, (long long)w, (long long)h, e)) return D2_EINPUT;
    if (depth < 1 || depth > 16) return 0; /* libpng reports it */
    unsigned long long raw = h * ((w * chans * depth + 7) / 8 + 1);
    unsigned long long need = raw / 1032;
    if (file_bytes < need)
        return d2_fail(e, D2_EINPUT,
                       "%s: the header promises %llu x %llu pixels (%llu bytes of image data), "
                       "which needs at least %llu bytes of compressed data; the file has %llu "
                       "(truncated, or a decompression bomb)",
                       path, w, h, raw, need, file_bytes);
    return 0;
}

/* Encodes to memory, then writes atomically through d2_write_file. */
static int write_png(const char *path, int w, int h, png_uint_32 format, const void *px,
                     d2_err *e)
{
    if (check_size(path, w, h, e)) return D2_EUSAGE;
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = format;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&im, NULL, &size, 0, px, 0, NULL))
        return d2_fail(e, D2_EIO, "%s: cannot encode PNG: %s", path, im.message);
    void *buf = d2_malloc(size, "PNG encoding", e);
    if (!buf) return D2_EIO;
    if (!png_image_write_to_memory(&im, buf, &size, 0, px, 0, NULL)) {
        free(buf);
        return d2_fail(e, D2_EIO, "%s: cannot encode PNG: %s", path, im.message);
    }
    int rc = d2_write_file(path, buf, size, e);
    free(buf);
    return rc;
}

int img_write_gray8(const char *path, int w, int h, const uint8_t *px, d2_err *e)
{
    return write_png(path, w, h, PNG_FORMAT_GRAY, px, e);
}

int img_write_gray16(const char *path, int w, int h, const uint16_t *px, d2_err *e)
{
    /* The linear 16-bit format is stored unchanged (with gAMA 1.0), so the
     * values read back exactly. */
    return write_png(path, w, h, PNG_FORMAT_LINEAR_Y, px, e);
}

int img_write_rgb8(const char *path, int w, int h, const uint8_t *px, d2_err *e)
{
    return write_png(path, w, h, PNG_FORMAT_RGB, px, e);
}

/* Colour-map anchors: (position 0..1, r, g, b), interpolated linearly.
 * viridis and inferno (Smith and van der Walt, CC0) are sampled every 16th
 * entry of their 256-entry tables, with extra anchors where the curves bend;
 * the cyclic map samples matplotlib's twilight (510 entries) every 32nd
 * entry and returns to its first colour at t = 1. */
typedef struct { float t, r, g, b; } anchor;

#define A256(i, r, g, b) {(float)(i) / 255.0f, r, g, b}
static const anchor viridis[] = {
    A256(0, 0.267004f, 0.004874f, 0.329415f),   A256(16, 0.282327f, 0.094955f, 0.417331f),
    A256(32, 0.278826f, 0.175490f, 0.483397f),  A256(48, 0.258965f, 0.251537f, 0.524736f),
    A256(64, 0.229739f, 0.322361f, 0.545706f),  A256(80, 0.199430f, 0.387607f, 0.554642f),
    A256(96, 0.172719f, 0.448791f, 0.557885f),  A256(112, 0.149039f, 0.508051f, 0.557250f),
    A256(128, 0.127568f, 0.566949f, 0.550556f), A256(144, 0.120638f, 0.625828f, 0.533488f),
    A256(160, 0.157851f, 0.683765f, 0.501686f), A256(176, 0.246070f, 0.738910f, 0.452024f),
    A256(192, 0.369214f, 0.788888f, 0.382914f), A256(208, 0.515992f, 0.831158f, 0.294279f),
    A256(224, 0.678489f, 0.863742f, 0.189503f), A256(240, 0.845561f, 0.887322f, 0.099702f),
    A256(248, 0.926106f, 0.897330f, 0.104071f), A256(255, 0.993248f, 0.906157f, 0.143936f),
};
static const anchor inferno[] = {
    A256(0, 0.001462f, 0.000466f, 0.013866f),   A256(16, 0.042253f, 0.028139f, 0.141141f),
    A256(32, 0.129285f, 0.047293f, 0.290788f),  A256(48, 0.238273f, 0.036621f, 0.396353f),
    A256(64, 0.341500f, 0.062325f, 0.429425f),  A256(80, 0.441207f, 0.099338f, 0.431594f),
    A256(96, 0.540920f, 0.134729f, 0.415123f),  A256(112, 0.640135f, 0.171438f, 0.381065f),
    A256(128, 0.735683f, 0.215906f, 0.330245f), A256(144, 0.822386f, 0.275197f, 0.266085f),
    A256(160, 0.894305f, 0.353399f, 0.193584f), A256(176, 0.946965f, 0.449191f, 0.115272f),
    A256(192, 0.978422f, 0.557937f, 0.034931f), A256(200, 0.985952f, 0.615750f, 0.025592f),
    A256(208, 0.987874f, 0.675267f, 0.065257f), A256(224, 0.974638f, 0.797692f, 0.206332f),
    A256(240, 0.947594f, 0.917399f, 0.410665f), A256(248, 0.954529f, 0.965896f, 0.540361f),
    A256(255, 0.988362f, 0.998364f, 0.644924f),
};
#define A510(i, r, g, b) {(float)(i) / 510.0f, r, g, b}
static const anchor twilight[] = {
    A510(0, 0.885750f, 0.850009f, 0.887974f),   A510(32, 0.761869f, 0.807119f, 0.830266f),
    A510(64, 0.577812f, 0.706131f, 0.778253f),  A510(96, 0.444932f, 0.588506f, 0.755131f),
    A510(128, 0.383122f, 0.457063f, 0.729846f), A510(160, 0.369660f, 0.311661f, 0.674573f),
    A510(192, 0.349245f, 0.161615f, 0.556348f), A510(224, 0.266732f, 0.074344f, 0.354203f),
    A510(240, 0.217378f, 0.065860f, 0.266342f), A510(255, 0.184880f, 0.079426f, 0.213077f),
    A510(272, 0.232663f, 0.067557f, 0.230376f), A510(288, 0.300773f, 0.076618f, 0.261793f),
    A510(320, 0.463891f, 0.120126f, 0.311103f), A510(352, 0.604084f, 0.214603f, 0.312327f),
    A510(384, 0.703162f, 0.347187f, 0.324089f), A510(416, 0.765455f, 0.496832f, 0.393503f),
    A510(448, 0.802605f, 0.650338f, 0.549417f), A510(480, 0.852519f, 0.787349f, 0.759499f),
    A510(510, 0.885750f, 0.850009f, 0.887974f),
};

static uint8_t to_byte(float x)
{
    if (!(x > 0)) return 0;
    if (x >= 1) return 255;
    return (uint8_t)(x * 255.0f + 0.5f);
}

static void lerp(const anchor *a, size_t n, float t, uint8_t rgb[3])
{
    size_t i = 0;
    while (i + 2 < n && t > a[i + 1].t) i++;
    float f = (t - a[i].t) / (a[i + 1].t - a[i].t);
    if (f < 0) f = 0;
    if (f > 1) f = 1;
    rgb[0] = to_byte(a[i].r + f * (a[i + 1].r - a[i].r));
    rgb[1] = to_byte(a[i].g + f * (a[i + 1].g - a[i].g));
    rgb[2] = to_byte(a[i].b + f * (a[i + 1].b - a[i].b));
}

void img_cmap_rgb(img_cmap cmap, float t, uint8_t rgb[3])
{
    if (!(t >= 0)) t = 0; /* NaN too */
    if (t > 1) t = 1;
    switch (cmap) {
    case CMAP_VIRIDIS: lerp(viridis, sizeof viridis / sizeof *viridis, t, rgb); break;
    case CMAP_INFERNO: lerp(inferno, sizeof inferno / sizeof *inferno, t, rgb); break;
    case CMAP_TWILIGHT: lerp(twilight, sizeof twilight / sizeof *twilight, t, rgb); break;
    default: rgb[0] = rgb[1] = rgb[2] = to_byte(t); break;
    }
}

int img_write_colormap(const char *path, int w, int h, const float *v, float lo, float hi,
                       img_cmap cmap, int scale, d2_err *e)
{
    if (scale < 1 || scale > 64)
        return d2_fail(e, D2_EUSAGE, "%s: colour-map scale %d is outside 1..64", path, scale);
    if (check_size(path, w, h, e) || check_size(path, (long long)w * scale, (long long)h * scale, e))
        return D2_EUSAGE;
    int W = w * scale, H = h * scale;
    uint8_t *px = d2_malloc((size_t)W * (size_t)H * 3, "colour-mapped image", e);
    if (!px) return D2_EIO;
    float span = hi - lo;
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            float x = v[(size_t)i * (size_t)w + (size_t)j];
            float t = span != 0 && isfinite(span) ? (x - lo) / span : 0.0f;
            uint8_t c[3];
            img_cmap_rgb(cmap, t, c);
            for (int a = 0; a < scale; a++) {
                uint8_t *row = px + ((size_t)(i * scale + a) * (size_t)W + (size_t)j * scale) * 3;
                for (int b = 0; b < scale; b++) memcpy(row + 3 * b, c, 3);
            }
        }
    int rc = img_write_rgb8(path, W, H, px, e);
    free(px);
    return rc;
}

static const char *format_name(char *buf, size_t cap, png_uint_32 f)
{
    snprintf(buf, cap, "%s%s%s, %d-bit", f & PNG_FORMAT_FLAG_COLORMAP ? "palette " : "",
             f & PNG_FORMAT_FLAG_COLOR ? "RGB" : "grey", f & PNG_FORMAT_FLAG_ALPHA ? "+alpha" : "",
             f & PNG_FORMAT_FLAG_LINEAR ? 16 : 8);
    return buf;
}

int img_read_gray(const char *path, int *w, int *h, float **out, d2_err *e)
{
    int rc = D2_EINPUT;
    void *buf = NULL;
    float *px = NULL;
    *out = NULL;
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    /* The checked open, then libpng reads the same stream. */
    FILE *probe;
    if ((rc = d2_fopen_input(path, &probe, e))) return rc;
    rc = D2_EINPUT;
    unsigned char sig[33]; /* signature and the IHDR chunk */
    size_t got = fread(sig, 1, sizeof sig, probe);
    struct stat st;
    int have_size = fstat(fileno(probe), &st) == 0 && S_ISREG(st.st_mode);
    if (got < 8 || png_sig_cmp(sig, 0, 8) != 0) {
        fclose(probe);
        return d2_fail(e, D2_EINPUT, "%s: not a PNG file (bad signature)", path);
    }
    if (got == sizeof sig && have_size && !memcmp(sig + 12, "IHDR", 4) &&
        (rc = check_compressed_size(path, sig + 16, (unsigned long long)st.st_size, e))) {
        fclose(probe);
        return rc;
    }
    rc = D2_EINPUT;
    if (fseek(probe, 0, SEEK_SET) != 0 || !png_image_begin_read_from_stdio(&im, probe)) {
        fclose(probe);
        return d2_fail(e, D2_EINPUT, "%s: cannot read PNG: %s", path, im.message);
    }
    if (check_size(path, im.width, im.height, e)) goto done;
    /* Read the samples in the file's own layout (palette expanded to RGB):
     * no gamma conversion, so stored values come back as stored. */
    png_uint_32 native = im.format & ~(png_uint_32)PNG_FORMAT_FLAG_COLORMAP;
    im.format = native;
    int linear = !!(native & PNG_FORMAT_FLAG_LINEAR);
    int chans = PNG_IMAGE_SAMPLE_CHANNELS(native);
    size_t n = (size_t)im.width * im.height;
    buf = d2_malloc(PNG_IMAGE_SIZE(im), "PNG pixels", e);
    px = d2_malloc(n * sizeof *px, "PNG pixels", e);
    if (!buf || !px) {
        rc = D2_EIO;
        goto done;
    }
    if (!png_image_finish_read(&im, NULL, buf, 0, NULL)) {
        char fname[64];
        rc = d2_fail(e, D2_EINPUT, "%s: cannot decode PNG (%s): %s", path,
                     format_name(fname, sizeof fname, native), im.message);
        goto done;
    }
    int color = !!(native & PNG_FORMAT_FLAG_COLOR), alpha = !!(native & PNG_FORMAT_FLAG_ALPHA);
    float s = linear ? 1.0f / 65535.0f : 1.0f / 255.0f;
    for (size_t i = 0; i < n; i++) {
        float c[4];
        for (int k = 0; k < chans; k++)
            c[k] = s * (linear ? (float)((const uint16_t *)buf)[i * (size_t)chans + (size_t)k]
                               : (float)((const uint8_t *)buf)[i * (size_t)chans + (size_t)k]);
        float y = color ? 0.2126f * c[0] + 0.7152f * c[1] + 0.0722f * c[2] : c[0];
        /* Alpha is coverage over black; libpng's 16-bit output is already
         * premultiplied. */
        if (alpha && !linear) y *= c[chans - 1];
        px[i] = y < 0 ? 0 : y > 1 ? 1 : y;
    }
    *w = (int)im.width;
    *h = (int)im.height;
    *out = px;
    px = NULL;
    rc = 0;
done:
    png_image_free(&im);
    fclose(probe);
    free(buf);
    free(px);
    return rc;
}

int img_plot_png_available(void)
{
    const char **menu = calloc(128, sizeof *menu), **devs = calloc(128, sizeof *devs);
    int n = 128, ok = 0;
    if (menu && devs) {
        plgFileDevs(&menu, &devs, &n);
        for (int i = 0; i < n; i++)
            if (devs[i] && !strcmp(devs[i], "pngcairo")) ok = 1;
    }
    free(menu);
    free(devs);
    return ok;
}
