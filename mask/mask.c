/* d2fab mask: binarising, narrow openings, islands and bridges, pinches,
 * previews. The algorithm is described at the top of mesh/mask.h. */
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/image.h"
#include "mask/mask.h"

const uint8_t mask_class_rgb[MASK_NCLASS][3] = {
    [MASK_OPAQUE] = {0, 0, 0},      [MASK_OPEN] = {255, 255, 255},
    [MASK_ISLAND] = {40, 90, 255},  [MASK_BRIDGE] = {230, 30, 30},
    [MASK_NARROW] = {255, 160, 0},  [MASK_PINCH] = {230, 0, 230},
};

int mask_map_alloc(mask_map *m, int rows, int cols, d2_err *e)
{
    memset(m, 0, sizeof *m);
    if (rows < 1 || cols < 1 || (long)rows * cols > (long)D2_MAX_N * D2_MAX_N)
        return d2_fail(e, D2_EINPUT, "mask of %d x %d pixels: allowed 1..%d per side", rows, cols,
                       D2_MAX_N);
    size_t n = (size_t)rows * cols;
    m->rows = rows;
    m->cols = cols;
    m->amp = d2_calloc(n, sizeof *m->amp, "mask amplitude", e);
    m->open0 = d2_calloc(n, 1, "mask", e);
    m->open = d2_calloc(n, 1, "mask", e);
    m->cls = d2_calloc(n, 1, "mask classes", e);
    if (!m->amp || !m->open0 || !m->open || !m->cls) {
        mask_map_free(m);
        return D2_EIO;
    }
    return 0;
}

void mask_map_free(mask_map *m)
{
    if (!m) return;
    free(m->amp);
    free(m->open0);
    free(m->open);
    free(m->cls);
    memset(m, 0, sizeof *m);
}

int mask_min_px(double min_feature_mm, double pitch_mm)
{
    if (!(min_feature_mm > 0) || !(pitch_mm > 0)) return 1;
    /* the small slack keeps 0.8 / 0.4 at 2 despite rounding */
    int w = (int)ceil(min_feature_mm / pitch_mm - 1e-9);
    return w < 1 ? 1 : w;
}

/* ------------------------------------------------------------ the image */

int mask_check_image(const d2_geom *g, const float *img, int rows, int cols, double t,
                     double max_px_per_pitch, const char *name, d2_err *e)
{
    if (rows < 1 || cols < 1)
        return d2_fail(e, D2_EINPUT, "%s: image of %d x %d pixels: nothing to cut", name, rows,
                       cols);
    if (!(t > 0 && t < 1))
        return d2_fail(e, D2_EINPUT, "%s: threshold %g: allowed (0, 1), a fraction of the "
                       "brightest pixel", name, t);
    double plane = g->n * g->pitch_mm;
    if (g->aperture_mm > plane * (1 + 1e-9))
        return d2_fail(e, D2_EINPUT, "%s: the model's input aperture (input.aperture_mm %.4g) "
                       "is larger than its input plane (%d x %.4g mm = %.4g mm): the digit would "
                       "be cropped", name, g->aperture_mm, g->n, g->pitch_mm, plane);
    if (max_px_per_pitch > 0) {
        int side = rows > cols ? rows : cols;
        double per = side * g->pitch_mm / g->aperture_mm;
        if (per > max_px_per_pitch * (1 + 1e-9)) {
            int plane_px = (int)floor(g->aperture_mm / g->pitch_mm + 1e-9);
            return d2_fail(e, D2_EINPUT, "%s: a %d x %d image spread over the %.4g mm aperture "
                           "(%d plane pixels of %.4g mm) puts %.3g image pixels on each plane "
                           "pixel; at most %.3g allowed, because the network's bilinear "
                           "resampling would skip the detail between its samples: scale the "
                           "image to at most %d pixels on its longer side", name, cols, rows,
                           g->aperture_mm, plane_px, g->pitch_mm, per, max_px_per_pitch,
                           (int)floor(max_px_per_pitch * g->aperture_mm / g->pitch_mm + 1e-9));
        }
    }
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < (size_t)rows * cols; i++) {
        float v = img[i];
        if (!(v >= 0 && v <= 1))
            return d2_fail(e, D2_EINPUT, "%s: pixel (row %zu, column %zu) is %g: allowed 0..1",
                           name, i / cols, i % cols, v);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    if (hi <= 0)
        return d2_fail(e, D2_EINPUT, "%s: the image is empty (every pixel is 0): no digit to cut",
                       name);
    if (lo >= t * hi)
        return d2_fail(e, D2_EINPUT, "%s: the image is all on: its darkest pixel (%.3g) is at or "
                       "above the threshold (%.3g x the brightest, %.3g), so the whole square "
                       "would be open; a mask needs a bright digit on a dark background", name,
                       lo, t, t * hi);
    /* a dark digit on a bright background would cut the background out */
    long border = 0, bright = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            if (r == 0 || c == 0 || r == rows - 1 || c == cols - 1) {
                border++;
                bright += img[(size_t)r * cols + c] >= t * hi;
            }
    if (2 * bright > border)
        return d2_fail(e, D2_EINPUT, "%s: the image looks inverted: %ld of its %ld edge pixels "
                       "are at or above the threshold; a mask needs a bright digit on a dark "
                       "background (invert the image)", name, bright, border);
    return 0;
}

