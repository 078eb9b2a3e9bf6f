/* Tests for the mesh module: closed manifold solids from height maps, the
 * frame and its alignment features, file formats, the stack command and the
 * mesh check. External validators (admesh, prusa-slicer --info, assimp info)
 * are run on what the tests write. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "core/npy.h"
#include "core/util.h"
#include "mesh/mesh.h"
#include "mesh/mesh_int.h"
#include "testlib.h"

/* ---------------------------------------------------------------- helpers */

/* Runs a shell command; returns its exit status and its output (stdout and
 * stderr) in out. */
static int run(const char *cmd, char *out, size_t cap)
{
    char full[2048];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The number after "key" and the colon or equals sign that follows it. */
static double after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p) return NAN;
    p += strlen(key);
    while (*p && (*p == ' ' || *p == ':' || *p == '=')) p++;
    char *end;
    double v = strtod(p, &end);
    return end == p ? NAN : v;
}

static char outbuf[1 << 16];

/* admesh: no disconnected facets, no backwards edges, `parts` parts; its
 * volume (single precision) within 1e-3 of vol. */
static void check_admesh(const char *path, int parts, double vol)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "admesh '%s'", path);
    int rc = run(cmd, outbuf, sizeof outbuf);
    CHECK(rc == 0);
    double disc = after(outbuf, "Total disconnected facets"), back = after(outbuf, "Backwards edges");
    double np = after(outbuf, "Number of parts"), av = after(outbuf, "Volume");
    CHECK(disc == 0);
    CHECK(back == 0);
    CHECK(np == parts);
    CHECK_NEAR(av, vol, 1e-3 * vol);
    if (disc != 0 || back != 0 || np != parts) printf("%s\n", outbuf);
}

/* prusa-slicer --info: manifold = yes and `parts` parts. */
static void check_prusa(const char *path, int parts)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "prusa-slicer --info '%s'", path);
    int rc = run(cmd, outbuf, sizeof outbuf);
    CHECK(rc == 0);
    CHECK(strstr(outbuf, "manifold = yes") != NULL);
    CHECK(after(outbuf, "number_of_parts") == parts);
}

/* assimp info: the facet count. */
static void check_assimp_info(const char *path, size_t facets)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "assimp info '%s'", path);
    int rc = run(cmd, outbuf, sizeof outbuf);
    CHECK(rc == 0);
    CHECK(after(outbuf, "\nFaces") == (double)facets);
}

static void check_closed(const mesh *m, size_t parts)
{
    mesh_report r;
    d2_err e = {0};
    CHECK(mesh_check(m, &r, &e) == 0);
    CHECK(r.closed);
    CHECK(r.parts == parts);
    CHECK(r.open_edges == 0 && r.nonmanifold_edges == 0 && r.inconsistent_edges == 0);
    CHECK(r.nonmanifold_vertices == 0 && r.degenerate_facets == 0);
    CHECK(r.volume_mm3 > 0);
    if (!r.closed)
        printf("  open %zu, non-manifold %zu, inconsistent %zu, nm vertices %zu, degenerate %zu\n",
               r.open_edges, r.nonmanifold_edges, r.inconsistent_edges, r.nonmanifold_vertices,
               r.degenerate_facets);
}

/* All coordinates >= 0. */
static void check_nonneg(const mesh *m)
{
    double lo[3], hi[3];
    mesh_bbox_mm(m, lo, hi);
    CHECK(lo[0] >= 0 && lo[1] >= 0 && lo[2] >= 0);
}

/* Crossings of the upward vertical ray from (x, y, z) with the mesh's facets;
 * *top receives the highest crossing. Probe points must avoid grid lines. */
static int ray_up(const mesh *m, double x, double y, double z, double *top)
{
    int n = 0;
    if (top) *top = -INFINITY;
    for (size_t f = 0; f < mesh_facets(m); f++) {
        uint32_t t[3];
        mesh_facet(m, f, t);
        double p[3][3];
        for (int k = 0; k < 3; k++) {
            int32_t v[3];
            mesh_vertex(m, t[k], v);
            p[k][0] = v[0] * MESH_Q_MM;
            p[k][1] = v[1] * MESH_Q_MM;
            p[k][2] = v[2] * MESH_QZ_MM;
        }
        double d = (p[1][0] - p[0][0]) * (p[2][1] - p[0][1]) - (p[2][0] - p[0][0]) * (p[1][1] - p[0][1]);
        if (fabs(d) < 1e-12) continue;
        double a = ((p[1][0] - x) * (p[2][1] - y) - (p[2][0] - x) * (p[1][1] - y)) / d;
        double b = ((p[2][0] - x) * (p[0][1] - y) - (p[0][0] - x) * (p[2][1] - y)) / d;
        double c = 1 - a - b;
        if (a < 0 || b < 0 || c < 0) continue;
        double zz = a * p[0][2] + b * p[1][2] + c * p[2][2];
        if (zz <= z) continue;
        n++;
        if (top && zz > *top) *top = zz;
    }
    return n;
}

static int solid_at(const mesh *m, double x, double y, double z) { return ray_up(m, x, y, z, NULL) & 1; }

static float *random_heights(int n, unsigned seed, double base, int levels, double step)
{
    d2_rng r;
    d2_rng_seed(&r, seed);
    float *h = malloc((size_t)n * n * sizeof *h);
    for (int i = 0; i < n * n; i++) h[i] = (float)(base + d2_rng_below(&r, levels) * step);
    return h;
}

static void plate_defaults(mesh_plate *p, int n, double pitch, const float *top)
{
    memset(p, 0, sizeof *p);
    p->rows = p->cols = n;
    p->pitch_mm = pitch;
    p->top_mm = top;
    mesh_frame_default(&p->frame, NULL);
}

/* Pixels lit in the label font, counted by hand from the 5x7 glyphs. */
#define PIX_L1 21  /* L 11, 1 10 */
#define PIX_SRC 46 /* S 15, R 18, C 13 */

/* ------------------------------------------------------------ the solids */

TEST(mesh_of_checkerboard_is_closed)
{
    for (int n = 8; n <= 32; n += 8) {
        int32_t xs[33], ys[33], bot[32 * 32], top[32 * 32];
        for (int i = 0; i <= n; i++) xs[i] = ys[i] = i * 4000; /* 0.4 mm */
        __int128 ideal = 0;
        for (int i = 0; i < n * n; i++) {
            bot[i] = 0;
            top[i] = ((i / n + i % n) % 2) ? 30000 : 20000; /* 1.5 and 1.0 mm */
            ideal += (__int128)4000 * 4000 * top[i];
        }
        mesh_grid g = {n, n, xs, ys, bot, top};
        d2_err e = {0};
        mesh *m = mesh_new(&e);
        CHECK(mesh_add_grid(m, &g, &e) == 0);
        check_closed(m, 1);
        check_nonneg(m);
        double v = (double)ideal * MESH_Q_MM * MESH_Q_MM * MESH_QZ_MM;
        CHECK_NEAR(mesh_volume_mm3(m), v, 1e-4 * v);
        const char *path = t_path("checker.stl");
        mesh_part part = {m, "checker", {0, 0, 0}};
        CHECK(mesh_write(path, MESH_STL, &part, 1, NULL, &e) == 0);
        check_admesh(path, 1, v);
        check_prusa(path, 1);
        check_assimp_info(path, mesh_facets(m));
        mesh_free(m);
    }
}

TEST(mesh_of_random_heights_is_closed_and_passes_validators)
{
    for (int n = 8; n <= 32; n += 8) {
        float *h = random_heights(n, 100 + n, 0.5, 65, 0.016);
        mesh_plate p;
        plate_defaults(&p, n, 0.4, h);
        d2_err e = {0};
        mesh *m = NULL;
        mesh_plate_info info;
        CHECK(mesh_build_plate(&p, &m, &info, &e) == 0);
        if (!m) {
            printf("  %s\n", e.msg);
            free(h);
            continue;
        }
        check_closed(m, 1);
        check_nonneg(m);
        const char *path = t_path("random.stl");
        mesh_part part = {m, "layer", {0, 0, 0}};
        size_t bytes = 0;
        CHECK(mesh_write(path, MESH_STL, &part, 1, &bytes, &e) == 0);
        check_admesh(path, 1, mesh_volume_mm3(m));
        check_prusa(path, 1);
        check_assimp_info(path, mesh_facets(m));
        mesh_free(m);
        free(h);
    }
}

