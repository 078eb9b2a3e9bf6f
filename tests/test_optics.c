/* The optics: analytic laws of free-space propagation (energy, Gaussian beam
 * width, forward then back, a thin lens) run against the propagator the
 * network uses (net_propagate: pruned, what train, eval, mask and tolerance
 * run) and the plain padded reference (asm_propagate), and the two pinned
 * together, gap by gap and through a whole network. */
#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testlib.h"
#include "optics/optics.h"
#include "core/config.h"

enum { NETWORK = 0, REFERENCE = 1 };
static const char *const prop_name[2] = {"network", "reference"};

/* Propagates f (n x n) over z mm with propagator `which`: the network's own
 * (a network of no layers whose one gap is z) or the plain reference. */
static int propagate(int which, float complex *f, int n, double pitch, double lam, double z,
                     int pad)
{
    d2_err e = {0};
    if (which == REFERENCE) return asm_propagate(f, n, pitch, lam, z, pad, &e);
    d2_geom g;
    geom_default(&g);
    g.n = n;
    g.layers = 0;
    g.pad = pad;
    g.pitch_mm = pitch;
    g.wavelength_mm = lam;
    g.gap_mm[0] = z;
    g.ndet = 0;
    d2_net *net = net_new(&g, 1, &e);
    if (!net) {
        printf("  net_new: %s\n", e.msg);
        return e.code;
    }
    net_propagate(net, 0, f, 0);
    net_free(net);
    return 0;
}

static double energy(const float complex *f, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)crealf(f[i] * conjf(f[i]));
    return s;
}

/* Gaussian of waist w0 (1/e^2 intensity radius) centred on an n x n grid. */
static float complex *gaussian(int n, double pitch, double w0)
{
    float complex *f = malloc(sizeof *f * n * n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double x = (j - 0.5 * (n - 1)) * pitch, y = (i - 0.5 * (n - 1)) * pitch;
            f[i * n + j] = (float)exp(-(x * x + y * y) / (w0 * w0));
        }
    return f;
}

/* Beam radius from the intensity second moment: w = 2 sqrt(<x^2>). */
static double beam_radius(const float complex *f, int n, double pitch)
{
    double s = 0, sx = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double x = (j - 0.5 * (n - 1)) * pitch, in = crealf(f[i * n + j] * conjf(f[i * n + j]));
            s += in;
            sx += in * x * x;
        }
    return 2.0 * sqrt(sx / s);
}

TEST(propagation_conserves_energy_of_a_band_limited_beam)
{
    int n = 128;
    for (int which = 0; which < 2; which++) {
        float complex *f = gaussian(n, 0.4, 4.0);
        double e0 = energy(f, (size_t)n * n);
        CHECK(propagate(which, f, n, 0.4, 0.7495, 30.0, 2) == 0);
        CHECK_NEAR(energy(f, (size_t)n * n) / e0, 1.0, 1e-3);
        free(f);
    }
}

TEST(gaussian_beam_widens_as_w0_sqrt_1_plus_z_over_zr_squared)
{
    int n = 256;
    double lam = 0.7495, w0 = 2.0, pitch = 0.2, zr = M_PI * w0 * w0 / lam;
    for (int which = 0; which < 2; which++)
        for (int k = 1; k <= 3; k++) {
            double z = k * zr;
            float complex *f = gaussian(n, pitch, w0);
            CHECK(propagate(which, f, n, pitch, lam, z, 2) == 0);
            double want = w0 * sqrt(1 + (z / zr) * (z / zr));
            CHECK_NEAR(beam_radius(f, n, pitch) / want, 1.0, 0.02);
            free(f);
        }
}

TEST(propagating_forward_then_back_returns_the_input)
{
    int n = 96;
    for (int which = 0; which < 2; which++) {
        float complex *f = gaussian(n, 0.4, 5.0), *g = malloc(sizeof *g * n * n);
        /* A phase ramp and a second lobe so the field is not trivially symmetric. */
        for (int i = 0; i < n * n; i++) f[i] *= cexpf(I * 0.3f * (i % n)) + 0.2f * (i / n > n / 2);
        memcpy(g, f, sizeof *g * n * n);
        CHECK(propagate(which, g, n, 0.4, 0.7495, 25.0, 2) == 0);
        CHECK(propagate(which, g, n, 0.4, 0.7495, -25.0, 2) == 0);
        /* The field leaving the window is lost: compare in the central region. */
        double num = 0, den = 0;
        for (int i = n / 4; i < 3 * n / 4; i++)
            for (int j = n / 4; j < 3 * n / 4; j++) {
                float complex d = g[i * n + j] - f[i * n + j];
                num += crealf(d * conjf(d));
                den += crealf(f[i * n + j] * conjf(f[i * n + j]));
            }
        CHECK(sqrt(num / den) < 0.05);
        free(f);
        free(g);
    }
}

