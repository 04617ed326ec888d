/* celeryc task ABI: how a C function becomes a Celery task.
 *
 * Adding a task is one table row plus its function:
 *
 *     // tasks/demo.c
 *     static int demo_add(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
 *                         json_t **result)
 *     {
 *         const json_t *x = cc_task_arg(ctx, 0), *y = cc_task_arg(ctx, 1);
 *         if (!json_is_integer(x) || !json_is_integer(y))
 *             return cc_task_raise(ctx, "builtins", "TypeError", "add() needs two integers");
 *         *result = json_integer(json_integer_value(x) + json_integer_value(y));
 *         return CC_OK;
 *     }
 *     const struct cc_task_entry cc_task_demo_add = {
 *         .name = "demo.add", .run = demo_add, .signature = "x, y",
 *     };
 *
 *     // tasks/table.c: add &cc_task_demo_add to cc_task_table[].
 *
 * The worker decodes the Celery message, binds args/kwargs against `signature` exactly as
 * Python binds a call (raising TypeError with Python's wording on wrong arity or unknown
 * keywords), calls `run` in an executor (a forked child by default), and stores what it
 * returns the way Python Celery's result backend does.
 *
 * Outcomes. `run` returns one of:
 *   CC_OK            success; *result is the return value (owned by the worker from then on;
 *                    leave it NULL to return None).
 *   CC_TASK_FAILED   via cc_task_raise*(): the task raised an exception. Python's
 *                    AsyncResult.get() re-raises exc_module.exc_type(*exc_args).
 *   CC_TASK_RETRY    via cc_task_retry(): republish with retries+1 (see cc_task_retry).
 *   CC_TASK_REJECT   via cc_task_reject(): like celery.exceptions.Reject.
 *   CC_TASK_IGNORE   via cc_task_ignore(): like celery.exceptions.Ignore.
 * Any other negative code is reported as a FAILURE with exc_type "RuntimeError" and the
 * status name as message, so a bug in a task never takes the worker down silently.
 *
 * Memory. Arguments and the request are borrowed and valid during `run` only. Use
 * cc_task_alloc() for scratch memory: it is released when `run` returns. jansson values a
 * task creates follow jansson's rules (json_object_set_new steals, json_object_get borrows).
 *
 * Threads and fork. `run` executes in a forked child of the worker (default pool), with its
 * own connections, or in a thread of the worker process (--pool threads) or in the master
 * itself (--pool solo); a task may block, but must not fork without exec, install signal
 * handlers, or keep static state that is not thread-safe.
 *
 * Time limits (Celery's time_limit / soft_time_limit: the message's `timelimit`, else the
 * entry's, else the worker's --time-limit / --soft-time-limit). At the soft limit the worker
 * flags the task (prefork: SIGUSR1 to the child, whose handler is installed without
 * SA_RESTART, so a blocking sleep(), read() or poll() returns early with EINTR). A task that
 * can clean up polls cc_task_soft_limit_exceeded() (after EINTR, or in its loop) and returns
 * whatever it wants to store, like a Python task catching SoftTimeLimitExceeded. A task that
 * never asks ends as FAILURE with billiard.exceptions.SoftTimeLimitExceeded(), whatever it
 * returned, as the exception would have unwound a Python task. At the hard limit the child
 * is killed (SIGKILL) and the task stored as FAILURE with
 * billiard.exceptions.TimeLimitExceeded(<limit>); the threads and solo pools cannot enforce
 * hard limits (the worker warns at start).
 */
#ifndef CELERYC_TASK_H
#define CELERYC_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "celeryc/status.h"

/* Tri-state for per-task options that fall back to the worker-wide setting when unset.
 * Zero means unset so a designated initializer leaves them at the global default. */
enum cc_tristate {
    CC_DEFAULT = 0,
    CC_NO = 1,
    CC_YES = 2,
};

