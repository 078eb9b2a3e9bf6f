/* d2fab train: the tolerance simulator - accuracy of a diffractive stack
 * under the errors of the print and the assembly, reported the way optical
 * tolerancing programs do (Zemax OpticStudio, CODE V): nominal, sensitivity,
 * inverse tolerances, Monte Carlo with yield.
 *
 * A trial is inference on the one forward model (net.h) with perturbed layer
 * transmissions and gaps; what does not change between trials (the nominal
 * transmissions, the transfer functions of unchanged gaps) is kept.
 *
 * The stack. Every layer is a thickness map T (mm of material, the base
 * included): an export's printed heights, or for a model the thickness its
 * phase implies, T = base + wrap(phi) lambda / (2 pi (n - 1)), with the index,
 * kappa and base of the model's "material" section. A perturbed layer has
 *   T' = Q(T) + dh                  (quantisation, height errors; T' >= 0)
 *   t' = t0 exp(i 2 pi [(n' - 1) T' / lambda' - (n - 1) T / lambda])
 *           x exp(-2 pi [kappa' T' / lambda' - kappa T / lambda])   (absorbing)
 * where t0 is the nominal transmission (exactly what eval uses), n' = n + dn,
 * kappa' = max(0, kappa + dkappa), lambda' the drifted wavelength (the
 * material is taken as dispersion-free: n does not change with lambda).
 * The amplitude factor applies to "absorbing" stacks: exports and models
 * trained coupled to the material; a phase-only model has no absorption to
 * perturb (kappa errors are reported as not applicable). t' is then printed
 * at another pitch (scale about the centre), rotated and shifted
 * (perturb_transform_scaled: bilinear, zero outside), and axial shifts change
 * the gaps (perturb_gaps).
 *
 * Magnitudes. Every perturbation has a magnitude D; "uniform" draws in
 * [-D, D], "normal" draws from N(0, (D/2)^2) truncated at 2 sigma = D (the
 * Zemax convention: D is the limit either way). Height errors are fields: per
 * pixel (white) or Gaussian-filtered white noise (correlated) whose
 * autocorrelation falls to 1/e at correlation_length_mm (filter sigma = half
 * of it), mapped to the same marginal distribution (uniform through the
 * Gaussian CDF, normal clipped at 2 sigma). Detector noise is additive
 * Gaussian on every detector energy, sigma = D times the nominal mean
 * detector energy. Quantisation and the input mask are fixed settings, not
 * random. The input mask is either one fixed input-plane PNG multiplied into
 * every test image, or every test digit read through its own printable
 * stencil (binarised, narrow slits closed, islands bridged: the mask stage,
 * through tol_stencil_fn), open = 1, plate = 0, as `d2fab mask` reads it.
 *
 * Not modelled: layer tilt (a tilted plate between tilted planes needs the
 * rotated-plane angular spectrum, which the forward model does not have;
 * neither a phase ramp nor per-pixel axial shifts describe it for pixels
 * that diffract up to asin(lambda / 2 pitch)).
 *
 * Reproducible: every random number comes from a stream derived from the
 * seed and (trial, perturbation, layer, component), or (trial, image) for
 * detector noise, so neither the thread count nor the set of other
 * perturbations changes a draw, and the same trials perturb every model of a
 * comparison (common random numbers). */
#ifndef D2_TOLERANCE_H
#define D2_TOLERANCE_H

#include <stdint.h>
#include <stdio.h>
#include <cjson/cJSON.h>

#include "core/idx.h"
#include "core/util.h"
#include "optics/optics.h"

#define TOL_MAX_MODELS 8
#define TOL_MAX_SCALES 16
#define TOL_MAX_TRIALS 100000
#define TOL_MAX_DRAWS 32
#define TOL_MAX_SCAN 48
/* Largest planned run (inferences: trials x test images x models, with the
 * sensitivity and inverse evaluations): refused up front beyond this. */
#define TOL_MAX_INFERENCES 2e9

typedef enum {
    TOL_LATERAL,      /* x and y shift of a layer, mm */
    TOL_AXIAL,        /* z shift of a layer, mm */
    TOL_ROTATION,     /* in-plane rotation of a layer, deg */
    TOL_PITCH,        /* pixel-pitch scale error of a layer, % */
    TOL_HEIGHT,       /* white height error, mm per pixel */
    TOL_HEIGHT_CORR,  /* correlated height error, mm */
    TOL_QUANTIZE,     /* height step (mm) or phase step (rad), all layers */
    TOL_INDEX,        /* refractive-index error (absolute) */
    TOL_KAPPA,        /* extinction-coefficient error (absolute) */
    TOL_WAVELENGTH,   /* source drift: mm, or THz when given as frequency */
    TOL_DET_SHIFT,    /* detector-plane x and y misregistration, mm */
    TOL_DET_NOISE,    /* detector noise, sigma / mean detector energy */
    TOL_MASK,         /* fixed input-plane mask (bridges), on/off */
    TOL_NKINDS
} tol_kind;

