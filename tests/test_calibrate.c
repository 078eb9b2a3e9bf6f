/* calibrate: the detector derivatives against finite differences, the MEAS
 * reader's errors, the fit recovering hidden errors on a small stack, and
 * the simulate / calibrate commands end to end. */
#include <complex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "calibrate/calibrate.h"
#include "core/config.h"
#include "core/fileio.h"
#include "core/util.h"
#include "tests/testlib.h"

/* A small stack: 40 x 40 neurons of 0.4 mm, `layers` random phase layers
 * 8 mm apart, ten 1.6 mm detectors. */
static void small_model(d2_model *m, int layers, unsigned seed)
{
    memset(m, 0, sizeof *m);
    geom_default(&m->g);
    train_opts_default(&m->t);
    m->g.n = 40;
    m->g.layers = layers;
    m->g.pad = 2;
    for (int k = 0; k <= layers; k++) m->g.gap_mm[k] = 8;
    m->g.aperture_mm = 12;
    geom_layout_343(&m->g, 1.6, 3.6, 3.6);
    m->test_accuracy = -1;
    model_alloc(m, NULL);
    d2_rng r;
    d2_rng_seed(&r, seed);
    /* Smooth-ish phases (2 x 2 blocks) so a sub-pixel shift changes the field smoothly. */
    for (int l = 0; l < layers; l++)
        for (int i = 0; i < 20; i++)
            for (int j = 0; j < 20; j++) {
                float ph = (float)(2 * M_PI * d2_rng_uniform(&r));
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++) m->phase[l][(2 * i + a) * 40 + 2 * j + b] = ph;
            }
}

/* count random 28 x 28 "digits": a few bright blobs each. */
static void fake_digits(d2_dataset *ds, int count, unsigned seed)
{
    ds->count = count;
    ds->rows = ds->cols = 28;
    ds->images = calloc((size_t)count * 784, 1);
    ds->labels = calloc((size_t)count, 1);
    d2_rng r;
    d2_rng_seed(&r, seed);
    for (int i = 0; i < count; i++) {
        unsigned char *im = ds->images + (size_t)i * 784;
        for (int b = 0; b < 4; b++) {
            int ci = 5 + (int)d2_rng_below(&r, 18), cj = 5 + (int)d2_rng_below(&r, 18);
            for (int y = -3; y <= 3; y++)
                for (int x = -3; x <= 3; x++) im[(ci + y) * 28 + cj + x] = 255;
        }
        ds->labels[i] = (unsigned char)d2_rng_below(&r, 10);
    }
}

static double combo(const float *det, const double *w, int nd)
{
    double s = 0;
    for (int k = 0; k < nd; k++) s += w[k] * det[k];
    return s;
}

