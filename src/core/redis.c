/* Synchronous Redis client for the worker's bookkeeping (see redis.h).
 *
 * redis:// and unix:// use hiredis' blocking context; rediss:// writes the command hiredis
 * formats (redisFormatCommandArgv) through redis_tls.c and parses the reply with a
 * redisReader fed from the TLS stream. Any failure drops the connection; the next command
 * reconnects (connect timeout 4 s, I/O timeout as opened), so a Redis restart costs the
 * caller one failed command, never a wedged connection.
 *
 * Reachability (issue #14): callers skip a Redis that failed for a few seconds so that an
 * outage costs one timeout rather than one per message; cc_redis_probe() lets them come
 * back within about REDIS_PROBE_MS of the server accepting connections again, with a TCP
 * connect (cc_netprobe) that never blocks them longer than REDIS_PROBE_WAIT_MS. A server
 * that accepts the probe but then fails the command (frozen, its listen socket still
 * accepting; each such command costs the caller its I/O timeout) doubles the probe interval
 * up to REDIS_PROBE_MAX_MS; a command that gets a reply, or a refused probe (the server is
 * down, not frozen), resets it.
 *
 * Pipelining (cc_redis_append/flush/drain): appended commands are counted in n_pending and
 * their replies read in order before anything else on the stream (cc_redis_cmd drains them
 * first), so a synchronous command never takes another command's reply. A dropped
 * connection forgets them.
 */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "netprobe.h"
#include "redis.h"
#include "redis_tls.h"
#include "url.h"
#include "util.h"

#define REDIS_CONNECT_TIMEOUT_MS 4000
#define REDIS_PROBE_MS           500
#define REDIS_PROBE_MAX_MS       5000
#define REDIS_PROBE_WAIT_MS      20

struct cc_redis {
    struct cc_redis *next; /* registry of open clients (redis_registry) */
    struct cc_redis_url url;
    int io_timeout_ms;
    redisContext *ctx;        /* redis://, unix:// */
    struct cc_redis_tls *tls; /* rediss:// */
    redisReader *reader;      /* rediss:// replies */
    /* Reachability (cc_redis_probe). */
    bool is_conn_failed;   /* the last connect or command failed on the connection */
    bool is_probe_trusted; /* a probe was accepted since the last command: a failure now
                              backs probes off; until then cc_redis_probe says yes */
    int probe_ms;          /* interval between probes, REDIS_PROBE_MS .. REDIS_PROBE_MAX_MS */
    int64_t probe_next_us; /* cc_mono_us() before which no probe starts */
    struct cc_netprobe probe;
    size_t n_pending; /* cc_redis_append'ed commands whose replies are unread */
};

/* Every open client, so a forked child can drop them all (redis_atfork_child): the worker
 * master's bookkeeping clients (delay store, redelivery counters, fleet rate limits) must
 * not leak their sockets into pool children, whoever forks them. */
static pthread_mutex_t redis_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cc_redis *redis_registry;
static pthread_once_t redis_atfork_once = PTHREAD_ONCE_INIT;

static void redis_drop(struct cc_redis *r);

/* In the child of fork(): only the forking thread exists and the lock may be held by a
 * thread that is gone, so walk the list without it. */
static void redis_atfork_child(void)
{
    for (struct cc_redis *r = redis_registry; r != NULL; r = r->next) {
        redis_drop(r);
        cc_netprobe_forget(&r->probe); /* closed by netprobe's own atfork handler */
    }
    pthread_mutex_init(&redis_registry_lock, NULL);
}

static void redis_atfork_register(void)
{
    (void)pthread_atfork(NULL, NULL, redis_atfork_child);
}

static void redis_drop(struct cc_redis *r)
{
    r->n_pending = 0; /* their replies die with the connection */
    if (r->ctx != NULL)
        redisFree(r->ctx);
    r->ctx = NULL;
    cc_redis_tls_free(r->tls);
    r->tls = NULL;
    if (r->reader != NULL)
        redisReaderFree(r->reader);
    r->reader = NULL;
}

int cc_redis_open(const char *url, int io_timeout_ms, struct cc_redis **out, struct cc_err *err)
{
    struct cc_redis *r = cc_xcalloc(1, sizeof(*r));
    int rc = cc_url_parse_redis(url, &r->url, err);

    *out = NULL;
    if (rc != CC_OK) {
        free(r);
        return rc;
    }
    r->io_timeout_ms = io_timeout_ms > 0 ? io_timeout_ms : 5000;
    r->probe_ms = REDIS_PROBE_MS;
    cc_netprobe_init(&r->probe);
    pthread_once(&redis_atfork_once, redis_atfork_register);
    pthread_mutex_lock(&redis_registry_lock);
    r->next = redis_registry;
    redis_registry = r;
    pthread_mutex_unlock(&redis_registry_lock);
    *out = r;
    return CC_OK;
}