TEST(thin_lens_focuses_at_its_focal_length)
{
    int n = 200;
    double lam = 0.7495, pitch = 0.4, fl = 60.0;
    const double zs[3] = {0.8 * fl, fl, 1.2 * fl};
    for (int which = 0; which < 2; which++) {
        double peak[3];
        for (int k = 0; k < 3; k++) {
            float complex *f = malloc(sizeof *f * n * n);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    double x = (j - 0.5 * (n - 1)) * pitch, y = (i - 0.5 * (n - 1)) * pitch;
                    double r2 = x * x + y * y;
                    f[i * n + j] =
                        r2 < 15.0 * 15.0 ? cexpf(I * (float)(-M_PI * r2 / (lam * fl))) : 0;
                }
            CHECK(propagate(which, f, n, pitch, lam, zs[k], 2) == 0);
            /* Peak on axis: the four centre pixels. */
            int c = n / 2;
            peak[k] = crealf(f[c * n + c] * conjf(f[c * n + c]));
            double mx = 0;
            for (int i = 0; i < n * n; i++) mx = fmax(mx, crealf(f[i] * conjf(f[i])));
            if (k == 1) CHECK(peak[k] > 0.9 * mx);
            free(f);
        }
        CHECK(peak[1] > 2 * peak[0]);
        CHECK(peak[1] > 2 * peak[2]);
    }
}

/* A field with structure at every frequency: uniform random real and
 * imaginary parts in [-1, 1]. */
static void random_field(float complex *f, size_t count, uint64_t seed)
{
    d2_rng r;
    d2_rng_seed(&r, seed);
    for (size_t i = 0; i < count; i++)
        f[i] = (float)(2 * d2_rng_uniform(&r) - 1) + I * (float)(2 * d2_rng_uniform(&r) - 1);
}

/* Largest |a - b| over the largest |b|. */
static double rel_diff(const float complex *a, const float complex *b, size_t count)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < count; i++) {
        d = fmax(d, cabsf(a[i] - b[i]));
        m = fmax(m, cabsf(b[i]));
    }
    return m > 0 ? d / m : d;
}

/* The pruned propagator (row FFTs only on the rows that hold data, column
 * blocks with the transfer function fused in) gives what one full padded 2-D
 * FFT pair gives, for sizes that take the blocked and the unblocked column
 * path, padding 2 and 3, forwards and backwards. */
TEST(pruned_propagator_matches_the_plain_padded_reference)
{
    const int ns[3] = {32, 30, 24}, pads[3] = {2, 2, 3};
    const double zs[2] = {30.0, -7.5};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 2; b++) {
            int n = ns[a];
            size_t nn = (size_t)n * n;
            float complex *f = malloc(nn * sizeof *f), *ref = malloc(nn * sizeof *ref);
            random_field(f, nn, 100 + 10 * a + b);
            memcpy(ref, f, nn * sizeof *f);
            CHECK(propagate(NETWORK, f, n, 0.4, 0.7495, zs[b], pads[a]) == 0);
            CHECK(propagate(REFERENCE, ref, n, 0.4, 0.7495, zs[b], pads[a]) == 0);
            double d = rel_diff(f, ref, nn);
            if (!(d < 2e-5))
                printf("  n %d, pad %d, z %g mm: %s and %s differ by %.3g of the peak\n", n,
                       pads[a], zs[b], prop_name[NETWORK], prop_name[REFERENCE], d);
            CHECK(d < 2e-5);
            free(f);
            free(ref);
        }
}

/* A whole network, random phase screens and all, is the reference
 * propagation over each gap with the screens multiplied in between: the
 * output intensity and every detector's energy agree. */
