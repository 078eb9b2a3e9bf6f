/* The run config: one JSON file naming the design, the fabrication and the
 * studies; every key checked with the core/config.h readers. */
#include "run/run_int.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/fileio.h"
#include "export/export.h"

void run_config_default(run_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->printer, sizeof c->printer, "objet-connex500");
    snprintf(c->material, sizeof c->material, "verobp");
    snprintf(c->mesh_format, sizeof c->mesh_format, "stl");
    snprintf(c->phase_dataset, sizeof c->phase_dataset, "mnist");
    c->base_mm = NAN;
    c->index = NAN;
    c->kappa = NAN;
    c->levels = -1;
    c->jump_weight = 1.0;
    c->test_limit = 1000;
    c->source_power_mw = 1;
    c->optics = D2_OPTICS_THICK;
    c->thick_limit = 100;
    c->mask_count = 1;
}

/* base_dir/value into out (value itself when base_dir is NULL). A path named
 * in a config file stays inside the config's folder: no absolute path, no
 * "..", no symbolic link out of it, so a config handed over cannot make d2fab
 * read elsewhere; files outside are given on the command line instead. */
static int resolve(const char *file, const char *key, const char *base_dir, const char *value,
                   char *out, size_t cap, d2_err *e)
{
    if (!value[0]) return d2_fail(e, D2_EINPUT, "%s: key \"%s\" is empty", file, key);
    if (base_dir && d2_path_inside(base_dir, value, key, e)) return d2_err_prefix(e, "%s", file);
    const char *dir = value[0] == '/' || !base_dir ? "" : base_dir;
    int n = dir[0] ? snprintf(out, cap, "%s/%s", dir, value) : snprintf(out, cap, "%s", value);
    if (n < 0 || (size_t)n >= cap)
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\": path \"%s\" is too long", file, key, value);
    return 0;
}

static int must_exist(const char *file, const char *key, const char *value, const char *path,
                      int want_dir, d2_err *e)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = \"%s\": %s does not exist (paths are "
                       "relative to the config file's folder)", file, key, value, path);
    if (want_dir && !S_ISDIR(st.st_mode))
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = \"%s\": %s is not a folder", file, key,
                       value, path);
    if (!want_dir && S_ISDIR(st.st_mode))
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\" = \"%s\": %s is a folder, not a file", file,
                       key, value, path);
    return 0;
}

/* Copies a string key into out (cap bytes); absent keys leave out as is. */
static int str_key(const cfg_ctx *c, const cJSON *obj, const char *key, char *out, size_t cap,
                   d2_err *e)
{
    const char *s = NULL;
    int rc = cfg_str(c, obj, key, 0, NULL, &s, e);
    if (rc || !s) return rc;
    if (strlen(s) >= cap)
        return d2_fail(e, D2_EINPUT, "%s: key \"%s%s%s\": \"%.60s...\" is longer than %zu "
                       "characters", c->file, c->path, c->path[0] ? "." : "", key, s, cap - 1);
    snprintf(out, cap, "%s", s);
    return 0;
}

/* An array of whole numbers in lo..hi. */
static int int_array(const cfg_ctx *c, const cJSON *obj, const char *key, int n_max, int lo,
                     int hi, int *out, int *n, d2_err *e)
{
    double v[RUN_MAX_MASKS];
    int rc = cfg_num_array(c, obj, key, 0, n_max, lo, hi, v, n, e);
    if (rc) return rc;
    for (int i = 0; i < *n; i++) {
        if (v[i] != floor(v[i]))
            return d2_fail(e, D2_EINPUT, "%s: key \"%s.%s[%d]\" = %g: must be a whole number",
                           c->file, c->path, key, i, v[i]);
        out[i] = (int)v[i];
    }
    return 0;
}

/* The lab's own test set for bare maps: "dataset": "folder" with "test" (a
 * folder of class sub-folders 0..9 of PNGs) or "idx" with "test_images" and
 * "test_labels"; inside the config's folder, made absolute so that
 * model.json and export.json name the same files from anywhere. */
