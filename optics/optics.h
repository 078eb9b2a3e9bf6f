/* d2fab optics: the optical model every stage shares (train, eval, export
 * loading, mask re-simulation, tolerance): geometry, detectors and materials,
 * model files, the band-limited angular-spectrum propagator, the network
 * forward model and its adjoint on FFTW, and perturbations of the stack. It
 * knows nothing of command lines. */
#ifndef D2_OPTICS_H
#define D2_OPTICS_H

#include <complex.h>
#include <cjson/cJSON.h>

#include "core/err.h"
#include "core/util.h"
#include "core/idx.h"

/* The diffractive network: geometry, model files.
 *
 * Coordinates: the optical axis is z; every plane is an n x n grid of square
 * pixels of pitch pitch_mm centred on the axis. Pixel (row i, column j) has its
 * centre at x = (j - (n-1)/2) * pitch, y = (i - (n-1)/2) * pitch (row = y, as in
 * the .npy files). Planes: input (the digit aperture) -> gap 0 -> layer 1 ->
 * gap 1 -> ... -> layer L -> gap L -> detector plane. */

#define D2_MAX_LAYERS 16
#define D2_MAX_DET 20   /* detector regions: 10 classes, two each when differential */
#define D2_MAX_CLASS 10 /* classes (digits) */
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
    int ndet;                        /* detector regions (10, or 20 when differential) */
    int scheme;                      /* D2_DETECT_SINGLE or D2_DETECT_DIFF (detect.c) */
    double det_size_mm;              /* side of each square detector */
    double det_x_mm[D2_MAX_DET], det_y_mm[D2_MAX_DET]; /* detector centres */
    /* Material coupling: amplitude exp(-2 pi kappa h / lambda) with
     * h = base + (phi mod 2pi) lambda / (2 pi (index - 1)). */
    int coupled;
    double index, kappa, base_mm;
    double max_relief_mm;  /* > 0: phases limited to the relief this allows */
    /* Optical model of the plates ("Thick plates" at the end of this header):
     * optics 0 (D2_OPTICS_THIN) is the phase screen at each datum face with
     * gaps datum to datum; D2_OPTICS_THICK makes gap_mm air gaps between plates. */
    int optics;
    int relief_side;       /* thick: D2_RELIEF_DETECTOR or D2_RELIEF_SOURCE */
    double slice_mm;       /* thick: largest relief slice, 0 = lambda / 10 */
    int subpix;            /* thick: sub-pixels per neuron side, 0 = 2 */
    int no_fresnel;        /* thick: 1 leaves out the Fresnel transmission of the faces */
    int guard;             /* thick: guard band in sub-pixels each side, 0 = auto */
    /* Illumination of the input plane (config "input.illumination"): a
     * plane wave, a Gaussian beam with its waist on the input plane, or a
     * point source illum_distance_mm before it. */
    int illum;             /* D2_ILLUM_PLANE (0), D2_ILLUM_GAUSSIAN, D2_ILLUM_POINT */
    double illum_waist_mm; /* Gaussian: 1/e amplitude (1/e^2 intensity) radius */
    double illum_distance_mm; /* point source: distance to the input plane */
} d2_geom;

typedef struct d2_train_opts {
    char dataset[16];      /* "mnist", "fashion", "folder" or "idx" */
    d2_data_paths data;    /* folder / idx: absolute paths (config "input" keys) */
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
    double efficiency_weight; /* > 0: adds w (1 - detector efficiency) to the loss */
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
    float *height[D2_MAX_LAYERS]; /* printed heights (mm, incl. base) when loaded
                                   * from an export, else NULL; owned */
} d2_model;

/* Default geometry: Lin et al. 2018 (0.4 THz, 0.4 mm pitch, 5 x 200 x 200,
 * 30 mm gaps, 3-4-3 detectors) and default training options. */
void geom_default(d2_geom *g);
void train_opts_default(d2_train_opts *t);

