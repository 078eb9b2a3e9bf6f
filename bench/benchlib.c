/* Shared by the benchmarks: the FFT bound they compare against. */
#include "bench/benchlib.h"

#include <complex.h>
#include <fftw3.h>
#include <stdlib.h>

typedef struct {
    fftwf_plan plan;
    fftwf_complex **buf;
    int reps;
} fft_job;

static void fft_work(void *arg, int i, int tid)
{
    (void)tid;
    fft_job *j = arg;
    for (int r = 0; r < j->reps; r++) fftwf_execute_dft(j->plan, j->buf[i], j->buf[i]);
}

double bench_fft_rate(d2_pool *pool, int p)
{
    int T = d2_pool_threads(pool);
    fft_job j = {0};
    j.buf = calloc(T, sizeof *j.buf);
    for (int t = 0; t < T; t++) {
        j.buf[t] = fftwf_malloc(sizeof(fftwf_complex) * p * p);
        for (int i = 0; i < p * p; i++) j.buf[t][i] = (float)(i % 17) * 0.01f;
    }
    j.plan = fftwf_plan_dft_2d(p, p, j.buf[0], j.buf[0], FFTW_FORWARD, FFTW_MEASURE);
    for (int i = 0; i < p * p; i++) j.buf[0][i] = (float)(i % 17) * 0.01f;
    j.reps = 20;
    d2_pool_run(pool, fft_work, &j, T); /* warm up */
    j.reps = 400;
    double t0 = d2_now();
    d2_pool_run(pool, fft_work, &j, T);
    double rate = (double)T * j.reps / (d2_now() - t0);
    fftwf_destroy_plan(j.plan);
    for (int t = 0; t < T; t++) fftwf_free(j.buf[t]);
    free(j.buf);
    return rate;
}
