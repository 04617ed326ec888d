/* Test-only tasks for the delivery-guarantee integration tests (tests/integration).
 *
 *   it.count_sleep(key, seconds=0): INCR <key> in TEST_REDIS_URL's database (how many times
 *       the task body ran, across workers and redeliveries), then sleep; returns the count.
 *   it.wait_key(key, timeout=60): wait until <key> exists in that database (polled every
 *       50 ms), at most `timeout` seconds; returns whether it appeared. [blocked]
 *
 * Their Python twins are in tests/integration/pyworker_app.py.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "redis.h"
#include "tasks.h"

#define IT_REDIS_URL "redis://127.0.0.1:6379/7"

static int it_count_sleep(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                          json_t **result)
{
    const json_t *key = cc_task_arg(ctx, 0), *secs = cc_task_arg(ctx, 1);
    const char *url = getenv("TEST_REDIS_URL");
    struct cc_redis *r = NULL;
    struct cc_err err = {0};
    long long n = 0;
    int rc;

    (void)args;
    (void)kwargs;
    if (!json_is_string(key) || !json_is_number(secs))
        return cc_task_raise(ctx, "builtins", "TypeError", "count_sleep(key: str, seconds)");
    if (cc_redis_open(url != NULL && url[0] != '\0' ? url : IT_REDIS_URL, 5000, &r, &err) != CC_OK)
        return cc_task_raise(ctx, "builtins", "ValueError", "%s", err.msg);
    const char *argv[2] = {"INCR", json_string_value(key)};
    rc = cc_redis_cmd_int(r, 2, argv, NULL, &n, &err);
    cc_redis_free(r);
    if (rc != CC_OK)
        return cc_task_raise(ctx, "redis.exceptions", "ConnectionError", "%s", err.msg);
    double s = json_number_value(secs);
    if (s > 0) {
        struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};

        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    *result = json_integer(n);
    return CC_OK;
}

const struct cc_task_entry cc_task_it_count_sleep = {
    .name = "it.count_sleep",
    .run = it_count_sleep,
    .signature = "key, seconds=0",
};

/* [blocked] Lets a test decide when a running task ends (test_blocked.py). */
static int it_wait_key(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                       json_t **result)
{
    const json_t *key = cc_task_arg(ctx, 0), *tmo = cc_task_arg(ctx, 1);
    const char *url = getenv("TEST_REDIS_URL");
    struct cc_redis *r = NULL;
    struct cc_err err = {0};
    double limit_s = json_is_number(tmo) ? json_number_value(tmo) : 60;
    struct timespec t0, now;
    long long n = 0;

    (void)args;
    (void)kwargs;
    if (!json_is_string(key))
        return cc_task_raise(ctx, "builtins", "TypeError", "wait_key(key: str, timeout=60)");
    if (cc_redis_open(url != NULL && url[0] != '\0' ? url : IT_REDIS_URL, 5000, &r, &err) != CC_OK)
        return cc_task_raise(ctx, "builtins", "ValueError", "%s", err.msg);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        const char *argv[2] = {"EXISTS", json_string_value(key)};
        struct timespec ts = {0, 50000000};

        if (cc_redis_cmd_int(r, 2, argv, NULL, &n, &err) != CC_OK) {
            cc_redis_free(r);
            return cc_task_raise(ctx, "redis.exceptions", "ConnectionError", "%s", err.msg);
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (n > 0 || (double)(now.tv_sec - t0.tv_sec) > limit_s)
            break;
        nanosleep(&ts, NULL);
    }
    cc_redis_free(r);
    *result = json_boolean(n > 0);
    return CC_OK;
}

const struct cc_task_entry cc_task_it_wait_key = {
    .name = "it.wait_key",
    .run = it_wait_key,
    .signature = "key, timeout=60",
};
