/* Asking a real slicer for the print time of a part: PrusaSlicer's SLA export
 * (the .sl1 archive's config.ini holds printTime and usedMaterial) or its
 * G-code export (the footer holds "; estimated printing time"). The slicer is
 * run as a child process with its output in a log file; nothing is printed. */
#include "export/export.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "core/fileio.h"

#define SLICER_TIMEOUT_S 1800
#define SLICER_ARGS 48

int slicer_kind(const printer_profile *p)
{
    const char *t = p->technology;
    if (!strcmp(t, "sla") || !strcmp(t, "msla") || !strcmp(t, "dlp")) return SLICER_SLA;
    if (!strcmp(t, "fdm")) return SLICER_FDM;
    return SLICER_NONE;
}

const char *slicer_program(void)
{
    const char *s = getenv("D2FAB_SLICER");
    return s && s[0] ? s : "prusa-slicer";
}

/* The executable a program name runs (a name with '/' as it is, else the
 * first match on $PATH); 0 when found. */
static int find_program(const char *name, char *out, size_t cap)
{
    if (strchr(name, '/')) {
        snprintf(out, cap, "%s", name);
        return access(out, X_OK);
    }
    const char *path = getenv("PATH");
    if (!path) path = "/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        if (len && snprintf(out, cap, "%.*s/%s", (int)len, path, name) < (int)cap &&
            access(out, X_OK) == 0)
            return 0;
        path += len + (path[len] == ':');
    }
    return -1;
}

/* Runs argv (argv[0] the resolved program) with stdin /dev/null and stdout
 * and stderr into log; waits up to SLICER_TIMEOUT_S, then kills it. The
 * exit status, or -1 (e filled) when it could not run or was killed. */
static int run_child(char *const *argv, const char *log, d2_err *e)
{
    pid_t pid = fork();
    if (pid < 0) return d2_fail(e, D2_EIO, "cannot start %s: %s", argv[0], strerror(errno));
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY), out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    struct timespec tick = {0, 50 * 1000 * 1000};
    double waited = 0;
    int st;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR)
            return d2_fail(e, D2_EIO, "waiting for %s: %s", argv[0], strerror(errno));
        if (waited > SLICER_TIMEOUT_S) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return d2_fail(e, D2_EIO, "%s took longer than %d s and was stopped",
                           argv[0], SLICER_TIMEOUT_S);
        }
        nanosleep(&tick, NULL);
        waited += 0.05;
    }
    if (WIFSIGNALED(st))
        return d2_fail(e, D2_EIO, "%s was killed by signal %d", argv[0],
                       WTERMSIG(st));
    return WEXITSTATUS(st);
}

/* The last line of the slicer's log that says what went wrong, for messages. */
static void log_tail(const char *log, char *out, size_t cap)
{
    char *buf = NULL;
    size_t n = 0;
    out[0] = 0;
    if (d2_read_file(log, 1 << 24, &buf, &n, NULL)) return;
    char *line = strtok(buf, "\n");
    for (; line; line = strtok(NULL, "\n"))
        if (!strstr(line, "[trace]") && !strstr(line, "[info]") && line[0])
            snprintf(out, cap, "%s", line);
    free(buf);
}

