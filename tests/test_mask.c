/* Tests for mask: binarising, narrow openings, islands and bridges,
 * pinches, bad inputs, previews, carrier optics, and (mask_run) the files a
 * mask run writes. */
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/idx.h"
#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "core/util.h"
#include "mask/mask.h"
#include "optics/optics.h"
#include "train/train.h"
#include "testlib.h"

/* A rows x cols mask whose binarised aperture is open where open(r, c) says;
 * amplitude 1 on open pixels, 0.2 elsewhere. */
typedef int (*shape_fn)(int r, int c, const void *arg);

static void synth(mask_map *m, int rows, int cols, shape_fn f, const void *arg)
{
    d2_err e = {0};
    if (mask_map_alloc(m, rows, cols, &e)) {
        printf("alloc: %s\n", e.msg);
        exit(3);
    }
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            size_t s = (size_t)r * cols + c;
            m->open0[s] = f(r, c, arg) != 0;
            m->amp[s] = m->open0[s] ? 1.0f : 0.2f;
        }
}

/* Open where one of the annuli lo[k] <= distance < hi[k] from (cy, cx). */
typedef struct rings {
    double cy, cx;
    int n;
    double lo[4], hi[4];
} rings;

static int ring_shape(int r, int c, const void *arg)
{
    const rings *g = arg;
    double d = hypot(r - g->cy, c - g->cx);
    for (int k = 0; k < g->n; k++)
        if (d >= g->lo[k] && d < g->hi[k]) return 1;
    return 0;
}

/* The properties every printable mask must have. */
static void check_printable(const mask_map *m, const mask_stats *st, int w)
{
    CHECK(mask_opaque_parts(m->open, m->rows, m->cols) == 1);
    CHECK(st->parts == 1);
    CHECK(mask_pinches(m->open, m->rows, m->cols) == 0);
    CHECK(mask_narrow_open(m->open, m->rows, m->cols, w) == 0);
    size_t n = (size_t)m->rows * m->cols;
    uint8_t *bridge = malloc(n), *solid = malloc(n);
    long bpx = 0, blocked = 0;
    for (size_t i = 0; i < n; i++) {
        bridge[i] = m->cls[i] == MASK_BRIDGE;
        solid[i] = !m->open[i];
        bpx += bridge[i];
        /* closed pixels were open; open pixels were open before */
        if (m->open[i]) CHECK(m->open0[i] && m->cls[i] == MASK_OPEN);
        if (m->open0[i] && !m->open[i]) blocked++;
    }
    CHECK(mask_thin_px(bridge, solid, m->rows, m->cols, w) == 0);
    CHECK(bpx == st->bridge_px);
    CHECK(blocked == st->blocked_px);
    CHECK(st->blocked_px == st->narrow_px + st->bridge_px + st->pinch_px);
    CHECK(st->bridges <= st->islands && (st->bridges > 0) == (st->islands > 0));
    free(bridge);
    free(solid);
}

TEST(min_feature_in_pixels_is_rounded_up_and_at_least_one)
{
    CHECK(mask_min_px(0.1, 0.4) == 1);
    CHECK(mask_min_px(0.4, 0.4) == 1);
    CHECK(mask_min_px(0.45, 0.4) == 2);
    CHECK(mask_min_px(0.8, 0.4) == 2);
    CHECK(mask_min_px(0.81, 0.4) == 3);
    CHECK(mask_min_px(0, 0.4) == 1);
}

TEST(ring_counter_is_tied_by_one_bridge_across_the_ring)
{
    /* open ring 3 px wide around an opaque disc: the disc is an island */
    rings g = {15.5, 15.5, 1, {4}, {7}};
    mask_map m;
    synth(&m, 32, 32, ring_shape, &g);
    mask_stats st;
    d2_err e = {0};
    CHECK(mask_opaque_parts(m.open0, 32, 32) == 2);
    CHECK(mask_make_printable(&m, 1, &st, "ring", &e) == 0);
    CHECK(st.islands == 1 && st.bridges == 1);
    CHECK(st.island_px > 40);
    /* the cheapest bridge crosses the ring straight: 3 open pixels */
    CHECK(st.bridge_px == 3);
    CHECK(st.narrow_px == 0);
    check_printable(&m, &st, 1);
    mask_map_free(&m);
}

TEST(bridge_crosses_the_ring_where_it_is_thinnest)
{
    /* a ring 4 px wide except one side, where a 1 px gap separates the disc */
    rings g = {15.5, 15.5, 1, {4}, {8}};
    mask_map m;
    synth(&m, 32, 32, ring_shape, &g);
    /* thicken the island to the right so only one ring pixel remains there */
    for (int r = 14; r < 18; r++)
        for (int c = 16; c < 22; c++) m.open0[r * 32 + c] = 0;
    for (int r = 14; r < 18; r++) m.open0[r * 32 + 22] = 1, m.open0[r * 32 + 23] = 0;
    mask_stats st;
    d2_err e = {0};
    CHECK(mask_make_printable(&m, 1, &st, "thin side", &e) == 0);
    CHECK(st.islands == 1 && st.bridge_px == 1);
    /* the bridge is on the thin side, column 22 */
    int on_thin = 0;
    for (int r = 14; r < 18; r++) on_thin += m.cls[r * 32 + 22] == MASK_BRIDGE;
    CHECK(on_thin == 1);
    check_printable(&m, &st, 1);
    mask_map_free(&m);
}

