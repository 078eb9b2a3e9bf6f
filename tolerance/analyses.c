/* The statistics and the analyses: nominal, sensitivity, inverse tolerances
 * and Monte Carlo, and tol_run that runs them for every stack. */
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
#include "core/par.h"
#include "export/export.h"
#include "optics/optics.h"
#include "train/train.h"

/* ---- statistics --------------------------------------------------------- */

/* Continued fraction of the incomplete beta function (modified Lentz). */
static double betacf(double a, double b, double x)
{
    const double tiny = 1e-300;
    double qab = a + b, qap = a + 1, qam = a - 1, c = 1, d = 1 - qab * x / qap;
    if (fabs(d) < tiny) d = tiny;
    d = 1 / d;
    double h = d;
    for (int m = 1; m <= 10000; m++) {
        int m2 = 2 * m;
        double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15) break;
    }
    return h;
}

double tol_betainc(double a, double b, double x)
{
    if (!(x > 0)) return 0;
    if (!(x < 1)) return 1;
    double lbt = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    /* The continued fraction converges fast for x < (a + 1) / (a + b + 2);
     * use the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) beyond. */
    if (x < (a + 1) / (a + b + 2)) return exp(lbt) * betacf(a, b, x) / a;
    return 1 - exp(lbt) * betacf(b, a, 1 - x) / b;
}

