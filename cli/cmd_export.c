/* d2fab export: phase maps to printable height maps. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmds.h"
#include "core/config.h"
#include "core/fileio.h"
#include "export/export.h"

#define CMD "export"

static void export_help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab export --model DIR --out DIR [options]\n"
            "       d2fab export --phase L1.npy [L2.npy ...] --pitch-mm P --frequency-thz F\n"
            "                    --out DIR [options]\n"
            "       d2fab export --list-printers | --list-materials\n\n"
            "Turns trained phase layers into height maps a printer can make in a material:\n"
            "h = base + ((phase + offset) mod 2 pi) * wavelength / (2 pi (n - 1)), rounded to\n"
            "the printer's Z step. Writes OUT/layerK_height.npy (float32 mm),\n"
            "layerK_height.png (16-bit, scale in export.json), layerK_preview.png and\n"
            "export.json (last), only after every check has passed.\n\n"
            "Input (one of):\n"
            "  -m, --model DIR          trained model folder (model.json + layerK.npy)\n"
            "  -p, --phase FILE...      bare phase maps, one per layer, in order: float32\n"
            "                           .npy in radians (n, n), or grey PNG with\n"
            "                           --png-range-rad\n"
            "      --png-range-rad LO:HI  phase of PNG black and white, rad   [none]\n"
            "      --pitch-mm P         pixel pitch of bare phase maps, mm      [required]\n"
            "      --gaps-mm G[,G...]   gaps of bare maps: one for all, or layers + 1\n"
            "                           (input->layer 1, ..., last->detector), mm    [30]\n"
            "      --illumination plane|gaussian:W|point:Z  what lights the input plane of\n"
            "                           bare maps: plane wave, Gaussian beam of waist W mm,\n"
            "                           point source Z mm before it (a model folder has its\n"
            "                           own)                                     [plane]\n\n"
            "Printer, material and source:\n"
            "  -P, --printer NAME       printer profile name or .json path [objet-connex500]\n"
            "  -M, --material NAME      material profile name or .json path         [verobp]\n"
            "      --profiles DIR       extra profiles: DIR/NAME.json, DIR/materials/NAME.json\n"
            "                           [$D2FAB_PROFILES; built-in: $D2FAB_PRINTERS or\n"
            "                           ./printers, then printers/ beside the binary]\n"
            "  -f, --frequency-thz F    source frequency, THz        [the model's; bare: required]\n"
            "  -w, --wavelength-mm L    source wavelength, mm (instead of --frequency-thz)\n"
            "      --index N            refractive index (> 1)   [material at the frequency]\n"
            "      --kappa K            extinction coefficient   [material at the frequency]\n"
            "      --base-mm B          solid plate under the relief, mm, rounded to the\n"
            "                           Z step      [model's base if trained coupled, else 1]\n\n"
            "Quantisation and phase offset:\n"
            "      --levels K           K phase levels per 2 pi (2..%d), then the Z step;\n"
            "                           0 = Z step only     [model's training levels, else 0]\n"
            "      --phase-offset auto|RAD  constant phase added per layer: auto picks the\n"
            "                           offset with least material and fewest wrap cliffs;\n"
            "                           0 = plain wrap     [auto; 0 for a coupled model]\n"
            "      --jump-weight W      weight of wrap cliffs against material in auto (>= 0) [1]\n\n"
            "Checks and output:\n"
            "      --force              pitch below the printer's resolution, or plate larger\n"
            "                           than its build volume: warn instead of failing\n"
            "  -o, --out DIR            output folder, created               [required]\n"
            "      --list-printers      list printer profiles and exit\n"
            "      --list-materials     list material profiles and exit\n"
            "  -q, --quiet              no summary\n"
            "  -h, --help               this help\n\n"
            "The build-volume check uses the part d2fab mesh builds: n * pitch plus the\n"
            "frame band it derives from the printer each side (10 mm for resin and PolyJet\n"
            "printers, 14.5 mm for the Prusa MK4), and the tallest part with its posts\n"
            "and pins.\n\n%s",
            EXP_MAX_LEVELS, cli_exit_help);
}

static int list_profiles(const char *user_dir, int materials)
{
    profile_path pp;
    profile_path_init(&pp, user_dir);
    char **names = NULL;
    int count = 0;
    d2_err e = {0};
    int rc = profile_names(&pp, materials, &names, &count, &e);
    if (rc) return cli_error(CMD, rc, e.msg);
    printf("%s profiles (searched:", materials ? "material" : "printer");
    for (int i = 0; i < pp.n; i++) printf(" %s%s", pp.dir[i], materials ? "/materials" : "");
    printf(")\n");
    for (int i = 0; i < count; i++) {
        if (materials) {
            material_profile m;
            if (material_find(&pp, names[i], &m, &e)) {
                printf("  %-24s INVALID: %s\n", names[i], e.msg);
                continue;
            }
            printf("  %-24s %s: n %.4g, kappa %.4g at %.3g THz", m.name, m.display_name,
                   m.pt[0].index, m.pt[0].kappa, m.pt[0].frequency_thz);
            if (m.npoints > 1) printf(" (%d points to %.3g THz)", m.npoints,
                                      m.pt[m.npoints - 1].frequency_thz);
            printf("\n");
            material_free(&m);
        } else {
            printer_profile p;
            if (printer_find(&pp, names[i], &p, &e)) {
                printf("  %-24s INVALID: %s\n", names[i], e.msg);
                continue;
            }
            printf("  %-24s %s (%s): XY %.3g mm, Z step %.3g mm, build %.0f x %.0f x %.0f mm\n",
                   p.name, p.display_name, p.technology, p.xy_resolution_mm, p.z_step_mm,
                   p.build_mm[0], p.build_mm[1], p.build_mm[2]);
            printer_free(&p);
        }
    }
    if (!count) printf("  (none)\n");
    profile_names_free(names, count);
    return 0;
}

/* "30" or "3,30,30" -> values. */
static int parse_list(const char *opt, const char *s, double *v, int max, int *n)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (*n >= max) {
            fprintf(stderr, "d2fab %s: --%s '%s': at most %d values\n", CMD, opt, s, max);
            return -1;
        }
        if (cli_num(CMD, opt, tok, 1e-6, 1e5, &v[*n])) return -1;
        (*n)++;
    }
    if (!*n) {
        fprintf(stderr, "d2fab %s: --%s '%s': expected numbers separated by commas\n", CMD, opt, s);
        return -1;
    }
    return 0;
}

