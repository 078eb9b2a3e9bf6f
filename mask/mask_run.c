/* d2fab mask: a whole mask run - check and process every source, read each
 * through the network, then write previews, plate meshes and reports. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/config.h"
#include "core/fileio.h"
#include "mask/mask.h"
#include "optics/optics.h"
#include "train/train.h"


void mask_opts_default(mask_opts *o)
{
    memset(o, 0, sizeof *o);
    o->threshold = MASK_DEFAULT_THRESHOLD;
    o->mode = MASK_STENCIL;
    o->write_mesh = 1;
    o->format = MESH_STL;
}

static const char *mode_name(int mode)
{
    return mode == MASK_STENCIL ? "stencil" : mode == MASK_CARRIER_RECESS ? "carrier-recess"
                                                                          : "carrier-relief";
}

/* A warning for the user, kept in the report. */
#define warn(r, ...) \
    d2_note((r)->warn[0], sizeof (r)->warn[0], MASK_MAX_WARN, &(r)->nwarn, __VA_ARGS__)

/* Nearest whole number of Z steps, at least one. */
static double z_round(double v, double step)
{
    if (!(step > 0)) return v;
    double k = round(v / step);
    return (k < 1 ? 1 : k) * step;
}

/* Rounds to 6 significant digits for the reports. */
static double sig6(double v)
{
    if (v == 0 || !isfinite(v)) return v;
    double p = pow(10, 5 - (int)floor(log10(fabs(v))));
    return round(v * p) / p;
}

/* Cell tops of the plate (mm): stencil open cells empty (through-cut). */
static void plate_tops(const mask_map *mm, const mask_opts *o, const mask_run_report *rep,
                       float *top)
{
    size_t n = (size_t)mm->rows * mm->cols;
    float T = (float)rep->thick_mm, d = (float)rep->depth_mm;
    for (size_t i = 0; i < n; i++) {
        float open = o->mode == MASK_STENCIL ? 0.0f
                     : o->mode == MASK_CARRIER_RECESS ? T - d
                                                      : T + d;
        top[i] = mm->open[i] ? open : T;
    }
}

/* Builds the plate of one mask and checks that it is one closed solid. The
 * frame label carries the data-set index where it fits ("IN42"), else "IN",
 * else (a coarse printer on a small plate) no labels; *label receives it. */
static int build_plate(const mask_map *mm, const d2_geom *g, const mask_opts *o,
                       const mask_run_report *rep, const mask_source *s, float *top, mesh **out,
                       char label[16], d2_err *e)
{
    plate_tops(mm, o, rep, top);
    mesh_plate p;
    memset(&p, 0, sizeof p);
    p.rows = p.cols = g->n;
    p.pitch_mm = g->pitch_mm;
    p.top_mm = top;
    p.gap_mm = g->gap_mm[0];
    p.holes = 0;
    mesh_frame_default(&p.frame, &o->printer);
    p.frame.thick_mm = rep->frame_thick_mm;
    p.printer = o->printer;
    char tries[3][16];
    snprintf(tries[0], sizeof tries[0], "IN%d", s->index);
    snprintf(tries[1], sizeof tries[1], "IN");
    tries[2][0] = 0;
    int rc = D2_EINPUT;
    *out = NULL;
    for (int t = s->index >= 0 ? 0 : 1; t < 3; t++) {
        p.label_top = tries[t][0] ? tries[t] : NULL;
        p.label_bottom = tries[t][0] ? "SRC" : NULL;
        rc = mesh_build_plate(&p, out, NULL, e);
        if (rc != D2_EINPUT || !strstr(e->msg, "does not fit")) break;
    }
    if (rc) return d2_err_prefix(e, "%s", s->name);
    snprintf(label, 16, "%s", p.label_top ? p.label_top : "");
    mesh_report r;
    if ((rc = mesh_check(*out, &r, e))) return rc;
    if (!r.closed || r.parts != 1)
        return d2_fail(e, D2_EIO, "%s: internal error: the mask mesh is not one closed solid (%zu "
                       "open, %zu non-manifold, %zu inconsistent edges, %zu parts)", s->name,
                       r.open_edges, r.nonmanifold_edges, r.inconsistent_edges, r.parts);
    return 0;
}

