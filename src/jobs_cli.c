/* `celeryc jobs` / `celeryc db` (issue #6): placeholder until the job store lands. */
#include <stdio.h>

#include "jobs_cli.h"

int cc_jobs_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "celeryc jobs: not implemented yet\n");
    return 2;
}

int cc_db_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "celeryc db: not implemented yet\n");
    return 2;
}
