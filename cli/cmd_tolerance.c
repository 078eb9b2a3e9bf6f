/* d2fab tolerance */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmds.h"
#include "core/config.h"
#include "core/par.h"
#include "core/idx.h"
#include "core/util.h"
#include "mask/mask.h"
#include "tolerance/tolerance.h"

static void tol_help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab tolerance --model DIR [--model DIR2 ...] --out DIR [options]\n\n"
            "Accuracy of a printed and assembled stack under fabrication and assembly errors,\n"
            "reported as optical tolerancing programs do: nominal accuracy, a sensitivity\n"
            "table (each perturbation alone at +-D, per layer, worst first), inverse\n"
            "tolerances (the magnitude that costs 1 and 5 accuracy points), and a Monte\n"
            "Carlo over all perturbations together (mean, std, min, max, 90/50/10 %%\n"
            "lines, yield with its Clopper-Pearson interval, every trial's perturbations).\n"
            "Several models give one report with a table and plots comparing them.\n\n"
            "  -m, --model DIR        model directory (model.json) or export directory\n"
            "                         (export.json: the printed heights); repeat it, or use\n"
            "                         --compare, to compare models                  [required]\n"
            "      --compare DIR      another model to compare (same as --model)\n"
            "  -o, --out DIR          report folder: report.json, sensitivity.csv,\n"
            "                         inverse.csv, scan.csv, montecarlo.csv,\n"
            "                         montecarlo_summary.csv, compare.csv, scan_*.png,\n"
            "                         yield.png, compare.png                       [required]\n"
            "  -c, --config FILE      tolerance config (JSON; see samples/tolerance.json)\n"
            "  -d, --data DIR         data folder with mnist/ and fashion/ [$D2FAB_DATA or data]\n"
            "  -l, --limit N          first N test images                  [config, else all]\n"
            "  -n, --trials T         Monte-Carlo trials per model and scale, 0 = none\n"
            "                         (at most %d)                          [config, else 200]\n"
            "  -s, --seed S           random seed (same seed, same report)   [config, else 1]\n"
            "      --spec ACC         yield threshold, accuracy in %% (e.g. 90)\n"
            "                                                  [config, else nominal - 1 point]\n"
            "      --lateral-mm D     x and y shift of every layer, limit D in mm\n"
            "      --axial-mm D       z shift of every layer, limit D in mm\n"
            "      --rotation-deg D   in-plane rotation of every layer, limit D in degrees\n"
            "      --quantize Q       height quantisation: 'printer' (an export's printer Z\n"
            "                         step) or K phase levels per 2 pi (an integer >= 2)\n"
            "      --distribution X   uniform (in +-D) or normal (sigma D/2, cut at +-D) for\n"
            "                         every perturbation                  [config, else uniform]\n"
            "      --sweep S1,S2,...  Monte Carlo at these multiples of every limit (the\n"
            "                         columns of the model comparison, e.g. 0.5,1,1.5,2)\n"
            "                                                               [config, else 1]\n"
            "      --mask stencil|PNG every test digit read through its own printable\n"
            "                         stencil (binarised, slits narrower than the printer's\n"
            "                         minimum feature closed, islands bridged, as d2fab\n"
            "                         mask makes it); or one n x n grey PNG (0 opaque .. 1\n"
            "                         open) multiplied into every test image\n"
            "      --no-sensitivity   skip the sensitivity table\n"
            "      --no-inverse       skip the inverse tolerances and their scans\n"
            "      --optics MODEL     thin (phase screens, gaps datum to datum) or thick\n"
            "                         (plates of base and relief, air gaps of the assembly\n"
            "                         as built)        [config, else thick for an export]\n"
            "  -t, --threads N        worker threads (results do not depend on it) [all cores]\n"
            "  -q, --quiet            no progress line\n"
            "  -h, --help             this help\n\n"
            "The flags override the config. Every perturbation, its units and distributions\n"
            "are listed in samples/tolerance.json. Not modelled: layer tilt (see report.json).\n\n%s",
            TOL_MAX_TRIALS, cli_exit_help);
}

static int parse_scales(const char *s, tol_config *c)
{
    double v[TOL_MAX_SCALES];
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || !isfinite(x) || x < 0 || x > 100 || n >= TOL_MAX_SCALES ||
            (*end && *end != ','))
            return -1;
        v[n++] = x;
        p = *end ? end + 1 : end;
    }
    if (!n) return -1;
    c->nscales = n;
    memcpy(c->scales, v, sizeof(double) * n);
    return 0;
}