static int read_phase_data(const char *file, const char *base_dir, const cJSON *ph, int ds,
                           run_config *c, d2_err *e)
{
    static const char *const keys[] = {"test", "test_images", "test_labels"};
    char *dst[] = {c->phase_data.test, c->phase_data.test, c->phase_data.test_labels};
    int folder = ds == 2, idx = ds == 3, rc;
    memset(&c->phase_data, 0, sizeof c->phase_data);
    for (int k = 0; k < 3; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(ph, keys[k]);
        int wanted = k == 0 ? folder : idx;
        char key[32], path[RUN_PATH_MAX];
        snprintf(key, sizeof key, "phases.%s", keys[k]);
        if (!v && !wanted) continue;
        if (!v)
            return d2_fail(e, D2_EINPUT, "%s: missing key \"%s\": \"phases.dataset\": \"%s\" "
                           "needs %s (paths relative to the config file)", file, key,
                           folder ? "folder" : "idx",
                           folder ? "\"test\", a folder with sub-folders 0 to 9 of PNG images"
                                  : "\"test_images\" and \"test_labels\", an IDX pair");
        if (!wanted)
            return d2_fail(e, D2_EINPUT, "%s: key \"%s\" is not used with \"phases.dataset\": "
                           "\"%s\"; \"test\" goes with \"folder\", \"test_images\" and "
                           "\"test_labels\" with \"idx\"", file, key, c->phase_dataset);
        if (!cJSON_IsString(v))
            return d2_fail(e, D2_EINPUT, "%s: key \"%s\": expected a path (a string)", file, key);
        if ((rc = resolve(file, key, base_dir, v->valuestring, path, sizeof path, e)) ||
            (rc = must_exist(file, key, v->valuestring, path, folder, e)))
            return rc;
        char *abs = realpath(path, NULL);
        if (!abs || strlen(abs) >= D2_DATA_PATH) {
            rc = d2_fail(e, D2_EINPUT, "%s: key \"%s\" = \"%s\": %s", file, key,
                         v->valuestring, abs ? "the full path is too long" : strerror(errno));
            free(abs);
            return rc;
        }
        memcpy(dst[k], abs, strlen(abs) + 1);
        free(abs);
    }
    return 0;
}

static int read_phases(const char *file, const char *base_dir, const cJSON *ph, run_config *c,
                       d2_err *e)
{
    static const char *const keys[] = {"files", "pitch_mm", "frequency_thz", "gaps_mm",
                                       "png_range_rad", "dataset", "illumination", "test",
                                       "test_images", "test_labels", NULL};
    static const char *const datasets[] = {"mnist", "fashion", "folder", "idx", NULL};
    cfg_ctx pc = {file, "phases"};
    int rc, ds = 0, nr = 0;
    double range[2];
    if ((rc = cfg_check_keys(&pc, ph, keys, e))) return rc;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(ph, "files");
    if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) < 1 ||
        cJSON_GetArraySize(files) > D2_MAX_LAYERS)
        return d2_fail(e, D2_EINPUT, "%s: key \"phases.files\": expected an array of 1 to %d "
                       "phase map files (.npy float32 radians, or grey PNG with png_range_rad), "
                       "one per layer in order", file, D2_MAX_LAYERS);
    int i = 0;
    for (const cJSON *f = files->child; f; f = f->next, i++) {
        char key[48];
        snprintf(key, sizeof key, "phases.files[%d]", i);
        if (!cJSON_IsString(f))
            return d2_fail(e, D2_EINPUT, "%s: key \"%s\": expected a file name", file, key);
        if ((rc = resolve(file, key, base_dir, f->valuestring, c->phase_files[i],
                          sizeof c->phase_files[i], e)) ||
            (rc = must_exist(file, key, f->valuestring, c->phase_files[i], 0, e)))
            return rc;
    }
    c->nphase = i;
    if ((rc = cfg_num_range(&pc, ph, "pitch_mm", 1, 0, 0, 100, CFG_LO_OPEN, &c->phase_pitch_mm,
                            e)) ||
        (rc = cfg_num_range(&pc, ph, "frequency_thz", 1, 0, 0, 1e4, CFG_LO_OPEN,
                            &c->phase_frequency_thz, e)) ||
        (rc = cfg_num_array(&pc, ph, "gaps_mm", 0, D2_MAX_LAYERS + 1, 1e-3, 1e5, c->phase_gaps_mm,
                            &c->phase_ngaps, e)) ||
        (rc = cfg_num_array(&pc, ph, "png_range_rad", 0, 2, -1e4, 1e4, range, &nr, e)) ||
        (rc = cfg_enum(&pc, ph, "dataset", 0, 0, datasets, &ds, e)))
        return rc;
    if (c->phase_ngaps > 1 && c->phase_ngaps != c->nphase + 1)
        return d2_fail(e, D2_EINPUT, "%s: key \"phases.gaps_mm\" has %d numbers: give 1 (every "
                       "gap) or %d (input -> layer 1, ..., layer %d -> detector)", file,
                       c->phase_ngaps, c->nphase + 1, c->nphase);
    if (nr == 1 || (nr == 2 && !(range[1] > range[0])))
        return d2_fail(e, D2_EINPUT, "%s: key \"phases.png_range_rad\": expected [LO, HI] with "
                       "LO < HI (radians for PNG values 0 and 1)", file);
    if (nr == 2) {
        c->phase_png_range = 1;
        c->phase_png_lo_rad = range[0];
        c->phase_png_hi_rad = range[1];
    }
    snprintf(c->phase_dataset, sizeof c->phase_dataset, "%s", datasets[ds]);
    if ((rc = read_phase_data(file, base_dir, ph, ds, c, e))) return rc;
    /* Checked for aliasing against the plane once the maps give its size. */
    d2_geom ig;
    geom_default(&ig);
    if ((rc = illum_read(file, "phases", ph, &ig, e))) return rc;
    c->phase_illum = ig.illum;
    c->phase_illum_waist_mm = ig.illum_waist_mm;
    c->phase_illum_distance_mm = ig.illum_distance_mm;
    return 0;
}

