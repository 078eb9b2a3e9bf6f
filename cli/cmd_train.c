/* d2fab train / d2fab eval */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calibrate/calibrate.h"
#include "cli/cmds.h"
#include "core/config.h"
#include "core/fileio.h"
#include "core/par.h"
#include "core/util.h"
#include "export/export.h"
#include "train/train.h"

static void train_help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab train --config CFG.json --out DIR [options]\n\n"
            "Trains the phase layers of a diffractive network on MNIST or Fashion-MNIST\n"
            "(angular-spectrum optics on FFTW, Adam, softmax cross-entropy or MSE).\n\n"
            "  -c, --config FILE    training config (JSON; see samples/*.json)         [required]\n"
            "  -o, --out DIR        model directory: model.json, layerK.npy, layerK.png,\n"
            "                       checkpoints/ after every epoch                     [required]\n"
            "  -d, --data DIR       data folder with mnist/ and fashion/   [$D2FAB_DATA or data]\n"
            "  -e, --epochs N       override training.epochs                 [from config: 10]\n"
            "  -l, --limit N        train on the first N training images      [all: 60000]\n"
            "      --test-limit N   evaluate on the first N test images       [all: 10000]\n"
            "  -t, --threads N      worker threads                               [all cores]\n"
            "  -r, --resume         continue from DIR/checkpoints/latest\n"
            "  -i, --init MODEL     start from this model's phases (same geometry), e.g. to\n"
            "                       fine-tune a trained model for misalignment; model.json\n"
            "                       records it under \"initialised_from\"; an export folder\n"
            "                       into a thick config starts from its printed heights [zeros]\n"
            "      --init-regap     a thin --init into a thick config: train in the config's\n"
            "                       air gaps; without it they must be the init's assembly\n"
            "                       (its datum gaps less the config's plates)          [off]\n"
            "Fabrication-aware training (override the config's training section):\n"
            "      --jitter-xy-mm D     random lateral layer shift per batch, uniform +-D mm  [0]\n"
            "      --jitter-z-mm D      random axial layer shift per batch, uniform +-D mm    [0]\n"
            "      --jitter-rot-deg D   random in-plane rotation per batch, +-D degrees       [0]\n"
            "      --quantize-levels K  train on phases quantised to K levels per 2 pi\n"
            "                           (straight-through gradient)                         [off]\n"
            "      --quantize-z-step-mm S  quantise the implied thickness to S mm instead  [off]\n"
            "      --train-layers LIST  train only these layers (e.g. 5 or 4,5), the others\n"
            "                       keep the phases --init gave them: a replacement plate\n"
            "                       for a calibrated twin (README \"Calibration\")     [all]\n"
            "      --poses JSON     train the stack displaced by the fixed poses of a\n"
            "                       calibrate twin.json (with --init the printed model)  [none]\n"
            "  -q, --quiet          no progress output\n"
            "  -h, --help           this help\n\n"
            "The same config, seed and thread count give the same model.\n\n%s",
            cli_exit_help);
}

/* train --init: a model folder, or an export folder (its printed heights). */
static int init_model(d2_model *m, const char *init, const char *cfg, int regap, d2_err *e)
{
    d2_model s0;
    int rc = export_model_load(init, &s0, NULL, e);
    if (rc) return rc;
    rc = train_init_model(m, &s0, init, cfg, regap, e);
    model_free(&s0);
    return rc;
}

/* --train-layers LIST: comma-separated layer numbers (1-based) -> bitmask;
 * 0 and a message on a malformed list. */
static unsigned parse_train_layers(const char *s)
{
    unsigned mask = 0;
    const char *p = s;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > D2_MAX_LAYERS || (*end && *end != ',')) {
            fprintf(stderr, "d2fab train: --train-layers '%s': expected layer numbers 1..%d "
                    "separated by commas, e.g. 5 or 4,5\n", s, D2_MAX_LAYERS);
            return 0;
        }
        mask |= 1u << (v - 1);
        if (!*end) return mask;
        p = end + 1;
    }
}

