/* d2fab mask: printable input masks from test digits, and what the network
 * reads through them. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmds.h"
#include "core/config.h"
#include "core/idx.h"
#include "export/export.h"
#include "mask/mask.h"

#define CMD "mask"
#define MAX_IMAGES 256

static void mask_help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab mask --model DIR --out DIR (--mnist-index I | --digit D |\n"
            "                  --image FILE.png ...) [options]\n\n"
            "Makes printable input masks: the digit resampled onto the model's input plane\n"
            "exactly as the network sees it (same pitch and aperture), binarised (open where\n"
            "the amplitude is at least THRESHOLD x the brightest plane pixel), cut through a\n"
            "plate with the frame, posts and pins of the layer plates so it stacks in front\n"
            "of layer 1 at the model's first gap. Openings narrower than the printer's\n"
            "minimum feature (w = ceil(min_feature / pitch) pixels) are closed; opaque\n"
            "islands (counters of 0, 4, 6, 8, 9, stray specks; parts connected only through\n"
            "a corner count as separate) are tied to the plate by bridges at least w pixels\n"
            "wide, each along the path that blocks the fewest open pixels; diagonal pinches\n"
            "are closed. Each mask is read by the network as the original image, as the\n"
            "binarised aperture and as the printable mask.\n\n"
            "Writes OUT/NAME.png (preview), OUT/NAME.stl (plate), OUT/masks.jsonl (one line\n"
            "per mask) and OUT/summary.json; NAME is mask_mnistIIIII or mask_<image stem>.\n"
            "Preview: original (grey) | binarised (white = open) | printable mask: white\n"
            "open, black plate, blue islands, red bridges, orange closed as too narrow,\n"
            "magenta closed diagonal pinches.\n\n"
            "Input (one of):\n"
            "  -m, --model DIR          trained model folder, or an export folder (the\n"
            "                           printed heights)                        [required]\n"
            "  -i, --mnist-index I      test image I of the model's data set (with --count:\n"
            "                           I .. I+K-1)\n"
            "  -d, --digit D            the first K test images of class D (0-9), from\n"
            "                           --mnist-index on if given\n"
            "  -n, --count K            number of test images                          [1]\n"
            "      --image FILE.png     a grey or RGB PNG, bright digit on dark (no alpha,\n"
            "                           no palette; longer side at most %.0f x aperture /\n"
            "                           pitch pixels); may be repeated\n"
            "      --label D            true class of the --image files (for accuracy)\n"
            "      --data DIR           folder with mnist/ and fashion/ [$D2FAB_DATA or data]\n\n"
            "Mask:\n"
            "  -t, --threshold T        open where amplitude >= T x max, 0 < T < 1      [%.2g]\n"
            "      --carrier recess|relief  a solid carrier plate with the digit as a recess\n"
            "                           (or relief) instead of a through-cut stencil, for\n"
            "                           covering the rest with metal foil; no bridges\n"
            "      --thick-mm T         plate thickness in the active area, mm, rounded to\n"
            "                           the Z step     [stencil %.3g (the frame), carrier %.3g]\n"
            "      --depth-mm D         carrier recess depth or relief height, mm       [%.3g]\n\n"
            "Printer, material and source:\n"
            "  -P, --printer NAME       printer profile name or .json path (min feature,\n"
            "                           Z step, pin clearance) [the export's printer for an\n"
            "                           export folder, else objet-connex500]\n"
            "  -M, --material NAME      material profile name or .json path, for the\n"
            "                           plate's phase and absorption [the export's, verobp]\n"
            "      --profiles DIR       extra profiles: DIR/NAME.json and\n"
            "                           DIR/materials/NAME.json\n"
            "  -f, --frequency-thz F    frequency for the material optics, THz [the model's]\n"
            "      --format FMT         stl, 3mf, obj, ply or glb                       [stl]\n"
            "      --no-mesh            previews and reports only\n"
            "      --optics MODEL       the network that reads the masks: thin (phase screens)\n"
            "                           or thick (plates of base and relief, air gaps)\n"
            "                                          [thick for an export, else the model's]\n"
            "  -o, --out DIR            output folder, created                    [required]\n"
            "  -q, --quiet              no per-mask lines\n"
            "  -h, --help               this help\n\n"
            "Nothing is written unless every image is valid (not empty, not all on, not\n"
            "inverted, fits the input plane) and the first plate builds.\n\n%s",
            MASK_MAX_IMAGE_PX_PER_PITCH, MASK_DEFAULT_THRESHOLD, MASK_STENCIL_THICK_MM,
            MASK_CARRIER_THICK_MM, MASK_CARRIER_DEPTH_MM, cli_exit_help);
}

static void print_result(const mask_source *s, const mask_result *r, double pitch)
{
    const mask_stats *st = &r->st;
    printf("%s", s->name);
    if (s->label >= 0) printf(" (class %d)", s->label);
    printf(": %ld px open", st->open_px);
    if (st->islands) printf(", %d island%s, %d bridge%s", st->islands, st->islands == 1 ? "" : "s",
                            st->bridges, st->bridges == 1 ? "" : "s");
    if (st->blocked_px)
        printf(", blocked %ld px (%.3g mm2: %ld bridge, %ld narrow, %ld pinch)", st->blocked_px,
               st->blocked_px * pitch * pitch, st->bridge_px, st->narrow_px, st->pinch_px);
    printf("; read as %d / %d / %d (original / binarised / mask)", r->pred[0], r->pred[1],
           r->pred[2]);
    if (r->facets) printf("; %zu facets", r->facets);
    printf("\n");
}

/* The command line of d2fab mask. */
typedef struct mask_args {
    mask_opts o;
    mask_profile_req q;
    const char *model_dir, *out, *data, *images[MAX_IMAGES];
    int nimages, quiet;
    int optics;        /* -1: thick for an export, else the model's own */
    long index, digit, count, label;
} mask_args;