static uint32_t le32(const unsigned char *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static unsigned le16(const unsigned char *p) { return p[0] | (unsigned)p[1] << 8; }

/* Reads one entry (stored or deflated, at most 1 MiB) of a zip archive, found
 * through the central directory. *out malloc'ed and NUL-terminated. */
static int zip_entry(const char *path, const char *name, char **out, d2_err *e)
{
    FILE *f = NULL;
    unsigned char tail[65557], hdr[46], *comp = NULL;
    char *data = NULL;
    int rc = D2_EINPUT;
    *out = NULL;
    if ((rc = d2_fopen_input(path, &f, e))) return rc;
    rc = D2_EINPUT;
    if (fseek(f, 0, SEEK_END) != 0) goto bad;
    long size = ftell(f);
    long take = size < (long)sizeof tail ? size : (long)sizeof tail;
    if (take < 22 || fseek(f, size - take, SEEK_SET) != 0 ||
        fread(tail, 1, take, f) != (size_t)take)
        goto bad;
    long eocd = -1;
    for (long i = take - 22; i >= 0 && eocd < 0; i--)
        if (le32(tail + i) == 0x06054b50) eocd = i;
    if (eocd < 0) goto bad;
    unsigned count = le16(tail + eocd + 10);
    long cd = le32(tail + eocd + 16);
    if (fseek(f, cd, SEEK_SET) != 0) goto bad;
    size_t nlen = strlen(name);
    for (unsigned k = 0; k < count; k++) {
        char fname[256];
        if (fread(hdr, 1, 46, f) != 46 || le32(hdr) != 0x02014b50) goto bad;
        unsigned method = le16(hdr + 10), fl = le16(hdr + 28), xl = le16(hdr + 30),
                 cl = le16(hdr + 32);
        uint32_t csize = le32(hdr + 20), usize = le32(hdr + 24), off = le32(hdr + 42);
        if (fl >= sizeof fname || fread(fname, 1, fl, f) != fl) goto bad;
        fname[fl] = 0;
        if (fseek(f, (long)xl + cl, SEEK_CUR) != 0) goto bad;
        if (fl != nlen || memcmp(fname, name, nlen)) continue;
        if (usize > (1u << 20) || csize > (1u << 20) || (method != 0 && method != 8)) goto bad;
        unsigned char lh[30];
        if (fseek(f, off, SEEK_SET) != 0 || fread(lh, 1, 30, f) != 30 ||
            le32(lh) != 0x04034b50 || fseek(f, (long)le16(lh + 26) + le16(lh + 28), SEEK_CUR))
            goto bad;
        comp = malloc(csize + 1);
        data = malloc((size_t)usize + 1);
        if (!comp || !data) {
            rc = d2_fail(e, D2_EIO, "out of memory reading %s", path);
            goto done;
        }
        if (fread(comp, 1, csize, f) != csize) goto bad;
        if (method == 0) {
            if (csize != usize) goto bad;
            memcpy(data, comp, usize);
        } else {
            z_stream z = {0};
            if (inflateInit2(&z, -MAX_WBITS) != Z_OK) goto bad;
            z.next_in = comp;
            z.avail_in = csize;
            z.next_out = (unsigned char *)data;
            z.avail_out = usize;
            int zr = inflate(&z, Z_FINISH);
            inflateEnd(&z);
            if (zr != Z_STREAM_END || z.total_out != usize) goto bad;
        }
        data[usize] = 0;
        *out = data;
        data = NULL;
        rc = 0;
        goto done;
    }
    rc = d2_fail(e, D2_EINPUT, "%s: no %s in the archive", path, name);
    goto done;
bad:
    rc = d2_fail(e, D2_EINPUT, "%s: not a zip archive d2fab can read (looking for %s)", path,
                 name);
done:
    free(comp);
    free(data);
    fclose(f);
    return rc;
}

/* "key = value" from an ini text; 0 when found. */
static int ini_num(const char *ini, const char *key, double *v)
{
    size_t kl = strlen(key);
    for (const char *p = ini; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) || (p[kl] != ' ' && p[kl] != '=')) continue;
        const char *q = strchr(p, '=');
        char *end;
        if (!q) return -1;
        *v = strtod(q + 1, &end);
        return end == q + 1 || !isfinite(*v) ? -1 : 0;
    }
    return -1;
}

static int read_sl1(const char *sl1, slicer_estimate *r, d2_err *e)
{
    char *ini = NULL;
    int rc = zip_entry(sl1, "config.ini", &ini, e);
    if (rc) return rc;
    double t, fast = 0, slow = 0;
    if (ini_num(ini, "printTime", &t) || !(t >= 0) || ini_num(ini, "usedMaterial", &r->material)) {
        free(ini);
        return d2_fail(e, D2_EINPUT, "%s: config.ini has no printTime and usedMaterial (not an "
                       "SL1 archive from PrusaSlicer?)", sl1);
    }
    r->time_h = t / 3600;
    ini_num(ini, "numFast", &fast);
    ini_num(ini, "numSlow", &slow);
    r->layers = (long)(fast + slow);
    ini_num(ini, "expTime", &r->exposure_s);
    ini_num(ini, "expTimeFirst", &r->first_exposure_s);
    const char *v = strstr(ini, "prusaSlicerVersion = ");
    if (v) snprintf(r->slicer, sizeof r->slicer, "%.*s", (int)strcspn(v + 21, "\r\n"), v + 21);
    snprintf(r->material_unit, sizeof r->material_unit, "ml");
    free(ini);
    return 0;
}

