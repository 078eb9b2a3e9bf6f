/* The tolerance report's plots (PLplot, PNG through its cairo driver):
 * accuracy against each perturbation's magnitude, the Monte-Carlo yield, and
 * the comparison of scales. */
#include <errno.h>
#include <math.h>
#include <plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/image.h"
#include "tolerance/tol_int.h"

static void kind_axis(const tol_result *r, int k, char *buf, size_t cap)
{
    const char *u = tol_result_unit(r, k);
    switch (k) {
    case TOL_LATERAL: snprintf(buf, cap, "lateral shift limit D of every layer, x and y (%s)", u); break;
    case TOL_AXIAL: snprintf(buf, cap, "axial shift limit D of every layer (%s)", u); break;
    case TOL_ROTATION: snprintf(buf, cap, "in-plane rotation limit D of every layer (%s)", u); break;
    case TOL_PITCH: snprintf(buf, cap, "pixel-pitch scale error limit D of every layer (%s)", u); break;
    case TOL_HEIGHT: snprintf(buf, cap, "white height error limit D, every pixel (%s)", u); break;
    case TOL_HEIGHT_CORR:
        snprintf(buf, cap, "correlated height error limit D (%s; correlation length %g mm)", u,
                 r->mag.correlation_mm);
        break;
    case TOL_QUANTIZE:
        snprintf(buf, cap, r->mag.quant_levels ? "phase quantisation step (rad; 2 pi / levels)"
                                               : "height quantisation step (%s)", u);
        break;
    case TOL_INDEX: snprintf(buf, cap, "refractive-index error limit D"); break;
    case TOL_KAPPA: snprintf(buf, cap, "extinction coefficient (kappa) error limit D"); break;
    case TOL_WAVELENGTH:
        snprintf(buf, cap, r->mag.unit[k] == TOL_U_THZ ? "source frequency drift limit D (THz)"
                                                       : "source wavelength drift limit D (mm)");
        break;
    case TOL_DET_SHIFT: snprintf(buf, cap, "detector-plane misregistration limit D, x and y (%s)", u); break;
    case TOL_DET_NOISE:
        snprintf(buf, cap, r->mag.unit[k] == TOL_U_SOURCE
                               ? "detector noise sigma (fraction of the source power)"
                               : "detector noise sigma (relative to the mean detector energy)");
        break;
    default: snprintf(buf, cap, "%s", tol_kind_name(k));
    }
}

/* Words for titles. */
static const char *kind_words(const tol_result *r, int k)
{
    static const char *const w[TOL_NKINDS] = {
        [TOL_LATERAL] = "lateral shift", [TOL_AXIAL] = "axial shift",
        [TOL_ROTATION] = "in-plane rotation", [TOL_PITCH] = "pixel-pitch error",
        [TOL_HEIGHT] = "white height error", [TOL_HEIGHT_CORR] = "correlated height error",
        [TOL_QUANTIZE] = "height quantisation", [TOL_INDEX] = "refractive-index error",
        [TOL_KAPPA] = "extinction (kappa) error", [TOL_WAVELENGTH] = "wavelength drift",
        [TOL_DET_SHIFT] = "detector misregistration", [TOL_DET_NOISE] = "detector noise",
        [TOL_MASK] = "input mask"};
    if (k == TOL_QUANTIZE && r->mag.quant_levels) return "phase quantisation";
    return k >= 0 && k < TOL_NKINDS ? w[k] : "?";
}

/* ---- plots -------------------------------------------------------------- */

/* Character height in mm, fixed so text keeps its size whatever the page
 * height (pngcairo draws at 90 dots per inch). */
#define CH_MM 5.0

enum { COL_BG, COL_FG, COL_GRID, COL_GREY, COL_MODEL0 };
#define NPAL 12
static const int pal[NPAL][3] = {
    {255, 255, 255}, {0, 0, 0},     {225, 225, 225}, {110, 110, 110},
    {0, 114, 178},   {213, 94, 0},  {0, 158, 115},   {204, 121, 167},
    {230, 159, 0},   {86, 180, 233}, {90, 90, 90},   {170, 140, 0},
};

