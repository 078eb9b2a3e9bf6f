/* Stacks (a model or an export as the simulator sees it), binding a config to
 * a stack, the random streams and one perturbed trial on the shared forward
 * model. */
#include "tolerance/tol_int.h"

#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "core/npy.h"
#include "export/export.h"
#include "optics/optics.h"

/* ---- stacks ------------------------------------------------------------- */

void tol_stack_free(tol_stack *s)
{
    if (!s) return;
    model_free(&s->m);
    for (int l = 0; l < D2_MAX_LAYERS; l++) free(s->height_mm[l]);
    memset(s, 0, sizeof *s);
}

/* The export's material, base, Z step and heights. */
static int read_export(tol_stack *s, const char *dir, d2_err *e)
{
    export_folder x;
    int rc = export_folder_load(dir, &x, e);
    if (rc) return rc;
    double wl = x.wavelength_mm;
    if (!x.have_material || !(wl > 0)) {
        rc = d2_fail(e, D2_EINPUT, "%s: missing key \"%s\"", x.json_path,
                     x.have_material ? "wavelength_mm" : "material");
        goto done;
    }
    if (x.n != s->m.g.n || x.layers != s->m.g.layers) {
        rc = d2_fail(e, D2_EINPUT, "%s: %d layers of %d x %d, the loaded model has %d of %d x %d",
                     x.json_path, x.layers, x.n, x.n, s->m.g.layers, s->m.g.n, s->m.g.n);
        goto done;
    }
    if (fabs(wl - s->m.g.wavelength_mm) > 1e-9 * wl) {
        rc = d2_fail(e, D2_EINPUT, "%s: key \"wavelength_mm\" = %g differs from the loaded "
                     "model's %g mm", x.json_path, wl, s->m.g.wavelength_mm);
        goto done;
    }
    s->index = x.index;
    s->kappa = x.kappa;
    s->base_mm = x.base_mm;
    s->z_step_mm = x.have_printer ? x.printer.z_step_mm : 0;
    if (x.have_printer) s->min_feature_mm = x.printer.min_feature_mm;
    for (int l = 0; l < x.layers; l++) {
        s->height_mm[l] = x.height_mm[l];
        x.height_mm[l] = NULL;
    }
done:
    export_folder_free(&x);
    return rc;
}

int tol_stack_init(tol_stack *s, d2_model *m, const char *export_dir, const char *name,
                   const char *path, d2_err *e)
{
    memset(s, 0, sizeof *s);
    s->m = *m;
    memset(m, 0, sizeof *m);
    snprintf(s->name, sizeof s->name, "%s", name ? name : "model");
    snprintf(s->path, sizeof s->path, "%s", path ? path : "");
    const d2_geom *g = &s->m.g;
    size_t nn = (size_t)g->n * g->n;
    int rc;
    if (export_dir) {
        s->is_export = 1;
        s->absorbing = 1;
        if ((rc = read_export(s, export_dir, e))) goto fail;
        return 0;
    }
    s->index = g->index;
    s->kappa = g->kappa;
    s->base_mm = g->base_mm;
    s->absorbing = g->coupled;
    s->z_step_mm = s->m.t.quant_z_step_mm;
    /* The thickness the phase implies, as net_phase_to_t takes it for the
     * coupled amplitude. */
    double c = opt_mm_per_rad(g->wavelength_mm, s->index);
    for (int l = 0; l < g->layers; l++) {
        if (!(s->height_mm[l] = d2_malloc(nn * sizeof(float), "thickness map", e))) {
            rc = D2_EIO;
            goto fail;
        }
        for (size_t i = 0; i < nn; i++)
            s->height_mm[l][i] = (float)opt_thickness_mm(s->m.phase[l][i], s->base_mm, c);
    }
    return 0;
fail:
    tol_stack_free(s);
    return rc;
}

/* ---- binding ------------------------------------------------------------ */

void tol_mag_free(tol_mag *mag)
{
    if (!mag) return;
    free(mag->mask);
    memset(mag, 0, sizeof *mag);
}