TEST(network_forward_is_the_reference_propagation_gap_by_gap)
{
    const double gaps[4] = {5.0, 6.5, 4.0, 7.0};
    d2_geom g;
    geom_default(&g); /* pad 2 */
    for (int k = 0; k < 4; k++) g.gap_mm[k] = gaps[k];
    g.n = 40;
    g.layers = 3;
    g.pitch_mm = 0.4;
    g.aperture_mm = 8.0;
    geom_layout_343(&g, 1.6, 3.2, 3.2);
    d2_err e = {0};
    d2_net *net = net_new(&g, 1, &e);
    CHECK(net != NULL);
    if (!net) return;
    size_t nn = (size_t)g.n * g.n;
    float complex *t[3], *ref = malloc(nn * sizeof *ref);
    float *in = malloc(nn * sizeof *in), *inten = malloc(nn * sizeof *inten), det[D2_MAX_DET];
    d2_rng r;
    d2_rng_seed(&r, 7);
    for (int l = 0; l < g.layers; l++) {
        t[l] = malloc(nn * sizeof *t[l]);
        for (size_t i = 0; i < nn; i++) t[l][i] = cexpf(I * (float)(2 * M_PI * d2_rng_uniform(&r)));
        net_set_transmission(net, l, t[l]);
    }
    double ein = 0;
    for (size_t i = 0; i < nn; i++) {
        in[i] = (float)d2_rng_uniform(&r);
        ref[i] = in[i];
        ein += (double)in[i] * in[i];
    }
    net_infer(net, in, det, inten, 0);
    for (int k = 0; k <= g.layers; k++) {
        if (k) for (size_t i = 0; i < nn; i++) ref[i] *= t[k - 1][i];
        CHECK(asm_propagate(ref, g.n, g.pitch_mm, g.wavelength_mm, g.gap_mm[k], g.pad, &e) == 0);
    }
    double d = 0, m = 0;
    for (size_t i = 0; i < nn; i++) {
        double want = crealf(ref[i] * conjf(ref[i])) / ein;
        d = fmax(d, fabs(inten[i] - want));
        m = fmax(m, want);
    }
    CHECK(m > 0 && d < 1e-4 * m);
    for (int k = 0; k < g.ndet; k++) {
        int r0, r1, c0, c1;
        double s = 0;
        geom_det_rect(&g, k, &r0, &r1, &c0, &c1);
        for (int i = r0; i < r1; i++)
            for (int j = c0; j < c1; j++) s += crealf(ref[i * g.n + j] * conjf(ref[i * g.n + j]));
        CHECK_NEAR(det[k], s / ein, 1e-4 * (s / ein) + 1e-9);
    }
    for (int l = 0; l < g.layers; l++) free(t[l]);
    free(ref);
    free(in);
    free(inten);
    net_free(net);
}


/* An n = 64, 0.4 mm grid at 0.4 THz with the given gaps (layers of phase 0). */
static d2_net *illum_net(int n, int illum, double w_or_z, int layers, const double *gaps)
{
    d2_geom g;
    d2_err e = {0};
    geom_default(&g);
    g.n = n;
    g.layers = layers;
    for (int k = 0; k <= layers; k++) g.gap_mm[k] = gaps[k];
    g.ndet = 0;
    g.illum = illum;
    g.illum_waist_mm = illum == D2_ILLUM_GAUSSIAN ? w_or_z : 0;
    g.illum_distance_mm = illum == D2_ILLUM_POINT ? w_or_z : 0;
    d2_net *net = net_new(&g, 1, &e);
    if (!net) printf("  net_new: %s\n", e.msg);
    return net;
}

