/* PRINTING.txt, the print shop's page of a run package, and the facts of
 * the print it and the report share: where each plane sits, the printer's
 * technology, orientation, print time and mass. */
#include "run/run_int.h"

#include <math.h>
#include <string.h>

#include "core/fileio.h"

/* Total gap from the input plane to plane k (0 = input, L + 1 = detector). */
double run_plane_z(const d2_geom *g, int k)
{
    double z = 0;
    for (int i = 0; i < k; i++) z += g->gap_mm[i];
    return z;
}

const char *run_technology_of(const run_state *s)
{
    return s->have_export ? s->ex.printer.technology : "other";
}

int run_is_resin(const char *tech)
{
    return !strcmp(tech, "sla") || !strcmp(tech, "msla") || !strcmp(tech, "dlp");
}

/* How a plate goes on the build plate, by printer technology. */
const char *run_orientation_text(const run_state *s)
{
    const char *t = run_technology_of(s);
    if (!strcmp(t, "polyjet"))
        return "flat on the tray, flat datum face (engraved SRC) down, relief and posts up; "
               "glossy finish";
    if (run_is_resin(t))
        return "flat, datum face (engraved SRC) on the build platform, no tilt, no supports";
    if (!strcmp(t, "fdm"))
        return "flat, datum face (engraved SRC) on the bed, 100 % infill, no supports";
    return "flat, datum face (engraved SRC) down, relief and posts up";
}

/* The layer model (printer_print_time_h) over the whole part's height. */
double run_print_time_h(const run_state *s, double height_mm)
{
    if (!s->have_export) return -1;
    return printer_print_time_h(&s->ex.printer, height_mm, NULL, NULL, 0);
}

/* How the time was found, for the report: the rate and its source. */
const char *run_print_time_source(const run_state *s)
{
    if (s->have_export && s->ex.printer.layer_time_s > 0)
        return "the printer profile's layer_time_s";
    return "Z step / the profile's vertical rate z_speed_mm_per_h (the vendor's maximum: "
           "optimistic, it leaves out peel and settling)";
}

const char *run_slicer_hint(const run_state *s)
{
    return slicer_kind(&s->ex.printer) == SLICER_NONE
               ? "PrusaSlicer cannot slice for this printer: the print shop's software gives "
                 "the time."
               : "\"print_time\": \"slicer\" in the run config asks PrusaSlicer for each "
                 "layer part's time.";
}

int run_slice_parts(run_state *s, double *worst_h, d2_err *e)
{
    char path[RUN_PATH_MAX + 128];
    int rc;
    *worst_h = 0;
    for (int i = 0; i < s->nparts; i++) {
        run_part *p = &s->part[i];
        if (strcmp(p->kind, "layer")) continue;
        if (s->o->progress) {
            fprintf(s->o->progress, "      asking %s for the print time of %s\n",
                    slicer_program(), p->file);
            fflush(s->o->progress);
        }
        if ((rc = d2_path_join(path, sizeof path, s->o->out_dir, p->file, e)) ||
            (rc = slicer_print_time(&s->ex.printer, path, s->o->out_dir, &p->slice, e)))
            return rc;
        p->sliced = 1;
        *worst_h = fmax(*worst_h, p->slice.time_h);
    }
    return 0;
}

double run_mass_g(const run_state *s, double volume_mm3)
{
    if (!s->have_export || !(s->ex.material.density_g_cm3 > 0)) return -1;
    return volume_mm3 * 1e-3 * s->ex.material.density_g_cm3;
}

