/* Execution pools: children (or threads) that run tasks and store their results, as
 * billiard's do; time limits, recycling, and the synthesised reports of killed children.
 *
 * Design. The master owns one job pipe per executor (it writes, the executor blocks
 * reading) and one report pipe shared by all of them (they write fixed-size reports,
 * atomically since a report is smaller than PIPE_BUF; the master reads them in batches). A
 * job record is
 *     struct job_hdr (fixed: seq, ints, flags, time limits, string lengths, json length)
 *     13 strings, each NUL-terminated (length UINT32_MAX = absent)
 *     JSON text [args, kwargs, embed, headers]
 * and is written with one write(2) (the executor is idle, so a record larger than the pipe
 * buffer simply completes as it reads). The executor rebuilds a struct cc_task_request
 * pointing into its receive buffer, runs cc_taskrun_invoke(), stores STARTED/SUCCESS/FAILURE/
 * RETRY itself through its own backend connection (opened after fork), logs the outcome as
 * "ForkPoolWorker-N" the way Celery's trace does, then reports {slot, seq, status, runtime,
 * retry eta, is_exiting} to the master, which acks and counts. The same loop
 * (pool_exec_loop) runs in forked children (prefork), in N threads of the master process
 * (threads: each with its own backend object, "ThreadPoolExecutor-0_N") and inline in the
 * master (solo).
 *
 * Time limits are the master's (cc_pool_tick, billiard's TimeoutHandler): per busy executor,
 * soft = Celery's warning + SIGUSR1 (threads: the thread's flag; solo: a POSIX timer signals
 * the master itself), caught by a flag-only handler without SA_RESTART that taskrun reads
 * (cc_task_soft_limit_exceeded); hard (prefork only) = Celery's error + SIGKILL, and a report
 * with status CC_POOL_TIME_LIMIT queued in p->synth, returned first by the next
 * cc_pool_read_reports. Recycling (max_tasks_per_child, max_memory_per_child) is the
 * child's decision after a job: it flags its report is_exiting and exits EX_RECYCLE.
 *
 * Invariants: no connection crosses fork(): a child closes the broker socket, the other
 * children's job pipes, the report pipe's read end and the signal pipe, and drops the
 * backend connection. A child ignores SIGINT (the master decides about Ctrl+C) and gets
 * SIGKILL when the master dies (PR_SET_PDEATHSIG). A child exits when its job pipe hits EOF
 * (warm shutdown). A report always precedes the child's exit, so the master drains reports
 * before reaping; a child reaped while busy lost its job (WorkerLostError). Every dispatched
 * job is reported exactly once: by its executor, or by p->synth when killed at its hard limit
 * (the slot is then no longer busy, so a late report from the killed child is dropped, and
 * n_busy counts the synthesised report until it is read). A retiring or killed child is
 * never handed another job (is_retiring / closed job pipe). A replacement whose fork()
 * fails is retried every CC_POOL_RESPAWN_INTERVAL_MS (cc_pool_respawn), so a slot never
 * stays dead. [poolsize] The slot arrays are allocated once for cap slots and never move
 * (pool threads keep pointers into kids); pool_grow takes slots from [n, cap) or reuses
 * removed ones whose executor is gone, pool_shrink only closes job pipes (an executor exits
 * when idle), so a busy executor is never killed and every job is still reported once.
 * A child's result stores are patient (backend.c: Celery's retry_policy, ~20 s),
 * and a record it cannot run still stores a FAILURE for its task id. Pool threads block every
 * signal and share only read-only state (cfg, task index) and atomics with the master.
 *
 * Reference: celery-wire.md §3.1-3.3 (states stored by the child), §6.2 (ack points are the
 * master's), §6.7 (signals); billiard/pool.py mark_as_worker_lost, TimeoutHandler,
 * Worker.workloop (maxtasks, max_memory_per_child); celery/worker/request.py on_timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "canvas.h"
#include "chord.h"
#include "isotime.h"
#include "jobrun.h" /* [jobrun] */
#include "log.h"
#include "pool.h"
#include "pyrepr.h"
#include "result.h"
#include "signals.h"
#include "taskrun.h"
#include "util.h"

/* ---- Job records --------------------------------------------------------------------- */

enum {
    JOB_S_ID,
    JOB_S_TASK,
    JOB_S_SHADOW,
    JOB_S_ROOT_ID,
    JOB_S_PARENT_ID,
    JOB_S_GROUP,
    JOB_S_ETA,
    JOB_S_EXPIRES,
    JOB_S_ORIGIN,
    JOB_S_REPLY_TO,
    JOB_S_CORRELATION_ID,
    JOB_S_EXCHANGE,
    JOB_S_ROUTING_KEY,
    JOB_NSTR
};

#define JOB_F_REDELIVERED   0x1u
#define JOB_F_IGNORE_RESULT 0x2u
#define JOB_F_TRACK_STARTED 0x4u
#define JOB_F_EVENT_TEXT    0x8u  /* [events] put the result / exception text in the report */
#define JOB_F_ACKS_LATE     0x10u /* [canvas] unacked until the report: a failed publish requeues */
#define JOB_ABSENT          UINT32_MAX
/* Largest job record a child accepts (a larger length means a corrupt header). It follows
 * from the largest message the config accepts: the record re-dumps the body's JSON with
 * non-ASCII as \u escapes and floats as repr() (a 4-byte UTF-8 character becomes 12 bytes,
 * "1e15" becomes "1000000000000000.0"), so it can reach about 4x the body, plus the headers and
 * strings, which one AMQP content header frame bounds. 4 x 256 MiB + 16 MiB fits payload_len's
 * uint32_t. */
#define JOB_MAX_BYTES ((uint32_t)(4u * CC_POOL_MAX_MESSAGE_BYTES + 16u * 1024u * 1024u))

struct job_hdr {
    uint32_t payload_len; /* bytes after this header */
    uint32_t seq;
    int32_t group_index;
    int32_t retries;
    int32_t protocol;
    int32_t priority;
    uint32_t flags;
    uint32_t json_len;
    double time_limit_s;
    double soft_time_limit_s;
    uint32_t str_len[JOB_NSTR];
};

static void pool_reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    *buf = cc_xrealloc(*buf, n);
    *cap = n;
}

/* Frame `r` into p->buf. Returns the record length. */
static size_t pool_frame(struct cc_pool *p, const struct cc_request *r, uint32_t seq)
{
    const struct cc_msg *m = &r->msg;
    const char *s[JOB_NSTR] = {
        [JOB_S_ID] = m->id,
        [JOB_S_TASK] = m->task,
        [JOB_S_SHADOW] = m->shadow,
        [JOB_S_ROOT_ID] = m->root_id,
        [JOB_S_PARENT_ID] = m->parent_id,
        [JOB_S_GROUP] = m->group,
        [JOB_S_ETA] = m->eta,
        [JOB_S_EXPIRES] = m->expires,
        [JOB_S_ORIGIN] = m->origin,
        [JOB_S_REPLY_TO] = m->reply_to,
        [JOB_S_CORRELATION_ID] = m->correlation_id,
        [JOB_S_EXCHANGE] = r->exchange,
        [JOB_S_ROUTING_KEY] = r->routing_key,
    };
    struct job_hdr h;
    size_t off = sizeof(h);
    json_t *all;
    char *text;
    size_t jlen;

    memset(&h, 0, sizeof(h));
    h.seq = seq;
    h.group_index = m->group_index;
    h.retries = m->retries;
    h.protocol = m->protocol;
    h.priority = m->priority;
    h.flags = (r->redelivered ? JOB_F_REDELIVERED : 0) |
              (r->ignore_result ? JOB_F_IGNORE_RESULT : 0) |
              (r->track_started ? JOB_F_TRACK_STARTED : 0) |
              (p->is_event_text ? JOB_F_EVENT_TEXT : 0) | (r->acks_late ? JOB_F_ACKS_LATE : 0);
    h.time_limit_s = m->time_limit_s;
    h.soft_time_limit_s = m->soft_time_limit_s;
    for (int i = 0; i < JOB_NSTR; i++) {
        size_t n = s[i] ? strlen(s[i]) : 0;

        h.str_len[i] = s[i] ? (uint32_t)n : JOB_ABSENT;
        pool_reserve(&p->buf, &p->cap, off + n + 1);
        if (s[i] != NULL)
            memcpy(p->buf + off, s[i], n);
        p->buf[off + n] = '\0';
        off += n + 1;
    }
    /* One dump of [args, kwargs, embed, headers]: the child parses it once. cc_result_json_dumps
     * (json.dumps' writer) rather than json_dumpb: it reads back into the same values (floats
     * in shortest round-trip form, non-ASCII as \u escapes) and costs about a quarter of
     * jansson's per-character callback dumper, which was the master's largest single cost
     * per task. */
    all = json_array();
    json_array_append(all, m->args ? m->args : json_null());
    json_array_append(all, m->kwargs ? m->kwargs : json_null());
    json_array_append(all, m->embed ? m->embed : json_null());
    json_array_append(all, m->headers ? m->headers : json_null());
    text = cc_result_json_dumps(all);
    json_decref(all);
    if (text == NULL) {
        cc_crit("out of memory framing a job; exiting (unacked messages return to the queue)");
        _exit(70);
    }
    jlen = strlen(text);
    pool_reserve(&p->buf, &p->cap, off + jlen);
    memcpy(p->buf + off, text, jlen);
    free(text);
    h.json_len = (uint32_t)jlen;
    off += jlen;
    h.payload_len = (uint32_t)(off - sizeof(h));
    memcpy(p->buf, &h, sizeof(h));
    return off;
}

/* ---- Child side ---------------------------------------------------------------------- */

struct pool_child_state {
    struct cc_pool *p;
    int slot;
    int job_fd;
    struct cc_backend *be; /* a child's: the master's object after fork; a thread's own */
    atomic_int *soft_flag; /* cleared before each job */
    bool is_thread;
    char *buf;
    size_t cap;
    struct cc_outbox **obp;   /* [canvas] where the executor's outbox lives (lazily opened) */
    struct cc_outbox *own_ob; /* prefork child / thread: its own; solo: p->solo_ob */
    struct cc_jobrun **jrp;   /* [jobrun] its job run state (lazily), like obp */
    struct cc_jobrun *own_jr;
};

/* Prefork child and solo master: SIGUSR1 at the soft time limit sets this (billiard's
 * SIG_SOFT_TIMEOUT). Installed without SA_RESTART, so a task blocked in sleep/read/poll
 * returns with EINTR and can look at cc_task_soft_limit_exceeded(). */
static atomic_int pool_soft_flag;

static void pool_on_soft_limit(int signo)
{
    (void)signo;
    atomic_store(&pool_soft_flag, 1);
}

static int pool_install_soft_handler(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = pool_on_soft_limit;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: interrupt the task's blocking call */
    return sigaction(SIGUSR1, &sa, NULL);
}