static void print_summary(const export_report *r, const char *out)
{
    printf("%d layers of %d x %d at %.4g mm pitch, %.4g THz (%.5g mm), %s n = %.5g, kappa = %.4g\n",
           r->layers, r->n, r->n, r->pitch_mm, r->frequency_thz, r->p.wavelength_mm,
           r->material.name, r->p.index, r->p.kappa);
    printf("%s: Z step %.4g mm; 2 pi = %.4f mm of material; base %.4g mm; ", r->printer.name,
           r->p.z_step_mm, r->period_mm, r->p.base_mm);
    if (r->p.levels) printf("%d levels per 2 pi\n", r->p.levels);
    else printf("%.1f Z steps per 2 pi\n", r->period_mm / r->p.z_step_mm);
    printf("layer  min_mm  max_mm mean_mm  rms_err_rad  offset_rad  volume_mm3 (plain)  "
           "jumps (plain)  amp_mean\n");
    for (int k = 0; k < r->layers; k++) {
        const exp_layer_stats *s = &r->layer[k];
        printf("%5d %7.3f %7.3f %7.3f %12.4f %11.3f %11.0f (%.0f) %7ld (%ld) %9.3f\n", k + 1,
               s->min_mm, s->max_mm, s->mean_mm, s->phase_rms_error_rad, s->offset_rad,
               s->volume_mm3, s->volume_plain_mm3, s->wrap_jumps, s->wrap_jumps_plain,
               s->amp_mean);
    }
    printf("stack: power transmission %.4f (absorption and Fresnel %.1f %% per surface), "
           "volume %.0f mm3", r->power_transmission, 100 * r->fresnel_r, r->volume_mm3);
    if (r->print_time_h >= 0)
        printf(", print time about %.2f h for the tallest part (%.1f mm; %s)", r->print_time_h,
               r->print_height_mm, r->print_time_how);
    else
        printf(", print time %s", r->print_time_how);
    if (r->layers == 1)
        printf("\nwrote %s/export.json and layer1_{height.npy,height.png,preview.png}\n", out);
    else
        printf("\nwrote %s/export.json and layer1..%d_{height.npy,height.png,preview.png}\n", out,
               r->layers);
}

enum {
    O_PNGRANGE = 1000, O_PITCH, O_GAPS, O_PROFILES, O_INDEX, O_KAPPA, O_BASE, O_LEVELS,
    O_OFFSET, O_JW, O_FORCE, O_LISTP, O_LISTM, O_ILLUM
};

