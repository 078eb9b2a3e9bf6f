/* Tolerance reports: report.json, one CSV per table and the plots (PLplot,
 * PNG through its cairo driver). */
#include <errno.h>
#include <math.h>
#include <plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "tolerance/tolerance.h"

/* ---- labels ------------------------------------------------------------- */

static const char *comp_name(int c) { return c == 0 ? "x" : c == 1 ? "y" : ""; }

/* Unit of a kind's magnitude in a result. */
const char *tol_result_unit(const tol_result *r, int k)
{
    if (k == TOL_DET_NOISE) return "relative";
    if (k == TOL_MASK) return "";
    return tol_unit_name(r->mag.unit[k]);
}

/* Axis label of a kind's magnitude. */
static void kind_axis(const tol_result *r, int k, char *buf, size_t cap)
{
    const char *u = tol_result_unit(r, k);
    switch (k) {
    case TOL_LATERAL: snprintf(buf, cap, "lateral shift limit D of every layer, x and y (%s)", u); break;
    case TOL_AXIAL: snprintf(buf, cap, "axial shift limit D of every layer (%s)", u); break;
    case TOL_ROTATION: snprintf(buf, cap, "in-plane rotation limit D of every layer (%s)", u); break;
    case TOL_PITCH: snprintf(buf, cap, "pixel-pitch scale error limit D of every layer (%s)", u); break;
    case TOL_HEIGHT: snprintf(buf, cap, "white height error limit D, every pixel (%s)", u); break;
    case TOL_HEIGHT_CORR:
        snprintf(buf, cap, "correlated height error limit D (%s; correlation length %g mm)", u,
                 r->mag.correlation_mm);
        break;
    case TOL_QUANTIZE:
        snprintf(buf, cap, r->mag.quant_levels ? "phase quantisation step (rad; 2 pi / levels)"
                                               : "height quantisation step (%s)", u);
        break;
    case TOL_INDEX: snprintf(buf, cap, "refractive-index error limit D"); break;
    case TOL_KAPPA: snprintf(buf, cap, "extinction coefficient (kappa) error limit D"); break;
    case TOL_WAVELENGTH:
        snprintf(buf, cap, r->mag.unit[k] == TOL_U_THZ ? "source frequency drift limit D (THz)"
                                                       : "source wavelength drift limit D (mm)");
        break;
    case TOL_DET_SHIFT: snprintf(buf, cap, "detector-plane misregistration limit D, x and y (%s)", u); break;
    case TOL_DET_NOISE:
        snprintf(buf, cap, "detector noise sigma (relative to the mean detector energy)");
        break;
    default: snprintf(buf, cap, "%s", tol_kind_name(k));
    }
}

/* Words for titles. */
static const char *kind_words(const tol_result *r, int k)
{
    static const char *const w[TOL_NKINDS] = {
        [TOL_LATERAL] = "lateral shift", [TOL_AXIAL] = "axial shift",
        [TOL_ROTATION] = "in-plane rotation", [TOL_PITCH] = "pixel-pitch error",
        [TOL_HEIGHT] = "white height error", [TOL_HEIGHT_CORR] = "correlated height error",
        [TOL_QUANTIZE] = "height quantisation", [TOL_INDEX] = "refractive-index error",
        [TOL_KAPPA] = "extinction (kappa) error", [TOL_WAVELENGTH] = "wavelength drift",
        [TOL_DET_SHIFT] = "detector misregistration", [TOL_DET_NOISE] = "detector noise",
        [TOL_MASK] = "input mask"};
    if (k == TOL_QUANTIZE && r->mag.quant_levels) return "phase quantisation";
    return k >= 0 && k < TOL_NKINDS ? w[k] : "?";
}

static const char *dist_name(int d) { return d == TOL_NORMAL ? "normal" : "uniform"; }

/* The MC entry at scale 1 (the configured magnitudes), else the last one. */
static const tol_mc *main_mc(const tol_result *r)
{
    for (int i = 0; i < r->nmc; i++)
        if (r->mc[i].scale == 1 && r->mc[i].trials > 0) return &r->mc[i];
    for (int i = r->nmc - 1; i >= 0; i--)
        if (r->mc[i].trials > 0) return &r->mc[i];
    return NULL;
}

/* ---- JSON --------------------------------------------------------------- */