int tol_bind(const tol_config *c, const tol_stack *s, tol_mag *mag, d2_err *e)
{
    const d2_geom *g = &s->m.g;
    int L = g->layers;
    memset(mag, 0, sizeof *mag);
    mag->correlation_mm = c->correlation_mm;
    for (int k = 0; k < TOL_NKINDS; k++) {
        const tol_item *it = &c->item[k];
        mag->dist[k] = it->dist;
        if (!it->nval) continue;
        int nl = tol_kinfo[k].per_layer ? L : 1;
        if (it->nval != 1 && it->nval != nl)
            return d2_fail(e, D2_EINPUT,
                           "tolerance %s: %d per-layer values, but %s has %d layers (give one "
                           "number for all, or %d)",
                           tol_kinfo[k].name, it->nval, s->name, L, L);
        double f = 1;
        int unit = it->unit;
        if (unit == TOL_U_PX) f = g->pitch_mm, unit = TOL_U_MM;
        if (unit == TOL_U_WAVELENGTHS) f = g->wavelength_mm, unit = TOL_U_MM;
        for (int l = 0; l < nl; l++) mag->v[k][l] = f * it->val[it->nval == 1 ? 0 : l];
        mag->unit[k] = unit;
        if (k == TOL_QUANTIZE) {
            if (c->quantize_printer) {
                if (!(s->z_step_mm > 0))
                    return d2_fail(e, D2_EINPUT,
                                   "--quantize printer: %s is a model without a printer Z step; "
                                   "export it for a printer first, or give quantize_step_mm or "
                                   "a number of levels",
                                   s->name);
                mag->v[k][0] = s->z_step_mm;
            }
            if (unit == TOL_U_LEVELS) {
                mag->v[k][0] = 2 * M_PI / it->val[0];
                mag->unit[k] = TOL_U_RAD;
                mag->quant_levels = 1;
            }
        }
        if (k == TOL_WAVELENGTH) {
            double lim = unit == TOL_U_THZ ? 0.5 * opt_frequency_thz(g->wavelength_mm)
                                           : 0.5 * g->wavelength_mm;
            if (mag->v[k][0] >= lim)
                return d2_fail(e, D2_EINPUT, "tolerance %s = %g %s: must be below half the "
                               "design value (%g %s) for %s",
                               unit == TOL_U_THZ ? "frequency_error_thz" : "wavelength_error_mm",
                               mag->v[k][0], tol_unit_name(unit), lim, tol_unit_name(unit), s->name);
        }
        if (k == TOL_AXIAL) {
            /* Two neighbouring layers moving towards each other must not meet. */
            double gmin = INFINITY, dmax = 0;
            for (int j = 0; j <= L; j++) gmin = fmin(gmin, g->gap_mm[j]);
            for (int l = 0; l < L; l++) dmax = fmax(dmax, mag->v[k][l]);
            if (2 * dmax >= gmin)
                return d2_fail(e, D2_EINPUT, "tolerance axial = %g mm: two layers could touch "
                               "(smallest gap of %s: %g mm)", dmax, s->name, gmin);
        }
        if (k == TOL_HEIGHT_CORR && c->correlation_mm > 0.5 * g->n * g->pitch_mm)
            return d2_fail(e, D2_EINPUT,
                           "tolerance correlation_length_mm = %g: at most half the plate side "
                           "(%g mm) for %s",
                           c->correlation_mm, 0.5 * g->n * g->pitch_mm, s->name);
        for (int l = 0; l < nl; l++)
            if (mag->v[k][l] > 0) mag->on[k] = 1;
    }
    if (mag->on[TOL_KAPPA] && !s->absorbing) mag->on[TOL_KAPPA] = 0;
    if (c->stencil) {
        if (!c->stencil_fn)
            return d2_fail(e, D2_EUSAGE, "input_mask \"stencil\": no stencil maker given "
                           "(tol_config.stencil_fn; d2fab tolerance sets it)");
        mag->stencil = 1;
        mag->stencil_fn = c->stencil_fn;
        mag->stencil_ctx = c->stencil_ctx;
        mag->stencil_threshold = c->stencil_threshold;
        mag->stencil_min_feature_mm = c->stencil_min_feature_mm > 0 ? c->stencil_min_feature_mm
                                      : s->min_feature_mm > 0      ? s->min_feature_mm
                                                                   : 0.1;
        mag->on[TOL_MASK] = 1;
        mag->v[TOL_MASK][0] = 1;
        mag->unit[TOL_MASK] = TOL_U_NONE;
    }
    if (c->mask_png[0]) {
        int w, h;
        float *px = NULL;
        int rc = img_read_gray(c->mask_png, &w, &h, &px, e);
        if (rc) return rc;
        if (w != g->n || h != g->n) {
            free(px);
            return d2_fail(e, D2_EINPUT,
                           "%s: %d x %d pixels; an input mask must be the input plane of %s, %d x "
                           "%d (one pixel per neuron, 0 opaque .. 1 open)",
                           c->mask_png, w, h, s->name, g->n, g->n);
        }
        mag->mask = px;
        mag->on[TOL_MASK] = 1;
        mag->v[TOL_MASK][0] = 1;
        mag->unit[TOL_MASK] = TOL_U_NONE;
    }
    return 0;
}

/* ---- random streams ----------------------------------------------------- */

static uint64_t smix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The seed of one random quantity: the run's seed, a stream (trial) and
 * three indices (perturbation, layer or image, component). */
