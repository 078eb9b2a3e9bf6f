/* The one reader of an export folder (export.json and its layer heights), and
 * loading an export back as a model. Every stage that takes an export (eval,
 * mesh, mask, tolerance) reads it here. */
#include "export/export.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/fileio.h"
#include "core/npy.h"

/* The top-level numbers and the "model", "material" and "printer" sections. */
static int read_sections(export_folder *x, d2_err *e)
{
    const char *path = x->json_path;
    cJSON *root = x->root;
    cfg_ctx c = {path, ""};
    const char *fmt;
    const cJSON *model, *mat;
    long version, n, layers;
    int rc;
    if (!cJSON_IsObject(root))
        return d2_fail(e, D2_EINPUT, "%s: expected a JSON object (an export report)", path);
    if ((rc = cfg_str(&c, root, "format", 1, NULL, &fmt, e))) return rc;
    if (strcmp(fmt, "d2fab-export"))
        return d2_fail(e, D2_EINPUT, "%s: key \"format\": \"%s\", expected \"d2fab-export\"", path,
                       fmt);
    if ((rc = cfg_int(&c, root, "version", 1, 1, 1, 1, &version, e)) ||
        (rc = cfg_num(&c, root, "pitch_mm", 1, 0, 1e-4, 100, &x->pitch_mm, e)) ||
        (rc = cfg_int(&c, root, "neurons", 1, 0, 1, D2_MAX_N, &n, e)) ||
        (rc = cfg_int(&c, root, "layers", 1, 0, 1, D2_MAX_LAYERS, &layers, e)) ||
        (rc = cfg_num(&c, root, "wavelength_mm", 0, 0, 1e-6, 1e6, &x->wavelength_mm, e)) ||
        (rc = cfg_num(&c, root, "frequency_thz", 0, 0, 1e-6, 1e6, &x->frequency_thz, e)) ||
        (rc = cfg_num(&c, root, "base_mm", 0, 0, 0, 1000, &x->base_mm, e)) ||
        (rc = cfg_num(&c, root, "z_step_mm", 0, 0, 0, 10, &x->z_step_mm, e)) ||
        (rc = cfg_object(&c, root, "model", &model, e)) ||
        (rc = cfg_object(&c, root, "material", &mat, e)) ||
        (rc = cfg_object(&c, root, "printer", &x->printer_json, e)))
        return rc;
    x->n = (int)n;
    x->layers = (int)layers;
    if (!model) return d2_fail(e, D2_EINPUT, "%s: missing key \"model\"", path);
    if ((rc = config_read(path, model, &x->g, &x->t, e))) return rc;
    if (x->g.n != n || x->g.layers != layers || fabs(x->g.pitch_mm - x->pitch_mm) > 1e-9 * x->pitch_mm)
        return d2_fail(e, D2_EINPUT, "%s: \"model\" says %d layers of %d x %d at %g mm but the "
                       "export has %ld of %ld x %ld at %g mm", path, x->g.layers, x->g.n, x->g.n,
                       x->g.pitch_mm, layers, n, n, x->pitch_mm);
    if (mat) {
        cfg_ctx mc = {path, "material"};
        const char *name;
        x->have_material = 1;
        if ((rc = cfg_str(&mc, mat, "name", 0, "", &name, e)) ||
            (rc = cfg_num_range(&mc, mat, "index", 1, 0, 1, 10, CFG_LO_OPEN, &x->index, e)) ||
            (rc = cfg_num(&mc, mat, "kappa", 1, 0, 0, 10, &x->kappa, e)))
            return rc;
        snprintf(x->material, sizeof x->material, "%s", name);
    }
    if (x->printer_json) {
        x->have_printer = 1;
        if ((rc = printer_from_json(x->printer_json, path, "printer", &x->printer, e))) return rc;
    }
    return 0;
}

