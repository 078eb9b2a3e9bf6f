/* The tolerance simulator: configs, stacks, one perturbed trial, the
 * analyses (nominal, sensitivity, inverse, Monte Carlo) and the statistics.
 * Reports and plots are in tolreport.c. */
#include "tolerance/tolerance.h"

#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "core/npy.h"
#include "optics/optics.h"

#define C_MM_THZ 0.299792458

/* ---- kinds and units ---------------------------------------------------- */

typedef struct kind_info {
    const char *name;
    int per_layer;  /* one value per layer */
    int comps;      /* x and y: 2 */
    int scalar;     /* signed draw times the magnitude; else a field or a setting */
} kind_info;

static const kind_info kinfo[TOL_NKINDS] = {
    [TOL_LATERAL] = {"lateral", 1, 2, 1},
    [TOL_AXIAL] = {"axial", 1, 1, 1},
    [TOL_ROTATION] = {"rotation", 1, 1, 1},
    [TOL_PITCH] = {"pitch_error", 1, 1, 1},
    [TOL_HEIGHT] = {"height_error", 1, 1, 0},
    [TOL_HEIGHT_CORR] = {"height_error_correlated", 1, 1, 0},
    [TOL_QUANTIZE] = {"quantize", 0, 1, 0},
    [TOL_INDEX] = {"index_error", 0, 1, 1},
    [TOL_KAPPA] = {"kappa_error", 0, 1, 1},
    [TOL_WAVELENGTH] = {"wavelength_error", 0, 1, 1},
    [TOL_DET_SHIFT] = {"detector_shift", 0, 2, 1},
    [TOL_DET_NOISE] = {"detector_noise", 0, 1, 0},
    [TOL_MASK] = {"input_mask", 0, 1, 0},
};

const char *tol_kind_name(int kind)
{
    return kind >= 0 && kind < TOL_NKINDS ? kinfo[kind].name : "?";
}

int tol_kind_per_layer(int kind) { return kinfo[kind].per_layer; }
int tol_kind_comps(int kind) { return kinfo[kind].comps; }
int tol_kind_signed(int kind) { return kinfo[kind].scalar; }

const char *tol_unit_name(int unit)
{
    switch (unit) {
    case TOL_U_MM: return "mm";
    case TOL_U_PX: return "px";
    case TOL_U_WAVELENGTHS: return "wavelengths";
    case TOL_U_DEG: return "deg";
    case TOL_U_PERCENT: return "%";
    case TOL_U_THZ: return "THz";
    case TOL_U_LEVELS: return "levels";
    case TOL_U_RAD: return "rad";
    default: return "";
    }
}

/* Magnitude keys: the perturbation and the unit their name carries. */
typedef struct mkey {
    const char *key;
    int kind, unit;
    double hi;
} mkey;

static const mkey mkeys[] = {
    {"lateral_mm", TOL_LATERAL, TOL_U_MM, 100},
    {"lateral_px", TOL_LATERAL, TOL_U_PX, 1000},
    {"axial_mm", TOL_AXIAL, TOL_U_MM, 1000},
    {"axial_wavelengths", TOL_AXIAL, TOL_U_WAVELENGTHS, 1000},
    {"rotation_deg", TOL_ROTATION, TOL_U_DEG, 90},
    {"pitch_error_percent", TOL_PITCH, TOL_U_PERCENT, 20},
    {"height_error_mm", TOL_HEIGHT, TOL_U_MM, 10},
    {"height_error_wavelengths", TOL_HEIGHT, TOL_U_WAVELENGTHS, 10},
    {"height_error_correlated_mm", TOL_HEIGHT_CORR, TOL_U_MM, 10},
    {"height_error_correlated_wavelengths", TOL_HEIGHT_CORR, TOL_U_WAVELENGTHS, 10},
    {"quantize_step_mm", TOL_QUANTIZE, TOL_U_MM, 10},
    {"quantize_levels", TOL_QUANTIZE, TOL_U_LEVELS, 65536},
    {"index_error", TOL_INDEX, TOL_U_NONE, 1},
    {"kappa_error", TOL_KAPPA, TOL_U_NONE, 1},
    {"wavelength_error_mm", TOL_WAVELENGTH, TOL_U_MM, 1000},
    {"frequency_error_thz", TOL_WAVELENGTH, TOL_U_THZ, 1000},
    {"detector_shift_mm", TOL_DET_SHIFT, TOL_U_MM, 100},
    {"detector_shift_px", TOL_DET_SHIFT, TOL_U_PX, 1000},
    {"detector_noise_relative", TOL_DET_NOISE, TOL_U_NONE, 10},
};
#define NMKEYS (int)(sizeof mkeys / sizeof mkeys[0])

static const char *const k_top[] = {
    "seed", "trials", "limit", "spec_accuracy_percent", "confidence_percent", "distribution",
    "distributions", "sweep_scales", "sensitivity", "inverse", "inverse_draws", "quantize",
    "correlation_length_mm", "input_mask_png", "input_mask", "mask_threshold",
    "mask_min_feature_mm", "notes",
    "lateral_mm", "lateral_px", "axial_mm", "axial_wavelengths", "rotation_deg",
    "pitch_error_percent", "height_error_mm", "height_error_wavelengths",
    "height_error_correlated_mm", "height_error_correlated_wavelengths", "quantize_step_mm",
    "quantize_levels", "index_error", "kappa_error", "wavelength_error_mm", "frequency_error_thz",
    "detector_shift_mm", "detector_shift_px", "detector_noise_relative", NULL};
static const char *const dists[] = {"uniform", "normal", NULL};

void tol_config_default(tol_config *c)
{
    memset(c, 0, sizeof *c);
    c->seed = 1;
    c->trials = 200;
    c->spec = -1;
    c->confidence = 0.95;
    c->sensitivity = 1;
    c->inverse = 1;
    c->inverse_draws = 4;
    c->stencil_threshold = 0.5;
    c->nscales = 1;
    c->scales[0] = 1.0;
}

static const mkey *find_mkey(const char *key)
{
    for (int i = 0; i < NMKEYS; i++)
        if (!strcmp(mkeys[i].key, key)) return &mkeys[i];
    return NULL;
}

static int set_item(tol_config *c, const mkey *k, const double *v, int nv, const char *file,
                    d2_err *e)
{
    tol_item *it = &c->item[k->kind];
    if (k->kind == TOL_QUANTIZE) {
        if (k->unit == TOL_U_LEVELS && (v[0] < 2 || v[0] != floor(v[0])))
            return d2_fail(e, D2_EINPUT,
                           "%s: key \"quantize_levels\" = %g: must be a whole number of phase "
                           "levels per 2 pi, 2..65536",
                           file, v[0]);
        c->quantize_printer = 0;
    }
    it->nval = nv;
    it->unit = k->unit;
    for (int i = 0; i < nv; i++) it->val[i] = v[i];
    return 0;
}

int tol_config_set(tol_config *c, const char *key, double value, d2_err *e)
{
    const mkey *k = find_mkey(key);
    if (!k) return d2_fail(e, D2_EUSAGE, "unknown tolerance key \"%s\"", key);
    if (!isfinite(value) || value < 0 || value > k->hi)
        return d2_fail(e, D2_EUSAGE, "%s = %g: must be in [0, %g]", key, value, k->hi);
    return set_item(c, k, &value, 1, "command line", e);
}

void tol_config_quantize_printer(tol_config *c)
{
    tol_item *it = &c->item[TOL_QUANTIZE];
    it->nval = 1;
    it->unit = TOL_U_MM;
    it->val[0] = 0;
    c->quantize_printer = 1;
}

