/* Fuzz target: the PNG reader (img_read_gray, libpng's simplified API) and
 * the export stage's PNG phase-map reader. */
#include <math.h>
#include <stdlib.h>

#include "core/image.h"
#include "export/export.h"
#include "fuzz/fuzzlib.h"

int fuzz_png(const uint8_t *data, size_t size)
{
    const char *path = fz_write("in.png", data, size);
    d2_err e = {0};
    float *px = NULL;
    int w = -1, h = -1, accepted = 0;
    int rc = img_read_gray(path, &w, &h, &px, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "img_read_gray");
        if (px) fz_bug("img_read_gray failed but returned pixels");
    } else {
        accepted = 1;
        if (!px || w < 1 || h < 1) fz_bug("img_read_gray returned %d x %d", w, h);
        for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
            if (!(px[i] >= 0 && px[i] <= 1)) fz_bug("img_read_gray value %g at %zu", px[i], i);
    }
    free(px);

    int n = 0;
    e = (d2_err){0};
    px = NULL;
    rc = exp_read_phase(path, 1, -M_PI, M_PI, &px, &n, NULL, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "exp_read_phase");
        if (px) fz_bug("exp_read_phase failed but returned a map");
    } else {
        if (!px || n < 1 || n > D2_MAX_N) fz_bug("exp_read_phase returned n = %d", n);
        for (size_t i = 0; i < (size_t)n * (size_t)n; i++)
            if (!(px[i] >= -M_PI - 1e-5 && px[i] <= M_PI + 1e-5))
                fz_bug("exp_read_phase phase %g outside -pi..pi", px[i]);
    }
    free(px);
    return accepted;
}

FUZZ_ENTRY(fuzz_png)