static int read_export(const char *file, const cJSON *ex, run_config *c, d2_err *e)
{
    static const char *const keys[] = {"base_mm", "levels", "phase_offset", "jump_weight",
                                       "index", "kappa", "force", NULL};
    cfg_ctx xc = {file, "export"};
    long lv;
    int rc;
    if ((rc = cfg_check_keys(&xc, ex, keys, e)) ||
        (rc = cfg_num(&xc, ex, "base_mm", 0, NAN, 0, 1000, &c->base_mm, e)) ||
        (rc = cfg_int(&xc, ex, "levels", 0, -1, -1, 4096, &lv, e)) ||
        (rc = cfg_num(&xc, ex, "jump_weight", 0, 1, 0, 1e6, &c->jump_weight, e)) ||
        (rc = cfg_num_range(&xc, ex, "index", 0, NAN, 1, 10, CFG_LO_OPEN, &c->index, e)) ||
        (rc = cfg_num(&xc, ex, "kappa", 0, NAN, 0, 10, &c->kappa, e)) ||
        (rc = cfg_bool(&xc, ex, "force", 0, 0, &c->force, e)))
        return rc;
    if (lv == 1)
        return d2_fail(e, D2_EINPUT, "%s: key \"export.levels\" = 1: use -1 (the model's), 0 "
                       "(Z step only) or 2..4096 levels per 2 pi", file);
    c->levels = (int)lv;
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(ex, "phase_offset");
    if (off) {
        if (cJSON_IsString(off) && !strcmp(off->valuestring, "auto")) {
            c->offset_mode = EXP_OFFSET_AUTO;
        } else if (cJSON_IsNumber(off) && isfinite(off->valuedouble) &&
                   fabs(off->valuedouble) <= 1e4) {
            c->offset_mode = EXP_OFFSET_FIXED;
            c->offset_rad = off->valuedouble;
        } else {
            return d2_fail(e, D2_EINPUT, "%s: key \"export.phase_offset\": expected \"auto\" or "
                           "a number of radians in [-1e4, 1e4]", file);
        }
    }
    return 0;
}

