/* Rate of calibration for the paper geometry (samples/mnist-model: 5 layers
 * of 200 x 200, FFT size 400, thin model) against the propagation limit
 * measured in the same run (benchlib.h). One Levenberg-Marquardt iteration
 * of cal_fit on N simulated readings, one worker thread, process CPU time.
 * A sample's Jacobian costs at least (ndet + 1) (L + 1) propagations (one
 * forward pass, one adjoint pass per detector); the ratio printed is the
 * measured CPU per sample Jacobian over that many propagations at the
 * limit, so it includes the spectra the gap derivatives need, the inner
 * products with the pose derivatives and the LM's trial forward passes. */
#include <complex.h>
#include <fftw3.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/benchlib.h"
#include "calibrate/calibrate.h"
#include "core/idx.h"

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "samples/mnist-model";
    int count = argc > 2 ? atoi(argv[2]) : 16;
    d2_err e = {0};
    d2_model m;
    d2_dataset ds;
    if (model_load(dir, &m, &e) ||
        dataset_open(dataset_default_dir(), m.t.dataset, &m.t.data, 1, &ds, &e)) {
        fprintf(stderr, "bench_calibrate: %s\n", e.msg);
        return 3;
    }
    int p = m.g.pad * m.g.n, L = m.g.layers, nd = m.g.ndet;
    cal_sim_opts so = {count, 0.4, 1.5, 1.0, 0.5, 2.0, 0.05, 0.01, 1, 1};
    cal_meas meas;
    cal_truth truth;
    float *in = NULL;
    if (cal_simulate(&m, &ds, &so, &meas, &truth, &e) || cal_inputs(&m, &meas, &ds, &in, &e)) {
        fprintf(stderr, "bench_calibrate: %s\n", e.msg);
        return 3;
    }
    float complex *H[D2_MAX_LAYERS + 1];
    for (int k = 0; k <= L; k++) {
        H[k] = fftwf_malloc((size_t)p * p * sizeof *H[k]);
        asm_transfer(H[k], p, m.g.pitch_mm, m.g.wavelength_mm, m.g.gap_mm[k]);
    }
    bench_limit_info info;
    bench_limit *lim = bench_limit_new(m.g.n, p, (const float complex *const *)H, L + 1, &info);
    if (!lim) return 3;
    int reps = 4 * (L + 1);
    double c0 = bench_thread_cpu();
    for (int i = 0; i < reps; i++) bench_limit_run(lim);
    double lim_ms = 1e3 * (bench_thread_cpu() - c0) / reps;

    cal_opts o;
    cal_opts_default(&o);
    o.threads = 1;
    o.max_iter = 1;
    cal_result r;
    double p0 = bench_process_cpu();
    if (cal_fit(&m, &meas, in, &o, &r, &e)) {
        fprintf(stderr, "bench_calibrate: %s\n", e.msg);
        return 3;
    }
    double cpu = bench_process_cpu() - p0;
    double per = cpu / r.sample_grads, bound = (nd + 1) * (L + 1) * lim_ms * 1e-3;
    printf("geometry: %d layers of %d x %d, FFT size %d, %d detectors, thin model (%s)\n", L,
           m.g.n, m.g.n, p, nd, dir);
    printf("propagation limit: %.3f ms (%s)\n", lim_ms, info.name[info.best]);
    printf("calibrate: %d readings, %.0f sample Jacobians in %.2f s CPU: %.1f ms each, %.2f x "
           "the limit of %d propagations (%.1f ms)\n", count, r.sample_grads, cpu, 1e3 * per,
           per / bound, (nd + 1) * (L + 1), 1e3 * bound);
    printf("one iteration over 200 readings: %.1f s of CPU (about half that on 2 cores)\n",
           200 * per);
    cal_result_free(&r);
    bench_limit_free(lim);
    for (int k = 0; k <= L; k++) fftwf_free(H[k]);
    free(in);
    cal_meas_free(&meas);
    dataset_free(&ds);
    model_free(&m);
    return 0;
}