TEST(two_sided_random_grids_are_closed_or_refused_with_a_reason)
{
    /* Random bottoms and tops on small irregular grids, with empty cells:
     * every accepted grid must give a closed manifold of the cells' volume;
     * refused ones name the rule. */
    d2_rng r;
    d2_rng_seed(&r, 7);
    int accepted = 0, refused = 0;
    for (int trial = 0; trial < 300; trial++) {
        int nx = 3 + (int)d2_rng_below(&r, 8), ny = 3 + (int)d2_rng_below(&r, 8);
        /* mode 0: flat bottoms (pillar plates with through-cuts); 1: coarse
         * levels, so heights often coincide; 2: fine levels, two-sided */
        int mode = trial % 3;
        int32_t xs[12], ys[12], bot[121], top[121], zu = mode == 2 ? 2 : trial % 4 == 3 ? 2 : 200;
        xs[0] = ys[0] = 0;
        for (int i = 1; i <= nx; i++) xs[i] = xs[i - 1] + 1000 + (int32_t)d2_rng_below(&r, 4000);
        for (int i = 1; i <= ny; i++) ys[i] = ys[i - 1] + 1000 + (int32_t)d2_rng_below(&r, 4000);
        __int128 ideal = 0;
        for (int i = 0; i < nx * ny; i++) {
            int empty = d2_rng_below(&r, 6) == 0;
            int lv = mode == 0 ? 1 : mode == 1 ? 4 : 2000;
            bot[i] = zu * (int32_t)d2_rng_below(&r, lv);
            top[i] = empty ? bot[i] : bot[i] + zu * (1 + (int32_t)d2_rng_below(&r, mode == 2 ? 2000 : 4));
            ideal += (__int128)(xs[i % nx + 1] - xs[i % nx]) * (ys[i / nx + 1] - ys[i / nx]) *
                     (top[i] - bot[i]);
        }
        mesh_grid g = {nx, ny, xs, ys, bot, top};
        d2_err e = {0};
        mesh *m = mesh_new(&e);
        int rc = mesh_add_grid(m, &g, &e);
        if (rc) {
            refused++;
            CHECK(rc == D2_EINPUT);
            CHECK(strstr(e.msg, "only along an edge") || strstr(e.msg, "only at the point"));
        } else if (mesh_facets(m)) {
            accepted++;
            mesh_report rep;
            CHECK(mesh_check(m, &rep, &e) == 0);
            CHECK(rep.closed);
            if (!rep.closed)
                printf("  trial %d: open %zu nm %zu inc %zu nmv %zu\n", trial, rep.open_edges,
                       rep.nonmanifold_edges, rep.inconsistent_edges, rep.nonmanifold_vertices);
            /* Each vertex moved off the grid (a corner gap) removes a
             * wedge under 0.1 um x the tallest band x the widest cell; a
             * missing or flipped face would change far more. */
            size_t off = 0;
            for (size_t k = 0; k < mesh_vertices(m); k++) {
                int32_t p[3];
                mesh_vertex(m, k, p);
                int on = 0;
                for (int q = 0; q <= nx && !on; q++) on = p[0] == xs[q];
                for (int q = 0; q <= ny && !on; q++) on = p[1] == ys[q];
                off += !on;
            }
            double v = (double)ideal * MESH_Q_MM * MESH_Q_MM * MESH_QZ_MM;
            double tol = off * 1e-4 * (mode == 2 ? 8000 : 7 * zu) * MESH_QZ_MM * 0.5 + 1e-12;
            CHECK_NEAR(mesh_volume_mm3(m), v, tol);
        }
        mesh_free(m);
    }
    CHECK(accepted >= 100);
    CHECK(refused >= 10);
}

TEST(grid_refuses_cells_touching_along_an_edge_or_at_a_point)
{
    int32_t xs[3] = {0, 1000, 2000}, ys[3] = {0, 1000, 2000};
    d2_err e = {0};
    mesh *m = mesh_new(&e);
    /* side neighbours: one's top is the other's bottom */
    int32_t b1[4] = {0, 10, 0, 0}, t1[4] = {10, 20, 0, 0};
    mesh_grid g1 = {2, 2, xs, ys, b1, t1};
    CHECK_ERR(mesh_add_grid(m, &g1, &e), e, D2_EINPUT, "only along an edge");
    /* diagonal neighbours meeting at one point */
    int32_t b2[4] = {0, 0, 0, 10}, t2[4] = {10, 0, 0, 20};
    mesh_grid g2 = {2, 2, xs, ys, b2, t2};
    CHECK_ERR(mesh_add_grid(m, &g2, &e), e, D2_EINPUT, "only at the point");
    /* cells thinner than the grid allows */
    int32_t xt[3] = {0, 2, 2000};
    int32_t b3[4] = {0}, t3[4] = {10, 10, 10, 10};
    mesh_grid g3 = {2, 2, xt, ys, b3, t3};
    CHECK_ERR(mesh_add_grid(m, &g3, &e), e, D2_EINPUT, "at least");
    mesh_free(m);
}

TEST(diagonal_band_inside_both_cells_is_split_at_its_middle)
{
    /* SW and NE span 0..10 and NE..; SE ends at 3 and NW starts at 7, so
     * between 3 and 7 only the diagonal pair holds material and neither of
     * them ends there: the band must be split by a moved midpoint. */
    int32_t xs[3] = {0, 1000, 2000}, ys[3] = {0, 1000, 2000};
    int32_t b[4] = {0, 0, 1400, 0}, t[4] = {2000, 600, 2000, 2000};
    mesh_grid g = {2, 2, xs, ys, b, t};
    d2_err e = {0};
    mesh *m = mesh_new(&e);
    CHECK(mesh_add_grid(m, &g, &e) == 0);
    check_closed(m, 1);
    double v = (2000 + 600 + 600 + 2000) * 1e6 * MESH_Q_MM * MESH_Q_MM * MESH_QZ_MM;
    CHECK_NEAR(mesh_volume_mm3(m), v, 1e-4 * v);
    mesh_free(m);
}

TEST(diagonal_through_cuts_give_separate_closed_parts)
{
    /* A 2x2 checkerboard of through-cuts: the two solid cells touch only
     * along their common vertical edge and come out as two closed parts. */
    int32_t xs[3] = {0, 1000, 2000}, ys[3] = {0, 1000, 2000};
    int32_t b[4] = {0, 0, 0, 0}, t[4] = {100, 0, 0, 100};
    mesh_grid g = {2, 2, xs, ys, b, t};
    d2_err e = {0};
    mesh *m = mesh_new(&e);
    CHECK(mesh_add_grid(m, &g, &e) == 0);
    check_closed(m, 2);
    mesh_free(m);
}

/* ------------------------------------------------------- frame features */

/* The analytic volume of a default-frame layer plate of n x n cells of
 * `pitch` with heights h, posts of gap, holes, labels "L1" / "SRC". */
static double plate_volume(int n, double pitch, const float *h, double gap, int holes,
                           const mesh_frame *f)
{
    double A = n * pitch, S = A + 2 * f->width_mm, v = 0;
    for (int i = 0; i < n * n; i++) v += h[i] * pitch * pitch;
    v += (S * S - A * A) * f->thick_mm;
    if (gap > 0) {
        v += 4 * f->post_mm * f->post_mm * (gap - f->thick_mm);
        v += 4 * f->pin_mm * f->pin_mm * f->pin_len_mm;
    }
    double hole = f->pin_mm + 2 * f->clearance_mm;
    if (holes) v -= 4 * hole * hole * (f->pin_len_mm + f->clearance_mm);
    double px = ceil(f->font_px_mm / pitch - 1e-9) * pitch;
    v -= (PIX_L1 + PIX_SRC) * px * px * f->engrave_mm;
    return v;
}

TEST(plate_volume_equals_height_map_plus_frame_features)
{
    int n = 40;
    double pitch = 0.5;
    float *h = random_heights(n, 3, 0.5, 65, 0.016);
    mesh_plate p;
    plate_defaults(&p, n, pitch, h);
    p.gap_mm = 8;
    p.holes = 1;
    p.label_top = "L1";
    p.label_bottom = "SRC";
    d2_err e = {0};
    mesh *m = NULL;
    mesh_plate_info info;
    CHECK(mesh_build_plate(&p, &m, &info, &e) == 0);
    if (m) {
        double want = plate_volume(n, pitch, h, 8, 1, &p.frame);
        CHECK_NEAR(info.ideal_volume_mm3, want, 1e-9 * want);
        CHECK_NEAR(mesh_volume_mm3(m), want, 1e-5 * want);
        check_closed(m, 1);
        double S = n * pitch + 20;
        CHECK_NEAR(info.size_mm[0], S, 1e-9);
        CHECK_NEAR(info.size_mm[2], 8 + p.frame.pin_len_mm, 1e-9);
        CHECK_NEAR(info.axis_mm[0], S / 2, 1e-9);
        double lo[3], hi[3];
        mesh_bbox_mm(m, lo, hi);
        CHECK_NEAR(hi[0], S, 1e-9);
        CHECK_NEAR(hi[2], 8 + p.frame.pin_len_mm, 1e-9);
    }
    mesh_free(m);
    free(h);
}

