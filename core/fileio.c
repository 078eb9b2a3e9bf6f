#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

struct d2_out {
    FILE *fp;
    char *tmp;  /* temporary file beside dst */
    char *dst;
    int slot;   /* its entry in tmp_slot, -1 if none */
    int lockfd; /* holds an flock on the temporary until it is renamed or
                   removed, so clean_stale() knows the writer is alive */
};

/* The temporaries being written, for the SIGINT / SIGTERM handler to remove
 * (it may only read these and call unlink). tmp_used: 0 free, 2 being filled
 * or emptied, 1 live. A writer that finds no free slot goes unregistered: its
 * temporary may outlive a signal, and the next write of that file removes
 * it. */
#define TMP_SLOTS 64
static char tmp_slot[TMP_SLOTS][PATH_MAX];
static int tmp_used[TMP_SLOTS];
/* Writers between creating a temporary and registering it, and whether a
 * stop signal has come: the handler waits for the first to drain, and no
 * writer starts once it is set (the signal may run on any thread). */
static int tmp_creating, tmp_stopping;

static int tmp_register(const char *tmp)
{
    if (strlen(tmp) >= PATH_MAX) return -1;
    for (int i = 0; i < TMP_SLOTS; i++) {
        int want = 0;
        if (__atomic_compare_exchange_n(&tmp_used[i], &want, 2, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
            strcpy(tmp_slot[i], tmp);
            __atomic_store_n(&tmp_used[i], 1, __ATOMIC_RELEASE);
            return i;
        }
    }
    return -1;
}

static void tmp_unregister(int i)
{
    if (i < 0) return;
    __atomic_store_n(&tmp_used[i], 2, __ATOMIC_RELEASE);
    tmp_slot[i][0] = 0;
    __atomic_store_n(&tmp_used[i], 0, __ATOMIC_RELEASE);
}

/* Mode for a new output file: the existing file's permissions when replacing
 * one (so a rewrite does not change them), otherwise 0666 & ~umask like
 * fopen(). mkstemp creates 0600, which would surprise users. */
static mode_t out_mode(const char *dst)
{
    struct stat st;
    if (stat(dst, &st) == 0 && S_ISREG(st.st_mode)) return st.st_mode & 07777;
    /* Read the umask without changing it (umask() would race with threads
     * creating files); fall back to the set-and-restore idiom. */
    mode_t m = 022;
    int found = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        unsigned v;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "Umask: %o", &v) == 1) {
                m = (mode_t)v;
                found = 1;
                break;
            }
        fclose(f);
    }
    if (!found) {
        m = umask(022);
        umask(m);
    }
    return 0666 & ~m;
}

d2_out *d2_out_open(const char *path, d2_err *e)
{
    d2_out *o = NULL;
    if (!path || !*path) {
        d2_fail(e, D2_EUSAGE, "empty output file name");
        return NULL;
    }
    size_t n = strlen(path);
    if (path[n - 1] == '/') {
        d2_fail(e, D2_EUSAGE, "%s: output name is a folder; expected a file name", path);
        return NULL;
    }
    o = d2_calloc(1, sizeof *o, "output handle", e);
    if (!o) return NULL;
    o->lockfd = -1;
    o->slot = -1;
    o->dst = strdup(path);
    /* ".NAME.tmp-XXXXXX" in the same folder, so rename() stays on one file
     * system and is atomic; the dot hides leftovers after a SIGKILL. */
    o->tmp = malloc(n + 16);
    if (!o->dst || !o->tmp) {
        d2_fail(e, D2_EIO, "out of memory (output file name %s)", path);
        goto fail;
    }
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    memcpy(o->tmp, path, dirlen);
    snprintf(o->tmp + dirlen, n + 16 - dirlen, ".%s.tmp-XXXXXX", path + dirlen);
    /* No SIGINT / SIGTERM between creating the temporary and registering
     * it, so the handler always knows what to remove. */
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, &old);
    __atomic_add_fetch(&tmp_creating, 1, __ATOMIC_SEQ_CST);
    int fd = -1, err = EINTR;
    if (!__atomic_load_n(&tmp_stopping, __ATOMIC_SEQ_CST)) {
        fd = mkostemp(o->tmp, O_CLOEXEC);
        err = errno;
        if (fd >= 0) o->slot = tmp_register(o->tmp);
    }
    __atomic_sub_fetch(&tmp_creating, 1, __ATOMIC_SEQ_CST);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (fd < 0) {
        d2_fail(e, D2_EIO, "%s: cannot create a temporary file in its folder: %s", path,
                strerror(err));
        goto fail;
    }
    (void)fchmod(fd, out_mode(path)); /* best effort: the data matters more */
    /* The lock lives as long as the open file; the duplicate keeps it past
     * fclose until the rename. Best effort: without flock (some network file
     * systems) a stale temporary is merely not cleaned up. */
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) o->lockfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    o->fp = fdopen(fd, "wb");
    if (!o->fp) {
        d2_fail(e, D2_EIO, "%s: %s", path, strerror(errno));
        close(fd);
        unlink(o->tmp);
        tmp_unregister(o->slot);
        goto fail;
    }
    return o;
