/* Starting a training run from another model's phases (train --init), and
 * the provenance model.json keeps of it. */
#include <math.h>
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

/* The gaps of the model in init (s0) as the config's geometry (g) means
 * them. A thin model's gaps run datum to datum (phase screens at the flat
 * faces); in a thick config they are air gaps between plates that training
 * makes base + relief limit thick. Fills `as_cfg` and returns 0, or fails
 * (D2_EINPUT) where there is no such reading: a thick model into a thin
 * config, other relief sides, or plates that do not fit. */
static int init_gaps(const d2_geom *s0, const d2_geom *g, const char *init_dir,
                     const char *cfg_name, double *as_cfg, d2_err *e)
{
    int L = g->layers;
    if (s0->optics == g->optics) {
        if (g->optics == D2_OPTICS_THICK && s0->relief_side != g->relief_side)
            return d2_fail(e, D2_EINPUT, "--init %s: its relief faces the %s, %s's the %s; a "
                           "thick model carries over only to the same relief side", init_dir,
                           s0->relief_side == D2_RELIEF_SOURCE ? "source" : "detector", cfg_name,
                           g->relief_side == D2_RELIEF_SOURCE ? "source" : "detector");
        for (int k = 0; k <= L; k++) as_cfg[k] = s0->gap_mm[k];
        return 0;
    }
    if (s0->optics == D2_OPTICS_THICK)
        return d2_fail(e, D2_EINPUT, "--init %s: a thick-plate model (air gaps) cannot start the "
                       "thin model of %s (phase screens, gaps datum to datum); train thick, or "
                       "start from a thin model", init_dir, cfg_name);
    double plate[D2_MAX_LAYERS];
    for (int l = 0; l < L; l++) plate[l] = thick_plate_mm(g);
    d2_err ge = {0};
    if (thick_air_gaps(g, s0->gap_mm, plate, as_cfg, &ge))
        return d2_fail(e, D2_EINPUT, "--init %s (thin, gaps datum to datum) into the thick "
                       "plates of %s: %s", init_dir, cfg_name, ge.msg);
    return 0;
}

/* "[a, b, ...]" of n gaps into buf. */
static const char *gap_list(const double *v, int n, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%.6g", i ? ", " : "[", v[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* What model.json says of the gaps when a thin model started a thick one. */
static int note_gaps(cJSON *prov, const d2_geom *s0, const d2_geom *g, const double *as_cfg,
                     int regap)
{
    cJSON *o = cJSON_AddObjectToObject(prov, "gaps");
    if (!o) return 0;
    cJSON *d = cJSON_AddArrayToObject(o, "datum_to_datum_mm"), *a = cJSON_AddArrayToObject(o, "as_air_gaps_mm");
    for (int k = 0; d && a && k <= g->layers; k++) {
        cJSON_AddItemToArray(d, cJSON_CreateNumber(s0->gap_mm[k]));
        cJSON_AddItemToArray(a, cJSON_CreateNumber(as_cfg[k]));
    }
    return d && a && cJSON_AddNumberToObject(o, "plate_mm", thick_plate_mm(g)) &&
           cJSON_AddStringToObject(o, "assembly", regap ? "the config's air gaps, not the init's "
                                   "assembly (--init-regap)" : "the init's assembly");
}

/* Phases of plate l of a thick config from an export's heights: the relief
 * above the config's base, so the plates start as printed. */
static int phases_from_heights(d2_model *m, const d2_model *s0, const char *init_dir, d2_err *e)
{
    const d2_geom *g = &m->g;
    size_t nn = (size_t)g->n * g->n;
    double P = g->wavelength_mm / (g->index - 1.0), top = thick_plate_mm(g);
    double tol = 0.01; /* a printer's rounding to its Z grid (objet-connex500: 0.016 mm) */
    for (int l = 0; l < g->layers; l++)
        for (size_t i = 0; i < nn; i++) {
            double h = s0->height[l][i];
            if (!(h >= g->base_mm - tol && h <= top + tol))
                return d2_fail(e, D2_EINPUT, "--init %s: layer %d pixel %zu is %g mm high, "
                               "outside the config's plate [%g, %g] mm (material.base_mm and "
                               "the relief limit); export with the config's base", init_dir,
                               l + 1, i, h, g->base_mm, top);
        }
    for (int l = 0; l < g->layers; l++)
        for (size_t i = 0; i < nn; i++) {
            /* a pillar of the full relief stays one (2 pi would wrap to no pillar) */
            double r = fmin(fmax(s0->height[l][i] - g->base_mm, 0), P * (1 - 1e-6));
            m->phase[l][i] = (float)(2.0 * M_PI * r / P);
        }
    return 0;
}

int train_init_from(d2_model *m, const char *init_dir, const char *cfg_name, int regap, d2_err *e)
{
    d2_model s0;
    int rc = model_load(init_dir, &s0, e);
    if (rc) return rc;
    rc = train_init_model(m, &s0, init_dir, cfg_name, regap, e);
    model_free(&s0);
    return rc;
}

int train_init_model(d2_model *m, const d2_model *s0p, const char *init_dir, const char *cfg_name,
                     int regap, d2_err *e)
{
    const d2_model s0 = *s0p;
    int rc = 0;
    char diff[256], want[256], have[256];
    double as_cfg[D2_MAX_LAYERS + 1];
    d2_geom s1 = s0.g;
    int same_shape = s1.layers == m->g.layers && s1.n == m->g.n;
    if (same_shape) {
        if ((rc = init_gaps(&s0.g, &m->g, init_dir, cfg_name, as_cfg, e))) goto done;
        for (int k = 0; k <= m->g.layers; k++) s1.gap_mm[k] = regap ? m->g.gap_mm[k] : as_cfg[k];
    }
    if (!geom_same_optics(&s1, &m->g, diff, sizeof diff)) {
        if (same_shape && s0.g.optics != m->g.optics)
            rc = d2_fail(e, D2_EINPUT, "--init %s: its assembly (gaps %s datum to datum) has "
                         "air gaps %s mm beside %s's plates of %.6g mm, the config's gaps_mm are "
                         "%s; set those for the same assembly, or pass --init-regap to start "
                         "from its phases in the config's spacing", init_dir,
                         gap_list(s0.g.gap_mm, s0.g.layers + 1, diff, sizeof diff),
                         gap_list(as_cfg, m->g.layers + 1, want, sizeof want), cfg_name,
                         thick_plate_mm(&m->g),
                         gap_list(m->g.gap_mm, m->g.layers + 1, have, sizeof have));
        else
            rc = d2_fail(e, D2_EINPUT, "--init %s: not the geometry of %s (%s); phases carry "
                         "over only to the same geometry", init_dir, cfg_name, diff);
        goto done;
    }
    cJSON *prov = model_provenance(&s0, init_dir);
    if (prov && s0.g.optics != m->g.optics && !note_gaps(prov, &s0.g, &m->g, as_cfg, regap)) {
        cJSON_Delete(prov);
        prov = NULL;
    }
    if (!prov) {
        rc = d2_fail(e, D2_EIO, "--init %s: out of memory recording where the model came from",
                     init_dir);
        goto done;
    }
    if (s0.height[0] && m->g.optics == D2_OPTICS_THICK) {
        if ((rc = phases_from_heights(m, &s0, init_dir, e))) {
            cJSON_Delete(prov);
            goto done;
        }
    } else
        for (int l = 0; l < m->g.layers; l++)
            memcpy(m->phase[l], s0.phase[l], sizeof(float) * m->g.n * m->g.n);
    cJSON_Delete(m->init);
    m->init = prov;
done:
    return rc;
}