/* Binarises and processes source s into mm (allocated n x n). */
static int make_mask(const d2_geom *g, const mask_source *s, const mask_opts *o, int min_px,
                     mask_map *mm, mask_stats *st, d2_err *e)
{
    double per = s->index >= 0 ? 0 : MASK_MAX_IMAGE_PX_PER_PITCH;
    int rc = mask_check_image(g, s->img, s->rows, s->cols, o->threshold, per, s->origin, e);
    if (!rc) rc = mask_binarise(g, s->img, s->rows, s->cols, o->threshold, mm, s->origin, e);
    if (!rc)
        rc = o->mode == MASK_STENCIL ? mask_make_printable(mm, min_px, st, s->origin, e)
                                     : mask_make_carrier(mm, min_px, st, s->origin, e);
    return rc;
}

static int check_opts(const d2_geom *g, const mask_opts *o, int count, mask_run_report *rep,
                      d2_err *e)
{
    if (count < 1) return d2_fail(e, D2_EUSAGE, "no image to make a mask of");
    if (!(o->threshold > 0 && o->threshold < 1))
        return d2_fail(e, D2_EINPUT, "threshold %g: allowed (0, 1), a fraction of the brightest "
                       "pixel", o->threshold);
    if (o->mode < MASK_STENCIL || o->mode > MASK_CARRIER_RELIEF)
        return d2_fail(e, D2_EINPUT, "mask mode %d: allowed stencil, recess, relief", o->mode);
    if (!(o->wavelength_mm > 0) || !(o->index > 1) || !(o->kappa >= 0) || !isfinite(o->kappa))
        return d2_fail(e, D2_EINPUT, "material optics: wavelength %g mm, index %g, kappa %g: "
                       "need wavelength > 0, index > 1, kappa >= 0", o->wavelength_mm, o->index,
                       o->kappa);
    if (!(o->printer.min_feature_mm > 0) || !(o->printer.z_step_mm > 0))
        return d2_fail(e, D2_EINPUT, "printer %s: min_feature_mm %g and z_step_mm %g must be > 0",
                       o->printer.name, o->printer.min_feature_mm, o->printer.z_step_mm);
    if (o->thick_mm < 0 || o->depth_mm < 0 || !isfinite(o->thick_mm) || !isfinite(o->depth_mm))
        return d2_fail(e, D2_EINPUT, "plate thickness %g mm, depth %g mm: must be >= 0 (0: the "
                       "default)", o->thick_mm, o->depth_mm);
    double zs = o->printer.z_step_mm;
    int carrier = o->mode != MASK_STENCIL;
    rep->thick_mm = z_round(o->thick_mm > 0 ? o->thick_mm
                            : carrier       ? MASK_CARRIER_THICK_MM
                                            : MASK_STENCIL_THICK_MM, zs);
    rep->depth_mm = carrier ? z_round(o->depth_mm > 0 ? o->depth_mm : MASK_CARRIER_DEPTH_MM, zs)
                            : 0;
    if (o->mode == MASK_CARRIER_RECESS && rep->depth_mm > rep->thick_mm - zs * (1 - 1e-9))
        return d2_fail(e, D2_EINPUT, "carrier recess %.4g mm deep in a %.4g mm plate: the digit "
                       "would be cut through; the recess must leave at least one Z step (%.4g "
                       "mm) of material", rep->depth_mm, rep->thick_mm, zs);
    mesh_frame f;
    mesh_frame_default(&f, &o->printer);
    rep->frame_thick_mm = fmax(f.thick_mm, carrier ? 0 : rep->thick_mm);
    rep->min_px = mask_min_px(o->printer.min_feature_mm, g->pitch_mm);

    /* optics of the plate */
    mask_slab_optics(rep->thick_mm, o->index, o->kappa, o->wavelength_mm, &rep->opaque);
    double td = o->mode == MASK_CARRIER_RECESS ? rep->thick_mm - rep->depth_mm
                : o->mode == MASK_CARRIER_RELIEF ? rep->thick_mm + rep->depth_mm
                                                 : 0;
    mask_slab_optics(td, o->index, o->kappa, o->wavelength_mm, &rep->digit);
    double r = opt_fresnel_r(o->index);
    rep->thick_1pct_mm = o->kappa > 0 ? o->wavelength_mm / (4 * M_PI * o->kappa) *
                                            log((1 - r) * (1 - r) / 0.01)
                                      : -1;
    return 0;
}