/* Run a set-up command (AUTH, SELECT) on the fresh connection. */
static int redis_setup(struct cc_redis *r, int argc, const char **argv, struct cc_err *err)
{
    redisReply *rep = cc_redis_cmd(r, argc, argv, NULL, err);
    int rc = CC_OK;

    if (rep == NULL)
        return CC_EBACKEND;
    if (rep->type == REDIS_REPLY_ERROR)
        rc = cc_err_set(err, CC_EBACKEND, "redis %s: %s", argv[0], rep->str);
    freeReplyObject(rep);
    return rc;
}

/* A connect or command failed. On the connection (is_conn: refused, reset, timed out) a
 * probe can tell when the server is back; a refusal by the server (AUTH, a certificate) it
 * cannot. */
static void redis_failed(struct cc_redis *r, bool is_conn)
{
    if (is_conn && r->is_probe_trusted) { /* accepted the probe, failed the command */
        r->probe_ms = r->probe_ms * 2 > REDIS_PROBE_MAX_MS ? REDIS_PROBE_MAX_MS : r->probe_ms * 2;
        r->is_probe_trusted = false;
    }
    r->is_conn_failed = is_conn;
    r->probe_next_us = cc_mono_us() + (int64_t)r->probe_ms * 1000;
}

static int redis_connect(struct cc_redis *r, struct cc_err *err)
{
    struct timeval ctv = {REDIS_CONNECT_TIMEOUT_MS / 1000, 0};
    struct timeval iotv = {r->io_timeout_ms / 1000, (r->io_timeout_ms % 1000) * 1000};
    int rc = CC_OK;

    redis_drop(r);
    if (r->url.tls) {
        bool is_cert_error = false;

        /* redis_tls does AUTH and SELECT itself. */
        rc = cc_redis_tls_connect(&r->url, REDIS_CONNECT_TIMEOUT_MS, r->io_timeout_ms, &r->tls,
                                  &is_cert_error, err);
        if (rc == CC_OK)
            r->reader = redisReaderCreate();
        else
            redis_failed(r, !is_cert_error);
        return rc;
    }
    if (r->url.socket_path != NULL)
        r->ctx = redisConnectUnixWithTimeout(r->url.socket_path, ctv);
    else
        r->ctx = redisConnectWithTimeout(r->url.host, r->url.port, ctv);
    if (r->ctx == NULL)
        return cc_err_set(err, CC_EBACKEND, "redis: cannot allocate a context");
    if (r->ctx->err) {
        rc =
            cc_err_set(err, CC_EBACKEND, "redis connect %s:%d: %s",
                       r->url.host ? r->url.host : r->url.socket_path, r->url.port, r->ctx->errstr);
        redis_drop(r);
        redis_failed(r, true);
        return rc;
    }
    redisSetTimeout(r->ctx, iotv);
    if (r->url.password != NULL) {
        const char *a3[3] = {"AUTH", r->url.username, r->url.password};
        const char *a2[2] = {"AUTH", r->url.password};

        rc = r->url.username != NULL ? redis_setup(r, 3, a3, err) : redis_setup(r, 2, a2, err);
    }
    if (rc == CC_OK && r->url.db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};

        snprintf(db, sizeof(db), "%d", r->url.db);
        rc = redis_setup(r, 2, argv, err);
    }
    if (rc != CC_OK) {
        /* An I/O failure of AUTH / SELECT was noted by cc_redis_cmd; an error reply is the
         * server refusing us. */
        if (r->ctx != NULL)
            redis_failed(r, false);
        redis_drop(r);
    }
    return rc;
}

