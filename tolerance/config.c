/* The tolerance simulator's settings: the kinds of perturbation and their
 * units, the config (tolerance.json or a run config's section) and the run-size
 * limits. */
#include "tolerance/tol_int.h"

#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "core/npy.h"
#include "export/export.h"
#include "optics/optics.h"

/* ---- kinds and units ---------------------------------------------------- */

const kind_info tol_kinfo[TOL_NKINDS] = {
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
    return kind >= 0 && kind < TOL_NKINDS ? tol_kinfo[kind].name : "?";
}

int tol_kind_per_layer(int kind) { return tol_kinfo[kind].per_layer; }
int tol_kind_comps(int kind) { return tol_kinfo[kind].comps; }
int tol_kind_signed(int kind) { return tol_kinfo[kind].scalar; }

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
    case TOL_U_SOURCE: return "of the source power";
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
    {"detector_noise_of_source", TOL_DET_NOISE, TOL_U_SOURCE, 1},
};
#define NMKEYS (int)(sizeof mkeys / sizeof mkeys[0])

static const char *const k_top[] = {
    "seed", "trials", "limit", "spec_accuracy_percent", "confidence_percent", "distribution",
    "distributions", "sweep_scales", "sensitivity", "inverse", "inverse_draws", "quantize",
    "correlation_length_mm", "input_mask_png", "input_mask", "mask_threshold",
    "mask_min_feature_mm", "notes", "optics",
    "lateral_mm", "lateral_px", "axial_mm", "axial_wavelengths", "rotation_deg",
    "pitch_error_percent", "height_error_mm", "height_error_wavelengths",
    "height_error_correlated_mm", "height_error_correlated_wavelengths", "quantize_step_mm",
    "quantize_levels", "index_error", "kappa_error", "wavelength_error_mm", "frequency_error_thz",
    "detector_shift_mm", "detector_shift_px", "detector_noise_relative",
    "detector_noise_of_source", NULL};
static const char *const dists[] = {"uniform", "normal", NULL};
static const char *const optics_names[] = {"thin", "thick", NULL};

void tol_config_default(tol_config *c)
{
    memset(c, 0, sizeof *c);
    c->seed = 1;
    c->trials = 200;
    c->spec = -1;
    c->confidence = 0.95;
    c->sensitivity = c->inverse = 1;
    c->inverse_draws = 4;
    c->stencil_threshold = 0.5;
    c->nscales = 1;
    c->scales[0] = 1.0;
    c->optics = -1;
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

/* tol_config_read's parts, each from the config object root. */
static int read_settings(const char *path, const cJSON *root, tol_config *c, d2_err *e)
{
    cfg_ctx top = {path, ""};
    int rc;
    long iv;
    int iv2;
    double v;
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
    /* true / false, or "layers" / "kinds" (each kind on every layer at once). */
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(root, "sensitivity");
    if (cJSON_IsString(sv)) {
        static const char *const modes[] = {"off", "layers", "kinds", NULL};
        if ((rc = cfg_enum(&top, root, "sensitivity", 0, c->sensitivity, modes,
                           &c->sensitivity, e)))
            return rc;
    } else if ((rc = cfg_bool(&top, root, "sensitivity", 0, c->sensitivity != TOL_SENS_OFF, &iv2,
                              e))) {
        return rc;
    } else if (sv) {
        c->sensitivity = iv2 ? TOL_SENS_LAYERS : TOL_SENS_OFF;
    }
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
    if ((rc = cfg_enum(&top, root, "optics", 0, c->optics, optics_names, &c->optics, e))) return rc;
    return 0;
}

/* Magnitudes: a number, or one number per layer for per-layer kinds. */
static int read_magnitudes(const char *path, const cJSON *root, tol_config *c, d2_err *e)
{
    cfg_ctx top = {path, ""};
    int rc;
    const char *seen[TOL_NKINDS] = {0};
    for (int i = 0; i < NMKEYS; i++) {
        const mkey *k = &mkeys[i];
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, k->key);
        if (!it) continue;
        if (seen[k->kind])
            return d2_fail(e, D2_EINPUT,
                           "%s: keys \"%s\" and \"%s\" both set the %s perturbation: give one",
                           path, seen[k->kind], k->key, tol_kinfo[k->kind].name);
        seen[k->kind] = k->key;
        double vals[D2_MAX_LAYERS];
        int nv = 1;
        if (cJSON_IsArray(it)) {
            if (!tol_kinfo[k->kind].per_layer)
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
    return 0;
}

static int read_distributions(const char *path, const cJSON *root, int dist, tol_config *c,
                              d2_err *e)
{
    cfg_ctx top = {path, ""};
    int rc;
    const cJSON *ds;
    if ((rc = cfg_object(&top, root, "distributions", &ds, e))) return rc;
    if (ds) {
        const char *allowed[TOL_NKINDS + 1];
        int na = 0;
        for (int k = 0; k < TOL_NKINDS; k++)
            if (k != TOL_QUANTIZE && k != TOL_MASK && k != TOL_DET_NOISE)
                allowed[na++] = tol_kinfo[k].name;
        allowed[na] = NULL;
        cfg_ctx cd = {path, "distributions"};
        if ((rc = cfg_check_keys(&cd, ds, allowed, e))) return rc;
        for (int k = 0; k < na; k++) {
            int d = dist, kind = 0;
            for (int j = 0; j < TOL_NKINDS; j++)
                if (!strcmp(tol_kinfo[j].name, allowed[k])) kind = j;
            if ((rc = cfg_enum(&cd, ds, allowed[k], 0, dist, dists, &d, e))) return rc;
            c->item[kind].dist = d;
        }
    }
    return 0;
}

static int read_input_mask(const char *path, const cJSON *root, tol_config *c, d2_err *e)
{
    cfg_ctx top = {path, ""};
    int rc;
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

int tol_config_read(const char *path, const cJSON *root, tol_config *c, d2_err *e)
{
    cfg_ctx top = {path, ""};
    int rc;
    if (!cJSON_IsObject(root))
        return d2_fail(e, D2_EINPUT, "%s: expected a JSON object of tolerance settings",
                       path);
    if ((rc = cfg_check_keys(&top, root, k_top, e)) || (rc = read_settings(path, root, c, e)))
        return rc;
    int dist = TOL_UNIFORM;
    if ((rc = cfg_enum(&top, root, "distribution", 0, TOL_UNIFORM, dists, &dist, e))) return rc;
    for (int k = 0; k < TOL_NKINDS; k++) c->item[k].dist = dist;
    if ((rc = read_magnitudes(path, root, c, e)) ||
        (rc = read_distributions(path, root, dist, c, e)))
        return rc;
    return read_input_mask(path, root, c, e);
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
        if (c->sensitivity == TOL_SENS_KINDS)
            ops += tol_kinfo[k].scalar ? 2 : 1;
        else
            ops += (tol_kinfo[k].per_layer ? layers : 1) * tol_kinfo[k].comps * (tol_kinfo[k].scalar ? 2 : 1);
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

