/* Map figures (PLplot, pngcairo) and the shaded relief view (a small
 * z-buffer rasteriser writing through core/image). */
#include "run/figures.h"

#include <errno.h>
#include <math.h>
#include <plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/util.h"

/* ------------------------------------------------------------------------
 * Maps
 * ---------------------------------------------------------------------- */


static void set_cmap1(img_cmap cmap)
{
    PLINT r[256], g[256], b[256];
    for (int i = 0; i < 256; i++) {
        uint8_t c[3];
        img_cmap_rgb(cmap, i / 255.0f, c);
        r[i] = c[0], g[i] = c[1], b[i] = c[2];
    }
    plscmap1n(256);
    plscmap1(r, g, b, 256);
}

/* One panel: the image, the boxes, the axes in mm and the panel's title. */
static void draw_panel(const fig_panel *p, double lo, double hi, PLFLT **cols)
{
    int n = p->n;
    double a = n * p->pitch_mm / 2;
    /* y grows downward (row index), as in the maps and the detector SVG. */
    plwind(-a, a, a, -a);
    for (int ix = 0; ix < n; ix++)
        for (int iy = 0; iy < n; iy++) cols[ix][iy] = p->v[(size_t)iy * n + ix];
    plimage((PLFLT_MATRIX)cols, n, n, -a, a, -a, a, lo, hi, -a, a, -a, a);
    for (int k = 0; k < p->nbox; k++) {
        double cx = p->box[k][0], cy = p->box[k][1], h = p->box[k][2] / 2;
        PLFLT x[5] = {cx - h, cx + h, cx + h, cx - h, cx - h};
        PLFLT y[5] = {cy - h, cy - h, cy + h, cy + h, cy - h};
        plcol0(k == p->box_hi ? 3 : 2);
        plwidth(k == p->box_hi ? 2.5 : 1);
        plline(5, x, y);
    }
    plwidth(1);
    plcol0(1);
    plbox("bcnst", 0, 0, "bcnstv", 0, 0);
    plmtex("b", 2.6, 0.5, 0.5, "x (mm)");
    plmtex("l", 3.6, 0.5, 0.5, "y (mm)");
    plmtex("t", 0.8, 0.5, 0.5, p->title);
}

int fig_write_maps(const char *path, const fig_maps *f, d2_err *e)
{
    if (f->np < 1 || f->np > FIG_MAX_PANELS)
        return d2_fail(e, D2_EUSAGE, "%s: %d panels (allowed 1 to %d)", path, f->np,
                       FIG_MAX_PANELS);
    if (!img_plot_png_available())
        return d2_fail(e, D2_EIO, "%s: PLplot's pngcairo driver is not installed (Debian "
                       "package plplot-driver-cairo; scripts/install-deps installs it)", path);
    int nmax = 0;
    for (int i = 0; i < f->np; i++) nmax = f->p[i].n > nmax ? f->p[i].n : nmax;
    PLFLT **cols = NULL;
    plAlloc2dGrid(&cols, nmax, nmax);
    if (!cols) return d2_fail(e, D2_EIO, "%s: out of memory", path);
    char tmp[4300];
    d2_tmp_path(path, tmp, sizeof tmp);
    /* Panels of 360 px squares with room for the axes; the bar on the right. */
    const double P = 360, L = 78, R = 22, T = 70, B = 62, BAR = 130;
    double W = f->np * (L + P + R) + BAR, H = T + P + B;
    PLINT r0[4] = {255, 0, 255, 0}, g0[4] = {255, 0, 255, 200}, b0[4] = {255, 0, 255, 0};
    plsdev("pngcairo");
    plsfnam(tmp);
    plspage(0, 0, (PLINT)W, (PLINT)H, 0, 0);
    plscmap0(r0, g0, b0, 4);
    set_cmap1(f->cmap);
    plinit();
    pladv(0);
    /* Several panels are shown smaller in the page: larger letters. */
    double ch = f->np > 1 ? 4.2 : 3.2;
    plschr(ch, 1.0);
    double lo = f->lo, hi = f->hi > f->lo ? f->hi : f->lo + 1;
    for (int i = 0; i < f->np; i++) {
        double x0 = i * (L + P + R) + L;
        plvpor(x0 / W, (x0 + P) / W, B / H, (B + P) / H);
        draw_panel(&f->p[i], lo, hi, cols);
    }
    /* The figure's title over the whole page. */
    plvpor(0, 1, 0, 1);
    plwind(0, 1, 0, 1);
    plschr(ch, 1.2);
    plptex(0.5, 1 - 24 / H, 1, 0, 0.5, f->title);
    plschr(ch, 1.0);
    /* The colour bar beside the last panel. */
    double xb = f->np * (L + P + R) + 12;
    plvpor(xb / W, (xb + 20) / W, B / H, (B + P) / H);
    plwind(0, 1, lo, hi);
    PLFLT vals[256];
    for (int i = 0; i < 256; i++) vals[i] = lo + (hi - lo) * i / 255.0;
    const PLFLT *vp[1] = {vals};
    PLINT nv[1] = {256}, sub[1] = {0}, lopt[1] = {PL_COLORBAR_LABEL_RIGHT};
    PLFLT ticks[1] = {0}, cw, cbh;
    const char *axopt[1] = {"bcmstv"}, *lab[1] = {f->bar_label};
    plcol0(1);
    plcolorbar(&cw, &cbh, PL_COLORBAR_IMAGE, PL_POSITION_LEFT | PL_POSITION_INSIDE |
               PL_POSITION_VIEWPORT, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, lopt, lab, 1, axopt,
               ticks, sub, nv, vp);
    plend();
    plFree2dGrid(cols, nmax, nmax);
    return d2_tmp_install(tmp, path, "PLplot", e);
}

