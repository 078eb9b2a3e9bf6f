#include "fuzz/fuzzlib.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[512];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p) != 0 && errno != ENOENT;
}

static void rm_dir(void)
{
    if (dir[0]) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void fz_bug(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\nd2fab fuzz: broken guarantee: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

const char *fz_dir(void)
{
    if (dir[0]) return dir;
    const char *base = getenv("D2FAB_FUZZ_TMP");
    struct stat st;
    if (!base || !*base) base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
                                        access("/dev/shm", W_OK) == 0
                                    ? "/dev/shm"
                                    : getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(dir, sizeof dir, "%s/d2fab-fuzz-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror(dir);
        abort();
    }
    atexit(rm_dir);
    return dir;
}

const char *fz_path(const char *sub)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", fz_dir(), sub);
    return buf[k];
}

const char *fz_write(const char *sub, const uint8_t *data, size_t size)
{
    const char *p = fz_path(sub);
    const char *slash = strchr(sub, '/');
    if (slash) {
        char d[1024];
        snprintf(d, sizeof d, "%s/%.*s", fz_dir(), (int)(slash - sub), sub);
        if (mkdir(d, 0700) != 0 && errno != EEXIST)
            fz_bug("cannot create %s: %s", d, strerror(errno));
    }
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) fz_bug("cannot create %s: %s", p, strerror(errno));
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fz_bug("cannot write %s: %s", p, strerror(errno));
        off += (size_t)w;
    }
    if (close(fd) != 0) fz_bug("cannot write %s: %s", p, strerror(errno));
    return p;
}

void fz_check_refusal(int rc, const d2_err *e, const char *name, const char *what)
{
    if (rc != D2_EINPUT && rc != D2_EIO)
        fz_bug("%s returned %d (expected D2_EINPUT or D2_EIO); message \"%s\"", what, rc, e->msg);
    if (e->code != rc)
        fz_bug("%s returned %d but recorded code %d (\"%s\")", what, rc, e->code, e->msg);
    if (!e->msg[0]) fz_bug("%s failed with an empty message", what);
    if (rc == D2_EINPUT && name && !strstr(e->msg, name))
        fz_bug("%s: the message does not name %s: \"%s\"", what, name, e->msg);
}

int fz_same(const void *a, const void *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}
