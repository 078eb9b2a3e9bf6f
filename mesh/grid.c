/* d2fab mesh: the closed surface of a two-sided height field on a
 * rectilinear grid.
 *
 * Faces: a top and a bottom face per cell (equal-height neighbours merged
 * into rectangles), and walls on every cell side where exactly one of the two
 * cells holds material. A wall is a vertical polygon whose two vertical sides
 * carry every height met at their grid vertex ("Z(P)": the tops and bottoms
 * of the up to four cells around P), so a wall meets the neighbouring walls,
 * tops and bottoms vertex to vertex: no T-junctions. Walls are triangulated
 * as ladders between their two sides.
 *
 * Diagonal contact: where two diagonal cells hold material at heights where
 * their two side neighbours do not (a checkerboard of pillars), four walls
 * would share one vertical edge. There one of the two cells ("bent") gets
 * its own copy of the vertex at the end of that band where it ends, moved
 * EPS (0.1 um) into the cell, which opens a thin wedge between the two cells; when
 * neither cell ends at the band, a moved midpoint splits the band instead.
 * Every other vertex stays on the grid. */
#include <stdlib.h>
#include <string.h>

#include "mesh/mesh_int.h"

#define MAXZ 8 /* four cells, two ends each */
/* The corner-gap offset: one grid unit (0.1 um), far below any printer's
 * resolution but still 1.5 float ULPs at 500 mm, so the copy stays a distinct
 * vertex in every file. */
#define EPS 1

typedef struct vinfo {
    int32_t z[MAXZ];  /* Z(P), ascending */
    uint32_t id[MAXZ];/* vertex (P, z) once made */
    uint8_t nz;
    uint8_t dup[MAXZ];/* bit k: corner cell k has its own vertex at z[i] */
    uint8_t mid[MAXZ];/* bit k: corner cell k's walls bend at the middle of band i */
} vinfo;

/* Vertices off the grid points (moved corner copies, moved midpoints, fan
 * centres), joined by position among themselves: they never fall on a grid
 * point, whose vertices the vinfo cache makes, so neither needs the mesh's
 * position hash while the grid builds a fresh mesh. */
typedef struct ogslot {
    int32_t p[3];
    uint32_t id; /* UINT32_MAX: free */
} ogslot;

typedef struct gctx {
    mesh *m;
    const mesh_grid *g;
    vinfo *vi;
    int32_t eps;
    int direct;      /* the mesh was empty: grid-point vertices skip the hash */
    ogslot *og;
    size_t og_n, og_cap;
    uint8_t conn[256];/* connected8() of every octant set */
} gctx;

/* Corner k of grid vertex (i, j): bit 0 east, bit 1 north (SW 0, SE 1,
 * NW 2, NE 3); the cell is (i - 1 + (k >> 1), j - 1 + (k & 1)). */
enum { SW = 0, SE = 1, NW = 2, NE = 3 };

static inline int cell(const mesh_grid *g, int r, int c, int32_t *b, int32_t *t)
{
    if (r < 0 || c < 0 || r >= g->ny || c >= g->nx) {
        *b = *t = 0;
        return 0;
    }
    size_t k = (size_t)r * g->nx + c;
    *b = g->bot[k];
    *t = g->top[k];
    return *t > *b;
}

static inline vinfo *vat(const gctx *x, int i, int j) { return x->vi + (size_t)i * (x->g->nx + 1) + j; }

static inline int zidx(const vinfo *v, int32_t z)
{
    for (int k = 0; k < v->nz; k++)
        if (v->z[k] == z) return k;
    return -1;
}

/* Solid corners of vertex v in band (z[i], z[i+1]). */
static int band_cfg(const gctx *x, int i, int j, const vinfo *v, int band)
{
    int cfg = 0;
    for (int k = 0; k < 4; k++) {
        int32_t b, t;
        if (cell(x->g, i - 1 + (k >> 1), j - 1 + (k & 1), &b, &t) && b <= v->z[band] &&
            t >= v->z[band + 1])
            cfg |= 1 << k;
    }
    return cfg;
}

