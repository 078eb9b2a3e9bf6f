/* d2fab mesh: height maps to watertight plates with frame, posts and pins. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cmds.h"
#include "core/fileio.h"
#include "mesh/mesh.h"

#define CMD "mesh"

static void mesh_help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab mesh --export DIR --out DIR [options]\n\n"
            "Builds one closed, manifold solid per part of the printed stack from an export\n"
            "folder (export.json + layerK_height.npy, heights in mm including the base):\n"
            "  OUT/input.EXT     plate with the input aperture cut through (the digit mask\n"
            "                    of `d2fab mask` replaces it)\n"
            "  OUT/layerK.EXT    one flat-topped square pillar per neuron on the base\n"
            "  OUT/detector.EXT  plate with the detector windows cut through, labelled 0-9\n"
            "  OUT/assembly.EXT  every part at its place in the stack\n"
            "  OUT/assembly.json order, orientation, z of every optical surface, gaps, frame\n"
            "Convention: light travels toward +z; each part's flat datum face (engraved SRC)\n"
            "faces the source and is its optical surface; the gap is datum to datum. Posts on\n"
            "the frame corners stand gap mm tall and carry pins that enter holes in the next\n"
            "part's datum face; the top-left pin is offset (the key), so a part cannot be\n"
            "mounted rotated or mirrored. Nothing is written unless every part builds.\n\n"
            "Options (lengths in mm; defaults from the printer profile in export.json):\n"
            "  -e, --export DIR         export folder                         [required]\n"
            "  -o, --out DIR            output folder, created                [required]\n"
            "  -f, --format FMT         stl (binary), 3mf, obj, ply (binary) or glb;\n"
            "                           glb coordinates are mm too                  [stl]\n"
            "      --frame-mm W         frame band width around the active area\n"
            "                           [10; wider for coarse printers (MK4: 14.5)]\n"
            "      --frame-thick-mm T   frame thickness                [max(3, base_mm)]\n"
            "      --post-mm S          side of the square posts                     [5]\n"
            "      --pin-mm S           side of the square pins on the posts         [2]\n"
            "      --pin-len-mm L       pin length above the post shoulder         [1.5]\n"
            "      --key-mm K           offset of the top-left (key) pin toward +x   [1]\n"
            "      --clearance-mm C     hole clearance per side  [printer pin_clearance_mm]\n"
            "      --engrave-mm D       depth of the engraved labels               [0.4]\n"
            "      --font-px-mm P       label stroke (font pixel); rounded up to whole\n"
            "                           pitches when that at most doubles it\n"
            "                           [max(0.5, 2 x printer min_feature_mm)]\n"
            "      --min-feature-mm F   smallest wall or stroke checked [printer min_feature_mm]\n"
            "      --no-input           no input aperture plate\n"
            "      --print-time-slicer  ask PrusaSlicer for each layer part's print time and\n"
            "                           resin or filament (resin and FDM printers; stl, 3mf\n"
            "                           or obj; 5-25 s CPU a part; $D2FAB_SLICER: other binary)\n"
            "  -q, --quiet              no per-part summary\n"
            "  -h, --help               this help\n\n%s",
            cli_exit_help);
}

/* PrusaSlicer's print time of every layer part, one line each. */
static int print_slicer_times(const printer_profile *p, const char *out,
                              const mesh_stack_report *rep, int quiet, d2_err *e)
{
    for (int i = 0; i < rep->nparts; i++) {
        const mesh_stack_part *mp = rep->part + i;
        char path[4096];
        slicer_estimate r;
        int rc;
        if (strncmp(mp->name, "layer", 5)) continue;
        if ((rc = d2_path_join(path, sizeof path, out, mp->file, e)) ||
            (rc = slicer_print_time(p, path, out, &r, e)))
            return rc;
        if (!quiet)
            printf("%-11s %-14s PrusaSlicer: %.2f h, %.3g %s (%s)\n", mp->name, mp->file,
                   r.time_h, r.material, r.material_unit, r.how);
    }
    return 0;
}