/* Read exactly n bytes. Returns 1, 0 on clean EOF before any byte, -1 on error. */
static int pool_read_full(int fd, void *dst, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t k = read(fd, (char *)dst + got, n - got);

        if (k > 0)
            got += (size_t)k;
        else if (k == 0)
            return got == 0 ? 0 : -1;
        else if (errno != EINTR)
            return -1;
    }
    return 1;
}

static int pool_write_full(int fd, const void *src, size_t n)
{
    size_t done = 0;

    while (done < n) {
        ssize_t k = write(fd, (const char *)src + done, n - done);

        if (k > 0)
            done += (size_t)k;
        else if (k < 0 && errno != EINTR)
            return -1;
    }
    return 0;
}

/* Python's repr(float): the shortest %g that reads back to the same double. */
static void pool_float_repr(double v, char *buf, size_t size)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL && strlen(buf) + 3 < size)
        strcat(buf, ".0");
}

/* ---- [canvas] Continuations: callbacks, chain, errbacks, chord parts ------------------- */

/* The executor's outbox, opened lazily (most tasks publish nothing). */
static struct cc_outbox *pool_outbox(struct pool_child_state *cs)
{
    if (*cs->obp == NULL) {
        *cs->obp = cc_xcalloc(1, sizeof(**cs->obp));
        cc_outbox_init(*cs->obp, cs->p->o.cfg);
    }
    return *cs->obp;
}

static void pool_outbox_free(struct cc_outbox **obp)
{
    if (*obp == NULL)
        return;
    cc_outbox_close(*obp);
    free(*obp);
    *obp = NULL;
}

static bool pool_json_nonempty(const json_t *embed, const char *key)
{
    const json_t *v = embed != NULL ? json_object_get(embed, key) : NULL;

    return v != NULL && json_is_array(v) && json_array_size(v) > 0;
}

/* Carry out `plan` for `req`. Returns CC_OK or the outbox error (err filled). */
static int pool_run_plan(struct pool_child_state *cs, const struct cc_canvas_plan *plan,
                         struct cc_err *err)
{
    if (plan->n == 0)
        return CC_OK;
    return cc_outbox_run(pool_outbox(cs), cs->be, plan, err);
}

/* A chord member finished: Celery's on_chord_part_return (after the member's own result is
 * stored); when it completed the chord, fire what cc_chord_part_return planned (the body, or
 * the body's errbacks) and then release the chord's keys. A Redis failure counts as a failed
 * store, a publish failure as a failed publish: the master requeues an acks_late member,
 * whose re-run completes the chord again (chord.h). */
static void pool_chord_part(struct pool_child_state *cs, const struct cc_task_request *req,
                            const char *state, const json_t *result, struct cc_pool_report *rep)
{
    const char *name = req->shadow ? req->shadow : req->task;
    struct cc_canvas_plan plan;
    struct cc_canvas_ctx cctx;
    struct cc_err err = {0};
    char *done = NULL;
    int rc;

    if (req->group == NULL || req->embed == NULL || json_object_get(req->embed, "chord") == NULL ||
        json_is_null(json_object_get(req->embed, "chord")))
        return;
    cc_canvas_plan_init(&plan);
    cc_outbox_ctx(pool_outbox(cs), req, &cctx);
    rc = cc_chord_part_return(cs->be, cs->p->o.cfg, req, state, result, &cctx, &plan, &done, &err);
    if (rc != CC_OK) {
        rep->store_failed = 1;
        cc_error("Task %s[%s]: chord part not recorded: %s", cc_log_str(name), cc_log_str(req->id),
                 err.msg);
    } else if (done != NULL) {
        rc = pool_run_plan(cs, &plan, &err);
        if (rc != CC_OK) {
            rep->publish_failed = 1;
            cc_error("Task %s[%s]: could not fire the chord body of group %s: %s", cc_log_str(name),
                     cc_log_str(req->id), cc_log_str(done), err.msg);
        } else if (cc_chord_done(cs->be, done, &err) != CC_OK) {
            cc_warn("Task %s[%s]: chord %s: keys not deleted (they expire): %s", cc_log_str(name),
                    cc_log_str(req->id), cc_log_str(done), err.msg);
        }
    }
    free(done);
    cc_canvas_plan_deinit(&plan);
}

/* Celery's arity_greater(errback.type.__header__, 1): the errback takes *args or more than
 * one positional parameter ("self" of a bound task not counted). An entry without a
 * signature sees raw arguments and is treated as old-style (published with the task id). */
static bool pool_errback_is_new_style(const struct cc_task_entry *e)
{
    const char *p = e->signature;
    int n = 0;
    bool is_first = true;

    if (p == NULL)
        return false;
    while (*p != '\0') {
        const char *end = p;
        int depth = 0;
        char quote = 0;

        /* One parameter up to a top-level comma (defaults may hold commas in literals). */
        while (*end != '\0' && (quote || depth > 0 || *end != ',')) {
            if (quote) {
                if (*end == '\\' && end[1] != '\0')
                    end++;
                else if (*end == quote)
                    quote = 0;
            } else if (*end == '"' || *end == '\'') {
                quote = *end;
            } else if (*end == '[' || *end == '{' || *end == '(') {
                depth++;
            } else if (*end == ']' || *end == '}' || *end == ')') {
                depth--;
            }
            end++;
        }
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p < end) {
            if (p[0] == '*' && p[1] == '*')
                break; /* **kwargs: nothing positional after it */
            if (p[0] == '*') {
                if (end - p > 1 && p[1] != ' ' && p[1] != ',')
                    return true; /* *args: argspec.varargs */
                break;           /* bare '*': keyword-only parameters follow */
            }
            if (!(is_first && end - p >= 4 && strncmp(p, "self", 4) == 0 &&
                  (end - p == 4 || p[4] == ' ' || p[4] == '=')))
                n++;
            is_first = false;
        }
        p = *end == ',' ? end + 1 : end;
    }
    return n > 1;
}

/* The failed task's request as the errback's first argument: what Celery's Context holds
 * (the message headers, the body's embed, delivery_info and the request fields). */
static json_t *pool_request_dict(const struct cc_task_request *req, const json_t *args,
                                 const json_t *kwargs)
{
    json_t *d = json_is_object(req->headers) ? json_deep_copy(req->headers) : json_object();
    const char *embed_keys[] = {"callbacks", "errbacks", "chain", "chord"};

#define PUT_STR(k, v) json_object_set_new(d, (k), (v) != NULL ? json_string(v) : json_null())
    PUT_STR("id", req->id);
    PUT_STR("task", req->task);
    PUT_STR("root_id", req->root_id);
    PUT_STR("parent_id", req->parent_id);
    PUT_STR("group", req->group);
    PUT_STR("eta", req->eta);
    PUT_STR("expires", req->expires);
    PUT_STR("hostname", req->hostname);
    PUT_STR("origin", req->origin);
    PUT_STR("reply_to", req->reply_to);
    PUT_STR("correlation_id", req->correlation_id);
#undef PUT_STR
    json_object_set_new(d, "group_index",
                        req->group_index >= 0 ? json_integer(req->group_index) : json_null());
    json_object_set_new(d, "retries", json_integer(req->retries));
    json_object_set_new(d, "args", args != NULL ? json_deep_copy(args) : json_array());
    json_object_set_new(d, "kwargs", kwargs != NULL ? json_deep_copy(kwargs) : json_object());
    json_object_set_new(d, "is_eager", json_false());
    json_object_set_new(d, "delivery_info",
                        json_pack("{s:s?,s:s?,s:o,s:b}", "exchange", req->delivery_info.exchange,
                                  "routing_key", req->delivery_info.routing_key, "priority",
                                  req->delivery_info.priority >= 0
                                      ? json_integer(req->delivery_info.priority)
                                      : json_null(),
                                  "redelivered", req->delivery_info.redelivered));
    for (size_t i = 0; i < CC_ARRAY_LEN(embed_keys); i++) {
        const json_t *v = req->embed != NULL ? json_object_get(req->embed, embed_keys[i]) : NULL;

        json_object_set_new(d, embed_keys[i], v != NULL ? json_deep_copy(v) : json_null());
    }
    return d;
}

/* Call a new-style errback in-process, as Celery's _call_task_errbacks does with
 * `errback(request, exc, traceback)` (Signature.__call__: the partial args follow, and an
 * immutable errback gets only its own). Python calls the task function directly: nothing
 * is stored for it; an exception it raises is logged. */
static void pool_call_errback(const struct cc_task_request *req, const json_t *args,
                              const json_t *kwargs, const struct cc_task_entry *e,
                              const json_t *sig, const struct cc_task_outcome *out)
{
    const json_t *opts = json_object_get(sig, "options");
    const json_t *tid = json_is_object(opts) ? json_object_get(opts, "task_id") : NULL;
    const json_t *sargs = json_object_get(sig, "args");
    const json_t *skwargs = json_object_get(sig, "kwargs");
    struct cc_task_request ereq;
    struct cc_task_outcome eo;
    json_t *eargs = json_array();
    char uuid[37];
    const char *id = uuid; /* the signature's task_id, whole (borrowed from sig), or a uuid4 */

    if (!json_is_true(json_object_get(sig, "immutable"))) {
        json_array_append_new(eargs, pool_request_dict(req, args, kwargs));
        json_array_append(eargs, out->exc != NULL ? out->exc : json_null());
        json_array_append_new(eargs,
                              out->traceback != NULL ? json_string(out->traceback) : json_null());
    }
    if (json_is_array(sargs))
        json_array_extend(eargs, (json_t *)sargs);
    if (json_is_string(tid))
        id = json_string_value(tid);
    else
        cc_uuid4(uuid);
    memset(&ereq, 0, sizeof(ereq));
    ereq.id = id;
    ereq.task = e->name;
    ereq.root_id = req->root_id != NULL ? req->root_id : req->id;
    ereq.parent_id = req->id;
    ereq.group_index = -1;
    ereq.hostname = req->hostname;
    ereq.protocol = 2;
    ereq.delivery_info.priority = -1;
    cc_taskrun_invoke(e, &ereq, eargs, json_is_object(skwargs) ? skwargs : NULL, &eo);
    if (eo.status == CC_TASK_FAILED)
        cc_error("Task %s[%s]: errback %s raised: %s",
                 cc_log_str(req->shadow ? req->shadow : req->task), cc_log_str(req->id), e->name,
                 cc_log_strn(eo.exc_repr ? eo.exc_repr : "Exception()", CC_LOG_TEXT_MAX));
    cc_taskrun_outcome_deinit(&eo);
    json_decref(eargs);
}

/* Celery's _call_task_errbacks: new-style errbacks that are tasks in our table run here,
 * the rest are applied as one group with (task_id,). */
