/* d2fab mask: printable input aperture masks (stencils) from test digits, and
 * what the network reads through them.
 *
 * A mask is the digit resampled onto the model's n x n input plane exactly as
 * the network sees it (input_from_image: same pitch, same aperture), then
 * binarised: a pixel is OPEN (light passes) where its amplitude is at least
 * threshold * (the largest amplitude on the plane), OPAQUE elsewhere. The
 * plane is surrounded by the plate's frame, which is opaque and is the body
 * every other opaque region must hang from.
 *
 * Making it printable (mask_make_printable), with w = the printer's minimum
 * feature in pixels, ceil(min_feature_mm / pitch_mm), at least 1:
 *   1. Narrow openings: the open set is replaced by its morphological opening
 *      with a w x w square, so every open pixel lies in a fully open w x w
 *      square; thinner slits would not print open.
 *   2. Islands: the opaque set is split into connected parts with
 *      4-connectivity. Material that touches only at a corner is not held
 *      (a printed corner contact has zero width) and is not a 2-manifold in
 *      the mesh, so diagonal contact never counts as connected. Every part not
 *      connected to the frame is an island (the counters of 0, 4, 6, 8, 9 and
 *      stray specks). Islands are tied one at a time, nearest first (Prim's
 *      algorithm): a Dijkstra search from the connected body, over positions of
 *      a w x w square moved in 4-neighbour steps, each position costing the
 *      open pixels it covers (ties: fewer turns, then the dimmer pixels of the
 *      original image), reaches the nearest island; the squares along that
 *      path become the bridge, a band at least w pixels wide, and the search
 *      goes on from the grown body (one search for all islands: a speckled
 *      200 x 200 image with 681 islands takes 0.05 s). An island nested in
 *      another is tied to its ring once the ring is connected. Each bridge
 *      ties at least one island (a wide one can touch two), so there are never
 *      more bridges than islands.
 *   3. Diagonal pinches (2 x 2 squares with open pixels on one diagonal and
 *      opaque on the other) are zero-width openings: the dimmer of the two open
 *      pixels is closed. Steps 1 and 3 repeat until neither changes anything.
 * Afterwards the opaque set is one 4-connected piece with the frame, every
 * open pixel lies in an open w x w square and no pinch is left.
 *
 * Carrier mode instead prints a solid plate with the digit as a recess (or a
 * relief) for labs that cover the rest with metal foil: no islands, the digit
 * area transmits with a uniform phase and absorption (mask_carrier_optics).
 *
 * Library code: never prints, never exits; functions return 0 or a negative
 * D2_E* code with the message in e. */
#ifndef D2_MASK_H
#define D2_MASK_H

#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "core/idx.h"
#include "mesh/mesh.h"
#include "optics/optics.h"

#define MASK_DEFAULT_THRESHOLD 0.5
/* --image files: at most this many image pixels per plane pixel across the
 * aperture; the network's bilinear resampling would skip finer detail. */
#define MASK_MAX_IMAGE_PX_PER_PITCH 2.0

/* Pixel classes of a processed mask (mask_map.cls), also the preview colours
 * (RGB):                                                          colour   */
enum {
    MASK_OPAQUE = 0, /* plate, opaque in the binarised aperture        black    */
    MASK_OPEN = 1,   /* open: light passes                             white    */
    MASK_ISLAND = 2, /* opaque island that needed a bridge             blue     */
    MASK_BRIDGE = 3, /* open in the binarised aperture, closed by a bridge  red */
    MASK_NARROW = 4, /* open but narrower than the printer's min feature: closed  orange */
    MASK_PINCH = 5,  /* open, closed to remove a diagonal pinch        magenta  */
    MASK_NCLASS = 6
};
/* RGB of each class in the preview PNG. */
extern const uint8_t mask_class_rgb[MASK_NCLASS][3];

/* One mask on a rows x cols plane (n x n for a model). */
typedef struct mask_map {
    int rows, cols;
    float *amp;      /* resampled amplitude of the original image, 0..1 */
    uint8_t *open0;  /* binarised aperture: 1 open, 0 opaque */
    uint8_t *open;   /* printable mask (after mask_make_printable): 1 open */
    uint8_t *cls;    /* MASK_* class of every pixel */
} mask_map;

