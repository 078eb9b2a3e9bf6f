/* Reliability and safety of the whole program, run as a user runs it: the real
 * d2fab binary ($D2FAB_BIN, default ./d2fab) killed with SIGKILL while it
 * writes, resumed, fed paths that try to leave their folder, sizes that would
 * exhaust memory, bad options and missing files.
 *
 * Kill moments are random (seeded from the clock; D2FAB_TEST_SEED=N repeats a
 * run) plus one kill aimed at the moment a temporary file exists, so at least
 * one kill lands in the middle of a write. Training needs MNIST (make test
 * fetches it; $D2FAB_DATA or data/). D2FAB_TEST_QUICK=1 (valgrind runs)
 * makes fewer kills. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/idx.h"
#include "core/image.h"
#include "core/npy.h"
#include "core/util.h"
#include "export/export.h"
#include "run/run.h"
#include "tests/testlib.h"
#include "optics/optics.h"

static d2_rng rng;
static int quick;

static const char *bin(void)
{
    const char *b = getenv("D2FAB_BIN");
    return b && *b ? b : "./d2fab";
}

static char *join(const char *dir, const char *name)
{
    static char buf[16][4096];
    static int k;
    k = (k + 1) % 16;
    snprintf(buf[k], sizeof buf[k], "%.3000s/%.1000s", dir, name);
    return buf[k];
}

static double now(void) { return d2_now(); }

static void sleep_s(double s)
{
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* Starts d2fab with args (NULL-terminated, without the program name); its
 * output goes to out_file (or /dev/null). */
static pid_t spawn(const char *const *args, const char *out_file)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = bin();
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out_file ? out_file : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Exit status, or 128 + signal. */
static int wait_for(pid_t pid)
{
    int st = 0;
    if (pid < 0) return -1;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs d2fab to the end; its stdout and stderr land in *out (static). */
static int run(const char *const *args, const char **out)
{
    static char *text, log[1024];
    if (!log[0]) snprintf(log, sizeof log, "%s/run.log", t_tmpdir());
    int rc = wait_for(spawn(args, log));
    free(text);
    text = NULL;
    d2_err e = {0};
    if (d2_read_file(log, 1 << 20, &text, NULL, &e)) text = NULL;
    if (out) *out = text ? text : "";
    return rc;
}

/* Prints the output of a run that did not do what the test expected. */
static void show(const char *what, int rc, const char *out)
{
    printf("  %s: %s: exit %d, output:\n%s\n", t_cur, what, rc, out);
}

static int same_file(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    d2_err e = {0};
    int same = d2_read_file(a, 256u << 20, &x, &nx, &e) == 0 &&
               d2_read_file(b, 256u << 20, &y, &ny, &e) == 0 && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

static void copy_file(const char *from, const char *to)
{
    char *x = NULL;
    size_t n = 0;
    d2_err e = {0};
    if (d2_read_file(from, 256u << 20, &x, &n, &e) || d2_write_file(to, x, n, &e)) {
        printf("  copy %s -> %s: %s\n", from, to, e.msg);
        exit(3);
    }
    free(x);
}

static int is_temp(const char *name) { return name[0] == '.' && strstr(name, ".tmp-"); }

/* Number of hidden temporaries ".NAME.tmp-XXXXXX" in dir. */
static int count_temps(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    for (struct dirent *de; (de = readdir(d));) n += is_temp(de->d_name) != 0;
    closedir(d);
    return n;
}

/* Polls dir1 and dir2 (may be NULL) until a hidden temporary appears while
 * pid runs (1) or pid exits first (0; not reaped). */
static int wait_for_temp(pid_t pid, const char *dir1, const char *dir2)
{
    for (;;) {
        if (count_temps(dir1) || (dir2 && count_temps(dir2))) return 1;
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == pid)
            return 0;
        sleep_s(0.0002);
    }
}

/* Regular files of dir (no temporaries), sorted; returns the count. */
static int list_files(const char *dir, char names[][64], int max)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.' || n >= max) continue;
        struct stat st;
        if (stat(join(dir, de->d_name), &st) || !S_ISREG(st.st_mode)) continue;
        snprintf(names[n++], 64, "%.63s", de->d_name);
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char t[64];
            memcpy(t, names[j], 64);
            memcpy(names[j], names[j - 1], 64);
            memcpy(names[j - 1], t, 64);
        }
    return n;
}

