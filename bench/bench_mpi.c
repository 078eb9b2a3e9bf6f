/* MPI scale-out on this machine: the same work as 2 ranks x 1 thread
 * (mpirun) and as 1 rank x 2 threads, for training (default: the paper's
 * geometry, 5 layers of 200 x 200, thin phase screens, batch 32) and for a
 * tolerance study of the model it trains; the ratio of their rates; the bytes
 * a rank sends per training step; the all-reduce of one step's gradient
 * alone (this program under mpirun, barrier-separated rounds) against the
 * step's compute time; and from those, the speed-up projected for 8, 32 and
 * 128 ranks on two networks (the assumptions are printed with it).
 *
 *   bench_mpi [CONFIG [TRAIN_IMAGES [TRIALS]]]
 *   bench_mpi --allreduce N   (under mpirun: times the sum of N floats)
 *
 * Wall-clock rates on a shared machine: other processes slow both sides;
 * each side runs twice and the faster run counts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "core/par.h"
#include "core/util.h"
#include "optics/optics.h"

static char mpirun[256], tmp[1024], self[1024];

static int sh(const char *cmd)
{
    fflush(stdout);
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Under mpirun: sums of n floats, 40 rounds after 5 warm-up rounds, each
 * after a barrier so no rank waits for another inside the timed sum; rank 0
 * prints the median milliseconds and the bytes it sent per sum. */
static int allreduce_main(int argc, char **argv, long n)
{
    d2_err e = {0};
    if (d2_par_init(&argc, &argv, &e)) {
        fprintf(stderr, "bench_mpi: %s\n", e.msg);
        return 3;
    }
    float *v = malloc(sizeof(float) * n);
    double ms[40];
    if (!v) return 3;
    for (long i = 0; i < n; i++) v[i] = (float)(i % 97) * 1e-3f;
    for (int r = -5; r < 40; r++) {
        if (d2_par_barrier(&e)) break;
        double b0 = d2_par_bytes_sent(), t0 = d2_now();
        if (d2_par_sum_f32(v, (size_t)n, &e)) break;
        if (r >= 0) ms[r] = 1e3 * (d2_now() - t0);
        if (r == 0 && d2_par_rank() == 0) printf("bytes %.0f\n", d2_par_bytes_sent() - b0);
    }
    if (e.code) fprintf(stderr, "bench_mpi: %s\n", e.msg);
    qsort(ms, 40, sizeof *ms, cmp_d);
    if (d2_par_rank() == 0) printf("ms %.4f\n", 0.5 * (ms[19] + ms[20]));
    free(v);
    d2_par_finalize();
    return e.code ? 3 : 0;
}

/* A number from the first line of file that holds key (a JSON "key": value
 * or a "key value" line); NAN when absent. */
static double file_num(const char *file, const char *key)
{
    FILE *f = fopen(file, "r");
    char line[4096];
    double v = NAN;
    while (f && fgets(line, sizeof line, f)) {
        char *p = strstr(line, key);
        if (!p) continue;
        p += strlen(key);
        while (*p == '"' || *p == ':' || *p == ' ' || *p == '\t') p++;
        v = strtod(p, NULL);
        break;
    }
    if (f) fclose(f);
    return v;
}

/* Trains one epoch; returns the training rate (samples/s) of model.json. */
static double train_rate(const char *how, int ranks, int threads, const char *cfg, int images,
                         const char *out)
{
    char cmd[4096], mj[1200];
    double best = 0;
    for (int rep = 0; rep < 2; rep++) {
        snprintf(cmd, sizeof cmd,
                 "%s ./d2fab train -c %s -o %s --epochs 1 --limit %d --test-limit 64 -t %d -q "
                 ">/dev/null", ranks > 1 ? mpirun : "", cfg, out, images, threads);
        if (sh(cmd) != 0) {
            printf("%s: training failed (%s)\n", how, cmd);
            return NAN;
        }
        snprintf(mj, sizeof mj, "%s/model.json", out);
        double r = file_num(mj, "\"train_samples_per_s\"");
        if (r > best) best = r;
    }
    return best;
}

