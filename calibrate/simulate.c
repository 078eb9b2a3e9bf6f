/* Readings of a stack with hidden errors: the rehearsal of a measurement
 * (and the test bed of the fit). The stack is simulated with the model's
 * own optics (thin screens or thick plates), the same perturbations the
 * tolerance simulator applies. */
#include "calibrate/calibrate.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/util.h"

typedef struct sim {
    d2_net *net;
    const d2_model *m;
    const d2_dataset *ds;
    float *det;
    int stride;
} sim;

static void sim_job(void *arg, int i, int tid)
{
    sim *s = arg;
    const d2_geom *g = &s->m->g;
    float *in = malloc((size_t)g->n * g->n * sizeof *in);
    if (!in) {
        for (int k = 0; k < g->ndet; k++) s->det[(size_t)i * g->ndet + k] = NAN;
        return;
    }
    int idx = i * s->stride;
    input_from_u8(g, s->ds->images + (size_t)idx * s->ds->rows * s->ds->cols, s->ds->rows,
                  s->ds->cols, in);
    net_infer(s->net, in, s->det + (size_t)i * g->ndet, NULL, tid);
    free(in);
}

int cal_set_stack(d2_net *net, const d2_model *m, const layer_pose *pose, d2_err *e)
{
    const d2_geom *g = &m->g;
    size_t nn = (size_t)g->n * g->n;
    float complex *t = d2_malloc(2 * nn * sizeof *t, "layer", e);
    if (!t) return D2_EIO;
    net_set_model(net, m);
    for (int l = 0; l < g->layers; l++) {
        if (perturb_is_identity(&pose[l])) continue;
        memcpy(t, net_transmission(net, l), nn * sizeof *t);
        perturb_transform(t, g->n, g->pitch_mm, &pose[l], t + nn);
        net_set_transmission(net, l, t + nn);
    }
    double gaps[D2_MAX_LAYERS + 1];
    perturb_gaps(g, pose, gaps);
    for (int k = 0; k <= g->layers; k++) net_set_gap(net, k, gaps[k], 0);
    free(t);
    return 0;
}

int cal_simulate(const d2_model *m, const d2_dataset *ds, const cal_sim_opts *o, cal_meas *meas,
                 cal_truth *truth, d2_err *e)
{
    const d2_geom *g = &m->g;
    if (o->count < 1 || o->count > ds->count)
        return d2_fail(e, D2_EINPUT, "simulate: --count %d: the test set has %d images", o->count,
                       ds->count);
    if (!(o->noise >= 0) || !(o->gain_lo > 0) || !(o->gain_hi >= o->gain_lo) ||
        !(o->offset_max >= 0))
        return d2_fail(e, D2_EINPUT, "simulate: need noise >= 0, 0 < gain_lo <= gain_hi and "
                       "offset >= 0");
    memset(truth, 0, sizeof *truth);
    d2_rng rng;
    d2_rng_seed(&rng, o->seed);
    for (int l = 0; l < g->layers; l++)
        perturb_draw_uniform(&rng, o->max_xy_mm, o->max_z_mm, o->max_rot_deg, &truth->pose[l]);
    for (int k = 0; k < g->ndet; k++)
        truth->gain[k] = o->gain_lo + (o->gain_hi - o->gain_lo) * d2_rng_uniform(&rng);
    double u_off[D2_MAX_DET];
    for (int k = 0; k < g->ndet; k++) u_off[k] = o->offset_max * d2_rng_uniform(&rng);

    d2_pool *pool = d2_pool_new(o->threads, e);
    if (!pool) return e->code;
    sim s = {.m = m, .ds = ds, .stride = 1};
    int rc = 0;
    if (!(s.net = net_new(g, d2_pool_threads(pool), e)) || cal_set_stack(s.net, m, truth->pose, e) ||
        cal_meas_alloc(meas, o->count, g->ndet, e)) {
        rc = e->code;
        goto done;
    }
    s.det = d2_malloc((size_t)o->count * g->ndet * sizeof *s.det, "readings", e);
    if (!s.det) {
        rc = D2_EIO;
        goto done;
    }
    d2_pool_run(pool, sim_job, &s, o->count);
    /* Offsets in units of the detector's mean reading, so they mean the same
     * whatever the stack's efficiency. */
    for (int k = 0; k < g->ndet; k++) {
        double mean = 0;
        for (int i = 0; i < o->count; i++) mean += s.det[(size_t)i * g->ndet + k];
        truth->offset[k] = u_off[k] * truth->gain[k] * mean / o->count;
    }
    meas->neurons = g->n;
    meas->layers = g->layers;
    for (int i = 0; i < o->count; i++) {
        meas->test_index[i] = i * s.stride;
        meas->line[i] = i + 3;
        for (int k = 0; k < g->ndet; k++) {
            size_t q = (size_t)i * g->ndet + k;
            double v = truth->gain[k] * s.det[q] + truth->offset[k];
            v *= 1.0 + o->noise * d2_rng_normal(&rng);
            if (!isfinite(v)) {
                rc = d2_fail(e, D2_EIO, "simulate: the model gave no finite reading (input %d)", i);
                goto done;
            }
            meas->read[q] = fmax(v, 0.0);
        }
    }
done:
    if (rc) cal_meas_free(meas);
    free(s.det);
    net_free(s.net);
    d2_pool_free(pool);
    return rc;
}

static cJSON *pose_json(const layer_pose *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "dx_mm", p->dx_mm);
    cJSON_AddNumberToObject(o, "dy_mm", p->dy_mm);
    cJSON_AddNumberToObject(o, "dz_mm", p->dz_mm);
    cJSON_AddNumberToObject(o, "rotation_deg", p->rot_deg);
    return o;
}

int cal_truth_write(const char *path, const d2_model *m, const cal_truth *t, const cal_sim_opts *o,
                    d2_err *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "optics", optics_name(&m->g));
    cJSON_AddNumberToObject(root, "seed", (double)o->seed);
    cJSON_AddNumberToObject(root, "count", o->count);
    cJSON_AddNumberToObject(root, "noise", o->noise);
    cJSON_AddNumberToObject(root, "max_xy_mm", o->max_xy_mm);
    cJSON_AddNumberToObject(root, "max_z_mm", o->max_z_mm);
    cJSON_AddNumberToObject(root, "max_rotation_deg", o->max_rot_deg);
    cJSON *poses = cJSON_AddArrayToObject(root, "poses");
    for (int l = 0; l < m->g.layers; l++) cJSON_AddItemToArray(poses, pose_json(&t->pose[l]));
    cJSON_AddItemToObject(root, "gains", cJSON_CreateDoubleArray(t->gain, m->g.ndet));
    cJSON_AddItemToObject(root, "offsets", cJSON_CreateDoubleArray(t->offset, m->g.ndet));
    if (t->accuracy_images > 0) {
        cJSON_AddNumberToObject(root, "accuracy", t->accuracy);
        cJSON_AddNumberToObject(root, "design_accuracy", t->design_accuracy);
        cJSON_AddNumberToObject(root, "accuracy_images", t->accuracy_images);
    }
    int rc = cfg_write(path, root, e);
    cJSON_Delete(root);
    return rc;
}