int tol_config_read(const char *path, const cJSON *root, tol_config *c, d2_err *e)
{
    cfg_ctx top = {path, ""};
    int rc;
    long iv;
    double v;
    if (!cJSON_IsObject(root))
        return d2_fail(e, D2_EINPUT, "%s: expected a JSON object of tolerance settings", path);
    if ((rc = cfg_check_keys(&top, root, k_top, e))) return rc;
    if ((rc = cfg_int(&top, root, "seed", 0, (long)c->seed, 0, 0x7fffffffL, &iv, e))) return rc;
    c->seed = (uint64_t)iv;
    if ((rc = cfg_int(&top, root, "trials", 0, c->trials, 0, TOL_MAX_TRIALS, &iv, e))) return rc;
    c->trials = (int)iv;
    if ((rc = cfg_int(&top, root, "limit", 0, c->limit, 0, 10000000, &iv, e))) return rc;
    c->limit = (int)iv;
    if (cJSON_GetObjectItemCaseSensitive(root, "spec_accuracy_percent")) {
        if ((rc = cfg_num(&top, root, "spec_accuracy_percent", 1, 0, 0, 100, &v, e))) return rc;
        c->spec = v / 100;
    }
    if ((rc = cfg_num_range(&top, root, "confidence_percent", 0, 100 * c->confidence, 0, 100,
                            CFG_LO_OPEN | CFG_HI_OPEN, &v, e)))
        return rc;
    c->confidence = v / 100;
    if ((rc = cfg_bool(&top, root, "sensitivity", 0, c->sensitivity, &c->sensitivity, e)))
        return rc;
    if ((rc = cfg_bool(&top, root, "inverse", 0, c->inverse, &c->inverse, e))) return rc;
    if ((rc = cfg_int(&top, root, "inverse_draws", 0, c->inverse_draws, 1, TOL_MAX_DRAWS, &iv, e)))
        return rc;
    c->inverse_draws = (int)iv;
    if (cJSON_GetObjectItemCaseSensitive(root, "sweep_scales")) {
        if ((rc = cfg_num_array(&top, root, "sweep_scales", 1, TOL_MAX_SCALES, 0, 100, c->scales,
                                &c->nscales, e)))
            return rc;
    }
    const char *notes;
    if ((rc = cfg_str(&top, root, "notes", 0, "", &notes, e))) return rc;

    int dist = TOL_UNIFORM;
    if ((rc = cfg_enum(&top, root, "distribution", 0, TOL_UNIFORM, dists, &dist, e))) return rc;
    for (int k = 0; k < TOL_NKINDS; k++) c->item[k].dist = dist;

    /* Magnitudes: a number, or one number per layer for per-layer kinds. */
    const char *seen[TOL_NKINDS] = {0};
    for (int i = 0; i < NMKEYS; i++) {
        const mkey *k = &mkeys[i];
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, k->key);
        if (!it) continue;
        if (seen[k->kind])
            return d2_fail(e, D2_EINPUT,
                           "%s: keys \"%s\" and \"%s\" both set the %s perturbation: give one",
                           path, seen[k->kind], k->key, kinfo[k->kind].name);
        seen[k->kind] = k->key;
        double vals[D2_MAX_LAYERS];
        int nv = 1;
        if (cJSON_IsArray(it)) {
            if (!kinfo[k->kind].per_layer)
                return d2_fail(e, D2_EINPUT,
                               "%s: key \"%s\": one number for the whole stack, not an array",
                               path, k->key);
            if ((rc = cfg_num_array(&top, root, k->key, 1, D2_MAX_LAYERS, 0, k->hi, vals, &nv, e)))
                return rc;
        } else if ((rc = cfg_num(&top, root, k->key, 1, 0, 0, k->hi, &vals[0], e))) {
            return rc;
        }
        if ((rc = set_item(c, k, vals, nv, path, e))) return rc;
    }
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantize");
    if (q) {
        if (!cJSON_IsString(q) || (strcmp(q->valuestring, "printer") && strcmp(q->valuestring, "none")))
            return d2_fail(e, D2_EINPUT,
                           "%s: key \"quantize\": expected \"printer\" (the export's Z step) or "
                           "\"none\"; for a step or K levels use \"quantize_step_mm\" or "
                           "\"quantize_levels\"",
                           path);
        if (seen[TOL_QUANTIZE] && !strcmp(q->valuestring, "printer"))
            return d2_fail(e, D2_EINPUT,
                           "%s: keys \"quantize\" and \"%s\" both set the quantisation: give one",
                           path, seen[TOL_QUANTIZE]);
        if (!strcmp(q->valuestring, "printer")) tol_config_quantize_printer(c);
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "correlation_length_mm")) {
        if ((rc = cfg_num_range(&top, root, "correlation_length_mm", 1, 0, 0, 1e4, CFG_LO_OPEN,
                                &c->correlation_mm, e)))
            return rc;
    }
    if (seen[TOL_HEIGHT_CORR] && !(c->correlation_mm > 0))
        return d2_fail(e, D2_EINPUT,
                       "%s: key \"%s\" needs \"correlation_length_mm\" (the distance over which "
                       "the height error's autocorrelation falls to 1/e)",
                       path, seen[TOL_HEIGHT_CORR]);

    const cJSON *ds;
    if ((rc = cfg_object(&top, root, "distributions", &ds, e))) return rc;
    if (ds) {
        const char *allowed[TOL_NKINDS + 1];
        int na = 0;
        for (int k = 0; k < TOL_NKINDS; k++)
            if (k != TOL_QUANTIZE && k != TOL_MASK && k != TOL_DET_NOISE)
                allowed[na++] = kinfo[k].name;
        allowed[na] = NULL;
        cfg_ctx cd = {path, "distributions"};
        if ((rc = cfg_check_keys(&cd, ds, allowed, e))) return rc;
        for (int k = 0; k < na; k++) {
            int d = dist, kind = 0;
            for (int j = 0; j < TOL_NKINDS; j++)
                if (!strcmp(kinfo[j].name, allowed[k])) kind = j;
            if ((rc = cfg_enum(&cd, ds, allowed[k], 0, dist, dists, &d, e))) return rc;
            c->item[kind].dist = d;
        }
    }

    const char *im = NULL;
    if ((rc = cfg_str(&top, root, "input_mask", 0, "none", &im, e))) return rc;
    if (strcmp(im, "none") && strcmp(im, "stencil"))
        return d2_fail(e, D2_EINPUT,
                       "%s: key \"input_mask\" = \"%s\": expected \"stencil\" (every test digit "
                       "through its printable stencil) or \"none\"; a fixed mask image is "
                       "\"input_mask_png\"",
                       path, im);
    c->stencil = !strcmp(im, "stencil");
    if ((rc = cfg_num_range(&top, root, "mask_threshold", 0, c->stencil_threshold, 0, 1,
                            CFG_LO_OPEN | CFG_HI_OPEN, &c->stencil_threshold, e)) ||
        (rc = cfg_num_range(&top, root, "mask_min_feature_mm", 0, c->stencil_min_feature_mm, 0,
                            10, 0, &c->stencil_min_feature_mm, e)))
        return rc;
    const char *mask = NULL;
    if ((rc = cfg_str(&top, root, "input_mask_png", 0, NULL, &mask, e))) return rc;
    if (mask && c->stencil)
        return d2_fail(e, D2_EINPUT,
                       "%s: keys \"input_mask_png\" and \"input_mask\": \"stencil\" both set the "
                       "input mask: give one",
                       path);
    if (mask) {
        /* A file named in a config stays in the config's folder. */
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        else
            snprintf(dir, sizeof dir, ".");
        if ((rc = d2_path_inside(dir, mask, "input_mask_png", e))) return d2_err_prefix(e, "%s", path);
        if ((rc = d2_path_join(c->mask_png, sizeof c->mask_png, dir, mask, e))) return rc;
    }
    return 0;
}

/* ---- limits ------------------------------------------------------------- */

/* Upper bound of the evaluations of one model (each over all test images). */
static double plan_evals(const tol_config *c, int layers)
{
    double ev = 1, ops = 0;
    int kinds = 0;
    for (int k = 0; k < TOL_NKINDS; k++) {
        const tol_item *it = &c->item[k];
        if (!it->nval && !(k == TOL_MASK && (c->mask_png[0] || c->stencil))) continue;
        kinds++;
        ops += (kinfo[k].per_layer ? layers : 1) * kinfo[k].comps * (kinfo[k].scalar ? 2 : 1);
    }
    if (c->sensitivity) ev += ops;
    /* Scan (5 points, up to 5 extensions) and 2 x 4 bisection steps. */
    if (c->inverse) ev += (double)kinds * c->inverse_draws * 18;
    for (int s = 0; s < c->nscales; s++)
        if (c->scales[s] > 0) ev += c->trials;
    return ev;
}

double tol_plan_inferences(const tol_config *c, int layers, int images)
{
    return plan_evals(c, layers) * images;
}

int tol_check_limits(const tol_config *c, int nmodels, int images, const d2_geom *g,
                     int threads, d2_err *e)
{
    double inf = nmodels * tol_plan_inferences(c, g->layers, images);
    /* About 1e10 flop/s per thread for FFTW's single-precision transforms:
     * each gap costs 2n + 2p transforms of length p, 5 p log2 p flop each. */
    double p = (double)g->pad * g->n;
    double flop = (g->layers + 1) * (2.0 * g->n + 2 * p) * 5 * p * log2(p);
    double secs = inf * flop / (1e10 * (threads > 0 ? threads : 1));
    char est[160];
    if (secs > 2 * 86400)
        snprintf(est, sizeof est, "%.3g inferences, about %.0f days", inf, secs / 86400);
    else
        snprintf(est, sizeof est, "%.3g inferences, about %.1f hours", inf, secs / 3600);
    if (c->trials > TOL_MAX_TRIALS)
        return d2_fail(e, D2_EINPUT, "--trials %d: the run would need %s on %d threads; the limit "
                       "is %d trials per model and scale",
                       c->trials, est, threads, TOL_MAX_TRIALS);
    if (inf > TOL_MAX_INFERENCES)
        return d2_fail(e, D2_EINPUT,
                       "the run would need %s on %d threads (%d model(s), %d test images, %d "
                       "trials x %d scales); the limit is %.0e inferences: use fewer trials, "
                       "--limit or fewer analyses",
                       est, threads, nmodels, images, c->trials, c->nscales, TOL_MAX_INFERENCES);
    return 0;
}

/* ---- stacks ------------------------------------------------------------- */

void tol_stack_free(tol_stack *s)
{
    if (!s) return;
    model_free(&s->m);
    for (int l = 0; l < D2_MAX_LAYERS; l++) free(s->height_mm[l]);
    memset(s, 0, sizeof *s);
}

