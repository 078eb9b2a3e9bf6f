/* d2fab mesh: watertight printable plates (pillars, frame, alignment posts,
 * pins and holes, engraved labels), mesh files and mesh checks.
 *
 * Geometry is built on an integer grid: x and y in units of MESH_Q_MM
 * (0.1 um), z in units of MESH_QZ_MM (0.05 um; input heights are rounded to
 * 0.1 um so every band has an integer midpoint). Vertices are deduplicated by
 * exact integer position, so vertices shared by facets are bit-identical; the
 * coordinates become float millimetres only when a file is written. Every
 * solid the builder makes is a closed 2-manifold: each edge is used by exactly
 * two facets in opposite directions, facets wind counter-clockwise seen from
 * outside, no vertex lies on another facet's edge (walls are split at every
 * neighbour height), all coordinates are >= 0.
 *
 * Stack convention (also written to assembly.json):
 *   - z is the optical axis; light travels toward +z, from the source through
 *     the input aperture, the layers 1..L, to the detector plane.
 *   - Every part is a plate lying in its own xy plane. Its flat face z = 0 is
 *     its DATUM and faces the SOURCE; the pillars, the posts and the engraved
 *     part label ("L3", "IN", "DET") are on the +z side, facing the DETECTOR.
 *     The datum face is engraved "SRC" (mirrored, so it reads from below).
 *   - The gap k of model.json (input -> layer 1, ..., layer L -> detector) is
 *     the distance between the datum faces of consecutive parts, and the
 *     optical surface of every part is its datum face.
 *   - Four square posts stand on the frame corners of every part that has a
 *     successor; their tops (the shoulders) are at z = gap, where the next
 *     part's datum face rests. A square pin on each post top enters a blind
 *     hole in the next part's datum face (hole side = pin + 2 * clearance, so
 *     the lateral play is +- clearance). The pin of the top-left post (seen
 *     from the detector side, x right, y up) is offset by key_mm toward +x,
 *     so a plate cannot be mounted rotated or mirrored.
 *   - Pixel (row i, column j) of a layer covers x in [W + j p, W + (j+1) p],
 *     y in [W + i p, W + (i+1) p] (W the frame width, p the pitch), so the
 *     optical axis passes through the plate centre (S/2, S/2), S = n p + 2 W,
 *     and row i is y as in the .npy maps.
 *
 * Library code never prints; every fallible function returns 0 or a negative
 * D2_E* code with a message in e. */
#ifndef D2_MESH_H
#define D2_MESH_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#include "core/err.h"
#include "export/export.h"

#define MESH_Q_MM 1e-4   /* x, y grid unit (mm) */
#define MESH_QZ_MM 5e-5  /* z grid unit (mm) */

/* ---------------------------------------------------------------- meshes */

/* An indexed triangle mesh on the integer grid. */
typedef struct mesh mesh;

/* An empty mesh, or NULL (e filled) when out of memory. Free with mesh_free. */
mesh *mesh_new(d2_err *e);
/* mesh_free(NULL) is a no-op. */
void mesh_free(mesh *m);

size_t mesh_facets(const mesh *m);
size_t mesh_vertices(const mesh *m);
/* Integer coordinates of vertex i (x, y in MESH_Q_MM, z in MESH_QZ_MM). */
void mesh_vertex(const mesh *m, size_t i, int32_t xyz[3]);
/* Vertex indices of facet i, counter-clockwise seen from outside. */
void mesh_facet(const mesh *m, size_t i, uint32_t idx[3]);
/* Enclosed volume (mm^3) by the divergence theorem, exact before the final
 * conversion to double; negative for an inside-out mesh. */
double mesh_volume_mm3(const mesh *m);
/* Bounding box in mm; all zero for an empty mesh. */
void mesh_bbox_mm(const mesh *m, double lo[3], double hi[3]);

/* ------------------------------------------------ two-sided height fields */

/* A solid described on a rectilinear grid: cell (r, c) covers
 * x in [xs[c], xs[c+1]], y in [ys[r], ys[r+1]] (MESH_Q_MM units, strictly
 * increasing, every cell at least 4 units wide) and holds material for
 * z in [bot, top] (MESH_QZ_MM units, row-major r * nx + c). A cell with
 * top <= bot is empty: a through-hole, or outside the part.
 *
 * Rules (violations are D2_EINPUT errors naming the cell and the height):
 *   - two cells sharing a side must not touch only along a horizontal edge
 *     (one's top equal to the other's bottom);
 *   - cells must not touch only at a single point;
 *   - every coordinate within +-1e9 units; heights meeting at a corner gap
 *     that needs a midpoint (below) at least 2 units apart (use even z).
 * Two cells that touch only along a vertical edge (diagonal neighbours
 * whose side neighbours are empty at those heights, as in a checkerboard of
 * pillars) are separated by a 0.1 um wedge-shaped gap at that edge, so the
 * solid stays a 2-manifold: for connectivity, material is joined only through
 * cell sides (4-connectivity), never through corners. The gap is a copy of
 * the corner vertex moved 0.1 um into one of the two cells, at the end of
 * the band where that cell ends (or at the band's middle when neither ends
 * there). Each gap makes the volume smaller than the cells' by about
 * 0.1 um x band height x cell side / 3: 1e-5 relative or less for plates. */