static void rm_rf(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("  cannot remove %s\n", dir);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* The file parses as what its name says. */
static int parses(const char *path)
{
    d2_err e = {0};
    int ok = 0;
    if (ends_with(path, ".npy")) {
        npy_array a;
        ok = npy_read(path, &a, &e) == 0;
        npy_free(&a);
    } else if (ends_with(path, ".png")) {
        float *px = NULL;
        int w, h;
        ok = img_read_gray(path, &w, &h, &px, &e) == 0;
        free(px);
    } else if (ends_with(path, ".json")) {
        cJSON *j = NULL;
        ok = cfg_load(path, &j, &e) == 0;
        cJSON_Delete(j);
    } else if (ends_with(path, ".stl")) {
        struct stat st;
        char *b = NULL;
        size_t n = 0;
        if (stat(path, &st) == 0 && d2_read_file(path, 1u << 30, &b, &n, &e) == 0 && n >= 84) {
            uint32_t facets;
            memcpy(&facets, b + 80, 4);
            ok = (uint64_t)n == 84 + 50 * (uint64_t)facets;
        }
        free(b);
    } else {
        ok = 1;
    }
    if (!ok) printf("  %s: %s does not parse: %s\n", t_cur, path, e.msg);
    return ok;
}

/* ------------------------------------------------ stale temporary files */

TEST(a_write_removes_stale_temporaries_of_its_file_but_not_a_live_writers)
{
    const char *dir = t_path("stale");
    d2_err e = {0};
    CHECK(d2_mkdir_p(dir, &e) == 0);
    /* Left by killed writers of x.npy: removed by the next write of x.npy. */
    t_write_text(join(dir, ".x.npy.tmp-AbC123"), "half");
    t_write_text(join(dir, ".x.npy.tmp-zzzzzz"), "half");
    /* Not temporaries of x.npy: kept. */
    t_write_text(join(dir, ".y.npy.tmp-AbC123"), "other file");
    t_write_text(join(dir, ".x.npy.tmp-1234567"), "other pattern");
    t_write_text(join(dir, "x.npy.tmp-AbC123"), "not hidden");
    /* A live writer holds its lock: kept. */
    const char *live = join(dir, ".x.npy.tmp-LIVE00");
    t_write_text(live, "in progress");
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(live, O_RDONLY);
        char c = flock(fd, LOCK_EX) == 0 ? 'y' : 'n';
        if (write(pipefd[1], &c, 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    char c = 0;
    CHECK(read(pipefd[0], &c, 1) == 1 && c == 'y');
    CHECK(d2_write_file(join(dir, "x.npy"), "new", 3, &e) == 0);
    CHECK(!exists(join(dir, ".x.npy.tmp-AbC123")));
    CHECK(!exists(join(dir, ".x.npy.tmp-zzzzzz")));
    CHECK(exists(join(dir, ".y.npy.tmp-AbC123")));
    CHECK(exists(join(dir, ".x.npy.tmp-1234567")));
    CHECK(exists(join(dir, "x.npy.tmp-AbC123")));
    CHECK(exists(live));
    kill(pid, SIGKILL);
    wait_for(pid);
    close(pipefd[0]);
    close(pipefd[1]);
    /* Its writer is gone now: the next write removes it. */
    CHECK(d2_write_file(join(dir, "x.npy"), "newer", 5, &e) == 0);
    CHECK(!exists(live));
}

/* ----------------------------------------------------- killing export */

/* Random phase maps for an export that takes a while to write. */
static void phase_maps(const char *dir, int n, int layers)
{
    d2_err e = {0};
    size_t shape[2] = {(size_t)n, (size_t)n};
    float *v = malloc(sizeof(float) * (size_t)n * (size_t)n);
    d2_mkdir_p(dir, &e);
    for (int l = 0; l < layers; l++) {
        for (size_t i = 0; i < (size_t)n * (size_t)n; i++)
            v[i] = (float)(2 * M_PI * d2_rng_uniform(&rng));
        char name[32];
        snprintf(name, sizeof name, "p%d.npy", l + 1);
        CHECK(npy_write(join(dir, name), NPY_F32, 2, shape, v, &e) == 0);
    }
    free(v);
}

/* After a kill: every file of the folder holds the previous complete version
 * (in a) or the new one (in b) and parses; the index file (export.json,
 * assembly.json), which the command removes before replacing anything and
 * writes last, is absent or agrees with every other file. Returns 1 when the
 * folder mixes old and new files (the kill hit mid-way). */
static int check_outputs(const char *work, const char *a, const char *b, const char *index)
{
    char names[64][64];
    int n = list_files(a, names, 64), na = 0, nb = 0, json = 0;
    CHECK(n >= 4);
    for (int i = 0; i < n; i++) {
        const char *w = join(work, names[i]);
        int is_index = !strcmp(names[i], index);
        if (!exists(w)) {
            if (!is_index) printf("  %s: %s is missing after the kill\n", t_cur, w);
            CHECK(is_index);
            continue;
        }
        /* Files that the two runs write identically (previews, unchanged
         * parts) say nothing about which run wrote them. */
        int sa = same_file(w, join(a, names[i])), sb = same_file(w, join(b, names[i]));
        if (!sa && !sb) printf("  %s: %s holds neither the old nor the new file\n", t_cur, w);
        CHECK(sa || sb);
        CHECK(parses(w));
        if (is_index) json = sa ? 1 : 2;
        else if (sa && !sb) na++;
        else if (sb && !sa) nb++;
    }
    if (json == 1) CHECK(nb == 0);
    if (json == 2) CHECK(na == 0);
    return na && nb;
}

/* Runs the command (args(out, 0) writes version A, args(out, 1) version B)
 * into a and b, then `kills` times: work := a, start B into work, SIGKILL it
 * (the first time as soon as a temporary file appears, then at random
 * moments up to 1.1 x its run time) and check the folder. Finally B runs to
 * the end in work: every file is B's and no temporary is left. */
typedef const char *const *(*args_fn)(const char *out, int variant);

static void kill_while_writing(args_fn args, const char *tag, const char *index, int kills)
{
    char a[1024], b[1024], work[1024];
    snprintf(a, sizeof a, "%s/%s-a", t_tmpdir(), tag);
    snprintf(b, sizeof b, "%s/%s-b", t_tmpdir(), tag);
    snprintf(work, sizeof work, "%s/%s-work", t_tmpdir(), tag);
    const char *out;
    int rc = run(args(a, 0), &out);
    if (rc) show("version A", rc, out);
    CHECK(rc == 0);
    double t0 = now();
    rc = run(args(b, 1), &out);
    double T = now() - t0;
    if (rc) show("version B", rc, out);
    CHECK(rc == 0);
    char names[64][64];
    int n = list_files(a, names, 64), mixed = 0, aimed_hit = 0;
    for (int k = 0; k < kills; k++) {
        /* The first kill is aimed at the moment a temporary file shows up;
         * should the poll miss every write (a starved machine), try again. */
        int aimed = k == 0;
        for (int attempt = 0; attempt < (aimed ? 5 : 1) && !(aimed && aimed_hit); attempt++) {
            rm_rf(work);
            d2_err e = {0};
            d2_mkdir_p(work, &e);
            for (int i = 0; i < n; i++) copy_file(join(a, names[i]), join(work, names[i]));
            pid_t pid = spawn(args(work, 1), NULL);
            if (aimed) aimed_hit = wait_for_temp(pid, work, NULL);
            else sleep_s(1.1 * T * d2_rng_uniform(&rng));
            kill(pid, SIGKILL);
            wait_for(pid);
            mixed += check_outputs(work, a, b, index);
        }
    }
    printf("  %d kills (a run takes %.2f s): %d mid-way with old and new files side by side\n",
           kills, T, mixed);
    CHECK(aimed_hit);
    rc = run(args(work, 1), &out);
    if (rc) show("run after the kills", rc, out);
    CHECK(rc == 0);
    for (int i = 0; i < n; i++) CHECK(same_file(join(work, names[i]), join(b, names[i])));
    CHECK(count_temps(work) == 0);
    rm_rf(work);
}

/* Export of three 320 x 320 random phase maps; B has a thicker base. */
static const char *const *export_args(const char *out, int variant)
{
    static char p[3][1024], o[1024];
    static const char *args[32];
    for (int l = 0; l < 3; l++) snprintf(p[l], sizeof p[l], "%s/p%d.npy", t_path("exp-in"), l + 1);
    snprintf(o, sizeof o, "%s", out);
    const char *a[] = {"export", "--phase", p[0], p[1], p[2], "--pitch-mm", "0.4",
                       "--frequency-thz", "0.4", "--printer", "objet-connex500", "--force",
                       "--base-mm", variant ? "2" : "1", "--out", o, "-q", NULL};
    memcpy(args, a, sizeof a);
    return args;
}

TEST(export_killed_at_random_moments_leaves_old_or_new_files_never_truncated)
{
    phase_maps(t_path("exp-in"), 320, 3);
    kill_while_writing(export_args, "exp", "export.json", quick ? 3 : 8);
}

/* Meshes of an export of three 120 x 120 random phase maps; B has a wider
 * frame. */
static const char *const *mesh_args(const char *out, int variant)
{
    static char x[1024], o[1024];
    static const char *args[32];
    snprintf(x, sizeof x, "%s", t_path("mesh-export"));
    snprintf(o, sizeof o, "%s", out);
    const char *a[] = {"mesh", "--export", x, "--out", o, "--frame-mm", variant ? "12" : "10",
                       "-q", NULL};
    memcpy(args, a, sizeof a);
    return args;
}

TEST(mesh_killed_at_random_moments_leaves_old_or_new_parts_never_truncated)
{
    const char *in = t_path("mesh-in"), *out;
    phase_maps(in, 120, 3);
    const char *ex[] = {"export", "--phase", join(in, "p1.npy"), join(in, "p2.npy"),
                        join(in, "p3.npy"), "--pitch-mm", "0.4", "--frequency-thz", "0.4",
                        "--out", t_path("mesh-export"), "-q", NULL};
    int rc = run(ex, &out);
    if (rc) show("export", rc, out);
    CHECK(rc == 0);
    kill_while_writing(mesh_args, "mesh", "assembly.json", quick ? 3 : 6);
}

/* ------------------------------------------------ killing training */

static const char *const *train_args(const char *out, int resume)
{
    static char o[1024];
    static const char *args[32];
    snprintf(o, sizeof o, "%s", out);
    const char *a[] = {"train", "--config", "samples/quick.json", "--out", o, "--limit", "400",
                       "--test-limit", "100", "--epochs", "3", "--threads", "2", "-q",
                       resume ? "--resume" : NULL, NULL};
    memcpy(args, a, sizeof a);
    return args;
}

/* After a kill: model.json and the checkpoint named by checkpoints/latest
 * load completely (every file they name parses). Returns the checkpoint's
 * epoch, 0 when there is none yet. */
static int check_train_dir(const char *work)
{
    d2_err e = {0};
    d2_model m;
    if (exists(join(work, "model.json"))) {
        int rc = model_load(work, &m, &e);
        if (rc) printf("  %s: %s\n", t_cur, e.msg);
        CHECK(rc == 0);
        model_free(&m);
    }
    char *txt = NULL;
    const char *latest = join(work, "checkpoints/latest");
    if (!exists(latest)) return 0;
    CHECK(d2_read_file(latest, 256, &txt, NULL, &e) == 0);
    if (!txt) return -1;
    txt[strcspn(txt, "\n")] = 0;
    int epoch = 0;
    CHECK(sscanf(txt, "epoch-%d", &epoch) == 1 && epoch >= 1 && epoch <= 3);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoints/%.200s", work, txt);
    free(txt);
    int rc = model_load(dir, &m, &e);
    if (rc) printf("  %s: checkpoint: %s\n", t_cur, e.msg);
    CHECK(rc == 0);
    model_free(&m);
    const char *files[] = {"adam_m.npy", "adam_v.npy", "phase.npy", "state.json"};
    for (int i = 0; i < 4; i++) CHECK(parses(join(dir, files[i])));
    return epoch;
}

static const char *data_dir(void) { return dataset_default_dir(); }

TEST(training_killed_during_checkpoints_resumes_to_the_same_model)
{
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/mnist/train-images-idx3-ubyte", data_dir());
    if (!exists(probe)) {
        printf("  %s: %s missing: run scripts/fetch-data\n", t_cur, probe);
        CHECK(exists(probe));
        return;
    }
    const char *ref = t_path("train-ref"), *work = t_path("train-work");
    const char *out;
    double t0 = now();
    int rc = run(train_args(ref, 0), &out);
    double T = now() - t0;
    if (rc) show("reference training", rc, out);
    CHECK(rc == 0);

    /* --resume with nothing to resume from is bad input, naming the folder. */
    rc = run(train_args(work, 1), &out);
    CHECK(rc == 2 && strstr(out, "no complete checkpoint") && strstr(out, work));

    int kills = quick ? 3 : 6, resumed = 0, partial = 0;
    for (int k = 0; k < kills; k++) {
        int have = exists(join(work, "checkpoints/latest"));
        pid_t pid = spawn(train_args(work, have), NULL);
        resumed += have;
        if (k == 0) {
            /* Aimed at the first checkpoint's writes. */
            partial += wait_for_temp(pid, join(work, "checkpoints/epoch-0001"), work);
        } else {
            sleep_s(T * d2_rng_uniform(&rng));
        }
        kill(pid, SIGKILL);
        wait_for(pid);
        check_train_dir(work);
    }
    printf("  %d kills (training takes %.2f s), %d runs resumed, aimed kill mid-write: %s\n",
           kills, T, resumed, partial ? "yes" : "no");
    CHECK(partial);
    int have = exists(join(work, "checkpoints/latest"));
    rc = run(train_args(work, have), &out);
    if (rc) show("final run", rc, out);
    CHECK(rc == 0);
    CHECK(check_train_dir(work) == 3);
    for (int l = 1; l <= 3; l++) {
        char name[32];
        snprintf(name, sizeof name, "layer%d.npy", l);
        if (!same_file(join(work, name), join(ref, name)))
            printf("  %s: %s differs from the uninterrupted run\n", t_cur, name);
        CHECK(same_file(join(work, name), join(ref, name)));
    }
    d2_model m;
    d2_err e = {0};
    CHECK(model_load(work, &m, &e) == 0 && cJSON_GetArraySize(m.history) == 3);
    model_free(&m);
}

TEST(resume_after_the_last_checkpoint_still_writes_the_model)
{
    /* A kill between the last checkpoint and the model files: resuming has
     * no epoch left to train but must still write the final model. */
    const char *ref = t_path("train-ref"), *work = t_path("train-last");
    const char *out;
    if (!exists(join(ref, "model.json"))) {
        CHECK(run(train_args(ref, 0), &out) == 0);
    }
    d2_err e = {0};
    char from[4096], to[4096], names[32][64];
    snprintf(from, sizeof from, "%s/checkpoints/epoch-0003", ref);
    snprintf(to, sizeof to, "%s/checkpoints/epoch-0003", work);
    CHECK(d2_mkdir_p(to, &e) == 0);
    int n = list_files(from, names, 32);
    CHECK(n >= 8);
    for (int i = 0; i < n; i++) copy_file(join(from, names[i]), join(to, names[i]));
    copy_file(join(ref, "checkpoints/latest"), join(work, "checkpoints/latest"));
    int rc = run(train_args(work, 1), &out);
    if (rc) show("resume", rc, out);
    CHECK(rc == 0);
    for (int l = 1; l <= 3; l++) {
        char name[32];
        snprintf(name, sizeof name, "layer%d.npy", l);
        CHECK(same_file(join(work, name), join(ref, name)));
    }
    CHECK(parses(join(work, "model.json")));
}


/* ------------------------------------------------------------- paths */

static const char small_config[] =
    "{\"geometry\": {\"frequency_thz\": 0.4, \"pitch_mm\": 0.4, \"neurons\": 4, \"layers\": 2,"
    " \"gaps_mm\": [20, 20, 20]},"
    " \"input\": {\"aperture_mm\": 1.2, \"dataset\": \"mnist\"},"
    " \"detector\": {\"layout\": \"custom\", \"size_mm\": 0.4,"
    " \"centers_mm\": [[-0.4, 0], [0.4, 0]]}}";

/* A valid 4 x 4, 2-layer model in dir. */
static void small_model(const char *dir)
{
    d2_err e = {0};
    cJSON *root = NULL;
    d2_model m = {0};
    CHECK(cfg_parse("small", small_config, &root, &e) == 0);
    CHECK(config_read("small", root, &m.g, &m.t, &e) == 0);
    CHECK(model_alloc(&m, &e) == 0);
    CHECK(model_save(dir, &m, &e) == 0);
    cJSON_Delete(root);
    model_free(&m);
}

/* Rewrites dir/file with the first `from` replaced by `to`. */
static void replace_in(const char *dir, const char *file, const char *from, const char *to)
{
    char *txt = NULL;
    d2_err e = {0};
    CHECK(d2_read_file(join(dir, file), 1 << 20, &txt, NULL, &e) == 0);
    if (!txt) return;
    char *at = strstr(txt, from);
    CHECK(at != NULL);
    if (at) {
        size_t n = strlen(txt) + strlen(to) + 1;
        char *out = malloc(n);
        snprintf(out, n, "%.*s%s%s", (int)(at - txt), txt, to, at + strlen(from));
        t_write_text(join(dir, file), out);
        free(out);
    }
    free(txt);
}

/* Names a file outside a model folder in four ways; each must be refused
 * with bad input naming the key, by the library and by `d2fab eval`. */
TEST(model_json_layer_files_cannot_point_outside_the_model_folder)
{
    const char *outside = t_path("outside.npy");
    float z[16] = {0};
    size_t shape[2] = {4, 4};
    d2_err e = {0};
    CHECK(npy_write(outside, NPY_F32, 2, shape, z, &e) == 0);
    struct {
        const char *name, *why;
    } bad[] = {
        {"../outside.npy", "contains \"..\""},
        {"/etc/passwd", "absolute path"},
        {"link.npy", "outside the folder"},
        {"sub/../../outside.npy", "contains \"..\""},
        {"dirlink/outside.npy", "outside the folder"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char d[64];
        snprintf(d, sizeof d, "model-path-%zu", i);
        const char *dir = t_path(d);
        small_model(dir);
        CHECK(symlink(outside, join(dir, "link.npy")) == 0);
        CHECK(symlink(t_tmpdir(), join(dir, "dirlink")) == 0);
        char quoted[128];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i].name);
        replace_in(dir, "model.json", "\"layer1.npy\"", quoted);
        d2_model m;
        CHECK_ERR(model_load(dir, &m, &e), e, D2_EINPUT, bad[i].why);
        CHECK(strstr(e.msg, "layers[0]") != NULL);
        const char *out;
        const char *args[] = {"eval", "--model", dir, NULL};
        int rc = run(args, &out);
        if (rc != 2 || !strstr(out, "layers[0]")) show("eval", rc, out);
        CHECK(rc == 2 && strstr(out, "layers[0]") && strstr(out, dir));
    }
    /* The untouched model loads: the refusals are about the paths. */
    const char *ok = t_path("model-path-ok");
    small_model(ok);
    d2_model m;
    CHECK(model_load(ok, &m, &e) == 0);
    model_free(&m);
}

TEST(export_json_height_files_cannot_point_outside_the_export_folder)
{
    const char *model = t_path("exp-path-model"), *outside = t_path("outside-h.npy");
    float h[16];
    for (int i = 0; i < 16; i++) h[i] = 1.0f;
    size_t shape[2] = {4, 4};
    d2_err e = {0};
    CHECK(npy_write(outside, NPY_F32, 2, shape, h, &e) == 0);
    small_model(model);
    const char *bad[][2] = {{"../outside-h.npy", "contains \"..\""},
                            {"/etc/passwd", "absolute path"},
                            {"link.npy", "outside the folder"}};
    for (int i = 0; i < 3; i++) {
        char d[64];
        snprintf(d, sizeof d, "exp-path-%d", i);
        const char *dir = t_path(d), *out;
        const char *args[] = {"export", "--model", model, "--out", dir, "-q", NULL};
        int rc = run(args, &out);
        if (rc) show("export", rc, out);
        CHECK(rc == 0);
        d2_model m;
        CHECK(export_load_as_model(dir, &m, &e) == 0);
        model_free(&m);
        CHECK(symlink(outside, join(dir, "link.npy")) == 0);
        char quoted[128];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i][0]);
        replace_in(dir, "export.json", "\"layer1_height.npy\"", quoted);
        CHECK_ERR(export_load_as_model(dir, &m, &e), e, D2_EINPUT, bad[i][1]);
        CHECK(strstr(e.msg, "layer_files[0].heights_npy") != NULL);
        const char *ev[] = {"eval", "--model", dir, NULL};
        rc = run(ev, &out);
        CHECK(rc == 2 && strstr(out, "heights_npy"));
    }
}

