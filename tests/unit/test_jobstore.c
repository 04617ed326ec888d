/* Unit tests for the pure parts of src/jobs/jobstore.c: job validation (no database) and the
 * migration table. The database paths are tested in tests/integration/test_jobs_cli.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "jobstore.h"
#include "jobstore_schema.h"

static int validate(const char *text, bool is_create, struct cc_err *err)
{
    json_error_t jerr;
    json_t *f = json_loads(text, 0, &jerr);
    int rc;

    if (f == NULL)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    rc = cc_jobstore_job_validate(f, is_create, err);
    json_decref(f);
    return rc;
}

static void test_jobstore_validate_accepts(void **state)
{
    static const char *const ok[] = {
        "{\"title\": \"t\", \"task\": \"a.b\"}",
        "{\"title\": \"t\", \"task\": \"a.b\", \"schedule\": {\"type\": \"interval\", "
        "\"seconds\": 0.5}}",
        "{\"title\": \"t\", \"task\": \"a.b\", \"schedule\": {\"type\": \"crontab\", \"minute\": "
        "\"*/15\", \"hour\": \"9-17\", \"day_of_week\": \"mon-fri\"}, \"timezone\": "
        "\"Europe/Paris\"}",
        "{\"title\": \"t\", \"task\": \"a.b\", \"schedule\": null, \"queue\": null, "
        "\"since_kwarg\": null, \"starting_deadline\": null}",
        "{\"title\": \"t\", \"task\": \"a.b\", \"args\": [1], \"kwargs\": {\"a\": 1}, "
        "\"options\": {\"priority\": 1}, \"concurrency\": \"replace\", \"missed\": \"skip\", "
        "\"retry_policy\": {\"max_attempts\": 3, \"backoff\": 1.5, \"factor\": 2, "
        "\"max_backoff\": 60}, \"active\": false, \"starting_deadline\": 30, "
        "\"id\": \"0b0e5f4c-51a4-4c6c-9d53-1d0e6c1b2a3f\", \"created\": \"ignored\"}",
    };
    struct cc_err err = {0};

    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (validate(ok[i], true, &err) != CC_OK)
            fail_msg("refused %s: %s", ok[i], err.msg);
    /* An update needs no title or task. */
    assert_int_equal(validate("{\"active\": true}", false, &err), CC_OK);
}

static void test_jobstore_validate_refuses(void **state)
{
    static const struct {
        const char *fields;
        const char *msg; /* a substring of err.msg */
    } bad[] = {
        {"{\"task\": \"a\"}", "needs a title"},
        {"{\"title\": \"a\"}", "needs a task"},
        {"{\"title\": \"\", \"task\": \"a\"}", "title cannot be empty"},
        {"{\"title\": \"t\", \"task\": \"a\", \"nope\": 1}", "unknown job field 'nope'"},
        {"{\"title\": \"t\", \"task\": \"a\", \"schedule\": {\"type\": \"crontab\", \"hour\": "
         "\"24\"}}",
         "crontab hour '24': Invalid end range: 24 > 23."},
        {"{\"title\": \"t\", \"task\": \"a\", \"schedule\": {\"type\": \"crontab\", "
         "\"day_of_week\": \"fri-xyz\"}}",
         "Invalid weekday literal 'xyz'."},
        {"{\"title\": \"t\", \"task\": \"a\", \"schedule\": {\"type\": \"crontab\", \"minute\": "
         "5}}",
         "crontab minute must be a string"},
        {"{\"title\": \"t\", \"task\": \"a\", \"schedule\": {\"type\": \"crontab\", \"second\": "
         "\"5\"}}",
         "unknown crontab field 'second'"},
        {"{\"title\": \"t\", \"task\": \"a\", \"schedule\": {\"type\": \"interval\", "
         "\"seconds\": 0}}",
         "interval seconds must be > 0"},
        {"{\"title\": \"t\", \"task\": \"a\", \"schedule\": {\"type\": \"solar\"}}",
         "unknown type 'solar'"},
        {"{\"title\": \"t\", \"task\": \"a\", \"schedule\": 5}", "schedule must be an object"},
        {"{\"title\": \"t\", \"task\": \"a\", \"timezone\": \"Nowhere/City\"}", "timezone:"},
        {"{\"title\": \"t\", \"task\": \"a\", \"timezone\": \"../etc/passwd\"}", "timezone:"},
        {"{\"title\": \"t\", \"task\": \"a\", \"concurrency\": \"x\"}",
         "unknown concurrency policy 'x'"},
        {"{\"title\": \"t\", \"task\": \"a\", \"missed\": \"x\"}", "unknown missed policy 'x'"},
        {"{\"title\": \"t\", \"task\": \"a\", \"retry_policy\": {\"max_attempts\": 0}}",
         "max_attempts must be an integer >= 1"},
        {"{\"title\": \"t\", \"task\": \"a\", \"retry_policy\": {\"tries\": 2}}",
         "unknown field 'tries'"},
        {"{\"title\": \"t\", \"task\": \"a\", \"args\": {}}", "args must be a JSON array"},
        {"{\"title\": \"t\", \"task\": \"a\", \"kwargs\": []}", "kwargs must be a JSON object"},
        {"{\"title\": \"t\", \"task\": \"a\", \"active\": 1}", "active must be true or false"},
        {"{\"title\": \"t\", \"task\": \"a\", \"description\": null}",
         "description cannot be null"},
        {"{\"title\": \"t\", \"task\": \"a\", \"starting_deadline\": -1}",
         "starting_deadline must be an integer >= 0"},
        {"{\"title\": \"t\", \"task\": \"a\", \"id\": \"1234\"}", "malformed job id '1234'"},
    };
    struct cc_err err = {0};

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        if (validate(bad[i].fields, true, &err) != CC_EINVAL)
            fail_msg("accepted %s", bad[i].fields);
        if (strstr(err.msg, bad[i].msg) == NULL)
            fail_msg("%s: message \"%s\" lacks \"%s\"", bad[i].fields, err.msg, bad[i].msg);
    }
    assert_int_equal(cc_jobstore_job_validate(NULL, true, &err), CC_EINVAL);
}