fail:
    free(o->dst);
    free(o->tmp);
    free(o);
    return NULL;
}

FILE *d2_out_fp(d2_out *o) { return o->fp; }

static void out_free(d2_out *o)
{
    tmp_unregister(o->slot);
    if (o->lockfd >= 0) close(o->lockfd);
    free(o->tmp);
    free(o->dst);
    free(o);
}

/* fsync the folder so the rename itself survives a crash (best effort: some
 * file systems refuse to fsync a directory). */
static void sync_dir(const char *path)
{
    char *d = strdup(path);
    if (!d) return;
    char *slash = strrchr(d, '/');
    const char *dir = ".";
    if (slash) {
        if (slash == d) slash[1] = 0;
        else *slash = 0;
        dir = d;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(d);
}

/* Removes the hidden temporaries ".NAME.tmp-XXXXXX" of the same destination
 * that a killed writer left behind. A live writer holds an flock on its
 * temporary and the kernel drops it when the process dies, so a temporary we
 * can lock belongs to nobody. (A second process writing the same file at the
 * same moment could lose its temporary in the instant between mkostemp and
 * flock; its commit then fails cleanly. Concurrent writers of one file are
 * not supported anyway: the last rename would win.) */
static void clean_stale(const char *dst)
{
    const char *slash = strrchr(dst, '/');
    const char *base = slash ? slash + 1 : dst;
    char dir[PATH_MAX], prefix[NAME_MAX + 8];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dst) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - dst) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - dst), dst);
    else
        return;
    int plen = snprintf(prefix, sizeof prefix, ".%s.tmp-", base);
    if (plen < 0 || (size_t)plen >= sizeof prefix) return;
    DIR *d = opendir(dir);
    if (!d) return;
    int dfd = dirfd(d);
    for (struct dirent *de; (de = readdir(d));) {
        if (strncmp(de->d_name, prefix, (size_t)plen) != 0 ||
            strlen(de->d_name) != (size_t)plen + 6)
            continue;
        int fd = openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
            (void)unlinkat(dfd, de->d_name, 0);
        close(fd);
    }
    closedir(d);
}