TEST(nested_rings_become_one_piece_inner_tied_to_outer)
{
    /* ring inside a ring: the opaque annulus between them and the centre disc
     * are two islands, the disc nested in the annulus */
    rings g = {23.5, 23.5, 2, {3, 10}, {6, 13}};
    mask_map m;
    synth(&m, 48, 48, ring_shape, &g);
    CHECK(mask_opaque_parts(m.open0, 48, 48) == 3);
    mask_stats st;
    d2_err e = {0};
    CHECK(mask_make_printable(&m, 1, &st, "nested", &e) == 0);
    CHECK(st.islands == 2 && st.bridges == 2);
    CHECK(st.bridge_px == 6); /* 3 across each ring */
    check_printable(&m, &st, 1);
    /* the inner bridge ends on the annulus, not at the frame */
    int inner = 0;
    for (size_t i = 0; i < 48 * 48; i++) {
        int r = (int)(i / 48), c = (int)(i % 48);
        if (m.cls[i] == MASK_BRIDGE && hypot(r - 23.5, c - 23.5) < 7) inner++;
    }
    CHECK(inner == 3);
    mask_map_free(&m);
}

TEST(nested_rings_hold_with_wide_bridges)
{
    rings g = {31.5, 31.5, 3, {3, 11, 20}, {7, 16, 25}};
    for (int w = 2; w <= 3; w++) {
        mask_map m;
        synth(&m, 64, 64, ring_shape, &g);
        mask_stats st;
        d2_err e = {0};
        CHECK(mask_make_printable(&m, w, &st, "nested wide", &e) == 0);
        char png[32];
        snprintf(png, sizeof png, "nested_w%d.png", w);
        CHECK(mask_write_preview(t_path(png), &m, &e) == 0);
        if (st.islands != 3) printf("  w %d: %d islands\n", w, st.islands);
        CHECK(st.islands == 3 && st.bridges == 3);
        /* each bridge at least w wide across rings 4 and 5 pixels wide */
        CHECK(st.bridge_px >= 3 * w * 4);
        check_printable(&m, &st, w);
        mask_map_free(&m);
    }
}

/* Open 8 x 8 square with an opaque island inside touching the outside
 * opaque only at one corner. */
static int pinch_shape(int r, int c, const void *arg)
{
    (void)arg;
    if (r == 2 && c == 2) return 0; /* body pixel at the corner */
    if (r >= 3 && r <= 8 && c >= 3 && c <= 8) return 0; /* island */
    return r >= 2 && r <= 9 && c >= 2 && c <= 9;
}

TEST(diagonal_contact_does_not_hold_an_island)
{
    mask_map m;
    synth(&m, 14, 14, pinch_shape, NULL);
    CHECK(mask_pinches(m.open0, 14, 14) == 1);
    CHECK(mask_opaque_parts(m.open0, 14, 14) == 2);
    mask_stats st;
    d2_err e = {0};
    CHECK(mask_make_printable(&m, 1, &st, "pinch", &e) == 0);
    CHECK(st.islands == 1 && st.bridges == 1 && st.bridge_px == 1);
    check_printable(&m, &st, 1);
    mask_map_free(&m);
}

/* Two open squares touching at a corner: a zero-width opening. */
static int open_pinch_shape(int r, int c, const void *arg)
{
    (void)arg;
    return (r >= 2 && r <= 5 && c >= 2 && c <= 5) || (r >= 6 && r <= 9 && c >= 6 && c <= 9);
}

TEST(diagonal_pinch_between_openings_is_closed)
{
    mask_map m;
    synth(&m, 12, 12, open_pinch_shape, NULL);
    m.amp[5 * 12 + 5] = 0.9f; /* the dimmer one is closed */
    CHECK(mask_pinches(m.open0, 12, 12) == 1);
    CHECK(mask_opaque_parts(m.open0, 12, 12) == 1);
    mask_stats st;
    d2_err e = {0};
    CHECK(mask_make_printable(&m, 1, &st, "open pinch", &e) == 0);
    CHECK(st.islands == 0 && st.pinch_px == 1);
    CHECK(m.cls[5 * 12 + 5] == MASK_PINCH && m.open[6 * 12 + 6]);
    check_printable(&m, &st, 1);
    mask_map_free(&m);
}

/* A 1 px slit, a 2 px slit and a 5 x 5 opening. */
static int slits_shape(int r, int c, const void *arg)
{
    (void)arg;
    if (r >= 2 && r < 12 && c == 2) return 1;
    if (r >= 2 && r < 12 && (c == 5 || c == 6)) return 1;
    return r >= 4 && r < 9 && c >= 10 && c < 15;
}

TEST(openings_narrower_than_the_printer_are_closed_and_counted)
{
    d2_err e = {0};
    for (int w = 1; w <= 3; w++) {
        mask_map m;
        synth(&m, 16, 18, slits_shape, NULL);
        mask_stats st;
        CHECK(mask_make_printable(&m, w, &st, "slits", &e) == 0);
        long want = w == 1 ? 0 : w == 2 ? 10 : 30;
        CHECK(st.narrow_px == want);
        CHECK(m.open[6 * 18 + 12]); /* the wide opening stays */
        check_printable(&m, &st, w);
        mask_map_free(&m);
    }
    /* nothing wide enough: a clear error */
    mask_map m;
    synth(&m, 16, 18, slits_shape, NULL);
    mask_stats st;
    CHECK_ERR(mask_make_printable(&m, 6, &st, "slits", &e), e, D2_EINPUT,
              "slits: every opening of the binarised digit (55 pixels) is narrower than the "
              "printer's minimum feature (6 pixels)");
    mask_map_free(&m);
}

