/* Ranks of an MPI job, or one process. See par.h. */
#include "core/par.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#ifdef D2_HAVE_MPI
#include <mpi.h>
#endif

static int g_active, g_rank, g_size = 1;
static double g_bytes, g_secs;

int d2_par_rank(void) { return g_rank; }
int d2_par_size(void) { return g_size; }
double d2_par_bytes_sent(void) { return g_bytes; }
double d2_par_seconds(void) { return g_secs; }

void d2_par_range(long n, long *lo, long *hi)
{
    *lo = (long)((__int128)n * g_rank / g_size);
    *hi = (long)((__int128)n * (g_rank + 1) / g_size);
}

#ifdef D2_HAVE_MPI

int d2_par_have_mpi(void) { return 1; }

/* Started by a launcher: Open MPI's mpirun, or srun / another PMI launcher.
 * A plain start stays single-process, without MPI_Init's cost. */
static int launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

static int mpi_fail(d2_err *e, const char *what, int rc)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", rc);
    return d2_fail(e, D2_EIO, "MPI: %s on rank %d of %d failed: %s", what, g_rank, g_size, s);
}

int d2_par_init(int *argc, char ***argv, d2_err *e)
{
    if (g_active || !launched()) return 0;
    int rc = MPI_Init(argc, argv);
    if (rc != MPI_SUCCESS) return d2_fail(e, D2_EIO, "MPI_Init failed (error %d)", rc);
    /* Errors come back as codes, so they end the job with our message. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_active = 1;
    return 0;
}

void d2_par_finalize(void)
{
    if (!g_active) return;
    MPI_Finalize();
    g_active = 0;
}

int d2_par_barrier(d2_err *e)
{
    if (g_size == 1) return 0;
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(e, "barrier", rc);
}

/* The block of n that rank r owns, as MPI counts and displacements. */
static void blocks(size_t n, int *cnt, int *dsp)
{
    for (int r = 0; r < g_size; r++) {
        size_t lo = n * (size_t)r / g_size, hi = n * (size_t)(r + 1) / g_size;
        cnt[r] = (int)(hi - lo);
        dsp[r] = (int)lo;
    }
}

/* Reduce-scatter then all-gather, by hand so the order is ours: every rank
 * receives its block from all ranks (MPI_Alltoallv), adds the pieces in rank
 * order and sends the summed block to all (MPI_Allgatherv). Each rank sends
 * 2 (K - 1) / K of the array, as a ring all-reduce does. */
static int sum_any(void *v, size_t n, size_t esz, int dbl, d2_err *e)
{
    if (g_size == 1 || n == 0) return 0;
    if (n > INT_MAX / 2) return d2_fail(e, D2_EIO, "MPI: %zu values in one sum; at most %d", n,
                                        INT_MAX / 2);
    double t0 = d2_now();
    int K = g_size, rc = 0;
    MPI_Datatype ty = dbl ? MPI_DOUBLE : MPI_FLOAT;
    int *cnt = malloc(sizeof(int) * 4 * K);
    size_t mine = n * (size_t)(g_rank + 1) / K - n * (size_t)g_rank / K;
    char *recv = malloc(esz * (mine ? mine : 1) * K);
    if (!cnt || !recv) {
        free(cnt);
        free(recv);
        return d2_fail(e, D2_EIO, "out of memory (MPI sum of %zu values)", n);
    }
    int *dsp = cnt + K, *rcnt = cnt + 2 * K, *rdsp = cnt + 3 * K;
    blocks(n, cnt, dsp);
    for (int r = 0; r < K; r++) {
        rcnt[r] = (int)mine;
        rdsp[r] = (int)(mine * r);
    }
    rc = MPI_Alltoallv(v, cnt, dsp, ty, recv, rcnt, rdsp, ty, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        rc = mpi_fail(e, "sum (all-to-all)", rc);
        goto done;
    }
    char *out = (char *)v + esz * dsp[g_rank];
    if (dbl) {
        double *o = (double *)out, *in = (double *)recv;
        for (size_t i = 0; i < mine; i++) {
            double s = in[i];
            for (int r = 1; r < K; r++) s += in[mine * r + i];
            o[i] = s;
        }
    } else {
        float *o = (float *)out, *in = (float *)recv;
        for (size_t i = 0; i < mine; i++) {
            float s = in[i];
            for (int r = 1; r < K; r++) s += in[mine * r + i];
            o[i] = s;
        }
    }
    rc = MPI_Allgatherv(MPI_IN_PLACE, 0, ty, v, cnt, dsp, ty, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        rc = mpi_fail(e, "sum (all-gather)", rc);
        goto done;
    }
    g_bytes += (double)esz * ((double)(n - (size_t)cnt[g_rank]) + (double)mine * (K - 1));
    rc = 0;
done:
    g_secs += d2_now() - t0;
    free(cnt);
    free(recv);
    return rc;
}

int d2_par_sum_f32(float *v, size_t n, d2_err *e) { return sum_any(v, n, sizeof *v, 0, e); }
int d2_par_sum_f64(double *v, size_t n, d2_err *e) { return sum_any(v, n, sizeof *v, 1, e); }

int d2_par_share(void *buf, size_t item, long n, d2_err *e)
{
    if (g_size == 1 || n <= 0) return 0;
    if ((double)n * item > INT_MAX)
        return d2_fail(e, D2_EIO, "MPI: %ld items of %zu bytes in one gather; at most %d bytes",
                       n, item, INT_MAX);
    double t0 = d2_now();
    int K = g_size, rc;
    int *cnt = malloc(sizeof(int) * 2 * K);
    if (!cnt) return d2_fail(e, D2_EIO, "out of memory (MPI gather)");
    int *dsp = cnt + K;
    blocks((size_t)n, cnt, dsp);
    for (int r = 0; r < K; r++) {
        cnt[r] *= (int)item;
        dsp[r] *= (int)item;
    }
    rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_BYTE, buf, cnt, dsp, MPI_BYTE, MPI_COMM_WORLD);
    g_bytes += (double)cnt[g_rank] * (K - 1);
    free(cnt);
    g_secs += d2_now() - t0;
    return rc == MPI_SUCCESS ? 0 : mpi_fail(e, "gather", rc);
}