/* The export's material, base, Z step and heights. */
static int read_export(tol_stack *s, const char *dir, d2_err *e)
{
    char path[1200], lp[1200];
    cJSON *root = NULL;
    int rc;
    if ((rc = d2_path_join(path, sizeof path, dir, "export.json", e))) return rc;
    if ((rc = cfg_load(path, &root, e))) return rc;
    cfg_ctx c = {path, ""};
    const cJSON *mat, *printer, *files;
    double wl;
    if ((rc = cfg_object(&c, root, "material", &mat, e)) ||
        (rc = cfg_object(&c, root, "printer", &printer, e)))
        goto done;
    cfg_ctx cm = {path, "material"};
    if ((rc = cfg_num_range(&cm, mat, "index", 1, 0, 1, 10, CFG_LO_OPEN, &s->index, e)) ||
        (rc = cfg_num(&cm, mat, "kappa", 1, 0, 0, 10, &s->kappa, e)) ||
        (rc = cfg_num(&c, root, "base_mm", 1, 0, 0, 1000, &s->base_mm, e)) ||
        (rc = cfg_num(&c, root, "wavelength_mm", 1, 0, 1e-6, 1e6, &wl, e)))
        goto done;
    if (fabs(wl - s->m.g.wavelength_mm) > 1e-9 * wl) {
        rc = d2_fail(e, D2_EINPUT, "%s: key \"wavelength_mm\" = %g differs from the loaded "
                     "model's %g mm", path, wl, s->m.g.wavelength_mm);
        goto done;
    }
    s->z_step_mm = 0;
    if (printer) {
        cfg_ctx cp = {path, "printer"};
        if ((rc = cfg_num(&cp, printer, "z_step_mm", 0, 0, 0, 10, &s->z_step_mm, e))) goto done;
        if ((rc = cfg_num(&cp, printer, "min_feature_mm", 0, 0, 0, 20, &s->min_feature_mm, e)))
            goto done;
    }
    files = cJSON_GetObjectItemCaseSensitive(root, "layer_files");
    if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) != s->m.g.layers) {
        rc = d2_fail(e, D2_EINPUT, "%s: key \"layer_files\": expected an array of %d entries",
                     path, s->m.g.layers);
        goto done;
    }
    for (int l = 0; l < s->m.g.layers; l++) {
        char kp[40], key[64];
        snprintf(kp, sizeof kp, "layer_files[%d]", l);
        snprintf(key, sizeof key, "%s.heights_npy", kp);
        cfg_ctx lc = {path, kp};
        const char *name;
        int rows, cols;
        if ((rc = cfg_str(&lc, cJSON_GetArrayItem(files, l), "heights_npy", 1, NULL, &name, e)) ||
            (rc = d2_path_inside(dir, name, key, e)) ||
            (rc = d2_path_join(lp, sizeof lp, dir, name, e)) ||
            (rc = npy_read_map(lp, &s->height_mm[l], &rows, &cols, e)))
            goto done;
        if (rows != s->m.g.n || cols != s->m.g.n) {
            rc = d2_fail(e, D2_EINPUT, "%s: %d x %d heights, expected %d x %d", lp, rows, cols,
                         s->m.g.n, s->m.g.n);
            goto done;
        }
        size_t nn = (size_t)rows * cols;
        for (size_t i = 0; i < nn; i++)
            if (s->height_mm[l][i] < 0) {
                rc = d2_fail(e, D2_EINPUT, "%s: negative height %g mm at pixel %zu", lp,
                             s->height_mm[l][i], i);
                goto done;
            }
    }
done:
    cJSON_Delete(root);
    return rc;
}

int tol_stack_init(tol_stack *s, d2_model *m, const char *export_dir, const char *name,
                   const char *path, d2_err *e)
{
    memset(s, 0, sizeof *s);
    s->m = *m;
    memset(m, 0, sizeof *m);
    snprintf(s->name, sizeof s->name, "%s", name ? name : "model");
    snprintf(s->path, sizeof s->path, "%s", path ? path : "");
    const d2_geom *g = &s->m.g;
    size_t nn = (size_t)g->n * g->n;
    int rc;
    if (export_dir) {
        s->is_export = 1;
        s->absorbing = 1;
        if ((rc = read_export(s, export_dir, e))) goto fail;
        return 0;
    }
    s->index = g->index;
    s->kappa = g->kappa;
    s->base_mm = g->base_mm;
    s->absorbing = g->coupled;
    s->z_step_mm = s->m.t.quant_z_step_mm;
    /* The thickness the phase implies, as net_phase_to_t takes it for the
     * coupled amplitude. */
    double c = g->wavelength_mm / (2 * M_PI * (s->index - 1));
    for (int l = 0; l < g->layers; l++) {
        if (!(s->height_mm[l] = d2_malloc(nn * sizeof(float), "thickness map", e))) {
            rc = D2_EIO;
            goto fail;
        }
        for (size_t i = 0; i < nn; i++) {
            double w = fmod((double)s->m.phase[l][i], 2 * M_PI);
            if (w < 0) w += 2 * M_PI;
            s->height_mm[l][i] = (float)(s->base_mm + w * c);
        }
    }
    return 0;
fail:
    tol_stack_free(s);
    return rc;
}

/* ---- binding ------------------------------------------------------------ */

void tol_mag_free(tol_mag *mag)
{
    if (!mag) return;
    free(mag->mask);
    memset(mag, 0, sizeof *mag);
}

int tol_bind(const tol_config *c, const tol_stack *s, tol_mag *mag, d2_err *e)
{
    const d2_geom *g = &s->m.g;
    int L = g->layers;
    memset(mag, 0, sizeof *mag);
    mag->correlation_mm = c->correlation_mm;
    for (int k = 0; k < TOL_NKINDS; k++) {
        const tol_item *it = &c->item[k];
        mag->dist[k] = it->dist;
        if (!it->nval) continue;
        int nl = kinfo[k].per_layer ? L : 1;
        if (it->nval != 1 && it->nval != nl)
            return d2_fail(e, D2_EINPUT,
                           "tolerance %s: %d per-layer values, but %s has %d layers (give one "
                           "number for all, or %d)",
                           kinfo[k].name, it->nval, s->name, L, L);
        double f = 1;
        int unit = it->unit;
        if (unit == TOL_U_PX) f = g->pitch_mm, unit = TOL_U_MM;
        if (unit == TOL_U_WAVELENGTHS) f = g->wavelength_mm, unit = TOL_U_MM;
        for (int l = 0; l < nl; l++) mag->v[k][l] = f * it->val[it->nval == 1 ? 0 : l];
        mag->unit[k] = unit;
        if (k == TOL_QUANTIZE) {
            if (c->quantize_printer) {
                if (!(s->z_step_mm > 0))
                    return d2_fail(e, D2_EINPUT,
                                   "--quantize printer: %s is a model without a printer Z step; "
                                   "export it for a printer first, or give quantize_step_mm or "
                                   "a number of levels",
                                   s->name);
                mag->v[k][0] = s->z_step_mm;
            }
            if (unit == TOL_U_LEVELS) {
                mag->v[k][0] = 2 * M_PI / it->val[0];
                mag->unit[k] = TOL_U_RAD;
                mag->quant_levels = 1;
            }
        }
        if (k == TOL_WAVELENGTH) {
            double lim = unit == TOL_U_THZ ? 0.5 * C_MM_THZ / g->wavelength_mm : 0.5 * g->wavelength_mm;
            if (mag->v[k][0] >= lim)
                return d2_fail(e, D2_EINPUT, "tolerance %s = %g %s: must be below half the "
                               "design value (%g %s) for %s",
                               unit == TOL_U_THZ ? "frequency_error_thz" : "wavelength_error_mm",
                               mag->v[k][0], tol_unit_name(unit), lim, tol_unit_name(unit), s->name);
        }
        if (k == TOL_AXIAL) {
            /* Two neighbouring layers moving towards each other must not meet. */
            double gmin = INFINITY, dmax = 0;
            for (int j = 0; j <= L; j++) gmin = fmin(gmin, g->gap_mm[j]);
            for (int l = 0; l < L; l++) dmax = fmax(dmax, mag->v[k][l]);
            if (2 * dmax >= gmin)
                return d2_fail(e, D2_EINPUT, "tolerance axial = %g mm: two layers could touch "
                               "(smallest gap of %s: %g mm)", dmax, s->name, gmin);
        }
        if (k == TOL_HEIGHT_CORR && c->correlation_mm > 0.5 * g->n * g->pitch_mm)
            return d2_fail(e, D2_EINPUT,
                           "tolerance correlation_length_mm = %g: at most half the plate side "
                           "(%g mm) for %s",
                           c->correlation_mm, 0.5 * g->n * g->pitch_mm, s->name);
        for (int l = 0; l < nl; l++)
            if (mag->v[k][l] > 0) mag->on[k] = 1;
    }
    if (mag->on[TOL_KAPPA] && !s->absorbing) mag->on[TOL_KAPPA] = 0;
    if (c->stencil) {
        if (!c->stencil_fn)
            return d2_fail(e, D2_EUSAGE, "input_mask \"stencil\": no stencil maker given "
                           "(tol_config.stencil_fn; d2fab tolerance sets it)");
        mag->stencil = 1;
        mag->stencil_fn = c->stencil_fn;
        mag->stencil_ctx = c->stencil_ctx;
        mag->stencil_threshold = c->stencil_threshold;
        mag->stencil_min_feature_mm = c->stencil_min_feature_mm > 0 ? c->stencil_min_feature_mm
                                      : s->min_feature_mm > 0      ? s->min_feature_mm
                                                                   : 0.1;
        mag->on[TOL_MASK] = 1;
        mag->v[TOL_MASK][0] = 1;
        mag->unit[TOL_MASK] = TOL_U_NONE;
    }
    if (c->mask_png[0]) {
        int w, h;
        float *px = NULL;
        int rc = img_read_gray(c->mask_png, &w, &h, &px, e);
        if (rc) return rc;
        if (w != g->n || h != g->n) {
            free(px);
            return d2_fail(e, D2_EINPUT,
                           "%s: %d x %d pixels; an input mask must be the input plane of %s, %d x "
                           "%d (one pixel per neuron, 0 opaque .. 1 open)",
                           c->mask_png, w, h, s->name, g->n, g->n);
        }
        mag->mask = px;
        mag->on[TOL_MASK] = 1;
        mag->v[TOL_MASK][0] = 1;
        mag->unit[TOL_MASK] = TOL_U_NONE;
    }
    return 0;
}