/* Parses argv into *a: -1 to go on, else the exit status. */
static int mask_parse(int argc, char **argv, mask_args *a)
{
    enum {
        O_IMAGE = 1000, O_LABEL, O_DATA, O_CARRIER, O_THICK, O_DEPTH, O_PROFILES, O_FORMAT,
        O_NOMESH, O_OPTICS
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"mnist-index", required_argument, 0, 'i'},
        {"digit", required_argument, 0, 'd'},       {"count", required_argument, 0, 'n'},
        {"image", required_argument, 0, O_IMAGE},   {"label", required_argument, 0, O_LABEL},
        {"data", required_argument, 0, O_DATA},     {"threshold", required_argument, 0, 't'},
        {"carrier", required_argument, 0, O_CARRIER},
        {"thick-mm", required_argument, 0, O_THICK}, {"depth-mm", required_argument, 0, O_DEPTH},
        {"printer", required_argument, 0, 'P'},     {"material", required_argument, 0, 'M'},
        {"profiles", required_argument, 0, O_PROFILES},
        {"frequency-thz", required_argument, 0, 'f'},
        {"format", required_argument, 0, O_FORMAT}, {"no-mesh", no_argument, 0, O_NOMESH},
        {"optics", required_argument, 0, O_OPTICS},
        {"out", required_argument, 0, 'o'},         {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
    mask_opts *o = &a->o;
    d2_err e = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:i:d:n:t:P:M:f:o:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model_dir = optarg; break;
        case 'i': if (cli_int(CMD, "mnist-index", optarg, 0, 1000000, &a->index)) return 1; break;
        case 'd': if (cli_int(CMD, "digit", optarg, 0, 9, &a->digit)) return 1; break;
        case 'n': if (cli_int(CMD, "count", optarg, 1, 100000, &a->count)) return 1; break;
        case O_IMAGE:
            if (a->nimages >= MAX_IMAGES) {
                fprintf(stderr, "d2fab %s: at most %d --image files\n", CMD, MAX_IMAGES);
                return 1;
            }
            a->images[a->nimages++] = optarg;
            break;
        case O_LABEL: if (cli_int(CMD, "label", optarg, 0, 9, &a->label)) return 1; break;
        case O_DATA: a->data = optarg; break;
        case 't':
            if (cli_num(CMD, "threshold", optarg, 0, 1, &o->threshold)) return 1;
            if (!(o->threshold > 0 && o->threshold < 1)) {
                fprintf(stderr, "d2fab %s: --threshold '%s': allowed 0 < T < 1\n", CMD, optarg);
                return 1;
            }
            break;
        case O_CARRIER:
            if (!strcmp(optarg, "recess")) o->mode = MASK_CARRIER_RECESS;
            else if (!strcmp(optarg, "relief")) o->mode = MASK_CARRIER_RELIEF;
            else {
                fprintf(stderr, "d2fab %s: --carrier '%s': allowed recess, relief\n", CMD, optarg);
                return 1;
            }
            break;
        case O_THICK: if (cli_num(CMD, "thick-mm", optarg, 0.01, 100, &o->thick_mm)) return 1; break;
        case O_DEPTH: if (cli_num(CMD, "depth-mm", optarg, 0.001, 100, &o->depth_mm)) return 1; break;
        case O_OPTICS:
            if (!strcmp(optarg, "thin")) a->optics = D2_OPTICS_THIN;
            else if (!strcmp(optarg, "thick")) a->optics = D2_OPTICS_THICK;
            else {
                fprintf(stderr, "d2fab %s: --optics '%s': allowed thin, thick\n", CMD, optarg);
                return 1;
            }
            break;
        case 'P': a->q.printer = optarg; break;
        case 'M': a->q.material = optarg; break;
        case O_PROFILES: a->q.profiles_dir = optarg; break;
        case 'f':
            if (cli_freq_thz(CMD, optarg, 1e-3, 1e4, &a->q.frequency_thz)) return 1;
            break;
        case O_FORMAT: {
            mesh_format mf;
            if (mesh_format_parse(optarg, &mf, &e)) {
                fprintf(stderr, "d2fab %s: --format: %s\n", CMD, e.msg);
                return 1;
            }
            o->format = mf;
            break;
        }
        case O_NOMESH: o->write_mesh = 0; break;
        case 'o': a->out = optarg; break;
        case 'q': a->quiet = 1; break;
        case 'h': mask_help(stdout); return 0;
        default: mask_help(stderr); return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "d2fab %s: unexpected argument '%s'\n", CMD, argv[optind]);
        return 1;
    }
    int nsel = (a->index >= 0) + (a->digit >= 0) + (a->nimages > 0);
    const char *why = !a->model_dir ? "--model DIR is required"
                      : !a->out ? "--out DIR is required"
                      : nsel == 0 ? "give --mnist-index I, --digit D or --image FILE.png"
                      : a->nimages && nsel > 1 ? "--image cannot be combined with test images"
                      : a->nimages && a->count != 1 ? "--count applies to test images, not --image"
                      : !a->nimages && a->label >= 0 ? "--label applies to --image files"
                      : (o->mode == MASK_STENCIL && o->depth_mm > 0) ? "--depth-mm needs --carrier"
                                                                      : NULL;
    if (why) {
        fprintf(stderr, "d2fab %s: %s\n", CMD, why);
        mask_help(stderr);
        return 1;
    }
    return -1;
}

