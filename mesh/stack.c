/* d2fab mesh: an export folder -> one plate per part of the stack, the
 * assembly and assembly.json. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/npy.h"
#include "core/util.h"
#include "mesh/mesh_int.h"
#include "optics/optics.h"

/* Parts touching in the stack (post shoulders on the next datum face) are
 * raised by this much per part in the assembly file, so that no two parts
 * share a vertex there; assembly.json gives the exact z. */
#define ASSEMBLY_SEP_MM 0.001

void mesh_stack_opts_default(mesh_stack_opts *o)
{
    memset(o, 0, sizeof *o);
    o->format = MESH_STL;
}

typedef struct part {
    char name[32], label[16];
    float *top;      /* owned cell tops, or NULL: the layer heights */
    const float *heights;
    double gap_mm;   /* to the next part, 0 for the last */
    int holes;
    double z_mm;
    mesh *m;
    mesh_plate_info info;
} part;

void mesh_frame_for_stack(mesh_frame *f, const mesh_printer *pr, const mesh_frame *o,
                            double base_mm)
{
    mesh_frame_default(f, pr);
    if (base_mm > f->thick_mm) f->thick_mm = base_mm;
    if (!o) return;
    if (o->width_mm > 0) f->width_mm = o->width_mm;
    if (o->thick_mm > 0) f->thick_mm = o->thick_mm;
    if (o->post_mm > 0) f->post_mm = o->post_mm;
    if (o->pin_mm > 0) f->pin_mm = o->pin_mm;
    if (o->pin_len_mm > 0) f->pin_len_mm = o->pin_len_mm;
    if (o->key_mm > 0) f->key_mm = o->key_mm;
    if (o->clearance_mm > 0) f->clearance_mm = o->clearance_mm;
    if (o->engrave_mm > 0) f->engrave_mm = o->engrave_mm;
    if (o->font_px_mm > 0) f->font_px_mm = o->font_px_mm;
    if (o->min_feature_mm > 0) f->min_feature_mm = o->min_feature_mm;
}

/* Engraves digit ch into the cell tops of the detector plate below (or else
 * above) the window rows [r0, r1) x cols [c0, c1), in font pixels of kpx
 * cells, where it keeps kpx cells from every window and from the edge. */
static void det_label(float *top, int n, const d2_geom *g, int k, int kpx, float depth_top)
{
    int r0, r1, c0, c1;
    geom_det_rect(g, k, &r0, &r1, &c0, &c1);
    int w = 5 * kpx, h = 7 * kpx;
    int lc = (c0 + c1) / 2 - w / 2;
    for (int side = 0; side < 2; side++) {
        int lr = side == 0 ? r0 - kpx - h : r1 + kpx; /* rows of the label */
        if (lr < kpx || lr + h > n - kpx || lc < kpx || lc + w > n - kpx) continue;
        int clear = 1;
        for (int q = 0; q < g->ndet && clear; q++) {
            int a0, a1, b0, b1;
            geom_det_rect(g, q, &a0, &a1, &b0, &b1);
            if (lr < a1 + kpx && lr + h > a0 - kpx && lc < b1 + kpx && lc + w > b0 - kpx)
                clear = 0;
        }
        if (!clear) continue;
        const uint8_t *gl = mesh_glyph((char)('0' + k % 10));
        for (int r = 0; r < 7; r++)
            for (int u = 0; u < 5; u++) {
                if (!(gl[r] >> (4 - u) & 1)) continue;
                int row = lr + (6 - r) * kpx, col = lc + u * kpx; /* font row 0 is the top */
                for (int a = 0; a < kpx; a++)
                    for (int b = 0; b < kpx; b++) top[(size_t)(row + a) * n + col + b] = depth_top;
            }
        return;
    }
}

