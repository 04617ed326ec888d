/* `celeryc jobs` and `celeryc db`: the job store's command-line client (src/jobs/jobstore.h). */
#ifndef CELERYC_JOBS_CLI_H
#define CELERYC_JOBS_CLI_H

/* `celeryc jobs list|show|create|update|delete|run|stop|runs|logs` (argv[0] is "jobs").
 * Returns the process exit status: 0 ok, 1 not found / refused, 2 usage, 70 store error. */
int cc_jobs_cli_jobs_main(int argc, char **argv);

/* `celeryc db upgrade|version` (argv[0] is "db"). */
int cc_jobs_cli_db_main(int argc, char **argv);

#endif
