/* Redis result backend, written exactly like Celery's RedisBackend (hiredis 0.14, sync API;
 * rediss:// goes through redis_tls.c instead, since hiredis 0.14 has no TLS).
 *
 * Design: one redisContext per process. Each state is one pipelined round trip
 *     MULTI / SETEX celery-task-meta-<id> <expires> <meta> / PUBLISH <same key> <meta> / EXEC
 * (SET without expiry when result_expires is 0): the SET lets a late client find the result
 * with GET, the PUBLISH wakes a client already blocked in AsyncResult.get() (it never
 * re-polls). The connection opens lazily on the first store, so a forked child opens its
 * own (after_fork drops the inherited context without touching the socket's peer).
 *
 * Invariants: a failed write (I/O error, error reply) drops the connection, so the next
 * attempt starts on a fresh one; redis_store makes one attempt and cc_backend_store (backend.c)
 * decides how often and how patiently to retry, as Celery's retry_policy does (an error reply
 * other than LOADING/BUSY/MASTERDOWN/TRYAGAIN sets is_refused: not retried, as Celery's
 * ensure() retries only connection errors). No buffer has a fixed size: the key is sized
 * from the task id, which may be as long as the message limits allow. Celery's
 * worker also GETs the key first to avoid overwriting a SUCCESS; we skip that round trip
 * (a task id runs once per delivery here).
 *
 * Transport: redis:// and unix:// use hiredis; rediss:// uses the small OpenSSL client in
 * redis_tls.c. The choice is made at connect; both send the same hand-built pipeline bytes.
 *
 * Reference: celery-wire.md §3.2; fixtures redis-result-*.json (redis_commands_in_order).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "backend.h"
#include "log.h"
#include "redis_tls.h"
#include "url.h"
#include "util.h"

#define REDIS_KEY_PREFIX "celery-task-meta-"

struct redis_backend {
    struct cc_backend base; /* first: the ops table casts */
    struct cc_redis_url url;
    redisContext *ctx;        /* redis://, unix:// */
    struct cc_redis_tls *tls; /* rediss:// */
    char *cmd;                /* reused RESP buffer for the store pipeline */
    size_t cmd_cap;
    struct cc_redis *kv; /* [canvas-chord] cc_backend_redis_client, NULL until asked */
    char *url_text;      /* [canvas-chord] the URL, for kv */
    char *key;           /* reused "celery-task-meta-<id>" buffer, sized from each id */
    size_t key_cap;
};

int cc_backend_redis_key(const char *task_id, char *buf, size_t size)
{
    int n = snprintf(buf, size, REDIS_KEY_PREFIX "%s", task_id);

    return (n < 0 || (size_t)n >= size) ? -1 : n;
}

char *cc_backend_redis_key_dup(const char *task_id, size_t *len)
{
    size_t n = sizeof(REDIS_KEY_PREFIX) - 1 + strlen(task_id);
    char *k = cc_xmalloc(n + 1);

    memcpy(k, REDIS_KEY_PREFIX, sizeof(REDIS_KEY_PREFIX) - 1);
    memcpy(k + sizeof(REDIS_KEY_PREFIX) - 1, task_id, n - (sizeof(REDIS_KEY_PREFIX) - 1) + 1);
    if (len != NULL)
        *len = n;
    return k;
}

/* An error reply that a retry may get past: redis-py raises BusyLoadingError (a
 * ConnectionError, so Celery's ensure() retries it) for LOADING; BUSY, MASTERDOWN and
 * TRYAGAIN pass too. Anything else (OOM, READONLY, NOPERM, WRONGTYPE, ...) is a refusal. */
