/* The twin folder: the fitted stack as a model any stage loads, the fit as
 * JSON, a report for people and the measured-vs-predicted scatter. */
#include "calibrate/calibrate.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <plplot.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/config.h"
#include "core/image.h"

int cal_twin_model(const d2_model *m, const layer_pose *pose, d2_model *out, d2_err *e)
{
    memset(out, 0, sizeof *out);
    out->g = m->g;
    out->t = m->t;
    out->test_accuracy = -1;
    /* The twin is the thin model the fit ran on. */
    out->g.optics = D2_OPTICS_THIN;
    perturb_gaps(&m->g, pose, out->g.gap_mm);
    if (model_alloc(out, e)) return e->code;
    size_t nn = (size_t)m->g.n * m->g.n;
    float complex *t = d2_malloc(2 * nn * sizeof *t, "layer", e);
    if (!t) {
        model_free(out);
        return D2_EIO;
    }
    for (int l = 0; l < m->g.layers; l++) {
        net_phase_to_t(&m->g, m->phase[l], m->amp[l], 0, nn, t);
        perturb_transform(t, m->g.n, m->g.pitch_mm, &pose[l], t + nn);
        /* The phase of the resampled layer; where bilinear weights mix
         * pixels of different phase the fit also saw a lower amplitude,
         * which a phase map cannot hold (see the README). */
        for (size_t i = 0; i < nn; i++) {
            float ph = cargf(t[nn + i]);
            out->phase[l][i] = ph < 0 ? ph + (float)(2 * M_PI) : ph;
        }
    }
    free(t);
    return 0;
}

static cJSON *pose_json(const layer_pose *p, const layer_pose *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "dx_mm", p->dx_mm);
    cJSON_AddNumberToObject(o, "dx_sigma_mm", s->dx_mm);
    cJSON_AddNumberToObject(o, "dy_mm", p->dy_mm);
    cJSON_AddNumberToObject(o, "dy_sigma_mm", s->dy_mm);
    cJSON_AddNumberToObject(o, "dz_mm", p->dz_mm);
    cJSON_AddNumberToObject(o, "dz_sigma_mm", s->dz_mm);
    cJSON_AddNumberToObject(o, "rotation_deg", p->rot_deg);
    cJSON_AddNumberToObject(o, "rotation_sigma_deg", s->rot_deg);
    return o;
}

static int write_json(const char *path, const d2_model *m, const char *model_dir,
                      const cal_meas *meas, const cal_result *r, d2_err *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model_dir", model_dir);
    cJSON_AddStringToObject(root, "optics", optics_name(&m->g));
    cJSON_AddNumberToObject(root, "measurements", meas->count);
    cJSON_AddNumberToObject(root, "iterations", r->iterations);
    cJSON_AddNumberToObject(root, "seconds", r->seconds);
    cJSON_AddNumberToObject(root, "sample_jacobians", r->sample_grads);
    cJSON_AddNumberToObject(root, "cost_start", r->cost0);
    cJSON_AddNumberToObject(root, "cost", r->cost);
    cJSON_AddNumberToObject(root, "rms_relative_residual", r->rms_rel);
    cJSON_AddNumberToObject(root, "noise_assumed", r->noise);
    cJSON_AddBoolToObject(root, "explains_readings", r->rms_rel <= 2 * r->noise);
    if (r->twin_images > 0) {
        cJSON_AddNumberToObject(root, "twin_accuracy", r->twin_accuracy);
        cJSON_AddNumberToObject(root, "twin_accuracy_images", r->twin_images);
    }
    cJSON *poses = cJSON_AddArrayToObject(root, "poses");
    for (int l = 0; l < r->layers; l++)
        cJSON_AddItemToArray(poses, pose_json(&r->pose[l], &r->sigma[l]));
    cJSON_AddItemToObject(root, "gains", cJSON_CreateDoubleArray(r->gain, r->ndet));
    cJSON_AddItemToObject(root, "gain_sigmas", cJSON_CreateDoubleArray(r->gain_sigma, r->ndet));
    cJSON_AddItemToObject(root, "offsets", cJSON_CreateDoubleArray(r->offset, r->ndet));
    cJSON_AddItemToObject(root, "offset_sigmas", cJSON_CreateDoubleArray(r->offset_sigma, r->ndet));
    cJSON *notes = cJSON_AddArrayToObject(root, "cannot_tell_apart");
    for (int i = 0; i < r->nnotes; i++) cJSON_AddItemToArray(notes, cJSON_CreateString(r->notes[i]));
    int rc = cfg_write(path, root, e);
    cJSON_Delete(root);
    return rc;
}

