#include "testlib.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"

int t_pass, t_fail, t_cur_failed;
const char *t_cur = "";
static char tmp[512];

void t_check_err(int rc, const void *err, int want, const char *needle, const char *file,
                 int line, const char *what)
{
    const d2_err *e = err;
    if (rc != want || (needle && !strstr(e->msg, needle))) {
        printf("  %s:%d: %s: %s returned %d (want %d), message \"%s\" (want \"%s\")\n", file,
               line, t_cur, what, rc, want, e->msg, needle ? needle : "");
        t_cur_failed = 1;
    }
}

static void cleanup(void)
{
    if (tmp[0] && !getenv("D2FAB_KEEP_TMP")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
}

const char *t_tmpdir(void)
{
    if (!tmp[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/d2fab-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(tmp)) {
            perror("mkdtemp");
            exit(3);
        }
        atexit(cleanup);
    }
    return tmp;
}

void t_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(3);
    }
}

int t_finish(void)
{
    printf("%d passed, %d failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}

int t_quick(void)
{
    const char *q = getenv("D2FAB_TEST_QUICK");
    return q && !strcmp(q, "1");
}

int t_selected(const char *name)
{
    const char *only = getenv("D2FAB_TEST_ONLY");
    return !only || !*only || strstr(name, only);
}

const char *t_path(const char *name)
{
    static char buf[64][PATH_MAX];
    static int k;
    char *b = buf[k++ & 63];
    snprintf(b, PATH_MAX, "%s/%s", t_tmpdir(), name);
    return b;
}

int t_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}
