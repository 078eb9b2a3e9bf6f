/* Tests for export/: profiles, phase -> height, offset choice, quantisation,
 * the stack export and loading it back. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "core/npy.h"
#include "core/util.h"
#include "export/export.h"
#include "mesh/mesh.h"
#include "testlib.h"

#define TWO_PI (2.0 * M_PI)
#define WL_04 opt_wavelength_mm(0.4) /* 0.7495 mm */

/* Count of entries (other than . and ..) in a folder; -1 if it does not exist. */
static int dir_entries(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "test -d '%s' || exit 255; n=$(ls -A '%s' | wc -l); exit $n", dir,
             dir);
    int rc = system(cmd);
    if (!WIFEXITED(rc)) return -2;
    int s = WEXITSTATUS(rc);
    return s == 255 ? -1 : s;
}

/* Points D2FAB_PRINTERS at the repository's printers/ folder whether the test
 * runs from the repository root or elsewhere. */
static void use_repo_printers(void)
{
    char exe[PATH_MAX], dir[PATH_MAX + 32];
    if (t_exists("printers/objet-connex500.json")) {
        setenv("D2FAB_PRINTERS", "printers", 1);
        return;
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *s = strrchr(exe, '/');
        if (s) *s = 0;
        snprintf(dir, sizeof dir, "%s/../../printers", exe);
        setenv("D2FAB_PRINTERS", dir, 1);
    }
    unsetenv("D2FAB_PROFILES");
}

static void mkdir_or_die(const char *p)
{
    d2_err e = {0};
    if (d2_mkdir_p(p, &e)) {
        printf("mkdir %s: %s\n", p, e.msg);
        exit(3);
    }
}

/* A user profile folder with small test printers and a two-point material. */
static const char *fixture_profiles(void)
{
    static char dir[1024];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s", t_path("profiles"));
    mkdir_or_die(t_path("profiles/materials"));
    t_write_text(t_path("profiles/tiny.json"),
                 "{\"name\": \"tiny\", \"technology\": \"msla\", \"xy_resolution_mm\": 0.05,\n"
                 " \"z_step_mm\": 0.016, \"build_volume_mm\": [30, 30, 50],\n"
                 " \"min_feature_mm\": 0.1, \"pin_clearance_mm\": 0.1, \"z_speed_mm_per_h\": 10}\n");
    t_write_text(t_path("profiles/coarse.json"),
                 "{\"name\": \"coarse\", \"technology\": \"fdm\", \"xy_resolution_mm\": 0.4,\n"
                 " \"z_step_mm\": 0.05, \"build_volume_mm\": [250, 210, 220],\n"
                 " \"min_feature_mm\": 0.45, \"pin_clearance_mm\": 0.3}\n");
    t_write_text(t_path("profiles/flat.json"),
                 "{\"name\": \"flat\", \"technology\": \"sla\", \"xy_resolution_mm\": 0.05,\n"
                 " \"z_step_mm\": 0.016, \"build_volume_mm\": [300, 300, 1],\n"
                 " \"min_feature_mm\": 0.1, \"pin_clearance_mm\": 0.1}\n");
    t_write_text(t_path("profiles/materials/twopoint.json"),
                 "{\"name\": \"twopoint\", \"points\": [\n"
                 "  {\"frequency_thz\": 0.2, \"index\": 1.70, \"kappa\": 0.02},\n"
                 "  {\"frequency_thz\": 0.6, \"index\": 1.66, \"kappa\": 0.06}],\n"
                 " \"sources\": [\"test fixture\"]}\n");
    return dir;
}

/* Deterministic smooth-ish phase map: a sum of a few cosines plus noise,
 * scaled by amp around centre. */
static void make_phase(float *ph, int n, double centre, double amp, uint64_t seed)
{
    d2_rng r;
    d2_rng_seed(&r, seed);
    double a1 = d2_rng_uniform(&r) * TWO_PI, a2 = d2_rng_uniform(&r) * TWO_PI;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            ph[i * n + j] = (float)(centre + amp * (0.5 * cos(0.31 * i + a1) * cos(0.23 * j + a2) +
                                                   0.5 * d2_rng_normal(&r)));
}

static exp_params base_params(void)
{
    exp_params p = {0};
    p.wavelength_mm = WL_04;
    p.index = 1.7227;
    p.kappa = 0.031;
    p.base_mm = 0.512;
    p.z_step_mm = 0;
    p.levels = 0;
    p.offset_auto = 0;
    p.offset_rad = 0;
    p.jump_weight = 1;
    return p;
}

/* Writes a raw .npy with any descr and shape text, data of nbytes zeros. */
static void write_raw_npy(const char *path, const char *descr, const char *shape, size_t nbytes)
{
    char hdr[256];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                       descr, shape);
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) exit(3);
    uint16_t hl = (uint16_t)(len + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hl & 0xff, f);
    fputc(hl >> 8, f);
    fwrite(hdr, 1, (size_t)len, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    for (size_t i = 0; i < nbytes; i++) fputc(0, f);
    fclose(f);
}

static void write_map(const char *path, const float *v, int rows, int cols)
{
    d2_err e = {0};
    size_t shape[2] = {(size_t)rows, (size_t)cols};
    if (npy_write(path, NPY_F32, 2, shape, v, &e)) {
        printf("%s\n", e.msg);
        exit(3);
    }
}

/* A small saved model: L layers of n x n, 0.4 mm pitch, 0.4 THz. */
static void save_model(const char *dir, int n, int L, int coupled, double centre, double amp)
{
    d2_model m = {0};
    d2_err e = {0};
    geom_default(&m.g);
    train_opts_default(&m.t);
    m.g.n = n;
    m.g.layers = L;
    double s = (n * 0.4) / (200 * 0.4);
    m.g.aperture_mm *= s;
    m.g.det_size_mm *= s;
    for (int k = 0; k < m.g.ndet; k++) {
        m.g.det_x_mm[k] *= s;
        m.g.det_y_mm[k] *= s;
    }
    m.g.coupled = coupled;
    if (model_alloc(&m, &e)) exit(3);
    for (int k = 0; k < L; k++) make_phase(m.phase[k], n, centre, amp, 100 + (uint64_t)k);
    if (model_save(dir, &m, &e)) {
        printf("model_save: %s\n", e.msg);
        exit(3);
    }
    model_free(&m);
}

/* ------------------------------------------------------------------------ */

TEST(two_pi_at_0p4_thz_in_verobp_is_1p037_mm_of_material)
{
    /* lambda = c / f = 0.299792458 / 0.4 = 0.749481 mm; / (1.7227 - 1) = 1.037057 mm */
    CHECK_NEAR(WL_04, 0.749481, 1e-6);
    CHECK_NEAR(opt_period_mm(WL_04, 1.7227), 1.037057, 1e-5);
    /* 6.06 mrad of phase per micrometre (PHYSICS.md: 6.05) */
    CHECK_NEAR(TWO_PI / (1000 * opt_period_mm(WL_04, 1.7227)), 6.0586e-3, 1e-6);
    /* Fresnel: ((n-1)/(n+1))^2 = (0.7227/2.7227)^2 = 0.07045 per surface */
    CHECK_NEAR(opt_fresnel_r(1.7227), 0.070455, 1e-5);
}

TEST(heights_follow_the_formula_before_quantisation)
{
    exp_params p = base_params();
    float ph[16] = {0, (float)M_PI, (float)(-M_PI / 2), 7.0f, (float)(TWO_PI - 1e-3), 1.0f,
                    -20.0f, 3.0f, 0, 0, 0, 0, 0, 0, 0, 0};
    float h[16];
    exp_layer_stats st;
    d2_err e = {0};
    CHECK(exp_layer_heights(&p, ph, 4, 0.4, h, &st, &e) == 0);
    double P = opt_period_mm(WL_04, 1.7227);
    CHECK_NEAR(h[0], 0.512, 1e-6);
    CHECK_NEAR(h[1], 0.512 + 0.5 * P, 1e-6);
    CHECK_NEAR(h[2], 0.512 + 0.75 * P, 1e-6);
    CHECK_NEAR(h[3], 0.512 + (7.0 - TWO_PI) / TWO_PI * P, 1e-6);
    CHECK_NEAR(h[6], 0.512 + (-20.0 + 4 * TWO_PI) / TWO_PI * P, 1e-5);
    CHECK_NEAR(st.phase_rms_error_rad, 0, 1e-5);
    CHECK_NEAR(st.offset_rad, 0, 0);
    /* volume = sum h * pitch^2 */
    double sum = 0;
    for (int k = 0; k < 16; k++) sum += h[k];
    CHECK_NEAR(st.volume_mm3, sum * 0.16, 1e-6);
    CHECK_NEAR(st.mean_mm, sum / 16, 1e-6);
    /* amplitude through the thinnest pixel: exp(-2 pi kappa h / lambda) */
    CHECK_NEAR(st.amp_max, exp(-TWO_PI * 0.031 * 0.512 / WL_04), 1e-6);
}

TEST(absorption_through_1p04_mm_of_verobp_leaves_0p76_amplitude)
{
    float h = 1.04f, a, ph;
    opt_heights_to_transmission(&h, 1, 1.7227, 0.031, WL_04, &ph, &a);
    CHECK_NEAR(a, 0.7632, 5e-4);
    /* 1.04 mm is just over one period: phase 2 pi (1.04 / 1.037057 - 1) */
    CHECK_NEAR(ph, TWO_PI * (1.04 / 1.037057 - 1), 1e-4);
}

