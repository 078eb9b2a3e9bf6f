#include <stdio.h>

#include "cli/cmds.h"

int cmd_eval(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d2fab eval: not built yet in this version\n");
    return 3;
}