/* layer_files[k].heights_npy: n x n heights, >= 0, named inside dir. */
static int read_heights(export_folder *x, const char *dir, d2_err *e)
{
    const char *path = x->json_path;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(x->root, "layer_files");
    size_t cnt = (size_t)x->n * (size_t)x->n;
    int rc;
    if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) != x->layers)
        return d2_fail(e, D2_EINPUT, "%s: key \"layer_files\": expected an array of %d entries",
                       path, x->layers);
    for (int k = 0; k < x->layers; k++) {
        const cJSON *l = cJSON_GetArrayItem(files, k);
        char kp[32], key[48], lp[PROFILE_PATH_MAX];
        snprintf(kp, sizeof kp, "layer_files[%d]", k);
        snprintf(key, sizeof key, "%s.heights_npy", kp);
        cfg_ctx lc = {path, kp};
        const char *name;
        int rows = 0, cols = 0;
        if (!cJSON_IsObject(l))
            return d2_fail(e, D2_EINPUT, "%s: key \"%s\": expected an object", path, kp);
        if ((rc = cfg_str(&lc, l, "heights_npy", 1, NULL, &name, e)) ||
            (rc = d2_path_inside(dir, name, key, e)) ||
            (rc = d2_path_join(lp, sizeof lp, dir, name, e)) ||
            (rc = npy_read_map(lp, &x->height_mm[k], &rows, &cols, e)))
            return rc;
        if (rows != x->n || cols != x->n)
            return d2_fail(e, D2_EINPUT, "%s: %d x %d heights, expected %d x %d (export.json)", lp,
                           rows, cols, x->n, x->n);
        const float *hv = x->height_mm[k];
        for (size_t i = 0; i < cnt; i++)
            if (!(hv[i] >= 0))
                return d2_fail(e, D2_EINPUT, "%s: height %g mm at row %zu, column %zu: heights "
                               "must be >= 0", lp, (double)hv[i], i / (size_t)x->n,
                               i % (size_t)x->n);
    }
    return 0;
}

void export_folder_free(export_folder *x)
{
    if (!x) return;
    cJSON_Delete(x->root);
    for (int k = 0; k < D2_MAX_LAYERS; k++) free(x->height_mm[k]);
    memset(x, 0, sizeof *x);
}

int export_folder_load(const char *dir, export_folder *x, d2_err *e)
{
    memset(x, 0, sizeof *x);
    int rc;
    if ((rc = d2_path_join(x->json_path, sizeof x->json_path, dir, "export.json", e)) ||
        (rc = cfg_load(x->json_path, &x->root, e)) || (rc = read_sections(x, e)) ||
        (rc = read_heights(x, dir, e))) {
        export_folder_free(x);
        return rc;
    }
    return 0;
}

int export_load_as_model(const char *dir, d2_model *m, d2_err *e)
{
    memset(m, 0, sizeof *m);
    m->test_accuracy = -1;
    export_folder x;
    int rc = export_folder_load(dir, &x, e);
    if (rc) return rc;
    if (!(x.wavelength_mm > 0) || !x.have_material) {
        rc = d2_fail(e, D2_EINPUT, "%s: missing key \"%s\"", x.json_path,
                     x.have_material ? "wavelength_mm" : "material");
        goto fail;
    }
    m->g = x.g;
    m->t = x.t;
    size_t cnt = (size_t)x.n * (size_t)x.n;
    for (int k = 0; k < x.layers; k++) {
        if (!(m->phase[k] = d2_malloc(cnt * sizeof(float), "layer phase", e)) ||
            !(m->height[k] = d2_malloc(cnt * sizeof(float), "layer heights", e))) {
            rc = D2_EIO;
            goto fail;
        }
        /* The heights are kept for the thick-plate model and become the
         * amplitudes in place. */
        float *hv = m->amp[k] = x.height_mm[k];
        x.height_mm[k] = NULL;
        memcpy(m->height[k], hv, cnt * sizeof(float));
        opt_heights_to_transmission(hv, cnt, x.index, x.kappa, x.wavelength_mm, m->phase[k], NULL);
        opt_heights_to_transmission(hv, cnt, x.index, x.kappa, x.wavelength_mm, NULL, hv);
    }
    m->g.wavelength_mm = x.wavelength_mm;
    m->g.coupled = 0; /* amplitudes are explicit */
    m->g.index = x.index;
    m->g.kappa = x.kappa;
    export_folder_free(&x);
    return 0;
fail:
    export_folder_free(&x);
    model_free(m);
    memset(m, 0, sizeof *m);
    return rc;
}

int export_model_load(const char *dir, d2_model *m, int *is_export, d2_err *e)
{
    char path[PROFILE_PATH_MAX + 16];
    int n = snprintf(path, sizeof path, "%s/export.json", dir);
    int x = n > 0 && (size_t)n < sizeof path && access(path, F_OK) == 0;
    if (is_export) *is_export = x;
    return x ? export_load_as_model(dir, m, e) : model_load(dir, m, e);
}