typedef struct mask_stats {
    int min_px;          /* w: minimum feature in pixels */
    long open0_px;       /* open pixels of the binarised aperture */
    long open_px;        /* open pixels of the printable mask */
    long narrow_px;      /* closed as narrower than w (MASK_NARROW) */
    long bridge_px;      /* closed by bridges (MASK_BRIDGE) */
    long pinch_px;       /* closed to remove diagonal pinches (MASK_PINCH) */
    long blocked_px;     /* open0_px - open_px (sum of the three above) */
    long thin_opaque_px; /* opaque pixels in no fully opaque w x w square: walls
                            thinner than the printer's minimum feature, kept */
    int islands;         /* opaque parts not held by the frame before bridging */
    int island_px;       /* their pixels */
    int bridges;         /* bridges made (<= islands) */
    int parts;           /* 4-connected opaque parts afterwards, frame included (1) */
} mask_stats;

/* Allocates the maps of a rows x cols mask (all opaque, amplitude 0). Returns
 * 0 or D2_EIO. Release with mask_map_free (NULL or zeroed: no-op). */
int mask_map_alloc(mask_map *m, int rows, int cols, d2_err *e);
void mask_map_free(mask_map *m);

/* Pixel size of the printer's minimum feature: ceil(min_feature_mm /
 * pitch_mm), at least 1. */
int mask_min_px(double min_feature_mm, double pitch_mm);

/* Checks an image of rows x cols grey values (0..1) for use as a mask with
 * threshold t (fraction of the image maximum, in (0, 1)): name is used in
 * messages. Fails with D2_EINPUT when the image is empty (no pixel above 0),
 * all on (its darkest pixel is at or above t * max: no shape to cut),
 * inverted (more than half of its edge pixels at or above t * max: a dark
 * digit on a bright background), holds
 * values outside 0..1, or (max_px_per_pitch > 0) has more than
 * max_px_per_pitch image pixels per plane pixel across the aperture, or the
 * aperture does not fit on the plane. */
int mask_check_image(const d2_geom *g, const float *img, int rows, int cols, double t,
                     double max_px_per_pitch, const char *name, d2_err *e);

/* Resamples img (rows x cols grey 0..1) onto g's n x n input plane with
 * input_from_image and binarises it with threshold t: fills m->amp, m->open0,
 * and m->open and m->cls as a copy of the binarised aperture. m must be
 * allocated n x n. Fails with D2_EINPUT when no plane pixel is open. */
int mask_binarise(const d2_geom *g, const float *img, int rows, int cols, double t, mask_map *m,
                  const char *name, d2_err *e);

/* Steps 1-3 of the top of this file on m (open0 and amp set; open and cls are
 * rewritten), w = min_px >= 1. Fills st. Fails with D2_EINPUT when nothing is
 * left open (every opening narrower than the printer resolves), D2_EIO when
 * out of memory. */
int mask_make_printable(mask_map *m, int min_px, mask_stats *st, const char *name, d2_err *e);

/* Same as mask_make_printable but for a carrier plate: only step 1 (a recess
 * narrower than the printer cannot be printed either), no islands. */
int mask_make_carrier(mask_map *m, int min_px, mask_stats *st, const char *name, d2_err *e);

/* Checks on any open map (1 = open) of rows x cols, the outside of which is
 * opaque frame: */
/* Number of 4-connected opaque parts, the frame and all opaque pixels
 * touching it counting as one; -1 when out of memory. */
int mask_opaque_parts(const uint8_t *open, int rows, int cols);
/* Number of diagonal pinches (2 x 2 squares open on one diagonal only). */
long mask_pinches(const uint8_t *open, int rows, int cols);
/* Open pixels that lie in no fully open w x w square (0 after step 1); -1
 * when out of memory. */
long mask_narrow_open(const uint8_t *open, int rows, int cols, int w);
/* Pixels of set (nonzero) in no w x w square lying entirely in solid (nonzero:
 * opaque incl. the set); -1 when out of memory. Used to check that bridges
 * (set = MASK_BRIDGE pixels, solid = opaque) are at least w wide. */
long mask_thin_px(const uint8_t *set, const uint8_t *solid, int rows, int cols, int w);

