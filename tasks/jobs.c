/* Job tasks: examples of the job run API (include/celeryc/task.h "Job runs") and the tasks
 * the job run integration tests run (tests/integration/test_jobruns.py).
 *
 *   jobs.index_events(n=10, errors=0, partial=False, warning=False, delay=0, since=None)
 *       An incremental indexer: logs "indexing events since <since>", then one line per event
 *       (the first n - errors "event <i> indexed" at INFO, the last `errors` "event <i>
 *       failed" at WARNING), reports the counters after each event (processed, errored) and
 *       sleeps `delay` seconds per event. With `partial` the run ends P ("<ok> of <n> events
 *       indexed, <errors> failed"), with `warning` W. Returns {"indexed": ok, "failed":
 *       errors, "since": since, "run_id": the run id or None}; the run's summary
 *       (cc_task_run_summary) is {"indexed": ok, "failed": errors}.
 *   jobs.sleep(seconds=30, since=None)
 *       Logs once a second while it sleeps (a run to stop); returns `seconds`.
 *   jobs.fail(message="boom", since=None)
 *       Logs "about to fail", then raises ValueError(message): the run ends F with
 *       "ValueError: <message>".
 * Each takes `since`, which a job run gets when its job has since_kwarg "since" (`jobs
 * create --since-kwarg since`; jobs have none by default since schema version 3).
 */
#include <stdint.h>
#include <time.h>

#include "pyops.h"
#include "tasks.h"

static void jobs_nap(double seconds)
{
    struct timespec ts;

    if (seconds <= 0)
        return;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    (void)nanosleep(&ts, NULL);
}

static int jobs_index_events(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                             json_t **result)
{
    const json_t *jn = cc_task_arg(ctx, 0), *jerr = cc_task_arg(ctx, 1);
    bool partial = json_is_true(cc_task_arg(ctx, 2)), warning = json_is_true(cc_task_arg(ctx, 3));
    const json_t *since = cc_task_arg(ctx, 5);
    const char *run_id = cc_task_run_id(ctx);
    double delay = 0;
    int64_t n, errors, ok;
    int rc;

    (void)args;
    (void)kwargs;
    if (!json_is_integer(jn) || !json_is_integer(jerr) || json_integer_value(jn) < 0 ||
        json_integer_value(jerr) < 0 || json_integer_value(jerr) > json_integer_value(jn))
        return cc_task_raise(ctx, "builtins", "ValueError",
                             "n and errors must be integers with 0 <= errors <= n");
    if ((rc = cc_pyops_seconds(ctx, cc_task_arg(ctx, 4), &delay)) != CC_OK)
        return rc;
    n = json_integer_value(jn);
    errors = json_integer_value(jerr);
    ok = n - errors;
    cc_task_info(ctx, "indexing events since %s",
                 json_is_string(since) ? json_string_value(since) : "the beginning");
    for (int64_t i = 0; i < n; i++) {
        if (i < ok)
            cc_task_info(ctx, "event %lld indexed", (long long)i);
        else
            cc_task_warn(ctx, "event %lld failed", (long long)i);
        cc_task_run_progress(ctx, i + 1 < ok ? i + 1 : ok, i + 1 > ok ? i + 1 - ok : 0);
        jobs_nap(delay);
    }
    if (partial)
        cc_task_run_partial(ctx, "%lld of %lld events indexed, %lld failed", (long long)ok,
                            (long long)n, (long long)errors);
    if (warning)
        cc_task_run_warning(ctx, "%lld events indexed; the source was slow", (long long)ok);
    cc_task_run_summary(
        ctx, json_pack("{s:I,s:I}", "indexed", (json_int_t)ok, "failed", (json_int_t)errors));
    *result =
        json_pack("{s:I,s:I,s:O,s:s?}", "indexed", (json_int_t)ok, "failed", (json_int_t)errors,
                  "since", since != NULL ? since : json_null(), "run_id", run_id);
    return CC_OK;
}

const struct cc_task_entry cc_task_jobs_index_events = {
    .name = "jobs.index_events",
    .run = jobs_index_events,
    .signature = "n=10, errors=0, partial=False, warning=False, delay=0, since=None",
};

static int jobs_sleep(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                      json_t **result)
{
    const json_t *v = cc_task_arg(ctx, 0);
    double seconds, left;
    int rc;

    (void)args;
    (void)kwargs;
    if ((rc = cc_pyops_seconds(ctx, v, &seconds)) != CC_OK)
        return rc;
    for (left = seconds; left > 0; left -= 1) {
        cc_task_info(ctx, "sleeping, %.0f s left", left);
        jobs_nap(left < 1 ? left : 1);
    }
    *result = json_deep_copy(v);
    return CC_OK;
}

const struct cc_task_entry cc_task_jobs_sleep = {
    .name = "jobs.sleep",
    .run = jobs_sleep,
    .signature = "seconds=30, since=None",
};

static int jobs_fail(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                     json_t **result)
{
    const json_t *msg = cc_task_arg(ctx, 0);

    (void)args;
    (void)kwargs;
    (void)result;
    cc_task_info(ctx, "about to fail");
    return cc_task_raise(ctx, "builtins", "ValueError", "%s",
                         json_is_string(msg) ? json_string_value(msg) : "boom");
}

const struct cc_task_entry cc_task_jobs_fail = {
    .name = "jobs.fail",
    .run = jobs_fail,
    .signature = "message=\"boom\", since=None",
};