int d2_out_commit(d2_out *o, d2_err *e)
{
    int rc = D2_EIO;
    if (!o) return d2_fail(e, D2_EIO, "no output file to commit");
    int bad = ferror(o->fp);
    int err = errno;
    if (fflush(o->fp) != 0) {
        bad = 1;
        err = errno;
    }
    if (!bad && fsync(fileno(o->fp)) != 0) {
        bad = 1;
        err = errno;
    }
    if (fclose(o->fp) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    o->fp = NULL;
    if (bad) {
        d2_fail(e, D2_EIO, "%s: write failed: %s", o->dst, err ? strerror(err) : "stream error");
        unlink(o->tmp);
        goto done;
    }
    if (rename(o->tmp, o->dst) != 0) {
        d2_fail(e, D2_EIO, "%s: cannot move the finished file into place: %s", o->dst,
                strerror(errno));
        unlink(o->tmp);
        goto done;
    }
    sync_dir(o->dst);
    clean_stale(o->dst);
    rc = 0;
done:
    out_free(o);
    return rc;
}

void d2_out_abort(d2_out *o)
{
    if (!o) return;
    if (o->fp) fclose(o->fp);
    unlink(o->tmp);
    out_free(o);
}

int d2_write_file(const char *path, const void *buf, size_t n, d2_err *e)
{
    d2_out *o = d2_out_open(path, e);
    if (!o) return e ? e->code : D2_EIO;
    if (n && fwrite(buf, 1, n, d2_out_fp(o)) != n) {
        int err = errno;
        d2_out_abort(o);
        return d2_fail(e, D2_EIO, "%s: write failed: %s", path, strerror(err));
    }
    return d2_out_commit(o, e);
}

int d2_read_file(const char *path, size_t max_bytes, char **buf, size_t *n, d2_err *e)
{
    int rc = D2_EIO;
    char *b = NULL;
    *buf = NULL;
    if (n) *n = 0;
    int fd = d2_open_input(path, e);
    if (fd < 0) return fd;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        d2_fail(e, D2_EIO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = d2_fail(e, D2_EINPUT, "%s: is a folder; expected a file", path);
        goto done;
    }
    if (S_ISREG(st.st_mode) && (unsigned long long)st.st_size > max_bytes) {
        rc = d2_fail(e, D2_EINPUT, "%s: file is %lld bytes; the limit is %zu bytes", path,
                     (long long)st.st_size, max_bytes);
        goto done;
    }
    /* Read in chunks up to max_bytes + 1 so files that grow while being read
     * are bounded too. */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536, len = 0;
    if (cap > max_bytes + 1) cap = max_bytes + 1;
    b = d2_malloc(cap + 1, path, e);
    if (!b) goto done;
    for (;;) {
        if (len == cap) {
            if (cap > max_bytes) {
                rc = d2_fail(e, D2_EINPUT, "%s: file is larger than the limit of %zu bytes",
                             path, max_bytes);
                goto done;
            }
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *nb = realloc(b, ncap + 1);
            if (!nb) {
                rc = d2_fail(e, D2_EIO, "out of memory (%zu bytes for %s)", ncap, path);
                goto done;
            }
            b = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, b + len, cap - len);
        if (r < 0) {
            if (errno == EINTR) continue;
            rc = d2_fail(e, D2_EIO, "%s: read failed: %s", path, strerror(errno));
            goto done;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    if (len > max_bytes) {
        rc = d2_fail(e, D2_EINPUT, "%s: file is larger than the limit of %zu bytes", path,
                     max_bytes);
        goto done;
    }
    b[len] = 0;
    *buf = b;
    b = NULL;
    if (n) *n = len;
    rc = 0;
done:
    free(b);
    close(fd);
    return rc;
}

int d2_mkdir_p(const char *path, d2_err *e)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0) return d2_fail(e, D2_EUSAGE, "empty folder name");
    if (n >= sizeof buf) return d2_fail(e, D2_EINPUT, "%s: path too long", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        if (buf[i - 1] == '/') continue; /* "a//b" */
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0777) != 0) {
            int err = errno;
            struct stat st;
            if (err != EEXIST) {
                buf[i] = c;
                return d2_fail(e, D2_EIO, "%s: cannot create folder: %s", path, strerror(err));
            }
            if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
                return d2_fail(e, D2_EIO, "%s: cannot create folder: %s exists and is not a folder",
                               path, buf);
        }
        buf[i] = c;
    }
    return 0;
}

int d2_path_join(char *out, size_t cap, const char *dir, const char *name, d2_err *e)
{
    int n;
    size_t dl = dir ? strlen(dir) : 0;
    if (dl == 0 || name[0] == '/')
        n = snprintf(out, cap, "%s", name);
    else if (dir[dl - 1] == '/')
        n = snprintf(out, cap, "%s%s", dir, name);
    else
        n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return d2_fail(e, D2_EINPUT, "path too long: %s/%s (limit %zu bytes)", dir ? dir : "",
                       name, cap - 1);
    return 0;
}

/* Is resolved path p equal to or below resolved folder root? */
static int below(const char *root, const char *p)
{
    size_t n = strlen(root);
    if (strncmp(root, p, n) != 0) return 0;
    if (n == 1 && root[0] == '/') return 1;
    return p[n] == 0 || p[n] == '/';
}