/* Detection schemes (optics/detect.c). Detector k collects the energy E_k
 * (fraction of the input energy) of its square. With "scheme": "single"
 * there is one detector per class and the class scores are E_c / sum E;
 * with "differential" (Li et al., Adv. Photonics 2019) detectors 0..C-1 are
 * the + and C..2C-1 the - detectors of the C classes, and the score of class
 * c is (E_c+ - E_c-) / (E_c+ + E_c-). The prediction is the largest score.
 * Detector efficiency is sum E over all detectors. */
enum { D2_DETECT_SINGLE = 0, D2_DETECT_DIFF = 1 };

/* Places the 10 detectors in the 3-4-3 layout, rows `row_mm` apart, columns
 * `col_mm` apart, each side size_mm (the single scheme). */
void geom_layout_343(d2_geom *g, double size_mm, double row_mm, double col_mm);
/* Turns g's ndet single detectors into ndet pairs (the differential scheme):
 * class c's + detector stays where its single detector was (so a single
 * model can start a differential one), its - detector is (dx, dy) from it. */
void geom_layout_pairs(d2_geom *g, double dx_mm, double dy_mm);
/* Classes: ndet (single) or ndet / 2 (differential). */
int geom_classes(const d2_geom *g);
/* "single" or "differential". */
const char *detect_scheme_name(const d2_geom *g);
/* Sum of the detector energies (the detector efficiency of one image). */
double det_total(const d2_geom *g, const float *det);
/* Class scores (geom_classes values) of detector energies det. */
void det_scores(const d2_geom *g, const float *det, double *score);
/* Predicted class: the largest score (the first of equals). */
int det_predict(const d2_geom *g, const float *det);
/* Winning score minus the second score (>= 0). */
double det_margin(const d2_geom *g, const float *det);
/* A detector's name for plots and plates: "3", or "3+" / "3-". */
void det_name(const d2_geom *g, int k, char *buf, size_t cap);
/* Loss of detector energies det for class `label` and dL/dE_k (ndet values)
 * in dl_de (may be NULL): softmax cross-entropy on score / temperature, or
 * the squared distance of the scores to the one-hot target; eff_weight > 0
 * adds eff_weight * (1 - sum E), a reward for light on the detectors. */
double net_loss(const d2_geom *g, const float *det, int label, d2_loss loss, double temperature,
                double eff_weight, double *dl_de);
/* Reads the "detector" section (NULL: defaults): scheme ("single" or
 * "differential"), layout ("3-4-3": size_mm, row_pitch_mm, column_pitch_mm,
 * and for differential pair_offset_mm [dx, dy], default [0, row_pitch / 2];
 * "custom": centers_mm, + detectors then - detectors when differential).
 * Messages name path and the key. */
int detector_read(const char *path, const cJSON *det, d2_geom *g, d2_err *e);
/* The "detector" section of g (scheme, size, every centre). Caller owns it. */
cJSON *detector_to_json(const d2_geom *g);

/* Memory a network needs (bytes, an estimate within some 10 %): n x n
 * neurons (a double, so absurd sizes can be reported), L layers, FFT
 * padding pad, `threads` training workers. */
double geom_memory_bytes(double n, int layers, int pad, int threads);
#define D2_MEMORY_LIMIT 16e9 /* bytes: geom_validate refuses networks that
                                4 workers could not train within it */
/* Fails with D2_EIO when g with `threads` workers needs more memory than
 * this machine has (physical memory), naming both figures; 0 otherwise.
 * Thick plates count their buffers, the slices training keeps included
 * (thick_memory_bytes: about 100 MB per worker at 5 x 200 x 200). */
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
/* The same for the config file at path. */
int config_load(const char *path, d2_geom *g, d2_train_opts *t, d2_err *e);
/* Builds the JSON of g and t (sections "geometry", "input", "detector",
 * "material", "training"); caller owns the result. */
cJSON *config_to_json(const d2_geom *g, const d2_train_opts *t);

/* Allocates phase maps (zero) for every layer. Returns 0 or D2_EIO. */
int model_alloc(d2_model *m, d2_err *e);
/* Loads DIR/model.json and its layerK.npy files (names checked to stay in
 * DIR; phases must be finite and n x n). */
