/* Fuzz target: printer and material profiles (printers/NAME.json,
 * printers/materials/NAME.json). The input is written as fuzz.json (so a
 * profile must say "name": "fuzz") and read by both loaders; an accepted
 * material is interpolated at frequencies around and between its points. */
#include <math.h>
#include <string.h>

#include "export/export.h"
#include "fuzz/fuzzlib.h"

static void check_material(const material_profile *m)
{
    if (m->npoints < 1 || m->npoints > MATERIAL_MAX_POINTS)
        fz_bug("material_load returned %d points", m->npoints);
    double lo_n = INFINITY, hi_n = -INFINITY, lo_k = INFINITY, hi_k = -INFINITY;
    for (int i = 0; i < m->npoints; i++) {
        const material_point *p = &m->pt[i];
        if (!(p->index > 1 && p->index <= 10 && p->kappa >= 0 && p->kappa <= 10 &&
              p->frequency_thz > 0))
            fz_bug("material point %d out of range: f %g n %g k %g", i, p->frequency_thz,
                   p->index, p->kappa);
        if (i && !(p->frequency_thz > m->pt[i - 1].frequency_thz))
            fz_bug("material points not increasing at %d", i);
        lo_n = fmin(lo_n, p->index);
        hi_n = fmax(hi_n, p->index);
        lo_k = fmin(lo_k, p->kappa);
        hi_k = fmax(hi_k, p->kappa);
    }
    double f0 = m->pt[0].frequency_thz, f1 = m->pt[m->npoints - 1].frequency_thz;
    double probes[] = {f0 * 0.5, f0, 0.5 * (f0 + f1), 0.3 * f0 + 0.7 * f1, f1, f1 * 2};
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
        double n = NAN, k = NAN;
        int clamped = material_at(m, probes[i], &n, &k);
        if (!(n >= lo_n && n <= hi_n && k >= lo_k && k <= hi_k))
            fz_bug("material_at(%g THz) = n %g, kappa %g, outside the points' range", probes[i],
                   n, k);
        int inside = probes[i] >= f0 && probes[i] <= f1;
        if (inside && clamped) fz_bug("material_at(%g THz) clamped inside the range", probes[i]);
    }
}

int fuzz_profile(const uint8_t *data, size_t size)
{
    const char *path = fz_write("fuzz.json", data, size);
    int accepted = 0;
    printer_profile p;
    d2_err e = {0};
    int rc = printer_load(path, &p, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "printer_load");
        if (p.json) fz_bug("printer_load failed but kept the JSON");
    } else {
        accepted = 1;
        if (strcmp(p.name, "fuzz") || !p.json || !(p.z_step_mm > 0) || !(p.xy_resolution_mm > 0) ||
            !(p.build_mm[0] >= 1 && p.build_mm[1] >= 1 && p.build_mm[2] >= 1))
            fz_bug("printer_load accepted a profile outside its contract");
        printer_free(&p);
    }
    material_profile m;
    e = (d2_err){0};
    rc = material_load(path, &m, &e);
    if (rc) {
        fz_check_refusal(rc, &e, path, "material_load");
        if (m.json) fz_bug("material_load failed but kept the JSON");
    } else {
        accepted = 1;
        check_material(&m);
        material_free(&m);
    }
    return accepted;
}

FUZZ_ENTRY(fuzz_profile)
