/* Band-limited angular-spectrum propagation (Matsushima & Shimobaba 2009). */
#include <complex.h>
#include <fftw3.h>
#include <math.h>
#include <string.h>

#include "optics/optics.h"

void asm_transfer(float complex *H, int p, double pitch_mm, double wavelength_mm, double z_mm)
{
    double df = 1.0 / (p * pitch_mm);
    double inv_l2 = 1.0 / (wavelength_mm * wavelength_mm);
    /* Beyond this frequency the sampled H is undersampled and aliases. */
    double flim = 1.0 / (wavelength_mm * sqrt(pow(2.0 * df * fabs(z_mm), 2) + 1.0));
    double scale = 1.0 / ((double)p * p);
    for (int i = 0; i < p; i++) {
        double fy = (i < (p + 1) / 2 ? i : i - p) * df;
        for (int j = 0; j < p; j++) {
            double fx = (j < (p + 1) / 2 ? j : j - p) * df;
            double q = inv_l2 - fx * fx - fy * fy;
            float complex h = 0;
            if (q > 0 && fabs(fx) < flim && fabs(fy) < flim) {
                double ph = 2.0 * M_PI * z_mm * sqrt(q);
                h = (float)(scale * cos(ph)) + I * (float)(scale * sin(ph));
            }
            H[(size_t)i * p + j] = h;
        }
    }
}

int asm_propagate(float complex *field, int n, double pitch_mm, double wavelength_mm, double z_mm,
                  int pad, d2_err *e)
{
    if (n < 1 || pad < 1 || !(pitch_mm > 0) || !(wavelength_mm > 0) || !isfinite(z_mm))
        return d2_fail(e, D2_EINPUT,
                       "propagate: need n >= 1, pad >= 1, pitch > 0, wavelength > 0 and a finite "
                       "distance (got n %d, pad %d, pitch %g mm, wavelength %g mm, z %g mm)",
                       n, pad, pitch_mm, wavelength_mm, z_mm);
    int p = pad * n;
    size_t pp = (size_t)p * p;
    float complex *w = fftwf_malloc(pp * sizeof *w);
    float complex *H = fftwf_malloc(pp * sizeof *H);
    if (!w || !H) {
        fftwf_free(w);
        fftwf_free(H);
        return d2_fail(e, D2_EIO, "propagate: out of memory for a %d x %d field", p, p);
    }
    fftwf_plan fw = fftwf_plan_dft_2d(p, p, w, w, FFTW_FORWARD, FFTW_ESTIMATE);
    fftwf_plan bw = fftwf_plan_dft_2d(p, p, w, w, FFTW_BACKWARD, FFTW_ESTIMATE);
    memset(w, 0, pp * sizeof *w);
    for (int i = 0; i < n; i++) memcpy(w + (size_t)i * p, field + (size_t)i * n, n * sizeof *w);
    asm_transfer(H, p, pitch_mm, wavelength_mm, z_mm);
    fftwf_execute(fw);
    for (size_t k = 0; k < pp; k++) w[k] *= H[k];
    fftwf_execute(bw);
    for (int i = 0; i < n; i++) memcpy(field + (size_t)i * n, w + (size_t)i * p, n * sizeof *w);
    fftwf_destroy_plan(fw);
    fftwf_destroy_plan(bw);
    fftwf_free(w);
    fftwf_free(H);
    return 0;
}
