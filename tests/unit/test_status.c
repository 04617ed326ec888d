/* Every status code in include/celeryc/status.h has a name (walks each range), and
 * cc_err_set() fills and returns. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "celeryc/status.h"

static void test_status_every_code_named(void **state)
{
    static const struct {
        int first;
        int last;
    } ranges[] = {
        {CC_OK, CC_GENERIC_MIN},       {CC_EBADMSG, CC_CODEC_MIN},  {CC_EBROKER, CC_BROKER_MIN},
        {CC_EBACKEND, CC_BACKEND_MIN}, {CC_ECONFIG, CC_CONFIG_MIN}, {CC_TASK_FAILED, CC_TASK_MIN},
    };
    size_t named = 0;

    (void)state;
    for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
        for (int c = ranges[r].first; c >= ranges[r].last; c--) {
            const char *s = cc_strerror(c);

            assert_non_null(s);
            if (strcmp(s, "unknown status") == 0)
                fail_msg("status %d has no name", c);
            assert_int_equal(strncmp(s, "CC_", 3), 0);
            named++;
        }
        /* just past the range is unnamed */
        assert_string_equal(cc_strerror(ranges[r].last - 1), "unknown status");
    }
    assert_string_equal(cc_strerror(1), "unknown status");
    assert_string_equal(cc_strerror(-99999), "unknown status");
    assert_int_equal(named, 31);
}

static void test_status_err_set(void **state)
{
    struct cc_err err = {0};
    char longarg[400];

    (void)state;
    assert_int_equal(cc_err_set(&err, CC_EBADMSG, "body is %s", "bad"), CC_EBADMSG);
    assert_int_equal(err.code, CC_EBADMSG);
    assert_string_equal(err.msg, "body is bad");
    memset(longarg, 'x', sizeof(longarg) - 1);
    longarg[sizeof(longarg) - 1] = '\0';
    assert_int_equal(cc_err_set(&err, CC_ENOMEM, "%s", longarg), CC_ENOMEM);
    assert_int_equal(strlen(err.msg), sizeof(err.msg) - 1);
    assert_int_equal(cc_err_set(NULL, CC_EINVAL, "x"), CC_EINVAL);
}

/* Issue #14: libpq's messages are several lines ("...failed: Connection refused\n\tIs the
 * server running on that host and accepting TCP/IP connections?\n"); a log line is one. */
static void test_status_err_set_folds_library_lines(void **state)
{
    struct cc_err err = {0};

    (void)state;
    cc_err_set(&err, CC_EBACKEND, "job store connect: %s",
               "connection to server at \"127.0.0.1\", port 45678 failed: Connection refused\n"
               "\tIs the server running on that host and accepting TCP/IP connections?\n");
    assert_string_equal(err.msg, "job store connect: connection to server at \"127.0.0.1\", "
                                 "port 45678 failed: Connection refused Is the server running "
                                 "on that host and accepting TCP/IP connections?");
}

/* Issue #14: a message that does not fit is never cut mid-word without a marker: it ends at
 * a line boundary when one keeps most of it, else at a word boundary, then "...". */
static void test_status_err_set_marks_truncation_at_word(void **state)
{
    struct cc_err err = {0};
    char line1[200], many[600];
    size_t n;

    (void)state;
    memset(line1, 'a', sizeof(line1) - 1);
    line1[sizeof(line1) - 1] = '\0';
    line1[100] = ' ';
    cc_err_set(&err, CC_EBACKEND, "%s\n\t%s", line1,
               "Is the server running on that host and accepting TCP/IP connections?");
    n = strlen(err.msg);
    assert_true(n < sizeof(err.msg));
    assert_memory_equal(err.msg, line1, strlen(line1)); /* the whole first line */
    assert_string_equal(err.msg + strlen(line1), " ...");

    many[0] = '\0';
    while (strlen(many) + 12 < sizeof(many))
        strcat(many, "connection ");
    cc_err_set(&err, CC_EBACKEND, "%s", many);
    n = strlen(err.msg);
    assert_true(n <= sizeof(err.msg) - 1);
    assert_true(n > sizeof(err.msg) - 20);
    assert_string_equal(err.msg + n - 14, "connection ...");
}

/* Control bytes from the network never reach a log line raw. */
static void test_status_err_set_escapes_control_bytes(void **state)
{
    struct cc_err err = {0};

    (void)state;
    cc_err_set(&err, CC_EBADMSG, "content type %s", "a\x1b[31mb\x7f\rc");
    assert_string_equal(err.msg, "content type a\\x1b[31mb\\x7f c");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_every_code_named),
        cmocka_unit_test(test_status_err_set),
        cmocka_unit_test(test_status_err_set_folds_library_lines),
        cmocka_unit_test(test_status_err_set_marks_truncation_at_word),
        cmocka_unit_test(test_status_err_set_escapes_control_bytes),
    };

    return cmocka_run_group_tests_name("status", tests, NULL, NULL);
}