static void pool_errbacks(struct pool_child_state *cs, const struct cc_task_request *req,
                          const json_t *args, const json_t *kwargs,
                          const struct cc_task_outcome *out, struct cc_pool_report *rep)
{
    const json_t *ebs = json_object_get(req->embed, "errbacks");
    const char *name = req->shadow ? req->shadow : req->task;
    json_t *rest = json_array();
    struct cc_canvas_plan plan;
    struct cc_canvas_ctx cctx;
    struct cc_err err = {0};
    size_t i;
    json_t *sig;
    int rc;

    json_array_foreach(ebs, i, sig)
    {
        const json_t *tn = json_is_object(sig) ? json_object_get(sig, "task") : NULL;
        const struct cc_task_entry *e =
            json_is_string(tn) ? cc_taskrun_lookup(json_string_value(tn)) : NULL;

        if (e != NULL && pool_errback_is_new_style(e))
            pool_call_errback(req, args, kwargs, e, sig, out);
        else
            json_array_append(rest, sig);
    }
    if (json_array_size(rest) > 0) {
        cc_canvas_plan_init(&plan);
        cc_outbox_ctx(pool_outbox(cs), req, &cctx);
        rc = cc_canvas_on_failure(&plan, rest, req->id, &cctx, &err);
        if (rc == CC_OK)
            rc = pool_run_plan(cs, &plan, &err);
        if (rc != CC_OK) {
            cc_error("Task %s[%s]: could not apply its errbacks: %s", cc_log_str(name),
                     cc_log_str(req->id), err.msg);
            if (rc != CC_EINVAL && rc != CC_ENOMEM)
                rep->publish_failed = 1;
        }
        cc_canvas_plan_deinit(&plan);
    }
    json_decref(rest);
}

/* [canvas] The hooks cc_task_send / cc_task_update_state use while a job runs. */
struct pool_job_hooks {
    struct pool_child_state *cs;
    const json_t *args, *kwargs;
    struct cc_jobrun *jr; /* [jobrun] the job run's state, or NULL */
};

/* [jobrun] A line the task logged, for its job run's logs. */
static void pool_hook_log(void *ud, int level, const char *message)
{
    cc_jobrun_log(((struct pool_job_hooks *)ud)->jr, level, message);
}

/* [jobrun] The counters the task reported, for its job run while it runs. */
static void pool_hook_progress(void *ud, int64_t processed, int64_t errored)
{
    cc_jobrun_progress(((struct pool_job_hooks *)ud)->jr, processed, errored);
}

/* [jobrun] The executor's job run state, made on its first job run (NULL: no job store). */
static struct cc_jobrun *pool_jobrun(struct pool_child_state *cs)
{
    if (*cs->jrp == NULL)
        *cs->jrp = cc_jobrun_new(cs->p->o.cfg);
    return *cs->jrp;
}

/* [jobrun] A job run cancelled before it started: not run; REVOKED as Celery stores a
 * revoked task, and the master acks (the report says IGNORE: no task event). */
static void pool_run_cancelled(struct pool_child_state *cs, const struct cc_task_request *req,
                               const json_t *args, const json_t *kwargs, uint32_t flags,
                               struct cc_pool_report *rep)
{
    const struct cc_config *cfg = cs->p->o.cfg;
    struct cc_err err = {0};

    cc_info("Discarding revoked task: %s[%s]", cc_log_str(req->shadow ? req->shadow : req->task),
            cc_log_str(req->id));
    rep->status = CC_TASK_IGNORE;
    if ((flags & JOB_F_IGNORE_RESULT) && !cfg->store_errors_even_if_ignored)
        return;
    if (cc_backend_store_exc(cs->be, cfg, req, args, kwargs, "REVOKED", "celery.exceptions",
                             "TaskRevokedError", "revoked", &err) != CC_OK) {
        rep->store_failed = 1;
        cc_error("Task %s[%s]: could not store REVOKED: %s", cc_log_str(req->task),
                 cc_log_str(req->id), err.msg);
    }
}

static int pool_hook_send(void *ud, const struct cc_task_request *req, const json_t *sig,
                          json_t *children, char *out_id, struct cc_err *err)
{
    struct pool_job_hooks *j = ud;
    struct cc_canvas_plan plan;
    struct cc_canvas_ctx cctx;
    int rc;

    cc_canvas_plan_init(&plan);
    cc_outbox_ctx(pool_outbox(j->cs), req, &cctx);
    rc = cc_canvas_apply(&plan, sig, NULL, NULL, &cctx, err);
    if (rc == CC_OK)
        rc = pool_run_plan(j->cs, &plan, err);
    if (rc == CC_OK && plan.children != NULL) {
        const json_t *first = json_array_get(plan.children, 0);
        const json_t *id = json_array_get(json_array_get(first, 0), 0);

        if (out_id != NULL && json_is_string(id))
            snprintf(out_id, 37, "%s", json_string_value(id));
        json_array_extend(children, plan.children);
    }
    cc_canvas_plan_deinit(&plan);
    return rc;
}

static int pool_hook_update_state(void *ud, const struct cc_task_request *req, const char *state,
                                  const json_t *meta, const json_t *children, struct cc_err *err)
{
    struct pool_job_hooks *j = ud;

    return cc_backend_store_state(j->cs->be, j->cs->p->o.cfg, req, j->args, j->kwargs, state, meta,
                                  NULL, children, err);
}

/* The chord part of a later chain step (cc_chord_chain_fail_rest). */
struct pool_chain_part {
    struct pool_child_state *cs;
    struct cc_pool_report *rep;
};

static void pool_chain_part(void *ud, const struct cc_task_request *step, const json_t *exc)
{
    struct pool_chain_part *pp = ud;

    pool_chord_part(pp->cs, step, "FAILURE", exc, pp->rep);
}

/* ---- Outcome: store, continuations, log ---------------------------------------------- */

/* FAILURE as Celery's mark_as_failure: store (unless ignored and errors are not stored),
 * chord part, then errbacks; the task's children are kept in the meta. */
static void pool_on_failure(struct pool_child_state *cs, const struct cc_task_request *req,
                            const json_t *args, const json_t *kwargs, bool store_errors,
                            const struct cc_task_outcome *out, struct cc_pool_report *rep)
{
    const struct cc_config *cfg = cs->p->o.cfg;
    const char *name = req->shadow ? req->shadow : req->task;
    struct cc_err err = {0};

    if (store_errors && cc_backend_store_state(cs->be, cfg, req, args, kwargs, "FAILURE", out->exc,
                                               out->traceback, out->children, &err) != CC_OK) {
        rep->store_failed = 1;
        cc_error("Task %s[%s]: could not store the result: %s", cc_log_str(name),
                 cc_log_str(req->id), err.msg);
    }
    pool_chord_part(cs, req, "FAILURE", out->exc, rep);
    {
        struct pool_chain_part pp = {.cs = cs, .rep = rep};

        if (cc_chord_chain_fail_rest(cs->be, cfg, req, store_errors, out->exc, out->traceback,
                                     pool_chain_part, &pp) != CC_OK)
            rep->store_failed = 1;
    }
    if (pool_json_nonempty(req->embed, "errbacks"))
        pool_errbacks(cs, req, args, kwargs, out, rep);
}

/* SUCCESS as Celery's trace: callbacks and the chain's next step applied first (so the
 * stored meta lists them in `children`), then mark_as_done (store, then the chord part).
 * A continuation that cannot be published: with acks_late nothing is stored and the report
 * says publish_failed (the master requeues the message: the task runs again); with early
 * acks the message is gone, so the task fails with the publish error, as Celery's trace
 * turns an exception from apply_async into the task's failure. */
static void pool_on_success(struct pool_child_state *cs, const struct cc_task_request *req,
                            const json_t *args, const json_t *kwargs, uint32_t flags,
                            struct cc_task_outcome *out, struct cc_pool_report *rep)
{
    const struct cc_config *cfg = cs->p->o.cfg;
    const char *name = req->shadow ? req->shadow : req->task;
    bool ignore = (flags & JOB_F_IGNORE_RESULT) != 0;
    const json_t *retval = out->result ? out->result : json_null();
    json_t *children = out->children;
    struct cc_canvas_plan plan;
    struct cc_err err = {0};
    int rc = CC_OK;

    cc_canvas_plan_init(&plan);
    if (pool_json_nonempty(req->embed, "callbacks") || pool_json_nonempty(req->embed, "chain")) {
        struct cc_canvas_ctx cctx;

        cc_outbox_ctx(pool_outbox(cs), req, &cctx);
        rc = cc_canvas_on_success(&plan, req->embed, retval, &cctx, &err);
        if (rc == CC_OK)
            rc = pool_run_plan(cs, &plan, &err);
        else if (rc != CC_ENOMEM)
            rc = CC_EINVAL; /* the embed is bad: the task fails, running it again cannot help */
        if (rc == CC_OK && plan.children != NULL && json_array_size(plan.children) > 0) {
            if (children == NULL)
                children = out->children = json_array();
            json_array_extend(children, plan.children);
        }
    }
    if (rc != CC_OK) {
        bool is_publish = rc != CC_EINVAL && rc != CC_ENOMEM;
        char msg[256];

        cc_canvas_plan_deinit(&plan);
        if (is_publish && (flags & JOB_F_ACKS_LATE)) {
            rep->publish_failed = 1;
            cc_error("Task %s[%s]: publish failed: could not apply its callbacks/chain: %s; "
                     "result not stored, the message is requeued",
                     cc_log_str(name), cc_log_str(req->id), err.msg);
            return;
        }
        snprintf(msg, sizeof(msg), "%s", err.msg);
        json_decref(out->exc);
        free(out->exc_repr);
        out->exc = cc_result_exc_new(is_publish ? "kombu.exceptions" : "builtins",
                                     is_publish ? "OperationalError" : "ValueError",
                                     json_pack("[s]", msg));
        out->exc_repr = cc_pyrepr_exc(is_publish ? "OperationalError" : "ValueError",
                                      json_object_get(out->exc, "exc_message"));
        if (is_publish)
            rep->publish_failed = 1;
        cc_error(
            "Task %s[%s] raised unexpected: %s", cc_log_str(name), cc_log_str(req->id),
            cc_log_strn(out->exc_repr ? out->exc_repr : "OperationalError()", CC_LOG_TEXT_MAX));
        rep->status = out->status = CC_TASK_FAILED;
        pool_on_failure(cs, req, args, kwargs, !ignore || cfg->store_errors_even_if_ignored, out,
                        rep);
        return;
    }
    cc_canvas_plan_deinit(&plan);
    if (!ignore && cc_backend_store_state(cs->be, cfg, req, args, kwargs, "SUCCESS", retval, NULL,
                                          children, &err) != CC_OK) {
        rep->store_failed = 1;
        cc_error("Task %s[%s]: could not store the result: %s", cc_log_str(name),
                 cc_log_str(req->id), err.msg);
    }
    pool_chord_part(cs, req, "SUCCESS", retval, rep);
    if (cc_log_enabled(CC_LOG_INFO)) {
        char *repr = cc_pyrepr(retval, 0, 1024);
        char rt[40];

        pool_float_repr(out->runtime_s, rt, sizeof(rt));
        cc_info("Task %s[%s] succeeded in %ss: %s", cc_log_str(name), cc_log_str(req->id), rt,
                repr ? repr : "?");
        free(repr);
    }
}