static int read_masks(const char *file, const cJSON *mk, run_config *c, d2_err *e)
{
    static const char *const keys[] = {"digits", "count", "test_indices", "mode", "threshold",
                                       "thick_mm", NULL};
    static const char *const modes[] = {"stencil", "carrier-recess", "carrier-relief", NULL};
    cfg_ctx mc = {file, "masks"};
    long count;
    int rc;
    if ((rc = cfg_check_keys(&mc, mk, keys, e)) ||
        (rc = int_array(&mc, mk, "digits", 10, 0, 9, c->mask_digits, &c->mask_ndigits, e)) ||
        (rc = cfg_int(&mc, mk, "count", 0, 1, 1, 16, &count, e)) ||
        (rc = int_array(&mc, mk, "test_indices", RUN_MAX_MASKS, 0, 9999, c->mask_indices,
                        &c->mask_nindices, e)) ||
        (rc = cfg_enum(&mc, mk, "mode", 0, 0, modes, &c->mask_mode, e)) ||
        (rc = cfg_num_range(&mc, mk, "threshold", 0, 0, 0, 1, CFG_LO_OPEN | CFG_HI_OPEN,
                            &c->mask_threshold, e)) ||
        (rc = cfg_num(&mc, mk, "thick_mm", 0, 0, 0.1, 50, &c->mask_thick_mm, e)))
        return rc;
    c->mask_count = (int)count;
    if (c->mask_ndigits * c->mask_count + c->mask_nindices > RUN_MAX_MASKS)
        return d2_fail(e, D2_EINPUT, "%s: key \"masks\": %d digits x count %d + %d test indices "
                       "make more than %d masks", file, c->mask_ndigits, c->mask_count,
                       c->mask_nindices, RUN_MAX_MASKS);
    if (!c->mask_ndigits && !c->mask_nindices)
        return d2_fail(e, D2_EINPUT, "%s: key \"masks\": give \"digits\" (e.g. [0, 6, 8, 9] with "
                       "\"count\") or \"test_indices\", or leave \"masks\" out for no masks", file);
    return 0;
}

/* The "tolerance" section is the tolerance stage's own config: its reader
 * checks it (when this build has the stage), and the run keeps a copy. */
static int read_tolerance(const char *file, const cJSON *tl, run_config *c, d2_err *e)
{
    int rc = run_tolerance_check(file, tl, e);
    if (rc) return rc;
    if (!(c->tolerance = cJSON_Duplicate(tl, 1)))
        return d2_fail(e, D2_EIO, "%s: out of memory copying \"tolerance\"", file);
    return 0;
}

void run_config_free(run_config *c)
{
    if (!c) return;
    cJSON_Delete(c->tolerance);
    c->tolerance = NULL;
}

