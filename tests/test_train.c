/* The adjoint gradient against finite differences, configs and
 * a short real training run on MNIST. */
#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/idx.h"
#include "core/image.h"
#include "core/npy.h"
#include "core/util.h"
#include "tests/testlib.h"
#include "optics/optics.h"
#include "optics/simd.h"
#include "train/train.h"

static void small_geom(d2_geom *g, int coupled)
{
    geom_default(g);
    g->n = 24;
    g->layers = 2;
    g->pitch_mm = 0.4;
    for (int k = 0; k <= g->layers; k++) g->gap_mm[k] = 4.0;
    g->aperture_mm = 6.0;
    geom_layout_343(g, 1.6, 2.4, 2.4);
    g->coupled = coupled;
}

/* The efficiency weight of the loss the gradient checks use. */
static double check_effw;

static double loss_at(d2_net *net, float **ph, const float *in, int label, d2_loss loss)
{
    float det[D2_MAX_DET];
    for (int l = 0; l < net_geom(net)->layers; l++) net_set_phase(net, l, ph[l], NULL);
    net_infer(net, in, det, NULL, 0);
    return net_loss(net_geom(net), det, label, loss, 0.1, check_effw, NULL);
}

/* scheme D2_DETECT_DIFF: 10 pairs of 0.8 mm detectors; effw: the loss's
 * efficiency weight; overlap (single scheme): detectors 3.2 mm wide 2.4 mm
 * apart, so neighbours share pixels (the adjoint then starts from a copy of
 * the output, not in place). */
static void gradient_check_scheme(int coupled, d2_loss loss, int scheme, double effw, int overlap)
{
    d2_geom g;
    small_geom(&g, coupled);
    if (overlap) g.det_size_mm = 3.2;
    if (scheme == D2_DETECT_DIFF) {
        geom_layout_343(&g, 1.2, 2.8, 2.8);
        geom_layout_pairs(&g, 0, 1.4);
    }
    /* overlapping detectors are refused by geom_validate (they are in mm),
     * yet squares that touch in pixels do occur: test the adjoint there */
    if (!overlap) CHECK(geom_validate(&g, "test", NULL) == 0);
    check_effw = effw;
    d2_err e = {0};
    d2_net *net = net_new(&g, 1, &e);
    CHECK(net != NULL);
    if (!net) return;
    net_set_efficiency_weight(net, effw);
    int nn = g.n * g.n;
    d2_rng r;
    d2_rng_seed(&r, 7);
    float *ph[2], *gr[2], *in = malloc(sizeof(float) * nn);
    float complex *gt[2];
    for (int l = 0; l < 2; l++) {
        ph[l] = malloc(sizeof(float) * nn);
        gr[l] = calloc(nn, sizeof(float));
        gt[l] = calloc(nn, sizeof(float complex));
        for (int i = 0; i < nn; i++) ph[l][i] = (float)(2 * M_PI * d2_rng_uniform(&r));
    }
    for (int i = 0; i < nn; i++) in[i] = (float)d2_rng_uniform(&r);
    for (int l = 0; l < 2; l++) net_set_phase(net, l, ph[l], NULL);
    float det[D2_MAX_DET];
    net_grad(net, in, 3, loss, 0.1, gt, det, 0);
    for (int l = 0; l < 2; l++)
        net_phase_grad(gt[l], net_transmission(net, l), net_phase_beta(&g), nn, gr[l]);
    /* Directional derivatives along random directions over all pixels (a
     * single pixel moves the loss too little for float fields), then the
     * pixels with the largest gradients one by one. */
    int worst = 0, checked = 0;
    double maxg = 0;
    float *dir[2];
    for (int l = 0; l < 2; l++) dir[l] = malloc(sizeof(float) * nn);
    for (int trial = 0; trial < 4; trial++) {
        double dot = 0;
        for (int l = 0; l < 2; l++)
            for (int i = 0; i < nn; i++) {
                dir[l][i] = (float)(2 * d2_rng_uniform(&r) - 1);
                dot += (double)dir[l][i] * gr[l][i];
            }
        double h = 1e-3, lp, lm;
        for (int l = 0; l < 2; l++)
            for (int i = 0; i < nn; i++) ph[l][i] += (float)h * dir[l][i];
        lp = loss_at(net, ph, in, 3, loss);
        for (int l = 0; l < 2; l++)
            for (int i = 0; i < nn; i++) ph[l][i] -= 2 * (float)h * dir[l][i];
        lm = loss_at(net, ph, in, 3, loss);
        for (int l = 0; l < 2; l++)
            for (int i = 0; i < nn; i++) ph[l][i] += (float)h * dir[l][i];
        double fd = (lp - lm) / (2 * h);
        if (fabs(fd - dot) > 1e-2 * fabs(dot) + 1e-6) {
            printf("  direction %d: adjoint %.6g, finite difference %.6g\n", trial, dot, fd);
            worst++;
        }
        checked++;
    }
    for (int l = 0; l < 2; l++) {
        int best = 0;
        for (int i = 0; i < nn; i++)
            if (fabs(gr[l][i]) > fabs(gr[l][best])) best = i;
        maxg = fmax(maxg, fabs(gr[l][best]));
        float keep = ph[l][best];
        double h = 1e-2;
        ph[l][best] = keep + (float)h;
        double lp = loss_at(net, ph, in, 3, loss);
        ph[l][best] = keep - (float)h;
        double lm = loss_at(net, ph, in, 3, loss);
        ph[l][best] = keep;
        double fd = (lp - lm) / (2 * h);
        if (fabs(fd - gr[l][best]) > 2e-2 * fabs(fd) + 1e-6) {
            printf("  layer %d pixel %d: adjoint %.6g, finite difference %.6g\n", l, best,
                   gr[l][best], fd);
            worst++;
        }
        checked++;
    }
    CHECK(worst == 0);
    CHECK(checked == 6);
    CHECK(maxg > 1e-4);
    for (int l = 0; l < 2; l++) free(dir[l]);
    for (int l = 0; l < 2; l++) {
        free(ph[l]);
        free(gr[l]);
        free(gt[l]);
    }
    free(in);
    net_free(net);
}

static void gradient_check(int coupled, d2_loss loss, int overlap)
{
    gradient_check_scheme(coupled, loss, D2_DETECT_SINGLE, 0, overlap);
}

TEST(adjoint_gradient_matches_finite_differences_differential)
{
    gradient_check_scheme(0, LOSS_SOFTMAX, D2_DETECT_DIFF, 0, 0);
    gradient_check_scheme(1, LOSS_MSE, D2_DETECT_DIFF, 0, 0);
}

