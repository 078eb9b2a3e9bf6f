/* Phase -> height: offset choice, quantisation, per-layer statistics, and the
 * inverse (height -> transmission). */
#include "export/export.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TWO_PI (2.0 * M_PI)

/* phi mod 2 pi in [0, 2 pi). */
static double wrap_2pi(double x)
{
    double w = fmod(x, TWO_PI);
    if (w < 0) w += TWO_PI;
    if (w >= TWO_PI) w = 0; /* fmod of a tiny negative number rounds up to 2 pi */
    return w;
}

/* x mod 2 pi in (-pi, pi]. */
static double wrap_pm(double x)
{
    double w = wrap_2pi(x);
    return w > M_PI ? w - TWO_PI : w;
}

int exp_params_check(const exp_params *p, d2_err *e)
{
    if (!(isfinite(p->wavelength_mm) && p->wavelength_mm > 0))
        return d2_fail(e, D2_EINPUT, "wavelength %g mm: must be a finite number > 0",
                       p->wavelength_mm);
    if (!(isfinite(p->index) && p->index > 1 && p->index <= 10))
        return d2_fail(e, D2_EINPUT, "refractive index %g: must be in (1, 10] (n <= 1 gives no "
                       "phase delay in air)", p->index);
    if (!(isfinite(p->kappa) && p->kappa >= 0 && p->kappa <= 10))
        return d2_fail(e, D2_EINPUT, "extinction coefficient kappa %g: must be in [0, 10]",
                       p->kappa);
    if (!(isfinite(p->base_mm) && p->base_mm >= 0 && p->base_mm <= 1000))
        return d2_fail(e, D2_EINPUT, "base %g mm: must be in [0, 1000]", p->base_mm);
    if (!(isfinite(p->z_step_mm) && p->z_step_mm >= 0 && p->z_step_mm <= 10))
        return d2_fail(e, D2_EINPUT, "Z step %g mm: must be in [0, 10] (0: no rounding)",
                       p->z_step_mm);
    if (p->levels != 0 && (p->levels < 2 || p->levels > EXP_MAX_LEVELS))
        return d2_fail(e, D2_EINPUT, "levels %d: must be 0 (Z step only) or 2..%d", p->levels,
                       EXP_MAX_LEVELS);
    if (!p->offset_auto && !isfinite(p->offset_rad))
        return d2_fail(e, D2_EINPUT, "phase offset %g rad: must be finite", p->offset_rad);
    if (!(isfinite(p->jump_weight) && p->jump_weight >= 0 && p->jump_weight <= 1e6))
        return d2_fail(e, D2_EINPUT, "jump weight %g: must be in [0, 1e6]", p->jump_weight);
    return 0;
}

double exp_offset_objective(const float *phase, int rows, int cols, double c, double jump_weight)
{
    size_t n = (size_t)rows * (size_t)cols;
    double sum = 0;
    long jumps = 0, pairs = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            double w = wrap_2pi(phase[(size_t)i * cols + j] + c);
            sum += w;
            if (j + 1 < cols) {
                pairs++;
                jumps += fabs(w - wrap_2pi(phase[(size_t)i * cols + j + 1] + c)) > M_PI;
            }
            if (i + 1 < rows) {
                pairs++;
                jumps += fabs(w - wrap_2pi(phase[(size_t)(i + 1) * cols + j] + c)) > M_PI;
            }
        }
    double v = n ? sum / ((double)n * TWO_PI) : 0;
    return v + (pairs ? jump_weight * (double)jumps / (double)pairs : 0);
}

/* A breakpoint of E(c): at position x the wrapped-pixel count changes by
 * dwrap and the active jump-arc count by djump. */
typedef struct sweep_ev {
    double x;
    int dwrap, djump;
} sweep_ev;

static int cmp_ev(const void *a, const void *b)
{
    double x = ((const sweep_ev *)a)->x, y = ((const sweep_ev *)b)->x;
    return (x > y) - (x < y);
}

/* The arc of offsets [a, a + len) (mod period) on which a neighbour pair is
 * split by the wrap: +1 at its start, -1 at its end; an arc covering 0 is
 * active from the start (*active0). */