TEST(z_step_heights_are_whole_steps_from_zero)
{
    exp_params p = base_params();
    p.z_step_mm = 0.016;
    int n = 40;
    float *ph = malloc(sizeof(float) * n * n), *h = malloc(sizeof(float) * n * n);
    make_phase(ph, n, 1, 3, 7);
    exp_layer_stats st;
    d2_err e = {0};
    CHECK(exp_layer_heights(&p, ph, n, 0.4, h, &st, &e) == 0);
    int bad = 0;
    for (int k = 0; k < n * n; k++) {
        double q = h[k] / 0.016;
        if (fabs(q - nearbyint(q)) > 1e-4) bad++;
    }
    CHECK(bad == 0);
    free(ph);
    free(h);
}

TEST(z_step_phase_error_stays_within_the_derived_bound_and_rms_is_step_over_sqrt12)
{
    /* Rounding h to dz errs by at most dz/2, i.e. |dphi| <= pi (n-1) dz / lambda;
     * for heights spread over many steps the error is uniform: RMS = bound / sqrt(3). */
    exp_params p = base_params();
    p.z_step_mm = 0.016;
    int n = 128;
    float *ph = malloc(sizeof(float) * n * n), *h = malloc(sizeof(float) * n * n);
    d2_rng r;
    d2_rng_seed(&r, 3);
    for (int k = 0; k < n * n; k++) ph[k] = (float)(d2_rng_uniform(&r) * TWO_PI);
    exp_layer_stats st;
    d2_err e = {0};
    CHECK(exp_layer_heights(&p, ph, n, 0.4, h, &st, &e) == 0);
    double bound = M_PI * 0.7227 * 0.016 / WL_04; /* 0.04847 rad */
    CHECK_NEAR(bound, 0.04847, 1e-5);
    CHECK(st.phase_max_error_rad <= bound * (1 + 1e-3));
    CHECK(st.phase_max_error_rad > 0.9 * bound); /* the bound is reached */
    CHECK_NEAR(st.phase_rms_error_rad, bound / sqrt(3.0), 0.03 * bound / sqrt(3.0));
    /* PHYSICS.md: lambda / ((n-1) dz) = 65 levels per 2 pi on a Connex500 */
    CHECK_NEAR(WL_04 / (0.7227 * 0.016), 64.8, 0.1);
    free(ph);
    free(h);
}

TEST(k_levels_phase_error_is_at_most_pi_over_k)
{
    exp_params p = base_params();
    p.levels = 8;
    int n = 128;
    float *ph = malloc(sizeof(float) * n * n), *h = malloc(sizeof(float) * n * n);
    d2_rng r;
    d2_rng_seed(&r, 5);
    for (int k = 0; k < n * n; k++) ph[k] = (float)(d2_rng_uniform(&r) * TWO_PI);
    exp_layer_stats st;
    d2_err e = {0};
    CHECK(exp_layer_heights(&p, ph, n, 0.4, h, &st, &e) == 0);
    CHECK(st.phase_max_error_rad <= M_PI / 8 * (1 + 1e-4));
    CHECK_NEAR(st.phase_rms_error_rad, (TWO_PI / 8) / sqrt(12.0), 0.03 * 0.2267);
    /* only 8 distinct heights */
    double P = opt_period_mm(WL_04, 1.7227);
    int off = 0;
    for (int k = 0; k < n * n; k++) {
        double q = (h[k] - 0.512) / (P / 8);
        if (fabs(q - nearbyint(q)) > 1e-4 || q < -1e-4 || q > 7 + 1e-4) off++;
    }
    CHECK(off == 0);
    free(ph);
    free(h);
}

TEST(heights_turn_back_into_the_same_phase)
{
    exp_params p = base_params();
    p.offset_auto = 1;
    int n = 32;
    float *ph = malloc(sizeof(float) * n * n), *h = malloc(sizeof(float) * n * n);
    float *back = malloc(sizeof(float) * n * n), *amp = malloc(sizeof(float) * n * n);
    make_phase(ph, n, 0, 2, 11);
    exp_layer_stats st;
    d2_err e = {0};
    CHECK(exp_layer_heights(&p, ph, n, 0.4, h, &st, &e) == 0);
    opt_heights_to_transmission(h, (size_t)n * n, p.index, p.kappa, p.wavelength_mm, back, amp);
    /* back = phi + offset + 2 pi (n-1) base / lambda (mod 2 pi) */
    double cst = st.offset_rad + TWO_PI * 0.7227 * 0.512 / WL_04;
    double worst = 0;
    for (int k = 0; k < n * n; k++) {
        double d = remainder(back[k] - ph[k] - cst, TWO_PI);
        if (fabs(d) > worst) worst = fabs(d);
        CHECK_NEAR(amp[k], exp(-TWO_PI * 0.031 * h[k] / WL_04), 1e-6);
    }
    CHECK(worst < 1e-4);
    free(ph);
    free(h);
    free(back);
    free(amp);
}

TEST(auto_offset_cuts_material_and_wrap_cliffs_of_a_map_near_zero)
{
    /* Trained phases that sit near 0: the plain wrap sends the negative half
     * to nearly 2 pi and puts a cliff between neighbours. */
    exp_params p = base_params();
    p.z_step_mm = 0.016;
    p.offset_auto = 1;
    int n = 64;
    float *ph = malloc(sizeof(float) * n * n), *h = malloc(sizeof(float) * n * n);
    make_phase(ph, n, 0, 0.6, 21);
    exp_layer_stats st;
    d2_err e = {0};
    CHECK(exp_layer_heights(&p, ph, n, 0.4, h, &st, &e) == 0);
    double relief = st.volume_mm3 - 0.512 * n * n * 0.16;
    double relief_plain = st.volume_plain_mm3 - 0.512 * n * n * 0.16;
    printf("  near-zero map: offset %.3f rad, relief volume %.1f vs plain %.1f mm3, jumps %ld vs "
           "plain %ld of %ld pairs\n", st.offset_rad, relief, relief_plain, st.wrap_jumps,
           st.wrap_jumps_plain, st.pairs);
    CHECK(st.wrap_jumps_plain > 1000);
    CHECK(st.wrap_jumps * 20 < st.wrap_jumps_plain);
    CHECK(relief < 0.7 * relief_plain);
    CHECK(st.offset_rad > 0 && st.offset_rad < M_PI);
    free(ph);
    free(h);
}

TEST(offset_sweep_finds_the_exact_minimum_of_the_objective)
{
    int n = 16;
    float *ph = malloc(sizeof(float) * n * n);
    d2_err e = {0};
    for (uint64_t seed = 1; seed <= 4; seed++) {
        make_phase(ph, n, 0.5 * (double)seed, 1.0 + (double)seed, seed);
        for (int wi = 0; wi < 3; wi++) {
            double jw = wi == 0 ? 0 : wi == 1 ? 1 : 10;
            double c;
            CHECK(exp_offset_choose(ph, n, n, 0, jw, &c, &e) == 0);
            double ec = exp_offset_objective(ph, n, n, c, jw), grid = INFINITY;
            for (int g = 0; g < 5000; g++) {
                double v = exp_offset_objective(ph, n, n, TWO_PI * g / 5000, jw);
                if (v < grid) grid = v;
            }
            /* within the 1e-6 rad step past the breakpoint of the optimum */
            CHECK(ec <= grid + 1e-6);
        }
    }
    free(ph);
}

TEST(level_offset_is_the_best_whole_number_of_levels)
{
    int n = 24;
    float *ph = malloc(sizeof(float) * n * n);
    d2_err e = {0};
    int checked = 0, nonzero = 0;
    for (int K = 3; K <= 9; K += 2) /* odd: no pair differs by exactly pi */
        for (int s = 0; s < 6; s++) {
            make_phase(ph, n, 0.9 * s - 2.0, 0.4 + 0.3 * s, 30 + (uint64_t)s);
            /* on the K-level grid, so the continuous objective is exact there */
            for (int k = 0; k < n * n; k++)
                ph[k] = (float)(TWO_PI / K * nearbyint(ph[k] * K / TWO_PI));
            for (int wi = 0; wi < 2; wi++) {
                double jw = wi ? 1 : 0, c;
                CHECK(exp_offset_choose(ph, n, n, K, jw, &c, &e) == 0);
                double steps = c * K / TWO_PI;
                CHECK_NEAR(steps, nearbyint(steps), 1e-9);
                double best = INFINITY;
                for (int m = 0; m < K; m++) {
                    double v = exp_offset_objective(ph, n, n, TWO_PI * m / K + 1e-4, jw);
                    if (v < best) best = v;
                }
                CHECK(exp_offset_objective(ph, n, n, c + 1e-4, jw) <= best + 1e-9);
                checked++;
                nonzero += nearbyint(steps) != 0;
            }
        }
    CHECK(checked == 48 && nonzero > 10); /* the choice is not trivially 0 */
    free(ph);
}

TEST(offset_zero_is_the_plain_wrap)
{
    exp_params p = base_params();
    p.z_step_mm = 0.016;
    int n = 32;
    float *ph = malloc(sizeof(float) * n * n), *h = malloc(sizeof(float) * n * n);
    make_phase(ph, n, 0, 0.6, 21);
    exp_layer_stats st;
    d2_err e = {0};
    CHECK(exp_layer_heights(&p, ph, n, 0.4, h, &st, &e) == 0);
    CHECK(st.offset_rad == 0);
    CHECK(st.wrap_jumps == st.wrap_jumps_plain);
    CHECK_NEAR(st.volume_mm3, st.volume_plain_mm3, 1e-9);
    free(ph);
    free(h);
}

