/* d2fab calibrate: fitting a digital twin of a printed stack to what its
 * detectors measure. Sits between tolerance/ (and run/) above and optics/
 * below: it uses the one forward model and its adjoint (optics.h), nothing
 * of train/ or tolerance/.
 *
 * MEAS, the measurement file (one reader, one writer: calibrate/meas.c).
 * Either CSV or JSON lines, told apart by the first character that is not
 * blank or part of a comment: '{' is JSON lines.
 *   CSV:   lines starting with '#' are comments, except an optional first
 *          line "#d2fab-meas neurons=N layers=L detectors=D" that states the
 *          optics the readings were taken on (checked against the model).
 *          Then a header "input,d1,...,dD" and one row per input:
 *          test:INDEX (a test-set image of the model's data set, from 0) or
 *          image:PATH (a grey PNG, resolved against the MEAS file's folder),
 *          then D readings (finite, >= 0, any unit).
 *   JSONL: one object per line, {"input": "test:12", "readings": [D numbers]};
 *          blank lines are skipped.
 * Errors name the file, the line and the column (1-based) at fault. */
#ifndef D2_CALIBRATE_H
#define D2_CALIBRATE_H

#include <stdio.h>

#include "core/err.h"
#include "core/idx.h"
#include "optics/optics.h"

#define CAL_PATH 1024

typedef struct cal_meas {
    int count, ndet;
    int *test_index;        /* count: test-set index, or -1 for an image */
    char (*image)[CAL_PATH];/* count: resolved PNG path when test_index < 0 */
    int *line;              /* count: the line each row came from */
    double *read;           /* count * ndet readings, row-major */
    int neurons, layers;    /* from the "#d2fab-meas" line, 0 when absent */
} cal_meas;

/* Reads MEAS at path for a stack of ndet detectors (the optics of the model
 * the readings are compared with: neurons, layers) whose test set has
 * test_count images. Fails with D2_EINPUT naming line and column: wrong
 * column count, a reading that is not a finite number >= 0, an unknown input
 * kind, a test index outside the set, a missing image, a "#d2fab-meas" line
 * of other optics, no rows; D2_EIO when the file cannot be read. Release with
 * cal_meas_free (NULL-safe; zeroes m). */
int cal_meas_read(const char *path, int ndet, int neurons, int layers, int test_count,
                  cal_meas *m, d2_err *e);
/* Writes m as CSV (with the "#d2fab-meas" line) to path, atomically. */
int cal_meas_write(const char *path, const cal_meas *m, d2_err *e);
/* Allocates an empty table of count rows, ndet readings each. */
int cal_meas_alloc(cal_meas *m, int count, int ndet, d2_err *e);
void cal_meas_free(cal_meas *m);

/* The model's input planes (count * n * n floats, caller frees) for each
 * row of meas: test images from ds (may be NULL when none is a test
 * input), images read from their PNG. */
int cal_inputs(const d2_model *m, const cal_meas *meas, const d2_dataset *ds, float **inputs,
               d2_err *e);

/* A stack with hidden errors (simulate): per layer poses drawn uniform in
 * +-max, per detector gains uniform in [gain_lo, gain_hi] and offsets in
 * [0, offset_max] (in units of the mean reading), Gaussian noise of `noise`
 * times each reading. */
typedef struct cal_sim_opts {
    int count;              /* test images (the first `count`, or every stride-th) */
    double max_xy_mm, max_z_mm, max_rot_deg;
    double gain_lo, gain_hi, offset_max, noise;
    unsigned long seed;
    int threads;
} cal_sim_opts;

typedef struct cal_truth {
    layer_pose pose[D2_MAX_LAYERS];
    double gain[D2_MAX_DET], offset[D2_MAX_DET];
    double accuracy, design_accuracy; /* set by the caller when scored */
    int accuracy_images;              /* 0: not scored */
} cal_truth;

/* Fills meas (allocated here; cal_meas_free) with the readings of m's stack
 * displaced by hidden poses (returned in truth) through the thin or thick
 * model m->g.optics selects, on the first o->count images of ds. */
int cal_simulate(const d2_model *m, const d2_dataset *ds, const cal_sim_opts *o, cal_meas *meas,
                 cal_truth *truth, d2_err *e);
/* Sets net (made for m's geometry) to m's stack displaced by pose: each
 * layer's complex transmission resampled as the tolerance trials do, the
 * gaps changed by the axial shifts; thick plates are moved as their
 * equivalent transmission (net_set_transmission turns it back into
 * heights). The stack simulate measures, and the twin's own forward model. */
int cal_set_stack(d2_net *net, const d2_model *m, const layer_pose *pose, d2_err *e);
/* Writes truth as JSON (for tests and rehearsals), atomically. */
int cal_truth_write(const char *path, const d2_model *m, const cal_truth *t, const cal_sim_opts *o,
                    d2_err *e);

