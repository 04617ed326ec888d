/* Result backend dispatch: pick the implementation from result_backend, and build the one
 * record per state that Python Celery's backend would write.
 *
 * Design: implementations only move bytes (store(task_id, meta)); what goes into the meta
 * (key order, date_done, group_id/parent_id presence, result_extended fields) is decided
 * here once, for the master (NotRegistered, expired, WorkerLostError) and the pool
 * children (STARTED, SUCCESS, FAILURE, RETRY) alike.
 *
 * Retries live here, not in the implementations: a store that fails on the connection is
 * retried the way Celery's RedisBackend.ensure() does (retry_policy, see backend.h) in a pool
 * child, and once at once in the master. A store the server refused (an error reply such as
 * OOM or READONLY: is_refused) is not retried, as ensure() retries only connection errors;
 * the caller decides (an acks_late message is requeued, and that requeue counts towards
 * worker_max_redeliveries, redeliver.h).
 *
 * Invariants: the none backend never encodes anything (hot path stays allocation-free);
 * date_done is naive UTC (5.2 style) for READY states and null otherwise.
 *
 * Reference: celery-wire.md §3.1 (states), §3.2 (redis meta), §3.3 (exceptions).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "log.h"
#include "url.h"
#include "util.h"

int cc_backend_open(const struct cc_config *cfg, struct cc_backend **out, struct cc_err *err)
{
    const char *url = cfg->result_backend;

    *out = NULL;
    if (url == NULL || url[0] == '\0' || strcmp(url, "none") == 0 || strcmp(url, "disabled") == 0) {
        *out = cc_backend_none_new();
        return *out ? CC_OK : cc_err_set(err, CC_ENOMEM, "out of memory");
    }
    if (strncmp(url, "redis://", 8) == 0 || strncmp(url, "rediss://", 9) == 0 ||
        strncmp(url, "unix://", 7) == 0)
        return cc_backend_redis_new(url, cfg->result_expires_s, out, err);
    if (strncmp(url, "db+", 3) == 0) /* [pgb] Celery's database backend on Postgres */
        return cc_backend_pg_new(url, cfg->result_expires_s, out, err);
    {
        char *m = cc_url_redact(url); /* [issue 14] never a password in an error */
        int rc = cc_err_set(
            err, CC_EUNSUPP,
            "result backend not supported (use redis://, db+postgresql:// or none): %.60s", m);

        free(m);
        return rc;
    }
}

void cc_backend_after_fork(struct cc_backend *b)
{
    if (b != NULL)
        b->ops->after_fork(b);
}

void cc_backend_free(struct cc_backend *b)
{
    if (b != NULL)
        b->ops->destroy(b);
}

void cc_backend_set_patient(struct cc_backend *b, bool is_patient)
{
    if (b != NULL)
        b->is_patient = is_patient;
}

static void backend_sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* One store with retries. Retry n (0-based) waits min(interval_start + n * interval_step,
 * interval_max) = 0 s, 1 s, 1 s, ... as kombu's retry_over_time does with Celery's policy;
 * each attempt reconnects (the implementation drops a connection that failed). */
static int backend_attempt(struct cc_backend *b, bool is_key, const char *id, const char *meta,
                           size_t len, struct cc_err *err)
{
    return is_key ? b->ops->set(b, id, meta, len, err) : b->ops->store(b, id, meta, len, err);
}

/* `id` is a task id (ops->store), or a whole key when is_key (ops->set, [canvas]). */
static int backend_store_retrying(struct cc_backend *b, bool is_key, const char *task_id,
                                  const char *meta, size_t len, struct cc_err *err)
{
    int max_retries = b->is_patient ? CC_BACKEND_RETRY_MAX : 1;
    int64_t deadline_us = cc_mono_us() + (int64_t)CC_BACKEND_RETRY_BUDGET_MS * 1000;
    int rc;

    b->is_refused = false;
    rc = backend_attempt(b, is_key, task_id, meta, len, err);

    for (int n = 0; rc == CC_EBACKEND && !b->is_refused && n < max_retries; n++) {
        int64_t wait_ms = n == 0 ? 0 : 1000;

        if (!b->is_failing) {
            if (b->is_patient)
                cc_warn("result backend: %s; retrying for up to %d s", err ? err->msg : "error",
                        CC_BACKEND_RETRY_BUDGET_MS / 1000);
            else
                cc_warn("result backend: %s; retrying once", err ? err->msg : "error");
            b->is_failing = true;
        }
        if (b->is_patient && cc_mono_us() + wait_ms * 1000 > deadline_us)
            break;
        backend_sleep_ms(wait_ms);
        rc = backend_attempt(b, is_key, task_id, meta, len, err);
    }
    if (rc == CC_OK && b->is_failing) {
        cc_warn("result backend: stores succeed again");
        b->is_failing = false;
    }
    return rc;
}

int cc_backend_store(struct cc_backend *b, const struct cc_result *r, struct cc_err *err)
{
    char *meta = NULL;
    size_t len = 0;
    int rc;

    if (b->is_none)
        return CC_OK;
    rc = cc_result_encode(r, &meta, &len, err);
    if (rc == CC_OK)
        rc = backend_store_retrying(b, false, r->task_id, meta, len, err);
    free(meta);
    return rc;
}

int cc_backend_set(struct cc_backend *b, const char *key, const char *value, size_t len,
                   struct cc_err *err)
{
    if (b->is_none || b->ops->set == NULL)
        return CC_OK;
    return backend_store_retrying(b, true, key, value, len, err);
}

static bool backend_is_ready(const char *status)
{
    return strcmp(status, "SUCCESS") == 0 || strcmp(status, "FAILURE") == 0 ||
           strcmp(status, "REVOKED") == 0;
}

int cc_backend_store_state(struct cc_backend *b, const struct cc_config *cfg,
                           const struct cc_task_request *req, const json_t *args,
                           const json_t *kwargs, const char *status, const json_t *result,
                           const char *traceback, const json_t *children, struct cc_err *err)
{
    struct cc_result r;

    if (b->is_none)
        return CC_OK;
    memset(&r, 0, sizeof(r));
    r.task_id = req->id;
    r.status = status;
    r.result = result;
    r.traceback = traceback;
    r.children = children;
    r.date_done_us = backend_is_ready(status) ? cc_now_us() : 0;
    r.date_done_with_offset = false; /* Celery 5.2: naive utcnow().isoformat() */
    r.group_id = req->group;
    r.parent_id = req->parent_id;
    if (cfg->result_extended) {
        r.extended = true;
        r.name = req->task;
        r.args = args;
        r.kwargs = kwargs;
        r.worker = req->hostname;
        r.retries = req->retries;
        r.queue = req->delivery_info.routing_key;
    }
    return cc_backend_store(b, &r, err);
}

int cc_backend_store_exc(struct cc_backend *b, const struct cc_config *cfg,
                         const struct cc_task_request *req, const json_t *args,
                         const json_t *kwargs, const char *status, const char *exc_module,
                         const char *exc_type, const char *exc_arg, struct cc_err *err)
{
    json_t *exc;
    int rc;

    if (b->is_none)
        return CC_OK;
    exc = cc_result_exc_new(exc_module, exc_type, json_pack("[s]", exc_arg));
    if (exc == NULL)
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    rc = cc_backend_store_state(b, cfg, req, args, kwargs, status, exc, NULL, NULL, err);
    json_decref(exc);
    return rc;
}
