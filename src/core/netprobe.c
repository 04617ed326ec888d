/* Reachability probes (see netprobe.h).
 *
 * Design: one non-blocking socket at a time walks the resolved address list (so "localhost"
 * tries ::1, then 127.0.0.1, as a client library would); the first accepted connection ends
 * the probe, closed without a byte sent. The reason kept for a failure is the most telling
 * errno seen: a refused or timed-out address wins over one the host cannot even route
 * (EADDRNOTAVAIL, ENETUNREACH, EAFNOSUPPORT: typically ::1 without IPv6).
 *
 * No probe socket crosses fork(): a pool child forked while the master probes would keep
 * the half-made connection open after the master closed its descriptor (the server would
 * hold an idle connection for as long as the child lives), so every socket in flight is in
 * a small registry and an atfork handler closes them all in the child.
 *
 * Invariants: fd >= 0 exactly while a probe is in flight, and then it is registered; ai is
 * freed whenever the probe ends, however it ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "netprobe.h"
#include "util.h"

/* ---- Sockets in flight, closed in a forked child ------------------------------------ */

#define NETPROBE_REG_MAX 32

static pthread_mutex_t netprobe_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static int netprobe_reg[NETPROBE_REG_MAX]; /* descriptor + 1; 0 = free slot */
static pthread_once_t netprobe_atfork_once = PTHREAD_ONCE_INIT;

/* In the child of fork(): only the forking thread exists, and the lock may be held by a
 * thread that is gone, so walk the table without it. */
static void netprobe_atfork_child(void)
{
    for (int i = 0; i < NETPROBE_REG_MAX; i++) {
        if (netprobe_reg[i] != 0)
            close(netprobe_reg[i] - 1);
        netprobe_reg[i] = 0;
    }
    pthread_mutex_init(&netprobe_reg_lock, NULL);
}

static void netprobe_atfork_register(void)
{
    (void)pthread_atfork(NULL, NULL, netprobe_atfork_child);
}

/* Take fd as the probe's socket. A full table (more probes in flight than any process
 * here makes) only means the child keeps that one descriptor. */
static void netprobe_hold(struct cc_netprobe *p, int fd)
{
    pthread_once(&netprobe_atfork_once, netprobe_atfork_register);
    pthread_mutex_lock(&netprobe_reg_lock);
    for (int i = 0; i < NETPROBE_REG_MAX; i++)
        if (netprobe_reg[i] == 0) {
            netprobe_reg[i] = fd + 1;
            break;
        }
    pthread_mutex_unlock(&netprobe_reg_lock);
    p->fd = fd;
}

static void netprobe_release(struct cc_netprobe *p)
{
    if (p->fd < 0)
        return;
    pthread_mutex_lock(&netprobe_reg_lock);
    for (int i = 0; i < NETPROBE_REG_MAX; i++)
        if (netprobe_reg[i] == p->fd + 1) {
            netprobe_reg[i] = 0;
            break;
        }
    pthread_mutex_unlock(&netprobe_reg_lock);
    close(p->fd);
    p->fd = -1;
}

/* ---- Probes ------------------------------------------------------------------------- */

void cc_netprobe_init(struct cc_netprobe *p)
{
    memset(p, 0, sizeof(*p));
    p->fd = -1;
}

bool cc_netprobe_is_active(const struct cc_netprobe *p)
{
    return p->fd >= 0;
}

void cc_netprobe_stop(struct cc_netprobe *p)
{
    netprobe_release(p);
    if (p->ai != NULL)
        freeaddrinfo(p->ai);
    p->ai = NULL;
    p->cur = NULL;
}

void cc_netprobe_forget(struct cc_netprobe *p)
{
    p->fd = -1;   /* the atfork handler closed it */
    p->ai = NULL; /* the parent's allocation: not ours to free */
    p->cur = NULL;
}

static bool netprobe_is_unroutable(int e)
{
    return e == EADDRNOTAVAIL || e == ENETUNREACH || e == EAFNOSUPPORT || e == EPROTONOSUPPORT;
}

static void netprobe_note(struct cc_netprobe *p, int e)
{
    if (e != 0 && (p->last_errno == 0 || !netprobe_is_unroutable(e)))
        p->last_errno = e;
}

static int netprobe_fail(struct cc_netprobe *p, struct cc_err *err)
{
    char buf[128];
    int e = p->last_errno != 0 ? p->last_errno : ECONNREFUSED;

    cc_netprobe_stop(p);
    return cc_err_set(err, CC_EIO, "%s", strerror_r(e, buf, sizeof(buf)));
}

