/* Evaluation: accuracy, confusion and efficiency of a network on a test set,
 * split over MPI ranks where the caller asks for it. */
#include "train/train.h"

#include <complex.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/image.h"
#include "core/par.h"
#include "core/util.h"
#include "optics/optics.h"

cJSON *eval_to_json(const eval_result *r, int ndet)
{
    /* ndet: the classes (rows of the confusion matrix) */
    cJSON *o = cJSON_CreateObject();
    cfg_add_numbers(o, (const cfg_num_item[]){{"test_images", r->count}, {"correct", r->correct},
                    {"accuracy", r->accuracy}, {"detector_efficiency", r->efficiency},
                    {"output_efficiency", r->output_efficiency}}, 5);
    eval_light_json(o, r);
    cJSON *pc = cJSON_AddArrayToObject(o, "class_accuracy");
    cJSON *cm = cJSON_AddArrayToObject(o, "confusion");
    for (int k = 0; k < ndet; k++) {
        cJSON_AddItemToArray(pc, cJSON_CreateNumber(
                                     r->class_count[k] ? (double)r->class_correct[k] / r->class_count[k] : 0));
        cJSON *row = cJSON_CreateIntArray(r->confusion[k], ndet);
        cJSON_AddItemToArray(cm, row);
    }
    return o;
}

/* ---- evaluation --------------------------------------------------------- */

typedef struct eval_job {
    d2_net *net;
    const d2_dataset *ds;
    int start, count;
    float **in;     /* per-thread input plane */
    float *det;     /* count x ndet */
    double *tot;    /* count: energy on the output plane */
} eval_job;

static void eval_one(void *arg, int i, int tid)
{
    eval_job *j = arg;
    const d2_geom *g = net_geom(j->net);
    int idx = j->start + i;
    size_t px = (size_t)j->ds->rows * j->ds->cols;
    input_from_u8(g, j->ds->images + px * idx, j->ds->rows, j->ds->cols, j->in[tid]);
    j->tot[i] = net_infer(j->net, j->in[tid], j->det + (size_t)i * g->ndet, NULL, tid);
}

/* Images [lo, hi) of ds into r's counts, sums[0..1] (detector and output
 * energies) and the per-image light columns (eval_light_put, count images in
 * all); progress counts from lo. */
static int eval_range(d2_net *net, const d2_dataset *ds, int lo, int hi, d2_pool *pool,
                      FILE *progress, eval_result *r, double *sums, float *light, int count,
                      float *det_out, d2_err *e)
{
    const d2_geom *g = net_geom(net);
    int T = d2_pool_threads(pool), rc = 0;
    const int chunk = 256;
    eval_job j = {net, ds, 0, 0, NULL, NULL, NULL};
    j.in = d2_calloc((size_t)T, sizeof *j.in, "input planes", e);
    j.det = d2_malloc(sizeof(float) * chunk * g->ndet, "detector energies", e);
    j.tot = d2_malloc(sizeof(double) * chunk, "energies", e);
    if (!j.in || !j.det || !j.tot) {
        rc = D2_EIO;
        goto done;
    }
    for (int t = 0; t < T; t++)
        if (!(j.in[t] = d2_malloc(sizeof(float) * g->n * g->n, "input plane", e))) {
            rc = D2_EIO;
            goto done;
        }
    d2_progress pr;
    d2_progress_start(&pr, progress, "eval");
    for (int s = lo; s < hi; s += chunk) {
        j.start = s;
        j.count = hi - s < chunk ? hi - s : chunk;
        d2_pool_run(pool, eval_one, &j, j.count);
        for (int i = 0; i < j.count; i++) {
            const float *d = j.det + (size_t)i * g->ndet;
            int lab = ds->labels[s + i], pred = det_predict(g, d);
            double sum = det_total(g, d);
            sums[0] += sum;
            sums[1] += j.tot[i];
            eval_light_put(light, count, s + i, g, d, j.tot[i]);
            if (lab < geom_classes(g)) {
                r->class_count[lab]++;
                r->confusion[lab][pred]++;
                if (pred == lab) {
                    r->class_correct[lab]++;
                    r->correct++;
                }
            }
            if (det_out) memcpy(det_out + (size_t)(s + i) * g->ndet, d, sizeof(float) * g->ndet);
        }
        char extra[64];
        snprintf(extra, sizeof extra, "acc %.2f%%", 100.0 * r->correct / (s + j.count - lo));
        d2_progress_update(&pr, s + j.count - lo, hi - lo, extra);
    }
    if (progress && hi - lo >= 2000) {
        char extra[64];
        snprintf(extra, sizeof extra, "accuracy %.2f%%", 100.0 * r->correct / (hi - lo));
        d2_progress_end(&pr, extra);
    }
done:
    if (j.in)
        for (int t = 0; t < T; t++) free(j.in[t]);
    free(j.in);
    free(j.det);
    free(j.tot);
    return rc;
}