/* The fit. Parameters: per layer dx, dy (mm), dz (mm, + towards the
 * detector) and rotation (degrees); per detector gain and offset, solved in
 * closed form (weighted least squares) at every step. The residual of a
 * reading is (measured - gain E - offset) / sigma with sigma = max(reading,
 * floor * the detector's largest reading) (a relative noise model). The
 * poses follow Levenberg-Marquardt on the Jacobian from the adjoint
 * (net_forward_keep / net_adjoint_det), with a Gaussian prior of widths
 * prior_* times reg (0: none) as regularisation. */
typedef struct cal_opts {
    int threads;
    int max_iter;           /* Levenberg-Marquardt iterations per stage (60) */
    double reg;             /* prior weight, 1 = the prior widths as given */
    double prior_xy_mm, prior_z_mm, prior_rot_deg;
    double noise;           /* relative noise of a reading (0.01): sets the residual scale */
    double floor;           /* relative noise floor (0.05) */
    int fit_rot;            /* 0 holds rotations at 0 */
    FILE *progress;         /* one line per iteration, or NULL */
    const layer_pose *start; /* poses to start from (layers entries), NULL: all zero */
    int coarse;             /* > 0: first fit the first `coarse` inputs alone (50) */
} cal_opts;
void cal_opts_default(cal_opts *o);

#define CAL_PER_LAYER 4 /* dx, dy, dz, rot */
#define CAL_MAX_PAR (CAL_PER_LAYER * D2_MAX_LAYERS)
#define CAL_MAX_Q (CAL_MAX_PAR + 2 * D2_MAX_DET) /* poses, gains and offsets */
#define CAL_MAX_NOTES 32

typedef struct cal_result {
    int layers, ndet, count, params;
    layer_pose pose[D2_MAX_LAYERS], sigma[D2_MAX_LAYERS]; /* fit and 1-sigma */
    double gain[D2_MAX_DET], offset[D2_MAX_DET];
    double gain_sigma[D2_MAX_DET], offset_sigma[D2_MAX_DET];
    double cost0, cost;     /* weighted sum of squares before and after */
    double rms_rel;         /* rms relative residual after the fit */
    double noise;           /* the relative noise the fit assumed (cal_opts.noise) */
    int iterations;
    double seconds;
    double twin_accuracy;   /* the twin's test accuracy (set by the caller), and */
    int twin_images;        /* its image count; 0: not evaluated */
    double sample_grads;    /* per-sample Jacobians computed (each 1 + ndet passes) */
    double *pred;           /* count * ndet predicted readings (owned) */
    /* Pairs of pose parameters the data cannot tell apart (|correlation| >
     * 0.9) and parameters the prior rather than the data fixes. */
    int nnotes;
    char notes[CAL_MAX_NOTES][160];
    double corr[CAL_MAX_PAR * CAL_MAX_PAR]; /* params x params */
} cal_result;

/* Fits the poses of m's layers (thin model) to meas with inputs from
 * cal_inputs. Fails with D2_EINPUT on a thick model or bad options, D2_EIO
 * out of memory. Release r->pred with cal_result_free. */
int cal_fit(const d2_model *m, const cal_meas *meas, const float *inputs, const cal_opts *o,
            cal_result *r, d2_err *e);
void cal_result_free(cal_result *r);

/* The energies E[ndet] of one input plane through m's stack at pose
 * (thin model) and their Jacobian J[ndet][4 layers] by dx, dy, dz (per mm)
 * and rotation (per degree) of each layer, as the fit computes it: for
 * tests. */
int cal_pose_jacobian(const d2_model *m, const layer_pose *pose, const float *in, double *E,
                      double *J, d2_err *e);

/* The twin folder: model.json + layerK.npy of m with the fitted poses baked
 * in (each layer's transmission resampled at its fitted pose, its phase
 * saved; gaps lengthened or shortened by the fitted dz), which eval,
 * tolerance and train --init load like any model; twin.json (the fit, its
 * uncertainties, gains, the notes, model_dir); report.txt (the same for
 * people, with hand-fix advice); scatter.png (measured vs predicted, when
 * PLplot's PNG driver exists). Written to temporaries and renamed. */
int cal_twin_write(const char *dir, const d2_model *m, const char *model_dir,
                   const cal_meas *meas, const cal_result *r, d2_err *e);
/* The model of the twin: m with poses baked in (see cal_twin_write); out is
 * allocated (model_free). */
int cal_twin_model(const d2_model *m, const layer_pose *pose, d2_model *out, d2_err *e);
/* Reads the "poses" of a twin.json or a simulate truth file (layers entries
 * of dx_mm, dy_mm, dz_mm, rotation_deg) into pose; D2_EINPUT naming the key
 * when absent, of another layer count or out of [-100, 100]. */
int cal_poses_read(const char *path, int layers, layer_pose *pose, d2_err *e);

#endif
