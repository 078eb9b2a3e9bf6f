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
    printer_frame_default(f, pr && pr->min_feature_mm > 0 ? pr->min_feature_mm : 0.1,
                          pr && pr->pin_clearance_mm > 0 ? pr->pin_clearance_mm : 0.1);
}

/* ------------------------------------------------------------ grid lines */

typedef struct lines {
    int64_t *v; /* value * 2 + (fixed ? 0 : 1): sorts fixed lines first */
    int n;
    size_t cap;
    int32_t *out;
    int nout;
} lines;

static int line_add(lines *l, int64_t v, int fixed)
{
    if (d2_grow(&l->v, &l->cap, (size_t)l->n, sizeof *l->v, 512)) return -1;
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
    int n;
    size_t cap;
} layout;

static int feat_add(layout *L, int64_t x0, int64_t y0, int64_t x1, int64_t y1, int what,
                    int32_t bot, int32_t top)
{
    if (d2_grow(&L->f, &L->cap, (size_t)L->n, sizeof *L->f, 64)) return -1;
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
                           "(A-Z 0-9 - + . < > space)",
                           which, s, *p);
    return 0;
}

static int check_pos(double v, double lo, double hi, const char *what, d2_err *e)
{
    if (!isfinite(v) || v < lo || v > hi)
        return d2_fail(e, D2_EINPUT, "plate frame %s %g mm: expected %g to %g mm", what, v, lo, hi);
    return 0;
}

/* The sizes of the frame, its features and labels, and that they fit. */
static int plate_check_frame(const mesh_plate *p, d2_err *e)
{
    const mesh_frame *f = &p->frame;
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
                       "post of %g mm does not fit the %g mm frame (needs %g mm with %g mm walls): "
                       "use --frame-mm %g or more, or a smaller --post-mm",
                       f->post_mm, f->width_mm, f->post_mm + 2 * mf, mf, f->post_mm + 2 * mf);
    if (f->pin_mm + 2 * f->key_mm + 2 * mf > f->post_mm)
        return d2_fail(e, D2_EINPUT,
                       "pin of %g mm (key offset %g mm) does not fit on the %g mm post "
                       "(needs %g mm with a %g mm shoulder)",
                       f->pin_mm, f->key_mm, f->post_mm, f->pin_mm + 2 * f->key_mm + 2 * mf, mf);
    if (p->holes && hole + 2 * f->key_mm + 2 * mf > f->width_mm)
        return d2_fail(e, D2_EINPUT,
                       "pin hole of %g mm (pin %g + 2 x clearance %g, key offset %g) does not fit "
                       "the %g mm frame: use --frame-mm %g or more",
                       hole, f->pin_mm, f->clearance_mm, f->key_mm, f->width_mm,
                       hole + 2 * f->key_mm + 2 * mf);
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
    return 0;
}

/* The active area's heights and rectangles; *max_top: the highest top. */
static int plate_check_heights(const mesh_plate *p, double *max_top_out, d2_err *e)
{
    const mesh_frame *f = &p->frame;
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
    *max_top_out = max_top;
    return 0;
}

/* What mesh_build_plate lays out, in grid units. */
typedef struct plate_job {
    const mesh_plate *p;
    double max_top;
    int64_t *xl, *yl;    /* pixel lines */
    int64_t W, Sx, Sy;   /* frame width, plate size */
    double sx, sy;       /* plate size, mm */
    int32_t T, G, PT, D, E; /* frame top, post top, pin top, hole depth, engraving */
    layout L;
    lines lx, ly;
    int nx, ny;
    int32_t *bot, *top;  /* nx x ny cells */
} plate_job;

static int plate_oom(const mesh_plate *p, d2_err *e)
{
    return d2_fail(e, D2_EIO, "out of memory laying out a %d x %d plate", p->rows, p->cols);
}

