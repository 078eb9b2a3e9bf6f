/* The optical chain and its adjoint.
 *
 * Each gap is a zero-padded angular-spectrum propagation. Instead of a full
 * p x p 2-D FFT pair (p = pad * n) we exploit the padding: before the forward
 * transform only the first n rows hold data, and after the inverse transform
 * only the first n rows are kept. So a gap costs n row FFTs, p column FFTs,
 * the transfer-function product, p inverse column FFTs and n inverse row
 * FFTs: (2n + 2p) 1-D transforms instead of 4p, 3/4 of the work at pad 2. The
 * column passes are one batched FFTW plan each (howmany = p), planned at
 * FFTW_PATIENT once per size (wisdom kept), with the product by H in between
 * as one vectorised pass chosen for the CPU at run time: `make bench`
 * measured this the fastest of the schedules it tries (column blocks of 8 or
 * 16 with H fused, out-of-place columns). */
#include "optics/optics.h"
#include "optics/simd.h"
#include "optics/thick.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"

typedef struct ws {
    float complex *w;                  /* p*p work buffer */
    float complex *v[D2_MAX_LAYERS];   /* field arriving at each layer, n*n */
    float complex *o;                  /* field on the detector plane, n*n */
    float complex *g;                  /* adjoint field, n*n */
    float complex *spec[D2_MAX_LAYERS + 1]; /* net_forward_keep: spectrum entering each gap */
    double ein;                        /* net_forward_keep: input energy */
} ws;

struct d2_net {
    d2_geom g;
    int n, p, L, threads;
    float complex *H[D2_MAX_LAYERS + 1];
    double H_z[D2_MAX_LAYERS + 1], H_lambda[D2_MAX_LAYERS + 1]; /* what each H is for */
    float complex *t[D2_MAX_LAYERS];
    float complex *illum;              /* input illumination, n*n; NULL: plane wave */
    fftwf_plan row_f, row_b, col_f, col_b;
    thick *thick;                      /* thick plates (optics/thick.c), or NULL */
    int thick_failed;                  /* a plate could not be set: results are NaN */
    int det_r0[D2_MAX_DET], det_r1[D2_MAX_DET], det_c0[D2_MAX_DET], det_c1[D2_MAX_DET];
    int det_overlap;                   /* two detectors share pixels */
    double eff_weight;                 /* the loss's efficiency term (detect.c) */
    ws *ws;
};

static pthread_mutex_t plan_mu = PTHREAD_MUTEX_INITIALIZER;
static int wisdom_loaded;

void net_wisdom_path(char *buf, size_t cap)
{
    const char *env = getenv("D2FAB_WISDOM");
    if (env && *env) {
        snprintf(buf, cap, "%s", env);
        return;
    }
    const char *home = getenv("HOME");
    snprintf(buf, cap, "%s/.cache/d2fab/wisdom-fftwf", home && *home ? home : ".");
}

static void wisdom_load(void)
{
    if (wisdom_loaded) return;
    wisdom_loaded = 1;
    char path[1024];
    net_wisdom_path(path, sizeof path);
    /* The checked open: a FIFO or device there must not hang planning. */
    FILE *f;
    if (d2_fopen_input(path, &f, NULL)) return;
    fftwf_import_wisdom_from_file(f);
    fclose(f);
}

/* Best effort: wisdom only saves planning time, so failing to store it is not
 * an error. Written to a temporary name and renamed, like every output. */
static void wisdom_save(void)
{
    char path[1024], tmp[1100], dir[1024];
    net_wisdom_path(path, sizeof path);
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        char *s = dir + 1;
        while ((s = strchr(s, '/'))) {
            *s = 0;
            mkdir(dir, 0777);
            *s++ = '/';
        }
        mkdir(dir, 0777);
    }
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    if (fftwf_export_wisdom_to_filename(tmp)) {
        if (rename(tmp, path) != 0) remove(tmp);
    } else {
        remove(tmp);
    }
}

