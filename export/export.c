/* The export stage: checks, per-layer heights, the files and export.json. */
#include "export/export.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "core/npy.h"

#define TWO_PI (2.0 * M_PI)

static const char *const objective_note =
    "Heights h = base + w P / (2 pi), P = wavelength / (index - 1), w = (phase + offset) mod "
    "2 pi, rounded to multiples of z_step_mm (or phase first rounded to 'levels' per 2 pi). "
    "Offset 'auto' minimises E(c) = mean(w) / (2 pi) + jump_weight * (neighbour pairs split "
    "by the wrap) / (neighbour pairs), exactly over all breakpoints. Amplitude "
    "exp(-2 pi kappa h / wavelength) with h the whole thickness; stack power transmission = "
    "product over layers of mean(amplitude^2) times (1 - R)^2 per plate, R = ((n - 1) / "
    "(n + 1))^2, multiple reflections ignored. The build-volume check uses the plate side "
    "n * pitch + 2 x frame_width_mm, the frame band the mesh stage derives from the printer's "
    "minimum feature and pin clearance (10 mm for resin and PolyJet printers, 14.5 mm for the "
    "Prusa MK4; d2fab mesh --frame-mm changes it), and the tallest part (the largest gap "
    "after a layer + the pin length) against the build height. Print time: layer model, the "
    "tallest part in Z steps times the profile's layer_time_s (or Z step / "
    "z_speed_mm_per_h).";

void export_opts_default(export_opts *o)
{
    memset(o, 0, sizeof *o);
    o->index = NAN;
    o->kappa = NAN;
    o->base_mm = NAN;
    o->levels = -1;
    o->offset_mode = EXP_OFFSET_DEFAULT;
    o->jump_weight = 1.0;
}

/* A warning for the user, kept in the report. */
#define warn(r, ...) \
    d2_note((r)->warn[0], sizeof (r)->warn[0], EXP_MAX_WARN, &(r)->nwarn, __VA_ARGS__)

void export_report_free(export_report *r)
{
    if (!r) return;
    printer_free(&r->printer);
    material_free(&r->material);
}

/* Resolves wavelength, material constants, base, levels and offset mode into
 * r->p, checking each and naming the option or file at fault. */