static cJSON *num(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static void add_num(cJSON *o, const char *k, double v) { cJSON_AddItemToObject(o, k, num(v)); }

static cJSON *mags_json(const tol_result *r)
{
    cJSON *a = cJSON_CreateArray();
    int L = r->s->m.g.layers;
    for (int k = 0; k < TOL_NKINDS; k++) {
        int nl = tol_kind_per_layer(k) ? L : 1, any = 0;
        for (int l = 0; l < nl; l++) any |= r->mag.v[k][l] > 0;
        if (!any) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "perturbation", tol_kind_name(k));
        cJSON_AddStringToObject(o, "unit", tol_result_unit(r, k));
        if (tol_kind_signed(k) || k == TOL_HEIGHT || k == TOL_HEIGHT_CORR)
            cJSON_AddStringToObject(o, "distribution", dist_name(r->mag.dist[k]));
        cJSON_AddBoolToObject(o, "per_layer", tol_kind_per_layer(k));
        cJSON_AddBoolToObject(o, "applicable", r->mag.on[k]);
        cJSON *v = cJSON_AddArrayToObject(o, "values");
        for (int l = 0; l < nl; l++) cJSON_AddItemToArray(v, num(r->mag.v[k][l]));
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

static cJSON *mc_json(const tol_mc *m, double conf)
{
    cJSON *o = cJSON_CreateObject();
    add_num(o, "scale", m->scale);
    cJSON_AddNumberToObject(o, "trials", m->trials);
    if (!m->trials) return o;
    add_num(o, "mean_percent", 100 * m->mean);
    add_num(o, "std_points", 100 * m->std);
    add_num(o, "min_percent", 100 * m->min);
    add_num(o, "max_percent", 100 * m->max);
    add_num(o, "p90_percent", 100 * m->p90);
    add_num(o, "p50_percent", 100 * m->p50);
    add_num(o, "p10_percent", 100 * m->p10);
    cJSON_AddNumberToObject(o, "pass", m->pass);
    add_num(o, "yield_percent", 100 * m->yield);
    cJSON *ci = cJSON_AddArrayToObject(o, "yield_interval_percent");
    cJSON_AddItemToArray(ci, num(100 * m->yield_lo));
    cJSON_AddItemToArray(ci, num(100 * m->yield_hi));
    add_num(o, "confidence_percent", 100 * conf);
    return o;
}

cJSON *tol_report_json(const tol_report *rep)
{
    const tol_config *c = &rep->cfg;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "d2fab-tolerance");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "software", "d2fab " D2FAB_VERSION);
    cJSON_AddStringToObject(root, "dataset", rep->dataset);
    cJSON_AddNumberToObject(root, "test_images", rep->nmodels ? rep->res[0].images : 0);
    cJSON_AddNumberToObject(root, "seed", (double)c->seed);
    cJSON_AddNumberToObject(root, "trials", c->trials);
    cJSON_AddNumberToObject(root, "inverse_draws", c->inverse_draws);
    add_num(root, "confidence_percent", 100 * c->confidence);
    if (c->spec >= 0)
        add_num(root, "spec_accuracy_percent", 100 * c->spec);
    else
        cJSON_AddStringToObject(root, "spec_accuracy_percent", "nominal - 1 point, per model");
    cJSON *sc = cJSON_AddArrayToObject(root, "sweep_scales");
    for (int s = 0; s < c->nscales; s++) cJSON_AddItemToArray(sc, num(c->scales[s]));
    cJSON_AddNumberToObject(root, "threads", rep->threads);
    add_num(root, "seconds", rep->seconds);
    cJSON_AddNumberToObject(root, "inferences", (double)rep->inferences);

    cJSON *cv = cJSON_AddObjectToObject(root, "conventions");
    cJSON_AddStringToObject(cv, "accuracy", "percent of the test images whose largest detector "
                            "energy is the true class");
    cJSON_AddStringToObject(cv, "magnitude", "D is the limit: uniform draws in [-D, D]; normal "
                            "draws N(0, (D/2)^2) truncated at 2 sigma = D");
    cJSON_AddStringToObject(cv, "sensitivity", "each perturbation alone at +D and -D (fields and "
                            "settings: one realisation), per layer; change = worst accuracy - "
                            "nominal, sorted worst first");
    cJSON_AddStringToObject(cv, "inverse", "each perturbation on every layer at once, magnitude "
                            "D x factor; the mean accuracy over the draws at the factors 0.25, "
                            "0.5, 1, 2, 4 (and more until 5 points are lost), then 4 bisection "
                            "steps and linear interpolation to the magnitude that loses 1 and 5 "
                            "points; null: not reached up to max_tested");
    cJSON_AddStringToObject(cv, "montecarlo", "every perturbation drawn together, each trial its "
                            "own draw; at sweep scale s every limit is s x D; pN_percent: N % of "
                            "the trials reach at least this accuracy; yield: trials at or above "
                            "the spec, with its Clopper-Pearson interval");
    cJSON_AddStringToObject(cv, "height_error", "mm of material added to the printed thickness; "
                            "phase 2 pi (n - 1) dh / lambda, and amplitude exp(-2 pi kappa h / "
                            "lambda) for exports and material-coupled models");
    cJSON_AddStringToObject(cv, "correlated_height_error", "Gaussian-filtered white noise, "
                            "autocorrelation exp(-r^2 / l^2) (1/e at the correlation length l)");
    cJSON_AddStringToObject(cv, "wavelength_drift", "gaps propagated at the drifted wavelength "
                            "and the layer phase scaled by lambda0 / lambda (material taken as "
                            "dispersion-free)");
    cJSON_AddStringToObject(cv, "detector_shift", "each detector's footprint (the pixels eval "
                            "counts) moved on the output plane, each pixel counted by the area it "
                            "shares with the moved footprint");
    cJSON_AddStringToObject(cv, "detector_noise", "Gaussian added to every detector energy, "
                            "sigma relative to the nominal mean detector energy");
    cJSON_AddStringToObject(cv, "input_mask", "stencil: every test digit read through its own "
                            "printable stencil (the mask stage: binarised, slits narrower than the "
                            "minimum feature closed, islands bridged), open 1, plate 0; an "
                            "image with no printable stencil counts as misread. PNG: one fixed "
                            "transmission multiplied into every test image");
    cJSON_AddStringToObject(cv, "not_modelled", "layer tilt: a tilted plate needs the "
                            "rotated-plane angular spectrum; neither a phase ramp nor per-pixel "
                            "axial shifts describe it for pixels diffracting up to asin(lambda / "
                            "2 pitch)");

    cJSON *models = cJSON_AddArrayToObject(root, "models");
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        const tol_stack *s = r->s;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(models, o);
        cJSON_AddStringToObject(o, "name", s->name);
        cJSON_AddStringToObject(o, "path", s->path);
        cJSON_AddStringToObject(o, "kind", s->is_export ? "export" : "model");
        cJSON_AddNumberToObject(o, "layers", s->m.g.layers);
        cJSON_AddNumberToObject(o, "neurons", s->m.g.n);
        add_num(o, "pitch_mm", s->m.g.pitch_mm);
        add_num(o, "wavelength_mm", s->m.g.wavelength_mm);
        cJSON *mat = cJSON_AddObjectToObject(o, "material");
        add_num(mat, "index", s->index);
        add_num(mat, "kappa", s->kappa);
        add_num(mat, "base_mm", s->base_mm);
        cJSON_AddBoolToObject(mat, "absorbing", s->absorbing);
        add_num(mat, "z_step_mm", s->z_step_mm);
        cJSON_AddNumberToObject(o, "test_images", r->images);
        add_num(o, "nominal_accuracy_percent", 100 * r->nominal);
        add_num(o, "nominal_detector_energy", r->det_mean);
        add_num(o, "spec_accuracy_percent", 100 * r->spec);
        cJSON_AddItemToObject(o, "magnitudes", mags_json(r));
        if (r->mag.stencil) {
            cJSON *st = cJSON_AddObjectToObject(o, "input_stencils");
            add_num(st, "threshold", r->mag.stencil_threshold);
            add_num(st, "min_feature_mm", r->mag.stencil_min_feature_mm);
            cJSON_AddNumberToObject(st, "unprintable_images", r->unprintable);
        } else if (r->mag.mask) {
            cJSON_AddStringToObject(o, "input_mask_png", rep->cfg.mask_png);
        }

        cJSON *sa = cJSON_AddArrayToObject(o, "sensitivity");
        for (int j = 0; j < r->nsens; j++) {
            const tol_sens_row *w = &r->sens[j];
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "perturbation", tol_kind_name(w->kind));
            if (w->layer >= 0)
                cJSON_AddNumberToObject(x, "layer", w->layer + 1);
            else
                cJSON_AddNullToObject(x, "layer");
            if (w->comp >= 0)
                cJSON_AddStringToObject(x, "component", comp_name(w->comp));
            else
                cJSON_AddNullToObject(x, "component");
            add_num(x, "magnitude", w->magnitude);
            cJSON_AddStringToObject(x, "unit", tol_result_unit(r, w->kind));
            cJSON_AddBoolToObject(x, "applicable", w->applicable);
            add_num(x, "accuracy_plus_percent", 100 * w->acc_plus);
            add_num(x, "accuracy_minus_percent", 100 * w->acc_minus);
            add_num(x, "change_points", 100 * w->change);
            cJSON_AddItemToArray(sa, x);
        }

        cJSON *ia = cJSON_AddArrayToObject(o, "inverse");
        for (int j = 0; j < r->ninv; j++) {
            const tol_inverse *v = &r->inv[j];
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "perturbation", tol_kind_name(v->kind));
            cJSON_AddStringToObject(x, "unit", tol_result_unit(r, v->kind));
            add_num(x, "configured", v->ref);
            add_num(x, "accuracy_at_configured_percent", 100 * v->acc_at_ref);
            add_num(x, "loss_1_point", v->at1);
            add_num(x, "loss_5_points", v->at5);
            if (v->kind == TOL_QUANTIZE && r->mag.quant_levels) {
                add_num(x, "loss_1_point_levels", 2 * M_PI / v->at1);
                add_num(x, "loss_5_points_levels", 2 * M_PI / v->at5);
            }
            add_num(x, "max_tested", v->max_tested);
            cJSON *pa = cJSON_AddArrayToObject(x, "scan");
            for (int p = 0; p < v->npts; p++) {
                cJSON *q = cJSON_CreateObject();
                add_num(q, "factor", v->pts[p].factor);
                add_num(q, "magnitude", v->pts[p].factor * v->ref);
                add_num(q, "mean_percent", 100 * v->pts[p].mean);
                add_num(q, "min_percent", 100 * v->pts[p].min);
                add_num(q, "max_percent", 100 * v->pts[p].max);
                cJSON_AddItemToArray(pa, q);
            }
            cJSON_AddItemToArray(ia, x);
        }

        cJSON *ma = cJSON_AddArrayToObject(o, "montecarlo");
        for (int j = 0; j < r->nmc; j++) cJSON_AddItemToArray(ma, mc_json(&r->mc[j], c->confidence));
        cJSON *vn = cJSON_AddArrayToObject(o, "trial_vector");
        for (int j = 0; j < r->nvec; j++) cJSON_AddItemToArray(vn, cJSON_CreateString(r->vec_name[j]));
        cJSON_AddStringToObject(o, "trials_file", "montecarlo.csv");
        add_num(o, "seconds", r->seconds);
        cJSON_AddNumberToObject(o, "inferences", (double)r->inferences);
    }

    /* The train-D x test-D matrix: models x Monte-Carlo scales. */
    cJSON *cmp = cJSON_AddObjectToObject(root, "comparison");
    cJSON *cs = cJSON_AddArrayToObject(cmp, "scales");
    for (int s = 0; s < c->nscales; s++) cJSON_AddItemToArray(cs, num(c->scales[s]));
    cJSON *rows = cJSON_AddArrayToObject(cmp, "rows");
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "model", r->s->name);
        add_num(x, "nominal_percent", 100 * r->nominal);
        cJSON *mean = cJSON_AddArrayToObject(x, "mean_percent");
        cJSON *sd = cJSON_AddArrayToObject(x, "std_points");
        cJSON *yl = cJSON_AddArrayToObject(x, "yield_percent");
        for (int s = 0; s < r->nmc; s++) {
            int ok = r->mc[s].trials > 0;
            cJSON_AddItemToArray(mean, num(ok ? 100 * r->mc[s].mean : NAN));
            cJSON_AddItemToArray(sd, num(ok ? 100 * r->mc[s].std : NAN));
            cJSON_AddItemToArray(yl, num(ok ? 100 * r->mc[s].yield : NAN));
        }
        cJSON_AddItemToArray(rows, x);
    }
    return root;
}

