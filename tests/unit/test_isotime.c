/* Unit tests for proto/isotime.c; expected values computed with CPython's datetime. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "isotime.h"

static void test_iso_parse_and_format(void **state)
{
    static const struct {
        const char *in;
        int64_t us;
        const char *naive; /* isoformat() of the UTC time */
    } cases[] = {
        {"2026-11-22T23:33:20.549281", 1795390400549281LL, "2026-11-22T23:33:20.549281"},
        {"2030-01-01T12:00:00+00:00", 1893499200000000LL, "2030-01-01T12:00:00"},
        {"2026-11-22T23:42:01.409000+00:00", 1795390921409000LL, "2026-11-22T23:42:01.409000"},
        {"1969-12-31T23:59:59.5", -500000LL, "1969-12-31T23:59:59.500000"},
        {"2000-02-29T01:02:03-05:30", 951805923000000LL, "2000-02-29T06:32:03"},
        {"0001-01-01T00:00:00", -62135596800000000LL, "0001-01-01T00:00:00"},
        {"9999-12-31T23:59:59.999999", 253402300799999999LL, "9999-12-31T23:59:59.999999"},
        {"2030-01-02T03:04:05.678901Z", 1893553445678901LL, "2030-01-02T03:04:05.678901"},
        {"2030-01-02 03:04:05.123456789", 1893553445123456LL, "2030-01-02T03:04:05.123456"},
    };
    char buf[33];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t us = 0;

        assert_int_equal(cc_iso_parse(cases[i].in, &us), CC_OK);
        assert_true(us == cases[i].us);
        assert_string_equal(cc_iso_format(us, 0, buf, sizeof(buf)), cases[i].naive);
    }
    assert_string_equal(cc_iso_format(1893499200000000LL, 1, buf, sizeof(buf)),
                        "2030-01-01T12:00:00+00:00");
    assert_string_equal(cc_iso_format(253402300799999999LL, 1, buf, sizeof(buf)),
                        "9999-12-31T23:59:59.999999+00:00");
}

static void test_iso_parse_rejects(void **state)
{
    static const char *const bad[] = {"",
                                      "tomorrow",
                                      "2030-01-01",
                                      "2030-01-01T",
                                      "2030-1-01T00:00:00",
                                      "2030-13-01T00:00:00",
                                      "2030-02-29T00:00:00",
                                      "2030-01-32T00:00:00",
                                      "2030-01-01T24:00:00",
                                      "2030-01-01T00:60:00",
                                      "2030-01-01T00:00:60",
                                      "2030-01-01T00:00:00.",
                                      "2030-01-01T00:00:00.1234567890",
                                      "2030-01-01T00:00:00+0100",
                                      "2030-01-01T00:00:00+01",
                                      "2030-01-01T00:00:00 ",
                                      "2030-01-01T00:00:00Zx",
                                      "0000-01-01T00:00:00",
                                      "2030-01-01X00:00:00"};
    int64_t us;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (cc_iso_parse(bad[i], &us) != CC_EBADTIME)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(cc_iso_parse(NULL, &us), CC_EBADTIME);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iso_parse_and_format),
        cmocka_unit_test(test_iso_parse_rejects),
    };

    return cmocka_run_group_tests_name("isotime", tests, NULL, NULL);
}
