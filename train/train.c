/* Trainer: Adam on the phases, a thread pool over the samples of a batch and
 * MPI ranks over shares of it (data-parallel). */
#include "train/train.h"

#include <complex.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "core/npy.h"
#include "core/par.h"
#include "core/util.h"
#include "optics/optics.h"

/* ---- training ----------------------------------------------------------- */

typedef struct adam {
    float *m[D2_MAX_LAYERS], *v[D2_MAX_LAYERS];
    long step;
} adam;

typedef struct train_job {
    d2_net *net;
    const d2_dataset *ds;
    const d2_model *model;
    const int *idx;     /* sample indices of this batch */
    int bsz;
    int threads;
    float complex ***grad; /* [thread][layer] n*n: dL/dt* summed over samples */
    float **in;         /* [thread] input plane */
    double *loss;       /* [thread] */
    int *correct;       /* [thread] */
} train_job;

/* Thread tid takes samples tid, tid + T, ... of the batch, in order, so the
 * floating-point sums do not depend on timing: the same seed and thread count
 * give the same model. */
static void train_part(void *arg, int part, int tid)
{
    (void)tid;
    train_job *j = arg;
    const d2_geom *g = net_geom(j->net);
    size_t px = (size_t)j->ds->rows * j->ds->cols;
    j->loss[part] = 0;
    j->correct[part] = 0;
    for (int b = part; b < j->bsz; b += j->threads) {
        int s = j->idx[b];
        float det[D2_MAX_DET];
        input_from_u8(g, j->ds->images + px * s, j->ds->rows, j->ds->cols, j->in[part]);
        j->loss[part] += net_grad(j->net, j->in[part], j->ds->labels[s], j->model->t.loss,
                                  j->model->t.temperature, j->grad[part], det, part);
        j->correct[part] += det_predict(g, det) == j->ds->labels[s];
    }
}

static int save_checkpoint(const char *out, const d2_model *m, const adam *a, int epoch,
                           const d2_rng *rng, d2_err *e)
{
    char dir[4096], path[4200], name[64];
    int rc, n = m->g.n, L = m->g.layers;
    size_t nn = (size_t)n * n, shape[3] = {(size_t)L, (size_t)n, (size_t)n};
    snprintf(name, sizeof name, "checkpoints/epoch-%04d", epoch);
    if ((rc = d2_path_join(dir, sizeof dir, out, name, e))) return rc;
    if ((rc = model_save(dir, m, e))) return rc;
    float *buf = d2_malloc(sizeof(float) * nn * L, "checkpoint", e);
    if (!buf) return D2_EIO;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (int l = 0; l < L; l++)
            memcpy(buf + nn * l, pass ? a->v[l] : a->m[l], sizeof(float) * nn);
        /* The unwrapped phases: the wrapped layerK.npy lose nothing optically
         * but Adam continues from the exact values. */
        snprintf(path, sizeof path, "%s/%s", dir, pass ? "adam_v.npy" : "adam_m.npy");
        rc = npy_write(path, NPY_F32, 3, shape, buf, e);
    }
    for (int l = 0; l < L && !rc; l++) memcpy(buf + nn * l, m->phase[l], sizeof(float) * nn);
    if (!rc) {
        snprintf(path, sizeof path, "%s/phase.npy", dir);
        rc = npy_write(path, NPY_F32, 3, shape, buf, e);
    }
    free(buf);
    if (rc) return rc;
    cJSON *st = cJSON_CreateObject();
    cJSON_AddNumberToObject(st, "epoch", epoch);
    cJSON_AddNumberToObject(st, "adam_step", (double)a->step);
    char hex[80];
    snprintf(hex, sizeof hex, "%016llx%016llx%016llx%016llx", (unsigned long long)rng->s[0],
             (unsigned long long)rng->s[1], (unsigned long long)rng->s[2],
             (unsigned long long)rng->s[3]);
    cJSON_AddStringToObject(st, "rng", hex);
    snprintf(path, sizeof path, "%s/state.json", dir);
    rc = cfg_write(path, st, e);
    cJSON_Delete(st);
    if (rc) return rc;
    /* The pointer is written last: a checkpoint counts once it names it. */
    if ((rc = d2_path_join(path, sizeof path, out, "checkpoints/latest", e))) return rc;
    snprintf(name, sizeof name, "epoch-%04d\n", epoch);
    if ((rc = d2_write_file(path, name, strlen(name), e))) return rc;
    if (epoch > 1) {
        /* Keep only the latest complete checkpoint. */
        char old[4200];
        snprintf(old, sizeof old, "%s/checkpoints/epoch-%04d", out, epoch - 1);
        char f[4400];
        const char *files[] = {"adam_m.npy", "adam_v.npy", "phase.npy", "state.json",
                               "model.json"};
        for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
            snprintf(f, sizeof f, "%s/%s", old, files[i]);
            remove(f);
        }
        for (int l = 1; l <= L; l++) {
            snprintf(f, sizeof f, "%s/layer%d.npy", old, l);
            remove(f);
            snprintf(f, sizeof f, "%s/layer%d.png", old, l);
            remove(f);
        }
        remove(old);
    }
    return 0;
}