/* "1d 2h 3m 4s" (any of the parts) -> seconds; -1 when none parses. */
static double gcode_duration_s(const char *s)
{
    double total = 0;
    int any = 0;
    while (*s) {
        char *end;
        double v = strtod(s, &end);
        if (end == s) {
            s++;
            continue;
        }
        double mul = *end == 'd' ? 86400 : *end == 'h' ? 3600 : *end == 'm' ? 60
                   : *end == 's' ? 1 : -1;
        if (mul < 0) return -1;
        total += v * mul;
        any = 1;
        s = end + 1;
    }
    return any ? total : -1;
}

static int read_gcode(const char *gcode, slicer_estimate *r, d2_err *e)
{
    FILE *f;
    int rc = d2_fopen_input(gcode, &f, e);
    if (rc) return rc;
    char line[512];
    double t = -1;
    const char *tk = "; estimated printing time (normal mode) = ", *mk = "; filament used [cm3] = ",
               *gk = "; generated by ";
    while (fgets(line, sizeof line, f)) {
        if (line[0] != ';') continue;
        if (!strncmp(line, ";LAYER_CHANGE", 13)) r->layers++;
        else if (!strncmp(line, tk, strlen(tk))) t = gcode_duration_s(line + strlen(tk));
        else if (!strncmp(line, mk, strlen(mk))) r->material = strtod(line + strlen(mk), NULL);
        else if (!strncmp(line, gk, strlen(gk)) && !r->slicer[0]) {
            /* "; generated by PrusaSlicer 2.5.0 on DATE" */
            const char *v = line + strlen(gk), *on = strstr(v, " on ");
            snprintf(r->slicer, sizeof r->slicer, "%.*s",
                     (int)(on ? on - v : (long)strcspn(v, "\r\n")), v);
        }
    }
    fclose(f);
    if (!(t >= 0))
        return d2_fail(e, D2_EINPUT, "%s: no \"; estimated printing time (normal mode)\" line "
                       "(not G-code from PrusaSlicer?)", gcode);
    r->time_h = t / 3600;
    snprintf(r->material_unit, sizeof r->material_unit, "cm3");
    return 0;
}

/* argv for the slicer (strings in buf). */
typedef struct slicer_args {
    char *argv[SLICER_ARGS];
    int argc;
    char buf[SLICER_ARGS][128];
} slicer_args;

static void arg(slicer_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(slicer_args *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->buf[a->argc], sizeof a->buf[0], fmt, ap);
    va_end(ap);
    a->argv[a->argc] = a->buf[a->argc];
    a->argc++;
}

/* The printer's geometry and layer height; supports and pads off (the plates
 * lie flat on the platform); FDM at 100 % rectilinear infill with the first
 * layer as thin as the others, so the heights stay whole Z steps. */
static void slicer_argv(const printer_profile *p, int kind, slicer_args *a)
{
    const double *b = p->build_mm;
    arg(a, "--printer-technology");
    arg(a, kind == SLICER_SLA ? "SLA" : "FFF");
    arg(a, "--layer-height");
    arg(a, "%.6g", p->z_step_mm);
    arg(a, "--bed-shape");
    arg(a, "0x0,%.6gx0,%.6gx%.6g,0x%.6g", b[0], b[0], b[1], b[1]);
    arg(a, "--max-print-height");
    arg(a, "%.6g", b[2]);
    if (kind == SLICER_SLA) {
        arg(a, "--initial-layer-height");
        arg(a, "%.6g", p->z_step_mm);
        arg(a, "--display-width");
        arg(a, "%.6g", b[0]);
        arg(a, "--display-height");
        arg(a, "%.6g", b[1]);
        arg(a, "--display-pixels-x");
        arg(a, "%ld", lround(b[0] / p->xy_resolution_mm));
        arg(a, "--display-pixels-y");
        arg(a, "%ld", lround(b[1] / p->xy_resolution_mm));
        arg(a, "--no-supports-enable");
        arg(a, "--no-pad-enable");
        arg(a, "--export-sla");
    } else {
        arg(a, "--first-layer-height");
        arg(a, "%.6g", p->z_step_mm);
        arg(a, "--nozzle-diameter");
        arg(a, "%.6g", p->xy_resolution_mm);
        arg(a, "--fill-density");
        arg(a, "100%%");
        arg(a, "--fill-pattern");
        arg(a, "rectilinear");
        arg(a, "--center");
        arg(a, "%.6g,%.6g", b[0] / 2, b[1] / 2);
        arg(a, "--export-gcode");
    }
}