int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"out", required_argument, 0, 'o'},
        {"data", required_argument, 0, 'd'},   {"epochs", required_argument, 0, 'e'},
        {"limit", required_argument, 0, 'l'},  {"test-limit", required_argument, 0, 'T'},
        {"threads", required_argument, 0, 't'}, {"resume", no_argument, 0, 'r'},
        {"quiet", no_argument, 0, 'q'},        {"help", no_argument, 0, 'h'},
        {"init", required_argument, 0, 'i'}, {"init-regap", no_argument, 0, 'G'},
        {"jitter-xy-mm", required_argument, 0, 'X'}, {"jitter-z-mm", required_argument, 0, 'Z'},
        {"jitter-rot-deg", required_argument, 0, 'R'},
        {"quantize-levels", required_argument, 0, 'K'},
        {"quantize-z-step-mm", required_argument, 0, 'S'},
        {"train-layers", required_argument, 0, 'L'}, {"poses", required_argument, 0, 'P'},
        {0, 0, 0, 0}};
    const char *cfg = NULL, *out = NULL, *data = dataset_default_dir(), *init = NULL;
    const char *poses_path = NULL;
    layer_pose poses[D2_MAX_LAYERS];
    double jxy = -1, jz = -1, jrot = -1, zstep = -1;
    long qlev = -1;
    long epochs = -1, limit = -1, tlimit = -1, threads = 0;
    int resume = 0, quiet = 0, regap = 0, c;
    unsigned train_layers = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:o:d:e:l:t:i:rqh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cfg = optarg; break;
        case 'o': out = optarg; break;
        case 'd': data = optarg; break;
        case 'e': if (cli_int("train", "epochs", optarg, 0, 10000, &epochs)) return 1; break;
        case 'l': if (cli_int("train", "limit", optarg, 1, 10000000, &limit)) return 1; break;
        case 'T': if (cli_int("train", "test-limit", optarg, 1, 10000000, &tlimit)) return 1; break;
        case 't': if (cli_int("train", "threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'r': resume = 1; break;
        case 'i': init = optarg; break;
        case 'G': regap = 1; break;
        case 'q': quiet = 1; break;
        case 'X': if (cli_num("train", "jitter-xy-mm", optarg, 0, 100, &jxy)) return 1; break;
        case 'Z': if (cli_num("train", "jitter-z-mm", optarg, 0, 1000, &jz)) return 1; break;
        case 'R': if (cli_num("train", "jitter-rot-deg", optarg, 0, 180, &jrot)) return 1; break;
        case 'K': if (cli_int("train", "quantize-levels", optarg, 2, 65536, &qlev)) return 1; break;
        case 'S': if (cli_num("train", "quantize-z-step-mm", optarg, 1e-6, 10, &zstep)) return 1; break;
        case 'L': if (!(train_layers = parse_train_layers(optarg))) return 1; break;
        case 'P': poses_path = optarg; break;
        case 'h': train_help(stdout); return 0;
        default: train_help(stderr); return 1;
        }
    }
    if (!cfg || !out || optind < argc) {
        if (optind < argc) fprintf(stderr, "d2fab train: unexpected argument '%s'\n", argv[optind]);
        else fprintf(stderr, "d2fab train: --config and --out are required\n");
        train_help(stderr);
        return 1;
    }
    /* Under mpirun only rank 0 reports progress. */
    if (d2_par_rank() > 0) quiet = 1;
    d2_err e = {0};
    d2_model m = {0};
    int rc = config_load(cfg, &m.g, &m.t, &e);
    if (rc) return cli_error("train", rc, e.msg);
    if (epochs >= 0) m.t.epochs = (int)epochs;
    if (limit > 0) m.t.train_limit = (int)limit;
    if (tlimit > 0) m.t.test_limit = (int)tlimit;
    if (jxy >= 0) m.t.jitter_xy_mm = jxy;
    if (jz >= 0) m.t.jitter_z_mm = jz;
    if (jrot >= 0) m.t.jitter_rot_deg = jrot;
    if (qlev > 0) m.t.quant_levels = (int)qlev, m.t.quant_z_step_mm = 0;
    if (zstep > 0) m.t.quant_z_step_mm = zstep, m.t.quant_levels = 0;
    if ((rc = model_alloc(&m, &e))) {
        model_free(&m);
        return cli_error("train", rc, e.msg);
    }
    if (init && (rc = init_model(&m, init, cfg, regap, &e))) {
        model_free(&m);
        return cli_error("train", rc, e.msg);
    }
    if (train_layers >> m.g.layers) {
        model_free(&m);
        fprintf(stderr, "d2fab train: --train-layers names a layer beyond the %d of %s\n",
                m.g.layers, cfg);
        return 1;
    }
    if (poses_path && (rc = cal_poses_read(poses_path, m.g.layers, poses, &e))) {
        model_free(&m);
        return cli_error("train", rc, e.msg);
    }
    train_run_opts ro = {data, (int)threads, resume, quiet ? NULL : stderr, train_layers,
                         poses_path ? poses : NULL};
    if (!quiet)
        fprintf(stderr,
                "training %d layers of %d x %d at %.4g mm pitch, wavelength %.4g mm, on %s "
                "(%d epochs, batch %d)\n",
                m.g.layers, m.g.n, m.g.n, m.g.pitch_mm, m.g.wavelength_mm, m.t.dataset,
                m.t.epochs, m.t.batch);
    rc = train_model(&m, out, &ro, &e);
    if (rc) {
        model_free(&m);
        return cli_error("train", rc, e.msg);
    }
    if (m.test_accuracy >= 0)
        printf("%s: test accuracy %.2f%% after %d epochs, %.0f s\n", out, 100 * m.test_accuracy,
               m.t.epochs, m.train_seconds);
    model_free(&m);
    return 0;
}