TEST(top_view_of_a_layer_plate_is_its_height_map)
{
    /* A ray cast down every pixel centre finds the pillar top; the render
     * is written as a PNG (kept with D2FAB_KEEP_TMP=1) for a look. */
    int n = 24;
    double pitch = 0.4;
    float *h = random_heights(n, 11, 0.6, 65, 0.016);
    mesh_plate p;
    plate_defaults(&p, n, pitch, h);
    d2_err e = {0};
    mesh *m = NULL;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    if (!m) {
        free(h);
        return;
    }
    float *img = malloc((size_t)n * n * sizeof *img);
    double worst = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double top;
            double x = 10 + (j + 0.37) * pitch, y = 10 + (i + 0.61) * pitch;
            int crossings = ray_up(m, x, y, -1, &top);
            CHECK(crossings == 2); /* bottom and top: one solid layer */
            img[(size_t)(n - 1 - i) * n + j] = (float)top;
            worst = fmax(worst, fabs(top - h[(size_t)i * n + j]));
        }
    CHECK(worst < 1.5e-4); /* heights are built on a 0.1 um grid */
    CHECK(img_write_colormap(t_path("topview.png"), n, n, img, 0.6f, 1.65f, CMAP_VIRIDIS, 8, &e) == 0);
    free(img);
    mesh_free(m);
    free(h);
}

TEST(pins_enter_the_next_plates_holes_and_only_one_way_round)
{
    int n = 40;
    double pitch = 0.5, gap = 9;
    mesh_plate p;
    plate_defaults(&p, n, pitch, NULL);
    p.gap_mm = gap;
    p.holes = 1;
    d2_err e = {0};
    mesh *m = NULL;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    if (!m) return;
    const mesh_frame *f = &p.frame;
    double W = f->width_mm, S = n * pitch + 2 * W, c = f->clearance_mm;
    double pin = f->pin_mm, depth = f->pin_len_mm + c;
    double cx[4] = {W / 2, S - W / 2, S - W / 2, W / 2 + f->key_mm};
    double cy[4] = {W / 2, W / 2, S - W / 2, S - W / 2};
    for (int k = 0; k < 4; k++) {
        double x = cx[k] + 0.013, y = cy[k] + 0.017;
        /* the pin of this plate: material above the shoulder */
        CHECK(solid_at(m, x, y, gap + f->pin_len_mm / 2));
        CHECK(!solid_at(m, x + pin / 2 + c / 2, y, gap + f->pin_len_mm / 2));
        /* the next plate (same design) has a hole there: no material from
         * its datum face up to the hole depth, with the clearance all round */
        CHECK(!solid_at(m, x, y, depth / 2));
        CHECK(!solid_at(m, x + pin / 2 + c * 0.6, y, depth / 2));
        CHECK(!solid_at(m, x, y - pin / 2 - c * 0.6, depth / 2));
        CHECK(solid_at(m, x + pin / 2 + c + 0.05, y, depth / 2));
        CHECK(solid_at(m, x, y, depth + 0.05));
    }
    /* Points over every pin's cross-section: as designed they all fall in
     * the next plate's holes; turned by 90, 180 or 270 degrees or mirrored,
     * some land on its material. */
    for (int t = 0; t < 8; t++) {
        int blocked = 0;
        for (int k = 0; k < 4; k++)
            for (int a = 0; a < 5; a++)
                for (int b = 0; b < 5; b++) {
                    double u = cx[k] - S / 2 + (a - 2) * (pin / 2 - 0.02) / 2 + 0.0013;
                    double v = cy[k] - S / 2 + (b - 2) * (pin / 2 - 0.02) / 2 + 0.0017;
                    for (int r = 0; r < (t & 3); r++) {
                        double w = u;
                        u = -v;
                        v = w;
                    }
                    if (t >= 4) u = -u;
                    if (solid_at(m, S / 2 + u, S / 2 + v, depth / 2)) blocked = 1;
                }
        CHECK(blocked == (t != 0));
    }
    mesh_free(m);
}

TEST(through_cut_mask_plate_is_closed_and_its_island_a_second_part)
{
    /* The mask stage's use: an opaque plate with cells cut through (a ring
     * and a bar), frame, posts and holes. */
    int n = 40;
    float *top = malloc(n * n * sizeof *top);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double r = hypot(i - 19.5, j - 19.5);
            int cut = (r > 8 && r < 11) || (i == 5 && j > 4 && j < 30);
            top[i * n + j] = cut ? 0.0f : 2.0f;
        }
    mesh_plate p;
    plate_defaults(&p, n, 0.5, top);
    p.gap_mm = 20;
    p.label_top = "M7";
    p.label_bottom = "SRC";
    d2_err e = {0};
    mesh *m = NULL;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    if (m) {
        /* the ring's inner disc is an island: two parts */
        check_closed(m, 2);
        const char *path = t_path("mask.stl");
        mesh_part part = {m, "mask", {0, 0, 0}};
        CHECK(mesh_write(path, MESH_STL, &part, 1, NULL, &e) == 0);
        check_admesh(path, 2, mesh_volume_mm3(m));
        check_prusa(path, 2);
    }
    mesh_free(m);
    free(top);
}

/* ---------------------------------------------------------------- files */

TEST(stl_is_84_plus_50_bytes_per_facet_with_a_header_not_starting_with_solid)
{
    float *h = random_heights(16, 5, 1, 8, 0.1);
    mesh_plate p;
    plate_defaults(&p, 16, 0.4, h);
    d2_err e = {0};
    mesh *m = NULL;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    if (m) {
        const char *path = t_path("size.stl");
        mesh_part part = {m, "p", {0, 0, 0}};
        size_t bytes = 0;
        CHECK(mesh_write(path, MESH_STL, &part, 1, &bytes, &e) == 0);
        struct stat st;
        CHECK(stat(path, &st) == 0 && (size_t)st.st_size == 84 + 50 * mesh_facets(m));
        CHECK(bytes == (size_t)st.st_size);
        FILE *fp = fopen(path, "rb");
        unsigned char hdr[84] = {0};
        CHECK(fp && fread(hdr, 1, 84, fp) == 84);
        if (fp) fclose(fp);
        CHECK(memcmp(hdr, "solid", 5) != 0);
        uint32_t cnt = hdr[80] | hdr[81] << 8 | hdr[82] << 16 | (uint32_t)hdr[83] << 24;
        CHECK(cnt == mesh_facets(m));
    }
    mesh_free(m);
    free(h);
}

TEST(every_format_loads_back_through_assimp_with_the_same_facets_and_volume)
{
    float *h = random_heights(16, 9, 0.5, 65, 0.016);
    mesh_plate p;
    plate_defaults(&p, 16, 0.4, h);
    p.gap_mm = 5;
    p.holes = 1;
    d2_err e = {0};
    mesh *m = NULL;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    if (!m) {
        free(h);
        return;
    }
    double vol = mesh_volume_mm3(m);
    const char *fmts[] = {"stl", "3mf", "obj", "ply", "glb"};
    for (int i = 0; i < 5; i++) {
        mesh_format fmt;
        CHECK(mesh_format_parse(fmts[i], &fmt, &e) == 0);
        char name[32];
        snprintf(name, sizeof name, "round.%s", fmts[i]);
        const char *path = t_path(name);
        mesh_part part = {m, "layer1", {0, 0, 0}};
        CHECK(mesh_write(path, fmt, &part, 1, NULL, &e) == 0);
        mesh_report r;
        CHECK(mesh_check_file(path, &r, &e) == 0);
        CHECK(r.facets == mesh_facets(m));
        CHECK(r.closed);
        CHECK(r.parts == 1);
        CHECK_NEAR(r.volume_mm3, vol, 1e-6 * vol);
        if (r.facets != mesh_facets(m)) printf("  %s: %zu facets\n", fmts[i], r.facets);
    }
    mesh_format f;
    CHECK_ERR(mesh_format_parse("step", &f, &e), e, D2_EUSAGE, "expected stl, 3mf");
    mesh_free(m);
    free(h);
}

