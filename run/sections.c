/* Report sections with their own numbers: what the tolerance study
 * perturbed (and which perturbation dominates), and the power budget. */
#include "run/run_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tolerance/tolerance.h"

/* ------------------------------------------------------------------------
 * The tolerance study's perturbations
 * ---------------------------------------------------------------------- */

static const char *pretty_kind(int k)
{
    static const char *const n[TOL_NKINDS] = {
        "lateral shift of each layer (x and y)", "axial shift of each layer (z)",
        "in-plane rotation of each layer", "pixel pitch (scale) error of each layer",
        "height error, per pixel", "height error, correlated field", "height quantisation",
        "refractive index error", "extinction coefficient error", "source frequency drift",
        "detector plane shift (x and y)", "detector noise", "input mask"};
    return k >= 0 && k < TOL_NKINDS ? n[k] : "?";
}

static void distribution_text(const tol_result *r, int k, char *buf, size_t cap)
{
    const tol_mag *m = &r->mag;
    const char *d = m->dist[k] == TOL_NORMAL ? "normal N(0, (D/2)^2) cut at +-D"
                                             : "uniform in [-D, +D]";
    int L = r->s->m.g.layers;
    switch (k) {
    case TOL_QUANTIZE:
        snprintf(buf, cap, "fixed setting: every height rounded to the step, all layers");
        break;
    case TOL_MASK:
        snprintf(buf, cap, m->stencil ? "fixed setting: every test digit read through its "
                                        "printable, bridged stencil"
                                      : "fixed setting: one input-plane mask PNG");
        break;
    case TOL_DET_NOISE:
        snprintf(buf, cap, "Gaussian on every detector energy, sigma = D x the mean detector "
                 "energy, drawn per image");
        break;
    case TOL_HEIGHT:
        snprintf(buf, cap, "%s, independent for every pixel of each of the %d layers", d, L);
        break;
    case TOL_HEIGHT_CORR:
        snprintf(buf, cap, "%s, a field correlated over %.3g mm (1/e), each of the %d layers",
                 d, m->correlation_mm, L);
        break;
    default:
        if (tol_kind_per_layer(k))
            snprintf(buf, cap, "%s, drawn independently for each of the %d layers%s", d, L,
                     tol_kind_comps(k) > 1 ? " and each axis" : "");
        else
            snprintf(buf, cap, "%s, one draw per trial%s", d,
                     tol_kind_comps(k) > 1 ? " and axis" : "");
    }
}

