/* Replays the fuzzing inputs through the fuzz targets' checks (fuzz/fuzz_*.c):
 * the committed seed corpus fuzz/corpus/NAME/, every fixed crash kept in
 * fuzz/regress/NAME/ and any crash `make fuzz` has left in fuzz/crashes/
 * (NAME-crash-..., an open bug until fixed). Each input runs in a child
 * process, so a crash or a broken guarantee (abort) fails the test naming the
 * file, and the rest still run. With D2FAB_FUZZ_REPLAY_WORK=1 the corpus
 * grown by the fuzzer (fuzz/corpus-work/NAME/) is replayed too. The fuzz
 * folder is $D2FAB_FUZZ_DIR or ./fuzz. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fileio.h"
#include "fuzz/fuzzlib.h"
#include "tests/testlib.h"

typedef int (*fuzz_fn)(const uint8_t *, size_t);

static const char *fuzz_root(void)
{
    const char *d = getenv("D2FAB_FUZZ_DIR");
    return d && *d ? d : "fuzz";
}

/* Runs fn on the file in a child. Returns 1 accepted, 0 refused, -1 when the
 * child crashed or aborted (reported). */
static int replay(fuzz_fn fn, const char *path)
{
    char *buf = NULL;
    size_t n = 0;
    d2_err e = {0};
    if (d2_read_file(path, 64u << 20, &buf, &n, &e)) {
        printf("  %s: %s\n", t_cur, e.msg);
        t_cur_failed = 1;
        return -1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int acc = fn((const uint8_t *)buf, n);
        _exit(acc ? 10 : 11);
    }
    free(buf);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) {
        printf("  %s: cannot run %s\n", t_cur, path);
        t_cur_failed = 1;
        return -1;
    }
    if (WIFEXITED(st) && (WEXITSTATUS(st) == 10 || WEXITSTATUS(st) == 11))
        return WEXITSTATUS(st) == 10;
    printf("  %s: %s: %s %d\n", t_cur, path, WIFSIGNALED(st) ? "killed by signal" : "exit status",
           WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    t_cur_failed = 1;
    return -1;
}

typedef struct tally {
    int files, accepted, refused, crashed;
} tally;

/* Replays every regular file in dir whose name starts with prefix ("" = all). */
static void replay_dir(fuzz_fn fn, const char *dir, const char *prefix, tally *t)
{
    DIR *d = opendir(dir);
    if (!d) return;
    char path[4096];
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.' || strncmp(de->d_name, prefix, strlen(prefix))) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        int r = replay(fn, path);
        t->files++;
        if (r > 0) t->accepted++;
        else if (r == 0) t->refused++;
        else t->crashed++;
    }
    closedir(d);
}

/* Seeds: every one read or refused cleanly, at least min_accepted of them
 * accepted (so the checks on accepted inputs run). Then the fixed crashes and
 * the open ones. */
static void replay_target(const char *name, fuzz_fn fn, int min_seeds, int min_accepted)
{
    char dir[4096], prefix[64];
    tally seeds = {0}, rest = {0};
    snprintf(dir, sizeof dir, "%s/corpus/%s", fuzz_root(), name);
    replay_dir(fn, dir, "", &seeds);
    if (seeds.files < min_seeds) {
        printf("  %s: %s holds %d seed files; expected at least %d\n", t_cur, dir, seeds.files,
               min_seeds);
        t_cur_failed = 1;
    }
    CHECK(seeds.accepted >= min_accepted);
    CHECK(seeds.crashed == 0);
    snprintf(dir, sizeof dir, "%s/regress/%s", fuzz_root(), name);
    replay_dir(fn, dir, "", &rest);
    snprintf(dir, sizeof dir, "%s/crashes", fuzz_root());
    snprintf(prefix, sizeof prefix, "%s-", name);
    replay_dir(fn, dir, prefix, &rest);
    const char *w = getenv("D2FAB_FUZZ_REPLAY_WORK");
    if (w && !strcmp(w, "1")) {
        snprintf(dir, sizeof dir, "%s/corpus-work/%s", fuzz_root(), name);
        replay_dir(fn, dir, "", &rest);
    }
    CHECK(rest.crashed == 0);
    printf("  %s: %d seeds (%d accepted, %d refused), %d regression and crash inputs (%d "
           "accepted, %d refused)\n",
           name, seeds.files, seeds.accepted, seeds.refused, rest.files, rest.accepted,
           rest.refused);
}

TEST(npy_inputs_are_read_or_refused_cleanly) { replay_target("npy", fuzz_npy, 8, 4); }
TEST(idx_inputs_are_read_or_refused_cleanly) { replay_target("idx", fuzz_idx, 4, 2); }
TEST(png_inputs_are_read_or_refused_cleanly) { replay_target("png", fuzz_png, 6, 4); }
TEST(config_inputs_are_read_or_refused_cleanly) { replay_target("config", fuzz_config, 5, 3); }
TEST(profile_inputs_are_read_or_refused_cleanly) { replay_target("profile", fuzz_profile, 6, 4); }
TEST(mesh_inputs_are_built_or_refused_cleanly) { replay_target("mesh", fuzz_mesh, 6, 3); }
TEST(run_config_inputs_are_read_or_refused_cleanly) { replay_target("runcfg", fuzz_runcfg, 6, 2); }
TEST(export_height_inputs_are_read_or_refused_cleanly) { replay_target("export", fuzz_export, 6, 2); }

/* The checks themselves must be able to fail: a crash in a child is caught
 * and reported, not mistaken for a clean refusal. */
static int crashes(const uint8_t *d, size_t n)
{
    (void)d;
    (void)n;
    abort();
}

TEST(a_crashing_input_is_reported)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/x", t_tmpdir());
    t_write_text(path, "x");
    int saved = t_cur_failed;
    int r = replay(crashes, path);
    t_cur_failed = saved;
    CHECK(r == -1);
}

int main(void)
{
    /* The targets' scratch files go into the test's folder. */
    setenv("D2FAB_FUZZ_TMP", t_tmpdir(), 1);
    RUN(npy_inputs_are_read_or_refused_cleanly);
    RUN(idx_inputs_are_read_or_refused_cleanly);
    RUN(png_inputs_are_read_or_refused_cleanly);
    RUN(config_inputs_are_read_or_refused_cleanly);
    RUN(profile_inputs_are_read_or_refused_cleanly);
    RUN(mesh_inputs_are_built_or_refused_cleanly);
    RUN(run_config_inputs_are_read_or_refused_cleanly);
    RUN(export_height_inputs_are_read_or_refused_cleanly);
    RUN(a_crashing_input_is_reported);
    return t_finish();
}