/* ---- CSV ---------------------------------------------------------------- */

/* A CSV field: quoted when it holds a comma, quote or newline. */
static void csv_str(FILE *fp, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, fp);
        return;
    }
    fputc('"', fp);
    for (; *s; s++) {
        if (*s == '"') fputc('"', fp);
        fputc(*s, fp);
    }
    fputc('"', fp);
}

static void csv_num(FILE *fp, double v)
{
    if (isfinite(v)) fprintf(fp, "%.10g", v);
}

typedef struct csv {
    d2_out *o;
    FILE *fp;
} csv;

static int csv_open(csv *c, const char *dir, const char *name, d2_err *e)
{
    char path[4200];
    int rc = d2_path_join(path, sizeof path, dir, name, e);
    if (rc) return rc;
    if (!(c->o = d2_out_open(path, e))) return e->code ? e->code : D2_EIO;
    c->fp = d2_out_fp(c->o);
    return 0;
}

static int write_sensitivity(const tol_report *rep, const char *dir, d2_err *e)
{
    csv c;
    int rc = csv_open(&c, dir, "sensitivity.csv", e);
    if (rc) return rc;
    fprintf(c.fp, "model,rank,perturbation,layer,component,magnitude,unit,"
                  "accuracy_plus_percent,accuracy_minus_percent,change_points,applicable\n");
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        for (int j = 0; j < r->nsens; j++) {
            const tol_sens_row *w = &r->sens[j];
            csv_str(c.fp, r->s->name);
            fprintf(c.fp, ",%d,%s,", j + 1, tol_kind_name(w->kind));
            if (w->layer >= 0) fprintf(c.fp, "%d", w->layer + 1);
            fprintf(c.fp, ",%s,", comp_name(w->comp));
            csv_num(c.fp, w->magnitude);
            fprintf(c.fp, ",%s,", tol_result_unit(r, w->kind));
            csv_num(c.fp, 100 * w->acc_plus);
            fputc(',', c.fp);
            csv_num(c.fp, 100 * w->acc_minus);
            fputc(',', c.fp);
            csv_num(c.fp, 100 * w->change);
            fprintf(c.fp, ",%s\n", w->applicable ? "yes" : "no");
        }
    }
    return d2_out_commit(c.o, e);
}