static void pool_child_outcome(struct pool_child_state *cs, const struct cc_task_request *req,
                               const json_t *args, const json_t *kwargs, uint32_t flags,
                               struct cc_task_outcome *out, struct cc_pool_report *rep)
{
    const struct cc_config *cfg = cs->p->o.cfg;
    struct cc_backend *be = cs->be;
    const char *name = req->shadow ? req->shadow : req->task;
    bool ignore = (flags & JOB_F_IGNORE_RESULT) != 0;
    bool store_errors = !ignore || cfg->store_errors_even_if_ignored;
    struct cc_err err = {0};
    char rt[40];
    int rc = CC_OK;

    /* Celery's trace: callbacks only on success; errbacks and the chord part on failure;
     * nothing for Retry (an intermediate state), Reject or Ignore (trace.py handle_reject /
     * handle_ignore store nothing and apply nothing). */
    switch (out->status) {
    case CC_OK:
        pool_on_success(cs, req, args, kwargs, flags, out, rep);
        return;
    case CC_TASK_RETRY: {
        json_t *children = json_pack("[[[s,n],n]]", req->id);

        if (store_errors)
            rc = cc_backend_store_state(be, cfg, req, args, kwargs, "RETRY", out->exc,
                                        out->traceback, children, &err);
        json_decref(children);
        if (out->retry_eta != NULL)
            snprintf(rep->retry_eta, sizeof(rep->retry_eta), "%s", out->retry_eta);
        rep->retry_countdown_s = out->retry_countdown_s;
        if (out->retry_eta != NULL)
            cc_info("Task %s[%s] retry: Retry at %s: %s", cc_log_str(name), cc_log_str(req->id),
                    out->retry_eta,
                    cc_log_strn(out->exc_repr ? out->exc_repr : "None", CC_LOG_TEXT_MAX));
        else {
            pool_float_repr(out->retry_countdown_s, rt, sizeof(rt));
            cc_info("Task %s[%s] retry: Retry in %ss: %s", cc_log_str(name), cc_log_str(req->id),
                    rt, cc_log_strn(out->exc_repr ? out->exc_repr : "None", CC_LOG_TEXT_MAX));
        }
        break;
    }
    case CC_TASK_REJECT:
        rep->reject_requeue = out->reject_requeue;
        cc_info("Task %s[%s] rejected (requeue=%s)", cc_log_str(name), cc_log_str(req->id),
                out->reject_requeue ? "True" : "False");
        break;
    case CC_TASK_IGNORE:
        break;
    default: /* CC_TASK_FAILED and any bug code taskrun folded into a failure */
        pool_on_failure(cs, req, args, kwargs, store_errors, out, rep);
        if (out->traceback != NULL) {
            /* Celery prints the traceback after the line; drop its final newline. Its
             * exception line may quote the wire (a keyword name): cut like the repr. */
            const char *tb = cc_log_strn(out->traceback, CC_LOG_TEXT_MAX);
            int tb_len = (int)strlen(tb);

            while (tb_len > 0 && tb[tb_len - 1] == '\n')
                tb_len--;
            cc_error("Task %s[%s] raised unexpected: %s\n%.*s", cc_log_str(name),
                     cc_log_str(req->id),
                     cc_log_strn(out->exc_repr ? out->exc_repr : "Exception()", CC_LOG_TEXT_MAX),
                     tb_len, tb);
        } else {
            cc_error("Task %s[%s] raised unexpected: %s", cc_log_str(name), cc_log_str(req->id),
                     cc_log_strn(out->exc_repr ? out->exc_repr : "Exception()", CC_LOG_TEXT_MAX));
        }
        return;
    }
    if (rc != CC_OK) {
        rep->store_failed = 1;
        cc_error("Task %s[%s]: could not store the result: %s", cc_log_str(name),
                 cc_log_str(req->id), err.msg);
    }
}

/* Copy at most `keep` bytes of s (length len) to dst, NUL-terminated; when s is longer, cut
 * at a UTF-8 boundary and end with `tail`. Returns the bytes written (without the NUL). */
static size_t pool_put_cut(char *dst, const char *s, size_t len, size_t keep, const char *tail)
{
    size_t tl = strlen(tail), k;

    if (len <= keep) {
        memcpy(dst, s, len);
        dst[len] = '\0';
        return len;
    }
    k = keep > tl ? keep - tl : 0;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    memcpy(dst, s, k);
    memcpy(dst + k, tail, tl + 1);
    return k + tl;
}

/* [events] "repr\0traceback\0" for task-succeeded / task-failed / task-retried. The result
 * repr is saferepr(retval, 1024) as Celery's trace sends it. Celery sends the exception repr
 * and the traceback whole; the report must stay below PIPE_BUF, so they are cut to fit. */
static void pool_event_text(const struct cc_task_outcome *out, struct cc_pool_report *rep)
{
    const size_t budget = sizeof(rep->ev_text) - 2; /* two NULs */
    char *repr = NULL;
    const char *first = NULL, *second = "";
    size_t len1, len2, keep1, n;

    if (out->status == CC_OK) {
        repr = cc_pyrepr(out->result ? out->result : json_null(), 0, 1024);
        first = repr;
    } else if (out->status == CC_TASK_RETRY || out->status == CC_TASK_FAILED) {
        first = out->exc_repr ? out->exc_repr : "Exception()";
        second = out->traceback ? out->traceback : "";
    } else {
        return;
    }
    if (first == NULL)
        first = "None";
    /* [tracebacks] when both do not fit, each keeps at least half: the repr is cut with
     * "...", the traceback with "...\n", so it keeps its frames and a Python-shaped last
     * line. */
    len1 = strlen(first);
    len2 = strlen(second);
    keep1 = len1;
    if (len1 + len2 > budget) {
        keep1 = budget - (len2 < budget / 2 ? len2 : budget / 2);
        if (keep1 > len1)
            keep1 = len1;
    }
    n = pool_put_cut(rep->ev_text, first, len1, keep1, "...") + 1;
    n += pool_put_cut(rep->ev_text + n, second, len2, budget - (n - 1), "...\n") + 1;
    rep->ev_len = (uint16_t)n;
    free(repr);
}

static const char *pool_str(const char *base, const uint32_t *len, size_t *off, int i)
{
    const char *s = base + *off;

    if (len[i] == JOB_ABSENT) {
        *off += 1;
        return NULL;
    }
    *off += len[i] + 1;
    return s;
}

/* A job record the child cannot run (a bug in the framing, not bad input: the master framed
 * it from a validated message). The master acks the message after the report, so a silent
 * failure would leave the client's get() waiting forever: store a FAILURE the client can
 * raise, RuntimeError("celeryc internal error: ..."), when the record still names the task. */
static void pool_child_corrupt(struct pool_child_state *cs, const struct cc_task_request *req,
                               const struct job_hdr *h, const char *why, struct cc_pool_report *rep)
{
    const struct cc_config *cfg = cs->p->o.cfg;
    bool ignore = (h->flags & JOB_F_IGNORE_RESULT) != 0;
    struct cc_err err = {0};
    char msg[256];

    snprintf(msg, sizeof(msg), "celeryc internal error: corrupt job record (seq %u): %s", h->seq,
             why);
    cc_crit("Task %s[%s]: %s", cc_log_str(req->task ? req->task : "?"),
            cc_log_str(req->id ? req->id : "?"), msg);
    rep->status = CC_TASK_FAILED;
    if (req->id == NULL || (ignore && !cfg->store_errors_even_if_ignored))
        return;
    if (cc_backend_store_exc(cs->be, cfg, req, NULL, NULL, "FAILURE", "builtins", "RuntimeError",
                             msg, &err) != CC_OK) {
        rep->store_failed = 1;
        cc_error("Task %s[%s]: could not store the result: %s",
                 cc_log_str(req->task ? req->task : "?"), cc_log_str(req->id), err.msg);
    }
}

/* Run one job whose payload (the bytes after its header) is at `payload`. */
static void pool_child_run(struct pool_child_state *cs, const char *payload,
                           const struct job_hdr *h, struct cc_pool_report *rep_out)
{
    const struct cc_config *cfg = cs->p->o.cfg;
    struct cc_task_request req;
    struct cc_task_outcome out;
    struct cc_pool_report rep;
    const struct cc_task_entry *e;
    const char *s[JOB_NSTR];
    json_t *all = NULL;
    json_error_t jerr;
    size_t off = 0;

    memset(&rep, 0, sizeof(rep));
    memset(&out, 0, sizeof(out));
    rep.slot = (uint32_t)cs->slot;
    rep.seq = h->seq;
    for (int i = 0; i < JOB_NSTR; i++)
        s[i] = pool_str(payload, h->str_len, &off, i);
    /* JSON_ALLOW_NUL: cc_message_decode accepted the message with it (Python's json allows
     * "\u0000" in strings), so the record the master framed from it may hold one too. */
    all = json_loadb(payload + off, h->json_len, JSON_ALLOW_NUL, &jerr);
    memset(&req, 0, sizeof(req));
    req.id = s[JOB_S_ID];
    req.task = s[JOB_S_TASK];
    req.shadow = s[JOB_S_SHADOW];
    req.root_id = s[JOB_S_ROOT_ID] ? s[JOB_S_ROOT_ID] : s[JOB_S_ID];
    req.parent_id = s[JOB_S_PARENT_ID];
    req.group = s[JOB_S_GROUP];
    req.group_index = h->group_index;
    req.retries = h->retries;
    req.eta = s[JOB_S_ETA];
    req.expires = s[JOB_S_EXPIRES];
    req.time_limit_s = h->time_limit_s;
    req.soft_time_limit_s = h->soft_time_limit_s;
    req.hostname = cs->p->o.hostname;
    req.origin = s[JOB_S_ORIGIN];
    req.reply_to = s[JOB_S_REPLY_TO];
    req.correlation_id = s[JOB_S_CORRELATION_ID];
    req.protocol = h->protocol;
    req.delivery_info.exchange = s[JOB_S_EXCHANGE];
    req.delivery_info.routing_key = s[JOB_S_ROUTING_KEY];
    req.delivery_info.priority = h->priority;
    req.delivery_info.redelivered = (h->flags & JOB_F_REDELIVERED) != 0;
    e = req.task ? cc_taskrun_lookup(req.task) : NULL;
    if (all == NULL || !json_is_array(all) || json_array_size(all) != 4 || e == NULL) {
        /* The master framed it from a validated message: this is a bug, not bad input. */
        pool_child_corrupt(cs, &req, h,
                           all == NULL ? jerr.text
                           : e == NULL ? "unknown task"
                                       : "bad shape",
                           &rep);
        goto report;
    }
    json_t *args = json_array_get(all, 0), *kwargs = json_array_get(all, 1);

    req.embed = json_array_get(all, 2);
    req.headers = json_array_get(all, 3);
    /* [jobrun] a job run is marked R first; one cancelled before it started is not run */
    const char *run_id = cfg->job_store != NULL ? cc_jobrun_header(req.headers) : NULL;
    struct cc_jobrun *jr = run_id != NULL ? pool_jobrun(cs) : NULL;
    if (jr != NULL && cc_jobrun_begin(jr, &req, run_id, cs->p->o.hostname) == CC_ESHUTDOWN) {
        pool_run_cancelled(cs, &req, args, kwargs, h->flags, &rep);
        goto report;
    }
    if ((h->flags & JOB_F_TRACK_STARTED) && !(h->flags & JOB_F_IGNORE_RESULT)) {
        json_t *started =
            json_pack("{s:I,s:s}", "pid", (json_int_t)getpid(), "hostname", cs->p->o.hostname);
        struct cc_err err = {0};

        if (cc_backend_store_state(cs->be, cfg, &req, args, kwargs, "STARTED", started, NULL, NULL,
                                   &err) != CC_OK)
            cc_error("Task %s[%s]: could not store STARTED: %s", cc_log_str(req.task),
                     cc_log_str(req.id), err.msg);
        json_decref(started);
    }
    /* A soft-limit signal for an earlier job was delivered before this one was read (the
     * master signals only a busy child, before reading its report); forget it. */
    atomic_store(cs->soft_flag, 0);
    /* [canvas] cc_task_send / cc_task_update_state from the task go through this executor. */
    struct pool_job_hooks jh = {.cs = cs, .args = args, .kwargs = kwargs, .jr = jr};
    const struct cc_task_hooks hooks = {.send = pool_hook_send,
                                        .update_state = pool_hook_update_state,
                                        .ud = &jh,
                                        .run_id = jr != NULL ? run_id : NULL, /* [jobrun] */
                                        .log = pool_hook_log,
                                        .progress = pool_hook_progress};
    cc_taskrun_set_hooks(&hooks);
    cc_taskrun_invoke(e, &req, args, kwargs, &out);
    rep.status = out.status;
    rep.runtime_s = out.runtime_s;
    pool_child_outcome(cs, &req, args, kwargs, h->flags, &out, &rep);
    /* [jobrun] the run's logs, then its outcome (after the result is stored) */
    cc_jobrun_end(jr, &out);
    if (h->flags & JOB_F_EVENT_TEXT) /* [events] */
        pool_event_text(&out, &rep);
    cc_taskrun_set_hooks(NULL);
    cc_taskrun_outcome_deinit(&out);
report:
    json_decref(all);
    *rep_out = rep;
}

