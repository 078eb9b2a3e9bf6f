/* The fit: Levenberg-Marquardt over the layer poses with the Jacobian of
 * every reading from the network's adjoint, detector gains and offsets in
 * closed form at each step, a Gaussian prior, and the covariance of the
 * result. */
#include "calibrate/calibrate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"

void cal_opts_default(cal_opts *o)
{
    memset(o, 0, sizeof *o);
    o->threads = 0;
    o->max_iter = 60;
    o->reg = 1.0;
    o->prior_xy_mm = 0.5;
    o->prior_z_mm = 2.0;
    o->prior_rot_deg = 1.5;
    o->floor = 0.05;
    o->noise = 0.01;
    o->fit_rot = 1;
    o->coarse = 50;
}

void cal_result_free(cal_result *r)
{
    if (!r) return;
    free(r->pred);
    r->pred = NULL;
}

typedef struct fit {
    const d2_model *m;
    const cal_meas *meas;
    const float *inputs;
    const cal_opts *o;
    d2_net *net;
    int L, nd, count, P, threads;
    float complex *t0[D2_MAX_LAYERS], *tp[D2_MAX_LAYERS], *tmp;
    float complex *dt[D2_MAX_LAYERS][CAL_PER_LAYER]; /* d tp / d (dx, dy, -, rot) */
    float complex **gt;    /* threads * L adjoint maps */
    double *gz;            /* threads * (L + 1) */
    double *E, *J, *sig;   /* count*nd energies, count*nd*P dE/dtheta, count*nd sigmas */
    int jac, failed;
    d2_err err;
    double sample_grads;
} fit;

static void pose_of(const double *th, int l, layer_pose *p)
{
    p->dx_mm = th[CAL_PER_LAYER * l];
    p->dy_mm = th[CAL_PER_LAYER * l + 1];
    p->dz_mm = th[CAL_PER_LAYER * l + 2];
    p->rot_deg = th[CAL_PER_LAYER * l + 3];
}

/* d tp / d component c of layer l's pose by a central difference of the
 * resampling alone (bilinear: exact between its kinks); no network pass. */
static void pose_deriv(fit *f, int l, const layer_pose *p, int c, double h)
{
    layer_pose a = *p, b = *p;
    double *pa = c == 0 ? &a.dx_mm : c == 1 ? &a.dy_mm : &a.rot_deg;
    double *pb = c == 0 ? &b.dx_mm : c == 1 ? &b.dy_mm : &b.rot_deg;
    *pa += h;
    *pb -= h;
    int n = f->m->g.n;
    size_t nn = (size_t)n * n;
    perturb_transform(f->t0[l], n, f->m->g.pitch_mm, &a, f->dt[l][c]);
    perturb_transform(f->t0[l], n, f->m->g.pitch_mm, &b, f->tmp);
    float s = (float)(0.5 / h);
    for (size_t i = 0; i < nn; i++) f->dt[l][c][i] = (f->dt[l][c][i] - f->tmp[i]) * s;
}

static void set_stack(fit *f, const double *th)
{
    const d2_geom *g = &f->m->g;
    layer_pose pose[D2_MAX_LAYERS];
    double gaps[D2_MAX_LAYERS + 1];
    for (int l = 0; l < f->L; l++) {
        pose_of(th, l, &pose[l]);
        perturb_transform(f->t0[l], g->n, g->pitch_mm, &pose[l], f->tp[l]);
        net_set_transmission(f->net, l, f->tp[l]);
        if (!f->jac) continue;
        double hx = 1e-3 * g->pitch_mm;
        pose_deriv(f, l, &pose[l], 0, hx);
        pose_deriv(f, l, &pose[l], 1, hx);
        pose_deriv(f, l, &pose[l], 3, 1e-3);
    }
    perturb_gaps(g, pose, gaps);
    for (int k = 0; k <= f->L; k++) net_set_gap(f->net, k, gaps[k], 0);
}

static double re_dot(const float complex *a, const float complex *b, size_t count)
{
    double s = 0;
    for (size_t i = 0; i < count; i++)
        s += (double)crealf(a[i]) * crealf(b[i]) + (double)cimagf(a[i]) * cimagf(b[i]);
    return s;
}

