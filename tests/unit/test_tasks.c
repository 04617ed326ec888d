/* Unit tests for the task table (tasks/table.c) and the task families: table invariants
 * (unique names, valid signatures, lookup of every entry), then in-process runs of every demo
 * task and every conformance task that needs no broker, canvas or Redis server, compared
 * with what the Python originals return or raise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../tasks/tasks.h"
#include "taskrun.h"
#include "util.h"
#include "helpers/fixture.h"

/* ---- Helpers ------------------------------------------------------------------------ */

static void assert_json(const json_t *got, const char *expected)
{
    json_t *want = fixture_json(expected);

    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_ENCODE_ANY);

        print_error("got %s, want %s\n", g != NULL ? g : "NULL", expected);
        free(g);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

static struct cc_task_request make_req(int retries)
{
    struct cc_task_request r = {
        .id = "0b1f7c8e-task",
        .root_id = "root-1",
        .parent_id = "parent-1",
        .group_index = -1,
        .retries = retries,
        .hostname = "celery@test",
        .delivery_info = {.exchange = "", .routing_key = "celery", .priority = -1},
    };

    return r;
}

/* Run the registered task `name` and expect success with result `want` (JSON text). */
static void expect_ok_req(const char *name, const struct cc_task_request *req, const char *args,
                          const char *kwargs, const char *want)
{
    const struct cc_task_entry *e = cc_taskrun_lookup(name);
    json_t *a = fixture_json(args), *k = kwargs != NULL ? fixture_json(kwargs) : json_object();
    struct cc_task_outcome o;

    if (e == NULL)
        fail_msg("task %s not registered", name);
    if (cc_taskrun_invoke(e, req, a, k, &o) != CC_OK)
        fail_msg("%s%s: status %d, %s", name, args, o.status, o.exc_repr != NULL ? o.exc_repr : "");
    assert_json(o.result, want);
    cc_taskrun_outcome_deinit(&o);
    json_decref(a);
    json_decref(k);
}

static void expect_ok(const char *name, const char *args, const char *kwargs, const char *want)
{
    struct cc_task_request req = make_req(0);

    expect_ok_req(name, &req, args, kwargs, want);
}

/* Run and expect an exception module.type with exc_message `exc_args` (JSON text). */
static void expect_exc(const char *name, const char *args, const char *kwargs, const char *module,
                       const char *type, const char *exc_args)
{
    const struct cc_task_entry *e = cc_taskrun_lookup(name);
    json_t *a = fixture_json(args), *k = kwargs != NULL ? fixture_json(kwargs) : json_object();
    struct cc_task_request req = make_req(0);
    struct cc_task_outcome o;

    if (e == NULL)
        fail_msg("task %s not registered", name);
    if (cc_taskrun_invoke(e, &req, a, k, &o) != CC_TASK_FAILED)
        fail_msg("%s%s: expected %s, got status %d", name, args, type, o.status);
    assert_string_equal(json_string_value(json_object_get(o.exc, "exc_module")), module);
    assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), type);
    assert_json(json_object_get(o.exc, "exc_message"), exc_args);
    cc_taskrun_outcome_deinit(&o);
    json_decref(a);
    json_decref(k);
}

/* ---- The table ---------------------------------------------------------------------- */

static void test_tasks_table_check_ok(void **state)
{
    struct cc_err err = {0};

    (void)state;
    if (cc_taskrun_table_check(&err) != CC_OK)
        fail_msg("%s", err.msg);
}

static void test_tasks_names_unique_and_looked_up(void **state)
{
    size_t n = cc_taskrun_count();

    (void)state;
    /* 3 built-ins (ping, accumulate, chord_unlock), 15 demo, 29 conformance + 1 qualified
     * alias, 2 it.*, 3 jobs.* [jobrun], 2 stats.* [stats] */
    assert_int_equal(n, 56);
    for (size_t i = 0; i < n; i++) {
        const struct cc_task_entry *e = cc_task_table[i];

        assert_non_null(e->name);
        assert_non_null(e->run);
        assert_ptr_equal(cc_taskrun_lookup(e->name), e);
        for (size_t j = i + 1; j < n; j++) {
            if (strcmp(e->name, cc_task_table[j]->name) == 0)
                fail_msg("task %s registered twice", e->name);
        }
    }
    assert_null(cc_taskrun_lookup("app.nope"));
    assert_null(cc_taskrun_lookup(""));
    assert_null(cc_taskrun_lookup(NULL));
    assert_null(cc_taskrun_lookup("demo.ad"));
}

