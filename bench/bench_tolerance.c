/* Speed of a tolerance trial for the paper geometry (5 layers of 200 x 200,
 * FFT size 400, zero phases) against the FFT bound measured in the same run:
 * the rate at which all cores execute plain fftwf 400 x 400 transforms,
 * counted as 12 transforms per inference. A trial perturbs every layer
 * (lateral, axial, rotation: new transmissions and new transfer functions
 * for every gap) and then runs the test images; the rate includes that
 * per-trial setup. */
#include <complex.h>
#include <fftw3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/idx.h"
#include "core/util.h"
#include "bench/benchlib.h"
#include "tolerance/tolerance.h"

int main(int argc, char **argv)
{
    const char *cfg = argc > 1 ? argv[1] : "samples/paper-mnist.json";
    int images = argc > 2 ? atoi(argv[2]) : 256, trials = argc > 3 ? atoi(argv[3]) : 4;
    d2_err e = {0};
    cJSON *root = NULL;
    d2_model m = {0};
    if (cfg_load(cfg, &root, &e) || config_read(cfg, root, &m.g, &m.t, &e)) {
        fprintf(stderr, "bench_tolerance: %s\n", e.msg);
        return 2;
    }
    cJSON_Delete(root);
    if (model_alloc(&m, &e)) return 3;
    d2_dataset ds;
    if (dataset_load(dataset_default_dir(), m.t.dataset, 1, &ds, &e)) {
        fprintf(stderr, "bench_tolerance: %s\n", e.msg);
        return 3;
    }
    d2_pool *pool = d2_pool_new(0, &e);
    int T = d2_pool_threads(pool), p = m.g.pad * m.g.n, L = m.g.layers;
    printf("geometry: %d layers of %d x %d, FFT size %d, %d threads, %d test images per trial\n",
           L, m.g.n, m.g.n, p, T, images);
    tol_stack s;
    if (tol_stack_init(&s, &m, NULL, "paper", cfg, &e)) {
        fprintf(stderr, "bench_tolerance: %s\n", e.msg);
        return 3;
    }
    tol_config c;
    tol_config_default(&c);
    tol_config_set(&c, "lateral_mm", 0.2, &e);
    tol_config_set(&c, "axial_mm", 1.0, &e);
    tol_config_set(&c, "rotation_deg", 0.5, &e);
    tol_mag mag;
    tol_sim *sim = NULL;
    if (tol_bind(&c, &s, &mag, &e) || !(sim = tol_sim_new(&s, T, &e))) {
        fprintf(stderr, "bench_tolerance: %s\n", e.msg);
        return 3;
    }

    double fft1 = bench_fft_rate(pool, p);
    double acc;
    /* Warm-up and the nominal rate (nothing to recompute between calls). */
    tol_sim_eval(sim, &mag, 1, NULL, 1, &ds, images, pool, 0, &acc, NULL, NULL, &e);
    double t0 = d2_now();
    tol_sim_eval(sim, &mag, 1, NULL, 1, &ds, images, pool, 0, &acc, NULL, NULL, &e);
    double nominal = images / (d2_now() - t0);
    /* Trials: every layer moved, every gap recomputed. */
    t0 = d2_now();
    for (int t = 0; t < trials; t++) {
        tol_draw d;
        tol_draw_make(&d, &mag, L, 1, (uint64_t)t + 1, -1);
        if (tol_sim_eval(sim, &mag, 1, &d, 1, &ds, images, pool, 0, &acc, NULL, NULL, &e)) {
            fprintf(stderr, "bench_tolerance: %s\n", e.msg);
            return 3;
        }
    }
    double trial_s = (d2_now() - t0) / trials, rate = images / trial_s;
    /* The per-trial setup alone: a trial over one image. */
    t0 = d2_now();
    for (int t = 0; t < trials; t++) {
        tol_draw d;
        tol_draw_make(&d, &mag, L, 1, (uint64_t)t + 100, -1);
        tol_sim_eval(sim, &mag, 1, &d, 1, &ds, 1, pool, 0, &acc, NULL, NULL, &e);
    }
    double setup = (d2_now() - t0) / trials;
    double fft2 = bench_fft_rate(pool, p), fft = 0.5 * (fft1 + fft2), bound = fft / 12;

    printf("fftwf %dx%d transforms, all cores: %.0f /s (before %.0f, after %.0f)\n", p, p, fft,
           fft1, fft2);
    printf("FFT bound: 12 transforms per inference = %.1f inferences/s\n", bound);
    printf("nominal (cached transmissions and transfer functions): %.1f inferences/s, ratio %.2f\n",
           nominal, nominal / bound);
    printf("perturbed trial (lateral, axial, rotation on all %d layers; %d images): %.1f "
           "inferences/s, ratio %.2f\n",
           L, images, rate, rate / bound);
    printf("per-trial setup (%d transmissions resampled, %d transfer functions): %.1f ms = %.1f "
           "inferences\n",
           L, L + 1, 1e3 * setup, setup * nominal);
    printf("(each gap's transforms skip the zero-padded rows: %d of %d row FFTs are done)\n",
           s.m.g.n, p);
    tol_sim_free(sim);
    tol_mag_free(&mag);
    tol_stack_free(&s);
    dataset_free(&ds);
    d2_pool_free(pool);
    return 0;
}