TEST(a_checkpoint_pointer_cannot_leave_the_checkpoints_folder)
{
    const char *out = t_path("ck-path"), *elsewhere = t_path("ck-elsewhere");
    d2_err e = {0};
    CHECK(d2_mkdir_p(join(out, "checkpoints"), &e) == 0);
    small_model(join(elsewhere, "epoch-0001"));
    const char *text;
    /* "../..": refused by name; a link out of checkpoints/: refused too. */
    t_write_text(join(out, "checkpoints/latest"), "../../ck-elsewhere/epoch-0001\n");
    int rc = run(train_args(out, 1), &text);
    CHECK(rc == 2 && strstr(text, "checkpoints/latest") && strstr(text, "\"..\""));
    CHECK(symlink(join(elsewhere, "epoch-0001"), join(out, "checkpoints/epoch-0001")) == 0);
    t_write_text(join(out, "checkpoints/latest"), "epoch-0001\n");
    rc = run(train_args(out, 1), &text);
    if (rc != 2) show("resume through a link", rc, text);
    CHECK(rc == 2 && strstr(text, "outside the folder"));
}


TEST(run_config_paths_cannot_point_outside_the_config_folder)
{
    const char *dir = t_path("runcfg"), *outside = t_path("runcfg-outside-model");
    d2_err e = {0};
    CHECK(d2_mkdir_p(dir, &e) == 0);
    small_model(outside);
    small_model(join(dir, "inside-model"));
    CHECK(symlink(outside, join(dir, "link-model")) == 0);
    const char *cfg = join(dir, "run.json");
    struct {
        const char *json, *key, *why;
    } bad[] = {
        {"{\"model\": \"../runcfg-outside-model\"}", "model", "contains \"..\""},
        {"{\"model\": \"/etc\"}", "model", "absolute path"},
        {"{\"model\": \"link-model\"}", "model", "outside the folder"},
        {"{\"phases\": {\"files\": [\"../outside.npy\"], \"pitch_mm\": 0.4, "
         "\"frequency_thz\": 0.4}}",
         "phases.files[0]", "contains \"..\""},
        {"{\"model\": \"inside-model\", \"printer\": \"/etc/passwd.json\"}", "printer",
         "absolute path"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        t_write_text(cfg, bad[i].json);
        run_config c;
        CHECK_ERR(run_config_load(cfg, &c, &e), e, D2_EINPUT, bad[i].why);
        CHECK(strstr(e.msg, bad[i].key) && strstr(e.msg, cfg));
    }
    /* Inside the folder it loads; through the program a path out is bad input. */
    t_write_text(cfg, "{\"model\": \"inside-model\"}");
    run_config c;
    CHECK(run_config_load(cfg, &c, &e) == 0);
    run_config_free(&c);
    t_write_text(cfg, bad[2].json);
    const char *out;
    const char *args[] = {"run", cfg, "--out", t_path("runcfg-pkg"), "-q", NULL};
    int rc = run(args, &out);
    if (rc != 2) show("run", rc, out);
    CHECK(rc == 2 && strstr(out, "outside the folder") && !exists(t_path("runcfg-pkg")));
}

/* Files changed since `before` anywhere in the scratch folder other than
 * under out1/, out2/ and out3/ (and the test's own run.log and FFTW wisdom). */
static int new_files_outside(const char *before, const char *out1, const char *out2,
                             const char *out3)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && find . -newer '%s' \\( -type f -o -type l \\) | "
             "grep -v -e '^./%s/' -e '^./%s/' -e '^./%s/' -e '^./run.log$' "
             "-e '^./wisdom$'",
             t_tmpdir(), before, out1, out2, out3);
    FILE *p = popen(cmd, "r");
    int n = 0;
    char line[1024];
    while (p && fgets(line, sizeof line, p)) {
        printf("  %s: written outside --out: %s", t_cur, line);
        n++;
    }
    if (p) pclose(p);
    return n;
}