static void eval_help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab eval --model DIR [options]\n\n"
            "Accuracy, per-class accuracy, confusion matrix and optical efficiency of a\n"
            "trained model (or an export directory: what will be printed) on the test set.\n\n"
            "  -m, --model DIR      model directory (model.json) or export directory   [required]\n"
            "  -d, --data DIR       data folder                    [$D2FAB_DATA or data]\n"
            "  -l, --limit N        first N test images                      [all: 10000]\n"
            "  -t, --threads N      worker threads                              [all cores]\n"
            "  -p, --png FILE       output-intensity montage of 10 test images [DIR/eval.png]\n"
            "  -j, --json           print the result as JSON on stdout\n"
            "      --optics MODEL   thin (phase screens at the flat faces, gaps datum to\n"
            "                       datum) or thick (plates of base and relief, split-step\n"
            "                       through the relief; gaps become air gaps)\n"
            "                                  [thick for an export, else the model's own]\n"
            "      --correct-spacing  thick: lengthen each gap after a plate by its paraxial\n"
            "                       shortening (mean height)(1 - 1/n), as a stack re-spaced\n"
            "                       for thick plates would be                          [off]\n"
            "      --slice-mm D     thick: largest relief slice                [lambda / 10]\n"
            "      --subpixels S    thick: S x S sub-pixels per neuron                   [2]\n"
            "      --relief-side S  thick: the relief faces the detector or the source (the\n"
            "                       plate turned round; its flat face stays at its datum)\n"
            "                                                             [detector]\n"
            "      --spacing-error-mm D  lengthen every gap after layer 1 (plate to plate\n"
            "                       and the last plate to the detector) by D mm, negative\n"
            "                       shortens: an assembly spaced wrong by D           [0]\n"
            "  -h, --help           this help\n\n%s",
            cli_exit_help);
}

/* What `eval` was asked for. */
typedef struct eval_args {
    const char *dir, *data, *png;
    int optics, correct, side, json;
    double slice, spacing_err;
    long subpix, limit, threads;
} eval_args;

