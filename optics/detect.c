/* Detection schemes: how the detector energies become class scores, the
 * prediction, the margin, the training loss (with its optional efficiency
 * term) and the "detector" section of configs and model.json. */
#include "optics/optics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

int geom_classes(const d2_geom *g)
{
    return g->scheme == D2_DETECT_DIFF ? g->ndet / 2 : g->ndet;
}

const char *detect_scheme_name(const d2_geom *g)
{
    return g->scheme == D2_DETECT_DIFF ? "differential" : "single";
}

double det_total(const d2_geom *g, const float *det)
{
    double S = 0;
    for (int k = 0; k < g->ndet; k++) S += det[k];
    return S;
}

void det_scores(const d2_geom *g, const float *det, double *score)
{
    int nc = geom_classes(g);
    if (g->scheme == D2_DETECT_DIFF) {
        for (int c = 0; c < nc; c++) {
            double p = det[c], m = det[c + nc];
            score[c] = p + m > 0 ? (p - m) / (p + m) : 0.0;
        }
        return;
    }
    double S = det_total(g, det);
    for (int c = 0; c < nc; c++) score[c] = S > 0 ? det[c] / S : 0.0;
}

int det_predict(const d2_geom *g, const float *det)
{
    double s[D2_MAX_CLASS];
    det_scores(g, det, s);
    int best = 0;
    for (int c = 1; c < geom_classes(g); c++)
        if (s[c] > s[best]) best = c;
    return best;
}

double det_margin(const d2_geom *g, const float *det)
{
    double s[D2_MAX_CLASS], a = -INFINITY, b = -INFINITY;
    det_scores(g, det, s);
    for (int c = 0; c < geom_classes(g); c++) {
        if (s[c] > a) {
            b = a;
            a = s[c];
        } else if (s[c] > b) {
            b = s[c];
        }
    }
    return a - b;
}

/* dL/dscore for the class scores s (softmax cross-entropy on s / T, or the
 * squared distance to the one-hot target); returns the loss. */
static double score_loss(const double *s, int nc, int label, d2_loss loss, double temperature,
                         double *dl_ds)
{
    double L = 0;
    if (loss == LOSS_SOFTMAX) {
        double zmax = -INFINITY, p[D2_MAX_CLASS] = {0}, Z = 0;
        for (int k = 0; k < nc; k++) zmax = fmax(zmax, s[k] / temperature);
        for (int k = 0; k < nc; k++) Z += (p[k] = exp(s[k] / temperature - zmax));
        for (int k = 0; k < nc; k++) p[k] /= Z;
        L = -log(fmax(p[label], 1e-300));
        for (int k = 0; k < nc; k++) dl_ds[k] = (p[k] - (k == label)) / temperature;
        return L;
    }
    for (int k = 0; k < nc; k++) {
        double d = s[k] - (k == label);
        L += d * d;
        dl_ds[k] = 2.0 * d;
    }
    return L;
}

double net_loss(const d2_geom *g, const float *det, int label, d2_loss loss, double temperature,
                double eff_weight, double *dl_de)
{
    int nc = geom_classes(g);
    double s[D2_MAX_CLASS], dl_ds[D2_MAX_CLASS];
    det_scores(g, det, s);
    double L = score_loss(s, nc, label, loss, temperature, dl_ds);
    double S = det_total(g, det);
    if (eff_weight > 0) L += eff_weight * (1.0 - S);
    if (!dl_de) return L;
    if (g->scheme == D2_DETECT_DIFF) {
        /* s = (P - M) / (P + M): ds/dP = 2 M / (P + M)^2, ds/dM = -2 P / (P + M)^2 */
        for (int c = 0; c < nc; c++) {
            double p = det[c], m = det[c + nc], q = p + m;
            double q2 = q > 0 ? q * q : 1e-300;
            dl_de[c] = q > 0 ? dl_ds[c] * 2.0 * m / q2 : 0.0;
            dl_de[c + nc] = q > 0 ? -dl_ds[c] * 2.0 * p / q2 : 0.0;
        }
    } else {
        /* s_k = E_k / S: dL/dE_j = (dL/ds_j - sum_k dL/ds_k s_k) / S */
        double dot = 0, Sd = S > 0 ? S : 1e-30;
        for (int k = 0; k < nc; k++) dot += dl_ds[k] * s[k];
        for (int k = 0; k < nc; k++) dl_de[k] = (dl_ds[k] - dot) / Sd;
    }
    /* the efficiency term w (1 - sum E) */
    if (eff_weight > 0)
        for (int k = 0; k < g->ndet; k++) dl_de[k] -= eff_weight;
    return L;
}

/* ---- the "detector" section ---------------------------------------------- */

static const char *const k_det[] = {"scheme", "layout", "size_mm", "row_pitch_mm",
                                    "column_pitch_mm", "pair_offset_mm", "centers_mm", NULL};
static const char *const layouts[] = {"3-4-3", "custom", NULL};
static const char *const schemes[] = {"single", "differential", NULL};

void geom_layout_343(d2_geom *g, double size_mm, double row_mm, double col_mm)
{
    static const int per_row[3] = {3, 4, 3};
    int k = 0;
    g->ndet = 10;
    g->det_size_mm = size_mm;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < per_row[r]; c++, k++) {
            g->det_x_mm[k] = (c - 0.5 * (per_row[r] - 1)) * col_mm;
            g->det_y_mm[k] = (r - 1) * row_mm;
        }
}