/* ---- random streams ----------------------------------------------------- */

static uint64_t smix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The seed of one random quantity: the run's seed, a stream (trial) and
 * three indices (perturbation, layer or image, component). */
static uint64_t seed_for(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b, uint64_t c)
{
    return smix(smix(smix(smix(seed) ^ stream) ^ (a << 1)) ^ (b << 4 | c));
}

/* A unit draw: uniform in [-1, 1], or N(0, 1/4) truncated at +-1 (2 sigma). */
static double unit_draw(d2_rng *r, int dist)
{
    if (dist == TOL_NORMAL) {
        for (;;) {
            double x = 0.5 * d2_rng_normal(r);
            if (fabs(x) <= 1) return x;
        }
    }
    return 2 * d2_rng_uniform(r) - 1;
}

void tol_draw_make(tol_draw *d, const tol_mag *mag, int layers, uint64_t seed, uint64_t stream,
                   int only_kind)
{
    memset(d, 0, sizeof *d);
    d->stream = stream;
    for (int k = 0; k < TOL_NKINDS; k++) {
        if (!mag->on[k] || (only_kind >= 0 && k != only_kind)) continue;
        int nl = kinfo[k].per_layer ? layers : 1;
        for (int l = 0; l < nl; l++) {
            if (!(mag->v[k][l] > 0)) continue;
            for (int c = 0; c < kinfo[k].comps; c++) {
                if (kinfo[k].scalar) {
                    d2_rng r;
                    d2_rng_seed(&r, seed_for(seed, stream, (uint64_t)k, (uint64_t)l, (uint64_t)c));
                    d->u[k][l][c] = unit_draw(&r, mag->dist[k]);
                } else {
                    d->u[k][l][c] = 1;
                }
            }
        }
    }
}

/* ---- one trial ---------------------------------------------------------- */

/* The perturbation a (magnitudes, scale, draw) triple stands for. */
typedef struct real {
    layer_pose pose[D2_MAX_LAYERS];
    double scale[D2_MAX_LAYERS];       /* printed pitch / design pitch */
    double hw[D2_MAX_LAYERS], hc[D2_MAX_LAYERS];      /* height error limits, mm */
    double hw_rms[D2_MAX_LAYERS], hc_rms[D2_MAX_LAYERS]; /* realised RMS, mm */
    double qstep;                      /* quantisation step (mm or rad), 0 off */
    double dn, dk;
    double wl_val;                     /* drift in the key's unit */
    double lambda;                     /* drifted wavelength, mm */
    double ddx, ddy;                   /* detector shift, mm */
    double noise;                      /* sigma / nominal mean detector energy */
    int mask;
} real;

static void realise(const tol_mag *mag, double scale, const tol_draw *d, const d2_geom *g, real *r)
{
    memset(r, 0, sizeof *r);
    r->lambda = g->wavelength_mm;
    for (int l = 0; l < g->layers; l++) r->scale[l] = 1;
    if (!d) return;
#define V(k, l, c) (scale * mag->v[k][l] * d->u[k][l][c])
    for (int l = 0; l < g->layers; l++) {
        r->pose[l].dx_mm = V(TOL_LATERAL, l, 0);
        r->pose[l].dy_mm = V(TOL_LATERAL, l, 1);
        r->pose[l].dz_mm = V(TOL_AXIAL, l, 0);
        r->pose[l].rot_deg = V(TOL_ROTATION, l, 0);
        r->scale[l] = 1 + V(TOL_PITCH, l, 0) / 100;
        r->hw[l] = V(TOL_HEIGHT, l, 0);
        r->hc[l] = V(TOL_HEIGHT_CORR, l, 0);
    }
    r->qstep = V(TOL_QUANTIZE, 0, 0);
    r->dn = V(TOL_INDEX, 0, 0);
    r->dk = V(TOL_KAPPA, 0, 0);
    r->wl_val = V(TOL_WAVELENGTH, 0, 0);
    if (r->wl_val != 0) {
        if (mag->unit[TOL_WAVELENGTH] == TOL_U_THZ)
            r->lambda = C_MM_THZ / (C_MM_THZ / g->wavelength_mm + r->wl_val);
        else
            r->lambda = g->wavelength_mm + r->wl_val;
    }
    r->ddx = V(TOL_DET_SHIFT, 0, 0);
    r->ddy = V(TOL_DET_SHIFT, 0, 1);
    r->noise = V(TOL_DET_NOISE, 0, 0);
    r->mask = (mag->mask || mag->stencil) && d->u[TOL_MASK][0][0] > 0;
#undef V
}

/* Names (names != NULL) and/or values (vals != NULL) of the realised
 * perturbation vector, in one fixed order. Returns the count. */
static int vec_fill(const tol_mag *mag, int layers, const real *r, char (*names)[48], double *vals,
                    int max)
{
    int n = 0;
#define PUT(val, ...)                                                 \
    do {                                                              \
        if (n < max) {                                                \
            if (names) snprintf(names[n], 48, __VA_ARGS__);           \
            if (vals) vals[n] = (val);                                \
        }                                                             \
        n++;                                                          \
    } while (0)
    for (int l = 0; l < layers; l++) {
        if (mag->on[TOL_LATERAL] && mag->v[TOL_LATERAL][l] > 0) {
            PUT(r ? r->pose[l].dx_mm : 0, "L%d_lateral_x_mm", l + 1);
            PUT(r ? r->pose[l].dy_mm : 0, "L%d_lateral_y_mm", l + 1);
        }
        if (mag->on[TOL_AXIAL] && mag->v[TOL_AXIAL][l] > 0)
            PUT(r ? r->pose[l].dz_mm : 0, "L%d_axial_mm", l + 1);
        if (mag->on[TOL_ROTATION] && mag->v[TOL_ROTATION][l] > 0)
            PUT(r ? r->pose[l].rot_deg : 0, "L%d_rotation_deg", l + 1);
        if (mag->on[TOL_PITCH] && mag->v[TOL_PITCH][l] > 0)
            PUT(r ? 100 * (r->scale[l] - 1) : 0, "L%d_pitch_error_percent", l + 1);
        if (mag->on[TOL_HEIGHT] && mag->v[TOL_HEIGHT][l] > 0)
            PUT(r ? r->hw_rms[l] : 0, "L%d_height_error_rms_mm", l + 1);
        if (mag->on[TOL_HEIGHT_CORR] && mag->v[TOL_HEIGHT_CORR][l] > 0)
            PUT(r ? r->hc_rms[l] : 0, "L%d_height_error_correlated_rms_mm", l + 1);
    }
    if (mag->on[TOL_QUANTIZE])
        PUT(r ? r->qstep : 0, "quantize_step_%s", mag->quant_levels ? "rad" : "mm");
    if (mag->on[TOL_INDEX]) PUT(r ? r->dn : 0, "index_error");
    if (mag->on[TOL_KAPPA]) PUT(r ? r->dk : 0, "kappa_error");
    if (mag->on[TOL_WAVELENGTH])
        PUT(r ? r->wl_val : 0, "%s",
            mag->unit[TOL_WAVELENGTH] == TOL_U_THZ ? "frequency_error_thz" : "wavelength_error_mm");
    if (mag->on[TOL_DET_SHIFT]) {
        PUT(r ? r->ddx : 0, "detector_shift_x_mm");
        PUT(r ? r->ddy : 0, "detector_shift_y_mm");
    }
    if (mag->on[TOL_DET_NOISE]) PUT(r ? r->noise : 0, "detector_noise_relative");
    if (mag->on[TOL_MASK]) PUT(r ? r->mask : 0, "input_mask");
#undef PUT
    return n;
}

int tol_vector_names(const tol_mag *mag, int layers, char (*names)[48], int max)
{
    return vec_fill(mag, layers, NULL, names, NULL, max);
}

struct tol_sim {
    const tol_stack *s;
    d2_net *net;
    int n, L, threads;
    float complex *t0[D2_MAX_LAYERS];  /* nominal transmissions */
    int dirty[D2_MAX_LAYERS];          /* the net holds a perturbed layer */
    double gap[D2_MAX_LAYERS + 1], gap_lambda[D2_MAX_LAYERS + 1]; /* what H holds */
    float complex *sa, *sb;            /* n*n scratch */
    float *dh, *fa, *fb;               /* height error field and correlated-field buffers */
    size_t fcap;
    float **in, **inten;               /* per thread */
    float *det;                        /* count x ndet */
    int det_cap;
    unsigned char *st_bits, *st_bad;   /* stencils of the first st_n test images */
    int st_n, st_unprintable;
};