void geom_det_rect(const d2_geom *g, int k, int *r0, int *r1, int *c0, int *c1)
{
    double half = 0.5 * g->det_size_mm / g->pitch_mm;
    double cx = g->det_x_mm[k] / g->pitch_mm + 0.5 * (g->n - 1);
    double cy = g->det_y_mm[k] / g->pitch_mm + 0.5 * (g->n - 1);
    /* Pixels whose centres fall inside the square. */
    *c0 = (int)ceil(cx - half);
    *c1 = (int)floor(cx + half) + 1;
    *r0 = (int)ceil(cy - half);
    *r1 = (int)floor(cy + half) + 1;
    if (*c0 < 0) *c0 = 0;
    if (*r0 < 0) *r0 = 0;
    if (*c1 > g->n) *c1 = g->n;
    if (*r1 > g->n) *r1 = g->n;
}

const d2_geom *net_geom(const d2_net *net) { return &net->g; }

d2_net *net_new(const d2_geom *g, int threads, d2_err *e)
{
    if (threads < 1) threads = 1;
    d2_net *net = d2_calloc(1, sizeof *net, "network", e);
    if (!net) return NULL;
    net->g = *g;
    net->n = g->n;
    net->p = g->pad * g->n;
    net->L = g->layers;
    net->threads = threads;
    int n = net->n, p = net->p;
    size_t nn = (size_t)n * n, pp = (size_t)p * p;

    for (int k = 0; k <= net->L; k++) {
        net->H[k] = fftwf_malloc(pp * sizeof(float complex));
        if (!net->H[k]) goto oom;
        asm_transfer(net->H[k], p, g->pitch_mm, g->wavelength_mm, g->gap_mm[k]);
        net->H_z[k] = g->gap_mm[k];
        net->H_lambda[k] = g->wavelength_mm;
    }
    if (g->illum != D2_ILLUM_PLANE) {
        if (!(net->illum = fftwf_malloc(nn * sizeof(float complex)))) goto oom;
        illum_field(g, net->illum);
    }
    for (int l = 0; l < net->L; l++) {
        net->t[l] = fftwf_malloc(nn * sizeof(float complex));
        if (!net->t[l]) goto oom;
        for (size_t i = 0; i < nn; i++) net->t[l][i] = 1.0f;
    }
    net->ws = d2_calloc((size_t)threads, sizeof *net->ws, "workspaces", e);
    if (!net->ws) goto fail;
    for (int t = 0; t < threads; t++) {
        ws *w = &net->ws[t];
        w->w = fftwf_malloc(pp * sizeof(float complex));
        w->o = fftwf_malloc(nn * sizeof(float complex));
        w->g = fftwf_malloc(nn * sizeof(float complex));
        if (!w->w || !w->o || !w->g) goto oom;
        for (int l = 0; l < net->L; l++) {
            w->v[l] = fftwf_malloc(nn * sizeof(float complex));
            if (!w->v[l]) goto oom;
        }
    }
    for (int k = 0; k < g->ndet; k++)
        geom_det_rect(g, k, &net->det_r0[k], &net->det_r1[k], &net->det_c0[k], &net->det_c1[k]);
    for (int a = 0; a < g->ndet; a++)
        for (int b = a + 1; b < g->ndet; b++)
            if (net->det_r0[a] < net->det_r1[b] && net->det_r0[b] < net->det_r1[a] &&
                net->det_c0[a] < net->det_c1[b] && net->det_c0[b] < net->det_c1[a])
                net->det_overlap = 1;

    /* Plans are made once per size; FFTW's planner is not thread-safe. */
    pthread_mutex_lock(&plan_mu);
    wisdom_load();
    fftwf_complex *buf = (fftwf_complex *)net->ws[0].w;
    int len[1] = {p};
    /* PATIENT costs seconds at p = 400 the first time; the wisdom file keeps
     * it for every later run. Each plan's search is capped at 10 s, so a slow
     * machine (or valgrind) settles for the best plan found by then. */
    unsigned flags = FFTW_PATIENT;
    fftwf_set_timelimit(10.0);
    memset(buf, 0, pp * sizeof(float complex));
    net->row_f = fftwf_plan_many_dft(1, len, n, buf, NULL, 1, p, buf, NULL, 1, p, FFTW_FORWARD, flags);
    net->row_b = fftwf_plan_many_dft(1, len, n, buf, NULL, 1, p, buf, NULL, 1, p, FFTW_BACKWARD, flags);
    net->col_f = fftwf_plan_many_dft(1, len, p, buf, NULL, p, 1, buf, NULL, p, 1, FFTW_FORWARD, flags);
    net->col_b = fftwf_plan_many_dft(1, len, p, buf, NULL, p, 1, buf, NULL, p, 1, FFTW_BACKWARD, flags);
    fftwf_set_timelimit(FFTW_NO_TIMELIMIT);
    if (g->optics == D2_OPTICS_THICK) net->thick = thick_new(g, threads, e);
    wisdom_save();
    pthread_mutex_unlock(&plan_mu);
    if (g->optics == D2_OPTICS_THICK && !net->thick) goto fail;
    if (!net->row_f || !net->row_b || !net->col_f || !net->col_b) {
        d2_fail(e, D2_EIO, "FFTW could not plan transforms of size %d", p);
        goto fail;
    }
    return net;
oom:
    d2_fail(e, D2_EIO, "out of memory building the %d x %d network (FFT size %d)", n, n, p);
fail:
    net_free(net);
    return NULL;
}