static bool redis_reply_is_transient(const char *text)
{
    static const char *const transient[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN"};

    for (size_t i = 0; i < CC_ARRAY_LEN(transient); i++)
        if (strncmp(text, transient[i], strlen(transient[i])) == 0)
            return true;
    return false;
}

/* Fill err from an error reply, and say whether the server refused the store for good. */
static int redis_refused(struct redis_backend *rb, const char *text, struct cc_err *err)
{
    rb->base.is_refused = !redis_reply_is_transient(text);
    return cc_err_set(err, CC_EBACKEND, "redis replied: %s", text);
}

static void redis_drop(struct redis_backend *rb)
{
    if (rb->ctx != NULL)
        redisFree(rb->ctx);
    rb->ctx = NULL;
    cc_redis_tls_free(rb->tls);
    rb->tls = NULL;
}

/* Run one command synchronously during connection set-up; OK iff no error reply. */
static int redis_setup_cmd(struct redis_backend *rb, struct cc_err *err, const char *what, int argc,
                           const char **argv)
{
    redisReply *r = redisCommandArgv(rb->ctx, argc, argv, NULL);
    int rc = CC_OK;

    if (r == NULL)
        rc = cc_err_set(err, CC_EBACKEND, "redis %s: %s", what, rb->ctx->errstr);
    else if (r->type == REDIS_REPLY_ERROR)
        rc = cc_err_set(err, CC_EBACKEND, "redis %s: %s", what, r->str);
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

/* *is_cert_error: the TLS server certificate did not verify (rediss:// only). */
static int redis_connect(struct redis_backend *rb, bool *is_cert_error, struct cc_err *err)
{
    struct timeval tv = {4, 0};
    struct timeval io_tv = {30, 0};
    int rc = CC_OK;

    redis_drop(rb);
    *is_cert_error = false;
    if (rb->url.tls)
        return cc_redis_tls_connect(&rb->url, (int)tv.tv_sec * 1000, (int)io_tv.tv_sec * 1000,
                                    &rb->tls, is_cert_error, err);
    if (rb->url.socket_path != NULL)
        rb->ctx = redisConnectUnixWithTimeout(rb->url.socket_path, tv);
    else
        rb->ctx = redisConnectWithTimeout(rb->url.host, rb->url.port, tv);
    if (rb->ctx == NULL) {
        rc = cc_err_set(err, CC_EBACKEND, "redis: cannot allocate a context");
        goto out;
    }
    if (rb->ctx->err) {
        rc = cc_err_set(err, CC_EBACKEND, "redis connect %s:%d: %s",
                        rb->url.host ? rb->url.host : rb->url.socket_path, rb->url.port,
                        rb->ctx->errstr);
        goto out;
    }
    redisSetTimeout(rb->ctx, io_tv);
    if (rb->url.password != NULL) {
        const char *argv[3] = {"AUTH", rb->url.username, rb->url.password};

        if (rb->url.username != NULL)
            rc = redis_setup_cmd(rb, err, "AUTH", 3, argv);
        else {
            argv[1] = rb->url.password;
            rc = redis_setup_cmd(rb, err, "AUTH", 2, argv);
        }
        if (rc != CC_OK)
            goto out;
    }
    if (rb->url.db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};

        snprintf(db, sizeof(db), "%d", rb->url.db);
        rc = redis_setup_cmd(rb, err, "SELECT", 2, argv);
    }
out:
    if (rc != CC_OK)
        redis_drop(rb);
    return rc;
}

/* Append one RESP bulk string ("$<len>\r\n<bytes>\r\n") at *off; the buffer has room. */
static void redis_put_bulk(char *buf, size_t *off, const char *s, size_t n)
{
    *off += (size_t)sprintf(buf + *off, "$%zu\r\n", n);
    memcpy(buf + *off, s, n);
    *off += n;
    memcpy(buf + *off, "\r\n", 2);
    *off += 2;
}

/* The pipeline in rb->cmd (len bytes) over TLS, with the same reply checks as the hiredis path
 * (+OK, +QUEUED, +QUEUED, then EXEC's array without error elements). On an error reply we stop
 * reading: the caller drops the connection, so no stale reply can be seen later. */
static int redis_write_tls(struct redis_backend *rb, size_t len, struct cc_err *err)
{
    struct cc_redis_tls_reply reply;
    int rc = cc_redis_tls_write(rb->tls, rb->cmd, len, err);

    for (int i = 0; rc == CC_OK && i < 4; i++) {
        rc = cc_redis_tls_read(rb->tls, &reply, err);
        if (rc != CC_OK)
            break;
        if (reply.type == '-')
            rc = redis_refused(rb, reply.str, err);
        else if (i == 3 && reply.type != '*')
            rc = cc_err_set(err, CC_EBACKEND, "redis: transaction aborted");
        else if (i == 3 && reply.has_error_element)
            rc = redis_refused(rb, reply.str, err);
    }
    return rc;
}

/* One pipelined MULTI/SETEX/PUBLISH/EXEC. Returns CC_OK, or CC_EBACKEND with the
 * connection dropped.
 *
 * The four commands are written in RESP by hand into one reused buffer and handed to
 * hiredis with a single redisAppendFormattedCommand: the bytes on the wire are exactly what
 * four redisAppendCommand calls produce, without parsing four format strings and
 * allocating an sds string per argument, which was a fifth of a pool child's CPU per
 * task. hiredis still sends it with one write(2) and parses the four replies. */
static int redis_write(struct redis_backend *rb, const char *key, size_t key_len, const char *meta,
                       size_t len, struct cc_err *err)
{
    redisContext *c = rb->ctx;
    redisReply *reply = NULL;
    char expires[24];
    size_t off = 0, need;
    int rc = CC_OK;
    int ok;

    snprintf(expires, sizeof(expires), "%lld", (long long)rb->base.expires_s);
    /* Two copies each of key and meta, plus framing: 64 bytes per argument is ample. */
    need = 2 * (key_len + len) + strlen(expires) + 11 * 64;
    if (need > rb->cmd_cap) {
        rb->cmd = cc_xrealloc(rb->cmd, need);
        rb->cmd_cap = need;
    }
    off += (size_t)sprintf(rb->cmd + off, "*1\r\n");
    redis_put_bulk(rb->cmd, &off, "MULTI", 5);
    if (rb->base.expires_s > 0) {
        off += (size_t)sprintf(rb->cmd + off, "*4\r\n");
        redis_put_bulk(rb->cmd, &off, "SETEX", 5);
        redis_put_bulk(rb->cmd, &off, key, key_len);
        redis_put_bulk(rb->cmd, &off, expires, strlen(expires));
    } else {
        off += (size_t)sprintf(rb->cmd + off, "*3\r\n");
        redis_put_bulk(rb->cmd, &off, "SET", 3);
        redis_put_bulk(rb->cmd, &off, key, key_len);
    }
    redis_put_bulk(rb->cmd, &off, meta, len);
    off += (size_t)sprintf(rb->cmd + off, "*3\r\n");
    redis_put_bulk(rb->cmd, &off, "PUBLISH", 7);
    redis_put_bulk(rb->cmd, &off, key, key_len);
    redis_put_bulk(rb->cmd, &off, meta, len);
    off += (size_t)sprintf(rb->cmd + off, "*1\r\n");
    redis_put_bulk(rb->cmd, &off, "EXEC", 4);
    CC_ASSERT(off <= rb->cmd_cap);
    if (rb->tls != NULL) {
        rc = redis_write_tls(rb, off, err);
        goto out;
    }
    ok = redisAppendFormattedCommand(c, rb->cmd, off);
    if (ok != REDIS_OK) {
        rc = cc_err_set(err, CC_EBACKEND, "redis: %s", c->errstr);
        goto out;
    }
    /* Read all four replies even after an error one, so the stream stays in sync. */
    for (int i = 0; i < 4; i++) {
        if (redisGetReply(c, (void **)&reply) != REDIS_OK) {
            rc = cc_err_set(err, CC_EBACKEND, "redis: %s", c->errstr[0] ? c->errstr : "I/O");
            goto out;
        }
        if (reply->type == REDIS_REPLY_ERROR && rc == CC_OK)
            rc = redis_refused(rb, reply->str, err);
        else if (i == 3 && rc == CC_OK) {
            if (reply->type != REDIS_REPLY_ARRAY)
                rc = cc_err_set(err, CC_EBACKEND, "redis: transaction aborted");
            for (size_t k = 0; rc == CC_OK && k < reply->elements; k++)
                if (reply->element[k]->type == REDIS_REPLY_ERROR)
                    rc = redis_refused(rb, reply->element[k]->str, err);
        }
        freeReplyObject(reply);
        reply = NULL;
    }
out:
    if (rc != CC_OK)
        redis_drop(rb);
    return rc;
}

static int redis_store(struct cc_backend *b, const char *task_id, const char *meta, size_t len,
                       struct cc_err *err)
{
    struct redis_backend *rb = (struct redis_backend *)b;
    size_t id_len = strlen(task_id), key_len = sizeof(REDIS_KEY_PREFIX) - 1 + id_len;
    bool is_cert_error;
    int rc = CC_OK;

    /* The key is sized from the id (no fixed buffer: issue #14, a 239-character id
     * overflowed 256 bytes and every store failed). */
    if (key_len + 1 > rb->key_cap) {
        rb->key = cc_xrealloc(rb->key, key_len + 1);
        rb->key_cap = key_len + 1;
    }
    memcpy(rb->key, REDIS_KEY_PREFIX, sizeof(REDIS_KEY_PREFIX) - 1);
    memcpy(rb->key + sizeof(REDIS_KEY_PREFIX) - 1, task_id, id_len + 1);
    if (rb->ctx == NULL && rb->tls == NULL &&
        (rc = redis_connect(rb, &is_cert_error, err)) != CC_OK)
        return rc;
    return redis_write(rb, rb->key, key_len, meta, len, err);
}

/* [canvas] backend.set(key, value): the same pipeline as a result, under `key` as given. */
static int redis_set(struct cc_backend *b, const char *key, const char *value, size_t len,
                     struct cc_err *err)
{
    struct redis_backend *rb = (struct redis_backend *)b;
    bool is_cert_error;
    int rc;

    if (rb->ctx == NULL && rb->tls == NULL &&
        (rc = redis_connect(rb, &is_cert_error, err)) != CC_OK)
        return rc;
    return redis_write(rb, key, strlen(key), value, len, err);
}

static void redis_after_fork(struct cc_backend *b)
{
    struct redis_backend *rb = (struct redis_backend *)b;

    /* redisFree only closes our copy of the descriptor (no QUIT is sent), and the TLS
     * transport sends no close_notify, so the parent's connection is unaffected. */
    redis_drop(rb);
}

static void redis_destroy(struct cc_backend *b)
{
    struct redis_backend *rb = (struct redis_backend *)b;

    if (rb == NULL)
        return;
    redis_drop(rb);
    cc_redis_free(rb->kv);
    free(rb->url_text);
    cc_url_redis_deinit(&rb->url);
    free(rb->cmd);
    free(rb->key);
    free(rb);
}

static const struct cc_backend_ops redis_ops = {
    .name = "redis",
    .store = redis_store,
    .set = redis_set,
    .after_fork = redis_after_fork,
    .destroy = redis_destroy,
};

int cc_backend_redis_new(const char *url, int64_t expires_s, struct cc_backend **out,
                         struct cc_err *err)
{
    struct redis_backend *rb = cc_xcalloc(1, sizeof(*rb));
    struct cc_err cerr = {0};
    bool is_cert_error = false;
    int rc;

    *out = NULL;
    rb->base.ops = &redis_ops;
    rb->base.expires_s = expires_s;
    rc = cc_url_parse_redis(url, &rb->url, err);
    if (rc != CC_OK) {
        free(rb);
        return rc;
    }
    rb->url_text = cc_xstrdup(url);
    if (rb->url.tls && rb->url.ssl_cert_reqs == CC_REDIS_SSL_NONE)
        cc_warn("rediss: ssl_cert_reqs is none: the Redis server's certificate is not checked");
    /* Try now so a wrong address shows up in the start-up log; stores reconnect anyway. A
     * certificate that does not verify is a configuration error, not an outage: fail. */
    if (redis_connect(rb, &is_cert_error, &cerr) != CC_OK) {
        if (is_cert_error) {
            redis_destroy(&rb->base);
            return cc_err_set(err, CC_EBACKEND, "%s", cerr.msg);
        }
        cc_warn("result backend not reachable yet: %s", cerr.msg);
    }
    *out = &rb->base;
    return CC_OK;
}

/* [canvas-chord] */
#define REDIS_KV_TIMEOUT_MS 5000

struct cc_redis *cc_backend_redis_client(struct cc_backend *b)
{
    struct redis_backend *rb = (struct redis_backend *)b;
    struct cc_err err = {0};

    if (b == NULL || b->ops != &redis_ops)
        return NULL;
    if (rb->kv == NULL && cc_redis_open(rb->url_text, REDIS_KV_TIMEOUT_MS, &rb->kv, &err) != CC_OK)
        cc_error("result backend: %s", err.msg);
    return rb->kv;
}
