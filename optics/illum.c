/* Illumination of the input plane: plane wave, Gaussian beam or point
 * source. The forward model (optics/net.c) multiplies every input by this
 * field, so train, eval, export, mask, tolerance and run all see it. */
#include "optics/optics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"

void illum_field(const d2_geom *g, float complex *u)
{
    int n = g->n;
    double c = 0.5 * (n - 1), k = 2 * M_PI / g->wavelength_mm;
    double w = g->illum_waist_mm, z = g->illum_distance_mm;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double x = (j - c) * g->pitch_mm, y = (i - c) * g->pitch_mm, r2 = x * x + y * y;
            float complex v = 1.0f;
            if (g->illum == D2_ILLUM_GAUSSIAN) {
                v = (float)exp(-r2 / (w * w));
            } else if (g->illum == D2_ILLUM_POINT) {
                double R = sqrt(r2 + z * z);
                /* R - z without the cancellation of two close numbers. */
                double ph = k * r2 / (R + z);
                v = (float)(z / R) * (float)cos(ph) + I * (float)(z / R) * (float)sin(ph);
            }
            u[(size_t)i * n + j] = v;
        }
}

int illum_read(const char *path, const char *section, const cJSON *inp, d2_geom *g, d2_err *e)
{
    char key[64];
    snprintf(key, sizeof key, "%s.illumination", section);
    static const char *const keys[] = {"type", "waist_mm", "distance_mm", NULL};
    static const char *const types[] = {"plane", "gaussian", "point", NULL};
    const cJSON *il = inp ? cJSON_GetObjectItemCaseSensitive(inp, "illumination") : NULL;
    cfg_ctx c = {path, key};
    int rc, type = 0;
    g->illum = D2_ILLUM_PLANE;
    g->illum_waist_mm = g->illum_distance_mm = 0;
    if (!il) return 0;
    if (!cJSON_IsObject(il))
        return d2_fail(e, D2_EINPUT, "%s: key \"%s\": expected an object "
                       "{\"type\": \"plane\"}, {\"type\": \"gaussian\", \"waist_mm\": W} or "
                       "{\"type\": \"point\", \"distance_mm\": Z}", path, key);
    if ((rc = cfg_check_keys(&c, il, keys, e)) ||
        (rc = cfg_enum(&c, il, "type", 1, 0, types, &type, e)))
        return rc;
    g->illum = type;
    const char *need = type == D2_ILLUM_GAUSSIAN ? "waist_mm" : type == D2_ILLUM_POINT
                                                                    ? "distance_mm" : NULL;
    for (int k = 1; k < 3; k++)
        if (cJSON_GetObjectItemCaseSensitive(il, keys[k]) && (!need || strcmp(need, keys[k])))
            return d2_fail(e, D2_EINPUT, "%s: key \"%s.%s\" does not go with "
                           "\"type\": \"%s\"", path, key, keys[k], types[type]);
    if (type == D2_ILLUM_GAUSSIAN)
        return cfg_num(&c, il, "waist_mm", 1, 0, 1e-3, 1e5, &g->illum_waist_mm, e);
    if (type != D2_ILLUM_POINT) return 0;
    return cfg_num(&c, il, "distance_mm", 1, 0, 1e-3, 1e7, &g->illum_distance_mm, e);
}

int illum_check(const d2_geom *g, const char *file, d2_err *e)
{
    if (g->illum == D2_ILLUM_GAUSSIAN && !(g->illum_waist_mm > 0))
        return d2_fail(e, D2_EINPUT, "%s: key \"input.illumination.waist_mm\" = %g: must be > 0",
                       file, g->illum_waist_mm);
    if (g->illum != D2_ILLUM_POINT) return 0;
    /* The phase k (R - z) must change by less than pi per pixel at the plane's
     * corner, or the sampled spherical wave aliases. */
    double rmax = M_SQRT2 * 0.5 * g->n * g->pitch_mm, z = g->illum_distance_mm;
    double s = rmax / sqrt(rmax * rmax + z * z), smax = g->wavelength_mm / (2 * g->pitch_mm);
    if (!(z > 0) || s >= smax) {
        double zmin = smax < 1 ? rmax * sqrt(1 / (smax * smax) - 1) : 0;
        return d2_fail(e, D2_EINPUT, "%s: key \"input.illumination.distance_mm\" = %g: a point "
                       "source this close aliases on the %g mm pixel grid at the plane's corner; "
                       "allowed: more than %.4g mm", file, z, g->pitch_mm, zmin);
    }
    return 0;
}

void illum_to_json(const d2_geom *g, cJSON *inp)
{
    cJSON *il = cJSON_AddObjectToObject(inp, "illumination");
    if (g->illum == D2_ILLUM_GAUSSIAN) {
        cJSON_AddStringToObject(il, "type", "gaussian");
        cJSON_AddNumberToObject(il, "waist_mm", g->illum_waist_mm);
    } else if (g->illum == D2_ILLUM_POINT) {
        cJSON_AddStringToObject(il, "type", "point");
        cJSON_AddNumberToObject(il, "distance_mm", g->illum_distance_mm);
    } else {
        cJSON_AddStringToObject(il, "type", "plane");
    }
}