void tol_sim_free(tol_sim *sim)
{
    if (!sim) return;
    net_free(sim->net);
    for (int l = 0; l < D2_MAX_LAYERS; l++) free(sim->t0[l]);
    free(sim->sa);
    free(sim->sb);
    free(sim->dh);
    free(sim->fa);
    free(sim->fb);
    if (sim->in)
        for (int t = 0; t < sim->threads; t++) free(sim->in[t]);
    if (sim->inten)
        for (int t = 0; t < sim->threads; t++) free(sim->inten[t]);
    free(sim->in);
    free(sim->inten);
    free(sim->det);
    free(sim->st_bits);
    free(sim->st_bad);
    free(sim);
}

tol_sim *tol_sim_new(const tol_stack *s, int threads, d2_err *e)
{
    if (threads < 1) threads = 1;
    tol_sim *sim = d2_calloc(1, sizeof *sim, "tolerance simulator", e);
    if (!sim) return NULL;
    const d2_geom *g = &s->m.g;
    size_t nn = (size_t)g->n * g->n;
    sim->s = s;
    sim->n = g->n;
    sim->L = g->layers;
    sim->threads = threads;
    if (!(sim->net = net_new(g, threads, e))) goto fail;
    net_set_model(sim->net, &s->m);
    for (int l = 0; l < sim->L; l++) {
        if (!(sim->t0[l] = d2_malloc(nn * sizeof(float complex), "nominal transmission", e)))
            goto fail;
        memcpy(sim->t0[l], net_transmission(sim->net, l), nn * sizeof(float complex));
    }
    for (int k = 0; k <= sim->L; k++) {
        sim->gap[k] = g->gap_mm[k];
        sim->gap_lambda[k] = g->wavelength_mm;
    }
    sim->sa = d2_malloc(nn * sizeof(float complex), "scratch", e);
    sim->sb = d2_malloc(nn * sizeof(float complex), "scratch", e);
    sim->dh = d2_malloc(nn * sizeof(float), "height error", e);
    sim->in = d2_calloc((size_t)threads, sizeof *sim->in, "input planes", e);
    sim->inten = d2_calloc((size_t)threads, sizeof *sim->inten, "intensities", e);
    if (!sim->sa || !sim->sb || !sim->dh || !sim->in || !sim->inten) goto fail;
    for (int t = 0; t < threads; t++)
        if (!(sim->in[t] = d2_malloc(nn * sizeof(float), "input plane", e)) ||
            !(sim->inten[t] = d2_malloc(nn * sizeof(float), "intensity", e)))
            goto fail;
    return sim;
fail:
    tol_sim_free(sim);
    return NULL;
}

/* Adds a white height error field of limit A (uniform +-A, or normal
 * sigma A/2 truncated at A) to dh; returns its RMS. */
static double field_white(float *dh, size_t nn, double A, int dist, uint64_t seed)
{
    d2_rng r;
    d2_rng_seed(&r, seed);
    double ss = 0;
    for (size_t i = 0; i < nn; i++) {
        double v = A * unit_draw(&r, dist);
        dh[i] += (float)v;
        ss += v * v;
    }
    return sqrt(ss / (double)nn);
}

/* Adds a correlated height error field: Gaussian white noise on a grid
 * extended by 3 filter sigmas each side, filtered by a separable Gaussian of
 * sigma = corr / 2 (autocorrelation exp(-r^2 / corr^2)), normalised to unit
 * variance, mapped to the marginal of dist with limit A. Returns its RMS. */
static int field_corr(tol_sim *sim, double A, int dist, double corr_mm, uint64_t seed,
                      double *rms, d2_err *e)
{
    int n = sim->n;
    double sig = 0.5 * corr_mm / sim->s->m.g.pitch_mm;
    int R = (int)ceil(3 * sig);
    if (R < 1) R = 1;
    int m = n + 2 * R;
    size_t need = (size_t)m * m;
    if (need > sim->fcap) {
        free(sim->fa);
        free(sim->fb);
        sim->fa = d2_malloc(need * sizeof(float), "height error field", e);
        sim->fb = d2_malloc(need * sizeof(float), "height error field", e);
        if (!sim->fa || !sim->fb) {
            sim->fcap = 0;
            return D2_EIO;
        }
        sim->fcap = need;
    }
    double kern[2 * R + 1], s2 = 0;
    for (int j = -R; j <= R; j++) {
        kern[j + R] = exp(-0.5 * j * j / (sig * sig));
        s2 += kern[j + R] * kern[j + R];
    }
    d2_rng r;
    d2_rng_seed(&r, seed);
    for (size_t i = 0; i < need; i++) sim->fa[i] = (float)d2_rng_normal(&r);
    /* Rows: m rows x n columns into fb. */
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            const float *row = sim->fa + (size_t)i * m + j;
            for (int k = 0; k <= 2 * R; k++) acc += kern[k] * row[k];
            sim->fb[(size_t)i * n + j] = (float)acc;
        }
    /* Columns: n x n; the variance of the 2-D filtered noise is s2^2. */
    double ss = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int k = 0; k <= 2 * R; k++) acc += kern[k] * sim->fb[(size_t)(i + k) * n + j];
            double gv = acc / s2, v;
            if (dist == TOL_NORMAL)
                v = 0.5 * A * fmax(-2.0, fmin(2.0, gv));
            else
                v = A * (2 * (0.5 * erfc(-gv / M_SQRT2)) - 1);
            sim->dh[(size_t)i * n + j] += (float)v;
            ss += v * v;
        }
    *rms = sqrt(ss / ((double)n * n));
    return 0;
}

static double quantize(double T, double base, double step, int levels, double period)
{
    if (!(step > 0)) return T;
    if (!levels) return step * nearbyint(T / step);
    /* K levels per 2 pi of the relief above the base. */
    double ph = fmod(2 * M_PI * (T - base) / period, 2 * M_PI);
    if (ph < 0) ph += 2 * M_PI;
    double q = step * nearbyint(ph / step);
    if (q >= 2 * M_PI - 1e-9) q -= 2 * M_PI;
    return base + q * period / (2 * M_PI);
}

/* Sets layer l of the network for realisation r. */
static int apply_layer(tol_sim *sim, const tol_mag *mag, real *r, int l, uint64_t seed,
                       uint64_t stream, d2_err *e)
{
    const tol_stack *s = sim->s;
    const d2_geom *g = &s->m.g;
    size_t nn = (size_t)sim->n * sim->n;
    int phase = r->qstep > 0 || r->hw[l] > 0 || r->hc[l] > 0 || r->dn != 0 ||
                (s->absorbing && r->dk != 0) || r->lambda != g->wavelength_mm;
    const layer_pose *p = &r->pose[l];
    int geo = p->dx_mm != 0 || p->dy_mm != 0 || p->rot_deg != 0 || r->scale[l] != 1;
    if (!phase && !geo) {
        if (sim->dirty[l]) net_set_transmission(sim->net, l, sim->t0[l]);
        sim->dirty[l] = 0;
        return 0;
    }
    const float complex *src = sim->t0[l];
    if (phase) {
        int anyh = r->hw[l] > 0 || r->hc[l] > 0;
        if (anyh) memset(sim->dh, 0, nn * sizeof(float));
        if (r->hw[l] > 0)
            r->hw_rms[l] = field_white(sim->dh, nn, r->hw[l], mag->dist[TOL_HEIGHT],
                                        seed_for(seed, stream, TOL_HEIGHT, (uint64_t)l, 0));
        if (r->hc[l] > 0) {
            double before = 0;
            int rc = field_corr(sim, r->hc[l], mag->dist[TOL_HEIGHT_CORR], mag->correlation_mm,
                                seed_for(seed, stream, TOL_HEIGHT_CORR, (uint64_t)l, 0), &before, e);
            if (rc) return rc;
            r->hc_rms[l] = before;
        }
        double lam0 = g->wavelength_mm, lam = r->lambda, n0 = s->index, n1 = s->index + r->dn;
        double k0 = s->kappa, k1 = fmax(0.0, s->kappa + r->dk);
        double period = lam0 / (n0 - 1);
        const float *T = s->height_mm[l];
        for (size_t i = 0; i < nn; i++) {
            double t = T[i];
            double tq = quantize(t, s->base_mm, r->qstep, mag->quant_levels, period);
            if (anyh) tq += sim->dh[i];
            if (tq < 0) tq = 0;
            double dphi = 2 * M_PI * ((n1 - 1) * tq / lam - (n0 - 1) * t / lam0);
            double la = s->absorbing ? -2 * M_PI * (k1 * tq / lam - k0 * t / lam0) : 0;
            double a = exp(la);
            float complex f = (float)(a * cos(dphi)) + I * (float)(a * sin(dphi));
            sim->sa[i] = src[i] * f;
        }
        src = sim->sa;
    }
    if (geo) {
        perturb_transform_scaled(src, sim->n, g->pitch_mm, p, r->scale[l], sim->sb);
        src = sim->sb;
    }
    net_set_transmission(sim->net, l, src);
    sim->dirty[l] = 1;
    return 0;
}

typedef struct gap_job {
    tol_sim *sim;
    const double *gaps;
    double lambda;
    int todo[D2_MAX_LAYERS + 1], ntodo;
} gap_job;

static void gap_one(void *arg, int i, int tid)
{
    (void)tid;
    gap_job *j = arg;
    int k = j->todo[i];
    net_set_gap(j->sim->net, k, j->gaps[k], j->lambda);
}

/* Detector energies of a shifted detector plane: each detector's footprint,
 * moved by (dx, dy), collects the output intensity of every pixel in
 * proportion to the area it covers (pixels as uniform squares). */