/* An open disc of radius 60 with a 1 px opaque speck every 4 pixels. */
static int speckle_shape(int r, int c, const void *arg)
{
    (void)arg;
    return hypot(r - 99.5, c - 99.5) < 60 && !(r % 4 == 0 && c % 4 == 0);
}

TEST(hundreds_of_specks_are_all_tied_in_one_search)
{
    mask_map m;
    synth(&m, 200, 200, speckle_shape, NULL);
    mask_stats st;
    d2_err e = {0};
    double t0 = d2_now();
    CHECK(mask_make_printable(&m, 1, &st, "speckle", &e) == 0);
    double dt = d2_now() - t0;
    CHECK(st.islands == 681 && st.bridges == 681);
    /* each speck needs at least one open pixel closed; most take 3 (to the
     * nearest neighbour 4 px away) or fewer once neighbours are tied */
    CHECK(st.bridge_px >= 681 && st.bridge_px <= 3 * 681);
    check_printable(&m, &st, 1);
    printf("  681 islands tied in %.3f s\n", dt);
    CHECK(dt < 2.0);
    mask_map_free(&m);
}

TEST(carrier_keeps_islands_and_closes_only_narrow_recesses)
{
    rings g = {15.5, 15.5, 1, {4}, {7}};
    mask_map m;
    synth(&m, 32, 32, ring_shape, &g);
    mask_stats st;
    d2_err e = {0};
    CHECK(mask_make_carrier(&m, 1, &st, "carrier", &e) == 0);
    CHECK(st.islands == 0 && st.bridges == 0 && st.blocked_px == 0);
    CHECK(!memcmp(m.open, m.open0, 32 * 32));
    mask_map_free(&m);
}

/* ------------------------------------------------------- real digits */

static void geom_for_masks(d2_geom *g, int n, double pitch, double aperture)
{
    geom_default(g);
    g->n = n;
    g->pitch_mm = pitch;
    g->aperture_mm = aperture;
}

TEST(mnist_0_6_8_9_become_one_piece)
{
    d2_dataset ds;
    d2_err e = {0};
    int rc = dataset_load(dataset_default_dir(), "mnist", 1, &ds, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    if (rc) return;
    d2_geom g;
    geom_for_masks(&g, 200, 0.4, 44.8); /* the paper's plane, 112 px digit */
    d2_geom q;
    geom_for_masks(&q, 64, 0.4, 14.4);  /* samples/quick.json: 36 px digit */
    const int digits[4] = {0, 6, 8, 9};
    int islands[4] = {0}, tested = 0;
    float img[28 * 28];
    for (int k = 0; k < 4; k++) {
        int found = 0;
        for (int i = 0; i < ds.count && found < 5; i++) {
            if (ds.labels[i] != digits[k]) continue;
            found++;
            for (int p = 0; p < 28 * 28; p++) img[p] = ds.images[(size_t)i * 784 + p] / 255.0f;
            for (int v = 0; v < 3; v++) {
                const d2_geom *gg = v == 2 ? &q : &g;
                int w = v == 0 ? 1 : 2; /* 0.1 mm resin, 0.45 mm FDM */
                mask_map m;
                mask_stats st;
                CHECK(mask_map_alloc(&m, gg->n, gg->n, &e) == 0);
                CHECK(mask_check_image(gg, img, 28, 28, 0.5, 0, "mnist", &e) == 0);
                CHECK(mask_binarise(gg, img, 28, 28, 0.5, &m, "mnist", &e) == 0);
                rc = mask_make_printable(&m, w, &st, "mnist", &e);
                if (rc) printf("  test image %d: %s\n", i, e.msg);
                CHECK(rc == 0);
                check_printable(&m, &st, w);
                if (v == 0) islands[k] += st.islands;
                tested++;
                mask_map_free(&m);
            }
        }
    }
    CHECK(tested == 60);
    /* the counters of 0, 6, 8 and 9 are islands in most images */
    for (int k = 0; k < 4; k++) {
        if (islands[k] < 3) printf("  digit %d: %d islands in 5 images\n", digits[k], islands[k]);
        CHECK(islands[k] >= 3);
    }
    dataset_free(&ds);
}

/* ---------------------------------------------------------- bad input */

TEST(bad_images_fail_with_a_clear_message)
{
    d2_geom g;
    geom_for_masks(&g, 64, 0.4, 14.4);
    d2_err e = {0};
    float img[28 * 28];
    memset(img, 0, sizeof img);
    CHECK_ERR(mask_check_image(&g, img, 28, 28, 0.5, 2, "empty.png", &e), e, D2_EINPUT,
              "empty.png: the image is empty (every pixel is 0)");
    for (int i = 0; i < 28 * 28; i++) img[i] = 0.6f + 0.4f * (i % 2);
    CHECK_ERR(mask_check_image(&g, img, 28, 28, 0.5, 2, "on.png", &e), e, D2_EINPUT,
              "on.png: the image is all on: its darkest pixel (0.6) is at or above the "
              "threshold (0.5 x the brightest, 0.5)");
    /* dark digit on white */
    for (int i = 0; i < 28 * 28; i++) img[i] = (i / 28 > 10 && i / 28 < 18) ? 0.0f : 1.0f;
    CHECK_ERR(mask_check_image(&g, img, 28, 28, 0.5, 2, "inv.png", &e), e, D2_EINPUT,
              "inv.png: the image looks inverted: 94 of its 108 edge pixels are at or above the "
              "threshold; a mask needs a bright digit on a dark background");
    for (int i = 0; i < 28 * 28; i++) img[i] = 0.6f + 0.4f * (i % 2);
    for (int i = 0; i < 28 * 28; i++) img[i] = (i / 28 > 10 && i / 28 < 18) ? 0.8f : 0.1f;
    CHECK(mask_check_image(&g, img, 28, 28, 0.5, 2, "ok.png", &e) == 0);
    img[5] = 1.5f;
    CHECK_ERR(mask_check_image(&g, img, 28, 28, 0.5, 2, "hot.png", &e), e, D2_EINPUT,
              "hot.png: pixel (row 0, column 5) is 1.5: allowed 0..1");
    img[5] = NAN;
    CHECK_ERR(mask_check_image(&g, img, 28, 28, 0.5, 2, "nan.png", &e), e, D2_EINPUT,
              "pixel (row 0, column 5) is nan");
    img[5] = 0;
    CHECK_ERR(mask_check_image(&g, img, 28, 28, 1.0, 2, "t.png", &e), e, D2_EINPUT,
              "threshold 1: allowed (0, 1)");
    CHECK_ERR(mask_check_image(&g, img, 0, 28, 0.5, 2, "zero.png", &e), e, D2_EINPUT,
              "zero.png: image of 0 x 28 pixels");
    /* 36 plane pixels across the aperture: at most 72 image pixels */
    float *big = calloc(73 * 40, sizeof *big);
    big[100] = 1;
    CHECK(mask_check_image(&g, big, 40, 72, 0.5, 2, "72.png", &e) == 0);
    CHECK_ERR(mask_check_image(&g, big, 40, 73, 0.5, 2, "big.png", &e), e, D2_EINPUT,
              "big.png: a 73 x 40 image spread over the 14.4 mm aperture (36 plane pixels of "
              "0.4 mm) puts 2.03 image pixels on each plane pixel; at most 2 allowed");
    CHECK_ERR(mask_check_image(&g, big, 40, 73, 0.5, 2, "big.png", &e), e, D2_EINPUT,
              "scale the image to at most 72 pixels on its longer side");
    free(big);
    d2_geom wide = g;
    wide.aperture_mm = 30;
    CHECK_ERR(mask_check_image(&wide, img, 28, 28, 0.5, 2, "x.png", &e), e, D2_EINPUT,
              "input aperture (input.aperture_mm 30) is larger than its input plane (64 x 0.4 "
              "mm = 25.6 mm)");
}

static void write_png(const char *path, png_uint_32 format, int w, int h, const void *px,
                      const void *cmap, int ncmap)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.format = format;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.colormap_entries = (png_uint_32)ncmap;
    if (!png_image_write_to_file(&im, path, 0, px, 0, cmap)) {
        printf("write %s: %s\n", path, im.message);
        exit(3);
    }
}