enum { TOL_UNIFORM = 0, TOL_NORMAL = 1 };

/* Sensitivity analyses: none; each perturbation alone per layer and axis
 * (the optical tolerancing convention); or per kind, every layer and axis of
 * a kind at +D together (and -D), 2 evaluations a kind: the run's default. */
enum { TOL_SENS_OFF = 0, TOL_SENS_LAYERS = 1, TOL_SENS_KINDS = 2 };

/* Name of a kind as used in report keys ("lateral", "height_error", ...). */
const char *tol_kind_name(int kind);

/* One perturbation as configured: a magnitude for every layer (per-layer
 * kinds: nval 1 = the same for all, or one per layer) in the unit of the key
 * it was given with. */
typedef struct tol_item {
    int nval;                      /* 0: not set */
    double val[D2_MAX_LAYERS];
    int unit;                      /* TOL_U_*: the key's unit */
    int dist;                      /* TOL_UNIFORM or TOL_NORMAL */
} tol_item;

/* TOL_U_SOURCE: detector noise as a fraction of the source power (the
 * power through the input aperture, which the detector energies are
 * fractions of), not of the nominal mean detector energy. */
enum { TOL_U_MM, TOL_U_PX, TOL_U_WAVELENGTHS, TOL_U_DEG, TOL_U_PERCENT, TOL_U_THZ, TOL_U_NONE,
       TOL_U_LEVELS, TOL_U_RAD, TOL_U_SOURCE };

/* Makes the printable stencil of one test image (rows x cols grey bytes)
 * on g's n x n input plane: open[n*n] = 1 where light passes. threshold:
 * fraction of the brightest plane pixel; min_feature_mm: the printer's
 * smallest feature (bridges and closed slits are at least that wide).
 * Returns 0, or non-zero when the digit cannot be made into a stencil (it
 * then counts as misread). Must be safe to call from several threads. The
 * command line provides it from the mask stage (mesh/mask.h). */
typedef int (*tol_stencil_fn)(void *ctx, const d2_geom *g, const unsigned char *img, int rows,
                              int cols, double threshold, double min_feature_mm,
                              unsigned char *open);

typedef struct tol_config {
    tol_item item[TOL_NKINDS];
    int quantize_printer;          /* "quantize": "printer": the export's Z step */
    double correlation_mm;         /* correlated height error: 1/e length */
    char mask_png[1024];           /* input-plane mask PNG, "" = none */
    int stencil;                   /* "input_mask": "stencil": every test digit read
                                      through its printable, bridged stencil */
    double stencil_threshold;      /* binarisation, fraction of the brightest pixel */
    double stencil_min_feature_mm; /* 0: the export's printer, else 0.1 mm */
    tol_stencil_fn stencil_fn;     /* set by the caller for stencils */
    void *stencil_ctx;
    uint64_t seed;
    int trials;                    /* Monte-Carlo trials per model and scale; 0 = none */
    int limit;                     /* test images, 0 = all */
    double spec;                   /* yield threshold, accuracy fraction; < 0: nominal - 1 point */
    double confidence;             /* Clopper-Pearson level, e.g. 0.95 */
    int sensitivity;               /* TOL_SENS_*: each perturbation alone, per layer and
                                      axis, or per kind (every layer together: cheap) */
    int inverse;                   /* run the inverse tolerances */
    int inverse_draws;             /* random draws averaged per inverse/scan point */
    int nscales;                   /* Monte-Carlo magnitude multipliers (sweep) */
    double scales[TOL_MAX_SCALES];
    /* optical model of every stack: -1 (default) thick plates for an export,
     * the model's own for a model folder; D2_OPTICS_THIN or D2_OPTICS_THICK
     * ("optics": "thin" | "thick"). Thick turns the stack into the thick model
     * of the same assembly (model_make_thick, spacing as built). */
    int optics;
} tol_config;

/* Defaults: seed 1, 200 trials, all test images, spec nominal - 1 point,
 * confidence 0.95, sensitivity and inverse on, 4 draws, scales {1}, no
 * perturbation. */
void tol_config_default(tol_config *c);

