/* d2fab train: training and evaluation of a diffractive network on MNIST or
 * Fashion-MNIST. */
#ifndef D2_TRAIN_H
#define D2_TRAIN_H

#include <stdio.h>

#include "core/idx.h"
#include "core/util.h"
#include "optics/optics.h"

/* Run-time settings that are not part of the model. */
typedef struct train_run_opts {
    const char *data_dir; /* folder with mnist/ and fashion/ (dataset_default_dir()) */
    int threads;          /* worker threads, <= 0: all cores */
    int resume;           /* continue from OUT/checkpoints/latest */
    FILE *progress;       /* progress bar / lines, NULL for silence */
    unsigned train_layers; /* bit l set: layer l + 1 is trained; 0: every layer. The
                            * others keep their phases (train --train-layers) */
    const layer_pose *poses; /* layers entries: train the stack displaced by these fixed
                              * poses (a calibrated twin, train --poses); NULL: none */
} train_run_opts;

/* Trains m (geometry and training options already set, phases allocated or
 * loaded) for m->t.epochs epochs, writing after every epoch a checkpoint
 * under out_dir/checkpoints/ and the current model into out_dir (model.json,
 * layerK.npy, layerK.png). Under K MPI ranks (collective) every rank takes a
 * fixed block of each batch, the phase gradients are summed over the ranks in
 * rank order, every rank makes the same Adam step, and only rank 0 writes;
 * the same config, seed, K and threads per rank give the same bits. With
 * ro->resume, restores phases, Adam state, RNG
 * and history from the last complete checkpoint and continues. Returns 0 or a
 * D2_E* code. */
int train_model(d2_model *m, const char *out_dir, const train_run_opts *ro, d2_err *e);

/* What model.json records of a model another was started from (train --init):
 * its folder, training settings, per-epoch history, accuracy and time, and its
 * own provenance. Caller owns the result; NULL when out of memory. */
cJSON *model_provenance(const d2_model *m, const char *dir);

/* Starts m (geometry and training options set, phases allocated) from the
 * phases of the model in init_dir (train --init): its optics must be those of
 * m (geom_same_optics; else D2_EINPUT naming the difference and cfg_name, the
 * config m came from), its phases are copied and m->init records its
 * provenance. A thin model into a thick config: its gaps (datum to datum)
 * are read as the air gaps of its assembly with the config's plates
 * (thick_plate_mm), which must be the config's gaps unless regap is set
 * (then the config's spacing is used as it is); model.json records both under
 * initialised_from.gaps. A thick model never starts a thin config. */
int train_init_from(d2_model *m, const char *init_dir, const char *cfg_name, int regap,
                    d2_err *e);
/* The same from a model already loaded (s0, not changed; init_dir names it).
 * An export loaded as a model (s0->height set) starts a thick config from
 * its heights: phase = 2 pi (h - base) / P, so the plates begin as printed
 * (phase offset and Z grid included); heights outside the config's plate
 * [base, thick_plate_mm] are refused. */
int train_init_model(d2_model *m, const d2_model *s0, const char *init_dir, const char *cfg_name,
                     int regap, d2_err *e);

typedef struct eval_result {
    int count;                 /* test images evaluated */
    int correct;
    double accuracy;           /* correct / count */
    int class_count[D2_MAX_CLASS], class_correct[D2_MAX_CLASS];
    int confusion[D2_MAX_CLASS][D2_MAX_CLASS]; /* [true][predicted] */
    double efficiency;         /* mean (sum of detector energies / input energy) */
    double output_efficiency;  /* mean (energy on the output plane / input energy) */
    /* The light budget over the test images (train/metrics.c): */
    double efficiency_p5;      /* 5th percentile of the detector efficiency */
    double background;         /* mean energy on the output plane outside the
                                * detectors / input energy */
    double background_fraction;/* mean of the same / energy on the output plane */
    double margin_mean;        /* mean winning score - second score (det_margin) */
    double margin_p5;          /* its 5th percentile */
} eval_result;

/* Per-image light figures for eval_result: light holds 3 x count floats
 * (efficiency, background, margin columns); eval_light_put stores image i's
 * from its detector energies det and its output-plane energy out_energy;
 * eval_light_finish fills r's light budget (sorting the columns);
 * eval_light_json adds it to o as "light". */
void eval_light_put(float *light, int count, int i, const d2_geom *g, const float *det,
                    double out_energy);
void eval_light_finish(eval_result *r, float *light, int count);
void eval_light_json(cJSON *o, const eval_result *r);
/* The q quantile (0..1) of v[0..count) (sorted in place; nearest rank). */
double eval_quantile(float *v, int count, double q);

/* Evaluates a model on the first `limit` test images (0 = all) of its data
 * set, split over the ranks of an MPI job (collective; rank 0 writes the
 * montage). If png_path is not NULL, writes a montage of the output intensity of
 * the first few test images with the detector squares outlined. */
int eval_model(const d2_model *m, const char *data_dir, int limit, int threads,
               const char *png_path, FILE *progress, eval_result *r, d2_err *e);

/* Evaluates an already configured network on a data set (used by eval,
 * tolerance and mask). `det_out`, if not NULL, receives count x ndet
 * detector energies. */
typedef struct d2_net d2_net;
int eval_net(d2_net *net, const d2_dataset *ds, int limit, d2_pool *pool,
             FILE *progress, eval_result *r, float *det_out, d2_err *e);

/* eval_net over the ranks of an MPI job (collective): each rank evaluates
 * its block of the images (d2_par_range) and every rank receives the whole
 * result, counts and energies summed in rank order. One process: eval_net. */
int eval_net_ranks(d2_net *net, const d2_dataset *ds, int limit, d2_pool *pool,
                   FILE *progress, eval_result *r, d2_err *e);

/* The result as JSON: accuracy, per-class accuracy, confusion matrix
 * (classes x classes: geom_classes), efficiencies and the light budget.
 * Caller owns it. */
cJSON *eval_to_json(const eval_result *r, int classes);

#endif
