/* d2fab check: is a mesh file one or more closed, consistently oriented
 * 2-manifold solids? */
#include <getopt.h>
#include <stdio.h>

#include "cli/cmds.h"
#include "mesh/mesh.h"

#define CMD "check"

static void check_help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab check [options] FILE...\n\n"
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
            "  -h, --help               this help\n\n"
            "%s"
            "A file that is open, non-manifold, inconsistently oriented or inside out\n"
            "exits with status 2.\n",
            cli_exit_help);
}

int cmd_check(int argc, char **argv)
{
    static const struct option opts[] = {{"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int quiet = 0, c, status = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'q': quiet = 1; break;
        case 'h': check_help(stdout); return 0;
        default: check_help(stderr); return 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "d2fab %s: no mesh file given (d2fab check --help)\n", CMD);
        return 1;
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