/* Resident memory of this process in KiB (/proc/self/statm, what psutil reports to
 * billiard), or -1. */
static long pool_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long size = 0, resident = 0;
    long kib = -1;

    if (f == NULL)
        return -1;
    if (fscanf(f, "%lu %lu", &size, &resident) == 2)
        kib = (long)(resident * (unsigned long)sysconf(_SC_PAGESIZE) / 1024);
    fclose(f);
    return kib;
}

/* billiard's workloop: a child leaves after max_tasks_per_child jobs, or when its resident
 * memory exceeds max_memory_per_child KiB after a job (checked after each task, with
 * billiard's warning). Threads and solo never retire (Celery's pools ignore both). */
static bool pool_should_retire(const struct pool_child_state *cs, unsigned long n_done)
{
    const struct cc_config *cfg = cs->p->o.cfg;

    if (cs->is_thread || cs->p->o.is_solo)
        return false;
    if (cfg->max_tasks_per_child > 0 && n_done >= (unsigned long)cfg->max_tasks_per_child) {
        cc_debug("worker exiting after %lu tasks", n_done);
        return true;
    }
    if (cfg->max_memory_per_child_kib > 0) {
        long kib = pool_rss_kib();

        if (kib <= 0) {
            cc_error("worker unable to determine memory usage");
        } else if (kib > cfg->max_memory_per_child_kib) {
            cc_warn("child process exiting after exceeding memory limit (%ldKiB / %lldKiB)", kib,
                    (long long)cfg->max_memory_per_child_kib);
            return true;
        }
    }
    return false;
}

/* Read and run jobs until the master closes the pipe. Returns the exit status: 0 at EOF,
 * CC_POOL_EX_RECYCLE after the last job of a retiring child, 1 on a broken pipe or a
 * corrupt record. */
static int pool_exec_loop(struct pool_child_state *cs)
{
    unsigned long n_done = 0;

    pool_reserve(&cs->buf, &cs->cap, 64 * 1024);
    for (;;) {
        struct cc_pool_report rep;
        struct job_hdr h;
        ssize_t got;

        /* One read usually brings the whole record (the master writes it at once). */
        do
            got = read(cs->job_fd, cs->buf, cs->cap);
        while (got < 0 && errno == EINTR);
        if (got == 0)
            return 0; /* master closed the pipe: warm shutdown */
        if (got < 0 || (size_t)got < sizeof(h)) {
            if (got > 0 && pool_read_full(cs->job_fd, cs->buf + got, sizeof(h) - (size_t)got) == 1)
                got = (ssize_t)sizeof(h);
            else
                return 1;
        }
        memcpy(&h, cs->buf, sizeof(h));
        if (h.payload_len > JOB_MAX_BYTES)
            return 1;
        size_t total = sizeof(h) + h.payload_len;
        if (total + 1 > cs->cap)
            pool_reserve(&cs->buf, &cs->cap, total + 1);
        if ((size_t)got < total &&
            pool_read_full(cs->job_fd, cs->buf + got, total - (size_t)got) != 1)
            return 1;
        pool_child_run(cs, cs->buf + sizeof(h), &h, &rep);
        rep.is_exiting = pool_should_retire(cs, ++n_done);
        /* The report says "retiring" so the master gives this child nothing more; it
         * precedes the exit, as every report does. */
        if (pool_write_full(cs->p->report_wr, &rep, CC_POOL_REPORT_BYTES(&rep)) != 0)
            return 1; /* the master is gone */
        if (rep.is_exiting)
            return CC_POOL_EX_RECYCLE;
    }
}

static CC_NORETURN void pool_child_main(struct cc_pool *p, int slot, int job_fd, pid_t master)
{
    struct pool_child_state cs = {.p = p, .slot = slot, .job_fd = job_fd};

    cs.obp = &cs.own_ob;
    char name[48];
    int code;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != master)
        _exit(1); /* the master died before prctl took effect */
    snprintf(name, sizeof(name), "ForkPoolWorker-%d", p->kids[slot].index);
    cc_log_set_process(name);
    cc_signals_child_reset();
    if (pool_install_soft_handler() != 0)
        cc_error("sigaction(SIGUSR1): %s; soft time limits will kill this child", strerror(errno));
    cs.soft_flag = &pool_soft_flag;
    cc_taskrun_set_soft_limit_flag(&pool_soft_flag);
    /* No connection crosses fork(): drop every descriptor that belongs to the master. */
    cc_broker_forget(p->o.broker);
    if (p->solo_ob != NULL) /* [canvas] never set with prefork; no connection crosses fork */
        cc_outbox_forget(p->solo_ob);
    cc_backend_after_fork(p->o.backend);
    cs.be = p->o.backend;
    /* A child may block: retry a failed result store for up to ~20 s as Celery's pool
     * children do (RedisBackend retry_policy), rather than drop the result at once. */
    cc_backend_set_patient(p->o.backend, true);
    cc_chord_executor_set(cs.be, p->o.cfg); /* [canvas] */
    close(p->report_rd);
    for (int i = 0; i < p->n; i++)
        if (p->kids[i].job_fd >= 0)
            close(p->kids[i].job_fd);
    cs.jrp = &cs.own_jr; /* [jobrun] */
    code = pool_exec_loop(&cs);
    pool_outbox_free(cs.obp); /* [canvas] */
    /* [jobrun] */
    cc_jobrun_free(cs.own_jr);
    free(cs.buf);
    /* _exit: never run the master's atexit handlers or flush its stdio copies. */
    _exit(code);
}

/* --pool threads: one executor thread. Runs the same loop as a child, with its own
 * backend object and job pipe; logs as Celery's thread pool names its threads. Every
 * signal is blocked (set by the master around pthread_create), so signals reach the
 * master's loop. */
static void *pool_thread_main(void *arg)
{
    struct pool_child_state *cs = arg;
    struct cc_pool_child *k = &cs->p->kids[cs->slot];
    char name[48];

    snprintf(name, sizeof(name), "ThreadPoolExecutor-0_%d", cs->slot);
    cc_log_set_process(name);
    cc_taskrun_set_soft_limit_flag(cs->soft_flag);
    cc_chord_executor_set(cs->be, cs->p->o.cfg); /* [canvas] */
    if (pool_exec_loop(cs) != 0)
        cc_error("pool thread %s: job pipe broken; thread exits", cc_log_str(name));
    pool_outbox_free(cs->obp); /* [canvas] */
    /* [jobrun] */
    cc_jobrun_free(cs->own_jr);
    close(cs->job_fd);
    free(cs->buf);
    free(cs);
    atomic_store(&k->is_done, true);
    return NULL;
}

/* ---- Master side --------------------------------------------------------------------- */

pid_t (*cc_pool_fork)(void) = fork;

const char *cc_pool_kind_name(const struct cc_pool *p)
{
    return p->o.is_solo ? "solo" : p->o.is_threads ? "threads" : "prefork";
}

static int pool_spawn(struct cc_pool *p, int slot, struct cc_err *err)
{
    struct cc_pool_child *k = &p->kids[slot];
    int fds[2];
    pid_t pid, master = getpid();

    if (pipe2(fds, O_CLOEXEC) != 0)
        return cc_err_set(err, CC_EIO, "pipe: %s", strerror(errno));
    k->index = ++p->next_index; /* set before fork: the child names itself from it */
    pid = cc_pool_fork();
    if (pid < 0) {
        int e = errno;

        p->next_index--; /* no process got this number */
        close(fds[0]);
        close(fds[1]);
        return cc_err_set(err, CC_EIO, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        close(fds[1]);
        pool_child_main(p, slot, fds[0], master);
    }
    close(fds[0]);
    k->pid = pid;
    k->job_fd = fds[1];
    k->is_busy = false;
    k->is_retiring = false;
    return CC_OK;
}

/* --pool threads: start the thread of `slot` with its own backend object. */
static int pool_thread_start(struct cc_pool *p, int slot, struct cc_err *err)
{
    struct cc_pool_child *k = &p->kids[slot];
    struct pool_child_state *cs;
    sigset_t all, old;
    int fds[2], rc;

    rc = cc_backend_open(p->o.cfg, &k->be, err);
    if (rc != CC_OK)
        return rc;
    /* Threads may block like children: Celery's retry_policy for result stores. */
    cc_backend_set_patient(k->be, true);
    if (pipe2(fds, O_CLOEXEC) != 0)
        return cc_err_set(err, CC_EIO, "pipe: %s", strerror(errno));
    cs = cc_xcalloc(1, sizeof(*cs));
    cs->p = p;
    cs->slot = slot;
    cs->job_fd = fds[0];
    cs->be = k->be;
    cs->soft_flag = &k->soft_flag;
    cs->is_thread = true;
    cs->obp = &cs->own_ob;
    cs->jrp = &cs->own_jr; /* [jobrun] */
    k->index = slot;
    k->job_fd = fds[1];
    k->pid = getpid();
    atomic_init(&k->soft_flag, 0);
    atomic_init(&k->is_done, false);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&k->thread, NULL, pool_thread_main, cs);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        close(fds[0]);
        close(fds[1]);
        k->job_fd = -1;
        k->pid = 0;
        free(cs);
        return cc_err_set(err, CC_EIO, "pthread_create: %s", strerror(rc));
    }
    k->has_thread = true;
    return CC_OK;
}

