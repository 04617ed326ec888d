/* Job runs on the worker side: the executor's run tracking and batched run logs, and the
 * master's heartbeat thread (src/worker/jobrun.h; docs/ARCHITECTURE.md "Job runs (worker side)").
 *
 * Design. Each executor owns one `struct cc_jobrun` and one job store connection, opened on
 * its first job run (after fork for a prefork child), used only by its thread. Store calls
 * go through jobrun_call: on CC_EBACKEND the connection is dropped and the call tried once
 * more on a fresh one (an idle connection the server closed is the common case); when that
 * fails too the store counts as away for JOBRUN_BACKOFF_US, during which nothing connects
 * (a task logging thousands of lines during an outage costs no connect attempt per line).
 *
 * The master's `struct cc_jobkeeper` is a thread with its own connection. The event loop only
 * takes a mutex to update the slot table and to queue outcomes; the thread sends the
 * heartbeats and writes the queued outcomes, so a slow or unreachable Postgres never delays
 * acks, broker heartbeats or dispatch.
 *
 * Invariants: no store connection crosses fork() (children never touch the master's
 * keeper, whose socket they inherit but never use or close politely); a run's logs are
 * written before its outcome; an outcome is written at most once per executor attempt (the
 * store ignores a second finish of a finished run, so the master's queued retry is safe).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobrun.h"
#include "jobstore.h"
#include "log.h"
#include "pyrepr.h"
#include "util.h"

#define JOBRUN_CONNECT_TIMEOUT_S 5
#define JOBRUN_BACKOFF_US        (5 * 1000000LL)   /* store away: no connect attempt before */
#define JOBRUN_LINE_MAX          65536             /* bytes of one log line kept */
#define JOBKEEPER_PENDING_MAX    4096              /* queued outcomes, at most */
#define JOBKEEPER_GIVE_UP_US     (600 * 1000000LL) /* an outcome not written after this: dropped */

const char *cc_jobrun_header(const json_t *headers)
{
    const json_t *v = json_is_object(headers) ? json_object_get(headers, CC_JOBRUN_HEADER) : NULL;

    return json_is_string(v) && json_string_length(v) > 0 ? json_string_value(v) : NULL;
}

void cc_jobrun_warn_no_store(const char *task_id)
{
    static atomic_bool is_warned;

    if (!atomic_exchange(&is_warned, true))
        cc_warn("Task %s is a job run (header %s) but this worker has no job store "
                "(--job-store): the run is not tracked (warned once)",
                cc_log_str(task_id != NULL ? task_id : "?"), CC_JOBRUN_HEADER);
}

static const char *jobrun_level_name(int level)
{
    if (level >= CC_LOG_CRITICAL)
        return "CRITICAL";
    if (level >= CC_LOG_ERROR)
        return "ERROR";
    if (level >= CC_LOG_WARNING)
        return "WARNING";
    if (level >= CC_LOG_INFO)
        return "INFO";
    return "DEBUG";
}

/* ---- A connection with reconnect-once and backoff -------------------------------------- */

struct jobrun_conn {
    const char *url;
    struct cc_jobstore *s;
    int64_t retry_at_us; /* cc_mono_us(): no connect attempt before this */
    bool is_away;        /* the last attempt failed (logged once until it works again) */
    const char *who;     /* for the log: "executor" or "master" */
};

static void jobrun_conn_close(struct jobrun_conn *c)
{
    cc_jobstore_close(c->s);
    c->s = NULL;
}

/* The store went away (or never came): log once, back off. */
static void jobrun_conn_failed(struct jobrun_conn *c, const struct cc_err *err)
{
    jobrun_conn_close(c);
    c->retry_at_us = cc_mono_us() + JOBRUN_BACKOFF_US;
    if (!c->is_away)
        cc_warn("job store unreachable (%s): %s; run tracking degraded, retrying every %d s",
                c->who, err->msg, (int)(JOBRUN_BACKOFF_US / 1000000));
    c->is_away = true;
}

