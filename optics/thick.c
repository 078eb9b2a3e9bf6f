/* Thick plates: a homogeneous slab plus a relief cut into slices, each one
 * step of the wave propagation method on a sub-pixel grid (the model is
 * described at the end of optics/optics.h).
 *
 * Cost: per slice one forward and two inverse 2-D FFTs (the adjoint: two
 * forward, one inverse) of size q = s n + 2 guard, rounded up to a size FFTW
 * likes, with no zero padding: over one slice (lambda / 10) light moves
 * sideways by dz tan(theta), a fraction of a sub-pixel for the angles a pitch
 * of about lambda / 2 carries, and about 2.7 relief heights over the whole
 * plate at the steepest angle the neuron grid holds; the guard band is sized
 * for that (thick_guard), and what reaches it is dropped at the exit like
 * light outside the plate in the thin model. tests/test_optics_thick.c checks
 * it against 2x padding. The slab costs nothing: it is folded into a gap. */
#include "optics/thick.h"

#include "core/config.h"

#include <fftw3.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct plate {
    float *h;                   /* n*n heights it was built from */
    double slab, top, dz;
    int K, cap;                 /* slices; slices allocated */
    float *f;                   /* K x n*n: fill of each slice per neuron */
    int *kpart;                 /* n*n: the slice whose fill changes with h */
    float complex *teq;         /* n*n: the phase screen of the relief */
    float complex *tb, *tx;     /* n*n: the slices without diffraction, and
                                   without the partial slice */
    float complex *Ha, *Hm;     /* q*q: one slice of air, of material */
    double H_dz, H_lam;         /* what Ha and Hm are for */
    int have;                   /* heights set at least once */
} plate;

typedef struct tws {
    float complex *buf, *buf2;           /* q*q */
    float complex *st[D2_MAX_LAYERS];    /* K x (s n)^2: field before each mask */
    size_t st_cap[D2_MAX_LAYERS];
    double complex *acc;                 /* n*n */
    float complex *bn, *un;              /* n*n: FFT and scratch */
    float complex *bs, *ut;              /* (s n)^2: FFT and scratch */
    float complex *u[D2_MAX_LAYERS];     /* n*n: each plate's input, for the adjoint */
} tws;

struct thick {
    d2_geom g;
    int n, s, G, q, L, threads;
    double lam;
    float *h;                   /* n*n scratch (heights from a transmission) */
    double *f2;                 /* q*q: fx^2 + fy^2 of the sub-pixel grid */
    plate pl[D2_MAX_LAYERS];
    fftwf_plan fw, bw;          /* q x q */
    fftwf_plan fn_f, fn_b;      /* n x n */
    fftwf_plan fs_f, fs_b;      /* s n x s n */
    tws *ws;
};

/* ---- sizes ---------------------------------------------------------------- */

double thick_slice_max(const d2_geom *g)
{
    return g->slice_mm > 0 ? g->slice_mm : g->wavelength_mm / 10.0;
}

int thick_subpix(const d2_geom *g) { return g->subpix > 0 ? g->subpix : 2; }

/* The relief a plate may have: the material for 2 pi, or less when limited. */
static double relief_limit(const d2_geom *g)
{
    double P = g->wavelength_mm / (g->index - 1.0);
    return g->max_relief_mm > 0 && g->max_relief_mm < P ? g->max_relief_mm : P;
}

double thick_plate_mm(const d2_geom *g) { return g->base_mm + relief_limit(g); }

int thick_guard(const d2_geom *g)
{
    if (g->guard > 0) return g->guard;
    /* Light at the neuron grid's highest frequency, 1 / (2 pitch), leaves at
     * tan(theta) = f lambda / sqrt(1 - (f lambda)^2) (2.7 at 0.4 mm and
     * 0.75 mm); it must not wrap round into the plate: 2 guard > that times
     * the relief. At least one neuron. */
    int s = thick_subpix(g);
    double fl = fmin(0.5 * g->wavelength_mm / g->pitch_mm, 0.95);
    double tn = fl / sqrt(1.0 - fl * fl);
    double dx = g->pitch_mm / s;
    int G = (int)ceil(0.5 * tn * relief_limit(g) / dx) + 1;
    return G > s ? G : s;
}

static int nice_size(int m)
{
    for (;; m++) {
        int r = m;
        while (r % 2 == 0) r /= 2;
        while (r % 3 == 0) r /= 3;
        while (r % 5 == 0) r /= 5;
        while (r % 7 == 0) r /= 7;
        if (r == 1) return m;
    }
}

int thick_fft_size(const d2_geom *g) { return nice_size(thick_subpix(g) * g->n + 2 * thick_guard(g)); }

/* ---- life cycle ------------------------------------------------------------ */

