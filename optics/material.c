/* The physics of a relief plate, written once: the speed of light, the
 * material period, thickness <-> phase, absorption and Fresnel reflection.
 * Every stage (train, export, mask, tolerance, the command line) uses these. */
#include "optics/optics.h"

#include <math.h>

double opt_wavelength_mm(double frequency_thz)
{
    return OPT_C_MM_THZ / frequency_thz;
}

double opt_frequency_thz(double wavelength_mm)
{
    return OPT_C_MM_THZ / wavelength_mm;
}

double opt_period_mm(double wavelength_mm, double index)
{
    return wavelength_mm / (index - 1.0);
}

double opt_mm_per_rad(double wavelength_mm, double index)
{
    return wavelength_mm / (2.0 * M_PI * (index - 1.0));
}

double opt_phase_of_thickness(double thick_mm, double wavelength_mm, double index)
{
    return 2 * M_PI * (index - 1) * thick_mm / wavelength_mm;
}

double opt_attenuation_per_mm(double wavelength_mm, double kappa)
{
    return 2.0 * M_PI * kappa / wavelength_mm;
}

double opt_amplitude(double thick_mm, double wavelength_mm, double kappa)
{
    return exp(-2 * M_PI * kappa * thick_mm / wavelength_mm);
}

double opt_fresnel_r(double index)
{
    double r = (index - 1.0) / (index + 1.0);
    return r * r;
}

double opt_thickness_mm(double phase_rad, double base_mm, double mm_per_rad)
{
    double w = fmod(phase_rad, 2 * M_PI);
    if (w < 0) w += 2 * M_PI;
    return base_mm + w * mm_per_rad;
}

/* phi mod 2 pi in [0, 2 pi). */
static double wrap_2pi(double x)
{
    double w = fmod(x, 2.0 * M_PI);
    if (w < 0) w += 2.0 * M_PI;
    if (w >= 2.0 * M_PI) w = 0; /* fmod of a tiny negative number rounds up to 2 pi */
    return w;
}

void opt_heights_to_transmission(const float *h_mm, size_t count, double index, double kappa,
                                 double wavelength_mm, float *phase, float *amp)
{
    double kphi = 2.0 * M_PI * (index - 1.0) / wavelength_mm;
    double katt = opt_attenuation_per_mm(wavelength_mm, kappa);
    for (size_t k = 0; k < count; k++) {
        double h = h_mm[k];
        if (phase) phase[k] = (float)wrap_2pi(kphi * h);
        if (amp) amp[k] = (float)exp(-katt * h);
    }
}