/* Parses the options into a; -1 to go on, else the exit status. */
static int eval_parse(int argc, char **argv, eval_args *a)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
        {"limit", required_argument, 0, 'l'}, {"threads", required_argument, 0, 't'},
        {"png", required_argument, 0, 'p'},   {"json", no_argument, 0, 'j'},
        {"optics", required_argument, 0, 'O'}, {"correct-spacing", no_argument, 0, 'C'},
        {"slice-mm", required_argument, 0, 'Z'}, {"subpixels", required_argument, 0, 'S'},
        {"relief-side", required_argument, 0, 'R'},
        {"spacing-error-mm", required_argument, 0, 'E'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:d:l:t:p:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->dir = optarg; break;
        case 'd': a->data = optarg; break;
        case 'l': if (cli_int("eval", "limit", optarg, 1, 10000000, &a->limit)) return 1; break;
        case 't': if (cli_int("eval", "threads", optarg, 1, 1024, &a->threads)) return 1; break;
        case 'p': a->png = optarg; break;
        case 'j': a->json = 1; break;
        case 'O':
            if (!strcmp(optarg, "thin")) a->optics = D2_OPTICS_THIN;
            else if (!strcmp(optarg, "thick")) a->optics = D2_OPTICS_THICK;
            else {
                fprintf(stderr, "d2fab eval: --optics '%s': expected thin or thick\n", optarg);
                return 1;
            }
            break;
        case 'C': a->correct = 1; break;
        case 'R':
            if (!strcmp(optarg, "detector")) a->side = D2_RELIEF_DETECTOR;
            else if (!strcmp(optarg, "source")) a->side = D2_RELIEF_SOURCE;
            else {
                fprintf(stderr, "d2fab eval: --relief-side '%s': expected detector or source\n",
                        optarg);
                return 1;
            }
            break;
        case 'Z': if (cli_num("eval", "slice-mm", optarg, 1e-4, 10, &a->slice)) return 1; break;
        case 'E':
            if (cli_num("eval", "spacing-error-mm", optarg, -100, 100, &a->spacing_err)) return 1;
            break;
        case 'S': if (cli_int("eval", "subpixels", optarg, 1, 16, &a->subpix)) return 1; break;
        case 'h': eval_help(stdout); return 0;
        default: eval_help(stderr); return 1;
        }
    }
    if (!a->dir || optind < argc) {
        if (optind < argc) fprintf(stderr, "d2fab eval: unexpected argument '%s'\n", argv[optind]);
        else fprintf(stderr, "d2fab eval: --model is required\n");
        eval_help(stderr);
        return 1;
    }
    return -1;
}

/* The optical model asked for, applied to m: thin or thick (slices,
 * sub-pixels, relief side, spacing corrected), and the spacing error. 0, or
 * the exit status (m is then freed). */
static int eval_optics(d2_model *m, const eval_args *a, int is_export)
{
    d2_err e = {0};
    int optics = a->optics >= 0 ? a->optics : is_export ? D2_OPTICS_THICK : m->g.optics;
    int rc;
    /* a thick design as phase screens at the datum faces of its assembly */
    if (optics == D2_OPTICS_THIN) model_make_thin(m);
    if (optics == D2_OPTICS_THICK) {
        if (a->slice > 0) m->g.slice_mm = a->slice;
        if (a->subpix > 0) m->g.subpix = (int)a->subpix;
        if (a->side >= 0) m->g.relief_side = a->side;
        if ((rc = model_make_thick(m, a->correct, &e))) {
            model_free(m);
            return cli_error("eval", rc, e.msg);
        }
    } else if (a->correct || a->slice > 0 || a->subpix > 0 || a->side >= 0) {
        model_free(m);
        fprintf(stderr, "d2fab eval: --correct-spacing, --slice-mm, --subpixels and --relief-side "
                        "need --optics thick\n");
        return 1;
    }
    for (int k = 1; k <= m->g.layers; k++) {
        double z = (m->g.gap_mm[k] += a->spacing_err);
        if (!(z > 0)) {
            model_free(m);
            fprintf(stderr, "d2fab eval: --spacing-error-mm %g: gap %d would be %g mm; allowed: "
                    "every gap stays > 0\n", a->spacing_err, k + 1, z);
            return 1;
        }
    }
    return 0;
}

/* The result as JSON, with the optical model that produced it. */
static cJSON *eval_json(const eval_args *a, const d2_model *m, const eval_result *r, int is_export,
                        double secs)
{
    cJSON *o = eval_to_json(r, geom_classes(&m->g));
    cJSON *oj = optics_to_json(&m->g);
    cJSON_AddStringToObject(oj, "scored", is_export ? "export (printed heights)" : "model (phases)");
    if (m->g.optics == D2_OPTICS_THICK)
        cJSON_AddStringToObject(oj, "spacing", a->correct ? "corrected for the slabs" : "as built");
    cJSON_AddNumberToObject(oj, "spacing_error_mm", a->spacing_err);
    cJSON *ga = cJSON_AddArrayToObject(oj, "gaps_mm");
    for (int k = 0; k <= m->g.layers; k++)
        cJSON_AddItemToArray(ga, cJSON_CreateNumber(m->g.gap_mm[k]));
    cJSON_AddItemToObject(o, "optics", oj);
    cJSON_AddNumberToObject(o, "seconds", secs);
    return o;
}