/* The files a checkpoint folder holds: written by save_checkpoint. */
static int checkpoint_file(const char *name, void *ctx)
{
    static const char *const fixed[] = {"adam_m.npy", "adam_v.npy", "phase.npy", "state.json",
                                        "model.json"};
    (void)ctx;
    if (d2_is_temp_name(name)) return 1;
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if (!strcmp(name, fixed[i])) return 1;
    if (strncmp(name, "layer", 5) || name[5] < '1' || name[5] > '9') return 0;
    char *end;
    (void)strtol(name + 5, &end, 10);
    return !strcmp(end, ".npy") || !strcmp(end, ".png");
}

/* A fresh (not resumed) training removes an earlier run's checkpoints, so
 * checkpoints/ never holds two runs' epochs: the pointer first, then each
 * epoch-NNNN folder's own files and the folder if that empties it. Folders
 * that are links are refused, never followed. */
static int clear_checkpoints(const char *out_dir, d2_err *e)
{
    char dir[4096], path[4400];
    int rc;
    if ((rc = d2_path_join(dir, sizeof dir, out_dir, "checkpoints", e))) return rc;
    snprintf(path, sizeof path, "%s/latest", dir);
    if (unlink(path) != 0 && errno != ENOENT)
        return d2_fail(e, D2_EIO, "%s: cannot remove the earlier run's pointer: %s", path,
                       strerror(errno));
    DIR *d = opendir(dir);
    if (!d) return 0;
    rc = 0;
    for (struct dirent *de; !rc && (de = readdir(d));) {
        int ep;
        char tail;
        if (sscanf(de->d_name, "epoch-%d%c", &ep, &tail) != 1) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        rc = d2_dir_clear(path, 1, checkpoint_file, NULL, "earlier run's checkpoint", e);
        if (!rc) (void)rmdir(path); /* kept if it holds something else */
    }
    closedir(d);
    return rc;
}