int d2_path_inside(const char *dir, const char *name, const char *what, d2_err *e)
{
    char joined[PATH_MAX], root[PATH_MAX], real[PATH_MAX];
    if (!what) what = "file name";
    if (!name || !*name) return d2_fail(e, D2_EINPUT, "%s: %s is empty", dir, what);
    if (name[0] == '/')
        return d2_fail(e, D2_EINPUT,
                       "%s: %s \"%s\" is an absolute path; it must name a file inside %s", dir,
                       what, name, dir);
    for (const char *p = name; *p;) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return d2_fail(e, D2_EINPUT,
                           "%s: %s \"%s\" contains \"..\"; it must name a file inside %s", dir,
                           what, name, dir);
        p += len;
        while (*p == '/') p++;
    }
    if (d2_path_join(joined, sizeof joined, dir, name, e)) return e ? e->code : D2_EINPUT;
    if (!realpath(*dir ? dir : ".", root)) return 0; /* no folder, so no links inside it */
    /* Resolve the longest existing prefix of the name: a link anywhere on
     * the way (or a dangling one, which a writer would follow) must stay in. */
    size_t n = strlen(joined), stop = *dir ? strlen(dir) : 0;
    for (;;) {
        if (realpath(joined, real)) {
            if (!below(root, real))
                return d2_fail(e, D2_EINPUT,
                               "%s: %s \"%s\" resolves to %s, outside the folder (symbolic link)",
                               dir, what, name, real);
            return 0;
        }
        struct stat st;
        if (lstat(joined, &st) == 0 && S_ISLNK(st.st_mode))
            return d2_fail(e, D2_EINPUT,
                           "%s: %s \"%s\": %s is a symbolic link to a missing target", dir, what,
                           name, joined);
        while (n > stop && joined[n - 1] != '/') n--;
        while (n > stop && joined[n - 1] == '/') n--;
        if (n <= stop) return 0;
        joined[n] = 0;
    }
}

/* "12.3 GB", "456 MB", "789 kB": sizes in messages. */
static void fmt_bytes(char *out, size_t cap, double b)
{
    if (b >= 1e12) snprintf(out, cap, "%.3g TB", b / 1e12);
    else if (b >= 1e9) snprintf(out, cap, "%.3g GB", b / 1e9);
    else if (b >= 1e6) snprintf(out, cap, "%.3g MB", b / 1e6);
    else snprintf(out, cap, "%.3g kB", b / 1e3);
}

