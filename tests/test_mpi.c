/* MPI ranks (core/par.h): the single-process calls in this program, and the
 * d2fab binary ($D2FAB_BIN, default ./d2fab) under `mpirun -np 2` on this
 * machine: the tolerance report of two ranks is the single-process report,
 * two trainings with two ranks give the same model bit for bit (and resume to
 * it), eval agrees, and an error on one rank stops the job with its message
 * and no report. Without mpirun, or with a build without MPI, the mpirun
 * tests are skipped with a message saying so. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/par.h"
#include "tests/testlib.h"

static const char *bin(void)
{
    const char *b = getenv("D2FAB_BIN");
    return b && *b ? b : "./d2fab";
}

/* "mpirun -np 2" with the flags this machine needs: as root Open MPI wants
 * --allow-run-as-root, and --oversubscribe lets 2 ranks start on fewer
 * free slots; --bind-to core keeps each single-thread rank on a core of its
 * own (ranks that poll for messages on one shared core wait for each other's
 * time slices: 45 ms a sum instead of 0.02 ms on this machine). */
static char mpirun[256];

/* Runs a shell command; its output goes to the log under the test folder.
 * Returns the exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[8192], full[8400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "(%s) >%s 2>&1", cmd, t_path("log"));
    fflush(stdout);
    int st = system(full);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The last command's output (static buffer). */
