/* The report's map figures, drawn with PLplot (pngcairo): every map with a
 * title, axes in mm and a colour bar; and a shaded 3-D view of a plate's
 * relief drawn by a small software rasteriser (no network, no GPU). */
#ifndef D2_RUN_FIGURES_H
#define D2_RUN_FIGURES_H

#include "core/err.h"
#include "core/image.h"

#define FIG_MAX_PANELS 8
#define FIG_MAX_BOXES 20

/* One map: n x n values, row 0 at the top (y = row, as in the .npy files),
 * pixel pitch_mm; drawn centred on (0, 0) mm, seen from the source. boxes:
 * squares to outline (centre x, y and side, mm), box_hi: the one drawn in
 * green (-1 none). */
typedef struct fig_panel {
    int n;
    const float *v;
    double pitch_mm;
    char title[96];
    int nbox, box_hi;
    double box[FIG_MAX_BOXES][3];
} fig_panel;

/* A row of panels sharing one colour scale lo..hi (cmap) and one colour
 * bar labelled bar_label; title above them all. */
typedef struct fig_maps {
    int np;
    fig_panel p[FIG_MAX_PANELS];
    double lo, hi;
    img_cmap cmap;
    char title[160], bar_label[96];
} fig_maps;

/* Writes the figure to path (PNG, atomically). Fails with D2_EIO naming the
 * path when PLplot's pngcairo driver is missing or writes nothing. */
int fig_write_maps(const char *path, const fig_maps *f, d2_err *e);

/* A shaded oblique view of a height field: n x n heights (mm, row 0 at the
 * top) at pitch_mm, on a plate of base_mm, relief exaggerated by `exagg` so
 * the steps show; written as an RGB PNG of w x h pixels (atomically). Fails
 * with D2_EUSAGE for sizes out of range, D2_EIO on write errors. */
int fig_write_relief(const char *path, int n, const float *height_mm, double pitch_mm,
                     double exagg, int w, int h, d2_err *e);

#endif