static int load_checkpoint(const char *out, d2_model *m, adam *a, int *epoch, d2_rng *rng,
                           d2_err *e)
{
    char path[4400], dir[4200], *txt = NULL;
    size_t len;
    int rc;
    snprintf(path, sizeof path, "%s/checkpoints/latest", out);
    if ((rc = d2_read_file(path, 256, &txt, &len, e)))
        return d2_err_prefix(e, "--resume: no complete checkpoint in %s", out);
    txt[strcspn(txt, "\r\n")] = 0;
    /* The pointer names a folder inside checkpoints/, not a link out of it. */
    snprintf(dir, sizeof dir, "%s/checkpoints", out);
    if ((rc = d2_path_inside(dir, txt, "checkpoints/latest", e))) {
        free(txt);
        return rc;
    }
    snprintf(dir, sizeof dir, "%s/checkpoints/%s", out, txt);
    free(txt);
    d2_model ck;
    if ((rc = model_load(dir, &ck, e))) return rc;
    if (ck.g.n != m->g.n || ck.g.layers != m->g.layers) {
        model_free(&ck);
        return d2_fail(e, D2_EINPUT,
                       "%s: checkpoint has %d layers of %d x %d, the config %d of %d x %d", dir,
                       ck.g.layers, ck.g.n, ck.g.n, m->g.layers, m->g.n, m->g.n);
    }
    cJSON_Delete(m->history);
    m->history = ck.history;
    ck.history = NULL;
    if (ck.init) {
        cJSON_Delete(m->init);
        m->init = ck.init;
        ck.init = NULL;
    }
    m->train_seconds = ck.train_seconds;
    m->test_accuracy = ck.test_accuracy;
    model_free(&ck);
    int n = m->g.n, L = m->g.layers;
    size_t nn = (size_t)n * n;
    const char *names[3] = {"adam_m.npy", "adam_v.npy", "phase.npy"};
    for (int f = 0; f < 3; f++) {
        npy_array arr;
        snprintf(path, sizeof path, "%s/%s", dir, names[f]);
        if ((rc = npy_read(path, &arr, e))) return rc;
        if (arr.dtype != NPY_F32 || arr.ndim != 3 || arr.shape[0] != (size_t)L ||
            arr.shape[1] != (size_t)n || arr.shape[2] != (size_t)n) {
            npy_free(&arr);
            return d2_fail(e, D2_EINPUT, "%s: expected float32 (%d, %d, %d)", path, L, n, n);
        }
        for (int l = 0; l < L; l++)
            memcpy(f == 0 ? a->m[l] : f == 1 ? a->v[l] : m->phase[l],
                   (float *)arr.data + nn * l, sizeof(float) * nn);
        npy_free(&arr);
    }
    cJSON *st = NULL;
    snprintf(path, sizeof path, "%s/state.json", dir);
    if ((rc = cfg_load(path, &st, e))) return rc;
    cfg_ctx c = {path, ""};
    long ep, sp;
    const char *rg;
    if ((rc = cfg_int(&c, st, "epoch", 1, 0, 1, 10000, &ep, e)) ||
        (rc = cfg_int(&c, st, "adam_step", 1, 0, 0, 1L << 50, &sp, e)) ||
        (rc = cfg_str(&c, st, "rng", 1, NULL, &rg, e))) {
        cJSON_Delete(st);
        return rc;
    }
    if (strlen(rg) != 64 || strspn(rg, "0123456789abcdef") != 64) {
        cJSON_Delete(st);
        return d2_fail(e, D2_EINPUT, "%s: key \"rng\": expected 64 hexadecimal digits", path);
    }
    *epoch = (int)ep;
    a->step = sp;
    for (int i = 0; i < 4; i++) {
        char part[17];
        memcpy(part, rg + 16 * i, 16);
        part[16] = 0;
        rng->s[i] = strtoull(part, NULL, 16);
    }
    cJSON_Delete(st);
    return 0;
}

typedef struct gap_job {
    d2_net *net;
    const double *gaps;
} gap_job;

static void set_gap(void *arg, int k, int tid)
{
    (void)tid;
    gap_job *j = arg;
    net_set_gap(j->net, k, j->gaps[k], 0);
}

/* Loads the network with the transmissions the phases give (quantised when
 * training is quantisation-aware), each layer displaced by its pose when
 * poses is not NULL, and the gaps those poses imply. tbase receives the
 * undisplaced transmissions (for the phase gradient). */
static void load_layers(d2_net *net, d2_pool *pool, const d2_model *m, const layer_pose *poses,
                        float complex **tbase, float complex *scratch)
{
    const d2_geom *g = &m->g;
    size_t nn = (size_t)g->n * g->n;
    float step = (float)train_phase_step(g, &m->t);
    for (int l = 0; l < g->layers; l++) {
        net_phase_to_t(g, m->phase[l], NULL, step, nn, tbase[l]);
        if (poses && !perturb_is_identity(&poses[l])) {
            perturb_transform(tbase[l], g->n, g->pitch_mm, &poses[l], scratch);
            net_set_transmission(net, l, scratch);
        } else {
            net_set_transmission(net, l, tbase[l]);
        }
    }
    double gaps[D2_MAX_LAYERS + 1];
    static const layer_pose none[D2_MAX_LAYERS];
    perturb_gaps(g, poses ? poses : none, gaps);
    gap_job gj = {net, gaps};
    d2_pool_run(pool, set_gap, &gj, g->layers + 1);
}

/* The model as it will be printed: phases quantised as in training. */
static int save_model(const char *dir, const d2_model *m, d2_err *e)
{
    float step = (float)train_phase_step(&m->g, &m->t);
    if (!(step > 0)) return model_save(dir, m, e);
    d2_model q = *m;
    size_t nn = (size_t)m->g.n * m->g.n;
    int rc = 0;
    for (int l = 0; l < m->g.layers; l++) q.phase[l] = NULL;
    for (int l = 0; l < m->g.layers && !rc; l++) {
        if (!(q.phase[l] = d2_malloc(nn * sizeof(float), "phase map", e))) rc = D2_EIO;
        for (size_t i = 0; !rc && i < nn; i++)
            q.phase[l][i] = perturb_quantize_phase(m->phase[l][i], step);
    }
    if (!rc) rc = model_save(dir, &q, e);
    for (int l = 0; l < m->g.layers; l++) free(q.phase[l]);
    return rc;
}