/* The uniform optics of a solid material plate of thickness thick_mm for
 * light of wavelength_mm: phase 2 pi (index - 1) thick / lambda relative to
 * air (rad, not wrapped), amplitude exp(-2 pi kappa thick / lambda), and the
 * power transmission amplitude^2 (1 - R)^2 including the Fresnel reflection R
 * = ((n - 1) / (n + 1))^2 at both faces. */
typedef struct mask_slab {
    double thick_mm, phase_rad, amplitude, power;
} mask_slab;
void mask_slab_optics(double thick_mm, double index, double kappa, double wavelength_mm,
                      mask_slab *s);

/* The square of the plane the preview shows: the bounding box of every
 * pixel open in the binarised aperture or not plain plate in the mask (so
 * every bridge and island), widened by a margin of max(3, n / 32) pixels,
 * within the plane. Rows r0 .. r0 + side - 1, columns c0 .. c0 + side - 1. */
void mask_preview_crop(const mask_map *m, int *r0, int *c0, int *side);

/* Writes the preview PNG: three panels side by side showing the square of
 * mask_preview_crop, each plane pixel drawn as a square of scale =
 * ceil(256 / side) pixels, panels 8 pixels apart on grey: the original
 * resampled digit (grey, amplitude / max), the binarised aperture (white
 * open, black opaque) and the printable mask coloured by class
 * (mask_class_rgb). Atomic. */
int mask_write_preview(const char *path, const mask_map *m, d2_err *e);

/* ------------------------------------------------------------ whole runs */

/* One test image to turn into a mask. */
typedef struct mask_source {
    char name[64];        /* file stem: mask_mnist00042, mask_<image stem> */
    char origin[1024];    /* "mnist test image 42" or the PNG path */
    int index;            /* data-set test index, -1 for a file */
    int label;            /* true class, -1 when unknown */
    int rows, cols;
    float *img;           /* rows*cols grey 0..1, owned */
} mask_source;

/* Reads a PNG as a mask source. Supported: grey and RGB PNGs of any bit depth
 * (RGB becomes luminance, as img_read_gray). Refused with D2_EINPUT: images
 * with an alpha channel or transparency (transparency has no meaning for an
 * aperture: flatten onto black first) and palette (indexed-colour) images
 * (save as grey or RGB); label may be -1. src->img malloc'ed. */
int mask_source_png(const char *path, int label, mask_source *src, d2_err *e);
void mask_source_free(mask_source *src);

/* Sources from a data set's test images (dsname "mnist" or "fashion", for the
 * names): with digit < 0 the images first .. first + count - 1, else the
 * first count images of class digit at or after index first. *out is a
 * malloc'ed array of *n sources (free each with mask_source_free, then the
 * array). Fails with D2_EINPUT when the set has too few such images. */
int mask_sources_dataset(const d2_dataset *ds, const char *dsname, int first, int count, int digit,
                         mask_source **out, int *n, d2_err *e);

/* ------------------------------------------------------------ whole runs */

enum { MASK_STENCIL = 0, MASK_CARRIER_RECESS = 1, MASK_CARRIER_RELIEF = 2 };

/* Plate thicknesses used when mask_opts leaves them 0 (mm). */
#define MASK_STENCIL_THICK_MM 3.0 /* the frame thickness of the layer plates */
#define MASK_CARRIER_THICK_MM 1.0
#define MASK_CARRIER_DEPTH_MM 0.5

typedef struct mask_opts {
    double threshold;          /* (0, 1): fraction of the brightest plane pixel */
    int mode;                  /* MASK_STENCIL or MASK_CARRIER_* */
    double thick_mm;           /* plate thickness in the active area (the
                                  opaque part of a stencil, the carrier
                                  outside the digit); 0: the defaults above.
                                  Rounded to the printer's Z step. */
    double depth_mm;           /* carrier: recess depth or relief height; 0:
                                  the default. Rounded to the Z step. */
    double wavelength_mm;      /* source wavelength (> 0) */
    double index, kappa;       /* material at that wavelength */
    const char *material_name; /* for the reports */
    const char *printer_name;
    mesh_printer printer;      /* min feature, Z step, build volume */
    int write_mesh;            /* 0: previews and reports only */
    mesh_format format;
    const char *model_path;    /* for the reports */
} mask_opts;

/* Fills o with the defaults (threshold MASK_DEFAULT_THRESHOLD, stencil, STL,
 * meshes on); the caller sets the wavelength, material and printer. */
void mask_opts_default(mask_opts *o);

