/* d2fab mesh: a layer part's pillar tops read back from its mesh file and
 * compared with the export's heights, pixel by pixel (what a print shop can
 * check before printing: the file it got is the phase map that was trained). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/mesh.h"

/* Raises top[] at every pixel centre inside triangle t (projected on xy) to
 * the triangle's z there. Centres are x = x0 + (j + 1/2) p, y likewise. */
static void raster_tri(const float *t, double x0, double y0, double p, int n, double *top)
{
    double ax = t[0], ay = t[1], az = t[2], bx = t[3], by = t[4], bz = t[5];
    double cx = t[6], cy = t[7], cz = t[8];
    double det = (bx - ax) * (cy - ay) - (cx - ax) * (by - ay);
    /* walls project to lines: no centre lies on them (they stand on pixel
     * edges), and the facets above and below carry the heights */
    if (fabs(det) < 1e-12) return;
    double lox = fmin(ax, fmin(bx, cx)), hix = fmax(ax, fmax(bx, cx));
    double loy = fmin(ay, fmin(by, cy)), hiy = fmax(ay, fmax(by, cy));
    int j0 = (int)ceil((lox - x0) / p - 0.5 - 1e-9), j1 = (int)floor((hix - x0) / p - 0.5 + 1e-9);
    int i0 = (int)ceil((loy - y0) / p - 0.5 - 1e-9), i1 = (int)floor((hiy - y0) / p - 0.5 + 1e-9);
    if (j0 < 0) j0 = 0;
    if (i0 < 0) i0 = 0;
    if (j1 > n - 1) j1 = n - 1;
    if (i1 > n - 1) i1 = n - 1;
    const double eps = 1e-9;
    for (int i = i0; i <= i1; i++) {
        double y = y0 + (i + 0.5) * p;
        for (int j = j0; j <= j1; j++) {
            double x = x0 + (j + 0.5) * p;
            double u = ((x - ax) * (cy - ay) - (cx - ax) * (y - ay)) / det;
            double v = ((bx - ax) * (y - ay) - (x - ax) * (by - ay)) / det;
            if (u < -eps || v < -eps || u + v > 1 + eps) continue;
            double z = az + u * (bz - az) + v * (cz - az);
            if (z > top[(size_t)i * n + j]) top[(size_t)i * n + j] = z;
        }
    }
}

/* Keeps the MESH_TOPS_WORST largest |differences|, largest first. */
static void keep_worst(mesh_tops_report *r, int i, int j, double m, double x)
{
    double d = fabs(m - x);
    int k = r->nworst;
    if (k == MESH_TOPS_WORST) {
        k--;
        if (d <= fabs(r->worst[k].mesh_mm - r->worst[k].export_mm)) return;
    } else {
        r->nworst++;
    }
    while (k > 0 && fabs(r->worst[k - 1].mesh_mm - r->worst[k - 1].export_mm) < d) {
        r->worst[k] = r->worst[k - 1];
        k--;
    }
    r->worst[k].row = i;
    r->worst[k].col = j;
    r->worst[k].mesh_mm = m;
    r->worst[k].export_mm = x;
}

int mesh_compare_tops(const char *path, const export_folder *x, int layer, mesh_tops_report *r,
                      d2_err *e)
{
    memset(r, 0, sizeof *r);
    if (layer < 1 || layer > x->layers || !x->height_mm[layer - 1])
        return d2_fail(e, D2_EINPUT, "%s: layer %d: the export has layers 1 to %d", x->json_path,
                       layer, x->layers);
    float *v = NULL;
    size_t nf = 0;
    int rc = mesh_load_soup(path, &v, &nf, e);
    if (rc) return rc;
    double lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (size_t q = 0; q < 3 * nf; q++)
        for (int c = 0; c < 3; c++) {
            lo[c] = fmin(lo[c], v[3 * q + c]);
            hi[c] = fmax(hi[c], v[3 * q + c]);
        }
    int n = x->n;
    double p = x->pitch_mm, sx = hi[0] - lo[0], sy = hi[1] - lo[1], W = (sx - n * p) / 2;
    double *top = NULL;
    if (!(W > 0) || fabs(sx - sy) > 1e-3) {
        rc = d2_fail(e, D2_EINPUT,
                     "%s: a part of %.3f x %.3f mm is not a square layer plate of %d x %d "
                     "pixels of %g mm (from %s) with a frame",
                     path, sx, sy, n, n, p, x->json_path);
        goto done;
    }
    if (!(top = calloc((size_t)n * n, sizeof *top))) {
        rc = d2_fail(e, D2_EIO, "out of memory comparing %s", path);
        goto done;
    }
    for (size_t q = 0; q < (size_t)n * n; q++) top[q] = lo[2];
    for (size_t f = 0; f < nf; f++) raster_tri(v + 9 * f, lo[0] + W, lo[1] + W, p, n, top);

    r->layer = layer;
    r->rows = r->cols = n;
    r->tol_mm = 0.5 * (x->z_step_mm > 0 ? x->z_step_mm : 1e-3);
    /* the printed material at the export's wavelength, else the model's design */
    double lam = x->wavelength_mm > 0 ? x->wavelength_mm : x->g.wavelength_mm;
    double idx = x->have_material ? x->index : x->g.index;
    double k = lam > 0 && idx > 1 ? 2 * M_PI * (idx - 1) / lam : NAN;
    double ss = 0;
    const float *h = x->height_mm[layer - 1];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            size_t q = (size_t)i * n + j;
            double m = top[q] - lo[2], d = fabs(m - h[q]);
            ss += d * d;
            if (d > r->max_mm) r->max_mm = d;
            if (d > r->tol_mm) r->over++;
            keep_worst(r, i, j, m, h[q]);
        }
    r->rms_mm = sqrt(ss / ((double)n * n));
    r->max_rad = k * r->max_mm;
    r->rms_rad = k * r->rms_mm;
done:
    free(v);
    free(top);
    return rc;
}