static void sample_job(void *arg, int i, int tid)
{
    fit *f = arg;
    if (f->failed) return;
    size_t nn = (size_t)f->m->g.n * f->m->g.n;
    float det[D2_MAX_DET];
    d2_err e = {0};
    if (net_forward_keep(f->net, f->inputs + (size_t)i * nn, det, tid, &e)) {
        f->err = e;
        f->failed = 1;
        return;
    }
    for (int k = 0; k < f->nd; k++) f->E[(size_t)i * f->nd + k] = det[k];
    if (!f->jac) return;
    float complex **gt = f->gt + (size_t)tid * f->L;
    double *gz = f->gz + (size_t)tid * (f->L + 1);
    for (int k = 0; k < f->nd; k++) {
        double w[D2_MAX_DET] = {0};
        w[k] = 1;
        net_adjoint_det(f->net, w, gt, gz, tid);
        double *J = f->J + ((size_t)i * f->nd + k) * f->P;
        for (int l = 0; l < f->L; l++) {
            double *jl = J + CAL_PER_LAYER * l;
            /* dE = 2 Re sum conj(gt) dt */
            jl[0] = 2 * re_dot(gt[l], f->dt[l][0], nn);
            jl[1] = 2 * re_dot(gt[l], f->dt[l][1], nn);
            jl[2] = gz[l] - gz[l + 1];
            jl[3] = f->o->fit_rot ? 2 * re_dot(gt[l], f->dt[l][3], nn) : 0;
        }
    }
}

/* Energies (and with f->jac their Jacobian) of every input at th. */
static int evaluate(fit *f, d2_pool *pool, const double *th, int jac, d2_err *e)
{
    f->jac = jac;
    set_stack(f, th);
    f->failed = 0;
    d2_pool_run(pool, sample_job, f, f->count);
    if (f->failed) {
        *e = f->err;
        return e->code;
    }
    if (jac) f->sample_grads += f->count;
    return 0;
}

/* Closed-form weighted least squares gain and offset per detector, and the
 * data cost sum ((m - a E - b) / sigma)^2. */
static double solve_gains(const fit *f, double *a, double *b)
{
    double cost = 0;
    for (int k = 0; k < f->nd; k++) {
        double sw = 0, se = 0, sm = 0, see = 0, sem = 0;
        for (int i = 0; i < f->count; i++) {
            size_t q = (size_t)i * f->nd + k;
            double w = 1.0 / (f->sig[q] * f->sig[q]), E = f->E[q], M = f->meas->read[q];
            sw += w, se += w * E, sm += w * M, see += w * E * E, sem += w * E * M;
        }
        double det = sw * see - se * se;
        a[k] = det > 0 ? (sw * sem - se * sm) / det : 0;
        b[k] = det > 0 ? (see * sm - se * sem) / det : sm / sw;
        for (int i = 0; i < f->count; i++) {
            size_t q = (size_t)i * f->nd + k;
            double r = (f->meas->read[q] - a[k] * f->E[q] - b[k]) / f->sig[q];
            cost += r * r;
        }
    }
    return cost;
}

static double prior_width(const cal_opts *o, int i);

/* Weight of parameter i's prior in the cost. */
static double prior_w(const cal_opts *o, int i)
{
    double w = prior_width(o, i);
    return o->reg / (w * w);
}

/* Prior width of parameter i (mm or degrees). */
static double prior_width(const cal_opts *o, int i)
{
    int c = i % CAL_PER_LAYER;
    return c < 2 ? o->prior_xy_mm : c == 2 ? o->prior_z_mm : o->prior_rot_deg;
}

/* Largest step of parameter i in one iteration: a quarter pixel lateral, a
 * quarter pixel at the plane's edge in rotation, 0.5 mm axial. */
static double trust(const fit *f, int i)
{
    int c = i % CAL_PER_LAYER;
    double px = f->m->g.pitch_mm, half = 0.5 * f->m->g.n;
    return c < 2 ? 0.25 * px : c == 2 ? 0.5 : 0.25 / half * 180 / M_PI;
}

static double prior_cost(const fit *f, const double *th)
{
    double c = 0;
    for (int i = 0; i < f->P; i++) c += prior_w(f->o, i) * th[i] * th[i];
    return c;
}