static int write_inverse(const tol_report *rep, const char *dir, d2_err *e)
{
    csv c, s;
    int rc = csv_open(&c, dir, "inverse.csv", e);
    if (rc) return rc;
    if ((rc = csv_open(&s, dir, "scan.csv", e))) {
        d2_out_abort(c.o);
        return rc;
    }
    fprintf(c.fp, "model,perturbation,unit,distribution,configured,accuracy_at_configured_percent,"
                  "loss_1_point,loss_5_points,max_tested,draws\n");
    fprintf(s.fp, "model,perturbation,unit,factor,magnitude,mean_percent,min_percent,max_percent\n");
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        for (int j = 0; j < r->ninv; j++) {
            const tol_inverse *v = &r->inv[j];
            int k = v->kind;
            int draws = tol_kind_signed(k) || k == TOL_HEIGHT || k == TOL_HEIGHT_CORR ||
                                k == TOL_DET_NOISE
                            ? rep->cfg.inverse_draws
                            : 1;
            csv_str(c.fp, r->s->name);
            fprintf(c.fp, ",%s,%s,%s,", tol_kind_name(k), tol_result_unit(r, k),
                    tol_kind_signed(k) || k == TOL_HEIGHT || k == TOL_HEIGHT_CORR
                        ? dist_name(r->mag.dist[k])
                        : "");
            csv_num(c.fp, v->ref);
            fputc(',', c.fp);
            csv_num(c.fp, 100 * v->acc_at_ref);
            fputc(',', c.fp);
            csv_num(c.fp, v->at1);
            fputc(',', c.fp);
            csv_num(c.fp, v->at5);
            fputc(',', c.fp);
            csv_num(c.fp, v->max_tested);
            fprintf(c.fp, ",%d\n", draws);
            for (int p = 0; p < v->npts; p++) {
                csv_str(s.fp, r->s->name);
                fprintf(s.fp, ",%s,%s,", tol_kind_name(k), tol_result_unit(r, k));
                csv_num(s.fp, v->pts[p].factor);
                fputc(',', s.fp);
                csv_num(s.fp, v->pts[p].factor * v->ref);
                fputc(',', s.fp);
                csv_num(s.fp, 100 * v->pts[p].mean);
                fputc(',', s.fp);
                csv_num(s.fp, 100 * v->pts[p].min);
                fputc(',', s.fp);
                csv_num(s.fp, 100 * v->pts[p].max);
                fputc('\n', s.fp);
            }
        }
    }
    if ((rc = d2_out_commit(c.o, e))) {
        d2_out_abort(s.o);
        return rc;
    }
    return d2_out_commit(s.o, e);
}

static int write_montecarlo(const tol_report *rep, const char *dir, d2_err *e)
{
    csv c, s, m;
    int rc = csv_open(&c, dir, "montecarlo.csv", e);
    if (rc) return rc;
    if ((rc = csv_open(&s, dir, "montecarlo_summary.csv", e))) {
        d2_out_abort(c.o);
        return rc;
    }
    if ((rc = csv_open(&m, dir, "compare.csv", e))) {
        d2_out_abort(c.o);
        d2_out_abort(s.o);
        return rc;
    }
    /* The union of the models' vector columns, in order of appearance. */
    int ncol = 0, cap = 0;
    for (int i = 0; i < rep->nmodels; i++) cap += rep->res[i].nvec;
    char(*cols)[48] = calloc((size_t)(cap ? cap : 1), sizeof *cols);
    int *map = calloc((size_t)(cap ? cap : 1), sizeof *map);
    if (!cols || !map) {
        free(cols);
        free(map);
        d2_out_abort(c.o);
        d2_out_abort(s.o);
        d2_out_abort(m.o);
        return d2_fail(e, D2_EIO, "out of memory writing montecarlo.csv");
    }
    for (int i = 0; i < rep->nmodels; i++)
        for (int j = 0; j < rep->res[i].nvec; j++) {
            int f = -1;
            for (int k = 0; k < ncol; k++)
                if (!strcmp(cols[k], rep->res[i].vec_name[j])) f = k;
            if (f < 0) memcpy(cols[ncol++], rep->res[i].vec_name[j], 48);
        }
    fprintf(c.fp, "model,scale,trial,accuracy_percent");
    for (int k = 0; k < ncol; k++) fprintf(c.fp, ",%s", cols[k]);
    fputc('\n', c.fp);
    fprintf(s.fp, "model,scale,trials,nominal_percent,mean_percent,std_points,min_percent,"
                  "max_percent,p90_percent,p50_percent,p10_percent,spec_percent,pass,"
                  "yield_percent,yield_low_percent,yield_high_percent,confidence_percent\n");
    fprintf(m.fp, "model,nominal_percent");
    for (int k = 0; k < rep->cfg.nscales; k++) fprintf(m.fp, ",mean_percent_at_x%g", rep->cfg.scales[k]);
    for (int k = 0; k < rep->cfg.nscales; k++) fprintf(m.fp, ",std_points_at_x%g", rep->cfg.scales[k]);
    fputc('\n', m.fp);
    double nan = NAN;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        for (int j = 0; j < r->nvec; j++)
            for (int k = 0; k < ncol; k++)
                if (!strcmp(cols[k], r->vec_name[j])) map[j] = k;
        double *row = calloc((size_t)(ncol ? ncol : 1), sizeof *row);
        if (!row) {
            rc = d2_fail(e, D2_EIO, "out of memory writing montecarlo.csv");
            break;
        }
        for (int q = 0; q < r->nmc; q++) {
            const tol_mc *mc = &r->mc[q];
            for (int t = 0; t < mc->trials; t++) {
                for (int k = 0; k < ncol; k++) row[k] = nan;
                for (int j = 0; j < r->nvec; j++) row[map[j]] = mc->vec[(size_t)t * mc->nvec + j];
                csv_str(c.fp, r->s->name);
                fputc(',', c.fp);
                csv_num(c.fp, mc->scale);
                fprintf(c.fp, ",%d,", t + 1);
                csv_num(c.fp, 100 * mc->acc[t]);
                for (int k = 0; k < ncol; k++) {
                    fputc(',', c.fp);
                    csv_num(c.fp, row[k]);
                }
                fputc('\n', c.fp);
            }
            if (!mc->trials) continue;
            csv_str(s.fp, r->s->name);
            double v[] = {100 * r->nominal, 100 * mc->mean, 100 * mc->std, 100 * mc->min,
                          100 * mc->max, 100 * mc->p90, 100 * mc->p50, 100 * mc->p10,
                          100 * r->spec};
            fprintf(s.fp, ",%.10g,%d", mc->scale, mc->trials);
            for (size_t k = 0; k < sizeof v / sizeof *v; k++) {
                fputc(',', s.fp);
                csv_num(s.fp, v[k]);
            }
            fprintf(s.fp, ",%d,%.10g,%.10g,%.10g,%.10g\n", mc->pass, 100 * mc->yield,
                    100 * mc->yield_lo, 100 * mc->yield_hi, 100 * rep->cfg.confidence);
        }
        free(row);
        csv_str(m.fp, r->s->name);
        fputc(',', m.fp);
        csv_num(m.fp, 100 * r->nominal);
        for (int pass = 0; pass < 2; pass++)
            for (int q = 0; q < r->nmc; q++) {
                fputc(',', m.fp);
                if (r->mc[q].trials) csv_num(m.fp, 100 * (pass ? r->mc[q].std : r->mc[q].mean));
            }
        fputc('\n', m.fp);
    }
    free(cols);
    free(map);
    if (rc) {
        d2_out_abort(c.o);
        d2_out_abort(s.o);
        d2_out_abort(m.o);
        return rc;
    }
    if ((rc = d2_out_commit(c.o, e))) {
        d2_out_abort(s.o);
        d2_out_abort(m.o);
        return rc;
    }
    if ((rc = d2_out_commit(s.o, e))) {
        d2_out_abort(m.o);
        return rc;
    }
    return d2_out_commit(m.o, e);
}

