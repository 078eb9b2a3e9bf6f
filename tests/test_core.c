/* Tests for core/: atomic files and path checks, .npy, PNG, JSON config, IDX. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <png.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/idx.h"
#include "core/image.h"
#include "core/npy.h"
#include "core/util.h"
#include "tests/testlib.h"

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(3);
    }
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Number of entries in a folder other than . and .. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *de; (de = readdir(d));)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------- fileio */

TEST(write_file_then_read_file_round_trips)
{
    d2_err e = {0};
    const char *p = t_path("rt.bin");
    CHECK(d2_write_file(p, "hello\0world", 11, &e) == 0);
    char *b = NULL;
    size_t n = 0;
    CHECK(d2_read_file(p, 100, &b, &n, &e) == 0);
    CHECK(n == 11 && b && memcmp(b, "hello\0world", 11) == 0 && b[11] == 0);
    free(b);
}

TEST(read_file_refuses_a_file_over_the_limit)
{
    d2_err e = {0};
    const char *p = t_path("big.bin");
    char buf[100] = {0};
    write_bytes(p, buf, sizeof buf);
    char *b = NULL;
    CHECK_ERR(d2_read_file(p, 99, &b, NULL, &e), e, D2_EINPUT, "limit is 99 bytes");
    CHECK(b == NULL);
    CHECK(strstr(e.msg, p) != NULL);
    CHECK_ERR(d2_read_file(t_path("nope.bin"), 99, &b, NULL, &e), e, D2_EINPUT, "nope.bin");
    CHECK_ERR(d2_read_file(t_tmpdir(), 99, &b, NULL, &e), e, D2_EINPUT, "is a folder");
}

TEST(aborted_output_leaves_the_previous_file_and_no_temporary)
{
    d2_err e = {0};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/abort", t_tmpdir());
    CHECK(d2_mkdir_p(dir, &e) == 0);
    char p[1100];
    snprintf(p, sizeof p, "%s/out.txt", dir);
    CHECK(d2_write_file(p, "old", 3, &e) == 0);
    d2_out *o = d2_out_open(p, &e);
    CHECK(o != NULL);
    if (o) {
        fputs("new but unfinished", d2_out_fp(o));
        fflush(d2_out_fp(o));
        CHECK(count_entries(dir) == 2); /* the temporary sits beside it */
        d2_out_abort(o);
    }
    char *b = NULL;
    CHECK(d2_read_file(p, 100, &b, NULL, &e) == 0);
    CHECK(b && strcmp(b, "old") == 0);
    free(b);
    CHECK(count_entries(dir) == 1);
    d2_out_abort(NULL);
}

TEST(failed_commit_removes_the_temporary_and_reports_the_file)
{
    d2_err e = {0};
    char dir[1024], p[1100], q[1200];
    snprintf(dir, sizeof dir, "%s/failcommit", t_tmpdir());
    snprintf(p, sizeof p, "%s/target", dir);
    snprintf(q, sizeof q, "%s/keep", p);
    /* The destination is a non-empty folder, so the final rename fails. */
    CHECK(d2_mkdir_p(p, &e) == 0);
    write_bytes(q, "x", 1);
    d2_out *o = d2_out_open(p, &e);
    CHECK(o != NULL);
    if (o) {
        fputs("data", d2_out_fp(o));
        CHECK_ERR(d2_out_commit(o, &e), e, D2_EIO, "target");
    }
    CHECK(count_entries(dir) == 1);
    CHECK(file_size(q) == 1);
}

TEST(output_into_a_missing_folder_fails_with_the_file_name)
{
    d2_err e = {0};
    const char *p = t_path("no/such/dir/x.npy");
    float v = 1;
    size_t sh[1] = {1};
    CHECK_ERR(npy_write(p, NPY_F32, 1, sh, &v, &e), e, D2_EIO, "no/such/dir/x.npy");
    CHECK(strstr(e.msg, "No such file") != NULL);
}

TEST(new_files_follow_the_umask_and_rewrites_keep_permissions)
{
    d2_err e = {0};
    const char *p = t_path("perm.txt");
    CHECK(d2_write_file(p, "a", 1, &e) == 0);
    mode_t um = umask(027);
    umask(um);
    struct stat st0;
    CHECK(stat(p, &st0) == 0 && (st0.st_mode & 0777) == (0666 & ~um)); /* like fopen */
    CHECK(chmod(p, 0640) == 0);
    CHECK(d2_write_file(p, "b", 1, &e) == 0);
    struct stat st;
    CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0640);
}

TEST(mkdir_p_creates_nested_folders_and_accepts_existing_ones)
{
    d2_err e = {0};
    const char *p = t_path("a/b//c/");
    CHECK(d2_mkdir_p(p, &e) == 0);
    CHECK(d2_mkdir_p(p, &e) == 0);
    struct stat st;
    CHECK(stat(t_path("a/b/c"), &st) == 0 && S_ISDIR(st.st_mode));
    write_bytes(t_path("afile"), "x", 1);
    CHECK_ERR(d2_mkdir_p(t_path("afile/sub"), &e), e, D2_EIO, "afile");
}

TEST(path_join_inserts_one_slash_and_checks_the_size)
{
    d2_err e = {0};
    char out[16];
    CHECK(d2_path_join(out, sizeof out, "dir", "x.npy", &e) == 0 && strcmp(out, "dir/x.npy") == 0);
    CHECK(d2_path_join(out, sizeof out, "dir/", "x.npy", &e) == 0 &&
          strcmp(out, "dir/x.npy") == 0);
    CHECK(d2_path_join(out, sizeof out, "", "x.npy", &e) == 0 && strcmp(out, "x.npy") == 0);
    CHECK_ERR(d2_path_join(out, sizeof out, "a-long-folder", "name.npy", &e), e, D2_EINPUT,
              "path too long");
}

TEST(path_inside_accepts_plain_names_and_links_that_stay_inside)
{
    d2_err e = {0};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/model", t_tmpdir());
    CHECK(d2_mkdir_p(dir, &e) == 0);
    write_bytes(t_path("model/layer1.npy"), "x", 1);
    CHECK(symlink("layer1.npy", t_path("model/alias.npy")) == 0);
    CHECK(d2_path_inside(dir, "layer1.npy", "layers[0]", &e) == 0);
    CHECK(d2_path_inside(dir, "alias.npy", "layers[0]", &e) == 0);
    CHECK(d2_path_inside(dir, "./not-yet-written.npy", "layers[0]", &e) == 0);
    CHECK(d2_path_inside(dir, "sub/new.npy", "layers[0]", &e) == 0);
}