static uint64_t seed_for(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b, uint64_t c)
{
    return smix(smix(smix(smix(seed) ^ stream) ^ (a << 1)) ^ (b << 4 | c));
}

/* A unit draw: uniform in [-1, 1], or N(0, 1/4) truncated at +-1 (2 sigma). */
static double unit_draw(d2_rng *r, int dist)
{
    if (dist == TOL_NORMAL) {
        for (;;) {
            double x = 0.5 * d2_rng_normal(r);
            if (fabs(x) <= 1) return x;
        }
    }
    return 2 * d2_rng_uniform(r) - 1;
}

void tol_draw_make(tol_draw *d, const tol_mag *mag, int layers, uint64_t seed, uint64_t stream,
                   int only_kind)
{
    memset(d, 0, sizeof *d);
    d->stream = stream;
    for (int k = 0; k < TOL_NKINDS; k++) {
        if (!mag->on[k] || (only_kind >= 0 && k != only_kind)) continue;
        int nl = tol_kinfo[k].per_layer ? layers : 1;
        for (int l = 0; l < nl; l++) {
            if (!(mag->v[k][l] > 0)) continue;
            for (int c = 0; c < tol_kinfo[k].comps; c++) {
                if (tol_kinfo[k].scalar) {
                    d2_rng r;
                    d2_rng_seed(&r, seed_for(seed, stream, (uint64_t)k, (uint64_t)l, (uint64_t)c));
                    d->u[k][l][c] = unit_draw(&r, mag->dist[k]);
                } else {
                    d->u[k][l][c] = 1;
                }
            }
        }
    }
}

/* ---- one trial ---------------------------------------------------------- */

/* The perturbation a (magnitudes, scale, draw) triple stands for. */
typedef struct real {
    layer_pose pose[D2_MAX_LAYERS];
    double scale[D2_MAX_LAYERS];       /* printed pitch / design pitch */
    double hw[D2_MAX_LAYERS], hc[D2_MAX_LAYERS];      /* height error limits, mm */
    double hw_rms[D2_MAX_LAYERS], hc_rms[D2_MAX_LAYERS]; /* realised RMS, mm */
    double qstep;                      /* quantisation step (mm or rad), 0 off */
    double dn, dk;
    double wl_val;                     /* drift in the key's unit */
    double lambda;                     /* drifted wavelength, mm */
    double ddx, ddy;                   /* detector shift, mm */
    double noise;                      /* sigma / nominal mean detector energy */
    int mask;
} real;

static void realise(const tol_mag *mag, double scale, const tol_draw *d, const d2_geom *g, real *r)
{
    memset(r, 0, sizeof *r);
    r->lambda = g->wavelength_mm;
    for (int l = 0; l < g->layers; l++) r->scale[l] = 1;
    if (!d) return;
#define V(k, l, c) (scale * mag->v[k][l] * d->u[k][l][c])
    for (int l = 0; l < g->layers; l++) {
        r->pose[l].dx_mm = V(TOL_LATERAL, l, 0);
        r->pose[l].dy_mm = V(TOL_LATERAL, l, 1);
        r->pose[l].dz_mm = V(TOL_AXIAL, l, 0);
        r->pose[l].rot_deg = V(TOL_ROTATION, l, 0);
        r->scale[l] = 1 + V(TOL_PITCH, l, 0) / 100;
        r->hw[l] = V(TOL_HEIGHT, l, 0);
        r->hc[l] = V(TOL_HEIGHT_CORR, l, 0);
    }
    r->qstep = V(TOL_QUANTIZE, 0, 0);
    r->dn = V(TOL_INDEX, 0, 0);
    r->dk = V(TOL_KAPPA, 0, 0);
    r->wl_val = V(TOL_WAVELENGTH, 0, 0);
    if (r->wl_val != 0) {
        if (mag->unit[TOL_WAVELENGTH] == TOL_U_THZ)
            r->lambda = opt_wavelength_mm(opt_frequency_thz(g->wavelength_mm) + r->wl_val);
        else
            r->lambda = g->wavelength_mm + r->wl_val;
    }
    r->ddx = V(TOL_DET_SHIFT, 0, 0);
    r->ddy = V(TOL_DET_SHIFT, 0, 1);
    r->noise = V(TOL_DET_NOISE, 0, 0);
    r->mask = (mag->mask || mag->stencil) && d->u[TOL_MASK][0][0] > 0;
#undef V
}

/* Names (names != NULL) and/or values (vals != NULL) of the realised
 * perturbation vector, in one fixed order. Returns the count. */
