/* Benchmark: layer plates of n x n pixels with 65 height levels (the Lin et
 * al. geometry: 0.4 mm pitch, 16 um steps on a 0.5 mm base), framed, with
 * posts, pins, holes and labels, at n = 200, 400 and 1000 (or the sizes given
 * as arguments). Each size runs in its own child process, so its peak memory
 * (getrusage ru_maxrss of the child) is its own. Per size: thread CPU seconds
 * to mesh (mesh_build_plate), check (mesh_check, what `d2fab mesh` runs on
 * every part), write a binary STL, and check that file as `d2fab check` does
 * (mesh_check_file); the cost per pixel and its ratio to the smallest size's
 * (1.00 everywhere = linear in the pixel count). At the first size also the
 * other file formats. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/benchlib.h"
#include "core/util.h"
#include "mesh/mesh.h"

enum { PH_MESH, PH_CHECK, PH_WRITE, PH_CHECK_FILE, NPH };
static const char *ph_name[NPH] = {"mesh", "check", "write stl", "check stl file"};

typedef struct result {
    int ok;
    size_t facets, bytes;
    double cpu[NPH], fmt_s[5];
    size_t fmt_bytes[5];
} result;

static int check_file(int n, const char *dir, result *res)
{
    char path[300];
    d2_err e = {0};
    snprintf(path, sizeof path, "%s/plate%d.stl", dir, n);
    mesh_report rf;
    double t0 = bench_thread_cpu();
    int rc = mesh_check_file(path, &rf, &e);
    res->cpu[PH_CHECK_FILE] = bench_thread_cpu() - t0;
    unlink(path);
    if (rc || !rf.closed || rf.parts != 1 || rf.facets != res->facets) {
        fprintf(stderr, "bench_mesh: %d x %d: the STL file does not check: %s\n", n, n, e.msg);
        return 1;
    }
    res->ok = 2;
    return 0;
}

/* Mesh, check and write a plate (formats 0; the STL file stays for
 * check_file), or write it in every format (formats 1). Fills its fields of
 * res. */
static int run_size(int n, int formats, const char *dir, result *res)
{
    d2_rng r;
    d2_rng_seed(&r, 2018);
    float *h = malloc((size_t)n * n * sizeof *h);
    if (!h) return 1;
    for (size_t i = 0; i < (size_t)n * n; i++) h[i] = (float)(0.5 + d2_rng_below(&r, 65) * 0.016);
    mesh_plate p;
    memset(&p, 0, sizeof p);
    p.rows = p.cols = n;
    p.pitch_mm = 0.4;
    p.top_mm = h;
    p.gap_mm = 30;
    p.holes = 1;
    p.label_top = "L1";
    p.label_bottom = "SRC";
    mesh_frame_default(&p.frame, NULL);
    d2_err e = {0};
    char path[300];
    mesh *m = NULL;
    mesh_report rep;
    if (formats) goto formats;
    double t0 = bench_thread_cpu();
    if (mesh_build_plate(&p, &m, NULL, &e)) goto fail;
    double t1 = bench_thread_cpu();
    if (mesh_check(m, &rep, &e)) goto fail;
    if (!rep.closed || rep.parts != 1) {
        snprintf(e.msg, sizeof e.msg, "the %d x %d plate is not one closed solid", n, n);
        goto fail;
    }
    double t2 = bench_thread_cpu();
    res->facets = mesh_facets(m);
    snprintf(path, sizeof path, "%s/plate%d.stl", dir, n);
    mesh_part part = {m, "layer1", {0, 0, 0}};
    if (mesh_write(path, MESH_STL, &part, 1, &res->bytes, &e)) goto fail;
    double t3 = bench_thread_cpu();
    mesh_free(m);
    m = NULL;
    res->cpu[PH_MESH] = t1 - t0;
    res->cpu[PH_CHECK] = t2 - t1;
    res->cpu[PH_WRITE] = t3 - t2;
    res->ok = 1;
    free(h);
    return 0;
formats:
    {
        if (mesh_build_plate(&p, &m, NULL, &e)) goto fail;
        mesh_part pt = {m, "layer1", {0, 0, 0}};
        for (int f = 0; f < 5; f++) {
            snprintf(path, sizeof path, "%s/plate.%s", dir, mesh_format_ext((mesh_format)f));
            double s0 = bench_thread_cpu();
            if (mesh_write(path, (mesh_format)f, &pt, 1, &res->fmt_bytes[f], &e)) goto fail;
            res->fmt_s[f] = bench_thread_cpu() - s0;
            unlink(path);
        }
        mesh_free(m);
    }
    free(h);
    res->ok = 3;
    return 0;
fail:
    fprintf(stderr, "bench_mesh: %d x %d: %s\n", n, n, e.msg);
    mesh_free(m);
    free(h);
    return 1;
}

