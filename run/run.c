/* The run pipeline: the stage libraries called in order, each reading what
 * the previous one wrote into the package folder. */
#include "run/run_int.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/image.h"
#include "mask/mask.h"
#include "mesh/mesh.h"
#include "tolerance/tolerance.h"

#define TWO_PI (2.0 * M_PI)

const char *const run_stage_names[RUN_STAGES] = {"model", "export", "mesh",
                                                 "masks", "tolerance", "report"};
enum { ST_MODEL, ST_EXPORT, ST_MESH, ST_MASKS, ST_TOL, ST_REPORT };

void run_warn(run_state *s, const char *fmt, ...)
{
    if (s->nwarn >= (int)(sizeof s->warn / sizeof s->warn[0])) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->warn[s->nwarn++], sizeof s->warn[0], fmt, ap);
    va_end(ap);
}

void run_add_preview(run_state *s, const char *group, const char *file, const char *caption)
{
    if (s->npreviews >= RUN_MAX_PREVIEWS) return;
    run_preview *p = &s->preview[s->npreviews++];
    snprintf(p->group, sizeof p->group, "%s", group);
    snprintf(p->file, sizeof p->file, "%.95s", file);
    snprintf(p->caption, sizeof p->caption, "%.159s", caption);
}

/* OUT/rel into buf. */
static int out_path(const run_state *s, const char *rel, char *buf, size_t cap, d2_err *e)
{
    return d2_path_join(buf, cap, s->o->out_dir, rel, e);
}

/* Records the time since the previous stage ended as stage k's. */
static void stage_time(run_state *s, int k)
{
    double now = d2_now();
    s->res->stage_seconds[k] = now - s->t_stage;
    s->t_stage = now;
}

static void stage_done(run_state *s, int k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void stage_done(run_state *s, int k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->res->note[k], sizeof s->res->note[k], fmt, ap);
    va_end(ap);
    s->res->status[k] = RUN_DONE;
    stage_time(s, k);
    if (s->o->log) {
        fprintf(s->o->log, "[%d/%d] %s: %s (%.0f s)\n", k + 1, RUN_STAGES, run_stage_names[k],
                s->res->note[k], s->res->stage_seconds[k]);
        for (; s->warn_logged < s->nwarn; s->warn_logged++)
            fprintf(s->o->log, "      warning: %s\n", s->warn[s->warn_logged]);
        fflush(s->o->log);
    }
}

static void stage_skip(run_state *s, int k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void stage_skip(run_state *s, int k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->res->note[k], sizeof s->res->note[k], fmt, ap);
    va_end(ap);
    s->res->status[k] = RUN_SKIPPED;
    stage_time(s, k);
    if (s->o->log) {
        fprintf(s->o->log, "[%d/%d] %s: skipped: %s\n", k + 1, RUN_STAGES, run_stage_names[k],
                s->res->note[k]);
        fflush(s->o->log);
    }
}