TEST(png_scale_stores_z_steps_exactly)
{
    CHECK_NEAR(exp_png_scale(1.6, 0.016), 0.001, 1e-15);
    CHECK_NEAR(exp_png_scale(1.6, 0.014), 0.001, 1e-15);
    CHECK_NEAR(exp_png_scale(1.6, 0.0125), 0.0125 / 12, 1e-15);
    CHECK_NEAR(exp_png_scale(100, 0.016), 0.0016, 1e-15);
    CHECK_NEAR(exp_png_scale(1.6, 0), 0.001, 1e-15);
    CHECK(100 / exp_png_scale(100, 0) <= 65535.0 + 1e-6);
}

TEST(material_is_interpolated_in_frequency_and_clamped_outside)
{
    material_profile m;
    d2_err e = {0};
    fixture_profiles();
    CHECK(material_load(t_path("profiles/materials/twopoint.json"), &m, &e) == 0);
    double n, k;
    CHECK(material_at(&m, 0.4, &n, &k) == 0);
    CHECK_NEAR(n, 1.68, 1e-12);
    CHECK_NEAR(k, 0.04, 1e-12);
    CHECK(material_at(&m, 0.3, &n, &k) == 0);
    CHECK_NEAR(n, 1.69, 1e-12);
    CHECK(material_at(&m, 1.0, &n, &k) == 1);
    CHECK_NEAR(n, 1.66, 1e-12);
    CHECK(material_at(&m, 0.1, &n, &k) == 1);
    CHECK_NEAR(k, 0.02, 1e-12);
    material_free(&m);
}

TEST(every_shipped_profile_loads_and_the_paper_values_are_right)
{
    profile_path pp;
    profile_path_init(&pp, NULL);
    d2_err e = {0};
    const char *printers[] = {"objet-connex500", "stratasys-j850", "formlabs-form3",
                              "formlabs-form4", "anycubic-photon-mono-x", "prusa-mk4"};
    const char *mats[] = {"verobp", "resin", "hips", "pla", "topas", "pc"};
    for (size_t i = 0; i < sizeof printers / sizeof *printers; i++) {
        printer_profile p;
        int rc = printer_find(&pp, printers[i], &p, &e);
        CHECK(rc == 0);
        if (rc) printf("  %s\n", e.msg);
        printer_free(&p);
    }
    for (size_t i = 0; i < sizeof mats / sizeof *mats; i++) {
        material_profile m;
        int rc = material_find(&pp, mats[i], &m, &e);
        CHECK(rc == 0);
        if (rc) printf("  %s\n", e.msg);
        material_free(&m);
    }
    char **names;
    int count;
    CHECK(profile_names(&pp, 0, &names, &count, &e) == 0);
    CHECK(count >= 6);
    for (int i = 0; i < count; i++) {
        printer_profile p;
        CHECK(printer_find(&pp, names[i], &p, &e) == 0);
        printer_free(&p);
    }
    profile_names_free(names, count);
    CHECK(profile_names(&pp, 1, &names, &count, &e) == 0);
    CHECK(count >= 5);
    for (int i = 0; i < count; i++) {
        material_profile m;
        CHECK(material_find(&pp, names[i], &m, &e) == 0);
        material_free(&m);
    }
    profile_names_free(names, count);

    material_profile v;
    CHECK(material_find(&pp, "verobp", &v, &e) == 0);
    double n, k;
    material_at(&v, 0.4, &n, &k);
    CHECK_NEAR(n, 1.7227, 0);
    CHECK_NEAR(k, 0.031, 0);
    material_free(&v);
    /* polycarbonate's 1 THz review-table point: n 1.65, alpha 12 /cm as
     * kappa = alpha lambda / (4 pi) */
    CHECK(material_find(&pp, "pc", &v, &e) == 0);
    CHECK(material_at(&v, 1.0, &n, &k) == 0);
    CHECK_NEAR(n, 1.65, 0);
    CHECK_NEAR(k, 1.2 * opt_wavelength_mm(1.0) / (4 * M_PI), 1e-4);
    CHECK(material_at(&v, 0.4, &n, &k) == 1); /* one point: 0.4 THz is outside it */
    material_free(&v);
    printer_profile p;
    CHECK(printer_find(&pp, "stratasys-j850", &p, &e) == 0);
    CHECK_NEAR(p.z_step_mm, 0.014, 0);
    CHECK_NEAR(p.build_mm[0], 490, 0);
    printer_free(&p);
    CHECK(printer_find(&pp, "objet-connex500", &p, &e) == 0);
    CHECK_NEAR(p.z_step_mm, 0.016, 0);
    printer_free(&p);
}

TEST(print_time_counts_every_layer_of_the_whole_part)
{
    printer_profile p;
    memset(&p, 0, sizeof p);
    p.z_step_mm = 0.05;
    char how[160];
    long n = 0;
    /* neither rate: not estimated, and said so */
    CHECK(printer_print_time_h(&p, 31.5, &n, how, sizeof how) < 0);
    CHECK(n == 630 && strstr(how, "not estimated") && strstr(how, "layer_time_s"));
    /* the vendor's vertical rate: Z step / rate per layer */
    p.z_speed_mm_per_h = 60;
    CHECK_NEAR(printer_print_time_h(&p, 31.5, &n, how, sizeof how), 630 * 3.0 / 3600, 1e-12);
    CHECK(strstr(how, "630 layers x 3 s") && strstr(how, "z_speed_mm_per_h"));
    /* a time per layer wins; a part of 31.51 mm takes one more layer */
    p.layer_time_s = 8;
    CHECK_NEAR(printer_print_time_h(&p, 31.5, &n, how, sizeof how), 630 * 8.0 / 3600, 1e-12);
    CHECK(strstr(how, "630 layers x 8 s (printer profile layer_time_s)"));
    CHECK_NEAR(printer_print_time_h(&p, 31.51, &n, NULL, 0), 631 * 8.0 / 3600, 1e-12);
    CHECK(n == 631);
    /* the shipped Anycubic profile carries its time per layer */
    profile_path pp;
    profile_path_init(&pp, NULL);
    d2_err e = {0};
    printer_profile a;
    CHECK(printer_find(&pp, "anycubic-photon-mono-x", &a, &e) == 0);
    CHECK_NEAR(a.layer_time_s, 8, 0);
    printer_free(&a);
}

/* A 10 mm cube (binary STL, from the mesh builder) for the slicer tests. */
static const char *cube_stl(void)
{
    static char path[PATH_MAX];
    if (path[0]) return path;
    int32_t xs[2] = {0, 100000}, ys[2] = {0, 100000}, bot = 0, top = 200000;
    mesh_grid g = {1, 1, xs, ys, &bot, &top};
    d2_err e = {0};
    mesh *m = mesh_new(&e);
    mesh_part part = {m, "cube", {10, 10, 0}};
    snprintf(path, sizeof path, "%s", t_path("cube10.stl"));
    if (!m || mesh_add_grid(m, &g, &e) || mesh_write(path, MESH_STL, &part, 1, NULL, &e)) {
        printf("  cube: %s\n", e.msg);
        path[0] = 0;
    }
    mesh_free(m);
    return path;
}

/* 1 when prusa-slicer runs here; else says the test is skipped. */
static int have_prusa_slicer(void)
{
    if (system("prusa-slicer --help > /dev/null 2>&1") == 0) return 1;
    printf("  skipped: prusa-slicer is not installed (Debian package prusa-slicer)\n");
    return 0;
}

/* A stand-in slicer (POSIX sh) that writes body to the file after -o. */
static const char *fake_slicer(const char *name, const char *body, int status)
{
    const char *path = t_path(name);
    char text[2048];
    snprintf(text, sizeof text, "#!/bin/sh\nout=\nwhile [ $# -gt 0 ]; do\n  [ \"$1\" = -o ] && "
             "out=$2\n  shift\ndone\nprintf '%%s\\n' '%s' > \"$out\"\necho 'error: the fake "
             "slicer says no' >&2\nexit %d\n", body, status);
    t_write_text(path, text);
    chmod(path, 0755);
    return path;
}

TEST(prusaslicer_times_a_10_mm_cube_for_resin_and_fdm)
{
    if (!have_prusa_slicer()) return;
    const char *cube = cube_stl();
    CHECK(cube[0]);
    profile_path pp;
    profile_path_init(&pp, NULL);
    d2_err e = {0};
    printer_profile p;
    slicer_estimate r;
    unsetenv("D2FAB_SLICER");
    /* MSLA: every 0.05 mm layer of the 10 mm cube, 1 ml of resin */
    CHECK(printer_find(&pp, "anycubic-photon-mono-x", &p, &e) == 0);
    int rc = slicer_print_time(&p, cube, t_tmpdir(), &r, &e);
    CHECK(rc == 0);
    if (rc) printf("  %s\n", e.msg);
    CHECK(r.layers == 200 && !strcmp(r.material_unit, "ml"));
    CHECK_NEAR(r.material, 1.0, 0.02);
    /* each layer at least its exposure, at most exposure + 30 s of tilt */
    CHECK(r.exposure_s > 0 && r.time_h * 3600 >= 200 * r.exposure_s &&
          r.time_h * 3600 <= 200 * (r.exposure_s + 30));
    CHECK(strstr(r.how, "--export-sla") && strstr(r.slicer, "PrusaSlicer"));
    printf("  MSLA cube: %.3f h, %.3g ml, %ld layers\n", r.time_h, r.material, r.layers);
    printer_free(&p);
    /* FDM: the same layers, 1 cm3 of filament at 100 % infill */
    CHECK(printer_find(&pp, "prusa-mk4", &p, &e) == 0);
    rc = slicer_print_time(&p, cube, t_tmpdir(), &r, &e);
    CHECK(rc == 0);
    if (rc) printf("  %s\n", e.msg);
    CHECK(r.layers == 200 && !strcmp(r.material_unit, "cm3"));
    CHECK_NEAR(r.material, 1.0, 0.1);
    CHECK(r.time_h > 0.05 && r.time_h < 5 && strstr(r.how, "--export-gcode"));
    printf("  FDM cube: %.3f h, %.3g cm3, %ld layers\n", r.time_h, r.material, r.layers);
    printer_free(&p);
    /* nothing of the slicer's is left behind */
    CHECK(dir_entries(t_tmpdir()) >= 0);
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q '^.slicer-'", t_tmpdir());
    CHECK(system(cmd) != 0);
}