/* The slicer can slice for p and is installed: prog receives its path. */
static int check(const printer_profile *p, char *prog, size_t cap, d2_err *e)
{
    if (slicer_kind(p) == SLICER_NONE)
        return d2_fail(e, D2_EINPUT, "PrusaSlicer slices for SLA/MSLA/DLP resin printers and "
                       "FDM printers, not for %s (%s, technology \"%s\"): leave the time to the "
                       "layer model (\"print_time\": \"layers\" in a run config, no "
                       "--print-time-slicer for mesh)", p->display_name, p->name, p->technology);
    const char *name = slicer_program();
    if (find_program(name, prog, cap))
        return d2_fail(e, D2_EINPUT, "slicer \"%s\" not found%s (install the Debian package "
                       "prusa-slicer, or set D2FAB_SLICER to its path; without it use the layer "
                       "model: \"print_time\": \"layers\", no --print-time-slicer)", name,
                       strchr(name, '/') ? " or not executable" : " on $PATH");
    return 0;
}

int slicer_check(const printer_profile *p, d2_err *e)
{
    char prog[1024];
    return check(p, prog, sizeof prog, e);
}

int slicer_print_time(const printer_profile *p, const char *part, const char *work_dir,
                      slicer_estimate *r, d2_err *e)
{
    memset(r, 0, sizeof *r);
    int kind = slicer_kind(p), rc;
    char prog[1024];
    if ((rc = check(p, prog, sizeof prog, e))) return rc;
    size_t len = strlen(part);
    if (!(len > 4 && (!strcasecmp(part + len - 4, ".stl") || !strcasecmp(part + len - 4, ".3mf") ||
                      !strcasecmp(part + len - 4, ".obj"))))
        return d2_fail(e, D2_EINPUT, "%s: PrusaSlicer reads STL, 3MF and OBJ parts; write the "
                       "parts as stl, 3mf or obj to ask it for the print time", part);
    if ((rc = d2_check_input(part, e))) return rc;
    char dir[1024], out[1100], log[1100], tail[256];
    if (snprintf(dir, sizeof dir, "%s/.slicer-XXXXXX", work_dir && work_dir[0] ? work_dir : ".")
            >= (int)sizeof dir || !mkdtemp(dir))
        return d2_fail(e, D2_EIO, "%s: cannot make a folder for the slicer's output: %s",
                       work_dir, strerror(errno));
    snprintf(out, sizeof out, "%s/part.%s", dir, kind == SLICER_SLA ? "sl1" : "gcode");
    snprintf(log, sizeof log, "%s/slicer.log", dir);
    slicer_args *a = d2_calloc(1, sizeof *a, "slicer arguments", e);
    if (!a) {
        rmdir(dir);
        return D2_EIO;
    }
    arg(a, "%s", prog);
    slicer_argv(p, kind, a);
    a->argv[a->argc++] = "-o";
    a->argv[a->argc++] = out;
    a->argv[a->argc++] = (char *)part;
    a->argv[a->argc] = NULL;
    int st = run_child(a->argv, log, e);
    if (st < 0) {
        rc = D2_EIO;
    } else if (st != 0 || access(out, F_OK) != 0) {
        log_tail(log, tail, sizeof tail);
        rc = d2_fail(e, D2_EIO, "%s %s exited with status %d on %s%s%s", prog,
                     kind == SLICER_SLA ? "--export-sla" : "--export-gcode", st, part,
                     tail[0] ? ": " : "", tail);
    } else {
        rc = kind == SLICER_SLA ? read_sl1(out, r, e) : read_gcode(out, r, e);
    }
    if (!rc) {
        if (!r->slicer[0]) snprintf(r->slicer, sizeof r->slicer, "%s", slicer_program());
        if (kind == SLICER_SLA)
            snprintf(r->how, sizeof r->how, "%s --export-sla: %ld layers of %.4g mm, the "
                     "slicer's default SLA material (%.3g s exposure, %.3g s first layers) and "
                     "tilt, no supports or pad", r->slicer, r->layers, p->z_step_mm,
                     r->exposure_s, r->first_exposure_s);
        else
            snprintf(r->how, sizeof r->how, "%s --export-gcode: %ld layers of %.4g mm (first "
                     "layer too), %.3g mm nozzle, 100 %% rectilinear infill, the slicer's "
                     "default speeds", r->slicer, r->layers, p->z_step_mm, p->xy_resolution_mm);
        snprintf(r->mode, sizeof r->mode, "%s", kind == SLICER_SLA ? "sla" : "gcode");
    }
    unlink(out);
    unlink(log);
    rmdir(dir);
    free(a);
    return rc;
}