static int resolve_params(const d2_model *m, const export_opts *o, export_report *r, d2_err *e)
{
    exp_params *p = &r->p;
    const d2_geom *g = &m->g;
    if (o->frequency_thz != 0 && o->wavelength_mm != 0)
        return d2_fail(e, D2_EUSAGE, "give --frequency-thz or --wavelength-mm, not both");
    if (o->frequency_thz != 0) {
        if (!(isfinite(o->frequency_thz) && o->frequency_thz > 0))
            return d2_fail(e, D2_EINPUT, "frequency %g THz: must be > 0", o->frequency_thz);
        p->wavelength_mm = opt_wavelength_mm(o->frequency_thz);
    } else if (o->wavelength_mm != 0) {
        if (!(isfinite(o->wavelength_mm) && o->wavelength_mm > 0))
            return d2_fail(e, D2_EINPUT, "wavelength %g mm: must be > 0", o->wavelength_mm);
        p->wavelength_mm = o->wavelength_mm;
    } else {
        p->wavelength_mm = g->wavelength_mm;
    }
    if (!(isfinite(p->wavelength_mm) && p->wavelength_mm > 0))
        return d2_fail(e, D2_EINPUT, "wavelength %g mm: must be > 0", p->wavelength_mm);
    r->frequency_thz = opt_frequency_thz(p->wavelength_mm);
    if (fabs(p->wavelength_mm - g->wavelength_mm) > 1e-3 * g->wavelength_mm)
        warn(r, "exporting for %.6g mm (%.6g THz) but the model was designed for %.6g mm: the "
             "diffraction between layers differs, expect lower accuracy", p->wavelength_mm,
             r->frequency_thz, g->wavelength_mm);

    double n_idx, kap;
    if (material_at(&r->material, r->frequency_thz, &n_idx, &kap)) {
        const material_point *lo = &r->material.pt[0];
        const material_point *hi = &r->material.pt[r->material.npoints - 1];
        char range[64];
        if (r->material.npoints == 1)
            snprintf(range, sizeof range, "%.4g THz", lo->frequency_thz);
        else
            snprintf(range, sizeof range, "%.4g-%.4g THz", lo->frequency_thz, hi->frequency_thz);
        warn(r, "material '%s' is characterised at %s only; using n = %.5g, kappa = %.4g from "
             "%.4g THz at %.4g THz (add points or pass --index and --kappa)", r->material.name,
             range, n_idx, kap, r->frequency_thz < lo->frequency_thz ? lo->frequency_thz
                                                                      : hi->frequency_thz,
             r->frequency_thz);
    }
    if (!isnan(o->index)) n_idx = o->index;
    if (!isnan(o->kappa)) kap = o->kappa;
    if (!(isfinite(n_idx) && n_idx > 1 && n_idx <= 10))
        return d2_fail(e, D2_EINPUT, "refractive index %g (--index): must be in (1, 10]; n <= 1 "
                       "gives no phase delay in air", n_idx);
    if (!(isfinite(kap) && kap >= 0 && kap <= 10))
        return d2_fail(e, D2_EINPUT, "extinction coefficient %g (--kappa): must be in [0, 10]",
                       kap);
    p->index = n_idx;
    p->kappa = kap;
    if (g->coupled && fabs(g->index - n_idx) > 1e-4)
        warn(r, "the model was trained coupled to index %.5g but is exported with %.5g: the "
             "absorption pattern differs from the trained one", g->index, n_idx);

    /* One base from training to print: the model's own unless told otherwise. */
    p->base_mm = !isnan(o->base_mm) ? o->base_mm : g->base_mm;
    if (!(isfinite(p->base_mm) && p->base_mm >= 0 && p->base_mm <= 1000))
        return d2_fail(e, D2_EINPUT, "base %g mm (--base-mm): must be in [0, 1000]", p->base_mm);
    p->z_step_mm = r->printer.z_step_mm;
    /* Up to the next whole step: the plate is never thinner than asked. */
    double bq = ceil(p->base_mm / p->z_step_mm - 1e-9) * p->z_step_mm;
    if (fabs(bq - p->base_mm) > 1e-9) {
        /* Only news when the user or the trained model chose the base. */
        if (!isnan(o->base_mm) || g->coupled || g->base_mm > 0)
            warn(r, "base %.6g mm rounded up to %.6g mm, a whole number of %.4g mm Z steps",
                 p->base_mm, bq, p->z_step_mm);
        p->base_mm = bq;
    }

    p->levels = o->levels >= 0 ? o->levels : (m->t.quant_levels >= 2 ? m->t.quant_levels : 0);
    if (p->levels != 0 && (p->levels < 2 || p->levels > EXP_MAX_LEVELS))
        return d2_fail(e, D2_EINPUT, "levels %d (--levels): must be 0 (Z step) or 2..%d",
                       p->levels, EXP_MAX_LEVELS);
    if (o->levels < 0 && p->levels)
        warn(r, "quantising to the %d phase levels per 2 pi the model was trained with",
             p->levels);

    p->jump_weight = o->jump_weight;
    if (o->offset_mode == EXP_OFFSET_FIXED) {
        p->offset_auto = 0;
        p->offset_rad = o->offset_rad;
    } else if (o->offset_mode == EXP_OFFSET_AUTO || (!g->coupled && g->optics != D2_OPTICS_THICK)) {
        p->offset_auto = 1;
        if (g->optics == D2_OPTICS_THICK)
            warn(r, "the model was trained through thick plates with the plain wrap; a phase "
                 "offset moves pillars by a whole 2 pi relief, which the thick model does not "
                 "see as the same plate");
        else if (g->coupled)
            warn(r, "the model was trained with absorption coupled to the plain wrap; a phase "
                 "offset changes the amplitude pattern it was trained with");
    } else {
        p->offset_auto = 0;
        p->offset_rad = 0;
        warn(r, "phase offset 0 (plain wrap): the model was trained %s it (--phase-offset auto "
             "overrides)", g->optics == D2_OPTICS_THICK ? "through thick plates of the heights of"
                                                        : "with absorption coupled to");
    }
    return exp_params_check(p, e);
}

/* A 2 pi relief thinner than one Z step prints as flat plates: the
 * frequency (or wavelength) is then physically absurd for this printer,
 * usually a unit mistake (400 typed for 400 GHz). An error, not a warning. */