void geom_layout_pairs(d2_geom *g, double dx_mm, double dy_mm)
{
    int nc = g->ndet;
    for (int c = 0; c < nc; c++) {
        g->det_x_mm[c + nc] = g->det_x_mm[c] + dx_mm;
        g->det_y_mm[c + nc] = g->det_y_mm[c] + dy_mm;
    }
    g->ndet = 2 * nc;
    g->scheme = D2_DETECT_DIFF;
}

static int read_centers(const char *path, const cJSON *cen, d2_geom *g, d2_err *e)
{
    if (!cJSON_IsArray(cen) || cJSON_GetArraySize(cen) < 2 ||
        cJSON_GetArraySize(cen) > D2_MAX_DET)
        return d2_fail(e, D2_EINPUT,
                       "%s: key \"detector.centers_mm\": must be an array of 2..%d [x, y] "
                       "pairs in mm",
                       path, D2_MAX_DET);
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, cen)
    {
        const cJSON *x = cJSON_GetArrayItem(it, 0), *y = cJSON_GetArrayItem(it, 1);
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsNumber(x) ||
            !cJSON_IsNumber(y) || !isfinite(x->valuedouble) || !isfinite(y->valuedouble))
            return d2_fail(e, D2_EINPUT, "%s: key \"detector.centers_mm\"[%d]: must be [x, y] in mm",
                           path, k);
        g->det_x_mm[k] = x->valuedouble;
        g->det_y_mm[k] = y->valuedouble;
        k++;
    }
    g->ndet = k;
    return 0;
}

int detector_read(const char *path, const cJSON *det, d2_geom *g, d2_err *e)
{
    cfg_ctx cd = {path, "detector"};
    int rc, layout = 0, scheme = 0, np = 0;
    double size = 6.4, rowp = 16, colp = 16, off[2] = {0, 0};
    if ((rc = cfg_check_keys(&cd, det, k_det, e))) return rc;
    if ((rc = cfg_enum(&cd, det, "scheme", 0, 0, schemes, &scheme, e))) return rc;
    if ((rc = cfg_enum(&cd, det, "layout", 0, 0, layouts, &layout, e))) return rc;
    if ((rc = cfg_num(&cd, det, "size_mm", 0, size, 1e-4, 1e5, &size, e))) return rc;
    if ((rc = cfg_num(&cd, det, "row_pitch_mm", 0, rowp, 1e-4, 1e5, &rowp, e))) return rc;
    if ((rc = cfg_num(&cd, det, "column_pitch_mm", 0, colp, 1e-4, 1e5, &colp, e))) return rc;
    if ((rc = cfg_num_array(&cd, det, "pair_offset_mm", 0, 2, -1e5, 1e5, off, &np, e))) return rc;
    if (np == 1)
        return d2_fail(e, D2_EINPUT, "%s: key \"detector.pair_offset_mm\": must be [dx, dy] in mm",
                       path);
    if (np && scheme != D2_DETECT_DIFF)
        return d2_fail(e, D2_EINPUT, "%s: key \"detector.pair_offset_mm\": only for \"scheme\": "
                       "\"differential\"", path);
    const cJSON *cen = det ? cJSON_GetObjectItemCaseSensitive(det, "centers_mm") : NULL;
    if (np && (layout == 1 || cen))
        return d2_fail(e, D2_EINPUT, "%s: keys \"detector.pair_offset_mm\" and "
                       "\"detector.centers_mm\": give one of them (centers_mm lists the + "
                       "detectors, then the - detectors)", path);
    geom_layout_343(g, size, rowp, colp);
    g->scheme = D2_DETECT_SINGLE;
    if (layout == 1 || cen) {
        if ((rc = read_centers(path, cen, g, e))) return rc;
        g->scheme = scheme;
        if (scheme == D2_DETECT_DIFF && g->ndet % 2)
            return d2_fail(e, D2_EINPUT, "%s: key \"detector.centers_mm\": %d detectors; the "
                           "differential scheme needs an even number (the + detectors of every "
                           "class, then the - detectors)", path, g->ndet);
    } else if (scheme == D2_DETECT_DIFF) {
        /* default pairs: + in each 3-4-3 position, - half a row below it */
        if (!np) off[1] = 0.5 * rowp;
        geom_layout_pairs(g, off[0], off[1]);
    }
    return 0;
}

static cJSON *pair_json(double x, double y)
{
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, cJSON_CreateNumber(x));
    cJSON_AddItemToArray(a, cJSON_CreateNumber(y));
    return a;
}

cJSON *detector_to_json(const d2_geom *g)
{
    cJSON *det = cJSON_CreateObject();
    cJSON_AddStringToObject(det, "scheme", detect_scheme_name(g));
    cJSON_AddStringToObject(det, "layout", "custom");
    cJSON_AddNumberToObject(det, "size_mm", g->det_size_mm);
    cJSON *cen = cJSON_AddArrayToObject(det, "centers_mm");
    for (int k = 0; k < g->ndet; k++)
        cJSON_AddItemToArray(cen, pair_json(g->det_x_mm[k], g->det_y_mm[k]));
    return det;
}

void det_name(const d2_geom *g, int k, char *buf, size_t cap)
{
    int nc = geom_classes(g);
    if (g->scheme == D2_DETECT_DIFF)
        snprintf(buf, cap, "%d%c", k % nc, k < nc ? '+' : '-');
    else
        snprintf(buf, cap, "%d", k);
}