thick *thick_new(const d2_geom *g, int threads, d2_err *e)
{
    if (!(g->index > 1) || !(g->kappa >= 0) || g->subpix < 0 || g->subpix > 16 ||
        !(g->slice_mm >= 0) || g->guard < 0) {
        d2_fail(e, D2_EINPUT,
                "thick plates need index > 1, kappa >= 0, 0..16 sub-pixels, a slice >= 0 and a "
                "guard >= 0 (got %g, %g, %d, %g mm, %d)",
                g->index, g->kappa, g->subpix, g->slice_mm, g->guard);
        return NULL;
    }
    thick *t = d2_calloc(1, sizeof *t, "thick plates", e);
    if (!t) return NULL;
    t->g = *g;
    t->n = g->n;
    t->s = thick_subpix(g);
    t->G = thick_guard(g);
    t->q = thick_fft_size(g);
    t->L = g->layers;
    t->threads = threads < 1 ? 1 : threads;
    t->lam = g->wavelength_mm;
    size_t nn = (size_t)t->n * t->n, qq = (size_t)t->q * t->q;
    t->h = malloc(nn * sizeof *t->h);
    t->f2 = malloc(qq * sizeof *t->f2);
    t->ws = calloc((size_t)t->threads, sizeof *t->ws);
    if (!t->h || !t->f2 || !t->ws) goto oom;
    double df = 1.0 / (t->q * g->pitch_mm / t->s);
    for (int i = 0; i < t->q; i++) {
        double fy = (i < (t->q + 1) / 2 ? i : i - t->q) * df;
        for (int j = 0; j < t->q; j++) {
            double fx = (j < (t->q + 1) / 2 ? j : j - t->q) * df;
            t->f2[(size_t)i * t->q + j] = fx * fx + fy * fy;
        }
    }
    for (int k = 0; k < t->threads; k++) {
        tws *w = &t->ws[k];
        w->buf = fftwf_malloc(qq * sizeof *w->buf);
        w->buf2 = fftwf_malloc(qq * sizeof *w->buf2);
        size_t ss = (size_t)t->s * t->n * t->s * t->n;
        w->acc = malloc(nn * sizeof *w->acc);
        w->bn = fftwf_malloc(nn * sizeof *w->bn);
        w->un = fftwf_malloc(nn * sizeof *w->un);
        w->bs = fftwf_malloc(ss * sizeof *w->bs);
        w->ut = fftwf_malloc(ss * sizeof *w->ut);
        if (!w->buf || !w->buf2 || !w->acc || !w->bn || !w->un || !w->bs || !w->ut) goto oom;
    }
    for (int l = 0; l < t->L; l++)
        if (!(t->pl[l].kpart = calloc(nn, sizeof(int))) ||
            !(t->pl[l].h = calloc(nn, sizeof(float))) ||
            !(t->pl[l].teq = calloc(nn, sizeof(float complex))) ||
            !(t->pl[l].tb = calloc(nn, sizeof(float complex))) ||
            !(t->pl[l].tx = calloc(nn, sizeof(float complex))))
            goto oom;
    fftwf_complex *b = (fftwf_complex *)t->ws[0].buf;
    memset(b, 0, qq * sizeof *t->ws[0].buf);
    t->fw = fftwf_plan_dft_2d(t->q, t->q, b, b, FFTW_FORWARD, FFTW_MEASURE);
    t->bw = fftwf_plan_dft_2d(t->q, t->q, b, b, FFTW_BACKWARD, FFTW_MEASURE);
    int sn = t->s * t->n;
    fftwf_complex *bn = (fftwf_complex *)t->ws[0].bn, *bs = (fftwf_complex *)t->ws[0].bs;
    t->fn_f = fftwf_plan_dft_2d(t->n, t->n, bn, bn, FFTW_FORWARD, FFTW_MEASURE);
    t->fn_b = fftwf_plan_dft_2d(t->n, t->n, bn, bn, FFTW_BACKWARD, FFTW_MEASURE);
    t->fs_f = fftwf_plan_dft_2d(sn, sn, bs, bs, FFTW_FORWARD, FFTW_MEASURE);
    t->fs_b = fftwf_plan_dft_2d(sn, sn, bs, bs, FFTW_BACKWARD, FFTW_MEASURE);
    if (!t->fw || !t->bw || !t->fn_f || !t->fn_b || !t->fs_f || !t->fs_b) {
        d2_fail(e, D2_EIO, "FFTW could not plan thick-plate transforms of size %d", t->q);
        thick_free(t);
        return NULL;
    }
    return t;
oom:
    d2_fail(e, D2_EIO, "out of memory for the thick-plate model (%d x %d sub-pixel grid)", t->q,
            t->q);
    thick_free(t);
    return NULL;
}

void thick_free(thick *t)
{
    if (!t) return;
    for (int l = 0; l < D2_MAX_LAYERS; l++) {
        plate *P = &t->pl[l];
        free(P->f);
        free(P->tb);
        free(P->tx);
        fftwf_free(P->Ha);
        fftwf_free(P->Hm);
        free(P->kpart);
        free(P->h);
        free(P->teq);
    }
    if (t->ws)
        for (int k = 0; k < t->threads; k++) {
            fftwf_free(t->ws[k].buf);
            fftwf_free(t->ws[k].buf2);
            free(t->ws[k].acc);
            fftwf_free(t->ws[k].bn);
            fftwf_free(t->ws[k].un);
            fftwf_free(t->ws[k].bs);
            fftwf_free(t->ws[k].ut);
            for (int l = 0; l < D2_MAX_LAYERS; l++) free(t->ws[k].u[l]);
            for (int l = 0; l < D2_MAX_LAYERS; l++) free(t->ws[k].st[l]);
        }
    free(t->ws);
    free(t->h);
    free(t->f2);
    if (t->fw) fftwf_destroy_plan(t->fw);
    if (t->bw) fftwf_destroy_plan(t->bw);
    if (t->fn_f) fftwf_destroy_plan(t->fn_f);
    if (t->fn_b) fftwf_destroy_plan(t->fn_b);
    if (t->fs_f) fftwf_destroy_plan(t->fs_f);
    if (t->fs_b) fftwf_destroy_plan(t->fs_b);
    free(t);
}