/* Reads a tolerance config (JSON object, see samples/tolerance.json) into c
 * (which should hold the defaults). Every key is validated (unknown keys,
 * types, ranges, two units for one perturbation, per-layer arrays); messages
 * name path, the key and the allowed values. Returns 0 or D2_EINPUT. */
int tol_config_read(const char *path, const cJSON *root, tol_config *c, d2_err *e);

/* Sets one magnitude key of the config (as tol_config_read would, e.g.
 * "lateral_mm" for --lateral-mm), replacing the same perturbation given in
 * another unit. Fails with D2_EUSAGE for an unknown key or a value out of
 * range. */
int tol_config_set(tol_config *c, const char *key, double value, d2_err *e);
/* Quantises to the printer Z step of each export ("quantize": "printer"). */
void tol_config_quantize_printer(tol_config *c);

/* Checks the run size against the limits before any work: trials <=
 * TOL_MAX_TRIALS and the planned inference count (for `images` test images,
 * nmodels models of `layers` layers each at most) <= TOL_MAX_INFERENCES. The
 * message gives the estimate (inferences and an approximate time for the
 * geometry g on `threads` threads) and the limit. */
int tol_check_limits(const tol_config *c, int nmodels, int images, const d2_geom *g,
                     int threads, d2_err *e);
/* Planned inferences of a run (upper bound of the inverse search). */
double tol_plan_inferences(const tol_config *c, int layers, int images);

/* A stack to test: the nominal model plus its thickness maps and material. */
typedef struct tol_stack {
    d2_model m;                       /* phases, amplitudes, geometry; owned */
    float *height_mm[D2_MAX_LAYERS];  /* n*n whole thickness incl. base; owned */
    double index, kappa, base_mm;     /* material at the design wavelength */
    int absorbing;                    /* amplitude follows the thickness */
    double z_step_mm;                 /* printer Z step (export) or training's, 0: unknown */
    double min_feature_mm;            /* printer's smallest feature (export), 0: unknown */
    int is_export;
    char name[64];                    /* label in tables and plots */
    char path[1024];
} tol_stack;

/* Makes a stack from a loaded model m, taking ownership of its arrays (m is
 * zeroed). export_dir: the export folder m was loaded from (its export.json
 * gives the material, base, Z step and the heights_npy files, read here), or
 * NULL for a model directory (thickness from the phases and the model's
 * material section). name is the label (truncated to 63 bytes). On failure
 * the stack holds nothing to free. Release with tol_stack_free. */
int tol_stack_init(tol_stack *s, d2_model *m, const char *export_dir, const char *name,
                   const char *path, d2_err *e);
void tol_stack_free(tol_stack *s);

/* Magnitudes of a config bound to one stack, in internal units: mm (lateral,
 * axial, heights, detector shift, wavelength unless THz), deg, %, rad for a
 * phase-level step. v[kind][layer]; global kinds use v[kind][0]. */
typedef struct tol_mag {
    double v[TOL_NKINDS][D2_MAX_LAYERS];
    int on[TOL_NKINDS];               /* any layer non-zero */
    int unit[TOL_NKINDS];             /* TOL_U_* of v */
    int dist[TOL_NKINDS];
    int quant_levels;                 /* TOL_QUANTIZE is a phase step (levels mode) */
    double correlation_mm;
    float *mask;                      /* n*n input-plane transmission or NULL; owned */
    int stencil;                      /* inputs through printable stencils */
    double stencil_threshold, stencil_min_feature_mm;
    tol_stencil_fn stencil_fn;
    void *stencil_ctx;
} tol_mag;

/* Converts c's magnitudes for stack s (pixels and wavelengths to mm, levels
 * to a phase step, "printer" to the export's Z step) and reads the mask PNG
 * (must be n x n). Fails with D2_EINPUT when a per-layer array does not have
 * s's layer count or a setting needs what s lacks. Release with
 * tol_mag_free. */
int tol_bind(const tol_config *c, const tol_stack *s, tol_mag *mag, d2_err *e);
void tol_mag_free(tol_mag *mag);

/* Unit of a kind's internal magnitude for reports ("mm", "deg", "%", "",
 * "rad", "THz", "relative"). */
const char *tol_unit_name(int unit);

/* Properties of a kind: one value per layer; components (2 for x and y);
 * signed scalar (drawn in [-1, 1] times the magnitude) rather than a field or
 * a fixed setting. */
int tol_kind_per_layer(int kind);
int tol_kind_comps(int kind);
int tol_kind_signed(int kind);

/* ---- results ----------------------------------------------------------- */

