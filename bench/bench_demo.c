/* Time and peak memory of the whole `make demo`: runs `./d2fab run --out
 * DIR` (what the demo target runs, DIR a fresh temporary folder) as a child
 * process and reports its wall time, CPU time (user + system, from wait4) and
 * peak resident memory (its ru_maxrss). The program's output goes to
 * DIR/run.out. Argument: the program to run (default ./d2fab). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util.h"

int main(int argc, char **argv)
{
    const char *bin = argc > 1 ? argv[1] : "./d2fab";
    char dir[] = "/tmp/d2fab-bench-XXXXXX", out[300], log[300];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 3;
    }
    snprintf(out, sizeof out, "%s/demo-out", dir);
    snprintf(log, sizeof log, "%s/run.out", dir);
    double t0 = d2_now();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, bin, "run", "--out", out, (char *)NULL);
        perror(bin);
        _exit(127);
    }
    int st = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &st, 0, &ru) < 0) {
        perror("bench_demo");
        return 3;
    }
    double wall = d2_now() - t0;
    double user = ru.ru_utime.tv_sec + 1e-6 * ru.ru_utime.tv_usec;
    double sys = ru.ru_stime.tv_sec + 1e-6 * ru.ru_stime.tv_usec;
    int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok) {
        fprintf(stderr, "bench_demo: %s run failed (status %d); its output is in %s\n", bin, st,
                log);
        return 1;
    }
    printf("make demo (%s run --out DIR): wall %.1f s, CPU %.1f s (user %.1f, system %.1f), "
           "peak memory %.0f MiB\n",
           bin, wall, user + sys, user, sys, ru.ru_maxrss / 1024.0);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}