static void test_tasks_every_signature_binds(void **state)
{
    (void)state;
    /* Every entry has a signature: a wrong call must produce Python's TypeError. */
    for (size_t i = 0; i < cc_taskrun_count(); i++)
        assert_non_null(cc_task_table[i]->signature);
}

static void test_tasks_expected_names_registered(void **state)
{
    static const char *const names[] = {
        "celery.ping",
        "celery.backend_cleanup",
        "celery.accumulate",   /* [canvas-chord] */
        "celery.chord_unlock", /* [canvas-chord] */
        "demo.add",
        "demo.mul",
        "demo.xsum",
        "demo.noop",
        "demo.wordcount",
        "demo.fib",
        "demo.thumbnail",
        "demo.fail",
        "demo.sleep",
        "t.integration.tasks.identity",
        "t.integration.tasks.add",
        "t.integration.tasks.add_not_typed",
        "t.integration.tasks.add_ignore_result",
        "t.integration.tasks.raise_error",
        "t.integration.tasks.fail",
        "t.integration.tasks.delayed_sum",
        "t.integration.tasks.tsum",
        "t.integration.tasks.sleeping",
        "t.integration.tasks.print_unicode",
        "t.integration.tasks.return_exception",
        "t.integration.tasks.write_to_file_and_return_int",
        "t.integration.tasks.redis_echo",
        "t.integration.tasks.redis_count",
        "t.integration.tasks.errback_old_style",
        "t.integration.tasks.errback_new_style",
        "t.integration.tasks.retry",
        "t.integration.tasks.retry_once",
        "t.integration.tasks.retry_once_priority",
        "auto_retry_class_task",
        "t.integration.tasks.ids",
        "t.integration.tasks.collect_ids",
        "t.integration.tasks.return_priority",
        "t.integration.tasks.return_properties",
        "t.integration.tasks.delayed_sum_with_soft_guard",
        "t.integration.tasks.build_chain_inside_task",
        "t.integration.tasks.chain_add",
        "t.integration.tasks.chord_add",
        "stats.index_events", /* [stats] */
        "stats.reaggregate",
    };

    (void)state;
    for (size_t i = 0; i < CC_ARRAY_LEN(names); i++) {
        if (cc_taskrun_lookup(names[i]) == NULL)
            fail_msg("%s is not registered", names[i]);
    }
    assert_int_equal(cc_taskrun_lookup("t.integration.tasks.add_ignore_result")->ignore_result,
                     CC_YES);
}

/* ---- Demo --------------------------------------------------------------------------- */

static void test_tasks_demo_arithmetic(void **state)
{
    (void)state;
    expect_ok("demo.add", "[2, 3]", NULL, "5");
    expect_ok("demo.add", "[]", "{\"x\": 2, \"y\": 3}", "5");
    expect_ok("demo.add", "[2.5, 1]", NULL, "3.5");
    expect_ok("demo.add", "[\"ab\", \"cd\"]", NULL, "\"abcd\"");
    expect_ok("demo.add", "[[1], [2, 3]]", NULL, "[1, 2, 3]");
    expect_ok("demo.add", "[true, true]", NULL, "2");
    expect_exc("demo.add", "[1, \"a\"]", NULL, "builtins", "TypeError",
               "[\"unsupported operand type(s) for +: 'int' and 'str'\"]");
    expect_exc("demo.add", "[\"a\", 1]", NULL, "builtins", "TypeError",
               "[\"can only concatenate str (not \\\"int\\\") to str\"]");
    expect_exc("demo.add", "[[1], 1]", NULL, "builtins", "TypeError",
               "[\"can only concatenate list (not \\\"int\\\") to list\"]");
    expect_exc("demo.add", "[null, 1]", NULL, "builtins", "TypeError",
               "[\"unsupported operand type(s) for +: 'NoneType' and 'int'\"]");
    expect_exc("demo.add", "[9223372036854775807, 1]", NULL, "builtins", "OverflowError",
               "[\"integer result out of the int64 range of JSON integers\"]");
    expect_exc("demo.add", "[1, 2, 3]", NULL, "builtins", "TypeError",
               "[\"add() takes 2 positional arguments but 3 were given\"]");
    expect_ok("demo.mul", "[6, 7]", NULL, "42");
    expect_ok("demo.mul", "[2.5, 2]", NULL, "5.0");
    expect_exc("demo.mul", "[\"a\", \"b\"]", NULL, "builtins", "TypeError",
               "[\"can't multiply sequence by non-int of type 'str'\"]");
    expect_exc("demo.mul", "[null, 2]", NULL, "builtins", "TypeError",
               "[\"unsupported operand type(s) for *: 'NoneType' and 'int'\"]");
    expect_ok("demo.xsum", "[[1, 2, 3.5]]", NULL, "6.5");
    expect_ok("demo.xsum", "[[]]", NULL, "0");
    expect_ok("demo.xsum", "[[true, 2]]", NULL, "3");
    expect_exc("demo.xsum", "[5]", NULL, "builtins", "TypeError",
               "[\"'int' object is not iterable\"]");
    expect_exc("demo.xsum", "[[1.5, \"a\"]]", NULL, "builtins", "TypeError",
               "[\"unsupported operand type(s) for +: 'float' and 'str'\"]");
    expect_exc("demo.xsum", "[\"abc\"]", NULL, "builtins", "TypeError",
               "[\"unsupported operand type(s) for +: 'int' and 'str'\"]");
    expect_ok("demo.noop", "[]", NULL, "null");
    expect_exc("demo.noop", "[1]", NULL, "builtins", "TypeError",
               "[\"noop() takes 0 positional arguments but 1 was given\"]");
}