/* One operand of the sensitivity table: a perturbation of one layer (or the
 * whole stack, layer -1) and component (x 0, y 1). */
typedef struct tol_sens_row {
    int kind, layer, comp;
    double magnitude;        /* D in the kind's unit */
    double acc_plus;         /* accuracy at +D (or the one setting/realisation) */
    double acc_minus;        /* accuracy at -D; NAN when not signed */
    double change;           /* worst accuracy - nominal (fraction, <= 0 hurts) */
    int applicable;          /* 0: no effect on this stack (kappa on a phase-only model) */
} tol_sens_row;

typedef struct tol_scan_pt {
    double factor;           /* multiple of the configured magnitude */
    double mean, min, max;   /* accuracy over the draws */
} tol_scan_pt;

/* Inverse tolerance of one kind (all layers perturbed together, each by its
 * own draw): the magnitude at which the mean accuracy over `draws` random
 * draws falls 1 and 5 points below nominal, found by bisection on a scan of
 * multiples of the configured magnitude. */
typedef struct tol_inverse {
    int kind;
    double ref;              /* configured magnitude (largest layer value) */
    double at1, at5;         /* magnitudes costing 1 and 5 points; NAN: not reached */
    double max_tested;       /* largest magnitude evaluated */
    double acc_at_ref;       /* mean accuracy at the configured magnitude */
    int npts;                /* scan and bisection points, sorted by factor */
    tol_scan_pt pts[TOL_MAX_SCAN];
} tol_inverse;

/* Monte Carlo at one magnitude multiplier. */
typedef struct tol_mc {
    double scale;
    int trials;
    double *acc;             /* per trial (owned) */
    int nvec;                /* perturbation values per trial */
    double *vec;             /* trials x nvec realised values (owned) */
    double mean, std, min, max;
    double p90, p50, p10;    /* 90 / 50 / 10 % of the trials reach at least this */
    int pass;                /* trials with accuracy >= spec */
    double yield, yield_lo, yield_hi; /* pass / trials and its Clopper-Pearson interval */
} tol_mc;

typedef struct tol_result {
    const tol_stack *s;
    tol_mag mag;
    int images;
    double nominal;          /* accuracy without perturbation (fraction) */
    double det_mean;         /* nominal mean detector energy (noise reference) */
    /* the nominal light budget over the test images: detector efficiency
     * (sum of the detector energies) mean and 5th percentile, and the margin
     * between the winning and the second class score (det_margin) */
    double eff_mean, eff_p5, margin_mean, margin_p5;
    int unprintable;         /* stencil mode: test images that make no stencil */
    double spec;             /* yield threshold used */
    int spec_from_nominal;   /* 1: no spec was set, so spec = nominal - 1 point */
    int nsens;
    tol_sens_row *sens;      /* sorted worst first; owned */
    int ninv;
    tol_inverse inv[TOL_NKINDS];
    int nmc;
    tol_mc mc[TOL_MAX_SCALES];
    int nvec;                /* names of the per-trial vector entries */
    char (*vec_name)[48];    /* owned */
    double seconds;
    long inferences;
} tol_result;

typedef struct tol_report {
    tol_config cfg;
    int nmodels;
    tol_result res[TOL_MAX_MODELS];
    char dataset[16];
    int threads;
    double seconds;
    long inferences;
} tol_report;

/* Runs every analysis of c for each of the n stacks on the test set ds
 * (its first c->limit images) with the pool's threads: nominal, sensitivity,
 * inverse tolerances with their scans, and Monte Carlo at every scale. The
 * stacks must outlive the report. progress (may be NULL) gets a progress
 * line. Fills rep (release with tol_report_free, also after a failure).
 * Returns 0 or a D2_E* code. */
int tol_run(const tol_config *c, const tol_stack *stacks, int n, const d2_dataset *ds,
            d2_pool *pool, FILE *progress, tol_report *rep, d2_err *e);
void tol_report_free(tol_report *rep);

/* Unit of kind's magnitudes in a result ("mm", "deg", "THz", "relative", ...). */
const char *tol_result_unit(const tol_result *r, int kind);

/* Writes into out_dir (created): report.json, sensitivity.csv, inverse.csv,
 * scan.csv, montecarlo.csv (every trial's accuracy and perturbation vector),
 * montecarlo_summary.csv, compare.csv, and the plots scan_KIND.png (accuracy
 * against each perturbation's magnitude), yield.png (Monte-Carlo accuracy
 * distribution) and compare.png (mean accuracy against the Monte-Carlo
 * magnitude, per model). Every file atomic. Returns 0 or a D2_E* code. */
