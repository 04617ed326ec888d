/* Unit tests for proto/result.c: every result value captured from Celery 5.2.6's redis
 * backend (value_raw of redis-result-*.json and every SETEX in redis_commands_in_order of
 * the redis-*.json fixtures) is rebuilt field by field and re-encoded byte for byte; the
 * exception dict, cc_result_json_dumps escapes, and allocation failures.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "helpers/fixture.h"
#include "isotime.h"
#include "result.h"

/* Re-encode one stored value and compare bytes. */
static void check_value(const char *raw, const char *where)
{
    json_error_t jerr;
    json_t *v = json_loads(raw, 0, &jerr);
    struct cc_result r = {0};
    const char *dd;
    char *out = NULL;
    size_t len = 0;
    struct cc_err err = {0};

    if (v == NULL)
        fail_msg("%s: %s", where, jerr.text);
    r.task_id = fixture_str(v, "task_id");
    r.status = fixture_str(v, "status");
    r.result = json_object_get(v, "result");
    r.traceback = fixture_str(v, "traceback");
    r.children = json_object_get(v, "children");
    dd = fixture_str(v, "date_done");
    if (dd != NULL) {
        assert_int_equal(cc_isotime_parse(dd, &r.date_done_us), CC_OK);
        r.date_done_with_offset = strstr(dd, "+00:00") != NULL;
    }
    r.group_id = fixture_str(v, "group_id");
    r.parent_id = fixture_str(v, "parent_id");
    if (json_object_get(v, "name") != NULL) {
        r.extended = true;
        r.name = fixture_str(v, "name");
        r.args = json_object_get(v, "args");
        r.kwargs = json_object_get(v, "kwargs");
        r.worker = fixture_str(v, "worker");
        r.retries = (int)json_integer_value(json_object_get(v, "retries"));
        r.queue = fixture_str(v, "queue");
    }
    if (cc_result_encode(&r, &out, &len, &err) != CC_OK)
        fail_msg("%s: %s: %s", where, err.msg, raw);
    if (strcmp(out, raw) != 0)
        fail_msg("%s:\n got  %s\n want %s", where, out, raw);
    assert_int_equal(len, strlen(raw));
    free(out);
    json_decref(v);
}

/* Unescape the 4th quoted argument of a MONITOR line: "SETEX" "key" "ttl" "<value>". */
static char *monitor_arg(const char *line, int want)
{
    char *out = malloc(strlen(line) + 1);
    size_t o = 0;
    int arg = -1;

    assert_non_null(out);
    for (const char *p = line; *p; p++) {
        if (*p != '"')
            continue;
        arg++;
        for (p++; *p && *p != '"'; p++) {
            char c = *p;

            if (c == '\\') {
                p++;
                switch (*p) {
                case 'n':
                    c = '\n';
                    break;
                case 'r':
                    c = '\r';
                    break;
                case 't':
                    c = '\t';
                    break;
                case 'x':
                    c = (char)strtol((char[]){p[1], p[2], 0}, NULL, 16);
                    p += 2;
                    break;
                default:
                    c = *p;
                    break;
                }
            }
            if (arg == want)
                out[o++] = c;
        }
        if (arg == want)
            break;
    }
    out[o] = '\0';
    return out;
}

static void test_result_golden_redis_values(void **state)
{
    DIR *d = opendir(CC_FIXTURES_DIR);
    struct dirent *e;
    size_t checked = 0, with_group = 0, with_parent = 0, extended = 0;

    (void)state;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        json_t *root;
        const json_t *cmds;
        char where[512];

        if (strncmp(e->d_name, "redis-", 6) != 0 || strstr(e->d_name, ".json") == NULL)
            continue;
        root = fixture_load(e->d_name);
        assert_non_null(root);
        if (strncmp(e->d_name, "redis-result-", 13) == 0 && fixture_str(root, "value_raw")) {
            snprintf(where, sizeof(where), "%s value_raw", e->d_name);
            check_value(fixture_str(root, "value_raw"), where);
            checked++;
        }
        cmds = json_object_get(root, "redis_commands_in_order");
        for (size_t i = 0; i < json_array_size(cmds); i++) {
            const char *line = json_string_value(json_array_get(cmds, i));
            char *val;

            if (line == NULL || strncmp(line, "\"SETEX\" \"celery-task-meta-", 26) != 0)
                continue;
            val = monitor_arg(line, 3);
            snprintf(where, sizeof(where), "%s command %zu", e->d_name, i);
            check_value(val, where);
            with_group += strstr(val, "\"group_id\"") != NULL;
            with_parent += strstr(val, "\"parent_id\"") != NULL;
            extended += strstr(val, "\"worker\"") != NULL;
            checked++;
            free(val);
        }
        json_decref(root);
    }
    closedir(d);
    print_message("result golden: %zu values (%zu group_id, %zu parent_id, %zu extended)\n",
                  checked, with_group, with_parent, extended);
    assert_true(checked >= 40);
    assert_true(with_group > 0 && with_parent > 0 && extended > 0);
}