TEST(plates_beyond_100_mm_keep_their_corner_gaps_in_every_format)
{
    /* A checkerboard at 5.3 mm pitch spans 10..116 mm: its corner gaps
     * (0.1 um) sit where six significant digits no longer separate them. */
    int n = 20;
    float *h = malloc(n * n * sizeof *h);
    for (int i = 0; i < n * n; i++) h[i] = ((i / n + i % n) % 2) ? 1.2345f : 0.6789f;
    mesh_plate p;
    plate_defaults(&p, n, 5.3, h);
    d2_err e = {0};
    mesh *m = NULL;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    for (int i = 0; m && i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "big.%s", mesh_format_ext((mesh_format)i));
        const char *path = t_path(name);
        mesh_part part = {m, "big", {0, 0, 150}};
        CHECK(mesh_write(path, (mesh_format)i, &part, 1, NULL, &e) == 0);
        mesh_report r;
        CHECK(mesh_check_file(path, &r, &e) == 0);
        CHECK(r.closed && r.facets == mesh_facets(m));
        if (!r.closed) printf("  %s: %zu non-manifold vertices\n", name, r.nonmanifold_vertices);
    }
    mesh_free(m);
    free(h);
}

/* The zip member `name` of a zip file, inflated; NULL when absent. *method
 * receives its compression method (0 stored, 8 deflated). Caller frees. */
static char *zip_member(const char *path, const char *name, int *method, size_t *csize)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char h[30];
    char fname[256];
    char *out = NULL;
    while (fread(h, 1, 30, f) == 30 && h[0] == 'P' && h[1] == 'K' && h[2] == 3 && h[3] == 4) {
        unsigned meth = h[8] | h[9] << 8, nl = h[26] | h[27] << 8, xl = h[28] | h[29] << 8;
        uint32_t cs = h[18] | h[19] << 8 | (uint32_t)h[20] << 16 | (uint32_t)h[21] << 24;
        uint32_t us = h[22] | h[23] << 8 | (uint32_t)h[24] << 16 | (uint32_t)h[25] << 24;
        if (nl >= sizeof fname || fread(fname, 1, nl, f) != nl) break;
        fname[nl] = 0;
        fseek(f, xl, SEEK_CUR);
        if (strcmp(fname, name)) {
            fseek(f, cs, SEEK_CUR);
            continue;
        }
        unsigned char *c = malloc(cs + 1);
        out = calloc(1, (size_t)us + 1);
        if (c && out && fread(c, 1, cs, f) == cs) {
            if (meth == 0) {
                memcpy(out, c, us);
            } else {
                z_stream zs;
                memset(&zs, 0, sizeof zs);
                inflateInit2(&zs, -15);
                zs.next_in = c;
                zs.avail_in = cs;
                zs.next_out = (unsigned char *)out;
                zs.avail_out = us;
                int r = inflate(&zs, Z_FINISH);
                inflateEnd(&zs);
                if (r != Z_STREAM_END || zs.total_out != us) {
                    free(out);
                    out = NULL;
                }
            }
        }
        free(c);
        *method = (int)meth;
        *csize = cs;
        break;
    }
    fclose(f);
    return out;
}

TEST(threemf_is_deflated_and_carries_the_print_settings_a_slicer_reads)
{
    int n = 16;
    float *h = malloc(n * n * sizeof *h);
    for (int i = 0; i < n * n; i++) h[i] = 1.0f + 0.016f * (float)((i * 7) % 40);
    mesh_plate p;
    plate_defaults(&p, n, 0.4, h);
    d2_err e = {0};
    mesh *m = NULL;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    if (!m) {
        free(h);
        return;
    }
    const char *path = t_path("info.3mf");
    mesh_part part = {m, "layer<1>", {0, 0, 0}};
    mesh_print_info info = {"objet-connex500", "verobp & co", 0.05};
    CHECK(mesh_write_info(path, MESH_3MF, &part, 1, &info, NULL, &e) == 0);
    int meth = -1;
    size_t cs = 0;
    char *model = zip_member(path, "3D/3dmodel.model", &meth, &cs);
    CHECK(model != NULL && meth == 8);
    if (model) {
        CHECK(cs * 4 < strlen(model)); /* deflated text: at least 4x smaller */
        CHECK(strstr(model, "<metadata name=\"d2fab:layer_height_mm\">0.05</metadata>"));
        CHECK(strstr(model, "<metadata name=\"d2fab:printer\">objet-connex500</metadata>"));
        CHECK(strstr(model, "verobp &amp; co"));
        CHECK(strstr(model, "name=\"layer&lt;1&gt;\""));
        CHECK(strstr(model, "xmlns:d2fab="));
    }
    free(model);
    char *cfg = zip_member(path, "Metadata/Slic3r_PE.config", &meth, &cs);
    CHECK(cfg && strstr(cfg, "; layer_height = 0.05\n"));
    free(cfg);
    /* Without print settings: no slicer config, the geometry is the same. */
    const char *plain = t_path("plain.3mf");
    CHECK(mesh_write(plain, MESH_3MF, &part, 1, NULL, &e) == 0);
    cfg = zip_member(plain, "Metadata/Slic3r_PE.config", &meth, &cs);
    CHECK(cfg == NULL);
    free(cfg);
    mesh_report r;
    CHECK(mesh_check_file(path, &r, &e) == 0 && r.closed && r.facets == mesh_facets(m));
    check_prusa(path, 1);
    check_assimp_info(path, mesh_facets(m));
    /* PrusaSlicer applies the layer height when it slices the file. */
    char cmd[1400];
    const char *gc = t_path("info.gcode");
    snprintf(cmd, sizeof cmd, "prusa-slicer --export-gcode -o '%s' '%s'", gc, path);
    CHECK(run(cmd, outbuf, sizeof outbuf) == 0);
    FILE *g = fopen(gc, "r");
    int layer_ok = 0;
    char line[256];
    while (g && fgets(line, sizeof line, g))
        if (!strcmp(line, "; layer_height = 0.05\n")) layer_ok = 1;
    if (g) fclose(g);
    CHECK(layer_ok);
    mesh_free(m);
    free(h);
}

TEST(check_reports_open_nonmanifold_inconsistent_and_parts)
{
    /* a unit cube as 12 facets */
    static const float V[8][3] = {{0, 0, 0}, {1, 0, 0}, {1, 1, 0}, {0, 1, 0},
                                  {0, 0, 1}, {1, 0, 1}, {1, 1, 1}, {0, 1, 1}};
    static const int F[12][3] = {{0, 2, 1}, {0, 3, 2}, {4, 5, 6}, {4, 6, 7}, {0, 1, 5}, {0, 5, 4},
                                 {1, 2, 6}, {1, 6, 5}, {2, 3, 7}, {2, 7, 6}, {3, 0, 4}, {3, 4, 7}};
    float soup[3][24 * 9];
    for (int c = 0; c < 2; c++)
        for (int f = 0; f < 12; f++)
            for (int k = 0; k < 3; k++)
                for (int q = 0; q < 3; q++)
                    soup[0][(12 * c + f) * 9 + 3 * k + q] = V[F[f][k]][q] + (q == 0 ? 3.0f * c : 0);
    mesh_report r;
    d2_err e = {0};
    CHECK(mesh_check_soup(soup[0], 12, &r, &e) == 0);
    CHECK(r.closed && r.parts == 1 && r.edges == 18);
    CHECK_NEAR(r.volume_mm3, 1, 1e-9);
    CHECK_NEAR(r.area_mm2, 6, 1e-9);
    CHECK(mesh_check_soup(soup[0], 24, &r, &e) == 0); /* two separate cubes */
    CHECK(r.closed && r.parts == 2);
    CHECK(mesh_check_soup(soup[0], 11, &r, &e) == 0); /* one facet missing */
    CHECK(!r.closed && r.open_edges == 3);
    memcpy(soup[1], soup[0], 12 * 9 * sizeof(float)); /* one facet flipped */
    float tmp[3];
    memcpy(tmp, soup[1] + 3, sizeof tmp);
    memcpy(soup[1] + 3, soup[1] + 6, sizeof tmp);
    memcpy(soup[1] + 6, tmp, sizeof tmp);
    CHECK(mesh_check_soup(soup[1], 12, &r, &e) == 0);
    CHECK(!r.closed && r.inconsistent_edges == 3);
    /* a second cube sharing the edge x = 1, y = 1: four facets on it */
    for (int f = 0; f < 12; f++)
        for (int k = 0; k < 3; k++)
            for (int q = 0; q < 3; q++)
                soup[2][f * 9 + 3 * k + q] = V[F[f][k]][q] + (q < 2 ? 1.0f : 0);
    memcpy(soup[1], soup[0], 12 * 9 * sizeof(float));
    memcpy(soup[1] + 12 * 9, soup[2], 12 * 9 * sizeof(float));
    CHECK(mesh_check_soup(soup[1], 24, &r, &e) == 0);
    CHECK(!r.closed && r.nonmanifold_edges == 1);
    /* touching at one corner only: a non-manifold vertex */
    for (int f = 0; f < 12; f++)
        for (int k = 0; k < 3; k++)
            for (int q = 0; q < 3; q++) soup[1][(12 + f) * 9 + 3 * k + q] = V[F[f][k]][q] + 1.0f;
    CHECK(mesh_check_soup(soup[1], 24, &r, &e) == 0);
    CHECK(!r.closed && r.nonmanifold_vertices == 1 && r.nonmanifold_edges == 0);
    CHECK_ERR(mesh_check_file(t_path("missing.stl"), &r, &e), e, D2_EINPUT, "missing.stl");
}

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Writes facets (9 floats each) as a binary STL by hand. */
static void write_binary_stl(const char *path, const float *xyz, size_t facets)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    char head[80] = "test binary stl";
    uint32_t count = (uint32_t)facets;
    fwrite(head, 1, 80, f);
    fwrite(&count, 4, 1, f);
    for (size_t i = 0; i < facets; i++) {
        float nrm[3] = {0, 0, 0};
        uint16_t attr = 0;
        fwrite(nrm, 4, 3, f);
        fwrite(xyz + 9 * i, 4, 9, f);
        fwrite(&attr, 2, 1, f);
    }
    fclose(f);
}

