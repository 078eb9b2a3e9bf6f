/* Tolerance reports: report.json and one CSV per table (the plots are in
 * plots.c). */
#include <errno.h>
#include <math.h>
#include <plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "tolerance/tol_int.h"

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
const char *tol_dist_name(int d) { return d == TOL_NORMAL ? "normal" : "uniform"; }

/* The MC entry at scale 1 (the configured magnitudes), else the last one. */
const tol_mc *tol_main_mc(const tol_result *r)
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
            cJSON_AddStringToObject(o, "distribution", tol_dist_name(r->mag.dist[k]));
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

/* What the numbers of the report mean. */
static void add_conventions(cJSON *root)
{
    cJSON *cv = cJSON_AddObjectToObject(root, "conventions");
    cJSON_AddStringToObject(cv, "accuracy", "percent of the test images whose largest detector "
                            "energy is the true class");
    cJSON_AddStringToObject(cv, "magnitude", "D is the limit: uniform draws in [-D, D]; normal "
                            "draws N(0, (D/2)^2) truncated at 2 sigma = D");
    cJSON_AddStringToObject(cv, "sensitivity", "each perturbation alone at +D and -D (fields and "
                            "settings: one realisation), per layer and axis (sensitivity \"layers\") "
                            "or per kind with every layer and axis at +D together, then -D "
                            "(\"kinds\", layer and component null); change = worst accuracy - "
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
                            "sigma relative to the nominal mean detector energy "
                            "(detector_noise_relative) or to the source power, the power through "
                            "the input aperture (detector_noise_of_source)");
    cJSON_AddStringToObject(cv, "input_mask", "stencil: every test digit read through its own "
                            "printable stencil (the mask stage: binarised, slits narrower than the "
                            "minimum feature closed, islands bridged), open 1, plate 0; an "
                            "image with no printable stencil counts as misread. PNG: one fixed "
                            "transmission multiplied into every test image");
    cJSON_AddStringToObject(cv, "not_modelled", "layer tilt: a tilted plate needs the "
                            "rotated-plane angular spectrum; neither a phase ramp nor per-pixel "
                            "axial shifts describe it for pixels diffracting up to asin(lambda / "
                            "2 pitch)");
}

/* Each perturbation alone at +D and -D, worst first. */
static void add_sensitivity(cJSON *o, const tol_result *r)
{
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
}

/* The inverse tolerances and their scans. */
static void add_inverse(cJSON *o, const tol_result *r)
{
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
}

/* One model: its stack, magnitudes and the results of every analysis. */
static cJSON *model_json(const tol_report *rep, const tol_result *r)
{
    const tol_config *c = &rep->cfg;
    const tol_stack *s = r->s;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", s->name);
    cJSON_AddStringToObject(o, "path", s->path);
    cJSON_AddStringToObject(o, "kind", s->is_export ? "export" : "model");
    /* which optical model produced every number of this model */
    cJSON *oj = optics_to_json(&s->m.g);
    cJSON_AddStringToObject(oj, "spacing", s->m.g.optics == D2_OPTICS_THICK
                                               ? "the assembly as built (air gaps)"
                                               : "datum to datum");
    cJSON *ga = cJSON_AddArrayToObject(oj, "gaps_mm");
    for (int k = 0; k <= s->m.g.layers; k++)
        cJSON_AddItemToArray(ga, cJSON_CreateNumber(s->m.g.gap_mm[k]));
    cJSON_AddItemToObject(o, "optics", oj);
    cJSON_AddNumberToObject(o, "layers", s->m.g.layers);
    cJSON_AddNumberToObject(o, "neurons", s->m.g.n);
    add_num(o, "pitch_mm", s->m.g.pitch_mm);
    add_num(o, "wavelength_mm", s->m.g.wavelength_mm);
    cJSON *mat = cJSON_AddObjectToObject(o, "material");
    cfg_add_numbers(mat, (const cfg_num_item[]){{"index", s->index}, {"kappa", s->kappa},
                    {"base_mm", s->base_mm}}, 3);
    cJSON_AddBoolToObject(mat, "absorbing", s->absorbing);
    add_num(mat, "z_step_mm", s->z_step_mm);
    cJSON_AddNumberToObject(o, "test_images", r->images);
    add_num(o, "nominal_accuracy_percent", 100 * r->nominal);
    add_num(o, "nominal_detector_energy", r->det_mean);
    cJSON *lb = cJSON_AddObjectToObject(o, "nominal_light");
    cfg_add_numbers(lb, (const cfg_num_item[]){{"detector_efficiency_mean", r->eff_mean},
                    {"detector_efficiency_p5", r->eff_p5}, {"margin_mean", r->margin_mean},
                    {"margin_p5", r->margin_p5}}, 4);
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

    add_sensitivity(o, r);
    add_inverse(o, r);
    cJSON *ma = cJSON_AddArrayToObject(o, "montecarlo");
    for (int j = 0; j < r->nmc; j++) cJSON_AddItemToArray(ma, mc_json(&r->mc[j], c->confidence));
    cJSON *vn = cJSON_AddArrayToObject(o, "trial_vector");
    for (int j = 0; j < r->nvec; j++) cJSON_AddItemToArray(vn, cJSON_CreateString(r->vec_name[j]));
    cJSON_AddStringToObject(o, "trials_file", "montecarlo.csv");
    add_num(o, "seconds", r->seconds);
    cJSON_AddNumberToObject(o, "inferences", (double)r->inferences);
    return o;
}

/* The train-D x test-D matrix: models x Monte-Carlo scales. */
static void add_comparison(cJSON *root, const tol_report *rep)
{
    const tol_config *c = &rep->cfg;
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

    add_conventions(root);
    cJSON *models = cJSON_AddArrayToObject(root, "models");
    for (int i = 0; i < rep->nmodels; i++)
        cJSON_AddItemToArray(models, model_json(rep, &rep->res[i]));
    add_comparison(root, rep);
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
                        ? tol_dist_name(r->mag.dist[k])
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
    /* The index goes first and comes back last (as export.json). */
    if ((rc = d2_remove_index(out_dir, "report.json", e))) return rc;
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
            (rc = tol_plot_scan(rep, k, path, e)))
            goto fail;
        cJSON_AddItemToArray(files, cJSON_CreateString(name));
    }
    int have_mc = 0;
    for (int i = 0; i < rep->nmodels; i++) have_mc |= tol_main_mc(&rep->res[i]) != NULL;
    if (have_mc) {
        if ((rc = d2_path_join(path, sizeof path, out_dir, "yield.png", e)) ||
            (rc = tol_plot_yield(rep, path, e)))
            goto fail;
        cJSON_AddItemToArray(files, cJSON_CreateString("yield.png"));
    }
    if (have_mc && rep->cfg.nscales > 1) {
        if ((rc = d2_path_join(path, sizeof path, out_dir, "compare.png", e)) ||
            (rc = tol_plot_compare(rep, path, e)))
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
