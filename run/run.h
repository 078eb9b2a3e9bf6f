/* d2fab run: one command from a trained network to a print package.
 *
 * A run config (JSON, every key checked) names the model (a model folder, or
 * bare phase maps with their geometry), the printer, the material, the source
 * frequency, the input masks to make and the tolerance study. run_pipeline
 * then calls the stage libraries in order - model and accuracy, export, mesh,
 * masks, tolerance, report - and writes the print package:
 *
 *   OUT/export/      the export stage's folder (export.json, heights .npy/PNG)
 *   OUT/parts/       one file per part to print (layer plates, input masks,
 *                    the detector plane)
 *   OUT/assembly.*   every part at its place in the stack, with assembly.json
 *   OUT/previews/    phase, height, mask and detector-plane PNGs
 *   OUT/tolerance/   the tolerance stage's report, CSVs and plots
 *   OUT/report.json, OUT/report.html (one self-contained page), OUT/PRINTING.txt
 *
 * Every file is written atomically. The three report files are removed before
 * the first stage runs and written last, so a folder never holds a report
 * that does not match its files; a failing stage stops the run with its name
 * in the message. A stage the config does not ask for (no "masks", no
 * "tolerance") is reported as skipped, with the reason.
 *
 * Units: mm, THz, rad, hours. Library code: never prints to stdout (stage
 * lines go to the stream the caller passes), never exits. */
#ifndef D2_RUN_H
#define D2_RUN_H

#include <stdio.h>
#include <cjson/cJSON.h>

#include "core/err.h"
#include "optics/optics.h"

#define RUN_PATH_MAX 1024
#define RUN_MAX_MASKS 64

/* A parsed, validated run config. Paths are resolved against the config
 * file's folder. Release with run_config_free. */
typedef struct run_config {
    char path[RUN_PATH_MAX];      /* the config file, for messages */

    /* The model: a folder (model.json), or bare phase maps. */
    char model_dir[RUN_PATH_MAX]; /* "" when phase maps are given */
    int nphase;                   /* 0, or 1..D2_MAX_LAYERS phase maps */
    char phase_files[D2_MAX_LAYERS][RUN_PATH_MAX];
    double phase_pitch_mm;        /* "phases.pitch_mm" */
    double phase_frequency_thz;   /* "phases.frequency_thz": the design frequency */
    double phase_gaps_mm[D2_MAX_LAYERS + 1];
    int phase_ngaps;              /* 0: 30 mm each, 1: every gap, layers + 1 */
    int phase_png_range;          /* PNG phase maps: "phases.png_range_rad" given */
    double phase_png_lo_rad, phase_png_hi_rad;
    char phase_dataset[16];       /* "mnist", "fashion", "folder" or "idx" */
    d2_data_paths phase_data;     /* folder / idx: the test set, absolute paths */
    int phase_illum;              /* "phases.illumination": D2_ILLUM_* */
    double phase_illum_waist_mm, phase_illum_distance_mm;

    /* Fabrication. */
    char printer[RUN_PATH_MAX];   /* profile name or .json path */
    char material[RUN_PATH_MAX];
    double frequency_thz;         /* source frequency; 0: the model's */
    double base_mm;               /* NAN: the export stage's default */
    int levels;                   /* -1: the model's training levels */
    int offset_mode;              /* EXP_OFFSET_DEFAULT, _AUTO or _FIXED (offset_rad) */
    double offset_rad;
    double jump_weight;
    double index, kappa;          /* NAN: from the material profile */
    int force;                    /* printer limits: warn instead of failing */
    char mesh_format[8];          /* "stl", "3mf", "obj", "ply", "glb" */
    int print_time_slicer;        /* "print_time": "slicer" (1) asks PrusaSlicer for every
                                     layer part's time; "layers" (0) the layer model only */

    /* Accuracy: the first test_limit test images (0 = all 10000). */
    int test_limit;
    /* The optical model that scores the export as printed ("optics": D2_OPTICS_THICK,
     * the default, or D2_OPTICS_THIN), and the test images it scores with
     * thick plates ("thick_limit", about 30 times the thin cost per image;
     * 0 = test_limit). The thin score on test_limit images is reported beside it. */
    int optics;
    int thick_limit;

    /* The power budget: the source power reaching the input plane, mW
     * ("source_power_mw", default 1). */
    double source_power_mw;

    /* Input masks: the first mask_count test images of each listed digit,
     * or the listed test-set indices; none when both lists are empty. */
    int mask_ndigits;
    int mask_digits[10];
    int mask_count;
    int mask_nindices;
    int mask_indices[RUN_MAX_MASKS];
    int mask_mode;                /* 0 stencil, 1 carrier-recess, 2 carrier-relief */
    double mask_threshold;        /* open where amplitude >= this x max; 0: default */
    double mask_thick_mm;         /* opaque plate thickness; 0: the mask default */

    /* Tolerance study: the "tolerance" section, a tolerance config as
     * d2fab tolerance --config reads it (train/tolerance.h), owned; NULL: no
     * study. */
    cJSON *tolerance;
} run_config;

