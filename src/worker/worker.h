/* `celeryc worker`: the daemon. main.c parses the configuration and calls cc_worker_main().
 *
 * One event loop in the master owns the broker connection (rabbitmq-c is not thread-safe per
 * connection); executors (forked children by default) run tasks and hand outcomes back.
 */
#ifndef CELERYC_WORKER_H
#define CELERYC_WORKER_H

#include "config.h"

/* Run the worker until shutdown. Returns the process exit status: 0 after a warm shutdown,
 * 1 after a cold one or a fatal start-up error (logged; e.g. a queue declared elsewhere with
 * other arguments: the message names the queue and the mismatch). */
int cc_worker_main(const struct cc_config *cfg);

#endif
