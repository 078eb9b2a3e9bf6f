/* Fuzz target: the mesh builder fed arbitrary height maps.
 *
 * Input layout (missing bytes read as 0):
 *   byte 0: rows - 1 (mod 12)    byte 1: cols - 1 (mod 12)
 *   byte 2: pitch, 0.05 + b * 0.01 mm
 *   byte 3: flags: 1 bottom map, 2 pin holes, 4 labels, 8 a painted
 *           rectangle, 16 last part (no posts), 128 raw grid mode (below)
 *   byte 4: gap to the next part, 3 + b * 0.1 mm
 *   then rows x cols tops (and bottoms with flag 1), 2 bytes each, little
 *   endian: v * 0.002 mm, except 0xffff NaN, 0xfffe -0.5 mm, 0xfffd infinity.
 * Raw grid mode feeds mesh_add_grid directly: nx, ny = 1 + b % 5, column and
 * row widths 4 + b % 40 grid units, bottoms and tops (b % 6) * 1000 units, so
 * cells often meet at equal heights.
 *
 * What the builder accepts must be a closed 2-manifold with a positive
 * volume matching the designed one (less the corner-gap wedges), and must
 * stay closed once written as a binary STL (float coordinates) of
 * 84 + 50 x facets bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "fuzz/fuzzlib.h"
#include "mesh/mesh.h"

typedef struct reader {
    const uint8_t *d;
    size_t n, at;
} reader;

static unsigned byte(reader *r) { return r->at < r->n ? r->d[r->at++] : 0; }

static float height(reader *r)
{
    unsigned v = byte(r) | byte(r) << 8;
    if (v == 0xffff) return NAN;
    if (v == 0xfffe) return -0.5f;
    if (v == 0xfffd) return INFINITY;
    return (float)(v * 0.002);
}

/* m must be closed and survive the trip through a binary STL. */
static void check_mesh(mesh *m, const char *what)
{
    mesh_report rep;
    d2_err e = {0};
    if (mesh_check(m, &rep, &e)) fz_bug("%s: mesh_check failed: %s", what, e.msg);
    if (!rep.closed || rep.facets == 0 || !(rep.volume_mm3 > 0))
        fz_bug("%s: not a closed solid: %zu facets, %zu open, %zu non-manifold edges, %zu "
               "inconsistent, %zu non-manifold vertices, %zu degenerate, volume %g",
               what, rep.facets, rep.open_edges, rep.nonmanifold_edges, rep.inconsistent_edges,
               rep.nonmanifold_vertices, rep.degenerate_facets, rep.volume_mm3);
    const char *stl = fz_path("part.stl");
    mesh_part part = {m, "part", {0, 0, 0}};
    size_t bytes = 0;
    if (mesh_write(stl, MESH_STL, &part, 1, &bytes, &e)) fz_bug("%s: mesh_write: %s", what, e.msg);
    char *buf = NULL;
    size_t n = 0;
    if (d2_read_file(stl, 1u << 30, &buf, &n, &e)) fz_bug("%s: %s", what, e.msg);
    uint32_t facets;
    memcpy(&facets, buf + 80, 4);
    if (n != bytes || n != 84 + 50 * (size_t)facets || facets != rep.facets)
        fz_bug("%s: STL of %zu bytes for %u facets (mesh has %zu)", what, n, facets, rep.facets);
    float *xyz = malloc(sizeof(float) * 9 * (size_t)facets);
    if (!xyz) fz_bug("out of memory");
    for (size_t f = 0; f < facets; f++) memcpy(xyz + 9 * f, buf + 84 + 50 * f + 12, 36);
    mesh_report soup;
    if (mesh_check_soup(xyz, facets, &soup, &e)) fz_bug("%s: %s", what, e.msg);
    if (!soup.closed)
        fz_bug("%s: closed on the grid but not in the STL's float coordinates (%zu open, %zu "
               "non-manifold edges, %zu degenerate facets)",
               what, soup.open_edges, soup.nonmanifold_edges, soup.degenerate_facets);
    free(xyz);
    free(buf);
}