static cJSON *energies_json(const float *det, int ndet)
{
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; a && k < ndet; k++) cJSON_AddItemToArray(a, cJSON_CreateNumber(sig6(det[k])));
    return a;
}

static cJSON *slab_json(const mask_slab *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "thick_mm", sig6(s->thick_mm));
    cJSON_AddNumberToObject(o, "phase_rad", sig6(s->phase_rad));
    cJSON_AddNumberToObject(o, "phase_mod_2pi_rad", sig6(fmod(s->phase_rad, 2 * M_PI)));
    cJSON_AddNumberToObject(o, "amplitude", sig6(s->amplitude));
    cJSON_AddNumberToObject(o, "power_transmission", sig6(s->power));
    return o;
}

static const char *const input_names[3] = {"original", "binarised", "mask"};

static cJSON *result_json(const mask_source *s, const mask_result *r, const mask_opts *o,
                          const d2_geom *g)
{
    const mask_stats *st = &r->st;
    double px_mm2 = g->pitch_mm * g->pitch_mm;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "name", s->name);
    cJSON_AddStringToObject(j, "source", s->origin);
    if (s->index >= 0) cJSON_AddNumberToObject(j, "test_index", s->index);
    else cJSON_AddNullToObject(j, "test_index");
    if (s->label >= 0) cJSON_AddNumberToObject(j, "label", s->label);
    else cJSON_AddNullToObject(j, "label");
    cJSON_AddStringToObject(j, "mode", mode_name(o->mode));
    cJSON_AddNumberToObject(j, "threshold", o->threshold);
    cJSON_AddNumberToObject(j, "min_feature_px", st->min_px);
    cJSON_AddNumberToObject(j, "open_px_binarised", (double)st->open0_px);
    cJSON_AddNumberToObject(j, "open_px", (double)st->open_px);
    cJSON_AddNumberToObject(j, "islands", st->islands);
    cJSON_AddNumberToObject(j, "island_px", st->island_px);
    cJSON_AddNumberToObject(j, "bridges", st->bridges);
    cJSON_AddNumberToObject(j, "bridge_px", (double)st->bridge_px);
    cJSON_AddNumberToObject(j, "narrow_px", (double)st->narrow_px);
    cJSON_AddNumberToObject(j, "pinch_px", (double)st->pinch_px);
    cJSON_AddNumberToObject(j, "blocked_px", (double)st->blocked_px);
    cJSON_AddNumberToObject(j, "blocked_mm2", sig6(st->blocked_px * px_mm2));
    cJSON_AddNumberToObject(j, "blocked_fraction",
                            sig6(st->open0_px ? (double)st->blocked_px / st->open0_px : 0));
    cJSON_AddNumberToObject(j, "open_mm2", sig6(st->open_px * px_mm2));
    cJSON_AddNumberToObject(j, "thin_opaque_px", (double)st->thin_opaque_px);
    cJSON_AddNumberToObject(j, "opaque_parts", st->parts);
    cJSON *pred = cJSON_AddObjectToObject(j, "predicted");
    cJSON *en = cJSON_AddObjectToObject(j, "energies");
    for (int k = 0; k < 3; k++) {
        cJSON_AddNumberToObject(pred, input_names[k], r->pred[k]);
        cJSON_AddItemToObject(en, input_names[k], energies_json(r->det[k], g->ndet));
    }
    if (s->label >= 0) {
        cJSON *c = cJSON_AddObjectToObject(j, "correct");
        for (int k = 0; k < 3; k++) cJSON_AddBoolToObject(c, input_names[k], r->pred[k] == s->label);
    }
    cJSON *f = cJSON_AddObjectToObject(j, "files");
    cJSON_AddStringToObject(f, "preview", r->png_file);
    if (r->mesh_file[0]) {
        cJSON_AddStringToObject(f, "mesh", r->mesh_file);
        cJSON_AddStringToObject(j, "frame_label", r->frame_label);
        cJSON_AddNumberToObject(j, "facets", (double)r->facets);
        cJSON_AddNumberToObject(j, "volume_mm3", sig6(r->volume_mm3));
    } else {
        cJSON_AddNullToObject(f, "mesh");
    }
    return j;
}