TEST(slicer_output_is_read_and_its_failures_are_named)
{
    const char *cube = cube_stl();
    profile_path pp;
    profile_path_init(&pp, NULL);
    d2_err e = {0};
    printer_profile p, pj;
    slicer_estimate r;
    CHECK(printer_find(&pp, "prusa-mk4", &p, &e) == 0);
    CHECK(printer_find(&pp, "objet-connex500", &pj, &e) == 0);
    /* the G-code footer, days to seconds */
    setenv("D2FAB_SLICER", fake_slicer("ok.sh", "; generated by PrusaSlicer 9.9 on today\n"
                                       ";LAYER_CHANGE\n;LAYER_CHANGE\n"
                                       "; filament used [cm3] = 2.50\n"
                                       "; estimated printing time (normal mode) = 1d 2h 3m 4s",
                                       0), 1);
    CHECK(slicer_print_time(&p, cube, t_tmpdir(), &r, &e) == 0);
    CHECK_NEAR(r.time_h, (86400 + 2 * 3600 + 3 * 60 + 4) / 3600.0, 1e-9);
    CHECK_NEAR(r.material, 2.5, 0);
    CHECK(r.layers == 2 && !strcmp(r.slicer, "PrusaSlicer 9.9"));
    /* no estimate in the output */
    setenv("D2FAB_SLICER", fake_slicer("noest.sh", "G1 X0", 0), 1);
    CHECK_ERR(slicer_print_time(&p, cube, t_tmpdir(), &r, &e), e, D2_EINPUT,
              "estimated printing time");
    /* the slicer fails: its last line is in the message */
    setenv("D2FAB_SLICER", fake_slicer("fail.sh", "", 3), 1);
    CHECK_ERR(slicer_print_time(&p, cube, t_tmpdir(), &r, &e), e, D2_EIO,
              "status 3 on");
    CHECK(strstr(e.msg, "the fake slicer says no"));
    /* not installed, not executable */
    setenv("D2FAB_SLICER", "no-such-slicer-d2fab", 1);
    CHECK_ERR(slicer_check(&p, &e), e, D2_EINPUT, "not found on $PATH");
    CHECK(strstr(e.msg, "D2FAB_SLICER") && strstr(e.msg, "prusa-slicer"));
    setenv("D2FAB_SLICER", cube, 1);
    CHECK_ERR(slicer_print_time(&p, cube, t_tmpdir(), &r, &e), e, D2_EINPUT, "not executable");
    /* a printer it cannot slice for; a part it cannot read */
    setenv("D2FAB_SLICER", fake_slicer("ok2.sh", "x", 0), 1);
    CHECK_ERR(slicer_check(&pj, &e), e, D2_EINPUT, "polyjet");
    CHECK(strstr(e.msg, "\"print_time\": \"layers\""));
    CHECK_ERR(slicer_print_time(&p, t_path("part.ply"), t_tmpdir(), &r, &e), e, D2_EINPUT,
              "STL, 3MF and OBJ");
    CHECK_ERR(slicer_print_time(&p, t_path("missing.stl"), t_tmpdir(), &r, &e), e, D2_EINPUT,
              "missing.stl");
    unsetenv("D2FAB_SLICER");
    printer_free(&p);
    printer_free(&pj);
}

TEST(user_profile_folder_is_searched_first_and_paths_work)
{
    profile_path pp;
    profile_path_init(&pp, fixture_profiles());
    d2_err e = {0};
    printer_profile p;
    CHECK(printer_find(&pp, "tiny", &p, &e) == 0);
    CHECK_NEAR(p.z_speed_mm_per_h, 10, 0);
    printer_free(&p);
    CHECK(printer_find(&pp, t_path("profiles/coarse.json"), &p, &e) == 0);
    CHECK(!strcmp(p.name, "coarse") && p.z_speed_mm_per_h == 0);
    printer_free(&p);
    /* the shipped ones are still there */
    CHECK(printer_find(&pp, "prusa-mk4", &p, &e) == 0);
    printer_free(&p);
}

TEST(unknown_printer_or_material_lists_the_known_ones)
{
    profile_path pp;
    profile_path_init(&pp, fixture_profiles());
    d2_err e = {0};
    printer_profile p;
    material_profile m;
    CHECK_ERR(printer_find(&pp, "objet-connex5000", &p, &e), e, D2_EINPUT,
              "unknown printer 'objet-connex5000'");
    CHECK(strstr(e.msg, "objet-connex500,") && strstr(e.msg, "prusa-mk4") &&
          strstr(e.msg, "tiny"));
    CHECK_ERR(material_find(&pp, "vero", &m, &e), e, D2_EINPUT, "unknown material 'vero'");
    CHECK(strstr(e.msg, "verobp") && strstr(e.msg, "topas") && strstr(e.msg, "twopoint"));
    CHECK_ERR(printer_find(&pp, "../etc/passwd", &p, &e), e, D2_EINPUT, "");
    CHECK_ERR(printer_find(&pp, "a b", &p, &e), e, D2_EINPUT, "printer name 'a b'");
}

static void bad_profile(const char *name, const char *text, int material, const char *needle)
{
    char rel[128];
    snprintf(rel, sizeof rel, "bad/%s%s.json", material ? "materials/" : "", name);
    mkdir_or_die(t_path("bad/materials"));
    t_write_text(t_path(rel), text);
    d2_err e = {0};
    if (material) {
        material_profile m;
        CHECK_ERR(material_load(t_path(rel), &m, &e), e, D2_EINPUT, needle);
        CHECK(m.json == NULL);
    } else {
        printer_profile p;
        CHECK_ERR(printer_load(t_path(rel), &p, &e), e, D2_EINPUT, needle);
        CHECK(p.json == NULL);
    }
}

#define PR_OK "\"technology\": \"sla\", \"xy_resolution_mm\": 0.05, \"build_volume_mm\": [100, 100, 100], \"min_feature_mm\": 0.1, \"pin_clearance_mm\": 0.1"

TEST(bad_profiles_are_refused_naming_file_key_and_range)
{
    bad_profile("p1", "{\"name\": \"p1\", " PR_OK ", \"z_step_mm\": 0.02, \"colour\": 1}", 0,
                "colour");
    bad_profile("p2", "{\"name\": \"p2\", " PR_OK ", \"z_step_mm\": 0}", 0, "z_step_mm");
    bad_profile("p3", "{\"name\": \"other\", " PR_OK ", \"z_step_mm\": 0.02}", 0,
                "differs from the file name");
    bad_profile("p4", "{\"name\": \"p4\", " PR_OK "}", 0, "z_step_mm");
    bad_profile("p5", "{\"name\": \"p5\", \"technology\": \"laser\", \"xy_resolution_mm\": 0.05, "
                "\"z_step_mm\": 0.02, \"build_volume_mm\": [100, 100, 100], \"min_feature_mm\": "
                "0.1, \"pin_clearance_mm\": 0.1}", 0, "technology");
    bad_profile("p6", "{\"name\": \"p6\", \"technology\": \"sla\", \"xy_resolution_mm\": 0.05, "
                "\"z_step_mm\": 0.02, \"build_volume_mm\": [100, 100], \"min_feature_mm\": 0.1, "
                "\"pin_clearance_mm\": 0.1}", 0, "build_volume_mm");
    bad_profile("p7", "{\"name\": \"p7\", " PR_OK ", \"z_step_mm\": 0.02, \"sources\": [1]}", 0,
                "sources[0]");
    bad_profile("p8", "{\"name\": \"p8\", " PR_OK ", \"z_step_mm\": 0.02,", 0, "p8.json");
    bad_profile("m1", "{\"name\": \"m1\", \"points\": [{\"frequency_thz\": 0.4, \"index\": 1.0, "
                "\"kappa\": 0.01}]}", 1, "greater than 1");
    bad_profile("m2", "{\"name\": \"m2\", \"points\": [{\"frequency_thz\": 0.4, \"index\": 0.8, "
                "\"kappa\": 0.01}]}", 1, "points[0]");
    bad_profile("m3", "{\"name\": \"m3\", \"points\": [{\"frequency_thz\": 0.4, \"index\": 1.5, "
                "\"kappa\": 0.01}, {\"frequency_thz\": 0.3, \"index\": 1.5, \"kappa\": 0.01}]}", 1,
                "strictly increasing");
    bad_profile("m4", "{\"name\": \"m4\", \"points\": []}", 1, "points");
    bad_profile("m5", "{\"name\": \"m5\", \"points\": [{\"frequency_thz\": 0.4, \"index\": 1.5, "
                "\"kappa\": -0.1}]}", 1, "kappa");
    bad_profile("m6", "{\"name\": \"m6\", \"points\": [{\"frequency_thz\": 0.4, \"index\": 1.5, "
                "\"kappa\": 0.1, \"loss\": 2}]}", 1, "loss");
}