static int same_report(const mesh_report *a, const mesh_report *b)
{
    int same = a->facets == b->facets && a->vertices == b->vertices && a->edges == b->edges &&
               a->open_edges == b->open_edges && a->nonmanifold_edges == b->nonmanifold_edges &&
               a->inconsistent_edges == b->inconsistent_edges &&
               a->nonmanifold_vertices == b->nonmanifold_vertices &&
               a->degenerate_facets == b->degenerate_facets && a->parts == b->parts &&
               a->closed == b->closed && fabs(a->volume_mm3 - b->volume_mm3) <= 1e-9 &&
               fabs(a->area_mm2 - b->area_mm2) <= 1e-9;
    for (int k = 0; k < 3; k++) same = same && a->lo[k] == b->lo[k] && a->hi[k] == b->hi[k];
    if (!same)
        printf("  reports differ: facets %zu/%zu vertices %zu/%zu edges %zu/%zu open %zu/%zu "
               "nonmanifold %zu/%zu inconsistent %zu/%zu parts %zu/%zu\n",
               a->facets, b->facets, a->vertices, b->vertices, a->edges, b->edges,
               a->open_edges, b->open_edges, a->nonmanifold_edges, b->nonmanifold_edges,
               a->inconsistent_edges, b->inconsistent_edges, a->parts, b->parts);
    return same;
}

/* d2fab check reads binary STL itself (no Assimp): the same reports as the
 * check of the same triangles in memory, for a closed plate and for soups
 * with open, non-manifold and flipped parts; an ASCII STL still loads. */
TEST(binary_stl_files_check_like_their_triangles)
{
    float *h = random_heights(12, 77, 0.5, 65, 0.016);
    mesh_plate p;
    plate_defaults(&p, 12, 0.4, h);
    d2_err e = {0};
    mesh *m = NULL;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    if (!m) {
        free(h);
        return;
    }
    size_t nt = mesh_facets(m);
    float *soup = malloc((nt + 2) * 9 * sizeof *soup);
    size_t k = 0;
    for (size_t i = 0; i < nt; i++) {
        uint32_t id[3];
        mesh_facet(m, i, id);
        if (i % 97 == 5) continue; /* holes */
        int flip = i % 131 == 7;   /* flipped facets */
        for (int c = 0; c < 3; c++) {
            int32_t x[3];
            mesh_vertex(m, id[flip ? 2 - c : c], x);
            for (int q = 0; q < 3; q++)
                soup[9 * k + 3 * c + q] = (float)(x[q] * (q == 2 ? MESH_QZ_MM : MESH_Q_MM));
        }
        k++;
        if (i % 177 == 3) { /* a facet used twice: non-manifold edges */
            memcpy(soup + 9 * k, soup + 9 * (k - 1), 9 * sizeof *soup);
            k++;
        }
    }
    const char *path = t_path("soup.stl");
    mesh_report a, b;
    for (int broken = 1; broken >= 0; broken--) {
        size_t facets = broken ? k : nt;
        if (!broken) /* then the closed plate, as written */
            for (size_t i = 0; i < nt; i++) {
                uint32_t id[3];
                mesh_facet(m, i, id);
                for (int c = 0; c < 3; c++) {
                    int32_t x[3];
                    mesh_vertex(m, id[c], x);
                    for (int q = 0; q < 3; q++)
                        soup[9 * i + 3 * c + q] = (float)(x[q] * (q == 2 ? MESH_QZ_MM : MESH_Q_MM));
                }
            }
        write_binary_stl(path, soup, facets);
        CHECK(mesh_check_soup(soup, facets, &a, &e) == 0);
        CHECK(mesh_check_file(path, &b, &e) == 0);
        CHECK(same_report(&a, &b));
        CHECK(broken ? !b.closed && b.open_edges && b.nonmanifold_edges && b.inconsistent_edges
                     : b.closed && b.parts == 1);
    }
    /* an ASCII STL (size not 84 + 50 n) goes through Assimp */
    const char *apath = t_path("tri.stl");
    t_write_text(apath, "solid t\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\n"
                        "vertex 0 1 0\nendloop\nendfacet\nendsolid t\n");
    CHECK(mesh_check_file(apath, &b, &e) == 0);
    CHECK(b.facets == 1 && b.open_edges == 3 && !b.closed);
    /* a binary STL cut short is not taken for one */
    write_binary_stl(path, soup, 3);
    FILE *f = fopen(path, "r+b");
    if (f) {
        uint32_t lie = 4;
        fseek(f, 80, SEEK_SET);
        fwrite(&lie, 4, 1, f);
        fclose(f);
    }
    CHECK(mesh_check_file(path, &b, &e) != 0 || b.facets != 4);
    free(soup);
    mesh_free(m);
    free(h);
}

/* After the grid builds a fresh mesh without the position hash, mesh_vid
 * still finds every vertex by position and adds only new ones. */
TEST(vertices_made_without_the_hash_are_found_by_position)
{
    float *h = random_heights(6, 5, 0.5, 3, 0.016);
    mesh_plate p;
    plate_defaults(&p, 6, 0.4, h);
    d2_err e = {0};
    mesh *m = NULL;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    if (!m) {
        free(h);
        return;
    }
    size_t nv = mesh_vertices(m), bad = 0;
    for (size_t i = 0; i < nv; i += 7) {
        int32_t x[3];
        mesh_vertex(m, i, x);
        if (mesh_vid(m, x[0], x[1], x[2]) != i) bad++;
    }
    CHECK(bad == 0);
    CHECK(mesh_vertices(m) == nv);
    CHECK(mesh_vid(m, -5, -5, -5) == nv && mesh_vertices(m) == nv + 1);
    mesh_free(m);
    free(h);
}

/* The check of a plate is linear and cheap: in a fresh process (bench_mesh)
 * it costs less than building the plate; here, best of 3 in one process,
 * the builder reuses memory already mapped and runs about 3 times faster,
 * so the bound is 3 times the building for the check (it was 10 times in a
 * fresh process) and 6 times for checking the STL file (it was 25). Thread
 * CPU time; the timing checks are skipped under sanitizers and valgrind,
 * which slow the two sides differently. */
