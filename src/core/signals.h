/* Signals for the worker master: flag-only handlers plus a self-pipe the event loop polls.
 *
 * Handlers save errno, bump a per-signal counter (volatile sig_atomic_t) and write one byte
 * to the non-blocking wake-up pipe; every decision happens in the loop (cc_signals_take()).
 */
#ifndef CELERYC_SIGNALS_H
#define CELERYC_SIGNALS_H

#include <signal.h>

#include "celeryc/status.h"

/* Counters of signals received since the last cc_signals_take(). */
struct cc_sig_counts {
    int term;
    int intr;
    int quit;
    int chld;
};

/* Create the self-pipe (O_CLOEXEC, O_NONBLOCK) and install handlers for TERM, INT, QUIT and
 * CHLD; ignore PIPE. Returns CC_OK or CC_EIO. Not thread-safe; call once in the master. */
int cc_signals_init(struct cc_err *err) CC_MUST_USE;

/* The read end of the self-pipe, to poll for POLLIN. */
int cc_signals_fd(void);

/* Drain the pipe and return the counts accumulated since the previous call (then zeroed). */
struct cc_sig_counts cc_signals_take(void);

/* In a forked child: restore default dispositions (INT ignored: the master handles Ctrl+C
 * for the whole process group) and close the self-pipe. */
void cc_signals_child_reset(void);

/* Restore default handlers and close the pipe (master exit). */
void cc_signals_deinit(void);

#endif
