/* d2fab train: the forward model and its adjoint on FFTW.
 *
 * A d2_net owns the FFTW plans (made once per size, wisdom kept in
 * $D2FAB_WISDOM or ~/.cache/d2fab/wisdom-fftwf), the band-limited
 * angular-spectrum transfer function of every gap, the complex transmission
 * of every layer and one workspace per thread. net_infer and net_grad may be
 * called concurrently with different tid values. */
#ifndef D2_NET_H
#define D2_NET_H

#include <complex.h>

#include "core/util.h"
#include "train/model.h"

typedef struct d2_net d2_net;

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

/* Loss and dLoss/dE for detector energies E (for tests). */
double net_loss(const float *det, int ndet, int label, d2_loss loss, double temperature,
                double *dl_de);

/* Plain free-space propagation of a complex n x n field over z_mm with the
 * band-limited angular spectrum (zero-padded to pad*n). One-off use (the
 * `propagate` command and tests): plans are made on each call. */
int asm_propagate(float complex *field, int n, double pitch_mm, double wavelength_mm, double z_mm,
                  int pad, d2_err *e);

/* Fills H (p*p, FFT order) with the band-limited transfer function
 * exp(i 2 pi z sqrt(1/lambda^2 - fx^2 - fy^2)) for a p x p grid of pitch dx,
 * zero for evanescent and band-limited-out frequencies, and scaled by 1/(p*p)
 * so an unnormalised forward + backward FFT pair applies it exactly. */
void asm_transfer(float complex *H, int p, double pitch_mm, double wavelength_mm, double z_mm);

#endif