static int check_relief(const export_report *r, d2_err *e)
{
    const exp_params *p = &r->p;
    if (!(p->z_step_mm > 0) || r->period_mm >= p->z_step_mm) return 0;
    double f = opt_frequency_thz(p->wavelength_mm);
    /* period = wavelength / (n - 1) >= k Z steps <=> f <= c / ((n - 1) k z) */
    double f1 = OPT_C_MM_THZ / ((p->index - 1) * p->z_step_mm);
    return d2_fail(e, D2_EINPUT,
                   "frequency %.6g THz (wavelength %.4g mm): a 2 pi phase step needs %.3g mm of "
                   "relief in %s (n = %.4g), thinner than one %.4g mm Z step of the %s, so every "
                   "plate would print flat. With this printer and material the frequency must "
                   "be at most %.3g THz (one Z step per 2 pi), and below %.3g THz for 8 or more "
                   "steps; the unit is THz (400 GHz is 0.4)",
                   f, p->wavelength_mm, r->period_mm, r->material.name, p->index, p->z_step_mm,
                   r->printer.name, f1, f1 / 8);
}

/* Pitch against the printer's lateral resolution and the plate against the
 * build volume: errors, or warnings with --force. */
static int check_printer(const export_opts *o, export_report *r, d2_err *e)
{
    const printer_profile *pr = &r->printer;
    char msg[768];
    if (r->pitch_mm < 2 * pr->xy_resolution_mm || r->pitch_mm < pr->min_feature_mm) {
        snprintf(msg, sizeof msg, "pitch %.4g mm is below what %s can hold (2 x XY resolution = "
                 "%.4g mm, minimum feature %.4g mm, from %.300s)", r->pitch_mm, pr->display_name,
                 2 * pr->xy_resolution_mm, pr->min_feature_mm, pr->path);
        if (!o->force)
            return d2_fail(e, D2_EINPUT, "%s; choose another printer, or --force to export "
                           "anyway", msg);
        warn(r, "%s (--force)", msg);
    }
    const double *b = pr->build_mm;
    if (r->plate_side_mm > b[0] || r->plate_side_mm > b[1] || r->print_height_mm > b[2]) {
        snprintf(msg, sizeof msg, "plate %.1f x %.1f x %.2f mm (%d x %.4g mm pixels plus the "
                 "%.4g mm frame band d2fab mesh builds for this printer each side; height: the "
                 "tallest part with its posts and pins) does not fit the build volume of %s, "
                 "%.0f x %.0f x %.0f mm", r->plate_side_mm, r->plate_side_mm,
                 r->print_height_mm, r->n, r->pitch_mm, r->frame.width_mm, pr->display_name,
                 b[0], b[1], b[2]);
        if (!o->force)
            return d2_fail(e, D2_EINPUT, "%s; choose a larger printer, or --force to export "
                           "anyway", msg);
        warn(r, "%s (--force)", msg);
    }
    return 0;
}

static cJSON *num(double v)
{
    return cJSON_CreateNumber(v);
}

/* Rounds for the report so the JSON reads well (float32 heights). */
static double r6(double v)
{
    if (!isfinite(v) || v == 0) return v;
    double s = pow(10, 6 - (int)ceil(log10(fabs(v))));
    return nearbyint(v * s) / s;
}

static cJSON *model_section_json(const export_source *src)
{
    static const char *const secs[] = {"geometry", "input", "detector", "material", "optics"};
    cJSON *full = src->model_sections ? NULL : config_to_json(&src->model->g, &src->model->t);
    const cJSON *from = src->model_sections ? src->model_sections : full;
    cJSON *out = cJSON_CreateObject();
    if (!from || !out) goto fail;
    for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(from, secs[i]);
        if (!s) continue;
        cJSON *d = cJSON_Duplicate(s, 1);
        if (!d || !cJSON_AddItemToObject(out, secs[i], d)) {
            cJSON_Delete(d);
            goto fail;
        }
    }
    cJSON_Delete(full);
    return out;
fail:
    cJSON_Delete(full);
    cJSON_Delete(out);
    return NULL;
}

