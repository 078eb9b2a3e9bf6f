/* Inside the tolerance module only: what its files share. */
#ifndef D2_TOL_INT_H
#define D2_TOL_INT_H

#include "tolerance/tolerance.h"

typedef struct kind_info {
    const char *name;
    int per_layer;  /* one value per layer */
    int comps;      /* x and y: 2 */
    int scalar;     /* signed draw times the magnitude; else a field or a setting */
} kind_info;

/* Name, per-layer, components and kind of draw of every TOL_* kind (config.c). */
extern const kind_info tol_kinfo[TOL_NKINDS];

/* The Monte Carlo at scale 1 (the configured magnitudes), else the last one
 * with trials, or NULL (report.c). */
const tol_mc *tol_main_mc(const tol_result *r);
/* "normal" or "uniform" (report.c). */
const char *tol_dist_name(int dist);

/* The plots (plots.c), each a PNG at path: accuracy against the magnitude of
 * kind, the Monte-Carlo yield curve, and the comparison of scales. */
int tol_plot_scan(const tol_report *rep, int kind, const char *path, d2_err *e);
int tol_plot_yield(const tol_report *rep, const char *path, d2_err *e);
int tol_plot_compare(const tol_report *rep, const char *path, d2_err *e);

#endif