/* ------------------------------------------------------------------------
 * The relief, shaded
 * ---------------------------------------------------------------------- */

typedef struct raster {
    int w, h;
    uint8_t *rgb;
    float *depth;
    double ca, sa, ce, se;   /* view azimuth and elevation */
    double s, ox, oy;        /* world (after rotation) to pixels */
    double lo, hi;           /* height range for the colours (world z) */
} raster;

static void project(const raster *r, double x, double y, double z, double out[3])
{
    double xr = r->ca * x - r->sa * y, yr = r->sa * x + r->ca * y;
    out[0] = xr;
    out[1] = -yr * r->se - z * r->ce;
    out[2] = yr * r->ce - z * r->se;
}

/* A flat-shaded triangle; p are world points. */
static void tri(raster *r, const double p[3][3])
{
    double q[3][3], u[3], v[3], nrm[3];
    for (int i = 0; i < 3; i++) {
        project(r, p[i][0], p[i][1], p[i][2], q[i]);
        q[i][0] = q[i][0] * r->s + r->ox;
        q[i][1] = q[i][1] * r->s + r->oy;
    }
    for (int i = 0; i < 3; i++) u[i] = p[1][i] - p[0][i], v[i] = p[2][i] - p[0][i];
    nrm[0] = u[1] * v[2] - u[2] * v[1];
    nrm[1] = u[2] * v[0] - u[0] * v[2];
    nrm[2] = u[0] * v[1] - u[1] * v[0];
    double nl = sqrt(nrm[0] * nrm[0] + nrm[1] * nrm[1] + nrm[2] * nrm[2]);
    if (!(nl > 0)) return;
    static const double light[3] = {-0.45, -0.55, 0.70};
    double d = fabs(nrm[0] * light[0] + nrm[1] * light[1] + nrm[2] * light[2]) / nl;
    double shade = 0.3 + 0.7 * d, zc = (p[0][2] + p[1][2] + p[2][2]) / 3;
    uint8_t c[3];
    img_cmap_rgb(CMAP_VIRIDIS, (float)((zc - r->lo) / (r->hi - r->lo + 1e-12)), c);
    int x0 = (int)floor(fmin(q[0][0], fmin(q[1][0], q[2][0])));
    int x1 = (int)ceil(fmax(q[0][0], fmax(q[1][0], q[2][0])));
    int y0 = (int)floor(fmin(q[0][1], fmin(q[1][1], q[2][1])));
    int y1 = (int)ceil(fmax(q[0][1], fmax(q[1][1], q[2][1])));
    double area = (q[1][0] - q[0][0]) * (q[2][1] - q[0][1]) -
                  (q[2][0] - q[0][0]) * (q[1][1] - q[0][1]);
    if (fabs(area) < 1e-12) return;
    for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < r->h; y++)
        for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < r->w; x++) {
            double px = x + 0.5, py = y + 0.5;
            double w0 = ((q[1][0] - px) * (q[2][1] - py) - (q[2][0] - px) * (q[1][1] - py)) / area;
            double w1 = ((q[2][0] - px) * (q[0][1] - py) - (q[0][0] - px) * (q[2][1] - py)) / area;
            double w2 = 1 - w0 - w1;
            if (w0 < -1e-9 || w1 < -1e-9 || w2 < -1e-9) continue;
            float z = (float)(w0 * q[0][2] + w1 * q[1][2] + w2 * q[2][2]);
            size_t i = (size_t)y * r->w + x;
            if (z >= r->depth[i]) continue;
            r->depth[i] = z;
            for (int k = 0; k < 3; k++) r->rgb[i * 3 + k] = (uint8_t)(c[k] * shade);
        }
}