/* The command line of d2fab export. */
typedef struct export_args {
    export_opts o;
    const char *model_dir, *out;
    const char *phase_files[D2_MAX_LAYERS + 1];
    int nphase, have_range, list_p, list_m, quiet, ngaps;
    double lo, hi, pitch, gaps[D2_MAX_LAYERS + 1];
    const char *illum_arg;      /* --illumination as given, or NULL */
    int illum;                  /* D2_ILLUM_* */
    double illum_mm;            /* waist or distance */
    char note[512];             /* from reading the phase maps (a float64 map converted) */
} export_args;

/* --png-range-rad LO:HI. 0, or the exit status. */
static int parse_range(const char *arg, export_args *a)
{
    char s[128];
    snprintf(s, sizeof s, "%s", arg);
    char *colon = strchr(s, ':');
    if (!colon) {
        fprintf(stderr, "d2fab %s: --png-range-rad '%s': expected LO:HI in rad\n", CMD, arg);
        return 1;
    }
    *colon = 0;
    if (cli_num(CMD, "png-range-rad", s, -1e4, 1e4, &a->lo) ||
        cli_num(CMD, "png-range-rad", colon + 1, -1e4, 1e4, &a->hi))
        return 1;
    if (!(a->hi > a->lo)) {
        fprintf(stderr, "d2fab %s: --png-range-rad '%s': need LO < HI\n", CMD, arg);
        return 1;
    }
    a->have_range = 1;
    return 0;
}

/* --illumination plane | gaussian:WAIST_MM | point:DISTANCE_MM (the ranges of
 * the config's "illumination"). 0, or the exit status. */
static int parse_illum(const char *arg, export_args *a)
{
    const char *colon = strchr(arg, ':');
    size_t len = colon ? (size_t)(colon - arg) : strlen(arg);
    a->illum_arg = arg;
    if (!colon && !strcmp(arg, "plane")) {
        a->illum = D2_ILLUM_PLANE;
        return 0;
    }
    if (colon && len == 8 && !strncmp(arg, "gaussian", 8)) {
        a->illum = D2_ILLUM_GAUSSIAN;
        return cli_num(CMD, "illumination gaussian waist (mm)", colon + 1, 1e-3, 1e5,
                       &a->illum_mm) ? 1 : 0;
    }
    if (colon && len == 5 && !strncmp(arg, "point", 5)) {
        a->illum = D2_ILLUM_POINT;
        return cli_num(CMD, "illumination point distance (mm)", colon + 1, 1e-3, 1e7,
                       &a->illum_mm) ? 1 : 0;
    }
    fprintf(stderr, "d2fab %s: --illumination '%s': expected plane, gaussian:WAIST_MM (a "
            "Gaussian beam, 1/e^2 intensity radius) or point:DISTANCE_MM (a point source that "
            "far before the input plane)\n", CMD, arg);
    return 1;
}

/* One export option (the library checks the ranges it explains). 0, or the
 * exit status. */
static int export_option(int c, const char *arg, export_opts *o)
{
    long lv;
    switch (c) {
    case 'f':
        if (cli_freq_thz(CMD, arg, 1e-4, 1e4, &o->frequency_thz)) return 1;
        if (!(o->frequency_thz > 0)) {
            fprintf(stderr, "d2fab %s: --frequency-thz '%s': must be > 0\n", CMD, arg);
            return 1;
        }
        return 0;
    case 'w': return cli_num(CMD, "wavelength-mm", arg, 1e-6, 1e5, &o->wavelength_mm) ? 1 : 0;
    /* range checked by the library, whose message says why n <= 1 fails */
    case O_INDEX: return cli_num(CMD, "index", arg, -1e6, 1e6, &o->index) ? 1 : 0;
    case O_KAPPA: return cli_num(CMD, "kappa", arg, 0, 10, &o->kappa) ? 1 : 0;
    case O_BASE: return cli_num(CMD, "base-mm", arg, 0, 1000, &o->base_mm) ? 1 : 0;
    case O_LEVELS:
        if (cli_int(CMD, "levels", arg, 0, EXP_MAX_LEVELS, &lv)) return 1;
        if (lv == 1) {
            fprintf(stderr, "d2fab %s: --levels 1: use 0 (Z step only) or 2..%d\n", CMD,
                    EXP_MAX_LEVELS);
            return 1;
        }
        o->levels = (int)lv;
        return 0;
    case O_OFFSET:
        if (!strcmp(arg, "auto")) {
            o->offset_mode = EXP_OFFSET_AUTO;
            return 0;
        }
        if (cli_num(CMD, "phase-offset", arg, -1e4, 1e4, &o->offset_rad)) return 1;
        o->offset_mode = EXP_OFFSET_FIXED;
        return 0;
    case O_JW: return cli_num(CMD, "jump-weight", arg, 0, 1e6, &o->jump_weight) ? 1 : 0;
    default: return 0;
    }
}