int d2_par_bcast(void *buf, size_t bytes, d2_err *e)
{
    if (g_size == 1 || bytes == 0) return 0;
    if (bytes > INT_MAX)
        return d2_fail(e, D2_EIO, "MPI: broadcast of %zu bytes; at most %d", bytes, INT_MAX);
    double t0 = d2_now();
    int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (g_rank == 0) g_bytes += (double)bytes * (g_size - 1);
    g_secs += d2_now() - t0;
    return rc == MPI_SUCCESS ? 0 : mpi_fail(e, "broadcast", rc);
}

void d2_par_abort(int status, const char *msg)
{
    if (msg && g_size > 1) fprintf(stderr, "d2fab [rank %d of %d]: %s\n", g_rank, g_size, msg);
    else if (msg) fprintf(stderr, "d2fab: %s\n", msg);
    fflush(stderr);
    if (g_active) MPI_Abort(MPI_COMM_WORLD, status);
    exit(status);
}

#else /* single process */

int d2_par_have_mpi(void) { return 0; }
/* Started by mpirun or srun as one of several processes, a build without
 * MPI would run the whole job in each of them: refused. */
int d2_par_init(int *argc, char ***argv, d2_err *e)
{
    (void)argc, (void)argv;
    (void)g_active;
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1)
            return d2_fail(e, D2_EUSAGE, "started as one of %s processes (%s), but this d2fab "
                           "was built without MPI, so each would run the whole job; build it "
                           "with Open MPI (make, not make MPI=no) or start one process", v,
                           vars[i]);
    }
    return 0;
}
void d2_par_finalize(void) {}
int d2_par_barrier(d2_err *e) { (void)e; return 0; }
int d2_par_sum_f32(float *v, size_t n, d2_err *e) { (void)v, (void)n, (void)e; return 0; }
int d2_par_sum_f64(double *v, size_t n, d2_err *e) { (void)v, (void)n, (void)e; return 0; }
int d2_par_share(void *buf, size_t item, long n, d2_err *e)
{
    (void)buf, (void)item, (void)n, (void)e;
    return 0;
}
int d2_par_bcast(void *buf, size_t bytes, d2_err *e) { (void)buf, (void)bytes, (void)e; return 0; }
void d2_par_abort(int status, const char *msg)
{
    if (msg) fprintf(stderr, "d2fab: %s\n", msg);
    exit(status);
}
#endif