/* Copies a file (a PNG another stage wrote) into the package, atomically. */
static int copy_file(const char *from, const char *to, d2_err *e)
{
    char *buf = NULL;
    size_t n = 0;
    int rc = d2_read_file(from, (size_t)1 << 30, &buf, &n, e);
    if (!rc) rc = d2_write_file(to, buf, n, e);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------
 * Stage 1: the design and its accuracy
 * ---------------------------------------------------------------------- */

static int preview_scale(int n)
{
    int s = n > 0 ? 256 / n : 1;
    return s < 1 ? 1 : s > 64 ? 64 : s;
}

static int stage_model(run_state *s, d2_err *e)
{
    const run_config *c = s->c;
    d2_model *m = &s->model;
    int rc;
    if (c->model_dir[0]) {
        rc = model_load(c->model_dir, m, e);
    } else {
        const char *files[D2_MAX_LAYERS];
        for (int k = 0; k < c->nphase; k++) files[k] = c->phase_files[k];
        exp_phase_input in = {files,
                              c->nphase,
                              c->phase_pitch_mm,
                              opt_wavelength_mm(c->phase_frequency_thz),
                              c->phase_gaps_mm,
                              c->phase_ngaps,
                              c->phase_png_range,
                              c->phase_png_lo_rad,
                              c->phase_png_hi_rad};
        rc = exp_model_from_phases(&in, m, e);
        if (!rc) {
            snprintf(m->t.dataset, sizeof m->t.dataset, "%s", c->phase_dataset);
            m->t.data = c->phase_data;
            m->g.illum = c->phase_illum;
            m->g.illum_waist_mm = c->phase_illum_waist_mm;
            m->g.illum_distance_mm = c->phase_illum_distance_mm;
            rc = geom_validate(&m->g, c->path, e);
        }
    }
    if (rc) return rc;
    s->have_model = 1;
    /* Room for the whole package before the long stages: previews, the
     * export (heights, 16-bit and preview PNGs) and meshes of at least two
     * facets a pixel, as parts and again in the assembly. */
    {
        double nn = (double)m->g.n * m->g.n, ps = preview_scale(m->g.n);
        int block = (600 + m->g.n - 1) / m->g.n;
        if (block > 16) block = 16;
        double bytes = m->g.layers * nn * (3 * ps * ps + 4 + 2 + 3.0 * block * block + 200);
        if ((rc = d2_check_space(s->o->out_dir, bytes + 1e6, "the print package", e))) return rc;
    }

    /* Phase previews: the design as trained, wrapped to [0, 2 pi). */
    const d2_geom *g = &m->g;
    size_t cnt = (size_t)g->n * (size_t)g->n;
    float *w = d2_malloc(cnt * sizeof *w, "phase preview", e);
    if (!w) return D2_EIO;
    for (int k = 0; k < g->layers && !rc; k++) {
        for (size_t i = 0; i < cnt; i++) {
            double v = fmod((double)m->phase[k][i], TWO_PI);
            w[i] = (float)(v < 0 ? v + TWO_PI : v);
        }
        rc = run_fig_phase(s, k, w, e);
    }
    free(w);
    if (rc) return rc;

    if ((rc = eval_model(m, s->o->data_dir, c->test_limit, s->o->threads, NULL, s->o->progress,
                         &s->ev_model, e)))
        return rc;
    s->have_ev_model = 1;
    stage_done(s, ST_MODEL, "%d layer%s of %d x %d at %.4g mm pitch, %.4g THz, gaps %.4g mm; "
               "accuracy %.2f %% on %d %s test images", g->layers, g->layers > 1 ? "s" : "",
               g->n, g->n, g->pitch_mm, opt_frequency_thz(g->wavelength_mm), g->gap_mm[0],
               100 * s->ev_model.accuracy, s->ev_model.count, m->t.dataset);
    return 0;
}

/* ------------------------------------------------------------------------
 * Stage 2: export, and the accuracy of what will be printed
 * ---------------------------------------------------------------------- */

/* Scores s->printed (the export as a thin model) as thin phase screens on
 * test_limit images, then, with thick optics, turns it into the thick model
 * of the assembly as built and scores that on thick_limit images: ev_export
 * is the config's optical model, ev_export_thin the thin one beside it. */
static int printed_scores(run_state *s, d2_err *e)
{
    const run_config *c = s->c;
    int rc;
    if (c->optics == D2_OPTICS_THIN)
        return (rc = eval_model(&s->printed, s->o->data_dir, c->test_limit, s->o->threads, NULL,
                                s->o->progress, &s->ev_export, e))
                   ? rc
                   : (s->have_ev_export = 1, 0);
    if ((rc = eval_model(&s->printed, s->o->data_dir, c->test_limit, s->o->threads, NULL,
                         s->o->progress, &s->ev_export_thin, e)) ||
        (rc = model_make_thick(&s->printed, 0, e)))
        return rc;
    s->have_ev_export_thin = 1;
    int limit = c->thick_limit > 0 ? c->thick_limit : c->test_limit;
    if (c->test_limit > 0 && limit > c->test_limit) limit = c->test_limit;
    if ((rc = eval_model(&s->printed, s->o->data_dir, limit, s->o->threads, NULL, s->o->progress,
                         &s->ev_export, e)))
        return rc;
    s->have_ev_export = 1;
    return 0;
}

static int stage_export(run_state *s, d2_err *e)
{
    const run_config *c = s->c;
    export_opts xo;
    export_opts_default(&xo);
    xo.printer = c->printer;
    xo.material = c->material;
    xo.profiles_dir = s->o->profiles_dir;
    xo.frequency_thz = c->frequency_thz;
    xo.index = c->index;
    xo.kappa = c->kappa;
    xo.base_mm = c->base_mm;
    xo.levels = c->levels;
    xo.offset_mode = c->offset_mode;
    xo.offset_rad = c->offset_rad;
    xo.jump_weight = c->jump_weight;
    xo.force = c->force;

    cJSON *sections = NULL;
    char dir[RUN_PATH_MAX + 64], path[RUN_PATH_MAX + 128];
    int rc;
    export_source src = {&s->model, NULL, "model", c->model_dir};
    if (c->model_dir[0]) {
        /* The model's own sections go into export.json verbatim. */
        if ((rc = d2_path_join(path, sizeof path, c->model_dir, "model.json", e)) ||
            (rc = cfg_load(path, &sections, e)))
            return rc;
        src.model_sections = sections;
    } else {
        src.kind = "phase";
        src.path = c->phase_files[0];
    }
    if ((rc = out_path(s, "export", dir, sizeof dir, e))) goto done;
    rc = export_stack(&src, &xo, dir, &s->ex, e);
    s->have_export = !rc;
    for (int i = 0; i < s->ex.nwarn; i++) run_warn(s, "export: %s", s->ex.warn[i]);
    if (rc) goto done;

    /* The accuracy of what will be printed: the exported heights as thick
     * plates in the assembly as built (the config's optics), on thick_limit
     * images; beside it the same heights as thin phase screens. */
    if ((rc = export_load_as_model(dir, &s->printed, e))) goto done;
    s->have_printed = 1;
    if ((rc = printed_scores(s, e))) goto done;
    /* The figures of what will be printed: heights, one plate in 3-D, the
     * output of a few digits (through the same optical model). */
    for (int k = 0; k < s->ex.layers && !rc; k++) rc = run_fig_height(s, k, e);
    if (rc || (rc = run_fig_relief(s, 0, e)) || (rc = run_fig_output(s, e))) goto done;
    double lo = INFINITY, hi = 0;
    for (int k = 0; k < s->ex.layers; k++) {
        lo = fmin(lo, s->ex.layer[k].min_mm);
        hi = fmax(hi, s->ex.layer[k].max_mm);
    }
    stage_done(s, ST_EXPORT, "%s in %s at %.4g THz: heights %.3f to %.3f mm in %.4g mm steps; "
               "accuracy as printed %.2f %% (%s model, %d images; design %.2f %%)",
               s->ex.printer.name, s->ex.material.name, s->ex.frequency_thz, lo, hi,
               s->ex.p.z_step_mm, 100 * s->ev_export.accuracy, optics_name(&s->printed.g),
               s->ev_export.count, 100 * s->ev_model.accuracy);
done:
    cJSON_Delete(sections);
    return rc;
}

/* ------------------------------------------------------------------------
 * Stage 3: meshes of every plate and the assembly
 * ---------------------------------------------------------------------- */

/* Moves the assembly to the top of the package, beside the report, with
 * assembly.json's file names made relative to its new folder, and reads the
 * plate thicknesses for the stack drawing. */
static int move_assembly(run_state *s, const char *parts, const char *assembly_file, d2_err *e)
{
    char from[RUN_PATH_MAX + 128], to[RUN_PATH_MAX + 128];
    cJSON *j = NULL;
    int rc;
    if ((rc = d2_path_join(from, sizeof from, parts, assembly_file, e)) ||
        (rc = out_path(s, assembly_file, to, sizeof to, e)))
        return rc;
    if (rename(from, to) != 0)
        return d2_fail(e, D2_EIO, "cannot move %s to %s: %s", from, to, strerror(errno));
    if ((rc = d2_path_join(from, sizeof from, parts, "assembly.json", e)) ||
        (rc = out_path(s, "assembly.json", to, sizeof to, e)) || (rc = cfg_load(from, &j, e)))
        return rc;
    double thick = 0;
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(j, "frame");
    cJSON *p;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(fr, "thick_mm");
    if (cJSON_IsNumber(t)) thick = t->valuedouble;
    t = cJSON_GetObjectItemCaseSensitive(fr, "width_mm");
    if (cJSON_IsNumber(t)) s->frame_width_mm = t->valuedouble;
    t = cJSON_GetObjectItemCaseSensitive(fr, "post_mm");
    if (cJSON_IsNumber(t)) s->post_mm = t->valuedouble;
    cJSON_ReplaceItemInObjectCaseSensitive(j, "export", cJSON_CreateString("export"));
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(j, "parts"))
    {
        const char *f = cJSON_GetStringValue(cJSON_GetObjectItem(p, "file"));
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(p, "name"));
        const cJSON *top = cJSON_GetObjectItemCaseSensitive(p, "max_active_mm");
        char rel[160];
        if (f) {
            snprintf(rel, sizeof rel, "parts/%s", f);
            cJSON_ReplaceItemInObjectCaseSensitive(p, "file", cJSON_CreateString(rel));
        }
        int k = !name ? -1
                : !strcmp(name, "input") ? 0
                : !strcmp(name, "detector") ? s->model.g.layers + 1
                : !strncmp(name, "layer", 5) ? atoi(name + 5) : -1;
        if (k >= 0 && k <= s->model.g.layers + 1)
            s->plate_thick_mm[k] = fmax(thick, cJSON_IsNumber(top) ? top->valuedouble : 0);
    }
    rc = cfg_write(to, j, e);
    cJSON_Delete(j);
    if (!rc && unlink(from) != 0)
        rc = d2_fail(e, D2_EIO, "%s: cannot remove after moving: %s", from, strerror(errno));
    return rc;
}