TEST(path_inside_rejects_parent_absolute_and_links_out)
{
    d2_err e = {0};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/model2", t_tmpdir());
    CHECK(d2_mkdir_p(dir, &e) == 0);
    CHECK_ERR(d2_path_inside(dir, "../x", "layers[0]", &e), e, D2_EINPUT, "contains \"..\"");
    CHECK(strstr(e.msg, "layers[0]") != NULL);
    CHECK_ERR(d2_path_inside(dir, "a/../../x", "layers[0]", &e), e, D2_EINPUT, "\"..\"");
    CHECK_ERR(d2_path_inside(dir, "/etc/passwd", "layers[0]", &e), e, D2_EINPUT,
              "absolute path");
    CHECK_ERR(d2_path_inside(dir, "", "layers[0]", &e), e, D2_EINPUT, "empty");
    CHECK(symlink("/etc/passwd", t_path("model2/out.npy")) == 0);
    CHECK_ERR(d2_path_inside(dir, "out.npy", "layers[0]", &e), e, D2_EINPUT,
              "outside the folder");
    CHECK(symlink("/", t_path("model2/root")) == 0);
    CHECK_ERR(d2_path_inside(dir, "root/etc/x.npy", "layers[0]", &e), e, D2_EINPUT,
              "outside the folder");
    CHECK(symlink("/nonexistent-d2fab-target", t_path("model2/dangling.npy")) == 0);
    CHECK_ERR(d2_path_inside(dir, "dangling.npy", "layers[0]", &e), e, D2_EINPUT,
              "missing target");
}

TEST(sigkill_during_a_write_leaves_the_previous_complete_file)
{
    d2_err e = {0};
    char dir[1024], p[1100];
    snprintf(dir, sizeof dir, "%s/kill", t_tmpdir());
    snprintf(p, sizeof p, "%s/model.npy", dir);
    CHECK(d2_mkdir_p(dir, &e) == 0);
    CHECK(d2_write_file(p, "previous complete file", 22, &e) == 0);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* Child: half-write a big replacement, tell the parent, wait to die. */
        d2_err ce = {0};
        d2_out *o = d2_out_open(p, &ce);
        static char junk[1 << 20];
        for (int i = 0; o && i < 8; i++) fwrite(junk, 1, sizeof junk, d2_out_fp(o));
        if (o) fflush(d2_out_fp(o));
        if (write(fds[1], "x", 1) != 1) _exit(1);
        for (;;) pause();
    }
    CHECK(pid > 0);
    char c;
    CHECK(read(fds[0], &c, 1) == 1);
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    close(fds[0]);
    close(fds[1]);
    char *b = NULL;
    size_t n = 0;
    CHECK(d2_read_file(p, 1 << 24, &b, &n, &e) == 0);
    CHECK(b && n == 22 && memcmp(b, "previous complete file", 22) == 0);
    free(b);
    /* The only trace is the hidden temporary beside it. */
    CHECK(count_entries(dir) == 2);
}

/* ------------------------------------------------------------------- npy */

/* Writes a hand-made .npy file: version major.0, header text as given (padded
 * with spaces and '\n'), then nbytes of data (a counting pattern). */
static void make_npy(const char *path, int major, const char *dict, size_t nbytes)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t hlen = dl + 1;
    hlen += (64 - (pre + hlen) % 64) % 64;
    size_t total = pre + hlen + nbytes;
    unsigned char *b = calloc(1, total);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    for (size_t i = 0; i < pre - 8; i++) b[8 + i] = (unsigned char)(hlen >> (8 * i));
    memset(b + pre, ' ', hlen);
    memcpy(b + pre, dict, dl);
    b[pre + hlen - 1] = '\n';
    for (size_t i = 0; i < nbytes; i++) b[pre + hlen + i] = (unsigned char)i;
    write_bytes(path, b, total);
    free(b);
}

TEST(npy_float32_2d_round_trips_exactly)
{
    d2_err e = {0};
    float v[12];
    for (int i = 0; i < 12; i++) v[i] = (float)i * 0.37f - 1.5f;
    size_t sh[2] = {3, 4};
    const char *p = t_path("f32.npy");
    CHECK(npy_write(p, NPY_F32, 2, sh, v, &e) == 0);
    CHECK((file_size(p) - 48) % 64 == 0);
    npy_array a;
    CHECK(npy_read(p, &a, &e) == 0);
    CHECK(a.dtype == NPY_F32 && a.ndim == 2 && a.shape[0] == 3 && a.shape[1] == 4);
    CHECK(npy_count(&a) == 12);
    CHECK(a.data && memcmp(a.data, v, sizeof v) == 0);
    npy_free(&a);
    CHECK(a.data == NULL);
    npy_free(NULL);
}

TEST(npy_complex64_3d_round_trips_exactly)
{
    d2_err e = {0};
    float v[2 * 3 * 5 * 2];
    for (int i = 0; i < 60; i++) v[i] = sinf((float)i);
    size_t sh[3] = {2, 3, 5};
    const char *p = t_path("c64.npy");
    CHECK(npy_write(p, NPY_C64, 3, sh, v, &e) == 0);
    npy_array a;
    CHECK(npy_read(p, &a, &e) == 0);
    CHECK(a.dtype == NPY_C64 && a.ndim == 3 && a.shape[0] == 2 && a.shape[1] == 3 &&
          a.shape[2] == 5);
    CHECK(a.data && memcmp(a.data, v, sizeof v) == 0);
    npy_free(&a);
}

TEST(npy_header_matches_what_numpy_writes)
{
    d2_err e = {0};
    float v[3] = {1, 2, 3};
    size_t sh[1] = {3};
    const char *p = t_path("one.npy");
    CHECK(npy_write(p, NPY_F32, 1, sh, v, &e) == 0);
    char *b = NULL;
    size_t n = 0;
    CHECK(d2_read_file(p, 1000, &b, &n, &e) == 0);
    static const char want[] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, "
                       "'shape': (3,), }";
    CHECK(b && n == 128 + 12 && memcmp(b, want, sizeof want - 1) == 0);
    CHECK(b && b[127] == '\n' && b[126] == ' ');
    free(b);
}

TEST(npy_reads_versions_2_and_3_and_numpy_spelling_variants)
{
    d2_err e = {0};
    npy_array a;
    const char *p = t_path("v2.npy");
    make_npy(p, 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 16);
    CHECK(npy_read(p, &a, &e) == 0 && a.ndim == 2 && a.shape[0] == 2);
    npy_free(&a);
    make_npy(p, 3, "{\"shape\":(4,),\"descr\":\"<c8\",\"fortran_order\":False}", 32);
    CHECK(npy_read(p, &a, &e) == 0 && a.dtype == NPY_C64 && a.ndim == 1 && a.shape[0] == 4);
    npy_free(&a);
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1L, 3L)}", 12);
    CHECK(npy_read(p, &a, &e) == 0 && a.shape[0] == 1 && a.shape[1] == 3);
    npy_free(&a);
}

