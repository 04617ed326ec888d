/* Running one task from the table: argument binding, the task API behind
 * include/celeryc/task.h, and the outcome the worker turns into a result and events.
 *
 * Executors call cc_taskrun_invoke() (in the forked child for the prefork pool). It never
 * touches the broker or the backend: what to store or publish is decided by the caller from
 * the returned outcome.
 */
#ifndef CELERYC_TASKRUN_H
#define CELERYC_TASKRUN_H

#include <stdatomic.h>
#include <stdbool.h>

#include <jansson.h>

#include "celeryc/task.h"

struct cc_task_outcome {
    int status;      /* CC_OK, CC_TASK_FAILED, CC_TASK_RETRY, CC_TASK_REJECT, CC_TASK_IGNORE */
    json_t *result;  /* owned; the return value on CC_OK (JSON null when the task gave none) */
    json_t *exc;     /* owned; {"exc_type","exc_message","exc_module"} on FAILED/RETRY */
    char *exc_repr;  /* owned; "ValueError('boom')" on FAILED/RETRY */
    char *traceback; /* owned; Python-style traceback text on FAILED/RETRY */
    /* CC_TASK_RETRY */
    double retry_countdown_s; /* resolved countdown when no eta */
    char *retry_eta;          /* owned, or NULL */
    /* CC_TASK_REJECT */
    bool reject_requeue;
    double runtime_s; /* wall time spent in run(), monotonic */
    /* [canvas] owned JSON array of result tuples of what the task applied with
     * cc_task_send (Celery's request.children), or NULL when it sent nothing. */
    json_t *children;
    /* [jobrun] What the task reported for its job run (cc_task_run_*): 'P', 'W' or 0 (none),
     * its message (owned, or NULL), and the counters (-1: not reported). */
    char run_status;
    char *run_message;
    int64_t run_processed, run_errored;
    json_t *run_summary; /* owned JSON object (cc_task_run_summary), or NULL */
};

/* [canvas] What an executor provides to cc_task_send / cc_task_update_state (taskrun never
 * touches the broker or the backend itself). Set per thread with cc_taskrun_set_hooks. */
struct cc_task_hooks {
    /* Apply `sig` (borrowed) for the running request `req`: publish it (confirmed) and append
     * its result tuple(s) to `children` (a JSON array); fill out_id (may be NULL). */
    int (*send)(void *ud, const struct cc_task_request *req, const json_t *sig, json_t *children,
                char *out_id, struct cc_err *err);
    /* Store `state` with result `meta` (borrowed, never NULL) and the children so far. */
    int (*update_state)(void *ud, const struct cc_task_request *req, const char *state,
                        const json_t *meta, const json_t *children, struct cc_err *err);
    void *ud;
    /* [jobrun] The job run the task executes (cc_task_run_id), or NULL; then `log` (may be
     * NULL) receives each line the task logs, formatted, with its level (CC_TASK_LOG_*). */
    const char *run_id;
    void (*log)(void *ud, int level, const char *message);
    /* [jobrun] The run's counters after each cc_task_run_progress (may be NULL). */
    void (*progress)(void *ud, int64_t processed, int64_t errored);
};

/* The hooks cc_taskrun_invoke's tasks use on the calling thread (NULL: none; the calls then
 * return CC_EUNSUPP). `h` is borrowed until replaced. */
void cc_taskrun_set_hooks(const struct cc_task_hooks *h);

/* [stats] The configuration of the worker running tasks: the pool sets it once before any
 * executor starts (NULL until then, and in unit tests). celeryc's own task families read
 * settings from it (tasks/stats.c: broker_url and its TLS options, job_store). Borrowed. */
struct cc_config;
void cc_taskrun_set_config(const struct cc_config *cfg);
const struct cc_config *cc_task_config(void);

/* Find a task by registered name in cc_task_table. Borrowed; NULL if unknown.
 * The first call builds a hash index (not thread-safe; the pool calls it once before any
 * thread starts, after which lookups are read-only and safe from any thread). */
const struct cc_task_entry *cc_taskrun_lookup(const char *name);

/* Number of entries in cc_task_table. */
size_t cc_taskrun_count(void);

/* Bind args/kwargs against e->signature (TypeError with Python's wording on mismatch, e.g.
 * "add() takes 2 positional arguments but 3 were given", "add() missing 1 required
 * positional argument: 'y'", "add() got an unexpected keyword argument 'z'"), run the task,
 * and fill `out` (caller's storage, fully overwritten). Returns out->status. */
int cc_taskrun_invoke(const struct cc_task_entry *e, const struct cc_task_request *req,
                      const json_t *args, const json_t *kwargs, struct cc_task_outcome *out);

void cc_taskrun_outcome_deinit(struct cc_task_outcome *o);

/* The Python-shaped traceback celeryc writes for exc_module.exc_type(*exc_args) raised in
 * task `task_name` (src/worker/taskrun.c, "Tracebacks"): one frame, File "<file>", line <line>, in
 * <func>, or File "<celeryc>", line 0, in <task_name> when `file` is NULL (the worker raised
 * on the task's behalf: time limits, lost executors), then Python's last line. Owned. */
char *cc_taskrun_traceback(const char *task_name, const char *file, int line, const char *func,
                           const char *exc_module, const char *exc_type, const json_t *exc_args);

/* The soft-time-limit flag cc_taskrun_invoke() reads on the calling thread (NULL: none). The
 * executor sets it once per thread: a prefork child points it at the flag its SIGUSR1
 * handler sets, a pool thread at the flag the master sets; the executor clears the flag
 * before each job. A flag still set when the task returns, and not acknowledged through
 * cc_task_soft_limit_exceeded(), turns the outcome into FAILURE SoftTimeLimitExceeded(). */
void cc_taskrun_set_soft_limit_flag(atomic_int *flag);

/* Resolve the per-task ack options against the worker-wide values (tristate DEFAULT). */
bool cc_taskrun_acks_on_failure_or_timeout(const struct cc_task_entry *e, bool dflt);
bool cc_taskrun_reject_on_worker_lost(const struct cc_task_entry *e, bool dflt);

/* Validate every entry's signature once at start-up (unit tests walk the whole table).
 * Returns CC_OK or CC_EINVAL naming the first bad entry in err. */
int cc_taskrun_table_check(struct cc_err *err);

#endif