/* One printer check for every stage: a profile export refuses is refused by
 * mesh and mask too (a min feature of 15 mm once passed export and failed in
 * mesh), with the same key and range in the message. */
TEST(a_printer_profile_is_judged_by_one_set_of_ranges_in_every_stage)
{
    t_write_text(t_path("p15.json"), "{\"name\": \"p15\", \"technology\": \"sla\", "
                 "\"xy_resolution_mm\": 0.05, \"z_step_mm\": 0.02, \"build_volume_mm\": [100, 100, "
                 "100], \"min_feature_mm\": 15, \"pin_clearance_mm\": 0.1}");
    d2_err e = {0};
    printer_profile p;
    CHECK_ERR(printer_load(t_path("p15.json"), &p, &e), e, D2_EINPUT, "min_feature_mm");
    CHECK(strstr(e.msg, "10") != NULL);
    cJSON *obj = NULL;
    CHECK(cfg_load(t_path("p15.json"), &obj, &e) == 0);
    mesh_printer mp;
    CHECK_ERR(mesh_printer_from_json(obj, "export.json", "printer", &mp, &e), e, D2_EINPUT,
              "printer.min_feature_mm");
    /* and what passes one passes the other, with the same numbers */
    cJSON_ReplaceItemInObject(obj, "min_feature_mm", cJSON_CreateNumber(10));
    CHECK(printer_from_json(obj, "x.json", "", &p, &e) == 0);
    CHECK(mesh_printer_from_json(obj, "x.json", "", &mp, &e) == 0);
    CHECK(mp.min_feature_mm == 10 && mp.z_step_mm == p.z_step_mm && mp.build_mm[2] == 100);
    cJSON_Delete(obj);
}

TEST(bad_parameters_are_refused)
{
    exp_params p = base_params();
    float ph[16] = {0}, h[16];
    exp_layer_stats st;
    d2_err e = {0};
    p.index = 1.0;
    CHECK_ERR(exp_layer_heights(&p, ph, 4, 0.4, h, &st, &e), e, D2_EINPUT, "refractive index 1");
    p.index = 0.5;
    CHECK_ERR(exp_layer_heights(&p, ph, 4, 0.4, h, &st, &e), e, D2_EINPUT, "refractive index");
    p = base_params();
    p.wavelength_mm = 0;
    CHECK_ERR(exp_layer_heights(&p, ph, 4, 0.4, h, &st, &e), e, D2_EINPUT, "wavelength 0 mm");
    p.wavelength_mm = -0.75;
    CHECK_ERR(exp_layer_heights(&p, ph, 4, 0.4, h, &st, &e), e, D2_EINPUT, "wavelength -0.75");
    p = base_params();
    p.levels = 1;
    CHECK_ERR(exp_layer_heights(&p, ph, 4, 0.4, h, &st, &e), e, D2_EINPUT, "levels 1");
    p = base_params();
    ph[5] = NAN;
    CHECK_ERR(exp_layer_heights(&p, ph, 4, 0.4, h, &st, &e), e, D2_EINPUT, "row 1, column 1");
}

TEST(bad_phase_files_are_refused_with_a_clear_message)
{
    d2_err e = {0};
    float *v = NULL;
    int n;
    float map[20];
    for (int k = 0; k < 20; k++) map[k] = 0.1f * (float)k;
    map[7] = NAN;
    write_map(t_path("nan.npy"), map, 4, 5 - 1); /* 4 x 4, NaN at row 1, column 3 */
    CHECK_ERR(exp_read_phase(t_path("nan.npy"), 0, 0, 0, &v, &n, NULL, &e), e, D2_EINPUT,
              "row 1, column 3 is nan");
    map[7] = 0;
    write_map(t_path("rect.npy"), map, 4, 5);
    CHECK_ERR(exp_read_phase(t_path("rect.npy"), 0, 0, 0, &v, &n, NULL, &e), e, D2_EINPUT,
              "4 x 5: layers must be square");
    write_raw_npy(t_path("i32.npy"), "<i4", "(4, 4)", 16 * 4);
    CHECK_ERR(exp_read_phase(t_path("i32.npy"), 0, 0, 0, &v, &n, NULL, &e), e, D2_EINPUT,
              "int32");
    CHECK(strstr(e.msg, "astype(np.float32)"));
    write_raw_npy(t_path("c128.npy"), "<c16", "(4, 4)", 16 * 16);
    CHECK_ERR(exp_read_phase(t_path("c128.npy"), 0, 0, 0, &v, &n, NULL, &e), e, D2_EINPUT,
              "dtype complex128");
    write_raw_npy(t_path("c64.npy"), "<c8", "(4, 4)", 16 * 8);
    CHECK_ERR(exp_read_phase(t_path("c64.npy"), 0, 0, 0, &v, &n, NULL, &e), e, D2_EINPUT, "complex64");
    write_raw_npy(t_path("cube.npy"), "<f4", "(2, 4, 4)", 32 * 4);
    CHECK_ERR(exp_read_phase(t_path("cube.npy"), 0, 0, 0, &v, &n, NULL, &e), e, D2_EINPUT,
              "shape (2, 4, 4): expected a 2-D phase map");
    t_write_text(t_path("text.npy"), "not a numpy file");
    CHECK_ERR(exp_read_phase(t_path("text.npy"), 0, 0, 0, &v, &n, NULL, &e), e, D2_EINPUT, "text.npy");
    CHECK(v == NULL);
}

TEST(png_phase_maps_need_and_use_their_stated_range)
{
    uint16_t px[64];
    for (int k = 0; k < 64; k++) px[k] = (uint16_t)(k * 1000);
    d2_err e = {0};
    CHECK(img_write_gray16(t_path("ph.png"), 8, 8, px, &e) == 0);
    float *v = NULL;
    int n;
    CHECK_ERR(exp_read_phase(t_path("ph.png"), 0, 0, 0, &v, &n, NULL, &e), e, D2_EUSAGE, "--png-range-rad");
    uint8_t rgb[64 * 3] = {0};
    CHECK(img_write_rgb8(t_path("rgb.png"), 8, 8, rgb, &e) == 0);
    CHECK_ERR(exp_read_phase(t_path("rgb.png"), 1, 0, TWO_PI, &v, &n, NULL, &e), e, D2_EINPUT,
              "colour PNG: a phase map must be grey");
    CHECK(exp_read_phase(t_path("ph.png"), 1, 0, TWO_PI, &v, &n, NULL, &e) == 0);
    CHECK(n == 8);
    if (v) {
        CHECK_NEAR(v[0], 0, 1e-6);
        CHECK_NEAR(v[63], 63000.0 / 65535 * TWO_PI, 1e-4);
    }
    free(v);
}

TEST(layers_of_different_sizes_are_refused)
{
    float a[64] = {0}, b[100] = {0};
    write_map(t_path("s8.npy"), a, 8, 8);
    write_map(t_path("s10.npy"), b, 10, 10);
    const char *files[] = {t_path("s8.npy"), t_path("s10.npy")};
    exp_phase_input in = {files, 2, 0.4, WL_04, NULL, 0, 0, 0, 0};
    d2_model m;
    d2_err e = {0};
    CHECK_ERR(exp_model_from_phases(&in, &m, &e), e, D2_EINPUT, "same size");
    CHECK(strstr(e.msg, "s10.npy") && strstr(e.msg, "10 x 10") && strstr(e.msg, "8 x 8"));
    double gaps[2] = {30, 30};
    const char *one[] = {t_path("s8.npy")};
    exp_phase_input in2 = {one, 1, 0.4, WL_04, gaps, 2, 0, 0, 0};
    CHECK(exp_model_from_phases(&in2, &m, &e) == 0);
    CHECK(m.g.n == 8 && m.g.layers == 1 && m.g.gap_mm[1] == 30);
    model_free(&m);
    double three[3] = {10, 20, 30};
    exp_phase_input in3 = {one, 1, 0.4, WL_04, three, 3, 0, 0, 0};
    CHECK_ERR(exp_model_from_phases(&in3, &m, &e), e, D2_EUSAGE, "3 gaps given for 1 layers");
}

TEST(float64_phase_maps_from_numpy_are_converted_with_a_note)
{
    /* NumPy saves float64 unless told otherwise: such a map is read, converted
     * and gives the same model as its float32 twin, and the user is told. */
    float f[64];
    double d[64];
    for (int k = 0; k < 64; k++) {
        f[k] = 0.09f * (float)k;
        d[k] = (double)f[k];
    }
    write_map(t_path("p32.npy"), f, 8, 8);
    write_raw_npy(t_path("p64.npy"), "<f8", "(8, 8)", 64 * 8);
    FILE *fp = fopen(t_path("p64.npy"), "r+b");
    CHECK(fp != NULL);
    if (!fp) return;
    fseek(fp, -(long)sizeof d, SEEK_END);
    fwrite(d, 1, sizeof d, fp);
    fclose(fp);
    const char *f64[] = {t_path("p64.npy")}, *f32[] = {t_path("p32.npy")};
    char note[256] = "x";
    exp_phase_input a = {f64, 1, 0.4, WL_04, NULL, 0, 0, 0, 0, note, sizeof note};
    exp_phase_input b = {f32, 1, 0.4, WL_04, NULL, 0, 0, 0, 0, NULL, 0};
    d2_model ma, mb;
    d2_err e = {0};
    CHECK(exp_model_from_phases(&a, &ma, &e) == 0);
    CHECK(strstr(note, "p64.npy") && strstr(note, "float64 phases converted to float32"));
    CHECK(exp_model_from_phases(&b, &mb, &e) == 0);
    CHECK(ma.phase[0] && mb.phase[0] && !memcmp(ma.phase[0], mb.phase[0], sizeof f));
    model_free(&ma);
    model_free(&mb);
    note[0] = 'x';
    exp_phase_input c = {f32, 1, 0.4, WL_04, NULL, 0, 0, 0, 0, note, sizeof note};
    CHECK(exp_model_from_phases(&c, &mb, &e) == 0 && note[0] == 0);
    model_free(&mb);
}

