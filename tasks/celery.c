/* Celery's built-in tasks that a drop-in worker must register.
 *
 * celery/app/builtins.py registers these on every app:
 *   - celery.ping: returns 'pong' (`celery call celery.ping`, health checks).
 *   - celery.accumulate(*args, index=None): args[index], or all args (Task.replace with a
 *     group).
 *   - celery.chord_unlock(group_id, callback, interval=None, max_retries=None, result=None):
 *     sent by clients whose result backend has no native chord join (database, rpc, or a
 *     Redis backend class without it). It polls the header's results and applies the chord
 *     body with [results] once all are ready, or fails the body with ChordError.
 *
 * chord_unlock differs from Celery in one respect, on purpose: Celery retries it forever
 * (max_retries=None), so a chord whose member is lost keeps an unlock task circulating
 * until someone purges the queue. Here, when the message gives no max_retries, the bound is
 * cc_chord_unlock_max_retries(): as many polls as fit in result_expires (the header's
 * results are gone after that, so the chord could never complete), at least 3600. Past the
 * bound the body's result is stored as FAILURE ChordError("celery.chord_unlock: group <gid>
 * not ready after <n> retries") and its errbacks applied; the unlock task itself fails with
 * the same error. A failed header task fails the body with ChordError(repr(exc)), the text
 * Celery 5.2 ends up with. Results are read from this worker's result backend, which must be the
 * Redis server the header tasks store into (the client may use another backend class on it).
 *
 * celery.backend_cleanup: what Celery's beat runs daily (04:00) when the result backend
 * cannot expire results by itself. With the database backend (`db+postgresql://`) it deletes
 * the celery_taskmeta and celery_tasksetmeta rows whose date_done (naive UTC) is older than
 * result_expires, in one transaction, as DatabaseBackend.cleanup() does; with Redis (results
 * expire by TTL) or no backend it does nothing, as Celery's KeyValueStoreBackend. Returns None.
 * result_expires 0 (never): nothing is deleted.
 *
 * The other built-ins (celery.group, celery.chain, celery.chord, celery.starmap,
 * celery.chunks, celery.map) are not implemented (TODO(#5)).
 */
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "backend.h"
#include "chord.h"
#include "config.h"
#include "taskrun.h"
#include "tasks.h"

static int celery_ping(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                       json_t **result)
{
    (void)ctx;
    (void)args;
    (void)kwargs;
    *result = json_string("pong");
    return CC_OK;
}

const struct cc_task_entry cc_task_celery_ping = {
    .name = "celery.ping",
    .run = celery_ping,
    .signature = "",
};

/* ---- celery.backend_cleanup ------------------------------------------------------------- */

static int celery_backend_cleanup(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                                  json_t **result)
{
    const struct cc_config *cfg = cc_task_config();
    char conninfo[1024], secs[24], *end;
    const char *vals[1] = {secs};
    long long n_tasks = 0, n_sets = 0;
    PGconn *c;
    PGresult *res;
    int rc = CC_OK;

    (void)args;
    (void)kwargs;
    (void)result;
    if (cfg == NULL || cfg->result_backend == NULL ||
        cc_backend_pg_conninfo(cfg->result_backend, conninfo, sizeof conninfo) < 0)
        return CC_OK; /* Redis expires results itself; no backend, nothing to clean */
    if (cfg->result_expires_s <= 0) {
        cc_task_info(ctx, "result_expires is 0 (never): nothing to delete");
        return CC_OK;
    }
    snprintf(secs, sizeof secs, "%lld", (long long)cfg->result_expires_s);
    {
        /* the URL, plus bounds: a connect or a DELETE never hangs the executor forever */
        const char *const keys[] = {"dbname", "connect_timeout", "options", NULL};
        const char *const values[] = {conninfo, "10", "-c statement_timeout=600000", NULL};
        c = PQconnectdbParams(keys, values, 1);
    }
    if (PQstatus(c) != CONNECTION_OK) {
        rc =
            cc_task_raise(ctx, "builtins", "RuntimeError", "result backend: %s", PQerrorMessage(c));
        goto out;
    }
    /* One transaction, like DatabaseBackend.cleanup()'s session; date_done is naive UTC. */
    res = PQexecParams(c,
                       "WITH t AS (DELETE FROM celery_taskmeta WHERE date_done < "
                       "(now() AT TIME ZONE 'UTC') - make_interval(secs => $1::bigint) "
                       "RETURNING 1), "
                       "s AS (DELETE FROM celery_tasksetmeta WHERE date_done < "
                       "(now() AT TIME ZONE 'UTC') - make_interval(secs => $1::bigint) "
                       "RETURNING 1) "
                       "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM s)",
                       1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *msg = PQresultErrorMessage(res);
        end = strchr(msg, '\n');
        rc = cc_task_raise(ctx, "builtins", "RuntimeError", "result backend cleanup: %.*s",
                           end != NULL ? (int)(end - msg) : (int)strlen(msg), msg);
        PQclear(res);
        goto out;
    }
    n_tasks = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    n_sets = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    cc_task_info(ctx, "deleted %lld task result(s) and %lld group result(s) older than %s s",
                 n_tasks, n_sets, secs);
out:
    PQfinish(c);
    return rc;
}