int model_load(const char *dir, d2_model *m, d2_err *e);
/* Saves DIR/model.json, DIR/layerK.npy (phase wrapped to [0, 2pi)) and
 * DIR/layerK.png previews; every file atomic. Creates DIR. */
int model_save(const char *dir, const d2_model *m, d2_err *e);
void model_free(d2_model *m);

/* Illumination ("input.illumination" in configs and model.json). */
enum { D2_ILLUM_PLANE = 0, D2_ILLUM_GAUSSIAN = 1, D2_ILLUM_POINT = 2 };
/* The illumination field on the n x n input plane (pixel centres as above):
 * plane 1; Gaussian exp(-r^2 / w^2); point source (z / R) exp(i k (R - z)),
 * R = sqrt(r^2 + z^2), k = 2 pi / lambda: amplitude 1 on the axis. The
 * forward model multiplies every input by it. u holds n*n values. */
void illum_field(const d2_geom *g, float complex *u);
/* Reads "illumination" from the object inp, the config's section named in
 * messages ("input" in training configs; NULL or absent:
 * plane wave): {"type": "plane"}, {"type": "gaussian", "waist_mm": W} or
 * {"type": "point", "distance_mm": Z}; unknown keys and types fail naming
 * the key. */
int illum_read(const char *path, const char *section, const cJSON *inp, d2_geom *g, d2_err *e);
/* Part of geom_validate: a point source so close that its phase aliases on
 * g's pixel grid (or a waist <= 0) fails with D2_EINPUT naming the key. */
int illum_check(const d2_geom *g, const char *file, d2_err *e);
/* Adds "illumination" to the JSON object inp. */
void illum_to_json(const d2_geom *g, cJSON *inp);

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

/* Materials (optics/material.c): the physics of a relief plate, written once
 * for every stage. A plate of refractive index n (relative to air) and
 * extinction coefficient kappa, thickness h, delays light of free-space
 * wavelength lambda by the phase 2 pi (n - 1) h / lambda relative to air and
 * passes the amplitude exp(-2 pi kappa h / lambda); each air/material surface
 * reflects the power R = ((n - 1) / (n + 1))^2 at normal incidence. */

#define OPT_C_MM_THZ 0.299792458 /* speed of light in mm * THz: lambda_mm = c / f_thz */

/* lambda = c / f (mm from THz) and f = c / lambda (THz from mm). */
double opt_wavelength_mm(double frequency_thz);
double opt_frequency_thz(double wavelength_mm);
/* Material thickness for 2 pi of phase, lambda / (n - 1), mm. */
double opt_period_mm(double wavelength_mm, double index);
/* Thickness per radian of phase, lambda / (2 pi (n - 1)), mm. */
double opt_mm_per_rad(double wavelength_mm, double index);
/* Phase of thick_mm of material, 2 pi (n - 1) h / lambda, rad (not wrapped). */
double opt_phase_of_thickness(double thick_mm, double wavelength_mm, double index);
/* Amplitude attenuation per mm, 2 pi kappa / lambda: amplitude exp(-a h). */
double opt_attenuation_per_mm(double wavelength_mm, double kappa);
/* Amplitude through thick_mm of material, exp(-2 pi kappa h / lambda). */
double opt_amplitude(double thick_mm, double wavelength_mm, double kappa);
/* Fresnel power reflection at one air/material surface, normal incidence. */
double opt_fresnel_r(double index);
/* The thickness a phase map asks for: base_mm + (phase mod 2 pi) * mm_per_rad
 * (mm_per_rad from opt_mm_per_rad). */
double opt_thickness_mm(double phase_rad, double base_mm, double mm_per_rad);
/* Heights h_mm (count values, the whole thickness) -> phase
 * 2 pi (n - 1) h / lambda wrapped to [0, 2 pi) and amplitude
 * exp(-2 pi kappa h / lambda). Either output may be NULL. */
