/* Shared by the libFuzzer targets fuzz/fuzz_*.c and by the regression test
 * tests/test_fuzz_regress.c, which replays the committed corpus and every
 * crash input through the same functions.
 *
 * Each target is a function fuzz_NAME(data, size) that feeds the bytes to a
 * reader through a file (the readers take paths, as the product uses them)
 * and checks what it returns: either a success whose result satisfies the
 * reader's documented guarantees, or a clean error (a D2_E* code and a
 * message naming the file). Anything else calls fz_bug(), which prints the
 * reason and aborts, so libFuzzer records the input as a crash. The function
 * returns 1 when the reader accepted the input, 0 when it refused it. */
#ifndef D2_FUZZLIB_H
#define D2_FUZZLIB_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

int fuzz_npy(const uint8_t *data, size_t size);
int fuzz_idx(const uint8_t *data, size_t size);
int fuzz_png(const uint8_t *data, size_t size);
int fuzz_config(const uint8_t *data, size_t size);
int fuzz_profile(const uint8_t *data, size_t size);
int fuzz_mesh(const uint8_t *data, size_t size);
int fuzz_runcfg(const uint8_t *data, size_t size);
int fuzz_export(const uint8_t *data, size_t size);

/* The libFuzzer entry point of one target; compiled out for the regression
 * test, which links every target into one program. */
#ifdef D2_FUZZ_REGRESS
#define FUZZ_ENTRY(fn)
#else
#define FUZZ_ENTRY(fn)                                                     \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);          \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)           \
    {                                                                      \
        (void)fn(data, size);                                              \
        return 0;                                                          \
    }
#endif

/* A private scratch folder for this process, on tmpfs when there is one
 * ($D2FAB_FUZZ_TMP, else /dev/shm, else $TMPDIR or /tmp), removed at exit.
 * Aborts if it cannot be made. */
const char *fz_dir(void);

/* Writes size bytes to fz_dir()/sub (sub may hold one folder level, which is
 * created) and returns the path in a static buffer (one of 4 rotating).
 * Aborts on failure: the harness, not the reader, is broken then. */
const char *fz_write(const char *sub, const uint8_t *data, size_t size);
/* fz_dir()/sub without writing anything (rotating static buffer). */
const char *fz_path(const char *sub);

/* Reports a broken guarantee and aborts. */
void fz_bug(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Checks a refusal: rc is D2_EINPUT or D2_EIO (D2_EUSAGE is for callers'
 * mistakes, never for file contents), e->code == rc, the message is not
 * empty and, for D2_EINPUT, names `name` (a file name or path). */
void fz_check_refusal(int rc, const d2_err *e, const char *name, const char *what);

/* 1 if the n bytes at a and b are equal. */
int fz_same(const void *a, const void *b, size_t n);

#endif