/* Every layer part's pillar tops read back from its file against the
 * export's heights (what d2fab check --against does); a part that differs by
 * more than half a Z step stops the stage, naming the pixel. */
static int mesh_tops(run_state *s, const char *exp, double *worst_mm, d2_err *e)
{
    export_folder x;
    char from[RUN_PATH_MAX + 128];
    int rc = export_folder_load(exp, &x, e), loaded = !rc;
    *worst_mm = 0;
    for (int i = 0; !rc && i < s->nparts; i++) {
        run_part *p = &s->part[i];
        int layer = strncmp(p->kind, "layer", 6) ? 0 : atoi(p->name + 5);
        if (!layer) continue;
        if ((rc = d2_path_join(from, sizeof from, s->o->out_dir, p->file, e)) ||
            (rc = mesh_compare_tops(from, &x, layer, &p->tops, e)))
            break;
        p->tops_checked = 1;
        *worst_mm = fmax(*worst_mm, p->tops.max_mm);
        if (p->tops.over)
            rc = d2_fail(e, D2_EIO, "%s: %ld pillar tops differ from the export by more than "
                         "half a Z step (%.4f mm), the worst at pixel (row %d, col %d): mesh "
                         "%.4f mm, export %.4f mm", from, p->tops.over, p->tops.tol_mm,
                         p->tops.worst[0].row, p->tops.worst[0].col, p->tops.worst[0].mesh_mm,
                         p->tops.worst[0].export_mm);
    }
    if (loaded) export_folder_free(&x);
    return rc;
}