typedef struct mesh_grid {
    int nx, ny;              /* cells along x and y */
    const int32_t *xs, *ys;  /* nx + 1 and ny + 1 grid lines */
    const int32_t *bot, *top;/* nx * ny intervals */
} mesh_grid;

/* Appends the closed surface of the grid solid to m (top and bottom faces of
 * equal height merged into rectangles without T-junctions). */
int mesh_add_grid(mesh *m, const mesh_grid *g, d2_err *e);

/* ----------------------------------------------------------------- plates */

/* The printer facts the builder needs (a printer profile's keys). */
typedef struct mesh_printer {
    char name[64];
    double build_mm[3];        /* build volume x, y, z */
    double xy_resolution_mm;
    double z_step_mm;
    double min_feature_mm;     /* thinnest printable wall or stroke */
    double pin_clearance_mm;   /* clearance per side for a printed pin in a hole */
} mesh_printer;

/* The builder's facts of a validated printer profile (export.h). */
void mesh_printer_from_profile(const printer_profile *p, mesh_printer *pr);
/* Reads a printer profile object (printers/NAME.json, or export.json's
 * "printer" section) with the export stage's one validation,
 * printer_from_json; file and key path name the source in messages. */
int mesh_printer_from_json(const cJSON *obj, const char *file, const char *path, mesh_printer *pr,
                           d2_err *e);

/* The frame and alignment features, identical on every part of a stack: the
 * export stage's printer_frame (export.h), whose width it needs for the
 * build-volume check. */
typedef printer_frame mesh_frame;

/* printer_frame_default for printer pr (NULL: generic resin, minimum
 * feature and clearance 0.1 mm): every shipped resin and PolyJet printer
 * gets a 10 mm band, 5 mm posts, 2 mm pins; the Prusa MK4 a 14.5 mm band. */
void mesh_frame_default(mesh_frame *f, const mesh_printer *pr);

/* The frame `d2fab mesh` uses for a stack: mesh_frame_default(pr), the
 * thickness raised to base_mm, then every field > 0 of o (may be NULL; a
 * zeroed struct changes nothing). Parts built with the same printer,
 * overrides and base stack together (same outline, posts, pins, holes). */
void mesh_frame_for_stack(mesh_frame *f, const mesh_printer *pr, const mesh_frame *o,
                          double base_mm);

/* A rectangle painted over the active area after the cells (a detector
 * window, a mark): mm relative to the optical axis; sets the material to
 * z in [bot_mm, top_mm] (top <= bot: empty). */
typedef struct mesh_rect {
    double x0_mm, y0_mm, x1_mm, y1_mm;
    double bot_mm, top_mm;
} mesh_rect;

/* One part of the stack: an active area of rows x cols square cells of side
 * pitch_mm, centred on the optical axis, surrounded by the frame. */
typedef struct mesh_plate {
    int rows, cols;          /* active-area cells; row = y as in the .npy maps */
    double pitch_mm;         /* cell side */
    const float *top_mm;     /* rows*cols material tops above the datum (mm),
                                row-major; NULL: frame thickness everywhere */
    const float *bot_mm;     /* rows*cols material bottoms (mm); NULL: 0, the
                                flat datum. Cell empty (a through-cut) where
                                top <= bot. */
    const mesh_rect *rects;  /* painted in order after the cells; may be NULL */
    int nrects;
    double gap_mm;           /* datum-to-datum distance to the next part:
                                posts of this height carry the pins; 0: last
                                part, no posts */
    int holes;               /* nonzero: pin holes in the datum face */
    const char *label_top;   /* engraved on the frame's +z face (A-Z 0-9 - . < >) or NULL */
    const char *label_bottom;/* engraved mirrored on the datum face, or NULL */
    mesh_frame frame;
    mesh_printer printer;    /* build volume and resolution checks */
} mesh_plate;

/* What mesh_build_plate made. */
typedef struct mesh_plate_info {
    double size_mm[3];      /* outer size: S x S x height */
    double frame_top_mm;    /* frame thickness actually used */
    double post_top_mm;     /* shoulder height (= gap), 0 without posts */
    double max_top_mm;      /* highest material in the active area */
    double ideal_volume_mm3;/* volume of the designed cells and features
                               before the corner-gap separation: the mesh
                               is smaller by the gap wedges, each under
                               0.1 um x cell side x cell height (about
                               1e-6 relative for 100 mm pillars) */
    double axis_mm[2];      /* optical axis in plate coordinates */
    int grid_nx, grid_ny;   /* rectilinear grid the solid was built on */
} mesh_plate_info;