static int jobrun_conn_get(struct jobrun_conn *c, bool is_forced, struct cc_err *err)
{
    if (c->s != NULL)
        return CC_OK;
    if (c->is_away && !is_forced && cc_mono_us() < c->retry_at_us)
        return cc_err_set(err, CC_EBACKEND, "job store unreachable (next attempt in %lld ms)",
                          (long long)(c->retry_at_us - cc_mono_us()) / 1000);
    return cc_jobstore_open(c->url, JOBRUN_CONNECT_TIMEOUT_S, &c->s, err);
}

static void jobrun_conn_ok(struct jobrun_conn *c)
{
    if (c->is_away)
        cc_warn("job store reachable again (%s)", c->who);
    c->is_away = false;
}

/* One store operation, by kind, so that jobrun_call can repeat it on a fresh connection. */
enum jobrun_op {
    OP_START,
    OP_FINISH,
    OP_LOGS,
    OP_HEARTBEAT,
    OP_PROGRESS,
};

struct jobrun_args {
    const char *task_id;
    const char *hostname;
    char status;
    const char *message;
    int64_t processed, errored;
    const json_t *summary; /* NULL: none reported */
    const struct cc_run_log *lines;
    const char *const *ids;
    size_t n;
};

static int jobrun_do(struct cc_jobstore *s, enum jobrun_op op, const struct jobrun_args *a,
                     struct cc_err *err)
{
    switch (op) {
    case OP_START:
        return cc_jobstore_run_start(s, a->task_id, a->hostname, err);
    case OP_FINISH:
        return cc_jobstore_run_finish(s, a->task_id, a->status, a->message, a->processed,
                                      a->errored, a->summary, err);
    case OP_LOGS:
        return cc_jobstore_run_logs_add(s, a->lines, a->n, err);
    case OP_HEARTBEAT:
        return cc_jobstore_runs_heartbeat(s, a->ids, a->n, err);
    case OP_PROGRESS:
        return cc_jobstore_run_progress(s, a->task_id, a->processed, a->errored, err);
    }
    return cc_err_set(err, CC_EINVAL, "unknown job store operation");
}

/* Run `op`; on a connection failure, once more on a fresh connection. CC_EBACKEND when the
 * store is away (then backing off); other codes are the store's answer. A run's outcome
 * (OP_FINISH) is worth a connect attempt even while backing off. */
static int jobrun_call(struct jobrun_conn *c, enum jobrun_op op, const struct jobrun_args *a,
                       struct cc_err *err)
{
    int rc = CC_EBACKEND;

    for (int attempt = 0; attempt < 2; attempt++) {
        bool was_open = c->s != NULL;

        rc = jobrun_conn_get(c, op == OP_FINISH, err);
        if (rc == CC_OK)
            rc = jobrun_do(c->s, op, a, err);
        if (rc != CC_EBACKEND) {
            if (c->s != NULL)
                jobrun_conn_ok(c);
            return rc;
        }
        jobrun_conn_close(c);
        if (!was_open || c->is_away)
            break; /* a fresh connection failed: no point in a second one now */
    }
    jobrun_conn_failed(c, err);
    return rc;
}

/* ---- Executor ------------------------------------------------------------------------- */

struct jobrun_line {
    int64_t ts_us; /* wall clock */
    int level;
    char *message;
};

struct cc_jobrun {
    const struct cc_config *cfg;
    struct jobrun_conn conn;
    /* the run in progress (is_active) */
    bool is_active;
    char *task_id;
    char *run_id;
    char *task_name;
    struct jobrun_line lines[CC_JOBRUN_LOG_BATCH];
    size_t n_lines;
    int64_t first_us;   /* cc_mono_us() of lines[0] */
    int64_t flushed_us; /* cc_mono_us() of the run's last flush, 0: none yet */
    uint64_t n_dropped;
    /* the counters the task reported (cc_task_run_progress), written while it runs */
    int64_t processed, errored;
    int64_t progress_us; /* cc_mono_us() of the last counters written (or of the start) */
};