/* max_retries special values (Celery: default 3, None = forever). */
#define CC_MAX_RETRIES_DEFAULT 0  /* 3, as Celery */
#define CC_MAX_RETRIES_NONE    -1 /* no retries at all */
#define CC_MAX_RETRIES_FOREVER -2 /* Celery's max_retries=None */

/* Everything the worker knows about the message being executed. All pointers are borrowed
 * and valid during `run` only; absent optional fields are NULL (strings), -1 (group_index)
 * or 0 (time limits). */
struct cc_task_request {
    const char *id;        /* task id (uuid) */
    const char *task;      /* registered task name */
    const char *shadow;    /* display name override, or NULL */
    const char *root_id;   /* first task of the workflow (own id when none) */
    const char *parent_id; /* task that published this one, or NULL */
    const char *group;     /* group id for group/chord members, or NULL */
    int group_index;       /* position in a chord header, -1 if none */
    int retries;           /* 0 on the first delivery */
    const char *eta;       /* ISO-8601 as sent, or NULL */
    const char *expires;   /* ISO-8601 as sent, or NULL */
    double time_limit_s;   /* hard limit in seconds, 0 = none */
    double soft_time_limit_s;
    const char *hostname; /* this worker's nodename, e.g. "celery@host" */
    const char *origin;   /* publisher, e.g. "gen1234@host", or NULL */
    const char *reply_to; /* AMQP reply_to property, or NULL */
    const char *correlation_id;
    int protocol; /* 1 or 2: the Celery message protocol it arrived in */
    struct {
        const char *exchange;
        const char *routing_key;
        int priority;
        bool redelivered;
    } delivery_info;
    const json_t *headers; /* every application header as a JSON object (v1: {}) */
    const json_t *embed;   /* {"callbacks", "errbacks", "chain", "chord"} (may be {}) */
    /* The AMQP basic properties as Python's task sees them in self.request.properties
     * (kombu's message.properties: content_type, content_encoding, delivery_mode, priority,
     * correlation_id, reply_to, app_id, application_headers, ...), or NULL if the worker does
     * not provide them. */
    const json_t *properties;
};

struct cc_task_ctx;

/* A task function. `args` is a JSON array and `kwargs` a JSON object, both borrowed. */
typedef int (*cc_task_fn)(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                          json_t **result);

/* One row of the task table. Zero-initialised fields take the worker-wide default. */
struct cc_task_entry {
    const char *name; /* registered name, as the Python app names it: "proj.tasks.add" */
    cc_task_fn run;

    /* Python-style parameter list used to bind args/kwargs before `run`, e.g. "x, y",
     * "a, b=None, *, c=1", "*args, **kwargs", "x, *args". NULL: no binding, `run` sees the
     * raw args/kwargs and cc_task_arg() returns NULL. Defaults are JSON literals (None,
     * True and False are accepted too). */
    const char *signature;

    enum cc_tristate ignore_result; /* Task.ignore_result */
    enum cc_tristate acks_late;     /* Task.acks_late */
    enum cc_tristate track_started; /* Task.track_started */
    int max_retries;                /* CC_MAX_RETRIES_* or a positive count */
    double default_retry_delay_s;   /* 0 = Celery's 180 s */
    double time_limit_s;            /* 0 = worker default */
    double soft_time_limit_s;
    const char *rate_limit; /* "10/s", "100/m", NULL = none */

    /* autoretry_for, as exception type names ("builtins.ValueError"; "*" = any); NULL
     * terminated, or NULL. retry_backoff_s > 0 enables exponential backoff. */
    const char *const *autoretry_for;
    double retry_backoff_s;
    double retry_backoff_max_s;    /* 0 = Celery's 600 s */
    enum cc_tristate retry_jitter; /* default: on, as Celery */