/* ---- plots -------------------------------------------------------------- */

/* Character height in mm, fixed so text keeps its size whatever the page
 * height (pngcairo draws at 90 dots per inch). */
#define CH_MM 5.0

enum { COL_BG, COL_FG, COL_GRID, COL_GREY, COL_MODEL0 };
#define NPAL 12
static const int pal[NPAL][3] = {
    {255, 255, 255}, {0, 0, 0},     {225, 225, 225}, {110, 110, 110},
    {0, 114, 178},   {213, 94, 0},  {0, 158, 115},   {204, 121, 167},
    {230, 159, 0},   {86, 180, 233}, {90, 90, 90},   {170, 140, 0},
};

static int model_color(int i) { return COL_MODEL0 + i % (NPAL - COL_MODEL0); }

typedef struct series {
    int n;
    const double *x, *y;
    const double *ylo, *yhi;  /* error bars, or NULL */
    int color, style;         /* style: PLplot line style 1 solid, 2 dashed, 3 dotted... 0: none */
    int dots;                 /* mark the points */
    double width;
    char label[256];          /* legend text, "" for none */
} series;

typedef struct plot {
    char title[200], subtitle[320], xlabel[200], ylabel[200];
    double x0, x1, y0, y1;
    int ns;
    series s[40];
} plot;

static int cairo_available(void)
{
    const char **menu = calloc(128, sizeof *menu), **devs = calloc(128, sizeof *devs);
    int n = 128, ok = 0;
    if (menu && devs) {
        plgFileDevs(&menu, &devs, &n);
        for (int i = 0; i < n; i++)
            if (devs[i] && !strcmp(devs[i], "pngcairo")) ok = 1;
    }
    free(menu);
    free(devs);
    return ok;
}

/* Draws p into path (atomically: a temporary beside it, renamed). */
static int plot_write(const plot *p, const char *path, d2_err *e)
{
    if (!cairo_available())
        return d2_fail(e, D2_EIO, "%s: PLplot's pngcairo driver is not installed (Debian package "
                       "plplot-driver-cairo; scripts/install-deps installs it)", path);
    char tmp[4300];
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path + 1) : 0;
    snprintf(tmp, sizeof tmp, "%.*s.%s.tmp-%ld", dl, path, slash ? slash + 1 : path, (long)getpid());
    int r[NPAL], g[NPAL], b[NPAL];
    for (int i = 0; i < NPAL; i++) r[i] = pal[i][0], g[i] = pal[i][1], b[i] = pal[i][2];
    /* The legend goes below the plot, one row per entry, so it never hides
     * data. */
    int nleg = 0;
    for (int i = 0; i < p->ns; i++) nleg += p->s[i].label[0] != 0;
    int H = 630 + 34 * nleg, bottom = 112 + 34 * nleg, top = 100;
    plsdev("pngcairo");
    plsfnam(tmp);
    plspage(0, 0, 1200, H, 0, 0);
    plscmap0(r, g, b, NPAL);
    plinit();
    pladv(0);
    plschr(CH_MM, 1.0);
    plvpor(0.085, 0.975, (double)bottom / H, 1 - (double)top / H);
    double x0 = p->x0, x1 = p->x1, y0 = p->y0, y1 = p->y1;
    if (!(x1 > x0)) x1 = x0 + 1;
    if (!(y1 > y0)) y1 = y0 + 1;
    plwind(x0, x1, y0, y1);
    plcol0(COL_GRID);
    plwidth(1);
    pllsty(1);
    plbox("g", 0, 0, "g", 0, 0);
    plcol0(COL_FG);
    plbox("bcnst", 0, 0, "bcnstv", 0, 0);
    plmtex("b", 3.0, 0.5, 0.5, p->xlabel);
    plmtex("l", 4.2, 0.5, 0.5, p->ylabel);
    plschr(CH_MM, 1.25);
    plmtex("t", p->subtitle[0] ? 2.6 : 1.2, 0.5, 0.5, p->title);
    plschr(CH_MM, 0.9);
    if (p->subtitle[0]) plmtex("t", 1.0, 0.5, 0.5, p->subtitle);
    plschr(CH_MM, 1.0);

    PLINT opt[40], lcol[40], lsty[40], scol[40], snum[40], tcol[40];
    PLFLT lwid[40], sscale[40];
    const char *text[40], *sym[40];
    int nl = 0;
    for (int i = 0; i < p->ns; i++) {
        const series *s = &p->s[i];
        if (s->n <= 0 && !s->label[0]) continue;
        plcol0(s->color);
        plwidth(s->width > 0 ? s->width : 2);
        if (s->style > 0 && s->n > 1) {
            pllsty(s->style);
            plline(s->n, s->x, s->y);
            pllsty(1);
        }
        if (s->ylo && s->yhi && s->n > 0) {
            plwidth(1);
            plerry(s->n, s->x, s->ylo, s->yhi);
        }
        if (s->dots && s->n > 0) plstring(s->n, s->x, s->y, "•");
        if (s->label[0] && nl < 40) {
            opt[nl] = (s->style > 0 ? PL_LEGEND_LINE : 0) | (s->dots ? PL_LEGEND_SYMBOL : 0);
            if (!opt[nl]) opt[nl] = PL_LEGEND_NONE;
            lcol[nl] = scol[nl] = s->color;
            tcol[nl] = COL_FG;
            lsty[nl] = s->style > 0 ? s->style : 1;
            lwid[nl] = s->width > 0 ? s->width : 2;
            sscale[nl] = 1;
            snum[nl] = 1;
            sym[nl] = "•";
            text[nl] = s->label;
            nl++;
        }
    }
    pllsty(1);
    plwidth(1);
    if (nl) {
        PLFLT lw, lh;
        pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
                 PL_POSITION_BOTTOM | PL_POSITION_OUTSIDE | PL_POSITION_VIEWPORT, 0,
                 88.0 / (H - bottom - top), 0.06, COL_BG, COL_FG, 1, 0, 0, nl, opt, 0.8, 0.85, 2.0, 0.0, tcol,
                 text, NULL, NULL, NULL, NULL, lcol, lsty, lwid, scol, sscale, snum, sym);
    }
    plend();
    FILE *f = fopen(tmp, "rb");
    long size = -1;
    if (f) {
        fseek(f, 0, SEEK_END);
        size = ftell(f);
        fclose(f);
    }
    if (size <= 0) {
        remove(tmp);
        return d2_fail(e, D2_EIO, "%s: PLplot wrote no image", path);
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        remove(tmp);
        return d2_fail(e, D2_EIO, "%s: %s", path, strerror(err));
    }
    return 0;
}