TEST(adjoint_gradient_matches_finite_differences_with_efficiency_term)
{
    gradient_check_scheme(0, LOSS_SOFTMAX, D2_DETECT_SINGLE, 5.0, 0);
    gradient_check_scheme(0, LOSS_SOFTMAX, D2_DETECT_DIFF, 5.0, 0);
}

TEST(adjoint_gradient_matches_finite_differences_phase_only_softmax)
{
    gradient_check(0, LOSS_SOFTMAX, 0);
}

TEST(adjoint_gradient_matches_finite_differences_overlapping_detectors)
{
    gradient_check(0, LOSS_SOFTMAX, 1);
}

TEST(adjoint_gradient_matches_finite_differences_material_coupled)
{
    gradient_check(1, LOSS_SOFTMAX, 0);
}

TEST(adjoint_gradient_matches_finite_differences_mse)
{
    gradient_check(0, LOSS_MSE, 0);
}

/* dL/dE of every scheme, loss and efficiency weight against central
 * differences of net_loss. */
TEST(loss_gradient_matches_finite_differences)
{
    float det[20] = {0.1f,  0.3f, 0.05f, 0.2f,  0.4f,  0.1f,  0.02f, 0.3f, 0.25f, 0.15f,
                     0.07f, 0.2f, 0.3f,  0.01f, 0.12f, 0.33f, 0.05f, 0.1f, 0.2f,  0.4f};
    d2_geom g;
    geom_default(&g);
    for (int scheme = 0; scheme < 2; scheme++)
        for (int kind = 0; kind < 2; kind++)
            for (int w = 0; w < 2; w++) {
                g.scheme = scheme;
                g.ndet = scheme ? 20 : 10;
                double gr[20], effw = w ? 0.7 : 0;
                net_loss(&g, det, 4, (d2_loss)kind, 0.1, effw, gr);
                for (int k = 0; k < g.ndet; k++) {
                    float keep = det[k];
                    det[k] = keep + 1e-3f;
                    double lp = net_loss(&g, det, 4, (d2_loss)kind, 0.1, effw, NULL);
                    det[k] = keep - 1e-3f;
                    double lm = net_loss(&g, det, 4, (d2_loss)kind, 0.1, effw, NULL);
                    det[k] = keep;
                    CHECK_NEAR(gr[k], (lp - lm) / 2e-3, 1e-2 * fabs(gr[k]) + 1e-3);
                }
            }
}

/* Differential scores, prediction and margin on hand-made energies. */
TEST(differential_scores_predict_and_margin)
{
    d2_geom g;
    geom_default(&g);
    geom_layout_343(&g, 6.4, 16, 16);
    geom_layout_pairs(&g, 0, 8);
    CHECK(g.ndet == 20 && geom_classes(&g) == 10 && g.scheme == D2_DETECT_DIFF);
    CHECK_NEAR(g.det_y_mm[10] - g.det_y_mm[0], 8, 1e-12);
    float det[20] = {0};
    /* class 2: + 0.3, - 0.1 -> 0.5; class 7: + 0.02, - 0.0 -> 1 (wins on
     * the ratio although it has less light) */
    det[2] = 0.3f, det[12] = 0.1f, det[7] = 0.02f, det[5] = 0.1f, det[15] = 0.3f;
    double s[10];
    det_scores(&g, det, s);
    CHECK_NEAR(s[2], 0.5, 1e-6);
    CHECK_NEAR(s[7], 1.0, 1e-6);
    CHECK_NEAR(s[5], -0.5, 1e-6);
    CHECK_NEAR(s[0], 0.0, 1e-12);
    CHECK(det_predict(&g, det) == 7);
    CHECK_NEAR(det_margin(&g, det), 0.5, 1e-6);
    CHECK_NEAR(det_total(&g, det), 0.82, 1e-6);
    char name[8];
    det_name(&g, 12, name, sizeof name);
    CHECK(strcmp(name, "2-") == 0);
    g.scheme = D2_DETECT_SINGLE;
    g.ndet = 10;
    CHECK(det_predict(&g, det) == 2);
}

TEST(energy_reaching_the_detector_plane_never_exceeds_the_input)
{
    d2_geom g;
    small_geom(&g, 1);
    d2_err e = {0};
    d2_net *net = net_new(&g, 1, &e);
    float *in = malloc(sizeof(float) * g.n * g.n), det[D2_MAX_DET];
    for (int i = 0; i < g.n * g.n; i++) in[i] = (i % 5) / 4.0f;
    double tot = net_infer(net, in, det, NULL, 0);
    double s = 0;
    for (int k = 0; k < g.ndet; k++) s += det[k];
    CHECK(tot <= 1.0 + 1e-4);
    CHECK(s <= tot + 1e-6);
    CHECK(s > 0);
    free(in);
    net_free(net);
}

/* The network's pruned propagation (rows skipped, batched column plans, the
 * dispatched product by H) against plain full 2-D propagations. */
TEST(network_forward_matches_full_2d_propagations)
{
    d2_geom g;
    small_geom(&g, 0);
    d2_err e = {0};
    d2_net *net = net_new(&g, 1, &e);
    CHECK(net != NULL);
    if (!net) return;
    int n = g.n, nn = n * n;
    d2_rng r;
    d2_rng_seed(&r, 21);
    float *ph[2], *in = malloc(sizeof(float) * nn), *inten = malloc(sizeof(float) * nn), det[D2_MAX_DET];
    float complex *f = malloc(sizeof(float complex) * nn);
    for (int l = 0; l < 2; l++) {
        ph[l] = malloc(sizeof(float) * nn);
        for (int i = 0; i < nn; i++) ph[l][i] = (float)(2 * M_PI * d2_rng_uniform(&r));
        net_set_phase(net, l, ph[l], NULL);
    }
    double ein = 0;
    for (int i = 0; i < nn; i++) {
        in[i] = (float)d2_rng_uniform(&r);
        f[i] = in[i];
        ein += (double)in[i] * in[i];
    }
    net_infer(net, in, det, inten, 0);
    for (int k = 0; k <= g.layers; k++) {
        CHECK(asm_propagate(f, n, g.pitch_mm, g.wavelength_mm, g.gap_mm[k], g.pad, &e) == 0);
        if (k < g.layers)
            for (int i = 0; i < nn; i++) f[i] *= cosf(ph[k][i]) + I * sinf(ph[k][i]);
    }
    double imax = 0, dmax = 0;
    for (int i = 0; i < nn; i++) {
        double ref = (crealf(f[i]) * crealf(f[i]) + cimagf(f[i]) * cimagf(f[i])) / ein;
        if (ref > imax) imax = ref;
        if (fabs(ref - inten[i]) > dmax) dmax = fabs(ref - inten[i]);
    }
    CHECK(imax > 0);
    CHECK(dmax <= 1e-4 * imax);
    for (int l = 0; l < 2; l++) free(ph[l]);
    free(in);
    free(inten);
    free(f);
    net_free(net);
}

