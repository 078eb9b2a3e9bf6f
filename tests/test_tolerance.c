/* The tolerance simulator: exact agreement with eval when nothing is
 * perturbed, whole-pixel shifts against rolled layers, accuracy falling with
 * the lateral shift on a briefly trained model, physical laws of the height
 * and material perturbations, reproducibility, the statistics (incomplete
 * beta, Clopper-Pearson) and bad configs. */
#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/idx.h"
#include "core/image.h"
#include "core/npy.h"
#include "core/util.h"
#include "export/export.h"
#include "mask/mask.h"
#include "tests/testlib.h"
#include "optics/optics.h"
#include "tolerance/tolerance.h"
#include "train/train.h"

#define IMAGES 60

static d2_dataset test_set;
static d2_pool *pool2, *pool1;

static const d2_dataset *mnist(void)
{
    if (!test_set.count) {
        d2_err e = {0};
        if (dataset_load(dataset_default_dir(), "mnist", 1, &test_set, &e)) {
            printf("  %s\n", e.msg);
            exit(2);
        }
    }
    return &test_set;
}

/* A small geometry on exact binary fractions (pitch 0.5 mm) so detector
 * squares sit on pixel edges and shifts of whole pixels are exact. */
static void small_geom(d2_geom *g, int n, int layers)
{
    geom_default(g);
    g->n = n;
    g->layers = layers;
    g->pitch_mm = 0.5;
    for (int k = 0; k <= layers; k++) g->gap_mm[k] = 12.0;
    g->aperture_mm = 0.5 * n * 0.6;
    geom_layout_343(g, 2.0, 4.0, 4.0);
}

/* A model with random phases in [0, 2 pi). */
static void random_model(d2_model *m, int n, int layers, uint64_t seed, int coupled)
{
    d2_err e = {0};
    memset(m, 0, sizeof *m);
    small_geom(&m->g, n, layers);
    train_opts_default(&m->t);
    m->g.coupled = coupled;
    CHECK(model_alloc(m, &e) == 0);
    d2_rng r;
    d2_rng_seed(&r, seed);
    for (int l = 0; l < layers; l++)
        for (int i = 0; i < n * n; i++) m->phase[l][i] = (float)(2 * M_PI * d2_rng_uniform(&r));
}

/* Detector energies of the plain evaluation path. */
static float *eval_energies(const d2_model *m, int count, double *acc)
{
    d2_err e = {0};
    d2_net *net = net_new(&m->g, d2_pool_threads(pool2), &e);
    CHECK(net != NULL);
    net_set_model(net, m);
    float *det = malloc(sizeof(float) * count * m->g.ndet);
    eval_result r;
    CHECK(eval_net(net, mnist(), count, pool2, NULL, &r, det, &e) == 0);
    *acc = r.accuracy;
    net_free(net);
    return det;
}

/* Accuracy and energies of the tolerance path for one draw. */
static double tol_energies(const tol_stack *s, const tol_mag *mag, double scale, const tol_draw *d,
                           int count, float *det, d2_pool *pool)
{
    d2_err e = {0};
    tol_sim *sim = tol_sim_new(s, d2_pool_threads(pool), &e);
    CHECK(sim != NULL);
    double acc = -1;
    if (sim) {
        int rc = tol_sim_eval(sim, mag, scale, d, 7, mnist(), count, pool, 0.01, &acc, det, NULL, &e);
        if (rc) printf("  %s\n", e.msg);
        CHECK(rc == 0);
    }
    tol_sim_free(sim);
    return acc;
}

static void copy_model(d2_model *dst, const d2_model *src)
{
    d2_err e = {0};
    memset(dst, 0, sizeof *dst);
    dst->g = src->g;
    dst->t = src->t;
    CHECK(model_alloc(dst, &e) == 0);
    size_t nn = (size_t)src->g.n * src->g.n;
    for (int l = 0; l < src->g.layers; l++) {
        memcpy(dst->phase[l], src->phase[l], nn * sizeof(float));
        if (src->amp[l]) {
            dst->amp[l] = malloc(nn * sizeof(float));
            memcpy(dst->amp[l], src->amp[l], nn * sizeof(float));
        }
    }
}

static tol_mag zero_mag(void)
{
    tol_mag m;
    memset(&m, 0, sizeof m);
    return m;
}

TEST(zero_perturbation_reproduces_eval_exactly)
{
    for (int coupled = 0; coupled < 2; coupled++) {
        d2_model m, keep;
        random_model(&m, 32, 3, 11 + coupled, coupled);
        copy_model(&keep, &m);
        double acc0;
        float *want = eval_energies(&keep, IMAGES, &acc0);
        tol_stack s;
        d2_err e = {0};
        CHECK(tol_stack_init(&s, &m, NULL, "random", "", &e) == 0);
        CHECK(s.absorbing == coupled);
        size_t bytes = sizeof(float) * IMAGES * s.m.g.ndet;
        float *got = malloc(bytes);
        tol_mag mag = zero_mag();
        /* No draw at all, and a draw of magnitude zero for every kind. */
        double a = tol_energies(&s, &mag, 1, NULL, IMAGES, got, pool2);
        CHECK(a == acc0);
        CHECK(memcmp(got, want, bytes) == 0);
        tol_config c;
        tol_config_default(&c);
        CHECK(tol_config_set(&c, "lateral_mm", 0.3, &e) == 0);
        CHECK(tol_config_set(&c, "height_error_mm", 0.05, &e) == 0);
        CHECK(tol_config_set(&c, "index_error", 0.02, &e) == 0);
        CHECK(tol_config_set(&c, "detector_shift_mm", 0.2, &e) == 0);
        CHECK(tol_bind(&c, &s, &mag, &e) == 0);
        tol_draw d;
        tol_draw_make(&d, &mag, s.m.g.layers, 5, 1, -1);
        memset(got, 0, bytes);
        a = tol_energies(&s, &mag, 0, &d, IMAGES, got, pool2);
        CHECK(a == acc0);
        CHECK(memcmp(got, want, bytes) == 0);
        tol_mag_free(&mag);
        free(got);
        free(want);
        model_free(&keep);
        tol_stack_free(&s);
    }
}


/* An export is scored as printed: the study turns it into the thick model of
 * the assembly as built unless the config says thin, and says which. */
