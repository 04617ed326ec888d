/* Result backends: an ops table implemented by redis (backend_redis.c) and none
 * (backend_none.c), plus the helpers that turn a request's state into one stored record.
 *
 * A backend object is opened once in the master; a forked child calls
 * cc_backend_after_fork() and the first store reconnects (no connection crosses fork()).
 */
#ifndef CELERYC_BACKEND_H
#define CELERYC_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "celeryc/status.h"
#include "celeryc/task.h"
#include "config.h"
#include "redis.h"
#include "result.h"

struct cc_backend;

struct cc_backend_ops {
    const char *name; /* "redis", "postgres", "none" */
    /* Store the encoded meta `meta` (len bytes) for `task_id`, expiring after expires_s
     * (0 = never). One attempt (reconnecting first if there is no connection); retries are
     * cc_backend_store's. Returns CC_OK or CC_EBACKEND (detail in err). */
    int (*store)(struct cc_backend *b, const char *task_id, const char *meta, size_t len,
                 struct cc_err *err);
    /* [canvas] Celery's KeyValueStoreBackend.set(key, value): the same MULTI / SETEX (SET
     * when result_expires is 0) / PUBLISH / EXEC as a result, under a key given whole
     * (celery-taskset-meta-<gid>, ...<gid>.s). One attempt, like store. NULL: the backend
     * has no key-value store (none), and cc_backend_set is a no-op. */
    int (*set)(struct cc_backend *b, const char *key, const char *value, size_t len,
               struct cc_err *err);
    /* Drop (without any I/O on it) a connection inherited through fork(). */
    void (*after_fork)(struct cc_backend *b);
    void (*destroy)(struct cc_backend *b);
};

/* Celery's RedisBackend writes a result through ensure() with its retry_policy
 * {max_retries: 20, interval_start: 0, interval_step: 1, interval_max: 1}: a failed write is
 * retried at once, then once a second, for about 20 s in all, before the error surfaces. A
 * patient backend (a pool child's, see cc_backend_set_patient) does the same, and also stops
 * at CC_BACKEND_RETRY_BUDGET_MS so a slow connect cannot stretch it much further. */
#define CC_BACKEND_RETRY_MAX       20
#define CC_BACKEND_RETRY_BUDGET_MS 20000

struct cc_backend {
    const struct cc_backend_ops *ops;
    bool is_none;      /* true: nothing is ever written, skip building records */
    int64_t expires_s; /* result_expires */
    bool is_patient;   /* retry a failed store per Celery's retry_policy (may block ~20 s) */
    bool is_failing;   /* a store failed and none has succeeded since (logging state) */
    /* Set by an implementation when its last failed attempt was refused by the server (an
     * error reply: OOM, READONLY, NOPERM, ...) rather than lost on the connection: Celery's
     * ensure() retries only connection errors, so cc_backend_store does not retry these. */
    bool is_refused;
};

/* Open the backend named by cfg->result_backend: "none" (or empty), redis://, unix:// or
 * rediss:// (TLS through redis_tls.c). Redis connects lazily on first store, but this call tries
 * once so a bad address is reported at start (a warning, not fatal; for rediss:// a server
 * certificate that fails verification is fatal: CC_EBACKEND). Returns CC_OK and *out (owned, free
 * with cc_backend_free), CC_EURL, CC_EUNSUPP, CC_EBACKEND. */
int cc_backend_open(const struct cc_config *cfg, struct cc_backend **out,
                    struct cc_err *err) CC_MUST_USE;

/* In a forked child: forget the parent's connection; the next store opens a new one. */
void cc_backend_after_fork(struct cc_backend *b);

/* Patient (pool children): a failed store is retried with Celery's retry_policy, sleeping up
 * to CC_BACKEND_RETRY_BUDGET_MS in all. Not patient (the default, for the master, whose event
 * loop must not stall for 20 s): one immediate retry on a fresh connection. */
void cc_backend_set_patient(struct cc_backend *b, bool is_patient);

void cc_backend_free(struct cc_backend *b);