static inline int diagonal(int cfg) { return cfg == 9 || cfg == 6; }

/* Octant configurations (bits 0-3 below the vertex, 4-7 above) where the
 * material and the empty space are each connected through octant faces:
 * the vertex is then a manifold point of the surface. */
static int connected8(int set)
{
    if (!set) return 1;
    int seen = set & -set, grow = 1;
    while (grow) {
        grow = 0;
        for (int o = 0; o < 8; o++) {
            if (!(seen >> o & 1)) continue;
            int nb[3] = {(o & 4) | ((o & 3) ^ 1), (o & 4) | ((o & 3) ^ 2), o ^ 4};
            for (int q = 0; q < 3; q++)
                if ((set >> nb[q] & 1) && !(seen >> nb[q] & 1)) {
                    seen |= 1 << nb[q];
                    grow = 1;
                }
        }
    }
    return seen == set;
}

static inline size_t og_hash(int32_t x, int32_t y, int32_t z)
{
    uint64_t h = (uint64_t)(uint32_t)x * 0x9E3779B97F4A7C15ull;
    h ^= (uint64_t)(uint32_t)y * 0xC2B2AE3D27D4EB4Full + (h >> 29);
    h ^= (uint64_t)(uint32_t)z * 0x165667B19E3779F9ull + (h >> 32);
    h ^= h >> 31;
    h *= 0xff51afd7ed558ccdull;
    return (size_t)(h ^ h >> 33);
}

/* The vertex at an off-grid position, made on first use. */
static uint32_t offgrid(gctx *x, int32_t px, int32_t py, int32_t pz)
{
    if (!x->direct) return mesh_vid(x->m, px, py, pz);
    if (2 * (x->og_n + 1) > x->og_cap) {
        size_t cap = x->og_cap ? 2 * x->og_cap : 1024;
        ogslot *s = malloc(cap * sizeof *s);
        if (!s) {
            x->m->oom = 1;
            return UINT32_MAX;
        }
        for (size_t i = 0; i < cap; i++) s[i].id = UINT32_MAX;
        for (size_t i = 0; i < x->og_cap; i++) {
            if (x->og[i].id == UINT32_MAX) continue;
            size_t k = og_hash(x->og[i].p[0], x->og[i].p[1], x->og[i].p[2]) & (cap - 1);
            while (s[k].id != UINT32_MAX) k = (k + 1) & (cap - 1);
            s[k] = x->og[i];
        }
        free(x->og);
        x->og = s;
        x->og_cap = cap;
    }
    size_t mask = x->og_cap - 1, k = og_hash(px, py, pz) & mask;
    for (; x->og[k].id != UINT32_MAX; k = (k + 1) & mask)
        if (x->og[k].p[0] == px && x->og[k].p[1] == py && x->og[k].p[2] == pz) return x->og[k].id;
    uint32_t id = mesh_vid_new(x->m, px, py, pz);
    if (id == UINT32_MAX) return id;
    x->og[k] = (ogslot){{px, py, pz}, id};
    x->og_n++;
    return id;
}

/* The vertex on grid point (i, j) at its zi-th height. */
static uint32_t vid_plain(gctx *x, int i, int j, int zi)
{
    vinfo *v = vat(x, i, j);
    if (v->id[zi] == UINT32_MAX)
        v->id[zi] = x->direct ? mesh_vid_new(x->m, x->g->xs[j], x->g->ys[i], v->z[zi])
                              : mesh_vid(x->m, x->g->xs[j], x->g->ys[i], v->z[zi]);
    return v->id[zi];
}

static uint32_t vid_at(gctx *x, int i, int j, int zi, int k)
{
    vinfo *v = vat(x, i, j);
    int32_t px = x->g->xs[j], py = x->g->ys[i];
    if (v->dup[zi] >> k & 1)
        return offgrid(x, px + (k & 1 ? x->eps : -x->eps), py + (k & 2 ? x->eps : -x->eps),
                       v->z[zi]);
    return vid_plain(x, i, j, zi);
}