/* ---- plates ---------------------------------------------------------------- */

/* kz / (2 pi) in a medium of complex index m at squared frequency f2. */
static double complex kz_medium(double complex m, double lam, double f2)
{
    return csqrt(m * m / (lam * lam) - f2);
}

/* Fill fraction of slice k of plate P at height h. */
static double fill(const thick *t, const plate *P, int k, double h)
{
    double z0 = t->g.relief_side == D2_RELIEF_SOURCE ? P->top - (k + 1) * P->dz
                                                     : P->slab + k * P->dz;
    double f = (h - z0) / P->dz;
    return f < 0 ? 0 : f > 1 ? 1 : f;
}

/* Fills, thin screens and slice propagators of plate l from its box and the
 * heights h. Returns 1 when the gaps beside it must be rebuilt. */
static int plate_build(thick *t, int l, const float *h, double slab, double top, d2_err *e)
{
    plate *P = &t->pl[l];
    int n = t->n, q = t->q;
    size_t nn = (size_t)n * n, qq = (size_t)q * q;
    double R = top - slab, smax = thick_slice_max(&t->g);
    int K = R > 1e-9 ? (int)ceil(R / smax - 1e-9) : 0;
    double dz = K ? R / K : 0;
    int changed = !P->have || P->slab != slab || P->top != top || P->K != K || P->dz != dz;
    if (K > P->cap) {
        float *f = realloc(P->f, (size_t)K * nn * sizeof *f);
        if (!f) return d2_fail(e, D2_EIO, "out of memory for %d slices of a %d x %d plate", K, n, n);
        P->f = f;
        P->cap = K;
    }
    if (K && !P->Ha) {
        P->Ha = fftwf_malloc(qq * sizeof *P->Ha);
        P->Hm = fftwf_malloc(qq * sizeof *P->Hm);
        if (!P->Ha || !P->Hm)
            return d2_fail(e, D2_EIO, "out of memory for the slice propagators of a plate");
        P->H_dz = -1;
    }
    if (h != P->h) memcpy(P->h, h, nn * sizeof *h);
    P->have = 1;
    P->slab = slab;
    P->top = top;
    P->K = K;
    P->dz = dz;
    if (!K) return changed;
    double k0 = 2.0 * M_PI / t->lam;
    double complex nc = t->g.index + I * t->g.kappa;
    double complex ea = cexp(I * k0 * dz), em = cexp(I * k0 * nc * dz);
    for (size_t i = 0; i < nn; i++) {
        double u = t->g.relief_side == D2_RELIEF_SOURCE ? (top - h[i]) / dz : (h[i] - slab) / dz;
        int kp = (int)floor(u);
        P->kpart[i] = kp < 0 ? 0 : kp >= K ? K - 1 : kp;
        double complex T = 1, Tx = 1;
        for (int k = 0; k < K; k++) {
            double f = fill(t, P, k, h[i]);
            P->f[(size_t)k * nn + i] = (float)f;
            double complex Tk = (1 - f) * ea + f * em;
            T *= Tk;
            if (k != P->kpart[i]) Tx *= Tk;
        }
        P->tb[i] = (float complex)T;
        P->tx[i] = (float complex)Tx;
        /* the phase screen: material (h - slab) and air for the rest of R */
        P->teq[i] = (float complex)(cexp(I * k0 * ((nc - 1.0) * (h[i] - slab) + R)));
    }
    if (P->H_dz != dz || P->H_lam != t->lam) {
        double scale = 1.0 / ((double)q * q);
        for (size_t i = 0; i < qq; i++) {
            P->Ha[i] = (float complex)(scale * cexp(2.0 * M_PI * I * dz * kz_medium(1.0, t->lam, t->f2[i])));
            P->Hm[i] = (float complex)(scale * cexp(2.0 * M_PI * I * dz * kz_medium(nc, t->lam, t->f2[i])));
        }
        P->H_dz = dz;
        P->H_lam = t->lam;
    }
    return changed;
}

int thick_set_heights(thick *t, int l, const float *h, double slab, double top, d2_err *e)
{
    size_t nn = (size_t)t->n * t->n;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < nn; i++) {
        if (!(h[i] >= 0) || !isfinite(h[i]))
            return d2_fail(e, D2_EINPUT, "layer %d: height %g mm at row %zu, column %zu: heights "
                           "must be finite and >= 0", l + 1, (double)h[i], i / t->n, i % t->n);
        lo = fmin(lo, h[i]);
        hi = fmax(hi, h[i]);
    }
    if (slab < 0) slab = lo;
    if (top < 0) top = hi;
    double tol = 1e-6 * fmax(1.0, hi);
    if (!(slab <= lo + tol) || !(top >= hi - tol) || !(slab <= top))
        return d2_fail(e, D2_EINPUT, "layer %d: heights %g..%g mm do not lie in the plate %g..%g "
                       "mm (slab..top)", l + 1, lo, hi, slab, top);
    return plate_build(t, l, h, slab, top, e);
}