void net_free(d2_net *net)
{
    if (!net) return;
    for (int k = 0; k <= D2_MAX_LAYERS; k++) fftwf_free(net->H[k]);
    for (int l = 0; l < D2_MAX_LAYERS; l++) fftwf_free(net->t[l]);
    fftwf_free(net->illum);
    if (net->ws) {
        for (int t = 0; t < net->threads; t++) {
            ws *w = &net->ws[t];
            fftwf_free(w->w);
            fftwf_free(w->o);
            fftwf_free(w->g);
            for (int l = 0; l < D2_MAX_LAYERS; l++) fftwf_free(w->v[l]);
            for (int k = 0; k <= D2_MAX_LAYERS; k++) fftwf_free(w->spec[k]);
        }
        free(net->ws);
    }
    pthread_mutex_lock(&plan_mu);
    if (net->row_f) fftwf_destroy_plan(net->row_f);
    if (net->row_b) fftwf_destroy_plan(net->row_b);
    if (net->col_f) fftwf_destroy_plan(net->col_f);
    if (net->col_b) fftwf_destroy_plan(net->col_b);
    thick_free(net->thick);
    pthread_mutex_unlock(&plan_mu);
    free(net);
}

/* Transfer function of gap k: air, or with the thick plates beside it. */
static void gap_build(d2_net *net, int k, double z_mm, double lam)
{
    if (net->thick)
        thick_transfer(net->thick, k, net->H[k], net->p, net->g.pitch_mm, lam, z_mm);
    else
        asm_transfer(net->H[k], net->p, net->g.pitch_mm, lam, z_mm);
    net->H_z[k] = z_mm;
    net->H_lambda[k] = lam;
}

/* After plate l was set (rc from thick_set_*): the gaps beside it fold in
 * its slab and half slices. */
static void thick_hook(d2_net *net, int l, int rc)
{
    if (rc < 0) net->thick_failed = 1;
    if (rc <= 0) return;
    gap_build(net, l, net->H_z[l], net->H_lambda[l]);
    gap_build(net, l + 1, net->H_z[l + 1], net->H_lambda[l + 1]);
}

int net_set_heights(d2_net *net, int l, const float *h_mm, double slab_mm, double top_mm,
                    d2_err *e)
{
    if (!net->thick)
        return d2_fail(e, D2_EINPUT, "layer %d: heights need the thick-plate model (optics "
                       "\"thick\")", l + 1);
    int rc = thick_set_heights(net->thick, l, h_mm, slab_mm, top_mm, e);
    if (rc >= 0) {
        /* The equivalent phase screen, for net_transmission and the gradient. */
        double k = 2.0 * M_PI * (net->g.index - 1.0) / net->g.wavelength_mm;
        for (size_t i = 0; i < (size_t)net->n * net->n; i++) {
            double ph = k * h_mm[i];
            net->t[l][i] = (float)cos(ph) + I * (float)sin(ph);
        }
    }
    thick_hook(net, l, rc);
    return rc < 0 ? rc : 0;
}