static void print_summary(const mask_args *a, const mask_run_report *rep, int nsrc, double pitch,
                          double f)
{
    const mask_opts *o = &a->o;
    printf("%d mask%s (%s, %s, min feature %.3g mm = %d px, threshold %.2g): %d islands, %d "
           "bridges, %ld px (%.4g mm2) blocked\n", nsrc, nsrc == 1 ? "" : "s",
           o->mode == MASK_STENCIL ? "stencil" : o->mode == MASK_CARRIER_RECESS ? "carrier, recess"
                                                                              : "carrier, relief",
           o->printer.name, o->printer.min_feature_mm, rep->min_px, o->threshold, rep->islands,
           rep->bridges, rep->blocked_px, rep->blocked_px * pitch * pitch);
    if (rep->labelled)
        printf("accuracy on %d labelled: original %.1f %%, binarised %.1f %%, mask %.1f %%\n",
               rep->labelled, 100.0 * rep->correct[0] / rep->labelled,
               100.0 * rep->correct[1] / rep->labelled, 100.0 * rep->correct[2] / rep->labelled);
    if (o->mode == MASK_STENCIL)
        printf("plate %.3g mm of %s (n %.4g, kappa %.3g at %.4g THz): the opaque part passes "
               "%.3g %% of the power\n", rep->thick_mm, o->material_name, o->index, o->kappa, f,
               100 * rep->opaque.power);
    else
        printf("carrier %.3g mm of %s (n %.4g, kappa %.3g at %.4g THz), digit %.3g mm thick: "
               "uniform phase %.4f rad (%.4f mod 2 pi), amplitude %.4f, power transmission "
               "%.4f with Fresnel; cover the rest with metal foil\n", rep->thick_mm,
               o->material_name, o->index, o->kappa, f, rep->digit.thick_mm, rep->digit.phase_rad,
               fmod(rep->digit.phase_rad, 2 * M_PI), rep->digit.amplitude, rep->digit.power);
    printf("wrote %s/masks.jsonl, summary.json and %d preview%s%s\n", a->out, nsrc,
           nsrc == 1 ? "" : "s", o->write_mesh ? " and plate meshes" : "");
}