    /* Task.acks_on_failure_or_timeout (default: task_acks_on_failure_or_timeout, True): with
     * acks_late, a failed or timed-out task's message is acked (YES) or rejected without
     * requeue, i.e. dead-lettered (NO). */
    enum cc_tristate acks_on_failure_or_timeout;
    /* Task.reject_on_worker_lost (default: task_reject_on_worker_lost, False): with
     * acks_late, a task whose executor died (WorkerLostError) is requeued instead of stored
     * as FAILURE. Beware tasks that crash their executor every time: they loop. */
    enum cc_tristate reject_on_worker_lost;
};

/* The execution context handed to `run`. Fields are read-only for tasks. */
struct cc_task_ctx {
    const struct cc_task_request *req;
    const struct cc_task_entry *entry;
    void *priv; /* the worker's; tasks never touch it */
};

/* ---- Arguments ------------------------------------------------------------------------ */

/* Bound argument number `i` of the entry's signature (in declaration order, keyword-only
 * parameters included, then *args as an array and **kwargs as an object). Borrowed.
 * Returns NULL when the entry has no signature or `i` is out of range. A missing optional
 * parameter yields its default. */
const json_t *cc_task_arg(struct cc_task_ctx *ctx, size_t i);

/* ---- Outcomes ------------------------------------------------------------------------- */

/* Raise exc_module.exc_type with a single formatted message argument:
 *     return cc_task_raise(ctx, "builtins", "ValueError", "bad value %d", v);
 * Python sees ValueError('bad value 3'). Returns CC_TASK_FAILED.
 *
 * cc_task_raise, cc_task_raise_args and cc_task_retry are macros that also pass the call's
 * __FILE__, __LINE__ and __func__ (the *_at functions): the worker stores them as the
 * frame of the Python-shaped traceback (the result's `traceback`, task-failed and
 * task-retried events), as Python would show the line that raised:
 *     Traceback (most recent call last):
 *       File "tasks/demo.c", line 120, in demo_fail
 *     ValueError: bad value 3
 * (For a call spread over several lines, gcc reports its first line, clang its last.)
 * The plain functions (no location) stay exported for binaries built against the old
 * header and for taking their address; their frame names the task:
 *       File "<celeryc>", line 0, in demo.fail */
int cc_task_raise(struct cc_task_ctx *ctx, const char *exc_module, const char *exc_type,
                  const char *fmt, ...) CC_PRINTF(4, 5);
int cc_task_raise_at(struct cc_task_ctx *ctx, const char *file, int line, const char *func,
                     const char *exc_module, const char *exc_type, const char *fmt, ...)
    CC_PRINTF(7, 8);

/* Raise with an explicit exception args list (any JSON values): Python sees
 * exc_type(*exc_args). Takes ownership of `exc_args` (a JSON array; NULL = no args).
 * Returns CC_TASK_FAILED. A macro, as cc_task_raise. */
int cc_task_raise_args(struct cc_task_ctx *ctx, const char *exc_module, const char *exc_type,
                       json_t *exc_args);
int cc_task_raise_args_at(struct cc_task_ctx *ctx, const char *file, int line, const char *func,
                          const char *exc_module, const char *exc_type, json_t *exc_args);

/* Replace the whole traceback text of the pending exception (shown by Python, never
 * parsed). When a task sets none the worker writes the Python-shaped one above, whose last
 * line is what Python prints for the exception ("ValueError: boom",
 * "app.CustomError: ('x', 42)"). */
void cc_task_set_traceback(struct cc_task_ctx *ctx, const char *text);

/* Retry request, like Task.retry(). Fields at zero take the task's defaults. */
struct cc_task_retry_opts {
    double countdown_s;     /* seconds from now; 0 and no eta -> default_retry_delay */
    const char *eta;        /* absolute ISO-8601 instead of a countdown, or NULL */
    int max_retries;        /* CC_MAX_RETRIES_* or a count; 0 = the entry's */
    const char *exc_module; /* the exception to record (and raise past max_retries), or NULL */
    const char *exc_type;
    json_t *exc_args; /* owned by the call, may be NULL */
};