/* What the plate is made of (mask/profiles.c): printer and material names
 * (NULL: the export's when the model is an export folder, else
 * objet-connex500 and verobp), the extra profile folder, the source
 * frequency (0: the model's design frequency). */
typedef struct mask_profile_req {
    const char *printer, *material, *profiles_dir;
    double frequency_thz;
} mask_profile_req;

/* The profiles found, kept while o points into them. */
typedef struct mask_profiles {
    export_folder x;           /* the model folder's export.json, when it has one */
    printer_profile printer;   /* when a printer profile was looked up */
    material_profile material; /* when a material profile was looked up */
    int have_printer, have_material;
    double frequency_thz;      /* the frequency used */
    int clamped;               /* 1: outside the material's measured range (its end
                                  value is used) */
} mask_profiles;

/* Fills o->printer, printer_name, wavelength_mm, index, kappa and
 * material_name for a plate of model m (loaded from model_dir) as q asks,
 * the material read at the frequency (the export's own index and kappa when
 * the export's material at its frequency is what is asked). The names in o
 * point into *pf: release with mask_profiles_free after the last use of o. */
int mask_profiles_load(const char *model_dir, const d2_model *m, const mask_profile_req *q,
                       mask_profiles *pf, mask_opts *o, d2_err *e);
void mask_profiles_free(mask_profiles *pf);

/* What one mask became. */
typedef struct mask_result {
    mask_stats st;
    int pred[3];                      /* argmax: original, binarised, mask */
    float det[3][D2_MAX_DET];         /* detector energies (fraction of the
                                         input energy) of each input */
    size_t facets, bytes;             /* mesh file (0 without meshes) */
    double volume_mm3;
    char mesh_file[96], png_file[96]; /* names inside the output folder */
    char frame_label[16];             /* engraved on the frame ("" when none fits) */
} mask_result;

#define MASK_MAX_WARN 8

/* What a run made. */
typedef struct mask_run_report {
    int count;                 /* masks */
    int labelled;              /* of which the true class is known */
    int correct[3];            /* correctly read: original, binarised, mask */
    int islands, bridges;      /* totals */
    long blocked_px;           /* total */
    int min_px;                /* the printer's min feature in pixels */
    double thick_mm, depth_mm; /* what was used (Z-step rounded) */
    double frame_thick_mm;
    mask_slab opaque;          /* stencil: what the opaque plate leaks;
                                  carrier: the plate outside the digit */
    mask_slab digit;           /* carrier: the plate under the digit */
    double thick_1pct_mm;      /* stencil: the thickness passing 1 % power */
    size_t bytes;              /* all files written */
    int nwarn;
    char warn[MASK_MAX_WARN][256];
} mask_run_report;

/* Makes a mask of every source with model m (its input plane and forward
 * model) and writes into out_dir (created): per source NAME.png (preview),
 * NAME.EXT (the plate mesh: with the frame, posts and pins of the layer
 * plates, so it stacks in front of layer 1 at gap 0; checked to be one closed
 * solid), then masks.jsonl (one JSON object per mask: islands, bridges,
 * blocked area, predictions and detector energies of the original image, the
 * binarised aperture and the printable mask) and summary.json (accuracy of
 * each, plate optics, warnings). Every source is checked, processed and read
 * by the network, and the first mesh built, before the first file is
 * written; on a later failure the files of this run are removed. res (count
 * entries, caller-allocated) and rep receive the results. File sources are
 * held to MASK_MAX_IMAGE_PX_PER_PITCH; data-set images are resampled as in
 * training. */
int mask_run(const d2_model *m, const mask_source *src, int count, const mask_opts *o,
             const char *out_dir, mask_result *res, mask_run_report *rep, d2_err *e);

/* The printable stencil of a data-set image as `d2fab mask` makes it
 * (binarised at threshold, openings narrower than min_feature_mm closed,
 * islands bridged): open receives g->n * g->n bytes, 1 open, 0 plate. The
 * signature is tolerance's tol_stencil_fn, so a tolerance study can read
 * every test digit through its stencil; ctx is unused. Returns 0 or a D2_E*
 * code. */
int mask_stencil_u8(void *ctx, const d2_geom *g, const unsigned char *img, int rows, int cols,
                    double threshold, double min_feature_mm, unsigned char *open);

#endif