TEST(progress_line_fits_the_terminal_and_gives_the_run_eta)
{
    d2_progress p;
    d2_progress_start(&p, NULL, "epoch 3/8");
    char buf[512];
    /* Plain lines (a log file): 25 % done in 60 s -> 180 s left in this bar;
     * 1000 s of later epochs make the run's ETA 1180 s = 19:40. */
    d2_progress_after(&p, 1000);
    d2_progress_format(&p, 250, 1000, "loss 0.5", 60, buf, sizeof buf);
    CHECK(strstr(buf, "ETA 03:00 (run 19:40) loss 0.5") != NULL);
    /* unknown: said so, not guessed */
    d2_progress_after(&p, -1);
    d2_progress_format(&p, 250, 1000, "", 60, buf, sizeof buf);
    CHECK(strstr(buf, "(run --:--)") != NULL);
    d2_progress_after(&p, 0);
    d2_progress_format(&p, 250, 1000, "", 60, buf, sizeof buf);
    CHECK(strstr(buf, "(run") == NULL);
    /* A terminal 40 columns wide: the bar line stops one column short, so
     * it never wraps and the next carriage return redraws all of it. */
    p.tty = 1;
    p.width = 40;
    d2_progress_after(&p, 5000);
    d2_progress_format(&p, 250, 1000, "loss 0.4123 acc 93.21%", 60, buf, sizeof buf);
    CHECK(strlen(buf) == 39);
    CHECK(strncmp(buf, "epoch 3/8 [#######", 18) == 0);
    p.width = 200;
    d2_progress_format(&p, 250, 1000, "loss 0.4123 acc 93.21%", 60, buf, sizeof buf);
    CHECK(strlen(buf) < 199 && strstr(buf, "(run 1:26:20)  loss 0.4123 acc 93.21%"));
}

/* A .npy whose data bytes are given: header dict + raw. */
static void make_npy_data(const char *path, const char *dict, const void *data, size_t nbytes)
{
    make_npy(path, 1, dict, nbytes);
    FILE *f = fopen(path, "r+b");
    if (!f) exit(3);
    fseek(f, -(long)nbytes, SEEK_END);
    fwrite(data, 1, nbytes, f);
    fclose(f);
}

TEST(npy_float64_float16_and_big_endian_are_converted_to_float32)
{
    d2_err e = {0};
    npy_array a;
    const char *p = t_path("conv.npy");
    /* float64, NumPy's default: values chosen to be exact in float32. */
    double d[4] = {0.0, -1.5, 3.140625, 6.2831854820251465};
    make_npy_data(p, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", d, sizeof d);
    CHECK(npy_read(p, &a, &e) == 0 && a.dtype == NPY_F32 && a.ndim == 2);
    CHECK(a.converted_from && !strcmp(a.converted_from, "float64"));
    for (int i = 0; i < 4 && a.data; i++) CHECK(((float *)a.data)[i] == (float)d[i]);
    npy_free(&a);
    /* big-endian float64 of the same values */
    unsigned char be[32];
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 8; k++) be[i * 8 + k] = ((unsigned char *)&d[i])[7 - k];
    make_npy_data(p, "{'descr': '>f8', 'fortran_order': False, 'shape': (4,), }", be, sizeof be);
    CHECK(npy_read(p, &a, &e) == 0 && a.converted_from && strstr(a.converted_from, "big-endian"));
    for (int i = 0; i < 4 && a.data; i++) CHECK(((float *)a.data)[i] == (float)d[i]);
    npy_free(&a);
    /* float16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff (largest), 2^-24 = 0x0001 (smallest
     * subnormal), +inf = 0x7c00 */
    uint16_t h[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00};
    float hv[5] = {1.0f, -2.0f, 65504.0f, 5.9604645e-8f, INFINITY};
    make_npy_data(p, "{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }", h, sizeof h);
    CHECK(npy_read(p, &a, &e) == 0 && a.converted_from && !strcmp(a.converted_from, "float16"));
    for (int i = 0; i < 5 && a.data; i++) CHECK(((float *)a.data)[i] == hv[i]);
    npy_free(&a);
    /* complex128 -> complex64 */
    double c[4] = {1.0, -0.5, 0.25, 2.0};
    make_npy_data(p, "{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", c, sizeof c);
    CHECK(npy_read(p, &a, &e) == 0 && a.dtype == NPY_C64 && a.shape[0] == 2);
    for (int i = 0; i < 4 && a.data; i++) CHECK(((float *)a.data)[i] == (float)c[i]);
    npy_free(&a);
    /* a finite float64 that float32 cannot hold is refused, naming the element */
    double big[3] = {1.0, 2.0, 1e300};
    make_npy_data(p, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", big, sizeof big);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "element 2 is 1e+300, beyond float32's range");
    CHECK(a.data == NULL);
    /* a float64 map goes through npy_read_map, NaN still named */
    double m[4] = {0.5, 0.25, NAN, 1.0};
    make_npy_data(p, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", m, sizeof m);
    float *map = NULL;
    int rows = 0, cols = 0;
    CHECK_ERR(npy_read_map(p, &map, &rows, &cols, &e), e, D2_EINPUT, "[1, 0] is NaN");
    m[2] = 0.125;
    make_npy_data(p, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", m, sizeof m);
    CHECK(npy_read_map(p, &map, &rows, &cols, &e) == 0 && rows == 2 && cols == 2 && map &&
          map[2] == 0.125f);
    free(map);
}

TEST(npy_rejects_other_dtypes_orders_and_shapes)
{
    d2_err e = {0};
    npy_array a;
    const char *p = t_path("bad.npy");
    make_npy(p, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "'<i4' (int32)");
    CHECK(strstr(e.msg, "bad.npy") && strstr(e.msg, "float32 ('<f4')") &&
          strstr(e.msg, "astype(np.float32)"));
    make_npy(p, 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", 2);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "'|u1' (uint8)");
    make_npy(p, 1, "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", 16);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "Python objects");
    make_npy(p, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "structured dtype");
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "fortran_order is True");
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 2), }", 8);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "4 dimensions; expected 1 to 3");
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "0 dimensions");
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", 0);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "(0, 3) has an empty dimension");
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536), }", 0);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "exceeds the limit");
    CHECK(a.data == NULL);
}

TEST(npy_rejects_truncated_extra_and_foreign_files)
{
    d2_err e = {0};
    npy_array a;
    const char *p = t_path("trunc.npy");
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 47);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "needs 48 bytes; found 47 (file truncated)");
    CHECK(strstr(e.msg, "trunc.npy") && strstr(e.msg, "(3, 4)"));
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 52);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "extra bytes");
    write_bytes(p, "PK\x03\x04 this is a zip, not npy", 27);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "not a .npy file");
    write_bytes(p, "\x93NUM", 4);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "not a .npy file");
    write_bytes(p, "\x93NUMPY\x01\x00\x40\x00{'descr'", 17);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "truncated .npy header");
    write_bytes(p, "\x93NUMPY\x04\x00\x10\x00", 10);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "version 4.0");
    write_bytes(p, "\x93NUMPY\x02\x00\xff\xff\xff\x7f", 12);
    CHECK_ERR(npy_read(p, &a, &e), e, D2_EINPUT, "header too long");
    CHECK_ERR(npy_read(t_path("absent.npy"), &a, &e), e, D2_EINPUT, "absent.npy: cannot open");
}

TEST(npy_rejects_malformed_header_dictionaries)
{
    d2_err e = {0};
    npy_array a;
    const char *p = t_path("hdr.npy");
    static const char *bad[] = {
        "{'descr': '<f4', 'fortran_order': False}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
        "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
        "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ",
        "{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}",
        "['descr', '<f4']",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} trailing",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        make_npy(p, 1, bad[i], 8);
        e.msg[0] = 0;
        int rc = npy_read(p, &a, &e);
        if (rc != D2_EINPUT || !strstr(e.msg, "hdr.npy"))
            printf("  header %zu: rc %d message \"%s\"\n", i, rc, e.msg);
        CHECK(rc == D2_EINPUT && strstr(e.msg, "hdr.npy"));
    }
}

