/* Fuzz target: d2fab run configs (run_config_load). The input is DIR/run.json
 * in a folder that holds a model folder, phase maps, a profile, a link out of
 * the folder and, beside the folder, a model outside it. A config may be
 * accepted only if every path it resolves (model, phase maps, printer and
 * material given as .json paths) stays inside DIR; what is accepted must be
 * within the documented ranges. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/npy.h"
#include "fuzz/fuzzlib.h"
#include "run/run.h"

static char root[PATH_MAX];

static void fixtures(void)
{
    static int done;
    if (done) return;
    done = 1;
    static const uint8_t none[1];
    static const char model[] = "{\"format\": \"d2fab-model\"}";
    float z[16] = {0};
    size_t shape[2] = {4, 4};
    d2_err e = {0};
    if (d2_mkdir_p(fz_path("runcfg/model"), &e)) fz_bug("fixture: %s", e.msg);
    fz_write("runcfg/model/model.json", (const uint8_t *)model, sizeof model - 1);
    fz_write("runcfg-outside/model.json", (const uint8_t *)model, sizeof model - 1);
    fz_write("runcfg/printer.json", none, 0);
    const char *files[] = {"runcfg/p1.npy", "runcfg/p2.npy", "runcfg-outside/p.npy"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        if (npy_write(fz_path(files[i]), NPY_F32, 2, shape, z, &e)) fz_bug("fixture: %s", e.msg);
    if (symlink("../runcfg-outside", fz_path("runcfg/out")) ||
        symlink("../runcfg-outside/p.npy", fz_path("runcfg/out.npy")))
        fz_bug("fixture: cannot make the links");
    if (!realpath(fz_path("runcfg"), root)) fz_bug("fixture: no folder");
}

/* A resolved path must lie in the config's folder. */
static void check_inside(const char *what, const char *p)
{
    char real[PATH_MAX];
    if (!p[0]) return;
    if (!realpath(p, real)) return; /* a profile name, not a path */
    size_t n = strlen(root);
    if (strncmp(real, root, n) || (real[n] != '/' && real[n] != 0))
        fz_bug("run_config_load accepted %s \"%s\", which resolves to %s outside %s", what, p,
               real, root);
}

int fuzz_runcfg(const uint8_t *data, size_t size)
{
    fixtures();
    const char *path = fz_write("runcfg/run.json", data, size);
    run_config c;
    d2_err e = {0};
    int rc = run_config_load(path, &c, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "run_config_load");
        return 0;
    }
    if (!c.model_dir[0] == !c.nphase)
        fz_bug("run_config_load accepted %s model folder and %d phase maps",
               c.model_dir[0] ? "a" : "no", c.nphase);
    check_inside("model", c.model_dir);
    for (int k = 0; k < c.nphase; k++) check_inside("phases.files", c.phase_files[k]);
    if (strchr(c.printer, '/')) check_inside("printer", c.printer);
    if (strchr(c.material, '/')) check_inside("material", c.material);
    if (c.nphase && !(c.phase_pitch_mm > 0 && c.phase_frequency_thz > 0))
        fz_bug("run_config_load accepted phases with pitch %g mm, frequency %g THz",
               c.phase_pitch_mm, c.phase_frequency_thz);
    if (c.test_limit < 0 || !(c.frequency_thz >= 0) || c.mask_count < 0 ||
        c.mask_ndigits < 0 || c.mask_ndigits > 10)
        fz_bug("run_config_load accepted test_limit %d, frequency %g, masks %d x %d",
               c.test_limit, c.frequency_thz, c.mask_ndigits, c.mask_count);
    for (int i = 0; i < c.mask_ndigits; i++)
        if (c.mask_digits[i] < 0 || c.mask_digits[i] > 9)
            fz_bug("run_config_load accepted the digit %d", c.mask_digits[i]);
    run_config_free(&c);
    return 1;
}

FUZZ_ENTRY(fuzz_runcfg)