TEST(gaussian_illumination_has_its_energy_profile_and_widens_as_a_beam)
{
    const int n = 64;
    const double w0 = 2.0, pitch = 0.4, lam = opt_wavelength_mm(0.4), c = 0.5 * (n - 1);
    float complex *in = malloc(sizeof *in * n * n), *out = malloc(sizeof *out * n * n);
    for (int i = 0; i < n * n; i++) in[i] = 1;
    /* On the input plane (1 um of propagation): intensity exp(-2 r^2 / w0^2)
     * and total energy pi w0^2 / 2 per pixel area. */
    d2_net *net = illum_net(n, D2_ILLUM_GAUSSIAN, w0, 0, (double[]){1e-3});
    CHECK(net != NULL);
    if (!net) goto done;
    double ein = net_infer_field(net, in, out, 0);
    CHECK_NEAR(ein, M_PI * w0 * w0 / 2 / (pitch * pitch), 1e-3 * ein);
    double worst = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double r2 = (pow(i - c, 2) + pow(j - c, 2)) * pitch * pitch;
            float complex z = out[i * n + j];
            double d = fabs(crealf(z) * crealf(z) + cimagf(z) * cimagf(z) - exp(-2 * r2 / (w0 * w0)));
            if (d > worst) worst = d;
        }
    printf("  Gaussian w0 = %g mm: largest intensity error on the input plane %.2e\n", w0, worst);
    CHECK(worst < 1e-3);
    net_free(net);
    /* After 40 mm: w(z) = w0 sqrt(1 + (z / zR)^2), from the second moment
     * <x^2> = w^2 / 4 of the intensity. */
    double z = 40, zr = M_PI * w0 * w0 / lam, wz = w0 * sqrt(1 + (z / zr) * (z / zr));
    net = illum_net(n, D2_ILLUM_GAUSSIAN, w0, 0, (double[]){z});
    CHECK(net != NULL);
    if (!net) goto done;
    net_infer_field(net, in, out, 0);
    double s0 = 0, s2 = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            float complex v = out[i * n + j];
            double I2 = crealf(v) * crealf(v) + cimagf(v) * cimagf(v), x = (j - c) * pitch;
            s0 += I2;
            s2 += I2 * x * x;
        }
    double wm = 2 * sqrt(s2 / s0);
    printf("  after %g mm: width %.3f mm, w(z) = %.3f mm\n", z, wm, wz);
    CHECK_NEAR(wm, wz, 0.02 * wz);
    net_free(net);
done:
    free(in);
    free(out);
}

TEST(point_source_illumination_is_the_propagated_point)
{
    const int n = 64;
    const double pitch = 0.4, lam = opt_wavelength_mm(0.4), c = 0.5 * (n - 1), zs = 50;
    float complex *in = malloc(sizeof *in * n * n), *out = malloc(sizeof *out * n * n);
    float complex *pt = NULL, *fld = NULL, *one = NULL;
    d2_net *pw = NULL;
    for (int i = 0; i < n * n; i++) in[i] = 1;
    /* On the input plane: the paraxial phase pi r^2 / (lambda z) to within
     * its quartic term k r^4 / (8 z^3). */
    d2_net *net = illum_net(n, D2_ILLUM_POINT, zs, 0, (double[]){1e-3});
    CHECK(net != NULL);
    if (!net) goto done;
    net_infer_field(net, in, out, 0);
    double worst = 0, rmax2 = 2 * pow(c * pitch, 2);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double r2 = (pow(i - c, 2) + pow(j - c, 2)) * pitch * pitch;
            double d = cargf(out[i * n + j] * cexpf(-I * (float)(M_PI * r2 / (lam * zs))));
            if (fabs(d) > worst) worst = fabs(d);
        }
    double quartic = 2 * M_PI / lam * rmax2 * rmax2 / (8 * pow(zs, 3));
    printf("  point source at %g mm: phase off the paraxial one by %.4f rad (quartic term %.4f)\n",
           zs, worst, quartic);
    CHECK(worst < 1.2 * quartic + 1e-3);
    CHECK(quartic > 0.01); /* the test sees the exact sphere, not only the parabola */
    net_free(net);
    net = NULL;
    /* The same field as one pixel lit zs mm before the plane and propagated
     * by the network's own angular spectrum: phase k R less a constant,
     * within the central 8 mm. */
    const int m = 65;
    const double cm = 0.5 * (m - 1);
    pt = malloc(sizeof *pt * m * m);
    fld = malloc(sizeof *fld * m * m);
    one = malloc(sizeof *one * m * m);
    for (int i = 0; i < m * m; i++) one[i] = pt[i] = 0;
    pt[(m / 2) * m + m / 2] = 1;
    for (int i = 0; i < m * m; i++) one[i] = 1;
    CHECK(propagate(NETWORK, pt, m, pitch, lam, zs, 2) == 0);
    /* The illumination at zs against the propagated point, and at 0.8 zs and
     * 1.25 zs, which must match worse: phases of unit phasors compared. */
    double ov[3];
    const double zz[3] = {zs, 0.8 * zs, 1.25 * zs};
    for (int q = 0; q < 3; q++) {
        pw = illum_net(m, D2_ILLUM_POINT, zz[q], 0, (double[]){1e-3});
        CHECK(pw != NULL);
        if (!pw) goto done2;
        net_infer_field(pw, one, fld, 0);
        net_free(pw);
        pw = NULL;
        double complex dot = 0;
        int cnt = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                double r2 = (pow(i - cm, 2) + pow(j - cm, 2)) * pitch * pitch;
                if (r2 > 64) continue;
                float complex a = pt[i * m + j], b = fld[i * m + j];
                dot += conj(a / cabsf(a)) * (b / cabsf(b));
                cnt++;
            }
        ov[q] = cabs(dot) / cnt;
    }
    printf("  a pixel propagated %g mm: phase overlap %.5f with the point source there, "
           "%.5f at %g mm, %.5f at %g mm\n", zs, ov[0], ov[1], zz[1], ov[2], zz[2]);
    CHECK(ov[0] > 0.995);
    CHECK(ov[1] < ov[0] - 0.03 && ov[2] < ov[0] - 0.03);
