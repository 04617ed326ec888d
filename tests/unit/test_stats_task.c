/* Unit tests for the statistics indexer tasks (tasks/stats.c) that need no service: the
 * registered names and signatures, argument checks (Python's exception types and wording),
 * database=None falling back to the worker's job_store, and failures to connect ending as
 * RuntimeError before anything is consumed. The end-to-end behaviour (RabbitMQ, Postgres,
 * kill -9, dead-lettering) is tests/integration/test_stats.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tasks/tasks.h"
#include "config.h"
#include "taskrun.h"
#include "helpers/fixture.h"

/* Run `name` with kwargs (JSON text) and expect builtins.<type> whose message starts with
 * `prefix`. */
static void expect_exc(const char *name, const char *kwargs, const char *type, const char *prefix)
{
    const struct cc_task_entry *e = cc_taskrun_lookup(name);
    struct cc_task_request req = {.id = "stats-test", .group_index = -1, .hostname = "celery@t"};
    json_t *a = json_array(), *k = fixture_json(kwargs);
    struct cc_task_outcome o;
    const json_t *msg;

    assert_non_null(e);
    if (cc_taskrun_invoke(e, &req, a, k, &o) != CC_TASK_FAILED)
        fail_msg("%s(%s): expected %s, got status %d", name, kwargs, type, o.status);
    assert_string_equal(json_string_value(json_object_get(o.exc, "exc_module")), "builtins");
    assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), type);
    msg = json_object_get(o.exc, "exc_message");
    if (json_is_array(msg))
        msg = json_array_get(msg, 0);
    if (!json_is_string(msg) || strncmp(json_string_value(msg), prefix, strlen(prefix)) != 0)
        fail_msg("%s(%s): message %s, want it to start with '%s'", name, kwargs,
                 json_is_string(msg) ? json_string_value(msg) : "?", prefix);
    cc_taskrun_outcome_deinit(&o);
    json_decref(a);
    json_decref(k);
}

static void test_stats_registered(void **state)
{
    const struct cc_task_entry *ix = cc_taskrun_lookup("stats.index_events");
    const struct cc_task_entry *re = cc_taskrun_lookup("stats.reaggregate");

    (void)state;
    assert_ptr_equal(ix, &cc_task_stats_index_events);
    assert_ptr_equal(re, &cc_task_stats_reaggregate);
    assert_string_equal(ix->signature,
                        "event_type, batch_size=100000, commit_every=5000, "
                        "double_click_window=30, salt_retention_days=30, exchange=\"events\", "
                        "queue=None, database=None, robots_file=None, idle_timeout=1.0, "
                        "since=None");
    assert_string_equal(re->signature, "event_type, start, end=None, database=None, since=None");
}

static void test_stats_index_arguments(void **state)
{
    (void)state;
    cc_taskrun_set_config(NULL);
    expect_exc("stats.index_events", "{}", "TypeError",
               "index_events() missing 1 required positional argument: 'event_type'");
    expect_exc("stats.index_events", "{\"event_type\": \"Record View\"}", "ValueError",
               "event_type must be lower-case words with dashes");
    expect_exc("stats.index_events", "{\"event_type\": \"-x\"}", "ValueError", "event_type");
    expect_exc("stats.index_events", "{\"event_type\": \"record-view\", \"batch_size\": 0}",
               "ValueError", "batch_size must be an integer from 1");
    expect_exc("stats.index_events", "{\"event_type\": \"record-view\", \"commit_every\": \"5\"}",
               "ValueError", "commit_every must be an integer");
    expect_exc("stats.index_events",
               "{\"event_type\": \"record-view\", \"double_click_window\": 0}", "ValueError",
               "double_click_window");
    expect_exc("stats.index_events", "{\"event_type\": \"record-view\", \"exchange\": \"\"}",
               "ValueError", "exchange must be a non-empty string");
    expect_exc("stats.index_events", "{\"event_type\": \"record-view\", \"queue\": 3}",
               "ValueError", "queue must be a non-empty string or None");
    expect_exc("stats.index_events", "{\"event_type\": \"record-view\"}", "ValueError",
               "no database");
    expect_exc("stats.index_events",
               "{\"event_type\": \"record-view\", \"database\": \"postgresql://x@127.0.0.1:1/x\","
               " \"idle_timeout\": -1}",
               "ValueError", "");
    /* No worker configuration (no broker): refused before connecting to anything. */
    expect_exc("stats.index_events",
               "{\"event_type\": \"record-view\", \"database\": \"postgresql://x@127.0.0.1:1/x\"}",
               "RuntimeError", "stats.index_events needs the worker's broker");
}

static void test_stats_index_connect_failures(void **state)
{
    char broker[] = "amqp://guest:guest@127.0.0.1:1//";
    char store[] = "postgresql://nobody:x@127.0.0.1:1/none";
    struct cc_config cfg;

    (void)state;
    memset(&cfg, 0, sizeof cfg);
    cfg.broker_url = broker;
    cfg.job_store = store;
    cfg.connect_timeout_s = 1;
    cc_taskrun_set_config(&cfg);
    /* database=None: the job store, which refuses the connection. */
    expect_exc("stats.index_events", "{\"event_type\": \"record-view\"}", "RuntimeError",
               "database connect: ");
    expect_exc("stats.index_events",
               "{\"event_type\": \"record-view\", \"robots_file\": \"/nonexistent/robots\"}",
               "FileNotFoundError", "robots_file /nonexistent/robots");
    expect_exc("stats.reaggregate", "{\"event_type\": \"record-view\", \"start\": \"2026-12-01\"}",
               "RuntimeError", "database connect: ");
    cc_taskrun_set_config(NULL);
}

static void test_stats_reaggregate_arguments(void **state)
{
    (void)state;
    cc_taskrun_set_config(NULL);
    expect_exc("stats.reaggregate", "{\"event_type\": \"record-view\"}", "TypeError",
               "reaggregate() missing 1 required positional argument: 'start'");
    expect_exc("stats.reaggregate",
               "{\"event_type\": \"record-view\", \"start\": \"2026-12-1\", \"database\": \"x\"}",
               "ValueError", "start and end must be dates 'YYYY-MM-DD'");
    expect_exc("stats.reaggregate",
               "{\"event_type\": \"record-view\", \"start\": \"2026-12-01\", \"end\": "
               "\"2026/12/02\", \"database\": \"x\"}",
               "ValueError", "start and end must be dates");
    expect_exc("stats.reaggregate",
               "{\"event_type\": \"record-view\", \"start\": \"2026-12-02\", \"end\": "
               "\"2026-12-01\", \"database\": \"x\"}",
               "ValueError", "end 2026-12-01 is before start 2026-12-02");
    expect_exc("stats.reaggregate", "{\"event_type\": \"record-view\", \"start\": \"2026-12-01\"}",
               "ValueError", "no database");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_registered),
        cmocka_unit_test(test_stats_index_arguments),
        cmocka_unit_test(test_stats_index_connect_failures),
        cmocka_unit_test(test_stats_reaggregate_arguments),
    };

    return cmocka_run_group_tests_name("stats_task", tests, NULL, NULL);
}