void opt_heights_to_transmission(const float *h_mm, size_t count, double index, double kappa,
                                 double wavelength_mm, float *phase, float *amp);

/* the forward model and its adjoint on FFTW.
 *
 * A d2_net owns the FFTW plans (made once per size, wisdom kept in
 * $D2FAB_WISDOM or ~/.cache/d2fab/wisdom-fftwf), the band-limited
 * angular-spectrum transfer function of every gap, the complex transmission
 * of every layer and one workspace per thread. net_infer and net_grad may be
 * called concurrently with different tid values. */

typedef struct d2_net d2_net;

/* The FFTW wisdom file the networks plan from: $D2FAB_WISDOM, else
 * $HOME/.cache/d2fab/wisdom-fftwf. */
void net_wisdom_path(char *buf, size_t cap);

/* Builds plans and transfer functions for g, with workspaces for `threads`
 * concurrent callers. Returns NULL and fills e on failure. */
d2_net *net_new(const d2_geom *g, int threads, d2_err *e);
void net_free(d2_net *net);
const d2_geom *net_geom(const d2_net *net);

/* Sets layer l's transmission from a phase map (and amplitude map, or NULL:
 * unit amplitude, or the material-coupled amplitude when g->coupled). */
void net_set_phase(d2_net *net, int l, const float *phase, const float *amp);
/* Transmission of a phase map: amp * exp(i phi) with phi quantised to
 * step_rad (0: not quantised) and amp the given map, 1, or the
 * material-coupled amplitude when g->coupled and amp is NULL. */
void net_phase_to_t(const d2_geom *g, const float *phase, const float *amp, float step_rad,
                    size_t count, float complex *t);
/* Sets layer l's complex transmission directly (n*n values, copied). */
void net_set_transmission(d2_net *net, int l, const float complex *t);
/* Sets all layers of a model. */
void net_set_model(d2_net *net, const d2_model *m);
/* Recomputes the transfer function of gap k for distance z_mm (axial
 * perturbation) at wavelength_mm (0 = the geometry's). */
void net_set_gap(d2_net *net, int k, double z_mm, double wavelength_mm);

/* Forward pass of one input amplitude (n*n floats). Fills det[ndet] with the
 * optical energy in each detector (input energy normalised to 1: sum of
 * in^2 = 1 maps to 1) and, if intensity is not NULL, the n*n output
 * intensity. Returns the total energy reaching the output plane. */
double net_infer(d2_net *net, const float *in, float *det, float *intensity, int tid);

/* Forward + adjoint pass for one sample: adds dLoss/dt* (the Wirtinger
 * derivative with respect to the conjugate of each layer's transmission, n*n
 * complex per layer) into gt[l] and returns the loss; det receives the
 * detector energies. Being linear in the per-sample terms, gt can be summed
 * over a batch and turned into phase gradients once with net_phase_grad. */
double net_grad(d2_net *net, const float *in, int label, d2_loss loss, double temperature,
                float complex **gt, float *det, int tid);

/* Phase gradient from dL/dt*: grad = 2 Re(conj(gt) t (i - beta)), where t is
 * the transmission the phases produced and beta = kappa / (index - 1) for a
 * material-coupled amplitude (0 for phase-only, see net_phase_beta). */
void net_phase_grad(const float complex *gt, const float complex *t, float beta, size_t count,
                    float *grad);
float net_phase_beta(const d2_geom *g);
/* The current transmission of layer l (n*n, owned by the network). */
const float complex *net_transmission(const d2_net *net, int l);

/* Propagates field (n*n complex, in place) over gap k of the network with
 * the network's own pruned, zero-padded angular-spectrum propagator and
 * transfer function (net_set_gap), as net_infer does between layers: the
 * field outside the n x n window is dropped. For tests and one-off use;
 * tid as for net_infer. */
void net_propagate(d2_net *net, int k, float complex *field, int tid);

/* The training loss of net (its geometry's scheme, the efficiency weight set
 * by net_set_efficiency_weight) is net_loss; see "Detection schemes". */