TEST(train_export_and_mesh_write_only_under_out)
{
    const char *stamp = t_path("stamp");
    t_write_text(stamp, "");
    sleep_s(1.05); /* -newer may compare whole seconds */
    const char *out;
    int rc = run(train_args(t_path("only-train"), 0), &out);
    if (rc) show("train", rc, out);
    CHECK(rc == 0);
    const char *ex[] = {"export", "--model", t_path("only-train"), "--out", t_path("only-export"),
                        "-q", NULL};
    rc = run(ex, &out);
    if (rc) show("export", rc, out);
    CHECK(rc == 0);
    CHECK(exists(t_path("only-export/export.json")));
    const char *me[] = {"mesh", "--export", t_path("only-export"), "--out", t_path("only-mesh"), "-q",
                        NULL};
    rc = run(me, &out);
    if (rc) show("mesh", rc, out);
    CHECK(rc == 0 && exists(t_path("only-mesh/assembly.json")));
    CHECK(new_files_outside(stamp, "only-train", "only-export", "only-mesh") == 0);

    /* --init from a model of other optics is refused, naming the key, and
     * writes nothing; from the same optics it records where it started. */
    char cfg[8192];
    size_t len = 0;
    FILE *f = fopen("samples/quick.json", "r");
    CHECK(f != NULL);
    if (!f) return;
    len = fread(cfg, 1, sizeof cfg - 1, f);
    fclose(f);
    cfg[len] = 0;
    char *gaps = strstr(cfg, "[20, 20, 20, 20]");
    CHECK(gaps != NULL);
    if (!gaps) return;
    memcpy(gaps, "[20, 20, 25, 20]", 16);
    const char *other = t_path("quick-gap25.json");
    t_write_text(other, cfg);
    const char *bad[] = {"train", "--config", other, "--init", t_path("only-train"), "--out",
                         t_path("init-bad"), "--limit", "64", "--test-limit", "32", "--epochs", "1",
                         "-q", NULL};
    rc = run(bad, &out);
    if (rc != 2 || !strstr(out, "gaps_mm[2]")) show("train --init", rc, out);
    CHECK(rc == 2 && strstr(out, "gaps_mm[2]") && !exists(t_path("init-bad")));
    const char *good[] = {"train", "--config", "samples/quick.json", "--init",
                          t_path("only-train"), "--out", t_path("init-good"), "--limit", "64",
                          "--test-limit", "32", "--epochs", "1", "-q", NULL};
    rc = run(good, &out);
    if (rc) show("train --init", rc, out);
    CHECK(rc == 0);
    d2_model m;
    d2_err e = {0};
    CHECK(model_load(t_path("init-good"), &m, &e) == 0);
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(m.init, "model");
    CHECK(cJSON_IsString(from) && strstr(from->valuestring, "only-train"));
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(m.init, "history")) == 3);
    model_free(&m);
}

/* ------------------------------------------------------------- limits */

TEST(a_config_with_100000_neurons_is_refused_with_the_memory_it_needs)
{
    const char *cfg = t_path("huge.json");
    t_write_text(cfg, "{\"geometry\": {\"neurons\": 100000}}");
    cJSON *root = NULL;
    d2_err e = {0};
    d2_geom g;
    d2_train_opts t;
    CHECK(cfg_load(cfg, &root, &e) == 0);
    CHECK_ERR(config_read(cfg, root, &g, &t, &e), e, D2_EINPUT, "\"geometry.neurons\" = 100000");
    CHECK(strstr(e.msg, "[4, 2048]") && strstr(e.msg, "GB of memory"));
    cJSON_Delete(root);
    const char *out;
    const char *args[] = {"train", "--config", cfg, "--out", t_path("huge-out"), NULL};
    int rc = run(args, &out);
    CHECK(rc == 2 && strstr(out, "GB of memory") && strstr(out, cfg));
    CHECK(!exists(t_path("huge-out")));
    /* Within the range but more workers than memory: refused before loading. */
    g.n = 2048;
    g.layers = 16;
    g.pad = 4;
    CHECK_ERR(geom_check_memory(&g, 100000, &e), e, D2_EIO, "100000 threads need about");
    CHECK(strstr(e.msg, "this machine has"));
    CHECK(geom_check_memory(&g, 1, &e) == 0 || strstr(e.msg, "this machine has"));
}

TEST(an_npy_header_claiming_2_to_the_40_elements_is_refused_before_reading)
{
    const char *p = t_path("claim.npy");
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, "
                                      "'shape': (1099511627776,), }\n");
    unsigned char buf[256] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)n, 0};
    memcpy(buf + 10, hdr, (size_t)n);
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite(buf, 1, 10 + (size_t)n + 16, f) == 10 + (size_t)n + 16);
    if (f) fclose(f);
    npy_array a;
    d2_err e = {0};
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "needs 4398 GB of memory");
    CHECK(strstr(e.msg, "limit of 1073741824 bytes") && strstr(e.msg, "claim.npy"));
    CHECK(a.data == NULL);
}

/* A PNG whose header promises far more pixels than its bytes can hold. */
TEST(a_png_promising_more_pixels_than_it_holds_is_refused_before_decoding)
{
    static const unsigned char bomb[] = {
        0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
        0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10, 8, 0, 0, 0, 0, 0, 0, 0, 0, /* 10000 x 10000 */
        0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    const char *p = t_path("bomb.png");
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite(bomb, 1, sizeof bomb, f) == sizeof bomb);
    if (f) fclose(f);
    float *px = NULL;
    int w, h;
    d2_err e = {0};
    CHECK_ERR(img_read_gray(p, &w, &h, &px, &e), e, D2_EINPUT, "10000 x 10000 pixels");
    CHECK(strstr(e.msg, "decompression bomb") && strstr(e.msg, "bomb.png"));
    /* Over the pixel limit itself. */
    unsigned char big[sizeof bomb];
    memcpy(big, bomb, sizeof bomb);
    big[18] = 0x4e, big[19] = 0x20, big[22] = 0x4e, big[23] = 0x20; /* 20000 x 20000 */
    f = fopen(p, "wb");
    CHECK(f && fwrite(big, 1, sizeof big, f) == sizeof big);
    if (f) fclose(f);
    CHECK_ERR(img_read_gray(p, &w, &h, &px, &e), e, D2_EINPUT, "outside 1 .. 134217728 pixels");
    CHECK(px == NULL);
}