static void test_result_success_exact(void **state)
{
    json_t *five = json_integer(5);
    struct cc_result r = {
        .task_id = "2b4fd78d-825e-401a-b839-d8415726f5a8", .status = "SUCCESS", .result = five};
    char *out;
    size_t len;
    static const char want[] =
        "{\"status\": \"SUCCESS\", \"result\": 5, \"traceback\": null, \"children\": [], "
        "\"date_done\": \"2026-11-22T23:33:20.549281\", \"task_id\": "
        "\"2b4fd78d-825e-401a-b839-d8415726f5a8\"}";

    (void)state;
    assert_int_equal(cc_isotime_parse("2026-11-22T23:33:20.549281", &r.date_done_us), CC_OK);
    assert_int_equal(cc_result_encode(&r, &out, &len, NULL), CC_OK);
    assert_string_equal(out, want);
    free(out);
    r.date_done_with_offset = true;
    r.date_done_us -= 549281; /* whole second: fraction dropped like isoformat() */
    assert_int_equal(cc_result_encode(&r, &out, &len, NULL), CC_OK);
    assert_non_null(strstr(out, "\"date_done\": \"2026-11-22T23:33:20+00:00\""));
    free(out);
    r.date_done_us = 0;
    r.group_id = "g";
    r.parent_id = "p";
    assert_int_equal(cc_result_encode(&r, &out, &len, NULL), CC_OK);
    assert_non_null(strstr(out, "\"date_done\": null, \"group_id\": \"g\", \"parent_id\": "
                                "\"p\", \"task_id\""));
    free(out);
    r.status = NULL;
    assert_int_equal(cc_result_encode(&r, &out, &len, NULL), CC_EINVAL);
    assert_null(out);
    json_decref(five);
}

static void test_result_exc_new(void **state)
{
    json_t *e = cc_result_exc_new("app", "CustomError", json_pack("[si]", "custom failure", 42));
    char *s;

    (void)state;
    assert_non_null(e);
    s = cc_result_json_dumps(e);
    assert_string_equal(s, "{\"exc_type\": \"CustomError\", \"exc_message\": [\"custom failure\", "
                           "42], \"exc_module\": \"app\"}");
    free(s);
    json_decref(e);
    e = cc_result_exc_new("celery.exceptions", "TaskRevokedError", NULL);
    s = cc_result_json_dumps(e);
    assert_string_equal(s, "{\"exc_type\": \"TaskRevokedError\", \"exc_message\": [], "
                           "\"exc_module\": \"celery.exceptions\"}");
    free(s);
    json_decref(e);
}

static void test_result_json_dumps_python_compat(void **state)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"[0.1, 1e16, 1e-05, 0.0001, 5.0, -0.0, 1.5e300, 123456789.125]",
         "[0.1, 1e+16, 1e-05, 0.0001, 5.0, -0.0, 1.5e+300, 123456789.125]"},
        {"[\"\\u00fc\", \"\\ud83d\\ude00\", \"a\\\"b\\\\c\\n\\t\\u0001\\u007f/\"]",
         "[\"\\u00fc\", \"\\ud83d\\ude00\", \"a\\\"b\\\\c\\n\\t\\u0001\\u007f/\"]"},
        {"{\"b\": 1, \"a\": {\"z\": [], \"y\": {}}}", "{\"b\": 1, \"a\": {\"z\": [], \"y\": {}}}"},
        {"[true, false, null, -9223372036854775808]", "[true, false, null, -9223372036854775808]"},
        {"[\"nul\\u0000in\"]", "[\"nul\\u0000in\"]"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_error_t jerr;
        json_t *v = json_loads(cases[i].in, JSON_ALLOW_NUL, &jerr);
        char *s;

        assert_non_null(v);
        s = cc_result_json_dumps(v);
        assert_string_equal(s, cases[i].want);
        free(s);
        json_decref(v);
    }
}

static long alloc_budget = -1;

static void *failing_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

static void test_result_alloc_failure(void **state)
{
    int ok = 0;

    (void)state;
    for (long n = 0; n < 50 && !ok; n++) {
        json_t *e;

        alloc_budget = n;
        json_set_alloc_funcs(failing_malloc, free);
        e = cc_result_exc_new("builtins", "ValueError", json_pack("[s]", "boom"));
        if (e != NULL) {
            struct cc_result r = {.task_id = "t", .status = "FAILURE", .result = e};
            char *out = NULL;
            size_t len;

            assert_int_equal(cc_result_encode(&r, &out, &len, NULL), CC_OK);
            free(out);
            ok = 1;
        }
        json_set_alloc_funcs(malloc, free);
        json_decref(e);
    }
    assert_true(ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_result_golden_redis_values),
        cmocka_unit_test(test_result_success_exact),
        cmocka_unit_test(test_result_exc_new),
        cmocka_unit_test(test_result_json_dumps_python_compat),
        cmocka_unit_test(test_result_alloc_failure),
    };

    return cmocka_run_group_tests_name("result", tests, NULL, NULL);
}
