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

/* Engraves detector k's name (det_name: "3", or "3+" / "3-" when
 * differential) into the cell tops of the detector plate below, above, left
 * or right of its window rows [r0, r1) x cols [c0, c1), the first place where
 * it keeps kpx cells from every window and from the edge, in font pixels of
 * kpx cells. */
static void det_label(float *top, int n, const d2_geom *g, int k, int kpx, float depth_top)
{
    int r0, r1, c0, c1;
    geom_det_rect(g, k, &r0, &r1, &c0, &c1);
    char name[8];
    det_name(g, k, name, sizeof name);
    int len = (int)strlen(name), w = (6 * len - 1) * kpx, h = 7 * kpx;
    for (int side = 0; side < 4; side++) {
        int lr = side == 0 ? r0 - kpx - h : side == 1 ? r1 + kpx : (r0 + r1) / 2 - h / 2;
        int lc = side == 2 ? c0 - kpx - w : side == 3 ? c1 + kpx : (c0 + c1) / 2 - w / 2;
        if (lr < kpx || lr + h > n - kpx || lc < kpx || lc + w > n - kpx) continue;
        int clear = 1;
        for (int q = 0; q < g->ndet && clear; q++) {
            int a0, a1, b0, b1;
            geom_det_rect(g, q, &a0, &a1, &b0, &b1);
            if (lr < a1 + kpx && lr + h > a0 - kpx && lc < b1 + kpx && lc + w > b0 - kpx)
                clear = 0;
        }
        if (!clear) continue;
        for (int ci = 0; ci < len; ci++) {
            const uint8_t *gl = mesh_glyph(name[ci]);
            for (int r = 0; gl && r < 7; r++)
                for (int u = 0; u < 5; u++) {
                    if (!(gl[r] >> (4 - u) & 1)) continue;
                    /* font row 0 is the top */
                    int row = lr + (6 - r) * kpx, col = lc + (6 * ci + u) * kpx;
                    for (int a = 0; a < kpx; a++)
                        for (int b = 0; b < kpx; b++)
                            top[(size_t)(row + a) * n + col + b] = depth_top;
                }
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

/* A model trained with thick plates states air gaps; the posts set the
 * datum faces apart by those plus each printed plate's tallest pillar, which
 * is the spacing eval and tolerance of the export then use (the export's
 * thick model takes each plate as thick as its tallest pillar). Pillars
 * always face the detector here: a model with the relief toward the source
 * would need its plates mounted the other way round, which is refused. */
static int thick_to_datum(export_folder *x, d2_err *e)
{
    d2_geom *g = &x->g;
    if (g->optics != D2_OPTICS_THICK) return 0;
    if (g->relief_side == D2_RELIEF_SOURCE)
        return d2_fail(e, D2_EINPUT, "%s: the model was trained with the relief toward the "
                       "source; mesh builds plates with the pillars toward the detector",
                       x->json_path);
    double plate[D2_MAX_LAYERS] = {0}, datum[D2_MAX_LAYERS + 1];
    size_t nn = (size_t)g->n * g->n;
    for (int l = 0; l < g->layers; l++)
        for (size_t k = 0; k < nn; k++) plate[l] = fmax(plate[l], x->height_mm[l][k]);
    thick_datum_gaps(g, g->gap_mm, plate, datum);
    for (int k = 0; k <= g->layers; k++) g->gap_mm[k] = datum[k];
    return 0;
}

/* The spacing both optical models see in this stack: the posts hold the
 * datum faces gaps_mm apart; with the relief toward the detector each
 * plate's tallest pillar sets its thickness and the air gaps follow. NULL
 * when a plate does not fit its gap (the mesh checks refuse that earlier). */
static cJSON *spacing_json(const d2_geom *g, const part *pt, int np)
{
    d2_geom gt = *g;
    double plate[D2_MAX_LAYERS] = {0}, air[D2_MAX_LAYERS + 1];
    size_t nn = (size_t)g->n * g->n;
    int l = 0;
    for (int i = 0; i < np && l < g->layers; i++) {
        if (!pt[i].heights) continue;
        for (size_t k = 0; k < nn; k++) plate[l] = fmax(plate[l], pt[i].heights[k]);
        l++;
    }
    gt.relief_side = D2_RELIEF_DETECTOR;
    d2_err e = {0};
    if (l != g->layers || thick_air_gaps(&gt, g->gap_mm, plate, air, &e)) return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "optics", "thick");
    cJSON_AddStringToObject(
        o, "note",
        "The spacing the thick-plate model (d2fab eval, tolerance, mask and run on this export, "
        "their default) uses is this stack as built: datum faces datum_gaps_mm apart, each plate "
        "plate_thickness_mm thick (base and tallest pillar, relief toward the detector), air "
        "gaps air_gaps_mm between a plate's top and the next datum face. The thin model "
        "(--optics thin) puts phase screens at the datum faces, datum_gaps_mm apart.");
    cJSON_AddItemToObject(o, "datum_gaps_mm", cJSON_CreateDoubleArray(g->gap_mm, g->layers + 1));
    cJSON_AddItemToObject(o, "air_gaps_mm", cJSON_CreateDoubleArray(air, g->layers + 1));
    cJSON_AddItemToObject(o, "plate_thickness_mm", cJSON_CreateDoubleArray(plate, g->layers));
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
    cJSON *sj = spacing_json(g, pt, np);
    ok &= sj && cJSON_AddItemToObject(root, "spacing", sj);
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

/* A fabrication warning, kept in the report and assembly.json. */
#define warn(r, ...) \
    d2_note((r)->warn[0], sizeof (r)->warn[0], MESH_MAX_WARN, &(r)->nwarn, __VA_ARGS__)

/* What mesh_stack works on: the export, the printer and frame, the parts. */
typedef struct stack_job {
    export_folder x;
    mesh_printer pr;
    mesh_frame fr;
    part pt[MESH_MAX_PARTS];
    int np;
    mesh_stack_report rep;
} stack_job;

/* The input plate: the frame thickness everywhere but the aperture. */
static int input_plate(stack_job *j, part *p, d2_err *e)
{
    int n = j->x.n;
    double pitch = j->x.pitch_mm, half = 0.5 * j->x.g.aperture_mm + 1e-9;
    float T = (float)j->fr.thick_mm;
    snprintf(p->name, sizeof p->name, "input");
    snprintf(p->label, sizeof p->label, "IN");
    p->top = d2_malloc((size_t)n * n * sizeof *p->top, "input plate", e);
    if (!p->top) return D2_EIO;
    for (int i = 0; i < n; i++)
        for (int j2 = 0; j2 < n; j2++) {
            double x = (j2 - 0.5 * (n - 1)) * pitch, y = (i - 0.5 * (n - 1)) * pitch;
            p->top[(size_t)i * n + j2] = (fabs(x) < half && fabs(y) < half) ? 0.0f : T;
        }
    p->gap_mm = j->x.g.gap_mm[0];
    p->holes = 0;
    return 0;
}

/* The detector plate: windows cut through, each labelled with its class
 * (and + or - for the pairs of the differential scheme). */
static int detector_plate(stack_job *j, part *p, d2_err *e)
{
    const d2_geom *g = &j->x.g;
    int n = j->x.n;
    size_t cells = (size_t)n * n;
    snprintf(p->name, sizeof p->name, "detector");
    snprintf(p->label, sizeof p->label, "DET");
    p->top = d2_malloc(cells * sizeof *p->top, "detector plate", e);
    if (!p->top) return D2_EIO;
    for (size_t i = 0; i < cells; i++) p->top[i] = (float)j->fr.thick_mm;
    int kpx = (int)ceil(j->fr.font_px_mm / j->x.pitch_mm - 1e-9);
    for (int k = 0; k < g->ndet; k++) {
        int r0, r1, c0, c1;
        geom_det_rect(g, k, &r0, &r1, &c0, &c1);
        for (int r = r0; r < r1; r++)
            for (int cc = c0; cc < c1; cc++) p->top[(size_t)r * n + cc] = 0.0f;
    }
    for (int k = 0; k < g->ndet; k++)
        det_label(p->top, n, g, k, kpx, (float)(j->fr.thick_mm - j->fr.engrave_mm));
    p->gap_mm = 0;
    p->holes = 1;
    return 0;
}

/* The parts in stack order with their z, and the fabrication warnings. */
static int stack_parts(stack_job *j, const mesh_stack_opts *o, d2_err *e)
{
    const d2_geom *g = &j->x.g;
    double pitch = j->x.pitch_mm;
    int rc;
    if (!o->no_input && (rc = input_plate(j, j->pt + j->np++, e))) return rc;
    for (int k = 0; k < j->x.layers; k++) {
        part *p = j->pt + j->np++;
        snprintf(p->name, sizeof p->name, "layer%d", k + 1);
        snprintf(p->label, sizeof p->label, "L%d", k + 1);
        p->heights = j->x.height_mm[k];
        p->gap_mm = g->gap_mm[k + 1];
        p->holes = 1;
    }
    if ((rc = detector_plate(j, j->pt + j->np++, e))) return rc;
    double z = o->no_input ? g->gap_mm[0] : 0;
    for (int i = 0; i < j->np; i++) {
        j->pt[i].z_mm = z;
        z += j->pt[i].gap_mm;
    }
    if (j->fr.clearance_mm > 0.25 * pitch)
        warn(&j->rep,
             "lateral play of the pins (+- %g mm clearance) exceeds a quarter pitch (%g mm): "
             "expect accuracy loss unless the model was trained with lateral jitter",
             j->fr.clearance_mm, 0.25 * pitch);
    if (j->pr.xy_resolution_mm > 0 && pitch < 2 * j->pr.xy_resolution_mm)
        warn(&j->rep, "pitch %g mm is below twice the printer's xy resolution (%g mm)", pitch,
             j->pr.xy_resolution_mm);
    return 0;
}

/* Builds and checks every part before anything is written. */
static int stack_build(stack_job *j, d2_err *e)
{
    int rc;
    for (int i = 0; i < j->np; i++) {
        mesh_plate p;
        memset(&p, 0, sizeof p);
        p.rows = p.cols = j->x.n;
        p.pitch_mm = j->x.pitch_mm;
        p.top_mm = j->pt[i].top ? j->pt[i].top : j->pt[i].heights;
        p.gap_mm = j->pt[i].gap_mm;
        p.holes = j->pt[i].holes;
        p.label_top = j->pt[i].label;
        p.label_bottom = "SRC";
        p.frame = j->fr;
        p.printer = j->pr;
        if ((rc = mesh_build_plate(&p, &j->pt[i].m, &j->pt[i].info, e))) {
            d2_err_prefix(e, "%s: %s", j->x.json_path, j->pt[i].name);
            return rc;
        }
        mesh_report r;
        if ((rc = mesh_check(j->pt[i].m, &r, e))) return rc;
        if (!r.closed || r.parts != 1)
            return d2_fail(e, D2_EIO,
                           "%s: internal error: the %s mesh is not one closed solid (%zu open, "
                           "%zu non-manifold edges, %zu parts)",
                           j->x.json_path, j->pt[i].name, r.open_edges, r.nonmanifold_edges,
                           r.parts);
    }
    return 0;
}

/* What a new set of meshes replaces: the files named like its own parts
 * (input, layerK, detector, assembly in any mesh format) and the files the
 * previous assembly.json lists, except the new set itself, so two runs never
 * share a folder. */
typedef struct stale_mesh {
    const mesh_stack_report *rep; /* the new set */
    int nold;
    char old[MESH_MAX_PARTS + 1][64];
} stale_mesh;

static int own_mesh_name(const char *name)
{
    static const char *const ext[] = {".stl", ".3mf", ".obj", ".ply", ".glb"};
    const char *dot = strrchr(name, '.');
    int known = 0;
    for (size_t i = 0; dot && i < sizeof ext / sizeof *ext; i++) known |= !strcmp(dot, ext[i]);
    if (!known) return 0;
    size_t stem = (size_t)(dot - name);
    if ((stem == 5 && !strncmp(name, "input", 5)) ||
        (stem == 8 && (!strncmp(name, "detector", 8) || !strncmp(name, "assembly", 8))))
        return 1;
    if (stem < 6 || strncmp(name, "layer", 5) || name[5] < '1' || name[5] > '9') return 0;
    return strspn(name + 5, "0123456789") == stem - 5;
}

static int stale_mesh_file(const char *name, void *ctx)
{
    const stale_mesh *s = ctx;
    if (!strcmp(name, s->rep->assembly_file)) return 0;
    for (int i = 0; i < s->rep->nparts; i++)
        if (!strcmp(name, s->rep->part[i].file)) return 0;
    if (own_mesh_name(name)) return 1;
    for (int i = 0; i < s->nold; i++)
        if (!strcmp(name, s->old[i])) return 1;
    return 0;
}

static void add_old(stale_mesh *s, const cJSON *f)
{
    if (s->nold < (int)(sizeof s->old / sizeof *s->old) && cJSON_IsString(f) &&
        f->valuestring[0] != '.' && !strchr(f->valuestring, '/') &&
        strlen(f->valuestring) < sizeof s->old[0])
        strcpy(s->old[s->nold++], f->valuestring);
}

/* The plain file names a previous d2fab assembly.json lists. */
static void old_mesh_files(const char *json_path, stale_mesh *s)
{
    cJSON *root = NULL;
    if (cfg_load(json_path, &root, NULL)) return;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format"), *it;
    if (cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "d2fab-assembly")) {
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, "parts"))
            add_old(s, cJSON_GetObjectItemCaseSensitive(it, "file"));
        add_old(s, cJSON_GetObjectItemCaseSensitive(
                       cJSON_GetObjectItemCaseSensitive(root, "assembly"), "file"));
    }
    cJSON_Delete(root);
}

