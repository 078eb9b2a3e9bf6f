/* Speed of a tolerance trial for the paper geometry (5 layers of 200 x 200,
 * FFT size 400, zero phases) against the propagation limit measured in the
 * same run (benchlib.h: the fastest plain-FFTW schedule for the same pruned
 * propagation). A trial perturbs every layer (lateral, axial, rotation: new
 * transmissions and new transfer functions for every gap) and then runs the
 * test images, L + 1 propagations each; its cost per propagation includes
 * that per-trial setup. One thread, thread CPU time, rounds interleaved with
 * the limit. */
#include <complex.h>
#include <fftw3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/idx.h"
#include "core/util.h"
#include "bench/benchlib.h"
#include "optics/optics.h"
#include "tolerance/tolerance.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int k)
{
    qsort(v, k, sizeof *v, cmp_d);
    return k % 2 ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
}

int main(int argc, char **argv)
{
    const char *cfg = argc > 1 ? argv[1] : "samples/paper-mnist.json";
    int images = argc > 2 ? atoi(argv[2]) : 512, trials = argc > 3 ? atoi(argv[3]) : 4;
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
    if (dataset_open(dataset_default_dir(), m.t.dataset, &m.t.data, 1, &ds, &e)) {
        fprintf(stderr, "bench_tolerance: %s\n", e.msg);
        return 3;
    }
    d2_pool *pool = d2_pool_new(1, &e);
    int T = d2_pool_threads(pool), p = m.g.pad * m.g.n, L = m.g.layers;
    printf("geometry: %d layers of %d x %d, FFT size %d (%s), %d thread, %d test images per "
           "round\n",
           L, m.g.n, m.g.n, p, cfg, T, images / trials);
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

    /* (tol_stack_init took the model over: its geometry is s.m.g now) */
    /* the limit propagates through the same gaps, each with its own H */
    float complex *H[D2_MAX_LAYERS + 1];
    for (int k = 0; k <= L; k++) {
        H[k] = fftwf_malloc((size_t)p * p * sizeof *H[k]);
        asm_transfer(H[k], p, s.m.g.pitch_mm, s.m.g.wavelength_mm, s.m.g.gap_mm[k]);
    }
    bench_limit_info li;
    bench_limit *lim = bench_limit_new(s.m.g.n, p, (const float complex *const *)H, L + 1, &li);
    for (int k = 0; k <= L; k++) fftwf_free(H[k]);
    if (!lim) {
        fprintf(stderr, "bench_tolerance: FFTW could not plan the limit\n");
        return 3;
    }
    double acc;
    int per_img = L + 1;
    /* Warm-up (and the caches of the nominal stack). */
    tol_sim_eval(sim, &mag, 1, NULL, 1, &ds, 8, pool, 0, &acc, NULL, NULL, &e);
    enum { ROUNDS = 5 };
    double tl[ROUNDS], tn[ROUNDS], tt[ROUNDS], ts[ROUNDS], rn[ROUNDS], rt[ROUNDS];
    int cnt = images / trials, half = cnt * per_img / 2;
    /* Each evaluation between two halves of as many limit propagations as
     * it does; per round the sums give the ratios. */
    for (int round = 0; round < ROUNDS; round++) {
        double ck[8];
        ck[0] = bench_thread_cpu();
        for (int k = 0; k < half; k++) bench_limit_run(lim);
        ck[1] = bench_thread_cpu();
        /* nominal: cached transmissions and transfer functions */
        tol_sim_eval(sim, &mag, 1, NULL, 1, &ds, cnt, pool, 0, &acc, NULL, NULL, &e);
        ck[2] = bench_thread_cpu();
        for (int k = 0; k < half; k++) bench_limit_run(lim);
        ck[3] = bench_thread_cpu();
        for (int k = 0; k < half; k++) bench_limit_run(lim);
        ck[4] = bench_thread_cpu();
        /* a trial: every layer moved, every gap recomputed */
        tol_draw d;
        tol_draw_make(&d, &mag, L, 1, (uint64_t)round + 1, -1);
        if (tol_sim_eval(sim, &mag, 1, &d, 1, &ds, cnt, pool, 0, &acc, NULL, NULL, &e)) {
            fprintf(stderr, "bench_tolerance: %s\n", e.msg);
            return 3;
        }
        ck[5] = bench_thread_cpu();
        for (int k = 0; k < half; k++) bench_limit_run(lim);
        ck[6] = bench_thread_cpu();
        /* the per-trial setup alone: a trial over one image */
        tol_draw_make(&d, &mag, L, 1, (uint64_t)round + 100, -1);
        tol_sim_eval(sim, &mag, 1, &d, 1, &ds, 1, pool, 0, &acc, NULL, NULL, &e);
        ck[7] = bench_thread_cpu();
        double ln = ck[1] - ck[0] + ck[3] - ck[2], lt = ck[4] - ck[3] + ck[6] - ck[5];
        tl[round] = (ln + lt) / (4.0 * half);
        tn[round] = (ck[2] - ck[1]) / ((double)cnt * per_img);
        tt[round] = (ck[5] - ck[4]) / ((double)cnt * per_img);
        ts[round] = (ck[7] - ck[6]) - tn[round] * per_img;
        rn[round] = ln / (ck[2] - ck[1]);
        rt[round] = lt / (ck[5] - ck[4]);
    }
    double bl = tl[0], bn = tn[0], bt = tt[0], bs = ts[0];
    for (int k = 1; k < ROUNDS; k++) {
        if (tl[k] < bl) bl = tl[k];
        if (tn[k] < bn) bn = tn[k];
        if (tt[k] < bt) bt = tt[k];
        if (ts[k] < bs) bs = ts[k];
    }
    printf("limit per propagation (%s): %.3f ms; one thread, thread CPU time, best of %d "
           "interleaved rounds\n",
           li.name[li.best], 1e3 * bl, ROUNDS);
    printf("nominal (cached transmissions and transfer functions): %.3f ms per propagation "
           "(best round), ratio to the limit %.3f (median of rounds; best rounds %.3f)\n",
           1e3 * bn, median(rn, ROUNDS), bl / bn);
    printf("perturbed trial (lateral, axial, rotation on all %d layers; %d images, %d "
           "propagations each, setup included): %.3f ms per propagation (best round), ratio to "
           "the limit %.3f (median of rounds; best rounds %.3f)\n",
           L, cnt, per_img, 1e3 * bt, median(rt, ROUNDS), bl / bt);
    printf("per-trial setup (%d transmissions resampled, %d transfer functions): %.1f ms = %.1f "
           "propagations\n",
           L, L + 1, 1e3 * bs, bs / bl);
    bench_limit_free(lim);
    tol_sim_free(sim);
    tol_mag_free(&mag);
    tol_stack_free(&s);
    dataset_free(&ds);
    d2_pool_free(pool);
    return 0;
}
