/* d2fab run: every stage in order, from a run config to a print package. */
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmds.h"
#include "core/idx.h"
#include "run/run.h"

#define CMD "run"
#define SAMPLE "samples/run.json"

static void run_help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab run [CONFIG.json] --out DIR [options]\n\n"
            "Runs every stage in order - model and accuracy, export, mesh, input masks,\n"
            "tolerance, report - and writes a print package into DIR: parts/ (the files to\n"
            "print), assembly.* and assembly.json, previews/, export/, tolerance/,\n"
            "report.json, report.html (one self-contained page) and PRINTING.txt (for the\n"
            "print shop). One line per stage; progress bars on stderr.\n\n"
            "  CONFIG.json          run config: the model (\"model\": a model folder, or\n"
            "                       \"phases\": phase maps with pitch_mm and frequency_thz),\n"
            "                       printer, material, frequency_thz, export, mesh, masks,\n"
            "                       tolerance (paths relative to the config's folder)\n"
            "                       [%s, the shipped sample]\n"
            "  -o, --out DIR        package folder: new, empty, or an earlier package,\n"
            "                       whose files are replaced                   [required]\n"
            "  -d, --data DIR       data folder with mnist/ and fashion/ [$D2FAB_DATA or data]\n"
            "      --profiles DIR   extra printer/material profiles     [$D2FAB_PROFILES]\n"
            "  -t, --threads N      worker threads                            [all cores]\n"
            "  -q, --quiet          no stage lines or progress bars; only the last line\n"
            "  -h, --help           this help\n\n"
            "Without \"masks\" or \"tolerance\" in the config those stages are skipped, and\n"
            "the stage line and the report say so. Knobs that set the run time:\n"
            "test_limit, tolerance.trials x tolerance.limit, tolerance.sensitivity and\n"
            "tolerance.inverse (see the notes in %s); \"print_time\": \"slicer\" asks\n"
            "PrusaSlicer for every layer part's print time (5-25 s CPU each; $D2FAB_SLICER\n"
            "names another slicer binary).\n\n%s",
            SAMPLE, SAMPLE, cli_exit_help);
}

/* The shipped sample: ./samples/run.json, else the samples folder beside
 * the executable. */
static const char *find_sample(char *buf, size_t cap)
{
    if (access(SAMPLE, R_OK) == 0) return SAMPLE;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        int w = snprintf(buf, cap, "%s/%s", dirname(exe), SAMPLE);
        if (w > 0 && (size_t)w < cap && access(buf, R_OK) == 0) return buf;
    }
    return SAMPLE; /* the loader's message names it */
}

int cmd_run(int argc, char **argv)
{
    enum { O_PROFILES = 1000 };
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},     {"data", required_argument, 0, 'd'},
        {"profiles", required_argument, 0, O_PROFILES},
        {"threads", required_argument, 0, 't'}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    run_opts ro = {0};
    ro.data_dir = dataset_default_dir();
    ro.log = stdout;
    ro.progress = stderr;
    long threads = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:d:t:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': ro.out_dir = optarg; break;
        case 'd': ro.data_dir = optarg; break;
        case O_PROFILES: ro.profiles_dir = optarg; break;
        case 't': if (cli_int(CMD, "threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'q': ro.log = NULL, ro.progress = NULL; break;
        case 'h': run_help(stdout); return 0;
        default: run_help(stderr); return 1;
        }
    }
    ro.threads = (int)threads;
    if (argc - optind > 1 || !ro.out_dir) {
        fprintf(stderr, "d2fab %s: %s\n", CMD,
                !ro.out_dir ? "--out DIR is required" : "give at most one CONFIG.json");
        run_help(stderr);
        return 1;
    }
    char sample[PATH_MAX + 32];
    const char *cfg = optind < argc ? argv[optind] : find_sample(sample, sizeof sample);

    d2_err e = {0};
    run_config rc_;
    int rc = run_config_load(cfg, &rc_, &e);
    if (rc) return cli_error(CMD, rc, e.msg);
    if (ro.log) fprintf(ro.log, "d2fab run %s -> %s\n", cfg, ro.out_dir);
    run_result res;
    rc = run_pipeline(&rc_, &ro, &res, &e);
    run_config_free(&rc_);
    if (rc) {
        fprintf(stderr, "d2fab %s: %s\n", CMD, e.msg);
        fprintf(stderr, "d2fab %s: stopped; no report written in %s\n", CMD, ro.out_dir);
        return d2_exit_code(rc);
    }
    int skipped = 0;
    for (int k = 0; k < RUN_STAGES; k++) skipped += res.status[k] == RUN_SKIPPED;
    printf("print package: %s (open %s; for the print shop: %s/PRINTING.txt)%s\n", ro.out_dir,
           res.report_html, ro.out_dir, skipped ? "; some stages were skipped (see the report)" : "");
    return 0;
}
