/* d2fab simulate and d2fab calibrate: readings of a stack with hidden
 * errors, and the twin fitted to readings. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calibrate/calibrate.h"
#include "cli/cmds.h"
#include "export/export.h"
#include "train/train.h"

static void simulate_usage(FILE *f)
{
    fprintf(f,
            "usage: d2fab simulate --model DIR --out MEAS [options]\n\n"
            "Readings of the model's stack with hidden, recorded errors and detector noise, in\n"
            "the MEAS format calibrate reads (CSV; see README \"Calibration\").\n\n"
            "  -m, --model DIR        model or export folder\n"
            "  -o, --out MEAS         measurement file to write\n"
            "  -t, --truth JSON       also write the hidden errors here\n"
            "  -n, --count N          test images measured (the first N)           [200]\n"
            "      --xy-mm D          lateral error per layer, uniform in +-D        [0.4]\n"
            "      --z-mm D           axial error per layer, uniform in +-D          [1.5]\n"
            "      --rot-deg D        rotation per layer, uniform in +-D             [1]\n"
            "      --noise F          Gaussian noise, F times each reading           [0.01]\n"
            "      --gain-lo G, --gain-hi G  detector gains, uniform in [lo, hi]    [0.5, 2]\n"
            "      --offset F         dark offsets up to F x the mean reading       [0.05]\n"
            "  -s, --seed S           draws of errors, gains and noise               [1]\n"
            "      --optics MODEL     thin or thick   [thick for an export, else the model's]\n"
            "  -d, --data DIR         data folder with mnist/ and fashion/ [$D2FAB_DATA or data]\n"
            "  -l, --eval-limit N     also score the displaced stack and the design on\n"
            "                         the first N test images (0 = no)                [0]\n"
            "  -j, --threads N        worker threads                      [all cores]\n"
            "  -h, --help\n\n%s",
            cli_exit_help);
}

/* Loads the model and applies the optical model asked for (-1: thick for
 * an export, else the model's own). 0 or the exit status. */
static int load_optics(const char *cmd, const char *dir, int optics, d2_model *m)
{
    d2_err e = {0};
    int is_export = 0;
    if (export_model_load(dir, m, &is_export, &e)) return cli_error(cmd, e.code, e.msg);
    if (optics < 0) optics = is_export ? D2_OPTICS_THICK : m->g.optics;
    if (optics == D2_OPTICS_THIN && m->g.optics == D2_OPTICS_THICK) {
        model_free(m);
        return cli_error(cmd, D2_EINPUT, "--optics thin: this model was trained with thick plates");
    }
    if (optics == D2_OPTICS_THICK && model_make_thick(m, 0, &e)) {
        model_free(m);
        return cli_error(cmd, e.code, e.msg);
    }
    return 0;
}

static int parse_optics(const char *cmd, const char *s, int *optics)
{
    if (!strcmp(s, "thin")) *optics = D2_OPTICS_THIN;
    else if (!strcmp(s, "thick")) *optics = D2_OPTICS_THICK;
    else {
        fprintf(stderr, "d2fab %s: --optics '%s': expected thin or thick\n", cmd, s);
        return -1;
    }
    return 0;
}

static int load_test_set(const char *cmd, const d2_model *m, const char *data, d2_dataset *ds)
{
    d2_err e = {0};
    if (dataset_open(data, m->t.dataset, &m->t.data, 1, ds, &e)) return cli_error(cmd, e.code, e.msg);
    return 0;
}

/* Accuracy of m's stack displaced by pose (cal_set_stack) on the first
 * limit test images of ds. */
static int stack_accuracy(const d2_model *m, const layer_pose *pose, const d2_dataset *ds,
                          int limit, int threads, double *acc, int *count, d2_err *e)
{
    d2_pool *pool = d2_pool_new(threads, e);
    if (!pool) return e->code;
    d2_net *net = net_new(&m->g, d2_pool_threads(pool), e);
    eval_result er;
    int rc = !net || cal_set_stack(net, m, pose, e) ||
             eval_net(net, ds, limit, pool, NULL, &er, NULL, e) ? e->code : 0;
    if (!rc) {
        *acc = er.accuracy;
        *count = er.count;
    }
    net_free(net);
    d2_pool_free(pool);
    return rc;
}