static int read_config(const char *name, const char *base_dir, const cJSON *root, run_config *c,
                       d2_err *e)
{
    static const char *const keys[] = {"notes", "model", "phases", "printer", "material",
                                       "frequency_thz", "test_limit", "optics", "thick_limit",
                                       "export", "mesh", "masks", "tolerance", "source_power_mw",
                                       "print_time", NULL};
    static const char *const formats[] = {"stl", "3mf", "obj", "ply", "glb", NULL};
    static const char *const optics_names[] = {"thin", "thick", NULL};
    static const char *const time_models[] = {"layers", "slicer", NULL};
    run_config_default(c);
    snprintf(c->path, sizeof c->path, "%s", name);
    cfg_ctx top = {name, ""};
    const cJSON *ph, *ex, *me, *mk, *tl;
    const char *notes;
    char model[RUN_PATH_MAX] = "";
    long limit, tlimit;
    int rc, fmt = 0;
    if (!cJSON_IsObject(root))
        return d2_fail(e, D2_EINPUT, "%s: expected a JSON object (a run config)", name);
    if ((rc = cfg_check_keys(&top, root, keys, e)) ||
        (rc = cfg_str(&top, root, "notes", 0, NULL, &notes, e)) ||
        (rc = str_key(&top, root, "model", model, sizeof model, e)) ||
        (rc = cfg_object(&top, root, "phases", &ph, e)) ||
        (rc = str_key(&top, root, "printer", c->printer, sizeof c->printer, e)) ||
        (rc = str_key(&top, root, "material", c->material, sizeof c->material, e)) ||
        (rc = cfg_num(&top, root, "frequency_thz", 0, 0, 0, 1e4, &c->frequency_thz, e)) ||
        (rc = cfg_int(&top, root, "test_limit", 0, 1000, 0, 10000000, &limit, e)) ||
        (rc = cfg_num(&top, root, "source_power_mw", 0, 1, 1e-9, 1e6, &c->source_power_mw, e)) ||
        (rc = cfg_enum(&top, root, "optics", 0, D2_OPTICS_THICK, optics_names, &c->optics, e)) ||
        (rc = cfg_int(&top, root, "thick_limit", 0, 100, 0, 10000000, &tlimit, e)) ||
        (rc = cfg_enum(&top, root, "print_time", 0, 0, time_models, &c->print_time_slicer, e)) ||
        (rc = cfg_object(&top, root, "export", &ex, e)) ||
        (rc = cfg_object(&top, root, "mesh", &me, e)) ||
        (rc = cfg_object(&top, root, "masks", &mk, e)) ||
        (rc = cfg_object(&top, root, "tolerance", &tl, e)))
        return rc;
    c->test_limit = (int)limit;
    c->thick_limit = (int)tlimit;
    if (!model[0] == !ph)
        return d2_fail(e, D2_EINPUT, "%s: give either \"model\" (a model folder) or \"phases\" "
                       "(phase map files with pitch_mm and frequency_thz), not %s", name,
                       ph ? "both" : "neither");
    if (model[0]) {
        char probe[RUN_PATH_MAX + 16];
        if ((rc = resolve(name, "model", base_dir, model, c->model_dir, sizeof c->model_dir,
                          e)) ||
            (rc = must_exist(name, "model", model, c->model_dir, 1, e)))
            return rc;
        snprintf(probe, sizeof probe, "%s/model.json", c->model_dir);
        struct stat st;
        if (stat(probe, &st) != 0)
            return d2_fail(e, D2_EINPUT, "%s: key \"model\" = \"%s\": %s holds no model.json "
                           "(a model folder is written by d2fab train; for phase maps trained "
                           "elsewhere use \"phases\")", name, model, c->model_dir);
    } else if ((rc = read_phases(name, base_dir, ph, c, e))) {
        return rc;
    }
    if (ex && (rc = read_export(name, ex, c, e))) return rc;
    if (me) {
        static const char *const mkeys[] = {"format", NULL};
        cfg_ctx mc = {name, "mesh"};
        if ((rc = cfg_check_keys(&mc, me, mkeys, e)) ||
            (rc = cfg_enum(&mc, me, "format", 0, 0, formats, &fmt, e)))
            return rc;
        snprintf(c->mesh_format, sizeof c->mesh_format, "%s", formats[fmt]);
    }
    if (c->print_time_slicer && fmt > 2)
        return d2_fail(e, D2_EINPUT, "%s: \"print_time\": \"slicer\" needs parts PrusaSlicer "
                       "reads: \"mesh\": {\"format\": \"stl\", \"3mf\" or \"obj\"}, not "
                       "\"%s\"", name, formats[fmt]);
    if (mk && (rc = read_masks(name, mk, c, e))) return rc;
    if (tl && (rc = read_tolerance(name, tl, c, e))) return rc;
    /* Printer and material names given as paths are relative to the config. */
    char tmp[RUN_PATH_MAX];
    const char *kn[2] = {"printer", "material"};
    char *kv[2] = {c->printer, c->material};
    for (int i = 0; i < 2; i++) {
        size_t len = strlen(kv[i]);
        if (!strchr(kv[i], '/') && !(len > 5 && !strcmp(kv[i] + len - 5, ".json"))) continue;
        if ((rc = resolve(name, kn[i], base_dir, kv[i], tmp, sizeof tmp, e)) ||
            (rc = must_exist(name, kn[i], kv[i], tmp, 0, e)))
            return rc;
        snprintf(kv[i], RUN_PATH_MAX, "%s", tmp);
    }
    return 0;
}

int run_config_from_json(const char *name, const char *base_dir, const cJSON *root,
                         run_config *c, d2_err *e)
{
    int rc = read_config(name, base_dir, root, c, e);
    if (rc) run_config_free(c);
    return rc;
}

int run_config_load(const char *path, run_config *c, d2_err *e)
{
    cJSON *root = NULL;
    char dir[RUN_PATH_MAX];
    int rc = cfg_load(path, &root, e);
    if (rc) return rc;
    snprintf(dir, sizeof dir, "%s", path);
    rc = run_config_from_json(path, dirname(dir), root, c, e);
    cJSON_Delete(root);
    return rc;
}
