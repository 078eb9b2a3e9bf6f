/* Export inputs other than a model folder: bare phase maps (.npy float32
 * radians from PyTorch / JAX, or a grey PNG with a stated phase range). */
#include "export/export.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/fileio.h"
#include "core/image.h"
#include "core/npy.h"

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

static int check_square_finite(const char *path, const float *v, size_t rows, size_t cols,
                               d2_err *e)
{
    if (rows != cols)
        return d2_fail(e, D2_EINPUT, "%s: phase map is %zu x %zu: layers must be square (n, n)",
                       path, rows, cols);
    if (rows < 1 || rows > D2_MAX_N)
        return d2_fail(e, D2_EINPUT, "%s: phase map is %zu x %zu: n must be 1..%d", path, rows,
                       cols, D2_MAX_N);
    size_t cnt = rows * cols;
    for (size_t k = 0; k < cnt; k++)
        if (!isfinite(v[k]))
            return d2_fail(e, D2_EINPUT, "%s: phase at row %zu, column %zu is %g: every phase "
                           "must be finite (NaN or Inf in the trained map?)", path, k / cols,
                           k % cols, (double)v[k]);
    return 0;
}

int exp_read_phase(const char *path, int have_range, double lo_rad, double hi_rad, float **out,
                   int *n, const char **converted, d2_err *e)
{
    *out = NULL;
    *n = 0;
    if (converted) *converted = NULL;
    int rc;
    if (ends_with(path, ".png")) {
        if (!have_range)
            return d2_fail(e, D2_EUSAGE, "%s: a PNG phase map needs its phase range "
                           "(--png-range-rad LO:HI, e.g. 0:6.2832)", path);
        if (!(isfinite(lo_rad) && isfinite(hi_rad) && hi_rad > lo_rad))
            return d2_fail(e, D2_EUSAGE, "%s: PNG phase range %g:%g rad: need LO < HI", path,
                           lo_rad, hi_rad);
        /* A colour PNG (e.g. a twilight phase preview) read as luminance would
         * give a meaningless phase: refuse it. IHDR colour type is byte 25. */
        unsigned char hdr[26];
        FILE *f;
        if ((rc = d2_fopen_input(path, &f, e))) return rc;
        size_t got = fread(hdr, 1, sizeof hdr, f);
        fclose(f);
        if (got == sizeof hdr && !memcmp(hdr, "\x89PNG", 4) && (hdr[25] & 2))
            return d2_fail(e, D2_EINPUT, "%s: colour PNG: a phase map must be grey (8 or 16 bit, "
                           "black = LO, white = HI); a colour-mapped preview cannot be read back",
                           path);
        float *px = NULL;
        int w = 0, h = 0;
        if ((rc = img_read_gray(path, &w, &h, &px, e))) return rc;
        if ((rc = check_square_finite(path, px, (size_t)h, (size_t)w, e))) {
            free(px);
            return rc;
        }
        for (size_t k = 0; k < (size_t)w * (size_t)h; k++)
            px[k] = (float)(lo_rad + px[k] * (hi_rad - lo_rad));
        *out = px;
        *n = w;
        return 0;
    }
    npy_array a = {0};
    if ((rc = npy_read(path, &a, e))) return rc;
    if (a.dtype != NPY_F32) {
        const char *what = a.converted_from ? a.converted_from : "complex64";
        npy_free(&a);
        return d2_fail(e, D2_EINPUT, "%s: dtype %s: expected float32 phases in radians "
                       "('<f4'; a complex field is not a phase map: take np.angle)", path, what);
    }
    if (a.ndim != 2) {
        char shape[80] = "";
        size_t used = 0;
        for (int i = 0; i < a.ndim; i++)
            used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%zu", i ? ", " : "",
                                     a.shape[i]);
        npy_free(&a);
        return d2_fail(e, D2_EINPUT, "%s: shape (%s): expected a 2-D phase map (n, n); save one "
                       "file per layer", path, shape);
    }
    if ((rc = check_square_finite(path, a.data, a.shape[0], a.shape[1], e))) {
        npy_free(&a);
        return rc;
    }
    *out = a.data;
    *n = (int)a.shape[0];
    if (converted) *converted = a.converted_from;
    return 0;
}

