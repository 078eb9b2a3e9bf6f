/* d2fab export: trained phase maps -> height maps a given printer can make in a
 * given material, for a given source frequency.
 *
 * Physics (shared/PHYSICS.md):
 *   h = base + w * P / (2 pi),  P = lambda / (n - 1)   (P: material for 2 pi)
 *   w = (phi + c) mod 2 pi,      c: the layer's phase offset (see below)
 *   amplitude t = exp(-2 pi kappa h / lambda), h the whole local thickness
 *   Fresnel power reflection per surface R = ((n - 1) / (n + 1))^2
 * Heights are then rounded to whole multiples of the printer's Z step
 * (measured from 0, so the printer can make them), or the phase is first
 * quantised to K levels per 2 pi (--levels K) and the level heights rounded
 * to the Z step. The phase error this causes is reported.
 *
 * Phase offset (a constant phase on a whole layer changes nothing optically):
 * with offset "auto" each layer's c in [0, 2 pi) minimises
 *   E(c) = mean(w) / (2 pi) + jump_weight * jumps(c) / pairs
 * where jumps counts the 4-neighbour pixel pairs split by the wrap (their
 * printed heights differ by more than P / 2) and pairs is the number of such
 * neighbour pairs. The first term is the relief volume in units of a full 2 pi
 * plate (so the absorption), the second the fraction of neighbour pairs with a
 * cliff. E is piecewise linear in c with positive slope between breakpoints,
 * so its minimum lies just after a breakpoint: exp_offset_choose evaluates it
 * exactly at every breakpoint (a sorted sweep), not on a grid. With --levels K
 * the offset is a whole number of levels, chosen the same way over the K
 * choices.
 *
 * Units: mm, THz, rad. Library code: never prints, never exits; functions
 * return 0 or a negative D2_E* code with the message in e. */
#ifndef D2_EXPORT_H
#define D2_EXPORT_H

#include <stddef.h>
#include <cjson/cJSON.h>

#include "core/err.h"
#include "optics/optics.h"

/* ---------------------------------------------------------------------------
 * Printer and material profiles (export/profile.c)
 * ------------------------------------------------------------------------- */

#define PROFILE_NAME_MAX 64
#define PROFILE_PATH_MAX 1024
#define PROFILE_MAX_DIRS 4
#define MATERIAL_MAX_POINTS 64

/* Technologies a printer profile may name. */
extern const char *const printer_technologies[]; /* NULL-terminated */

typedef struct printer_profile {
    char name[PROFILE_NAME_MAX];   /* file stem, e.g. "objet-connex500" */
    char display_name[128];
    char technology[16];           /* one of printer_technologies */
    double xy_resolution_mm;       /* smallest lateral step or spot */
    double z_step_mm;              /* layer thickness used for quantisation */
    double build_mm[3];            /* build volume X, Y, Z */
    double min_feature_mm;         /* smallest reliable feature */
    double pin_clearance_mm;       /* recommended pin-in-hole clearance */
    double z_speed_mm_per_h;       /* vertical build rate; 0 when not given */
    double layer_time_s;           /* time per layer (exposure, peel, recoat); 0 when
                                      not given */
    char path[PROFILE_PATH_MAX];   /* file it was read from */
    cJSON *json;                   /* the whole profile as read; owned */
} printer_profile;

typedef struct material_point {
    double frequency_thz, index, kappa;
} material_point;

typedef struct material_profile {
    char name[PROFILE_NAME_MAX];
    char display_name[128];
    int npoints;                   /* 1..MATERIAL_MAX_POINTS, sorted by frequency */
    material_point pt[MATERIAL_MAX_POINTS];
    double density_g_cm3;          /* 0 when not given */
    char path[PROFILE_PATH_MAX];
    cJSON *json;                   /* owned */
} material_profile;

