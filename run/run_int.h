/* d2fab run: state shared by the pipeline (run.c) and the report writers
 * (report.c). Not a public header. */
#ifndef D2_RUN_INT_H
#define D2_RUN_INT_H

#include "export/export.h"
#include "mesh/mesh.h"
#include "run/run.h"
#include "train/train.h"

#define RUN_MAX_PARTS 96
#define RUN_MAX_PREVIEWS 160

/* One file to print. */
typedef struct run_part {
    char name[48];          /* "layer1", "mask_0_3", "detector" */
    char kind[16];          /* "layer", "mask", "input", "detector" */
    char file[96];          /* relative to the package folder, "parts/layer1.stl" */
    char what[160];         /* one line for the print shop */
    double volume_mm3;
    double size_mm[3];      /* outer size as printed (x, y, height) */
    double z_mm;            /* datum (optical surface) position in the stack */
    size_t facets, bytes;
    int tops_checked;       /* layer parts: pillar tops against the export */
    mesh_tops_report tops;
    int sliced;             /* "print_time": "slicer": PrusaSlicer's estimate in slice */
    slicer_estimate slice;
} run_part;

/* One picture of the package. */
typedef struct run_preview {
    char file[96];          /* relative to the package folder */
    char caption[160];
    char group[16];         /* "phase", "height", "mask", "detector", "tolerance" */
} run_preview;

/* One input mask, for the report. */
typedef struct run_mask {
    int label, index;           /* true class and test-set index */
    int islands, bridges;
    double blocked_fraction;    /* of the binarised aperture's open area */
    int pred[3];                /* read as: original image, binarised, printable mask */
} run_mask;

/* The tolerance study in brief, for the report. */
#define RUN_TOL_ROWS 10
#define RUN_TOL_KINDS 16
/* One configured perturbation, as the report's table shows it. */
typedef struct run_tol_pert {
    char what[64], key[32];          /* plain words; the report key ("lateral") */
    char limit[128];                 /* "±0.1 mm" (UTF-8) */
    char dist[192];                  /* how a trial draws it */
    double change;                   /* alone, worst accuracy change; NAN: not evaluated */
} run_tol_pert;
typedef struct run_tol {
    int images, trials;
    double nominal;                  /* accuracy without perturbation */
    double mean, std, min, max;      /* Monte Carlo at the configured magnitudes */
    double p90, p50, p10;            /* 90 / 50 / 10 % of trials reach at least this */
    double spec, yield, yield_lo, yield_hi;
    int spec_from_nominal;           /* spec = nominal - 1 point (none set) */
    int nsens;                       /* worst sensitivity rows */
    struct { char what[96]; double magnitude, change; } sens[RUN_TOL_ROWS];
    int ninv;                        /* inverse tolerances */
    struct { char what[48]; double ref, at1, at5, max_tested; } inv[RUN_TOL_ROWS];
    int npert, dominant;             /* dominant: index in pert, -1 none */
    int sens_kinds;                  /* the sensitivity rows are per kind */
    run_tol_pert pert[RUN_TOL_KINDS];
    double seconds;
    long inferences;
    int optics;                      /* optical model of every number (D2_OPTICS_*) */
} run_tol;

/* The power budget of the stack as printed. */
typedef struct run_power {
    int ok;                          /* 0: not evaluated */
    double source_mw;                /* through the input digit */
    double eff_design, eff_printed;  /* detectors / input power (design NAN: unknown) */
    double out_printed;              /* output plane / input power */
    double transmission, fresnel_r;  /* stack power transmission; R per surface */
    int ndet;
    double det_total_w, det_each_w;  /* on all detectors; mean per detector */
    double nep_needed;               /* W/sqrt(Hz) for SNR 10 in 1 Hz */
    int low;                         /* under 1 % reaches the detectors */
} run_power;