TEST(adjoint_of_detectors_matches_finite_differences_of_transmission_and_gaps)
{
    d2_model m;
    small_model(&m, 3, 7);
    d2_err e = {0};
    d2_net *net = net_new(&m.g, 1, &e);
    CHECK(net != NULL);
    if (!net) return;
    net_set_model(net, &m);
    d2_dataset ds = {0};
    fake_digits(&ds, 1, 3);
    size_t nn = 1600;
    float *in = malloc(nn * sizeof *in);
    input_from_u8(&m.g, ds.images, 28, 28, in);
    double w[D2_MAX_DET];
    d2_rng r;
    d2_rng_seed(&r, 11);
    for (int k = 0; k < 10; k++) w[k] = d2_rng_uniform(&r) - 0.3;
    float det[D2_MAX_DET];
    CHECK(net_forward_keep(net, in, det, 0, &e) == 0);
    float complex *gt[3], *dt = malloc(nn * sizeof *dt), *t = malloc(nn * sizeof *t);
    for (int l = 0; l < 3; l++) gt[l] = malloc(nn * sizeof **gt);
    double gz[4];
    net_adjoint_det(net, w, gt, gz, 0);
    /* Transmission of layer 2 along a random direction. */
    for (size_t i = 0; i < nn; i++)
        dt[i] = (float)(d2_rng_uniform(&r) - 0.5) + I * (float)(d2_rng_uniform(&r) - 0.5);
    double an = 0;
    for (size_t i = 0; i < nn; i++) an += 2 * creal(conj(gt[1][i]) * dt[i]);
    const float complex *t0 = net_transmission(net, 1);
    memcpy(t, t0, nn * sizeof *t);
    float complex *tp = malloc(nn * sizeof *tp);
    double h = 1e-3, f[2];
    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; i < nn; i++) tp[i] = t[i] + (float)(s ? -h : h) * dt[i];
        net_set_transmission(net, 1, tp);
        float d2[D2_MAX_DET];
        net_infer(net, in, d2, NULL, 0);
        f[s] = combo(d2, w, 10);
    }
    net_set_transmission(net, 1, t);
    double fd = (f[0] - f[1]) / (2 * h);
    CHECK_NEAR(an, fd, 2e-3 * fabs(fd) + 1e-9);
    /* Each gap's distance. */
    for (int k = 0; k <= 3; k++) {
        double hz = 0.05;
        for (int s = 0; s < 2; s++) {
            net_set_gap(net, k, 8 + (s ? -hz : hz), 0);
            float d2[D2_MAX_DET];
            net_infer(net, in, d2, NULL, 0);
            f[s] = combo(d2, w, 10);
        }
        net_set_gap(net, k, 8, 0);
        fd = (f[0] - f[1]) / (2 * hz);
        CHECK_NEAR(gz[k], fd, 2e-2 * fabs(fd) + 1e-3 * fabs(f[0]));
    }
    for (int l = 0; l < 3; l++) free(gt[l]);
    free(dt), free(t), free(tp), free(in);
    dataset_free(&ds);
    net_free(net);
    model_free(&m);
}

TEST(pose_jacobian_matches_finite_differences_of_the_displaced_stack)
{
    d2_model m;
    small_model(&m, 3, 5);
    d2_dataset ds = {0};
    fake_digits(&ds, 1, 4);
    float *in = malloc(1600 * sizeof *in);
    input_from_u8(&m.g, ds.images, 28, 28, in);
    layer_pose pose[3] = {{0.07, -0.05, 0.3, 0.2}, {-0.11, 0.13, -0.4, -0.3}, {0.03, 0.09, 0.2, 0.4}};
    double E[10], J[10 * 12], Ep[10], Em[10], Jd[10 * 12];
    d2_err e = {0};
    CHECK(cal_pose_jacobian(&m, pose, in, E, J, &e) == 0);
    double worst = 0, scale = 0;
    for (int p = 0; p < 12; p++) {
        int l = p / 4, c = p % 4;
        double h = c == 2 ? 0.02 : c == 3 ? 0.01 : 0.004;
        layer_pose pp[3], pm[3];
        memcpy(pp, pose, sizeof pp);
        memcpy(pm, pose, sizeof pm);
        double *a = c == 0 ? &pp[l].dx_mm : c == 1 ? &pp[l].dy_mm : c == 2 ? &pp[l].dz_mm : &pp[l].rot_deg;
        double *b = c == 0 ? &pm[l].dx_mm : c == 1 ? &pm[l].dy_mm : c == 2 ? &pm[l].dz_mm : &pm[l].rot_deg;
        *a += h, *b -= h;
        cal_pose_jacobian(&m, pp, in, Ep, Jd, &e);
        cal_pose_jacobian(&m, pm, in, Em, Jd, &e);
        for (int k = 0; k < 10; k++) {
            double fd = (Ep[k] - Em[k]) / (2 * h), an = J[k * 12 + p];
            worst = fmax(worst, fabs(fd - an));
            scale = fmax(scale, fabs(fd));
        }
    }
    printf("  pose Jacobian: worst |analytic - FD| %.3g of max |FD| %.3g\n", worst, scale);
    CHECK(scale > 0);
    CHECK(worst < 0.03 * scale);
    free(in);
    dataset_free(&ds);
    model_free(&m);
}