int mask_binarise(const d2_geom *g, const float *img, int rows, int cols, double t, mask_map *m,
                  const char *name, d2_err *e)
{
    if (m->rows != g->n || m->cols != g->n)
        return d2_fail(e, D2_EINPUT, "%s: mask of %d x %d pixels for a %d x %d input plane", name,
                       m->rows, m->cols, g->n, g->n);
    input_from_image(g, img, rows, cols, m->amp);
    size_t n = (size_t)g->n * g->n;
    float hi = 0;
    for (size_t i = 0; i < n; i++)
        if (m->amp[i] > hi) hi = m->amp[i];
    if (!(hi > 0))
        return d2_fail(e, D2_EINPUT, "%s: no part of the image falls on the input plane", name);
    float cut = (float)(t * hi);
    for (size_t i = 0; i < n; i++) {
        m->open0[i] = m->open[i] = m->amp[i] >= cut;
        m->cls[i] = m->open[i] ? MASK_OPEN : MASK_OPAQUE;
    }
    return 0;
}

/* ------------------------------------------------ morphology on squares */

/* cov[i] = 1 where pixel i lies in a w x w square whose pixels all satisfy
 * in != 0, the outside of the grid counting as `outside`. Uses summed-area
 * tables on the grid padded by w - 1. Returns 0 or -1 (memory). */
static int square_cover(const uint8_t *in, int rows, int cols, int w, int outside, uint8_t *cov)
{
    int p = w - 1, R = rows + 2 * p, C = cols + 2 * p;
    int ar = R - w + 1, ac = C - w + 1; /* anchors (top-left corners) */
    int32_t *S = calloc((size_t)(R + 1) * (C + 1), sizeof *S);
    int32_t *A = calloc((size_t)(ar + 1) * (ac + 1), sizeof *A);
    if (!S || !A) {
        free(S);
        free(A);
        return -1;
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            int r = i - p, c = j - p;
            int v = (r < 0 || c < 0 || r >= rows || c >= cols) ? outside
                                                              : in[(size_t)r * cols + c] != 0;
            S[(size_t)(i + 1) * (C + 1) + j + 1] = v + S[(size_t)i * (C + 1) + j + 1] +
                                                   S[(size_t)(i + 1) * (C + 1) + j] -
                                                   S[(size_t)i * (C + 1) + j];
        }
    /* A: prefix sums of the "anchor square is full" indicator */
    for (int i = 0; i < ar; i++)
        for (int j = 0; j < ac; j++) {
            int32_t s = S[(size_t)(i + w) * (C + 1) + j + w] - S[(size_t)i * (C + 1) + j + w] -
                        S[(size_t)(i + w) * (C + 1) + j] + S[(size_t)i * (C + 1) + j];
            int full = s == w * w;
            A[(size_t)(i + 1) * (ac + 1) + j + 1] = full + A[(size_t)i * (ac + 1) + j + 1] +
                                                    A[(size_t)(i + 1) * (ac + 1) + j] -
                                                    A[(size_t)i * (ac + 1) + j];
        }
    /* Pixel (r, c) sits at padded (r + p, c + p); anchors covering it have
     * top-left in [r, r + p] x [c, c + p] (padded coordinates). */
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            int i0 = r, i1 = r + p, j0 = c, j1 = c + p;
            if (i1 > ar - 1) i1 = ar - 1;
            if (j1 > ac - 1) j1 = ac - 1;
            int32_t s = A[(size_t)(i1 + 1) * (ac + 1) + j1 + 1] - A[(size_t)i0 * (ac + 1) + j1 + 1] -
                        A[(size_t)(i1 + 1) * (ac + 1) + j0] + A[(size_t)i0 * (ac + 1) + j0];
            cov[(size_t)r * cols + c] = s > 0;
        }
    free(S);
    free(A);
    return 0;
}