typedef struct det_weights {
    int c0[D2_MAX_DET], c1[D2_MAX_DET], r0[D2_MAX_DET], r1[D2_MAX_DET];
    double *wx[D2_MAX_DET], *wy[D2_MAX_DET];
} det_weights;

static void overlap(double lo, double hi, int n, int *a, int *b, double *w)
{
    *a = (int)floor(lo + 0.5);
    *b = (int)ceil(hi - 0.5) + 1;
    if (*a < 0) *a = 0;
    if (*b > n) *b = n;
    for (int j = *a; j < *b; j++) w[j - *a] = fmax(0.0, fmin(j + 0.5, hi) - fmax(j - 0.5, lo));
}

typedef struct eval_job {
    tol_sim *sim;
    const tol_mag *mag;
    const d2_dataset *ds;
    int mask;                          /* fixed mask PNG */
    int stencil;                       /* per-image stencils */
    const det_weights *dw;             /* NULL: the network's own detectors */
    float *det;
} eval_job;

static void eval_img(void *arg, int i, int tid)
{
    eval_job *j = arg;
    tol_sim *sim = j->sim;
    const d2_geom *g = &sim->s->m.g;
    int n = sim->n, nd = g->ndet;
    size_t px = (size_t)j->ds->rows * j->ds->cols, nn = (size_t)n * n;
    float *in = sim->in[tid], *det = j->det + (size_t)i * nd;
    double keep = 1;
    if (j->stencil) {
        if (sim->st_bad[i]) {
            memset(det, 0, sizeof(float) * nd);
            return;
        }
        const unsigned char *bits = sim->st_bits + ((nn + 7) / 8) * (size_t)i;
        for (size_t k = 0; k < nn; k++) in[k] = (bits[k >> 3] >> (k & 7)) & 1 ? 1.0f : 0.0f;
    } else {
        input_from_u8(g, j->ds->images + px * i, j->ds->rows, j->ds->cols, in);
    }
    if (j->mask) {
        /* net_infer normalises by the input energy; keep the energies
         * relative to the unmasked input so blocked light counts. */
        double e0 = 0, e1 = 0;
        for (size_t k = 0; k < nn; k++) {
            e0 += (double)in[k] * in[k];
            in[k] *= j->mag->mask[k];
            e1 += (double)in[k] * in[k];
        }
        keep = e0 > 0 ? e1 / e0 : 0;
    }
    net_infer(sim->net, in, det, j->dw ? sim->inten[tid] : NULL, tid);
    if (j->dw) {
        const float *I0 = sim->inten[tid];
        for (int k = 0; k < nd; k++) {
            double sum = 0;
            for (int r = j->dw->r0[k]; r < j->dw->r1[k]; r++) {
                double row = 0;
                const float *ir = I0 + (size_t)r * n;
                for (int c = j->dw->c0[k]; c < j->dw->c1[k]; c++)
                    row += j->dw->wx[k][c - j->dw->c0[k]] * ir[c];
                sum += j->dw->wy[k][r - j->dw->r0[k]] * row;
            }
            det[k] = (float)sum;
        }
    }
    if (keep != 1)
        for (int k = 0; k < nd; k++) det[k] = (float)(det[k] * keep);
}

typedef struct stencil_job {
    tol_sim *sim;
    const tol_mag *mag;
    const d2_dataset *ds;
    unsigned char *open; /* threads x n*n */
} stencil_job;

static void stencil_one(void *arg, int i, int tid)
{
    stencil_job *j = arg;
    tol_sim *sim = j->sim;
    const d2_geom *g = &sim->s->m.g;
    size_t nn = (size_t)sim->n * sim->n, px = (size_t)j->ds->rows * j->ds->cols;
    unsigned char *open = j->open + nn * tid, *bits = sim->st_bits + ((nn + 7) / 8) * (size_t)i;
    int rc = j->mag->stencil_fn(j->mag->stencil_ctx, g, j->ds->images + px * i, j->ds->rows,
                                j->ds->cols, j->mag->stencil_threshold,
                                j->mag->stencil_min_feature_mm, open);
    sim->st_bad[i] = rc != 0;
    memset(bits, 0, (nn + 7) / 8);
    if (!rc)
        for (size_t k = 0; k < nn; k++)
            if (open[k]) bits[k >> 3] |= (unsigned char)(1u << (k & 7));
}

/* The printable stencil of each of the first count test images, kept as
 * bits (n*n / 8 bytes an image), made once per stack. */
static int build_stencils(tol_sim *sim, const tol_mag *mag, const d2_dataset *ds, int count,
                          d2_pool *pool, d2_err *e)
{
    size_t nn = (size_t)sim->n * sim->n, per = (nn + 7) / 8;
    free(sim->st_bits);
    free(sim->st_bad);
    sim->st_n = sim->st_unprintable = 0;
    sim->st_bits = d2_malloc(per * (size_t)count, "input stencils", e);
    sim->st_bad = d2_calloc((size_t)count, 1, "input stencils", e);
    stencil_job j = {sim, mag, ds, d2_malloc(nn * (size_t)d2_pool_threads(pool), "stencil", e)};
    if (!sim->st_bits || !sim->st_bad || !j.open) {
        free(j.open);
        return D2_EIO;
    }
    d2_pool_run(pool, stencil_one, &j, count);
    free(j.open);
    for (int i = 0; i < count; i++) sim->st_unprintable += sim->st_bad[i];
    sim->st_n = count;
    return 0;
}

int tol_sim_unprintable(const tol_sim *sim) { return sim->st_unprintable; }

int tol_sim_eval(tol_sim *sim, const tol_mag *mag, double scale, const tol_draw *d,
                 uint64_t seed, const d2_dataset *ds, int count, d2_pool *pool, double det_ref,
                 double *accuracy, float *det_out, double *vec, d2_err *e)
{
    const tol_stack *s = sim->s;
    const d2_geom *g = &s->m.g;
    int rc = 0, nd = g->ndet;
    uint64_t stream = d ? d->stream : 0;
    real r;
    realise(mag, scale, d, g, &r);
    if (count > ds->count || count <= 0) count = ds->count;

    for (int l = 0; l < sim->L; l++)
        if ((rc = apply_layer(sim, mag, &r, l, seed, stream, e))) return rc;
    double gaps[D2_MAX_LAYERS + 1];
    perturb_gaps(g, r.pose, gaps);
    gap_job gj = {sim, gaps, r.lambda, {0}, 0};
    for (int k = 0; k <= sim->L; k++)
        if (gaps[k] != sim->gap[k] || r.lambda != sim->gap_lambda[k]) {
            gj.todo[gj.ntodo++] = k;
            sim->gap[k] = gaps[k];
            sim->gap_lambda[k] = r.lambda;
        }
    if (gj.ntodo) d2_pool_run(pool, gap_one, &gj, gj.ntodo);

    if (count > sim->det_cap) {
        free(sim->det);
        if (!(sim->det = d2_malloc(sizeof(float) * (size_t)count * nd, "detector energies", e))) {
            sim->det_cap = 0;
            return D2_EIO;
        }
        sim->det_cap = count;
    }
    det_weights dw;
    double *wbuf = NULL;
    int shifted = r.ddx != 0 || r.ddy != 0;
    if (shifted) {
        if (!(wbuf = d2_malloc(sizeof(double) * 2 * nd * (g->n + 2), "detector weights", e)))
            return D2_EIO;
        /* The footprint eval uses (the pixels whose centres lie in the
         * square), moved by the shift: continuous with the nominal. */
        double sx = r.ddx / g->pitch_mm, sy = r.ddy / g->pitch_mm;
        for (int k = 0; k < nd; k++) {
            int r0, r1, c0, c1;
            geom_det_rect(g, k, &r0, &r1, &c0, &c1);
            dw.wx[k] = wbuf + (size_t)(2 * k) * (g->n + 2);
            dw.wy[k] = wbuf + (size_t)(2 * k + 1) * (g->n + 2);
            overlap(c0 - 0.5 + sx, c1 - 0.5 + sx, g->n, &dw.c0[k], &dw.c1[k], dw.wx[k]);
            overlap(r0 - 0.5 + sy, r1 - 0.5 + sy, g->n, &dw.r0[k], &dw.r1[k], dw.wy[k]);
        }
    }
    int stencil = r.mask && mag->stencil, fixed = r.mask && !mag->stencil;
    if (stencil && sim->st_n < count && (rc = build_stencils(sim, mag, ds, count, pool, e))) {
        free(wbuf);
        return rc;
    }
    eval_job j = {sim, mag, ds, fixed, stencil, shifted ? &dw : NULL, sim->det};
    d2_pool_run(pool, eval_img, &j, count);
    free(wbuf);

    int correct = 0;
    double sigma = r.noise * det_ref;
    for (int i = 0; i < count; i++) {
        if (stencil && sim->st_bad[i]) continue; /* no printable stencil: misread */
        float *dt = sim->det + (size_t)i * nd;
        if (sigma > 0) {
            d2_rng rn;
            d2_rng_seed(&rn, seed_for(seed, stream, TOL_DET_NOISE, (uint64_t)i, 0));
            for (int k = 0; k < nd; k++) dt[k] += (float)(sigma * d2_rng_normal(&rn));
        }
        int best = 0;
        for (int k = 1; k < nd; k++)
            if (dt[k] > dt[best]) best = k;
        correct += best == ds->labels[i];
    }
    if (det_out) memcpy(det_out, sim->det, sizeof(float) * (size_t)count * nd);
    *accuracy = (double)correct / count;
    if (vec) vec_fill(mag, sim->L, &r, NULL, vec, 1 << 20);
    return 0;
}