struct cc_jobrun *cc_jobrun_new(const struct cc_config *cfg)
{
    struct cc_jobrun *jr;

    if (cfg == NULL || cfg->job_store == NULL || cfg->job_store[0] == '\0')
        return NULL;
    jr = cc_xcalloc(1, sizeof(*jr));
    jr->cfg = cfg;
    jr->conn.url = cfg->job_store;
    jr->conn.who = "executor";
    return jr;
}

static void jobrun_lines_free(struct cc_jobrun *jr)
{
    for (size_t i = 0; i < jr->n_lines; i++)
        free(jr->lines[i].message);
    jr->n_lines = 0;
}

static void jobrun_reset(struct cc_jobrun *jr)
{
    jobrun_lines_free(jr);
    free(jr->task_id);
    free(jr->run_id);
    free(jr->task_name);
    jr->task_id = jr->run_id = jr->task_name = NULL;
    jr->n_dropped = 0;
    jr->flushed_us = 0;
    jr->processed = jr->errored = -1;
    jr->progress_us = 0;
    jr->is_active = false;
}

void cc_jobrun_free(struct cc_jobrun *jr)
{
    if (jr == NULL)
        return;
    jobrun_reset(jr);
    jobrun_conn_close(&jr->conn);
    free(jr);
}

/* Write the buffered lines in one statement. Lines the store cannot take are dropped and
 * counted: the task goes on. */
static void jobrun_flush(struct cc_jobrun *jr)
{
    struct cc_run_log batch[CC_JOBRUN_LOG_BATCH];
    struct jobrun_args a = {.lines = batch, .n = jr->n_lines};
    struct cc_err err = {0};

    if (jr->n_lines == 0)
        return;
    jr->flushed_us = cc_mono_us();
    for (size_t i = 0; i < jr->n_lines; i++)
        batch[i] = (struct cc_run_log){.ts_us = jr->lines[i].ts_us,
                                       .level = jobrun_level_name(jr->lines[i].level),
                                       .message = jr->lines[i].message,
                                       .task_id = jr->task_id};
    if (jobrun_call(&jr->conn, OP_LOGS, &a, &err) != CC_OK) {
        if (jr->n_dropped == 0)
            cc_warn("Task %s[%s]: job run %s: dropping its log lines: %s (counted; the task "
                    "goes on)",
                    cc_log_str(jr->task_name), cc_log_str(jr->task_id), cc_log_str(jr->run_id),
                    err.msg);
        jr->n_dropped += jr->n_lines;
    }
    jobrun_lines_free(jr);
}

int cc_jobrun_begin(struct cc_jobrun *jr, const struct cc_task_request *req, const char *run_id,
                    const char *hostname)
{
    struct jobrun_args a = {.task_id = req->id, .hostname = hostname};
    struct cc_err err = {0};
    int rc;

    jobrun_reset(jr);
    if (req->id == NULL || run_id == NULL)
        return CC_OK;
    jr->task_id = cc_xstrdup(req->id);
    jr->run_id = cc_xstrdup(run_id);
    jr->task_name = cc_xstrdup(req->task != NULL ? req->task : "?");
    jr->is_active = true;
    jr->progress_us = cc_mono_us();
    rc = jobrun_call(&jr->conn, OP_START, &a, &err);
    switch (rc) {
    case CC_OK:
        cc_debug("Task %s[%s]: job run %s started", cc_log_str(jr->task_name),
                 cc_log_str(jr->task_id), cc_log_str(run_id));
        return CC_OK;
    case CC_ESHUTDOWN:
        cc_info("Task %s[%s]: job run %s was cancelled before it started: not run",
                cc_log_str(jr->task_name), cc_log_str(jr->task_id), cc_log_str(run_id));
        jobrun_reset(jr);
        return CC_ESHUTDOWN;
    case CC_ENOTFOUND:
        cc_warn("Task %s[%s]: job run %s: no run with this task id in the job store; the task "
                "runs untracked",
                cc_log_str(jr->task_name), cc_log_str(jr->task_id), cc_log_str(run_id));
        jobrun_reset(jr);
        return CC_OK;
    default:
        /* Run it anyway: its logs and outcome are written if the store comes back. */
        cc_warn("Task %s[%s]: job run %s: could not mark it started: %s", cc_log_str(jr->task_name),
                cc_log_str(jr->task_id), cc_log_str(run_id), err.msg);
        return CC_OK;
    }
}

