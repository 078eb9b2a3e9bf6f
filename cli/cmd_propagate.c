/* d2fab propagate */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmds.h"
#include "core/npy.h"
#include "optics/optics.h"

static void help(FILE *fp)
{
    fprintf(fp,
            "Usage: d2fab propagate --in IN.npy --out OUT.npy --distance-mm Z\n"
            "                       (--wavelength-mm L | --frequency-thz F) --pitch-mm P\n\n"
            "Propagates a complex64 (N, N) field over Z with the band-limited angular\n"
            "spectrum method, zero-padded to pad x N (evanescent waves dropped). A\n"
            "negative Z propagates backwards. A float32 input is taken as an amplitude.\n\n"
            "  -i, --in FILE          input field, complex64 or float32 (N, N)    [required]\n"
            "  -o, --out FILE         output field, complex64 (N, N)              [required]\n"
            "  -z, --distance-mm Z    propagation distance, mm                    [required]\n"
            "  -w, --wavelength-mm L  wavelength, mm                  [or --frequency-thz]\n"
            "  -f, --frequency-thz F  frequency, THz (L = c / F)\n"
            "  -p, --pitch-mm P       sample pitch, mm                            [required]\n"
            "      --pad K            FFT size K x N, K in 2..4                        [2]\n"
            "  -h, --help             this help\n\n%s",
            cli_exit_help);
}

int cmd_propagate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"in", required_argument, 0, 'i'},           {"out", required_argument, 0, 'o'},
        {"distance-mm", required_argument, 0, 'z'},  {"wavelength-mm", required_argument, 0, 'w'},
        {"frequency-thz", required_argument, 0, 'f'}, {"pitch-mm", required_argument, 0, 'p'},
        {"pad", required_argument, 0, 'P'},          {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *in = NULL, *out = NULL;
    double z = NAN, lam = 0, f = 0, pitch = 0;
    long pad = 2;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:o:z:w:f:p:h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'z': if (cli_num("propagate", "distance-mm", optarg, -1e6, 1e6, &z)) return 1; break;
        case 'w': if (cli_num("propagate", "wavelength-mm", optarg, 1e-6, 1e4, &lam)) return 1; break;
        case 'f': if (cli_freq_thz("propagate", optarg, 1e-6, 1e6, &f)) return 1; break;
        case 'p': if (cli_num("propagate", "pitch-mm", optarg, 1e-6, 1e4, &pitch)) return 1; break;
        case 'P': if (cli_int("propagate", "pad", optarg, 2, 4, &pad)) return 1; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 1;
        }
    }
    if (!in || !out || isnan(z) || !(pitch > 0) || (lam > 0) == (f > 0) || optind < argc) {
        fprintf(stderr, "d2fab propagate: need --in, --out, --distance-mm, --pitch-mm and one of "
                        "--wavelength-mm or --frequency-thz\n");
        help(stderr);
        return 1;
    }
    if (f > 0) lam = opt_wavelength_mm(f);
    d2_err e = {0};
    npy_array a;
    int rc = npy_read(in, &a, &e);
    if (rc) return cli_error("propagate", rc, e.msg);
    if (a.ndim != 2 || a.shape[0] != a.shape[1] || a.shape[0] < 2 || a.shape[0] > D2_MAX_N) {
        fprintf(stderr, "d2fab propagate: %s: expected a square (N, N) field with N in 2..%d\n",
                in, D2_MAX_N);
        npy_free(&a);
        return 2;
    }
    int n = (int)a.shape[0];
    size_t nn = (size_t)n * n;
    float complex *field = d2_malloc(nn * sizeof *field, "field", &e);
    if (!field) {
        npy_free(&a);
        return cli_error("propagate", D2_EIO, e.msg);
    }
    for (size_t i = 0; i < nn; i++) {
        field[i] = a.dtype == NPY_C64 ? ((float complex *)a.data)[i] : ((float *)a.data)[i];
        if (!isfinite(crealf(field[i])) || !isfinite(cimagf(field[i]))) {
            fprintf(stderr, "d2fab propagate: %s: value %zu (row %zu, column %zu) is not finite\n",
                    in, i, i / n, i % n);
            free(field);
            npy_free(&a);
            return 2;
        }
    }
    npy_free(&a);
    rc = asm_propagate(field, n, pitch, lam, z, (int)pad, &e);
    size_t shape[2] = {(size_t)n, (size_t)n};
    if (!rc) rc = npy_write(out, NPY_C64, 2, shape, field, &e);
    double ein = 0;
    for (size_t i = 0; i < nn; i++) ein += crealf(field[i] * conjf(field[i]));
    free(field);
    if (rc) return cli_error("propagate", rc, e.msg);
    printf("%s: %d x %d field propagated %g mm at wavelength %g mm, pitch %g mm; energy %.6g\n",
           out, n, n, z, lam, pitch, ein);
    return 0;
}
