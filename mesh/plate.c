/* d2fab mesh: plates = active area + frame + posts, pins, holes and engraved
 * labels, laid out on one rectilinear grid and built as one solid. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "mesh/mesh_int.h"

/* Feature lines closer than this to another line are merged into it (pixel
 * lines win), so no cell is thinner than the corner-gap offset needs. */
#define MERGE_Q 40 /* 4 um */
#define MAX_CELLS 2048 /* D2_MAX_N: the largest model */

void mesh_printer_from_profile(const printer_profile *p, mesh_printer *pr)
{
    memset(pr, 0, sizeof *pr);
    snprintf(pr->name, sizeof pr->name, "%s", p->name);
    memcpy(pr->build_mm, p->build_mm, sizeof pr->build_mm);
    pr->xy_resolution_mm = p->xy_resolution_mm;
    pr->z_step_mm = p->z_step_mm;
    pr->min_feature_mm = p->min_feature_mm;
    pr->pin_clearance_mm = p->pin_clearance_mm;
}

int mesh_printer_from_json(const cJSON *obj, const char *file, const char *path, mesh_printer *pr,
                           d2_err *e)
{
    printer_profile p;
    memset(pr, 0, sizeof *pr);
    int rc = printer_from_json(obj, file, path, &p, e);
    if (rc) return rc;
    mesh_printer_from_profile(&p, pr);
    return 0;
}

void mesh_frame_default(mesh_frame *f, const mesh_printer *pr)
{
    double mf = pr && pr->min_feature_mm > 0 ? pr->min_feature_mm : 0.1;
    f->width_mm = 10.0;
    f->thick_mm = 3.0;
    f->post_mm = 5.0;
    f->pin_mm = 2.0;
    f->pin_len_mm = 1.5;
    f->key_mm = 1.0;
    f->clearance_mm = pr ? pr->pin_clearance_mm : 0.1;
    f->engrave_mm = 0.4;
    f->font_px_mm = fmax(0.5, 2 * mf);
    f->min_feature_mm = mf;
}

/* ------------------------------------------------------------ grid lines */

typedef struct lines {
    int64_t *v; /* value * 2 + (fixed ? 0 : 1): sorts fixed lines first */
    int n, cap;
    int32_t *out;
    int nout;
} lines;

static int line_add(lines *l, int64_t v, int fixed)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 512;
        int64_t *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v * 2 + (fixed ? 0 : 1);
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sorts, drops duplicates and merges lines closer than MERGE_Q into their
 * neighbour, a fixed line always surviving. */
static int line_finish(lines *l)
{
    qsort(l->v, l->n, sizeof *l->v, cmp_i64);
    l->out = malloc(l->n * sizeof *l->out);
    uint8_t *fix = malloc(l->n);
    if (!l->out || !fix) {
        free(fix);
        return -1;
    }
    int n = 0;
    for (int i = 0; i < l->n; i++) {
        int32_t v = (int32_t)(l->v[i] >> 1);
        int fixed = !(l->v[i] & 1);
        if (n && v - l->out[n - 1] < MERGE_Q) {
            if (fixed && !fix[n - 1]) {
                l->out[n - 1] = v;
                fix[n - 1] = 1;
            }
            continue;
        }
        l->out[n] = v;
        fix[n++] = (uint8_t)fixed;
    }
    free(fix);
    l->nout = n;
    return 0;
}