/* The flags that override the config. */
typedef struct tol_flags {
    const char *cfgpath, *lat, *ax, *rot, *quant, *dist, *sweep, *mask, *optics;
    long limit, trials, seed;
    double spec;
    int nosens, noinv;
} tol_flags;

/* The config file, then the flags over it. 0, or the exit status. */
static int make_config(const tol_flags *f, tol_config *cfg)
{
    d2_err e = {0};
    double v;
    tol_config_default(cfg);
    if (f->cfgpath) {
        cJSON *root = NULL;
        int rc = cfg_load(f->cfgpath, &root, &e);
        if (!rc) rc = tol_config_read(f->cfgpath, root, cfg, &e);
        cJSON_Delete(root);
        if (rc) return cli_error("tolerance", rc, e.msg);
    }
    if (f->lat && (cli_num("tolerance", "lateral-mm", f->lat, 0, 100, &v) ||
                   tol_config_set(cfg, "lateral_mm", v, &e)))
        return e.code ? cli_error("tolerance", e.code, e.msg) : 1;
    if (f->ax && (cli_num("tolerance", "axial-mm", f->ax, 0, 1000, &v) ||
                  tol_config_set(cfg, "axial_mm", v, &e)))
        return e.code ? cli_error("tolerance", e.code, e.msg) : 1;
    if (f->rot && (cli_num("tolerance", "rotation-deg", f->rot, 0, 90, &v) ||
                   tol_config_set(cfg, "rotation_deg", v, &e)))
        return e.code ? cli_error("tolerance", e.code, e.msg) : 1;
    if (f->quant) {
        long k;
        if (!strcmp(f->quant, "printer")) {
            tol_config_quantize_printer(cfg);
        } else if (cli_int("tolerance", "quantize", f->quant, 2, 65536, &k)) {
            fprintf(stderr, "  (give 'printer' or a number of phase levels per 2 pi)\n");
            return 1;
        } else if (tol_config_set(cfg, "quantize_levels", (double)k, &e)) {
            return cli_error("tolerance", e.code, e.msg);
        }
    }
    if (f->dist) {
        int d = !strcmp(f->dist, "uniform") ? TOL_UNIFORM
                : !strcmp(f->dist, "normal") ? TOL_NORMAL : -1;
        if (d < 0) {
            fprintf(stderr, "d2fab tolerance: --distribution '%s': expected uniform or normal\n",
                    f->dist);
            return 1;
        }
        for (int k = 0; k < TOL_NKINDS; k++) cfg->item[k].dist = d;
    }
    if (f->sweep && parse_scales(f->sweep, cfg)) {
        fprintf(stderr, "d2fab tolerance: --sweep '%s': expected 1 to %d comma-separated "
                "multiples in [0, 100], e.g. 0.5,1,2\n", f->sweep, TOL_MAX_SCALES);
        return 1;
    }
    if (f->mask && !strcmp(f->mask, "stencil")) {
        cfg->stencil = 1;
        cfg->mask_png[0] = 0;
    } else if (f->mask) {
        snprintf(cfg->mask_png, sizeof cfg->mask_png, "%s", f->mask);
        cfg->stencil = 0;
    }
    cfg->stencil_fn = mask_stencil_u8;
    if (f->limit > 0) cfg->limit = (int)f->limit;
    if (f->trials >= 0) cfg->trials = f->trials > 2000000000L ? 2000000000 : (int)f->trials;
    if (f->seed >= 0) cfg->seed = (uint64_t)f->seed;
    if (f->spec >= 0) cfg->spec = f->spec / 100;
    if (f->nosens) cfg->sensitivity = 0;
    if (f->noinv) cfg->inverse = 0;
    if (f->optics) {
        if (!strcmp(f->optics, "thin")) cfg->optics = D2_OPTICS_THIN;
        else if (!strcmp(f->optics, "thick")) cfg->optics = D2_OPTICS_THICK;
        else {
            fprintf(stderr, "d2fab tolerance: --optics '%s': expected thin or thick\n", f->optics);
            return 1;
        }
    }
    int any = cfg->mask_png[0] != 0 || cfg->stencil;
    for (int k = 0; k < TOL_NKINDS; k++) any |= cfg->item[k].nval > 0;
    if (!any) {
        fprintf(stderr, "d2fab tolerance: no perturbation to apply: give --config with "
                "magnitudes (samples/tolerance.json) or flags such as --lateral-mm\n");
        return 1;
    }
    return 0;
}