#define ADAM_B1 0.9
#define ADAM_B2 0.999
#define ADAM_EPS 1e-8f

/* One Adam step, in two passes over the layers (independent, so they run on
 * the pool): grad_layer sums the threads' dL/dt* in thread order, pulls it
 * back through the batch's displacement and turns it into this rank's phase
 * gradient (linear in dL/dt*, so the ranks' phase gradients add: the sum
 * over ranks exchanges n*n floats a layer, not complex values); adam_layer
 * updates the phases from the summed gradient. */
typedef struct upd_job {
    d2_model *m;
    adam *a;
    train_job *j;
    int threads, n;
    double pitch_mm;
    int jitter;
    const layer_pose *poses;
    float complex **tbase;
    float beta, scale, step, ibc2, max_phase;
    float *pgrad;           /* layers x n*n phase gradients */
    float complex **qadj;   /* [thread] n*n scratch */
    unsigned frozen;        /* bit l: layer l keeps its phases (--train-layers) */
} upd_job;

static void grad_layer(void *arg, int l, int tid)
{
    upd_job *u = arg;
    size_t nn = (size_t)u->n * u->n;
    float complex *g0 = u->j->grad[0][l];
    float *pg = u->pgrad + nn * l;
    for (int k = 1; k < u->threads; k++) {
        float complex *gk = u->j->grad[k][l];
        for (size_t i = 0; i < nn; i++) g0[i] += gk[i];
        memset(gk, 0, sizeof(float complex) * nn);
    }
    if (u->frozen >> l & 1u) {
        memset(g0, 0, sizeof(float complex) * nn);
        memset(pg, 0, sizeof(float) * nn);
        return;
    }
    if (u->jitter) {
        float complex *q = u->qadj[tid];
        memset(q, 0, sizeof(float complex) * nn);
        perturb_transform_adjoint(g0, u->n, u->pitch_mm, &u->poses[l], q);
        net_phase_grad(q, u->tbase[l], u->beta, nn, pg);
    } else {
        /* Quantised phases pass their gradient straight through. */
        net_phase_grad(g0, u->tbase[l], u->beta, nn, pg);
    }
    memset(g0, 0, sizeof(float complex) * nn);
}

static void adam_layer(void *arg, int l, int tid)
{
    (void)tid;
    upd_job *u = arg;
    if (u->frozen >> l & 1u) return; /* --train-layers: kept as printed */
    size_t nn = (size_t)u->n * u->n;
    float *ph = u->m->phase[l], *am = u->a->m[l], *av = u->a->v[l], *pg = u->pgrad + nn * l;
    const float b1 = (float)ADAM_B1, b2 = (float)ADAM_B2;
    for (size_t i = 0; i < nn; i++) {
        float gr = pg[i] * u->scale;
        am[i] = b1 * am[i] + (1 - b1) * gr;
        av[i] = b2 * av[i] + (1 - b2) * gr * gr;
        ph[i] -= u->step * am[i] / (sqrtf(av[i] * u->ibc2) + ADAM_EPS);
    }
    if (u->max_phase < (float)(2 * M_PI))
        for (size_t i = 0; i < nn; i++) ph[i] = fminf(fmaxf(ph[i], 0.0f), u->max_phase);
}

/* Seconds the run will still take after the current epoch's training pass:
 * the later epochs and the test passes, at the last finished epoch's pace
 * (model history, so a resumed run knows it too); in the first epoch, at
 * this epoch's projected training pace (its test pass not yet known). */
static double run_after(const d2_model *m, int epoch, int epochs, double el, long seen,
                        long ntrain)
{
    int later = epochs - epoch - 1;
    int nh = m->history ? cJSON_GetArraySize(m->history) : 0;
    const cJSON *last = nh ? cJSON_GetArrayItem(m->history, nh - 1) : NULL;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(last, "seconds");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(last, "train_samples_per_s");
    if (cJSON_IsNumber(s) && cJSON_IsNumber(r) && r->valuedouble > 0) {
        double eval_s = s->valuedouble - ntrain / r->valuedouble;
        if (eval_s < 0) eval_s = 0;
        return later * s->valuedouble + eval_s;
    }
    if (seen <= 0) return -1;
    return later > 0 ? later * el * (double)ntrain / (double)seen : 0;
}

/* Everything one training run holds: the data, the network and its thread
 * pool, the Adam moments, the per-thread gradients and the scratch of the
 * layer update. */