/* Writes the parts, the assembly and assembly.json into out_dir. */
static int stack_write(stack_job *j, const char *export_dir, const char *out_dir,
                       const mesh_stack_opts *o, d2_err *e)
{
    int rc, np = j->np;
    part *pt = j->pt;
    char path[4096];
    /* Room on the disk for the parts and the assembly (binary STL: 50 bytes
     * a facet; the other formats about 80) before anything is replaced. */
    double facets = 0;
    for (int i = 0; i < np; i++) facets += (double)mesh_facets(pt[i].m);
    if ((rc = d2_check_space(out_dir, 2 * facets * (o->format == MESH_STL ? 50 : 80) + 1e5,
                             "the meshes", e)))
        return rc;
    if ((rc = d2_mkdir_p(out_dir, e))) return rc;
    /* assembly.json goes first and comes back last, so a run killed half-way
     * never leaves it describing parts it did not write (as export.json). */
    if ((rc = d2_path_join(path, sizeof path, out_dir, "assembly.json", e))) return rc;
    stale_mesh stale = {&j->rep, 0, {{0}}};
    old_mesh_files(path, &stale);
    if ((rc = d2_remove_index(out_dir, "assembly.json", e))) return rc;
    const char *ext = mesh_format_ext(o->format);
    /* The print settings a 3MF carries for the slicer. */
    mesh_print_info info = {j->pr.name, j->x.have_material ? j->x.material : NULL,
                            j->pr.z_step_mm};
    mesh_part mp[MESH_MAX_PARTS];
    for (int i = 0; i < np; i++) {
        mesh_stack_part *sp = j->rep.part + i;
        memcpy(sp->name, pt[i].name, sizeof sp->name);
        snprintf(sp->file, sizeof sp->file, "%.24s.%.8s", pt[i].name, ext);
        mesh_part one = {pt[i].m, pt[i].name, {0, 0, 0}};
        if ((rc = d2_path_join(path, sizeof path, out_dir, sp->file, e)) ||
            (rc = mesh_write_info(path, o->format, &one, 1, &info, &sp->bytes, e)))
            return rc;
        sp->facets = mesh_facets(pt[i].m);
        sp->volume_mm3 = mesh_volume_mm3(pt[i].m);
        sp->z_mm = pt[i].z_mm;
        memcpy(sp->size_mm, pt[i].info.size_mm, sizeof sp->size_mm);
        mp[i] = (mesh_part){pt[i].m, pt[i].name, {0, 0, pt[i].z_mm + i * ASSEMBLY_SEP_MM}};
        j->rep.assembly_facets += sp->facets;
    }
    j->rep.nparts = np;
    snprintf(j->rep.assembly_file, sizeof j->rep.assembly_file, "assembly.%s", ext);
    if ((rc = d2_path_join(path, sizeof path, out_dir, j->rep.assembly_file, e)) ||
        (rc = mesh_write_info(path, o->format, mp, np, &info, &j->rep.assembly_bytes, e)))
        return rc;
    if ((rc = d2_dir_clear(out_dir, 0, stale_mesh_file, &stale, "previous run's mesh", e)))
        return rc;
    if ((rc = d2_path_join(path, sizeof path, out_dir, "assembly.json", e)) ||
        (rc = write_json(path, export_dir, &j->x.g, &j->pr, &j->fr, pt, np, &j->rep, o->format,
                         e)))
        return rc;
    return 0;
}