/* Everything of export.json; NULL when out of memory. */
static cJSON *report_json(const export_source *src, const export_opts *o, const export_report *r,
                          const double *png_scale)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *model = model_section_json(src);
    if (!root || !model) {
        cJSON_Delete(root);
        cJSON_Delete(model);
        return NULL;
    }
    int ok = 1;
    ok &= cJSON_AddStringToObject(root, "format", "d2fab-export") != NULL;
    ok &= cJSON_AddNumberToObject(root, "version", 1) != NULL;
    ok &= cJSON_AddStringToObject(root, "software", "d2fab " D2FAB_VERSION) != NULL;
    ok &= cJSON_AddItemToObject(root, "model", model);
    cJSON *source = cJSON_AddObjectToObject(root, "source");
    ok &= source != NULL;
    if (source) {
        ok &= cJSON_AddStringToObject(source, "kind", src->kind ? src->kind : "model") != NULL;
        ok &= cJSON_AddStringToObject(source, "path", src->path ? src->path : "") != NULL;
    }
    ok &= cJSON_AddNumberToObject(root, "frequency_thz", r6(r->frequency_thz)) != NULL;
    ok &= cJSON_AddNumberToObject(root, "wavelength_mm", r->p.wavelength_mm) != NULL;
    ok &= cJSON_AddNumberToObject(root, "pitch_mm", r->pitch_mm) != NULL;
    ok &= cJSON_AddNumberToObject(root, "neurons", r->n) != NULL;
    ok &= cJSON_AddNumberToObject(root, "layers", r->layers) != NULL;
    cJSON *mat = cJSON_AddObjectToObject(root, "material");
    ok &= mat != NULL;
    if (mat) {
        ok &= cJSON_AddStringToObject(mat, "name", r->material.name) != NULL;
        ok &= cJSON_AddStringToObject(mat, "display_name", r->material.display_name) != NULL;
        ok &= cJSON_AddNumberToObject(mat, "index", r->p.index) != NULL;
        ok &= cJSON_AddNumberToObject(mat, "kappa", r->p.kappa) != NULL;
    }
    cJSON *pr = cJSON_Duplicate(r->printer.json, 1);
    ok &= pr && cJSON_AddItemToObject(root, "printer", pr);
    ok &= cJSON_AddNumberToObject(root, "base_mm", r6(r->p.base_mm)) != NULL;
    ok &= cJSON_AddNumberToObject(root, "z_step_mm", r->p.z_step_mm) != NULL;
    ok &= cJSON_AddNumberToObject(root, "levels", r->p.levels) != NULL;
    if (o->offset_mode == EXP_OFFSET_FIXED || !r->p.offset_auto)
        ok &= cJSON_AddNumberToObject(root, "phase_offset", r->p.offset_rad) != NULL;
    else
        ok &= cJSON_AddStringToObject(root, "phase_offset", "auto") != NULL;
    ok &= cJSON_AddNumberToObject(root, "jump_weight", r->p.jump_weight) != NULL;
    ok &= cJSON_AddNumberToObject(root, "period_mm", r6(r->period_mm)) != NULL;
    ok &= cJSON_AddNumberToObject(root, "frame_width_mm", r->frame.width_mm) != NULL;
    ok &= cJSON_AddNumberToObject(root, "plate_side_mm", r6(r->plate_side_mm)) != NULL;

    cJSON *files = cJSON_AddArrayToObject(root, "layer_files");
    ok &= files != NULL;
    for (int k = 0; files && k < r->layers; k++) {
        const exp_layer_stats *s = &r->layer[k];
        cJSON *l = cJSON_CreateObject();
        char name[64];
        ok &= l && cJSON_AddItemToArray(files, l);
        if (!l) break;
        ok &= cJSON_AddNumberToObject(l, "index", k + 1) != NULL;
        snprintf(name, sizeof name, "layer%d_height.npy", k + 1);
        ok &= cJSON_AddStringToObject(l, "heights_npy", name) != NULL;
        snprintf(name, sizeof name, "layer%d_height.png", k + 1);
        ok &= cJSON_AddStringToObject(l, "heights_png", name) != NULL;
        ok &= cJSON_AddNumberToObject(l, "png_scale_mm", png_scale[k]) != NULL;
        snprintf(name, sizeof name, "layer%d_preview.png", k + 1);
        ok &= cJSON_AddStringToObject(l, "preview_png", name) != NULL;
        ok &= cJSON_AddNumberToObject(l, "min_mm", r6(s->min_mm)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "max_mm", r6(s->max_mm)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "mean_mm", r6(s->mean_mm)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "volume_mm3", r6(s->volume_mm3)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "phase_offset_rad", r6(s->offset_rad)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "phase_rms_error_rad", r6(s->phase_rms_error_rad)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "phase_max_error_rad", r6(s->phase_max_error_rad)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "amp_mean", r6(s->amp_mean)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "amp_min", r6(s->amp_min)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "amp_max", r6(s->amp_max)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "power_mean", r6(s->power_mean)) != NULL;
        ok &= cJSON_AddNumberToObject(l, "wrap_jumps", (double)s->wrap_jumps) != NULL;
        ok &= cJSON_AddNumberToObject(l, "wrap_jumps_plain", (double)s->wrap_jumps_plain) != NULL;
        ok &= cJSON_AddNumberToObject(l, "volume_plain_mm3", r6(s->volume_plain_mm3)) != NULL;
    }
    cJSON *st = cJSON_AddObjectToObject(root, "stack");
    ok &= st != NULL;
    if (st) {
        ok &= cJSON_AddNumberToObject(st, "power_transmission", r6(r->power_transmission)) != NULL;
        ok &= cJSON_AddNumberToObject(st, "fresnel_loss_per_surface", r6(r->fresnel_r)) != NULL;
        ok &= cJSON_AddNumberToObject(st, "volume_mm3", r6(r->volume_mm3)) != NULL;
        cJSON *t = r->print_time_h >= 0 ? num(r6(r->print_time_h)) : cJSON_CreateNull();
        ok &= t && cJSON_AddItemToObject(st, "print_time_h", t);
        ok &= cJSON_AddStringToObject(st, "print_time_method", r->print_time_how) != NULL;
        ok &= cJSON_AddNumberToObject(st, "print_height_mm", r6(r->print_height_mm)) != NULL;
    }
    cJSON *w = cJSON_AddArrayToObject(root, "warnings");
    ok &= w != NULL;
    for (int i = 0; w && i < r->nwarn; i++) {
        cJSON *s = cJSON_CreateString(r->warn[i]);
        ok &= s && cJSON_AddItemToArray(w, s);
    }
    ok &= cJSON_AddStringToObject(root, "notes", objective_note) != NULL;
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* Removes the files this run has put in place (after a failed write). */
static void remove_written(char (*written)[PROFILE_PATH_MAX], int nw)
{
    for (int i = 0; i < nw; i++) unlink(written[i]);
}