static void limit_text(const tol_result *r, int k, char *buf, size_t cap)
{
    const tol_mag *m = &r->mag;
    const char *u = tol_unit_name(m->unit[k]);
    int n = tol_kind_per_layer(k) ? r->s->m.g.layers : 1, same = 1;
    for (int l = 1; l < n; l++) same &= m->v[k][l] == m->v[k][0];
    if (k == TOL_MASK) {
        snprintf(buf, cap, "on");
        return;
    }
    if (k == TOL_QUANTIZE) {
        snprintf(buf, cap, "step %.4g %s", m->v[k][0], u);
        return;
    }
    const char *pm = k == TOL_DET_NOISE ? "" : "\xc2\xb1"; /* UTF-8 plus-minus */
    if (same) {
        snprintf(buf, cap, "%s%.4g %s", pm, m->v[k][0], u);
        return;
    }
    size_t o = (size_t)snprintf(buf, cap, "%s", pm);
    for (int l = 0; l < n && o < cap; l++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%.4g", l ? ", " : "", m->v[k][l]);
    if (o < cap) snprintf(buf + o, cap - o, " %s (layers 1-%d)", u, n);
}

void run_tol_perturbations(run_tol *t, const void *rv)
{
    const tol_result *r = rv;
    t->npert = 0;
    t->dominant = -1;
    t->sens_kinds = 0;
    for (int k = 0; k < TOL_NKINDS && t->npert < RUN_TOL_KINDS; k++) {
        if (!r->mag.on[k]) continue;
        run_tol_pert *p = &t->pert[t->npert++];
        snprintf(p->what, sizeof p->what, "%s", pretty_kind(k));
        snprintf(p->key, sizeof p->key, "%s", tol_kind_name(k));
        limit_text(r, k, p->limit, sizeof p->limit);
        distribution_text(r, k, p->dist, sizeof p->dist);
        p->change = NAN;
        /* Worst accuracy change of this perturbation alone, over its rows. */
        for (int i = 0; i < r->nsens; i++) {
            const tol_sens_row *w = &r->sens[i];
            if (w->kind != k || !w->applicable) continue;
            if (w->layer < 0 && w->comp < 0) t->sens_kinds = 1;
            if (isnan(p->change) || w->change < p->change) p->change = w->change;
        }
        if (!isnan(p->change) && p->change < 0 &&
            (t->dominant < 0 || p->change < t->pert[t->dominant].change))
            t->dominant = t->npert - 1;
    }
}

void run_html_perturbations(FILE *f, const run_state *s)
{
    const run_tol *t = &s->tol;
    if (!t->npert) {
        fputs("<p>No perturbation was configured: the study measured the nominal accuracy "
              "only.</p>\n", f);
        return;
    }
    fputs("<p>What the study simulated: every perturbation below, each with its limit D and "
          "how a trial draws it. The Monte Carlo trials draw all of them at once; the last "
          "column is each one alone (", f);
    fputs(t->sens_kinds ? "every layer and axis at +D together, then at -D"
                        : "one layer and axis at a time, at +D and -D", f);
    fputs("), the worst accuracy change in points.</p>\n", f);
    fputs("<table><tr><th>perturbation</th><th>limit D</th><th>distribution</th>"
          "<th>alone: accuracy change</th></tr>\n", f);
    for (int i = 0; i < t->npert; i++) {
        const run_tol_pert *p = &t->pert[i];
        fprintf(f, "<tr%s><td>%s (<code>%s</code>)</td><td>%s</td><td>%s</td><td>",
                i == t->dominant ? " class=\"dominant\"" : "", p->what, p->key, p->limit,
                p->dist);
        if (isnan(p->change)) fputs("not evaluated", f);
        else fprintf(f, "%+.2f", 100 * p->change);
        fputs(i == t->dominant ? " <b>(dominates)</b></td></tr>\n" : "</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    if (t->dominant >= 0)
        fprintf(f, "<p><b>Dominant:</b> %s costs %.2f points alone at its limit; tighten it "
                "first.</p>\n", t->pert[t->dominant].what, -100 * t->pert[t->dominant].change);
    else if (t->nsens)
        fputs("<p>No perturbation alone lowers the accuracy at its limit.</p>\n", f);
    else
        fputs("<p>Which perturbation dominates is not known: the sensitivity table was "
              "switched off (tolerance.sensitivity).</p>\n", f);
}

cJSON *run_perturbations_json(const run_tol *t)
{
    cJSON *a = cJSON_CreateArray();
    if (!a) return NULL;
    for (int i = 0; i < t->npert; i++) {
        const run_tol_pert *p = &t->pert[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(a, o);
        cJSON_AddStringToObject(o, "perturbation", p->key);
        cJSON_AddStringToObject(o, "limit", p->limit);
        cJSON_AddStringToObject(o, "distribution", p->dist);
        if (isnan(p->change)) cJSON_AddNullToObject(o, "alone_change_points");
        else cJSON_AddNumberToObject(o, "alone_change_points", 100 * p->change);
        cJSON_AddBoolToObject(o, "dominant", i == t->dominant);
    }
    return a;
}

/* ------------------------------------------------------------------------
 * The power budget
 * ---------------------------------------------------------------------- */

/* Room-temperature detectors near 0.1-1 THz, noise-equivalent power to the
 * order of magnitude (W/sqrt(Hz)); the lab checks its own data sheet. */
static const struct { const char *name; double nep; } detectors[] = {
    {"pyroelectric detector", 1e-9},
    {"Golay cell", 1e-10},
    {"zero-bias Schottky diode", 1e-11},
};

int run_power_budget(const run_state *s, run_power *p)
{
    memset(p, 0, sizeof *p);
    if (!s->have_ev_export) return 0;
    p->ok = 1;
    p->source_mw = s->c->source_power_mw;
    p->eff_design = s->have_ev_model ? s->ev_model.efficiency : NAN;
    p->eff_printed = s->ev_export.efficiency;
    p->out_printed = s->ev_export.output_efficiency;
    p->transmission = s->have_export ? s->ex.power_transmission : NAN;
    p->fresnel_r = s->have_export ? s->ex.fresnel_r : NAN;
    p->ndet = s->model.g.ndet > 0 ? s->model.g.ndet : 1;
    p->det_total_w = 1e-3 * p->source_mw * p->eff_printed;
    p->det_each_w = p->det_total_w / p->ndet;
    /* SNR 10 in a 1 Hz bandwidth (about a 0.5 s lock-in time constant). */
    p->nep_needed = p->det_each_w / 10;
    p->low = p->eff_printed < 0.01;
    return 0;
}

static void watts(FILE *f, double w)
{
    static const char *const u[] = {"W", "mW", "&micro;W", "nW", "pW", "fW"};
    int i = 0;
    while (i < 5 && fabs(w) < 1 && w != 0) w *= 1e3, i++;
    fprintf(f, "%.3g&nbsp;%s", w, u[i]);
}

void run_html_power(FILE *f, const run_state *s)
{
    run_power p;
    run_power_budget(s, &p);
    if (!p.ok) {
        fputs("<p class=\"skipped\">No power budget: the stack as printed was not "
              "evaluated.</p>\n", f);
        return;
    }
    fputs("<table><tr><th>quantity</th><th>value</th></tr>\n", f);
    fputs("<tr><td>detector efficiency, design (power on all the detectors / power through "
          "the input digit)</td><td>", f);
    if (isnan(p.eff_design)) fputs("not evaluated", f);
    else fprintf(f, "%.4g&nbsp;%%", 100 * p.eff_design);
    fprintf(f, "</td></tr>\n<tr><td>detector efficiency, as printed (%s, %d test images)</td>"
            "<td>%.4g&nbsp;%%</td></tr>\n",
            s->printed.g.optics == D2_OPTICS_THICK ? "thick-plate model" : "thin phase screens",
            s->ev_export.count, 100 * p.eff_printed);
    if (!isnan(p.transmission))
        fprintf(f, "<tr><td>stack transmission (absorption in every plate and Fresnel "
                "reflection, %.1f&nbsp;%% at each of 2 surfaces a plate)</td><td>%.4g&nbsp;%%"
                "</td></tr>\n", 100 * p.fresnel_r, 100 * p.transmission);
    fprintf(f, "<tr><td>power reaching the output plane, as printed</td><td>%.4g&nbsp;%%</td>"
            "</tr>\n", 100 * p.out_printed);
    fprintf(f, "<tr><td>source power through the input digit (<code>source_power_mw</code>)"
            "</td><td>%.4g&nbsp;mW</td></tr>\n<tr><td>on all %d detectors together</td><td>",
            p.source_mw, p.ndet);
    watts(f, p.det_total_w);
    fputs("</td></tr>\n<tr><td>on one detector (mean)</td><td>", f);
    watts(f, p.det_each_w);
    fputs("</td></tr>\n<tr><td>detector NEP needed for a signal-to-noise ratio of 10 in a "
          "1&nbsp;Hz bandwidth</td><td>", f);
    watts(f, p.nep_needed);
    fputs("/&radic;Hz</td></tr>\n</table>\n<p>", f);
    for (size_t i = 0; i < sizeof detectors / sizeof detectors[0]; i++) {
        fprintf(f, "%s%s (NEP of order ", i ? "; " : "A ", detectors[i].name);
        watts(f, detectors[i].nep);
        fprintf(f, "/&radic;Hz): %s", detectors[i].nep <= p.nep_needed ? "enough"
                                     : detectors[i].nep <= 10 * p.nep_needed
                                         ? "marginal (integrate longer)" : "too noisy");
    }
    fputs(". Typical room-temperature values; check the data sheet of the lab's own "
          "detector.</p>\n", f);
    if (p.low)
        fprintf(f, "<p class=\"warn\">Low: as printed only %.3g&nbsp;%% of the input power "
                "reaches the detectors (design %.3g&nbsp;%%). The plates absorb and reflect "
                "%.3g&nbsp;%% of it; the rest is diffracted outside the detector squares. "
                "A thinner base, a less absorbing material or a stronger source raises the "
                "signal.</p>\n", 100 * p.eff_printed, 100 * p.eff_design,
                100 * (1 - p.transmission));
}

cJSON *run_power_json(const run_state *s)
{
    run_power p;
    run_power_budget(s, &p);
    if (!p.ok) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "source_power_mw", p.source_mw);
    if (isnan(p.eff_design)) cJSON_AddNullToObject(o, "detector_efficiency_design");
    else cJSON_AddNumberToObject(o, "detector_efficiency_design", p.eff_design);
    cJSON_AddNumberToObject(o, "detector_efficiency_printed", p.eff_printed);
    cJSON_AddStringToObject(o, "printed_optics",
                            s->printed.g.optics == D2_OPTICS_THICK ? "thick" : "thin");
    cJSON_AddNumberToObject(o, "output_plane_efficiency_printed", p.out_printed);
    if (isnan(p.transmission)) cJSON_AddNullToObject(o, "stack_transmission");
    else cJSON_AddNumberToObject(o, "stack_transmission", p.transmission);
    cJSON_AddNumberToObject(o, "detectors_total_w", p.det_total_w);
    cJSON_AddNumberToObject(o, "detector_mean_w", p.det_each_w);
    cJSON_AddNumberToObject(o, "nep_needed_w_per_rthz", p.nep_needed);
    cJSON_AddStringToObject(o, "nep_rule", "signal-to-noise 10 in a 1 Hz bandwidth, mean "
                            "detector");
    cJSON_AddBoolToObject(o, "low", p.low);
    return o;
}
