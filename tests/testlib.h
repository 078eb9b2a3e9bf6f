/* Minimal test harness: each test_*.c defines tests with TEST(name) and lists
 * them in main through RUN(name); the program ends with "N passed, N failed".
 * D2FAB_TEST_ONLY=part runs only the tests whose name contains it. */
#ifndef D2_TESTLIB_H
#define D2_TESTLIB_H

#include <math.h>
#include <stdio.h>

extern int t_pass, t_fail, t_cur_failed;
extern const char *t_cur;
/* 1 unless $D2FAB_TEST_ONLY is set and not part of the test name. */
int t_selected(const char *name);

#define TEST(name) static void name(void)
#define RUN(name)                                                        \
    do {                                                                 \
        if (!t_selected(#name)) break;                                   \
        t_cur = #name;                                                   \
        t_cur_failed = 0;                                                \
        name();                                                          \
        if (t_cur_failed) t_fail++; else t_pass++;                       \
        printf("%s %s\n", t_cur_failed ? "FAIL" : "ok  ", #name);        \
        fflush(stdout);                                                  \
    } while (0)

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            printf("  %s:%d: %s: check failed: %s\n", __FILE__, __LINE__, t_cur, #cond); \
            t_cur_failed = 1;                                                        \
        }                                                                            \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                             \
    do {                                                                                  \
        double _a = (a), _b = (b), _t = (tol);                                            \
        if (!(fabs(_a - _b) <= _t)) {                                                     \
            printf("  %s:%d: %s: %s = %.9g, expected %s = %.9g (tol %g)\n", __FILE__, __LINE__, \
                   t_cur, #a, _a, #b, _b, _t);                                            \
            t_cur_failed = 1;                                                             \
        }                                                                                 \
    } while (0)

/* Checks that a call failed with code and that its message contains needle. */
#define CHECK_ERR(call, err, want_code, needle) \
    t_check_err((call), &(err), (want_code), (needle), __FILE__, __LINE__, #call)
void t_check_err(int rc, const void *err, int want, const char *needle, const char *file,
                 int line, const char *what);

/* A fresh scratch folder under build/ (or $TMPDIR), removed at exit. */
const char *t_tmpdir(void);
/* NAME under that folder, in one of 64 rotating buffers: keep a result only for
 * a few dozen calls. */
const char *t_path(const char *name);
/* 1 when PATH exists (stat, so a link counts only if its target exists). */
int t_exists(const char *path);
/* Writes a text file (for fixtures). */
void t_write_text(const char *path, const char *text);

/* 1 when D2FAB_TEST_QUICK=1 (make valgrind): long runs such as training take
 * fewer samples, with checks that still fail on a broken result. */
int t_quick(void);

int t_finish(void); /* prints the count, returns the exit status */

#endif