const struct cc_task_entry cc_task_celery_backend_cleanup = {
    .name = "celery.backend_cleanup",
    .run = celery_backend_cleanup,
    .signature = "",
};

/* ---- celery.accumulate ----------------------------------------------------------------- */

static int celery_accumulate(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                             json_t **result)
{
    const json_t *all = cc_task_arg(ctx, 0), *kw = cc_task_arg(ctx, 1);
    const json_t *index = json_object_get(kw, "index");
    json_int_t i, n = (json_int_t)json_array_size(all);

    (void)args;
    (void)kwargs;
    if (index == NULL || json_is_null(index)) {
        *result = json_incref((json_t *)all);
        return CC_OK;
    }
    if (!json_is_integer(index))
        return cc_task_raise(ctx, "builtins", "TypeError",
                             "tuple indices must be integers or slices, not %s",
                             json_is_string(index) ? "str" : "float");
    i = json_integer_value(index);
    if (i < 0)
        i += n; /* Python's negative indexes */
    if (i < 0 || i >= n)
        return cc_task_raise(ctx, "builtins", "IndexError", "tuple index out of range");
    *result = json_incref(json_array_get(all, (size_t)i));
    return CC_OK;
}

const struct cc_task_entry cc_task_celery_accumulate = {
    .name = "celery.accumulate",
    .run = celery_accumulate,
    .signature = "*args, **kwargs",
};

/* ---- celery.chord_unlock --------------------------------------------------------------- */

/* A deep copy of `sig` with `prepend` put before its args, as sig.apply_async(prepend)
 * would: a task gets them unless immutable, a chain's first task, each member of a group,
 * a chord's header. Returns a new reference or NULL (OOM). */