static void add_arc(sweep_ev *ev, size_t *ne, long *active0, double a, double len, double period)
{
    a = fmod(a, period);
    if (a < 0) a += period;
    if (a >= period) a = 0;
    double b = a + len;
    if (b > period) {
        (*active0)++;
        ev[(*ne)++] = (sweep_ev){b - period, 0, -1};
        ev[(*ne)++] = (sweep_ev){a, 0, +1};
    } else {
        ev[(*ne)++] = (sweep_ev){a, 0, +1};
        if (b < period) ev[(*ne)++] = (sweep_ev){b, 0, -1};
    }
}

/* Continuous case. For pixel i with p = phi mod 2 pi, w(c) = p + c until
 * c = s = 2 pi - p, where it wraps to 0: sum w(c) = sum p + N c - 2 pi W(c),
 * W(c) the pixels wrapped so far. A pair (i, j) with d = wrap_pm(p_j - p_i) is
 * split by the wrap (|w_i - w_j| > pi) exactly for c in [s_i - d, s_i) when
 * d > 0 and [s_i, s_i - d) when d < 0: an arc of length |d|. */
static int choose_continuous(const float *phase, int rows, int cols, double jw, double *best_c,
                             d2_err *e)
{
    size_t n = (size_t)rows * (size_t)cols;
    size_t cap = n * 5 + 1;
    sweep_ev *ev = d2_malloc(cap * sizeof *ev, "phase-offset sweep", e);
    double *p = d2_malloc(n * sizeof *p, "phase-offset sweep", e);
    if (!ev || !p) {
        free(ev);
        free(p);
        return D2_EIO;
    }
    size_t ne = 0;
    long active = 0, pairs = 0;
    double sum0 = 0;
    for (size_t k = 0; k < n; k++) {
        p[k] = wrap_2pi(phase[k]);
        sum0 += p[k];
        if (p[k] > 0) ev[ne++] = (sweep_ev){TWO_PI - p[k], +1, 0};
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j;
            size_t nb[2] = {k + 1, k + (size_t)cols};
            int has[2] = {j + 1 < cols, i + 1 < rows};
            for (int q = 0; q < 2; q++) {
                if (!has[q]) continue;
                pairs++;
                double d = wrap_pm(p[nb[q]] - p[k]);
                /* |d| = pi is never split (the difference stays pi), d = 0 never. */
                if (d == 0 || fabs(d) >= M_PI) continue;
                double s = TWO_PI - p[k];
                if (d > 0) add_arc(ev, &ne, &active, s - d, d, TWO_PI);
                else add_arc(ev, &ne, &active, s, -d, TWO_PI);
            }
        }
    qsort(ev, ne, sizeof *ev, cmp_ev);

    double nd = (double)n, np = pairs ? (double)pairs : 1;
    long wrapped = 0;
    size_t k = 0;
    /* Events at exactly 0 apply before the first evaluation. */
    while (k < ne && ev[k].x <= 0) {
        wrapped += ev[k].dwrap;
        active += ev[k].djump;
        k++;
    }
    double best = (sum0 - TWO_PI * (double)wrapped) / (nd * TWO_PI) + jw * (double)active / np;
    double bx = 0, bnext = k < ne ? ev[k].x : TWO_PI;
    while (k < ne) {
        double x = ev[k].x;
        /* Events closer than 1e-12 rad are one breakpoint. */
        while (k < ne && ev[k].x <= x + 1e-12) {
            wrapped += ev[k].dwrap;
            active += ev[k].djump;
            k++;
        }
        double next = k < ne ? ev[k].x : TWO_PI;
        double v = (sum0 + nd * x - TWO_PI * (double)wrapped) / (nd * TWO_PI) +
                   jw * (double)active / np;
        if (v < best - 1e-12) {
            best = v;
            bx = x;
            bnext = next;
        }
    }
    /* Step just past the breakpoint, so the pixel that wraps there lands at
     * w = eps rather than at 2 pi - eps; E grows by eps / 2pi at most. */
    double eps = bx > 0 ? fmin(1e-6, 0.5 * (bnext - bx)) : 0;
    double c = bx + eps;
    *best_c = c < TWO_PI ? c : 0;
    free(ev);
    free(p);
    return 0;
}