typedef struct trainer {
    d2_model *m;
    const train_run_opts *ro;
    d2_dataset tr, te;
    d2_pool *pool;
    d2_net *net;
    int T, ntrain, jitter;
    adam a;
    train_job j;
    int *order;
    float *pgrad;           /* layers x n*n: phase gradient of the batch */
    float complex *tbase[D2_MAX_LAYERS], *scratch, **qadj;
    layer_pose poses[D2_MAX_LAYERS];
    float max_phase, beta;
    d2_rng rng;
} trainer;

static void trainer_free(trainer *x)
{
    int T = x->T, L = x->m->g.layers;
    if (x->j.grad)
        for (int k = 0; k < T; k++) {
            if (x->j.grad[k])
                for (int l = 0; l < L; l++) free(x->j.grad[k][l]);
            free(x->j.grad[k]);
        }
    if (x->j.in)
        for (int k = 0; k < T; k++) free(x->j.in[k]);
    free(x->j.grad);
    free(x->j.in);
    free(x->j.loss);
    free(x->j.correct);
    for (int l = 0; l < L; l++) {
        free(x->a.m[l]);
        free(x->a.v[l]);
    }
    free(x->order);
    for (int k = 0; x->qadj && k < T; k++) free(x->qadj[k]);
    free(x->pgrad);
    free(x->scratch);
    free(x->qadj);
    for (int l = 0; l < L; l++) free(x->tbase[l]);
    net_free(x->net);
    d2_pool_free(x->pool);
    dataset_free(&x->tr);
    dataset_free(&x->te);
}

/* The thread pool, the network and every buffer of a run (x->tr loaded). */
static int trainer_alloc(trainer *x, d2_err *e)
{
    const d2_geom *g = &x->m->g;
    int L = g->layers;
    size_t nn = (size_t)g->n * g->n;
    if (!(x->pool = d2_pool_new(x->ro->threads, e))) goto fail;
    int T = x->T = d2_pool_threads(x->pool);
    if (!(x->net = net_new(g, T, e))) goto fail;
    net_set_efficiency_weight(x->net, x->m->t.efficiency_weight);
    for (int l = 0; l < L; l++) {
        x->a.m[l] = d2_calloc(nn, sizeof(float), "Adam state", e);
        x->a.v[l] = d2_calloc(nn, sizeof(float), "Adam state", e);
        if (!x->a.m[l] || !x->a.v[l]) goto fail;
    }
    train_job *j = &x->j;
    j->grad = d2_calloc((size_t)T, sizeof *j->grad, "gradients", e);
    j->in = d2_calloc((size_t)T, sizeof *j->in, "inputs", e);
    j->loss = d2_calloc((size_t)T, sizeof *j->loss, "losses", e);
    j->correct = d2_calloc((size_t)T, sizeof *j->correct, "counts", e);
    if (!j->grad || !j->in || !j->loss || !j->correct) goto fail;
    for (int k = 0; k < T; k++) {
        j->grad[k] = d2_calloc((size_t)L, sizeof(float complex *), "gradients", e);
        j->in[k] = d2_malloc(sizeof(float) * nn, "input plane", e);
        if (!j->grad[k] || !j->in[k]) goto fail;
        for (int l = 0; l < L; l++)
            if (!(j->grad[k][l] = d2_calloc(nn, sizeof(float complex), "gradients", e))) goto fail;
    }
    const d2_train_opts *t = &x->m->t;
    x->ntrain = t->train_limit > 0 && t->train_limit < x->tr.count ? t->train_limit : x->tr.count;
    if (!(x->order = d2_malloc(sizeof(int) * x->ntrain, "sample order", e))) goto fail;
    if (!(x->pgrad = d2_malloc(sizeof(float) * nn * L, "phase gradients", e))) goto fail;
    if (!(x->qadj = d2_calloc((size_t)T, sizeof *x->qadj, "transmission gradients", e)))
        goto fail;
    for (int k = 0; k < T; k++) {
        if (!(x->qadj[k] = d2_malloc(sizeof(float complex) * nn, "transmission gradient", e)))
            goto fail;
    }
    if (!(x->scratch = d2_malloc(sizeof(float complex) * nn, "transmission", e))) goto fail;
    for (int l = 0; l < L; l++)
        if (!(x->tbase[l] = d2_malloc(sizeof(float complex) * nn, "transmission", e))) goto fail;
    x->jitter = t->jitter_xy_mm > 0 || t->jitter_z_mm > 0 || t->jitter_rot_deg > 0;
    /* Fixed poses (a calibrated twin): every batch sees the stack as it sits. */
    if (x->ro->poses) {
        x->jitter = 1;
        memcpy(x->poses, x->ro->poses, sizeof(layer_pose) * L);
    }
    x->max_phase = (float)geom_max_phase(g);
    x->beta = net_phase_beta(g);
    j->net = x->net;
    j->ds = &x->tr;
    j->model = x->m;
    j->threads = T;
    return 0;
fail:
    return e->code ? e->code : D2_EIO;
}