void net_thick_plate(const d2_net *net, int l, double *slab_mm, double *top_mm, int *slices,
                     double *dz_mm)
{
    if (net->thick) {
        thick_plate(net->thick, l, slab_mm, top_mm, slices, dz_mm);
        return;
    }
    if (slab_mm) *slab_mm = 0;
    if (top_mm) *top_mm = 0;
    if (slices) *slices = 0;
    if (dz_mm) *dz_mm = 0;
}

void net_set_transmission(d2_net *net, int l, const float complex *t)
{
    memcpy(net->t[l], t, (size_t)net->n * net->n * sizeof *t);
    if (net->thick) thick_hook(net, l, thick_set_from_t(net->thick, l, t, NULL));
}

void net_phase_to_t(const d2_geom *g, const float *phase, const float *amp, float step_rad,
                    size_t count, float complex *t)
{
    /* Coupled material: a = exp(-2 pi kappa h / lambda), h = base + wrap(phi) c. */
    double alpha = opt_attenuation_per_mm(g->wavelength_mm, g->kappa);
    double c = opt_mm_per_rad(g->wavelength_mm, g->index);
    for (size_t i = 0; i < count; i++) {
        float ph = perturb_quantize_phase(phase[i], step_rad);
        float a = 1.0f;
        if (amp)
            a = amp[i];
        else if (g->coupled)
            a = (float)exp(-alpha * opt_thickness_mm(ph, g->base_mm, c));
        t[i] = a * (cosf(ph) + I * sinf(ph));
    }
}

void net_set_phase(d2_net *net, int l, const float *phase, const float *amp)
{
    net_phase_to_t(&net->g, phase, amp, 0, (size_t)net->n * net->n, net->t[l]);
    if (net->thick) thick_hook(net, l, thick_set_from_t(net->thick, l, net->t[l], NULL));
}

void net_set_model(d2_net *net, const d2_model *m)
{
    for (int l = 0; l < net->L; l++) {
        if (net->thick && m->height[l]) {
            net_phase_to_t(&net->g, m->phase[l], m->amp[l], 0, (size_t)net->n * net->n, net->t[l]);
            if (net_set_heights(net, l, m->height[l], -1, -1, NULL)) net->thick_failed = 1;
        } else {
            net_set_phase(net, l, m->phase[l], m->amp[l]);
        }
    }
}

void net_set_gap(d2_net *net, int k, double z_mm, double wavelength_mm)
{
    double lam = wavelength_mm > 0 ? wavelength_mm : net->g.wavelength_mm;
    /* A transfer function costs p^2 complex exponentials: keep it when the
     * gap and wavelength are the ones it was made for. */
    if (net->thick && thick_set_wavelength(net->thick, lam))
        for (int j = 0; j <= net->L; j++) gap_build(net, j, net->H_z[j], net->H_lambda[j]);
    if (net->H_z[k] == z_mm && net->H_lambda[k] == lam) return;
    gap_build(net, k, z_mm, lam);
}

/* Rows 0..n-1 of w hold the padded input (columns n..p-1 already zero);
 * zero rows n..p-1, transform, apply H (or its conjugate), transform back.
 * The result's first n x n block is left in w. */
static void prop_core(const d2_net *net, float complex *w, const float complex *H, int adjoint)
{
    int n = net->n, p = net->p;
    memset(w + (size_t)n * p, 0, (size_t)(p - n) * p * sizeof *w);
    fftwf_execute_dft(net->row_f, (fftwf_complex *)w, (fftwf_complex *)w);
    fftwf_execute_dft(net->col_f, (fftwf_complex *)w, (fftwf_complex *)w);
    d2_cmul(w, H, (size_t)p * p, adjoint);
    fftwf_execute_dft(net->col_b, (fftwf_complex *)w, (fftwf_complex *)w);
    fftwf_execute_dft(net->row_b, (fftwf_complex *)w, (fftwf_complex *)w);
}