TEST(grey_and_rgb_pngs_are_read_palette_and_alpha_are_refused)
{
    uint8_t px[28 * 28 * 4];
    for (int i = 0; i < 28 * 28 * 4; i++) px[i] = (uint8_t)(i % 7 == 0 ? 255 : 0);
    mask_source s;
    d2_err e = {0};
    write_png(t_path("grey digit.png"), PNG_FORMAT_GRAY, 28, 28, px, NULL, 0);
    CHECK(mask_source_png(t_path("grey digit.png"), 3, &s, &e) == 0);
    CHECK(s.rows == 28 && s.cols == 28 && s.label == 3 && s.index == -1);
    CHECK(!strcmp(s.name, "mask_grey_digit"));
    CHECK(s.img[0] == 1.0f && s.img[1] == 0.0f);
    mask_source_free(&s);
    write_png(t_path("rgb.png"), PNG_FORMAT_RGB, 28, 28, px, NULL, 0);
    CHECK(mask_source_png(t_path("rgb.png"), -1, &s, &e) == 0);
    CHECK(s.rows == 28 && s.label == -1);
    mask_source_free(&s);

    write_png(t_path("ga.png"), PNG_FORMAT_GA, 28, 28, px, NULL, 0);
    CHECK_ERR(mask_source_png(t_path("ga.png"), -1, &s, &e), e, D2_EINPUT,
              "ga.png: a PNG with an alpha channel or transparency is not supported");
    write_png(t_path("rgba.png"), PNG_FORMAT_RGBA, 28, 28, px, NULL, 0);
    CHECK_ERR(mask_source_png(t_path("rgba.png"), -1, &s, &e), e, D2_EINPUT,
              "flatten it onto black and save it as grey or RGB");
    uint8_t cmap[2 * 3] = {0, 0, 0, 255, 255, 255}, idx[28 * 28];
    for (int i = 0; i < 28 * 28; i++) idx[i] = px[i] ? 1 : 0;
    write_png(t_path("pal.png"), PNG_FORMAT_RGB_COLORMAP, 28, 28, idx, cmap, 2);
    CHECK_ERR(mask_source_png(t_path("pal.png"), -1, &s, &e), e, D2_EINPUT,
              "pal.png: a palette (indexed-colour) PNG is not supported for a mask: save it as "
              "grey or RGB");
    t_write_text(t_path("text.png"), "not a png\n");
    CHECK_ERR(mask_source_png(t_path("text.png"), -1, &s, &e), e, D2_EINPUT,
              "text.png: not a readable PNG");
    CHECK_ERR(mask_source_png(t_path("missing.png"), -1, &s, &e), e, D2_EINPUT, "missing.png");
    CHECK(s.img == NULL);
}

/* ------------------------------------------------------------ outputs */

