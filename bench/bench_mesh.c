/* Benchmark: one 200 x 200 layer plate with 65 height levels (the Lin et al.
 * geometry: 0.4 mm pitch, 16 um steps on a 0.5 mm base), framed, with posts,
 * pins, holes and labels. Prints facets, bytes and seconds to mesh, check and
 * write per plate, and ratios against a box-per-pillar mesh (12 facets per
 * pillar) and between the stages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "mesh/mesh.h"

int main(void)
{
    const int n = 200, reps = 3;
    d2_rng r;
    d2_rng_seed(&r, 2018);
    float *h = malloc((size_t)n * n * sizeof *h);
    for (int i = 0; i < n * n; i++) h[i] = (float)(0.5 + d2_rng_below(&r, 65) * 0.016);
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
    char dir[] = "/tmp/d2fab-bench-XXXXXX", path[64];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 3;
    }
    d2_err e = {0};
    double best_mesh = 1e9, best_check = 1e9, best_write[5] = {1e9, 1e9, 1e9, 1e9, 1e9};
    size_t facets = 0, bytes[5] = {0};
    double vol = 0;
    int rc = 0;
    for (int k = 0; k < reps && !rc; k++) {
        mesh *m = NULL;
        double t0 = d2_now();
        if (mesh_build_plate(&p, &m, NULL, &e)) {
            fprintf(stderr, "bench_mesh: %s\n", e.msg);
            rc = 1;
            break;
        }
        double t1 = d2_now();
        mesh_report rep;
        if (mesh_check(m, &rep, &e) || !rep.closed) {
            fprintf(stderr, "bench_mesh: the plate is not closed\n");
            rc = 1;
        }
        double t2 = d2_now();
        if (t1 - t0 < best_mesh) best_mesh = t1 - t0;
        if (t2 - t1 < best_check) best_check = t2 - t1;
        facets = mesh_facets(m);
        vol = mesh_volume_mm3(m);
        for (int f = 0; f < 5 && !rc; f++) {
            snprintf(path, sizeof path, "%s/plate.%s", dir, mesh_format_ext((mesh_format)f));
            mesh_part part = {m, "layer1", {0, 0, 0}};
            double t3 = d2_now();
            if (mesh_write(path, (mesh_format)f, &part, 1, &bytes[f], &e)) {
                fprintf(stderr, "bench_mesh: %s\n", e.msg);
                rc = 1;
            }
            double dt = d2_now() - t3;
            if (dt < best_write[f]) best_write[f] = dt;
            unlink(path);
        }
        mesh_free(m);
    }
    rmdir(dir);
    free(h);
    if (rc) return rc;
    printf("plate %d x %d at 0.4 mm, 65 levels, frame/posts/pins/holes/labels (best of %d)\n", n,
           n, reps);
    printf("  facets %zu (%.2f per pillar; box per pillar: 12, ratio %.2f), volume %.1f mm3\n",
           facets, (double)facets / (n * n), (double)facets / (12.0 * n * n), vol);
    printf("  mesh   %.3f s  (%.0f ns per facet)\n", best_mesh, 1e9 * best_mesh / facets);
    printf("  check  %.3f s  (%.2f x mesh)\n", best_check, best_check / best_mesh);
    for (int f = 0; f < 5; f++)
        printf("  write %-4s %.3f s  %10zu bytes  (%.1f MB/s, %.2f x mesh, mesh+write %.3f s)\n",
               mesh_format_ext((mesh_format)f), best_write[f], bytes[f],
               bytes[f] / best_write[f] / 1e6, best_write[f] / best_mesh, best_mesh + best_write[f]);
    printf("  stl bytes = 84 + 50 * facets: %s\n", bytes[0] == 84 + 50 * facets ? "yes" : "NO");
    return bytes[0] == 84 + 50 * facets ? 0 : 1;
}