static int vec_fill(const tol_mag *mag, int layers, const real *r, char (*names)[48], double *vals,
                    int max)
{
    int n = 0;
#define PUT(val, ...)                                                 \
    do {                                                              \
        if (n < max) {                                                \
            if (names) snprintf(names[n], 48, __VA_ARGS__);           \
            if (vals) vals[n] = (val);                                \
        }                                                             \
        n++;                                                          \
    } while (0)
    for (int l = 0; l < layers; l++) {
        if (mag->on[TOL_LATERAL] && mag->v[TOL_LATERAL][l] > 0) {
            PUT(r ? r->pose[l].dx_mm : 0, "L%d_lateral_x_mm", l + 1);
            PUT(r ? r->pose[l].dy_mm : 0, "L%d_lateral_y_mm", l + 1);
        }
        if (mag->on[TOL_AXIAL] && mag->v[TOL_AXIAL][l] > 0)
            PUT(r ? r->pose[l].dz_mm : 0, "L%d_axial_mm", l + 1);
        if (mag->on[TOL_ROTATION] && mag->v[TOL_ROTATION][l] > 0)
            PUT(r ? r->pose[l].rot_deg : 0, "L%d_rotation_deg", l + 1);
        if (mag->on[TOL_PITCH] && mag->v[TOL_PITCH][l] > 0)
            PUT(r ? 100 * (r->scale[l] - 1) : 0, "L%d_pitch_error_percent", l + 1);
        if (mag->on[TOL_HEIGHT] && mag->v[TOL_HEIGHT][l] > 0)
            PUT(r ? r->hw_rms[l] : 0, "L%d_height_error_rms_mm", l + 1);
        if (mag->on[TOL_HEIGHT_CORR] && mag->v[TOL_HEIGHT_CORR][l] > 0)
            PUT(r ? r->hc_rms[l] : 0, "L%d_height_error_correlated_rms_mm", l + 1);
    }
    if (mag->on[TOL_QUANTIZE])
        PUT(r ? r->qstep : 0, "quantize_step_%s", mag->quant_levels ? "rad" : "mm");
    if (mag->on[TOL_INDEX]) PUT(r ? r->dn : 0, "index_error");
    if (mag->on[TOL_KAPPA]) PUT(r ? r->dk : 0, "kappa_error");
    if (mag->on[TOL_WAVELENGTH])
        PUT(r ? r->wl_val : 0, "%s",
            mag->unit[TOL_WAVELENGTH] == TOL_U_THZ ? "frequency_error_thz" : "wavelength_error_mm");
    if (mag->on[TOL_DET_SHIFT]) {
        PUT(r ? r->ddx : 0, "detector_shift_x_mm");
        PUT(r ? r->ddy : 0, "detector_shift_y_mm");
    }
    if (mag->on[TOL_DET_NOISE])
        PUT(r ? r->noise : 0, "%s", mag->unit[TOL_DET_NOISE] == TOL_U_SOURCE
                                        ? "detector_noise_of_source" : "detector_noise_relative");
    if (mag->on[TOL_MASK]) PUT(r ? r->mask : 0, "input_mask");
#undef PUT
    return n;
}

int tol_vector_names(const tol_mag *mag, int layers, char (*names)[48], int max)
{
    return vec_fill(mag, layers, NULL, names, NULL, max);
}

struct tol_sim {
    const tol_stack *s;
    d2_net *net;
    int n, L, threads;
    float complex *t0[D2_MAX_LAYERS];  /* nominal transmissions */
    int dirty[D2_MAX_LAYERS];          /* the net holds a perturbed layer */
    double gap[D2_MAX_LAYERS + 1], gap_lambda[D2_MAX_LAYERS + 1]; /* what H holds */
    float complex *sa, *sb;            /* n*n scratch */
    float *dh, *fa, *fb;               /* height error field and correlated-field buffers */
    size_t fcap;
    float **in, **inten;               /* per thread */
    float *det;                        /* count x ndet */
    int det_cap;
    unsigned char *st_bits, *st_bad;   /* stencils of the first st_n test images */
    int st_n, st_unprintable;
};