long mask_narrow_open(const uint8_t *open, int rows, int cols, int w)
{
    uint8_t *cov = malloc((size_t)rows * cols);
    if (!cov || square_cover(open, rows, cols, w, 0, cov)) {
        free(cov);
        return -1;
    }
    long k = 0;
    for (size_t i = 0; i < (size_t)rows * cols; i++) k += open[i] && !cov[i];
    free(cov);
    return k;
}

long mask_thin_px(const uint8_t *set, const uint8_t *solid, int rows, int cols, int w)
{
    uint8_t *cov = malloc((size_t)rows * cols);
    if (!cov || square_cover(solid, rows, cols, w, 1, cov)) {
        free(cov);
        return -1;
    }
    long k = 0;
    for (size_t i = 0; i < (size_t)rows * cols; i++) k += set[i] && !cov[i];
    free(cov);
    return k;
}

/* Morphological opening of the open set: closes open pixels in no open
 * w x w square, marking them MASK_NARROW. Returns the count or -1. */
static long close_narrow(mask_map *m, int w, uint8_t *scratch)
{
    if (w <= 1) return 0;
    if (square_cover(m->open, m->rows, m->cols, w, 0, scratch)) return -1;
    long k = 0;
    for (size_t i = 0; i < (size_t)m->rows * m->cols; i++)
        if (m->open[i] && !scratch[i]) {
            m->open[i] = 0;
            m->cls[i] = MASK_NARROW;
            k++;
        }
    return k;
}

long mask_pinches(const uint8_t *open, int rows, int cols)
{
    long k = 0;
    for (int i = 0; i + 1 < rows; i++)
        for (int j = 0; j + 1 < cols; j++) {
            const uint8_t *a = open + (size_t)i * cols + j, *b = a + cols;
            int tl = a[0] != 0, tr = a[1] != 0, bl = b[0] != 0, br = b[1] != 0;
            k += (tl && br && !tr && !bl) || (tr && bl && !tl && !br);
        }
    return k;
}

/* Closes the dimmer open pixel of every diagonal pinch, repeating until none
 * is left (a closed pixel can make a new pinch next to it). */
static long close_pinches(mask_map *m)
{
    int rows = m->rows, cols = m->cols;
    long k = 0, found;
    do {
        found = 0;
        for (int i = 0; i + 1 < rows; i++)
            for (int j = 0; j + 1 < cols; j++) {
                size_t tl = (size_t)i * cols + j, tr = tl + 1, bl = tl + cols, br = bl + 1;
                size_t p, q;
                if (m->open[tl] && m->open[br] && !m->open[tr] && !m->open[bl]) {
                    p = tl;
                    q = br;
                } else if (m->open[tr] && m->open[bl] && !m->open[tl] && !m->open[br]) {
                    p = tr;
                    q = bl;
                } else {
                    continue;
                }
                size_t c = m->amp[q] < m->amp[p] ? q : p;
                m->open[c] = 0;
                m->cls[c] = MASK_PINCH;
                found++;
            }
        k += found;
    } while (found);
    return k;
}

/* ---------------------------------------------- connectivity and bridges */

/* Labels 4-connected opaque parts: lab[i] = 0 for open pixels, 1 for opaque
 * pixels held by the frame (connected to the border), 2, 3, ... for islands.
 * Returns the number of islands, -1 when out of memory. */
static int label_opaque(const uint8_t *open, int rows, int cols, int32_t *lab)
{
    size_t n = (size_t)rows * cols;
    int32_t *q = malloc(n * sizeof *q);
    if (!q) return -1;
    memset(lab, 0, n * sizeof *lab);
    int next = 1, islands = 0;
    /* pass 0 seeds from the border (label 1), pass 1 labels the rest */
    for (int pass = 0; pass < 2; pass++)
        for (size_t s = 0; s < n; s++) {
            int r = (int)(s / cols), c = (int)(s % cols);
            int border = r == 0 || c == 0 || r == rows - 1 || c == cols - 1;
            if (open[s] || lab[s] || (pass == 0 && !border)) continue;
            int32_t id = pass == 0 ? 1 : ++next;
            if (pass == 1) islands++;
            size_t h = 0, t = 0;
            lab[s] = id;
            q[t++] = (int32_t)s;
            while (h < t) {
                int32_t u = q[h++];
                int ur = u / cols, uc = u % cols;
                int32_t nb[4] = {ur > 0 ? u - cols : -1, ur < rows - 1 ? u + cols : -1,
                                 uc > 0 ? u - 1 : -1, uc < cols - 1 ? u + 1 : -1};
                for (int k = 0; k < 4; k++)
                    if (nb[k] >= 0 && !open[nb[k]] && !lab[nb[k]]) {
                        lab[nb[k]] = id;
                        q[t++] = nb[k];
                    }
            }
        }
    free(q);
    return islands;
}