static int write_layer(const char *dir, int k, int n, const float *h, double scale, double lo,
                       double hi, char (*written)[PROFILE_PATH_MAX], int *nw, d2_err *e)
{
    size_t cnt = (size_t)n * (size_t)n, shape[2] = {(size_t)n, (size_t)n};
    char name[64];
    int rc;
    snprintf(name, sizeof name, "layer%d_height.npy", k + 1);
    if ((rc = d2_path_join(written[*nw], PROFILE_PATH_MAX, dir, name, e))) return rc;
    if ((rc = npy_write(written[*nw], NPY_F32, 2, shape, h, e))) return rc;
    (*nw)++;

    uint16_t *px = d2_malloc(cnt * sizeof *px, "16-bit height image", e);
    if (!px) return D2_EIO;
    for (size_t i = 0; i < cnt; i++) {
        double v = nearbyint(h[i] / scale);
        px[i] = (uint16_t)(v < 0 ? 0 : v > 65535 ? 65535 : v);
    }
    snprintf(name, sizeof name, "layer%d_height.png", k + 1);
    rc = d2_path_join(written[*nw], PROFILE_PATH_MAX, dir, name, e);
    if (!rc) rc = img_write_gray16(written[*nw], n, n, px, e);
    free(px);
    if (rc) return rc;
    (*nw)++;

    /* A pixel as a block of about 600 / n screen pixels, at most 16. */
    int block = (600 + n - 1) / n;
    if (block > 16) block = 16;
    if (block < 1) block = 1;
    snprintf(name, sizeof name, "layer%d_preview.png", k + 1);
    if ((rc = d2_path_join(written[*nw], PROFILE_PATH_MAX, dir, name, e))) return rc;
    if ((rc = img_write_colormap(written[*nw], n, n, h, (float)lo, (float)hi, CMAP_VIRIDIS, block,
                                 e)))
        return rc;
    (*nw)++;
    return 0;
}

/* What a new export replaces: its own layer files beyond the new layer count
 * and any file the previous export.json named that the new set does not
 * hold, so two exports never share a folder. */
typedef struct stale_export {
    int layers;          /* the new export's */
    int nold;
    char old[3 * D2_MAX_LAYERS][64];
} stale_export;