static void crop(const d2_net *net, const float complex *w, float complex *dst)
{
    int n = net->n, p = net->p;
    for (int i = 0; i < n; i++) memcpy(dst + (size_t)i * n, w + (size_t)i * p, n * sizeof *dst);
}

/* Forward chain. With store set (training) it keeps the field arriving at
 * each layer in s->v for the adjoint pass; inference modulates in place.
 * The detector-plane field is the first n x n block of s->w (row stride p),
 * copied to s->o when out is set. Returns the input energy. */
static double forward(d2_net *net, const float *in, const float complex *inc, ws *s, int store,
                      int out)
{
    int n = net->n, p = net->p, L = net->L;
    float complex *w = s->w;
    double ein = 0;
    for (int i = 0; inc && i < n; i++) {
        float complex *row = w + (size_t)i * p;
        for (int j = 0; j < n; j++) {
            row[j] = inc[(size_t)i * n + j];
            if (net->illum) row[j] *= net->illum[(size_t)i * n + j];
            ein += (double)crealf(row[j]) * crealf(row[j]) + (double)cimagf(row[j]) * cimagf(row[j]);
        }
        memset(row + n, 0, (size_t)(p - n) * sizeof *row);
    }
    for (int i = 0; !inc && i < n; i++) {
        float complex *row = w + (size_t)i * p;
        const float *a = in + (size_t)i * n;
        memset(row + n, 0, (size_t)(p - n) * sizeof *row);
        if (net->illum) {
            /* The input is the aperture's transmission; the light is the
             * illumination it lets through. */
            const float complex *u = net->illum + (size_t)i * n;
            for (int j = 0; j < n; j++) row[j] = a[j] * u[j];
            ein += d2_sumsq((const float *)row, 2 * (size_t)n);
        } else {
            for (int j = 0; j < n; j++) row[j] = a[j];
            ein += d2_sumsq(a, (size_t)n);
        }
    }
    prop_core(net, w, net->H[0], 0);
    for (int l = 0; l < L; l++) {
        if (net->thick) {
            if (store) crop(net, w, s->v[l]);
            if (thick_forward(net->thick, l, w, p, (int)(s - net->ws), store, NULL)) ein = NAN;
            for (int i = 0; i < n; i++) memset(w + (size_t)i * p + n, 0, (size_t)(p - n) * sizeof *w);
            prop_core(net, w, net->H[l + 1], 0);
            continue;
        }
        const float complex *t = net->t[l];
        for (int i = 0; i < n; i++) {
            float complex *row = w + (size_t)i * p;
            const float complex *tr = t + (size_t)i * n;
            /* training keeps the field met (v_l) in the same pass */
            if (store) d2_cmul_keep(row, tr, s->v[l] + (size_t)i * n, (size_t)n);
            else d2_cmul(row, tr, (size_t)n, 0);
            memset(row + n, 0, (size_t)(p - n) * sizeof *row);
        }
        prop_core(net, w, net->H[l + 1], 0);
    }
    if (out) crop(net, w, s->o);
    return net->thick_failed ? NAN : ein;
}

/* The detector signals and the total output energy of the field o (rows of
 * stride ld), both over ein. */
static double detect(const d2_net *net, const float complex *o, size_t ld, double ein, float *det)
{
    int n = net->n;
    /* NaN when a thick plate could not be set or kept: no silent zeros */
    double norm = ein > 0 ? 1.0 / ein : net->thick && isnan(ein) ? NAN : 0.0;
    for (int k = 0; k < net->g.ndet; k++) {
        double sum = 0;
        for (int r = net->det_r0[k]; r < net->det_r1[k]; r++)
            for (int c = net->det_c0[k]; c < net->det_c1[k]; c++) {
                float complex z = o[(size_t)r * ld + c];
                sum += (double)(crealf(z) * crealf(z) + cimagf(z) * cimagf(z));
            }
        det[k] = (float)(sum * norm);
    }
    return d2_sumsq_rows((const float *)o, (size_t)n, 2 * (size_t)n, 2 * ld) * norm;
}

