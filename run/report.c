/* The package's reports: report.json (numbers), report.html (one page a
 * person reads offline: pictures embedded as data URIs, parts linked by
 * relative paths) and PRINTING.txt (for the print shop). */
#include "run/run_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/util.h"

/* ------------------------------------------------------------------------
 * Shared facts
 * ---------------------------------------------------------------------- */

char *run_base64(const unsigned char *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
    if (!out) return NULL;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    return out;
}

static const char *status_name(run_status st)
{
    switch (st) {
    case RUN_DONE: return "done";
    case RUN_SKIPPED: return "skipped";
    case RUN_FAILED: return "failed";
    default: return "not run";
    }
}

/* ------------------------------------------------------------------------
 * report.json
 * ---------------------------------------------------------------------- */

static cJSON *num_or_null(double v, int ok)
{
    return ok ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

/* One part of the package in report.json: file, material, volume, mass, print
 * time, size, facets and the pillar-top check. */
static cJSON *part_json(const run_state *s, const run_part *p)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "name", p->name);
    cJSON_AddStringToObject(o, "kind", p->kind);
    cJSON_AddStringToObject(o, "file", p->file);
    cJSON_AddStringToObject(o, "material", s->ex.material.name);
    cJSON_AddNumberToObject(o, "layer_height_mm", s->ex.printer.z_step_mm);
    cJSON_AddStringToObject(o, "orientation", run_orientation_text(s));
    cJSON_AddNumberToObject(o, "volume_mm3", p->volume_mm3);
    double m = run_mass_g(s, p->volume_mm3), t = run_print_time_h(s, p->size_mm[2]);
    cJSON_AddItemToObject(o, "mass_g", num_or_null(m, m >= 0));
    cJSON_AddItemToObject(o, "print_time_h", num_or_null(t, t >= 0));
    if (t >= 0) {
        long nl = 0;
        printer_print_time_h(&s->ex.printer, p->size_mm[2], &nl, NULL, 0);
        cJSON_AddNumberToObject(o, "print_layers", (double)nl);
        cJSON_AddStringToObject(o, "print_time_method", "layer model");
    }
    if (p->sliced) {
        /* beside the layer model: what PrusaSlicer says, and how it was asked */
        const slicer_estimate *r = &p->slice;
        cJSON *sl = cJSON_AddObjectToObject(o, "print_time_slicer");
        cJSON_AddNumberToObject(sl, "time_h", r->time_h);
        cJSON_AddNumberToObject(sl, "material", r->material);
        cJSON_AddStringToObject(sl, "material_unit", r->material_unit);
        cJSON_AddNumberToObject(sl, "layers", (double)r->layers);
        cJSON_AddStringToObject(sl, "slicer", r->slicer);
        cJSON_AddStringToObject(sl, "method", r->how);
    }
    cJSON_AddItemToObject(o, "size_mm", cJSON_CreateDoubleArray(p->size_mm, 3));
    cJSON_AddNumberToObject(o, "z_mm", p->z_mm);
    cJSON_AddNumberToObject(o, "facets", (double)p->facets);
    cJSON_AddNumberToObject(o, "bytes", (double)p->bytes);
    if (p->tops_checked) {
        /* d2fab check --against: the mesh's pillar tops against the export */
        const mesh_tops_report *tc = &p->tops;
        cJSON *c = cJSON_AddObjectToObject(o, "pillar_tops_check");
        cJSON_AddNumberToObject(c, "layer", tc->layer);
        cJSON_AddNumberToObject(c, "pixels", (double)tc->rows * tc->cols);
        cJSON_AddNumberToObject(c, "max_mm", tc->max_mm);
        cJSON_AddNumberToObject(c, "rms_mm", tc->rms_mm);
        cJSON_AddItemToObject(c, "max_rad", num_or_null(tc->max_rad, isfinite(tc->max_rad)));
        cJSON_AddItemToObject(c, "rms_rad", num_or_null(tc->rms_rad, isfinite(tc->rms_rad)));
        cJSON_AddNumberToObject(c, "tolerance_mm", tc->tol_mm);
        cJSON_AddNumberToObject(c, "pixels_over", (double)tc->over);
    }
    return o;
}