int thick_set_from_t(thick *t, int l, const float complex *tr, d2_err *e)
{
    size_t nn = (size_t)t->n * t->n;
    double P = t->g.wavelength_mm / (t->g.index - 1.0), base = t->g.base_mm;
    double top = base + relief_limit(&t->g);
    for (size_t i = 0; i < nn; i++) {
        double a = atan2(cimagf(tr[i]), crealf(tr[i]));
        if (a < 0) a += 2.0 * M_PI;
        double h = base + a / (2.0 * M_PI) * P;
        t->h[i] = (float)(h < top ? h : top);
    }
    return plate_build(t, l, t->h, base, top, e);
}

int thick_set_wavelength(thick *t, double lam)
{
    if (lam == t->lam) return 0;
    t->lam = lam;
    /* Masks depend on k0 and the propagators on lambda: rebuild every plate
     * from the heights it keeps. */
    for (int l = 0; l < t->L; l++) {
        plate *P = &t->pl[l];
        if (P->have) plate_build(t, l, P->h, P->slab, P->top, NULL);
    }
    return 1;
}

void thick_plate(const thick *t, int l, double *slab, double *top, int *slices, double *dz)
{
    const plate *P = &t->pl[l];
    if (slab) *slab = P->slab;
    if (top) *top = P->top;
    if (slices) *slices = P->K;
    if (dz) *dz = P->dz;
}

/* ---- gaps ------------------------------------------------------------------ */

void thick_transfer(const thick *t, int k, float complex *H, int p, double pitch_mm, double lam,
                    double z_air)
{
    asm_transfer(H, p, pitch_mm, lam, z_air);
    double d[4];
    double complex m[4];
    int nm = 0;
    double complex fr = 1, nc = t->g.index + I * t->g.kappa;
    int src = t->g.relief_side == D2_RELIEF_SOURCE;
    if (k >= 1) {
        const plate *P = &t->pl[k - 1];
        if (src && P->slab > 0) d[nm] = P->slab, m[nm++] = nc;
    }
    if (k < t->L) {
        const plate *P = &t->pl[k];
        if (!src && P->slab > 0) d[nm] = P->slab, m[nm++] = nc;
        if (!t->g.no_fresnel && P->top > 0) fr = 4.0 * nc / ((1.0 + nc) * (1.0 + nc));
    }
    if (!nm && fr == 1) return;
    double df = 1.0 / (p * pitch_mm);
    for (int i = 0; i < p; i++) {
        double fy = (i < (p + 1) / 2 ? i : i - p) * df;
        for (int j = 0; j < p; j++) {
            float complex *h = H + (size_t)i * p + j;
            if (*h == 0) continue;
            double fx = (j < (p + 1) / 2 ? j : j - p) * df, f2 = fx * fx + fy * fy;
            double complex ph = 0;
            for (int a = 0; a < nm; a++) ph += d[a] * kz_medium(m[a], lam, f2);
            *h *= (float complex)(fr * cexp(2.0 * M_PI * I * ph));
        }
    }
}

/* ---- the relief ------------------------------------------------------------ */

/* One slice of the wave propagation method: the field travels dz in air
 * and in material (exact angular spectra), and each sub-pixel takes the
 * medium it is in, (1 - f) Pa u + f Pm u with its neuron's fill f (air in
 * the guard band). With d set, keeps Pm u - Pa u on the plate. */
static void slice_fwd(const thick *t, tws *ws, const plate *P, int k, float complex *d)
{
    int n = t->n, s = t->s, q = t->q, G = t->G, sn = s * n;
    size_t qq = (size_t)q * q, nn = (size_t)n * n;
    float complex *a = ws->buf, *b = ws->buf2;
    fftwf_execute_dft(t->fw, (fftwf_complex *)a, (fftwf_complex *)a);
    for (size_t i = 0; i < qq; i++) {
        b[i] = a[i] * P->Hm[i];
        a[i] *= P->Ha[i];
    }
    fftwf_execute_dft(t->bw, (fftwf_complex *)a, (fftwf_complex *)a);
    fftwf_execute_dft(t->bw, (fftwf_complex *)b, (fftwf_complex *)b);
    const float *f = P->f + (size_t)k * nn;
    for (int r = 0; r < sn; r++) {
        float complex *ar = a + (size_t)(G + r) * q + G, *br = b + (size_t)(G + r) * q + G;
        const float *fr = f + (size_t)(r / s) * n;
        float complex *dr = d ? d + (size_t)r * sn : NULL;
        for (int c = 0; c < sn; c++) {
            float complex diff = br[c] - ar[c];
            if (dr) dr[c] = diff;
            ar[c] += fr[c / s] * diff;
        }
    }
}

