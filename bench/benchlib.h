/* Benchmark helpers. */
#ifndef D2_BENCHLIB_H
#define D2_BENCHLIB_H

#include "core/util.h"

/* In-place fftwf 2-D transforms of size p x p per second, run on every
 * thread of the pool at once (each on its own buffer, one shared
 * FFTW_MEASURE plan): the FFT bound the benchmarks report ratios against. */
double bench_fft_rate(d2_pool *pool, int p);

#endif