TEST(tolerance_of_an_export_uses_thick_plates_unless_told_thin)
{
    d2_model m;
    d2_err e = {0};
    random_model(&m, 32, 2, 23, 0);
    export_opts o;
    export_opts_default(&o);
    o.printer = "objet-connex500";
    o.material = "verobp";
    export_report er;
    export_source src = {&m, NULL, "model", "random"};
    char dir[700], out[720];
    snprintf(dir, sizeof dir, "%s/export-thick", t_tmpdir());
    int rc = export_stack(&src, &o, dir, &er, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    export_report_free(&er);
    model_free(&m);
    d2_model thin, thick;
    CHECK(export_load_as_model(dir, &thin, &e) == 0);
    CHECK(export_load_as_model(dir, &thick, &e) == 0);
    CHECK(model_make_thick(&thick, 0, &e) == 0);
    double acc_thin, acc_thick;
    free(eval_energies(&thin, IMAGES, &acc_thin));
    free(eval_energies(&thick, IMAGES, &acc_thick));
    for (int pass = 0; pass < 2; pass++) {
        tol_config c;
        tol_config_default(&c);
        c.trials = 1;
        c.limit = IMAGES;
        c.sensitivity = c.inverse = 0;
        CHECK(tol_config_set(&c, "lateral_mm", 0.05, &e) == 0);
        if (pass) c.optics = D2_OPTICS_THIN;
        snprintf(out, sizeof out, "%s/tol-optics-%d", t_tmpdir(), pass);
        tol_study_model sm = {dir, NULL, NULL};
        tol_study_opts so = {&c, &sm, 1, dataset_default_dir(), 2, out, NULL, NULL};
        tol_study st;
        rc = tol_study_run(&so, &st, &e);
        if (rc) printf("  %s\n", e.msg);
        CHECK(rc == 0);
        if (rc) continue;
        const d2_geom *g = &st.stacks[0].m.g;
        CHECK(g->optics == (pass ? D2_OPTICS_THIN : D2_OPTICS_THICK));
        CHECK(st.rep.res[0].nominal == (pass ? acc_thin : acc_thick));
        for (int k = 0; k <= g->layers; k++)
            CHECK_NEAR(g->gap_mm[k], (pass ? thin.g : thick.g).gap_mm[k], 1e-12);
        /* report.json names the model of every number */
        char path[800];
        snprintf(path, sizeof path, "%s/report.json", out);
        cJSON *j = NULL;
        CHECK(cfg_load(path, &j, &e) == 0);
        const cJSON *mo = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "models"), 0);
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(mo, "optics");
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "model"));
        CHECK(name && !strcmp(name, pass ? "thin" : "thick"));
        cJSON_Delete(j);
        tol_study_free(&st);
    }
    model_free(&thin);
    model_free(&thick);
}
TEST(export_stack_nominal_equals_eval_of_the_export_and_requantising_changes_nothing)
{
    d2_model m;
    d2_err e = {0};
    random_model(&m, 32, 2, 21, 0);
    export_opts o;
    export_opts_default(&o);
    o.printer = "objet-connex500";
    o.material = "verobp";
    export_report er;
    export_source src = {&m, NULL, "model", "random"};
    char dir[700];
    snprintf(dir, sizeof dir, "%s/export", t_tmpdir());
    int rc = export_stack(&src, &o, dir, &er, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    double zstep = er.printer.z_step_mm;
    export_report_free(&er);
    model_free(&m);
    d2_model x, keep;
    CHECK(export_load_as_model(dir, &x, &e) == 0);
    copy_model(&keep, &x);
    double acc0;
    float *want = eval_energies(&keep, IMAGES, &acc0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &x, dir, "export", dir, &e) == 0);
    CHECK(s.is_export && s.absorbing);
    CHECK_NEAR(s.z_step_mm, zstep, 1e-12);
    CHECK(s.height_mm[1] != NULL);
    size_t bytes = sizeof(float) * IMAGES * s.m.g.ndet;
    float *got = malloc(bytes);
    tol_mag mag = zero_mag();
    CHECK(tol_energies(&s, &mag, 1, NULL, IMAGES, got, pool2) == acc0);
    CHECK(memcmp(got, want, bytes) == 0);
    /* The printed heights are already on the Z step: quantising them to the
     * printer's step again leaves every energy as it was. */
    tol_config c;
    tol_config_default(&c);
    tol_config_quantize_printer(&c);
    CHECK(tol_bind(&c, &s, &mag, &e) == 0);
    CHECK_NEAR(mag.v[TOL_QUANTIZE][0], zstep, 1e-12);
    tol_draw d;
    tol_draw_make(&d, &mag, s.m.g.layers, 1, 1, -1);
    CHECK(tol_energies(&s, &mag, 1, &d, IMAGES, got, pool2) == acc0);
    double worst = 0;
    for (size_t i = 0; i < bytes / sizeof(float); i++)
        worst = fmax(worst, fabs(got[i] - want[i]) / (fabs(want[i]) + 1e-6));
    CHECK(worst < 1e-4);
    tol_mag_free(&mag);
    free(got);
    free(want);
    model_free(&keep);
    tol_stack_free(&s);
}

/* The layer shifted by (di, dj) whole pixels with zero fill (an amplitude
 * map), or rolled circularly (phases only, what a layer file can hold). */
static void shift_layer(d2_model *m, int l, int di, int dj, int circular)
{
    int n = m->g.n;
    float *ph = malloc(sizeof(float) * n * n), *amp = calloc((size_t)n * n, sizeof(float));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int si = i - di, sj = j - dj;
            if (circular) {
                si = (si + n) % n;
                sj = (sj + n) % n;
            }
            int in = si >= 0 && si < n && sj >= 0 && sj < n;
            ph[i * n + j] = in ? m->phase[l][si * n + sj] : 0;
            amp[i * n + j] = in;
        }
    free(m->phase[l]);
    m->phase[l] = ph;
    if (circular)
        free(amp);
    else
        m->amp[l] = amp;
}

TEST(whole_pixel_shift_equals_the_rolled_layer)
{
    d2_model m, rolled;
    d2_err e = {0};
    random_model(&m, 32, 3, 31, 0);
    copy_model(&rolled, &m);
    /* Layer 2 moves 2 pixels right (+x) and 1 pixel down (+y, rows). */
    shift_layer(&rolled, 1, 1, 2, 0);
    double acc0;
    float *want = eval_energies(&rolled, IMAGES, &acc0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "random", "", &e) == 0);
    tol_config c;
    tol_config_default(&c);
    CHECK(tol_config_set(&c, "lateral_px", 2, &e) == 0);
    tol_mag mag;
    CHECK(tol_bind(&c, &s, &mag, &e) == 0);
    CHECK_NEAR(mag.v[TOL_LATERAL][1], 1.0, 1e-12); /* 2 px of 0.5 mm */
    tol_draw d;
    memset(&d, 0, sizeof d);
    d.u[TOL_LATERAL][1][0] = 1;
    d.u[TOL_LATERAL][1][1] = 0.5;
    size_t bytes = sizeof(float) * IMAGES * s.m.g.ndet;
    float *got = malloc(bytes);
    double a = tol_energies(&s, &mag, 1, &d, IMAGES, got, pool2);
    CHECK(a == acc0);
    CHECK(memcmp(got, want, bytes) == 0);
    tol_mag_free(&mag);
    free(got);
    free(want);
    model_free(&rolled);
    tol_stack_free(&s);
}