/* Runs a tolerance study twice; returns the faster run's seconds as the
 * report gives them (the study, without the start of the processes), and
 * *wall, that run's wall seconds with mpirun and the start. */
static double tol_seconds(int ranks, int threads, const char *model, int trials, const char *out,
                          double *wall)
{
    char cmd[4096], rj[1200];
    double best = INFINITY;
    for (int rep = 0; rep < 2; rep++) {
        snprintf(cmd, sizeof cmd,
                 "%s ./d2fab tolerance -m %s -o %s -n %d --limit 64 --lateral-mm 0.05 "
                 "--axial-mm 0.2 --no-inverse -t %d -q >/dev/null",
                 ranks > 1 ? mpirun : "", model, out, trials, threads);
        double t0 = d2_now();
        if (sh(cmd) != 0) {
            printf("tolerance failed (%s)\n", cmd);
            return NAN;
        }
        double w = d2_now() - t0;
        snprintf(rj, sizeof rj, "%s/report.json", out);
        double t = file_num(rj, "\"seconds\"");
        if (t < best) best = t, *wall = w;
    }
    return best;
}

/* Ring all-reduce of `bytes` over K ranks: 2 (K - 1) steps, each moving
 * bytes / K at bandwidth bw (bytes/s) after latency lat (s). */