static int model_color(int i) { return COL_MODEL0 + i % (NPAL - COL_MODEL0); }

typedef struct series {
    int n;
    const double *x, *y;
    const double *ylo, *yhi;  /* error bars, or NULL */
    int color, style;         /* style: PLplot line style 1 solid, 2 dashed, 3 dotted... 0: none */
    int dots;                 /* mark the points */
    double width;
    char label[256];          /* legend text, "" for none */
} series;

typedef struct plot {
    char title[200], subtitle[320], xlabel[200], ylabel[200];
    double x0, x1, y0, y1;
    int ns;
    series s[40];
} plot;


/* Draws p into path (atomically: a temporary beside it, renamed). */
static int plot_write(const plot *p, const char *path, d2_err *e)
{
    if (!img_plot_png_available())
        return d2_fail(e, D2_EIO, "%s: PLplot's pngcairo driver is not installed (Debian package "
                       "plplot-driver-cairo; scripts/install-deps installs it)", path);
    char tmp[4300];
    d2_tmp_path(path, tmp, sizeof tmp);
    int r[NPAL], g[NPAL], b[NPAL];
    for (int i = 0; i < NPAL; i++) r[i] = pal[i][0], g[i] = pal[i][1], b[i] = pal[i][2];
    /* The legend goes below the plot, one row per entry, so it never hides
     * data. */
    int nleg = 0;
    for (int i = 0; i < p->ns; i++) nleg += p->s[i].label[0] != 0;
    int H = 630 + 34 * nleg, bottom = 112 + 34 * nleg, top = 100;
    plsdev("pngcairo");
    plsfnam(tmp);
    plspage(0, 0, 1200, H, 0, 0);
    plscmap0(r, g, b, NPAL);
    plinit();
    pladv(0);
    plschr(CH_MM, 1.0);
    plvpor(0.085, 0.975, (double)bottom / H, 1 - (double)top / H);
    double x0 = p->x0, x1 = p->x1, y0 = p->y0, y1 = p->y1;
    if (!(x1 > x0)) x1 = x0 + 1;
    if (!(y1 > y0)) y1 = y0 + 1;
    plwind(x0, x1, y0, y1);
    plcol0(COL_GRID);
    plwidth(1);
    pllsty(1);
    plbox("g", 0, 0, "g", 0, 0);
    plcol0(COL_FG);
    plbox("bcnst", 0, 0, "bcnstv", 0, 0);
    plmtex("b", 3.0, 0.5, 0.5, p->xlabel);
    plmtex("l", 4.2, 0.5, 0.5, p->ylabel);
    plschr(CH_MM, 1.25);
    plmtex("t", p->subtitle[0] ? 2.6 : 1.2, 0.5, 0.5, p->title);
    plschr(CH_MM, 0.9);
    if (p->subtitle[0]) plmtex("t", 1.0, 0.5, 0.5, p->subtitle);
    plschr(CH_MM, 1.0);

    PLINT opt[40], lcol[40], lsty[40], scol[40], snum[40], tcol[40];
    PLFLT lwid[40], sscale[40];
    const char *text[40], *sym[40];
    int nl = 0;
    for (int i = 0; i < p->ns; i++) {
        const series *s = &p->s[i];
        if (s->n <= 0 && !s->label[0]) continue;
        plcol0(s->color);
        plwidth(s->width > 0 ? s->width : 2);
        if (s->style > 0 && s->n > 1) {
            pllsty(s->style);
            plline(s->n, s->x, s->y);
            pllsty(1);
        }
        if (s->ylo && s->yhi && s->n > 0) {
            plwidth(1);
            plerry(s->n, s->x, s->ylo, s->yhi);
        }
        if (s->dots && s->n > 0) plstring(s->n, s->x, s->y, "•");
        if (s->label[0] && nl < 40) {
            opt[nl] = (s->style > 0 ? PL_LEGEND_LINE : 0) | (s->dots ? PL_LEGEND_SYMBOL : 0);
            if (!opt[nl]) opt[nl] = PL_LEGEND_NONE;
            lcol[nl] = scol[nl] = s->color;
            tcol[nl] = COL_FG;
            lsty[nl] = s->style > 0 ? s->style : 1;
            lwid[nl] = s->width > 0 ? s->width : 2;
            sscale[nl] = 1;
            snum[nl] = 1;
            sym[nl] = "•";
            text[nl] = s->label;
            nl++;
        }
    }
    pllsty(1);
    plwidth(1);
    if (nl) {
        PLFLT lw, lh;
        pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
                 PL_POSITION_BOTTOM | PL_POSITION_OUTSIDE | PL_POSITION_VIEWPORT, 0,
                 88.0 / (H - bottom - top), 0.06, COL_BG, COL_FG, 1, 0, 0, nl, opt, 0.8, 0.85, 2.0, 0.0, tcol,
                 text, NULL, NULL, NULL, NULL, lcol, lsty, lwid, scol, sscale, snum, sym);
    }
    plend();
    return d2_tmp_install(tmp, path, "PLplot", e);
}