static series *add_series(plot *p)
{
    if (p->ns >= 40) return NULL;
    series *s = &p->s[p->ns++];
    memset(s, 0, sizeof *s);
    s->width = 2;
    s->style = 1;
    return s;
}

/* Accuracy against the magnitude of one kind, one curve per model. */
static int plot_scan(const tol_report *rep, int kind, const char *path, d2_err *e)
{
    plot p;
    memset(&p, 0, sizeof p);
    /* Buffers: per model x, mean, min, max (scan points + the nominal at 0). */
    int cap = TOL_MAX_SCAN + 1, rc;
    double *buf = calloc((size_t)rep->nmodels * 4 * cap + 64, sizeof(double));
    if (!buf) return d2_fail(e, D2_EIO, "out of memory for %s", path);
    double *extra = buf + (size_t)rep->nmodels * 4 * cap;
    double xmax = 0, ymin = 100, ymax = 0, ref = 0;
    const tol_result *first = NULL;
    int draws = 1, nmod = 0;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        const tol_inverse *v = NULL;
        for (int j = 0; j < r->ninv; j++)
            if (r->inv[j].kind == kind) v = &r->inv[j];
        if (!v || !v->npts) continue;
        if (!first) first = r;
        nmod++;
        ref = fmax(ref, v->ref);
        double *x = buf + (size_t)i * 4 * cap, *y = x + cap, *lo = y + cap, *hi = lo + cap;
        x[0] = 0;
        y[0] = lo[0] = hi[0] = 100 * r->nominal;
        for (int q = 0; q < v->npts; q++) {
            x[q + 1] = v->pts[q].factor * v->ref;
            y[q + 1] = 100 * v->pts[q].mean;
            lo[q + 1] = 100 * v->pts[q].min;
            hi[q + 1] = 100 * v->pts[q].max;
            if (v->pts[q].min != v->pts[q].max) draws = rep->cfg.inverse_draws;
        }
        for (int q = 0; q <= v->npts; q++) {
            xmax = fmax(xmax, x[q]);
            ymin = fmin(ymin, lo[q]);
            ymax = fmax(ymax, hi[q]);
        }
        series *s = add_series(&p);
        s->n = v->npts + 1;
        s->x = x;
        s->y = y;
        if (draws > 1) {
            s->ylo = lo;
            s->yhi = hi;
        }
        s->dots = 1;
        s->color = model_color(i);
        char a1[48], a5[48];
        if (isfinite(v->at1)) snprintf(a1, sizeof a1, "%.3g", v->at1);
        else snprintf(a1, sizeof a1, "> %.3g", v->max_tested);
        if (isfinite(v->at5)) snprintf(a5, sizeof a5, "%.3g", v->at5);
        else snprintf(a5, sizeof a5, "> %.3g", v->max_tested);
        snprintf(s->label, sizeof s->label, "%s: -1 point at %s, -5 points at %s %s", r->s->name, a1,
                 a5, tol_result_unit(r, kind));
    }
    if (!first) {
        free(buf);
        return 0;
    }
    double pad = 0.05 * (ymax - ymin) + 0.5;
    p.x0 = 0;
    p.x1 = xmax * 1.02;
    p.y0 = fmax(0, ymin - pad);
    p.y1 = fmin(100, ymax + pad);
    /* Reference lines for the first model: nominal - 1 and - 5 points; the
     * configured magnitude. */
    double nom = 100 * first->nominal;
    double *lx = extra, *l1 = extra + 2, *l5 = extra + 4, *vx = extra + 6, *vy = extra + 8;
    lx[0] = p.x0, lx[1] = p.x1;
    l1[0] = l1[1] = nom - 1;
    l5[0] = l5[1] = nom - 5;
    vx[0] = vx[1] = ref;
    vy[0] = p.y0, vy[1] = p.y1;
    series *s = add_series(&p);
    s->n = 2, s->x = lx, s->y = l1, s->color = COL_GREY, s->style = 2, s->width = 1.2;
    snprintf(s->label, sizeof s->label, "nominal - 1 point%s", nmod > 1 ? " (first model)" : "");
    if (nom - 5 > p.y0) {
        s = add_series(&p);
        s->n = 2, s->x = lx, s->y = l5, s->color = COL_GREY, s->style = 3, s->width = 1.2;
        snprintf(s->label, sizeof s->label, "nominal - 5 points%s", nmod > 1 ? " (first model)" : "");
    }
    s = add_series(&p);
    s->n = 2, s->x = vx, s->y = vy, s->color = COL_FG, s->style = 4, s->width = 1;
    snprintf(s->label, sizeof s->label, "configured limit D = %.3g %s", ref, tol_result_unit(first, kind));

    char ax[200];
    kind_axis(first, kind, ax, sizeof ax);
    snprintf(p.xlabel, sizeof p.xlabel, "%s", ax);
    snprintf(p.ylabel, sizeof p.ylabel, "test accuracy (%%, %d images)", first->images);
    int per_layer = tol_kind_per_layer(kind), fixed = kind == TOL_QUANTIZE;
    snprintf(p.title, sizeof p.title, "Accuracy against %s", kind_words(first, kind));
    if (fixed)
        snprintf(p.subtitle, sizeof p.subtitle, "every layer quantised to the step on the x axis");
    else if (draws > 1 || tol_kind_signed(kind))
        snprintf(p.subtitle, sizeof p.subtitle,
                 "%s, %s in ±D; points: mean of %d draws, bars: their range",
                 per_layer ? "every layer its own draw" : "whole stack",
                 dist_name(first->mag.dist[kind]), rep->cfg.inverse_draws);
    else
        snprintf(p.subtitle, sizeof p.subtitle, "%s",
                 per_layer ? "all layers perturbed together" : "the whole stack");
    rc = plot_write(&p, path, e);
    free(buf);
    return rc;
}