static void print_sensitivity(const tol_result *r)
{
    printf("  sensitivity, worst first (accuracy change in points at +-D):\n");
    for (int j = 0; j < r->nsens && j < 8; j++) {
        const tol_sens_row *w = &r->sens[j];
        char where[32] = "";
        if (w->layer >= 0) snprintf(where, sizeof where, " layer %d", w->layer + 1);
        char dv[48];
        if (w->kind == TOL_MASK)
            snprintf(dv, sizeof dv, "%s", r->mag.stencil ? "stencils" : "PNG");
        else
            snprintf(dv, sizeof dv, "%.4g %s", w->magnitude, tol_result_unit(r, w->kind));
        printf("    %-24s%-9s %-2s D = %-14s %+7.2f%s\n", tol_kind_name(w->kind), where,
               w->comp == 0 ? "x" : w->comp == 1 ? "y" : "", dv, 100 * w->change,
               w->applicable ? "" : "  (not applicable)");
    }
    if (r->nsens > 8) printf("    ... %d more in sensitivity.csv\n", r->nsens - 8);
}

static void print_result(const tol_result *r, const tol_config *cfg)
{
    printf("%s (%s, %d layers of %d x %d): nominal accuracy %.2f%% on %d test images\n",
           r->s->name, r->s->is_export ? "export" : "model", r->s->m.g.layers, r->s->m.g.n,
           r->s->m.g.n, 100 * r->nominal, r->images);
    printf("  optical model: %s\n", r->s->m.g.optics == D2_OPTICS_THICK
                                          ? "thick plates, air gaps of the assembly as built"
                                          : "thin phase screens, gaps datum to datum");
    printf("  light (nominal, %s detection): detector efficiency %.4g (5th percentile %.4g), "
           "margin %.4g (5th percentile %.4g)\n", detect_scheme_name(&r->s->m.g), r->eff_mean,
           r->eff_p5, r->margin_mean, r->margin_p5);
    if (r->nsens) print_sensitivity(r);
    if (r->ninv) {
        printf("  inverse tolerances (every layer at once; magnitude costing 1 / 5 points):\n");
        for (int j = 0; j < r->ninv; j++) {
            const tol_inverse *iv = &r->inv[j];
            char a1[40], a5[40];
            if (isfinite(iv->at1)) snprintf(a1, sizeof a1, "%.4g", iv->at1);
            else snprintf(a1, sizeof a1, "> %.4g", iv->max_tested);
            if (isfinite(iv->at5)) snprintf(a5, sizeof a5, "%.4g", iv->at5);
            else snprintf(a5, sizeof a5, "> %.4g", iv->max_tested);
            printf("    %-24s %10s / %-10s %-8s (configured %.4g)\n", tol_kind_name(iv->kind),
                   a1, a5, tol_result_unit(r, iv->kind), iv->ref);
        }
    }
    for (int q = 0; q < r->nmc; q++) {
        const tol_mc *m = &r->mc[q];
        if (!m->trials || m->scale == 0) continue;
        printf("  Monte Carlo x%g, %d trials: mean %.2f%%, std %.2f, min %.2f%%, max %.2f%%; "
               "90%% of trials >= %.2f%%, 50%% >= %.2f%%, 10%% >= %.2f%%; yield P(acc >= "
               "%.2f%%, %s) = %.1f%% (%.0f%% CI %.1f-%.1f%%)\n",
               m->scale, m->trials, 100 * m->mean, 100 * m->std, 100 * m->min, 100 * m->max,
               100 * m->p90, 100 * m->p50, 100 * m->p10, 100 * r->spec,
               r->spec_from_nominal ? "the nominal less 1 point" : "the spec", 100 * m->yield,
               100 * cfg->confidence, 100 * m->yield_lo, 100 * m->yield_hi);
    }
}