TEST(checking_a_plate_costs_at_most_a_few_builds)
{
    int quick = t_quick() || getenv("D2FAB_SANITIZE");
    int n = quick ? 40 : 250;
    float *h = random_heights(n, 2018, 0.5, 65, 0.016);
    mesh_plate p;
    plate_defaults(&p, n, 0.4, h);
    d2_err e = {0};
    double best[3] = {1e9, 1e9, 1e9};
    size_t facets = 0;
    const char *path = t_path("timed.stl");
    for (int rep = 0; rep < 3; rep++) {
        mesh *m = NULL;
        mesh_report r;
        double t0 = thread_cpu();
        CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
        if (!m) break;
        double t1 = thread_cpu();
        facets = mesh_facets(m);
        CHECK(mesh_check(m, &r, &e) == 0 && r.closed && r.parts == 1);
        double t2 = thread_cpu();
        mesh_part part = {m, "layer", {0, 0, 0}};
        size_t bytes = 0;
        CHECK(mesh_write(path, MESH_STL, &part, 1, &bytes, &e) == 0);
        mesh_free(m);
        double t3 = thread_cpu();
        CHECK(mesh_check_file(path, &r, &e) == 0 && r.closed && r.parts == 1);
        double t4 = thread_cpu();
        double d[3] = {t1 - t0, t2 - t1, t4 - t3};
        for (int k = 0; k < 3; k++)
            if (d[k] < best[k]) best[k] = d[k];
    }
    printf("  %d x %d plate, %zu facets: mesh %.3f s, check %.3f s, check of the STL file %.3f s\n",
           n, n, facets, best[0], best[1], best[2]);
    if (!quick) {
        CHECK(best[1] <= 3 * best[0]);
        CHECK(best[2] <= 6 * best[0]);
    }
    free(h);
}

/* --------------------------------------------------------------- stack */

static int write_npy(const char *path, int n, const float *v)
{
    size_t shape[2] = {(size_t)n, (size_t)n};
    d2_err e = {0};
    return npy_write(path, NPY_F32, 2, shape, v, &e);
}

/* make_export: 1 writes a model trained with thick plates (gaps are air gaps) */
static int export_thick;
/* The export's "detector" section; NULL: ten 1.5 mm detectors in 3-4-3. */
static const char *export_detector;

/* An export folder of L layers of n x n at pitch 0.5 mm. */
static const char *make_export(const char *name, int n, int layers, const float *const *h,
                               double build_xy)
{
    static char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", t_tmpdir(), name);
    mkdir(dir, 0777);
    char js[8192], *p = js;
    p += sprintf(p,
                 "{\"format\": \"d2fab-export\", \"version\": 1, \"software\": \"test\",\n"
                 " \"model\": {\"geometry\": {\"frequency_thz\": 0.4, \"pitch_mm\": 0.5, "
                 "\"neurons\": %d, \"layers\": %d, \"gaps_mm\": [",
                 n, layers);
    for (int k = 0; k <= layers; k++) p += sprintf(p, "%s%g", k ? ", " : "", 7.0 + k);
    p += sprintf(p,
                 "]},\n  \"input\": {\"aperture_mm\": 12},\n"
                 "  \"detector\": %s,\n"
                 "  \"material\": {\"index\": 1.7227, \"kappa\": 0.031}%s},\n"
                 " \"pitch_mm\": 0.5, \"neurons\": %d, \"layers\": %d, \"base_mm\": 0.5,\n"
                 " \"z_step_mm\": 0.016, \"levels\": 0,\n"
                 " \"printer\": {\"name\": \"testprinter\", \"technology\": \"polyjet\", "
                 "\"xy_resolution_mm\": 0.042, \"z_step_mm\": 0.016, \"build_volume_mm\": [%g, %g, "
                 "200], \"min_feature_mm\": 0.1, \"pin_clearance_mm\": 0.1},\n"
                 " \"layer_files\": [",
                 export_detector ? export_detector
                                 : "{\"size_mm\": 1.5, \"centers_mm\": [[-5, -5], [0, -5], "
                                   "[5, -5], [-7.5, 0], [-2.5, 0], [2.5, 0], [7.5, 0], [-5, 5], "
                                   "[0, 5], [5, 5]]}",
                 export_thick ? ",\n  \"optics\": {\"model\": \"thick\"}" : "", n, layers, build_xy,
                 build_xy);
    for (int k = 0; k < layers; k++) {
        char f[64], path[700];
        snprintf(f, sizeof f, "layer%d_height.npy", k + 1);
        snprintf(path, sizeof path, "%s/%s", dir, f);
        write_npy(path, n, h[k]);
        p += sprintf(p, "%s{\"index\": %d, \"heights_npy\": \"%s\"}", k ? ", " : "", k + 1, f);
    }
    p += sprintf(p, "]}\n");
    char path[700];
    snprintf(path, sizeof path, "%s/export.json", dir);
    t_write_text(path, js);
    return dir;
}

static int count_files(const char *dir)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -A '%s' 2>/dev/null | wc -l", dir);
    run(cmd, outbuf, sizeof outbuf);
    return atoi(outbuf);
}


/* A model trained with thick plates states air gaps: the posts set the datum
 * faces apart by the air gap plus the plate before it (its tallest pillar),
 * and assembly.json states both. */