/* Connect the current address, then the next ones while they fail at once. */
static int netprobe_try(struct cc_netprobe *p, struct cc_err *err)
{
    for (; p->cur != NULL; p->cur = p->cur->ai_next) {
        struct addrinfo *a = p->cur;
        int fd =
            socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);

        if (fd < 0) {
            netprobe_note(p, errno);
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            close(fd);
            cc_netprobe_stop(p);
            return CC_OK;
        }
        if (errno == EINPROGRESS || errno == EAGAIN) {
            netprobe_hold(p, fd);
            return CC_EAGAIN;
        }
        netprobe_note(p, errno);
        close(fd);
    }
    return netprobe_fail(p, err);
}

int cc_netprobe_start(struct cc_netprobe *p, const char *host, int port, int timeout_ms,
                      struct cc_err *err)
{
    cc_netprobe_stop(p);
    p->last_errno = 0;
    p->deadline_us = cc_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 4000) * 1000;
    if (host == NULL || host[0] == '\0')
        return cc_err_set(err, CC_EIO, "no host to connect to");
    if (port < 0) { /* unix socket */
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        snprintf(p->target, sizeof(p->target), "%s", host);
        if (strlen(host) >= sizeof(sa.sun_path))
            return cc_err_set(err, CC_EIO, "socket path too long");
        memcpy(sa.sun_path, host, strlen(host) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            netprobe_note(p, errno);
            return netprobe_fail(p, err);
        }
        if (connect(fd, (const struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(fd);
            return CC_OK;
        }
        if (errno == EINPROGRESS || errno == EAGAIN) {
            netprobe_hold(p, fd);
            return CC_EAGAIN;
        }
        netprobe_note(p, errno);
        close(fd);
        return netprobe_fail(p, err);
    }
    {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        char service[16];
        int gai;

        snprintf(p->target, sizeof(p->target), "%s:%d", host, port);
        snprintf(service, sizeof(service), "%d", port);
        gai = getaddrinfo(host, service, &hints, &p->ai);
        if (gai != 0) {
            p->ai = NULL;
            return cc_err_set(err, CC_EIO, "%s",
                              gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
        }
        p->cur = p->ai;
    }
    return netprobe_try(p, err);
}

int cc_netprobe_check(struct cc_netprobe *p, int wait_ms, struct cc_err *err)
{
    for (;;) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLOUT};
        int64_t left_us = p->deadline_us - cc_mono_us();
        int wait = wait_ms < 0 ? 0 : wait_ms;
        int n, soerr = 0;
        socklen_t len = sizeof(soerr);

        if (p->fd < 0)
            return cc_err_set(err, CC_EINVAL, "no probe in flight");
        if (left_us <= 0) {
            netprobe_note(p, ETIMEDOUT);
            p->last_errno = ETIMEDOUT; /* the reason the probe ends */
            return netprobe_fail(p, err);
        }
        if ((int64_t)wait * 1000 > left_us)
            wait = (int)((left_us + 999) / 1000);
        n = poll(&pfd, 1, wait);
        if (n < 0 && errno == EINTR)
            return CC_EAGAIN;
        if (n == 0) {
            if (cc_mono_us() < p->deadline_us)
                return CC_EAGAIN;
            continue; /* the deadline passed: fail it above */
        }
        if (n < 0 || getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
            soerr = errno;
        netprobe_release(p);
        if (soerr == 0) {
            cc_netprobe_stop(p);
            return CC_OK;
        }
        netprobe_note(p, soerr);
        if (p->cur == NULL) /* unix socket: one address */
            return netprobe_fail(p, err);
        p->cur = p->cur->ai_next;
        int rc = netprobe_try(p, err);
        if (rc != CC_EAGAIN)
            return rc;
        wait_ms = 0; /* the next address: look once more, without waiting again */
    }
}

int cc_netprobe_diagnose(const char *host, int port, int timeout_ms, struct cc_err *err)
{
    struct cc_netprobe p;
    int rc;

    cc_netprobe_init(&p);
    rc = cc_netprobe_start(&p, host, port, timeout_ms, err);
    while (rc == CC_EAGAIN)
        rc = cc_netprobe_check(&p, timeout_ms > 0 ? timeout_ms : 4000, err);
    cc_netprobe_stop(&p);
    return rc;
}