/* What one epoch's training pass measured. */
typedef struct epoch_stats {
    double lr, loss;   /* learning rate; summed loss (all ranks) */
    long correct, seen;
    double train_s;
    double comm_s, comm_bytes; /* in the sums over ranks (this rank) */
    long steps;
} epoch_stats;

/* One pass over the shuffled training set, a batch at a time; under K ranks
 * each takes its block of every batch (all draw the same order and poses
 * from the same RNG) and the phase gradients are summed over the ranks. */
static int train_epoch(trainer *x, int epoch, epoch_stats *st, d2_err *e)
{
    d2_model *m = x->m;
    const d2_train_opts *t = &m->t;
    const d2_geom *g = &m->g;
    train_job *j = &x->j;
    int L = g->layers, T = x->T, ntrain = x->ntrain, rc;
    double t0 = d2_now(), c0 = d2_par_seconds(), b0_bytes = d2_par_bytes_sent();
    long lseen = 0;
    memset(st, 0, sizeof *st);
    st->lr = t->lr * pow(t->lr_decay, epoch);
    for (int i = 0; i < ntrain; i++) x->order[i] = i;
    d2_rng_shuffle(&x->rng, x->order, ntrain);
    char label[32], extra[96] = "";
    snprintf(label, sizeof label, "epoch %d/%d", epoch + 1, t->epochs);
    d2_progress pr;
    d2_progress_start(&pr, x->ro->progress, label);
    for (int b0 = 0; b0 < ntrain; b0 += t->batch) {
        int bsz = ntrain - b0 < t->batch ? ntrain - b0 : t->batch;
        long lo, hi;
        d2_par_range(bsz, &lo, &hi);
        j->idx = x->order + b0 + lo;
        j->bsz = (int)(hi - lo);
        /* Misalignment-resilient training draws new layer poses for every
         * batch (Mengu et al. 2020). */
        if (x->jitter && !x->ro->poses)
            for (int l = 0; l < L; l++)
                perturb_draw_uniform(&x->rng, t->jitter_xy_mm, t->jitter_z_mm, t->jitter_rot_deg,
                                     &x->poses[l]);
        load_layers(x->net, x->pool, m, x->jitter ? x->poses : NULL, x->tbase, x->scratch);
        d2_pool_run(x->pool, train_part, j, T);
        x->a.step++;
        double bc1 = 1 - pow(ADAM_B1, (double)x->a.step), bc2 = 1 - pow(ADAM_B2, (double)x->a.step);
        upd_job uj = {m, &x->a, j, T, g->n, g->pitch_mm, x->jitter, x->poses, x->tbase, x->beta,
                      1.0f / bsz, (float)(st->lr / bc1), (float)(1.0 / bc2), x->max_phase,
                      x->pgrad, x->qadj,
                      x->ro->train_layers ? ~x->ro->train_layers : 0u};
        d2_pool_run(x->pool, grad_layer, &uj, L);
        if ((rc = d2_par_sum_f32(x->pgrad, (size_t)L * g->n * g->n, e))) return rc;
        d2_pool_run(x->pool, adam_layer, &uj, L);
        for (int k = 0; k < T; k++) {
            st->loss += j->loss[k];
            st->correct += j->correct[k];
        }
        st->seen += bsz;
        st->steps++;
        lseen += j->bsz;
        /* Under K ranks: this rank's share of the loss and accuracy. */
        snprintf(extra, sizeof extra, "loss %.4f acc %.2f%%", lseen ? st->loss / lseen : 0,
                 lseen ? 100.0 * st->correct / lseen : 0);
        d2_progress_after(&pr, run_after(m, epoch, t->epochs, d2_now() - t0, st->seen, ntrain));
        d2_progress_update(&pr, st->seen, ntrain, extra);
    }
    double sums[2] = {st->loss, (double)st->correct};
    if ((rc = d2_par_sum_f64(sums, 2, e))) return rc;
    st->loss = sums[0];
    st->correct = (long)sums[1];
    st->train_s = d2_now() - t0;
    st->comm_s = d2_par_seconds() - c0;
    st->comm_bytes = d2_par_bytes_sent() - b0_bytes;
    d2_progress_end(&pr, extra);
    return 0;
}