TEST(npy_read_map_names_the_first_non_finite_value)
{
    d2_err e = {0};
    float v[6] = {0, 1, 2, 3, 4, 5};
    size_t sh[2] = {2, 3};
    const char *p = t_path("map.npy");
    float *m = NULL;
    int r = 0, c = 0;
    CHECK(npy_write(p, NPY_F32, 2, sh, v, &e) == 0);
    CHECK(npy_read_map(p, &m, &r, &c, &e) == 0 && r == 2 && c == 3 && m && m[5] == 5);
    free(m);
    v[5] = NAN;
    v[4] = NAN;
    CHECK(npy_write(p, NPY_F32, 2, sh, v, &e) == 0);
    CHECK_ERR(npy_read_map(p, &m, &r, &c, &e), e, D2_EINPUT, "map.npy: value at [1, 1] is NaN");
    CHECK(m == NULL);
    v[4] = 4;
    v[5] = 4;
    v[2] = -INFINITY;
    CHECK(npy_write(p, NPY_F32, 2, sh, v, &e) == 0);
    CHECK_ERR(npy_read_map(p, &m, &r, &c, &e), e, D2_EINPUT, "value at [0, 2] is infinite");
    size_t sh3[3] = {1, 2, 3};
    CHECK(npy_write(p, NPY_F32, 3, sh3, v, &e) == 0);
    CHECK_ERR(npy_read_map(p, &m, &r, &c, &e), e, D2_EINPUT, "expected a 2-D float32 map");
    CHECK(npy_write(p, NPY_C64, 2, (size_t[]){1, 3}, v, &e) == 0);
    CHECK_ERR(npy_read_map(p, &m, &r, &c, &e), e, D2_EINPUT, "<c8 array");
}

TEST(npy_write_refuses_shapes_it_cannot_read_back)
{
    d2_err e = {0};
    float v[16] = {0};
    size_t sh[4] = {2, 2, 2, 2};
    CHECK_ERR(npy_write(t_path("four.npy"), NPY_F32, 4, sh, v, &e), e, D2_EUSAGE,
              "1 to 3 dimensions");
    size_t z[2] = {0, 2};
    CHECK_ERR(npy_write(t_path("zero.npy"), NPY_F32, 2, z, v, &e), e, D2_EUSAGE, "empty");
    CHECK(file_size(t_path("four.npy")) < 0 && file_size(t_path("zero.npy")) < 0);
}

/* ------------------------------------------------------------------- PNG */

TEST(png_gray8_round_trips_exactly)
{
    d2_err e = {0};
    uint8_t px[7 * 5];
    for (int i = 0; i < 35; i++) px[i] = (uint8_t)(i * 7);
    const char *p = t_path("g8.png");
    CHECK(img_write_gray8(p, 7, 5, px, &e) == 0);
    int w = 0, h = 0;
    float *g = NULL;
    CHECK(img_read_gray(p, &w, &h, &g, &e) == 0 && w == 7 && h == 5);
    for (int i = 0; g && i < 35; i++) CHECK_NEAR(g[i], px[i] / 255.0, 1e-7);
    free(g);
}

TEST(png_gray16_round_trips_exactly)
{
    d2_err e = {0};
    uint16_t px[4 * 3];
    for (int i = 0; i < 12; i++) px[i] = (uint16_t)(i * 5957 + 1);
    px[11] = 65535;
    const char *p = t_path("g16.png");
    CHECK(img_write_gray16(p, 4, 3, px, &e) == 0);
    int w = 0, h = 0;
    float *g = NULL;
    CHECK(img_read_gray(p, &w, &h, &g, &e) == 0 && w == 4 && h == 3);
    for (int i = 0; g && i < 12; i++) CHECK(lrintf(g[i] * 65535.0f) == px[i]);
    free(g);
}

TEST(png_rgb_reads_back_as_luminance)
{
    d2_err e = {0};
    uint8_t px[3 * 3] = {255, 0, 0, 0, 255, 0, 10, 20, 30};
    const char *p = t_path("rgb.png");
    CHECK(img_write_rgb8(p, 3, 1, px, &e) == 0);
    int w = 0, h = 0;
    float *g = NULL;
    CHECK(img_read_gray(p, &w, &h, &g, &e) == 0 && w == 3 && h == 1);
    if (g) {
        CHECK_NEAR(g[0], 0.2126, 1e-6);
        CHECK_NEAR(g[1], 0.7152, 1e-6);
        CHECK_NEAR(g[2], (0.2126 * 10 + 0.7152 * 20 + 0.0722 * 30) / 255.0, 1e-6);
    }
    free(g);
}

TEST(png_palette_and_alpha_images_are_read)
{
    d2_err e = {0};
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = 2;
    im.height = 1;
    im.format = PNG_FORMAT_RGB_COLORMAP;
    im.colormap_entries = 2;
    uint8_t cmap[6] = {0, 0, 0, 255, 255, 255}, idx[2] = {1, 0};
    const char *p = t_path("pal.png");
    CHECK(png_image_write_to_file(&im, p, 0, idx, 0, cmap));
    int w = 0, h = 0;
    float *g = NULL;
    CHECK(img_read_gray(p, &w, &h, &g, &e) == 0 && w == 2 && h == 1);
    if (g) CHECK(fabsf(g[0] - 1.0f) < 1e-6f && g[1] == 0.0f);
    free(g);
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = 2;
    im.height = 1;
    im.format = PNG_FORMAT_GA;
    uint8_t ga[4] = {255, 255, 255, 0}; /* opaque white, transparent white */
    CHECK(png_image_write_to_file(&im, p, 0, ga, 0, NULL));
    CHECK(img_read_gray(p, &w, &h, &g, &e) == 0);
    if (g) CHECK(g[0] == 1.0f && g[1] == 0.0f);
    free(g);
}

TEST(png_reader_rejects_foreign_and_truncated_files)
{
    d2_err e = {0};
    int w, h;
    float *g = NULL;
    const char *p = t_path("bad.png");
    write_bytes(p, "GIF89a not a png", 16);
    CHECK_ERR(img_read_gray(p, &w, &h, &g, &e), e, D2_EINPUT, "bad.png: not a PNG file");
    uint8_t px[64 * 64];
    for (int i = 0; i < 64 * 64; i++) px[i] = (uint8_t)(i * 31 + i / 7);
    CHECK(img_write_gray8(p, 64, 64, px, &e) == 0);
    long n = file_size(p);
    CHECK(n > 100 && truncate(p, n / 2) == 0);
    CHECK_ERR(img_read_gray(p, &w, &h, &g, &e), e, D2_EINPUT, "bad.png");
    CHECK(g == NULL);
    CHECK_ERR(img_read_gray(t_path("absent.png"), &w, &h, &g, &e), e, D2_EINPUT, "cannot open");
    CHECK_ERR(img_write_gray8(t_path("empty.png"), 0, 3, px, &e), e, D2_EUSAGE, "image size 0 x 3");
}

