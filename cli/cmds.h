/* d2fab command line: one function per sub-command. Each parses its own
 * options with getopt_long, calls its stage's library functions, prints the
 * result and returns the process exit status (0 ok, 1 usage, 2 bad input,
 * 3 I/O or system error). */
#ifndef D2_CMDS_H
#define D2_CMDS_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_propagate(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_mesh(int argc, char **argv);
int cmd_mask(int argc, char **argv);
int cmd_tolerance(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);

/* Prints "d2fab CMD: message" to stderr and returns the exit status for code. */
int cli_error(const char *cmd, int code, const char *msg);
/* Parses a number option: whole string, finite, in [lo, hi]; on failure
 * prints which option, the value and the range and returns -1. */
int cli_num(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
/* cli_num for --frequency-thz: a value above hi (4e11, a frequency in Hz)
 * says that the unit is THz. */
int cli_freq_thz(const char *cmd, const char *s, double lo, double hi, double *out);
int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
/* Loads a model directory (model.json) or an export directory (export.json:
 * the heights that will be printed, as phases and amplitudes). */
#include "optics/optics.h"
int cli_load_model(const char *dir, d2_model *m, d2_err *e);
/* The exit-status paragraph shared by every --help. */
extern const char *cli_exit_help;

#endif