static int stage_mesh(run_state *s, int with_masks, d2_err *e)
{
    const run_config *c = s->c;
    char exp[RUN_PATH_MAX + 64], parts[RUN_PATH_MAX + 64], from[RUN_PATH_MAX + 128];
    mesh_stack_opts mo;
    mesh_stack_report rep;
    int rc;
    mesh_stack_opts_default(&mo);
    mo.no_input = with_masks; /* the masks take the input plate's place */
    if ((rc = mesh_format_parse(c->mesh_format, &mo.format, e)) ||
        (rc = out_path(s, "export", exp, sizeof exp, e)) ||
        (rc = out_path(s, "parts", parts, sizeof parts, e)) ||
        (rc = mesh_stack(exp, parts, &mo, &rep, e)))
        return rc;
    if ((rc = move_assembly(s, parts, rep.assembly_file, e))) return rc;
    for (int i = 0; i < rep.nwarn; i++) run_warn(s, "mesh: %s", rep.warn[i]);
    snprintf(s->assembly_file, sizeof s->assembly_file, "%s", rep.assembly_file);
    snprintf(s->assembly_json, sizeof s->assembly_json, "assembly.json");

    size_t facets = 0;
    for (int i = 0; i < rep.nparts && s->nparts < RUN_MAX_PARTS; i++) {
        const mesh_stack_part *mp = &rep.part[i];
        run_part *p = &s->part[s->nparts++];
        snprintf(p->name, sizeof p->name, "%s", mp->name);
        snprintf(p->file, sizeof p->file, "parts/%s", mp->file);
        p->volume_mm3 = mp->volume_mm3;
        memcpy(p->size_mm, mp->size_mm, sizeof p->size_mm);
        p->z_mm = mp->z_mm;
        p->facets = mp->facets;
        p->bytes = mp->bytes;
        if (!strncmp(mp->name, "layer", 5)) {
            snprintf(p->kind, sizeof p->kind, "layer");
            snprintf(p->what, sizeof p->what, "diffractive layer %s", mp->name + 5);
        } else if (!strcmp(mp->name, "detector")) {
            snprintf(p->kind, sizeof p->kind, "detector");
            snprintf(p->what, sizeof p->what, "detector plane (10 windows)");
        } else {
            snprintf(p->kind, sizeof p->kind, "input");
            snprintf(p->what, sizeof p->what, "input aperture (open square)");
        }
        /* Every part is read back and checked as a slicer would see it. */
        mesh_report mr;
        if ((rc = d2_path_join(from, sizeof from, parts, mp->file, e)) ||
            (rc = mesh_check_file(from, &mr, e)))
            return rc;
        if (!mr.closed || mr.parts != 1)
            return d2_fail(e, D2_EIO, "%s: written mesh is not one closed solid (%zu open, %zu "
                           "non-manifold, %zu inconsistent edges, %zu parts)", from,
                           mr.open_edges, mr.nonmanifold_edges, mr.inconsistent_edges, mr.parts);
        facets += mp->facets;
    }
    double tops_mm, slice_h = 0;
    if ((rc = mesh_tops(s, exp, &tops_mm, e)) ||
        (c->print_time_slicer && (rc = run_slice_parts(s, &slice_h, e))))
        return rc;
    char sliced[96] = "";
    if (c->print_time_slicer)
        snprintf(sliced, sizeof sliced, "; PrusaSlicer: the longest layer part %.2f h", slice_h);
    stage_done(s, ST_MESH, "%d parts, %zu facets, each read back closed and in one piece; "
               "every layer's pillar tops match the export (max %.2g mm); assembly %s%s",
               rep.nparts, facets, tops_mm, s->assembly_file, sliced);
    return 0;
}


/* ------------------------------------------------------------------------
 * Stage 4: input masks (digit stencils) and what the printed stack reads
 * through them
 * ---------------------------------------------------------------------- */

/* A file of the mask stage's folder also listed in parts/ or previews/: a
 * hard link (a copy where links are refused), so the stage's own report keeps
 * its names. */
static int link_into(run_state *s, const char *dir, const char *name, const char *sub,
                     d2_err *e)
{
    char from[RUN_PATH_MAX + 128], rel[160], to[RUN_PATH_MAX + 256];
    int rc;
    snprintf(rel, sizeof rel, "%s/%s", sub, name);
    if ((rc = d2_path_join(from, sizeof from, dir, name, e)) ||
        (rc = out_path(s, rel, to, sizeof to, e)))
        return rc;
    if (link(from, to) == 0) return 0;
    return copy_file(from, to, e);
}

