/* `celeryc beat` (issue #6): placeholder until the scheduler lands. */
#include <stdio.h>

#include "beat.h"

int cc_beat_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "celeryc beat: not implemented yet\n");
    return 2;
}