TEST(preview_shows_original_binarised_and_classes_side_by_side)
{
    rings g = {15.5, 15.5, 1, {4}, {7}};
    mask_map m;
    synth(&m, 32, 32, ring_shape, &g);
    mask_stats st;
    d2_err e = {0};
    CHECK(mask_make_printable(&m, 1, &st, "ring", &e) == 0);
    CHECK(mask_write_preview(t_path("ring.png"), &m, &e) == 0);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    CHECK(png_image_begin_read_from_file(&im, t_path("ring.png")));
    im.format = PNG_FORMAT_RGB;
    /* the crop holds the ring (radius 7) and a 3 px margin; three panels, two
     * 8 px gaps */
    int r0, c0, side;
    mask_preview_crop(&m, &r0, &c0, &side);
    CHECK(side == 20 && r0 == 6 && c0 == 6);
    int sc = (256 + side - 1) / side, pw = side * sc;
    CHECK(im.width == (png_uint_32)(3 * pw + 16) && im.height == (png_uint_32)pw);
    uint8_t *px = malloc(PNG_IMAGE_SIZE(im));
    CHECK(png_image_finish_read(&im, NULL, px, 0, NULL));
    int seen[MASK_NCLASS] = {0};
    for (int r = 0; r < side; r++)
        for (int c = 0; c < side; c++) {
            size_t y = (size_t)(r * sc + sc / 2) * im.width, s = (size_t)(r0 + r) * 32 + c0 + c;
            const uint8_t *p = px + (y + 2 * (pw + 8) + c * sc + sc / 2) * 3;
            int k = m.cls[s];
            CHECK(!memcmp(p, mask_class_rgb[k], 3));
            seen[k] = 1;
            /* the binarised panel: white where open0 */
            const uint8_t *b = px + (y + (pw + 8) + c * sc + sc / 2) * 3;
            CHECK(b[0] == (m.open0[s] ? 255 : 0));
        }
    CHECK(seen[MASK_BRIDGE] && seen[MASK_ISLAND] && seen[MASK_OPEN] && seen[MASK_OPAQUE]);
    free(px);
    mask_map_free(&m);
    CHECK(t_exists(t_path("ring.png")));
}

TEST(slab_optics_follow_thickness_index_and_kappa)
{
    mask_slab s;
    double wl = opt_wavelength_mm(0.4); /* 0.7495 mm */
    double full = wl / (1.7227 - 1);  /* 1.037 mm of material = 2 pi */
    mask_slab_optics(full, 1.7227, 0.031, wl, &s);
    CHECK_NEAR(s.phase_rad, 2 * M_PI, 1e-12);
    CHECK_NEAR(s.amplitude, 0.764, 0.002); /* PHYSICS.md: 0.76 through 1.04 mm */
    double r = pow(0.7227 / 2.7227, 2);
    CHECK_NEAR(s.power, s.amplitude * s.amplitude * (1 - r) * (1 - r), 1e-12);
    CHECK_NEAR(r, 0.0705, 0.0005);
    mask_slab_optics(0, 1.7227, 0.031, wl, &s);
    CHECK(s.phase_rad == 0 && s.amplitude == 1);
}

/* ------------------------------------------------------------ mask runs */

/* A small model (the quick geometry) with random phases: its predictions
 * mean nothing, but they must be those of the forward model. */
static void small_model(d2_model *m)
{
    d2_err e = {0};
    memset(m, 0, sizeof *m);
    geom_default(&m->g);
    m->g.n = 64;
    m->g.layers = 2;
    for (int k = 0; k <= 2; k++) m->g.gap_mm[k] = 20;
    m->g.aperture_mm = 14.4;
    geom_layout_343(&m->g, 2.4, 6, 6);
    train_opts_default(&m->t);
    m->test_accuracy = -1;
    if (model_alloc(m, &e)) {
        printf("model_alloc: %s\n", e.msg);
        exit(3);
    }
    d2_rng r;
    d2_rng_seed(&r, 7);
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 64 * 64; i++) m->phase[l][i] = (float)(2 * M_PI * d2_rng_uniform(&r));
}

static void objet(mesh_printer *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "objet-connex500");
    p->build_mm[0] = 490;
    p->build_mm[1] = 390;
    p->build_mm[2] = 200;
    p->xy_resolution_mm = 0.042;
    p->z_step_mm = 0.016;
    p->min_feature_mm = 0.1;
    p->pin_clearance_mm = 0.1;
}

static void run_opts(mask_opts *o)
{
    mask_opts_default(o);
    objet(&o->printer);
    o->wavelength_mm = opt_wavelength_mm(0.4);
    o->index = 1.7227;
    o->kappa = 0.031;
    o->material_name = "verobp";
}

/* 28 x 28 grey PNG of rings (radii in image pixels) or a bar. */
static void digit_png(const char *path, int kind)
{
    uint8_t px[28 * 28];
    for (int r = 0; r < 28; r++)
        for (int c = 0; c < 28; c++) {
            double d = hypot(r - 13.5, c - 13.5);
            int on = kind == 0 ? (d >= 6 && d < 9)
                     : kind == 1 ? ((d >= 2.5 && d < 5) || (d >= 8 && d < 11))
                     : kind == 2 ? (c >= 12 && c < 16 && r >= 4 && r < 24)
                                 : 0; /* 3: empty */
            px[r * 28 + c] = on ? 255 : 0;
        }
    write_png(path, PNG_FORMAT_GRAY, 28, 28, px, NULL, 0);
}

/* Runs a command and returns its output (static buffer). */
static const char *run_cmd(const char *cmd)
{
    static char out[16384];
    out[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p) return out;
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    pclose(p);
    return out;
}