/* Lists the masks in assembly.json: they take the input plane, one at a time. */
static int assembly_add_masks(run_state *s, d2_err *e)
{
    char path[RUN_PATH_MAX + 64];
    cJSON *j = NULL;
    int rc;
    if (!s->assembly_json[0] || !s->nmasks) return 0;
    if ((rc = out_path(s, s->assembly_json, path, sizeof path, e)) ||
        (rc = cfg_load(path, &j, e)))
        return rc;
    cJSON *o = cJSON_CreateObject(), *files = cJSON_CreateArray();
    if (!o || !files) {
        cJSON_Delete(o);
        cJSON_Delete(files);
        cJSON_Delete(j);
        return d2_fail(e, D2_EIO, "out of memory");
    }
    for (int i = 0; i < s->nmasks; i++)
        cJSON_AddItemToArray(files, cJSON_CreateString(s->part[i].file));
    cJSON_AddItemToObject(o, "files", files);
    cJSON_AddNumberToObject(o, "z_mm", 0);
    cJSON_AddNumberToObject(o, "gap_to_next_mm", s->model.g.gap_mm[0]);
    cJSON_AddStringToObject(o, "note", "one mask at a time on the input plane, in front of "
                            "the first part listed in \"parts\"; datum face toward the source, "
                            "its posts carry the next part");
    cJSON_AddItemToObject(j, "input_masks", o);
    rc = cfg_write(path, j, e);
    cJSON_Delete(j);
    return rc;
}

static int stage_masks(run_state *s, d2_err *e)
{
    const run_config *c = s->c;
    d2_dataset ds = {0};
    mask_source *src = NULL, *one = NULL;
    mask_result *res = NULL;
    mask_run_report rep;
    mask_opts mo;
    char dir[RUN_PATH_MAX + 64], path[RUN_PATH_MAX + 128];
    int n = 0, cap = c->mask_ndigits * c->mask_count + c->mask_nindices, got, rc;
    memset(&rep, 0, sizeof rep);
    if ((rc = dataset_open(s->o->data_dir, s->printed.t.dataset, &s->printed.t.data, 1, &ds,
                           e)))
        return rc;
    if (!(src = d2_calloc((size_t)cap, sizeof *src, "mask sources", e)) ||
        !(res = d2_calloc((size_t)cap, sizeof *res, "mask results", e))) {
        rc = D2_EIO;
        goto done;
    }
    /* The first `count` test images of each digit, then the listed indices. */
    for (int i = 0; i < c->mask_ndigits + c->mask_nindices; i++) {
        int digit = i < c->mask_ndigits ? c->mask_digits[i] : -1;
        int first = digit < 0 ? c->mask_indices[i - c->mask_ndigits] : 0;
        if ((rc = mask_sources_dataset(&ds, s->printed.t.dataset, first,
                                       digit < 0 ? 1 : c->mask_count, digit, &one, &got, e)))
            goto done;
        for (int k = 0; k < got; k++) {
            if (n < cap) src[n++] = one[k];
            else mask_source_free(&one[k]);
        }
        free(one);
        one = NULL;
    }
    mask_opts_default(&mo);
    mo.wavelength_mm = s->ex.p.wavelength_mm;
    mo.index = s->ex.p.index;
    mo.kappa = s->ex.p.kappa;
    mo.material_name = s->ex.material.name;
    mo.printer_name = s->ex.printer.name;
    mo.model_path = "export";
    mo.mode = c->mask_mode; /* MASK_STENCIL, MASK_CARRIER_RECESS, MASK_CARRIER_RELIEF */
    if (c->mask_threshold > 0) mo.threshold = c->mask_threshold;
    mo.thick_mm = c->mask_thick_mm;
    if ((rc = mesh_printer_from_json(s->ex.printer.json, s->ex.printer.path, "", &mo.printer,
                                     e)) ||
        (rc = mesh_format_parse(c->mesh_format, &mo.format, e)) ||
        (rc = out_path(s, "masks", dir, sizeof dir, e)))
        goto done;
    /* Read by the stack as printed: exported heights, absorption. */
    if ((rc = mask_run(&s->printed, src, n, &mo, dir, res, &rep, e))) goto done;
    s->plate_thick_mm[0] = fmax(rep.thick_mm, rep.frame_thick_mm);
    for (int i = 0; i < rep.nwarn; i++) run_warn(s, "masks: %s", rep.warn[i]);

    for (int i = 0; i < n && s->nparts < RUN_MAX_PARTS; i++) {
        const mask_result *r = &res[i];
        char cap_[160];
        if ((rc = link_into(s, dir, r->png_file, "previews", e))) goto done;
        snprintf(path, sizeof path, "previews/%s", r->png_file);
        snprintf(cap_, sizeof cap_, "%.60s: original, binarised aperture, printable mask "
                 "(islands blue, bridges red, too narrow orange)", src[i].origin);
        run_add_preview(s, "mask", path, cap_);
        if (!r->mesh_file[0]) continue;
        if ((rc = link_into(s, dir, r->mesh_file, "parts", e))) goto done;
        /* Masks go in front of the stack, in place of the open input plate. */
        memmove(&s->part[s->nmasks + 1], &s->part[s->nmasks],
                (size_t)(s->nparts - s->nmasks) * sizeof s->part[0]);
        s->nparts++;
        run_part *p = &s->part[s->nmasks++];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%.47s", src[i].name);
        snprintf(p->kind, sizeof p->kind, "mask");
        snprintf(p->file, sizeof p->file, "parts/%.80s", r->mesh_file);
        snprintf(p->what, sizeof p->what, "digit %d mask (test image %d)", src[i].label,
                 src[i].index);
        p->volume_mm3 = r->volume_mm3;
        p->facets = r->facets;
        p->bytes = r->bytes;
        mesh_report mr;
        if ((rc = d2_path_join(path, sizeof path, dir, r->mesh_file, e)) ||
            (rc = mesh_check_file(path, &mr, e)))
            goto done;
        if (!mr.closed || mr.parts != 1) {
            rc = d2_fail(e, D2_EIO, "%s: written mesh is not one closed solid", path);
            goto done;
        }
        for (int k = 0; k < 3; k++) p->size_mm[k] = mr.hi[k] - mr.lo[k];
        s->mask_info[s->nmasks - 1] = (run_mask){src[i].label, src[i].index, r->st.islands,
                                                 r->st.bridges,
                                                 r->st.open0_px ? (double)r->st.blocked_px /
                                                                      r->st.open0_px
                                                                : 0,
                                                 {r->pred[0], r->pred[1], r->pred[2]}};
    }
    if ((rc = d2_path_join(path, sizeof path, dir, "summary.json", e)) ||
        (rc = cfg_load(path, &s->masks_json, e)) ||
        (rc = assembly_add_masks(s, e)))
        goto done;
    s->mask_correct[0] = rep.correct[0];
    s->mask_correct[1] = rep.correct[1];
    s->mask_correct[2] = rep.correct[2];
    s->mask_labelled = rep.labelled;
    stage_done(s, ST_MASKS, "%d stencil%s, %d island%s bridged; read correctly through the "
               "printed stack: %d of %d as images, %d binarised, %d through the masks (%s "
               "model)", n, n == 1 ? "" : "s", rep.islands, rep.islands == 1 ? "" : "s",
               rep.correct[0], rep.labelled, rep.correct[1], rep.correct[2],
               optics_name(&s->printed.g));
done:
    if (src)
        for (int i = 0; i < n; i++) mask_source_free(&src[i]);
    free(src);
    free(res);
    dataset_free(&ds);
    return rc;
}

