/* The package's figures: phase and height maps, the output intensity of a
 * few test digits with their true and predicted class, and a 3-D view of
 * one plate (run/figures.h draws them). */
#include "run/run_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/idx.h"
#include "core/npy.h"
#include "core/util.h"
#include "run/figures.h"

static int pkg_path(const run_state *s, const char *rel, char *buf, size_t cap, d2_err *e)
{
    return d2_path_join(buf, cap, s->o->out_dir, rel, e);
}

int run_fig_phase(run_state *s, int k, const float *wrapped, d2_err *e)
{
    const d2_geom *g = &s->model.g;
    fig_maps *f = calloc(1, sizeof *f);
    char rel[96], path[RUN_PATH_MAX + 128], cap[160];
    if (!f) return d2_fail(e, D2_EIO, "out of memory drawing the phase of layer %d", k + 1);
    f->np = 1;
    f->p[0] = (fig_panel){.n = g->n, .v = wrapped, .pitch_mm = g->pitch_mm, .box_hi = -1};
    snprintf(f->p[0].title, sizeof f->p[0].title, "%d x %d neurons, %.4g mm pitch (x = column, y = row)", g->n, g->n,
             g->pitch_mm);
    f->lo = 0;
    f->hi = 2 * M_PI;
    f->cmap = CMAP_TWILIGHT;
    snprintf(f->title, sizeof f->title, "Layer %d phase, as trained", k + 1);
    snprintf(f->bar_label, sizeof f->bar_label, "phase (rad, cyclic)");
    snprintf(rel, sizeof rel, "previews/layer%d_phase.png", k + 1);
    int rc = pkg_path(s, rel, path, sizeof path, e);
    if (!rc) rc = fig_write_maps(path, f, e);
    free(f);
    if (rc) return rc;
    snprintf(cap, sizeof cap, "Layer %d phase as trained, 0 to 2 pi (cyclic colours)", k + 1);
    run_add_preview(s, "phase", rel, cap);
    return 0;
}

/* The layer's printed heights (export/layerK_height.npy), n x n. */
static int load_heights(const run_state *s, int k, float **h, d2_err *e)
{
    char rel[64], path[RUN_PATH_MAX + 128];
    int rows, cols, rc;
    snprintf(rel, sizeof rel, "export/layer%d_height.npy", k + 1);
    if ((rc = pkg_path(s, rel, path, sizeof path, e)) ||
        (rc = npy_read_map(path, h, &rows, &cols, e)))
        return rc;
    if (rows != s->printed.g.n || cols != s->printed.g.n) {
        free(*h);
        *h = NULL;
        return d2_fail(e, D2_EINPUT, "%s: %d x %d heights, the stack has %d x %d", path, rows,
                       cols, s->printed.g.n, s->printed.g.n);
    }
    return 0;
}

int run_fig_height(run_state *s, int k, d2_err *e)
{
    const d2_geom *g = &s->printed.g;
    float *h = NULL;
    fig_maps *f = NULL;
    char rel[96], path[RUN_PATH_MAX + 128], cap[200];
    int rc = load_heights(s, k, &h, e);
    if (rc) return rc;
    if (!(f = calloc(1, sizeof *f))) {
        free(h);
        return d2_fail(e, D2_EIO, "out of memory drawing the heights of layer %d", k + 1);
    }
    f->np = 1;
    f->p[0] = (fig_panel){.n = g->n, .v = h, .pitch_mm = g->pitch_mm, .box_hi = -1};
    snprintf(f->p[0].title, sizeof f->p[0].title, "%.4g mm steps (x = column, y = row)",
             s->ex.p.z_step_mm);
    /* One scale for every layer: the lowest and highest printed height. */
    f->lo = INFINITY;
    f->hi = -INFINITY;
    for (int j = 0; j < s->ex.layers; j++) {
        f->lo = fmin(f->lo, s->ex.layer[j].min_mm);
        f->hi = fmax(f->hi, s->ex.layer[j].max_mm);
    }
    f->cmap = CMAP_VIRIDIS;
    snprintf(f->title, sizeof f->title, "Layer %d printed height", k + 1);
    snprintf(f->bar_label, sizeof f->bar_label, "height incl. %.3g mm base (mm)", s->ex.p.base_mm);
    snprintf(rel, sizeof rel, "previews/layer%d_height.png", k + 1);
    if (!(rc = pkg_path(s, rel, path, sizeof path, e)) && !(rc = fig_write_maps(path, f, e))) {
        snprintf(cap, sizeof cap, "Layer %d height as printed, %.3f to %.3f mm (the 16-bit "
                 "export/layer%d_height.png holds the exact values)", k + 1, f->lo, f->hi, k + 1);
        run_add_preview(s, "height", rel, cap);
    }
    free(f);
    free(h);
    return rc;
}