static void test_tasks_demo_wordcount(void **state)
{
    (void)state;
    /* Python: dict(Counter(re.findall(r"\w+", text.lower()))) */
    expect_ok("demo.wordcount", "[\"The cat the CAT, dog! naïve_x 42\"]", NULL,
              "{\"the\": 2, \"cat\": 2, \"dog\": 1, \"naïve_x\": 1, \"42\": 1}");
    expect_ok("demo.wordcount", "[\"\"]", NULL, "{}");
    expect_ok("demo.wordcount", "[\"  ,.;  \"]", NULL, "{}");
    expect_exc("demo.wordcount", "[3]", NULL, "builtins", "TypeError",
               "[\"text must be str, not 'int'\"]");
}

static void test_tasks_demo_fib(void **state)
{
    (void)state;
    expect_ok("demo.fib", "[0]", NULL, "0");
    expect_ok("demo.fib", "[1]", NULL, "1");
    expect_ok("demo.fib", "[10]", NULL, "55");
    expect_ok("demo.fib", "[92]", NULL, "7540113804746346429");
    expect_exc("demo.fib", "[93]", NULL, "builtins", "OverflowError",
               "[\"fib(93) does not fit in a 64-bit integer\"]");
    expect_exc("demo.fib", "[1000000000000]", NULL, "builtins", "OverflowError",
               "[\"fib(1000000000000) does not fit in a 64-bit integer\"]");
    expect_exc("demo.fib", "[-1]", NULL, "builtins", "ValueError", "[\"n must be >= 0, got -1\"]");
    expect_exc("demo.fib", "[\"3\"]", NULL, "builtins", "TypeError",
               "[\"n must be an int, not 'str'\"]");
}

static void test_tasks_demo_thumbnail(void **state)
{
    (void)state;
    /* Checksums from the Python reference in tasks/demo.c's header. */
    expect_ok("demo.thumbnail", "[64, 48, 4]", NULL,
              "{\"width\": 16, \"height\": 12, \"checksum\": 1984442741}");
    expect_ok("demo.thumbnail", "[7, 5, 2]", NULL,
              "{\"width\": 3, \"height\": 2, \"checksum\": 1214752871}");
    expect_ok("demo.thumbnail", "[1, 1, 1]", NULL,
              "{\"width\": 1, \"height\": 1, \"checksum\": 84696351}");
    expect_ok("demo.thumbnail", "[300, 200, 3]", NULL,
              "{\"width\": 100, \"height\": 66, \"checksum\": 301777304}");
    expect_exc("demo.thumbnail", "[0, 5, 1]", NULL, "builtins", "ValueError",
               "[\"width must be in [1, 16384], got 0\"]");
    expect_exc("demo.thumbnail", "[8, 5, 6]", NULL, "builtins", "ValueError",
               "[\"factor must be in [1, 5], got 6\"]");
    expect_exc("demo.thumbnail", "[8, 5.5, 1]", NULL, "builtins", "TypeError",
               "[\"height must be an int, not 'float'\"]");
}

