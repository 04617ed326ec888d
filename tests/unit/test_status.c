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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_every_code_named),
        cmocka_unit_test(test_status_err_set),
    };

    return cmocka_run_group_tests_name("status", tests, NULL, NULL);
}