TEST(colour_maps_hit_their_published_end_points)
{
    uint8_t c[3];
    img_cmap_rgb(CMAP_VIRIDIS, 0, c);
    CHECK(c[0] == 68 && c[1] == 1 && c[2] == 84); /* #440154 */
    img_cmap_rgb(CMAP_VIRIDIS, 1, c);
    CHECK(c[0] == 253 && c[1] == 231 && c[2] == 37); /* #fde725 */
    img_cmap_rgb(CMAP_VIRIDIS, 128.0f / 255.0f, c);
    CHECK(c[0] == 33 && c[1] == 145 && c[2] == 140); /* #21918c */
    img_cmap_rgb(CMAP_INFERNO, 0, c);
    CHECK(c[0] == 0 && c[1] == 0 && c[2] == 4);
    img_cmap_rgb(CMAP_INFERNO, 1, c);
    CHECK(c[0] == 252 && c[1] == 255 && c[2] == 164); /* #fcffa4 */
    img_cmap_rgb(CMAP_GRAY, 0.5f, c);
    CHECK(c[0] == 128 && c[1] == 128 && c[2] == 128);
    img_cmap_rgb(CMAP_GRAY, NAN, c);
    CHECK(c[0] == 0);
}

TEST(cyclic_map_is_continuous_across_the_wrap)
{
    uint8_t a[3], b[3], prev[3];
    img_cmap_rgb(CMAP_TWILIGHT, 0, a);
    img_cmap_rgb(CMAP_TWILIGHT, 1, b);
    CHECK(a[0] == b[0] && a[1] == b[1] && a[2] == b[2]);
    /* No jump larger than a few levels between neighbouring 1/512 steps. */
    int worst = 0;
    img_cmap_rgb(CMAP_TWILIGHT, 0, prev);
    for (int i = 1; i <= 512; i++) {
        uint8_t c[3];
        img_cmap_rgb(CMAP_TWILIGHT, (float)i / 512.0f, c);
        for (int k = 0; k < 3; k++) {
            int d = abs((int)c[k] - (int)prev[k]);
            if (d > worst) worst = d;
        }
        memcpy(prev, c, 3);
    }
    CHECK(worst <= 4);
}

TEST(colormap_png_is_scaled_and_clamped)
{
    d2_err e = {0};
    float v[2] = {-5, 10};
    const char *p = t_path("cm.png");
    CHECK(img_write_colormap(p, 2, 1, v, 0, 1, CMAP_GRAY, 3, &e) == 0);
    int w = 0, h = 0;
    float *g = NULL;
    CHECK(img_read_gray(p, &w, &h, &g, &e) == 0 && w == 6 && h == 3);
    if (g) CHECK(g[0] == 0.0f && g[2] == 0.0f && fabsf(g[3] - 1.0f) < 1e-6f && g[17] > 0.99f);
    free(g);
    CHECK_ERR(img_write_colormap(p, 2, 1, v, 0, 1, CMAP_GRAY, 0, &e), e, D2_EUSAGE, "scale 0");
}

/* ---------------------------------------------------------------- config */

static const char *const geo_keys[] = {"frequency_thz", "wavelength_mm", "pitch_mm", "neurons",
                                       "gaps_mm", "coupled", "dataset", NULL};

TEST(config_reads_every_type_from_a_file)
{
    d2_err e = {0};
    const char *p = t_path("good.json");
    t_write_text(p, "{\n  \"geometry\": {\"frequency_thz\": 0.4, \"pitch_mm\": 0.4, \"neurons\": 200,\n"
                    "   \"gaps_mm\": [30, 30, 30], \"coupled\": true, \"dataset\": \"fashion\"}\n}\n");
    cJSON *root = NULL;
    CHECK(cfg_load(p, &root, &e) == 0 && root);
    cfg_ctx top = {p, ""}, gc = {p, "geometry"};
    const cJSON *g = NULL, *none = NULL;
    static const char *const top_keys[] = {"geometry", NULL};
    CHECK(cfg_check_keys(&top, root, top_keys, &e) == 0);
    CHECK(cfg_object(&top, root, "geometry", &g, &e) == 0 && g);
    CHECK(cfg_object(&top, root, "input", &none, &e) == 0 && none == NULL);
    CHECK(cfg_check_keys(&gc, g, geo_keys, &e) == 0);
    double f = 0, wl = 0, gaps[4];
    long n = 0;
    int cp = 0, ds = -1, ng = 0;
    const char *s = NULL;
    static const char *const sets[] = {"mnist", "fashion", NULL};
    CHECK(cfg_num(&gc, g, "frequency_thz", 1, 0, 0.01, 10, &f, &e) == 0 && f == 0.4);
    CHECK(cfg_num(&gc, g, "wavelength_mm", 0, 0.75, 0, 100, &wl, &e) == 0 && wl == 0.75);
    CHECK(cfg_int(&gc, g, "neurons", 1, 0, 1, 4096, &n, &e) == 0 && n == 200);
    CHECK(cfg_bool(&gc, g, "coupled", 1, 0, &cp, &e) == 0 && cp == 1);
    CHECK(cfg_str(&gc, g, "dataset", 1, NULL, &s, &e) == 0 && s && strcmp(s, "fashion") == 0);
    CHECK(cfg_enum(&gc, g, "dataset", 1, 0, sets, &ds, &e) == 0 && ds == 1);
    CHECK(cfg_num_array(&gc, g, "gaps_mm", 2, 4, 0, 1000, gaps, &ng, &e) == 0 && ng == 3 &&
          gaps[2] == 30);
    cJSON_Delete(root);
}

TEST(config_syntax_errors_give_line_and_column)
{
    d2_err e = {0};
    cJSON *root = NULL;
    CHECK_ERR(cfg_parse("x.json", "{\n  \"a\": 1,\n  \"b\": tru\n}\n", &root, &e), e, D2_EINPUT,
              "x.json:3:8: JSON syntax error");
    CHECK(root == NULL);
    CHECK_ERR(cfg_parse("x.json", "{\"a\": [1, 2,\n", &root, &e), e, D2_EINPUT,
              "unexpected end of file");
    CHECK_ERR(cfg_parse("x.json", "{\"a\": 1} {", &root, &e), e, D2_EINPUT, "x.json:1:10:");
    CHECK_ERR(cfg_parse("x.json", "{\"a\": NaN}", &root, &e), e, D2_EINPUT, "x.json:1:7:");
    CHECK_ERR(cfg_parse("x.json", "", &root, &e), e, D2_EINPUT, "x.json:1:1:");
    const char *p = t_path("nul.json");
    write_bytes(p, "{\"a\": 1}\0{", 10);
    CHECK_ERR(cfg_load(p, &root, &e), e, D2_EINPUT, "NUL byte at offset 8");
    CHECK_ERR(cfg_load(t_path("absent.json"), &root, &e), e, D2_EINPUT, "absent.json");
}