static void test_tasks_demo_fail_and_sleep(void **state)
{
    int64_t t0;

    (void)state;
    expect_exc("demo.fail", "[\"boom\"]", NULL, "builtins", "ValueError", "[\"boom\"]");
    expect_exc("demo.fail", "[]", "{\"message\": 42}", "builtins", "ValueError", "[42]");
    t0 = cc_mono_us();
    expect_ok("demo.sleep", "[0.02]", NULL, "0.02");
    assert_true(cc_mono_us() - t0 >= 20000);
    expect_exc("demo.sleep", "[-1]", NULL, "builtins", "ValueError",
               "[\"sleep length must be non-negative\"]");
    expect_exc("demo.sleep", "[\"x\"]", NULL, "builtins", "TypeError",
               "[\"'str' object cannot be interpreted as an integer\"]");
}

/* ---- Conformance -------------------------------------------------------------------- */

#define T "t.integration.tasks."

static void test_tasks_conf_values(void **state)
{
    (void)state;
    expect_ok("celery.ping", "[]", NULL, "\"pong\"");
    /* no database result backend (here: no worker configuration at all): nothing to clean */
    expect_ok("celery.backend_cleanup", "[]", NULL, "null");
    expect_ok(T "identity", "[{\"a\": [1, null]}]", NULL, "{\"a\": [1, null]}");
    expect_ok(T "add", "[1, 2]", NULL, "3");
    expect_ok(T "add", "[1, 2, 3]", NULL, "6");
    expect_ok(T "add", "[1, 2]", "{\"z\": 0}", "3");
    expect_ok(T "add", "[\"a\", \"b\"]", "{\"z\": \"c\"}", "\"abc\"");
    expect_ok(T "add_not_typed", "[4, 5]", NULL, "9");
    expect_ok(T "add_ignore_result", "[4, 5]", NULL, "9");
    expect_ok(T "tsum", "[[1, 2, 3]]", NULL, "6");
    expect_ok(T "delayed_sum", "[[1, 2, 3]]", "{\"pause_time\": 0.01}", "6");
    expect_ok(T "delayed_sum_with_soft_guard", "[[1, 2], 0.01]", NULL, "3");
    expect_ok(T "sleeping", "[0.01]", "{\"ignored\": true}", "null");
    expect_ok(T "print_unicode", "[]", NULL, "null");
    expect_ok(T "print_unicode", "[\"log\", \"print\"]", NULL, "null");
    expect_ok(T "return_exception", "[\"e\"]", NULL, "[\"e\", true]");
    expect_ok(T "chord_error", "[1, \"x\"]", NULL, "[1, \"x\"]");
}

static void test_tasks_conf_soft_guard(void **state)
{
    struct cc_task_request req = make_req(0);
    int64_t t0 = cc_mono_us();

    (void)state;
    req.soft_time_limit_s = 0.05;
    /* Python: SoftTimeLimitExceeded interrupts sleep(10) and the task returns 0. */
    expect_ok_req(T "delayed_sum_with_soft_guard", &req, "[[1, 2], 10]", NULL, "0");
    assert_true(cc_mono_us() - t0 < 2000000);
}

static void test_tasks_conf_failures(void **state)
{
    (void)state;
    expect_exc(T "fail", "[]", NULL, "t.integration.tasks", "ExpectedException",
               "[\"Task expected to fail\"]");
    expect_exc(T "fail", "[1, \"x\"]", NULL, "t.integration.tasks", "ExpectedException",
               "[\"Task expected to fail\", 1, \"x\"]");
    expect_exc(T "raise_error", "[]", NULL, "builtins", "ValueError", "[\"deliberate error\"]");
    expect_exc(T "raise_error", "[1, 2]", NULL, "builtins", "ValueError", "[\"deliberate error\"]");
    expect_exc(T "tsum", "[[1, null]]", NULL, "builtins", "TypeError",
               "[\"unsupported operand type(s) for +: 'int' and 'NoneType'\"]");
    /* Wrong arity: Python's TypeError wording, self counted for bound tasks. */
    expect_exc(T "identity", "[]", NULL, "builtins", "TypeError",
               "[\"identity() missing 1 required positional argument: 'x'\"]");
    expect_exc(T "add", "[1, 2, 3, 4]", NULL, "builtins", "TypeError",
               "[\"add() takes from 2 to 3 positional arguments but 4 were given\"]");
    expect_exc(T "ids", "[1, 2]", NULL, "builtins", "TypeError",
               "[\"ids() takes 2 positional arguments but 3 were given\"]");
    expect_exc(T "sleeping", "[]", NULL, "builtins", "TypeError",
               "[\"sleeping() missing 1 required positional argument: 'i'\"]");
    /* [canvas] Without an executor (no hooks), cc_task_send cannot publish: the task fails
     * as apply_async does when the broker is unreachable. */
    char unsupp[200];

    snprintf(unsupp, sizeof(unsupp), "[\"%s\"]", cc_strerror(CC_EUNSUPP));
    expect_exc(T "chain_add", "[1, 2]", NULL, "kombu.exceptions", "OperationalError", unsupp);
    expect_exc(T "chord_add", "[1, 2]", NULL, "kombu.exceptions", "OperationalError", unsupp);
    expect_exc(T "build_chain_inside_task", "[]", NULL, "kombu.exceptions", "OperationalError",
               unsupp);
}