/* Args / kwargs / options larger than CC_JOBSTORE_ARGS_MAX_BYTES of compact JSON, and a queue
 * name past CC_JOBSTORE_QUEUE_MAX_BYTES, are refused on create and update (issue #14). */
static void test_jobstore_validate_size_limits(void **state)
{
    static const char *const keys[] = {"args", "kwargs", "options"};
    struct cc_err err = {0};
    char *big = malloc(CC_JOBSTORE_ARGS_MAX_BYTES + 1);

    (void)state;
    assert_non_null(big);
    for (size_t i = 0; i < 3; i++) {
        for (int over = 0; over <= 1; over++) {
            /* ["xx..."] and {"k":"xx..."}: the limit exactly, then one byte more. */
            size_t wrap = i == 0 ? 4 : 8, n = CC_JOBSTORE_ARGS_MAX_BYTES - wrap + (size_t)over;
            json_t *s, *v, *f = json_object();
            memset(big, 'x', n);
            big[n] = '\0';
            s = json_string(big);
            v = i == 0 ? json_pack("[o]", s) : json_pack("{s:o}", "k", s);
            json_object_set_new(f, keys[i], v);
            memset(&err, 0, sizeof err);
            assert_int_equal(cc_jobstore_job_validate(f, false, &err), over ? CC_EINVAL : CC_OK);
            if (over && strstr(err.msg, "bytes of JSON, more than 65536") == NULL)
                fail_msg("%s: %s", keys[i], err.msg);
            json_decref(f);
        }
    }
    memset(big, 'q', 256);
    big[256] = '\0';
    {
        json_t *f = json_pack("{s:s}", "queue", big);
        assert_int_equal(cc_jobstore_job_validate(f, false, &err), CC_EINVAL);
        assert_non_null(strstr(err.msg, "queue is longer than 255 bytes"));
        json_decref(f);
    }
    free(big);
}