void net_set_efficiency_weight(d2_net *net, double w);

/* Plain free-space propagation of a complex n x n field over z_mm with the
 * band-limited angular spectrum: zero-padded to pad*n, one full 2-D FFT pair,
 * cropped back to n x n. The reference the pruned propagator of the network
 * (net_propagate) is tested against; one-off use (the `propagate` command and
 * tests): plans are made on each call. */
int asm_propagate(float complex *field, int n, double pitch_mm, double wavelength_mm, double z_mm,
                  int pad, d2_err *e);

/* Fills H (p*p, FFT order) with the band-limited transfer function
 * exp(i 2 pi z sqrt(1/lambda^2 - fx^2 - fy^2)) for a p x p grid of pitch dx,
 * zero for evanescent and band-limited-out frequencies, and scaled by 1/(p*p)
 * so an unnormalised forward + backward FFT pair applies it exactly. */
void asm_transfer(float complex *H, int p, double pitch_mm, double wavelength_mm, double z_mm);

/* perturbations of the optical stack, shared by fabrication-
 * aware training and the tolerance simulator. They act on a layer's complex
 * transmission and on the gap distances, so the one forward model (net.h)
 * serves both.
 *
 * A displaced layer's transmission on the fixed simulation grid is
 * out(x) = t(R^-1 (x - d)): the printed pattern moved by d = (dx, dy) and
 * rotated by `rot_deg` (counter-clockwise, about the plane centre). Sampled
 * bilinearly in the complex values of t on its pixel centres, zero outside
 * the layer (the opaque frame). A shift by a whole number of pixels with no
 * rotation is exactly the rolled layer with zero fill; a fractional shift
 * area-weights the neighbouring pixels, as a box detector of one pixel would. */

typedef struct layer_pose {
    double dx_mm, dy_mm; /* lateral displacement of the layer */
    double dz_mm;        /* axial displacement (+ = towards the detector) */
    double rot_deg;      /* in-plane rotation, counter-clockwise */
} layer_pose;

/* out = t displaced by pose (dz ignored here: see perturb_gaps). n x n. out
 * must not alias t. */
void perturb_transform(const float complex *t, int n, double pitch_mm, const layer_pose *pose,
                       float complex *out);

/* The same for a layer printed at scale times its design size (pixel-pitch
 * error, shrinkage: scale 0.998 is 0.2 % small), scaled about the plane
 * centre before the rotation and shift: out(x) = t(R^-1 (x - d) / scale).
 * scale must be > 0; 1 gives exactly perturb_transform. */
void perturb_transform_scaled(const float complex *t, int n, double pitch_mm,
                              const layer_pose *pose, double scale, float complex *out);

/* Adjoint of perturb_transform (its transpose; the weights are real): adds
 * to gt the gradient with respect to t given the gradient gout with respect
 * to out. */
void perturb_transform_adjoint(const float complex *gout, int n, double pitch_mm,
                               const layer_pose *pose, float complex *gt);

/* Gap distances of a stack whose layers are displaced axially: layer l sits
 * between gap l and gap l + 1, so its dz lengthens gap l and shortens gap
 * l + 1. gaps has g->layers + 1 entries. */
void perturb_gaps(const d2_geom *g, const layer_pose *poses, double *gaps);

/* True when the pose moves nothing (all components zero). */
int perturb_is_identity(const layer_pose *pose);

/* Phase quantisation: phase rounded to the nearest multiple of step_rad after
 * wrapping to [0, 2 pi); step_rad <= 0 leaves it unchanged. */
float perturb_quantize_phase(float phase, float step_rad);

/* Draws a pose with each component uniform in +-max (max_xy_mm for x and y,
 * max_z_mm, max_rot_deg). */
void perturb_draw_uniform(d2_rng *r, double max_xy_mm, double max_z_mm, double max_rot_deg,
                          layer_pose *pose);