static void eval_finish(eval_result *r, int count, const double *sums)
{
    r->count = count;
    r->accuracy = count ? (double)r->correct / count : 0;
    r->efficiency = count ? sums[0] / count : 0;
    r->output_efficiency = count ? sums[1] / count : 0;
}

int eval_net(d2_net *net, const d2_dataset *ds, int limit, d2_pool *pool, FILE *progress,
             eval_result *r, float *det_out, d2_err *e)
{
    int count = limit > 0 && limit < ds->count ? limit : ds->count;
    double sums[2] = {0, 0};
    memset(r, 0, sizeof *r);
    float *light = d2_calloc(3 * (size_t)(count > 0 ? count : 1), sizeof(float), "light", e);
    if (!light) return D2_EIO;
    int rc = eval_range(net, ds, 0, count, pool, progress, r, sums, light, count, det_out, e);
    eval_finish(r, count, sums);
    eval_light_finish(r, light, count);
    free(light);
    return rc;
}

/* The counts and sums of a result, as doubles (exact for counts), for the
 * sum over ranks. */
#define EVAL_NPACK (3 + 2 * D2_MAX_CLASS + D2_MAX_CLASS * D2_MAX_CLASS)
static void eval_pack(eval_result *r, double *sums, double *v, int out)
{
    int *ints[1 + 2 * D2_MAX_CLASS + D2_MAX_CLASS * D2_MAX_CLASS], n = 0;
    ints[n++] = &r->correct;
    for (int k = 0; k < D2_MAX_CLASS; k++) ints[n++] = &r->class_count[k];
    for (int k = 0; k < D2_MAX_CLASS; k++) ints[n++] = &r->class_correct[k];
    for (int k = 0; k < D2_MAX_CLASS; k++)
        for (int q = 0; q < D2_MAX_CLASS; q++) ints[n++] = &r->confusion[k][q];
    for (int i = 0; i < n; i++) {
        if (out) *ints[i] = (int)v[i];
        else v[i] = *ints[i];
    }
    if (out) sums[0] = v[n], sums[1] = v[n + 1];
    else v[n] = sums[0], v[n + 1] = sums[1];
}

int eval_net_ranks(d2_net *net, const d2_dataset *ds, int limit, d2_pool *pool, FILE *progress,
                   eval_result *r, d2_err *e)
{
    if (d2_par_size() == 1) return eval_net(net, ds, limit, pool, progress, r, NULL, e);
    int count = limit > 0 && limit < ds->count ? limit : ds->count;
    long lo, hi;
    d2_par_range(count, &lo, &hi);
    double sums[2] = {0, 0}, v[EVAL_NPACK];
    memset(r, 0, sizeof *r);
    /* every rank fills its block of the per-image light columns and leaves
     * the rest zero, so the sum over ranks is the whole columns, exactly */
    float *light = d2_calloc(3 * (size_t)(count > 0 ? count : 1), sizeof(float), "light", e);
    if (!light) return D2_EIO;
    int rc = eval_range(net, ds, (int)lo, (int)hi, pool, progress, r, sums, light, count, NULL,
                        e);
    if (!rc) {
        eval_pack(r, sums, v, 0);
        rc = d2_par_sum_f64(v, EVAL_NPACK, e);
    }
    if (!rc) rc = d2_par_sum_f32(light, 3 * (size_t)count, e);
    if (!rc) {
        eval_pack(r, sums, v, 1);
        eval_finish(r, count, sums);
        eval_light_finish(r, light, count);
    }
    free(light);
    return rc;
}