static cJSON *summary_json(const mask_run_report *rep, const mask_opts *o, const d2_geom *g,
                           const d2_model *m, int count)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "d2fab-masks");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "software", "d2fab " D2FAB_VERSION);
    cJSON_AddStringToObject(j, "model", o->model_path ? o->model_path : "");
    cJSON_AddStringToObject(j, "dataset", m->t.dataset);
    cJSON_AddNumberToObject(j, "count", count);
    cJSON_AddNumberToObject(j, "labelled", rep->labelled);
    /* which optical model read the masks (the accuracies below) */
    cJSON_AddItemToObject(j, "optics", optics_to_json(g));
    cJSON *acc = cJSON_AddObjectToObject(j, "accuracy");
    for (int k = 0; k < 3; k++) {
        if (rep->labelled)
            cJSON_AddNumberToObject(acc, input_names[k],
                                    sig6((double)rep->correct[k] / rep->labelled));
        else
            cJSON_AddNullToObject(acc, input_names[k]);
    }
    cJSON_AddStringToObject(j, "mode", mode_name(o->mode));
    cJSON_AddNumberToObject(j, "threshold", o->threshold);
    cJSON_AddNumberToObject(j, "pitch_mm", g->pitch_mm);
    cJSON_AddNumberToObject(j, "neurons", g->n);
    cJSON_AddNumberToObject(j, "aperture_mm", g->aperture_mm);
    cJSON_AddNumberToObject(j, "gap_to_layer1_mm", g->gap_mm[0]);
    cJSON_AddStringToObject(j, "printer", o->printer_name ? o->printer_name : o->printer.name);
    cJSON_AddNumberToObject(j, "min_feature_mm", o->printer.min_feature_mm);
    cJSON_AddNumberToObject(j, "min_feature_px", rep->min_px);
    cJSON_AddNumberToObject(j, "z_step_mm", o->printer.z_step_mm);
    cJSON *pl = cJSON_AddObjectToObject(j, "plate");
    cJSON_AddNumberToObject(pl, "thick_mm", sig6(rep->thick_mm));
    cJSON_AddNumberToObject(pl, "frame_thick_mm", sig6(rep->frame_thick_mm));
    if (o->mode != MASK_STENCIL) cJSON_AddNumberToObject(pl, "depth_mm", sig6(rep->depth_mm));
    cJSON *mat = cJSON_AddObjectToObject(j, "material");
    cJSON_AddStringToObject(mat, "name", o->material_name ? o->material_name : "");
    cJSON_AddNumberToObject(mat, "index", sig6(o->index));
    cJSON_AddNumberToObject(mat, "kappa", sig6(o->kappa));
    cJSON_AddNumberToObject(j, "frequency_thz", sig6(opt_frequency_thz(o->wavelength_mm)));
    cJSON_AddNumberToObject(j, "wavelength_mm", sig6(o->wavelength_mm));
    if (o->mode == MASK_STENCIL) {
        cJSON *op = slab_json(&rep->opaque);
        cJSON_AddItemToObject(j, "opaque_leak", op);
        if (rep->thick_1pct_mm > 0)
            cJSON_AddNumberToObject(op, "thick_for_1pct_power_mm", sig6(rep->thick_1pct_mm));
    } else {
        cJSON *c = cJSON_AddObjectToObject(j, "carrier");
        cJSON_AddItemToObject(c, "digit", slab_json(&rep->digit));
        cJSON_AddItemToObject(c, "outside_digit", slab_json(&rep->opaque));
        cJSON_AddStringToObject(c, "note", "the digit transmits with a uniform phase and "
                                "amplitude (digit.*), which leaves the detector read-out "
                                "unchanged; the rest of the plate must be covered with metal "
                                "foil");
    }
    cJSON_AddNumberToObject(j, "islands", rep->islands);
    cJSON_AddNumberToObject(j, "bridges", rep->bridges);
    cJSON_AddNumberToObject(j, "blocked_px", (double)rep->blocked_px);
    cJSON_AddNumberToObject(j, "blocked_mm2", sig6(rep->blocked_px * g->pitch_mm * g->pitch_mm));
    cJSON_AddStringToObject(j, "masks_file", "masks.jsonl");
    cJSON *w = cJSON_AddArrayToObject(j, "warnings");
    for (int i = 0; i < rep->nwarn; i++) cJSON_AddItemToArray(w, cJSON_CreateString(rep->warn[i]));
    return j;
}