static const char *write_meas(const char *name, const char *text)
{
    const char *p = t_path(name);
    t_write_text(p, text);
    return p;
}

TEST(meas_reader_names_line_and_column_of_bad_rows)
{
    cal_meas m;
    d2_err e = {0};
    const char *hdr = "input,d1,d2,d3\n";
    char buf[512];
    snprintf(buf, sizeof buf, "# lab run 3\n%stest:0,1,2,3\ntest:4,1.5,0,2e-3\n", hdr);
    CHECK(cal_meas_read(write_meas("ok.csv", buf), 3, 40, 3, 10, &m, &e) == 0);
    CHECK(m.count == 2 && m.test_index[1] == 4 && m.read[5] == 2e-3 && m.line[1] == 4);
    cal_meas_free(&m);
    CHECK(cal_meas_read(write_meas("ok.jsonl", "{\"input\": \"test:2\", \"readings\": [1, 2, 3]}\n\n"
                                   "{\"input\": \"test:3\", \"readings\": [0, 0, 1]}\n"),
                        3, 40, 3, 10, &m, &e) == 0);
    CHECK(m.count == 2 && m.test_index[0] == 2 && m.read[5] == 1);
    cal_meas_free(&m);
    snprintf(buf, sizeof buf, "%stest:0,1,2\n", hdr);
    CHECK_ERR(cal_meas_read(write_meas("cols.csv", buf), 3, 40, 3, 10, &m, &e), e, D2_EINPUT,
              "line 2: 3 columns, expected 4");
    snprintf(buf, sizeof buf, "%stest:0,1,nan,3\n", hdr);
    CHECK_ERR(cal_meas_read(write_meas("nan.csv", buf), 3, 40, 3, 10, &m, &e), e, D2_EINPUT,
              "line 2, column 3");
    snprintf(buf, sizeof buf, "%stest:0,1,2,3\ntest:1,1,2,-3\n", hdr);
    CHECK_ERR(cal_meas_read(write_meas("neg.csv", buf), 3, 40, 3, 10, &m, &e), e, D2_EINPUT,
              "line 3, column 4: reading -3 is negative");
    snprintf(buf, sizeof buf, "%stest:10,1,2,3\n", hdr);
    CHECK_ERR(cal_meas_read(write_meas("idx.csv", buf), 3, 40, 3, 10, &m, &e), e, D2_EINPUT,
              "images 0 to 9");
    snprintf(buf, sizeof buf, "%smask:7,1,2,3\n", hdr);
    CHECK_ERR(cal_meas_read(write_meas("kind.csv", buf), 3, 40, 3, 10, &m, &e), e, D2_EINPUT,
              "line 2, column 1: unknown input");
    snprintf(buf, sizeof buf, "%simage:nothere.png,1,2,3\n", hdr);
    CHECK_ERR(cal_meas_read(write_meas("img.csv", buf), 3, 40, 3, 10, &m, &e), e, D2_EINPUT,
              "line 2, column 1");
    snprintf(buf, sizeof buf, "#d2fab-meas neurons=200 layers=5 detectors=3\n%stest:0,1,2,3\n", hdr);
    CHECK_ERR(cal_meas_read(write_meas("optics.csv", buf), 3, 40, 3, 10, &m, &e), e, D2_EINPUT,
              "other optics");
    CHECK_ERR(cal_meas_read(write_meas("json.jsonl", "{\"input\": \"test:2\", \"readings\": [1, 2]}\n"),
                            3, 40, 3, 10, &m, &e), e, D2_EINPUT, "line 1: \"readings\" must be");
    CHECK_ERR(cal_meas_read(write_meas("empty.csv", hdr), 3, 40, 3, 10, &m, &e), e, D2_EINPUT,
              "no measurement rows");
    CHECK(m.read == NULL);
}