/* The epoch in the model's history, and its line on the progress stream. */
static void epoch_record(trainer *x, int epoch, const epoch_stats *st, const eval_result *r,
                         double secs)
{
    d2_model *m = x->m;
    m->train_seconds += secs;
    m->test_accuracy = r->accuracy;
    cJSON *h = cJSON_CreateObject();
    cJSON_AddNumberToObject(h, "epoch", epoch + 1);
    cJSON_AddNumberToObject(h, "learning_rate", st->lr);
    cJSON_AddNumberToObject(h, "train_loss", st->loss / st->seen);
    cJSON_AddNumberToObject(h, "train_accuracy", (double)st->correct / st->seen);
    cJSON_AddNumberToObject(h, "test_accuracy", r->accuracy);
    cJSON_AddNumberToObject(h, "test_images", r->count);
    cJSON_AddNumberToObject(h, "detector_efficiency", r->efficiency);
    cJSON_AddNumberToObject(h, "seconds", secs);
    cJSON_AddNumberToObject(h, "train_samples_per_s", st->seen / st->train_s);
    cJSON_AddNumberToObject(h, "threads", x->T);
    if (d2_par_size() > 1) {
        /* Threads per rank, the ranks, and what the gradient sums cost rank
         * 0 (the bench and the README's projection read these). */
        cJSON_AddNumberToObject(h, "ranks", d2_par_size());
        cJSON_AddNumberToObject(h, "allreduce_seconds", st->comm_s);
        cJSON_AddNumberToObject(h, "allreduce_bytes_per_step",
                                st->steps ? st->comm_bytes / st->steps : 0);
        cJSON_AddNumberToObject(h, "steps", st->steps);
    }
    cJSON_AddItemToArray(m->history, h);
    if (x->ro->progress)
        fprintf(x->ro->progress,
                "epoch %d: train loss %.4f, train accuracy %.2f%%, test accuracy %.2f%% (%d "
                "images), %.0f samples/s\n",
                epoch + 1, st->loss / st->seen, 100.0 * st->correct / st->seen,
                100 * r->accuracy, r->count, st->seen / st->train_s);
}

/* Refused before anything is loaded or allocated: the memory the network
 * needs, and room for the model and, at the moment a new checkpoint is
 * complete and the previous one not yet removed, two checkpoints (each the
 * model plus Adam moments and unwrapped phases). */
static int train_check_room(const d2_model *m, const char *out_dir, const train_run_opts *ro,
                            d2_err *e)
{
    const d2_geom *g = &m->g;
    int n = g->n, L = g->layers, rc;
    if ((rc = geom_check_memory(g, ro->threads > 0 ? ro->threads : d2_cpu_count(), e))) return rc;
    if (d2_par_rank() > 0) return 0; /* rank 0 writes */
    double nnd = (double)n * n, ps = n < 256 ? 2 : 1;
    double model_b = L * (128 + 4 * nnd + 1.01 * (3 * nnd * ps * ps + n * ps)) + 65536;
    return d2_check_space(out_dir, 3 * model_b + 2 * 3 * (128 + 4 * nnd * L),
                          "training (the model and two checkpoints)", e);
}

/* Under K ranks: rank 0 has read the checkpoint; every rank receives its
 * epoch, Adam step, RNG state, moments and phases. */
static int share_checkpoint(trainer *x, int *first_epoch, d2_err *e)
{
    if (d2_par_size() == 1) return 0;
    struct {
        long epoch, step;
        uint64_t rng[4];
    } st = {*first_epoch, x->a.step, {x->rng.s[0], x->rng.s[1], x->rng.s[2], x->rng.s[3]}};
    int rc = d2_par_bcast(&st, sizeof st, e);
    size_t bytes = sizeof(float) * x->m->g.n * x->m->g.n;
    for (int l = 0; l < x->m->g.layers && !rc; l++)
        if (!(rc = d2_par_bcast(x->a.m[l], bytes, e)) && !(rc = d2_par_bcast(x->a.v[l], bytes, e)))
            rc = d2_par_bcast(x->m->phase[l], bytes, e);
    if (rc) return rc;
    *first_epoch = (int)st.epoch;
    x->a.step = st.step;
    memcpy(x->rng.s, st.rng, sizeof st.rng);
    return 0;
}