/* One line of hand-fix advice when a component is both large enough to
 * matter and clearly (2 sigma) away from zero. */
static void advise(FILE *f, int layer, const char *verb, double v, double s, double min,
                   const char *unit, const char *pos, const char *neg, int *count)
{
    if (fabs(v) < min || fabs(v) < 2 * s) return;
    fprintf(f, "  layer %d sits %.2f +- %.2f %s %s: %s it %.2f %s %s\n", layer, fabs(v), s, unit,
            v > 0 ? pos : neg, verb, fabs(v), unit, v > 0 ? neg : pos);
    (*count)++;
}

static int write_report(const char *path, const d2_model *m, const char *model_dir,
                        const cal_meas *meas, const cal_result *r, d2_err *e)
{
    d2_out *o = d2_out_open(path, e);
    if (!o) return e->code;
    FILE *f = d2_out_fp(o);
    fprintf(f, "d2fab calibrate: the twin of %s (%s model) from %d measured inputs\n\n", model_dir,
            optics_name(&m->g), meas->count);
    fprintf(f, "fit: %d iterations, %.1f s, cost %.4g -> %.4g, rms relative residual %.4f\n\n",
            r->iterations, r->seconds, r->cost0, r->cost, r->rms_rel);
    if (r->rms_rel > 2 * r->noise)
        fprintf(f, "WARNING: the twin does not explain the readings (rms relative residual %.4f "
                "against the %.4f noise assumed): the fit may sit in a wrong basin (a layer a "
                "pixel off); restart it with --start from other poses, or check the noise\n\n",
                r->rms_rel, r->noise);
    fprintf(f, "layer        dx (mm)           dy (mm)           dz (mm)        rotation (deg)\n");
    for (int l = 0; l < r->layers; l++) {
        const layer_pose *p = &r->pose[l], *s = &r->sigma[l];
        fprintf(f, "%5d  %+7.3f +- %-6.3f %+7.3f +- %-6.3f %+7.3f +- %-6.3f %+7.3f +- %-6.3f\n",
                l + 1, p->dx_mm, s->dx_mm, p->dy_mm, s->dy_mm, p->dz_mm, s->dz_mm, p->rot_deg,
                s->rot_deg);
    }
    fprintf(f, "\nwhat to fix by hand (|error| >= 0.05 mm lateral, 0.3 mm axial, 0.1 deg, and "
            "beyond 2 sigma):\n");
    int nadv = 0;
    for (int l = 0; l < r->layers; l++) {
        const layer_pose *p = &r->pose[l], *s = &r->sigma[l];
        advise(f, l + 1, "shift", p->dx_mm, s->dx_mm, 0.05, "mm", "to +x", "to -x", &nadv);
        advise(f, l + 1, "shift", p->dy_mm, s->dy_mm, 0.05, "mm", "to +y", "to -y", &nadv);
        advise(f, l + 1, "move", p->dz_mm, s->dz_mm, 0.3, "mm", "towards the detector",
               "towards the source", &nadv);
        advise(f, l + 1, "turn", p->rot_deg, s->rot_deg, 0.1, "deg", "counter-clockwise",
               "clockwise", &nadv);
    }
    if (!nadv) fprintf(f, "  nothing: every fitted error is small or within its uncertainty\n");
    fprintf(f, "\nwhat the readings cannot tell apart:\n");
    for (int i = 0; i < r->nnotes; i++) fprintf(f, "  %s\n", r->notes[i]);
    if (!r->nnotes) fprintf(f, "  nothing: no two pose parameters correlate beyond 0.9\n");
    fprintf(f, "\ndetector  gain (per unit of energy)    offset\n");
    for (int k = 0; k < r->ndet; k++)
        fprintf(f, "%8d  %.5g +- %.2g      %.5g +- %.2g\n", k + 1, r->gain[k], r->gain_sigma[k],
                r->offset[k], r->offset_sigma[k]);
    if (r->twin_images > 0)
        fprintf(f, "\npredicted accuracy of the stack as it stands: %.2f %% (%d test images, "
                "thin model)\n", 100 * r->twin_accuracy, r->twin_images);
    return d2_out_commit(o, e);
}

