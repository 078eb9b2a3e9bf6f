/* d2fab: from trained diffractive layers to printed parts. Command dispatch. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmds.h"
#include "core/err.h"
#include "core/fileio.h"
#include "core/par.h"
#include "export/export.h"
#include "optics/optics.h"

const char *cli_exit_help =
    "Exit status: 0 success; 1 usage error (unknown option, missing or malformed\n"
    "argument); 2 bad input: an input file that is missing, of the wrong format or\n"
    "with values out of range, or a size over a limit; 3 I/O or system error: a file\n"
    "or folder that cannot be read or written (permissions, disk full), or not\n"
    "enough memory. Every message names the file and what was wrong.\n";

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} cmds[] = {
    {"train", cmd_train, "train the phase layers on MNIST or Fashion-MNIST"},
    {"eval", cmd_eval, "accuracy, confusion matrix and efficiency of a model"},
    {"propagate", cmd_propagate, "propagate a complex64 .npy field through free space"},
    {"export", cmd_export, "phase maps to printable height maps for a printer and material"},
    {"mesh", cmd_mesh, "height maps to watertight plates with frame and pegs (STL, 3MF...)"},
    {"mask", cmd_mask, "digit input-aperture masks with island bridges"},
    {"tolerance", cmd_tolerance, "accuracy under fabrication and assembly errors"},
    {"simulate", cmd_simulate, "readings of a stack with hidden errors (a rehearsal of a measurement)"},
    {"calibrate", cmd_calibrate, "fit the printed stack's errors to measured readings: its twin"},
    {"check", cmd_check, "validate a mesh file (closed, manifold, volume)"},
    {"run", cmd_run, "everything in order: model to print package and report"},
};

static void usage(FILE *fp)
{
    fprintf(fp,
            "d2fab %s - from trained diffractive layers to printed parts\n\n"
            "Usage: d2fab COMMAND [OPTIONS]   (d2fab COMMAND --help for its options)\n\n"
            "Commands:\n",
            D2FAB_VERSION);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(fp, "  %-10s %s\n", cmds[i].name, cmds[i].what);
    fprintf(fp,
            "\nUnits: lengths in mm, frequencies in THz, phases in radians.\n"
            "Environment: D2FAB_DATA (data folder, default ./data), D2FAB_PROFILES\n"
            "(extra printer/material profile folder), D2FAB_WISDOM (FFTW wisdom file).\n"
            "MPI: under mpirun or srun, train, eval and tolerance split their work over the\n"
            "ranks (%s); rank 0 prints and writes.\n\n%s",
            d2_par_have_mpi() ? "this build has MPI" : "this build has no MPI: make without MPI=no",
            cli_exit_help);
}

int cli_error(const char *cmd, int code, const char *msg)
{
    if (d2_par_size() > 1)
        fprintf(stderr, "d2fab %s [rank %d of %d]: %s\n", cmd, d2_par_rank(), d2_par_size(), msg);
    else
        fprintf(stderr, "d2fab %s: %s\n", cmd, msg);
    return d2_exit_code(code);
}

int cli_num(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "d2fab %s: --%s '%s': expected a number in [%g, %g]\n", cmd, opt, s, lo,
                hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_freq_thz(const char *cmd, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s && !*end && !errno && isfinite(v) && v > hi) {
        /* 4e11 or 400e9: a frequency in Hz typed where THz are meant. */
        fprintf(stderr, "d2fab %s: --frequency-thz '%s': the unit is THz; %g THz is far beyond "
                "any printable optics (allowed: [%g, %g] THz). If you meant %g Hz, that is "
                "%.6g THz\n", cmd, s, v, lo, hi, v, v / 1e12);
        return -1;
    }
    return cli_num(cmd, "frequency-thz", s, lo, hi, out);
}

int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "d2fab %s: --%s '%s': expected an integer in [%ld, %ld]\n", cmd, opt, s,
                lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_load_model(const char *dir, d2_model *m, d2_err *e)
{
    return export_model_load(dir, m, NULL, e);
}

/* Commands that split their work over MPI ranks; the others run as one
 * process. */
static int runs_on_ranks(const char *cmd)
{
    return !strcmp(cmd, "train") || !strcmp(cmd, "eval") || !strcmp(cmd, "tolerance");
}

/* Under mpirun (K > 1): only rank 0 writes to stdout (the others' goes to
 * /dev/null; progress is theirs to silence); a command that fails on any rank
 * ends the whole job with that rank's message, already printed. */
static int dispatch(int argc, char **argv)
{
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name)) continue;
        if (d2_par_size() > 1 && !runs_on_ranks(argv[1])) {
            if (d2_par_rank() == 0)
                fprintf(stderr, "d2fab %s: runs as one process; start it without mpirun (train, "
                        "eval and tolerance split their work over MPI ranks)\n", argv[1]);
            return 1;
        }
        if (d2_par_rank() > 0 && !freopen("/dev/null", "w", stdout)) return 3;
        return cmds[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "d2fab: unknown command '%s' (d2fab --help lists them)\n", argv[1]);
    return 1;
}

int main(int argc, char **argv)
{
    d2_err e = {0};
    if (d2_par_init(&argc, &argv, &e)) {
        fprintf(stderr, "d2fab: %s\n", e.msg);
        return d2_exit_code(e.code);
    }
    /* SIGINT / SIGTERM remove the temporaries being written, then end the
     * process by that signal (130 / 143). */
    d2_stop_signals();
    int rc = 0;
    if (argc < 2) {
        usage(stderr);
        rc = 1;
    } else if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
    } else if (!strcmp(argv[1], "--version")) {
        printf("d2fab %s\n", D2FAB_VERSION);
    } else {
        rc = dispatch(argc, argv);
    }
    fflush(stdout);
    if (rc && d2_par_size() > 1) d2_par_abort(rc, NULL);
    d2_par_finalize();
    return rc;
}