/* --pool solo: the master itself receives SIGUSR1 from a timer at the soft limit. */
static int pool_solo_timer_init(struct cc_pool *p, struct cc_err *err)
{
    struct sigevent sev;

    if (pool_install_soft_handler() != 0)
        return cc_err_set(err, CC_EIO, "sigaction(SIGUSR1): %s", strerror(errno));
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGUSR1;
    if (timer_create(CLOCK_MONOTONIC, &sev, &p->solo_timer) != 0)
        return cc_err_set(err, CC_EIO, "timer_create: %s", strerror(errno));
    p->has_solo_timer = true;
    cc_taskrun_set_soft_limit_flag(&pool_soft_flag);
    return CC_OK;
}

static void pool_solo_timer_arm(struct cc_pool *p, double seconds)
{
    struct itimerspec its;
    int64_t us;

    if (!p->has_solo_timer)
        return;
    memset(&its, 0, sizeof(its));
    /* [issue 14] Through the span helper: a huge limit is no limit (the timer stays off). */
    if (seconds > 0 && cc_isotime_span_us(seconds, &us) == CC_ISOTIME_SPAN_OK) {
        its.it_value.tv_sec = (time_t)(us / 1000000);
        its.it_value.tv_nsec = (long)(us % 1000000) * 1000;
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1;
    }
    timer_settime(p->solo_timer, 0, &its, NULL);
}

int cc_pool_start(struct cc_pool *p, const struct cc_pool_opts *o, struct cc_err *err)
{
    int fds[2];
    int rc = CC_OK;

    memset(p, 0, sizeof(*p));
    p->o = *o;
    cc_taskrun_set_config(o->cfg); /* [stats] before any executor exists */
    p->n = o->n_children > 0 ? o->n_children : 1;
    if (o->is_solo)
        p->n = 1;
    p->size = p->n;
    /* [poolsize] Room for pool_grow, allocated once (calloc: untouched pages cost nothing). */
    p->n_slots_max = o->is_solo || p->n > CC_POOL_MAX_PROCESSES ? p->n : CC_POOL_MAX_PROCESSES;
    p->report_rd = p->report_wr = -1;
    p->kids = cc_xcalloc((size_t)p->n_slots_max, sizeof(*p->kids));
    p->synth = cc_xcalloc((size_t)p->n_slots_max, sizeof(*p->synth));
    for (int i = 0; i < p->n_slots_max; i++)
        p->kids[i].job_fd = -1;
    /* Build the task index now: lookups are read-only (thread-safe) from here on. */
    (void)cc_taskrun_lookup("");
    if (pipe2(fds, O_CLOEXEC) != 0)
        return cc_err_set(err, CC_EIO, "pipe: %s", strerror(errno));
    p->report_rd = fds[0];
    p->report_wr = fds[1];
    fcntl(p->report_rd, F_SETFL, fcntl(p->report_rd, F_GETFL) | O_NONBLOCK);
    if ((o->is_solo || o->is_threads) && o->cfg->time_limit_s > 0)
        cc_warn("The %s pool cannot enforce hard time limits: task_time_limit (%gs) is not "
                "applied; soft time limits are. Use --pool prefork to kill runaway tasks.",
                cc_pool_kind_name(p), o->cfg->time_limit_s);
    if (o->is_solo) {
        /* One in-process executor: slot 0 "runs" in the master, reports go through the
         * same pipe so the master's bookkeeping is identical. */
        p->kids[0].pid = getpid();
        p->kids[0].index = 0;
        cc_chord_executor_set(o->backend, o->cfg); /* [canvas] */
        return pool_solo_timer_init(p, err);
    }
    for (int i = 0; i < p->n && rc == CC_OK; i++)
        rc = o->is_threads ? pool_thread_start(p, i, err) : pool_spawn(p, i, err);
    return rc;
}

int cc_pool_idle(const struct cc_pool *p)
{
    if (p->n_busy >= p->n)
        return -1;
    for (int i = 0; i < p->n; i++) {
        const struct cc_pool_child *k = &p->kids[i];

        if (k->pid > 0 && (k->job_fd >= 0 || p->o.is_solo) && !k->is_busy && !k->is_retiring &&
            !k->is_removed)
            return i;
    }
    return -1;
}

static void pool_limit_repr(double v, bool is_int, char *buf, size_t size);

/* Whether element `i` of the message's `timelimit` header is a JSON integer: Celery stores
 * and logs the limit as the client sent it (TimeLimitExceeded(2) vs TimeLimitExceeded(2.0)). */
static bool pool_limit_is_int(const struct cc_request *r, size_t i)
{
    const json_t *tl = r->msg.headers ? json_object_get(r->msg.headers, "timelimit") : NULL;

    return json_is_integer(json_array_get(tl, i));
}

/* [issue 14] When a limit of `s` seconds armed at `now` fires, 0 = never. Python's billiard
 * compares floats (`monotonic() >= start + timeout`), so a limit of 1e300 or inf never fires,
 * nor does NaN, and a limit too small to count in microseconds fires at once. Everything
 * goes through cc_isotime_span_us: 1e300 s used to overflow int64 microseconds (undefined
 * behaviour; in practice an immediate TimeLimitExceeded(1e+300)). */
static int64_t pool_limit_at_us(int64_t now, double s)
{
    int64_t us;

    if (!(s > 0) || cc_isotime_span_us(s, &us) != CC_ISOTIME_SPAN_OK)
        return 0; /* 0, negative (the caller falls back), NaN, huge: no limit */
    return now + (us > 0 ? us : 1);
}

/* Effective limits, as Celery's Request.execute_using_pool and billiard's apply_async:
 * `timelimit` from the message, else the task's, else the pool's (the worker options). */
static void pool_arm_limits(struct cc_pool *p, struct cc_pool_child *k, const struct cc_request *r)
{
    const struct cc_task_entry *e = r->entry;
    const struct cc_config *cfg = p->o.cfg;
    int64_t now = cc_mono_us();
    double e_hard = e != NULL ? e->time_limit_s : 0, e_soft = e != NULL ? e->soft_time_limit_s : 0;

    /* [control] limits set at run time (time_limit command) replace the entry's */
    if (e != NULL && p->o.task_limits != NULL)
        (void)p->o.task_limits(p->o.task_limits_ud, e->name, &e_soft, &e_hard);

    k->req = r;
    k->is_soft_sent = false;
    k->is_hard_int = k->is_soft_int = false;
    if (r->msg.time_limit_s > 0) {
        k->hard_s = r->msg.time_limit_s;
        k->is_hard_int = pool_limit_is_int(r, 0);
    } else {
        k->hard_s = e_hard > 0 ? e_hard : cfg->time_limit_s;
    }
    if (r->msg.soft_time_limit_s > 0) {
        k->soft_s = r->msg.soft_time_limit_s;
        k->is_soft_int = pool_limit_is_int(r, 1);
    } else {
        k->soft_s = e_soft > 0 ? e_soft : cfg->soft_time_limit_s;
    }
    /* Only prefork can kill a runaway task (billiard kills the process). */
    k->hard_at_us = !p->o.is_threads && !p->o.is_solo ? pool_limit_at_us(now, k->hard_s) : 0;
    k->soft_at_us = pool_limit_at_us(now, k->soft_s);
}

int cc_pool_dispatch(struct cc_pool *p, int slot, const struct cc_request *r, uint32_t seq,
                     struct cc_err *err)
{
    struct cc_pool_child *k = &p->kids[slot];
    size_t len = pool_frame(p, r, seq);

    k->is_busy = true;
    k->seq = seq;
    p->n_busy++;
    pool_arm_limits(p, k, r);
    if (p->o.is_solo) {
        struct pool_child_state cs = {.p = p,
                                      .slot = slot,
                                      .job_fd = -1,
                                      .be = p->o.backend,
                                      .soft_flag = &pool_soft_flag,
                                      .obp = &p->solo_ob,
                                      .jrp = &p->solo_jr}; /* [jobrun] */
        struct cc_pool_report rep;
        struct job_hdr h;

        memcpy(&h, p->buf, sizeof(h));
        /* The master cannot watch itself: a timer signals the soft limit. */
        pool_solo_timer_arm(p, k->soft_s);
        pool_child_run(&cs, p->buf + sizeof(h), &h, &rep);
        pool_solo_timer_arm(p, 0);
        k->soft_at_us = 0; /* handled by the timer */
        if (atomic_load(&pool_soft_flag) != 0) {
            char lim[40];

            /* Logged late: the master was running the task when the timer fired. */
            pool_limit_repr(k->soft_s, k->is_soft_int, lim, sizeof(lim));
            cc_warn("Soft time limit (%ss) exceeded for %s[%s]", lim,
                    cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id));
        }
        if (pool_write_full(p->report_wr, &rep, CC_POOL_REPORT_BYTES(&rep)) != 0)
            return cc_err_set(err, CC_EIO, "report pipe: %s", strerror(errno));
        return CC_OK;
    }
    if (pool_write_full(k->job_fd, p->buf, len) != 0)
        return cc_err_set(err, CC_EIO, "job pipe to child %d: %s", (int)k->pid, strerror(errno));
    return CC_OK;
}

int cc_pool_report_fd(const struct cc_pool *p)
{
    return p->report_rd;
}

/* Move complete reports from the receive buffer to out[n..max). Returns the new n. */
static int pool_take_reports(struct cc_pool *p, struct cc_pool_report *out, int n, int max)
{
    size_t off = 0;

    while (p->rlen - off >= CC_POOL_REPORT_HEAD && n < max) {
        struct cc_pool_report *rep = &out[n];
        size_t size;

        /* [events] A report is its fixed part plus ev_len bytes of text. */
        memcpy(rep, p->rbuf + off, CC_POOL_REPORT_HEAD);
        if (rep->ev_len > sizeof(rep->ev_text))
            rep->ev_len = 0; /* cannot happen: children write at most ev_text */
        size = CC_POOL_REPORT_BYTES(rep);
        if (p->rlen - off < size)
            break;
        memcpy(rep->ev_text, p->rbuf + off + CC_POOL_REPORT_HEAD, rep->ev_len);
        if (rep->ev_len > 0)
            rep->ev_text[rep->ev_len - 1] = '\0';
        off += size;
        /* Ignore a report that does not match the job in flight: a child killed at its hard
         * limit may have written one just before (its job was already reported), or a
         * child misbehaves. */
        if (rep->slot < (uint32_t)p->n && p->kids[rep->slot].is_busy &&
            p->kids[rep->slot].seq == rep->seq) {
            struct cc_pool_child *k = &p->kids[rep->slot];

            k->is_busy = false;
            k->req = NULL;
            if (rep->is_exiting)
                k->is_retiring = true;
            p->n_busy--;
            n++;
        }
    }
    p->rlen -= off;
    memmove(p->rbuf, p->rbuf + off, p->rlen);
    return n;
}

