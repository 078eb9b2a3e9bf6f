/* The light budget of an evaluation: detector efficiency (mean and 5th
 * percentile), background outside the detectors, and the margin between the
 * winning and the second class score. */
#include "train/train.h"

#include <math.h>
#include <stdlib.h>

#include "core/config.h"

void eval_light_put(float *light, int count, int i, const d2_geom *g, const float *det,
                    double out_energy)
{
    double eff = det_total(g, det), bg = out_energy - eff;
    light[i] = (float)eff;
    light[(size_t)count + i] = (float)(bg > 0 ? bg : 0);
    light[2 * (size_t)count + i] = (float)det_margin(g, det);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

double eval_quantile(float *v, int count, double q)
{
    if (count <= 0) return 0;
    qsort(v, (size_t)count, sizeof *v, cmp_float);
    int k = (int)ceil(q * count) - 1;
    if (k < 0) k = 0;
    if (k >= count) k = count - 1;
    return v[k];
}

void eval_light_finish(eval_result *r, float *light, int count)
{
    if (count <= 0) return;
    const float *eff = light, *bgv = light + count, *mar = light + 2 * (size_t)count;
    double bg = 0, bgf = 0, mg = 0;
    for (int i = 0; i < count; i++) {
        double out = (double)eff[i] + bgv[i];
        bg += bgv[i];
        bgf += out > 0 ? bgv[i] / out : 0;
        mg += mar[i];
    }
    r->background = bg / count;
    r->background_fraction = bgf / count;
    r->margin_mean = mg / count;
    r->efficiency_p5 = eval_quantile(light, count, 0.05);
    r->margin_p5 = eval_quantile(light + 2 * (size_t)count, count, 0.05);
}

void eval_light_json(cJSON *o, const eval_result *r)
{
    cJSON *l = cJSON_AddObjectToObject(o, "light");
    cfg_add_numbers(l, (const cfg_num_item[]){
                        {"detector_efficiency_mean", r->efficiency},
                        {"detector_efficiency_p5", r->efficiency_p5},
                        {"background", r->background},
                        {"background_fraction", r->background_fraction},
                        {"margin_mean", r->margin_mean}, {"margin_p5", r->margin_p5}}, 6);
}