/* Parses argv into *a: -1 to go on, else the exit status. */
static int export_parse(int argc, char **argv, export_args *a)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},        {"phase", required_argument, 0, 'p'},
        {"png-range-rad", required_argument, 0, O_PNGRANGE},
        {"pitch-mm", required_argument, 0, O_PITCH}, {"gaps-mm", required_argument, 0, O_GAPS},
        {"printer", required_argument, 0, 'P'},      {"material", required_argument, 0, 'M'},
        {"profiles", required_argument, 0, O_PROFILES},
        {"frequency-thz", required_argument, 0, 'f'},
        {"wavelength-mm", required_argument, 0, 'w'},
        {"index", required_argument, 0, O_INDEX},    {"kappa", required_argument, 0, O_KAPPA},
        {"base-mm", required_argument, 0, O_BASE},   {"levels", required_argument, 0, O_LEVELS},
        {"phase-offset", required_argument, 0, O_OFFSET},
        {"jump-weight", required_argument, 0, O_JW}, {"force", no_argument, 0, O_FORCE},
        {"out", required_argument, 0, 'o'},          {"list-printers", no_argument, 0, O_LISTP},
        {"list-materials", no_argument, 0, O_LISTM}, {"quiet", no_argument, 0, 'q'},
        {"illumination", required_argument, 0, O_ILLUM},
        {"help", no_argument, 0, 'h'},               {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:P:M:f:w:o:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model_dir = optarg; break;
        case 'p':
            if (a->nphase >= D2_MAX_LAYERS) {
                fprintf(stderr, "d2fab %s: at most %d phase maps\n", CMD, D2_MAX_LAYERS);
                return 1;
            }
            a->phase_files[a->nphase++] = optarg;
            break;
        case O_PNGRANGE: if (parse_range(optarg, a)) return 1; break;
        case O_ILLUM: if (parse_illum(optarg, a)) return 1; break;
        case O_PITCH: if (cli_num(CMD, "pitch-mm", optarg, 1e-4, 100, &a->pitch)) return 1; break;
        case O_GAPS:
            if (parse_list("gaps-mm", optarg, a->gaps, D2_MAX_LAYERS + 1, &a->ngaps)) return 1;
            break;
        case 'P': a->o.printer = optarg; break;
        case 'M': a->o.material = optarg; break;
        case O_PROFILES: a->o.profiles_dir = optarg; break;
        case 'f': case 'w': case O_INDEX: case O_KAPPA: case O_BASE: case O_LEVELS:
        case O_OFFSET: case O_JW:
            if (export_option(c, optarg, &a->o)) return 1;
            break;
        case O_FORCE: a->o.force = 1; break;
        case 'o': a->out = optarg; break;
        case O_LISTP: a->list_p = 1; break;
        case O_LISTM: a->list_m = 1; break;
        case 'q': a->quiet = 1; break;
        case 'h': export_help(stdout); return 0;
        default: export_help(stderr); return 1;
        }
    }
    if (a->list_p || a->list_m) return -1;
    /* --phase a.npy b.npy c.npy: the maps after the first arrive as operands. */
    for (; optind < argc; optind++) {
        if (!a->nphase) {
            fprintf(stderr, "d2fab %s: unexpected argument '%s'\n", CMD, argv[optind]);
            return 1;
        }
        if (a->nphase >= D2_MAX_LAYERS) {
            fprintf(stderr, "d2fab %s: at most %d phase maps\n", CMD, D2_MAX_LAYERS);
            return 1;
        }
        a->phase_files[a->nphase++] = argv[optind];
    }
    if (!a->out || (!a->model_dir) == (!a->nphase)) {
        fprintf(stderr, "d2fab %s: %s\n", CMD,
                !a->out ? "--out DIR is required"
                : a->model_dir ? "give --model or --phase, not both"
                               : "give --model DIR or --phase FILE...");
        export_help(stderr);
        return 1;
    }
    if (a->model_dir && (a->pitch > 0 || a->ngaps || a->have_range || a->illum_arg)) {
        fprintf(stderr, "d2fab %s: --pitch-mm, --gaps-mm, --png-range-rad and --illumination "
                "apply to --phase maps only (a model folder has its geometry and its "
                "illumination in model.json)\n", CMD);
        return 1;
    }
    if (!a->model_dir) {
        const export_opts *o = &a->o;
        const char *why = !(a->pitch > 0) ? "bare phase maps need --pitch-mm"
                          : o->frequency_thz == 0 && o->wavelength_mm == 0
                              ? "bare phase maps need --frequency-thz or --wavelength-mm"
                          : o->frequency_thz != 0 && o->wavelength_mm != 0
                              ? "give --frequency-thz or --wavelength-mm, not both"
                              : NULL;
        if (why) {
            fprintf(stderr, "d2fab %s: %s\n", CMD, why);
            return 1;
        }
    }
    return -1;
}

