/* Training and inference speed of a geometry (default: the paper's, 5 layers
 * of 200 x 200, FFT size 400) against the propagation limit measured in the
 * same run: the fastest plain-FFTW schedule for the same pruned propagation
 * (benchlib.h). Everything is timed on one thread with thread CPU time, in
 * interleaved rounds (limit, inference, training sample, limit, ...), so a
 * busy shared machine slows both sides alike. A training sample is L + 1
 * forward propagations and L adjoint ones (the adjoint stops at the first
 * layer); an inference is L + 1. Ratios are limit time / d2fab time per
 * propagation: 1 means the whole sample costs no more than its propagations
 * in the fastest FFTW schedule. Then a batch-32 training run on all cores:
 * its rate, CPU time per sample and peak memory. */
#include <complex.h>
#include <fftw3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/benchlib.h"
#include "core/config.h"
#include "core/util.h"
#include "optics/optics.h"
#include "train/train.h"

/* Many short rounds: on a loaded machine a round that another process
 * disturbed is an outlier the median ignores. */
#define ROUNDS 31

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

/* The q-th quartile (1 or 3) of v, nearest rank; sorts v. */
static double quartile(double *v, int k, int q)
{
    qsort(v, k, sizeof *v, cmp_d);
    return v[(q * (k - 1) + 2) / 4];
}