/* A briefly trained model (samples/quick.json, 2000 images, 1 epoch), saved
 * under the test folder; trained once. */
static const char *quick_model(void)
{
    static char dir[700];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/quick", t_tmpdir());
    d2_model m = {0};
    d2_err e = {0};
    CHECK(config_load("samples/quick.json", &m.g, &m.t, &e) == 0);
    m.t.epochs = 1;
    m.t.train_limit = 2000;
    m.t.test_limit = 200;
    CHECK(model_alloc(&m, &e) == 0);
    train_run_opts ro = {dataset_default_dir(), 0, 0, NULL};
    int rc = train_model(&m, dir, &ro, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    model_free(&m);
    return dir;
}

TEST(shifted_trained_model_matches_eval_of_the_rolled_layer_files)
{
    d2_model m, rolled;
    d2_err e = {0};
    CHECK(model_load(quick_model(), &m, &e) == 0);
    copy_model(&rolled, &m);
    /* Layer files can only hold a circular roll: the columns that wrap
     * around lie outside the input aperture's light cone, so the accuracy
     * agrees with the zero-filled shift. */
    shift_layer(&rolled, 0, 0, 3, 1);
    shift_layer(&rolled, 2, -2, 0, 1);
    char dir[800];
    snprintf(dir, sizeof dir, "%s/rolled", t_tmpdir());
    CHECK(model_save(dir, &rolled, &e) == 0);
    model_free(&rolled);
    d2_model back;
    CHECK(model_load(dir, &back, &e) == 0);
    eval_result r;
    CHECK(eval_model(&back, dataset_default_dir(), 300, 2, NULL, NULL, &r, &e) == 0);
    model_free(&back);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "quick", "", &e) == 0);
    tol_config c;
    tol_config_default(&c);
    CHECK(tol_config_set(&c, "lateral_px", 3, &e) == 0);
    tol_mag mag;
    CHECK(tol_bind(&c, &s, &mag, &e) == 0);
    tol_draw d;
    memset(&d, 0, sizeof d);
    d.u[TOL_LATERAL][0][0] = 1;         /* +3 px in x */
    d.u[TOL_LATERAL][2][1] = -2.0 / 3;  /* -2 px in y */
    double a = tol_energies(&s, &mag, 1, &d, 300, NULL, pool2);
    printf("  shifted: tolerance %.2f%%, eval of the rolled files %.2f%%\n", 100 * a,
           100 * r.accuracy);
    CHECK(a == r.accuracy);
    tol_mag_free(&mag);
    tol_stack_free(&s);
}

/* Accuracy of one draw of a single tolerance key on the quick model. */
static double one_key_accuracy(tol_stack *s, const char *key, double v, double det_ref)
{
    d2_err e = {0};
    tol_config c;
    tol_config_default(&c);
    CHECK(tol_config_set(&c, key, v, &e) == 0);
    tol_mag mag;
    CHECK(tol_bind(&c, s, &mag, &e) == 0);
    tol_sim *sim = tol_sim_new(s, 2, &e);
    CHECK(sim != NULL);
    tol_draw d;
    tol_draw_make(&d, &mag, s->m.g.layers, 3, 1, -1);
    double a = -1;
    CHECK(tol_sim_eval(sim, &mag, 1, &d, 3, mnist(), 300, pool2, det_ref, &a, NULL, NULL, &e) == 0);
    tol_sim_free(sim);
    tol_mag_free(&mag);
    return a;
}

/* Absolute detector noise (a fraction of the source power) is the relative
 * noise times the mean detector energy: the same draws give the same
 * accuracy; and it penalises a model by its efficiency, not its contrast. */
TEST(absolute_detector_noise_is_relative_noise_times_the_detector_energy)
{
    d2_model m;
    d2_err e = {0};
    CHECK(model_load(quick_model(), &m, &e) == 0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "quick", "", &e) == 0);
    const double ref = 0.004; /* a mean detector energy */
    double rel = one_key_accuracy(&s, "detector_noise_relative", 2.0, ref);
    double abs_same = one_key_accuracy(&s, "detector_noise_of_source", 2.0 * ref, ref);
    double abs_tiny = one_key_accuracy(&s, "detector_noise_of_source", 1e-9, ref);
    double abs_big = one_key_accuracy(&s, "detector_noise_of_source", 0.5, ref);
    double none = one_key_accuracy(&s, "lateral_mm", 0, ref);
    printf("  nominal %.1f%%, relative 2: %.1f%%, of source 0.008: %.1f%%, 1e-9: %.1f%%, "
           "0.5: %.1f%%\n", 100 * none, 100 * rel, 100 * abs_same, 100 * abs_tiny, 100 * abs_big);
    CHECK(rel == abs_same);
    CHECK(rel < none - 0.05);
    CHECK(abs_tiny == none);
    CHECK(abs_big < 0.3);
    tol_stack_free(&s);
}

TEST(accuracy_falls_as_the_lateral_shift_grows_past_a_pixel)
{
    d2_model m;
    d2_err e = {0};
    CHECK(model_load(quick_model(), &m, &e) == 0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "quick", "", &e) == 0);
    tol_config c;
    tol_config_default(&c);
    CHECK(tol_config_set(&c, "lateral_px", 1, &e) == 0);
    tol_mag mag;
    CHECK(tol_bind(&c, &s, &mag, &e) == 0);
    tol_sim *sim = tol_sim_new(&s, 2, &e);
    CHECK(sim != NULL);
    /* Mean over 4 random draws (uniform +-D on every layer, x and y) at
     * D = 0, 0.5, 1, 2, 4 pixels; the same unit draws at every D. */
    const double D[] = {0, 0.5, 1, 2, 4};
    double acc[5];
    for (int k = 0; k < 5; k++) {
        acc[k] = 0;
        for (int t = 0; t < 4; t++) {
            tol_draw d;
            tol_draw_make(&d, &mag, s.m.g.layers, 3, (uint64_t)t + 1, -1);
            double a;
            CHECK(tol_sim_eval(sim, &mag, D[k], &d, 3, mnist(), 400, pool2, 0, &a, NULL, NULL,
                               &e) == 0);
            acc[k] += a / 4;
        }
        printf("  lateral +-%.1f px: %.2f%%\n", D[k], 100 * acc[k]);
    }
    CHECK(acc[0] > 0.6);
    CHECK(acc[1] <= acc[0] + 0.01);
    CHECK(acc[2] < acc[0]);
    CHECK(acc[3] < acc[2] - 0.01);
    CHECK(acc[4] < acc[3] - 0.02);
    CHECK(acc[4] < acc[0] - 0.15);
    tol_sim_free(sim);
    tol_mag_free(&mag);
    tol_stack_free(&s);
}