/* The model to export: a model folder (its model.json sections go into
 * export.json verbatim) or bare phase maps. */
static int load_source(export_args *a, d2_model *m, cJSON **model_json,
                       export_source *src, d2_err *e)
{
    int rc;
    *src = (export_source){m, NULL, "model", a->model_dir};
    if (a->model_dir) {
        char path[4096];
        if ((rc = model_load(a->model_dir, m, e)) ||
            (rc = d2_path_join(path, sizeof path, a->model_dir, "model.json", e)) ||
            (rc = cfg_load(path, model_json, e)))
            return rc;
        src->model_sections = *model_json;
        return 0;
    }
    const export_opts *o = &a->o;
    exp_phase_input in = {a->phase_files, a->nphase, a->pitch,
                          o->wavelength_mm > 0 ? o->wavelength_mm
                                               : opt_wavelength_mm(o->frequency_thz),
                          a->gaps, a->ngaps, a->have_range, a->lo, a->hi, a->note,
                          sizeof a->note};
    src->kind = "phase";
    src->path = a->phase_files[0];
    if ((rc = exp_model_from_phases(&in, m, e))) return rc;
    /* The illumination the maps were designed for: used by every later stage
     * through export.json's "model" section. */
    m->g.illum = a->illum;
    m->g.illum_waist_mm = a->illum == D2_ILLUM_GAUSSIAN ? a->illum_mm : 0;
    m->g.illum_distance_mm = a->illum == D2_ILLUM_POINT ? a->illum_mm : 0;
    if (illum_check(&m->g, "--illumination", e)) {
        d2_err ie = *e;
        return d2_fail(e, D2_EINPUT, "--illumination '%s' on %d x %d maps of %g mm pitch: %s",
                       a->illum_arg, m->g.n, m->g.n, m->g.pitch_mm, strstr(ie.msg, "a point") ?
                       strstr(ie.msg, "a point") : ie.msg);
    }
    return 0;
}

int cmd_export(int argc, char **argv)
{
    export_args a = {0};
    export_opts_default(&a.o);
    a.o.printer = "objet-connex500";
    a.o.material = "verobp";
    int rc = export_parse(argc, argv, &a);
    if (rc >= 0) return rc;
    if (a.list_p || a.list_m) {
        rc = a.list_p ? list_profiles(a.o.profiles_dir, 0) : 0;
        if (!rc && a.list_m) rc = list_profiles(a.o.profiles_dir, 1);
        return rc;
    }

    d2_err e = {0};
    d2_model m = {0};
    cJSON *model_json = NULL;
    export_source src;
    if ((rc = load_source(&a, &m, &model_json, &src, &e))) {
        cJSON_Delete(model_json);
        model_free(&m);
        return cli_error(CMD, rc, e.msg);
    }
    if (a.note[0] && !a.quiet) fprintf(stderr, "d2fab %s: note: %s\n", CMD, a.note);
    export_report r;
    rc = export_stack(&src, &a.o, a.out, &r, &e);
    for (int i = 0; i < r.nwarn; i++) fprintf(stderr, "d2fab %s: warning: %s\n", CMD, r.warn[i]);
    if (rc) {
        fprintf(stderr, "d2fab %s: %s\n", CMD, e.msg);
        fprintf(stderr, "d2fab %s: no export written to %s\n", CMD, a.out);
    } else if (!a.quiet) {
        print_summary(&r, a.out);
    }
    export_report_free(&r);
    cJSON_Delete(model_json);
    model_free(&m);
    return d2_exit_code(rc);
}