/* Under K ranks: every rank must hold the same phases after each epoch (the
 * same sums, the same Adam steps). A hash of each rank's phases is shared
 * and compared, so ranks that drift apart (different hardware or builds
 * rounding differently) stop the job instead of training on. */
static int ranks_agree(trainer *x, int epoch, d2_err *e)
{
    int K = d2_par_size(), me = d2_par_rank(), rc;
    if (K == 1) return 0;
    uint64_t *h = d2_calloc((size_t)K, sizeof *h, "phase hashes", e);
    if (!h) return D2_EIO;
    uint64_t v = 1469598103934665603ULL;
    size_t nn = (size_t)x->m->g.n * x->m->g.n;
    for (int l = 0; l < x->m->g.layers; l++) {
        const unsigned char *p = (const unsigned char *)x->m->phase[l];
        for (size_t i = 0; i < nn * sizeof(float); i++) v = (v ^ p[i]) * 1099511628211ULL;
    }
    h[me] = v;
    if (!(rc = d2_par_share(h, sizeof *h, K, e)))
        for (int r = 1; r < K; r++)
            if (h[r] != h[0]) {
                rc = d2_fail(e, D2_EIO, "after epoch %d rank %d holds other phases than rank 0; "
                             "the ranks must run the same build on the same kind of CPU",
                             epoch + 1, r);
                break;
            }
    free(h);
    return rc;
}

int train_model(d2_model *m, const char *out_dir, const train_run_opts *ro, d2_err *e)
{
    const d2_train_opts *t = &m->t;
    trainer x;
    memset(&x, 0, sizeof x);
    x.m = m;
    x.ro = ro;
    int rc, first_epoch = 0;
    if ((rc = train_check_room(m, out_dir, ro, e))) return rc;
    if ((rc = dataset_open(ro->data_dir, t->dataset, &t->data, 0, &x.tr, e))) return rc;
    if ((rc = dataset_open(ro->data_dir, t->dataset, &t->data, 1, &x.te, e))) goto done;
    if (x.te.rows != x.tr.rows || x.te.cols != x.tr.cols) {
        rc = d2_fail(e, D2_EINPUT, "data set \"%s\": test images are %d x %d but training images "
                     "%d x %d; expected the same size", t->dataset, x.te.cols, x.te.rows,
                     x.tr.cols, x.tr.rows);
        goto done;
    }
    if ((rc = trainer_alloc(&x, e))) goto done;
    d2_rng_seed(&x.rng, t->seed);
    if (!m->history) m->history = cJSON_CreateArray();
    /* Under K ranks rank 0 reads and writes the folder; the others receive
     * the checkpoint from it. */
    int writer = d2_par_rank() == 0;
    if (ro->resume) {
        if (writer && (rc = load_checkpoint(out_dir, m, &x.a, &first_epoch, &x.rng, e)))
            goto done;
        if ((rc = share_checkpoint(&x, &first_epoch, e))) goto done;
        if (ro->progress)
            fprintf(ro->progress, "resuming after epoch %d of %d\n", first_epoch, t->epochs);
    } else if (writer && (rc = clear_checkpoints(out_dir, e))) {
        goto done;
    }
    if (writer && (rc = d2_mkdir_p(out_dir, e))) goto done;
    for (int epoch = first_epoch; epoch < t->epochs; epoch++) {
        double t0 = d2_now();
        epoch_stats st;
        if ((rc = train_epoch(&x, epoch, &st, e)) || (rc = ranks_agree(&x, epoch, e))) goto done;
        /* Test accuracy after each epoch, on the nominal (aligned) stack. */
        load_layers(x.net, x.pool, m, NULL, x.tbase, x.scratch);
        eval_result r;
        if ((rc = eval_net_ranks(x.net, &x.te, t->test_limit, x.pool, ro->progress, &r, e)))
            goto done;
        epoch_record(&x, epoch, &st, &r, d2_now() - t0);
        if (!writer) continue;
        if ((rc = save_checkpoint(out_dir, m, &x.a, epoch + 1, &x.rng, e))) goto done;
        if ((rc = save_model(out_dir, m, e))) goto done;
    }
    /* Resumed from the last epoch's checkpoint (killed before the model files
     * were written): nothing is left to train, but the model is still due. */
    if (writer && first_epoch >= t->epochs) rc = save_model(out_dir, m, e);
done:
    trainer_free(&x);
    return rc;
}