TEST(inverse_tolerances_lie_where_the_scan_crosses_1_and_5_points)
{
    d2_model m;
    d2_err e = {0};
    CHECK(model_load(quick_model(), &m, &e) == 0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "quick", "", &e) == 0);
    tol_config c;
    tol_config_default(&c);
    c.trials = 0;
    c.limit = 150;
    c.sensitivity = 0;
    c.inverse_draws = 2;
    CHECK(tol_config_set(&c, "lateral_px", 1, &e) == 0);
    tol_report rep;
    CHECK(tol_run(&c, &s, 1, mnist(), pool2, NULL, &rep, &e) == 0);
    const tol_result *r = &rep.res[0];
    CHECK(r->ninv == 1);
    const tol_inverse *v = &r->inv[0];
    printf("  lateral: -1 point at %.3f mm, -5 points at %.3f mm (%d points)\n", v->at1, v->at5,
           v->npts);
    CHECK(isfinite(v->at1) && isfinite(v->at5) && v->at1 < v->at5);
    /* Each threshold sits between the last scan point above it and the first
     * one below (nominal minus the loss). */
    const double loss[2] = {0.01, 0.05}, at[2] = {v->at1, v->at5};
    for (int k = 0; k < 2; k++) {
        double below = INFINITY, above = 0;
        for (int i = 0; i < v->npts; i++) {
            double f = v->pts[i].factor * v->ref, l = r->nominal - v->pts[i].mean;
            if (l >= loss[k] - 1e-12) below = fmin(below, f);
        }
        for (int i = 0; i < v->npts; i++) {
            double f = v->pts[i].factor * v->ref, l = r->nominal - v->pts[i].mean;
            if (f < below && l < loss[k]) above = fmax(above, f);
        }
        CHECK(at[k] >= above - 1e-12 && at[k] <= below + 1e-12);
        CHECK(below - above <= v->ref); /* bisection narrowed the bracket */
    }
    int sorted = 1;
    for (int i = 1; i < v->npts; i++) sorted &= v->pts[i - 1].factor < v->pts[i].factor;
    CHECK(sorted);
    tol_report_free(&rep);
    tol_stack_free(&s);
}

TEST(index_error_on_flat_layers_changes_nothing_and_kappa_scales_the_energy)
{
    /* Layers of uniform thickness: an index error only adds a constant
     * phase per layer, a kappa error multiplies every layer's amplitude by
     * exp(-2 pi dkappa T / lambda): energies by its square per layer. */
    d2_model m;
    d2_err e = {0};
    random_model(&m, 32, 2, 41, 1);
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 32 * 32; i++) m.phase[l][i] = 1.0f;
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "flat", "", &e) == 0);
    size_t cnt = (size_t)IMAGES * s.m.g.ndet;
    float *e0 = malloc(cnt * sizeof(float)), *e1 = malloc(cnt * sizeof(float));
    tol_mag mag = zero_mag();
    tol_energies(&s, &mag, 1, NULL, IMAGES, e0, pool2);
    tol_config c;
    tol_config_default(&c);
    CHECK(tol_config_set(&c, "index_error", 0.05, &e) == 0);
    CHECK(tol_config_set(&c, "kappa_error", 0.01, &e) == 0);
    CHECK(tol_bind(&c, &s, &mag, &e) == 0);
    tol_draw d;
    memset(&d, 0, sizeof d);
    d.u[TOL_INDEX][0][0] = 1;
    tol_energies(&s, &mag, 1, &d, IMAGES, e1, pool2);
    double worst = 0;
    for (size_t i = 0; i < cnt; i++) worst = fmax(worst, fabs(e1[i] - e0[i]) / (e0[i] + 1e-9));
    CHECK(worst < 1e-4);
    d.u[TOL_INDEX][0][0] = 0;
    d.u[TOL_KAPPA][0][0] = 1;
    tol_energies(&s, &mag, 1, &d, IMAGES, e1, pool2);
    double T = s.height_mm[0][0], lam = s.m.g.wavelength_mm;
    double want = pow(exp(-2 * M_PI * 0.01 * T / lam), 2 * 2);
    worst = 0;
    for (size_t i = 0; i < cnt; i++)
        if (e0[i] > 1e-6) worst = fmax(worst, fabs(e1[i] / e0[i] - want));
    CHECK(worst < 1e-4);
    free(e0);
    free(e1);
    tol_mag_free(&mag);
    tol_stack_free(&s);
}

TEST(kappa_error_does_not_apply_to_a_phase_only_model)
{
    d2_model m;
    d2_err e = {0};
    random_model(&m, 32, 2, 43, 0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "phase", "", &e) == 0);
    tol_config c;
    tol_config_default(&c);
    CHECK(tol_config_set(&c, "kappa_error", 0.01, &e) == 0);
    tol_mag mag;
    CHECK(tol_bind(&c, &s, &mag, &e) == 0);
    CHECK(!mag.on[TOL_KAPPA]);
    tol_mag_free(&mag);
    tol_stack_free(&s);
}

TEST(detector_shift_by_a_whole_pixel_equals_moved_detectors)
{
    d2_model m, moved;
    d2_err e = {0};
    random_model(&m, 32, 2, 51, 0);
    copy_model(&moved, &m);
    for (int k = 0; k < moved.g.ndet; k++) {
        moved.g.det_x_mm[k] += 0.5; /* one pixel */
        moved.g.det_y_mm[k] -= 1.0; /* two pixels */
    }
    double acc0;
    float *want = eval_energies(&moved, IMAGES, &acc0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "random", "", &e) == 0);
    tol_config c;
    tol_config_default(&c);
    CHECK(tol_config_set(&c, "detector_shift_px", 2, &e) == 0);
    tol_mag mag;
    CHECK(tol_bind(&c, &s, &mag, &e) == 0);
    tol_draw d;
    memset(&d, 0, sizeof d);
    d.u[TOL_DET_SHIFT][0][0] = 0.5;
    d.u[TOL_DET_SHIFT][0][1] = -1;
    size_t cnt = (size_t)IMAGES * s.m.g.ndet;
    float *got = malloc(cnt * sizeof(float));
    tol_energies(&s, &mag, 1, &d, IMAGES, got, pool2);
    double worst = 0;
    for (size_t i = 0; i < cnt; i++) worst = fmax(worst, fabs(got[i] - want[i]) / (want[i] + 1e-9));
    CHECK(worst < 1e-5);
    /* The energies are linear in the footprint weights: half a pixel is the
     * mean of no shift and one pixel (x only). */
    float *one = malloc(cnt * sizeof(float)), *half = malloc(cnt * sizeof(float)),
          *none = malloc(cnt * sizeof(float));
    d.u[TOL_DET_SHIFT][0][0] = 0.5;
    d.u[TOL_DET_SHIFT][0][1] = 0;
    tol_energies(&s, &mag, 1, &d, IMAGES, one, pool2);
    d.u[TOL_DET_SHIFT][0][0] = 0.25;
    tol_energies(&s, &mag, 1, &d, IMAGES, half, pool2);
    tol_mag zm = zero_mag();
    tol_energies(&s, &zm, 1, NULL, IMAGES, none, pool2);
    worst = 0;
    double moved_most = 0;
    for (size_t i = 0; i < cnt; i++) {
        worst = fmax(worst, fabs(half[i] - 0.5 * (none[i] + one[i])) / (none[i] + 1e-9));
        moved_most = fmax(moved_most, fabs(one[i] - none[i]) / (none[i] + 1e-9));
    }
    CHECK(worst < 1e-5);
    CHECK(moved_most > 1e-2);
    free(one);
    free(half);
    free(none);
    free(got);
    free(want);
    tol_mag_free(&mag);
    model_free(&moved);
    tol_stack_free(&s);
}