/* The pixel lines, the plate's size against the printer, the z levels. */
static int plate_outline(plate_job *j, d2_err *e)
{
    const mesh_plate *p = j->p;
    const mesh_frame *f = &p->frame;
    int64_t W = j->W = gq(f->width_mm);
    j->xl = malloc((p->cols + 1) * sizeof *j->xl);
    j->yl = malloc((p->rows + 1) * sizeof *j->yl);
    if (!j->xl || !j->yl) return plate_oom(p, e);
    for (int c = 0; c <= p->cols; c++) j->xl[c] = W + gq(c * p->pitch_mm);
    for (int i = 0; i <= p->rows; i++) j->yl[i] = W + gq(i * p->pitch_mm);
    j->Sx = j->xl[p->cols] + W;
    j->Sy = j->yl[p->rows] + W;
    if (j->Sx > 20000000 || j->Sy > 20000000)
        return d2_fail(e, D2_EINPUT, "plate %.1f x %.1f mm: larger than the 2000 mm the builder "
                       "allows", j->Sx * MESH_Q_MM, j->Sy * MESH_Q_MM);
    double sx = j->sx = j->Sx * MESH_Q_MM, sy = j->sy = j->Sy * MESH_Q_MM;
    double height = p->gap_mm > 0 ? p->gap_mm + f->pin_len_mm : fmax(j->max_top, f->thick_mm);
    const double *bv = p->printer.build_mm;
    if (bv[0] > 0 && bv[1] > 0 && bv[2] > 0 &&
        (!((sx <= bv[0] && sy <= bv[1]) || (sx <= bv[1] && sy <= bv[0])) || height > bv[2]))
        return d2_fail(e, D2_EINPUT,
                       "plate %.1f x %.1f x %.1f mm does not fit the build volume %g x %g x %g mm "
                       "of printer %s",
                       sx, sy, height, bv[0], bv[1], bv[2],
                       p->printer.name[0] ? p->printer.name : "(unnamed)");
    j->T = zq(f->thick_mm);
    j->G = zq(p->gap_mm);
    j->PT = zq(p->gap_mm + f->pin_len_mm);
    j->D = zq(f->pin_len_mm + f->clearance_mm);
    j->E = zq(f->engrave_mm);
    return 0;
}

/* Posts, pins and holes in the four corner squares. */
static int plate_corners(plate_job *j, d2_err *e)
{
    const mesh_plate *p = j->p;
    const mesh_frame *f = &p->frame;
    double hole = f->pin_mm + 2 * f->clearance_mm;
    int64_t half = j->W / 2, Sx = j->Sx, Sy = j->Sy;
    int64_t cx[4] = {half, Sx - half, Sx - half, half}, cy[4] = {half, half, Sy - half, Sy - half};
    for (int c = 0; c < 4; c++) {
        int64_t px = cx[c] + (c == 3 ? gq(f->key_mm) : 0); /* the key: top-left pin */
        int64_t ps = gq(f->post_mm) / 2, pn = gq(f->pin_mm) / 2, hs = gq(hole) / 2;
        if (p->gap_mm > 0) {
            if (feat_add(&j->L, cx[c] - ps, cy[c] - ps, cx[c] + ps, cy[c] + ps, SET_TOP, 0, j->G) ||
                feat_add(&j->L, px - pn, cy[c] - pn, px + pn, cy[c] + pn, SET_TOP, 0, j->PT))
                return plate_oom(p, e);
        }
        if (p->holes && feat_add(&j->L, px - hs, cy[c] - hs, px + hs, cy[c] + hs, SET_BOT, j->D, 0))
            return plate_oom(p, e);
    }
    return 0;
}

/* Labels: the part label in the band y < W, read from +z; the datum label
 * mirrored in the band y > S - W, read from below. Font pixels are whole
 * pitches when that at most doubles them and the label still fits, so the
 * strokes fall on pixel lines and add no grid line across the active area;
 * otherwise the asked pixel is used as is. */