int main(int argc, char **argv)
{
    int sizes[8] = {200, 400, 1000}, ns = 3;
    if (argc > 1) {
        ns = 0;
        for (int i = 1; i < argc && ns < 8; i++) sizes[ns++] = atoi(argv[i]);
    }
    char dir[] = "/tmp/d2fab-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 3;
    }
    printf("plates at 0.4 mm, 65 random levels, frame/posts/pins/holes/labels; thread CPU time, "
           "each size in its own process (peak = its ru_maxrss)\n");
    double base[NPH + 1] = {0};
    int rc = 0;
    for (int s = 0; s < ns && !rc; s++) {
        int n = sizes[s];
        result res;
        memset(&res, 0, sizeof res);
        double peak[2] = {0, 0};
        /* child 0: mesh, check, write (the file stays); child 1: check the
         * file as `d2fab check` does; each its own peak */
        for (int stage = 0; stage < (s == 0 ? 3 : 2) && !rc; stage++) {
            int fd[2];
            if (pipe(fd)) return 3;
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                close(fd[0]);
                if (stage == 0) run_size(n, 0, dir, &res);
                else if (stage == 1) check_file(n, dir, &res);
                else run_size(n, 1, dir, &res);
                ssize_t w = write(fd[1], &res, sizeof res);
                _exit(w == (ssize_t)sizeof res && res.ok ? 0 : 1);
            }
            close(fd[1]);
            ssize_t got = read(fd[0], &res, sizeof res);
            close(fd[0]);
            int st = 0;
            struct rusage ru;
            if (pid < 0 || wait4(pid, &st, 0, &ru) < 0 || got != (ssize_t)sizeof res ||
                res.ok != stage + 1)
                rc = 1;
            if (stage < 2) peak[stage] = ru.ru_maxrss / 1024.0;
        }
        if (rc) break;
        double px = (double)n * n, tot = 0;
        for (int k = 0; k < NPH; k++) tot += res.cpu[k];
        printf("%d x %d: %zu facets (%.2f per pixel), stl %zu bytes; peak %.0f MiB meshing, "
               "checking and writing (%.0f bytes per pixel), %.0f MiB checking the file\n",
               n, n, res.facets, res.facets / px, res.bytes, peak[0], peak[0] * 1048576.0 / px,
               peak[1]);
        if (s == 0) {
            for (int k = 0; k < NPH; k++) base[k] = res.cpu[k] / px;
            base[NPH] = tot / px;
        }
        for (int k = 0; k < NPH; k++)
            printf("  %-15s %7.3f s CPU  %6.0f ns per pixel  (x %.2f per pixel vs %d)%s\n",
                   ph_name[k], res.cpu[k], 1e9 * res.cpu[k] / px, res.cpu[k] / px / base[k],
                   sizes[0],
                   k == PH_CHECK || k == PH_CHECK_FILE
                       ? (res.cpu[k] <= res.cpu[PH_MESH] ? "  <= mesh" : "  SLOWER THAN MESH")
                       : "");
        printf("  mesh+check+write %.3f s CPU  %6.0f ns per pixel  (x %.2f per pixel vs %d)\n",
               res.cpu[PH_MESH] + res.cpu[PH_CHECK] + res.cpu[PH_WRITE],
               1e9 * (res.cpu[PH_MESH] + res.cpu[PH_CHECK] + res.cpu[PH_WRITE]) / px,
               (res.cpu[PH_MESH] + res.cpu[PH_CHECK] + res.cpu[PH_WRITE]) / px /
                   (base[PH_MESH] + base[PH_CHECK] + base[PH_WRITE]),
               sizes[0]);
        if (s == 0)
            for (int f = 0; f < 5; f++)
                printf("  write %-4s %.3f s CPU  %10zu bytes  (%.2f x mesh)\n",
                       mesh_format_ext((mesh_format)f), res.fmt_s[f], res.fmt_bytes[f],
                       res.fmt_s[f] / res.cpu[PH_MESH]);
        if (res.bytes != 84 + 50 * res.facets) {
            printf("  stl bytes != 84 + 50 * facets\n");
            rc = 1;
        }
    }
    rmdir(dir);
    return rc;
}