/* Its adjoint: G -> Pa^H ((1 - f) G) + Pm^H (f G). */
static void slice_adj(const thick *t, tws *ws, const plate *P, int k)
{
    int n = t->n, s = t->s, q = t->q, G = t->G, sn = s * n;
    size_t qq = (size_t)q * q, nn = (size_t)n * n;
    float complex *a = ws->buf, *b = ws->buf2;
    memset(b, 0, qq * sizeof *b);
    const float *f = P->f + (size_t)k * nn;
    for (int r = 0; r < sn; r++) {
        float complex *ar = a + (size_t)(G + r) * q + G, *br = b + (size_t)(G + r) * q + G;
        const float *fr = f + (size_t)(r / s) * n;
        for (int c = 0; c < sn; c++) {
            float fv = fr[c / s];
            br[c] = fv * ar[c];
            ar[c] -= br[c];
        }
    }
    fftwf_execute_dft(t->fw, (fftwf_complex *)a, (fftwf_complex *)a);
    fftwf_execute_dft(t->fw, (fftwf_complex *)b, (fftwf_complex *)b);
    for (size_t i = 0; i < qq; i++) a[i] = a[i] * conjf(P->Ha[i]) + b[i] * conjf(P->Hm[i]);
    fftwf_execute_dft(t->bw, (fftwf_complex *)a, (fftwf_complex *)a);
}

/* The neuron grid <-> the sub-pixel grid, band-limited: U interpolates the
 * n x n samples (their Fourier series, Nyquist bin dropped) at the centres of
 * the s x s sub-pixels; D keeps the Fourier coefficients the neuron grid
 * holds and samples at the neuron centres. D U = 1 (but the Nyquist bin);
 * the adjoints are U^H = s^2 D and D^H = U / s^2. Sample-and-hold instead
 * would send the staircase's replicas at f +- 1 / pitch through the relief
 * at the wrong angles. */
static double complex ramp(const thick *t, int k)
{
    double d = 0.5 / t->s - 0.5; /* sub-pixel 0's centre, in neurons from the neuron's */
    return cexp(2.0 * M_PI * I * k * d / t->n);
}

/* U: w (n x n, stride) -> out (s n x s n), scaled by `scale`. */
static void up(const thick *t, tws *ws, const float complex *w, int stride, float complex *out,
               double scale)
{
    int n = t->n, sn = t->s * n;
    for (int i = 0; i < n; i++) memcpy(ws->bn + (size_t)i * n, w + (size_t)i * stride, n * sizeof *w);
    fftwf_execute_dft(t->fn_f, (fftwf_complex *)ws->bn, (fftwf_complex *)ws->bn);
    memset(ws->bs, 0, (size_t)sn * sn * sizeof *ws->bs);
    double c = scale / ((double)n * n);
    for (int i = 0; i < n; i++) {
        int ky = i < (n + 1) / 2 ? i : i - n;
        if (2 * ky == -n) continue;
        double complex ry = ramp(t, ky);
        for (int j = 0; j < n; j++) {
            int kx = j < (n + 1) / 2 ? j : j - n;
            if (2 * kx == -n) continue;
            size_t di = (size_t)(ky < 0 ? ky + sn : ky) * sn + (kx < 0 ? kx + sn : kx);
            ws->bs[di] = (float complex)(c * ry * ramp(t, kx) * ws->bn[(size_t)i * n + j]);
        }
    }
    fftwf_execute_dft(t->fs_b, (fftwf_complex *)ws->bs, (fftwf_complex *)ws->bs);
    memcpy(out, ws->bs, (size_t)sn * sn * sizeof *out);
}

/* D: the active area of buf (s n x s n inside the q grid) -> ws->bn (n x n). */
static void down(const thick *t, tws *ws, const float complex *buf)
{
    int n = t->n, sn = t->s * n, q = t->q, G = t->G;
    for (int r = 0; r < sn; r++)
        memcpy(ws->bs + (size_t)r * sn, buf + (size_t)(G + r) * q + G, sn * sizeof *buf);
    fftwf_execute_dft(t->fs_f, (fftwf_complex *)ws->bs, (fftwf_complex *)ws->bs);
    double c = 1.0 / ((double)sn * sn);
    for (int i = 0; i < n; i++) {
        int ky = i < (n + 1) / 2 ? i : i - n;
        double complex ry = conj(ramp(t, ky));
        for (int j = 0; j < n; j++) {
            int kx = j < (n + 1) / 2 ? j : j - n;
            size_t si = (size_t)(ky < 0 ? ky + sn : ky) * sn + (kx < 0 ? kx + sn : kx);
            ws->bn[(size_t)i * n + j] = 2 * ky == -n || 2 * kx == -n ? 0
                : (float complex)(c * ry * conj(ramp(t, kx)) * ws->bs[si]);
        }
    }
    fftwf_execute_dft(t->fn_b, (fftwf_complex *)ws->bn, (fftwf_complex *)ws->bn);
}

static int ensure_store(thick *t, tws *ws, int l, int K, d2_err *e)
{
    size_t sn = (size_t)t->s * t->n, need = (size_t)(K + 1) * sn * sn;
    if (ws->st_cap[l] >= need) return 0;
    free(ws->st[l]);
    ws->st_cap[l] = 0;
    if (!ws->u[l]) ws->u[l] = malloc((size_t)t->n * t->n * sizeof *ws->u[l]);
    if (!(ws->st[l] = malloc(need * sizeof *ws->st[l])) || !ws->u[l])
        return d2_fail(e, D2_EIO, "out of memory keeping %d slices of layer %d for the adjoint",
                       K, l + 1);
    ws->st_cap[l] = need;
    return 0;
}