/* The 3-D view of layer k's relief. */
int run_fig_relief(run_state *s, int k, d2_err *e)
{
    const d2_geom *g = &s->printed.g;
    float *h = NULL;
    char rel[96], path[RUN_PATH_MAX + 128], cap[200];
    int rc = load_heights(s, k, &h, e);
    if (rc) return rc;
    double lo = INFINITY, hi = -INFINITY, side = g->n * g->pitch_mm;
    for (size_t i = 0; i < (size_t)g->n * g->n; i++) lo = fmin(lo, h[i]), hi = fmax(hi, h[i]);
    /* The relief drawn 6 % of the plate's side high. */
    double ex = hi > lo ? fmax(1, 0.06 * side / (hi - lo)) : 1;
    snprintf(rel, sizeof rel, "previews/layer%d_relief.png", k + 1);
    if (!(rc = pkg_path(s, rel, path, sizeof path, e)) &&
        !(rc = fig_write_relief(path, g->n, h, g->pitch_mm, ex, 1000, 640, e))) {
        snprintf(cap, sizeof cap, "Layer %d relief in 3-D (%.4g mm square, heights %.3f to "
                 "%.3f mm drawn %.0f times higher, colour by height)", k + 1, side, lo, hi, ex);
        run_add_preview(s, "relief", rel, cap);
    }
    free(h);
    return rc;
}

/* Output intensity of the first test images through the stack as printed,
 * each relative to its own peak, detector squares outlined (true class in
 * green), with the true and predicted class over each panel. */
int run_fig_output(run_state *s, d2_err *e)
{
    const d2_model *m = &s->printed;
    const d2_geom *g = &m->g;
    d2_dataset ds = {0};
    d2_net *net = NULL;
    fig_maps *f = calloc(1, sizeof *f);
    size_t nn = (size_t)g->n * g->n;
    int np = 4, rc;
    float *in = malloc(nn * sizeof *in), *out = malloc(np * nn * sizeof *out);
    char path[RUN_PATH_MAX + 128];
    if (!f || !in || !out) {
        rc = d2_fail(e, D2_EIO, "out of memory drawing the output intensity");
        goto done;
    }
    if ((rc = dataset_open(s->o->data_dir, m->t.dataset, &m->t.data, 1, &ds, e))) goto done;
    if (!(net = net_new(g, 1, e))) {
        rc = e->code ? e->code : D2_EIO;
        goto done;
    }
    net_set_model(net, m);
    if (ds.count < np) np = ds.count;
    f->np = np;
    for (int i = 0; i < np; i++) {
        float det[D2_MAX_DET], *o = out + i * nn, mx = 0;
        input_from_u8(g, ds.images + (size_t)i * ds.rows * ds.cols, ds.rows, ds.cols, in);
        net_infer(net, in, det, o, 0);
        for (size_t j = 0; j < nn; j++) mx = fmaxf(mx, o[j]);
        for (size_t j = 0; j < nn && mx > 0; j++) o[j] /= mx;
        fig_panel *p = &f->p[i];
        *p = (fig_panel){.n = g->n, .v = o, .pitch_mm = g->pitch_mm};
        int pred = det_predict(g, det), truth = ds.labels[i];
        snprintf(p->title, sizeof p->title, "test image %d: true %d, predicted %d%s", i, truth,
                 pred, pred == truth ? "" : " (wrong)");
        p->nbox = g->ndet < FIG_MAX_BOXES ? g->ndet : FIG_MAX_BOXES;
        p->box_hi = truth;
        for (int k = 0; k < p->nbox; k++) {
            p->box[k][0] = g->det_x_mm[k];
            p->box[k][1] = g->det_y_mm[k];
            p->box[k][2] = g->det_size_mm;
        }
    }
    f->lo = 0;
    f->hi = 1;
    f->cmap = CMAP_INFERNO;
    snprintf(f->title, sizeof f->title, "Intensity on the detector plane, as printed (green: "
             "the true class's detector)");
    snprintf(f->bar_label, sizeof f->bar_label, "intensity / the image's peak");
    if ((rc = pkg_path(s, "previews/detector_plane.png", path, sizeof path, e)) ||
        (rc = fig_write_maps(path, f, e)))
        goto done;
    run_add_preview(s, "detector", "previews/detector_plane.png",
                    "Intensity on the detector plane for the first test images through the "
                    "stack as printed, with the true and the predicted class");
done:
    net_free(net);
    dataset_free(&ds);
    free(f);
    free(in);
    free(out);
    return rc;
}
