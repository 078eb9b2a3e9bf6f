/* d2fab optics: element-wise complex kernels with per-CPU dispatch. The
 * loops are written on interleaved real and imaginary floats so the compiler
 * vectorises them without complex-division or NaN-recovery code; GCC builds
 * an AVX2 + FMA clone and a baseline one (target_clones) and the loader
 * picks one per CPU. Sanitizer builds and other compilers get the baseline
 * only. */
#include "optics/simd.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define D2_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define D2_CLONES
#endif

D2_CLONES void d2_cmul(float complex *restrict w, const float complex *restrict h, size_t count,
                       int conj)
{
    float *x = (float *)w;
    const float *y = (const float *)h;
    size_t m = 2 * count;
    if (conj) {
        for (size_t i = 0; i < m; i += 2) {
            float a = x[i], b = x[i + 1], c = y[i], d = y[i + 1];
            x[i] = a * c + b * d;
            x[i + 1] = b * c - a * d;
        }
    } else {
        for (size_t i = 0; i < m; i += 2) {
            float a = x[i], b = x[i + 1], c = y[i], d = y[i + 1];
            x[i] = a * c - b * d;
            x[i + 1] = a * d + b * c;
        }
    }
}

D2_CLONES void d2_cmul_keep(float complex *restrict w, const float complex *restrict h,
                            float complex *restrict keep, size_t count)
{
    float *x = (float *)w, *k = (float *)keep;
    const float *y = (const float *)h;
    size_t m = 2 * count;
    for (size_t i = 0; i < m; i += 2) {
        float a = x[i], b = x[i + 1], c = y[i], d = y[i + 1];
        k[i] = a;
        k[i + 1] = b;
        x[i] = a * c - b * d;
        x[i + 1] = a * d + b * c;
    }
}

D2_CLONES void d2_adj_layer(float complex *restrict w, const float complex *restrict t,
                            const float complex *restrict v, float complex *restrict g, size_t count)
{
    float *x = (float *)w, *gg = (float *)g;
    const float *tt = (const float *)t, *vv = (const float *)v;
    size_t m = 2 * count;
    for (size_t i = 0; i < m; i += 2) {
        float a = x[i], b = x[i + 1];
        /* g += G conj(v) */
        gg[i] += a * vv[i] + b * vv[i + 1];
        gg[i + 1] += b * vv[i] - a * vv[i + 1];
        /* w = conj(t) G */
        x[i] = tt[i] * a + tt[i + 1] * b;
        x[i + 1] = tt[i] * b - tt[i + 1] * a;
    }
}

D2_CLONES double d2_sumsq(const float *x, size_t count)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= count; i += 8)
        for (int k = 0; k < 8; k++) s[k] += (double)x[i + k] * x[i + k];
    for (; i < count; i++) s[0] += (double)x[i] * x[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

D2_CLONES double d2_sumsq_rows(const float *x, size_t rows, size_t len, size_t stride)
{
    /* the lanes of d2_sumsq over the rows laid end to end: element g of that
     * row goes to lane g % 8, the last count % 8 to lane 0 */
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t count = rows * len, body = count - count % 8;
    if (len % 8 == 0) {
        for (size_t r = 0; r < rows; r++) {
            const float *y = x + r * stride;
            for (size_t i = 0; i < len; i += 8)
                for (int k = 0; k < 8; k++) s[k] += (double)y[i + k] * y[i + k];
        }
    } else {
        for (size_t g = 0; g < count; g++) {
            float v = x[(g / len) * stride + g % len];
            s[g < body ? g % 8 : 0] += (double)v * v;
        }
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