/* Builds plate p as one closed solid. *out is a new mesh (caller frees with
 * mesh_free); info (may be NULL) receives its sizes. Errors (D2_EINPUT, no
 * mesh made): negative, NaN or infinite heights; a post, pin, hole or label
 * that does not fit the frame; a gap too short for the frame or for the
 * pillars; a plate larger than the printer's build volume (both sizes are
 * given).
 *
 * Input masks (the mask stage) use it as is: rows = cols = the model's n,
 * pitch_mm = its pitch (or a finer grid of k * n cells at pitch / k),
 * top_mm = the plate thickness where opaque and 0 where the digit is cut
 * through (carrier mode: a shallow top or bottom instead of 0), gap_mm =
 * gaps_mm[0] (the mask stacks in front of layer 1), holes = 0, label_top
 * e.g. "M7-0012", label_bottom "SRC", frame = mesh_frame_for_stack() with
 * the export's printer and base so the mask fits the layer plates. Material
 * joins only through cell sides: opaque cells touching a neighbour only at a
 * corner become separate solids (a 0.1 um gap), so islands must be tied to
 * the frame through 4-connected cells; mesh_check() then reports parts == 1. */
int mesh_build_plate(const mesh_plate *p, mesh **out, mesh_plate_info *info, d2_err *e);

/* ------------------------------------------------------------------ files */

typedef enum { MESH_STL = 0, MESH_3MF, MESH_OBJ, MESH_PLY, MESH_GLB } mesh_format;

/* Parses "stl", "3mf", "obj", "ply", "glb". Returns 0 or D2_EUSAGE. */
int mesh_format_parse(const char *s, mesh_format *f, d2_err *e);
/* File extension without the dot ("stl", ...). */
const char *mesh_format_ext(mesh_format f);

/* A mesh placed in a file: translated by offset_mm. */
typedef struct mesh_part {
    const mesh *m;
    const char *name;        /* object name in formats that keep one */
    double offset_mm[3];
} mesh_part;

/* Writes the parts to path atomically, coordinates in millimetres:
 *   stl: binary STL written here (80-byte header not starting with "solid",
 *        facet count, 50-byte records; size 84 + 50 * facets), all parts in
 *        one facet list;
 *   3mf: written here (Assimp 5.2 prints 3MF coordinates with six digits):
 *        unit millimetre, zip entries deflated by zlib, exact float
 *        coordinates, one object per part;
 *   obj, ply, glb: through Assimp's exporter: OBJ without material file,
 *        binary PLY, glb in mm (1 unit = 1 mm, although glTF viewers assume
 *        metres), one mesh per part.
 * *bytes (may be NULL) receives the file size. */
int mesh_write(const char *path, mesh_format fmt, const mesh_part *parts, int nparts,
               size_t *bytes, d2_err *e);

/* What a print needs beyond the geometry. */
typedef struct mesh_print_info {
    const char *printer;     /* profile name, or NULL */
    const char *material;    /* material name, or NULL */
    double layer_height_mm;  /* the printer's z step; 0: unknown */
} mesh_print_info;

/* mesh_write, with the print settings (info may be NULL) stored in the
 * formats that keep them: a 3MF gets them as model metadata (Description,
 * d2fab:printer, d2fab:material, d2fab:layer_height_mm) and PrusaSlicer's
 * config entry (Metadata/Slic3r_PE.config: layer_height), which the slicer
 * applies when it opens the file. */
int mesh_write_info(const char *path, mesh_format fmt, const mesh_part *parts, int nparts,
                    const mesh_print_info *info, size_t *bytes, d2_err *e);

/* ----------------------------------------------------------------- checks */

typedef struct mesh_report {
    size_t facets;            /* triangles (polygons are counted as fans) */
    size_t vertices;          /* after joining identical positions */
    size_t edges;             /* undirected */
    size_t open_edges;        /* used by one facet */
    size_t nonmanifold_edges; /* used by more than two facets */
    size_t inconsistent_edges;/* used twice in the same direction */
    size_t nonmanifold_vertices; /* facets around it form several fans */
    size_t degenerate_facets; /* two corners at the same position */
    size_t parts;             /* connected components through shared edges */
    double volume_mm3;        /* signed, file units cubed */
    double area_mm2;
    double lo[3], hi[3];      /* bounding box */
    int closed;               /* 1 when every count above from open_edges to
                                 degenerate_facets is zero and facets > 0 */
} mesh_report;