void tol_sim_free(tol_sim *sim)
{
    if (!sim) return;
    net_free(sim->net);
    for (int l = 0; l < D2_MAX_LAYERS; l++) free(sim->t0[l]);
    for (int t = 0; t < sim->threads; t++) {
        if (sim->in) free(sim->in[t]);
        if (sim->inten) free(sim->inten[t]);
    }
    void *bufs[] = {sim->sa,    sim->sb,  sim->dh,      sim->fa,     sim->fb, sim->in,
                    sim->inten, sim->det, sim->st_bits, sim->st_bad, sim};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

tol_sim *tol_sim_new(const tol_stack *s, int threads, d2_err *e)
{
    if (threads < 1) threads = 1;
    tol_sim *sim = d2_calloc(1, sizeof *sim, "tolerance simulator", e);
    if (!sim) return NULL;
    const d2_geom *g = &s->m.g;
    size_t nn = (size_t)g->n * g->n;
    sim->s = s;
    sim->n = g->n;
    sim->L = g->layers;
    sim->threads = threads;
    if (!(sim->net = net_new(g, threads, e))) goto fail;
    net_set_model(sim->net, &s->m);
    for (int l = 0; l < sim->L; l++) {
        if (!(sim->t0[l] = d2_malloc(nn * sizeof(float complex), "nominal transmission", e)))
            goto fail;
        memcpy(sim->t0[l], net_transmission(sim->net, l), nn * sizeof(float complex));
    }
    for (int k = 0; k <= sim->L; k++) {
        sim->gap[k] = g->gap_mm[k];
        sim->gap_lambda[k] = g->wavelength_mm;
    }
    sim->sa = d2_malloc(nn * sizeof(float complex), "scratch", e);
    sim->sb = d2_malloc(nn * sizeof(float complex), "scratch", e);
    sim->dh = d2_malloc(nn * sizeof(float), "height error", e);
    sim->in = d2_calloc((size_t)threads, sizeof *sim->in, "input planes", e);
    sim->inten = d2_calloc((size_t)threads, sizeof *sim->inten, "intensities", e);
    if (!sim->sa || !sim->sb || !sim->dh || !sim->in || !sim->inten) goto fail;
    for (int t = 0; t < threads; t++)
        if (!(sim->in[t] = d2_malloc(nn * sizeof(float), "input plane", e)) ||
            !(sim->inten[t] = d2_malloc(nn * sizeof(float), "intensity", e)))
            goto fail;
    return sim;
fail:
    tol_sim_free(sim);
    return NULL;
}

/* Adds a white height error field of limit A (uniform +-A, or normal
 * sigma A/2 truncated at A) to dh; returns its RMS. */
static double field_white(float *dh, size_t nn, double A, int dist, uint64_t seed)
{
    d2_rng r;
    d2_rng_seed(&r, seed);
    double ss = 0;
    for (size_t i = 0; i < nn; i++) {
        double v = A * unit_draw(&r, dist);
        dh[i] += (float)v;
        ss += v * v;
    }
    return sqrt(ss / (double)nn);
}

/* Adds a correlated height error field: Gaussian white noise on a grid
 * extended by 3 filter sigmas each side, filtered by a separable Gaussian of
 * sigma = corr / 2 (autocorrelation exp(-r^2 / corr^2)), normalised to unit
 * variance, mapped to the marginal of dist with limit A. Returns its RMS. */
static int field_corr(tol_sim *sim, double A, int dist, double corr_mm, uint64_t seed,
                      double *rms, d2_err *e)
{
    int n = sim->n;
    double sig = 0.5 * corr_mm / sim->s->m.g.pitch_mm;
    int R = (int)ceil(3 * sig);
    if (R < 1) R = 1;
    int m = n + 2 * R;
    size_t need = (size_t)m * m;
    if (need > sim->fcap) {
        free(sim->fa);
        free(sim->fb);
        sim->fa = d2_malloc(need * sizeof(float), "height error field", e);
        sim->fb = d2_malloc(need * sizeof(float), "height error field", e);
        if (!sim->fa || !sim->fb) {
            sim->fcap = 0;
            return D2_EIO;
        }
        sim->fcap = need;
    }
    double kern[2 * R + 1], s2 = 0;
    for (int j = -R; j <= R; j++) {
        kern[j + R] = exp(-0.5 * j * j / (sig * sig));
        s2 += kern[j + R] * kern[j + R];
    }
    d2_rng r;
    d2_rng_seed(&r, seed);
    for (size_t i = 0; i < need; i++) sim->fa[i] = (float)d2_rng_normal(&r);
    /* Rows: m rows x n columns into fb. */
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            const float *row = sim->fa + (size_t)i * m + j;
            for (int k = 0; k <= 2 * R; k++) acc += kern[k] * row[k];
            sim->fb[(size_t)i * n + j] = (float)acc;
        }
    /* Columns: n x n; the variance of the 2-D filtered noise is s2^2. */
    double ss = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int k = 0; k <= 2 * R; k++) acc += kern[k] * sim->fb[(size_t)(i + k) * n + j];
            double gv = acc / s2, v;
            if (dist == TOL_NORMAL)
                v = 0.5 * A * fmax(-2.0, fmin(2.0, gv));
            else
                v = A * (2 * (0.5 * erfc(-gv / M_SQRT2)) - 1);
            sim->dh[(size_t)i * n + j] += (float)v;
            ss += v * v;
        }
    *rms = sqrt(ss / ((double)n * n));
    return 0;
}