TEST(stack_of_a_thick_model_spaces_datum_faces_by_air_gap_plus_plate)
{
    int n = 40, L = 2;
    float *h[2] = {random_heights(n, 31, 0.5, 65, 0.016), random_heights(n, 32, 0.5, 65, 0.016)};
    export_thick = 1;
    const char *exp = make_export("exp-thick", n, L, (const float *const *)h, 490);
    export_thick = 0;
    const char *out = t_path("parts-thick");
    mesh_stack_opts o;
    mesh_stack_opts_default(&o);
    mesh_stack_report rep;
    d2_err e = {0};
    int rc = mesh_stack(exp, out, &o, &rep, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    double top[2] = {0, 0};
    for (int l = 0; l < L; l++)
        for (int i = 0; i < n * n; i++) top[l] = fmax(top[l], h[l][i]);
    char path[700];
    snprintf(path, sizeof path, "%s/assembly.json", out);
    cJSON *as = NULL;
    CHECK(cfg_load(path, &as, &e) == 0);
    const cJSON *g = cJSON_GetObjectItem(as, "gaps_mm");
    const cJSON *air = cJSON_GetObjectItem(cJSON_GetObjectItem(as, "spacing"), "air_gaps_mm");
    CHECK(cJSON_GetArraySize(g) == 3 && cJSON_GetArraySize(air) == 3);
    for (int k = 0; k < 3 && cJSON_GetArraySize(g) == 3 && cJSON_GetArraySize(air) == 3; k++) {
        double want = 7.0 + k + (k ? top[k - 1] : 0);
        CHECK_NEAR(cJSON_GetArrayItem(g, k)->valuedouble, want, 1e-5);
        CHECK_NEAR(cJSON_GetArrayItem(air, k)->valuedouble, 7.0 + k, 1e-5);
    }
    /* the parts sit where the datum gaps put them */
    CHECK_NEAR(rep.part[2].z_mm, 7.0 + 8.0 + top[0], 1e-5);
    cJSON_Delete(as);
    free(h[0]);
    free(h[1]);
}
/* Volume of the detector plate of a stack of the export in dir. */
static double detector_plate_volume(const char *exp, const char *out)
{
    mesh_stack_opts o;
    mesh_stack_opts_default(&o);
    mesh_stack_report rep;
    d2_err e = {0};
    CHECK(mesh_stack(exp, out, &o, &rep, &e) == 0);
    if (e.code) printf("  %s\n", e.msg);
    for (int i = 0; i < rep.nparts; i++)
        if (!strcmp(rep.part[i].name, "detector")) return rep.part[i].volume_mm3;
    return -1;
}

/* The differential scheme's detector plate has a window for every detector,
 * labelled with its class and + or -: against the single scheme's plate
 * with the + detectors only, it loses the - windows through the frame and
 * the engraving of "0+".."3+", "0-".."3-" less that of "0".."3". */
TEST(differential_detector_plate_has_labelled_windows_for_both_signs)
{
    int n = 64, L = 1;
    float *h[1] = {random_heights(n, 31, 0.5, 65, 0.016)};
    export_detector = "{\"scheme\": \"single\", \"size_mm\": 2, \"centers_mm\": [[-9, -4], "
                      "[-3, -4], [3, -4], [9, -4]]}";
    const char *e1 = make_export("det-single", n, L, (const float *const *)h, 490);
    double v1 = detector_plate_volume(e1, t_path("det-single-out"));
    export_detector = "{\"scheme\": \"differential\", \"size_mm\": 2, \"centers_mm\": "
                      "[[-9, -4], [-3, -4], [3, -4], [9, -4], [-9, 4], [-3, 4], [3, 4], [9, 4]]}";
    const char *e2 = make_export("det-diff", n, L, (const float *const *)h, 490);
    double v2 = detector_plate_volume(e2, t_path("det-diff-out"));
    export_detector = NULL;
    d2_geom g;
    geom_default(&g);
    g.n = n;
    g.pitch_mm = 0.5;
    g.det_size_mm = 2;
    g.det_x_mm[0] = 9, g.det_y_mm[0] = 4;
    int r0, r1, c0, c1;
    geom_det_rect(&g, 0, &r0, &r1, &c0, &c1);
    mesh_frame f;
    mesh_frame_default(&f, NULL);
    double windows = 4 * (r1 - r0) * (c1 - c0) * 0.25 * f.thick_mm;
    double px = ceil(f.font_px_mm / 0.5 - 1e-9) * 0.5;
    int lit[2] = {0, 0};
    for (int d = 0; d < 4; d++)
        for (int r = 0; r < 7; r++)
            for (int u = 0; u < 5; u++) {
                int dig = mesh_glyph((char)('0' + d))[r] >> (4 - u) & 1;
                lit[0] += dig;
                lit[1] += 2 * dig + (mesh_glyph('+')[r] >> (4 - u) & 1) +
                          (mesh_glyph('-')[r] >> (4 - u) & 1);
            }
    double labels = (lit[1] - lit[0]) * px * px * f.engrave_mm;
    printf("  detector plate: single %.2f mm3, differential %.2f mm3 (4 windows %.2f mm3, "
           "labels %.2f mm3 more)\n", v1, v2, windows, labels);
    CHECK(v1 > 0 && v2 > 0);
    CHECK_NEAR(v1 - v2, windows + labels, 1e-3 * (windows + labels));
    free(h[0]);
}

TEST(stack_writes_every_part_the_assembly_and_its_json)
{
    int n = 40, L = 2;
    float *h[2] = {random_heights(n, 21, 0.5, 65, 0.016), random_heights(n, 22, 0.5, 65, 0.016)};
    const char *exp = make_export("exp1", n, L, (const float *const *)h, 490);
    const char *out = t_path("parts1");
    mesh_stack_opts o;
    mesh_stack_opts_default(&o);
    mesh_stack_report rep;
    d2_err e = {0};
    CHECK(mesh_stack(exp, out, &o, &rep, &e) == 0);
    if (e.code) printf("  %s\n", e.msg);
    CHECK(rep.nparts == L + 2);
    double z = 0;
    size_t total = 0;
    for (int i = 0; i < rep.nparts; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", out, rep.part[i].file);
        mesh_report r;
        CHECK(mesh_check_file(path, &r, &e) == 0);
        CHECK(r.closed && r.parts == 1);
        CHECK(r.facets == rep.part[i].facets);
        CHECK(rep.part[i].bytes == 84 + 50 * rep.part[i].facets);
        CHECK_NEAR(r.volume_mm3, rep.part[i].volume_mm3, 1e-6 * r.volume_mm3);
        CHECK_NEAR(rep.part[i].z_mm, z, 1e-9);
        check_admesh(path, 1, r.volume_mm3);
        check_prusa(path, 1);
        z += 7.0 + i;
        total += r.facets;
    }
    CHECK(!strcmp(rep.part[0].name, "input") && !strcmp(rep.part[L + 1].name, "detector"));
    char path[700];
    snprintf(path, sizeof path, "%s/assembly.stl", out);
    mesh_report r;
    CHECK(mesh_check_file(path, &r, &e) == 0);
    CHECK(r.closed && r.parts == (size_t)(L + 2) && r.facets == total);
    CHECK_NEAR(r.hi[2], 24 + 3 + 1e-3 * (L + 1), 1e-4); /* detector top */
    check_admesh(path, L + 2, r.volume_mm3);
    check_prusa(path, L + 2);
    snprintf(path, sizeof path, "%s/assembly.json", out);
    char *txt = NULL;
    size_t len;
    CHECK(d2_read_file(path, 1 << 20, &txt, &len, &e) == 0);
    CHECK(txt && strstr(txt, "\"d2fab-assembly\"") && strstr(txt, "\"z_mm\":\t15") &&
          strstr(txt, "\"layer2.stl\"") && strstr(txt, "faces the source"));
    free(txt);
    /* the command line prints facets, bytes and volume per part */
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "./d2fab mesh --export '%s' --out '%s' --format 3mf", exp,
             t_path("parts1b"));
    CHECK(run(cmd, outbuf, sizeof outbuf) == 0);
    CHECK(strstr(outbuf, "layer1.3mf") && strstr(outbuf, "volume_mm3"));
    snprintf(cmd, sizeof cmd, "./d2fab check '%s/assembly.3mf'", t_path("parts1b"));
    CHECK(run(cmd, outbuf, sizeof outbuf) == 0);
    CHECK(after(outbuf, "\n  parts") == 4);
    free(h[0]);
    free(h[1]);
}

TEST(check_against_the_export_passes_a_true_part_and_names_a_changed_pixel)
{
    int n = 40;
    float *h[2] = {random_heights(n, 31, 0.5, 65, 0.016), random_heights(n, 32, 0.5, 65, 0.016)};
    const char *exp = make_export("exp_tops", n, 2, (const float *const *)h, 490);
    char expdir[600];
    snprintf(expdir, sizeof expdir, "%s", exp);
    mesh_stack_opts o;
    mesh_stack_opts_default(&o);
    mesh_stack_report rep;
    d2_err e = {0};
    CHECK(mesh_stack(expdir, t_path("parts_tops"), &o, &rep, &e) == 0);
    if (e.code) printf("  %s\n", e.msg);
    export_folder x;
    CHECK(export_folder_load(expdir, &x, &e) == 0);
    mesh_tops_report r;
    char path[700];
    for (int k = 1; k <= 2; k++) {
        snprintf(path, sizeof path, "%s/layer%d.stl", t_path("parts_tops"), k);
        CHECK(mesh_compare_tops(path, &x, k, &r, &e) == 0);
        CHECK(r.rows == n && r.over == 0 && r.max_mm < 1e-4 && r.rms_mm < 1e-4);
        CHECK_NEAR(r.tol_mm, 0.008, 1e-12);
    }
    /* the wrong layer differs almost everywhere */
    CHECK(mesh_compare_tops(path, &x, 1, &r, &e) == 0);
    CHECK(r.over > n * n / 2);
    /* a part meshed from a map with one pillar 5 Z steps higher */
    float *h2[2] = {malloc(n * n * sizeof(float)), h[1]};
    memcpy(h2[0], h[0], n * n * sizeof(float));
    h2[0][7 * n + 11] += 5 * 0.016f;
    const char *mod = make_export("exp_tops_mod", n, 2, (const float *const *)h2, 490);
    CHECK(mesh_stack(mod, t_path("parts_tops_mod"), &o, &rep, &e) == 0);
    snprintf(path, sizeof path, "%s/layer1.stl", t_path("parts_tops_mod"));
    CHECK(mesh_compare_tops(path, &x, 1, &r, &e) == 0);
    CHECK(r.over == 1 && r.worst[0].row == 7 && r.worst[0].col == 11);
    CHECK_NEAR(r.worst[0].mesh_mm - r.worst[0].export_mm, 0.08, 1e-4);
    CHECK_NEAR(r.max_mm, 0.08, 1e-4);
    CHECK_NEAR(r.rms_mm, 0.08 / n, 1e-5);
    /* in phase: 2 pi (n - 1) d / wavelength at 0.4 THz */
    CHECK_NEAR(r.max_rad, 2 * M_PI * 0.7227 * r.max_mm / (0.299792458 / 0.4), 1e-9);
    export_folder_free(&x);
    /* the command: exit 0 for the true part, 2 naming the pixel for the other */
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "./d2fab check '%s/layer1.stl' --against '%s'",
             t_path("parts_tops"), expdir);
    int crc = run(cmd, outbuf, sizeof outbuf);
    if (crc) printf("  %s\n", outbuf);
    CHECK(crc == 0);
    CHECK(strstr(outbuf, "every pillar top matches"));
    snprintf(cmd, sizeof cmd, "./d2fab check '%s' --against '%s'", path, expdir);
    CHECK(run(cmd, outbuf, sizeof outbuf) == 2);
    CHECK(strstr(outbuf, "pixel (row 7, col 11)") && strstr(outbuf, "1 over half a Z step"));
    free(h[0]);
    free(h[1]);
    free(h2[0]);
}

