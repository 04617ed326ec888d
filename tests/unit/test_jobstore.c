/* Unit tests for the pure parts of src/jobstore.c: job validation (no database) and the
 * migration table. The database paths are tested in tests/integration/test_jobs_cli.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

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
    rc = cc_store_job_validate(f, is_create, err);
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
    assert_int_equal(cc_store_job_validate(NULL, true, &err), CC_EINVAL);
}

static void test_jobstore_schema_table(void **state)
{
    (void)state;
    assert_true(cc_store_schema_latest() >= 1);
    assert_int_equal(cc_store_schema_latest(), cc_store_schema_count());
    for (int v = 1; v <= cc_store_schema_count(); v++)
        assert_non_null(cc_store_schema_migration(v));
    assert_null(cc_store_schema_migration(0));
    assert_null(cc_store_schema_migration(cc_store_schema_count() + 1));
    assert_non_null(strstr(cc_store_schema_migration(1), "CREATE TABLE celeryc.runs"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobstore_validate_accepts),
        cmocka_unit_test(test_jobstore_validate_refuses),
        cmocka_unit_test(test_jobstore_schema_table),
    };

    return cmocka_run_group_tests_name("jobstore", tests, NULL, NULL);
}