/* The masks' sources: --image files, or test images of the model's data set. */
static int load_sources(const mask_args *a, const d2_model *m, d2_dataset *ds,
                        mask_source **src, int *nsrc, d2_err *e)
{
    int rc;
    if (!a->nimages)
        return (rc = dataset_open(a->data ? a->data : dataset_default_dir(), m->t.dataset,
                                  &m->t.data, 1, ds, e))
                   ? rc
                   : mask_sources_dataset(ds, m->t.dataset, a->index >= 0 ? (int)a->index : 0,
                                          (int)a->count, (int)a->digit, src, nsrc, e);
    if (!(*src = d2_calloc((size_t)a->nimages, sizeof **src, "mask sources", e))) return D2_EIO;
    for (*nsrc = 0; *nsrc < a->nimages; ++*nsrc)
        if ((rc = mask_source_png(a->images[*nsrc], (int)a->label, *src + *nsrc, e))) return rc;
    return 0;
}

int cmd_mask(int argc, char **argv)
{
    mask_args a = {.optics = -1, .index = -1, .digit = -1, .count = 1, .label = -1};
    mask_opts_default(&a.o);
    int rc = mask_parse(argc, argv, &a);
    if (rc >= 0) return rc;

    d2_err e = {0};
    d2_model m = {0};
    mask_profiles pf = {0};
    mask_source *src = NULL;
    mask_result *res = NULL;
    d2_dataset ds = {0};
    int nsrc = 0;
    if ((rc = cli_load_model(a.model_dir, &m, &e)) ||
        (rc = mask_profiles_load(a.model_dir, &m, &a.q, &pf, &a.o, &e)))
        goto done;
    int optics = a.optics >= 0 ? a.optics : m.height[0] ? D2_OPTICS_THICK : m.g.optics;
    if (optics == D2_OPTICS_THIN && m.g.optics == D2_OPTICS_THICK) {
        rc = d2_fail(&e, D2_EINPUT, "--optics thin: %s was trained with thick plates (air gaps); "
                     "it has no thin equivalent", a.model_dir);
        goto done;
    }
    if (optics == D2_OPTICS_THICK && (rc = model_make_thick(&m, 0, &e))) goto done;
    double f_model = opt_frequency_thz(m.g.wavelength_mm), f = pf.frequency_thz;
    if (pf.clamped)
        fprintf(stderr, "d2fab %s: warning: %.4g THz is outside the measured range of %s; "
                "its end value is used\n", CMD, f, pf.material.name);
    if (a.q.frequency_thz > 0 && fabs(a.q.frequency_thz - f_model) > 1e-6 * f_model)
        fprintf(stderr, "d2fab %s: note: --frequency-thz %.4g sets only the plate's material "
                "optics; the network is read at its design frequency %.4g THz\n", CMD,
                a.q.frequency_thz, f_model);
    a.o.model_path = a.model_dir;
    if ((rc = load_sources(&a, &m, &ds, &src, &nsrc, &e))) goto done;
    if (!(res = d2_calloc((size_t)nsrc, sizeof *res, "mask results", &e))) {
        rc = D2_EIO;
        goto done;
    }
    mask_run_report rep;
    if ((rc = mask_run(&m, src, nsrc, &a.o, a.out, res, &rep, &e))) goto done;
    for (int i = 0; i < rep.nwarn; i++) fprintf(stderr, "d2fab %s: warning: %s\n", CMD, rep.warn[i]);
    if (!a.quiet)
        for (int i = 0; i < nsrc; i++) print_result(src + i, res + i, m.g.pitch_mm);
    print_summary(&a, &rep, nsrc, m.g.pitch_mm, f);
    printf("optical model of the network: %s\n",
           m.g.optics == D2_OPTICS_THICK ? "thick plates, air gaps of the assembly as built"
                                         : "thin phase screens, gaps datum to datum");
done:
    if (rc) {
        fprintf(stderr, "d2fab %s: %s\n", CMD, e.msg);
        if (a.out) fprintf(stderr, "d2fab %s: no masks written to %s\n", CMD, a.out);
    }
    for (int i = 0; src && i < nsrc; i++) mask_source_free(src + i);
    free(src);
    free(res);
    dataset_free(&ds);
    mask_profiles_free(&pf);
    model_free(&m);
    return d2_exit_code(rc);
}