int d2_check_space(const char *dir, double bytes, const char *what, d2_err *e)
{
    char probe[PATH_MAX];
    struct statvfs vfs;
    if (!dir || !*dir) dir = ".";
    if (snprintf(probe, sizeof probe, "%s", dir) >= (int)sizeof probe) return 0;
    /* The folder may not exist yet: ask the nearest one that does. */
    while (statvfs(probe, &vfs) != 0) {
        char *slash = strrchr(probe, '/');
        if (!slash) {
            snprintf(probe, sizeof probe, ".");
            if (statvfs(probe, &vfs) != 0) return 0;
            break;
        }
        if (slash == probe) slash[1] = 0;
        else *slash = 0;
    }
    double avail = (double)vfs.f_bavail * (double)vfs.f_frsize;
    const char *cap = getenv("D2FAB_FREE_BYTES");
    if (cap && *cap) {
        char *end;
        double v = strtod(cap, &end);
        if (end != cap && !*end && v >= 0 && v < avail) avail = v;
    }
    if (bytes > avail) {
        char need[32], have[32];
        fmt_bytes(need, sizeof need, bytes);
        fmt_bytes(have, sizeof have, avail);
        return d2_fail(e, D2_EIO, "%s: %s needs about %s of disk; the file system has %s free",
                       dir, what ? what : "the output", need, have);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * The checked open of input files
 * ---------------------------------------------------------------------- */

static const char *kind_name(mode_t m)
{
    if (S_ISDIR(m)) return "a folder";
    if (S_ISFIFO(m)) return "a FIFO (named pipe)";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    return "not a regular file";
}

int d2_open_input(const char *path, d2_err *e)
{
    if (!path || !*path) return d2_fail(e, D2_EINPUT, "empty input file name");
    /* O_NONBLOCK: opening a FIFO without a writer (or some devices) would
     * otherwise wait forever, before fstat could say what it is. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        struct stat st;
        /* A socket cannot be opened at all (ENXIO): say what it is. */
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
            return d2_fail(e, D2_EINPUT, "%s: is %s; expected a regular file", path,
                           kind_name(st.st_mode));
        int code = err == ENOENT || err == ENOTDIR || err == ELOOP || err == ENXIO ? D2_EINPUT
                                                                                  : D2_EIO;
        return d2_fail(e, code, "%s: cannot open: %s", path, strerror(err));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return d2_fail(e, D2_EIO, "%s: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return d2_fail(e, D2_EINPUT, "%s: is %s; expected a regular file", path,
                       kind_name(st.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int err = errno;
        close(fd);
        return d2_fail(e, D2_EIO, "%s: %s", path, strerror(err));
    }
    return fd;
}

int d2_fopen_input(const char *path, FILE **f, d2_err *e)
{
    *f = NULL;
    int fd = d2_open_input(path, e);
    if (fd < 0) return fd;
    if (!(*f = fdopen(fd, "rb"))) {
        int err = errno;
        close(fd);
        return d2_fail(e, D2_EIO, "%s: %s", path, strerror(err));
    }
    return 0;
}

int d2_check_input(const char *path, d2_err *e)
{
    int fd = d2_open_input(path, e);
    if (fd < 0) return fd;
    close(fd);
    return 0;
}

/* ------------------------------------------------------------------------
 * Removing earlier output
 * ---------------------------------------------------------------------- */

int d2_is_temp_name(const char *name)
{
    size_t n = strlen(name);
    const char *t = n > 12 ? name + n - 11 : NULL;
    return name[0] == '.' && t && !strncmp(t, ".tmp-", 5);
}

void d2_tmp_path(const char *path, char *tmp, size_t cap)
{
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path + 1) : 0;
    snprintf(tmp, cap, "%.*s.%s.tmp-%ld", dl, path, slash ? slash + 1 : path, (long)getpid());
}

int d2_tmp_install(const char *tmp, const char *path, const char *producer, d2_err *e)
{
    struct stat st;
    if (stat(tmp, &st) != 0 || st.st_size <= 0) {
        remove(tmp);
        return d2_fail(e, D2_EIO, "%s: %s wrote no image", path, producer);
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        remove(tmp);
        return d2_fail(e, D2_EIO, "%s: %s", path, strerror(err));
    }
    return 0;
}

int d2_remove_index(const char *dir, const char *name, d2_err *e)
{
    char path[4200];
    int rc;
    if ((rc = d2_mkdir_p(dir, e)) || (rc = d2_path_join(path, sizeof path, dir, name, e)))
        return rc;
    if (unlink(path) != 0 && errno != ENOENT)
        return d2_fail(e, D2_EIO, "%s: cannot remove the old %s: %s", path, name,
                       strerror(errno));
    return 0;
}

int d2_dir_clear(const char *dir, int nofollow, int (*own)(const char *name, void *ctx),
                 void *ctx, const char *what, d2_err *e)
{
    if (!what) what = "earlier file";
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
    if (fd < 0) {
        int err = errno;
        struct stat st;
        if (err == ENOENT) return 0;
        if (lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
            return d2_fail(e, D2_EINPUT, "%s is a symbolic link: d2fab clears and writes only "
                           "real folders inside its output (remove the link)", dir);
        if (err == ENOTDIR)
            return d2_fail(e, D2_EINPUT, "%s is not a folder: remove it or choose another "
                           "output", dir);
        return d2_fail(e, D2_EIO, "%s: %s", dir, strerror(err));
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        close(fd);
        return d2_fail(e, D2_EIO, "%s: %s", dir, strerror(err));
    }
    int rc = 0;
    for (struct dirent *de; !rc && (de = readdir(d));) {
        struct stat st;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (!own(de->d_name, ctx)) continue;
        if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) continue;
        if (unlinkat(fd, de->d_name, 0) != 0 && errno != ENOENT)
            rc = d2_fail(e, D2_EIO, "%s/%s: cannot remove the %s: %s", dir, de->d_name, what,
                         strerror(errno));
    }
    closedir(d);
    return rc;
}

/* ------------------------------------------------------------------------
 * SIGINT / SIGTERM
 * ---------------------------------------------------------------------- */

static void stop_handler(int sig)
{
    /* Another thread may be between mkostemp and registering: wait for it
     * (it runs on; at most about a second), and let no new one start. */
    __atomic_store_n(&tmp_stopping, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 10000 && __atomic_load_n(&tmp_creating, __ATOMIC_SEQ_CST); i++) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < TMP_SLOTS; i++)
        if (__atomic_load_n(&tmp_used[i], __ATOMIC_ACQUIRE) == 1) unlink(tmp_slot[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

void d2_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = stop_handler;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}