/* The element-wise kernels (built per instruction set) against plain complex
 * arithmetic, at lengths that leave every vector remainder. */
TEST(dispatched_kernels_match_plain_complex_arithmetic)
{
    static const size_t lens[] = {1, 3, 7, 8, 9, 33, 1000};
    d2_rng r;
    d2_rng_seed(&r, 5);
    for (size_t q = 0; q < sizeof lens / sizeof *lens; q++) {
        size_t m = lens[q];
        float complex *w = malloc(m * sizeof *w), *h = malloc(m * sizeof *h),
                      *v = malloc(m * sizeof *v), *g = malloc(m * sizeof *g),
                      *w0 = malloc(m * sizeof *w0), *g0 = malloc(m * sizeof *g0);
        float *x = malloc(2 * m * sizeof *x);
        for (size_t i = 0; i < m; i++) {
            w[i] = (float)(2 * d2_rng_uniform(&r) - 1) + I * (float)(2 * d2_rng_uniform(&r) - 1);
            h[i] = (float)(2 * d2_rng_uniform(&r) - 1) + I * (float)(2 * d2_rng_uniform(&r) - 1);
            v[i] = (float)(2 * d2_rng_uniform(&r) - 1) + I * (float)(2 * d2_rng_uniform(&r) - 1);
            g[i] = (float)(2 * d2_rng_uniform(&r) - 1) + I * (float)(2 * d2_rng_uniform(&r) - 1);
        }
        for (int cj = 0; cj < 2; cj++) {
            memcpy(w0, w, m * sizeof *w);
            d2_cmul(w0, h, m, cj);
            for (size_t i = 0; i < m; i++) {
                double complex want = (double complex)w[i] * (cj ? conj(h[i]) : h[i]);
                CHECK(cabs(want - w0[i]) <= 1e-6);
            }
        }
        memcpy(w0, w, m * sizeof *w);
        d2_cmul_keep(w0, h, g0, m);
        for (size_t i = 0; i < m; i++) {
            CHECK(cabs((double complex)w[i] * h[i] - w0[i]) <= 1e-6);
            CHECK(g0[i] == w[i]);
        }
        memcpy(w0, w, m * sizeof *w);
        memcpy(g0, g, m * sizeof *g);
        d2_adj_layer(w0, h, v, g0, m);
        for (size_t i = 0; i < m; i++) {
            double complex G = w[i];
            CHECK(cabs(g[i] + G * conj(v[i]) - g0[i]) <= 1e-6);
            CHECK(cabs(conj(h[i]) * G - w0[i]) <= 1e-6);
        }
        double ss = 0;
        for (size_t i = 0; i < m; i++) {
            x[2 * i] = crealf(w[i]);
            x[2 * i + 1] = cimagf(w[i]);
            ss += (double)x[2 * i] * x[2 * i] + (double)x[2 * i + 1] * x[2 * i + 1];
        }
        CHECK_NEAR(d2_sumsq(x, 2 * m), ss, 1e-12 * ss);
        /* by rows, strided: bit for bit the sum of the rows laid end to end */
        for (size_t len = 1; len <= 2 * m && len <= 24; len++) {
            size_t rows = 2 * m / len, ld = len + 3;
            float *y = malloc(rows * ld * sizeof *y);
            for (size_t i = 0; i < rows; i++)
                for (size_t k = 0; k < ld; k++) y[i * ld + k] = k < len ? x[i * len + k] : 1e3f;
            CHECK(d2_sumsq_rows(y, rows, len, ld) == d2_sumsq(x, rows * len));
            free(y);
        }
        free(w);
        free(h);
        free(v);
        free(g);
        free(w0);
        free(g0);
        free(x);
    }
}

static int config_error(const char *json, const char *needle)
{
    char path[600];
    snprintf(path, sizeof path, "%s/bad.json", t_tmpdir());
    t_write_text(path, json);
    cJSON *root = NULL;
    d2_err e = {0};
    d2_geom g;
    d2_train_opts t;
    int rc = cfg_load(path, &root, &e);
    if (!rc) rc = config_read(path, root, &g, &t, &e);
    cJSON_Delete(root);
    if (rc != D2_EINPUT || !strstr(e.msg, needle)) {
        printf("  config %s: rc %d, message \"%s\", want \"%s\"\n", json, rc, e.msg, needle);
        return 0;
    }
    return 1;
}

TEST(bad_configs_fail_naming_the_key)
{
    CHECK(config_error("{\"geometry\": {\"pitch_mm\": -1}}", "geometry.pitch_mm"));
    CHECK(config_error("{\"geometry\": {\"pitch_mm\": 0}}", "geometry.pitch_mm"));
    CHECK(config_error("{\"geometry\": {\"wavelength_mm\": -0.7}}", "geometry.wavelength_mm"));
    CHECK(config_error("{\"geometry\": {\"neurons\": 100000}}", "geometry.neurons"));
    CHECK(config_error("{\"geometry\": {\"pitch_mm\": 20}, \"detector\": {\"size_mm\": 200, \"row_pitch_mm\": 400, \"column_pitch_mm\": 400}}", "no light reaches"));
    CHECK(config_error("{\"detector\": {\"size_mm\": 6.4, \"row_pitch_mm\": 60}}",
                       "detector.centers_mm"));
    CHECK(config_error("{\"detector\": {\"size_mm\": 20}}", "overlap"));
    CHECK(config_error("{\"geometry\": {\"layers\": 2, \"gaps_mm\": [1, 2]}}", "gaps_mm"));
    CHECK(config_error("{\"geometry\": {\"pitchmm\": 0.4}}", "pitchmm"));
    CHECK(config_error("{\"training\": {\"loss\": \"hinge\"}}", "training.loss"));
    CHECK(config_error("{\"input\": {\"aperture_mm\": 500}}", "input.aperture_mm"));
}