int mask_opaque_parts(const uint8_t *open, int rows, int cols)
{
    int32_t *lab = malloc((size_t)rows * cols * sizeof *lab);
    if (!lab) return -1;
    int k = label_opaque(open, rows, cols, lab);
    free(lab);
    return k < 0 ? -1 : k + 1;
}

/* A binary min-heap of (cost, node) for the bridge search. */
typedef struct heap_item {
    int64_t d;
    int32_t v;
} heap_item;

typedef struct heap {
    heap_item *a;
    size_t n, cap;
} heap;

static int heap_push(heap *h, int64_t d, int32_t v)
{
    if (d2_grow(&h->a, &h->cap, h->n, sizeof *h->a, 1024)) return -1;
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->a[p].d <= d) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i].d = d;
    h->a[i].v = v;
    return 0;
}

static heap_item heap_pop(heap *h)
{
    heap_item top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->a[c + 1].d < h->a[c].d) c++;
        if (h->a[c].d >= last.d) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

/* Bridge path costs, in order of weight: open pixels covered (light
 * blocked), then turns (a straight bridge is stronger and easier to clean),
 * then the original amplitude (0..255 per open pixel) of what is covered. The
 * weights keep the order for paths of fewer than 2^16 turns and 2^28 / 255
 * open pixels. */
#define BRIDGE_PX_COST ((int64_t)1 << 44)
#define BRIDGE_TURN_COST ((int64_t)1 << 28)
#define NDIR 5 /* search states per square position: arrived moving up, down,
                  left, right, or a start on the body */

/* The bridge search. Squares of w x w pixels are placed by their top-left
 * corner (the anchor) on the grid padded by w pixels of frame; a search
 * state is an anchor and the direction the path arrived in. */
typedef struct bridger {
    mask_map *m;
    int w, ar, ac;          /* anchor grid: (rows + w + 1) x (cols + w + 1) */
    uint8_t *body;          /* per pixel: opaque and held by the frame */
    long loose;             /* opaque pixels not held (island pixels left) */
    int64_t *dist;          /* per state */
    int32_t *par;
    int32_t *q;             /* flood queue, one entry per pixel */
    heap h;
} bridger;

static void bridger_free(bridger *b)
{
    free(b->body);
    free(b->dist);
    free(b->par);
    free(b->q);
    free(b->h.a);
}

/* What the square at anchor (i, j) covers: the cost of closing it, whether it
 * touches the body (or the frame), whether it touches an island. */
static int64_t square_scan(const bridger *b, int i, int j, int *on_body, int *on_island)
{
    const mask_map *m = b->m;
    int64_t cost = 0;
    int bd = 0, isl = 0;
    for (int di = 0; di < b->w; di++)
        for (int dj = 0; dj < b->w; dj++) {
            int r = i + di - b->w, c = j + dj - b->w;
            if (r < 0 || c < 0 || r >= m->rows || c >= m->cols) {
                bd = 1;
                continue;
            }
            size_t p = (size_t)r * m->cols + c;
            if (m->open[p])
                cost += BRIDGE_PX_COST + lroundf(255.0f * fminf(fmaxf(m->amp[p], 0.0f), 1.0f));
            else if (b->body[p])
                bd = 1;
            else
                isl = 1;
        }
    if (on_body) *on_body = bd;
    if (on_island) *on_island = isl;
    return cost;
}

/* Every anchor whose square covers pixel p (or, p < 0, every anchor) that
 * touches the body becomes a start of the search at its own cost. */
static int push_starts(bridger *b, long p)
{
    int i0 = 0, i1 = b->ar - 1, j0 = 0, j1 = b->ac - 1;
    if (p >= 0) {
        /* pixel (r, c) is padded (r + w, c + w): anchors [r + 1, r + w] */
        int r = (int)(p / b->m->cols), c = (int)(p % b->m->cols);
        i0 = r + 1;
        i1 = r + b->w;
        j0 = c + 1;
        j1 = c + b->w;
    }
    for (int i = i0; i <= i1; i++)
        for (int j = j0; j <= j1; j++) {
            int bd;
            int64_t d = square_scan(b, i, j, &bd, NULL);
            int32_t s = (i * b->ac + j) * NDIR + NDIR - 1;
            if (bd && d < b->dist[s]) {
                b->dist[s] = d;
                b->par[s] = -1;
                if (heap_push(&b->h, d, s)) return -1;
            }
        }
    return 0;
}