double net_infer(d2_net *net, const float *in, float *det, float *intensity, int tid)
{
    ws *s = &net->ws[tid];
    double ein = forward(net, in, NULL, s, 0, intensity != NULL);
    if (intensity) {
        double norm = ein > 0 ? 1.0 / ein : 0.0;
        for (size_t i = 0; i < (size_t)net->n * net->n; i++) {
            float complex z = s->o[i];
            intensity[i] = (float)((crealf(z) * crealf(z) + cimagf(z) * cimagf(z)) * norm);
        }
    }
    if (intensity) return detect(net, s->o, (size_t)net->n, ein, det);
    return detect(net, s->w, (size_t)net->p, ein, det);
}

void net_set_efficiency_weight(d2_net *net, double w) { net->eff_weight = w; }

/* The adjoint's start in place, for disjoint detectors: the output field o
 * in rows 0..n-1 of w becomes dL/do* = (dL/dE_k / ein) o inside detector k
 * and zero elsewhere, row by row, each row's detector spans in column order. */
static void adjoint_start(const d2_net *net, float complex *w, const double *dl_de, double ein)
{
    int n = net->n, p = net->p, nd = net->g.ndet;
    for (int r = 0; r < n; r++) {
        int ks[D2_MAX_DET], m = 0;
        for (int k = 0; k < nd; k++) {
            if (r < net->det_r0[k] || r >= net->det_r1[k]) continue;
            if (net->det_c0[k] >= net->det_c1[k]) continue;
            int j = m++;
            while (j > 0 && net->det_c0[ks[j - 1]] > net->det_c0[k]) {
                ks[j] = ks[j - 1];
                j--;
            }
            ks[j] = k;
        }
        float complex *row = w + (size_t)r * p;
        int c = 0;
        for (int q = 0; q < m; q++) {
            int k = ks[q];
            float gk = (float)(dl_de[k] / ein);
            memset(row + c, 0, (size_t)(net->det_c0[k] - c) * sizeof *row);
            for (c = net->det_c0[k]; c < net->det_c1[k]; c++) row[c] = gk * row[c];
        }
        memset(row + c, 0, (size_t)(p - c) * sizeof *row);
    }
}

double net_grad(d2_net *net, const float *in, int label, d2_loss loss, double temperature,
                float complex **gt, float *det, int tid)
{
    ws *s = &net->ws[tid];
    int n = net->n, p = net->p, L = net->L;
    /* disjoint detectors: the adjoint starts in place from the output in w;
     * detectors that share pixels (touching squares) add their terms there */
    int inplace = !net->det_overlap;
    double ein = forward(net, in, NULL, s, 1, !inplace);
    detect(net, inplace ? s->w : s->o, inplace ? (size_t)p : (size_t)n, ein, det);
    double dl_de[D2_MAX_DET];
    double lossv = net_loss(&net->g, det, label, loss, temperature, net->eff_weight, dl_de);

    /* dL/do* = dL/dI * o with dL/dI = dL/dE_k / ein inside detector k. The
     * adjoint field starts non-zero only inside the detectors. */
    float complex *w = s->w;
    if (inplace) {
        adjoint_start(net, w, dl_de, ein);
    } else {
        for (int i = 0; i < n; i++) memset(w + (size_t)i * p, 0, (size_t)p * sizeof *w);
        for (int k = 0; k < net->g.ndet; k++) {
            float gk = (float)(dl_de[k] / ein);
            for (int r = net->det_r0[k]; r < net->det_r1[k]; r++)
                for (int c = net->det_c0[k]; c < net->det_c1[k]; c++)
                    w[(size_t)r * p + c] += gk * s->o[(size_t)r * n + c];
        }
    }
    prop_core(net, w, net->H[L], 1);

    for (int l = L - 1; l >= 0; l--) {
        if (net->thick) {
            /* the plate's adjoint, its height gradient carried in gt (optics.h) */
            thick_adjoint(net->thick, l, w, p, tid, net->t[l], gt[l]);
            for (int i = 0; l > 0 && i < n; i++)
                memset(w + (size_t)i * p + n, 0, (size_t)(p - n) * sizeof *w);
            if (l > 0) prop_core(net, w, net->H[l], 1);
            continue;
        }
        /* w holds G = dL/du_l* with u_l = t_l v_l: dL/dt_l* = G conj(v_l), and
         * dL/dv_l* = conj(t_l) G feeds the adjoint of the previous gap. */
        const float complex *t = net->t[l], *v = s->v[l];
        float complex *gl = gt[l];
        for (int i = 0; i < n; i++) {
            float complex *row = w + (size_t)i * p;
            const float complex *tr = t + (size_t)i * n, *vr = v + (size_t)i * n;
            float complex *grow = gl + (size_t)i * n;
            d2_adj_layer(row, tr, vr, grow, (size_t)n);
            if (l > 0) memset(row + n, 0, (size_t)(p - n) * sizeof *row);
        }
        if (l > 0) prop_core(net, w, net->H[l], 1);
    }
    return lossv;
}