TEST(model_saves_and_loads_back_bit_exact)
{
    d2_model m = {0}, b;
    small_geom(&m.g, 0);
    train_opts_default(&m.t);
    d2_err e = {0};
    CHECK(model_alloc(&m, &e) == 0);
    for (int l = 0; l < m.g.layers; l++)
        for (int i = 0; i < m.g.n * m.g.n; i++) m.phase[l][i] = (float)fmod(0.01 * i * (l + 1), 6.28);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/model", t_tmpdir());
    CHECK(model_save(dir, &m, &e) == 0);
    CHECK(model_load(dir, &b, &e) == 0);
    CHECK(b.g.n == m.g.n && b.g.layers == m.g.layers);
    CHECK_NEAR(b.g.wavelength_mm, m.g.wavelength_mm, 1e-12);
    CHECK_NEAR(b.g.det_x_mm[9], m.g.det_x_mm[9], 1e-12);
    int same = 1;
    for (int l = 0; l < m.g.layers; l++)
        if (memcmp(b.phase[l], m.phase[l], sizeof(float) * m.g.n * m.g.n)) same = 0;
    CHECK(same);
    model_free(&b);
    /* A NaN in a layer file is refused. */
    char lp[700];
    snprintf(lp, sizeof lp, "%s/layer2.npy", dir);
    m.phase[1][5] = NAN;
    size_t shape[2] = {(size_t)m.g.n, (size_t)m.g.n};
    CHECK(npy_write(lp, NPY_F32, 2, shape, m.phase[1], &e) == 0);
    CHECK_ERR(model_load(dir, &b, &e), e, D2_EINPUT, "layer2.npy");
    model_free(&m);
}

TEST(a_fine_tuned_model_records_what_it_started_from)
{
    d2_model a = {0}, b = {0}, c;
    d2_err e = {0};
    small_geom(&a.g, 0);
    train_opts_default(&a.t);
    a.t.lr = 0.05;
    CHECK(model_alloc(&a, &e) == 0);
    a.history = cJSON_CreateArray();
    cJSON *h = cJSON_CreateObject();
    cJSON_AddNumberToObject(h, "epoch", 1);
    cJSON_AddItemToArray(a.history, h);
    a.test_accuracy = 0.91;
    a.train_seconds = 12;
    b.g = a.g;
    train_opts_default(&b.t);
    b.t.lr = 0.01;
    CHECK(model_alloc(&b, &e) == 0);
    b.init = model_provenance(&a, "stage1");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/stage2", t_tmpdir());
    CHECK(model_save(dir, &b, &e) == 0);
    CHECK(model_load(dir, &c, &e) == 0);
    const cJSON *p = c.init;
    CHECK(cJSON_IsObject(p));
    const cJSON *mdl = cJSON_GetObjectItemCaseSensitive(p, "model");
    CHECK(cJSON_IsString(mdl) && !strcmp(mdl->valuestring, "stage1"));
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(p, "test_accuracy");
    CHECK(cJSON_IsNumber(acc) && acc->valuedouble == 0.91);
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(p, "training");
    const cJSON *lr = cJSON_GetObjectItemCaseSensitive(tr, "learning_rate");
    CHECK(cJSON_IsNumber(lr) && lr->valuedouble == 0.05);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "history")) == 1);
    /* A third stage keeps the whole chain. */
    cJSON *chain = model_provenance(&c, "stage2");
    const cJSON *deep = cJSON_GetObjectItemCaseSensitive(chain, "initialised_from");
    mdl = cJSON_GetObjectItemCaseSensitive(deep, "model");
    CHECK(cJSON_IsString(mdl) && !strcmp(mdl->valuestring, "stage1"));
    cJSON_Delete(chain);
    model_free(&c);
    model_free(&b);
    model_free(&a);
}

/* train --init as a library call, so run can use it too: phases copied and
 * provenance kept from a model of the same optics, a model of other optics
 * refused naming the difference. */
TEST(a_model_starts_from_another_of_the_same_optics_only)
{
    d2_model a = {0}, b = {0};
    d2_err e = {0};
    small_geom(&a.g, 0);
    train_opts_default(&a.t);
    CHECK(model_alloc(&a, &e) == 0);
    for (int i = 0; i < a.g.n * a.g.n; i++) a.phase[0][i] = 0.001f * (float)i;
    a.test_accuracy = 0.5;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/init-src", t_tmpdir());
    CHECK(model_save(dir, &a, &e) == 0);
    b.g = a.g;
    train_opts_default(&b.t);
    CHECK(model_alloc(&b, &e) == 0);
    CHECK(train_init_from(&b, dir, "cfg.json", 0, &e) == 0);
    CHECK(b.phase[0][77] == a.phase[0][77] && b.phase[0][0] == a.phase[0][0]);
    const cJSON *mdl = cJSON_GetObjectItemCaseSensitive(b.init, "model");
    CHECK(cJSON_IsString(mdl) && !strcmp(mdl->valuestring, dir));
    model_free(&b);
    memset(&b, 0, sizeof b);
    b.g = a.g;
    b.g.gap_mm[1] += 1;
    train_opts_default(&b.t);
    CHECK(model_alloc(&b, &e) == 0);
    CHECK_ERR(train_init_from(&b, dir, "cfg.json", 0, &e), e, D2_EINPUT, "not the geometry of cfg.json");
    CHECK(b.init == NULL && b.phase[0][77] == 0);
    model_free(&b);
    model_free(&a);
}

/* A thin model (gaps datum to datum) into a thick config (air gaps): the
 * init's assembly is read with the config's plates (base + relief limit), so
 * the same 4 mm datum gaps are 4 - plate mm of air after each plate; other
 * air gaps are refused naming the ones that match unless regap, which
 * model.json records; a thick model never starts a thin config. */