/* Marks as body every opaque pixel 4-connected to the seeds already queued
 * in q[0 .. t-1] (themselves marked), and starts the search from the
 * squares covering them. */
static int flood_body(bridger *b, size_t t)
{
    mask_map *m = b->m;
    int rows = m->rows, cols = m->cols;
    for (size_t h = 0; h < t; h++) {
        int32_t u = b->q[h];
        int ur = u / cols, uc = u % cols;
        int32_t nb[4] = {ur > 0 ? u - cols : -1, ur < rows - 1 ? u + cols : -1,
                         uc > 0 ? u - 1 : -1, uc < cols - 1 ? u + 1 : -1};
        for (int k = 0; k < 4; k++)
            if (nb[k] >= 0 && !m->open[nb[k]] && !b->body[nb[k]]) {
                b->body[nb[k]] = 1;
                b->loose--;
                b->q[t++] = nb[k];
            }
    }
    for (size_t h = 0; h < t; h++)
        if (push_starts(b, b->q[h])) return -1;
    return 0;
}

/* Ties every island to the body, nearest first (Prim's algorithm with one
 * Dijkstra search that continues after each bridge: the new body becomes
 * more starts and costs only fall, so every label stays an upper bound and
 * the next island reached is the nearest to the grown body). Returns the
 * number of bridges, -1 when out of memory. */
static int bridge_all(mask_map *m, int w, const int32_t *lab)
{
    int rows = m->rows, cols = m->cols, bridges = 0;
    size_t n = (size_t)rows * cols;
    bridger b = {0};
    b.m = m;
    b.w = w;
    b.ar = rows + w + 1;
    b.ac = cols + w + 1;
    size_t ns = (size_t)b.ar * b.ac * NDIR;
    b.body = malloc(n);
    b.q = malloc(n * sizeof *b.q);
    b.dist = malloc(ns * sizeof *b.dist);
    b.par = malloc(ns * sizeof *b.par);
    if (!b.body || !b.q || !b.dist || !b.par) goto oom;
    for (size_t p = 0; p < n; p++) {
        b.body[p] = lab[p] == 1;
        b.loose += lab[p] > 1;
    }
    for (size_t s = 0; s < ns; s++) {
        b.dist[s] = INT64_MAX;
        b.par[s] = -1;
    }
    if (push_starts(&b, -1)) goto oom;
    while (b.loose > 0 && b.h.n) {
        heap_item it = heap_pop(&b.h);
        if (it.d != b.dist[it.v]) continue; /* stale entry */
        int a = it.v / NDIR, dir = it.v % NDIR, i = a / b.ac, j = a % b.ac, isl;
        square_scan(&b, i, j, NULL, &isl);
        if (isl) {
            /* close the squares along the path; they and the island join the body */
            size_t t = 0;
            for (int32_t s = it.v; s >= 0; s = b.par[s]) {
                int sa = s / NDIR, si = sa / b.ac, sj = sa % b.ac;
                for (int di = 0; di < w; di++)
                    for (int dj = 0; dj < w; dj++) {
                        int r = si + di - w, c = sj + dj - w;
                        if (r < 0 || c < 0 || r >= rows || c >= cols) continue;
                        size_t p = (size_t)r * cols + c;
                        if (m->open[p]) {
                            m->open[p] = 0;
                            m->cls[p] = MASK_BRIDGE;
                            b.body[p] = 1;
                            b.q[t++] = (int32_t)p;
                        }
                    }
            }
            bridges++;
            if (flood_body(&b, t)) goto oom;
            /* the square itself may cover no open pixel: flood from it too */
            if (b.loose > 0) {
                t = 0;
                for (int di = 0; di < w; di++)
                    for (int dj = 0; dj < w; dj++) {
                        int r = i + di - w, c = j + dj - w;
                        if (r < 0 || c < 0 || r >= rows || c >= cols) continue;
                        size_t p = (size_t)r * cols + c;
                        if (!m->open[p] && !b.body[p]) {
                            b.body[p] = 1;
                            b.loose--;
                            b.q[t++] = (int32_t)p;
                        }
                    }
                if (flood_body(&b, t)) goto oom;
            }
            continue;
        }
        static const int di[4] = {-1, 1, 0, 0}, dj[4] = {0, 0, -1, 1};
        for (int k = 0; k < 4; k++) {
            int ni = i + di[k], nj = j + dj[k];
            if (ni < 0 || nj < 0 || ni >= b.ar || nj >= b.ac) continue;
            int32_t v = (ni * b.ac + nj) * NDIR + k;
            int64_t d = it.d + square_scan(&b, ni, nj, NULL, NULL) +
                        (dir != NDIR - 1 && dir != k ? BRIDGE_TURN_COST : 0);
            if (d < b.dist[v]) {
                b.dist[v] = d;
                b.par[v] = it.v;
                if (heap_push(&b.h, d, v)) goto oom;
            }
        }
    }
    bridger_free(&b);
    return bridges;
oom:
    bridger_free(&b);
    return -1;
}