int main(int argc, char **argv)
{
    const char *cfg = argc > 1 ? argv[1] : "samples/paper-mnist.json";
    int train_images = argc > 2 ? atoi(argv[2]) : 1024;
    d2_err e = {0};
    cJSON *root = NULL;
    d2_model m = {0};
    if (cfg_load(cfg, &root, &e) || config_read(cfg, root, &m.g, &m.t, &e)) {
        fprintf(stderr, "bench_train: %s\n", e.msg);
        return 2;
    }
    cJSON_Delete(root);
    m.t.epochs = 1;
    m.t.batch = 32;
    m.t.train_limit = train_images;
    m.t.test_limit = train_images;
    if (model_alloc(&m, &e)) return 3;
    int n = m.g.n, p = m.g.pad * m.g.n, L = m.g.layers;
    int per_train = 2 * L + 1, per_infer = L + 1;
    d2_dataset ds;
    if (dataset_open(dataset_default_dir(), m.t.dataset, &m.t.data, 1, &ds, &e)) {
        fprintf(stderr, "bench_train: %s\n", e.msg);
        return 3;
    }

    /* One thread: the limit and d2fab on the same core, interleaved. */
    /* the limit propagates through the same gaps, each with its own H */
    float complex *H[D2_MAX_LAYERS + 1];
    for (int k = 0; k <= L; k++) {
        H[k] = fftwf_malloc((size_t)p * p * sizeof *H[k]);
        asm_transfer(H[k], p, m.g.pitch_mm, m.g.wavelength_mm, m.g.gap_mm[k]);
    }
    bench_limit_info li;
    bench_limit *lim = bench_limit_new(n, p, (const float complex *const *)H, L + 1, &li);
    for (int k = 0; k <= L; k++) fftwf_free(H[k]);
    double t0 = d2_now();
    d2_net *net = net_new(&m.g, 1, &e);
    double net_plan_s = d2_now() - t0;
    if (!lim || !net) {
        fprintf(stderr, "bench_train: %s\n", lim ? e.msg : "FFTW could not plan the limit");
        return 3;
    }
    /* random phases: a trained-like, non-trivial field */
    d2_rng r;
    d2_rng_seed(&r, 21);
    for (int l = 0; l < L; l++)
        for (size_t i = 0; i < (size_t)n * n; i++)
            m.phase[l][i] = (float)(2 * M_PI * d2_rng_below(&r, 1 << 20) / (1 << 20));
    net_set_model(net, &m);
    enum { IMGS = 4 };
    float *in = malloc((size_t)n * n * sizeof *in), det[D2_MAX_DET];
    float complex *gt[D2_MAX_LAYERS];
    for (int l = 0; l < L; l++) gt[l] = calloc((size_t)n * n, sizeof *gt[l]);
    double tl[ROUNDS], ti[ROUNDS], tg[ROUNDS], ri[ROUNDS], rg[ROUNDS];
    input_from_u8(&m.g, ds.images, ds.rows, ds.cols, in);
    for (int k = 0; k < 2; k++) { /* warm up */
        bench_limit_run(lim);
        net_infer(net, in, det, NULL, 0);
        net_grad(net, in, ds.labels[0], m.t.loss, m.t.temperature, gt, det, 0);
    }
    /* Interleaved: IMGS inferences (each input resampled from the 28 x 28
     * digit, as evaluation does, then net_infer) after as many limit
     * propagations, then IMGS training samples (resampling, net_grad) after
     * their 2 L + 1 each. Per round the sums give the ratios. */
    for (int round = 0; round < ROUNDS; round++) {
        double c0 = bench_thread_cpu();
        for (int q = 0; q < IMGS * per_infer; q++) bench_limit_run(lim);
        double c1 = bench_thread_cpu();
        for (int k = 0; k < IMGS; k++) {
            input_from_u8(&m.g, ds.images + (size_t)k * ds.rows * ds.cols, ds.rows, ds.cols, in);
            net_infer(net, in, det, NULL, 0);
        }
        double c2 = bench_thread_cpu();
        for (int q = 0; q < IMGS * per_train; q++) bench_limit_run(lim);
        double c3 = bench_thread_cpu();
        for (int k = 0; k < IMGS; k++) {
            input_from_u8(&m.g, ds.images + (size_t)k * ds.rows * ds.cols, ds.rows, ds.cols, in);
            net_grad(net, in, ds.labels[k], m.t.loss, m.t.temperature, gt, det, 0);
        }
        double c4 = bench_thread_cpu();
        double sl = c1 - c0, si = c2 - c1, slg = c3 - c2, sg = c4 - c3;
        tl[round] = (sl + slg) / (IMGS * (per_infer + per_train));
        ti[round] = si / (IMGS * per_infer);
        tg[round] = sg / (IMGS * per_train);
        ri[round] = sl / si;
        rg[round] = slg / sg;
    }
    printf("geometry: %d layers of %d x %d, FFT size %d (%s)\n", L, n, n, p, cfg);
    printf("limit: the fastest FFTW schedule for one pruned propagation (%d row FFTs, %d columns, "
           "product by H, %d inverse columns, %d inverse rows), FFTW_PATIENT, planned in %.1f s:\n",
           n, p, p, n, li.plan_s);
    for (int i = 0; i < li.variants; i++)
        printf("  %c %.3f ms  %s\n", i == li.best ? '*' : ' ', li.ms[i], li.name[i]);
    printf("d2fab plans made in %.1f s; one thread, thread CPU time, %d interleaved rounds\n",
           net_plan_s, ROUNDS);
    double bl = tl[0], bi = ti[0], bg = tg[0];
    for (int k = 1; k < ROUNDS; k++) {
        if (tl[k] < bl) bl = tl[k];
        if (ti[k] < bi) bi = ti[k];
        if (tg[k] < bg) bg = tg[k];
    }
    printf("limit per propagation:     %.3f ms (best round; median %.3f)\n", 1e3 * bl,
           1e3 * median(tl, ROUNDS));
    printf("inference per propagation: %.3f ms (best round; %d per image, input resampling "
           "included); ratio to the limit %.3f (median of rounds, quartiles %.3f-%.3f; best "
           "rounds %.3f)\n",
           1e3 * bi, per_infer, median(ri, ROUNDS), quartile(ri, ROUNDS, 1),
           quartile(ri, ROUNDS, 3), bl / bi);
    printf("training  per propagation: %.3f ms (best round; %d per sample: %d forward, %d "
           "adjoint, resampling included); ratio to the limit %.3f (median of rounds, "
           "quartiles %.3f-%.3f; best rounds %.3f)\n",
           1e3 * bg, per_train, L + 1, L, median(rg, ROUNDS), quartile(rg, ROUNDS, 1),
           quartile(rg, ROUNDS, 3), bl / bg);
    free(in);
    for (int l = 0; l < L; l++) free(gt[l]);
    net_free(net);
    bench_limit_free(lim);
    dataset_free(&ds);

    /* A real training run on all cores: wall rate, CPU per sample. */
    for (int l = 0; l < L; l++) memset(m.phase[l], 0, (size_t)n * n * sizeof *m.phase[l]);
    d2_pool *pool = d2_pool_new(0, &e);
    int T = d2_pool_threads(pool);
    d2_pool_free(pool);
    char out[] = "/tmp/d2fab-bench-XXXXXX";
    if (!mkdtemp(out)) return 3;
    train_run_opts ro = {dataset_default_dir(), 0, 0, NULL};
    double cpu0 = bench_process_cpu();
    if (train_model(&m, out, &ro, &e)) {
        fprintf(stderr, "bench_train: %s\n", e.msg);
        return 3;
    }
    double cpu = bench_process_cpu() - cpu0;
    cJSON *h = cJSON_GetArrayItem(m.history, 0);
    double train_rate = cJSON_GetObjectItem(h, "train_samples_per_s")->valuedouble;
    printf("training run, batch %d, %d threads, %d samples + %d test images: %.1f samples/s "
           "wall; %.2f ms CPU per sample including the evaluation (limit x %d = %.2f ms)\n",
           m.t.batch, T, train_images, train_images, train_rate, 1e3 * cpu / train_images,
           per_train, 1e3 * bl * per_train);
    printf("peak memory (training at batch %d, %d threads, with the data sets): %.0f MiB\n",
           m.t.batch, T, bench_peak_mib());
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", out);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", out);
    model_free(&m);
    return 0;
}
