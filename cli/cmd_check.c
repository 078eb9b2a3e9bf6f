/* d2fab check: is a mesh file one or more closed, consistently oriented
 * 2-manifold solids? */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmds.h"
#include "mesh/mesh.h"

#define CMD "check"

static void check_help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab check [options] FILE...\n"
            "       d2fab check PART.stl... --against EXPORT_DIR [--layer K]\n\n"
            "Loads each mesh file through Assimp (STL, 3MF, OBJ, PLY, glTF and the other formats\n"
            "it reads) with only identical vertices joined, no repair; applies the node\n"
            "transforms; joins vertices at exactly the same position; then reports facets,\n"
            "bounding box and volume (file units, mm for d2fab files), edges that are open\n"
            "(one facet), non-manifold (more than two facets) or inconsistent (two facets in\n"
            "the same direction), vertices whose facets form more than one fan, degenerate\n"
            "facets, and parts (pieces connected through edges). A file passes when all those\n"
            "counts are zero and the volume is positive.\n\n"
            "Options:\n"
            "  -q, --quiet              print one line per file\n"
            "      --against DIR        compare each layer part with the export folder DIR:\n"
            "                           the mesh's top over every neuron's centre against\n"
            "                           the exported height (max and RMS in mm and phase,\n"
            "                           the worst pixels); exit 2 when any differs by more\n"
            "                           than half a Z step\n"
            "      --layer K            the layer the part is     [from layerK in its name]\n"
            "  -h, --help               this help\n\n"
            "%s"
            "A file that is open, non-manifold, inconsistently oriented or inside out\n"
            "exits with status 2.\n",
            cli_exit_help);
}

/* The layer a part file is: --layer, else "layerK" in its name, else 1 when
 * the export has one layer; 0 when unknown. */
static int part_layer(const char *path, long opt, int layers)
{
    if (opt > 0) return (int)opt;
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *s = strstr(b, "layer");
    if (s && s[5] >= '1' && s[5] <= '9') return atoi(s + 5);
    return layers == 1 ? 1 : 0;
}

/* d2fab check PART --against DIR: the pillar tops against the export. */
static int check_against(const char *path, const export_folder *x, long layer_opt, int quiet)
{
    int layer = part_layer(path, layer_opt, x->layers);
    if (!layer) {
        fprintf(stderr, "d2fab %s: %s: which layer is it? Name it layerK.stl or pass --layer K "
                        "(the export has %d layers)\n", CMD, path, x->layers);
        return 1;
    }
    mesh_tops_report r;
    d2_err e = {0};
    int rc = mesh_compare_tops(path, x, layer, &r, &e);
    if (rc) return cli_error(CMD, rc, e.msg);
    int ok = r.over == 0;
    printf("%s against layer %d of %s: %s\n", path, layer, x->json_path,
           ok ? "every pillar top matches the export" : "PILLAR TOPS DIFFER FROM THE EXPORT");
    printf("  %d x %d pixels; max |mesh - export| %.4f mm (%.4f rad), RMS %.4f mm (%.4f rad); "
           "%ld over half a Z step (%.4f mm)\n",
           r.rows, r.cols, r.max_mm, r.max_rad, r.rms_mm, r.rms_rad, r.over, r.tol_mm);
    int show = quiet ? (ok ? 0 : 1) : r.nworst;
    for (int k = 0; k < show; k++) {
        if (fabs(r.worst[k].mesh_mm - r.worst[k].export_mm) < 1e-6) break;
        printf("  pixel (row %d, col %d): mesh %.4f mm, export %.4f mm, difference %+.4f mm\n",
               r.worst[k].row, r.worst[k].col, r.worst[k].mesh_mm, r.worst[k].export_mm,
               r.worst[k].mesh_mm - r.worst[k].export_mm);
    }
    return ok ? 0 : 2;
}

int cmd_check(int argc, char **argv)
{
    enum { O_AGAINST = 256, O_LAYER };
    static const struct option opts[] = {{"quiet", no_argument, 0, 'q'},
                                         {"against", required_argument, 0, O_AGAINST},
                                         {"layer", required_argument, 0, O_LAYER},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int quiet = 0, c, status = 0;
    const char *against = NULL;
    long layer = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'q': quiet = 1; break;
        case O_AGAINST: against = optarg; break;
        case O_LAYER:
            if (cli_int(CMD, "layer", optarg, 1, D2_MAX_LAYERS, &layer)) return 1;
            break;
        case 'h': check_help(stdout); return 0;
        default: check_help(stderr); return 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "d2fab %s: no mesh file given (d2fab check --help)\n", CMD);
        return 1;
    }
    if (against) {
        export_folder x;
        d2_err e = {0};
        int rc = export_folder_load(against, &x, &e);
        if (rc) return cli_error(CMD, rc, e.msg);
        for (int i = optind; i < argc; i++) {
            int st = check_against(argv[i], &x, layer, quiet);
            if (st > status) status = st;
        }
        export_folder_free(&x);
        return status;
    }
    for (int i = optind; i < argc; i++) {
        mesh_report r;
        d2_err e = {0};
        int rc = mesh_check_file(argv[i], &r, &e);
        if (rc) {
            int st = cli_error(CMD, rc, e.msg);
            if (st > status) status = st;
            continue;
        }
        int ok = r.closed && r.volume_mm3 > 0;
        if (!ok && status < 2) status = 2;
        if (quiet) {
            printf("%s: %s, %zu facets, %zu part%s, volume %.4f\n", argv[i],
                   ok ? "closed" : "NOT CLOSED", r.facets, r.parts, r.parts == 1 ? "" : "s",
                   r.volume_mm3);
            continue;
        }
        printf("%s\n", argv[i]);
        printf("  %-22s %zu\n", "facets", r.facets);
        printf("  %-22s %zu\n", "vertices", r.vertices);
        printf("  bounding box           x %.4f .. %.4f, y %.4f .. %.4f, z %.4f .. %.4f\n", r.lo[0],
               r.hi[0], r.lo[1], r.hi[1], r.lo[2], r.hi[2]);
        printf("  size                   %.4f x %.4f x %.4f\n", r.hi[0] - r.lo[0], r.hi[1] - r.lo[1],
               r.hi[2] - r.lo[2]);
        printf("  %-22s %.6f\n", "volume", r.volume_mm3);
        printf("  %-22s %.4f\n", "area", r.area_mm2);
        printf("  %-22s %zu\n", "edges", r.edges);
        printf("  %-22s %zu\n", "open edges", r.open_edges);
        printf("  %-22s %zu\n", "non-manifold edges", r.nonmanifold_edges);
        printf("  %-22s %zu\n", "inconsistent edges", r.inconsistent_edges);
        printf("  %-22s %zu\n", "non-manifold vertices", r.nonmanifold_vertices);
        printf("  %-22s %zu\n", "degenerate facets", r.degenerate_facets);
        printf("  %-22s %zu\n", "parts", r.parts);
        printf("  result                 %s\n",
               ok ? "closed, manifold, consistently oriented"
                  : r.closed ? "inside out (negative volume)"
                             : "NOT a closed manifold solid");
    }
    return status;
}
