/* Signal handling for the worker master: flag-only handlers and a self-pipe.
 *
 * Design: each handler increments a volatile sig_atomic_t counter and writes one byte to a
 * non-blocking pipe whose read end the master's poll(2) watches, so a signal wakes the loop
 * at once and all work (warm/cold shutdown, reaping children) happens outside the handler.
 *
 * Invariants: handlers only touch the counters, errno (saved and restored) and write(2) on
 * the pipe; a full pipe drops the byte harmlessly (the counter is what counts).
 *
 * Reference: celery-wire.md §6.7 (TERM/INT warm, second INT/QUIT cold).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "signals.h"

static volatile sig_atomic_t sig_term, sig_int, sig_quit, sig_chld;
static int sig_pipe[2] = {-1, -1};

static void sig_handler(int signo)
{
    int saved = errno;
    char b = (char)signo;

    switch (signo) {
    case SIGTERM:
        sig_term++;
        break;
    case SIGINT:
        sig_int++;
        break;
    case SIGQUIT:
        sig_quit++;
        break;
    case SIGCHLD:
        sig_chld++;
        break;
    default:
        break;
    }
    if (sig_pipe[1] >= 0) {
        ssize_t n = write(sig_pipe[1], &b, 1);
        (void)n; /* a full pipe already wakes the loop */
    }
    errno = saved;
}

static int sig_install(int signo, void (*fn)(int))
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (signo == SIGCHLD)
        sa.sa_flags |= SA_NOCLDSTOP;
    return sigaction(signo, &sa, NULL);
}

int cc_signals_init(struct cc_err *err)
{
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return cc_err_set(err, CC_EIO, "signal pipe: %s", strerror(errno));
    if (sig_install(SIGTERM, sig_handler) != 0 || sig_install(SIGINT, sig_handler) != 0 ||
        sig_install(SIGQUIT, sig_handler) != 0 || sig_install(SIGCHLD, sig_handler) != 0 ||
        sig_install(SIGPIPE, SIG_IGN) != 0)
        return cc_err_set(err, CC_EIO, "sigaction: %s", strerror(errno));
    return CC_OK;
}

int cc_signals_fd(void)
{
    return sig_pipe[0];
}

struct cc_sig_counts cc_signals_take(void)
{
    struct cc_sig_counts c;
    char buf[64];
    sigset_t all, old;

    while (sig_pipe[0] >= 0 && read(sig_pipe[0], buf, sizeof(buf)) > 0)
        ;
    /* Block signals while reading and zeroing so no increment is lost in between. */
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    c.term = sig_term;
    c.intr = sig_int;
    c.quit = sig_quit;
    c.chld = sig_chld;
    sig_term = sig_int = sig_quit = sig_chld = 0;
    sigprocmask(SIG_SETMASK, &old, NULL);
    return c;
}

static void sig_close_pipe(void)
{
    for (int i = 0; i < 2; i++) {
        if (sig_pipe[i] >= 0)
            close(sig_pipe[i]);
        sig_pipe[i] = -1;
    }
}

void cc_signals_child_reset(void)
{
    sig_install(SIGTERM, SIG_DFL);
    sig_install(SIGQUIT, SIG_DFL);
    sig_install(SIGCHLD, SIG_DFL);
    /* SIGPIPE stays ignored: a dropped Redis connection must be an error, not a death. */
    /* Ctrl+C reaches the whole foreground process group; the master decides (billiard's
     * pool children ignore SIGINT the same way). */
    sig_install(SIGINT, SIG_IGN);
    sig_close_pipe();
}

void cc_signals_deinit(void)
{
    sig_install(SIGTERM, SIG_DFL);
    sig_install(SIGINT, SIG_DFL);
    sig_install(SIGQUIT, SIG_DFL);
    sig_install(SIGCHLD, SIG_DFL);
    sig_close_pipe();
}