TEST(config_unknown_and_repeated_keys_are_named)
{
    d2_err e = {0};
    cJSON *root = NULL;
    CHECK(cfg_parse("samples/quick.json", "{\"pitch\": 0.4}", &root, &e) == 0);
    cfg_ctx gc = {"samples/quick.json", "geometry"};
    CHECK_ERR(cfg_check_keys(&gc, root, geo_keys, &e), e, D2_EINPUT,
              "samples/quick.json: unknown key \"geometry.pitch\" (allowed: frequency_thz, "
              "wavelength_mm, pitch_mm, neurons, gaps_mm, coupled, dataset)");
    CHECK(strstr(e.msg, "did you mean \"pitch_mm\"") != NULL);
    cJSON_Delete(root);
    CHECK(cfg_parse("q.json", "{\"neurons\": 1, \"neurons\": 2}", &root, &e) == 0);
    cfg_ctx top = {"q.json", ""};
    CHECK_ERR(cfg_check_keys(&top, root, geo_keys, &e), e, D2_EINPUT,
              "q.json: key \"neurons\" appears twice");
    cJSON_Delete(root);
    CHECK(cfg_parse("q.json", "[1]", &root, &e) == 0);
    CHECK_ERR(cfg_check_keys(&top, root, geo_keys, &e), e, D2_EINPUT, "must be a JSON object");
    CHECK(cfg_check_keys(&top, NULL, geo_keys, &e) == 0);
    cJSON_Delete(root);
}

TEST(config_values_out_of_range_or_of_the_wrong_type_are_named)
{
    d2_err e = {0};
    cJSON *root = NULL;
    CHECK(cfg_parse("samples/quick.json",
                    "{\"pitch_mm\": -1, \"neurons\": 2.5, \"big\": 1e300, \"inf\": 1e999,"
                    " \"s\": 3, \"b\": \"yes\", \"arr\": [1, -2], \"ds\": \"digits\", \"o\": 4}",
                    &root, &e) == 0);
    cfg_ctx c = {"samples/quick.json", "geometry"};
    double d;
    long l;
    int b, k, n;
    const char *s;
    double arr[4];
    static const char *const sets[] = {"mnist", "fashion", NULL};
    const cJSON *o;
    CHECK_ERR(cfg_num_range(&c, root, "pitch_mm", 1, 0, 0, 100, CFG_LO_OPEN, &d, &e), e,
              D2_EINPUT, "samples/quick.json: key \"geometry.pitch_mm\" = -1: must be in (0, 100]");
    CHECK_ERR(cfg_num(&c, root, "pitch_mm", 1, 0, 0, INFINITY, &d, &e), e, D2_EINPUT,
              "= -1: must be >= 0");
    CHECK_ERR(cfg_num(&c, root, "s", 1, 0, 0, 1, &d, &e), e, D2_EINPUT,
              "key \"geometry.s\" = 3: must be in [0, 1]");
    CHECK_ERR(cfg_num(&c, root, "b", 1, 0, 0, 1, &d, &e), e, D2_EINPUT,
              "key \"geometry.b\" = \"yes\": must be a number in [0, 1]");
    CHECK_ERR(cfg_num(&c, root, "inf", 1, 0, -INFINITY, INFINITY, &d, &e), e, D2_EINPUT,
              "must be a finite number");
    CHECK_ERR(cfg_num(&c, root, "missing_mm", 1, 0, 0, 5, &d, &e), e, D2_EINPUT,
              "missing key \"geometry.missing_mm\" (a number in [0, 5])");
    CHECK_ERR(cfg_int(&c, root, "neurons", 1, 0, 1, 4096, &l, &e), e, D2_EINPUT,
              "key \"geometry.neurons\" = 2.5: must be an integer in [1, 4096]");
    CHECK_ERR(cfg_int(&c, root, "big", 1, 0, 1, 4096, &l, &e), e, D2_EINPUT, "= 1e+300");
    CHECK_ERR(cfg_bool(&c, root, "b", 1, 0, &b, &e), e, D2_EINPUT, "must be true or false");
    CHECK_ERR(cfg_str(&c, root, "s", 1, NULL, &s, &e), e, D2_EINPUT, "= 3: must be a string");
    CHECK_ERR(cfg_enum(&c, root, "ds", 1, 0, sets, &k, &e), e, D2_EINPUT,
              "= \"digits\": must be one of \"mnist\", \"fashion\"");
    CHECK_ERR(cfg_num_array(&c, root, "arr", 2, 2, 0, 10, arr, &n, &e), e, D2_EINPUT,
              "key \"geometry.arr[1]\" = -2: must be a number in [0, 10]");
    CHECK_ERR(cfg_num_array(&c, root, "arr", 3, 4, 0, 10, arr, &n, &e), e, D2_EINPUT,
              "has 2 numbers; must have 3 to 4");
    CHECK_ERR(cfg_num_array(&c, root, "s", 1, 4, 0, 10, arr, &n, &e), e, D2_EINPUT,
              "must be an array");
    CHECK_ERR(cfg_object(&c, root, "o", &o, &e), e, D2_EINPUT, "key \"geometry.o\" = 4: must be an object");
    CHECK(cfg_num_array(&c, root, "absent", 0, 4, 0, 10, arr, &n, &e) == 0 && n == 0);
    cJSON_Delete(root);
}

TEST(config_write_then_load_round_trips)
{
    d2_err e = {0};
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "pitch_mm", 0.123456789012345);
    cJSON_AddStringToObject(r, "name", "x");
    const char *p = t_path("w.json");
    CHECK(cfg_write(p, r, &e) == 0);
    cJSON_Delete(r);
    cJSON *q = NULL;
    CHECK(cfg_load(p, &q, &e) == 0);
    cfg_ctx c = {p, ""};
    double d = 0;
    CHECK(cfg_num(&c, q, "pitch_mm", 1, 0, 0, 1, &d, &e) == 0 && d == 0.123456789012345);
    cJSON_Delete(q);
}

/* ------------------------------------------------------------------- IDX */

TEST(idx_images_and_labels_round_trip)
{
    d2_err e = {0};
    uint8_t px[3 * 4 * 5], lab[3] = {7, 0, 9};
    for (int i = 0; i < 60; i++) px[i] = (uint8_t)(i * 4);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/ds/mnist", t_tmpdir());
    CHECK(d2_mkdir_p(dir, &e) == 0);
    CHECK(idx_write_images(t_path("ds/mnist/t10k-images-idx3-ubyte"), px, 3, 4, 5, &e) == 0);
    CHECK(idx_write_labels(t_path("ds/mnist/t10k-labels-idx1-ubyte"), lab, 3, &e) == 0);
    CHECK(file_size(t_path("ds/mnist/t10k-images-idx3-ubyte")) == 16 + 60);
    uint8_t *rp = NULL;
    int n = 0, r = 0, c = 0;
    CHECK(idx_read_images(t_path("ds/mnist/t10k-images-idx3-ubyte"), &rp, &n, &r, &c, &e) == 0);
    CHECK(n == 3 && r == 4 && c == 5 && rp && memcmp(rp, px, 60) == 0);
    free(rp);
    d2_dataset ds;
    CHECK(dataset_load(t_path("ds"), "mnist", 1, &ds, &e) == 0);
    CHECK(ds.count == 3 && ds.rows == 4 && ds.cols == 5 && ds.labels && ds.labels[2] == 9);
    dataset_free(&ds);
    CHECK(ds.images == NULL);
    dataset_free(NULL);
}