/* The parts with size, volume, mass and print time. */
static void printing_parts(FILE *f, const run_state *s)
{
    fprintf(f, "PARTS\n");
    fprintf(f, "  %-26s %-30s %-21s %10s %8s %7s\n", "file", "part", "size x, y, z (mm)",
            "volume", "mass", "time");
    double tmax = 0;
    for (int i = 0; i < s->nparts; i++) {
        const run_part *p = &s->part[i];
        char size[48], t[16], m[16];
        double th = run_print_time_h(s, p->size_mm[2]), mg = run_mass_g(s, p->volume_mm3);
        snprintf(size, sizeof size, "%.1f x %.1f x %.2f", p->size_mm[0], p->size_mm[1],
                 p->size_mm[2]);
        if (th >= 0) snprintf(t, sizeof t, "%.1f h", th), tmax = fmax(tmax, th);
        else snprintf(t, sizeof t, "-");
        if (mg >= 0) snprintf(m, sizeof m, "%.1f g", mg);
        else snprintf(m, sizeof m, "-");
        fprintf(f, "  %-26s %-30.30s %-21s %6.0f mm3 %8s %7s\n", p->file, p->what, size,
                p->volume_mm3, m, t);
        if (p->sliced)
            fprintf(f, "  %-26s PrusaSlicer: %.2f h, %.3g %s\n", "", p->slice.time_h,
                    p->slice.material, p->slice.material_unit);
    }
    if (run_print_time_h(s, 1) >= 0)
        fprintf(f, "  Time: layer model, every layer of the whole part (part height / Z step)\n"
                   "  times the time per layer from %s;\n  side by side in one job about "
                   "%.1f h (the tallest part).\n",
                run_print_time_source(s), tmax);
    else
        fprintf(f, "  Print time not estimated: the printer profile gives neither a time per "
                   "layer\n  (layer_time_s) nor a vertical build rate (z_speed_mm_per_h).\n");
    if (s->have_export && !s->c->print_time_slicer)
        fprintf(f, "  %s\n", run_slicer_hint(s));
    for (int i = 0; i < s->nparts; i++)
        if (s->part[i].sliced) {
            fprintf(f, "  PrusaSlicer lines: each layer part sliced alone by %s.\n",
                    s->part[i].slice.how);
            break;
        }
    fprintf(f, "\n");
}

/* Orientation, supports and post-processing, by printer technology. */
static void printing_howto(FILE *f, const run_state *s)
{
    const export_report *x = &s->ex;
    const char *tech = run_technology_of(s);
    fprintf(f, "ORIENTATION\n  %s.\n", run_orientation_text(s));
    fprintf(f, "  Each plate has a flat datum face, engraved \"SRC\" (mirrored): it faces the\n"
               "  source in the stack and is the reference for every gap. The relief (square\n"
               "  pillars), the corner posts with their pins and the part label are on the\n"
               "  other face.\n");
    if (!strcmp(tech, "polyjet"))
        fprintf(f, "  Print flat in the XY plane: the heights are whole Z steps only when the\n"
                   "  plate lies flat. Use glossy mode, so support material touches only the\n"
                   "  datum face and the pin holes.\n\n");
    else if (run_is_resin(tech))
        fprintf(f, "  Do not tilt the plates (usual for resin parts): a tilt turns the whole-\n"
                   "  step heights into staircases. Print directly on the platform, no\n"
                   "  supports; the first layers' spread (elephant foot) stays on the frame\n"
                   "  edge.\n\n");
    else if (!strcmp(tech, "fdm"))
        fprintf(f, "  100 %% infill (voids change the refractive index), no supports, no\n"
                   "  ironing. The first layer may be printed thicker only if the slicer\n"
                   "  keeps the total heights.\n\n");
    else
        fprintf(f, "  Print flat so each height is a whole number of layers.\n\n");

    fprintf(f, "SUPPORTS\n");
    if (!strcmp(tech, "polyjet"))
        fprintf(f, "  Support material fills the pin holes and the engraving under the datum\n"
                   "  face; wash it out completely (water jet) - a support residue in a pin\n"
                   "  hole tilts the next plate.\n\n");
    else
        fprintf(f, "  None: the datum face lies on the build plate; the pin holes and the\n"
                   "  engraving open downward and bridge over less than 3 mm.\n\n");

    fprintf(f, "POST-PROCESSING\n");
    if (!strcmp(tech, "polyjet"))
        fprintf(f, "  Remove the support (water jet, no sodium hydroxide bath longer than the\n"
                   "  material sheet allows). Do not sand, polish or paint the active area.\n");
    else if (run_is_resin(tech))
        fprintf(f, "  Wash in IPA and post-cure as the resin's data sheet says (curing changes\n"
                   "  the refractive index: keep it the same for every plate). Do not sand,\n"
                   "  polish or coat the active area.\n");
    else
        fprintf(f, "  Remove brim and stringing. Do not sand or coat the active area.\n");
    fprintf(f, "  Check each plate is flat (lay it on a flat surface) and the pins enter the\n"
               "  next plate's holes with the designed play (+- %.3g mm).\n\n",
            x->printer.pin_clearance_mm);
}

