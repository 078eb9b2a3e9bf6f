/* The print package folder of d2fab run: what belongs in it, and clearing an
 * earlier package before a new run writes into it. */
#include "run/run_int.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"

/* OUT/rel into buf. */
static int pkg_path(const run_state *s, const char *rel, char *buf, size_t cap, d2_err *e)
{
    return d2_path_join(buf, cap, s->o->out_dir, rel, e);
}

/* ------------------------------------------------------------------------
 * The package folder
 * ---------------------------------------------------------------------- */

static const char *const package_dirs[] = {"export", "parts", "previews", "tolerance", "masks"};
static const char *const report_files[] = {"report.json", "report.html", "PRINTING.txt"};

/* Whether a top-level name belongs to a print package. */
static int package_name(const char *name)
{
    for (size_t i = 0; i < sizeof package_dirs / sizeof package_dirs[0]; i++)
        if (!strcmp(name, package_dirs[i])) return 1;
    for (size_t i = 0; i < sizeof report_files / sizeof report_files[0]; i++)
        if (!strcmp(name, report_files[i])) return 1;
    if (!strncmp(name, "assembly.", 9)) return 1;
    return name[0] == '.'; /* ., .. and temporaries of an interrupted write */
}

/* Removes the regular files and links (never their targets) directly inside
 * the package folder dir whose name starts with prefix (an earlier run's
 * assembly files), so the new package holds only what this run makes. */
static int clear_files(const char *dir, const char *prefix, d2_err *e)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : d2_fail(e, D2_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        char p[RUN_PATH_MAX + 300];
        struct stat st;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (prefix && strncmp(de->d_name, prefix, strlen(prefix))) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (lstat(p, &st) == 0 && (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) && unlink(p) != 0)
            rc = d2_fail(e, D2_EIO, "%s: cannot remove the previous run's file: %s", p,
                         strerror(errno));
    }
    closedir(d);
    return rc;
}

/* Files d2fab writes into a package sub-folder: its output kinds and its own
 * temporaries. Anything else (a file someone put there) is left alone. */
static int package_file(const char *name, void *ctx)
{
    static const char *const ext[] = {".npy", ".png", ".json", ".jsonl", ".csv", ".stl",
                                      ".3mf", ".obj", ".ply", ".glb", ".txt", ".html"};
    (void)ctx;
    if (d2_is_temp_name(name)) return 1;
    if (name[0] == '.') return 0;
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t k = strlen(ext[i]);
        if (n > k && !strcmp(name + n - k, ext[i])) return 1;
    }
    return 0;
}

/* Package sub-folders that are symbolic links or not folders at all, listed
 * in bad ("export, parts"); every stage writes into them and a link would
 * send files (and their removal) elsewhere. */
static int package_links(const char *out, char *bad, size_t cap)
{
    int n = 0;
    bad[0] = 0;
    for (size_t i = 0; i < sizeof package_dirs / sizeof package_dirs[0]; i++) {
        char p[RUN_PATH_MAX + 64];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", out, package_dirs[i]);
        if (lstat(p, &st) != 0 || S_ISDIR(st.st_mode)) continue;
        size_t len = strlen(bad);
        snprintf(bad + len, cap - len, "%s%s%s", n ? ", " : "", package_dirs[i],
                 S_ISLNK(st.st_mode) ? " (a symbolic link)" : " (not a folder)");
        n++;
    }
    return n;
}

int run_prepare_out(run_state *s, d2_err *e)
{
    const char *out = s->o->out_dir;
    char p[RUN_PATH_MAX + 64];
    int rc;
    DIR *d = opendir(out);
    if (d) {
        struct dirent *de;
        char bad[256] = "";
        while ((de = readdir(d)))
            if (!package_name(de->d_name) && !bad[0]) snprintf(bad, sizeof bad, "%s", de->d_name);
        closedir(d);
        if (bad[0])
            return d2_fail(e, D2_EUSAGE, "--out %s holds \"%s\", which is not part of a print "
                           "package: give a new or empty folder (or an earlier run's package)",
                           out, bad);
        char links[512];
        if (package_links(out, links, sizeof links))
            return d2_fail(e, D2_EUSAGE, "--out %s: %s: a print package holds its files in "
                           "real folders of its own; nothing was removed (remove the link, or "
                           "give a new folder)", out, links);
    } else if (errno != ENOENT) {
        return d2_fail(e, D2_EIO, "--out %s: %s", out, strerror(errno));
    }
    if ((rc = d2_mkdir_p(out, e))) return rc;
    for (size_t i = 0; i < sizeof report_files / sizeof report_files[0]; i++) {
        if ((rc = pkg_path(s, report_files[i], p, sizeof p, e))) return rc;
        if (unlink(p) != 0 && errno != ENOENT)
            return d2_fail(e, D2_EIO, "%s: cannot remove the previous report: %s", p,
                           strerror(errno));
    }
    for (size_t i = 0; i < sizeof package_dirs / sizeof package_dirs[0]; i++) {
        if ((rc = pkg_path(s, package_dirs[i], p, sizeof p, e)) ||
            (rc = d2_dir_clear(p, 1, package_file, NULL, "previous run's file", e)))
            return rc;
    }
    /* Earlier assembly files (any format). */
    if ((rc = clear_files(out, "assembly.", e))) return rc;
    if ((rc = pkg_path(s, "previews", p, sizeof p, e)) || (rc = d2_mkdir_p(p, e))) return rc;
    return 0;
}
