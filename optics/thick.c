/* Thick plates: a homogeneous slab plus a relief cut into slices, propagated
 * split-step on a sub-pixel grid (the model is described at the end of
 * optics/optics.h).
 *
 * Cost: each slice boundary is one 2-D FFT pair of size q = s n + 2 guard
 * (rounded up to a size FFTW likes) with no zero padding: over one slice
 * (lambda / 10) light moves sideways by dz tan(theta), a fraction of a
 * sub-pixel for the angles a pitch of lambda / 2 or more carries, and about
 * 2.7 relief heights over the whole plate at the steepest angle the neuron
 * grid holds; the guard band is sized for that (thick_guard), and what
 * reaches it is dropped at the exit like light outside the plate in the thin
 * model. tests/test_optics_thick.c checks it against 2x padding. */
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
    int *lev;                   /* reference level of each slice (0..D2_THICK_LEVELS) */
    float complex *mask;        /* K x n*n: per neuron and slice */
    int *kpart;                 /* n*n: the slice whose fill changes with h */
    float complex *B;           /* (K - 1) x q*q: propagation between slice centres */
    int *B_key;                 /* (K - 1) x 2: the levels each B was made for */
    double B_dz, B_lam;         /* ... and the slice and wavelength */
    int have;                   /* heights set at least once */
} plate;

typedef struct tws {
    float complex *buf;                  /* q*q */
    float complex *st[D2_MAX_LAYERS];    /* K x (s n)^2: field before each mask */
    size_t st_cap[D2_MAX_LAYERS];
    double complex *acc;                 /* n*n */
} tws;

struct thick {
    d2_geom g;
    int n, s, G, q, L, threads;
    double lam;
    float *h;                   /* n*n scratch (heights from a transmission) */
    double *f2;                 /* q*q: fx^2 + fy^2 of the sub-pixel grid */
    plate pl[D2_MAX_LAYERS];
    fftwf_plan fw, bw;
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
        w->acc = malloc(nn * sizeof *w->acc);
        if (!w->buf || !w->acc) goto oom;
    }
    for (int l = 0; l < t->L; l++)
        if (!(t->pl[l].kpart = calloc(nn, sizeof(int))) ||
            !(t->pl[l].h = calloc(nn, sizeof(float))))
            goto oom;
    fftwf_complex *b = (fftwf_complex *)t->ws[0].buf;
    memset(b, 0, qq * sizeof *t->ws[0].buf);
    t->fw = fftwf_plan_dft_2d(t->q, t->q, b, b, FFTW_FORWARD, FFTW_MEASURE);
    t->bw = fftwf_plan_dft_2d(t->q, t->q, b, b, FFTW_BACKWARD, FFTW_MEASURE);
    if (!t->fw || !t->bw) {
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
        free(P->lev);
        free(P->mask);
        free(P->kpart);
        free(P->h);
        fftwf_free(P->B);
        free(P->B_key);
    }
    if (t->ws)
        for (int k = 0; k < t->threads; k++) {
            fftwf_free(t->ws[k].buf);
            free(t->ws[k].acc);
            for (int l = 0; l < D2_MAX_LAYERS; l++) free(t->ws[k].st[l]);
        }
    free(t->ws);
    free(t->h);
    free(t->f2);
    if (t->fw) fftwf_destroy_plan(t->fw);
    if (t->bw) fftwf_destroy_plan(t->bw);
    free(t);
}

/* ---- plates ---------------------------------------------------------------- */

static double ref_index(const thick *t, int lev)
{
    return 1.0 + (t->g.index - 1.0) * lev / D2_THICK_LEVELS;
}

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

/* Masks, reference levels and propagators of plate l from t->pl[l]'s box and
 * the heights h. Returns 1 when the gaps beside it must be rebuilt. */