TEST(fit_recovers_hidden_poses_of_a_small_stack)
{
    d2_model m;
    small_model(&m, 3, 9);
    d2_dataset ds = {0};
    fake_digits(&ds, 120, 21);
    cal_sim_opts so = {120, 0.25, 1.0, 0.5, 0.5, 2.0, 0.05, 0.01, 3, 2};
    cal_meas meas;
    cal_truth truth;
    d2_err e = {0};
    CHECK(cal_simulate(&m, &ds, &so, &meas, &truth, &e) == 0);
    float *in = NULL;
    CHECK(cal_inputs(&m, &meas, &ds, &in, &e) == 0);
    cal_opts o;
    cal_opts_default(&o);
    o.threads = 2;
    cal_result r;
    CHECK(cal_fit(&m, &meas, in, &o, &r, &e) == 0);
    double wxy = 0, wz = 0, wr = 0;
    for (int l = 0; l < 3; l++) {
        printf("  layer %d: dx %+.3f (true %+.3f) dy %+.3f (%+.3f) dz %+.3f (%+.3f) rot %+.3f "
               "(%+.3f)\n", l + 1, r.pose[l].dx_mm, truth.pose[l].dx_mm, r.pose[l].dy_mm,
               truth.pose[l].dy_mm, r.pose[l].dz_mm, truth.pose[l].dz_mm, r.pose[l].rot_deg,
               truth.pose[l].rot_deg);
        wxy = fmax(wxy, fabs(r.pose[l].dx_mm - truth.pose[l].dx_mm));
        wxy = fmax(wxy, fabs(r.pose[l].dy_mm - truth.pose[l].dy_mm));
        wz = fmax(wz, fabs(r.pose[l].dz_mm - truth.pose[l].dz_mm));
        wr = fmax(wr, fabs(r.pose[l].rot_deg - truth.pose[l].rot_deg));
    }
    printf("  worst error: lateral %.3f mm, axial %.3f mm, rotation %.3f deg; %d iterations, "
           "rms %.4f\n", wxy, wz, wr, r.iterations, r.rms_rel);
    CHECK(wxy < 0.05);
    CHECK(wz < 0.3);
    CHECK(r.rms_rel < 0.02);
    free(in);
    cal_result_free(&r);
    cal_meas_free(&meas);
    dataset_free(&ds);
    model_free(&m);
}

static const char *bin(void)
{
    const char *b = getenv("D2FAB_BIN");
    return b && *b ? b : "./d2fab";
}

static double json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