/* Encode `r` with cc_result_encode and store it, retrying a CC_EBACKEND failure as
 * cc_backend_set_patient says (a failure the server refused, is_refused, is not retried). Logs one
 * WARNING when stores start failing and one when they succeed again; the caller logs a store it
 * gives up on. No-op (CC_OK) for the none backend. Returns CC_OK, CC_EBACKEND, CC_ENOMEM. */
int cc_backend_store(struct cc_backend *b, const struct cc_result *r,
                     struct cc_err *err) CC_MUST_USE;

/* [canvas] Write `value` (len bytes) under `key` as Celery's backend.set() does (see the
 * ops' set), retrying like cc_backend_store. No-op (CC_OK) for the none backend. Used by the
 * executor's outbox for a chord's size (set_chord_size) and a saved GroupResult. Returns
 * CC_OK, CC_EBACKEND, CC_EINVAL. */
int cc_backend_set(struct cc_backend *b, const char *key, const char *value, size_t len,
                   struct cc_err *err) CC_MUST_USE;

/* One state of a request, filled the way Celery's backend does (§3.2): group_id/parent_id
 * iff the request has them, date_done now for ready states and null otherwise, the extended
 * fields when cfg->result_extended. `result` and `traceback` may be NULL; `children` may be
 * NULL ([]). Returns what cc_backend_store returns. */
int cc_backend_store_state(struct cc_backend *b, const struct cc_config *cfg,
                           const struct cc_task_request *req, const json_t *args,
                           const json_t *kwargs, const char *status, const json_t *result,
                           const char *traceback, const json_t *children,
                           struct cc_err *err) CC_MUST_USE;

/* Store FAILURE/REVOKED with an exception dict built from module, type and a single string
 * argument (NotRegistered, TaskRevokedError('expired'), WorkerLostError). */
int cc_backend_store_exc(struct cc_backend *b, const struct cc_config *cfg,
                         const struct cc_task_request *req, const json_t *args,
                         const json_t *kwargs, const char *status, const char *exc_module,
                         const char *exc_type, const char *exc_arg, struct cc_err *err) CC_MUST_USE;

/* Implementations (backend_redis.c, backend_none.c). */
int cc_backend_redis_new(const char *url, int64_t expires_s, struct cc_backend **out,
                         struct cc_err *err) CC_MUST_USE;
struct cc_backend *cc_backend_none_new(void);

/* [pgb] Postgres (backend_pg.c): Celery's database backend, db+postgresql:// (also
 * db+postgres://, db+postgresql+<driver>://). Connects once now (a warning if it cannot) and
 * creates Celery's tables when missing. CC_EURL for a URL libpq cannot parse. */
int cc_backend_pg_new(const char *url, int64_t expires_s, struct cc_backend **out,
                      struct cc_err *err) CC_MUST_USE;

/* [pgb] The libpq URI of a db+postgresql:// URL into buf ("postgresql://..."): "db+" and any
 * "+driver" dropped. Returns its length, or -1 (not such a URL, or buf too small). Pure. */
int cc_backend_pg_conninfo(const char *url, char *buf, size_t size);

/* [pgb] Check a db+... result backend URL without connecting (config.c): CC_OK, or CC_EURL
 * with the reason in err (not Postgres, or libpq cannot parse it). */
int cc_backend_pg_check_url(const char *url, struct cc_err *err) CC_MUST_USE;

/* [canvas-chord] A general-purpose Redis client on the backend's URL (src/core/redis.h), for
 * chord keys (src/worker/chord.c): opened lazily, owned by the backend, dropped in a forked child
 * by redis.c's atfork handler. NULL when the backend is not Redis. */
struct cc_redis *cc_backend_redis_client(struct cc_backend *b);

/* "celery-task-meta-<id>" into buf (size bytes); returns the length, or -1 if too small.
 * Pure (unit-tested). */
int cc_backend_redis_key(const char *task_id, char *buf, size_t size);

/* "celery-task-meta-<id>" sized from the id (ids have no fixed maximum here). Returns:
 * owned, free(); *len (may be NULL) gets its length. Never NULL (cc_xmalloc). */
char *cc_backend_redis_key_dup(const char *task_id, size_t *len);

#endif