static double quantize(double T, double base, double step, int levels, double period)
{
    if (!(step > 0)) return T;
    if (!levels) return step * nearbyint(T / step);
    /* K levels per 2 pi of the relief above the base. */
    double ph = fmod(2 * M_PI * (T - base) / period, 2 * M_PI);
    if (ph < 0) ph += 2 * M_PI;
    double q = step * nearbyint(ph / step);
    if (q >= 2 * M_PI - 1e-9) q -= 2 * M_PI;
    return base + q * period / (2 * M_PI);
}

/* Sets layer l of the network for realisation r. */
static int apply_layer(tol_sim *sim, const tol_mag *mag, real *r, int l, uint64_t seed,
                       uint64_t stream, d2_err *e)
{
    const tol_stack *s = sim->s;
    const d2_geom *g = &s->m.g;
    size_t nn = (size_t)sim->n * sim->n;
    int phase = r->qstep > 0 || r->hw[l] > 0 || r->hc[l] > 0 || r->dn != 0 ||
                (s->absorbing && r->dk != 0) || r->lambda != g->wavelength_mm;
    const layer_pose *p = &r->pose[l];
    int geo = p->dx_mm != 0 || p->dy_mm != 0 || p->rot_deg != 0 || r->scale[l] != 1;
    if (!phase && !geo) {
        if (sim->dirty[l]) net_set_transmission(sim->net, l, sim->t0[l]);
        sim->dirty[l] = 0;
        return 0;
    }
    const float complex *src = sim->t0[l];
    if (phase) {
        int anyh = r->hw[l] > 0 || r->hc[l] > 0;
        if (anyh) memset(sim->dh, 0, nn * sizeof(float));
        if (r->hw[l] > 0)
            r->hw_rms[l] = field_white(sim->dh, nn, r->hw[l], mag->dist[TOL_HEIGHT],
                                        seed_for(seed, stream, TOL_HEIGHT, (uint64_t)l, 0));
        if (r->hc[l] > 0) {
            double before = 0;
            int rc = field_corr(sim, r->hc[l], mag->dist[TOL_HEIGHT_CORR], mag->correlation_mm,
                                seed_for(seed, stream, TOL_HEIGHT_CORR, (uint64_t)l, 0), &before, e);
            if (rc) return rc;
            r->hc_rms[l] = before;
        }
        double lam0 = g->wavelength_mm, lam = r->lambda, n0 = s->index, n1 = s->index + r->dn;
        double k0 = s->kappa, k1 = fmax(0.0, s->kappa + r->dk);
        double period = opt_period_mm(lam0, n0);
        const float *T = s->height_mm[l];
        for (size_t i = 0; i < nn; i++) {
            double t = T[i];
            double tq = quantize(t, s->base_mm, r->qstep, mag->quant_levels, period);
            if (anyh) tq += sim->dh[i];
            if (tq < 0) tq = 0;
            double dphi = 2 * M_PI * ((n1 - 1) * tq / lam - (n0 - 1) * t / lam0);
            double la = s->absorbing ? -2 * M_PI * (k1 * tq / lam - k0 * t / lam0) : 0;
            double a = exp(la);
            float complex f = (float)(a * cos(dphi)) + I * (float)(a * sin(dphi));
            sim->sa[i] = src[i] * f;
        }
        src = sim->sa;
    }
    if (geo) {
        perturb_transform_scaled(src, sim->n, g->pitch_mm, p, r->scale[l], sim->sb);
        src = sim->sb;
    }
    net_set_transmission(sim->net, l, src);
    sim->dirty[l] = 1;
    return 0;
}

typedef struct gap_job {
    tol_sim *sim;
    const double *gaps;
    double lambda;
    int todo[D2_MAX_LAYERS + 1], ntodo;
} gap_job;

static void gap_one(void *arg, int i, int tid)
{
    (void)tid;
    gap_job *j = arg;
    int k = j->todo[i];
    net_set_gap(j->sim->net, k, j->gaps[k], j->lambda);
}

/* Detector energies of a shifted detector plane: each detector's footprint,
 * moved by (dx, dy), collects the output intensity of every pixel in
 * proportion to the area it covers (pixels as uniform squares). */
typedef struct det_weights {
    int c0[D2_MAX_DET], c1[D2_MAX_DET], r0[D2_MAX_DET], r1[D2_MAX_DET];
    double *wx[D2_MAX_DET], *wy[D2_MAX_DET];
} det_weights;