TEST(pitch_scale_moves_a_feature_in_proportion_to_its_distance_from_the_centre)
{
    int n = 41;
    float complex *t = calloc((size_t)n * n, sizeof *t), *out = malloc(sizeof *out * n * n);
    t[20 * n + 30] = 1; /* 10 pixels right of the centre pixel (20, 20) */
    layer_pose p = {0};
    perturb_transform_scaled(t, n, 0.4, &p, 1.2, out);
    /* Now at 12 pixels: column 32, weight 1 (exact). */
    CHECK_NEAR(crealf(out[20 * n + 32]), 1.0, 1e-6);
    int peak = 0;
    for (int i = 0; i < n * n; i++)
        if (crealf(out[i]) > crealf(out[peak])) peak = i;
    CHECK(peak == 20 * n + 32);
    CHECK(crealf(out[20 * n + 30]) == 0); /* the old place is empty */
    /* Scale 1 is exactly the plain transform. */
    layer_pose q = {0.13, -0.31, 0, 3};
    float complex *a = malloc(sizeof *a * n * n);
    for (int i = 0; i < n * n; i++) t[i] = (float)(i % 5) + I * (float)(i % 3);
    perturb_transform(t, n, 0.4, &q, a);
    perturb_transform_scaled(t, n, 0.4, &q, 1.0, out);
    CHECK(memcmp(a, out, sizeof *a * n * n) == 0);
    free(a);
    free(t);
    free(out);
}

TEST(height_error_fields_have_the_rms_of_their_distribution)
{
    d2_model m;
    d2_err e = {0};
    random_model(&m, 64, 1, 61, 0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "f", "", &e) == 0);
    const struct {
        const char *key, *dist;
        double want; /* RMS / D */
        double tol;
    } cases[] = {
        {"height_error_mm", "uniform", 1 / sqrt(3.0), 0.02},
        {"height_error_mm", "normal", 0.5 * 0.8796, 0.02},
        {"height_error_correlated_mm", "uniform", 1 / sqrt(3.0), 0.12},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        tol_config c;
        tol_config_default(&c);
        c.correlation_mm = 2.0;
        CHECK(tol_config_set(&c, cases[k].key, 0.01, &e) == 0);
        for (int j = 0; j < TOL_NKINDS; j++)
            c.item[j].dist = strcmp(cases[k].dist, "normal") ? TOL_UNIFORM : TOL_NORMAL;
        tol_mag mag;
        CHECK(tol_bind(&c, &s, &mag, &e) == 0);
        tol_sim *sim = tol_sim_new(&s, 1, &e);
        tol_draw d;
        tol_draw_make(&d, &mag, 1, 9, 1, -1);
        double a, vec[4];
        CHECK(tol_sim_eval(sim, &mag, 1, &d, 9, mnist(), 4, pool1, 0, &a, NULL, vec, &e) == 0);
        printf("  %s %s: RMS %.4f mm for D = 0.01 mm (expected %.4f)\n", cases[k].key,
               cases[k].dist, vec[0], 0.01 * cases[k].want);
        CHECK_NEAR(vec[0] / 0.01, cases[k].want, cases[k].tol);
        tol_sim_free(sim);
        tol_mag_free(&mag);
    }
    tol_stack_free(&s);
}

/* A small run with every random kind, as JSON text without timings. */
static char *run_json(d2_pool *pool, uint64_t seed, const tol_stack *s)
{
    tol_config c;
    d2_err e = {0};
    tol_config_default(&c);
    c.seed = seed;
    c.trials = 6;
    c.limit = 40;
    c.inverse_draws = 2;
    c.nscales = 2;
    c.scales[0] = 0.5;
    c.scales[1] = 1;
    c.correlation_mm = 2;
    CHECK(tol_config_set(&c, "lateral_mm", 0.3, &e) == 0);
    CHECK(tol_config_set(&c, "axial_mm", 1.0, &e) == 0);
    CHECK(tol_config_set(&c, "height_error_correlated_mm", 0.03, &e) == 0);
    CHECK(tol_config_set(&c, "detector_noise_relative", 0.5, &e) == 0);
    CHECK(tol_config_set(&c, "wavelength_error_mm", 0.01, &e) == 0);
    tol_report rep;
    int rc = tol_run(&c, s, 1, mnist(), pool, NULL, &rep, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    cJSON *j = tol_report_json(&rep);
    cJSON_DeleteItemFromObject(j, "seconds");
    cJSON_DeleteItemFromObject(j, "threads");
    cJSON *ms = cJSON_GetObjectItem(j, "models"), *it;
    cJSON_ArrayForEach(it, ms) cJSON_DeleteItemFromObject(it, "seconds");
    char *txt = cJSON_Print(j);
    cJSON_Delete(j);
    tol_report_free(&rep);
    return txt;
}

TEST(same_seed_gives_the_same_report_on_any_thread_count)
{
    d2_model m;
    d2_err e = {0};
    random_model(&m, 32, 2, 71, 0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "r", "", &e) == 0);
    char *a = run_json(pool2, 5, &s), *b = run_json(pool1, 5, &s), *c = run_json(pool2, 6, &s);
    CHECK(a && b && !strcmp(a, b));
    CHECK(a && c && strcmp(a, c) != 0);
    free(a);
    free(b);
    free(c);
    tol_stack_free(&s);
}