double tol_betainc_inv(double a, double b, double p)
{
    if (!(p > 0)) return 0;
    if (!(p < 1)) return 1;
    /* I_x is increasing in x: bisection to the last representable bit. */
    double lo = 0, hi = 1;
    for (int i = 0; i < 200 && hi - lo > 1e-16; i++) {
        double mid = 0.5 * (lo + hi);
        if (tol_betainc(a, b, mid) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

void tol_clopper_pearson(int k, int n, double conf, double *lo, double *hi)
{
    double alpha = 1 - conf;
    *lo = k <= 0 ? 0 : tol_betainc_inv(k, n - k + 1, alpha / 2);
    *hi = k >= n ? 1 : tol_betainc_inv(k + 1, n - k, 1 - alpha / 2);
}

/* ---- the analyses ------------------------------------------------------- */

#define SENS_STREAM (1ULL << 48)
#define INV_STREAM (1ULL << 49)

typedef struct runner {
    const tol_config *c;
    const d2_dataset *ds;
    d2_pool *pool;
    d2_progress pr;
    long done, total;
    char stage[192];
    tol_result *res;
    tol_sim *sim;
    int count;
} runner;

static int eval(runner *ru, double scale, const tol_draw *d, double *acc, double *vec,
                float *det_out, d2_err *e)
{
    int rc = tol_sim_eval(ru->sim, &ru->res->mag, scale, d, ru->c->seed, ru->ds, ru->count,
                          ru->pool, ru->res->det_mean, acc, det_out, vec, e);
    ru->done += ru->count;
    ru->res->inferences += ru->count;
    if (ru->done > ru->total) ru->total = ru->done;
    d2_progress_update(&ru->pr, ru->done, ru->total, ru->stage);
    return rc;
}

static int cmp_sens(const void *a, const void *b)
{
    const tol_sens_row *x = a, *y = b;
    if (x->change != y->change) return x->change < y->change ? -1 : 1;
    if (x->kind != y->kind) return x->kind - y->kind;
    if (x->layer != y->layer) return x->layer - y->layer;
    return x->comp - y->comp;
}


/* Draw i of an evaluation set and its magnitude scale; may set ru->stage. */
typedef void (*draw_fn)(runner *ru, void *ctx, int i, tol_draw *d, double *scale);

/* n independent evaluations, draw i from make. Under K MPI ranks each rank
 * evaluates its block (d2_par_range) and the accuracies (and the realised
 * vectors, nvec a draw, when vec is not NULL) are shared, so every rank
 * holds all n in order, the numbers one process computes: an evaluation
 * depends on its draw and the seed alone. */
static int eval_set(runner *ru, int n, draw_fn make, void *ctx, double *acc, double *vec,
                    int nvec, d2_err *e)
{
    long lo, hi;
    d2_par_range(n, &lo, &hi);
    tol_draw d;
    for (long i = lo; i < hi; i++) {
        double scale;
        make(ru, ctx, (int)i, &d, &scale);
        int rc = eval(ru, scale, &d, &acc[i], vec ? vec + (size_t)i * nvec : NULL, NULL, e);
        if (rc) return rc;
    }
    /* The other ranks' evaluations count toward the job's progress and the
     * report's inference count. */
    long others = (long)ru->count * (n - (hi - lo));
    ru->done += others;
    ru->res->inferences += others;
    if (ru->done > ru->total) ru->total = ru->done;
    int rc = d2_par_share(acc, sizeof *acc, n, e);
    if (!rc && vec && nvec > 0) rc = d2_par_share(vec, sizeof(double) * nvec, n, e);
    return rc;
}

/* A set of prepared draws at one scale; kind (if not NULL) names each
 * draw's perturbation in the sensitivity stage label. */
typedef struct draw_list {
    const tol_draw *d;
    const int *kind;
    double scale;
} draw_list;

static void list_draw(runner *ru, void *ctx, int i, tol_draw *d, double *scale)
{
    const draw_list *dl = ctx;
    *d = dl->d[i];
    *scale = dl->scale;
    if (dl->kind)
        snprintf(ru->stage, sizeof ru->stage, "%s: sensitivity %s", ru->res->s->name,
                 tol_kinfo[dl->kind[i]].name);
}

/* The evaluations a sensitivity table asks for: row and sign of each. */
typedef struct sens_set {
    tol_draw *d;
    int *kind, *row, *minus;
    int n;
} sens_set;

static void sens_set_free(sens_set *s)
{
    free(s->d);
    free(s->kind);
    free(s->row);
    free(s->minus);
}

static int sens_set_alloc(sens_set *s, int cap, d2_err *e)
{
    memset(s, 0, sizeof *s);
    s->d = d2_calloc((size_t)cap, sizeof *s->d, "sensitivity draws", e);
    s->kind = d2_calloc((size_t)cap, sizeof(int), "sensitivity draws", e);
    s->row = d2_calloc((size_t)cap, sizeof(int), "sensitivity draws", e);
    s->minus = d2_calloc((size_t)cap, sizeof(int), "sensitivity draws", e);
    return s->d && s->kind && s->row && s->minus ? 0 : D2_EIO;
}

/* Evaluates every draw of s (split over the ranks), puts each accuracy into
 * its row (acc_plus or acc_minus) and the row's change: its worse side less
 * the nominal. */
static int sens_set_run(runner *ru, sens_set *s, d2_err *e)
{
    tol_result *res = ru->res;
    double *acc = d2_malloc(sizeof(double) * (s->n ? s->n : 1), "sensitivity accuracies", e);
    if (!acc) return D2_EIO;
    draw_list dl = {s->d, s->kind, 1};
    int rc = eval_set(ru, s->n, list_draw, &dl, acc, NULL, 0, e);
    for (int i = 0; !rc && i < s->n; i++) {
        tol_sens_row *row = &res->sens[s->row[i]];
        if (s->minus[i]) row->acc_minus = acc[i];
        else row->acc_plus = acc[i];
    }
    for (int i = 0; !rc && i < s->n; i++) {
        tol_sens_row *row = &res->sens[s->row[i]];
        double worst = row->acc_plus;
        if (tol_kinfo[row->kind].scalar) worst = fmin(worst, row->acc_minus);
        row->change = worst - res->nominal;
    }
    free(acc);
    return rc;
}

/* Appends draw d (unit value u at kind k, layer l, component c) for row. */
static void sens_push(sens_set *s, int k, int row, int minus, const tol_draw *d)
{
    s->d[s->n] = *d;
    s->kind[s->n] = k;
    s->row[s->n] = row;
    s->minus[s->n] = minus;
    s->n++;
}

static int run_sensitivity(runner *ru, d2_err *e)
{
    tol_result *res = ru->res;
    const tol_mag *mag = &res->mag;
    int L = res->s->m.g.layers, nrow = 0, rc;
    int cap = TOL_NKINDS * D2_MAX_LAYERS * 2;
    sens_set ss = {0};
    if (!(res->sens = d2_calloc((size_t)cap, sizeof *res->sens, "sensitivity table", e)) ||
        sens_set_alloc(&ss, 2 * cap, e)) {
        sens_set_free(&ss);
        return D2_EIO;
    }
    for (int k = 0; k < TOL_NKINDS; k++) {
        int nl = tol_kinfo[k].per_layer ? L : 1;
        for (int l = 0; l < nl; l++) {
            if (!(mag->v[k][l] > 0)) continue;
            for (int c = 0; c < tol_kinfo[k].comps; c++) {
                tol_sens_row *row = &res->sens[nrow++];
                row->kind = k;
                row->layer = tol_kinfo[k].per_layer ? l : -1;
                row->comp = tol_kinfo[k].comps > 1 ? c : -1;
                row->magnitude = mag->v[k][l];
                row->acc_minus = NAN;
                row->applicable = mag->on[k];
                if (!row->applicable) {
                    row->acc_plus = res->nominal;
                    continue;
                }
                tol_draw d;
                memset(&d, 0, sizeof d);
                d.stream = SENS_STREAM;
                d.u[k][l][c] = 1;
                sens_push(&ss, k, nrow - 1, 0, &d);
                if (tol_kinfo[k].scalar) {
                    d.u[k][l][c] = -1;
                    sens_push(&ss, k, nrow - 1, 1, &d);
                }
            }
        }
    }
    res->nsens = nrow;
    rc = sens_set_run(ru, &ss, e);
    sens_set_free(&ss);
    if (rc) return rc;
    qsort(res->sens, (size_t)nrow, sizeof *res->sens, cmp_sens);
    return 0;
}

/* The cheap table: each kind alone with every layer and axis at +D together
 * (the corner of its tolerance box), then at -D; fields and settings: one
 * realisation. Two evaluations a kind instead of two per layer and axis. */
static int run_sensitivity_kinds(runner *ru, d2_err *e)
{
    tol_result *res = ru->res;
    const tol_mag *mag = &res->mag;
    int L = res->s->m.g.layers, nrow = 0, rc;
    sens_set ss = {0};
    if (!(res->sens = d2_calloc(TOL_NKINDS, sizeof *res->sens, "sensitivity table", e)) ||
        sens_set_alloc(&ss, 2 * TOL_NKINDS, e)) {
        sens_set_free(&ss);
        return D2_EIO;
    }
    for (int k = 0; k < TOL_NKINDS; k++) {
        int nl = tol_kinfo[k].per_layer ? L : 1;
        double dmax = 0;
        for (int l = 0; l < nl; l++) dmax = fmax(dmax, mag->v[k][l]);
        if (!(dmax > 0)) continue;
        tol_sens_row *row = &res->sens[nrow++];
        row->kind = k;
        row->layer = row->comp = -1;
        row->magnitude = dmax;
        row->acc_minus = NAN;
        row->applicable = mag->on[k];
        if (!row->applicable) {
            row->acc_plus = res->nominal;
            continue;
        }
        for (int sgn = 1; sgn >= (tol_kinfo[k].scalar ? -1 : 1); sgn -= 2) {
            tol_draw d;
            memset(&d, 0, sizeof d);
            d.stream = SENS_STREAM;
            for (int l = 0; l < nl; l++)
                for (int c = 0; c < tol_kinfo[k].comps; c++)
                    if (mag->v[k][l] > 0) d.u[k][l][c] = sgn;
            sens_push(&ss, k, nrow - 1, sgn < 0, &d);
        }
    }
    res->nsens = nrow;
    rc = sens_set_run(ru, &ss, e);
    sens_set_free(&ss);
    if (rc) return rc;
    qsort(res->sens, (size_t)nrow, sizeof *res->sens, cmp_sens);
    return 0;
}

/* Largest sensible magnitude of a kind (internal unit) for the inverse
 * search: beyond it the perturbation stops meaning anything physical. */
static double kind_cap(const tol_result *res, int k)
{
    const d2_geom *g = &res->s->m.g;
    const tol_stack *s = res->s;
    double side = g->n * g->pitch_mm, period = opt_period_mm(g->wavelength_mm, s->index);
    double gmin = INFINITY;
    for (int j = 0; j <= g->layers; j++) gmin = fmin(gmin, g->gap_mm[j]);
    switch (k) {
    case TOL_LATERAL: return 0.25 * side;
    case TOL_AXIAL: return 0.45 * gmin;
    case TOL_ROTATION: return 45;
    case TOL_PITCH: return 20;
    case TOL_HEIGHT:
    case TOL_HEIGHT_CORR: return 2 * period;
    case TOL_QUANTIZE: return res->mag.quant_levels ? M_PI : period;
    case TOL_INDEX: return 0.9 * (s->index - 1);
    case TOL_KAPPA: return 1;
    case TOL_WAVELENGTH:
        return res->mag.unit[k] == TOL_U_THZ ? 0.45 * opt_frequency_thz(g->wavelength_mm)
                                             : 0.45 * g->wavelength_mm;
    case TOL_DET_SHIFT: return 0.25 * side;
    case TOL_DET_NOISE: return 10;
    default: return 0;
    }
}

/* Scan points: draw i is draws[i % nd] at factor f[i / nd]. */
typedef struct scan_ctx {
    const tol_draw *draws;
    int nd;
    const double *f;
} scan_ctx;

static void scan_draw(runner *ru, void *ctx, int i, tol_draw *d, double *scale)
{
    (void)ru;
    const scan_ctx *sc = ctx;
    *d = sc->draws[i % sc->nd];
    *scale = sc->f[i / sc->nd];
}

/* The new scan points at factors f[0..nf-1] (not yet in iv, room for them),
 * their nd draws each evaluated as one set (split over the ranks); *mean:
 * the last point's mean accuracy. */
static int inv_scan(runner *ru, tol_inverse *iv, const tol_draw *draws, int nd, const double *f,
                    int nf, double *mean, d2_err *e)
{
    double *acc = d2_malloc(sizeof(double) * nd * nf, "scan accuracies", e);
    if (!acc) return D2_EIO;
    scan_ctx sc = {draws, nd, f};
    int rc = eval_set(ru, nd * nf, scan_draw, &sc, acc, NULL, 0, e);
    for (int j = 0; !rc && j < nf; j++) {
        tol_scan_pt pt = {f[j], 0, INFINITY, -INFINITY};
        for (int k = 0; k < nd; k++) {
            double a = acc[j * nd + k];
            pt.mean += a / nd;
            pt.min = fmin(pt.min, a);
            pt.max = fmax(pt.max, a);
        }
        int at = iv->npts;
        while (at > 0 && iv->pts[at - 1].factor > f[j]) {
            iv->pts[at] = iv->pts[at - 1];
            at--;
        }
        iv->pts[at] = pt;
        iv->npts++;
        *mean = pt.mean;
    }
    free(acc);
    return rc;
}

static int inv_point(runner *ru, tol_inverse *iv, const tol_draw *draws, int nd, double f,
                     double *mean, d2_err *e)
{
    for (int i = 0; i < iv->npts; i++)
        if (iv->pts[i].factor == f) {
            *mean = iv->pts[i].mean;
            return 0;
        }
    if (iv->npts >= TOL_MAX_SCAN) {
        *mean = NAN;
        return 0;
    }
    return inv_scan(ru, iv, draws, nd, &f, 1, mean, e);
}

/* The magnitude factor where the mean accuracy first falls `loss` below
 * nominal: the first scan point past it brackets it with the one before,
 * then bisection, then linear interpolation in the last bracket. */
static int inv_threshold(runner *ru, tol_inverse *iv, const tol_draw *draws, int nd, double loss,
                         double *out, d2_err *e)
{
    double nom = ru->res->nominal, lo = 0, llo = 0, hi = -1, lhi = 0;
    for (int i = 0; i < iv->npts; i++) {
        double l = nom - iv->pts[i].mean;
        if (l >= loss - 1e-12) {
            hi = iv->pts[i].factor;
            lhi = l;
            break;
        }
        lo = iv->pts[i].factor;
        llo = l;
    }
    if (hi < 0) {
        *out = NAN;
        return 0;
    }
    for (int b = 0; b < 4; b++) {
        double mid = 0.5 * (lo + hi), m;
        int rc = inv_point(ru, iv, draws, nd, mid, &m, e);
        if (rc) return rc;
        if (isnan(m)) break;
        if (nom - m >= loss - 1e-12) {
            hi = mid;
            lhi = nom - m;
        } else {
            lo = mid;
            llo = nom - m;
        }
    }
    double t = lhi > llo ? (loss - llo) / (lhi - llo) : 1;
    *out = lo + fmin(1.0, fmax(0.0, t)) * (hi - lo);
    return 0;
}

static int run_inverse(runner *ru, d2_err *e)
{
    tol_result *res = ru->res;
    const tol_mag *mag = &res->mag;
    int L = res->s->m.g.layers, rc;
    static const double scan[] = {0.25, 0.5, 1, 2, 4};
    tol_draw *draws = d2_malloc(sizeof(tol_draw) * TOL_MAX_DRAWS, "draws", e);
    if (!draws) return D2_EIO;
    for (int k = 0; k < TOL_NKINDS; k++) {
        if (!mag->on[k] || k == TOL_MASK) continue;
        tol_inverse *iv = &res->inv[res->ninv++];
        memset(iv, 0, sizeof *iv);
        iv->kind = k;
        int nl = tol_kinfo[k].per_layer ? L : 1;
        for (int l = 0; l < nl; l++) iv->ref = fmax(iv->ref, mag->v[k][l]);
        /* Fixed settings give the same result for every draw. */
        int nd = tol_kinfo[k].scalar || k == TOL_HEIGHT || k == TOL_HEIGHT_CORR || k == TOL_DET_NOISE
                     ? ru->c->inverse_draws
                     : 1;
        for (int i = 0; i < nd; i++)
            tol_draw_make(&draws[i], mag, L, ru->c->seed, INV_STREAM + (uint64_t)i, k);
        snprintf(ru->stage, sizeof ru->stage, "%s: inverse %s", res->s->name, tol_kinfo[k].name);
        double cap = kind_cap(res, k), m = 0;
        double fmax_ = cap / iv->ref;
        /* The first points do not depend on each other: one set. */
        int nscan = 0;
        while (nscan < (int)(sizeof scan / sizeof *scan) && scan[nscan] <= fmax_) nscan++;
        if (nscan && (rc = inv_scan(ru, iv, draws, nd, scan, nscan, &m, e))) goto done;
        /* Extend until 5 points are lost or the perturbation stops being
         * physical. */
        double f = 8;
        while (iv->npts > 0 && res->nominal - iv->pts[iv->npts - 1].mean < 0.05 && f <= fmax_ &&
               f <= 64) {
            if ((rc = inv_point(ru, iv, draws, nd, f, &m, e))) goto done;
            f *= 2;
        }
        iv->max_tested = iv->npts ? iv->pts[iv->npts - 1].factor * iv->ref : 0;
        double f1, f5;
        if ((rc = inv_threshold(ru, iv, draws, nd, 0.01, &f1, e)) ||
            (rc = inv_threshold(ru, iv, draws, nd, 0.05, &f5, e)))
            goto done;
        iv->at1 = f1 * iv->ref;
        iv->at5 = f5 * iv->ref;
        iv->acc_at_ref = NAN;
        for (int i = 0; i < iv->npts; i++)
            if (iv->pts[i].factor == 1) iv->acc_at_ref = iv->pts[i].mean;
    }
    rc = 0;
done:
    free(draws);
    return rc;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Monte-Carlo trial t draws stream t + 1; the label gives the mean of this
 * rank's trials so far. */
typedef struct mc_ctx {
    tol_mc *mc;
    int layers;
    double sum; /* of this rank's trials before the current one */
} mc_ctx;

static void mc_draw(runner *ru, void *ctx, int t, tol_draw *d, double *scale)
{
    mc_ctx *mx = ctx;
    const tol_result *res = ru->res;
    long lo, hi;
    d2_par_range(mx->mc->trials, &lo, &hi);
    if (t > lo) mx->sum += mx->mc->acc[t - 1];
    snprintf(ru->stage, sizeof ru->stage, "%s: Monte Carlo x%g trial %d/%d mean %.2f%%",
             res->s->name, mx->mc->scale, t + 1, mx->mc->trials,
             t > lo ? 100 * mx->sum / (t - lo) : 100 * res->nominal);
    tol_draw_make(d, &res->mag, mx->layers, ru->c->seed, (uint64_t)t + 1, -1);
    *scale = mx->mc->scale;
}

static int run_mc(runner *ru, tol_mc *mc, double scale, d2_err *e)
{
    tol_result *res = ru->res;
    int T = ru->c->trials, L = res->s->m.g.layers, rc;
    mc->scale = scale;
    mc->trials = T;
    mc->nvec = res->nvec;
    if (T == 0) return 0;
    mc->acc = d2_malloc(sizeof(double) * T, "trial accuracies", e);
    mc->vec = d2_calloc((size_t)T * (mc->nvec ? mc->nvec : 1), sizeof(double), "trial vectors", e);
    if (!mc->acc || !mc->vec) return D2_EIO;
    if (scale == 0) {
        for (int t = 0; t < T; t++) mc->acc[t] = res->nominal;
    } else {
        mc_ctx mx = {mc, L, 0};
        if ((rc = eval_set(ru, T, mc_draw, &mx, mc->acc, mc->vec, mc->nvec, e))) return rc;
    }
    int pass = 0;
    for (int t = 0; t < T; t++) pass += mc->acc[t] >= res->spec - 1e-12;
    /* Sums relative to the first trial, so identical trials give exactly
     * their value and a zero spread. */
    double a0 = mc->acc[0], sd = 0, ss = 0;
    for (int t = 0; t < T; t++) sd += mc->acc[t] - a0;
    mc->mean = a0 + sd / T;
    for (int t = 0; t < T; t++) ss += (mc->acc[t] - mc->mean) * (mc->acc[t] - mc->mean);
    mc->std = T > 1 ? sqrt(ss / (T - 1)) : 0;
    if (mc->std < 1e-12) mc->std = 0;
    double *srt = d2_malloc(sizeof(double) * T, "sorted accuracies", e);
    if (!srt) return D2_EIO;
    memcpy(srt, mc->acc, sizeof(double) * T);
    qsort(srt, (size_t)T, sizeof *srt, cmp_dbl);
    mc->min = srt[0];
    mc->max = srt[T - 1];
    /* q of the trials reach at least srt[floor((1 - q) T)]. */
    int i90 = (int)floor(0.1 * T + 1e-9), i50 = (int)floor(0.5 * T + 1e-9),
        i10 = (int)floor(0.9 * T + 1e-9);
    mc->p90 = srt[i90 < T ? i90 : T - 1];
    mc->p50 = srt[i50 < T ? i50 : T - 1];
    mc->p10 = srt[i10 < T ? i10 : T - 1];
    free(srt);
    mc->pass = pass;
    mc->yield = (double)pass / T;
    tol_clopper_pearson(pass, T, ru->c->confidence, &mc->yield_lo, &mc->yield_hi);
    return 0;
}

/* Stencil mode: test images with no printable stencil. Every rank that made
 * the stencils counts the same; a rank none of whose evaluations turned the
 * mask on counts 0, so the ranks take the largest. */
static int unprintable(runner *ru, int *out, d2_err *e)
{
    int K = d2_par_size(), *v = d2_calloc((size_t)K, sizeof *v, "stencil counts", e);
    if (!v) return D2_EIO;
    v[d2_par_rank()] = tol_sim_unprintable(ru->sim);
    int rc = d2_par_share(v, sizeof *v, K, e);
    *out = 0;
    for (int r = 0; r < K; r++) *out = v[r] > *out ? v[r] : *out;
    free(v);
    return rc;
}

void tol_report_free(tol_report *rep)
{
    if (!rep) return;
    for (int i = 0; i < rep->nmodels; i++) {
        tol_result *r = &rep->res[i];
        tol_mag_free(&r->mag);
        free(r->sens);
        free(r->vec_name);
        for (int s = 0; s < r->nmc; s++) {
            free(r->mc[s].acc);
            free(r->mc[s].vec);
        }
    }
    memset(rep, 0, sizeof *rep);
}

/* The nominal light budget of res from the count x ndet energies det. */
static int light_budget(tol_result *res, const d2_geom *g, const float *det, int count, d2_err *e)
{
    float *v = d2_malloc(sizeof(float) * 2 * (size_t)(count > 0 ? count : 1), "light budget", e);
    if (!v) return D2_EIO;
    double se = 0, sm = 0;
    for (int i = 0; i < count; i++) {
        const float *d = det + (size_t)i * g->ndet;
        se += v[i] = (float)det_total(g, d);
        sm += v[count + i] = (float)det_margin(g, d);
    }
    res->eff_mean = count ? se / count : 0;
    res->margin_mean = count ? sm / count : 0;
    res->eff_p5 = eval_quantile(v, count, 0.05);
    res->margin_p5 = eval_quantile(v + count, count, 0.05);
    free(v);
    return 0;
}

int tol_run(const tol_config *c, const tol_stack *stacks, int n, const d2_dataset *ds,
            d2_pool *pool, FILE *progress, tol_report *rep, d2_err *e)
{
    memset(rep, 0, sizeof *rep);
    rep->cfg = *c;
    rep->threads = d2_pool_threads(pool);
    if (n < 1 || n > TOL_MAX_MODELS)
        return d2_fail(e, D2_EUSAGE, "tolerance: %d models; give 1 to %d", n, TOL_MAX_MODELS);
    double t0 = d2_now();
    runner ru;
    memset(&ru, 0, sizeof ru);
    ru.c = c;
    ru.ds = ds;
    ru.pool = pool;
    ru.count = c->limit > 0 && c->limit < ds->count ? c->limit : ds->count;
    for (int i = 0; i < n; i++)
        ru.total += (long)tol_plan_inferences(c, stacks[i].m.g.layers, ru.count);
    d2_progress_start(&ru.pr, progress, "tolerance");
    int rc = 0;
    for (int i = 0; i < n; i++) {
        tol_result *res = &rep->res[i];
        rep->nmodels = i + 1;
        res->s = &stacks[i];
        res->images = ru.count;
        ru.res = res;
        double m0 = d2_now();
        if ((rc = tol_bind(c, &stacks[i], &res->mag, e))) goto done;
        int cap = 16 + 8 * stacks[i].m.g.layers;
        if (!(res->vec_name = d2_calloc((size_t)cap, sizeof *res->vec_name, "vector names", e))) {
            rc = D2_EIO;
            goto done;
        }
        res->nvec = tol_vector_names(&res->mag, stacks[i].m.g.layers, res->vec_name, cap);
        if (!(ru.sim = tol_sim_new(&stacks[i], rep->threads, e))) {
            rc = e->code ? e->code : D2_EIO;
            goto done;
        }
        float *det = d2_malloc(sizeof(float) * (size_t)ru.count * stacks[i].m.g.ndet,
                               "detector energies", e);
        if (!det) {
            rc = D2_EIO;
            goto done;
        }
        snprintf(ru.stage, sizeof ru.stage, "%s: nominal", stacks[i].name);
        rc = eval(&ru, 0, NULL, &res->nominal, NULL, det, e);
        double sum = 0;
        size_t nv = (size_t)ru.count * stacks[i].m.g.ndet;
        for (size_t k = 0; k < nv; k++) sum += det[k];
        if (!rc) rc = light_budget(res, &stacks[i].m.g, det, ru.count, e);
        free(det);
        if (rc) goto done;
        res->det_mean = sum / (double)nv;
        res->spec = c->spec >= 0 ? c->spec : res->nominal - 0.01;
        res->spec_from_nominal = c->spec < 0;
        if (c->sensitivity &&
            (rc = c->sensitivity == TOL_SENS_KINDS ? run_sensitivity_kinds(&ru, e)
                                                   : run_sensitivity(&ru, e)))
            goto done;
        if (c->inverse && (rc = run_inverse(&ru, e))) goto done;
        for (int s = 0; s < c->nscales; s++) {
            res->nmc = s + 1;
            if ((rc = run_mc(&ru, &res->mc[s], c->scales[s], e))) goto done;
        }
        if ((rc = unprintable(&ru, &res->unprintable, e))) goto done;
        res->seconds = d2_now() - m0;
        tol_sim_free(ru.sim);
        ru.sim = NULL;
        rep->inferences += res->inferences;
    }
    char extra[64];
    snprintf(extra, sizeof extra, "(%ld inferences)", rep->inferences);
    d2_progress_end(&ru.pr, extra);
done:
    tol_sim_free(ru.sim);
    snprintf(rep->dataset, sizeof rep->dataset, "%s", stacks[0].m.t.dataset);
    rep->seconds = d2_now() - t0;
    return rc;
}