static void overlap(double lo, double hi, int n, int *a, int *b, double *w)
{
    *a = (int)floor(lo + 0.5);
    *b = (int)ceil(hi - 0.5) + 1;
    if (*a < 0) *a = 0;
    if (*b > n) *b = n;
    for (int j = *a; j < *b; j++) w[j - *a] = fmax(0.0, fmin(j + 0.5, hi) - fmax(j - 0.5, lo));
}

typedef struct eval_job {
    tol_sim *sim;
    const tol_mag *mag;
    const d2_dataset *ds;
    int mask;                          /* fixed mask PNG */
    int stencil;                       /* per-image stencils */
    const det_weights *dw;             /* NULL: the network's own detectors */
    float *det;
} eval_job;

static void eval_img(void *arg, int i, int tid)
{
    eval_job *j = arg;
    tol_sim *sim = j->sim;
    const d2_geom *g = &sim->s->m.g;
    int n = sim->n, nd = g->ndet;
    size_t px = (size_t)j->ds->rows * j->ds->cols, nn = (size_t)n * n;
    float *in = sim->in[tid], *det = j->det + (size_t)i * nd;
    double keep = 1;
    if (j->stencil) {
        if (sim->st_bad[i]) {
            memset(det, 0, sizeof(float) * nd);
            return;
        }
        const unsigned char *bits = sim->st_bits + ((nn + 7) / 8) * (size_t)i;
        for (size_t k = 0; k < nn; k++) in[k] = (bits[k >> 3] >> (k & 7)) & 1 ? 1.0f : 0.0f;
    } else {
        input_from_u8(g, j->ds->images + px * i, j->ds->rows, j->ds->cols, in);
    }
    if (j->mask) {
        /* net_infer normalises by the input energy; keep the energies
         * relative to the unmasked input so blocked light counts. */
        double e0 = 0, e1 = 0;
        for (size_t k = 0; k < nn; k++) {
            e0 += (double)in[k] * in[k];
            in[k] *= j->mag->mask[k];
            e1 += (double)in[k] * in[k];
        }
        keep = e0 > 0 ? e1 / e0 : 0;
    }
    net_infer(sim->net, in, det, j->dw ? sim->inten[tid] : NULL, tid);
    if (j->dw) {
        const float *I0 = sim->inten[tid];
        for (int k = 0; k < nd; k++) {
            double sum = 0;
            for (int r = j->dw->r0[k]; r < j->dw->r1[k]; r++) {
                double row = 0;
                const float *ir = I0 + (size_t)r * n;
                for (int c = j->dw->c0[k]; c < j->dw->c1[k]; c++)
                    row += j->dw->wx[k][c - j->dw->c0[k]] * ir[c];
                sum += j->dw->wy[k][r - j->dw->r0[k]] * row;
            }
            det[k] = (float)sum;
        }
    }
    if (keep != 1)
        for (int k = 0; k < nd; k++) det[k] = (float)(det[k] * keep);
}

typedef struct stencil_job {
    tol_sim *sim;
    const tol_mag *mag;
    const d2_dataset *ds;
    unsigned char *open; /* threads x n*n */
} stencil_job;

static void stencil_one(void *arg, int i, int tid)
{
    stencil_job *j = arg;
    tol_sim *sim = j->sim;
    const d2_geom *g = &sim->s->m.g;
    size_t nn = (size_t)sim->n * sim->n, px = (size_t)j->ds->rows * j->ds->cols;
    unsigned char *open = j->open + nn * tid, *bits = sim->st_bits + ((nn + 7) / 8) * (size_t)i;
    int rc = j->mag->stencil_fn(j->mag->stencil_ctx, g, j->ds->images + px * i, j->ds->rows,
                                j->ds->cols, j->mag->stencil_threshold,
                                j->mag->stencil_min_feature_mm, open);
    sim->st_bad[i] = rc != 0;
    memset(bits, 0, (nn + 7) / 8);
    if (!rc)
        for (size_t k = 0; k < nn; k++)
            if (open[k]) bits[k >> 3] |= (unsigned char)(1u << (k & 7));
}

/* The printable stencil of each of the first count test images, kept as
 * bits (n*n / 8 bytes an image), made once per stack. */
static int build_stencils(tol_sim *sim, const tol_mag *mag, const d2_dataset *ds, int count,
                          d2_pool *pool, d2_err *e)
{
    size_t nn = (size_t)sim->n * sim->n, per = (nn + 7) / 8;
    free(sim->st_bits);
    free(sim->st_bad);
    sim->st_n = sim->st_unprintable = 0;
    sim->st_bits = d2_malloc(per * (size_t)count, "input stencils", e);
    sim->st_bad = d2_calloc((size_t)count, 1, "input stencils", e);
    stencil_job j = {sim, mag, ds, d2_malloc(nn * (size_t)d2_pool_threads(pool), "stencil", e)};
    if (!sim->st_bits || !sim->st_bad || !j.open) {
        free(j.open);
        return D2_EIO;
    }
    d2_pool_run(pool, stencil_one, &j, count);
    free(j.open);
    for (int i = 0; i < count; i++) sim->st_unprintable += sim->st_bad[i];
    sim->st_n = count;
    return 0;
}

