/* d2fab core: seeded random numbers, a thread pool and a progress line. */
#ifndef D2_UTIL_H
#define D2_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include "err.h"

/* xoshiro256** seeded through splitmix64: the same seed gives the same
 * sequence on every platform. */
typedef struct d2_rng { uint64_t s[4]; } d2_rng;
void d2_rng_seed(d2_rng *r, uint64_t seed);
uint64_t d2_rng_u64(d2_rng *r);
double d2_rng_uniform(d2_rng *r);                 /* [0, 1) */
double d2_rng_normal(d2_rng *r);                  /* N(0, 1) */
uint32_t d2_rng_below(d2_rng *r, uint32_t n);     /* [0, n) without bias */
void d2_rng_shuffle(d2_rng *r, int *v, int n);

/* A fixed pool of worker threads running fn(arg, i, tid) for i in 0..n-1.
 * d2_pool_run blocks until all are done. Thread tid is in 0..threads-1, so
 * callers keep per-thread scratch space. */
typedef struct d2_pool d2_pool;
typedef void (*d2_pool_fn)(void *arg, int i, int tid);
d2_pool *d2_pool_new(int threads, d2_err *e); /* threads <= 0: all cores */
int d2_pool_threads(const d2_pool *p);
void d2_pool_run(d2_pool *p, d2_pool_fn fn, void *arg, int n);
void d2_pool_free(d2_pool *p);
int d2_cpu_count(void);

/* Progress reporting for long runs: a redrawn bar with ETA when the stream is
 * a terminal (cut to the terminal's width, so it never wraps into the next
 * line), otherwise a plain line every `every` seconds. */
typedef struct d2_progress {
    FILE *fp;
    int tty;
    int width;        /* terminal columns (tty only) */
    double t0, last;
    double every;
    double after_s;   /* work still to come after this bar, for the run's ETA */
    char label[64];
} d2_progress;
void d2_progress_start(d2_progress *p, FILE *fp, const char *label);
/* Seconds of work that will follow this bar (later epochs, say): the line
 * then also gives the whole run's ETA. < 0: unknown, 0: none (default). */
void d2_progress_after(d2_progress *p, double seconds);
/* done of total units; extra is a short status such as "loss 0.41 acc 93.1%". */
void d2_progress_update(d2_progress *p, long done, long total, const char *extra);
void d2_progress_end(d2_progress *p, const char *extra);
/* The text of one progress line at `elapsed` seconds, without the leading
 * carriage return or trailing newline; on a terminal at most width - 1
 * characters. Returns buf. */
char *d2_progress_format(const d2_progress *p, long done, long total, const char *extra,
                         double elapsed, char *buf, size_t cap);

double d2_now(void); /* monotonic seconds */

#endif
