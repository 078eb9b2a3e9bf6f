/* The thick-plate model's interface to the network (optics/net.c); private
 * to optics/. The public declarations are at the end of optics/optics.h. */
#ifndef D2_THICK_H
#define D2_THICK_H

#include <complex.h>

#include "optics/optics.h"

typedef struct thick thick;

/* Sub-pixel plans and workspaces for g (thick) and `threads` callers; every
 * plate starts empty (no material). Makes FFTW plans: call it holding the
 * planner lock. NULL with e filled on failure. */
thick *thick_new(const d2_geom *g, int threads, d2_err *e);
void thick_free(thick *t);

/* Sets plate l (see net_set_heights). Returns 1 when what the gaps beside
 * the plate fold in (slab, half slices, reference media, Fresnel) changed,
 * 0 when not, or a negative code. */
int thick_set_heights(thick *t, int l, const float *h, double slab_mm, double top_mm, d2_err *e);
/* Plate l from a transmission: h = base + wrap(arg t) P / (2 pi) in the
 * fixed plate [base, base + relief limit]. Returns 1 / 0 as above, or a
 * negative code (memory). */
int thick_set_from_t(thick *t, int l, const float complex *tr, d2_err *e);
/* Rebuilds masks and slice propagators for another wavelength; 1 when it
 * changed. */
int thick_set_wavelength(thick *t, double wavelength_mm);

/* Transfer function of gap k (air z_air at wavelength lam on the p x p gap
 * grid, asm_transfer's scaling) with the slabs, half slices and Fresnel
 * factors of the plates beside it folded in. */
void thick_transfer(const thick *t, int k, float complex *H, int p, double pitch_mm, double lam,
                    double z_air);

/* The relief of plate l on the n x n field in w (row stride `stride`),
 * in place. With store set, keeps what thick_adjoint needs (thread tid);
 * returns a negative code when that memory cannot be had. */
int thick_forward(thick *t, int l, float complex *w, int stride, int tid, int store, d2_err *e);
/* Adjoint of thick_forward for the field gradient in w (dL/dout* in,
 * dL/din* out) and the height gradient carried into gt through tr (see
 * optics.h). Needs the preceding thick_forward with store on thread tid. */
void thick_adjoint(thick *t, int l, float complex *w, int stride, int tid,
                   const float complex *tr, float complex *gt);

void thick_plate(const thick *t, int l, double *slab_mm, double *top_mm, int *slices,
                 double *dz_mm);

#endif
