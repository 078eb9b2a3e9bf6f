/* d2fab optics: the element-wise complex kernels of the propagation, built
 * for two instruction sets (AVX2 + FMA and baseline x86-64) and picked for the
 * CPU at load time, so one binary runs on any x86-64. Internal to optics/. */
#ifndef D2_OPTICS_SIMD_H
#define D2_OPTICS_SIMD_H

#include <complex.h>
#include <stddef.h>

/* w[i] *= h[i] (conj(h[i]) when conj is set), i < count. */
void d2_cmul(float complex *restrict w, const float complex *restrict h, size_t count, int conj);

/* keep[i] = w[i], then w[i] *= h[i], i < count: the product a forward layer
 * applies with the field it met kept for the adjoint, in one pass. */
void d2_cmul_keep(float complex *restrict w, const float complex *restrict h,
                  float complex *restrict keep, size_t count);

/* One layer of the adjoint: with G = w[i], g[i] += G conj(v[i]) and
 * w[i] = conj(t[i]) G, i < count. */
void d2_adj_layer(float complex *restrict w, const float complex *restrict t,
                  const float complex *restrict v, float complex *restrict g, size_t count);

/* Sum of x[i]^2 in double, i < count (eight partial sums, then added). */
double d2_sumsq(const float *x, size_t count);

/* d2_sumsq of rows rows of len floats, row r at x + r * stride: the same
 * value, bit for bit, as d2_sumsq of the rows copied end to end. */
double d2_sumsq_rows(const float *x, size_t rows, size_t len, size_t stride);

#endif
