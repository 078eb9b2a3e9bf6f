#include "optics/optics.h"

#include <math.h>
#include <string.h>

/* Source position (in pixel units, row/column) of output pixel (i, j). */
typedef struct {
    double c, s;         /* cos and sin of the rotation */
    double dxp, dyp;     /* displacement in pixels */
    double mid;          /* (n - 1) / 2 */
    double inv;          /* 1 / scale of the printed layer */
} xform;

static void xform_init(xform *x, int n, double pitch, const layer_pose *p)
{
    double a = p->rot_deg * M_PI / 180.0;
    x->c = cos(a);
    x->s = sin(a);
    x->dxp = p->dx_mm / pitch;
    x->dyp = p->dy_mm / pitch;
    x->mid = 0.5 * (n - 1);
    x->inv = 1.0;
}

/* Inverse map: source = R^-1 (dest - d) / scale, about the centre. */
static inline void source_of(const xform *x, int i, int j, double *si, double *sj)
{
    double X = (j - x->mid - x->dxp) * x->inv, Y = (i - x->mid - x->dyp) * x->inv;
    *sj = x->c * X + x->s * Y + x->mid;
    *si = -x->s * X + x->c * Y + x->mid;
}

void perturb_transform(const float complex *t, int n, double pitch_mm, const layer_pose *pose,
                       float complex *out)
{
    perturb_transform_scaled(t, n, pitch_mm, pose, 1.0, out);
}

void perturb_transform_scaled(const float complex *t, int n, double pitch_mm,
                              const layer_pose *pose, double scale, float complex *out)
{
    xform x;
    xform_init(&x, n, pitch_mm, pose);
    x.inv = 1.0 / scale;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double si, sj;
            source_of(&x, i, j, &si, &sj);
            int i0 = (int)floor(si), j0 = (int)floor(sj);
            float fi = (float)(si - i0), fj = (float)(sj - j0);
            float complex acc = 0;
            for (int di = 0; di < 2; di++) {
                int ii = i0 + di;
                if (ii < 0 || ii >= n) continue;
                float wi = di ? fi : 1 - fi;
                if (wi == 0) continue;
                for (int dj = 0; dj < 2; dj++) {
                    int jj = j0 + dj;
                    if (jj < 0 || jj >= n) continue;
                    float w = wi * (dj ? fj : 1 - fj);
                    if (w != 0) acc += w * t[(size_t)ii * n + jj];
                }
            }
            out[(size_t)i * n + j] = acc;
        }
}

void perturb_transform_adjoint(const float complex *gout, int n, double pitch_mm,
                               const layer_pose *pose, float complex *gt)
{
    xform x;
    xform_init(&x, n, pitch_mm, pose);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            float complex g = gout[(size_t)i * n + j];
            if (g == 0) continue;
            double si, sj;
            source_of(&x, i, j, &si, &sj);
            int i0 = (int)floor(si), j0 = (int)floor(sj);
            float fi = (float)(si - i0), fj = (float)(sj - j0);
            for (int di = 0; di < 2; di++) {
                int ii = i0 + di;
                if (ii < 0 || ii >= n) continue;
                float wi = di ? fi : 1 - fi;
                if (wi == 0) continue;
                for (int dj = 0; dj < 2; dj++) {
                    int jj = j0 + dj;
                    if (jj < 0 || jj >= n) continue;
                    float w = wi * (dj ? fj : 1 - fj);
                    if (w != 0) gt[(size_t)ii * n + jj] += w * g;
                }
            }
        }
}

void perturb_gaps(const d2_geom *g, const layer_pose *poses, double *gaps)
{
    for (int k = 0; k <= g->layers; k++) gaps[k] = g->gap_mm[k];
    for (int l = 0; l < g->layers; l++) {
        gaps[l] += poses[l].dz_mm;
        gaps[l + 1] -= poses[l].dz_mm;
    }
}

int perturb_is_identity(const layer_pose *p)
{
    return p->dx_mm == 0 && p->dy_mm == 0 && p->dz_mm == 0 && p->rot_deg == 0;
}

float perturb_quantize_phase(float phase, float step_rad)
{
    if (!(step_rad > 0)) return phase;
    const float two_pi = (float)(2 * M_PI);
    float w = fmodf(phase, two_pi);
    if (w < 0) w += two_pi;
    return step_rad * nearbyintf(w / step_rad);
}

void perturb_draw_uniform(d2_rng *r, double max_xy_mm, double max_z_mm, double max_rot_deg,
                          layer_pose *p)
{
    p->dx_mm = max_xy_mm * (2 * d2_rng_uniform(r) - 1);
    p->dy_mm = max_xy_mm * (2 * d2_rng_uniform(r) - 1);
    p->dz_mm = max_z_mm * (2 * d2_rng_uniform(r) - 1);
    p->rot_deg = max_rot_deg * (2 * d2_rng_uniform(r) - 1);
}
