/* The `celeryc` client commands: inspect, control, status, call, result, purge, events.
 * They talk to any Celery 5 fleet (Python or C workers) over the broker and the result
 * backend. See cli.c for the design; README "Client commands" for usage. */
#ifndef CELERYC_CLI_H
#define CELERYC_CLI_H

/* True when `cmd` is one of the client commands. */
int cc_cli_is_command(const char *cmd);

/* Run client command argv[0] (argv[0] is the command name). Returns the process exit status:
 * 0 success; 1 failure (task failed, aborted); 2 usage error; 69 (EX_UNAVAILABLE) no node
 * replied, as `celery inspect|control|status`; 70 broker or backend error; 75 (EX_TEMPFAIL)
 * `result --timeout` expired. */
int cc_cli_main(int argc, char **argv);

#endif