/* Validates a printer profile object, the one check every stage uses (a
 * printers/NAME.json, or the "printer" section of export.json that mesh, mask
 * and tolerance read back): every key known, numbers in range (xy
 * 0.001-10 mm, z step 0.001-2 mm, build volume 1-10000 mm, min feature
 * 0.001-10 mm, clearance 0-5 mm, z speed 0.01-10000 mm/h). file and key name
 * the source in messages (key "" at the top level). p->json and p->path are
 * left empty; nothing to free. */
int printer_from_json(const cJSON *obj, const char *file, const char *key, printer_profile *p,
                      d2_err *e);
/* Reads a printer profile file: printer_from_json, and "name" equal to the
 * file stem. On failure *p holds nothing to free. Free with printer_free. */
int printer_load(const char *path, printer_profile *p, d2_err *e);
/* Releases p->json; printer_free(NULL) is a no-op. */
void printer_free(printer_profile *p);

/* Reads and validates a material profile: points with frequency 0.001-100 THz
 * strictly increasing, index in (1, 10], kappa in [0, 10]. */
int material_load(const char *path, material_profile *m, d2_err *e);
void material_free(material_profile *m);

/* Index and kappa at frequency f_thz, linear in frequency between the points,
 * clamped to the end points outside them. Returns 1 when clamped (f outside
 * the measured range by more than 0.1 %), else 0. */
int material_at(const material_profile *m, double f_thz, double *index, double *kappa);

/* The layer model of the print time: a part height_mm tall takes
 * layers = ceil(height / z_step) layers (every layer of the whole part:
 * datum plate, relief, posts and pins), each taking the profile's
 * layer_time_s, or else z_step / z_speed_mm_per_h (the vendor's vertical
 * rate, optimistic: it leaves out peel and settling). *layers (may be NULL)
 * receives the count. Returns hours, or -1 when the profile gives neither
 * rate. *how (may be NULL) names the rate used, e.g. "layer model: 630
 * layers x 8 s (printer profile layer_time_s)". */
double printer_print_time_h(const printer_profile *p, double height_mm, long *layers,
                            char *how, size_t how_size);

/* The frame band, posts, pins and labels of every printed part, derived from
 * the printer (the mesh stage builds them; the export stage needs the band's
 * width for the build-volume check). */
typedef struct printer_frame {
    double width_mm;      /* frame band around the active area */
    double thick_mm;      /* frame thickness (datum to the frame's top face) */
    double post_mm;       /* side of the square posts */
    double pin_mm;        /* side of the square pins on the post tops */
    double pin_len_mm;    /* pin length above the shoulder */
    double key_mm;        /* offset of the top-left pin toward +x */
    double clearance_mm;  /* hole clearance per side */
    double engrave_mm;    /* label depth */
    double font_px_mm;    /* label pixel (stroke) size; rounded up to whole
                             pitches so strokes fall on pixel lines */
    double min_feature_mm;/* printer's smallest feature (checks) */
} printer_frame;

/* The sizes for a printer of minimum feature mf and pin clearance c (mm):
 * font pixel max(0.5, 2 mf), pin max(2, 4 mf), pin length max(1.5, 3 mf),
 * key max(1, 2 c), engrave max(0.4, mf), post max(5, pin + 2 key + 2 mf),
 * thickness 3, and a band width of max(10, printer_frame_min_width_mm(f, 1,
 * 1)), both rounded up to 0.5 mm. Every shipped resin and PolyJet printer
 * (mf <= 0.3) gets 10 / 5 / 2 / 1 / 0.4 mm; the Prusa MK4 (mf 0.45) a
 * 14.5 mm band, so posts, holes and labels fit every shipped printer without
 * options. */
void printer_frame_default(printer_frame *f, double mf, double c);
/* The band a 7-pixel label needs at any pitch (a pitch-aligned font pixel is
 * at most twice font_px_mm) with its margins, mm. */