done2:
    net_free(pw);
    net_free(net);
done:
    free(in);
    free(out);
    free(pt);
    free(fld);
    free(one);
}

TEST(illumination_is_read_checked_and_recorded_in_model_json)
{
    d2_err e = {0};
    const char *cfgs[] = {
        "{\"input\": {\"illumination\": {\"type\": \"gaussian\", \"waist_mm\": 7.5}}}",
        "{\"input\": {\"illumination\": {\"type\": \"point\", \"distance_mm\": 250}}}",
        "{\"input\": {}}"};
    const int want[] = {D2_ILLUM_GAUSSIAN, D2_ILLUM_POINT, D2_ILLUM_PLANE};
    for (int k = 0; k < 3; k++) {
        cJSON *root = NULL, *back = NULL;
        d2_geom g, g2;
        d2_train_opts t, t2;
        CHECK(cfg_parse("c.json", cfgs[k], &root, &e) == 0);
        CHECK(config_read("c.json", root, &g, &t, &e) == 0);
        CHECK(g.illum == want[k]);
        back = config_to_json(&g, &t);
        CHECK(config_read("model.json", back, &g2, &t2, &e) == 0);
        CHECK(g2.illum == g.illum && g2.illum_waist_mm == g.illum_waist_mm &&
              g2.illum_distance_mm == g.illum_distance_mm);
        cJSON_Delete(root);
        cJSON_Delete(back);
    }
    const char *bad[][2] = {
        {"{\"input\": {\"illumination\": {\"type\": \"gaussian\"}}}", "waist_mm"},
        {"{\"input\": {\"illumination\": {\"type\": \"point\", \"distance_mm\": 10}}}",
         "aliases"},
        {"{\"input\": {\"illumination\": {\"type\": \"plane\", \"waist_mm\": 3}}}",
         "does not go with"},
        {"{\"input\": {\"illumination\": {\"type\": \"laser\"}}}", "type"}};
    for (int k = 0; k < 4; k++) {
        cJSON *root = NULL;
        d2_geom g;
        d2_train_opts t;
        CHECK(cfg_parse("c.json", bad[k][0], &root, &e) == 0);
        CHECK_ERR(config_read("c.json", root, &g, &t, &e), e, D2_EINPUT, bad[k][1]);
        cJSON_Delete(root);
    }
}

int main(void)
{
    RUN(propagation_conserves_energy_of_a_band_limited_beam);
    RUN(gaussian_beam_widens_as_w0_sqrt_1_plus_z_over_zr_squared);
    RUN(propagating_forward_then_back_returns_the_input);
    RUN(thin_lens_focuses_at_its_focal_length);
    RUN(pruned_propagator_matches_the_plain_padded_reference);
    RUN(network_forward_is_the_reference_propagation_gap_by_gap);
    RUN(gaussian_illumination_has_its_energy_profile_and_widens_as_a_beam);
    RUN(point_source_illumination_is_the_propagated_point);
    RUN(illumination_is_read_checked_and_recorded_in_model_json);
    return t_finish();
}