static cJSON *frame_json(const mesh_frame *f)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "width_mm", f->width_mm);
    cJSON_AddNumberToObject(o, "thick_mm", f->thick_mm);
    cJSON_AddNumberToObject(o, "post_mm", f->post_mm);
    cJSON_AddNumberToObject(o, "pin_mm", f->pin_mm);
    cJSON_AddNumberToObject(o, "pin_len_mm", f->pin_len_mm);
    cJSON_AddNumberToObject(o, "hole_mm", f->pin_mm + 2 * f->clearance_mm);
    cJSON_AddNumberToObject(o, "hole_depth_mm", f->pin_len_mm + f->clearance_mm);
    cJSON_AddNumberToObject(o, "clearance_mm", f->clearance_mm);
    cJSON_AddNumberToObject(o, "lateral_play_mm", f->clearance_mm);
    cJSON_AddNumberToObject(o, "key_mm", f->key_mm);
    cJSON_AddStringToObject(o, "key",
                            "the pin of the top-left post (min x, max y, seen from the detector "
                            "side) is offset by key_mm toward +x; all other pins are centred");
    cJSON_AddNumberToObject(o, "engrave_mm", f->engrave_mm);
    cJSON_AddNumberToObject(o, "min_feature_mm", f->min_feature_mm);
    return o;
}

static int write_json(const char *path, const char *export_dir, const d2_geom *g,
                      const mesh_printer *pr, const mesh_frame *f, const part *pt, int np,
                      const mesh_stack_report *rep, mesh_format fmt, d2_err *e)
{
    cJSON *root = cJSON_CreateObject(), *a;
    if (!root) return d2_fail(e, D2_EIO, "out of memory");
    int ok = 1;
    ok &= !!cJSON_AddStringToObject(root, "format", "d2fab-assembly");
    ok &= !!cJSON_AddNumberToObject(root, "version", 1);
    ok &= !!cJSON_AddStringToObject(root, "software", "d2fab " D2FAB_VERSION);
    ok &= !!cJSON_AddStringToObject(root, "export", export_dir);
    ok &= !!cJSON_AddStringToObject(root, "units", "mm");
    ok &= !!cJSON_AddStringToObject(
        root, "convention",
        "z is the optical axis and light travels toward +z. Every part is a plate whose flat "
        "datum face (z = 0 in its own file, engraved SRC) faces the source and is its optical "
        "surface; pillars, posts and the part label face the detector. gaps_mm[k] is the distance "
        "between the datum faces of part k and part k+1 (input, layer 1..L, detector). Posts on "
        "each part's frame corners end at z = gap (the shoulder the next part rests on) and carry "
        "pins that enter holes in the next part's datum face. Pixel (row i, column j) of a layer "
        "lies at x = frame + j * pitch, y = frame + i * pitch in its file; the optical axis passes "
        "through optical_axis_mm of every part.");
    ok &= !!cJSON_AddStringToObject(root, "printer", pr->name);
    ok &= !!cJSON_AddNumberToObject(root, "pitch_mm", g->pitch_mm);
    ok &= !!cJSON_AddNumberToObject(root, "neurons", g->n);
    ok &= !!(a = cJSON_AddArrayToObject(root, "gaps_mm"));
    for (int k = 0; a && k <= g->layers; k++) cJSON_AddItemToArray(a, cJSON_CreateNumber(g->gap_mm[k]));
    cJSON *fj = frame_json(f);
    ok &= fj && cJSON_AddItemToObject(root, "frame", fj);
    ok &= !!(a = cJSON_AddArrayToObject(root, "plate_size_mm"));
    if (a) {
        cJSON_AddItemToArray(a, cJSON_CreateNumber(pt[0].info.size_mm[0]));
        cJSON_AddItemToArray(a, cJSON_CreateNumber(pt[0].info.size_mm[1]));
    }
    ok &= !!(a = cJSON_AddArrayToObject(root, "optical_axis_mm"));
    if (a) {
        cJSON_AddItemToArray(a, cJSON_CreateNumber(pt[0].info.axis_mm[0]));
        cJSON_AddItemToArray(a, cJSON_CreateNumber(pt[0].info.axis_mm[1]));
    }
    cJSON *parts = cJSON_AddArrayToObject(root, "parts");
    ok &= !!parts;
    for (int i = 0; parts && i < np; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) {
            ok = 0;
            break;
        }
        cJSON_AddItemToArray(parts, o);
        cJSON_AddNumberToObject(o, "order", i);
        cJSON_AddStringToObject(o, "name", pt[i].name);
        cJSON_AddStringToObject(o, "file", rep->part[i].file);
        cJSON_AddStringToObject(o, "label", pt[i].label);
        cJSON_AddNumberToObject(o, "z_mm", pt[i].z_mm);
        cJSON_AddStringToObject(o, "orientation",
                                "datum face (z = 0 of its file) toward the source, +z toward the "
                                "detector; x and y as in the file");
        cJSON_AddNumberToObject(o, "gap_to_next_mm", pt[i].gap_mm);
        cJSON_AddBoolToObject(o, "posts", pt[i].gap_mm > 0);
        cJSON_AddBoolToObject(o, "holes", pt[i].holes);
        cJSON *s = cJSON_AddArrayToObject(o, "size_mm");
        for (int k = 0; s && k < 3; k++)
            cJSON_AddItemToArray(s, cJSON_CreateNumber(pt[i].info.size_mm[k]));
        cJSON_AddNumberToObject(o, "max_active_mm", pt[i].info.max_top_mm);
        cJSON_AddNumberToObject(o, "facets", (double)rep->part[i].facets);
        cJSON_AddNumberToObject(o, "bytes", (double)rep->part[i].bytes);
        cJSON_AddNumberToObject(o, "volume_mm3", rep->part[i].volume_mm3);
    }
    cJSON *as = cJSON_AddObjectToObject(root, "assembly");
    ok &= !!as;
    if (as) {
        cJSON_AddStringToObject(as, "file", rep->assembly_file);
        cJSON_AddStringToObject(as, "format", mesh_format_ext(fmt));
        cJSON_AddNumberToObject(as, "facets", (double)rep->assembly_facets);
        cJSON_AddNumberToObject(as, "bytes", (double)rep->assembly_bytes);
        cJSON_AddNumberToObject(as, "separation_mm", ASSEMBLY_SEP_MM);
        cJSON_AddStringToObject(as, "note",
                                "in the assembly file part k is raised by k * separation_mm so "
                                "that touching parts share no vertex; z_mm above is exact");
    }
    cJSON *w = cJSON_AddArrayToObject(root, "warnings");
    for (int i = 0; w && i < rep->nwarn; i++) cJSON_AddItemToArray(w, cJSON_CreateString(rep->warn[i]));
    int rc = ok ? cfg_write(path, root, e) : d2_fail(e, D2_EIO, "%s: out of memory", path);
    cJSON_Delete(root);
    return rc;
}