void cc_jobrun_log(struct cc_jobrun *jr, int level, const char *message)
{
    struct jobrun_line *l;
    size_t len;

    if (jr == NULL || !jr->is_active)
        return;
    if (jr->n_lines == CC_JOBRUN_LOG_BATCH)
        jobrun_flush(jr);
    l = &jr->lines[jr->n_lines];
    if (jr->n_lines++ == 0)
        jr->first_us = cc_mono_us();
    l->ts_us = cc_now_us();
    l->level = level;
    len = strlen(message);
    if (len > JOBRUN_LINE_MAX) {
        while (len > JOBRUN_LINE_MAX || ((unsigned char)message[len] & 0xC0) == 0x80)
            len--; /* cut at a UTF-8 boundary */
    }
    l->message = cc_xmalloc(len + 1);
    memcpy(l->message, message, len);
    l->message[len] = '\0';
    /* A line after a quiet second goes out at once (a task that logs rarely, or is stopped
     * or killed next, does not keep it); the lines that follow it are batched. */
    if (jr->n_lines == CC_JOBRUN_LOG_BATCH ||
        cc_mono_us() - (jr->n_lines == 1 ? jr->flushed_us : jr->first_us) >= CC_JOBRUN_LOG_WAIT_US)
        jobrun_flush(jr);
}

void cc_jobrun_progress(struct cc_jobrun *jr, int64_t processed, int64_t errored)
{
    struct jobrun_args a;
    struct cc_err err = {0};
    int64_t now;

    if (jr == NULL || !jr->is_active)
        return;
    jr->processed = processed;
    jr->errored = errored;
    now = cc_mono_us();
    if (now - jr->progress_us < CC_JOBRUN_PROGRESS_US)
        return;
    jr->progress_us = now;
    a = (struct jobrun_args){
        .task_id = jr->task_id, .processed = jr->processed, .errored = jr->errored};
    /* Best effort: the final counters are written with the outcome anyway. */
    if (jobrun_call(&jr->conn, OP_PROGRESS, &a, &err) != CC_OK)
        cc_debug("Task %s[%s]: job run %s: progress not written: %s", cc_log_str(jr->task_name),
                 cc_log_str(jr->task_id), cc_log_str(jr->run_id), err.msg);
}

/* "Type: message" of the outcome's exception (Python's format_exception_only line). */
static char *jobrun_exc_line(const struct cc_task_outcome *out)
{
    const json_t *exc = out->exc;
    const char *module = json_string_value(json_object_get(exc, "exc_module"));
    const char *type = json_string_value(json_object_get(exc, "exc_type"));
    char *line = NULL;

    if (type != NULL)
        line = cc_pyrepr_exc_line(module, type, json_object_get(exc, "exc_message"));
    if (line == NULL)
        line = cc_xstrdup(out->exc_repr != NULL ? out->exc_repr : "Exception");
    return line;
}