/* `jobs run` / `rerun` overrides (cc_jobstore_run_args_validate): types, sizes, queue. */
static void test_jobstore_run_args_validate(void **state)
{
    static const struct {
        const char *args, *kwargs, *queue; /* JSON text or NULL */
        const char *msg;                   /* NULL: accepted */
    } cases[] = {
        {NULL, NULL, NULL, NULL},
        {"[]", "{}", "q", NULL},
        {"[1, \"a\", {\"b\": null}]", "{\"x\": [1]}", NULL, NULL},
        {"{}", NULL, NULL, "--args must be a JSON array (got an object)"},
        {"null", NULL, NULL, "--args must be a JSON array (got null)"},
        {NULL, "[1]", NULL, "--kwargs must be a JSON object (got an array)"},
        {NULL, "\"s\"", NULL, "--kwargs must be a JSON object (got a string)"},
        {NULL, "3", NULL, "--kwargs must be a JSON object (got a number)"},
        {NULL, NULL, "", "--queue cannot be empty"},
    };
    struct cc_err err = {0};

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *a = cases[i].args ? json_loads(cases[i].args, JSON_DECODE_ANY, NULL) : NULL;
        json_t *k = cases[i].kwargs ? json_loads(cases[i].kwargs, JSON_DECODE_ANY, NULL) : NULL;
        int rc;

        memset(&err, 0, sizeof err);
        rc = cc_jobstore_run_args_validate(a, k, cases[i].queue, &err);
        if (cases[i].msg == NULL && rc != CC_OK)
            fail_msg("case %zu refused: %s", i, err.msg);
        if (cases[i].msg != NULL && (rc != CC_EINVAL || strstr(err.msg, cases[i].msg) == NULL))
            fail_msg("case %zu: rc %d, \"%s\" lacks \"%s\"", i, rc, err.msg, cases[i].msg);
        json_decref(a);
        json_decref(k);
    }
    {
        char q[CC_JOBSTORE_QUEUE_MAX_BYTES + 2];
        memset(q, 'q', sizeof q - 1);
        q[sizeof q - 1] = '\0';
        assert_int_equal(cc_jobstore_run_args_validate(NULL, NULL, q, &err), CC_EINVAL);
        assert_non_null(strstr(err.msg, "--queue is longer than 255 bytes"));
        q[sizeof q - 2] = '\0';
        assert_int_equal(cc_jobstore_run_args_validate(NULL, NULL, q, &err), CC_OK);
    }
    {
        /* {"k":"xx..."} of 65536 bytes, then 65537. */
        char *big = malloc(CC_JOBSTORE_ARGS_MAX_BYTES);
        json_t *kw;
        assert_non_null(big);
        memset(big, 'x', CC_JOBSTORE_ARGS_MAX_BYTES - 8);
        big[CC_JOBSTORE_ARGS_MAX_BYTES - 8] = '\0';
        kw = json_pack("{s:s}", "k", big);
        assert_int_equal(cc_jobstore_run_args_validate(NULL, kw, NULL, &err), CC_OK);
        json_object_set_new(kw, "k", json_sprintf("%sx", big));
        assert_int_equal(cc_jobstore_run_args_validate(NULL, kw, NULL, &err), CC_EINVAL);
        assert_non_null(strstr(err.msg, "--kwargs is 65537 bytes of JSON, more than 65536"));
        json_decref(kw);
        free(big);
    }
}

static void test_jobstore_status_names(void **state)
{
    static const char letters[] = "QRSFWCXP";
    (void)state;
    for (size_t i = 0; i < sizeof letters - 1; i++)
        assert_string_not_equal(cc_jobstore_status_name(letters[i]), "?");
    assert_string_equal(cc_jobstore_status_name('R'), "running");
    assert_string_equal(cc_jobstore_status_name('Z'), "?");
}

static void test_jobstore_schema_table(void **state)
{
    (void)state;
    assert_true(cc_jobstore_schema_latest() >= 1);
    assert_int_equal(cc_jobstore_schema_latest(), cc_jobstore_schema_count());
    for (int v = 1; v <= cc_jobstore_schema_count(); v++)
        assert_non_null(cc_jobstore_schema_migration(v));
    assert_null(cc_jobstore_schema_migration(0));
    assert_null(cc_jobstore_schema_migration(cc_jobstore_schema_count() + 1));
    assert_non_null(strstr(cc_jobstore_schema_migration(1), "CREATE TABLE celeryc.runs"));
    /* Migration 1 shipped the default 'since'; migration 3 drops it (issue #14). */
    assert_non_null(strstr(cc_jobstore_schema_migration(1), "since_kwarg text DEFAULT 'since'"));
    assert_non_null(strstr(cc_jobstore_schema_migration(3), "since_kwarg DROP DEFAULT"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobstore_validate_accepts),
        cmocka_unit_test(test_jobstore_validate_refuses),
        cmocka_unit_test(test_jobstore_validate_size_limits),
        cmocka_unit_test(test_jobstore_run_args_validate),
        cmocka_unit_test(test_jobstore_status_names),
        cmocka_unit_test(test_jobstore_schema_table),
    };

    return cmocka_run_group_tests_name("jobstore", tests, NULL, NULL);
}