/* Files written by this run, removed again on a failure. */
typedef struct written {
    char (*path)[1024];
    int n, cap;
} written;

static int note_written(written *w, const char *path, d2_err *e)
{
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        char(*np)[1024] = realloc(w->path, (size_t)cap * sizeof *np);
        if (!np) return d2_fail(e, D2_EIO, "out of memory (list of written files)");
        w->path = np;
        w->cap = cap;
    }
    snprintf(w->path[w->n++], sizeof w->path[0], "%s", path);
    return 0;
}

/* A previous run's masks (d2fab's own names, mask_*.png and mask_* meshes)
 * that this run did not write: removed before the new summary.json, so two
 * runs never share a folder. */
static int stale_mask_file(const char *name, void *ctx)
{
    static const char *const ext[] = {".png", ".stl", ".3mf", ".obj", ".ply", ".glb"};
    const written *w = ctx;
    const char *dot = strrchr(name, '.');
    int own = 0;
    if (strncmp(name, "mask_", 5) || !dot) return 0;
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) own |= !strcmp(dot, ext[i]);
    if (!own) return 0;
    for (int i = 0; i < w->n; i++) {
        const char *b = strrchr(w->path[i], '/');
        if (!strcmp(b ? b + 1 : w->path[i], name)) return 0;
    }
    return 1;
}

/* What mask_run works with: the buffers, the network, the files written. */
typedef struct mask_job {
    const d2_model *m;
    const mask_source *src;
    int count;
    const mask_opts *o;
    mask_result *res;
    mask_run_report *rep;
    mask_map mm;
    float *in, *top;
    d2_net *net;
    mesh *msh;
    written wr;
} mask_job;

/* Pass 1: checks, processes and reads every source through the network
 * (original, binarised, mask); builds the first plate to size the disk
 * space. Writes nothing. */