/* Levels case: k_i = round(p_i K / 2 pi) mod K, shift m in 0..K-1,
 * w_i = (k_i + m) mod K; same objective with sums in units of levels. Exact
 * over the K choices with a histogram and a difference array. */
static int choose_levels(const float *phase, int rows, int cols, int K, double jw, double *best_c,
                         d2_err *e)
{
    size_t n = (size_t)rows * (size_t)cols;
    int *lv = d2_malloc(n * sizeof *lv, "phase-offset levels", e);
    long *hist = d2_calloc((size_t)K, sizeof *hist, "phase-offset levels", e);
    long *diff = d2_calloc((size_t)K + 1, sizeof *diff, "phase-offset levels", e);
    if (!lv || !hist || !diff) {
        free(lv);
        free(hist);
        free(diff);
        return D2_EIO;
    }
    double sum0 = 0;
    for (size_t k = 0; k < n; k++) {
        long q = lround(wrap_2pi(phase[k]) * K / TWO_PI) % K;
        lv[k] = (int)q;
        hist[q]++;
        sum0 += (double)q;
    }
    long pairs = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j;
            size_t nb[2] = {k + 1, k + (size_t)cols};
            int has[2] = {j + 1 < cols, i + 1 < rows};
            for (int q = 0; q < 2; q++) {
                if (!has[q]) continue;
                pairs++;
                int d = (lv[nb[q]] - lv[k] + K) % K;
                if (2 * d > K) d -= K; /* d in (-K/2, K/2] */
                if (d == 0 || 2 * abs(d) >= K) continue;
                /* shifts m splitting the pair: [K - d - k_i, K - k_i) for d > 0,
                 * [K - k_i, K - k_i - d) for d < 0 (mod K) */
                int a = d > 0 ? K - d - lv[k] : K - lv[k];
                int len = abs(d);
                a = ((a % K) + K) % K;
                int b = a + len;
                diff[a]++;
                if (b <= K) {
                    diff[b]--;
                } else {
                    diff[K]--;
                    diff[0]++;
                    diff[b - K]--;
                }
            }
        }
    double nd = (double)n, np = pairs ? (double)pairs : 1;
    long active = 0, wrapped = 0;
    double best = INFINITY;
    int bm = 0;
    for (int m = 0; m < K; m++) {
        active += diff[m];
        if (m > 0) wrapped += hist[K - m]; /* levels k >= K - m have wrapped */
        double v = (sum0 + nd * m - (double)K * (double)wrapped) / (nd * K) +
                   jw * (double)active / np;
        if (v < best - 1e-12) {
            best = v;
            bm = m;
        }
    }
    *best_c = TWO_PI * bm / K;
    free(lv);
    free(hist);
    free(diff);
    return 0;
}

int exp_offset_choose(const float *phase, int rows, int cols, int levels, double jump_weight,
                      double *c, d2_err *e)
{
    *c = 0;
    if (rows < 1 || cols < 1) return 0;
    if (levels >= 2) return choose_levels(phase, rows, cols, levels, jump_weight, c, e);
    return choose_continuous(phase, rows, cols, jump_weight, c, e);
}

long exp_count_jumps(const float *h, int rows, int cols, double period_mm)
{
    long jumps = 0;
    double half = 0.5 * period_mm;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j;
            if (j + 1 < cols && fabs((double)h[k] - h[k + 1]) > half) jumps++;
            if (i + 1 < rows && fabs((double)h[k] - h[k + (size_t)cols]) > half) jumps++;
        }
    return jumps;
}

/* Heights for offset c; accumulates the phase error (printed minus wanted,
 * wrapped) when err_sq is not NULL. */
