/* `celeryc`: the command-line entry point. Dispatches to a subcommand.
 *
 *   celeryc --version | -V | version   print the version and the Celery protocol it speaks
 *   celeryc --help | -h | help         list the subcommands
 *   celeryc worker [OPTIONS]           run a worker (options: `celeryc worker --help`)
 *   celeryc inspect|control|status|call|result|purge|events ...   client commands (cli.c)
 *
 * Design: main() only parses and dispatches; the worker's configuration is loaded by
 * cc_config_load() (file < environment < command line) before logging is set up, so a bad
 * option is reported on stderr in plain text and the worker never connects.
 *
 * Exit statuses: 0 success (and --help, --version); 2 command-line usage error (unknown
 * subcommand, unknown flag, missing value: the status click gives Python Celery's CLI);
 * 78 (EX_CONFIG, sysexits.h) bad option value, URL or config file, so systemd units can
 * stop restarting on it (RestartPreventExitStatus=78); 70 (EX_SOFTWARE) anything else at
 * start-up; otherwise whatever cc_worker_main() returns (0 warm shutdown, 1 cold/fatal).
 */
#include <stdio.h>
#include <string.h>

#include "celeryc/version.h"
#include "beat.h"
#include "cli.h"
#include "jobs_cli.h"
#include "config.h"
#include "log.h"
#include "worker.h"

extern char **environ;

#define MAIN_EX_USAGE    2
#define MAIN_EX_SOFTWARE 70
#define MAIN_EX_CONFIG   78

static void main_version(FILE *out)
{
    fprintf(out, "celeryc %s (celery protocol %s compatible)\n", CELERYC_VERSION,
            CELERYC_CELERY_COMPAT);
}

static void main_usage(FILE *out)
{
    fprintf(out,
            "Usage: celeryc COMMAND [OPTIONS]\n"
            "\n"
            "A Celery-compatible task worker (Celery %s wire protocol).\n"
            "\n"
            "Commands:\n"
            "  worker    Start a worker instance (celeryc worker --help for options).\n"
            "  beat      Start the periodic task scheduler (celeryc beat --help).\n"
            "  jobs      Manage the job store's jobs and runs (list, create, run, stop, logs).\n"
            "  db        Job store schema (celeryc db upgrade | version).\n"
            "  inspect   Inspect the workers at runtime (ping, stats, active, ...).\n"
            "  control   Workers remote control (revoke, rate_limit, shutdown, ...).\n"
            "  status    Show list of workers that are online.\n"
            "  call      Call a task by name.\n"
            "  result    Print the return value for a given task id.\n"
            "  purge     Erase all messages from all known task queues.\n"
            "  events    Dump events to the screen (--dump).\n"
            "  version   Show the version and exit.\n"
            "\n"
            "Options:\n"
            "  -V, --version  Show the version and exit.\n"
            "  -h, --help     Show this message and exit.\n",
            CELERYC_CELERY_COMPAT);
}

static int main_worker(int argc, char **argv)
{
    struct cc_config cfg;
    struct cc_err err = {0};
    int rc = cc_config_load(&cfg, CC_CMD_WORKER, argc, argv, environ, &err);
    int status;

    switch (rc) {
    case CC_OK:
        break;
    case CC_EAGAIN: /* --help */
        cc_config_usage(stdout, CC_CMD_WORKER);
        cc_config_deinit(&cfg);
        return 0;
    case CC_EUSAGE:
        fprintf(stderr, "celeryc worker: error: %s\nTry 'celeryc worker --help' for help.\n",
                err.msg);
        cc_config_deinit(&cfg);
        return MAIN_EX_USAGE;
    case CC_ECONFIG:
    case CC_EURL:
        fprintf(stderr, "celeryc worker: configuration error: %s\n", err.msg);
        cc_config_deinit(&cfg);
        return MAIN_EX_CONFIG;
    default:
        fprintf(stderr, "celeryc worker: %s: %s\n", cc_strerror(rc), err.msg);
        cc_config_deinit(&cfg);
        return MAIN_EX_SOFTWARE;
    }
    cc_log_init(cfg.loglevel, (enum cc_log_format)cfg.log_format, -1);
    cc_log_set_process("MainProcess");
    status = cc_worker_main(&cfg);
    cc_config_deinit(&cfg);
    return status;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;

    if (cmd == NULL) {
        main_usage(stderr);
        return MAIN_EX_USAGE;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 || strcmp(cmd, "version") == 0) {
        main_version(stdout);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        main_usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "worker") == 0)
        return main_worker(argc - 1, argv + 1);
    if (strcmp(cmd, "beat") == 0) /* issue #6: src/beat/beat.c */
        return cc_beat_main(argc - 1, argv + 1);
    if (strcmp(cmd, "jobs") == 0) /* issue #6: src/jobs/jobs_cli.c */
        return cc_jobs_cli_jobs_main(argc - 1, argv + 1);
    if (strcmp(cmd, "db") == 0)
        return cc_jobs_cli_db_main(argc - 1, argv + 1);
    if (cc_cli_is_command(cmd)) /* issue #4: client commands, src/client/cli.c */
        return cc_cli_main(argc - 1, argv + 1);
    fprintf(stderr, "celeryc: error: no such command '%s'\n\n", cmd);
    main_usage(stderr);
    return MAIN_EX_USAGE;
}
