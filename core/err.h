/* d2fab core: error reporting.
 *
 * Every fallible function takes a d2_err * as its last argument, returns 0 on
 * success and a negative D2_E* code on failure (constructors return NULL), and
 * on failure leaves a one-line message in the struct naming the file, the key
 * or field, the value found and what is allowed. Library code never prints and
 * never exits; the command line turns the code into an exit status with
 * d2_exit_code(). */
#ifndef D2_ERR_H
#define D2_ERR_H

#include <stddef.h>

#define D2FAB_VERSION "0.1.0"

enum {
    D2_OK = 0,
    D2_EUSAGE = -1, /* bad command line: exit status 1 */
    D2_EINPUT = -2, /* bad input file, config or value: exit status 2 */
    D2_EIO = -3,    /* I/O or system error (errno, disk, memory): exit status 3 */
};

typedef struct d2_err {
    int code;       /* last D2_E* code, 0 when no error */
    char msg[1024]; /* last message, "" when no error */
} d2_err;

/* Records code and a printf-style message in e (may be NULL); returns code,
 * so callers write `return d2_fail(e, D2_EINPUT, "%s: ...", path);`. */
int d2_fail(d2_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to the message already in e (for context such as the
 * file being read). Returns e->code. */
int d2_err_prefix(d2_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Maps a D2_E* code to the documented process exit status (0, 1, 2, 3). */
int d2_exit_code(int code);

/* malloc/calloc that record D2_EIO "out of memory (N bytes for WHAT)" in e. */
void *d2_malloc(size_t n, const char *what, d2_err *e);
void *d2_calloc(size_t count, size_t size, const char *what, d2_err *e);

/* Room for one more element in a growable array: *(T **)pa holds n of *cap
 * elements of elem bytes; when n == *cap the array is reallocated to twice
 * *cap (first when empty). Returns 0, or -1 when out of memory (the array
 * is then unchanged). */
int d2_grow(void *pa, size_t *cap, size_t n, size_t elem, size_t first);

/* Appends a printf-formatted note to a bounded list of notes (warnings for a
 * report): slots holds max strings of slot bytes, *n of them used; a note
 * past max is dropped. */
void d2_note(char *slots, size_t slot, int max, int *n, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