double printer_frame_label_band_mm(const printer_frame *f);
/* The narrowest band width that holds f's posts (with walls), its pin holes
 * (holes != 0) and its labels (labels != 0), mm. */
double printer_frame_min_width_mm(const printer_frame *f, int holes, int labels);

/* ---------------------------------------------------------------------------
 * The print time from a real slicer (export/slicer.c)
 * ------------------------------------------------------------------------- */

enum { SLICER_NONE = 0, SLICER_SLA = 1, SLICER_FDM = 2 };

/* How PrusaSlicer can slice for p: SLICER_SLA (technology sla, msla, dlp),
 * SLICER_FDM (fdm), or SLICER_NONE (polyjet and others). */
int slicer_kind(const printer_profile *p);
/* The slicer program: $D2FAB_SLICER when set, else "prusa-slicer". */
const char *slicer_program(void);
/* 0 when PrusaSlicer can slice for p and slicer_program() is installed (a
 * name on $PATH, or a path that is executable); else D2_EINPUT with the
 * message slicer_print_time would give. */
int slicer_check(const printer_profile *p, d2_err *e);

typedef struct slicer_estimate {
    double time_h;            /* the slicer's estimated print time of the part alone */
    double material;          /* resin (ml, SLA) or filament (cm3, FDM) it uses */
    char material_unit[8];    /* "ml" or "cm3" */
    long layers;              /* layers it sliced */
    double exposure_s, first_exposure_s; /* SLA exposure it assumed; 0 for FDM */
    char slicer[96];          /* the slicer's own name and version */
    char mode[8];             /* "sla" or "gcode" */
    char how[400];            /* the settings, in words, for reports */
} slicer_estimate;

/* Asks PrusaSlicer (slicer_program()) for the print time of the part file
 * (STL, 3MF or OBJ, mm) on printer p: for resin printers `--export-sla` with
 * the profile's build area as the display (pixels of xy_resolution_mm), its
 * Z step as every layer's height (the first too), no supports or pad, and
 * reads printTime and usedMaterial from the archive's config.ini; for FDM
 * `--export-gcode` with the bed, Z step, nozzle = xy_resolution_mm and 100 %
 * rectilinear infill, and reads "; estimated printing time (normal mode)"
 * and "; filament used [cm3]". Exposure, tilt and speeds are the slicer's
 * defaults (r->how says which). The slicer's files go into a fresh folder
 * inside work_dir (NULL: "."), removed afterwards. About 5-25 s of CPU a part (a
 * 200 x 200 plate: about 21 s).
 * Fails with D2_EINPUT for a printer it cannot slice for (PolyJet), a part
 * format it cannot read, or a slicer not found (naming D2FAB_SLICER and the
 * Debian package); with D2_EIO when the slicer fails (the last line of its
 * log in the message) or runs longer than 30 minutes. */
int slicer_print_time(const printer_profile *p, const char *part, const char *work_dir,
                      slicer_estimate *r, d2_err *e);

/* The folders searched for NAME.json (printers) and materials/NAME.json, in
 * order: user_dir (--profiles, may be NULL), $D2FAB_PROFILES, $D2FAB_PRINTERS
 * or else ./printers, and the printers folder beside the running executable.
 * The first folder holding a name wins. */
typedef struct profile_path {
    int n;
    char dir[PROFILE_MAX_DIRS][PROFILE_PATH_MAX];
} profile_path;
void profile_path_init(profile_path *pp, const char *user_dir);

/* Finds and loads a printer by name ([A-Za-z0-9._-], no leading dot), or by
 * file path when name contains '/' or ends in ".json". An unknown name fails
 * with D2_EINPUT and a message listing the known names and the folders
 * searched. */
int printer_find(const profile_path *pp, const char *name, printer_profile *p, d2_err *e);
int material_find(const profile_path *pp, const char *name, material_profile *m, d2_err *e);

/* Sorted, de-duplicated names of the printer (materials == 0) or material
 * profiles found on the path. *names and each string malloc'ed: free with
 * profile_names_free. */