int tol_write(const tol_report *rep, const char *out_dir, d2_err *e);

/* The report as JSON (caller owns it). */
cJSON *tol_report_json(const tol_report *rep);

/* ---- lower level: one trial -------------------------------------------- */

/* A set of unit draws: u[kind][layer][comp] in [-1, 1] for scalar kinds
 * (multiplied by the magnitude), 1 or 0 for fields, fixed settings and
 * noise; stream selects the random fields and the detector noise. */
typedef struct tol_draw {
    double u[TOL_NKINDS][D2_MAX_LAYERS][2];
    uint64_t stream;
} tol_draw;

/* Unit draws of Monte-Carlo trial `stream` for the kinds that mag turns on
 * (all kinds when only_kind < 0, else that kind alone). */
void tol_draw_make(tol_draw *d, const tol_mag *mag, int layers, uint64_t seed, uint64_t stream,
                   int only_kind);

typedef struct tol_sim tol_sim;

/* A network for stack s with `threads` workspaces and the nominal state
 * cached. Returns NULL and fills e on failure. */
tol_sim *tol_sim_new(const tol_stack *s, int threads, d2_err *e);
void tol_sim_free(tol_sim *sim);

/* Accuracy (fraction) of stack s on the first `count` images of ds with the
 * perturbation scale x mag x draw d (d NULL: nominal), seed for the random
 * fields and noise. det_ref: the nominal mean detector energy (noise
 * reference). If det_out is not NULL it receives count x ndet energies
 * (after misregistration and noise). vec (may be NULL) receives the realised
 * values in the order of tol_vector_names. Returns 0 or D2_EIO. */
int tol_sim_eval(tol_sim *sim, const tol_mag *mag, double scale, const tol_draw *d,
                 uint64_t seed, const d2_dataset *ds, int count, d2_pool *pool, double det_ref,
                 double *accuracy, float *det_out, double *vec, d2_err *e);

/* Stencil mode: test images of the last evaluation with no printable stencil
 * (they count as misread). */
int tol_sim_unprintable(const tol_sim *sim);

/* Names ("L1_lateral_x_mm", "index_error", ...) of the realised values that
 * tol_sim_eval writes for mag on a stack of `layers` layers. names has room
 * for max entries of 48 bytes. Returns the count. */
int tol_vector_names(const tol_mag *mag, int layers, char (*names)[48], int max);

/* ---- statistics -------------------------------------------------------- */

/* Regularised incomplete beta function I_x(a, b), a, b > 0, x in [0, 1]
 * (continued fraction, relative accuracy about 1e-14). */
double tol_betainc(double a, double b, double x);
/* Its inverse in x: the p quantile of Beta(a, b), p in [0, 1]. */
double tol_betainc_inv(double a, double b, double p);
/* Clopper-Pearson interval of k successes in n trials at confidence level
 * conf (e.g. 0.95): lo = 0 when k = 0, hi = 1 when k = n. */
void tol_clopper_pearson(int k, int n, double conf, double *lo, double *hi);

/* ---- one study (tolerance/study.c) -----------------------------------------
 * What the command line (tolerance) and run both call: load every model or
 * export folder as a stack, refuse what can be refused before the data set
 * loads (each stack binds the config, the run fits the limits), load the test
 * set, run every analysis and write the report into out_dir. */

typedef struct tol_study_model {
    const char *dir;   /* a model folder or an export folder (export.json) */
    const char *name;  /* its name in the report; NULL: the folder's last
                          component (made unique among the models) */
    const char *path;  /* the path the report records; NULL: dir */
} tol_study_model;

typedef struct tol_study_opts {
    const tol_config *cfg;
    const tol_study_model *models;
    int nmodels;             /* 1..TOL_MAX_MODELS */
    const char *data_dir;    /* folder of the MNIST / Fashion-MNIST files */
    int threads;             /* 0: every core */
    const char *out_dir;     /* report.json, CSVs and plots (tol_write) */
    FILE *announce;          /* one line with the run's size before it starts, or NULL */
    FILE *progress;          /* progress lines (tol_run), or NULL */
} tol_study_opts;

typedef struct tol_study {
    tol_stack stacks[TOL_MAX_MODELS];
    int nstacks;
    int images, threads;     /* test images and worker threads used */
    tol_report rep;          /* its results point into stacks */
} tol_study;

/* Runs the study of o into *st and writes its report. On failure *st holds
 * nothing to free; else release with tol_study_free. */
int tol_study_run(const tol_study_opts *o, tol_study *st, d2_err *e);
void tol_study_free(tol_study *st);

#endif