int mesh_stack(const char *export_dir, const char *out_dir, const mesh_stack_opts *o,
               mesh_stack_report *rep_out, d2_err *e)
{
    stack_job *j = d2_calloc(1, sizeof *j, "mesh stack", e);
    if (!j) return D2_EIO;
    int rc = export_folder_load(export_dir, &j->x, e);
    if (rc) goto done;
    if (!j->x.have_printer) {
        rc = d2_fail(e, D2_EINPUT, "%s: missing key \"printer\"", j->x.json_path);
        goto done;
    }
    if ((rc = thick_to_datum(&j->x, e))) goto done;
    mesh_printer_from_profile(&j->x.printer, &j->pr);
    mesh_frame_for_stack(&j->fr, &j->pr, &o->frame, j->x.base_mm);
    if ((rc = stack_parts(j, o, e))) goto done;
    double t0 = d2_now();
    if ((rc = stack_build(j, e))) goto done;
    j->rep.seconds_mesh = d2_now() - t0;
    t0 = d2_now();
    if ((rc = stack_write(j, export_dir, out_dir, o, e))) goto done;
    j->rep.seconds_write = d2_now() - t0;
done:
    if (rep_out) *rep_out = j->rep;
    for (int i = 0; i < j->np; i++) {
        mesh_free(j->pt[i].m);
        free(j->pt[i].top);
    }
    export_folder_free(&j->x);
    free(j);
    return rc;
}