static int mask_read_all(mask_job *j, const char *out_dir, d2_err *e)
{
    const d2_geom *g = &j->m->g;
    const mask_opts *o = j->o;
    mask_run_report *rep = j->rep;
    size_t n = (size_t)g->n * g->n;
    long thin = 0;
    int thin_masks = 0, rc;
    for (int i = 0; i < j->count; i++) {
        const mask_source *s = j->src + i;
        mask_result *r = j->res + i;
        memset(r, 0, sizeof *r);
        if ((rc = make_mask(g, s, o, rep->min_px, &j->mm, &r->st, e))) return rc;
        for (int k = 0; k < 3; k++) {
            if (k == 0) {
                memcpy(j->in, j->mm.amp, n * sizeof *j->in);
            } else {
                const uint8_t *op = k == 1 ? j->mm.open0 : j->mm.open;
                for (size_t p = 0; p < n; p++) j->in[p] = op[p] ? 1.0f : 0.0f;
            }
            net_infer(j->net, j->in, r->det[k], NULL, 0);
            r->pred[k] = det_predict(g, r->det[k]);
        }
        if (s->label >= 0) {
            rep->labelled++;
            for (int k = 0; k < 3; k++) rep->correct[k] += r->pred[k] == s->label;
        }
        rep->islands += r->st.islands;
        rep->bridges += r->st.bridges;
        rep->blocked_px += r->st.blocked_px;
        if (r->st.thin_opaque_px > 0) {
            thin += r->st.thin_opaque_px;
            thin_masks++;
        }
        snprintf(r->png_file, sizeof r->png_file, "%.80s.png", s->name);
        if (o->write_mesh)
            snprintf(r->mesh_file, sizeof r->mesh_file, "%.80s.%s", s->name,
                     mesh_format_ext(o->format));
        if (i == 0 && o->write_mesh) {
            if ((rc = build_plate(&j->mm, g, o, rep, s, j->top, &j->msh, r->frame_label, e)))
                return rc;
            /* Room on the disk for `count` plates like this one (the frame
             * makes most of each), refused before anything is written. */
            double per = (double)mesh_facets(j->msh) * (o->format == MESH_STL ? 50 : 80) + 2e4;
            mesh_free(j->msh);
            j->msh = NULL;
            if ((rc = d2_check_space(out_dir, per * j->count, "the masks", e))) return rc;
            if (!r->frame_label[0])
                warn(rep, "the frame labels (IN, SRC) do not fit the frame band at this "
                     "printer's font size: the masks are not engraved");
        }
    }
    rep->count = j->count;
    if (o->mode == MASK_STENCIL && rep->opaque.power > 0.01) {
        if (rep->thick_1pct_mm > 0)
            warn(rep, "the opaque part (%.3g mm of %s) passes %.1f %% of the power at %.4g THz: "
                 "cover its source side with metal foil, or print it at least %.1f mm thick "
                 "(--thick-mm) for 1 %%", rep->thick_mm, o->material_name ? o->material_name : "material",
                 100 * rep->opaque.power, opt_frequency_thz(o->wavelength_mm), rep->thick_1pct_mm);
        else
            warn(rep, "the material does not absorb (kappa 0): the opaque part passes %.1f %% of "
                 "the power; cover its source side with metal foil", 100 * rep->opaque.power);
    }
    if (thin)
        warn(rep, "%ld opaque pixels in %d masks are walls thinner than the printer's minimum "
             "feature (%d pixels): they may not print", thin, thin_masks, rep->min_px);
    return 0;
}

/* Pass 2: every preview and plate, noted in j->wr as it is written. */
static int mask_write_all(mask_job *j, const char *out_dir, d2_err *e)
{
    const d2_geom *g = &j->m->g;
    const mask_opts *o = j->o;
    char path[1024];
    int rc;
    /* The index goes first and comes back last (as export.json). */
    if ((rc = d2_remove_index(out_dir, "summary.json", e))) return rc;
    for (int i = 0; i < j->count; i++) {
        const mask_source *s = j->src + i;
        mask_result *r = j->res + i;
        mask_stats st;
        if ((rc = make_mask(g, s, o, j->rep->min_px, &j->mm, &st, e))) return rc;
        if ((rc = d2_path_join(path, sizeof path, out_dir, r->png_file, e)) ||
            (rc = mask_write_preview(path, &j->mm, e)) || (rc = note_written(&j->wr, path, e)))
            return rc;
        if (!o->write_mesh) continue;
        if ((rc = build_plate(&j->mm, g, o, j->rep, s, j->top, &j->msh, r->frame_label, e)))
            return rc;
        mesh_part part = {j->msh, s->name, {0, 0, 0}};
        if ((rc = d2_path_join(path, sizeof path, out_dir, r->mesh_file, e)) ||
            (rc = mesh_write(path, o->format, &part, 1, &r->bytes, e)) ||
            (rc = note_written(&j->wr, path, e)))
            return rc;
        r->facets = mesh_facets(j->msh);
        r->volume_mm3 = mesh_volume_mm3(j->msh);
        j->rep->bytes += r->bytes;
        mesh_free(j->msh);
        j->msh = NULL;
    }
    return 0;
}