void cc_jobrun_end(struct cc_jobrun *jr, const struct cc_task_outcome *out)
{
    struct jobrun_args a = {
        .processed = out->run_processed, .errored = out->run_errored, .summary = out->run_summary};
    struct cc_err err = {0};
    char *owned = NULL;

    if (jr == NULL || !jr->is_active)
        return;
    a.task_id = jr->task_id;
    switch (out->status) {
    case CC_OK:
        a.status = out->run_status == 'P' || out->run_status == 'W' ? out->run_status : 'S';
        a.message = a.status != 'S' ? out->run_message : NULL;
        break;
    case CC_TASK_IGNORE:
        a.status = 'S';
        break;
    case CC_TASK_RETRY:
        a.status = 0; /* the retry message carries the run on (same task id and header) */
        break;
    case CC_TASK_REJECT:
        a.status = out->reject_requeue ? 0 : 'F';
        a.message = out->exc_repr;
        break;
    default:
        a.status = 'F';
        a.message = owned = jobrun_exc_line(out);
        break;
    }
    jobrun_flush(jr);
    if (a.status != 0 && jobrun_call(&jr->conn, OP_FINISH, &a, &err) != CC_OK)
        cc_error("Task %s[%s]: job run %s: could not record its outcome %c: %s (the run stays "
                 "R until the beat's reaper fails it)",
                 cc_log_str(jr->task_name), cc_log_str(jr->task_id), cc_log_str(jr->run_id),
                 a.status, err.msg);
    if (jr->n_dropped > 0)
        cc_warn("Task %s[%s]: job run %s: %llu log line(s) dropped (job store unreachable)",
                cc_log_str(jr->task_name), cc_log_str(jr->task_id), cc_log_str(jr->run_id),
                (unsigned long long)jr->n_dropped);
    free(owned);
    jobrun_reset(jr);
}

/* ---- Master: heartbeats and the master's outcomes -------------------------------------- */

struct jobkeeper_finish {
    struct jobkeeper_finish *next;
    char *task_id;
    char status;
    char *message;
    int64_t queued_us;
};

struct cc_jobkeeper {
    const struct cc_config *cfg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    bool is_stopping;
    int64_t stop_at_us;
    char **slots; /* task id of the job run in each slot, owned; NULL = none */
    int n_slots;
    struct jobkeeper_finish *head, *tail;
    size_t n_pending;
    /* the thread's own */
    struct jobrun_conn conn;
    int64_t interval_us;
};

static void jobkeeper_finish_free(struct jobkeeper_finish *f)
{
    free(f->task_id);
    free(f->message);
    free(f);
}

static void jobkeeper_heartbeat(struct cc_jobkeeper *k)
{
    const char **ids;
    size_t n = 0;
    struct cc_err err = {0};

    pthread_mutex_lock(&k->mu);
    ids = cc_xcalloc((size_t)k->n_slots + 1, sizeof(*ids));
    for (int i = 0; i < k->n_slots; i++)
        if (k->slots[i] != NULL)
            ids[n++] = cc_xstrdup(k->slots[i]);
    pthread_mutex_unlock(&k->mu);
    if (n > 0) {
        struct jobrun_args a = {.ids = ids, .n = n};
        int rc = jobrun_call(&k->conn, OP_HEARTBEAT, &a, &err);

        if (rc == CC_OK)
            cc_debug("job runs: heartbeat for %zu run(s)", n);
        else if (rc != CC_EBACKEND) /* CC_EBACKEND: logged once per outage */
            cc_error("job runs: heartbeat failed: %s", err.msg);
    }
    for (size_t i = 0; i < n; i++)
        free((char *)ids[i]);
    free(ids);
}

/* Write the queued outcomes; those the store could not take go back to the front. */
static void jobkeeper_write(struct cc_jobkeeper *k)
{
    struct jobkeeper_finish *list, *keep = NULL, *keep_last = NULL;
    size_t n_kept = 0;

    pthread_mutex_lock(&k->mu);
    list = k->head;
    k->head = k->tail = NULL;
    k->n_pending = 0;
    pthread_mutex_unlock(&k->mu);
    while (list != NULL) {
        struct jobkeeper_finish *f = list;
        struct jobrun_args a = {.task_id = f->task_id,
                                .status = f->status,
                                .message = f->message,
                                .processed = -1,
                                .errored = -1};
        struct cc_err err = {0};
        int rc = jobrun_call(&k->conn, OP_FINISH, &a, &err);

        list = f->next;
        f->next = NULL;
        if (rc == CC_EBACKEND && cc_mono_us() - f->queued_us < JOBKEEPER_GIVE_UP_US) {
            if (keep_last != NULL)
                keep_last->next = f;
            else
                keep = f;
            keep_last = f;
            n_kept++;
            continue;
        }
        if (rc != CC_OK)
            cc_error("job run of task %s: outcome %c not recorded: %s", cc_log_str(f->task_id),
                     f->status, err.msg);
        jobkeeper_finish_free(f);
    }
    if (keep == NULL)
        return;
    pthread_mutex_lock(&k->mu);
    keep_last->next = k->head; /* before what was queued meanwhile */
    if (k->head == NULL)
        k->tail = keep_last;
    k->head = keep;
    k->n_pending += n_kept;
    pthread_mutex_unlock(&k->mu);
}