int profile_names(const profile_path *pp, int materials, char ***names, int *count, d2_err *e);
void profile_names_free(char **names, int count);

/* ---------------------------------------------------------------------------
 * Phase -> height (export/height.c)
 * ------------------------------------------------------------------------- */

#define EXP_MAX_LEVELS 4096

typedef struct exp_params {
    double wavelength_mm; /* > 0 */
    double index;         /* > 1 (relative to air) */
    double kappa;         /* >= 0 */
    double base_mm;       /* >= 0: solid plate under every pixel */
    double z_step_mm;     /* > 0: heights rounded to multiples; 0: continuous */
    int levels;           /* 2..EXP_MAX_LEVELS: K phase levels per 2 pi; 0: off */
    int offset_auto;      /* 1: choose each layer's offset (see top of file) */
    double offset_rad;    /* the offset used when offset_auto == 0 */
    double jump_weight;   /* >= 0: weight of wrap jumps in the offset objective */
} exp_params;

typedef struct exp_layer_stats {
    double min_mm, max_mm, mean_mm; /* heights including the base */
    double volume_mm3;              /* sum h * pitch^2 over the n x n pixels */
    double offset_rad;              /* the offset used, in [0, 2 pi) */
    double phase_rms_error_rad;     /* RMS of printed minus wanted phase */
    double phase_max_error_rad;     /* largest |printed - wanted| */
    double amp_mean, amp_min, amp_max; /* exp(-2 pi kappa h / lambda) */
    double power_mean;              /* mean of amplitude^2 */
    long wrap_jumps;                /* neighbour pairs differing by > P / 2 */
    long wrap_jumps_plain;          /* the same with offset 0 */
    double volume_plain_mm3;        /* volume with offset 0 */
    long pairs;                     /* 4-neighbour pairs: 2 n (n - 1) */
} exp_layer_stats;

/* Checks p: finite values in range; the message names the parameter. */
int exp_params_check(const exp_params *p, d2_err *e);

/* The offset objective E(c) of the top of this file for a rows x cols phase
 * map (radians, any range), unquantised. For tests and reports. */
double exp_offset_objective(const float *phase, int rows, int cols, double c,
                            double jump_weight);

/* Chooses the offset c in [0, 2 pi) minimising E(c) exactly (sweep over all
 * breakpoints). With levels K >= 2 the phase is first rounded to K levels and
 * c is a whole number of levels. Returns 0 or D2_EIO (memory). */
int exp_offset_choose(const float *phase, int rows, int cols, int levels, double jump_weight,
                      double *c, d2_err *e);

/* Heights (mm, float, n*n row-major, written to h) for one n x n phase layer
 * of pitch pitch_mm, with its statistics. The caller owns h. Fails with
 * D2_EINPUT on bad parameters or a non-finite phase (message gives the pixel). */
int exp_layer_heights(const exp_params *p, const float *phase, int n, double pitch_mm, float *h,
                      exp_layer_stats *st, d2_err *e);

/* Counts 4-neighbour pairs of a height map whose heights differ by more than
 * period_mm / 2 (the cliffs a phase wrap makes). */
long exp_count_jumps(const float *h, int rows, int cols, double period_mm);

/* The 16-bit PNG scale (mm per count): 1 um, or a divisor of the Z step near
 * 1 um so that printable heights are stored exactly, coarser only when
 * max_mm would not fit in 65535 counts. */
double exp_png_scale(double max_mm, double z_step_mm);

/* ---------------------------------------------------------------------------
 * Inputs (export/input.c)
 * ------------------------------------------------------------------------- */

/* Reads a phase map: a 2-D .npy (radians; float32, or float16/float64
 * converted to float32, *converted then names the file's dtype, else NULL;
 * converted may be NULL), or a grey PNG whose values 0..1 map linearly to
 * lo_rad..hi_rad (have_range must be set for a PNG). The map must be square
 * with finite values. *out malloc'ed (n*n floats). */