TEST(simulate_then_calibrate_writes_a_twin_that_eval_loads_and_bad_meas_writes_nothing)
{
    d2_model m;
    small_model(&m, 3, 13);
    d2_err e = {0};
    const char *md = t_path("cli-model"), *meas = t_path("cli-meas.csv"),
               *truth = t_path("cli-truth.json"), *tw = t_path("cli-twin"),
               *bad = t_path("cli-bad.csv"), *tw2 = t_path("cli-twin2");
    CHECK(model_save(md, &m, &e) == 0);
    model_free(&m);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s simulate --model %s --out %s --truth %s --count 80 --xy-mm 0.2 "
             "--z-mm 1 --rot-deg 0.5 --seed 5 -j 2 > /dev/null", bin(), md, meas, truth);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s calibrate --model %s --measured %s --out %s -l 50 -j 2 -q "
             "> /dev/null", bin(), md, meas, tw);
    CHECK(system(cmd) == 0);
    CHECK(t_exists(t_path("cli-twin/model.json")) && t_exists(t_path("cli-twin/report.txt")));
    cJSON *tj = NULL, *tr = NULL;
    CHECK(cfg_load(t_path("cli-twin/twin.json"), &tj, &e) == 0);
    CHECK(cfg_load(truth, &tr, &e) == 0);
    const cJSON *fp = cJSON_GetObjectItem(tj, "poses"), *tp = cJSON_GetObjectItem(tr, "poses");
    CHECK(cJSON_GetArraySize(fp) == 3 && cJSON_GetArraySize(tp) == 3);
    for (int l = 0; l < 3 && cJSON_GetArraySize(fp) == 3; l++) {
        const cJSON *a = cJSON_GetArrayItem(fp, l), *b = cJSON_GetArrayItem(tp, l);
        CHECK_NEAR(json_num(a, "dx_mm"), json_num(b, "dx_mm"), 0.03);
        CHECK_NEAR(json_num(a, "dz_mm"), json_num(b, "dz_mm"), 0.2);
    }
    CHECK(json_num(tj, "twin_accuracy_images") == 50);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(tj, "explains_readings")));
    cJSON_Delete(tj);
    cJSON_Delete(tr);
    snprintf(cmd, sizeof cmd, "%s eval --model %s --limit 20 > /dev/null 2>&1", bin(), tw);
    CHECK(system(cmd) == 0);
    /* Retraining layer 3 alone against the twin leaves layers 1 and 2 as they are. */
    const char *rt = t_path("cli-retrain");
    snprintf(cmd, sizeof cmd, "%s train --config %s/model.json --init %s --train-layers 3 "
             "--epochs 1 --limit 64 --test-limit 20 -t 2 -q --out %s > /dev/null 2>&1", bin(), tw,
             tw, rt);
    CHECK(system(cmd) == 0);
    for (int l = 1; l <= 3; l++) {
        char a[4200], b[4200], *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        snprintf(a, sizeof a, "%s/layer%d.npy", tw, l);
        snprintf(b, sizeof b, "%s/layer%d.npy", rt, l);
        CHECK(d2_read_file(a, 1 << 20, &x, &nx, &e) == 0 && d2_read_file(b, 1 << 20, &y, &ny, &e) == 0);
        int same = x && y && nx == ny && !memcmp(x, y, nx);
        CHECK(same == (l < 3));
        free(x);
        free(y);
    }
    /* The same from the printed model with the fitted poses held fixed. */
    const char *rp = t_path("cli-retrain-poses");
    snprintf(cmd, sizeof cmd, "%s train --config %s/model.json --init %s --poses %s/twin.json "
             "--train-layers 3 --epochs 1 --limit 64 --test-limit 20 -t 2 -q --out %s > /dev/null "
             "2>&1", bin(), md, md, tw, rp);
    CHECK(system(cmd) == 0);
    for (int l = 1; l <= 3; l++) {
        char a[4200], b[4200], *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        snprintf(a, sizeof a, "%s/layer%d.npy", md, l);
        snprintf(b, sizeof b, "%s/layer%d.npy", rp, l);
        CHECK(d2_read_file(a, 1 << 20, &x, &nx, &e) == 0 && d2_read_file(b, 1 << 20, &y, &ny, &e) == 0);
        int same = x && y && nx == ny && !memcmp(x, y, nx);
        CHECK(same == (l < 3));
        free(x);
        free(y);
    }
    t_write_text(bad, "input,d1,d2,d3,d4,d5,d6,d7,d8,d9,d10\ntest:1,1,1,1,1,1,1,1,1,1,1\n"
                      "test:2,1,1,1,1,1,1,1,1,-1,1\n");
    snprintf(cmd, sizeof cmd, "%s calibrate --model %s --measured %s --out %s -q 2> %s",
             bin(), md, bad, tw2, t_path("cli-bad.err"));
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    CHECK(!t_exists(tw2));
    char *msg = NULL;
    size_t len = 0;
    CHECK(d2_read_file(t_path("cli-bad.err"), 1 << 16, &msg, &len, &e) == 0);
    CHECK(msg && strstr(msg, "line 3, column 10"));
    free(msg);
}

int main(void)
{
    RUN(adjoint_of_detectors_matches_finite_differences_of_transmission_and_gaps);
    RUN(pose_jacobian_matches_finite_differences_of_the_displaced_stack);
    RUN(meas_reader_names_line_and_column_of_bad_rows);
    RUN(fit_recovers_hidden_poses_of_a_small_stack);
    RUN(simulate_then_calibrate_writes_a_twin_that_eval_loads_and_bad_meas_writes_nothing);
    printf("%d passed, %d failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}