TEST(idx_reader_rejects_wrong_magic_truncation_and_bad_labels)
{
    d2_err e = {0};
    uint8_t px[2 * 2 * 2] = {0}, lab[2] = {1, 2}, *out = NULL;
    int n, r, c;
    const char *img = t_path("i-idx3"), *lb = t_path("l-idx1");
    CHECK(idx_write_images(img, px, 2, 2, 2, &e) == 0);
    CHECK(idx_write_labels(lb, lab, 2, &e) == 0);
    CHECK_ERR(idx_read_images(lb, &out, &n, &r, &c, &e), e, D2_EINPUT,
              "magic number 0x00000801 (an idx1-ubyte label file); expected 0x00000803");
    CHECK(strstr(e.msg, "l-idx1") != NULL);
    CHECK_ERR(idx_read_labels(img, &out, &n, &e), e, D2_EINPUT, "expected 0x00000801");
    CHECK(truncate(img, 16 + 7) == 0);
    CHECK_ERR(idx_read_images(img, &out, &n, &r, &c, &e), e, D2_EINPUT,
              "file is 23 bytes; expected 24 (16-byte header + 2 images of 2 x 2): truncated");
    CHECK(truncate(img, 10) == 0);
    CHECK_ERR(idx_read_images(img, &out, &n, &r, &c, &e), e, D2_EINPUT, "shorter than the 16-byte");
    CHECK(truncate(lb, 9) == 0);
    CHECK_ERR(idx_read_labels(lb, &out, &n, &e), e, D2_EINPUT, "expected 10 (8-byte header + 2 labels)");
    write_bytes(lb, "\0\0\x08\x01\0\0\0\x02\x03\x0a", 10);
    CHECK_ERR(idx_read_labels(lb, &out, &n, &e), e, D2_EINPUT, "label 1 is 10; expected 0..9");
    write_bytes(img, "\x1f\x8b\x08\0gzipped", 11);
    CHECK_ERR(idx_read_images(img, &out, &n, &r, &c, &e), e, D2_EINPUT, "i-idx3: gzip data ends early");
    write_bytes(img, "\0\0\x08\x03\0\0\0\x01\0\0\0\0\0\0\0\x01", 16);
    CHECK_ERR(idx_read_images(img, &out, &n, &r, &c, &e), e, D2_EINPUT, "image size 0 x 1");
    CHECK(out == NULL);
    lab[0] = 12;
    CHECK_ERR(idx_write_labels(lb, lab, 2, &e), e, D2_EUSAGE, "label 0 is 12");
}

/* Compresses file src into dst with zlib's gzip writer. */
static void gzip_file(const char *src, const char *dst)
{
    char *b = NULL;
    size_t n = 0;
    d2_err e = {0};
    CHECK(d2_read_file(src, 1 << 26, &b, &n, &e) == 0);
    gzFile z = gzopen(dst, "wb9");
    CHECK(z != NULL);
    if (z) {
        CHECK(gzwrite(z, b, (unsigned)n) == (int)n);
        CHECK(gzclose(z) == Z_OK);
    }
    free(b);
}

/* gzip IDX files (the form MNIST and Fashion-MNIST are distributed in) read
 * back exactly; dataset_load takes FILE.gz over FILE; truncated or corrupt
 * gzip data fails naming the file. */
TEST(gzip_idx_round_trip_and_damaged_files_fail_naming_them)
{
    d2_err e = {0};
    enum { N = 300, R = 28, C = 28 };
    uint8_t *px = malloc((size_t)N * R * C), lab[N], *out = NULL;
    for (size_t i = 0; i < (size_t)N * R * C; i++) px[i] = (uint8_t)(i * 7919u >> 3);
    for (int i = 0; i < N; i++) lab[i] = (uint8_t)(i * 3 % 10);
    CHECK(d2_mkdir_p(t_path("gz/fashion"), &e) == 0);
    const char *raw_i = t_path("gz/raw-images"), *raw_l = t_path("gz/raw-labels");
    CHECK(idx_write_images(raw_i, px, N, R, C, &e) == 0);
    CHECK(idx_write_labels(raw_l, lab, N, &e) == 0);
    char gi[512], gl[512];
    snprintf(gi, sizeof gi, "%s", t_path("gz/fashion/t10k-images-idx3-ubyte.gz"));
    snprintf(gl, sizeof gl, "%s", t_path("gz/fashion/t10k-labels-idx1-ubyte.gz"));
    gzip_file(raw_i, gi);
    gzip_file(raw_l, gl);
    int n = 0, r = 0, c = 0;
    CHECK(idx_read_images(gi, &out, &n, &r, &c, &e) == 0);
    CHECK(n == N && r == R && c == C && out && memcmp(out, px, (size_t)N * R * C) == 0);
    free(out);
    out = NULL;
    /* a stale uncompressed file beside the .gz is not the one read */
    uint8_t one = 5;
    CHECK(idx_write_labels(t_path("gz/fashion/t10k-labels-idx1-ubyte"), &one, 1, &e) == 0);
    d2_dataset ds;
    CHECK(dataset_load(t_path("gz"), "fashion", 1, &ds, &e) == 0);
    CHECK(ds.count == N && ds.labels && memcmp(ds.labels, lab, N) == 0);
    dataset_free(&ds);
    /* truncated: the stream stops early */
    struct stat st;
    CHECK(stat(gi, &st) == 0);
    CHECK(truncate(gi, st.st_size / 2) == 0);
    CHECK_ERR(idx_read_images(gi, &out, &n, &r, &c, &e), e, D2_EINPUT, "truncated");
    CHECK(strstr(e.msg, "t10k-images-idx3-ubyte.gz") != NULL);
    CHECK_ERR(dataset_load(t_path("gz"), "fashion", 1, &ds, &e), e, D2_EINPUT,
              "t10k-images-idx3-ubyte.gz: gzip data ends early");
    /* corrupt: a flipped byte fails the deflate stream or the CRC */
    gzip_file(raw_i, gi);
    char *b = NULL;
    size_t bn = 0;
    CHECK(d2_read_file(gi, 1 << 26, &b, &bn, &e) == 0);
    for (size_t i = 40; i < bn - 8; i += 97) b[i] ^= 0x5a;
    write_bytes(gi, b, bn);
    free(b);
    CHECK_ERR(idx_read_images(gi, &out, &n, &r, &c, &e), e, D2_EINPUT, "corrupt gzip data");
    CHECK(strstr(e.msg, "t10k-images-idx3-ubyte.gz") != NULL);
    CHECK(out == NULL);
    free(px);
}

