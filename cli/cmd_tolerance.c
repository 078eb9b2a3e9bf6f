/* d2fab tolerance */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmds.h"
#include "core/config.h"
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

/* Label of a model: its folder's last component. */
static void model_name(const char *dir, char *out, size_t cap)
{
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t a = len;
    while (a > 0 && dir[a - 1] != '/') a--;
    snprintf(out, cap, "%.*s", (int)(len - a), dir + a);
    if (!*out) snprintf(out, cap, "model");
}

int cmd_tolerance(int argc, char **argv)
{
    enum { O_SPEC = 256, O_LAT, O_AX, O_ROT, O_QUANT, O_DIST, O_SWEEP, O_MASK, O_NOSENS, O_NOINV,
           O_CMP };
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
        {"threads", required_argument, 0, 't'},  {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    const char *dirs[TOL_MAX_MODELS], *out = NULL, *cfgpath = NULL, *data = dataset_default_dir();
    const char *lat = NULL, *ax = NULL, *rot = NULL, *quant = NULL, *dist = NULL, *sweep = NULL;
    const char *mask = NULL;
    long limit = -1, trials = -1, seed = -1, threads = 0;
    double spec = -1;
    int ndirs = 0, quiet = 0, nosens = 0, noinv = 0, c;
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
            dirs[ndirs++] = optarg;
            break;
        case 'o': out = optarg; break;
        case 'c': cfgpath = optarg; break;
        case 'd': data = optarg; break;
        case 'l': if (cli_int("tolerance", "limit", optarg, 1, 10000000, &limit)) return 1; break;
        case 'n': if (cli_int("tolerance", "trials", optarg, 0, 1000000000L, &trials)) return 1; break;
        case 's': if (cli_int("tolerance", "seed", optarg, 0, 0x7fffffffL, &seed)) return 1; break;
        case 't': if (cli_int("tolerance", "threads", optarg, 1, 1024, &threads)) return 1; break;
        case O_SPEC: if (cli_num("tolerance", "spec", optarg, 0, 100, &spec)) return 1; break;
        case O_LAT: lat = optarg; break;
        case O_AX: ax = optarg; break;
        case O_ROT: rot = optarg; break;
        case O_QUANT: quant = optarg; break;
        case O_DIST: dist = optarg; break;
        case O_SWEEP: sweep = optarg; break;
        case O_MASK: mask = optarg; break;
        case O_NOSENS: nosens = 1; break;
        case O_NOINV: noinv = 1; break;
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

    d2_err e = {0};
    tol_config cfg;
    tol_config_default(&cfg);
    int rc = 0;
    if (cfgpath) {
        cJSON *root = NULL;
        rc = cfg_load(cfgpath, &root, &e);
        if (!rc) rc = tol_config_read(cfgpath, root, &cfg, &e);
        cJSON_Delete(root);
        if (rc) return cli_error("tolerance", rc, e.msg);
    }
    /* Command-line flags override the config. */
    double v;
    if (lat && (cli_num("tolerance", "lateral-mm", lat, 0, 100, &v) ||
                tol_config_set(&cfg, "lateral_mm", v, &e)))
        return e.code ? cli_error("tolerance", e.code, e.msg) : 1;
    if (ax && (cli_num("tolerance", "axial-mm", ax, 0, 1000, &v) ||
               tol_config_set(&cfg, "axial_mm", v, &e)))
        return e.code ? cli_error("tolerance", e.code, e.msg) : 1;
    if (rot && (cli_num("tolerance", "rotation-deg", rot, 0, 90, &v) ||
                tol_config_set(&cfg, "rotation_deg", v, &e)))
        return e.code ? cli_error("tolerance", e.code, e.msg) : 1;
    if (quant) {
        long k;
        if (!strcmp(quant, "printer")) {
            tol_config_quantize_printer(&cfg);
        } else if (cli_int("tolerance", "quantize", quant, 2, 65536, &k)) {
            fprintf(stderr, "  (give 'printer' or a number of phase levels per 2 pi)\n");
            return 1;
        } else if (tol_config_set(&cfg, "quantize_levels", (double)k, &e)) {
            return cli_error("tolerance", e.code, e.msg);
        }
    }
    if (dist) {
        int d = !strcmp(dist, "uniform") ? TOL_UNIFORM : !strcmp(dist, "normal") ? TOL_NORMAL : -1;
        if (d < 0) {
            fprintf(stderr, "d2fab tolerance: --distribution '%s': expected uniform or normal\n",
                    dist);
            return 1;
        }
        for (int k = 0; k < TOL_NKINDS; k++) cfg.item[k].dist = d;
    }
    if (sweep && parse_scales(sweep, &cfg)) {
        fprintf(stderr, "d2fab tolerance: --sweep '%s': expected 1 to %d comma-separated "
                "multiples in [0, 100], e.g. 0.5,1,2\n", sweep, TOL_MAX_SCALES);
        return 1;
    }
    if (mask && !strcmp(mask, "stencil")) {
        cfg.stencil = 1;
        cfg.mask_png[0] = 0;
    } else if (mask) {
        snprintf(cfg.mask_png, sizeof cfg.mask_png, "%s", mask);
        cfg.stencil = 0;
    }
    cfg.stencil_fn = mask_stencil_u8;
    if (limit > 0) cfg.limit = (int)limit;
    if (trials >= 0) cfg.trials = trials > 2000000000L ? 2000000000 : (int)trials;
    if (seed >= 0) cfg.seed = (uint64_t)seed;
    if (spec >= 0) cfg.spec = spec / 100;
    if (nosens) cfg.sensitivity = 0;
    if (noinv) cfg.inverse = 0;

    int any = cfg.mask_png[0] != 0 || cfg.stencil;
    for (int k = 0; k < TOL_NKINDS; k++) any |= cfg.item[k].nval > 0;
    if (!any) {
        fprintf(stderr, "d2fab tolerance: no perturbation to apply: give --config with "
                "magnitudes (samples/tolerance.json) or flags such as --lateral-mm\n");
        return 1;
    }

    tol_stack stacks[TOL_MAX_MODELS];
    memset(stacks, 0, sizeof stacks);
    d2_dataset ds = {0};
    d2_pool *pool = NULL;
    tol_report rep;
    memset(&rep, 0, sizeof rep);
    int nst = 0;
    for (int i = 0; i < ndirs; i++) {
        d2_model m;
        char name[64], probe[4200];
        model_name(dirs[i], name, sizeof name);
        for (int j = 0; j < i; j++)
            if (!strcmp(stacks[j].name, name)) {
                char base[64];
                memcpy(base, name, sizeof base);
                snprintf(name, sizeof name, "%.48s-%d", base, (i + 1) % 1000000);
            }
        snprintf(probe, sizeof probe, "%s/export.json", dirs[i]);
        int is_export = access(probe, F_OK) == 0;
        if ((rc = cli_load_model(dirs[i], &m, &e))) goto fail;
        if ((rc = tol_stack_init(&stacks[i], &m, is_export ? dirs[i] : NULL, name, dirs[i], &e)))
            goto fail;
        nst = i + 1;
        if (strcmp(stacks[i].m.t.dataset, stacks[0].m.t.dataset)) {
            rc = d2_fail(&e, D2_EINPUT, "%s is trained on %s but %s on %s: models compared in "
                         "one report must use the same test set", dirs[i], stacks[i].m.t.dataset,
                         dirs[0], stacks[0].m.t.dataset);
            goto fail;
        }
    }
    /* Everything that can be refused is refused before the data set loads
     * and any inference runs: the settings each stack must take, and the run
     * size (with the 10000 MNIST test images unless --limit says fewer). */
    for (int i = 0; i < nst; i++) {
        tol_mag probe_mag;
        if ((rc = tol_bind(&cfg, &stacks[i], &probe_mag, &e))) goto fail;
        tol_mag_free(&probe_mag);
    }
    const d2_geom *big = &stacks[0].m.g;
    for (int i = 1; i < nst; i++)
        if ((double)stacks[i].m.g.n * stacks[i].m.g.layers > (double)big->n * big->layers)
            big = &stacks[i].m.g;
    int nthreads = threads > 0 ? (int)threads : d2_cpu_count();
    if ((rc = tol_check_limits(&cfg, nst, cfg.limit > 0 ? cfg.limit : 10000, big, nthreads, &e)))
        goto fail;
    if ((rc = dataset_load(data, stacks[0].m.t.dataset, 1, &ds, &e))) goto fail;
    if (!(pool = d2_pool_new((int)threads, &e))) {
        rc = e.code ? e.code : D2_EIO;
        goto fail;
    }
    int images = cfg.limit > 0 && cfg.limit < ds.count ? cfg.limit : ds.count;
    if ((rc = tol_check_limits(&cfg, nst, images, big, d2_pool_threads(pool), &e))) goto fail;
    if (!quiet)
        fprintf(stderr,
                "tolerance: %d model(s), %d test images of %s, %d trials x %d scale(s), seed "
                "%llu, %d threads; at most %.3g inferences\n",
                nst, images, stacks[0].m.t.dataset, cfg.trials, cfg.nscales,
                (unsigned long long)cfg.seed, d2_pool_threads(pool),
                nst * tol_plan_inferences(&cfg, big->layers, images));
    if ((rc = tol_run(&cfg, stacks, nst, &ds, pool, quiet ? NULL : stderr, &rep, &e))) goto fail;
    if ((rc = tol_write(&rep, out, &e))) goto fail;

    for (int i = 0; i < rep.nmodels; i++) {
        const tol_result *r = &rep.res[i];
        printf("%s (%s, %d layers of %d x %d): nominal accuracy %.2f%% on %d test images\n",
               r->s->name, r->s->is_export ? "export" : "model", r->s->m.g.layers, r->s->m.g.n,
               r->s->m.g.n, 100 * r->nominal, r->images);
        if (r->nsens) {
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
                   100 * cfg.confidence, 100 * m->yield_lo, 100 * m->yield_hi);
        }
    }
    printf("report: %s/report.json (tables as CSV, plots as PNG beside it), %.0f s, %ld "
           "inferences\n",
           out, rep.seconds, rep.inferences);
    tol_report_free(&rep);
    d2_pool_free(pool);
    dataset_free(&ds);
    for (int i = 0; i < nst; i++) tol_stack_free(&stacks[i]);
    return 0;
fail:
    tol_report_free(&rep);
    d2_pool_free(pool);
    dataset_free(&ds);
    for (int i = 0; i < nst; i++) tol_stack_free(&stacks[i]);
    return cli_error("tolerance", rc, e.msg);
}
