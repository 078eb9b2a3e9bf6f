#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int d2_fail(d2_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

int d2_err_prefix(d2_err *e, const char *fmt, ...)
{
    if (!e) return D2_EIO;
    char old[sizeof e->msg];
    memcpy(old, e->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    size_t used = n < 0 ? 0 : (size_t)n;
    if (used + 2 < sizeof e->msg) {
        memcpy(e->msg + used, ": ", 3);
        used += 2;
        size_t room = sizeof e->msg - used - 1, len = strlen(old);
        if (len > room) len = room;
        memcpy(e->msg + used, old, len);
        e->msg[used + len] = 0;
    }
    return e->code;
}

int d2_exit_code(int code)
{
    switch (code) {
    case D2_OK: return 0;
    case D2_EUSAGE: return 1;
    case D2_EINPUT: return 2;
    default: return 3;
    }
}

void *d2_malloc(size_t n, const char *what, d2_err *e)
{
    void *p = malloc(n ? n : 1);
    if (!p) d2_fail(e, D2_EIO, "out of memory (%zu bytes for %s)", n, what);
    return p;
}

void *d2_calloc(size_t count, size_t size, const char *what, d2_err *e)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) d2_fail(e, D2_EIO, "out of memory (%zu x %zu bytes for %s)", count, size, what);
    return p;
}

int d2_grow(void *pa, size_t *cap, size_t n, size_t elem, size_t first)
{
    if (n < *cap) return 0;
    size_t nc = *cap ? 2 * *cap : first;
    void *old, *p;
    memcpy(&old, pa, sizeof old);
    if (!(p = realloc(old, nc * elem))) return -1;
    memcpy(pa, &p, sizeof p);
    *cap = nc;
    return 0;
}

void d2_note(char *slots, size_t slot, int max, int *n, const char *fmt, ...)
{
    if (*n >= max) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(slots + (size_t)(*n)++ * slot, slot, fmt, ap);
    va_end(ap);
}