static double ring_s(double bytes, int K, double bw, double lat)
{
    return K == 1 ? 0 : 2.0 * (K - 1) * (bytes / K / bw + lat);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--allreduce"))
        return allreduce_main(argc, argv, atol(argv[2]));
    const char *cfg = argc > 1 ? argv[1] : "samples/paper-mnist.json";
    int images = argc > 2 ? atoi(argv[2]) : 256, trials = argc > 3 ? atoi(argv[3]) : 8;
    if (!d2_par_have_mpi() || sh("command -v mpirun >/dev/null 2>&1") != 0) {
        printf("bench_mpi: skipped (%s)\n", d2_par_have_mpi() ? "mpirun not found"
                                                               : "this build has no MPI");
        return 0;
    }
    d2_err e = {0};
    d2_geom g;
    d2_train_opts t;
    if (config_load(cfg, &g, &t, &e)) {
        fprintf(stderr, "bench_mpi: %s\n", e.msg);
        return 2;
    }
    snprintf(mpirun, sizeof mpirun, "mpirun -np 2 %s--bind-to core",
             geteuid() == 0 ? "--allow-run-as-root --oversubscribe " : "");
    snprintf(tmp, sizeof tmp, "build/bench/mpi-runs");
    snprintf(self, sizeof self, "%s", argv[0]);
    char cmd[4096], o1[1100], o2[1100], t1[1100], t2[1100], ar[1100];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", tmp, tmp);
    if (sh(cmd)) return 3;
    snprintf(o1, sizeof o1, "%s/train-1x2", tmp);
    snprintf(o2, sizeof o2, "%s/train-2x1", tmp);
    snprintf(t1, sizeof t1, "%s/tol-1x2", tmp);
    snprintf(t2, sizeof t2, "%s/tol-2x1", tmp);
    snprintf(ar, sizeof ar, "%s/allreduce.txt", tmp);
    long nfl = (long)g.layers * g.n * g.n;
    printf("training %s: %d layers of %d x %d (%s), batch %d, %d MNIST training images, "
           "one epoch, 64 test images\n", cfg, g.layers, g.n, g.n,
           g.optics == D2_OPTICS_THICK ? "thick plates" : "thin phase screens", t.batch, images);
    double r12 = train_rate("1 rank x 2 threads", 1, 2, cfg, images, o1);
    double r21 = train_rate("2 ranks x 1 thread", 2, 1, cfg, images, o2);
    printf("  1 rank  x 2 threads: %.1f samples/s\n", r12);
    printf("  2 ranks x 1 thread:  %.1f samples/s  ratio %.2f (2x1 / 1x2)\n", r21, r21 / r12);
    snprintf(cmd, sizeof cmd, "%s/model.json", o2);
    double bps = file_num(cmd, "\"allreduce_bytes_per_step\"");
    double ars = file_num(cmd, "\"allreduce_seconds\""), steps = file_num(cmd, "\"steps\"");
    printf("  bytes a rank sends per step: %.0f (the phase gradient: %ld floats = %.0f kB, "
           "half out in the reduce-scatter, half in the all-gather)\n",
           bps, nfl, 4e-3 * nfl);
    snprintf(cmd, sizeof cmd, "%s %s --allreduce %ld >%s", mpirun, self, nfl, ar);
    double ar_ms = sh(cmd) == 0 ? file_num(ar, "ms") : NAN;
    double step_ms = 1e3 * t.batch / r21;
    printf("  all-reduce alone (2 ranks, shared memory, median of 40): %.3f ms; a step on 2 ranks "
           "takes %.1f ms (batch / rate), so the all-reduce is %.1f %% of it; inside training "
           "the sums took %.1f ms a step, waiting for the slower rank included\n",
           ar_ms, step_ms, 100 * ar_ms / step_ms, 1e3 * ars / steps);

    /* Per-sample compute of one single-thread rank, from the 2-rank run. */
    double ts = (step_ms - ar_ms) * 1e-3 / (t.batch / 2.0);
    double bytes = 4.0 * nfl;
    static const struct { const char *name; double bw, lat; } nets[] = {
        {"100 Gb/s InfiniBand (12.5 GB/s, 2 us)", 12.5e9, 2e-6},
        {"10 Gb/s Ethernet (1.25 GB/s, 30 us)", 1.25e9, 30e-6}};
    printf("  projection (ring all-reduce of %.0f kB; %.2f ms compute per sample and rank as "
           "measured here; one thread a rank):\n", bytes / 1e3, 1e3 * ts);
    for (size_t k = 0; k < sizeof nets / sizeof *nets; k++) {
        printf("    %s:\n", nets[k].name);
        static const int Ks[] = {8, 32, 128};
        for (int i = 0; i < 3; i++) {
            int K = Ks[i];
            double a = ring_s(bytes, K, nets[k].bw, nets[k].lat);
            /* Batch 32 split K ways (ranks beyond 32 idle) and 8 samples a
             * rank (global batch 8 K). */
            double strong = t.batch * ts / (ceil((double)t.batch / K) * ts + a);
            double weak = K * 8 * ts / (8 * ts + a);
            printf("      %3d ranks: all-reduce %.3f ms; batch %d split: speed-up %.1f; "
                   "8 samples a rank (batch %d): speed-up %.1f\n",
                   K, 1e3 * a, t.batch, strong, K * 8, weak);
        }
    }

    printf("tolerance study of that model: %d Monte-Carlo trials (lateral 0.05 mm, axial 0.2 mm), "
           "sensitivity per layer, 64 test images, no inverse\n", trials);
    double w12 = 0, w21 = 0;
    double s12 = tol_seconds(1, 2, o1, trials, t1, &w12);
    double s21 = tol_seconds(2, 1, o1, trials, t2, &w21);
    printf("  1 rank  x 2 threads: %.2f s (%.2f s wall with the start)\n", s12, w12);
    printf("  2 ranks x 1 thread:  %.2f s (%.2f s wall with mpirun)  ratio %.2f (speed 2x1 / "
           "1x2; with the start %.2f)\n", s21, w21, s12 / s21, w12 / w21);
    snprintf(cmd, sizeof cmd, "cmp -s %s/montecarlo.csv %s/montecarlo.csv", t1, t2);
    printf("  montecarlo.csv of the two runs: %s\n", sh(cmd) == 0 ? "identical" : "DIFFERENT");
    return 0;
}