int cmd_mesh(int argc, char **argv)
{
    enum { O_FRAME = 1000, O_THICK, O_POST, O_PIN, O_PINLEN, O_KEY, O_CLEAR, O_ENGRAVE, O_FONT,
           O_MINF, O_NOINPUT, O_SLICER };
    static const struct option opts[] = {
        {"export", required_argument, 0, 'e'},        {"out", required_argument, 0, 'o'},
        {"format", required_argument, 0, 'f'},        {"frame-mm", required_argument, 0, O_FRAME},
        {"frame-thick-mm", required_argument, 0, O_THICK},
        {"post-mm", required_argument, 0, O_POST},    {"pin-mm", required_argument, 0, O_PIN},
        {"pin-len-mm", required_argument, 0, O_PINLEN},
        {"key-mm", required_argument, 0, O_KEY},      {"clearance-mm", required_argument, 0, O_CLEAR},
        {"engrave-mm", required_argument, 0, O_ENGRAVE},
        {"font-px-mm", required_argument, 0, O_FONT},
        {"min-feature-mm", required_argument, 0, O_MINF},
        {"no-input", no_argument, 0, O_NOINPUT},     {"quiet", no_argument, 0, 'q'},
        {"print-time-slicer", no_argument, 0, O_SLICER},
        {"help", no_argument, 0, 'h'},               {0, 0, 0, 0}};
    mesh_stack_opts o;
    mesh_stack_opts_default(&o);
    const char *exp_dir = NULL, *out = NULL;
    int quiet = 0, slicer = 0, c;
    d2_err e = {0};
    optind = 1;
    int li = 0;
    while ((c = getopt_long(argc, argv, "e:o:f:qh", opts, &li)) != -1) {
        double *dst = NULL, lo = 0.01, hi = 1000;
        switch (c) {
        case 'e': exp_dir = optarg; break;
        case 'o': out = optarg; break;
        case 'f':
            if (mesh_format_parse(optarg, &o.format, &e)) return cli_error(CMD, e.code, e.msg);
            break;
        case O_FRAME: dst = &o.frame.width_mm; lo = 1; break;
        case O_THICK: dst = &o.frame.thick_mm; lo = 0.1; break;
        case O_POST: dst = &o.frame.post_mm; break;
        case O_PIN: dst = &o.frame.pin_mm; break;
        case O_PINLEN: dst = &o.frame.pin_len_mm; lo = 0.05; break;
        case O_KEY: dst = &o.frame.key_mm; break;
        case O_CLEAR: dst = &o.frame.clearance_mm; lo = 0.005; hi = 5; break;
        case O_ENGRAVE: dst = &o.frame.engrave_mm; break;
        case O_FONT: dst = &o.frame.font_px_mm; hi = 50; break;
        case O_MINF: dst = &o.frame.min_feature_mm; lo = 0.001; hi = 10; break;
        case O_NOINPUT: o.no_input = 1; break;
        case O_SLICER: slicer = 1; break;
        case 'q': quiet = 1; break;
        case 'h': mesh_help(stdout); return 0;
        default: mesh_help(stderr); return 1;
        }
        if (dst && cli_num(CMD, opts[li].name, optarg, lo, hi, dst))
            return 1;
    }
    if (optind < argc) {
        fprintf(stderr, "d2fab %s: unexpected argument '%s' (d2fab mesh --help)\n", CMD,
                argv[optind]);
        return 1;
    }
    if (!exp_dir || !out) {
        fprintf(stderr, "d2fab %s: --export DIR and --out DIR are required (d2fab mesh --help)\n",
                CMD);
        return 1;
    }
    /* The slicer is checked before any part is built. */
    export_folder x;
    int rc, have_x = 0;
    if (slicer) {
        if (o.format != MESH_STL && o.format != MESH_3MF && o.format != MESH_OBJ)
            return cli_error(CMD, D2_EUSAGE, "--print-time-slicer needs parts PrusaSlicer reads: "
                             "--format stl, 3mf or obj");
        if ((rc = export_folder_load(exp_dir, &x, &e))) return cli_error(CMD, rc, e.msg);
        have_x = 1;
        rc = !x.have_printer ? d2_fail(&e, D2_EINPUT, "%s has no \"printer\" section: "
                                       "--print-time-slicer needs the printer", x.json_path)
                             : slicer_check(&x.printer, &e);
        if (rc) {
            export_folder_free(&x);
            return cli_error(CMD, rc, e.msg);
        }
    }
    mesh_stack_report rep;
    rc = mesh_stack(exp_dir, out, &o, &rep, &e);
    if (rc) {
        if (have_x) export_folder_free(&x);
        return cli_error(CMD, rc, e.msg);
    }
    if (!quiet) {
        printf("part        file            facets       bytes   volume_mm3    z_mm  size_mm\n");
        for (int i = 0; i < rep.nparts; i++) {
            const mesh_stack_part *p = rep.part + i;
            printf("%-11s %-14s %8zu %11zu %12.3f %7.2f  %.1f x %.1f x %.2f\n", p->name, p->file,
                   p->facets, p->bytes, p->volume_mm3, p->z_mm, p->size_mm[0], p->size_mm[1],
                   p->size_mm[2]);
        }
        printf("%-11s %-14s %8zu %11zu\n", "assembly", rep.assembly_file, rep.assembly_facets,
               rep.assembly_bytes);
        printf("built and checked in %.2f s, written in %.2f s to %s (assembly.json: order, z)\n",
               rep.seconds_mesh, rep.seconds_write, out);
        for (int i = 0; i < rep.nwarn; i++) printf("warning: %s\n", rep.warn[i]);
    }
    if (slicer) {
        rc = print_slicer_times(&x.printer, out, &rep, quiet, &e);
        export_folder_free(&x);
        if (rc) return cli_error(CMD, rc, e.msg);
    }
    return 0;
}