int cc_pool_read_reports(struct cc_pool *p, struct cc_pool_report *out, int max)
{
    int n = 0;
    bool is_empty = false;

    /* Reports of jobs killed at their hard limit first (their slots are no longer busy). */
    while (p->n_synth > 0 && n < max) {
        out[n++] = p->synth[0];
        p->n_synth--;
        memmove(p->synth, p->synth + 1, (size_t)p->n_synth * sizeof(*p->synth));
        p->n_busy--;
    }
    n = pool_take_reports(p, out, n, max);
    while (n < max && !is_empty) {
        size_t space = sizeof(p->rbuf) - p->rlen;
        ssize_t k = read(p->report_rd, p->rbuf + p->rlen, space);

        if (k <= 0)
            break;
        p->rlen += (size_t)k;
        is_empty = (size_t)k < space; /* a short read means the pipe is drained */
        n = pool_take_reports(p, out, n, max);
    }
    return n;
}

/* ---- Time limits ---------------------------------------------------------------------- */

/* The limit as Celery logs it ("%ss" of the value: 2 -> "2", 2.0 -> "2.0"). */
static void pool_limit_repr(double v, bool is_int, char *buf, size_t size)
{
    if (is_int)
        snprintf(buf, size, "%lld", (long long)v);
    else
        pool_float_repr(v, buf, size);
}

/* billiard's on_hard_timeout: the job fails with TimeLimitExceeded, the process is killed.
 * billiard tries SIGTERM for 0.1 s first; a C task has no handler to run, so SIGKILL. */
static void pool_hard_timeout(struct cc_pool *p, int slot)
{
    struct cc_pool_child *k = &p->kids[slot];
    struct cc_pool_report *rep = &p->synth[p->n_synth++];
    char lim[40];

    pool_limit_repr(k->hard_s, k->is_hard_int, lim, sizeof(lim));
    cc_error("Hard time limit (%ss) exceeded for %s[%s]", lim,
             cc_log_str(cc_consumer_request_name(k->req)), cc_log_str(k->req->msg.id));
    if (k->pid > 0)
        kill(k->pid, SIGKILL);
    /* Never give this process another job; cc_pool_reap replaces it. */
    if (k->job_fd >= 0)
        close(k->job_fd);
    k->job_fd = -1;
    memset(rep, 0, sizeof(*rep));
    rep->slot = (uint32_t)slot;
    rep->seq = k->seq;
    rep->status = CC_POOL_TIME_LIMIT;
    rep->time_limit_s = k->hard_s;
    rep->is_limit_int = k->is_hard_int;
    rep->runtime_s = k->hard_s;
    /* The slot is free; n_busy keeps counting the job until its report is read, so a warm
     * shutdown still waits for it. The master reads it at its next pass: the poll timeout is
     * 0 while it waits (cc_pool_deadline_us), and the SIGCHLD of the kill drains reports. */
    k->is_busy = false;
    k->req = NULL;
}

void cc_pool_tick(struct cc_pool *p, int64_t now_us)
{
    if (p->kids == NULL || p->o.is_solo)
        return;
    for (int i = 0; i < p->n; i++) {
        struct cc_pool_child *k = &p->kids[i];
        char lim[40];

        if (!k->is_busy || k->req == NULL)
            continue;
        if (k->hard_at_us != 0 && now_us >= k->hard_at_us) {
            pool_hard_timeout(p, i);
        } else if (k->soft_at_us != 0 && !k->is_soft_sent && now_us >= k->soft_at_us) {
            /* Request.on_timeout(soft=True), then billiard signals the process. */
            k->is_soft_sent = true;
            pool_limit_repr(k->soft_s, k->is_soft_int, lim, sizeof(lim));
            cc_warn("Soft time limit (%ss) exceeded for %s[%s]", lim,
                    cc_log_str(cc_consumer_request_name(k->req)), cc_log_str(k->req->msg.id));
            if (p->o.is_threads)
                atomic_store(&k->soft_flag, 1);
            else if (k->pid > 0)
                kill(k->pid, SIGUSR1);
        }
    }
}

int64_t cc_pool_deadline_us(const struct cc_pool *p)
{
    int64_t next = 0;

    if (p->n_synth > 0)
        return cc_mono_us();
    if (p->kids == NULL || p->o.is_solo)
        return 0;
    for (int i = 0; i < p->n; i++) {
        const struct cc_pool_child *k = &p->kids[i];

        if (!k->is_busy)
            continue;
        if (k->hard_at_us != 0 && (next == 0 || k->hard_at_us < next))
            next = k->hard_at_us;
        if (k->soft_at_us != 0 && !k->is_soft_sent && (next == 0 || k->soft_at_us < next))
            next = k->soft_at_us;
    }
    return next;
}

void cc_pool_store_time_limit(struct cc_pool *p, const struct cc_request *r,
                              const struct cc_pool_report *rep)
{
    const struct cc_config *cfg = p->o.cfg;
    struct cc_task_request view;
    struct cc_err err = {0};
    json_t *args, *exc;

    if (r->ignore_result && !cfg->store_errors_even_if_ignored)
        return;
    args = json_array();
    json_array_append_new(args, rep->is_limit_int ? json_integer((json_int_t)rep->time_limit_s)
                                                  : json_real(rep->time_limit_s));
    exc = cc_result_exc_new("billiard.exceptions", "TimeLimitExceeded", args);
    cc_consumer_request_view(r, p->o.hostname, &view);
    /* Celery's on_timeout stores no traceback (mark_as_failure outside an except block). */
    if (cc_backend_store_state(p->o.backend, cfg, &view, r->msg.args, r->msg.kwargs, "FAILURE", exc,
                               NULL, NULL, &err) != CC_OK)
        cc_error("Task %s[%s]: could not store FAILURE: %s",
                 cc_log_str(cc_consumer_request_name(r)), cc_log_str(r->msg.id), err.msg);
    json_decref(exc);
}

int cc_pool_master_errbacks(struct cc_pool *p, const struct cc_request *r, const json_t *exc,
                            struct cc_canvas_plan *plan, struct cc_err *err)
{
    const json_t *ebs = r->msg.embed != NULL ? json_object_get(r->msg.embed, "errbacks") : NULL;
    struct cc_task_outcome out;
    struct cc_task_request view;
    struct cc_canvas_ctx cctx;
    json_t *rest, *sig;
    size_t i;
    int rc = CC_OK;

    if (!json_is_array(ebs) || json_array_size(ebs) == 0)
        return CC_OK;
    if (p->master_ob == NULL) {
        p->master_ob = cc_xcalloc(1, sizeof(*p->master_ob));
        cc_outbox_init(p->master_ob, p->o.cfg);
    }
    cc_consumer_request_view(r, p->o.hostname, &view);
    memset(&out, 0, sizeof(out));
    out.status = CC_TASK_FAILED;
    out.exc = (json_t *)exc; /* borrowed: only read */
    rest = json_array();
    json_array_foreach(ebs, i, sig)
    {
        const json_t *tn = json_is_object(sig) ? json_object_get(sig, "task") : NULL;
        const struct cc_task_entry *e =
            json_is_string(tn) ? cc_taskrun_lookup(json_string_value(tn)) : NULL;

        if (e != NULL && pool_errback_is_new_style(e))
            pool_call_errback(&view, r->msg.args, r->msg.kwargs, e, sig, &out);
        else
            json_array_append(rest, sig);
    }
    if (json_array_size(rest) > 0) {
        cc_outbox_ctx(p->master_ob, &view, &cctx);
        rc = cc_canvas_on_failure(plan, rest, view.id, &cctx, err);
    }
    json_decref(rest);
    return rc;
}

/* ---- Children's life ------------------------------------------------------------------ */

void cc_pool_human_status(int wstatus, char *buf, size_t size)
{
    if (WIFSIGNALED(wstatus)) {
        int sig = WTERMSIG(wstatus);
        const char *abbrev = sigabbrev_np(sig);

        if (abbrev != NULL)
            snprintf(buf, size, "signal %d (SIG%s)", sig, abbrev);
        else
            snprintf(buf, size, "signal %d", sig);
    } else {
        snprintf(buf, size, "exitcode %d", WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 0);
    }
}

void cc_pool_reap(struct cc_pool *p, bool respawn,
                  void (*on_lost)(void *ud, int slot, uint32_t seq, int wstatus), void *ud)
{
    int wstatus;
    pid_t pid;

    while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
        int slot = -1;

        for (int i = 0; i < p->n; i++)
            if (p->kids[i].pid == pid && !p->o.is_threads && !p->o.is_solo)
                slot = i;
        if (slot < 0)
            continue;
        struct cc_pool_child *k = &p->kids[slot];
        bool is_recycled =
            k->is_retiring && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == CC_POOL_EX_RECYCLE;

        k->pid = 0;
        k->is_retiring = false;
        if (k->job_fd >= 0)
            close(k->job_fd);
        k->job_fd = -1;
        if (k->is_busy) {
            k->is_busy = false;
            k->req = NULL;
            p->n_busy--;
            if (on_lost != NULL)
                on_lost(ud, slot, k->seq, wstatus);
        } else if (k->is_removed) { /* [poolsize] */
            cc_debug("Process ForkPoolWorker-%d (pid %d) left the pool", k->index, (int)pid);
        } else if (is_recycled) {
            /* max_tasks_per_child / max_memory_per_child: billiard says nothing above
             * debug for EX_RECYCLE. */
            cc_debug("Process ForkPoolWorker-%d (pid %d) recycled", k->index, (int)pid);
        } else if (respawn) {
            char how[64];

            cc_pool_human_status(wstatus, how, sizeof(how));
            cc_warn("Process ForkPoolWorker-%d (pid %d) exited: %s", k->index, (int)pid, how);
        }
        /* While a respawn is pending, the timer (cc_pool_respawn) replaces this one too. */
        if (respawn && p->respawn_at_us == 0 && !k->is_removed) {
            struct cc_err err = {0};

            if (pool_spawn(p, slot, &err) != CC_OK) {
                cc_error("could not replace pool process: %s; retrying every %d ms", err.msg,
                         CC_POOL_RESPAWN_INTERVAL_MS);
                p->respawn_at_us = cc_mono_us() + CC_POOL_RESPAWN_INTERVAL_MS * 1000;
                p->respawn_failures = 1;
            }
        }
    }
}

int64_t cc_pool_respawn_at_us(const struct cc_pool *p)
{
    return p->respawn_at_us;
}

