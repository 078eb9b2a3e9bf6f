#include <stdio.h>

#include "cli/cmds.h"

int cmd_check(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d2fab check: not built yet in this version\n");
    return 3;
}
