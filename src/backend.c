/* Result backend dispatch: pick the implementation from result_backend, and build the one
 * record per state that Python Celery's backend would write.
 *
 * Design: implementations only move bytes (store(task_id, meta)); what goes into the meta
 * (key order, date_done, group_id/parent_id presence, result_extended fields) is decided
 * here once, for the master (NotRegistered, expired, WorkerLostError) and the pool
 * children (STARTED, SUCCESS, FAILURE, RETRY) alike.
 *
 * Invariants: the none backend never encodes anything (hot path stays allocation-free);
 * date_done is naive UTC (5.2 style) for READY states and null otherwise.
 *
 * Reference: celery-wire.md §3.1 (states), §3.2 (redis meta), §3.3 (exceptions).
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "util.h"

int cc_backend_open(const struct cc_config *cfg, struct cc_backend **out, struct cc_err *err)
{
    const char *url = cfg->result_backend;

    *out = NULL;
    if (url == NULL || url[0] == '\0' || strcmp(url, "none") == 0 || strcmp(url, "disabled") == 0) {
        *out = cc_backend_none_new();
        return *out ? CC_OK : cc_err_set(err, CC_ENOMEM, "out of memory");
    }
    if (strncmp(url, "rediss://", 9) == 0)
        return cc_err_set(err, CC_EUNSUPP,
                          "rediss:// needs hiredis >= 1.0 with TLS; Debian 12 ships 0.14");
    if (strncmp(url, "redis://", 8) == 0 || strncmp(url, "unix://", 7) == 0)
        return cc_backend_redis_new(url, cfg->result_expires_s, out, err);
    return cc_err_set(err, CC_EUNSUPP, "result backend not supported (use redis:// or none): %.60s",
                      url);
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

int cc_backend_store(struct cc_backend *b, const struct cc_result *r, struct cc_err *err)
{
    char *meta = NULL;
    size_t len = 0;
    int rc;

    if (b->is_none)
        return CC_OK;
    rc = cc_result_encode(r, &meta, &len, err);
    if (rc == CC_OK)
        rc = b->ops->store(b, r->task_id, meta, len, err);
    free(meta);
    return rc;
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
