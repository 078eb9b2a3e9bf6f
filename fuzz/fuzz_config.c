/* Fuzz target: JSON configs. The input is read as
 *   - a training config (cfg_load + config_read): what is accepted must
 *     survive config_to_json -> config_read unchanged;
 *   - DIR/model.json of a model folder (model_load), beside small valid
 *     layer files, a link out of the folder and a file outside it: a model
 *     may load only if every layer file it names stays inside DIR;
 *   - DIR/export.json of an export folder (export_load_as_model), likewise
 *     for heights_npy. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/npy.h"
#include "export/export.h"
#include "fuzz/fuzzlib.h"
#include "optics/optics.h"

/* Layer files for n = 4 models, a file outside the folders and links to it. */
static void fixtures(void)
{
    static int done;
    if (done) return;
    done = 1;
    float z[16] = {0}, h[16];
    for (int i = 0; i < 16; i++) h[i] = 0.5f + 0.01f * (float)i;
    size_t shape[2] = {4, 4};
    d2_err e = {0};
    static const uint8_t none[1];
    fz_write("model/.keep", none, 0);
    fz_write("export/.keep", none, 0);
    const char *files[] = {"model/layer1.npy", "model/layer2.npy", "model/layer3.npy",
                           "outside.npy"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        if (npy_write(fz_path(files[i]), NPY_F32, 2, shape, z, &e)) fz_bug("fixture: %s", e.msg);
    const char *hf[] = {"export/layer1_height.npy", "export/layer2_height.npy"};
    for (size_t i = 0; i < 2; i++)
        if (npy_write(fz_path(hf[i]), NPY_F32, 2, shape, h, &e)) fz_bug("fixture: %s", e.msg);
    if (symlink("../outside.npy", fz_path("model/out.npy")) ||
        symlink("../outside.npy", fz_path("export/out.npy")))
        fz_bug("fixture: cannot make the links");
}

static void same_d(const char *what, double a, double b)
{
    if (!(a == b)) fz_bug("config round trip changed %s: %.17g -> %.17g", what, a, b);
}

static void same_i(const char *what, long a, long b)
{
    if (a != b) fz_bug("config round trip changed %s: %ld -> %ld", what, a, b);
}

static void round_trip(const d2_geom *g, const d2_train_opts *t)
{
    cJSON *j = config_to_json(g, t);
    d2_geom g2;
    d2_train_opts t2;
    d2_err e = {0};
    if (!j) fz_bug("config_to_json returned NULL");
    if (config_read("round-trip", j, &g2, &t2, &e))
        fz_bug("config_read refused what config_to_json wrote: %s", e.msg);
    cJSON_Delete(j);
    same_d("wavelength_mm", g->wavelength_mm, g2.wavelength_mm);
    same_d("pitch_mm", g->pitch_mm, g2.pitch_mm);
    same_i("neurons", g->n, g2.n);
    same_i("layers", g->layers, g2.layers);
    for (int k = 0; k <= g->layers; k++) same_d("gaps_mm", g->gap_mm[k], g2.gap_mm[k]);
    same_i("pad_factor", g->pad, g2.pad);
    same_d("aperture_mm", g->aperture_mm, g2.aperture_mm);
    same_i("detectors", g->ndet, g2.ndet);
    same_d("detector.size_mm", g->det_size_mm, g2.det_size_mm);
    for (int k = 0; k < g->ndet; k++) {
        same_d("detector x", g->det_x_mm[k], g2.det_x_mm[k]);
        same_d("detector y", g->det_y_mm[k], g2.det_y_mm[k]);
    }
    same_i("coupled", g->coupled, g2.coupled);
    same_d("index", g->index, g2.index);
    same_d("kappa", g->kappa, g2.kappa);
    same_d("base_mm", g->base_mm, g2.base_mm);
    same_d("max_relief_mm", g->max_relief_mm, g2.max_relief_mm);
    if (strcmp(t->dataset, t2.dataset)) fz_bug("config round trip changed the data set");
    if (memcmp(&t->data, &t2.data, sizeof t->data))
        fz_bug("config round trip changed the data set's paths");
    same_i("illumination", g->illum, g2.illum);
    same_d("illumination waist_mm", g->illum_waist_mm, g2.illum_waist_mm);
    same_d("illumination distance_mm", g->illum_distance_mm, g2.illum_distance_mm);
    same_i("loss", t->loss, t2.loss);
    same_d("temperature", t->temperature, t2.temperature);
    same_d("learning_rate", t->lr, t2.lr);
    same_d("lr_decay", t->lr_decay, t2.lr_decay);
    same_i("batch", t->batch, t2.batch);
    same_i("epochs", t->epochs, t2.epochs);
    same_i("seed", (long)t->seed, (long)t2.seed);
    same_i("train_limit", t->train_limit, t2.train_limit);
    same_i("test_limit", t->test_limit, t2.test_limit);
    same_d("jitter_xy_mm", t->jitter_xy_mm, t2.jitter_xy_mm);
    same_d("jitter_z_mm", t->jitter_z_mm, t2.jitter_z_mm);
    same_d("jitter_rotation_deg", t->jitter_rot_deg, t2.jitter_rot_deg);
    same_i("quantize_levels", t->quant_levels, t2.quant_levels);
    same_d("quantize_z_step_mm", t->quant_z_step_mm, t2.quant_z_step_mm);
}

/* A file name from a config that a loader accepted must stay inside. */
static void check_inside(const char *what, const char *name)
{
    if (!name) fz_bug("%s accepted a layer without a file name", what);
    if (name[0] == '/' || !strcmp(name, "out.npy"))
        fz_bug("%s accepted the layer file \"%s\", outside its folder", what, name);
    for (const char *p = name; *p;) {
        size_t len = strcspn(p, "/");
        if (len == 2 && p[0] == '.' && p[1] == '.')
            fz_bug("%s accepted the layer file \"%s\", outside its folder", what, name);
        p += len;
        while (*p == '/') p++;
    }
}

int fuzz_config(const uint8_t *data, size_t size)
{
    fixtures();
    int accepted = 0;
    const char *path = fz_write("config.json", data, size);
    cJSON *root = NULL;
    d2_err e = {0};
    int rc = cfg_load(path, &root, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "cfg_load");
        if (root) fz_bug("cfg_load failed but returned a tree");
    } else {
        d2_geom g;
        d2_train_opts t;
        rc = config_read(path, root, &g, &t, &e);
        if (rc) {
            fz_check_refusal(rc, &e, path, "config_read");
        } else {
            accepted = 1;
            round_trip(&g, &t);
        }
    }

    /* The same text as a model folder's model.json. */
    const char *mj = fz_write("model/model.json", data, size);
    d2_model m;
    e = (d2_err){0};
    rc = model_load(fz_path("model"), &m, &e);
    if (rc) {
        fz_check_refusal(rc, &e, NULL, "model_load");
        if (!strstr(e.msg, fz_dir())) fz_bug("model_load: the message names no file: %s", e.msg);
    } else {
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
        for (int l = 0; l < m.g.layers; l++) {
            const cJSON *it = cJSON_GetArrayItem(layers, l);
            check_inside("model_load", cJSON_IsString(it) ? it->valuestring : NULL);
            if (!m.phase[l]) fz_bug("model_load left layer %d without phases", l + 1);
        }
        model_free(&m);
    }
    (void)mj;

    /* And as an export folder's export.json. */
    fz_write("export/export.json", data, size);
    e = (d2_err){0};
    rc = export_load_as_model(fz_path("export"), &m, &e);
    if (rc) {
        fz_check_refusal(rc, &e, NULL, "export_load_as_model");
        if (!strstr(e.msg, fz_dir()))
            fz_bug("export_load_as_model: the message names no file: %s", e.msg);
    } else {
        const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "layer_files");
        for (int l = 0; l < m.g.layers; l++) {
            const cJSON *f = cJSON_GetArrayItem(files, l);
            const cJSON *h = cJSON_GetObjectItemCaseSensitive(f, "heights_npy");
            check_inside("export_load_as_model", cJSON_IsString(h) ? h->valuestring : NULL);
            if (!m.phase[l] || !m.amp[l]) fz_bug("export_load_as_model left layer %d empty", l + 1);
            for (size_t i = 0; i < (size_t)m.g.n * (size_t)m.g.n; i++)
                if (!(m.amp[l][i] >= 0 && m.amp[l][i] <= 1) || !isfinite(m.phase[l][i]))
                    fz_bug("export_load_as_model: amplitude %g, phase %g", m.amp[l][i],
                           m.phase[l][i]);
        }
        model_free(&m);
    }
    cJSON_Delete(root);
    return accepted;
}

FUZZ_ENTRY(fuzz_config)