/* Fills c with the defaults (no model, objet-connex500, verobp, the model's
 * frequency, STL, 1000 test images, no masks, no tolerance study). */
void run_config_default(run_config *c);

/* Reads and validates a run config file (JSON). Keys (paths relative to the
 * config file's folder; only one of "model" and "phases"):
 *   "notes"          free text
 *   "model"          a model folder (model.json + layerK.npy)
 *   "phases"         {"files": [one phase map per layer: float32 .npy radians,
 *                    or grey PNG], "pitch_mm", "frequency_thz" (the design
 *                    frequency), "gaps_mm" [1 or layers + 1 numbers; default
 *                    30 each], "png_range_rad" [lo, hi] (PNG maps),
 *                    "dataset" "mnist" | "fashion" | "folder" (with "test": a
 *                    folder of class sub-folders 0..9 of PNGs) | "idx" (with
 *                    "test_images" and "test_labels"), "illumination"}
 *   "printer", "material"  profile names or .json paths
 *                    [objet-connex500, verobp]
 *   "frequency_thz"  source frequency [the model's]
 *   "test_limit"     test images for the accuracy before and after
 *                    fabrication, 0 = all [1000]
 *   "export"         {"base_mm", "levels" (-1 the model's, 0 Z step, 2..4096),
 *                    "phase_offset" "auto" | rad, "jump_weight", "index",
 *                    "kappa", "force"} as d2fab export's options
 *   "mesh"           {"format": "stl" | "3mf" | "obj" | "ply" | "glb"} [stl]
 *   "print_time"     "layers" (the layer model of the printer profile) or
 *                    "slicer" (also PrusaSlicer's estimate for every layer
 *                    part, about 5-25 s of CPU each: resin and FDM printers, parts
 *                    in stl, 3mf or obj) ["layers"]
 *   "masks"          {"digits": [0..9, ...] with "count" (first count test
 *                    images of each, 1..16) and/or "test_indices": [...];
 *                    "mode" "stencil" | "carrier-recess" | "carrier-relief",
 *                    "threshold" (0, 1), "thick_mm"} [no masks]
 *   "tolerance"      a tolerance config (keys of d2fab tolerance --config:
 *                    "trials", "limit", "seed", "lateral_mm", "axial_mm",
 *                    "rotation_deg", "quantize", "sensitivity", "inverse",
 *                    "spec_accuracy_percent", ...) [no study]
 * Unknown keys, a value of the wrong type or out of range, both or neither of
 * "model" and "phases", paths that do not exist and paths that leave the
 * config's folder (absolute, "..", a symbolic link out) fail with D2_EINPUT; the
 * message names the file, the key path, the value and what is allowed. The
 * "tolerance" section is checked by the tolerance stage's reader
 * (tol_config_read). On failure c holds nothing to free. */
int run_config_load(const char *path, run_config *c, d2_err *e);
/* The same from JSON already parsed; base_dir resolves relative paths and
 * name is used in messages. */
int run_config_from_json(const char *name, const char *base_dir, const cJSON *root,
                         run_config *c, d2_err *e);
/* Releases c->tolerance; run_config_free(NULL) is a no-op. */
void run_config_free(run_config *c);

/* Run-time settings that are not part of the design. */
typedef struct run_opts {
    const char *out_dir;      /* the package folder, created; required */
    const char *data_dir;     /* mnist/ and fashion/ (dataset_default_dir()) */
    const char *profiles_dir; /* extra printer/material profiles, or NULL */
    int threads;              /* <= 0: all cores */
    FILE *log;                /* one line per stage ("[2/6] export: ..."), or NULL */
    FILE *progress;           /* progress bars of long stages, or NULL */
} run_opts;

#define RUN_STAGES 6

/* What happened to each stage. */
typedef enum { RUN_PENDING = 0, RUN_DONE, RUN_SKIPPED, RUN_FAILED } run_status;

typedef struct run_result {
    run_status status[RUN_STAGES];
    char note[RUN_STAGES][1024];   /* one line per stage: what it made, or why skipped */
    double stage_seconds[RUN_STAGES]; /* wall-clock time of each stage */
    char report_html[RUN_PATH_MAX]; /* OUT/report.html once written */
    double seconds;               /* the whole run */
} run_result;

/* Names of the stages, in order: "model", "export", "mesh", "masks",
 * "tolerance", "report". */
extern const char *const run_stage_names[RUN_STAGES];

/* Runs every stage of c in order into o->out_dir. On failure returns the
 * failing stage's code with its message prefixed by "STAGE stage" and *r
 * records which stages ran; files of the failed stage are not left half
 * written, and no report is left in the folder. *r is filled either way. */
int run_pipeline(const run_config *c, const run_opts *o, run_result *r, d2_err *e);

#endif