/* Steps 1 and 3 until stable. Returns 0 or -1. */
static int cleanup(mask_map *m, int w, uint8_t *scratch, mask_stats *st)
{
    for (;;) {
        long a = close_narrow(m, w, scratch);
        if (a < 0) return -1;
        long b = close_pinches(m);
        st->narrow_px += a;
        st->pinch_px += b;
        if (!a && !b) return 0;
    }
}

static void count_stats(const mask_map *m, int w, mask_stats *st)
{
    size_t n = (size_t)m->rows * m->cols;
    st->open0_px = st->open_px = 0;
    for (size_t i = 0; i < n; i++) {
        st->open0_px += m->open0[i] != 0;
        st->open_px += m->open[i] != 0;
    }
    st->blocked_px = st->open0_px - st->open_px;
    st->min_px = w;
}

static int nothing_open(const mask_stats *st, const char *name, d2_err *e)
{
    if (st->open_px > 0) return 0;
    return d2_fail(e, D2_EINPUT, "%s: every opening of the binarised digit (%ld pixels) is "
                   "narrower than the printer's minimum feature (%d pixels): nothing would be "
                   "left open; use a printer with a finer minimum feature or a lower threshold",
                   name, st->open0_px, st->min_px);
}

int mask_make_printable(mask_map *m, int min_px, mask_stats *st, const char *name, d2_err *e)
{
    int rows = m->rows, cols = m->cols, w = min_px < 1 ? 1 : min_px, rc = D2_EIO;
    size_t n = (size_t)rows * cols;
    memset(st, 0, sizeof *st);
    int32_t *lab = malloc(n * sizeof *lab);
    uint8_t *scratch = malloc(n);
    if (!lab || !scratch) goto oom;
    for (size_t i = 0; i < n; i++) {
        m->open[i] = m->open0[i] != 0;
        m->cls[i] = m->open[i] ? MASK_OPEN : MASK_OPAQUE;
    }
    long k = close_narrow(m, w, scratch);
    if (k < 0) goto oom;
    st->narrow_px = k;
    count_stats(m, w, st);
    if ((rc = nothing_open(st, name, e))) goto done;
    rc = D2_EIO;

    int isl = label_opaque(m->open, rows, cols, lab);
    if (isl < 0) goto oom;
    st->islands = isl;
    for (size_t i = 0; i < n; i++)
        if (lab[i] > 1) {
            m->cls[i] = MASK_ISLAND;
            st->island_px++;
        }
    if (isl > 0 && (st->bridges = bridge_all(m, w, lab)) < 0) goto oom;
    if (cleanup(m, w, scratch, st)) goto oom;
    for (size_t i = 0; i < n; i++) st->bridge_px += m->cls[i] == MASK_BRIDGE;
    count_stats(m, w, st);
    if ((rc = nothing_open(st, name, e))) goto done;
    st->parts = mask_opaque_parts(m->open, rows, cols);
    if (st->parts < 0) goto oom;
    if (st->parts != 1) {
        rc = d2_fail(e, D2_EIO, "%s: internal error: %d opaque parts left after bridging", name,
                     st->parts);
        goto done;
    }
    for (size_t i = 0; i < n; i++) scratch[i] = !m->open[i];
    st->thin_opaque_px = mask_thin_px(scratch, scratch, rows, cols, w);
    if (st->thin_opaque_px < 0) goto oom;
    rc = 0;
    goto done;
oom:
    rc = d2_fail(e, D2_EIO, "%s: out of memory making a %d x %d mask printable", name, rows, cols);
done:
    free(lab);
    free(scratch);
    return rc;
}