static void warn(mesh_stack_report *rep, const char *fmt, double a, double b)
{
    if (rep->nwarn >= MESH_MAX_WARN) return;
    snprintf(rep->warn[rep->nwarn++], sizeof rep->warn[0], fmt, a, b);
}

int mesh_stack(const char *export_dir, const char *out_dir, const mesh_stack_opts *o,
               mesh_stack_report *rep_out, d2_err *e)
{
    int rc = D2_EINPUT;
    char path[4096];
    char material[128] = "";
    cJSON *root = NULL;
    d2_model md;
    memset(&md, 0, sizeof md);
    part pt[MESH_MAX_PARTS];
    memset(pt, 0, sizeof pt);
    float *heights[D2_MAX_LAYERS] = {0};
    int np = 0;
    mesh_stack_report rep;
    memset(&rep, 0, sizeof rep);

    if ((rc = d2_path_join(path, sizeof path, export_dir, "export.json", e)) ||
        (rc = cfg_load(path, &root, e)))
        goto fail;
    cfg_ctx c = {path, ""};
    const char *fmt = NULL;
    long version, n, layers;
    double pitch, base = 0;
    const cJSON *model = NULL, *prj = NULL, *files;
    if ((rc = cfg_str(&c, root, "format", 1, NULL, &fmt, e))) goto fail;
    if (strcmp(fmt, "d2fab-export")) {
        rc = d2_fail(e, D2_EINPUT, "%s: key \"format\": \"%s\", expected \"d2fab-export\"", path,
                     fmt);
        goto fail;
    }
    if ((rc = cfg_int(&c, root, "version", 1, 1, 1, 1, &version, e)) ||
        (rc = cfg_num(&c, root, "pitch_mm", 1, 0, 0.01, 100, &pitch, e)) ||
        (rc = cfg_int(&c, root, "neurons", 1, 0, 1, D2_MAX_N, &n, e)) ||
        (rc = cfg_int(&c, root, "layers", 1, 0, 1, D2_MAX_LAYERS, &layers, e)) ||
        (rc = cfg_num(&c, root, "base_mm", 0, 0, 0, 100, &base, e)) ||
        (rc = cfg_object(&c, root, "model", &model, e)) ||
        (rc = cfg_object(&c, root, "printer", &prj, e)))
        goto fail;
    if (!model || !prj) {
        rc = d2_fail(e, D2_EINPUT, "%s: missing key \"%s\"", path, model ? "printer" : "model");
        goto fail;
    }
    if ((rc = config_read(path, model, &md.g, &md.t, e))) goto fail;
    if (md.g.n != n || md.g.layers != layers || fabs(md.g.pitch_mm - pitch) > 1e-9 * pitch) {
        rc = d2_fail(e, D2_EINPUT,
                     "%s: \"model\" says %d layers of %d x %d at %g mm but the export has %ld of "
                     "%ld x %ld at %g mm",
                     path, md.g.layers, md.g.n, md.g.n, md.g.pitch_mm, layers, n, n, pitch);
        goto fail;
    }
    mesh_printer pr;
    if ((rc = mesh_printer_from_json(prj, path, "printer", &pr, e))) goto fail;
    /* The material's name, for the print settings a 3MF carries. */
    const cJSON *mat = cJSON_GetObjectItemCaseSensitive(root, "material");
    const cJSON *matname = cJSON_GetObjectItemCaseSensitive(mat, "name");
    snprintf(material, sizeof material, "%s",
             cJSON_IsString(matname) ? matname->valuestring : "");
    mesh_frame fr;
    mesh_frame_for_stack(&fr, &pr, &o->frame, base);

    files = cJSON_GetObjectItemCaseSensitive(root, "layer_files");
    if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) != layers) {
        rc = d2_fail(e, D2_EINPUT, "%s: key \"layer_files\": expected an array of %ld entries",
                     path, layers);
        goto fail;
    }
    for (int k = 0; k < layers; k++) {
        const cJSON *l = cJSON_GetArrayItem(files, k);
        char kp[48], key[64], lp[4096];
        snprintf(kp, sizeof kp, "layer_files[%d]", k);
        snprintf(key, sizeof key, "%s.heights_npy", kp);
        cfg_ctx lc = {path, kp};
        const char *name;
        int rows, cols;
        if (!cJSON_IsObject(l)) {
            rc = d2_fail(e, D2_EINPUT, "%s: key \"%s\": expected an object", path, kp);
            goto fail;
        }
        if ((rc = cfg_str(&lc, l, "heights_npy", 1, NULL, &name, e)) ||
            (rc = d2_path_inside(export_dir, name, key, e)) ||
            (rc = d2_path_join(lp, sizeof lp, export_dir, name, e)) ||
            (rc = npy_read_map(lp, &heights[k], &rows, &cols, e)))
            goto fail;
        if (rows != n || cols != n) {
            rc = d2_fail(e, D2_EINPUT, "%s: %d x %d heights, expected %ld x %ld (export.json)", lp,
                         rows, cols, n, n);
            goto fail;
        }
        for (size_t i = 0; i < (size_t)n * n; i++)
            if (!(heights[k][i] >= 0)) {
                rc = d2_fail(e, D2_EINPUT,
                             "%s: height %g mm at row %zu, column %zu: heights must be >= 0", lp,
                             (double)heights[k][i], i / (size_t)n, i % (size_t)n);
                goto fail;
            }
    }

    /* the parts, in stack order */
    double z = 0;
    size_t cells = (size_t)n * n;
    float T = (float)fr.thick_mm;
    if (!o->no_input) {
        part *p = pt + np++;
        snprintf(p->name, sizeof p->name, "input");
        snprintf(p->label, sizeof p->label, "IN");
        p->top = d2_malloc(cells * sizeof *p->top, "input plate", e);
        if (!p->top) {
            rc = D2_EIO;
            goto fail;
        }
        double half = 0.5 * md.g.aperture_mm + 1e-9;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double x = (j - 0.5 * (n - 1)) * pitch, y = (i - 0.5 * (n - 1)) * pitch;
                p->top[(size_t)i * n + j] = (fabs(x) < half && fabs(y) < half) ? 0.0f : T;
            }
        p->gap_mm = md.g.gap_mm[0];
        p->holes = 0;
    }
    z = o->no_input ? md.g.gap_mm[0] : 0;
    for (int k = 0; k < layers; k++) {
        part *p = pt + np++;
        snprintf(p->name, sizeof p->name, "layer%d", k + 1);
        snprintf(p->label, sizeof p->label, "L%d", k + 1);
        p->heights = heights[k];
        p->gap_mm = md.g.gap_mm[k + 1];
        p->holes = 1;
    }
    {
        part *p = pt + np++;
        snprintf(p->name, sizeof p->name, "detector");
        snprintf(p->label, sizeof p->label, "DET");
        p->top = d2_malloc(cells * sizeof *p->top, "detector plate", e);
        if (!p->top) {
            rc = D2_EIO;
            goto fail;
        }
        for (size_t i = 0; i < cells; i++) p->top[i] = T;
        int kpx = (int)ceil(fr.font_px_mm / pitch - 1e-9);
        for (int k = 0; k < md.g.ndet; k++) {
            int r0, r1, c0, c1;
            geom_det_rect(&md.g, k, &r0, &r1, &c0, &c1);
            for (int r = r0; r < r1; r++)
                for (int cc = c0; cc < c1; cc++) p->top[(size_t)r * n + cc] = 0.0f;
        }
        for (int k = 0; k < md.g.ndet; k++)
            det_label(p->top, (int)n, &md.g, k, kpx, (float)(fr.thick_mm - fr.engrave_mm));
        p->gap_mm = 0;
        p->holes = 1;
    }
    for (int i = 0; i < np; i++) {
        pt[i].z_mm = z;
        z += pt[i].gap_mm;
    }
    if (fr.clearance_mm > 0.25 * pitch)
        warn(&rep,
             "lateral play of the pins (+- %g mm clearance) exceeds a quarter pitch (%g mm): "
             "expect accuracy loss unless the model was trained with lateral jitter",
             fr.clearance_mm, 0.25 * pitch);
    if (pr.xy_resolution_mm > 0 && pitch < 2 * pr.xy_resolution_mm)
        warn(&rep, "pitch %g mm is below twice the printer's xy resolution (%g mm)", pitch,
             pr.xy_resolution_mm);

    /* build and check every part before writing anything */
    double t0 = d2_now();
    for (int i = 0; i < np; i++) {
        mesh_plate p;
        memset(&p, 0, sizeof p);
        p.rows = p.cols = (int)n;
        p.pitch_mm = pitch;
        p.top_mm = pt[i].top ? pt[i].top : pt[i].heights;
        p.gap_mm = pt[i].gap_mm;
        p.holes = pt[i].holes;
        p.label_top = pt[i].label;
        p.label_bottom = "SRC";
        p.frame = fr;
        p.printer = pr;
        if ((rc = mesh_build_plate(&p, &pt[i].m, &pt[i].info, e))) {
            d2_err_prefix(e, "%s: %s", path, pt[i].name);
            goto fail;
        }
        mesh_report r;
        if ((rc = mesh_check(pt[i].m, &r, e))) goto fail;
        if (!r.closed || r.parts != 1) {
            rc = d2_fail(e, D2_EIO,
                         "%s: internal error: the %s mesh is not one closed solid (%zu open, %zu "
                         "non-manifold edges, %zu parts)",
                         path, pt[i].name, r.open_edges, r.nonmanifold_edges, r.parts);
            goto fail;
        }
    }
    rep.seconds_mesh = d2_now() - t0;

    /* write */
    /* Room on the disk for the parts and the assembly (binary STL: 50 bytes
     * a facet; the other formats about 80) before anything is replaced. */
    double facets = 0;
    for (int i = 0; i < np; i++) facets += (double)mesh_facets(pt[i].m);
    if ((rc = d2_check_space(out_dir, 2 * facets * (o->format == MESH_STL ? 50 : 80) + 1e5,
                             "the meshes", e)))
        goto fail;
    t0 = d2_now();
    if ((rc = d2_mkdir_p(out_dir, e))) goto fail;
    /* assembly.json goes first and comes back last, so a run killed half-way
     * never leaves it describing parts it did not write (as export.json). */
    if ((rc = d2_path_join(path, sizeof path, out_dir, "assembly.json", e))) goto fail;
    if (unlink(path) != 0 && errno != ENOENT) {
        rc = d2_fail(e, D2_EIO, "%s: cannot remove the old assembly.json: %s", path,
                     strerror(errno));
        goto fail;
    }
    const char *ext = mesh_format_ext(o->format);
    mesh_print_info info = {pr.name, material, pr.z_step_mm};
    mesh_part mp[MESH_MAX_PARTS];
    for (int i = 0; i < np; i++) {
        mesh_stack_part *sp = rep.part + i;
        memcpy(sp->name, pt[i].name, sizeof sp->name);
        snprintf(sp->file, sizeof sp->file, "%.24s.%.8s", pt[i].name, ext);
        mesh_part one = {pt[i].m, pt[i].name, {0, 0, 0}};
        if ((rc = d2_path_join(path, sizeof path, out_dir, sp->file, e)) ||
            (rc = mesh_write_info(path, o->format, &one, 1, &info, &sp->bytes, e)))
            goto fail;
        sp->facets = mesh_facets(pt[i].m);
        sp->volume_mm3 = mesh_volume_mm3(pt[i].m);
        sp->z_mm = pt[i].z_mm;
        memcpy(sp->size_mm, pt[i].info.size_mm, sizeof sp->size_mm);
        mp[i] = (mesh_part){pt[i].m, pt[i].name, {0, 0, pt[i].z_mm + i * ASSEMBLY_SEP_MM}};
        rep.assembly_facets += sp->facets;
    }
    rep.nparts = np;
    snprintf(rep.assembly_file, sizeof rep.assembly_file, "assembly.%s", ext);
    if ((rc = d2_path_join(path, sizeof path, out_dir, rep.assembly_file, e)) ||
        (rc = mesh_write_info(path, o->format, mp, np, &info, &rep.assembly_bytes, e)))
        goto fail;
    if ((rc = d2_path_join(path, sizeof path, out_dir, "assembly.json", e)) ||
        (rc = write_json(path, export_dir, &md.g, &pr, &fr, pt, np, &rep, o->format, e)))
        goto fail;
    rep.seconds_write = d2_now() - t0;
    rc = 0;
fail:
    if (rep_out) *rep_out = rep;
    for (int i = 0; i < np; i++) {
        mesh_free(pt[i].m);
        free(pt[i].top);
    }
    for (int k = 0; k < D2_MAX_LAYERS; k++) free(heights[k]);
    cJSON_Delete(root);
    return rc;
}
