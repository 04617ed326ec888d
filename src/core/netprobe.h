/* Cheap reachability probes: is a service accepting TCP (or unix socket) connections again,
 * and why does a connect fail?
 *
 * A probe is a non-blocking connect(2) to every address the host resolves to, in turn,
 * closed as soon as it is accepted: no protocol bytes are sent, so it costs the server one
 * accept and costs the caller no wait. Used while a service is down to notice within a
 * fraction of a second that it is back (the worker's broker reconnect, the bookkeeping Redis)
 * instead of sleeping through a grown backoff, and to name the real reason of a failed
 * connect where a library only says "a socket error occurred" (rabbitmq-c leaves errno at
 * EINPROGRESS after a refused non-blocking connect).
 *
 * Not thread-safe per object (different objects in different threads are fine); no
 * allocation survives cc_netprobe_stop(). Descriptors are O_CLOEXEC, and closed in the child
 * of any fork() by an atfork handler: a probe in flight across fork() is the parent's (a
 * child that inherited the object calls cc_netprobe_forget()).
 */
#ifndef CELERYC_NETPROBE_H
#define CELERYC_NETPROBE_H

#include <stdbool.h>
#include <stdint.h>

#include "celeryc/status.h"

struct addrinfo;

struct cc_netprobe {
    int fd;               /* connecting socket, -1 when idle */
    struct addrinfo *ai;  /* resolved addresses (owned), NULL when idle or unix */
    struct addrinfo *cur; /* the address being tried */
    int64_t deadline_us;  /* cc_mono_us() at which the probe gives up */
    int last_errno;       /* the most telling errno seen so far (0 = none) */
    char target[128];     /* "host:port" or the socket path, for messages */
};

/* Idle probe (fd -1). Call once before any other function. */
void cc_netprobe_init(struct cc_netprobe *p);

/* Start probing host:port (a unix socket when port < 0: host is then the path), giving up
 * after timeout_ms. Never waits on the network (name resolution may: getaddrinfo). Returns
 * CC_EAGAIN (in progress: call cc_netprobe_check), CC_OK (accepted at once; the probe is
 * idle again) or CC_EIO with err->msg the reason alone ("Connection refused", "Name or
 * service not known"). A probe already in flight is stopped first. */
int cc_netprobe_start(struct cc_netprobe *p, const char *host, int port, int timeout_ms,
                      struct cc_err *err) CC_MUST_USE;

/* Outcome of the probe in flight, waiting at most wait_ms (0: just look). CC_OK: accepted
 * (the socket is closed, the probe idle); CC_EAGAIN: still connecting; CC_EIO: every
 * address failed or the deadline passed (err->msg: "Connection refused", "Connection timed
 * out", ...; the probe is idle). CC_EINVAL when no probe is in flight. */
int cc_netprobe_check(struct cc_netprobe *p, int wait_ms, struct cc_err *err) CC_MUST_USE;

/* True while a probe is in flight. */
bool cc_netprobe_is_active(const struct cc_netprobe *p);

/* Stop a probe in flight (close, free). Idempotent. */
void cc_netprobe_stop(struct cc_netprobe *p);

/* In a forked child: forget the inherited probe (its descriptor is already closed) without
 * touching the parent's memory (the address list belongs to the parent's image). */
void cc_netprobe_forget(struct cc_netprobe *p);

/* Blocking form: connect to host:port within timeout_ms and say why that fails. CC_OK (it
 * is accepting now) or CC_EIO with err->msg the reason alone. For error texts after a
 * library's connect failed without saying why. */
int cc_netprobe_diagnose(const char *host, int port, int timeout_ms,
                         struct cc_err *err) CC_MUST_USE;

#endif