static void test_tasks_conf_request_fields(void **state)
{
    struct cc_task_request req = make_req(0);
    json_t *props = fixture_json("{\"app_id\": \"1234\", \"priority\": 3}");

    (void)state;
    expect_ok_req(T "ids", &req, "[7]", NULL, "[\"root-1\", \"parent-1\", 7]");
    expect_ok_req(T "collect_ids", &req, "[[\"a\"], 8]", NULL,
                  "[[\"a\"], [\"root-1\", \"parent-1\", 8]]");
    req.parent_id = NULL;
    expect_ok_req(T "ids", &req, "[]", "{\"i\": 1}", "[\"root-1\", null, 1]");
    expect_ok_req(T "return_priority", &req, "[1, 2]", NULL, "\"Priority: None\"");
    req.delivery_info.priority = 5;
    expect_ok_req(T "return_priority", &req, "[]", NULL, "\"Priority: 5\"");
    req.correlation_id = "0b1f7c8e-task";
    expect_ok_req(T "return_properties", &req, "[]", NULL,
                  "{\"correlation_id\": \"0b1f7c8e-task\", \"reply_to\": null, \"priority\": 5,"
                  " \"application_headers\": {}}");
    req.properties = props;
    expect_ok_req(T "return_properties", &req, "[]", NULL,
                  "{\"app_id\": \"1234\", \"priority\": 3}");
    json_decref(props);
}

static void expect_retry(const char *name, int retries, const char *args, double countdown,
                         const char *exc_type)
{
    const struct cc_task_entry *e = cc_taskrun_lookup(name);
    struct cc_task_request req = make_req(retries);
    json_t *a = fixture_json(args);
    struct cc_task_outcome o;

    assert_non_null(e);
    if (cc_taskrun_invoke(e, &req, a, NULL, &o) != CC_TASK_RETRY)
        fail_msg("%s: status %d %s", name, o.status, o.exc_repr != NULL ? o.exc_repr : "");
    if (countdown >= 0 && o.retry_countdown_s != countdown)
        fail_msg("%s: countdown %g, want %g", name, o.retry_countdown_s, countdown);
    if (exc_type != NULL)
        assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), exc_type);
    else
        assert_true(json_is_null(o.exc));
    cc_taskrun_outcome_deinit(&o);
    json_decref(a);
}