static cJSON *report_json(const run_state *s)
{
    const d2_geom *g = &s->model.g;
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddStringToObject(root, "format", "d2fab-run");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "software", "d2fab " D2FAB_VERSION);
    cJSON_AddStringToObject(root, "config", s->c->path);
    cJSON_AddNumberToObject(root, "seconds", s->res->seconds);

    cJSON *st = cJSON_AddArrayToObject(root, "stages");
    for (int k = 0; k < RUN_STAGES; k++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(st, o);
        cJSON_AddStringToObject(o, "name", run_stage_names[k]);
        cJSON_AddStringToObject(o, "status", status_name(s->res->status[k]));
        cJSON_AddStringToObject(o, "note", s->res->note[k]);
        if (k < RUN_STAGES - 1) cJSON_AddNumberToObject(o, "seconds", s->res->stage_seconds[k]);
    }

    cJSON *mo = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(mo, "kind", s->c->model_dir[0] ? "model" : "phase");
    cJSON_AddStringToObject(mo, "path", s->c->model_dir[0] ? s->c->model_dir : s->c->phase_files[0]);
    cJSON_AddNumberToObject(mo, "neurons", g->n);
    cJSON_AddNumberToObject(mo, "layers", g->layers);
    cJSON_AddNumberToObject(mo, "pitch_mm", g->pitch_mm);
    cJSON_AddNumberToObject(mo, "design_frequency_thz", opt_frequency_thz(g->wavelength_mm));
    cJSON_AddItemToObject(mo, "gaps_mm", cJSON_CreateDoubleArray(g->gap_mm, g->layers + 1));
    cJSON_AddStringToObject(mo, "dataset", s->model.t.dataset);

    if (s->have_export) {
        const export_report *x = &s->ex;
        cJSON *pr = cJSON_AddObjectToObject(root, "printer");
        cJSON_AddStringToObject(pr, "name", x->printer.name);
        cJSON_AddStringToObject(pr, "display_name", x->printer.display_name);
        cJSON_AddStringToObject(pr, "technology", x->printer.technology);
        cJSON_AddNumberToObject(pr, "xy_resolution_mm", x->printer.xy_resolution_mm);
        cJSON_AddNumberToObject(pr, "z_step_mm", x->printer.z_step_mm);
        cJSON *ma = cJSON_AddObjectToObject(root, "material");
        cJSON_AddStringToObject(ma, "name", x->material.name);
        cJSON_AddStringToObject(ma, "display_name", x->material.display_name);
        cJSON_AddNumberToObject(ma, "index", x->p.index);
        cJSON_AddNumberToObject(ma, "kappa", x->p.kappa);
        cJSON_AddItemToObject(ma, "density_g_cm3",
                              num_or_null(x->material.density_g_cm3, x->material.density_g_cm3 > 0));
        cJSON_AddNumberToObject(root, "frequency_thz", x->frequency_thz);
        cJSON_AddNumberToObject(root, "wavelength_mm", x->p.wavelength_mm);
        cJSON *sk = cJSON_AddObjectToObject(root, "stack");
        cJSON_AddNumberToObject(sk, "power_transmission", x->power_transmission);
        cJSON_AddNumberToObject(sk, "relief_volume_mm3", x->volume_mm3);
        cJSON_AddNumberToObject(sk, "base_mm", x->p.base_mm);
        cJSON_AddNumberToObject(sk, "period_mm", x->period_mm);
        double z[D2_MAX_LAYERS + 2];
        for (int k = 0; k <= g->layers + 1; k++) z[k] = run_plane_z(g, k);
        cJSON_AddItemToObject(sk, "plane_z_mm", cJSON_CreateDoubleArray(z, g->layers + 2));
    }

    cJSON *acc = cJSON_AddObjectToObject(root, "accuracy");
    cJSON_AddItemToObject(acc, "design", s->have_ev_model ? eval_to_json(&s->ev_model, geom_classes(g))
                                                          : cJSON_CreateNull());
    cJSON_AddItemToObject(acc, "as_printed", s->have_ev_export
                                                 ? eval_to_json(&s->ev_export, geom_classes(g))
                                                 : cJSON_CreateNull());
    if (s->have_ev_export) {
        /* which optical model produced the as-printed number */
        cJSON *oj = optics_to_json(&s->printed.g);
        cJSON_AddStringToObject(oj, "spacing", s->printed.g.optics == D2_OPTICS_THICK
                                                   ? "the assembly as built (air gaps)"
                                                   : "datum to datum");
        cJSON_AddItemToObject(acc, "as_printed_optics", oj);
    }
    if (s->have_ev_export_thin)
        cJSON_AddItemToObject(acc, "as_printed_thin", eval_to_json(&s->ev_export_thin, geom_classes(g)));
    cJSON_AddItemToObject(acc, "masks", s->masks_json ? cJSON_Duplicate(s->masks_json, 1)
                                                      : cJSON_CreateNull());
    cJSON_AddItemToObject(acc, "tolerance", s->tolerance_json
                                                ? cJSON_Duplicate(s->tolerance_json, 1)
                                                : cJSON_CreateNull());

    cJSON_AddItemToObject(root, "power_budget", run_power_json(s));

    cJSON *parts = cJSON_AddArrayToObject(root, "parts");
    for (int i = 0; i < s->nparts; i++) cJSON_AddItemToArray(parts, part_json(s, &s->part[i]));
    cJSON_AddItemToObject(root, "assembly", s->assembly_file[0]
                                                ? cJSON_CreateString(s->assembly_file)
                                                : cJSON_CreateNull());
    cJSON_AddStringToObject(root, "export", "export/export.json");
    cJSON *pv = cJSON_AddArrayToObject(root, "previews");
    for (int i = 0; i < s->npreviews; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(pv, o);
        cJSON_AddStringToObject(o, "file", s->preview[i].file);
        cJSON_AddStringToObject(o, "group", s->preview[i].group);
        cJSON_AddStringToObject(o, "caption", s->preview[i].caption);
    }
    cJSON *w = cJSON_AddArrayToObject(root, "warnings");
    for (int i = 0; i < s->nwarn; i++) cJSON_AddItemToArray(w, cJSON_CreateString(s->warn[i]));
    return root;
}