/* Monte-Carlo yield curves: the fraction of trials reaching each accuracy. */
static int plot_yield(const tol_report *rep, const char *path, d2_err *e)
{
    plot p;
    memset(&p, 0, sizeof p);
    int total = 0;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_mc *m = main_mc(&rep->res[i]);
        if (m) total += 5 * m->trials + 2;
    }
    if (!total) return 0;
    double *buf = calloc((size_t)total + 8 * (size_t)rep->nmodels + 8, sizeof(double));
    if (!buf) return d2_fail(e, D2_EIO, "out of memory for %s", path);
    double *at = buf, xmin = 100, xmax = 0;
    const tol_mc *m0 = NULL;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        const tol_mc *m = main_mc(r);
        if (!m) continue;
        if (!m0) m0 = m;
        int T = m->trials;
        double *srt = at + 4 * T + 2;
        memcpy(srt, m->acc, sizeof(double) * T);
        for (int a = 1; a < T; a++) /* insertion sort: T is at most a few thousand */
            for (int b = a; b > 0 && srt[b - 1] > srt[b]; b--) {
                double t = srt[b];
                srt[b] = srt[b - 1];
                srt[b - 1] = t;
            }
        /* P(accuracy >= x) as steps: it holds its value up to each distinct
         * trial accuracy v and drops just after it. */
        double *x = at, *y = at + 2 * T + 1;
        int n = 0;
        double level = 100;
        for (int k = 0; k < T; k++) {
            if (k + 1 < T && srt[k + 1] == srt[k]) continue;
            double after = 100.0 * (T - k - 1) / T;
            x[n] = x[n + 1] = 100 * srt[k];
            y[n] = level;
            y[n + 1] = after;
            level = after;
            n += 2;
        }
        xmin = fmin(xmin, x[0]);
        xmax = fmax(xmax, fmax(x[n - 1], 100 * r->nominal));
        series *s = add_series(&p);
        s->n = n;
        s->x = x;
        s->y = y;
        s->style = 1;
        s->color = model_color(i);
        snprintf(s->label, sizeof s->label,
                 "%s: nominal %.2f %%, mean %.2f %%; yield at %.2f %%: %.1f %% (%.0f %% CI "
                 "%.1f-%.1f %%)",
                 r->s->name, 100 * r->nominal, 100 * m->mean, 100 * r->spec, 100 * m->yield,
                 100 * rep->cfg.confidence, 100 * m->yield_lo, 100 * m->yield_hi);
        at += 5 * T + 2;
    }
    double span = xmax - xmin, pad = 0.05 * span + 0.2;
    p.x0 = fmax(0, xmin - pad);
    p.x1 = fmin(100, xmax + pad);
    p.y0 = 0;
    p.y1 = 105;
    double *ln = at;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        if (!main_mc(r)) continue;
        ln[0] = ln[1] = 100 * r->nominal;
        ln[2] = 0, ln[3] = 100;
        series *s = add_series(&p);
        s->n = 2, s->x = ln, s->y = ln + 2, s->style = 2, s->width = 1.2;
        s->color = model_color(i);
        ln += 4;
    }
    series *key = add_series(&p);
    key->style = 2, key->width = 1.2, key->color = COL_GREY;
    snprintf(key->label, sizeof key->label, "nominal accuracy (dashed, in the model's colour)");
    for (int i = 0; i < rep->nmodels; i++) {
        /* Spec line(s): one for an absolute spec, one per model otherwise. */
        const tol_result *r = &rep->res[i];
        if (!main_mc(r) || (i > 0 && rep->cfg.spec >= 0)) continue;
        ln[0] = ln[1] = 100 * r->spec;
        ln[2] = 0, ln[3] = 100;
        series *s = add_series(&p);
        s->n = 2, s->x = ln, s->y = ln + 2, s->style = 1, s->width = 1.0;
        s->color = rep->cfg.spec >= 0 ? COL_GREY : model_color(i);
        if (rep->cfg.spec >= 0)
            snprintf(s->label, sizeof s->label, "spec %.2f %%", 100 * r->spec);
        ln += 4;
    }
    if (rep->cfg.spec < 0) {
        key = add_series(&p);
        key->style = 1, key->width = 1.0, key->color = COL_GREY;
        snprintf(key->label, sizeof key->label,
                 "spec: nominal - 1 point (thin, in the model's colour)");
    }
    snprintf(p.title, sizeof p.title, "Monte-Carlo yield: %d trials, all perturbations together",
             m0->trials);
    snprintf(p.subtitle, sizeof p.subtitle,
             "limits x%g of the configured ones; %d test images per trial; seed %llu",
             m0->scale, rep->res[0].images, (unsigned long long)rep->cfg.seed);
    snprintf(p.xlabel, sizeof p.xlabel, "test accuracy x (%%)");
    snprintf(p.ylabel, sizeof p.ylabel, "trials with accuracy >= x (%%)");
    int rc = plot_write(&p, path, e);
    free(buf);
    return rc;
}