/* Exports a 32 x 32, 2-layer bare map stack with the given options; returns rc. */
static int export_bare(const char *out, export_opts *o, export_report *r, d2_err *e,
                       double centre)
{
    d2_model m;
    float map[32 * 32];
    make_phase(map, 32, centre, 0.6, 5);
    write_map(t_path("bare1.npy"), map, 32, 32);
    make_phase(map, 32, centre, 0.6, 6);
    write_map(t_path("bare2.npy"), map, 32, 32);
    const char *files[] = {t_path("bare1.npy"), t_path("bare2.npy")};
    exp_phase_input in = {files, 2, 0.4, WL_04, NULL, 0, 0, 0, 0};
    if (exp_model_from_phases(&in, &m, e)) return -99;
    export_source src = {&m, NULL, "phase", files[0]};
    int rc = export_stack(&src, o, out, r, e);
    model_free(&m);
    return rc;
}

static void opts_for(export_opts *o, const char *printer, const char *material)
{
    export_opts_default(o);
    o->printer = printer;
    o->material = material;
    o->profiles_dir = fixture_profiles();
}

TEST(bad_export_inputs_fail_and_write_nothing)
{
    export_opts o;
    export_report r;
    d2_err e = {0};
    const char *out = t_path("never");

    opts_for(&o, "objet-connex500", "verobp");
    o.index = 1.0;
    CHECK_ERR(export_bare(out, &o, &r, &e, 0), e, D2_EINPUT, "refractive index 1 (--index)");
    export_report_free(&r);
    opts_for(&o, "objet-connex500", "verobp");
    o.wavelength_mm = -1;
    CHECK_ERR(export_bare(out, &o, &r, &e, 0), e, D2_EINPUT, "wavelength -1 mm");
    export_report_free(&r);
    opts_for(&o, "objet-connex501", "verobp");
    CHECK_ERR(export_bare(out, &o, &r, &e, 0), e, D2_EINPUT, "known printers: ");
    CHECK(strstr(e.msg, "objet-connex500") && strstr(e.msg, "stratasys-j850"));
    export_report_free(&r);
    opts_for(&o, "objet-connex500", "unobtainium");
    CHECK_ERR(export_bare(out, &o, &r, &e, 0), e, D2_EINPUT, "known materials: ");
    CHECK(strstr(e.msg, "verobp") && strstr(e.msg, "hips"));
    export_report_free(&r);
    /* 32 x 0.4 mm + 2 x 10 mm frame = 32.8 mm > 30 mm */
    opts_for(&o, "tiny", "verobp");
    CHECK_ERR(export_bare(out, &o, &r, &e, 0), e, D2_EINPUT, "does not fit the build volume");
    CHECK(strstr(e.msg, "32.8 x 32.8"));
    export_report_free(&r);
    /* 1 mm of build height < base + 2 pi of VeroBlackPlus */
    opts_for(&o, "flat", "verobp");
    CHECK_ERR(export_bare(out, &o, &r, &e, 0), e, D2_EINPUT, "does not fit the build volume");
    export_report_free(&r);
    /* 0.4 mm pitch < 2 x 0.4 mm nozzle */
    opts_for(&o, "coarse", "hips");
    CHECK_ERR(export_bare(out, &o, &r, &e, 0), e, D2_EINPUT, "pitch 0.4 mm is below");
    CHECK(strstr(e.msg, "--force") != NULL);
    export_report_free(&r);
    CHECK(dir_entries(out) == -1);

    /* --force: written, with the warning recorded */
    opts_for(&o, "coarse", "hips");
    o.force = 1;
    CHECK(export_bare(t_path("forced"), &o, &r, &e, 0) == 0);
    CHECK(r.nwarn >= 1 && strstr(r.warn[0], "pitch 0.4 mm is below"));
    CHECK(t_exists(t_path("forced/export.json")));
    export_report_free(&r);
}


TEST(topas_carries_its_one_thz_literature_point_and_warns_beyond_it)
{
    profile_path pp;
    profile_path_init(&pp, NULL);
    d2_err e = {0};
    material_profile m;
    CHECK(material_find(&pp, "topas", &m, &e) == 0);
    CHECK(m.npoints == 2);
    if (m.npoints != 2) return;
    /* The cited values: n 1.53 at 0.4 THz, n 1.52 and alpha 0.2 /cm at 1 THz. */
    CHECK_NEAR(m.pt[1].frequency_thz, 1.0, 0);
    CHECK_NEAR(m.pt[1].index, 1.52, 0);
    double alpha_cm = 4 * M_PI * m.pt[1].kappa / (opt_wavelength_mm(1.0) / 10);
    CHECK_NEAR(alpha_cm, 0.2, 0.005);
    double n, k;
    CHECK(material_at(&m, 0.7, &n, &k) == 0);
    CHECK_NEAR(n, 0.5 * (m.pt[0].index + m.pt[1].index), 1e-12);
    CHECK_NEAR(k, 0.5 * (m.pt[0].kappa + m.pt[1].kappa), 1e-12);
    CHECK(material_at(&m, 1.5, &n, &k) == 1 && n == m.pt[1].index);
    material_free(&m);
    /* An export at 1.5 THz says the material is known up to 1 THz only. */
    export_opts o;
    export_report r;
    opts_for(&o, "objet-connex500", "topas");
    o.wavelength_mm = opt_wavelength_mm(1.5);
    int rc = export_bare(t_path("topas15"), &o, &r, &e, 0);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    int found = 0;
    for (int i = 0; !rc && i < r.nwarn; i++)
        found |= strstr(r.warn[i], "characterised at 0.4-1 THz only") != NULL;
    CHECK(found);
    export_report_free(&r);
    o.wavelength_mm = opt_wavelength_mm(0.7);
    rc = export_bare(t_path("topas07"), &o, &r, &e, 0);
    CHECK(rc == 0);
    for (int i = 0; !rc && i < r.nwarn; i++)
        CHECK(strstr(r.warn[i], "characterised at") == NULL);
    export_report_free(&r);
}

/* Exports one n x n random map at pitch_mm with one gap after the layer. */
static int export_square(int n, double pitch_mm, double gap_mm, const char *printer,
                         export_report *r, d2_err *e)
{
    d2_model m;
    float *map = malloc((size_t)n * n * sizeof *map);
    make_phase(map, n, 0.5, 0.6, 7);
    write_map(t_path("square.npy"), map, n, n);
    free(map);
    const char *files[] = {t_path("square.npy")};
    double gaps[2] = {30, gap_mm};
    exp_phase_input in = {files, 1, pitch_mm, WL_04, gaps, 2, 0, 0, 0};
    if (exp_model_from_phases(&in, &m, e)) return -99;
    export_opts o;
    export_opts_default(&o);
    o.printer = printer;
    o.material = "hips";
    export_source src = {&m, NULL, "phase", files[0]};
    int rc = export_stack(&src, &o, t_path("square-exp"), r, e);
    model_free(&m);
    return rc;
}

/* The build-volume check sees the part d2fab mesh builds: the printer's own
 * frame band (14.5 mm on the Prusa MK4, not an assumed 10 mm) and the
 * tallest part with posts and pins. */