/* ------------------------------------------------------------------------
 * Stage 5: tolerance study of the stack as printed
 * ---------------------------------------------------------------------- */

int run_tolerance_check(const char *file, const cJSON *section, d2_err *e)
{
    tol_config tc;
    tol_config_default(&tc);
    int rc = tol_config_read(file, section, &tc, e);
    if (rc) d2_err_prefix(e, "section \"tolerance\"");
    return rc;
}

static const char *plot_caption(const char *name, char *buf, size_t cap)
{
    if (!strcmp(name, "yield.png"))
        return "Monte Carlo: distribution of the test accuracy over the trials, with the yield "
               "at the spec";
    if (!strcmp(name, "compare.png"))
        return "Monte Carlo: mean accuracy against the perturbation magnitude";
    if (!strncmp(name, "scan_", 5)) {
        snprintf(buf, cap, "Accuracy against the %.*s magnitude, every layer perturbed",
                 (int)(strlen(name) - 9), name + 5);
        return buf;
    }
    return name;
}

/* The summary of the report's first (only) stack for the HTML and report.json. */
static void tol_summary(run_state *s, const tol_report *rep)
{
    const tol_result *r = &rep->res[0];
    run_tol *t = &s->tol;
    const tol_mc *mc = NULL;
    for (int i = 0; i < r->nmc; i++)
        if (!mc || fabs(r->mc[i].scale - 1) < fabs(mc->scale - 1)) mc = &r->mc[i];
    t->images = r->images;
    t->nominal = r->nominal;
    t->spec = r->spec;
    t->spec_from_nominal = r->spec_from_nominal;
    t->seconds = rep->seconds;
    t->inferences = rep->inferences;
    if (mc) {
        t->trials = mc->trials;
        t->mean = mc->mean;
        t->std = mc->std;
        t->min = mc->min;
        t->max = mc->max;
        t->p90 = mc->p90;
        t->p50 = mc->p50;
        t->p10 = mc->p10;
        t->yield = mc->yield;
        t->yield_lo = mc->yield_lo;
        t->yield_hi = mc->yield_hi;
    }
    for (int i = 0; i < r->nsens && t->nsens < RUN_TOL_ROWS; i++) {
        const tol_sens_row *w = &r->sens[i];
        if (!w->applicable) continue;
        char where[24] = "";
        if (w->layer >= 0) snprintf(where, sizeof where, ", layer %d", w->layer + 1);
        snprintf(t->sens[t->nsens].what, sizeof t->sens[0].what, "%s%s%s, %s",
                 tol_kind_name(w->kind), where,
                 w->comp == 0 ? " x" : w->comp == 1 ? " y" : "",
                 tol_unit_name(r->mag.unit[w->kind]));
        t->sens[t->nsens].magnitude = w->magnitude;
        t->sens[t->nsens].change = w->change;
        t->nsens++;
    }
    for (int i = 0; i < r->ninv && t->ninv < RUN_TOL_ROWS; i++) {
        const tol_inverse *v = &r->inv[i];
        snprintf(t->inv[t->ninv].what, sizeof t->inv[0].what, "%s, %s", tol_kind_name(v->kind),
                 tol_unit_name(r->mag.unit[v->kind]));
        t->inv[t->ninv].ref = v->ref;
        t->inv[t->ninv].at1 = v->at1;
        t->inv[t->ninv].at5 = v->at5;
        t->inv[t->ninv].max_tested = v->max_tested;
        t->ninv++;
    }
    run_tol_perturbations(t, r);
}

