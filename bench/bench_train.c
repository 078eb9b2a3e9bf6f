/* Training and inference speed of the paper geometry (5 layers of 200 x 200,
 * FFT size 400) against the FFT bound measured in the same run: the rate at
 * which all cores execute plain fftwf 400 x 400 transforms, counted as 24
 * transforms per training sample (12 forward, 12 adjoint) and 12 per
 * inference. Also the peak memory of a batch-32 training run. */
#include <complex.h>
#include <fftw3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/config.h"
#include "core/util.h"
#include "bench/benchlib.h"
#include "optics/optics.h"
#include "train/train.h"

int main(int argc, char **argv)
{
    const char *cfg = argc > 1 ? argv[1] : "samples/paper-mnist.json";
    int train_images = argc > 2 ? atoi(argv[2]) : 1024;
    d2_err e = {0};
    cJSON *root = NULL;
    d2_model m = {0};
    if (cfg_load(cfg, &root, &e) || config_read(cfg, root, &m.g, &m.t, &e)) {
        fprintf(stderr, "bench_train: %s\n", e.msg);
        return 2;
    }
    cJSON_Delete(root);
    m.t.epochs = 1;
    m.t.batch = 32;
    m.t.train_limit = train_images;
    m.t.test_limit = train_images;
    if (model_alloc(&m, &e)) return 3;
    d2_pool *pool = d2_pool_new(0, &e);
    int T = d2_pool_threads(pool), p = m.g.pad * m.g.n;
    printf("geometry: %d layers of %d x %d, FFT size %d, batch %d, %d threads\n", m.g.layers,
           m.g.n, m.g.n, p, m.t.batch, T);

    double fft1 = bench_fft_rate(pool, p);
    int per_train = 4 * (m.g.layers + 1), per_infer = 2 * (m.g.layers + 1);
    char out[] = "/tmp/d2fab-bench-XXXXXX";
    if (!mkdtemp(out)) return 3;
    train_run_opts ro = {dataset_default_dir(), 0, 0, NULL};
    if (train_model(&m, out, &ro, &e)) {
        fprintf(stderr, "bench_train: %s\n", e.msg);
        return 3;
    }
    cJSON *h = cJSON_GetArrayItem(m.history, 0);
    double train_rate = cJSON_GetObjectItem(h, "train_samples_per_s")->valuedouble;

    /* Inference: the evaluation path on the same images. */
    d2_dataset ds;
    if (dataset_load(ro.data_dir, m.t.dataset, 1, &ds, &e)) return 3;
    d2_net *net = net_new(&m.g, T, &e);
    net_set_model(net, &m);
    eval_result r;
    double t0 = d2_now();
    eval_net(net, &ds, train_images, pool, NULL, &r, NULL, &e);
    double infer_rate = r.count / (d2_now() - t0);
    double fft2 = bench_fft_rate(pool, p);
    double fft = 0.5 * (fft1 + fft2);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("fftwf %dx%d transforms, all cores: %.0f /s (before %.0f, after %.0f)\n", p, p, fft,
           fft1, fft2);
    printf("training:  %.1f samples/s; FFT bound (%d transforms/sample) %.1f samples/s; ratio %.2f\n",
           train_rate, per_train, fft / per_train, train_rate / (fft / per_train));
    printf("inference: %.1f samples/s; FFT bound (%d transforms/sample) %.1f samples/s; ratio %.2f\n",
           infer_rate, per_infer, fft / per_infer, infer_rate / (fft / per_infer));
    printf("peak memory (training at batch %d, %d threads, with the data sets): %.0f MiB\n",
           m.t.batch, T, ru.ru_maxrss / 1024.0);
    printf("(each gap's transforms skip the zero-padded rows: %d of %d row FFTs are done)\n",
           m.g.n, p);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", out);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", out);
    net_free(net);
    dataset_free(&ds);
    d2_pool_free(pool);
    model_free(&m);
    return 0;
}