TEST(report_has_sorted_sensitivity_inverse_and_monte_carlo_files)
{
    d2_model m;
    d2_err e = {0};
    random_model(&m, 32, 2, 81, 0);
    tol_stack st[2];
    CHECK(tol_stack_init(&st[0], &m, NULL, "a", "", &e) == 0);
    random_model(&m, 32, 2, 82, 0);
    CHECK(tol_stack_init(&st[1], &m, NULL, "b", "", &e) == 0);
    tol_config c;
    tol_config_default(&c);
    c.trials = 5;
    c.limit = 30;
    c.inverse_draws = 1;
    c.nscales = 2;
    c.scales[0] = 1;
    c.scales[1] = 2;
    CHECK(tol_config_set(&c, "lateral_mm", 0.4, &e) == 0);
    CHECK(tol_config_set(&c, "rotation_deg", 1, &e) == 0);
    CHECK(tol_config_set(&c, "quantize_levels", 4, &e) == 0);
    tol_report rep;
    CHECK(tol_run(&c, st, 2, mnist(), pool2, NULL, &rep, &e) == 0);
    const tol_result *r = &rep.res[0];
    /* 2 layers x (x, y) lateral + 2 rotations + 1 quantisation. */
    CHECK(r->nsens == 7);
    int sorted = 1;
    for (int i = 1; i < r->nsens; i++) sorted &= r->sens[i - 1].change <= r->sens[i].change;
    CHECK(sorted);
    CHECK(r->ninv == 3);
    CHECK(r->nmc == 2 && r->mc[0].trials == 5);
    CHECK(r->spec_from_nominal && fabs(r->spec - (r->nominal - 0.01)) < 1e-12);
    CHECK(r->mc[0].min <= r->mc[0].p90 && r->mc[0].p90 <= r->mc[0].p50 &&
          r->mc[0].p50 <= r->mc[0].p10 && r->mc[0].p10 <= r->mc[0].max);
    CHECK(r->mc[0].yield_lo <= r->mc[0].yield && r->mc[0].yield <= r->mc[0].yield_hi);
    CHECK(r->nvec == 2 * 2 + 2 + 1);
    char dir[700];
    snprintf(dir, sizeof dir, "%s/report", t_tmpdir());
    int rc = tol_write(&rep, dir, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    const char *files[] = {"report.json", "sensitivity.csv", "inverse.csv", "scan.csv",
                           "montecarlo.csv", "montecarlo_summary.csv", "compare.csv",
                           "scan_lateral.png", "scan_rotation.png", "scan_quantize.png",
                           "yield.png", "compare.png"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char p[800];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        int ok = stat(p, &sb) == 0 && sb.st_size > 100;
        if (!ok) printf("  missing or empty: %s\n", p);
        CHECK(ok);
    }
    /* montecarlo.csv: a header and one line per model, scale and trial. */
    char p[800], *txt = NULL;
    size_t len;
    snprintf(p, sizeof p, "%s/montecarlo.csv", dir);
    CHECK(d2_read_file(p, 1 << 20, &txt, &len, &e) == 0);
    int lines = 0;
    for (size_t i = 0; txt && i < len; i++) lines += txt[i] == '\n';
    CHECK(lines == 1 + 2 * 2 * 5);
    CHECK(txt && strstr(txt, "L2_rotation_deg"));
    free(txt);
    tol_report_free(&rep);
    tol_stack_free(&st[0]);
    tol_stack_free(&st[1]);
}

/* Binomial upper tail P(X >= k), X ~ Bin(n, p), summed exactly. */
static double binom_tail(int k, int n, double p)
{
    long double s = 0, c = 1; /* C(n, 0) */
    for (int j = 0; j <= n; j++) {
        if (j >= k) s += c * powl(p, j) * powl(1 - p, n - j);
        c = c * (n - j) / (j + 1);
    }
    return (double)s;
}

TEST(incomplete_beta_matches_binomial_sums_and_the_arcsine_law)
{
    /* I_x(a, n - a + 1) = P(Bin(n, x) >= a). */
    const int ns[] = {1, 5, 20, 200};
    const double xs[] = {0.01, 0.3, 0.5, 0.77, 0.99};
    double worst = 0;
    for (int i = 0; i < 4; i++)
        for (int a = 1; a <= ns[i]; a += ns[i] > 20 ? 37 : 1)
            for (int k = 0; k < 5; k++)
                worst = fmax(worst, fabs(tol_betainc(a, ns[i] - a + 1, xs[k]) -
                                         binom_tail(a, ns[i], xs[k])));
    CHECK(worst < 1e-12);
    /* I_x(1/2, 1/2) = (2 / pi) asin(sqrt(x)). */
    for (double x = 0.05; x < 1; x += 0.1)
        CHECK_NEAR(tol_betainc(0.5, 0.5, x), 2 / M_PI * asin(sqrt(x)), 1e-12);
    /* The inverse round-trips. */
    for (double p = 0.001; p < 1; p += 0.111)
        CHECK_NEAR(tol_betainc(2.5, 7.25, tol_betainc_inv(2.5, 7.25, p)), p, 1e-12);
    CHECK(tol_betainc(3, 4, 0) == 0 && tol_betainc(3, 4, 1) == 1);
}

TEST(clopper_pearson_matches_known_intervals)
{
    /* R's binom.test(k, n)$conf.int (95 %). */
    const struct {
        int k, n;
        double lo, hi;
    } cases[] = {
        {5, 10, 0.1870860284, 0.8129139716},  {3, 20, 0.0320709372, 0.3789268265},
        {0, 10, 0.0, 0.3084971078},           {10, 10, 0.6915028922, 1.0},
        {180, 200, 0.8497872121, 0.9378406337}, {95, 100, 0.8871650889, 0.9835681208},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        double lo, hi;
        tol_clopper_pearson(cases[i].k, cases[i].n, 0.95, &lo, &hi);
        CHECK_NEAR(lo, cases[i].lo, 1e-9);
        CHECK_NEAR(hi, cases[i].hi, 1e-9);
    }
    /* Closed forms at the ends: (alpha / 2)^(1 / n). */
    double lo, hi;
    tol_clopper_pearson(0, 200, 0.9, &lo, &hi);
    CHECK(lo == 0);
    CHECK_NEAR(hi, 1 - pow(0.05, 1.0 / 200), 1e-12);
}

static int read_cfg(const char *text, tol_config *c, d2_err *e)
{
    char path[700];
    snprintf(path, sizeof path, "%s/tol.json", t_tmpdir());
    t_write_text(path, text);
    cJSON *root = NULL;
    tol_config_default(c);
    int rc = cfg_load(path, &root, e);
    if (!rc) rc = tol_config_read(path, root, c, e);
    cJSON_Delete(root);
    return rc;
}

TEST(bad_config_keys_fail_naming_the_key)
{
    tol_config c;
    d2_err e = {0};
    CHECK(read_cfg("{\"lateral_mm\": 0.1, \"axial_mm\": [0, 1, 2], \"distribution\": \"normal\","
                   " \"distributions\": {\"axial\": \"uniform\"}, \"sweep_scales\": [0.5, 1],"
                   " \"spec_accuracy_percent\": 90, \"quantize_levels\": 8}",
                   &c, &e) == 0);
    CHECK(c.item[TOL_AXIAL].nval == 3 && c.item[TOL_AXIAL].val[2] == 2);
    CHECK(c.item[TOL_LATERAL].dist == TOL_NORMAL && c.item[TOL_AXIAL].dist == TOL_UNIFORM);
    CHECK_NEAR(c.spec, 0.9, 1e-12);
    CHECK_ERR(read_cfg("{\"lateral\": 0.1}", &c, &e), e, D2_EINPUT, "unknown key \"lateral\"");
    CHECK_ERR(read_cfg("{\"lateral_mm\": 0.1, \"lateral_px\": 1}", &c, &e), e, D2_EINPUT,
              "both set");
    CHECK_ERR(read_cfg("{\"lateral_mm\": -0.1}", &c, &e), e, D2_EINPUT, "lateral_mm");
    CHECK_ERR(read_cfg("{\"index_error\": [0.1, 0.2]}", &c, &e), e, D2_EINPUT, "index_error");
    CHECK_ERR(read_cfg("{\"quantize_levels\": 1}", &c, &e), e, D2_EINPUT, "quantize_levels");
    CHECK_ERR(read_cfg("{\"quantize\": \"yes\"}", &c, &e), e, D2_EINPUT, "\"quantize\"");
    CHECK_ERR(read_cfg("{\"quantize\": \"printer\", \"quantize_levels\": 4}", &c, &e), e,
              D2_EINPUT, "both set");
    CHECK_ERR(read_cfg("{\"height_error_correlated_mm\": 0.01}", &c, &e), e, D2_EINPUT,
              "correlation_length_mm");
    CHECK_ERR(read_cfg("{\"distributions\": {\"lateral\": \"gauss\"}}", &c, &e), e, D2_EINPUT,
              "distributions.lateral");
    CHECK_ERR(read_cfg("{\"distributions\": {\"tilt\": \"normal\"}}", &c, &e), e, D2_EINPUT,
              "tilt");
    CHECK_ERR(read_cfg("{\"trials\": 1000000}", &c, &e), e, D2_EINPUT, "trials");
    CHECK_ERR(read_cfg("{\"input_mask_png\": \"../mask.png\"}", &c, &e), e, D2_EINPUT,
              "input_mask_png");
    CHECK_ERR(read_cfg("[1, 2]", &c, &e), e, D2_EINPUT, "JSON object");
    CHECK_ERR(tol_config_set(&c, "tilt_deg", 1, &e), e, D2_EUSAGE, "tilt_deg");
}

TEST(settings_a_stack_cannot_take_are_refused_when_bound)
{
    d2_model m;
    d2_err e = {0};
    random_model(&m, 32, 3, 91, 0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "three", "", &e) == 0);
    tol_config c;
    tol_mag mag;
    CHECK(read_cfg("{\"axial_mm\": [1, 2]}", &c, &e) == 0);
    CHECK_ERR(tol_bind(&c, &s, &mag, &e), e, D2_EINPUT, "3 layers");
    CHECK(read_cfg("{\"quantize\": \"printer\"}", &c, &e) == 0);
    CHECK_ERR(tol_bind(&c, &s, &mag, &e), e, D2_EINPUT, "Z step");
    CHECK(read_cfg("{\"axial_mm\": 7}", &c, &e) == 0);
    CHECK_ERR(tol_bind(&c, &s, &mag, &e), e, D2_EINPUT, "touch");
    CHECK(read_cfg("{\"wavelength_error_mm\": 0.5}", &c, &e) == 0);
    CHECK_ERR(tol_bind(&c, &s, &mag, &e), e, D2_EINPUT, "half");
    /* A mask must be the n x n input plane. */
    char png[700];
    snprintf(png, sizeof png, "%s/mask.png", t_tmpdir());
    uint8_t px[16 * 16];
    memset(px, 255, sizeof px);
    CHECK(img_write_gray8(png, 16, 16, px, &e) == 0);
    tol_config_default(&c);
    snprintf(c.mask_png, sizeof c.mask_png, "%s", png);
    CHECK_ERR(tol_bind(&c, &s, &mag, &e), e, D2_EINPUT, "32 x 32");
    tol_stack_free(&s);
}