/* k when name is layerK_height.npy, layerK_height.png or layerK_preview.png;
 * else 0. */
static int export_layer_file(const char *name)
{
    static const char *const suf[] = {"_height.npy", "_height.png", "_preview.png"};
    if (strncmp(name, "layer", 5) || name[5] < '1' || name[5] > '9') return 0;
    char *end;
    long k = strtol(name + 5, &end, 10);
    for (size_t i = 0; i < sizeof suf / sizeof *suf; i++)
        if (!strcmp(end, suf[i])) return k > 0 && k < 1000000 ? (int)k : 0;
    return 0;
}

static int stale_export_file(const char *name, void *ctx)
{
    const stale_export *s = ctx;
    int k = export_layer_file(name);
    if (k) return k > s->layers;
    for (int i = 0; i < s->nold; i++)
        if (!strcmp(name, s->old[i])) return 1;
    return 0;
}

/* The plain file names a previous d2fab export.json lists. */
static void old_export_files(const char *json_path, stale_export *s)
{
    static const char *const keys[] = {"heights_npy", "heights_png", "preview_png"};
    cJSON *root = NULL;
    if (cfg_load(json_path, &root, NULL)) return;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format"), *it;
    if (cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "d2fab-export"))
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, "layer_files"))
            for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
                const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, keys[i]);
                if (s->nold < (int)(sizeof s->old / sizeof *s->old) && cJSON_IsString(f) &&
                    f->valuestring[0] != '.' && !strchr(f->valuestring, '/') &&
                    strlen(f->valuestring) < sizeof s->old[0])
                    strcpy(s->old[s->nold++], f->valuestring);
            }
    cJSON_Delete(root);
}