TEST(an_output_larger_than_the_free_disk_is_refused_with_both_sizes)
{
    d2_err e = {0};
    CHECK_ERR(d2_check_space(t_tmpdir(), 1e18, "the export", &e), e, D2_EIO,
              "the export needs about 1e+06 TB of disk; the file system has");
    CHECK(strstr(e.msg, t_tmpdir()) && strstr(e.msg, "free"));
    /* A folder that does not exist yet is measured on its nearest parent. */
    const char *deep = t_path("not/yet/there");
    CHECK_ERR(d2_check_space(deep, 1e18, "the meshes", &e), e, D2_EIO, "not/yet/there");
    CHECK(d2_check_space(deep, 1e3, "the meshes", &e) == 0);
}

/* ------------------------------------------- never destroy, never hang */

/* join() for paths a test keeps: 512 slots, none reused within a run. */
static const char *pjoin(const char *dir, const char *name)
{
    static char pool[512][1024];
    static int k;
    char *b = pool[k++ & 511];
    size_t a = strlen(dir), n = strlen(name);
    if (a + n + 2 > sizeof pool[0]) {
        printf("  path too long: %s/%s\n", dir, name);
        exit(3);
    }
    memcpy(b, dir, a);
    b[a] = '/';
    memcpy(b + a + 1, name, n + 1);
    return b;
}

/* Runs d2fab like run(), but kills it after `secs` seconds: returns -2 then
 * (the program hung). */
static int run_timeout(const char *const *args, const char **out, double secs)
{
    static char *text, log[1024];
    if (!log[0]) snprintf(log, sizeof log, "%s/run-timeout.log", t_tmpdir());
    pid_t pid = spawn(args, log);
    int rc = -2;
    for (double t0 = now(); now() - t0 < secs;) {
        int st = 0;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        sleep_s(0.01);
    }
    if (rc == -2) {
        kill(pid, SIGKILL);
        wait_for(pid);
    }
    free(text);
    text = NULL;
    d2_err e = {0};
    if (d2_read_file(log, 1 << 20, &text, NULL, &e)) text = NULL;
    if (out) *out = text ? text : "";
    return rc;
}

static const char *const pkg_dirs[] = {"export", "parts", "previews", "tolerance", "masks"};

/* Files of kinds d2fab writes, in a folder that is not d2fab's. */
static void victim_files(const char *dir)
{
    d2_err e = {0};
    CHECK(d2_mkdir_p(dir, &e) == 0);
    t_write_text(pjoin(dir, "thesis.npy"), "mine");
    t_write_text(pjoin(dir, "figure.png"), "mine");
    t_write_text(pjoin(dir, "report.json"), "{}");
}

static int victim_intact(const char *dir)
{
    return exists(pjoin(dir, "thesis.npy")) && exists(pjoin(dir, "figure.png")) &&
           exists(pjoin(dir, "report.json"));
}

/* A package whose sub-folder is a link to someone else's folder: the run
 * must refuse it, naming the link, and remove nothing there (before the
 * fix it emptied the linked folder, even though the run then failed). */
TEST(run_refuses_linked_package_folders_and_removes_nothing_outside_the_package)
{
    const char *cfgdir = t_path("pkglink"), *out;
    small_model(pjoin(cfgdir, "model"));
    const char *cfg = pjoin(cfgdir, "run.json");
    t_write_text(cfg, "{\"model\": \"model\", \"test_limit\": 10}");
    /* No test images: the run would fail at its first stage anyway. */
    const char *nodata = t_path("pkglink-nodata");
    for (size_t i = 0; i <= sizeof pkg_dirs / sizeof *pkg_dirs; i++) {
        int all = i == sizeof pkg_dirs / sizeof *pkg_dirs;
        char pkgname[64], vname[64];
        snprintf(pkgname, sizeof pkgname, "pkglink-pkg-%zu", i);
        const char *pkg = t_path(pkgname);
        d2_err e = {0};
        CHECK(d2_mkdir_p(pkg, &e) == 0);
        for (size_t k = 0; k < sizeof pkg_dirs / sizeof *pkg_dirs; k++) {
            if (!all && k != i) continue;
            snprintf(vname, sizeof vname, "pkglink-victim-%zu-%zu", i, k);
            victim_files(t_path(vname));
            CHECK(symlink(t_path(vname), pjoin(pkg, pkg_dirs[k])) == 0);
        }
        const char *args[] = {"run", cfg, "--out", pkg, "--data", nodata, "-q", NULL};
        int rc = run(args, &out);
        if (rc != 1) show("run", rc, out);
        CHECK(rc == 1 && strstr(out, "symbolic link") && strstr(out, "nothing was removed"));
        for (size_t k = 0; k < sizeof pkg_dirs / sizeof *pkg_dirs; k++) {
            if (!all && k != i) continue;
            snprintf(vname, sizeof vname, "pkglink-victim-%zu-%zu", i, k);
            if (!victim_intact(t_path(vname)))
                printf("  %s: files in %s were removed through the link %s\n", t_cur,
                       t_path(vname), pkg_dirs[k]);
            CHECK(victim_intact(t_path(vname)));
            char named[64];
            snprintf(named, sizeof named, "%s (a symbolic link)", pkg_dirs[k]);
            CHECK(strstr(out, named) != NULL);
        }
    }
    /* Real folders: an earlier run's files go, a file d2fab does not write
     * stays; so does everything outside the package. */
    const char *pkg = t_path("pkglink-real");
    d2_err e = {0};
    CHECK(d2_mkdir_p(pjoin(pkg, "export"), &e) == 0);
    t_write_text(pjoin(pkg, "export/layer9_height.npy"), "stale");
    t_write_text(pjoin(pkg, "export/notes.odt"), "mine");
    const char *args[] = {"run", cfg, "--out", pkg, "--data", nodata, "-q", NULL};
    int rc = run(args, &out);
    CHECK(rc == 2);
    CHECK(!exists(pjoin(pkg, "export/layer9_height.npy")) && exists(pjoin(pkg, "export/notes.odt")));
}

/* Makes path a FIFO, a listening socket or a character device (/dev/null's
 * numbers; needs root: returns 0 when it cannot). */
static int make_special(const char *path, int kind)
{
    unlink(path);
    if (kind == 0) return mkfifo(path, 0644) == 0;
    if (kind == 1) {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        if (strlen(path) >= sizeof a.sun_path) return 0;
        strcpy(a.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 1) == 0;
        /* The descriptor stays open (and listening) for the test's life. */
        return ok;
    }
    return mknod(path, S_IFCHR | 0644, makedev(1, 3)) == 0;
}

static const char *const special_kind[] = {"a FIFO", "a socket", "a character device"};

/* Every layer file of a model and of an export replaced in turn by a FIFO,
 * a socket and a device: the program refuses it at once, naming the file
 * (before the fix a FIFO made it wait forever). */
