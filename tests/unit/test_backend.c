/* Unit tests for src/core/backend.c: how a failed store is retried. A patient backend (a pool
 * child's) follows Celery's RedisBackend retry_policy (an immediate retry, then one a
 * second); the master's retries once, at once, so its event loop never stalls. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "backend.h"
#include "util.h"

struct flaky_backend {
    struct cc_backend base; /* first: the ops cast */
    int fail_first;         /* attempts that fail before one succeeds */
    int attempts;
    bool is_refusing; /* fail with an error reply (OOM) rather than a lost connection */
};

static int flaky_store(struct cc_backend *b, const char *task_id, const char *meta, size_t len,
                       struct cc_err *err)
{
    struct flaky_backend *fb = (struct flaky_backend *)b;

    (void)task_id;
    (void)meta;
    (void)len;
    if (fb->attempts++ < fb->fail_first && fb->is_refusing) {
        b->is_refused = true;
        return cc_err_set(err, CC_EBACKEND,
                          "redis replied: OOM command not allowed when used memory > 'maxmemory'.");
    }
    if (fb->attempts - 1 < fb->fail_first)
        return cc_err_set(err, CC_EBACKEND, "redis connect 127.0.0.1:1: Connection refused");
    return CC_OK;
}

static void flaky_after_fork(struct cc_backend *b)
{
    (void)b;
}

static void flaky_destroy(struct cc_backend *b)
{
    (void)b;
}

static const struct cc_backend_ops flaky_ops = {
    .name = "flaky",
    .store = flaky_store,
    .after_fork = flaky_after_fork,
    .destroy = flaky_destroy,
};

static int store_one(struct flaky_backend *fb, struct cc_err *err)
{
    struct cc_result r;

    memset(&r, 0, sizeof(r));
    r.task_id = "5a1e3b52-0000-4000-8000-000000000001";
    r.status = "SUCCESS";
    return cc_backend_store(&fb->base, &r, err);
}

static void test_backend_master_retries_once_at_once(void **state)
{
    struct flaky_backend fb = {.base = {.ops = &flaky_ops}, .fail_first = 2};
    struct cc_err err = {0};
    int64_t t0 = cc_mono_us();

    (void)state;
    assert_int_equal(store_one(&fb, &err), CC_EBACKEND);
    assert_int_equal(fb.attempts, 2);
    assert_true(cc_mono_us() - t0 < 500000); /* no sleep in the master */
    assert_true(fb.base.is_failing);
    /* The next store succeeds at once and clears the failing state (logged once). */
    fb.fail_first = 0;
    assert_int_equal(store_one(&fb, &err), CC_OK);
    assert_false(fb.base.is_failing);
}

static void test_backend_patient_rides_out_a_short_outage(void **state)
{
    struct flaky_backend fb = {.base = {.ops = &flaky_ops}, .fail_first = 2};
    struct cc_err err = {0};
    int64_t t0 = cc_mono_us(), took_us;

    (void)state;
    cc_backend_set_patient(&fb.base, true);
    assert_int_equal(store_one(&fb, &err), CC_OK);
    took_us = cc_mono_us() - t0;
    /* Attempt 1 fails, retry 1 at once fails, retry 2 after 1 s succeeds. */
    assert_int_equal(fb.attempts, 3);
    assert_true(took_us >= 900000 && took_us < 3000000);
    assert_false(fb.base.is_failing);
}

static void test_backend_bad_task_id_not_retried(void **state)
{
    struct flaky_backend fb = {.base = {.ops = &flaky_ops}};
    struct cc_err err = {0};
    struct cc_result r;

    (void)state;
    cc_backend_set_patient(&fb.base, true);
    memset(&r, 0, sizeof(r));
    r.task_id = NULL; /* encoding fails before any store */
    r.status = "SUCCESS";
    assert_int_not_equal(cc_backend_store(&fb.base, &r, &err), CC_OK);
    assert_int_equal(fb.attempts, 0);
}

/* Celery's ensure() retries connection errors only: a store the server refused (OOM,
 * READONLY, ...) fails at once even in a patient pool child, so an acks_late task is
 * requeued (and counted) without 20 s of retries per run. */
static void test_backend_refused_store_not_retried(void **state)
{
    struct flaky_backend fb = {.base = {.ops = &flaky_ops}, .fail_first = 5, .is_refusing = true};
    struct cc_err err = {0};
    int64_t t0 = cc_mono_us();

    (void)state;
    cc_backend_set_patient(&fb.base, true);
    assert_int_equal(store_one(&fb, &err), CC_EBACKEND);
    assert_int_equal(fb.attempts, 1);
    assert_true(cc_mono_us() - t0 < 500000);
    assert_non_null(strstr(err.msg, "OOM"));
    /* The next store starts afresh: a connection error is retried again. */
    fb.is_refusing = false;
    fb.attempts = 0;
    fb.fail_first = 1;
    assert_int_equal(store_one(&fb, &err), CC_OK);
    assert_int_equal(fb.attempts, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_backend_master_retries_once_at_once, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_backend_patient_rides_out_a_short_outage, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_backend_bad_task_id_not_retried, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_backend_refused_store_not_retried, NULL, NULL),
    };

    return cmocka_run_group_tests_name("backend", tests, NULL, NULL);
}