float net_phase_beta(const d2_geom *g)
{
    return g->coupled ? (float)(g->kappa / (g->index - 1.0)) : 0.0f;
}

void net_phase_grad(const float complex *gt, const float complex *t, float beta, size_t count,
                    float *grad)
{
    /* t = a(phi) exp(i phi) with da/dphi = -beta a: dt/dphi = t (i - beta), so
     * dL/dphi = 2 Re(conj(dL/dt*) t (i - beta)). */
    for (size_t i = 0; i < count; i++) {
        float complex c = conjf(gt[i]) * t[i];
        grad[i] = 2.0f * (-cimagf(c) - beta * crealf(c));
    }
}

const float complex *net_transmission(const d2_net *net, int l) { return net->t[l]; }

void net_propagate(d2_net *net, int k, float complex *field, int tid)
{
    int n = net->n, p = net->p;
    float complex *w = net->ws[tid].w;
    for (int i = 0; i < n; i++) {
        memcpy(w + (size_t)i * p, field + (size_t)i * n, n * sizeof *w);
        memset(w + (size_t)i * p + n, 0, (size_t)(p - n) * sizeof *w);
    }
    prop_core(net, w, net->H[k], 0);
    crop(net, w, field);
}

double net_infer_field(d2_net *net, const float complex *in, float complex *out, int tid)
{
    ws *s = &net->ws[tid];
    double ein = forward(net, NULL, in, s, 0, 1);
    memcpy(out, s->o, (size_t)net->n * net->n * sizeof *out);
    return ein;
}

/* Calibration support: the derivatives of each detector's energy with
 * respect to every layer's transmission and every gap, from one stored
 * forward pass and one adjoint pass per detector. */

/* Unnormalised 2-D spectrum of the n x n field in the rows 0..n-1 of w
 * (columns n..p-1 zero): the first half of prop_core. */
static void spectrum(const d2_net *net, float complex *w)
{
    int n = net->n, p = net->p;
    memset(w + (size_t)n * p, 0, (size_t)(p - n) * p * sizeof *w);
    fftwf_execute_dft(net->row_f, (fftwf_complex *)w, (fftwf_complex *)w);
    fftwf_execute_dft(net->col_f, (fftwf_complex *)w, (fftwf_complex *)w);
}