/* The plate: out = teq u + D (P - T) U u, with P the slices on the sub-pixel
 * grid and T the same slices without diffraction (tb). teq, the phase screen
 * of the relief, is exact on the neuron grid; the slices add what it misses,
 * and a vanishing relief gives exactly teq u. */
int thick_forward(thick *t, int l, float complex *w, int stride, int tid, int store, d2_err *e)
{
    plate *P = &t->pl[l];
    if (!P->K) return 0;
    tws *ws = &t->ws[tid];
    int n = t->n, s = t->s, q = t->q, G = t->G, sn = s * n;
    size_t act = (size_t)sn * sn;
    if (store && ensure_store(t, ws, l, P->K, e)) return D2_EIO;
    float complex *ut = store ? ws->st[l] + (size_t)P->K * act : ws->ut;
    float complex *u = store ? ws->u[l] : ws->un;
    for (int i = 0; i < n; i++) memcpy(u + (size_t)i * n, w + (size_t)i * stride, n * sizeof *u);
    up(t, ws, u, n, ut, 1.0);
    float complex *buf = ws->buf;
    memset(buf, 0, (size_t)q * q * sizeof *buf);
    for (int r = 0; r < sn; r++)
        memcpy(buf + (size_t)(G + r) * q + G, ut + (size_t)r * sn, sn * sizeof *buf);
    for (int k = 0; k < P->K; k++) slice_fwd(t, ws, P, k, store ? ws->st[l] + (size_t)k * act : NULL);
    for (int r = 0; r < sn; r++) {
        float complex *br = buf + (size_t)(G + r) * q + G;
        const float complex *tq = P->tb + (size_t)(r / s) * n, *ur = ut + (size_t)r * sn;
        for (int c = 0; c < sn; c++) br[c] -= tq[c / s] * ur[c];
    }
    down(t, ws, buf);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            w[(size_t)i * stride + j] = P->teq[(size_t)i * n + j] * u[(size_t)i * n + j] +
                                        ws->bn[(size_t)i * n + j];
    return 0;
}

void thick_adjoint(thick *t, int l, float complex *w, int stride, int tid,
                   const float complex *tr, float complex *gt)
{
    plate *P = &t->pl[l];
    if (!P->K) return;
    tws *ws = &t->ws[tid];
    int n = t->n, s = t->s, q = t->q, G = t->G, sn = s * n;
    size_t act = (size_t)sn * sn, nn = (size_t)n * n;
    float complex *buf = ws->buf, *g0 = ws->ut, *gin = ws->un;
    const float complex *u = ws->u[l], *ut = ws->st[l] + (size_t)P->K * act;
    double complex *acc = ws->acc;
    double k0 = 2.0 * M_PI / t->lam, dz = P->dz;
    double complex nc = t->g.index + I * t->g.kappa;
    double complex c = I * k0 * (nc - 1.0), dT = (cexp(I * k0 * nc * dz) - cexp(I * k0 * dz)) / dz;
    /* the phase screen: dL/du* += conj(teq) G, dteq/dh = c teq */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            size_t x = (size_t)i * n + j;
            float complex Gv = w[(size_t)i * stride + j];
            acc[x] = c * P->teq[x] * (double complex)(conjf(Gv) * u[x]);
            gin[x] = conjf(P->teq[x]) * Gv;
        }
    /* the correction D (P - T) U: its adjoint U^H (P - T)^H D^H, D^H = U / s^2;
     * T's height derivative is tx dT (through the partial slice) */
    up(t, ws, w, stride, g0, 1.0 / (s * s));
    for (int r = 0; r < sn; r++) {
        int i = r / s;
        const float complex *gr = g0 + (size_t)r * sn, *ur = ut + (size_t)r * sn;
        for (int j = 0; j < n; j++) {
            float complex sum = 0;
            for (int b = 0; b < s; b++) sum += conjf(gr[s * j + b]) * ur[s * j + b];
            size_t x = (size_t)i * n + j;
            acc[x] -= P->tx[x] * dT * (double complex)sum;
        }
    }
    memset(buf, 0, (size_t)q * q * sizeof *buf);
    for (int r = 0; r < sn; r++)
        memcpy(buf + (size_t)(G + r) * q + G, g0 + (size_t)r * sn, sn * sizeof *buf);
    for (int k = P->K - 1; k >= 0; k--) {
        /* buf: dL/du_{k+1}*; the height enters through the partial slice:
         * du_{k+1}/dh = (Pm u - Pa u) / dz there */
        const float complex *st = ws->st[l] + (size_t)k * act;
        for (int r = 0; r < sn; r++) {
            int i = r / s;
            const float complex *br = buf + (size_t)(G + r) * q + G, *dr = st + (size_t)r * sn;
            for (int j = 0; j < n; j++) {
                size_t x = (size_t)i * n + j;
                if (P->kpart[x] != k) continue;
                float complex sum = 0;
                for (int b = 0; b < s; b++) sum += conjf(br[s * j + b]) * dr[s * j + b];
                acc[x] += (double complex)sum / dz;
            }
        }
        slice_adj(t, ws, P, k);
    }
    /* minus T^H D^H G, then U^H = s^2 D */
    for (int r = 0; r < sn; r++) {
        float complex *br = buf + (size_t)(G + r) * q + G;
        const float complex *tq = P->tb + (size_t)(r / s) * n, *gr = g0 + (size_t)r * sn;
        for (int cc = 0; cc < sn; cc++) br[cc] -= conjf(tq[cc / s]) * gr[cc];
    }
    down(t, ws, buf);
    float s2 = (float)(s * s);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            w[(size_t)i * stride + j] = gin[(size_t)i * n + j] + s2 * ws->bn[(size_t)i * n + j];
    /* dh/dphi = lambda / (2 pi (n - 1)) */
    double dhdphi = t->g.wavelength_mm / (2.0 * M_PI * (t->g.index - 1.0));
    for (size_t x = 0; x < nn; x++) {
        double gphi = 2.0 * creal(acc[x]) * dhdphi;
        double a2 = (double)crealf(tr[x]) * crealf(tr[x]) + (double)cimagf(tr[x]) * cimagf(tr[x]);
        if (a2 > 0) gt[x] += (float complex)(0.5 * I * gphi / a2 * tr[x]);
    }
}