int cmd_tolerance(int argc, char **argv)
{
    enum { O_SPEC = 256, O_LAT, O_AX, O_ROT, O_QUANT, O_DIST, O_SWEEP, O_MASK, O_NOSENS, O_NOINV,
           O_CMP, O_OPTICS };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},    {"compare", required_argument, 0, O_CMP},
        {"out", required_argument, 0, 'o'},      {"config", required_argument, 0, 'c'},
        {"data", required_argument, 0, 'd'},     {"limit", required_argument, 0, 'l'},
        {"trials", required_argument, 0, 'n'},   {"seed", required_argument, 0, 's'},
        {"spec", required_argument, 0, O_SPEC},  {"lateral-mm", required_argument, 0, O_LAT},
        {"axial-mm", required_argument, 0, O_AX}, {"rotation-deg", required_argument, 0, O_ROT},
        {"quantize", required_argument, 0, O_QUANT},
        {"distribution", required_argument, 0, O_DIST},
        {"sweep", required_argument, 0, O_SWEEP}, {"mask", required_argument, 0, O_MASK},
        {"no-sensitivity", no_argument, 0, O_NOSENS}, {"no-inverse", no_argument, 0, O_NOINV},
        {"optics", required_argument, 0, O_OPTICS},
        {"threads", required_argument, 0, 't'},  {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    tol_study_model models[TOL_MAX_MODELS];
    tol_flags f = {.limit = -1, .trials = -1, .seed = -1, .spec = -1};
    const char *out = NULL, *data = dataset_default_dir();
    long threads = 0;
    int ndirs = 0, quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:c:d:l:n:s:t:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
        case O_CMP:
            if (ndirs >= TOL_MAX_MODELS) {
                fprintf(stderr, "d2fab tolerance: at most %d models in one report\n",
                        TOL_MAX_MODELS);
                return 1;
            }
            models[ndirs++] = (tol_study_model){optarg, NULL, NULL};
            break;
        case 'o': out = optarg; break;
        case 'c': f.cfgpath = optarg; break;
        case 'd': data = optarg; break;
        case 'l': if (cli_int("tolerance", "limit", optarg, 1, 10000000, &f.limit)) return 1; break;
        case 'n': if (cli_int("tolerance", "trials", optarg, 0, 1000000000L, &f.trials)) return 1; break;
        case 's': if (cli_int("tolerance", "seed", optarg, 0, 0x7fffffffL, &f.seed)) return 1; break;
        case 't': if (cli_int("tolerance", "threads", optarg, 1, 1024, &threads)) return 1; break;
        case O_SPEC: if (cli_num("tolerance", "spec", optarg, 0, 100, &f.spec)) return 1; break;
        case O_LAT: f.lat = optarg; break;
        case O_AX: f.ax = optarg; break;
        case O_OPTICS: f.optics = optarg; break;
        case O_ROT: f.rot = optarg; break;
        case O_QUANT: f.quant = optarg; break;
        case O_DIST: f.dist = optarg; break;
        case O_SWEEP: f.sweep = optarg; break;
        case O_MASK: f.mask = optarg; break;
        case O_NOSENS: f.nosens = 1; break;
        case O_NOINV: f.noinv = 1; break;
        case 'q': quiet = 1; break;
        case 'h': tol_help(stdout); return 0;
        default: tol_help(stderr); return 1;
        }
    }
    if (!ndirs || !out || optind < argc) {
        if (optind < argc)
            fprintf(stderr, "d2fab tolerance: unexpected argument '%s'\n", argv[optind]);
        else
            fprintf(stderr, "d2fab tolerance: --model and --out are required\n");
        tol_help(stderr);
        return 1;
    }
    /* Under mpirun only rank 0 reports progress. */
    if (d2_par_rank() > 0) quiet = 1;
    tol_config cfg;
    int rc = make_config(&f, &cfg);
    if (rc) return rc;

    d2_err e = {0};
    tol_study st;
    tol_study_opts so = {&cfg, models, ndirs, data, (int)threads, out, quiet ? NULL : stderr,
                         quiet ? NULL : stderr};
    if ((rc = tol_study_run(&so, &st, &e))) return cli_error("tolerance", rc, e.msg);
    for (int i = 0; i < st.rep.nmodels; i++) print_result(&st.rep.res[i], &cfg);
    printf("report: %s/report.json (tables as CSV, plots as PNG beside it), %.0f s, %ld "
           "inferences\n",
           out, st.rep.seconds, st.rep.inferences);
    tol_study_free(&st);
    return 0;
}