TEST(build_volume_check_uses_the_frame_and_height_the_mesh_stage_builds)
{
    d2_err e = {0};
    export_report r;
    profile_path pp;
    profile_path_init(&pp, NULL);
    printer_profile p;
    CHECK(printer_find(&pp, "prusa-mk4", &p, &e) == 0);
    mesh_printer mp;
    mesh_printer_from_profile(&p, &mp);
    mesh_frame mf;
    mesh_frame_for_stack(&mf, &mp, NULL, 1.0);
    printer_free(&p);
    /* 224 x 0.8 mm + 2 x 14.5 = 208.2 mm fits the 210 mm bed */
    int rc = export_square(224, 0.8, 20, "prusa-mk4", &r, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    CHECK_NEAR(r.frame.width_mm, 14.5, 0);
    CHECK_NEAR(r.frame.width_mm, mf.width_mm, 0);
    CHECK_NEAR(r.plate_side_mm, 224 * 0.8 + 29, 1e-9);
    export_report_free(&r);
    /* and so does the mesh stage's part */
    mesh_stack_opts mo;
    mesh_stack_report mr;
    mesh_stack_opts_default(&mo);
    rc = mesh_stack(t_path("square-exp"), t_path("square-parts"), &mo, &mr, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0 && mr.part[1].size_mm[0] <= 210);
    /* 230 x 0.8 mm: 204 mm with a 10 mm frame, 213 mm with the MK4's */
    CHECK_ERR(export_square(230, 0.8, 20, "prusa-mk4", &r, &e), e, D2_EINPUT,
              "213.0 x 213.0");
    CHECK(strstr(e.msg, "14.5 mm frame band") && strstr(e.msg, "--force"));
    export_report_free(&r);
    /* a 219 mm gap: posts and 1.5 mm pins reach 220.5 mm of the 220 mm height */
    CHECK_ERR(export_square(100, 0.8, 219, "prusa-mk4", &r, &e), e, D2_EINPUT, "x 220.50 mm");
    export_report_free(&r);
}

/* Runs `d2fab ARGS` ($D2FAB_BIN, default ./d2fab) with its output in log;
 * the exit status. */
static int d2fab_cmd(const char *args, const char *log)
{
    const char *b = getenv("D2FAB_BIN");
    char cmd[8 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", b && *b ? b : "./d2fab", args, log);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int log_has(const char *log, const char *needle)
{
    char *buf = NULL;
    d2_err e = {0};
    if (d2_read_file(log, 1 << 20, &buf, NULL, &e)) return 0;
    int yes = strstr(buf, needle) != NULL;
    if (!yes) printf("  %s lacks \"%s\":\n%s", log, needle, buf);
    free(buf);
    return yes;
}

/* Bare maps take their illumination on the command line; it goes into
 * export.json and comes back when the export is loaded as the printed model. */
TEST(export_cli_takes_the_illumination_of_bare_maps)
{
    float map[32 * 32];
    make_phase(map, 32, 0.5, 0.6, 11);
    write_map(t_path("illum.npy"), map, 32, 32);
    const char *log = t_path("illum.log");
    char args[4 * PATH_MAX], out[PATH_MAX];
    snprintf(out, sizeof out, "%s", t_path("illum-exp"));
    snprintf(args, sizeof args, "export --phase '%s' --pitch-mm 0.4 --frequency-thz 0.4 -q -o '%s' "
             "--illumination gaussian:5", t_path("illum.npy"), out);
    CHECK(d2fab_cmd(args, log) == 0);
    d2_model m;
    d2_err e = {0};
    int rc = export_load_as_model(out, &m, &e);
    CHECK(rc == 0);
    if (!rc) {
        CHECK(m.g.illum == D2_ILLUM_GAUSSIAN && m.g.illum_waist_mm == 5);
        model_free(&m);
    }
    snprintf(args, sizeof args, "export --phase '%s' --pitch-mm 0.4 --frequency-thz 0.4 -q -o '%s' "
             "--illumination point:800", t_path("illum.npy"), out);
    CHECK(d2fab_cmd(args, log) == 0);
    rc = export_load_as_model(out, &m, &e);
    CHECK(rc == 0);
    if (!rc) {
        CHECK(m.g.illum == D2_ILLUM_POINT && m.g.illum_distance_mm == 800);
        model_free(&m);
    }
    /* a point source that aliases: the shortest distance allowed */
    snprintf(args, sizeof args, "export --phase '%s' --pitch-mm 0.4 --frequency-thz 0.4 -q -o '%s' "
             "--illumination point:1", t_path("illum.npy"), t_path("illum-bad"));
    CHECK(d2fab_cmd(args, log) == 2);
    CHECK(log_has(log, "--illumination 'point:1'") && log_has(log, "allowed: more than"));
    CHECK(!t_exists(t_path("illum-bad/export.json")));
    static const char *const bad[] = {"laser", "gaussian:-2", "gaussian", "point:x"};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "export --phase '%s' --pitch-mm 0.4 --frequency-thz 0.4 -q -o "
                 "'%s' --illumination %s", t_path("illum.npy"), t_path("illum-bad"), bad[i]);
        CHECK(d2fab_cmd(args, log) == 1);
        CHECK(log_has(log, "--illumination"));
    }
    CHECK(log_has(log, "illumination point distance"));
    /* a model folder carries its own */
    snprintf(args, sizeof args, "export --model '%s' -q -o '%s' --illumination plane", out,
             t_path("illum-bad"));
    CHECK(d2fab_cmd(args, log) == 1);
    CHECK(log_has(log, "its illumination in model.json"));
}

/* d2fab mesh --print-time-slicer: each layer part's time from the slicer
 * (a stand-in here, PrusaSlicer where installed); a PolyJet export, a
 * format the slicer cannot read or a missing slicer fail before any part. */
TEST(mesh_cli_asks_the_slicer_for_each_layer_part)
{
    float map[32 * 32];
    make_phase(map, 32, 0.5, 0.6, 12);
    write_map(t_path("msl.npy"), map, 32, 32);
    const char *log = t_path("msl.log");
    char args[4 * PATH_MAX];
    snprintf(args, sizeof args, "export --phase '%s' --pitch-mm 0.8 --frequency-thz 0.4 -q -o "
             "'%s' --printer prusa-mk4 --material hips", t_path("msl.npy"), t_path("msl-fdm"));
    CHECK(d2fab_cmd(args, log) == 0);
    snprintf(args, sizeof args, "export --phase '%s' --pitch-mm 0.8 --frequency-thz 0.4 -q -o "
             "'%s'", t_path("msl.npy"), t_path("msl-pj"));
    CHECK(d2fab_cmd(args, log) == 0);
    setenv("D2FAB_SLICER", fake_slicer("msl.sh", "; estimated printing time (normal mode) = "
                                       "2h 30m 0s\n; filament used [cm3] = 4.00", 0), 1);
    snprintf(args, sizeof args, "mesh --export '%s' --out '%s' --print-time-slicer",
             t_path("msl-fdm"), t_path("msl-parts"));
    CHECK(d2fab_cmd(args, log) == 0);
    CHECK(log_has(log, "layer1.stl     PrusaSlicer: 2.50 h, 4 cm3"));
    /* refused before any part is written */
    snprintf(args, sizeof args, "mesh --export '%s' --out '%s' --print-time-slicer",
             t_path("msl-pj"), t_path("msl-pj-parts"));
    CHECK(d2fab_cmd(args, log) == 2);
    CHECK(log_has(log, "polyjet") && !t_exists(t_path("msl-pj-parts")));
    snprintf(args, sizeof args, "mesh --export '%s' --out '%s' --print-time-slicer -f ply",
             t_path("msl-fdm"), t_path("msl-ply"));
    CHECK(d2fab_cmd(args, log) == 1);
    CHECK(log_has(log, "stl, 3mf or obj") && !t_exists(t_path("msl-ply")));
    setenv("D2FAB_SLICER", "no-such-slicer-d2fab", 1);
    snprintf(args, sizeof args, "mesh --export '%s' --out '%s' --print-time-slicer",
             t_path("msl-fdm"), t_path("msl-none"));
    CHECK(d2fab_cmd(args, log) == 2);
    CHECK(log_has(log, "not found") && !t_exists(t_path("msl-none")));
    unsetenv("D2FAB_SLICER");
}

TEST(a_failed_write_leaves_no_export_json_and_removes_this_runs_files)
{
    export_opts o;
    export_report r;
    d2_err e = {0};
    opts_for(&o, "objet-connex500", "verobp");
    const char *out = t_path("halfway");
    CHECK(export_bare(out, &o, &r, &e, 0) == 0);
    export_report_free(&r);
    CHECK(t_exists(t_path("halfway/export.json")));
    /* layer 2's PNG cannot be put in place: a folder holds its name */
    unlink(t_path("halfway/layer2_height.png"));
    mkdir_or_die(t_path("halfway/layer2_height.png/x"));
    CHECK(export_bare(out, &o, &r, &e, 0) != 0);
    export_report_free(&r);
    CHECK(!t_exists(t_path("halfway/export.json")));
    CHECK(!t_exists(t_path("halfway/layer1_height.npy")));
    CHECK(!t_exists(t_path("halfway/layer1_preview.png")));
    CHECK(!t_exists(t_path("halfway/layer2_height.npy")));
}

TEST(export_writes_every_file_and_loads_back_as_the_printed_model)
{
    const char *mdir = t_path("model");
    save_model(mdir, 32, 2, 0, 0, 0.8);
    d2_model m;
    d2_err e = {0};
    CHECK(model_load(mdir, &m, &e) == 0);
    cJSON *mj = NULL;
    CHECK(cfg_load(t_path("model/model.json"), &mj, &e) == 0);
    export_opts o;
    opts_for(&o, "tiny", "twopoint");
    o.force = 1; /* the plate is 2.8 mm wider than the tiny printer */
    export_report r;
    export_source src = {&m, mj, "model", mdir};
    const char *out = t_path("exp");
    int rc = export_stack(&src, &o, out, &r, &e);
    CHECK(rc == 0);
    if (rc) printf("  %s\n", e.msg);
    /* twopoint at 0.4 THz: n 1.68, kappa 0.04; the base is the model's own
     * (0.5 mm), rounded up to 32 steps of 16 um: one base from training to print */
    CHECK_NEAR(r.p.index, 1.68, 1e-12);
    CHECK_NEAR(r.p.kappa, 0.04, 1e-12);
    CHECK_NEAR(m.g.base_mm, 0.5, 1e-12);
    CHECK_NEAR(r.p.base_mm, 0.512, 1e-12);
    /* stack transmission = prod mean(a^2) * (1 - R)^(2L) */
    double R = opt_fresnel_r(1.68);
    CHECK_NEAR(r.power_transmission,
               r.layer[0].power_mean * r.layer[1].power_mean * pow(1 - R, 4), 1e-12);
    double mx = fmax(r.layer[0].max_mm, r.layer[1].max_mm);
    /* the time counts the tallest part (posts as tall as the largest gap after
     * a layer, the printer's pins), not the relief: 16 um layers at 10 mm/h */
    double ph = mx;
    CHECK_NEAR(r.frame.pin_len_mm, 1.5, 0);
    for (int k = 1; k <= 2; k++) ph = fmax(ph, m.g.gap_mm[k] + r.frame.pin_len_mm);
    CHECK(ph > 10 * mx);
    CHECK_NEAR(r.print_height_mm, ph, 1e-9);
    CHECK(r.print_layers == (long)ceil(ph / 0.016 - 1e-6));
    CHECK_NEAR(r.print_time_h, r.print_layers * 0.016 / 10, 1e-9);
    CHECK(strstr(r.print_time_how, "layer model") && strstr(r.print_time_how, "z_speed_mm_per_h"));
    for (int k = 1; k <= 2; k++) {
        char name[64];
        const char *kinds[] = {"height.npy", "height.png", "preview.png"};
        for (int q = 0; q < 3; q++) {
            snprintf(name, sizeof name, "exp/layer%d_%s", k, kinds[q]);
            CHECK(t_exists(t_path(name)));
        }
    }
    /* the 16-bit PNG holds round(h / png_scale_mm) */
    cJSON *ej = NULL;
    CHECK(cfg_load(t_path("exp/export.json"), &ej, &e) == 0);
    const cJSON *lf = cJSON_GetArrayItem(cJSON_GetObjectItem(ej, "layer_files"), 0);
    double scale = cJSON_GetNumberValue(cJSON_GetObjectItem(lf, "png_scale_mm"));
    CHECK_NEAR(scale, 0.001, 1e-12);
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(ej, "format")), "d2fab-export"));
    CHECK(cJSON_IsObject(cJSON_GetObjectItem(cJSON_GetObjectItem(ej, "model"), "geometry")));
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(ej, "phase_offset")), "auto"));
    float *png = NULL, *hn = NULL;
    int w, hh, rows, cols;
    CHECK(img_read_gray(t_path("exp/layer1_height.png"), &w, &hh, &png, &e) == 0);
    CHECK(npy_read_map(t_path("exp/layer1_height.npy"), &hn, &rows, &cols, &e) == 0);
    if (png && hn && w == 32 && rows == 32) {
        double worst = 0;
        for (int k = 0; k < 32 * 32; k++)
            worst = fmax(worst, fabs(png[k] * 65535.0 * scale - hn[k]));
        CHECK(worst < 1e-6); /* 16 um steps are whole micrometres */
    }
    free(png);
    cJSON_Delete(ej);


    /* the one reader of the folder: every section and the heights as written */
    export_folder x;
    rc = export_folder_load(out, &x, &e);
    CHECK(rc == 0);
    if (!rc) {
        CHECK(x.n == 32 && x.layers == 2 && x.have_material && x.have_printer);
        CHECK(!strcmp(x.material, "twopoint") && !strcmp(x.printer.name, "tiny"));
        CHECK_NEAR(x.index, 1.68, 1e-12);
        CHECK_NEAR(x.base_mm, r.p.base_mm, 1e-9);
        CHECK_NEAR(x.wavelength_mm, WL_04, 1e-12);
        CHECK(x.printer.z_step_mm == 0.016 && x.g.gap_mm[1] == m.g.gap_mm[1]);
        int same = hn != NULL;
        for (int k = 0; same && k < 32 * 32; k++) same = x.height_mm[0][k] == hn[k];
        CHECK(same);
        export_folder_free(&x);
    }
    /* a layer file that is gone fails naming it, with nothing to free */
    CHECK(rename(t_path("exp/layer2_height.npy"), t_path("exp/l2.npy")) == 0);
    CHECK_ERR(export_folder_load(out, &x, &e), e, D2_EINPUT, "layer2_height.npy");
    CHECK(x.root == NULL && x.height_mm[0] == NULL);
    CHECK(rename(t_path("exp/l2.npy"), t_path("exp/layer2_height.npy")) == 0);
    d2_model back;
    rc = export_load_as_model(out, &back, &e);
    CHECK(rc == 0);
    if (rc) printf("  %s\n", e.msg);
    if (!rc && hn) {
        CHECK(back.g.n == 32 && back.g.layers == 2 && back.g.coupled == 0);
        CHECK_NEAR(back.g.wavelength_mm, WL_04, 1e-9);
        CHECK_NEAR(back.g.gap_mm[1], m.g.gap_mm[1], 1e-12);
        CHECK_NEAR(back.g.det_x_mm[3], m.g.det_x_mm[3], 1e-9);
        /* phase back = trained phase + offset + constant, up to the Z-step error */
        double bound = M_PI * 0.68 * 0.016 / WL_04;
        double cst = r.layer[0].offset_rad + TWO_PI * 0.68 * r.p.base_mm / WL_04, worst = 0;
        for (int k = 0; k < 32 * 32; k++) {
            worst = fmax(worst, fabs(remainder(back.phase[0][k] - m.phase[0][k] - cst, TWO_PI)));
            CHECK_NEAR(back.amp[0][k], exp(-TWO_PI * 0.04 * hn[k] / WL_04), 1e-6);
        }
        CHECK(worst <= bound * 1.001);
        CHECK_NEAR(worst, r.layer[0].phase_max_error_rad, 1e-4);
    }
    free(hn);
    model_free(&back);
    export_report_free(&r);
    cJSON_Delete(mj);
    model_free(&m);
}