/* Measured against predicted readings, every detector, with the diagonal. */
static int write_scatter(const char *path, const cal_meas *meas, const cal_result *r, d2_err *e)
{
    if (!img_plot_png_available()) return 0;
    size_t n = (size_t)meas->count * meas->ndet;
    double hi = 0;
    for (size_t i = 0; i < n; i++) hi = fmax(hi, fmax(meas->read[i], r->pred[i]));
    if (!(hi > 0)) hi = 1;
    char tmp[4300];
    d2_tmp_path(path, tmp, sizeof tmp);
    int rr[3] = {255, 0, 0}, gg[3] = {255, 0, 114}, bb[3] = {255, 0, 178};
    plsdev("pngcairo");
    plsfnam(tmp);
    plspage(0, 0, 800, 800, 0, 0);
    plscmap0(rr, gg, bb, 3);
    plinit();
    plcol0(1);
    plenv(0, hi * 1.05, 0, hi * 1.05, 1, 0);
    pllab("twin-predicted reading", "measured reading", "calibrate: measured vs twin");
    double dx[2] = {0, hi * 1.05};
    pllsty(2);
    plline(2, dx, dx);
    pllsty(1);
    plcol0(2);
    plstring((PLINT)n, r->pred, meas->read, "•");
    plend();
    return d2_tmp_install(tmp, path, "PLplot", e);
}

int cal_twin_write(const char *dir, const d2_model *m, const char *model_dir,
                   const cal_meas *meas, const cal_result *r, d2_err *e)
{
    d2_model tw;
    char path[CAL_PATH + 64];
    if (cal_twin_model(m, r->pose, &tw, e)) return e->code;
    int rc = model_save(dir, &tw, e);
    model_free(&tw);
    if (rc) return rc;
    if ((rc = d2_path_join(path, sizeof path, dir, "twin.json", e)) ||
        (rc = write_json(path, m, model_dir, meas, r, e)))
        return rc;
    if ((rc = d2_path_join(path, sizeof path, dir, "report.txt", e)) ||
        (rc = write_report(path, m, model_dir, meas, r, e)))
        return rc;
    if ((rc = d2_path_join(path, sizeof path, dir, "scatter.png", e)) ||
        (rc = write_scatter(path, meas, r, e)))
        return rc;
    return 0;
}

int cal_poses_read(const char *path, int layers, layer_pose *pose, d2_err *e)
{
    cJSON *root = NULL;
    if (cfg_load(path, &root, e)) return e->code;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "poses");
    int rc = 0;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != layers) {
        rc = d2_fail(e, D2_EINPUT, "%s: \"poses\" must be an array of %d layers (found %d): a fit "
                     "of other optics?", path, layers, cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : 0);
        goto done;
    }
    static const char *keys[4] = {"dx_mm", "dy_mm", "dz_mm", "rotation_deg"};
    for (int l = 0; l < layers; l++) {
        const cJSON *o = cJSON_GetArrayItem(arr, l);
        double v[4];
        for (int c = 0; c < 4; c++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, keys[c]);
            if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || fabs(x->valuedouble) > 100) {
                rc = d2_fail(e, D2_EINPUT, "%s: poses[%d].%s must be a number in [-100, 100]",
                             path, l, keys[c]);
                goto done;
            }
            v[c] = x->valuedouble;
        }
        pose[l] = (layer_pose){v[0], v[1], v[2], v[3]};
    }
done:
    cJSON_Delete(root);
    return rc;
}