/* ---- geometry -------------------------------------------------------------- */

void thick_heights_from_phase(const d2_geom *g, const float *phase, size_t count, float *h)
{
    double P = g->wavelength_mm / (g->index - 1.0), top = g->base_mm + relief_limit(g);
    for (size_t i = 0; i < count; i++) {
        double w = fmod((double)phase[i], 2.0 * M_PI);
        if (w < 0) w += 2.0 * M_PI;
        double v = g->base_mm + w / (2.0 * M_PI) * P;
        h[i] = (float)(v < top ? v : top);
    }
}

/* Datum plane d of plate k (1..L) is its entry face, or its exit face when
 * the relief faces the source. */
int thick_air_gaps(const d2_geom *g, const double *datum_gaps, const double *plate_mm,
                   double *air_gaps, d2_err *e)
{
    int L = g->layers, src = g->relief_side == D2_RELIEF_SOURCE;
    double datum = 0, exit_prev = 0;
    for (int k = 0; k <= L; k++) {
        datum += datum_gaps[k];
        double entry = k < L ? datum - (src ? plate_mm[k] : 0) : datum;
        air_gaps[k] = entry - exit_prev;
        if (!(air_gaps[k] >= 0))
            return d2_fail(e, D2_EINPUT,
                           "gap %d (%s): %g mm datum to datum leaves %g mm of air beside plates "
                           "of %g mm: the plates do not fit",
                           k, k == 0 ? "input to layer 1" : k == L ? "last layer to detector"
                                                                     : "between layers",
                           datum_gaps[k], air_gaps[k], k < L ? plate_mm[k] : plate_mm[k - 1]);
        if (k < L) exit_prev = entry + plate_mm[k];
    }
    return 0;
}

void thick_datum_gaps(const d2_geom *g, const double *air_gaps, const double *plate_mm,
                      double *datum_gaps)
{
    int L = g->layers, src = g->relief_side == D2_RELIEF_SOURCE;
    double z = 0, datum_prev = 0;
    for (int k = 0; k <= L; k++) {
        z += air_gaps[k]; /* entry face of plate k (or the detector) */
        double datum = k < L ? z + (src ? plate_mm[k] : 0) : z;
        datum_gaps[k] = datum - datum_prev;
        datum_prev = datum;
        if (k < L) z += plate_mm[k];
    }
}

int model_make_thick(d2_model *m, int correct_spacing, d2_err *e)
{
    d2_geom *g = &m->g;
    if (g->optics == D2_OPTICS_THICK) return 0;
    size_t nn = (size_t)g->n * g->n;
    double thk[D2_MAX_LAYERS], gaps[D2_MAX_LAYERS + 1], air[D2_MAX_LAYERS + 1];
    int from_export = m->height[0] != NULL;
    double lo = INFINITY;
    for (int l = 0; l < g->layers; l++) {
        if (!m->height[l]) {
            if (!(m->height[l] = d2_malloc(nn * sizeof(float), "heights", e))) return D2_EIO;
            thick_heights_from_phase(g, m->phase[l], nn, m->height[l]);
        }
        double hi = 0, sum = 0;
        for (size_t i = 0; i < nn; i++) {
            hi = fmax(hi, m->height[l][i]);
            lo = fmin(lo, m->height[l][i]);
            sum += m->height[l][i];
        }
        thk[l] = hi;
        gaps[l] = g->gap_mm[l];
    }
    gaps[g->layers] = g->gap_mm[g->layers];
    if (correct_spacing)
        for (int l = 0; l < g->layers; l++) {
            double sum = 0;
            for (size_t i = 0; i < nn; i++) sum += m->height[l][i];
            /* the plate sits at the start of gap l + 1 (its datum faces the
             * source): the shortening belongs to the gap after it */
            int k = g->relief_side == D2_RELIEF_SOURCE ? l : l + 1;
            gaps[k] += (sum / nn) * (1.0 - 1.0 / g->index);
        }
    int rc = thick_air_gaps(g, gaps, thk, air, e);
    if (rc) return rc;
    for (int k = 0; k <= g->layers; k++) g->gap_mm[k] = air[k];
    g->optics = D2_OPTICS_THICK;
    /* Exports print on their own base: the thinnest point of the stack. */
    if (from_export && isfinite(lo)) g->base_mm = lo;
    return 0;
}