static series *add_series(plot *p)
{
    if (p->ns >= 40) return NULL;
    series *s = &p->s[p->ns++];
    memset(s, 0, sizeof *s);
    s->width = 2;
    s->style = 1;
    return s;
}

/* Accuracy against the magnitude of one kind, one curve per model. */
int tol_plot_scan(const tol_report *rep, int kind, const char *path, d2_err *e)
{
    plot p;
    memset(&p, 0, sizeof p);
    /* Buffers: per model x, mean, min, max (scan points + the nominal at 0). */
    int cap = TOL_MAX_SCAN + 1, rc;
    double *buf = calloc((size_t)rep->nmodels * 4 * cap + 64, sizeof(double));
    if (!buf) return d2_fail(e, D2_EIO, "out of memory for %s", path);
    double *extra = buf + (size_t)rep->nmodels * 4 * cap;
    double xmax = 0, ymin = 100, ymax = 0, ref = 0;
    const tol_result *first = NULL;
    int draws = 1, nmod = 0;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        const tol_inverse *v = NULL;
        for (int j = 0; j < r->ninv; j++)
            if (r->inv[j].kind == kind) v = &r->inv[j];
        if (!v || !v->npts) continue;
        if (!first) first = r;
        nmod++;
        ref = fmax(ref, v->ref);
        double *x = buf + (size_t)i * 4 * cap, *y = x + cap, *lo = y + cap, *hi = lo + cap;
        x[0] = 0;
        y[0] = lo[0] = hi[0] = 100 * r->nominal;
        for (int q = 0; q < v->npts; q++) {
            x[q + 1] = v->pts[q].factor * v->ref;
            y[q + 1] = 100 * v->pts[q].mean;
            lo[q + 1] = 100 * v->pts[q].min;
            hi[q + 1] = 100 * v->pts[q].max;
            if (v->pts[q].min != v->pts[q].max) draws = rep->cfg.inverse_draws;
        }
        for (int q = 0; q <= v->npts; q++) {
            xmax = fmax(xmax, x[q]);
            ymin = fmin(ymin, lo[q]);
            ymax = fmax(ymax, hi[q]);
        }
        series *s = add_series(&p);
        s->n = v->npts + 1;
        s->x = x;
        s->y = y;
        if (draws > 1) {
            s->ylo = lo;
            s->yhi = hi;
        }
        s->dots = 1;
        s->color = model_color(i);
        char a1[48], a5[48];
        if (isfinite(v->at1)) snprintf(a1, sizeof a1, "%.3g", v->at1);
        else snprintf(a1, sizeof a1, "> %.3g", v->max_tested);
        if (isfinite(v->at5)) snprintf(a5, sizeof a5, "%.3g", v->at5);
        else snprintf(a5, sizeof a5, "> %.3g", v->max_tested);
        snprintf(s->label, sizeof s->label, "%s: -1 point at %s, -5 points at %s %s", r->s->name, a1,
                 a5, tol_result_unit(r, kind));
    }
    if (!first) {
        free(buf);
        return 0;
    }
    double pad = 0.05 * (ymax - ymin) + 0.5;
    p.x0 = 0;
    p.x1 = xmax * 1.02;
    p.y0 = fmax(0, ymin - pad);
    p.y1 = fmin(100, ymax + pad);
    /* Reference lines for the first model: nominal - 1 and - 5 points; the
     * configured magnitude. */
    double nom = 100 * first->nominal;
    double *lx = extra, *l1 = extra + 2, *l5 = extra + 4, *vx = extra + 6, *vy = extra + 8;
    lx[0] = p.x0, lx[1] = p.x1;
    l1[0] = l1[1] = nom - 1;
    l5[0] = l5[1] = nom - 5;
    vx[0] = vx[1] = ref;
    vy[0] = p.y0, vy[1] = p.y1;
    series *s = add_series(&p);
    s->n = 2, s->x = lx, s->y = l1, s->color = COL_GREY, s->style = 2, s->width = 1.2;
    snprintf(s->label, sizeof s->label, "nominal - 1 point%s", nmod > 1 ? " (first model)" : "");
    if (nom - 5 > p.y0) {
        s = add_series(&p);
        s->n = 2, s->x = lx, s->y = l5, s->color = COL_GREY, s->style = 3, s->width = 1.2;
        snprintf(s->label, sizeof s->label, "nominal - 5 points%s", nmod > 1 ? " (first model)" : "");
    }
    s = add_series(&p);
    s->n = 2, s->x = vx, s->y = vy, s->color = COL_FG, s->style = 4, s->width = 1;
    snprintf(s->label, sizeof s->label, "configured limit D = %.3g %s", ref, tol_result_unit(first, kind));

    char ax[200];
    kind_axis(first, kind, ax, sizeof ax);
    snprintf(p.xlabel, sizeof p.xlabel, "%s", ax);
    snprintf(p.ylabel, sizeof p.ylabel, "test accuracy (%%, %d images)", first->images);
    int per_layer = tol_kind_per_layer(kind), fixed = kind == TOL_QUANTIZE;
    snprintf(p.title, sizeof p.title, "Accuracy against %s", kind_words(first, kind));
    if (fixed)
        snprintf(p.subtitle, sizeof p.subtitle, "every layer quantised to the step on the x axis");
    else if (draws > 1 || tol_kind_signed(kind))
        snprintf(p.subtitle, sizeof p.subtitle,
                 "%s, %s in ±D; points: mean of %d draws, bars: their range",
                 per_layer ? "every layer its own draw" : "whole stack",
                 tol_dist_name(first->mag.dist[kind]), rep->cfg.inverse_draws);
    else
        snprintf(p.subtitle, sizeof p.subtitle, "%s",
                 per_layer ? "all layers perturbed together" : "the whole stack");
    rc = plot_write(&p, path, e);
    free(buf);
    return rc;
}

