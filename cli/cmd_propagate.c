#include <stdio.h>

#include "cli/cmds.h"

int cmd_propagate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d2fab propagate: not built yet in this version\n");
    return 3;
}
