/* Shared by the benchmarks: CPU clocks, peak memory and the propagation
 * limit they compare against. */
#include "bench/benchlib.h"
#include "optics/optics.h"

#include <complex.h>
#include <fftw3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

double bench_thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double bench_process_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double bench_peak_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}


enum { V_INPLACE_BATCH, V_OUTPLACE_BATCH, V_INPLACE_BLOCK, V_OUTPLACE_BLOCK };

typedef struct variant {
    int kind, colb;
    fftwf_plan col_f, col_b;
} variant;

struct bench_limit {
    int n, p, nv, best, nh, next;
    float complex *a, *b, *H[D2_MAX_LAYERS + 1];
    float complex *in; /* the n x n input field, placed afresh every time */
    fftwf_plan row_f, row_f_w, row_b_w, row_b_oop;
    variant v[BENCH_LIMIT_MAXV];
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* w[r * p + c] *= H[r * p + c] for rows [0, rows), columns [0, cols). */
CLONES static void hmul(float complex *restrict w, const float complex *restrict H, int rows,
                        int cols, int p)
{
    for (int r = 0; r < rows; r++) {
        float *x = (float *)(w + (size_t)r * p);
        const float *h = (const float *)(H + (size_t)r * p);
        for (int c = 0; c < 2 * cols; c += 2) {
            float xr = x[c], xi = x[c + 1], hr = h[c], hi = h[c + 1];
            x[c] = xr * hr - xi * hi;
            x[c + 1] = xr * hi + xi * hr;
        }
    }
}

static void run_variant(bench_limit *b, const variant *v)
{
    const float complex *H = b->H[b->next];
    b->next = (b->next + 1) % b->nh;
    int n = b->n, p = b->p;
    size_t pp = (size_t)p * p;
    fftwf_complex *a = (fftwf_complex *)b->a, *w = (fftwf_complex *)b->b;
    int inplace = v->kind == V_INPLACE_BATCH || v->kind == V_INPLACE_BLOCK;
    /* The input rows, zero-padded: every propagation writes its n x n field
     * into the padded buffer (d2fab does it while applying a layer). Fresh
     * data each time also keeps the field from decaying, run after run,
     * into denormal or zero values that would time differently. */
    float complex *dst = inplace ? b->b : b->a;
    for (int i = 0; i < n; i++) {
        memcpy(dst + (size_t)i * p, b->in + (size_t)i * n, (size_t)n * sizeof *dst);
        memset(dst + (size_t)i * p + n, 0, (size_t)(p - n) * sizeof *dst);
    }
    if (inplace) {
        /* everything in w: the padding rows are overwritten and zeroed again */
        memset(b->b + (size_t)n * p, 0, (pp - (size_t)n * p) * sizeof *b->a);
        fftwf_execute_dft(b->row_f_w, w, w);
    } else {
        fftwf_execute_dft(b->row_f, a, a);
    }
    if (v->kind == V_INPLACE_BATCH || v->kind == V_OUTPLACE_BATCH) {
        if (v->kind == V_INPLACE_BATCH) fftwf_execute_dft(v->col_f, w, w);
        else fftwf_execute_dft(v->col_f, a, w);
        hmul(b->b, H, p, p, p);
        fftwf_execute_dft(v->col_b, w, w);
    } else {
        for (int j = 0; j < p; j += v->colb) {
            if (v->kind == V_INPLACE_BLOCK) fftwf_execute_dft(v->col_f, w + j, w + j);
            else fftwf_execute_dft(v->col_f, a + j, w + j);
            hmul(b->b + j, H + j, p, v->colb, p);
            fftwf_execute_dft(v->col_b, w + j, w + j);
        }
    }
    if (inplace) fftwf_execute_dft(b->row_b_w, w, w);
    else fftwf_execute_dft(b->row_b_oop, w, a);
}

static double time_variant(bench_limit *b, const variant *v, int reps)
{
    double t0 = bench_thread_cpu();
    for (int r = 0; r < reps; r++) run_variant(b, v);
    return (bench_thread_cpu() - t0) / reps;
}

void bench_limit_run(bench_limit *b) { run_variant(b, &b->v[b->best]); }

void bench_limit_free(bench_limit *b)
{
    if (!b) return;
    for (int i = 0; i < b->nv; i++) {
        if (b->v[i].col_f) fftwf_destroy_plan(b->v[i].col_f);
        if (b->v[i].col_b) fftwf_destroy_plan(b->v[i].col_b);
    }
    if (b->row_f) fftwf_destroy_plan(b->row_f);
    if (b->row_b_oop) fftwf_destroy_plan(b->row_b_oop);
    if (b->row_f_w) fftwf_destroy_plan(b->row_f_w);
    if (b->row_b_w) fftwf_destroy_plan(b->row_b_w);
    fftwf_free(b->in);
    fftwf_free(b->a);
    fftwf_free(b->b);
    for (int k = 0; k < b->nh; k++) fftwf_free(b->H[k]);
    free(b);
}

bench_limit *bench_limit_new(int n, int p, const float complex *const *H, int nh,
                             bench_limit_info *info)
{
    memset(info, 0, sizeof *info);
    bench_limit *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    size_t pp = (size_t)p * p;
    b->n = n;
    b->p = p;
    b->a = fftwf_malloc(pp * sizeof *b->a);
    b->b = fftwf_malloc(pp * sizeof *b->b);
    b->in = fftwf_malloc((size_t)n * n * sizeof *b->in);
    if (!b->in || !b->a || !b->b || nh < 1 || nh > D2_MAX_LAYERS + 1) goto fail;
    for (int k = 0; k < nh; k++) {
        if (!(b->H[k] = fftwf_malloc(pp * sizeof *b->H[k]))) goto fail;
        b->nh = k + 1;
        memcpy(b->H[k], H[k], pp * sizeof *H[k]);
    }
    memset(b->a, 0, pp * sizeof *b->a);
    memset(b->b, 0, pp * sizeof *b->b);

    char path[1024];
    /* the wisdom file d2fab itself uses, so the limit and the program plan
     * from the same wisdom */
    net_wisdom_path(path, sizeof path);
    fftwf_import_wisdom_from_filename(path);
    double t0 = d2_now();
    unsigned fl = FFTW_PATIENT;
    int len[1] = {p};
    fftwf_complex *a = (fftwf_complex *)b->a, *w = (fftwf_complex *)b->b;
    b->row_f = fftwf_plan_many_dft(1, len, n, a, NULL, 1, p, a, NULL, 1, p, FFTW_FORWARD, fl);
    b->row_b_oop = fftwf_plan_many_dft(1, len, n, w, NULL, 1, p, a, NULL, 1, p, FFTW_BACKWARD, fl);
    b->row_f_w = fftwf_plan_many_dft(1, len, n, w, NULL, 1, p, w, NULL, 1, p, FFTW_FORWARD, fl);
    b->row_b_w = fftwf_plan_many_dft(1, len, n, w, NULL, 1, p, w, NULL, 1, p, FFTW_BACKWARD, fl);
    if (!b->row_f || !b->row_b_oop || !b->row_f_w || !b->row_b_w) goto fail;
    static const struct {
        int kind, colb;
        const char *name;
    } kinds[] = {
        {V_INPLACE_BATCH, 0, "in place, one batched column plan (howmany = p)"},
        {V_OUTPLACE_BATCH, 0, "out of place, one batched column plan (howmany = p)"},
        {V_INPLACE_BLOCK, 8, "in place, column blocks of 8, H fused"},
        {V_INPLACE_BLOCK, 16, "in place, column blocks of 16, H fused"},
        {V_OUTPLACE_BLOCK, 8, "out of place, column blocks of 8, H fused"},
        {V_OUTPLACE_BLOCK, 16, "out of place, column blocks of 16, H fused"},
        {V_OUTPLACE_BLOCK, 32, "out of place, column blocks of 32, H fused"},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        int colb = kinds[k].colb, hm = colb ? colb : p;
        if (colb && p % colb) continue;
        variant *v = &b->v[b->nv];
        v->kind = kinds[k].kind;
        v->colb = colb;
        int oop = v->kind == V_OUTPLACE_BATCH || v->kind == V_OUTPLACE_BLOCK;
        v->col_f = fftwf_plan_many_dft(1, len, hm, oop ? a : w, NULL, p, 1, w, NULL, p, 1,
                                       FFTW_FORWARD, fl);
        v->col_b = fftwf_plan_many_dft(1, len, hm, w, NULL, p, 1, w, NULL, p, 1, FFTW_BACKWARD, fl);
        if (!v->col_f || !v->col_b) goto fail;
        snprintf(info->name[b->nv], sizeof info->name[0], "%s", kinds[k].name);
        b->nv++;
    }
    info->plan_s = d2_now() - t0;
    {
        /* best effort: keep the wisdom for the next run and for d2fab */
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "%s.bench.tmp", path);
        if (fftwf_export_wisdom_to_filename(tmp)) {
            if (rename(tmp, path) != 0) remove(tmp);
        } else {
            remove(tmp);
        }
    }
    /* The input: a checkerboard of 8-pixel squares. */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) b->in[(size_t)i * n + j] = (i / 8 + j / 8) % 2 ? 1.0f : 0.0f;
    /* Time every schedule, interleaved, best of 5 rounds. */
    info->variants = b->nv;
    for (int i = 0; i < b->nv; i++) info->ms[i] = 1e30;
    for (int i = 0; i < b->nv; i++) time_variant(b, &b->v[i], 2); /* warm up */
    for (int round = 0; round < 5; round++)
        for (int i = 0; i < b->nv; i++) {
            double t = 1e3 * time_variant(b, &b->v[i], 10);
            if (t < info->ms[i]) info->ms[i] = t;
        }
    b->best = 0;
    for (int i = 1; i < b->nv; i++)
        if (info->ms[i] < info->ms[b->best]) b->best = i;
    info->best = b->best;
    return b;
fail:
    bench_limit_free(b);
    return NULL;
}