/* Everything the stages produced, for the report. */
typedef struct run_state {
    const run_config *c;
    const run_opts *o;
    run_result *res;
    d2_model model;             /* the trained design (stage 1) */
    int have_model;
    eval_result ev_model;       /* accuracy of the design */
    int have_ev_model;
    export_report ex;           /* stage 2 */
    int have_export;
    d2_model printed;           /* the export loaded back: what will be printed */
    int have_printed;
    eval_result ev_export;      /* accuracy of the exported heights (as printed) */
    int have_ev_export;
    eval_result ev_export_thin; /* the same heights as thin phase screens (with thick) */
    int have_ev_export_thin;
    int nparts;
    run_part part[RUN_MAX_PARTS];
    char assembly_file[96];     /* "assembly.stl", "" when not written */
    char assembly_json[96];
    double plate_thick_mm[D2_MAX_LAYERS + 2]; /* per stack plane, 0 unknown */
    double frame_width_mm, post_mm;  /* from assembly.json, 0 unknown */
    int nmasks;                 /* input mask parts made (stage 4), first in part[] */
    run_mask mask_info[RUN_MAX_MASKS];
    int mask_correct[3], mask_labelled; /* read correctly: original, binarised, mask */
    int npreviews;
    run_preview preview[RUN_MAX_PREVIEWS];
    cJSON *masks_json;          /* the mask stage's summary, owned; NULL when none */
    cJSON *tolerance_json;      /* the tolerance summary for report.json, owned; NULL: none */
    run_tol tol;
    double t_stage;             /* when the current stage began (d2_now) */
    int nwarn, warn_logged;     /* warnings, and how many the log has shown */
    char warn[32][512];
} run_state;

/* Adds a warning line for the report (dropped past 32). */
void run_warn(run_state *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records a preview file (relative path) with its caption. */
void run_add_preview(run_state *s, const char *group, const char *file, const char *caption);

/* Checks a run config's "tolerance" section with the tolerance stage's
 * reader (tol_config_read); the message names the section. */
int run_tolerance_check(const char *file, const cJSON *section, d2_err *e);
/* The output folder must be new, empty or an earlier package (a run never
 * mixes its files with someone else's; sub-folders that are links are
 * refused, naming them); then the earlier package's report and d2fab's own
 * files are removed (run/package.c). */
int run_prepare_out(run_state *s, d2_err *e);

/* Writes OUT/report.json, OUT/report.html and OUT/PRINTING.txt (atomically,
 * report.html last). Returns 0 or D2_EIO. */
int run_write_reports(run_state *s, d2_err *e);

/* The facts of the print (run/printing.c). Total gap from the input plane to
 * plane k (0 = input, L + 1 = detector), mm. */
double run_plane_z(const d2_geom *g, int k);
/* The printer's technology ("polyjet", "sla", "msla", "dlp", "fdm", ...). */
const char *run_technology_of(const run_state *s);
int run_is_resin(const char *tech);
/* How a plate goes on the build plate, in words. */
const char *run_orientation_text(const run_state *s);
/* Print time of a part height_mm tall, hours (layer model; < 0: not
 * estimated), and how the time was found, in words. */
double run_print_time_h(const run_state *s, double height_mm);
const char *run_print_time_source(const run_state *s);
/* One sentence on asking a slicer for the time (or why it cannot). */
const char *run_slicer_hint(const run_state *s);
/* With "print_time": "slicer", asks PrusaSlicer for the print time of every
 * layer part (slicer_print_time), one line each on the progress stream; the
 * longest in *worst_h. */
int run_slice_parts(run_state *s, double *worst_h, d2_err *e);
/* Mass of volume_mm3 of the material, g (< 0: no density). */
double run_mass_g(const run_state *s, double volume_mm3);
/* Writes PRINTING.txt, atomically. */
int run_write_printing(const run_state *s, const char *path, d2_err *e);

/* Report sections (sections.c). run_tol_perturbations fills t's table
 * from the study's result r (a const tol_result *, void here to keep the
 * tolerance header out). */
void run_tol_perturbations(run_tol *t, const void *r);
void run_html_perturbations(FILE *f, const run_state *s);
cJSON *run_perturbations_json(const run_tol *t);
int run_power_budget(const run_state *s, run_power *p);
void run_html_power(FILE *f, const run_state *s);
cJSON *run_power_json(const run_state *s);

/* The figures (previews.c), each added with run_add_preview: layer k's
 * phase (wrapped, n x n), its printed height and 3-D relief (from the
 * export folder), the output intensity of the first test digits. Return 0
 * or the failing call's code. */
int run_fig_phase(run_state *s, int k, const float *wrapped, d2_err *e);
int run_fig_height(run_state *s, int k, d2_err *e);
int run_fig_relief(run_state *s, int k, d2_err *e);
int run_fig_output(run_state *s, d2_err *e);

/* Standard base64 of n bytes, NUL-terminated; caller frees. NULL when out of
 * memory. */
char *run_base64(const unsigned char *p, size_t n);

#endif