/* ---------------------------------------------------------------------------
 * Thick plates (optics/thick.c)
 *
 * A printed plate is a flat slab of material (index + i kappa relative to
 * air) with pillars on one side: heights h(x, y) in mm measured from the flat
 * face, base included. With g->optics == D2_OPTICS_THICK the network models
 * every layer as such a plate instead of a phase screen:
 *   - the part of the plate every pixel has (the slab, up to min h or the
 *     given slab) is a homogeneous medium, propagated by the exact angular
 *     spectrum kz = 2 pi sqrt((n + i kappa)^2 / lambda^2 - f^2), folded into
 *     the adjacent air gap's transfer function (no extra FFT);
 *   - the relief above it is cut into K equal slices of at most
 *     thick_slice_max (lambda / 10), on s x s sub-pixels per neuron with a
 *     guard band of thick_guard sub-pixels instead of zero padding. Each
 *     slice is one step of the wave propagation method: the field travels dz
 *     in air and in material (exact angular spectra, evanescent waves
 *     decaying, absorption in the material's) and each sub-pixel takes
 *     (1 - f) of the one and f of the other, f = clamp((h - z_k) / dz, 0, 1)
 *     its neuron's fill, so light inside a pillar diffracts as in the
 *     material. The neuron field enters band-limited (Fourier interpolation)
 *     and leaves with the Fourier coefficients the neuron grid holds;
 *   - the plate is then out = teq u + D (P - T) U u: teq the phase screen
 *     exp(i k0 (n - 1 + i kappa) (h - slab)) on the neuron grid, P the
 *     slices and T the same slices without diffraction on the sub-pixel grid
 *     (U, D the resampling), so a vanishing relief is exactly the screen;
 *   - both faces transmit the Fresnel amplitude 2 / (1 + n) and 2 n / (1 + n)
 *     (normal incidence; one factor per plate in the gap before it).
 * Geometry in thick mode: gap_mm[k] is the AIR gap between the faces of the
 * plates (input plane -> entry face of plate 1, exit face of plate k -> entry
 * face of plate k + 1, exit face of plate L -> detector). A plate's thickness
 * is its top (max h, or the top given to net_set_heights). Thin models and
 * exports state gaps datum to datum (the flat faces, as mesh builds them):
 * thick_air_gaps converts. Beyond the n x n plate the field is dropped (the
 * frame is opaque), as in the thin model. Reflections between faces are not
 * modelled. */
enum { D2_OPTICS_THIN = 0, D2_OPTICS_THICK = 1 };
enum { D2_RELIEF_DETECTOR = 0, D2_RELIEF_SOURCE = 1 };

/* Largest slice (mm), sub-pixels per neuron side, guard band (sub-pixels each
 * side) and the sub-pixel FFT size a thick network of g uses. */
double thick_slice_max(const d2_geom *g);
int thick_subpix(const d2_geom *g);
int thick_guard(const d2_geom *g);
int thick_fft_size(const d2_geom *g);

/* Thick network: sets layer l from printed heights h_mm (n*n, mm from the
 * flat face, base included). slab_mm: the homogeneous part (<= min h), top_mm:
 * the plate thickness (>= max h); a negative value takes min h / max h. The
 * layer's transmission (net_transmission) becomes the equivalent phase screen
 * exp(i 2 pi (index - 1) h / lambda). Fails with D2_EINPUT on a thin network,
 * a non-finite or negative height or heights outside [slab, top]. */
int net_set_heights(d2_net *net, int l, const float *h_mm, double slab_mm, double top_mm,
                    d2_err *e);
/* In thick mode net_set_phase / net_set_transmission set the heights
 * h = base + wrap(arg t) lambda / (2 pi (index - 1)) in the fixed plate
 * [base, base + relief limit] (g->max_relief_mm or lambda / (index - 1)), and
 * net_grad's gt receives 0.5 i t (dL/dphi) / |t|^2 through those heights, so
 * that net_phase_grad (any beta) returns dL/dphi: training works unchanged. */

/* The plate of layer l as modelled: slab and top (mm), slices and their
 * thickness. Zeros for a thin network. */