static const char *log_text(void)
{
    static char buf[65536];
    FILE *f = fopen(t_path("log"), "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

/* 1 when files a and b hold the same bytes. */
static int same_file(const char *a, const char *b)
{
    return sh("cmp -s '%s' '%s'", a, b) == 0;
}

/* 1 when the JSON reports a and b are equal but for the lines with times. */
static int same_but_seconds(const char *a, const char *b)
{
    return sh("grep -v '\"seconds\"' '%s' >'%s.x' && grep -v '\"seconds\"' '%s' >'%s.x' && "
              "cmp -s '%s.x' '%s.x'", a, a, b, b, a, b) == 0;
}

static const char *model_dir;

/* A small model to study: samples/quick.json (3 layers of 64 x 64), one
 * epoch on 400 images, one process. */
static const char *quick_model(void)
{
    if (model_dir) return model_dir;
    const char *dir = t_path("model");
    if (sh("%s train -c samples/quick.json -o %s --epochs 1 --limit 400 --test-limit 100 -t 1 -q",
           bin(), dir) != 0) {
        printf("  training the test model failed:\n%s\n", log_text());
        return NULL;
    }
    return model_dir = strdup(dir);
}

TEST(one_process_is_rank_0_of_1_and_its_collectives_change_nothing)
{
    d2_err e = {0};
    CHECK(d2_par_rank() == 0);
    CHECK(d2_par_size() == 1);
    long lo = -1, hi = -1;
    d2_par_range(7, &lo, &hi);
    CHECK(lo == 0 && hi == 7);
    float f[3] = {1.5f, -2, 3};
    double d[2] = {0.25, 1e300};
    int v[4] = {1, 2, 3, 4};
    CHECK(d2_par_sum_f32(f, 3, &e) == 0 && f[0] == 1.5f && f[1] == -2 && f[2] == 3);
    CHECK(d2_par_sum_f64(d, 2, &e) == 0 && d[0] == 0.25 && d[1] == 1e300);
    CHECK(d2_par_share(v, sizeof *v, 4, &e) == 0 && v[0] == 1 && v[3] == 4);
    CHECK(d2_par_bcast(v, sizeof v, &e) == 0 && v[1] == 2);
    CHECK(d2_par_barrier(&e) == 0 && e.code == 0);
}

TEST(tolerance_on_two_ranks_writes_the_single_process_report)
{
    const char *m = quick_model();
    CHECK(m != NULL);
    if (!m) return;
    /* Every analysis: per-layer sensitivity, inverse with several draws (the
     * first scan as one set, bisection point by point), a sweep of Monte
     * Carlo with an odd trial count (unequal blocks), a random field and
     * detector noise (seeded per trial and image). */
    const char *cfg = t_path("tol.json");
    t_write_text(cfg, "{\"seed\": 3, \"trials\": 7, \"limit\": 40, \"sweep_scales\": [1, 2],\n"
                      " \"inverse_draws\": 3, \"sensitivity\": \"layers\",\n"
                      " \"lateral_mm\": 0.2, \"axial_mm\": 1, \"height_error_mm\": 0.02,\n"
                      " \"detector_noise_relative\": 0.05}\n");
    const char *one = t_path("tol1"), *two = t_path("tol2");
    CHECK(sh("%s tolerance -m %s -c %s -o %s -t 1 -q", bin(), m, cfg, one) == 0);
    int rc = sh("%s %s tolerance -m %s -c %s -o %s -t 1", mpirun, bin(), m, cfg, two);
    CHECK(rc == 0);
    if (rc) printf("%s\n", log_text());
    const char *lg = log_text();
    /* Rank 0 alone prints: one summary, not two. */
    const char *p = strstr(lg, "report: ");
    CHECK(p && !strstr(p + 1, "report: "));
    const char *files[] = {"montecarlo.csv", "montecarlo_summary.csv", "sensitivity.csv",
                           "inverse.csv", "scan.csv", "compare.csv"};
    char a[4096], b[4096];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(a, sizeof a, "%s/%s", one, files[i]);
        snprintf(b, sizeof b, "%s/%s", two, files[i]);
        CHECK(t_exists(a));
        if (!same_file(a, b)) {
            printf("  %s differs\n", files[i]);
            CHECK(0);
        }
    }
    snprintf(a, sizeof a, "%s/report.json", one);
    snprintf(b, sizeof b, "%s/report.json", two);
    CHECK(same_but_seconds(a, b));
}

/* Trains samples/quick.json into dir on two ranks (1 thread each). */
static int train2(const char *dir, int epochs, int resume)
{
    return sh("%s %s train -c samples/quick.json -o %s --epochs %d --limit 480 --test-limit 100 "
              "-t 1 -q%s", mpirun, bin(), dir, epochs, resume ? " --resume" : "");
}

static int same_layers(const char *a, const char *b)
{
    char x[4096], y[4096];
    int ok = 1;
    for (int l = 1; l <= 3; l++) {
        snprintf(x, sizeof x, "%s/layer%d.npy", a, l);
        snprintf(y, sizeof y, "%s/layer%d.npy", b, l);
        ok &= t_exists(x) && same_file(x, y);
    }
    return ok;
}

TEST(training_on_two_ranks_twice_gives_the_same_model_bit_for_bit)
{
    const char *a = t_path("ta"), *b = t_path("tb"), *one = t_path("t1");
    CHECK(train2(a, 2, 0) == 0);
    CHECK(train2(b, 2, 0) == 0);
    CHECK(same_layers(a, b));
    char x[4096], y[4096];
    snprintf(x, sizeof x, "%s/checkpoints/epoch-0002/adam_v.npy", a);
    snprintf(y, sizeof y, "%s/checkpoints/epoch-0002/adam_v.npy", b);
    CHECK(t_exists(x) && same_file(x, y));
    snprintf(x, sizeof x, "%s/model.json", a);
    CHECK(sh("grep -q '\"ranks\":[[:space:]]*2' %s", x) == 0);
    /* The same training on one process with 2 threads sums the batch in
     * another order, so not the same bits, but the same descent: the train
     * loss of the first epoch agrees to rounding. A rank that dropped or
     * double-counted its share would not. */
    CHECK(sh("%s train -c samples/quick.json -o %s --epochs 2 --limit 480 --test-limit 100 -t 2 -q",
             bin(), one) == 0);
    snprintf(y, sizeof y, "%s/model.json", one);
    double la = -1, l1 = -2;
    if (sh("grep -m1 '\"train_loss\"' %s | tr -dc '0-9.\\n' >%s", x, t_path("la")) == 0 &&
        sh("grep -m1 '\"train_loss\"' %s | tr -dc '0-9.\\n' >%s", y, t_path("l1")) == 0) {
        FILE *f = fopen(t_path("la"), "r"), *g = fopen(t_path("l1"), "r");
        if (f && fscanf(f, "%lf", &la) != 1) la = -1;
        if (g && fscanf(g, "%lf", &l1) != 1) l1 = -2;
        if (f) fclose(f);
        if (g) fclose(g);
    }
    CHECK_NEAR(la, l1, 1e-4 * l1);
}

TEST(training_on_two_ranks_resumes_to_the_same_model)
{
    const char *a = t_path("ta"), *r = t_path("tr");
    if (!t_exists(a)) CHECK(train2(a, 2, 0) == 0);
    CHECK(train2(r, 1, 0) == 0);
    CHECK(train2(r, 2, 1) == 0);
    CHECK(same_layers(a, r));
}

TEST(eval_on_two_ranks_counts_what_one_process_counts)
{
    const char *m = quick_model();
    CHECK(m != NULL);
    if (!m) return;
    const char *p1 = t_path("e1.png"), *p2 = t_path("e2.png");
    const char *drop = "grep -v -e '^time' -e '^output intensity'";
    CHECK(sh("%s eval -m %s --limit 333 -t 1 --png %s | %s >%s", bin(), m, p1, drop,
             t_path("e1")) == 0);
    CHECK(sh("%s %s eval -m %s --limit 333 -t 1 --png %s | %s >%s", mpirun, bin(), m, p2, drop,
             t_path("e2")) == 0);
    /* Accuracy, per-class counts and the confusion matrix are counts: equal.
     * The efficiencies are sums in another order: the 4 printed digits. */
    CHECK(same_file(t_path("e1"), t_path("e2")));
    CHECK(same_file(p1, p2));
}

TEST(an_error_on_one_rank_stops_the_job_with_its_message_and_no_report)
{
    const char *m = quick_model();
    CHECK(m != NULL);
    if (!m) return;
    const char *out = t_path("tolbad");
    /* Rank 1 alone gets a data folder that does not exist (mpirun's
     * colon-separated programs); rank 0 would go on to the study. */
    char one[8192];
    snprintf(one, sizeof one,
             "%s tolerance -m %s -o %s -t 1 -n 50 --limit 40 --lateral-mm 0.1 -q", bin(), m, out);
    char *np = strstr(mpirun, "-np 2");
    char head[256];
    snprintf(head, sizeof head, "%.*s-np 1%s", (int)(np - mpirun), mpirun, np + 5);
    int rc = sh("%s %s : -np 1 %s --data /nonexistent-d2fab-data", head, one, one);
    CHECK(rc != 0);
    const char *lg = log_text();
    CHECK(strstr(lg, "rank 1 of 2") && strstr(lg, "nonexistent-d2fab-data"));
    char rep[4096];
    snprintf(rep, sizeof rep, "%s/report.json", out);
    CHECK(!t_exists(rep));
}

TEST(commands_that_do_not_split_refuse_to_run_on_ranks)
{
    int rc = sh("%s %s check samples/quick.json", mpirun, bin());
    CHECK(rc == 1);
    CHECK(strstr(log_text(), "runs as one process") != NULL);
}

int main(void)
{
    RUN(one_process_is_rank_0_of_1_and_its_collectives_change_nothing);
    const char *why = NULL;
    if (!d2_par_have_mpi())
        why = "this build has no MPI (pkg-config ompi-c not found, or MPI=no)";
    else if (system("command -v mpirun >/dev/null 2>&1") != 0)
        why = "mpirun not found (Debian: openmpi-bin)";
    else if (access(bin(), X_OK) != 0)
        why = "the d2fab binary is missing (build it, or set D2FAB_BIN)";
    if (why) {
        printf("skipped: the mpirun tests (%s)\n", why);
        return t_finish();
    }
    snprintf(mpirun, sizeof mpirun, "mpirun -np 2 %s--bind-to core",
             geteuid() == 0 ? "--allow-run-as-root --oversubscribe " : "");
    setenv("D2FAB_WISDOM", t_path("wisdom"), 1);
    if (getenv("D2FAB_SANITIZE")) {
        /* Open MPI's libraries have no frame pointers: LeakSanitizer's fast
         * unwinder loses the stack of what MPI_Init keeps until exit, and
         * tests/lsan.supp matches it only on full stacks. */
        const char *a = getenv("ASAN_OPTIONS");
        char opts[1024];
        snprintf(opts, sizeof opts, "%s%sfast_unwind_on_malloc=0", a ? a : "", a && *a ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }
    RUN(tolerance_on_two_ranks_writes_the_single_process_report);
    RUN(training_on_two_ranks_twice_gives_the_same_model_bit_for_bit);
    RUN(training_on_two_ranks_resumes_to_the_same_model);
    RUN(eval_on_two_ranks_counts_what_one_process_counts);
    RUN(an_error_on_one_rank_stops_the_job_with_its_message_and_no_report);
    RUN(commands_that_do_not_split_refuse_to_run_on_ranks);
    return t_finish();
}