int tol_sim_unprintable(const tol_sim *sim) { return sim->st_unprintable; }

int tol_sim_eval(tol_sim *sim, const tol_mag *mag, double scale, const tol_draw *d,
                 uint64_t seed, const d2_dataset *ds, int count, d2_pool *pool, double det_ref,
                 double *accuracy, float *det_out, double *vec, d2_err *e)
{
    const tol_stack *s = sim->s;
    const d2_geom *g = &s->m.g;
    int rc = 0, nd = g->ndet;
    uint64_t stream = d ? d->stream : 0;
    real r;
    realise(mag, scale, d, g, &r);
    if (count > ds->count || count <= 0) count = ds->count;

    for (int l = 0; l < sim->L; l++)
        if ((rc = apply_layer(sim, mag, &r, l, seed, stream, e))) return rc;
    double gaps[D2_MAX_LAYERS + 1];
    perturb_gaps(g, r.pose, gaps);
    gap_job gj = {sim, gaps, r.lambda, {0}, 0};
    for (int k = 0; k <= sim->L; k++)
        if (gaps[k] != sim->gap[k] || r.lambda != sim->gap_lambda[k]) {
            gj.todo[gj.ntodo++] = k;
            sim->gap[k] = gaps[k];
            sim->gap_lambda[k] = r.lambda;
        }
    if (gj.ntodo) d2_pool_run(pool, gap_one, &gj, gj.ntodo);

    if (count > sim->det_cap) {
        free(sim->det);
        if (!(sim->det = d2_malloc(sizeof(float) * (size_t)count * nd, "detector energies", e))) {
            sim->det_cap = 0;
            return D2_EIO;
        }
        sim->det_cap = count;
    }
    det_weights dw;
    double *wbuf = NULL;
    int shifted = r.ddx != 0 || r.ddy != 0;
    if (shifted) {
        if (!(wbuf = d2_malloc(sizeof(double) * 2 * nd * (g->n + 2), "detector weights", e)))
            return D2_EIO;
        /* The footprint eval uses (the pixels whose centres lie in the
         * square), moved by the shift: continuous with the nominal. */
        double sx = r.ddx / g->pitch_mm, sy = r.ddy / g->pitch_mm;
        for (int k = 0; k < nd; k++) {
            int r0, r1, c0, c1;
            geom_det_rect(g, k, &r0, &r1, &c0, &c1);
            dw.wx[k] = wbuf + (size_t)(2 * k) * (g->n + 2);
            dw.wy[k] = wbuf + (size_t)(2 * k + 1) * (g->n + 2);
            overlap(c0 - 0.5 + sx, c1 - 0.5 + sx, g->n, &dw.c0[k], &dw.c1[k], dw.wx[k]);
            overlap(r0 - 0.5 + sy, r1 - 0.5 + sy, g->n, &dw.r0[k], &dw.r1[k], dw.wy[k]);
        }
    }
    int stencil = r.mask && mag->stencil, fixed = r.mask && !mag->stencil;
    if (stencil && sim->st_n < count && (rc = build_stencils(sim, mag, ds, count, pool, e))) {
        free(wbuf);
        return rc;
    }
    eval_job j = {sim, mag, ds, fixed, stencil, shifted ? &dw : NULL, sim->det};
    d2_pool_run(pool, eval_img, &j, count);
    free(wbuf);

    int correct = 0;
    /* relative to the nominal mean detector energy, or (absolute) to the
     * source power the energies are fractions of */
    double sigma = r.noise * (mag->unit[TOL_DET_NOISE] == TOL_U_SOURCE ? 1.0 : det_ref);
    for (int i = 0; i < count; i++) {
        if (stencil && sim->st_bad[i]) continue; /* no printable stencil: misread */
        float *dt = sim->det + (size_t)i * nd;
        if (sigma > 0) {
            d2_rng rn;
            d2_rng_seed(&rn, seed_for(seed, stream, TOL_DET_NOISE, (uint64_t)i, 0));
            for (int k = 0; k < nd; k++) dt[k] += (float)(sigma * d2_rng_normal(&rn));
        }
        correct += det_predict(g, dt) == ds->labels[i];
    }
    if (det_out) memcpy(det_out, sim->det, sizeof(float) * (size_t)count * nd);
    *accuracy = (double)correct / count;
    if (vec) vec_fill(mag, sim->L, &r, NULL, vec, 1 << 20);
    return 0;
}