int exp_read_phase(const char *path, int have_range, double lo_rad, double hi_rad, float **out,
                   int *n, const char **converted, d2_err *e);

typedef struct exp_phase_input {
    const char *const *files;  /* one phase map per layer, in order */
    int nfiles;                /* 1..D2_MAX_LAYERS */
    double pitch_mm;           /* > 0 */
    double wavelength_mm;      /* > 0: the design wavelength */
    const double *gaps_mm;     /* NULL/0: 30 mm each; 1 value: every gap;
                                  nfiles + 1 values: input->layer1 .. last->detector */
    int ngaps;
    int png_range;             /* PNG maps: phase = lo + v (hi - lo) */
    double png_lo_rad, png_hi_rad;
    char *note;                /* NULL, or receives a note for the user (a map that was
                                  converted to float32), "" when there is none */
    size_t note_cap;
} exp_phase_input;

/* Builds a model from bare phase maps trained elsewhere: the default
 * geometry (geom_default) with n, layers, pitch, wavelength and gaps from the
 * input, the aperture and detector layout scaled to the plane's side. Every
 * map must have the same n. Release with model_free. */
int exp_model_from_phases(const exp_phase_input *in, d2_model *m, d2_err *e);

/* ---------------------------------------------------------------------------
 * The whole stack (export/export.c)
 * ------------------------------------------------------------------------- */

enum { EXP_OFFSET_DEFAULT = 0, EXP_OFFSET_AUTO = 1, EXP_OFFSET_FIXED = 2 };

typedef struct export_opts {
    const char *printer;       /* name or .json path; required */
    const char *material;      /* name or .json path; required */
    const char *profiles_dir;  /* extra profile folder (--profiles), or NULL */
    double frequency_thz;      /* 0: from the model */
    double wavelength_mm;      /* 0: from the model (give at most one of the two) */
    double index, kappa;       /* NAN: from the material at the frequency */
    double base_mm;            /* NAN: the model's when trained coupled, else 1 mm */
    int levels;                /* -1: the model's training levels; 0: Z step; K >= 2 */
    int offset_mode;           /* EXP_OFFSET_*: DEFAULT is auto, or 0 for a model
                                  trained coupled to the material */
    double offset_rad;         /* with EXP_OFFSET_FIXED */
    double jump_weight;        /* offset objective weight (1 is the default) */
    int force;                 /* pitch or build volume out of the printer's
                                  range: warning instead of error */
} export_opts;

/* Fills o with the defaults above (printer and material NULL). */
void export_opts_default(export_opts *o);

/* What the stack is made from. */
typedef struct export_source {
    const d2_model *model;        /* geometry and phases */
    const cJSON *model_sections;  /* the model.json holding "geometry", "input",
                                     "detector", "material" copied verbatim into
                                     export.json; NULL: rebuilt from model */
    const char *kind;             /* "model" or "phase" */
    const char *path;             /* the model folder or the first phase file */
} export_source;

#define EXP_MAX_WARN 16

typedef struct export_report {
    printer_profile printer;
    material_profile material;
    exp_params p;                 /* what was used (base rounded to the Z step) */
    double frequency_thz;
    int n, layers;
    double pitch_mm, period_mm;
    printer_frame frame;          /* the printer's frame (printer_frame_default): what
                                     `d2fab mesh` builds without options */
    double plate_side_mm;         /* n * pitch + 2 * frame.width_mm */
    exp_layer_stats layer[D2_MAX_LAYERS];
    double power_transmission;    /* prod_k mean(a_k^2) * (1 - R)^2 */
    double fresnel_r;             /* R per surface */
    double volume_mm3;            /* all layers */
    double print_time_h;          /* tallest part (printer_print_time_h);
                                     < 0 when unknown */
    double print_height_mm;       /* that part's height: the largest gap after a
                                     layer + the frame's pin length, or the relief */
    long print_layers;            /* its layers */
    char print_time_how[160];     /* printer_print_time_h's method */
    int nwarn;
    char warn[EXP_MAX_WARN][512]; /* warnings for the user, also in export.json */
} export_report;