void net_thick_plate(const d2_net *net, int l, double *slab_mm, double *top_mm, int *slices,
                     double *dz_mm);

/* Heights of a phase map (mm): base + wrap(phi) lambda / (2 pi (index - 1)). */
void thick_heights_from_phase(const d2_geom *g, const float *phase, size_t count, float *h);
/* Thickness of a plate trained thick: base + the relief limit (g->max_relief_mm
 * or lambda / (index - 1)), mm. */
double thick_plate_mm(const d2_geom *g);
/* Memory the thick-plate buffers of g take with `threads` workers (bytes, an
 * estimate within some 10 %), training (the slices kept for the adjoint) or
 * not; 0 for a thin geometry. geom_check_memory adds it. */
double thick_memory_bytes(const d2_geom *g, int threads, int train);

/* Air gaps (g->layers + 1) of a stack whose flat (datum) faces are
 * datum_gaps apart, plates plate_mm thick (g->layers values) with the relief
 * on g->relief_side: the datum is the entry face when the relief faces the
 * detector, the exit face otherwise. Fails (D2_EINPUT, naming the gap) when a
 * plate does not fit. thick_datum_gaps is the inverse. */
int thick_air_gaps(const d2_geom *g, const double *datum_gaps, const double *plate_mm,
                   double *air_gaps, d2_err *e);
void thick_datum_gaps(const d2_geom *g, const double *air_gaps, const double *plate_mm,
                      double *datum_gaps);

/* Turns a thin model or export (gaps datum to datum) into the thick model of
 * the same assembly: m->height from the export (or from the phases), plates
 * as thick as their tallest pillar, gaps converted to air gaps. With
 * correct_spacing, each gap after a plate is first lengthened by the plate's
 * paraxial shortening (mean h)(1 - 1/index) (a stack re-spaced for thick
 * plates). A model already thick is left as it is. Fails like
 * thick_air_gaps, or D2_EIO (memory). */
int model_make_thick(d2_model *m, int correct_spacing, d2_err *e);
/* The other way: a thick model (air gaps) as phase screens at the datum faces
 * of the same assembly, gaps datum to datum (air gap plus plate: its tallest
 * pillar from m->height, else base + relief limit). For comparison only: the
 * thin model of a stack that was designed thick. Returns 1 when it converted,
 * 0 for a model already thin. */
int model_make_thin(d2_model *m);

/* "thin" or "thick". */
const char *optics_name(const d2_geom *g);
/* The "optics" section of model.json: model, and for thick plates relief
 * side, slice, sub-pixels, guard, Fresnel and what the gaps mean. Caller
 * owns it. */
cJSON *optics_to_json(const d2_geom *g);
/* Reads root's optional "optics" section into g (absent: thin). Messages
 * name path and the key. */
int optics_read(const char *path, const cJSON *root, d2_geom *g, d2_err *e);

/* Forward pass of a complex input field (n*n) to the complex field on the
 * detector plane (out, n*n, not normalised); returns the input energy. For
 * tests and tools that need a field rather than an aperture. */
double net_infer_field(d2_net *net, const float complex *in, float complex *out, int tid);

/* Calibration: derivatives of the detector energies (thin model only).
 * net_forward_keep runs the forward pass of one input (as net_infer, det
 * receives the energies) and keeps on workspace tid what the adjoint needs:
 * the field at each layer and the spectrum entering each gap. Fails with
 * D2_EINPUT on a thick network, D2_EIO out of memory. After it,
 * net_adjoint_det may be called any number of times on the same tid: for the
 * energy combination sum_k wdet[k] E_k it overwrites gt[l] (n*n per layer)
 * with the Wirtinger derivative d/dt_l* (so dX = 2 Re sum conj(gt) dt) and
 * gz[j] (g->layers + 1 values) with the derivative by gap j's distance,
 * per mm (the band limit held fixed). */
int net_forward_keep(d2_net *net, const float *in, float *det, int tid, d2_err *e);
void net_adjoint_det(d2_net *net, const double *wdet, float complex **gt, double *gz, int tid);

#endif