/* The number after "key" and a colon in text, or -1. */
static long after_key(const char *text, const char *key)
{
    const char *s = strstr(text, key);
    if (!s || !(s = strchr(s, ':'))) return -1;
    return strtol(s + 1, NULL, 10);
}

/* admesh: 0 disconnected facets, 0 backwards edges, 1 part; prusa-slicer
 * --info: manifold = yes. */
static void check_validators(const char *path)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "admesh '%s' 2>&1", path);
    const char *a = run_cmd(cmd);
    CHECK(after_key(a, "Number of parts") == 1);
    CHECK(after_key(a, "Backwards edges") == 0);
    CHECK(after_key(a, "Total disconnected facets") == 0);
    snprintf(cmd, sizeof cmd, "prusa-slicer --info '%s' 2>&1", path);
    const char *p = run_cmd(cmd);
    if (!strstr(p, "manifold = yes")) printf("  prusa-slicer --info %s:\n%s\n", path, p);
    CHECK(strstr(p, "manifold = yes") != NULL);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

TEST(run_writes_previews_meshes_and_one_line_per_mask_and_meshes_pass_validators)
{
    d2_model m;
    small_model(&m);
    mask_opts o;
    run_opts(&o);
    digit_png(t_path("zero.png"), 0);
    digit_png(t_path("rings.png"), 1);
    digit_png(t_path("one.png"), 2);
    mask_source src[3];
    d2_err e = {0};
    CHECK(mask_source_png(t_path("zero.png"), 0, &src[0], &e) == 0);
    CHECK(mask_source_png(t_path("rings.png"), 8, &src[1], &e) == 0);
    CHECK(mask_source_png(t_path("one.png"), 1, &src[2], &e) == 0);
    mask_result res[3];
    mask_run_report rep;
    const char *out = t_path("run1");
    int rc = mask_run(&m, src, 3, &o, out, res, &rep, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    CHECK(res[0].st.islands == 1 && res[1].st.islands == 2 && res[2].st.islands == 0);
    CHECK(rep.islands == 3 && rep.bridges == 3 && rep.labelled == 3 && rep.min_px == 1);
    CHECK(rep.nwarn == 1 && strstr(rep.warn[0], "passes 18.1 % of the power"));
    char p[1100];
    for (int i = 0; i < 3; i++) {
        CHECK(res[i].st.parts == 1);
        snprintf(p, sizeof p, "%s/%s", out, res[i].png_file);
        CHECK(t_exists(p));
        snprintf(p, sizeof p, "%s/%s", out, res[i].mesh_file);
        CHECK(file_size(p) == 84 + 50 * (long)res[i].facets);
        check_validators(p);
        mesh_report r;
        CHECK(mesh_check_file(p, &r, &e) == 0);
        CHECK(r.closed && r.parts == 1);
        /* the posts end in pins above gap 0, where layer 1's datum rests */
        CHECK(r.hi[2] > m.g.gap_mm[0] && r.hi[2] < m.g.gap_mm[0] + 5);
    }
    CHECK(!strcmp(res[0].mesh_file, "mask_zero.stl") && !strcmp(res[0].frame_label, "IN"));
    snprintf(p, sizeof p, "%s/masks.jsonl", out);
    CHECK(count_lines(p) == 3);
    snprintf(p, sizeof p, "%s/summary.json", out);
    cJSON *sum = NULL;
    CHECK(cfg_load(p, &sum, &e) == 0);
    const cJSON *acc = cJSON_GetObjectItem(sum, "accuracy");
    double a = cJSON_GetNumberValue(cJSON_GetObjectItem(acc, "mask"));
    CHECK_NEAR(a, rep.correct[2] / 3.0, 1e-5);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(sum, "bridges")) == 3);
    /* the summary names the optical model that read the masks: the thin model
     * here, the thick one once the model is made thick (as for an export) */
    const char *om = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(sum, "optics"), "model"));
    CHECK(om && !strcmp(om, "thin"));
    cJSON_Delete(sum);
    CHECK(model_make_thick(&m, 0, &e) == 0);
    out = t_path("run1-thick");
    rc = mask_run(&m, src, 3, &o, out, res, &rep, &e);
    if (rc) printf("  %s\n", e.msg);
    CHECK(rc == 0);
    snprintf(p, sizeof p, "%s/summary.json", out);
    sum = NULL;
    CHECK(cfg_load(p, &sum, &e) == 0);
    om = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(sum, "optics"), "model"));
    CHECK(om && !strcmp(om, "thick"));
    cJSON_Delete(sum);
    for (int i = 0; i < 3; i++) mask_source_free(&src[i]);
    model_free(&m);
}