int cmd_simulate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"out", required_argument, 0, 'o'},
        {"truth", required_argument, 0, 't'}, {"count", required_argument, 0, 'n'},
        {"xy-mm", required_argument, 0, 'X'}, {"z-mm", required_argument, 0, 'Z'},
        {"rot-deg", required_argument, 0, 'R'}, {"noise", required_argument, 0, 'N'},
        {"gain-lo", required_argument, 0, 'g'}, {"gain-hi", required_argument, 0, 'G'},
        {"offset", required_argument, 0, 'F'}, {"seed", required_argument, 0, 's'},
        {"optics", required_argument, 0, 'O'}, {"data", required_argument, 0, 'd'},
        {"eval-limit", required_argument, 0, 'l'},
        {"threads", required_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *out = NULL, *truth_path = NULL, *data = dataset_default_dir();
    cal_sim_opts so = {200, 0.4, 1.5, 1.0, 0.5, 2.0, 0.05, 0.01, 1, 0};
    int optics = -1, c;
    long lv, eval_limit = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:t:n:s:d:j:l:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 't': truth_path = optarg; break;
        case 'n': bad = cli_int("simulate", "--count", optarg, 1, 1000000, &lv); so.count = (int)lv; break;
        case 'X': bad = cli_num("simulate", "--xy-mm", optarg, 0, 10, &so.max_xy_mm); break;
        case 'Z': bad = cli_num("simulate", "--z-mm", optarg, 0, 100, &so.max_z_mm); break;
        case 'R': bad = cli_num("simulate", "--rot-deg", optarg, 0, 45, &so.max_rot_deg); break;
        case 'N': bad = cli_num("simulate", "--noise", optarg, 0, 1, &so.noise); break;
        case 'g': bad = cli_num("simulate", "--gain-lo", optarg, 1e-6, 1e6, &so.gain_lo); break;
        case 'G': bad = cli_num("simulate", "--gain-hi", optarg, 1e-6, 1e6, &so.gain_hi); break;
        case 'F': bad = cli_num("simulate", "--offset", optarg, 0, 10, &so.offset_max); break;
        case 's': bad = cli_int("simulate", "--seed", optarg, 0, 2147483647L, &lv); so.seed = (unsigned long)lv; break;
        case 'O': bad = parse_optics("simulate", optarg, &optics); break;
        case 'd': data = optarg; break;
        case 'j': bad = cli_int("simulate", "--threads", optarg, 0, 1024, &lv); so.threads = (int)lv; break;
        case 'l': bad = cli_int("simulate", "--eval-limit", optarg, 0, 10000000, &eval_limit); break;
        case 'h': simulate_usage(stdout); return 0;
        default: simulate_usage(stderr); return 1;
        }
        if (bad) return 1;
    }
    if (!model || !out || optind < argc) {
        simulate_usage(stderr);
        return 1;
    }
    if (so.gain_hi < so.gain_lo) return cli_error("simulate", D2_EUSAGE, "--gain-hi is below --gain-lo");
    d2_model m;
    int rc = load_optics("simulate", model, optics, &m);
    if (rc) return rc;
    d2_dataset ds = {0};
    if ((rc = load_test_set("simulate", &m, data, &ds))) {
        model_free(&m);
        return rc;
    }
    d2_err e = {0};
    layer_pose zero[D2_MAX_LAYERS] = {{0}};
    cal_meas meas = {0};
    cal_truth truth;
    if (cal_simulate(&m, &ds, &so, &meas, &truth, &e) ||
        (eval_limit > 0 &&
         (stack_accuracy(&m, truth.pose, &ds, (int)eval_limit, so.threads, &truth.accuracy,
                         &truth.accuracy_images, &e) ||
          stack_accuracy(&m, zero, &ds, (int)eval_limit, so.threads, &truth.design_accuracy,
                         &truth.accuracy_images, &e))) ||
        cal_meas_write(out, &meas, &e) ||
        (truth_path && cal_truth_write(truth_path, &m, &truth, &so, &e))) {
        rc = cli_error("simulate", e.code, e.msg);
    } else {
        printf("simulate: %d readings of %s (%s model, seed %lu) -> %s\n", meas.count, model,
               optics_name(&m.g), so.seed, out);
        if (eval_limit > 0)
            printf("  displaced stack: accuracy %.2f %% (design %.2f %%) on %d test images\n",
                   100 * truth.accuracy, 100 * truth.design_accuracy, truth.accuracy_images);
    }
    cal_meas_free(&meas);
    dataset_free(&ds);
    model_free(&m);
    return rc;
}