/* masks.jsonl (one line per source) and summary.json, noted in j->wr. */
static int mask_write_json(mask_job *j, const char *out_dir, d2_err *e)
{
    const d2_geom *g = &j->m->g;
    char path[1024], *text = NULL;
    cJSON *sum = NULL;
    d2_out *jl = NULL;
    int rc;
    if ((rc = d2_path_join(path, sizeof path, out_dir, "masks.jsonl", e))) return rc;
    if (!(jl = d2_out_open(path, e))) return D2_EIO;
    for (int i = 0; i < j->count; i++) {
        cJSON *js = result_json(j->src + i, j->res + i, j->o, g);
        if (js && (rc = cfg_json_complete(path, e))) {
            cJSON_Delete(js);
            goto done;
        }
        text = js ? cJSON_PrintUnformatted(js) : NULL;
        cJSON_Delete(js);
        if (!text) {
            rc = d2_fail(e, D2_EIO, "out of memory (masks.jsonl)");
            goto done;
        }
        fprintf(d2_out_fp(jl), "%s\n", text);
        free(text);
        text = NULL;
    }
    rc = d2_out_commit(jl, e);
    jl = NULL;
    if (rc || (rc = note_written(&j->wr, path, e))) goto done;
    if ((rc = d2_dir_clear(out_dir, 0, stale_mask_file, &j->wr, "previous run's mask", e)))
        goto done;
    if ((rc = d2_path_join(path, sizeof path, out_dir, "summary.json", e))) goto done;
    if (!(sum = summary_json(j->rep, j->o, g, j->m, j->count))) {
        rc = d2_fail(e, D2_EIO, "out of memory (summary.json)");
        goto done;
    }
    rc = cfg_write(path, sum, e);
done:
    d2_out_abort(jl);
    free(text);
    cJSON_Delete(sum);
    return rc;
}

int mask_run(const d2_model *m, const mask_source *src, int count, const mask_opts *o,
             const char *out_dir, mask_result *res, mask_run_report *rep, d2_err *e)
{
    const d2_geom *g = &m->g;
    memset(rep, 0, sizeof *rep);
    int rc = check_opts(g, o, count, rep, e);
    if (rc) return rc;
    for (int i = 0; i < count; i++)
        for (int k = 0; k < i; k++)
            if (!strcmp(src[i].name, src[k].name))
                return d2_fail(e, D2_EINPUT, "%s and %s would both be written as %s: give the "
                               "images different names", src[k].origin, src[i].origin,
                               src[i].name);

    size_t n = (size_t)g->n * g->n;
    mask_job j = {m, src, count, o, res, rep};
    j.in = d2_malloc(n * sizeof *j.in, "mask input", e);
    j.top = d2_malloc(n * sizeof *j.top, "mask plate", e);
    if (!j.in || !j.top || (rc = mask_map_alloc(&j.mm, g->n, g->n, e))) {
        rc = D2_EIO;
        goto done;
    }
    if (!(j.net = net_new(g, 1, e))) {
        rc = e->code ? e->code : D2_EIO;
        goto done;
    }
    net_set_model(j.net, m);
    if ((rc = mask_read_all(&j, out_dir, e))) goto done;
    if ((rc = mask_write_all(&j, out_dir, e)) || (rc = mask_write_json(&j, out_dir, e)))
        for (int i = 0; i < j.wr.n; i++) unlink(j.wr.path[i]);
done:
    free(j.wr.path);
    mesh_free(j.msh);
    net_free(j.net);
    mask_map_free(&j.mm);
    free(j.in);
    free(j.top);
    return rc;
}