TEST(stencil_volume_is_the_full_plate_less_the_open_pixels)
{
    d2_model m;
    small_model(&m);
    mask_opts o;
    run_opts(&o);
    o.thick_mm = 2.0;
    digit_png(t_path("vol.png"), 1);
    mask_source s;
    d2_err e = {0};
    CHECK(mask_source_png(t_path("vol.png"), -1, &s, &e) == 0);
    mask_result res;
    mask_run_report rep;
    CHECK(mask_run(&m, &s, 1, &o, t_path("vol"), &res, &rep, &e) == 0);
    CHECK_NEAR(rep.thick_mm, 2.0, 1e-12); /* 125 Z steps */
    /* the same plate with every cell opaque */
    float *top = malloc(64 * 64 * sizeof *top);
    for (int i = 0; i < 64 * 64; i++) top[i] = (float)rep.thick_mm;
    mesh_plate p;
    memset(&p, 0, sizeof p);
    p.rows = p.cols = 64;
    p.pitch_mm = 0.4;
    p.top_mm = top;
    p.gap_mm = 20;
    p.label_top = "IN";
    p.label_bottom = "SRC";
    mesh_frame_default(&p.frame, &o.printer);
    p.frame.thick_mm = rep.frame_thick_mm;
    p.printer = o.printer;
    mesh *full = NULL;
    CHECK(mesh_build_plate(&p, &full, NULL, &e) == 0);
    double want = mesh_volume_mm3(full) - res.st.open_px * 0.16 * rep.thick_mm;
    CHECK_NEAR(res.volume_mm3, want, 1e-5 * want);
    CHECK(res.st.open_px > 100);
    mesh_free(full);
    free(top);
    mask_source_free(&s);
    model_free(&m);
}

TEST(run_predictions_are_the_forward_model_on_each_input)
{
    d2_model m;
    small_model(&m);
    mask_opts o;
    run_opts(&o);
    o.write_mesh = 0;
    digit_png(t_path("p.png"), 1);
    mask_source s;
    d2_err e = {0};
    CHECK(mask_source_png(t_path("p.png"), 3, &s, &e) == 0);
    mask_result res;
    mask_run_report rep;
    CHECK(mask_run(&m, &s, 1, &o, t_path("pred"), &res, &rep, &e) == 0);
    CHECK(!res.mesh_file[0] && res.facets == 0);
    /* recompute independently */
    d2_net *net = net_new(&m.g, 1, &e);
    net_set_model(net, &m);
    mask_map mm;
    mask_stats st;
    CHECK(mask_map_alloc(&mm, 64, 64, &e) == 0);
    CHECK(mask_binarise(&m.g, s.img, 28, 28, 0.5, &mm, "p", &e) == 0);
    CHECK(mask_make_printable(&mm, 1, &st, "p", &e) == 0);
    float in[64 * 64], det[D2_MAX_DET];
    input_from_image(&m.g, s.img, 28, 28, in);
    net_infer(net, in, det, NULL, 0);
    CHECK(!memcmp(det, res.det[0], sizeof(float) * m.g.ndet));
    CHECK(res.pred[0] == det_predict(&m.g, det));
    for (int k = 1; k < 3; k++) {
        const uint8_t *op = k == 1 ? mm.open0 : mm.open;
        for (int i = 0; i < 64 * 64; i++) in[i] = op[i] ? 1.0f : 0.0f;
        net_infer(net, in, det, NULL, 0);
        CHECK(!memcmp(det, res.det[k], sizeof(float) * m.g.ndet));
        CHECK(res.pred[k] == det_predict(&m.g, det));
    }
    CHECK(rep.correct[2] == (res.pred[2] == 3));
    net_free(net);
    mask_map_free(&mm);
    mask_source_free(&s);
    model_free(&m);
}

TEST(carrier_run_reports_uniform_phase_and_absorption_of_the_digit)
{
    d2_model m;
    small_model(&m);
    mask_opts o;
    run_opts(&o);
    o.mode = MASK_CARRIER_RECESS;
    o.thick_mm = 1.0;
    o.depth_mm = 0.5;
    digit_png(t_path("c.png"), 1);
    mask_source s;
    d2_err e = {0};
    CHECK(mask_source_png(t_path("c.png"), -1, &s, &e) == 0);
    mask_result res;
    mask_run_report rep;
    CHECK(mask_run(&m, &s, 1, &o, t_path("carrier"), &res, &rep, &e) == 0);
    CHECK(res.st.islands == 0 && res.st.bridges == 0);
    /* 1 mm and 0.5 mm are 62.5 and 31.25 Z steps: rounded to 63 and 31 */
    CHECK_NEAR(rep.thick_mm, 63 * 0.016, 1e-12);
    CHECK_NEAR(rep.depth_mm, 31 * 0.016, 1e-12);
    CHECK_NEAR(rep.digit.thick_mm, 32 * 0.016, 1e-12);
    double wl = opt_wavelength_mm(0.4), t = 32 * 0.016;
    CHECK_NEAR(rep.digit.phase_rad, 2 * M_PI * 0.7227 * t / wl, 1e-9);
    CHECK_NEAR(rep.digit.amplitude, exp(-2 * M_PI * 0.031 * t / wl), 1e-9);
    char p[1100];
    snprintf(p, sizeof p, "%s/carrier/%s", t_tmpdir(), res.mesh_file);
    check_validators(p);
    /* a solid plate: the digit cells hold t of material, the rest T */
    cJSON *sum = NULL;
    snprintf(p, sizeof p, "%s/carrier/summary.json", t_tmpdir());
    CHECK(cfg_load(p, &sum, &e) == 0);
    const cJSON *d = cJSON_GetObjectItem(cJSON_GetObjectItem(sum, "carrier"), "digit");
    CHECK_NEAR(cJSON_GetNumberValue(cJSON_GetObjectItem(d, "amplitude")), rep.digit.amplitude,
               1e-5);
    cJSON_Delete(sum);
    /* a recess through the whole plate is refused */
    o.depth_mm = 1.0;
    CHECK_ERR(mask_run(&m, &s, 1, &o, t_path("carrier2"), &res, &rep, &e), e, D2_EINPUT,
              "carrier recess 1.008 mm deep in a 1.008 mm plate: the digit would be cut through");
    CHECK(!t_exists(t_path("carrier2")));
    mask_source_free(&s);
    model_free(&m);
}

