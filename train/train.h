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
 * layerK.npy, layerK.png). With ro->resume, restores phases, Adam state, RNG
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
 * provenance. */
int train_init_from(d2_model *m, const char *init_dir, const char *cfg_name, d2_err *e);

typedef struct eval_result {
    int count;                 /* test images evaluated */
    int correct;
    double accuracy;           /* correct / count */
    int class_count[D2_MAX_DET], class_correct[D2_MAX_DET];
    int confusion[D2_MAX_DET][D2_MAX_DET]; /* [true][predicted] */
    double efficiency;         /* mean (sum of detector energies / input energy) */
    double output_efficiency;  /* mean (energy on the output plane / input energy) */
} eval_result;

/* Evaluates a model on the first `limit` test images (0 = all) of its data
 * set. If png_path is not NULL, writes a montage of the output intensity of
 * the first few test images with the detector squares outlined. */
int eval_model(const d2_model *m, const char *data_dir, int limit, int threads,
               const char *png_path, FILE *progress, eval_result *r, d2_err *e);

/* Evaluates an already configured network on a data set (used by eval,
 * tolerance and mask). `det_out`, if not NULL, receives count x ndet
 * detector energies. */
typedef struct d2_net d2_net;
int eval_net(d2_net *net, const d2_dataset *ds, int limit, d2_pool *pool,
             FILE *progress, eval_result *r, float *det_out, d2_err *e);

/* The result as JSON: accuracy, per-class accuracy, confusion matrix,
 * efficiencies. Caller owns it. */
cJSON *eval_to_json(const eval_result *r, int ndet);

/* Index of the largest detector energy. */
int eval_argmax(const float *det, int ndet);

#endif