int exp_model_from_phases(const exp_phase_input *in, d2_model *m, d2_err *e)
{
    memset(m, 0, sizeof *m);
    m->test_accuracy = -1;
    int rc;
    if (in->nfiles < 1 || in->nfiles > D2_MAX_LAYERS)
        return d2_fail(e, D2_EUSAGE, "%d phase maps: give 1 to %d (one per layer)", in->nfiles,
                       D2_MAX_LAYERS);
    if (!(isfinite(in->pitch_mm) && in->pitch_mm > 0 && in->pitch_mm <= 100))
        return d2_fail(e, D2_EUSAGE, "pitch %g mm: bare phase maps need --pitch-mm in (0, 100]",
                       in->pitch_mm);
    if (!(isfinite(in->wavelength_mm) && in->wavelength_mm > 0))
        return d2_fail(e, D2_EUSAGE, "wavelength %g mm: bare phase maps need --frequency-thz or "
                       "--wavelength-mm (> 0)", in->wavelength_mm);
    int L = in->nfiles;
    if (in->ngaps != 0 && in->ngaps != 1 && in->ngaps != L + 1)
        return d2_fail(e, D2_EUSAGE, "%d gaps given for %d layers: give one gap for all, or %d "
                       "(input->layer 1, ..., layer %d->detector)", in->ngaps, L, L + 1, L);
    for (int i = 0; i < in->ngaps; i++)
        if (!(isfinite(in->gaps_mm[i]) && in->gaps_mm[i] > 0 && in->gaps_mm[i] <= 10000))
            return d2_fail(e, D2_EUSAGE, "gap %d: %g mm: must be in (0, 10000]", i + 1,
                           in->gaps_mm[i]);

    d2_geom g0;
    geom_default(&g0);
    d2_geom *g = &m->g;
    train_opts_default(&m->t);
    *g = g0;
    if (in->note && in->note_cap) in->note[0] = 0;
    int nconv = 0;
    for (int k = 0; k < L; k++) {
        float *ph = NULL;
        int n = 0;
        const char *conv = NULL;
        if ((rc = exp_read_phase(in->files[k], in->png_range, in->png_lo_rad, in->png_hi_rad, &ph,
                                 &n, &conv, e)))
            goto fail;
        /* float32 holds a phase to about 4e-7 rad at 2 pi: far below any
         * printer's height step, so the conversion is worth a note only. */
        if (conv && in->note && in->note_cap && nconv++ == 0)
            snprintf(in->note, in->note_cap, "%s: %s phases converted to float32 (rounding "
                     "below 1e-6 rad)%s", in->files[k], conv, L > 1 ? "; same for any other "
                     "such layer" : "");
        m->phase[k] = ph;
        if (k == 0) {
            g->n = n;
        } else if (n != g->n) {
            rc = d2_fail(e, D2_EINPUT, "%s: phase map is %d x %d but %s is %d x %d: every layer "
                         "must have the same size", in->files[k], n, n, in->files[0], g->n, g->n);
            goto fail;
        }
    }
    g->layers = L;
    g->pitch_mm = in->pitch_mm;
    g->wavelength_mm = in->wavelength_mm;
    for (int i = 0; i <= L; i++)
        g->gap_mm[i] = in->ngaps == 0 ? 30.0 : in->gaps_mm[in->ngaps == 1 ? 0 : i];
    for (int i = L + 1; i <= D2_MAX_LAYERS; i++) g->gap_mm[i] = 0;
    /* Aperture and detectors: the default layout scaled to this plane. */
    double s = (g->n * g->pitch_mm) / (g0.n * g0.pitch_mm);
    g->aperture_mm = g0.aperture_mm * s;
    g->det_size_mm = g0.det_size_mm * s;
    for (int k = 0; k < g0.ndet; k++) {
        g->det_x_mm[k] = g0.det_x_mm[k] * s;
        g->det_y_mm[k] = g0.det_y_mm[k] * s;
    }
    g->coupled = 0;
    return 0;
fail:
    model_free(m);
    memset(m, 0, sizeof *m);
    return rc;
}