void cc_pool_respawn(struct cc_pool *p, int64_t now_us)
{
    int n_failed = 0;
    struct cc_err err = {0};

    if (p->respawn_at_us == 0 || now_us < p->respawn_at_us || p->o.is_solo || p->o.is_threads)
        return;
    for (int i = 0; i < p->n; i++)
        if (p->kids[i].pid == 0 && !p->kids[i].is_removed && pool_spawn(p, i, &err) != CC_OK)
            n_failed++;
    if (n_failed == 0) {
        cc_warn("replaced pool processes after %u failed attempt(s)", p->respawn_failures);
        p->respawn_at_us = 0;
        p->respawn_failures = 0;
        return;
    }
    /* cc_pool_reap logged the first failure; then one line a minute, not one a second. */
    if (++p->respawn_failures % 60 == 0)
        cc_error("could not replace %d pool process(es): %s; still retrying every %d ms", n_failed,
                 err.msg, CC_POOL_RESPAWN_INTERVAL_MS);
    p->respawn_at_us = now_us + CC_POOL_RESPAWN_INTERVAL_MS * 1000;
}

int cc_pool_alive(const struct cc_pool *p)
{
    int n = 0;

    for (int i = 0; i < p->n; i++)
        n += p->kids[i].pid > 0;
    return n;
}

/* ---- [poolsize] Resizing (pool_grow / pool_shrink) ------------------------------------ */

int cc_pool_size(const struct cc_pool *p)
{
    return p->size;
}

int cc_pool_max_size(const struct cc_pool *p)
{
    return p->n_slots_max;
}

/* --pool threads: join the threads of removed slots that have left their loop and free
 * their backend objects, so their slots can be reused. */
static void pool_join_removed(struct cc_pool *p)
{
    for (int i = 0; p->o.is_threads && i < p->n; i++) {
        struct cc_pool_child *k = &p->kids[i];

        if (k->is_removed && k->has_thread && atomic_load(&k->is_done)) {
            pthread_join(k->thread, NULL);
            k->has_thread = false;
            k->pid = 0;
            cc_backend_free(k->be);
            k->be = NULL;
        }
    }
}

/* Whether removed `slot` can take a new executor: the old one is gone (reaped or joined),
 * has no job in flight and no synthesised report of it waits to be read (the worker's
 * running[slot] is cleared only when that report is read). */
static bool pool_slot_reusable(const struct cc_pool *p, int slot)
{
    const struct cc_pool_child *k = &p->kids[slot];

    if (!k->is_removed || k->is_busy || k->pid != 0 || k->has_thread)
        return false;
    for (int j = 0; j < p->n_synth; j++)
        if (p->synth[j].slot == (uint32_t)slot)
            return false;
    return true;
}

/* The slot for the next new executor (a reusable removed one first, lowest index), or -1. */
static int pool_free_slot(const struct cc_pool *p)
{
    for (int i = 0; i < p->n; i++)
        if (pool_slot_reusable(p, i))
            return i;
    return p->n < p->n_slots_max ? p->n : -1;
}

int cc_pool_grow(struct cc_pool *p, int n, struct cc_err *err)
{
    int n_free = p->n_slots_max - p->n;

    if (p->o.is_solo)
        return cc_err_set(err, CC_EUNSUPP, "the solo pool cannot grow");
    if (n < 0)
        return cc_err_set(err, CC_ERANGE, "cannot grow by a negative number (%d)", n);
    if (n > p->n_slots_max - p->size)
        return cc_err_set(err, CC_ERANGE, "growing by %d would make %lld processes; the most is %d",
                          n, (long long)p->size + n, p->n_slots_max);
    pool_join_removed(p);
    for (int i = 0; i < p->n; i++)
        n_free += pool_slot_reusable(p, i);
    if (n > n_free)
        return cc_err_set(err, CC_ERANGE,
                          "%d slot(s) free for %d new processes: processes removed by pool_shrink "
                          "are still finishing their tasks; try again later",
                          n_free, n);
    for (int done = 0; done < n; done++) {
        int slot = pool_free_slot(p);
        struct cc_pool_child *k = &p->kids[slot];
        int rc;

        CC_ASSERT(slot >= 0); /* counted above */
        if (slot == p->n)
            p->n++;
        k->is_removed = false;
        k->is_retiring = false;
        k->job_fd = -1;
        p->size++;
        if (p->o.is_threads) {
            rc = pool_thread_start(p, slot, err);
            if (rc != CC_OK) {
                /* A thread pool has no respawn: give the slot back and say so. */
                k->is_removed = true;
                p->size--;
                cc_backend_free(k->be);
                k->be = NULL;
                return rc;
            }
        } else if (pool_spawn(p, slot, err) != CC_OK) {
            /* A member that is not running, as after a crash whose replacement failed:
             * cc_pool_respawn retries it. */
            cc_error("could not start pool process: %s; retrying every %d ms", err->msg,
                     CC_POOL_RESPAWN_INTERVAL_MS);
            k->pid = 0;
            if (p->respawn_at_us == 0) {
                p->respawn_at_us = cc_mono_us() + CC_POOL_RESPAWN_INTERVAL_MS * 1000;
                p->respawn_failures = 1;
            }
        }
    }
    return CC_OK;
}

/* Take `slot` out of the pool: close its job pipe, so its executor leaves its loop at EOF,
 * at once when idle, else after it has reported the job in flight. */
static void pool_remove_slot(struct cc_pool *p, int slot)
{
    struct cc_pool_child *k = &p->kids[slot];

    k->is_removed = true;
    p->size--;
    if (k->job_fd >= 0)
        close(k->job_fd);
    k->job_fd = -1;
}

/* Shrink order: 0 = members that run nothing useful (not running: awaiting a respawn; or
 * idle and about to exit anyway: recycling, killed at a hard limit), 1 = idle, 2 = busy. */
static int pool_shrink_rank(const struct cc_pool_child *k)
{
    if (k->pid == 0 || (!k->is_busy && (k->is_retiring || k->job_fd < 0)))
        return 0;
    return k->is_busy ? 2 : 1;
}

int cc_pool_shrink(struct cc_pool *p, int n, struct cc_err *err)
{
    int left = n;
    bool is_pending = false;

    if (p->o.is_solo)
        return cc_err_set(err, CC_EUNSUPP, "the solo pool cannot shrink");
    if (n < 0)
        return cc_err_set(err, CC_ERANGE, "cannot shrink by a negative number (%d)", n);
    if (n > p->size - 1)
        return cc_err_set(err, CC_ERANGE, "cannot shrink a pool of %d by %d: one process must stay",
                          p->size, n);
    /* Highest slots first, so the members stay packed at the low end. */
    for (int rank = 0; rank <= 2 && left > 0; rank++)
        for (int i = p->n - 1; i >= 0 && left > 0; i--)
            if (!p->kids[i].is_removed && pool_shrink_rank(&p->kids[i]) == rank) {
                pool_remove_slot(p, i);
                left--;
            }
    CC_ASSERT(left == 0); /* n < size */
    /* A respawn due only for removed slots has nothing left to do. */
    for (int i = 0; i < p->n; i++)
        is_pending |= !p->kids[i].is_removed && p->kids[i].pid == 0;
    if (!is_pending && !p->o.is_threads) {
        p->respawn_at_us = 0;
        p->respawn_failures = 0;
    }
    return CC_OK;
}

/* Mark finished executors gone: reap children, join threads that left their loop. */
static void pool_collect(struct cc_pool *p)
{
    int wstatus;
    pid_t pid;

    if (p->o.is_threads) {
        for (int i = 0; i < p->n; i++) {
            struct cc_pool_child *k = &p->kids[i];

            if (k->has_thread && atomic_load(&k->is_done)) {
                pthread_join(k->thread, NULL);
                k->has_thread = false;
                k->pid = 0;
            }
        }
        return;
    }
    while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0)
        for (int i = 0; i < p->n; i++)
            if (p->kids[i].pid == pid)
                p->kids[i].pid = 0;
}

/* Wait up to timeout_ms (-1: no limit) for all children to exit, or until is_cold_now(ud)
 * (may be NULL) says to stop waiting. Returns true when none is left. */
static bool pool_wait_all(struct cc_pool *p, int timeout_ms, bool (*is_cold_now)(void *ud),
                          void *ud)
{
    int64_t deadline = cc_mono_us() + (int64_t)timeout_ms * 1000;

    for (;;) {
        pool_collect(p);
        if (cc_pool_alive(p) == 0)
            return true;
        if (timeout_ms >= 0 && cc_mono_us() >= deadline)
            return false;
        if (is_cold_now != NULL && is_cold_now(ud))
            return false;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void pool_signal_all(struct cc_pool *p, int sig)
{
    if (p->o.is_threads || p->o.is_solo)
        return; /* threads cannot be killed one by one */
    for (int i = 0; i < p->n; i++)
        if (p->kids[i].pid > 0)
            kill(p->kids[i].pid, sig);
}

void cc_pool_stop(struct cc_pool *p, bool cold, int grace_ms, int max_wait_ms,
                  bool (*is_cold_now)(void *ud), void *ud)
{
    if (p->kids == NULL)
        return;
    if (p->o.is_solo)
        p->kids[0].pid = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->kids[i].job_fd >= 0)
            close(p->kids[i].job_fd);
        p->kids[i].job_fd = -1;
    }
    /* Warm: idle children exit at EOF on their job pipe, busy ones after their task. A task
     * that never ends must not keep the process alive forever, so the wait is bounded by
     * max_wait_ms and by the caller's is_cold_now (a second signal); then it goes cold. */
    if (!cold && !pool_wait_all(p, max_wait_ms, is_cold_now, ud))
        cold = true;
    /* Cold, as billiard's terminate: SIGTERM, then SIGKILL what is left after grace_ms. */
    if (cold && p->o.is_threads) {
        /* A thread cannot be killed: give running tasks the grace period, then leave them
         * (and the memory they use) to the process exit. */
        if (!pool_wait_all(p, grace_ms, NULL, NULL)) {
            cc_warn("%d pool thread(s) still running a task at shutdown; exiting anyway",
                    cc_pool_alive(p));
            return;
        }
    } else if (cold) {
        pool_signal_all(p, SIGTERM);
        if (!pool_wait_all(p, grace_ms, NULL, NULL)) {
            pool_signal_all(p, SIGKILL);
            pool_wait_all(p, -1, NULL, NULL);
        }
    }
    for (int i = 0; i < p->n; i++)
        cc_backend_free(p->kids[i].be);
    pool_outbox_free(&p->solo_ob); /* [canvas] */
    pool_outbox_free(&p->master_ob);
    cc_jobrun_free(p->solo_jr); /* [jobrun] */
    p->solo_jr = NULL;
    if (p->has_solo_timer)
        timer_delete(p->solo_timer);
    if (p->report_rd >= 0)
        close(p->report_rd);
    if (p->report_wr >= 0)
        close(p->report_wr);
    free(p->kids);
    free(p->synth);
    free(p->buf);
    p->kids = NULL;
    p->synth = NULL;
    p->buf = NULL;
}