TEST(dataset_load_checks_counts_names_and_presence)
{
    d2_err e = {0};
    uint8_t px[3 * 2 * 2] = {0}, lab[2] = {1, 2};
    d2_dataset ds;
    CHECK(d2_mkdir_p(t_path("ds2/fashion"), &e) == 0);
    CHECK(idx_write_images(t_path("ds2/fashion/train-images-idx3-ubyte"), px, 3, 2, 2, &e) == 0);
    CHECK(idx_write_labels(t_path("ds2/fashion/train-labels-idx1-ubyte"), lab, 2, &e) == 0);
    CHECK_ERR(dataset_load(t_path("ds2"), "fashion", 0, &ds, &e), e, D2_EINPUT,
              "holds 3 images but");
    CHECK(strstr(e.msg, "holds 2 labels") != NULL);
    CHECK(ds.images == NULL && ds.labels == NULL);
    CHECK_ERR(dataset_load(t_path("ds2"), "fashion", 1, &ds, &e), e, D2_EINPUT,
              "t10k-images-idx3-ubyte: not found; run scripts/fetch-data fashion");
    CHECK_ERR(dataset_load(t_path("ds2"), "cifar", 0, &ds, &e), e, D2_EINPUT,
              "expected \"mnist\" or \"fashion\"");
}

TEST(real_mnist_test_set_loads_when_fetched)
{
    d2_err e = {0};
    char p[1024];
    snprintf(p, sizeof p, "%s/mnist/t10k-labels-idx1-ubyte", dataset_default_dir());
    if (access(p, F_OK) != 0) {
        printf("  note: %s absent (run scripts/fetch-data); skipped\n", p);
        return;
    }
    d2_dataset ds;
    CHECK(dataset_load(dataset_default_dir(), "mnist", 1, &ds, &e) == 0);
    if (e.code) printf("  %s\n", e.msg);
    CHECK(ds.count == 10000 && ds.rows == 28 && ds.cols == 28);
    int hist[10] = {0};
    for (int i = 0; i < ds.count; i++) hist[ds.labels[i]]++;
    for (int k = 0; k < 10; k++) CHECK(hist[k] > 800 && hist[k] < 1200);
    CHECK(ds.count > 0 && ds.labels[0] == 7 && ds.labels[1] == 2); /* the well-known first test digits */
    dataset_free(&ds);
}

/* The official Fashion-MNIST split (the Debian package's .gz files): 6000
 * training and 1000 test images of every class, and the test set's first
 * labels as Zalando publishes them (ankle boot, pullover, trouser, ...). */
TEST(real_fashion_sets_load_balanced_when_fetched)
{
    d2_err e = {0};
    char p[1024];
    snprintf(p, sizeof p, "%s/fashion/train-labels-idx1-ubyte.gz", dataset_default_dir());
    if (access(p, F_OK) != 0) {
        printf("  note: %s absent (run scripts/fetch-data); skipped\n", p);
        return;
    }
    for (int test = 0; test <= 1; test++) {
        d2_dataset ds;
        CHECK(dataset_load(dataset_default_dir(), "fashion", test, &ds, &e) == 0);
        CHECK(ds.count == (test ? 10000 : 60000) && ds.rows == 28 && ds.cols == 28);
        int per[10] = {0}, ok = 1;
        for (int i = 0; i < ds.count; i++) per[ds.labels[i] % 10]++;
        for (int k = 0; k < 10; k++) ok &= per[k] == ds.count / 10;
        CHECK(ok);
        static const uint8_t first[2][10] = {{9, 0, 0, 3, 0, 2, 7, 2, 5, 5},
                                             {9, 2, 1, 1, 6, 1, 4, 6, 5, 7}};
        CHECK(ds.labels && memcmp(ds.labels, first[test], 10) == 0);
        dataset_free(&ds);
    }
}

/* A cJSON_Add* that runs out of memory leaves its key out and returns NULL;
 * the document is then refused where it would be written, never written with
 * the key missing, and the next document is written again. */
TEST(a_json_document_that_lost_a_key_to_memory_is_never_written)
{
    const char *path = t_path("partial.json");
    d2_err e = {0};
    cJSON *root = cJSON_CreateObject();
    cfg_json_fail_after(2); /* the number item, then its key: the key fails */
    CHECK(cJSON_AddNumberToObject(root, "a", 1) == NULL);
    CHECK(cJSON_AddNumberToObject(root, "b", 2) != NULL);
    CHECK(cJSON_GetObjectItemCaseSensitive(root, "a") == NULL);
    CHECK_ERR(cfg_write(path, root, &e), e, D2_EIO, "out of memory while building it");
    CHECK(!t_exists(path));
    CHECK(cfg_write(path, root, &e) == 0);
    CHECK(t_exists(path));
    cJSON_Delete(root);
}

int main(void)
{
    RUN(write_file_then_read_file_round_trips);
    RUN(a_json_document_that_lost_a_key_to_memory_is_never_written);
    RUN(read_file_refuses_a_file_over_the_limit);
    RUN(aborted_output_leaves_the_previous_file_and_no_temporary);
    RUN(failed_commit_removes_the_temporary_and_reports_the_file);
    RUN(output_into_a_missing_folder_fails_with_the_file_name);
    RUN(new_files_follow_the_umask_and_rewrites_keep_permissions);
    RUN(sigkill_during_a_write_leaves_the_previous_complete_file);
    RUN(mkdir_p_creates_nested_folders_and_accepts_existing_ones);
    RUN(path_join_inserts_one_slash_and_checks_the_size);
    RUN(path_inside_accepts_plain_names_and_links_that_stay_inside);
    RUN(path_inside_rejects_parent_absolute_and_links_out);
    RUN(npy_float32_2d_round_trips_exactly);
    RUN(npy_complex64_3d_round_trips_exactly);
    RUN(npy_header_matches_what_numpy_writes);
    RUN(npy_reads_versions_2_and_3_and_numpy_spelling_variants);
    RUN(npy_float64_float16_and_big_endian_are_converted_to_float32);
    RUN(progress_line_fits_the_terminal_and_gives_the_run_eta);
    RUN(npy_rejects_other_dtypes_orders_and_shapes);
    RUN(npy_rejects_truncated_extra_and_foreign_files);
    RUN(npy_rejects_malformed_header_dictionaries);
    RUN(npy_read_map_names_the_first_non_finite_value);
    RUN(npy_write_refuses_shapes_it_cannot_read_back);
    RUN(png_gray8_round_trips_exactly);
    RUN(png_gray16_round_trips_exactly);
    RUN(png_rgb_reads_back_as_luminance);
    RUN(png_palette_and_alpha_images_are_read);
    RUN(png_reader_rejects_foreign_and_truncated_files);
    RUN(colour_maps_hit_their_published_end_points);
    RUN(cyclic_map_is_continuous_across_the_wrap);
    RUN(colormap_png_is_scaled_and_clamped);
    RUN(config_reads_every_type_from_a_file);
    RUN(config_syntax_errors_give_line_and_column);
    RUN(config_unknown_and_repeated_keys_are_named);
    RUN(config_values_out_of_range_or_of_the_wrong_type_are_named);
    RUN(config_write_then_load_round_trips);
    RUN(idx_images_and_labels_round_trip);
    RUN(idx_reader_rejects_wrong_magic_truncation_and_bad_labels);
    RUN(gzip_idx_round_trip_and_damaged_files_fail_naming_them);
    RUN(dataset_load_checks_counts_names_and_presence);
    RUN(real_mnist_test_set_loads_when_fetched);
    RUN(real_fashion_sets_load_balanced_when_fetched);
    return t_finish();
}
