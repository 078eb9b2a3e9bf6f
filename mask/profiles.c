/* The printer and material a mask plate is made for: the user's choice, else
 * the export's (when the model is an export folder), else the defaults. */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "mask/mask.h"

void mask_profiles_free(mask_profiles *pf)
{
    if (!pf) return;
    if (pf->have_printer) printer_free(&pf->printer);
    if (pf->have_material) material_free(&pf->material);
    export_folder_free(&pf->x);
    memset(pf, 0, sizeof *pf);
}

int mask_profiles_load(const char *model_dir, const d2_model *m, const mask_profile_req *q,
                       mask_profiles *pf, mask_opts *o, d2_err *e)
{
    char path[4096];
    int rc = 0;
    memset(pf, 0, sizeof *pf);
    if (snprintf(path, sizeof path, "%s/export.json", model_dir) < (int)sizeof path &&
        access(path, F_OK) == 0 && (rc = export_folder_load(model_dir, &pf->x, e)))
        return rc;
    profile_path pp;
    profile_path_init(&pp, q->profiles_dir);
    /* printer: the request's, else the export's, else the default */
    if (q->printer || !pf->x.have_printer) {
        if ((rc = printer_find(&pp, q->printer ? q->printer : "objet-connex500", &pf->printer, e)))
            goto fail;
        pf->have_printer = 1;
        mesh_printer_from_profile(&pf->printer, &o->printer);
    } else {
        mesh_printer_from_profile(&pf->x.printer, &o->printer);
    }
    o->printer_name = o->printer.name;
    /* material optics at the frequency: the export's material only when it
     * names one at this frequency */
    const export_folder *x = &pf->x;
    const char *xmat = x->have_material && x->material[0] && x->frequency_thz > 0 ? x->material
                                                                                  : NULL;
    double f_model = opt_frequency_thz(m->g.wavelength_mm);
    double f = pf->frequency_thz = q->frequency_thz > 0 ? q->frequency_thz : f_model;
    o->wavelength_mm = opt_wavelength_mm(f);
    if (q->material || !xmat || fabs(f - x->frequency_thz) > 1e-9 * f) {
        if ((rc = material_find(&pp, q->material ? q->material : xmat ? xmat : "verobp",
                                &pf->material, e)))
            goto fail;
        pf->have_material = 1;
        pf->clamped = material_at(&pf->material, f, &o->index, &o->kappa);
        o->material_name = pf->material.name;
    } else {
        o->index = x->index;
        o->kappa = x->kappa;
        o->material_name = xmat;
    }
    return 0;
fail:
    mask_profiles_free(pf);
    return rc;
}

