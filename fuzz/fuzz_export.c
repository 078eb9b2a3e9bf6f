/* Fuzz target: the export folder reader (export_load_as_model) on hostile
 * height maps. The input is layer1_height.npy of an otherwise valid 2-layer
 * 4 x 4 export (export.json from the seed corpus shape, layer2 valid); an
 * accepted folder must give a model of that shape whose amplitudes lie in
 * [0, 1] and whose phases are finite. (fuzz_config fuzzes export.json.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/npy.h"
#include "export/export.h"
#include "fuzz/fuzzlib.h"
#include "optics/optics.h"

static const char export_json[] =
    "{\"format\": \"d2fab-export\", \"version\": 1,"
    " \"model\": {\"geometry\": {\"frequency_thz\": 0.4, \"pitch_mm\": 0.4, \"neurons\": 4,"
    " \"layers\": 2, \"gaps_mm\": [20, 20, 20], \"pad_factor\": 2},"
    " \"input\": {\"aperture_mm\": 1.2, \"dataset\": \"mnist\"},"
    " \"detector\": {\"layout\": \"custom\", \"size_mm\": 0.4,"
    " \"centers_mm\": [[-0.4, 0], [0.4, 0]]}},"
    " \"wavelength_mm\": 0.749481145, \"pitch_mm\": 0.4, \"neurons\": 4, \"layers\": 2,"
    " \"material\": {\"name\": \"verobp\", \"index\": 1.7227, \"kappa\": 0.031},"
    " \"base_mm\": 0.512, \"z_step_mm\": 0.016,"
    " \"layer_files\": [{\"index\": 1, \"heights_npy\": \"layer1_height.npy\"},"
    " {\"index\": 2, \"heights_npy\": \"layer2_height.npy\"}]}";

static void fixtures(void)
{
    static int done;
    if (done) return;
    done = 1;
    float h[16];
    for (int i = 0; i < 16; i++) h[i] = 0.6f + 0.02f * (float)i;
    size_t shape[2] = {4, 4};
    d2_err e = {0};
    fz_write("xport/export.json", (const uint8_t *)export_json, sizeof export_json - 1);
    if (npy_write(fz_path("xport/layer2_height.npy"), NPY_F32, 2, shape, h, &e))
        fz_bug("fixture: %s", e.msg);
    /* The fixture itself must load: otherwise nothing below is tested. */
    if (npy_write(fz_path("xport/layer1_height.npy"), NPY_F32, 2, shape, h, &e))
        fz_bug("fixture: %s", e.msg);
    d2_model m;
    if (export_load_as_model(fz_path("xport"), &m, &e)) fz_bug("fixture refused: %s", e.msg);
    model_free(&m);
}

int fuzz_export(const uint8_t *data, size_t size)
{
    fixtures();
    const char *npy = fz_write("xport/layer1_height.npy", data, size);
    d2_model m;
    d2_err e = {0};
    int rc = export_load_as_model(fz_path("xport"), &m, &e);
    if (rc) {
        fz_check_refusal(rc, &e, npy, "export_load_as_model");
        return 0;
    }
    if (m.g.layers != 2 || m.g.n != 4) fz_bug("export loaded as %d layers of %d", m.g.layers, m.g.n);
    for (int l = 0; l < 2; l++) {
        if (!m.phase[l] || !m.amp[l]) fz_bug("export_load_as_model left layer %d empty", l + 1);
        for (size_t i = 0; i < 16; i++)
            if (!(m.amp[l][i] >= 0 && m.amp[l][i] <= 1) || !isfinite(m.phase[l][i]))
                fz_bug("export_load_as_model: layer %d amplitude %g, phase %g", l + 1,
                       m.amp[l][i], m.phase[l][i]);
    }
    model_free(&m);
    return 1;
}

FUZZ_ENTRY(fuzz_export)