TEST(a_fifo_socket_or_device_as_any_layer_file_is_refused_without_hanging)
{
    const char *model = t_path("special-model"), *exp = t_path("special-export"), *out;
    small_model(model);
    const char *ex[] = {"export", "--model", model, "--out", exp, "-q", NULL};
    int rc = run(ex, &out);
    if (rc) show("export", rc, out);
    CHECK(rc == 0);
    int devices = 0;
    for (int dir = 0; dir < 2; dir++)
        for (int l = 1; l <= 2; l++)
            for (int kind = 0; kind < 3; kind++) {
                char name[64];
                snprintf(name, sizeof name, dir ? "layer%d_height.npy" : "layer%d.npy", l);
                const char *folder = dir ? exp : model, *file = pjoin(folder, name);
                char keep[4200];
                snprintf(keep, sizeof keep, "%s.keep", file);
                CHECK(rename(file, keep) == 0);
                if (!make_special(file, kind)) {
                    CHECK(kind == 2); /* only mknod may need privileges */
                    CHECK(rename(keep, file) == 0);
                    continue;
                }
                devices += kind == 2;
                const char *ev[] = {"eval", "--model", folder, "--limit", "10", NULL};
                rc = run_timeout(ev, &out, 20);
                if (rc != 2 || !strstr(out, file) || !strstr(out, special_kind[kind]))
                    show(rc == -2 ? "eval hung" : "eval", rc, out);
                CHECK(rc == 2 && strstr(out, file) && strstr(out, special_kind[kind]) &&
                      strstr(out, "expected a regular file"));
                if (dir) {
                    const char *me[] = {"mesh", "--export", exp, "--out", t_path("special-mesh"),
                                        "-q", NULL};
                    rc = run_timeout(me, &out, 20);
                    if (rc != 2 || !strstr(out, file)) show("mesh", rc, out);
                    CHECK(rc == 2 && strstr(out, file));
                }
                unlink(file);
                CHECK(rename(keep, file) == 0);
            }
    printf("  devices %s\n", devices ? "tested (mknod)" : "skipped (mknod needs root)");
    /* A config and a data file read the same way. */
    const char *fifo = t_path("special-config.json");
    CHECK(make_special(fifo, 0));
    const char *tr[] = {"train", "--config", fifo, "--out", t_path("special-train"), NULL};
    rc = run_timeout(tr, &out, 20);
    CHECK(rc == 2 && strstr(out, fifo) && strstr(out, "FIFO"));
    d2_err e = {0};
    CHECK(d2_mkdir_p(t_path("special-data/mnist"), &e) == 0);
    CHECK(make_special(t_path("special-data/mnist/t10k-images-idx3-ubyte"), 0));
    t_write_text(t_path("special-data/mnist/t10k-labels-idx1-ubyte"), "");
    const char *ev[] = {"eval", "--model", model, "--data", t_path("special-data"), NULL};
    rc = run_timeout(ev, &out, 20);
    CHECK(rc == 2 && strstr(out, "t10k-images-idx3-ubyte") && strstr(out, "FIFO"));
}

/* An IDX test set that holds no images is bad input naming the file (it
 * used to fail later with status 1 and a message about a PNG montage). */
TEST(an_idx_test_set_with_no_images_is_bad_input_naming_the_file)
{
    const char *data = t_path("empty-data"), *model = t_path("empty-model"), *out;
    d2_err e = {0};
    small_model(model);
    CHECK(d2_mkdir_p(pjoin(data, "mnist"), &e) == 0);
    CHECK(idx_write_images(pjoin(data, "mnist/t10k-images-idx3-ubyte"), NULL, 0, 28, 28, &e) == 0);
    CHECK(idx_write_labels(pjoin(data, "mnist/t10k-labels-idx1-ubyte"), NULL, 0, &e) == 0);
    d2_dataset ds;
    CHECK_ERR(dataset_load(data, "mnist", 1, &ds, &e), e, D2_EINPUT, "no images");
    CHECK(strstr(e.msg, "t10k-images-idx3-ubyte") != NULL);
    const char *ev[] = {"eval", "--model", model, "--data", data, NULL};
    int rc = run(ev, &out);
    if (rc != 2) show("eval", rc, out);
    CHECK(rc == 2 && strstr(out, "t10k-images-idx3-ubyte") && strstr(out, "no images"));
    CHECK(!exists(pjoin(model, "eval.png")));
}

static int has_prefix_file(const char *dir, const char *prefix)
{
    char names[128][64];
    int n = list_files(dir, names, 128), found = 0;
    for (int i = 0; i < n; i++) found |= !strncmp(names[i], prefix, strlen(prefix));
    return found;
}

/* A 3-layer export or mesh over a 5-layer one: nothing of the 5-layer set
 * is left beside the new one (before the fix layer4/layer5 files stayed),
 * and files d2fab does not write are left alone. */
TEST(a_smaller_export_or_mesh_over_a_larger_one_leaves_none_of_the_old_files)
{
    const char *in = t_path("stale-in"), *dir = t_path("stale-export"), *out;
    phase_maps(in, 40, 5);
    const char *five[] = {"export", "--phase", pjoin(in, "p1.npy"), pjoin(in, "p2.npy"),
                          pjoin(in, "p3.npy"), pjoin(in, "p4.npy"), pjoin(in, "p5.npy"),
                          "--pitch-mm", "0.4", "--frequency-thz", "0.4", "--out", dir, "-q",
                          NULL};
    const char *three[] = {"export", "--phase", pjoin(in, "p1.npy"), pjoin(in, "p2.npy"),
                           pjoin(in, "p3.npy"), "--pitch-mm", "0.4", "--frequency-thz", "0.4",
                           "--out", dir, "-q", NULL};
    char names[64][64];
    for (int pass = 0; pass < 2; pass++) {
        int rc = run(five, &out);
        CHECK(rc == 0);
        CHECK(exists(pjoin(dir, "layer5_height.npy")));
        t_write_text(pjoin(dir, "notes.txt"), "mine");
        /* Second pass: as after a kill, the index is gone and only the
         * names say which files are d2fab's. */
        if (pass) CHECK(unlink(pjoin(dir, "export.json")) == 0);
        rc = run(three, &out);
        if (rc) show("export of 3 layers", rc, out);
        CHECK(rc == 0);
        int n = list_files(dir, names, 64);
        if (n != 11)
            for (int i = 0; i < n; i++) printf("  %s: %s\n", t_cur, names[i]);
        CHECK(n == 11); /* 3 x (heights .npy, .png, preview) + export.json + notes.txt */
        CHECK(!has_prefix_file(dir, "layer4") && !has_prefix_file(dir, "layer5"));
        CHECK(exists(pjoin(dir, "notes.txt")));
    }
    /* Meshes: 5 layers, then 3, then the 3 as 3MF. */
    const char *ex5 = t_path("stale-export5"), *parts = t_path("stale-parts");
    five[12] = ex5;
    CHECK(run(five, &out) == 0);
    const char *m5[] = {"mesh", "--export", ex5, "--out", parts, "-q", NULL};
    const char *m3[] = {"mesh", "--export", dir, "--out", parts, "-q", NULL};
    const char *m3f[] = {"mesh", "--export", dir, "--out", parts, "--format", "3mf", "-q", NULL};
    int rc = run(m5, &out);
    if (rc) show("mesh of 5", rc, out);
    CHECK(rc == 0 && exists(pjoin(parts, "layer5.stl")));
    t_write_text(pjoin(parts, "notes.txt"), "mine");
    rc = run(m3, &out);
    if (rc) show("mesh of 3", rc, out);
    CHECK(rc == 0 && exists(pjoin(parts, "layer3.stl")));
    CHECK(!exists(pjoin(parts, "layer4.stl")) && !exists(pjoin(parts, "layer5.stl")));
    rc = run(m3f, &out);
    if (rc) show("mesh as 3mf", rc, out);
    CHECK(rc == 0 && exists(pjoin(parts, "layer3.3mf")) && exists(pjoin(parts, "assembly.3mf")));
    CHECK(!has_prefix_file(parts, "layer3.stl") && !exists(pjoin(parts, "assembly.stl")));
    CHECK(exists(pjoin(parts, "notes.txt")));
    /* What assembly.json lists is all there is, besides the notes. */
    int n = list_files(parts, names, 64);
    CHECK(n == 3 + 2 + 2 + 1); /* input, layer1..3, detector, assembly.3mf/.json, notes */
}

/* Every stage keeps its folder to one run: a shallower model saved over a
 * deeper one's files, fewer masks over more, a fresh training over a longer
 * one's checkpoints, a tolerance study without plots over one with them. */