static int plate_build(thick *t, int l, const float *h, double slab, double top, d2_err *e)
{
    plate *P = &t->pl[l];
    int n = t->n, q = t->q;
    size_t nn = (size_t)n * n, qq = (size_t)q * q;
    double R = top - slab, smax = thick_slice_max(&t->g);
    int K = R > 1e-9 ? (int)ceil(R / smax - 1e-9) : 0;
    double dz = K ? R / K : 0;
    int old_first = P->K ? P->lev[0] : -1, old_last = P->K ? P->lev[P->K - 1] : -1;
    int changed = !P->have || P->slab != slab || P->top != top || P->K != K || P->dz != dz;
    if (K > P->cap) {
        int *lev = realloc(P->lev, (size_t)K * sizeof *lev);
        if (lev) P->lev = lev;
        float complex *mask = realloc(P->mask, (size_t)K * nn * sizeof *mask);
        if (mask) P->mask = mask;
        int *key = realloc(P->B_key, (size_t)2 * K * sizeof *key);
        if (key) P->B_key = key;
        float complex *B = fftwf_malloc((size_t)K * qq * sizeof *B);
        if (!lev || !mask || !key || !B) {
            fftwf_free(B);
            return d2_fail(e, D2_EIO, "out of memory for %d slices of a %d x %d plate", K, n, n);
        }
        fftwf_free(P->B);
        P->B = B;
        for (int k = 0; k < 2 * K; k++) P->B_key[k] = -1;
        P->cap = K;
    }
    if (h != P->h) memcpy(P->h, h, nn * sizeof *h);
    P->have = 1;
    P->slab = slab;
    P->top = top;
    P->K = K;
    P->dz = dz;
    if (!K) return changed;
    double nr = t->g.index - 1.0, kap = t->g.kappa, k0 = 2.0 * M_PI / t->lam;
    for (int k = 0; k < K; k++) {
        double sum = 0;
        for (size_t i = 0; i < nn; i++) sum += fill(t, P, k, h[i]);
        P->lev[k] = (int)lround(sum / nn * D2_THICK_LEVELS);
        double off = nr * P->lev[k] / D2_THICK_LEVELS;
        /* Whole and empty neurons share one value per slice. */
        float complex full = (float complex)(cexp(I * k0 * dz * (nr - off)) * exp(-k0 * dz * kap));
        float complex none = (float complex)cexp(-I * k0 * dz * off);
        float complex *m = P->mask + (size_t)k * nn;
        for (size_t i = 0; i < nn; i++) {
            double f = fill(t, P, k, h[i]);
            m[i] = f >= 1 ? full : f <= 0 ? none
                 : (float complex)(cexp(I * k0 * dz * (f * nr - off)) * exp(-k0 * dz * f * kap));
        }
    }
    for (size_t i = 0; i < nn; i++) {
        double u = t->g.relief_side == D2_RELIEF_SOURCE ? (top - h[i]) / dz : (h[i] - slab) / dz;
        int k = (int)floor(u);
        P->kpart[i] = k < 0 ? 0 : k >= K ? K - 1 : k;
    }
    if (P->B_dz != dz || P->B_lam != t->lam)
        for (int k = 0; k < 2 * K; k++) P->B_key[k] = -1;
    P->B_dz = dz;
    P->B_lam = t->lam;
    double scale = 1.0 / ((double)q * q);
    for (int k = 0; k + 1 < K; k++) {
        if (P->B_key[2 * k] == P->lev[k] && P->B_key[2 * k + 1] == P->lev[k + 1]) continue;
        double na = ref_index(t, P->lev[k]), nb = ref_index(t, P->lev[k + 1]);
        float complex *B = P->B + (size_t)k * qq;
        for (size_t i = 0; i < qq; i++) {
            double complex kz = kz_medium(na, t->lam, t->f2[i]) + kz_medium(nb, t->lam, t->f2[i]);
            B[i] = (float complex)(scale * cexp(I * M_PI * dz * kz));
        }
        P->B_key[2 * k] = P->lev[k];
        P->B_key[2 * k + 1] = P->lev[k + 1];
    }
    return changed || old_first != P->lev[0] || old_last != P->lev[K - 1];
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
        if (P->K) d[nm] = 0.5 * P->dz, m[nm++] = ref_index(t, P->lev[P->K - 1]);
        if (src && P->slab > 0) d[nm] = P->slab, m[nm++] = nc;
    }
    if (k < t->L) {
        const plate *P = &t->pl[k];
        if (!src && P->slab > 0) d[nm] = P->slab, m[nm++] = nc;
        if (P->K) d[nm] = 0.5 * P->dz, m[nm++] = ref_index(t, P->lev[0]);
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

static void apply_mask(const thick *t, float complex *buf, const float complex *m, int conj)
{
    int n = t->n, s = t->s, q = t->q, G = t->G;
    for (int i = 0; i < n; i++) {
        const float complex *mr = m + (size_t)i * n;
        for (int a = 0; a < s; a++) {
            float complex *row = buf + (size_t)(G + s * i + a) * q + G;
            for (int j = 0; j < n; j++) {
                float complex v = conj ? conjf(mr[j]) : mr[j];
                for (int b = 0; b < s; b++) row[s * j + b] *= v;
            }
        }
    }
}

static void propagate(const thick *t, float complex *buf, const float complex *B, int conj)
{
    size_t qq = (size_t)t->q * t->q;
    fftwf_execute_dft(t->fw, (fftwf_complex *)buf, (fftwf_complex *)buf);
    if (conj)
        for (size_t i = 0; i < qq; i++) buf[i] *= conjf(B[i]);
    else
        for (size_t i = 0; i < qq; i++) buf[i] *= B[i];
    fftwf_execute_dft(t->bw, (fftwf_complex *)buf, (fftwf_complex *)buf);
}

/* n x n neurons (stride) <-> the sub-pixel grid: replicated in, averaged out
 * (scale 1 / s^2), so a relief-free plate is the identity. */
static void to_sub(const thick *t, const float complex *w, int stride, float complex *buf,
                   float scale)
{
    int n = t->n, s = t->s, q = t->q, G = t->G;
    memset(buf, 0, (size_t)q * q * sizeof *buf);
    for (int i = 0; i < n; i++)
        for (int a = 0; a < s; a++) {
            float complex *row = buf + (size_t)(G + s * i + a) * q + G;
            const float complex *src = w + (size_t)i * stride;
            for (int j = 0; j < n; j++)
                for (int b = 0; b < s; b++) row[s * j + b] = scale * src[j];
        }
}

static void from_sub(const thick *t, const float complex *buf, float complex *w, int stride,
                     float scale)
{
    int n = t->n, s = t->s, q = t->q, G = t->G;
    for (int i = 0; i < n; i++) {
        float complex *dst = w + (size_t)i * stride;
        for (int j = 0; j < n; j++) dst[j] = 0;
        for (int a = 0; a < s; a++) {
            const float complex *row = buf + (size_t)(G + s * i + a) * q + G;
            for (int j = 0; j < n; j++) {
                float complex sum = 0;
                for (int b = 0; b < s; b++) sum += row[s * j + b];
                dst[j] += sum;
            }
        }
        for (int j = 0; j < n; j++) dst[j] *= scale;
    }
}

int thick_forward(thick *t, int l, float complex *w, int stride, int tid, int store, d2_err *e)
{
    plate *P = &t->pl[l];
    if (!P->K) return 0;
    tws *ws = &t->ws[tid];
    int n = t->n, s = t->s, q = t->q, G = t->G, sn = s * n;
    size_t act = (size_t)sn * sn;
    if (store && ws->st_cap[l] < (size_t)P->K * act) {
        free(ws->st[l]);
        ws->st_cap[l] = 0;
        if (!(ws->st[l] = malloc((size_t)P->K * act * sizeof *ws->st[l])))
            return d2_fail(e, D2_EIO, "out of memory keeping %d slices of layer %d for the adjoint",
                           P->K, l + 1);
        ws->st_cap[l] = (size_t)P->K * act;
    }
    float complex *buf = ws->buf;
    size_t nn = (size_t)n * n;
    to_sub(t, w, stride, buf, 1.0f);
    for (int k = 0; k < P->K; k++) {
        if (store) {
            float complex *st = ws->st[l] + (size_t)k * act;
            for (int r = 0; r < sn; r++)
                memcpy(st + (size_t)r * sn, buf + (size_t)(G + r) * q + G, sn * sizeof *st);
        }
        apply_mask(t, buf, P->mask + (size_t)k * nn, 0);
        if (k + 1 < P->K) propagate(t, buf, P->B + (size_t)k * q * q, 0);
    }
    from_sub(t, buf, w, stride, 1.0f / (s * s));
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
    float complex *buf = ws->buf;
    double complex *acc = ws->acc;
    memset(acc, 0, nn * sizeof *acc);
    to_sub(t, w, stride, buf, 1.0f / (s * s));
    for (int k = P->K - 1; k >= 0; k--) {
        if (k + 1 < P->K) propagate(t, buf, P->B + (size_t)k * q * q, 1);
        /* buf: dL/d(after mask k)*; the height enters through the partial
         * slice only: dL/dh = 2 Re(dm/dh sum conj(G) u_before). */
        const float complex *st = ws->st[l] + (size_t)k * act;
        for (int r = 0; r < sn; r++) {
            int i = r / s;
            const float complex *br = buf + (size_t)(G + r) * q + G, *ur = st + (size_t)r * sn;
            for (int j = 0; j < n; j++) {
                if (P->kpart[(size_t)i * n + j] != k) continue;
                float complex sum = 0;
                for (int b = 0; b < s; b++) sum += conjf(br[s * j + b]) * ur[s * j + b];
                acc[(size_t)i * n + j] += sum;
            }
        }
        apply_mask(t, buf, P->mask + (size_t)k * nn, 1);
    }
    from_sub(t, buf, w, stride, 1.0f);
    /* dm/dh = i k0 (n - 1 + i kappa) m; dh/dphi = lambda / (2 pi (n - 1)). */
    double nr = t->g.index - 1.0, k0 = 2.0 * M_PI / t->lam;
    double complex c = I * k0 * (nr + I * t->g.kappa);
    double dhdphi = t->g.wavelength_mm / (2.0 * M_PI * nr);
    for (size_t i = 0; i < nn; i++) {
        double complex m = P->mask[(size_t)P->kpart[i] * nn + i];
        double gphi = 2.0 * creal(c * m * acc[i]) * dhdphi;
        double a2 = (double)crealf(tr[i]) * crealf(tr[i]) + (double)cimagf(tr[i]) * cimagf(tr[i]);
        if (a2 > 0) gt[i] += (float complex)(0.5 * I * gphi / a2 * tr[i]);
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