int export_stack(const export_source *src, const export_opts *o, const char *out_dir,
                 export_report *r, d2_err *e)
{
    memset(r, 0, sizeof *r);
    r->print_time_h = -1;
    const d2_model *m = src->model;
    float *h[D2_MAX_LAYERS] = {0};
    char (*written)[PROFILE_PATH_MAX] = NULL;
    cJSON *json = NULL;
    int nw = 0, rc;

    if (!out_dir || !out_dir[0]) return d2_fail(e, D2_EUSAGE, "no output folder (--out DIR)");
    /* eval and tolerance read a folder with export.json as an export: keep
     * exports out of model folders. */
    char probe[PROFILE_PATH_MAX];
    if (d2_path_join(probe, sizeof probe, out_dir, "model.json", NULL) == 0 &&
        access(probe, F_OK) == 0)
        return d2_fail(e, D2_EUSAGE, "%s holds a model (model.json): write the export to a "
                       "folder of its own", out_dir);
    if (m->g.layers < 1 || m->g.layers > D2_MAX_LAYERS || m->g.n < 1 || m->g.n > D2_MAX_N)
        return d2_fail(e, D2_EINPUT, "model with %d layers of %d x %d: need 1..%d layers of "
                       "1..%d", m->g.layers, m->g.n, m->g.n, D2_MAX_LAYERS, D2_MAX_N);
    for (int k = 0; k < m->g.layers; k++)
        if (!m->phase[k]) return d2_fail(e, D2_EINPUT, "model layer %d has no phase map", k + 1);

    profile_path pp;
    profile_path_init(&pp, o->profiles_dir);
    if ((rc = printer_find(&pp, o->printer, &r->printer, e))) return rc;
    if ((rc = material_find(&pp, o->material, &r->material, e))) return rc;
    r->n = m->g.n;
    r->layers = m->g.layers;
    r->pitch_mm = m->g.pitch_mm;
    printer_frame_default(&r->frame, r->printer.min_feature_mm, r->printer.pin_clearance_mm);
    r->plate_side_mm = r->n * r->pitch_mm + 2 * r->frame.width_mm;
    if (!(isfinite(r->pitch_mm) && r->pitch_mm > 0))
        return d2_fail(e, D2_EINPUT, "pitch %g mm: must be > 0", r->pitch_mm);
    if ((rc = resolve_params(m, o, r, e))) return rc;
    if (src->kind && !strcmp(src->kind, "phase")) {
        d2_err ge = {0};
        if (geom_validate(&m->g, "phase maps", &ge))
            warn(r, "the stack cannot be loaded back as a model for eval or tolerance: %.200s",
                 ge.msg);
    }
    r->period_mm = opt_period_mm(r->p.wavelength_mm, r->p.index);
    if ((rc = check_relief(r, e))) return rc;
    /* The tallest part: heights never exceed base + one period (+ half a Z
     * step of rounding); a layer plate stands on posts as tall as the gap to
     * the next part, with pins on top. */
    r->print_height_mm = fmax(r->p.base_mm + r->period_mm + 0.5 * r->p.z_step_mm,
                              r->frame.thick_mm);
    for (int k = 1; k <= r->layers; k++)
        r->print_height_mm = fmax(r->print_height_mm, m->g.gap_mm[k] + r->frame.pin_len_mm);
    if ((rc = check_printer(o, r, e))) return rc;

    size_t cnt = (size_t)r->n * (size_t)r->n;
    double max_h = 0;
    r->power_transmission = 1;
    for (int k = 0; k < r->layers; k++) {
        if (!(h[k] = d2_malloc(cnt * sizeof *h[k], "height map", e))) {
            rc = D2_EIO;
            goto fail;
        }
        if ((rc = exp_layer_heights(&r->p, m->phase[k], r->n, r->pitch_mm, h[k], &r->layer[k],
                                    e))) {
            d2_err_prefix(e, "layer %d", k + 1);
            goto fail;
        }
        if (r->layer[k].max_mm > max_h) max_h = r->layer[k].max_mm;
        r->volume_mm3 += r->layer[k].volume_mm3;
        r->power_transmission *= r->layer[k].power_mean;
    }
    r->fresnel_r = opt_fresnel_r(r->p.index);
    r->power_transmission *= pow(1 - r->fresnel_r, 2 * r->layers);
    /* The tallest part, now with the relief as exported. */
    r->print_height_mm = fmax(max_h, r->frame.thick_mm);
    for (int k = 1; k <= r->layers; k++)
        r->print_height_mm = fmax(r->print_height_mm, m->g.gap_mm[k] + r->frame.pin_len_mm);
    r->print_time_h = printer_print_time_h(&r->printer, r->print_height_mm, &r->print_layers,
                                           r->print_time_how, sizeof r->print_time_how);

    double png_scale[D2_MAX_LAYERS];
    for (int k = 0; k < r->layers; k++)
        png_scale[k] = exp_png_scale(r->layer[k].max_mm,
                                     r->p.z_step_mm);
    if (!(json = report_json(src, o, r, png_scale))) {
        rc = d2_fail(e, D2_EIO, "out of memory building export.json");
        goto fail;
    }

    /* Room on the disk for every file at its largest (PNG data that does not
     * compress grows by well under 1 %), before anything is replaced. */
    int block = (600 + r->n - 1) / r->n;
    if (block > 16) block = 16;
    double nn = (double)r->n * r->n, per_layer = 128 + 4 * nn + 1.01 * (2 * nn + r->n) +
                                                 1.01 * (3 * nn * block * block + r->n * block);
    if ((rc = d2_check_space(out_dir, r->layers * (per_layer + 8192) + 65536, "the export", e)))
        goto fail;
    /* All checks passed: now touch the output folder. */
    char json_path[PROFILE_PATH_MAX];
    if ((rc = d2_mkdir_p(out_dir, e))) goto fail;
    if ((rc = d2_path_join(json_path, sizeof json_path, out_dir, "export.json", e))) goto fail;
    stale_export stale = {r->layers, 0, {{0}}};
    old_export_files(json_path, &stale);
    if ((rc = d2_remove_index(out_dir, "export.json", e))) goto fail;
    if (!(written = d2_calloc((size_t)r->layers * 3, sizeof *written, "file list", e))) {
        rc = D2_EIO;
        goto fail;
    }
    for (int k = 0; k < r->layers; k++)
        if ((rc = write_layer(out_dir, k, r->n, h[k], png_scale[k], r->p.base_mm,
                              r->p.base_mm + r->period_mm, written, &nw, e)))
            goto fail;
    if ((rc = d2_dir_clear(out_dir, 0, stale_export_file, &stale, "previous export's file", e)))
        goto fail;
    if ((rc = cfg_write(json_path, json, e))) goto fail;
    rc = 0;
fail:
    if (rc) remove_written(written, nw);
    free(written);
    cJSON_Delete(json);
    for (int k = 0; k < D2_MAX_LAYERS; k++) free(h[k]);
    return rc;
}