/* Cholesky solve of the n x n SPD matrix A (overwritten) for b (in place). */
static int chol_solve(double *A, double *b, int n)
{
    for (int j = 0; j < n; j++) {
        double d = A[j * n + j];
        for (int k = 0; k < j; k++) d -= A[j * n + k] * A[j * n + k];
        if (!(d > 0)) return -1;
        A[j * n + j] = sqrt(d);
        for (int i = j + 1; i < n; i++) {
            double s = A[i * n + j];
            for (int k = 0; k < j; k++) s -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = s / A[j * n + j];
        }
    }
    for (int i = 0; i < n; i++) {
        double s = b[i];
        for (int k = 0; k < i; k++) s -= A[i * n + k] * b[k];
        b[i] = s / A[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        double s = b[i];
        for (int k = i + 1; k < n; k++) s -= A[k * n + i] * b[k];
        b[i] = s / A[i * n + i];
    }
    return 0;
}

/* Gauss-Newton normal matrix A (Q x Q, Q = P + 2 ndet: poses, then gain and
 * offset of each detector) and the gradient of cost / 2, prior included.
 * Solving poses and gains jointly (rather than alternating) keeps the step
 * from fighting the gains where a pose changes every reading alike. */
static int normal_eq(const fit *f, const double *th, const double *a, const double *b,
                     double *A, double *grad)
{
    int P = f->P, Q = P + 2 * f->nd;
    memset(A, 0, sizeof(double) * Q * Q);
    memset(grad, 0, sizeof(double) * Q);
    double row[CAL_MAX_Q];
    for (int i = 0; i < f->count; i++)
        for (int k = 0; k < f->nd; k++) {
            size_t q = (size_t)i * f->nd + k;
            const double *J = f->J + q * P;
            double r = (f->meas->read[q] - a[k] * f->E[q] - b[k]) / f->sig[q];
            memset(row, 0, sizeof(double) * Q);
            for (int p = 0; p < P; p++) row[p] = a[k] * J[p] / f->sig[q];
            row[P + 2 * k] = f->E[q] / f->sig[q];
            row[P + 2 * k + 1] = 1.0 / f->sig[q];
            for (int p = 0; p < Q; p++) {
                if (row[p] == 0) continue;
                grad[p] -= row[p] * r;
                for (int s = 0; s <= p; s++) A[p * Q + s] += row[p] * row[s];
            }
        }
    for (int p = 0; p < Q; p++) {
        for (int s = 0; s < p; s++) A[s * Q + p] = A[p * Q + s];
        if (p >= P) continue;
        A[p * Q + p] += prior_w(f->o, p);
        grad[p] += prior_w(f->o, p) * th[p];
        if (!f->o->fit_rot && p % CAL_PER_LAYER == 3) {
            for (int s = 0; s < Q; s++) A[p * Q + s] = A[s * Q + p] = 0;
            A[p * Q + p] = 1;
            grad[p] = 0;
        }
    }
    return Q;
}

static const char *par_name(int c)
{
    static const char *names[] = {"dx", "dy", "dz", "rotation"};
    return names[c];
}

/* Covariance of poses, gains and offsets from the full Gauss-Newton matrix
 * (scaled by the reduced chi-square), the correlations of the poses and the
 * notes on what the data cannot fix. */
static int covariance(const fit *f, const double *th, const double *a, const double *b,
                      const double *cost, cal_result *r, d2_err *e)
{
    int P = f->P, Q = P + 2 * f->nd;
    double *N = d2_calloc((size_t)Q * Q * 3 + Q, sizeof *N, "covariance", e);
    if (!N) return D2_EIO;
    double *C = N + (size_t)Q * Q, *W = C + (size_t)Q * Q, *grad = W + (size_t)Q * Q;
    normal_eq(f, th, a, b, N, grad);
    int dof = f->count * f->nd - Q;
    double s2 = dof > 0 ? *cost / dof : 1.0;
    for (int c = 0; c < Q; c++) {
        memcpy(W, N, sizeof(double) * Q * Q);
        double *col = C + (size_t)c * Q;
        memset(col, 0, sizeof(double) * Q);
        col[c] = 1;
        if (chol_solve(W, col, Q)) {
            free(N);
            return d2_fail(e, D2_EINPUT, "calibrate: the fit's normal matrix is singular (a "
                           "detector that reads the same for every input?)");
        }
    }
    double sd[CAL_MAX_Q];
    for (int p = 0; p < Q; p++) sd[p] = sqrt(fmax(C[p * Q + p] * s2, 0));
    for (int l = 0; l < f->L; l++) {
        const double *s = sd + CAL_PER_LAYER * l;
        r->sigma[l] = (layer_pose){s[0], s[1], s[2], f->o->fit_rot ? s[3] : 0};
    }
    for (int k = 0; k < f->nd; k++) {
        r->gain_sigma[k] = sd[P + 2 * k];
        r->offset_sigma[k] = sd[P + 2 * k + 1];
    }
    for (int p = 0; p < P; p++)
        for (int s = 0; s < P; s++)
            r->corr[p * P + s] = C[p * Q + s] / sqrt(C[p * Q + p] * C[s * Q + s]);
    r->nnotes = 0;
    for (int p = 0; p < P && r->nnotes < CAL_MAX_NOTES; p++) {
        if (!f->o->fit_rot && p % CAL_PER_LAYER == 3) continue;
        for (int s = p + 1; s < P && r->nnotes < CAL_MAX_NOTES; s++) {
            if (!f->o->fit_rot && s % CAL_PER_LAYER == 3) continue;
            double c = r->corr[p * P + s];
            if (fabs(c) > 0.9)
                snprintf(r->notes[r->nnotes++], sizeof r->notes[0],
                         "layer %d %s and layer %d %s: correlation %+.2f, the readings hardly "
                         "tell them apart", p / CAL_PER_LAYER + 1, par_name(p % CAL_PER_LAYER),
                         s / CAL_PER_LAYER + 1, par_name(s % CAL_PER_LAYER), c);
        }
        /* The data fix a parameter when its posterior is much narrower than the prior. */
        double pw = f->o->reg > 0 ? 1.0 / sqrt(prior_w(f->o, p)) : INFINITY;
        if (sd[p] > 0.5 * pw && r->nnotes < CAL_MAX_NOTES)
            snprintf(r->notes[r->nnotes++], sizeof r->notes[0],
                     "layer %d %s: +-%.3g is over half the prior width %.3g: the prior, not the "
                     "readings, fixes it", p / CAL_PER_LAYER + 1, par_name(p % CAL_PER_LAYER),
                     sd[p], pw);
    }
    free(N);
    return 0;
}

static int fit_alloc(fit *f, d2_err *e)
{
    const d2_geom *g = &f->m->g;
    size_t nn = (size_t)g->n * g->n, rows = (size_t)f->count * f->nd;
    for (int l = 0; l < f->L; l++) {
        if (!(f->t0[l] = d2_malloc(nn * sizeof(float complex), "layer", e))) return D2_EIO;
        if (!(f->tp[l] = d2_malloc(nn * sizeof(float complex), "layer", e))) return D2_EIO;
        for (int c = 0; c < CAL_PER_LAYER; c++)
            if (c != 2 && !(f->dt[l][c] = d2_malloc(nn * sizeof(float complex), "layer", e)))
                return D2_EIO;
        net_phase_to_t(g, f->m->phase[l], f->m->amp[l], 0, nn, f->t0[l]);
    }
    size_t nt = (size_t)f->threads * f->L;
    if (!(f->tmp = d2_malloc(nn * sizeof(float complex), "layer", e)) ||
        !(f->gt = d2_calloc(nt, sizeof *f->gt, "adjoint maps", e)) ||
        !(f->gz = d2_calloc((size_t)f->threads * (f->L + 1), sizeof *f->gz, "gaps", e)) ||
        !(f->E = d2_calloc(rows, sizeof *f->E, "energies", e)) ||
        !(f->J = d2_calloc(rows * f->P, sizeof *f->J, "Jacobian", e)) ||
        !(f->sig = d2_calloc(rows, sizeof *f->sig, "sigmas", e)))
        return D2_EIO;
    for (size_t i = 0; i < nt; i++)
        if (!(f->gt[i] = d2_malloc(nn * sizeof(float complex), "adjoint map", e))) return D2_EIO;
    return 0;
}

/* The residual scale of every reading. */
static void fit_sigmas(fit *f)
{
    /* sigma = noise * max(reading, floor * the detector's largest) */
    for (int k = 0; k < f->nd; k++) {
        double mx = 0;
        for (int i = 0; i < f->count; i++) mx = fmax(mx, f->meas->read[(size_t)i * f->nd + k]);
        for (int i = 0; i < f->count; i++) {
            size_t q = (size_t)i * f->nd + k;
            double s = fmax(f->meas->read[q], f->o->floor * mx);
            f->sig[q] = f->o->noise * (s > 0 ? s : 1.0);
        }
    }
}

static void fit_free(fit *f)
{
    for (int l = 0; l < D2_MAX_LAYERS; l++) {
        free(f->t0[l]);
        free(f->tp[l]);
        for (int c = 0; c < CAL_PER_LAYER; c++) free(f->dt[l][c]);
    }
    if (f->gt)
        for (int i = 0; i < f->threads * f->L; i++) free(f->gt[i]);
    free(f->gt);
    free(f->gz);
    free(f->tmp);
    free(f->E);
    free(f->J);
    free(f->sig);
    net_free(f->net);
}

/* Levenberg-Marquardt from th: Jacobian at each accepted point, trial
 * steps with energies only. Returns the final cost in *cost. */
static int lm(fit *f, d2_pool *pool, double *th, double *a, double *b, cal_result *r,
              double *cost, d2_err *e)
{
    int P = f->P, Q = P + 2 * f->nd;
    double A[CAL_MAX_Q * CAL_MAX_Q], M[CAL_MAX_Q * CAL_MAX_Q], grad[CAL_MAX_Q], step[CAL_MAX_Q];
    double tn[CAL_MAX_PAR], an[D2_MAX_DET], bn[D2_MAX_DET], mu = 1e-3;
    double radius = 1; /* trust radius in units of trust(): shrinks on failure, regrows to 1 */
    if (evaluate(f, pool, th, 1, e)) return e->code;
    *cost = solve_gains(f, a, b) + prior_cost(f, th);
    int it0 = r->iterations;
    if (!it0) r->cost0 = *cost;
    while (r->iterations - it0 < f->o->max_iter) {
        normal_eq(f, th, a, b, A, grad);
        int accepted = 0;
        double cn = *cost, moved = 0;
        while (!accepted && mu < 1e8) {
            memcpy(M, A, sizeof(double) * Q * Q);
            for (int p = 0; p < Q; p++) {
                M[p * Q + p] += mu * A[p * Q + p];
                step[p] = -grad[p];
            }
            if (chol_solve(M, step, Q)) {
                mu *= 10;
                continue;
            }
            /* The gains' part of the step is dropped: they are solved
             * exactly at the new poses. A step beyond the trust radius (from a
             * quarter pixel, where the bilinear resampling stays near its
             * linearisation; back up by 1.5 after each accepted step, half
             * after each rejected one) is damped further first. */
            moved = 0;
            double over = 0;
            for (int p = 0; p < P; p++) {
                tn[p] = th[p] + step[p];
                moved = fmax(moved, fabs(step[p]) / prior_width(f->o, p));
                over = fmax(over, fabs(step[p]) / (radius * trust(f, p)));
            }
            if (over > 1) {
                mu = fmax(mu, 1e-6) * 4;
                continue;
            }
            if (evaluate(f, pool, tn, 0, e)) return e->code;
            cn = solve_gains(f, an, bn) + prior_cost(f, tn);
            if (cn < *cost) {
                accepted = 1;
                mu = fmax(mu / 3, 1e-9);
                radius = fmin(radius * 1.5, 1);
            } else {
                mu *= 4;
                radius = fmax(radius * 0.5, 1.0 / 16);
            }
        }
        r->iterations++;
        if (!accepted) break;
        double drop = *cost - cn;
        memcpy(th, tn, sizeof(double) * P);
        if (f->o->progress)
            fprintf(f->o->progress, "calibrate: iteration %d on %d inputs: cost %.6g (mu %.2g)\n",
                    r->iterations, f->count, cn, mu);
        if (evaluate(f, pool, th, 1, e)) return e->code;
        *cost = solve_gains(f, a, b) + prior_cost(f, th);
        /* Converged: the cost stalls or no pose moves by 1e-3 of its prior width. */
        if (drop < 1e-5 * *cost || moved < 1e-3) break;
    }
    return 0;
}

int cal_fit(const d2_model *m, const cal_meas *meas, const float *inputs, const cal_opts *o,
            cal_result *r, d2_err *e)
{
    memset(r, 0, sizeof *r);
    if (m->g.optics != D2_OPTICS_THIN)
        return d2_fail(e, D2_EINPUT, "calibrate: the fit runs on the thin model only (optics "
                       "\"thin\"); the thick plates have no pose derivatives yet");
    if (meas->ndet != m->g.ndet)
        return d2_fail(e, D2_EINPUT, "calibrate: %d readings per input, the model has %d detectors",
                       meas->ndet, m->g.ndet);
    if (meas->count < 3)
        return d2_fail(e, D2_EINPUT, "calibrate: %d measured inputs, need at least 3", meas->count);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fit f = {.m = m, .meas = meas, .inputs = inputs, .o = o, .L = m->g.layers, .nd = m->g.ndet,
             .count = meas->count, .P = CAL_PER_LAYER * m->g.layers};
    d2_pool *pool = d2_pool_new(o->threads, e);
    if (!pool) return e->code;
    f.threads = d2_pool_threads(pool);
    int rc = fit_alloc(&f, e);
    if (!rc && !(f.net = net_new(&m->g, f.threads, e))) rc = e->code;
    if (!rc) fit_sigmas(&f);
    double th[CAL_MAX_PAR] = {0}, a[D2_MAX_DET], b[D2_MAX_DET], cost = 0;
    for (int l = 0; o->start && l < f.L; l++) {
        th[CAL_PER_LAYER * l] = o->start[l].dx_mm;
        th[CAL_PER_LAYER * l + 1] = o->start[l].dy_mm;
        th[CAL_PER_LAYER * l + 2] = o->start[l].dz_mm;
        th[CAL_PER_LAYER * l + 3] = o->fit_rot ? o->start[l].rot_deg : 0;
    }
    /* Far from the answer every input points the same way: the first
     * o->coarse inputs find the basin at a fraction of the cost, all of
     * them then refine it (and give the covariance). */
    if (!rc && o->coarse > 0 && o->coarse < f.count) {
        f.count = o->coarse;
        rc = lm(&f, pool, th, a, b, r, &cost, e);
        f.count = meas->count;
    }
    if (!rc) rc = lm(&f, pool, th, a, b, r, &cost, e);
    if (!rc) rc = covariance(&f, th, a, b, &cost, r, e);
    if (!rc && !(r->pred = d2_malloc((size_t)f.count * f.nd * sizeof *r->pred, "predictions", e)))
        rc = D2_EIO;
    if (!rc) {
        r->layers = f.L;
        r->ndet = f.nd;
        r->count = f.count;
        r->params = f.P;
        r->cost = cost;
        double ss = 0;
        for (int i = 0; i < f.count; i++)
            for (int k = 0; k < f.nd; k++) {
                size_t q = (size_t)i * f.nd + k;
                r->pred[q] = a[k] * f.E[q] + b[k];
                double rel = (meas->read[q] - r->pred[q]) / (f.sig[q] / o->noise);
                ss += rel * rel;
            }
        r->rms_rel = sqrt(ss / ((double)f.count * f.nd));
        r->noise = o->noise;
        for (int l = 0; l < f.L; l++) pose_of(th, l, &r->pose[l]);
        memcpy(r->gain, a, sizeof(double) * f.nd);
        memcpy(r->offset, b, sizeof(double) * f.nd);
        r->sample_grads = f.sample_grads;
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        r->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    }
    fit_free(&f);
    d2_pool_free(pool);
    if (rc) cal_result_free(r);
    return rc;
}

int cal_pose_jacobian(const d2_model *m, const layer_pose *pose, const float *in, double *E,
                      double *J, d2_err *e)
{
    if (m->g.optics != D2_OPTICS_THIN)
        return d2_fail(e, D2_EINPUT, "calibrate: pose derivatives need the thin model");
    cal_opts o;
    cal_opts_default(&o);
    fit f = {.m = m, .inputs = in, .o = &o, .L = m->g.layers, .nd = m->g.ndet, .count = 1,
             .P = CAL_PER_LAYER * m->g.layers, .threads = 1};
    d2_pool *pool = d2_pool_new(1, e);
    if (!pool) return e->code;
    double th[CAL_MAX_PAR];
    for (int l = 0; l < f.L; l++) {
        th[CAL_PER_LAYER * l] = pose[l].dx_mm;
        th[CAL_PER_LAYER * l + 1] = pose[l].dy_mm;
        th[CAL_PER_LAYER * l + 2] = pose[l].dz_mm;
        th[CAL_PER_LAYER * l + 3] = pose[l].rot_deg;
    }
    int rc = fit_alloc(&f, e);
    if (!rc && !(f.net = net_new(&m->g, 1, e))) rc = e->code;
    if (!rc) rc = evaluate(&f, pool, th, 1, e);
    if (!rc) {
        memcpy(E, f.E, sizeof(double) * f.nd);
        memcpy(J, f.J, sizeof(double) * f.nd * f.P);
    }
    fit_free(&f);
    d2_pool_free(pool);
    return rc;
}
