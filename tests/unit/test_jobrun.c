/* Unit tests for the job run task API (include/celeryc/task.h "Job runs", src/worker/taskrun.c) and
 * the pure parts of src/worker/jobrun.c: what a task reports ends up in its outcome; log lines
 * reach the executor's hook only inside a job run; outside one, every call is a harmless no-op. The
 * store side is covered by tests/integration/test_jobruns.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "jobrun.h"
#include "taskrun.h"

static int reporter(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                    json_t **result)
{
    const char *mode = json_string_value(cc_task_arg(ctx, 0));

    (void)args;
    (void)kwargs;
    cc_task_info(ctx, "run %s", cc_task_run_id(ctx) ? cc_task_run_id(ctx) : "none");
    cc_task_run_progress(ctx, 3, 1);
    cc_task_run_progress(ctx, 7, -1); /* last value wins; -1 leaves errored */
    cc_task_debug(ctx, "debug line");
    if (strcmp(mode, "partial") == 0 || strcmp(mode, "both") == 0)
        cc_task_run_partial(ctx, "%d of %d", 7, 8);
    if (strcmp(mode, "warning") == 0 || strcmp(mode, "both") == 0)
        cc_task_run_warning(ctx, "slow %s", "source");
    if (strcmp(mode, "fail") == 0)
        return cc_task_raise(ctx, "builtins", "ValueError", "boom");
    *result = json_string("done");
    return CC_OK;
}

static const struct cc_task_entry reporter_entry = {
    .name = "t.reporter", .run = reporter, .signature = "mode"};

struct seen {
    int n;
    int levels[8];
    char msgs[8][64];
};

static void hook_log(void *ud, int level, const char *message)
{
    struct seen *s = ud;

    if (s->n < 8) {
        s->levels[s->n] = level;
        snprintf(s->msgs[s->n], sizeof(s->msgs[0]), "%s", message);
    }
    s->n++;
}

static void invoke(const char *mode, struct cc_task_outcome *out)
{
    struct cc_task_request req = {.id = "tid-1", .task = "t.reporter", .group_index = -1};
    json_t *args = json_pack("[s]", mode);

    cc_taskrun_invoke(&reporter_entry, &req, args, NULL, out);
    json_decref(args);
}

static void test_outcome_carries_reports(void **state)
{
    struct cc_task_outcome out;

    (void)state;
    invoke("partial", &out);
    assert_int_equal(out.status, CC_OK);
    assert_int_equal(out.run_status, 'P');
    assert_string_equal(out.run_message, "7 of 8");
    assert_int_equal(out.run_processed, 7);
    assert_int_equal(out.run_errored, 1);
    assert_string_equal(json_string_value(out.result), "done"); /* still SUCCESS */
    cc_taskrun_outcome_deinit(&out);

    invoke("warning", &out);
    assert_int_equal(out.run_status, 'W');
    assert_string_equal(out.run_message, "slow source");
    cc_taskrun_outcome_deinit(&out);

    invoke("both", &out); /* P outranks W whatever the order */
    assert_int_equal(out.run_status, 'P');
    assert_string_equal(out.run_message, "7 of 8");
    cc_taskrun_outcome_deinit(&out);

    invoke("plain", &out);
    assert_int_equal(out.run_status, 0);
    assert_null(out.run_message);
    cc_taskrun_outcome_deinit(&out);

    invoke("fail", &out);
    assert_int_equal(out.status, CC_TASK_FAILED);
    assert_int_equal(out.run_processed, 7);
    cc_taskrun_outcome_deinit(&out);
}

static void test_no_reports_means_minus_one(void **state)
{
    static const struct cc_task_entry quiet = {.name = "t.quiet", .run = reporter, .signature = ""};
    struct cc_task_outcome out;
    json_t *args = json_pack("[s]", "x");

    (void)state;
    /* A TypeError at binding: run() never called, nothing reported. */
    cc_taskrun_invoke(&quiet, NULL, args, NULL, &out);
    assert_int_equal(out.status, CC_TASK_FAILED);
    assert_int_equal(out.run_status, 0);
    assert_int_equal(out.run_processed, -1);
    assert_int_equal(out.run_errored, -1);
    cc_taskrun_outcome_deinit(&out);
    json_decref(args);
}

static void test_log_hook_only_in_a_job_run(void **state)
{
    struct seen s = {0};
    struct cc_task_hooks h = {.ud = &s, .log = hook_log};
    struct cc_task_outcome out;

    (void)state;
    /* No hooks at all: run id NULL, nothing forwarded. */
    cc_taskrun_set_hooks(NULL);
    invoke("plain", &out);
    cc_taskrun_outcome_deinit(&out);
    assert_int_equal(s.n, 0);

    /* Hooks, but not a job run: nothing forwarded. */
    cc_taskrun_set_hooks(&h);
    invoke("plain", &out);
    cc_taskrun_outcome_deinit(&out);
    assert_int_equal(s.n, 0);

    /* A job run: INFO forwarded formatted; DEBUG only when the worker logs at DEBUG. */
    h.run_id = "run-9";
    invoke("plain", &out);
    cc_taskrun_outcome_deinit(&out);
    cc_taskrun_set_hooks(NULL);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.levels[0], CC_TASK_LOG_INFO);
    assert_string_equal(s.msgs[0], "run run-9");
}

static void test_header(void **state)
{
    json_t *h = json_pack("{s:s,s:s}", "task", "x", "celeryc_run", "r-1");
    json_t *empty = json_pack("{s:s}", "celeryc_run", "");
    json_t *num = json_pack("{s:i}", "celeryc_run", 3);

    (void)state;
    assert_string_equal(cc_jobrun_header(h), "r-1");
    assert_null(cc_jobrun_header(empty));
    assert_null(cc_jobrun_header(num));
    assert_null(cc_jobrun_header(NULL));
    json_decref(h);
    json_decref(empty);
    json_decref(num);
}

static void test_no_store_means_no_state(void **state)
{
    struct cc_config cfg;
    char empty[1] = "";

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    assert_null(cc_jobrun_new(&cfg));
    cfg.job_store = empty;
    assert_null(cc_jobrun_new(&cfg));
    /* Every executor entry point takes NULL: a worker without a store does nothing. */
    cc_jobrun_log(NULL, CC_TASK_LOG_INFO, "x");
    cc_jobrun_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcome_carries_reports),
        cmocka_unit_test(test_no_reports_means_minus_one),
        cmocka_unit_test(test_log_hook_only_in_a_job_run),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_no_store_means_no_state),
    };

    return cmocka_run_group_tests_name("jobrun", tests, NULL, NULL);
}