TEST(an_open_mask_changes_nothing_and_a_half_mask_quarters_the_power)
{
    d2_model m;
    d2_err e = {0};
    random_model(&m, 32, 2, 95, 0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "m", "", &e) == 0);
    char png[700];
    snprintf(png, sizeof png, "%s/open.png", t_tmpdir());
    uint8_t px[32 * 32];
    memset(px, 255, sizeof px);
    CHECK(img_write_gray8(png, 32, 32, px, &e) == 0);
    tol_config c;
    tol_config_default(&c);
    snprintf(c.mask_png, sizeof c.mask_png, "%s", png);
    tol_mag mag;
    CHECK(tol_bind(&c, &s, &mag, &e) == 0);
    tol_draw d;
    tol_draw_make(&d, &mag, 2, 1, 1, -1);
    CHECK(d.u[TOL_MASK][0][0] == 1);
    size_t cnt = (size_t)IMAGES * s.m.g.ndet;
    float *a = malloc(cnt * sizeof(float)), *b = malloc(cnt * sizeof(float));
    tol_mag zm = zero_mag();
    tol_energies(&s, &zm, 1, NULL, IMAGES, a, pool2);
    tol_energies(&s, &mag, 1, &d, IMAGES, b, pool2);
    CHECK(memcmp(a, b, cnt * sizeof(float)) == 0);
    /* Half transmission everywhere: the same image at a quarter of the power. */
    for (int i = 0; i < 32 * 32; i++) mag.mask[i] = 0.5f;
    tol_energies(&s, &mag, 1, &d, IMAGES, b, pool2);
    double worst = 0;
    for (size_t i = 0; i < cnt; i++)
        if (a[i] > 1e-6) worst = fmax(worst, fabs(b[i] / a[i] - 0.25));
    CHECK(worst < 1e-4);
    free(a);
    free(b);
    tol_mag_free(&mag);
    tol_stack_free(&s);
}