static int plate_labels(plate_job *j, d2_err *e)
{
    const mesh_plate *p = j->p;
    const mesh_frame *f = &p->frame;
    double margin = fmax(f->min_feature_mm, f->font_px_mm), act = p->cols * p->pitch_mm;
    int kpx = (int)ceil(f->font_px_mm / p->pitch_mm - 1e-9);
    const char *lab[2] = {p->label_top, p->label_bottom};
    for (int s = 0; s < 2; s++) {
        if (!lab[s]) continue;
        int wpx = 6 * (int)strlen(lab[s]) - 1;
        int j0 = (p->cols - wpx * kpx) / 2;
        int aligned = kpx * p->pitch_mm <= 2 * f->font_px_mm + 1e-9 && j0 >= 1 &&
                      j0 * p->pitch_mm >= margin &&
                      7 * kpx * p->pitch_mm + 2 * margin <= f->width_mm;
        double px_mm = aligned ? kpx * p->pitch_mm : f->font_px_mm;
        int64_t pxq = gq(px_mm), W = j->W;
        if (wpx * px_mm + 2 * margin > act)
            return d2_fail(e, D2_EINPUT,
                           "label \"%s\" (%.1f x %.1f mm at %.2f mm per font pixel) does not fit "
                           "the length of the frame band between the posts (%.1f mm with %.1f mm "
                           "margins): use a shorter label or a smaller --font-px-mm (at least "
                           "the %.2f mm minimum feature); --frame-mm widens the band, not its "
                           "length",
                           lab[s], wpx * px_mm, 7 * px_mm, px_mm, act, margin,
                           f->min_feature_mm);
        if (7 * px_mm + 2 * margin > f->width_mm)
            return d2_fail(e, D2_EINPUT,
                           "label \"%s\" (%.1f mm tall at %.2f mm per font pixel, %.1f mm "
                           "margins) does not fit the %.1f mm frame band: use --frame-mm %.1f "
                           "or more, or a smaller --font-px-mm",
                           lab[s], 7 * px_mm, px_mm, margin, f->width_mm,
                           ceil((7 * px_mm + 2 * margin) * 10 - 1e-9) / 10);
        int64_t tx[6 * 32];
        for (int u = 0; u <= wpx; u++)
            tx[u] = aligned ? j->xl[j0 + u * kpx] : j->Sx / 2 - (wpx * pxq) / 2 + u * pxq;
        int64_t y0 = (W - 7 * pxq) / 2 + (s ? j->Sy - W : 0);
        if (label_feats(&j->L, lab[s], tx, y0, pxq, s, s ? SET_BOT : SET_TOP, j->E, j->T - j->E))
            return plate_oom(p, e);
    }
    return 0;
}

/* Active-area rectangles, relative to the optical axis. */
static int plate_rects(plate_job *j, d2_err *e)
{
    const mesh_plate *p = j->p;
    double ax = (j->xl[0] + j->xl[p->cols]) * 0.5 * MESH_Q_MM;
    double ay = (j->yl[0] + j->yl[p->rows]) * 0.5 * MESH_Q_MM;
    for (int k = 0; k < p->nrects; k++) {
        const mesh_rect *r = p->rects + k;
        int64_t x0 = gq(ax + r->x0_mm), x1 = gq(ax + r->x1_mm);
        int64_t y0 = gq(ay + r->y0_mm), y1 = gq(ay + r->y1_mm);
        if (x0 < 0 || y0 < 0 || x1 > j->Sx || y1 > j->Sy)
            return d2_fail(e, D2_EINPUT,
                           "plate rectangle %d (x %g..%g, y %g..%g mm from the axis) leaves the "
                           "plate (%.1f x %.1f mm)",
                           k, r->x0_mm, r->x1_mm, r->y0_mm, r->y1_mm, j->sx, j->sy);
        if (feat_add(&j->L, x0, y0, x1, y1, SET_BOTH, zq(r->bot_mm), zq(r->top_mm)))
            return plate_oom(p, e);
    }
    return 0;
}

/* The grid: pixel and outline lines fixed, feature lines merged in; every
 * cell starts at the pixel's heights or the frame's. */
static int plate_grid(plate_job *j, d2_err *e)
{
    const mesh_plate *p = j->p;
    lines *lx = &j->lx, *ly = &j->ly;
    if (line_add(lx, 0, 1) || line_add(lx, j->Sx, 1) || line_add(ly, 0, 1) ||
        line_add(ly, j->Sy, 1))
        return plate_oom(p, e);
    for (int c = 0; c <= p->cols; c++)
        if (line_add(lx, j->xl[c], 1)) return plate_oom(p, e);
    for (int i = 0; i <= p->rows; i++)
        if (line_add(ly, j->yl[i], 1)) return plate_oom(p, e);
    for (int k = 0; k < j->L.n; k++)
        if (line_add(lx, j->L.f[k].x0, 0) || line_add(lx, j->L.f[k].x1, 0) ||
            line_add(ly, j->L.f[k].y0, 0) || line_add(ly, j->L.f[k].y1, 0))
            return plate_oom(p, e);
    if (line_finish(lx) || line_finish(ly)) return plate_oom(p, e);
    int nx = j->nx = lx->nout - 1, ny = j->ny = ly->nout - 1;
    j->bot = malloc((size_t)nx * ny * sizeof *j->bot);
    j->top = malloc((size_t)nx * ny * sizeof *j->top);
    int *colpix = malloc(nx * sizeof *colpix), *rowpix = malloc(ny * sizeof *rowpix);
    if (!j->bot || !j->top || !colpix || !rowpix) {
        free(colpix);
        free(rowpix);
        return plate_oom(p, e);
    }
    for (int c = 0, q = 0; c < nx; c++) {
        while (q < p->cols && j->xl[q + 1] <= lx->out[c]) q++;
        colpix[c] = (lx->out[c] >= j->xl[0] && lx->out[c] < j->xl[p->cols]) ? q : -1;
    }
    for (int r = 0, i = 0; r < ny; r++) {
        while (i < p->rows && j->yl[i + 1] <= ly->out[r]) i++;
        rowpix[r] = (ly->out[r] >= j->yl[0] && ly->out[r] < j->yl[p->rows]) ? i : -1;
    }
    for (int r = 0; r < ny; r++)
        for (int c = 0; c < nx; c++) {
            size_t k = (size_t)r * nx + c;
            if (rowpix[r] >= 0 && colpix[c] >= 0) {
                size_t q = (size_t)rowpix[r] * p->cols + colpix[c];
                j->top[k] = p->top_mm ? zq(p->top_mm[q]) : j->T;
                j->bot[k] = p->bot_mm ? zq(p->bot_mm[q]) : 0;
            } else {
                j->top[k] = j->T;
                j->bot[k] = 0;
            }
        }
    free(colpix);
    free(rowpix);
    return 0;
}