/* Monte-Carlo yield curves: the fraction of trials reaching each accuracy. */
int tol_plot_yield(const tol_report *rep, const char *path, d2_err *e)
{
    plot p;
    memset(&p, 0, sizeof p);
    int total = 0;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_mc *m = tol_main_mc(&rep->res[i]);
        if (m) total += 5 * m->trials + 2;
    }
    if (!total) return 0;
    double *buf = calloc((size_t)total + 8 * (size_t)rep->nmodels + 8, sizeof(double));
    if (!buf) return d2_fail(e, D2_EIO, "out of memory for %s", path);
    double *at = buf, xmin = 100, xmax = 0;
    const tol_mc *m0 = NULL;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        const tol_mc *m = tol_main_mc(r);
        if (!m) continue;
        if (!m0) m0 = m;
        int T = m->trials;
        double *srt = at + 4 * T + 2;
        memcpy(srt, m->acc, sizeof(double) * T);
        for (int a = 1; a < T; a++) /* insertion sort: T is at most a few thousand */
            for (int b = a; b > 0 && srt[b - 1] > srt[b]; b--) {
                double t = srt[b];
                srt[b] = srt[b - 1];
                srt[b - 1] = t;
            }
        /* P(accuracy >= x) as steps: it holds its value up to each distinct
         * trial accuracy v and drops just after it. */
        double *x = at, *y = at + 2 * T + 1;
        int n = 0;
        double level = 100;
        for (int k = 0; k < T; k++) {
            if (k + 1 < T && srt[k + 1] == srt[k]) continue;
            double after = 100.0 * (T - k - 1) / T;
            x[n] = x[n + 1] = 100 * srt[k];
            y[n] = level;
            y[n + 1] = after;
            level = after;
            n += 2;
        }
        xmin = fmin(xmin, x[0]);
        xmax = fmax(xmax, fmax(x[n - 1], 100 * r->nominal));
        series *s = add_series(&p);
        s->n = n;
        s->x = x;
        s->y = y;
        s->style = 1;
        s->color = model_color(i);
        snprintf(s->label, sizeof s->label,
                 "%s: nominal %.2f %%, mean %.2f %%; yield at %.2f %%: %.1f %% (%.0f %% CI "
                 "%.1f-%.1f %%)",
                 r->s->name, 100 * r->nominal, 100 * m->mean, 100 * r->spec, 100 * m->yield,
                 100 * rep->cfg.confidence, 100 * m->yield_lo, 100 * m->yield_hi);
        at += 5 * T + 2;
    }
    double span = xmax - xmin, pad = 0.05 * span + 0.2;
    p.x0 = fmax(0, xmin - pad);
    p.x1 = fmin(100, xmax + pad);
    p.y0 = 0;
    p.y1 = 105;
    double *ln = at;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        if (!tol_main_mc(r)) continue;
        ln[0] = ln[1] = 100 * r->nominal;
        ln[2] = 0, ln[3] = 100;
        series *s = add_series(&p);
        s->n = 2, s->x = ln, s->y = ln + 2, s->style = 2, s->width = 1.2;
        s->color = model_color(i);
        ln += 4;
    }
    series *key = add_series(&p);
    key->style = 2, key->width = 1.2, key->color = COL_GREY;
    snprintf(key->label, sizeof key->label, "nominal accuracy (dashed, in the model's colour)");
    for (int i = 0; i < rep->nmodels; i++) {
        /* Spec line(s): one for an absolute spec, one per model otherwise. */
        const tol_result *r = &rep->res[i];
        if (!tol_main_mc(r) || (i > 0 && rep->cfg.spec >= 0)) continue;
        ln[0] = ln[1] = 100 * r->spec;
        ln[2] = 0, ln[3] = 100;
        series *s = add_series(&p);
        s->n = 2, s->x = ln, s->y = ln + 2, s->style = 1, s->width = 1.0;
        s->color = rep->cfg.spec >= 0 ? COL_GREY : model_color(i);
        if (rep->cfg.spec >= 0)
            snprintf(s->label, sizeof s->label, "spec %.2f %%", 100 * r->spec);
        ln += 4;
    }
    if (rep->cfg.spec < 0) {
        key = add_series(&p);
        key->style = 1, key->width = 1.0, key->color = COL_GREY;
        snprintf(key->label, sizeof key->label,
                 "spec: nominal - 1 point (thin, in the model's colour)");
    }
    snprintf(p.title, sizeof p.title, "Monte-Carlo yield: %d trials, all perturbations together",
             m0->trials);
    snprintf(p.subtitle, sizeof p.subtitle,
             "limits x%g of the configured ones; %d test images per trial; seed %llu",
             m0->scale, rep->res[0].images, (unsigned long long)rep->cfg.seed);
    snprintf(p.xlabel, sizeof p.xlabel, "test accuracy x (%%)");
    snprintf(p.ylabel, sizeof p.ylabel, "trials with accuracy >= x (%%)");
    int rc = plot_write(&p, path, e);
    free(buf);
    return rc;
}