/* The result for a person: accuracy, optical model, time, per class, confusion. */
static void eval_print(const eval_args *a, const d2_model *m, const eval_result *r, double secs,
                       const char *png)
{
    printf("%s: accuracy %.2f%% (%d/%d test images of %s)\n", a->dir, 100 * r->accuracy,
           r->correct, r->count, m->t.dataset);
    if (m->g.optics == D2_OPTICS_THICK)
        printf("optical model: thick plates (relief toward the %s, slices <= %.4g mm, %d x %d "
               "sub-pixels, Fresnel %s), air gaps%s\n",
               m->g.relief_side == D2_RELIEF_SOURCE ? "source" : "detector",
               thick_slice_max(&m->g), thick_subpix(&m->g), thick_subpix(&m->g),
               m->g.no_fresnel ? "off" : "on",
               a->correct ? ", spacing corrected for the slabs" : " of the assembly as built");
    else
        printf("optical model: thin phase screens, gaps datum to datum\n");
    if (a->spacing_err != 0)
        printf("spacing error: every gap after layer 1 %+g mm\n", a->spacing_err);
    printf("time %.1f s, %.2f ms per image\n", secs, 1e3 * secs / (r->count ? r->count : 1));
    printf("detector efficiency %.4f (detector energy / input energy), output plane %.4f\n",
           r->efficiency, r->output_efficiency);
    printf("light: detector efficiency 5th percentile %.4g, background %.4g of the input "
           "(%.1f%% of the output plane), margin %.4g (5th percentile %.4g) [%s detection]\n",
           r->efficiency_p5, r->background, 100 * r->background_fraction, r->margin_mean,
           r->margin_p5, detect_scheme_name(&m->g));
    int nc = geom_classes(&m->g);
    printf("per class:");
    for (int k = 0; k < nc; k++)
        printf(" %d:%.1f%%", k,
               r->class_count[k] ? 100.0 * r->class_correct[k] / r->class_count[k] : 0.0);
    printf("\nconfusion (rows: true class, columns: predicted)\n     ");
    for (int k = 0; k < nc; k++) printf("%6d", k);
    printf("\n");
    for (int i = 0; i < nc; i++) {
        printf("%4d ", i);
        for (int j = 0; j < nc; j++) printf("%6d", r->confusion[i][j]);
        printf("\n");
    }
    printf("output intensity of the first test images: %s\n", png);
}

int cmd_eval(int argc, char **argv)
{
    eval_args a = {NULL, dataset_default_dir(), NULL, -1, 0, -1, 0, 0, 0, 0, 0, 0};
    int rc = eval_parse(argc, argv, &a);
    if (rc >= 0) return rc;
    d2_err e = {0};
    d2_model m;
    if ((rc = cli_load_model(a.dir, &m, &e))) return cli_error("eval", rc, e.msg);
    int is_export = m.height[0] != NULL;
    if ((rc = eval_optics(&m, &a, is_export))) return rc;
    char pngpath[4096];
    const char *png = a.png;
    if (!png) {
        snprintf(pngpath, sizeof pngpath, "%s/eval.png", a.dir);
        png = pngpath;
    }
    eval_result r;
    double t0 = d2_now();
    rc = eval_model(&m, a.data, (int)a.limit, (int)a.threads, png, a.json || d2_par_rank() ? NULL : stderr, &r,
                    &e);
    double secs = d2_now() - t0;
    if (rc) {
        model_free(&m);
        return cli_error("eval", rc, e.msg);
    }
    cJSON *o = eval_json(&a, &m, &r, is_export, secs);
    if (a.json) {
        char *s = (rc = cfg_json_complete("eval --json", &e)) ? NULL : cJSON_Print(o);
        if (!s) {
            cJSON_Delete(o);
            model_free(&m);
            return cli_error("eval", rc ? rc : D2_EIO, rc ? e.msg : "out of memory");
        }
        printf("%s\n", s);
        free(s);
    } else {
        eval_print(&a, &m, &r, secs, png);
    }
    cJSON_Delete(o);
    model_free(&m);
    return 0;
}
