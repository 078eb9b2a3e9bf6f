/* d2fab core: processes working together (MPI ranks), behind one small
 * interface so that train/ and tolerance/ never call MPI themselves.
 *
 * Built with MPI (pkg-config ompi-c, D2_HAVE_MPI) and started by a launcher
 * (mpirun, srun), the program is one of K ranks of MPI_COMM_WORLD; built
 * without it, or started directly, it is rank 0 of 1 and every call below is
 * the trivial single-process one (sums and gathers return at once).
 *
 * Every function other than d2_par_rank, d2_par_size, d2_par_range,
 * d2_par_abort and the counters is collective: all ranks call it, in the same
 * order, with the same sizes. Results never depend on timing: sums add the
 * ranks' contributions in rank order. */
#ifndef D2_PAR_H
#define D2_PAR_H

#include <stddef.h>
#include "err.h"

/* Joins the job when a launcher started this process (its environment names
 * a rank); otherwise stays single-process. Call once, first thing in main.
 * Returns 0 or D2_EIO (MPI_Init failed). */
int d2_par_init(int *argc, char ***argv, d2_err *e);
/* Leaves the job (after the last collective call); no-op single-process. */
void d2_par_finalize(void);

int d2_par_rank(void);     /* 0..size-1 */
int d2_par_size(void);     /* ranks in the job, 1 single-process */
int d2_par_have_mpi(void); /* 1 when built with MPI */

/* This rank's block [*lo, *hi) of n items split into size contiguous blocks
 * (block r = [n r / size, n (r + 1) / size)), the split d2_par_share uses. */
void d2_par_range(long n, long *lo, long *hi);

int d2_par_barrier(d2_err *e);

/* Sums v (n values) over all ranks in place, every rank receiving the sum.
 * Each element is added in rank order (rank 0's value, plus rank 1's, ...),
 * so the same inputs and the same size give the same bits. Returns 0 or
 * D2_EIO (MPI error, out of memory, n too large). */
int d2_par_sum_f32(float *v, size_t n, d2_err *e);
int d2_par_sum_f64(double *v, size_t n, d2_err *e);

/* buf holds n items of `item` bytes; this rank has filled its block of
 * d2_par_range(n); afterwards every rank holds all n items, in order. */
int d2_par_share(void *buf, size_t item, long n, d2_err *e);

/* Copies bytes from rank 0's buf into every rank's buf. */
int d2_par_bcast(void *buf, size_t bytes, d2_err *e);

/* Ends the whole job (every rank) with exit status `status` (1, 2, 3), after
 * writing "d2fab [rank R of K]: msg" to stderr when msg is not NULL.
 * Single-process: exits. Only the command line calls it. */
void d2_par_abort(int status, const char *msg) __attribute__((noreturn));

/* What the sums and gathers of this process have cost so far: bytes it
 * sent to other ranks and seconds spent inside those calls. */
double d2_par_bytes_sent(void);
double d2_par_seconds(void);

#endif
