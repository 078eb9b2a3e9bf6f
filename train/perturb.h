/* d2fab train: perturbations of the optical stack, shared by fabrication-
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
#ifndef D2_PERTURB_H
#define D2_PERTURB_H

#include <complex.h>

#include "core/util.h"
#include "train/model.h"

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

#endif