TEST(a_thin_model_starts_a_thick_one_in_the_same_assembly_or_when_told)
{
    d2_model a = {0}, b = {0};
    d2_err e = {0};
    small_geom(&a.g, 0);
    train_opts_default(&a.t);
    CHECK(model_alloc(&a, &e) == 0);
    for (int i = 0; i < a.g.n * a.g.n; i++) a.phase[1][i] = 0.002f * (float)i;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/init-thin", t_tmpdir());
    CHECK(model_save(dir, &a, &e) == 0);
    d2_geom gt = a.g;
    gt.optics = D2_OPTICS_THICK;
    gt.base_mm = 0.512;
    double plate = thick_plate_mm(&gt);
    CHECK_NEAR(plate, 0.512 + gt.wavelength_mm / (gt.index - 1), 1e-12);
    /* same assembly: input gap unchanged, the others shortened by a plate */
    gt.gap_mm[0] = 4.0;
    gt.gap_mm[1] = gt.gap_mm[2] = 4.0 - plate;
    b.g = gt;
    train_opts_default(&b.t);
    CHECK(model_alloc(&b, &e) == 0);
    CHECK(train_init_from(&b, dir, "thick.json", 0, &e) == 0);
    CHECK(b.phase[1][300] == a.phase[1][300]);
    const cJSON *gj = cJSON_GetObjectItem(b.init, "gaps");
    CHECK_NEAR(cJSON_GetArrayItem(cJSON_GetObjectItem(gj, "as_air_gaps_mm"), 1)->valuedouble,
               4.0 - plate, 1e-12);
    CHECK(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(gj, "assembly")), "init's assembly"));
    model_free(&b);
    /* the thin gaps taken as air gaps (the old reading) are refused */
    memset(&b, 0, sizeof b);
    b.g = gt;
    b.g.gap_mm[1] = b.g.gap_mm[2] = 4.0;
    train_opts_default(&b.t);
    CHECK(model_alloc(&b, &e) == 0);
    CHECK_ERR(train_init_from(&b, dir, "thick.json", 0, &e), e, D2_EINPUT, "--init-regap");
    CHECK(strstr(e.msg, "air gaps [4, 2.45"));
    CHECK(b.init == NULL && b.phase[1][300] == 0);
    /* ... unless asked for, and recorded */
    CHECK(train_init_from(&b, dir, "thick.json", 1, &e) == 0);
    gj = cJSON_GetObjectItem(b.init, "gaps");
    CHECK(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(gj, "assembly")), "--init-regap"));
    CHECK(b.phase[1][300] == a.phase[1][300]);
    model_free(&b);
    /* plates that do not fit the datum gaps */
    memset(&b, 0, sizeof b);
    b.g = gt;
    b.g.base_mm = 3.5;
    train_opts_default(&b.t);
    CHECK(model_alloc(&b, &e) == 0);
    CHECK_ERR(train_init_from(&b, dir, "thick.json", 1, &e), e, D2_EINPUT, "do not fit");
    model_free(&b);
    /* thick into thin */
    snprintf(dir, sizeof dir, "%s/init-thick", t_tmpdir());
    a.g = gt;
    CHECK(model_save(dir, &a, &e) == 0);
    memset(&b, 0, sizeof b);
    small_geom(&b.g, 0);
    train_opts_default(&b.t);
    CHECK(model_alloc(&b, &e) == 0);
    CHECK_ERR(train_init_from(&b, dir, "thin.json", 1, &e), e, D2_EINPUT, "cannot start the thin");
    model_free(&b);
    model_free(&a);
}

/* An export (heights) starts a thick config from its printed heights: the
 * plates begin as printed, a pillar of the full relief stays one, and heights
 * off the config's plate are refused. */
TEST(an_export_starts_a_thick_model_from_its_heights)
{
    d2_model s0 = {0}, b = {0};
    d2_err e = {0};
    small_geom(&s0.g, 0);
    train_opts_default(&s0.t);
    CHECK(model_alloc(&s0, &e) == 0);
    d2_geom gt = s0.g;
    gt.optics = D2_OPTICS_THICK;
    gt.base_mm = 0.512;
    double P = gt.wavelength_mm / (gt.index - 1), top = thick_plate_mm(&gt);
    size_t nn = (size_t)gt.n * gt.n;
    for (int l = 0; l < gt.layers; l++) {
        s0.height[l] = malloc(nn * sizeof(float));
        for (size_t i = 0; i < nn; i++) s0.height[l][i] = (float)(0.512 + 0.016 * (double)(i % 65));
        s0.height[l][5] = (float)(top + 0.003); /* rounded up to the Z grid */
    }
    for (int k = 1; k <= gt.layers; k++) gt.gap_mm[k] = 4.0 - top;
    b.g = gt;
    train_opts_default(&b.t);
    CHECK(model_alloc(&b, &e) == 0);
    CHECK(train_init_model(&b, &s0, "export", "thick.json", 0, &e) == 0);
    float h[4];
    thick_heights_from_phase(&b.g, b.phase[1], 4, h);
    CHECK_NEAR(h[3], 0.512 + 0.048, 1e-5);
    thick_heights_from_phase(&b.g, b.phase[0] + 5, 1, h);
    CHECK_NEAR(h[0], top, 1e-5); /* not wrapped to the base */
    CHECK_NEAR(b.phase[0][1], 2 * M_PI * 0.016 / P, 1e-5);
    s0.height[1][7] = 0.4f;
    CHECK_ERR(train_init_model(&b, &s0, "export", "thick.json", 0, &e), e, D2_EINPUT,
              "layer 2 pixel 7 is 0.4 mm high");
    model_free(&b);
    model_free(&s0);
}


/* A small labelled set: class c is a bright 3 x 3 block at a place of its
 * own on a dim noisy 12 x 12 background, so a short run can learn it. */
static void lab_image(int c, int k, uint8_t *px)
{
    for (int i = 0; i < 144; i++) px[i] = (uint8_t)((i * 7 + k * 13) % 20);
    int r0 = 1 + 3 * (c / 4), c0 = 1 + 3 * (c % 4);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) px[(r0 + i) * 12 + c0 + j] = 255;
}

static void write_lab_folder(const char *root, int per_class)
{
    d2_err e = {0};
    uint8_t px[144];
    for (int c = 0; c < 10; c++) {
        char dir[700], p[760];
        snprintf(dir, sizeof dir, "%s/%d", root, c);
        CHECK(d2_mkdir_p(dir, &e) == 0);
        for (int k = 0; k < per_class; k++) {
            lab_image(c, k, px);
            snprintf(p, sizeof p, "%s/img%03d.png", dir, k);
            CHECK(img_write_gray8(p, 12, 12, px, &e) == 0);
        }
    }
}

static void write_lab_idx(const char *img, const char *lab, int per_class)
{
    d2_err e = {0};
    int n = 10 * per_class;
    uint8_t *px = malloc((size_t)n * 144), *lb = malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        lb[i] = (uint8_t)(i % 10);
        lab_image(i % 10, i / 10, px + (size_t)i * 144);
    }
    CHECK(idx_write_images(img, px, n, 12, 12, &e) == 0);
    CHECK(idx_write_labels(lab, lb, n, &e) == 0);
    free(px);
    free(lb);
}

static const char *lab_config =
    "{\"geometry\": {\"frequency_thz\": 0.4, \"pitch_mm\": 0.4, \"neurons\": 24, \"layers\": 2,"
    " \"gaps_mm\": 4},\n \"input\": {\"aperture_mm\": 6, %s},\n"
    " \"detector\": {\"layout\": \"3-4-3\", \"size_mm\": 1.6, \"row_pitch_mm\": 2.4,"
    " \"column_pitch_mm\": 2.4},\n"
    " \"training\": {\"batch\": 10, \"epochs\": 2, \"learning_rate\": 0.1, \"seed\": 3}}\n";

/* Trains the config at cfg for a few steps, then checks that model.json
 * names the same data and that eval of the saved model finds the test set. */