int net_forward_keep(d2_net *net, const float *in, float *det, int tid, d2_err *e)
{
    if (net->thick)
        return d2_fail(e, D2_EINPUT, "detector derivatives need the thin model (optics \"thin\")");
    ws *s = &net->ws[tid];
    int n = net->n, p = net->p, L = net->L;
    size_t pp = (size_t)p * p;
    for (int k = 0; k <= L; k++)
        if (!s->spec[k] && !(s->spec[k] = fftwf_malloc(pp * sizeof(float complex))))
            return d2_fail(e, D2_EIO, "out of memory for the spectra of a %d x %d field", p, p);
    s->ein = forward(net, in, NULL, s, 1, 1);
    detect(net, s->o, (size_t)n, s->ein, det);
    /* The spectrum entering gap k: the (illuminated) input for k = 0, else
     * layer k's output t v. Recomputed rather than kept inside forward() so
     * that inference pays nothing for it. */
    float complex *w = s->w;
    for (int k = 0; k <= L; k++) {
        for (int i = 0; i < n; i++) {
            float complex *row = w + (size_t)i * p;
            for (int j = 0; j < n; j++) {
                size_t q = (size_t)i * n + j;
                if (k > 0)
                    row[j] = net->t[k - 1][q] * s->v[k - 1][q];
                else
                    row[j] = in[q] * (net->illum ? net->illum[q] : 1.0f);
            }
            memset(row + n, 0, (size_t)(p - n) * sizeof *row);
        }
        spectrum(net, w);
        memcpy(s->spec[k], w, pp * sizeof *w);
    }
    return 0;
}

/* dE/dz of gap k from the adjoint spectrum W and the stored input spectrum
 * S: 2 Re sum conj(W) (i kz H) S with kz = 2 pi sqrt(1/lambda^2 - f^2). */
static double gap_dz(const d2_net *net, int k, const float complex *W, const float complex *S)
{
    int p = net->p;
    double df = 1.0 / (p * net->g.pitch_mm), il2 = 1.0 / (net->H_lambda[k] * net->H_lambda[k]);
    const float complex *H = net->H[k];
    double acc = 0;
    for (int i = 0; i < p; i++) {
        double fy = (i < (p + 1) / 2 ? i : i - p) * df;
        for (int j = 0; j < p; j++) {
            size_t q = (size_t)i * p + j;
            if (H[q] == 0) continue;
            double fx = (j < (p + 1) / 2 ? j : j - p) * df, qq = il2 - fx * fx - fy * fy;
            if (qq <= 0) continue;
            float complex c = conjf(W[q]) * H[q] * S[q];
            acc -= 2.0 * M_PI * sqrt(qq) * cimagf(c);
        }
    }
    return 2.0 * acc;
}

void net_adjoint_det(d2_net *net, const double *wdet, float complex **gt, double *gz, int tid)
{
    ws *s = &net->ws[tid];
    int n = net->n, p = net->p, L = net->L;
    float complex *w = s->w;
    for (int i = 0; i < n; i++) memset(w + (size_t)i * p, 0, (size_t)p * sizeof *w);
    for (int k = 0; k < net->g.ndet; k++) {
        if (wdet[k] == 0) continue;
        float gk = (float)(wdet[k] / s->ein);
        for (int r = net->det_r0[k]; r < net->det_r1[k]; r++)
            for (int c = net->det_c0[k]; c < net->det_c1[k]; c++)
                w[(size_t)r * p + c] = gk * s->o[(size_t)r * n + c];
    }
    for (int j = L; j >= 0; j--) {
        spectrum(net, w);
        gz[j] = gap_dz(net, j, w, s->spec[j]);
        d2_cmul(w, net->H[j], (size_t)p * p, 1);
        fftwf_execute_dft(net->col_b, (fftwf_complex *)w, (fftwf_complex *)w);
        fftwf_execute_dft(net->row_b, (fftwf_complex *)w, (fftwf_complex *)w);
        if (j == 0) break;
        float complex *gl = gt[j - 1];
        memset(gl, 0, (size_t)n * n * sizeof *gl);
        for (int i = 0; i < n; i++) {
            float complex *row = w + (size_t)i * p;
            size_t o = (size_t)i * n;
            d2_adj_layer(row, net->t[j - 1] + o, s->v[j - 1] + o, gl + o, (size_t)n);
            memset(row + n, 0, (size_t)(p - n) * sizeof *row);
        }
    }
}