static void jobkeeper_abs(int64_t mono_us, struct timespec *ts)
{
    ts->tv_sec = (time_t)(mono_us / 1000000);
    ts->tv_nsec = (long)(mono_us % 1000000) * 1000;
}

static void *jobkeeper_main(void *arg)
{
    struct cc_jobkeeper *k = arg;
    int64_t next_hb_us = cc_mono_us() + k->interval_us;

    cc_log_set_process("MainProcess");
    pthread_mutex_lock(&k->mu);
    for (;;) {
        int64_t now = cc_mono_us(), wake;
        struct timespec ts;

        if (k->is_stopping && (k->head == NULL || now >= k->stop_at_us))
            break;
        if (now >= next_hb_us) {
            pthread_mutex_unlock(&k->mu);
            jobkeeper_heartbeat(k);
            pthread_mutex_lock(&k->mu);
            next_hb_us = cc_mono_us() + k->interval_us;
        }
        if (k->head != NULL && (!k->conn.is_away || cc_mono_us() >= k->conn.retry_at_us)) {
            pthread_mutex_unlock(&k->mu);
            jobkeeper_write(k);
            pthread_mutex_lock(&k->mu);
        }
        wake = next_hb_us;
        if (k->head != NULL && k->conn.is_away && k->conn.retry_at_us < wake)
            wake = k->conn.retry_at_us;
        if (k->is_stopping && k->stop_at_us < wake)
            wake = k->stop_at_us;
        if (k->head != NULL && !k->conn.is_away)
            continue; /* queued meanwhile */
        jobkeeper_abs(wake, &ts);
        if (!k->is_stopping || k->head != NULL)
            pthread_cond_timedwait(&k->cv, &k->mu, &ts);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

/* At start (before the thread exists, so the loop is not running yet): apply the migrations
 * (--db-upgrade) or check the schema version. An unreachable store is not fatal (the worker
 * runs tasks; tracking catches up); a schema this build cannot use, or a failed upgrade, is. */
static int jobkeeper_schema(struct cc_jobkeeper *k, const struct cc_config *cfg, struct cc_err *err)
{
    struct cc_err e = {0};
    int from = 0, to = 0;
    int rc = jobrun_conn_get(&k->conn, true, &e);

    if (rc == CC_OK && cfg->job_store_upgrade) {
        rc = cc_jobstore_upgrade(k->conn.s, &from, &to, &e);
        if (rc != CC_OK)
            return cc_err_set(err, rc, "job store: upgrade failed: %s", e.msg);
        if (from != to)
            cc_warn("job store: schema upgraded from version %d to %d", from, to);
    } else if (rc == CC_OK) {
        rc = cc_jobstore_check_schema(k->conn.s, &e);
        if (rc != CC_OK && rc != CC_EBACKEND)
            return cc_err_set(err, CC_ECONFIG, "%s", e.msg);
    }
    if (rc != CC_OK)
        jobrun_conn_failed(&k->conn, &e);
    return CC_OK;
}

int cc_jobkeeper_start(const struct cc_config *cfg, int n_slots, struct cc_jobkeeper **out,
                       struct cc_err *err)
{
    struct cc_jobkeeper *k;
    pthread_condattr_t ca;
    sigset_t all, old;
    int rc;

    *out = NULL;
    if (cfg->job_store == NULL || cfg->job_store[0] == '\0')
        return CC_OK;
    k = cc_xcalloc(1, sizeof(*k));
    k->cfg = cfg;
    k->n_slots = n_slots;
    k->slots = cc_xcalloc((size_t)n_slots, sizeof(*k->slots));
    k->conn.url = cfg->job_store;
    k->conn.who = "master";
    k->interval_us = (int64_t)(cfg->job_run_heartbeat_s * 1e6);
    if (k->interval_us < 100000)
        k->interval_us = 100000;
    rc = jobkeeper_schema(k, cfg, err);
    if (rc != CC_OK) {
        jobrun_conn_close(&k->conn);
        free(k->slots);
        free(k);
        return rc;
    }
    pthread_mutex_init(&k->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* cc_mono_us's clock */
    pthread_cond_init(&k->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* Signals stay with the master's loop (self-pipe): block them all in this thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&k->thread, NULL, jobkeeper_main, k);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&k->cv);
        pthread_mutex_destroy(&k->mu);
        free(k->slots);
        free(k);
        return cc_err_set(err, CC_EIO, "job runs: pthread_create: %s", strerror(rc));
    }
    *out = k;
    return CC_OK;
}

void cc_jobkeeper_on_dispatch(struct cc_jobkeeper *k, int slot, const struct cc_request *r)
{
    const char *run = cc_jobrun_header(r->msg.headers);

    if (run == NULL)
        return;
    if (k == NULL) {
        cc_jobrun_warn_no_store(r->msg.id);
        return;
    }
    if (slot < 0 || slot >= k->n_slots || r->msg.id == NULL)
        return;
    pthread_mutex_lock(&k->mu);
    free(k->slots[slot]);
    k->slots[slot] = cc_xstrdup(r->msg.id);
    pthread_mutex_unlock(&k->mu);
}

void cc_jobkeeper_on_done(struct cc_jobkeeper *k, int slot)
{
    if (k == NULL || slot < 0 || slot >= k->n_slots)
        return;
    pthread_mutex_lock(&k->mu);
    free(k->slots[slot]);
    k->slots[slot] = NULL;
    pthread_mutex_unlock(&k->mu);
}

void cc_jobkeeper_finish(struct cc_jobkeeper *k, const struct cc_request *r, char status,
                         const char *message)
{
    struct jobkeeper_finish *f;

    if (k == NULL || r->msg.id == NULL || cc_jobrun_header(r->msg.headers) == NULL)
        return;
    pthread_mutex_lock(&k->mu);
    if (k->n_pending >= JOBKEEPER_PENDING_MAX) {
        pthread_mutex_unlock(&k->mu);
        cc_error("job run of task %s: outcome %c not recorded: %d outcomes already wait for "
                 "the job store",
                 cc_log_str(r->msg.id), status, JOBKEEPER_PENDING_MAX);
        return;
    }
    f = cc_xcalloc(1, sizeof(*f));
    f->task_id = cc_xstrdup(r->msg.id);
    f->status = status;
    f->message = message != NULL ? cc_xstrdup(message) : NULL;
    f->queued_us = cc_mono_us();
    if (k->tail != NULL)
        k->tail->next = f;
    else
        k->head = f;
    k->tail = f;
    k->n_pending++;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

void cc_jobkeeper_stop(struct cc_jobkeeper *k, int wait_ms)
{
    if (k == NULL)
        return;
    pthread_mutex_lock(&k->mu);
    k->is_stopping = true;
    k->stop_at_us = cc_mono_us() + (int64_t)wait_ms * 1000;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
    while (k->head != NULL) {
        struct jobkeeper_finish *f = k->head;

        k->head = f->next;
        cc_error("job run of task %s: outcome %c not recorded before exit (the beat's reaper "
                 "fails the run)",
                 cc_log_str(f->task_id), f->status);
        jobkeeper_finish_free(f);
    }
    for (int i = 0; i < k->n_slots; i++)
        free(k->slots[i]);
    free(k->slots);
    jobrun_conn_close(&k->conn);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
}