static cJSON *tol_summary_json(const run_tol *t)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "report", "tolerance/report.json");
    cJSON_AddStringToObject(o, "stack", "export (as printed)");
    cJSON_AddStringToObject(o, "optics", t->optics == D2_OPTICS_THICK
                                             ? "thick (plates in the assembly as built)"
                                             : "thin (phase screens, gaps datum to datum)");
    cJSON_AddNumberToObject(o, "test_images", t->images);
    cJSON_AddNumberToObject(o, "nominal_accuracy", t->nominal);
    cJSON_AddNumberToObject(o, "trials", t->trials);
    if (t->trials) {
        const cfg_num_item mc[] = {
            {"mean_accuracy", t->mean}, {"std_accuracy", t->std}, {"min_accuracy", t->min},
            {"max_accuracy", t->max}, {"p90_accuracy", t->p90}, {"p50_accuracy", t->p50},
            {"p10_accuracy", t->p10}, {"spec_accuracy", t->spec}, {"yield", t->yield}};
        cfg_add_numbers(o, mc, (int)(sizeof mc / sizeof mc[0]));
        cJSON_AddStringToObject(o, "spec_rule", t->spec_from_nominal ? "nominal - 1 point"
                                                                      : "spec_accuracy_percent");
        double ci[2] = {t->yield_lo, t->yield_hi};
        cJSON_AddItemToObject(o, "yield_interval", cJSON_CreateDoubleArray(ci, 2));
    }
    cJSON_AddItemToObject(o, "perturbations", run_perturbations_json(t));
    if (t->dominant >= 0) cJSON_AddStringToObject(o, "dominant", t->pert[t->dominant].key);
    else cJSON_AddNullToObject(o, "dominant");
    cJSON_AddNumberToObject(o, "seconds", t->seconds);
    cJSON_AddNumberToObject(o, "inferences", (double)t->inferences);
    return o;
}

static int stage_tolerance(run_state *s, d2_err *e)
{
    const run_config *c = s->c;
    tol_config tc;
    tol_study st;
    cJSON *tj = NULL;
    char exp[RUN_PATH_MAX + 64], dir[RUN_PATH_MAX + 64], path[RUN_PATH_MAX + 128];
    int rc;
    tol_config_default(&tc);
    /* The cheap sensitivity table unless the config asks otherwise: it says
     * which perturbation dominates. */
    tc.sensitivity = TOL_SENS_KINDS;
    if ((rc = tol_config_read(c->path, c->tolerance, &tc, e))) return rc;
    tc.stencil_fn = mask_stencil_u8;
    if ((rc = out_path(s, "export", exp, sizeof exp, e)) ||
        (rc = out_path(s, "tolerance", dir, sizeof dir, e)))
        return rc;
    /* The stack as printed: the export's heights, material and Z step. */
    tol_study_model sm = {exp, "as printed", "export"};
    tol_study_opts so = {&tc, &sm, 1, s->o->data_dir, s->o->threads, dir, NULL, s->o->progress};
    if ((rc = tol_study_run(&so, &st, e))) return rc;
    tol_summary(s, &st.rep);
    s->tol.optics = st.stacks[0].m.g.optics;
    if (!(s->tolerance_json = tol_summary_json(&s->tol))) {
        rc = d2_fail(e, D2_EIO, "out of memory");
        goto done;
    }
    /* The plots the stage lists in its report, embedded in report.html. */
    if ((rc = d2_path_join(path, sizeof path, dir, "report.json", e)) ||
        (rc = cfg_load(path, &tj, e)))
        goto done;
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(tj, "files"))
    {
        const char *name = cJSON_GetStringValue(f);
        size_t len = name ? strlen(name) : 0;
        char rel[160], cap[160];
        if (len < 5 || strcmp(name + len - 4, ".png") || strchr(name, '/')) continue;
        snprintf(rel, sizeof rel, "tolerance/%.140s", name);
        run_add_preview(s, "tolerance", rel, plot_caption(name, cap, sizeof cap));
    }
    const run_tol *t = &s->tol;
    if (t->trials)
        stage_done(s, ST_TOL, "nominal %.2f %% on %d test images; Monte Carlo over %d trials: "
                   "mean %.2f %%, worst %.2f %%; yield %.0f %% of trials reach the spec, "
                   "%.2f %% (%s); %s model", 100 * t->nominal, t->images, t->trials, 100 * t->mean,
                   100 * t->min, 100 * t->yield, 100 * t->spec,
                   t->spec_from_nominal ? "nominal less 1 point" : "spec_accuracy_percent",
                   t->optics == D2_OPTICS_THICK ? "thick" : "thin");
    else
        stage_done(s, ST_TOL, "nominal %.2f %% on %d test images; no Monte-Carlo trials (%s model)",
                   100 * t->nominal, t->images, t->optics == D2_OPTICS_THICK ? "thick" : "thin");