TEST(bad_source_in_a_run_writes_nothing)
{
    d2_model m;
    small_model(&m);
    mask_opts o;
    run_opts(&o);
    digit_png(t_path("b0.png"), 0);
    digit_png(t_path("b1.png"), 3); /* empty */
    mask_source src[2];
    d2_err e = {0};
    CHECK(mask_source_png(t_path("b0.png"), 0, &src[0], &e) == 0);
    CHECK(mask_source_png(t_path("b1.png"), 0, &src[1], &e) == 0);
    mask_result res[2];
    mask_run_report rep;
    CHECK_ERR(mask_run(&m, src, 2, &o, t_path("bad"), res, &rep, &e), e, D2_EINPUT,
              "b1.png: the image is empty");
    CHECK(!t_exists(t_path("bad")));
    /* an earlier run's files stay as they were */
    CHECK(mask_run(&m, src, 1, &o, t_path("bad"), res, &rep, &e) == 0);
    char p[1100];
    snprintf(p, sizeof p, "%s/masks.jsonl", t_path("bad"));
    long before = file_size(p);
    CHECK_ERR(mask_run(&m, src, 2, &o, t_path("bad"), res, &rep, &e), e, D2_EINPUT,
              "b1.png: the image is empty");
    CHECK(file_size(p) == before && count_lines(p) == 1);
    /* the same name twice */
    CHECK_ERR(mask_run(&m, (mask_source[]){src[0], src[0]}, 2, &o, t_path("dup"), res, &rep, &e), e,
              D2_EINPUT, "would both be written as mask_b0");
    /* a failure while writing removes this run's files */
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/late", t_tmpdir());
    snprintf(p, sizeof p, "%s/late/mask_b0.stl/x", t_tmpdir());
    CHECK(d2_mkdir_p(p, &e) == 0);
    CHECK(mask_run(&m, src, 1, &o, dir, res, &rep, &e) != 0);
    snprintf(p, sizeof p, "%s/late/mask_b0.png", t_tmpdir());
    CHECK(!t_exists(p));
    snprintf(p, sizeof p, "%s/late/masks.jsonl", t_tmpdir());
    CHECK(!t_exists(p));
    for (int i = 0; i < 2; i++) mask_source_free(&src[i]);
    model_free(&m);
}

TEST(dataset_sources_pick_a_class_or_a_range)
{
    d2_dataset ds;
    d2_err e = {0};
    int rc = dataset_load(dataset_default_dir(), "mnist", 1, &ds, &e);
    CHECK(rc == 0);
    if (rc) return;
    mask_source *s = NULL;
    int n = 0;
    CHECK(mask_sources_dataset(&ds, "mnist", 0, 4, 6, &s, &n, &e) == 0);
    CHECK(n == 4);
    for (int i = 0; i < n; i++) {
        CHECK(s[i].label == 6 && ds.labels[s[i].index] == 6);
        if (i) CHECK(s[i].index > s[i - 1].index);
        CHECK(s[i].img[14 * 28 + 14] == ds.images[(size_t)s[i].index * 784 + 14 * 28 + 14] / 255.0f);
        mask_source_free(&s[i]);
    }
    free(s);
    CHECK(mask_sources_dataset(&ds, "mnist", 42, 2, -1, &s, &n, &e) == 0);
    CHECK(n == 2 && s[0].index == 42 && s[1].index == 43 && !strcmp(s[1].name, "mask_mnist00043"));
    for (int i = 0; i < n; i++) mask_source_free(&s[i]);
    free(s);
    CHECK_ERR(mask_sources_dataset(&ds, "mnist", 9990, 50, 0, &s, &n, &e), e, D2_EINPUT,
              "mnist test set: only");
    CHECK_ERR(mask_sources_dataset(&ds, "mnist", 9999, 2, -1, &s, &n, &e), e, D2_EINPUT,
              "images 9999..10000 asked for, the set has 10000");
    CHECK(s == NULL && n == 0);
    dataset_free(&ds);
}

int main(void)
{
    RUN(min_feature_in_pixels_is_rounded_up_and_at_least_one);
    RUN(ring_counter_is_tied_by_one_bridge_across_the_ring);
    RUN(bridge_crosses_the_ring_where_it_is_thinnest);
    RUN(nested_rings_become_one_piece_inner_tied_to_outer);
    RUN(nested_rings_hold_with_wide_bridges);
    RUN(diagonal_contact_does_not_hold_an_island);
    RUN(diagonal_pinch_between_openings_is_closed);
    RUN(openings_narrower_than_the_printer_are_closed_and_counted);
    RUN(hundreds_of_specks_are_all_tied_in_one_search);
    RUN(carrier_keeps_islands_and_closes_only_narrow_recesses);
    RUN(mnist_0_6_8_9_become_one_piece);
    RUN(bad_images_fail_with_a_clear_message);
    RUN(grey_and_rgb_pngs_are_read_palette_and_alpha_are_refused);
    RUN(preview_shows_original_binarised_and_classes_side_by_side);
    RUN(slab_optics_follow_thickness_index_and_kappa);
    RUN(run_writes_previews_meshes_and_one_line_per_mask_and_meshes_pass_validators);
    RUN(stencil_volume_is_the_full_plate_less_the_open_pixels);
    RUN(run_predictions_are_the_forward_model_on_each_input);
    RUN(carrier_run_reports_uniform_phase_and_absorption_of_the_digit);
    RUN(bad_source_in_a_run_writes_nothing);
    RUN(dataset_sources_pick_a_class_or_a_range);
    return t_finish();
}