/* The assembly order, the gaps and the simulated accuracy as printed. */
static void printing_assembly(FILE *f, const run_state *s)
{
    const d2_geom *g = &s->model.g;
    fprintf(f, "ASSEMBLY ORDER (source to detector, light travels toward the detector)\n");
    for (int k = 0; k <= g->layers + 1; k++) {
        const char *what = k == 0 ? (s->nmasks
                                         ? "an input mask (one digit at a time)"
                                         : "the input aperture plate")
                           : k == g->layers + 1 ? "the detector plane" : NULL;
        if (what)
            fprintf(f, "  %d. %-40s datum at z = %7.2f mm\n", k + 1, what, run_plane_z(g, k));
        else
            fprintf(f, "  %d. layer %-34d datum at z = %7.2f mm\n", k + 1, k, run_plane_z(g, k));
    }
    fprintf(f, "  Stack each part on the previous one's posts, datum face toward the source:\n"
               "  the pins go into its holes; one pin is offset, so a part fits only the\n"
               "  right way round. Gaps (datum to datum):");
    for (int k = 0; k <= g->layers; k++) fprintf(f, " %.4g", g->gap_mm[k]);
    fprintf(f, " mm.\n");
    if (s->assembly_file[0])
        fprintf(f, "  %s shows the stack in place%s; assembly.json lists the order and z.\n",
                s->assembly_file, s->nmasks ? " (without a mask)" : "");
    fprintf(f, "\nThe simulated accuracy of these parts and the tolerance study are in "
               "report.html.\n");
    if (s->have_ev_export)
        fprintf(f, "Simulated accuracy as printed: %.2f %% on %d test images, %s.\n",
                100 * s->ev_export.accuracy, s->ev_export.count,
                s->printed.g.optics == D2_OPTICS_THICK
                    ? "thick-plate model of the assembly as built"
                    : "thin phase screens (gaps datum to datum)");
    if (s->have_ev_export_thin)
        fprintf(f, "The thin phase-screen model gives %.2f %% on %d images; it does not "
                "model the plates' thickness.\n", 100 * s->ev_export_thin.accuracy,
                s->ev_export_thin.count);
}

int run_write_printing(const run_state *s, const char *path, d2_err *e)
{
    d2_out *o = d2_out_open(path, e);
    if (!o) return e->code;
    FILE *f = d2_out_fp(o);
    const export_report *x = &s->ex;
    fprintf(f, "PRINTING: what to print and how\n"
               "===============================\n\n");
    fprintf(f, "Printer       %s (profile %s)\n", x->printer.display_name, x->printer.name);
    fprintf(f, "Material      %s (profile %s) for every part\n", x->material.display_name,
            x->material.name);
    fprintf(f, "Layer height  %.4g mm (the printer's Z step)\n", x->printer.z_step_mm);
    fprintf(f, "Units         millimetres\n");
    fprintf(f, "Count         one of each part below\n\n");
    fprintf(f, "The optics were computed for n = %.5g, kappa = %.4g at %.4g THz: another\n"
               "material or a material mix changes the phase and the parts will not work.\n"
               "Every relief height is a whole number of %.4g mm layers: print at exactly\n"
               "this layer height; do not scale, hollow, smooth, repair or decimate the files.\n\n",
            x->p.index, x->p.kappa, x->frequency_thz, x->printer.z_step_mm);

    printing_parts(f, s);
    printing_howto(f, s);
    printing_assembly(f, s);
    return d2_out_commit(o, e);
}