/* ---- statistics --------------------------------------------------------- */

/* Continued fraction of the incomplete beta function (modified Lentz). */
static double betacf(double a, double b, double x)
{
    const double tiny = 1e-300;
    double qab = a + b, qap = a + 1, qam = a - 1, c = 1, d = 1 - qab * x / qap;
    if (fabs(d) < tiny) d = tiny;
    d = 1 / d;
    double h = d;
    for (int m = 1; m <= 10000; m++) {
        int m2 = 2 * m;
        double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15) break;
    }
    return h;
}

double tol_betainc(double a, double b, double x)
{
    if (!(x > 0)) return 0;
    if (!(x < 1)) return 1;
    double lbt = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    /* The continued fraction converges fast for x < (a + 1) / (a + b + 2);
     * use the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) beyond. */
    if (x < (a + 1) / (a + b + 2)) return exp(lbt) * betacf(a, b, x) / a;
    return 1 - exp(lbt) * betacf(b, a, 1 - x) / b;
}

double tol_betainc_inv(double a, double b, double p)
{
    if (!(p > 0)) return 0;
    if (!(p < 1)) return 1;
    /* I_x is increasing in x: bisection to the last representable bit. */
    double lo = 0, hi = 1;
    for (int i = 0; i < 200 && hi - lo > 1e-16; i++) {
        double mid = 0.5 * (lo + hi);
        if (tol_betainc(a, b, mid) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

void tol_clopper_pearson(int k, int n, double conf, double *lo, double *hi)
{
    double alpha = 1 - conf;
    *lo = k <= 0 ? 0 : tol_betainc_inv(k, n - k + 1, alpha / 2);
    *hi = k >= n ? 1 : tol_betainc_inv(k + 1, n - k, 1 - alpha / 2);
}

/* ---- the analyses ------------------------------------------------------- */

#define SENS_STREAM (1ULL << 48)
#define INV_STREAM (1ULL << 49)

typedef struct runner {
    const tol_config *c;
    const d2_dataset *ds;
    d2_pool *pool;
    d2_progress pr;
    long done, total;
    char stage[192];
    tol_result *res;
    tol_sim *sim;
    int count;
} runner;

static int eval(runner *ru, double scale, const tol_draw *d, double *acc, double *vec,
                float *det_out, d2_err *e)
{
    int rc = tol_sim_eval(ru->sim, &ru->res->mag, scale, d, ru->c->seed, ru->ds, ru->count,
                          ru->pool, ru->res->det_mean, acc, det_out, vec, e);
    ru->done += ru->count;
    ru->res->inferences += ru->count;
    if (ru->done > ru->total) ru->total = ru->done;
    d2_progress_update(&ru->pr, ru->done, ru->total, ru->stage);
    return rc;
}

static int cmp_sens(const void *a, const void *b)
{
    const tol_sens_row *x = a, *y = b;
    if (x->change != y->change) return x->change < y->change ? -1 : 1;
    if (x->kind != y->kind) return x->kind - y->kind;
    if (x->layer != y->layer) return x->layer - y->layer;
    return x->comp - y->comp;
}

static int run_sensitivity(runner *ru, d2_err *e)
{
    tol_result *res = ru->res;
    const tol_mag *mag = &res->mag;
    int L = res->s->m.g.layers, nrow = 0, rc;
    int cap = TOL_NKINDS * D2_MAX_LAYERS * 2;
    if (!(res->sens = d2_calloc((size_t)cap, sizeof *res->sens, "sensitivity table", e)))
        return D2_EIO;
    for (int k = 0; k < TOL_NKINDS; k++) {
        int nl = kinfo[k].per_layer ? L : 1;
        for (int l = 0; l < nl; l++) {
            if (!(mag->v[k][l] > 0)) continue;
            for (int c = 0; c < kinfo[k].comps; c++) {
                tol_sens_row *row = &res->sens[nrow++];
                row->kind = k;
                row->layer = kinfo[k].per_layer ? l : -1;
                row->comp = kinfo[k].comps > 1 ? c : -1;
                row->magnitude = mag->v[k][l];
                row->acc_minus = NAN;
                row->applicable = mag->on[k];
                if (!row->applicable) {
                    row->acc_plus = res->nominal;
                    continue;
                }
                tol_draw d;
                memset(&d, 0, sizeof d);
                d.stream = SENS_STREAM;
                d.u[k][l][c] = 1;
                snprintf(ru->stage, sizeof ru->stage, "%s: sensitivity %s", res->s->name,
                         kinfo[k].name);
                if ((rc = eval(ru, 1, &d, &row->acc_plus, NULL, NULL, e))) return rc;
                double worst = row->acc_plus;
                if (kinfo[k].scalar) {
                    d.u[k][l][c] = -1;
                    if ((rc = eval(ru, 1, &d, &row->acc_minus, NULL, NULL, e))) return rc;
                    worst = fmin(worst, row->acc_minus);
                }
                row->change = worst - res->nominal;
            }
        }
    }
    res->nsens = nrow;
    qsort(res->sens, (size_t)nrow, sizeof *res->sens, cmp_sens);
    return 0;
}

/* Largest sensible magnitude of a kind (internal unit) for the inverse
 * search: beyond it the perturbation stops meaning anything physical. */
static double kind_cap(const tol_result *res, int k)
{
    const d2_geom *g = &res->s->m.g;
    const tol_stack *s = res->s;
    double side = g->n * g->pitch_mm, period = g->wavelength_mm / (s->index - 1);
    double gmin = INFINITY;
    for (int j = 0; j <= g->layers; j++) gmin = fmin(gmin, g->gap_mm[j]);
    switch (k) {
    case TOL_LATERAL: return 0.25 * side;
    case TOL_AXIAL: return 0.45 * gmin;
    case TOL_ROTATION: return 45;
    case TOL_PITCH: return 20;
    case TOL_HEIGHT:
    case TOL_HEIGHT_CORR: return 2 * period;
    case TOL_QUANTIZE: return res->mag.quant_levels ? M_PI : period;
    case TOL_INDEX: return 0.9 * (s->index - 1);
    case TOL_KAPPA: return 1;
    case TOL_WAVELENGTH:
        return res->mag.unit[k] == TOL_U_THZ ? 0.45 * C_MM_THZ / g->wavelength_mm
                                             : 0.45 * g->wavelength_mm;
    case TOL_DET_SHIFT: return 0.25 * side;
    case TOL_DET_NOISE: return 10;
    default: return 0;
    }
}

static int inv_point(runner *ru, tol_inverse *iv, const tol_draw *draws, int nd, double f,
                     double *mean, d2_err *e)
{
    for (int i = 0; i < iv->npts; i++)
        if (iv->pts[i].factor == f) {
            *mean = iv->pts[i].mean;
            return 0;
        }
    if (iv->npts >= TOL_MAX_SCAN) {
        *mean = NAN;
        return 0;
    }
    tol_scan_pt pt = {f, 0, INFINITY, -INFINITY};
    for (int k = 0; k < nd; k++) {
        double a;
        int rc = eval(ru, f, &draws[k], &a, NULL, NULL, e);
        if (rc) return rc;
        pt.mean += a / nd;
        pt.min = fmin(pt.min, a);
        pt.max = fmax(pt.max, a);
    }
    int at = iv->npts;
    while (at > 0 && iv->pts[at - 1].factor > f) {
        iv->pts[at] = iv->pts[at - 1];
        at--;
    }
    iv->pts[at] = pt;
    iv->npts++;
    *mean = pt.mean;
    return 0;
}

/* The magnitude factor where the mean accuracy first falls `loss` below
 * nominal: the first scan point past it brackets it with the one before,
 * then bisection, then linear interpolation in the last bracket. */
static int inv_threshold(runner *ru, tol_inverse *iv, const tol_draw *draws, int nd, double loss,
                         double *out, d2_err *e)
{
    double nom = ru->res->nominal, lo = 0, llo = 0, hi = -1, lhi = 0;
    for (int i = 0; i < iv->npts; i++) {
        double l = nom - iv->pts[i].mean;
        if (l >= loss - 1e-12) {
            hi = iv->pts[i].factor;
            lhi = l;
            break;
        }
        lo = iv->pts[i].factor;
        llo = l;
    }
    if (hi < 0) {
        *out = NAN;
        return 0;
    }
    for (int b = 0; b < 4; b++) {
        double mid = 0.5 * (lo + hi), m;
        int rc = inv_point(ru, iv, draws, nd, mid, &m, e);
        if (rc) return rc;
        if (isnan(m)) break;
        if (nom - m >= loss - 1e-12) {
            hi = mid;
            lhi = nom - m;
        } else {
            lo = mid;
            llo = nom - m;
        }
    }
    double t = lhi > llo ? (loss - llo) / (lhi - llo) : 1;
    *out = lo + fmin(1.0, fmax(0.0, t)) * (hi - lo);
    return 0;
}

static int run_inverse(runner *ru, d2_err *e)
{
    tol_result *res = ru->res;
    const tol_mag *mag = &res->mag;
    int L = res->s->m.g.layers, rc;
    static const double scan[] = {0.25, 0.5, 1, 2, 4};
    tol_draw *draws = d2_malloc(sizeof(tol_draw) * TOL_MAX_DRAWS, "draws", e);
    if (!draws) return D2_EIO;
    for (int k = 0; k < TOL_NKINDS; k++) {
        if (!mag->on[k] || k == TOL_MASK) continue;
        tol_inverse *iv = &res->inv[res->ninv++];
        memset(iv, 0, sizeof *iv);
        iv->kind = k;
        int nl = kinfo[k].per_layer ? L : 1;
        for (int l = 0; l < nl; l++) iv->ref = fmax(iv->ref, mag->v[k][l]);
        /* Fixed settings give the same result for every draw. */
        int nd = kinfo[k].scalar || k == TOL_HEIGHT || k == TOL_HEIGHT_CORR || k == TOL_DET_NOISE
                     ? ru->c->inverse_draws
                     : 1;
        for (int i = 0; i < nd; i++)
            tol_draw_make(&draws[i], mag, L, ru->c->seed, INV_STREAM + (uint64_t)i, k);
        snprintf(ru->stage, sizeof ru->stage, "%s: inverse %s", res->s->name, kinfo[k].name);
        double cap = kind_cap(res, k), m = 0;
        double fmax_ = cap / iv->ref;
        for (size_t i = 0; i < sizeof scan / sizeof *scan && scan[i] <= fmax_; i++)
            if ((rc = inv_point(ru, iv, draws, nd, scan[i], &m, e))) goto done;
        /* Extend until 5 points are lost or the perturbation stops being
         * physical. */
        double f = 8;
        while (iv->npts > 0 && res->nominal - iv->pts[iv->npts - 1].mean < 0.05 && f <= fmax_ &&
               f <= 64) {
            if ((rc = inv_point(ru, iv, draws, nd, f, &m, e))) goto done;
            f *= 2;
        }
        iv->max_tested = iv->npts ? iv->pts[iv->npts - 1].factor * iv->ref : 0;
        double f1, f5;
        if ((rc = inv_threshold(ru, iv, draws, nd, 0.01, &f1, e)) ||
            (rc = inv_threshold(ru, iv, draws, nd, 0.05, &f5, e)))
            goto done;
        iv->at1 = f1 * iv->ref;
        iv->at5 = f5 * iv->ref;
        iv->acc_at_ref = NAN;
        for (int i = 0; i < iv->npts; i++)
            if (iv->pts[i].factor == 1) iv->acc_at_ref = iv->pts[i].mean;
    }
    rc = 0;
done:
    free(draws);
    return rc;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_mc(runner *ru, tol_mc *mc, double scale, d2_err *e)
{
    tol_result *res = ru->res;
    int T = ru->c->trials, L = res->s->m.g.layers, rc;
    mc->scale = scale;
    mc->trials = T;
    mc->nvec = res->nvec;
    if (T == 0) return 0;
    mc->acc = d2_malloc(sizeof(double) * T, "trial accuracies", e);
    mc->vec = d2_calloc((size_t)T * (mc->nvec ? mc->nvec : 1), sizeof(double), "trial vectors", e);
    if (!mc->acc || !mc->vec) return D2_EIO;
    double sum = 0;
    int pass = 0;
    for (int t = 0; t < T; t++) {
        tol_draw d;
        tol_draw_make(&d, &res->mag, L, ru->c->seed, (uint64_t)t + 1, -1);
        if (scale == 0) {
            mc->acc[t] = res->nominal;
        } else {
            snprintf(ru->stage, sizeof ru->stage, "%s: Monte Carlo x%g trial %d/%d mean %.2f%%",
                     res->s->name, scale, t + 1, T, t ? 100 * sum / t : 100 * res->nominal);
            if ((rc = eval(ru, scale, &d, &mc->acc[t], mc->vec + (size_t)t * mc->nvec, NULL, e)))
                return rc;
        }
        sum += mc->acc[t];
        pass += mc->acc[t] >= res->spec - 1e-12;
    }
    /* Sums relative to the first trial, so identical trials give exactly
     * their value and a zero spread. */
    double a0 = mc->acc[0], sd = 0, ss = 0;
    for (int t = 0; t < T; t++) sd += mc->acc[t] - a0;
    mc->mean = a0 + sd / T;
    for (int t = 0; t < T; t++) ss += (mc->acc[t] - mc->mean) * (mc->acc[t] - mc->mean);
    mc->std = T > 1 ? sqrt(ss / (T - 1)) : 0;
    if (mc->std < 1e-12) mc->std = 0;
    double *srt = d2_malloc(sizeof(double) * T, "sorted accuracies", e);
    if (!srt) return D2_EIO;
    memcpy(srt, mc->acc, sizeof(double) * T);
    qsort(srt, (size_t)T, sizeof *srt, cmp_dbl);
    mc->min = srt[0];
    mc->max = srt[T - 1];
    /* q of the trials reach at least srt[floor((1 - q) T)]. */
    int i90 = (int)floor(0.1 * T + 1e-9), i50 = (int)floor(0.5 * T + 1e-9),
        i10 = (int)floor(0.9 * T + 1e-9);
    mc->p90 = srt[i90 < T ? i90 : T - 1];
    mc->p50 = srt[i50 < T ? i50 : T - 1];
    mc->p10 = srt[i10 < T ? i10 : T - 1];
    free(srt);
    mc->pass = pass;
    mc->yield = (double)pass / T;
    tol_clopper_pearson(pass, T, ru->c->confidence, &mc->yield_lo, &mc->yield_hi);
    return 0;
}

void tol_report_free(tol_report *rep)
{
    if (!rep) return;
    for (int i = 0; i < rep->nmodels; i++) {
        tol_result *r = &rep->res[i];
        tol_mag_free(&r->mag);
        free(r->sens);
        free(r->vec_name);
        for (int s = 0; s < r->nmc; s++) {
            free(r->mc[s].acc);
            free(r->mc[s].vec);
        }
    }
    memset(rep, 0, sizeof *rep);
}

int tol_run(const tol_config *c, const tol_stack *stacks, int n, const d2_dataset *ds,
            d2_pool *pool, FILE *progress, tol_report *rep, d2_err *e)
{
    memset(rep, 0, sizeof *rep);
    rep->cfg = *c;
    rep->threads = d2_pool_threads(pool);
    if (n < 1 || n > TOL_MAX_MODELS)
        return d2_fail(e, D2_EUSAGE, "tolerance: %d models; give 1 to %d", n, TOL_MAX_MODELS);
    double t0 = d2_now();
    runner ru;
    memset(&ru, 0, sizeof ru);
    ru.c = c;
    ru.ds = ds;
    ru.pool = pool;
    ru.count = c->limit > 0 && c->limit < ds->count ? c->limit : ds->count;
    for (int i = 0; i < n; i++)
        ru.total += (long)tol_plan_inferences(c, stacks[i].m.g.layers, ru.count);
    d2_progress_start(&ru.pr, progress, "tolerance");
    int rc = 0;
    for (int i = 0; i < n; i++) {
        tol_result *res = &rep->res[i];
        rep->nmodels = i + 1;
        res->s = &stacks[i];
        res->images = ru.count;
        ru.res = res;
        double m0 = d2_now();
        if ((rc = tol_bind(c, &stacks[i], &res->mag, e))) goto done;
        int cap = 16 + 8 * stacks[i].m.g.layers;
        if (!(res->vec_name = d2_calloc((size_t)cap, sizeof *res->vec_name, "vector names", e))) {
            rc = D2_EIO;
            goto done;
        }
        res->nvec = tol_vector_names(&res->mag, stacks[i].m.g.layers, res->vec_name, cap);
        if (!(ru.sim = tol_sim_new(&stacks[i], rep->threads, e))) {
            rc = e->code ? e->code : D2_EIO;
            goto done;
        }
        float *det = d2_malloc(sizeof(float) * (size_t)ru.count * stacks[i].m.g.ndet,
                               "detector energies", e);
        if (!det) {
            rc = D2_EIO;
            goto done;
        }
        snprintf(ru.stage, sizeof ru.stage, "%s: nominal", stacks[i].name);
        rc = eval(&ru, 0, NULL, &res->nominal, NULL, det, e);
        double sum = 0;
        size_t nv = (size_t)ru.count * stacks[i].m.g.ndet;
        for (size_t k = 0; k < nv; k++) sum += det[k];
        free(det);
        if (rc) goto done;
        res->det_mean = sum / (double)nv;
        res->spec = c->spec >= 0 ? c->spec : res->nominal - 0.01;
        res->spec_from_nominal = c->spec < 0;
        if (c->sensitivity && (rc = run_sensitivity(&ru, e))) goto done;
        if (c->inverse && (rc = run_inverse(&ru, e))) goto done;
        for (int s = 0; s < c->nscales; s++) {
            res->nmc = s + 1;
            if ((rc = run_mc(&ru, &res->mc[s], c->scales[s], e))) goto done;
        }
        res->unprintable = tol_sim_unprintable(ru.sim);
        res->seconds = d2_now() - m0;
        tol_sim_free(ru.sim);
        ru.sim = NULL;
        rep->inferences += res->inferences;
    }
    char extra[64];
    snprintf(extra, sizeof extra, "(%ld inferences)", rep->inferences);
    d2_progress_end(&ru.pr, extra);
done:
    tol_sim_free(ru.sim);
    snprintf(rep->dataset, sizeof rep->dataset, "%s", stacks[0].m.t.dataset);
    rep->seconds = d2_now() - t0;
    return rc;
}