/* ------------------------------------------------------------------------
 * report.html
 * ---------------------------------------------------------------------- */

static void esc(FILE *f, const char *t)
{
    for (; *t; t++) {
        switch (*t) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*t, f);
        }
    }
}

/* An <img> with the PNG embedded, so the page is one file. */
static int embed_png(FILE *f, const run_state *s, const char *rel, const char *alt, d2_err *e)
{
    char path[RUN_PATH_MAX + 128], *buf = NULL, *b64;
    size_t n = 0;
    int rc;
    if ((rc = d2_path_join(path, sizeof path, s->o->out_dir, rel, e)) ||
        (rc = d2_read_file(path, (size_t)64 << 20, &buf, &n, e)))
        return rc;
    b64 = run_base64((const unsigned char *)buf, n);
    free(buf);
    if (!b64) return d2_fail(e, D2_EIO, "out of memory embedding %s", path);
    fputs("<img alt=\"", f);
    esc(f, alt);
    fprintf(f, "\" src=\"data:image/png;base64,%s\">", b64);
    free(b64);
    return 0;
}

static void pct(FILE *f, double v)
{
    fprintf(f, "%.2f&nbsp;%%", 100 * v);
}

/* Side view of the stack, to scale along z (the optical axis); the plates'
 * height is drawn to its own scale. */
static void stack_svg(FILE *f, const run_state *s)
{
    const d2_geom *g = &s->model.g;
    int L = g->layers, np = L + 2;
    double total = run_plane_z(g, L + 1);
    const double W = 1040, H = 350, x0 = 150, x1 = W - 70, ytop = 60, yh = 180;
    double sx = (x1 - x0) / total;
    double active = g->n * g->pitch_mm;
    double side = active + 2 * s->frame_width_mm;
    double sy = yh / side, ymid = ytop + yh / 2;
    fprintf(f, "<svg width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<defs><marker id=\"ar\" markerWidth=\"8\" markerHeight=\"8\" refX=\"7\" "
            "refY=\"4\" orient=\"auto-start-reverse\"><path d=\"M0,0 L8,4 L0,8 z\" "
            "fill=\"#333\"/></marker></defs>\n");
    /* The source: a plane wave arriving from the left. */
    fprintf(f, "<text x=\"10\" y=\"%.0f\">source, %.4g THz</text>\n", ymid - 50,
            s->have_export ? s->ex.frequency_thz : opt_frequency_thz(g->wavelength_mm));
    fprintf(f, "<text x=\"10\" y=\"%.0f\">(plane wave)</text>\n", ymid - 35);
    for (int i = -1; i <= 1; i++)
        fprintf(f, "<line x1=\"20\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#c33\" "
                "stroke-width=\"2\" marker-end=\"url(#ar)\"/>\n", ymid + 22 * i, x0 - 14,
                ymid + 22 * i);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#999\" "
            "stroke-dasharray=\"6 4\"/>\n", x0 - 20, ymid, x1 + 40, ymid);
    for (int k = 0; k < np; k++) {
        double z = run_plane_z(g, k), x = x0 + z * sx;
        double th = s->plate_thick_mm[k];
        if (!(th > 0)) th = k >= 1 && k <= L && s->have_export ? s->ex.layer[k - 1].max_mm : 2;
        double wpx = fmax(3, th * sx);
        char lb[32];
        if (k == 0) snprintf(lb, sizeof lb, "%s", s->nmasks ? "input mask" : "input");
        else if (k == L + 1) snprintf(lb, sizeof lb, "detector");
        else snprintf(lb, sizeof lb, "layer %d", k);
        /* Posts from this plate's frame to the next plate's datum face. */
        if (k < np - 1 && s->post_mm > 0) {
            double xn = x0 + run_plane_z(g, k + 1) * sx;
            double off = (s->frame_width_mm - s->post_mm) / 2;
            for (int side_i = 0; side_i < 2; side_i++) {
                double y = side_i ? ymid + side * sy / 2 - (off + s->post_mm) * sy
                                  : ymid - side * sy / 2 + off * sy;
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                        "fill=\"#ddd\" stroke=\"#aaa\"/>\n", x + wpx, y, xn - x - wpx,
                        s->post_mm * sy);
            }
        }
        /* Frame (grey) and the active area (dark); the relief faces +z. */
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#999\"/>\n",
                x, ymid - side * sy / 2, wpx, side * sy);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
                x, ymid - active * sy / 2, wpx, active * sy,
                k == 0 || k == L + 1 ? "#444" : "#2a6f97");
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\" font-weight=\"bold\">"
                "%s</text>\n", x + wpx / 2, ytop - 12, lb);
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">z = %.4g mm</text>\n",
                x + wpx / 2, ytop + yh + 20, z);
        if (k > 0) {
            double xp = x0 + run_plane_z(g, k - 1) * sx, yd = ytop + yh + 48;
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#333\" "
                    "marker-start=\"url(#ar)\" marker-end=\"url(#ar)\"/>\n", xp + 1, yd, x - 1,
                    yd);
            fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.4g mm</text>\n",
                    (xp + x) / 2, yd - 6, g->gap_mm[k - 1]);
        }
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">Gaps between the datum (source-side) faces, to "
            "scale along the axis. Plates %.4g mm square (active area %.4g mm, dark; frame "
            "grey, posts light grey), drawn to their own scale.</text>\n", x0 - 140, H - 14,
            side, active);
    fprintf(f, "</svg>\n");
}