TEST(stack_refuses_bad_heights_big_plates_and_misfit_pegs_writing_nothing)
{
    int n = 40;
    float *h = random_heights(n, 31, 0.5, 65, 0.016);
    const float *hs[1] = {h};
    mesh_stack_opts o;
    mesh_stack_opts_default(&o);
    d2_err e = {0};
    /* a plate larger than the build volume: both sizes in the message */
    const char *exp = make_export("exp_big", n, 1, hs, 30);
    const char *out = t_path("out_big");
    CHECK_ERR(mesh_stack(exp, out, &o, NULL, &e), e, D2_EINPUT, "does not fit the build volume 30 x 30");
    CHECK(strstr(e.msg, "40.0 x 40.0"));
    CHECK(count_files(out) == 0);
    /* negative and NaN heights */
    h[77] = -0.2f;
    exp = make_export("exp_neg", n, 1, hs, 490);
    out = t_path("out_neg");
    CHECK_ERR(mesh_stack(exp, out, &o, NULL, &e), e, D2_EINPUT, "must be >= 0");
    CHECK(strstr(e.msg, "layer1_height.npy"));
    CHECK(count_files(out) == 0);
    h[77] = NAN;
    exp = make_export("exp_nan", n, 1, hs, 490);
    CHECK_ERR(mesh_stack(exp, out, &o, NULL, &e), e, D2_EINPUT, "layer1_height.npy");
    CHECK(count_files(out) == 0);
    h[77] = 1;
    /* a post that does not fit the frame */
    exp = make_export("exp_ok", n, 1, hs, 490);
    o.frame.post_mm = 9.95;
    CHECK_ERR(mesh_stack(exp, out, &o, NULL, &e), e, D2_EINPUT, "post of 9.95 mm does not fit");
    o.frame.post_mm = 0;
    o.frame.pin_mm = 4.5;
    CHECK_ERR(mesh_stack(exp, out, &o, NULL, &e), e, D2_EINPUT, "does not fit on the 5 mm post");
    o.frame.pin_mm = 0;
    CHECK(count_files(out) == 0);
    /* a gap shorter than the frame */
    o.frame.thick_mm = 7.5;
    CHECK_ERR(mesh_stack(exp, out, &o, NULL, &e), e, D2_EINPUT, "shorter than the frame thickness");
    o.frame.thick_mm = 0;
    CHECK(count_files(out) == 0);
    /* a wrong export.json */
    char path[700];
    snprintf(path, sizeof path, "%s/export.json", exp);
    t_write_text(path, "{\"format\": \"d2fab-model\", \"version\": 1}");
    CHECK_ERR(mesh_stack(exp, out, &o, NULL, &e), e, D2_EINPUT, "expected \"d2fab-export\"");
    CHECK_ERR(mesh_stack(t_path("nowhere"), out, &o, NULL, &e), e, D2_EINPUT, "export.json");
    CHECK(count_files(out) == 0);
    free(h);
}

TEST(plate_refuses_bad_heights_and_features)
{
    int n = 40;
    float *h = random_heights(n, 41, 0.5, 8, 0.1);
    mesh_plate p;
    plate_defaults(&p, n, 0.5, h);
    d2_err e = {0};
    mesh *m = NULL;
    h[5] = -1;
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "cell (row 0, col 5): top -1 mm");
    h[5] = NAN;
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "must be finite");
    h[5] = 1;
    p.gap_mm = 1.2;
    p.frame.thick_mm = 1;
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "reaches");
    p.gap_mm = 0;
    p.frame.thick_mm = 3;
    p.label_top = "l1";
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "not in the label font");
    p.label_top = "A VERY LONG LABEL";
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "does not fit the length of the frame band");
    CHECK(strstr(e.msg, "--font-px-mm") && strstr(e.msg, "--frame-mm"));
    /* a band too narrow for the label names the option and the width that fits:
     * 7 pixels of 1 mm and two 1 mm margins */
    p.label_top = "L1";
    p.frame.font_px_mm = 1;
    p.frame.width_mm = 6;
    p.frame.post_mm = 4.5;
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "use --frame-mm 9.0 or more");
    p.frame.width_mm = 9;
    CHECK(mesh_build_plate(&p, &m, NULL, &e) == 0);
    mesh_free(m);
    m = NULL;
    p.frame.width_mm = 4.6;
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "use --frame-mm 4.7 or more");
    p.frame.width_mm = 10;
    p.frame.post_mm = 5;
    p.frame.font_px_mm = 0.5;
    p.label_top = NULL;
    p.holes = 1;
    p.frame.pin_len_mm = 2.95;
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "pin hole 3.05 mm deep");
    p.frame.pin_len_mm = 1.5;
    p.frame.clearance_mm = 3.5;
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "pin hole of 9 mm");
    p.frame.clearance_mm = 0.1;
    p.frame.key_mm = 0.1;
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT, "must exceed the pin clearance");
    p.frame.key_mm = 1;
    p.printer.build_mm[0] = p.printer.build_mm[1] = 35;
    p.printer.build_mm[2] = 100;
    snprintf(p.printer.name, sizeof p.printer.name, "tiny");
    CHECK_ERR(mesh_build_plate(&p, &m, NULL, &e), e, D2_EINPUT,
              "plate 40.0 x 40.0 x 3.0 mm does not fit the build volume 35 x 35 x 100 mm of "
              "printer tiny");
    CHECK(m == NULL);
    free(h);
}

TEST(check_command_exits_2_on_an_open_mesh)
{
    /* a binary STL with one triangle */
    unsigned char buf[134] = {0};
    memcpy(buf, "one triangle", 12);
    buf[80] = 1;
    float v[9] = {0, 0, 0, 1, 0, 0, 0, 1, 0};
    memcpy(buf + 84 + 12, v, sizeof v);
    const char *path = t_path("open.stl");
    d2_err e = {0};
    CHECK(d2_write_file(path, buf, sizeof buf, &e) == 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "./d2fab check '%s'", path);
    CHECK(run(cmd, outbuf, sizeof outbuf) == 2);
    CHECK(after(outbuf, "open edges") == 3);
    CHECK(run("./d2fab check", outbuf, sizeof outbuf) == 1);
    CHECK(run("./d2fab mesh --help", outbuf, sizeof outbuf) == 0);
    CHECK(strstr(outbuf, "--frame-mm") && strstr(outbuf, "Exit status"));
    CHECK(run("./d2fab mesh --export x --out y --frame-mm -3", outbuf, sizeof outbuf) == 1);
    CHECK(strstr(outbuf, "--frame-mm '-3'"));
}

int main(void)
{
    RUN(mesh_of_checkerboard_is_closed);
    RUN(mesh_of_random_heights_is_closed_and_passes_validators);
    RUN(two_sided_random_grids_are_closed_or_refused_with_a_reason);
    RUN(grid_refuses_cells_touching_along_an_edge_or_at_a_point);
    RUN(diagonal_band_inside_both_cells_is_split_at_its_middle);
    RUN(diagonal_through_cuts_give_separate_closed_parts);
    RUN(plate_volume_equals_height_map_plus_frame_features);
    RUN(top_view_of_a_layer_plate_is_its_height_map);
    RUN(pins_enter_the_next_plates_holes_and_only_one_way_round);
    RUN(through_cut_mask_plate_is_closed_and_its_island_a_second_part);
    RUN(stl_is_84_plus_50_bytes_per_facet_with_a_header_not_starting_with_solid);
    RUN(every_format_loads_back_through_assimp_with_the_same_facets_and_volume);
    RUN(plates_beyond_100_mm_keep_their_corner_gaps_in_every_format);
    RUN(threemf_is_deflated_and_carries_the_print_settings_a_slicer_reads);
    RUN(check_reports_open_nonmanifold_inconsistent_and_parts);
    RUN(binary_stl_files_check_like_their_triangles);
    RUN(vertices_made_without_the_hash_are_found_by_position);
    RUN(checking_a_plate_costs_at_most_a_few_builds);
    RUN(differential_detector_plate_has_labelled_windows_for_both_signs);
    RUN(stack_writes_every_part_the_assembly_and_its_json);
    RUN(check_against_the_export_passes_a_true_part_and_names_a_changed_pixel);
    RUN(stack_of_a_thick_model_spaces_datum_faces_by_air_gap_plus_plate);
    RUN(stack_refuses_bad_heights_big_plates_and_misfit_pegs_writing_nothing);
    RUN(plate_refuses_bad_heights_and_features);
    RUN(check_command_exits_2_on_an_open_mesh);
    return t_finish();
}