TEST(every_other_stage_leaves_none_of_a_previous_runs_files)
{
    const char *model = t_path("stale-model"), *out;
    d2_err e = {0};
    CHECK(d2_mkdir_p(model, &e) == 0);
    /* A previous 3-layer model's third layer, and a file of someone else's. */
    t_write_text(pjoin(model, "layer3.npy"), "old");
    t_write_text(pjoin(model, "layer3.png"), "old");
    t_write_text(pjoin(model, "layer3-notes.txt"), "mine");
    small_model(model); /* 2 layers */
    CHECK(!exists(pjoin(model, "layer3.npy")) && !exists(pjoin(model, "layer3.png")));
    CHECK(exists(pjoin(model, "layer2.npy")) && exists(pjoin(model, "layer3-notes.txt")));

    /* Masks of two images, then of one: the other's files go. */
    const char *masks = t_path("stale-masks");
    uint8_t px[3 * 4 * 4];
    for (int i = 0; i < 48; i++) px[i] = (uint8_t)(i % 5 == 0 ? 255 : 0);
    CHECK(img_write_rgb8(t_path("stale-a.png"), 4, 4, px, &e) == 0);
    CHECK(img_write_rgb8(t_path("stale-b.png"), 4, 4, px, &e) == 0);
    const char *two[] = {"mask", "--model", model, "--out", masks, "--image", t_path("stale-a.png"),
                         "--image", t_path("stale-b.png"), "--label", "1", "-q", NULL};
    const char *one[] = {"mask", "--model", model, "--out", masks, "--image", t_path("stale-a.png"),
                         "--label", "1", "-q", NULL};
    int rc = run(two, &out);
    if (rc) show("mask of two images", rc, out);
    CHECK(rc == 0 && exists(pjoin(masks, "mask_stale-b.png")));
    t_write_text(pjoin(masks, "notes.txt"), "mine");
    rc = run(one, &out);
    if (rc) show("mask of one image", rc, out);
    CHECK(rc == 0 && exists(pjoin(masks, "mask_stale-a.png")));
    CHECK(!exists(pjoin(masks, "mask_stale-b.png")) && !exists(pjoin(masks, "mask_stale-b.stl")));
    CHECK(exists(pjoin(masks, "notes.txt")) && exists(pjoin(masks, "summary.json")));

    /* A fresh training over a longer one's checkpoints: only its own remain. */
    const char *tdir = t_path("stale-train");
    const char *t2[] = {"train", "--config", "samples/quick.json", "--out", tdir, "--limit", "64",
                        "--test-limit", "32", "--epochs", "2", "-q", NULL};
    const char *t1[] = {"train", "--config", "samples/quick.json", "--out", tdir, "--limit", "64",
                        "--test-limit", "32", "--epochs", "1", "-q", NULL};
    CHECK(run(t2, &out) == 0 && exists(pjoin(tdir, "checkpoints/epoch-0002")));
    rc = run(t1, &out);
    if (rc) show("train of 1 epoch", rc, out);
    CHECK(rc == 0 && exists(pjoin(tdir, "checkpoints/epoch-0001/phase.npy")));
    CHECK(!exists(pjoin(tdir, "checkpoints/epoch-0002")));

    /* A tolerance study without Monte Carlo or scans after one with them:
     * the old plots go with it. */
    const char *tol = t_path("stale-tol");
    const char *full[] = {"tolerance", "--model", model, "--out", tol, "--lateral-mm", "0.1",
                          "--limit", "20", "--trials", "2", "--threads", "2", "-q", NULL};
    const char *bare[] = {"tolerance", "--model", model, "--out", tol, "--lateral-mm", "0.1",
                          "--limit", "20", "--trials", "0", "--no-inverse", "--threads", "2",
                          "-q", NULL};
    rc = run(full, &out);
    if (rc) show("tolerance", rc, out);
    CHECK(rc == 0 && exists(pjoin(tol, "yield.png")) && has_prefix_file(tol, "scan_"));
    rc = run(bare, &out);
    if (rc) show("tolerance without plots", rc, out);
    CHECK(rc == 0 && exists(pjoin(tol, "report.json")));
    CHECK(!exists(pjoin(tol, "yield.png")) && !has_prefix_file(tol, "scan_"));
}

/* SIGTERM or SIGINT while mesh writes, and while training writes a
 * checkpoint: exit status 143 / 130, no temporary left (before the fix the
 * default action left them), and the stopped training resumes to the model
 * an uninterrupted run makes. */
TEST(sigterm_mid_mesh_and_mid_train_removes_temporaries_and_train_resumes)
{
    const char *in = t_path("sig-in"), *exp = t_path("sig-export"), *parts = t_path("sig-parts");
    const char *out;
    phase_maps(in, 120, 3);
    const char *ex[] = {"export", "--phase", pjoin(in, "p1.npy"), pjoin(in, "p2.npy"),
                        pjoin(in, "p3.npy"), "--pitch-mm", "0.4", "--frequency-thz", "0.4",
                        "--out", exp, "-q", NULL};
    CHECK(run(ex, &out) == 0);
    const char *me[] = {"mesh", "--export", exp, "--out", parts, "-q", NULL};
    int hits = 0;
    for (int k = 0; k < (quick ? 2 : 4); k++) {
        int sig = k % 2 ? SIGINT : SIGTERM;
        pid_t pid = spawn(me, NULL);
        int hit = wait_for_temp(pid, parts, NULL);
        kill(pid, sig);
        int rc = wait_for(pid);
        hits += hit && rc == 128 + sig;
        if (hit) CHECK(rc == 128 + sig);
        if (count_temps(parts)) printf("  %s: mesh left a temporary after signal %d\n", t_cur, sig);
        CHECK(count_temps(parts) == 0);
        if (exists(pjoin(parts, "assembly.json"))) CHECK(parses(pjoin(parts, "assembly.json")));
    }
    CHECK(hits > 0);
    CHECK(run(me, &out) == 0 && count_temps(parts) == 0);

    const char *ref = t_path("train-ref"), *work = t_path("sig-train");
    if (!exists(pjoin(ref, "model.json"))) CHECK(run(train_args(ref, 0), &out) == 0);
    const char *ck = pjoin(work, "checkpoints/epoch-0001");
    int stopped = 0;
    for (int k = 0; k < 3; k++) {
        int sig = k == 1 ? SIGINT : SIGTERM;
        int have = exists(pjoin(work, "checkpoints/latest"));
        pid_t pid = spawn(train_args(work, have), NULL);
        int hit = wait_for_temp(pid, k == 0 ? ck : work, k == 0 ? work : NULL);
        kill(pid, sig);
        int rc = wait_for(pid);
        if (hit) CHECK(rc == 128 + sig);
        stopped += hit;
        int temps = count_temps(work) + count_temps(ck) +
                    count_temps(pjoin(work, "checkpoints/epoch-0002")) +
                    count_temps(pjoin(work, "checkpoints/epoch-0003"));
        if (temps) printf("  %s: training left %d temporaries after signal %d\n", t_cur, temps, sig);
        CHECK(temps == 0);
        check_train_dir(work);
    }
    CHECK(stopped > 0);
    int rc = run(train_args(work, exists(pjoin(work, "checkpoints/latest"))), &out);
    if (rc) show("resumed training", rc, out);
    CHECK(rc == 0);
    for (int l = 1; l <= 3; l++) {
        char name[32];
        snprintf(name, sizeof name, "layer%d.npy", l);
        CHECK(same_file(pjoin(work, name), pjoin(ref, name)));
    }
}

static char small_mount[1024];

/* Unmounts the test's small tmpfs even when the test exits early. */
static void umount_small(void)
{
    char cmd[1100];
    if (!small_mount[0]) return;
    snprintf(cmd, sizeof cmd, "umount '%s'", small_mount);
    if (system(cmd) != 0) printf("  cannot unmount %s\n", small_mount);
    small_mount[0] = 0;
}

/* A file system with too little room: train, mesh and run refuse before
 * writing, with the estimate and the free space. A real 256 kB tmpfs when
 * the test may mount one (root), else the D2FAB_FREE_BYTES cap. */
TEST(a_full_disk_refuses_train_mesh_and_run_up_front_with_the_estimate)
{
    const char *small = t_path("smalldisk"), *out;
    d2_err e = {0};
    CHECK(d2_mkdir_p(small, &e) == 0);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=256k tmpfs '%s' 2>/dev/null", small);
    int mounted = geteuid() == 0 && system(cmd) == 0;
    if (mounted) {
        snprintf(small_mount, sizeof small_mount, "%s", small);
        atexit(umount_small);
    }
    if (!mounted) setenv("D2FAB_FREE_BYTES", "262144", 1);
    printf("  full disk: %s\n", mounted ? "a 256 kB tmpfs" : "simulated (D2FAB_FREE_BYTES=262144)");

    const char *tr[] = {"train", "--config", "samples/quick.json", "--out", pjoin(small, "t"),
                        "--limit", "64", "--epochs", "1", "-q", NULL};
    int rc = run(tr, &out);
    if (rc != 3) show("train", rc, out);
    CHECK(rc == 3 && strstr(out, "needs about") && strstr(out, "free") && strstr(out, "checkpoints"));
    CHECK(!exists(pjoin(small, "t")));

    const char *in = t_path("disk-in"), *exp = t_path("disk-export");
    phase_maps(in, 120, 3);
    const char *ex[] = {"export", "--phase", pjoin(in, "p1.npy"), pjoin(in, "p2.npy"),
                        pjoin(in, "p3.npy"), "--pitch-mm", "0.4", "--frequency-thz", "0.4",
                        "--out", exp, "-q", NULL};
    CHECK(run(ex, &out) == 0);
    const char *me[] = {"mesh", "--export", exp, "--out", pjoin(small, "m"), "-q", NULL};
    rc = run(me, &out);
    if (rc != 3) show("mesh", rc, out);
    CHECK(rc == 3 && strstr(out, "the meshes needs about") && !exists(pjoin(small, "m")));

    const char *cfgdir = t_path("disk-cfg");
    CHECK(d2_mkdir_p(cfgdir, &e) == 0);
    /* Two 60 x 60 phase maps, beside the config (not on the small disk). */
    phase_maps(cfgdir, 60, 2);
    t_write_text(pjoin(cfgdir, "run.json"),
                 "{\"phases\": {\"files\": [\"p1.npy\", \"p2.npy\"], \"pitch_mm\": 0.4, "
                 "\"frequency_thz\": 0.4, \"gaps_mm\": [20]}, \"test_limit\": 10}");
    const char *ru[] = {"run", pjoin(cfgdir, "run.json"), "--out", pjoin(small, "pkg"), "-q", NULL};
    rc = run(ru, &out);
    if (rc != 3) show("run", rc, out);
    CHECK(rc == 3 && strstr(out, "the print package needs about") && strstr(out, "free"));
    CHECK(!exists(pjoin(small, "pkg/export")));

    if (mounted) {
        umount_small();
        CHECK(!small_mount[0]);
    } else {
        unsetenv("D2FAB_FREE_BYTES");
    }
}