static void quad(raster *r, const double a[3], const double b[3], const double c[3],
                 const double d[3])
{
    double t1[3][3], t2[3][3];
    memcpy(t1[0], a, sizeof t1[0]), memcpy(t1[1], b, sizeof t1[0]), memcpy(t1[2], c, sizeof t1[0]);
    memcpy(t2[0], a, sizeof t1[0]), memcpy(t2[1], c, sizeof t1[0]), memcpy(t2[2], d, sizeof t1[0]);
    tri(r, t1);
    tri(r, t2);
}

/* Height of pixel (i, j) in the world, the slab's floor outside. */
static double zat(int n, const float *hm, int i, int j, double lo, double ex, double slab)
{
    if (i < 0 || j < 0 || i >= n || j >= n) return 0;
    return slab + (hm[(size_t)i * n + j] - lo) * ex;
}

int fig_write_relief(const char *path, int n, const float *hm, double pitch_mm, double exagg,
                     int w, int h, d2_err *e)
{
    if (n < 1 || n > 4096 || w < 16 || h < 16 || w > 8192 || h > 8192 || !(pitch_mm > 0))
        return d2_fail(e, D2_EUSAGE, "%s: relief of %d x %d pixels drawn at %d x %d (allowed "
                       "1 to 4096 pixels, 16 to 8192 wide and high)", path, n, n, w, h);
    raster r = {w, h, NULL, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    r.rgb = malloc((size_t)w * h * 3);
    r.depth = malloc((size_t)w * h * sizeof *r.depth);
    if (!r.rgb || !r.depth) {
        free(r.rgb);
        free(r.depth);
        return d2_fail(e, D2_EIO, "%s: out of memory", path);
    }
    memset(r.rgb, 255, (size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h; i++) r.depth[i] = INFINITY;
    double az = 35 * M_PI / 180, el = 35 * M_PI / 180;
    r.ca = cos(az), r.sa = sin(az), r.ce = cos(el), r.se = sin(el);
    double lo = INFINITY, hi = -INFINITY, a = n * pitch_mm / 2, slab = 0.04 * a;
    for (size_t i = 0; i < (size_t)n * n; i++) lo = fmin(lo, hm[i]), hi = fmax(hi, hm[i]);
    r.lo = slab, r.hi = slab + (hi - lo) * exagg;
    /* Fit the projected box corners into the picture. */
    double bx0 = INFINITY, bx1 = -INFINITY, by0 = INFINITY, by1 = -INFINITY, q[3];
    for (int c = 0; c < 8; c++) {
        project(&r, c & 1 ? a : -a, c & 2 ? a : -a, c & 4 ? r.hi : 0, q);
        bx0 = fmin(bx0, q[0]), bx1 = fmax(bx1, q[0]), by0 = fmin(by0, q[1]), by1 = fmax(by1, q[1]);
    }
    r.s = fmin((w - 20) / (bx1 - bx0), (h - 20) / (by1 - by0));
    r.ox = w / 2.0 - r.s * (bx0 + bx1) / 2;
    r.oy = h / 2.0 - r.s * (by0 + by1) / 2;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            /* Pixel (i, j): x = column, y = row, both from the centre. */
            double x0 = -a + j * pitch_mm, x1 = x0 + pitch_mm;
            double y0 = -a + i * pitch_mm, y1 = y0 + pitch_mm;
            double z = zat(n, hm, i, j, lo, exagg, slab);
            double A[3] = {x0, y0, z}, B[3] = {x1, y0, z}, C[3] = {x1, y1, z}, D[3] = {x0, y1, z};
            quad(&r, A, B, C, D);
            /* Walls down to each lower neighbour (the slab's floor at the edge). */
            double zn[4] = {zat(n, hm, i - 1, j, lo, exagg, slab), zat(n, hm, i + 1, j, lo, exagg, slab),
                            zat(n, hm, i, j - 1, lo, exagg, slab), zat(n, hm, i, j + 1, lo, exagg, slab)};
            const double *ea[4] = {A, D, A, B}, *eb[4] = {B, C, D, C};
            for (int k = 0; k < 4; k++) {
                if (!(zn[k] < z)) continue;
                double a2[3] = {ea[k][0], ea[k][1], zn[k]}, b2[3] = {eb[k][0], eb[k][1], zn[k]};
                quad(&r, ea[k], eb[k], b2, a2);
            }
        }
    int rc = img_write_rgb8(path, w, h, r.rgb, e);
    free(r.rgb);
    free(r.depth);
    return rc;
}