int mask_make_carrier(mask_map *m, int min_px, mask_stats *st, const char *name, d2_err *e)
{
    int w = min_px < 1 ? 1 : min_px;
    size_t n = (size_t)m->rows * m->cols;
    memset(st, 0, sizeof *st);
    uint8_t *scratch = malloc(n);
    if (!scratch)
        return d2_fail(e, D2_EIO, "%s: out of memory for a %d x %d mask", name, m->rows, m->cols);
    for (size_t i = 0; i < n; i++) {
        m->open[i] = m->open0[i] != 0;
        m->cls[i] = m->open[i] ? MASK_OPEN : MASK_OPAQUE;
    }
    long k = close_narrow(m, w, scratch);
    free(scratch);
    if (k < 0)
        return d2_fail(e, D2_EIO, "%s: out of memory for a %d x %d mask", name, m->rows, m->cols);
    st->narrow_px = k;
    count_stats(m, w, st);
    st->parts = 1; /* a solid plate */
    return nothing_open(st, name, e);
}

/* ------------------------------------------------------------- optics */

void mask_slab_optics(double thick_mm, double index, double kappa, double wavelength_mm,
                      mask_slab *s)
{
    double r = opt_fresnel_r(index);
    s->thick_mm = thick_mm;
    s->phase_rad = opt_phase_of_thickness(thick_mm, wavelength_mm, index);
    s->amplitude = opt_amplitude(thick_mm, wavelength_mm, kappa);
    s->power = s->amplitude * s->amplitude * (1 - r) * (1 - r);
}

/* ------------------------------------------------------------- preview */

void mask_preview_crop(const mask_map *m, int *r0, int *c0, int *side)
{
    int rows = m->rows, cols = m->cols, lo_r = rows, hi_r = -1, lo_c = cols, hi_c = -1;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            size_t s = (size_t)r * cols + c;
            if (!m->open0[s] && m->cls[s] == MASK_OPAQUE) continue;
            if (r < lo_r) lo_r = r;
            if (r > hi_r) hi_r = r;
            if (c < lo_c) lo_c = c;
            if (c > hi_c) hi_c = c;
        }
    int full = rows < cols ? rows : cols;
    if (hi_r < 0) {
        *r0 = *c0 = 0;
        *side = full;
        return;
    }
    int big = rows > cols ? rows : cols, margin = big / 32 > 3 ? big / 32 : 3;
    int s = (hi_r - lo_r > hi_c - lo_c ? hi_r - lo_r : hi_c - lo_c) + 1 + 2 * margin;
    if (s > full) s = full;
    int a = (lo_r + hi_r + 1 - s) / 2, b = (lo_c + hi_c + 1 - s) / 2;
    *r0 = a < 0 ? 0 : a + s > rows ? rows - s : a;
    *c0 = b < 0 ? 0 : b + s > cols ? cols - s : b;
    *side = s;
}

int mask_write_preview(const char *path, const mask_map *m, d2_err *e)
{
    int cols = m->cols, r0, c0, side;
    mask_preview_crop(m, &r0, &c0, &side);
    int scale = (256 + side - 1) / side;
    int gap = 8, pw = side * scale, W = 3 * pw + 2 * gap, H = side * scale;
    uint8_t *px = d2_malloc((size_t)W * H * 3, "mask preview", e);
    if (!px) return D2_EIO;
    memset(px, 128, (size_t)W * H * 3);
    float hi = 0;
    for (size_t i = 0; i < (size_t)m->rows * cols; i++)
        if (m->amp[i] > hi) hi = m->amp[i];
    for (int pr = 0; pr < side; pr++)
        for (int pc = 0; pc < side; pc++) {
            size_t s = (size_t)(r0 + pr) * cols + c0 + pc;
            uint8_t rgb[3][3];
            float v = hi > 0 ? m->amp[s] / hi : 0;
            uint8_t g = (uint8_t)lroundf(255 * fminf(fmaxf(v, 0), 1));
            memset(rgb[0], g, 3);
            memset(rgb[1], m->open0[s] ? 255 : 0, 3);
            memcpy(rgb[2], mask_class_rgb[m->cls[s] < MASK_NCLASS ? m->cls[s] : 0], 3);
            for (int k = 0; k < 3; k++)
                for (int y = 0; y < scale; y++)
                    for (int x = 0; x < scale; x++) {
                        size_t o = ((size_t)(pr * scale + y) * W + k * (pw + gap) + pc * scale + x) * 3;
                        memcpy(px + o, rgb[k], 3);
                    }
        }
    int rc = img_write_rgb8(path, W, H, px, e);
    free(px);
    return rc;
}

/* -------------------------------------------------------------- sources */