static void test_tasks_conf_retries(void **state)
{
    struct cc_task_request req = make_req(1);

    (void)state;
    /* retry_once: retry(countdown=0.1, max_retries=1), then return the retry count. */
    expect_retry(T "retry_once", 0, "[]", 0.1, NULL);
    expect_ok_req(T "retry_once", &req, "[]", NULL, "1");
    req.delivery_info.priority = 7;
    expect_retry(T "retry_once_priority", 0, "[]", 0.1, NULL);
    expect_ok_req(T "retry_once_priority", &req, "[]", NULL, "7");
    /* auto_retry_class_task: ValueError() -> retry with randrange(2 ** 0 + 1) seconds. */
    {
        const struct cc_task_entry *e = cc_taskrun_lookup("auto_retry_class_task");
        struct cc_task_request r0 = make_req(0);
        json_t *a = json_array();
        struct cc_task_outcome o;

        assert_int_equal(cc_taskrun_invoke(e, &r0, a, NULL, &o), CC_TASK_RETRY);
        assert_true(o.retry_countdown_s == 0 || o.retry_countdown_s == 1);
        assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")), "ValueError");
        assert_json(json_object_get(o.exc, "exc_message"), "[]");
        cc_taskrun_outcome_deinit(&o);
        json_decref(a);
    }
    expect_ok_req("auto_retry_class_task", &req, "[]", NULL, "1");
    /* retry: exc=ExpectedException(), countdown=5, default max_retries 3. */
    expect_retry(T "retry", 0, "[]", 5, "ExpectedException");
    expect_retry(T "retry", 2, "[]", 5, "ExpectedException");
    {
        const struct cc_task_entry *e = cc_taskrun_lookup(T "retry");
        struct cc_task_request r3 = make_req(3);
        json_t *a = json_array();
        struct cc_task_outcome o;

        assert_int_equal(cc_taskrun_invoke(e, &r3, a, NULL, &o), CC_TASK_FAILED);
        assert_string_equal(json_string_value(json_object_get(o.exc, "exc_module")),
                            "t.integration.tasks");
        assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")),
                            "ExpectedException");
        cc_taskrun_outcome_deinit(&o);
        json_decref(a);
    }
    /* With a return value: three retries counted per process, then the value. */
    for (int i = 0; i < 3; i++)
        expect_retry(T "retry", i, "[\"done\"]", 5, "ExpectedException");
    req.retries = 3;
    expect_ok_req(T "retry", &req, "[\"done\"]", NULL, "\"done\"");
}

static void test_tasks_conf_write_to_file(void **state)
{
    char path[] = "/tmp/celeryc-test-XXXXXX", args[128], buf[64];
    int fd = mkstemp(path);
    FILE *f;
    size_t n;

    (void)state;
    assert_true(fd >= 0);
    close(fd);
    snprintf(args, sizeof(args), "[\"%s\", 3]", path);
    expect_ok(T "write_to_file_and_return_int", args, NULL, "3");
    snprintf(args, sizeof(args), "[\"%s\", 14]", path);
    expect_ok(T "write_to_file_and_return_int", args, NULL, "14");
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    assert_string_equal(buf, "3\n14\n");
    expect_exc(T "write_to_file_and_return_int", "[\"/nonexistent-dir/x\", 1]", NULL, "builtins",
               "FileNotFoundError", "[2, \"No such file or directory\"]");
}

static void test_tasks_conf_redis_errors(void **state)
{
    (void)state;
    /* redis-py refuses None before talking to the server. */
    expect_exc(T "redis_echo", "[null]", NULL, "redis.exceptions", "DataError",
               "[\"Invalid input of type: 'NoneType'. Convert to a bytes, string, int or float "
               "first.\"]");
    /* Nothing listens on port 1: ConnectionError from redis.exceptions. */
    setenv("TEST_REDIS_URL", "redis://127.0.0.1:1/0", 1);
    {
        const struct cc_task_entry *e = cc_taskrun_lookup(T "redis_count");
        json_t *a = json_array();
        struct cc_task_outcome o;

        assert_int_equal(cc_taskrun_invoke(e, NULL, a, NULL, &o), CC_TASK_FAILED);
        assert_string_equal(json_string_value(json_object_get(o.exc, "exc_module")),
                            "redis.exceptions");
        assert_string_equal(json_string_value(json_object_get(o.exc, "exc_type")),
                            "ConnectionError");
        cc_taskrun_outcome_deinit(&o);
        json_decref(a);
    }
    unsetenv("TEST_REDIS_URL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tasks_table_check_ok),
        cmocka_unit_test(test_tasks_names_unique_and_looked_up),
        cmocka_unit_test(test_tasks_every_signature_binds),
        cmocka_unit_test(test_tasks_expected_names_registered),
        cmocka_unit_test(test_tasks_demo_arithmetic),
        cmocka_unit_test(test_tasks_demo_wordcount),
        cmocka_unit_test(test_tasks_demo_fib),
        cmocka_unit_test(test_tasks_demo_thumbnail),
        cmocka_unit_test(test_tasks_demo_fail_and_sleep),
        cmocka_unit_test(test_tasks_conf_values),
        cmocka_unit_test(test_tasks_conf_soft_guard),
        cmocka_unit_test(test_tasks_conf_failures),
        cmocka_unit_test(test_tasks_conf_request_fields),
        cmocka_unit_test(test_tasks_conf_retries),
        cmocka_unit_test(test_tasks_conf_write_to_file),
        cmocka_unit_test(test_tasks_conf_redis_errors),
    };

    return cmocka_run_group_tests_name("tasks", tests, NULL, NULL);
}