/* The mask stage's stencil of a test digit (what d2fab tolerance plugs in). */
static int stencil_of(void *ctx, const d2_geom *g, const unsigned char *img, int rows, int cols,
                      double t, double minf, unsigned char *open)
{
    int *calls = ctx;
    __atomic_add_fetch(calls, 1, __ATOMIC_RELAXED);
    d2_err e = {0};
    mask_map mm = {0};
    mask_stats st;
    float *f = malloc(sizeof(float) * rows * cols);
    for (int i = 0; i < rows * cols; i++) f[i] = img[i] / 255.0f;
    int rc = mask_map_alloc(&mm, g->n, g->n, &e);
    if (!rc) rc = mask_binarise(g, f, rows, cols, t, &mm, "digit", &e);
    if (!rc) rc = mask_make_printable(&mm, mask_min_px(minf, g->pitch_mm), &st, "digit", &e);
    if (!rc) memcpy(open, mm.open, (size_t)g->n * g->n);
    mask_map_free(&mm);
    free(f);
    return rc;
}

TEST(stencil_input_reads_every_digit_through_its_printable_stencil)
{
    d2_model m;
    d2_err e = {0};
    random_model(&m, 48, 2, 97, 0);
    tol_stack s;
    CHECK(tol_stack_init(&s, &m, NULL, "m", "", &e) == 0);
    int calls = 0;
    tol_config c;
    tol_config_default(&c);
    c.stencil = 1;
    c.stencil_fn = stencil_of;
    c.stencil_ctx = &calls;
    c.stencil_min_feature_mm = 1.0; /* 2 pixels: bridges and closed slits */
    tol_mag mag;
    CHECK(tol_bind(&c, &s, &mag, &e) == 0);
    tol_draw d;
    tol_draw_make(&d, &mag, 2, 1, 1, -1);
    size_t cnt = (size_t)IMAGES * s.m.g.ndet;
    float *got = malloc(cnt * sizeof(float));
    tol_sim *sim = tol_sim_new(&s, 2, &e);
    double acc;
    CHECK(tol_sim_eval(sim, &mag, 1, &d, 1, mnist(), IMAGES, pool2, 0, &acc, got, NULL, &e) == 0);
    CHECK(calls == IMAGES);
    /* Made once: a second evaluation reuses them. */
    CHECK(tol_sim_eval(sim, &mag, 1, &d, 1, mnist(), IMAGES, pool2, 0, &acc, NULL, NULL, &e) == 0);
    CHECK(calls == IMAGES);
    /* The same energies as the network reading each stencil directly. */
    d2_net *net = net_new(&s.m.g, 1, &e);
    net_set_model(net, &s.m);
    int n = 48, same = 1, correct = 0, differs = 0, bad = 0;
    unsigned char open[48 * 48];
    float in[48 * 48], det[D2_MAX_DET], plain[D2_MAX_DET];
    for (int i = 0; i < IMAGES; i++) {
        const unsigned char *img = mnist()->images + 784 * i;
        if (stencil_of(&calls, &s.m.g, img, 28, 28, 0.5, 1.0, open)) {
            /* No printable stencil: misread, no energies. */
            bad++;
            for (int k = 0; k < s.m.g.ndet; k++) same &= got[(size_t)i * s.m.g.ndet + k] == 0;
            continue;
        }
        for (int k = 0; k < n * n; k++) in[k] = open[k] ? 1.0f : 0.0f;
        net_infer(net, in, det, NULL, 0);
        same &= !memcmp(det, got + (size_t)i * s.m.g.ndet, sizeof(float) * s.m.g.ndet);
        correct += det_predict(&s.m.g, det) == mnist()->labels[i];
        input_from_u8(&s.m.g, img, 28, 28, in);
        net_infer(net, in, plain, NULL, 0);
        differs |= memcmp(det, plain, sizeof det) != 0;
    }
    CHECK(same);
    CHECK(differs);
    CHECK(acc == (double)correct / IMAGES);
    CHECK(tol_sim_unprintable(sim) == bad);
    CHECK(bad < IMAGES / 4);
    net_free(net);
    tol_sim_free(sim);
    free(got);
    tol_mag_free(&mag);
    tol_stack_free(&s);
}

TEST(a_million_trials_is_refused_up_front_with_the_estimate)
{
    tol_config c;
    d2_err e = {0};
    tol_config_default(&c);
    c.trials = 1000000;
    CHECK(tol_config_set(&c, "lateral_mm", 0.1, &e) == 0);
    d2_geom g;
    geom_default(&g);
    CHECK_ERR(tol_check_limits(&c, 1, 10000, &g, 2, &e), e, D2_EINPUT, "limit is 100000 trials");
    CHECK(strstr(e.msg, "inferences") && strstr(e.msg, "days"));
    c.trials = 50000;
    CHECK_ERR(tol_check_limits(&c, 8, 10000, &g, 2, &e), e, D2_EINPUT, "limit is 2e+09");
    c.trials = 200;
    CHECK(tol_check_limits(&c, 1, 10000, &g, 2, &e) == 0);
}

int main(void)
{
    d2_err e = {0};
    pool2 = d2_pool_new(2, &e);
    pool1 = d2_pool_new(1, &e);
    if (!pool1 || !pool2) return 3;
    RUN(zero_perturbation_reproduces_eval_exactly);
    RUN(export_stack_nominal_equals_eval_of_the_export_and_requantising_changes_nothing);
    RUN(tolerance_of_an_export_uses_thick_plates_unless_told_thin);
    RUN(whole_pixel_shift_equals_the_rolled_layer);
    RUN(shifted_trained_model_matches_eval_of_the_rolled_layer_files);
    RUN(absolute_detector_noise_is_relative_noise_times_the_detector_energy);
    RUN(accuracy_falls_as_the_lateral_shift_grows_past_a_pixel);
    RUN(inverse_tolerances_lie_where_the_scan_crosses_1_and_5_points);
    RUN(index_error_on_flat_layers_changes_nothing_and_kappa_scales_the_energy);
    RUN(kappa_error_does_not_apply_to_a_phase_only_model);
    RUN(detector_shift_by_a_whole_pixel_equals_moved_detectors);
    RUN(pitch_scale_moves_a_feature_in_proportion_to_its_distance_from_the_centre);
    RUN(height_error_fields_have_the_rms_of_their_distribution);
    RUN(same_seed_gives_the_same_report_on_any_thread_count);
    RUN(report_has_sorted_sensitivity_inverse_and_monte_carlo_files);
    RUN(incomplete_beta_matches_binomial_sums_and_the_arcsine_law);
    RUN(clopper_pearson_matches_known_intervals);
    RUN(bad_config_keys_fail_naming_the_key);
    RUN(settings_a_stack_cannot_take_are_refused_when_bound);
    RUN(an_open_mask_changes_nothing_and_a_half_mask_quarters_the_power);
    RUN(stencil_input_reads_every_digit_through_its_printable_stencil);
    RUN(a_million_trials_is_refused_up_front_with_the_estimate);
    dataset_free(&test_set);
    d2_pool_free(pool1);
    d2_pool_free(pool2);
    return t_finish();
}
