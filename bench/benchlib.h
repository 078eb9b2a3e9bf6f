/* Benchmark helpers: CPU clocks, peak memory and the propagation limit the
 * benchmarks report ratios against. */
#ifndef D2_BENCHLIB_H
#define D2_BENCHLIB_H

#include <complex.h>

#include "core/util.h"

/* CPU seconds used by the calling thread (CLOCK_THREAD_CPUTIME_ID): time
 * that other processes on a shared machine cannot inflate. */
double bench_thread_cpu(void);
/* CPU seconds used by the whole process, all threads. */
double bench_process_cpu(void);
/* Peak resident memory of this process so far, MiB (getrusage ru_maxrss). */
double bench_peak_mib(void);

/* The limit: the fastest plain-FFTW schedule found for the same pruned
 * band-limited angular-spectrum propagation d2fab performs (an n x n field
 * zero-padded to p x p): n forward row FFTs, p forward column FFTs, the
 * product by the transfer function H, p inverse column FFTs and n inverse
 * row FFTs, nothing else. Several schedules are planned at FFTW_PATIENT
 * (wisdom imported from and saved to the file d2fab uses) and timed on the
 * calling thread; bench_limit_run then runs the fastest. */
typedef struct bench_limit bench_limit;

#define BENCH_LIMIT_MAXV 8
typedef struct bench_limit_info {
    int variants;
    char name[BENCH_LIMIT_MAXV][64];
    double ms[BENCH_LIMIT_MAXV]; /* thread CPU ms per propagation, best of rounds */
    int best;
    double plan_s;               /* wall seconds spent planning */
} bench_limit_info;

/* H[0 .. nh - 1]: the p * p transfer functions of the chain's gaps (copied;
 * successive propagations take them in turn, as a network's gaps do). NULL
 * when out of memory or when FFTW cannot plan. */
bench_limit *bench_limit_new(int n, int p, const float complex *const *H, int nh,
                             bench_limit_info *info);
/* One propagation with the fastest schedule, through the next gap. */
void bench_limit_run(bench_limit *b);
void bench_limit_free(bench_limit *b);

#endif
