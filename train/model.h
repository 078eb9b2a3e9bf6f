/* d2fab train: the diffractive network - geometry, model files, the forward
 * model shared by train, eval, tolerance and mask.
 *
 * Coordinates: the optical axis is z; every plane is an n x n grid of square
 * pixels of pitch pitch_mm centred on the axis. Pixel (row i, column j) has its
 * centre at x = (j - (n-1)/2) * pitch, y = (i - (n-1)/2) * pitch (row = y, as in
 * the .npy files). Planes: input (the digit aperture) -> gap 0 -> layer 1 ->
 * gap 1 -> ... -> layer L -> gap L -> detector plane. */
#ifndef D2_MODEL_H
#define D2_MODEL_H

#include <complex.h>
#include <cjson/cJSON.h>

#include "core/err.h"

#define D2_MAX_LAYERS 16
#define D2_MAX_DET 10
#define D2_MAX_N 2048

typedef enum { LOSS_SOFTMAX = 0, LOSS_MSE = 1 } d2_loss;

typedef struct d2_geom {
    double wavelength_mm;            /* free-space wavelength (c / f) */
    double pitch_mm;                 /* neuron pitch, same on every plane */
    int n;                           /* neurons per side */
    int layers;                      /* 1..D2_MAX_LAYERS */
    double gap_mm[D2_MAX_LAYERS + 1];/* gap k: plane k -> plane k+1 (0 = input) */
    int pad;                         /* FFT size = pad * n (>= 2) */
    double aperture_mm;              /* side of the square the 28x28 image fills */
    int ndet;                        /* detector regions (10) */
    double det_size_mm;              /* side of each square detector */
    double det_x_mm[D2_MAX_DET], det_y_mm[D2_MAX_DET]; /* detector centres */
    /* Material coupling: amplitude exp(-2 pi kappa h / lambda) with
     * h = base + (phi mod 2pi) lambda / (2 pi (index - 1)). */
    int coupled;
    double index, kappa, base_mm;
    double max_relief_mm;  /* > 0: phases limited to the relief this allows */
} d2_geom;

typedef struct d2_train_opts {
    char dataset[16];      /* "mnist" or "fashion" */
    d2_loss loss;
    double temperature;    /* softmax temperature on normalised energies */
    double lr;             /* Adam learning rate (rad per step scale) */
    double lr_decay;       /* multiply lr by this each epoch */
    int batch;
    int epochs;
    unsigned long seed;
    int train_limit;       /* 0 = all training images */
    int test_limit;        /* 0 = all test images */
    /* fabrication-aware training (0 = off) */
    double jitter_xy_mm, jitter_z_mm, jitter_rot_deg;
    int quant_levels;      /* phase levels per 2 pi, 0 = continuous */
    double quant_z_step_mm;/* or quantise the implied thickness to this step */
} d2_train_opts;

/* A model: geometry + per-layer phase (float radians, n*n, row-major), and an
 * optional per-layer amplitude (NULL = 1, i.e. phase-only or the coupled
 * amplitude derived from the phase when g.coupled). */
typedef struct d2_model {
    d2_geom g;
    d2_train_opts t;
    float *phase[D2_MAX_LAYERS];
    float *amp[D2_MAX_LAYERS];
    cJSON *history;        /* array of per-epoch objects, owned; may be NULL */
    cJSON *init;           /* the model it was started from (--init): its path,
                            * training, history and accuracy; owned; may be NULL */
    double test_accuracy;  /* < 0 when not evaluated */
    double train_seconds;
} d2_model;

/* Default geometry: Lin et al. 2018 (0.4 THz, 0.4 mm pitch, 5 x 200 x 200,
 * 30 mm gaps, 3-4-3 detectors) and default training options. */
void geom_default(d2_geom *g);
void train_opts_default(d2_train_opts *t);
/* Places the 10 detectors in the 3-4-3 layout, rows `row_mm` apart, columns
 * `col_mm` apart, each side size_mm. */
void geom_layout_343(d2_geom *g, double size_mm, double row_mm, double col_mm);

/* Memory a network needs (bytes, an estimate within some 10 %): n x n
 * neurons (a double, so absurd sizes can be reported), L layers, FFT
 * padding pad, `threads` training workers. */
double geom_memory_bytes(double n, int layers, int pad, int threads);
#define D2_MEMORY_LIMIT 16e9 /* bytes: geom_validate refuses networks that
                                4 workers could not train within it */
/* Fails with D2_EIO when g with `threads` workers needs more memory than
 * this machine has (physical memory), naming both figures; 0 otherwise. */
int geom_check_memory(const d2_geom *g, int threads, d2_err *e);
/* 1 when a model of geometry `from` can start training one of `cfg` (same
 * layers, neurons, pitch, wavelength and gaps); else 0 with the first
 * difference, naming the config key, in why. */
int geom_same_optics(const d2_geom *from, const d2_geom *cfg, char *why, size_t cap);

/* Checks a geometry for physical sense before any work: pitch, wavelength,
 * n, memory, detectors inside the plane and not overlapping, and that a
 * pixel diffracts light far enough to reach the next layer. Messages name the
 * config key (file is used as the prefix). */
int geom_validate(const d2_geom *g, const char *file, d2_err *e);

/* Reads a training config or a model.json's geometry/input/detector/material/
 * training sections into g and t (unknown keys are errors). */
int config_read(const char *path, const cJSON *root, d2_geom *g, d2_train_opts *t, d2_err *e);
/* Builds the JSON of g and t (sections "geometry", "input", "detector",
 * "material", "training"); caller owns the result. */
cJSON *config_to_json(const d2_geom *g, const d2_train_opts *t);
/* What model.json records of a model another was started from (train --init):
 * its folder, training settings, per-epoch history, accuracy and time, and its
 * own provenance. */
cJSON *model_provenance(const d2_model *m, const char *dir);

/* Allocates phase maps (zero) for every layer. Returns 0 or D2_EIO. */
int model_alloc(d2_model *m, d2_err *e);
/* Loads DIR/model.json and its layerK.npy files (names checked to stay in
 * DIR; phases must be finite and n x n). */
int model_load(const char *dir, d2_model *m, d2_err *e);
/* Saves DIR/model.json, DIR/layerK.npy (phase wrapped to [0, 2pi)) and
 * DIR/layerK.png previews; every file atomic. Creates DIR. */
int model_save(const char *dir, const d2_model *m, d2_err *e);
void model_free(d2_model *m);

/* Resamples a rows x cols grey image (0..1) onto the n x n input plane as an
 * amplitude aperture of side aperture_mm centred on the axis (bilinear on the
 * image's pixel centres; zero outside). out has n*n floats. */
void input_from_image(const d2_geom *g, const float *img, int rows, int cols, float *out);
void input_from_u8(const d2_geom *g, const unsigned char *img, int rows, int cols, float *out);

/* Phase step (rad) that quantisation-aware training and its saved model use:
 * 2 pi / quant_levels, or the phase of one z step of material,
 * 2 pi (index - 1) z_step / lambda; 0 when neither is set. */
double train_phase_step(const d2_geom *g, const d2_train_opts *t);
/* Largest phase the material relief allows (2 pi when unlimited). */
double geom_max_phase(const d2_geom *g);

/* Detector region of detector k in pixel units: rows [*r0, *r1), cols [*c0, *c1). */
void geom_det_rect(const d2_geom *g, int k, int *r0, int *r1, int *c0, int *c1);

#endif