int mask_source_png(const char *path, int label, mask_source *src, d2_err *e)
{
    memset(src, 0, sizeof *src);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    FILE *f;
    int rc = d2_fopen_input(path, &f, e);
    if (rc) return rc;
    if (!png_image_begin_read_from_stdio(&im, f)) {
        fclose(f);
        return d2_fail(e, D2_EINPUT, "%s: not a readable PNG (%s)", path, im.message);
    }
    png_uint_32 fmt = im.format;
    png_image_free(&im);
    fclose(f);
    if (fmt & PNG_FORMAT_FLAG_COLORMAP)
        return d2_fail(e, D2_EINPUT, "%s: a palette (indexed-colour) PNG is not supported for a "
                       "mask: save it as grey or RGB", path);
    if (fmt & PNG_FORMAT_FLAG_ALPHA)
        return d2_fail(e, D2_EINPUT, "%s: a PNG with an alpha channel or transparency is not "
                       "supported for a mask (transparency has no meaning for an aperture): "
                       "flatten it onto black and save it as grey or RGB", path);
    int w = 0, h = 0;
    rc = img_read_gray(path, &w, &h, &src->img, e);
    if (rc) return rc;
    src->rows = h;
    src->cols = w;
    src->index = -1;
    src->label = label;
    snprintf(src->origin, sizeof src->origin, "%s", path);
    /* name: mask_<file stem>, with only [A-Za-z0-9._-] kept */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char stem[48];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = 0;
    for (char *p = stem; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            *p = '_';
    snprintf(src->name, sizeof src->name, "mask_%s", stem);
    return 0;
}

void mask_source_free(mask_source *src)
{
    if (!src) return;
    free(src->img);
    src->img = NULL;
}

int mask_sources_dataset(const d2_dataset *ds, const char *dsname, int first, int count, int digit,
                         mask_source **out, int *n, d2_err *e)
{
    *out = NULL;
    *n = 0;
    if (count < 1 || first < 0 || first >= ds->count)
        return d2_fail(e, D2_EINPUT, "%s test set: index %d, count %d: allowed index 0..%d and "
                       "count >= 1", dsname, first, count, ds->count - 1);
    mask_source *s = d2_calloc((size_t)count, sizeof *s, "mask sources", e);
    if (!s) return D2_EIO;
    int k = 0, px = ds->rows * ds->cols;
    for (int i = first; i < ds->count && k < count; i++) {
        if (digit >= 0 && ds->labels[i] != digit) continue;
        mask_source *m = s + k;
        if (!(m->img = d2_malloc((size_t)px * sizeof *m->img, "mask image", e))) goto fail;
        for (int p = 0; p < px; p++) m->img[p] = ds->images[(size_t)i * px + p] / 255.0f;
        m->rows = ds->rows;
        m->cols = ds->cols;
        m->index = i;
        m->label = ds->labels[i];
        snprintf(m->name, sizeof m->name, "mask_%.16s%05d", dsname, i);
        snprintf(m->origin, sizeof m->origin, "%s test image %d", dsname, i);
        k++;
    }
    if (k < count) {
        if (digit >= 0)
            d2_fail(e, D2_EINPUT, "%s test set: only %d image%s of class %d from index %d on, %d "
                    "asked for", dsname, k, k == 1 ? "" : "s", digit, first, count);
        else
            d2_fail(e, D2_EINPUT, "%s test set: images %d..%d asked for, the set has %d", dsname,
                    first, first + count - 1, ds->count);
        goto fail;
    }
    *out = s;
    *n = count;
    return 0;
fail:
    for (int i = 0; i < count; i++) mask_source_free(s + i);
    free(s);
    return e->code ? e->code : D2_EIO;
}

int mask_stencil_u8(void *ctx, const d2_geom *g, const unsigned char *img, int rows, int cols,
                    double threshold, double min_feature_mm, unsigned char *open)
{
    (void)ctx;
    d2_err e = {0};
    mask_map mm = {0};
    mask_stats st;
    float *f = malloc(sizeof(float) * (size_t)rows * cols);
    if (!f) return D2_EIO;
    for (size_t i = 0; i < (size_t)rows * cols; i++) f[i] = img[i] / 255.0f;
    int rc = mask_check_image(g, f, rows, cols, threshold, 0, "test image", &e);
    if (!rc) rc = mask_map_alloc(&mm, g->n, g->n, &e);
    if (!rc) rc = mask_binarise(g, f, rows, cols, threshold, &mm, "test image", &e);
    if (!rc)
        rc = mask_make_printable(&mm, mask_min_px(min_feature_mm, g->pitch_mm), &st,
                                 "test image", &e);
    if (!rc) memcpy(open, mm.open, (size_t)g->n * g->n);
    mask_map_free(&mm);
    free(f);
    return rc;
}