/* Mean Monte-Carlo accuracy against the magnitude multiplier, per model. */
int tol_plot_compare(const tol_report *rep, const char *path, d2_err *e)
{
    const tol_config *c = &rep->cfg;
    plot p;
    memset(&p, 0, sizeof p);
    double *buf = calloc((size_t)rep->nmodels * 4 * (TOL_MAX_SCALES + 1), sizeof(double));
    if (!buf) return d2_fail(e, D2_EIO, "out of memory for %s", path);
    double ymin = 100, ymax = 0, xmax = 0;
    for (int i = 0; i < rep->nmodels; i++) {
        const tol_result *r = &rep->res[i];
        double *x = buf + (size_t)i * 4 * (TOL_MAX_SCALES + 1), *y = x + TOL_MAX_SCALES + 1,
               *lo = y + TOL_MAX_SCALES + 1, *hi = lo + TOL_MAX_SCALES + 1;
        int n = 0;
        int has0 = 0;
        for (int q = 0; q < r->nmc; q++) has0 |= r->mc[q].scale == 0 && r->mc[q].trials;
        if (!has0) {
            /* Scale 0 is the nominal stack. */
            x[n] = 0;
            y[n] = lo[n] = hi[n] = 100 * r->nominal;
            n++;
        }
        for (int q = 0; q < r->nmc; q++) {
            if (!r->mc[q].trials) continue;
            x[n] = r->mc[q].scale;
            y[n] = 100 * r->mc[q].mean;
            lo[n] = y[n] - 100 * r->mc[q].std;
            hi[n] = y[n] + 100 * r->mc[q].std;
            ymin = fmin(ymin, lo[n]);
            ymax = fmax(ymax, hi[n]);
            xmax = fmax(xmax, x[n]);
            n++;
        }
        /* Sort by scale for the line. */
        for (int a = 1; a < n; a++)
            for (int b = a; b > 0 && x[b - 1] > x[b]; b--) {
                double *arr[4] = {x, y, lo, hi};
                for (int k = 0; k < 4; k++) {
                    double t = arr[k][b];
                    arr[k][b] = arr[k][b - 1];
                    arr[k][b - 1] = t;
                }
            }
        series *s = add_series(&p);
        s->n = n, s->x = x, s->y = y, s->ylo = lo, s->yhi = hi, s->dots = 1;
        s->color = model_color(i);
        snprintf(s->label, sizeof s->label, "%s (nominal %.2f %%)", r->s->name, 100 * r->nominal);
    }
    double pad = 0.05 * (ymax - ymin) + 0.5;
    p.x0 = 0;
    p.x1 = xmax > 0 ? xmax * 1.05 : 1;
    p.y0 = fmax(0, ymin - pad);
    p.y1 = fmin(100, ymax + pad);
    snprintf(p.title, sizeof p.title, "Mean accuracy against the Monte-Carlo magnitude");
    /* Say what scale 1 is, from the first model's magnitudes. */
    const tol_result *r = &rep->res[0];
    char what[240] = "";
    size_t len = 0;
    for (int k = 0; k < TOL_NKINDS && len < sizeof what - 40; k++) {
        if (!r->mag.on[k] || k == TOL_MASK) continue;
        double mx = 0;
        int nl = tol_kind_per_layer(k) ? r->s->m.g.layers : 1;
        for (int l = 0; l < nl; l++) mx = fmax(mx, r->mag.v[k][l]);
        len += (size_t)snprintf(what + len, sizeof what - len, "%s%s %.3g %s", len ? ", " : "",
                                tol_kind_name(k), mx, tol_result_unit(r, k));
    }
    if (strlen(what) <= 90)
        snprintf(p.subtitle, sizeof p.subtitle, "x1 = %s; bars: ±1 std over %d trials",
                 what, c->trials);
    else
        snprintf(p.subtitle, sizeof p.subtitle,
                 "x1 = the configured limits (listed in report.json); bars: ±1 std over %d "
                 "trials",
                 c->trials);
    snprintf(p.xlabel, sizeof p.xlabel, "Monte-Carlo limits, multiple of the configured ones");
    snprintf(p.ylabel, sizeof p.ylabel, "mean test accuracy (%%, %d images)", r->images);
    int rc = plot_write(&p, path, e);
    free(buf);
    return rc;
}

