/* d2fab core: PNG read and write through libpng's simplified png_image API.
 * Writes are atomic (temporary file + rename). Row 0 is the top of the image;
 * for maps, row = y index of the .npy array. */
#ifndef D2_IMAGE_H
#define D2_IMAGE_H

#include <stdint.h>
#include "err.h"

/* Write w x h pixels (row-major, row 0 at the top) atomically: 8-bit grey,
 * 16-bit grey (stored exactly, gAMA 1.0) and 8-bit RGB. Sizes outside 1 ..
 * 2^27 pixels fail with D2_EUSAGE, encoding or I/O errors with D2_EIO. */
int img_write_gray8(const char *path, int w, int h, const uint8_t *px, d2_err *e);
int img_write_gray16(const char *path, int w, int h, const uint16_t *px, d2_err *e);
/* px holds w*h*3 bytes, R G B. */
int img_write_rgb8(const char *path, int w, int h, const uint8_t *px, d2_err *e);

typedef enum { CMAP_GRAY, CMAP_VIRIDIS, CMAP_TWILIGHT /* cyclic, for phase */, CMAP_INFERNO } img_cmap;

/* Colour-maps v (w*h floats, row-major) linearly from lo..hi (clamped; NaN
 * and lo == hi draw the low end) and writes an RGB PNG, each value drawn as a
 * scale x scale block (scale 1..64). Fails like img_write_rgb8. */
int img_write_colormap(const char *path, int w, int h, const float *v, float lo, float hi,
                       img_cmap cmap, int scale, d2_err *e);

/* Maps t in [0,1] (clamped) to RGB with the given colour map. viridis and
 * inferno follow matplotlib's tables; CMAP_TWILIGHT is cyclic (t = 0 and 1
 * give the same colour), for phase in [0, 2 pi). */
void img_cmap_rgb(img_cmap cmap, float t, uint8_t rgb[3]);

/* Reads a PNG (grey, grey+alpha, RGB, RGBA or palette, any bit depth) as grey
 * values in [0,1] that scale linearly with the stored samples: v/255 for
 * 8-bit, v/65535 for 16-bit (no gamma conversion, so img_write_gray8/16
 * round-trip exactly). Colour becomes luminance 0.2126 R + 0.7152 G +
 * 0.0722 B; alpha is coverage over black. Images over 2^27 pixels, non-PNG
 * and corrupt files fail with D2_EINPUT naming the file. *px is malloc'ed,
 * w*h floats, row 0 at the top; caller frees. */
int img_read_gray(const char *path, int *w, int *h, float **px, d2_err *e);

/* 1 when PLplot's pngcairo driver (Debian plplot-driver-cairo), which draws
 * the plots and figures as PNG, is installed. */
int img_plot_png_available(void);

#endif