done:
    cJSON_Delete(tj);
    tol_study_free(&st);
    return rc;
}
/* ------------------------------------------------------------------------
 * The pipeline
 * ---------------------------------------------------------------------- */

static int fail_stage(run_state *s, int k, int rc, d2_err *e)
{
    s->res->status[k] = RUN_FAILED;
    stage_time(s, k);
    snprintf(s->res->note[k], sizeof s->res->note[k], "%s", e->msg);
    if (s->o->log)
        for (; s->warn_logged < s->nwarn; s->warn_logged++)
            fprintf(s->o->log, "      warning: %s\n", s->warn[s->warn_logged]);
    d2_err_prefix(e, "%s stage", run_stage_names[k]);
    return rc;
}

int run_pipeline(const run_config *c, const run_opts *o, run_result *r, d2_err *e)
{
    memset(r, 0, sizeof *r);
    if (!o->out_dir || !o->out_dir[0]) return d2_fail(e, D2_EUSAGE, "no output folder (--out)");
    run_state *s = d2_calloc(1, sizeof *s, "run state", e);
    if (!s) return D2_EIO;
    double t0 = d2_now();
    int rc;
    s->c = c;
    s->o = o;
    s->res = r;
    if ((rc = run_prepare_out(s, e))) goto done;
    s->t_stage = d2_now();

    /* A misspelt printer or material fails now, not after the first stage. */
    {
        profile_path pp;
        printer_profile pr;
        material_profile mt;
        profile_path_init(&pp, o->profiles_dir);
        if ((rc = printer_find(&pp, c->printer, &pr, e))) {
            rc = fail_stage(s, ST_EXPORT, rc, e);
            goto done;
        }
        /* Asked for the slicer's time: it must exist before hours of work. */
        rc = c->print_time_slicer ? slicer_check(&pr, e) : 0;
        printer_free(&pr);
        if (rc) {
            rc = fail_stage(s, ST_MESH, rc, e);
            goto done;
        }
        if ((rc = material_find(&pp, c->material, &mt, e))) {
            rc = fail_stage(s, ST_EXPORT, rc, e);
            goto done;
        }
        material_free(&mt);
    }

    if ((rc = stage_model(s, e))) {
        rc = fail_stage(s, ST_MODEL, rc, e);
        goto done;
    }
    if ((rc = stage_export(s, e))) {
        rc = fail_stage(s, ST_EXPORT, rc, e);
        goto done;
    }
    int want_masks = c->mask_ndigits || c->mask_nindices;
    if ((rc = stage_mesh(s, want_masks, e))) {
        rc = fail_stage(s, ST_MESH, rc, e);
        goto done;
    }
    if (!want_masks) {
        stage_skip(s, ST_MASKS, "no \"masks\" section in the config");
    } else if ((rc = stage_masks(s, e))) {
        rc = fail_stage(s, ST_MASKS, rc, e);
        goto done;
    }
    if (!c->tolerance) {
        stage_skip(s, ST_TOL, "no \"tolerance\" section in the config");
    } else if ((rc = stage_tolerance(s, e))) {
        rc = fail_stage(s, ST_TOL, rc, e);
        goto done;
    }

    /* The report records its own stage as done: it is, once the files exist. */
    r->seconds = d2_now() - t0;
    r->status[ST_REPORT] = RUN_DONE;
    snprintf(r->note[ST_REPORT], sizeof r->note[ST_REPORT],
             "report.json, report.html and PRINTING.txt");
    if ((rc = run_write_reports(s, e))) {
        rc = fail_stage(s, ST_REPORT, rc, e);
        goto done;
    }
    if ((rc = out_path(s, "report.html", r->report_html, sizeof r->report_html, e))) goto done;
    stage_time(s, ST_REPORT);
    r->seconds = d2_now() - t0;
    if (o->log) {
        fprintf(o->log, "[%d/%d] report: %s (%.0f s); the whole run took %.0f s\n", RUN_STAGES,
                RUN_STAGES, r->note[ST_REPORT], r->stage_seconds[ST_REPORT], r->seconds);
        fflush(o->log);
    }
done:
    model_free(&s->model);
    model_free(&s->printed);
    export_report_free(&s->ex);
    cJSON_Delete(s->masks_json);
    cJSON_Delete(s->tolerance_json);
    free(s);
    return rc;
}