static void calibrate_usage(FILE *f)
{
    fprintf(f,
            "usage: d2fab calibrate --model DIR --measured MEAS --out TWIN [options]\n\n"
            "Fits the stack's per-layer lateral, axial and rotation errors and the detector\n"
            "gains and offsets to measured readings (Levenberg-Marquardt on the network's\n"
            "adjoint), and writes the twin: a model folder with the errors baked in that eval,\n"
            "tolerance and train --init load, twin.json, report.txt and scatter.png.\n\n"
            "  -m, --model DIR        the model or export that was printed\n"
            "  -M, --measured MEAS    readings (CSV or JSON lines; README \"Calibration\")\n"
            "  -o, --out TWIN         twin folder to write\n"
            "      --optics MODEL     thin or thick (thick: not fitted yet, fails) [thick for\n"
            "                         an export, else the model's own]\n"
            "  -i, --iterations N     Levenberg-Marquardt iterations per stage        [60]\n"
            "      --reg W            weight of the prior (widths below), 0 = none     [1]\n"
            "      --prior-xy-mm D, --prior-z-mm D, --prior-rot-deg D     [0.5, 2, 1.5]\n"
            "      --noise F          relative noise of a reading                   [0.01]\n"
            "      --no-rotation      hold every rotation at 0\n"
            "      --coarse N         first fit the first N inputs alone, 0 = no       [50]\n"
            "      --start JSON       start from the poses of a twin.json (or a simulate\n"
            "                         --truth file)                           [all zero]\n"
            "  -l, --eval-limit N     test images for the twin's accuracy, 0 = none  [1000]\n"
            "  -d, --data DIR         data folder with mnist/ and fashion/ [$D2FAB_DATA or data]\n"
            "  -j, --threads N        worker threads                      [all cores]\n"
            "  -q, --quiet            no progress lines\n"
            "  -h, --help\n\n%s",
            cli_exit_help);
}

typedef struct cal_args {
    const char *model, *meas, *out, *data, *start;
    layer_pose start_pose[D2_MAX_LAYERS];
    int optics, quiet;
    long eval_limit;
    cal_opts o;
} cal_args;

static int calibrate_parse(int argc, char **argv, cal_args *a)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"measured", required_argument, 0, 'M'},
        {"out", required_argument, 0, 'o'}, {"optics", required_argument, 0, 'O'},
        {"iterations", required_argument, 0, 'i'}, {"reg", required_argument, 0, 'r'},
        {"prior-xy-mm", required_argument, 0, 'X'}, {"prior-z-mm", required_argument, 0, 'Z'},
        {"prior-rot-deg", required_argument, 0, 'R'}, {"noise", required_argument, 0, 'N'},
        {"no-rotation", no_argument, 0, 'T'}, {"eval-limit", required_argument, 0, 'l'},
        {"coarse", required_argument, 0, 'C'},
        {"data", required_argument, 0, 'd'}, {"threads", required_argument, 0, 'j'},
        {"start", required_argument, 0, 'S'}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    long lv;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:M:o:i:l:d:j:qh", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': a->model = optarg; break;
        case 'M': a->meas = optarg; break;
        case 'o': a->out = optarg; break;
        case 'O': bad = parse_optics("calibrate", optarg, &a->optics); break;
        case 'i': bad = cli_int("calibrate", "--iterations", optarg, 1, 1000, &lv); a->o.max_iter = (int)lv; break;
        case 'r': bad = cli_num("calibrate", "--reg", optarg, 0, 1e6, &a->o.reg); break;
        case 'X': bad = cli_num("calibrate", "--prior-xy-mm", optarg, 1e-6, 100, &a->o.prior_xy_mm); break;
        case 'Z': bad = cli_num("calibrate", "--prior-z-mm", optarg, 1e-6, 1000, &a->o.prior_z_mm); break;
        case 'R': bad = cli_num("calibrate", "--prior-rot-deg", optarg, 1e-6, 90, &a->o.prior_rot_deg); break;
        case 'N': bad = cli_num("calibrate", "--noise", optarg, 1e-9, 1, &a->o.noise); break;
        case 'T': a->o.fit_rot = 0; break;
        case 'C': bad = cli_int("calibrate", "--coarse", optarg, 0, 1000000, &lv); a->o.coarse = (int)lv; break;
        case 'S': a->start = optarg; break;
        case 'l': bad = cli_int("calibrate", "--eval-limit", optarg, 0, 10000000, &a->eval_limit); break;
        case 'd': a->data = optarg; break;
        case 'j': bad = cli_int("calibrate", "--threads", optarg, 0, 1024, &lv); a->o.threads = (int)lv; break;
        case 'q': a->quiet = 1; break;
        case 'h': calibrate_usage(stdout); return 0;
        default: calibrate_usage(stderr); return 1;
        }
        if (bad) return 1;
    }
    if (!a->model || !a->meas || !a->out || optind < argc) {
        calibrate_usage(stderr);
        return 1;
    }
    return -1;
}