static void train_lab_config(const char *cfg, const char *want_name, const char *want_test,
                             int want_test_count)
{
    d2_model m = {0}, b = {0};
    d2_err e = {0};
    int rc = config_load(cfg, &m.g, &m.t, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    if (rc) return;
    CHECK(strcmp(m.t.dataset, want_name) == 0);
    CHECK(m.t.data.test[0] == '/' && strstr(m.t.data.test, want_test) != NULL);
    CHECK(model_alloc(&m, &e) == 0);
    char out[700];
    snprintf(out, sizeof out, "%s/%s-model", t_tmpdir(), want_name);
    train_run_opts ro = {"/nonexistent-shipped-data", 1, 0, NULL};
    rc = train_model(&m, out, &ro, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    printf("  %s data set: test accuracy %.1f%% after 2 epochs\n", want_name,
           100 * m.test_accuracy);
    /* The set is separable: a chance result means the labels were lost. */
    CHECK(m.test_accuracy > 0.3);
    CHECK(model_load(out, &b, &e) == 0);
    CHECK(strcmp(b.t.dataset, want_name) == 0);
    CHECK(strcmp(b.t.data.test, m.t.data.test) == 0);
    CHECK(strcmp(b.t.data.test_labels, m.t.data.test_labels) == 0);
    eval_result r;
    rc = eval_model(&b, "/nonexistent-shipped-data", 0, 1, NULL, NULL, &r, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0 && r.count == want_test_count);
    CHECK_NEAR(r.accuracy, m.test_accuracy, 1e-9);
    model_free(&b);
    model_free(&m);
}

TEST(a_folder_of_pngs_and_an_idx_pair_train_and_are_recorded_in_the_model)
{
    char root[600], p[700], q[700], cfg[700], body[2048], text[3072];
    d2_err e = {0};
    snprintf(root, sizeof root, "%s/labdata", t_tmpdir());
    snprintf(p, sizeof p, "%s/pngs/train", root);
    write_lab_folder(p, 6);
    snprintf(p, sizeof p, "%s/pngs/test", root);
    write_lab_folder(p, 3);
    /* Paths relative to the config file, which lives in root. */
    snprintf(body, sizeof body, "\"dataset\": \"folder\", \"train\": \"pngs/train\", "
             "\"test\": \"pngs/test\"");
    snprintf(text, sizeof text, lab_config, body);
    snprintf(cfg, sizeof cfg, "%s/folder.json", root);
    CHECK(d2_write_file(cfg, text, strlen(text), &e) == 0);
    train_lab_config(cfg, "folder", "labdata/pngs/test", 30);

    snprintf(p, sizeof p, "%s/idx/train-img", root);
    snprintf(q, sizeof q, "%s/idx/train-lab", root);
    CHECK(d2_mkdir_p(root, &e) == 0);
    snprintf(text, sizeof text, "%s/idx", root);
    CHECK(d2_mkdir_p(text, &e) == 0);
    write_lab_idx(p, q, 6);
    snprintf(p, sizeof p, "%s/idx/test-img", root);
    snprintf(q, sizeof q, "%s/idx/test-lab", root);
    write_lab_idx(p, q, 2);
    snprintf(body, sizeof body, "\"dataset\": \"idx\", \"train_images\": \"idx/train-img\", "
             "\"train_labels\": \"idx/train-lab\", \"test_images\": \"idx/test-img\", "
             "\"test_labels\": \"idx/test-lab\"");
    snprintf(text, sizeof text, lab_config, body);
    snprintf(cfg, sizeof cfg, "%s/idx.json", root);
    CHECK(d2_write_file(cfg, text, strlen(text), &e) == 0);
    train_lab_config(cfg, "idx", "labdata/idx/test-img", 20);
}

TEST(bad_lab_data_sets_fail_naming_the_file)
{
    char root[600], p[700], q[760];
    d2_err e = {0};
    d2_dataset ds;
    uint8_t px[144 * 3], lb[3] = {1, 12, 3};
    snprintf(root, sizeof root, "%s/badlab", t_tmpdir());
    /* A missing class folder. */
    snprintf(p, sizeof p, "%s/nofive", root);
    write_lab_folder(p, 1);
    snprintf(q, sizeof q, "%s/5/img000.png", p);
    CHECK(unlink(q) == 0);
    snprintf(q, sizeof q, "%s/5", p);
    CHECK(rmdir(q) == 0);
    CHECK_ERR(dataset_read_folder(p, &ds, &e), e, D2_EINPUT, "nofive/5: missing class folder");
    /* A colour PNG of another size among grey 12 x 12 ones. */
    snprintf(p, sizeof p, "%s/colour", root);
    write_lab_folder(p, 1);
    snprintf(q, sizeof q, "%s/7/zz.png", p);
    for (int i = 0; i < 16 * 10 * 3; i++) px[i % (144 * 3)] = (uint8_t)i;
    CHECK(img_write_rgb8(q, 16, 9, px, &e) == 0);
    CHECK_ERR(dataset_read_folder(p, &ds, &e), e, D2_EINPUT, "colour/7/zz.png: 16 x 9 pixels");
    CHECK(strstr(e.msg, "expected 12 x 12") != NULL);
    /* A file that is not a PNG. */
    snprintf(p, sizeof p, "%s/stray", root);
    write_lab_folder(p, 1);
    snprintf(q, sizeof q, "%s/2/notes.txt", p);
    CHECK(d2_write_file(q, "x", 1, &e) == 0);
    CHECK_ERR(dataset_read_folder(p, &ds, &e), e, D2_EINPUT, "stray/2/notes.txt: not a .png");
    /* An empty set: every class folder there, none holding an image. */
    snprintf(p, sizeof p, "%s/empty", root);
    write_lab_folder(p, 0);
    CHECK_ERR(dataset_read_folder(p, &ds, &e), e, D2_EINPUT, "empty: holds no images");
    /* An IDX label 12, written byte by byte since the writer refuses it. */
    snprintf(p, sizeof p, "%s/img", root);
    snprintf(q, sizeof q, "%s/lab", root);
    memset(px, 0, sizeof px);
    CHECK(idx_write_images(p, px, 3, 12, 12, &e) == 0);
    unsigned char raw[11] = {0, 0, 8, 1, 0, 0, 0, 3};
    memcpy(raw + 8, lb, 3);
    CHECK(d2_write_file(q, raw, sizeof raw, &e) == 0);
    CHECK_ERR(dataset_read_idx(p, q, &ds, &e), e, D2_EINPUT, "badlab/lab: label 1 is 12");
    /* An empty IDX set and counts that disagree. */
    CHECK(idx_write_images(p, px, 0, 12, 12, &e) == 0);
    CHECK_ERR(dataset_read_idx(p, q, &ds, &e), e, D2_EINPUT, "badlab/img: holds no images");
    CHECK(idx_write_images(p, px, 2, 12, 12, &e) == 0);
    lb[1] = 2;
    memcpy(raw + 8, lb, 3);
    CHECK(d2_write_file(q, raw, sizeof raw, &e) == 0);
    CHECK_ERR(dataset_read_idx(p, q, &ds, &e), e, D2_EINPUT, "holds 2 images but");
    /* The config names what a data set needs. */
    d2_geom g;
    d2_train_opts t;
    snprintf(p, sizeof p, "%s/cfg.json", root);
    const char *c1 = "{\"input\": {\"dataset\": \"folder\", \"train\": \"a\"}}";
    CHECK(d2_write_file(p, c1, strlen(c1), &e) == 0);
    CHECK_ERR(config_load(p, &g, &t, &e), e, D2_EINPUT, "missing key \"input.test\"");
    const char *c2 = "{\"input\": {\"dataset\": \"mnist\", \"train\": \"a\"}}";
    CHECK(d2_write_file(p, c2, strlen(c2), &e) == 0);
    CHECK_ERR(config_load(p, &g, &t, &e), e, D2_EINPUT, "\"input.train\" is not used");
    /* A test set alone describes a model trained elsewhere; training it then
     * names the missing training split. */
    const char *c3 = "{\"input\": {\"dataset\": \"folder\", \"test\": \"a\"}}";
    CHECK(d2_write_file(p, c3, strlen(c3), &e) == 0);
    CHECK(config_load(p, &g, &t, &e) == 0 && t.data.test[0] && !t.data.train[0]);
    CHECK_ERR(dataset_open(NULL, t.dataset, &t.data, 0, &ds, &e), e, D2_EINPUT,
              "no training path given (key \"input.train\"");
    const char *c4 = "{\"input\": {\"dataset\": \"idx\", \"test_images\": \"a\", "
                     "\"test_labels\": \"b\", \"train_images\": \"c\"}}";
    CHECK(d2_write_file(p, c4, strlen(c4), &e) == 0);
    CHECK_ERR(config_load(p, &g, &t, &e), e, D2_EINPUT, "go together");
}

TEST(short_mnist_training_clearly_beats_chance)
{
    const char *data = dataset_default_dir();
    d2_model m = {0};
    d2_err e = {0};
    CHECK(config_load("samples/quick.json", &m.g, &m.t, &e) == 0);
    m.t.epochs = 1;
    /* Quick runs (valgrind) still reach some 65 %. */
    m.t.train_limit = t_quick() ? 800 : 3000;
    m.t.test_limit = t_quick() ? 300 : 1000;
    CHECK(model_alloc(&m, &e) == 0);
    char out[600];
    snprintf(out, sizeof out, "%s/quick", t_tmpdir());
    train_run_opts ro = {data, 0, 0, NULL};
    int rc = train_model(&m, out, &ro, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    printf("  test accuracy after %d images: %.1f%%\n", m.t.train_limit, 100 * m.test_accuracy);
    CHECK(m.test_accuracy > 0.5);
    /* eval on the saved model agrees with the trainer's own evaluation. */
    d2_model b;
    CHECK(model_load(out, &b, &e) == 0);
    eval_result r;
    CHECK(eval_model(&b, data, m.t.test_limit, 0, NULL, NULL, &r, &e) == 0);
    CHECK_NEAR(r.accuracy, m.test_accuracy, 1.5 / m.t.test_limit);
    model_free(&b);
    model_free(&m);
}

/* Every model in samples/ was trained by the config named beside it (its last
 * stage), loads, and still classifies the first test images about as well as
 * the accuracy its model.json claims for all 10000. */
TEST(shipped_models_match_their_configs_and_classify)
{
    static const char *const ship[][2] = {
        {"samples/mnist-model", "samples/paper-mnist-refine.json"},
        {"samples/fashion-model", "samples/paper-fashion-refine.json"},
        {"samples/mnist-jitter-model", "samples/paper-mnist-jitter-more.json"},
        {"samples/mnist-qat4-model", "samples/paper-mnist-qat4.json"},
        {"samples/mnist-differential-model", "samples/paper-mnist-differential.json"},
        {"samples/mnist-efficient-model", "samples/paper-mnist-refine.json"},
    };
    const char *data = dataset_default_dir();
    int limit = t_quick() ? 30 : 500;
    for (size_t k = 0; k < sizeof ship / sizeof ship[0]; k++) {
        d2_model m = {0};
        d2_geom g;
        d2_train_opts t;
        cJSON *root = NULL;
        d2_err e = {0};
        char why[256] = "";
        int ok = cfg_load(ship[k][1], &root, &e) == 0 &&
                 config_read(ship[k][1], root, &g, &t, &e) == 0 && model_load(ship[k][0], &m, &e) == 0;
        cJSON_Delete(root);
        if (!ok) printf("  %s: %s\n", ship[k][0], e.msg);
        CHECK(ok);
        if (!ok) continue;
        int same = geom_same_optics(&m.g, &g, why, sizeof why);
        if (!same) printf("  %s: %s\n", ship[k][0], why);
        CHECK(same);
        CHECK(!strcmp(m.t.dataset, t.dataset));
        CHECK(m.t.loss == t.loss && m.t.batch == t.batch && m.t.seed == t.seed);
        CHECK(m.t.temperature == t.temperature && m.t.lr == t.lr && m.t.lr_decay == t.lr_decay);
        CHECK(m.t.jitter_xy_mm == t.jitter_xy_mm && m.t.jitter_z_mm == t.jitter_z_mm);
        CHECK(m.t.quant_levels == t.quant_levels);
        CHECK(m.g.scheme == g.scheme && m.g.ndet == g.ndet);
        CHECK(m.t.efficiency_weight == t.efficiency_weight);
        CHECK(m.test_accuracy > 0.85);
        eval_result r = {0};
        CHECK(eval_model(&m, data, limit, 0, NULL, NULL, &r, &e) == 0);
        printf("  %s: %.1f%% on the first %d test images (model.json: %.2f%% on %s)\n",
               ship[k][0], 100 * r.accuracy, r.count, 100 * m.test_accuracy,
               m.t.test_limit ? "a subset" : "all");
        CHECK(r.count == limit);
        if (!t_quick()) CHECK(r.accuracy > m.test_accuracy - 0.05);
        model_free(&m);
    }
}

TEST(whole_pixel_shift_equals_the_rolled_layer_with_zero_fill)
{
    int n = 16;
    float complex t[256], out[256];
    for (int i = 0; i < n * n; i++) t[i] = (float)(i % 7) + I * (float)(i % 3);
    layer_pose p = {0.8, -1.2, 0, 0}; /* 2 px right, 3 px up at 0.4 mm */
    perturb_transform(t, n, 0.4, &p, out);
    int same = 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int si = i + 3, sj = j - 2;
            float complex want = si >= 0 && si < n && sj >= 0 && sj < n ? t[si * n + sj] : 0;
            if (cabsf(out[i * n + j] - want) > 1e-5f) same = 0;
        }
    CHECK(same);
}

TEST(perturbation_adjoint_is_the_transpose)
{
    int n = 20;
    float complex x[400], y[400], ax[400], aty[400];
    d2_rng r;
    d2_rng_seed(&r, 3);
    for (int i = 0; i < n * n; i++) {
        x[i] = (float)d2_rng_normal(&r) + I * (float)d2_rng_normal(&r);
        y[i] = (float)d2_rng_normal(&r) + I * (float)d2_rng_normal(&r);
    }
    layer_pose p = {0.37, -0.61, 0, 7.5};
    perturb_transform(x, n, 0.4, &p, ax);
    memset(aty, 0, sizeof aty);
    perturb_transform_adjoint(y, n, 0.4, &p, aty);
    double complex a = 0, b = 0;
    for (int i = 0; i < n * n; i++) {
        a += conj(y[i]) * ax[i];
        b += conj(aty[i]) * x[i];
    }
    CHECK(cabs(a) > 1);
    CHECK_NEAR(creal(a), creal(b), 1e-4 * cabs(a));
    CHECK_NEAR(cimag(a), cimag(b), 1e-4 * cabs(a));
}

TEST(axial_displacement_moves_the_layer_between_its_gaps)
{
    d2_geom g;
    geom_default(&g);
    layer_pose p[D2_MAX_LAYERS] = {{0}};
    p[1].dz_mm = 1.5;
    double gaps[D2_MAX_LAYERS + 1];
    perturb_gaps(&g, p, gaps);
    CHECK_NEAR(gaps[1], 31.5, 1e-12);
    CHECK_NEAR(gaps[2], 28.5, 1e-12);
    CHECK_NEAR(gaps[0] + gaps[3], 60.0, 1e-12);
}

static double quick_run(int quant_levels, double jitter_mm, d2_model *m, const char *name)
{
    cJSON *root = NULL;
    d2_err e = {0};
    memset(m, 0, sizeof *m);
    CHECK(cfg_load("samples/quick.json", &root, &e) == 0);
    CHECK(config_read("samples/quick.json", root, &m->g, &m->t, &e) == 0);
    cJSON_Delete(root);
    m->t.epochs = 1;
    m->t.train_limit = t_quick() ? 800 : 2000; /* quick: still some 55 % */
    m->t.test_limit = t_quick() ? 300 : 500;
    m->t.quant_levels = quant_levels;
    m->t.jitter_xy_mm = jitter_mm;
    m->t.jitter_z_mm = 2 * jitter_mm;
    CHECK(model_alloc(m, &e) == 0);
    char out[600];
    snprintf(out, sizeof out, "%s/%s", t_tmpdir(), name);
    train_run_opts ro = {dataset_default_dir(), 0, 0, NULL};
    int rc = train_model(m, out, &ro, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    return m->test_accuracy;
}

TEST(quantisation_aware_training_learns_and_saves_phases_on_the_levels)
{
    d2_model m, b;
    double acc = quick_run(4, 0, &m, "qat");
    printf("  4-level quantisation-aware accuracy: %.1f%%\n", 100 * acc);
    CHECK(acc > 0.4);
    char dir[600];
    d2_err e = {0};
    snprintf(dir, sizeof dir, "%s/qat", t_tmpdir());
    CHECK(model_load(dir, &b, &e) == 0);
    int on_grid = 1;
    for (int l = 0; l < b.g.layers; l++)
        for (int i = 0; i < b.g.n * b.g.n; i++) {
            double k = b.phase[l][i] / (M_PI / 2);
            if (fabs(k - nearbyint(k)) > 1e-4) on_grid = 0;
        }
    CHECK(on_grid);
    model_free(&b);
    model_free(&m);
}

TEST(misalignment_training_runs_and_learns)
{
    d2_model m;
    double acc = quick_run(0, 0.4, &m, "jitter");
    printf("  accuracy trained at +-0.4 mm lateral, +-0.8 mm axial: %.1f%%\n", 100 * acc);
    CHECK(acc > 0.4);
    model_free(&m);
}

TEST(same_seed_and_threads_give_the_same_model)
{
    d2_model a, b;
    quick_run(0, 0.2, &a, "seed-a");
    quick_run(0, 0.2, &b, "seed-b");
    int same = 1;
    for (int l = 0; l < a.g.layers; l++)
        if (memcmp(a.phase[l], b.phase[l], sizeof(float) * a.g.n * a.g.n)) same = 0;
    CHECK(same);
    CHECK(a.test_accuracy == b.test_accuracy);
    model_free(&b);
    model_free(&a);
}

int main(void)
{
    RUN(adjoint_gradient_matches_finite_differences_phase_only_softmax);
    RUN(adjoint_gradient_matches_finite_differences_overlapping_detectors);
    RUN(adjoint_gradient_matches_finite_differences_material_coupled);
    RUN(adjoint_gradient_matches_finite_differences_mse);
    RUN(adjoint_gradient_matches_finite_differences_differential);
    RUN(adjoint_gradient_matches_finite_differences_with_efficiency_term);
    RUN(loss_gradient_matches_finite_differences);
    RUN(differential_scores_predict_and_margin);
    RUN(energy_reaching_the_detector_plane_never_exceeds_the_input);
    RUN(bad_configs_fail_naming_the_key);
    RUN(model_saves_and_loads_back_bit_exact);
    RUN(a_fine_tuned_model_records_what_it_started_from);
    RUN(a_model_starts_from_another_of_the_same_optics_only);
    RUN(a_thin_model_starts_a_thick_one_in_the_same_assembly_or_when_told);
    RUN(an_export_starts_a_thick_model_from_its_heights);
    RUN(a_folder_of_pngs_and_an_idx_pair_train_and_are_recorded_in_the_model);
    RUN(bad_lab_data_sets_fail_naming_the_file);
    RUN(short_mnist_training_clearly_beats_chance);
    RUN(shipped_models_match_their_configs_and_classify);
    RUN(whole_pixel_shift_equals_the_rolled_layer_with_zero_fill);
    RUN(perturbation_adjoint_is_the_transpose);
    RUN(axial_displacement_moves_the_layer_between_its_gaps);
    RUN(quantisation_aware_training_learns_and_saves_phases_on_the_levels);
    RUN(misalignment_training_runs_and_learns);
    RUN(same_seed_and_threads_give_the_same_model);
    RUN(network_forward_matches_full_2d_propagations);
    RUN(dispatched_kernels_match_plain_complex_arithmetic);
    return t_finish();
}