static json_t *unlock_prepend(const json_t *sig, const json_t *prepend, int depth)
{
    json_t *out = json_deep_copy(sig);
    const char *type = json_string_value(json_object_get(sig, "subtask_type"));
    json_t *kw = json_object_get(out, "kwargs");

    if (out == NULL || depth > 32)
        return out;
    if (type != NULL && (strcmp(type, "chain") == 0 || strcmp(type, "group") == 0)) {
        json_t *tasks = json_object_get(kw, "tasks");
        size_t n = strcmp(type, "chain") == 0 ? (json_array_size(tasks) > 0 ? 1 : 0)
                                              : json_array_size(tasks);

        for (size_t i = 0; i < n; i++) {
            json_t *m = unlock_prepend(json_array_get(tasks, i), prepend, depth + 1);

            if (m == NULL || json_array_set_new(tasks, i, m) != 0) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    if (type != NULL && strcmp(type, "chord") == 0) {
        json_t *h = unlock_prepend(json_object_get(kw, "header"), prepend, depth + 1);

        if (h == NULL || json_object_set_new(kw, "header", h) != 0) {
            json_decref(out);
            return NULL;
        }
        return out;
    }
    if (!json_is_true(json_object_get(sig, "immutable"))) {
        json_t *args = json_copy((json_t *)prepend);
        const json_t *own = json_object_get(sig, "args");

        if (args == NULL || (json_is_array(own) && json_array_extend(args, (json_t *)own) != 0) ||
            json_object_set_new(out, "args", args) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* chord_error_from_stack from inside the task: FAILURE ChordError(text) on the body, then
 * its errbacks sent as a group with args (body_id,). */
static void unlock_fail_body(struct cc_task_ctx *ctx, struct cc_backend *be, const json_t *body,
                             const char *text)
{
    const json_t *opts = json_object_get(body, "options");
    const json_t *errbacks = json_object_get(opts, "link_error");
    const char *body_id = json_string_value(json_object_get(opts, "task_id"));
    struct cc_err err = {0};

    if (cc_chord_fail_body(be, body, text, NULL, NULL, &err) != CC_OK)
        cc_task_log(ctx, CC_TASK_LOG_ERROR, "could not fail the chord body: %s", err.msg);
    if (body_id != NULL && json_is_array(errbacks) && json_array_size(errbacks) > 0) {
        json_t *g = json_pack("{s:s, s:[], s:{s:O}, s:{}, s:s, s:b}", "task", "celery.group",
                              "args", "kwargs", "tasks", errbacks, "options", "subtask_type",
                              "group", "immutable", 0);
        json_t *pre = json_pack("[s]", body_id);
        json_t *sig = g != NULL && pre != NULL ? unlock_prepend(g, pre, 0) : NULL;

        json_decref(g);
        json_decref(pre);
        if (sig == NULL || cc_task_send(ctx, sig, NULL) != CC_OK)
            cc_task_log(ctx, CC_TASK_LOG_ERROR, "could not apply the chord body's errbacks");
    }
}

static int celery_chord_unlock(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                               json_t **result)
{
    const char *group_id = json_string_value(cc_task_arg(ctx, 0));
    const json_t *body = cc_task_arg(ctx, 1), *interval = cc_task_arg(ctx, 2);
    const json_t *max_retries = cc_task_arg(ctx, 3), *tuples = cc_task_arg(ctx, 4);
    const struct cc_config *cfg = NULL;
    struct cc_backend *be = cc_chord_executor_backend(&cfg);
    double interval_s = json_is_number(interval) ? json_number_value(interval) : 0;
    long bound;
    struct cc_err err = {0};
    json_t *results = NULL;
    char *failed_id = NULL, *failed_repr = NULL, *text = NULL;
    bool is_ready;
    int rc;

    (void)args;
    (void)kwargs;
    if (!(interval_s > 0))
        interval_s = CC_CHORD_UNLOCK_INTERVAL_S;
    if (group_id == NULL || !json_is_object(body) || !json_is_array(tuples))
        return cc_task_raise(
            ctx, "builtins", "TypeError",
            "celery.chord_unlock(group_id, callback, result=[...]): bad arguments");
    bound = json_is_integer(max_retries) ? (long)json_integer_value(max_retries)
                                         : cc_chord_unlock_max_retries(cfg, interval_s);
    rc = cc_chord_unlock_join(be, tuples, &is_ready, &results, &failed_id, &failed_repr, &err);
    if (rc == CC_EUNSUPP) {
        /* [pgb] e.g. the database backend: fail the body too, so a client waiting on it gets
         * ChordError rather than waiting forever. */
        if (be != NULL)
            unlock_fail_body(ctx, be, body, err.msg);
        return cc_task_raise(ctx, "celery.exceptions", "ChordError", "%s", err.msg);
    }
    if (rc != CC_OK || !is_ready) {
        struct cc_task_retry_opts ro = {.countdown_s = interval_s,
                                        .max_retries = CC_MAX_RETRIES_FOREVER};

        if (ctx->req->retries < bound) {
            if (rc != CC_OK) /* deps.ready() raised: retry with the exception (Celery) */
                cc_task_log(ctx, CC_TASK_LOG_WARNING, "chord %s: %s", group_id, err.msg);
            return cc_task_retry(ctx, &ro);
        }
        if (asprintf(&text, "celery.chord_unlock: group %s not ready after %d retries", group_id,
                     ctx->req->retries) < 0)
            return CC_ENOMEM;
        unlock_fail_body(ctx, be, body, text);
        rc = cc_task_raise(ctx, "celery.exceptions", "ChordError", "%s", text);
        free(text);
        return rc;
    }
    if (failed_id != NULL) {
        /* Celery words it f'Dependency {culprit.id} raised {exc!r}' only when the culprit is
         * in the backend's cache, which holds SUCCESS metas only: in practice the reason is
         * repr(exc) alone, e.g. ChordError("ValueError('boom')"). Same text here. */
        cc_task_log(ctx, CC_TASK_LOG_ERROR, "Chord '%s' raised: %s (task %s)", group_id,
                    failed_repr, failed_id);
        unlock_fail_body(ctx, be, body, failed_repr);
        free(failed_id);
        free(failed_repr);
        return CC_OK; /* Celery logs it; the unlock task itself succeeds */
    }
    {
        json_t *pre = json_pack("[o]", results);
        json_t *sig = pre != NULL ? unlock_prepend(body, pre, 0) : NULL;
        char id[37];

        json_decref(pre);
        if (sig == NULL)
            return CC_ENOMEM;
        rc = cc_task_send(ctx, sig, id);
        if (rc != CC_OK) {
            /* Celery: ChordError('Callback error: ...') on the body. */
            if (asprintf(&text, "Callback error: %s", cc_strerror(rc)) >= 0) {
                unlock_fail_body(ctx, be, body, text);
                free(text);
            }
            return cc_task_raise(ctx, "celery.exceptions", "ChordError",
                                 "could not apply the chord body: %s", cc_strerror(rc));
        }
    }
    *result = NULL;
    return CC_OK;
}

const struct cc_task_entry cc_task_celery_chord_unlock = {
    .name = "celery.chord_unlock",
    .run = celery_chord_unlock,
    .signature = "group_id, callback, interval=None, max_retries=None, result=None, **kwargs",
    .ignore_result = CC_YES,
    .max_retries = CC_MAX_RETRIES_FOREVER,
    .default_retry_delay_s = CC_CHORD_UNLOCK_INTERVAL_S,
};