int cmd_calibrate(int argc, char **argv)
{
    cal_args a = {.data = dataset_default_dir(), .optics = -1, .eval_limit = 1000};
    cal_opts_default(&a.o);
    int rc = calibrate_parse(argc, argv, &a);
    if (rc >= 0) return rc;
    if (!a.quiet) a.o.progress = stderr;
    d2_model m;
    if ((rc = load_optics("calibrate", a.model, a.optics, &m))) return rc;
    d2_err e = {0};
    if (a.start) {
        if (cal_poses_read(a.start, m.g.layers, a.start_pose, &e)) {
            model_free(&m);
            return cli_error("calibrate", e.code, e.msg);
        }
        a.o.start = a.start_pose;
    }
    d2_dataset ds = {0};
    if ((rc = load_test_set("calibrate", &m, a.data, &ds))) {
        model_free(&m);
        return rc;
    }
    cal_meas meas = {0};
    cal_result r = {0};
    float *inputs = NULL;
    if (cal_meas_read(a.meas, m.g.ndet, m.g.n, m.g.layers, ds.count, &meas, &e) ||
        cal_inputs(&m, &meas, &ds, &inputs, &e) || cal_fit(&m, &meas, inputs, &a.o, &r, &e) ||
        (a.eval_limit > 0 && stack_accuracy(&m, r.pose, &ds, (int)a.eval_limit, a.o.threads,
                                             &r.twin_accuracy, &r.twin_images, &e)) ||
        cal_twin_write(a.out, &m, a.model, &meas, &r, &e)) {
        rc = cli_error("calibrate", e.code, e.msg);
    } else {
        printf("calibrate: %d readings, %d iterations, %.1f s, rms relative residual %.4f\n",
               meas.count, r.iterations, r.seconds, r.rms_rel);
        for (int l = 0; l < r.layers; l++)
            printf("  layer %d: dx %+.3f +- %.3f mm, dy %+.3f +- %.3f mm, dz %+.3f +- %.3f mm, "
                   "rotation %+.3f +- %.3f deg\n", l + 1, r.pose[l].dx_mm, r.sigma[l].dx_mm,
                   r.pose[l].dy_mm, r.sigma[l].dy_mm, r.pose[l].dz_mm, r.sigma[l].dz_mm,
                   r.pose[l].rot_deg, r.sigma[l].rot_deg);
        if (r.twin_images > 0)
            printf("  twin accuracy %.2f %% on %d test images\n", 100 * r.twin_accuracy,
                   r.twin_images);
        if (r.rms_rel > 2 * r.noise)
            printf("  WARNING: rms relative residual %.4f, over twice the noise %.4f: the fit may "
                   "sit in a wrong basin (report.txt)\n", r.rms_rel, r.noise);
        printf("twin -> %s (report.txt, twin.json)\n", a.out);
    }
    free(inputs);
    cal_result_free(&r);
    cal_meas_free(&meas);
    dataset_free(&ds);
    model_free(&m);
    return rc;
}