/* Checks everything (profiles, wavelength, index, pitch against the printer,
 * the tallest part - plate outline n * pitch + 2 x the printer's frame band,
 * height the largest gap + pin - against the build volume), computes every layer in memory and only
 * then writes into out_dir (created): per layer K layerK_height.npy (float32
 * mm), layerK_height.png (16-bit, h = value * png_scale_mm) and
 * layerK_preview.png (viridis, base..base + P), and export.json last. An old
 * export.json is removed before the first file is replaced, and on a write
 * error the files of this run are removed, so out_dir never holds an
 * export.json that does not match its files. *r is filled on success and on
 * failure; release with export_report_free. */
int export_stack(const export_source *src, const export_opts *o, const char *out_dir,
                 export_report *r, d2_err *e);
void export_report_free(export_report *r);

/* ---------------------------------------------------------------------------
 * Reading an export folder back (export/folder.c): the one reader of
 * export.json and its layer heights, for every stage that takes an export.
 * ------------------------------------------------------------------------- */

typedef struct export_folder {
    char json_path[PROFILE_PATH_MAX]; /* DIR/export.json, for messages */
    cJSON *root;                  /* export.json as read; owned */
    int n, layers;
    double pitch_mm;
    double wavelength_mm;         /* 0 when export.json gives none */
    double frequency_thz;         /* 0 when export.json gives none */
    double base_mm, z_step_mm;    /* 0 when not given */
    d2_geom g;                    /* the "model" section (config_read) */
    d2_train_opts t;
    int have_material;            /* "material": name (may be ""), index, kappa */
    char material[PROFILE_NAME_MAX];
    double index, kappa;
    int have_printer;             /* "printer", validated by printer_from_json */
    printer_profile printer;      /* its json and path are empty */
    const cJSON *printer_json;    /* the section itself, inside root */
    float *height_mm[D2_MAX_LAYERS]; /* n*n heights per layer (mm, whole
                                        thickness incl. base); owned */
} export_folder;

/* Reads DIR/export.json and its layer_files[k].heights_npy (names checked to
 * stay in DIR, n x n, every height >= 0): format "d2fab-export" version 1;
 * pitch_mm, neurons, layers and a "model" section that agrees with them are
 * required; wavelength_mm, frequency_thz, base_mm, z_step_mm, "material" (index
 * in (1, 10], kappa in [0, 10]) and "printer" are optional, checked when
 * present. A stage that needs an optional part checks have_* itself. On
 * failure *x holds nothing to free; else release with export_folder_free
 * (a stage may take a height_mm[k] and set it to NULL). */
int export_folder_load(const char *dir, export_folder *x, d2_err *e);
/* Frees what x owns; export_folder_free(NULL) is a no-op. */
void export_folder_free(export_folder *x);

/* Loads an export folder back as a model (export_folder_load; wavelength_mm
 * and "material" required): the "model" section's geometry, the export's
 * wavelength, and per layer phase = 2 pi (n - 1) h / lambda mod 2 pi and
 * amplitude exp(-2 pi kappa h / lambda) from the heights. The material
 * coupling is switched off (the amplitudes are explicit); the uniform Fresnel
 * loss is not included. m->height keeps the heights, for the thick-plate
 * model (model_make_thick). Release with model_free. */
int export_load_as_model(const char *dir, d2_model *m, d2_err *e);

/* Loads DIR as a model: an export folder (DIR/export.json exists) with
 * export_load_as_model, else a model folder with model_load. *is_export (may
 * be NULL) says which. Release with model_free. */
int export_model_load(const char *dir, d2_model *m, int *is_export, d2_err *e);

#endif