/* The detector plane seen from the source: the aperture the digits fill and
 * the ten detector squares, to scale. */
static void detector_svg(FILE *f, const d2_geom *g)
{
    double side = g->n * g->pitch_mm, px = 300, sc = px / side;
    fprintf(f, "<svg width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n", px + 20, px + 20);
    fprintf(f, "<rect x=\"10\" y=\"10\" width=\"%.0f\" height=\"%.0f\" fill=\"#111\"/>\n", px,
            px);
    double ap = g->aperture_mm * sc;
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n", 10 + (px - ap) / 2,
            10 + (px - ap) / 2, ap, ap);
    for (int k = 0; k < g->ndet; k++) {
        double d = g->det_size_mm * sc;
        /* y grows downward in both the maps (row = y) and SVG. */
        double cx = 10 + px / 2 + g->det_x_mm[k] * sc, cy = 10 + px / 2 + g->det_y_mm[k] * sc;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#f2c14e\"/>"
                "\n<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" dominant-baseline="
                "\"central\">%d</text>\n", cx - d / 2, cy - d / 2, d, d, cx, cy, k);
    }
    fputs("</svg>\n", f);
}

static void stage_table(FILE *f, const run_state *s)
{
    fputs("<table><tr><th>stage</th><th>status</th><th>time</th><th>result</th></tr>\n", f);
    for (int k = 0; k < RUN_STAGES; k++) {
        fprintf(f, "<tr><td>%d. %s</td><td class=\"%s\">%s</td>", k + 1, run_stage_names[k],
                status_name(s->res->status[k]), status_name(s->res->status[k]));
        if (k < RUN_STAGES - 1) fprintf(f, "<td>%.0f&nbsp;s</td><td>", s->res->stage_seconds[k]);
        else fputs("<td></td><td>", f);
        esc(f, s->res->note[k]);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    fprintf(f, "<p>Stages 1-5 took %.0f s on %d CPU threads.</p>\n", s->res->seconds,
            s->o->threads > 0 ? s->o->threads : d2_cpu_count());
}

/* Test images and the light budget of an evaluation, as table cells. */
static void light_cells(FILE *f, const eval_result *r)
{
    fprintf(f, "</td><td>%d</td><td>%.4f</td><td>%.4f</td><td>%.4f (%.1f%%)</td><td>%.3f "
            "(%.3f)</td></tr>\n", r->count, r->efficiency, r->efficiency_p5, r->background,
            100 * r->background_fraction, r->margin_mean, r->margin_p5);
}

static void accuracy_table(FILE *f, const run_state *s)
{
    fprintf(f, "<table><tr><th>what is simulated</th><th>accuracy</th><th>test images</th>"
            "<th>detector efficiency, mean</th><th>its 5th percentile</th><th>background (of "
            "the output plane)</th><th>margin, %s scores (5th percentile)</th></tr>\n",
            detect_scheme_name(&s->printed.g));
    if (s->have_ev_model) {
        fputs("<tr><td>design: the trained phase layers</td><td>", f);
        pct(f, s->ev_model.accuracy);
        light_cells(f, &s->ev_model);
    }
    if (s->have_ev_export) {
        fprintf(f, "<tr><td>as printed: heights in %.4g mm steps, absorption of %s at %.4g THz, %s"
                "</td><td>", s->ex.p.z_step_mm, s->ex.material.name, s->ex.frequency_thz,
                s->printed.g.optics == D2_OPTICS_THICK
                    ? "thick plates in the assembly as built (split-step through the relief)"
                    : "thin phase screens, gaps datum to datum");
        pct(f, s->ev_export.accuracy);
        light_cells(f, &s->ev_export);
    }
    if (s->have_ev_export_thin) {
        fputs("<tr><td>the same heights as thin phase screens (gaps datum to datum), for "
              "comparison only</td><td>", f);
        pct(f, s->ev_export_thin.accuracy);
        light_cells(f, &s->ev_export_thin);
    }
    fprintf(f, "<tr><td>with the printed input masks</td><td colspan=\"6\">");
    if (s->masks_json)
        fprintf(f, "%d of %d test digits read correctly through the printed masks (as "
                "images %d, binarised %d; %s model)", s->mask_correct[2], s->mask_labelled,
                s->mask_correct[0], s->mask_correct[1], optics_name(&s->printed.g));
    else esc(f, s->res->note[3]);
    fputs("</td></tr>\n<tr><td>under printing and assembly errors (Monte Carlo)</td>"
          "<td colspan=\"6\">", f);
    if (s->tolerance_json && s->tol.trials) {
        fputs("mean ", f);
        pct(f, s->tol.mean);
        fputs(", worst ", f);
        pct(f, s->tol.min);
        fprintf(f, " over %d trials on %d test images; yield ", s->tol.trials, s->tol.images);
        pct(f, s->tol.yield);
        fputs(" of the trials reach the spec, ", f);
        pct(f, s->tol.spec);
        fputs(s->tol.spec_from_nominal ? " (the nominal accuracy less 1 point)"
                                       : " (set by spec_accuracy_percent)", f);
    } else if (s->tolerance_json) {
        fputs("no Monte-Carlo trials; see the tolerance section", f);
    }
    else esc(f, s->res->note[4]);
    fputs("</td></tr>\n</table>\n", f);
    if (s->have_ev_export) {
        fputs("<p>Per-class accuracy as printed:", f);
        for (int k = 0; k < s->model.g.ndet; k++)
            fprintf(f, " %d:&nbsp;%.1f%%", k,
                    s->ev_export.class_count[k]
                        ? 100.0 * s->ev_export.class_correct[k] / s->ev_export.class_count[k]
                        : 0.0);
        fputs("</p>\n", f);
    }
}

static void parts_table(FILE *f, const run_state *s)
{
    fprintf(f, "<table><tr><th>part</th><th>file</th><th>material</th><th>layer height</th>"
            "<th>orientation</th><th>size (mm)</th><th>volume</th><th>mass</th>"
            "<th>est. print time (layer model)</th>%s</tr>\n",
            s->c->print_time_slicer ? "<th>PrusaSlicer</th>" : "");
    for (int i = 0; i < s->nparts; i++) {
        const run_part *p = &s->part[i];
        fputs("<tr><td>", f);
        esc(f, p->what);
        fputs("</td><td><a href=\"", f);
        esc(f, p->file);
        fputs("\">", f);
        esc(f, p->file);
        fputs("</a></td><td>", f);
        esc(f, s->ex.material.display_name);
        fprintf(f, "</td><td>%.4g mm</td><td>", s->ex.printer.z_step_mm);
        fputs("flat, datum face (SRC) down", f);
        fprintf(f, "</td><td>%.1f x %.1f x %.2f</td><td>%.0f&nbsp;mm&sup3;</td>", p->size_mm[0],
                p->size_mm[1], p->size_mm[2], p->volume_mm3);
        double m = run_mass_g(s, p->volume_mm3), t = run_print_time_h(s, p->size_mm[2]);
        if (m >= 0) fprintf(f, "<td>%.1f&nbsp;g</td>", m);
        else fputs("<td>-</td>", f);
        if (t >= 0) fprintf(f, "<td>%.1f&nbsp;h</td>", t);
        else fputs("<td>not estimated</td>", f);
        if (p->sliced)
            fprintf(f, "<td>%.2f&nbsp;h, %.3g&nbsp;%s</td>", p->slice.time_h, p->slice.material,
                    p->slice.material_unit);
        else if (s->c->print_time_slicer)
            fputs("<td>-</td>", f);
        fputs("</tr>\n", f);
    }
    fputs("</table>\n<p>Orientation: ", f);
    esc(f, run_orientation_text(s));
    fputs(". Details for the print shop: <a href=\"PRINTING.txt\">PRINTING.txt</a>.</p>\n", f);
    if (run_print_time_h(s, 1) < 0)
        fputs("<p>No print time is estimated: the printer profile gives neither a time per "
              "layer (layer_time_s) nor a vertical build rate (z_speed_mm_per_h).</p>\n", f);
    else {
        fputs("<p>Print time: layer model, every layer of the whole part (datum plate, "
              "relief, posts and pins: part height / Z step) times the time per layer from ", f);
        esc(f, run_print_time_source(s));
        fputs("; each part printed alone; parts printed side by side in one job take about "
              "as long as the tallest.</p>\n", f);
    }
    if (s->have_export && !s->c->print_time_slicer) {
        fputs("<p>", f);
        esc(f, run_slicer_hint(s));
        fputs("</p>\n", f);
    }
    for (int i = 0; i < s->nparts; i++)
        if (s->part[i].sliced) {
            fputs("<p>PrusaSlicer column: each layer part sliced alone by ", f);
            esc(f, s->part[i].slice.how);
            fputs("; the slicer's time and resin or filament use as it reports them. Where it "
                  "and the layer model differ, trust the slicer, and your printer's own slicer "
                  "more.</p>\n", f);
            break;
        }
}

static void export_table(FILE *f, const run_state *s)
{
    const export_report *x = &s->ex;
    fprintf(f, "<p>%s, n&nbsp;=&nbsp;%.5g, &kappa;&nbsp;=&nbsp;%.4g at %.4g THz (wavelength "
            "%.5g mm): 2&pi; of phase needs %.4f mm of material; base %.4g mm; %s. Stack power "
            "transmission %.4f (absorption and Fresnel reflection, %.1f&nbsp;%% per surface).</p>\n",
            x->material.display_name, x->p.index, x->p.kappa, x->frequency_thz,
            x->p.wavelength_mm, x->period_mm, x->p.base_mm,
            x->p.levels ? "phase quantised to levels" : "heights in whole printer Z steps",
            x->power_transmission, 100 * x->fresnel_r);
    fputs("<table><tr><th>layer</th><th>min (mm)</th><th>max (mm)</th><th>mean (mm)</th>"
          "<th>phase RMS error (rad)</th><th>volume (mm&sup3;)</th><th>mean amplitude</th>"
          "<th>wrap cliffs (plain wrap)</th></tr>\n", f);
    for (int k = 0; k < x->layers; k++) {
        const exp_layer_stats *l = &x->layer[k];
        fprintf(f, "<tr><td>%d</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.4f</td>"
                "<td>%.0f</td><td>%.3f</td><td>%ld (%ld)</td></tr>\n", k + 1, l->min_mm,
                l->max_mm, l->mean_mm, l->phase_rms_error_rad, l->volume_mm3, l->amp_mean,
                l->wrap_jumps, l->wrap_jumps_plain);
    }
    fputs("</table>\n", f);
}

/* The masks: what each blocks and how the printed stack reads it. */
static void masks_table(FILE *f, const run_state *s)
{
    fprintf(f, "<p>Stencils cut through an opaque plate with the layer plates' frame and "
            "pins; each goes in front of layer 1, at %.4g&nbsp;mm. Islands (the counters of "
            "0, 4, 6, 8, 9) are tied to the plate with bridges at least the printer's minimum "
            "feature wide. Predictions are those of the stack as printed.</p>\n",
            s->model.g.gap_mm[0]);
    fputs("<table><tr><th>part</th><th>digit</th><th>islands</th><th>bridges</th>"
          "<th>aperture blocked</th><th>read as: image</th><th>binarised</th>"
          "<th>printed mask</th></tr>\n", f);
    for (int i = 0; i < s->nmasks; i++) {
        const run_mask *m = &s->mask_info[i];
        fputs("<tr><td><a href=\"", f);
        esc(f, s->part[i].file);
        fputs("\">", f);
        esc(f, s->part[i].file);
        fprintf(f, "</a></td><td>%d</td><td>%d</td><td>%d</td><td>%.1f&nbsp;%%</td>", m->label,
                m->islands, m->bridges, 100 * m->blocked_fraction);
        for (int k = 0; k < 3; k++)
            fprintf(f, "<td class=\"%s\">%d</td>", m->pred[k] == m->label ? "done" : "failed",
                    m->pred[k]);
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
}

/* The tolerance study: Monte Carlo, the worst single perturbations and the
 * inverse tolerances. */
static void tolerance_tables(FILE *f, const run_state *s)
{
    const run_tol *t = &s->tol;
    fprintf(f, "<p>The stack as printed, on %d test images: nominal accuracy ", t->images);
    pct(f, t->nominal);
    fprintf(f, ", every number from the %s model. Every number and each trial's "
            "perturbations: <a href=\"tolerance/report.json\">tolerance/report.json</a> and "
            "the CSV files beside it.</p>\n",
            t->optics == D2_OPTICS_THICK ? "thick-plate (the assembly as built)"
                                         : "thin phase-screen (gaps datum to datum)");
    if (t->trials) {
        fprintf(f, "<table><tr><th>Monte Carlo, %d trials</th><th>accuracy</th></tr>\n",
                t->trials);
        const char *name[] = {"mean", "standard deviation", "worst (min)", "best (max)",
                              "90 % of trials reach", "50 % of trials reach",
                              "10 % of trials reach"};
        double v[] = {t->mean, t->std, t->min, t->max, t->p90, t->p50, t->p10};
        for (int i = 0; i < 7; i++) {
            fprintf(f, "<tr><td>%s</td><td>", name[i]);
            pct(f, v[i]);
            fputs("</td></tr>\n", f);
        }
        fputs("<tr><td>yield: trials at or above the spec, ", f);
        pct(f, t->spec);
        fputs(t->spec_from_nominal ? " (nominal less 1 point)" : " (spec_accuracy_percent)", f);
        fputs("</td><td>", f);
        pct(f, t->yield);
        fputs(" (95&nbsp;% interval ", f);
        pct(f, t->yield_lo);
        fputs(" to ", f);
        pct(f, t->yield_hi);
        fputs(")</td></tr>\n</table>\n", f);
    }
    if (t->nsens && !t->sens_kinds) {
        fputs("<table><tr><th>one perturbation alone (worst first)</th><th>magnitude</th>"
              "<th>accuracy change (points)</th></tr>\n", f);
        for (int i = 0; i < t->nsens; i++) {
            fputs("<tr><td>", f);
            esc(f, t->sens[i].what);
            fprintf(f, "</td><td>&plusmn;%.4g</td><td>%+.2f</td></tr>\n", t->sens[i].magnitude,
                    100 * t->sens[i].change);
        }
        fputs("</table>\n", f);
    }
    if (t->ninv) {
        fputs("<table><tr><th>inverse tolerance (every layer)</th><th>configured</th>"
              "<th>costs 1 point at</th><th>costs 5 points at</th></tr>\n", f);
        for (int i = 0; i < t->ninv; i++) {
            fputs("<tr><td>", f);
            esc(f, t->inv[i].what);
            fprintf(f, "</td><td>%.4g</td>", t->inv[i].ref);
            double a[2] = {t->inv[i].at1, t->inv[i].at5};
            for (int k = 0; k < 2; k++) {
                if (isfinite(a[k])) fprintf(f, "<td>%.4g</td>", a[k]);
                else fprintf(f, "<td>&gt; %.4g</td>", t->inv[i].max_tested);
            }
            fputs("</tr>\n", f);
        }
        fputs("</table>\n", f);
    }
}

/* The export's height files. The 16-bit PNGs hold the exact heights (one
 * count per png_scale_mm): a viewer shows them nearly black, so each is
 * listed with the viewable preview beside it. */
static void height_files(FILE *f, const run_state *s)
{
    fputs("<p>The printed heights, per layer, in <code>export/</code> (all described in <a "
          "href=\"export/export.json\">export/export.json</a>): <code>.npy</code> is float32 "
          "mm; the 16-bit PNG stores them exactly in counts of <code>png_scale_mm</code>, for "
          "programs, and looks black "
          "in an image viewer, so look at the preview beside it.</p>\n<table><tr><th>layer"
          "</th><th>heights (mm, float32)</th><th>exact 16-bit PNG</th><th>preview to look "
          "at</th></tr>\n", f);
    for (int k = 1; k <= s->ex.layers; k++)
        fprintf(f, "<tr><td>%d</td><td><a href=\"export/layer%d_height.npy\">"
                "layer%d_height.npy</a></td><td><a href=\"export/layer%d_height.png\">"
                "layer%d_height.png</a></td><td><a href=\"export/layer%d_preview.png\">"
                "layer%d_preview.png</a></td></tr>\n", k, k, k, k, k, k, k);
    fputs("</table>\n", f);
}

static int figures(FILE *f, const run_state *s, const char *group, d2_err *e)
{
    int any = 0, rc;
    for (int i = 0; i < s->npreviews; i++) {
        const run_preview *p = &s->preview[i];
        if (strcmp(p->group, group)) continue;
        if (!any) fputs("<div class=\"figs\">\n", f);
        any = 1;
        fprintf(f, "<figure class=\"%s\">",
                !strcmp(group, "detector") || !strcmp(group, "relief") ? "wide"
                : !strcmp(group, "tolerance") ? "plot"
                : !strcmp(group, "mask")      ? "mask"
                                              : "map");
        if (!strcmp(group, "mask"))
            fputs("<div class=\"panels\"><span>test digit (grey)</span><span>binarised"
                  "</span><span>printable stencil: white open, blue island, red bridge"
                  "</span></div>", f);
        if ((rc = embed_png(f, s, p->file, p->caption, e))) return rc;
        fputs("<figcaption>", f);
        esc(f, p->caption);
        fputs("</figcaption></figure>\n", f);
    }
    if (any) fputs("</div>\n", f);
    return 0;
}

static const char *css =
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}"
    "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .5em;"
    "text-align:left;vertical-align:top;font-size:.92em}th{background:#f3f3f3}"
    ".figs{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;width:300px}"
    "figure img{width:100%;height:auto;border:1px solid #ddd}"
    "figure.wide{width:100%}figure.plot{width:760px}figure.svg{width:auto}"
    "figure.mask{width:520px}figure.map{width:520px}"
    ".panels{display:flex;font-size:.8em;color:#333}.panels span{flex:1;text-align:center}"
    "figcaption{font-size:.85em;color:#555}"
    ".done{color:#1a7f37}.skipped,.failed{color:#b35900}.warn{color:#b35900}"
    "tr.dominant td{background:#fff3d6}"
    "code{background:#f3f3f3;padding:0 .2em}";

static int write_html(const run_state *s, const char *path, d2_err *e)
{
    d2_out *o = d2_out_open(path, e);
    if (!o) return e->code;
    FILE *f = d2_out_fp(o);
    const d2_geom *g = &s->model.g;
    int rc = 0;
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<title>d2fab print package</title>\n<style>", f);
    fputs(css, f);
    fputs("</style></head><body>\n<h1>d2fab print package</h1>\n<p>", f);
    fprintf(f, "A %d-layer diffractive network of %d&nbsp;x&nbsp;%d neurons at %.4g&nbsp;mm "
            "pitch, classifying %s digits", g->layers, g->n, g->n, g->pitch_mm,
            !strcmp(s->model.t.dataset, "fashion") ? "Fashion-MNIST"
            : !strcmp(s->model.t.dataset, "mnist") ? "MNIST" : "the lab's own (see model.json)");
    if (s->have_export) {
        fputs(", printed on the ", f);
        esc(f, s->ex.printer.display_name);
        fputs(" in ", f);
        esc(f, s->ex.material.display_name);
        fprintf(f, " for a %.4g&nbsp;THz source", s->ex.frequency_thz);
    }
    fputs(". Made by d2fab " D2FAB_VERSION " from <code>", f);
    esc(f, s->c->path);
    fputs("</code>. What to print and how: <a href=\"PRINTING.txt\">PRINTING.txt</a>; every "
          "number: <a href=\"report.json\">report.json</a>.</p>\n", f);

    fputs("<h2>Stages</h2>\n", f);
    stage_table(f, s);
    if (s->nwarn) {
        fputs("<h2>Warnings</h2>\n<ul>\n", f);
        for (int i = 0; i < s->nwarn; i++) {
            fputs("<li class=\"warn\">", f);
            esc(f, s->warn[i]);
            fputs("</li>\n", f);
        }
        fputs("</ul>\n", f);
    }

    fputs("<h2>Accuracy before and after fabrication</h2>\n", f);
    accuracy_table(f, s);

    fputs("<h2>Power budget</h2>\n", f);
    run_html_power(f, s);

    fputs("<h2>The stack</h2>\n", f);
    stack_svg(f, s);
    fputs("<p>Light travels left to right. Every part's flat datum face faces the source; "
          "the gaps are datum to datum and are set by the posts on each part's frame.</p>\n", f);

    fputs("<h2>Parts to print</h2>\n", f);
    parts_table(f, s);
    if (s->assembly_file[0]) {
        fputs("<p>Assembly (every part in place, for a visual check): <a href=\"", f);
        esc(f, s->assembly_file);
        fputs("\">", f);
        esc(f, s->assembly_file);
        fputs("</a>, order and positions in <a href=\"", f);
        esc(f, s->assembly_json);
        fputs("\">", f);
        esc(f, s->assembly_json);
        fputs("</a>.</p>\n", f);
    }

    if (s->have_export) {
        fputs("<h2>Layers: phase and height</h2>\n", f);
        export_table(f, s);
        if ((rc = figures(f, s, "phase", e)) || (rc = figures(f, s, "height", e))) goto fail;
        if ((rc = figures(f, s, "relief", e))) goto fail;
        height_files(f, s);
    }

    fputs("<h2>Detector plane</h2>\n<div class=\"figs\"><figure class=\"svg\">", f);
    detector_svg(f, g);
    fprintf(f, "<figcaption>Detector layout, seen from the source (class numbers in the "
            "squares): %.4g&nbsp;mm plane, %.4g&nbsp;mm detectors; dashed: the input aperture"
            "</figcaption></figure></div>\n", g->n * g->pitch_mm, g->det_size_mm);
    if ((rc = figures(f, s, "detector", e))) goto fail;

    fputs("<h2>Input masks</h2>\n", f);
    if (!s->masks_json) {
        fputs("<p class=\"skipped\">", f);
        esc(f, s->res->note[3]);
        fputs("</p>\n", f);
    } else {
        masks_table(f, s);
    }
    if ((rc = figures(f, s, "mask", e))) goto fail;

    fputs("<h2>Tolerance</h2>\n", f);
    if (!s->tolerance_json) {
        fputs("<p class=\"skipped\">", f);
        esc(f, s->res->note[4]);
        fputs("</p>\n", f);
    } else {
        run_html_perturbations(f, s);
        tolerance_tables(f, s);
    }
    if ((rc = figures(f, s, "tolerance", e))) goto fail;

    fputs("</body></html>\n", f);
    return d2_out_commit(o, e);
fail:
    d2_out_abort(o);
    return rc;
}

/* ------------------------------------------------------------------------
 * PRINTING.txt
 * ---------------------------------------------------------------------- */


int run_write_reports(run_state *s, d2_err *e)
{
    /* report.json last: it is the index a program reads. On a failure the
     * three are removed, so a folder never holds half a report. */
    static const char *const names[3] = {"PRINTING.txt", "report.html", "report.json"};
    char path[3][RUN_PATH_MAX + 32];
    int rc = 0, k;
    cJSON *j = report_json(s);
    if (!j) return d2_fail(e, D2_EIO, "out of memory building report.json");
    for (k = 0; k < 3 && !rc; k++) {
        if ((rc = d2_path_join(path[k], sizeof path[k], s->o->out_dir, names[k], e))) break;
        rc = k == 0 ? run_write_printing(s, path[k], e)
             : k == 1 ? write_html(s, path[k], e)
                      : cfg_write(path[k], j, e);
    }
    if (rc)
        for (int i = 0; i < k; i++) unlink(path[i]);
    cJSON_Delete(j);
    return rc;
}