int model_make_thin(d2_model *m)
{
    d2_geom *g = &m->g;
    if (g->optics != D2_OPTICS_THICK) return 0;
    size_t nn = (size_t)g->n * g->n;
    double pl_mm[D2_MAX_LAYERS], datum[D2_MAX_LAYERS + 1];
    for (int l = 0; l < g->layers; l++) {
        pl_mm[l] = m->height[l] ? 0 : thick_plate_mm(g);
        for (size_t i = 0; m->height[l] && i < nn; i++) pl_mm[l] = fmax(pl_mm[l], m->height[l][i]);
    }
    thick_datum_gaps(g, g->gap_mm, pl_mm, datum);
    for (int k = 0; k <= g->layers; k++) g->gap_mm[k] = datum[k];
    g->optics = D2_OPTICS_THIN;
    return 1;
}

/* ---- model files ----------------------------------------------------------- */

const char *optics_name(const d2_geom *g)
{
    return g->optics == D2_OPTICS_THICK ? "thick" : "thin";
}

cJSON *optics_to_json(const d2_geom *g)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", optics_name(g));
    if (g->optics != D2_OPTICS_THICK) {
        cJSON_AddStringToObject(o, "gaps", "datum to datum: phase screens at the flat faces");
        return o;
    }
    cJSON_AddStringToObject(o, "relief_side",
                            g->relief_side == D2_RELIEF_SOURCE ? "source" : "detector");
    cJSON_AddNumberToObject(o, "slice_mm", thick_slice_max(g));
    cJSON_AddNumberToObject(o, "subpixels", thick_subpix(g));
    cJSON_AddNumberToObject(o, "guard_subpixels", thick_guard(g));
    cJSON_AddBoolToObject(o, "fresnel", !g->no_fresnel);
    cJSON_AddStringToObject(o, "gaps",
                            "air gaps between plate faces; datum to datum = air gap + plate "
                            "thickness (base + relief)");
    return o;
}

int optics_read(const char *path, const cJSON *root, d2_geom *g, d2_err *e)
{
    static const char *const keys[] = {"model", "relief_side", "slice_mm", "subpixels",
                                       "guard_subpixels", "fresnel", "gaps", NULL};
    static const char *const models[] = {"thin", "thick", NULL};
    static const char *const sides[] = {"detector", "source", NULL};
    cfg_ctx top = {path, ""};
    const cJSON *o;
    int rc, v;
    long iv;
    g->optics = D2_OPTICS_THIN;
    if ((rc = cfg_object(&top, root, "optics", &o, e)) || !o) return rc;
    cfg_ctx c = {path, "optics"};
    const char *s;
    if ((rc = cfg_check_keys(&c, o, keys, e)) ||
        (rc = cfg_enum(&c, o, "model", 1, 0, models, &g->optics, e)) ||
        (rc = cfg_enum(&c, o, "relief_side", 0, 0, sides, &g->relief_side, e)) ||
        (rc = cfg_num(&c, o, "slice_mm", 0, 0, 0, 10, &g->slice_mm, e)) ||
        (rc = cfg_str(&c, o, "gaps", 0, NULL, &s, e)))
        return rc;
    if ((rc = cfg_int(&c, o, "subpixels", 0, 0, 0, 16, &iv, e))) return rc;
    g->subpix = (int)iv;
    if ((rc = cfg_int(&c, o, "guard_subpixels", 0, 0, 0, 4096, &iv, e))) return rc;
    g->guard = (int)iv;
    if ((rc = cfg_bool(&c, o, "fresnel", 0, 1, &v, e))) return rc;
    g->no_fresnel = !v;
    return 0;
}

double thick_memory_bytes(const d2_geom *g, int threads, int train)
{
    if (g->optics != D2_OPTICS_THICK) return 0;
    double n = g->n, nn = n * n, s = thick_subpix(g), q = thick_fft_size(g), L = g->layers;
    double K = ceil(relief_limit(g) / thick_slice_max(g) - 1e-9), ss = s * s * nn;
    /* per plate: K fill maps (float), slice index (int), heights (float),
     * teq, tb, tx (complex) and the two slice propagators (q x q complex);
     * the q x q frequency table; per thread two q x q buffers, n x n fields
     * (acc in double, bn, un) and two sub-pixel planes; training keeps per
     * thread and plate the K + 1 sub-pixel fields and the plate's input. */
    double plates = L * (4.0 * K * nn + 12.0 * nn + 24.0 * nn + 16.0 * q * q) + 8.0 * q * q;
    double per = 16.0 * q * q + 32.0 * nn + 16.0 * ss;
    if (train) per += L * (8.0 * (K + 1) * ss + 8.0 * nn);
    return plates + threads * per;
}
