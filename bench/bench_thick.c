/* Thick-plate inference and training speed on the shipped MNIST model (5
 * plates of 200 x 200 on a 1 mm base, relief up to one period) against thin
 * phase screens and against the FFT bound measured in the same run on one
 * thread, in thread CPU time: the transforms the thick model needs are, per
 * plate of K slices, 3 K transforms of the sub-pixel grid (q x q) forward and
 * as many in the adjoint, plus the gaps' propagations at the limit of
 * benchlib (the pruned schedule: L + 1 forward, 2 L + 1 with the adjoint, as
 * bench_train counts) and the small resampling transforms (not counted). */
#include <complex.h>
#include <fftw3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"
#include "core/idx.h"
#include "core/util.h"
#include "optics/optics.h"
#include "train/train.h"

/* Full q x q complex 2-D transforms per thread CPU second (FFTW_MEASURE). */
static double fft2d_rate(int q)
{
    fftwf_complex *b = fftwf_malloc(sizeof(fftwf_complex) * q * q);
    fftwf_plan pl = fftwf_plan_dft_2d(q, q, b, b, FFTW_FORWARD, FFTW_MEASURE);
    for (int i = 0; i < q * q; i++) b[i] = (float)(i % 17) * 0.01f;
    for (int r = 0; r < 10; r++) fftwf_execute(pl); /* warm up */
    int reps = 200;
    double t0 = bench_thread_cpu();
    for (int r = 0; r < reps; r++) fftwf_execute(pl);
    double rate = reps / (bench_thread_cpu() - t0);
    fftwf_destroy_plan(pl);
    fftwf_free(b);
    return rate;
}

/* Seconds of thread CPU per gap propagation at the limit, through the
 * network's own gap distances. */
static double gap_limit_s(const d2_geom *g)
{
    int p = g->pad * g->n, L = g->layers;
    size_t pp = (size_t)p * p;
    float complex *H[D2_MAX_LAYERS + 1];
    for (int k = 0; k <= L; k++) {
        H[k] = fftwf_malloc(pp * sizeof *H[k]);
        asm_transfer(H[k], p, g->pitch_mm, g->wavelength_mm, g->gap_mm[k]);
    }
    bench_limit_info info;
    bench_limit *b = bench_limit_new(g->n, p, (const float complex *const *)H, L + 1, &info);
    double s = -1;
    if (b) {
        for (int r = 0; r < 4; r++) bench_limit_run(b);
        int reps = 60;
        double t0 = bench_thread_cpu();
        for (int r = 0; r < reps; r++) bench_limit_run(b);
        s = (bench_thread_cpu() - t0) / reps;
        bench_limit_free(b);
    }
    for (int k = 0; k <= L; k++) fftwf_free(H[k]);
    return s;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "samples/mnist-model";
    int images = argc > 2 ? atoi(argv[2]) : 16;
    d2_err e = {0};
    d2_model m;
    if (model_load(dir, &m, &e)) {
        fprintf(stderr, "bench_thick: %s\n", e.msg);
        return 2;
    }
    m.g.base_mm = 1.0;
    d2_model thin = m;
    d2_dataset ds;
    if (dataset_open(dataset_default_dir(), m.t.dataset, &m.t.data, 1, &ds, &e)) {
        fprintf(stderr, "bench_thick: %s\n", e.msg);
        return 2;
    }
    d2_net *tn = net_new(&thin.g, 1, &e);
    net_set_model(tn, &thin);
    if (model_make_thick(&m, 0, &e)) {
        fprintf(stderr, "bench_thick: %s\n", e.msg);
        return 2;
    }
    d2_net *kn = net_new(&m.g, 1, &e);
    if (!tn || !kn) {
        fprintf(stderr, "bench_thick: %s\n", e.msg);
        return 3;
    }
    net_set_model(kn, &m);
    int q = thick_fft_size(&m.g), p = m.g.pad * m.g.n, slices = 0;
    for (int l = 0; l < m.g.layers; l++) {
        int K;
        net_thick_plate(kn, l, NULL, NULL, &K, NULL);
        slices += K;
    }
    printf("%s: %d plates of %d x %d, %d x %d sub-pixels, %d slices in all, sub-pixel FFT %d "
           "(gaps %d), %d images, one thread\n",
           dir, m.g.layers, m.g.n, m.g.n, thick_subpix(&m.g), thick_subpix(&m.g), slices, q, p,
           images);
    double rq = fft2d_rate(q), gap_s = gap_limit_s(&thin.g);
    if (!(gap_s > 0)) {
        fprintf(stderr, "bench_thick: FFTW could not plan the limit\n");
        return 3;
    }

    size_t px = (size_t)ds.rows * ds.cols, nn = (size_t)m.g.n * m.g.n;
    float *in = malloc(sizeof(float) * nn), det[D2_MAX_DET];
    float complex *gt[D2_MAX_LAYERS];
    for (int l = 0; l < m.g.layers; l++) gt[l] = calloc(nn, sizeof(float complex));
    double t[4];
    for (int mode = 0; mode < 4; mode++) {
        d2_net *net = mode & 1 ? kn : tn;
        double t0 = bench_thread_cpu();
        for (int i = 0; i < images; i++) {
            input_from_u8(&m.g, ds.images + px * i, ds.rows, ds.cols, in);
            if (mode < 2)
                net_infer(net, in, det, NULL, 0);
            else
                net_grad(net, in, ds.labels[i], LOSS_SOFTMAX, 0.03, gt, det, 0);
        }
        t[mode] = (bench_thread_cpu() - t0) / images;
    }
    int L = m.g.layers;
    double bound_inf = 3.0 * slices / rq + (L + 1) * gap_s;
    double bound_train = 6.0 * slices / rq + (2 * L + 1) * gap_s;
    printf("fftwf %dx%d: %.0f /s; gap propagation at the limit (%dx%d padded): %.3f ms\n", q, q,
           rq, p, p, 1e3 * gap_s);
    printf("inference: thin %.1f ms, thick %.1f ms per image (%.1f x); thick FFT bound %.1f ms, "
           "ratio %.2f\n",
           1e3 * t[0], 1e3 * t[1], t[1] / t[0], 1e3 * bound_inf, bound_inf / t[1]);
    printf("training:  thin %.1f ms, thick %.1f ms per sample (%.1f x); thick FFT bound %.1f ms, "
           "ratio %.2f\n",
           1e3 * t[2], 1e3 * t[3], t[3] / t[2], 1e3 * bound_train, bound_train / t[3]);
    for (int l = 0; l < m.g.layers; l++) free(gt[l]);
    free(in);
    net_free(tn);
    net_free(kn);
    dataset_free(&ds);
    thin.history = thin.init = NULL;
    for (int l = 0; l < D2_MAX_LAYERS; l++) thin.phase[l] = thin.amp[l] = NULL, thin.height[l] = NULL;
    model_free(&m);
    return 0;
}