static void heights_for(const exp_params *p, const float *phase, size_t n, double c, float *h,
                        double *err_sq, double *err_max)
{
    double P = opt_period_mm(p->wavelength_mm, p->index);
    double dz = p->z_step_mm;
    double sq = 0, mx = 0;
    for (size_t k = 0; k < n; k++) {
        double w = wrap_2pi((double)phase[k] + c);
        double rel = p->levels >= 2 ? (double)(lround(w * p->levels / TWO_PI) % p->levels) /
                                           p->levels * P
                                    : w / TWO_PI * P;
        double hh = p->base_mm + rel;
        if (dz > 0) hh = nearbyint(hh / dz) * dz;
        h[k] = (float)hh;
        if (err_sq) {
            double err = fabs(wrap_pm(((double)h[k] - p->base_mm) / P * TWO_PI - w));
            sq += err * err;
            if (err > mx) mx = err;
        }
    }
    if (err_sq) {
        *err_sq = sq;
        *err_max = mx;
    }
}

int exp_layer_heights(const exp_params *p, const float *phase, int n, double pitch_mm, float *h,
                      exp_layer_stats *st, d2_err *e)
{
    memset(st, 0, sizeof *st);
    int rc = exp_params_check(p, e);
    if (rc) return rc;
    if (n < 1 || n > D2_MAX_N)
        return d2_fail(e, D2_EINPUT, "layer size %d: must be 1..%d", n, D2_MAX_N);
    if (!(isfinite(pitch_mm) && pitch_mm > 0))
        return d2_fail(e, D2_EINPUT, "pitch %g mm: must be a finite number > 0", pitch_mm);
    size_t cnt = (size_t)n * (size_t)n;
    for (size_t k = 0; k < cnt; k++)
        if (!isfinite(phase[k]))
            return d2_fail(e, D2_EINPUT, "phase at row %zu, column %zu is %g: every phase must be "
                           "finite", k / (size_t)n, k % (size_t)n, (double)phase[k]);
    double c = p->offset_rad;
    if (p->offset_auto && (rc = exp_offset_choose(phase, n, n, p->levels, p->jump_weight, &c, e)))
        return rc;
    c = wrap_2pi(c);
    double P = opt_period_mm(p->wavelength_mm, p->index);

    /* The plain wrap first (offset 0), into h, for the comparison figures. */
    heights_for(p, phase, cnt, 0, h, NULL, NULL);
    double vplain = 0;
    for (size_t k = 0; k < cnt; k++) vplain += h[k];
    st->volume_plain_mm3 = vplain * pitch_mm * pitch_mm;
    st->wrap_jumps_plain = exp_count_jumps(h, n, n, P);

    double sq, mx;
    heights_for(p, phase, cnt, c, h, &sq, &mx);
    st->offset_rad = c;
    st->phase_rms_error_rad = sqrt(sq / (double)cnt);
    st->phase_max_error_rad = mx;
    st->wrap_jumps = exp_count_jumps(h, n, n, P);
    st->pairs = 2L * n * (n - 1);
    double sum = 0, asum = 0, psum = 0;
    st->min_mm = INFINITY;
    st->max_mm = -INFINITY;
    st->amp_min = INFINITY;
    st->amp_max = -INFINITY;
    double att = opt_attenuation_per_mm(p->wavelength_mm, p->kappa);
    for (size_t k = 0; k < cnt; k++) {
        double hh = h[k], a = exp(-att * hh);
        sum += hh;
        asum += a;
        psum += a * a;
        if (hh < st->min_mm) st->min_mm = hh;
        if (hh > st->max_mm) st->max_mm = hh;
        if (a < st->amp_min) st->amp_min = a;
        if (a > st->amp_max) st->amp_max = a;
    }
    st->mean_mm = sum / (double)cnt;
    st->volume_mm3 = sum * pitch_mm * pitch_mm;
    st->amp_mean = asum / (double)cnt;
    st->power_mean = psum / (double)cnt;
    return 0;
}

double exp_png_scale(double max_mm, double z_step_mm)
{
    const double um = 0.001;
    double top = max_mm > 0 ? max_mm : 0;
    if (z_step_mm > 0) {
        /* the largest m with z_step / m >= ~1 um, then fewer while it overflows */
        long m = (long)floor(z_step_mm / um + 1e-9);
        if (m < 1) m = 1;
        for (; m >= 1; m--) {
            double s = z_step_mm / (double)m;
            if (top / s <= 65535.0) return s;
        }
    } else if (top / um <= 65535.0) {
        return um;
    }
    return top / 65535.0;
}