/* Ask the worker to retry this task. Returns CC_TASK_RETRY, or CC_TASK_FAILED when
 * max_retries is exhausted (with the given exception, or
 * celery.exceptions.MaxRetriesExceededError as Celery words it). Always return its value. */
int cc_task_retry(struct cc_task_ctx *ctx, const struct cc_task_retry_opts *opts);
int cc_task_retry_at(struct cc_task_ctx *ctx, const char *file, int line, const char *func,
                     const struct cc_task_retry_opts *opts);

/* The raise sites recorded for tracebacks (see cc_task_raise). Define
 * CC_TASK_NO_LOCATION_MACROS before including this header to call the plain functions. */
#ifndef CC_TASK_NO_LOCATION_MACROS
#define cc_task_raise(ctx, ...) cc_task_raise_at((ctx), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define cc_task_raise_args(ctx, ...)                                                               \
    cc_task_raise_args_at((ctx), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define cc_task_retry(ctx, opts) cc_task_retry_at((ctx), __FILE__, __LINE__, __func__, (opts))
#endif

/* celery.exceptions.Reject(reason, requeue): no result stored; the message is rejected
 * (requeued when `requeue`). Returns CC_TASK_REJECT. */
int cc_task_reject(struct cc_task_ctx *ctx, const char *reason, bool requeue);

/* celery.exceptions.Ignore: ack, store nothing. Returns CC_TASK_IGNORE. */
int cc_task_ignore(struct cc_task_ctx *ctx);

/* ---- Time limits --------------------------------------------------------------------- */

/* Whether the soft time limit of this task has passed. Returning true also acknowledges it:
 * the task has seen the limit, and what it returns afterwards is stored as usual (Python:
 * `except SoftTimeLimitExceeded: cleanup(); return partial`). A task that never calls this
 * after its soft limit passed fails with SoftTimeLimitExceeded. Cheap (one atomic load);
 * safe to call in a loop. */
bool cc_task_soft_limit_exceeded(struct cc_task_ctx *ctx);

/* ---- Canvas and progress (issue #5) ------------------------------------------------- */

/* Apply a signature now, as `sig.apply_async()` does inside a Python task: `sig` is a task
 * signature, chain, group or chord dict (build it with include/celeryc/canvas.h or take it
 * from the arguments). The messages get parent_id = this task's id and root_id = its
 * root_id, and are published on the executor's confirm-mode connection before this returns;
 * the result is recorded in this task's `children` (AsyncResult.children in Python), as
 * Celery's add_trail does. Takes ownership of `sig` (also on error). `out_id` (may be NULL)
 * receives the id a Python client would get from `.apply_async().id`: the task's id, the
 * last task's for a chain, the group's id for a group, the body's for a chord.
 * Returns CC_OK; CC_EINVAL (not a signature), CC_EUNSUPP (no executor: unit tests), or the
 * broker's error after bounded retries (CC_EBROKER, CC_ETIMEDOUT, ...): the task decides
 * whether to fail, retry or carry on. */
int cc_task_send(struct cc_task_ctx *ctx, json_t *sig, char out_id[37]);

/* Task.update_state(state=state, meta=meta): store a custom state for this task now, e.g.
 * "PROGRESS" with {"current": 3, "total": 10}; a Python client reads AsyncResult.state ==
 * "PROGRESS" and AsyncResult.info == the meta. Stored even when results are ignored, as
 * Celery does. Takes ownership of `meta` (NULL = None). The final state (what `run`
 * returns) replaces it. Returns CC_OK, CC_EINVAL (state NULL or empty), CC_EUNSUPP (no
 * executor), or the backend's error. */
int cc_task_update_state(struct cc_task_ctx *ctx, const char *state, json_t *meta);

/* ---- Job runs (issue #6) ---------------------------------------------------------------
 *
 * A job run is a message that `celeryc beat` (or `celeryc jobs run`) sent for a job of the
 * job store: it carries the AMQP header `celeryc_run` (the run's id). A worker started with
 * --job-store marks the run R before `run` and S / F / P / W / X after it, and copies the
 * task's log lines (cc_task_log and friends) into the run's logs (README "Job runs in the
 * worker"). A job created with `--since-kwarg since` (the job's since_kwarg; none by default)
 * gets the kwarg `since`: the ISO-8601 UTC start of the job's last successful (S, P or W)
 * run, or None when there was none; declare it in the signature ("since=None") and read it
 * with cc_task_arg like any other argument.
 *
 * These calls are harmless no-ops outside a job run or without a job store, so the same task
 * runs unchanged from a plain `send_task`. */

/* The id of the job run this task executes, or NULL (not a job run, or no job store). */
const char *cc_task_run_id(struct cc_task_ctx *ctx);

/* Counters of the run: entries processed and entries in error so far. May be called any
 * number of times; the last values are written when the run finishes. A negative value
 * leaves that counter as it is. */
void cc_task_run_progress(struct cc_task_ctx *ctx, int64_t processed, int64_t errored);

/* The run ends as P (partial success) with this message instead of S when the task returns
 * CC_OK. The Celery result is still SUCCESS with the return value. A failure (the task
 * raises) still ends the run as F. The last message wins. */
void cc_task_run_partial(struct cc_task_ctx *ctx, const char *fmt, ...) CC_PRINTF(2, 3);

/* The run ends as W (success with a warning) with this message when the task returns CC_OK
 * and did not also report a partial success (P wins over W). The last message wins. */
void cc_task_run_warning(struct cc_task_ctx *ctx, const char *fmt, ...) CC_PRINTF(2, 3);

/* A JSON object summarising the run (counters, backlog, timings), stored with the run
 * (runs.summary; `celeryc jobs show RUN` and the --json outputs print it). Takes ownership
 * of `summary` (not an object: dropped); the last one wins; stored whatever the outcome.
 * Outside a job run it is dropped. */
void cc_task_run_summary(struct cc_task_ctx *ctx, json_t *summary);

/* ---- Memory and logging --------------------------------------------------------------- */

/* Scratch memory released when `run` returns. Never NULL (the executor exits on OOM, the
 * message goes back to the queue unacked or is marked failed as the ack policy says). */
void *cc_task_alloc(struct cc_task_ctx *ctx, size_t size);

enum cc_task_log_level {
    CC_TASK_LOG_DEBUG = 10,
    CC_TASK_LOG_INFO = 20,
    CC_TASK_LOG_WARNING = 30,
    CC_TASK_LOG_ERROR = 40,
};

/* Log a line tagged with the task name and id, like Celery's task logger:
 *   [2026-11-23 10:00:00,123: INFO/ForkPoolWorker-1] demo.add[<id>]: message
 * Inside a job run the line also goes to the run's logs (INFO and above; DEBUG too when the
 * worker logs at DEBUG), written in batches. */
void cc_task_log(struct cc_task_ctx *ctx, int level, const char *fmt, ...) CC_PRINTF(3, 4);

#define cc_task_debug(ctx, ...) cc_task_log((ctx), CC_TASK_LOG_DEBUG, __VA_ARGS__)
#define cc_task_info(ctx, ...)  cc_task_log((ctx), CC_TASK_LOG_INFO, __VA_ARGS__)
#define cc_task_warn(ctx, ...)  cc_task_log((ctx), CC_TASK_LOG_WARNING, __VA_ARGS__)
#define cc_task_error(ctx, ...) cc_task_log((ctx), CC_TASK_LOG_ERROR, __VA_ARGS__)

/* ---- The table ------------------------------------------------------------------------ */

/* tasks/table.c defines these: every task this binary can run, NULL-terminated. */
extern const struct cc_task_entry *const cc_task_table[];

#endif