/* A montage of output intensities: up to 10 test images side by side, each
 * normalised to its own peak, with the detector squares drawn in white and
 * the true class's detector in green. */
static int write_output_png(d2_net *net, const d2_dataset *ds, const char *path, d2_err *e)
{
    const d2_geom *g = net_geom(net);
    int n = g->n, cnt = ds->count < 10 ? ds->count : 10, sc = n < 150 ? 2 : 1;
    int cell = n * sc + 4, W = cell * cnt, H = cell;
    uint8_t *rgb = d2_calloc((size_t)W * H * 3, 1, "preview", e);
    float *in = d2_malloc(sizeof(float) * n * n, "input", e);
    float *inten = d2_malloc(sizeof(float) * n * n, "intensity", e);
    int rc = D2_EIO;
    if (!rgb || !in || !inten) goto done;
    for (int s = 0; s < cnt; s++) {
        float det[D2_MAX_DET];
        input_from_u8(g, ds->images + (size_t)s * ds->rows * ds->cols, ds->rows, ds->cols, in);
        net_infer(net, in, det, inten, 0);
        float mx = 0;
        for (int i = 0; i < n * n; i++) mx = fmaxf(mx, inten[i]);
        for (int i = 0; i < n * sc; i++)
            for (int jx = 0; jx < n * sc; jx++) {
                float v = mx > 0 ? inten[(i / sc) * n + jx / sc] / mx : 0;
                uint8_t *px = rgb + ((size_t)(i + 2) * W + s * cell + jx + 2) * 3;
                img_cmap_rgb(CMAP_INFERNO, sqrtf(v), px);
            }
        for (int k = 0; k < g->ndet; k++) {
            int r0, r1, c0, c1;
            geom_det_rect(g, k, &r0, &r1, &c0, &c1);
            /* the true class's detector green (its - detector red) */
            uint8_t col[3] = {255, 255, 255};
            int nc = geom_classes(g);
            if (k == ds->labels[s]) col[0] = 0, col[2] = 0;
            else if (k - nc == ds->labels[s]) col[1] = 0, col[2] = 0;
            for (int i = r0 * sc; i < r1 * sc; i++)
                for (int jx = c0 * sc; jx < c1 * sc; jx++) {
                    if (i != r0 * sc && i != r1 * sc - 1 && jx != c0 * sc && jx != c1 * sc - 1)
                        continue;
                    memcpy(rgb + ((size_t)(i + 2) * W + s * cell + jx + 2) * 3, col, 3);
                }
        }
    }
    rc = img_write_rgb8(path, W, H, rgb, e);
done:
    free(rgb);
    free(in);
    free(inten);
    return rc;
}

int eval_model(const d2_model *m, const char *data_dir, int limit, int threads,
               const char *png_path, FILE *progress, eval_result *r, d2_err *e)
{
    d2_dataset ds = {0};
    d2_pool *pool = NULL;
    d2_net *net = NULL;
    int rc = geom_check_memory(&m->g, threads > 0 ? threads : d2_cpu_count(), e);
    if (rc) return rc;
    rc = dataset_open(data_dir, m->t.dataset, &m->t.data, 1, &ds, e);
    if (rc) return rc;
    if (!(pool = d2_pool_new(threads, e)) || !(net = net_new(&m->g, d2_pool_threads(pool), e))) {
        rc = e->code ? e->code : D2_EIO;
        goto done;
    }
    net_set_model(net, m);
    if ((rc = eval_net_ranks(net, &ds, limit, pool, progress, r, e))) goto done;
    /* Under mpirun the montage is rank 0's to write. */
    if (png_path && d2_par_rank() == 0) rc = write_output_png(net, &ds, png_path, e);
done:
    net_free(net);
    d2_pool_free(pool);
    dataset_free(&ds);
    return rc;
}