/* The index of v among the sorted lines a[0 .. n], or -1. */
static int line_at(const int32_t *a, int n, int32_t v)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (a[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo <= n && a[lo] == v ? lo : -1;
}

/* The vertex at any position (px, py, pz): on a grid point at one of its
 * heights the cached one, else an off-grid one. */
static uint32_t vid_any(gctx *x, int32_t px, int32_t py, int32_t pz)
{
    int j = line_at(x->g->xs, x->g->nx, px), i = line_at(x->g->ys, x->g->ny, py);
    if (i >= 0 && j >= 0) {
        int zi = zidx(vat(x, i, j), pz);
        if (zi >= 0) return vid_plain(x, i, j, zi);
    }
    return offgrid(x, px, py, pz);
}

/* The vertices of a wall's vertical side at grid vertex (i, j) for the wall's
 * owner, corner k of (i, j), over [lo, hi]; ascending z. */
static int side(gctx *x, int i, int j, int k, int32_t lo, int32_t hi, uint32_t *id, int64_t *pos)
{
    vinfo *v = vat(x, i, j);
    int n = 0;
    for (int zi = 0; zi < v->nz; zi++) {
        if (v->z[zi] < lo || v->z[zi] > hi) continue;
        id[n] = vid_at(x, i, j, zi, k);
        pos[n++] = v->z[zi];
        if (v->z[zi] < hi && (v->mid[zi] >> k & 1)) {
            int32_t zm = v->z[zi] + (v->z[zi + 1] - v->z[zi]) / 2;
            id[n] = offgrid(x, x->g->xs[j] + (k & 1 ? x->eps : -x->eps),
                            x->g->ys[i] + (k & 2 ? x->eps : -x->eps), zm);
            pos[n++] = zm;
        }
    }
    return n;
}

/* Triangulates the strip between two sides that run in the same direction
 * (positions ascending, equal first and last positions): the quad
 * (L0, R0, R1, L1) is counter-clockwise seen from outside. */
static void ladder(mesh *m, const uint32_t *L, const int64_t *lp, int nl, const uint32_t *R,
                   const int64_t *rp, int nr)
{
    int i = 0, j = 0;
    while (i < nl - 1 || j < nr - 1) {
        if (j == nr - 1 || (i < nl - 1 && lp[i + 1] <= rp[j + 1])) {
            mesh_tri(m, L[i], R[j], L[i + 1]);
            i++;
        } else {
            mesh_tri(m, L[i], R[j], R[j + 1]);
            j++;
        }
    }
}

/* Parts of interval A not covered by B (B may be absent). */
static int diff(int32_t a0, int32_t a1, int hb, int32_t b0, int32_t b1, int32_t out[4])
{
    if (!hb) {
        out[0] = a0;
        out[1] = a1;
        return 1;
    }
    int n = 0;
    if (a0 < b0) {
        out[2 * n] = a0;
        out[2 * n + 1] = a1 < b0 ? a1 : b0;
        n++;
    }
    if (a1 > b1) {
        out[2 * n] = a0 > b1 ? a0 : b1;
        out[2 * n + 1] = a1;
        n++;
    }
    return n;
}

/* Walls on the side between cells A and B, whose grid vertices are P0 and P1.
 * kA0/kA1: A's corner index at P0/P1, likewise kB0/kB1. a_first: when A owns
 * the wall, the ladder runs (P0 side, P1 side) if a_first, else reversed; B
 * the opposite way. */
static void walls(gctx *x, int ra, int ca, int rb, int cb, int i0, int j0, int i1, int j1, int kA0,
                  int kA1, int kB0, int kB1, int a_first)
{
    int32_t a0, a1, b0, b1, piece[4];
    int ha = cell(x->g, ra, ca, &a0, &a1), hb = cell(x->g, rb, cb, &b0, &b1);
    uint32_t id0[2 * MAXZ], id1[2 * MAXZ];
    int64_t p0[2 * MAXZ], p1[2 * MAXZ];
    for (int own = 0; own < 2; own++) {
        int n;
        if (own == 0) {
            if (!ha) continue;
            n = diff(a0, a1, hb, b0, b1, piece);
        } else {
            if (!hb) continue;
            n = diff(b0, b1, ha, a0, a1, piece);
        }
        int k0 = own ? kB0 : kA0, k1 = own ? kB1 : kA1;
        int fwd = own ? !a_first : a_first;
        for (int q = 0; q < n; q++) {
            int n0 = side(x, i0, j0, k0, piece[2 * q], piece[2 * q + 1], id0, p0);
            int n1 = side(x, i1, j1, k1, piece[2 * q], piece[2 * q + 1], id1, p1);
            if (fwd) ladder(x->m, id0, p0, n0, id1, p1, n1);
            else ladder(x->m, id1, p1, n1, id0, p0, n0);
        }
    }
}

/* Does any face other than the top (up) or bottom faces of the cells in
 * rectangle [r0, r1) x [c0, c1) use the grid vertex (i, j) at height z? */
static int used(const gctx *x, int i, int j, int32_t z, int r0, int r1, int c0, int c1)
{
    const mesh_grid *g = x->g;
    int32_t b, t;
    for (int k = 0; k < 4; k++) {
        int r = i - 1 + (k >> 1), c = j - 1 + (k & 1);
        if (r >= r0 && r < r1 && c >= c0 && c < c1) continue;
        if (cell(g, r, c, &b, &t) && (t == z || b == z)) return 1;
    }
    /* the four sides meeting at (i, j): cells on either side */
    static const int8_t sides[4][4] = {
        {0, -1, 0, 0}, {-1, -1, -1, 0}, {-1, 0, 0, 0}, {-1, -1, 0, -1}};
    for (int s = 0; s < 4; s++) {
        int32_t a0, a1, b0, b1, piece[4];
        int ha = cell(g, i + sides[s][0], j + sides[s][1], &a0, &a1);
        int hb = cell(g, i + sides[s][2], j + sides[s][3], &b0, &b1);
        for (int own = 0; own < 2; own++) {
            int n = 0;
            if (own == 0 && ha) n = diff(a0, a1, hb, b0, b1, piece);
            if (own == 1 && hb) n = diff(b0, b1, ha, a0, a1, piece);
            for (int q = 0; q < n; q++)
                if (piece[2 * q] <= z && z <= piece[2 * q + 1]) return 1;
        }
    }
    return 0;
}

/* Does cell (r, c) have a moved corner vertex at height z? */
static int has_dup(const gctx *x, int r, int c, int32_t z)
{
    static const int8_t at[4][3] = {{0, 0, NE}, {0, 1, NW}, {1, 0, SE}, {1, 1, SW}};
    for (int q = 0; q < 4; q++) {
        const vinfo *v = vat(x, r + at[q][0], c + at[q][1]);
        int zi = zidx(v, z);
        if (zi >= 0 && (v->dup[zi] >> at[q][2] & 1)) return 1;
    }
    return 0;
}

/* Emits the horizontal face of rectangle [r0, r1) x [c0, c1) at height z,
 * facing +z when up, else -z. */
static void rect_face(gctx *x, int r0, int r1, int c0, int c1, int32_t z, int up)
{
    const mesh_grid *g = x->g;
    mesh *m = x->m;
    if (r1 - r0 == 1 && c1 - c0 == 1) {
        /* one cell: its corners, possibly moved (then still convex) */
        vinfo *v;
        uint32_t q[4];
        v = vat(x, r0, c0);
        q[0] = vid_at(x, r0, c0, zidx(v, z), NE);
        v = vat(x, r0, c1);
        q[1] = vid_at(x, r0, c1, zidx(v, z), NW);
        v = vat(x, r1, c1);
        q[2] = vid_at(x, r1, c1, zidx(v, z), SW);
        v = vat(x, r1, c0);
        q[3] = vid_at(x, r1, c0, zidx(v, z), SE);
        if (up) {
            mesh_tri(m, q[0], q[1], q[2]);
            mesh_tri(m, q[0], q[2], q[3]);
        } else {
            mesh_tri(m, q[0], q[2], q[1]);
            mesh_tri(m, q[0], q[3], q[2]);
        }
        return;
    }
    /* Boundary walk, counter-clockwise seen from +z: south side west to
     * east, east side south to north, north side east to west, west side
     * north to south. Side points are kept only where another face uses
     * them, so none is a T-junction and none is left out. */
    int cap = 2 * (r1 - r0 + c1 - c0);
    uint32_t stackbuf[256];
    uint32_t *b = cap <= 256 ? stackbuf : malloc(cap * sizeof *b);
    if (!b) {
        m->oom = 1;
        return;
    }
    int n = 0, extra[4] = {0, 0, 0, 0}, start[5];
#define VERT(ii, jj) vid_any(x, g->xs[jj], g->ys[ii], z)
    start[0] = n;
    b[n++] = VERT(r0, c0);
    for (int j = c0 + 1; j < c1; j++)
        if (used(x, r0, j, z, r0, r1, c0, c1)) b[n++] = VERT(r0, j), extra[0]++;
    start[1] = n;
    b[n++] = VERT(r0, c1);
    for (int i = r0 + 1; i < r1; i++)
        if (used(x, i, c1, z, r0, r1, c0, c1)) b[n++] = VERT(i, c1), extra[1]++;
    start[2] = n;
    b[n++] = VERT(r1, c1);
    for (int j = c1 - 1; j > c0; j--)
        if (used(x, r1, j, z, r0, r1, c0, c1)) b[n++] = VERT(r1, j), extra[2]++;
    start[3] = n;
    b[n++] = VERT(r1, c0);
    for (int i = r1 - 1; i > r0; i--)
        if (used(x, i, c0, z, r0, r1, c0, c1)) b[n++] = VERT(i, c0), extra[3]++;
    start[4] = n;
#undef VERT
    if (n == 4) {
        if (up) {
            mesh_tri(m, b[0], b[1], b[2]);
            mesh_tri(m, b[0], b[2], b[3]);
        } else {
            mesh_tri(m, b[0], b[2], b[1]);
            mesh_tri(m, b[0], b[3], b[2]);
        }
    } else if (!extra[1] && !extra[3]) {
        /* points on the south and north sides only: a ladder along x */
        int ns = start[2] - start[0], nn = start[4] - start[2];
        uint32_t *S = b, *N = malloc(nn * sizeof *N);
        int64_t *sp = malloc(ns * sizeof *sp), *np = malloc(nn * sizeof *np);
        if (!N || !sp || !np) {
            m->oom = 1;
        } else {
            for (int q = 0; q < ns; q++) sp[q] = m->v[3 * (size_t)S[q]];
            for (int q = 0; q < nn; q++) {
                N[q] = b[start[4] - 1 - q]; /* reverse: west to east */
                np[q] = m->v[3 * (size_t)N[q]];
            }
            if (up) ladder(m, N, np, nn, S, sp, ns);
            else ladder(m, S, sp, ns, N, np, nn);
        }
        free(N);
        free(sp);
        free(np);
    } else if (!extra[0] && !extra[2]) {
        /* points on the east and west sides only: a ladder along y */
        int ne = start[3] - start[1], nw = n - start[3] + 1;
        uint32_t *E = b + start[1], *W = malloc(nw * sizeof *W);
        int64_t *ep = malloc(ne * sizeof *ep), *wp = malloc(nw * sizeof *wp);
        if (!W || !ep || !wp) {
            m->oom = 1;
        } else {
            for (int q = 0; q < ne; q++) ep[q] = m->v[3 * (size_t)E[q] + 1];
            W[0] = b[0];
            for (int q = 1; q < nw; q++) W[q] = b[n - q]; /* south to north */
            for (int q = 0; q < nw; q++) wp[q] = m->v[3 * (size_t)W[q] + 1];
            if (up) ladder(m, W, wp, nw, E, ep, ne);
            else ladder(m, E, ep, ne, W, wp, nw);
        }
        free(W);
        free(ep);
        free(wp);
    } else {
        /* points on three or four sides: a fan from the centre, which no
         * other face touches */
        uint32_t c = vid_any(x, (int32_t)(((int64_t)g->xs[c0] + g->xs[c1]) / 2),
                             (int32_t)(((int64_t)g->ys[r0] + g->ys[r1]) / 2), z);
        for (int q = 0; q < n; q++) {
            uint32_t a = b[q], d = b[(q + 1) % n];
            if (up) mesh_tri(m, c, a, d);
            else mesh_tri(m, c, d, a);
        }
    }
    if (b != stackbuf) free(b);
}

/* Top (up) or bottom faces of every cell, equal heights merged greedily into
 * rectangles. Cells with a moved corner at that height stay single. */
static int flat_faces(gctx *x, int up, uint8_t *done)
{
    const mesh_grid *g = x->g;
    int nx = g->nx, ny = g->ny;
    memset(done, 0, (size_t)nx * ny);
#define ZOF(r, c) (up ? g->top[(size_t)(r) * nx + (c)] : g->bot[(size_t)(r) * nx + (c)])
#define OK(r, c, z)                                                                  \
    (!done[(size_t)(r) * nx + (c)] && g->top[(size_t)(r) * nx + (c)] > g->bot[(size_t)(r) * nx + (c)] && \
     ZOF(r, c) == (z) && !has_dup(x, r, c, z))
    for (int r = 0; r < ny; r++)
        for (int c = 0; c < nx; c++) {
            size_t k = (size_t)r * nx + c;
            if (done[k] || g->top[k] <= g->bot[k]) continue;
            int32_t z = ZOF(r, c);
            int c1 = c + 1, r1 = r + 1;
            if (!has_dup(x, r, c, z)) {
                while (c1 < nx && OK(r, c1, z)) c1++;
                for (;;) {
                    if (r1 >= ny) break;
                    int all = 1;
                    for (int q = c; q < c1 && all; q++) all = OK(r1, q, z);
                    if (!all) break;
                    r1++;
                }
            }
            for (int rr = r; rr < r1; rr++) memset(done + (size_t)rr * nx + c, 1, c1 - c);
            rect_face(x, r, r1, c, c1, z, up);
            if (x->m->oom) return -1;
        }
#undef OK
#undef ZOF
    return 0;
}

/* The grid's own sense: sizes, coordinates inside int32, lines increasing,
 * cells at least 4 units wide. */
static int grid_validate(const mesh_grid *g, d2_err *e)
{
    if (g->nx < 1 || g->ny < 1 || g->nx > 100000 || g->ny > 100000)
        return d2_fail(e, D2_EINPUT, "mesh grid of %d x %d cells: expected 1..100000 per side",
                       g->nx, g->ny);
    /* keep every coordinate and difference inside int32 */
    const int32_t lim = 1000000000;
    for (int j = 0; j <= g->nx; j++)
        if (g->xs[j] < -lim || g->xs[j] > lim)
            return d2_fail(e, D2_EINPUT, "mesh grid: x line %d at %d units: expected |x| <= %d",
                           j, g->xs[j], lim);
    for (int i = 0; i <= g->ny; i++)
        if (g->ys[i] < -lim || g->ys[i] > lim)
            return d2_fail(e, D2_EINPUT, "mesh grid: y line %d at %d units: expected |y| <= %d",
                           i, g->ys[i], lim);
    for (size_t k = 0; k < (size_t)g->nx * g->ny; k++)
        if (g->bot[k] < -lim || g->bot[k] > lim || g->top[k] < -lim || g->top[k] > lim)
            return d2_fail(e, D2_EINPUT,
                           "mesh grid: cell %zu spans z %d..%d units: expected |z| <= %d", k,
                           g->bot[k], g->top[k], lim);
    int32_t minw = INT32_MAX;
    for (int j = 0; j < g->nx; j++) {
        if (g->xs[j + 1] <= g->xs[j])
            return d2_fail(e, D2_EINPUT, "mesh grid: x lines not increasing at line %d", j + 1);
        if (g->xs[j + 1] - g->xs[j] < minw) minw = g->xs[j + 1] - g->xs[j];
    }
    for (int i = 0; i < g->ny; i++) {
        if (g->ys[i + 1] <= g->ys[i])
            return d2_fail(e, D2_EINPUT, "mesh grid: y lines not increasing at line %d", i + 1);
        if (g->ys[i + 1] - g->ys[i] < minw) minw = g->ys[i + 1] - g->ys[i];
    }
    if (minw < 4)
        return d2_fail(e, D2_EINPUT,
                       "mesh grid: a cell is %.2g mm wide; cells must be at least %.2g mm wide",
                       minw * MESH_Q_MM, 4 * MESH_Q_MM);
    return 0;
}

/* Rule: cells sharing a side must not meet along a horizontal edge only. */
static int grid_side_contacts(const mesh_grid *g, d2_err *e)
{
    for (int i = 0; i < g->ny; i++)
        for (int j = 0; j < g->nx; j++) {
            int32_t a0, a1, b0, b1;
            if (!cell(g, i, j, &a0, &a1)) continue;
            for (int d = 0; d < 2; d++) {
                int ri = i + d, cj = j + 1 - d;
                if (!cell(g, ri, cj, &b0, &b1)) continue;
                if (a1 == b0 || b1 == a0)
                    return d2_fail(e, D2_EINPUT,
                                   "mesh grid: material at x %.4f mm, y %.4f mm and its "
                                   "neighbour meet only along an edge at z %.4f mm (one's top "
                                   "is the other's bottom)",
                                   (g->xs[j] + g->xs[j + 1]) * 0.5 * MESH_Q_MM,
                                   (g->ys[i] + g->ys[i + 1]) * 0.5 * MESH_Q_MM,
                                   (a1 == b0 ? a1 : a0) * MESH_QZ_MM);
            }
        }
    return 0;
}

/* Grid vertex (i, j): its heights Z(P), the diagonal bands (a duplicated
 * vertex or a midpoint), and a refusal where material meets at a point. */
static int grid_vertex(gctx *x, int i, int j, d2_err *e)
{
    const mesh_grid *g = x->g;
    vinfo *v = vat(x, i, j);
    for (int k = 0; k < MAXZ; k++) v->id[k] = UINT32_MAX;
    int32_t zs[MAXZ];
    int n = 0;
    for (int k = 0; k < 4; k++) {
        int32_t b, t;
        if (!cell(g, i - 1 + (k >> 1), j - 1 + (k & 1), &b, &t)) continue;
        zs[n++] = b;
        zs[n++] = t;
    }
    /* insertion sort, unique */
    for (int a = 0; a < n; a++) {
        int32_t z = zs[a];
        int pos = 0;
        while (pos < v->nz && v->z[pos] < z) pos++;
        if (pos < v->nz && v->z[pos] == z) continue;
        memmove(v->z + pos + 1, v->z + pos, (v->nz - pos) * sizeof *v->z);
        v->z[pos] = z;
        v->nz++;
    }
    int cfg[MAXZ];
    for (int bnd = 0; bnd + 1 < v->nz; bnd++) {
        cfg[bnd] = band_cfg(x, i, j, v, bnd);
        if (!diagonal(cfg[bnd])) continue;
        int kx = cfg[bnd] == 9 ? SW : SE, ky = cfg[bnd] == 9 ? NE : NW;
        int32_t z0 = v->z[bnd], z1 = v->z[bnd + 1], bx, tx, by, ty;
        cell(g, i - 1 + (kx >> 1), j - 1 + (kx & 1), &bx, &tx);
        cell(g, i - 1 + (ky >> 1), j - 1 + (ky & 1), &by, &ty);
        int any = 0;
        /* the cell that ends at a band end gets its own vertex there;
         * when both do, Y alone moves */
        if (ty == z1) v->dup[bnd + 1] |= 1 << ky, any = 1;
        else if (tx == z1) v->dup[bnd + 1] |= 1 << kx, any = 1;
        if (by == z0) v->dup[bnd] |= 1 << ky, any = 1;
        else if (bx == z0) v->dup[bnd] |= 1 << kx, any = 1;
        if (!any) {
            if (z1 - z0 < 2)
                return d2_fail(e, D2_EINPUT,
                               "mesh grid: heights %.6f and %.6f mm at x %.4f, y %.4f mm are "
                               "closer than the z grid allows",
                               z0 * MESH_QZ_MM, z1 * MESH_QZ_MM, g->xs[j] * MESH_Q_MM,
                               g->ys[i] * MESH_Q_MM);
            v->mid[bnd] |= 1 << ky;
        }
    }
    for (int zi = 0; zi < v->nz; zi++) {
        int below = zi > 0 ? cfg[zi - 1] : 0, above = zi + 1 < v->nz ? cfg[zi] : 0;
        if (diagonal(below) || diagonal(above)) continue; /* resolved above */
        if (!x->conn[below | above << 4] || !x->conn[~(below | above << 4) & 255])
            return d2_fail(e, D2_EINPUT,
                           "mesh grid: material touches only at the point x %.4f, y %.4f, "
                           "z %.4f mm",
                           g->xs[j] * MESH_Q_MM, g->ys[i] * MESH_Q_MM, v->z[zi] * MESH_QZ_MM);
    }
    return 0;
}

int mesh_add_grid(mesh *m, const mesh_grid *g, d2_err *e)
{
    int rc;
    if ((rc = grid_validate(g, e))) return rc;
    gctx x = {m, g, NULL, EPS, m->nv == 0, NULL, 0, 0, {0}};
    for (int s = 0; s < 256; s++) x.conn[s] = (uint8_t)connected8(s);
    size_t nv = (size_t)(g->nx + 1) * (g->ny + 1);
    vinfo *vi = d2_calloc(nv, sizeof *vi, "mesh grid vertices", e);
    uint8_t *done = d2_malloc((size_t)g->nx * g->ny, "mesh grid faces", e);
    if (!vi || !done) {
        rc = D2_EIO;
        goto fail;
    }
    x.vi = vi;
    if ((rc = grid_side_contacts(g, e))) goto fail;
    for (int i = 0; i <= g->ny; i++)
        for (int j = 0; j <= g->nx; j++)
            if ((rc = grid_vertex(&x, i, j, e))) goto fail;

    /* Room for every grid-point vertex and about twice as many facets (a
     * closed surface has 2 V - 4 + 4 genus), so the arrays grow once. */
    size_t zsum = 0;
    for (size_t k = 0; k < nv; k++) zsum += vi[k].nz;
    mesh_reserve(m, zsum, 2 * zsum + 1024);

    /* Walls on the x = const sides: A west, B east. */
    for (int j = 0; j <= g->nx; j++)
        for (int i = 0; i < g->ny; i++)
            walls(&x, i, j - 1, i, j, i, j, i + 1, j, NW, SW, NE, SE, 1);
    /* Walls on the y = const sides: A south, B north. */
    for (int i = 0; i <= g->ny; i++)
        for (int j = 0; j < g->nx; j++)
            walls(&x, i - 1, j, i, j, i, j, i, j + 1, SE, SW, NE, NW, 0);
    if (m->oom || flat_faces(&x, 1, done) || flat_faces(&x, 0, done) || m->oom) {
        rc = d2_fail(e, D2_EIO, "out of memory building a mesh of %zu facets", m->nt);
        goto fail;
    }
    rc = 0;
fail:
    free(vi);
    free(done);
    free(x.og);
    return rc;
}