static redisReply *redis_cmd_tls(struct cc_redis *r, int argc, const char **argv,
                                 const size_t *lens, struct cc_err *err)
{
    char *cmd = NULL;
    long long len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    void *reply = NULL;

    if (len < 0)
        return cc_err_set(err, CC_EBACKEND, "redis: cannot format command"), NULL;
    int rc = cc_redis_tls_write(r->tls, cmd, (size_t)len, err);
    redisFreeCommand(cmd);
    while (rc == CC_OK && reply == NULL) {
        char buf[4096];
        size_t got = 0;

        if (redisReaderGetReply(r->reader, &reply) != REDIS_OK) {
            rc = cc_err_set(err, CC_EBACKEND, "redis: bad reply: %s", r->reader->errstr);
            break;
        }
        if (reply != NULL)
            break;
        rc = cc_redis_tls_read_some(r->tls, buf, sizeof(buf), &got, err);
        if (rc == CC_OK && redisReaderFeed(r->reader, buf, got) != REDIS_OK)
            rc = cc_err_set(err, CC_EBACKEND, "redis: bad reply: %s", r->reader->errstr);
    }
    if (rc != CC_OK) {
        if (reply != NULL)
            freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

/* One reply of the TLS stream into *out (NULL: none complete yet and !is_wait). */
static int redis_tls_reply(struct cc_redis *r, bool is_wait, void **out, struct cc_err *err)
{
    *out = NULL;
    for (;;) {
        char buf[4096];
        size_t got = 0;

        if (redisReaderGetReply(r->reader, out) != REDIS_OK)
            return cc_err_set(err, CC_EBACKEND, "redis: bad reply: %s", r->reader->errstr);
        if (*out != NULL || !is_wait)
            return CC_OK;
        if (cc_redis_tls_read_some(r->tls, buf, sizeof(buf), &got, err) != CC_OK)
            return CC_EBACKEND;
        if (redisReaderFeed(r->reader, buf, got) != REDIS_OK)
            return cc_err_set(err, CC_EBACKEND, "redis: bad reply: %s", r->reader->errstr);
    }
}

int cc_redis_append(struct cc_redis *r, int argc, const char **argv, const size_t *lens,
                    struct cc_err *err)
{
    int rc = CC_OK;

    if (r->ctx == NULL && r->tls == NULL && redis_connect(r, err) != CC_OK)
        return CC_EBACKEND;
    if (r->tls != NULL) {
        char *cmd = NULL;
        long long len = redisFormatCommandArgv(&cmd, argc, argv, lens);

        if (len < 0)
            return cc_err_set(err, CC_EBACKEND, "redis: cannot format command");
        rc = cc_redis_tls_write(r->tls, cmd, (size_t)len, err);
        redisFreeCommand(cmd);
    } else if (redisAppendCommandArgv(r->ctx, argc, argv, lens) != REDIS_OK) {
        rc = cc_err_set(err, CC_EBACKEND, "redis: %s", r->ctx->errstr);
    }
    if (rc != CC_OK) {
        redis_drop(r);
        redis_failed(r, true);
        return rc;
    }
    r->n_pending++;
    return CC_OK;
}

int cc_redis_flush(struct cc_redis *r, struct cc_err *err)
{
    int done = 0;

    if (r->ctx == NULL)
        return CC_OK; /* TLS wrote at append time; nothing connected: nothing queued */
    while (!done) {
        if (redisBufferWrite(r->ctx, &done) != REDIS_OK) {
            cc_err_set(err, CC_EBACKEND, "redis: %s",
                       r->ctx->errstr[0] ? r->ctx->errstr : "write failed");
            redis_drop(r);
            redis_failed(r, true);
            return CC_EBACKEND;
        }
    }
    return CC_OK;
}

int cc_redis_drain(struct cc_redis *r, bool is_wait, int *n_errors, struct cc_err *err)
{
    int rc = CC_OK;

    if (n_errors != NULL)
        *n_errors = 0;
    if (r->n_pending == 0)
        return CC_OK;
    if (!is_wait && r->ctx != NULL) {
        /* Pull in what the socket holds now without blocking; the parse below takes
         * whatever complete replies that gives. */
        struct pollfd pfd = {.fd = r->ctx->fd, .events = POLLIN};

        if (cc_redis_flush(r, err) != CC_OK)
            return CC_EBACKEND;
        if (poll(&pfd, 1, 0) > 0 && redisBufferRead(r->ctx) != REDIS_OK) {
            rc = cc_err_set(err, CC_EBACKEND, "redis: %s",
                            r->ctx->errstr[0] ? r->ctx->errstr : "read failed");
            redis_drop(r);
            redis_failed(r, true);
            return rc;
        }
    }
    while (r->n_pending > 0) {
        void *reply = NULL;

        if (r->tls != NULL)
            rc = redis_tls_reply(r, is_wait, &reply, err);
        else if (is_wait)
            rc = redisGetReply(r->ctx, &reply) == REDIS_OK
                     ? CC_OK
                     : cc_err_set(err, CC_EBACKEND, "redis: %s",
                                  r->ctx->errstr[0] ? r->ctx->errstr : "I/O");
        else
            rc = redisReaderGetReply(r->ctx->reader, &reply) == REDIS_OK
                     ? CC_OK
                     : cc_err_set(err, CC_EBACKEND, "redis: bad reply");
        if (rc != CC_OK) {
            redis_drop(r);
            redis_failed(r, true);
            return rc;
        }
        if (reply == NULL)
            break; /* !is_wait: nothing more complete yet */
        r->n_pending--;
        if (((redisReply *)reply)->type == REDIS_REPLY_ERROR) {
            if (n_errors != NULL && (*n_errors)++ == 0)
                cc_err_set(err, CC_EBACKEND, "redis replied: %s", ((redisReply *)reply)->str);
        }
        freeReplyObject(reply);
    }
    return CC_OK;
}

size_t cc_redis_pending(const struct cc_redis *r)
{
    return r->n_pending;
}

redisReply *cc_redis_cmd(struct cc_redis *r, int argc, const char **argv, const size_t *lens,
                         struct cc_err *err)
{
    redisReply *reply;

    if (r->ctx == NULL && r->tls == NULL && redis_connect(r, err) != CC_OK)
        return NULL;
    /* Replies of pipelined commands come first on the stream: read them off. */
    if (r->n_pending > 0 && cc_redis_drain(r, true, NULL, err) != CC_OK)
        return NULL;
    if (r->tls != NULL)
        reply = redis_cmd_tls(r, argc, argv, lens, err);
    else {
        reply = redisCommandArgv(r->ctx, argc, argv, lens);
        if (reply == NULL)
            cc_err_set(err, CC_EBACKEND, "redis: %s", r->ctx->errstr[0] ? r->ctx->errstr : "I/O");
    }
    if (reply == NULL) {
        redis_drop(r);
        redis_failed(r, true);
    } else if (r->is_conn_failed || r->probe_ms != REDIS_PROBE_MS) {
        r->is_conn_failed = false;
        r->probe_ms = REDIS_PROBE_MS;
    }
    r->is_probe_trusted = false;
    return reply;
}

bool cc_redis_probe(struct cc_redis *r)
{
    struct cc_err err = {0};
    int rc;

    if (r->ctx != NULL || r->tls != NULL)
        return true;
    if (!r->is_conn_failed)
        return false;
    if (r->is_probe_trusted) /* accepted, and no command tried since: still worth one */
        return true;
    if (!cc_netprobe_is_active(&r->probe)) {
        int64_t now = cc_mono_us();

        if (now < r->probe_next_us)
            return false;
        r->probe_next_us = now + (int64_t)r->probe_ms * 1000;
        rc = r->url.socket_path != NULL ? cc_netprobe_start(&r->probe, r->url.socket_path, -1,
                                                            REDIS_CONNECT_TIMEOUT_MS, &err)
                                        : cc_netprobe_start(&r->probe, r->url.host, r->url.port,
                                                            REDIS_CONNECT_TIMEOUT_MS, &err);
        if (rc == CC_EAGAIN)
            rc = cc_netprobe_check(&r->probe, REDIS_PROBE_WAIT_MS, &err);
    } else {
        rc = cc_netprobe_check(&r->probe, 0, &err);
    }
    if (rc == CC_EAGAIN)
        return false;
    if (rc != CC_OK) {
        /* Refused (or timed out): the server is down, not frozen; when it comes back, find
         * it at the base pace (a shutdown that still accepted probes may have doubled it). */
        r->probe_ms = REDIS_PROBE_MS;
        if (r->probe_next_us > cc_mono_us() + (int64_t)REDIS_PROBE_MS * 1000)
            r->probe_next_us = cc_mono_us() + (int64_t)REDIS_PROBE_MS * 1000;
        return false;
    }
    r->is_probe_trusted = true;
    return true;
}

int cc_redis_cmd_int(struct cc_redis *r, int argc, const char **argv, const size_t *lens,
                     long long *out, struct cc_err *err)
{
    redisReply *reply = cc_redis_cmd(r, argc, argv, lens, err);
    int rc = CC_OK;

    if (reply == NULL)
        return CC_EBACKEND;
    if (reply->type == REDIS_REPLY_INTEGER)
        *out = reply->integer;
    else if (reply->type == REDIS_REPLY_ERROR)
        rc = cc_err_set(err, CC_EBACKEND, "redis %s: %s", argv[0], reply->str);
    else
        rc = cc_err_set(err, CC_EBACKEND, "redis %s: unexpected reply type %d", argv[0],
                        reply->type);
    freeReplyObject(reply);
    return rc;
}

void cc_redis_after_fork(struct cc_redis *r)
{
    if (r != NULL)
        redis_drop(r); /* redisFree closes only our descriptor copy; TLS sends no notify */
}

void cc_redis_free(struct cc_redis *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&redis_registry_lock);
    for (struct cc_redis **pp = &redis_registry; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    pthread_mutex_unlock(&redis_registry_lock);
    redis_drop(r);
    cc_netprobe_stop(&r->probe);
    cc_url_redis_deinit(&r->url);
    free(r);
}