static int raw_grid(reader *r)
{
    int nx = 1 + (int)(byte(r) % 5), ny = 1 + (int)(byte(r) % 5);
    int32_t xs[6], ys[6], bot[25], top[25];
    xs[0] = ys[0] = 0;
    for (int i = 1; i <= nx; i++) xs[i] = xs[i - 1] + 4 + (int32_t)(byte(r) % 40);
    for (int i = 1; i <= ny; i++) ys[i] = ys[i - 1] + 4 + (int32_t)(byte(r) % 40);
    for (int k = 0; k < nx * ny; k++) {
        bot[k] = (int32_t)(byte(r) % 6) * 1000;
        top[k] = (int32_t)(byte(r) % 6) * 1000;
    }
    mesh_grid g = {nx, ny, xs, ys, bot, top};
    d2_err e = {0};
    mesh *m = mesh_new(&e);
    if (!m) fz_bug("mesh_new: %s", e.msg);
    int rc = mesh_add_grid(m, &g, &e), accepted = 0, solid = 0;
    for (int k = 0; k < nx * ny; k++) solid |= top[k] > bot[k];
    if (rc) {
        fz_check_refusal(rc, &e, NULL, "mesh_add_grid");
    } else if (solid) {
        accepted = 1;
        check_mesh(m, "mesh_add_grid");
    } else if (mesh_facets(m)) {
        fz_bug("mesh_add_grid made %zu facets from an empty grid", mesh_facets(m));
    }
    mesh_free(m);
    return accepted;
}

int fuzz_mesh(const uint8_t *data, size_t size)
{
    reader r = {data, size, 0};
    int rows = 1 + (int)(byte(&r) % 12), cols = 1 + (int)(byte(&r) % 12);
    double pitch = 0.05 + byte(&r) * 0.01;
    unsigned flags = byte(&r);
    double gap = 3 + byte(&r) * 0.1;
    if (flags & 128) return raw_grid(&r);
    float top[144], bot[144];
    for (int k = 0; k < rows * cols; k++) top[k] = height(&r);
    if (flags & 1)
        for (int k = 0; k < rows * cols; k++) bot[k] = height(&r);
    mesh_rect rect = {-0.3 * cols * pitch, -0.2 * rows * pitch, 0.1 * cols * pitch,
                      0.4 * rows * pitch, 0, (double)height(&r)};
    mesh_plate p;
    memset(&p, 0, sizeof p);
    p.rows = rows;
    p.cols = cols;
    p.pitch_mm = pitch;
    p.top_mm = top;
    p.bot_mm = flags & 1 ? bot : NULL;
    p.rects = flags & 8 ? &rect : NULL;
    p.nrects = flags & 8 ? 1 : 0;
    p.gap_mm = flags & 16 ? 0 : gap;
    p.holes = !!(flags & 2);
    p.label_top = flags & 4 ? "L1" : NULL;
    p.label_bottom = flags & 4 ? "SRC" : NULL;
    mesh_frame_default(&p.frame, NULL);
    mesh *m = NULL;
    mesh_plate_info info;
    d2_err e = {0};
    int rc = mesh_build_plate(&p, &m, &info, &e);
    if (rc) {
        fz_check_refusal(rc, &e, NULL, "mesh_build_plate");
        if (m) fz_bug("mesh_build_plate failed but made a mesh");
        return 0;
    }
    if (!m) fz_bug("mesh_build_plate succeeded without a mesh");
    check_mesh(m, "mesh_build_plate");
    /* The mesh lacks the corner-gap wedges of the designed solid: where two
     * cells touch only along a vertical edge, a corner of one is moved 0.1 um
     * into it along a band of at most the cell's height, which removes less
     * than 0.1 um x side x height per corner. Bound: four such corners per
     * cell and per label pixel, plus rounding. */
    double v = mesh_volume_mm3(m), wedges = 0, eps = MESH_Q_MM;
    for (int k = 0; k < rows * cols; k++) wedges += 4 * eps * pitch * fmax(0, top[k]);
    if (flags & 8) wedges += 4 * eps * pitch * fmax(0, rect.top_mm) * rows * cols;
    if (flags & 4) wedges += 4 * eps * p.frame.font_px_mm * 4 * p.frame.thick_mm * 35 * 5;
    double bound = 1e-9 * info.ideal_volume_mm3 + wedges + 1e-9;
    if (!(v <= info.ideal_volume_mm3 + 1e-9 * info.ideal_volume_mm3 + 1e-9 &&
          v >= info.ideal_volume_mm3 - bound))
        fz_bug("plate volume %.9g mm3, designed %.9g mm3 (corner gaps may take %.3g mm3)", v,
               info.ideal_volume_mm3, wedges);
    mesh_free(m);
    return 1;
}

FUZZ_ENTRY(fuzz_mesh)