/* 400 typed for 400 GHz makes a 2 pi relief of about 1 um, below one Z
 * step: an error saying so in mm with the sensible range (it used to give
 * flat plates and exit 0); 4e11 (Hz) says the unit is THz. */
TEST(absurd_frequencies_are_errors_that_say_what_they_mean_in_mm)
{
    const char *model = t_path("freq-model"), *out;
    small_model(model);
    const char *bad[] = {"export", "--model", model, "--frequency-thz", "400", "--out",
                         t_path("freq-400"), "-q", NULL};
    int rc = run(bad, &out);
    if (rc != 2) show("export at 400 THz", rc, out);
    CHECK(rc == 2 && strstr(out, "mm of relief") && strstr(out, "Z step") &&
          strstr(out, "at most") && strstr(out, "the unit is THz"));
    CHECK(!exists(t_path("freq-400")));
    const char *hz[] = {"export", "--model", model, "--frequency-thz", "4e11", "--out",
                        t_path("freq-hz"), "-q", NULL};
    rc = run(hz, &out);
    CHECK(rc == 1 && strstr(out, "the unit is THz") && strstr(out, "0.4 THz"));
    CHECK(!exists(t_path("freq-hz")));
    /* The same in a run config, and a sane frequency still exports. */
    const char *cfgdir = t_path("freq-run");
    small_model(pjoin(cfgdir, "model"));
    t_write_text(pjoin(cfgdir, "run.json"),
                 "{\"model\": \"model\", \"frequency_thz\": 400, \"test_limit\": 10}");
    const char *ru[] = {"run", pjoin(cfgdir, "run.json"), "--out", t_path("freq-pkg"), "-q", NULL};
    rc = run(ru, &out);
    if (rc != 2) show("run at 400 THz", rc, out);
    CHECK(rc == 2 && strstr(out, "mm of relief"));
    const char *ok[] = {"export", "--model", model, "--frequency-thz", "0.4", "--out",
                        t_path("freq-ok"), "-q", NULL};
    CHECK(run(ok, &out) == 0);
}

/* ---------------------------------------------------------- exit codes */

/* Bad option: 1. Missing input file: 2 (bad input), naming the file. A
 * folder that cannot be created (a file is in the way): 3 (I/O). */
TEST(every_command_exits_1_on_a_bad_option_and_2_on_a_missing_file)
{
    static const char *const cmds[] = {"train", "eval", "propagate", "export", "mesh", "mask",
                                       "tolerance", "check", "run"};
    const char *out;
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        const char *bad[] = {cmds[i], "--no-such-option", NULL};
        int rc = run(bad, &out);
        if (strstr(out, "not built yet")) {
            /* A stage that has not landed says so and fails (issue 2). */
            CHECK(rc != 0);
            continue;
        }
        if (rc != 1) show(cmds[i], rc, out);
        CHECK(rc == 1);
        const char *help[] = {cmds[i], "--help", NULL};
        rc = run(help, &out);
        CHECK(rc == 0 && strstr(out, "Exit status: 0 success") && strstr(out, "3 I/O"));
    }
    const char *missing = t_path("no-such-file.json"), *missing_dir = t_path("no-such-model");
    /* The file the message must name, then the command line. */
    const char *m = missing, *md = missing_dir, *ok = t_path("model-path-ok");
    const char *cases[][16] = {
        {m, "train", "--config", m, "--out", t_path("x-train"), NULL},
        {md, "eval", "--model", md, NULL},
        {m, "propagate", "--in", m, "--out", t_path("x.npy"), "--distance-mm", "1",
         "--wavelength-mm", "0.75", "--pitch-mm", "0.4", NULL},
        {md, "export", "--model", md, "--out", t_path("x-export"), NULL},
        {m, "export", "--phase", m, "--pitch-mm", "0.4", "--frequency-thz", "0.4", "--out",
         t_path("x-export"), NULL},
        {md, "mesh", "--export", md, "--out", t_path("x-mesh"), NULL},
        {m, "check", m, NULL},
        {md, "tolerance", "--model", md, "--out", t_path("x-tol"), "--lateral-mm", "0.1", NULL},
        {m, "tolerance", "--model", ok, "--out", t_path("x-tol"), "--config", m, NULL},
        {md, "mask", "--model", md, "--out", t_path("x-mask"), "--digit", "3", NULL},
        {m, "mask", "--model", ok, "--out", t_path("x-mask"), "--image", m, NULL},
        {m, "run", m, "--out", t_path("x-run"), NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = run(cases[i] + 1, &out);
        const char *name = cases[i][0];
        if (rc != 2 || !strstr(out, name)) show(cases[i][1], rc, out);
        CHECK(rc == 2 && strstr(out, name));
    }
    /* I/O: the output folder cannot be created. */
    const char *file = t_path("a-file");
    t_write_text(file, "x");
    const char *io[] = {"export", "--model", t_path("model-path-ok"), "--out",
                        join(file, "sub"), "-q", NULL};
    int rc = run(io, &out);
    if (rc != 3) show("export into a file", rc, out);
    CHECK(rc == 3 && strstr(out, file));
    /* The program itself. */
    const char *none[] = {NULL};
    CHECK(run(none, &out) == 1);
    const char *unknown[] = {"frobnicate", NULL};
    CHECK(run(unknown, &out) == 1 && strstr(out, "frobnicate"));
    const char *top[] = {"--help", NULL};
    CHECK(run(top, &out) == 0 && strstr(out, "Exit status: 0 success"));
}

int main(void)
{
    const char *s = getenv("D2FAB_TEST_SEED");
    unsigned long seed = s && *s ? strtoul(s, NULL, 10) : (unsigned long)time(NULL);
    quick = t_quick();
    d2_rng_seed(&rng, seed);
    printf("kill moments from seed %lu (D2FAB_TEST_SEED=%lu repeats them)\n", seed, seed);
    if (access(bin(), X_OK) != 0) {
        printf("%s: not found or not executable (build it, or set D2FAB_BIN)\n", bin());
        t_fail++;
        return t_finish();
    }
    /* FFTW wisdom of the runs stays in the test's folder. */
    setenv("D2FAB_WISDOM", t_path("wisdom"), 1);
    RUN(a_write_removes_stale_temporaries_of_its_file_but_not_a_live_writers);
    RUN(export_killed_at_random_moments_leaves_old_or_new_files_never_truncated);
    RUN(mesh_killed_at_random_moments_leaves_old_or_new_parts_never_truncated);
    RUN(training_killed_during_checkpoints_resumes_to_the_same_model);
    RUN(resume_after_the_last_checkpoint_still_writes_the_model);
    RUN(model_json_layer_files_cannot_point_outside_the_model_folder);
    RUN(export_json_height_files_cannot_point_outside_the_export_folder);
    RUN(a_checkpoint_pointer_cannot_leave_the_checkpoints_folder);
    RUN(run_config_paths_cannot_point_outside_the_config_folder);
    RUN(train_export_and_mesh_write_only_under_out);
    RUN(a_config_with_100000_neurons_is_refused_with_the_memory_it_needs);
    RUN(an_npy_header_claiming_2_to_the_40_elements_is_refused_before_reading);
    RUN(a_png_promising_more_pixels_than_it_holds_is_refused_before_decoding);
    RUN(an_output_larger_than_the_free_disk_is_refused_with_both_sizes);
    RUN(every_command_exits_1_on_a_bad_option_and_2_on_a_missing_file);
    RUN(run_refuses_linked_package_folders_and_removes_nothing_outside_the_package);
    RUN(a_fifo_socket_or_device_as_any_layer_file_is_refused_without_hanging);
    RUN(an_idx_test_set_with_no_images_is_bad_input_naming_the_file);
    RUN(a_smaller_export_or_mesh_over_a_larger_one_leaves_none_of_the_old_files);
    RUN(every_other_stage_leaves_none_of_a_previous_runs_files);
    RUN(sigterm_mid_mesh_and_mid_train_removes_temporaries_and_train_resumes);
    RUN(a_full_disk_refuses_train_mesh_and_run_up_front_with_the_estimate);
    RUN(absurd_frequencies_are_errors_that_say_what_they_mean_in_mm);
    return t_finish();
}