/* Mean Monte-Carlo accuracy against the magnitude multiplier, per model. */
static int plot_compare(const tol_report *rep, const char *path, d2_err *e)
{
    const tol_config *c = &rep->cfg;
    plot p;
    memset(&p, 0, sizeof p);
    double *buf = calloc((size_t)rep->nmodels * 4 * (TOL_MAX_SCALES + 1), sizeof(double));
    if (!buf) return d2_fail(e, D2_EIO, "out of memory for %s", path);
    double ymin = 100, ymax = 0, xmax = 0;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        double *x = buf + (size_t)i * 4 * (TOL_MAX_SCALES + 1), *y = x + TOL_MAX_SCALES + 1,
               *lo = y + TOL_MAX_SCALES + 1, *hi = lo + TOL_MAX_SCALES + 1;
        int n = 0;
        int has0 = 0;
        for (int q = 0; q < r->nmc; q++) has0 |= r->mc[q].scale == 0 && r->mc[q].trials;
        if (!has0) {
            /* Scale 0 is the nominal stack. */
            x[n] = 0;
            y[n] = lo[n] = hi[n] = 100 * r->nominal;
            n++;
        }
        for (int q = 0; q < r->nmc; q++) {
            if (!r->mc[q].trials) continue;
            x[n] = r->mc[q].scale;
            y[n] = 100 * r->mc[q].mean;
            lo[n] = y[n] - 100 * r->mc[q].std;
            hi[n] = y[n] + 100 * r->mc[q].std;
            ymin = fmin(ymin, lo[n]);
            ymax = fmax(ymax, hi[n]);
            xmax = fmax(xmax, x[n]);
            n++;
        }
        /* Sort by scale for the line. */
        for (int a = 1; a < n; a++)
            for (int b = a; b > 0 && x[b - 1] > x[b]; b--) {
                double *arr[4] = {x, y, lo, hi};
                for (int k = 0; k < 4; k++) {
                    double t = arr[k][b];
                    arr[k][b] = arr[k][b - 1];
                    arr[k][b - 1] = t;
                }
            }
        series *s = add_series(&p);
        s->n = n, s->x = x, s->y = y, s->ylo = lo, s->yhi = hi, s->dots = 1;
        s->color = model_color(i);
        snprintf(s->label, sizeof s->label, "%s (nominal %.2f %%)", r->s->name, 100 * r->nominal);
    }
    double pad = 0.05 * (ymax - ymin) + 0.5;
    p.x0 = 0;
    p.x1 = xmax > 0 ? xmax * 1.05 : 1;
    p.y0 = fmax(0, ymin - pad);
    p.y1 = fmin(100, ymax + pad);
    snprintf(p.title, sizeof p.title, "Mean accuracy against the Monte-Carlo magnitude");
    /* Say what scale 1 is, from the first model's magnitudes. */
    const tol_result *r = &rep->res[0];
    char what[240] = "";
    size_t len = 0;
    for (int k = 0; k < TOL_NKINDS && len < sizeof what - 40; k++) {
        if (!r->mag.on[k] || k == TOL_MASK) continue;
        double mx = 0;
        int nl = tol_kind_per_layer(k) ? r->s->m.g.layers : 1;
        for (int l = 0; l < nl; l++) mx = fmax(mx, r->mag.v[k][l]);
        len += (size_t)snprintf(what + len, sizeof what - len, "%s%s %.3g %s", len ? ", " : "",
                                tol_kind_name(k), mx, tol_result_unit(r, k));
    }
    if (strlen(what) <= 90)
        snprintf(p.subtitle, sizeof p.subtitle, "x1 = %s; bars: ±1 std over %d trials",
                 what, c->trials);
    else
        snprintf(p.subtitle, sizeof p.subtitle,
                 "x1 = the configured limits (listed in report.json); bars: ±1 std over %d "
                 "trials",
                 c->trials);
    snprintf(p.xlabel, sizeof p.xlabel, "Monte-Carlo limits, multiple of the configured ones");
    snprintf(p.ylabel, sizeof p.ylabel, "mean test accuracy (%%, %d images)", r->images);
    int rc = plot_write(&p, path, e);
    free(buf);
    return rc;
}

/* A previous study's plots (d2fab's own names) that this one did not make:
 * removed before the new report.json, so two studies never share a folder.
 * ctx is the new report's "files" array. */
static int stale_tol_file(const char *name, void *ctx)
{
    const cJSON *it;
    size_t n = strlen(name);
    int own = !strcmp(name, "yield.png") || !strcmp(name, "compare.png") ||
              (!strncmp(name, "scan_", 5) && n > 9 && !strcmp(name + n - 4, ".png"));
    if (!own) return 0;
    cJSON_ArrayForEach(it, (const cJSON *)ctx)
        if (cJSON_IsString(it) && !strcmp(it->valuestring, name)) return 0;
    return 1;
}

int tol_write(const tol_report *rep, const char *out_dir, d2_err *e)
{
    char path[4200];
    int rc;
    if ((rc = d2_mkdir_p(out_dir, e))) return rc;
    /* The index goes first and comes back last (as export.json). */
    if ((rc = d2_path_join(path, sizeof path, out_dir, "report.json", e))) return rc;
    if (unlink(path) != 0 && errno != ENOENT)
        return d2_fail(e, D2_EIO, "%s: cannot remove the old report.json: %s", path,
                       strerror(errno));
    if ((rc = write_sensitivity(rep, out_dir, e))) return rc;
    if ((rc = write_inverse(rep, out_dir, e))) return rc;
    if ((rc = write_montecarlo(rep, out_dir, e))) return rc;
    cJSON *files = cJSON_CreateArray();
    const char *csvs[] = {"sensitivity.csv", "inverse.csv", "scan.csv", "montecarlo.csv",
                          "montecarlo_summary.csv", "compare.csv"};
    for (size_t i = 0; i < sizeof csvs / sizeof *csvs; i++)
        cJSON_AddItemToArray(files, cJSON_CreateString(csvs[i]));
    for (int k = 0; k < TOL_NKINDS; k++) {
        int any = 0;
        for (int i = 0; i < rep->nmodels; i++)
            for (int j = 0; j < rep->res[i].ninv; j++)
                any |= rep->res[i].inv[j].kind == k && rep->res[i].inv[j].npts > 0;
        if (!any) continue;
        char name[80];
        snprintf(name, sizeof name, "scan_%s.png", tol_kind_name(k));
        if ((rc = d2_path_join(path, sizeof path, out_dir, name, e)) ||
            (rc = plot_scan(rep, k, path, e)))
            goto fail;
        cJSON_AddItemToArray(files, cJSON_CreateString(name));
    }
    int have_mc = 0;
    for (int i = 0; i < rep->nmodels; i++) have_mc |= main_mc(&rep->res[i]) != NULL;
    if (have_mc) {
        if ((rc = d2_path_join(path, sizeof path, out_dir, "yield.png", e)) ||
            (rc = plot_yield(rep, path, e)))
            goto fail;
        cJSON_AddItemToArray(files, cJSON_CreateString("yield.png"));
    }
    if (have_mc && rep->cfg.nscales > 1) {
        if ((rc = d2_path_join(path, sizeof path, out_dir, "compare.png", e)) ||
            (rc = plot_compare(rep, path, e)))
            goto fail;
        cJSON_AddItemToArray(files, cJSON_CreateString("compare.png"));
    }
    if ((rc = d2_dir_clear(out_dir, 0, stale_tol_file, files, "previous study's plot", e)))
        goto fail;
    cJSON *root = tol_report_json(rep);
    cJSON_AddItemToObject(root, "files", files);
    files = NULL;
    if (!(rc = d2_path_join(path, sizeof path, out_dir, "report.json", e)))
        rc = cfg_write(path, root, e);
    cJSON_Delete(root);
    return rc;
fail:
    cJSON_Delete(files);
    return rc;
}