/* The features onto the cells: active-area rectangles first, then the frame
 * features over them. */
static void plate_paint(plate_job *j)
{
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < j->L.n; k++) {
            const feat *ft = j->L.f + k;
            if ((ft->what == SET_BOTH) != (pass == 0)) continue;
            int c0 = line_snap(&j->lx, ft->x0), c1 = line_snap(&j->lx, ft->x1);
            int r0 = line_snap(&j->ly, ft->y0), r1 = line_snap(&j->ly, ft->y1);
            for (int r = r0; r < r1; r++)
                for (int c = c0; c < c1; c++) {
                    size_t q = (size_t)r * j->nx + c;
                    if (ft->what != SET_BOT) j->top[q] = ft->top;
                    if (ft->what != SET_TOP) j->bot[q] = ft->bot;
                }
        }
}

static void plate_info(const plate_job *j, mesh_plate_info *info)
{
    const mesh_plate *p = j->p;
    memset(info, 0, sizeof *info);
    __int128 v = 0;
    int32_t zmax = 0;
    for (int r = 0; r < j->ny; r++)
        for (int c = 0; c < j->nx; c++) {
            size_t q = (size_t)r * j->nx + c;
            if (j->top[q] <= j->bot[q]) continue;
            if (j->top[q] > zmax) zmax = j->top[q];
            v += (__int128)(j->lx.out[c + 1] - j->lx.out[c]) * (j->ly.out[r + 1] - j->ly.out[r]) *
                 (j->top[q] - j->bot[q]);
        }
    info->size_mm[0] = j->sx;
    info->size_mm[1] = j->sy;
    info->size_mm[2] = zmax * MESH_QZ_MM;
    info->frame_top_mm = j->T * MESH_QZ_MM;
    info->post_top_mm = p->gap_mm > 0 ? j->G * MESH_QZ_MM : 0;
    info->max_top_mm = j->max_top;
    info->ideal_volume_mm3 = (double)v * MESH_Q_MM * MESH_Q_MM * MESH_QZ_MM;
    info->axis_mm[0] = (j->xl[0] + j->xl[p->cols]) * 0.5 * MESH_Q_MM;
    info->axis_mm[1] = (j->yl[0] + j->yl[p->rows]) * 0.5 * MESH_Q_MM;
    info->grid_nx = j->nx;
    info->grid_ny = j->ny;
}

int mesh_build_plate(const mesh_plate *p, mesh **out, mesh_plate_info *info, d2_err *e)
{
    plate_job j = {p};
    mesh *m = NULL;
    int rc;
    *out = NULL;
    if ((rc = plate_check_frame(p, e)) || (rc = plate_check_heights(p, &j.max_top, e)))
        return rc;
    if ((rc = plate_outline(&j, e)) || (rc = plate_corners(&j, e)) ||
        (rc = plate_labels(&j, e)) || (rc = plate_rects(&j, e)) || (rc = plate_grid(&j, e)))
        goto done;
    plate_paint(&j);
    if (!(m = mesh_new(e))) {
        rc = D2_EIO;
        goto done;
    }
    mesh_grid g = {j.nx, j.ny, j.lx.out, j.ly.out, j.bot, j.top};
    if ((rc = mesh_add_grid(m, &g, e))) goto done;
    if (info) plate_info(&j, info);
    *out = m;
    m = NULL;
done:
    mesh_free(m);
    lines_free(&j.lx);
    lines_free(&j.ly);
    free(j.L.f);
    free(j.xl);
    free(j.yl);
    free(j.bot);
    free(j.top);
    return rc;
}