/* Checks m's topology by vertex index. */
int mesh_check(const mesh *m, mesh_report *r, d2_err *e);

/* Loads any mesh file Assimp reads (only aiProcess_JoinIdenticalVertices, no
 * repair), applies the node transforms, joins vertices by exact position and
 * checks it. Fails with D2_EINPUT when the file cannot be read as a mesh. */
int mesh_check_file(const char *path, mesh_report *r, d2_err *e);

/* Checks triangles given as float positions (9 floats per facet), joining
 * vertices by exact position. */
int mesh_check_soup(const float *xyz, size_t facets, mesh_report *r, d2_err *e);

/* Loads any mesh file Assimp reads as triangles (9 floats per facet, node
 * transforms applied, no repair). *xyz is new (caller frees); D2_EINPUT when
 * the file is not a mesh or holds no triangles. */
int mesh_load_soup(const char *path, float **xyz, size_t *facets, d2_err *e);

/* ------------------------------------------- pillar tops against an export */

#define MESH_TOPS_WORST 8

/* What mesh_compare_tops found: the mesh's top surface over each neuron's
 * centre against the export's height, mesh - export. */
typedef struct mesh_tops_report {
    int layer, rows, cols;
    double tol_mm;           /* half the export's Z step */
    double max_mm, rms_mm;   /* largest and RMS |difference| */
    double max_rad, rms_rad; /* the same in phase, 2 pi (n - 1) d / wavelength;
                                the export's material and wavelength, else
                                the model's design ones; NaN when neither */
    long over;               /* pixels differing by more than tol_mm */
    int nworst;              /* the worst pixels, largest first */
    struct {
        int row, col;
        double mesh_mm, export_mm;
    } worst[MESH_TOPS_WORST];
} mesh_tops_report;

/* Re-rasterises the layer plate in file `path` (a part mesh_stack wrote: its
 * own bounding box from the origin, datum at its lowest z) and compares it
 * with layer `layer` (1-based) of the export x: at the centre of every
 * neuron (row i, column j at x = W + (j + 1/2) p, y = W + (i + 1/2) p from
 * the part's corner, W = (plate side - n p) / 2), the highest facet over it,
 * minus the part's lowest z, against x->height_mm[layer - 1]. A part whose
 * side is not n p + 2 W with W > 0, or a layer out of range, fails with
 * D2_EINPUT. Pixels with no facet above them count as height 0. */
int mesh_compare_tops(const char *path, const export_folder *x, int layer, mesh_tops_report *r,
                      d2_err *e);

/* ------------------------------------------------------ the stack command */

typedef struct mesh_stack_opts {
    mesh_format format;
    mesh_frame frame;        /* overrides: fields <= 0 take the defaults of
                                the printer in export.json; the thickness
                                defaults to max(3 mm, base_mm) */
    int no_input;            /* nonzero: no input aperture plate */
} mesh_stack_opts;

/* One written part. */
typedef struct mesh_stack_part {
    char name[32];           /* "input", "layer1", ..., "detector" */
    char file[64];           /* file name inside the output folder */
    size_t facets, bytes;
    double volume_mm3;
    double z_mm;             /* datum (optical surface) z in the stack */
    double size_mm[3];
} mesh_stack_part;

#define MESH_MAX_PARTS 24
#define MESH_MAX_WARN 4

typedef struct mesh_stack_report {
    int nparts;
    mesh_stack_part part[MESH_MAX_PARTS];
    size_t assembly_bytes, assembly_facets;
    char assembly_file[64];
    double seconds_mesh, seconds_write;
    int nwarn;               /* fabrication warnings (also in assembly.json) */
    char warn[MESH_MAX_WARN][200];
} mesh_stack_report;

/* Sets the defaults: STL, every frame field from the printer, input plate on. */
void mesh_stack_opts_default(mesh_stack_opts *o);

/* Reads an export folder (export.json + layerK_height.npy, heights in mm
 * including the base) and writes into out_dir: input.EXT (a plate with the
 * input aperture cut through), layer1.EXT .. layerL.EXT, detector.EXT (a
 * plate with the 10 detector windows cut through, each labelled with its
 * class where it fits), assembly.EXT (every part at its stack position) and
 * assembly.json (order, orientation, z of each optical surface, pitch, gaps,
 * frame and pin geometry). Every part is built and checked before the first
 * file is written, so a bad input leaves no file behind; an old assembly.json
 * is removed before the first part is replaced and written last, so a run
 * killed half-way never leaves one that describes other parts. rep (may be NULL)
 * receives facets, bytes and volume per part. */
int mesh_stack(const char *export_dir, const char *out_dir, const mesh_stack_opts *o,
               mesh_stack_report *rep, d2_err *e);

#endif