TEST(a_model_trained_coupled_keeps_the_plain_wrap_and_its_base)
{
    const char *mdir = t_path("coupled");
    save_model(mdir, 32, 1, 1, 0, 0.8);
    d2_model m;
    d2_err e = {0};
    CHECK(model_load(mdir, &m, &e) == 0);
    export_opts o;
    opts_for(&o, "objet-connex500", "verobp");
    export_report r;
    export_source src = {&m, NULL, "model", mdir};
    /* never into a model folder: it would then read as an export */
    CHECK_ERR(export_stack(&src, &o, mdir, &r, &e), e, D2_EUSAGE, "holds a model");
    export_report_free(&r);
    CHECK(!t_exists(t_path("coupled/export.json")));
    CHECK(export_stack(&src, &o, t_path("coupled-exp"), &r, &e) == 0);
    CHECK(r.layer[0].offset_rad == 0 && r.p.offset_auto == 0);
    CHECK_NEAR(r.p.base_mm, 0.512, 1e-12); /* geom_default's 0.5 mm up to the 16 um grid */
    int found = 0;
    for (int i = 0; i < r.nwarn; i++) found |= strstr(r.warn[i], "plain wrap") != NULL;
    CHECK(found);
    export_report_free(&r);
    model_free(&m);
}

TEST(levels_export_uses_whole_level_offsets_on_the_z_grid)
{
    export_opts o;
    opts_for(&o, "objet-connex500", "verobp");
    o.levels = 4;
    export_report r;
    d2_err e = {0};
    CHECK(export_bare(t_path("lv"), &o, &r, &e, 2.0) == 0);
    for (int k = 0; k < 2; k++) {
        double s = r.layer[k].offset_rad * 4 / TWO_PI;
        CHECK_NEAR(s, nearbyint(s), 1e-9);
        /* levels then Z step: error <= pi/4 + the Z-step bound */
        CHECK(r.layer[k].phase_max_error_rad <= M_PI / 4 + M_PI * 0.7227 * 0.016 / WL_04 + 1e-6);
    }
    export_report_free(&r);
}

int main(void)
{
    use_repo_printers();
    RUN(two_pi_at_0p4_thz_in_verobp_is_1p037_mm_of_material);
    RUN(heights_follow_the_formula_before_quantisation);
    RUN(absorption_through_1p04_mm_of_verobp_leaves_0p76_amplitude);
    RUN(z_step_heights_are_whole_steps_from_zero);
    RUN(z_step_phase_error_stays_within_the_derived_bound_and_rms_is_step_over_sqrt12);
    RUN(k_levels_phase_error_is_at_most_pi_over_k);
    RUN(heights_turn_back_into_the_same_phase);
    RUN(auto_offset_cuts_material_and_wrap_cliffs_of_a_map_near_zero);
    RUN(offset_sweep_finds_the_exact_minimum_of_the_objective);
    RUN(level_offset_is_the_best_whole_number_of_levels);
    RUN(offset_zero_is_the_plain_wrap);
    RUN(png_scale_stores_z_steps_exactly);
    RUN(material_is_interpolated_in_frequency_and_clamped_outside);
    RUN(topas_carries_its_one_thz_literature_point_and_warns_beyond_it);
    RUN(every_shipped_profile_loads_and_the_paper_values_are_right);
    RUN(print_time_counts_every_layer_of_the_whole_part);
    RUN(slicer_output_is_read_and_its_failures_are_named);
    RUN(prusaslicer_times_a_10_mm_cube_for_resin_and_fdm);
    RUN(user_profile_folder_is_searched_first_and_paths_work);
    RUN(unknown_printer_or_material_lists_the_known_ones);
    RUN(bad_profiles_are_refused_naming_file_key_and_range);
    RUN(a_printer_profile_is_judged_by_one_set_of_ranges_in_every_stage);
    RUN(bad_parameters_are_refused);
    RUN(bad_phase_files_are_refused_with_a_clear_message);
    RUN(png_phase_maps_need_and_use_their_stated_range);
    RUN(layers_of_different_sizes_are_refused);
    RUN(float64_phase_maps_from_numpy_are_converted_with_a_note);
    RUN(bad_export_inputs_fail_and_write_nothing);
    RUN(a_failed_write_leaves_no_export_json_and_removes_this_runs_files);
    RUN(build_volume_check_uses_the_frame_and_height_the_mesh_stage_builds);
    RUN(export_cli_takes_the_illumination_of_bare_maps);
    RUN(mesh_cli_asks_the_slicer_for_each_layer_part);
    RUN(export_writes_every_file_and_loads_back_as_the_printed_model);
    RUN(a_model_trained_coupled_keeps_the_plain_wrap_and_its_base);
    RUN(levels_export_uses_whole_level_offsets_on_the_z_grid);
    return t_finish();
}
