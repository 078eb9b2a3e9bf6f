#include "util.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void d2_rng_seed(d2_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t d2_rng_u64(d2_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double d2_rng_uniform(d2_rng *r) { return (double)(d2_rng_u64(r) >> 11) * 0x1.0p-53; }

double d2_rng_normal(d2_rng *r)
{
    /* Box-Muller, one value per call: simple and reproducible. */
    double u1 = d2_rng_uniform(r), u2 = d2_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint32_t d2_rng_below(d2_rng *r, uint32_t n)
{
    /* Lemire's multiply-shift with rejection keeps it unbiased. */
    uint64_t m = (uint64_t)(uint32_t)(d2_rng_u64(r) >> 32) * n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) {
            m = (uint64_t)(uint32_t)(d2_rng_u64(r) >> 32) * n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void d2_rng_shuffle(d2_rng *r, int *v, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)d2_rng_below(r, (uint32_t)i + 1);
        int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

/* ---- thread pool: workers wait on a generation counter; items are handed out
 * through an atomic counter so uneven items balance themselves. */
struct d2_pool {
    int threads;
    pthread_t *tid;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long gen;
    int quit;
    d2_pool_fn fn;
    void *arg;
    int n;
    int next;     /* next item, under mu */
    int running;  /* workers still busy in this generation */
};

typedef struct { d2_pool *p; int id; } worker_arg;

static void work(d2_pool *p, int id)
{
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int i = p->next < p->n ? p->next++ : -1;
        pthread_mutex_unlock(&p->mu);
        if (i < 0) break;
        p->fn(p->arg, i, id);
    }
}

static void *worker(void *a)
{
    worker_arg wa = *(worker_arg *)a;
    free(a);
    d2_pool *p = wa.p;
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->gen == seen && !p->quit) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->gen;
        pthread_mutex_unlock(&p->mu);
        work(p, wa.id);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0) pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

int d2_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

d2_pool *d2_pool_new(int threads, d2_err *e)
{
    if (threads <= 0) threads = d2_cpu_count();
    d2_pool *p = d2_calloc(1, sizeof *p, "thread pool", e);
    if (!p) return NULL;
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    /* Thread 0 is the caller; threads-1 workers. */
    p->tid = d2_calloc((size_t)threads, sizeof *p->tid, "thread pool", e);
    if (!p->tid) goto fail;
    for (int i = 1; i < threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) goto fail_threads;
        wa->p = p;
        wa->id = i;
        if (pthread_create(&p->tid[i], NULL, worker, wa) != 0) {
            free(wa);
            p->threads = i;
            goto fail_threads;
        }
    }
    return p;
fail_threads:
    d2_fail(e, D2_EIO, "cannot start %d threads", threads);
    d2_pool_free(p);
    return NULL;
fail:
    free(p);
    return NULL;
}

int d2_pool_threads(const d2_pool *p) { return p->threads; }

void d2_pool_run(d2_pool *p, d2_pool_fn fn, void *arg, int n)
{
    if (p->threads == 1 || n <= 1) {
        for (int i = 0; i < n; i++) fn(arg, i, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->next = 0;
    p->running = p->threads - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    work(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->running > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void d2_pool_free(d2_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->threads; i++) pthread_join(p->tid[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    free(p->tid);
    free(p);
}

double d2_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void d2_progress_start(d2_progress *p, FILE *fp, const char *label)
{
    memset(p, 0, sizeof *p);
    p->fp = fp;
    p->tty = fp && isatty(fileno(fp));
    p->width = 80;
    struct winsize ws;
    if (p->tty && ioctl(fileno(fp), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) p->width = ws.ws_col;
    p->t0 = p->last = d2_now();
    p->every = p->tty ? 0.2 : 10.0;
    snprintf(p->label, sizeof p->label, "%s", label);
}

void d2_progress_after(d2_progress *p, double seconds) { p->after_s = seconds; }

static void fmt_time(char *buf, size_t cap, double s)
{
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, cap, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, cap, "%02ld:%02ld", t / 60, t % 60);
}

char *d2_progress_format(const d2_progress *p, long done, long total, const char *extra,
                         double elapsed, char *buf, size_t cap)
{
    double frac = total > 0 ? (double)done / (double)total : 1.0;
    double left = frac > 0 ? elapsed * (1.0 - frac) / frac : -1;
    char eta[32], ela[32], run[48] = "";
    fmt_time(eta, sizeof eta, left);
    fmt_time(ela, sizeof ela, elapsed);
    if (p->after_s != 0) {
        char r[32];
        fmt_time(r, sizeof r, p->after_s > 0 && left >= 0 ? left + p->after_s : -1);
        snprintf(run, sizeof run, " (run %s)", r);
    }
    if (p->tty) {
        char bar[31];
        int w = (int)(frac * 30.0);
        for (int i = 0; i < 30; i++) bar[i] = i < w ? '#' : '.';
        bar[30] = 0;
        snprintf(buf, cap, "%s [%s] %3.0f%% %ld/%ld %s ETA %s%s  %s", p->label, bar, 100.0 * frac,
                 done, total, ela, eta, run, extra ? extra : "");
        /* One column short of the width: a full line would wrap on some
         * terminals, and the next \r would then redraw only its tail. */
        size_t max = p->width > 1 ? (size_t)p->width - 1 : 1;
        if (strlen(buf) > max && max < cap) buf[max] = 0;
    } else {
        snprintf(buf, cap, "%s %ld/%ld (%.0f%%) elapsed %s ETA %s%s %s", p->label, done, total,
                 100.0 * frac, ela, eta, run, extra ? extra : "");
    }
    return buf;
}

void d2_progress_update(d2_progress *p, long done, long total, const char *extra)
{
    if (!p->fp) return;
    double now = d2_now();
    if (done < total && now - p->last < p->every) return;
    p->last = now;
    char line[512];
    d2_progress_format(p, done, total, extra, now - p->t0, line, sizeof line);
    if (p->tty)
        fprintf(p->fp, "\r%s\033[K", line);
    else
        fprintf(p->fp, "%s\n", line);
    fflush(p->fp);
}

void d2_progress_end(d2_progress *p, const char *extra)
{
    if (!p->fp) return;
    char ela[32];
    fmt_time(ela, sizeof ela, d2_now() - p->t0);
    fprintf(p->fp, "%s%s done in %s %s\n", p->tty ? "\r\033[K" : "", p->label, ela,
            extra ? extra : "");
    fflush(p->fp);
}
