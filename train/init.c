/* Starting a training run from another model's phases (train --init), and
 * the provenance model.json keeps of it. */
#include <string.h>

#include "train/train.h"

cJSON *model_provenance(const d2_model *m, const char *dir)
{
    cJSON *p = cJSON_CreateObject(), *cfg = config_to_json(&m->g, &m->t);
    cJSON *tr = cfg ? cJSON_DetachItemFromObjectCaseSensitive(cfg, "training") : NULL;
    cJSON_Delete(cfg);
    if (!p || !tr || !cJSON_AddStringToObject(p, "model", dir) ||
        !cJSON_AddItemToObject(p, "training", tr)) {
        if (!cJSON_GetObjectItemCaseSensitive(p, "training")) cJSON_Delete(tr);
        cJSON_Delete(p);
        return NULL;
    }
    cJSON *hist = m->history ? cJSON_Duplicate(m->history, 1) : cJSON_CreateArray();
    int ok = hist && cJSON_AddItemToObject(p, "history", hist);
    if (!ok) cJSON_Delete(hist);
    if (ok && m->test_accuracy >= 0)
        ok = cJSON_AddNumberToObject(p, "test_accuracy", m->test_accuracy) != NULL;
    if (ok) ok = cJSON_AddNumberToObject(p, "train_seconds", m->train_seconds) != NULL;
    if (ok && m->init) {
        cJSON *from = cJSON_Duplicate(m->init, 1);
        ok = from && cJSON_AddItemToObject(p, "initialised_from", from);
        if (!ok) cJSON_Delete(from);
    }
    if (!ok) {
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

int train_init_from(d2_model *m, const char *init_dir, const char *cfg_name, d2_err *e)
{
    d2_model s0;
    int rc = model_load(init_dir, &s0, e);
    if (rc) return rc;
    char diff[256];
    if (!geom_same_optics(&s0.g, &m->g, diff, sizeof diff)) {
        rc = d2_fail(e, D2_EINPUT, "--init %s: not the geometry of %s (%s); phases carry over "
                     "only to the same geometry", init_dir, cfg_name, diff);
        goto done;
    }
    cJSON *prov = model_provenance(&s0, init_dir);
    if (!prov) {
        rc = d2_fail(e, D2_EIO, "--init %s: out of memory recording where the model came from",
                     init_dir);
        goto done;
    }
    for (int l = 0; l < m->g.layers; l++)
        memcpy(m->phase[l], s0.phase[l], sizeof(float) * m->g.n * m->g.n);
    cJSON_Delete(m->init);
    m->init = prov;
done:
    model_free(&s0);
    return rc;
}