/* Index of the kept line nearest to v. */
static int line_snap(const lines *l, int64_t v)
{
    int lo = 0, hi = l->nout - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (l->out[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    if (lo > 0 && v - l->out[lo - 1] < l->out[lo] - v) lo--;
    return lo;
}

static void lines_free(lines *l)
{
    free(l->v);
    free(l->out);
}

/* ---------------------------------------------------------------- layout */

enum { SET_TOP, SET_BOT, SET_BOTH };

typedef struct feat {
    int64_t x0, y0, x1, y1; /* grid units */
    int what;
    int32_t bot, top;
} feat;

typedef struct layout {
    feat *f;
    int n, cap;
} layout;

static int feat_add(layout *L, int64_t x0, int64_t y0, int64_t x1, int64_t y1, int what,
                    int32_t bot, int32_t top)
{
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 64;
        feat *f = realloc(L->f, cap * sizeof *f);
        if (!f) return -1;
        L->f = f;
        L->cap = cap;
    }
    L->f[L->n++] = (feat){x0, y0, x1, y1, what, bot, top};
    return 0;
}

static int64_t gq(double mm) { return llround(mm / MESH_Q_MM); }
/* heights on every other z unit, so band midpoints are whole units */
static int32_t zq(double mm) { return (int32_t)(2 * llround(mm / (2 * MESH_QZ_MM))); }

/* Adds the pixels of label s as features: text column u spans
 * [tx[u], tx[u + 1]], rows of pxq grid units from y0; mirrored for the datum
 * face. */
static int label_feats(layout *L, const char *s, const int64_t *tx, int64_t y0, int64_t pxq,
                       int mirror, int what, int32_t bot, int32_t top)
{
    int len = (int)strlen(s), wpx = 6 * len - 1;
    for (int ci = 0; ci < len; ci++) {
        const uint8_t *gl = mesh_glyph(s[ci]);
        for (int r = 0; r < 7; r++)
            for (int u = 0; u < 5; u++) {
                if (!(gl[r] >> (4 - u) & 1)) continue;
                int col = 6 * ci + u;
                if (mirror) col = wpx - 1 - col;
                int64_t x0 = tx[col], x1 = tx[col + 1];
                int64_t yb = y0 + (6 - r) * pxq;
                if (feat_add(L, x0, yb, x1, yb + pxq, what, bot, top)) return -1;
            }
    }
    return 0;
}

static int check_label(const char *s, const char *which, d2_err *e)
{
    if (!s) return 0;
    if (!*s || strlen(s) > 32)
        return d2_fail(e, D2_EINPUT, "plate %s label \"%s\": expected 1 to 32 characters", which, s);
    for (const char *p = s; *p; p++)
        if (!mesh_glyph(*p))
            return d2_fail(e, D2_EINPUT,
                           "plate %s label \"%s\": character '%c' is not in the label font "
                           "(A-Z 0-9 - . < > space)",
                           which, s, *p);
    return 0;
}

static int check_pos(double v, double lo, double hi, const char *what, d2_err *e)
{
    if (!isfinite(v) || v < lo || v > hi)
        return d2_fail(e, D2_EINPUT, "plate frame %s %g mm: expected %g to %g mm", what, v, lo, hi);
    return 0;
}

int mesh_build_plate(const mesh_plate *p, mesh **out, mesh_plate_info *info, d2_err *e)
{
    int rc = D2_EINPUT;
    const mesh_frame *f = &p->frame;
    lines lx = {0}, ly = {0};
    layout L = {0};
    int64_t *xl = NULL, *yl = NULL;
    int32_t *bot = NULL, *top = NULL;
    mesh *m = NULL;
    *out = NULL;

    if (p->rows < 1 || p->cols < 1 || p->rows > MAX_CELLS || p->cols > MAX_CELLS)
        return d2_fail(e, D2_EINPUT, "plate of %d x %d cells: expected 1 to %d per side", p->rows,
                       p->cols, MAX_CELLS);
    if (!isfinite(p->pitch_mm) || p->pitch_mm < 0.01 || p->pitch_mm > 100)
        return d2_fail(e, D2_EINPUT, "plate pitch %g mm: expected 0.01 to 100 mm", p->pitch_mm);
    if (check_pos(f->min_feature_mm, 1e-3, 10, "min feature", e) ||
        check_pos(f->width_mm, 1, 200, "width", e) ||
        check_pos(f->thick_mm, 0.1, 100, "thickness", e) ||
        check_pos(f->post_mm, f->min_feature_mm, 200, "post side", e) ||
        check_pos(f->pin_mm, f->min_feature_mm, 200, "pin side", e) ||
        check_pos(f->pin_len_mm, 0.05, 100, "pin length", e) ||
        check_pos(f->key_mm, 0.01, 100, "key offset", e) ||
        check_pos(f->clearance_mm, 0.005, 5, "clearance", e) ||
        check_pos(f->engrave_mm, 0.01, 100, "engrave depth", e) ||
        check_pos(f->font_px_mm, f->min_feature_mm, 50, "label pixel", e))
        return e->code;
    if (!isfinite(p->gap_mm) || p->gap_mm < 0 || p->gap_mm > 10000)
        return d2_fail(e, D2_EINPUT, "plate gap %g mm: expected 0 (no next part) to 10000 mm",
                       p->gap_mm);
    if (check_label(p->label_top, "top", e) || check_label(p->label_bottom, "bottom", e))
        return e->code;

    double mf = f->min_feature_mm, hole = f->pin_mm + 2 * f->clearance_mm;
    double depth = f->pin_len_mm + f->clearance_mm;
    if (f->post_mm + 2 * mf > f->width_mm)
        return d2_fail(e, D2_EINPUT,
                       "post of %g mm does not fit the %g mm frame (needs %g mm with %g mm walls)",
                       f->post_mm, f->width_mm, f->post_mm + 2 * mf, mf);
    if (f->pin_mm + 2 * f->key_mm + 2 * mf > f->post_mm)
        return d2_fail(e, D2_EINPUT,
                       "pin of %g mm (key offset %g mm) does not fit on the %g mm post "
                       "(needs %g mm with a %g mm shoulder)",
                       f->pin_mm, f->key_mm, f->post_mm, f->pin_mm + 2 * f->key_mm + 2 * mf, mf);
    if (p->holes && hole + 2 * f->key_mm + 2 * mf > f->width_mm)
        return d2_fail(e, D2_EINPUT,
                       "pin hole of %g mm (pin %g + 2 x clearance %g, key offset %g) does not fit "
                       "the %g mm frame",
                       hole, f->pin_mm, f->clearance_mm, f->key_mm, f->width_mm);
    if (f->key_mm <= f->clearance_mm)
        return d2_fail(e, D2_EINPUT,
                       "key offset %g mm must exceed the pin clearance %g mm, or a plate turned "
                       "by 90 or 180 degrees would still fit",
                       f->key_mm, f->clearance_mm);
    if (p->holes && depth + mf > f->thick_mm)
        return d2_fail(e, D2_EINPUT,
                       "pin hole %g mm deep (pin length %g + clearance %g) leaves less than %g mm "
                       "of the %g mm frame",
                       depth, f->pin_len_mm, f->clearance_mm, mf, f->thick_mm);
    if ((p->label_top || p->label_bottom) && f->engrave_mm + mf > f->thick_mm)
        return d2_fail(e, D2_EINPUT,
                       "label engraved %g mm deep leaves less than %g mm of the %g mm frame",
                       f->engrave_mm, mf, f->thick_mm);
    if (p->gap_mm > 0 && p->gap_mm < f->thick_mm)
        return d2_fail(e, D2_EINPUT,
                       "gap %g mm to the next part is shorter than the frame thickness %g mm "
                       "(the posts would have negative height)",
                       p->gap_mm, f->thick_mm);

    /* active-area heights */
    size_t ncell = (size_t)p->rows * p->cols;
    double max_top = p->top_mm ? 0 : f->thick_mm;
    for (size_t k = 0; k < ncell; k++) {
        float t = p->top_mm ? p->top_mm[k] : (float)f->thick_mm, b = p->bot_mm ? p->bot_mm[k] : 0;
        if (!isfinite(t) || t < 0 || t > 1000 || !isfinite(b) || b < 0 || b > 1000)
            return d2_fail(e, D2_EINPUT,
                           "height map cell (row %zu, col %zu): %s %g mm; heights must be finite "
                           "and 0 to 1000 mm",
                           k / p->cols, k % p->cols, (!isfinite(t) || t < 0 || t > 1000) ? "top" : "bottom",
                           (!isfinite(t) || t < 0 || t > 1000) ? (double)t : (double)b);
        if (t > b && t > max_top) max_top = t;
    }
    for (int k = 0; k < p->nrects; k++) {
        const mesh_rect *r = p->rects + k;
        if (!isfinite(r->x0_mm + r->x1_mm + r->y0_mm + r->y1_mm + r->bot_mm + r->top_mm) ||
            r->bot_mm < 0 || r->top_mm < 0 || r->bot_mm > 1000 || r->top_mm > 1000 ||
            fabs(r->x0_mm) > 1e4 || fabs(r->x1_mm) > 1e4 || fabs(r->y0_mm) > 1e4 ||
            fabs(r->y1_mm) > 1e4 || r->x1_mm <= r->x0_mm || r->y1_mm <= r->y0_mm)
            return d2_fail(e, D2_EINPUT,
                           "plate rectangle %d: x %g..%g, y %g..%g, z %g..%g mm: expected "
                           "finite, increasing, within 10 m, heights 0 to 1000 mm",
                           k, r->x0_mm, r->x1_mm, r->y0_mm, r->y1_mm, r->bot_mm, r->top_mm);
        if (r->top_mm > r->bot_mm && r->top_mm > max_top) max_top = r->top_mm;
    }
    if (p->gap_mm > 0 && max_top >= p->gap_mm)
        return d2_fail(e, D2_EINPUT,
                       "the active area reaches %g mm, but the next part's datum face is at the "
                       "gap, %g mm",
                       max_top, p->gap_mm);

    /* pixel lines */
    int64_t W = gq(f->width_mm);
    xl = malloc((p->cols + 1) * sizeof *xl);
    yl = malloc((p->rows + 1) * sizeof *yl);
    if (!xl || !yl) goto oom;
    for (int j = 0; j <= p->cols; j++) xl[j] = W + gq(j * p->pitch_mm);
    for (int i = 0; i <= p->rows; i++) yl[i] = W + gq(i * p->pitch_mm);
    int64_t Sx = xl[p->cols] + W, Sy = yl[p->rows] + W;
    if (Sx > 20000000 || Sy > 20000000) {
        rc = d2_fail(e, D2_EINPUT, "plate %.1f x %.1f mm: larger than the 2000 mm the builder allows",
                     Sx * MESH_Q_MM, Sy * MESH_Q_MM);
        goto fail;
    }
    double sx = Sx * MESH_Q_MM, sy = Sy * MESH_Q_MM;
    double height = p->gap_mm > 0 ? p->gap_mm + f->pin_len_mm : fmax(max_top, f->thick_mm);
    const double *bv = p->printer.build_mm;
    if (bv[0] > 0 && bv[1] > 0 && bv[2] > 0 &&
        (!((sx <= bv[0] && sy <= bv[1]) || (sx <= bv[1] && sy <= bv[0])) || height > bv[2])) {
        rc = d2_fail(e, D2_EINPUT,
                       "plate %.1f x %.1f x %.1f mm does not fit the build volume %g x %g x %g mm "
                       "of printer %s",
                       sx, sy, height, bv[0], bv[1], bv[2],
                       p->printer.name[0] ? p->printer.name : "(unnamed)");
        goto fail;
    }

    int32_t T = zq(f->thick_mm), G = zq(p->gap_mm), PT = zq(p->gap_mm + f->pin_len_mm);
    int32_t D = zq(depth), E = zq(f->engrave_mm);

    /* posts, pins and holes in the four corner squares */
    int64_t half = W / 2;
    int64_t cx[4] = {half, Sx - half, Sx - half, half}, cy[4] = {half, half, Sy - half, Sy - half};
    for (int c = 0; c < 4; c++) {
        int64_t px = cx[c] + (c == 3 ? gq(f->key_mm) : 0); /* the key: top-left pin */
        int64_t ps = gq(f->post_mm) / 2, pn = gq(f->pin_mm) / 2, hs = gq(hole) / 2;
        if (p->gap_mm > 0) {
            if (feat_add(&L, cx[c] - ps, cy[c] - ps, cx[c] + ps, cy[c] + ps, SET_TOP, 0, G) ||
                feat_add(&L, px - pn, cy[c] - pn, px + pn, cy[c] + pn, SET_TOP, 0, PT))
                goto oom;
        }
        if (p->holes && feat_add(&L, px - hs, cy[c] - hs, px + hs, cy[c] + hs, SET_BOT, D, 0))
            goto oom;
    }

    /* labels: the part label in the band y < W, read from +z; the datum
     * label mirrored in the band y > S - W, read from below. Font pixels are
     * whole pitches when that at most doubles them, so the strokes fall on
     * pixel lines and add no grid line across the active area. */
    int kpx = (int)ceil(f->font_px_mm / p->pitch_mm - 1e-9);
    int aligned = kpx * p->pitch_mm <= 2 * f->font_px_mm + 1e-9;
    double px_mm = aligned ? kpx * p->pitch_mm : f->font_px_mm;
    int64_t pxq = gq(px_mm);
    double margin = fmax(mf, f->font_px_mm);
    const char *lab[2] = {p->label_top, p->label_bottom};
    for (int s = 0; s < 2; s++) {
        if (!lab[s]) continue;
        int wpx = 6 * (int)strlen(lab[s]) - 1;
        int j0 = (p->cols - wpx * kpx) / 2;
        int fits = aligned ? j0 >= 1 && (j0 * p->pitch_mm >= margin)
                           : wpx * px_mm + 2 * margin <= p->cols * p->pitch_mm;
        if (!fits || 7 * px_mm + 2 * margin > f->width_mm) {
            rc = d2_fail(e, D2_EINPUT,
                           "label \"%s\" (%.1f x %.1f mm at %.2f mm per font pixel) does not fit "
                           "the frame band between the posts (%.1f x %.1f mm, %.1f mm margins)",
                           lab[s], wpx * px_mm, 7 * px_mm, px_mm, p->cols * p->pitch_mm,
                           f->width_mm, margin);
            goto fail;
        }
        int64_t tx[6 * 32];
        for (int u = 0; u <= wpx; u++)
            tx[u] = aligned ? xl[j0 + u * kpx] : Sx / 2 - (wpx * pxq) / 2 + u * pxq;
        int64_t y0 = (W - 7 * pxq) / 2 + (s ? Sy - W : 0);
        if (label_feats(&L, lab[s], tx, y0, pxq, s, s ? SET_BOT : SET_TOP, E, T - E)) goto oom;
    }

    /* active-area rectangles, relative to the optical axis */
    double ax = (xl[0] + xl[p->cols]) * 0.5 * MESH_Q_MM, ay = (yl[0] + yl[p->rows]) * 0.5 * MESH_Q_MM;
    for (int k = 0; k < p->nrects; k++) {
        const mesh_rect *r = p->rects + k;
        int64_t x0 = gq(ax + r->x0_mm), x1 = gq(ax + r->x1_mm);
        int64_t y0 = gq(ay + r->y0_mm), y1 = gq(ay + r->y1_mm);
        if (x0 < 0 || y0 < 0 || x1 > Sx || y1 > Sy) {
            rc = d2_fail(e, D2_EINPUT,
                           "plate rectangle %d (x %g..%g, y %g..%g mm from the axis) leaves the "
                           "plate (%.1f x %.1f mm)",
                           k, r->x0_mm, r->x1_mm, r->y0_mm, r->y1_mm, sx, sy);
            goto fail;
        }
        if (feat_add(&L, x0, y0, x1, y1, SET_BOTH, zq(r->bot_mm), zq(r->top_mm))) goto oom;
    }

    /* the grid: pixel and outline lines fixed, feature lines merged in */
    if (line_add(&lx, 0, 1) || line_add(&lx, Sx, 1) || line_add(&ly, 0, 1) ||
        line_add(&ly, Sy, 1))
        goto oom;
    for (int j = 0; j <= p->cols; j++)
        if (line_add(&lx, xl[j], 1)) goto oom;
    for (int i = 0; i <= p->rows; i++)
        if (line_add(&ly, yl[i], 1)) goto oom;
    for (int k = 0; k < L.n; k++)
        if (line_add(&lx, L.f[k].x0, 0) || line_add(&lx, L.f[k].x1, 0) ||
            line_add(&ly, L.f[k].y0, 0) || line_add(&ly, L.f[k].y1, 0))
            goto oom;
    if (line_finish(&lx) || line_finish(&ly)) goto oom;
    int nx = lx.nout - 1, ny = ly.nout - 1;
    bot = malloc((size_t)nx * ny * sizeof *bot);
    top = malloc((size_t)nx * ny * sizeof *top);
    int *colpix = malloc(nx * sizeof *colpix), *rowpix = malloc(ny * sizeof *rowpix);
    if (!bot || !top || !colpix || !rowpix) {
        free(colpix);
        free(rowpix);
        goto oom;
    }
    for (int c = 0, j = 0; c < nx; c++) {
        while (j < p->cols && xl[j + 1] <= lx.out[c]) j++;
        colpix[c] = (lx.out[c] >= xl[0] && lx.out[c] < xl[p->cols]) ? j : -1;
    }
    for (int r = 0, i = 0; r < ny; r++) {
        while (i < p->rows && yl[i + 1] <= ly.out[r]) i++;
        rowpix[r] = (ly.out[r] >= yl[0] && ly.out[r] < yl[p->rows]) ? i : -1;
    }
    for (int r = 0; r < ny; r++)
        for (int c = 0; c < nx; c++) {
            size_t k = (size_t)r * nx + c;
            if (rowpix[r] >= 0 && colpix[c] >= 0) {
                size_t q = (size_t)rowpix[r] * p->cols + colpix[c];
                top[k] = p->top_mm ? zq(p->top_mm[q]) : T;
                bot[k] = p->bot_mm ? zq(p->bot_mm[q]) : 0;
            } else {
                top[k] = T;
                bot[k] = 0;
            }
        }
    free(colpix);
    free(rowpix);
    /* active-area rectangles first, then the frame features over them */
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < L.n; k++) {
            const feat *ft = L.f + k;
            if ((ft->what == SET_BOTH) != (pass == 0)) continue;
            int c0 = line_snap(&lx, ft->x0), c1 = line_snap(&lx, ft->x1);
            int r0 = line_snap(&ly, ft->y0), r1 = line_snap(&ly, ft->y1);
            for (int r = r0; r < r1; r++)
                for (int c = c0; c < c1; c++) {
                    size_t q = (size_t)r * nx + c;
                    if (ft->what != SET_BOT) top[q] = ft->top;
                    if (ft->what != SET_TOP) bot[q] = ft->bot;
                }
        }

    m = mesh_new(e);
    if (!m) {
        rc = D2_EIO;
        goto fail;
    }
    mesh_grid g = {nx, ny, lx.out, ly.out, bot, top};
    if ((rc = mesh_add_grid(m, &g, e))) goto fail;
    if (info) {
        memset(info, 0, sizeof *info);
        __int128 v = 0;
        int32_t zmax = 0;
        for (int r = 0; r < ny; r++)
            for (int c = 0; c < nx; c++) {
                size_t q = (size_t)r * nx + c;
                if (top[q] <= bot[q]) continue;
                if (top[q] > zmax) zmax = top[q];
                v += (__int128)(lx.out[c + 1] - lx.out[c]) * (ly.out[r + 1] - ly.out[r]) *
                     (top[q] - bot[q]);
            }
        info->size_mm[0] = sx;
        info->size_mm[1] = sy;
        info->size_mm[2] = zmax * MESH_QZ_MM;
        info->frame_top_mm = T * MESH_QZ_MM;
        info->post_top_mm = p->gap_mm > 0 ? G * MESH_QZ_MM : 0;
        info->max_top_mm = max_top;
        info->ideal_volume_mm3 = (double)v * MESH_Q_MM * MESH_Q_MM * MESH_QZ_MM;
        info->axis_mm[0] = ax;
        info->axis_mm[1] = ay;
        info->grid_nx = nx;
        info->grid_ny = ny;
    }
    *out = m;
    m = NULL;
    rc = 0;
    goto fail;
oom:
    rc = d2_fail(e, D2_EIO, "out of memory laying out a %d x %d plate", p->rows, p->cols);
fail:
    mesh_free(m);
    lines_free(&lx);
    lines_free(&ly);
    free(L.f);
    free(xl);
    free(yl);
    free(bot);
    free(top);
    return rc;
}
